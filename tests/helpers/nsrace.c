/*
 * nsrace — processes racing on a few names in one directory, as many VMs'
 * management tools on several nodes do: create (with and without O_EXCL),
 * append, rename over each other, unlink, stat, and writes on descriptors
 * whose names another process (or node) removes meanwhile.
 *
 *   nsrace [-p PROCS] [-t SECONDS] [-s SEED] [-R] [-L] DIR TAG
 *
 * -R: no renames, so a file's first line must be the very name it is read
 *     through (the strict check of a wrong file).
 * -L: a stable directory too (issue 15: a symlink into an existing, fsynced
 *     directory once got ENOENT on the coordinator). DIR/stable is made and
 *     fsynced before the race and never renamed or removed; every other
 *     process, instead of racing on the names beside it, makes and removes
 *     symlinks (renaming some), a file and a directory in it under names of
 *     its own (TAG.PROC.KIND+N), so it knows what exists: every symlink,
 *     readlink, rename, unlink, create, mkdir and rmdir there must do
 *     exactly what its record says, and any errno (ENOENT, ESTALE, ...) is
 *     an error. At the end each such process lstat's all its names.
 * Every process records each file it creates under a name with that name,
 * and checks that an append through a name lands in a file created under
 * that name (a file whose inode number was reused must never be reached
 * through an old name). Expected results: ENOENT where a name vanished,
 * EEXIST only for O_EXCL. Anything else counts: EIO, ESTALE from an
 * operation on an open descriptor, EISDIR, a wrong file. ESTALE from an
 * open or stat by name is counted apart (the kernel retries it once; two
 * races in a row give it to the caller, as on NFS).
 * Prints "TAG: N ops, N errors, N estale-by-name" and lists the errors;
 * exit status 1 when there was any error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAMES 6
#define MAX_PROCS 128

static int no_renames;   /* -R, set before the workers fork */
static int stable_dir;   /* -L, likewise */
#define STABLE "stable"
#define STABLE_NAMES 4   /* per process and kind */

struct tally { long ops, errors, estale_by_name; char first[8][160]; };

static unsigned long next_rand(unsigned long *s)
{
	*s = *s * 6364136223846793005ul + 1442695040888963407ul;
	return *s >> 33;
}

static void record(struct tally *t, const char *what, int e)
{
	if (t->errors < 8)
		snprintf(t->first[t->errors], sizeof(t->first[0]), "%s: %s", what, strerror(e));
	t->errors++;
}

/* A failure of an operation by name: ENOENT is the race, ESTALE counted apart. */
static void by_name(struct tally *t, const char *what, int e, int allowed)
{
	if (e == ENOENT || e == allowed)
		return;
	if (e == ESTALE)
		t->estale_by_name++;
	else
		record(t, what, e);
}

/* Appends "<name>\n" to the file at path; the file's first line is the name
 * it was created under, so a wrong file is seen. */
static void append(struct tally *t, const char *path, const char *name, int excl)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_APPEND | (excl ? O_EXCL : 0), 0644);
	if (fd < 0) {
		by_name(t, excl ? "open O_CREAT|O_EXCL" : "open O_CREAT", errno, excl ? EEXIST : 0);
		return;
	}
	char line[64];
	int n = snprintf(line, sizeof(line), "%s\n", name);
	if (write(fd, line, (size_t)n) != n)
		record(t, "append on an open descriptor", errno);
	struct stat st;
	if (fstat(fd, &st) != 0)
		record(t, "fstat on an open descriptor", errno);
	if (close(fd) != 0)
		record(t, "close", errno);
}

static void check_owner(struct tally *t, const char *path, const char *name)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		by_name(t, "open O_RDONLY", errno, 0);
		return;
	}
	char buf[64] = "";
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n < 0)
		record(t, "read on an open descriptor", errno);
	/* Without renames the first line is the name itself; with them, a
	 * name of this set at least. */
	size_t len = strlen(name);
	int wrong = no_renames ? n > 0 && ((size_t)n <= len || strncmp(buf, name, len) || buf[len] != '\n')
			       : n > 0 && buf[0] != 'n';
	if (wrong)
		record(t, "a name reached a file created under another name", EIO);
	close(fd);
}

/* What one stable-directory process has made there (-L): its names only.
 * link[k]: 0 when s<k> is absent, else 1 + the number its target names. */
struct stable_names {
	char dir[4096], own[64];
	int link[STABLE_NAMES], file[STABLE_NAMES], sub[STABLE_NAMES];
};

static void stable_path(const struct stable_names *sn, char kind, int k, char *out, size_t len)
{
	snprintf(out, len, "%s/%s.%c%d", sn->dir, sn->own, kind, k);
}

/* An operation on a name only this process touches: it must succeed. 1 if
 * it did (the record follows only what happened: one failure, one error). */
static int must(struct tally *t, int rc, const char *what, const char *path)
{
	if (rc == 0)
		return 1;
	int e = errno;
	char msg[120];
	snprintf(msg, sizeof(msg), "%s " STABLE "/%.60s", what, strrchr(path, '/') + 1);
	record(t, msg, e);
	return 0;
}

static void target_of(const struct stable_names *sn, int n, char *out, size_t len)
{
	snprintf(out, len, "target-%s-%d", sn->own, n);
}

/* A symlink made; or read and removed; or renamed to a free name of its own. */
static void stable_link(struct tally *t, struct stable_names *sn, unsigned long r)
{
	int k = (int)(r % STABLE_NAMES), to = (int)((r >> 8) % STABLE_NAMES);
	char p[4200], q[4200], want[96], got[96];
	stable_path(sn, 's', k, p, sizeof(p));
	if (!sn->link[k]) {
		target_of(sn, k, want, sizeof(want));
		if (must(t, symlink(want, p), "symlink", p))
			sn->link[k] = 1 + k;
		return;
	}
	if (!sn->link[to] && (r >> 16) % 2) {
		stable_path(sn, 's', to, q, sizeof(q));
		if (must(t, rename(p, q), "rename (symlink)", p)) {
			sn->link[to] = sn->link[k];
			sn->link[k] = 0;
		}
		return;
	}
	target_of(sn, sn->link[k] - 1, want, sizeof(want));
	ssize_t n = readlink(p, got, sizeof(got) - 1);
	if (n < 0)
		must(t, -1, "readlink", p);
	else if ((size_t)n != strlen(want) || memcmp(got, want, (size_t)n))
		record(t, "readlink in " STABLE " gave another target", EIO);
	if (must(t, unlink(p), "unlink (symlink)", p))
		sn->link[k] = 0;
}

/* A file created (O_EXCL) or unlinked; a directory made or removed. */
static void stable_file_or_dir(struct tally *t, struct stable_names *sn, unsigned long r)
{
	int k = (int)(r % STABLE_NAMES), dir = (r >> 8) % 2;
	int *have = dir ? &sn->sub[k] : &sn->file[k];
	char p[4200];
	stable_path(sn, dir ? 'd' : 'f', k, p, sizeof(p));
	int done;
	if (dir)
		done = must(t, *have ? rmdir(p) : mkdir(p, 0755), *have ? "rmdir" : "mkdir", p);
	else if (*have)
		done = must(t, unlink(p), "unlink (file)", p);
	else {
		int fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0644);
		done = must(t, fd < 0 ? -1 : 0, "create O_EXCL", p);
		if (fd >= 0 && close(fd) != 0)
			record(t, "close in " STABLE, errno);
	}
	if (done)
		*have = !*have;
}

/* Every name of this process: there exactly when recorded. */
static void stable_check_all(struct tally *t, const struct stable_names *sn)
{
	static const char kinds[] = "sfd";
	for (int i = 0; i < 3; i++)
		for (int k = 0; k < STABLE_NAMES; k++) {
			const int *have = i == 0 ? sn->link : i == 1 ? sn->file : sn->sub;
			char p[4200];
			struct stat st;
			stable_path(sn, kinds[i], k, p, sizeof(p));
			int rc = lstat(p, &st);
			if (have[k])
				must(t, rc, "lstat (final)", p);
			else if (rc == 0 || errno != ENOENT)
				record(t, "lstat (final) of a removed name in " STABLE, rc ? errno : EEXIST);
		}
}

static void stable_worker(const char *dir, const char *tag, int proc, unsigned long seed,
			  double secs, struct tally *t)
{
	struct stable_names sn = { 0 };
	snprintf(sn.dir, sizeof(sn.dir), "%.4000s/" STABLE, dir);
	snprintf(sn.own, sizeof(sn.own), "%.40s.%d", tag, proc);
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 >= secs)
			break;
		t->ops++;
		unsigned long r = next_rand(&seed);
		if (r % 3)
			stable_link(t, &sn, r / 3);
		else
			stable_file_or_dir(t, &sn, r / 3);
	}
	stable_check_all(t, &sn);
}

/* DIR/stable made and durable before any process starts (-L). */
static int make_stable_dir(const char *dir)
{
	char p[4200];
	snprintf(p, sizeof(p), "%.4000s/" STABLE, dir);
	if (mkdir(p, 0755) != 0 && errno != EEXIST)
		return -1;
	for (int i = 0; i < 2; i++) {
		int fd = open(i ? dir : p, O_RDONLY | O_DIRECTORY);
		int rc = fd < 0 ? -1 : fsync(fd);
		if (fd >= 0)
			close(fd);
		if (rc != 0)
			return -1;
	}
	return 0;
}

static void worker(const char *dir, unsigned long seed, double secs, struct tally *t)
{
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	char a[4096], b[4096], na[16], nb[16];
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 >= secs)
			break;
		snprintf(na, sizeof(na), "n%lu", next_rand(&seed) % NAMES);
		snprintf(nb, sizeof(nb), "n%lu", next_rand(&seed) % NAMES);
		snprintf(a, sizeof(a), "%s/%s", dir, na);
		snprintf(b, sizeof(b), "%s/%s", dir, nb);
		struct stat st;
		t->ops++;
		switch (next_rand(&seed) % 7) {
		case 0: append(t, a, na, 0); break;
		case 1: append(t, a, na, 1); break;
		case 2:
			if (!no_renames && rename(a, b) != 0)
				by_name(t, "rename", errno, 0);
			break;
		case 3: if (unlink(a) != 0) by_name(t, "unlink", errno, 0); break;
		case 4: if (stat(a, &st) != 0) by_name(t, "stat", errno, 0); break;
		case 5: check_owner(t, a, na); break;
		default: {
			/* the name goes while the descriptor stays usable */
			int fd = open(a, O_RDWR | O_APPEND);
			if (fd < 0) {
				by_name(t, "open O_RDWR", errno, 0);
				break;
			}
			if (unlink(b) != 0 && errno != ENOENT)
				by_name(t, "unlink", errno, 0);
			char line[64];
			int n = snprintf(line, sizeof(line), "%s\n", na);
			if (write(fd, line, (size_t)n) != n)
				record(t, "write after the name went", errno);
			if (fstat(fd, &st) != 0)
				record(t, "fstat after the name went", errno);
			if (close(fd) != 0)
				record(t, "close after the name went", errno);
		}
		}
	}
}

int main(int argc, char **argv)
{
	int procs = 8, opt;
	double secs = 10;
	unsigned long seed = 1;
	while ((opt = getopt(argc, argv, "p:t:s:RL")) != -1) {
		if (opt == 'R') no_renames = 1;
		else if (opt == 'L') stable_dir = 1;
		else if (opt == 'p') procs = atoi(optarg);
		else if (opt == 't') secs = atof(optarg);
		else if (opt == 's') seed = strtoul(optarg, NULL, 0);
		else return 2;
	}
	if (argc - optind != 2 || procs < 1 || procs > MAX_PROCS || secs <= 0 || secs > 3600) {
		fprintf(stderr, "usage: nsrace [-p 1..%d] [-t SECONDS] [-s SEED] [-R] [-L] DIR TAG\n", MAX_PROCS);
		return 2;
	}
	const char *dir = argv[optind], *tag = argv[optind + 1];
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "nsrace: %s: %s\n", dir, strerror(errno));
		return 2;
	}
	if (stable_dir && make_stable_dir(dir) != 0) {
		fprintf(stderr, "nsrace: %s/" STABLE ": %s\n", dir, strerror(errno));
		return 2;
	}
	int fds[MAX_PROCS];
	pid_t pids[MAX_PROCS];
	for (int i = 0; i < procs; i++) {
		int p[2];
		if (pipe(p) != 0)
			return 2;
		pids[i] = fork();
		if (pids[i] == 0) {
			struct tally t = { 0 };
			close(p[0]);
			unsigned long s = seed * 1000003ul + (unsigned long)i * 7919ul + (unsigned long)getpid();
			if (stable_dir && i % 2)
				stable_worker(dir, tag, i, s, secs, &t);
			else
				worker(dir, s, secs, &t);
			ssize_t w = write(p[1], &t, sizeof(t));
			_exit(w == (ssize_t)sizeof(t) ? 0 : 1);
		}
		close(p[1]);
		fds[i] = p[0];
	}
	struct tally sum = { 0 };
	for (int i = 0; i < procs; i++) {
		struct tally t;
		ssize_t n = read(fds[i], &t, sizeof(t));
		waitpid(pids[i], NULL, 0);
		close(fds[i]);
		if (n != (ssize_t)sizeof(t)) {
			record(&sum, "worker died", ECHILD);
			continue;
		}
		for (long k = 0; k < t.errors && k < 8; k++)
			printf("# %s: %s\n", tag, t.first[k]);
		sum.ops += t.ops;
		sum.errors += t.errors;
		sum.estale_by_name += t.estale_by_name;
	}
	printf("%s: %ld ops, %ld errors, %ld estale-by-name\n", tag, sum.ops, sum.errors, sum.estale_by_name);
	return sum.errors ? 1 : 0;
}
