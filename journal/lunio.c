/* LUN I/O: the one way this process reads and writes its LUN.
 *
 * Every LUN transfer of csvfs — the metadata cache and journal commits
 * (iomgr.c, txn.c), file data and zeroing (fs/data.c, fs/meta_extent.c), the MMP
 * block (fs/meta_mmp.c) — is a lun_pread or a lun_pwrite, so that three things see
 * all of them:
 *   - the I/O gate (design.md §6, invariant 5): a node that lost quorum must
 *     issue no LUN I/O after its deadline;
 *   - the power-cut hook of the crash tests (CSVFS_FAULT_WRITE_LIMIT);
 *   - one error path: whole transfers, one log line per failure.
 * Redirected I/O and path-failure detection (design.md §7) hook in here too.
 *
 * The gate and the hook are process-wide by nature — they model this node's
 * one path to the LUN — hence global state, each with its own guard.
 */
#include "journal/journal.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- the I/O gate -------------------------------------------------------- */

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static _Atomic int gate_state = JOURNAL_GATE_OPEN;
static unsigned gate_inside;     /* I/Os between enter and leave (gate_lock) */

void journal_gate_set(enum journal_gate state)
{
	pthread_mutex_lock(&gate_lock);
	atomic_store(&gate_state, state);
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
}

enum journal_gate journal_gate_get(void)
{
	return atomic_load(&gate_state);
}

/* 0: go ahead, then gate_leave(); -EIO: the gate is closed. Waits while it
 * is paused. The open gate is checked first without waiting on anyone. */
static int gate_enter(void)
{
	if (atomic_load(&gate_state) == JOURNAL_GATE_OPEN) {
		pthread_mutex_lock(&gate_lock);
		if (atomic_load(&gate_state) == JOURNAL_GATE_OPEN) {
			gate_inside++;
			pthread_mutex_unlock(&gate_lock);
			return 0;
		}
		pthread_mutex_unlock(&gate_lock);
	}
	pthread_mutex_lock(&gate_lock);
	while (atomic_load(&gate_state) == JOURNAL_GATE_PAUSED)
		pthread_cond_wait(&gate_cond, &gate_lock);
	int rc = atomic_load(&gate_state) == JOURNAL_GATE_OPEN ? 0 : -EIO;
	if (rc == 0)
		gate_inside++;
	pthread_mutex_unlock(&gate_lock);
	return rc;
}

static void gate_leave(void)
{
	pthread_mutex_lock(&gate_lock);
	if (--gate_inside == 0)
		pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
}

void journal_gate_drain(void)
{
	pthread_mutex_lock(&gate_lock);
	while (gate_inside)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
}

/* ---- the power-cut hook (tests only) ------------------------------------- */

/* With CSVFS_FAULT_WRITE_LIMIT=N in the environment, the first N writes to
 * the LUN happen and every later one is silently dropped (reported as done),
 * as if power failed after write N while the process ran on. At a normal exit
 * (not kill -9) the process reports how many writes it issued, so a test can
 * spread its limits over a workload's writes (tests/integration/powercut.sh
 * calibrates with a limit it never reaches and parses that line). */
static pthread_once_t fault_once = PTHREAD_ONCE_INIT;
static long long fault_limit = -1;              /* written once under fault_once */
static atomic_llong fault_writes;
static atomic_int fault_announced;

static void fault_report(void)
{
	long long n = atomic_load(&fault_writes);
	fprintf(stderr, "csvfs: fault injection: %lld LUN writes issued, %lld dropped\n", n,
		n > fault_limit ? n - fault_limit : 0);
}

static void fault_init(void)
{
	const char *s = getenv("CSVFS_FAULT_WRITE_LIMIT");
	if (s && *s) {
		fault_limit = atoll(s);
		if (fault_limit >= 0)
			atexit(fault_report);
	}
}

/* 1 when this write must be dropped: it is past the limit. */
static int fault_drop_write(void)
{
	pthread_once(&fault_once, fault_init);
	if (fault_limit < 0)
		return 0;
	if (atomic_fetch_add(&fault_writes, 1) < fault_limit)
		return 0;
	if (atomic_exchange(&fault_announced, 1) == 0)
		fprintf(stderr, "csvfs: fault injection: power cut after %lld LUN writes; "
			"later writes are dropped\n", fault_limit);
	return 1;
}

/* ---- transfers ----------------------------------------------------------- */

static void lun_log(const struct lun *l, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (l->log) {
		l->log(l->log_arg, 3 /* error, as syslog LOG_ERR */, fmt, ap);
	} else {
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
}

static _Atomic(lun_path_observer_fn) path_observer;

void lun_set_path_observer(lun_path_observer_fn fn)
{
	atomic_store(&path_observer, fn);
}

static int failed(const struct lun *l, const char *what, size_t len, uint64_t off, int err)
{
	if (!l->name)   /* a probe: the caller reports */
		return -err;
	lun_log(l, "LUN %s: %s of %zu bytes at byte %" PRIu64 " failed: %s", l->name, what, len,
		off, strerror(err));
	lun_path_observer_fn observe = atomic_load(&path_observer);
	if (observe && lun_error_is_path(err))
		observe(l->name, -err);
	return -err;
}

/* A transfer that returns 0 has reached the end of the LUN (an image file
 * shorter than the volume): the caller is told which, not a bare EIO. */
static int ended(const struct lun *l, int write, size_t len, uint64_t off, size_t done)
{
	if (!l->name)
		return write ? -ENOSPC : -ENODATA;
	lun_log(l, "LUN %s: %s of %zu bytes at byte %" PRIu64 " stopped after %zu: the LUN ends there",
		l->name, write ? "write" : "read", len, off, done);
	return write ? -ENOSPC : -ENODATA;
}

/* The whole range, however the kernel splits it: a signal or a partial
 * transfer is not a failure. */
static int transfer(const struct lun *l, int write, char *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		off_t at = (off_t)(off + done);
		ssize_t n = write ? pwrite(l->fd, buf + done, len - done, at)
				  : pread(l->fd, buf + done, len - done, at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return failed(l, write ? "write" : "read", len, off, errno);
		if (n == 0)
			return ended(l, write, len, off, done);
		done += (size_t)n;
	}
	return 0;
}

int lun_pread(const struct lun *l, void *buf, size_t len, uint64_t off)
{
	if (gate_enter())
		return -EIO;
	int rc = transfer(l, 0, buf, len, off);
	gate_leave();
	return rc;
}

int lun_pwrite(const struct lun *l, const void *buf, size_t len, uint64_t off, unsigned flags)
{
	if (gate_enter())
		return -EIO;
	int rc = 0;
	if ((flags & LUN_NO_FAULT) || !fault_drop_write())
		rc = transfer(l, 1, (char *)buf, len, off);
	/* The flush stays inside the same pass: a drain waits for it too. */
	if (rc == 0 && (flags & LUN_SYNC) && fdatasync(l->fd) != 0)
		rc = failed(l, "flush after a write", len, off, errno);
	gate_leave();
	return rc;
}

int lun_error_is_path(int err)
{
	if (err < 0)
		err = -err;
	return err == EIO || err == ENXIO || err == ENODEV || err == ETIMEDOUT;
}

/* ---- transfers with a path timeout -------------------------------------- */

/* A transfer handed to a worker. Whoever finishes last with it frees it: the
 * caller when it got the result, the worker when the caller gave up. The
 * data moves through the worker's own buffer, copied from or to the
 * caller's under the job's lock, so a transfer the caller gave up on never
 * touches the caller's memory again; the worker's buffer lives as long as
 * the worker, so nothing is allocated per transfer. */
struct timed_job {
	struct lun lun;
	int write;
	size_t len;
	uint64_t off;
	void *caller_buf;          /* NULL once the caller gave up */
	pthread_mutex_t mu;        /* rc, done, abandoned, caller_buf */
	pthread_cond_t done_cv;    /* its caller waits on it alone: no herd at a deep queue */
	int rc, done, abandoned;
	struct timed_job *next;    /* the queue (tj_lock) */
};

#define TJ_WORKERS_MAX 32      /* beyond this, jobs queue (and time out there) */

static pthread_mutex_t tj_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tj_work = PTHREAD_COND_INITIALIZER;
static struct timed_job *tj_head, *tj_tail;   /* the queue (tj_lock) */
static unsigned tj_workers, tj_idle;            /* (tj_lock) */
static unsigned tj_abandoned;                   /* timed out, not answered (tj_lock) */

static void job_free(struct timed_job *j)
{
	pthread_cond_destroy(&j->done_cv);
	pthread_mutex_destroy(&j->mu);
	free(j);
}

/* The worker's buffer, at least len bytes (aligned for O_DIRECT). */
static void *worker_buffer(void **buf, size_t *cap, size_t len)
{
	if (len <= *cap)
		return *buf;
	void *n = NULL;
	if (posix_memalign(&n, 4096, len))
		return NULL;
	free(*buf);
	*buf = n;
	*cap = len;
	return n;
}

static struct timed_job *tj_next(void)
{
	pthread_mutex_lock(&tj_lock);
	while (!tj_head) {
		tj_idle++;
		pthread_cond_wait(&tj_work, &tj_lock);
		tj_idle--;
	}
	struct timed_job *j = tj_head;
	tj_head = j->next;
	if (!tj_head)
		tj_tail = NULL;
	pthread_mutex_unlock(&tj_lock);
	return j;
}

/* Runs j on wbuf; returns whether the caller gave up (the job is then ours). */
static int tj_run(struct timed_job *j, void *wbuf)
{
	pthread_mutex_lock(&j->mu);
	int gone = j->abandoned;
	if (!gone && wbuf && j->write)
		memcpy(wbuf, j->caller_buf, j->len);
	pthread_mutex_unlock(&j->mu);
	int rc = gone ? -ECANCELED : !wbuf ? -ENOMEM
		 : j->write ? lun_pwrite(&j->lun, wbuf, j->len, j->off, 0)
			    : lun_pread(&j->lun, wbuf, j->len, j->off);
	pthread_mutex_lock(&j->mu);
	j->rc = rc;
	j->done = 1;
	gone = j->abandoned;
	if (!gone && rc == 0 && !j->write)
		memcpy(j->caller_buf, wbuf, j->len);
	if (!gone)
		pthread_cond_signal(&j->done_cv);
	pthread_mutex_unlock(&j->mu);
	return gone;
}

static void *tj_worker(void *arg)
{
	(void)arg;
	void *wbuf = NULL;
	size_t wcap = 0;
	for (;;) {
		struct timed_job *j = tj_next();
		if (tj_run(j, worker_buffer(&wbuf, &wcap, j->len ? j->len : 4096))) {
			pthread_mutex_lock(&tj_lock);
			tj_abandoned--;
			pthread_mutex_unlock(&tj_lock);
			job_free(j);
		}
	}
	return NULL;
}

/* Under tj_lock: queues j, with a worker for it if none is idle. */
static int tj_submit(struct timed_job *j)
{
	if (!tj_idle && tj_workers < TJ_WORKERS_MAX) {
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		int rc = pthread_create(&t, &a, tj_worker, NULL);
		pthread_attr_destroy(&a);
		if (rc == 0)
			tj_workers++;
		else if (!tj_workers)
			return -rc;
	}
	j->next = NULL;
	if (tj_tail)
		tj_tail->next = j;
	else
		tj_head = j;
	tj_tail = j;
	pthread_cond_signal(&tj_work);
	return 0;
}

static struct timespec deadline_after(unsigned ms)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

int lun_transfer_timed(const struct lun *l, int write, void *buf, size_t len, uint64_t off,
		       unsigned timeout_ms)
{
	if (!timeout_ms)
		return write ? lun_pwrite(l, buf, len, off, 0) : lun_pread(l, buf, len, off);
	struct timed_job *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	*j = (struct timed_job){ .lun = *l, .write = write, .len = len, .off = off, .caller_buf = buf };
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->done_cv, NULL);
	pthread_mutex_lock(&tj_lock);
	int rc = tj_submit(j);
	pthread_mutex_unlock(&tj_lock);
	if (rc) {
		job_free(j);
		return failed(l, "hand-off of a transfer", len, off, -rc);
	}
	struct timespec until = deadline_after(timeout_ms);
	pthread_mutex_lock(&j->mu);
	while (!j->done)
		if (pthread_cond_timedwait(&j->done_cv, &j->mu, &until) == ETIMEDOUT && !j->done)
			break;
	int done = j->done;
	rc = j->rc;
	if (!done) {
		j->abandoned = 1;          /* the worker frees it; our buffer is ours again */
		j->caller_buf = NULL;
		pthread_mutex_lock(&tj_lock);
		tj_abandoned++;
		pthread_mutex_unlock(&tj_lock);
	}
	pthread_mutex_unlock(&j->mu);
	if (done) {
		job_free(j);
		return rc;
	}
	if (l->name)
		lun_log(l, "LUN %s: %s of %zu bytes at byte %" PRIu64 " did not complete "
			"within %u ms (path timeout)", l->name, write ? "write" : "read", len, off,
			timeout_ms);
	return -ETIMEDOUT;
}

unsigned lun_abandoned_inflight(void)
{
	pthread_mutex_lock(&tj_lock);
	unsigned n = tj_abandoned;
	pthread_mutex_unlock(&tj_lock);
	return n;
}

int lun_probe(const struct lun *l, void *buf, size_t len, uint64_t off, unsigned timeout_ms)
{
	struct lun quiet = *l;
	quiet.name = NULL;   /* failed(), ended() and the timeout stay silent */
	return lun_transfer_timed(&quiet, 0, buf, len, off, timeout_ms);
}
