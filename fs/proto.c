/* Codecs of the structures the metadata operations share (fs/proto.h). */
#include "fs/proto.h"

#include <string.h>

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

const char *proto_op_name(uint16_t op)
{
	static const char *const names[OP_MAX_] = {
		"?", "lookup", "getattr", "setattr", "create", "symlink", "link", "unlink", "rmdir",
		"rename", "readlink", "readdir", "statfs", "getxattr", "listxattr", "setxattr",
		"removexattr", "open", "release", "fsync", "map", "alloc", "commit", "touch",
		"fallocate", "seek", "syncfs", "move", "readdirplus", "create_open",
	};
	return op < OP_MAX_ ? names[op] : "?";
}
