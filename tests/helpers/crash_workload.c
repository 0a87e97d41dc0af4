/*
 * crash_workload — a seeded, multi-threaded metadata + data workload for crash
 * tests (tests/integration/crash.sh, powercut.sh), and the checker that
 * verifies, after a crash and a replay, every fact the workload saw
 * acknowledged (design.md §11.6).
 *
 *   crash_workload run [-s SEED] [-j THREADS] [-t SECONDS] [-n OPS] [-c LOG] [-S] [-x LETTERS]
 *                      [-v] DIR RECORD
 *       Runs in DIR (created if missing) until SECONDS pass, every thread did
 *       OPS operations, or the filesystem goes away (the daemon was killed).
 *       Each thread owns DIR/t<i> and everything below it: create + write,
 *       overwrite, truncate, fallocate (extend, keep-size, punch, zero),
 *       rename (fresh name or over a file, across its directories), unlink,
 *       mkdir / rmdir / rename of empty directories, setxattr, many small
 *       creates in one directory, and files unlinked while open (orphans).
 *       Every change is made durable with fsync, fdatasync or O_SYNC writes
 *       (plus fsync of the parent directories for namespace changes), chosen
 *       at random; -S adds syncfs(2) to the choice (plus no directory fsync
 *       after it). syncfs is off by default: on a FUSE filesystem the kernel
 *       sends the daemon no request for it (FUSE_SYNCFS is virtiofs-only), so
 *       it promises nothing there (docs/architecture.md); use -S on kernel
 *       filesystems only.
 *       -x excludes operations by letter: c create, w overwrite, t truncate,
 *       f fallocate, x setxattr, r rename, u unlink, m mkdir, d rmdir/rename
 *       of a directory, b bulk create, o orphan. -v traces every operation
 *       on stderr (with -j 1 and -n, a reproducer).
 *
 *       RECORD (a local file, outside the mount) gets one line per fact,
 *       written with write() + fsync() of RECORD:
 *         S <path> <state> m=<how>   acknowledged: <path> is now <state>
 *         O <path> <state>           before an operation: <state> becomes
 *                                    acceptable too (the op may or may not land)
 *         J <p> <q> fresh|over <state>  before rename p -> q: if p is gone, q
 *                                    holds <state>; "fresh": not both present
 *         X <path>                   nothing is known any more about <path>
 *         CUT                        (-c) the daemon log LOG says the power cut
 *                                    happened: facts after this line may be lost
 *       where <state> is "F <size> <fnv64 of content> <user.cw xattr or ->",
 *       "D" (directory), "A" (absent) or "ANY" (a regular file, any content).
 *       Paths are relative to DIR. Prefix records (O, J) are written BEFORE the
 *       operation, S records only after its sync returned 0 — so the record
 *       file always describes what must hold, whenever the daemon dies.
 *       A fact is "S" only once the fsync that covers it returned; a later
 *       operation on the same object first widens it with O (atomic namespace
 *       changes and setxattr: old or new) or O ANY (data changes, which are
 *       not atomic across a crash).
 *
 *   crash_workload verify [-l LABEL] [-w] ROOT RECORD [ROOT RECORD ...]
 *       Checks every fact of each RECORD (paths relative to its ROOT): one
 *       "ok - LABEL: ..." or "not ok - LABEL: ..." summary line, with "# "
 *       lines naming each violated fact (path, what was found, what was
 *       acknowledged, the record line and the sync method). Facts after a CUT
 *       line are not checked (only -w applies to them). -w also walks every
 *       ROOT: every entry must lstat, every directory list and every file read
 *       to its end without an error.
 *
 *   crash_workload manifest ROOT
 *       Prints "path type size hash xattr" for every entry under ROOT, sorted:
 *       two replays of one crashed image must agree byte for byte.
 *
 *   crash_workload clear-mmp IMAGE
 *       Marks the MMP block of an unmounted image clean and writes nothing
 *       else (tune2fs -f -E clear_mmp also replays the journal; this leaves
 *       the replay to e2fsck or the kernel).
 *
 * Exit status: run: 0, 1 if a live read-back differed from what was written,
 * 2 on a usage or local error; verify: 0 when every fact holds, else 1.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>

#include <ext2fs/ext2fs.h>

#define XATTR_NAME "user.cw"
#define MAX_THREADS 32
#define MAX_FILES 160          /* per thread */
#define MAX_DIRS 6             /* subdirectories per thread, alive at once */
#define MAX_FILE_SIZE (1u << 20)
#define PATHLEN 192

/* ------------------------------------------------------------------ basics */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

#define FNV_INIT 0xcbf29ce484222325ULL
static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "crash_workload: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(2);
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		die("out of memory");
	return q;
}

/* ------------------------------------------------------------- the record */

static int rec_fd = -1;
static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *cut_log;              /* -c: the daemon's log */
static atomic_int cut_seen;
static off_t cut_log_off;                /* under rec_lock */
static atomic_int live_mismatch;
static int verbose;                      /* -v: every operation on stderr */

#define TRACE(t, ...) do { if (verbose) trace(t, __VA_ARGS__); } while (0)
struct thr;
static void trace(const struct thr *t, const char *fmt, ...);

static void rec_write_locked(const char *line)
{
	size_t len = strlen(line), done = 0;
	while (done < len) {
		ssize_t n = write(rec_fd, line + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("writing the record file: %s", strerror(errno));
		done += (size_t)n;
	}
	if (fsync(rec_fd) != 0)
		die("fsync of the record file: %s", strerror(errno));
}

static void rec(const char *fmt, ...)
{
	char line[PATHLEN * 2 + 128];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 1)
		die("record line too long");
	line[n] = '\n';
	line[n + 1] = 0;
	pthread_mutex_lock(&rec_lock);
	rec_write_locked(line);
	pthread_mutex_unlock(&rec_lock);
}

/* With -c: has the daemon announced the power cut? Called after every
 * acknowledgement and before its S record: the daemon prints the message
 * before the first dropped write returns, so an acknowledgement seen with no
 * message yet covers only writes that happened. */
static int cut_check(void)
{
	static const char marker[] = "power cut after";
	if (!cut_log)
		return 0;
	if (atomic_load(&cut_seen))
		return 1;
	pthread_mutex_lock(&rec_lock);
	if (!atomic_load(&cut_seen)) {
		int fd = open(cut_log, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			/* re-read a little before the last offset: the marker may straddle */
			off_t from = cut_log_off > 64 ? cut_log_off - 64 : 0;
			char buf[65536 + 1];
			for (;;) {
				ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
				if (n <= 0)
					break;
				buf[n] = 0;
				for (ssize_t i = 0; i < n; i++)
					if (buf[i] == 0)
						buf[i] = ' ';
				if (strstr(buf, marker)) {
					atomic_store(&cut_seen, 1);
					rec_write_locked("CUT\n");
					break;
				}
				cut_log_off = from + n;
				if (n < (ssize_t)sizeof(buf) - 1)
					break;
				from = cut_log_off - 64;
			}
			close(fd);
		}
	}
	pthread_mutex_unlock(&rec_lock);
	return atomic_load(&cut_seen);
}

/* ---------------------------------------------------------- the workload */

struct file {
	char path[PATHLEN];
	int dir;                 /* index into thr.dirs, or -1 for the thread's top */
	unsigned char *data;
	size_t size, cap;
	char xattr[24];          /* "-" when none */
};

struct dir {
	char path[PATHLEN];
	int alive, nfiles;
};

struct thr {
	int id;
	pthread_t th;
	uint64_t rng;
	char top[PATHLEN];
	struct file *files[MAX_FILES];
	int nfiles;
	struct dir dirs[MAX_DIRS];
	unsigned long next_name;
	int orphan_fd;
	long ops, acked, errors;
	int stop;                /* the filesystem went away */
	char last_err[256];
};

static int root_fd = -1;
static double deadline;
static long max_ops = 1000000;
static int nthreads = 4;
static uint64_t seed = 1;

static void trace(const struct thr *t, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "T%d %s\n", t->id, line);
}

static uint64_t rnd(struct thr *t, uint64_t n)
{
	return n ? splitmix(&t->rng) % n : 0;
}

static uint64_t file_hash(const struct file *f)
{
	return fnv(FNV_INIT, f->data, f->size);
}

static void state_of(const struct file *f, char *out, size_t len)
{
	snprintf(out, len, "F %zu %016" PRIx64 " %s", f->size, file_hash(f), f->xattr);
}

static void file_resize(struct file *f, size_t size)
{
	if (size > f->cap) {
		size_t cap = f->cap ? f->cap : 4096;
		while (cap < size)
			cap *= 2;
		f->data = xrealloc(f->data, cap);
		f->cap = cap;
	}
	if (size > f->size)
		memset(f->data + f->size, 0, size - f->size);
	f->size = size;
}

static void fill_random(struct thr *t, unsigned char *p, size_t n)
{
	/* mostly random bytes; now and then a run of zeros or a repeated byte */
	uint64_t kind = rnd(t, 8);
	if (kind == 0) {
		memset(p, 0, n);
		return;
	}
	if (kind == 1) {
		memset(p, (int)rnd(t, 256), n);
		return;
	}
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = splitmix(&t->rng);
		memcpy(p + i, &v, n - i < 8 ? n - i : 8);
	}
}

/* errno values that mean the daemon is gone: stop quietly. */
static int gone(int e)
{
	return e == ENOTCONN || e == ECONNABORTED || e == ENODEV || e == ESHUTDOWN;
}

/* An operation failed with e: when the filesystem is gone the thread stops
 * (the prefix records already cover what may have happened); any other error
 * is reported, and the paths the operation touched are forgotten. */
static void op_failed(struct thr *t, const char *what, const char *path, int e)
{
	/* A request the kernel was answering as the daemon died can fail with
	 * EIO rather than ENOTCONN: if the filesystem is gone the moment the
	 * error is seen, the daemon's death caused it. */
	/* statfs, not stat: it always reaches the daemon (a stat may be
	 * answered from the kernel's cache and succeed after the death), and
	 * waits until the kernel has aborted the connection. */
	struct statfs sf;
	if (!gone(e) && fstatfs(root_fd, &sf) != 0 && gone(errno))
		e = errno;
	if (gone(e)) {
		t->stop = 1;
		return;
	}
	t->errors++;
	snprintf(t->last_err, sizeof(t->last_err), "%s %s: %s", what, path, strerror(e));
	/* After a power cut (-c) the process runs on over a LUN that lost
	 * writes: what it does then no longer matters, only what the LUN holds */
	if (cut_check())
		fprintf(stderr, "crash_workload: thread %d, after the power cut: %s %s: %s\n", t->id, what,
			path, strerror(e));
	else if (e != ENOSPC && e != EDQUOT)
		fprintf(stderr, "# crash_workload: thread %d: %s %s: %s\n", t->id, what, path, strerror(e));
	if (e == EIO)
		t->stop = 1;
}

static int is_dir_path_fd(const char *dirpath)
{
	return openat(root_fd, dirpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static int fsync_dir(const char *dirpath)
{
	int fd = is_dir_path_fd(dirpath);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) ? -errno : 0;
	close(fd);
	return rc;
}

static const char *dir_of(struct thr *t, int dir)
{
	return dir < 0 ? t->top : t->dirs[dir].path;
}

static int pick_dir(struct thr *t)
{
	int alive[MAX_DIRS], n = 0;
	for (int i = 0; i < MAX_DIRS; i++)
		if (t->dirs[i].alive)
			alive[n++] = i;
	if (n == 0 || rnd(t, 3) == 0)
		return -1;
	return alive[rnd(t, (uint64_t)n)];
}

static void new_name(struct thr *t, int dir, char *out, size_t len, const char *prefix)
{
	/* long names now and then: directory blocks fill and split sooner */
	static const char pad[] = "-abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz";
	int padlen = rnd(t, 4) == 0 ? (int)rnd(t, 60) : 0;
	char buf[PATHLEN * 2];
	int n = snprintf(buf, sizeof(buf), "%s/%s%lu%.*s", dir_of(t, dir), prefix, t->next_name++,
			 padlen, pad);
	if (n < 0 || (size_t)n >= len)
		die("path too long: %s", buf);
	memcpy(out, buf, (size_t)n + 1);
}

static void forget_file(struct thr *t, int idx)
{
	struct file *f = t->files[idx];
	if (f->dir >= 0)
		t->dirs[f->dir].nfiles--;
	free(f->data);
	free(f);
	t->files[idx] = t->files[--t->nfiles];
}

/* Drops a file whose on-disk state is no longer known (an error mid-op). */
static void taint_file(struct thr *t, int idx)
{
	rec("X %s", t->files[idx]->path);
	forget_file(t, idx);
}

enum sync_how { SYNC_FSYNC, SYNC_FDATASYNC, SYNC_OSYNC, SYNC_SYNCFS };
static const char *const sync_name[] = { "fsync", "fdatasync", "osync", "syncfs" };
static int use_syncfs;                 /* -S */

/* A durability method for a change to a file's data or size (fdatasync
 * covers those) or, with meta, its other metadata (xattr: fsync only). */
static enum sync_how pick_sync(struct thr *t, int meta, int allow_osync)
{
	for (;;) {
		enum sync_how h = (enum sync_how)rnd(t, 8);
		if (h > SYNC_SYNCFS)
			h = SYNC_FSYNC;          /* fsync most often */
		if (h == SYNC_FDATASYNC && meta)
			continue;
		if (h == SYNC_OSYNC && !allow_osync)
			continue;
		if (h == SYNC_SYNCFS && !use_syncfs)
			continue;
		return h;
	}
}

/* Makes fd's file durable by h (O_SYNC: already done by the writes). */
static int sync_file(int fd, enum sync_how h)
{
	if (verbose)
		fprintf(stderr, "   %s\n", sync_name[h]);
	int r = 0;
	switch (h) {
	case SYNC_FSYNC: r = fsync(fd); break;
	case SYNC_FDATASYNC: r = fdatasync(fd); break;
	case SYNC_OSYNC: r = 0; break;
	case SYNC_SYNCFS: r = syncfs(fd); break;
	}
	return r ? -errno : 0;
}

static int pwrite_all(int fd, const unsigned char *p, size_t n, off_t off)
{
	size_t done = 0;
	while (done < n) {
		ssize_t w = pwrite(fd, p + done, n - done, off + (off_t)done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		done += (size_t)w;
	}
	return 0;
}

/* Reads the whole file at path (under root) and compares with the model. */
static void live_check(struct thr *t, const struct file *f)
{
	if (cut_check())
		return;                          /* dropped writes: reads may differ */
	int fd = openat(root_fd, f->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (!gone(errno))
			op_failed(t, "live open", f->path, errno);
		else
			t->stop = 1;
		return;
	}
	unsigned char *buf = malloc(f->size + 1);
	if (!buf)
		die("out of memory");
	size_t got = 0;
	int err = 0;
	for (;;) {
		ssize_t n = pread(fd, buf + got, f->size + 1 - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = errno;
			break;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got == f->size + 1)
			break;
	}
	close(fd);
	if (err) {
		if (gone(err))
			t->stop = 1;
		else
			op_failed(t, "live read", f->path, err);
	} else if (got != f->size || (f->size && memcmp(buf, f->data, f->size) != 0)) {
		size_t at = 0;
		while (at < got && at < f->size && buf[at] == f->data[at])
			at++;
		printf("not ok - live read-back of %s (thread %d, seed %" PRIu64 "): %zu bytes read, "
		       "%zu expected, first difference at byte %zu\n", f->path, t->id, seed, got, f->size, at);
		fflush(stdout);
		atomic_store(&live_mismatch, 1);
	}
	free(buf);
}

static void record_file(struct thr *t, const struct file *f, enum sync_how h)
{
	char st[96];
	state_of(f, st, sizeof(st));
	cut_check();
	rec("S %s %s m=%s", f->path, st, sync_name[h]);
	t->acked++;
	if (rnd(t, 5) == 0)
		live_check(t, f);
}

/* write(s) into the model and the file: 1..3 ranges near or past the end */
static int do_writes(struct thr *t, int fd, struct file *f, int nwrites)
{
	for (int i = 0; i < nwrites; i++) {
		size_t off = (size_t)rnd(t, f->size + 32768);
		size_t len;
		switch (rnd(t, 8)) {
		case 0: len = 1 + (size_t)rnd(t, 100); break;
		case 1: len = 4096 * (1 + (size_t)rnd(t, 16)); off &= ~(size_t)4095; break;
		case 2: len = 1 + (size_t)rnd(t, 1024 * 1024); break;   /* > one FUSE write */
		default: len = 1 + (size_t)rnd(t, 48 * 1024); break;
		}
		if (off + len > MAX_FILE_SIZE) {
			if (off >= MAX_FILE_SIZE)
				off = (size_t)rnd(t, MAX_FILE_SIZE / 2);
			len = MAX_FILE_SIZE - off;
		}
		unsigned char *p = malloc(len);
		if (!p)
			die("out of memory");
		fill_random(t, p, len);
		TRACE(t, "pwrite %s off=%zu len=%zu", f->path, off, len);
		int rc = pwrite_all(fd, p, len, (off_t)off);
		if (rc) {
			free(p);
			return rc;
		}
		if (off + len > f->size)
			file_resize(f, off + len);
		memcpy(f->data + off, p, len);
		free(p);
	}
	return 0;
}

/* create + write (+ xattr, + fallocate keep-size) + sync file and directory */
static void op_create(struct thr *t)
{
	if (t->nfiles >= MAX_FILES)
		return;
	struct file *f = calloc(1, sizeof(*f));
	if (!f)
		die("out of memory");
	f->dir = pick_dir(t);
	new_name(t, f->dir, f->path, sizeof(f->path), "f");
	strcpy(f->xattr, "-");
	int want_x = rnd(t, 3) == 0, want_fa = rnd(t, 8) == 0;
	enum sync_how h = pick_sync(t, want_x, !want_x && !want_fa);
	TRACE(t, "create %s%s", f->path, h == SYNC_OSYNC ? " O_SYNC" : "");
	int fd = openat(root_fd, f->path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC |
			(h == SYNC_OSYNC ? O_SYNC : 0), 0644);
	if (fd < 0) {
		op_failed(t, "create", f->path, errno);
		free(f);
		return;
	}
	t->files[t->nfiles++] = f;
	if (f->dir >= 0)
		t->dirs[f->dir].nfiles++;
	int rc = do_writes(t, fd, f, 1 + (int)rnd(t, 3));
	if (rc == 0 && want_x) {
		snprintf(f->xattr, sizeof(f->xattr), "v%08" PRIx64, rnd(t, 1ull << 32));
		if (fsetxattr(fd, XATTR_NAME, f->xattr, strlen(f->xattr), 0) != 0)
			rc = -errno;
	}
	if (rc == 0 && want_fa) {
		off_t falen = (off_t)(4096 * (1 + rnd(t, 64)));
		TRACE(t, "fallocate %s mode=KEEP_SIZE off=%zu len=%lld", f->path, f->size, (long long)falen);
		if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)f->size, falen) != 0 && errno != EOPNOTSUPP)
			rc = -errno;
	}
	if (rc == 0)
		rc = sync_file(fd, h);
	close(fd);
	if (rc == 0 && h != SYNC_SYNCFS)
		rc = fsync_dir(dir_of(t, f->dir));
	if (rc) {
		op_failed(t, "create/write/sync", f->path, -rc);
		if (!t->stop)
			taint_file(t, t->nfiles - 1);
		return;
	}
	record_file(t, f, h);
}

/* many small empty files in one directory, then one sync of the directory */
static void op_bulk_create(struct thr *t)
{
	int n = 10 + (int)rnd(t, 40);
	int dir = pick_dir(t);
	int first = t->nfiles;
	for (int i = 0; i < n && t->nfiles < MAX_FILES; i++) {
		struct file *f = calloc(1, sizeof(*f));
		if (!f)
			die("out of memory");
		f->dir = dir;
		new_name(t, dir, f->path, sizeof(f->path), "e");
		strcpy(f->xattr, "-");
		TRACE(t, "create %s (bulk)", f->path);
		int fd = openat(root_fd, f->path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
		if (fd < 0) {
			op_failed(t, "bulk create", f->path, errno);
			free(f);
			break;
		}
		close(fd);
		t->files[t->nfiles++] = f;
		if (dir >= 0)
			t->dirs[dir].nfiles++;
	}
	if (t->stop || t->nfiles == first)
		return;
	int rc, syncfs_used = use_syncfs && rnd(t, 4) == 0;
	if (syncfs_used) {
		int fd = is_dir_path_fd(dir_of(t, dir));
		rc = fd < 0 ? -errno : syncfs(fd) ? -errno : 0;
		if (fd >= 0)
			close(fd);
	} else {
		rc = fsync_dir(dir_of(t, dir));
	}
	if (rc) {
		op_failed(t, "bulk create sync", dir_of(t, dir), -rc);
		while (!t->stop && t->nfiles > first)
			taint_file(t, t->nfiles - 1);
		return;
	}
	/* an empty new file's inode is durable with its directory entry: the
	 * entry names an inode the same commit initialized */
	cut_check();
	for (int i = first; i < t->nfiles; i++) {
		char st[96];
		state_of(t->files[i], st, sizeof(st));
		rec("S %s %s m=%s", t->files[i]->path, st, syncfs_used ? "syncfs" : "fsyncdir");
		t->acked++;
	}
}

static int pick_file(struct thr *t)
{
	return t->nfiles ? (int)rnd(t, (uint64_t)t->nfiles) : -1;
}

/* overwrite / extend in place */
static void op_overwrite(struct thr *t)
{
	int i = pick_file(t);
	if (i < 0)
		return;
	struct file *f = t->files[i];
	enum sync_how h = pick_sync(t, 0, 1);
	rec("O %s ANY", f->path);
	int fd = openat(root_fd, f->path, O_RDWR | O_CLOEXEC | (h == SYNC_OSYNC ? O_SYNC : 0));
	if (fd < 0) {
		op_failed(t, "open", f->path, errno);
		if (!t->stop)
			taint_file(t, i);
		return;
	}
	int rc = do_writes(t, fd, f, 1 + (int)rnd(t, 3));
	if (rc == 0)
		rc = sync_file(fd, h);
	close(fd);
	if (rc) {
		op_failed(t, "overwrite", f->path, -rc);
		if (!t->stop)
			taint_file(t, i);
		return;
	}
	record_file(t, f, h);
}

static void op_truncate(struct thr *t)
{
	int i = pick_file(t);
	if (i < 0)
		return;
	struct file *f = t->files[i];
	size_t size = (size_t)rnd(t, f->size + f->size / 2 + 8192);
	if (rnd(t, 6) == 0)
		size = 0;
	if (size > MAX_FILE_SIZE)
		size = MAX_FILE_SIZE;
	enum sync_how h = pick_sync(t, 0, 0);
	rec("O %s ANY", f->path);
	TRACE(t, "truncate %s size=%zu", f->path, size);
	int fd = openat(root_fd, f->path, O_RDWR | O_CLOEXEC | (size == 0 && rnd(t, 2) ? O_TRUNC : 0));
	int rc = fd < 0 ? -errno : ftruncate(fd, (off_t)size) ? -errno : 0;
	if (rc == 0)
		rc = sync_file(fd, h);
	if (fd >= 0)
		close(fd);
	if (rc) {
		op_failed(t, "truncate", f->path, -rc);
		if (!t->stop)
			taint_file(t, i);
		return;
	}
	file_resize(f, size);
	record_file(t, f, h);
}

static void op_fallocate(struct thr *t)
{
	int i = pick_file(t);
	if (i < 0)
		return;
	struct file *f = t->files[i];
	int mode;
	size_t off, len = 4096 * (1 + (size_t)rnd(t, 64)) - (rnd(t, 2) ? (size_t)rnd(t, 4096) : 0);
	switch (rnd(t, 5)) {
	case 0: mode = 0; off = (size_t)rnd(t, f->size + 65536); break;
	case 1: mode = FALLOC_FL_KEEP_SIZE; off = f->size + (size_t)rnd(t, 65536); break;
	case 2: mode = FALLOC_FL_ZERO_RANGE; off = (size_t)rnd(t, f->size + 8192); break;
	case 3: mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE; off = (size_t)rnd(t, f->size + 8192); break;
	default: mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE; off = (size_t)rnd(t, f->size + 1); break;
	}
	if (off + len > MAX_FILE_SIZE)
		return;
	enum sync_how h = pick_sync(t, 0, 0);
	rec("O %s ANY", f->path);
	TRACE(t, "fallocate %s mode=0x%x off=%zu len=%zu (size %zu)", f->path, mode, off, len, f->size);
	int fd = openat(root_fd, f->path, O_RDWR | O_CLOEXEC);
	int rc = fd < 0 ? -errno : fallocate(fd, mode, (off_t)off, (off_t)len) ? -errno : 0;
	int unsupported = rc == -EOPNOTSUPP;
	if (unsupported)
		rc = 0;
	if (rc == 0)
		rc = sync_file(fd, h);
	if (fd >= 0)
		close(fd);
	if (rc) {
		op_failed(t, "fallocate", f->path, -rc);
		if (!t->stop)
			taint_file(t, i);
		return;
	}
	if (!unsupported) {
		size_t end = off + len;
		if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
			size_t zend = end < f->size ? end : f->size;
			if (off < zend)
				memset(f->data + off, 0, zend - off);
		}
		if (!(mode & FALLOC_FL_KEEP_SIZE) && end > f->size)
			file_resize(f, end);
	}
	record_file(t, f, h);
}

static void op_setxattr(struct thr *t)
{
	int i = pick_file(t);
	if (i < 0)
		return;
	struct file *f = t->files[i];
	struct file nf = *f;
	snprintf(nf.xattr, sizeof(nf.xattr), "v%08" PRIx64, rnd(t, 1ull << 32));
	char st[96];
	state_of(&nf, st, sizeof(st));
	enum sync_how h = pick_sync(t, 1, 0);
	rec("O %s %s", f->path, st);
	TRACE(t, "setxattr %s %s", f->path, nf.xattr);
	int fd = openat(root_fd, f->path, O_RDONLY | O_CLOEXEC);
	int rc = fd < 0 ? -errno : fsetxattr(fd, XATTR_NAME, nf.xattr, strlen(nf.xattr), 0) ? -errno : 0;
	if (rc == 0)
		rc = sync_file(fd, h);
	if (fd >= 0)
		close(fd);
	if (rc) {
		op_failed(t, "setxattr", f->path, -rc);
		if (!t->stop)
			taint_file(t, i);
		return;
	}
	memcpy(f->xattr, nf.xattr, sizeof(f->xattr));
	record_file(t, f, h);
}

/* syncs for a namespace change: the directories involved, or syncfs */
static int sync_dirs(struct thr *t, const char *a, const char *b, const char **how)
{
	if (use_syncfs && rnd(t, 5) == 0) {
		*how = "syncfs";
		int fd = is_dir_path_fd(a);
		int rc = fd < 0 ? -errno : syncfs(fd) ? -errno : 0;
		if (fd >= 0)
			close(fd);
		return rc;
	}
	*how = "fsyncdir";
	int rc = fsync_dir(a);
	if (rc == 0 && b && strcmp(a, b) != 0)
		rc = fsync_dir(b);
	return rc;
}

static void op_rename(struct thr *t)
{
	int i = pick_file(t);
	if (i < 0)
		return;
	struct file *f = t->files[i];
	int over = -1, dst_dir;
	char dst[PATHLEN], st[96];
	if (t->nfiles > 1 && rnd(t, 3) == 0) {
		over = pick_file(t);
		if (over == i)
			over = -1;
	}
	if (over >= 0) {
		dst_dir = t->files[over]->dir;
		memcpy(dst, t->files[over]->path, sizeof(dst));
	} else {
		dst_dir = pick_dir(t);
		new_name(t, dst_dir, dst, sizeof(dst), "r");
		rec("S %s A m=fresh", dst);
	}
	state_of(f, st, sizeof(st));
	rec("O %s %s", dst, st);
	rec("O %s A", f->path);
	rec("J %s %s %s %s", f->path, dst, over >= 0 ? "over" : "fresh", st);
	const char *how;
	TRACE(t, "rename %s %s", f->path, dst);
	int rc = renameat(root_fd, f->path, root_fd, dst) ? -errno : 0;
	if (rc == 0)
		rc = sync_dirs(t, dir_of(t, dst_dir), dir_of(t, f->dir), &how);
	if (rc) {
		op_failed(t, "rename", f->path, -rc);
		if (!t->stop) {
			rec("X %s", dst);
			if (over >= 0) {
				taint_file(t, over);
				if (i == t->nfiles)
					i = over;    /* forget_file moved the last entry */
			}
			taint_file(t, i);
		}
		return;
	}
	cut_check();
	rec("S %s A m=%s", f->path, how);
	rec("S %s %s m=%s", dst, st, how);
	t->acked++;
	if (over >= 0) {
		forget_file(t, over);
		if (i == t->nfiles)
			i = over;
		f = t->files[i];
	}
	if (f->dir >= 0)
		t->dirs[f->dir].nfiles--;
	f->dir = dst_dir;
	if (dst_dir >= 0)
		t->dirs[dst_dir].nfiles++;
	memcpy(f->path, dst, sizeof(f->path));
}

static void op_unlink(struct thr *t)
{
	int i = pick_file(t);
	if (i < 0)
		return;
	struct file *f = t->files[i];
	rec("O %s A", f->path);
	const char *how;
	TRACE(t, "unlink %s", f->path);
	int rc = unlinkat(root_fd, f->path, 0) ? -errno : 0;
	if (rc == 0)
		rc = sync_dirs(t, dir_of(t, f->dir), NULL, &how);
	if (rc) {
		op_failed(t, "unlink", f->path, -rc);
		if (!t->stop)
			taint_file(t, i);
		return;
	}
	cut_check();
	rec("S %s A m=%s", f->path, how);
	t->acked++;
	forget_file(t, i);
}

static void op_mkdir(struct thr *t)
{
	int slot = -1;
	for (int i = 0; i < MAX_DIRS; i++)
		if (!t->dirs[i].alive) {
			slot = i;
			break;
		}
	if (slot < 0)
		return;
	struct dir *d = &t->dirs[slot];
	new_name(t, -1, d->path, sizeof(d->path), "d");
	const char *how;
	TRACE(t, "mkdir %s", d->path);
	int rc = mkdirat(root_fd, d->path, 0755) ? -errno : 0;
	if (rc == 0)
		rc = sync_dirs(t, t->top, NULL, &how);
	if (rc) {
		op_failed(t, "mkdir", d->path, -rc);
		if (!t->stop)
			rec("X %s", d->path);
		return;
	}
	d->alive = 1;
	d->nfiles = 0;
	cut_check();
	rec("S %s D m=%s", d->path, how);
	t->acked++;
}

/* rmdir or rename of an empty subdirectory */
static void op_dir_change(struct thr *t)
{
	int cand[MAX_DIRS], n = 0;
	for (int i = 0; i < MAX_DIRS; i++)
		if (t->dirs[i].alive && t->dirs[i].nfiles == 0)
			cand[n++] = i;
	if (n == 0)
		return;
	struct dir *d = &t->dirs[cand[rnd(t, (uint64_t)n)]];
	const char *how;
	int rc;
	if (rnd(t, 2)) {
		rec("O %s A", d->path);
		TRACE(t, "rmdir %s", d->path);
		rc = unlinkat(root_fd, d->path, AT_REMOVEDIR) ? -errno : 0;
		if (rc == 0)
			rc = sync_dirs(t, t->top, NULL, &how);
		if (rc) {
			op_failed(t, "rmdir", d->path, -rc);
			if (!t->stop) {
				rec("X %s", d->path);
				d->alive = 0;
			}
			return;
		}
		d->alive = 0;
		cut_check();
		rec("S %s A m=%s", d->path, how);
	} else {
		char dst[PATHLEN];
		new_name(t, -1, dst, sizeof(dst), "d");
		rec("S %s A m=fresh", dst);
		rec("O %s D", dst);
		rec("O %s A", d->path);
		rec("J %s %s fresh D", d->path, dst);
		TRACE(t, "rename %s %s", d->path, dst);
		rc = renameat(root_fd, d->path, root_fd, dst) ? -errno : 0;
		if (rc == 0)
			rc = sync_dirs(t, t->top, NULL, &how);
		if (rc) {
			op_failed(t, "rename dir", d->path, -rc);
			if (!t->stop) {
				rec("X %s", d->path);
				rec("X %s", dst);
				d->alive = 0;
			}
			return;
		}
		cut_check();
		rec("S %s A m=%s", d->path, how);
		rec("S %s D m=%s", dst, how);
		memcpy(d->path, dst, sizeof(d->path));
	}
	t->acked++;
}

/* a file unlinked while open (the orphan list); the previous one is closed */
static void op_orphan(struct thr *t)
{
	char path[PATHLEN];
	new_name(t, -1, path, sizeof(path), "o");
	if (t->orphan_fd >= 0 && rnd(t, 2)) {
		/* keep writing to the open, unlinked file */
		unsigned char buf[8192];
		fill_random(t, buf, sizeof(buf));
		if (pwrite(t->orphan_fd, buf, sizeof(buf), (off_t)(4096 * rnd(t, 256))) < 0 && gone(errno))
			t->stop = 1;
		return;
	}
	if (t->orphan_fd >= 0)
		close(t->orphan_fd);
	t->orphan_fd = -1;
	TRACE(t, "orphan %s", path);
	int fd = openat(root_fd, path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
	if (fd < 0) {
		op_failed(t, "create orphan", path, errno);
		return;
	}
	unsigned char buf[65536];
	fill_random(t, buf, sizeof(buf));
	int rc = pwrite_all(fd, buf, sizeof(buf), 0);
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	if (rc == 0 && unlinkat(root_fd, path, 0) != 0)
		rc = -errno;
	if (rc == 0)
		rc = fsync_dir(t->top);
	if (rc) {
		close(fd);
		op_failed(t, "orphan", path, -rc);
		if (!t->stop)
			rec("X %s", path);
		return;
	}
	cut_check();
	rec("S %s A m=fsyncdir", path);
	t->acked++;
	t->orphan_fd = fd;
}

/* The operations, their letters (-x excludes some) and weights. */
static const struct {
	char letter;
	int weight;
	void (*fn)(struct thr *);
} op_table[] = {
	{ 'c', 22, op_create }, { 'w', 14, op_overwrite }, { 't', 8, op_truncate },
	{ 'f', 8, op_fallocate }, { 'x', 8, op_setxattr }, { 'r', 10, op_rename },
	{ 'u', 10, op_unlink }, { 'm', 5, op_mkdir }, { 'd', 5, op_dir_change },
	{ 'b', 4, op_bulk_create }, { 'o', 6, op_orphan },
};
#define NOPS (sizeof(op_table) / sizeof(op_table[0]))
static const char *excluded = "";

static void *thread_main(void *arg)
{
	struct thr *t = arg;
	int total = 0;
	for (size_t k = 0; k < NOPS; k++)
		if (!strchr(excluded, op_table[k].letter))
			total += op_table[k].weight;
	while (!t->stop && t->ops < max_ops && now_s() < deadline) {
		/* the draw is made whatever is excluded, so the rest of the
		 * random sequence does not shift */
		int r = (int)rnd(t, 100) * total / 100;
		if (t->nfiles < 3) {
			op_create(t);
		} else {
			for (size_t k = 0; k < NOPS; k++) {
				if (strchr(excluded, op_table[k].letter))
					continue;
				if (r < op_table[k].weight) {
					op_table[k].fn(t);
					break;
				}
				r -= op_table[k].weight;
			}
		}
		t->ops++;
	}
	return NULL;
}

static int mkdir_durable(const char *name, int pfd)
{
	if (mkdirat(pfd, name, 0755) != 0 && errno != EEXIST)
		return -errno;
	return fsync(pfd) ? -errno : 0;
}

static int cmd_run(int argc, char **argv)
{
	double secs = 5;
	int opt;
	while ((opt = getopt(argc, argv, "s:j:t:n:c:Sx:v")) != -1) {
		switch (opt) {
		case 's': seed = strtoull(optarg, NULL, 0); break;
		case 'j': nthreads = atoi(optarg); break;
		case 't': secs = atof(optarg); break;
		case 'n': max_ops = atol(optarg); break;
		case 'c': cut_log = optarg; break;
		case 'S': use_syncfs = 1; break;
		case 'x': excluded = optarg; break;
		case 'v': verbose = 1; break;
		default: return 2;
		}
	}
	if (argc - optind != 2 || nthreads < 1 || nthreads > MAX_THREADS)
		die("usage: crash_workload run [-s SEED] [-j THREADS] [-t SECONDS] [-n OPS] [-c LOG] [-S] [-x LETTERS] [-v] DIR RECORD");
	const char *dir = argv[optind], *record = argv[optind + 1];
	rec_fd = open(record, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (rec_fd < 0)
		die("%s: %s", record, strerror(errno));

	/* DIR itself, durable in its parent */
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s", dir);
	char *slash = strrchr(parent, '/');
	const char *base = dir;
	if (slash) {
		*slash = 0;
		base = slash + 1;
		if (!parent[0])
			strcpy(parent, "/");
	} else {
		strcpy(parent, ".");
	}
	int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = pfd < 0 ? -errno : mkdir_durable(base, pfd);
	if (pfd >= 0)
		close(pfd);
	if (rc) {
		fprintf(stderr, "crash_workload: mkdir %s: %s\n", dir, strerror(-rc));
		return gone(-rc) ? 0 : 2;
	}
	root_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root_fd < 0) {
		fprintf(stderr, "crash_workload: %s: %s\n", dir, strerror(errno));
		return gone(errno) ? 0 : 2;
	}
	rec("# run seed=%" PRIu64 " threads=%d", seed, nthreads);

	static struct thr thr[MAX_THREADS];
	int started = 0, gone_early = 0;
	for (int i = 0; i < nthreads; i++) {
		struct thr *t = &thr[i];
		memset(t, 0, sizeof(*t));
		t->id = i;
		t->orphan_fd = -1;
		t->rng = seed * 1000003ULL + (uint64_t)i * 0x5851f42d4c957f2dULL;
		splitmix(&t->rng);
		snprintf(t->top, sizeof(t->top), "t%d", i);
		rc = mkdir_durable(t->top, root_fd);
		if (rc) {
			fprintf(stderr, "crash_workload: mkdir %s/%s: %s\n", dir, t->top, strerror(-rc));
			if (gone(-rc)) {
				gone_early = 1;
				break;
			}
			return 2;
		}
		cut_check();
		rec("S %s D m=fsyncdir", t->top);
	}
	double start = now_s();
	deadline = start + secs;
	for (int i = 0; i < nthreads && rc == 0; i++, started++)
		if (pthread_create(&thr[i].th, NULL, thread_main, &thr[i]) != 0)
			die("pthread_create failed");
	long ops = 0, acked = 0, errors = 0;
	int stopped = 0;
	for (int i = 0; i < started; i++) {
		pthread_join(thr[i].th, NULL);
		ops += thr[i].ops;
		acked += thr[i].acked;
		errors += thr[i].errors;
		stopped += thr[i].stop;
		if (thr[i].errors)
			fprintf(stderr, "crash_workload: thread %d: %ld errors, last: %s\n", i, thr[i].errors,
				thr[i].last_err);
		if (thr[i].orphan_fd >= 0)
			close(thr[i].orphan_fd);
		for (int k = 0; k < thr[i].nfiles; k++) {
			free(thr[i].files[k]->data);
			free(thr[i].files[k]);
		}
	}
	fprintf(stderr, "crash_workload: seed %" PRIu64 ": %ld ops, %ld acknowledged, %ld errors in %.1f s; "
		"%s%s\n", seed, ops, acked, errors, now_s() - start,
		stopped || gone_early ? "the filesystem went away" : "finished",
		atomic_load(&cut_seen) ? " (power cut seen)" : "");
	close(root_fd);
	close(rec_fd);
	return atomic_load(&live_mismatch) ? 1 : 0;
}

/* ------------------------------------------------------------ verification */

enum st_kind { ST_FILE, ST_DIR, ST_ABSENT, ST_ANY, ST_OTHER, ST_ERROR };

struct state {
	enum st_kind kind;
	uint64_t size, hash;
	char xattr[40];
	char err[64];
};

#define MAX_ALTS 8

struct entry {
	char *key;               /* "<root index>:<path>" */
	int root;
	const char *path;        /* inside key */
	struct state alts[MAX_ALTS];
	int nalts;
	int unchecked;           /* X, or touched after CUT */
	long last_line;          /* global line number of its last record */
	char method[16];
	long fact_line;
	int rec_file;
};

struct joint {
	int root;
	char p[PATHLEN], q[PATHLEN];
	int fresh;
	struct state st;
	long line;
	int rec_file;
};

static struct entry **tab;
static size_t tab_cap, tab_n;
static struct joint *joints;
static size_t njoints;

static uint64_t str_hash(const char *s)
{
	return fnv(FNV_INIT, (const unsigned char *)s, strlen(s));
}

static struct entry *lookup(int root, const char *path, int create)
{
	char key[PATHLEN + 16];
	snprintf(key, sizeof(key), "%d:%s", root, path);
	if (tab_n * 2 >= tab_cap) {
		size_t ncap = tab_cap ? tab_cap * 2 : 1024;
		struct entry **nt = calloc(ncap, sizeof(*nt));
		if (!nt)
			die("out of memory");
		for (size_t i = 0; i < tab_cap; i++) {
			if (!tab[i])
				continue;
			size_t h = str_hash(tab[i]->key) & (ncap - 1);
			while (nt[h])
				h = (h + 1) & (ncap - 1);
			nt[h] = tab[i];
		}
		free(tab);
		tab = nt;
		tab_cap = ncap;
	}
	size_t h = str_hash(key) & (tab_cap - 1);
	while (tab[h]) {
		if (strcmp(tab[h]->key, key) == 0)
			return tab[h];
		h = (h + 1) & (tab_cap - 1);
	}
	if (!create)
		return NULL;
	struct entry *e = calloc(1, sizeof(*e));
	if (!e || !(e->key = strdup(key)))
		die("out of memory");
	e->root = root;
	e->path = strchr(e->key, ':') + 1;
	tab[h] = e;
	tab_n++;
	return e;
}

/* Parses "<state...>" tokens; returns the number of tokens used or -1. */
static int parse_state(char **tok, int ntok, struct state *st)
{
	memset(st, 0, sizeof(*st));
	if (ntok < 1)
		return -1;
	if (strcmp(tok[0], "D") == 0) {
		st->kind = ST_DIR;
		return 1;
	}
	if (strcmp(tok[0], "A") == 0) {
		st->kind = ST_ABSENT;
		return 1;
	}
	if (strcmp(tok[0], "ANY") == 0) {
		st->kind = ST_ANY;
		return 1;
	}
	if (strcmp(tok[0], "F") == 0 && ntok >= 4) {
		st->kind = ST_FILE;
		st->size = strtoull(tok[1], NULL, 10);
		st->hash = strtoull(tok[2], NULL, 16);
		snprintf(st->xattr, sizeof(st->xattr), "%s", tok[3]);
		return 4;
	}
	return -1;
}

static void state_str(const struct state *st, char *out, size_t len)
{
	switch (st->kind) {
	case ST_FILE:
		snprintf(out, len, "file of %" PRIu64 " bytes, hash %016" PRIx64 ", xattr %s", st->size,
			 st->hash, st->xattr);
		break;
	case ST_DIR: snprintf(out, len, "directory"); break;
	case ST_ABSENT: snprintf(out, len, "absent"); break;
	case ST_ANY: snprintf(out, len, "any regular file"); break;
	case ST_OTHER: snprintf(out, len, "another file type"); break;
	case ST_ERROR: snprintf(out, len, "error (%s)", st->err); break;
	}
}

static int same_state(const struct state *a, const struct state *b)
{
	if (a->kind != b->kind)
		return 0;
	if (a->kind != ST_FILE)
		return 1;
	return a->size == b->size && a->hash == b->hash && strcmp(a->xattr, b->xattr) == 0;
}

/* Reads what is at path now. */
static void actual_state(int rootfd, const char *path, struct state *st)
{
	memset(st, 0, sizeof(*st));
	struct stat sb;
	if (fstatat(rootfd, path, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
		if (errno == ENOENT) {
			st->kind = ST_ABSENT;
		} else {
			st->kind = ST_ERROR;
			snprintf(st->err, sizeof(st->err), "lstat: %s", strerror(errno));
		}
		return;
	}
	if (S_ISDIR(sb.st_mode)) {
		st->kind = ST_DIR;
		return;
	}
	if (!S_ISREG(sb.st_mode)) {
		st->kind = ST_OTHER;
		return;
	}
	int fd = openat(rootfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		st->kind = ST_ERROR;
		snprintf(st->err, sizeof(st->err), "open: %s", strerror(errno));
		return;
	}
	static unsigned char buf[1 << 20];     /* verify and manifest are single-threaded */
	uint64_t h = FNV_INIT, total = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			st->kind = ST_ERROR;
			snprintf(st->err, sizeof(st->err), "read at %" PRIu64 ": %s", total, strerror(errno));
			close(fd);
			return;
		}
		if (n == 0)
			break;
		h = fnv(h, buf, (size_t)n);
		total += (uint64_t)n;
	}
	st->kind = ST_FILE;
	st->size = total;
	st->hash = h;
	if ((uint64_t)sb.st_size != total) {
		st->kind = ST_ERROR;
		snprintf(st->err, sizeof(st->err), "st_size %lld but %" PRIu64 " bytes read",
			 (long long)sb.st_size, total);
	}
	ssize_t xn = fgetxattr(fd, XATTR_NAME, st->xattr, sizeof(st->xattr) - 1);
	if (xn >= 0) {
		st->xattr[xn] = 0;
	} else if (errno == ENODATA || errno == ENOTSUP) {
		strcpy(st->xattr, "-");
	} else {
		st->kind = ST_ERROR;
		snprintf(st->err, sizeof(st->err), "getxattr: %s", strerror(errno));
	}
	close(fd);
}

static int matches(const struct state *want, const struct state *got)
{
	if (want->kind == ST_ANY)
		return got->kind == ST_FILE;
	return same_state(want, got);
}

static long failures;
static const char *label = "verify";

static void fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (failures < 40)
		printf("# %s: %s\n", label, msg);
	failures++;
}

static void load_record(int root, int rec_file, const char *record, long *lineno, int *cut)
{
	FILE *fp = fopen(record, "r");
	if (!fp)
		die("%s: %s", record, strerror(errno));
	char line[2048];
	*cut = 0;
	while (fgets(line, sizeof(line), fp)) {
		(*lineno)++;
		size_t len = strlen(line);
		if (len && line[len - 1] == '\n')
			line[--len] = 0;
		else if (!feof(fp))
			die("%s: line %ld too long", record, *lineno);
		else
			continue;       /* a torn last line: the writer died mid-line */
		char *tok[16];
		int ntok = 0;
		for (char *s = strtok(line, " "); s && ntok < 16; s = strtok(NULL, " "))
			tok[ntok++] = s;
		if (ntok == 0 || tok[0][0] == '#')
			continue;
		if (strcmp(tok[0], "CUT") == 0) {
			*cut = 1;
			continue;
		}
		if (ntok < 2)
			die("%s:%ld: bad record", record, *lineno);
		if (strcmp(tok[0], "J") == 0) {
			struct joint jn = { .root = root, .line = *lineno, .rec_file = rec_file };
			if (ntok < 5 || parse_state(tok + 4, ntok - 4, &jn.st) < 0)
				die("%s:%ld: bad J record", record, *lineno);
			snprintf(jn.p, sizeof(jn.p), "%s", tok[1]);
			snprintf(jn.q, sizeof(jn.q), "%s", tok[2]);
			jn.fresh = strcmp(tok[3], "fresh") == 0;
			if (*cut)
				continue;
			joints = xrealloc(joints, (njoints + 1) * sizeof(*joints));
			joints[njoints++] = jn;
			continue;
		}
		struct entry *e = lookup(root, tok[1], 1);
		e->last_line = *lineno;
		e->rec_file = rec_file;
		if (*cut) {
			e->unchecked = 1;   /* may or may not have landed before the cut */
			continue;
		}
		if (strcmp(tok[0], "X") == 0) {
			e->unchecked = 1;
			continue;
		}
		struct state st;
		int used = parse_state(tok + 2, ntok - 2, &st);
		if (used < 0)
			die("%s:%ld: bad state", record, *lineno);
		if (strcmp(tok[0], "S") == 0) {
			e->unchecked = 0;
			e->nalts = 1;
			e->alts[0] = st;
			e->fact_line = *lineno;
			const char *m = 2 + used < ntok ? tok[2 + used] : "";
			snprintf(e->method, sizeof(e->method), "%s", strncmp(m, "m=", 2) == 0 ? m + 2 : m);
		} else if (strcmp(tok[0], "O") == 0) {
			int dup = 0;
			for (int i = 0; i < e->nalts; i++)
				dup |= same_state(&e->alts[i], &st);
			if (!dup) {
				if (e->nalts == MAX_ALTS || e->nalts == 0)
					e->unchecked = 1;   /* nothing known before: can't bound it */
				else
					e->alts[e->nalts++] = st;
			}
		} else {
			die("%s:%ld: unknown record %s", record, *lineno, tok[0]);
		}
	}
	fclose(fp);
}

static long nentries_walked, walk_errors;

static void walk(int dfd, const char *rel)
{
	DIR *d = fdopendir(dfd);
	if (!d) {
		fail("walk: opendir %s: %s", rel, strerror(errno));
		walk_errors++;
		close(dfd);
		return;
	}
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", rel, de->d_name);
		nentries_walked++;
		struct stat sb;
		if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
			fail("walk: lstat %s: %s", path, strerror(errno));
			walk_errors++;
			continue;
		}
		if (S_ISDIR(sb.st_mode)) {
			int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (sub < 0) {
				fail("walk: open dir %s: %s", path, strerror(errno));
				walk_errors++;
			} else {
				walk(sub, path);
			}
		} else if (S_ISREG(sb.st_mode)) {
			struct state st;
			actual_state(dirfd(d), de->d_name, &st);
			if (st.kind == ST_ERROR) {
				fail("walk: %s: %s", path, st.err);
				walk_errors++;
			}
		}
		errno = 0;
	}
	if (errno) {
		fail("walk: readdir %s: %s", rel, strerror(errno));
		walk_errors++;
	}
	closedir(d);
}

static int cmd_verify(int argc, char **argv)
{
	int opt, do_walk = 0;
	while ((opt = getopt(argc, argv, "l:w")) != -1) {
		switch (opt) {
		case 'l': label = optarg; break;
		case 'w': do_walk = 1; break;
		default: return 2;
		}
	}
	int npairs = (argc - optind) / 2;
	if (npairs < 1 || (argc - optind) % 2)
		die("usage: crash_workload verify [-l LABEL] [-w] ROOT RECORD [ROOT RECORD ...]");
	int *rootfds = calloc((size_t)npairs, sizeof(int));
	const char **recs = calloc((size_t)npairs, sizeof(char *));
	if (!rootfds || !recs)
		die("out of memory");
	long lineno = 0, cuts = 0;
	for (int i = 0; i < npairs; i++) {
		const char *root = argv[optind + 2 * i];
		recs[i] = argv[optind + 2 * i + 1];
		rootfds[i] = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		/* a root with no checkable fact (all after a CUT) may legitimately be
		 * gone; one with facts fails them as "root missing" */
		if (rootfds[i] < 0 && errno != ENOENT)
			printf("# %s: %s: %s\n", label, root, strerror(errno));
		int cut;
		load_record(i, i, recs[i], &lineno, &cut);
		cuts += cut;
	}
	long n = 0, nf = 0, nd = 0, na = 0, np = 0, nu = 0;
	for (size_t k = 0; k < tab_cap; k++) {
		struct entry *e = tab[k];
		if (!e)
			continue;
		if (e->unchecked || e->nalts == 0) {
			nu++;
			continue;
		}
		n++;
		if (e->nalts > 1)
			np++;
		else if (e->alts[0].kind == ST_FILE || e->alts[0].kind == ST_ANY)
			nf++;
		else if (e->alts[0].kind == ST_DIR)
			nd++;
		else
			na++;
		struct state got;
		if (rootfds[e->root] < 0) {
			got.kind = ST_ERROR;
			snprintf(got.err, sizeof(got.err), "its root directory is missing");
		} else {
			actual_state(rootfds[e->root], e->path, &got);
		}
		int ok = 0;
		for (int i = 0; i < e->nalts && !ok; i++)
			ok = matches(&e->alts[i], &got);
		if (!ok) {
			char g[160], w[160 * MAX_ALTS] = "";
			state_str(&got, g, sizeof(g));
			for (int i = 0; i < e->nalts; i++) {
				char one[160];
				state_str(&e->alts[i], one, sizeof(one));
				size_t l = strlen(w);
				snprintf(w + l, sizeof(w) - l, "%s%s", i ? " | " : "", one);
			}
			fail("%s (%s): found %s; acknowledged %s (record line %ld, synced by %s)",
			     e->path, recs[e->root], g, w, e->fact_line, e->method[0] ? e->method : "?");
		}
	}
	for (size_t k = 0; k < njoints; k++) {
		struct joint *jn = &joints[k];
		struct entry *ep = lookup(jn->root, jn->p, 0), *eq = lookup(jn->root, jn->q, 0);
		if (!ep || !eq || ep->last_line > jn->line || eq->last_line > jn->line ||
		    ep->unchecked || eq->unchecked || rootfds[jn->root] < 0)
			continue;            /* superseded by later facts */
		n++;
		struct state sp, sq;
		actual_state(rootfds[jn->root], jn->p, &sp);
		actual_state(rootfds[jn->root], jn->q, &sq);
		if (sp.kind == ST_ABSENT && !matches(&jn->st, &sq)) {
			char g[160];
			state_str(&sq, g, sizeof(g));
			fail("rename %s -> %s (%s, line %ld) in flight: the source is gone but the target is %s",
			     jn->p, jn->q, recs[jn->root], jn->line, g);
		} else if (jn->fresh && sp.kind != ST_ABSENT && sq.kind != ST_ABSENT) {
			fail("rename %s -> %s (%s, line %ld) in flight: both names exist", jn->p, jn->q,
			     recs[jn->root], jn->line);
		}
	}
	long walk_fail = 0;
	if (do_walk) {
		for (int i = 0; i < npairs; i++) {
			if (rootfds[i] < 0)
				continue;
			int d = dup(rootfds[i]);
			if (d >= 0)
				walk(d, argv[optind + 2 * i]);
		}
		walk_fail = walk_errors;
	}
	long fact_fail = failures - walk_fail;
	if (fact_fail)
		printf("not ok - %s: %ld of %ld acknowledged facts violated (%d record files)\n", label,
		       fact_fail, n, npairs);
	else
		printf("ok - %s: %ld acknowledged facts hold (%ld files, %ld dirs, %ld absent, %ld in flight; "
		       "%ld not checkable%s)\n", label, n, nf, nd, na, np, nu,
		       cuts ? ", after a power cut" : "");
	if (do_walk) {
		if (walk_fail)
			printf("not ok - %s: tree readable (%ld errors in %ld entries)\n", label, walk_fail,
			       nentries_walked);
		else
			printf("ok - %s: tree readable (%ld entries)\n", label, nentries_walked);
	}
	if (failures > 40)
		printf("# %s: ... %ld more\n", label, failures - 40);
	for (int i = 0; i < npairs; i++)
		if (rootfds[i] >= 0)
			close(rootfds[i]);
	free(rootfds);
	free(recs);
	return failures ? 1 : 0;
}

/* ---------------------------------------------------------------- manifest */

static char **mlines;
static size_t nmlines;

static void manifest_walk(int dfd, const char *rel)
{
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (!rel[0] && strcmp(de->d_name, "lost+found") == 0)
			continue;
		char path[4096], line[4300], s[200];
		snprintf(path, sizeof(path), "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
		struct state st;
		actual_state(dirfd(d), de->d_name, &st);
		if (st.kind == ST_FILE)
			snprintf(s, sizeof(s), "F %" PRIu64 " %016" PRIx64 " %s", st.size, st.hash, st.xattr);
		else
			state_str(&st, s, sizeof(s));
		snprintf(line, sizeof(line), "%s %s", path, s);
		mlines = xrealloc(mlines, (nmlines + 1) * sizeof(*mlines));
		if (!(mlines[nmlines++] = strdup(line)))
			die("out of memory");
		if (st.kind == ST_DIR) {
			int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (sub >= 0)
				manifest_walk(sub, path);
		}
	}
	closedir(d);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_manifest(int argc, char **argv)
{
	if (argc != 2)
		die("usage: crash_workload manifest ROOT");
	int fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		die("%s: %s", argv[1], strerror(errno));
	manifest_walk(fd, "");
	qsort(mlines, nmlines, sizeof(*mlines), cmp_str);
	for (size_t i = 0; i < nmlines; i++) {
		printf("%s\n", mlines[i]);
		free(mlines[i]);
	}
	free(mlines);
	return 0;
}

/* ------------------------------------------------------------- clear-mmp */

/* Marks the MMP block clean and changes nothing else: unlike
 * "tune2fs -f -E clear_mmp", which replays a dirty journal itself, this
 * leaves the journal for e2fsck or the kernel to replay. */
static int cmd_clear_mmp(int argc, char **argv)
{
	if (argc != 2)
		die("usage: crash_workload clear-mmp IMAGE");
	ext2_filsys fs;
	errcode_t e = ext2fs_open2(argv[1], NULL, EXT2_FLAG_RW | EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP,
				   0, 0, unix_io_manager, &fs);
	if (e)
		die("%s: %s", argv[1], error_message(e));
	if (ext2fs_has_feature_mmp(fs->super))
		e = ext2fs_mmp_clear(fs);
	ext2fs_free(fs);           /* no superblock write-back */
	if (e)
		die("%s: clearing MMP: %s", argv[1], error_message(e));
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: crash_workload run|verify|manifest|clear-mmp ...");
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(argv[1], "run") == 0)
		return cmd_run(argc - 1, argv + 1);
	if (strcmp(argv[1], "verify") == 0)
		return cmd_verify(argc - 1, argv + 1);
	if (strcmp(argv[1], "manifest") == 0)
		return cmd_manifest(argc - 1, argv + 1);
	if (strcmp(argv[1], "clear-mmp") == 0)
		return cmd_clear_mmp(argc - 1, argv + 1);
	die("unknown command %s", argv[1]);
	return 2;
}
