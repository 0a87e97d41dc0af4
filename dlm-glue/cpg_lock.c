/* cpg backend, lock operations: the table of this process's handles (by
 * lockid), dg_lock/dg_convert/dg_unlock/dg_cancel sent as state machine
 * requests, and what their effects mean for a handle. docs/locking.md §9. */
#include "dlm-glue/cpg_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t bucket_of(uint64_t lockid)
{
	return (size_t)((lockid * 0x9e3779b97f4a7c15ull) >> 52) & (LOCK_BUCKETS - 1);
}

static struct cpg_lock *lock_find(struct cpg_ls *ls, uint64_t lockid)
{
	for (struct cpg_lock *l = ls->buckets[bucket_of(lockid)]; l; l = l->hnext)
		if (l->lockid == lockid)
			return l;
	return NULL;
}

static void lock_insert(struct cpg_ls *ls, struct cpg_lock *lk)
{
	size_t b = bucket_of(lk->lockid);
	lk->hnext = ls->buckets[b];
	ls->buckets[b] = lk;
	ls->nlocks++;
}

static void lock_remove(struct cpg_ls *ls, struct cpg_lock *lk)
{
	struct cpg_lock **pp = &ls->buckets[bucket_of(lk->lockid)];
	while (*pp && *pp != lk)
		pp = &(*pp)->hnext;
	if (*pp) {
		*pp = lk->hnext;
		ls->nlocks--;
	}
}

static void queue_free(struct cpg_ls *ls, struct cpg_lock *lk)
{
	if (!lk->base.freeing)
		dg_cb_free(&ls->cbq, &lk->base);
}

void cpgb_forget_lock(void *owner, struct dg_lock *lk)
{
	lock_remove(owner, (struct cpg_lock *)lk);
}

/* Every handle loses its lock: the lineage it lived in is gone. */
void cpgb_orphan_all(struct cpg_ls *ls, const char *why)
{
	size_t n = 0;
	for (size_t b = 0; b < LOCK_BUCKETS; b++) {
		for (struct cpg_lock *lk = ls->buckets[b]; lk; lk = lk->hnext) {
			if (lk->base.dead)
				continue;
			lk->base.dead = true;
			n++;
			if (lk->base.unlocking)
				queue_free(ls, lk);
			else
				dg_cb_ast(&ls->cbq, &lk->base, -ENOTCONN, lk->granted, NULL);
			lk->req_tag = lk->unlock_tag = lk->cancel_tag = 0;
			lk->granted = LS_MODE_NONE;
		}
	}
	if (n)
		LOG(ls, 4, "%zu lock(s) lost: %s", n, why);
}

static int errno_of_failure(uint8_t failure)
{
	switch (failure) {
	case LS_FAIL_WOULDBLOCK: return -EAGAIN;
	case LS_FAIL_DEADLOCK: return -EDEADLK;
	case LS_FAIL_UNKNOWN_LOCK: return -ENOENT;
	case LS_FAIL_EXISTS: return -EEXIST;
	case LS_FAIL_BUSY: return -EBUSY;
	case LS_FAIL_NOT_WAITING: return -EALREADY;
	case LS_FAIL_NOSPC: return -ENOSPC;
	default: return -EIO;
	}
}

void cpgb_own_effect(struct cpg_ls *ls, const struct ls_effect *e)
{
	struct cpg_lock *lk = lock_find(ls, e->lockid);
	if (!lk || lk->base.dead)
		return;
	switch (e->kind) {
	case LS_EFFECT_GRANT: {
		lk->granted = e->mode;
		lk->req_tag = 0;
		const uint8_t *lvb = NULL;
		if (e->flags & LS_EF_LVB) {
			if (e->flags & LS_EF_LVB_INVALID) {
				LOG(ls, 5, "lock %s: value block invalid (a PW/EX holder was fenced)", lk->name);
				memset(lk->lvb, 0, DG_LVB_LEN);
			} else {
				memcpy(lk->lvb, e->lvb, DG_LVB_LEN);
				lvb = lk->lvb;
			}
		}
		dg_cb_ast(&ls->cbq, &lk->base, 0, e->mode, lvb);
		break;
	}
	case LS_EFFECT_QUEUED:
		if (e->flags & LS_EF_NOT_QUORATE)
			LOG(ls, 6, "lock %s: %s waits for quorum", lk->name, ls_mode_name(e->mode));
		break;
	case LS_EFFECT_BLOCKING:
		dg_cb_bast(&ls->cbq, &lk->base, e->mode);
		break;
	case LS_EFFECT_FAILED: {
		int err = errno_of_failure(e->failure);
		if (e->tag && e->tag == lk->unlock_tag) {
			queue_free(ls, lk);
		} else if (e->tag && e->tag == lk->cancel_tag) {
			lk->cancel_tag = 0; /* nothing was pending any more */
		} else if (e->tag && e->tag == lk->req_tag) {
			lk->req_tag = 0;
			if (e->mode == LS_MODE_NONE) {
				/* a new request that never existed: the handle dies */
				dg_cb_ast(&ls->cbq, &lk->base, err, DG_NL, NULL);
				queue_free(ls, lk);
			} else {
				lk->granted = e->mode;
				dg_cb_ast(&ls->cbq, &lk->base, err, e->mode, NULL);
			}
		}
		break;
	}
	case LS_EFFECT_CANCELED:
		lk->cancel_tag = 0;
		lk->req_tag = 0;
		if (e->mode == LS_MODE_NONE) {
			dg_cb_ast(&ls->cbq, &lk->base, -ECANCELED, DG_NL, NULL);
			queue_free(ls, lk);
		} else {
			lk->granted = e->mode;
			dg_cb_ast(&ls->cbq, &lk->base, -ECANCELED, e->mode, NULL);
		}
		break;
	case LS_EFFECT_UNLOCKED:
		queue_free(ls, lk);
		break;
	default:
		break;
	}
}

static uint8_t ls_flags_of(unsigned flags)
{
	return (uint8_t)((flags & DG_NOQUEUE ? LS_LKF_NOQUEUE : 0) | (flags & DG_VALBLK ? LS_LKF_VALBLK : 0));
}

int cpgb_lock(struct dg_lockspace *p, const char *name, enum dg_mode mode, unsigned flags,
	      dg_ast_fn ast, dg_bast_fn bast, void *arg, struct dg_lock **out)
{
	struct cpg_ls *ls = cpgb_impl(p);
	if (flags & ~(DG_NOQUEUE | DG_VALBLK))
		return -EINVAL;
	struct cpg_lock *lk = calloc(1, sizeof(*lk));
	if (!lk)
		return -ENOMEM;
	snprintf(lk->name, sizeof(lk->name), "%s", name);
	dg_lock_init(&lk->base, p, ast, bast, arg);
	lk->flags = flags & DG_VALBLK;
	lk->granted = LS_MODE_NONE;
	pthread_mutex_lock(&ls->mu);
	if (ls->state != ST_SYNCED) {
		pthread_mutex_unlock(&ls->mu);
		free(lk);
		return -ENOTCONN;
	}
	lk->lockid = ++ls->next_lockid;
	struct ls_msg msg;
	memset(&msg, 0, sizeof(msg));
	msg.type = LS_MSG_LOCK;
	msg.mode = (uint8_t)mode;
	msg.flags = ls_flags_of(flags);
	msg.lockid = lk->lockid;
	msg.name_len = (uint8_t)strlen(name);
	memcpy(msg.name, name, msg.name_len);
	int rc = cpgb_send_ls(ls, &msg);
	if (rc < 0) {
		pthread_mutex_unlock(&ls->mu);
		free(lk);
		return rc;
	}
	lk->req_tag = msg.tag;
	lock_insert(ls, lk);
	*out = &lk->base;
	pthread_mutex_unlock(&ls->mu);
	return 0;
}

int cpgb_convert(struct dg_lock *plk, enum dg_mode mode, unsigned flags, const uint8_t *lvb)
{
	struct cpg_lock *lk = (struct cpg_lock *)plk;
	struct cpg_ls *ls = cpgb_impl(plk->ls);
	flags &= ~DG_CONVERT;
	if (flags & ~(DG_NOQUEUE | DG_VALBLK))
		return -EINVAL;
	pthread_mutex_lock(&ls->mu);
	int rc = 0;
	if (lk->base.dead || ls->state != ST_SYNCED)
		rc = -ENOTCONN;
	else if (lk->base.unlocking || lk->base.freeing)
		rc = -EINVAL;
	else if (lk->req_tag || lk->granted == LS_MODE_NONE)
		rc = -EBUSY;
	if (rc == 0) {
		struct ls_msg msg;
		memset(&msg, 0, sizeof(msg));
		msg.type = LS_MSG_CONVERT;
		msg.mode = (uint8_t)mode;
		msg.flags = ls_flags_of(flags | lk->flags);
		if (lvb)
			memcpy(lk->lvb, lvb, DG_LVB_LEN);
		memcpy(msg.lvb, lk->lvb, LS_LVB_LEN);
		msg.lockid = lk->lockid;
		rc = cpgb_send_ls(ls, &msg);
		if (rc == 0)
			lk->req_tag = msg.tag;
	}
	pthread_mutex_unlock(&ls->mu);
	return rc;
}

int cpgb_unlock(struct dg_lock *plk, unsigned flags, const uint8_t *lvb)
{
	struct cpg_lock *lk = (struct cpg_lock *)plk;
	struct cpg_ls *ls = cpgb_impl(plk->ls);
	pthread_mutex_lock(&ls->mu);
	int rc = 0;
	if (lk->base.unlocking || lk->base.freeing) {
		rc = -EINVAL;
	} else if (lk->base.dead || ls->state != ST_SYNCED) {
		/* nothing to release any more: free the handle (on the
		 * dispatch thread, after any callback already queued) */
		lk->base.unlocking = true;
		lk->base.dead = true;
		queue_free(ls, lk);
		cpgb_wake(ls);
	} else {
		struct ls_msg msg;
		memset(&msg, 0, sizeof(msg));
		msg.type = LS_MSG_UNLOCK;
		msg.flags = ls_flags_of((flags | lk->flags) & DG_VALBLK);
		if (lvb)
			memcpy(lk->lvb, lvb, DG_LVB_LEN);
		memcpy(msg.lvb, lk->lvb, LS_LVB_LEN);
		msg.lockid = lk->lockid;
		rc = cpgb_send_ls(ls, &msg);
		if (rc == 0) {
			lk->base.unlocking = true;
			lk->unlock_tag = msg.tag;
		}
	}
	pthread_mutex_unlock(&ls->mu);
	return rc;
}

int cpgb_cancel(struct dg_lock *plk)
{
	struct cpg_lock *lk = (struct cpg_lock *)plk;
	struct cpg_ls *ls = cpgb_impl(plk->ls);
	pthread_mutex_lock(&ls->mu);
	int rc = 0;
	if (lk->base.dead || ls->state != ST_SYNCED)
		rc = -ENOTCONN;
	else if (lk->base.unlocking || lk->base.freeing || !lk->req_tag)
		rc = -EINVAL;
	else if (!lk->cancel_tag) {
		struct ls_msg msg;
		memset(&msg, 0, sizeof(msg));
		msg.type = LS_MSG_CANCEL;
		msg.lockid = lk->lockid;
		rc = cpgb_send_ls(ls, &msg);
		if (rc == 0)
			lk->cancel_tag = msg.tag;
	}
	pthread_mutex_unlock(&ls->mu);
	return rc;
}
