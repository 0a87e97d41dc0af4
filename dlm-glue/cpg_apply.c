/* cpg backend, a synced member: applies every raw event (confchg, ring
 * change, message) to the replicated state machine and acts on the effects:
 * membership and recovery callbacks, quorum messages, fencing. Joiners replay
 * their buffered events through here too. docs/locking.md §9, "Raw events
 * and lineages". */
#include "dlm-glue/cpg_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fx_sink(void *ctx, const struct ls_effect *e)
{
	struct cpg_ls *ls = ctx;
	if (ls->nfx == ls->capfx) {
		size_t cap = ls->capfx ? ls->capfx * 2 : 64;
		struct ls_effect *n = realloc(ls->fx, cap * sizeof(*n));
		if (!n) {
			ls->fx_nomem = true;
			return;
		}
		ls->fx = n;
		ls->capfx = cap;
	}
	ls->fx[ls->nfx++] = *e;
}

const struct ls_sink *cpgb_sink_of(struct cpg_ls *ls)
{
	ls->sink.fn = fx_sink;
	ls->sink.ctx = ls;
	return &ls->sink;
}

struct departed_count { size_t n; };

static void count_departed(void *ctx, const struct ls_member_info *m)
{
	struct departed_count *c = ctx;
	if (m->departed)
		c->n++;
}

static size_t departed_pending(struct cpg_ls *ls)
{
	struct departed_count c = { 0 };
	if (ls->lst)
		ls_foreach_member(ls->lst, count_departed, &c);
	return c.n;
}

static void on_joined(struct cpg_ls *ls, const struct ls_effect *e)
{
	cpgb_fenced_nodes_set(ls, e->nodeid, false);
	LOG(ls, 5, "membership: node %u (%s) joined the lockspace, incarnation %u", e->nodeid,
	    cpgb_node_name(ls, e->nodeid), e->incarnation);
	dg_cb_event(&ls->cbq, DG_CB_MEMBERSHIP, 0, 0);
}

static void on_departed(struct cpg_ls *ls, const struct ls_effect *e)
{
	dg_cb_event(&ls->cbq, DG_CB_NODE_DOWN, e->nodeid, 0);
	if (!(e->flags & LS_EF_NEEDS_FENCE)) {
		LOG(ls, 5, "membership: node %u (%s) left the lockspace holding no locks",
		    e->nodeid, cpgb_node_name(ls, e->nodeid));
		dg_cb_event(&ls->cbq, DG_CB_NODE_FENCED, e->nodeid, 0);
		if (!departed_pending(ls))
			dg_cb_event(&ls->cbq, DG_CB_RECOVERY_DONE, 0, 0);
	} else if (ls->clean_leave_ctx) {
		LOG(ls, 5, "membership: node %u (%s) left the lockspace cleanly (its process is gone): "
		    "releasing its locks", e->nodeid, cpgb_node_name(ls, e->nodeid));
		/* Every member sends it (the first one delivered
		 * releases, the others are ignored), so it does not
		 * depend on any one of us staying. */
		if (!ls->replaying)
			cpgb_send_fenced(ls, e->nodeid, e->incarnation);
	} else {
		LOG(ls, 4, "membership: node %u (%s) is down holding locks: they stay blocked until it is "
		    "fenced (%s%u ms self-fence deadline while quorate)", e->nodeid, cpgb_node_name(ls, e->nodeid),
		    ls->fence_command ? "fence command, or the " : "the ", ls->deadline_ms);
		cpgb_arm_fence(ls, e->nodeid, e->incarnation);
	}
	dg_cb_event(&ls->cbq, DG_CB_MEMBERSHIP, 0, 0);
}

static void on_fenced(struct cpg_ls *ls, const struct ls_effect *e)
{
	cpgb_fence_remove_upto(ls, e->nodeid, e->incarnation);
	cpgb_fenced_nodes_set(ls, e->nodeid, ls_live_incarnation(ls->lst, e->nodeid) == 0);
	LOG(ls, 5, "fence: node %u (%s) incarnation %u fenced, its locks are released", e->nodeid,
	    cpgb_node_name(ls, e->nodeid), e->incarnation);
	dg_cb_event(&ls->cbq, DG_CB_NODE_FENCED, e->nodeid, 0);
	dg_cb_event(&ls->cbq, DG_CB_MEMBERSHIP, 0, 0);
	if (!departed_pending(ls)) {
		LOG(ls, 5, "recovery done: no departed member holds locks");
		dg_cb_event(&ls->cbq, DG_CB_RECOVERY_DONE, 0, 0);
	}
}

static void on_quorum(struct cpg_ls *ls, const struct ls_effect *e)
{
	bool q = !(e->flags & LS_EF_NOT_QUORATE);
	LOG(ls, q ? 5 : 4, "quorum: lockspace %s at ring %" PRIu64, q ? "regained quorum" : "lost quorum",
	    ls_ring_seq(ls->lst));
	if (!q)
		ls->quorum_lost_at = dg_now_ms();
	else
		cpgb_fence_deadlines_from_now(ls);
}

static void handle_membership_effect(struct cpg_ls *ls, const struct ls_effect *e)
{
	switch (e->kind) {
	case LS_EFFECT_JOINED:
		on_joined(ls, e);
		break;
	case LS_EFFECT_DEPARTED:
		on_departed(ls, e);
		break;
	case LS_EFFECT_FENCED:
		on_fenced(ls, e);
		break;
	case LS_EFFECT_QUORUM:
		on_quorum(ls, e);
		break;
	default:
		break;
	}
}

/* The application hears this node's own votequorum verdict (design.md §6:
 * a node that lost quorum stops its I/O), once it follows the lineage. The
 * lineage's replicated flag, which gates grants, drops at every ring change
 * that loses a member until the verdict for the new ring is delivered; the
 * application is spared that blink. */
void cpgb_update_app_quorum(struct cpg_ls *ls)
{
	bool q = ls->state == ST_SYNCED && ls->q_have && ls->q_quorate;
	if (q != ls->app_quorate) {
		ls->app_quorate = q;
		dg_cb_event(&ls->cbq, DG_CB_QUORUM, 0, q);
	}
}

/* Acts on the effects of the last ls_apply_* call, in order. */
void cpgb_process_effects(struct cpg_ls *ls)
{
	for (size_t i = 0; i < ls->nfx; i++) {
		const struct ls_effect *e = &ls->fx[i];
		if (e->kind >= LS_EFFECT_JOINED) {
			handle_membership_effect(ls, e);
		} else if (e->nodeid == ls->self_nodeid && e->incarnation == ls->incarnation && ls->incarnation) {
			cpgb_own_effect(ls, e);
		}
	}
	ls->nfx = 0;
	cpgb_update_app_quorum(ls);
}

void cpgb_check_apply(struct cpg_ls *ls, int rc, const char *what)
{
	if (rc == LS_ERR_NOMEM || ls->fx_nomem) {
		ls->fx_nomem = false;
		cpgb_lost_member_state(ls, "out of memory applying an event");
	} else if (rc < 0) {
		LOG(ls, 4, "%s rejected by the state machine: %s", what, ls_strerror(rc));
	}
}

static const char *reason_name(uint32_t reason)
{
	switch (reason) {
	case CPG_REASON_JOIN: return "join";
	case CPG_REASON_LEAVE: return "leave";
	case CPG_REASON_NODEDOWN: return "node down";
	case CPG_REASON_NODEUP: return "node up (merge)";
	case CPG_REASON_PROCDOWN: return "process exit";
	default: return "unknown";
	}
}

static void apply_leave(struct cpg_ls *ls, const struct cpg_address *a)
{
	if (ls->snap.active && ls->snap.nodeid == a->nodeid && ls->snap.pid == a->pid) {
		free(ls->snap.buf);
		memset(&ls->snap, 0, sizeof(ls->snap));
	}
	struct adm *m = cpgb_adm_find(ls, a->nodeid);
	if (!m || m->pid != a->pid) {
		LOG(ls, 6, "group: process %u/%u left (%s); it was not a lockspace member", a->nodeid, a->pid,
		    reason_name(a->reason));
		return;
	}
	bool was_synced = m->synced;
	cpgb_adm_remove(ls, a->nodeid);
	if (a->reason == CPG_REASON_NODEDOWN) {
		LOG(ls, 4, "membership: node %u (%s) pid %u left the group (node down); applied at the next ring",
		    a->nodeid, cpgb_node_name(ls, a->nodeid), a->pid);
		if (ls->ndown < LS_MAX_CONFCHG)
			ls->down[ls->ndown++] = a->nodeid;
		return;
	}
	LOG(ls, 5, "membership: node %u (%s) pid %u left the group (%s)%s", a->nodeid, cpgb_node_name(ls, a->nodeid),
	    a->pid, reason_name(a->reason), was_synced ? "" : " before its snapshot arrived");
	ls->clean_leave_ctx = true;
	int rc = ls_apply_confchg(ls->lst, ls_ring_seq(ls->lst), &a->nodeid, 1, NULL, 0, cpgb_sink_of(ls));
	cpgb_process_effects(ls);
	ls->clean_leave_ctx = false;
	cpgb_check_apply(ls, rc, "leave");
}

/* Returns false when the join made this member stale (stop applying). */
static bool apply_join(struct cpg_ls *ls, const struct cpg_address *a)
{
	if (a->nodeid == ls->self_nodeid && a->pid == ls->self_pid)
		return true;
	if (a->reason == CPG_REASON_NODEUP) {
		if (!ls_quorate(ls->lst)) {
			char why[160];
			snprintf(why, sizeof(why), "partition merge: node %u pid %u came back while our lineage is "
				 "not quorate", a->nodeid, a->pid);
			cpgb_go_stale(ls, why);
			return false;
		}
		LOG(ls, 5, "membership: node %u (%s) pid %u merged back from another partition; it must "
		    "rejoin fresh before it is a member", a->nodeid, cpgb_node_name(ls, a->nodeid), a->pid);
		return true;
	}
	struct adm *m = cpgb_adm_find(ls, a->nodeid);
	if (m) {
		LOG(ls, 4, "membership: node %u pid %u joined while pid %u of that node is a member: refused",
		    a->nodeid, a->pid, m->pid);
		if (cpgb_designated(ls) == ls->self_nodeid && !ls->replaying)
			cpgb_send_reject(ls, a->nodeid, a->pid);
		return true;
	}
	if (!cpgb_adm_add(ls, a->nodeid, a->pid, false))
		return true;
	LOG(ls, 5, "membership: node %u (%s) pid %u joined the group; snapshot pending", a->nodeid,
	    cpgb_node_name(ls, a->nodeid), a->pid);
	int rc = ls_apply_confchg(ls->lst, ls_ring_seq(ls->lst), NULL, 0, &a->nodeid, 1, cpgb_sink_of(ls));
	cpgb_process_effects(ls);
	cpgb_check_apply(ls, rc, "join");
	return true;
}

static void apply_confchg_synced(struct cpg_ls *ls, const struct ev *e)
{
	const struct cpg_address *member = e->addrs;
	const struct cpg_address *left = member + e->nmember;
	const struct cpg_address *joined = left + e->nleft;
	ls->npresent = e->nmember < CPG_MEMBERS_MAX ? e->nmember : CPG_MEMBERS_MAX;
	memcpy(ls->present, member, ls->npresent * sizeof(*member));
	for (size_t i = 0; i < e->nleft; i++)
		apply_leave(ls, &left[i]);
	for (size_t i = 0; i < e->njoined; i++)
		if (!apply_join(ls, &joined[i]))
			return;
}

static void apply_totem_synced(struct cpg_ls *ls, const struct ev *e)
{
	size_t n = ls->ndown;
	int rc = ls_apply_confchg(ls->lst, e->ring_seq, ls->down, n, NULL, 0, cpgb_sink_of(ls));
	ls->ndown = 0;
	LOG(ls, n ? 4 : 6, "membership: ring %" PRIu64 " with %u node(s)%s", e->ring_seq, e->pid,
	    n ? "; node-down departures applied" : "");
	cpgb_process_effects(ls);
	cpgb_check_apply(ls, rc, "ring change");
}

static void apply_msg_synced(struct cpg_ls *ls, const struct ev *e)
{
	struct env env;
	if (!cpgb_env_open(e, &env))
		return;
	int type = env.type;
	uint64_t lineage = env.lineage;
	uint32_t inc = env.incarnation;
	const uint8_t *payload = env.payload;
	size_t plen = env.len;
	bool own = e->nodeid == ls->self_nodeid && e->pid == ls->self_pid;
	if (type == ENV_LS) {
		struct adm *m = cpgb_adm_find(ls, e->nodeid);
		bool valid = m && m->pid == e->pid && m->synced && lineage == ls->lineage &&
			     inc && inc == ls_live_incarnation(ls->lst, e->nodeid);
		int rc = LS_IGNORED;
		if (valid) {
			rc = ls_apply_message(ls->lst, e->nodeid, payload, plen, cpgb_sink_of(ls));
			cpgb_process_effects(ls);
			cpgb_check_apply(ls, rc, "message");
		}
		if (own) {
			struct ls_msg msg;
			if (ls_msg_decode(payload, plen, &msg) == 0)
				cpgb_inflight_delivered(ls, msg.tag, valid);
		}
	} else if (type == ENV_SNAP) {
		struct snap_hdr h;
		if (!cpgb_parse_snap(payload, plen, &h))
			return;
		struct adm *m = cpgb_adm_find(ls, e->nodeid);
		if (!m || m->pid != e->pid || !m->synced)
			return;
		if (cpgb_track_snap(ls, e->nodeid, e->pid, &h, false)) {
			for (uint32_t i = 0; i < h.ncovered; i++) {
				struct adm *j = cpgb_adm_find(ls, h.covered[i].nodeid);
				if (j && j->pid == h.covered[i].pid)
					j->synced = true;
			}
			if (own)
				ls->my_snap_pending = false;
			memset(&ls->snap, 0, sizeof(ls->snap));
		}
	}
}

static void after_raw_event(struct cpg_ls *ls)
{
	for (size_t i = 0; i < ls->nadm; i++)
		if (!ls->adm[i].synced)
			ls->adm[i].since_join++;
}

void cpgb_process_synced(struct cpg_ls *ls, const struct ev *e)
{
	switch (e->kind) {
	case EV_CONFCHG:
		apply_confchg_synced(ls, e);
		break;
	case EV_TOTEM:
		apply_totem_synced(ls, e);
		break;
	case EV_MSG:
		apply_msg_synced(ls, e);
		break;
	}
	if (ls->state == ST_SYNCED)
		after_raw_event(ls);
}

static void maybe_send_quorum(struct cpg_ls *ls)
{
	if (ls->state != ST_SYNCED || !ls->q_have || !ls->lst)
		return;
	if (ls->q_quorate && ls->grace_until && dg_now_ms() < ls->grace_until)
		return;
	uint64_t ring = ls->q_ring;
	int q = ls->q_quorate ? 1 : 0;
	if (ls_ring_seq(ls->lst) > ring)
		return;
	if (ls_ring_seq(ls->lst) == ring && (ls_quorate(ls->lst) ? 1 : 0) == q)
		return;
	if (ls->sent_q_ring == ring && ls->sent_q_quorate == q)
		return;
	struct ls_msg msg;
	memset(&msg, 0, sizeof(msg));
	msg.type = LS_MSG_QUORUM;
	msg.ring_seq = ring;
	msg.quorate = (uint8_t)q;
	if (cpgb_send_ls(ls, &msg) == 0) {
		ls->sent_q_ring = ring;
		ls->sent_q_quorate = q;
		LOG(ls, 6, "quorum: votequorum says %s for ring %" PRIu64 "; telling the lockspace",
		    q ? "quorate" : "not quorate", ring);
	}
}

void cpgb_post_event(struct cpg_ls *ls)
{
	if (ls->state != ST_SYNCED)
		return;
	if (ls->ndown == 0 && !ls->snap.active && !ls->my_snap_pending && cpgb_designated(ls) == ls->self_nodeid) {
		bool pending = false;
		for (size_t i = 0; i < ls->nadm; i++)
			pending |= !ls->adm[i].synced;
		if (pending)
			cpgb_send_snapshot(ls);
	}
	maybe_send_quorum(ls);
	cpgb_run_fencing(ls);
}
