/*
 * nsrace — processes racing on a few names in one directory, as many VMs'
 * management tools on several nodes do: create (with and without O_EXCL),
 * append, rename over each other, unlink, stat, and writes on descriptors
 * whose names another process (or node) removes meanwhile.
 *
 *   nsrace [-p PROCS] [-t SECONDS] [-s SEED] [-R] DIR TAG
 *
 * -R: no renames, so a file's first line must be the very name it is read
 *     through (the strict check of a wrong file).
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
	while ((opt = getopt(argc, argv, "p:t:s:R")) != -1) {
		if (opt == 'R') no_renames = 1;
		else if (opt == 'p') procs = atoi(optarg);
		else if (opt == 't') secs = atof(optarg);
		else if (opt == 's') seed = strtoul(optarg, NULL, 0);
		else return 2;
	}
	if (argc - optind != 2 || procs < 1 || procs > MAX_PROCS || secs <= 0 || secs > 3600) {
		fprintf(stderr, "usage: nsrace [-p 1..%d] [-t SECONDS] [-s SEED] [-R] DIR TAG\n", MAX_PROCS);
		return 2;
	}
	const char *dir = argv[optind], *tag = argv[optind + 1];
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "nsrace: %s: %s\n", dir, strerror(errno));
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
			worker(dir, seed * 1000003ul + (unsigned long)i * 7919ul + (unsigned long)getpid(), secs, &t);
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
