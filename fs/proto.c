/* The metadata operations, defined once (fs/proto.h): the codecs of the
 * shared structures, one encoder and one decoder per request shape and per
 * reply shape, and the table OPS that names, for every operation, its code,
 * name, idempotency and codecs, row for row as docs/protocol.md. */
#include "fs/proto.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A value out of range fails the reader like a short read, so a handler that
 * checks only rio_reader_end() refuses it too. */
static int refuse(struct rio_reader *r)
{
	if (!r->err)
		r->err = RIO_E_PROTO;
	return RIO_E_PROTO;
}

static void put_ts(struct rio_writer *w, struct timespec ts)
{
	rio_put_u64(w, (uint64_t)ts.tv_sec);
	rio_put_u32(w, (uint32_t)ts.tv_nsec);
}

static int get_ts(struct rio_reader *r, struct timespec *ts)
{
	uint64_t s = 0;
	uint32_t ns = 0;
	rio_get_u64(r, &s);
	int rc = rio_get_u32(r, &ns);
	if (rc == 0 && ns >= 1000000000u)
		return refuse(r);
	ts->tv_sec = (time_t)s;
	ts->tv_nsec = ns;
	return rc;
}

void proto_put_attr(struct rio_writer *w, const struct meta_attr *a)
{
	rio_put_u64(w, a->ino);
	rio_put_u64(w, a->size);
	rio_put_u64(w, a->blocks);
	rio_put_u32(w, a->mode);
	rio_put_u32(w, a->nlink);
	rio_put_u32(w, a->uid);
	rio_put_u32(w, a->gid);
	rio_put_u32(w, a->rdev);
	rio_put_u32(w, a->generation);
	put_ts(w, a->atime);
	put_ts(w, a->mtime);
	put_ts(w, a->ctime);
}

int proto_get_attr(struct rio_reader *r, struct meta_attr *a)
{
	memset(a, 0, sizeof(*a));
	rio_get_u64(r, &a->ino);
	rio_get_u64(r, &a->size);
	rio_get_u64(r, &a->blocks);
	rio_get_u32(r, &a->mode);
	rio_get_u32(r, &a->nlink);
	rio_get_u32(r, &a->uid);
	rio_get_u32(r, &a->gid);
	rio_get_u32(r, &a->rdev);
	rio_get_u32(r, &a->generation);
	get_ts(r, &a->atime);
	get_ts(r, &a->mtime);
	int rc = get_ts(r, &a->ctime);
	if (rc == 0 && (a->ino == 0 || a->ino > UINT32_MAX))
		return refuse(r);
	return r->err;
}

void proto_put_setattr(struct rio_writer *w, const struct meta_setattr *sa)
{
	rio_put_u32(w, sa->valid);
	rio_put_u32(w, sa->mode);
	rio_put_u32(w, sa->uid);
	rio_put_u32(w, sa->gid);
	rio_put_u64(w, sa->size);
	put_ts(w, sa->atime);
	put_ts(w, sa->mtime);
	put_ts(w, sa->ctime);
}

int proto_get_setattr(struct rio_reader *r, struct meta_setattr *sa)
{
	memset(sa, 0, sizeof(*sa));
	rio_get_u32(r, &sa->valid);
	rio_get_u32(r, &sa->mode);
	rio_get_u32(r, &sa->uid);
	rio_get_u32(r, &sa->gid);
	rio_get_u64(r, &sa->size);
	get_ts(r, &sa->atime);
	get_ts(r, &sa->mtime);
	int rc = get_ts(r, &sa->ctime);
	if (rc == 0 && (sa->valid & ~0x1ffu))
		return refuse(r);
	return r->err;
}

void proto_put_cred(struct rio_writer *w, const struct meta_cred *c)
{
	rio_put_u32(w, c->uid);
	rio_put_u32(w, c->gid);
	rio_put_u32(w, c->umask);
}

int proto_get_cred(struct rio_reader *r, struct meta_cred *c)
{
	rio_get_u32(r, &c->uid);
	rio_get_u32(r, &c->gid);
	int rc = rio_get_u32(r, &c->umask);
	return rc == 0 && c->umask > 0777 ? refuse(r) : rc;
}

void proto_put_extent(struct rio_writer *w, const struct meta_extent *e)
{
	rio_put_u64(w, e->lblk);
	rio_put_u64(w, e->len);
	rio_put_u64(w, e->pblk);
	rio_put_u8(w, (uint8_t)e->state);
}

int proto_get_extent(struct rio_reader *r, struct meta_extent *e)
{
	uint8_t st = 0;
	rio_get_u64(r, &e->lblk);
	rio_get_u64(r, &e->len);
	rio_get_u64(r, &e->pblk);
	int rc = rio_get_u8(r, &st);
	if (rc == 0 && (st > EXTENT_WRITTEN || e->len == 0 || e->lblk + e->len < e->lblk))
		return refuse(r);
	e->state = (enum extent_state)st;
	return rc;
}

void proto_put_statfs(struct rio_writer *w, const struct statvfs *st)
{
	rio_put_u64(w, st->f_bsize);
	rio_put_u64(w, st->f_frsize);
	rio_put_u64(w, st->f_blocks);
	rio_put_u64(w, st->f_bfree);
	rio_put_u64(w, st->f_bavail);
	rio_put_u64(w, st->f_files);
	rio_put_u64(w, st->f_ffree);
	rio_put_u64(w, st->f_favail);
	rio_put_u64(w, st->f_fsid);
	rio_put_u64(w, st->f_namemax);
}

int proto_get_statfs(struct rio_reader *r, struct statvfs *st)
{
	uint64_t f[10] = { 0 };
	int rc = 0;
	for (int i = 0; i < 10; i++)
		rc = rio_get_u64(r, &f[i]);
	memset(st, 0, sizeof(*st));
	st->f_bsize = f[0];
	st->f_frsize = f[1];
	st->f_blocks = f[2];
	st->f_bfree = f[3];
	st->f_bavail = f[4];
	st->f_files = f[5];
	st->f_ffree = f[6];
	st->f_favail = f[7];
	st->f_fsid = f[8];
	st->f_namemax = f[9];
	return rc;
}


/* ---- request fields ------------------------------------------------------- */

/* The root and ordinary inodes; never a reserved one (journal, resize, ...),
 * whatever a peer asks. Numbers past the volume's fail in the engine. */
static void get_ino(struct rio_reader *r, uint32_t *ino)
{
	if (rio_get_u32(r, ino) == 0 && *ino != EXT2_ROOT_INO && *ino < EXT2_GOOD_OLD_FIRST_INO)
		refuse(r);
}

/* A string of at most max bytes with its NUL, into buf. */
static const char *get_str(struct rio_reader *r, char *buf, size_t max)
{
	rio_get_str(r, buf, max);
	return buf;
}

/* A block range of a file: lblk + len within ext4's 2^32 blocks, no wrap. */
static int valid_range(uint64_t lblk, uint64_t len)
{
	return lblk < (1ull << 32) && len <= (1ull << 32) - lblk;
}

/* What CREATE makes: regular files, directories, devices, fifos, sockets. */
static int valid_create_mode(uint32_t mode)
{
	uint32_t t = mode & S_IFMT;
	return !(mode & ~(uint32_t)(S_IFMT | 07777)) &&
	       (t == S_IFREG || t == S_IFDIR || t == S_IFCHR || t == S_IFBLK || t == S_IFIFO ||
		t == S_IFSOCK);
}

/* 0, or refuses: the reader fails. */
static int check(struct rio_reader *r, int ok)
{
	return ok ? r->err : refuse(r);
}

/* ---- requests: one encoder and one decoder per shape ----------------------- */

static void put_none(struct rio_writer *w, const struct proto_req *q)
{
}

static int get_none(struct rio_reader *r, struct proto_req *q)
{
	return r->err;
}

static void put_inode(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->inode.ino);
}

static int get_inode(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->inode.ino);
	return r->err;
}

static void put_ino_name(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->ino_name.ino);
	rio_put_str(w, q->ino_name.name);
}

static int get_ino_name(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->ino_name.ino);
	q->ino_name.name = get_str(r, q->str[0], PROTO_NAME_MAX);
	return r->err;
}

static void put_setattr(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->setattr.ino);
	proto_put_setattr(w, &q->setattr.sa);
}

static int get_setattr(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->setattr.ino);
	proto_get_setattr(r, &q->setattr.sa);
	return r->err;
}

static void put_create(struct rio_writer *w, const struct proto_req *q)
{
	const struct proto_create *c = &q->create;
	rio_put_u32(w, c->parent);
	rio_put_str(w, c->name);
	rio_put_u32(w, c->mode);
	rio_put_u32(w, c->rdev);
	proto_put_cred(w, &c->cred);
}

static int get_create(struct rio_reader *r, struct proto_req *q)
{
	struct proto_create *c = &q->create;
	get_ino(r, &c->parent);
	c->name = get_str(r, q->str[0], PROTO_NAME_MAX);
	rio_get_u32(r, &c->mode);
	rio_get_u32(r, &c->rdev);
	proto_get_cred(r, &c->cred);
	return check(r, valid_create_mode(c->mode));
}

/* CREATE_OPEN makes regular files only. */
static int get_create_open(struct rio_reader *r, struct proto_req *q)
{
	get_create(r, q);
	return check(r, S_ISREG(q->create.mode) && q->create.rdev == 0);
}

static void put_symlink(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->symlink.parent);
	rio_put_str(w, q->symlink.name);
	rio_put_str(w, q->symlink.target);
	proto_put_cred(w, &q->symlink.cred);
}

static int get_symlink(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->symlink.parent);
	q->symlink.name = get_str(r, q->str[0], PROTO_NAME_MAX);
	q->symlink.target = get_str(r, q->str[1], PROTO_PATH_MAX);
	proto_get_cred(r, &q->symlink.cred);
	return r->err;
}

static void put_link(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->link.ino);
	rio_put_u32(w, q->link.newparent);
	rio_put_str(w, q->link.newname);
}

static int get_link(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->link.ino);
	get_ino(r, &q->link.newparent);
	q->link.newname = get_str(r, q->str[0], PROTO_NAME_MAX);
	return r->err;
}

static void put_rename(struct rio_writer *w, const struct proto_req *q)
{
	const struct proto_rename *n = &q->rename;
	rio_put_u32(w, n->parent);
	rio_put_str(w, n->name);
	rio_put_u32(w, n->newparent);
	rio_put_str(w, n->newname);
	rio_put_u32(w, n->flags);
	if (n->flags & META_RENAME_WHITEOUT)
		proto_put_cred(w, &n->cred);
}

static int get_rename(struct rio_reader *r, struct proto_req *q)
{
	struct proto_rename *n = &q->rename;
	get_ino(r, &n->parent);
	n->name = get_str(r, q->str[0], PROTO_NAME_MAX);
	get_ino(r, &n->newparent);
	n->newname = get_str(r, q->str[1], PROTO_NAME_MAX);
	rio_get_u32(r, &n->flags);
	if (n->flags & META_RENAME_WHITEOUT)
		proto_get_cred(r, &n->cred);
	return check(r, !(n->flags & ~META_RENAME_FLAGS));
}

static void put_readdir(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->readdir.ino);
	rio_put_u64(w, q->readdir.start);
}

static int get_readdir(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->readdir.ino);
	rio_get_u64(r, &q->readdir.start);
	return r->err;
}

static void put_getxattr(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->xattr_get.ino);
	rio_put_str(w, q->xattr_get.name);
	rio_put_u32(w, q->xattr_get.size);
}

static int get_getxattr(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->xattr_get.ino);
	q->xattr_get.name = get_str(r, q->str[0], PROTO_NAME_MAX);
	rio_get_u32(r, &q->xattr_get.size);
	return check(r, q->xattr_get.size <= PROTO_XATTR_MAX);
}

static void put_listxattr(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->xattr_get.ino);
	rio_put_u32(w, q->xattr_get.size);
}

static int get_listxattr(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->xattr_get.ino);
	rio_get_u32(r, &q->xattr_get.size);
	return check(r, q->xattr_get.size <= PROTO_XATTR_MAX);
}

static void put_setxattr(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->setxattr.ino);
	rio_put_str(w, q->setxattr.name);
	rio_put_bytes(w, q->setxattr.value, q->setxattr.size);
	rio_put_u32(w, q->setxattr.flags);
}

static int get_setxattr(struct rio_reader *r, struct proto_req *q)
{
	struct proto_setxattr *x = &q->setxattr;
	const uint8_t *value = NULL;
	get_ino(r, &x->ino);
	x->name = get_str(r, q->str[0], PROTO_NAME_MAX);
	rio_get_bytes(r, &value, &x->size, PROTO_XATTR_MAX);
	x->value = value;
	rio_get_u32(r, &x->flags);
	return check(r, !(x->flags & ~(uint32_t)(META_XATTR_CREATE | META_XATTR_REPLACE)));
}

static void put_open(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->open.ino);
	rio_put_u8(w, q->open.truncate);
	rio_put_u32(w, q->open.generation);
}

static int get_open(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->open.ino);
	rio_get_u8(r, &q->open.truncate);
	rio_get_u32(r, &q->open.generation);
	return check(r, q->open.truncate <= 1);
}

static void put_fsync(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->fsync.ino);
	rio_put_u8(w, q->fsync.datasync);
}

static int get_fsync(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->fsync.ino);
	rio_get_u8(r, &q->fsync.datasync);
	return r->err;
}

static void put_map(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->map.ino);
	rio_put_u64(w, q->map.lblk);
}

static int get_map(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->map.ino);
	rio_get_u64(r, &q->map.lblk);
	return check(r, valid_range(q->map.lblk, 1));
}

static void put_alloc(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->alloc.ino);
	rio_put_u64(w, q->alloc.lblk);
	rio_put_u64(w, q->alloc.len);
}

static int get_alloc(struct rio_reader *r, struct proto_req *q)
{
	struct proto_alloc *a = &q->alloc;
	get_ino(r, &a->ino);
	rio_get_u64(r, &a->lblk);
	rio_get_u64(r, &a->len);
	return check(r, a->len > 0 && a->len <= PROTO_ALLOC_MAX && valid_range(a->lblk, a->len));
}

static void put_commit(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->commit.ino);
	rio_put_u64(w, q->commit.lblk);
	rio_put_u64(w, q->commit.len);
	rio_put_u64(w, q->commit.size);
}

static int get_commit(struct rio_reader *r, struct proto_req *q)
{
	struct proto_commit *c = &q->commit;
	get_ino(r, &c->ino);
	rio_get_u64(r, &c->lblk);
	rio_get_u64(r, &c->len);
	rio_get_u64(r, &c->size);
	return check(r, valid_range(c->lblk, c->len) && c->size <= PROTO_FILE_SIZE_MAX);
}

static void put_lun_io(struct rio_writer *w, const struct proto_req *q)
{
	const struct proto_lun_io *l = &q->lun_io;
	rio_put_u32(w, l->ino);
	rio_put_u64(w, l->lblk);
	rio_put_u64(w, l->pblk);
	rio_put_u32(w, l->nblk);
}

static int get_lun_io(struct rio_reader *r, struct proto_req *q)
{
	struct proto_lun_io *l = &q->lun_io;
	get_ino(r, &l->ino);
	rio_get_u64(r, &l->lblk);
	rio_get_u64(r, &l->pblk);
	rio_get_u32(r, &l->nblk);
	/* 512 bytes is the smallest block a transfer can be made of */
	return check(r, l->nblk > 0 && l->nblk <= PROTO_LUN_IO_MAX / 512 &&
			valid_range(l->lblk, l->nblk) && l->pblk < PROTO_LUN_BLOCK_MAX &&
			l->nblk <= PROTO_LUN_BLOCK_MAX - l->pblk);
}

static void put_lun_write(struct rio_writer *w, const struct proto_req *q)
{
	put_lun_io(w, q);
	rio_put_bytes(w, q->lun_io.data, q->lun_io.len);
}

static int get_lun_write(struct rio_reader *r, struct proto_req *q)
{
	const uint8_t *data = NULL;
	get_lun_io(r, q);
	rio_get_bytes(r, &data, &q->lun_io.len, PROTO_LUN_IO_MAX);
	q->lun_io.data = data;
	return check(r, q->lun_io.len > 0 && q->lun_io.len % q->lun_io.nblk == 0);
}

static void put_fallocate(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->fallocate.ino);
	rio_put_u32(w, q->fallocate.mode);
	rio_put_u64(w, q->fallocate.off);
	rio_put_u64(w, q->fallocate.len);
}

static int get_fallocate(struct rio_reader *r, struct proto_req *q)
{
	struct proto_fallocate *f = &q->fallocate;
	get_ino(r, &f->ino);
	rio_get_u32(r, &f->mode);
	rio_get_u64(r, &f->off);
	rio_get_u64(r, &f->len);
	return check(r, f->len > 0 && f->off <= PROTO_FILE_SIZE_MAX &&
			f->len <= PROTO_FILE_SIZE_MAX - f->off);
}

static void put_seek(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->seek.ino);
	rio_put_u64(w, q->seek.off);
	rio_put_u32(w, q->seek.whence);
}

static int get_seek(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->seek.ino);
	rio_get_u64(r, &q->seek.off);
	rio_get_u32(r, &q->seek.whence);
	return check(r, q->seek.whence == SEEK_DATA || q->seek.whence == SEEK_HOLE);
}

static void put_move(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_str(w, q->move.target);
}

static int get_move(struct rio_reader *r, struct proto_req *q)
{
	q->move.target = get_str(r, q->str[0], RIO_NODE_NAME_MAX + 1);
	return r->err;
}

static void put_snapshot(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_str(w, q->snapshot.name);
	rio_put_str(w, q->snapshot.hook);
	rio_put_u32(w, q->snapshot.timeout_s);
	rio_put_str(w, q->snapshot.new_guid ? q->snapshot.new_guid : "");
}

static int get_snapshot(struct rio_reader *r, struct proto_req *q)
{
	q->snapshot.name = get_str(r, q->str[0], PROTO_NAME_MAX);
	q->snapshot.hook = get_str(r, q->str[1], PROTO_PATH_MAX);
	rio_get_u32(r, &q->snapshot.timeout_s);
	q->snapshot.new_guid = get_str(r, q->new_guid, sizeof(q->new_guid));
	return r->err;
}

static void put_snapshot_abort(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_str(w, q->snapshot.name);
}

static int get_snapshot_abort(struct rio_reader *r, struct proto_req *q)
{
	q->snapshot = (struct proto_snapshot){ .name = get_str(r, q->str[0], PROTO_NAME_MAX) };
	return r->err;
}

/* A day: no freeze lasts longer (SNAP_TIMEOUT_MAX_S is far below). */
#define PROTO_SNAP_MS_MAX (86400ull * 1000)

static void put_snapshot_report(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u8(w, q->snapshot_report.thawed);
	rio_put_u32(w, q->snapshot_report.held);
	rio_put_u64(w, q->snapshot_report.longest_ms);
	rio_put_u64(w, q->snapshot_report.frozen_ms);
}

static int get_snapshot_report(struct rio_reader *r, struct proto_req *q)
{
	struct proto_snapshot_report *s = &q->snapshot_report;
	rio_get_u8(r, &s->thawed);
	rio_get_u32(r, &s->held);
	rio_get_u64(r, &s->longest_ms);
	rio_get_u64(r, &s->frozen_ms);
	return check(r, s->thawed <= 1 && s->longest_ms <= PROTO_SNAP_MS_MAX &&
			s->frozen_ms <= PROTO_SNAP_MS_MAX);
}

/* An I/O state report (fs/iostate.h): known reason bits, an errno, times
 * that are times, a device name that fits. */
static void put_io_report(struct rio_writer *w, const struct io_report *r)
{
	rio_put_u32(w, r->reasons);
	rio_put_u64(w, r->since_ms);
	rio_put_u64(w, r->lease_until_ms);
	rio_put_u32(w, r->path_errno);
	rio_put_u64(w, r->path_at_ms);
	rio_put_str(w, r->path_dev);
}

static int get_io_report(struct rio_reader *r, struct io_report *o)
{
	rio_get_u32(r, &o->reasons);
	rio_get_u64(r, &o->since_ms);
	rio_get_u64(r, &o->lease_until_ms);
	rio_get_u32(r, &o->path_errno);
	rio_get_u64(r, &o->path_at_ms);
	rio_get_str(r, o->path_dev, sizeof(o->path_dev));
	return check(r, !(o->reasons & ~IO_REASONS_ALL) && o->since_ms < PROTO_TIME_MS_MAX &&
			o->lease_until_ms < PROTO_TIME_MS_MAX && o->path_errno < 4096 &&
			o->path_at_ms < PROTO_TIME_MS_MAX);
}

static void put_redirect(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_str(w, q->redirect.node);
	rio_put_u8(w, q->redirect.on);
	rio_put_u32(w, q->redirect.seconds);
}

/* A lease only with on, and a bounded one; a node name or "" (every node). */
static int get_redirect(struct rio_reader *r, struct proto_req *q)
{
	struct proto_redirect *d = &q->redirect;
	d->node = get_str(r, q->str[0], RIO_NODE_NAME_MAX + 1);
	rio_get_u8(r, &d->on);
	rio_get_u32(r, &d->seconds);
	return check(r, d->on <= 1 && (d->on ? d->seconds >= 1 && d->seconds <= IOSTATE_LEASE_MAX_S
					     : d->seconds == 0));
}

static void put_io_state(struct rio_writer *w, const struct proto_req *q)
{
	put_io_report(w, &q->io_state.r);
}

static int get_io_state(struct rio_reader *r, struct proto_req *q)
{
	return get_io_report(r, &q->io_state.r);
}

/* ---- replies --------------------------------------------------------------- */

static void put_lock(struct rio_writer *w, const struct proto_req *q)
{
	const struct plock *l = &q->lock.l;
	rio_put_u32(w, l->ino);
	rio_put_u8(w, l->kind);
	rio_put_u8(w, l->type);
	rio_put_u64(w, l->start);
	rio_put_u64(w, l->end);
	rio_put_u64(w, l->owner);
	rio_put_u64(w, l->fh);
	rio_put_u32(w, l->pid);
	rio_put_u8(w, q->lock.reclaim);
}

/* A range is first..last with last at most the kernel's OFFSET_MAX. */
static int get_lock(struct rio_reader *r, struct proto_req *q)
{
	struct plock *l = &q->lock.l;
	get_ino(r, &l->ino);
	rio_get_u8(r, &l->kind);
	rio_get_u8(r, &l->type);
	rio_get_u64(r, &l->start);
	rio_get_u64(r, &l->end);
	rio_get_u64(r, &l->owner);
	rio_get_u64(r, &l->fh);
	rio_get_u32(r, &l->pid);
	rio_get_u8(r, &q->lock.reclaim);
	return check(r, l->kind <= PLOCK_FLOCK && l->type >= PLOCK_READ && l->type <= PLOCK_UNLOCK &&
			l->start <= l->end && l->end <= PLOCK_EOF && q->lock.reclaim <= 1 &&
			!(q->lock.reclaim && l->type == PLOCK_UNLOCK));
}

static void put_unlock_all(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u32(w, q->unlock_all.ino);
	rio_put_u8(w, q->unlock_all.by);
	rio_put_u64(w, q->unlock_all.key);
}

static int get_unlock_all(struct rio_reader *r, struct proto_req *q)
{
	get_ino(r, &q->unlock_all.ino);
	rio_get_u8(r, &q->unlock_all.by);
	rio_get_u64(r, &q->unlock_all.key);
	return check(r, q->unlock_all.by == PLOCK_BY_OWNER || q->unlock_all.by == PLOCK_BY_FH);
}

static void put_lkwait(struct rio_writer *w, const struct proto_req *q)
{
	rio_put_u64(w, q->lkwait.gen);
	rio_put_u32(w, q->lkwait.timeout_ms);
}

static int get_lkwait(struct rio_reader *r, struct proto_req *q)
{
	rio_get_u64(r, &q->lkwait.gen);
	rio_get_u32(r, &q->lkwait.timeout_ms);
	return check(r, q->lkwait.timeout_ms <= PROTO_LKWAIT_MAX_MS);
}

static void put_lock_reply(struct rio_writer *w, const union proto_reply *p)
{
	const struct proto_lock_reply *k = &p->lock;
	rio_put_u8(w, k->yes);
	rio_put_u64(w, k->gen);
	rio_put_u8(w, k->l.type);
	rio_put_u64(w, k->l.start);
	rio_put_u64(w, k->l.end);
	rio_put_u32(w, k->l.pid);
}

static int get_lock_reply(struct rio_reader *r, union proto_reply *p)
{
	struct proto_lock_reply *k = &p->lock;
	memset(k, 0, sizeof(*k));
	rio_get_u8(r, &k->yes);
	rio_get_u64(r, &k->gen);
	rio_get_u8(r, &k->l.type);
	rio_get_u64(r, &k->l.start);
	rio_get_u64(r, &k->l.end);
	rio_get_u32(r, &k->l.pid);
	if (r->err == 0 && (k->yes > 1 || k->l.start > k->l.end || k->l.end > PLOCK_EOF ||
			    k->l.type > PLOCK_UNLOCK))
		return refuse(r);
	return r->err;
}

static void put_none_reply(struct rio_writer *w, const union proto_reply *p)
{
}

static int get_none_reply(struct rio_reader *r, union proto_reply *p)
{
	return r->err;
}

static void put_attr_reply(struct rio_writer *w, const union proto_reply *p)
{
	proto_put_attr(w, &p->attr);
}

static int get_attr_reply(struct rio_reader *r, union proto_reply *p)
{
	return proto_get_attr(r, &p->attr);
}

static void put_u64_reply(struct rio_writer *w, const union proto_reply *p)
{
	rio_put_u64(w, p->u64);
}

static int get_u64_reply(struct rio_reader *r, union proto_reply *p)
{
	p->u64 = 0;
	return rio_get_u64(r, &p->u64);
}

static void put_target_reply(struct rio_writer *w, const union proto_reply *p)
{
	rio_put_str(w, p->target);
}

static int get_target_reply(struct rio_reader *r, union proto_reply *p)
{
	p->target[0] = 0;
	return rio_get_str(r, p->target, sizeof(p->target));
}

static void put_statfs_reply(struct rio_writer *w, const union proto_reply *p)
{
	proto_put_statfs(w, &p->statfs);
}

static int get_statfs_reply(struct rio_reader *r, union proto_reply *p)
{
	return proto_get_statfs(r, &p->statfs);
}

static void put_map_reply(struct rio_writer *w, const union proto_reply *p)
{
	proto_put_extent(w, &p->map.e);
	rio_put_u64(w, p->map.size);
}

static int get_map_reply(struct rio_reader *r, union proto_reply *p)
{
	p->map.size = 0;
	proto_get_extent(r, &p->map.e);
	rio_get_u64(r, &p->map.size);
	return r->err;
}

static void put_xattr_reply(struct rio_writer *w, const union proto_reply *p)
{
	rio_put_u32(w, p->xattr.len);
	rio_put_bytes(w, p->xattr.value, p->xattr.n);
}

static int get_xattr_reply(struct rio_reader *r, union proto_reply *p)
{
	struct proto_xattr_reply *x = &p->xattr;
	const uint8_t *value = NULL;
	x->len = x->n = 0;
	rio_get_u32(r, &x->len);
	rio_get_bytes(r, &value, &x->n, PROTO_XATTR_MAX);
	x->value = value;
	if (r->err == 0 && x->buf && x->n && x->n <= x->size)
		memcpy(x->buf, value, x->n);
	return r->err;
}

static void put_lun_data_reply(struct rio_writer *w, const union proto_reply *p)
{
	rio_put_bytes(w, p->lun_data.data, p->lun_data.len);
}

static int get_lun_data_reply(struct rio_reader *r, union proto_reply *p)
{
	struct proto_lun_data *d = &p->lun_data;
	const uint8_t *data = NULL;
	d->len = 0;
	rio_get_bytes(r, &data, &d->len, PROTO_LUN_IO_MAX);
	d->data = data;
	if (r->err == 0 && d->buf && d->len && d->len <= d->size)
		memcpy(d->buf, data, d->len);
	return r->err;
}

static void put_dirent(struct rio_writer *w, const struct meta_dirent *e, int plus)
{
	rio_put_u64(w, e->ino);
	rio_put_u8(w, (uint8_t)e->type);
	rio_put_str(w, e->name);
	if (!plus)
		return;
	rio_put_u8(w, e->has_attr != 0);
	if (e->has_attr)
		proto_put_attr(w, &e->attr);
}

static void put_page(struct rio_writer *w, const struct proto_dirents *pg, int plus)
{
	rio_put_u8(w, pg->more);
	rio_put_u32(w, (uint32_t)pg->n);
	for (size_t i = 0; i < pg->n; i++)
		put_dirent(w, &pg->d[i], plus);
}

/* One entry into e, its name allocated; on failure the reader fails. */
static int get_dirent(struct rio_reader *r, struct meta_dirent *e, int plus)
{
	char name[PROTO_NAME_MAX];
	uint8_t type = 0, have = 0;
	rio_get_u64(r, &e->ino);
	rio_get_u8(r, &type);
	rio_get_str(r, name, sizeof(name));
	if (plus && rio_get_u8(r, &have) == 0 && have > 1)
		refuse(r);
	if (have)
		proto_get_attr(r, &e->attr);
	e->type = type;
	e->has_attr = have;
	if (r->err == 0 && !(e->name = strdup(name)))
		r->err = RIO_E_NOMEM;
	return r->err;
}

/* An entry takes at least 11 bytes: a count past that is a lie. */
static int get_page(struct rio_reader *r, struct proto_dirents *pg, int plus)
{
	uint32_t count = 0;
	*pg = (struct proto_dirents){ 0 };
	rio_get_u8(r, &pg->more);
	rio_get_u32(r, &count);
	if (r->err || pg->more > 1 || count > rio_reader_left(r) / 11)
		return refuse(r);
	pg->d = calloc(count ? count : 1, sizeof(*pg->d));
	if (!pg->d)
		return r->err = RIO_E_NOMEM;
	while (pg->n < count && get_dirent(r, &pg->d[pg->n], plus) == 0)
		pg->n++;
	return r->err;
}

static void put_readdir_reply(struct rio_writer *w, const union proto_reply *p)
{
	put_page(w, &p->dirents, 0);
}

static int get_readdir_reply(struct rio_reader *r, union proto_reply *p)
{
	return get_page(r, &p->dirents, 0);
}

static void put_readdirplus_reply(struct rio_writer *w, const union proto_reply *p)
{
	put_page(w, &p->dirents, 1);
}

static int get_readdirplus_reply(struct rio_reader *r, union proto_reply *p)
{
	return get_page(r, &p->dirents, 1);
}

static void free_dirents(union proto_reply *p)
{
	meta_free_dirents(p->dirents.d, p->dirents.n);
	p->dirents = (struct proto_dirents){ 0 };
}

static void put_snapshot_reply(struct rio_writer *w, const union proto_reply *p)
{
	rio_put_u32(w, p->snapshot.error);
	rio_put_str(w, p->snapshot.message);
	rio_put_u64(w, p->snapshot.wait_ms);
	rio_put_u64(w, p->snapshot.frozen_ms);
	rio_put_u64(w, p->snapshot.hook_ms);
	rio_put_u64(w, p->snapshot.stall_ms);
	rio_put_str(w, p->snapshot.stall_node);
	rio_put_u32(w, p->snapshot.nodes_reported);
	rio_put_u32(w, p->snapshot.nodes_expected);
	rio_put_str(w, p->snapshot.guid);
}

static int get_snapshot_reply(struct rio_reader *r, union proto_reply *p)
{
	struct proto_snapshot_reply *s = &p->snapshot;
	rio_get_u32(r, &s->error);
	get_str(r, s->message, sizeof(s->message));
	rio_get_u64(r, &s->wait_ms);
	rio_get_u64(r, &s->frozen_ms);
	rio_get_u64(r, &s->hook_ms);
	rio_get_u64(r, &s->stall_ms);
	get_str(r, s->stall_node, sizeof(s->stall_node));
	rio_get_u32(r, &s->nodes_reported);
	rio_get_u32(r, &s->nodes_expected);
	get_str(r, s->guid, sizeof(s->guid));
	return check(r, s->nodes_reported <= s->nodes_expected);
}

static void put_snapshot_info_reply(struct rio_writer *w, const union proto_reply *p)
{
	rio_put_str(w, p->snapshot_info.name);
	rio_put_str(w, p->snapshot_info.requester);
	rio_put_u64(w, (uint64_t)p->snapshot_info.since);
	rio_put_u64(w, (uint64_t)p->snapshot_info.deadline);
}

static int get_snapshot_info_reply(struct rio_reader *r, union proto_reply *p)
{
	struct proto_snapshot_info *s = &p->snapshot_info;
	uint64_t since = 0, deadline = 0;
	get_str(r, s->name, sizeof(s->name));
	get_str(r, s->requester, sizeof(s->requester));
	rio_get_u64(r, &since);
	rio_get_u64(r, &deadline);
	s->since = (int64_t)since;
	s->deadline = (int64_t)deadline;
	return check(r, since <= deadline);
}

static void put_maintenance_reply(struct rio_writer *w, const union proto_reply *p)
{
	rio_put_u32(w, p->maintenance.error);
	rio_put_str(w, p->maintenance.message);
}

static int get_maintenance_reply(struct rio_reader *r, union proto_reply *p)
{
	rio_get_u32(r, &p->maintenance.error);
	get_str(r, p->maintenance.message, sizeof(p->maintenance.message));
	return r->err;
}

/* ---- the table: docs/protocol.md "Operations", row for row ------------------ */

static void put_io_state_reply(struct rio_writer *w, const union proto_reply *p)
{
	rio_put_u32(w, p->io_states.n);
	for (uint32_t i = 0; i < p->io_states.n; i++) {
		rio_put_str(w, p->io_states.nodes[i].node);
		rio_put_u64(w, p->io_states.nodes[i].age_ms);
		put_io_report(w, &p->io_states.nodes[i].r);
	}
	rio_put_u8(w, p->io_states.ask);
	rio_put_u32(w, p->io_states.ask_seconds);
	rio_put_u8(w, p->io_states.refuses_writes);
}

/* A node takes at least 41 bytes: a count past that is a lie. */
static int get_io_state_reply(struct rio_reader *r, union proto_reply *p)
{
	uint32_t n = 0;
	p->io_states = (struct proto_io_states){ 0 };
	rio_get_u32(r, &n);
	if (r->err || n > PROTO_IO_NODES_MAX || n > rio_reader_left(r) / 41)
		return refuse(r);
	p->io_states.nodes = calloc(n ? n : 1, sizeof(*p->io_states.nodes));
	if (!p->io_states.nodes)
		return r->err = RIO_E_NOMEM;
	for (; p->io_states.n < n && r->err == 0; p->io_states.n++) {
		struct proto_io_node *e = &p->io_states.nodes[p->io_states.n];
		rio_get_str(r, e->node, sizeof(e->node));
		rio_get_u64(r, &e->age_ms);
		get_io_report(r, &e->r);
	}
	rio_get_u8(r, &p->io_states.ask);
	rio_get_u32(r, &p->io_states.ask_seconds);
	rio_get_u8(r, &p->io_states.refuses_writes);
	uint8_t ask = p->io_states.ask;
	uint32_t sec = p->io_states.ask_seconds;
	return check(r, ask <= PROTO_ASK_OFF && (ask == PROTO_ASK_ON ? sec >= 1 && sec <= IOSTATE_LEASE_MAX_S
								    : sec == 0) &&
			p->io_states.refuses_writes <= 1);
}

static void free_io_states(union proto_reply *p)
{
	free(p->io_states.nodes);
	p->io_states = (struct proto_io_states){ 0 };
}

/* ---- ONCE: a request id, then the change's own request and reply --------- */

bool proto_op_once(uint16_t code)
{
	switch (code) {
	case OP_SETATTR: case OP_CREATE: case OP_SYMLINK: case OP_LINK: case OP_UNLINK:
	case OP_RMDIR: case OP_RENAME: case OP_CREATE_OPEN: case OP_SETXATTR: case OP_REMOVEXATTR:
	case OP_FALLOCATE: case OP_OPEN:
		return true;
	default:
		return false;
	}
}

/* An OPEN changes something only with O_TRUNC: a plain open is not wrapped
 * (it is answered by whichever coordinator gets it, and holds no slot). */
bool proto_req_once(uint16_t code, const struct proto_req *q)
{
	return proto_op_once(code) && (code != OP_OPEN || q->open.truncate);
}

void proto_put_once(struct rio_writer *w, const struct proto_once *id, const struct proto_req *q)
{
	rio_put_u64(w, id->client);
	rio_put_u32(w, id->slot);
	rio_put_u32(w, id->seq);
	rio_put_u16(w, id->op);
	if (proto_op_once(id->op))
		proto_op(id->op)->put_req(w, q);
}

static void put_once(struct rio_writer *w, const struct proto_req *q)
{
	proto_put_once(w, &q->once, q);
}

static int get_once(struct rio_reader *r, struct proto_req *q)
{
	rio_get_u64(r, &q->once.client);
	rio_get_u32(r, &q->once.slot);
	rio_get_u32(r, &q->once.seq);
	rio_get_u16(r, &q->once.op);
	if (r->err || q->once.slot >= REPLY_SLOTS || q->once.seq == 0 || !proto_op_once(q->once.op))
		return refuse(r);
	int rc = proto_op(q->once.op)->get_req(r, q);
	return rc == 0 && !proto_req_once(q->once.op, q) ? refuse(r) : rc;
}

static void put_raw_reply(struct rio_writer *w, const union proto_reply *p)
{
	rio_put_raw(w, p->raw.data, p->raw.len);
}

static int get_raw_reply(struct rio_reader *r, union proto_reply *p)
{
	p->raw.data = r->p + r->off;
	p->raw.len = (uint32_t)rio_reader_left(r);
	r->off = r->len;
	return r->err;
}

#define REQ(shape) put_##shape, get_##shape
#define REQ2(put, get) put_##put, get_##get
#define REP(shape) put_##shape##_reply, get_##shape##_reply, NULL
#define PAGE(shape) put_##shape##_reply, get_##shape##_reply, free_dirents

static const struct proto_op OPS[OP_MAX_] = {
	[OP_LOOKUP] = { OP_LOOKUP, "lookup", true, false, REQ(ino_name), REP(attr) },
	[OP_GETATTR] = { OP_GETATTR, "getattr", true, false, REQ(inode), REP(attr) },
	[OP_SETATTR] = { OP_SETATTR, "setattr", false, true, REQ(setattr), REP(attr) },
	[OP_CREATE] = { OP_CREATE, "create", false, true, REQ(create), REP(attr) },
	[OP_SYMLINK] = { OP_SYMLINK, "symlink", false, true, REQ(symlink), REP(attr) },
	[OP_LINK] = { OP_LINK, "link", false, true, REQ(link), REP(attr) },
	[OP_UNLINK] = { OP_UNLINK, "unlink", false, true, REQ(ino_name), REP(none) },
	[OP_RMDIR] = { OP_RMDIR, "rmdir", false, true, REQ(ino_name), REP(none) },
	[OP_RENAME] = { OP_RENAME, "rename", false, true, REQ(rename), REP(none) },
	[OP_READLINK] = { OP_READLINK, "readlink", true, false, REQ(inode), REP(target) },
	[OP_READDIR] = { OP_READDIR, "readdir", true, false, REQ(readdir), PAGE(readdir) },
	[OP_STATFS] = { OP_STATFS, "statfs", true, false, REQ(none), REP(statfs) },
	[OP_GETXATTR] = { OP_GETXATTR, "getxattr", true, false, REQ(getxattr), REP(xattr) },
	[OP_LISTXATTR] = { OP_LISTXATTR, "listxattr", true, false, REQ(listxattr), REP(xattr) },
	[OP_SETXATTR] = { OP_SETXATTR, "setxattr", false, true, REQ(setxattr), REP(none) },
	[OP_REMOVEXATTR] = { OP_REMOVEXATTR, "removexattr", false, true, REQ(ino_name), REP(none) },
	[OP_OPEN] = { OP_OPEN, "open", false, false, REQ(open), REP(attr) },
	[OP_RELEASE] = { OP_RELEASE, "release", false, false, REQ(inode), REP(none) },
	[OP_FSYNC] = { OP_FSYNC, "fsync", true, false, REQ(fsync), REP(none) },
	[OP_MAP] = { OP_MAP, "map", true, false, REQ(map), REP(map) },
	[OP_ALLOC] = { OP_ALLOC, "alloc", true, true, REQ(alloc), REP(none) },
	[OP_COMMIT] = { OP_COMMIT, "commit", true, false, REQ(commit), REP(u64) },
	[OP_TOUCH] = { OP_TOUCH, "touch", true, false, REQ(inode), REP(none) },
	[OP_FALLOCATE] = { OP_FALLOCATE, "fallocate", false, true, REQ(fallocate), REP(u64) },
	[OP_SEEK] = { OP_SEEK, "seek", true, false, REQ(seek), REP(u64) },
	[OP_SYNCFS] = { OP_SYNCFS, "syncfs", true, false, REQ(none), REP(none) },
	[OP_MOVE] = { OP_MOVE, "move", false, false, REQ(move), REP(none) },
	[OP_READDIRPLUS] = { OP_READDIRPLUS, "readdirplus", true, false, REQ(readdir), PAGE(readdirplus) },
	[OP_CREATE_OPEN] = { OP_CREATE_OPEN, "create_open", false, true, REQ2(create, create_open),
			     REP(attr) },
	[OP_SETLK] = { OP_SETLK, "setlk", true, false, REQ(lock), REP(lock) },
	[OP_GETLK] = { OP_GETLK, "getlk", true, false, REQ(lock), REP(lock) },
	[OP_UNLOCK_ALL] = { OP_UNLOCK_ALL, "unlock_all", true, false, REQ(unlock_all), REP(none) },
	[OP_LKWAIT] = { OP_LKWAIT, "lkwait", true, false, REQ(lkwait), REP(u64) },
	[OP_RECLAIM_DONE] = { OP_RECLAIM_DONE, "reclaim_done", true, false, REQ(none), REP(none) },
	[OP_SNAPSHOT] = { OP_SNAPSHOT, "snapshot", false, false, REQ(snapshot), REP(snapshot) },
	[OP_SNAPSHOT_ABORT] = { OP_SNAPSHOT_ABORT, "snapshot_abort", true, false, REQ(snapshot_abort),
				REP(none) },
	[OP_SNAPSHOT_REPORT] = { OP_SNAPSHOT_REPORT, "snapshot_report", true, false, REQ(snapshot_report),
				 REP(snapshot_info) },
	[OP_LUN_READ] = { OP_LUN_READ, "lun_read", true, false, REQ(lun_io), REP(lun_data) },
	[OP_LUN_WRITE] = { OP_LUN_WRITE, "lun_write", false, false, REQ(lun_write), REP(none) },
	[OP_LUN_FLUSH] = { OP_LUN_FLUSH, "lun_flush", true, false, REQ(none), REP(none) },
	[OP_IO_STATE] = { OP_IO_STATE, "io_state", true, false, REQ(io_state),
			  put_io_state_reply, get_io_state_reply, free_io_states },
	[OP_REDIRECT] = { OP_REDIRECT, "redirect", true, false, REQ(redirect), REP(none) },
	[OP_MAINTENANCE] = { OP_MAINTENANCE, "maintenance", false, false, REQ(none), REP(maintenance) },
	[OP_GROW] = { OP_GROW, "grow", false, false, REQ(none), REP(maintenance) },
	[OP_ONCE] = { OP_ONCE, "once", false, true, REQ(once), REP(raw) },
};

const struct proto_op *proto_op(uint16_t code)
{
	return code < OP_MAX_ && OPS[code].name ? &OPS[code] : NULL;
}

const char *proto_op_name(uint16_t code)
{
	const struct proto_op *o = proto_op(code);
	return o ? o->name : "?";
}

int proto_decode_request(const struct proto_op *o, const uint8_t *p, size_t len,
			 struct proto_req *q)
{
	struct rio_reader r;
	memset(q, 0, offsetof(struct proto_req, str));
	q->str[0][0] = q->str[1][0] = 0;
	rio_reader_init(&r, p, len);
	o->get_req(&r, q);
	return rio_reader_end(&r);
}

int proto_decode_reply(const struct proto_op *o, const uint8_t *p, size_t len,
		       union proto_reply *out)
{
	struct rio_reader r;
	rio_reader_init(&r, p, len);
	o->get_reply(&r, out);
	int rc = rio_reader_end(&r);
	if (rc)
		proto_free_reply(o, out);
	return rc;
}

void proto_free_reply(const struct proto_op *o, union proto_reply *p)
{
	if (o->free_reply)
		o->free_reply(p);
}
