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
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statfs.h>
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

/* What a transfer is: the index into XFER_NAMES. */
enum xfer { XFER_READ, XFER_WRITE, XFER_FLUSH };
static const char *const XFER_NAMES[] = { "read", "write", "flush" };

static void observe_path(const struct lun *l, int err)
{
	lun_path_observer_fn observe = atomic_load(&path_observer);
	if (observe && lun_error_is_path(err))
		observe(l->name, -err);
}

/* len 0: a flush (it names no range). */
static int failed(const struct lun *l, const char *what, size_t len, uint64_t off, int err)
{
	if (!l->name)   /* a probe: the caller reports */
		return -err;
	if (len)
		lun_log(l, "LUN %s: %s of %zu bytes at byte %" PRIu64 " failed: %s", l->name, what,
			len, off, strerror(err));
	else
		lun_log(l, "LUN %s: %s failed: %s", l->name, what, strerror(err));
	observe_path(l, err);
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

/* LUN writes begun and ended (a given-up one when it really ends), and the
 * ended count a successful flush covers (lun_writes_mark). */
static atomic_ullong writes_begun, writes_ended, writes_flushed;

static void write_begins(void)
{
	atomic_fetch_add(&writes_begun, 1);
}

static void write_ends(void)
{
	atomic_fetch_add(&writes_ended, 1);
}

uint64_t lun_writes_mark(void)
{
	return atomic_load(&writes_ended);
}

void lun_writes_flushed(uint64_t mark)
{
	unsigned long long cur = atomic_load(&writes_flushed);
	while (cur < mark && !atomic_compare_exchange_weak(&writes_flushed, &cur, mark))
		;
}

int lun_writes_flushed_all(void)
{
	unsigned long long begun = atomic_load(&writes_begun);
	unsigned long long ended = atomic_load(&writes_ended);
	return begun == ended && ended == atomic_load(&writes_flushed);
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

/* One transfer or flush, its caller inside the gate: the power-cut hook and
 * the write counts for a write, LUN_SYNC's flush in the same pass (a drain
 * waits for it too). */
static int gated_io(const struct lun *l, enum xfer kind, void *buf, size_t len, uint64_t off,
		    unsigned flags)
{
	if (kind == XFER_FLUSH)
		return fdatasync(l->fd) == 0 ? 0 : failed(l, "flush", 0, 0, errno);
	if (kind == XFER_READ)
		return transfer(l, 0, buf, len, off);
	int rc = 0;
	write_begins();
	if ((flags & LUN_NO_FAULT) || !fault_drop_write())
		rc = transfer(l, 1, buf, len, off);
	write_ends();
	if (rc == 0 && (flags & LUN_SYNC) && fdatasync(l->fd) != 0)
		rc = failed(l, "flush after a write", len, off, errno);
	return rc;
}

/* The plain call on this thread: no timeout. */
static int plain_io(const struct lun *l, enum xfer kind, void *buf, size_t len, uint64_t off,
		    unsigned flags)
{
	if (gate_enter())
		return -EIO;
	int rc = gated_io(l, kind, buf, len, off, flags);
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

/* Transfers with a path timeout: a participant's data transfers (fs/data.c)
 * and the prober's reads (fs/iostate.c) always, and on a cluster node every
 * transfer and flush (lun_set_path_timeout) — a transfer its path does not
 * answer within it is a path failure, and the caller goes on without it (a
 * participant redirects, a coordinator gives its role up).
 *
 * A transfer from the thread's own registered buffer (lun_thread_buffer: a
 * FUSE worker's) is an io_uring request issued from that thread, on a ring
 * of its own, and the thread waits for its completion with the timeout: a
 * healthy path costs no hand-off and no copy. A transfer not answered in
 * time is given up on. Its ring, the request still in it, goes to the reaper
 * thread, which waits until the kernel ends it (the path answers, or aborts
 * it) and only then leaves the I/O gate and frees the ring; the caller gets
 * a new ring at its next transfer. The memory the request reads or writes
 * stays the kernel's until then, so the caller does not keep it: the pages of
 * its range in the thread buffer are replaced by fresh ones at the same
 * address (mmap MAP_FIXED, the bytes copied over). The ring's registered
 * buffer pins the old pages, so the request, even one a kernel worker starts
 * late, only ever touches pages nobody else sees.
 *
 * Every other transfer, and every flush, is handed to a worker thread with a
 * buffer of its own, copied in and out (so also wherever io_uring is not
 * available): a hand-off and a copy, but the workers never end, and a thread
 * cannot end while an io_uring request it submitted is in flight — a server
 * connection's or the journal's thread must be able to. */

/* Transfers given up on that the path has not ended yet, by either way. */
static pthread_mutex_t given_up_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned given_up_count;                 /* (given_up_lock) */

static void given_up_count_add(int delta)
{
	pthread_mutex_lock(&given_up_lock);
	given_up_count += (unsigned)delta;
	pthread_mutex_unlock(&given_up_lock);
}

/* A transfer not answered in time is a path failure like an error (the
 * observer hears of it), but for a probe, whose caller reports. */
static int timed_out(const struct lun *l, enum xfer kind, size_t len, uint64_t off,
		     unsigned timeout_ms)
{
	if (!l->name)
		return -ETIMEDOUT;
	if (kind == XFER_FLUSH)
		lun_log(l, "LUN %s: flush did not complete within %u ms (path timeout); given up, "
			"the path keeps it until it ends", l->name, timeout_ms);
	else
		lun_log(l, "LUN %s: %s of %zu bytes at byte %" PRIu64 " did not complete "
			"within %u ms (path timeout); given up, the path keeps it until it ends",
			l->name, XFER_NAMES[kind], len, off, timeout_ms);
	observe_path(l, ETIMEDOUT);
	return -ETIMEDOUT;
}

/* A transfer given up on may end after whoever named its LUN is gone (the
 * journal's name goes with the journal): it logs with a copy. */
#define LUN_NAME_COPY 256

static void lun_name_copy(struct lun *l, char copy[LUN_NAME_COPY])
{
	if (l->name) {
		snprintf(copy, LUN_NAME_COPY, "%s", l->name);
		l->name = copy;
	}
}

/* ---- ... through a worker thread (without io_uring) ------------------------ */

/* A transfer handed to a worker. Whoever finishes last with it frees it: the
 * caller when it got the result, the worker when the caller gave up. The
 * data moves through the worker's own buffer, copied from or to the
 * caller's under the job's lock, so a transfer the caller gave up on never
 * touches the caller's memory again; the worker's buffer lives as long as
 * the worker, so nothing is allocated per transfer. */
struct timed_job {
	struct lun lun;            /* its name is name: the caller's may be gone when it ends */
	char name[LUN_NAME_COPY];
	enum xfer kind;
	unsigned flags;            /* lun_pwrite's: LUN_NO_FAULT */
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

/* Runs j on wbuf, inside the gate its caller entered for it; returns whether
 * the caller gave up (the job is then ours). */
static int tj_run(struct timed_job *j, void *wbuf)
{
	pthread_mutex_lock(&j->mu);
	int gone = j->abandoned;
	if (!gone && wbuf && j->kind == XFER_WRITE)
		memcpy(wbuf, j->caller_buf, j->len);
	pthread_mutex_unlock(&j->mu);
	int rc = gone ? -ECANCELED
		 : !wbuf && j->kind != XFER_FLUSH ? -ENOMEM
		 : gated_io(&j->lun, j->kind, wbuf, j->len, j->off, j->flags & LUN_NO_FAULT);
	gate_leave();   /* the caller entered it for the job */
	pthread_mutex_lock(&j->mu);
	j->rc = rc;
	j->done = 1;
	gone = j->abandoned;
	if (!gone && rc == 0 && j->kind == XFER_READ)
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
			given_up_count_add(-1);
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

/* ms from now on clock (the worker's condition variable waits on
 * CLOCK_REALTIME; io_uring's own deadline is CLOCK_MONOTONIC). */
static struct timespec deadline_after(clockid_t clock, unsigned ms)
{
	struct timespec t;
	clock_gettime(clock, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

static int worker_transfer(const struct lun *l, enum xfer kind, void *buf, size_t len, uint64_t off,
			   unsigned timeout_ms, unsigned flags)
{
	struct timed_job *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	*j = (struct timed_job){ .lun = *l, .kind = kind, .flags = flags, .len = len, .off = off,
				 .caller_buf = buf };
	lun_name_copy(&j->lun, j->name);
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->done_cv, NULL);
	/* Here, not in the worker: a paused gate (quorum lost) is a wait for the
	 * cluster, which the path timeout does not count. */
	if (gate_enter()) {
		job_free(j);
		return -EIO;
	}
	pthread_mutex_lock(&tj_lock);
	int rc = tj_submit(j);
	pthread_mutex_unlock(&tj_lock);
	if (rc) {
		gate_leave();
		job_free(j);
		return failed(l, "hand-off of a transfer", len, off, -rc);
	}
	struct timespec until = deadline_after(CLOCK_REALTIME, timeout_ms);
	pthread_mutex_lock(&j->mu);
	while (!j->done)
		if (pthread_cond_timedwait(&j->done_cv, &j->mu, &until) == ETIMEDOUT && !j->done)
			break;
	int done = j->done;
	rc = j->rc;
	if (!done) {
		j->abandoned = 1;          /* the worker frees it; our buffer is ours again */
		j->caller_buf = NULL;
		given_up_count_add(1);
	}
	pthread_mutex_unlock(&j->mu);
	if (done) {
		job_free(j);
		return rc;
	}
	return timed_out(l, kind, len, off, timeout_ms);
}


/* ---- ... through io_uring, from the caller's thread ------------------------ */

#define RING_ENTRIES 4          /* a thread has one request in flight at a time */
#define REAPER_POLL_MS 100      /* the reaper looks at every ring this often */
#define REAPER_POLL_MAX 64      /* rings it sleeps on at once; others by the clock */

/* A transfer given up on: its ring holds it until the kernel ends it. */
struct given_up {
	struct io_uring *ring;
	struct lun lun;            /* for the log line when it ends (its name: name) */
	char name[LUN_NAME_COPY];
	enum xfer kind;
	size_t len;
	uint64_t off;
	int result;                /* the request's, once it ended */
	struct given_up *next;     /* (given_up_lock) */
};

/* What one thread keeps between its transfers (a thread-specific value). */
struct lun_thread {
	struct io_uring *ring;     /* NULL: none yet, or it went to the reaper */
	struct given_up *spare;    /* allocated with the ring: giving up cannot fail */
	char *buf;                 /* lun_thread_buffer(): mmap'd, page multiple */
	size_t buf_len;
	int buf_fixed;             /* buf is the ring's registered buffer 0 */
	int use_workers;           /* lun_thread_use_workers() */
};

static pthread_key_t thread_key;
static pthread_once_t thread_once = PTHREAD_ONCE_INIT;
static atomic_int uring_unusable;   /* an errno once io_uring proved unusable here */
static struct given_up *given_up_head;          /* (given_up_lock) */
static pthread_cond_t given_up_added = PTHREAD_COND_INITIALIZER;
static int reaper_started;                      /* (given_up_lock) */

static size_t page_round(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	return (n + page - 1) / page * page;
}

static void *pages_alloc(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void ring_free(struct io_uring *ring)
{
	io_uring_queue_exit(ring);
	free(ring);
}

static void thread_end(void *arg)
{
	struct lun_thread *t = arg;
	if (t->ring)
		ring_free(t->ring);
	free(t->spare);
	if (t->buf)
		munmap(t->buf, t->buf_len);
	free(t);
}

static void thread_key_make(void)
{
	pthread_key_create(&thread_key, thread_end);
}

static struct lun_thread *this_thread(void)
{
	pthread_once(&thread_once, thread_key_make);
	struct lun_thread *t = pthread_getspecific(thread_key);
	if (!t && (t = calloc(1, sizeof(*t))) && pthread_setspecific(thread_key, t)) {
		free(t);
		t = NULL;
	}
	return t;
}

static void register_thread_buffer(struct lun_thread *t)
{
	struct iovec iov = { .iov_base = t->buf, .iov_len = t->buf_len };
	t->buf_fixed = io_uring_register_buffers(t->ring, &iov, 1) == 0;
}

void *lun_thread_buffer(size_t len)
{
	struct lun_thread *t = this_thread();
	if (!t)
		return NULL;
	if (t->buf && len <= t->buf_len)
		return t->buf;
	size_t want = page_round(len ? len : 1);
	char *b = pages_alloc(want);
	if (!b)
		return NULL;
	if (t->ring && t->buf_fixed)
		io_uring_unregister_buffers(t->ring);
	t->buf_fixed = 0;
	if (t->buf)
		munmap(t->buf, t->buf_len);
	t->buf = b;
	t->buf_len = want;
	if (t->ring)
		register_thread_buffer(t);
	return b;
}

/* ---- the reaper: ends the given-up transfers as the kernel ends them */

static void given_up_end(struct given_up *g)
{
	const char *result = g->result < 0 ? strerror(-g->result) : "done";
	if (g->lun.name && g->kind == XFER_FLUSH)
		lun_log(&g->lun, "LUN %s: the flush given up after the path timeout has ended: %s",
			g->lun.name, result);
	else if (g->lun.name)
		lun_log(&g->lun, "LUN %s: the %s of %zu bytes at byte %" PRIu64 " given up after the "
			"path timeout has ended: %s", g->lun.name, XFER_NAMES[g->kind], g->len, g->off,
			result);
	gate_leave();
	ring_free(g->ring);
	free(g);
}

/* Under given_up_lock: takes out every given-up transfer that has ended. */
static struct given_up *given_up_take_ended(void)
{
	struct given_up *ended_list = NULL;
	for (struct given_up **pp = &given_up_head; *pp;) {
		struct given_up *g = *pp;
		struct io_uring_cqe *cqe;
		if (io_uring_peek_cqe(g->ring, &cqe) != 0) {
			pp = &g->next;
			continue;
		}
		g->result = cqe->res;
		io_uring_cqe_seen(g->ring, cqe);
		*pp = g->next;
		given_up_count--;
		if (g->kind == XFER_WRITE)
			write_ends();
		g->next = ended_list;
		ended_list = g;
	}
	return ended_list;
}

static void *reaper_main(void *arg)
{
	(void)arg;
	struct pollfd fds[REAPER_POLL_MAX];
	pthread_mutex_lock(&given_up_lock);
	for (;;) {
		while (!given_up_head)
			pthread_cond_wait(&given_up_added, &given_up_lock);
		nfds_t n = 0;
		for (struct given_up *g = given_up_head; g && n < REAPER_POLL_MAX; g = g->next)
			fds[n++] = (struct pollfd){ .fd = g->ring->ring_fd, .events = POLLIN };
		pthread_mutex_unlock(&given_up_lock);
		poll(fds, n, REAPER_POLL_MS);
		pthread_mutex_lock(&given_up_lock);
		struct given_up *ended_list = given_up_take_ended();
		pthread_mutex_unlock(&given_up_lock);
		while (ended_list) {
			struct given_up *g = ended_list;
			ended_list = g->next;
			given_up_end(g);
		}
		pthread_mutex_lock(&given_up_lock);
	}
	return NULL;
}

/* 0, or a positive errno: the reaper runs (started once, with the first ring). */
static int reaper_start(void)
{
	pthread_mutex_lock(&given_up_lock);
	int rc = 0;
	if (!reaper_started) {
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		rc = pthread_create(&t, &a, reaper_main, NULL);
		pthread_attr_destroy(&a);
		reaper_started = rc == 0;
	}
	pthread_mutex_unlock(&given_up_lock);
	return rc;
}

/* ---- one thread's ring */

/* CSVFS_NO_IO_URING=1 in the environment: worker threads, as where io_uring
 * is unavailable (a kernel whose io_uring misbehaves; the unit tests of the
 * worker path). */
static pthread_once_t uring_env_once = PTHREAD_ONCE_INIT;

static void uring_env(void)
{
	const char *s = getenv("CSVFS_NO_IO_URING");
	if (s && *s && strcmp(s, "0") != 0) {
		atomic_store(&uring_unusable, ENOSYS);
		fprintf(stderr, "csvfs: io_uring off (CSVFS_NO_IO_URING): transfers with a path "
			"timeout go through worker threads\n");
	}
}

/* The thread's ring, made on first use; NULL: io_uring cannot be used (the
 * caller hands the transfer to a worker instead). */
static struct io_uring *ring_of(struct lun_thread *t)
{
	if (t->ring)
		return t->ring;
	pthread_once(&uring_env_once, uring_env);
	if (atomic_load(&uring_unusable))
		return NULL;
	struct io_uring *ring = calloc(1, sizeof(*ring));
	if (!t->spare)
		t->spare = calloc(1, sizeof(*t->spare));
	if (!ring || !t->spare) {
		free(ring);
		return NULL;
	}
	int rc = io_uring_queue_init(RING_ENTRIES, ring, 0);
	if (rc == 0 && !(ring->features & IORING_FEAT_EXT_ARG)) {
		io_uring_queue_exit(ring);
		rc = -EOPNOTSUPP;           /* a timed wait would need a timeout request */
	}
	if (rc == 0 && (rc = -reaper_start()) != 0)
		io_uring_queue_exit(ring);
	if (rc) {
		free(ring);
		/* Not a passing shortage: this kernel or sandbox does not let us. */
		if (rc != -ENOMEM && rc != -EAGAIN && atomic_exchange(&uring_unusable, -rc) == 0)
			fprintf(stderr, "csvfs: io_uring unusable (%s): transfers with a path timeout "
				"go through worker threads\n", strerror(-rc));
		return NULL;
	}
	t->ring = ring;
	if (t->buf)
		register_thread_buffer(t);
	return ring;
}

/* The caller's pages [buf, buf+len) go with a given-up request: fresh pages
 * at the same address, with the same bytes, take their place. */
static void pages_replace(const struct lun *l, char *buf, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	char *start = (char *)((uintptr_t)buf / page * page);
	size_t span = page_round((size_t)(buf + len - start));
	char *copy = malloc(span);
	if (copy)
		memcpy(copy, start, span);
	if (copy && mmap(start, span, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
		memcpy(start, copy, span);
	} else {
		lun_log(l, "LUN %s: cannot replace the pages of a transfer given up on (%s); "
			"a late end of it may still write them", l->name ? l->name : "(probe)",
			strerror(copy ? errno : ENOMEM));
	}
	free(copy);
}

/* The request in t's ring is given up on: the ring goes to the reaper. The
 * caller is inside the gate; the reaper leaves it for the request. */
static void give_up(struct lun_thread *t, const struct lun *l, enum xfer kind, char *io,
		    size_t len, uint64_t off)
{
	if (len)
		pages_replace(l, io, len);
	struct given_up *g = t->spare;
	*g = (struct given_up){ .ring = t->ring, .lun = *l, .kind = kind, .len = len, .off = off };
	lun_name_copy(&g->lun, g->name);
	t->ring = NULL;
	t->spare = NULL;
	t->buf_fixed = 0;
	pthread_mutex_lock(&given_up_lock);
	g->next = given_up_head;
	given_up_head = g;
	given_up_count++;
	pthread_cond_signal(&given_up_added);
	pthread_mutex_unlock(&given_up_lock);
}

/* 0 with the request's result in *res; -ETIME when the deadline passed
 * first; another negative errno if the wait itself failed. */
static int wait_completion(struct io_uring *ring, const struct timespec *deadline, int *res)
{
	for (;;) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long long left = (long long)(deadline->tv_sec - now.tv_sec) * 1000000000LL +
				 (deadline->tv_nsec - now.tv_nsec);
		if (left < 0)
			left = 0;
		struct __kernel_timespec ts = { .tv_sec = left / 1000000000LL,
						.tv_nsec = left % 1000000000LL };
		struct io_uring_cqe *cqe;
		int rc = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
		if (rc == 0) {
			*res = cqe->res;
			io_uring_cqe_seen(ring, cqe);
			return 0;
		}
		if (rc == -ETIME || left == 0)
			return -ETIME;
		if (rc != -EINTR && rc != -EAGAIN)
			return rc;
	}
}

static void prep(struct io_uring_sqe *sqe, enum xfer kind, int fd, char *at, size_t n,
		 uint64_t off)
{
	if (kind == XFER_WRITE)
		io_uring_prep_write_fixed(sqe, fd, at, (unsigned)n, off, 0);
	else
		io_uring_prep_read_fixed(sqe, fd, at, (unsigned)n, off, 0);
}

/* Whether a request on fd must go to io_uring's workers at once rather than
 * be tried first from the submitting thread: on FUSE (the lab's per-node
 * path) that try ignores "do not wait" — a hung write holds the file's
 * inode lock, and the next write submitted waits for it inside
 * io_uring_enter, where no timeout reaches it. A block device's or a local
 * filesystem's try does not wait (it is queued, or punted), so they keep
 * the cheaper direct issue. */
#define FUSE_MAGIC 0x65735546
static int issue_async(int fd)
{
	struct statfs sf;
	return fstatfs(fd, &sf) == 0 && sf.f_type == FUSE_MAGIC;
}

/* The whole range of the thread's registered buffer through its ring, each
 * piece within what is left of the timeout. *gave_up: the ring went to the
 * reaper with a request in it. */
static int ring_transfer(struct lun_thread *t, const struct lun *l, enum xfer kind, char *io,
			 size_t len, uint64_t off, unsigned timeout_ms, int *gave_up)
{
	int async = issue_async(l->fd);
	struct timespec deadline = deadline_after(CLOCK_MONOTONIC, timeout_ms);
	size_t done = 0;
	*gave_up = 0;
	while (done < len) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(t->ring);  /* the ring is empty */
		prep(sqe, kind, l->fd, io + done, len - done, off + done);
		if (async)
			io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
		int res, rc = io_uring_submit(t->ring);
		if (rc != 1) {   /* nothing in flight; the ring is not to be trusted */
			ring_free(t->ring);
			t->ring = NULL;
			t->buf_fixed = 0;
			return failed(l, "submission of a transfer", len, off, rc < 0 ? -rc : EAGAIN);
		}
		rc = wait_completion(t->ring, &deadline, &res);
		if (rc) {
			give_up(t, l, kind, io, len, off);
			*gave_up = 1;
			return rc == -ETIME ? timed_out(l, kind, len, off, timeout_ms)
					    : failed(l, "wait for a transfer", len, off, -rc);
		}
		if (res == -EINTR || res == -EAGAIN)
			continue;
		if (res < 0)
			return failed(l, XFER_NAMES[kind], len, off, -res);
		if (res == 0)
			return ended(l, kind == XFER_WRITE, len, off, done);
		done += (size_t)res;
	}
	return 0;
}

/* 1 when the transfer was done here (*rc its result), 0 when it is not for
 * io_uring: a flush, a buffer not the thread's registered one, a thread that
 * asked for the workers, or no io_uring. Like lun_pread / lun_pwrite: the
 * gate, the fault hook (unless flags has LUN_NO_FAULT).
 *
 * Why only the thread's own buffer: a thread cannot end while a request it
 * submitted is in flight (the kernel waits for it at the thread's exit), so
 * only threads that live as long as the daemon — the FUSE workers, with their
 * transfer buffers — may leave requests to a hung path. Everything else goes
 * to the worker threads, which never end. */
static int uring_transfer(const struct lun *l, enum xfer kind, char *buf, size_t len,
			  uint64_t off, unsigned timeout_ms, unsigned flags, int *rc)
{
	if (kind == XFER_FLUSH)
		return 0;
	struct lun_thread *t = this_thread();
	if (!t || t->use_workers || !t->buf || buf < t->buf || buf + len > t->buf + t->buf_len ||
	    !ring_of(t) || !t->buf_fixed)
		return 0;
	int write = kind == XFER_WRITE, gave_up = 0;
	if (gate_enter()) {
		*rc = -EIO;
	} else if (write && !(flags & LUN_NO_FAULT) && fault_drop_write()) {
		*rc = 0;
		gate_leave();
	} else {
		if (write)
			write_begins();
		*rc = ring_transfer(t, l, kind, buf, len, off, timeout_ms, &gave_up);
		if (write && !gave_up)
			write_ends();   /* a given-up one ends when the reaper sees it end */
		if (!gave_up)
			gate_leave();
	}
	return 1;
}

static int timed(const struct lun *l, enum xfer kind, void *buf, size_t len, uint64_t off,
		 unsigned timeout_ms, unsigned flags)
{
	int rc;
	if (uring_transfer(l, kind, buf, len, off, timeout_ms, flags, &rc))
		return rc;
	return worker_transfer(l, kind, buf, len, off, timeout_ms, flags);
}

void lun_thread_use_workers(void)
{
	struct lun_thread *t = this_thread();
	if (t)
		t->use_workers = 1;
}

/* ---- the interface ------------------------------------------------------- */

/* Every transfer's path timeout (lun_set_path_timeout); 0: none. */
static _Atomic unsigned default_timeout_ms;

void lun_set_path_timeout(unsigned timeout_ms)
{
	atomic_store(&default_timeout_ms, timeout_ms);
}

int lun_pread(const struct lun *l, void *buf, size_t len, uint64_t off)
{
	unsigned ms = atomic_load(&default_timeout_ms);
	return ms ? timed(l, XFER_READ, buf, len, off, ms, 0) : plain_io(l, XFER_READ, buf, len, off, 0);
}

/* With a path timeout, the flush of LUN_SYNC is a gate pass of its own:
 * nothing drains between the two (journal_gate_drain is for tests). */
int lun_pwrite(const struct lun *l, const void *buf, size_t len, uint64_t off, unsigned flags)
{
	unsigned ms = atomic_load(&default_timeout_ms);
	if (!ms)
		return plain_io(l, XFER_WRITE, (void *)buf, len, off, flags);
	int rc = timed(l, XFER_WRITE, (void *)buf, len, off, ms, flags);
	if (rc == 0 && (flags & LUN_SYNC))
		rc = timed(l, XFER_FLUSH, NULL, 0, off, ms, flags);
	return rc;
}

int lun_fdatasync(const struct lun *l)
{
	unsigned ms = atomic_load(&default_timeout_ms);
	if (ms)
		return timed(l, XFER_FLUSH, NULL, 0, 0, ms, 0);
	return fdatasync(l->fd) == 0 ? 0 : failed(l, "flush", 0, 0, errno);
}

int lun_transfer_timed(const struct lun *l, int write, void *buf, size_t len, uint64_t off,
		       unsigned timeout_ms)
{
	if (!timeout_ms)
		return write ? lun_pwrite(l, buf, len, off, 0) : lun_pread(l, buf, len, off);
	return timed(l, write ? XFER_WRITE : XFER_READ, buf, len, off, timeout_ms, 0);
}

unsigned lun_abandoned_inflight(void)
{
	pthread_mutex_lock(&given_up_lock);
	unsigned n = given_up_count;
	pthread_mutex_unlock(&given_up_lock);
	return n;
}

int lun_probe(const struct lun *l, void *buf, size_t len, uint64_t off, unsigned timeout_ms)
{
	struct lun quiet = *l;
	quiet.name = NULL;   /* failed(), ended() and the timeout stay silent */
	return lun_transfer_timed(&quiet, 0, buf, len, off, timeout_ms);
}
