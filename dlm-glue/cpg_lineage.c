/* cpg backend, the lineage: the admitted-process table, the backend's state
 * (connecting, joining, synced, stale, ...), founding a lineage when alone,
 * and dropping one that was superseded. docs/locking.md §9. */
#include "dlm-glue/cpg_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

const char *cpgb_st_name(int st)
{
	static const char *const names[] = { "connecting", "joining", "synced", "stale", "disconnected", "failed" };
	return st >= 0 && st <= ST_FAILED ? names[st] : "?";
}

struct adm *cpgb_adm_find(struct cpg_ls *ls, uint32_t nodeid)
{
	for (size_t i = 0; i < ls->nadm; i++)
		if (ls->adm[i].nodeid == nodeid)
			return &ls->adm[i];
	return NULL;
}

void cpgb_adm_remove(struct cpg_ls *ls, uint32_t nodeid)
{
	size_t j = 0;
	for (size_t i = 0; i < ls->nadm; i++)
		if (ls->adm[i].nodeid != nodeid)
			ls->adm[j++] = ls->adm[i];
	ls->nadm = j;
}

bool cpgb_adm_add(struct cpg_ls *ls, uint32_t nodeid, uint32_t pid, bool synced)
{
	if (ls->nadm >= CPG_MEMBERS_MAX)
		return false;
	/* kept sorted by nodeid: the snapshot lists them in this order */
	size_t i = ls->nadm;
	while (i > 0 && ls->adm[i - 1].nodeid > nodeid) {
		ls->adm[i] = ls->adm[i - 1];
		i--;
	}
	ls->adm[i] = (struct adm){ .nodeid = nodeid, .pid = pid, .synced = synced };
	ls->nadm++;
	return true;
}

/* The synced member that sends snapshots and rejections: lowest nodeid. */
uint32_t cpgb_designated(struct cpg_ls *ls)
{
	for (size_t i = 0; i < ls->nadm; i++)
		if (ls->adm[i].synced)
			return ls->adm[i].nodeid;
	return 0;
}

void cpgb_reset_lineage(struct cpg_ls *ls)
{
	ls_destroy(ls->lst);
	ls->lst = NULL;
	ls->lineage = 0;
	ls->incarnation = 0;
	ls->nadm = 0;
	ls->ndown = 0;
	free(ls->snap.buf);
	memset(&ls->snap, 0, sizeof(ls->snap));
	ls->my_snap_pending = false;
	ls->nfences = 0;
	ls->seen_own_join = false;
	ls->sent_q_ring = 0;
	ls->sent_q_quorate = -1;
	cpgb_buffer_clear(ls);
	cpgb_out_clear(ls);
}

void cpgb_set_state(struct cpg_ls *ls, int st)
{
	if (ls->state != st)
		LOG(ls, 6, "state %s -> %s", cpgb_st_name(ls->state), cpgb_st_name(st));
	ls->state = st;
	ls->state_since = dg_now_ms();
	pthread_cond_broadcast(&ls->cv);
	if (st != ST_SYNCED && ls->app_quorate) {
		ls->app_quorate = false;
		dg_cb_event(&ls->cbq, DG_CB_QUORUM, 0, 0);
	}
}

static bool all_nodes_in_quorum_view(struct cpg_ls *ls)
{
	if (!ls->q_have || !ls->q_quorate || ls->nnodes == 0)
		return false;
	for (size_t i = 0; i < ls->nnodes; i++) {
		bool found = false;
		for (size_t j = 0; j < ls->q_nmembers; j++)
			found |= ls->q_members[j] == ls->nodes[i].nodeid;
		if (!found)
			return false;
	}
	return true;
}

void cpgb_found_lineage(struct cpg_ls *ls)
{
	cpgb_reset_lineage(ls);
	ls->lst = ls_create(NULL);
	if (!ls->lst) {
		LOG(ls, 3, "out of memory creating the lock table");
		cpgb_set_state(ls, ST_FAILED);
		ls->fail_status = -ENOMEM;
		return;
	}
	uint64_t id = 0;
	while (id == 0)
		if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id))
			id = (uint64_t)dg_now_ms() ^ ((uint64_t)ls->self_pid << 32) ^ ls->self_nodeid;
	ls->lineage = id;
	ls->seen_own_join = true;
	cpgb_adm_add(ls, ls->self_nodeid, ls->self_pid, true);
	int rc = ls_apply_confchg(ls->lst, 0, NULL, 0, &ls->self_nodeid, 1, cpgb_sink_of(ls));
	ls->incarnation = ls_live_incarnation(ls->lst, ls->self_nodeid);
	/* Locks of a lineage we never saw may still be held by a node outside
	 * our partition: unless every configured node is in our quorate view,
	 * grant nothing before the self-fence deadline (like DLM's startup
	 * fencing). */
	bool everyone = all_nodes_in_quorum_view(ls);
	ls->grace_until = everyone ? 0 : dg_now_ms() + ls->deadline_ms;
	cpgb_set_state(ls, ST_SYNCED);
	LOG(ls, 5, "membership: founded lockspace %s (lineage %016" PRIx64 "): alone in the group%s",
	    ls->lockspace_name, ls->lineage,
	    everyone ? "" : "; not every configured node is in our quorum view, so no grants before the self-fence deadline");
	cpgb_process_effects(ls);
	cpgb_check_apply(ls, rc, "founding confchg");
}

void cpgb_go_stale(struct cpg_ls *ls, const char *why)
{
	if (ls->state != ST_SYNCED)
		return;
	int64_t lost = ls->quorum_lost_at ? ls->quorum_lost_at : ls->state_since;
	int64_t at = lost + ls->deadline_ms;
	LOG(ls, 4, "takeover: %s: dropping this lineage and rejoining fresh in %" PRId64 " ms "
	    "(after our own self-fence deadline)", why, at > dg_now_ms() ? at - dg_now_ms() : 0);
	cpgb_orphan_all(ls, "our lineage was superseded");
	ls->reconnect_at = at;
	ls->join_attempts = 0;
	cpgb_set_state(ls, ST_STALE);
	dg_cb_event(&ls->cbq, DG_CB_MEMBERSHIP, 0, 0);
	cpgb_wake(ls);
}

void cpgb_lost_member_state(struct cpg_ls *ls, const char *why)
{
	if (ls->state != ST_SYNCED && ls->state != ST_JOINING)
		return;
	LOG(ls, 3, "%s: leaving the group and rejoining fresh", why);
	cpgb_orphan_all(ls, why);
	ls->reconnect_at = dg_now_ms();
	cpgb_set_state(ls, ST_STALE);
	cpgb_wake(ls);
}
