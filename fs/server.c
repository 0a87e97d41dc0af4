/* The coordinator's side of the metadata protocol (fs/proto.h): decodes a
 * participant's request, runs it through fsops (the engine, with layout
 * recalls where blocks are freed), encodes the reply. Every field is
 * bounds-checked by the rio_get_* helpers; a request that does not decode is
 * answered EPROTO and logged, never applied.
 *
 * Opens: a participant's open counts on the coordinator like a local one
 * (unlinked files live until the last close anywhere). The server keeps them
 * per node, so that a departed node's opens can be dropped and a new
 * coordinator can be told them again (reclaim). */
#include "fs/cluster.h"
#include "fs/fsops.h"
#include "fs/proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct peer_open {
	struct peer_open *next;
	char node[RIO_NODE_NAME_MAX + 1];
	struct minode *m;            /* one reference per open */
};

struct server {
	struct volume *v;
	pthread_mutex_t lock;        /* guards opens */
	struct peer_open *opens;
};

int server_create(struct volume *v, struct server **out)
{
	struct server *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->v = v;
	pthread_mutex_init(&s->lock, NULL);
	*out = s;
	return 0;
}

/* The opens die with the role: the engine they counted in is detached. */
void server_destroy(struct server *s)
{
	if (!s)
		return;
	while (s->opens) {
		struct peer_open *o = s->opens;
		s->opens = o->next;
		pthread_mutex_lock(&s->v->lock);
		if (o->m->open_count)
			o->m->open_count--;
		pthread_mutex_unlock(&s->v->lock);
		minode_put(s->v, o->m);
		free(o);
	}
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void server_peers_json(struct server *s, char *out, size_t len)
{
	size_t o = 0;
	out[0] = 0;
	pthread_mutex_lock(&s->lock);
	for (struct peer_open *p = s->opens; p && o + 80 < len; p = p->next) {
		if (strstr(out, p->node))
			continue;
		o += (size_t)snprintf(out + o, len - o, "%s\"%s\"", o ? "," : "", p->node);
	}
	pthread_mutex_unlock(&s->lock);
}

static int open_record(struct server *s, const char *node, struct minode *m)
{
	struct peer_open *o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	snprintf(o->node, sizeof(o->node), "%s", node);
	o->m = m;
	pthread_mutex_lock(&s->lock);
	o->next = s->opens;
	s->opens = o;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Takes back one open of ino by node: its minode (with the open's reference). */
static struct minode *open_take(struct server *s, const char *node, ext2_ino_t ino)
{
	struct minode *m = NULL;
	pthread_mutex_lock(&s->lock);
	for (struct peer_open **pp = &s->opens; *pp; pp = &(*pp)->next) {
		if ((*pp)->m->ino == ino && strcmp((*pp)->node, node) == 0) {
			struct peer_open *o = *pp;
			*pp = o->next;
			m = o->m;
			free(o);
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return m;
}

void server_drop_node(struct server *s, const char *node)
{
	unsigned n = 0;
	for (;;) {
		struct minode *m = NULL;
		pthread_mutex_lock(&s->lock);
		for (struct peer_open **pp = &s->opens; *pp; pp = &(*pp)->next) {
			if (strcmp((*pp)->node, node) == 0) {
				struct peer_open *o = *pp;
				*pp = o->next;
				m = o->m;
				free(o);
				break;
			}
		}
		pthread_mutex_unlock(&s->lock);
		if (!m)
			break;
		fsop_release(s->v, m);
		n++;
	}
	if (n)
		csvfs_log(LOG_WARN_L, "node %s is gone: closed the %u file(s) it had open", node, n);
}

/* ---- request handlers: decode, run, encode ----------------------------- */

struct ctx {
	struct server *s;
	const struct rio_peer *peer;
	struct rio_reader r;
	struct rio_writer *w;
};

/* The root and ordinary inodes; never a reserved one (journal, resize, ...),
 * whatever a peer asks. Out-of-range numbers fail in the engine. */
static int valid_ino(uint32_t ino)
{
	return ino == EXT2_ROOT_INO || ino >= EXT2_GOOD_OLD_FIRST_INO;
}

/* A block range of a file: lblk + len within ext4's 2^32 blocks, no wrap. */
static int valid_range(uint64_t lblk, uint64_t len)
{
	return lblk < (1ull << 32) && len <= (1ull << 32) - lblk;
}

/* An extent file's size stays below 2^32 blocks of 4 KiB (e2fsck: "i_size
 * is 17592186044416, should be ..."). */
#define MAX_FILE_SIZE ((1ull << 44) - 1)

/* What CREATE makes: regular files, directories, devices, fifos, sockets. */
static int valid_create_mode(uint32_t mode)
{
	uint32_t t = mode & S_IFMT;
	return !(mode & ~(uint32_t)(S_IFMT | 07777)) &&
	       (t == S_IFREG || t == S_IFDIR || t == S_IFCHR || t == S_IFBLK || t == S_IFIFO ||
		t == S_IFSOCK);
}

static int h_lookup(struct ctx *c)
{
	uint32_t parent = 0;
	char name[PROTO_NAME_MAX];
	rio_get_u32(&c->r, &parent);
	rio_get_str(&c->r, name, sizeof(name));
	if (rio_reader_end(&c->r) || !valid_ino(parent))
		return -EPROTO;
	struct meta_attr a;
	int rc = fsop_lookup(c->s->v, parent, name, &a);
	if (rc == 0)
		proto_put_attr(c->w, &a);
	return rc;
}

static int h_getattr(struct ctx *c)
{
	uint32_t ino = 0;
	rio_get_u32(&c->r, &ino);
	if (rio_reader_end(&c->r) || !valid_ino(ino))
		return -EPROTO;
	struct meta_attr a;
	int rc = fsop_getattr(c->s->v, ino, &a);
	if (rc == 0)
		proto_put_attr(c->w, &a);
	return rc;
}

static int h_setattr(struct ctx *c)
{
	uint32_t ino = 0;
	struct meta_setattr sa;
	rio_get_u32(&c->r, &ino);
	proto_get_setattr(&c->r, &sa);
	if (rio_reader_end(&c->r) || !valid_ino(ino))
		return -EPROTO;
	struct meta_attr a;
	int rc = fsop_setattr(c->s->v, ino, &sa, &a);
	if (rc == 0)
		proto_put_attr(c->w, &a);
	return rc;
}

static int h_create(struct ctx *c, int open)
{
	uint32_t parent = 0, mode = 0, rdev = 0;
	char name[PROTO_NAME_MAX];
	struct meta_cred cred;
	rio_get_u32(&c->r, &parent);
	rio_get_str(&c->r, name, sizeof(name));
	rio_get_u32(&c->r, &mode);
	rio_get_u32(&c->r, &rdev);
	proto_get_cred(&c->r, &cred);
	if (rio_reader_end(&c->r) || !valid_ino(parent) || !valid_create_mode(mode) ||
	    (open && (!S_ISREG(mode) || rdev)))
		return -EPROTO;
	struct meta_attr a;
	struct minode *m = NULL;
	int rc = open ? fsop_create_open(c->s->v, parent, name, mode, &cred, &a, &m)
		      : fsop_create(c->s->v, parent, name, mode, rdev, &cred, &a);
	if (rc == 0 && m && (rc = open_record(c->s, c->peer->node, m)) != 0)
		fsop_release(c->s->v, m);
	if (rc == 0)
		proto_put_attr(c->w, &a);
	return rc;
}

static int h_symlink(struct ctx *c)
{
	uint32_t parent = 0;
	char name[PROTO_NAME_MAX], target[PROTO_PATH_MAX];
	struct meta_cred cred;
	rio_get_u32(&c->r, &parent);
	rio_get_str(&c->r, name, sizeof(name));
	rio_get_str(&c->r, target, sizeof(target));
	proto_get_cred(&c->r, &cred);
	if (rio_reader_end(&c->r) || !valid_ino(parent))
		return -EPROTO;
	struct meta_attr a;
	int rc = fsop_symlink(c->s->v, parent, name, target, &cred, &a);
	if (rc == 0)
		proto_put_attr(c->w, &a);
	return rc;
}

static int h_link(struct ctx *c)
{
	uint32_t ino = 0, newparent = 0;
	char name[PROTO_NAME_MAX];
	rio_get_u32(&c->r, &ino);
	rio_get_u32(&c->r, &newparent);
	rio_get_str(&c->r, name, sizeof(name));
	if (rio_reader_end(&c->r) || !valid_ino(ino) || !valid_ino(newparent))
		return -EPROTO;
	struct meta_attr a;
	int rc = fsop_link(c->s->v, ino, newparent, name, &a);
	if (rc == 0)
		proto_put_attr(c->w, &a);
	return rc;
}

/* unlink, rmdir, removexattr: an inode and a name. */
static int h_ino_name(struct ctx *c, uint16_t op)
{
	uint32_t ino = 0;
	char name[PROTO_NAME_MAX];
	rio_get_u32(&c->r, &ino);
	rio_get_str(&c->r, name, sizeof(name));
	if (rio_reader_end(&c->r) || !valid_ino(ino))
		return -EPROTO;
	if (op == OP_UNLINK)
		return fsop_unlink(c->s->v, ino, name);
	if (op == OP_RMDIR)
		return fsop_rmdir(c->s->v, ino, name);
	return fsop_removexattr(c->s->v, ino, name);
}

static int h_rename(struct ctx *c)
{
	uint32_t parent = 0, newparent = 0, flags = 0;
	char name[PROTO_NAME_MAX], newname[PROTO_NAME_MAX];
	struct meta_cred cred = { 0 };
	rio_get_u32(&c->r, &parent);
	rio_get_str(&c->r, name, sizeof(name));
	rio_get_u32(&c->r, &newparent);
	rio_get_str(&c->r, newname, sizeof(newname));
	rio_get_u32(&c->r, &flags);
	if (flags & META_RENAME_WHITEOUT)
		proto_get_cred(&c->r, &cred);
	if (rio_reader_end(&c->r) || !valid_ino(parent) || !valid_ino(newparent) ||
	    (flags & ~META_RENAME_FLAGS))
		return -EPROTO;
	return fsop_rename(c->s->v, parent, name, newparent, newname, flags, &cred);
}

static int h_readlink(struct ctx *c)
{
	uint32_t ino = 0;
	rio_get_u32(&c->r, &ino);
	if (rio_reader_end(&c->r) || !valid_ino(ino))
		return -EPROTO;
	char buf[PROTO_PATH_MAX];
	int rc = fsop_readlink(c->s->v, ino, buf, sizeof(buf));
	if (rc == 0)
		rio_put_str(c->w, buf);
	return rc;
}

static int h_readdir(struct ctx *c, int plus)
{
	uint32_t ino = 0;
	uint64_t start = 0;
	rio_get_u32(&c->r, &ino);
	rio_get_u64(&c->r, &start);
	if (rio_reader_end(&c->r) || !valid_ino(ino))
		return -EPROTO;
	struct meta_dirent *d;
	size_t n;
	int rc = fsop_readdir(c->s->v, ino, &d, &n);
	if (rc)
		return rc;
	size_t end = start < n ? (size_t)start : n, bytes = 0;
	while (end < n && bytes < PROTO_READDIR_BYTES)
		bytes += 16 + (plus ? 90 : 0) + strlen(d[end++].name);
	rio_put_u8(c->w, end < n);
	rio_put_u32(c->w, (uint32_t)(end - (start < n ? start : n)));
	for (size_t i = start < n ? (size_t)start : n; i < end; i++) {
		rio_put_u64(c->w, d[i].ino);
		rio_put_u8(c->w, (uint8_t)d[i].type);
		rio_put_str(c->w, d[i].name);
		if (!plus)
			continue;
		/* An entry removed since the listing goes without attributes. */
		struct meta_attr a;
		int have = fsop_getattr(c->s->v, (ext2_ino_t)d[i].ino, &a) == 0;
		rio_put_u8(c->w, (uint8_t)have);
		if (have)
			proto_put_attr(c->w, &a);
	}
	meta_free_dirents(d, n);
	return 0;
}

static int h_statfs(struct ctx *c)
{
	if (rio_reader_end(&c->r))
		return -EPROTO;
	struct statvfs st;
	int rc = fsop_statfs(c->s->v, &st);
	if (rc == 0)
		proto_put_statfs(c->w, &st);
	return rc;
}

static int h_xattr_get(struct ctx *c, uint16_t op)
{
	uint32_t ino = 0, size = 0;
	char name[PROTO_NAME_MAX];
	rio_get_u32(&c->r, &ino);
	if (op == OP_GETXATTR)
		rio_get_str(&c->r, name, sizeof(name));
	rio_get_u32(&c->r, &size);
	if (rio_reader_end(&c->r) || !valid_ino(ino) || size > PROTO_XATTR_MAX)
		return -EPROTO;
	char *buf = size ? malloc(size) : NULL;
	if (size && !buf)
		return -ENOMEM;
	int n = op == OP_GETXATTR ? fsop_getxattr(c->s->v, ino, name, buf, size)
				  : fsop_listxattr(c->s->v, ino, buf, size);
	if (n >= 0) {
		rio_put_u32(c->w, (uint32_t)n);
		rio_put_bytes(c->w, buf, size ? (size_t)n : 0);
	}
	free(buf);
	return n < 0 ? n : 0;
}

static int h_setxattr(struct ctx *c)
{
	uint32_t ino = 0, flags = 0, n = 0;
	char name[PROTO_NAME_MAX];
	const uint8_t *value = NULL;
	rio_get_u32(&c->r, &ino);
	rio_get_str(&c->r, name, sizeof(name));
	rio_get_bytes(&c->r, &value, &n, PROTO_XATTR_MAX);
	rio_get_u32(&c->r, &flags);
	if (rio_reader_end(&c->r) || !valid_ino(ino) || (flags & ~3u))
		return -EPROTO;
	return fsop_setxattr(c->s->v, ino, name, value, n, (int)flags);
}

/* The data-path handlers work on regular files only, with a reference for
 * the call. */
static int with_minode(struct ctx *c, uint32_t ino, struct minode **m)
{
	if (!valid_ino(ino))
		return -EPROTO;
	struct meta_attr a;
	int rc = fsop_getattr(c->s->v, ino, &a);
	if (rc)
		return rc;
	if (!S_ISREG(a.mode))
		return S_ISDIR(a.mode) ? -EISDIR : -EINVAL;
	*m = minode_get(c->s->v, ino);
	return *m ? 0 : -ENOENT;
}

static int h_open(struct ctx *c)
{
	uint32_t ino = 0, gen = 0;
	uint8_t trunc = 0;
	rio_get_u32(&c->r, &ino);
	rio_get_u8(&c->r, &trunc);
	rio_get_u32(&c->r, &gen);
	if (rio_reader_end(&c->r) || !valid_ino(ino) || trunc > 1)
		return -EPROTO;
	struct minode *m;
	int rc = with_minode(c, ino, &m);
	if (rc)
		return rc;
	minode_put(c->s->v, m);
	rc = fsop_open(c->s->v, ino, gen, trunc, &m);
	if (rc)
		return rc;
	struct meta_attr a;
	rc = open_record(c->s, c->peer->node, m);
	if (rc == 0)
		rc = fsop_getattr(c->s->v, ino, &a);
	if (rc) {
		struct minode *back = open_take(c->s, c->peer->node, ino);
		fsop_release(c->s->v, back ? back : m);
		return rc;
	}
	proto_put_attr(c->w, &a);
	return 0;
}

static int h_release(struct ctx *c)
{
	uint32_t ino = 0;
	rio_get_u32(&c->r, &ino);
	if (rio_reader_end(&c->r) || !valid_ino(ino))
		return -EPROTO;
	struct minode *m = open_take(c->s, c->peer->node, ino);
	if (!m)
		return -EBADF;   /* not open by this node (a reclaim was refused) */
	return fsop_release(c->s->v, m);
}

static int h_fsync(struct ctx *c)
{
	uint32_t ino = 0;
	uint8_t datasync = 0;
	struct minode *m;
	rio_get_u32(&c->r, &ino);
	rio_get_u8(&c->r, &datasync);
	if (rio_reader_end(&c->r))
		return -EPROTO;
	int rc = with_minode(c, ino, &m);
	if (rc == 0) {
		rc = fsop_fsync(c->s->v, m, datasync != 0);
		minode_put(c->s->v, m);
	}
	return rc;
}

static int h_map(struct ctx *c)
{
	uint32_t ino = 0;
	uint64_t lblk = 0;
	struct minode *m;
	rio_get_u32(&c->r, &ino);
	rio_get_u64(&c->r, &lblk);
	if (rio_reader_end(&c->r) || !valid_range(lblk, 1))
		return -EPROTO;
	int rc = with_minode(c, ino, &m);
	if (rc)
		return rc;
	struct meta_extent e;
	rc = fsop_map(c->s->v, m, lblk, &e);
	if (rc == 0) {
		proto_put_extent(c->w, &e);
		rio_put_u64(c->w, atomic_load(&m->size));
	}
	minode_put(c->s->v, m);
	return rc;
}

static int h_alloc(struct ctx *c)
{
	uint32_t ino = 0;
	uint64_t lblk = 0, len = 0;
	struct minode *m;
	rio_get_u32(&c->r, &ino);
	rio_get_u64(&c->r, &lblk);
	rio_get_u64(&c->r, &len);
	if (rio_reader_end(&c->r) || len == 0 || len > (1u << 20) || !valid_range(lblk, len))
		return -EPROTO;
	int rc = with_minode(c, ino, &m);
	if (rc)
		return rc;
	rc = fsop_alloc(c->s->v, m, lblk, len);
	minode_put(c->s->v, m);
	return rc;
}

/* Every block of the range must be allocated: a participant writing into a
 * range a previous coordinator allocated and lost is told to map again. */
static int range_allocated(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len)
{
	for (uint64_t pos = lblk; pos < lblk + len;) {
		struct meta_extent e;
		int rc = fsop_map(v, m, pos, &e);
		if (rc)
			return rc;
		if (e.state == EXTENT_HOLE)
			return -ESTALE;
		pos = e.lblk + e.len;
	}
	return 0;
}

static int h_commit(struct ctx *c)
{
	uint32_t ino = 0;
	uint64_t lblk = 0, len = 0, size = 0;
	struct minode *m;
	rio_get_u32(&c->r, &ino);
	rio_get_u64(&c->r, &lblk);
	rio_get_u64(&c->r, &len);
	rio_get_u64(&c->r, &size);
	if (rio_reader_end(&c->r) || !valid_range(lblk, len) || size > MAX_FILE_SIZE)
		return -EPROTO;
	int rc = with_minode(c, ino, &m);
	if (rc)
		return rc;
	/* Written blocks lie inside the file (e2fsck: "i_size is X, should be Y"). */
	uint64_t cur = atomic_load(&m->size), end = size > cur ? size : cur;
	rc = len && (lblk + len - 1) * c->s->v->blocksize >= end ? -EINVAL : 0;
	if (rc == 0 && len)
		rc = range_allocated(c->s->v, m, lblk, len);
	if (rc == 0)
		rc = fsop_commit_write(c->s->v, m, lblk, len, size);
	if (rc == 0)
		rio_put_u64(c->w, atomic_load(&m->size));
	minode_put(c->s->v, m);
	return rc;
}

static int h_touch(struct ctx *c)
{
	uint32_t ino = 0;
	struct minode *m;
	rio_get_u32(&c->r, &ino);
	if (rio_reader_end(&c->r))
		return -EPROTO;
	int rc = with_minode(c, ino, &m);
	if (rc == 0) {
		fsop_touch_write(c->s->v, m);
		minode_put(c->s->v, m);
	}
	return rc;
}

static int h_fallocate(struct ctx *c)
{
	uint32_t ino = 0, mode = 0;
	uint64_t off = 0, len = 0;
	struct minode *m;
	rio_get_u32(&c->r, &ino);
	rio_get_u32(&c->r, &mode);
	rio_get_u64(&c->r, &off);
	rio_get_u64(&c->r, &len);
	if (rio_reader_end(&c->r) || len == 0 || off > MAX_FILE_SIZE || len > MAX_FILE_SIZE - off)
		return -EPROTO;
	int rc = with_minode(c, ino, &m);
	if (rc)
		return rc;
	rc = fsop_fallocate(c->s->v, m, (int)mode, off, len);
	if (rc == 0)
		rio_put_u64(c->w, atomic_load(&m->size));
	minode_put(c->s->v, m);
	return rc;
}

static int h_seek(struct ctx *c)
{
	uint32_t ino = 0, whence = 0;
	uint64_t off = 0, at = 0;
	struct minode *m;
	rio_get_u32(&c->r, &ino);
	rio_get_u64(&c->r, &off);
	rio_get_u32(&c->r, &whence);
	if (rio_reader_end(&c->r) || (whence != SEEK_DATA && whence != SEEK_HOLE))
		return -EPROTO;
	int rc = with_minode(c, ino, &m);
	if (rc)
		return rc;
	rc = fsop_seek(c->s->v, m, off, (int)whence, &at);
	if (rc == 0)
		rio_put_u64(c->w, at);
	minode_put(c->s->v, m);
	return rc;
}

static int h_syncfs(struct ctx *c)
{
	return rio_reader_end(&c->r) ? -EPROTO : fsop_syncfs(c->s->v);
}

static int h_move(struct ctx *c)
{
	char target[RIO_NODE_NAME_MAX + 1], err[256];
	rio_get_str(&c->r, target, sizeof(target));
	if (rio_reader_end(&c->r))
		return -EPROTO;
	if (!c->s->v->cluster)
		return -EOPNOTSUPP;   /* standalone: no roles to move */
	int rc = cluster_move(c->s->v->cluster, target, err, sizeof(err));
	if (rc)
		csvfs_log(LOG_WARN_L, "move requested by %s refused: %s", c->peer->node, err);
	return rc;
}

static int dispatch(struct ctx *c, uint16_t op)
{
	switch (op) {
	case OP_LOOKUP: return h_lookup(c);
	case OP_GETATTR: return h_getattr(c);
	case OP_SETATTR: return h_setattr(c);
	case OP_CREATE: return h_create(c, 0);
	case OP_CREATE_OPEN: return h_create(c, 1);
	case OP_SYMLINK: return h_symlink(c);
	case OP_LINK: return h_link(c);
	case OP_UNLINK: case OP_RMDIR: case OP_REMOVEXATTR: return h_ino_name(c, op);
	case OP_RENAME: return h_rename(c);
	case OP_READLINK: return h_readlink(c);
	case OP_READDIR: return h_readdir(c, 0);
	case OP_READDIRPLUS: return h_readdir(c, 1);
	case OP_STATFS: return h_statfs(c);
	case OP_GETXATTR: case OP_LISTXATTR: return h_xattr_get(c, op);
	case OP_SETXATTR: return h_setxattr(c);
	case OP_OPEN: return h_open(c);
	case OP_RELEASE: return h_release(c);
	case OP_FSYNC: return h_fsync(c);
	case OP_MAP: return h_map(c);
	case OP_ALLOC: return h_alloc(c);
	case OP_COMMIT: return h_commit(c);
	case OP_TOUCH: return h_touch(c);
	case OP_FALLOCATE: return h_fallocate(c);
	case OP_SEEK: return h_seek(c);
	case OP_SYNCFS: return h_syncfs(c);
	case OP_MOVE: return h_move(c);
	default: return -EOPNOTSUPP;
	}
}

int server_request(struct server *s, const char *node, const char *addr, uint16_t op,
		   const uint8_t *payload, uint32_t len, struct rio_writer *out)
{
	struct rio_peer peer = { .node = node, .addr = addr };
	struct ctx c = { .s = s, .peer = &peer, .w = out };
	rio_reader_init(&c.r, payload, len);
	int rc = dispatch(&c, op);
	if (rc == -EPROTO)
		csvfs_log(LOG_WARN_L, "malformed %s request from %s (%s): not applied",
			  proto_op_name(op), node, addr);
	if (rc == 0 && rio_writer_error(out))
		rc = -EOVERFLOW;
	if (rc) {
		/* An error reply carries no fields. */
		out->len = 0;
		out->err = 0;
	}
	return rc < 0 ? -rc : 0;
}

int server_handle(void *arg, const struct rio_peer *peer, const struct rio_request *req,
		  struct rio_response *resp)
{
	struct server *s = cluster_server(arg);
	if (!s) {
		resp->status = EREMCHG;   /* we are no longer the coordinator */
		return 0;
	}
	resp->status = (uint16_t)server_request(s, peer->node, peer->addr, req->op, req->payload,
						req->len, &resp->body);
	return 0;
}
