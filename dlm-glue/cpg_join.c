/* cpg backend, join and snapshot: the designated member serializes the
 * lineage and multicasts it in chunks; a joiner buffers every raw event from
 * its own join, installs the snapshot and replays what came after its stamp.
 * docs/locking.md §9, "Snapshots (join protocol)". */
#include "dlm-glue/cpg_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ev_free(struct ev *e)
{
	if (!e)
		return;
	free(e->addrs);
	free(e->data);
	free(e);
}

void cpgb_buffer_clear(struct cpg_ls *ls)
{
	while (ls->buf_head) {
		struct ev *e = ls->buf_head;
		ls->buf_head = e->next;
		ev_free(e);
	}
	ls->buf_tail = NULL;
	ls->buf_count = 0;
	ls->buf_bytes = 0;
}

static struct ev *ev_copy(const struct ev *src)
{
	struct ev *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	*e = *src;
	e->next = NULL;
	e->addrs = NULL;
	e->data = NULL;
	size_t na = src->nmember + src->nleft + src->njoined;
	if (na) {
		e->addrs = malloc(na * sizeof(*e->addrs));
		if (!e->addrs) {
			free(e);
			return NULL;
		}
		memcpy(e->addrs, src->addrs, na * sizeof(*e->addrs));
	}
	if (src->len) {
		e->data = malloc(src->len);
		if (!e->data) {
			free(e->addrs);
			free(e);
			return NULL;
		}
		memcpy(e->data, src->data, src->len);
	}
	return e;
}

void cpgb_send_snapshot(struct cpg_ls *ls)
{
	uint8_t *snap = NULL;
	size_t snap_len = 0;
	int rc = ls_snapshot(ls->lst, &snap, &snap_len);
	if (rc != LS_OK) {
		LOG(ls, 3, "cannot snapshot the lock table: %s", ls_strerror(rc));
		return;
	}
	size_t total = 4 + 4 + 8 + 4 + 4 + ls->nadm * (4 + 4 + 1 + 8) + 4 + snap_len;
	if (total > SNAP_MAX) {
		LOG(ls, 3, "snapshot of %zu bytes is too large", total);
		free(snap);
		return;
	}
	uint8_t *blob = malloc(total);
	if (!blob) {
		free(snap);
		return;
	}
	uint8_t *p = blob;
	put32(p, BLOB_MAGIC), p += 4;
	put32(p, BLOB_VERSION), p += 4;
	put64(p, ls->lineage), p += 8;
	int64_t grace = ls->grace_until - dg_now_ms();
	put32(p, grace > 0 ? (uint32_t)grace : 0), p += 4;
	put32(p, (uint32_t)ls->nadm), p += 4;
	struct cpg_address covered[CPG_MEMBERS_MAX];
	size_t ncovered = 0;
	for (size_t i = 0; i < ls->nadm; i++) {
		const struct adm *a = &ls->adm[i];
		put32(p, a->nodeid), p += 4;
		put32(p, a->pid), p += 4;
		*p++ = a->synced;
		put64(p, a->since_join), p += 8;
		if (!a->synced) {
			covered[ncovered].nodeid = a->nodeid;
			covered[ncovered].pid = a->pid;
			covered[ncovered].reason = 0;
			ncovered++;
		}
	}
	put32(p, (uint32_t)snap_len), p += 4;
	memcpy(p, snap, snap_len);
	free(snap);

	uint32_t nchunks = (uint32_t)((total + SNAP_CHUNK - 1) / SNAP_CHUNK);
	uint32_t id = ++ls->snap_seq;
	size_t hdr = 4 * 5 + ncovered * 8;
	uint8_t *msg = malloc(hdr + SNAP_CHUNK);
	if (!msg) {
		free(blob);
		return;
	}
	for (uint32_t c = 0; c < nchunks; c++) {
		size_t off = (size_t)c * SNAP_CHUNK;
		size_t n = total - off < SNAP_CHUNK ? total - off : SNAP_CHUNK;
		uint8_t *q = msg;
		put32(q, id), q += 4;
		put32(q, c), q += 4;
		put32(q, nchunks), q += 4;
		put32(q, (uint32_t)total), q += 4;
		put32(q, (uint32_t)ncovered), q += 4;
		for (size_t i = 0; i < ncovered; i++) {
			put32(q, covered[i].nodeid), q += 4;
			put32(q, covered[i].pid), q += 4;
		}
		memcpy(q, blob + off, n);
		cpgb_send_raw(ls, ENV_SNAP, msg, hdr + n);
	}
	free(msg);
	free(blob);
	ls->my_snap_pending = true;
	char who[256] = "";
	size_t w = 0;
	for (size_t i = 0; i < ncovered && w < sizeof(who) - 16; i++)
		w += (size_t)snprintf(who + w, sizeof(who) - w, "%s%u", i ? "," : "", covered[i].nodeid);
	LOG(ls, 5, "membership: sending a %zu-byte snapshot (position %" PRIu64 ") to joining node(s) %s",
	    total, ls_position(ls->lst), who);
}

/* A snapshot chunk, as every synced member tracks it. Returns true when
 * this chunk completed the snapshot. */
bool cpgb_track_snap(struct cpg_ls *ls, uint32_t nodeid, uint32_t pid, const struct snap_hdr *h, bool keep_data)
{
	struct snap_rx *s = &ls->snap;
	if (h->idx == 0) {
		free(s->buf);
		memset(s, 0, sizeof(*s));
		s->active = true;
		s->nodeid = nodeid;
		s->pid = pid;
		s->id = h->id;
		s->nchunks = h->nchunks;
		s->total = h->total;
		s->ncovered = h->ncovered;
		memcpy(s->covered, h->covered, h->ncovered * sizeof(h->covered[0]));
		if (keep_data) {
			s->buf = malloc(h->total ? h->total : 1);
			if (!s->buf) {
				s->active = false;
				return false;
			}
		}
	} else if (!s->active || s->nodeid != nodeid || s->pid != pid || s->id != h->id || s->next_idx != h->idx) {
		return false;
	}
	if (s->buf) {
		if (h->len > s->total - s->got) {
			free(s->buf);
			memset(s, 0, sizeof(*s));
			return false;
		}
		memcpy(s->buf + s->got, h->data, h->len);
	}
	s->got += h->len;
	s->next_idx = h->idx + 1;
	return s->next_idx == s->nchunks;
}

static int install_snapshot(struct cpg_ls *ls, const uint8_t *blob, size_t len, uint32_t from)
{
	if (len < 28 || get32(blob) != BLOB_MAGIC || get32(blob + 4) != BLOB_VERSION)
		return -EPROTO;
	uint64_t lineage = get64(blob + 8);
	uint32_t grace = get32(blob + 16);
	uint32_t nadm = get32(blob + 20);
	const uint8_t *p = blob + 24;
	if (nadm > CPG_MEMBERS_MAX || (size_t)(blob + len - p) < (size_t)nadm * 17 + 4)
		return -EPROTO;
	struct adm adm[CPG_MEMBERS_MAX];
	uint64_t since = 0;
	bool me = false;
	for (uint32_t i = 0; i < nadm; i++) {
		adm[i].nodeid = get32(p);
		adm[i].pid = get32(p + 4);
		adm[i].synced = p[8] != 0;
		adm[i].since_join = get64(p + 9);
		p += 17;
		if (adm[i].nodeid == ls->self_nodeid && adm[i].pid == ls->self_pid && !adm[i].synced) {
			me = true;
			since = adm[i].since_join;
		}
	}
	uint32_t snap_len = get32(p);
	p += 4;
	if (!me || (size_t)(blob + len - p) != snap_len || since == 0 || since > ls->buf_count)
		return -EPROTO;
	struct lockstate *lst = NULL;
	int rc = ls_deserialize(p, snap_len, &lst);
	if (rc != LS_OK)
		return rc == LS_ERR_NOMEM ? -ENOMEM : -EPROTO;
	if (ls_live_incarnation(lst, ls->self_nodeid) == 0) {
		ls_destroy(lst);
		return -EPROTO;
	}
	/* Take over the buffered events before reset_lineage-like cleanup. */
	struct ev *events = ls->buf_head;
	size_t nevents = ls->buf_count;
	ls->buf_head = ls->buf_tail = NULL;
	ls->buf_count = ls->buf_bytes = 0;
	free(ls->snap.buf);
	memset(&ls->snap, 0, sizeof(ls->snap));

	ls->lst = lst;
	ls->lineage = lineage;
	ls->incarnation = ls_live_incarnation(lst, ls->self_nodeid);
	ls->nadm = nadm;
	memcpy(ls->adm, adm, nadm * sizeof(adm[0]));
	ls->grace_until = grace ? dg_now_ms() + grace : 0;
	ls->ndown = 0;
	cpgb_set_state(ls, ST_SYNCED);
	LOG(ls, 5, "membership: joined lockspace %s (lineage %016" PRIx64 ") from node %u's snapshot: position %"
	    PRIu64 ", %zu lock(s), incarnation %u; replaying %zu buffered event(s)", ls->lockspace_name, lineage,
	    from, ls_position(lst), ls_lock_count(lst), ls->incarnation, nevents - (size_t)since);
	ls->replaying = true;
	size_t idx = 0;
	for (struct ev *e = events; e; e = e->next, idx++) {
		if (idx < since)
			continue;
		if (ls->state != ST_SYNCED)
			break;
		cpgb_process_synced(ls, e);
	}
	ls->replaying = false;
	while (events) {
		struct ev *e = events;
		events = e->next;
		ev_free(e);
	}
	return 0;
}

static void arm_snapshot_fences(void *ctx, const struct ls_member_info *m)
{
	struct cpg_ls *ls = ctx;
	if (m->departed)
		cpgb_arm_fence(ls, m->nodeid, m->incarnation);
}

/* A confchg while joining; false when nothing more is to be done with it
 * (not our own join yet, or we are alone and founded a lineage). */
static bool joining_confchg(struct cpg_ls *ls, const struct ev *e)
{
	const struct cpg_address *member = e->addrs;
	const struct cpg_address *left = member + e->nmember;
	const struct cpg_address *joined = left + e->nleft;
	bool own_join = false;
	for (size_t i = 0; i < e->njoined; i++)
		own_join |= joined[i].nodeid == ls->self_nodeid && joined[i].pid == ls->self_pid;
	if (!ls->seen_own_join && !own_join)
		return false;
	ls->seen_own_join = true;
	bool alone = e->nmember == 1 && member[0].nodeid == ls->self_nodeid && member[0].pid == ls->self_pid;
	if (alone) {
		cpgb_found_lineage(ls);
		return false;
	}
	for (size_t i = 0; i < e->nleft; i++)
		if (ls->snap.active && ls->snap.nodeid == left[i].nodeid && ls->snap.pid == left[i].pid) {
			LOG(ls, 5, "membership: node %u left while sending us its snapshot", left[i].nodeid);
			free(ls->snap.buf);
			memset(&ls->snap, 0, sizeof(ls->snap));
		}
	return true;
}

/* Keeps a copy of every raw event from our own join on, for the replay
 * after the snapshot; false when we had to give up. */
static bool buffer_event(struct cpg_ls *ls, const struct ev *e)
{
	if (ls->buf_count >= BUFFER_MAX_EVENTS || ls->buf_bytes >= BUFFER_MAX_BYTES) {
		cpgb_lost_member_state(ls, "too many events buffered while waiting for a snapshot");
		return false;
	}
	struct ev *copy = ev_copy(e);
	if (!copy) {
		cpgb_lost_member_state(ls, "out of memory buffering events");
		return false;
	}
	if (ls->buf_tail)
		ls->buf_tail->next = copy;
	else
		ls->buf_head = copy;
	ls->buf_tail = copy;
	ls->buf_count++;
	ls->buf_bytes += e->len + 64;
	return true;
}

static void rejected(struct cpg_ls *ls, const struct env *env)
{
	if (env->len != 8 || get32(env->payload) != ls->self_nodeid || get32(env->payload + 4) != ls->self_pid)
		return;
	snprintf(ls->fail_msg, sizeof(ls->fail_msg), "another process of node %u is already a member of "
		 "lockspace %s", ls->self_nodeid, ls->lockspace_name);
	LOG(ls, 3, "%s", ls->fail_msg);
	ls->fail_status = -EEXIST;
	cpgb_set_state(ls, ST_FAILED);
}

/* A snapshot chunk: the last one that covers us is installed. */
static void joining_snap_chunk(struct cpg_ls *ls, const struct ev *e, const struct env *env)
{
	struct snap_hdr h;
	if (!cpgb_parse_snap(env->payload, env->len, &h))
		return;
	if (h.idx == 0 && !cpgb_snap_covers(&h, ls->self_nodeid, ls->self_pid))
		return;
	if (!cpgb_track_snap(ls, e->nodeid, e->pid, &h, true))
		return;
	uint8_t *blob = ls->snap.buf;
	size_t len = ls->snap.got;
	ls->snap.buf = NULL;
	memset(&ls->snap, 0, sizeof(ls->snap));
	int rc = install_snapshot(ls, blob, len, e->nodeid);
	free(blob);
	if (rc < 0 && ls->state == ST_JOINING) {
		char why[96];
		snprintf(why, sizeof(why), "snapshot from node %u unusable (%s)", e->nodeid, strerror(-rc));
		cpgb_lost_member_state(ls, why);
	} else if (rc == 0 && ls->lst) {
		ls_foreach_member(ls->lst, arm_snapshot_fences, ls);
	}
}

void cpgb_process_joining(struct cpg_ls *ls, const struct ev *e)
{
	if (e->kind == EV_CONFCHG && !joining_confchg(ls, e))
		return;
	if (!ls->seen_own_join || !buffer_event(ls, e))
		return;
	struct env env;
	if (!cpgb_env_open(e, &env))
		return;
	if (env.type == ENV_REJECT)
		rejected(ls, &env);
	else if (env.type == ENV_SNAP)
		joining_snap_chunk(ls, e, &env);
}
