/* The dispatcher (fs/fsops.h): every front-end operation runs in the
 * implementation this node's role calls for (fs/ops.h) — the engine on the
 * coordinator or a standalone node (ops_local), requests to the coordinator
 * on a participant (ops_remote) — and data moves through fs/data.c with the
 * same implementation's layouts.
 *
 * A role change (takeover, move) waits for the requests inside; a
 * participant's request that cannot reach a coordinator returns -ERESTART
 * from the implementation, leaves, waits for one and runs again, possibly
 * in the other implementation (this node may have become the coordinator).
 * A change keeps its request id across those runs (exactly once,
 * docs/cluster.md). */
#include "fs/fsops.h"
#include "fs/cluster.h"
#include "fs/data.h"
#include "fs/ops.h"

#include <errno.h>

static const struct fs_ops *ops_for(int role)
{
	return role == CL_COORDINATOR ? &ops_local : &ops_remote;
}

/* Sets rc to ops_->CALL in the role's implementation, retrying on -ERESTART. */
#define RUN(v, rc, CALL)                                                             \
	do {                                                                         \
		if (!(v)->cluster) {                                                 \
			const struct fs_ops *ops_ = &ops_local;                      \
			(rc) = ops_->CALL;                                           \
			break;                                                       \
		}                                                                    \
		remote_once_end();   /* a new operation: a new request id */     \
		for (uint64_t since_ = 0;;) {                                        \
			int role_ = cluster_enter((v)->cluster);                     \
			if (role_ < 0) {                                             \
				(rc) = role_;                                        \
				break;                                               \
			}                                                            \
			const struct fs_ops *ops_ = ops_for(role_);                  \
			(rc) = ops_->CALL;                                           \
			(rc) = cluster_rerun_if_path_gone((v)->cluster, role_, (rc)); \
			cluster_leave((v)->cluster);                                 \
			if ((rc) != -ERESTART)                                       \
				break;                                               \
			int wait_ = cluster_wait_coordinator((v)->cluster, &since_); \
			if (wait_) {                                                 \
				(rc) = wait_;                                        \
				break;                                               \
			}                                                            \
			remote_once_test_hold(v);                                    \
		}                                                                    \
		remote_once_end();                                                   \
	} while (0)

/* An operation that changes nothing: it goes on during a snapshot freeze. */
#define DISPATCH(v, CALL)                                                            \
	do {                                                                         \
		int rc_;                                                             \
		RUN(v, rc_, CALL);                                                   \
		return rc_;                                                          \
	} while (0)

/* A change (metadata or data): held while the volume is frozen for a
 * snapshot (docs/snapshot.md), admitted before the role gate so that a
 * held change never blocks a role change. */
#define CHANGE(v, CALL)                                                              \
	do {                                                                         \
		int rc_ = change_begin(v);                                           \
		if (rc_)                                                             \
			return rc_;                                                  \
		RUN(v, rc_, CALL);                                                   \
		change_end(v);                                                       \
		return rc_;                                                          \
	} while (0)

static int change_begin(struct volume *v)
{
	return v->cluster ? cluster_change_begin(v->cluster) : 0;
}

static void change_end(struct volume *v)
{
	if (v->cluster)
		cluster_change_end(v->cluster);
}

/* Every role refuses a bad name the same way, before anything is sent. */
#define CHECK_NAME(name)                                                             \
	do {                                                                         \
		int bad_ = meta_check_name(name);                                    \
		if (bad_)                                                            \
			return bad_;                                                 \
	} while (0)

/* ---- namespace and attribute operations -------------------------------- */

int fsop_lookup(struct volume *v, ext2_ino_t parent, const char *name, struct meta_attr *out)
{
	CHECK_NAME(name);
	DISPATCH(v, lookup(v, parent, name, out));
}

int fsop_getattr(struct volume *v, ext2_ino_t ino, struct meta_attr *out)
{
	DISPATCH(v, getattr(v, ino, out));
}

int fsop_setattr(struct volume *v, ext2_ino_t ino, const struct meta_setattr *sa,
		 struct meta_attr *out)
{
	CHANGE(v, setattr(v, ino, sa, out));
}

int fsop_create(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
		uint32_t rdev, const struct meta_cred *cred, struct meta_attr *out)
{
	CHECK_NAME(name);
	CHANGE(v, create(v, parent, name, mode, rdev, cred, out));
}

int fsop_symlink(struct volume *v, ext2_ino_t parent, const char *name, const char *target,
		 const struct meta_cred *cred, struct meta_attr *out)
{
	CHECK_NAME(name);
	CHANGE(v, symlink(v, parent, name, target, cred, out));
}

int fsop_link(struct volume *v, ext2_ino_t ino, ext2_ino_t newparent, const char *newname,
	      struct meta_attr *out)
{
	CHECK_NAME(newname);
	CHANGE(v, link(v, ino, newparent, newname, out));
}

int fsop_unlink(struct volume *v, ext2_ino_t parent, const char *name)
{
	CHECK_NAME(name);
	CHANGE(v, unlink(v, parent, name));
}

int fsop_rmdir(struct volume *v, ext2_ino_t parent, const char *name)
{
	CHECK_NAME(name);
	CHANGE(v, rmdir(v, parent, name));
}

int fsop_rename(struct volume *v, ext2_ino_t parent, const char *name, ext2_ino_t newparent,
		const char *newname, unsigned flags, const struct meta_cred *cred)
{
	CHECK_NAME(name);
	CHECK_NAME(newname);
	CHANGE(v, rename(v, parent, name, newparent, newname, flags, cred));
}

int fsop_readlink(struct volume *v, ext2_ino_t ino, char *buf, size_t size)
{
	DISPATCH(v, readlink(v, ino, buf, size));
}

int fsop_readdir(struct volume *v, ext2_ino_t ino, struct meta_dirent **out, size_t *n)
{
	DISPATCH(v, readdir(v, ino, out, n));
}

int fsop_statfs(struct volume *v, struct statvfs *out)
{
	DISPATCH(v, statfs(v, out, 0));
}

/* For status reports: never waits for a coordinator (2 s at most). */
int fsop_statfs_quick(struct volume *v, struct statvfs *out)
{
	if (!v->cluster)
		return ops_local.statfs(v, out, 0);
	if (!cluster_ready(v->cluster))
		return -EAGAIN;
	int role = cluster_enter(v->cluster);
	if (role < 0)
		return role;
	int rc = ops_for(role)->statfs(v, out, 2000);
	cluster_leave(v->cluster);
	return rc;
}

int fsop_getxattr(struct volume *v, ext2_ino_t ino, const char *name, void *buf, size_t size)
{
	DISPATCH(v, getxattr(v, ino, name, buf, size));
}

int fsop_listxattr(struct volume *v, ext2_ino_t ino, char *buf, size_t size)
{
	DISPATCH(v, listxattr(v, ino, buf, size));
}

int fsop_setxattr(struct volume *v, ext2_ino_t ino, const char *name, const void *value,
		  size_t size, int flags)
{
	CHANGE(v, setxattr(v, ino, name, value, size, flags));
}

int fsop_removexattr(struct volume *v, ext2_ino_t ino, const char *name)
{
	CHANGE(v, removexattr(v, ino, name));
}

/* ---- open files ------------------------------------------------------------ */

int fsop_create_open(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
		     const struct meta_cred *cred, struct meta_attr *out, struct minode **m)
{
	CHECK_NAME(name);
	CHANGE(v, create_open(v, parent, name, mode, cred, out, m));
}

int fsop_open(struct volume *v, ext2_ino_t ino, uint32_t gen, int truncate, struct minode **out)
{
	if (truncate)
		CHANGE(v, open(v, ino, gen, truncate, out));
	DISPATCH(v, open(v, ino, gen, truncate, out));
}

static int release_once(struct volume *v, struct minode *m)
{
	CHANGE(v, release(v, m));
}

int fsop_release(struct volume *v, struct minode *m)
{
	int rc = release_once(v, m);
	minode_put(v, m);
	return rc;
}

int fsop_fsync(struct volume *v, struct minode *m, int datasync)
{
	CHANGE(v, fsync(v, m, datasync));
}

int fsop_syncfs(struct volume *v)
{
	CHANGE(v, syncfs(v));
}

int fsop_fallocate(struct volume *v, struct minode *m, int mode, uint64_t off, uint64_t len)
{
	CHANGE(v, fallocate(v, m, mode, off, len));
}

int fsop_seek(struct volume *v, struct minode *m, uint64_t off, int whence, uint64_t *out)
{
	DISPATCH(v, seek(v, m, off, whence, out));
}

/* ---- file locks ------------------------------------------------------------- */

int fsop_setlk(struct volume *v, const struct plock *req, int *granted, uint64_t *gen)
{
	DISPATCH(v, setlk(v, req, 0, granted, gen));
}

int fsop_getlk(struct volume *v, const struct plock *req, struct plock *conflict, int *found)
{
	DISPATCH(v, getlk(v, req, conflict, found));
}

int fsop_unlock_all(struct volume *v, uint32_t ino, enum plock_by by, uint64_t key)
{
	DISPATCH(v, unlock_all(v, v->node_name, ino, by, key));
}

int fsop_lkwait(struct volume *v, uint64_t gen, unsigned timeout_ms, uint64_t *out)
{
	DISPATCH(v, lkwait(v, gen, timeout_ms, out));
}

/* ---- file data ------------------------------------------------------------- */

/* Runs a data transfer, going on after a role change with what is left:
 * data moves in pieces, each whole or not at all. */
static ssize_t transfer(struct volume *v, struct minode *m, char *rbuf, const char *wbuf,
			size_t len, uint64_t off)
{
	if (!v->cluster)
		return rbuf ? data_read(v, &ops_local, m, rbuf, len, off)
			    : data_write(v, &ops_local, m, wbuf, len, off);
	size_t done = 0;
	for (uint64_t since = 0;;) {
		int role = cluster_enter(v->cluster);
		if (role < 0)
			return done ? (ssize_t)done : role;
		const struct fs_ops *ops = ops_for(role);
		ssize_t n = rbuf ? data_read(v, ops, m, rbuf + done, len - done, off + done)
				 : data_write(v, ops, m, wbuf + done, len - done, off + done);
		if (n < 0)
			n = cluster_rerun_if_path_gone(v->cluster, role, (int)n);
		cluster_leave(v->cluster);
		if (n > 0) {
			done += (size_t)n;
			if (done >= len || rbuf)
				return (ssize_t)done;   /* a short read is EOF */
			continue;
		}
		if (n == 0)
			return (ssize_t)done;
		if (n != -ERESTART || cluster_wait_coordinator(v->cluster, &since))
			return done ? (ssize_t)done : (n == -ERESTART ? -EIO : n);
	}
}

ssize_t fsop_read(struct volume *v, struct minode *m, char *buf, size_t len, uint64_t off)
{
	return transfer(v, m, buf, NULL, len, off);
}

ssize_t fsop_write(struct volume *v, struct minode *m, const char *buf, size_t len, uint64_t off)
{
	int rc = change_begin(v);
	if (rc)
		return rc;
	ssize_t n = transfer(v, m, NULL, buf, len, off);
	change_end(v);
	return n;
}
