/* Cluster mode, private to fs/cluster*.c: the state one volume's cluster
 * membership keeps, and the functions the files share. fs/cluster.h is the
 * interface the rest of fs uses; docs/cluster.md describes the protocol.
 *
 * Locks (dlm-glue, one lockspace per volume GUID):
 *   "coord"      EX while this node is the coordinator (design.md §1). Taken
 *                with NOQUEUE by whichever node finds no live coordinator;
 *                a departed holder keeps it until it is fenced, so a new
 *                coordinator never overlaps the old one.
 *   "coordinfo"  its value block says who the coordinator is: magic, epoch,
 *                nodeid, port, and a move target. Every node holds it NL
 *                (keeps the value block), reads it by converting to PR, and
 *                the coordinator writes it by converting EX -> NL.
 *   "L<ino>"     a participant holds PR while it caches written mappings of
 *                ino; the coordinator takes EX (a recall) before a change
 *                that frees or unwrites blocks of ino.
 */
#ifndef CSVFS_FS_CLUSTER_INTERNAL_H
#define CSVFS_FS_CLUSTER_INTERNAL_H

#include "fs/cluster.h"
#include "dlm-glue/dlmglue.h"

#define INFO_MAGIC 0x43535643u       /* "CSVC" */
#define LOCK_TIMEOUT_MS 30000
#define CALL_TIMEOUT_MS 30000
#define CONNECT_TIMEOUT_MS 5000
#define LOOP_MS 500
#define QUICK_MS 100
#define WAIT_COORD_MS 50     /* a waiting request tries again this often */
#define MOVE_GRACE_MS 10000
#define MAX_NODES 64

/* The value block of "coordinfo". */
struct coord_info {
	uint32_t epoch, nodeid, port, move_target;
};

/* A lock this module waits on and may lose (-ENOTCONN: the lineage it lived
 * in was superseded after a partition). */
struct held_lock {
	struct dg_lock *lk;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int pending, status, lost;
	uint8_t lvb[DG_LVB_LEN];
	struct cluster *c;
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

struct cluster {
	struct volume *v;
	struct cluster_opts o;
	struct dg_lockspace *ls;
	uint32_t self;

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

	struct held_lock coord;          /* "coord", EX while coordinator */
	struct held_lock info;           /* "coordinfo", NL kept */
	pthread_t thread, recall_thread;
	int threads;
};

/* ---- cluster.c: time, wake-ups, membership ------------------------------ */

uint64_t cl_now_ms(void);
struct timespec cl_deadline_in(unsigned ms);
/* Wakes the cluster thread to look again now. */
void cl_poke(struct cluster *c);
/* A live member with that nodeid (or name); *out gets it. */
int cl_member_find(struct cluster *c, uint32_t nodeid, const char *name, struct dg_member *out);
/* Live members other than this node. */
int cl_others_up(struct cluster *c);

/* ---- cluster_locks.c: the long-held locks -------------------------------- */

void held_init(struct held_lock *h, struct cluster *c);
int held_lock(struct held_lock *h, struct dg_lockspace *ls, const char *name,
	      enum dg_mode mode, unsigned flags);
int held_convert(struct held_lock *h, enum dg_mode mode, unsigned flags, const uint8_t *lvb);
void held_unlock(struct held_lock *h, unsigned flags, const uint8_t *lvb);
int held_lost(struct held_lock *h);

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

/* ---- cluster_layout.c: layout locks --------------------------------------- */

void *layout_recall_main(void *arg);
void layout_owner_set(struct cluster *c);
/* Every layout this node holds goes (leaving the cluster). */
void layout_drop_all(struct cluster *c);

/* ---- cluster_role.c: roles and the cluster thread ------------------------ */

void *role_thread_main(void *arg);
/* Hands the role over: everything durable, the journal clean, MMP released. */
void role_step_down(struct cluster *c, uint32_t target);
/* The role was taken over while this node was cut off: drop the engine unwritten. */
void role_lose(struct cluster *c);

#endif
