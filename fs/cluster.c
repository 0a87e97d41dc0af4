/* Cluster mode (docs/cluster.md): joining and leaving the volume's
 * lockspace, membership and quorum (pausing), the gate every request passes
 * (cluster_enter/leave), and csvctl status. The rest is split by concern:
 *   cluster_role.c    who the coordinator is, election, role changes, the
 *                     cluster thread, csvctl move
 *   cluster_conn.c    participant: the connection to the coordinator, calls,
 *                     reclaim of opens
 *   cluster_layout.c  layout locks, the recall thread, coordinator recalls
 *   cluster_locks.c   the table of lock types; every lock goes through it
 *   cluster_maintenance.c  csvctl maintenance: the open-file check, on/off
 *   cluster_grow.c    csvctl grow: checks, resize2fs with the engine detached
 * cluster_internal.h holds their shared state (struct cluster) and the
 * lock-type structs.
 *
 * Threads: the cluster thread elects, connects, takes over and steps down;
 * the recall thread drops layouts on blocking callbacks; dlm-glue's dispatch
 * thread runs the callbacks, which only record and signal. */
#include "fs/cluster_internal.h"
#include "fs/iostate.h"
#include "redirect-io/rio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint64_t cl_now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Test hooks only: while the file $ENV.NODE exists (ENV names a path),
 * at most max_ms, the caller waits — a node slow at WHAT, as a loaded one
 * can be. One log line when it holds. */
void cl_test_hold(struct cluster *c, const char *env, const char *what, unsigned max_ms)
{
	const char *path = getenv(env);
	char mine[1200];
	if (!path || snprintf(mine, sizeof(mine), "%s.%s", path, c->o.node) >= (int)sizeof(mine) ||
	    access(mine, F_OK) != 0)
		return;
	csvfs_log(LOG_WARN_L, "test hook: holding %s while %s exists (%s)", what, mine, env);
	for (unsigned i = 0; i < max_ms / 100 && access(mine, F_OK) == 0; i++)
		usleep(100 * 1000);
}

struct timespec cl_deadline_in(unsigned ms)
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

void cl_poke(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	c->recheck = 1;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

int cl_member_find(struct cluster *c, uint32_t nodeid, const char *name, struct dg_member *out)
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

int cl_others_up(struct cluster *c)
{
	struct dg_member m[MAX_NODES];
	int q = 0, n = dg_members(c->ls, m, MAX_NODES, &q), others = 0;
	for (int i = 0; i < n; i++)
		others += m[i].state == DG_NODE_UP && m[i].nodeid != c->self;
	return others;
}

/* ---- membership callbacks (dlm-glue's dispatch thread: no blocking) ----- */

static void cb_membership(void *arg)
{
	cl_poke(arg);
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
		 * engine is dropped (role_lose). */
		journal_gate_set(JOURNAL_GATE_CLOSED);
		csvfs_log(LOG_WARN_L, "quorum regained, but this node's coordinator role was taken over");
	} else if (atomic_load(&c->role) == CL_COORDINATOR && atomic_load(&c->path_gone)) {
		/* Our path failed: the engine is given up unwritten (role_give_up). */
		journal_gate_set(JOURNAL_GATE_CLOSED);
		csvfs_log(LOG_WARN_L, "quorum regained; this coordinator gives its role up (its path failed)");
	} else {
		if (journal_gate_get() != JOURNAL_GATE_OPEN)
			journal_gate_set(JOURNAL_GATE_OPEN);
		csvfs_log(LOG_WARN_L, "quorum regained: this node resumes");
	}
}

static void cb_node_down(void *arg, uint32_t nodeid)
{
	csvfs_log(LOG_WARN_L, "node %u left the cluster; its locks hold until it is fenced", nodeid);
	cl_poke(arg);
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
		struct timespec dl = cl_deadline_in(c->o.pause_timeout_ms);
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
	if (atomic_load(&c->maintenance)) {   /* docs/volumes.md: nothing uses the volume */
		pthread_rwlock_unlock(&c->role_lock);
		return -EBUSY;
	}
	return atomic_load(&c->role);
}

int cluster_in_maintenance(struct cluster *c)
{
	return atomic_load(&c->maintenance);
}

void cluster_leave(struct cluster *c)
{
	pthread_rwlock_unlock(&c->role_lock);
}

int cluster_wait_coordinator(struct cluster *c, uint64_t *since_ms)
{
	/* Bounded by time, not by wake-ups: many waiting requests wake each
	 * other, and a count of wake-ups ran out within milliseconds. */
	uint64_t now = cl_now_ms();
	if (atomic_load(&c->maintenance))
		return -EBUSY;
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
	struct timespec dl = cl_deadline_in(WAIT_COORD_MS);
	pthread_cond_timedwait(&c->cv, &c->mu, &dl);
	int stop = c->stopping;
	pthread_mutex_unlock(&c->mu);
	return stop ? -EIO : 0;
}

/* ---- csvctl status --------------------------------------------------------- */

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
	/* paused: without quorum, or the volume without a coordinator */
	int paused = c->paused || c->no_coordinator, connected = c->conn && !c->conn->dead;
	pthread_mutex_unlock(&c->mu);
	int role = atomic_load(&c->role);
	const char *coord_name = "";
	for (int i = 0; i < n; i++)
		if (m[i].nodeid == coord)
			coord_name = m[i].name;
	size_t o = (size_t)snprintf(out, len,
		"\"coordinator\":\"%s\",\"coordinator_nodeid\":%u,\"epoch\":%u,\"this_node\":\"%s\","
		"\"role\":\"%s\",\"quorate\":%s,\"maintenance\":%s,\"nodes\":[",
		coord_name, coord, epoch, c->o.node, role == CL_COORDINATOR ? "coordinator" : "participant",
		q ? "true" : "false", atomic_load(&c->maintenance) ? "true" : "false");
	for (int i = 0; i < n && o + 256 < len; i++) {
		int self = m[i].nodeid == c->self;
		const char *io = m[i].state != DG_NODE_UP ? "unavailable"
				 : self && paused ? "paused"
				 : self && role == CL_PARTICIPANT && !connected ? "unavailable" : NULL;
		/* The coordinator's own data always goes direct (nobody to redirect
		 * to); reasons it holds, a user's lease, apply once it is not.
		 * Another node's state is as it last reported it (cluster_iostate.c). */
		if (!io && (self ? role == CL_COORDINATOR : m[i].nodeid == coord))
			io = "direct";
		char io_json[1024];
		if (self)
			iostate_json(io_json, sizeof(io_json), io);
		else
			io_node_json(c, m[i].name, io, io_json, sizeof(io_json));
		o += (size_t)snprintf(out + o, len - o,
			"%s{\"name\":\"%s\",\"nodeid\":%u,\"this_node\":%s,\"state\":\"%s\",\"role\":\"%s\","
			"\"mounted\":%s,%s}",
			i ? "," : "", m[i].name, m[i].nodeid, self ? "true" : "false", state_name(m[i].state),
			m[i].nodeid == coord ? "coordinator" : "participant",
			m[i].state == DG_NODE_UP ? "true" : "false", io_json);
	}
	if (o + 2 < len)
		o += (size_t)snprintf(out + o, len - o, "]");
	if (o < len)
		o += freeze_status_json(c, out + o, len - o);
	if (o < len)
		attr_status_json(c, out + o, len - o);
}

int cluster_is_member(struct cluster *c, const char *name)
{
	struct dg_member m[MAX_NODES];
	int q = 0, n = dg_members(c->ls, m, MAX_NODES, &q);
	for (int i = 0; i < n; i++)
		if (strcmp(m[i].name, name) == 0)
			return 1;
	return 0;
}

/* ---- start and stop ------------------------------------------------------- */

/* A cluster not yet joined: a participant until the cluster thread finds
 * otherwise. */
static struct cluster *cluster_new(struct volume *v, const struct cluster_opts *o)
{
	struct cluster *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
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
	pthread_mutex_init(&c->io_mu, NULL);
	pthread_cond_init(&c->io_cv, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_cond_init(&c->cv, &ca);
	pthread_condattr_destroy(&ca);
	held_init(&c->coord, c, CL_LOCK_COORD);
	held_init(&c->info, c, CL_LOCK_COORDINFO);
	atomic_store(&c->role, CL_PARTICIPANT);
	c->quorate = 1;
	return c;
}

/* A conflicting holder that died keeps its locks until it is fenced: a
 * wait must outlast that (issue 9: a failure is a stall, not an error). */
static void lock_wait_bound(struct cluster *c)
{
	unsigned floor = c->o.lock_timeout_ms ? c->o.lock_timeout_ms : LOCK_TIMEOUT_MS;
	unsigned release = dg_release_bound_ms(c->ls);
	unsigned dead = release ? release + LOCK_RELEASE_MARGIN_MS : 0;
	c->lock_wait_ms = dead > floor ? dead : floor;
	csvfs_log(LOG_INFO_L, "lock waits bounded by %u ms (lock_timeout %u ms; a dead node's locks are "
		  "released within %u ms)", c->lock_wait_ms, floor, release);
}

int cluster_start(struct volume *v, const struct cluster_opts *o, char *err, size_t errlen)
{
	struct cluster *c = cluster_new(v, o);
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	struct dg_config cfg = {
		.backend = c->o.backend[0] ? c->o.backend : "cpg", .lockspace = v->uuid,
		.fence_command = c->o.fence_command[0] ? c->o.fence_command : NULL,
		.self_fence_deadline_ms = c->o.fence_deadline_ms,
		.fence_timeout_ms = c->o.fence_timeout_ms,
		.cb = { .arg = c, .membership = cb_membership, .node_down = cb_node_down,
			.node_fenced = cb_node_fenced, .quorum = cb_quorum },
		.log = dg_log_to_csvfs,
	};
	v->cluster = c;
	conn_link_init(c);
	int rc = dg_connect(&cfg, &c->ls, err, errlen);
	if (rc == 0) {
		c->self = dg_this_node(c->ls);
		if (o->nodeid && o->nodeid != c->self) {
			snprintf(err, errlen, "this node is corosync node %u, not node %u as configured",
				 c->self, o->nodeid);
			rc = -EINVAL;
		}
	}
	if (rc == 0)
		lock_wait_bound(c);
	if (rc == 0) {
		int q = 0;
		dg_members(c->ls, NULL, 0, &q);
		c->quorate = q;
		/* The coordinator-info lock is the cluster thread's to take (and
		 * take again when a merge supersedes our lineage). */
	}
	if (rc == 0) {
		/* Built now, not on the critical path of a move: the node that
		 * becomes the coordinator starts its server with them, and every
		 * participant reconnects with them. */
		char why[512];
		if (rio_tls_prepare(c->o.cred_dir, why, sizeof(why)) != RIO_OK)
			csvfs_log(LOG_WARN_L, "volume %s: preparing the TLS contexts failed (built again when "
				  "needed): %s", v->uuid, why);
	}
	if (rc == 0 && (rc = freeze_start(c)) != 0)
		snprintf(err, errlen, "cannot start the freeze thread: %s", strerror(-rc));
	if (rc == 0 && (rc = attr_start(c, o->attr_cache_set ? o->attr_cache : ATTR_CACHE_DEFAULT)) != 0)
		snprintf(err, errlen, "cannot start the attribute lock thread: %s", strerror(-rc));
	if (rc == 0 && pthread_create(&c->recall_thread, NULL, layout_recall_main, c) == 0)
		c->threads |= 1;
	if (rc == 0 && pthread_create(&c->thread, NULL, role_thread_main, c) == 0)
		c->threads |= 2;
	if (rc == 0 && (rc = io_reporter_start(c)) != 0)
		snprintf(err, errlen, "cannot start the I/O state reporter: %s", strerror(-rc));
	else if (rc == 0)
		c->threads |= 4;
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
	if (c->threads & 4)
		io_reporter_stop(c);
	freeze_stop(c);
	if (atomic_load(&c->role) == CL_COORDINATOR && c->ls) {
		if (held_lost(&c->coord))
			role_lose(c);
		else if (role_path_gone(c))
			role_give_up(c);   /* a clean hand-over would write the journal */
		else
			role_step_down(c, 0);
	}
	conn_retire(c);
	attr_stop(c);
	layout_drop_all(c);
	if (c->threads & 1) {
		pthread_mutex_lock(&c->mu);
		pthread_cond_broadcast(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->recall_thread, NULL);
	}
	held_unlock(&c->info, 0, NULL);
	if (c->ls)
		dg_disconnect(c->ls);
	lockres_free_all(c);
	v->cluster = NULL;
	v->remote = NULL;
	pthread_rwlock_destroy(&c->role_lock);
	pthread_cond_destroy(&c->io_cv);
	pthread_mutex_destroy(&c->io_mu);
	free(c);
}
