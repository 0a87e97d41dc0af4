/* Cluster mode: this node's role for the volume (docs/cluster.md).
 *
 * Locks (dlm-glue, one lockspace per volume GUID):
 *   "coord"      EX while this node is the coordinator (design.md §1). Taken
 *                with NOQUEUE by whichever node finds no live coordinator;
 *                a departed holder keeps it until it is fenced, so a new
 *                coordinator never overlaps the old one.
 *   "coordinfo"  its value block says who the coordinator is: magic, epoch,
 *                nodeid, port, and a move target. Every node holds it NL
 *                (keeps the value block), reads it by converting to PR, and
 *                the coordinator writes it by converting EX -> NL.
 *   "L<ino>"     a participant holds PR while it caches written mappings of
 *                ino; the coordinator takes EX (a recall) before a change
 *                that frees or unwrites blocks of ino.
 *
 * Threads: the cluster thread elects, connects, takes over and steps down;
 * the recall thread drops layouts on blocking callbacks; dlm-glue's dispatch
 * thread runs the callbacks below, which only record and signal. */
#include "fs/cluster.h"
#include "fs/proto.h"
#include "dlm-glue/dlmglue.h"
#include "redirect-io/rio.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define INFO_MAGIC 0x43535643u       /* "CSVC" */
#define LOCK_TIMEOUT_MS 30000
#define CALL_TIMEOUT_MS 30000
#define CONNECT_TIMEOUT_MS 5000
#define LOOP_MS 500
#define QUICK_MS 100
#define WAIT_COORD_MS 50     /* a waiting request tries again this often */
#define MOVE_GRACE_MS 10000
#define MAX_NODES 64

struct coord_info {
	uint32_t epoch, nodeid, port, move_target;
};

/* A lock this module waits on and may lose (-ENOTCONN: the lineage it lived
 * in was superseded after a partition). */
struct held_lock {
	struct dg_lock *lk;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int pending, status, lost;
	uint8_t lvb[DG_LVB_LEN];
	struct cluster *c;
};

struct conn {
	struct rio_client *cl;
	unsigned refs;
	int dead;
	uint32_t epoch, nodeid;
	char name[64];
};

struct recall_item {
	struct recall_item *next;
	ext2_ino_t ino;
	uint64_t token;
};

struct cluster {
	struct volume *v;
	struct cluster_opts o;
	struct dg_lockspace *ls;
	uint32_t self;

	/* Held shared by every request; exclusive while the role changes. */
	pthread_rwlock_t role_lock;
	_Atomic int role;

	pthread_mutex_t mu;              /* everything below */
	pthread_cond_t cv;
	int stopping, recheck, quorate, paused;
	struct timespec paused_since;
	struct conn *conn;               /* participant: the coordinator */
	uint32_t epoch;                  /* of the coordinator we serve or talk to */
	uint32_t coord_nodeid;
	uint32_t move_target;            /* a move in progress, 0 = none */
	uint32_t move_request;           /* coordinator: csvctl move asked for this node */
	int settled;                     /* participant: linked to a live coordinator */
	uint32_t fenced[MAX_NODES];      /* fenced nodes whose opens are to be closed */
	unsigned nfenced;
	struct timespec move_deadline;
	uint64_t next_token;
	struct recall_item *recalls;
	struct server *srv_state;        /* coordinator: opens per node */
	struct rio_server *srv;

	struct held_lock coord;          /* "coord", EX while coordinator */
	struct held_lock info;           /* "coordinfo", NL kept */
	pthread_t thread, recall_thread;
	int threads;
};

static uint64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static struct timespec deadline_in(unsigned ms)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000;
	if (t.tv_nsec >= 1000000000) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000;
	}
	return t;
}

static void poke(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	c->recheck = 1;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

/* ---- waiting on locks ------------------------------------------------------ */

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
	 * another node owns the volume now (lose_role drops the engine). */
	if (status == -ENOTCONN && h == &h->c->coord && atomic_load(&h->c->role) == CL_COORDINATOR)
		journal_gate_set(JOURNAL_GATE_CLOSED);
	if (status == -ENOTCONN)
		poke(h->c);
}

static void held_init(struct held_lock *h, struct cluster *c)
{
	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	h->c = c;
}

static int held_wait(struct held_lock *h)
{
	struct timespec dl = deadline_in(LOCK_TIMEOUT_MS);
	pthread_mutex_lock(&h->mu);
	while (h->pending && pthread_cond_timedwait(&h->cv, &h->mu, &dl) == 0)
		;
	int rc = h->pending ? -ETIMEDOUT : h->status;
	pthread_mutex_unlock(&h->mu);
	if (rc == -ETIMEDOUT) {
		dg_cancel(h->lk);
		dl = deadline_in(10000);
		pthread_mutex_lock(&h->mu);
		while (h->pending && pthread_cond_timedwait(&h->cv, &h->mu, &dl) == 0)
			;
		rc = h->pending ? -ETIMEDOUT : (h->status == -ECANCELED ? -ETIMEDOUT : h->status);
		pthread_mutex_unlock(&h->mu);
	}
	return rc;
}

static int held_lock(struct held_lock *h, struct dg_lockspace *ls, const char *name,
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

static int held_convert(struct held_lock *h, enum dg_mode mode, unsigned flags, const uint8_t *lvb)
{
	pthread_mutex_lock(&h->mu);
	h->pending = 1;
	pthread_mutex_unlock(&h->mu);
	int rc = dg_convert(h->lk, mode, flags, lvb);
	return rc ? rc : held_wait(h);
}

static void held_unlock(struct held_lock *h, unsigned flags, const uint8_t *lvb)
{
	if (h->lk)
		dg_unlock(h->lk, flags, lvb);
	h->lk = NULL;
}

static int held_lost(struct held_lock *h)
{
	pthread_mutex_lock(&h->mu);
	int lost = h->lost;
	pthread_mutex_unlock(&h->mu);
	return lost;
}

/* ---- who is the coordinator ---------------------------------------------- */

static void info_decode(const uint8_t *lvb, struct coord_info *ci)
{
	uint32_t f[5];
	memcpy(f, lvb, sizeof(f));
	if (f[0] != INFO_MAGIC) {
		memset(ci, 0, sizeof(*ci));
		return;
	}
	*ci = (struct coord_info){ f[1], f[2], f[3], f[4] };
}

static int info_read(struct cluster *c, struct coord_info *ci)
{
	int rc = held_convert(&c->info, DG_PR, DG_VALBLK, NULL);
	if (rc)
		return rc;
	info_decode(c->info.lvb, ci);
	return held_convert(&c->info, DG_NL, 0, NULL);
}

static int info_write(struct cluster *c, const struct coord_info *ci)
{
	int rc = held_convert(&c->info, DG_EX, DG_VALBLK, NULL);
	if (rc)
		return rc;
	uint8_t lvb[DG_LVB_LEN] = { 0 };
	uint32_t f[5] = { INFO_MAGIC, ci->epoch, ci->nodeid, ci->port, ci->move_target };
	memcpy(lvb, f, sizeof(f));
	return held_convert(&c->info, DG_NL, DG_VALBLK, lvb);
}

/* The info lock is lost with our lineage after a partition: take it anew. */
static int info_ensure(struct cluster *c)
{
	if (c->info.lk && !held_lost(&c->info))
		return 0;
	held_unlock(&c->info, 0, NULL);
	return held_lock(&c->info, c->ls, "coordinfo", DG_NL, 0);
}

static int member_find(struct cluster *c, uint32_t nodeid, const char *name, struct dg_member *out)
{
	struct dg_member m[MAX_NODES];
	int q = 0, n = dg_members(c->ls, m, MAX_NODES, &q);
	for (int i = 0; i < n; i++) {
		if (m[i].state != DG_NODE_UP)
			continue;
		if ((nodeid && m[i].nodeid == nodeid) || (name && strcmp(m[i].name, name) == 0)) {
			if (out)
				*out = m[i];
			return 1;
		}
	}
	return 0;
}

static int others_up(struct cluster *c)
{
	struct dg_member m[MAX_NODES];
	int q = 0, n = dg_members(c->ls, m, MAX_NODES, &q), others = 0;
	for (int i = 0; i < n; i++)
		others += m[i].state == DG_NODE_UP && m[i].nodeid != c->self;
	return others;
}

/* ---- participant: the connection to the coordinator -------------------- */

static void rio_log_to_csvfs(void *arg, enum rio_log_level level, const char *line)
{
	(void)arg;
	static const int map[] = { LOG_ERR_L, LOG_WARN_L, LOG_INFO_L, LOG_DEBUG_L };
	csvfs_log(map[level], "%s", line);
}

static struct conn *conn_get(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	struct conn *k = c->conn && !c->conn->dead ? c->conn : NULL;
	if (k)
		k->refs++;
	pthread_mutex_unlock(&c->mu);
	return k;
}

static void conn_put(struct cluster *c, struct conn *k)
{
	pthread_mutex_lock(&c->mu);
	if (--k->refs == 0 && k->dead)
		pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

/* Calls in flight fail (and their requests retry elsewhere); then it goes. */
static void conn_retire(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	struct conn *k = c->conn;
	c->conn = NULL;
	if (k)
		k->dead = 1;
	pthread_mutex_unlock(&c->mu);
	if (!k)
		return;
	rio_client_shutdown(k->cl);
	pthread_mutex_lock(&c->mu);
	while (k->refs)
		pthread_cond_wait(&c->cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
	rio_client_destroy(k->cl);
	free(k);
}

/* Idempotent or not, as the protocol's table says (fs/proto.c). */
static unsigned call_flags(uint16_t op)
{
	const struct proto_op *o = proto_op(op);
	return o && o->idempotent ? RIO_CALL_IDEMPOTENT : 0;
}

/* Tells a new coordinator what this node has open (it knows nothing of the
 * old one's opens), and commits again what the old one may not have made
 * durable. */
static void reclaim_one(struct volume *v, struct minode *m, void *arg)
{
	struct conn *k = arg;
	unsigned opens = minode_open_count(v, m);
	for (unsigned i = 0; i < opens; i++) {
		struct rio_writer w;
		struct rio_reply rep;
		struct proto_req q = { .open = { .ino = m->ino, .generation = m->generation } };
		rio_writer_init(&w, 0);
		proto_op(OP_OPEN)->put_req(&w, &q);
		int rc = rio_client_call(k->cl, OP_OPEN, call_flags(OP_OPEN), rio_writer_data(&w), w.len,
					 &rep, CALL_TIMEOUT_MS);
		rio_writer_free(&w);
		if (rc == RIO_OK && rep.status)
			csvfs_log(LOG_WARN_L, "inode %u: the new coordinator refused our open: %s", m->ino,
				  strerror(rep.status));
		else if (rc != RIO_OK)
			csvfs_log(LOG_WARN_L, "inode %u: reclaiming our open failed: %s", m->ino, rio_strerror(rc));
		rio_reply_free(&rep);
	}
}

static int connect_to(struct cluster *c, const struct coord_info *ci, const struct dg_member *mb)
{
	struct conn *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	struct rio_client_config cfg = {
		.cred_dir = c->o.cred_dir, .host = mb->address, .port = (uint16_t)ci->port,
		.expect_peer = mb->name, .log = rio_log_to_csvfs,
		.connect_timeout_ms = CONNECT_TIMEOUT_MS,
	};
	char err[512];
	int rc = rio_client_create(&cfg, &k->cl, err, sizeof(err));
	if (rc == RIO_OK)
		rc = rio_client_wait_connected(k->cl, CONNECT_TIMEOUT_MS, err, sizeof(err));
	if (rc != RIO_OK) {
		csvfs_log(LOG_WARN_L, "cannot reach coordinator %s (%s:%u): %s", mb->name, mb->address,
			  ci->port, err);
		rio_client_destroy(k->cl);
		free(k);
		return -EHOSTUNREACH;
	}
	k->epoch = ci->epoch;
	k->nodeid = ci->nodeid;
	snprintf(k->name, sizeof(k->name), "%s", mb->name);
	minode_foreach(c->v, reclaim_one, k);
	conn_retire(c);
	pthread_mutex_lock(&c->mu);
	c->conn = k;
	c->epoch = ci->epoch;
	c->coord_nodeid = ci->nodeid;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	csvfs_log(LOG_INFO_L, "coordinator is %s (node %u, epoch %u); this node is a participant",
		  mb->name, ci->nodeid, ci->epoch);
	return 0;
}

int cluster_call(struct cluster *c, uint16_t op, struct rio_writer *req, struct rio_reply *reply)
{
	return cluster_call_timeout(c, op, req, reply, CALL_TIMEOUT_MS);
}

int cluster_call_timeout(struct cluster *c, uint16_t op, struct rio_writer *req,
			 struct rio_reply *reply, unsigned timeout_ms)
{
	unsigned flags = call_flags(op);
	struct conn *k = conn_get(c);
	if (!k) {
		poke(c);
		return -ERESTART;
	}
	int rc = rio_client_call(k->cl, op, flags, rio_writer_data(req), req->len, reply, timeout_ms);
	conn_put(c, k);
	if (rc == RIO_OK) {
		int status = reply->status;
		if (status == 0)
			return 0;
		rio_reply_free(reply);
		if (status == EREMCHG) {
			poke(c);
			return -ERESTART;
		}
		return -status;
	}
	if (rc == RIO_E_SHUTDOWN || rc == RIO_E_CLOSED || ((flags & RIO_CALL_IDEMPOTENT) && rc != RIO_E_TOOBIG)) {
		poke(c);
		return -ERESTART;
	}
	csvfs_log(LOG_WARN_L, "%s request to coordinator failed: %s", proto_op_name(op), rio_strerror(rc));
	return rc == RIO_E_TOOBIG ? -E2BIG : rc == RIO_E_TIMEOUT ? -ETIMEDOUT : -EIO;
}

uint32_t cluster_epoch(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	uint32_t e = c->epoch;
	pthread_mutex_unlock(&c->mu);
	return e;
}

/* ---- participant: layout locks ---------------------------------------- */

#define TOKEN_INO(t) ((ext2_ino_t)((t) >> 32))

static void layout_name(ext2_ino_t ino, char *out, size_t len)
{
	snprintf(out, len, "L%u", ino);
}

/* Layout-lock callbacks carry one word: a token (ino << 32 | sequence).
 * The token's cluster is the process's one cluster (a daemon serves one
 * volume); it is set while the lockspace is connected. */
static pthread_mutex_t owner_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cluster *layout_owner;

static struct cluster *owner_get(void)
{
	pthread_mutex_lock(&owner_lock);
	struct cluster *c = layout_owner;
	pthread_mutex_unlock(&owner_lock);
	return c;
}

static void owner_set(struct cluster *c)
{
	pthread_mutex_lock(&owner_lock);
	layout_owner = c;
	pthread_mutex_unlock(&owner_lock);
}

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

static void layout_ast(void *arg, int status, enum dg_mode granted, const uint8_t *lvb)
{
	(void)granted; (void)lvb;
	uint64_t token = (uint64_t)(uintptr_t)arg;
	struct cluster *c = owner_get();
	struct minode *m = c ? minode_find(c->v, TOKEN_INO(token)) : NULL;
	if (!m)
		return;
	int lost = 0;
	pthread_mutex_lock(&m->map_lock);
	if (m->layout_token == token) {
		if (m->layout_state == LAYOUT_WAITING)
			m->layout_state = status == 0 ? LAYOUT_GRANTED : LAYOUT_FAILED;
		else if (status == -ENOTCONN)
			lost = 1;   /* our lineage is gone: so is the lock */
	}
	pthread_mutex_unlock(&m->map_lock);
	minode_put(c->v, m);
	if (lost)
		recall_queue(c, token);
	pthread_mutex_lock(&c->mu);
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

static void layout_bast(void *arg, enum dg_mode blocking)
{
	(void)blocking;
	struct cluster *c = owner_get();
	if (c)
		recall_queue(c, (uint64_t)(uintptr_t)arg);
}

int cluster_layout_hold(struct cluster *c, struct minode *m)
{
	pthread_mutex_lock(&m->map_lock);
	int state = m->layout_state;
	uint64_t token = m->layout_token;
	if (state == LAYOUT_NONE || state == LAYOUT_FAILED) {
		pthread_mutex_lock(&c->mu);
		token = ((uint64_t)m->ino << 32) | (++c->next_token & 0xffffffffu);
		pthread_mutex_unlock(&c->mu);
		m->layout_token = token;
		m->layout_state = LAYOUT_WAITING;
		m->nmap = 0;     /* nothing cached without the lock */
		/* Truncates by others while we held no lock recalled nothing of
		 * ours: the size we know must be asked again once granted. */
		atomic_store(&m->size_stale, 1);
		pthread_mutex_unlock(&m->map_lock);
		char name[32];
		layout_name(m->ino, name, sizeof(name));
		minode_ref(c->v, m);   /* the lock's reference */
		struct dg_lock *lk = NULL;
		int rc = dg_lock(c->ls, name, DG_PR, 0, layout_ast, layout_bast,
				 (void *)(uintptr_t)token, &lk);
		pthread_mutex_lock(&m->map_lock);
		if (rc) {
			m->layout_state = LAYOUT_FAILED;
			pthread_mutex_unlock(&m->map_lock);
			minode_put(c->v, m);
			return rc;
		}
		m->layout_lk = lk;
	}
	uint64_t until = now_ms() + LOCK_TIMEOUT_MS;
	while (m->layout_state == LAYOUT_WAITING && m->layout_token == token && now_ms() < until) {
		pthread_mutex_unlock(&m->map_lock);
		pthread_mutex_lock(&c->mu);
		struct timespec dl = deadline_in(50);
		pthread_cond_timedwait(&c->cv, &c->mu, &dl);
		pthread_mutex_unlock(&c->mu);
		pthread_mutex_lock(&m->map_lock);
	}
	int rc = m->layout_state == LAYOUT_GRANTED ? 0 : -EAGAIN;
	pthread_mutex_unlock(&m->map_lock);
	return rc;
}

/* Caller may not hold m->io_lock: in-flight I/O that uses the cached
 * mappings finishes before they go. */
void cluster_layout_drop(struct cluster *c, struct minode *m)
{
	pthread_rwlock_wrlock(&m->io_lock);
	pthread_mutex_lock(&m->map_lock);
	struct dg_lock *lk = m->layout_lk;
	int had = m->layout_state != LAYOUT_NONE;
	m->layout_lk = NULL;
	m->layout_state = LAYOUT_NONE;
	m->layout_token = 0;
	m->nmap = 0;
	pthread_mutex_unlock(&m->map_lock);
	atomic_store(&m->size_stale, 1);
	if (lk)
		dg_unlock(lk, 0, NULL);
	pthread_rwlock_unlock(&m->io_lock);
	if (had)
		minode_put(c->v, m);   /* the lock's reference */
}

static void *recall_main(void *arg)
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

/* ---- coordinator: recalls ----------------------------------------------- */

int cluster_recall_begin(struct cluster *c, ext2_ino_t ino, void **token)
{
	*token = NULL;
	if (!others_up(c))
		return 0;
	char name[32];
	layout_name(ino, name, sizeof(name));
	struct dg_lock *lk = NULL;
	int rc = dg_lock_wait(c->ls, name, DG_EX, 0, LOCK_TIMEOUT_MS, NULL, &lk);
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

/* ---- roles ------------------------------------------------------------------ */

struct server *cluster_server(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	struct server *s = c->srv_state;
	pthread_mutex_unlock(&c->mu);
	return s;
}

/* What a participant cached is no use to a coordinator (its engine knows),
 * and sizes come from the engine again. */
static void minode_to_coordinator(struct volume *v, struct minode *m, void *arg)
{
	struct cluster *c = arg;
	cluster_layout_drop(c, m);
	minode_reload_size(v, m);
	/* Our own written ranges the old coordinator may have lost. */
	meta_replay_pending(v, m);
	atomic_store(&m->size_stale, 0);
}

static int server_start(struct cluster *c)
{
	struct server *st;
	if (server_create(c->v, &st))
		return -ENOMEM;
	struct rio_server_config cfg = {
		.cred_dir = c->o.cred_dir, .listen_addr = "0.0.0.0", .port = c->o.port,
		.handler = server_handle, .handler_arg = c, .log = rio_log_to_csvfs,
	};
	pthread_mutex_lock(&c->mu);
	c->srv_state = st;
	pthread_mutex_unlock(&c->mu);
	char err[512];
	struct rio_server *srv;
	int rc = rio_server_start(&cfg, &srv, err, sizeof(err));
	if (rc != RIO_OK) {
		csvfs_log(LOG_ERR_L, "coordinator cannot serve other nodes on port %u: %s", c->o.port, err);
		pthread_mutex_lock(&c->mu);
		c->srv_state = NULL;
		pthread_mutex_unlock(&c->mu);
		server_destroy(st);
		return -EADDRINUSE;
	}
	pthread_mutex_lock(&c->mu);
	c->srv = srv;
	pthread_mutex_unlock(&c->mu);
	return 0;
}

/* Stops serving (handlers finish, GOAWAY) and forgets the other nodes' opens. */
static void server_stop(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	struct rio_server *srv = c->srv;
	c->srv = NULL;
	pthread_mutex_unlock(&c->mu);
	if (srv)
		rio_server_stop(srv);
	pthread_mutex_lock(&c->mu);
	struct server *st = c->srv_state;
	c->srv_state = NULL;
	pthread_mutex_unlock(&c->mu);
	server_destroy(st);
}

static void set_role(struct cluster *c, int role)
{
	atomic_store(&c->role, role);
}

/* We hold "coord" EX: open the engine (replaying the journal), serve, and
 * tell everyone. prev is what the value block said before us. */
static int become_coordinator(struct cluster *c, const struct coord_info *prev)
{
	int takeover = prev->nodeid != 0 && prev->nodeid != c->self;
	int keep_orphans = others_up(c);
	conn_retire(c);                  /* requests to the old one give up and wait */
	pthread_rwlock_wrlock(&c->role_lock);
	char err[1024];
	uint64_t t0 = now_ms();
	int rc = volume_attach_engine(c->v, takeover || keep_orphans, err, sizeof(err));
	if (rc) {
		pthread_rwlock_unlock(&c->role_lock);
		csvfs_log(LOG_ERR_L, "cannot become coordinator: %s", err);
		return rc;
	}
	minode_foreach(c->v, minode_to_coordinator, c);
	set_role(c, CL_COORDINATOR);
	pthread_rwlock_unlock(&c->role_lock);
	volume_start(c->v);
	server_start(c);
	struct coord_info ci = { .epoch = prev->epoch + 1, .nodeid = c->self, .port = c->o.port };
	rc = info_ensure(c);
	if (rc == 0)
		rc = info_write(c, &ci);
	if (rc)
		csvfs_log(LOG_ERR_L, "cannot publish this node as coordinator: %s", strerror(-rc));
	pthread_mutex_lock(&c->mu);
	c->epoch = ci.epoch;
	c->coord_nodeid = c->self;
	c->move_target = 0;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (takeover)
		csvfs_log(LOG_WARN_L, "this node is now the coordinator (epoch %u): took over from node %u, "
			  "journal replayed, in %" PRIu64 " ms", ci.epoch, prev->nodeid, now_ms() - t0);
	else
		csvfs_log(LOG_WARN_L, "this node is now the coordinator (epoch %u): volume opened in %" PRIu64
			  " ms", ci.epoch, now_ms() - t0);
	return 0;
}

/* What the engine's map cache held (holes and unwritten extents too) is not
 * protected by any layout lock: a participant starts from nothing. */
static void minode_to_participant(struct volume *v, struct minode *m, void *arg)
{
	(void)v; (void)arg;
	minode_invalidate_map(m);
	atomic_store(&m->size_stale, 1);
}

/* Hands the role over: everything durable, the journal clean, MMP released. */
static void step_down(struct cluster *c, uint32_t target)
{
	server_stop(c);
	pthread_rwlock_wrlock(&c->role_lock);
	volume_detach_engine(c->v);
	minode_foreach(c->v, minode_to_participant, NULL);
	set_role(c, CL_PARTICIPANT);
	pthread_rwlock_unlock(&c->role_lock);
	pthread_mutex_lock(&c->mu);
	uint32_t epoch = c->epoch;
	c->coord_nodeid = 0;
	c->move_target = target;
	c->move_deadline = deadline_in(MOVE_GRACE_MS);
	pthread_mutex_unlock(&c->mu);
	struct coord_info ci = { .epoch = epoch, .nodeid = 0, .port = 0, .move_target = target };
	if (info_ensure(c) || info_write(c, &ci))
		csvfs_log(LOG_WARN_L, "could not announce the move in the coordinator value block");
	held_unlock(&c->coord, 0, NULL);
	csvfs_log(LOG_WARN_L, "this node stepped down as coordinator (epoch %u)%s", epoch,
		  target ? "; handing over" : "");
}

/* Our lineage was superseded while we were cut off: another node is the
 * coordinator now. Nothing of ours may reach the LUN any more. */
static void lose_role(struct cluster *c)
{
	journal_gate_set(JOURNAL_GATE_CLOSED);
	server_stop(c);
	pthread_rwlock_wrlock(&c->role_lock);
	volume_abandon_engine(c->v);
	minode_foreach(c->v, minode_to_participant, NULL);
	set_role(c, CL_PARTICIPANT);
	pthread_rwlock_unlock(&c->role_lock);
	held_unlock(&c->coord, 0, NULL);
	pthread_mutex_lock(&c->mu);
	c->coord_nodeid = 0;
	/* The stale engine is gone: as a participant this node may use the
	 * LUN again with fresh layouts (or stays paused without quorum). */
	journal_gate_set(c->quorate ? JOURNAL_GATE_OPEN : JOURNAL_GATE_PAUSED);
	pthread_mutex_unlock(&c->mu);
	csvfs_log(LOG_ERR_L, "this node lost the coordinator role while cut off from the cluster; "
		  "its unsaved metadata changes are dropped, it rejoins as a participant");
}

/* ---- the cluster thread ----------------------------------------------------- */

static void try_take_role(struct cluster *c, const struct coord_info *ci)
{
	int rc = held_lock(&c->coord, c->ls, "coord", DG_EX, DG_NOQUEUE);
	if (rc)
		return;                       /* someone holds it (maybe departed, not yet fenced) */
	/* The value block as it is now that nobody else can write it: the
	 * epoch we follow, and whether a predecessor has to be taken over. */
	struct coord_info now = *ci;
	if (info_read(c, &now) != 0)
		now = *ci;
	if (become_coordinator(c, &now) != 0) {
		held_unlock(&c->coord, 0, NULL);
		sleep(1);
	}
}

static int move_waiting(struct cluster *c, const struct coord_info *ci)
{
	if (!ci->move_target || ci->move_target == c->self || ci->nodeid)
		return 0;
	pthread_mutex_lock(&c->mu);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	if (c->move_target != ci->move_target) {
		c->move_target = ci->move_target;
		c->move_deadline = deadline_in(MOVE_GRACE_MS);
	}
	int waiting = now.tv_sec < c->move_deadline.tv_sec;
	pthread_mutex_unlock(&c->mu);
	return waiting && member_find(c, ci->move_target, NULL, NULL);
}

static void participant_step(struct cluster *c)
{
	struct coord_info ci;
	if (info_ensure(c) != 0 || info_read(c, &ci) != 0)
		return;
	pthread_mutex_lock(&c->mu);
	int connected = c->conn && !c->conn->dead && c->epoch == ci.epoch && ci.nodeid &&
			c->coord_nodeid == ci.nodeid;
	pthread_mutex_unlock(&c->mu);
	struct dg_member mb;
	int settled = 0;
	int live = ci.nodeid && ci.nodeid != c->self && member_find(c, ci.nodeid, NULL, &mb);
	if (live) {
		if (!connected)
			connected = connect_to(c, &ci, &mb) == 0;
		char peer[RIO_NODE_NAME_MAX + 1] = "";
		struct conn *k = connected ? conn_get(c) : NULL;
		if (k) {
			rio_client_peer(k->cl, peer, sizeof(peer));
			conn_put(c, k);
		}
		settled = peer[0] != 0;
	}
	pthread_mutex_lock(&c->mu);
	c->settled = settled;
	pthread_mutex_unlock(&c->mu);
	if (live)
		return;
	/* No live coordinator: whoever gets "coord" first takes over. */
	if (!move_waiting(c, &ci))
		try_take_role(c, &ci);
}

static void close_fenced_opens(struct cluster *c);

static void *cluster_main(void *arg)
{
	struct cluster *c = arg;
	pthread_mutex_lock(&c->mu);
	while (!c->stopping) {
		/* A participant without a working link to a live coordinator looks
		 * again soon: a new one publishes itself within milliseconds. */
		int quick = c->recheck || (!c->settled && atomic_load(&c->role) != CL_COORDINATOR);
		c->recheck = 0;
		if (!quick) {
			struct timespec dl = deadline_in(LOOP_MS * 4);
			pthread_cond_timedwait(&c->cv, &c->mu, &dl);
		}
		int stop = c->stopping, quorate = c->quorate;
		pthread_mutex_unlock(&c->mu);
		if (stop)
			break;
		pthread_mutex_lock(&c->mu);
		uint32_t move = c->move_request;
		c->move_request = 0;
		pthread_mutex_unlock(&c->mu);
		if (atomic_load(&c->role) == CL_COORDINATOR && held_lost(&c->coord))
			lose_role(c);
		else if (atomic_load(&c->role) == CL_COORDINATOR && move && quorate)
			step_down(c, move);
		if (atomic_load(&c->role) == CL_COORDINATOR)
			close_fenced_opens(c);
		else if (quorate && atomic_load(&c->role) == CL_PARTICIPANT)
			participant_step(c);
		if (quick)
			usleep(QUICK_MS * 1000);
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* ---- membership callbacks (dlm-glue's dispatch thread: no blocking) ----- */

static void cb_membership(void *arg)
{
	poke(arg);
}

static void cb_quorum(void *arg, int quorate)
{
	struct cluster *c = arg;
	pthread_mutex_lock(&c->mu);
	c->quorate = quorate;
	if (!quorate && !c->paused) {
		c->paused = 1;
		clock_gettime(CLOCK_MONOTONIC, &c->paused_since);
	} else if (quorate) {
		c->paused = 0;
	}
	c->recheck = 1;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (!quorate) {
		/* Invariant 5: no LUN I/O while cut off; I/O already issued drains. */
		if (journal_gate_get() == JOURNAL_GATE_OPEN)
			journal_gate_set(JOURNAL_GATE_PAUSED);
		csvfs_log(LOG_WARN_L, "quorum lost: this node is paused (no LUN I/O; requests held)");
	} else if (atomic_load(&c->role) == CL_COORDINATOR && held_lost(&c->coord)) {
		/* Back, but superseded: the gate stays shut until the stale
		 * engine is dropped (lose_role). */
		journal_gate_set(JOURNAL_GATE_CLOSED);
		csvfs_log(LOG_WARN_L, "quorum regained, but this node's coordinator role was taken over");
	} else {
		if (journal_gate_get() != JOURNAL_GATE_OPEN)
			journal_gate_set(JOURNAL_GATE_OPEN);
		csvfs_log(LOG_WARN_L, "quorum regained: this node resumes");
	}
}

static void cb_node_down(void *arg, uint32_t nodeid)
{
	csvfs_log(LOG_WARN_L, "node %u left the cluster; its locks hold until it is fenced", nodeid);
	poke(arg);
}

static void cb_node_fenced(void *arg, uint32_t nodeid)
{
	struct cluster *c = arg;
	csvfs_log(LOG_WARN_L, "node %u is fenced; its locks are released", nodeid);
	pthread_mutex_lock(&c->mu);
	if (c->nfenced < MAX_NODES)
		c->fenced[c->nfenced++] = nodeid;
	c->recheck = 1;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

/* Coordinator: files a fenced node had open are closed for it. */
static void close_fenced_opens(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	uint32_t ids[MAX_NODES];
	unsigned n = c->nfenced;
	memcpy(ids, c->fenced, n * sizeof(ids[0]));
	c->nfenced = 0;
	pthread_mutex_unlock(&c->mu);
	struct server *s = cluster_server(c);
	if (!s || !n)
		return;
	struct dg_member m[MAX_NODES];
	int q = 0, count = dg_members(c->ls, m, MAX_NODES, &q);
	for (unsigned i = 0; i < n; i++)
		for (int j = 0; j < count; j++)
			if (m[j].nodeid == ids[i] && m[j].state != DG_NODE_UP)
				server_drop_node(s, m[j].name);
}

static void dg_log_to_csvfs(void *arg, int level, const char *fmt, va_list ap)
{
	csvfs_vlog(arg, level, fmt, ap);
}

/* ---- requests --------------------------------------------------------------- */

int cluster_ready(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	int ready = !c->paused && (atomic_load(&c->role) == CL_COORDINATOR ||
				   (c->conn && !c->conn->dead));
	pthread_mutex_unlock(&c->mu);
	return ready;
}

int cluster_enter(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	if (c->paused) {
		struct timespec dl = deadline_in(c->o.pause_timeout_ms);
		while (c->paused && !c->stopping &&
		       pthread_cond_timedwait(&c->cv, &c->mu, &dl) == 0)
			;
		if (c->paused) {
			pthread_mutex_unlock(&c->mu);
			return -EIO;
		}
	}
	pthread_mutex_unlock(&c->mu);
	pthread_rwlock_rdlock(&c->role_lock);
	return atomic_load(&c->role);
}

void cluster_leave(struct cluster *c)
{
	pthread_rwlock_unlock(&c->role_lock);
}

int cluster_wait_coordinator(struct cluster *c, uint64_t *since_ms)
{
	/* Bounded by time, not by wake-ups: many waiting requests wake each
	 * other, and a count of wake-ups ran out within milliseconds. */
	uint64_t now = now_ms();
	if (*since_ms == 0)
		*since_ms = now;
	if (now - *since_ms >= c->o.coord_wait_ms) {
		csvfs_log(LOG_ERR_L, "no coordinator reachable for %u ms: request fails with EIO",
			  c->o.coord_wait_ms);
		return -EIO;
	}
	pthread_mutex_lock(&c->mu);
	if (!c->recheck) {
		c->recheck = 1;
		pthread_cond_broadcast(&c->cv);
	}
	struct timespec dl = deadline_in(WAIT_COORD_MS);
	pthread_cond_timedwait(&c->cv, &c->mu, &dl);
	int stop = c->stopping;
	pthread_mutex_unlock(&c->mu);
	return stop ? -EIO : 0;
}

/* ---- csvctl: move and status ---------------------------------------------- */

static uint32_t pick_target(struct cluster *c, const char *name)
{
	struct dg_member m[MAX_NODES];
	int q = 0, n = dg_members(c->ls, m, MAX_NODES, &q);
	for (int i = 0; i < n; i++) {
		if (m[i].state != DG_NODE_UP || m[i].nodeid == c->self)
			continue;
		if (!name[0] || strcmp(m[i].name, name) == 0)
			return m[i].nodeid;
	}
	return 0;
}

int cluster_move(struct cluster *c, const char *target, char *err, size_t errlen)
{
	if (atomic_load(&c->role) != CL_COORDINATOR) {
		struct rio_writer w;
		struct rio_reply rep;
		struct proto_req q = { .move = { target } };
		rio_writer_init(&w, 0);
		proto_op(OP_MOVE)->put_req(&w, &q);
		int rc = cluster_call(c, OP_MOVE, &w, &rep);
		rio_writer_free(&w);
		if (rc == 0)
			rio_reply_free(&rep);
		else
			snprintf(err, errlen, "the coordinator refused or could not be reached: %s",
				 strerror(rc == -ERESTART ? EHOSTUNREACH : -rc));
		return rc == -ERESTART ? -EHOSTUNREACH : rc;
	}
	if (target[0] && strcmp(target, c->o.node) == 0) {
		snprintf(err, errlen, "%s is already the coordinator", target);
		return -EALREADY;
	}
	uint32_t id = pick_target(c, target);
	if (!id) {
		snprintf(err, errlen, target[0] ? "node %s is not a live member of this volume's cluster"
						: "no other live node to move to%s", target);
		return -ENOENT;
	}
	pthread_mutex_lock(&c->mu);
	c->move_request = id;
	c->recheck = 1;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	csvfs_log(LOG_WARN_L, "moving the coordinator role to node %u", id);
	return 0;
}

static const char *state_name(enum dg_node_state s)
{
	return s == DG_NODE_UP ? "up" : s == DG_NODE_DEPARTED ? "departed" : "fenced";
}

void cluster_status_json(struct cluster *c, char *out, size_t len)
{
	struct dg_member m[MAX_NODES];
	int q = 0, n = dg_members(c->ls, m, MAX_NODES, &q);
	pthread_mutex_lock(&c->mu);
	uint32_t coord = c->coord_nodeid, epoch = c->epoch;
	int paused = c->paused, connected = c->conn && !c->conn->dead;
	pthread_mutex_unlock(&c->mu);
	int role = atomic_load(&c->role);
	const char *coord_name = "";
	for (int i = 0; i < n; i++)
		if (m[i].nodeid == coord)
			coord_name = m[i].name;
	size_t o = (size_t)snprintf(out, len,
		"\"coordinator\":\"%s\",\"coordinator_nodeid\":%u,\"epoch\":%u,\"this_node\":\"%s\","
		"\"role\":\"%s\",\"quorate\":%s,\"nodes\":[",
		coord_name, coord, epoch, c->o.node, role == CL_COORDINATOR ? "coordinator" : "participant",
		q ? "true" : "false");
	for (int i = 0; i < n && o + 256 < len; i++) {
		int self = m[i].nodeid == c->self;
		const char *io = m[i].state != DG_NODE_UP ? "unavailable"
				 : self && paused ? "paused"
				 : self && role == CL_PARTICIPANT && !connected ? "unavailable" : "direct";
		o += (size_t)snprintf(out + o, len - o,
			"%s{\"name\":\"%s\",\"nodeid\":%u,\"this_node\":%s,\"state\":\"%s\",\"role\":\"%s\","
			"\"mounted\":%s,\"io_state\":\"%s\",\"io_reasons\":[]}",
			i ? "," : "", m[i].name, m[i].nodeid, self ? "true" : "false", state_name(m[i].state),
			m[i].nodeid == coord ? "coordinator" : "participant",
			m[i].state == DG_NODE_UP ? "true" : "false", io);
	}
	if (o + 2 < len)
		snprintf(out + o, len - o, "]");
}

/* ---- start and stop ------------------------------------------------------- */

static void drop_layout_cb(struct volume *v, struct minode *m, void *arg)
{
	(void)v;
	cluster_layout_drop(arg, m);
}

int cluster_check_credential(const struct cluster_opts *o, char *err, size_t errlen)
{
	char name[RIO_NODE_NAME_MAX + 1], why[512];
	const char *dir = o->cred_dir[0] ? o->cred_dir : RIO_DEFAULT_CRED_DIR;
	if (rio_cred_check(dir, name, sizeof(name), why, sizeof(why)) != 0) {
		snprintf(err, errlen, "node credential: %s (issue one with 'csvctl keygen --node %s')",
			 why, o->node);
		return -EACCES;
	}
	if (strcmp(name, o->node) != 0) {
		snprintf(err, errlen, "the credential in %s is node %s's, not this node's (%s)", dir, name,
			 o->node);
		return -EACCES;
	}
	return 0;
}

int cluster_start(struct volume *v, const struct cluster_opts *o, char *err, size_t errlen)
{
	struct cluster *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	c->v = v;
	c->o = *o;
	if (!c->o.coord_wait_ms)
		c->o.coord_wait_ms = 120000;
	if (!c->o.pause_timeout_ms)
		c->o.pause_timeout_ms = 60000;
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	/* A role change must not starve behind a stream of requests. */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&c->role_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&c->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_cond_init(&c->cv, &ca);
	pthread_condattr_destroy(&ca);
	held_init(&c->coord, c);
	held_init(&c->info, c);
	set_role(c, CL_PARTICIPANT);
	c->quorate = 1;
	struct dg_config cfg = {
		.backend = c->o.backend[0] ? c->o.backend : "cpg", .lockspace = v->uuid,
		.fence_command = c->o.fence_command[0] ? c->o.fence_command : NULL,
		.self_fence_deadline_ms = c->o.fence_deadline_ms,
		.cb = { .arg = c, .membership = cb_membership, .node_down = cb_node_down,
			.node_fenced = cb_node_fenced, .quorum = cb_quorum },
		.log = dg_log_to_csvfs,
	};
	v->cluster = c;
	owner_set(c);
	int rc = dg_connect(&cfg, &c->ls, err, errlen);
	if (rc == 0) {
		c->self = dg_this_node(c->ls);
		if (o->nodeid && o->nodeid != c->self) {
			snprintf(err, errlen, "this node is corosync node %u, not node %u as configured",
				 c->self, o->nodeid);
			rc = -EINVAL;
		}
	}
	if (rc == 0) {
		int q = 0;
		dg_members(c->ls, NULL, 0, &q);
		c->quorate = q;
		/* The coordinator-info lock is the cluster thread's to take (and
		 * take again when a merge supersedes our lineage). */
	}
	if (rc == 0 && pthread_create(&c->recall_thread, NULL, recall_main, c) == 0)
		c->threads |= 1;
	if (rc == 0 && pthread_create(&c->thread, NULL, cluster_main, c) == 0)
		c->threads |= 2;
	if (rc) {
		cluster_stop(v);
		return rc;
	}
	csvfs_log(LOG_INFO_L, "joined the cluster as node %u (%s)", c->self, c->o.node);
	return 0;
}

void cluster_stop(struct volume *v)
{
	struct cluster *c = v->cluster;
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->stopping = 1;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (c->threads & 2)
		pthread_join(c->thread, NULL);
	if (atomic_load(&c->role) == CL_COORDINATOR && c->ls) {
		if (held_lost(&c->coord))
			lose_role(c);
		else
			step_down(c, 0);
	}
	conn_retire(c);
	minode_foreach(v, drop_layout_cb, c);
	if (c->threads & 1) {
		pthread_mutex_lock(&c->mu);
		pthread_cond_broadcast(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->recall_thread, NULL);
	}
	held_unlock(&c->info, 0, NULL);
	if (c->ls)
		dg_disconnect(c->ls);
	owner_set(NULL);
	v->cluster = NULL;
	pthread_rwlock_destroy(&c->role_lock);
	free(c);
}
