/* The written ranges a node committed that may not be durable yet (m->pend,
 * fs/meta.h), kept so that they can be committed again to a new coordinator:
 *
 *   - a participant's, committed to the coordinator (OP_COMMIT is not
 *     durable by itself), until an fsync there (fs/ops_remote.c);
 *   - the coordinator's own, committed to its engine, until the journal
 *     transaction that holds them is durable (fs/ops_local.c). A coordinator
 *     whose path fails gives up its role with its engine unwritten
 *     (fs/cluster_role.c): as a participant it commits these again to its
 *     successor, so its applications lose nothing they wrote.
 *
 * Every list is under m->map_lock. */
#include "fs/meta.h"

#include <stdlib.h>

void minode_pend_add(struct minode *m, uint64_t lblk, uint64_t len, uint64_t size,
		     uint32_t epoch, uint64_t txn)
{
	pthread_mutex_lock(&m->map_lock);
	struct pending_commit *last = m->npend ? &m->pend[m->npend - 1] : NULL;
	/* A size alone (an overwrite past EOF): one entry of its own, len 0,
	 * which a punch does not remove (fs/ops_remote.c, pending_forget). */
	int same_kind = last && (last->len == 0) == (len == 0);
	if (same_kind && last->epoch == epoch && (len == 0 || last->lblk + last->len == lblk)) {
		last->len += len;
		if (size > last->size)
			last->size = size;
		if (txn > last->txn)
			last->txn = txn;   /* durable once the later one is */
	} else {
		if (m->npend == m->pend_cap) {
			unsigned cap = m->pend_cap ? 2 * m->pend_cap : 8;
			struct pending_commit *p = realloc(m->pend, cap * sizeof(*p));
			if (p) {
				m->pend = p;
				m->pend_cap = cap;
			}
		}
		if (m->npend < m->pend_cap)
			m->pend[m->npend++] = (struct pending_commit){ lblk, len, size, epoch, txn };
	}
	pthread_mutex_unlock(&m->map_lock);
}

unsigned minode_pend_count(struct minode *m)
{
	pthread_mutex_lock(&m->map_lock);
	unsigned n = m->npend;
	pthread_mutex_unlock(&m->map_lock);
	return n;
}

void minode_pend_clear_epoch(struct minode *m, uint32_t epoch)
{
	pthread_mutex_lock(&m->map_lock);
	unsigned keep = 0;
	for (unsigned i = 0; i < m->npend; i++)
		if (m->pend[i].epoch != epoch)
			m->pend[keep++] = m->pend[i];
	m->npend = keep;
	pthread_mutex_unlock(&m->map_lock);
}

/* A change made now goes into the transaction after the last one taken
 * (volume_sync takes one under v->lock, so none is taken in between). */
uint64_t volume_txn_open(struct volume *v)
{
	pthread_mutex_lock(&v->lock);
	uint64_t txn = v->sync_prepared + 1;
	pthread_mutex_unlock(&v->lock);
	return txn;
}

void minode_pend_prune(struct volume *v, struct minode *m, int all)
{
	pthread_mutex_lock(&v->lock);
	uint64_t durable = v->sync_ok_upto;   /* transactions finish in order */
	pthread_mutex_unlock(&v->lock);
	pthread_mutex_lock(&m->map_lock);
	unsigned keep = 0;
	for (unsigned i = 0; i < m->npend; i++)
		if (!m->pend[i].txn || (!all && m->pend[i].txn > durable))
			m->pend[keep++] = m->pend[i];
	m->npend = keep;
	pthread_mutex_unlock(&m->map_lock);
}
