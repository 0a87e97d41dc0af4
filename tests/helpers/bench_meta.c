/*
 * bench_meta — metadata rate benchmark for `make bench` (tests/bench/run.sh).
 * Not a test: it measures and prints, it asserts nothing about speed.
 *
 *   bench_meta DIR NTHREADS NOPS MODE [SECONDS]
 *
 * Thread k works in its own subdirectory DIR/t<k> (created when missing), so
 * the threads do not serialise on one directory's lock in the kernel VFS.
 * All threads start together (barrier); the run ends when NOPS operations in
 * total are done or SECONDS (default 10) have passed, whichever comes first.
 *
 * MODE
 *   create        open(O_CREAT|O_EXCL|O_WRONLY) + close of new empty files
 *                 DIR/t<k>/f<i>; latency = open+close.
 *   create_fsync  the same plus fsync(fd) before close; latency = the fsync.
 *   mixed         a cycle of namespace operations on one name each:
 *                 create (open O_CREAT|O_EXCL + close), rename, mkdir, rmdir,
 *                 unlink — 5 operations per cycle; latency = each operation.
 *   mixed_fsync   the same, each operation made durable: fsync of the new
 *                 file before its close, fsync of the directory after the
 *                 others; latency = each fsync.
 *   stat          fstatat() of the files a previous create run with the same
 *                 NTHREADS left in DIR/t<k>, cycling over them; the kernel may
 *                 answer from its attribute cache (what applications see).
 *   stat_sync     the same with statx(AT_STATX_FORCE_SYNC): a FUSE filesystem
 *                 must answer every call (no attribute cache); on a kernel
 *                 filesystem it is a plain stat.
 *
 * Output: one line of key=value pairs on stdout, e.g.
 *   mode=create_fsync threads=8 ops=1234 errors=0 secs=4.000 ops_per_s=308.5
 *   lat=fsync lat_p50_us=25.1 lat_p99_us=80.3 lat_max_us=120.0
 * Exit status 0 when at least one operation succeeded and none failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum mode { M_CREATE, M_CREATE_FSYNC, M_MIXED, M_MIXED_FSYNC, M_STAT, M_STAT_SYNC };

/* Latency histogram: values below 32 ns exact, above that 32 sub-buckets per
 * power of two (relative error < 3.2 %). */
#define SUB 32
#define NBUCKETS (SUB + 59 * SUB)

struct worker {
	pthread_t tid;
	int idx;
	int dirfd;
	uint64_t quota;        /* operations this thread may do at most */
	uint64_t ops, errors;
	int first_errno;
	uint64_t hist[NBUCKETS];
};

static enum mode g_mode;
static double g_deadline;          /* CLOCK_MONOTONIC seconds */
static pthread_barrier_t g_barrier;
static double g_start;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int bucket_of(uint64_t v)
{
	if (v < SUB)
		return (int)v;
	int msb = 63 - __builtin_clzll(v);          /* >= 5 */
	int shift = msb - 5;
	int sub = (int)(v >> shift) - SUB;           /* 0 .. SUB-1 */
	int b = SUB + shift * SUB + sub;
	return b < NBUCKETS ? b : NBUCKETS - 1;
}

/* Middle of a bucket's value range, in ns. */
static double bucket_mid(int b)
{
	if (b < SUB)
		return (double)b;
	int shift = (b - SUB) / SUB;
	int sub = (b - SUB) % SUB;
	double lo = (double)((uint64_t)(SUB + sub) << shift);
	double width = (double)(1ull << shift);
	return lo + width / 2.0;
}

static void record(struct worker *w, uint64_t ns)
{
	w->hist[bucket_of(ns)]++;
}

static void fail(struct worker *w, int e)
{
	if (w->errors++ == 0)
		w->first_errno = e;
}

static void run_create(struct worker *w, int do_fsync)
{
	char name[32];
	for (uint64_t i = 0; i < w->quota; i++) {
		if ((i & 7) == 0 && now() >= g_deadline)
			break;
		snprintf(name, sizeof name, "f%llu", (unsigned long long)i);
		uint64_t t0 = now_ns();
		int fd = openat(w->dirfd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
		if (fd < 0) {
			fail(w, errno);
			return;
		}
		uint64_t t1 = now_ns(), t2 = t1;
		if (do_fsync) {
			if (fsync(fd) != 0) {
				fail(w, errno);
				close(fd);
				return;
			}
			t2 = now_ns();
		}
		if (close(fd) != 0) {
			fail(w, errno);
			return;
		}
		record(w, do_fsync ? t2 - t1 : now_ns() - t0);
		w->ops++;
	}
}

/* One namespace operation of the mixed cycle (rc from the call), then with
 * do_fsync the directory's fsync; records the latency and counts it. */
static int mixed_step(struct worker *w, int rc, uint64_t t0, int do_fsync)
{
	if (rc != 0) {
		fail(w, errno);
		return -1;
	}
	uint64_t t1 = now_ns();
	if (do_fsync) {
		if (fsync(w->dirfd) != 0) {
			fail(w, errno);
			return -1;
		}
		record(w, now_ns() - t1);
	} else {
		record(w, t1 - t0);
	}
	w->ops++;
	return 0;
}

static void run_mixed(struct worker *w, int do_fsync)
{
	char a[32], b[32], dn[32];
	for (uint64_t i = 0; w->ops + 5 <= w->quota; i++) {
		if (now() >= g_deadline)
			break;
		snprintf(a, sizeof a, "m%llu", (unsigned long long)i);
		snprintf(b, sizeof b, "n%llu", (unsigned long long)i);
		snprintf(dn, sizeof dn, "d%llu", (unsigned long long)i);
		/* create: the file's own fsync makes it and its entry durable */
		uint64_t t0 = now_ns();
		int fd = openat(w->dirfd, a, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
		if (fd < 0) {
			fail(w, errno);
			return;
		}
		uint64_t t1 = now_ns();
		if (do_fsync && fsync(fd) != 0) {
			fail(w, errno);
			close(fd);
			return;
		}
		uint64_t t2 = now_ns();
		if (close(fd) != 0) {
			fail(w, errno);
			return;
		}
		record(w, do_fsync ? t2 - t1 : now_ns() - t0);
		w->ops++;
		t0 = now_ns();
		if (mixed_step(w, renameat(w->dirfd, a, w->dirfd, b), t0, do_fsync))
			return;
		t0 = now_ns();
		if (mixed_step(w, mkdirat(w->dirfd, dn, 0755), t0, do_fsync))
			return;
		t0 = now_ns();
		if (mixed_step(w, unlinkat(w->dirfd, dn, AT_REMOVEDIR), t0, do_fsync))
			return;
		t0 = now_ns();
		if (mixed_step(w, unlinkat(w->dirfd, b, 0), t0, do_fsync))
			return;
	}
}

static void run_stat(struct worker *w, int force_sync)
{
	char name[32];
	uint64_t i = 0;
	while (w->ops < w->quota) {
		if ((w->ops & 15) == 0 && now() >= g_deadline)
			break;
		snprintf(name, sizeof name, "f%llu", (unsigned long long)i);
		uint64_t t0 = now_ns();
		int rc;
		if (force_sync) {
			struct statx stx;
			rc = statx(w->dirfd, name, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &stx);
		} else {
			struct stat st;
			rc = fstatat(w->dirfd, name, &st, 0);
		}
		uint64_t t1 = now_ns();
		if (rc != 0) {
			if (errno == ENOENT && i > 0) {   /* past the last file: wrap */
				i = 0;
				continue;
			}
			fail(w, errno);
			return;
		}
		record(w, t1 - t0);
		w->ops++;
		i++;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	pthread_barrier_wait(&g_barrier);
	switch (g_mode) {
	case M_CREATE:       run_create(w, 0); break;
	case M_CREATE_FSYNC: run_create(w, 1); break;
	case M_MIXED:        run_mixed(w, 0); break;
	case M_MIXED_FSYNC:  run_mixed(w, 1); break;
	case M_STAT:         run_stat(w, 0); break;
	case M_STAT_SYNC:    run_stat(w, 1); break;
	}
	return NULL;
}

static double percentile(const uint64_t *hist, uint64_t total, double p)
{
	if (total == 0)
		return 0.0;
	uint64_t want = (uint64_t)(p * (double)total + 0.999999);
	if (want < 1)
		want = 1;
	uint64_t seen = 0;
	for (int b = 0; b < NBUCKETS; b++) {
		seen += hist[b];
		if (seen >= want)
			return bucket_mid(b);
	}
	return bucket_mid(NBUCKETS - 1);
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_meta DIR NTHREADS NOPS create|create_fsync|mixed|mixed_fsync|stat|stat_sync "
		"[SECONDS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc != 5 && argc != 6)
		usage();
	const char *dir = argv[1];
	int nthreads = atoi(argv[2]);
	long long nfiles = atoll(argv[3]);
	const char *ms = argv[4];
	double secs = argc == 6 ? atof(argv[5]) : 10.0;
	if (nthreads < 1 || nthreads > 1024 || nfiles < 1 || secs <= 0)
		usage();
	if (!strcmp(ms, "create"))
		g_mode = M_CREATE;
	else if (!strcmp(ms, "create_fsync"))
		g_mode = M_CREATE_FSYNC;
	else if (!strcmp(ms, "mixed"))
		g_mode = M_MIXED;
	else if (!strcmp(ms, "mixed_fsync"))
		g_mode = M_MIXED_FSYNC;
	else if (!strcmp(ms, "stat"))
		g_mode = M_STAT;
	else if (!strcmp(ms, "stat_sync"))
		g_mode = M_STAT_SYNC;
	else
		usage();

	struct worker *ws = calloc((size_t)nthreads, sizeof *ws);
	if (!ws) {
		perror("calloc");
		return 1;
	}
	int creating = g_mode != M_STAT && g_mode != M_STAT_SYNC;
	for (int k = 0; k < nthreads; k++) {
		char sub[4096];
		snprintf(sub, sizeof sub, "%s/t%d", dir, k);
		if (creating && mkdir(sub, 0755) != 0 && errno != EEXIST) {
			fprintf(stderr, "bench_meta: mkdir %s: %s\n", sub, strerror(errno));
			return 1;
		}
		ws[k].idx = k;
		ws[k].dirfd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (ws[k].dirfd < 0) {
			fprintf(stderr, "bench_meta: open %s: %s\n", sub, strerror(errno));
			return 1;
		}
		ws[k].quota = (uint64_t)(nfiles / nthreads + (k < nfiles % nthreads ? 1 : 0));
	}

	pthread_barrier_init(&g_barrier, NULL, (unsigned)nthreads + 1);
	for (int k = 0; k < nthreads; k++) {
		int e = pthread_create(&ws[k].tid, NULL, worker_main, &ws[k]);
		if (e) {
			fprintf(stderr, "bench_meta: pthread_create: %s\n", strerror(e));
			return 1;
		}
	}
	g_start = now();
	g_deadline = g_start + secs;
	pthread_barrier_wait(&g_barrier);
	for (int k = 0; k < nthreads; k++)
		pthread_join(ws[k].tid, NULL);
	double elapsed = now() - g_start;

	static uint64_t hist[NBUCKETS];
	uint64_t ops = 0, errors = 0, lmax = 0;
	int first_errno = 0;
	for (int k = 0; k < nthreads; k++) {
		ops += ws[k].ops;
		errors += ws[k].errors;
		if (ws[k].errors && !first_errno)
			first_errno = ws[k].first_errno;
		for (int b = 0; b < NBUCKETS; b++) {
			hist[b] += ws[k].hist[b];
			if (ws[k].hist[b] && (uint64_t)b > lmax)
				lmax = (uint64_t)b;
		}
		close(ws[k].dirfd);
	}
	if (errors)
		fprintf(stderr, "bench_meta: %llu operation(s) failed, first: %s\n",
			(unsigned long long)errors, strerror(first_errno));
	printf("mode=%s threads=%d ops=%llu errors=%llu secs=%.3f ops_per_s=%.1f "
	       "lat=%s lat_p50_us=%.1f lat_p99_us=%.1f lat_max_us=%.1f\n",
	       ms, nthreads, (unsigned long long)ops, (unsigned long long)errors, elapsed,
	       elapsed > 0 ? (double)ops / elapsed : 0.0,
	       g_mode == M_CREATE_FSYNC || g_mode == M_MIXED_FSYNC ? "fsync"
	       : g_mode == M_CREATE ? "open+close" : g_mode == M_MIXED ? "op" : "stat",
	       percentile(hist, ops, 0.50) / 1000.0, percentile(hist, ops, 0.99) / 1000.0,
	       ops ? bucket_mid((int)lmax) / 1000.0 : 0.0);
	free(ws);
	return (ops > 0 && errors == 0) ? 0 : 1;
}
