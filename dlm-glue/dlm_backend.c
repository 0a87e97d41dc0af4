/* dlm-glue "dlm" backend: the kernel DLM through libdlm (design.md §5).
 *
 * One DLM lockspace per volume ("csvfs-<volume GUID>"), created (or opened
 * when we lack the privilege to create) with libdlm. Requests go to the
 * kernel through dlm_ls_lock / dlm_ls_unlock. Completions and blocking
 * callbacks are read from the lockspace device by our own dispatch thread
 * instead of dlm_dispatch(): libdlm's dispatcher calls the bast with the
 * ast argument only and throws away the blocking mode the kernel reports
 * (struct dlm_lock_result.bast_mode), and dg_bast_fn must carry it. Reading
 * the records ourselves also lets us update each lock's state under our
 * mutex instead of having libdlm write into the lksb behind our back.
 * The record format is the kernel's device interface version 6
 * (linux/dlm_device.h), checked at connect.
 *
 * Membership and quorum: libdlm exposes neither. dlm_controld publishes the
 * lockspace's members in configfs (spaces/<ls>/nodes/<nodeid>) and our node
 * id in comms/<nodeid>/local; quorum comes from corosync's quorum service.
 * Both are polled once a second. Node-down, fencing and recovery are handled
 * inside dlm_controld and the kernel, which tell userspace nothing: those
 * callbacks never fire with this backend (docs/locking.md §10).
 */
#ifdef CSVFS_HAVE_LIBDLM

#include "dlm-glue/dlm_backend.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <corosync/corotypes.h>
#include <corosync/quorum.h>

/* linux/dlm.h and libdlm.h both define struct dlm_lksb; libdlm.h leaves its
 * copy out under BUILDING_LIBDLM, which is how libdlm itself combines them
 * with the device interface header we need for the result records. */
#include <linux/dlm.h>
#include <linux/dlm_device.h>
#define BUILDING_LIBDLM 1
#include <libdlm.h>

#define LS_PREFIX        "csvfs-"
#define CONFIGFS_DEFAULT "/sys/kernel/config/dlm/cluster"
#define POLL_MS          1000
#define MAX_MEMBERS      64
#define LOCK_BUCKETS     1024
#define RESULT_BUF       (sizeof(struct dlm_lock_result) + DLM_USER_LVB_LEN)

#define LOG(ls, lvl, ...) dg_logf(&(ls)->cfg, (lvl), __VA_ARGS__)

struct dlm_ls;

struct dlm_lk {
	struct dg_lock base;          /* first: the public handle casts to us */
	struct dlm_ls *ls;
	struct dlm_lk *hnext;         /* in ls->buckets: every live handle */
	struct dlm_lksb lksb;         /* sb_lvbptr -> lvb */
	char lvb[DG_LVB_LEN];
	int granted;                  /* DG mode held, -1 while none */
	int requested;                /* mode of the request in flight, -1 none */
	bool req_valblk;              /* the request in flight reads the LVB */
	bool valblk;                  /* requested with DG_VALBLK: sticky */
	bool pending;                 /* a lock/convert is in flight */
	bool cancel_sent;
	bool unlock_after_convert;    /* writing the LVB by a convert to NL first */
};

struct dlm_ls {
	struct dg_lockspace pub;      /* first */
	struct dg_config cfg;
	char *lockspace_name;         /* the volume GUID */
	char dlm_name[DLM_LOCKSPACE_LEN + 1];
	char configfs[256];
	dlm_lshandle_t h;
	bool created;                 /* we created it: release, else close */
	int fd;                       /* the lockspace device */
	int wake_fd;
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t mu;
	bool stop;
	/* Every live handle, keyed by address: a record from the device is
	 * applied only to a handle that is still here, so a stray one can
	 * never touch freed memory. */
	struct dlm_lk *buckets[LOCK_BUCKETS];
	int64_t last_poll_ms;
	struct dg_cbq cbq;            /* callbacks for the dispatch thread */
	/* membership / quorum (polled) */
	uint32_t self_nodeid;
	uint32_t members[MAX_MEMBERS];
	size_t nmembers;
	quorum_handle_t qh;
	bool q_have;
	int quorate;
};

static struct dlm_ls *impl(struct dg_lockspace *p)
{
	return (struct dlm_ls *)p;
}

/* libdlm hands these to the kernel, which echoes the one that applies in
 * every result record: that is how we tell a completion from a blocking
 * callback. They are never called. */
static void ast_marker(void *arg)
{
	(void)arg;
}

static void bast_marker(void *arg)
{
	(void)arg;
}

static void wake(struct dlm_ls *ls)
{
	uint64_t one = 1;
	ssize_t n = write(ls->wake_fd, &one, sizeof(one));
	(void)n;
}

/* ---- mapping ----------------------------------------------------------------------- */

static uint32_t dlm_mode_of(enum dg_mode m)
{
	switch (m) {
	case DG_NL: return LKM_NLMODE;
	case DG_CR: return LKM_CRMODE;
	case DG_CW: return LKM_CWMODE;
	case DG_PR: return LKM_PRMODE;
	case DG_PW: return LKM_PWMODE;
	case DG_EX: return LKM_EXMODE;
	}
	return LKM_NLMODE;
}

/* The kernel's bast mode; anything out of range (never seen) is treated as
 * EX, the one answer that is always safe: it makes the holder go to NL. */
static enum dg_mode dg_mode_of(int m)
{
	switch (m) {
	case LKM_NLMODE: return DG_NL;
	case LKM_CRMODE: return DG_CR;
	case LKM_CWMODE: return DG_CW;
	case LKM_PRMODE: return DG_PR;
	case LKM_PWMODE: return DG_PW;
	default: return DG_EX;
	}
}

static uint32_t dlm_flags_of(unsigned flags)
{
	return (flags & DG_NOQUEUE ? LKF_NOQUEUE : 0) | (flags & DG_CONVERT ? LKF_CONVERT : 0) |
	       (flags & DG_VALBLK ? LKF_VALBLK : 0);
}

/* ---- lock table ---------------------------------------------------------------------- */

/* The handle is freed on the dispatch thread after every callback queued
 * before it, so an ast never runs on freed memory. */
static void queue_free(struct dlm_ls *ls, struct dlm_lk *lk)
{
	if (lk->base.freeing)
		return;
	if (!dg_cb_free(&ls->cbq, &lk->base))
		lk->base.freeing = false; /* leaked to disconnect, which frees it */
}

static size_t bucket_of(const void *p)
{
	return (size_t)(((uintptr_t)p * 0x9e3779b97f4a7c15ull) >> 54) & (LOCK_BUCKETS - 1);
}

static void lock_link(struct dlm_ls *ls, struct dlm_lk *lk)
{
	size_t b = bucket_of(lk);
	lk->hnext = ls->buckets[b];
	ls->buckets[b] = lk;
}

static bool lock_live(struct dlm_ls *ls, const void *p)
{
	for (struct dlm_lk *l = ls->buckets[bucket_of(p)]; l; l = l->hnext)
		if (l == p)
			return true;
	return false;
}

static void lock_unlink(struct dlm_ls *ls, struct dlm_lk *lk)
{
	struct dlm_lk **pp = &ls->buckets[bucket_of(lk)];
	while (*pp && *pp != lk)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = lk->hnext;
	lk->hnext = NULL;
}

static void forget_lock(void *owner, struct dg_lock *lk)
{
	lock_unlink(owner, (struct dlm_lk *)lk);
}

/* ---- requests (called with ls->mu held) --------------------------------------------- */

static int submit_lock(struct dlm_ls *ls, struct dlm_lk *lk, const char *name, int mode, unsigned flags)
{
	lk->lksb.sb_lvbptr = lk->lvb;
	lk->lksb.sb_status = 0;
	int rc = dlm_ls_lock(ls->h, dlm_mode_of((enum dg_mode)mode), &lk->lksb, dlm_flags_of(flags), name,
			     name ? (unsigned)strlen(name) : 0, 0, ast_marker, lk, bast_marker, NULL);
	if (rc != 0)
		return errno ? -errno : -EIO;
	lk->pending = true;
	lk->requested = mode;
	lk->req_valblk = (flags & DG_VALBLK) != 0;
	lk->cancel_sent = false;
	return 0;
}

static int submit_unlock(struct dlm_ls *ls, struct dlm_lk *lk, uint32_t dlm_flags)
{
	int rc = dlm_ls_unlock(ls->h, lk->lksb.sb_lkid, dlm_flags, &lk->lksb, lk);
	return rc != 0 ? (errno ? -errno : -EIO) : 0;
}

/* A completion record for lk: status is the kernel's, already positive
 * (0, EAGAIN, ECANCEL, EUNLOCK, EDEADLK, or an errno). */
static void on_completion(struct dlm_ls *ls, struct dlm_lk *lk, int status, int sb_flags)
{
	if (status == EUNLOCK) {
		/* the lock is gone; after dg_unlock nothing more is reported */
		lk->pending = false;
		lk->granted = -1;
		queue_free(ls, lk);
		return;
	}
	bool is_new = lk->granted < 0;
	bool was_pending = lk->pending;
	lk->pending = false;
	lk->cancel_sent = false;
	if (!was_pending && status != 0)
		LOG(ls, 4, "lockspace %s: unexpected completion %d for a lock with no request", ls->lockspace_name,
		    status);
	if (status == 0) {
		lk->granted = lk->requested >= 0 ? lk->requested : lk->granted;
		lk->requested = -1;
		if (lk->unlock_after_convert) {
			/* the convert to NL wrote the value block; now release */
			lk->unlock_after_convert = false;
			int rc = submit_unlock(ls, lk, 0);
			if (rc < 0) {
				LOG(ls, 3, "lockspace %s: unlock after writing the value block failed: %s",
				    ls->lockspace_name, strerror(-rc));
				queue_free(ls, lk);
			}
			return;
		}
		/* VALNOTVALID: a holder of PW/EX died without writing it back;
		 * report it as no value, as the cpg backend does for fenced
		 * writers. */
		const uint8_t *lvb = lk->req_valblk && !(sb_flags & DLM_SBF_VALNOTVALID) ? (uint8_t *)lk->lvb : NULL;
		dg_cb_ast(&ls->cbq, &lk->base, 0, lk->granted, lvb);
		return;
	}
	lk->requested = -1;
	int err;
	switch (status) {
	case EAGAIN: err = -EAGAIN; break;
	case ECANCEL: err = -ECANCELED; break;
	default: err = -status; break;
	}
	if (lk->unlock_after_convert) {
		/* the convert to NL failed (it cannot, being a down-convert;
		 * defensive): release without writing the value block */
		lk->unlock_after_convert = false;
		LOG(ls, 4, "lockspace %s: convert to NL before unlock failed (%d); unlocking without the value block",
		    ls->lockspace_name, status);
		if (submit_unlock(ls, lk, 0) < 0)
			queue_free(ls, lk);
		return;
	}
	if (is_new) {
		/* a new request that failed holds nothing: the handle goes
		 * once its ast has run */
		dg_cb_ast(&ls->cbq, &lk->base, err, DG_NL, NULL);
		queue_free(ls, lk);
	} else {
		dg_cb_ast(&ls->cbq, &lk->base, err, lk->granted, NULL);
	}
}

static void on_record(struct dlm_ls *ls, const char *buf, size_t n)
{
	struct dlm_lock_result res;
	if (n < sizeof(res)) {
		LOG(ls, 3, "lockspace %s: short record from the DLM device (%zu bytes)", ls->lockspace_name, n);
		return;
	}
	memcpy(&res, buf, sizeof(res));
	if (res.version[0] != DLM_DEVICE_VERSION_MAJOR) {
		LOG(ls, 3, "lockspace %s: DLM record of device interface %u ignored", ls->lockspace_name,
		    res.version[0]);
		return;
	}
	if (!res.user_astparam || !lock_live(ls, res.user_astparam)) {
		LOG(ls, 4, "lockspace %s: DLM record for an unknown lock ignored", ls->lockspace_name);
		return;
	}
	struct dlm_lk *lk = res.user_astparam;
	if (res.user_astaddr == (void *)bast_marker) {
		dg_cb_bast(&ls->cbq, &lk->base, dg_mode_of(res.bast_mode));
		return;
	}
	lk->lksb.sb_lkid = res.lksb.sb_lkid;
	lk->lksb.sb_flags = res.lksb.sb_flags;
	lk->lksb.sb_status = -res.lksb.sb_status; /* the kernel's are negative */
	if (res.lvb_offset && (size_t)res.lvb_offset + DG_LVB_LEN <= n)
		memcpy(lk->lvb, buf + res.lvb_offset, DG_LVB_LEN);
	on_completion(ls, lk, lk->lksb.sb_status, res.lksb.sb_flags);
}

/* ---- membership / quorum ------------------------------------------------------------- */

static bool read_u32_file(const char *path, uint32_t *out)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	unsigned long v = 0;
	int ok = fscanf(f, "%lu", &v) == 1;
	fclose(f);
	if (ok && v <= UINT32_MAX)
		*out = (uint32_t)v;
	return ok && v <= UINT32_MAX;
}

static bool parse_nodeid(const char *s, uint32_t *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v == 0 || v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Reads configfs (no lock held: plain file I/O) into the caller's buffers. */
static void read_membership(const struct dlm_ls *ls, uint32_t *self, uint32_t *members, size_t *n)
{
	char path[sizeof(((struct dlm_ls *)0)->configfs) + DLM_LOCKSPACE_LEN + 64];
	*self = 0;
	*n = 0;
	snprintf(path, sizeof(path), "%s/comms", ls->configfs);
	DIR *d = opendir(path);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d))) {
			uint32_t id, local = 0;
			if (!parse_nodeid(de->d_name, &id))
				continue;
			snprintf(path, sizeof(path), "%s/comms/%u/local", ls->configfs, (unsigned)id);
			if (read_u32_file(path, &local) && local == 1)
				*self = id;
		}
		closedir(d);
	}
	snprintf(path, sizeof(path), "%s/spaces/%s/nodes", ls->configfs, ls->dlm_name);
	d = opendir(path);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)) && *n < MAX_MEMBERS) {
			uint32_t id;
			if (parse_nodeid(de->d_name, &id))
				members[(*n)++] = id;
		}
		closedir(d);
	}
	qsort(members, *n, sizeof(*members), cmp_u32);
}

static void poll_membership(struct dlm_ls *ls, bool notify)
{
	uint32_t self, members[MAX_MEMBERS];
	size_t n;
	read_membership(ls, &self, members, &n);
	/* qh is set once at connect and finalized after this thread ends,
	 * so the IPC round trip needs no lock */
	int quorate = 0;
	if (ls->q_have) {
		int q = 0;
		if (quorum_getquorate(ls->qh, &q) == CS_OK)
			quorate = q != 0;
	}
	pthread_mutex_lock(&ls->mu);
	bool changed = n != ls->nmembers || memcmp(members, ls->members, n * sizeof(*members)) != 0;
	bool qchanged = quorate != ls->quorate;
	ls->self_nodeid = self;
	memcpy(ls->members, members, n * sizeof(*members));
	ls->nmembers = n;
	ls->quorate = quorate;
	if (notify && changed) {
		LOG(ls, 5, "membership: lockspace %s has %zu member(s)", ls->dlm_name, n);
		dg_cb_event(&ls->cbq, DG_CB_MEMBERSHIP, 0, 0);
	}
	if (notify && qchanged) {
		LOG(ls, 5, "quorum: %s", quorate ? "regained" : "lost");
		dg_cb_event(&ls->cbq, DG_CB_QUORUM, 0, quorate);
	}
	pthread_mutex_unlock(&ls->mu);
}

/* ---- dispatch thread ------------------------------------------------------------------ */

static void drain_device(struct dlm_ls *ls)
{
	char buf[RESULT_BUF];
	for (int i = 0; i < 4096; i++) {
		ssize_t n = read(ls->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n < 0 && errno != EAGAIN)
				LOG(ls, 3, "lockspace %s: reading the DLM device: %s", ls->lockspace_name,
				    strerror(errno));
			return;
		}
		pthread_mutex_lock(&ls->mu);
		on_record(ls, buf, (size_t)n);
		pthread_mutex_unlock(&ls->mu);
	}
}

static void *dispatch_main(void *arg)
{
	struct dlm_ls *ls = arg;
	for (;;) {
		pthread_mutex_lock(&ls->mu);
		bool stop = ls->stop;
		pthread_mutex_unlock(&ls->mu);
		if (stop)
			break;
		struct pollfd p[2] = { { .fd = ls->fd, .events = POLLIN }, { .fd = ls->wake_fd, .events = POLLIN } };
		int r = poll(p, 2, POLL_MS);
		if (r < 0 && errno != EINTR) {
			LOG(ls, 3, "lockspace %s: poll: %s", ls->lockspace_name, strerror(errno));
			break;
		}
		if (r > 0 && (p[1].revents & POLLIN)) {
			uint64_t v;
			ssize_t n = read(ls->wake_fd, &v, sizeof(v));
			(void)n;
		}
		if (r > 0 && (p[0].revents & (POLLIN | POLLERR | POLLHUP)))
			drain_device(ls);
		int64_t now = dg_now_ms();
		if (now - ls->last_poll_ms >= POLL_MS) {
			ls->last_poll_ms = now;
			poll_membership(ls, true);
		}
		dg_cb_run(&ls->cbq, 0);
	}
	dg_cb_run(&ls->cbq, 0);
	return NULL;
}

/* ---- ops ---------------------------------------------------------------------------- */

static void destroy(struct dlm_ls *ls)
{
	/* Closing the device releases every lock this process holds in the
	 * lockspace (the kernel's dlm_clear_proc_locks). */
	if (ls->h) {
		if (ls->created) {
			if (dlm_release_lockspace(ls->dlm_name, ls->h, 0) != 0)
				LOG(ls, 4, "lockspace %s: release: %s", ls->dlm_name, strerror(errno));
		} else {
			dlm_close_lockspace(ls->h);
		}
		ls->h = NULL;
	}
	if (ls->q_have)
		quorum_finalize(ls->qh);
	for (size_t b = 0; b < LOCK_BUCKETS; b++) {
		while (ls->buckets[b]) {
			struct dlm_lk *lk = ls->buckets[b];
			ls->buckets[b] = lk->hnext;
			dg_lock_base_release(&lk->base);
			free(lk);
		}
	}
	dg_cb_clear(&ls->cbq);
	if (ls->wake_fd >= 0)
		close(ls->wake_fd);
	pthread_mutex_destroy(&ls->mu);
	free(ls->lockspace_name);
	free(ls);
}

/* The kernel turns the lockspace name into a device node name
 * (/dev/misc/dlm_<name>): keep it to characters that are safe there. */
static bool lockspace_name_ok(const char *s)
{
	size_t n = strnlen(s, DLM_LOCKSPACE_LEN + 1);
	if (n == 0 || n + strlen(LS_PREFIX) > DLM_LOCKSPACE_LEN - 1)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '_' || c == '.'))
			return false;
	}
	return true;
}

/* dlm_create_lockspace fails this way when the dlm module is not loaded
 * (no control device: ENOENT/ENODEV/ENXIO), when dlm_controld is not
 * running (EUNATCH from the kernel) or has not configured the cluster
 * (ENOTCONN). libdlm does not always leave a meaningful errno (it fails
 * before any system call when /proc/misc has no dlm-control), so the
 * missing sysfs directory decides too. */
static bool dlm_unavailable(int e)
{
	if (e == ENOENT || e == ENODEV || e == ENXIO || e == ENOTCONN || e == EUNATCH)
		return true;
	return access("/sys/kernel/dlm", F_OK) != 0;
}

static int dlmb_connect(const struct dg_config *cfg, struct dg_lockspace **out, char *err, size_t errlen)
{
	char scratch[256];
	if (!err || !errlen) {
		err = scratch;
		errlen = sizeof(scratch);
	}
	if (!cfg->lockspace || !lockspace_name_ok(cfg->lockspace)) {
		snprintf(err, errlen, "lockspace name must be 1-%zu characters of [A-Za-z0-9._-] (the volume GUID)",
			 (size_t)DLM_LOCKSPACE_LEN - 1 - strlen(LS_PREFIX));
		return -EINVAL;
	}
	struct dlm_ls *ls = calloc(1, sizeof(*ls));
	if (!ls) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ls->cfg = *cfg;
	ls->cfg.backend = "dlm";
	ls->fd = -1;
	ls->quorate = 0;
	pthread_mutex_init(&ls->mu, NULL);
	dg_cbq_init(&ls->cbq, &ls->mu, &ls->cfg, forget_lock, ls);
	ls->lockspace_name = strdup(cfg->lockspace);
	ls->cfg.lockspace = ls->lockspace_name;
	ls->cfg.fence_command = NULL; /* dlm_controld fences, not us */
	ls->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!ls->lockspace_name || ls->wake_fd < 0) {
		snprintf(err, errlen, "out of memory");
		destroy(ls);
		return -ENOMEM;
	}
	snprintf(ls->dlm_name, sizeof(ls->dlm_name), LS_PREFIX "%s", cfg->lockspace);
	/* configfs is where dlm_controld publishes the members; another
	 * mount point (or a test tree) may be named in the environment. */
	const char *root = getenv("CSVFS_DLM_CONFIGFS");
	snprintf(ls->configfs, sizeof(ls->configfs), "%s", root && root[0] ? root : CONFIGFS_DEFAULT);

	/* Creating needs CAP_SYS_ADMIN; without it we can still open a
	 * lockspace someone else (e.g. a privileged helper) created. */
	errno = 0;
	ls->h = dlm_create_lockspace(ls->dlm_name, 0600);
	int e = errno;
	if (ls->h) {
		ls->created = true;
	} else if (e == EPERM || e == EACCES) {
		errno = 0;
		ls->h = dlm_open_lockspace(ls->dlm_name);
		e = errno;
	}
	if (!ls->h) {
		int rc;
		if (dlm_unavailable(e)) {
			snprintf(err, errlen, DG_DLM_UNAVAILABLE_MSG " [lockspace %s: %s]", ls->dlm_name,
				 e ? strerror(e) : "no DLM control device");
			rc = -ENOTCONN;
		} else {
			snprintf(err, errlen, "cannot create DLM lockspace %s: %s", ls->dlm_name, strerror(e));
			rc = -e;
		}
		LOG(ls, 3, "%s", err);
		destroy(ls);
		return rc;
	}
	uint32_t maj = 0, min = 0, patch = 0;
	if (dlm_kernel_version(&maj, &min, &patch) != 0 || maj != DLM_DEVICE_VERSION_MAJOR) {
		/* we decode the device's result records ourselves */
		snprintf(err, errlen, "kernel DLM device interface %u.%u.%u is not supported (need %d.x)", maj, min,
			 patch, DLM_DEVICE_VERSION_MAJOR);
		LOG(ls, 3, "%s", err);
		destroy(ls);
		return -EPROTONOSUPPORT;
	}
	ls->fd = dlm_ls_get_fd(ls->h);
	int fl = ls->fd >= 0 ? fcntl(ls->fd, F_GETFL, 0) : -1;
	if (fl < 0 || fcntl(ls->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		snprintf(err, errlen, "lockspace %s: bad DLM device descriptor", ls->dlm_name);
		destroy(ls);
		return -EIO;
	}
	uint32_t qtype = 0;
	ls->q_have = quorum_initialize(&ls->qh, NULL, &qtype) == CS_OK;
	if (!ls->q_have)
		LOG(ls, 4, "lockspace %s: corosync quorum service not reachable: reporting not quorate",
		    ls->dlm_name);
	poll_membership(ls, false);
	ls->last_poll_ms = dg_now_ms();

	int rc = pthread_create(&ls->thread, NULL, dispatch_main, ls);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start the dispatch thread: %s", strerror(rc));
		destroy(ls);
		return -rc;
	}
	ls->thread_started = true;
	LOG(ls, 6, "lockspace %s: kernel DLM lockspace %s %s, node %u, %zu member(s)", ls->lockspace_name,
	    ls->dlm_name, ls->created ? "created" : "opened", ls->self_nodeid, ls->nmembers);
	*out = &ls->pub;
	return 0;
}

static void dlmb_disconnect(struct dg_lockspace *p)
{
	struct dlm_ls *ls = impl(p);
	pthread_mutex_lock(&ls->mu);
	ls->stop = true;
	for (size_t b = 0; b < LOCK_BUCKETS; b++)
		for (struct dlm_lk *lk = ls->buckets[b]; lk; lk = lk->hnext)
			lk->base.dead = true;
	pthread_mutex_unlock(&ls->mu);
	wake(ls);
	if (ls->thread_started)
		pthread_join(ls->thread, NULL);
	LOG(ls, 5, "membership: leaving lockspace %s", ls->dlm_name);
	destroy(ls);
}

static uint32_t dlmb_this_node(struct dg_lockspace *p)
{
	struct dlm_ls *ls = impl(p);
	pthread_mutex_lock(&ls->mu);
	uint32_t n = ls->self_nodeid;
	pthread_mutex_unlock(&ls->mu);
	return n;
}

static int dlmb_members(struct dg_lockspace *p, struct dg_member *out, size_t max, int *quorate)
{
	struct dlm_ls *ls = impl(p);
	pthread_mutex_lock(&ls->mu);
	size_t n = ls->nmembers;
	for (size_t i = 0; out && i < n && i < max; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		out[i].nodeid = ls->members[i];
		/* the kernel DLM only lists current members: departed and
		 * fenced nodes are not visible from here */
		out[i].state = DG_NODE_UP;
	}
	if (quorate)
		*quorate = ls->quorate;
	pthread_mutex_unlock(&ls->mu);
	return (int)n;
}

static int dlmb_lock(struct dg_lockspace *p, const char *name, enum dg_mode mode, unsigned flags, dg_ast_fn ast,
		    dg_bast_fn bast, void *arg, struct dg_lock **out)
{
	struct dlm_ls *ls = impl(p);
	if (flags & ~(DG_NOQUEUE | DG_VALBLK))
		return -EINVAL;
	if (!name || strnlen(name, DLM_RESNAME_MAXLEN + 1) == 0 || strnlen(name, DLM_RESNAME_MAXLEN) >= DLM_RESNAME_MAXLEN)
		return -ENAMETOOLONG;
	struct dlm_lk *lk = calloc(1, sizeof(*lk));
	if (!lk)
		return -ENOMEM;
	dg_lock_init(&lk->base, p, ast, bast, arg);
	lk->ls = ls;
	lk->granted = -1;
	lk->requested = -1;
	lk->valblk = (flags & DG_VALBLK) != 0;
	pthread_mutex_lock(&ls->mu);
	if (ls->stop) {
		pthread_mutex_unlock(&ls->mu);
		free(lk);
		return -ENOTCONN;
	}
	int rc = submit_lock(ls, lk, name, mode, flags);
	if (rc == -EAGAIN && (flags & DG_NOQUEUE)) {
		/* A NOQUEUE refusal normally arrives as an ast (status
		 * EAGAIN); should a kernel answer it synchronously, report it
		 * the same way so callers see one behaviour. */
		lk->requested = -1;
		lock_link(ls, lk);
		dg_cb_ast(&ls->cbq, &lk->base, -EAGAIN, DG_NL, NULL);
		queue_free(ls, lk);
		wake(ls);
		rc = 0;
	} else if (rc < 0) {
		pthread_mutex_unlock(&ls->mu);
		LOG(ls, 4, "lockspace %s: lock %s: %s", ls->lockspace_name, name, strerror(-rc));
		free(lk);
		return rc;
	} else {
		lock_link(ls, lk);
	}
	*out = &lk->base;
	pthread_mutex_unlock(&ls->mu);
	return rc;
}

static int dlmb_convert(struct dg_lock *plk, enum dg_mode mode, unsigned flags, const uint8_t *lvb)
{
	struct dlm_lk *lk = (struct dlm_lk *)plk;
	struct dlm_ls *ls = lk->ls;
	flags &= ~DG_CONVERT;
	if (flags & ~(DG_NOQUEUE | DG_VALBLK))
		return -EINVAL;
	pthread_mutex_lock(&ls->mu);
	int rc = 0;
	if (lk->base.dead || ls->stop)
		rc = -ENOTCONN;
	else if (lk->base.unlocking || lk->base.freeing)
		rc = -EINVAL;
	else if (lk->pending || lk->granted < 0)
		rc = -EBUSY;
	if (rc == 0) {
		if (lvb)
			memcpy(lk->lvb, lvb, DG_LVB_LEN);
		unsigned f = flags | DG_CONVERT | (lk->valblk ? DG_VALBLK : 0);
		rc = submit_lock(ls, lk, NULL, mode, f);
		if (rc == -EAGAIN && (flags & DG_NOQUEUE)) {
			dg_cb_ast(&ls->cbq, &lk->base, -EAGAIN, lk->granted, NULL);
			wake(ls);
			rc = 0;
		}
	}
	pthread_mutex_unlock(&ls->mu);
	return rc;
}

static int dlmb_unlock(struct dg_lock *plk, unsigned flags, const uint8_t *lvb)
{
	struct dlm_lk *lk = (struct dlm_lk *)plk;
	struct dlm_ls *ls = lk->ls;
	pthread_mutex_lock(&ls->mu);
	int rc = 0;
	if (lk->base.unlocking || lk->base.freeing) {
		rc = -EINVAL;
	} else if (lk->base.dead || ls->stop) {
		lk->base.unlocking = true;
		queue_free(ls, lk);
		wake(ls);
	} else if (lk->pending) {
		/* A request or conversion is in flight: FORCEUNLOCK takes the
		 * lock off whatever queue it is on (a plain unlock would fail
		 * with EBUSY). Nothing is written to the value block. */
		rc = submit_unlock(ls, lk, LKF_FORCEUNLOCK);
		if (rc == 0)
			lk->base.unlocking = true;
	} else if (((flags & DG_VALBLK) || lk->valblk) && lk->granted >= DG_PW) {
		/* libdlm's dlm_ls_unlock does not pass our value block to the
		 * kernel (it sends an uninitialised one, which the kernel
		 * would write back with LKF_VALBLK). A down-conversion does
		 * carry it: write it by converting to NL, then unlock. */
		if (lvb)
			memcpy(lk->lvb, lvb, DG_LVB_LEN);
		rc = submit_lock(ls, lk, NULL, DG_NL, DG_CONVERT | DG_VALBLK);
		if (rc == 0) {
			lk->base.unlocking = true;
			lk->unlock_after_convert = true;
		}
	} else {
		rc = submit_unlock(ls, lk, 0);
		if (rc == 0)
			lk->base.unlocking = true;
	}
	pthread_mutex_unlock(&ls->mu);
	return rc;
}

static int dlmb_cancel(struct dg_lock *plk)
{
	struct dlm_lk *lk = (struct dlm_lk *)plk;
	struct dlm_ls *ls = lk->ls;
	pthread_mutex_lock(&ls->mu);
	int rc = 0;
	if (lk->base.dead || ls->stop)
		rc = -ENOTCONN;
	else if (lk->base.unlocking || lk->base.freeing || !lk->pending)
		rc = -EINVAL;
	else if (!lk->cancel_sent) {
		/* granted meanwhile: the kernel answers nothing, the grant's
		 * ast stands */
		rc = submit_unlock(ls, lk, LKF_CANCEL);
		if (rc == 0)
			lk->cancel_sent = true;
	}
	pthread_mutex_unlock(&ls->mu);
	return rc;
}

static const struct dg_backend_ops dlm_ops = {
	.name = "dlm",
	.connect = dlmb_connect,
	.disconnect = dlmb_disconnect,
	.this_node = dlmb_this_node,
	.members = dlmb_members,
	.lock = dlmb_lock,
	.convert = dlmb_convert,
	.unlock = dlmb_unlock,
	.cancel = dlmb_cancel,
};

const struct dg_backend_ops *dg_dlm_backend_ops(void)
{
	return &dlm_ops;
}

#else /* !CSVFS_HAVE_LIBDLM */

/* Without libdlm this unit is empty; dlmglue.c refuses backend "dlm". ISO C
 * wants at least one declaration in a translation unit. */
typedef int dg_dlm_backend_not_built;

#endif
