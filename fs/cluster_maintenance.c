/* Cluster mode: csvctl maintenance on|off (docs/volumes.md). On: the
 * coordinator shuts the request gate once no file is open anywhere (checked
 * with no request running), steps down with the engine detached (journal
 * clean, MMP released) and publishes "maintenance" in the coordinator value
 * block, so that nobody takes the role; every node's requests fail with
 * EBUSY. Off: any node clears the flag and the role is elected again. The
 * cluster thread's side is role_enter_maintenance (fs/cluster_role.c). */
#include "fs/cluster_internal.h"
#include "fs/proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct open_report {
	struct server *s;
	const char *node;
	char *out;
	size_t len, used;
	unsigned n;
};

/* This node's own opens on m: the engine's count less the other nodes'. */
static void report_local_opens(struct volume *v, struct minode *m, void *arg)
{
	struct open_report *r = arg;
	unsigned all = minode_open_count(v, m), peers = r->s ? server_peer_opens_on(r->s, m) : 0;
	if (all <= peers)
		return;
	if (r->used < r->len)
		r->used += (size_t)snprintf(r->out + r->used, r->len - r->used, "%s%s inode %u",
					    r->n ? "; " : "", r->node, (unsigned)m->ino);
	r->n += all - peers;
}

/* Every open file of the volume, "NODE inode N; ...": returns how many. */
static unsigned describe_opens(struct cluster *c, char *out, size_t len)
{
	struct server *s = cluster_server(c);
	unsigned n = s ? server_describe_opens(s, out, len) : 0;
	size_t used = strlen(out);
	struct open_report r = { s, c->o.node, out, len, used, n };
	minode_foreach(c->v, report_local_opens, &r);
	return r.n;
}

/* Coordinator: no request runs while the opens are counted (role_lock
 * exclusive); with none, the gate shuts before the next one starts. wait:
 * until the cluster thread has stepped down (not from a rio handler: the
 * step-down waits for the handlers). */
static int coordinator_enter(struct cluster *c, int wait, char *msg, size_t len)
{
	char opens[PROTO_SNAP_MESSAGE_MAX - 256] = "";
	pthread_rwlock_wrlock(&c->role_lock);
	int coordinating = atomic_load(&c->role) == CL_COORDINATOR;
	unsigned n = coordinating ? describe_opens(c, opens, sizeof(opens)) : 0;
	if (coordinating && n == 0)
		atomic_store(&c->maintenance, 1);
	pthread_rwlock_unlock(&c->role_lock);
	if (!coordinating) {
		snprintf(msg, len, "this node stopped coordinating volume %s meanwhile; try again", c->v->uuid);
		return -EAGAIN;
	}
	if (n) {
		snprintf(msg, len, "volume %s has %u open file(s), so maintenance is refused: %s", c->v->uuid, n,
			 opens);
		csvfs_log(LOG_WARN_L, "%s", msg);
		return -EBUSY;
	}
	pthread_mutex_lock(&c->mu);
	c->maint_request = 1;
	c->recheck = 1;
	pthread_cond_broadcast(&c->cv);
	struct timespec dl = cl_deadline_in(MAINTENANCE_WAIT_MS);
	while (wait && atomic_load(&c->role) == CL_COORDINATOR &&
	       pthread_cond_timedwait(&c->cv, &c->mu, &dl) == 0)
		;
	pthread_mutex_unlock(&c->mu);
	if (wait && atomic_load(&c->role) == CL_COORDINATOR) {
		snprintf(msg, len, "volume %s: the coordinator did not step down within %u s", c->v->uuid,
			 MAINTENANCE_WAIT_MS / 1000);
		return -ETIMEDOUT;
	}
	snprintf(msg, len, "volume %s is in maintenance: no node uses it", c->v->uuid);
	return 0;
}

int maintenance_served(struct cluster *c, char *msg, size_t len)
{
	return coordinator_enter(c, 0, msg, len);
}

/* Waits (bounded) until this node sees the volume in maintenance (want 1)
 * or out of it with a coordinator at hand (want 0). */
static int follow_wait(struct cluster *c, int want)
{
	uint64_t until = cl_now_ms() + MAINTENANCE_WAIT_MS;
	while (cl_now_ms() < until) {
		if (want ? cluster_in_maintenance(c) : !cluster_in_maintenance(c) && cluster_ready(c))
			return 0;
		cl_poke(c);
		pthread_mutex_lock(&c->mu);
		struct timespec dl = cl_deadline_in(100);
		pthread_cond_timedwait(&c->cv, &c->mu, &dl);
		pthread_mutex_unlock(&c->mu);
	}
	return -ETIMEDOUT;
}

/* A participant asks the coordinator, then waits to see it here. */
static int participant_enter(struct cluster *c, char *msg, size_t len)
{
	int rc = cluster_ask_outcome(c, OP_MAINTENANCE, MAINTENANCE_WAIT_MS, msg, len);
	if (rc == 0 && (rc = follow_wait(c, 1)) != 0)
		snprintf(msg, len, "volume %s: the coordinator stepped down, but this node did not see the "
			 "maintenance within %u s", c->v->uuid, MAINTENANCE_WAIT_MS / 1000);
	return rc;
}

static int maintenance_off(struct cluster *c, char *msg, size_t len)
{
	struct coord_info ci;
	int rc = info_ensure(c);
	if (rc == 0)
		rc = info_read(c, &ci);
	if (rc) {
		snprintf(msg, len, "volume %s: cannot read the coordinator value block: %s", c->v->uuid,
			 strerror(-rc));
		return rc;
	}
	if (!(ci.flags & INFO_FLAG_MAINTENANCE)) {
		snprintf(msg, len, "volume %s is not in maintenance", c->v->uuid);
		return -EALREADY;
	}
	ci = (struct coord_info){ .epoch = ci.epoch };
	if ((rc = info_write(c, &ci)) != 0) {
		snprintf(msg, len, "volume %s: cannot clear maintenance: %s", c->v->uuid, strerror(-rc));
		return rc;
	}
	csvfs_log(LOG_WARN_L, "volume %s: maintenance ended on request from this node", c->v->uuid);
	if (follow_wait(c, 0) != 0) {
		snprintf(msg, len, "volume %s: maintenance is over, but no coordinator came within %u s "
			 "(is e2fsck still running on the LUN? the daemons' logs say)", c->v->uuid,
			 MAINTENANCE_WAIT_MS / 1000);
		return -ETIMEDOUT;
	}
	snprintf(msg, len, "volume %s: maintenance is over; in use again", c->v->uuid);
	return 0;
}

int cluster_maintenance(struct cluster *c, int on, char *msg, size_t len)
{
	if (!on)
		return maintenance_off(c, msg, len);
	if (cluster_in_maintenance(c)) {
		snprintf(msg, len, "volume %s is already in maintenance", c->v->uuid);
		return 0;
	}
	if (atomic_load(&c->role) == CL_COORDINATOR)
		return coordinator_enter(c, 1, msg, len);
	return participant_enter(c, msg, len);
}
