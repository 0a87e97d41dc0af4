/* dlm-glue — the public interface of the cluster layer (design.md §1, §5, §6):
 * membership, quorum, fencing, and a lock manager with DLM semantics over two
 * backends: "cpg" (built in: a replicated lock state machine over corosync
 * CPG) and "dlm" (the kernel DLM through libdlm). Nothing outside dlm-glue
 * talks to corosync or a lock manager.
 *
 * Threads: callbacks (asts, basts, membership) run on the lockspace's own
 * dispatch thread; they must not block on lock grants. All functions are
 * thread-safe. Errors are negative errno with a message in the log.
 */
#ifndef CSVFS_DLMGLUE_H
#define CSVFS_DLMGLUE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

enum dg_mode { DG_NL = 0, DG_CR = 1, DG_CW = 2, DG_PR = 3, DG_PW = 4, DG_EX = 5 };

#define DG_NOQUEUE  0x1u   /* fail with -EAGAIN instead of waiting */
#define DG_CONVERT  0x2u   /* convert an existing lock (dg_convert sets it) */
#define DG_VALBLK   0x4u   /* read the value block on grant, write it on down-convert/unlock from PW/EX */
#define DG_LVB_LEN  32

#define DG_RESOURCE_MAX 64 /* bytes of a resource name */

struct dg_lockspace;
struct dg_lock;

/* Completion of a lock or convert request: status 0 (granted: mode, lvb if
 * DG_VALBLK), -EAGAIN (DG_NOQUEUE and it would block), -ECANCELED (cancelled),
 * -ENOTCONN (the lockspace left the cluster). */
typedef void (*dg_ast_fn)(void *arg, int status, enum dg_mode granted, const uint8_t *lvb);
/* Another node wants a mode incompatible with ours: release or down-convert. */
typedef void (*dg_bast_fn)(void *arg, enum dg_mode blocking);

enum dg_node_state {
	DG_NODE_UP,          /* member of our primary partition */
	DG_NODE_DEPARTED,    /* left; its locks still block until it is fenced */
	DG_NODE_FENCED,      /* gone and fenced: its locks were released */
};

struct dg_member {
	uint32_t nodeid;
	enum dg_node_state state;
	char name[64];
	char address[64];    /* from cmap (nodelist.node.N.ring0_addr) */
};

struct dg_callbacks {
	void *arg;
	/* Membership or quorum changed; dg_members() tells the new view. */
	void (*membership)(void *arg);
	/* Recovery hooks: a node left (its locks still held), it was fenced
	 * (its locks are now released), recovery of the lockspace is done. */
	void (*node_down)(void *arg, uint32_t nodeid);
	void (*node_fenced)(void *arg, uint32_t nodeid);
	void (*recovery_done)(void *arg);
	/* This node lost (0) or regained (1) quorum. On loss a node must stop
	 * LUN I/O within its deadline (design.md §6). */
	void (*quorum)(void *arg, int quorate);
};

typedef void (*dg_log_fn)(void *arg, int level, const char *fmt, va_list ap);

#define FENCE_TIMEOUT_DEFAULT_MS 60000

struct dg_config {
	const char *backend;           /* "cpg" (default) or "dlm" */
	const char *lockspace;         /* the volume GUID */
	/* Fencing (design.md §6): a departed node's locks are released when
	 * fence_command (run with the node id and name as arguments) exits 0,
	 * or when self_fence_deadline_ms has passed since the departure. The
	 * deadline must exceed the departed node's detection time (token
	 * timeout + consensus) plus its I/O drain (docs/locking.md). */
	const char *fence_command;     /* NULL: deadline only */
	unsigned self_fence_deadline_ms;
	/* A fence command still running after this long is killed and counts
	 * as failed (the deadline then applies); 0: FENCE_TIMEOUT_DEFAULT_MS. */
	unsigned fence_timeout_ms;
	struct dg_callbacks cb;
	dg_log_fn log;                 /* NULL: stderr */
	void *log_arg;
};

int dg_connect(const struct dg_config *cfg, struct dg_lockspace **out, char *err, size_t errlen);
void dg_disconnect(struct dg_lockspace *ls);

uint32_t dg_this_node(struct dg_lockspace *ls);
/* The longest a dead node's locks can go on holding after it died: its
 * failure detection plus the self-fence deadline (a confirming fence_command
 * releases them sooner). 0 when the backend cannot know (dlm: dlm_controld
 * fences). A wait for a lock may have to last this long without any live
 * node being at fault. */
unsigned dg_release_bound_ms(struct dg_lockspace *ls);
/* Copies up to max members; returns the count and whether we are quorate. */
int dg_members(struct dg_lockspace *ls, struct dg_member *out, size_t max, int *quorate);

/* Who uses a lockspace, asked of this node's corosync without joining it:
 * the nodeids of the processes in the cpg backend's group for it (up to
 * max; returns the count, or a negative errno with err set) and whether
 * this node's partition is quorate. A quorate answer of 0 proves that no
 * node of the cluster runs a member (one cut off from the quorate part is
 * fenced or paused, docs/locking.md). Only the cpg backend is seen. */
int dg_lockspace_users(const char *lockspace, uint32_t *nodeids, size_t max, int *quorate, char *err,
		       size_t errlen);

/* Requests a new lock on resource `name` (NUL-terminated, < DG_RESOURCE_MAX).
 * The ast reports the grant; the bast, conflicts while held. */
int dg_lock(struct dg_lockspace *ls, const char *name, enum dg_mode mode, unsigned flags,
	    dg_ast_fn ast, dg_bast_fn bast, void *arg, struct dg_lock **out);
/* Converts a held lock (up or down; down is granted at once). lvb is written
 * when converting down from PW/EX with DG_VALBLK. */
int dg_convert(struct dg_lock *lk, enum dg_mode mode, unsigned flags, const uint8_t *lvb);
/* Releases the lock (lvb written when releasing PW/EX with DG_VALBLK); the
 * handle is freed once the unlock completes. */
int dg_unlock(struct dg_lock *lk, unsigned flags, const uint8_t *lvb);
/* Cancels a waiting request or conversion (its ast gets -ECANCELED). */
int dg_cancel(struct dg_lock *lk);

/* Who holds resource `name`, for a diagnosis (a lock wait that lasts): up to
 * max locks granted or converting on it, each one's node and granted mode,
 * and whether it was sent a blocking callback. Returns the count (that may
 * exceed max), or -EOPNOTSUPP where the backend cannot see other nodes'
 * locks (dlm: the kernel's state is not read). */
struct dg_holder {
	uint32_t nodeid;
	enum dg_mode granted;
	int notified;        /* a blocking callback was sent for this episode */
	int departed;        /* its node left and is not fenced yet */
};
int dg_holders(struct dg_lockspace *ls, const char *name, struct dg_holder *out, size_t max);

/* Convenience: waits (bounded) for the request's ast. */
int dg_lock_wait(struct dg_lockspace *ls, const char *name, enum dg_mode mode, unsigned flags,
		 unsigned timeout_ms, uint8_t lvb_out[DG_LVB_LEN], struct dg_lock **out);

#endif
