/* Cluster mode: this node's role. Who the coordinator is ("coordinfo"),
 * the election ("coord"), becoming coordinator, stepping down, losing the
 * role after a partition, the cluster thread that drives it all, and
 * csvctl move. docs/cluster.md, "Roles and the coordinator election". */
#include "fs/cluster_internal.h"
#include "fs/proto.h"
#include "fs/iostate.h"
#include "fs/control.h"
#include "redirect-io/rio.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- who is the coordinator ------------------------------------------------ */

static void info_decode(const uint8_t *lvb, struct coord_info *ci)
{
	uint32_t f[6];
	memcpy(f, lvb, sizeof(f));
	if (f[0] != INFO_MAGIC) {
		memset(ci, 0, sizeof(*ci));
		return;
	}
	*ci = (struct coord_info){ f[1], f[2], f[3], f[4], f[5] };
}

int info_read(struct cluster *c, struct coord_info *ci)
{
	int rc = held_convert(&c->info, DG_PR, DG_VALBLK, NULL);
	if (rc)
		return rc;
	info_decode(c->info.lvb, ci);
	return held_convert(&c->info, DG_NL, 0, NULL);
}

/* A role change holds the value block in EX from its start to the value it
 * ends with: the other nodes' reads (PR) queue behind it and return the
 * moment that value is written, so they act on it at once instead of at
 * their next look. ci (may be NULL) gets the value as it is now. */
int info_hold(struct cluster *c, struct coord_info *ci)
{
	int rc = held_convert(&c->info, DG_EX, DG_VALBLK, NULL);
	if (rc == 0 && ci)
		info_decode(c->info.lvb, ci);
	return rc;
}

/* Held in EX: writes ci and lets the queued readers have it. */
int info_publish(struct cluster *c, const struct coord_info *ci)
{
	uint8_t lvb[DG_LVB_LEN] = { 0 };
	uint32_t f[6] = { INFO_MAGIC, ci->epoch, ci->nodeid, ci->port, ci->move_target, ci->flags };
	memcpy(lvb, f, sizeof(f));
	return held_convert(&c->info, DG_NL, DG_VALBLK, lvb);
}

/* Held in EX: lets go with the value block as it was. */
static void info_unhold(struct cluster *c)
{
	if (held_convert(&c->info, DG_NL, 0, NULL))
		csvfs_log(LOG_WARN_L, "volume %s: could not release the coordinator value block", c->v->uuid);
}

int info_write(struct cluster *c, const struct coord_info *ci)
{
	int rc = info_hold(c, NULL);
	return rc ? rc : info_publish(c, ci);
}

static void file_locks_lost(struct cluster *c)
{
	unsigned n = plock_lose_all(c->v->plocks_mine);
	atomic_fetch_add(&c->v->lock_epoch, 1);
	if (n)
		csvfs_log(LOG_ERR_L, "this node's %u file lock range(s) on volume %s were lost (it was cut "
			  "off and fenced): I/O on the files that held them fails with EIO", n, c->v->uuid);
}

/* The info lock is lost with our lineage after a partition: take it anew.
 * The others released this node's file locks once it was fenced: its
 * processes learn it (files that held one fail I/O, fs/plock.h). */
int info_ensure(struct cluster *c)
{
	if (c->info.lk && !held_lost(&c->info))
		return 0;
	if (c->info.lk)
		file_locks_lost(c);
	held_unlock(&c->info, 0, NULL);
	return held_lock(&c->info, DG_NL, 0);
}

/* ---- roles ----------------------------------------------------------------- */

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

/* The file lock table starts over here with this node's own locks; after
 * an earlier coordinator, the others' reclaims are waited for (grace). */
static void lock_table_to_coordinator(struct cluster *c, const struct coord_info *prev)
{
	const char *names[MAX_NODES];
	struct dg_member m[MAX_NODES];
	int q = 0, count = prev->epoch ? dg_members(c->ls, m, MAX_NODES, &q) : 0;
	size_t n = 0;
	for (int i = 0; i < count; i++)
		if (m[i].state == DG_NODE_UP && m[i].nodeid != c->self)
			names[n++] = m[i].name;
	plock_begin_grace(c->v->plocks, names, n, LOCK_GRACE_MS);
	c->reclaim_since_ms = cl_now_ms();
	plock_copy_into(c->v->plocks_mine, c->v->plocks);
}

/* This coordinator's engine writes nothing more: another node owns the
 * volume now, or our path failed (role_path_gone probes it). */
static int engine_done(struct cluster *c)
{
	return journal_gate_get() == JOURNAL_GATE_CLOSED || held_lost(&c->coord) || role_path_gone(c);
}

/* rio's handler: the one role check for a participant's request; the
 * engine stays attached until cluster_leave. */
static int serve_request(void *arg, const struct rio_peer *peer, const struct rio_request *req,
			 struct rio_response *resp)
{
	struct cluster *c = arg;
	if (req->op == OP_SNAPSHOT || req->op == OP_SNAPSHOT_ABORT || req->op == OP_SNAPSHOT_REPORT)
		return snapshot_serve(c, peer, req, resp);
	if (req->op == OP_MAINTENANCE)
		return outcome_serve(c, req, resp, maintenance_served);
	if (req->op == OP_GROW)
		return outcome_serve(c, req, resp, grow_served);
	if (req->op == OP_IO_STATE)
		return io_state_serve(c, peer, req, resp);
	if (req->op == OP_REDIRECT)
		return redirect_serve(c, peer, req, resp);
	int role = cluster_enter(c);
	if (role < 0) {
		resp->status = (uint16_t)-role;   /* paused too long */
		return 0;
	}
	struct server *s = role == CL_COORDINATOR ? cluster_server(c) : NULL;
	if (s)
		resp->status = (uint16_t)server_request(s, peer->node, peer->addr, req->op,
							req->payload, req->len, &resp->body);
	else
		resp->status = EREMCHG;   /* we are no longer the coordinator */
	/* Failed here because this engine may write no more — our path
	 * failed, or the role's lock went (with our corosync connection, say:
	 * the gate is closed, and a journal commit in flight fails): it runs
	 * again at the next coordinator, which answers a change whose commit
	 * made it from the reply table (docs/cluster.md "Exactly once"). */
	if (resp->status && resp->status != EREMCHG && engine_done(c)) {
		resp->status = EREMCHG;
		resp->body.len = 0;
	}
	cluster_leave(c);
	return 0;
}

static int move_for_server(void *arg, const char *target, char *err, size_t errlen)
{
	return cluster_move(arg, target, err, errlen);
}

/* A connection from a live member's address (corosync's ring0_addr) is let
 * in ahead of a flood from elsewhere (redirect-io's handshake budget). */
static bool member_addr(void *arg, const char *host)
{
	struct cluster *c = arg;
	struct dg_member m[MAX_NODES];
	int q = 0, n = dg_members(c->ls, m, MAX_NODES, &q);
	for (int i = 0; i < n; i++)
		if (m[i].state == DG_NODE_UP && strcmp(m[i].address, host) == 0)
			return true;
	return false;
}

/* rio listens on port= if given, else on the first free port of the range
 * (another volume's daemon on this node may hold the others). */
static int listen_for_participants(struct cluster *c, struct rio_server **srv)
{
	struct rio_server_config cfg = {
		.cred_dir = c->o.cred_dir, .listen_addr = "0.0.0.0",
		.handler = serve_request, .handler_arg = c, .log = conn_rio_log,
		.priority_addr = member_addr, .priority_arg = c,
		/* A redirected participant keeps its fio/VM queue depth of 1 MiB
		 * transfers in flight (8 and more) besides its metadata calls and
		 * a lock wait that holds a worker: 4 would queue them. */
		.workers_per_conn = 12,
	};
	unsigned first = c->o.port ? c->o.port : CLUSTER_PORT_BASE;
	unsigned count = c->o.port ? 1 : CLUSTER_PORT_COUNT;
	char err[512] = "";
	for (unsigned p = first; p < first + count; p++) {
		cfg.port = (uint16_t)p;
		if (rio_server_start(&cfg, srv, err, sizeof(err)) == RIO_OK)
			return 0;
	}
	if (count == 1)
		csvfs_log(LOG_ERR_L, "coordinator of volume %s cannot serve other nodes on port %u: %s",
			  c->v->uuid, first, err);
	else
		csvfs_log(LOG_ERR_L, "coordinator of volume %s cannot serve other nodes: no free port in "
			  "%u-%u (last: %s)", c->v->uuid, first, first + count - 1, err);
	return -EADDRINUSE;
}

static int server_start(struct cluster *c)
{
	struct server *st;
	if (server_create(c->v, &st))
		return -ENOMEM;
	server_set_mover(st, move_for_server, c);
	pthread_mutex_lock(&c->mu);
	c->srv_state = st;
	pthread_mutex_unlock(&c->mu);
	struct rio_server *srv;
	if (listen_for_participants(c, &srv) != 0) {
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

/* The port participants reach this coordinator on (0: it serves nobody). */
static uint16_t serving_port(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	uint16_t port = c->srv ? rio_server_port(c->srv) : 0;
	pthread_mutex_unlock(&c->mu);
	return port;
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

/* The volume has had no coordinator for VOLUME_PAUSE_MS (every node's path
 * failed, or none can take the role): paused, until one takes it. */
static void vacancy_follow(struct cluster *c, int vacant, const char *coordinator)
{
	uint64_t now = cl_now_ms();
	if (vacant && !c->coordless_since_ms)
		c->coordless_since_ms = now;
	if (!vacant)
		c->coordless_since_ms = 0;
	int paused = vacant && now - c->coordless_since_ms >= VOLUME_PAUSE_MS;
	pthread_mutex_lock(&c->mu);
	int was = c->no_coordinator;
	c->no_coordinator = paused;
	if (vacant)
		c->coord_nodeid = 0;   /* the status names none */
	pthread_mutex_unlock(&c->mu);
	if (paused && !was)
		csvfs_log(LOG_ERR_L, "volume %s is paused: no node has taken the coordinator role for %u ms%s; "
			  "requests wait for one", c->v->uuid, VOLUME_PAUSE_MS,
			  iostate_path_down() ? " (this node's own path to the LUN is down: it cannot)" : "");
	else if (was && !paused)
		csvfs_log(LOG_WARN_L, "volume %s resumes: %s is the coordinator", c->v->uuid, coordinator);
}

static void set_role(struct cluster *c, int role)
{
	atomic_store(&c->role, role);
}

/* The value block names this node (or, undone, nobody): info_held says
 * whether we hold it in EX already (the others' reads wait for us). */
static int publish_self(struct cluster *c, const struct coord_info *ci, int info_held)
{
	int rc = info_held ? info_publish(c, ci) : info_ensure(c) ? -ENOTCONN : info_write(c, ci);
	if (rc)
		csvfs_log(LOG_ERR_L, "cannot publish this node as coordinator: %s", strerror(-rc));
	return rc;
}

/* We hold "coord" EX: serve, tell everyone, open the engine (replaying the
 * journal). prev is what the value block said before us; info_held: we
 * hold the value block in EX already. Serving and published before the
 * engine opens, so that the participants find us, connect and tell their
 * opens while the journal is replayed; but no request runs before the
 * engine is open: each one waits at the role lock, held exclusive until
 * then (docs/cluster.md, "Move"). On failure nothing names this node. */
static int become_coordinator(struct cluster *c, const struct coord_info *prev, int info_held)
{
	int takeover = prev->nodeid != 0 && prev->nodeid != c->self;
	int keep_orphans = cl_others_up(c);
	conn_retire(c);                  /* requests to the old one give up and wait */
	pthread_rwlock_wrlock(&c->role_lock);
	uint64_t t0 = cl_now_ms();
	server_start(c);
	struct coord_info ci = { .epoch = prev->epoch + 1, .nodeid = c->self, .port = serving_port(c) };
	int published = publish_self(c, &ci, info_held) == 0;
	char err[1024];
	int rc = volume_attach_engine(c->v, takeover || keep_orphans, err, sizeof(err));
	if (rc) {
		pthread_rwlock_unlock(&c->role_lock);
		csvfs_log(LOG_ERR_L, "cannot become coordinator: %s", err);
		server_stop(c);               /* GOAWAY: who connected looks again */
		struct coord_info none = { .epoch = ci.epoch };
		if (published && (info_ensure(c) || info_write(c, &none)))
			csvfs_log(LOG_ERR_L, "volume %s: could not clear the coordinator value block after "
				  "failing to become coordinator", c->v->uuid);
		return rc;
	}
	minode_foreach(c->v, minode_to_coordinator, c);
	lock_table_to_coordinator(c, prev);
	set_role(c, CL_COORDINATOR);
	pthread_rwlock_unlock(&c->role_lock);
	control_note_coordinator(c->v->uuid, 1);
	volume_start(c->v);
	vacancy_follow(c, 0, "this node");
	pthread_mutex_lock(&c->mu);
	c->epoch = ci.epoch;
	c->coord_nodeid = c->self;
	c->move_target = 0;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (takeover)
		csvfs_log(LOG_WARN_L, "this node is now the coordinator (epoch %u): took over from node %u, "
			  "journal replayed, in %" PRIu64 " ms", ci.epoch, prev->nodeid, cl_now_ms() - t0);
	else
		csvfs_log(LOG_WARN_L, "this node is now the coordinator (epoch %u): volume opened in %" PRIu64
			  " ms", ci.epoch, cl_now_ms() - t0);
	return 0;
}

/* What the engine's map cache held (holes and unwritten extents too) is not
 * protected by any layout lock: a participant starts from nothing. */
static void minode_to_participant(struct volume *v, struct minode *m, void *arg)
{
	(void)arg;
	minode_invalidate_map(m);
	atomic_store(&m->size_stale, 1);
}

/* Our own written ranges: all durable after a clean detach; after an
 * abandon, those whose transaction was not are kept, to be committed again
 * to the next coordinator (fs/meta_pending.c). */
static void minode_own_pending_durable(struct volume *v, struct minode *m, void *arg)
{
	minode_pend_prune(v, m, arg != NULL);
}

/* Serving stops, then the engine goes with no request running: detach
 * (cleanly) or abandon (without a write). */
static void to_participant(struct cluster *c, void (*drop_engine)(struct volume *v))
{
	server_stop(c);
	pthread_rwlock_wrlock(&c->role_lock);
	drop_engine(c->v);
	int clean = drop_engine == volume_detach_engine;
	minode_foreach(c->v, minode_own_pending_durable, clean ? c : NULL);
	minode_foreach(c->v, minode_to_participant, NULL);
	set_role(c, CL_PARTICIPANT);
	pthread_rwlock_unlock(&c->role_lock);
	control_note_coordinator(c->v->uuid, 0);
}

/* A node still up that has not told its opens yet (a loaded node can take
 * longer than the locks' grace): its orphans must outlive the window, or its
 * open files would be freed under it. Bounded by ORPHAN_RECLAIM_MAX_MS. */
static int live_reclaim_pending(struct cluster *c)
{
	char late[MAX_NODES][PLOCK_NODE_MAX];
	size_t n = plock_not_reclaimed(c->v->plocks, late, MAX_NODES);
	if (n == 0 || cl_now_ms() - c->reclaim_since_ms >= ORPHAN_RECLAIM_MAX_MS)
		return 0;
	struct dg_member m[MAX_NODES];
	int q = 0, count = dg_members(c->ls, m, MAX_NODES, &q);
	for (size_t i = 0; i < n && i < MAX_NODES; i++)
		for (int j = 0; j < count; j++)
			if (m[j].state == DG_NODE_UP && strcmp(m[j].name, late[i]) == 0)
				return 1;
	return 0;
}

/* Coordinator: the reclaim window a takeover or move opened ends with the
 * file locks' grace period (every node that was up told its opens and locks,
 * or LOCK_GRACE_MS ran out), or at once when no other node is up to reclaim.
 * The orphans no node opened again are freed then: their openers died with
 * the old coordinator, or were fenced since. */
static void end_reclaim_window(struct cluster *c, int nobody_else)
{
	if (nobody_else || (!plock_in_grace(c->v->plocks) && !live_reclaim_pending(c)))
		volume_end_takeover(c->v);
}

/* Hands the role over: everything durable, the journal clean, MMP released;
 * detached (if any) runs then, with no node attached to the engine. */
static void step_down(struct cluster *c, uint32_t target, void (*detached)(struct cluster *c))
{
	/* Alone, nobody can reclaim an orphan: a clean volume has none left. */
	end_reclaim_window(c, !cl_others_up(c));
	/* Committed while requests still run (group commit), so that the
	 * detach below, with every request stopped, has little left to write. */
	volume_sync(c->v);
	/* A move: the value block is held from before the GOAWAY that wakes
	 * the others, so their reads return the move the moment it is written
	 * below (not across a grow's resize2fs: they would wait that long). */
	int info_held = !detached && info_ensure(c) == 0 && info_hold(c, NULL) == 0;
	to_participant(c, volume_detach_engine);
	if (detached)
		detached(c);
	pthread_mutex_lock(&c->mu);
	uint32_t epoch = c->epoch;
	c->coord_nodeid = 0;
	c->move_target = target;
	c->move_deadline = cl_deadline_in(MOVE_GRACE_MS);
	pthread_mutex_unlock(&c->mu);
	struct coord_info ci = { .epoch = epoch, .nodeid = 0, .port = 0, .move_target = target };
	if (info_held ? info_publish(c, &ci) : info_ensure(c) || info_write(c, &ci))
		csvfs_log(LOG_WARN_L, "could not announce the move in the coordinator value block");
	held_unlock(&c->coord, 0, NULL);
	csvfs_log(LOG_WARN_L, "this node stepped down as coordinator (epoch %u)%s", epoch,
		  target == c->self ? "; taking it again" : target ? "; handing over" : "");
}

void role_step_down(struct cluster *c, uint32_t target)
{
	step_down(c, target, NULL);
}

/* A move to this very node, with resize2fs between detach and attach: the
 * participants find the coordinator again as after any move. */
void role_grow(struct cluster *c)
{
	step_down(c, c->self, grow_detached);
}

/* csvctl maintenance on, on the coordinator: the gate is shut and no file
 * is open (cluster_maintenance.c). The value block says "maintenance"
 * before "coord" goes, so whoever gets "coord" next sees it and lets go. */
void role_enter_maintenance(struct cluster *c)
{
	to_participant(c, volume_detach_engine);
	pthread_mutex_lock(&c->mu);
	uint32_t epoch = c->epoch;
	c->coord_nodeid = 0;
	c->maint_request = 0;
	pthread_mutex_unlock(&c->mu);
	struct coord_info ci = { .epoch = epoch, .flags = INFO_FLAG_MAINTENANCE };
	if (info_ensure(c) || info_write(c, &ci))
		csvfs_log(LOG_ERR_L, "volume %s: could not publish maintenance in the coordinator value block",
			  c->v->uuid);
	held_unlock(&c->coord, 0, NULL);
	csvfs_log(LOG_WARN_L, "volume %s is in maintenance: this node stepped down as coordinator (epoch %u), "
		  "journal clean and MMP released; no node takes the role until csvctl maintenance off",
		  c->v->uuid, epoch);
	pthread_mutex_lock(&c->mu);
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

/* The value block's maintenance flag changed: follow it. What this node
 * cached of the volume is dropped either way (e2fsck may have changed it). */
static void maintenance_follow(struct cluster *c, int on)
{
	if (atomic_load(&c->maintenance) == on)
		return;
	pthread_rwlock_wrlock(&c->role_lock);
	atomic_store(&c->maintenance, on);
	minode_foreach(c->v, minode_to_participant, NULL);
	pthread_rwlock_unlock(&c->role_lock);
	pthread_mutex_lock(&c->mu);
	if (on)
		c->coord_nodeid = 0;
	pthread_mutex_unlock(&c->mu);
	csvfs_log(LOG_WARN_L, on ? "volume %s is in maintenance: requests fail with EBUSY until csvctl maintenance off"
				 : "volume %s: maintenance is over; cached state dropped, a coordinator is elected",
		  c->v->uuid);
	pthread_mutex_lock(&c->mu);
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

/* The "coord" lock is gone with our lineage (dispatch thread). A coordinator
 * whose role lock is gone may not write one more block: another node owns
 * the volume now (role_lose drops the engine). */
void role_coord_lost(struct cl_lockres *r)
{
	if (atomic_load(&r->c->role) == CL_COORDINATOR)
		journal_gate_set(JOURNAL_GATE_CLOSED);
}

/* Our lineage was superseded while we were cut off: another node is the
 * coordinator now. Nothing of ours may reach the LUN any more. */
void role_lose(struct cluster *c)
{
	journal_gate_set(JOURNAL_GATE_CLOSED);
	to_participant(c, volume_abandon_engine);
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

/* How long a probe that read the path back vouches for it: an error of one
 * block (a bad sector) must not hand the role around, nor probe per request. */
#define PATH_READ_OK_MS 250

int role_path_gone(struct cluster *c)
{
	if (atomic_load(&c->role) != CL_COORDINATOR || !iostate_path_down())
		return 0;
	if (atomic_load(&c->path_gone))
		return 1;
	uint64_t now = cl_now_ms();
	if (now - atomic_load(&c->path_read_ok_ms) < PATH_READ_OK_MS)
		return 0;
	if (!iostate_path_confirm()) {
		atomic_store(&c->path_read_ok_ms, now);
		return 0;   /* the path reads: the error was the block's, the caller's to see */
	}
	if (!atomic_exchange(&c->path_gone, 1)) {
		/* What this engine has not journaled is given up from now on: a
		 * request answered "run it elsewhere" must not land later, should
		 * the path come back before the role is gone. */
		journal_gate_set(JOURNAL_GATE_CLOSED);
		csvfs_log(LOG_ERR_L, "volume %s: this coordinator's own path to the LUN failed: it writes "
			  "nothing more and gives the role up to a node with a path", c->v->uuid);
		cl_poke(c);
	}
	return 1;
}

int cluster_rerun_if_path_gone(struct cluster *c, int role, int rc)
{
	return role == CL_COORDINATOR && rc < 0 && rc != -ERESTART && role_path_gone(c) ? -ERESTART : rc;
}

/* Our own path failed (role_path_gone shut the gate): the role goes as a
 * crash would take it — the engine dropped unwritten, the value block says
 * nobody, "coord" released — but this node lives on as a participant,
 * redirected, and does not take the role again while its path is down. Its
 * requests and the others' that failed here run again at the next
 * coordinator, which replays the journal; our own written ranges it did not
 * journal are committed to it again (m->pend). A clean hand-over is not
 * possible: it would write the journal and MMP. */
void role_give_up(struct cluster *c)
{
	to_participant(c, volume_abandon_engine);
	pthread_mutex_lock(&c->mu);
	uint32_t epoch = c->epoch;
	c->coord_nodeid = 0;
	pthread_mutex_unlock(&c->mu);
	struct coord_info ci = { .epoch = epoch };
	if (info_ensure(c) || info_write(c, &ci))
		csvfs_log(LOG_WARN_L, "volume %s: could not clear the coordinator value block", c->v->uuid);
	held_unlock(&c->coord, 0, NULL);
	atomic_store(&c->path_gone, 0);
	pthread_mutex_lock(&c->mu);
	journal_gate_set(c->quorate ? JOURNAL_GATE_OPEN : JOURNAL_GATE_PAUSED);
	c->recheck = 1;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	csvfs_log(LOG_WARN_L, "volume %s: this node gave up the coordinator role (epoch %u) for its failed "
		  "path, its engine dropped unwritten; a node with a path takes over, this node goes on "
		  "redirected", c->v->uuid, epoch);
}

/* ---- the cluster thread ---------------------------------------------------- */

static void try_take_role(struct cluster *c, const struct coord_info *ci)
{
	if (iostate_path_check())
		return;                       /* no coordinator without a path */
	/* Named by a move, this node queues for the role: the old coordinator
	 * releases it right after publishing the move, and the grant comes
	 * then, not at a later look. Anyone else only takes a free role. */
	int rc = held_lock(&c->coord, DG_EX, ci->move_target == c->self ? 0 : DG_NOQUEUE);
	if (rc)
		return;                       /* someone holds it (maybe departed, not yet fenced) */
	/* The value block as it is now that nobody else can write it: the
	 * epoch we follow, and whether a predecessor has to be taken over.
	 * Held until we publish ourselves: the others' reads wait for that. */
	struct coord_info now = *ci;
	int info_held = info_hold(c, &now) == 0;
	if (!info_held)
		now = *ci;
	if (now.flags & INFO_FLAG_MAINTENANCE) {
		if (info_held)
			info_unhold(c);
		held_unlock(&c->coord, 0, NULL);   /* maintenance began meanwhile */
		return;
	}
	if (become_coordinator(c, &now, info_held) != 0) {
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
		c->move_deadline = cl_deadline_in(MOVE_GRACE_MS);
	}
	int waiting = now.tv_sec < c->move_deadline.tv_sec;
	pthread_mutex_unlock(&c->mu);
	return waiting && cl_member_find(c, ci->move_target, NULL, NULL);
}

/* How long this node leaves a vacant role to the others: the node that
 * coordinates fewest volumes takes it, among equals the lowest nodeid.
 * Named by a move, it takes it at once. Alone, it still waits for what it
 * coordinates already: the nodes of a cluster mount a new volume at about
 * the same time, and one that joins within that wait is preferred. */
static unsigned election_defer_ms(struct cluster *c)
{
	struct dg_member m[MAX_NODES];
	int q = 0, n = dg_members(c->ls, m, MAX_NODES, &q);
	unsigned others = 0, lower = 0;
	for (int i = 0; i < n; i++) {
		if (m[i].state != DG_NODE_UP || m[i].nodeid == c->self)
			continue;
		others++;
		lower += m[i].nodeid < c->self;
	}
	unsigned coordinated = control_coordinated_here(c->v->uuid);
	return coordinated * ELECT_STEP_MS + lower * ELECT_STEP_MS / (others + 1);
}

static int election_turn(struct cluster *c, const struct coord_info *ci)
{
	uint64_t now = cl_now_ms();
	if (ci->move_target == c->self)
		return 1;
	if (!c->vacant_since_ms) {
		c->vacant_since_ms = now;
		unsigned defer = election_defer_ms(c);
		if (defer)
			csvfs_log(LOG_INFO_L, "volume %s has no coordinator: this node (%u other volume(s) "
				  "coordinated here) lets the others try for %u ms first", c->v->uuid,
				  control_coordinated_here(c->v->uuid), defer);
	}
	return now - c->vacant_since_ms >= election_defer_ms(c);
}

static void participant_step(struct cluster *c)
{
	struct coord_info ci;
	if (info_ensure(c) != 0 || info_read(c, &ci) != 0)
		return;
	maintenance_follow(c, (ci.flags & INFO_FLAG_MAINTENANCE) != 0);
	if (ci.flags & INFO_FLAG_MAINTENANCE)
		return;
	int connected = conn_is_to(c, &ci);
	struct dg_member mb;
	int live = ci.nodeid && ci.nodeid != c->self && cl_member_find(c, ci.nodeid, NULL, &mb);
	int settled = live && conn_settle(c, &ci, &mb, connected);
	pthread_mutex_lock(&c->mu);
	c->settled = settled;
	pthread_mutex_unlock(&c->mu);
	if (live) {
		c->vacant_since_ms = 0;
		vacancy_follow(c, 0, mb.name);
		return;
	}
	/* No live coordinator: whoever gets "coord" first takes over, the node
	 * coordinating fewest volumes trying first. */
	if (!move_waiting(c, &ci) && election_turn(c, &ci))
		try_take_role(c, &ci);
	if (atomic_load(&c->role) == CL_PARTICIPANT)
		vacancy_follow(c, 1, "");
}

/* A fenced node writes no more: its opens close and its file locks go. */
static void drop_fenced_node(struct cluster *c, struct server *s, const char *name)
{
	server_drop_node(s, name);
	unsigned n = plock_drop_node(c->v->plocks, name);
	if (n)
		csvfs_log(LOG_WARN_L, "node %s is fenced: released its %u file lock range(s)", name, n);
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
				drop_fenced_node(c, s, m[j].name);
}

void *role_thread_main(void *arg)
{
	struct cluster *c = arg;
	unsigned quick_ms = QUICK_MIN_MS;
	pthread_mutex_lock(&c->mu);
	while (!c->stopping) {
		/* A participant without a working link to a live coordinator looks
		 * again soon: a new one publishes itself within milliseconds. */
		int quick = c->recheck || (!c->settled && atomic_load(&c->role) != CL_COORDINATOR);
		if (c->recheck || !quick)
			quick_ms = QUICK_MIN_MS;   /* something changed just now */
		c->recheck = 0;
		if (!quick) {
			struct timespec dl = cl_deadline_in(LOOP_MS * 4);
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
			role_lose(c);
		else if (atomic_load(&c->role) == CL_COORDINATOR && atomic_load(&c->path_gone) && quorate)
			role_give_up(c);
		else if (atomic_load(&c->role) == CL_COORDINATOR && move && quorate)
			role_step_down(c, move);
		pthread_mutex_lock(&c->mu);
		int maint = c->maint_request;
		pthread_mutex_unlock(&c->mu);
		if (atomic_load(&c->role) == CL_COORDINATOR && maint && quorate)
			role_enter_maintenance(c);
		pthread_mutex_lock(&c->mu);
		int grow = c->grow_request;
		c->grow_request = 0;
		pthread_mutex_unlock(&c->mu);
		if (atomic_load(&c->role) == CL_COORDINATOR && grow && quorate)
			role_grow(c);
		if (atomic_load(&c->role) == CL_COORDINATOR) {
			close_fenced_opens(c);
			end_reclaim_window(c, 0);
		}
		else if (quorate && atomic_load(&c->role) == CL_PARTICIPANT)
			participant_step(c);
		if (quick) {
			usleep(quick_ms * 1000);
			quick_ms = quick_ms + QUICK_MIN_MS > QUICK_MAX_MS ? QUICK_MAX_MS : quick_ms + QUICK_MIN_MS;
		}
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* ---- csvctl move ----------------------------------------------------------- */

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

/* Why a move was refused, from its errno alone: a participant that forwarded
 * the move gets only the coordinator's errno, and must say the same. */
static void move_refusal(int rc, const char *target, char *err, size_t errlen)
{
	switch (-rc) {
	case EBUSY:
		snprintf(err, errlen, "a snapshot is in progress on the coordinator; move after it");
		break;
	case EALREADY:
		snprintf(err, errlen, "%s is already the coordinator", target[0] ? target : "this node");
		break;
	case ENOENT:
		if (target[0])
			snprintf(err, errlen, "node %s is not a live member of this volume's cluster", target);
		else
			snprintf(err, errlen, "no other live node to move to");
		break;
	case EHOSTUNREACH:
		snprintf(err, errlen, "the coordinator could not be reached");
		break;
	default:
		snprintf(err, errlen, "the coordinator refused: %s", strerror(-rc));
	}
}

static int move_forward(struct cluster *c, const char *target)
{
	struct rio_writer w;
	struct rio_reply rep;
	struct proto_req q = { .move = { target } };
	rio_writer_init(&w, 0);
	proto_op(OP_MOVE)->put_req(&w, &q);
	int rc = cluster_call_settled(c, OP_MOVE, &w, &rep);
	rio_writer_free(&w);
	if (rc == 0)
		rio_reply_free(&rep);
	return rc == -ERESTART ? -EHOSTUNREACH : rc;
}

int cluster_move(struct cluster *c, const char *target, char *err, size_t errlen)
{
	int rc = 0;
	uint32_t id = 0;
	if (atomic_load(&c->role) != CL_COORDINATOR)
		rc = move_forward(c, target);
	else if (freeze_snapshot_active(c))
		rc = -EBUSY;
	else if (target[0] && strcmp(target, c->o.node) == 0)
		rc = -EALREADY;
	else if (!(id = pick_target(c, target)))
		rc = -ENOENT;
	if (rc) {
		move_refusal(rc, target, err, errlen);
		return rc;
	}
	if (!id)
		return 0;   /* forwarded: the coordinator moves its role */
	pthread_mutex_lock(&c->mu);
	c->move_request = id;
	c->recheck = 1;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	csvfs_log(LOG_WARN_L, "moving the coordinator role to node %u", id);
	return 0;
}
