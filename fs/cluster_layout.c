/* Cluster mode: layout locks ("L<ino>"). A participant holds PR while it
 * caches written mappings of an inode; its recall thread drops them when the
 * coordinator takes EX before a change that frees or unwrites blocks.
 * docs/cluster.md, "Data: layouts, unwritten extents, recalls". */
#include "fs/cluster_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_INO(t) ((ext2_ino_t)((t) >> 32))

static void recall_queue(struct cluster *c, uint64_t token)
{
	struct recall_item *it = calloc(1, sizeof(*it));
	pthread_mutex_lock(&c->mu);
	if (it) {
		it->ino = TOKEN_INO(token);
		it->token = token;
		it->next = c->recalls;
		c->recalls = it;
	}
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (!it)
		csvfs_log(LOG_ERR_L, "inode %u: out of memory queueing a layout recall", TOKEN_INO(token));
}

/* A layout lock's resource carries its request's token: a callback of an
 * older request of the same inode finds another token there and does nothing. */
void layout_ast(struct cl_lockres *r, int status, const uint8_t *lvb)
{
	(void)lvb;
	struct cluster *c = r->c;
	struct minode *m = minode_find(c->v, TOKEN_INO(r->token));
	if (!m)
		return;
	int lost = 0;
	pthread_mutex_lock(&m->map_lock);
	if (m->layout_token == r->token) {
		if (m->layout_state == LAYOUT_WAITING)
			m->layout_state = status == 0 ? LAYOUT_GRANTED : LAYOUT_FAILED;
		else if (status == -ENOTCONN)
			lost = 1;   /* our lineage is gone: so is the lock */
	}
	pthread_mutex_unlock(&m->map_lock);
	minode_put(c->v, m);
	if (lost)
		cl_lock_lost(r);
	pthread_mutex_lock(&c->mu);
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

void layout_bast(struct cl_lockres *r, enum dg_mode blocking)
{
	(void)blocking;
	recall_queue(r->c, r->token);
}

void layout_lost(struct cl_lockres *r)
{
	recall_queue(r->c, r->token);
}

/* Under m->map_lock: a new request's token and resource; nothing is cached
 * without the lock. The resource it replaces is a failed request's, whose
 * ast has run: it is retired. */
static uint64_t layout_mark_waiting(struct cluster *c, struct minode *m)
{
	pthread_mutex_lock(&c->mu);
	uint64_t token = ((uint64_t)m->ino << 32) | (++c->next_token & 0xffffffffu);
	pthread_mutex_unlock(&c->mu);
	lockres_retire(m->layout_res, 0);
	m->layout_res = lockres_new(c, CL_LOCK_LAYOUT, m->ino, token);
	m->layout_token = token;
	m->layout_state = LAYOUT_WAITING;
	m->nmap = 0;
	/* Truncates by others while we held no lock recalled nothing of
	 * ours: the size we know must be asked again once granted. */
	atomic_store(&m->size_stale, 1);
	return token;
}

/* Asks for PR. Returns 0 with m->map_lock held again, or the error with the
 * request failed and the lock released. */
static int layout_request(struct cluster *c, struct minode *m, struct cl_lockres *r)
{
	minode_ref(c->v, m);   /* the lock's reference */
	struct dg_lock *lk = NULL;
	int rc = r ? cl_lock(r, DG_PR, 0, &lk) : -ENOMEM;
	pthread_mutex_lock(&m->map_lock);
	if (rc) {
		m->layout_state = LAYOUT_FAILED;
		if (m->layout_res == r)
			m->layout_res = NULL;
		pthread_mutex_unlock(&m->map_lock);
		lockres_retire(r, 0);
		minode_put(c->v, m);
		return rc;
	}
	m->layout_lk = lk;
	return 0;
}

/* Under m->map_lock, which it releases. */
static int layout_wait(struct cluster *c, struct minode *m, uint64_t token)
{
	uint64_t until = cl_now_ms() + c->lock_wait_ms;
	while (m->layout_state == LAYOUT_WAITING && m->layout_token == token && cl_now_ms() < until) {
		pthread_mutex_unlock(&m->map_lock);
		pthread_mutex_lock(&c->mu);
		struct timespec dl = cl_deadline_in(50);
		pthread_cond_timedwait(&c->cv, &c->mu, &dl);
		pthread_mutex_unlock(&c->mu);
		pthread_mutex_lock(&m->map_lock);
	}
	int rc = m->layout_state == LAYOUT_GRANTED ? 0 : -EAGAIN;
	pthread_mutex_unlock(&m->map_lock);
	return rc;
}

int cluster_layout_hold(struct cluster *c, struct minode *m)
{
	pthread_mutex_lock(&m->map_lock);
	int state = m->layout_state;
	uint64_t token = m->layout_token;
	if (state == LAYOUT_NONE || state == LAYOUT_FAILED) {
		token = layout_mark_waiting(c, m);
		struct cl_lockres *r = m->layout_res;
		pthread_mutex_unlock(&m->map_lock);
		int rc = layout_request(c, m, r);
		if (rc)
			return rc;
	}
	return layout_wait(c, m, token);
}

/* Caller may not hold m->io_lock: in-flight I/O that uses the cached
 * mappings finishes before they go. */
void cluster_layout_drop(struct cluster *c, struct minode *m)
{
	pthread_rwlock_wrlock(&m->io_lock);
	pthread_mutex_lock(&m->map_lock);
	struct dg_lock *lk = m->layout_lk;
	struct cl_lockres *r = m->layout_res;
	int had = m->layout_state != LAYOUT_NONE;
	m->layout_lk = NULL;
	m->layout_res = NULL;
	m->layout_state = LAYOUT_NONE;
	m->layout_token = 0;
	m->nmap = 0;
	pthread_mutex_unlock(&m->map_lock);
	atomic_store(&m->size_stale, 1);
	int rc = lk ? dg_unlock(lk, 0, NULL) : 0;
	lockres_retire(r, rc);
	pthread_rwlock_unlock(&m->io_lock);
	if (had)
		minode_put(c->v, m);   /* the lock's reference */
}

void *layout_recall_main(void *arg)
{
	struct cluster *c = arg;
	pthread_mutex_lock(&c->mu);
	while (!c->stopping || c->recalls) {
		struct recall_item *it = c->recalls;
		if (!it) {
			pthread_cond_wait(&c->cv, &c->mu);
			continue;
		}
		c->recalls = it->next;
		pthread_mutex_unlock(&c->mu);
		struct minode *m = minode_find(c->v, it->ino);
		if (m) {
			pthread_mutex_lock(&m->map_lock);
			int ours = m->layout_token == it->token && m->layout_state != LAYOUT_NONE;
			pthread_mutex_unlock(&m->map_lock);
			if (ours)
				cluster_layout_drop(c, m);
			minode_put(c->v, m);
		}
		free(it);
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

static void layout_drop_one(struct volume *v, struct minode *m, void *arg)
{
	(void)v;
	cluster_layout_drop(arg, m);
}

void layout_drop_all(struct cluster *c)
{
	minode_foreach(c->v, layout_drop_one, c);
}

/* ---- coordinator: recalls -------------------------------------------------- */

int cluster_recall_begin(struct cluster *c, ext2_ino_t ino, void **token)
{
	*token = NULL;
	if (!cl_others_up(c))
		return 0;
	struct dg_lock *lk = NULL;
	int rc = cl_lock_wait(c, CL_LOCK_LAYOUT, ino, DG_EX, &lk);
	if (rc) {
		csvfs_log(LOG_ERR_L, "inode %u: other nodes did not give up their layouts: %s", ino,
			  strerror(-rc));
		return -EIO;
	}
	*token = lk;
	return 0;
}

void cluster_recall_end(struct cluster *c, void *token)
{
	(void)c;
	if (token)
		dg_unlock(token, 0, NULL);
}
