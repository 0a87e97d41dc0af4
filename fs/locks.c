/* File locks as a node's processes see them (fs/locks.h).
 *
 * Lock requests of one inode are serialised on this node (a stripe lock),
 * so the mirror records grants and unlocks in the order the coordinator
 * decided them. A blocked request is tried again by one thread per volume
 * each time the coordinator's table changes: the thread asks the table's
 * generation with LKWAIT, which answers at once if the table changed after
 * the generation the failed tries saw, so no unlock is missed. */
#include "fs/locks.h"
#include "fs/fsops.h"
#include "fs/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STRIPES 64
#define WAIT_POLL_MS 250     /* a blocked waiter notices a signal this fast */
#define GRACE_RETRY_MS 20
#define GRACE_PATIENCE_MS 120000  /* a table rebuilt for longer than this: ENOLCK */

struct lock_wait {
	struct lock_wait *next;
	struct lock_client *lc;
	struct plock req;
	lock_done_fn done;
	void *arg;
	int interrupted;
};

struct lock_client {
	struct volume *v;
	pthread_mutex_t stripe[STRIPES];
	pthread_mutex_t mu;          /* waiters, stopping */
	pthread_cond_t cv;
	struct lock_wait *waiters;
	int stopping;
	pthread_t thread;
};

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static pthread_mutex_t *stripe_of(struct lock_client *lc, uint32_t ino)
{
	return &lc->stripe[ino % STRIPES];
}

/* ---- asking the table ------------------------------------------------------ */

/* The table answered EBUSY (a new coordinator rebuilds it): ask again a
 * little later, for a while. */
static int wait_for_table(unsigned *waited)
{
	if (*waited >= GRACE_PATIENCE_MS)
		return -ENOLCK;
	sleep_ms(GRACE_RETRY_MS);
	*waited += GRACE_RETRY_MS;
	return 0;
}

/* One try under the inode's stripe: 0 granted (and mirrored), -EAGAIN, or
 * an errno; *gen as the table answered. A table being rebuilt is waited for. */
static int try_set(struct lock_client *lc, const struct plock *req, uint64_t *gen)
{
	struct volume *v = lc->v;
	int granted = 0, rc;
	pthread_mutex_t *s = stripe_of(lc, req->ino);
	for (unsigned waited = 0;;) {
		pthread_mutex_lock(s);
		rc = fsop_setlk(v, req, &granted, gen);
		if (rc == 0 && granted)
			plock_apply(v->plocks_mine, req);
		pthread_mutex_unlock(s);
		if (rc != -EBUSY)
			break;
		if ((rc = wait_for_table(&waited)) != 0)
			return rc;
	}
	return rc ? rc : granted ? 0 : -EAGAIN;
}

int locks_set(struct volume *v, struct plock *req)
{
	snprintf(req->node, sizeof(req->node), "%s", v->node_name);
	/* Unlocking what we do not hold changes nothing: no round trip. */
	if (req->type == PLOCK_UNLOCK && !plock_owned(v->plocks_mine, req))
		return 0;
	uint64_t gen;
	return try_set(v->lockc, req, &gen);
}

int locks_get(struct volume *v, struct plock *req)
{
	snprintf(req->node, sizeof(req->node), "%s", v->node_name);
	struct plock conflict;
	int found = 0, rc;
	for (unsigned waited = 0;;) {
		rc = fsop_getlk(v, req, &conflict, &found);
		if (rc != -EBUSY)
			break;
		if ((rc = wait_for_table(&waited)) != 0)
			return rc;
	}
	if (rc)
		return rc;
	if (!found) {
		req->type = PLOCK_UNLOCK;
		return 0;
	}
	req->type = conflict.type;
	req->start = conflict.start;
	req->end = conflict.end;
	req->pid = conflict.pid;
	return 0;
}

void locks_release(struct volume *v, uint32_t ino, enum plock_by by, uint64_t key)
{
	struct lock_client *lc = v->lockc;
	pthread_mutex_t *s = stripe_of(lc, ino);
	pthread_mutex_lock(s);
	if (plock_holds(v->plocks_mine, v->node_name, ino, by, key)) {
		int rc = fsop_unlock_all(v, ino, by, key);
		if (rc)
			csvfs_log(LOG_WARN_L, "inode %u: releasing this node's file locks at close failed: %s",
				  ino, strerror(-rc));
		plock_release(v->plocks_mine, v->node_name, ino, by, key);
	}
	pthread_mutex_unlock(s);
	if (by == PLOCK_BY_FH)
		plock_forget_fh(v->plocks_mine, key);
}

int locks_fh_lost(struct volume *v, uint64_t fh)
{
	return plock_fh_lost(v->plocks_mine, fh);
}

/* ---- blocked requests -------------------------------------------------------- */

static void finish(struct lock_wait *w, int rc)
{
	struct lock_client *lc = w->lc;
	pthread_mutex_lock(&lc->mu);
	for (struct lock_wait **pp = &lc->waiters; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	pthread_mutex_unlock(&lc->mu);
	w->done(w->arg, rc);
	free(w);
}

/* Tries every waiter once; returns the oldest generation a failed try saw
 * (UINT64_MAX: none failed that way). */
static uint64_t try_waiters(struct lock_client *lc)
{
	pthread_mutex_lock(&lc->mu);
	size_t n = 0;
	for (struct lock_wait *w = lc->waiters; w; w = w->next)
		n++;
	struct lock_wait **list = calloc(n ? n : 1, sizeof(*list));
	n = 0;
	for (struct lock_wait *w = list ? lc->waiters : NULL; w; w = w->next)
		list[n++] = w;
	pthread_mutex_unlock(&lc->mu);
	uint64_t oldest = UINT64_MAX;
	for (size_t i = 0; i < n; i++) {
		struct lock_wait *w = list[i];
		pthread_mutex_lock(&lc->mu);
		int intr = w->interrupted;
		pthread_mutex_unlock(&lc->mu);
		uint64_t gen = 0;
		int rc = intr ? -EINTR : try_set(lc, &w->req, &gen);
		if (rc == -EAGAIN)
			oldest = gen < oldest ? gen : oldest;
		else
			finish(w, rc);
	}
	free(list);
	return oldest;
}

static void *waiter_main(void *arg)
{
	struct lock_client *lc = arg;
	pthread_mutex_lock(&lc->mu);
	while (!lc->stopping) {
		if (!lc->waiters) {
			pthread_cond_wait(&lc->cv, &lc->mu);
			continue;
		}
		pthread_mutex_unlock(&lc->mu);
		uint64_t gen = try_waiters(lc), now;
		if (gen != UINT64_MAX && fsop_lkwait(lc->v, gen, WAIT_POLL_MS, &now) != 0)
			sleep_ms(GRACE_RETRY_MS);
		pthread_mutex_lock(&lc->mu);
	}
	while (lc->waiters) {
		struct lock_wait *w = lc->waiters;
		pthread_mutex_unlock(&lc->mu);
		finish(w, -EINTR);
		pthread_mutex_lock(&lc->mu);
	}
	pthread_mutex_unlock(&lc->mu);
	return NULL;
}

struct lock_wait *locks_wait_new(struct volume *v, const struct plock *req, lock_done_fn done,
				 void *arg)
{
	struct lock_wait *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	*w = (struct lock_wait){ .lc = v->lockc, .req = *req, .done = done, .arg = arg };
	snprintf(w->req.node, sizeof(w->req.node), "%s", v->node_name);
	return w;
}

void locks_wait_start(struct lock_wait *w)
{
	struct lock_client *lc = w->lc;
	pthread_mutex_lock(&lc->mu);
	w->next = lc->waiters;
	lc->waiters = w;
	pthread_cond_broadcast(&lc->cv);
	pthread_mutex_unlock(&lc->mu);
}

void locks_wait_interrupt(struct lock_wait *w)
{
	pthread_mutex_lock(&w->lc->mu);
	w->interrupted = 1;
	pthread_mutex_unlock(&w->lc->mu);
}

/* ---- life ------------------------------------------------------------------------ */

int locks_init(struct volume *v, const char *node)
{
	struct lock_client *lc = calloc(1, sizeof(*lc));
	if (!lc)
		return -ENOMEM;
	snprintf(v->node_name, sizeof(v->node_name), "%s", node);
	lc->v = v;
	for (size_t i = 0; i < STRIPES; i++)
		pthread_mutex_init(&lc->stripe[i], NULL);
	pthread_mutex_init(&lc->mu, NULL);
	pthread_cond_init(&lc->cv, NULL);
	if (pthread_create(&lc->thread, NULL, waiter_main, lc) != 0) {
		free(lc);
		return -EAGAIN;
	}
	v->lockc = lc;
	return 0;
}

void locks_fini(struct volume *v)
{
	struct lock_client *lc = v->lockc;
	if (lc) {
		pthread_mutex_lock(&lc->mu);
		lc->stopping = 1;
		pthread_cond_broadcast(&lc->cv);
		pthread_mutex_unlock(&lc->mu);
		pthread_join(lc->thread, NULL);
		free(lc);
		v->lockc = NULL;
	}
}
