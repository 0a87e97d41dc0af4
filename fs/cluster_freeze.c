/* Cluster mode: the snapshot freeze (docs/snapshot.md, design.md §8).
 *
 * Every node holds the "freeze" lock in PR while it admits changes (metadata
 * changes and data writes; reads always go on). A snapshot is the
 * coordinator asking for it in EX: the lock manager sends every PR holder a
 * blocking callback, and this node's freeze thread then stops admitting
 * changes, waits for the ones in flight, makes its data durable and unlocks.
 * It asks for PR again at once; that request queues behind the EX (strict
 * FIFO), so this node stays frozen until the EX is gone. When the EX is
 * granted every node is frozen: the coordinator checkpoints the journal, runs
 * the hook and unlocks, and every node's PR is granted.
 *
 * The thaw comes from the lock manager, whatever fails: the EX request has a
 * deadline (cancelled: the PRs are granted), the hook is killed at the same
 * deadline, and a dead coordinator's EX is released when it leaves or is
 * fenced. */
#include "fs/cluster_internal.h"
#include "fs/proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- the gate every change passes ------------------------------------------- */

/* A change waits at most this long for a freeze to end (the longest freeze
 * plus a lock round trip) before it fails with EIO and a log line. */
#define CHANGE_WAIT_MAX_MS ((SNAP_TIMEOUT_MAX_S + 30) * 1000u)

int cluster_change_begin(struct cluster *c)
{
	struct freeze *f = &c->freeze;
	pthread_mutex_lock(&f->mu);
	uint64_t t0 = 0;
	while (!f->admitting && !f->stopping) {
		if (!t0) {
			t0 = cl_now_ms();
			f->held++;
			if (!f->first_held_ms)
				f->first_held_ms = t0;   /* it waits longest: all go at once */
		}
		if (cl_now_ms() - t0 >= CHANGE_WAIT_MAX_MS)
			break;
		struct timespec dl = cl_deadline_in(1000);
		pthread_cond_timedwait(&f->cv, &f->mu, &dl);
	}
	int rc = f->admitting ? 0 : -EIO;
	if (rc == 0)
		f->changes++;
	pthread_mutex_unlock(&f->mu);
	if (rc)
		csvfs_log(LOG_ERR_L, "node %s, volume %s: a change waited %u s for the snapshot freeze to end; "
			  "it fails with EIO", c->o.node, c->v->uuid, CHANGE_WAIT_MAX_MS / 1000);
	return rc;
}

void cluster_change_end(struct cluster *c)
{
	struct freeze *f = &c->freeze;
	pthread_mutex_lock(&f->mu);
	if (--f->changes == 0)
		pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

/* ---- the freeze thread -------------------------------------------------------- */

/* Dispatch thread: only record and signal. The snapshot's own EX is asked
 * for too (the PRs queued behind it): it goes when the snapshot ends. */
void freeze_bast(struct cl_lockres *r, enum dg_mode blocking)
{
	(void)blocking;
	struct freeze *f = &r->c->freeze;
	if (r == &f->ex.res)
		return;
	pthread_mutex_lock(&f->mu);
	f->asked = 1;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

/* ---- what a freeze cost, told to the coordinator ---------------------------- */

#define REPORT_TIMEOUT_MS 1000   /* a report never holds the freeze thread longer */

/* Under f->mu: one node's longest wait, once per node and snapshot. */
static void reports_add(struct freeze *f, const char *node, uint64_t longest_ms)
{
	struct freeze_reports *r = &f->reports;
	if (!r->open)
		return;   /* of no snapshot in progress: nobody asks any more */
	for (unsigned i = 0; i < r->n; i++)
		if (strcmp(r->node[i], node) == 0)
			return;
	if (r->n < MAX_NODES)
		snprintf(r->node[r->n++], sizeof(r->node[0]), "%s", node);
	if (longest_ms > r->stall_ms) {
		r->stall_ms = longest_ms;
		snprintf(r->stall_node, sizeof(r->stall_node), "%s", node);
	}
	pthread_cond_broadcast(&f->cv);
}

void freeze_reports_open(struct cluster *c)
{
	pthread_mutex_lock(&c->freeze.mu);
	memset(&c->freeze.reports, 0, sizeof(c->freeze.reports));
	c->freeze.reports.open = 1;
	pthread_mutex_unlock(&c->freeze.mu);
}

void freeze_reports_close(struct cluster *c, unsigned wait_ms, struct cluster_snap_result *res)
{
	struct freeze *f = &c->freeze;
	unsigned expected = (unsigned)cl_others_up(c) + 1;
	uint64_t until = cl_now_ms() + wait_ms;
	pthread_mutex_lock(&f->mu);
	while (f->reports.n < expected && !f->stopping && cl_now_ms() < until) {
		struct timespec dl = cl_deadline_in((unsigned)(until - cl_now_ms()));
		pthread_cond_timedwait(&f->cv, &f->mu, &dl);
	}
	struct freeze_reports *r = &f->reports;
	res->stall_ms = r->stall_ms;
	snprintf(res->stall_node, sizeof(res->stall_node), "%s", r->stall_node);
	res->nodes_reported = r->n;
	res->nodes_expected = r->n > expected ? r->n : expected;
	r->open = 0;
	pthread_mutex_unlock(&f->mu);
}

int freeze_report_serve(struct cluster *c, const char *node, const struct proto_snapshot_report *r,
			struct proto_snapshot_info *info)
{
	if (atomic_load(&c->role) != CL_COORDINATOR)
		return -EREMCHG;
	struct freeze *f = &c->freeze;
	pthread_mutex_lock(&f->mu);
	if (r->thawed)
		reports_add(f, node, r->longest_ms);
	memset(info, 0, sizeof(*info));
	if (f->snap_active) {
		snprintf(info->name, sizeof(info->name), "%s", f->snap.name);
		snprintf(info->requester, sizeof(info->requester), "%s", f->snap.requester);
		info->since = f->snap_since;
		info->deadline = f->snap_deadline;
	}
	pthread_mutex_unlock(&f->mu);
	return 0;
}

/* Under f->mu: the snapshot a frozen participant was told of ("" none). */
static void set_seen(struct freeze *f, const struct proto_snapshot_info *info)
{
	snprintf(f->seen_name, sizeof(f->seen_name), "%.*s", SNAP_NAME_MAX, info ? info->name : "");
	snprintf(f->seen_requester, sizeof(f->seen_requester), "%s", info ? info->requester : "");
	f->seen_since = info ? info->since : 0;
	f->seen_deadline = info ? info->deadline : 0;
}

/* Tells the coordinator that this node froze (thawed 0: it answers which
 * snapshot, for this node's status) or thawed, with what it cost here. A
 * coordinator counts its own report; a lost report costs only the figure. */
static void report_cost(struct cluster *c, int thawed, uint64_t held, uint64_t longest_ms,
			uint64_t frozen_ms)
{
	struct freeze *f = &c->freeze;
	if (atomic_load(&c->role) == CL_COORDINATOR) {
		pthread_mutex_lock(&f->mu);
		if (thawed)
			reports_add(f, c->o.node, longest_ms);
		pthread_mutex_unlock(&f->mu);
		return;
	}
	struct proto_req q = { .snapshot_report = { (uint8_t)thawed, held > UINT32_MAX ? UINT32_MAX : (uint32_t)held,
						    longest_ms, frozen_ms } };
	struct rio_writer w;
	struct rio_reply rep;
	union proto_reply *p = calloc(1, sizeof(*p));
	rio_writer_init(&w, 0);
	proto_op(OP_SNAPSHOT_REPORT)->put_req(&w, &q);
	int rc = p ? cluster_call_timeout(c, OP_SNAPSHOT_REPORT, &w, &rep, REPORT_TIMEOUT_MS) : -ENOMEM;
	rio_writer_free(&w);
	int decoded = rc == 0 &&
		      proto_decode_reply(proto_op(OP_SNAPSHOT_REPORT), rep.payload, rep.len, p) == 0;
	if (rc == 0)
		rio_reply_free(&rep);
	pthread_mutex_lock(&f->mu);
	set_seen(f, decoded && !thawed ? &p->snapshot_info : NULL);
	pthread_mutex_unlock(&f->mu);
	if (!decoded)
		csvfs_log(LOG_DEBUG_L, "node %s, volume %s: the coordinator was not told that this node %s: %s",
			  c->o.node, c->v->uuid, thawed ? "thawed" : "froze",
			  rc ? strerror(rc == -ERESTART ? EHOSTUNREACH : -rc) : "a malformed answer");
	free(p);
}

/* Takes PR (it waits behind a snapshot's EX), then admits changes. */
static int admit(struct cluster *c)
{
	struct freeze *f = &c->freeze;
	int rc = held_lock(&f->pr, DG_PR, 0);
	if (rc)
		return rc;
	pthread_mutex_lock(&f->mu);
	uint64_t now = cl_now_ms(), since = f->frozen_at_ms, held = f->held;
	uint64_t longest = f->first_held_ms ? now - f->first_held_ms : 0;
	f->admitting = 1;
	f->frozen_at_ms = 0;
	f->held = f->first_held_ms = 0;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	if (!since)
		return 0;
	csvfs_log(LOG_INFO_L, "node %s, volume %s: thawed after %llu ms frozen; %llu changes were held, "
		  "the longest for %llu ms", c->o.node, c->v->uuid, (unsigned long long)(now - since),
		  (unsigned long long)held, (unsigned long long)longest);
	report_cost(c, 1, held, longest, now - since);
	return 0;
}

/* Under f->mu: an abandoned EX request that the lock manager answered at
 * last is let go (granted: unlocked, so nobody stays frozen). */
static void reap_orphan_ex(struct freeze *f)
{
	if (!f->ex_orphan)
		return;
	pthread_mutex_lock(&f->ex.mu);
	int pending = f->ex.pending, granted = f->ex.status == 0;
	pthread_mutex_unlock(&f->ex.mu);
	if (pending)
		return;
	if (granted)
		held_unlock(&f->ex, 0, NULL);
	f->ex.lk = NULL;
	f->ex_orphan = 0;
	csvfs_log(LOG_WARN_L, "the lock manager answered an abandoned snapshot freeze request at last; %s",
		  granted ? "released it" : "it was cancelled");
}

/* Waits for a blocking callback (or the end); 1 when asked to freeze. */
static int wait_asked(struct cluster *c)
{
	struct freeze *f = &c->freeze;
	pthread_mutex_lock(&f->mu);
	while (!f->asked && !f->stopping && !held_lost(&f->pr)) {
		struct timespec dl = cl_deadline_in(LOOP_MS);
		pthread_cond_timedwait(&f->cv, &f->mu, &dl);
		reap_orphan_ex(f);
	}
	int asked = f->asked && !f->stopping;
	f->asked = 0;
	pthread_mutex_unlock(&f->mu);
	return asked;
}

/* Stops admitting, waits for the changes in flight, makes the data this node
 * wrote durable, and lets the PR go. Metadata needs nothing here: every
 * change was answered only once journaled (durable replies), and a
 * participant's commits were sent before its writes returned. */
static void freeze_here(struct cluster *c)
{
	struct freeze *f = &c->freeze;
	uint64_t t0 = cl_now_ms();
	pthread_mutex_lock(&f->mu);
	f->admitting = 0;
	f->frozen_at_ms = t0;
	unsigned inflight = f->changes;
	while (f->changes && !f->stopping)
		pthread_cond_wait(&f->cv, &f->mu);
	pthread_mutex_unlock(&f->mu);
	int sync_rc = -lun_fdatasync(&c->v->data_lun);
	held_unlock(&f->pr, 0, NULL);
	csvfs_log(sync_rc ? LOG_ERR_L : LOG_INFO_L,
		  "node %s, volume %s: frozen for a snapshot (changes held, reads go on); %u in flight "
		  "drained in %llu ms%s%s", c->o.node, c->v->uuid, inflight,
		  (unsigned long long)(cl_now_ms() - t0), sync_rc ? "; flushing the LUN failed: " : "",
		  sync_rc ? strerror(sync_rc) : "");
}

static void *freeze_main(void *arg)
{
	struct cluster *c = arg;
	struct freeze *f = &c->freeze;
	for (;;) {
		pthread_mutex_lock(&f->mu);
		int stop = f->stopping;
		pthread_mutex_unlock(&f->mu);
		if (stop)
			break;
		if (!f->pr.lk) {
			/* Not granted within the lock timeout (a long freeze, no
			 * quorum): ask again; changes keep waiting meanwhile. */
			if (admit(c) != 0)
				usleep(100 * 1000);
			continue;
		}
		if (wait_asked(c)) {
			freeze_here(c);
			report_cost(c, 0, 0, 0, 0);
		}
		else if (held_lost(&f->pr))
			held_unlock(&f->pr, 0, NULL);   /* gone with our lineage: take it anew */
	}
	held_unlock(&f->pr, 0, NULL);
	return NULL;
}

int freeze_start(struct cluster *c)
{
	struct freeze *f = &c->freeze;
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	held_init(&f->pr, c, CL_LOCK_FREEZE);
	held_init(&f->ex, c, CL_LOCK_FREEZE);
	int rc = pthread_create(&f->thread, NULL, freeze_main, c);
	f->running = rc == 0;
	return -rc;
}

void freeze_stop(struct cluster *c)
{
	struct freeze *f = &c->freeze;
	if (!f->running)
		return;
	pthread_mutex_lock(&f->mu);
	f->stopping = 1;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	pthread_join(f->thread, NULL);
	f->running = 0;
}

int freeze_snapshot_active(struct cluster *c)
{
	pthread_mutex_lock(&c->freeze.mu);
	int active = c->freeze.snap_active;
	pthread_mutex_unlock(&c->freeze.mu);
	return active;
}

/* ",\"freeze\":{...}": whether this node is frozen, since when; on the
 * coordinator, the snapshot in progress. */
size_t freeze_status_json(struct cluster *c, char *out, size_t len)
{
	struct freeze *f = &c->freeze;
	pthread_mutex_lock(&f->mu);
	uint64_t frozen_for = f->frozen_at_ms ? cl_now_ms() - f->frozen_at_ms : 0;
	int frozen = !f->admitting, active = f->snap_active;
	struct cluster_snap_request rq = f->snap;
	int64_t since = f->snap_since, deadline = f->snap_deadline;
	if (!active && frozen && f->seen_name[0]) {   /* a participant: as the coordinator said */
		active = 1;
		snprintf(rq.name, sizeof(rq.name), "%s", f->seen_name);
		snprintf(rq.requester, sizeof(rq.requester), "%s", f->seen_requester);
		rq.timeout_s = (unsigned)(f->seen_deadline - f->seen_since);
		since = f->seen_since;
		deadline = f->seen_deadline;
	}
	pthread_mutex_unlock(&f->mu);
	int64_t now = (int64_t)time(NULL);
	size_t o = (size_t)snprintf(out, len, ",\"freeze\":{\"frozen\":%s,\"frozen_since\":%lld",
				    frozen ? "true" : "false",
				    frozen ? (long long)(now - (int64_t)(frozen_for / 1000)) : 0LL);
	if (o < len && active)
		o += (size_t)snprintf(out + o, len - o,
				      ",\"snapshot\":{\"name\":\"%s\",\"requested_by\":\"%s\",\"since\":%lld,"
				      "\"deadline\":%lld,\"timeout_s\":%u}",
				      rq.name, rq.requester, (long long)since, (long long)deadline,
				      rq.timeout_s);
	if (o < len)
		o += (size_t)snprintf(out + o, len - o, "}");
	return o < len ? o : len;
}
