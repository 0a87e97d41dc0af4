/* cpg backend, corosync: opening the quorum and CPG handles and joining the
 * group, reading cmap, the CPG and quorum callbacks (every delivery becomes a
 * raw event), and the dispatch thread with its timers and reconnects.
 * docs/locking.md §9, "Handles and threads". */
#include "dlm-glue/cpg_internal.h"

#include <corosync/cmap.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

void cpgb_wake(struct cpg_ls *ls)
{
	uint64_t one = 1;
	ssize_t n = write(ls->wake_fd, &one, sizeof(one));
	(void)n;
}

int cpgb_group_name(const char *lockspace, struct cpg_name *out)
{
	int n = snprintf(out->value, CPG_MAX_NAME_LENGTH, "csvfs:%s", lockspace);
	if (n >= CPG_MAX_NAME_LENGTH)
		n = CPG_MAX_NAME_LENGTH - 1;
	out->length = (uint32_t)n;
	return n;
}

static int corosync_quorate(int *quorate, char *err, size_t errlen)
{
	quorum_handle_t qh;
	uint32_t qtype = 0;
	int q = 0;
	if (quorum_initialize(&qh, NULL, &qtype) != CS_OK) {
		snprintf(err, errlen, "cannot reach this node's corosync (quorum service): is it running?");
		return -ENOTCONN;
	}
	cs_error_t rc = quorum_getquorate(qh, &q);
	quorum_finalize(qh);
	if (rc != CS_OK) {
		snprintf(err, errlen, "corosync did not say whether this node is quorate (error %d)", rc);
		return -EIO;
	}
	*quorate = q;
	return 0;
}

int dg_lockspace_users(const char *lockspace, uint32_t *nodeids, size_t max, int *quorate, char *err,
		       size_t errlen)
{
	struct cpg_name group;
	cpgb_group_name(lockspace, &group);
	int rc = corosync_quorate(quorate, err, errlen);
	if (rc)
		return rc;
	cpg_handle_t h;
	cpg_iteration_handle_t it;
	if (cpg_initialize(&h, NULL) != CS_OK) {
		snprintf(err, errlen, "cannot reach this node's corosync (CPG service)");
		return -ENOTCONN;
	}
	if (cpg_iteration_initialize(h, CPG_ITERATION_ONE_GROUP, &group, &it) != CS_OK) {
		cpg_finalize(h);
		return 0;   /* no such group: nobody in it */
	}
	struct cpg_iteration_description_t d;
	size_t n = 0;
	int total = 0;
	while (cpg_iteration_next(it, &d) == CS_OK) {
		if (n < max)
			nodeids[n++] = d.nodeid;
		total++;
	}
	cpg_iteration_finalize(it);
	cpg_finalize(h);
	return total;
}

const char *cpgb_node_name(const struct cpg_ls *ls, uint32_t nodeid)
{
	for (size_t i = 0; i < ls->nnodes; i++)
		if (ls->nodes[i].nodeid == nodeid)
			return ls->nodes[i].name;
	return "?";
}

static void read_cmap(struct cpg_ls *ls)
{
	cmap_handle_t h;
	if (cmap_initialize(&h) != CS_OK) {
		LOG(ls, 4, "cmap unavailable: node names and addresses unknown");
		return;
	}
	ls->nnodes = 0;
	for (unsigned i = 0; i < 1024 && ls->nnodes < MAX_NODES; i++) {
		char key[128];
		uint32_t nodeid = 0;
		snprintf(key, sizeof(key), "nodelist.node.%u.nodeid", i);
		if (cmap_get_uint32(h, key, &nodeid) != CS_OK)
			break;
		struct node_info *n = &ls->nodes[ls->nnodes++];
		memset(n, 0, sizeof(*n));
		n->nodeid = nodeid;
		char *s = NULL;
		snprintf(key, sizeof(key), "nodelist.node.%u.name", i);
		if (cmap_get_string(h, key, &s) == CS_OK && s) {
			snprintf(n->name, sizeof(n->name), "%s", s);
			free(s);
			s = NULL;
		}
		snprintf(key, sizeof(key), "nodelist.node.%u.ring0_addr", i);
		if (cmap_get_string(h, key, &s) == CS_OK && s) {
			snprintf(n->addr, sizeof(n->addr), "%s", s);
			free(s);
		}
		if (!n->name[0])
			snprintf(n->name, sizeof(n->name), "%s", n->addr[0] ? n->addr : "?");
	}
	uint32_t v;
	if (cmap_get_uint32(h, "runtime.config.totem.token", &v) == CS_OK)
		ls->token_ms = v;
	if (cmap_get_uint32(h, "runtime.config.totem.consensus", &v) == CS_OK)
		ls->consensus_ms = v;
	cmap_finalize(h);
}

static struct cpg_ls *ctx_of(cpg_handle_t h)
{
	void *ctx = NULL;
	if (cpg_context_get(h, &ctx) != CS_OK)
		return NULL;
	return ctx;
}

static void on_event(struct cpg_ls *ls, const struct ev *e)
{
	pthread_mutex_lock(&ls->mu);
	if (ls->state == ST_JOINING)
		cpgb_process_joining(ls, e);
	else if (ls->state == ST_SYNCED)
		cpgb_process_synced(ls, e);
	cpgb_post_event(ls);
	cpgb_update_app_quorum(ls);
	pthread_mutex_unlock(&ls->mu);
}

static void cpg_deliver_cb(cpg_handle_t h, const struct cpg_name *group, uint32_t nodeid, uint32_t pid,
			   void *msg, size_t len)
{
	struct cpg_ls *ls = ctx_of(h);
	if (!ls)
		return;
	struct ev e = { .kind = EV_MSG, .nodeid = nodeid, .pid = pid, .data = msg, .len = len };
	on_event(ls, &e);
}

static void cpg_confchg_cb(cpg_handle_t h, const struct cpg_name *group,
			   const struct cpg_address *member, size_t nmember,
			   const struct cpg_address *left, size_t nleft,
			   const struct cpg_address *joined, size_t njoined)
{
	struct cpg_ls *ls = ctx_of(h);
	if (!ls)
		return;
	size_t n = nmember + nleft + njoined;
	struct cpg_address *all = malloc((n ? n : 1) * sizeof(*all));
	if (!all) {
		pthread_mutex_lock(&ls->mu);
		cpgb_lost_member_state(ls, "out of memory in a configuration change");
		pthread_mutex_unlock(&ls->mu);
		return;
	}
	memcpy(all, member, nmember * sizeof(*all));
	memcpy(all + nmember, left, nleft * sizeof(*all));
	memcpy(all + nmember + nleft, joined, njoined * sizeof(*all));
	struct ev e = { .kind = EV_CONFCHG, .nmember = nmember, .nleft = nleft, .njoined = njoined, .addrs = all };
	on_event(ls, &e);
	free(all);
}

/* Under mu: votequorum's verdict for a ring, as this node sees it. */
static void note_quorum(struct cpg_ls *ls, bool quorate, uint64_t ring_seq, uint32_t nmember, const uint32_t *members)
{
	if (!ls->q_have || ls->q_quorate != (quorate ? 1u : 0u))
		LOG(ls, quorate ? 5 : 4, "quorum: votequorum: this node is %s (ring %" PRIu64 ", %u node(s))",
		    quorate ? "quorate" : "NOT quorate", ring_seq, nmember);
	ls->q_ring = ring_seq;
	ls->q_quorate = quorate ? 1 : 0;
	ls->q_have = true;
	ls->q_nmembers = nmember < MAX_NODES ? nmember : MAX_NODES;
	memcpy(ls->q_members, members, ls->q_nmembers * sizeof(*members));
}

static void cpg_totem_cb(cpg_handle_t h, struct cpg_ring_id ring, uint32_t nmember, const uint32_t *members)
{
	struct cpg_ls *ls = ctx_of(h);
	if (!ls)
		return;
	pthread_mutex_lock(&ls->mu);
	/* Local quorum view for this ring, in case votequorum sends nothing
	 * (it notifies on changes of the verdict). */
	if (ring.seq > ls->q_ring && ls->q_open) {
		int q = 0;
		if (quorum_getquorate(ls->qh, &q) == CS_OK)
			note_quorum(ls, q != 0, ring.seq, nmember, members);
	}
	pthread_mutex_unlock(&ls->mu);
	/* The ring's representative and size ride in nodeid/pid (log only). */
	struct ev e = { .kind = EV_TOTEM, .ring_seq = ring.seq, .nodeid = ring.nodeid, .pid = nmember };
	on_event(ls, &e);
}

static void quorum_notify_cb(quorum_handle_t h, uint32_t quorate, struct quorum_ring_id ring,
			     uint32_t nmember, const uint32_t *members)
{
	const void *ctx = NULL;
	if (quorum_context_get(h, &ctx) != CS_OK || !ctx)
		return;
	struct cpg_ls *ls = (struct cpg_ls *)ctx;
	pthread_mutex_lock(&ls->mu);
	if (ring.seq >= ls->q_ring)
		note_quorum(ls, quorate != 0, ring.seq, nmember, members);
	cpgb_post_event(ls);
	cpgb_update_app_quorum(ls);
	pthread_mutex_unlock(&ls->mu);
}

void cpgb_close_corosync(struct cpg_ls *ls)
{
	if (ls->cpg_open) {
		cpg_finalize(ls->cpg);
		ls->cpg_open = false;
		ls->cpg_fd = -1;
	}
	if (ls->q_open) {
		quorum_finalize(ls->qh);
		ls->q_open = false;
		ls->q_fd = -1;
	}
}

static cpg_model_v1_data_t cpg_model = {
	.model = CPG_MODEL_V1,
	.cpg_deliver_fn = cpg_deliver_cb,
	.cpg_confchg_fn = cpg_confchg_cb,
	.cpg_totem_confchg_fn = cpg_totem_cb,
	.flags = 0,
};

static quorum_model_v1_data_t quorum_model = {
	.model = QUORUM_MODEL_V1,
	.quorum_notify_fn = quorum_notify_cb,
	.nodelist_notify_fn = NULL,
};

/* Retries CS_ERR_TRY_AGAIN with a bounded backoff (TRY_AGAIN_MAX tries,
 * 1..BACKOFF_MAX_MS ms apart). Called without mu. */
#define RETRY(var, call) do { \
	unsigned back_ = 1; int tries_ = 0; \
	while (((var) = (call)) == CS_ERR_TRY_AGAIN && ++tries_ < TRY_AGAIN_MAX) { \
		sleep_ms(back_); back_ = back_ * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : back_ * 2; } \
	} while (0)

/* Opens the quorum and CPG handles and joins the group. Called without mu
 * by the dispatch thread or dg_connect (before the thread runs). */
int cpgb_open_corosync(struct cpg_ls *ls, char *err, size_t errlen)
{
	quorum_handle_t qh;
	uint32_t qtype = 0;
	cs_error_t e; RETRY(e, quorum_model_initialize(&qh, QUORUM_MODEL_V1, (quorum_model_data_t *)&quorum_model,
						      &qtype, ls));
	if (e != CS_OK) {
		snprintf(err, errlen, "cannot connect to corosync's quorum service (error %d): is corosync running "
			 "with a quorum provider?", e);
		return -ENOTCONN;
	}
	int qfd = -1;
	quorum_fd_get(qh, &qfd);
	RETRY(e, quorum_trackstart(qh, CS_TRACK_CHANGES | CS_TRACK_CURRENT));
	if (e != CS_OK) {
		quorum_finalize(qh);
		snprintf(err, errlen, "quorum_trackstart failed (error %d)", e);
		return -ENOTCONN;
	}
	/* The current verdict arrives at once: have it before we join. */
	for (int i = 0; i < 20; i++) {
		struct pollfd p = { .fd = qfd, .events = POLLIN };
		if (poll(&p, 1, 100) > 0) {
			quorum_dispatch(qh, CS_DISPATCH_ALL);
			pthread_mutex_lock(&ls->mu);
			bool have = ls->q_have;
			pthread_mutex_unlock(&ls->mu);
			if (have)
				break;
		}
	}
	cpg_handle_t h;
	RETRY(e, cpg_model_initialize(&h, CPG_MODEL_V1, (cpg_model_data_t *)&cpg_model, ls));
	if (e != CS_OK) {
		quorum_finalize(qh);
		snprintf(err, errlen, "cannot connect to corosync's CPG service (error %d)", e);
		return -ENOTCONN;
	}
	unsigned int nodeid = 0;
	RETRY(e, cpg_local_get(h, &nodeid));
	int fd = -1;
	if (e == CS_OK)
		e = cpg_fd_get(h, &fd);
	if (e != CS_OK) {
		cpg_finalize(h);
		quorum_finalize(qh);
		snprintf(err, errlen, "cpg_local_get failed (error %d)", e);
		return -ENOTCONN;
	}
	read_cmap(ls);
	pthread_mutex_lock(&ls->mu);
	ls->cpg = h;
	ls->cpg_open = true;
	ls->cpg_fd = fd;
	ls->qh = qh;
	ls->q_open = true;
	ls->q_fd = qfd;
	ls->self_nodeid = nodeid;
	cpgb_reset_lineage(ls);
	cpgb_set_state(ls, ST_JOINING);
	pthread_mutex_unlock(&ls->mu);
	RETRY(e, cpg_join(h, &ls->group));
	if (e != CS_OK) {
		pthread_mutex_lock(&ls->mu);
		cpgb_close_corosync(ls);
		cpgb_set_state(ls, ST_DISCONNECTED);
		pthread_mutex_unlock(&ls->mu);
		snprintf(err, errlen, "cpg_join of group %s failed (error %d)", ls->group.value, e);
		return e == CS_ERR_EXIST ? -EEXIST : -ENOTCONN;
	}
	pthread_mutex_lock(&ls->mu);
	ls->join_attempts++;
	LOG(ls, 6, "joined CPG group %s as node %u pid %u", ls->group.value, ls->self_nodeid, ls->self_pid);
	pthread_mutex_unlock(&ls->mu);
	return 0;
}

static int64_t next_timer(struct cpg_ls *ls)
{
	int64_t now = dg_now_ms();
	int64_t t = now + 1000;
	if (ls->out_head)
		t = ls->out_retry_at && ls->out_retry_at > now ? ls->out_retry_at : now;
	if ((ls->state == ST_STALE || ls->state == ST_DISCONNECTED) && ls->reconnect_at < t)
		t = ls->reconnect_at;
	if (ls->state == ST_SYNCED) {
		for (size_t i = 0; i < ls->nfences; i++)
			if (ls->fences[i].deadline < t)
				t = ls->fences[i].deadline;
		if (ls->grace_until > now && ls->grace_until < t)
			t = ls->grace_until;
	}
	return t;
}

static void connection_lost(struct cpg_ls *ls, const char *why)
{
	LOG(ls, 3, "membership: lost the connection to corosync (%s): every lock is lost; reconnecting", why);
	cpgb_orphan_all(ls, "corosync connection lost");
	cpgb_close_corosync(ls);
	cpgb_reset_lineage(ls);
	ls->reconnect_at = dg_now_ms() + RECONNECT_EVERY_MS;
	ls->reconnect_attempts = 0;
	cpgb_set_state(ls, ST_DISCONNECTED);
	dg_cb_event(&ls->cbq, DG_CB_MEMBERSHIP, 0, 0);
}

static void try_rejoin(struct cpg_ls *ls)
{
	/* under mu; drops it around the corosync calls */
	bool disconnected = ls->state == ST_DISCONNECTED;
	if (disconnected && ++ls->reconnect_attempts > RECONNECT_MAX) {
		LOG(ls, 3, "giving up reconnecting to corosync");
		ls->fail_status = -ENOTCONN;
		cpgb_set_state(ls, ST_FAILED);
		return;
	}
	if (!disconnected && ++ls->join_attempts > JOIN_ATTEMPTS_MAX) {
		LOG(ls, 3, "giving up rejoining the lockspace after %d attempts", JOIN_ATTEMPTS_MAX);
		ls->fail_status = -ETIMEDOUT;
		cpgb_set_state(ls, ST_FAILED);
		return;
	}
	cpgb_close_corosync(ls);
	cpgb_reset_lineage(ls);
	cpgb_set_state(ls, ST_CONNECTING);
	pthread_mutex_unlock(&ls->mu);
	char err[256];
	int rc = cpgb_open_corosync(ls, err, sizeof(err));
	pthread_mutex_lock(&ls->mu);
	if (rc < 0) {
		if (ls->reconnect_attempts <= 1 || ls->reconnect_attempts % 30 == 0)
			LOG(ls, 4, "reconnect: %s", err);
		ls->reconnect_at = dg_now_ms() + RECONNECT_EVERY_MS;
		cpgb_set_state(ls, ST_DISCONNECTED);
	} else {
		LOG(ls, 5, "membership: rejoining lockspace %s fresh", ls->lockspace_name);
	}
}

/* Under mu: nobody sent a snapshot (e.g. every other process in the group is
 * stale or joining too): step out for a random while so that one of us ends
 * up alone and founds. */
static void join_timed_out(struct cpg_ls *ls, int64_t now)
{
	uint32_t jitter = 0;
	if (getrandom(&jitter, sizeof(jitter), 0) != (ssize_t)sizeof(jitter))
		jitter = (uint32_t)now;
	ls->reconnect_at = now + jitter % 3000;
	LOG(ls, 4, "membership: no snapshot after %d ms; rejoining in %" PRId64 " ms", JOIN_TIMEOUT_MS,
	    ls->reconnect_at - now);
	cpgb_close_corosync(ls);
	cpgb_set_state(ls, ST_STALE);
}

/* Under mu: the work due at each turn of the loop. */
static void periodic(struct cpg_ls *ls)
{
	int64_t now = dg_now_ms();
	if ((ls->state == ST_STALE || ls->state == ST_DISCONNECTED) && now >= ls->reconnect_at)
		try_rejoin(ls);
	if (ls->state == ST_JOINING && now - ls->state_since > JOIN_TIMEOUT_MS)
		join_timed_out(ls, now);
	cpgb_post_event(ls);
	cpgb_update_app_quorum(ls);
	cpgb_out_flush(ls);
}

/* What the loop polls, taken under mu. */
struct poll_set {
	struct pollfd fds[3];
	int nfds, cpg_idx, q_idx;
	cpg_handle_t h;
	quorum_handle_t qh;
};

static void poll_set_of(struct cpg_ls *ls, struct poll_set *p)
{
	p->nfds = 0;
	p->fds[p->nfds++] = (struct pollfd){ .fd = ls->wake_fd, .events = POLLIN };
	p->cpg_idx = p->q_idx = -1;
	if (ls->cpg_open) {
		p->cpg_idx = p->nfds;
		p->fds[p->nfds++] = (struct pollfd){ .fd = ls->cpg_fd, .events = POLLIN };
	}
	if (ls->q_open) {
		p->q_idx = p->nfds;
		p->fds[p->nfds++] = (struct pollfd){ .fd = ls->q_fd, .events = POLLIN };
	}
	p->h = ls->cpg;
	p->qh = ls->qh;
}

/* Without mu: a dispatch error loses the connection, unless the handle was
 * replaced meanwhile. */
static void dispatch_failed(struct cpg_ls *ls, bool cpg, cs_error_t e, const struct poll_set *p)
{
	pthread_mutex_lock(&ls->mu);
	bool current = cpg ? ls->cpg_open && ls->cpg == p->h : ls->q_open && ls->qh == p->qh;
	if (current) {
		char why[64];
		snprintf(why, sizeof(why), "%s_dispatch error %d", cpg ? "cpg" : "quorum", e);
		connection_lost(ls, why);
	}
	pthread_mutex_unlock(&ls->mu);
}

/* Without mu: waits (at most until the next timer, and 1 s) and dispatches
 * what came in; corosync's callbacks take mu themselves. */
static void poll_and_dispatch(struct cpg_ls *ls, const struct poll_set *p, int64_t t)
{
	struct pollfd fds[3];
	memcpy(fds, p->fds, sizeof(fds));
	int timeout = (int)(t - dg_now_ms());
	if (timeout < 0)
		timeout = 0;
	if (timeout > 1000)
		timeout = 1000;
	int n = poll(fds, (nfds_t)p->nfds, timeout);
	if (n < 0 && errno != EINTR)
		sleep_ms(10);
	if (n > 0 && (fds[0].revents & POLLIN)) {
		uint64_t v;
		ssize_t r = read(ls->wake_fd, &v, sizeof(v));
		(void)r;
	}
	if (n > 0 && p->cpg_idx >= 0 && fds[p->cpg_idx].revents) {
		cs_error_t e = cpg_dispatch(p->h, CS_DISPATCH_ALL);
		if (e != CS_OK && e != CS_ERR_TRY_AGAIN)
			dispatch_failed(ls, true, e, p);
	}
	if (n > 0 && p->q_idx >= 0 && fds[p->q_idx].revents) {
		cs_error_t e = quorum_dispatch(p->qh, CS_DISPATCH_ALL);
		if (e != CS_OK && e != CS_ERR_TRY_AGAIN)
			dispatch_failed(ls, false, e, p);
	}
}

void *cpgb_dispatch_main(void *arg)
{
	struct cpg_ls *ls = arg;
	for (;;) {
		pthread_mutex_lock(&ls->mu);
		if (ls->stop) {
			pthread_mutex_unlock(&ls->mu);
			break;
		}
		periodic(ls);
		int64_t t = next_timer(ls);
		struct poll_set p;
		poll_set_of(ls, &p);
		pthread_mutex_unlock(&ls->mu);

		dg_cb_run(&ls->cbq, 1000);
		poll_and_dispatch(ls, &p, t);
		dg_cb_run(&ls->cbq, 1000);
	}
	return NULL;
}
