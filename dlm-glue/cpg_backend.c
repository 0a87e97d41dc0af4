/* dlm-glue "cpg" backend: the replicated lock state machine (lockstate.c)
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
 */
#include "dlm-glue/backend.h"
#include "dlm-glue/lockstate.h"

#include <corosync/cmap.h>
#include <corosync/cpg.h>
#include <corosync/quorum.h>
#include <corosync/votequorum.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- constants ------------------------------------------------------------- */

#define ENV_MAGIC    0x43534447u /* "CSDG" */
#define ENV_VERSION  1
#define ENV_LEN      24
enum { ENV_LS = 1, ENV_SNAP = 2, ENV_REJECT = 3 };
#define ENV_F_SYNCED 0x1u

#define BLOB_MAGIC   0x43534753u /* "CSGS" */
#define BLOB_VERSION 1
#define SNAP_CHUNK   (128u * 1024u)
#define SNAP_MAX     (256u * 1024u * 1024u)

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
#define FENCE_CMD_TIMEOUT_MS 60000
#define DEFAULT_DRAIN_MS    10000
#define LOCK_BUCKETS        4096
#define MAX_NODES           CPG_MEMBERS_MAX

/* ---- small helpers ------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
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

/* ---- types ------------------------------------------------------------------------ */

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

static const char *st_name(int st)
{
	static const char *const names[] = { "connecting", "joining", "synced", "stale", "disconnected", "failed" };
	return st >= 0 && st <= ST_FAILED ? names[st] : "?";
}

struct snap_rx {           /* the snapshot in flight (everyone tracks it) */
	bool active;
	uint32_t nodeid, pid, id, nchunks, next_idx, total;
	size_t ncovered;
	struct cpg_address covered[CPG_MEMBERS_MAX];
	uint8_t *buf;            /* the joiner reassembles; others don't */
	size_t got;
};

struct cpg_ls {
	struct dg_lockspace pub;     /* first */
	struct dg_config cfg;
	char *lockspace_name, *fence_command;
	unsigned deadline_ms;

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

static void wake(struct cpg_ls *ls)
{
	uint64_t one = 1;
	ssize_t n = write(ls->wake_fd, &one, sizeof(one));
	(void)n;
}

static const char *node_name(const struct cpg_ls *ls, uint32_t nodeid)
{
	for (size_t i = 0; i < ls->nnodes; i++)
		if (ls->nodes[i].nodeid == nodeid)
			return ls->nodes[i].name;
	return "?";
}

/* ---- lock table ----------------------------------------------------------------- */

static size_t bucket_of(uint64_t lockid)
{
	return (size_t)((lockid * 0x9e3779b97f4a7c15ull) >> 52) & (LOCK_BUCKETS - 1);
}

static struct cpg_lock *lock_find(struct cpg_ls *ls, uint64_t lockid)
{
	for (struct cpg_lock *l = ls->buckets[bucket_of(lockid)]; l; l = l->hnext)
		if (l->lockid == lockid)
			return l;
	return NULL;
}

static void lock_insert(struct cpg_ls *ls, struct cpg_lock *lk)
{
	size_t b = bucket_of(lk->lockid);
	lk->hnext = ls->buckets[b];
	ls->buckets[b] = lk;
	ls->nlocks++;
}

static void lock_remove(struct cpg_ls *ls, struct cpg_lock *lk)
{
	struct cpg_lock **pp = &ls->buckets[bucket_of(lk->lockid)];
	while (*pp && *pp != lk)
		pp = &(*pp)->hnext;
	if (*pp) {
		*pp = lk->hnext;
		ls->nlocks--;
	}
}

static void queue_free(struct cpg_ls *ls, struct cpg_lock *lk)
{
	if (!lk->base.freeing)
		dg_cb_free(&ls->cbq, &lk->base);
}

static void forget_lock(void *owner, struct dg_lock *lk)
{
	lock_remove(owner, (struct cpg_lock *)lk);
}

/* Every handle loses its lock: the lineage it lived in is gone. */
static void orphan_all(struct cpg_ls *ls, const char *why)
{
	size_t n = 0;
	for (size_t b = 0; b < LOCK_BUCKETS; b++) {
		for (struct cpg_lock *lk = ls->buckets[b]; lk; lk = lk->hnext) {
			if (lk->base.dead)
				continue;
			lk->base.dead = true;
			n++;
			if (lk->base.unlocking)
				queue_free(ls, lk);
			else
				dg_cb_ast(&ls->cbq, &lk->base, -ENOTCONN, lk->granted, NULL);
			lk->req_tag = lk->unlock_tag = lk->cancel_tag = 0;
			lk->granted = LS_MODE_NONE;
		}
	}
	if (n)
		LOG(ls, 4, "%zu lock(s) lost: %s", n, why);
}

/* ---- sending ---------------------------------------------------------------------- */

static void out_clear(struct cpg_ls *ls)
{
	while (ls->out_head) {
		struct outmsg *m = ls->out_head;
		ls->out_head = m->next;
		free(m);
	}
	ls->out_tail = NULL;
	while (ls->inflight) {
		struct inflight *f = ls->inflight;
		ls->inflight = f->next;
		free(f);
	}
}

static void out_flush(struct cpg_ls *ls)
{
	if (!ls->cpg_open)
		return;
	if (ls->out_retry_at && dg_now_ms() < ls->out_retry_at)
		return;
	ls->out_retry_at = 0;
	while (ls->out_head) {
		struct outmsg *m = ls->out_head;
		struct iovec iov = { .iov_base = m->buf, .iov_len = m->len };
		cs_error_t err = cpg_mcast_joined(ls->cpg, CPG_TYPE_AGREED, &iov, 1);
		if (err == CS_ERR_TRY_AGAIN) {
			ls->out_backoff = ls->out_backoff ? ls->out_backoff * 2 : 1;
			if (ls->out_backoff > BACKOFF_MAX_MS)
				ls->out_backoff = BACKOFF_MAX_MS;
			ls->out_retry_at = dg_now_ms() + ls->out_backoff;
			return;
		}
		ls->out_backoff = 0;
		if (err != CS_OK) {
			LOG(ls, 3, "cpg_mcast_joined failed (error %d); dropping a %zu-byte message", err, m->len);
		}
		ls->out_head = m->next;
		if (!ls->out_head)
			ls->out_tail = NULL;
		free(m);
	}
}

static int send_raw(struct cpg_ls *ls, int type, const uint8_t *payload, size_t len)
{
	struct outmsg *m = malloc(sizeof(*m) + ENV_LEN + len);
	if (!m)
		return -ENOMEM;
	m->next = NULL;
	m->len = ENV_LEN + len;
	put32(m->buf, ENV_MAGIC);
	m->buf[4] = ENV_VERSION;
	m->buf[5] = (uint8_t)type;
	m->buf[6] = ls->state == ST_SYNCED ? ENV_F_SYNCED : 0;
	m->buf[7] = 0;
	put64(m->buf + 8, ls->lineage);
	put32(m->buf + 16, ls->incarnation);
	put32(m->buf + 20, 0);
	if (len)
		memcpy(m->buf + ENV_LEN, payload, len);
	if (ls->out_tail)
		ls->out_tail->next = m;
	else
		ls->out_head = m;
	ls->out_tail = m;
	out_flush(ls);
	if (ls->out_head)
		wake(ls);
	return 0;
}

/* Sends one state machine request with a fresh tag; it stays in flight until
 * its own delivery is seen. */
static int send_ls(struct cpg_ls *ls, struct ls_msg *msg)
{
	msg->tag = ++ls->next_tag;
	uint8_t buf[LS_MSG_MAX_LEN + LS_LVB_LEN];
	int len = ls_msg_encode(msg, buf, sizeof(buf));
	if (len < 0) {
		LOG(ls, 3, "cannot encode request type %u: %s", msg->type, ls_strerror(len));
		return -EINVAL;
	}
	struct inflight *f = malloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	int rc = send_raw(ls, ENV_LS, buf, (size_t)len);
	if (rc < 0) {
		free(f);
		return rc;
	}
	f->tag = msg->tag;
	f->msg = *msg;
	f->next = ls->inflight;
	ls->inflight = f;
	return 0;
}

/* Our own request came back: done, or (if it was not applied because our
 * incarnation changed under it) sent again with a new tag. */
static void inflight_delivered(struct cpg_ls *ls, uint64_t tag, bool applied)
{
	struct inflight **pp = &ls->inflight;
	while (*pp && (*pp)->tag != tag)
		pp = &(*pp)->next;
	if (!*pp)
		return;
	struct inflight *f = *pp;
	*pp = f->next;
	if (!applied && ls->state == ST_SYNCED) {
		LOG(ls, 5, "request tag %" PRIu64 " was not applied (sent under another incarnation): resending", tag);
		struct ls_msg msg = f->msg;
		send_ls(ls, &msg);
	}
	free(f);
}

static void send_fenced(struct cpg_ls *ls, uint32_t nodeid, uint32_t incarnation)
{
	struct ls_msg msg;
	memset(&msg, 0, sizeof(msg));
	msg.type = LS_MSG_FENCED;
	msg.fenced_nodeid = nodeid;
	msg.fenced_incarnation = incarnation;
	send_ls(ls, &msg);
}

/* ---- cmap -------------------------------------------------------------------------- */

static void read_cmap(struct cpg_ls *ls)
{
	cmap_handle_t h;
	if (cmap_initialize(&h) != CS_OK) {
		LOG(ls, 4, "cmap unavailable: node names and addresses unknown");
		return;
	}
	ls->nnodes = 0;
	for (unsigned i = 0; i < 1024 && ls->nnodes < MAX_NODES; i++) {
		char key[128];
		uint32_t nodeid = 0;
		snprintf(key, sizeof(key), "nodelist.node.%u.nodeid", i);
		if (cmap_get_uint32(h, key, &nodeid) != CS_OK)
			break;
		struct node_info *n = &ls->nodes[ls->nnodes++];
		memset(n, 0, sizeof(*n));
		n->nodeid = nodeid;
		char *s = NULL;
		snprintf(key, sizeof(key), "nodelist.node.%u.name", i);
		if (cmap_get_string(h, key, &s) == CS_OK && s) {
			snprintf(n->name, sizeof(n->name), "%s", s);
			free(s);
			s = NULL;
		}
		snprintf(key, sizeof(key), "nodelist.node.%u.ring0_addr", i);
		if (cmap_get_string(h, key, &s) == CS_OK && s) {
			snprintf(n->addr, sizeof(n->addr), "%s", s);
			free(s);
		}
		if (!n->name[0])
			snprintf(n->name, sizeof(n->name), "%s", n->addr[0] ? n->addr : "?");
	}
	uint32_t v;
	if (cmap_get_uint32(h, "runtime.config.totem.token", &v) == CS_OK)
		ls->token_ms = v;
	if (cmap_get_uint32(h, "runtime.config.totem.consensus", &v) == CS_OK)
		ls->consensus_ms = v;
	cmap_finalize(h);
}

/* ---- effects ------------------------------------------------------------------------ */

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

static const struct ls_sink *sink_of(struct cpg_ls *ls)
{
	ls->sink.fn = fx_sink;
	ls->sink.ctx = ls;
	return &ls->sink;
}

static int errno_of_failure(uint8_t failure)
{
	switch (failure) {
	case LS_FAIL_WOULDBLOCK: return -EAGAIN;
	case LS_FAIL_DEADLOCK: return -EDEADLK;
	case LS_FAIL_UNKNOWN_LOCK: return -ENOENT;
	case LS_FAIL_EXISTS: return -EEXIST;
	case LS_FAIL_BUSY: return -EBUSY;
	case LS_FAIL_NOT_WAITING: return -EALREADY;
	case LS_FAIL_NOSPC: return -ENOSPC;
	default: return -EIO;
	}
}

static struct fence_entry *fence_find(struct cpg_ls *ls, uint32_t nodeid, uint32_t inc)
{
	for (size_t i = 0; i < ls->nfences; i++)
		if (ls->fences[i].nodeid == nodeid && ls->fences[i].incarnation == inc)
			return &ls->fences[i];
	return NULL;
}

static void fence_remove_upto(struct cpg_ls *ls, uint32_t nodeid, uint32_t inc)
{
	size_t j = 0;
	for (size_t i = 0; i < ls->nfences; i++)
		if (!(ls->fences[i].nodeid == nodeid && ls->fences[i].incarnation <= inc))
			ls->fences[j++] = ls->fences[i];
	ls->nfences = j;
}

static void fenced_nodes_set(struct cpg_ls *ls, uint32_t nodeid, bool fenced)
{
	size_t j = 0;
	for (size_t i = 0; i < ls->nfenced_nodes; i++)
		if (ls->fenced_nodes[i] != nodeid)
			ls->fenced_nodes[j++] = ls->fenced_nodes[i];
	ls->nfenced_nodes = j;
	if (fenced && ls->nfenced_nodes < MAX_NODES)
		ls->fenced_nodes[ls->nfenced_nodes++] = nodeid;
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

static void handle_own_effect(struct cpg_ls *ls, const struct ls_effect *e)
{
	struct cpg_lock *lk = lock_find(ls, e->lockid);
	if (!lk || lk->base.dead)
		return;
	switch (e->kind) {
	case LS_EFFECT_GRANT: {
		lk->granted = e->mode;
		lk->req_tag = 0;
		const uint8_t *lvb = NULL;
		if (e->flags & LS_EF_LVB) {
			if (e->flags & LS_EF_LVB_INVALID) {
				LOG(ls, 5, "lock %s: value block invalid (a PW/EX holder was fenced)", lk->name);
				memset(lk->lvb, 0, DG_LVB_LEN);
			} else {
				memcpy(lk->lvb, e->lvb, DG_LVB_LEN);
				lvb = lk->lvb;
			}
		}
		dg_cb_ast(&ls->cbq, &lk->base, 0, e->mode, lvb);
		break;
	}
	case LS_EFFECT_QUEUED:
		if (e->flags & LS_EF_NOT_QUORATE)
			LOG(ls, 6, "lock %s: %s waits for quorum", lk->name, ls_mode_name(e->mode));
		break;
	case LS_EFFECT_BLOCKING:
		dg_cb_bast(&ls->cbq, &lk->base, e->mode);
		break;
	case LS_EFFECT_FAILED: {
		int err = errno_of_failure(e->failure);
		if (e->tag && e->tag == lk->unlock_tag) {
			queue_free(ls, lk);
		} else if (e->tag && e->tag == lk->cancel_tag) {
			lk->cancel_tag = 0; /* nothing was pending any more */
		} else if (e->tag && e->tag == lk->req_tag) {
			lk->req_tag = 0;
			if (e->mode == LS_MODE_NONE) {
				/* a new request that never existed: the handle dies */
				dg_cb_ast(&ls->cbq, &lk->base, err, DG_NL, NULL);
				queue_free(ls, lk);
			} else {
				lk->granted = e->mode;
				dg_cb_ast(&ls->cbq, &lk->base, err, e->mode, NULL);
			}
		}
		break;
	}
	case LS_EFFECT_CANCELED:
		lk->cancel_tag = 0;
		lk->req_tag = 0;
		if (e->mode == LS_MODE_NONE) {
			dg_cb_ast(&ls->cbq, &lk->base, -ECANCELED, DG_NL, NULL);
			queue_free(ls, lk);
		} else {
			lk->granted = e->mode;
			dg_cb_ast(&ls->cbq, &lk->base, -ECANCELED, e->mode, NULL);
		}
		break;
	case LS_EFFECT_UNLOCKED:
		queue_free(ls, lk);
		break;
	default:
		break;
	}
}

static void arm_fence(struct cpg_ls *ls, uint32_t nodeid, uint32_t inc)
{
	if (fence_find(ls, nodeid, inc) || ls->nfences >= CPG_MEMBERS_MAX)
		return;
	struct fence_entry *f = &ls->fences[ls->nfences++];
	memset(f, 0, sizeof(*f));
	f->nodeid = nodeid;
	f->incarnation = inc;
	f->deadline = dg_now_ms() + ls->deadline_ms;
}

static void handle_membership_effect(struct cpg_ls *ls, const struct ls_effect *e)
{
	switch (e->kind) {
	case LS_EFFECT_JOINED:
		fenced_nodes_set(ls, e->nodeid, false);
		LOG(ls, 5, "membership: node %u (%s) joined the lockspace, incarnation %u", e->nodeid,
		    node_name(ls, e->nodeid), e->incarnation);
		dg_cb_event(&ls->cbq, DG_CB_MEMBERSHIP, 0, 0);
		break;
	case LS_EFFECT_DEPARTED:
		dg_cb_event(&ls->cbq, DG_CB_NODE_DOWN, e->nodeid, 0);
		if (!(e->flags & LS_EF_NEEDS_FENCE)) {
			LOG(ls, 5, "membership: node %u (%s) left the lockspace holding no locks",
			    e->nodeid, node_name(ls, e->nodeid));
			dg_cb_event(&ls->cbq, DG_CB_NODE_FENCED, e->nodeid, 0);
			if (!departed_pending(ls))
				dg_cb_event(&ls->cbq, DG_CB_RECOVERY_DONE, 0, 0);
		} else if (ls->clean_leave_ctx) {
			LOG(ls, 5, "membership: node %u (%s) left the lockspace cleanly (its process is gone): "
			    "releasing its locks", e->nodeid, node_name(ls, e->nodeid));
			/* Every member sends it (the first one delivered
			 * releases, the others are ignored), so it does not
			 * depend on any one of us staying. */
			if (!ls->replaying)
				send_fenced(ls, e->nodeid, e->incarnation);
		} else {
			LOG(ls, 4, "membership: node %u (%s) is down holding locks: they stay blocked until it is "
			    "fenced (%s%u ms self-fence deadline while quorate)", e->nodeid, node_name(ls, e->nodeid),
			    ls->fence_command ? "fence command, or the " : "the ", ls->deadline_ms);
			arm_fence(ls, e->nodeid, e->incarnation);
		}
		dg_cb_event(&ls->cbq, DG_CB_MEMBERSHIP, 0, 0);
		break;
	case LS_EFFECT_FENCED:
		fence_remove_upto(ls, e->nodeid, e->incarnation);
		fenced_nodes_set(ls, e->nodeid, ls_live_incarnation(ls->lst, e->nodeid) == 0);
		LOG(ls, 5, "fence: node %u (%s) incarnation %u fenced, its locks are released", e->nodeid,
		    node_name(ls, e->nodeid), e->incarnation);
		dg_cb_event(&ls->cbq, DG_CB_NODE_FENCED, e->nodeid, 0);
		dg_cb_event(&ls->cbq, DG_CB_MEMBERSHIP, 0, 0);
		if (!departed_pending(ls)) {
			LOG(ls, 5, "recovery done: no departed member holds locks");
			dg_cb_event(&ls->cbq, DG_CB_RECOVERY_DONE, 0, 0);
		}
		break;
	case LS_EFFECT_QUORUM: {
		bool q = !(e->flags & LS_EF_NOT_QUORATE);
		LOG(ls, q ? 5 : 4, "quorum: lockspace %s at ring %" PRIu64, q ? "regained quorum" : "lost quorum",
		    ls_ring_seq(ls->lst));
		if (!q) {
			ls->quorum_lost_at = dg_now_ms();
		} else {
			/* A departed node can only have lost contact with a
			 * quorate partition from now on: its deadline counts
			 * from here (design.md §6). */
			int64_t d = dg_now_ms() + ls->deadline_ms;
			for (size_t i = 0; i < ls->nfences; i++)
				if (ls->fences[i].deadline < d && ls->fences[i].fenced_sent_at == 0 &&
				    ls->fences[i].cmd_state != 2)
					ls->fences[i].deadline = d;
		}
		break;
	}
	default:
		break;
	}
}

/* The application hears this node's own votequorum verdict (design.md §6:
 * a node that lost quorum stops its I/O), once it follows the lineage. The
 * lineage's replicated flag, which gates grants, drops at every ring change
 * that loses a member until the verdict for the new ring is delivered; the
 * application is spared that blink. */
static void update_app_quorum(struct cpg_ls *ls)
{
	bool q = ls->state == ST_SYNCED && ls->q_have && ls->q_quorate;
	if (q != ls->app_quorate) {
		ls->app_quorate = q;
		dg_cb_event(&ls->cbq, DG_CB_QUORUM, 0, q);
	}
}

/* Acts on the effects of the last ls_apply_* call, in order. */
static void process_effects(struct cpg_ls *ls)
{
	for (size_t i = 0; i < ls->nfx; i++) {
		const struct ls_effect *e = &ls->fx[i];
		if (e->kind >= LS_EFFECT_JOINED) {
			handle_membership_effect(ls, e);
		} else if (e->nodeid == ls->self_nodeid && e->incarnation == ls->incarnation && ls->incarnation) {
			handle_own_effect(ls, e);
		}
	}
	ls->nfx = 0;
	update_app_quorum(ls);
}

static void lost_member_state(struct cpg_ls *ls, const char *why);

static void check_apply(struct cpg_ls *ls, int rc, const char *what)
{
	if (rc == LS_ERR_NOMEM || ls->fx_nomem) {
		ls->fx_nomem = false;
		lost_member_state(ls, "out of memory applying an event");
	} else if (rc < 0) {
		LOG(ls, 4, "%s rejected by the state machine: %s", what, ls_strerror(rc));
	}
}

/* ---- admitted members ------------------------------------------------------------- */

static struct adm *adm_find(struct cpg_ls *ls, uint32_t nodeid)
{
	for (size_t i = 0; i < ls->nadm; i++)
		if (ls->adm[i].nodeid == nodeid)
			return &ls->adm[i];
	return NULL;
}

static void adm_remove(struct cpg_ls *ls, uint32_t nodeid)
{
	size_t j = 0;
	for (size_t i = 0; i < ls->nadm; i++)
		if (ls->adm[i].nodeid != nodeid)
			ls->adm[j++] = ls->adm[i];
	ls->nadm = j;
}

static bool adm_add(struct cpg_ls *ls, uint32_t nodeid, uint32_t pid, bool synced)
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
static uint32_t designated(struct cpg_ls *ls)
{
	for (size_t i = 0; i < ls->nadm; i++)
		if (ls->adm[i].synced)
			return ls->adm[i].nodeid;
	return 0;
}

/* ---- buffered events (joiner) ------------------------------------------------------ */

static void ev_free(struct ev *e)
{
	if (!e)
		return;
	free(e->addrs);
	free(e->data);
	free(e);
}

static void buffer_clear(struct cpg_ls *ls)
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

/* ---- lineage lifecycle -------------------------------------------------------------- */

static void reset_lineage(struct cpg_ls *ls)
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
	buffer_clear(ls);
	out_clear(ls);
}

static void set_state(struct cpg_ls *ls, int st)
{
	if (ls->state != st)
		LOG(ls, 6, "state %s -> %s", st_name(ls->state), st_name(st));
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

static void found_lineage(struct cpg_ls *ls)
{
	reset_lineage(ls);
	ls->lst = ls_create(NULL);
	if (!ls->lst) {
		LOG(ls, 3, "out of memory creating the lock table");
		set_state(ls, ST_FAILED);
		ls->fail_status = -ENOMEM;
		return;
	}
	uint64_t id = 0;
	while (id == 0)
		if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id))
			id = (uint64_t)dg_now_ms() ^ ((uint64_t)ls->self_pid << 32) ^ ls->self_nodeid;
	ls->lineage = id;
	ls->seen_own_join = true;
	adm_add(ls, ls->self_nodeid, ls->self_pid, true);
	int rc = ls_apply_confchg(ls->lst, 0, NULL, 0, &ls->self_nodeid, 1, sink_of(ls));
	ls->incarnation = ls_live_incarnation(ls->lst, ls->self_nodeid);
	/* Locks of a lineage we never saw may still be held by a node outside
	 * our partition: unless every configured node is in our quorate view,
	 * grant nothing before the self-fence deadline (like DLM's startup
	 * fencing). */
	bool everyone = all_nodes_in_quorum_view(ls);
	ls->grace_until = everyone ? 0 : dg_now_ms() + ls->deadline_ms;
	set_state(ls, ST_SYNCED);
	LOG(ls, 5, "membership: founded lockspace %s (lineage %016" PRIx64 "): alone in the group%s",
	    ls->lockspace_name, ls->lineage,
	    everyone ? "" : "; not every configured node is in our quorum view, so no grants before the self-fence deadline");
	process_effects(ls);
	check_apply(ls, rc, "founding confchg");
}

static void go_stale(struct cpg_ls *ls, const char *why)
{
	if (ls->state != ST_SYNCED)
		return;
	int64_t lost = ls->quorum_lost_at ? ls->quorum_lost_at : ls->state_since;
	int64_t at = lost + ls->deadline_ms;
	LOG(ls, 4, "takeover: %s: dropping this lineage and rejoining fresh in %" PRId64 " ms "
	    "(after our own self-fence deadline)", why, at > dg_now_ms() ? at - dg_now_ms() : 0);
	orphan_all(ls, "our lineage was superseded");
	ls->reconnect_at = at;
	ls->join_attempts = 0;
	set_state(ls, ST_STALE);
	dg_cb_event(&ls->cbq, DG_CB_MEMBERSHIP, 0, 0);
	wake(ls);
}

static void lost_member_state(struct cpg_ls *ls, const char *why)
{
	if (ls->state != ST_SYNCED && ls->state != ST_JOINING)
		return;
	LOG(ls, 3, "%s: leaving the group and rejoining fresh", why);
	orphan_all(ls, why);
	ls->reconnect_at = dg_now_ms();
	set_state(ls, ST_STALE);
	wake(ls);
}

/* ---- snapshots ------------------------------------------------------------------------ */

static void send_snapshot(struct cpg_ls *ls)
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
		send_raw(ls, ENV_SNAP, msg, hdr + n);
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

struct snap_hdr {
	uint32_t id, idx, nchunks, total, ncovered;
	struct cpg_address covered[CPG_MEMBERS_MAX];
	const uint8_t *data;
	size_t len;
};

static bool parse_snap(const uint8_t *p, size_t len, struct snap_hdr *h)
{
	if (len < 20)
		return false;
	h->id = get32(p);
	h->idx = get32(p + 4);
	h->nchunks = get32(p + 8);
	h->total = get32(p + 12);
	h->ncovered = get32(p + 16);
	if (h->ncovered > CPG_MEMBERS_MAX || len < 20 + (size_t)h->ncovered * 8 || h->nchunks == 0 ||
	    h->idx >= h->nchunks || h->total > SNAP_MAX)
		return false;
	for (uint32_t i = 0; i < h->ncovered; i++) {
		h->covered[i].nodeid = get32(p + 20 + 8 * i);
		h->covered[i].pid = get32(p + 24 + 8 * i);
		h->covered[i].reason = 0;
	}
	h->data = p + 20 + (size_t)h->ncovered * 8;
	h->len = len - 20 - (size_t)h->ncovered * 8;
	return true;
}

static bool covers(const struct snap_hdr *h, uint32_t nodeid, uint32_t pid)
{
	for (uint32_t i = 0; i < h->ncovered; i++)
		if (h->covered[i].nodeid == nodeid && h->covered[i].pid == pid)
			return true;
	return false;
}

/* A snapshot chunk, as every synced member tracks it. Returns true when
 * this chunk completed the snapshot. */
static bool track_snap(struct cpg_ls *ls, uint32_t nodeid, uint32_t pid, const struct snap_hdr *h, bool keep_data)
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

/* ---- processing of raw events by a synced member ---------------------------------------- */

static void apply_confchg_synced(struct cpg_ls *ls, const struct ev *e)
{
	const struct cpg_address *member = e->addrs;
	const struct cpg_address *left = member + e->nmember;
	const struct cpg_address *joined = left + e->nleft;
	ls->npresent = e->nmember < CPG_MEMBERS_MAX ? e->nmember : CPG_MEMBERS_MAX;
	memcpy(ls->present, member, ls->npresent * sizeof(*member));

	for (size_t i = 0; i < e->nleft; i++) {
		const struct cpg_address *a = &left[i];
		if (ls->snap.active && ls->snap.nodeid == a->nodeid && ls->snap.pid == a->pid) {
			free(ls->snap.buf);
			memset(&ls->snap, 0, sizeof(ls->snap));
		}
		struct adm *m = adm_find(ls, a->nodeid);
		if (!m || m->pid != a->pid) {
			LOG(ls, 6, "group: process %u/%u left (%s); it was not a lockspace member", a->nodeid, a->pid,
			    reason_name(a->reason));
			continue;
		}
		bool was_synced = m->synced;
		adm_remove(ls, a->nodeid);
		if (a->reason == CPG_REASON_NODEDOWN) {
			LOG(ls, 4, "membership: node %u (%s) pid %u left the group (node down); applied at the next ring",
			    a->nodeid, node_name(ls, a->nodeid), a->pid);
			if (ls->ndown < LS_MAX_CONFCHG)
				ls->down[ls->ndown++] = a->nodeid;
			continue;
		}
		LOG(ls, 5, "membership: node %u (%s) pid %u left the group (%s)%s", a->nodeid, node_name(ls, a->nodeid),
		    a->pid, reason_name(a->reason), was_synced ? "" : " before its snapshot arrived");
		ls->clean_leave_ctx = true;
		int rc = ls_apply_confchg(ls->lst, ls_ring_seq(ls->lst), &a->nodeid, 1, NULL, 0, sink_of(ls));
		process_effects(ls);
		ls->clean_leave_ctx = false;
		check_apply(ls, rc, "leave");
	}
	for (size_t i = 0; i < e->njoined; i++) {
		const struct cpg_address *a = &joined[i];
		if (a->nodeid == ls->self_nodeid && a->pid == ls->self_pid)
			continue;
		if (a->reason == CPG_REASON_NODEUP) {
			if (!ls_quorate(ls->lst)) {
				char why[160];
				snprintf(why, sizeof(why), "partition merge: node %u pid %u came back while our lineage is "
					 "not quorate", a->nodeid, a->pid);
				go_stale(ls, why);
				return;
			}
			LOG(ls, 5, "membership: node %u (%s) pid %u merged back from another partition; it must "
			    "rejoin fresh before it is a member", a->nodeid, node_name(ls, a->nodeid), a->pid);
			continue;
		}
		struct adm *m = adm_find(ls, a->nodeid);
		if (m) {
			LOG(ls, 4, "membership: node %u pid %u joined while pid %u of that node is a member: refused",
			    a->nodeid, a->pid, m->pid);
			if (designated(ls) == ls->self_nodeid && !ls->replaying) {
				uint8_t p[8];
				put32(p, a->nodeid);
				put32(p + 4, a->pid);
				send_raw(ls, ENV_REJECT, p, sizeof(p));
			}
			continue;
		}
		if (!adm_add(ls, a->nodeid, a->pid, false))
			continue;
		LOG(ls, 5, "membership: node %u (%s) pid %u joined the group; snapshot pending", a->nodeid,
		    node_name(ls, a->nodeid), a->pid);
		int rc = ls_apply_confchg(ls->lst, ls_ring_seq(ls->lst), NULL, 0, &a->nodeid, 1, sink_of(ls));
		process_effects(ls);
		check_apply(ls, rc, "join");
	}
}

static void apply_totem_synced(struct cpg_ls *ls, const struct ev *e)
{
	size_t n = ls->ndown;
	int rc = ls_apply_confchg(ls->lst, e->ring_seq, ls->down, n, NULL, 0, sink_of(ls));
	ls->ndown = 0;
	LOG(ls, n ? 4 : 6, "membership: ring %" PRIu64 " with %u node(s)%s", e->ring_seq, e->pid,
	    n ? "; node-down departures applied" : "");
	process_effects(ls);
	check_apply(ls, rc, "ring change");
}

static void apply_msg_synced(struct cpg_ls *ls, const struct ev *e)
{
	if (e->len < ENV_LEN || get32(e->data) != ENV_MAGIC || e->data[4] != ENV_VERSION)
		return;
	int type = e->data[5];
	uint64_t lineage = get64(e->data + 8);
	uint32_t inc = get32(e->data + 16);
	const uint8_t *payload = e->data + ENV_LEN;
	size_t plen = e->len - ENV_LEN;
	bool own = e->nodeid == ls->self_nodeid && e->pid == ls->self_pid;
	if (type == ENV_LS) {
		struct adm *m = adm_find(ls, e->nodeid);
		bool valid = m && m->pid == e->pid && m->synced && lineage == ls->lineage &&
			     inc && inc == ls_live_incarnation(ls->lst, e->nodeid);
		int rc = LS_IGNORED;
		if (valid) {
			rc = ls_apply_message(ls->lst, e->nodeid, payload, plen, sink_of(ls));
			process_effects(ls);
			check_apply(ls, rc, "message");
		}
		if (own) {
			struct ls_msg msg;
			if (ls_msg_decode(payload, plen, &msg) == 0)
				inflight_delivered(ls, msg.tag, valid);
		}
	} else if (type == ENV_SNAP) {
		struct snap_hdr h;
		if (!parse_snap(payload, plen, &h))
			return;
		struct adm *m = adm_find(ls, e->nodeid);
		if (!m || m->pid != e->pid || !m->synced)
			return;
		if (track_snap(ls, e->nodeid, e->pid, &h, false)) {
			for (uint32_t i = 0; i < h.ncovered; i++) {
				struct adm *j = adm_find(ls, h.covered[i].nodeid);
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

static void process_synced(struct cpg_ls *ls, const struct ev *e)
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

/* ---- joiner ----------------------------------------------------------------------------- */

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
	set_state(ls, ST_SYNCED);
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
		process_synced(ls, e);
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
		arm_fence(ls, m->nodeid, m->incarnation);
}

static void process_joining(struct cpg_ls *ls, const struct ev *e)
{
	if (e->kind == EV_CONFCHG) {
		const struct cpg_address *member = e->addrs;
		const struct cpg_address *left = member + e->nmember;
		const struct cpg_address *joined = left + e->nleft;
		bool own_join = false;
		for (size_t i = 0; i < e->njoined; i++)
			own_join |= joined[i].nodeid == ls->self_nodeid && joined[i].pid == ls->self_pid;
		if (!ls->seen_own_join && !own_join)
			return;
		ls->seen_own_join = true;
		bool alone = e->nmember == 1 && member[0].nodeid == ls->self_nodeid && member[0].pid == ls->self_pid;
		if (alone) {
			found_lineage(ls);
			return;
		}
		for (size_t i = 0; i < e->nleft; i++)
			if (ls->snap.active && ls->snap.nodeid == left[i].nodeid && ls->snap.pid == left[i].pid) {
				LOG(ls, 5, "membership: node %u left while sending us its snapshot", left[i].nodeid);
				free(ls->snap.buf);
				memset(&ls->snap, 0, sizeof(ls->snap));
			}
	}
	if (!ls->seen_own_join)
		return;
	if (ls->buf_count >= BUFFER_MAX_EVENTS || ls->buf_bytes >= BUFFER_MAX_BYTES) {
		lost_member_state(ls, "too many events buffered while waiting for a snapshot");
		return;
	}
	struct ev *copy = ev_copy(e);
	if (!copy) {
		lost_member_state(ls, "out of memory buffering events");
		return;
	}
	if (ls->buf_tail)
		ls->buf_tail->next = copy;
	else
		ls->buf_head = copy;
	ls->buf_tail = copy;
	ls->buf_count++;
	ls->buf_bytes += e->len + 64;

	if (e->kind != EV_MSG || e->len < ENV_LEN || get32(e->data) != ENV_MAGIC || e->data[4] != ENV_VERSION)
		return;
	int type = e->data[5];
	const uint8_t *payload = e->data + ENV_LEN;
	size_t plen = e->len - ENV_LEN;
	if (type == ENV_REJECT && plen == 8 && get32(payload) == ls->self_nodeid && get32(payload + 4) == ls->self_pid) {
		snprintf(ls->fail_msg, sizeof(ls->fail_msg), "another process of node %u is already a member of "
			 "lockspace %s", ls->self_nodeid, ls->lockspace_name);
		LOG(ls, 3, "%s", ls->fail_msg);
		ls->fail_status = -EEXIST;
		set_state(ls, ST_FAILED);
		return;
	}
	if (type != ENV_SNAP)
		return;
	struct snap_hdr h;
	if (!parse_snap(payload, plen, &h))
		return;
	if (h.idx == 0 && !covers(&h, ls->self_nodeid, ls->self_pid))
		return;
	if (!track_snap(ls, e->nodeid, e->pid, &h, true))
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
		lost_member_state(ls, why);
	} else if (rc == 0 && ls->lst) {
		ls_foreach_member(ls->lst, arm_snapshot_fences, ls);
	}
}

/* ---- periodic work (dispatch thread, under mu) ------------------------------------------ */

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
	if (send_ls(ls, &msg) == 0) {
		ls->sent_q_ring = ring;
		ls->sent_q_quorate = q;
		LOG(ls, 6, "quorum: votequorum says %s for ring %" PRIu64 "; telling the lockspace",
		    q ? "quorate" : "not quorate", ring);
	}
}

static void *fence_thread(void *arg);

struct fence_job {
	struct cpg_ls *ls;
	uint32_t nodeid, incarnation;
	char name[64];
};

static void run_fencing(struct cpg_ls *ls)
{
	if (ls->state != ST_SYNCED || !ls->lst)
		return;
	int64_t now = dg_now_ms();
	bool quorate = ls_quorate(ls->lst);
	for (size_t i = 0; i < ls->nfences; i++) {
		struct fence_entry *f = &ls->fences[i];
		if (f->fenced_sent_at && now - f->fenced_sent_at < 2000)
			continue;
		if (!quorate && f->deadline > now)
			continue;
		/* fence command: run by the designated member only */
		if (quorate && ls->fence_command && f->cmd_state == 0 && designated(ls) == ls->self_nodeid &&
		    ls->fence_threads < 16) {
			struct fence_job *job = calloc(1, sizeof(*job));
			if (job) {
				job->ls = ls;
				job->nodeid = f->nodeid;
				job->incarnation = f->incarnation;
				snprintf(job->name, sizeof(job->name), "%s", node_name(ls, f->nodeid));
				pthread_t t;
				pthread_attr_t attr;
				pthread_attr_init(&attr);
				pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
				if (pthread_create(&t, &attr, fence_thread, job) == 0) {
					f->cmd_state = 1;
					ls->fence_threads++;
					LOG(ls, 5, "fence: running '%s %u %s'", ls->fence_command, f->nodeid, job->name);
				} else {
					free(job);
				}
				pthread_attr_destroy(&attr);
			}
		}
		bool ok_cmd = f->cmd_state == 2;
		bool past = f->deadline <= now;
		if (!ok_cmd && !(past && quorate))
			continue;
		LOG(ls, 5, "fence: node %u (%s) incarnation %u: %s", f->nodeid, node_name(ls, f->nodeid), f->incarnation,
		    ok_cmd ? "fence command confirmed" : "self-fence deadline passed");
		send_fenced(ls, f->nodeid, f->incarnation);
		f->fenced_sent_at = now;
	}
}

static void *fence_thread(void *arg)
{
	struct fence_job *job = arg;
	struct cpg_ls *ls = job->ls;
	char id[16];
	snprintf(id, sizeof(id), "%u", job->nodeid);
	pthread_mutex_lock(&ls->mu);
	char *cmd = strdup(ls->fence_command);
	pthread_mutex_unlock(&ls->mu);
	int result = 3;
	if (cmd) {
		char script[4096];
		snprintf(script, sizeof(script), "%s \"$@\"", cmd);
		char *argv[] = { "sh", "-c", script, "sh", id, job->name, NULL };
		pid_t pid;
		if (posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ) == 0) {
			int status = 0;
			int64_t end = dg_now_ms() + FENCE_CMD_TIMEOUT_MS;
			pid_t r = 0;
			while ((r = waitpid(pid, &status, WNOHANG)) == 0 && dg_now_ms() < end)
				sleep_ms(50);
			if (r == 0) {
				kill(pid, SIGKILL);
				waitpid(pid, &status, 0);
				status = -1;
			}
			result = r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 2 : 3;
		}
		free(cmd);
	}
	pthread_mutex_lock(&ls->mu);
	struct fence_entry *f = fence_find(ls, job->nodeid, job->incarnation);
	if (f)
		f->cmd_state = result;
	if (result != 2)
		LOG(ls, 4, "fence: command for node %u failed; waiting for the self-fence deadline", job->nodeid);
	ls->fence_threads--;
	pthread_cond_broadcast(&ls->cv);
	wake(ls);
	pthread_mutex_unlock(&ls->mu);
	free(job);
	return NULL;
}

static void post_event(struct cpg_ls *ls)
{
	if (ls->state != ST_SYNCED)
		return;
	if (ls->ndown == 0 && !ls->snap.active && !ls->my_snap_pending && designated(ls) == ls->self_nodeid) {
		bool pending = false;
		for (size_t i = 0; i < ls->nadm; i++)
			pending |= !ls->adm[i].synced;
		if (pending)
			send_snapshot(ls);
	}
	maybe_send_quorum(ls);
	run_fencing(ls);
}

/* ---- CPG and quorum callbacks (dispatch thread) --------------------------------------------- */

static struct cpg_ls *ctx_of(cpg_handle_t h)
{
	void *ctx = NULL;
	if (cpg_context_get(h, &ctx) != CS_OK)
		return NULL;
	return ctx;
}

static void on_event(struct cpg_ls *ls, const struct ev *e)
{
	pthread_mutex_lock(&ls->mu);
	if (ls->state == ST_JOINING)
		process_joining(ls, e);
	else if (ls->state == ST_SYNCED)
		process_synced(ls, e);
	post_event(ls);
	update_app_quorum(ls);
	pthread_mutex_unlock(&ls->mu);
}

static void cpg_deliver_cb(cpg_handle_t h, const struct cpg_name *group, uint32_t nodeid, uint32_t pid,
			   void *msg, size_t len)
{
	struct cpg_ls *ls = ctx_of(h);
	if (!ls)
		return;
	struct ev e = { .kind = EV_MSG, .nodeid = nodeid, .pid = pid, .data = msg, .len = len };
	on_event(ls, &e);
}

static void cpg_confchg_cb(cpg_handle_t h, const struct cpg_name *group,
			   const struct cpg_address *member, size_t nmember,
			   const struct cpg_address *left, size_t nleft,
			   const struct cpg_address *joined, size_t njoined)
{
	struct cpg_ls *ls = ctx_of(h);
	if (!ls)
		return;
	size_t n = nmember + nleft + njoined;
	struct cpg_address *all = malloc((n ? n : 1) * sizeof(*all));
	if (!all) {
		pthread_mutex_lock(&ls->mu);
		lost_member_state(ls, "out of memory in a configuration change");
		pthread_mutex_unlock(&ls->mu);
		return;
	}
	memcpy(all, member, nmember * sizeof(*all));
	memcpy(all + nmember, left, nleft * sizeof(*all));
	memcpy(all + nmember + nleft, joined, njoined * sizeof(*all));
	struct ev e = { .kind = EV_CONFCHG, .nmember = nmember, .nleft = nleft, .njoined = njoined, .addrs = all };
	on_event(ls, &e);
	free(all);
}

static void cpg_totem_cb(cpg_handle_t h, struct cpg_ring_id ring, uint32_t nmember, const uint32_t *members)
{
	struct cpg_ls *ls = ctx_of(h);
	if (!ls)
		return;
	pthread_mutex_lock(&ls->mu);
	/* Local quorum view for this ring, in case votequorum sends nothing
	 * (it notifies on changes of the verdict). */
	if (ring.seq > ls->q_ring && ls->q_open) {
		int q = 0;
		if (quorum_getquorate(ls->qh, &q) == CS_OK) {
			if (!ls->q_have || ls->q_quorate != (q ? 1u : 0u))
				LOG(ls, q ? 5 : 4, "quorum: votequorum: this node is %s (ring %" PRIu64 ", %u node(s))",
				    q ? "quorate" : "NOT quorate", ring.seq, nmember);
			ls->q_ring = ring.seq;
			ls->q_quorate = q ? 1 : 0;
			ls->q_have = true;
			ls->q_nmembers = nmember < MAX_NODES ? nmember : MAX_NODES;
			memcpy(ls->q_members, members, ls->q_nmembers * sizeof(*members));
		}
	}
	pthread_mutex_unlock(&ls->mu);
	/* The ring's representative and size ride in nodeid/pid (log only). */
	struct ev e = { .kind = EV_TOTEM, .ring_seq = ring.seq, .nodeid = ring.nodeid, .pid = nmember };
	on_event(ls, &e);
}

static void quorum_notify_cb(quorum_handle_t h, uint32_t quorate, struct quorum_ring_id ring,
			     uint32_t nmember, const uint32_t *members)
{
	const void *ctx = NULL;
	if (quorum_context_get(h, &ctx) != CS_OK || !ctx)
		return;
	struct cpg_ls *ls = (struct cpg_ls *)ctx;
	pthread_mutex_lock(&ls->mu);
	if (ring.seq >= ls->q_ring) {
		if (!ls->q_have || ls->q_quorate != (quorate ? 1u : 0u))
			LOG(ls, quorate ? 5 : 4, "quorum: votequorum: this node is %s (ring %" PRIu64 ", %u node(s))",
			    quorate ? "quorate" : "NOT quorate", ring.seq, nmember);
		ls->q_ring = ring.seq;
		ls->q_quorate = quorate ? 1 : 0;
		ls->q_have = true;
		ls->q_nmembers = nmember < MAX_NODES ? nmember : MAX_NODES;
		memcpy(ls->q_members, members, ls->q_nmembers * sizeof(*members));
	}
	post_event(ls);
	update_app_quorum(ls);
	pthread_mutex_unlock(&ls->mu);
}

/* ---- corosync connection --------------------------------------------------------------------- */

static void close_corosync(struct cpg_ls *ls)
{
	if (ls->cpg_open) {
		cpg_finalize(ls->cpg);
		ls->cpg_open = false;
		ls->cpg_fd = -1;
	}
	if (ls->q_open) {
		quorum_finalize(ls->qh);
		ls->q_open = false;
		ls->q_fd = -1;
	}
}

static cpg_model_v1_data_t cpg_model = {
	.model = CPG_MODEL_V1,
	.cpg_deliver_fn = cpg_deliver_cb,
	.cpg_confchg_fn = cpg_confchg_cb,
	.cpg_totem_confchg_fn = cpg_totem_cb,
	.flags = 0,
};

static quorum_model_v1_data_t quorum_model = {
	.model = QUORUM_MODEL_V1,
	.quorum_notify_fn = quorum_notify_cb,
	.nodelist_notify_fn = NULL,
};

/* Retries CS_ERR_TRY_AGAIN with a bounded backoff (TRY_AGAIN_MAX tries,
 * 1..BACKOFF_MAX_MS ms apart). Called without mu. */
#define RETRY(var, call) do { \
	unsigned back_ = 1; int tries_ = 0; \
	while (((var) = (call)) == CS_ERR_TRY_AGAIN && ++tries_ < TRY_AGAIN_MAX) { \
		sleep_ms(back_); back_ = back_ * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : back_ * 2; } \
	} while (0)

/* Opens the quorum and CPG handles and joins the group. Called without mu
 * by the dispatch thread or dg_connect (before the thread runs). */
static int open_corosync(struct cpg_ls *ls, char *err, size_t errlen)
{
	quorum_handle_t qh;
	uint32_t qtype = 0;
	cs_error_t e; RETRY(e, quorum_model_initialize(&qh, QUORUM_MODEL_V1, (quorum_model_data_t *)&quorum_model,
						      &qtype, ls));
	if (e != CS_OK) {
		snprintf(err, errlen, "cannot connect to corosync's quorum service (error %d): is corosync running "
			 "with a quorum provider?", e);
		return -ENOTCONN;
	}
	int qfd = -1;
	quorum_fd_get(qh, &qfd);
	RETRY(e, quorum_trackstart(qh, CS_TRACK_CHANGES | CS_TRACK_CURRENT));
	if (e != CS_OK) {
		quorum_finalize(qh);
		snprintf(err, errlen, "quorum_trackstart failed (error %d)", e);
		return -ENOTCONN;
	}
	/* The current verdict arrives at once: have it before we join. */
	for (int i = 0; i < 20; i++) {
		struct pollfd p = { .fd = qfd, .events = POLLIN };
		if (poll(&p, 1, 100) > 0) {
			quorum_dispatch(qh, CS_DISPATCH_ALL);
			pthread_mutex_lock(&ls->mu);
			bool have = ls->q_have;
			pthread_mutex_unlock(&ls->mu);
			if (have)
				break;
		}
	}
	cpg_handle_t h;
	RETRY(e, cpg_model_initialize(&h, CPG_MODEL_V1, (cpg_model_data_t *)&cpg_model, ls));
	if (e != CS_OK) {
		quorum_finalize(qh);
		snprintf(err, errlen, "cannot connect to corosync's CPG service (error %d)", e);
		return -ENOTCONN;
	}
	unsigned int nodeid = 0;
	RETRY(e, cpg_local_get(h, &nodeid));
	int fd = -1;
	if (e == CS_OK)
		e = cpg_fd_get(h, &fd);
	if (e != CS_OK) {
		cpg_finalize(h);
		quorum_finalize(qh);
		snprintf(err, errlen, "cpg_local_get failed (error %d)", e);
		return -ENOTCONN;
	}
	read_cmap(ls);
	pthread_mutex_lock(&ls->mu);
	ls->cpg = h;
	ls->cpg_open = true;
	ls->cpg_fd = fd;
	ls->qh = qh;
	ls->q_open = true;
	ls->q_fd = qfd;
	ls->self_nodeid = nodeid;
	reset_lineage(ls);
	set_state(ls, ST_JOINING);
	pthread_mutex_unlock(&ls->mu);
	RETRY(e, cpg_join(h, &ls->group));
	if (e != CS_OK) {
		pthread_mutex_lock(&ls->mu);
		close_corosync(ls);
		set_state(ls, ST_DISCONNECTED);
		pthread_mutex_unlock(&ls->mu);
		snprintf(err, errlen, "cpg_join of group %s failed (error %d)", ls->group.value, e);
		return e == CS_ERR_EXIST ? -EEXIST : -ENOTCONN;
	}
	pthread_mutex_lock(&ls->mu);
	ls->join_attempts++;
	LOG(ls, 6, "joined CPG group %s as node %u pid %u", ls->group.value, ls->self_nodeid, ls->self_pid);
	pthread_mutex_unlock(&ls->mu);
	return 0;
}

/* ---- dispatch thread -------------------------------------------------------------------------- */

static int64_t next_timer(struct cpg_ls *ls)
{
	int64_t now = dg_now_ms();
	int64_t t = now + 1000;
	if (ls->out_head)
		t = ls->out_retry_at && ls->out_retry_at > now ? ls->out_retry_at : now;
	if ((ls->state == ST_STALE || ls->state == ST_DISCONNECTED) && ls->reconnect_at < t)
		t = ls->reconnect_at;
	if (ls->state == ST_SYNCED) {
		for (size_t i = 0; i < ls->nfences; i++)
			if (ls->fences[i].deadline < t)
				t = ls->fences[i].deadline;
		if (ls->grace_until > now && ls->grace_until < t)
			t = ls->grace_until;
	}
	return t;
}

static void connection_lost(struct cpg_ls *ls, const char *why)
{
	LOG(ls, 3, "membership: lost the connection to corosync (%s): every lock is lost; reconnecting", why);
	orphan_all(ls, "corosync connection lost");
	close_corosync(ls);
	reset_lineage(ls);
	ls->reconnect_at = dg_now_ms() + RECONNECT_EVERY_MS;
	ls->reconnect_attempts = 0;
	set_state(ls, ST_DISCONNECTED);
	dg_cb_event(&ls->cbq, DG_CB_MEMBERSHIP, 0, 0);
}

static void try_rejoin(struct cpg_ls *ls)
{
	/* under mu; drops it around the corosync calls */
	bool disconnected = ls->state == ST_DISCONNECTED;
	if (disconnected && ++ls->reconnect_attempts > RECONNECT_MAX) {
		LOG(ls, 3, "giving up reconnecting to corosync");
		ls->fail_status = -ENOTCONN;
		set_state(ls, ST_FAILED);
		return;
	}
	if (!disconnected && ++ls->join_attempts > JOIN_ATTEMPTS_MAX) {
		LOG(ls, 3, "giving up rejoining the lockspace after %d attempts", JOIN_ATTEMPTS_MAX);
		ls->fail_status = -ETIMEDOUT;
		set_state(ls, ST_FAILED);
		return;
	}
	close_corosync(ls);
	reset_lineage(ls);
	set_state(ls, ST_CONNECTING);
	pthread_mutex_unlock(&ls->mu);
	char err[256];
	int rc = open_corosync(ls, err, sizeof(err));
	pthread_mutex_lock(&ls->mu);
	if (rc < 0) {
		if (ls->reconnect_attempts <= 1 || ls->reconnect_attempts % 30 == 0)
			LOG(ls, 4, "reconnect: %s", err);
		ls->reconnect_at = dg_now_ms() + RECONNECT_EVERY_MS;
		set_state(ls, ST_DISCONNECTED);
	} else {
		LOG(ls, 5, "membership: rejoining lockspace %s fresh", ls->lockspace_name);
	}
}

static void *dispatch_main(void *arg)
{
	struct cpg_ls *ls = arg;
	for (;;) {
		pthread_mutex_lock(&ls->mu);
		if (ls->stop) {
			pthread_mutex_unlock(&ls->mu);
			break;
		}
		int64_t now = dg_now_ms();
		if ((ls->state == ST_STALE || ls->state == ST_DISCONNECTED) && now >= ls->reconnect_at)
			try_rejoin(ls);
		if (ls->state == ST_JOINING && now - ls->state_since > JOIN_TIMEOUT_MS) {
			/* Nobody sent a snapshot (e.g. every other process in
			 * the group is stale or joining too): step out for a
			 * random while so that one of us ends up alone and founds. */
			uint32_t jitter = 0;
			if (getrandom(&jitter, sizeof(jitter), 0) != (ssize_t)sizeof(jitter))
				jitter = (uint32_t)now;
			ls->reconnect_at = now + jitter % 3000;
			LOG(ls, 4, "membership: no snapshot after %d ms; rejoining in %" PRId64 " ms", JOIN_TIMEOUT_MS,
			    ls->reconnect_at - now);
			close_corosync(ls);
			set_state(ls, ST_STALE);
		}
		post_event(ls);
		update_app_quorum(ls);
		out_flush(ls);
		int64_t t = next_timer(ls);
		struct pollfd fds[3];
		int nfds = 0;
		fds[nfds++] = (struct pollfd){ .fd = ls->wake_fd, .events = POLLIN };
		int cpg_idx = -1, q_idx = -1;
		if (ls->cpg_open) {
			cpg_idx = nfds;
			fds[nfds++] = (struct pollfd){ .fd = ls->cpg_fd, .events = POLLIN };
		}
		if (ls->q_open) {
			q_idx = nfds;
			fds[nfds++] = (struct pollfd){ .fd = ls->q_fd, .events = POLLIN };
		}
		cpg_handle_t h = ls->cpg;
		quorum_handle_t qh = ls->qh;
		pthread_mutex_unlock(&ls->mu);

		dg_cb_run(&ls->cbq, 1000);
		int timeout = (int)(t - dg_now_ms());
		if (timeout < 0)
			timeout = 0;
		if (timeout > 1000)
			timeout = 1000;
		int n = poll(fds, (nfds_t)nfds, timeout);
		if (n < 0 && errno != EINTR)
			sleep_ms(10);
		if (n > 0 && (fds[0].revents & POLLIN)) {
			uint64_t v;
			ssize_t r = read(ls->wake_fd, &v, sizeof(v));
			(void)r;
		}
		if (n > 0 && cpg_idx >= 0 && fds[cpg_idx].revents) {
			cs_error_t e = cpg_dispatch(h, CS_DISPATCH_ALL);
			if (e != CS_OK && e != CS_ERR_TRY_AGAIN) {
				pthread_mutex_lock(&ls->mu);
				if (ls->cpg_open && ls->cpg == h) {
					char why[64];
					snprintf(why, sizeof(why), "cpg_dispatch error %d", e);
					connection_lost(ls, why);
				}
				pthread_mutex_unlock(&ls->mu);
			}
		}
		if (n > 0 && q_idx >= 0 && fds[q_idx].revents) {
			cs_error_t e = quorum_dispatch(qh, CS_DISPATCH_ALL);
			if (e != CS_OK && e != CS_ERR_TRY_AGAIN) {
				pthread_mutex_lock(&ls->mu);
				if (ls->q_open && ls->qh == qh) {
					char why[64];
					snprintf(why, sizeof(why), "quorum_dispatch error %d", e);
					connection_lost(ls, why);
				}
				pthread_mutex_unlock(&ls->mu);
			}
		}
		dg_cb_run(&ls->cbq, 1000);
	}
	return NULL;
}

/* ---- public operations ------------------------------------------------------------------------- */

static struct cpg_ls *impl(struct dg_lockspace *p)
{
	return (struct cpg_ls *)p;
}

static void destroy(struct cpg_ls *ls)
{
	close_corosync(ls);
	reset_lineage(ls);
	for (size_t b = 0; b < LOCK_BUCKETS; b++) {
		while (ls->buckets[b]) {
			struct cpg_lock *lk = ls->buckets[b];
			ls->buckets[b] = lk->hnext;
			dg_lock_base_release(&lk->base);
			free(lk);
		}
	}
	dg_cb_clear(&ls->cbq);
	free(ls->fx);
	if (ls->wake_fd >= 0)
		close(ls->wake_fd);
	pthread_mutex_destroy(&ls->mu);
	pthread_cond_destroy(&ls->cv);
	free(ls->lockspace_name);
	free(ls->fence_command);
	free(ls);
}

static bool lockspace_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 100)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return true;
}

static int cpg_connect(const struct dg_config *cfg, struct dg_lockspace **out, char *err, size_t errlen)
{
	char scratch[256];
	if (!err || !errlen) {
		err = scratch;
		errlen = sizeof(scratch);
	}
	if (!cfg->lockspace || !lockspace_name_ok(cfg->lockspace)) {
		snprintf(err, errlen, "lockspace name must be 1-100 printable characters (the volume GUID)");
		return -EINVAL;
	}
	struct cpg_ls *ls = calloc(1, sizeof(*ls));
	if (!ls) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ls->cfg = *cfg;
	ls->lockspace_name = strdup(cfg->lockspace);
	ls->fence_command = cfg->fence_command && cfg->fence_command[0] ? strdup(cfg->fence_command) : NULL;
	ls->cfg.lockspace = ls->lockspace_name;
	ls->cfg.fence_command = ls->fence_command;
	ls->cfg.backend = "cpg";
	ls->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ls->cpg_fd = ls->q_fd = -1;
	ls->self_pid = (uint32_t)getpid();
	ls->sent_q_quorate = -1;
	pthread_mutex_init(&ls->mu, NULL);
	dg_cbq_init(&ls->cbq, &ls->mu, &ls->cfg, forget_lock, ls);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ls->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (!ls->lockspace_name || ls->wake_fd < 0 || (cfg->fence_command && cfg->fence_command[0] && !ls->fence_command)) {
		snprintf(err, errlen, "out of memory");
		destroy(ls);
		return -ENOMEM;
	}
	int n = snprintf(ls->group.value, CPG_MAX_NAME_LENGTH, "csvfs:%s", cfg->lockspace);
	ls->group.length = (uint32_t)n;

	int rc = open_corosync(ls, err, errlen);
	if (rc < 0) {
		LOG(ls, 3, "%s", err);
		destroy(ls);
		return rc;
	}
	/* Deadline: the departed node's failure detection (token +
	 * consensus) plus its I/O drain (docs/locking.md). */
	unsigned detect = ls->token_ms + ls->consensus_ms;
	ls->deadline_ms = cfg->self_fence_deadline_ms ? cfg->self_fence_deadline_ms : detect + DEFAULT_DRAIN_MS;
	if (ls->deadline_ms <= detect)
		LOG(ls, 4, "self-fence deadline %u ms does not exceed failure detection (token %u + consensus %u ms): "
		    "a departed node may still be doing I/O when its locks are released", ls->deadline_ms,
		    ls->token_ms, ls->consensus_ms);
	LOG(ls, 6, "lockspace %s: group %s, node %u (%s), self-fence deadline %u ms (detection %u ms)",
	    ls->lockspace_name, ls->group.value, ls->self_nodeid, node_name(ls, ls->self_nodeid), ls->deadline_ms, detect);

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, DISPATCH_STACK);
	rc = pthread_create(&ls->thread, &attr, dispatch_main, ls);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start the dispatch thread: %s", strerror(rc));
		destroy(ls);
		return -rc;
	}
	ls->thread_started = true;

	/* Wait (bounded) until we follow the lineage. */
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += CONNECT_WAIT_MS / 1000;
	pthread_mutex_lock(&ls->mu);
	int w = 0;
	while (ls->state != ST_SYNCED && ls->state != ST_FAILED && w == 0)
		w = pthread_cond_timedwait(&ls->cv, &ls->mu, &dl);
	int st = ls->state;
	int fail = ls->fail_status;
	char msg[256];
	snprintf(msg, sizeof(msg), "%s", ls->fail_msg);
	pthread_mutex_unlock(&ls->mu);
	if (st != ST_SYNCED) {
		if (st == ST_FAILED)
			snprintf(err, errlen, "%s", msg[0] ? msg : "could not join the lockspace");
		else
			snprintf(err, errlen, "lockspace %s: not joined within %d s (state %s)", cfg->lockspace,
				 CONNECT_WAIT_MS / 1000, st_name(st));
		pthread_mutex_lock(&ls->mu);
		ls->stop = true;
		pthread_mutex_unlock(&ls->mu);
		wake(ls);
		pthread_join(ls->thread, NULL);
		destroy(ls);
		return st == ST_FAILED && fail ? fail : -ETIMEDOUT;
	}
	*out = &ls->pub;
	return 0;
}

static void cpg_disconnect(struct dg_lockspace *p)
{
	struct cpg_ls *ls = impl(p);
	pthread_mutex_lock(&ls->mu);
	ls->stop = true;
	pthread_mutex_unlock(&ls->mu);
	wake(ls);
	if (ls->thread_started)
		pthread_join(ls->thread, NULL);
	pthread_mutex_lock(&ls->mu);
	/* leaving the group (cpg_finalize) releases our locks: the others see
	 * a clean leave */
	if (ls->cpg_open)
		LOG(ls, 5, "membership: leaving lockspace %s", ls->lockspace_name);
	close_corosync(ls);
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += FENCE_CMD_TIMEOUT_MS / 1000 + 5;
	int w = 0;
	while (ls->fence_threads > 0 && w == 0)
		w = pthread_cond_timedwait(&ls->cv, &ls->mu, &dl);
	int left = ls->fence_threads;
	pthread_mutex_unlock(&ls->mu);
	if (left > 0) {
		LOG(ls, 3, "%d fence command(s) still running at disconnect; leaking the lockspace", left);
		return;
	}
	destroy(ls);
}

static uint32_t cpg_this_node(struct dg_lockspace *p)
{
	struct cpg_ls *ls = impl(p);
	pthread_mutex_lock(&ls->mu);
	uint32_t n = ls->self_nodeid;
	pthread_mutex_unlock(&ls->mu);
	return n;
}

struct members_ctx {
	struct cpg_ls *ls;
	struct dg_member *out;
	size_t max, n;
};

static void fill_member(struct members_ctx *c, uint32_t nodeid, enum dg_node_state st)
{
	if (c->n < c->max && c->out) {
		struct dg_member *m = &c->out[c->n];
		memset(m, 0, sizeof(*m));
		m->nodeid = nodeid;
		m->state = st;
		for (size_t i = 0; i < c->ls->nnodes; i++)
			if (c->ls->nodes[i].nodeid == nodeid) {
				snprintf(m->name, sizeof(m->name), "%s", c->ls->nodes[i].name);
				snprintf(m->address, sizeof(m->address), "%s", c->ls->nodes[i].addr);
			}
	}
	c->n++;
}

static void visit_member(void *ctx, const struct ls_member_info *m)
{
	fill_member(ctx, m->nodeid, m->departed ? DG_NODE_DEPARTED : DG_NODE_UP);
}

static int cpg_members(struct dg_lockspace *p, struct dg_member *out, size_t max, int *quorate)
{
	struct cpg_ls *ls = impl(p);
	pthread_mutex_lock(&ls->mu);
	struct members_ctx c = { .ls = ls, .out = out, .max = max };
	if (ls->state == ST_SYNCED && ls->lst) {
		ls_foreach_member(ls->lst, visit_member, &c);
		for (size_t i = 0; i < ls->nfenced_nodes; i++)
			fill_member(&c, ls->fenced_nodes[i], DG_NODE_FENCED);
	}
	if (quorate)
		*quorate = ls->state == ST_SYNCED && ls->q_have && ls->q_quorate;
	pthread_mutex_unlock(&ls->mu);
	return (int)(c.n > (size_t)INT32_MAX ? INT32_MAX : c.n);
}

static uint8_t ls_flags_of(unsigned flags)
{
	return (uint8_t)((flags & DG_NOQUEUE ? LS_LKF_NOQUEUE : 0) | (flags & DG_VALBLK ? LS_LKF_VALBLK : 0));
}

static int cpg_lock(struct dg_lockspace *p, const char *name, enum dg_mode mode, unsigned flags,
		    dg_ast_fn ast, dg_bast_fn bast, void *arg, struct dg_lock **out)
{
	struct cpg_ls *ls = impl(p);
	if (flags & ~(DG_NOQUEUE | DG_VALBLK))
		return -EINVAL;
	struct cpg_lock *lk = calloc(1, sizeof(*lk));
	if (!lk)
		return -ENOMEM;
	snprintf(lk->name, sizeof(lk->name), "%s", name);
	dg_lock_init(&lk->base, p, ast, bast, arg);
	lk->flags = flags & DG_VALBLK;
	lk->granted = LS_MODE_NONE;
	pthread_mutex_lock(&ls->mu);
	if (ls->state != ST_SYNCED) {
		pthread_mutex_unlock(&ls->mu);
		free(lk);
		return -ENOTCONN;
	}
	lk->lockid = ++ls->next_lockid;
	struct ls_msg msg;
	memset(&msg, 0, sizeof(msg));
	msg.type = LS_MSG_LOCK;
	msg.mode = (uint8_t)mode;
	msg.flags = ls_flags_of(flags);
	msg.lockid = lk->lockid;
	msg.name_len = (uint8_t)strlen(name);
	memcpy(msg.name, name, msg.name_len);
	int rc = send_ls(ls, &msg);
	if (rc < 0) {
		pthread_mutex_unlock(&ls->mu);
		free(lk);
		return rc;
	}
	lk->req_tag = msg.tag;
	lock_insert(ls, lk);
	*out = &lk->base;
	pthread_mutex_unlock(&ls->mu);
	return 0;
}

static int cpg_convert(struct dg_lock *plk, enum dg_mode mode, unsigned flags, const uint8_t *lvb)
{
	struct cpg_lock *lk = (struct cpg_lock *)plk;
	struct cpg_ls *ls = impl(plk->ls);
	flags &= ~DG_CONVERT;
	if (flags & ~(DG_NOQUEUE | DG_VALBLK))
		return -EINVAL;
	pthread_mutex_lock(&ls->mu);
	int rc = 0;
	if (lk->base.dead || ls->state != ST_SYNCED)
		rc = -ENOTCONN;
	else if (lk->base.unlocking || lk->base.freeing)
		rc = -EINVAL;
	else if (lk->req_tag || lk->granted == LS_MODE_NONE)
		rc = -EBUSY;
	if (rc == 0) {
		struct ls_msg msg;
		memset(&msg, 0, sizeof(msg));
		msg.type = LS_MSG_CONVERT;
		msg.mode = (uint8_t)mode;
		msg.flags = ls_flags_of(flags | lk->flags);
		if (lvb)
			memcpy(lk->lvb, lvb, DG_LVB_LEN);
		memcpy(msg.lvb, lk->lvb, LS_LVB_LEN);
		msg.lockid = lk->lockid;
		rc = send_ls(ls, &msg);
		if (rc == 0)
			lk->req_tag = msg.tag;
	}
	pthread_mutex_unlock(&ls->mu);
	return rc;
}

static int cpg_unlock(struct dg_lock *plk, unsigned flags, const uint8_t *lvb)
{
	struct cpg_lock *lk = (struct cpg_lock *)plk;
	struct cpg_ls *ls = impl(plk->ls);
	pthread_mutex_lock(&ls->mu);
	int rc = 0;
	if (lk->base.unlocking || lk->base.freeing) {
		rc = -EINVAL;
	} else if (lk->base.dead || ls->state != ST_SYNCED) {
		/* nothing to release any more: free the handle (on the
		 * dispatch thread, after any callback already queued) */
		lk->base.unlocking = true;
		lk->base.dead = true;
		queue_free(ls, lk);
		wake(ls);
	} else {
		struct ls_msg msg;
		memset(&msg, 0, sizeof(msg));
		msg.type = LS_MSG_UNLOCK;
		msg.flags = ls_flags_of((flags | lk->flags) & DG_VALBLK);
		if (lvb)
			memcpy(lk->lvb, lvb, DG_LVB_LEN);
		memcpy(msg.lvb, lk->lvb, LS_LVB_LEN);
		msg.lockid = lk->lockid;
		rc = send_ls(ls, &msg);
		if (rc == 0) {
			lk->base.unlocking = true;
			lk->unlock_tag = msg.tag;
		}
	}
	pthread_mutex_unlock(&ls->mu);
	return rc;
}

static int cpg_cancel(struct dg_lock *plk)
{
	struct cpg_lock *lk = (struct cpg_lock *)plk;
	struct cpg_ls *ls = impl(plk->ls);
	pthread_mutex_lock(&ls->mu);
	int rc = 0;
	if (lk->base.dead || ls->state != ST_SYNCED)
		rc = -ENOTCONN;
	else if (lk->base.unlocking || lk->base.freeing || !lk->req_tag)
		rc = -EINVAL;
	else if (!lk->cancel_tag) {
		struct ls_msg msg;
		memset(&msg, 0, sizeof(msg));
		msg.type = LS_MSG_CANCEL;
		msg.lockid = lk->lockid;
		rc = send_ls(ls, &msg);
		if (rc == 0)
			lk->cancel_tag = msg.tag;
	}
	pthread_mutex_unlock(&ls->mu);
	return rc;
}

static const struct dg_backend_ops cpg_ops = {
	.name = "cpg",
	.connect = cpg_connect,
	.disconnect = cpg_disconnect,
	.this_node = cpg_this_node,
	.members = cpg_members,
	.lock = cpg_lock,
	.convert = cpg_convert,
	.unlock = cpg_unlock,
	.cancel = cpg_cancel,
};

const struct dg_backend_ops *dg_cpg_backend_ops(void)
{
	return &cpg_ops;
}
