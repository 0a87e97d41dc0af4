/* ops_local (fs/ops.h): the operations in this node's metadata engine (the
 * coordinator, or a standalone node). Most are the engine's meta_* as they
 * are; those that free or unwrite blocks other nodes may hold layouts of
 * (truncate, O_TRUNC, punch, zero range) recall those layouts first. */
#include "fs/ops.h"
#include "fs/cluster.h"
#include "fs/proto.h"

#include <errno.h>
#include <string.h>
#include <linux/falloc.h>

/* ---- exactly once across a takeover by this node (docs/cluster.md) ---------
 * This node sent op to a coordinator that died before answering, and is the
 * coordinator now: if the old one applied it, the reply table holds it under
 * the request id, and it is answered as it was instead of applied again. */
static int applied_before(struct volume *v, uint16_t op, struct meta_reply_slot *done)
{
	struct meta_reply_key k;
	if (!v->cluster || !remote_once_sent(v, op, &k) || meta_reply_lookup(v, &k, done) != 1)
		return 0;
	csvfs_log(LOG_INFO_L, "this node's %s (slot %u, seq %u) was applied by the coordinator before "
		  "it: answered from the reply table", proto_op_name(op), k.slot, k.seq);
	return 1;
}

/* The answer of an applied change that has attributes (out may be NULL). */
static int applied_attr(struct volume *v, const struct meta_reply_slot *done, struct meta_attr *out)
{
	struct meta_attr a;
	int rc = meta_reply_attr(v, done, &a);
	if (rc == 0 && out)
		*out = a;
	return rc;
}

static int local_create(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
			uint32_t rdev, const struct meta_cred *cred, struct meta_attr *out)
{
	struct meta_reply_slot d;
	return applied_before(v, OP_CREATE, &d) ? applied_attr(v, &d, out)
						: meta_create(v, parent, name, mode, rdev, cred, out);
}

static int local_symlink(struct volume *v, ext2_ino_t parent, const char *name, const char *target,
			 const struct meta_cred *cred, struct meta_attr *out)
{
	struct meta_reply_slot d;
	return applied_before(v, OP_SYMLINK, &d) ? applied_attr(v, &d, out)
						 : meta_symlink(v, parent, name, target, cred, out);
}

static int local_link(struct volume *v, ext2_ino_t ino, ext2_ino_t newparent, const char *newname,
		      struct meta_attr *out)
{
	struct meta_reply_slot d;
	return applied_before(v, OP_LINK, &d) ? applied_attr(v, &d, out)
					      : meta_link(v, ino, newparent, newname, out);
}

static int local_unlink(struct volume *v, ext2_ino_t parent, const char *name)
{
	struct meta_reply_slot d;
	return applied_before(v, OP_UNLINK, &d) ? 0 : meta_unlink(v, parent, name);
}

static int local_rmdir(struct volume *v, ext2_ino_t parent, const char *name)
{
	struct meta_reply_slot d;
	return applied_before(v, OP_RMDIR, &d) ? 0 : meta_rmdir(v, parent, name);
}

static int local_rename(struct volume *v, ext2_ino_t parent, const char *name, ext2_ino_t newparent,
			const char *newname, unsigned flags, const struct meta_cred *cred)
{
	struct meta_reply_slot d;
	return applied_before(v, OP_RENAME, &d)
		       ? 0 : meta_rename_cred(v, parent, name, newparent, newname, flags, cred);
}

/* Coordinator: a truncate frees blocks other nodes may hold layouts of. */
static int local_setattr(struct volume *v, ext2_ino_t ino, const struct meta_setattr *sa,
			 struct meta_attr *out)
{
	struct meta_reply_slot d;
	if (applied_before(v, OP_SETATTR, &d))
		return applied_attr(v, &d, out);
	void *recall = NULL;
	int rc = 0;
	if ((sa->valid & META_SET_SIZE) && v->cluster)
		rc = cluster_recall_begin(v->cluster, ino, &recall);
	if (rc == 0)
		rc = meta_setattr(v, ino, sa, out);
	if (recall)
		cluster_recall_end(v->cluster, recall);
	return rc;
}

static int local_open(struct volume *v, ext2_ino_t ino, uint32_t gen, int truncate,
		      struct minode **out)
{
	struct meta_reply_slot d;
	if (truncate && applied_before(v, OP_OPEN, &d)) {
		/* truncated already: opened again, not truncated again (the
		 * file may hold what others wrote since) */
		int rc = applied_attr(v, &d, NULL);
		if (rc)
			return rc;
		ino = d.ino;
		gen = d.gen;
		truncate = 0;
	}
	struct minode *m = minode_get(v, ino);
	if (!m)
		return -ESTALE;   /* freed since the lookup: the kernel looks up again (meta_open) */
	void *recall = NULL;
	int rc = truncate && v->cluster ? cluster_recall_begin(v->cluster, ino, &recall) : 0;
	if (rc == 0)
		rc = meta_open(v, m, gen, truncate);
	if (recall)
		cluster_recall_end(v->cluster, recall);
	if (rc) {
		minode_put(v, m);
		return rc;
	}
	*out = m;
	return 0;
}

/* A new regular file, opened: one round trip for a participant. */
static int local_create_open(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
			     const struct meta_cred *cred, struct meta_attr *out, struct minode **m)
{
	struct meta_reply_slot d;
	int rc = applied_before(v, OP_CREATE_OPEN, &d) ? applied_attr(v, &d, out)
						       : meta_create(v, parent, name, mode, 0, cred, out);
	return rc ? rc : local_open(v, (ext2_ino_t)out->ino, out->generation, 0, m);
}

/* Collapse and insert range are refused (meta_fallocate, docs/cluster.md). */
#define FALLOC_UNWRITES (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)

static int local_fallocate(struct volume *v, struct minode *m, int mode, uint64_t off, uint64_t len)
{
	struct meta_reply_slot d;
	uint64_t size;
	if (applied_before(v, OP_FALLOCATE, &d))
		return meta_reply_size(v, &d, &size);
	void *recall = NULL;
	int rc = (mode & FALLOC_UNWRITES) && v->cluster ? cluster_recall_begin(v->cluster, m->ino, &recall) : 0;
	if (rc == 0)
		rc = meta_fallocate(v, m, mode, off, len);
	if (recall)
		cluster_recall_end(v->cluster, recall);
	return rc;
}

static int local_setxattr(struct volume *v, ext2_ino_t ino, const char *name, const void *value,
			  size_t size, int flags)
{
	struct meta_reply_slot d;
	return applied_before(v, OP_SETXATTR, &d) ? 0 : meta_setxattr(v, ino, name, value, size, flags);
}

static int local_removexattr(struct volume *v, ext2_ino_t ino, const char *name)
{
	struct meta_reply_slot d;
	return applied_before(v, OP_REMOVEXATTR, &d) ? 0 : meta_removexattr(v, ino, name);
}

static int local_statfs(struct volume *v, struct statvfs *out, unsigned timeout_ms)
{
	(void)timeout_ms;   /* the engine answers at once */
	return meta_statfs(v, out);
}

/* The engine's size is the size. */
static int local_refresh_size(struct volume *v, struct minode *m, uint64_t end)
{
	(void)v, (void)m, (void)end;
	return 0;
}

/* The coordinator's own written ranges wait in m->pend until their journal
 * transaction is durable (fs/meta_pending.c): should its path fail, it gives
 * up the role with them unwritten and commits them again to its successor. */
#define COORD_PENDING_MAX 256

static int local_commit_write(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len,
			      uint64_t new_size)
{
	int rc = meta_commit_write(v, m, lblk, len, new_size);
	if (rc || !v->cluster || !v->remote)
		return rc;
	minode_pend_add(m, lblk, len, new_size, v->remote->epoch(v->remote->ctx), volume_txn_open(v));
	if (minode_pend_count(m) <= COORD_PENDING_MAX)
		return 0;
	minode_pend_prune(v, m, 0);
	if (minode_pend_count(m) > COORD_PENDING_MAX && volume_sync(v) == 0)
		minode_pend_prune(v, m, 0);
	return 0;
}

/* ---- file locks: this node's table is the authority ------------------------ */

static int local_setlk(struct volume *v, const struct plock *req, int reclaim, int *granted,
		       uint64_t *gen)
{
	int grace = plock_in_grace(v->plocks);
	if (reclaim && grace) {
		plock_apply(v->plocks, req);   /* granted by the previous coordinator */
		*granted = 1;
		*gen = plock_gen(v->plocks);
		return 0;
	}
	if (grace)
		return -EBUSY;   /* late reclaims are checked like new requests */
	*granted = plock_set(v->plocks, req, gen) == 0;
	return 0;
}

/* A holder on another node has no pid the requester's kernel could name. */
static int local_getlk(struct volume *v, const struct plock *req, struct plock *conflict, int *found)
{
	if (plock_in_grace(v->plocks))
		return -EBUSY;
	*found = plock_test(v->plocks, req, conflict);
	if (*found && strcmp(conflict->node, req->node) != 0)
		conflict->pid = 0;
	return 0;
}

static int local_unlock_all(struct volume *v, const char *node, uint32_t ino, enum plock_by by,
			    uint64_t key)
{
	plock_release(v->plocks, node, ino, by, key);
	return 0;
}

static int local_lkwait(struct volume *v, uint64_t gen, unsigned timeout_ms, uint64_t *out)
{
	*out = plock_wait_change(v->plocks, gen, timeout_ms);
	return 0;
}

static int local_reclaim_done(struct volume *v, const char *node)
{
	plock_reclaim_done(v->plocks, node);
	return 0;
}

const struct fs_ops ops_local = {
	.name = "local",
	.lookup = meta_lookup,
	.getattr = meta_getattr,
	.setattr = local_setattr,
	.create = local_create,
	.symlink = local_symlink,
	.link = local_link,
	.unlink = local_unlink,
	.rmdir = local_rmdir,
	.rename = local_rename,
	.readlink = meta_readlink,
	.readdir = meta_readdir,
	.statfs = local_statfs,
	.getxattr = meta_getxattr,
	.listxattr = meta_listxattr,
	.setxattr = local_setxattr,
	.removexattr = local_removexattr,
	.create_open = local_create_open,
	.open = local_open,
	.release = meta_release,
	.fsync = meta_fsync,
	.syncfs = volume_sync,
	.fallocate = local_fallocate,
	.seek = meta_seek,
	.map = meta_map,
	.alloc = meta_alloc,
	.commit_write = local_commit_write,
	.touch_write = meta_touch_write,
	.write_check = meta_write_check,
	.refresh_size = local_refresh_size,
	.setlk = local_setlk,
	.getlk = local_getlk,
	.unlock_all = local_unlock_all,
	.lkwait = local_lkwait,
	.reclaim_done = local_reclaim_done,
};
