/* Cluster mode: attribute locks ("A<n>", docs/cluster.md "Attribute
 * caching"), one per group of ATTR_GROUP consecutive inode numbers (n =
 * ino / ATTR_GROUP: files created together share one, so the coordinator's
 * creates, writes and unlinks of them need one lock between them). A
 * participant holds PR while its kernel may cache attributes of inodes of the
 * group; the coordinator holds EX while it changes them, and keeps it
 * (cached, as OCFS2 keeps its cluster locks) until another node asks for PR,
 * so a change costs no lock round trip unless a participant caches the
 * group. A blocking callback on a participant drops the kernel's copies
 * (through the front end's hooks) before the lock goes; on the coordinator
 * it just releases the EX.
 *
 * What a participant may tell its kernel to cache: answers to requests sent
 * after the lock was granted (the grant's sequence number is older than the
 * mark taken before the request) while the lock is still held. A file's
 * attributes (a directory's only under its own node id: not an alias,
 * fs/fuse_alias.h), and a directory's names and absent names: the
 * coordinator's EX comes with every change to the directory (its times change
 * with every entry), and a recall makes the kernel look every name up again
 * (inval_entries: one notification for the whole mount, which takes no
 * directory lock, so it cannot wait for a request of this node that waits for
 * the recall). */
#include "fs/cluster_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOKEN_GRP(t) ((uint32_t)((t) >> 32))
#define BUCKET(grp) ((grp) % ATTR_BUCKETS)
#define GROUP(ino) ((uint32_t)(ino) / ATTR_GROUP)
#define SLOT_BIT(ino) (1ull << ((ino) % ATTR_GROUP))

enum attr_state { ATTR_WAITING, ATTR_GRANTED };

struct attr_lock {
	struct attr_lock *next;          /* hash chain */
	struct cl_lockres *res;
	struct dg_lock *lk;
	uint32_t grp;                    /* inodes grp * ATTR_GROUP .. + ATTR_GROUP - 1 */
	uint32_t gen[ATTR_GROUP];        /* PR: each inode's generation told the kernel */
	uint64_t told;                   /* PR: inodes whose attributes the kernel may cache */
	int ex;                          /* the coordinator's EX, else a participant's PR */
	enum attr_state state;
	uint64_t granted_seq;
	unsigned replying;               /* PR: cacheable replies not yet sent */
	uint64_t has;                    /* PR: the kernel asked for gen's attributes, no forget since */
	int dir;                         /* PR: held for a directory's entries */
	int dropping;                    /* the drop thread waits for replies: cache nothing more */
	unsigned waiters;                /* EX: changes waiting for its grant (cluster_attr_change) */
	/* PR: the daemon's own copies (cluster_attr_keep), of the inodes in
	 * cached: what a readdirplus brought, so that the kernel's getattr of
	 * each name after it costs no round trip. Allocated on first use. */
	struct meta_attr *attrs;
	uint64_t cached;
};

struct attr_drop {
	struct attr_drop *next;
	uint64_t token;
	uint64_t queued_ms;              /* when the callback asked for it */
};

/* Under a->mu. */
static struct attr_lock **chain_of(struct attr_cache *a, int ex, uint32_t grp)
{
	return ex ? &a->ex[BUCKET(grp)] : &a->pr[BUCKET(grp)];
}

static struct attr_lock *find_grp(struct attr_cache *a, int ex, uint32_t grp)
{
	for (struct attr_lock *e = *chain_of(a, ex, grp); e; e = e->next)
		if (e->grp == grp)
			return e;
	return NULL;
}

static struct attr_lock *find_token(struct attr_cache *a, uint64_t token, int *ex)
{
	for (int x = 0; x < 2; x++)
		for (struct attr_lock *e = *chain_of(a, x, TOKEN_GRP(token)); e; e = e->next)
			if (e->res && e->res->token == token) {
				*ex = x;
				return e;
			}
	return NULL;
}

static void unchain(struct attr_cache *a, struct attr_lock *e)
{
	struct attr_lock **pp = chain_of(a, e->ex, e->grp);
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

/* Under a->mu: the daemon's copies of e's inodes go. */
static void forget_copies(struct attr_cache *a, struct attr_lock *e)
{
	a->ncached -= (unsigned)__builtin_popcountll(e->cached);
	e->cached = 0;
	free(e->attrs);
	e->attrs = NULL;
}

/* Under a->mu: d goes last. */
static void drop_append(struct attr_cache *a, struct attr_drop *d)
{
	d->next = NULL;
	*a->drops_tail = d;
	a->drops_tail = &d->next;
	pthread_cond_broadcast(&a->cv);
}

/* Under a->mu: the drop thread releases the lock of that token. Drops go
 * in the order asked (a queue, not a stack): under a steady inflow the
 * oldest is not passed over, and a node waiting for it waits for at most
 * those before it. */
static void drop_queue(struct attr_cache *a, uint64_t token)
{
	struct attr_drop *d = calloc(1, sizeof(*d));
	if (!d) {
		csvfs_log(LOG_ERR_L, "attribute lock A%u: out of memory queueing its drop", TOKEN_GRP(token));
		return;
	}
	d->token = token;
	d->queued_ms = cl_now_ms();
	drop_append(a, d);
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

/* Test only (tests/integration/cache_coherence.sh): CSVFS_TEST_HOLD_ATTR=PATH
 * holds the coordinator's change, after it asked for an EX and before it
 * looks for the grant, while PATH.NODE.wait exists (at most 30 s), and a
 * participant's request for PR before it is sent while PATH.NODE.ask does;
 * each only for the group whose number the file holds: so that the EX is
 * granted and asked back by a PR queued behind it before the change sees
 * it, as a loaded coordinator's can be. Called under a->mu, which it
 * releases while it holds. */
static void test_hold(struct cluster *c, struct attr_cache *a, const char *what, uint32_t grp)
{
	const char *path = getenv("CSVFS_TEST_HOLD_ATTR");
	char mine[1200];
	if (!path || snprintf(mine, sizeof(mine), "%s.%s.%s", path, c->o.node, what) >= (int)sizeof(mine))
		return;
	FILE *f = fopen(mine, "r");
	unsigned want = 0;
	int named = f && fscanf(f, "%u", &want) == 1;
	if (f)
		fclose(f);
	if (!named || want != grp)
		return;
	pthread_mutex_unlock(&a->mu);
	csvfs_log(LOG_WARN_L, "test hook: holding an attribute lock's %s while %s exists (CSVFS_TEST_HOLD_ATTR)",
		  what, mine);
	for (unsigned i = 0; i < 300 && access(mine, F_OK) == 0; i++)
		usleep(100 * 1000);
	pthread_mutex_lock(&a->mu);
}

/* Under a->mu, which it releases and takes again: a new entry asking for
 * mode. NULL when it could not be asked. */
static struct attr_lock *attr_request(struct cluster *c, uint32_t grp, int ex)
{
	struct attr_cache *a = &c->attr;
	struct attr_lock *e = calloc(1, sizeof(*e));
	pthread_mutex_lock(&c->mu);
	uint64_t token = ((uint64_t)grp << 32) | (++c->next_token & 0xffffffffu);
	pthread_mutex_unlock(&c->mu);
	struct cl_lockres *r = e ? lockres_new(c, CL_LOCK_ATTR, grp, token) : NULL;
	if (!r) {
		free(e);
		return NULL;
	}
	e->res = r;
	e->grp = grp;
	e->ex = ex;
	e->state = ATTR_WAITING;
	struct attr_lock **chain = chain_of(a, ex, grp);
	e->next = *chain;
	*chain = e;
	if (ex)
		a->nex++;
	else
		a->npr++;
	if (!ex)
		test_hold(c, a, "ask", grp);
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
static int cooling(struct attr_cache *a, uint32_t grp)
{
	const struct attr_cooldown *cd = &a->cooldown[grp % ATTR_COOLDOWN_SLOTS];
	return cd->grp == grp && cl_now_ms() < cd->until_ms;
}

static void cool(struct attr_cache *a, uint32_t grp)
{
	a->cooldown[grp % ATTR_COOLDOWN_SLOTS] = (struct attr_cooldown){ grp, cl_now_ms() + ATTR_COOLDOWN_MS };
}

/* Under a->mu: asks for PR on grp unless held, asked, cooling or too many. */
static void attr_want(struct cluster *c, uint32_t grp)
{
	struct attr_cache *a = &c->attr;
	if (!find_grp(a, 0, grp) && a->npr < a->pr_max && !cooling(a, grp))
		attr_request(c, grp, 0);
}

/* Under a->mu: the PR entry of grp when answers may be cached under it. */
static struct attr_lock *usable(struct attr_cache *a, uint32_t grp, uint64_t mark)
{
	struct attr_lock *e = find_grp(a, 0, grp);
	return e && !e->dropping && e->state == ATTR_GRANTED && e->granted_seq <= mark && e->lk ? e : NULL;
}

int cluster_entries_cacheable(struct cluster *c, ext2_ino_t dir, uint64_t mark)
{
	struct attr_cache *a = &c->attr;
	if (atomic_load(&c->role) != CL_PARTICIPANT)
		return 0;
	pthread_mutex_lock(&a->mu);
	int ok = 0;
	if (a->inval_entries && !a->stopping) {
		struct attr_lock *e = usable(a, GROUP(dir), mark);
		if (e) {
			ok = 1;
			e->dir = 1;   /* its recall drops the names too */
			e->replying++;
		} else {
			attr_want(c, GROUP(dir));
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
		struct attr_lock *e = usable(a, GROUP(ino), mark);
		uint64_t bit = SLOT_BIT(ino);
		/* A lookup's answer may make the kernel a new inode, which a
		 * drop finding no inode would miss: only for one it has. */
		int has = e && (e->has & bit) && e->gen[ino % ATTR_GROUP] == gen;
		if (e && (!lookup || has)) {
			ok = 1;
			if (!lookup) {
				e->gen[ino % ATTR_GROUP] = gen;
				e->has |= bit;
			}
			e->told |= bit;
			e->replying++;
		} else if (!e) {
			attr_want(c, GROUP(ino));   /* so that a later request may cache */
		}
	}
	pthread_mutex_unlock(&a->mu);
	return ok;
}

void cluster_attr_replied(struct cluster *c, ext2_ino_t ino)
{
	struct attr_cache *a = &c->attr;
	pthread_mutex_lock(&a->mu);
	struct attr_lock *e = find_grp(a, 0, GROUP(ino));
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
	struct attr_lock *e = find_grp(a, 0, GROUP(ino));
	if (e && e->gen[ino % ATTR_GROUP] == gen)
		e->has &= ~SLOT_BIT(ino);
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
	while (!inval && a->notifying)   /* cleared: no call of the old ones runs on */
		pthread_cond_wait(&a->cv, &a->mu);
	pthread_mutex_unlock(&a->mu);
}

/* Coordinator, under v->lock (the engine's): every other node's copy of
 * ino's attributes is gone before the change can be seen. A participant
 * reads attributes only under v->lock, so one that asks for PR after we
 * let go of the EX reads the change. */
int cluster_attr_change(struct cluster *c, ext2_ino_t ino)
{
	struct attr_cache *a = &c->attr;
	if (atomic_load(&c->role) != CL_COORDINATOR)
		return 0;
	pthread_mutex_lock(&a->mu);
	uint32_t grp = GROUP(ino);
	struct attr_lock *e = find_grp(a, 1, grp);
	if (e && e->state == ATTR_GRANTED) {
		pthread_mutex_unlock(&a->mu);
		return 0;   /* the common case: kept from an earlier change */
	}
	pthread_mutex_unlock(&a->mu);
	/* (not under a->mu: lock callbacks take it on dlm-glue's thread) A
	 * node that joins after this holds nothing it read before the change. */
	if (!e && !cl_others_up(c))
		return 0;   /* alone: nobody caches anything */
	pthread_mutex_lock(&a->mu);
	e = find_grp(a, 1, grp);
	if (!e) {
		if (a->nex >= ATTR_EX_MAX) {
			/* Let go of every cached EX: they only save round trips. */
			for (unsigned b = 0; b < ATTR_BUCKETS; b++)
				for (struct attr_lock *x = a->ex[b]; x; x = x->next)
					if (x->state == ATTR_GRANTED)
						drop_queue(a, x->res->token);
		}
		e = attr_request(c, grp, 1);
		a->ex_requests++;
	}
	if (!e) {
		pthread_mutex_unlock(&a->mu);
		csvfs_log(LOG_ERR_L, "inode %u: cannot ask for its attribute lock A%u", ino, grp);
		return -EIO;
	}
	uint64_t token = e->res->token, start = cl_now_ms(), until = start + c->lock_wait_ms;
	int waited = 0, warned = 0;
	/* Counted: a grant followed at once by another node's request (one
	 * queued behind ours) must not be dropped before we have seen it. */
	e->waiters++;
	test_hold(c, a, "wait", grp);
	while ((e = find_grp(a, 1, grp)) && e->res->token == token && e->state == ATTR_WAITING &&
	       cl_now_ms() < until) {
		waited = 1;
		if (!warned && cl_now_ms() - start >= CL_SLOW_LOCK_MS) {
			warned = 1;   /* not under a->mu: it takes dlm-glue's mutex */
			pthread_mutex_unlock(&a->mu);
			char what[64];
			snprintf(what, sizeof(what), "the change of inode %u", ino);
			cl_warn_slow_lock(c, CL_LOCK_ATTR, grp, DG_EX, what, cl_now_ms() - start);
			pthread_mutex_lock(&a->mu);
			continue;
		}
		struct timespec dl = cl_deadline_in(100);
		pthread_cond_timedwait(&a->cv, &a->mu, &dl);
	}
	int ours = e && e->res->token == token;
	int rc = ours && e->state == ATTR_GRANTED ? 0 : -EIO;
	if (ours) {
		e->waiters--;
		pthread_cond_broadcast(&a->cv);   /* a drop may wait for us */
	}
	if (waited)
		a->ex_waits++;
	struct dg_lock *cancel = rc && e && e->res->token == token ? e->lk : NULL;
	pthread_mutex_unlock(&a->mu);
	if (cancel)
		dg_cancel(cancel);   /* its ast removes the entry */
	if (rc)
		csvfs_log(LOG_ERR_L, "inode %u: other nodes did not give up their cached attributes (A%u): %s after "
			  "%llu ms", ino, grp, ours ? "not granted" : "its request failed",
			  (unsigned long long)(cl_now_ms() - start));
	return rc;
}

/* Coordinator, under v->lock: ino was just allocated. Nothing of it can be
 * cached, but its group's later changes (writes, the unlink) need the EX:
 * asked for now, without waiting, once per group. */
void cluster_attr_prefetch(struct cluster *c, ext2_ino_t ino)
{
	struct attr_cache *a = &c->attr;
	if (atomic_load(&c->role) != CL_COORDINATOR)
		return;
	uint32_t grp = GROUP(ino);
	pthread_mutex_lock(&a->mu);
	int have = find_grp(a, 1, grp) != NULL;
	pthread_mutex_unlock(&a->mu);
	if (have || !cl_others_up(c))
		return;
	pthread_mutex_lock(&a->mu);
	if (!find_grp(a, 1, grp) && a->nex < ATTR_EX_MAX && attr_request(c, grp, 1))
		a->ex_requests++;
	pthread_mutex_unlock(&a->mu);
}

/* ---- the daemon's copies ------------------------------------------------------- */

/* Under a->mu: grp's PR is asked for (now, unless held, cooling or over
 * the bound) and not granted yet. */
static int asked(struct cluster *c, uint32_t grp)
{
	attr_want(c, grp);
	struct attr_lock *e = find_grp(&c->attr, 0, grp);
	return e && e->state == ATTR_WAITING;
}

/* Under a->mu: keeps a copy of x's attributes if its group's PR is usable
 * under mark. 1 if kept, -1 if its lock is asked for, else 0. */
static int keep_one(struct cluster *c, const struct meta_attr *x, uint64_t mark)
{
	struct attr_cache *a = &c->attr;
	uint32_t grp = GROUP(x->ino);
	struct attr_lock *e = usable(a, grp, mark);
	if (!e)
		return asked(c, grp) ? -1 : 0;
	if (!e->attrs && !(e->attrs = calloc(ATTR_GROUP, sizeof(*e->attrs))))
		return 0;
	unsigned slot = (unsigned)(x->ino % ATTR_GROUP);
	if (!(e->cached & SLOT_BIT(x->ino)))
		a->ncached++;
	e->attrs[slot] = *x;
	e->cached |= SLOT_BIT(x->ino);
	return 1;
}

size_t cluster_attr_keep(struct cluster *c, ext2_ino_t dir, const struct meta_dirent *d, size_t n,
			 uint64_t mark)
{
	struct attr_cache *a = &c->attr;
	if (atomic_load(&c->role) != CL_PARTICIPANT)
		return 0;
	pthread_mutex_lock(&a->mu);
	size_t missed = 0;
	if (a->inval && !a->stopping) {
		if (a->inval_entries && !usable(a, GROUP(dir), mark) && asked(c, GROUP(dir)))
			missed++;
		for (size_t i = 0; i < n; i++)
			if (d[i].has_attr && d[i].attr.ino == d[i].ino && keep_one(c, &d[i].attr, mark) < 0)
				missed++;
	}
	pthread_mutex_unlock(&a->mu);
	return missed;
}

void cluster_attr_wait_asked(struct cluster *c, unsigned ms)
{
	struct attr_cache *a = &c->attr;
	uint64_t until = cl_now_ms() + ms;
	pthread_mutex_lock(&a->mu);
	for (;;) {
		unsigned waiting = 0;
		for (unsigned b = 0; b < ATTR_BUCKETS && !waiting; b++)
			for (struct attr_lock *e = a->pr[b]; e && !waiting; e = e->next)
				waiting = e->state == ATTR_WAITING;
		if (!waiting || cl_now_ms() >= until)
			break;
		struct timespec dl = cl_deadline_in(10);
		pthread_cond_timedwait(&a->cv, &a->mu, &dl);
	}
	pthread_mutex_unlock(&a->mu);
}

int cluster_attr_cached(struct cluster *c, ext2_ino_t ino, struct meta_attr *out)
{
	struct attr_cache *a = &c->attr;
	if (atomic_load(&c->role) != CL_PARTICIPANT || !a->running)
		return 0;
	pthread_mutex_lock(&a->mu);
	struct attr_lock *e = find_grp(a, 0, GROUP(ino));
	int hit = e && !e->dropping && e->state == ATTR_GRANTED && (e->cached & SLOT_BIT(ino));
	if (hit)
		*out = e->attrs[ino % ATTR_GROUP];
	pthread_mutex_unlock(&a->mu);
	return hit;
}

/* ---- the drop thread ---------------------------------------------------------- */

/* A drop that took long (the node asking waits for it): one warning line
 * with where the time went, so that a stall explains itself. */
static void drop_took(const struct attr_lock *e, int ex, uint64_t queued_ms, uint64_t start_ms,
		      uint64_t notify_ms, uint64_t end_ms)
{
	if (end_ms - queued_ms < CL_SLOW_LOCK_MS)
		return;
	csvfs_log(LOG_WARN_L, "attribute lock A%u (%s): giving it up took %llu ms (%llu queued behind other "
		  "drops, %llu waiting for answers being sent, %llu in the kernel's invalidations)",
		  e->grp, ex ? "EX" : "PR", (unsigned long long)(end_ms - queued_ms),
		  (unsigned long long)(start_ms - queued_ms), (unsigned long long)(notify_ms - start_ms),
		  (unsigned long long)(end_ms - notify_ms));
}

static void attr_drop_one(struct cluster *c, const struct attr_drop *d)
{
	struct attr_cache *a = &c->attr;
	uint64_t start_ms = cl_now_ms();
	pthread_mutex_lock(&a->mu);
	int ex = 0;
	struct attr_lock *e = find_token(a, d->token, &ex);
	if (!e || e->state != ATTR_GRANTED) {
		pthread_mutex_unlock(&a->mu);
		return;   /* an older request's, or already gone */
	}
	e->dropping = 1;   /* no reply may be cached under it from now on */
	forget_copies(a, e);
	if (!ex) {
		/* tests only (attr_recall.sh): a participant slow to let go, for
		 * as long as the test's six refused changes take under load */
		pthread_mutex_unlock(&a->mu);
		cl_test_hold(c, "CSVFS_TEST_HOLD_ATTR_DROP", "attribute lock drops", 300000);
		pthread_mutex_lock(&a->mu);
	}
	uint64_t until = cl_now_ms() + 2000;
	while (e->replying && cl_now_ms() < until) {
		struct timespec dl = cl_deadline_in(20);
		pthread_cond_timedwait(&a->cv, &a->mu, &dl);
	}
	if (e->replying)
		csvfs_log(LOG_ERR_L, "attribute lock A%u: %u answers still being sent after 2 s; dropping it",
			  e->grp, e->replying);
	/* EX: a change waiting for this grant sees it first (it only needs
	 * a->mu to look): else it would fail though the lock came. */
	while (e->waiters) {
		struct timespec dl = cl_deadline_in(20);
		pthread_cond_timedwait(&a->cv, &a->mu, &dl);
	}
	/* The handle comes when the requester's dg_lock returns, which it does
	 * without waiting for anything of ours: without it the granted lock
	 * could not be unlocked, and would block every other node's EX for good. */
	while (!e->lk) {
		struct timespec dl = cl_deadline_in(20);
		pthread_cond_timedwait(&a->cv, &a->mu, &dl);
	}
	uint64_t notify_ms = cl_now_ms();
	unchain(a, e);
	void (*inval)(void *, ext2_ino_t, uint32_t) = a->inval;
	void (*inval_entries)(void *) = a->inval_entries;
	void *arg = a->inval_arg;
	if (!ex) {
		a->recalls++;
		cool(a, e->grp);
	}
	a->notifying++;   /* the hooks stay valid until we are done */
	pthread_mutex_unlock(&a->mu);
	if (!ex && e->dir && inval_entries)
		inval_entries(arg);
	for (unsigned i = 0; !ex && inval && i < ATTR_GROUP; i++)
		if (e->told & (1ull << i))
			inval(arg, e->grp * ATTR_GROUP + i, e->gen[i]);
	pthread_mutex_lock(&a->mu);
	a->notifying--;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	drop_took(e, ex, d->queued_ms, start_ms, notify_ms, cl_now_ms());
	int rc = dg_unlock(e->lk, 0, NULL);
	lockres_retire(e->res, rc);
	free(e);
}

/* Under a->mu: token names a coordinator's granted EX. */
static int is_granted_ex(struct attr_cache *a, uint64_t token)
{
	int ex = 0;
	struct attr_lock *e = find_token(a, token, &ex);
	return e && ex && e->state == ATTR_GRANTED;
}

/* A coordinator's EX goes only between two engine operations (v->lock
 * free): an operation takes the EX of every inode it will write before its
 * first change (inode_lock_writes), and they must stay until it is done, or
 * a recall timing out half way would leave a change half made. Bounded: if
 * the engine is busy, the drop goes back in the queue and the others (a PR
 * this node still holds may be what the engine waits for) go first. */
static int lock_engine_for(struct cluster *c, uint64_t token)
{
	struct attr_cache *a = &c->attr;
	pthread_mutex_lock(&a->mu);
	int ex = is_granted_ex(a, token);
	pthread_mutex_unlock(&a->mu);
	if (!ex)
		return 0;
	struct timespec dl = cl_deadline_in(10);
	return pthread_mutex_timedlock(&c->v->lock, &dl) == 0 ? 1 : -1;
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
		if (!a->drops)
			a->drops_tail = &a->drops;
		pthread_mutex_unlock(&a->mu);
		int engine = lock_engine_for(c, d->token);
		if (engine >= 0) {
			attr_drop_one(c, d);
			if (engine)
				pthread_mutex_unlock(&c->v->lock);
			free(d);
		}
		pthread_mutex_lock(&a->mu);
		if (engine < 0)
			drop_append(a, d);   /* the engine is busy (10 ms tried): after the others */
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

int attr_start(struct cluster *c, unsigned max_inodes)
{
	struct attr_cache *a = &c->attr;
	a->pr_max = (max_inodes + ATTR_GROUP - 1) / ATTR_GROUP;
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	a->drops_tail = &a->drops;
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
				forget_copies(a, e);
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
			 "\"ex_waits\":%llu,\"pr_max\":%u,\"cached\":%u,\"cached_max\":%u}",
			 a->npr, a->nex, (unsigned long long)a->recalls,
			 (unsigned long long)a->ex_requests, (unsigned long long)a->ex_waits, a->pr_max,
			 a->ncached, a->pr_max * ATTR_GROUP);
	pthread_mutex_unlock(&a->mu);
	return n < 0 ? 0 : (size_t)n >= len ? len - 1 : (size_t)n;
}
