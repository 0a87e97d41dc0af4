/* File locks: the table (fs/plock.h). Ranges are kept per inode in a
 * bucket's list; an owner's ranges never overlap and adjacent ranges of one
 * type are merged, as Linux keeps them. */
#include "fs/plock.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUCKETS 256
#define GRACE_NODES_MAX 64

struct entry {
	struct entry *next;
	struct plock l;
};

struct plock_table {
	pthread_mutex_t mu;
	pthread_cond_t changed;
	struct entry *bucket[BUCKETS];
	uint64_t gen;
	/* grace: until the deadline or every expected node is done */
	uint64_t grace_until_ms;
	char expect[GRACE_NODES_MAX][PLOCK_NODE_MAX];
	bool done[GRACE_NODES_MAX];
	size_t nexpect;
	/* a mirror's open files whose locks were lost */
	uint64_t *lost;
	size_t nlost, lost_cap;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct plock_table *plock_table_new(void)
{
	struct plock_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	pthread_mutex_init(&t->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->changed, &ca);
	pthread_condattr_destroy(&ca);
	return t;
}

static unsigned clear_locked(struct plock_table *t)
{
	unsigned n = 0;
	for (size_t i = 0; i < BUCKETS; i++) {
		while (t->bucket[i]) {
			struct entry *e = t->bucket[i];
			t->bucket[i] = e->next;
			free(e);
			n++;
		}
	}
	return n;
}

void plock_table_free(struct plock_table *t)
{
	if (!t)
		return;
	clear_locked(t);
	free(t->lost);
	pthread_cond_destroy(&t->changed);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

static struct entry **bucket_of(struct plock_table *t, uint32_t ino)
{
	return &t->bucket[(ino * 2654435761u) % BUCKETS];
}

static bool same_owner(const struct plock *a, const struct plock *b)
{
	return a->owner == b->owner && a->kind == b->kind && strcmp(a->node, b->node) == 0;
}

static bool overlap(const struct plock *a, const struct plock *b)
{
	return a->start <= b->end && b->start <= a->end;
}

static bool conflicts(const struct plock *held, const struct plock *req)
{
	return held->ino == req->ino && held->kind == req->kind && !same_owner(held, req) &&
	       overlap(held, req) && (held->type == PLOCK_WRITE || req->type == PLOCK_WRITE);
}

static const struct entry *find_conflict(struct plock_table *t, const struct plock *req)
{
	for (const struct entry *e = *bucket_of(t, req->ino); e; e = e->next)
		if (conflicts(&e->l, req))
			return e;
	return NULL;
}

int plock_test(struct plock_table *t, const struct plock *req, struct plock *conflict)
{
	pthread_mutex_lock(&t->mu);
	const struct entry *e = req->type == PLOCK_UNLOCK ? NULL : find_conflict(t, req);
	if (e && conflict)
		*conflict = e->l;
	pthread_mutex_unlock(&t->mu);
	return e != NULL;
}

static struct entry *entry_new(const struct plock *l)
{
	struct entry *e = malloc(sizeof(*e));
	if (e)
		e->l = *l;
	return e;
}

/* The owner's ranges lose [start, end]: trimmed, split or removed. A split
 * that cannot get memory keeps the whole old range (more locked, never
 * less). */
static void cut_range(struct entry **head, const struct plock *req)
{
	for (struct entry **pp = head; *pp;) {
		struct entry *e = *pp;
		if (e->l.ino != req->ino || !same_owner(&e->l, req) || !overlap(&e->l, req)) {
			pp = &e->next;
			continue;
		}
		bool left = e->l.start < req->start, right = e->l.end > req->end;
		if (left && right) {
			struct entry *tail = entry_new(&e->l);
			if (!tail) {
				pp = &e->next;
				continue;
			}
			tail->l.start = req->end + 1;
			e->l.end = req->start - 1;
			tail->next = e->next;
			e->next = tail;
			pp = &tail->next;
		} else if (left) {
			e->l.end = req->start - 1;
			pp = &e->next;
		} else if (right) {
			e->l.start = req->end + 1;
			pp = &e->next;
		} else {
			*pp = e->next;
			free(e);
		}
	}
}

/* The new range swallows the owner's adjacent or overlapping ranges of its
 * type, then goes in. */
static void insert_merged(struct entry **head, const struct plock *req)
{
	struct plock l = *req;
	for (struct entry **pp = head; *pp;) {
		struct entry *e = *pp;
		bool touches = e->l.start <= (l.end == PLOCK_EOF ? l.end : l.end + 1) &&
			       l.start <= (e->l.end == PLOCK_EOF ? e->l.end : e->l.end + 1);
		if (e->l.ino == l.ino && same_owner(&e->l, &l) && e->l.type == l.type && touches) {
			l.start = e->l.start < l.start ? e->l.start : l.start;
			l.end = e->l.end > l.end ? e->l.end : l.end;
			*pp = e->next;
			free(e);
			continue;
		}
		pp = &e->next;
	}
	struct entry *n = entry_new(&l);
	if (n) {
		n->next = *head;
		*head = n;
	}
}

/* Waiters look again (plock_wait_change). */
static void changed_locked(struct plock_table *t)
{
	t->gen++;
	pthread_cond_broadcast(&t->changed);
}

/* Frees the entries of the list that match; returns how many. */
static unsigned remove_matching(struct entry **head, bool (*match)(const struct plock *l, const void *arg),
				const void *arg)
{
	unsigned n = 0;
	for (struct entry **pp = head; *pp;) {
		struct entry *e = *pp;
		if (match(&e->l, arg)) {
			*pp = e->next;
			free(e);
			n++;
		} else {
			pp = &e->next;
		}
	}
	return n;
}

static void apply_locked(struct plock_table *t, const struct plock *req)
{
	struct entry **head = bucket_of(t, req->ino);
	cut_range(head, req);
	if (req->type != PLOCK_UNLOCK)
		insert_merged(head, req);
	changed_locked(t);
}

int plock_set(struct plock_table *t, const struct plock *req, uint64_t *gen)
{
	pthread_mutex_lock(&t->mu);
	int rc = req->type != PLOCK_UNLOCK && find_conflict(t, req) ? -EAGAIN : 0;
	if (rc == 0)
		apply_locked(t, req);
	if (gen)
		*gen = t->gen;
	pthread_mutex_unlock(&t->mu);
	return rc;
}

int plock_owned(struct plock_table *t, const struct plock *req)
{
	int found = 0;
	pthread_mutex_lock(&t->mu);
	for (const struct entry *e = *bucket_of(t, req->ino); e && !found; e = e->next)
		found = e->l.ino == req->ino && same_owner(&e->l, req) && overlap(&e->l, req);
	pthread_mutex_unlock(&t->mu);
	return found;
}

void plock_apply(struct plock_table *t, const struct plock *req)
{
	pthread_mutex_lock(&t->mu);
	apply_locked(t, req);
	pthread_mutex_unlock(&t->mu);
}

static bool matches(const struct plock *l, const char *node, uint32_t ino, enum plock_by by,
		    uint64_t key)
{
	if (l->ino != ino || strcmp(l->node, node) != 0)
		return false;
	return by == PLOCK_BY_FH ? l->fh == key : l->kind == PLOCK_POSIX && l->owner == key;
}

struct release_key { const char *node; uint32_t ino; enum plock_by by; uint64_t key; };

static bool matches_key(const struct plock *l, const void *arg)
{
	const struct release_key *k = arg;
	return matches(l, k->node, k->ino, k->by, k->key);
}

unsigned plock_release(struct plock_table *t, const char *node, uint32_t ino, enum plock_by by,
		       uint64_t key)
{
	struct release_key k = { node, ino, by, key };
	pthread_mutex_lock(&t->mu);
	unsigned n = remove_matching(bucket_of(t, ino), matches_key, &k);
	if (n)
		changed_locked(t);
	pthread_mutex_unlock(&t->mu);
	return n;
}

int plock_holds(struct plock_table *t, const char *node, uint32_t ino, enum plock_by by, uint64_t key)
{
	int found = 0;
	pthread_mutex_lock(&t->mu);
	for (struct entry *e = *bucket_of(t, ino); e && !found; e = e->next)
		found = matches(&e->l, node, ino, by, key);
	pthread_mutex_unlock(&t->mu);
	return found;
}

static bool of_node(const struct plock *l, const void *node)
{
	return strcmp(l->node, node) == 0;
}

unsigned plock_drop_node(struct plock_table *t, const char *node)
{
	unsigned n = 0;
	pthread_mutex_lock(&t->mu);
	for (size_t i = 0; i < BUCKETS; i++)
		n += remove_matching(&t->bucket[i], of_node, node);
	if (n)
		changed_locked(t);
	pthread_mutex_unlock(&t->mu);
	return n;
}

int plock_snapshot(struct plock_table *t, const char *node, struct plock **out, size_t *n)
{
	pthread_mutex_lock(&t->mu);
	size_t count = 0;
	for (size_t i = 0; i < BUCKETS; i++)
		for (struct entry *e = t->bucket[i]; e; e = e->next)
			count += !node || strcmp(e->l.node, node) == 0;
	struct plock *a = calloc(count ? count : 1, sizeof(*a));
	if (!a) {
		pthread_mutex_unlock(&t->mu);
		return -ENOMEM;
	}
	size_t k = 0;
	for (size_t i = 0; i < BUCKETS; i++)
		for (struct entry *e = t->bucket[i]; e; e = e->next)
			if (!node || strcmp(e->l.node, node) == 0)
				a[k++] = e->l;
	pthread_mutex_unlock(&t->mu);
	*out = a;
	*n = k;
	return 0;
}

/* ---- a node's mirror ---------------------------------------------------------------- */

void plock_copy_into(struct plock_table *from, struct plock_table *to)
{
	struct plock *all;
	size_t n;
	if (plock_snapshot(from, NULL, &all, &n) != 0)
		return;
	for (size_t i = 0; i < n; i++)
		plock_apply(to, &all[i]);
	free(all);
}

static bool lost_locked(struct plock_table *t, uint64_t fh)
{
	for (size_t i = 0; i < t->nlost; i++)
		if (t->lost[i] == fh)
			return true;
	return false;
}

/* Out of memory: the file is not remembered (its I/O goes on unprotected,
 * as it would have without cluster locks); the loss is logged anyway. */
static void mark_lost_locked(struct plock_table *t, uint64_t fh)
{
	if (lost_locked(t, fh))
		return;
	if (t->nlost == t->lost_cap) {
		size_t cap = t->lost_cap ? t->lost_cap * 2 : 16;
		uint64_t *a = realloc(t->lost, cap * sizeof(*a));
		if (!a)
			return;
		t->lost = a;
		t->lost_cap = cap;
	}
	t->lost[t->nlost++] = fh;
}

unsigned plock_lose_all(struct plock_table *t)
{
	pthread_mutex_lock(&t->mu);
	unsigned n = 0;
	for (size_t i = 0; i < BUCKETS; i++)
		for (struct entry *e = t->bucket[i]; e; e = e->next, n++)
			mark_lost_locked(t, e->l.fh);
	clear_locked(t);
	changed_locked(t);
	pthread_mutex_unlock(&t->mu);
	return n;
}

void plock_forfeit(struct plock_table *t, const struct plock *l)
{
	pthread_mutex_lock(&t->mu);
	mark_lost_locked(t, l->fh);
	pthread_mutex_unlock(&t->mu);
	plock_release(t, l->node, l->ino, PLOCK_BY_FH, l->fh);
}

int plock_fh_lost(struct plock_table *t, uint64_t fh)
{
	pthread_mutex_lock(&t->mu);
	int lost = lost_locked(t, fh);
	pthread_mutex_unlock(&t->mu);
	return lost;
}

void plock_forget_fh(struct plock_table *t, uint64_t fh)
{
	pthread_mutex_lock(&t->mu);
	for (size_t i = 0; i < t->nlost; i++)
		if (t->lost[i] == fh)
			t->lost[i--] = t->lost[--t->nlost];
	pthread_mutex_unlock(&t->mu);
}

/* ---- generations and grace ---------------------------------------------------- */

uint64_t plock_gen(struct plock_table *t)
{
	pthread_mutex_lock(&t->mu);
	uint64_t g = t->gen;
	pthread_mutex_unlock(&t->mu);
	return g;
}

static bool grace_locked(struct plock_table *t)
{
	if (!t->grace_until_ms)
		return false;
	bool all_done = true;
	for (size_t i = 0; i < t->nexpect; i++)
		all_done = all_done && t->done[i];
	if (all_done || now_ms() >= t->grace_until_ms) {
		t->grace_until_ms = 0;   /* over: waiters look again */
		changed_locked(t);
		return false;
	}
	return true;
}

uint64_t plock_wait_change(struct plock_table *t, uint64_t gen, unsigned timeout_ms)
{
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += timeout_ms / 1000;
	dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&t->mu);
	grace_locked(t);   /* a grace period that ran out ends now */
	while (t->gen == gen)
		if (pthread_cond_timedwait(&t->changed, &t->mu, &dl) == ETIMEDOUT)
			break;
	uint64_t g = t->gen;
	pthread_mutex_unlock(&t->mu);
	return g;
}

void plock_begin_grace(struct plock_table *t, const char *const *expect, size_t n, unsigned max_ms)
{
	pthread_mutex_lock(&t->mu);
	clear_locked(t);
	t->nexpect = n < GRACE_NODES_MAX ? n : GRACE_NODES_MAX;
	for (size_t i = 0; i < t->nexpect; i++) {
		strncpy(t->expect[i], expect[i], PLOCK_NODE_MAX - 1);
		t->expect[i][PLOCK_NODE_MAX - 1] = 0;
		t->done[i] = false;
	}
	t->grace_until_ms = now_ms() + max_ms;
	changed_locked(t);
	grace_locked(t);   /* nobody to wait for: over at once */
	pthread_mutex_unlock(&t->mu);
}

void plock_reclaim_done(struct plock_table *t, const char *node)
{
	pthread_mutex_lock(&t->mu);
	for (size_t i = 0; i < t->nexpect; i++)
		if (strcmp(t->expect[i], node) == 0)
			t->done[i] = true;
	grace_locked(t);
	pthread_mutex_unlock(&t->mu);
}

size_t plock_not_reclaimed(struct plock_table *t, char (*names)[PLOCK_NODE_MAX], size_t max)
{
	size_t n = 0;
	pthread_mutex_lock(&t->mu);
	for (size_t i = 0; i < t->nexpect; i++)
		if (!t->done[i]) {
			if (n < max)
				memcpy(names[n], t->expect[i], PLOCK_NODE_MAX);
			n++;
		}
	pthread_mutex_unlock(&t->mu);
	return n;
}

int plock_in_grace(struct plock_table *t)
{
	pthread_mutex_lock(&t->mu);
	int g = grace_locked(t);
	pthread_mutex_unlock(&t->mu);
	return g;
}
