/* dlm-glue internal: the "cpg" backend's private header. The backend is the
 * replicated lock state machine (lockstate.c)
 * driven by a corosync CPG group, votequorum's verdicts (through the quorum
 * service) and cmap's node list. Design and the reasons for each rule:
 * docs/locking.md, section "The cpg wiring".
 *
 * In short:
 *  - One CPG_TYPE_AGREED group per lockspace ("csvfs:" + volume GUID). Every
 *    delivered CPG event (configuration change, totem ring change, message)
 *    is a "raw event"; every synced member sees the same raw events in the
 *    same order from its join on, so applying them to the same state gives
 *    the same state everywhere.
 *  - The group's state has a lineage (a random id chosen by the founder).
 *    A process founds a lineage only when it is alone in the group; any
 *    other joiner is admitted at its CPG join and installs a snapshot that
 *    the lowest-nodeid synced member stamps with "raw events since your
 *    join", then replays the events it buffered after that stamp.
 *  - Members leave the state machine at their CPG leave; a clean leave
 *    (cpg_leave or the process died while its corosync lives) releases its
 *    locks at once (a FENCED message); a node-down departure keeps its locks
 *    until the fence command succeeds or the self-fence deadline passes,
 *    counted while we are quorate.
 *  - Node-down confchgs are applied at the totem ring change that follows
 *    them, with that ring's sequence number; votequorum verdicts are sent
 *    as QUORUM(ring, quorate) messages so every member applies them at the
 *    same point; a verdict for an older ring is ignored.
 *  - A member whose lineage is not quorate when another partition merges
 *    in is stale: it drops everything (asts get -ENOTCONN) and rejoins
 *    fresh, after its own I/O-drain deadline.
 *
 * The files, top to bottom (each one's functions are declared below under
 * its name):
 *   cpg_backend.c   the ops table: connect, disconnect, members
 *   cpg_lock.c      lock operations: the handle table, dg_lock/convert/
 *                   unlock/cancel as state machine requests, their effects
 *   cpg_corosync.c  corosync: handles, cmap, CPG and quorum callbacks, the
 *                   dispatch thread, reconnecting
 *   cpg_apply.c     a synced member applies raw events to the state machine
 *                   and acts on the effects (membership, quorum)
 *   cpg_lineage.c   the lineage: admitted processes, founding, going stale
 *   cpg_join.c      join and snapshot: the joiner's event buffer, sending and
 *                   installing snapshots
 *   cpg_fence.c     fencing: deadlines, the fence command, FENCED messages
 *   cpg_wire.c      wire format: the message envelope, the ordered out-queue,
 *                   requests in flight, snapshot chunks
 * Everything runs under cpg_ls.mu unless a function says otherwise.
 */
#ifndef CSVFS_DLMGLUE_CPG_INTERNAL_H
#define CSVFS_DLMGLUE_CPG_INTERNAL_H

#include "dlm-glue/backend.h"
#include "dlm-glue/lockstate.h"

#include <corosync/cpg.h>
#include <corosync/quorum.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* ---- constants --------------------------------------------------------------- */

/* the message envelope and the snapshot blob (cpg_wire.c, cpg_join.c) */
#define ENV_MAGIC    0x43534447u /* "CSDG" */
#define ENV_VERSION  1
#define ENV_LEN      24
enum { ENV_LS = 1, ENV_SNAP = 2, ENV_REJECT = 3 };
#define ENV_F_SYNCED 0x1u

#define BLOB_MAGIC   0x43534753u /* "CSGS" */
#define BLOB_VERSION 1
#define SNAP_CHUNK   (128u * 1024u)
#define SNAP_MAX     (256u * 1024u * 1024u)

/* timing and limits */
#define DISPATCH_STACK      (4u * 1024u * 1024u)
#define CONNECT_WAIT_MS     30000
#define JOIN_TIMEOUT_MS     10000
#define JOIN_ATTEMPTS_MAX   60
#define RECONNECT_EVERY_MS  1000
#define RECONNECT_MAX       3600
#define TRY_AGAIN_MAX       200      /* CS_ERR_TRY_AGAIN retries of one call */
#define BACKOFF_MAX_MS      100
#define BUFFER_MAX_EVENTS   200000
#define BUFFER_MAX_BYTES    (256u * 1024u * 1024u)
#define DEFAULT_DRAIN_MS    10000

/* table sizes */
#define LOCK_BUCKETS        4096
#define MAX_NODES           CPG_MEMBERS_MAX

/* ---- byte order and sleeping ------------------------------------------------- */

static inline void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static inline void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- types ------------------------------------------------------------------- */

enum ev_kind { EV_CONFCHG = 1, EV_TOTEM = 2, EV_MSG = 3 };

/* One raw CPG event, copied (a joiner buffers them until its snapshot). */
struct ev {
	struct ev *next;
	int kind;
	uint32_t nodeid, pid;            /* EV_MSG sender */
	uint64_t ring_seq;               /* EV_TOTEM */
	size_t nmember, nleft, njoined;  /* EV_CONFCHG: addrs = member, left, joined */
	struct cpg_address *addrs;
	uint8_t *data;                   /* EV_MSG payload */
	size_t len;
};

/* A delivered message's envelope (cpgb_env_open). */
struct env {
	int type;                        /* ENV_LS, ENV_SNAP, ENV_REJECT */
	uint64_t lineage;
	uint32_t incarnation;            /* the sender's */
	const uint8_t *payload;
	size_t len;
};

/* A process admitted to the lineage (one per nodeid). */
struct adm {
	uint32_t nodeid, pid;
	bool synced;
	uint64_t since_join;   /* raw events since its join, while not synced */
};

struct outmsg {
	struct outmsg *next;
	size_t len;
	uint8_t buf[];
};

struct inflight {
	struct inflight *next;
	uint64_t tag;
	struct ls_msg msg;
};

struct cpg_lock {
	struct dg_lock base;         /* first: the public handle */
	struct cpg_lock *hnext;      /* lockid hash chain */
	uint64_t lockid;
	char name[DG_RESOURCE_MAX];
	unsigned flags;              /* DG_VALBLK of the lock */
	int granted;                 /* LS_MODE_NONE or a mode */
	uint64_t req_tag;            /* LOCK or CONVERT in flight (0: none) */
	uint64_t unlock_tag;
	uint64_t cancel_tag;
	uint8_t lvb[DG_LVB_LEN];     /* last value block seen or written */
};

struct fence_entry {
	uint32_t nodeid, incarnation;
	int64_t deadline;
	int64_t fenced_sent_at;      /* 0: FENCED not sent yet */
	int cmd_state;               /* 0 none, 1 running, 2 ok, 3 failed */
};

struct node_info {
	uint32_t nodeid;
	char name[64];
	char addr[64];
};

enum st {
	ST_CONNECTING = 0,   /* corosync handles being set up */
	ST_JOINING,          /* in the group, waiting for a snapshot */
	ST_SYNCED,           /* following the lineage */
	ST_STALE,            /* lineage dropped; rejoining after the drain deadline */
	ST_DISCONNECTED,     /* corosync gone; reconnecting */
	ST_FAILED,           /* gave up (dg_connect reports it) */
};

struct snap_rx {           /* the snapshot in flight (everyone tracks it) */
	bool active;
	uint32_t nodeid, pid, id, nchunks, next_idx, total;
	size_t ncovered;
	struct cpg_address covered[CPG_MEMBERS_MAX];
	uint8_t *buf;            /* the joiner reassembles; others don't */
	size_t got;
};

struct snap_hdr {
	uint32_t id, idx, nchunks, total, ncovered;
	struct cpg_address covered[CPG_MEMBERS_MAX];
	const uint8_t *data;
	size_t len;
};

struct cpg_ls {
	struct dg_lockspace pub;     /* first */
	struct dg_config cfg;
	char *lockspace_name, *fence_command;
	unsigned deadline_ms;
	unsigned fence_timeout_ms;      /* a fence command running longer is killed */

	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
	bool thread_started;
	int wake_fd;
	bool stop;

	/* corosync */
	cpg_handle_t cpg;
	bool cpg_open;
	int cpg_fd;
	quorum_handle_t qh;
	bool q_open;
	int q_fd;
	struct cpg_name group;
	uint32_t self_nodeid, self_pid;
	int state;
	int fail_status;
	char fail_msg[256];
	int64_t state_since;
	int join_attempts;
	int reconnect_attempts;
	int64_t reconnect_at;

	/* local observations of quorum */
	bool q_have;
	uint32_t q_quorate;
	uint64_t q_ring;
	uint32_t q_members[MAX_NODES];
	size_t q_nmembers;
	uint64_t sent_q_ring;
	int sent_q_quorate;          /* -1: none sent */
	int64_t grace_until;

	/* the lineage */
	struct lockstate *lst;
	uint64_t lineage;
	uint32_t incarnation;
	struct adm adm[CPG_MEMBERS_MAX];
	size_t nadm;
	struct cpg_address present[CPG_MEMBERS_MAX];
	size_t npresent;
	uint32_t down[LS_MAX_CONFCHG];   /* node-down leaves awaiting their ring */
	size_t ndown;
	struct snap_rx snap;
	bool my_snap_pending;
	uint32_t snap_seq;
	bool clean_leave_ctx;            /* the confchg being applied is a clean leave */
	bool replaying;
	int64_t quorum_lost_at;

	/* joiner */
	bool seen_own_join;
	struct ev *buf_head, *buf_tail;
	size_t buf_count, buf_bytes;

	/* fencing */
	struct fence_entry fences[CPG_MEMBERS_MAX];
	size_t nfences;
	int fence_threads;
	uint32_t fenced_nodes[MAX_NODES];   /* fenced and not back: dg_members */
	size_t nfenced_nodes;

	/* cmap */
	struct node_info nodes[MAX_NODES];
	size_t nnodes;
	uint32_t token_ms, consensus_ms;

	/* requests */
	uint64_t next_tag;
	uint64_t next_lockid;
	struct cpg_lock *buckets[LOCK_BUCKETS];
	size_t nlocks;
	struct outmsg *out_head, *out_tail;
	int64_t out_retry_at;
	unsigned out_backoff;
	struct inflight *inflight;

	/* callbacks queued for the dispatch thread */
	struct dg_cbq cbq;
	bool app_quorate;

	/* effects of the current ls_apply_* call */
	struct ls_sink sink;
	struct ls_effect *fx;
	size_t nfx, capfx;
	bool fx_nomem;
};

#define LOG(ls, lvl, ...) dg_logf(&(ls)->cfg, (lvl), __VA_ARGS__)

static inline struct cpg_ls *cpgb_impl(struct dg_lockspace *p)
{
	return (struct cpg_ls *)p;
}

/* ---- cpg_lock.c (lock operations) -------------------------------------------- */

void cpgb_forget_lock(void *owner, struct dg_lock *lk);
void cpgb_orphan_all(struct cpg_ls *ls, const char *why);
void cpgb_own_effect(struct cpg_ls *ls, const struct ls_effect *e);
int cpgb_lock(struct dg_lockspace *p, const char *name, enum dg_mode mode, unsigned flags,
	      dg_ast_fn ast, dg_bast_fn bast, void *arg, struct dg_lock **out);
int cpgb_convert(struct dg_lock *plk, enum dg_mode mode, unsigned flags, const uint8_t *lvb);
int cpgb_unlock(struct dg_lock *plk, unsigned flags, const uint8_t *lvb);
int cpgb_cancel(struct dg_lock *plk);

/* ---- cpg_corosync.c (corosync connection and dispatch thread) ---------------- */

void cpgb_wake(struct cpg_ls *ls);
const char *cpgb_node_name(const struct cpg_ls *ls, uint32_t nodeid);
void cpgb_close_corosync(struct cpg_ls *ls);
int cpgb_open_corosync(struct cpg_ls *ls, char *err, size_t errlen);
/* The CPG group name of a lockspace ("csvfs:<lockspace>"); its length. */
int cpgb_group_name(const char *lockspace, struct cpg_name *out);
void *cpgb_dispatch_main(void *arg);

/* ---- cpg_apply.c (applying raw events) --------------------------------------- */

const struct ls_sink *cpgb_sink_of(struct cpg_ls *ls);
void cpgb_update_app_quorum(struct cpg_ls *ls);
void cpgb_process_effects(struct cpg_ls *ls);
void cpgb_check_apply(struct cpg_ls *ls, int rc, const char *what);
void cpgb_process_synced(struct cpg_ls *ls, const struct ev *e);
void cpgb_post_event(struct cpg_ls *ls);

/* ---- cpg_lineage.c (lineage) ------------------------------------------------- */

const char *cpgb_st_name(int st);
struct adm *cpgb_adm_find(struct cpg_ls *ls, uint32_t nodeid);
void cpgb_adm_remove(struct cpg_ls *ls, uint32_t nodeid);
bool cpgb_adm_add(struct cpg_ls *ls, uint32_t nodeid, uint32_t pid, bool synced);
uint32_t cpgb_designated(struct cpg_ls *ls);
void cpgb_reset_lineage(struct cpg_ls *ls);
void cpgb_set_state(struct cpg_ls *ls, int st);
void cpgb_found_lineage(struct cpg_ls *ls);
void cpgb_go_stale(struct cpg_ls *ls, const char *why);
void cpgb_lost_member_state(struct cpg_ls *ls, const char *why);

/* ---- cpg_join.c (join and snapshot) ------------------------------------------ */

void cpgb_buffer_clear(struct cpg_ls *ls);
void cpgb_send_snapshot(struct cpg_ls *ls);
bool cpgb_track_snap(struct cpg_ls *ls, uint32_t nodeid, uint32_t pid, const struct snap_hdr *h, bool keep_data);
void cpgb_process_joining(struct cpg_ls *ls, const struct ev *e);

/* ---- cpg_fence.c (fencing) --------------------------------------------------- */

void cpgb_fence_remove_upto(struct cpg_ls *ls, uint32_t nodeid, uint32_t inc);
void cpgb_fenced_nodes_set(struct cpg_ls *ls, uint32_t nodeid, bool fenced);
void cpgb_arm_fence(struct cpg_ls *ls, uint32_t nodeid, uint32_t inc);
void cpgb_fence_deadlines_from_now(struct cpg_ls *ls);
void cpgb_run_fencing(struct cpg_ls *ls);

/* ---- cpg_wire.c (wire format) ------------------------------------------------ */

bool cpgb_env_open(const struct ev *e, struct env *env);
void cpgb_out_clear(struct cpg_ls *ls);
void cpgb_out_flush(struct cpg_ls *ls);
int cpgb_send_raw(struct cpg_ls *ls, int type, const uint8_t *payload, size_t len);
int cpgb_send_ls(struct cpg_ls *ls, struct ls_msg *msg);
void cpgb_inflight_delivered(struct cpg_ls *ls, uint64_t tag, bool applied);
void cpgb_send_fenced(struct cpg_ls *ls, uint32_t nodeid, uint32_t incarnation);
void cpgb_send_reject(struct cpg_ls *ls, uint32_t nodeid, uint32_t pid);
bool cpgb_parse_snap(const uint8_t *p, size_t len, struct snap_hdr *h);
bool cpgb_snap_covers(const struct snap_hdr *h, uint32_t nodeid, uint32_t pid);

#endif
