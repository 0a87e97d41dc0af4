/* dlm-glue internal: the replicated lock state machine behind the cpg backend.
 *
 * Every member of the CPG group owns one `struct lockstate` and feeds it the
 * same events in the same (agreed, virtually synchronous) delivery order:
 *
 *   - ls_apply_confchg()  for every CPG configuration change,
 *   - ls_apply_message()  for every delivered CPG message (requests LOCK,
 *                         CONVERT, UNLOCK, CANCEL and the cluster events
 *                         FENCED and QUORUM, all in the wire format below).
 *
 * Applying an event is a pure function of (state, event): it updates the table
 * and reports "effects" (grants, blocking callbacks, failures, ...) through a
 * sink, in a deterministic order. Every member computes every effect; a node
 * acts only on the effects addressed to its own (nodeid, incarnation). Nothing
 * here reads a clock, draws a random number, prints, or exposes an address.
 *
 * A joiner installs a snapshot from any member (ls_snapshot / ls_deserialize),
 * calls ls_begin_catch_up(), then replays every event it was delivered from its
 * own joining confchg on; events already folded into the snapshot are skipped.
 *
 * Semantics, wire formats and the wiring rules: docs/locking.md.
 * Not thread-safe: one state machine is driven by one thread (the CPG
 * dispatcher); the inspection calls may run on it between events.
 */
#ifndef CSVFS_DLM_GLUE_LOCKSTATE_H
#define CSVFS_DLM_GLUE_LOCKSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LS_NAME_MAX      64   /* bytes in a resource name (binary allowed) */
#define LS_LVB_LEN       32   /* bytes in a value block */
#define LS_MAX_CONFCHG   128  /* nodeids in one confchg's left or joined list */
#define LS_DEFAULT_MAX_LOCKS (1u << 20)

/* ---- modes ---------------------------------------------------------------- */

enum ls_mode {
	LS_MODE_NL = 0,  /* null: holds the resource (and its value block) only */
	LS_MODE_CR = 1,  /* concurrent read */
	LS_MODE_CW = 2,  /* concurrent write */
	LS_MODE_PR = 3,  /* protected read */
	LS_MODE_PW = 4,  /* protected write */
	LS_MODE_EX = 5,  /* exclusive */
	LS_MODE_COUNT = 6,
};
#define LS_MODE_NONE 0xffu    /* "no mode": a waiting request holds nothing */

/* The standard DLM compatibility matrix (symmetric). */
bool ls_mode_compatible(uint8_t held, uint8_t wanted);
/* True when `to` is compatible with everything `from` is (NL<CR<{CW,PR}<PW<EX;
 * CW and PR are incomparable). Such a conversion is granted at once. */
bool ls_mode_is_downconvert(uint8_t from, uint8_t to);
/* The weakest mode that blocks everything a or b blocks (CW with PR is PW).
 * LS_MODE_NONE is the identity. */
uint8_t ls_mode_join(uint8_t a, uint8_t b);
const char *ls_mode_name(uint8_t mode);

/* ---- requests and their wire format --------------------------------------- */

enum ls_msg_type {
	LS_MSG_LOCK = 1,     /* new lock: lockid, mode, flags, name */
	LS_MSG_CONVERT = 2,  /* change a granted lock's mode: lockid, mode, flags, lvb */
	LS_MSG_UNLOCK = 3,   /* release (whatever its state): lockid, flags, lvb */
	LS_MSG_CANCEL = 4,   /* withdraw a waiting request or conversion: lockid */
	LS_MSG_FENCED = 5,   /* departed incarnations <= incarnation of nodeid are fenced */
	LS_MSG_QUORUM = 6,   /* votequorum's verdict for ring ring_seq */
};

enum ls_lock_flags {
	LS_LKF_NOQUEUE = 1u << 0,  /* fail with WOULDBLOCK instead of queueing */
	LS_LKF_VALBLK = 1u << 1,   /* return the value block on grant; write it on
	                              release/down-conversion from PW or EX */
};

#define LS_MSG_MAGIC       0x43534c4du /* "CSLM" */
#define LS_MSG_VERSION     1
#define LS_MSG_HEADER_LEN  16
#define LS_MSG_MAX_LEN     (LS_MSG_HEADER_LEN + 8 + 1 + LS_NAME_MAX)

/* A decoded request. Fields a type does not use are ignored by the encoder
 * and zero after decoding. */
struct ls_msg {
	uint8_t type;                 /* enum ls_msg_type */
	uint8_t mode;                 /* LOCK, CONVERT */
	uint8_t flags;                /* enum ls_lock_flags (LOCK, CONVERT, UNLOCK) */
	uint8_t name_len;             /* LOCK: 1..LS_NAME_MAX */
	uint64_t tag;                 /* sender-chosen, strictly increasing per incarnation, != 0 */
	uint64_t lockid;              /* LOCK, CONVERT, UNLOCK, CANCEL */
	uint8_t name[LS_NAME_MAX];    /* LOCK */
	uint8_t lvb[LS_LVB_LEN];      /* CONVERT, UNLOCK: carried when flags has VALBLK */
	uint32_t fenced_nodeid;       /* FENCED, != 0 */
	uint32_t fenced_incarnation;  /* FENCED, != 0 */
	uint64_t ring_seq;            /* QUORUM */
	uint8_t quorate;              /* QUORUM: 0 or 1 */
};

/* Encode into buf; returns the length, LS_ERR_MALFORMED for an invalid
 * message or LS_ERR_SPACE when cap is too small (LS_MSG_MAX_LEN always fits). */
int ls_msg_encode(const struct ls_msg *msg, uint8_t *buf, size_t cap);
/* Decode exactly len bytes; every field is checked. Returns 0 or
 * LS_ERR_MALFORMED (and then *out is unspecified). Pure. */
int ls_msg_decode(const uint8_t *buf, size_t len, struct ls_msg *out);

/* ---- status codes -------------------------------------------------------- */

enum ls_status {
	LS_OK = 0,
	LS_DUPLICATE = 1,      /* (sender, tag) already applied: nothing happened */
	LS_IGNORED = 2,        /* well-formed but void: stale ring, sender not a
	                          member, fence of nobody; counted, no change */
	LS_SKIPPED = 3,        /* catch-up: the snapshot already contains this event */
	LS_ERR_MALFORMED = -1, /* rejected; nothing changed (not even the position) */
	LS_ERR_NOMEM = -2,     /* nothing changed, but this member can no longer
	                          follow the stream: it must leave and rejoin */
	LS_ERR_SEQUENCE = -3,  /* catch-up replay did not start at our own join */
	LS_ERR_NOT_MEMBER = -4,/* snapshot does not hold us as a live member */
	LS_ERR_SPACE = -5,     /* output buffer too small */
};
const char *ls_strerror(int status);

/* ---- effects ------------------------------------------------------------- */

enum ls_effect_kind {
	LS_EFFECT_GRANT = 1,     /* lock (node, incarnation, lockid) now holds `mode` */
	LS_EFFECT_QUEUED = 2,    /* request waits for `mode` (NOT_QUORATE: only for quorum) */
	LS_EFFECT_BLOCKING = 3,  /* this holder blocks a waiter wanting `mode`: once
	                            per blocking episode */
	LS_EFFECT_FAILED = 4,    /* request failed with `failure`; `mode` = what the
	                            lock still holds (LS_MODE_NONE if it does not exist) */
	LS_EFFECT_CANCELED = 5,  /* cancel done; `mode` = what the lock still holds */
	LS_EFFECT_UNLOCKED = 6,  /* lock gone */
	LS_EFFECT_JOINED = 7,    /* member (nodeid, incarnation) joined */
	LS_EFFECT_DEPARTED = 8,  /* member left; NEEDS_FENCE if it still holds locks */
	LS_EFFECT_FENCED = 9,    /* departed incarnation's locks were released */
	LS_EFFECT_QUORUM = 10,   /* quorum changed: NOT_QUORATE set = lost */
};

enum ls_failure {
	LS_FAIL_WOULDBLOCK = 1,  /* NOQUEUE and not grantable now */
	LS_FAIL_DEADLOCK = 2,    /* conversion could never be granted (FIFO cycle) */
	LS_FAIL_UNKNOWN_LOCK = 3,/* no such lockid for this incarnation */
	LS_FAIL_EXISTS = 4,      /* LOCK with a lockid already in use */
	LS_FAIL_BUSY = 5,        /* CONVERT of a lock that is still waiting */
	LS_FAIL_NOT_WAITING = 6, /* CANCEL of a lock with nothing pending */
	LS_FAIL_NOSPC = 7,       /* table holds max_locks locks */
};

enum ls_effect_flags {
	LS_EF_LVB = 1u << 0,         /* lvb holds the resource's value block */
	LS_EF_LVB_INVALID = 1u << 1, /* ...which a fenced PW/EX holder may have left stale */
	LS_EF_NOT_QUORATE = 1u << 2,
	LS_EF_NEEDS_FENCE = 1u << 3,
};

struct ls_effect {
	uint8_t kind;        /* enum ls_effect_kind */
	uint8_t mode;        /* see the kinds; LS_MODE_NONE where none applies */
	uint8_t flags;       /* enum ls_effect_flags */
	uint8_t failure;     /* enum ls_failure, FAILED only */
	uint32_t nodeid;     /* addressee (membership effects: the member concerned) */
	uint32_t incarnation;
	uint64_t lockid;
	uint64_t tag;        /* the request this answers; 0 for BLOCKING and membership */
	uint8_t lvb[LS_LVB_LEN];
};

typedef void ls_effect_fn(void *ctx, const struct ls_effect *effect);
struct ls_sink {
	ls_effect_fn *fn;
	void *ctx;
};

/* ---- the state machine --------------------------------------------------- */

struct lockstate;

struct ls_config {
	uint32_t max_locks;  /* 0 = LS_DEFAULT_MAX_LOCKS; must match on every member */
};

/* An empty table, not quorate, position 0. NULL on allocation failure. */
struct lockstate *ls_create(const struct ls_config *config);
void ls_destroy(struct lockstate *ls);

/* One CPG configuration change, keyed by the totem ring sequence it belongs to.
 * Leaves are applied before joins (a nodeid in both gets a fresh incarnation);
 * lists may be in any order. A confchg of a newer ring that removes a member
 * clears `quorate` until a QUORUM(true) for that ring or later is applied. */
int ls_apply_confchg(struct lockstate *ls, uint64_t ring_seq,
		     const uint32_t *left, size_t nleft,
		     const uint32_t *joined, size_t njoined,
		     const struct ls_sink *sink);
/* One delivered CPG message from sender_nodeid: decode, then ls_apply_msg. */
int ls_apply_message(struct lockstate *ls, uint32_t sender_nodeid,
		     const uint8_t *buf, size_t len, const struct ls_sink *sink);
int ls_apply_msg(struct lockstate *ls, uint32_t sender_nodeid,
		 const struct ls_msg *msg, const struct ls_sink *sink);

/* ---- snapshot / join ----------------------------------------------------- */

/* The whole replicated state, canonical bytes (equal tables give equal bytes),
 * ending in an FNV-1a-64 of everything before it. *out is malloc'd. */
int ls_snapshot(const struct lockstate *ls, uint8_t **out, size_t *out_len);
/* Rebuild a table from a snapshot; bounds- and consistency-checked. */
int ls_deserialize(const uint8_t *buf, size_t len, struct lockstate **out);
/* On a freshly deserialized table: become a joiner that replays its delivered
 * events starting with the confchg that joined self_nodeid. */
int ls_begin_catch_up(struct lockstate *ls, uint32_t self_nodeid);

/* FNV-1a-64 over the canonical bytes (no allocation). */
uint64_t ls_digest(const struct lockstate *ls);
/* 1 when a and b hold the same replicated state, 0 when not, <0 on error. */
int ls_equal(const struct lockstate *a, const struct lockstate *b);

/* ---- inspection ---------------------------------------------------------- */

enum ls_queue {
	LS_QUEUE_GRANTED = 0,
	LS_QUEUE_CONVERTING = 1,  /* holds `granted`, waits for `requested` */
	LS_QUEUE_WAITING = 2,     /* new request, holds nothing */
};

struct ls_lock_info {
	uint8_t name[LS_NAME_MAX];
	uint8_t name_len;
	uint8_t queue;            /* enum ls_queue */
	uint8_t granted;          /* LS_MODE_NONE while waiting */
	uint8_t requested;        /* == granted when granted */
	uint8_t req_flags;
	bool blocking_notified;
	bool departed;            /* owner left and is not yet fenced */
	uint32_t nodeid;
	uint32_t incarnation;
	uint64_t lockid;
	uint64_t tag;
	uint32_t resource_ordinal; /* position of the resource in table order */
};

struct ls_resource_info {
	uint8_t lvb[LS_LVB_LEN];
	bool lvb_invalid;
	uint32_t nlocks;
};

struct ls_member_info {
	uint32_t nodeid;
	uint32_t incarnation;
	bool departed;
	uint32_t nlocks;
	uint64_t last_tag;
	uint64_t joined_at;       /* position of the confchg that joined it */
};

typedef void ls_lock_visitor(void *ctx, const struct ls_lock_info *info);
typedef void ls_member_visitor(void *ctx, const struct ls_member_info *info);

/* Resources in table order, each one's granted, converting, waiting queues. */
void ls_foreach_lock(const struct lockstate *ls, ls_lock_visitor *fn, void *ctx);
/* Members in join order; departed ones stay until fenced. */
void ls_foreach_member(const struct lockstate *ls, ls_member_visitor *fn, void *ctx);
bool ls_resource_lookup(const struct lockstate *ls, const uint8_t *name,
			size_t name_len, struct ls_resource_info *out);
/* The live incarnation of nodeid, 0 when it is not a live member. */
uint32_t ls_live_incarnation(const struct lockstate *ls, uint32_t nodeid);

uint64_t ls_position(const struct lockstate *ls);  /* well-formed events applied */
uint64_t ls_ring_seq(const struct lockstate *ls);
bool ls_quorate(const struct lockstate *ls);
bool ls_catching_up(const struct lockstate *ls);
size_t ls_lock_count(const struct lockstate *ls);
size_t ls_resource_count(const struct lockstate *ls);

#endif
