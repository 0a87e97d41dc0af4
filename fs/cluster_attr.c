/* Cluster mode: attribute locks ("A<ino>", docs/cluster.md "Attribute
 * caching"). A participant holds PR on a non-directory inode while its
 * kernel may cache that inode's attributes; the coordinator holds EX while it
 * changes them, and keeps it (cached, as OCFS2 keeps its cluster locks) until
 * another node asks for PR, so a change costs no lock round trip unless a
 * participant caches the inode. A blocking callback on a participant drops
 * the kernel's copy (fuse_lowlevel_notify_inval_inode, through the front end's
 * hook) before the lock goes; on the coordinator it just releases the EX.
 *
 * What a participant may tell its kernel to cache: attributes fetched by a
 * request sent after the lock was granted (the grant's sequence number is
 * older than the mark taken before the request) while the lock is still
 * held. A directory's own attributes are never cached (its node id may be
 * an alias, fs/fuse_alias.h), but its entries are, names and absent names:
 * A<dir> PR covers them, the coordinator's EX comes with every change to the
 * directory (its times change with every entry), and a recall makes the
 * kernel look every name up again (the front end's inval_entries: one
 * notification for the whole mount, which takes no directory lock, so it
 * cannot wait for a request of this node that waits for the recall). */
#include "fs/cluster_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_INO(t) ((ext2_ino_t)((t) >> 32))
#define BUCKET(ino) ((ino) % ATTR_BUCKETS)

enum attr_state { ATTR_WAITING, ATTR_GRANTED };

struct attr_lock {
	struct attr_lock *next;          /* hash chain */
	struct cl_lockres *res;
	struct dg_lock *lk;
	ext2_ino_t ino;
	uint32_t gen;                    /* PR: the generation told the kernel */
	int attr_told;                   /* PR: the kernel was told to cache attributes */
	int ex;                          /* the coordinator's EX, else a participant's PR */
	enum attr_state state;
	uint64_t granted_seq;
	unsigned replying;               /* PR: cacheable replies not yet sent */
	int kernel_has;                  /* PR: the kernel asked for gen's attributes, no forget since */
	int dir;                         /* PR: held for the directory's entries */
};

struct attr_drop {
	struct attr_drop *next;
	uint64_t token;
};

/* Under a->mu. */
static struct attr_lock **chain_of(struct attr_cache *a, int ex, ext2_ino_t ino)
{
	return ex ? &a->ex[BUCKET(ino)] : &a->pr[BUCKET(ino)];
}

static struct attr_lock *find_ino(struct attr_cache *a, int ex, ext2_ino_t ino)
{
	for (struct attr_lock *e = *chain_of(a, ex, ino); e; e = e->next)
		if (e->ino == ino)
			return e;
	return NULL;
}

static struct attr_lock *find_token(struct attr_cache *a, uint64_t token, int *ex)
{
	for (int x = 0; x < 2; x++)
		for (struct attr_lock *e = *chain_of(a, x, TOKEN_INO(token)); e; e = e->next)
			if (e->res && e->res->token == token) {
				*ex = x;
				return e;
			}
	return NULL;
}

static void unchain(struct attr_cache *a, struct attr_lock *e)
{
	struct attr_lock **pp = chain_of(a, e->ex, e->ino);
	while (*pp && *pp != e)
		pp = &(*pp)->next;
	if (*pp) {
		*pp = e->next;
		if (e->ex)
			a->nex--;
		else
			a->npr--;
	}
}

/* Under a->mu: the drop thread releases the lock of that token. */
static void drop_queue(struct attr_cache *a, uint64_t token)
{
	struct attr_drop *d = calloc(1, sizeof(*d));
	if (!d) {
		csvfs_log(LOG_ERR_L, "inode %u: out of memory queueing an attribute lock drop",
			  TOKEN_INO(token));
		return;
	}
	d->token = token;
	d->next = a->drops;
	a->drops = d;
	pthread_cond_broadcast(&a->cv);
}

/* ---- callbacks (dispatch thread) ------------------------------------------ */

void attr_ast(struct cl_lockres *r, int status, const uint8_t *lvb)
{
	(void)lvb;
	struct attr_cache *a = &r->c->attr;
	pthread_mutex_lock(&a->mu);
	int ex = 0;
	struct attr_lock *e = find_token(a, r->token, &ex);
	if (e && e->state == ATTR_WAITING) {
		if (status == 0) {
			e->state = ATTR_GRANTED;
			e->granted_seq = ++a->seq;
		} else {
			/* The request failed or was cancelled: dlm-glue freed
			 * its handle, nothing is held. */
			unchain(a, e);
			lockres_retire(e->res, 0);
			free(e);
		}
	} else if (e && status == -ENOTCONN) {
		drop_queue(a, r->token);   /* our lineage is gone, and the lock with it */
	}
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

void attr_bast(struct cl_lockres *r, enum dg_mode blocking)
{
	(void)blocking;
	struct attr_cache *a = &r->c->attr;
	pthread_mutex_lock(&a->mu);
	drop_queue(a, r->token);
	pthread_mutex_unlock(&a->mu);
}

void attr_lost(struct cl_lockres *r)
{
	attr_bast(r, DG_EX);
}

/* ---- requests --------------------------------------------------------------- */

/* Under a->mu, which it releases and takes again: a new entry asking for
 * mode. NULL when it could not be asked. */
static struct attr_lock *attr_request(struct cluster *c, ext2_ino_t ino, int ex, int dir)
{
	struct attr_cache *a = &c->attr;
	struct attr_lock *e = calloc(1, sizeof(*e));
	pthread_mutex_lock(&c->mu);
	uint64_t token = ((uint64_t)ino << 32) | (++c->next_token & 0xffffffffu);
	pthread_mutex_unlock(&c->mu);
	struct cl_lockres *r = e ? lockres_new(c, CL_LOCK_ATTR, ino, token) : NULL;
	if (!r) {
		free(e);
		return NULL;
	}
	*e = (struct attr_lock){ .res = r, .ino = ino, .ex = ex, .dir = dir, .state = ATTR_WAITING };
	struct attr_lock **chain = chain_of(a, ex, ino);
	e->next = *chain;
	*chain = e;
	if (ex)
		a->nex++;
	else
		a->npr++;
	/* The ast may come before dg_lock returns: it finds the entry. */
	pthread_mutex_unlock(&a->mu);
	struct dg_lock *lk = NULL;
	int rc = cl_lock(r, ex ? DG_EX : DG_PR, 0, &lk);
	pthread_mutex_lock(&a->mu);
	if (rc) {
		int x;
		if (find_token(a, token, &x) == e) {
			unchain(a, e);
			free(e);
		}
		lockres_retire(r, 0);
		return NULL;
	}
	int x;
	if (find_token(a, token, &x) != e)
		return NULL;   /* refused at once: the ast freed it */
	e->lk = lk;
	pthread_cond_broadcast(&a->cv);   /* a drop may wait for the handle */
	return e;
}

uint64_t cluster_attr_mark(struct cluster *c)
{
	struct attr_cache *a = &c->attr;
	pthread_mutex_lock(&a->mu);
	uint64_t mark = a->seq;
	pthread_mutex_unlock(&a->mu);
	return mark;
}

/* Under a->mu: an inode recalled less than ATTR_COOLDOWN_MS ago is not
 * asked for again yet: one that others keep changing would cost a lock
 * round trip per change and gain nothing. */
static int cooling(struct attr_cache *a, ext2_ino_t ino)
{
	const struct attr_cooldown *cd = &a->cooldown[ino % ATTR_COOLDOWN_SLOTS];
	return cd->ino == ino && cl_now_ms() < cd->until_ms;
}

static void cool(struct attr_cache *a, ext2_ino_t ino)
{
	a->cooldown[ino % ATTR_COOLDOWN_SLOTS] = (struct attr_cooldown){ ino, cl_now_ms() + ATTR_COOLDOWN_MS };
}

/* Under a->mu: asks for PR on ino unless held, asked, cooling or too many. */
static void attr_want(struct cluster *c, ext2_ino_t ino, int dir)
{
	struct attr_cache *a = &c->attr;
	if (!find_ino(a, 0, ino) && a->npr < ATTR_PR_MAX && !cooling(a, ino))
		attr_request(c, ino, 0, dir);
}

int cluster_entries_cacheable(struct cluster *c, ext2_ino_t dir, uint64_t mark)
{
	struct attr_cache *a = &c->attr;
	if (atomic_load(&c->role) != CL_PARTICIPANT)
		return 0;
	pthread_mutex_lock(&a->mu);
	int ok = 0;
	if (a->inval_entries && !a->stopping) {
		struct attr_lock *e = find_ino(a, 0, dir);
		if (e && e->state == ATTR_GRANTED && e->granted_seq <= mark && e->lk) {
			ok = 1;
			e->dir = 1;   /* its recall drops the names too */
			e->replying++;
		} else if (!e) {
			attr_want(c, dir, 1);
		}
	}
	pthread_mutex_unlock(&a->mu);
	return ok;
}

int cluster_attr_cacheable(struct cluster *c, ext2_ino_t ino, uint32_t gen, int is_dir, uint64_t mark,
			   int lookup)
{
	struct attr_cache *a = &c->attr;
	if (atomic_load(&c->role) != CL_PARTICIPANT)
		return 0;
	pthread_mutex_lock(&a->mu);
	int ok = 0;
	if (a->inval && !a->stopping) {
		struct attr_lock *e = find_ino(a, 0, ino);
		/* A lookup's answer may make the kernel a new inode, which a
		 * drop finding no inode would miss: only for one it has. */
		int has = e && e->kernel_has && e->gen == gen;
		if (e && e->state == ATTR_GRANTED && e->granted_seq <= mark && e->lk &&
		    (!lookup || has)) {
			ok = 1;
			e->attr_told = 1;
			if (!lookup) {
				e->gen = gen;
				e->kernel_has = 1;
			}
			e->replying++;
		} else if (!e) {
			attr_want(c, ino, is_dir);   /* so that a later request may cache */
		}
	}
	pthread_mutex_unlock(&a->mu);
	return ok;
}

void cluster_attr_replied(struct cluster *c, ext2_ino_t ino)
{
	struct attr_cache *a = &c->attr;
	pthread_mutex_lock(&a->mu);
	struct attr_lock *e = find_ino(a, 0, ino);
	if (e && e->replying)
		e->replying--;
	/* a recall waits for replies cached under the lock it drops */
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

void cluster_attr_forget(struct cluster *c, ext2_ino_t ino, uint32_t gen)
{
	struct attr_cache *a = &c->attr;
	if (!a->running)
		return;
	pthread_mutex_lock(&a->mu);
	struct attr_lock *e = find_ino(a, 0, ino);
	if (e && e->gen == gen)
		e->kernel_has = 0;
	pthread_mutex_unlock(&a->mu);
}

void cluster_attr_set_inval(struct cluster *c, void (*inval)(void *arg, ext2_ino_t ino, uint32_t gen),
			    void (*inval_entries)(void *arg), void *arg)
{
	struct attr_cache *a = &c->attr;
	pthread_mutex_lock(&a->mu);
	a->inval = inval;
	a->inval_entries = inval_entries;
	a->inval_arg = arg;
	pthread_mutex_unlock(&a->mu);
}

/* Coordinator, under v->lock (the engine's): every other node's copy of
 * ino's attributes is gone before the change can be seen. A participant
 * reads attributes only under v->lock, so one that asks for PR after we
 * let go of the EX reads the change. */
int cluster_attr_change(struct cluster *c, ext2_ino_t ino, int prefetch)
{
	struct attr_cache *a = &c->attr;
	if (atomic_load(&c->role) != CL_COORDINATOR || !cl_others_up(c))
		return 0;
	pthread_mutex_lock(&a->mu);
	struct attr_lock *e = find_ino(a, 1, ino);
	if (!e) {
		if (a->nex >= ATTR_EX_MAX) {
			/* Let go of every cached EX: they only save round trips. */
			for (unsigned b = 0; b < ATTR_BUCKETS; b++)
				for (struct attr_lock *x = a->ex[b]; x; x = x->next)
					if (x->state == ATTR_GRANTED)
						drop_queue(a, x->res->token);
		}
		e = attr_request(c, ino, 1, 0);
		a->ex_requests++;
	}
	if (prefetch || !e) {
		pthread_mutex_unlock(&a->mu);
		if (!e && !prefetch)
			csvfs_log(LOG_ERR_L, "inode %u: cannot ask for its attribute lock", ino);
		return !e && !prefetch ? -EIO : 0;
	}
	uint64_t token = e->res->token, until = cl_now_ms() + LOCK_TIMEOUT_MS;
	int waited = 0;
	while ((e = find_ino(a, 1, ino)) && e->res->token == token && e->state == ATTR_WAITING &&
	       cl_now_ms() < until) {
		waited = 1;
		struct timespec dl = cl_deadline_in(100);
		pthread_cond_timedwait(&a->cv, &a->mu, &dl);
	}
	int rc = e && e->res->token == token && e->state == ATTR_GRANTED ? 0 : -EIO;
	if (waited)
		a->ex_waits++;
	struct dg_lock *cancel = rc && e && e->res->token == token ? e->lk : NULL;
	pthread_mutex_unlock(&a->mu);
	if (cancel)
		dg_cancel(cancel);   /* its ast removes the entry */
	if (rc)
		csvfs_log(LOG_ERR_L, "inode %u: other nodes did not give up their cached attributes", ino);
	return rc;
}

/* ---- the drop thread ---------------------------------------------------------- */

static void attr_drop_one(struct cluster *c, uint64_t token)
{
	struct attr_cache *a = &c->attr;
	pthread_mutex_lock(&a->mu);
	int ex = 0;
	struct attr_lock *e = find_token(a, token, &ex);
	if (!e || e->state != ATTR_GRANTED) {
		pthread_mutex_unlock(&a->mu);
		return;   /* an older request's, or already gone */
	}
	unchain(a, e);   /* no reply may be cached under it from now on */
	uint64_t until = cl_now_ms() + 2000;
	while ((e->replying || !e->lk) && cl_now_ms() < until) {
		struct timespec dl = cl_deadline_in(20);
		pthread_cond_timedwait(&a->cv, &a->mu, &dl);
	}
	void (*inval)(void *, ext2_ino_t, uint32_t) = a->inval;
	void (*inval_entries)(void *) = a->inval_entries;
	void *arg = a->inval_arg;
	if (!ex) {
		a->recalls++;
		cool(a, e->ino);
	}
	pthread_mutex_unlock(&a->mu);
	if (!ex && e->dir && inval_entries)
		inval_entries(arg);
	if (!ex && inval && e->attr_told)
		inval(arg, e->ino, e->gen);
	int rc = e->lk ? dg_unlock(e->lk, 0, NULL) : 0;
	lockres_retire(e->res, rc);
	free(e);
}

static void *attr_drop_main(void *arg)
{
	struct cluster *c = arg;
	struct attr_cache *a = &c->attr;
	pthread_mutex_lock(&a->mu);
	while (!a->stopping || a->drops) {
		struct attr_drop *d = a->drops;
		if (!d) {
			pthread_cond_wait(&a->cv, &a->mu);
			continue;
		}
		a->drops = d->next;
		pthread_mutex_unlock(&a->mu);
		attr_drop_one(c, d->token);
		free(d);
		pthread_mutex_lock(&a->mu);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

int attr_start(struct cluster *c)
{
	struct attr_cache *a = &c->attr;
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	int rc = pthread_create(&a->thread, NULL, attr_drop_main, c);
	if (rc == 0)
		a->running = 1;
	return -rc;
}

/* Leaving the cluster: every attribute lock goes, the kernel's copies first. */
void attr_stop(struct cluster *c)
{
	struct attr_cache *a = &c->attr;
	if (!a->running)
		return;
	pthread_mutex_lock(&a->mu);
	for (int x = 0; x < 2; x++)
		for (unsigned b = 0; b < ATTR_BUCKETS; b++)
			for (struct attr_lock *e = x ? a->ex[b] : a->pr[b]; e; e = e->next)
				if (e->state == ATTR_GRANTED)
					drop_queue(a, e->res->token);
	a->stopping = 1;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->thread, NULL);
	a->running = 0;
	/* Requests still waiting die with the lockspace. */
	for (int x = 0; x < 2; x++)
		for (unsigned b = 0; b < ATTR_BUCKETS; b++) {
			struct attr_lock **chain = x ? &a->ex[b] : &a->pr[b];
			while (*chain) {
				struct attr_lock *e = *chain;
				*chain = e->next;
				lockres_retire(e->res, -1);   /* freed with the lockspace */
				free(e);
			}
		}
}

size_t attr_status_json(struct cluster *c, char *out, size_t len)
{
	struct attr_cache *a = &c->attr;
	pthread_mutex_lock(&a->mu);
	int n = snprintf(out, len,
			 ",\"attr_locks\":{\"pr\":%u,\"ex\":%u,\"recalls\":%llu,\"ex_requests\":%llu,"
			 "\"ex_waits\":%llu}",
			 a->npr, a->nex, (unsigned long long)a->recalls,
			 (unsigned long long)a->ex_requests, (unsigned long long)a->ex_waits);
	pthread_mutex_unlock(&a->mu);
	return n < 0 ? 0 : (size_t)n >= len ? len - 1 : (size_t)n;
}
