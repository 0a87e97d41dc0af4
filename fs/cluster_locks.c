/* Cluster mode: waiting on the locks this module holds for a long time
 * ("coord", "coordinfo"). docs/cluster.md; the lock types are listed in
 * fs/cluster_internal.h. */
#include "fs/cluster_internal.h"

#include <errno.h>
#include <string.h>

static void held_ast(void *arg, int status, enum dg_mode granted, const uint8_t *lvb)
{
	(void)granted;
	struct held_lock *h = arg;
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
	/* A coordinator whose role lock is gone may not write one more block:
	 * another node owns the volume now (role_lose drops the engine). */
	if (status == -ENOTCONN && h == &h->c->coord && atomic_load(&h->c->role) == CL_COORDINATOR)
		journal_gate_set(JOURNAL_GATE_CLOSED);
	if (status == -ENOTCONN)
		cl_poke(h->c);
}

void held_init(struct held_lock *h, struct cluster *c)
{
	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	h->c = c;
}

static int held_wait(struct held_lock *h)
{
	struct timespec dl = cl_deadline_in(LOCK_TIMEOUT_MS);
	pthread_mutex_lock(&h->mu);
	while (h->pending && pthread_cond_timedwait(&h->cv, &h->mu, &dl) == 0)
		;
	int rc = h->pending ? -ETIMEDOUT : h->status;
	pthread_mutex_unlock(&h->mu);
	if (rc == -ETIMEDOUT) {
		dg_cancel(h->lk);
		dl = cl_deadline_in(10000);
		pthread_mutex_lock(&h->mu);
		while (h->pending && pthread_cond_timedwait(&h->cv, &h->mu, &dl) == 0)
			;
		rc = h->pending ? -ETIMEDOUT : (h->status == -ECANCELED ? -ETIMEDOUT : h->status);
		pthread_mutex_unlock(&h->mu);
	}
	return rc;
}

int held_lock(struct held_lock *h, struct dg_lockspace *ls, const char *name,
		     enum dg_mode mode, unsigned flags)
{
	pthread_mutex_lock(&h->mu);
	h->pending = 1;
	h->lost = 0;
	pthread_mutex_unlock(&h->mu);
	int rc = dg_lock(ls, name, mode, flags, held_ast, NULL, h, &h->lk);
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
	int rc = dg_convert(h->lk, mode, flags, lvb);
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
