/* Unit tests of the dlm backend (dlm-glue/dlm_backend.c) against a fake
 * kernel DLM. The machine has no kernel DLM, so libdlm's entry points are
 * replaced at link time (tests/unit/test_dlm_backend.ldflags: -Wl,--wrap=...).
 *
 * The fake emulates what libdlm + the kernel do, as far as the backend can
 * observe: requests come in through dlm_ls_lock / dlm_ls_unlock, and every
 * completion or blocking callback goes out as a struct dlm_lock_result record
 * on the lockspace's descriptor (a SOCK_SEQPACKET socket, one record per
 * read, like the device). Resources keep granted / converting / waiting
 * queues with the DLM compatibility matrix, FIFO grants, NOQUEUE refusals,
 * blocking callbacks carrying the blocked request's mode, cancel, forced
 * unlock and a 32-byte value block. dlm_ls_unlock with LKF_VALBLK writes
 * 0xA5 bytes, standing for the uninitialised buffer libdlm really sends, so
 * a backend that relied on it would fail the value block tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <corosync/corotypes.h>
#include <corosync/quorum.h>
#include <linux/dlm.h>
#include <linux/dlm_device.h>
#define BUILDING_LIBDLM 1
#include <libdlm.h>

#include "dlm-glue/dlm_backend.h"
#include "dlm-glue/dlmglue.h"

/* ---- the fake kernel DLM -------------------------------------------------------------- */

#define FK_LOCKS 256
#define FK_LS 8

struct fk_ls {
	bool used;
	char name[DLM_LOCKSPACE_LEN + 1];
	int sv[2]; /* [0] handed to the backend, [1] written by us */
};

struct fk_lock {
	bool used;
	uint32_t lkid;
	struct fk_ls *ls;
	char res[DLM_RESNAME_MAXLEN + 1];
	unsigned reslen;
	int gr, rq;     /* -1: none */
	int queue;      /* 0 granted, 1 converting, 2 waiting */
	uint64_t seq;   /* arrival order in its queue */
	uint32_t rqflags;
	char lvb_in[DLM_LVB_LEN];
	int lastbast;   /* bast mode already sent this episode, -1 none */
	void *castaddr, *bastaddr, *astparam;
	struct dlm_lksb *lksb;
};

struct fk_res {
	bool used;
	char name[DLM_RESNAME_MAXLEN + 1];
	char lvb[DLM_LVB_LEN];
};

static struct {
	pthread_mutex_t mu;
	struct fk_ls ls[FK_LS];
	struct fk_lock locks[FK_LOCKS];
	struct fk_res res[64];
	uint32_t next_lkid;
	uint64_t seq;
	/* knobs */
	int create_errno;     /* dlm_create_lockspace fails with it */
	int open_errno;       /* dlm_open_lockspace fails with it (0: works) */
	bool passthrough;     /* call the real libdlm */
	bool sync_eagain;     /* NOQUEUE refusals answered synchronously */
	uint32_t kernel_major;
	int quorate;
	bool quorum_up;
	/* observations */
	uint32_t last_mode, last_flags;
	unsigned last_namelen;
	char last_name[DLM_RESNAME_MAXLEN + 1];
	int lock_calls, unlock_calls, unlock_valblk_calls, releases, closes;
} fk = { .mu = PTHREAD_MUTEX_INITIALIZER };

static const bool compat[6][6] = {
	{ 1, 1, 1, 1, 1, 1 }, { 1, 1, 1, 1, 1, 0 }, { 1, 1, 1, 0, 0, 0 },
	{ 1, 1, 0, 1, 0, 0 }, { 1, 1, 0, 0, 0, 0 }, { 1, 0, 0, 0, 0, 0 },
};

static void fk_reset(void)
{
	pthread_mutex_lock(&fk.mu);
	for (int i = 0; i < FK_LS; i++)
		if (fk.ls[i].used) {
			close(fk.ls[i].sv[0]);
			close(fk.ls[i].sv[1]);
		}
	memset(fk.ls, 0, sizeof(fk.ls));
	memset(fk.locks, 0, sizeof(fk.locks));
	memset(fk.res, 0, sizeof(fk.res));
	fk.next_lkid = 0x100;
	fk.create_errno = fk.open_errno = 0;
	fk.passthrough = fk.sync_eagain = false;
	fk.kernel_major = DLM_DEVICE_VERSION_MAJOR;
	fk.quorate = 1;
	fk.quorum_up = true;
	fk.lock_calls = fk.unlock_calls = fk.unlock_valblk_calls = fk.releases = fk.closes = 0;
	pthread_mutex_unlock(&fk.mu);
}

static struct fk_res *fk_res_get(const char *name)
{
	for (int i = 0; i < 64; i++)
		if (fk.res[i].used && strcmp(fk.res[i].name, name) == 0)
			return &fk.res[i];
	for (int i = 0; i < 64; i++)
		if (!fk.res[i].used) {
			fk.res[i].used = true;
			snprintf(fk.res[i].name, sizeof(fk.res[i].name), "%s", name);
			return &fk.res[i];
		}
	return NULL;
}

static void fk_emit_raw(struct fk_ls *ls, const void *buf, size_t len)
{
	ssize_t n = send(ls->sv[1], buf, len, 0);
	assert_int_equal(n, (ssize_t)len);
}

/* status is the userspace (positive) value; the kernel sends it negated */
static void fk_emit(struct fk_lock *lk, bool bast, int status, int bast_mode, const char *lvb)
{
	char buf[sizeof(struct dlm_lock_result) + DLM_USER_LVB_LEN];
	struct dlm_lock_result r;
	memset(&r, 0, sizeof(r));
	r.version[0] = DLM_DEVICE_VERSION_MAJOR;
	r.version[1] = DLM_DEVICE_VERSION_MINOR;
	r.version[2] = DLM_DEVICE_VERSION_PATCH;
	r.user_astaddr = bast ? lk->bastaddr : lk->castaddr;
	r.user_astparam = lk->astparam;
	r.user_lksb = lk->lksb;
	r.lksb.sb_status = -status;
	r.lksb.sb_lkid = lk->lkid;
	r.bast_mode = (uint8_t)bast_mode;
	size_t len = sizeof(r);
	if (lvb) {
		r.lvb_offset = sizeof(r);
		memcpy(buf + sizeof(r), lvb, DLM_LVB_LEN);
		len += DLM_LVB_LEN;
	}
	r.length = (uint32_t)len;
	memcpy(buf, &r, sizeof(r));
	fk_emit_raw(lk->ls, buf, len);
}

static struct fk_lock *fk_find(uint32_t lkid)
{
	for (int i = 0; i < FK_LOCKS; i++)
		if (fk.locks[i].used && fk.locks[i].lkid == lkid)
			return &fk.locks[i];
	return NULL;
}

static bool fk_compatible_with_holders(struct fk_lock *me, int mode)
{
	for (int i = 0; i < FK_LOCKS; i++) {
		struct fk_lock *o = &fk.locks[i];
		if (!o->used || o == me || strcmp(o->res, me->res) != 0 || o->gr < 0)
			continue;
		if (!compat[o->gr][mode])
			return false;
	}
	return true;
}

static struct fk_lock *fk_head(const char *res, int queue)
{
	struct fk_lock *best = NULL;
	for (int i = 0; i < FK_LOCKS; i++) {
		struct fk_lock *o = &fk.locks[i];
		if (o->used && o->queue == queue && strcmp(o->res, res) == 0 && (!best || o->seq < best->seq))
			best = o;
	}
	return best;
}

static void fk_grant(struct fk_lock *lk)
{
	struct fk_res *r = fk_res_get(lk->res);
	bool down_write = lk->gr >= DLM_LOCK_PW && lk->rq < lk->gr && (lk->rqflags & LKF_VALBLK);
	if (down_write)
		memcpy(r->lvb, lk->lvb_in, DLM_LVB_LEN);
	lk->gr = lk->rq;
	lk->rq = -1;
	lk->queue = 0;
	lk->lastbast = -1;
	fk_emit(lk, false, 0, 0, (lk->rqflags & LKF_VALBLK) && !down_write ? r->lvb : NULL);
}

/* Grants what can be granted (conversions first, strict FIFO), then sends
 * blocking callbacks to holders that block a waiter (once per mode). */
static void fk_settle(const char *res)
{
	for (int q = 1; q <= 2; q++) {
		struct fk_lock *h;
		while ((h = fk_head(res, q)) && fk_compatible_with_holders(h, h->rq))
			fk_grant(h);
		if (fk_head(res, 1))
			break;
	}
	for (int i = 0; i < FK_LOCKS; i++) {
		struct fk_lock *w = &fk.locks[i];
		if (!w->used || w->queue == 0 || strcmp(w->res, res) != 0)
			continue;
		for (int j = 0; j < FK_LOCKS; j++) {
			struct fk_lock *h = &fk.locks[j];
			if (!h->used || h == w || h->gr < 0 || strcmp(h->res, res) != 0 || compat[h->gr][w->rq])
				continue;
			if (h->lastbast != w->rq && h->bastaddr) {
				h->lastbast = w->rq;
				fk_emit(h, true, 0, w->rq, NULL);
			}
		}
	}
}

static void fk_delete(struct fk_lock *lk)
{
	char res[DLM_RESNAME_MAXLEN + 1];
	snprintf(res, sizeof(res), "%s", lk->res);
	memset(lk, 0, sizeof(*lk));
	fk_settle(res);
}

static struct fk_lock *fk_alloc(void)
{
	for (int i = 0; i < FK_LOCKS; i++)
		if (!fk.locks[i].used) {
			memset(&fk.locks[i], 0, sizeof(fk.locks[i]));
			return &fk.locks[i];
		}
	fprintf(stderr, "fake DLM: lock table full\n");
	abort();
}

static bool fk_is_down(int from, int to)
{
	for (int m = 0; m < 6; m++)
		if (compat[from][m] && !compat[to][m])
			return false;
	return true;
}

dlm_lshandle_t __real_dlm_create_lockspace(const char *name, mode_t mode);
dlm_lshandle_t __real_dlm_open_lockspace(const char *name);
int __real_dlm_release_lockspace(const char *name, dlm_lshandle_t ls, int force);
int __real_dlm_close_lockspace(dlm_lshandle_t ls);
int __real_dlm_ls_get_fd(dlm_lshandle_t ls);
int __real_dlm_kernel_version(uint32_t *maj, uint32_t *min, uint32_t *patch);

static dlm_lshandle_t fk_new_ls(const char *name, int fail)
{
	if (fail) {
		errno = fail;
		return NULL;
	}
	pthread_mutex_lock(&fk.mu);
	for (int i = 0; i < FK_LS; i++)
		if (!fk.ls[i].used) {
			if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fk.ls[i].sv) != 0)
				break;
			fk.ls[i].used = true;
			snprintf(fk.ls[i].name, sizeof(fk.ls[i].name), "%s", name);
			pthread_mutex_unlock(&fk.mu);
			return &fk.ls[i];
		}
	pthread_mutex_unlock(&fk.mu);
	errno = ENOMEM;
	return NULL;
}

dlm_lshandle_t __wrap_dlm_create_lockspace(const char *name, mode_t mode);
dlm_lshandle_t __wrap_dlm_create_lockspace(const char *name, mode_t mode)
{
	if (fk.passthrough)
		return __real_dlm_create_lockspace(name, mode);
	return fk_new_ls(name, fk.create_errno);
}

dlm_lshandle_t __wrap_dlm_open_lockspace(const char *name);
dlm_lshandle_t __wrap_dlm_open_lockspace(const char *name)
{
	if (fk.passthrough)
		return __real_dlm_open_lockspace(name);
	return fk_new_ls(name, fk.open_errno);
}

/* Closing the device drops the process's locks (dlm_clear_proc_locks). */
static int fk_close(dlm_lshandle_t h)
{
	struct fk_ls *ls = h;
	pthread_mutex_lock(&fk.mu);
	for (int i = 0; i < FK_LOCKS; i++)
		if (fk.locks[i].used && fk.locks[i].ls == ls)
			fk_delete(&fk.locks[i]);
	close(ls->sv[0]);
	close(ls->sv[1]);
	memset(ls, 0, sizeof(*ls));
	pthread_mutex_unlock(&fk.mu);
	return 0;
}

int __wrap_dlm_release_lockspace(const char *name, dlm_lshandle_t ls, int force);
int __wrap_dlm_release_lockspace(const char *name, dlm_lshandle_t ls, int force)
{
	if (fk.passthrough)
		return __real_dlm_release_lockspace(name, ls, force);
	fk.releases++;
	return fk_close(ls);
}

int __wrap_dlm_close_lockspace(dlm_lshandle_t ls);
int __wrap_dlm_close_lockspace(dlm_lshandle_t ls)
{
	if (fk.passthrough)
		return __real_dlm_close_lockspace(ls);
	fk.closes++;
	return fk_close(ls);
}

int __wrap_dlm_ls_get_fd(dlm_lshandle_t ls);
int __wrap_dlm_ls_get_fd(dlm_lshandle_t ls)
{
	if (fk.passthrough)
		return __real_dlm_ls_get_fd(ls);
	return ((struct fk_ls *)ls)->sv[0];
}

int __wrap_dlm_kernel_version(uint32_t *maj, uint32_t *min, uint32_t *patch);
int __wrap_dlm_kernel_version(uint32_t *maj, uint32_t *min, uint32_t *patch)
{
	if (fk.passthrough)
		return __real_dlm_kernel_version(maj, min, patch);
	*maj = fk.kernel_major;
	*min = 0;
	*patch = 2;
	return 0;
}

int __wrap_dlm_ls_lock(dlm_lshandle_t h, uint32_t mode, struct dlm_lksb *lksb, uint32_t flags, const void *name,
		       unsigned int namelen, uint32_t parent, void (*astaddr)(void *), void *astarg,
		       void (*bastaddr)(void *), void *range);
int __wrap_dlm_ls_lock(dlm_lshandle_t h, uint32_t mode, struct dlm_lksb *lksb, uint32_t flags, const void *name,
		       unsigned int namelen, uint32_t parent, void (*astaddr)(void *), void *astarg,
		       void (*bastaddr)(void *), void *range)
{
	(void)parent;
	(void)range;
	struct fk_ls *ls = h;
	pthread_mutex_lock(&fk.mu);
	fk.lock_calls++;
	fk.last_mode = mode;
	fk.last_flags = flags;
	fk.last_namelen = (flags & LKF_CONVERT) ? 0 : namelen;
	if (!(flags & LKF_CONVERT) && namelen <= DLM_RESNAME_MAXLEN && name) {
		memcpy(fk.last_name, name, namelen);
		fk.last_name[namelen] = 0;
	}
	int err = 0;
	if (mode > LKM_EXMODE || ((flags & LKF_VALBLK) && !lksb->sb_lvbptr))
		err = EINVAL;
	else if (!(flags & LKF_CONVERT) && (namelen == 0 || namelen > DLM_RESNAME_MAXLEN || !name))
		err = EINVAL;
	if (err) {
		pthread_mutex_unlock(&fk.mu);
		errno = err;
		return -1;
	}
	lksb->sb_status = EINPROG; /* as libdlm does */
	struct fk_lock *lk;
	if (flags & LKF_CONVERT) {
		lk = fk_find(lksb->sb_lkid);
		if (!lk || lk->ls != ls) {
			pthread_mutex_unlock(&fk.mu);
			errno = ENOENT;
			return -1;
		}
		if (lk->queue != 0) {
			pthread_mutex_unlock(&fk.mu);
			errno = EBUSY;
			return -1;
		}
	} else {
		lk = fk_alloc();
		lk->used = true;
		lk->lkid = fk.next_lkid++;
		lk->ls = ls;
		memcpy(lk->res, name, namelen);
		lk->reslen = namelen;
		lk->gr = -1;
		lk->lastbast = -1;
		fk_res_get(lk->res);
		lksb->sb_lkid = lk->lkid;
	}
	lk->castaddr = (void *)astaddr;
	lk->bastaddr = (void *)bastaddr;
	lk->astparam = astarg;
	lk->lksb = lksb;
	lk->rq = (int)mode;
	lk->rqflags = flags;
	if (flags & LKF_VALBLK)
		memcpy(lk->lvb_in, lksb->sb_lvbptr, DLM_LVB_LEN);
	bool conv = (flags & LKF_CONVERT) != 0;
	bool grantable;
	if (conv && fk_is_down(lk->gr, lk->rq))
		grantable = true;
	else
		grantable = !fk_head(lk->res, 1) && (conv || !fk_head(lk->res, 2)) &&
			    fk_compatible_with_holders(lk, lk->rq);
	if (grantable) {
		fk_grant(lk);
		fk_settle(lk->res);
	} else if (flags & LKF_NOQUEUE) {
		if (fk.sync_eagain && !conv) {
			memset(lk, 0, sizeof(*lk));
			pthread_mutex_unlock(&fk.mu);
			errno = EAGAIN;
			return -1;
		}
		fk_emit(lk, false, EAGAIN, 0, NULL);
		lk->rq = -1;
		if (!conv)
			memset(lk, 0, sizeof(*lk));
	} else {
		lk->queue = conv ? 1 : 2;
		lk->seq = ++fk.seq;
		fk_settle(lk->res);
	}
	pthread_mutex_unlock(&fk.mu);
	return 0;
}

int __wrap_dlm_ls_unlock(dlm_lshandle_t h, uint32_t lkid, uint32_t flags, struct dlm_lksb *lksb, void *astarg);
int __wrap_dlm_ls_unlock(dlm_lshandle_t h, uint32_t lkid, uint32_t flags, struct dlm_lksb *lksb, void *astarg)
{
	(void)h;
	pthread_mutex_lock(&fk.mu);
	fk.unlock_calls++;
	struct fk_lock *lk = fk_find(lkid);
	if (!lk) {
		pthread_mutex_unlock(&fk.mu);
		errno = ENOENT;
		return -1;
	}
	lksb->sb_status = EINPROG;
	if (astarg)
		lk->astparam = astarg;
	lk->lksb = lksb;
	if (flags & LKF_CANCEL) {
		if (lk->queue == 2) {
			fk_emit(lk, false, ECANCEL, 0, NULL);
			fk_delete(lk);
		} else if (lk->queue == 1) {
			lk->queue = 0;
			lk->rq = -1;
			fk_emit(lk, false, ECANCEL, 0, NULL);
			fk_settle(lk->res);
		}
		/* granted already: nothing to cancel, no ast (as the kernel) */
		pthread_mutex_unlock(&fk.mu);
		return 0;
	}
	if (lk->queue != 0 && !(flags & LKF_FORCEUNLOCK)) {
		pthread_mutex_unlock(&fk.mu);
		errno = EBUSY;
		return -1;
	}
	if (flags & LKF_VALBLK) {
		fk.unlock_valblk_calls++;
		if (lk->gr >= DLM_LOCK_PW)
			memset(fk_res_get(lk->res)->lvb, 0xA5, DLM_LVB_LEN);
	}
	fk_emit(lk, false, EUNLOCK, 0, NULL);
	fk_delete(lk);
	pthread_mutex_unlock(&fk.mu);
	return 0;
}

cs_error_t __wrap_quorum_initialize(quorum_handle_t *h, quorum_callbacks_t *cb, uint32_t *type);
cs_error_t __wrap_quorum_initialize(quorum_handle_t *h, quorum_callbacks_t *cb, uint32_t *type)
{
	(void)cb;
	*h = 42;
	*type = QUORUM_SET;
	return fk.quorum_up ? CS_OK : CS_ERR_LIBRARY;
}

cs_error_t __wrap_quorum_getquorate(quorum_handle_t h, int *quorate);
cs_error_t __wrap_quorum_getquorate(quorum_handle_t h, int *quorate)
{
	(void)h;
	pthread_mutex_lock(&fk.mu);
	*quorate = fk.quorate;
	pthread_mutex_unlock(&fk.mu);
	return CS_OK;
}

cs_error_t __wrap_quorum_finalize(quorum_handle_t h);
cs_error_t __wrap_quorum_finalize(quorum_handle_t h)
{
	(void)h;
	return CS_OK;
}

/* ---- recording callbacks -------------------------------------------------------------- */

struct rec {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int asts, basts;
	int status;
	enum dg_mode mode, bast_mode;
	bool has_lvb;
	uint8_t lvb[DG_LVB_LEN];
	int membership, quorum_calls, quorate;
};

static void rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
}

static void rec_ast(void *arg, int status, enum dg_mode granted, const uint8_t *lvb)
{
	struct rec *r = arg;
	pthread_mutex_lock(&r->mu);
	r->asts++;
	r->status = status;
	r->mode = granted;
	r->has_lvb = lvb != NULL;
	if (lvb)
		memcpy(r->lvb, lvb, DG_LVB_LEN);
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static void rec_bast(void *arg, enum dg_mode blocking)
{
	struct rec *r = arg;
	pthread_mutex_lock(&r->mu);
	r->basts++;
	r->bast_mode = blocking;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static void rec_membership(void *arg)
{
	struct rec *r = arg;
	pthread_mutex_lock(&r->mu);
	r->membership++;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static void rec_quorum(void *arg, int q)
{
	struct rec *r = arg;
	pthread_mutex_lock(&r->mu);
	r->quorum_calls++;
	r->quorate = q;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* Waits until *field >= n (bounded); returns whether it got there. */
static bool rec_wait(struct rec *r, const int *field, int n, unsigned ms)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += ms / 1000;
	dl.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->mu);
	int rc = 0;
	while (*field < n && rc == 0)
		rc = pthread_cond_timedwait(&r->cv, &r->mu, &dl);
	bool ok = *field >= n;
	pthread_mutex_unlock(&r->mu);
	return ok;
}

static void quiet_log(void *arg, int level, const char *fmt, va_list ap)
{
	(void)arg;
	(void)level;
	(void)fmt;
	(void)ap;
}

static char last_log[512];
static void capture_log(void *arg, int level, const char *fmt, va_list ap)
{
	(void)arg;
	(void)level;
	vsnprintf(last_log, sizeof(last_log), fmt, ap);
}

static struct dg_lockspace *connect_ok(const char *guid, struct rec *cbrec)
{
	struct dg_config cfg = { .backend = "dlm", .lockspace = guid, .log = quiet_log };
	if (cbrec) {
		cfg.cb.arg = cbrec;
		cfg.cb.membership = rec_membership;
		cfg.cb.quorum = rec_quorum;
	}
	struct dg_lockspace *ls = NULL;
	char err[256];
	int rc = dg_connect(&cfg, &ls, err, sizeof(err));
	if (rc != 0)
		fprintf(stderr, "dg_connect: %d %s\n", rc, err);
	assert_int_equal(rc, 0);
	assert_non_null(ls);
	return ls;
}

static int setup(void **state)
{
	(void)state;
	fk_reset();
	unsetenv("CSVFS_DLM_CONFIGFS");
	return 0;
}

#define GUID "0b7c5a1e-2f43-4d7e-9a55-3c1d2e4f6a70"

/* ---- tests ---------------------------------------------------------------------------- */

static void test_mode_and_flag_mapping(void **state)
{
	(void)state;
	struct dg_lockspace *ls = connect_ok(GUID, NULL);
	static const uint32_t want[6] = { LKM_NLMODE, LKM_CRMODE, LKM_CWMODE, LKM_PRMODE, LKM_PWMODE, LKM_EXMODE };
	for (int m = DG_NL; m <= DG_EX; m++) {
		struct rec r;
		rec_init(&r);
		struct dg_lock *lk = NULL;
		char name[32];
		snprintf(name, sizeof(name), "map-%d", m);
		assert_int_equal(dg_lock(ls, name, (enum dg_mode)m, m % 2 ? DG_NOQUEUE : DG_VALBLK, rec_ast, rec_bast, &r,
					 &lk),
				 0);
		pthread_mutex_lock(&fk.mu);
		assert_int_equal(fk.last_mode, want[m]);
		assert_int_equal(fk.last_flags, m % 2 ? LKF_NOQUEUE : LKF_VALBLK);
		assert_int_equal(fk.last_namelen, strlen(name));
		assert_string_equal(fk.last_name, name);
		pthread_mutex_unlock(&fk.mu);
		assert_true(rec_wait(&r, &r.asts, 1, 2000));
		assert_int_equal(r.status, 0);
		assert_int_equal(r.mode, m);
		/* only a VALBLK request gets the value block */
		assert_int_equal(r.has_lvb, m % 2 == 0);
		/* a convert carries LKF_CONVERT, no name, and VALBLK stays on
		 * for a lock requested with it */
		assert_int_equal(dg_convert(lk, DG_NL, DG_NOQUEUE, NULL), 0);
		pthread_mutex_lock(&fk.mu);
		assert_int_equal(fk.last_mode, LKM_NLMODE);
		assert_int_equal(fk.last_flags, LKF_CONVERT | LKF_NOQUEUE | (m % 2 ? 0 : LKF_VALBLK));
		assert_int_equal(fk.last_namelen, 0);
		pthread_mutex_unlock(&fk.mu);
		assert_true(rec_wait(&r, &r.asts, 2, 2000));
		assert_int_equal(r.mode, DG_NL);
		assert_int_equal(dg_unlock(lk, 0, NULL), 0);
	}
	/* flags the backend does not know are refused, not passed on */
	struct dg_lock *lk = NULL;
	assert_int_equal(dg_lock(ls, "x", DG_PR, 0x80, rec_ast, NULL, NULL, &lk), -EINVAL);
	dg_disconnect(ls);
}

static void test_lvb_read_write(void **state)
{
	(void)state;
	struct dg_lockspace *ls = connect_ok(GUID, NULL);
	uint8_t lvb[DG_LVB_LEN], zero[DG_LVB_LEN] = { 0 }, v1[DG_LVB_LEN], v2[DG_LVB_LEN];
	memset(v1, 0x11, sizeof(v1));
	memset(v2, 0x22, sizeof(v2));
	struct dg_lock *a = NULL, *b = NULL;
	/* a new resource's value block is zeros */
	assert_int_equal(dg_lock_wait(ls, "inode:7", DG_EX, DG_VALBLK, 2000, lvb, &a), 0);
	assert_memory_equal(lvb, zero, DG_LVB_LEN);
	/* written by a down-convert from EX; an NL holder keeps the resource */
	struct rec r;
	rec_init(&r);
	assert_int_equal(dg_unlock(a, 0, NULL), 0);
	assert_int_equal(dg_lock(ls, "inode:7", DG_EX, DG_VALBLK, rec_ast, NULL, &r, &a), 0);
	assert_true(rec_wait(&r, &r.asts, 1, 2000));
	assert_int_equal(dg_convert(a, DG_NL, DG_VALBLK, v1), 0);
	assert_true(rec_wait(&r, &r.asts, 2, 2000));
	assert_int_equal(r.mode, DG_NL);
	assert_int_equal(dg_lock_wait(ls, "inode:7", DG_PR, DG_VALBLK, 2000, lvb, &b), 0);
	assert_memory_equal(lvb, v1, DG_LVB_LEN);
	assert_int_equal(dg_unlock(b, 0, NULL), 0);
	/* up-convert reads it */
	assert_int_equal(dg_convert(a, DG_PW, DG_VALBLK, NULL), 0);
	assert_true(rec_wait(&r, &r.asts, 3, 2000));
	assert_true(r.has_lvb);
	assert_memory_equal(r.lvb, v1, DG_LVB_LEN);
	/* written by dg_unlock from PW: the backend must not rely on
	 * dlm_ls_unlock's value block (the fake writes 0xA5 like libdlm's
	 * uninitialised buffer) */
	assert_int_equal(dg_unlock(a, DG_VALBLK, v2), 0);
	assert_int_equal(dg_lock_wait(ls, "inode:7", DG_CR, DG_VALBLK, 2000, lvb, &b), 0);
	assert_memory_equal(lvb, v2, DG_LVB_LEN);
	pthread_mutex_lock(&fk.mu);
	assert_int_equal(fk.unlock_valblk_calls, 0);
	pthread_mutex_unlock(&fk.mu);
	/* releases from weaker modes never write */
	assert_int_equal(dg_unlock(b, DG_VALBLK, v1), 0);
	assert_int_equal(dg_lock_wait(ls, "inode:7", DG_CR, DG_VALBLK, 2000, lvb, &b), 0);
	assert_memory_equal(lvb, v2, DG_LVB_LEN);
	dg_disconnect(ls);
}

static void test_noqueue_eagain(void **state)
{
	(void)state;
	struct dg_lockspace *n1 = connect_ok(GUID, NULL), *n2 = connect_ok(GUID, NULL);
	struct dg_lock *a = NULL, *b = NULL;
	assert_int_equal(dg_lock_wait(n1, "coord", DG_EX, 0, 2000, NULL, &a), 0);
	assert_int_equal(dg_lock_wait(n2, "coord", DG_PR, DG_NOQUEUE, 2000, NULL, &b), -EAGAIN);
	assert_null(b);
	/* a conversion refused with NOQUEUE keeps the lock at its mode */
	struct rec r;
	rec_init(&r);
	assert_int_equal(dg_lock(n2, "other", DG_PR, 0, rec_ast, NULL, &r, &b), 0);
	assert_true(rec_wait(&r, &r.asts, 1, 2000));
	struct dg_lock *c = NULL;
	assert_int_equal(dg_lock_wait(n1, "other", DG_PR, 0, 2000, NULL, &c), 0);
	assert_int_equal(dg_convert(b, DG_EX, DG_NOQUEUE, NULL), 0);
	assert_true(rec_wait(&r, &r.asts, 2, 2000));
	assert_int_equal(r.status, -EAGAIN);
	assert_int_equal(r.mode, DG_PR);
	assert_int_equal(dg_convert(b, DG_NL, 0, NULL), 0); /* still usable */
	assert_true(rec_wait(&r, &r.asts, 3, 2000));
	assert_int_equal(r.status, 0);
	/* a synchronous refusal (EAGAIN from the write) looks the same */
	fk.sync_eagain = true;
	struct dg_lock *d = NULL;
	assert_int_equal(dg_lock_wait(n2, "coord", DG_EX, DG_NOQUEUE, 2000, NULL, &d), -EAGAIN);
	dg_disconnect(n1);
	dg_disconnect(n2);
}

static void test_bast_carries_mode(void **state)
{
	(void)state;
	struct dg_lockspace *n1 = connect_ok(GUID, NULL), *n2 = connect_ok(GUID, NULL);
	struct rec h, w;
	rec_init(&h);
	rec_init(&w);
	struct dg_lock *a = NULL, *b = NULL;
	assert_int_equal(dg_lock(n1, "inode:9", DG_EX, 0, rec_ast, rec_bast, &h, &a), 0);
	assert_true(rec_wait(&h, &h.asts, 1, 2000));
	assert_int_equal(dg_lock(n2, "inode:9", DG_PR, 0, rec_ast, rec_bast, &w, &b), 0);
	assert_true(rec_wait(&h, &h.basts, 1, 2000));
	assert_int_equal(h.bast_mode, DG_PR);
	assert_int_equal(w.asts, 0);
	/* converting down to something compatible with PR lets it in */
	assert_int_equal(dg_convert(a, DG_PR, 0, NULL), 0);
	assert_true(rec_wait(&w, &w.asts, 1, 2000));
	assert_int_equal(w.status, 0);
	assert_int_equal(w.mode, DG_PR);
	assert_true(rec_wait(&h, &h.asts, 2, 2000));
	assert_int_equal(h.mode, DG_PR);
	/* a CW request blocks both PR holders: each gets CW */
	struct rec x;
	rec_init(&x);
	struct dg_lock *c = NULL;
	assert_int_equal(dg_lock(n2, "inode:9", DG_CW, 0, rec_ast, rec_bast, &x, &c), 0);
	assert_true(rec_wait(&h, &h.basts, 2, 2000));
	assert_true(rec_wait(&w, &w.basts, 1, 2000));
	assert_int_equal(h.bast_mode, DG_CW);
	assert_int_equal(w.bast_mode, DG_CW);
	/* after dg_unlock no callback reaches the handle */
	assert_int_equal(dg_unlock(a, 0, NULL), 0);
	assert_int_equal(dg_unlock(b, 0, NULL), 0);
	assert_true(rec_wait(&x, &x.asts, 1, 2000));
	assert_int_equal(x.mode, DG_CW);
	usleep(100 * 1000);
	assert_int_equal(h.asts, 2);
	assert_int_equal(w.asts, 1);
	dg_disconnect(n1);
	dg_disconnect(n2);
}

static void test_cancel(void **state)
{
	(void)state;
	struct dg_lockspace *n1 = connect_ok(GUID, NULL), *n2 = connect_ok(GUID, NULL);
	struct dg_lock *a = NULL, *b = NULL;
	assert_int_equal(dg_lock_wait(n1, "r", DG_EX, 0, 2000, NULL, &a), 0);
	/* a waiting request: cancelled, -ECANCELED, the handle goes */
	struct rec r;
	rec_init(&r);
	assert_int_equal(dg_lock(n2, "r", DG_EX, 0, rec_ast, NULL, &r, &b), 0);
	assert_int_equal(dg_cancel(b), 0);
	assert_true(rec_wait(&r, &r.asts, 1, 2000));
	assert_int_equal(r.status, -ECANCELED);
	assert_int_equal(r.mode, DG_NL);
	/* a pending conversion: withdrawn, the lock keeps its mode */
	assert_int_equal(dg_convert(a, DG_PR, 0, NULL), 0);
	struct rec q;
	rec_init(&q);
	assert_int_equal(dg_lock(n2, "r", DG_PR, 0, rec_ast, NULL, &q, &b), 0);
	assert_true(rec_wait(&q, &q.asts, 1, 2000));
	assert_int_equal(dg_convert(b, DG_EX, 0, NULL), 0);
	assert_int_equal(dg_convert(b, DG_NL, 0, NULL), -EBUSY); /* one request at a time */
	assert_int_equal(dg_cancel(b), 0);
	assert_true(rec_wait(&q, &q.asts, 2, 2000));
	assert_int_equal(q.status, -ECANCELED);
	assert_int_equal(q.mode, DG_PR);
	/* nothing pending: nothing to cancel */
	assert_int_equal(dg_cancel(b), -EINVAL);
	assert_int_equal(dg_convert(b, DG_NL, 0, NULL), 0);
	assert_true(rec_wait(&q, &q.asts, 3, 2000));
	assert_int_equal(q.status, 0);
	assert_int_equal(q.mode, DG_NL);
	/* unlocking while a request waits (FORCEUNLOCK) frees it quietly */
	struct rec u;
	rec_init(&u);
	struct dg_lock *c = NULL;
	assert_int_equal(dg_lock(n2, "r", DG_EX, 0, rec_ast, NULL, &u, &c), 0);
	assert_int_equal(dg_unlock(c, 0, NULL), 0);
	usleep(100 * 1000);
	assert_int_equal(u.asts, 0);
	dg_disconnect(n1);
	dg_disconnect(n2);
}

static void test_lock_wait_timeout(void **state)
{
	(void)state;
	struct dg_lockspace *n1 = connect_ok(GUID, NULL), *n2 = connect_ok(GUID, NULL);
	struct dg_lock *a = NULL, *b = NULL;
	assert_int_equal(dg_lock_wait(n1, "t", DG_EX, 0, 2000, NULL, &a), 0);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(dg_lock_wait(n2, "t", DG_PR, 0, 200, NULL, &b), -ETIMEDOUT);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_true(ms >= 190 && ms < 5000);
	assert_null(b);
	/* the timed-out request was cancelled: once the holder lets go, a new
	 * EX request is granted at once */
	assert_int_equal(dg_unlock(a, 0, NULL), 0);
	assert_int_equal(dg_lock_wait(n2, "t", DG_EX, 0, 2000, NULL, &b), 0);
	assert_int_equal(dg_unlock(b, 0, NULL), 0);
	dg_disconnect(n1);
	dg_disconnect(n2);
}

static void test_status_mapping(void **state)
{
	(void)state;
	/* a kernel completion other than grant/EAGAIN/ECANCEL (EDEADLK on a
	 * conversion) reaches the ast as its negative errno, lock kept */
	struct dg_lockspace *ls = connect_ok(GUID, NULL);
	struct rec r;
	rec_init(&r);
	struct dg_lock *a = NULL;
	assert_int_equal(dg_lock(ls, "d", DG_PR, 0, rec_ast, NULL, &r, &a), 0);
	assert_true(rec_wait(&r, &r.asts, 1, 2000));
	pthread_mutex_lock(&fk.mu);
	struct fk_lock *lk = NULL;
	for (int i = 0; i < FK_LOCKS; i++)
		if (fk.locks[i].used && strcmp(fk.locks[i].res, "d") == 0)
			lk = &fk.locks[i];
	assert_non_null(lk);
	pthread_mutex_unlock(&fk.mu);
	struct dg_lockspace *n2 = connect_ok(GUID, NULL);
	struct dg_lock *b = NULL;
	assert_int_equal(dg_lock_wait(n2, "d", DG_PR, 0, 2000, NULL, &b), 0);
	assert_int_equal(dg_convert(a, DG_EX, 0, NULL), 0); /* queued behind n2's PR */
	pthread_mutex_lock(&fk.mu);
	assert_int_equal(lk->queue, 1);
	lk->queue = 0;
	lk->rq = -1;
	fk_emit(lk, false, EDEADLK, 0, NULL);
	pthread_mutex_unlock(&fk.mu);
	assert_true(rec_wait(&r, &r.asts, 2, 2000));
	assert_int_equal(r.status, -EDEADLK);
	assert_int_equal(r.mode, DG_PR);
	/* nothing pending any more: the lock converts again */
	assert_int_equal(dg_convert(a, DG_NL, 0, NULL), 0);
	assert_true(rec_wait(&r, &r.asts, 3, 2000));
	assert_int_equal(r.status, 0);
	assert_int_equal(r.mode, DG_NL);
	dg_disconnect(n2);
	dg_disconnect(ls);
}

static void test_missing_kernel_dlm(void **state)
{
	(void)state;
	static const int errs[] = { ENOENT, ENOTCONN, EUNATCH, ENODEV };
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		fk.create_errno = errs[i];
		struct dg_config cfg = { .backend = "dlm", .lockspace = GUID, .log = capture_log };
		struct dg_lockspace *ls = (void *)1;
		char err[512];
		assert_int_equal(dg_connect(&cfg, &ls, err, sizeof(err)), -ENOTCONN);
		assert_null(ls);
		assert_non_null(strstr(err, DG_DLM_UNAVAILABLE_MSG));
		assert_non_null(strstr(err, "csvfs-" GUID));
		assert_non_null(strstr(last_log, "kernel DLM not available")); /* logged too */
	}
	/* no privilege to create: open instead; if that fails too, the real
	 * reason is reported (here with the kernel DLM "present") */
	fk.create_errno = EPERM;
	fk.open_errno = 0;
	struct dg_lockspace *ls = connect_ok(GUID, NULL);
	dg_disconnect(ls);
	assert_int_equal(fk.closes, 1); /* opened, so closed, not released */
	/* an old device interface is refused, not misparsed */
	fk.create_errno = 0;
	fk.kernel_major = 5;
	struct dg_config cfg = { .backend = "dlm", .lockspace = GUID, .log = quiet_log };
	char err[256];
	assert_int_equal(dg_connect(&cfg, &ls, err, sizeof(err)), -EPROTONOSUPPORT);
	assert_non_null(strstr(err, "device interface 5"));
}

/* Not faked: the real libdlm on this machine, which has no kernel DLM. */
static void test_real_libdlm_without_kernel_dlm(void **state)
{
	(void)state;
	if (access("/sys/kernel/dlm", F_OK) == 0 || access("/dev/misc/dlm-control", F_OK) == 0) {
		skip(); /* a kernel DLM is here: nothing to check */
		return;
	}
	fk.passthrough = true;
	struct dg_config cfg = { .backend = "dlm", .lockspace = GUID, .log = quiet_log };
	struct dg_lockspace *ls = NULL;
	char err[512];
	int rc = dg_connect(&cfg, &ls, err, sizeof(err));
	fprintf(stderr, "# real libdlm: %d %s\n", rc, err);
	assert_int_equal(rc, -ENOTCONN);
	assert_null(ls);
	assert_non_null(strstr(err, DG_DLM_UNAVAILABLE_MSG));
}

static void test_bad_input(void **state)
{
	(void)state;
	const char *bad[] = { "", "a/b", "has space", "../x",
			      "0123456789012345678901234567890123456789012345678901234567890" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct dg_config cfg = { .backend = "dlm", .lockspace = bad[i], .log = quiet_log };
		struct dg_lockspace *ls = NULL;
		char err[256];
		assert_int_equal(dg_connect(&cfg, &ls, err, sizeof(err)), -EINVAL);
		assert_null(ls);
	}
	struct dg_config cfg = { .backend = "dlm", .lockspace = NULL, .log = quiet_log };
	struct dg_lockspace *ls = NULL;
	assert_int_equal(dg_connect(&cfg, &ls, NULL, 0), -EINVAL);
	ls = connect_ok(GUID, NULL);
	struct dg_lock *lk = NULL;
	char longname[DG_RESOURCE_MAX + 8];
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	assert_int_equal(dg_lock(ls, longname, DG_PR, 0, rec_ast, NULL, NULL, &lk), -ENAMETOOLONG);
	longname[DG_RESOURCE_MAX] = 0; /* exactly 64 bytes: one too many */
	assert_int_equal(dg_lock(ls, longname, DG_PR, 0, rec_ast, NULL, NULL, &lk), -ENAMETOOLONG);
	assert_int_equal(dg_lock(ls, "", DG_PR, 0, rec_ast, NULL, NULL, &lk), -ENAMETOOLONG);
	assert_int_equal(dg_lock(ls, "x", (enum dg_mode)9, 0, rec_ast, NULL, NULL, &lk), -EINVAL);
	assert_int_equal(dg_lock(ls, NULL, DG_PR, 0, rec_ast, NULL, NULL, &lk), -EINVAL);
	pthread_mutex_lock(&fk.mu);
	int calls = fk.lock_calls;
	pthread_mutex_unlock(&fk.mu);
	assert_int_equal(calls, 0); /* none of that reached the DLM */
	longname[DG_RESOURCE_MAX - 1] = 0; /* 63 bytes: fine */
	assert_int_equal(dg_lock_wait(ls, longname, DG_PR, 0, 2000, NULL, &lk), 0);
	assert_int_equal(dg_convert(lk, (enum dg_mode)7, 0, NULL), -EINVAL);
	assert_int_equal(dg_convert(lk, DG_EX, 0x40, NULL), -EINVAL);
	/* garbage on the device is ignored: short, wrong version, unknown lock */
	pthread_mutex_lock(&fk.mu);
	struct fk_ls *fls = NULL;
	for (int i = 0; i < FK_LS; i++)
		if (fk.ls[i].used)
			fls = &fk.ls[i];
	assert_non_null(fls);
	char junk[8] = "garbage";
	fk_emit_raw(fls, junk, sizeof(junk));
	struct dlm_lock_result r;
	memset(&r, 0, sizeof(r));
	r.version[0] = 5;
	r.user_astparam = &r;
	fk_emit_raw(fls, &r, sizeof(r));
	r.version[0] = DLM_DEVICE_VERSION_MAJOR;
	fk_emit_raw(fls, &r, sizeof(r)); /* a lock we never made */
	r.lvb_offset = 4000;             /* and an lvb offset past the record */
	fk_emit_raw(fls, &r, sizeof(r));
	pthread_mutex_unlock(&fk.mu);
	/* still working afterwards */
	struct dg_lock *lk2 = NULL;
	assert_int_equal(dg_lock_wait(ls, "after", DG_EX, 0, 2000, NULL, &lk2), 0);
	assert_int_equal(dg_unlock(lk2, 0, NULL), 0);
	/* disconnect with a lock still held frees it (ASan checks) */
	dg_disconnect(ls);
	assert_int_equal(fk.releases, 1);
	/* no DLM at all: dg_* on NULL */
	assert_int_equal(dg_members(NULL, NULL, 0, NULL), -EINVAL);
}

static void write_file(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(s, f);
	fclose(f);
}

static void test_members_and_quorum(void **state)
{
	(void)state;
	char root[] = "/tmp/dlmcfgXXXXXX";
	assert_non_null(mkdtemp(root));
	char p[512];
	const char *dirs[] = { "comms", "comms/1", "comms/2", "spaces", "spaces/csvfs-" GUID,
			       "spaces/csvfs-" GUID "/nodes", "spaces/csvfs-" GUID "/nodes/1",
			       "spaces/csvfs-" GUID "/nodes/2" };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", root, dirs[i]);
		assert_int_equal(mkdir(p, 0700), 0);
	}
	snprintf(p, sizeof(p), "%s/comms/1/local", root);
	write_file(p, "0\n");
	snprintf(p, sizeof(p), "%s/comms/2/local", root);
	write_file(p, "1\n");
	setenv("CSVFS_DLM_CONFIGFS", root, 1);
	struct rec r;
	rec_init(&r);
	struct dg_lockspace *ls = connect_ok(GUID, &r);
	assert_int_equal(dg_this_node(ls), 2);
	struct dg_member m[4];
	int q = -1;
	assert_int_equal(dg_members(ls, m, 4, &q), 2);
	assert_int_equal(q, 1);
	assert_int_equal(m[0].nodeid, 1);
	assert_int_equal(m[1].nodeid, 2);
	assert_int_equal(m[0].state, DG_NODE_UP);
	/* a count even when the buffer is short */
	assert_int_equal(dg_members(ls, m, 1, NULL), 2);
	/* node 3 joins, quorum is lost: both reported within the poll */
	snprintf(p, sizeof(p), "%s/spaces/csvfs-" GUID "/nodes/3", root);
	assert_int_equal(mkdir(p, 0700), 0);
	pthread_mutex_lock(&fk.mu);
	fk.quorate = 0;
	pthread_mutex_unlock(&fk.mu);
	assert_true(rec_wait(&r, &r.membership, 1, 3000));
	assert_true(rec_wait(&r, &r.quorum_calls, 1, 3000));
	assert_int_equal(r.quorate, 0);
	assert_int_equal(dg_members(ls, m, 4, &q), 3);
	assert_int_equal(q, 0);
	assert_int_equal(m[2].nodeid, 3);
	dg_disconnect(ls);
	/* no corosync quorum service: connect still works, not quorate */
	fk.quorum_up = false;
	ls = connect_ok(GUID, NULL);
	assert_int_equal(dg_members(ls, m, 4, &q), 3);
	assert_int_equal(q, 0);
	dg_disconnect(ls);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
	unsetenv("CSVFS_DLM_CONFIGFS");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_mode_and_flag_mapping, setup),
		cmocka_unit_test_setup(test_lvb_read_write, setup),
		cmocka_unit_test_setup(test_noqueue_eagain, setup),
		cmocka_unit_test_setup(test_bast_carries_mode, setup),
		cmocka_unit_test_setup(test_cancel, setup),
		cmocka_unit_test_setup(test_lock_wait_timeout, setup),
		cmocka_unit_test_setup(test_status_mapping, setup),
		cmocka_unit_test_setup(test_missing_kernel_dlm, setup),
		cmocka_unit_test_setup(test_real_libdlm_without_kernel_dlm, setup),
		cmocka_unit_test_setup(test_bad_input, setup),
		cmocka_unit_test_setup(test_members_and_quorum, setup),
	};
	return cmocka_run_group_tests_name("dlm_backend", tests, NULL, NULL);
}
