/* Cluster mode: the lock types, in one table, and the plumbing every lock
 * of this module goes through (docs/cluster.md, "Lock types").
 *
 * Modelled on OCFS2's dlmglue: each row says how a kind of lock is named,
 * which modes it is taken in, what its completion does, what a blocking
 * callback makes this node drop, and what losing it does (-ENOTCONN: the
 * lineage it lived in was superseded after a partition). A lock's callback
 * argument is its lock resource (struct cl_lockres), which names the row and
 * the cluster, so a callback needs nothing process-wide to find either. The
 * file locks to come are rows here. */
#include "fs/cluster_internal.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODE(m) (1u << (m))

static const struct cl_lock_type lock_types[CL_LOCK_KINDS] = {
	/* The role: EX while this node is the coordinator. Nobody is asked to
	 * give it up (the others try NOQUEUE); a departed holder keeps it
	 * until fenced. Lost: the LUN gate closes at once. */
	[CL_LOCK_COORD] = {
		.name = "coord", .modes = MODE(DG_EX),
		.ast = held_ast, .bast = NULL, .lost = role_coord_lost,
	},
	/* Who the coordinator is, in the value block: NL kept by everyone, PR
	 * to read, EX to write; both are converted back to NL at once, so no
	 * blocking callback is needed. Lost: the cluster thread takes it anew. */
	[CL_LOCK_COORDINFO] = {
		.name = "coordinfo", .modes = MODE(DG_NL) | MODE(DG_PR) | MODE(DG_EX),
		.ast = held_ast, .bast = NULL, .lost = NULL,
	},
	/* L<ino>: PR while a participant caches written mappings of ino; EX by
	 * the coordinator (a recall) before it frees or unwrites blocks. The
	 * blocking callback and loss both queue a recall: in-flight I/O on the
	 * inode finishes, the cached mappings go, the size is stale, unlock. */
	[CL_LOCK_LAYOUT] = {
		.name = "L%u", .modes = MODE(DG_PR) | MODE(DG_EX),
		.ast = layout_ast, .bast = layout_bast, .lost = layout_lost,
	},
	/* The snapshot freeze (docs/snapshot.md): PR kept by every node while
	 * it admits changes; EX by the coordinator for a snapshot. The blocking
	 * callback wakes the freeze thread: hold new changes, drain, make data
	 * durable, unlock; then ask for PR again (granted after the EX). Lost:
	 * the freeze thread takes it anew. */
	[CL_LOCK_FREEZE] = {
		.name = "freeze", .modes = MODE(DG_PR) | MODE(DG_EX),
		.ast = held_ast, .bast = freeze_bast, .lost = NULL,
	},
	/* A<n> (docs/cluster.md, "Attribute caching"), inodes n * 64 ..
	 * n * 64 + 63: PR while a participant's kernel may cache their
	 * attributes (a directory's: its names); EX while the coordinator
	 * changes them, kept until someone asks. The blocking callback and
	 * loss queue a drop: the kernel's copies go (PR), then the lock. */
	[CL_LOCK_ATTR] = {
		.name = "A%u", .modes = MODE(DG_PR) | MODE(DG_EX),
		.ast = attr_ast, .bast = attr_bast, .lost = attr_lost,
	},
};

static const struct cl_lock_type *type_of(const struct cl_lockres *r)
{
	return &lock_types[r->kind];
}

/* ---- lock resources ------------------------------------------------------- */

void lockres_init(struct cl_lockres *r, struct cluster *c, enum cl_lock_kind kind, uint32_t id,
		  uint64_t token)
{
	*r = (struct cl_lockres){ .kind = kind, .c = c, .id = id, .token = token };
}

struct cl_lockres *lockres_new(struct cluster *c, enum cl_lock_kind kind, uint32_t id, uint64_t token)
{
	struct cl_lockres *r = malloc(sizeof(*r));
	if (r)
		lockres_init(r, c, kind, id, token);
	return r;
}

/* dlm-glue skips every callback of a lock once dg_unlock has returned, but
 * one it had started may still be running with r. Callbacks run one at a
 * time on the lockspace's dispatch thread, so r is freed by the next lock
 * callback that starts (lockres_reap), or when the lockspace is gone. If the
 * unlock failed, callbacks may still come: r stays until then. */
void lockres_retire(struct cl_lockres *r, int unlock_rc)
{
	if (!r)
		return;
	struct cluster *c = r->c;
	pthread_mutex_lock(&c->mu);
	struct cl_lockres **list = unlock_rc ? &c->lockres_kept : &c->lockres_retired;
	r->next = *list;
	*list = r;
	pthread_mutex_unlock(&c->mu);
}

static void free_list(struct cl_lockres *r)
{
	while (r) {
		struct cl_lockres *next = r->next;
		free(r);
		r = next;
	}
}

/* Dispatch thread, at the start of a callback of self: no other callback
 * runs, so only self may still be in use. */
static void lockres_reap(struct cl_lockres *self)
{
	struct cluster *c = self->c;
	pthread_mutex_lock(&c->mu);
	struct cl_lockres *list = c->lockres_retired, *keep = NULL, **pp = &list;
	c->lockres_retired = NULL;
	pthread_mutex_unlock(&c->mu);
	while (*pp && *pp != self)
		pp = &(*pp)->next;
	if (*pp) {
		keep = self;
		*pp = self->next;
	}
	free_list(list);
	if (keep)
		lockres_retire(keep, 0);
}

void lockres_free_all(struct cluster *c)
{
	free_list(c->lockres_retired);
	free_list(c->lockres_kept);
	c->lockres_retired = c->lockres_kept = NULL;
}

/* ---- requests, through the table ------------------------------------------ */

static void lock_ast(void *arg, int status, enum dg_mode granted, const uint8_t *lvb)
{
	(void)granted;
	struct cl_lockres *r = arg;
	lockres_reap(r);
	type_of(r)->ast(r, status, lvb);
}

static void lock_bast(void *arg, enum dg_mode blocking)
{
	struct cl_lockres *r = arg;
	lockres_reap(r);
	type_of(r)->bast(r, blocking);
}

static int mode_ok(enum cl_lock_kind kind, enum dg_mode mode)
{
	if (lock_types[kind].modes & MODE(mode))
		return 1;
	csvfs_log(LOG_ERR_L, "lock %s is never taken in mode %d", lock_types[kind].name, mode);
	return 0;
}

int cl_lock(struct cl_lockres *r, enum dg_mode mode, unsigned flags, struct dg_lock **out)
{
	if (!mode_ok(r->kind, mode))
		return -EINVAL;
	char name[DG_RESOURCE_MAX];
	snprintf(name, sizeof(name), type_of(r)->name, r->id);
	return dg_lock(r->c->ls, name, mode, flags, lock_ast, type_of(r)->bast ? lock_bast : NULL, r,
		       out);
}

int cl_lock_wait(struct cluster *c, enum cl_lock_kind kind, uint32_t id, enum dg_mode mode,
		 struct dg_lock **out)
{
	if (!mode_ok(kind, mode))
		return -EINVAL;
	char name[DG_RESOURCE_MAX];
	snprintf(name, sizeof(name), lock_types[kind].name, id);
	return dg_lock_wait(c->ls, name, mode, 0, c->lock_wait_ms, NULL, out);
}

static int cl_convert(struct cl_lockres *r, struct dg_lock *lk, enum dg_mode mode, unsigned flags,
		      const uint8_t *lvb)
{
	return mode_ok(r->kind, mode) ? dg_convert(lk, mode, flags, lvb) : -EINVAL;
}

void cl_lock_lost(struct cl_lockres *r)
{
	if (type_of(r)->lost)
		type_of(r)->lost(r);
}

static const char *mode_name(enum dg_mode m)
{
	static const char *const names[] = { "NL", "CR", "CW", "PR", "PW", "EX" };
	return (unsigned)m < sizeof(names) / sizeof(names[0]) ? names[m] : "?";
}

void cl_warn_slow_lock(struct cluster *c, enum cl_lock_kind kind, uint32_t id, enum dg_mode mode,
		       const char *what, uint64_t waited_ms)
{
	char name[DG_RESOURCE_MAX], who[256] = "";
	snprintf(name, sizeof(name), lock_types[kind].name, id);
	struct dg_holder h[8];
	int n = dg_holders(c->ls, name, h, sizeof(h) / sizeof(h[0]));
	size_t len = 0;
	uint32_t self = dg_this_node(c->ls);
	for (int i = 0; i < n && i < (int)(sizeof(h) / sizeof(h[0])) && len < sizeof(who); i++) {
		int k = snprintf(who + len, sizeof(who) - len, "%snode id %u%s %s%s%s", i ? ", " : "", h[i].nodeid,
				 h[i].nodeid == self ? " (this node)" : "", mode_name(h[i].granted),
				 h[i].notified ? " asked to release" : " not asked yet",
				 h[i].departed ? ", departed" : "");
		len = k < 0 ? sizeof(who) : len + (size_t)k;
	}
	if (n > (int)(sizeof(h) / sizeof(h[0])) && len < sizeof(who))
		snprintf(who + len, sizeof(who) - len, " and %d more", n - (int)(sizeof(h) / sizeof(h[0])));
	if (n < 0)
		snprintf(who, sizeof(who), "unknown (%s)", strerror(-n));
	else if (n == 0)
		snprintf(who, sizeof(who), "nobody (granted since, or not seen yet)");
	csvfs_log(LOG_WARN_L, "lock %s: %s has waited %llu ms for %s; held by %s", name, what,
		  (unsigned long long)waited_ms, mode_name(mode), who);
}

/* ---- held locks: a thread waits for the grant ------------------------------ */

static struct held_lock *held_of(struct cl_lockres *r)
{
	return (struct held_lock *)((char *)r - offsetof(struct held_lock, res));
}

void held_ast(struct cl_lockres *r, int status, const uint8_t *lvb)
{
	struct held_lock *h = held_of(r);
	pthread_mutex_lock(&h->mu);
	if (h->pending) {
		h->pending = 0;
		h->status = status;
		if (lvb)
			memcpy(h->lvb, lvb, DG_LVB_LEN);
		else
			memset(h->lvb, 0, DG_LVB_LEN);
	}
	if (status == -ENOTCONN)
		h->lost = 1;   /* the lineage it lived in is gone, pending or not */
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	if (status == -ENOTCONN) {
		cl_lock_lost(r);
		cl_poke(r->c);
	}
}

void held_init(struct held_lock *h, struct cluster *c, enum cl_lock_kind kind)
{
	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	lockres_init(&h->res, c, kind, 0, 0);
}

/* Waits for h's pending request until deadline_ms (cl_now_ms clock) or
 * until stop(arg) says so (polled every 100 ms); then cancels it. A request
 * granted while being cancelled counts as granted. */
int held_wait_until(struct held_lock *h, uint64_t deadline_ms, int (*stop)(void *), void *arg)
{
	pthread_mutex_lock(&h->mu);
	while (h->pending && cl_now_ms() < deadline_ms && !(stop && stop(arg))) {
		uint64_t left = deadline_ms - cl_now_ms();
		struct timespec dl = cl_deadline_in(left > 100 ? 100 : (unsigned)left + 1);
		pthread_cond_timedwait(&h->cv, &h->mu, &dl);
	}
	int rc = h->pending ? -ETIMEDOUT : h->status;
	pthread_mutex_unlock(&h->mu);
	if (rc == -ETIMEDOUT) {
		dg_cancel(h->lk);
		struct timespec dl = cl_deadline_in(10000);
		pthread_mutex_lock(&h->mu);
		while (h->pending && pthread_cond_timedwait(&h->cv, &h->mu, &dl) == 0)
			;
		rc = h->pending ? -ETIMEDOUT : (h->status == -ECANCELED ? -ETIMEDOUT : h->status);
		pthread_mutex_unlock(&h->mu);
	}
	return rc;
}

static int held_wait(struct held_lock *h)
{
	return held_wait_until(h, cl_now_ms() + h->res.c->lock_wait_ms, NULL, NULL);
}

int held_request(struct held_lock *h, enum dg_mode mode, unsigned flags)
{
	pthread_mutex_lock(&h->mu);
	h->pending = 1;
	h->lost = 0;
	pthread_mutex_unlock(&h->mu);
	int rc = cl_lock(&h->res, mode, flags, &h->lk);
	if (rc) {
		pthread_mutex_lock(&h->mu);
		h->pending = 0;   /* nothing is waiting for an answer */
		h->status = rc;
		pthread_mutex_unlock(&h->mu);
		h->lk = NULL;
	}
	return rc;
}

int held_lock(struct held_lock *h, enum dg_mode mode, unsigned flags)
{
	int rc = held_request(h, mode, flags);
	if (rc == 0)
		rc = held_wait(h);
	if (rc)
		h->lk = NULL;   /* a failed request's handle is freed by dlm-glue */
	return rc;
}

int held_convert(struct held_lock *h, enum dg_mode mode, unsigned flags, const uint8_t *lvb)
{
	pthread_mutex_lock(&h->mu);
	h->pending = 1;
	pthread_mutex_unlock(&h->mu);
	int rc = cl_convert(&h->res, h->lk, mode, flags, lvb);
	return rc ? rc : held_wait(h);
}

void held_unlock(struct held_lock *h, unsigned flags, const uint8_t *lvb)
{
	if (h->lk)
		dg_unlock(h->lk, flags, lvb);
	h->lk = NULL;
}

int held_lost(struct held_lock *h)
{
	pthread_mutex_lock(&h->mu);
	int lost = h->lost;
	pthread_mutex_unlock(&h->mu);
	return lost;
}
