/* The operations interface (internal to fs): what the front end (fs/fsops.c)
 * and the data path (fs/data.c) ask of "the filesystem", with two
 * implementations:
 *
 *   ops_local   fs/ops_local.c   the metadata engine on this node (the
 *                                coordinator, or a standalone node); a
 *                                truncate or punch first recalls the other
 *                                nodes' layouts (fs/cluster.h)
 *   ops_remote  fs/ops_remote.c  requests to the coordinator over a
 *                                remote_link (a participant); file data
 *                                still moves directly on the LUN
 *
 * The request path flows one way: front end -> dispatcher (fsops.c, picks
 * an implementation by role) -> ops -> engine or link. The coordinator's
 * server (fs/server.c) calls ops_local directly, after one role check.
 *
 * An implementation returns -ERESTART when the request could not reach a
 * coordinator and was not applied; the dispatcher waits for one and runs it
 * again. */
#ifndef CSVFS_FS_OPS_H
#define CSVFS_FS_OPS_H

#include <sys/types.h>
#include "fs/meta.h"
#include "fs/plock.h"

struct rio_writer;
struct rio_reply;

struct fs_ops {
	const char *name;
	/* namespace and attributes */
	int (*lookup)(struct volume *v, ext2_ino_t parent, const char *name, struct meta_attr *out);
	int (*getattr)(struct volume *v, ext2_ino_t ino, struct meta_attr *out);
	int (*setattr)(struct volume *v, ext2_ino_t ino, const struct meta_setattr *sa,
		       struct meta_attr *out);
	int (*create)(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
		      uint32_t rdev, const struct meta_cred *cred, struct meta_attr *out);
	int (*symlink)(struct volume *v, ext2_ino_t parent, const char *name, const char *target,
		       const struct meta_cred *cred, struct meta_attr *out);
	int (*link)(struct volume *v, ext2_ino_t ino, ext2_ino_t newparent, const char *newname,
		    struct meta_attr *out);
	int (*unlink)(struct volume *v, ext2_ino_t parent, const char *name);
	int (*rmdir)(struct volume *v, ext2_ino_t parent, const char *name);
	int (*rename)(struct volume *v, ext2_ino_t parent, const char *name, ext2_ino_t newparent,
		      const char *newname, unsigned flags, const struct meta_cred *cred);
	int (*readlink)(struct volume *v, ext2_ino_t ino, char *buf, size_t size);
	int (*readdir)(struct volume *v, ext2_ino_t ino, struct meta_dirent **out, size_t *n);
	/* timeout_ms 0: the usual call timeout (remote only) */
	int (*statfs)(struct volume *v, struct statvfs *out, unsigned timeout_ms);
	int (*getxattr)(struct volume *v, ext2_ino_t ino, const char *name, void *buf, size_t size);
	int (*listxattr)(struct volume *v, ext2_ino_t ino, char *buf, size_t size);
	int (*setxattr)(struct volume *v, ext2_ino_t ino, const char *name, const void *value,
			size_t size, int flags);
	int (*removexattr)(struct volume *v, ext2_ino_t ino, const char *name);
	/* open files: open and create_open give a referenced minode */
	int (*create_open)(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
			   const struct meta_cred *cred, struct meta_attr *out, struct minode **m);
	int (*open)(struct volume *v, ext2_ino_t ino, uint32_t gen, int truncate,
		    struct minode **out);
	int (*release)(struct volume *v, struct minode *m);   /* keeps the reference */
	int (*fsync)(struct volume *v, struct minode *m, int datasync);
	int (*syncfs)(struct volume *v);
	int (*fallocate)(struct volume *v, struct minode *m, int mode, uint64_t off, uint64_t len);
	int (*seek)(struct volume *v, struct minode *m, uint64_t off, int whence, uint64_t *out);
	/* the data path's metadata (fs/data.c) */
	int (*map)(struct volume *v, struct minode *m, uint64_t lblk, struct meta_extent *out);
	int (*alloc)(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len);
	int (*commit_write)(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len,
			    uint64_t new_size);
	void (*touch_write)(struct volume *v, struct minode *m);
	/* 0, or why no file data may be written now (-EROFS: the engine found
	 * corruption, errors=remount-ro). NULL: no such check (ops_remote). */
	int (*write_check)(struct volume *v);
	/* Makes m->size current for I/O up to end. */
	int (*refresh_size)(struct volume *v, struct minode *m, uint64_t end);
	/* File locks (fs/plock.h), decided by the coordinator's table. req->node
	 * names the requester (ops_local; the remote side is the peer).
	 * -EBUSY: the table is being rebuilt after a new coordinator (grace);
	 * ask again. *gen: the table's generation of the answer. */
	int (*setlk)(struct volume *v, const struct plock *req, int reclaim, int *granted,
		     uint64_t *gen);
	int (*getlk)(struct volume *v, const struct plock *req, struct plock *conflict, int *found);
	int (*unlock_all)(struct volume *v, const char *node, uint32_t ino, enum plock_by by,
			  uint64_t key);
	/* Waits (at most timeout_ms) for the table's generation to leave gen. */
	int (*lkwait)(struct volume *v, uint64_t gen, unsigned timeout_ms, uint64_t *out);
	/* This node has told a new coordinator every lock it holds. */
	int (*reclaim_done)(struct volume *v, const char *node);
	/* Redirected I/O (design.md §7): moves the nblk blocks at LUN block pblk,
	 * which m's layout maps to lblk, through the coordinator instead of this
	 * node's own path. NULL where there is no one to redirect to (ops_local:
	 * the coordinator and a standalone node use their own path). */
	int (*lun_redirect)(struct volume *v, struct minode *m, int write, void *buf,
			    uint64_t lblk, uint64_t pblk, uint32_t nblk);
};

extern const struct fs_ops ops_local;
extern const struct fs_ops ops_remote;

/* Exactly once (docs/cluster.md): a participant's change carries a request
 * id; a change answered -ERESTART keeps it for its resend by fsops.c's
 * retry loop. The operation is over (fsops.c, before and after it runs):
 * the id is no longer resent. */
void remote_once_end(void);
/* 1 and the id (k) when this thread's operation got -ERESTART for its op
 * change (the coordinator may have applied it and died): a new coordinator
 * that is this node looks the id up before applying it itself. */
int remote_once_sent(const struct volume *v, uint16_t op, struct meta_reply_key *k);
/* Test only (tests/integration/once.sh): CSVFS_TEST_HOLD_RESEND=PATH holds
 * a change that waits for its resend while PATH exists (at most 60 s), so
 * that another node can write between the change and its resend. */
void remote_once_test_hold(const struct volume *v);

/* How ops_remote reaches the coordinator: the cluster's connection
 * (fs/cluster_conn.c), or in a unit test a socket pair to a server. */
struct remote_link {
	void *ctx;
	/* Sends op's encoded request; on 0 the caller decodes and frees *rep.
	 * -ERESTART: not sent or not answered, retry at a coordinator. */
	int (*call)(void *ctx, uint16_t op, struct rio_writer *req, struct rio_reply *rep,
		    unsigned timeout_ms);
	/* Which coordinator this is (changes with every new one). */
	uint32_t (*epoch)(void *ctx);
	/* The inode's layout lock: 0 when held (cached maps and the size are
	 * then ours to trust); drop once the file's last open closes. */
	int (*layout_hold)(void *ctx, struct minode *m);
	void (*layout_drop)(void *ctx, struct minode *m);
};

#endif
