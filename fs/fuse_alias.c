/* Directory aliases in this node's kernel: fs/fuse_alias.h says why. */
#include "fs/fuse_alias.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- alternate node ids ------------------------------------------------------
 * Process-wide, like the node ids themselves (one FUSE session per daemon),
 * and looked up by every request's gen_of(). An alternate id keeps the inode
 * number and shifts the generation, so no other directory has it. It resolves
 * for as long as the kernel may send it: from the reply that first tells it
 * until the kernel forgets its last lookup (alias_forget). Dropping it
 * earlier made the kernel's getattr of a directory it still had (a path
 * walk's permission check) fail: the generation no file has, so ENOENT. */
#define ALT_BUCKETS 65536u

struct alt_entry {
	struct alt_entry *next;
	fuse_ino_t alt, canonical;
	uint64_t lookups;               /* the kernel's lookup count of alt */
};

static pthread_mutex_t alt_lock = PTHREAD_MUTEX_INITIALIZER;
static struct alt_entry *alt_buckets[ALT_BUCKETS];
static uint32_t alt_next;
static size_t alt_count;

static struct alt_entry **alt_find(fuse_ino_t alt)
{
	struct alt_entry **p = &alt_buckets[(alt ^ (alt >> 32)) % ALT_BUCKETS];
	while (*p && (*p)->alt != alt)
		p = &(*p)->next;
	return p;
}

/* Under alt_lock: a fresh alternate id for canonical, held once (for the
 * reply about to tell it); 0 if there is no memory. */
static fuse_ino_t alt_make(fuse_ino_t canonical)
{
	struct alt_entry *e = malloc(sizeof(*e));
	if (!e)
		return 0;
	fuse_ino_t alt;
	do {
		uint32_t shift = ++alt_next ? alt_next : ++alt_next;   /* never 0 */
		alt = ((fuse_ino_t)((uint32_t)(canonical >> 32) + shift) << 32) | (canonical & 0xffffffffu);
	} while (*alt_find(alt));   /* after 2^32 ids, one may still be held */
	struct alt_entry **p = alt_find(alt);
	*e = (struct alt_entry){ .next = NULL, .alt = alt, .canonical = canonical, .lookups = 1 };
	*p = e;
	alt_count++;
	return alt;
}

fuse_ino_t alias_alt_id(fuse_ino_t canonical)
{
	pthread_mutex_lock(&alt_lock);
	fuse_ino_t alt = alt_make(canonical);
	pthread_mutex_unlock(&alt_lock);
	return alt ? alt : canonical;
}

/* alt (an alternate id of canonical the kernel may know) told once more;
 * 0 if it no longer resolves (the kernel forgot it). */
static int alt_hold(fuse_ino_t alt, fuse_ino_t canonical)
{
	pthread_mutex_lock(&alt_lock);
	struct alt_entry *e = *alt_find(alt);
	int held = e && e->canonical == canonical;
	if (held)
		e->lookups++;
	pthread_mutex_unlock(&alt_lock);
	return held;
}

void alias_forget(fuse_ino_t id, uint64_t nlookup)
{
	pthread_mutex_lock(&alt_lock);
	struct alt_entry **p = alt_find(id);
	struct alt_entry *e = *p;
	if (e && id) {
		e->lookups -= nlookup < e->lookups ? nlookup : e->lookups;
		if (!e->lookups) {
			*p = e->next;
			free(e);
			alt_count--;
		}
	}
	pthread_mutex_unlock(&alt_lock);
}

fuse_ino_t alias_canonical(fuse_ino_t id)
{
	pthread_mutex_lock(&alt_lock);
	struct alt_entry *e = id ? *alt_find(id) : NULL;
	fuse_ino_t canonical = e ? e->canonical : id;
	pthread_mutex_unlock(&alt_lock);
	return canonical;
}

size_t alias_alt_ids_held(void)
{
	pthread_mutex_lock(&alt_lock);
	size_t n = alt_count;
	pthread_mutex_unlock(&alt_lock);
	return n;
}

/* ---- directories told to the kernel ------------------------------------------ */
/* Direct-mapped by node id: a collision forgets a directory, which costs at
 * most the ESTALE this table is there to avoid, never a wrong answer; many
 * slots (names are allocated) keep that rare with many directories known. */
#define ALIAS_SLOTS 65536
#define ALIAS_NAME_MAX 255
#define ALIAS_WAIT_MS 100   /* a lookup waits this long at most for its invalidation */

struct alias_slot {
	fuse_ino_t id, parent;          /* id (canonical) 0: empty */
	fuse_ino_t told;                /* the node id the kernel knows it by */
	char *name;                     /* allocated; NULL when empty */
};

struct inval {
	struct inval *next;
	fuse_ino_t parent;
	char name[ALIAS_NAME_MAX + 1];
};

struct alias_table {
	struct fuse_session *se;
	pthread_mutex_t lock;            /* guards everything below */
	pthread_cond_t cond;
	struct alias_slot *slots;
	struct inval *head, **tail;      /* invalidations to send, in order */
	pthread_cond_t done_cond;
	uint64_t queued, done;           /* invalidations queued and sent, counted */
	int stopping;
	pthread_t thread;
};

static struct alias_slot *slot_of(struct alias_table *t, fuse_ino_t id)
{
	return &t->slots[(id ^ (id >> 32)) % ALIAS_SLOTS];
}

/* Under t->lock: the slot now says parent/name (emptied if out of memory:
 * forgetting a directory is always safe). */
static void slot_place(struct alias_slot *s, fuse_ino_t parent, const char *name)
{
	char *copy = strdup(name);
	free(s->name);
	s->name = copy;
	s->parent = parent;
	if (!copy)
		s->id = 0;
}

/* Under t->lock. */
static void queue_inval(struct alias_table *t, fuse_ino_t parent, const char *name)
{
	struct inval *iv = malloc(sizeof(*iv));
	if (!iv)
		return;
	iv->next = NULL;
	iv->parent = parent;
	memcpy(iv->name, name, strlen(name) + 1);
	*t->tail = iv;
	t->tail = &iv->next;
	t->queued++;
	pthread_cond_signal(&t->cond);
}

/* Sends invalidations: each waits in the kernel for the old parent's lock,
 * which the request that found the alias may hold; so never a FUSE thread. */
static void *inval_main(void *arg)
{
	struct alias_table *t = arg;
	pthread_mutex_lock(&t->lock);
	for (;;) {
		while (!t->head && !t->stopping)
			pthread_cond_wait(&t->cond, &t->lock);
		struct inval *iv = t->head;
		if (!iv)
			break;
		t->head = iv->next;
		if (!t->head)
			t->tail = &t->head;
		pthread_mutex_unlock(&t->lock);
		if (!t->stopping)
			fuse_lowlevel_notify_inval_entry(t->se, iv->parent, iv->name, strlen(iv->name));
		free(iv);
		pthread_mutex_lock(&t->lock);
		t->done++;
		pthread_cond_broadcast(&t->done_cond);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

struct alias_table *alias_start(struct fuse_session *se)
{
	struct alias_table *t = calloc(1, sizeof(*t));
	if (!t || !(t->slots = calloc(ALIAS_SLOTS, sizeof(*t->slots)))) {
		free(t);
		return NULL;
	}
	t->se = se;
	t->tail = &t->head;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	pthread_cond_init(&t->done_cond, NULL);
	if (pthread_create(&t->thread, NULL, inval_main, t) != 0) {
		free(t->slots);
		free(t);
		return NULL;
	}
	return t;
}

void alias_stop(struct alias_table *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	t->stopping = 1;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	pthread_join(t->thread, NULL);
	while (t->head) {
		struct inval *iv = t->head;
		t->head = iv->next;
		free(iv);
	}
	pthread_cond_destroy(&t->cond);
	pthread_cond_destroy(&t->done_cond);
	pthread_mutex_destroy(&t->lock);
	for (unsigned i = 0; i < ALIAS_SLOTS; i++)
		free(t->slots[i].name);
	free(t->slots);
	free(t);
}

/* Under t->lock: waits (bounded) until the invalidations queued so far are
 * sent. The kernel would otherwise take the reply while the invalidation
 * holds the old parent's lock, and the lookup fails its trylock (ESTALE);
 * bounded, since the request waiting may itself hold that lock (a rename
 * here), and then only the VFS's retry, after it, can succeed. */
static void wait_sent(struct alias_table *t, unsigned ms)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_nsec += (long)ms * 1000000L;
	dl.tv_sec += dl.tv_nsec / 1000000000L;
	dl.tv_nsec %= 1000000000L;
	uint64_t want = t->queued;
	while (t->done < want && !t->stopping)
		if (pthread_cond_timedwait(&t->done_cond, &t->lock, &dl) != 0)
			break;
}

fuse_ino_t alias_tell_dir(struct alias_table *t, fuse_ino_t id, fuse_ino_t parent, const char *name,
			  int wait)
{
	if (!t || strlen(name) > ALIAS_NAME_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
		return id;
	pthread_mutex_lock(&t->lock);
	struct alias_slot *s = slot_of(t, id);
	int known = s->id == id;
	int moved = known && (s->parent != parent || strcmp(s->name, name) != 0);
	if (moved)
		queue_inval(t, s->parent, s->name);
	/* An alternate id the kernel has forgotten no longer resolves: the
	 * directory needs a new one. */
	int alt_told = known && !moved && s->told != id;
	int lost = alt_told && !alt_hold(s->told, id);
	fuse_ino_t told = moved || lost ? alias_alt_id(id) : known ? s->told : id;
	/* A lookup holds its directory's lock (shared) until it is answered, and
	 * the invalidation takes the old parent's: in the same directory it can
	 * only come after the reply, and waiting for it only cost 100 ms. */
	int same_dir = moved && s->parent == parent;
	s->id = id;
	s->told = told;
	slot_place(s, parent, name);
	if (moved && wait && !same_dir)
		wait_sent(t, ALIAS_WAIT_MS);   /* the old dentry gone first, where it can go */
	pthread_mutex_unlock(&t->lock);
	return told;
}

/* Under t->lock: the slot now told as parent/name, if any (a scan: renames
 * are rare next to lookups, and the table is small). */
static struct alias_slot *slot_named(struct alias_table *t, fuse_ino_t parent, const char *name)
{
	for (unsigned i = 0; i < ALIAS_SLOTS; i++)
		if (t->slots[i].id && t->slots[i].parent == parent && !strcmp(t->slots[i].name, name))
			return &t->slots[i];
	return NULL;
}

void alias_renamed(struct alias_table *t, fuse_ino_t parent, const char *name,
		   fuse_ino_t newparent, const char *newname, int exchange)
{
	if (!t || strlen(name) > ALIAS_NAME_MAX || strlen(newname) > ALIAS_NAME_MAX)
		return;
	pthread_mutex_lock(&t->lock);
	struct alias_slot *from = slot_named(t, parent, name);
	struct alias_slot *to = slot_named(t, newparent, newname);
	if (to && to != from)
		to->id = exchange ? to->id : 0;   /* replaced: that directory is gone */
	if (to && exchange && to != from)
		slot_place(to, parent, name);
	if (from)
		slot_place(from, newparent, newname);
	pthread_mutex_unlock(&t->lock);
}
