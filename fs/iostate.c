/* This node's I/O state (fs/iostate.h): the reasons it is redirected, since
 * when, the last path error, the user's lease, and the prober that ends a
 * path failure once the path reads back.
 *
 * The prober reads the first block of the LUN with O_DIRECT (lun_probe):
 * nothing writes it but mkfs, and a read disturbs no one. After a failure it
 * waits PROBE_FIRST_MS, doubling to PROBE_MAX_MS while the path stays down;
 * after a success it reads again every PROBE_CONFIRM_MS, and returns to
 * direct after PROBE_SUCCESSES successes in a row. A path that fails again
 * within FLAP_WINDOW_S of its return starts at the backoff it had reached,
 * so a flapping path is tried less and less often. Requests already
 * redirected finish there; the next one goes direct. */
#include "fs/iostate.h"
#include "fs/log.h"
#include "journal/journal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROBE_FIRST_MS 250
#define PROBE_MAX_MS 5000
#define PROBE_CONFIRM_MS 200
#define PROBE_SUCCESSES 3
#define FLAP_WINDOW_S 60
#define TICK_MAX_MS 1000

static const char *const REASON_NAMES[] = { "path-failure", "user-request", "snapshot",
					    "maintenance" };

/* Everything under st_lock; reasons is also read without it (atomic) on the
 * data path's fast check. */
static pthread_mutex_t st_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t st_cond = PTHREAD_COND_INITIALIZER;
static _Atomic unsigned reasons;
static _Atomic unsigned generation;   /* +1 at every transition (iostate_generation) */
/* Set at start; read by every data transfer of a participant, so not under st_lock. */
static _Atomic unsigned path_timeout_ms;
static struct {
	struct timespec since;          /* realtime of the last transition */
	uint64_t lease_end_ms;          /* monotonic; 0: no user lease */
	struct timespec lease_end_rt;   /* the same, for display */
	char path_dev[256];
	int path_errno;                 /* 0: no path error seen */
	struct timespec path_at;
	uint64_t next_probe_ms;         /* monotonic */
	unsigned backoff_ms, successes;
	uint64_t direct_again_ms;       /* when the path last came back */
	/* the prober */
	const struct lun *lun;
	unsigned block;
	pthread_t thread;
	int running, stopping;
} st;

static uint64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void iso_time(const struct timespec *t, char *out, size_t len)
{
	struct tm tm;
	gmtime_r(&t->tv_sec, &tm);
	size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, len - n, ".%03ldZ", t->tv_nsec / 1000000);
}

/* The names of the reasons in set, each as fmt prints it, sep between. */
static size_t reason_list(unsigned set, const char *fmt, const char *sep, char *out, size_t len)
{
	size_t o = 0;
	const char *between = "";
	for (unsigned i = 0; i < 4 && o < len; i++)
		if (set & (1u << i)) {
			o += (size_t)snprintf(out + o, len - o, "%s", between);
			if (o < len)
				o += (size_t)snprintf(out + o, len - o, fmt, REASON_NAMES[i]);
			between = sep;
		}
	return o < len ? o : len;
}

/* "direct" or "redirected (path-failure, user-request)" */
static void describe(unsigned set, char *out, size_t len)
{
	if (!set) {
		snprintf(out, len, "direct");
		return;
	}
	size_t o = (size_t)snprintf(out, len, "redirected (");
	if (o < len)
		o += reason_list(set, "%s", ", ", out + o, len - o);
	if (o < len)
		snprintf(out + o, len - o, ")");
}

/* Under st_lock: the reasons become next; one log line if the state's
 * description changes. */
static void transition(unsigned next, const char *cause)
{
	unsigned prev = atomic_load(&reasons);
	if (prev == next)
		return;
	char from[96], to[96];
	describe(prev, from, sizeof(from));
	describe(next, to, sizeof(to));
	atomic_store(&reasons, next);
	atomic_fetch_add(&generation, 1);
	clock_gettime(CLOCK_REALTIME, &st.since);
	csvfs_log(LOG_WARN_L, "I/O state: %s -> %s: %s", from, to, cause);
	pthread_cond_broadcast(&st_cond);
}

int iostate_redirected(void)
{
	return atomic_load(&reasons) != 0;
}

int iostate_path_down(void)
{
	return (atomic_load(&reasons) & IO_REASON_PATH) != 0;
}

/* Every path failure lunio logs — metadata, journal, MMP, data; on the
 * coordinator too — puts the node in path-failure (it does not block:
 * st_lock is only ever held briefly). */
static void path_observer(const char *name, int err)
{
	iostate_path_failed(name, err);
}

void iostate_path_failed(const char *device, int err)
{
	if (err < 0)
		err = -err;
	pthread_mutex_lock(&st_lock);
	snprintf(st.path_dev, sizeof(st.path_dev), "%s", device ? device : "?");
	st.path_errno = err;
	clock_gettime(CLOCK_REALTIME, &st.path_at);
	unsigned cur = atomic_load(&reasons);
	if (!(cur & IO_REASON_PATH)) {
		uint64_t now = now_ms();
		int flapping = st.direct_again_ms && now - st.direct_again_ms < FLAP_WINDOW_S * 1000;
		if (!flapping || st.backoff_ms < PROBE_FIRST_MS)
			st.backoff_ms = PROBE_FIRST_MS;
		st.successes = 0;
		st.next_probe_ms = now + st.backoff_ms;
		char cause[400];
		snprintf(cause, sizeof(cause), "path failure on %s: %s%s", st.path_dev, strerror(err),
			 flapping ? " (again soon after it came back: probing more slowly)" : "");
		transition(cur | IO_REASON_PATH, cause);
	}
	pthread_mutex_unlock(&st_lock);
}

int iostate_user_request(int on, unsigned seconds, char *err, size_t len)
{
	if (on && (seconds == 0 || seconds > IOSTATE_LEASE_MAX_S)) {
		snprintf(err, len, "a redirect lasts 1 s to %d s (--for), not %u s",
			 IOSTATE_LEASE_MAX_S, seconds);
		return -EINVAL;
	}
	pthread_mutex_lock(&st_lock);
	unsigned cur = atomic_load(&reasons);
	if (on) {
		st.lease_end_ms = now_ms() + (uint64_t)seconds * 1000;
		clock_gettime(CLOCK_REALTIME, &st.lease_end_rt);
		st.lease_end_rt.tv_sec += seconds;
		char cause[128];
		snprintf(cause, sizeof(cause), "user request for %u s", seconds);
		if (cur & IO_REASON_USER)
			csvfs_log(LOG_INFO_L, "I/O state: user redirect renewed for %u s", seconds);
		transition(cur | IO_REASON_USER, cause);
	} else {
		st.lease_end_ms = 0;
		transition(cur & ~(unsigned)IO_REASON_USER, "user request ended (csvctl redirect off)");
	}
	pthread_cond_broadcast(&st_cond);
	pthread_mutex_unlock(&st_lock);
	return 0;
}

/* One probe read now on the caller's thread: 0, a negative errno, or 1 when
 * there is nothing to read it with; *name: the LUN's. */
static int probe_now(const char **name)
{
	pthread_mutex_lock(&st_lock);
	const struct lun *l = st.lun;
	unsigned block = st.block;
	pthread_mutex_unlock(&st_lock);
	char *buf = NULL;
	if (!l || posix_memalign((void **)&buf, 4096, block))
		return 1;
	*name = l->name;
	int rc = lun_probe(l, buf, block, 0, atomic_load(&path_timeout_ms));
	free(buf);
	return rc;
}

int iostate_path_confirm(void)
{
	const char *name = NULL;
	return probe_now(&name) != 0;   /* nothing to read it with: as the failure said */
}

int iostate_path_check(void)
{
	if (iostate_path_down())
		return 1;
	const char *name = NULL;
	int rc = probe_now(&name);
	if (rc < 0 && lun_error_is_path(rc))
		iostate_path_failed(name, rc);
	return rc < 0 && lun_error_is_path(rc);
}

/* ---- the prober ------------------------------------------------------------- */

/* Under st_lock: ends the user's lease once its deadline passed. */
static void expire_lease(uint64_t now)
{
	if (st.lease_end_ms && now >= st.lease_end_ms) {
		st.lease_end_ms = 0;
		transition(atomic_load(&reasons) & ~(unsigned)IO_REASON_USER,
			   "user request expired (its --for lease ended)");
	}
}

/* Under st_lock, which it drops around the read: one probe of the path. */
static void probe_path(char *buf)
{
	pthread_mutex_unlock(&st_lock);
	int rc = lun_probe(st.lun, buf, st.block, 0, atomic_load(&path_timeout_ms));
	pthread_mutex_lock(&st_lock);
	uint64_t now = now_ms();
	if (!(atomic_load(&reasons) & IO_REASON_PATH))
		return;
	if (rc) {
		st.successes = 0;
		st.path_errno = -rc;
		clock_gettime(CLOCK_REALTIME, &st.path_at);
		st.backoff_ms = st.backoff_ms * 2 > PROBE_MAX_MS ? PROBE_MAX_MS : st.backoff_ms * 2;
		st.next_probe_ms = now + st.backoff_ms;
		return;
	}
	/* Not direct while a transfer we gave up on may still reach the LUN:
	 * ours must not race it (it ends when the path answers or aborts it). */
	if (++st.successes < PROBE_SUCCESSES || lun_abandoned_inflight()) {
		st.next_probe_ms = now + PROBE_CONFIRM_MS;
		return;
	}
	st.direct_again_ms = now;
	char cause[320];
	snprintf(cause, sizeof(cause), "path %s works again (%u probe reads in a row)", st.path_dev,
		 st.successes);
	transition(atomic_load(&reasons) & ~(unsigned)IO_REASON_PATH, cause);
}

/* Under st_lock: how long to sleep until the next thing to do. */
static uint64_t next_wake_ms(uint64_t now)
{
	uint64_t wake = now + TICK_MAX_MS;
	if (st.lease_end_ms && st.lease_end_ms < wake)
		wake = st.lease_end_ms;
	if ((atomic_load(&reasons) & IO_REASON_PATH) && st.next_probe_ms < wake)
		wake = st.next_probe_ms;
	return wake > now ? wake - now : 0;
}

static void wait_ms(uint64_t ms)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += (time_t)(ms / 1000);
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&st_cond, &st_lock, &t);
}

static void *prober_main(void *arg)
{
	char *buf = arg;
	pthread_mutex_lock(&st_lock);
	while (!st.stopping) {
		uint64_t now = now_ms();
		expire_lease(now);
		if ((atomic_load(&reasons) & IO_REASON_PATH) && now >= st.next_probe_ms)
			probe_path(buf);
		if (!st.stopping)
			wait_ms(next_wake_ms(now_ms()));
	}
	pthread_mutex_unlock(&st_lock);
	free(buf);
	return NULL;
}

unsigned iostate_path_timeout_ms(void)
{
	return atomic_load(&path_timeout_ms);
}

int iostate_start(const struct lun *data_lun, unsigned block, unsigned timeout_ms)
{
	char *buf = NULL;
	if (posix_memalign((void **)&buf, 4096, block))
		return -ENOMEM;
	pthread_mutex_lock(&st_lock);
	st.lun = data_lun;
	st.block = block;
	atomic_store(&path_timeout_ms, timeout_ms);
	/* Every LUN transfer of this node, the coordinator's metadata and journal
	 * included: a hung path must not hold the role's threads forever. */
	lun_set_path_timeout(timeout_ms);
	st.stopping = 0;
	lun_set_path_observer(path_observer);
	clock_gettime(CLOCK_REALTIME, &st.since);
	int rc = st.running ? -EALREADY : pthread_create(&st.thread, NULL, prober_main, buf);
	if (rc == 0)
		st.running = 1;
	pthread_mutex_unlock(&st_lock);
	if (rc) {
		free(buf);
		return rc < 0 ? rc : -rc;
	}
	return 0;
}

void iostate_stop(void)
{
	pthread_mutex_lock(&st_lock);
	int running = st.running;
	st.stopping = 1;
	st.running = 0;
	pthread_cond_broadcast(&st_cond);
	pthread_mutex_unlock(&st_lock);
	if (running)
		pthread_join(st.thread, NULL);
	lun_set_path_observer(NULL);
}

/* ---- status ----------------------------------------------------------------- */

static size_t reasons_json(unsigned set, char *out, size_t len)
{
	size_t o = (size_t)snprintf(out, len, "[");
	if (o < len)
		o += reason_list(set, "\"%s\"", ",", out + o, len - o);
	if (o < len)
		o += (size_t)snprintf(out + o, len - o, "]");
	return o;
}

static uint64_t unix_ms(const struct timespec *t)
{
	return (uint64_t)t->tv_sec * 1000 + (uint64_t)t->tv_nsec / 1000000;
}

static void iso_time_ms(uint64_t ms, char *out, size_t len)
{
	struct timespec t = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L };
	iso_time(&t, out, len);
}

unsigned iostate_generation(void)
{
	return atomic_load(&generation);
}

void iostate_report(struct io_report *r)
{
	pthread_mutex_lock(&st_lock);
	expire_lease(now_ms());   /* never show a lease that has ended */
	*r = (struct io_report){ .reasons = atomic_load(&reasons), .since_ms = unix_ms(&st.since),
				 .lease_until_ms = st.lease_end_ms ? unix_ms(&st.lease_end_rt) : 0,
				 .path_errno = (uint32_t)st.path_errno,
				 .path_at_ms = st.path_errno ? unix_ms(&st.path_at) : 0 };
	snprintf(r->path_dev, sizeof(r->path_dev), "%s", st.path_errno ? st.path_dev : "");
	pthread_mutex_unlock(&st_lock);
}

void iostate_report_json(const struct io_report *r, char *out, size_t len, const char *override)
{
	char since[40], until[48] = "null", rs[96], perr[640] = "null";
	unsigned set = r->reasons & IO_REASONS_ALL;
	iso_time_ms(r->since_ms, since, sizeof(since));
	if (r->lease_until_ms) {
		char t[40];
		iso_time_ms(r->lease_until_ms, t, sizeof(t));
		snprintf(until, sizeof(until), "\"%s\"", t);
	}
	if (r->path_errno) {
		char at[40];
		iso_time_ms(r->path_at_ms, at, sizeof(at));
		/* the device is a path a node was given: no quote or control bytes in
		 * lab use, but drop what would break the JSON */
		char dev[IO_DEVICE_MAX];
		size_t d = 0;
		for (const char *p = r->path_dev; *p && d + 2 < sizeof(dev); p++)
			if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
				dev[d++] = *p;
		dev[d] = 0;
		snprintf(perr, sizeof(perr), "{\"device\":\"%s\",\"errno\":%u,\"cause\":\"%s\",\"at\":\"%s\"}",
			 dev, r->path_errno, strerror((int)r->path_errno), at);
	}
	reasons_json(set, rs, sizeof(rs));
	snprintf(out, len,
		 "\"io_state\":\"%s\",\"io_reasons\":%s,\"io_since\":\"%s\",\"io_redirect_until\":%s,"
		 "\"io_last_path_error\":%s",
		 override ? override : set ? "redirected" : "direct", rs, since, until, perr);
}

void iostate_json(char *out, size_t len, const char *override)
{
	struct io_report r;
	iostate_report(&r);
	iostate_report_json(&r, out, len, override);
}
