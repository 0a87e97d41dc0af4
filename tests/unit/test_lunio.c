/* Unit tests for the LUN I/O layer (journal/lunio.c): lun_pread / lun_pwrite
 * move whole ranges across signals and partial transfers, fail with one log
 * line naming the LUN, the offset and the cause, obey the I/O gate, give up
 * on a transfer the path does not answer within a path timeout, and the
 * power-cut hook drops exactly the writes after the limit.
 *
 * pread64 / pwrite64 / fdatasync are wrapped (test_lunio.ldflags) so a test
 * can script EINTR, partial transfers, errors and hangs; unscripted calls go
 * to the real ones on a scratch file (no O_DIRECT: the layer does not care).
 * Timed transfers are io_uring requests, which the wrappers do not see: their
 * hung path is a pipe nobody writes (or a full one). The power-cut hook reads
 * its limit once per process, so that test runs this binary again with
 * CSVFS_FAULT_WRITE_LIMIT set; the worker path (no io_uring) runs in a child
 * with CSVFS_NO_IO_URING set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "journal/journal.h"

#define U 4096u
#define FILE_UNITS 8u

/* ---- scripted system calls ------------------------------------------------ */

ssize_t __real_pread64(int fd, void *buf, size_t len, off_t off);
ssize_t __real_pwrite64(int fd, const void *buf, size_t len, off_t off);
int __real_fdatasync(int fd);
ssize_t __wrap_pread64(int fd, void *buf, size_t len, off_t off);
ssize_t __wrap_pwrite64(int fd, const void *buf, size_t len, off_t off);
int __wrap_fdatasync(int fd);

/* What the next calls do, in order: 0 = the real call, -E = fail with E,
 * n > 0 = transfer at most n bytes, HANG = wait until release_hangs(), then
 * fail with EIO (a path that stops answering, then is aborted). */
#define HANG INT_MAX
static int script[8];
static unsigned script_len, script_pos;
static atomic_uint calls, syncs;
static pthread_mutex_t hang_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hang_cond = PTHREAD_COND_INITIALIZER;
static int hangs_released;

static void release_hangs(void)
{
	pthread_mutex_lock(&hang_lock);
	hangs_released = 1;
	pthread_cond_broadcast(&hang_cond);
	pthread_mutex_unlock(&hang_lock);
}

/* A scripted step that hangs: -EIO once released. */
static int hang_step(int s)
{
	if (s != HANG)
		return s;
	pthread_mutex_lock(&hang_lock);
	while (!hangs_released)
		pthread_cond_wait(&hang_cond, &hang_lock);
	pthread_mutex_unlock(&hang_lock);
	return -EIO;
}

static void scripted(unsigned n, const int *steps)
{
	if (n)   /* scripted(0, NULL): all real calls; memcpy may not take NULL */
		memcpy(script, steps, n * sizeof(*steps));
	pthread_mutex_lock(&hang_lock);
	hangs_released = 0;   /* a new script's HANG waits for its own release */
	pthread_mutex_unlock(&hang_lock);
	script_len = n;
	script_pos = 0;
}

static int next_step(void)
{
	return script_pos < script_len ? script[script_pos++] : 0;
}

ssize_t __wrap_pread64(int fd, void *buf, size_t len, off_t off)
{
	atomic_fetch_add(&calls, 1);
	int s = hang_step(next_step());
	if (s < 0) {
		errno = -s;
		return -1;
	}
	return __real_pread64(fd, buf, s > 0 && (size_t)s < len ? (size_t)s : len, off);
}

ssize_t __wrap_pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	atomic_fetch_add(&calls, 1);
	int s = hang_step(next_step());
	if (s < 0) {
		errno = -s;
		return -1;
	}
	return __real_pwrite64(fd, buf, s > 0 && (size_t)s < len ? (size_t)s : len, off);
}

int __wrap_fdatasync(int fd)
{
	atomic_fetch_add(&syncs, 1);
	int s = hang_step(next_step());
	if (s < 0) {
		errno = -s;
		return -1;
	}
	return __real_fdatasync(fd);
}

/* ---- fixture ---------------------------------------------------------------- */

struct fx {
	char path[PATH_MAX];
	struct lun lun;
	char log[4096];
	unsigned lines;
};

static void capture_log(void *arg, int level, const char *fmt, va_list ap)
{
	struct fx *f = arg;
	size_t at = strlen(f->log);
	assert_int_equal(level, 3);
	vsnprintf(f->log + at, sizeof(f->log) - at, fmt, ap);
	f->lines++;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	const char *t = getenv("TMPDIR");
	snprintf(f->path, sizeof(f->path), "%s/test_lunio.XXXXXX", t && *t ? t : "/tmp");
	int fd = mkstemp(f->path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, FILE_UNITS * U), 0);
	f->lun = (struct lun){ fd, f->path, capture_log, f };
	scripted(0, NULL);
	calls = syncs = 0;
	journal_gate_set(JOURNAL_GATE_OPEN);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	journal_gate_set(JOURNAL_GATE_OPEN);
	close(f->lun.fd);
	unlink(f->path);
	free(f);
	return 0;
}

static void fill(unsigned char *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)(i * 7 + seed * 31 + (i >> 12));
}

/* ---- transfers -------------------------------------------------------------- */

static void test_whole_range_across_eintr_and_partial(void **state)
{
	struct fx *f = *state;
	static unsigned char out[3 * U], in[3 * U];
	fill(out, sizeof(out), 1);
	scripted(3, (int[]){ -EINTR, 1000, U });
	assert_int_equal(lun_pwrite(&f->lun, out, sizeof(out), U, 0), 0);
	assert_int_equal(calls, 4);          /* EINTR, 1000 bytes, 4096, the rest */
	scripted(2, (int[]){ 5, -EINTR });
	assert_int_equal(lun_pread(&f->lun, in, sizeof(in), U), 0);
	assert_memory_equal(in, out, sizeof(out));
	assert_int_equal(f->lines, 0);
}

static void test_error_is_one_log_line(void **state)
{
	struct fx *f = *state;
	static unsigned char buf[U];
	scripted(1, (int[]){ -EIO });
	assert_int_equal(lun_pread(&f->lun, buf, U, 2 * U), -EIO);
	assert_int_equal(f->lines, 1);
	if (!strstr(f->log, f->path) || !strstr(f->log, "read") || !strstr(f->log, "8192") ||
	    !strstr(f->log, strerror(EIO)))
		fail_msg("the log line does not name LUN, offset and cause: '%s'", f->log);
	f->log[0] = 0;
	scripted(2, (int[]){ 100, -ENOSPC });
	assert_int_equal(lun_pwrite(&f->lun, buf, U, 0, 0), -ENOSPC);
	assert_int_equal(f->lines, 2);
	assert_non_null(strstr(f->log, "write"));
}

static void test_end_of_lun(void **state)
{
	struct fx *f = *state;
	static unsigned char buf[2 * U];
	assert_int_equal(lun_pread(&f->lun, buf, sizeof(buf), (FILE_UNITS - 1) * U), -ENODATA);
	assert_int_equal(f->lines, 1);
	assert_non_null(strstr(f->log, f->path));
	assert_non_null(strstr(f->log, "ends"));
}

static void test_sync_inside_the_write(void **state)
{
	struct fx *f = *state;
	static unsigned char buf[U];
	fill(buf, U, 2);
	assert_int_equal(lun_pwrite(&f->lun, buf, U, 0, 0), 0);
	assert_int_equal(syncs, 0);
	assert_int_equal(lun_pwrite(&f->lun, buf, U, 0, LUN_SYNC), 0);
	assert_int_equal(syncs, 1);
	scripted(2, (int[]){ 0, -EIO });     /* the write lands, the flush fails */
	assert_int_equal(lun_pwrite(&f->lun, buf, U, 0, LUN_SYNC), -EIO);
	assert_int_equal(f->lines, 1);
	assert_non_null(strstr(f->log, "flush"));
}

/* A commit skips its first flush only when every LUN write ended before a
 * flush began (journal/txn.c): a write ended after the flush's mark, or not
 * flushed at all, keeps it. */
static void test_flush_covers_writes(void **state)
{
	struct fx *f = *state;
	static unsigned char buf[U];
	fill(buf, U, 3);
	assert_int_equal(lun_pwrite(&f->lun, buf, U, 0, 0), 0);
	assert_false(lun_writes_flushed_all());
	uint64_t mark = lun_writes_mark();
	assert_int_equal(lun_pwrite(&f->lun, buf, U, U, 0), 0);   /* ends after the mark */
	lun_writes_flushed(mark);
	assert_false(lun_writes_flushed_all());
	lun_writes_flushed(lun_writes_mark());
	assert_true(lun_writes_flushed_all());
	lun_writes_flushed(mark);   /* an older flush's mark moves nothing back */
	assert_true(lun_writes_flushed_all());
	/* a timed write (io_uring, or a worker) counts as well */
	assert_int_equal(lun_transfer_timed(&f->lun, 1, buf, U, 2 * U, 5000), 0);
	assert_false(lun_writes_flushed_all());
	lun_writes_flushed(lun_writes_mark());
	assert_true(lun_writes_flushed_all());
}

/* ---- the gate ------------------------------------------------------------------- */

static void test_closed_gate_refuses_quietly(void **state)
{
	struct fx *f = *state;
	static unsigned char buf[U];
	journal_gate_set(JOURNAL_GATE_CLOSED);
	assert_int_equal(journal_gate_get(), JOURNAL_GATE_CLOSED);
	assert_int_equal(lun_pread(&f->lun, buf, U, 0), -EIO);
	assert_int_equal(lun_pwrite(&f->lun, buf, U, 0, LUN_SYNC), -EIO);
	assert_int_equal(calls + syncs, 0);
	assert_int_equal(f->lines, 0);   /* refused I/O is no LUN failure */
	journal_gate_set(JOURNAL_GATE_OPEN);
	assert_int_equal(lun_pread(&f->lun, buf, U, 0), 0);
}

struct writer { struct fx *f; atomic_int done; int rc; };

static void *write_one(void *arg)
{
	struct writer *w = arg;
	static unsigned char buf[U];
	fill(buf, U, 3);
	w->rc = lun_pwrite(&w->f->lun, buf, U, 0, 0);
	atomic_store(&w->done, 1);
	return NULL;
}

static void test_paused_gate_holds_until_open(void **state)
{
	struct writer w = { .f = *state };
	pthread_t t;
	journal_gate_set(JOURNAL_GATE_PAUSED);
	assert_int_equal(pthread_create(&t, NULL, write_one, &w), 0);
	nanosleep(&(struct timespec){ 0, 100 * 1000 * 1000 }, NULL);
	assert_int_equal(atomic_load(&w.done), 0);
	assert_int_equal(calls, 0);
	journal_gate_set(JOURNAL_GATE_OPEN);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(w.rc, 0);
	assert_int_equal(calls, 1);
	journal_gate_drain();            /* nothing in flight: returns at once */
}

/* ---- path failures and the path timeout (design.md §7) ------------------------- */

static void test_path_errors(void **state)
{
	assert_true(lun_error_is_path(-EIO) && lun_error_is_path(ENXIO));
	assert_true(lun_error_is_path(-ENODEV) && lun_error_is_path(-ETIMEDOUT));
	assert_false(lun_error_is_path(-ENOSPC) || lun_error_is_path(-ENODATA) ||
		     lun_error_is_path(-EINVAL) || lun_error_is_path(0));
}

/* A timed transfer moves the same bytes as the plain one, from the thread's
 * own buffer (no copy) or any other (through a scratch copy), and reports a
 * failure the same way: one log line. It runs as an io_uring request, so the
 * scripted pread/pwrite wrappers do not see it: the error is a real one. */
static void test_timed_transfer_moves_the_data(void **state)
{
	struct fx *f = *state;
	static unsigned char out[2 * U], in[2 * U];
	fill(out, sizeof(out), 5);
	assert_int_equal(lun_transfer_timed(&f->lun, 1, out, sizeof(out), U, 1000), 0);
	assert_int_equal(lun_transfer_timed(&f->lun, 0, in, sizeof(in), U, 1000), 0);
	assert_memory_equal(in, out, sizeof(in));
	unsigned char *own = lun_thread_buffer(2 * U);
	assert_non_null(own);
	assert_ptr_equal(lun_thread_buffer(U), own);
	assert_int_equal(lun_transfer_timed(&f->lun, 0, own, 2 * U, U, 1000), 0);
	assert_memory_equal(own, out, 2 * U);
	fill(own, U, 9);
	assert_int_equal(lun_transfer_timed(&f->lun, 1, own, U, 0, 1000), 0);
	assert_int_equal(lun_pread(&f->lun, in, U, 0), 0);
	assert_memory_equal(in, own, U);
	struct lun wronly = f->lun;
	wronly.fd = open(f->path, O_WRONLY);
	assert_true(wronly.fd >= 0);
	assert_int_equal(lun_transfer_timed(&wronly, 0, in, U, 0, 1000), -EBADF);
	assert_int_equal(f->lines, 1);
	assert_non_null(strstr(f->log, "read of 4096 bytes at byte 0 failed"));
	close(wronly.fd);
}

static void wait_for_no_given_up_transfer(void)
{
	for (int i = 0; i < 300 && lun_abandoned_inflight(); i++)
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	assert_int_equal(lun_abandoned_inflight(), 0);
}

/* A read the path does not answer (here: an empty pipe) is -ETIMEDOUT after
 * the timeout, with one log line, and counted until the path ends it. When
 * it ends, it writes into the pages it was given — which are no longer the
 * caller's: the thread buffer keeps its bytes, as does a probe's own buffer
 * (a worker's read). A probe says nothing; the end of a given-up io_uring
 * transfer is one log line. */
static void test_timed_read_gives_up_on_a_hung_path(void **state)
{
	struct fx *f = *state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct lun hung = f->lun;
	hung.fd = p[0];
	unsigned char *buf = lun_thread_buffer(U);
	static unsigned char probe[U], late[2 * U];
	memset(buf, 0x5a, U);
	memset(probe, 0x3c, U);
	assert_int_equal(lun_transfer_timed(&hung, 0, buf, U, 0, 100), -ETIMEDOUT);
	assert_int_equal(f->lines, 1);
	assert_non_null(strstr(f->log, "did not complete within 100 ms"));
	assert_int_equal(lun_abandoned_inflight(), 1);
	/* A probe's buffer is not the thread's: a worker's read, here scripted. */
	scripted(1, (int[]){ HANG });
	assert_int_equal(lun_probe(&f->lun, probe, U, 0, 100), -ETIMEDOUT);
	assert_int_equal(f->lines, 1);
	assert_int_equal(lun_abandoned_inflight(), 2);
	memset(late, 0xa5, sizeof(late));
	assert_int_equal(write(p[1], late, sizeof(late)), (ssize_t)sizeof(late));
	release_hangs();
	wait_for_no_given_up_transfer();
	for (unsigned i = 0; i < U; i++) {
		assert_int_equal(buf[i], 0x5a);
		assert_int_equal(probe[i], 0x3c);
	}
	assert_int_equal(f->lines, 2);
	assert_non_null(strstr(f->log, "given up after the path timeout has ended: done"));
	/* The thread goes on with a new ring, on the same buffer. */
	assert_int_equal(lun_transfer_timed(&f->lun, 0, buf, U, 0, 1000), 0);
	assert_int_equal(lun_probe(&f->lun, probe, U, 0, 100), 0);
	close(p[0]);
	close(p[1]);
}

/* A write the path does not answer (a full pipe) is given up on the same
 * way; the caller's buffer still holds the bytes (for the redirected retry),
 * and the late write, when the path takes it, carries them too. */
static void test_timed_write_gives_up_on_a_hung_path(void **state)
{
	struct fx *f = *state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_true(fcntl(p[1], F_SETPIPE_SZ, (int)U) >= (int)U);
	int cap = fcntl(p[1], F_GETPIPE_SZ);
	static unsigned char filler[1 << 16], got[U];
	assert_true(cap > 0 && (size_t)cap <= sizeof(filler));
	assert_int_equal(write(p[1], filler, (size_t)cap), cap);   /* full now */
	struct lun hung = f->lun;
	hung.fd = p[1];
	unsigned char *buf = lun_thread_buffer(U);
	fill(buf, U, 7);
	assert_int_equal(lun_transfer_timed(&hung, 1, buf, U, 0, 100), -ETIMEDOUT);
	assert_int_equal(lun_abandoned_inflight(), 1);
	unsigned char expect[U];
	fill(expect, U, 7);
	assert_memory_equal(buf, expect, U);
	assert_int_equal(read(p[0], filler, (size_t)cap), cap);     /* the path answers */
	wait_for_no_given_up_transfer();
	assert_int_equal(read(p[0], got, U), (ssize_t)U);
	assert_memory_equal(got, expect, U);
	close(p[0]);
	close(p[1]);
}

/* Without io_uring (CSVFS_NO_IO_URING: the worker threads): a read the path
 * does not answer is -ETIMEDOUT after one log line and counted until the
 * path ends it; the caller's buffer is never written after it gave up. */
static void test_worker_read_gives_up_on_a_hung_path(void **state)
{
	struct fx *f = *state;
	unsigned char *buf = lun_thread_buffer(U);
	memset(buf, 0x5a, U);
	scripted(1, (int[]){ HANG });
	assert_int_equal(lun_transfer_timed(&f->lun, 0, buf, U, 0, 100), -ETIMEDOUT);
	assert_int_equal(lun_abandoned_inflight(), 1);
	assert_non_null(strstr(f->log, "did not complete within 100 ms"));
	release_hangs();
	wait_for_no_given_up_transfer();
	for (unsigned i = 0; i < U; i++)
		assert_int_equal(buf[i], 0x5a);
	assert_int_equal(lun_transfer_timed(&f->lun, 0, buf, U, 0, 1000), 0);
}

/* The worker-path tests above, in a child run with CSVFS_NO_IO_URING=1. */
static void test_timed_transfers_without_io_uring(void **state)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	assert_true(n > 0);
	self[n] = 0;
	pid_t pid = fork();
	if (pid == 0) {
		setenv("CSVFS_NO_IO_URING", "1", 1);
		execl(self, self, "--workers", (char *)NULL);
		_exit(127);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void *opener(void *arg)
{
	(void)arg;
	nanosleep(&(struct timespec){ 0, 200 * 1000 * 1000 }, NULL);   /* past the timeout */
	journal_gate_set(JOURNAL_GATE_OPEN);
	return NULL;
}

/* A paused gate (quorum lost) holds a timed transfer as it holds any: that
 * is a wait for the cluster, not a path that does not answer. */
static void test_paused_gate_holds_a_timed_transfer(void **state)
{
	struct fx *f = *state;
	journal_gate_set(JOURNAL_GATE_PAUSED);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, opener, NULL), 0);
	static unsigned char buf[U];
	assert_int_equal(lun_transfer_timed(&f->lun, 0, buf, U, 0, 50), 0);
	pthread_join(t, NULL);
	assert_int_equal(f->lines, 0);
	assert_int_equal(lun_abandoned_inflight(), 0);
}

/* ---- every call with a path timeout (a cluster node: lun_set_path_timeout) ----- */

static char observed_name[PATH_MAX];
static int observed_err, observed_calls;

static void observer(const char *name, int err)
{
	snprintf(observed_name, sizeof(observed_name), "%s", name);
	observed_err = err;
	observed_calls++;
}

/* With a path timeout set for the process, the plain calls are timed
 * transfers too (a worker's, for buffers not the thread's: large ones too),
 * the flush included; a read the path does not answer is -ETIMEDOUT, one
 * log line, and a path failure for the observer; a closed gate refuses a
 * flush quietly. */
static void test_path_timeout_covers_every_call(void **state)
{
	struct fx *f = *state;
	observed_calls = 0;
	lun_set_path_observer(observer);
	lun_set_path_timeout(100);
	static unsigned char out[2 * U], in[2 * U], big[(1u << 20) + 2 * U], back[sizeof(big)];
	fill(out, sizeof(out), 3);
	assert_int_equal(lun_pwrite(&f->lun, out, sizeof(out), U, LUN_SYNC), 0);
	assert_int_equal(lun_pread(&f->lun, in, sizeof(in), U), 0);
	assert_memory_equal(in, out, sizeof(in));
	assert_int_equal(lun_fdatasync(&f->lun), 0);
	assert_int_equal(ftruncate(f->lun.fd, sizeof(big)), 0);
	fill(big, sizeof(big), 4);
	assert_int_equal(lun_pwrite(&f->lun, big, sizeof(big), 0, 0), 0);
	assert_int_equal(lun_pread(&f->lun, back, sizeof(back), 0), 0);
	assert_memory_equal(back, big, sizeof(big));
	assert_int_equal(f->lines, 0);
	scripted(1, (int[]){ HANG });
	assert_int_equal(lun_pread(&f->lun, in, U, 0), -ETIMEDOUT);
	assert_int_equal(f->lines, 1);
	assert_non_null(strstr(f->log, "read of 4096 bytes at byte 0 did not complete within 100 ms"));
	assert_int_equal(observed_calls, 1);
	assert_int_equal(observed_err, -ETIMEDOUT);
	assert_string_equal(observed_name, f->path);
	journal_gate_set(JOURNAL_GATE_CLOSED);
	assert_int_equal(lun_fdatasync(&f->lun), -EIO);
	assert_int_equal(f->lines, 1);
	journal_gate_set(JOURNAL_GATE_OPEN);
	lun_set_path_timeout(0);
	unsigned before = syncs;
	assert_int_equal(lun_fdatasync(&f->lun), 0);
	assert_int_equal(syncs, before + 1);
	release_hangs();
	wait_for_no_given_up_transfer();
	lun_set_path_observer(NULL);
}

/* Without io_uring: a flush the path does not answer is given up on after
 * the path timeout (one log line), and its end is logged once the path
 * answers; the worker's flush passed the gate like any timed transfer. */
static void test_worker_flush_gives_up_on_a_hung_path(void **state)
{
	struct fx *f = *state;
	lun_set_path_timeout(100);
	scripted(1, (int[]){ HANG });
	assert_int_equal(lun_fdatasync(&f->lun), -ETIMEDOUT);
	assert_non_null(strstr(f->log, "flush did not complete within 100 ms"));
	assert_int_equal(lun_abandoned_inflight(), 1);
	release_hangs();
	wait_for_no_given_up_transfer();
	assert_int_equal(lun_fdatasync(&f->lun), 0);
	assert_int_equal(syncs, 2);
	lun_set_path_timeout(0);
}

/* ---- the power-cut hook ----------------------------------------------------------- */

/* In a fresh process with CSVFS_FAULT_WRITE_LIMIT=2: units 0..4 each get one
 * write; LUN_NO_FAULT ones (1 and 4) are not counted. */
static int fault_child(const char *path)
{
	int fd = open(path, O_RDWR);
	struct lun l = { fd, path, NULL, NULL };
	static unsigned char buf[U];
	unsigned flags[5] = { 0, LUN_NO_FAULT, 0, 0, LUN_NO_FAULT };
	for (unsigned u = 0; u < 5; u++) {
		memset(buf, 'A' + (int)u, U);
		if (fd < 0 || lun_pwrite(&l, buf, U, u * U, flags[u]) != 0)
			return 1;
	}
	return 0;
}

static void test_power_cut_drops_after_the_limit(void **state)
{
	struct fx *f = *state;
	char self[PATH_MAX], err_path[PATH_MAX + 8];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	assert_true(n > 0);
	self[n] = 0;
	snprintf(err_path, sizeof(err_path), "%s.err", f->path);
	pid_t pid = fork();
	if (pid == 0) {
		int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(e, 2);
		setenv("CSVFS_FAULT_WRITE_LIMIT", "2", 1);
		execl(self, self, "--fault-child", f->path, (char *)NULL);
		_exit(127);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	static unsigned char buf[U];
	const char want[5] = { 'A', 'B', 'C', 0, 'E' };   /* unit 3: write 3, dropped */
	for (unsigned u = 0; u < 5; u++) {
		assert_int_equal(pread(f->lun.fd, buf, U, u * U), U);
		if (buf[0] != (unsigned char)want[u] || buf[U - 1] != (unsigned char)want[u])
			fail_msg("unit %u holds 0x%02x, expected 0x%02x", u, buf[0], want[u]);
	}
	char err[1024] = "";
	FILE *fp = fopen(err_path, "r");
	assert_non_null(fp);
	size_t got = fread(err, 1, sizeof(err) - 1, fp);
	err[got] = 0;
	fclose(fp);
	unlink(err_path);
	/* tests/integration/powercut.sh parses the second line. */
	if (!strstr(err, "power cut after 2 LUN writes") ||
	    !strstr(err, "fault injection: 3 LUN writes issued, 1 dropped"))
		fail_msg("the hook's report is not as expected: '%s'", err);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--fault-child") == 0)
		return fault_child(argv[2]);
	if (argc == 2 && strcmp(argv[1], "--workers") == 0) {
		const struct CMUnitTest workers[] = {
			cmocka_unit_test_setup_teardown(test_timed_transfer_moves_the_data, setup, teardown),
			cmocka_unit_test_setup_teardown(test_worker_read_gives_up_on_a_hung_path, setup,
							teardown),
			cmocka_unit_test_setup_teardown(test_worker_flush_gives_up_on_a_hung_path, setup,
							teardown),
		};
		return cmocka_run_group_tests_name("lunio without io_uring", workers, NULL, NULL);
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_whole_range_across_eintr_and_partial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_is_one_log_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_end_of_lun, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_inside_the_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flush_covers_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_closed_gate_refuses_quietly, setup, teardown),
		cmocka_unit_test_setup_teardown(test_paused_gate_holds_until_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_path_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timed_transfer_moves_the_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timed_read_gives_up_on_a_hung_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timed_write_gives_up_on_a_hung_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_paused_gate_holds_a_timed_transfer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_path_timeout_covers_every_call, setup, teardown),
		cmocka_unit_test_setup_teardown(test_power_cut_drops_after_the_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timed_transfers_without_io_uring, setup, teardown),
	};
	return cmocka_run_group_tests_name("lunio", tests, NULL, NULL);
}
