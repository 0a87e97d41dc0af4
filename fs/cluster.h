/* Cluster mode (internal to fs): this node's role for the volume, the
 * coordinator election through dlm-glue, the redirect-io channel to the
 * coordinator, layout locks and recalls, and pausing on quorum loss.
 * Implemented in fs/cluster*.c (which file holds what: fs/cluster.c's
 * header); docs/cluster.md describes the protocol and the reasons. */
#ifndef CSVFS_FS_CLUSTER_H
#define CSVFS_FS_CLUSTER_H

#include "fs/meta.h"

enum cluster_role { CL_PARTICIPANT = 1, CL_COORDINATOR = 2 };

/* Without port=, a coordinator serves on the first free port of this range:
 * each volume has its own daemon, so a node coordinating several volumes
 * needs one port per volume. The port in use is published in "coordinfo". */
#define CLUSTER_PORT_BASE 7100
#define CLUSTER_PORT_COUNT 64

/* attr_cache=: the inodes whose attributes a participant caches at most, its
 * kernel and its daemon (docs/cluster.md "Attribute caching"); 8192 groups
 * of 64 by default, each at most about 6.5 KiB of the daemon's memory. */
#define ATTR_CACHE_DEFAULT 524288
#define ATTR_CACHE_MAX 4194304

struct cluster_opts {
	char node[64];              /* this node's name (its certificate's) */
	uint32_t nodeid;            /* corosync nodeid, for checking */
	char cred_dir[1024];        /* redirect-io credential directory */
	uint16_t port;              /* coordinator's redirect-io port; 0: the first free one
	                             * of CLUSTER_PORT_BASE.. (one daemon per volume) */
	char backend[16];           /* dlm-glue backend: cpg or dlm */
	unsigned fence_deadline_ms; /* dlm-glue self-fence deadline (0: its default) */
	char fence_command[512];
	unsigned fence_timeout_ms;  /* fence_command's bound (0: dlm-glue's default) */
	unsigned pause_timeout_ms;  /* FUSE requests held this long while paused, then EIO */
	unsigned coord_wait_ms;     /* how long a request waits for a coordinator */
	unsigned lock_timeout_ms;   /* a lock wait's bound, raised to outlast a dead
	                             * holder's fencing (0: LOCK_TIMEOUT_MS) */
	unsigned attr_cache;        /* attr_cache=: inodes whose attributes a participant
	                             * caches at most (kernel and daemon; 0: none) */
	int attr_cache_set;         /* else ATTR_CACHE_DEFAULT */
};

/* The node's redirect-io credential is usable and names this node. */
int cluster_check_credential(const struct cluster_opts *o, char *err, size_t errlen);
/* Joins the volume's lockspace and takes a role (coordinator if nobody
 * holds it). The volume must be volume_new + volume_probe'd. */
int cluster_start(struct volume *v, const struct cluster_opts *o, char *err, size_t errlen);
/* Leaves the cluster: a coordinator hands the role over cleanly. */
void cluster_stop(struct volume *v);

/* Every request runs between enter and leave. enter waits while the node is
 * paused (bounded), then returns the role (> 0) or a negative errno. */
int cluster_enter(struct cluster *c);
void cluster_leave(struct cluster *c);
/* Requests would be served now: not paused, and a coordinator at hand. */
int cluster_ready(struct cluster *c);
/* After a request failed with -ERESTART (coordinator unreachable): waits a
 * little for a coordinator. 0 = try again, else give up with the errno once
 * coord_wait has passed since *since_ms (0: the first wait, set here). */
int cluster_wait_coordinator(struct cluster *c, uint64_t *since_ms);
/* A request that ran in role (what cluster_enter gave) failed with rc: on a
 * coordinator whose own path to the LUN has failed (a probe read confirms
 * it: a bad block is not a failed path) it becomes -ERESTART —
 * that coordinator gives its role up with its engine unwritten
 * (docs/cluster.md, "The coordinator's own path fails"), so the request
 * runs again at the next one, this node then a redirected participant.
 * rc as it is otherwise. */
int cluster_rerun_if_path_gone(struct cluster *c, int role, int rc);

/* Coordinator: before a change that frees or unwrites blocks of ino, every
 * other node drops its layouts of it. *token is passed to recall_end. */
int cluster_recall_begin(struct cluster *c, ext2_ino_t ino, void **token);
void cluster_recall_end(struct cluster *c, void *token);

/* Attribute caching (docs/cluster.md, "Attribute caching"). A participant
 * takes mark before asking for a file's attributes; cacheable then says
 * whether its kernel may cache the answer (the file's attribute lock was
 * held before the request and still is); if so, replied once the answer is
 * sent. Not held: the lock is asked for, so a later request may cache.
 * lookup: the answer to a lookup, cacheable only for a file the kernel is
 * known to have (a getattr came for it, and no forget since). */
uint64_t cluster_attr_mark(struct cluster *c);
int cluster_attr_cacheable(struct cluster *c, ext2_ino_t ino, uint32_t gen, int is_dir, uint64_t mark,
			   int lookup);
void cluster_attr_replied(struct cluster *c, ext2_ino_t ino);   /* ino: the file, or dir */
/* The kernel forgot the file's node id (a lookup may make a new one). */
void cluster_attr_forget(struct cluster *c, ext2_ino_t ino, uint32_t gen);
/* The same for a lookup's answer about a name in dir (found or not): the
 * kernel may keep the name while dir's lock is held. */
int cluster_entries_cacheable(struct cluster *c, ext2_ino_t dir, uint64_t mark);
/* The front end's ways to drop its kernel's cached attributes of a file,
 * and every name it caches (NULL: the kernel cannot, names are not cached).
 * inval NULL: nothing is cached any more, and once it returns no hook runs
 * (before the FUSE session goes). */
void cluster_attr_set_inval(struct cluster *c, void (*inval)(void *arg, ext2_ino_t ino, uint32_t gen),
			    void (*inval_entries)(void *arg), void *arg);
/* The daemon's own copies (a participant's): of the attributes a
 * readdirplus brought (d[0..n), asked for after mark), keep those whose
 * group's PR was held before mark and still is; ask for the others' locks,
 * and for dir's (for its names). Returns how many wait for a lock asked for
 * (0 on a coordinator, with caching off, or at the attr_cache bound). A recall drops the copies with the
 * kernel's. */
size_t cluster_attr_keep(struct cluster *c, ext2_ino_t dir, const struct meta_dirent *d, size_t n,
			 uint64_t mark);
/* Waits until no PR asked for is still waiting, at most ms. */
void cluster_attr_wait_asked(struct cluster *c, unsigned ms);
/* 1 and *out: the daemon's copy of ino's attributes, under its held lock. */
int cluster_attr_cached(struct cluster *c, ext2_ino_t ino, struct meta_attr *out);
/* Coordinator, under the engine's lock, before ino's attributes change:
 * every other node's cached copy goes (0, or -EIO when they would not give
 * it up). */
int cluster_attr_change(struct cluster *c, ext2_ino_t ino);
/* Coordinator: ino was just allocated (no one can have cached it); asks for
 * its group's EX without waiting, so that the group's later changes find it. */
void cluster_attr_prefetch(struct cluster *c, ext2_ino_t ino);

/* Every change (metadata change or data write) runs between change_begin
 * and change_end, outside cluster_enter/leave: while the volume is frozen
 * for a snapshot, begin waits (0 once admitted, or a negative errno). */
int cluster_change_begin(struct cluster *c);
void cluster_change_end(struct cluster *c);

/* A snapshot (csvctl snapshot, docs/snapshot.md). */
#define SNAP_NAME_MAX 64
#define SNAP_HOOK_MAX 1024
#define SNAP_TIMEOUT_DEFAULT_S 30
#define SNAP_TIMEOUT_MAX_S 600
struct cluster_snap_request {
	char name[SNAP_NAME_MAX + 1];
	char hook[SNAP_HOOK_MAX];        /* absolute path of an executable */
	unsigned timeout_s;              /* 1..SNAP_TIMEOUT_MAX_S: freeze and hook together */
	char requester[64];              /* the node csvctl ran on */
	char new_guid[37];               /* "": the snapshot keeps the volume's GUID */
};
struct cluster_snap_result {
	int status;                      /* 0: the hook succeeded and the volume is thawed */
	char message[1536];              /* the cause, the hook's exit and stderr's last lines */
	uint64_t wait_ms;                /* from the request until every node was frozen */
	uint64_t frozen_ms;              /* from then until the thaw (journal, hook, resume) */
	uint64_t hook_ms;
	uint64_t stall_ms;               /* the longest a change waited, on any node */
	char stall_node[64];             /* where ("" when no change waited) */
	unsigned nodes_reported, nodes_expected;   /* nodes that told their wait, of all */
	char guid[37];                   /* the snapshot's GUID (taken: the new one if asked) */
};
/* Checks a request before anything is frozen: 0 or -EINVAL with the cause. */
int cluster_snap_check(const struct cluster_snap_request *rq, char *err, size_t errlen);
/* Coordinator: freezes the volume on every node, runs the hook, thaws.
 * aborted(arg) is polled: when it says so (the requester went away) the
 * hook is killed and the volume thawed. Always returns with the volume
 * thawed; res->status says whether the snapshot is good. */
void cluster_snapshot(struct cluster *c, const struct cluster_snap_request *rq,
		      int (*aborted)(void *), void *arg, struct cluster_snap_result *res);

/* csvctl maintenance (docs/volumes.md), on any node. on: refused with the
 * open files by node while any file is open; else the coordinator detaches
 * the engine (journal clean, MMP released) and nobody takes the role: every
 * request on every node fails with EBUSY and no node touches the LUN. off:
 * the role is taken again (waits for a coordinator, bounded). msg gets the
 * outcome or the cause; returns 0 or a negative errno. */
int cluster_maintenance(struct cluster *c, int on, char *msg, size_t len);
/* csvctl grow (docs/volumes.md), on any node: the filesystem takes the
 * LUN's new size, blocks never move. The coordinator detaches the engine
 * (requests wait), runs resize2fs, and takes its role again; refused when
 * the LUN did not grow or when growing would need more group descriptor
 * blocks (they would move blocks in use). msg gets the outcome. */
int cluster_grow(struct cluster *c, char *msg, size_t len);
/* This node knows the volume is in maintenance. */
int cluster_in_maintenance(struct cluster *c);

/* Request a role move (csvctl move); "" = any other node. */
int cluster_move(struct cluster *c, const char *target, char *err, size_t errlen);
/* csvctl redirect on|off for other nodes: node ("": every node but this
 * one, which applies its own), through the coordinator, which applies it to
 * itself at once and hands it to each other node at that node's next report
 * (within 2 s). -ENOENT: no live node of that name. */
int cluster_redirect(struct cluster *c, const char *node, int on, unsigned seconds, char *err,
		     size_t errlen);
/* JSON members, coordinator and I/O state for csvctl status. */
void cluster_status_json(struct cluster *c, char *out, size_t len);
/* 1: a node of that name is in the lock group's membership. */
int cluster_is_member(struct cluster *c, const char *name);

#endif
