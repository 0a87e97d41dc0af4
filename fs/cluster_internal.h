/* Cluster mode, private to fs/cluster*.c: the state one volume's cluster
 * membership keeps, the lock types, and the functions the files share.
 * fs/cluster.h is the interface the rest of fs uses; docs/cluster.md
 * describes the protocol. */
#ifndef CSVFS_FS_CLUSTER_INTERNAL_H
#define CSVFS_FS_CLUSTER_INTERNAL_H

#include "fs/cluster.h"
#include "fs/ops.h"
#include "fs/proto.h"
#include "fs/server.h"
#include "dlm-glue/dlmglue.h"

#define INFO_MAGIC 0x43535643u       /* "CSVC" */
/* A lock wait's bound when no departed node can be holding the lock
 * (lock_timeout=); c->lock_wait_ms is never below a departed node's release
 * bound, so a dead holder makes a stall, not an EIO. */
#define LOCK_TIMEOUT_MS 30000
#define LOCK_RELEASE_MARGIN_MS 5000
#define CALL_TIMEOUT_MS 30000
#define CONNECT_TIMEOUT_MS 5000
#define LOOP_MS 500
/* A participant without a settled coordinator looks again after QUICK_MIN_MS,
 * then QUICK_MIN_MS longer each time up to QUICK_MAX_MS: a move or takeover
 * is found within milliseconds, a long outage costs few lock round trips. */
#define QUICK_MIN_MS 10
#define QUICK_MAX_MS 200
#define WAIT_COORD_MS 50     /* a waiting request tries again this often */
#define MOVE_GRACE_MS 10000
/* A new coordinator takes only reclaimed file locks for at most this long,
 * or until every live node said it has reclaimed (docs/file-locks.md). */
#define LOCK_GRACE_MS 5000
#define ORPHAN_RECLAIM_MAX_MS 60000   /* orphans wait this long at most for a live node's reclaim */
#define MAX_NODES 64
/* A vacant role: a node lets the others try first for this long per volume
 * it already coordinates, plus a share of it per live node with a lower
 * nodeid (docs/volumes.md, "Which node coordinates"). */
#define ELECT_STEP_MS 1000
/* No node has taken a vacant role for this long: the volume is paused (a
 * move or takeover takes a fraction of it; docs/cluster.md). */
#define VOLUME_PAUSE_MS 2000

/* The value block of "coordinfo". */
struct coord_info {
	uint32_t epoch, nodeid, port, move_target, flags;
};
/* Set by csvctl maintenance on, cleared by off: nobody takes the role. */
#define INFO_FLAG_MAINTENANCE 1u
/* How long csvctl maintenance waits for the cluster to follow. */
#define MAINTENANCE_WAIT_MS 30000

/* ---- lock types (the table is in cluster_locks.c) ----------------------- */

enum cl_lock_kind { CL_LOCK_COORD, CL_LOCK_COORDINFO, CL_LOCK_LAYOUT, CL_LOCK_FREEZE, CL_LOCK_ATTR,
		   CL_LOCK_KINDS };

/* A lock resource: what a lock's callbacks get as their argument. */
struct cl_lockres {
	enum cl_lock_kind kind;
	struct cluster *c;
	uint32_t id;                     /* fills the name pattern (layout: the inode) */
	uint64_t token;                  /* layout: ino << 32 | sequence, names one request */
	struct cl_lockres *next;         /* on the cluster's retired list */
};

struct cl_lock_type {
	const char *name;                /* resource name; "%u" takes the id */
	unsigned modes;                  /* 1 << mode for each mode it is taken in */
	/* Completion of a request or conversion (dispatch thread). */
	void (*ast)(struct cl_lockres *r, int status, const uint8_t *lvb);
	/* Another node wants a conflicting mode: what this node drops (NULL:
	 * nobody ever asks a holder of this type). */
	void (*bast)(struct cl_lockres *r, enum dg_mode blocking);
	/* The lock is gone with our lineage (-ENOTCONN). NULL: nothing but
	 * waking the cluster thread. */
	void (*lost)(struct cl_lockres *r);
};

/* A lock this module waits on and may lose (-ENOTCONN: the lineage it lived
 * in was superseded after a partition). */
struct held_lock {
	struct cl_lockres res;
	struct dg_lock *lk;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int pending, status, lost;
	uint8_t lvb[DG_LVB_LEN];
};

/* Participant: the link to the coordinator; calls hold a reference. */
struct conn {
	struct rio_client *cl;
	unsigned refs;
	int dead;
	uint32_t epoch, nodeid;
	char name[64];
};

struct recall_item {
	struct recall_item *next;
	ext2_ino_t ino;
	uint64_t token;
};

/* The snapshot freeze (cluster_freeze.c, docs/snapshot.md). */
struct freeze {
	pthread_mutex_t mu;              /* everything below but the locks */
	pthread_cond_t cv;
	int admitting;                   /* PR held: changes may start */
	int asked;                       /* a blocking callback came: stop admitting */
	int stopping;
	unsigned changes;                /* changes in flight on this node */
	uint64_t frozen_at_ms;           /* when this node stopped admitting (0: it admits) */
	uint64_t held, first_held_ms;    /* changes held in this freeze; when the first came */
	struct held_lock pr;             /* "freeze" PR while admitting */
	struct held_lock ex;             /* coordinator: "freeze" EX for a snapshot */
	/* Coordinator: the snapshot in progress (one at a time). */
	int snap_active, snap_abort;     /* snap_abort: its requester went away */
	/* A snapshot gave up on its EX request, and even the cancel went
	 * unanswered: the freeze thread unlocks it if it is granted later. */
	int ex_orphan;
	struct cluster_snap_request snap;
	int64_t snap_since, snap_deadline;   /* wall clock, s */
	/* Coordinator: what the nodes report of the snapshot's freeze, while
	 * it thaws (a report outside that window is of no snapshot: dropped). */
	struct freeze_reports {
		int open;
		unsigned n;
		char node[MAX_NODES][64];   /* who reported (names as cluster_opts.node) */
		uint64_t stall_ms;                            /* the longest wait */
		char stall_node[64];
	} reports;
	/* A participant: the snapshot that froze it, as the coordinator said. */
	char seen_name[SNAP_NAME_MAX + 1], seen_requester[64];
	int64_t seen_since, seen_deadline;
	pthread_t thread;
	int running;
};

/* Attribute locks (cluster_attr.c, docs/cluster.md "Attribute caching"):
 * a participant's PR per group of inodes whose attributes (or a directory's
 * names) its kernel may cache, the coordinator's cached EX per group it
 * changed. */
#define ATTR_GROUP 64          /* inode numbers per lock (bits of a uint64_t) */
#define ATTR_BUCKETS 4096
#define ATTR_EX_MAX 16384      /* EX the coordinator keeps at most */
#define ATTR_COOLDOWN_MS 1000  /* a recalled group is not asked for again sooner */
#define ATTR_COOLDOWN_SLOTS 1024
struct attr_lock;
struct attr_drop;
struct attr_cooldown { uint32_t grp; uint64_t until_ms; };
struct attr_cache {
	pthread_mutex_t mu;              /* everything below */
	pthread_cond_t cv;
	struct attr_lock *pr[ATTR_BUCKETS], *ex[ATTR_BUCKETS];
	unsigned npr, nex;
	unsigned pr_max;                 /* groups a participant caches at most (attr_cache=) */
	unsigned ncached;                /* inodes whose attributes the daemon keeps a copy of */
	uint64_t seq;                    /* grants so far: a grant's number orders it */
	struct attr_drop *drops;         /* locks the drop thread is to release, oldest first */
	struct attr_drop **drops_tail;   /* where the next one goes */
	/* The front end's: drops the kernel's cached attributes of a node id. */
	void (*inval)(void *arg, ext2_ino_t ino, uint32_t gen);
	void (*inval_entries)(void *arg);   /* every name the kernel caches (NULL: none cached) */
	void *inval_arg;
	unsigned notifying;              /* drops calling the hooks right now */
	struct attr_cooldown cooldown[ATTR_COOLDOWN_SLOTS];
	uint64_t recalls, ex_requests, ex_waits;   /* for csvctl status */
	pthread_t thread;
	int running, stopping;
};

/* A node's I/O state as this node last heard it (cluster_iostate.c). */
struct cl_io_node {
	struct proto_io_node n;          /* its name and report (n.age_ms unused) */
	uint64_t heard_ms;               /* cl_now_ms() when the report was fresh */
	uint8_t ask;                     /* coordinator: a redirect for it (proto_redirect_ask) */
	uint32_t ask_seconds;
};

struct cluster {
	struct volume *v;
	struct cluster_opts o;
	struct remote_link link;         /* v->remote: ops_remote's way to the coordinator */
	struct dg_lockspace *ls;
	uint32_t self;
	unsigned lock_wait_ms;           /* every lock wait's bound, set once at start */
	uint64_t reclaim_since_ms;       /* coordinator (cluster thread): its reclaim window's start */

	/* Held shared by every request; exclusive while the role changes. */
	pthread_rwlock_t role_lock;
	_Atomic int role;

	pthread_mutex_t mu;              /* everything below */
	pthread_cond_t cv;
	int stopping, recheck, quorate, paused;
	struct timespec paused_since;
	struct conn *conn;               /* participant: the coordinator */
	uint32_t epoch;                  /* of the coordinator we serve or talk to */
	uint32_t coord_nodeid;
	uint32_t move_target;            /* a move in progress, 0 = none */
	uint32_t move_request;           /* coordinator: csvctl move asked for this node */
	int settled;                     /* participant: linked to a live coordinator */
	uint32_t fenced[MAX_NODES];      /* fenced nodes whose opens are to be closed */
	unsigned nfenced;
	struct timespec move_deadline;
	uint64_t next_token;
	struct recall_item *recalls;
	struct server *srv_state;        /* coordinator: opens per node */
	struct rio_server *srv;

	uint64_t vacant_since_ms;        /* role thread: no live coordinator since (0: there is one) */
	/* mu: no node has taken the role for VOLUME_PAUSE_MS (status "paused";
	 * role thread: since when there has been none, 0: there is one) */
	int no_coordinator;
	uint64_t coordless_since_ms;
	/* Coordinator: its own path to the LUN failed; the gate is shut and the
	 * cluster thread gives the role up (role_path_gone, role_give_up). */
	_Atomic int path_gone;
	_Atomic uint64_t path_read_ok_ms; /* a probe read the path back then (role_path_gone) */
	/* In maintenance (docs/volumes.md): every request fails with EBUSY.
	 * Set under role_lock held exclusively on the coordinator; from the
	 * value block on the others. */
	_Atomic int maintenance;
	int maint_request;               /* mu: coordinator: step down into maintenance */
	/* csvctl grow (cluster_grow.c), under mu: asked of the cluster thread;
	 * each grow it ran counts in grow_done with its outcome. */
	int grow_request;
	uint64_t grow_blocks;            /* the size resize2fs is asked for */
	unsigned grow_done;
	int grow_rc;
	char grow_msg[512];

	struct cl_lockres *lockres_retired; /* layout lockres to free (cluster_locks.c) */
	struct cl_lockres *lockres_kept; /* whose unlock failed: freed at stop */

	struct freeze freeze;
	struct attr_cache attr;
	struct held_lock coord;          /* "coord", EX while coordinator */
	struct held_lock info;           /* "coordinfo", NL kept */
	pthread_t thread, recall_thread;
	int threads;

	/* Every node's I/O state (cluster_iostate.c): the coordinator's as each
	 * participant reported it; a participant's as the coordinator answered. */
	pthread_mutex_t io_mu;           /* the three below */
	pthread_cond_t io_cv;
	int io_stop;
	struct cl_io_node io_nodes[MAX_NODES];
	unsigned io_n;
	pthread_t io_thread;
};

/* ---- cluster_role.c: the value block; maintenance ------------------------- */

int info_read(struct cluster *c, struct coord_info *ci);
int info_write(struct cluster *c, const struct coord_info *ci);
/* info_write in two steps, the value block held in EX in between (a role
 * change: the others' reads wait for its outcome). */
int info_hold(struct cluster *c, struct coord_info *ci);
int info_publish(struct cluster *c, const struct coord_info *ci);
/* Takes the coordinfo lock anew when our lineage lost it. */
int info_ensure(struct cluster *c);
/* Coordinator (cluster thread): detach, publish maintenance, release the role. */
void role_enter_maintenance(struct cluster *c);
/* Coordinator (cluster thread): detach, grow_detached, take the role again. */
void role_grow(struct cluster *c);

/* ---- cluster.c: time, wake-ups, membership ------------------------------ */

uint64_t cl_now_ms(void);
struct timespec cl_deadline_in(unsigned ms);
void cl_test_hold(struct cluster *c, const char *env, const char *what, unsigned max_ms);
/* Wakes the cluster thread to look again now. */
void cl_poke(struct cluster *c);
/* A live member with that nodeid (or name); *out gets it. */
int cl_member_find(struct cluster *c, uint32_t nodeid, const char *name, struct dg_member *out);
/* Live members other than this node. */
int cl_others_up(struct cluster *c);

/* ---- cluster_locks.c: locks, through the table of lock types ------------ */

void lockres_init(struct cl_lockres *r, struct cluster *c, enum cl_lock_kind kind, uint32_t id,
		  uint64_t token);
struct cl_lockres *lockres_new(struct cluster *c, enum cl_lock_kind kind, uint32_t id, uint64_t token);
/* r's lock is unlocked (unlock_rc: what dg_unlock said) or its request
 * failed: r is freed once no callback can be running with it. */
void lockres_retire(struct cl_lockres *r, int unlock_rc);
/* After dg_disconnect: no callback runs any more. */
void lockres_free_all(struct cluster *c);
/* Requests r's lock in mode (which its type must list); the type's
 * callbacks get r. */
int cl_lock(struct cl_lockres *r, enum dg_mode mode, unsigned flags, struct dg_lock **out);
/* Takes a lock of that kind and id, waiting for it (no callbacks). */
int cl_lock_wait(struct cluster *c, enum cl_lock_kind kind, uint32_t id, enum dg_mode mode,
		 struct dg_lock **out);
/* Runs what the type does when the lock is lost. */
void cl_lock_lost(struct cl_lockres *r);
/* A wait for a lock of that kind and id in mode has lasted waited_ms: one
 * warning line naming it, why it is wanted (what) and the nodes holding it
 * (dlm-glue's lock state), so that a stall explains itself. */
#define CL_SLOW_LOCK_MS 3000
void cl_warn_slow_lock(struct cluster *c, enum cl_lock_kind kind, uint32_t id, enum dg_mode mode,
		       const char *what, uint64_t waited_ms);

void held_init(struct held_lock *h, struct cluster *c, enum cl_lock_kind kind);
int held_lock(struct held_lock *h, enum dg_mode mode, unsigned flags);
/* held_lock in two steps: the request, then a wait until deadline_ms
 * (cl_now_ms clock) or until stop(arg) (stop may be NULL); a request not
 * granted by then is cancelled and fails -ETIMEDOUT. */
int held_request(struct held_lock *h, enum dg_mode mode, unsigned flags);
int held_wait_until(struct held_lock *h, uint64_t deadline_ms, int (*stop)(void *), void *arg);
int held_convert(struct held_lock *h, enum dg_mode mode, unsigned flags, const uint8_t *lvb);
void held_unlock(struct held_lock *h, unsigned flags, const uint8_t *lvb);
int held_lost(struct held_lock *h);
/* The table's callbacks. */
void held_ast(struct cl_lockres *r, int status, const uint8_t *lvb);
void layout_ast(struct cl_lockres *r, int status, const uint8_t *lvb);
void layout_bast(struct cl_lockres *r, enum dg_mode blocking);
void layout_lost(struct cl_lockres *r);
void role_coord_lost(struct cl_lockres *r);
void freeze_bast(struct cl_lockres *r, enum dg_mode blocking);
void attr_ast(struct cl_lockres *r, int status, const uint8_t *lvb);
void attr_bast(struct cl_lockres *r, enum dg_mode blocking);
void attr_lost(struct cl_lockres *r);

/* ---- cluster_conn.c: the connection to the coordinator ------------------ */

enum rio_log_level;
void conn_rio_log(void *arg, enum rio_log_level level, const char *line);
/* This node is linked to the coordinator ci names, at ci's epoch. */
int conn_is_to(struct cluster *c, const struct coord_info *ci);
/* Connects to the live coordinator mb (unless connected); 1 once the link
 * is up and its peer known. */
int conn_settle(struct cluster *c, const struct coord_info *ci, const struct dg_member *mb,
		int connected);
/* Calls in flight fail (and their requests retry elsewhere); then it goes. */
void conn_retire(struct cluster *c);
/* ---- the participant's side, behind its remote_link (fs/ops.h) ---- */
/* Participant: an RPC to the coordinator, idempotent or not as the
 * protocol's table says (fs/proto.h). -ERESTART when it cannot be reached
 * (the caller leaves and retries), else the operation's result. */
int cluster_call(struct cluster *c, uint16_t op, struct rio_writer *req, struct rio_reply *reply);
int cluster_call_timeout(struct cluster *c, uint16_t op, struct rio_writer *req,
			 struct rio_reply *reply, unsigned timeout_ms);
/* cluster_call for a csvctl request (move, redirect): while the coordinator
 * cannot be reached (a move or takeover in progress, the new connection not
 * up yet), tries again for up to CALL_SETTLE_MS before giving up with
 * -ERESTART: such a request waits out a role change, as file operations do. */
#define CALL_SETTLE_MS 10000
int cluster_call_settled(struct cluster *c, uint16_t op, struct rio_writer *req,
			 struct rio_reply *reply);
/* Participant: holds the inode's layout lock (PR) so written mappings may
 * be cached; a conflicting recall drops the cache and the lock. */
int cluster_layout_hold(struct cluster *c, struct minode *m);
/* Participant: drops the cache and the layout lock (last close). */
void cluster_layout_drop(struct cluster *c, struct minode *m);
/* The epoch of the coordinator this node talks to (participants). */
uint32_t cluster_epoch(struct cluster *c);

/* The running server while this node is the coordinator, else NULL. */
struct server *cluster_server(struct cluster *c);
/* Points the volume's remote_link (fs/ops.h) at this connection. */
void conn_link_init(struct cluster *c);

/* ---- cluster_layout.c: layout locks --------------------------------------- */

void *layout_recall_main(void *arg);
/* Every layout this node holds goes (leaving the cluster). */
void layout_drop_all(struct cluster *c);

/* ---- cluster_attr.c: attribute locks -------------------------------------- */

/* The drop thread (0 or a negative errno); at stop every lock goes. */
/* max_inodes: attr_cache=, rounded up to groups; 0 caches nothing. */
int attr_start(struct cluster *c, unsigned max_inodes);
void attr_stop(struct cluster *c);
/* Adds the attribute locks to csvctl status's JSON (",\"attr_locks\":{...}"). */
size_t attr_status_json(struct cluster *c, char *out, size_t len);

/* ---- cluster_freeze.c: the snapshot freeze --------------------------------- */

/* Starts the freeze thread (it takes PR; changes wait until it has). */
int freeze_start(struct cluster *c);
/* Changes no longer wait; the thread goes and PR with it. */
void freeze_stop(struct cluster *c);
/* Adds the freeze state to csvctl status's JSON (",\"freeze\":{...}"). */
size_t freeze_status_json(struct cluster *c, char *out, size_t len);
/* A snapshot is running on this coordinator. */
int freeze_snapshot_active(struct cluster *c);
/* Coordinator, around a snapshot's thaw: reports are taken from open until
 * close, which waits (wait_ms at most) until every live node has told how
 * long its changes waited, and puts the longest in res. */
void freeze_reports_open(struct cluster *c);
void freeze_reports_close(struct cluster *c, unsigned wait_ms, struct cluster_snap_result *res);
struct proto_snapshot_report;
struct proto_snapshot_info;
/* Coordinator: a node's OP_SNAPSHOT_REPORT; info gets the snapshot in
 * progress. -EREMCHG when this node is not the coordinator. */
int freeze_report_serve(struct cluster *c, const char *node, const struct proto_snapshot_report *r,
			struct proto_snapshot_info *info);

/* ---- cluster_snapshot.c ---------------------------------------------------- */

struct rio_peer;
struct rio_request;
struct rio_response;
/* Coordinator: OP_SNAPSHOT and OP_SNAPSHOT_ABORT from a participant, served
 * outside the role gate (a snapshot lasts; cluster_snapshot takes the role
 * lock itself). */
int snapshot_serve(struct cluster *c, const struct rio_peer *peer, const struct rio_request *req,
		   struct rio_response *resp);

/* Requests with no fields whose reply is an outcome (OP_MAINTENANCE,
 * OP_GROW; cluster_conn.c). ask: from a participant; 0 or the coordinator's
 * negative errno, msg its message or why it could not be asked. serve: the
 * coordinator runs run (on the rio handler thread) and replies. */
int cluster_ask_outcome(struct cluster *c, uint16_t op, unsigned timeout_ms, char *msg, size_t len);
int outcome_serve(struct cluster *c, const struct rio_request *req, struct rio_response *resp,
		  int (*run)(struct cluster *c, char *msg, size_t len));

/* ---- cluster_maintenance.c ------------------------------------------------ */

/* The coordinator's side of OP_MAINTENANCE (for outcome_serve). */
int maintenance_served(struct cluster *c, char *msg, size_t len);

/* ---- cluster_grow.c ------------------------------------------------------- */

/* The coordinator's side of OP_GROW (for outcome_serve). */
int grow_served(struct cluster *c, char *msg, size_t len);
/* With the engine detached (nobody has it): resize2fs on the LUN. */
void grow_detached(struct cluster *c);
/* ---- cluster_iostate.c: every node's I/O state ------------------------------ */

/* Coordinator: OP_IO_STATE, a participant's report; answered with every
 * node's state (outside the role gate: it touches no LUN). */
int io_state_serve(struct cluster *c, const struct rio_peer *peer, const struct rio_request *req,
		   struct rio_response *resp);
/* Coordinator: OP_REDIRECT, csvctl redirect NODE|--all run on a participant. */
int redirect_serve(struct cluster *c, const struct rio_peer *peer, const struct rio_request *req,
		   struct rio_response *resp);
/* The participant's reporter thread (0 or a negative errno) and its end. */
int io_reporter_start(struct cluster *c);
void io_reporter_stop(struct cluster *c);
/* csvctl status's I/O fields for another node, as last heard ("unknown"
 * before its first report); override replaces its io_state. */
void io_node_json(struct cluster *c, const char *node, const char *override, char *out, size_t len);

/* ---- cluster_role.c: roles and the cluster thread ------------------------ */

void *role_thread_main(void *arg);
/* Hands the role over: everything durable, the journal clean, MMP released. */
void role_step_down(struct cluster *c, uint32_t target);
/* The role was taken over while this node was cut off: drop the engine unwritten. */
void role_lose(struct cluster *c);
/* 1 when this node is the coordinator and its own path to the LUN has
 * failed (a probe read confirms it): the first time, its engine's writes
 * stop (the gate shuts) and the cluster thread is woken to give the role up. */
int role_path_gone(struct cluster *c);
/* ... and gives the role up, the engine dropped unwritten (the gate shut). */
void role_give_up(struct cluster *c);

#endif
