/* The retry cache that makes a re-sent request apply once.
 *
 * Per (node, client id) a table of recent request ids, sorted, each running
 * or done with its reply frame. Request ids grow per client, so eviction takes
 * the smallest done id and raises the table's watermark to it: an id that is
 * not in the table is "forgotten" if it is <= the watermark (a retry of it
 * gets EXPIRED: we cannot prove it was not applied) and "never seen" if above
 * (it runs). A retry for a client with no table gets EXPIRED for the same
 * reason. Running entries are never evicted, so a duplicate can always wait
 * for the original's reply. */
#include "redirect-io/rio_impl.h"

#include <stdlib.h>
#include <string.h>

struct dd_entry {
	uint64_t id;
	bool done;
	struct rio_blob *reply;
};

struct dd_client {
	struct dd_client *next;
	char node[RIO_NODE_NAME_MAX + 1];
	uint64_t client_id;
	uint64_t watermark;
	uint64_t last_use;
	unsigned running;
	struct dd_entry *e; /* sorted by id */
	unsigned n, cap;
};

struct rio_dedup {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	unsigned per_client;
	unsigned max_clients;
	size_t max_bytes;
	size_t bytes;
	unsigned nclients;
	uint64_t tick;
	struct dd_client *clients;
};

struct rio_dedup *rio_dedup_new(unsigned per_client, unsigned max_clients, size_t max_bytes)
{
	struct rio_dedup *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cv, NULL);
	d->per_client = per_client ? per_client : 256;
	d->max_clients = max_clients ? max_clients : 256;
	d->max_bytes = max_bytes ? max_bytes : (64u << 20);
	return d;
}

static void client_free(struct rio_dedup *d, struct dd_client *c)
{
	for (unsigned i = 0; i < c->n; i++) {
		if (c->e[i].reply)
			d->bytes -= c->e[i].reply->len;
		rio_blob_unref(c->e[i].reply);
	}
	free(c->e);
	free(c);
}

void rio_dedup_free(struct rio_dedup *d)
{
	if (!d)
		return;
	while (d->clients) {
		struct dd_client *c = d->clients;
		d->clients = c->next;
		client_free(d, c);
	}
	pthread_cond_destroy(&d->cv);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

static struct dd_client *find_client(struct rio_dedup *d, const char *node, uint64_t client_id)
{
	for (struct dd_client *c = d->clients; c; c = c->next)
		if (c->client_id == client_id && strcmp(c->node, node) == 0)
			return c;
	return NULL;
}

/* Index of id, or of where it would be inserted (*found says which). */
static unsigned find_entry(const struct dd_client *c, uint64_t id, bool *found)
{
	unsigned lo = 0, hi = c->n;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (c->e[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < c->n && c->e[lo].id == id;
	return lo;
}

static void remove_entry(struct rio_dedup *d, struct dd_client *c, unsigned i)
{
	if (c->e[i].id > c->watermark)
		c->watermark = c->e[i].id;
	if (c->e[i].reply)
		d->bytes -= c->e[i].reply->len;
	rio_blob_unref(c->e[i].reply);
	memmove(&c->e[i], &c->e[i + 1], (c->n - i - 1) * sizeof(c->e[0]));
	c->n--;
}

/* Evicts the client's oldest done entry; false if every entry is running. */
static bool evict_oldest(struct rio_dedup *d, struct dd_client *c)
{
	for (unsigned i = 0; i < c->n; i++) {
		if (c->e[i].done) {
			remove_entry(d, c, i);
			return true;
		}
	}
	return false;
}

static void unlink_client(struct rio_dedup *d, struct dd_client *victim)
{
	for (struct dd_client **pp = &d->clients; *pp; pp = &(*pp)->next) {
		if (*pp == victim) {
			*pp = victim->next;
			d->nclients--;
			return;
		}
	}
}

/* Least recently used client table matching the filter, or NULL. */
static struct dd_client *lru_client(struct rio_dedup *d, bool need_idle, bool need_done_entry)
{
	struct dd_client *best = NULL;

	for (struct dd_client *c = d->clients; c; c = c->next) {
		if (need_idle && c->running)
			continue;
		if (need_done_entry && c->n == c->running)
			continue;
		if (!best || c->last_use < best->last_use)
			best = c;
	}
	return best;
}

static void enforce_bounds(struct rio_dedup *d, struct dd_client *c)
{
	while (c->n > d->per_client && evict_oldest(d, c))
		;
	while (d->bytes > d->max_bytes) {
		struct dd_client *v = lru_client(d, false, true);
		if (!v || !evict_oldest(d, v))
			break;
	}
}

static struct dd_client *new_client(struct rio_dedup *d, const char *node, uint64_t client_id)
{
	struct dd_client *c;

	while (d->nclients >= d->max_clients) {
		struct dd_client *v = lru_client(d, true, false);
		if (!v)
			break; /* all busy: exceed the bound rather than lose a running entry */
		unlink_client(d, v);
		client_free(d, v);
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	snprintf(c->node, sizeof(c->node), "%s", node);
	c->client_id = client_id;
	c->next = d->clients;
	d->clients = c;
	d->nclients++;
	return c;
}

static bool insert_running(struct dd_client *c, unsigned at, uint64_t id)
{
	if (c->n == c->cap) {
		unsigned cap = c->cap ? c->cap * 2 : 16;
		struct dd_entry *e = realloc(c->e, cap * sizeof(*e));
		if (!e)
			return false;
		c->e = e;
		c->cap = cap;
	}
	memmove(&c->e[at + 1], &c->e[at], (c->n - at) * sizeof(c->e[0]));
	c->e[at] = (struct dd_entry){ .id = id };
	c->n++;
	c->running++;
	return true;
}

enum rio_dedup_verdict rio_dedup_begin(struct rio_dedup *d, const char *node, uint64_t client_id,
				       uint64_t request_id, bool retry, struct rio_blob **reply)
{
	enum rio_dedup_verdict v = RIO_DEDUP_EXPIRED;
	struct dd_client *c;
	unsigned at = 0;
	bool found;

	*reply = NULL;
	pthread_mutex_lock(&d->lock);
	for (;;) {
		/* Looked up afresh after each wait: an idle table may be evicted. */
		c = find_client(d, node, client_id);
		if (!c)
			break;
		at = find_entry(c, request_id, &found);
		if (!found)
			break;
		if (c->e[at].done) {
			*reply = rio_blob_ref(c->e[at].reply);
			c->last_use = ++d->tick;
			pthread_mutex_unlock(&d->lock);
			return RIO_DEDUP_REPLAY;
		}
		pthread_cond_wait(&d->cv, &d->lock);
	}
	if (!c && !retry)
		c = new_client(d, node, client_id);
	if (c && request_id > c->watermark) {
		at = find_entry(c, request_id, &found);
		if (insert_running(c, at, request_id)) {
			c->last_use = ++d->tick;
			v = RIO_DEDUP_EXECUTE;
		}
	}
	pthread_mutex_unlock(&d->lock);
	return v;
}

void rio_dedup_finish(struct rio_dedup *d, const char *node, uint64_t client_id,
		      uint64_t request_id, struct rio_blob *reply)
{
	struct dd_client *c;
	unsigned at;
	bool found = false;

	pthread_mutex_lock(&d->lock);
	c = find_client(d, node, client_id);
	at = c ? find_entry(c, request_id, &found) : 0;
	if (found && !c->e[at].done) {
		c->running--;
		c->e[at].done = true;
		if (reply) {
			c->e[at].reply = rio_blob_ref(reply);
			d->bytes += reply->len;
		} else {
			remove_entry(d, c, at);
		}
		enforce_bounds(d, c);
	}
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->lock);
}

size_t rio_dedup_bytes(struct rio_dedup *d)
{
	size_t b;

	pthread_mutex_lock(&d->lock);
	b = d->bytes;
	pthread_mutex_unlock(&d->lock);
	return b;
}

unsigned rio_dedup_clients(struct rio_dedup *d)
{
	unsigned n;

	pthread_mutex_lock(&d->lock);
	n = d->nclients;
	pthread_mutex_unlock(&d->lock);
	return n;
}
