/* dlm-glue internal: the interface every lock backend implements, and the
 * small pieces of state the dispatcher (dlmglue.c) shares with them.
 *
 * A backend embeds `struct dg_lockspace` as the first member of its own
 * lockspace and `struct dg_lock` as the first member of its lock handle, so
 * the public handles convert to the backend's by a cast. */
#ifndef CSVFS_DLMGLUE_BACKEND_H
#define CSVFS_DLMGLUE_BACKEND_H

#include "dlm-glue/dlmglue.h"

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
};

struct dg_lockspace {
	const struct dg_backend_ops *ops;
};

/* dg_lock_wait parks a waiter on the handle: the backend calls
 * dg_lock_base_release() when it frees a handle so the waiter is released
 * too. */
struct dg_lock {
	struct dg_lockspace *ls;
	void *wait_ctx;
};

void dg_lock_base_release(struct dg_lock *lk);
/* For the backends' lock(): the value to store in the new handle's wait_ctx
 * (under the backend's lock, before any ast can run): the waiter when the
 * request comes from dg_lock_wait, else NULL. */
void *dg_wait_ctx_for(dg_ast_fn ast, void *arg);

/* Logging shared by the backends: one line per call, no trailing newline. */
void dg_logf(const struct dg_config *cfg, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The cpg backend (cpg_backend.c), always built. */
const struct dg_backend_ops *dg_cpg_backend_ops(void);
/* The dlm backend is not part of this file: its engineer adds
 * dlm-glue/dlm_backend.h declaring
 *     const struct dg_backend_ops *dg_dlm_backend_ops(void);
 * and dlm-glue/dlm_backend.c defining it (compiled when the Makefile found
 * libdlm, CSVFS_HAVE_LIBDLM). dlmglue.c calls it only when both the macro and
 * that header exist (__has_include), so the library links without it and
 * dg_connect refuses backend "dlm" with a clear message. */

#endif
