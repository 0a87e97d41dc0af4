/* Every node's I/O state, visible from every node (design.md §7,
 * docs/cluster.md "Redirected I/O"): a participant reports its own state to
 * the coordinator (OP_IO_STATE) when it changes and every IO_REPORT_EVERY_MS
 * anyway, and the coordinator answers with every node's it knows, its own
 * among them; csvctl status on any node shows them with their age. A new
 * coordinator knows each node's state after that node's next report (at
 * most IO_REPORT_EVERY_MS, or at once on a change).
 *
 * The reporter is a thread of its own: a report is a round trip to the
 * coordinator, which neither the cluster thread (membership, roles) nor the
 * prober (path probes) should wait for. */
#include "fs/cluster_internal.h"
#include "fs/iostate.h"
#include "fs/log.h"
#include "fs/proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IO_REPORT_EVERY_MS 2000   /* a report, changed or not */
#define IO_REPORT_POLL_MS 100     /* how soon a change is reported */
#define IO_REPORT_TIMEOUT_MS 2000 /* a report the coordinator does not answer */

/* Under io_mu: the entry for node (a new one if there is room), or NULL. */
static struct cl_io_node *io_slot(struct cluster *c, const char *node, int add)
{
	for (unsigned i = 0; i < c->io_n; i++)
		if (strcmp(c->io_nodes[i].n.node, node) == 0)
			return &c->io_nodes[i];
	if (!add || c->io_n >= MAX_NODES)
		return NULL;
	struct cl_io_node *e = &c->io_nodes[c->io_n++];
	memset(e, 0, sizeof(*e));
	snprintf(e->n.node, sizeof(e->n.node), "%s", node);
	return e;
}

/* Under io_mu: node's state is r, as of age_ms ago. */
static void io_remember(struct cluster *c, const char *node, const struct io_report *r,
			uint64_t age_ms)
{
	struct cl_io_node *e = io_slot(c, node, 1);
	if (!e)
		return;
	e->n.r = *r;
	uint64_t now = cl_now_ms();
	e->heard_ms = now > age_ms ? now - age_ms : 0;
}

/* ---- the coordinator ------------------------------------------------------------ */

int io_state_serve(struct cluster *c, const struct rio_peer *peer, const struct rio_request *req,
		   struct rio_response *resp)
{
	if (atomic_load(&c->role) != CL_COORDINATOR) {
		resp->status = EREMCHG;
		return 0;
	}
	struct proto_req *q = calloc(1, sizeof(*q));
	union proto_reply p = { .io_states = {
		.nodes = calloc(PROTO_IO_NODES_MAX, sizeof(struct proto_io_node)) } };
	if (!q || !p.io_states.nodes) {
		resp->status = ENOMEM;
	} else if (proto_decode_request(proto_op(OP_IO_STATE), req->payload, req->len, q) != 0) {
		resp->status = EPROTO;
	} else {
		p.io_states.refuses_writes = meta_write_check(c->v) == -EROFS;
		struct proto_io_node *self = &p.io_states.nodes[p.io_states.n++];
		snprintf(self->node, sizeof(self->node), "%s", c->o.node);
		iostate_report(&self->r);
		uint64_t now = cl_now_ms();
		pthread_mutex_lock(&c->io_mu);
		io_remember(c, peer->node, &q->io_state.r, 0);
		struct cl_io_node *sender = io_slot(c, peer->node, 0);
		if (sender && sender->ask) {   /* handed over once: the sender applies it */
			p.io_states.ask = sender->ask;
			p.io_states.ask_seconds = sender->ask_seconds;
			sender->ask = PROTO_ASK_NONE;
			sender->ask_seconds = 0;
		}
		for (unsigned i = 0; i < c->io_n && p.io_states.n < PROTO_IO_NODES_MAX; i++) {
			if (strcmp(c->io_nodes[i].n.node, c->o.node) == 0)
				continue;
			struct proto_io_node *e = &p.io_states.nodes[p.io_states.n++];
			*e = c->io_nodes[i].n;
			e->age_ms = now - c->io_nodes[i].heard_ms;
		}
		pthread_mutex_unlock(&c->io_mu);
		proto_op(OP_IO_STATE)->put_reply(&resp->body, &p);
	}
	free(p.io_states.nodes);
	free(q);
	return 0;
}

/* ---- the participant's reporter --------------------------------------------------- */

/* The coordinator refuses changes after corruption (errors=remount-ro): so
 * does this node's data path (its layouts still map blocks a damaged
 * structure may claim), until a coordinator answers otherwise. */
static void coordinator_refuses_writes(struct cluster *c, int refuses)
{
	if (atomic_exchange(&c->v->coord_refuses_writes, refuses) != refuses)
		csvfs_log(refuses ? LOG_ERR_L : LOG_WARN_L, "volume %s: %s", c->v->uuid,
			  refuses ? "the coordinator found corruption and refuses changes (errors=remount-ro): "
				    "this node's writes are refused (EROFS) too"
				  : "the coordinator takes changes again: this node's writes are allowed");
}

/* One report; the answer replaces what this node knows of the others. */
static int io_report_once(struct cluster *c)
{
	struct proto_req q = { 0 };
	iostate_report(&q.io_state.r);
	struct rio_writer w;
	struct rio_reply rep;
	rio_writer_init(&w, 0);
	proto_op(OP_IO_STATE)->put_req(&w, &q);
	int rc = cluster_call_timeout(c, OP_IO_STATE, &w, &rep, IO_REPORT_TIMEOUT_MS);
	rio_writer_free(&w);
	if (rc)
		return rc;
	union proto_reply p;
	if (proto_decode_reply(proto_op(OP_IO_STATE), rep.payload, rep.len, &p) != 0) {
		rio_reply_free(&rep);
		return -EPROTO;
	}
	rio_reply_free(&rep);
	pthread_mutex_lock(&c->io_mu);
	for (uint32_t i = 0; i < p.io_states.n; i++)
		if (strcmp(p.io_states.nodes[i].node, c->o.node) != 0)
			io_remember(c, p.io_states.nodes[i].node, &p.io_states.nodes[i].r,
				    p.io_states.nodes[i].age_ms);
	pthread_mutex_unlock(&c->io_mu);
	coordinator_refuses_writes(c, p.io_states.refuses_writes);
	if (p.io_states.ask != PROTO_ASK_NONE) {
		char err[256] = "";
		int on = p.io_states.ask == PROTO_ASK_ON;
		csvfs_log(LOG_INFO_L, "redirect %s%s asked of this node by another, through the coordinator",
			  on ? "on" : "off", on ? " (a user lease)" : "");
		if (iostate_user_request(on, p.io_states.ask_seconds, err, sizeof(err)) != 0)
			csvfs_log(LOG_WARN_L, "redirect asked through the coordinator refused: %s", err);
	}
	proto_free_reply(proto_op(OP_IO_STATE), &p);
	return 0;
}

static void *io_reporter_main(void *arg)
{
	struct cluster *c = arg;
	unsigned sent_gen = iostate_generation() - 1;   /* report at once */
	uint32_t sent_epoch = 0;
	uint64_t sent_ms = 0;
	pthread_mutex_lock(&c->io_mu);
	while (!c->io_stop) {
		pthread_mutex_unlock(&c->io_mu);
		pthread_mutex_lock(&c->mu);
		uint32_t epoch = c->epoch;
		int participant = atomic_load(&c->role) == CL_PARTICIPANT && c->settled;
		pthread_mutex_unlock(&c->mu);
		unsigned gen = iostate_generation();
		uint64_t now = cl_now_ms();
		role_path_gone(c);   /* a coordinator whose path failed gives the role up */
		if (participant && (gen != sent_gen || epoch != sent_epoch ||
				    now - sent_ms >= IO_REPORT_EVERY_MS)) {
			if (io_report_once(c) == 0) {
				sent_gen = gen;
				sent_epoch = epoch;
			}
			sent_ms = now;   /* a failed report is tried again on the clock */
		}
		pthread_mutex_lock(&c->io_mu);
		if (!c->io_stop) {
			struct timespec until = cl_deadline_in(IO_REPORT_POLL_MS);
			pthread_cond_timedwait(&c->io_cv, &c->io_mu, &until);
		}
	}
	pthread_mutex_unlock(&c->io_mu);
	return NULL;
}

int io_reporter_start(struct cluster *c)
{
	return -pthread_create(&c->io_thread, NULL, io_reporter_main, c);
}

void io_reporter_stop(struct cluster *c)
{
	pthread_mutex_lock(&c->io_mu);
	c->io_stop = 1;
	pthread_cond_broadcast(&c->io_cv);
	pthread_mutex_unlock(&c->io_mu);
	pthread_join(c->io_thread, NULL);
}

/* ---- csvctl redirect for other nodes -------------------------------------------------- */

/* Coordinator: the redirect for node ("": every live node but except, the
 * requester, which applies its own); itself at once, others at their next
 * report. */
static int redirect_apply(struct cluster *c, const char *node, const char *except, int on,
			  unsigned seconds, char *err, size_t errlen)
{
	struct dg_member m[MAX_NODES];
	int q = 0, n = dg_members(c->ls, m, MAX_NODES, &q), found = 0, rc = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		if (m[i].state != DG_NODE_UP || (node[0] ? strcmp(m[i].name, node) != 0
							 : strcmp(m[i].name, except) == 0))
			continue;
		found = 1;
		if (m[i].nodeid == c->self) {
			rc = iostate_user_request(on, seconds, err, errlen);
			continue;
		}
		pthread_mutex_lock(&c->io_mu);
		struct cl_io_node *e = io_slot(c, m[i].name, 1);
		if (e) {
			e->ask = on ? PROTO_ASK_ON : PROTO_ASK_OFF;
			e->ask_seconds = on ? seconds : 0;
		}
		pthread_mutex_unlock(&c->io_mu);
		csvfs_log(LOG_INFO_L, "redirect %s for node %s: handed over at its next report",
			  on ? "on" : "off", m[i].name);
	}
	if (rc == 0 && !found && node[0]) {
		snprintf(err, errlen, "no live node '%s' has this volume mounted", node);
		rc = -ENOENT;
	}
	return rc;
}

int redirect_serve(struct cluster *c, const struct rio_peer *peer, const struct rio_request *req,
		   struct rio_response *resp)
{
	if (atomic_load(&c->role) != CL_COORDINATOR) {
		resp->status = EREMCHG;
		return 0;
	}
	struct proto_req *q = calloc(1, sizeof(*q));
	char err[256] = "";
	if (!q)
		resp->status = ENOMEM;
	else if (proto_decode_request(proto_op(OP_REDIRECT), req->payload, req->len, q) != 0)
		resp->status = EPROTO;
	else
		resp->status = (uint16_t)-redirect_apply(c, q->redirect.node, peer->node, q->redirect.on,
							 q->redirect.seconds, err, sizeof(err));
	if (err[0])
		csvfs_log(LOG_WARN_L, "redirect asked by %s refused: %s", peer->node, err);
	free(q);
	return 0;
}

int cluster_redirect(struct cluster *c, const char *node, int on, unsigned seconds, char *err,
		     size_t errlen)
{
	if (atomic_load(&c->role) == CL_COORDINATOR)
		return redirect_apply(c, node, c->o.node, on, seconds, err, errlen);
	struct proto_req q = { .redirect = { node, (uint8_t)(on != 0), on ? seconds : 0 } };
	struct rio_writer w;
	struct rio_reply rep;
	rio_writer_init(&w, 0);
	proto_op(OP_REDIRECT)->put_req(&w, &q);
	int rc = cluster_call_settled(c, OP_REDIRECT, &w, &rep);
	rio_writer_free(&w);
	if (rc == 0)
		rio_reply_free(&rep);
	else if (rc == -ENOENT)
		snprintf(err, errlen, "no live node '%s' has this volume mounted", node);
	else
		snprintf(err, errlen, "the coordinator refused or could not be reached: %s",
			 strerror(rc == -ERESTART ? EHOSTUNREACH : -rc));
	return rc == -ERESTART ? -EHOSTUNREACH : rc;
}

/* ---- csvctl status ------------------------------------------------------------------ */

void io_node_json(struct cluster *c, const char *node, const char *override, char *out, size_t len)
{
	pthread_mutex_lock(&c->io_mu);
	struct cl_io_node *e = io_slot(c, node, 0);
	struct io_report r = e ? e->n.r : (struct io_report){ 0 };
	uint64_t age = e ? cl_now_ms() - e->heard_ms : 0;
	pthread_mutex_unlock(&c->io_mu);
	if (!e) {
		snprintf(out, len, "\"io_state\":\"%s\",\"io_reasons\":[],\"io_reported_ms_ago\":null",
			 override ? override : "unknown");
		return;
	}
	iostate_report_json(&r, out, len, override);
	size_t o = strlen(out);
	if (o < len)
		snprintf(out + o, len - o, ",\"io_reported_ms_ago\":%llu", (unsigned long long)age);
}
