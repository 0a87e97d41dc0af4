/* Cluster mode, participant side: the redirect-io connection to the
 * coordinator, calls over it, and telling a new coordinator what this node
 * has open (reclaim). docs/cluster.md. */
#include "fs/cluster_internal.h"
#include "fs/proto.h"
#include "redirect-io/rio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Refused connections are limited: anyone who reaches the port can make
 * them, thousands a second (an accepted member's lines are few). */
void conn_rio_log(void *arg, enum rio_log_level level, const char *line)
{
	(void)arg;
	static const int map[] = { LOG_ERR_L, LOG_WARN_L, LOG_INFO_L, LOG_DEBUG_L };
	static struct log_limit refused = LOG_LIMIT_INIT;
	if (strncmp(line, "rio: refused ", 13) == 0)
		csvfs_log_limited(&refused, map[level], "%s", line);
	else
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
void conn_retire(struct cluster *c)
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

struct lock_reclaim { struct cluster *c; struct conn *k; };

/* One lock this node holds, told to a new coordinator. Outside its grace
 * period the coordinator checks it like a new request: refused means
 * another node took the range while this one was away, and it is lost. */
static void reclaim_lock(struct lock_reclaim *r, const struct plock *l)
{
	const struct proto_op *o = proto_op(OP_SETLK);
	struct rio_writer w;
	struct rio_reply rep;
	struct proto_req q = { .lock = { .l = *l, .reclaim = 1 } };
	rio_writer_init(&w, 0);
	o->put_req(&w, &q);
	int rc = rio_client_call(r->k->cl, OP_SETLK, call_flags(OP_SETLK), rio_writer_data(&w), w.len,
				 &rep, CALL_TIMEOUT_MS);
	rio_writer_free(&w);
	if (rc != RIO_OK) {
		csvfs_log(LOG_WARN_L, "inode %u: telling the new coordinator our file lock failed: %s",
			  l->ino, rio_strerror(rc));
		return;   /* the others are told all the same */
	}
	union proto_reply p;
	int taken = rep.status == 0 && proto_decode_reply(o, rep.payload, rep.len, &p) == 0 && p.lock.yes;
	rio_reply_free(&rep);
	if (!taken) {
		plock_forfeit(r->c->v->plocks_mine, l);
		atomic_fetch_add(&r->c->v->lock_epoch, 1);
		csvfs_log(LOG_ERR_L, "inode %u: the new coordinator refused this node's file lock (another "
			  "node holds the range now): I/O on the file that held it fails with EIO", l->ino);
	}
}

/* Every file lock of this node, then "done", which may end the grace period. */
static void reclaim_locks(struct cluster *c, struct conn *k)
{
	struct lock_reclaim r = { c, k };
	struct plock *mine;
	size_t n;
	if (plock_snapshot(c->v->plocks_mine, NULL, &mine, &n) == 0) {
		for (size_t i = 0; i < n; i++)
			reclaim_lock(&r, &mine[i]);
		free(mine);
	}
	struct rio_reply rep;
	int rc = rio_client_call(k->cl, OP_RECLAIM_DONE, call_flags(OP_RECLAIM_DONE), NULL, 0, &rep,
				 CALL_TIMEOUT_MS);
	if (rc == RIO_OK)
		rio_reply_free(&rep);
}

/* Test only (tests/integration/orphan_kill.sh): CSVFS_TEST_HOLD_RECLAIM=PATH
 * holds this node's reclaim (its opens and locks told to a new coordinator)
 * while PATH.NODE exists, at most 30 s: a reclaim later than the grace, as a
 * loaded node's can be. */
static void test_hold_reclaim(struct cluster *c)
{
	cl_test_hold(c, "CSVFS_TEST_HOLD_RECLAIM", "this node's reclaim", 30000);
}

static void conn_lost(void *arg)
{
	cl_poke(arg);
}

static int connect_to(struct cluster *c, const struct coord_info *ci, const struct dg_member *mb)
{
	struct conn *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	struct rio_client_config cfg = {
		.cred_dir = c->o.cred_dir, .host = mb->address, .port = (uint16_t)ci->port,
		.expect_peer = mb->name, .log = conn_rio_log,
		.connect_timeout_ms = CONNECT_TIMEOUT_MS,
		/* a coordinator that steps down says GOAWAY: look for the next one now */
		.on_lost = conn_lost, .on_lost_arg = c,
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
	test_hold_reclaim(c);
	minode_foreach(c->v, reclaim_one, k);
	reclaim_locks(c, k);
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

int conn_is_to(struct cluster *c, const struct coord_info *ci)
{
	pthread_mutex_lock(&c->mu);
	int connected = c->conn && !c->conn->dead && c->epoch == ci->epoch && ci->nodeid &&
			c->coord_nodeid == ci->nodeid;
	pthread_mutex_unlock(&c->mu);
	return connected;
}

int conn_settle(struct cluster *c, const struct coord_info *ci, const struct dg_member *mb,
		int connected)
{
	if (!connected)
		connected = connect_to(c, ci, mb) == 0;
	char peer[RIO_NODE_NAME_MAX + 1] = "";
	struct conn *k = connected ? conn_get(c) : NULL;
	if (k) {
		rio_client_peer(k->cl, peer, sizeof(peer));
		conn_put(c, k);
	}
	return peer[0] != 0;
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
		cl_poke(c);
		return -ERESTART;
	}
	int rc = rio_client_call_writer(k->cl, op, flags, req, reply, timeout_ms);
	conn_put(c, k);
	if (rc == RIO_OK) {
		int status = reply->status;
		if (status == 0)
			return 0;
		rio_reply_free(reply);
		if (status == EREMCHG) {
			cl_poke(c);
			return -ERESTART;
		}
		return -status;
	}
	/* A ONCE change in doubt (the coordinator's instance changed) is sent
	 * again: one that applied it left the record in the reply table
	 * (docs/cluster.md "Exactly once"). */
	int resend_safe = (flags & RIO_CALL_IDEMPOTENT) || (op == OP_ONCE && rc == RIO_E_INDOUBT);
	if (rc == RIO_E_SHUTDOWN || rc == RIO_E_CLOSED || (resend_safe && rc != RIO_E_TOOBIG)) {
		cl_poke(c);
		return -ERESTART;
	}
	csvfs_log(LOG_WARN_L, "%s request to coordinator failed: %s", proto_op_name(op), rio_strerror(rc));
	return rc == RIO_E_TOOBIG ? -E2BIG : rc == RIO_E_TIMEOUT ? -ETIMEDOUT : -EIO;
}

int cluster_call_settled(struct cluster *c, uint16_t op, struct rio_writer *req,
			 struct rio_reply *reply)
{
	uint64_t until = cl_now_ms() + CALL_SETTLE_MS;
	int rc;
	while ((rc = cluster_call(c, op, req, reply)) == -ERESTART && cl_now_ms() < until) {
		pthread_mutex_lock(&c->mu);
		int stopping = c->stopping;
		pthread_mutex_unlock(&c->mu);
		if (stopping)
			break;
		nanosleep(&(struct timespec){ 0, 100 * 1000 * 1000 }, NULL);
	}
	return rc;
}

uint32_t cluster_epoch(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	uint32_t e = c->epoch;
	pthread_mutex_unlock(&c->mu);
	return e;
}

/* ---- the participant's remote_link (fs/ops.h): this connection ---------- */

static int link_call(void *ctx, uint16_t op, struct rio_writer *req, struct rio_reply *rep,
		     unsigned timeout_ms)
{
	return cluster_call_timeout(ctx, op, req, rep, timeout_ms ? timeout_ms : CALL_TIMEOUT_MS);
}

static uint32_t link_epoch(void *ctx)
{
	return cluster_epoch(ctx);
}

static int link_layout_hold(void *ctx, struct minode *m)
{
	return cluster_layout_hold(ctx, m);
}

static void link_layout_drop(void *ctx, struct minode *m)
{
	cluster_layout_drop(ctx, m);
}

void conn_link_init(struct cluster *c)
{
	c->link = (struct remote_link){ .ctx = c, .call = link_call, .epoch = link_epoch,
					.layout_hold = link_layout_hold,
					.layout_drop = link_layout_drop };
	c->v->remote = &c->link;
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

/* ---- requests whose reply is an outcome (MAINTENANCE, GROW) --------------- */

int cluster_ask_outcome(struct cluster *c, uint16_t op, unsigned timeout_ms, char *msg, size_t len)
{
	struct rio_writer w;
	struct rio_reply rep;
	struct proto_req q = { 0 };
	union proto_reply *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	rio_writer_init(&w, 0);
	proto_op(op)->put_req(&w, &q);
	int rc = cluster_call_timeout(c, op, &w, &rep, timeout_ms);
	rio_writer_free(&w);
	if (rc == 0) {
		if (proto_decode_reply(proto_op(op), rep.payload, rep.len, p) != 0)
			rc = -EPROTO;
		rio_reply_free(&rep);
	}
	if (rc)
		snprintf(msg, len, "volume %s: the coordinator could not be asked: %s", c->v->uuid,
			 strerror(rc == -ERESTART ? EHOSTUNREACH : -rc));
	else {
		rc = -(int)p->maintenance.error;
		snprintf(msg, len, "%s", p->maintenance.message);
	}
	free(p);
	return rc;
}

int outcome_serve(struct cluster *c, const struct rio_request *req, struct rio_response *resp,
		  int (*run)(struct cluster *c, char *msg, size_t len))
{
	const struct proto_op *o = proto_op(req->op);
	union proto_reply *p = calloc(1, sizeof(*p));
	struct proto_req q;
	if (!p)
		resp->status = ENOMEM;
	else if (proto_decode_request(o, req->payload, req->len, &q) != 0)
		resp->status = EPROTO;
	else {
		p->maintenance.error = (uint32_t)-run(c, p->maintenance.message, sizeof(p->maintenance.message));
		o->put_reply(&resp->body, p);
	}
	free(p);
	return 0;
}
