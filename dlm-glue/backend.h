/* dlm-glue internal: what the core (dlmglue.c, callbacks.c) and the lock
 * backends share. Nothing outside dlm-glue/ includes this header; the public
 * interface is dlmglue.h.
 *
 * Layers, top to bottom:
 *   dlmglue.c     the public dg_* calls: picks a backend by name, checks
 *                 arguments, forwards through struct dg_backend_ops; builds
 *                 dg_lock_wait on dg_lock; dg_logf, dg_now_ms.
 *   callbacks.c   the callback queue both backends use (struct dg_cbq):
 *                 asts, basts, membership and recovery callbacks are queued
 *                 under the backend's mutex and run on its dispatch thread
 *                 without it.
 *   cpg_*.c       the "cpg" backend (cpg_internal.h), always built.
 *   dlm_backend.c the "dlm" backend (dlm_backend.h), built with libdlm.
 *   lockstate.c   the replicated lock state machine the cpg backend drives.
 *
 * A backend embeds `struct dg_lockspace` as the first member of its own
 * lockspace and `struct dg_lock` as the first member of its lock handle, so
 * the public handles convert to the backend's by a cast. */
#ifndef CSVFS_DLMGLUE_BACKEND_H
#define CSVFS_DLMGLUE_BACKEND_H

#include "dlm-glue/dlmglue.h"

#include <pthread.h>
#include <stdbool.h>

/* ---- the backend interface (one table per cluster stack) ----------------- */

struct dg_backend_ops {
	const char *name;
	int (*connect)(const struct dg_config *cfg, struct dg_lockspace **out, char *err, size_t errlen);
	void (*disconnect)(struct dg_lockspace *ls);
	uint32_t (*this_node)(struct dg_lockspace *ls);
	int (*members)(struct dg_lockspace *ls, struct dg_member *out, size_t max, int *quorate);
	int (*lock)(struct dg_lockspace *ls, const char *name, enum dg_mode mode, unsigned flags,
		    dg_ast_fn ast, dg_bast_fn bast, void *arg, struct dg_lock **out);
	int (*convert)(struct dg_lock *lk, enum dg_mode mode, unsigned flags, const uint8_t *lvb);
	int (*unlock)(struct dg_lock *lk, unsigned flags, const uint8_t *lvb);
	int (*cancel)(struct dg_lock *lk);
	unsigned (*release_bound_ms)(struct dg_lockspace *ls);
	int (*holders)(struct dg_lockspace *ls, const char *name, struct dg_holder *out, size_t max);
};

/* The cpg backend (cpg_backend.c), always built. */
const struct dg_backend_ops *dg_cpg_backend_ops(void);
/* The dlm backend is declared in dlm_backend.h and defined in dlm_backend.c
 * when the Makefile found libdlm (CSVFS_HAVE_LIBDLM); without it dg_connect
 * refuses backend "dlm" with a clear message. */

struct dg_lockspace {
	const struct dg_backend_ops *ops;
};

/* ---- the lock handle's common part (dlmglue.c) --------------------------- */

/* The backend fills it in with dg_lock_init in its lock(); the flags are
 * read and written under the backend's mutex. */
struct dg_lock {
	struct dg_lockspace *ls;
	void *wait_ctx;          /* the dg_lock_wait waiter, or NULL */
	dg_ast_fn ast;
	dg_bast_fn bast;
	void *arg;
	bool unlocking;          /* dg_unlock called: no more callbacks */
	bool dead;               /* the lockspace lost it */
	bool freeing;            /* a DG_CB_FREE is queued */
};

/* Sets up a new handle: its lockspace, callbacks, and the wait context
 * (the waiter when the request comes from dg_lock_wait: stored before any
 * ast can run). */
void dg_lock_init(struct dg_lock *lk, struct dg_lockspace *ls, dg_ast_fn ast, dg_bast_fn bast, void *arg);
/* dg_lock_wait parks a waiter on the handle: the backend calls this when it
 * frees a handle so the waiter is released too. */
void dg_lock_base_release(struct dg_lock *lk);

/* ---- the callback queue (callbacks.c) ------------------------------------ */

enum dg_cb_kind {
	DG_CB_AST = 1, DG_CB_BAST, DG_CB_FREE, DG_CB_MEMBERSHIP, DG_CB_NODE_DOWN, DG_CB_NODE_FENCED,
	DG_CB_RECOVERY_DONE, DG_CB_QUORUM,
};

struct dg_cb;

/* One per lockspace. `mu` is the backend's mutex: every dg_cb_* call but
 * dg_cb_run and dg_cb_clear is made with it held. `forget` takes a handle out
 * of the backend's table (under mu) just before the queue frees it. */
struct dg_cbq {
	struct dg_cb *head, *tail;
	pthread_mutex_t *mu;
	const struct dg_config *cfg;     /* the application's callbacks; logging */
	void (*forget)(void *owner, struct dg_lock *lk);
	void *owner;
};

void dg_cbq_init(struct dg_cbq *q, pthread_mutex_t *mu, const struct dg_config *cfg,
		 void (*forget)(void *owner, struct dg_lock *lk), void *owner);
/* A membership, recovery or quorum callback (nodeid and status as the kind
 * needs them). */
void dg_cb_event(struct dg_cbq *q, enum dg_cb_kind kind, uint32_t nodeid, int status);
/* The completion of lk's request; a mode out of range (none held) reads as
 * DG_NL. Nothing is queued once lk is unlocking or being freed. */
void dg_cb_ast(struct dg_cbq *q, struct dg_lock *lk, int status, int mode, const uint8_t *lvb);
/* A blocking callback for lk (not once it is unlocking or being freed). */
void dg_cb_bast(struct dg_cbq *q, struct dg_lock *lk, int mode);
/* Frees lk on the dispatch thread after every callback queued before it, so
 * an ast never runs on freed memory. Sets lk->freeing; false when out of
 * memory (nothing queued). */
bool dg_cb_free(struct dg_cbq *q, struct dg_lock *lk);
/* Dispatch thread, without mu: runs the queue until it is empty, or for at
 * most max_rounds rounds of what was queued (0: no limit). */
void dg_cb_run(struct dg_cbq *q, int max_rounds);
/* Drops whatever is still queued (lockspace teardown). */
void dg_cb_clear(struct dg_cbq *q);

/* ---- shared helpers (dlmglue.c) ------------------------------------------ */

/* Logging shared by the backends: one line per call, no trailing newline. */
void dg_logf(const struct dg_config *cfg, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* CLOCK_MONOTONIC in milliseconds. */
int64_t dg_now_ms(void);

#endif
