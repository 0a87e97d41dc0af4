/* dlm-glue core: picks the backend named by dg_config.backend and forwards
 * every public call to it through its struct dg_backend_ops; dg_lock_wait is
 * built on dg_lock here so both backends share it. Also the helpers every
 * backend uses (dg_logf, dg_now_ms, dg_lock_init). The callback queue is in
 * callbacks.c. */
#include "dlm-glue/backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(CSVFS_HAVE_LIBDLM) && defined(__has_include)
#if __has_include("dlm-glue/dlm_backend.h")
#include "dlm-glue/dlm_backend.h"
#define DG_HAVE_DLM_BACKEND 1
#endif
#endif

void dg_logf(const struct dg_config *cfg, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (cfg && cfg->log) {
		cfg->log(cfg->log_arg, level, fmt, ap);
	} else {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		struct tm tm;
		localtime_r(&ts.tv_sec, &tm);
		char line[1024];
		vsnprintf(line, sizeof(line), fmt, ap);
		fprintf(stderr, "%02d:%02d:%02d.%03ld dlm-glue: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
			ts.tv_nsec / 1000000, line);
	}
	va_end(ap);
}

int64_t dg_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int dg_connect(const struct dg_config *cfg, struct dg_lockspace **out, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = 0;
	if (!cfg || !out) {
		if (err && errlen)
			snprintf(err, errlen, "dg_connect: no configuration");
		return -EINVAL;
	}
	*out = NULL;
	const char *backend = cfg->backend && cfg->backend[0] ? cfg->backend : "cpg";
	const struct dg_backend_ops *ops = NULL;
	if (strcmp(backend, "cpg") == 0) {
		ops = dg_cpg_backend_ops();
	} else if (strcmp(backend, "dlm") == 0) {
#ifdef DG_HAVE_DLM_BACKEND
		ops = dg_dlm_backend_ops();
#endif
		if (!ops) {
			if (err && errlen)
				snprintf(err, errlen, "lock backend \"dlm\" is not built into this csvfs "
					 "(needs libdlm at build time and dlm-glue/dlm_backend.c); use backend \"cpg\"");
			dg_logf(cfg, 3, "lock backend \"dlm\" is not built into this csvfs");
			return -EPROTONOSUPPORT;
		}
	} else {
		if (err && errlen)
			snprintf(err, errlen, "unknown lock backend \"%s\" (expected \"cpg\" or \"dlm\")", backend);
		return -EINVAL;
	}
	struct dg_lockspace *ls = NULL;
	int rc = ops->connect(cfg, &ls, err, errlen);
	if (rc < 0)
		return rc;
	ls->ops = ops;
	*out = ls;
	return 0;
}

void dg_disconnect(struct dg_lockspace *ls)
{
	if (ls)
		ls->ops->disconnect(ls);
}

uint32_t dg_this_node(struct dg_lockspace *ls)
{
	return ls ? ls->ops->this_node(ls) : 0;
}

int dg_holders(struct dg_lockspace *ls, const char *name, struct dg_holder *out, size_t max)
{
	if (!ls || !name)
		return -EINVAL;
	return ls->ops->holders ? ls->ops->holders(ls, name, out, max) : -EOPNOTSUPP;
}

unsigned dg_release_bound_ms(struct dg_lockspace *ls)
{
	return ls && ls->ops->release_bound_ms ? ls->ops->release_bound_ms(ls) : 0;
}

int dg_members(struct dg_lockspace *ls, struct dg_member *out, size_t max, int *quorate)
{
	if (!ls)
		return -EINVAL;
	return ls->ops->members(ls, out, max, quorate);
}

int dg_lock(struct dg_lockspace *ls, const char *name, enum dg_mode mode, unsigned flags,
	    dg_ast_fn ast, dg_bast_fn bast, void *arg, struct dg_lock **out)
{
	if (!ls || !name || !out || (unsigned)mode > DG_EX)
		return -EINVAL;
	size_t len = strnlen(name, DG_RESOURCE_MAX);
	if (len == 0 || len >= DG_RESOURCE_MAX)
		return -ENAMETOOLONG;
	return ls->ops->lock(ls, name, mode, flags & ~DG_CONVERT, ast, bast, arg, out);
}

int dg_convert(struct dg_lock *lk, enum dg_mode mode, unsigned flags, const uint8_t *lvb)
{
	if (!lk || (unsigned)mode > DG_EX)
		return -EINVAL;
	return lk->ls->ops->convert(lk, mode, flags | DG_CONVERT, lvb);
}

int dg_unlock(struct dg_lock *lk, unsigned flags, const uint8_t *lvb)
{
	if (!lk)
		return -EINVAL;
	return lk->ls->ops->unlock(lk, flags, lvb);
}

int dg_cancel(struct dg_lock *lk)
{
	if (!lk)
		return -EINVAL;
	return lk->ls->ops->cancel(lk);
}

/* ---- dg_lock_wait ----------------------------------------------------------
 * The waiter is shared by the waiting thread and the handle (whose ast keeps
 * pointing at it after the wait); whichever lets go last frees it. */

struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int refs;
	int done;
	int status;
	enum dg_mode granted;
	uint8_t lvb[DG_LVB_LEN];
	int have_lvb;
};

static void waiter_put(struct waiter *w)
{
	pthread_mutex_lock(&w->mu);
	int left = --w->refs;
	pthread_mutex_unlock(&w->mu);
	if (left == 0) {
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->cv);
		free(w);
	}
}

static void wait_ast(void *arg, int status, enum dg_mode granted, const uint8_t *lvb)
{
	struct waiter *w = arg;
	pthread_mutex_lock(&w->mu);
	if (!w->done) {
		w->done = 1;
		w->status = status;
		w->granted = granted;
		if (lvb) {
			memcpy(w->lvb, lvb, DG_LVB_LEN);
			w->have_lvb = 1;
		}
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
}

void dg_lock_init(struct dg_lock *lk, struct dg_lockspace *ls, dg_ast_fn ast, dg_bast_fn bast, void *arg)
{
	lk->ls = ls;
	lk->wait_ctx = ast == wait_ast ? arg : NULL;
	lk->ast = ast;
	lk->bast = bast;
	lk->arg = arg;
}

void dg_lock_base_release(struct dg_lock *lk)
{
	if (lk && lk->wait_ctx) {
		struct waiter *w = lk->wait_ctx;
		lk->wait_ctx = NULL;
		waiter_put(w);
	}
}

static int wait_done(struct waiter *w, const struct timespec *deadline)
{
	pthread_mutex_lock(&w->mu);
	int rc = 0;
	while (!w->done && rc == 0)
		rc = pthread_cond_timedwait(&w->cv, &w->mu, deadline);
	int done = w->done;
	pthread_mutex_unlock(&w->mu);
	return done;
}

static struct timespec deadline_in(unsigned ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

int dg_lock_wait(struct dg_lockspace *ls, const char *name, enum dg_mode mode, unsigned flags,
		 unsigned timeout_ms, uint8_t lvb_out[DG_LVB_LEN], struct dg_lock **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	struct waiter *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->refs = 2; /* this thread + the handle */
	struct dg_lock *lk = NULL;
	int rc = dg_lock(ls, name, mode, flags, wait_ast, NULL, w, &lk);
	if (rc < 0) {
		w->refs = 1;
		waiter_put(w);
		return rc;
	}
	/* The handle may already be gone (a failed request is freed once its
	 * ast returns); the backend stored the waiter in it (dg_lock_init)
	 * before any ast could run, so the handle's reference is accounted. */
	struct timespec dl = deadline_in(timeout_ms);
	if (!wait_done(w, &dl)) {
		dg_cancel(lk);
		struct timespec dl2 = deadline_in(10000);
		if (!wait_done(w, &dl2)) {
			/* No answer at all: leave the handle (and the waiter it
			 * owns) to the lockspace; report the timeout. */
			waiter_put(w);
			return -ETIMEDOUT;
		}
		pthread_mutex_lock(&w->mu);
		int st = w->status;
		pthread_mutex_unlock(&w->mu);
		if (st == 0) {
			/* Granted just before the cancel arrived: keep it. */
		} else {
			waiter_put(w);
			return st == -ECANCELED ? -ETIMEDOUT : st;
		}
	}
	pthread_mutex_lock(&w->mu);
	int status = w->status;
	if (status == 0 && lvb_out && w->have_lvb)
		memcpy(lvb_out, w->lvb, DG_LVB_LEN);
	else if (status == 0 && lvb_out)
		memset(lvb_out, 0, DG_LVB_LEN);
	pthread_mutex_unlock(&w->mu);
	if (status == 0)
		*out = lk;
	waiter_put(w);
	return status;
}
