/* The replicated lock state machine behind dlm-glue's cpg backend.
 *
 * Every member applies the same events in the same order, so every decision
 * here must follow from the state and the event alone: iteration orders are
 * replicated orders (resources in creation order, members in join order,
 * locks in queue order), never hash or address order. Each operation
 * allocates everything it needs before it changes anything, so a failed
 * allocation leaves the table as it was. Semantics: docs/locking.md. */
#include "dlm-glue/lockstate.h"

#include <stdlib.h>
#include <string.h>

enum {
	Q_GRANTED = LS_QUEUE_GRANTED,
	Q_CONVERTING = LS_QUEUE_CONVERTING,
	Q_WAITING = LS_QUEUE_WAITING,
	Q_COUNT = 3,
};

#define SNAP_MAGIC   0x43534c53u /* "CSLS" */
#define SNAP_VERSION 1
#define INDEX_MIN_BUCKETS 64

struct ls_member {
	struct ls_member *prev, *next;  /* join order */
	uint64_t last_tag;
	uint64_t joined_at;
	uint32_t nodeid;
	uint32_t incarnation;
	uint32_t nlocks;
	bool departed;
};

struct ls_lock {
	struct ls_lock *prev, *next;    /* queue order */
	struct ls_lock *index_next;
	struct ls_resource *resource;
	struct ls_member *owner;
	uint64_t lockid;
	uint64_t tag;                   /* request that queued or last granted it */
	uint8_t queue;
	uint8_t granted;
	uint8_t requested;
	uint8_t req_flags;              /* VALBLK of that request */
	bool blocking_notified;
	uint8_t pending_lvb[LS_LVB_LEN]; /* written when a queued down-conversion is granted */
};

struct lock_queue {
	struct ls_lock *first, *last;
};

struct ls_resource {
	struct ls_resource *prev, *next; /* creation order */
	struct ls_resource *index_next;
	struct lock_queue queues[Q_COUNT];
	uint32_t holders[LS_MODE_COUNT]; /* granted modes of granted + converting locks */
	uint32_t nlocks;
	uint8_t name_len;
	uint8_t name[LS_NAME_MAX];
	uint8_t lvb[LS_LVB_LEN];
	bool lvb_invalid;
};

struct lockstate {
	struct ls_member *first_member, *last_member;
	struct ls_resource *first_resource, *last_resource;
	struct ls_resource **resource_buckets;
	size_t resource_nbuckets;
	size_t nresources;
	struct ls_lock **lock_buckets;
	size_t lock_nbuckets;
	uint32_t nlocks;
	uint32_t max_locks;
	uint32_t last_incarnation;
	uint64_t position;
	uint64_t ring_seq;
	bool quorate;
	/* Catch-up after a snapshot: the cursor counts the replayed events from
	 * our own join on; those at or before `position` are already applied. */
	bool catching_up;
	bool awaiting_own_join;
	uint64_t catch_up_cursor;
	uint32_t self_nodeid;
};

/* ---- modes ---------------------------------------------------------------- */

static const uint8_t compat_matrix[LS_MODE_COUNT][LS_MODE_COUNT] = {
	/*          NL CR CW PR PW EX */
	/* NL */ {  1, 1, 1, 1, 1, 1 },
	/* CR */ {  1, 1, 1, 1, 1, 0 },
	/* CW */ {  1, 1, 1, 0, 0, 0 },
	/* PR */ {  1, 1, 0, 1, 0, 0 },
	/* PW */ {  1, 1, 0, 0, 0, 0 },
	/* EX */ {  1, 0, 0, 0, 0, 0 },
};

static bool mode_valid(uint8_t mode)
{
	return mode < LS_MODE_COUNT;
}

bool ls_mode_compatible(uint8_t held, uint8_t wanted)
{
	return mode_valid(held) && mode_valid(wanted) && compat_matrix[held][wanted];
}

/* Bit m set when mode m can be held alongside `mode`. */
static unsigned compat_set(uint8_t mode)
{
	unsigned set = 0;
	for (uint8_t m = 0; m < LS_MODE_COUNT; m++)
		if (compat_matrix[mode][m])
			set |= 1u << m;
	return set;
}

bool ls_mode_is_downconvert(uint8_t from, uint8_t to)
{
	if (!mode_valid(from) || !mode_valid(to))
		return false;
	unsigned before = compat_set(from);
	return (compat_set(to) & before) == before;
}

uint8_t ls_mode_join(uint8_t a, uint8_t b)
{
	if (!mode_valid(a))
		return b;
	if (!mode_valid(b))
		return a;
	unsigned both = compat_set(a) & compat_set(b);
	for (uint8_t m = 0; m < LS_MODE_COUNT; m++)
		if (compat_set(m) == both)
			return m;
	return LS_MODE_EX; /* unreachable: the compatible sets are closed under ∩ */
}

const char *ls_mode_name(uint8_t mode)
{
	static const char *const names[LS_MODE_COUNT] = { "NL", "CR", "CW", "PR", "PW", "EX" };
	if (mode == LS_MODE_NONE)
		return "--";
	return mode_valid(mode) ? names[mode] : "??";
}

static bool writes_lvb(uint8_t granted)
{
	return granted == LS_MODE_PW || granted == LS_MODE_EX;
}

const char *ls_strerror(int status)
{
	switch (status) {
	case LS_OK: return "ok";
	case LS_DUPLICATE: return "duplicate request";
	case LS_IGNORED: return "ignored";
	case LS_SKIPPED: return "already in the snapshot";
	case LS_ERR_MALFORMED: return "malformed";
	case LS_ERR_NOMEM: return "out of memory";
	case LS_ERR_SEQUENCE: return "catch-up must start at our own join";
	case LS_ERR_NOT_MEMBER: return "not a live member in the snapshot";
	case LS_ERR_SPACE: return "buffer too small";
	default: return "unknown status";
	}
}

/* ---- hashing -------------------------------------------------------------- */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME  0x100000001b3ull

static uint64_t fnv1a(uint64_t hash, const void *data, size_t len)
{
	const uint8_t *p = data;
	for (size_t i = 0; i < len; i++) {
		hash ^= p[i];
		hash *= FNV_PRIME;
	}
	return hash;
}

static uint64_t lock_key_hash(uint32_t incarnation, uint64_t lockid)
{
	uint64_t x = lockid ^ ((uint64_t)incarnation * 0x9e3779b97f4a7c15ull);
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* ---- indexes (lookups only; never iterated for output) ---------------------- */

static struct ls_resource *find_resource(const struct lockstate *ls,
					 const uint8_t *name, size_t len)
{
	size_t b = fnv1a(FNV_OFFSET, name, len) & (ls->resource_nbuckets - 1);
	for (struct ls_resource *r = ls->resource_buckets[b]; r; r = r->index_next)
		if (r->name_len == len && memcmp(r->name, name, len) == 0)
			return r;
	return NULL;
}

/* Growing is an optimisation: when it cannot allocate, chains get longer and
 * every answer stays the same. */
static void grow_resource_index(struct lockstate *ls)
{
	if (ls->nresources < ls->resource_nbuckets * 2 || ls->resource_nbuckets > SIZE_MAX / 4 / sizeof(void *))
		return;
	size_t n = ls->resource_nbuckets * 2;
	struct ls_resource **buckets = calloc(n, sizeof(*buckets));
	if (!buckets)
		return;
	for (struct ls_resource *r = ls->first_resource; r; r = r->next) {
		size_t b = fnv1a(FNV_OFFSET, r->name, r->name_len) & (n - 1);
		r->index_next = buckets[b];
		buckets[b] = r;
	}
	free(ls->resource_buckets);
	ls->resource_buckets = buckets;
	ls->resource_nbuckets = n;
}

static void link_resource(struct lockstate *ls, struct ls_resource *res)
{
	res->prev = ls->last_resource;
	res->next = NULL;
	if (ls->last_resource)
		ls->last_resource->next = res;
	else
		ls->first_resource = res;
	ls->last_resource = res;
	size_t b = fnv1a(FNV_OFFSET, res->name, res->name_len) & (ls->resource_nbuckets - 1);
	res->index_next = ls->resource_buckets[b];
	ls->resource_buckets[b] = res;
	ls->nresources++;
	grow_resource_index(ls);
}

static void free_resource(struct lockstate *ls, struct ls_resource *res)
{
	size_t b = fnv1a(FNV_OFFSET, res->name, res->name_len) & (ls->resource_nbuckets - 1);
	struct ls_resource **pp = &ls->resource_buckets[b];
	while (*pp != res)
		pp = &(*pp)->index_next;
	*pp = res->index_next;
	if (res->prev)
		res->prev->next = res->next;
	else
		ls->first_resource = res->next;
	if (res->next)
		res->next->prev = res->prev;
	else
		ls->last_resource = res->prev;
	ls->nresources--;
	free(res);
}

static struct ls_lock *find_lock(const struct lockstate *ls, uint32_t incarnation, uint64_t lockid)
{
	size_t b = lock_key_hash(incarnation, lockid) & (ls->lock_nbuckets - 1);
	for (struct ls_lock *l = ls->lock_buckets[b]; l; l = l->index_next)
		if (l->lockid == lockid && l->owner->incarnation == incarnation)
			return l;
	return NULL;
}

static void grow_lock_index(struct lockstate *ls)
{
	if (ls->nlocks < ls->lock_nbuckets * 2 || ls->lock_nbuckets > SIZE_MAX / 4 / sizeof(void *))
		return;
	size_t n = ls->lock_nbuckets * 2;
	struct ls_lock **buckets = calloc(n, sizeof(*buckets));
	if (!buckets)
		return;
	for (size_t i = 0; i < ls->lock_nbuckets; i++) {
		struct ls_lock *l = ls->lock_buckets[i];
		while (l) {
			struct ls_lock *next = l->index_next;
			size_t b = lock_key_hash(l->owner->incarnation, l->lockid) & (n - 1);
			l->index_next = buckets[b];
			buckets[b] = l;
			l = next;
		}
	}
	free(ls->lock_buckets);
	ls->lock_buckets = buckets;
	ls->lock_nbuckets = n;
}

/* ---- queues --------------------------------------------------------------- */

static bool is_holder(const struct ls_lock *lock)
{
	return lock->queue != Q_WAITING;
}

static void queue_append(struct ls_resource *res, struct ls_lock *lock, uint8_t q)
{
	struct lock_queue *queue = &res->queues[q];
	lock->queue = q;
	lock->next = NULL;
	lock->prev = queue->last;
	if (queue->last)
		queue->last->next = lock;
	else
		queue->first = lock;
	queue->last = lock;
	if (is_holder(lock))
		res->holders[lock->granted]++;
}

static void queue_remove(struct ls_resource *res, struct ls_lock *lock)
{
	struct lock_queue *queue = &res->queues[lock->queue];
	if (lock->prev)
		lock->prev->next = lock->next;
	else
		queue->first = lock->next;
	if (lock->next)
		lock->next->prev = lock->prev;
	else
		queue->last = lock->prev;
	if (is_holder(lock))
		res->holders[lock->granted]--;
}

/* Adds an allocated lock to its resource, the index and its owner. */
static void attach_lock(struct lockstate *ls, struct ls_lock *lock, uint8_t q)
{
	struct ls_resource *res = lock->resource;
	queue_append(res, lock, q);
	size_t b = lock_key_hash(lock->owner->incarnation, lock->lockid) & (ls->lock_nbuckets - 1);
	lock->index_next = ls->lock_buckets[b];
	ls->lock_buckets[b] = lock;
	res->nlocks++;
	lock->owner->nlocks++;
	ls->nlocks++;
	grow_lock_index(ls);
}

/* Frees the lock; the caller settles (and so maybe frees) its resource. */
static void destroy_lock(struct lockstate *ls, struct ls_lock *lock)
{
	struct ls_resource *res = lock->resource;
	queue_remove(res, lock);
	size_t b = lock_key_hash(lock->owner->incarnation, lock->lockid) & (ls->lock_nbuckets - 1);
	struct ls_lock **pp = &ls->lock_buckets[b];
	while (*pp != lock)
		pp = &(*pp)->index_next;
	*pp = lock->index_next;
	res->nlocks--;
	lock->owner->nlocks--;
	ls->nlocks--;
	free(lock);
}

/* Could `mode` be held next to every holder other than self? */
static bool holders_compatible(const struct ls_resource *res, const struct ls_lock *self, uint8_t mode)
{
	for (uint8_t g = 0; g < LS_MODE_COUNT; g++) {
		uint32_t n = res->holders[g];
		if (self && is_holder(self) && self->granted == g)
			n--;
		if (n && !compat_matrix[g][mode])
			return false;
	}
	return true;
}

/* ---- effects -------------------------------------------------------------- */

static void emit(const struct ls_sink *sink, const struct ls_effect *effect)
{
	if (sink && sink->fn)
		sink->fn(sink->ctx, effect);
}

static struct ls_effect member_effect(uint8_t kind, const struct ls_member *m, uint64_t lockid, uint64_t tag)
{
	struct ls_effect e;
	memset(&e, 0, sizeof(e));
	e.kind = kind;
	e.mode = LS_MODE_NONE;
	e.nodeid = m->nodeid;
	e.incarnation = m->incarnation;
	e.lockid = lockid;
	e.tag = tag;
	return e;
}

static void emit_failure(const struct ls_sink *sink, const struct ls_member *m, const struct ls_msg *msg,
			 uint8_t failure, uint8_t still_holds, uint8_t flags)
{
	struct ls_effect e = member_effect(LS_EFFECT_FAILED, m, msg->lockid, msg->tag);
	e.failure = failure;
	e.mode = still_holds;
	e.flags = flags;
	emit(sink, &e);
}

static void emit_grant(const struct ls_lock *lock, const struct ls_sink *sink)
{
	const struct ls_resource *res = lock->resource;
	struct ls_effect e = member_effect(LS_EFFECT_GRANT, lock->owner, lock->lockid, lock->tag);
	e.mode = lock->granted;
	if (lock->req_flags & LS_LKF_VALBLK) {
		e.flags |= LS_EF_LVB;
		if (res->lvb_invalid)
			e.flags |= LS_EF_LVB_INVALID;
		memcpy(e.lvb, res->lvb, LS_LVB_LEN);
	}
	emit(sink, &e);
}

static void emit_queued(const struct lockstate *ls, const struct ls_lock *lock, const struct ls_sink *sink)
{
	struct ls_effect e = member_effect(LS_EFFECT_QUEUED, lock->owner, lock->lockid, lock->tag);
	e.mode = lock->requested;
	if (!ls->quorate)
		e.flags |= LS_EF_NOT_QUORATE;
	emit(sink, &e);
}

static void set_quorate(struct lockstate *ls, bool quorate, const struct ls_sink *sink)
{
	if (ls->quorate == quorate)
		return;
	ls->quorate = quorate;
	struct ls_effect e;
	memset(&e, 0, sizeof(e));
	e.kind = LS_EFFECT_QUORUM;
	e.mode = LS_MODE_NONE;
	if (!quorate)
		e.flags = LS_EF_NOT_QUORATE;
	emit(sink, &e);
}

/* ---- granting ------------------------------------------------------------- */

static void write_lvb(struct ls_resource *res, const uint8_t *lvb)
{
	memcpy(res->lvb, lvb, LS_LVB_LEN);
	res->lvb_invalid = false;
}

static bool conversion_writes_lvb(const struct ls_lock *lock)
{
	return (lock->req_flags & LS_LKF_VALBLK) && writes_lvb(lock->granted) &&
	       ls_mode_is_downconvert(lock->granted, lock->requested);
}

static void grant_conversion(struct ls_lock *lock, const struct ls_sink *sink)
{
	struct ls_resource *res = lock->resource;
	if (conversion_writes_lvb(lock))
		write_lvb(res, lock->pending_lvb);
	uint8_t mode = lock->requested;
	queue_remove(res, lock);
	lock->granted = mode;
	lock->blocking_notified = false;
	queue_append(res, lock, Q_GRANTED);
	emit_grant(lock, sink);
}

static void grant_waiter(struct ls_lock *lock, const struct ls_sink *sink)
{
	struct ls_resource *res = lock->resource;
	queue_remove(res, lock);
	lock->granted = lock->requested;
	lock->blocking_notified = false;
	queue_append(res, lock, Q_GRANTED);
	emit_grant(lock, sink);
}

/* Grants the queued down-conversions that do (writers) or do not write the
 * value block. */
static void grant_downconversions(struct ls_resource *res, bool writers, const struct ls_sink *sink)
{
	struct ls_lock *lock = res->queues[Q_CONVERTING].first;
	while (lock) {
		struct ls_lock *next = lock->next;
		if (ls_mode_is_downconvert(lock->granted, lock->requested) && conversion_writes_lvb(lock) == writers)
			grant_conversion(lock, sink);
		lock = next;
	}
}

/* Conversions before new requests, FIFO within each queue. Down-conversions
 * only queue while not quorate, and never conflict, so they go first; the
 * one that writes the value block (only one lock can hold PW or EX) goes
 * before the rest, so that every grant of the pass returns what it wrote. */
static void grant_pending(const struct lockstate *ls, struct ls_resource *res, const struct ls_sink *sink)
{
	if (!ls->quorate)
		return;
	grant_downconversions(res, true, sink);
	grant_downconversions(res, false, sink);
	struct ls_lock *lock;
	while ((lock = res->queues[Q_CONVERTING].first) && holders_compatible(res, lock, lock->requested))
		grant_conversion(lock, sink);
	if (res->queues[Q_CONVERTING].first)
		return;
	while ((lock = res->queues[Q_WAITING].first) && holders_compatible(res, NULL, lock->requested))
		grant_waiter(lock, sink);
}

/* What the holder must get out of the way of, joined over every waiter it
 * blocks; LS_MODE_NONE when it blocks nobody. */
static uint8_t blocking_mode(const struct ls_lock *holder, const uint32_t wanted[LS_MODE_COUNT])
{
	uint8_t blocking = LS_MODE_NONE;
	for (uint8_t m = 0; m < LS_MODE_COUNT; m++) {
		uint32_t n = wanted[m];
		if (holder->queue == Q_CONVERTING && holder->requested == m)
			n--;
		if (n && !compat_matrix[holder->granted][m])
			blocking = ls_mode_join(blocking, m);
	}
	return blocking;
}

/* A blocking episode of a holder starts when it first blocks a waiter and ends
 * when its granted mode changes or it blocks nobody; one callback per episode.
 * Departed holders cannot act on a callback, so they are not sent one. */
static void notify_blockers(struct ls_resource *res, const struct ls_sink *sink)
{
	uint32_t wanted[LS_MODE_COUNT] = { 0 };
	for (int q = Q_CONVERTING; q <= Q_WAITING; q++)
		for (const struct ls_lock *l = res->queues[q].first; l; l = l->next)
			wanted[l->requested]++;
	for (int q = Q_GRANTED; q <= Q_CONVERTING; q++) {
		for (struct ls_lock *holder = res->queues[q].first; holder; holder = holder->next) {
			uint8_t blocking = blocking_mode(holder, wanted);
			if (blocking == LS_MODE_NONE) {
				holder->blocking_notified = false;
				continue;
			}
			if (holder->blocking_notified)
				continue;
			holder->blocking_notified = true;
			if (holder->owner->departed)
				continue;
			struct ls_effect e = member_effect(LS_EFFECT_BLOCKING, holder->owner, holder->lockid, 0);
			e.mode = blocking;
			emit(sink, &e);
		}
	}
}

/* Brings a resource back to its resting state after a change: freed when
 * empty, else everything grantable granted and every blocker notified. */
static void settle(struct lockstate *ls, struct ls_resource *res, const struct ls_sink *sink)
{
	if (res->nlocks == 0) {
		free_resource(ls, res);
		return;
	}
	grant_pending(ls, res, sink);
	notify_blockers(res, sink);
}

static void settle_all(struct lockstate *ls, const struct ls_sink *sink)
{
	struct ls_resource *res = ls->first_resource;
	while (res) {
		struct ls_resource *next = res->next;
		settle(ls, res, sink);
		res = next;
	}
}

/* ---- requests ------------------------------------------------------------- */

/* Allocates the lock, and its resource if it has none yet; NULL when out of
 * memory, having changed nothing. */
static struct ls_lock *new_lock(struct lockstate *ls, struct ls_resource *res, struct ls_member *owner,
				const struct ls_msg *msg)
{
	struct ls_lock *lock = calloc(1, sizeof(*lock));
	struct ls_resource *fresh = res ? NULL : calloc(1, sizeof(*fresh));
	if (!lock || (!res && !fresh)) {
		free(lock);
		free(fresh);
		return NULL;
	}
	if (fresh) {
		fresh->name_len = msg->name_len;
		memcpy(fresh->name, msg->name, msg->name_len);
		link_resource(ls, fresh);
		res = fresh;
	}
	lock->resource = res;
	lock->owner = owner;
	lock->lockid = msg->lockid;
	lock->tag = msg->tag;
	lock->req_flags = msg->flags & LS_LKF_VALBLK;
	lock->requested = msg->mode;
	return lock;
}

static int do_lock(struct lockstate *ls, struct ls_member *sender, const struct ls_msg *msg,
		   const struct ls_sink *sink)
{
	if (find_lock(ls, sender->incarnation, msg->lockid)) {
		emit_failure(sink, sender, msg, LS_FAIL_EXISTS, LS_MODE_NONE, 0);
		return LS_OK;
	}
	if (ls->nlocks >= ls->max_locks) {
		emit_failure(sink, sender, msg, LS_FAIL_NOSPC, LS_MODE_NONE, 0);
		return LS_OK;
	}
	struct ls_resource *res = find_resource(ls, msg->name, msg->name_len);
	bool grantable = ls->quorate &&
		(!res || (!res->queues[Q_CONVERTING].first && !res->queues[Q_WAITING].first &&
			  holders_compatible(res, NULL, msg->mode)));
	if (!grantable && (msg->flags & LS_LKF_NOQUEUE)) {
		emit_failure(sink, sender, msg, LS_FAIL_WOULDBLOCK, LS_MODE_NONE,
			     ls->quorate ? 0 : LS_EF_NOT_QUORATE);
		return LS_OK;
	}
	struct ls_lock *lock = new_lock(ls, res, sender, msg);
	if (!lock)
		return LS_ERR_NOMEM;
	if (grantable) {
		lock->granted = msg->mode;
		attach_lock(ls, lock, Q_GRANTED);
		emit_grant(lock, sink);
		return LS_OK;
	}
	lock->granted = LS_MODE_NONE;
	attach_lock(ls, lock, Q_WAITING);
	emit_queued(ls, lock, sink);
	notify_blockers(lock->resource, sink);
	return LS_OK;
}

/* Strict FIFO among conversions: a conversion queued behind one whose wanted
 * mode it blocks by what it already holds could never be granted. */
static bool conversion_would_deadlock(const struct ls_resource *res, const struct ls_lock *lock)
{
	for (const struct ls_lock *ahead = res->queues[Q_CONVERTING].first; ahead; ahead = ahead->next) {
		if (ls_mode_is_downconvert(ahead->granted, ahead->requested))
			continue;
		if (!compat_matrix[lock->granted][ahead->requested])
			return true;
	}
	return false;
}

static void take_request(struct ls_lock *lock, const struct ls_msg *msg)
{
	lock->tag = msg->tag;
	lock->req_flags = msg->flags & LS_LKF_VALBLK;
	lock->requested = msg->mode;
	memcpy(lock->pending_lvb, msg->lvb, LS_LVB_LEN);
}

static int do_convert(struct lockstate *ls, struct ls_member *sender, const struct ls_msg *msg,
		      const struct ls_sink *sink)
{
	struct ls_lock *lock = find_lock(ls, sender->incarnation, msg->lockid);
	if (!lock) {
		emit_failure(sink, sender, msg, LS_FAIL_UNKNOWN_LOCK, LS_MODE_NONE, 0);
		return LS_OK;
	}
	if (lock->queue != Q_GRANTED) {
		emit_failure(sink, sender, msg, LS_FAIL_BUSY, lock->granted, 0);
		return LS_OK;
	}
	struct ls_resource *res = lock->resource;
	bool down = ls_mode_is_downconvert(lock->granted, msg->mode);
	bool grantable = ls->quorate &&
		(down || (!res->queues[Q_CONVERTING].first && holders_compatible(res, lock, msg->mode)));
	if (grantable) {
		take_request(lock, msg);
		if (down && (msg->flags & LS_LKF_VALBLK) && writes_lvb(lock->granted))
			write_lvb(res, msg->lvb);
		res->holders[lock->granted]--;
		res->holders[msg->mode]++;
		lock->granted = msg->mode;
		lock->blocking_notified = false;
		emit_grant(lock, sink);
		settle(ls, res, sink);
		return LS_OK;
	}
	if (msg->flags & LS_LKF_NOQUEUE) {
		emit_failure(sink, sender, msg, LS_FAIL_WOULDBLOCK, lock->granted,
			     ls->quorate ? 0 : LS_EF_NOT_QUORATE);
		return LS_OK;
	}
	if (!down && conversion_would_deadlock(res, lock)) {
		emit_failure(sink, sender, msg, LS_FAIL_DEADLOCK, lock->granted, 0);
		return LS_OK;
	}
	take_request(lock, msg);
	queue_remove(res, lock);
	queue_append(res, lock, Q_CONVERTING);
	emit_queued(ls, lock, sink);
	notify_blockers(res, sink);
	return LS_OK;
}

static int do_unlock(struct lockstate *ls, struct ls_member *sender, const struct ls_msg *msg,
		     const struct ls_sink *sink)
{
	struct ls_lock *lock = find_lock(ls, sender->incarnation, msg->lockid);
	if (!lock) {
		emit_failure(sink, sender, msg, LS_FAIL_UNKNOWN_LOCK, LS_MODE_NONE, 0);
		return LS_OK;
	}
	struct ls_resource *res = lock->resource;
	if ((msg->flags & LS_LKF_VALBLK) && is_holder(lock) && writes_lvb(lock->granted))
		write_lvb(res, msg->lvb);
	struct ls_effect e = member_effect(LS_EFFECT_UNLOCKED, sender, msg->lockid, msg->tag);
	destroy_lock(ls, lock);
	emit(sink, &e);
	settle(ls, res, sink);
	return LS_OK;
}

static int do_cancel(struct lockstate *ls, struct ls_member *sender, const struct ls_msg *msg,
		     const struct ls_sink *sink)
{
	struct ls_lock *lock = find_lock(ls, sender->incarnation, msg->lockid);
	if (!lock) {
		emit_failure(sink, sender, msg, LS_FAIL_UNKNOWN_LOCK, LS_MODE_NONE, 0);
		return LS_OK;
	}
	if (lock->queue == Q_GRANTED) {
		emit_failure(sink, sender, msg, LS_FAIL_NOT_WAITING, lock->granted, 0);
		return LS_OK;
	}
	struct ls_resource *res = lock->resource;
	struct ls_effect e = member_effect(LS_EFFECT_CANCELED, sender, msg->lockid, msg->tag);
	if (lock->queue == Q_WAITING) {
		destroy_lock(ls, lock);
	} else {
		queue_remove(res, lock);
		lock->requested = lock->granted;
		queue_append(res, lock, Q_GRANTED);
		e.mode = lock->granted;
	}
	emit(sink, &e);
	settle(ls, res, sink);
	return LS_OK;
}

/* ---- membership ----------------------------------------------------------- */

static struct ls_member *live_member(const struct lockstate *ls, uint32_t nodeid)
{
	for (struct ls_member *m = ls->first_member; m; m = m->next)
		if (m->nodeid == nodeid && !m->departed)
			return m;
	return NULL;
}

static void append_member(struct lockstate *ls, struct ls_member *m)
{
	m->prev = ls->last_member;
	m->next = NULL;
	if (ls->last_member)
		ls->last_member->next = m;
	else
		ls->first_member = m;
	ls->last_member = m;
}

static void free_member(struct lockstate *ls, struct ls_member *m)
{
	if (m->prev)
		m->prev->next = m->next;
	else
		ls->first_member = m->next;
	if (m->next)
		m->next->prev = m->prev;
	else
		ls->last_member = m->prev;
	free(m);
}

/* A departed member's waiting requests and conversions die with it; what it
 * holds keeps blocking until it is fenced. */
static void drop_pending_requests(struct lockstate *ls, const struct ls_member *m)
{
	for (struct ls_resource *res = ls->first_resource; res; res = res->next) {
		struct ls_lock *lock = res->queues[Q_CONVERTING].first;
		while (lock) {
			struct ls_lock *next = lock->next;
			if (lock->owner == m) {
				queue_remove(res, lock);
				lock->requested = lock->granted;
				queue_append(res, lock, Q_GRANTED);
			}
			lock = next;
		}
		lock = res->queues[Q_WAITING].first;
		while (lock) {
			struct ls_lock *next = lock->next;
			if (lock->owner == m)
				destroy_lock(ls, lock);
			lock = next;
		}
	}
}

static void depart_member(struct lockstate *ls, struct ls_member *m, const struct ls_sink *sink)
{
	m->departed = true;
	drop_pending_requests(ls, m);
	struct ls_effect e = member_effect(LS_EFFECT_DEPARTED, m, 0, 0);
	if (m->nlocks)
		e.flags = LS_EF_NEEDS_FENCE;
	emit(sink, &e);
	if (!m->nlocks)
		free_member(ls, m); /* nothing to protect, nothing to fence */
}

/* A fenced holder of PW or EX may have changed what the value block describes
 * without writing it back; later grants say so. */
static void release_member_locks(struct lockstate *ls, const struct ls_member *m)
{
	for (struct ls_resource *res = ls->first_resource; res; res = res->next) {
		for (int q = Q_GRANTED; q < Q_COUNT; q++) {
			struct ls_lock *lock = res->queues[q].first;
			while (lock) {
				struct ls_lock *next = lock->next;
				if (lock->owner == m) {
					if (is_holder(lock) && writes_lvb(lock->granted))
						res->lvb_invalid = true;
					destroy_lock(ls, lock);
				}
				lock = next;
			}
		}
	}
}

static int do_fenced(struct lockstate *ls, const struct ls_msg *msg, const struct ls_sink *sink)
{
	bool released = false;
	struct ls_member *m = ls->first_member;
	while (m) {
		struct ls_member *next = m->next;
		if (m->departed && m->nodeid == msg->fenced_nodeid && m->incarnation <= msg->fenced_incarnation) {
			release_member_locks(ls, m);
			struct ls_effect e = member_effect(LS_EFFECT_FENCED, m, 0, 0);
			emit(sink, &e);
			free_member(ls, m);
			released = true;
		}
		m = next;
	}
	if (!released)
		return LS_IGNORED;
	settle_all(ls, sink);
	return LS_OK;
}

/* Verdicts are keyed by ring so that one sent before a membership change
 * cannot restore quorum after it. */
static int do_quorum(struct lockstate *ls, const struct ls_msg *msg, const struct ls_sink *sink)
{
	if (msg->ring_seq < ls->ring_seq)
		return LS_IGNORED;
	ls->ring_seq = msg->ring_seq;
	bool was = ls->quorate;
	set_quorate(ls, msg->quorate != 0, sink);
	if (!was && ls->quorate)
		settle_all(ls, sink);
	return LS_OK;
}

/* ---- event entry points ---------------------------------------------------- */

/* While catching up, every well-formed event is one the snapshot already
 * holds (the cursor stops being behind exactly at the snapshot's position).
 * Changes nothing: advance_position() commits. */
static int catch_up_gate(const struct lockstate *ls, bool joins_self)
{
	if (!ls->catching_up)
		return LS_OK;
	if (ls->awaiting_own_join && !joins_self)
		return LS_ERR_SEQUENCE;
	return LS_SKIPPED;
}

static void advance_position(struct lockstate *ls)
{
	if (!ls->catching_up) {
		ls->position++;
		return;
	}
	ls->awaiting_own_join = false;
	if (++ls->catch_up_cursor == ls->position)
		ls->catching_up = false;
}

static int apply_request(struct lockstate *ls, struct ls_member *sender, const struct ls_msg *msg,
			 const struct ls_sink *sink)
{
	switch (msg->type) {
	case LS_MSG_LOCK: return do_lock(ls, sender, msg, sink);
	case LS_MSG_CONVERT: return do_convert(ls, sender, msg, sink);
	case LS_MSG_UNLOCK: return do_unlock(ls, sender, msg, sink);
	case LS_MSG_CANCEL: return do_cancel(ls, sender, msg, sink);
	case LS_MSG_FENCED: return do_fenced(ls, msg, sink);
	case LS_MSG_QUORUM: return do_quorum(ls, msg, sink);
	default: return LS_IGNORED;
	}
}

static bool msg_valid(const struct ls_msg *m);

int ls_apply_msg(struct lockstate *ls, uint32_t sender_nodeid, const struct ls_msg *msg,
		 const struct ls_sink *sink)
{
	if (sender_nodeid == 0 || !msg_valid(msg))
		return LS_ERR_MALFORMED;
	int gate = catch_up_gate(ls, false);
	if (gate == LS_SKIPPED)
		advance_position(ls);
	if (gate != LS_OK)
		return gate;
	/* CPG delivers nothing from a non-member; a wiring bug must not
	 * resurrect anyone, so such a message is counted and dropped. */
	struct ls_member *sender = live_member(ls, sender_nodeid);
	int status;
	if (!sender) {
		status = LS_IGNORED;
	} else if (msg->tag <= sender->last_tag) {
		status = LS_DUPLICATE;
	} else {
		status = apply_request(ls, sender, msg, sink);
		if (status == LS_ERR_NOMEM)
			return status;
		sender->last_tag = msg->tag;
	}
	advance_position(ls);
	return status;
}

int ls_apply_message(struct lockstate *ls, uint32_t sender_nodeid, const uint8_t *buf, size_t len,
		     const struct ls_sink *sink)
{
	struct ls_msg msg;
	if (ls_msg_decode(buf, len, &msg) != 0)
		return LS_ERR_MALFORMED;
	return ls_apply_msg(ls, sender_nodeid, &msg, sink);
}

static bool nodeid_list_valid(const uint32_t *ids, size_t n)
{
	if (n > LS_MAX_CONFCHG || (n && !ids))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (ids[i] == 0)
			return false;
		for (size_t j = 0; j < i; j++)
			if (ids[j] == ids[i])
				return false;
	}
	return true;
}

static void sort_nodeids(uint32_t *ids, const uint32_t *src, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t v = src[i];
		size_t j = i;
		for (; j > 0 && ids[j - 1] > v; j--)
			ids[j] = ids[j - 1];
		ids[j] = v;
	}
}

static bool contains_nodeid(const uint32_t *ids, size_t n, uint32_t id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* Allocates a member record for every nodeid that takes a new incarnation
 * (sorted lists); returns how many, or LS_ERR_NOMEM having allocated none.
 * A join of a nodeid that is live and not leaving is a wiring bug: it keeps
 * its incarnation rather than splitting it. */
static int prepare_joiners(const struct lockstate *ls, const uint32_t *leaving, size_t nleft,
			   const uint32_t *joining, size_t njoined, struct ls_member **fresh)
{
	int n = 0;
	for (size_t i = 0; i < njoined; i++) {
		if (live_member(ls, joining[i]) && !contains_nodeid(leaving, nleft, joining[i]))
			continue;
		fresh[n] = calloc(1, sizeof(*fresh[n]));
		if (!fresh[n]) {
			while (n > 0)
				free(fresh[--n]);
			return LS_ERR_NOMEM;
		}
		fresh[n++]->nodeid = joining[i];
	}
	return n;
}

static void admit_joiners(struct lockstate *ls, struct ls_member **fresh, int n, const struct ls_sink *sink)
{
	for (int i = 0; i < n; i++) {
		struct ls_member *m = fresh[i];
		m->incarnation = ++ls->last_incarnation;
		m->joined_at = ls->position + 1; /* the position of this confchg */
		append_member(ls, m);
		struct ls_effect e = member_effect(LS_EFFECT_JOINED, m, 0, 0);
		emit(sink, &e);
	}
}

int ls_apply_confchg(struct lockstate *ls, uint64_t ring_seq, const uint32_t *left, size_t nleft,
		     const uint32_t *joined, size_t njoined, const struct ls_sink *sink)
{
	if (!nodeid_list_valid(left, nleft) || !nodeid_list_valid(joined, njoined))
		return LS_ERR_MALFORMED;
	uint32_t leaving[LS_MAX_CONFCHG], joining[LS_MAX_CONFCHG];
	sort_nodeids(leaving, left, nleft);
	sort_nodeids(joining, joined, njoined);
	int gate = catch_up_gate(ls, contains_nodeid(joining, njoined, ls->self_nodeid));
	if (gate == LS_SKIPPED)
		advance_position(ls);
	if (gate != LS_OK)
		return gate;
	struct ls_member *fresh[LS_MAX_CONFCHG];
	int nfresh = prepare_joiners(ls, leaving, nleft, joining, njoined, fresh);
	if (nfresh < 0)
		return nfresh;

	bool anyone_left = false;
	for (size_t i = 0; i < nleft; i++)
		anyone_left |= live_member(ls, leaving[i]) != NULL;
	if (ring_seq > ls->ring_seq) {
		if (anyone_left)
			set_quorate(ls, false, sink);
		ls->ring_seq = ring_seq;
	}
	for (size_t i = 0; i < nleft; i++) {
		struct ls_member *m = live_member(ls, leaving[i]);
		if (m)
			depart_member(ls, m, sink);
	}
	admit_joiners(ls, fresh, nfresh, sink);
	settle_all(ls, sink);
	advance_position(ls);
	return LS_OK;
}

/* ---- lifetime and inspection ---------------------------------------------- */

struct lockstate *ls_create(const struct ls_config *config)
{
	struct lockstate *ls = calloc(1, sizeof(*ls));
	if (!ls)
		return NULL;
	ls->max_locks = config && config->max_locks ? config->max_locks : LS_DEFAULT_MAX_LOCKS;
	ls->resource_nbuckets = INDEX_MIN_BUCKETS;
	ls->lock_nbuckets = INDEX_MIN_BUCKETS;
	ls->resource_buckets = calloc(ls->resource_nbuckets, sizeof(*ls->resource_buckets));
	ls->lock_buckets = calloc(ls->lock_nbuckets, sizeof(*ls->lock_buckets));
	if (!ls->resource_buckets || !ls->lock_buckets) {
		ls_destroy(ls);
		return NULL;
	}
	return ls;
}

void ls_destroy(struct lockstate *ls)
{
	if (!ls)
		return;
	struct ls_resource *res = ls->first_resource;
	while (res) {
		struct ls_resource *next_res = res->next;
		for (int q = Q_GRANTED; q < Q_COUNT; q++) {
			struct ls_lock *lock = res->queues[q].first;
			while (lock) {
				struct ls_lock *next = lock->next;
				free(lock);
				lock = next;
			}
		}
		free(res);
		res = next_res;
	}
	struct ls_member *m = ls->first_member;
	while (m) {
		struct ls_member *next = m->next;
		free(m);
		m = next;
	}
	free(ls->resource_buckets);
	free(ls->lock_buckets);
	free(ls);
}

void ls_foreach_lock(const struct lockstate *ls, ls_lock_visitor *fn, void *ctx)
{
	uint32_t ordinal = 0;
	for (const struct ls_resource *res = ls->first_resource; res; res = res->next, ordinal++) {
		for (int q = Q_GRANTED; q < Q_COUNT; q++) {
			for (const struct ls_lock *lock = res->queues[q].first; lock; lock = lock->next) {
				struct ls_lock_info info;
				memset(&info, 0, sizeof(info));
				memcpy(info.name, res->name, res->name_len);
				info.name_len = res->name_len;
				info.queue = lock->queue;
				info.granted = lock->granted;
				info.requested = lock->requested;
				info.req_flags = lock->req_flags;
				info.blocking_notified = lock->blocking_notified;
				info.departed = lock->owner->departed;
				info.nodeid = lock->owner->nodeid;
				info.incarnation = lock->owner->incarnation;
				info.lockid = lock->lockid;
				info.tag = lock->tag;
				info.resource_ordinal = ordinal;
				fn(ctx, &info);
			}
		}
	}
}

void ls_foreach_member(const struct lockstate *ls, ls_member_visitor *fn, void *ctx)
{
	for (const struct ls_member *m = ls->first_member; m; m = m->next) {
		struct ls_member_info info = {
			.nodeid = m->nodeid,
			.incarnation = m->incarnation,
			.departed = m->departed,
			.nlocks = m->nlocks,
			.last_tag = m->last_tag,
			.joined_at = m->joined_at,
		};
		fn(ctx, &info);
	}
}

bool ls_resource_lookup(const struct lockstate *ls, const uint8_t *name, size_t name_len,
			struct ls_resource_info *out)
{
	if (name_len == 0 || name_len > LS_NAME_MAX)
		return false;
	const struct ls_resource *res = find_resource(ls, name, name_len);
	if (!res)
		return false;
	memcpy(out->lvb, res->lvb, LS_LVB_LEN);
	out->lvb_invalid = res->lvb_invalid;
	out->nlocks = res->nlocks;
	return true;
}

uint32_t ls_live_incarnation(const struct lockstate *ls, uint32_t nodeid)
{
	const struct ls_member *m = live_member(ls, nodeid);
	return m ? m->incarnation : 0;
}

uint64_t ls_position(const struct lockstate *ls) { return ls->position; }
uint64_t ls_ring_seq(const struct lockstate *ls) { return ls->ring_seq; }
bool ls_quorate(const struct lockstate *ls) { return ls->quorate; }
bool ls_catching_up(const struct lockstate *ls) { return ls->catching_up; }
size_t ls_lock_count(const struct lockstate *ls) { return ls->nlocks; }
size_t ls_resource_count(const struct lockstate *ls) { return ls->nresources; }

/* ---- byte codecs ------------------------------------------------------------ */

/* Writes when buf is set, and always hashes and counts, so one routine sizes,
 * fills and digests. */
struct writer {
	uint8_t *buf;
	size_t cap;
	size_t len;
	uint64_t hash;
};

static void put_bytes(struct writer *w, const void *p, size_t n)
{
	w->hash = fnv1a(w->hash, p, n);
	if (w->buf && w->len <= w->cap && n <= w->cap - w->len)
		memcpy(w->buf + w->len, p, n);
	w->len += n;
}

static void put_u8(struct writer *w, uint8_t v) { put_bytes(w, &v, 1); }

static void put_be(struct writer *w, uint64_t v, int nbytes)
{
	uint8_t b[8];
	for (int i = 0; i < nbytes; i++)
		b[i] = (uint8_t)(v >> (8 * (nbytes - 1 - i)));
	put_bytes(w, b, (size_t)nbytes);
}

static void put_u16(struct writer *w, uint16_t v) { put_be(w, v, 2); }
static void put_u32(struct writer *w, uint32_t v) { put_be(w, v, 4); }
static void put_u64(struct writer *w, uint64_t v) { put_be(w, v, 8); }

struct reader {
	const uint8_t *buf;
	size_t len;
	size_t off;
	bool bad;
};

static const uint8_t *get_bytes(struct reader *r, size_t n)
{
	if (r->bad || n > r->len - r->off) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *p = r->buf + r->off;
	r->off += n;
	return p;
}

static uint64_t get_be(struct reader *r, int nbytes)
{
	const uint8_t *p = get_bytes(r, (size_t)nbytes);
	uint64_t v = 0;
	for (int i = 0; p && i < nbytes; i++)
		v = (v << 8) | p[i];
	return v;
}

static uint8_t get_u8(struct reader *r) { return (uint8_t)get_be(r, 1); }
static uint16_t get_u16(struct reader *r) { return (uint16_t)get_be(r, 2); }
static uint32_t get_u32(struct reader *r) { return (uint32_t)get_be(r, 4); }
static uint64_t get_u64(struct reader *r) { return get_be(r, 8); }

static void get_into(struct reader *r, void *dst, size_t n)
{
	const uint8_t *p = get_bytes(r, n);
	if (p)
		memcpy(dst, p, n);
}

/* ---- messages --------------------------------------------------------------- */

static bool msg_valid(const struct ls_msg *m)
{
	const uint8_t lock_flags = LS_LKF_NOQUEUE | LS_LKF_VALBLK;
	if (m->tag == 0)
		return false;
	switch (m->type) {
	case LS_MSG_LOCK:
		return mode_valid(m->mode) && !(m->flags & ~lock_flags) &&
		       m->name_len >= 1 && m->name_len <= LS_NAME_MAX;
	case LS_MSG_CONVERT:
		return mode_valid(m->mode) && !(m->flags & ~lock_flags);
	case LS_MSG_UNLOCK:
		return m->mode == 0 && !(m->flags & ~LS_LKF_VALBLK);
	case LS_MSG_CANCEL:
		return m->mode == 0 && m->flags == 0;
	case LS_MSG_FENCED:
		return m->mode == 0 && m->flags == 0 && m->fenced_nodeid && m->fenced_incarnation;
	case LS_MSG_QUORUM:
		return m->mode == 0 && m->flags == 0 && m->quorate <= 1;
	default:
		return false;
	}
}

static bool msg_carries_lvb(const struct ls_msg *m)
{
	return (m->type == LS_MSG_CONVERT || m->type == LS_MSG_UNLOCK) && (m->flags & LS_LKF_VALBLK);
}

static void write_msg(const struct ls_msg *m, struct writer *w)
{
	put_u32(w, LS_MSG_MAGIC);
	put_u8(w, LS_MSG_VERSION);
	put_u8(w, m->type);
	put_u8(w, m->flags);
	put_u8(w, m->mode);
	put_u64(w, m->tag);
	switch (m->type) {
	case LS_MSG_LOCK:
		put_u64(w, m->lockid);
		put_u8(w, m->name_len);
		put_bytes(w, m->name, m->name_len);
		break;
	case LS_MSG_CONVERT:
	case LS_MSG_UNLOCK:
	case LS_MSG_CANCEL:
		put_u64(w, m->lockid);
		if (msg_carries_lvb(m))
			put_bytes(w, m->lvb, LS_LVB_LEN);
		break;
	case LS_MSG_FENCED:
		put_u32(w, m->fenced_nodeid);
		put_u32(w, m->fenced_incarnation);
		break;
	case LS_MSG_QUORUM:
		put_u64(w, m->ring_seq);
		put_u8(w, m->quorate);
		break;
	}
}

int ls_msg_encode(const struct ls_msg *msg, uint8_t *buf, size_t cap)
{
	if (!msg_valid(msg))
		return LS_ERR_MALFORMED;
	struct writer sizer = { 0 };
	write_msg(msg, &sizer);
	if (sizer.len > cap)
		return LS_ERR_SPACE;
	struct writer w = { .buf = buf, .cap = cap };
	write_msg(msg, &w);
	return (int)w.len;
}

int ls_msg_decode(const uint8_t *buf, size_t len, struct ls_msg *out)
{
	struct reader r = { .buf = buf, .len = buf ? len : 0 };
	memset(out, 0, sizeof(*out));
	if (len > LS_MSG_MAX_LEN || get_u32(&r) != LS_MSG_MAGIC || get_u8(&r) != LS_MSG_VERSION)
		return LS_ERR_MALFORMED;
	out->type = get_u8(&r);
	out->flags = get_u8(&r);
	out->mode = get_u8(&r);
	out->tag = get_u64(&r);
	switch (out->type) {
	case LS_MSG_LOCK:
		out->lockid = get_u64(&r);
		out->name_len = get_u8(&r);
		if (out->name_len > LS_NAME_MAX)
			return LS_ERR_MALFORMED;
		get_into(&r, out->name, out->name_len);
		break;
	case LS_MSG_CONVERT:
	case LS_MSG_UNLOCK:
	case LS_MSG_CANCEL:
		out->lockid = get_u64(&r);
		if (msg_carries_lvb(out))
			get_into(&r, out->lvb, LS_LVB_LEN);
		break;
	case LS_MSG_FENCED:
		out->fenced_nodeid = get_u32(&r);
		out->fenced_incarnation = get_u32(&r);
		break;
	case LS_MSG_QUORUM:
		out->ring_seq = get_u64(&r);
		out->quorate = get_u8(&r);
		break;
	default:
		return LS_ERR_MALFORMED;
	}
	if (r.bad || r.off != len || !msg_valid(out))
		return LS_ERR_MALFORMED;
	return 0;
}

/* ---- snapshots -------------------------------------------------------------- */

static uint32_t member_count(const struct lockstate *ls)
{
	uint32_t n = 0;
	for (const struct ls_member *m = ls->first_member; m; m = m->next)
		n++;
	return n;
}

static void write_lock(const struct ls_lock *lock, struct writer *w)
{
	put_u32(w, lock->owner->incarnation);
	put_u64(w, lock->lockid);
	put_u64(w, lock->tag);
	put_u8(w, lock->queue);
	put_u8(w, lock->granted);
	put_u8(w, lock->requested);
	put_u8(w, lock->req_flags);
	put_u8(w, lock->blocking_notified);
	if (lock->queue == Q_CONVERTING && (lock->req_flags & LS_LKF_VALBLK))
		put_bytes(w, lock->pending_lvb, LS_LVB_LEN);
}

static void write_state(const struct lockstate *ls, struct writer *w)
{
	put_u32(w, SNAP_MAGIC);
	put_u16(w, SNAP_VERSION);
	put_u8(w, ls->quorate);
	put_u8(w, 0);
	put_u64(w, ls->position);
	put_u64(w, ls->ring_seq);
	put_u32(w, ls->last_incarnation);
	put_u32(w, ls->max_locks);
	put_u32(w, member_count(ls));
	put_u32(w, (uint32_t)ls->nresources);
	for (const struct ls_member *m = ls->first_member; m; m = m->next) {
		put_u32(w, m->nodeid);
		put_u32(w, m->incarnation);
		put_u8(w, m->departed);
		put_u64(w, m->last_tag);
		put_u64(w, m->joined_at);
	}
	for (const struct ls_resource *res = ls->first_resource; res; res = res->next) {
		put_u8(w, res->name_len);
		put_bytes(w, res->name, res->name_len);
		put_bytes(w, res->lvb, LS_LVB_LEN);
		put_u8(w, res->lvb_invalid);
		put_u32(w, res->nlocks);
		for (int q = Q_GRANTED; q < Q_COUNT; q++)
			for (const struct ls_lock *lock = res->queues[q].first; lock; lock = lock->next)
				write_lock(lock, w);
	}
}

uint64_t ls_digest(const struct lockstate *ls)
{
	struct writer w = { .hash = FNV_OFFSET };
	write_state(ls, &w);
	return w.hash;
}

int ls_snapshot(const struct lockstate *ls, uint8_t **out, size_t *out_len)
{
	struct writer sizer = { .hash = FNV_OFFSET };
	write_state(ls, &sizer);
	uint8_t *buf = malloc(sizer.len + 8);
	if (!buf)
		return LS_ERR_NOMEM;
	struct writer w = { .buf = buf, .cap = sizer.len + 8, .hash = FNV_OFFSET };
	write_state(ls, &w);
	put_u64(&w, w.hash);
	*out = buf;
	*out_len = w.len;
	return LS_OK;
}

int ls_equal(const struct lockstate *a, const struct lockstate *b)
{
	uint8_t *sa = NULL, *sb = NULL;
	size_t la = 0, lb = 0;
	int rc = ls_snapshot(a, &sa, &la);
	if (rc == LS_OK)
		rc = ls_snapshot(b, &sb, &lb);
	if (rc == LS_OK)
		rc = la == lb && memcmp(sa, sb, la) == 0;
	free(sa);
	free(sb);
	return rc;
}

static struct ls_member *member_by_incarnation(const struct lockstate *ls, uint32_t incarnation)
{
	for (struct ls_member *m = ls->first_member; m; m = m->next)
		if (m->incarnation == incarnation)
			return m;
	return NULL;
}

static int read_members(struct lockstate *ls, struct reader *r, uint32_t nmembers)
{
	uint32_t prev_incarnation = 0;
	for (uint32_t i = 0; i < nmembers && !r->bad; i++) {
		uint32_t nodeid = get_u32(r);
		uint32_t incarnation = get_u32(r);
		uint8_t departed = get_u8(r);
		uint64_t last_tag = get_u64(r);
		uint64_t joined_at = get_u64(r);
		if (r->bad || nodeid == 0 || incarnation <= prev_incarnation ||
		    incarnation > ls->last_incarnation || departed > 1 ||
		    joined_at == 0 || joined_at > ls->position ||
		    (!departed && live_member(ls, nodeid)))
			return LS_ERR_MALFORMED;
		struct ls_member *m = calloc(1, sizeof(*m));
		if (!m)
			return LS_ERR_NOMEM;
		m->nodeid = nodeid;
		m->incarnation = incarnation;
		m->departed = departed;
		m->last_tag = last_tag;
		m->joined_at = joined_at;
		append_member(ls, m);
		prev_incarnation = incarnation;
	}
	return r->bad ? LS_ERR_MALFORMED : LS_OK;
}

static bool lock_record_valid(const struct ls_lock *l, uint8_t prev_queue)
{
	if (l->queue >= Q_COUNT || l->queue < prev_queue || (l->req_flags & ~LS_LKF_VALBLK))
		return false;
	switch (l->queue) {
	case Q_GRANTED:
		return mode_valid(l->granted) && l->requested == l->granted;
	case Q_CONVERTING:
		return mode_valid(l->granted) && mode_valid(l->requested) && !l->owner->departed;
	default:
		return l->granted == LS_MODE_NONE && mode_valid(l->requested) &&
		       !l->blocking_notified && !l->owner->departed;
	}
}

static int read_lock(struct lockstate *ls, struct reader *r, struct ls_resource *res, uint8_t *prev_queue)
{
	uint32_t incarnation = get_u32(r);
	uint64_t lockid = get_u64(r);
	uint64_t tag = get_u64(r);
	uint8_t queue = get_u8(r);
	uint8_t granted = get_u8(r);
	uint8_t requested = get_u8(r);
	uint8_t req_flags = get_u8(r);
	uint8_t notified = get_u8(r);
	struct ls_member *owner = member_by_incarnation(ls, incarnation);
	if (r->bad || !owner || notified > 1 || find_lock(ls, incarnation, lockid))
		return LS_ERR_MALFORMED;
	struct ls_lock candidate = {
		.owner = owner, .queue = queue, .granted = granted,
		.requested = requested, .req_flags = req_flags, .blocking_notified = notified,
	};
	if (!lock_record_valid(&candidate, *prev_queue))
		return LS_ERR_MALFORMED;
	struct ls_lock *lock = calloc(1, sizeof(*lock));
	if (!lock)
		return LS_ERR_NOMEM;
	*lock = candidate;
	lock->resource = res;
	lock->lockid = lockid;
	lock->tag = tag;
	if (queue == Q_CONVERTING && (req_flags & LS_LKF_VALBLK))
		get_into(r, lock->pending_lvb, LS_LVB_LEN);
	attach_lock(ls, lock, queue);
	*prev_queue = queue;
	return r->bad ? LS_ERR_MALFORMED : LS_OK;
}

static bool holders_mutually_compatible(const struct ls_resource *res)
{
	for (uint8_t a = 0; a < LS_MODE_COUNT; a++)
		for (uint8_t b = a; b < LS_MODE_COUNT; b++) {
			bool both = a == b ? res->holders[a] >= 2 : res->holders[a] && res->holders[b];
			if (both && !compat_matrix[a][b])
				return false;
		}
	return true;
}

static int read_resource(struct lockstate *ls, struct reader *r)
{
	uint8_t name_len = get_u8(r);
	const uint8_t *name = get_bytes(r, name_len);
	if (r->bad || name_len == 0 || name_len > LS_NAME_MAX || find_resource(ls, name, name_len))
		return LS_ERR_MALFORMED;
	struct ls_resource *res = calloc(1, sizeof(*res));
	if (!res)
		return LS_ERR_NOMEM;
	res->name_len = name_len;
	memcpy(res->name, name, name_len);
	link_resource(ls, res); /* from here on ls_destroy owns it */
	get_into(r, res->lvb, LS_LVB_LEN);
	uint8_t invalid = get_u8(r);
	uint32_t nlocks = get_u32(r);
	if (r->bad || invalid > 1 || nlocks == 0 || nlocks > ls->max_locks - ls->nlocks)
		return LS_ERR_MALFORMED;
	res->lvb_invalid = invalid;
	uint8_t prev_queue = Q_GRANTED;
	for (uint32_t i = 0; i < nlocks; i++) {
		int rc = read_lock(ls, r, res, &prev_queue);
		if (rc != LS_OK)
			return rc;
	}
	return holders_mutually_compatible(res) ? LS_OK : LS_ERR_MALFORMED;
}

struct snap_header {
	uint8_t quorate;
	uint64_t position;
	uint64_t ring_seq;
	uint32_t last_incarnation;
	uint32_t max_locks;
	uint32_t nmembers;
	uint32_t nresources;
};

static bool read_header(struct reader *r, struct snap_header *h)
{
	bool framed = get_u32(r) == SNAP_MAGIC && get_u16(r) == SNAP_VERSION;
	h->quorate = get_u8(r);
	uint8_t reserved = get_u8(r);
	h->position = get_u64(r);
	h->ring_seq = get_u64(r);
	h->last_incarnation = get_u32(r);
	h->max_locks = get_u32(r);
	h->nmembers = get_u32(r);
	h->nresources = get_u32(r);
	return framed && !r->bad && h->quorate <= 1 && !reserved && h->max_locks;
}

static int read_body(struct lockstate *ls, struct reader *r, const struct snap_header *h)
{
	int rc = read_members(ls, r, h->nmembers);
	for (uint32_t i = 0; rc == LS_OK && i < h->nresources; i++)
		rc = read_resource(ls, r);
	if (rc != LS_OK)
		return rc;
	if (r->bad || r->off != r->len)
		return LS_ERR_MALFORMED;
	/* A departed member without locks is dropped when it leaves. */
	for (const struct ls_member *m = ls->first_member; m; m = m->next)
		if (m->departed && !m->nlocks)
			return LS_ERR_MALFORMED;
	return LS_OK;
}

int ls_deserialize(const uint8_t *buf, size_t len, struct lockstate **out)
{
	*out = NULL;
	if (!buf || len < 8)
		return LS_ERR_MALFORMED;
	struct reader trailer = { .buf = buf + len - 8, .len = 8 };
	if (get_u64(&trailer) != fnv1a(FNV_OFFSET, buf, len - 8))
		return LS_ERR_MALFORMED;
	struct reader r = { .buf = buf, .len = len - 8 };
	struct snap_header h;
	if (!read_header(&r, &h))
		return LS_ERR_MALFORMED;
	struct ls_config config = { .max_locks = h.max_locks };
	struct lockstate *ls = ls_create(&config);
	if (!ls)
		return LS_ERR_NOMEM;
	ls->quorate = h.quorate;
	ls->position = h.position;
	ls->ring_seq = h.ring_seq;
	ls->last_incarnation = h.last_incarnation;
	int rc = read_body(ls, &r, &h);
	if (rc != LS_OK) {
		ls_destroy(ls);
		return rc;
	}
	*out = ls;
	return LS_OK;
}

int ls_begin_catch_up(struct lockstate *ls, uint32_t self_nodeid)
{
	const struct ls_member *self = live_member(ls, self_nodeid);
	if (!self)
		return LS_ERR_NOT_MEMBER;
	ls->self_nodeid = self_nodeid;
	ls->catching_up = true;
	ls->awaiting_own_join = true;
	ls->catch_up_cursor = self->joined_at - 1;
	return LS_OK;
}
