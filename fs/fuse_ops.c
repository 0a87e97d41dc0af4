/* The FUSE front end (libfuse3 low-level API): translates kernel requests into
 * metadata-engine calls and data-path I/O. No filesystem logic lives here. */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include "fs/meta.h"
#include "fs/cluster.h"
#include "fs/fsops.h"
#include "fs/fuse_ops.h"
#include "fs/fuse_alias.h"
#include "fs/fuse_locks.h"
#include "fs/locks.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Standalone, this daemon is the only writer and the kernel may cache names
 * and attributes for a second. In a cluster another node may change them at
 * any moment: answers get no cache time, except a participant's answers
 * given under the attribute locks (ATTR_CACHE_S, attr_cache_time below). */
#define ATTR_TIMEOUT(req) (vol(req)->cluster ? 0.0 : 1.0)
#define ENTRY_TIMEOUT(req) ATTR_TIMEOUT(req)
/* A participant's kernel keeps a file's attributes this long while the
 * file's attribute lock is held; a recall drops them at once. */
#define ATTR_CACHE_S 60.0

/* FUSE's root is 1; ext4's is 2. ext4 inode 1 (bad blocks) is never shown. */
/* The kernel's node id carries the inode's generation with its number: a
 * number freed and reused by another file is another node id, so a name
 * looked up before the reuse can never reach the new file. */
static ext2_ino_t to_ext(fuse_ino_t id)
{
	return id == FUSE_ROOT_ID ? EXT2_ROOT_INO : (ext2_ino_t)(id & 0xffffffffu);
}

static uint32_t gen_of(fuse_ino_t id)
{
	id = alias_canonical(id);
	return id == FUSE_ROOT_ID ? 0 : (uint32_t)(id >> 32);
}

static fuse_ino_t to_fuse(const struct meta_attr *a)
{
	return a->ino == EXT2_ROOT_INO ? FUSE_ROOT_ID : ((fuse_ino_t)a->generation << 32) | a->ino;
}

/* Attributes that came back for the number of id, but of another file. */
static int other_file(fuse_ino_t id, const struct meta_attr *a)
{
	return id != FUSE_ROOT_ID && a->generation != gen_of(id);
}

static struct volume *vol(fuse_req_t req)
{
	return ((struct csvfs_fuse *)fuse_req_userdata(req))->vol;
}

struct csvfs_file {
	struct minode *m;
	int flags;
	_Atomic int locked;     /* a file lock was taken through this open */
};

static struct csvfs_file *fh_of(struct fuse_file_info *fi)
{
	return (struct csvfs_file *)(uintptr_t)fi->fh;
}

static void attr_to_stat(const struct meta_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_size = (off_t)a->size;
	st->st_blocks = (blkcnt_t)a->blocks;
	st->st_blksize = 4096;
	st->st_rdev = a->rdev;
	st->st_atim = a->atime;
	st->st_mtim = a->mtime;
	st->st_ctim = a->ctime;
}

/* A reply the kernel did not take gives it no lookup of id: an alternate
 * id's hold is given back (fs/fuse_alias.h). */
static void reply_entry_timed(fuse_req_t req, const struct meta_attr *a, fuse_ino_t id, double attr_timeout,
			      double entry_timeout)
{
	struct fuse_entry_param e = { 0 };
	e.ino = id;
	e.generation = a->generation;
	e.attr_timeout = attr_timeout;
	e.entry_timeout = entry_timeout;
	attr_to_stat(a, &e.attr);
	if (fuse_reply_entry(req, &e) != 0)
		alias_forget(id, 1);
}

static void reply_entry_as(fuse_req_t req, const struct meta_attr *a, fuse_ino_t id)
{
	reply_entry_timed(req, a, id, ATTR_TIMEOUT(req), ENTRY_TIMEOUT(req));
}

/* Attribute caching on a participant (docs/cluster.md, "Attribute
 * caching"): the mark is taken before the request for the attributes. */
static uint64_t attr_mark(struct volume *v)
{
	return v->cluster ? cluster_attr_mark(v->cluster) : 0;
}

/* How long the kernel may keep a; *held: cluster_attr_replied must follow
 * the reply (a recall waits for it). */
static double attr_cache_time(struct volume *v, const struct meta_attr *a, fuse_ino_t id, uint64_t mark,
			      int lookup, int *held)
{
	*held = 0;
	if (!v->cluster)
		return 1.0;
	/* Only under the file's own node id: a recall drops that one; a
	 * directory's alternate ids (fs/fuse_alias.h) are never cached. */
	*held = id == to_fuse(a) &&
		cluster_attr_cacheable(v->cluster, a->ino, a->generation, S_ISDIR(a->mode), mark, lookup);
	return *held ? ATTR_CACHE_S : 0.0;
}

static void attr_replied(struct volume *v, const struct meta_attr *a, int held)
{
	if (held)
		cluster_attr_replied(v->cluster, a->ino);
}

void csvfs_fuse_inval_attr(void *session, ext2_ino_t ino, uint32_t gen)
{
	/* attributes only (offset -1): no page lock, so no request of ours in
	 * the kernel can be waiting on what this waits for */
	fuse_ino_t id = ino == EXT2_ROOT_INO ? FUSE_ROOT_ID : ((fuse_ino_t)gen << 32) | ino;
	fuse_lowlevel_notify_inval_inode(session, id, -1, 0);
}

/* FUSE_NOTIFY_INC_EPOCH (kernel 6.16, FUSE 7.44; libfuse 3.14 has no call
 * for it): every dentry looked up before it is looked up again. Unlike
 * fuse_lowlevel_notify_inval_entry it takes no directory lock, so a recall
 * cannot wait for a request of this node (which may hold that lock while it
 * waits, at the coordinator, for the very recall). */
#define NOTIFY_INC_EPOCH 8

int csvfs_fuse_inval_entries_all(void *session)
{
	struct { uint32_t len; int32_t error; uint64_t unique; } hdr = { sizeof(hdr), NOTIFY_INC_EPOCH, 0 };
	ssize_t n = write(fuse_session_fd(session), &hdr, sizeof(hdr));
	return n == (ssize_t)sizeof(hdr) ? 0 : -errno;
}

static void inval_entries(void *session)
{
	int rc = csvfs_fuse_inval_entries_all(session);
	if (rc)
		csvfs_log(LOG_ERR_L, "cannot make the kernel look names up again: %s", strerror(-rc));
}

void csvfs_fuse_cluster_caches(struct volume *v, void *session)
{
	/* The kernel takes the epoch notification, or names are not cached. */
	int rc = csvfs_fuse_inval_entries_all(session);
	if (rc)
		csvfs_log(LOG_INFO_L, "volume %s: this kernel cannot drop all cached names at once (%s): "
			  "names are not cached, attributes are", v->uuid, strerror(-rc));
	cluster_attr_set_inval(v->cluster, csvfs_fuse_inval_attr, rc ? NULL : inval_entries, session);
}

static void reply_entry(fuse_req_t req, int rc, const struct meta_attr *a)
{
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	reply_entry_as(req, a, to_fuse(a));
}

static struct meta_cred cred_of(fuse_req_t req)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	return (struct meta_cred){ .uid = c->uid, .gid = c->gid, .umask = c->umask };
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct csvfs_fuse *cf = userdata;
	if (conn->capable & FUSE_CAP_POSIX_ACL)
		conn->want |= FUSE_CAP_POSIX_ACL;      /* the kernel enforces ACLs */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;    /* other nodes must see writes */
	/* every chunk of a listing with attributes, not the first alone: `ls -l`
	 * reads the whole directory before its first stat, and a participant
	 * answers readdirplus from one listing (op_opendir) */
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	/* file locks are ours, cluster-wide (fs/fuse_locks.c) */
	conn->want |= conn->capable & (FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
	conn->max_write = 1u << 20;
	/* async direct I/O (a VM's queue) travels as background requests: let
	 * as many be in flight as the daemon has workers */
	conn->max_background = FUSE_WORKERS_MAX;
	conn->congestion_threshold = FUSE_WORKERS_MAX * 3 / 4;
	conn->max_readahead = 1u << 20;
	cf->acl_enforced = (conn->want & FUSE_CAP_POSIX_ACL) != 0;
}

static struct alias_table *aliases(fuse_req_t req)
{
	return ((struct csvfs_fuse *)fuse_req_userdata(req))->aliases;
}

/* The node id to tell the kernel a file by as parent/name: a directory's
 * may be an alternate one (fs/fuse_alias.h); readdirplus does not wait (it
 * holds the directory it reads, often the old parent). */
static fuse_ino_t tell_id(fuse_req_t req, const struct meta_attr *a, fuse_ino_t parent, const char *name,
			  int wait)
{
	fuse_ino_t id = to_fuse(a);
	if (!S_ISDIR(a->mode))
		return id;
	fuse_ino_t told = alias_tell_dir(aliases(req), id, parent, name, wait);
	if (told != id)
		csvfs_log(LOG_DEBUG_L, "directory inode %llu is %s here under node id %#llx (it moved on "
			  "another node; its old dentry may live on)", (unsigned long long)a->ino, name,
			  (unsigned long long)told);
	return told;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct meta_attr a;
	struct volume *v = vol(req);
	uint64_t mark = attr_mark(v);
	int rc = fsop_lookup(v, to_ext(parent), name, &a);
	/* the name, or its absence, under the directory's lock */
	int dir_held = (rc == 0 || rc == -ENOENT) && v->cluster &&
		       cluster_entries_cacheable(v->cluster, to_ext(parent), mark);
	double entry_t = dir_held ? ATTR_CACHE_S : v->cluster ? 0.0 : 1.0;
	if (rc == -ENOENT && dir_held) {
		struct fuse_entry_param e = { .entry_timeout = entry_t };   /* ino 0: a negative entry */
		fuse_reply_entry(req, &e);
	} else if (rc) {
		fuse_reply_err(req, -rc);
	} else {
		int held;
		fuse_ino_t id = tell_id(req, &a, parent, name, 1);
		double t = attr_cache_time(v, &a, id, mark, 1, &held);
		reply_entry_timed(req, &a, id, t, entry_t);
		attr_replied(v, &a, held);
	}
	if (dir_held)
		cluster_attr_replied(v->cluster, to_ext(parent));
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct meta_attr a;
	struct volume *v = vol(req);
	uint64_t mark = attr_mark(v);
	int rc = fsop_getattr(v, to_ext(ino), &a);
	/* The file is gone (freed, or its number reused): a stat racing an
	 * unlink on another node finds no file, as if it came just after. */
	if (rc == -ESTALE || (rc == 0 && other_file(ino, &a)))
		rc = -ENOENT;
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	struct stat st;
	attr_to_stat(&a, &st);
	int held;
	double t = attr_cache_time(v, &a, ino, mark, 0, &held);
	fuse_reply_attr(req, &st, t);
	attr_replied(v, &a, held);
}

static void op_forget_one(struct volume *v, fuse_ino_t id, uint64_t nlookup)
{
	if (v->cluster && id != FUSE_ROOT_ID)
		cluster_attr_forget(v->cluster, to_ext(id), gen_of(id));
	alias_forget(id, nlookup);   /* after gen_of: the last one ends id */
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	op_forget_one(vol(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		op_forget_one(vol(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	(void)fi;
	struct meta_setattr sa = { 0 };
	if (to_set & FUSE_SET_ATTR_MODE) { sa.valid |= META_SET_MODE; sa.mode = attr->st_mode; }
	if (to_set & FUSE_SET_ATTR_UID) { sa.valid |= META_SET_UID; sa.uid = attr->st_uid; }
	if (to_set & FUSE_SET_ATTR_GID) { sa.valid |= META_SET_GID; sa.gid = attr->st_gid; }
	if (to_set & FUSE_SET_ATTR_SIZE) { sa.valid |= META_SET_SIZE; sa.size = (uint64_t)attr->st_size; }
	if (to_set & FUSE_SET_ATTR_ATIME_NOW) sa.valid |= META_SET_ATIME_NOW;
	else if (to_set & FUSE_SET_ATTR_ATIME) { sa.valid |= META_SET_ATIME; sa.atime = attr->st_atim; }
	if (to_set & FUSE_SET_ATTR_MTIME_NOW) sa.valid |= META_SET_MTIME_NOW;
	else if (to_set & FUSE_SET_ATTR_MTIME) { sa.valid |= META_SET_MTIME; sa.mtime = attr->st_mtim; }
	if (to_set & FUSE_SET_ATTR_CTIME) { sa.valid |= META_SET_CTIME; sa.ctime = attr->st_ctim; }
	struct meta_attr a;
	int rc = fsop_setattr(vol(req), to_ext(ino), &sa, &a);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	struct stat st;
	attr_to_stat(&a, &st);
	fuse_reply_attr(req, &st, ATTR_TIMEOUT(req));
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[4097];
	int rc = fsop_readlink(vol(req), to_ext(ino), buf, sizeof(buf));
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_readlink(req, buf);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct meta_cred c = cred_of(req);
	struct meta_attr a;
	reply_entry(req, fsop_create(vol(req), to_ext(parent), name, mode, (uint32_t)rdev, &c, &a), &a);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct meta_cred c = cred_of(req);
	struct meta_attr a;
	int rc = fsop_create(vol(req), to_ext(parent), name, (mode & 07777) | S_IFDIR, 0, &c, &a);
	if (rc)
		fuse_reply_err(req, -rc);
	else   /* a new directory: no alias to move */
		reply_entry_as(req, &a, tell_id(req, &a, parent, name, 0));
}

static void op_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name)
{
	struct meta_cred c = cred_of(req);
	struct meta_attr a;
	reply_entry(req, fsop_symlink(vol(req), to_ext(parent), name, target, &c, &a), &a);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct meta_attr a;
	reply_entry(req, fsop_link(vol(req), to_ext(ino), to_ext(newparent), newname, &a), &a);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -fsop_unlink(vol(req), to_ext(parent), name));
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -fsop_rmdir(vol(req), to_ext(parent), name));
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	unsigned mf = 0;
	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (flags & RENAME_NOREPLACE)
		mf |= META_RENAME_NOREPLACE;
	if (flags & RENAME_EXCHANGE)
		mf |= META_RENAME_EXCHANGE;
	if (flags & RENAME_WHITEOUT)
		mf |= META_RENAME_WHITEOUT;
	struct meta_cred c = cred_of(req);
	int rc = fsop_rename(vol(req), to_ext(parent), name, to_ext(newparent), newname, mf, &c);
	if (rc == 0)
		alias_renamed(aliases(req), parent, name, newparent, newname, (flags & RENAME_EXCHANGE) != 0);
	else
		csvfs_log(LOG_DEBUG_L, "rename %#llx/%s -> %#llx/%s (flags %#x): %s", (unsigned long long)parent,
			  name, (unsigned long long)newparent, newname, flags, strerror(-rc));
	fuse_reply_err(req, -rc);
}

/* The file handle of an open inode. */
static int attach_handle(struct minode *m, struct fuse_file_info *fi)
{
	struct csvfs_file *fh = calloc(1, sizeof(*fh));
	if (!fh)
		return -ENOMEM;
	fh->m = m;
	fh->flags = fi->flags;
	fi->fh = (uintptr_t)fh;
	/* O_DIRECT bypasses the kernel's page cache; buffered opens drop it on
	 * open, so a file changed elsewhere is seen after close-to-open. */
	fi->direct_io = (fi->flags & O_DIRECT) ? 1 : 0;
	fi->keep_cache = 0;
	return 0;
}

static int open_handle(struct volume *v, fuse_ino_t id, struct fuse_file_info *fi)
{
	if (v->read_only && (fi->flags & O_ACCMODE) != O_RDONLY)
		return -EROFS;
	/* With FUSE_CAP_ATOMIC_O_TRUNC (libfuse's default) O_TRUNC arrives here,
	 * not as a setattr. */
	int trunc = (fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY;
	struct minode *m;
	int rc = fsop_open(v, to_ext(id), gen_of(id), trunc, &m);
	if (rc == 0 && (rc = attach_handle(m, fi)) != 0)
		fsop_release(v, m);
	return rc;
}

/* The kernel checks permissions on what it looked up; a file another node
 * created after that lookup is checked here, by its mode bits (an ACL's
 * mask is in the group bits, so this is never more permissive). */
static int may_open_existing(fuse_req_t req, const struct meta_attr *a, int flags)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	unsigned want = ((flags & O_ACCMODE) != O_WRONLY ? 4 : 0) |
			((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) ? 2 : 0);
	if (ctx->uid == 0)
		return 0;
	unsigned bits = a->mode & 07;
	if (ctx->uid == a->uid) {
		bits = (a->mode >> 6) & 07;
	} else {
		gid_t groups[64];
		int n = fuse_req_getgroups(req, 64, groups);
		int member = ctx->gid == a->gid;
		for (int i = 0; i < n && i < 64 && !member; i++)
			member = groups[i] == a->gid;
		if (member)
			bits = (a->mode >> 3) & 07;
	}
	return (bits & want) == want ? 0 : -EACCES;
}

/* open(O_CREAT) without O_EXCL of a name that another node or process
 * created after the kernel's lookup: open that file, as a local filesystem
 * does (its VFS holds the directory lock from lookup to create; a cluster
 * cannot). Bounded: the name may come and go meanwhile. */
static int create_or_open(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			  struct fuse_file_info *fi, struct meta_attr *a, struct minode **m)
{
	struct volume *v = vol(req);
	struct meta_cred c = cred_of(req);
	int trunc = (fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY;
	int rc = -EEXIST;
	for (int tries = 0; tries < 8 && rc == -EEXIST; tries++) {
		rc = fsop_create_open(v, to_ext(parent), name, (mode & 07777) | S_IFREG, &c, a, m);
		if (rc != -EEXIST || (fi->flags & O_EXCL))
			return rc;
		rc = fsop_lookup(v, to_ext(parent), name, a);
		if (rc == 0 && !S_ISREG(a->mode))
			return S_ISDIR(a->mode) ? -EISDIR : -EEXIST;
		if (rc == 0)
			rc = may_open_existing(req, a, fi->flags);
		if (rc == 0)
			rc = fsop_open(v, (ext2_ino_t)a->ino, a->generation, trunc, m);
		if (rc == 0 && trunc)
			a->size = a->blocks = 0;
		if (rc == -ENOENT || rc == -ESTALE)
			rc = -EEXIST;                                  /* gone again: create */
	}
	return rc;
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct volume *v = vol(req);
	struct meta_attr a;
	struct minode *m;
	int rc = v->read_only ? -EROFS : create_or_open(req, parent, name, mode, fi, &a, &m);
	if (rc == 0 && (rc = attach_handle(m, fi)) != 0)
		fsop_release(v, m);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	struct fuse_entry_param e = { 0 };
	e.ino = to_fuse(&a);
	e.generation = a.generation;
	e.attr_timeout = ATTR_TIMEOUT(req);
	e.entry_timeout = ENTRY_TIMEOUT(req);
	attr_to_stat(&a, &e.attr);
	fuse_reply_create(req, &e, fi);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int rc = open_handle(vol(req), ino, fi);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_open(req, fi);
}

/* A lock taken through this open was lost with the node's cluster
 * membership: its I/O fails rather than run unprotected. */
static int lock_lost(struct volume *v, struct fuse_file_info *fi)
{
	return atomic_load(&fh_of(fi)->locked) && atomic_load(&v->lock_epoch) &&
	       locks_fh_lost(v, fi->fh);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	if (lock_lost(vol(req), fi)) {
		fuse_reply_err(req, EIO);
		return;
	}
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t n = fsop_read(vol(req), fh_of(fi)->m, buf, size, (uint64_t)off);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)ino;
	struct volume *v = vol(req);
	struct csvfs_file *fh = fh_of(fi);
	if (lock_lost(v, fi)) {
		fuse_reply_err(req, EIO);
		return;
	}
	ssize_t n = fsop_write(v, fh->m, buf, size, (uint64_t)off);
	if (n >= 0 && (fh->flags & (O_SYNC | O_DSYNC))) {
		int rc = fsop_fsync(v, fh->m, (fh->flags & O_SYNC) != O_SYNC);
		if (rc)
			n = rc;
	}
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

/* A close: the closing process's POSIX locks on the file go (the kernel
 * leaves that to a filesystem that keeps its own locks). */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	locks_release(vol(req), fh_of(fi)->m->ino, PLOCK_BY_OWNER, fi->lock_owner);
	fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct volume *v = vol(req);
	struct csvfs_file *fh = fh_of(fi);
	ext2_ino_t ino_ext = fh->m->ino;
	locks_release(v, ino_ext, PLOCK_BY_FH, fi->fh);   /* OFD and flock locks of this open */
	int rc = fsop_release(v, fh->m);
	if (rc)
		csvfs_log(LOG_ERR_L, "inode %u: release failed: %s", ino_ext, strerror(-rc));
	free(fh);
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	fuse_reply_err(req, -fsop_fsync(vol(req), fh_of(fi)->m, datasync));
}

struct dir_handle {
	struct meta_dirent *d;
	size_t n;
	uint64_t mark;        /* attr_mark before the listing */
};

/* A participant's listing of a directory whose names' locks it did not hold
 * (at least this many): it asks for them, waits for the grants (bounded) and
 * lists again under them — one more round trip, and then the kernel's
 * getattr of each name is answered by the daemon's copy (cluster_attr_keep),
 * not by a round trip per name. */
#define RELIST_MISSED_MIN 8
#define RELIST_WAIT_MS 1000

static int list_dir(struct volume *v, ext2_ino_t dir, struct dir_handle *dh)
{
	dh->mark = attr_mark(v);
	int rc = fsop_readdir(v, dir, &dh->d, &dh->n);
	if (rc || !v->cluster || cluster_attr_keep(v->cluster, dir, dh->d, dh->n, dh->mark) < RELIST_MISSED_MIN)
		return rc;
	cluster_attr_wait_asked(v->cluster, RELIST_WAIT_MS);
	struct dir_handle again = { .mark = attr_mark(v) };
	if (fsop_readdir(v, dir, &again.d, &again.n) != 0)
		return 0;   /* the first listing stands */
	meta_free_dirents(dh->d, dh->n);
	*dh = again;
	cluster_attr_keep(v->cluster, dir, dh->d, dh->n, dh->mark);
	return 0;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dir_handle *dh = calloc(1, sizeof(*dh));
	if (!dh) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* A snapshot at open: offsets stay stable while the directory changes. */
	int rc = list_dir(vol(req), to_ext(ino), dh);
	if (rc) {
		free(dh);
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uintptr_t)dh;
	fuse_reply_open(req, fi);
}

static void do_readdir(fuse_req_t req, fuse_ino_t dir, size_t size, off_t off,
		       struct fuse_file_info *fi, int plus)
{
	struct dir_handle *dh = (struct dir_handle *)(uintptr_t)fi->fh;
	struct volume *v = vol(req);
	char *buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* the names, under the directory's lock held since before the listing */
	int dir_held = plus && v->cluster && cluster_entries_cacheable(v->cluster, to_ext(dir), dh->mark);
	size_t used = 0;
	for (size_t i = (size_t)off; i < dh->n; i++) {
		const struct meta_dirent *d = &dh->d[i];
		size_t need;
		fuse_ino_t told = 0;
		if (plus) {
			struct fuse_entry_param e = { 0 };
			struct meta_attr a = d->attr;
			if (!d->has_attr && fsop_getattr(v, (ext2_ino_t)d->ino, &a) != 0)
				continue; /* removed since the snapshot */
			e.ino = told = tell_id(req, &a, dir, d->name, 0);
			e.generation = a.generation;
			/* the attributes not: the kernel may make a new inode of
			 * them, which a recall could miss (cluster_attr_cacheable);
			 * its getattr finds the daemon's copy */
			e.attr_timeout = ATTR_TIMEOUT(req);
			e.entry_timeout = dir_held ? ATTR_CACHE_S : ENTRY_TIMEOUT(req);
			attr_to_stat(&a, &e.attr);
			need = fuse_add_direntry_plus(req, buf + used, size - used, d->name, &e, (off_t)i + 1);
		} else {
			struct stat st = { .st_ino = d->ino, .st_mode = d->type << 12 };
			need = fuse_add_direntry(req, buf + used, size - used, d->name, &st, (off_t)i + 1);
		}
		if (need > size - used) {
			if (plus)   /* not sent: the kernel takes no lookup of it */
				alias_forget(told, 1);
			break;
		}
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	if (dir_held)
		cluster_attr_replied(v->cluster, to_ext(dir));
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 1);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct dir_handle *dh = (struct dir_handle *)(uintptr_t)fi->fh;
	meta_free_dirents(dh->d, dh->n);
	free(dh);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino; (void)datasync; (void)fi;
	fuse_reply_err(req, -fsop_syncfs(vol(req)));
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	struct statvfs st;
	int rc = fsop_statfs(vol(req), &st);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_statfs(req, &st);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	int mf = ((flags & XATTR_CREATE_FLAG) ? META_XATTR_CREATE : 0) |
		 ((flags & XATTR_REPLACE_FLAG) ? META_XATTR_REPLACE : 0);
	fuse_reply_err(req, -fsop_setxattr(vol(req), to_ext(ino), name, value, size, mf));
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	char *buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	int n = fsop_getxattr(vol(req), to_ext(ino), name, buf, size);
	if (n < 0)
		fuse_reply_err(req, -n);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char *buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	int n = fsop_listxattr(vol(req), to_ext(ino), buf, size);
	if (n < 0)
		fuse_reply_err(req, -n);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, -fsop_removexattr(vol(req), to_ext(ino), name));
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	(void)ino;
	if (off < 0 || len <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fuse_reply_err(req, -fsop_fallocate(vol(req), fh_of(fi)->m, mode, (uint64_t)off, (uint64_t)len));
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	(void)ino;
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	uint64_t at;
	int rc = fsop_seek(vol(req), fh_of(fi)->m, (uint64_t)off, whence, &at);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_lseek(req, (off_t)at);
}

/* ---- file locks (fs/fuse_locks.c) ---------------------------------------------- */

static void op_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock)
{
	(void)ino;
	fuse_getlk(req, vol(req), fh_of(fi)->m->ino, fi, lock);
}

static void op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock,
		     int sleep)
{
	(void)ino;
	atomic_store(&fh_of(fi)->locked, 1);
	fuse_setlk(req, vol(req), fh_of(fi)->m->ino, fi, lock, sleep);
}

static void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	(void)ino;
	atomic_store(&fh_of(fi)->locked, 1);
	fuse_flock(req, vol(req), fh_of(fi)->m->ino, fi, op);
}

const struct fuse_lowlevel_ops csvfs_fuse_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.symlink = op_symlink,
	.link = op_link,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.create = op_create,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.fallocate = op_fallocate,
	.lseek = op_lseek,
	.getlk = op_getlk,
	.setlk = op_setlk,
	.flock = op_flock,
};
