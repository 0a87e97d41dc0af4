/* The coordinator's side of the metadata protocol: decodes a
 * participant's request with the protocol's table (fs/proto.h), runs it
 * in the engine (ops_local, fs/ops.h: layouts are recalled where blocks are
 * freed) in the op's handler, encodes the reply. The caller checked the role
 * once (fs/cluster_role.c): the engine stays attached until it is done. A request that does not decode whole,
 * or has a field out of range, is answered EPROTO and logged, never applied.
 *
 * Opens: a participant's open counts on the coordinator like a local one
 * (unlinked files live until the last close anywhere). The server keeps them
 * per node, so that a departed node's opens can be dropped and a new
 * coordinator can be told them again (reclaim). */
#include "fs/server.h"
#include "fs/ops.h"
#include "fs/proto.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct peer_open {
	struct peer_open *next;
	char node[RIO_NODE_NAME_MAX + 1];
	struct minode *m;            /* one reference per open */
};

struct server {
	struct volume *v;
	server_move_fn move;         /* OP_MOVE: the role code's (NULL standalone) */
	void *move_arg;
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

void server_set_mover(struct server *s, server_move_fn move, void *arg)
{
	s->move = move;
	s->move_arg = arg;
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

/* Closes one open and drops the reference it held. */
static int release_put(struct volume *v, struct minode *m)
{
	int rc = ops_local.release(v, m);
	minode_put(v, m);
	return rc;
}

unsigned server_describe_opens(struct server *s, char *out, size_t len)
{
	unsigned n = 0;
	size_t o = 0;
	out[0] = 0;
	pthread_mutex_lock(&s->lock);
	for (struct peer_open *p = s->opens; p; p = p->next, n++)
		if (o < len)
			o += (size_t)snprintf(out + o, len - o, "%s%s inode %u", n ? "; " : "", p->node,
					      (unsigned)p->m->ino);
	pthread_mutex_unlock(&s->lock);
	return n;
}

unsigned server_peer_opens_on(struct server *s, const struct minode *m)
{
	unsigned n = 0;
	pthread_mutex_lock(&s->lock);
	for (struct peer_open *p = s->opens; p; p = p->next)
		n += p->m == m;
	pthread_mutex_unlock(&s->lock);
	return n;
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
		release_put(s->v, m);
		n++;
	}
	if (n)
		csvfs_log(LOG_WARN_L, "node %s is gone: closed the %u file(s) it had open", node, n);
}

/* ---- request handlers: run a decoded request, encode the reply ---------- */

/* The requests arrive decoded and in range (fs/proto.c refuses the rest). */
struct ctx {
	struct server *s;
	const struct rio_peer *peer;
	const struct proto_op *op;
	struct rio_writer *w;
	uint16_t once_applied;      /* ONCE: the change it applied (0: none, or answered from the table) */
};

/* A change applied but not made durable is reported as EIO: the node must
 * not count on it (it may be there after all, as after a local EIO) — unless
 * this node is losing the role, when the change goes to the next
 * coordinator instead (fs/cluster_role.c, serve_request). */
static int make_durable(struct volume *v, const struct proto_op *o, const char *node)
{
	int rc = ops_local.syncfs(v);
	if (rc)
		csvfs_log(LOG_ERR_L, "%s from %s applied but the journal commit failed (%d): not acknowledged",
			  o->name, node, rc);
	return rc ? -EIO : 0;
}

/* The reply's fields, in the op's reply codec; returns 0. */
static int reply(struct ctx *c, const union proto_reply *p)
{
	c->op->put_reply(c->w, p);
	return 0;
}

static int h_lookup(struct ctx *c, const struct proto_req *q)
{
	union proto_reply p;
	int rc = ops_local.lookup(c->s->v, q->ino_name.ino, q->ino_name.name, &p.attr);
	return rc ? rc : reply(c, &p);
}

static int h_getattr(struct ctx *c, const struct proto_req *q)
{
	union proto_reply p;
	int rc = ops_local.getattr(c->s->v, q->inode.ino, &p.attr);
	return rc ? rc : reply(c, &p);
}

static int h_setattr(struct ctx *c, const struct proto_req *q)
{
	union proto_reply p;
	int rc = ops_local.setattr(c->s->v, q->setattr.ino, &q->setattr.sa, &p.attr);
	return rc ? rc : reply(c, &p);
}

static int h_create(struct ctx *c, const struct proto_req *q)
{
	const struct proto_create *a = &q->create;
	union proto_reply p;
	int rc = ops_local.create(c->s->v, a->parent, a->name, a->mode, a->rdev, &a->cred, &p.attr);
	return rc ? rc : reply(c, &p);
}

static int h_create_open(struct ctx *c, const struct proto_req *q)
{
	const struct proto_create *a = &q->create;
	union proto_reply p;
	struct minode *m = NULL;
	int rc = ops_local.create_open(c->s->v, a->parent, a->name, a->mode, &a->cred, &p.attr, &m);
	if (rc == 0 && m && (rc = open_record(c->s, c->peer->node, m)) != 0)
		release_put(c->s->v, m);
	return rc ? rc : reply(c, &p);
}

static int h_symlink(struct ctx *c, const struct proto_req *q)
{
	const struct proto_symlink *a = &q->symlink;
	union proto_reply p;
	int rc = ops_local.symlink(c->s->v, a->parent, a->name, a->target, &a->cred, &p.attr);
	return rc ? rc : reply(c, &p);
}

static int h_link(struct ctx *c, const struct proto_req *q)
{
	union proto_reply p;
	int rc = ops_local.link(c->s->v, q->link.ino, q->link.newparent, q->link.newname, &p.attr);
	return rc ? rc : reply(c, &p);
}

static int h_unlink(struct ctx *c, const struct proto_req *q)
{
	return ops_local.unlink(c->s->v, q->ino_name.ino, q->ino_name.name);
}

static int h_rmdir(struct ctx *c, const struct proto_req *q)
{
	return ops_local.rmdir(c->s->v, q->ino_name.ino, q->ino_name.name);
}

static int h_rename(struct ctx *c, const struct proto_req *q)
{
	const struct proto_rename *n = &q->rename;
	return ops_local.rename(c->s->v, n->parent, n->name, n->newparent, n->newname, n->flags, &n->cred);
}

static int h_readlink(struct ctx *c, const struct proto_req *q)
{
	union proto_reply p;
	int rc = ops_local.readlink(c->s->v, q->inode.ino, p.target, sizeof(p.target));
	return rc ? rc : reply(c, &p);
}

/* The page of d[0..n) from index start: about PROTO_READDIR_BYTES. */
static struct proto_dirents page_of(struct meta_dirent *d, size_t n, uint64_t start, int plus)
{
	size_t first = start < n ? (size_t)start : n, end = first, bytes = 0;
	while (end < n && bytes < PROTO_READDIR_BYTES)
		bytes += 16 + (plus ? 90 : 0) + strlen(d[end++].name);
	return (struct proto_dirents){ .more = end < n, .d = d + first, .n = end - first };
}

/* An entry removed since the listing goes without attributes. */
static void page_attrs(struct ctx *c, struct proto_dirents *pg)
{
	for (size_t i = 0; i < pg->n; i++) {
		struct meta_dirent *e = &pg->d[i];
		e->has_attr = ops_local.getattr(c->s->v, (ext2_ino_t)e->ino, &e->attr) == 0;
	}
}

static int readdir_page(struct ctx *c, const struct proto_req *q, int plus)
{
	struct meta_dirent *d;
	size_t n;
	int rc = ops_local.readdir(c->s->v, q->readdir.ino, &d, &n);
	if (rc)
		return rc;
	union proto_reply p = { .dirents = page_of(d, n, q->readdir.start, plus) };
	if (plus)
		page_attrs(c, &p.dirents);
	reply(c, &p);
	meta_free_dirents(d, n);
	return 0;
}

static int h_readdir(struct ctx *c, const struct proto_req *q)
{
	return readdir_page(c, q, 0);
}

static int h_readdirplus(struct ctx *c, const struct proto_req *q)
{
	return readdir_page(c, q, 1);
}

static int h_statfs(struct ctx *c, const struct proto_req *q)
{
	union proto_reply p;
	int rc = ops_local.statfs(c->s->v, &p.statfs, 0);
	return rc ? rc : reply(c, &p);
}

/* getxattr and listxattr: the length, and the bytes when size > 0. */
static int h_xattr_get(struct ctx *c, const struct proto_req *q)
{
	const struct proto_xattr_get *x = &q->xattr_get;
	char *buf = x->size ? malloc(x->size) : NULL;
	if (x->size && !buf)
		return -ENOMEM;
	int n = c->op->code == OP_GETXATTR ? ops_local.getxattr(c->s->v, x->ino, x->name, buf, x->size)
					   : ops_local.listxattr(c->s->v, x->ino, buf, x->size);
	if (n >= 0) {
		uint32_t len = (uint32_t)n;
		union proto_reply p = { .xattr = { .len = len, .n = x->size ? len : 0, .value = buf } };
		reply(c, &p);
	}
	free(buf);
	return n < 0 ? n : 0;
}

static int h_setxattr(struct ctx *c, const struct proto_req *q)
{
	const struct proto_setxattr *x = &q->setxattr;
	return ops_local.setxattr(c->s->v, x->ino, x->name, x->value, x->size, (int)x->flags);
}

static int h_removexattr(struct ctx *c, const struct proto_req *q)
{
	return ops_local.removexattr(c->s->v, q->ino_name.ino, q->ino_name.name);
}

/* The data-path handlers work on regular files only, with a reference for
 * the call. */
static int with_minode(struct ctx *c, uint32_t ino, struct minode **m)
{
	struct meta_attr a;
	int rc = ops_local.getattr(c->s->v, ino, &a);
	if (rc)
		return rc;
	if (!S_ISREG(a.mode))
		return S_ISDIR(a.mode) ? -EISDIR : -EINVAL;
	*m = minode_get(c->s->v, ino);
	return *m ? 0 : -ENOENT;
}

static int h_open(struct ctx *c, const struct proto_req *q)
{
	const struct proto_open *o = &q->open;
	struct minode *m;
	/* The file the caller looked up, before its type: a number freed and
	 * reused since (by a directory, say) is ESTALE, so the kernel looks the
	 * name up again (meta_open), never EISDIR for a name that was a file. */
	struct meta_attr a;
	int rc = ops_local.getattr(c->s->v, o->ino, &a);
	if (rc == 0 && o->ino != EXT2_ROOT_INO && a.generation != o->generation)
		rc = -ESTALE;
	if (rc == 0)
		rc = with_minode(c, o->ino, &m);
	if (rc)
		return rc;
	minode_put(c->s->v, m);
	rc = ops_local.open(c->s->v, o->ino, o->generation, o->truncate, &m);
	if (rc)
		return rc;
	union proto_reply p;
	rc = open_record(c->s, c->peer->node, m);
	if (rc == 0)
		rc = ops_local.getattr(c->s->v, o->ino, &p.attr);
	if (rc == 0 && o->truncate)
		rc = make_durable(c->s->v, c->op, c->peer->node);   /* O_TRUNC: durable as a SETATTR of the size */
	if (rc) {
		struct minode *back = open_take(c->s, c->peer->node, o->ino);
		release_put(c->s->v, back ? back : m);
		return rc;
	}
	return reply(c, &p);
}

static int h_release(struct ctx *c, const struct proto_req *q)
{
	struct minode *m = open_take(c->s, c->peer->node, q->inode.ino);
	if (!m)
		return -EBADF;   /* not open by this node (a reclaim was refused) */
	return release_put(c->s->v, m);
}

static int h_fsync(struct ctx *c, const struct proto_req *q)
{
	struct minode *m;
	int rc = with_minode(c, q->fsync.ino, &m);
	if (rc == 0) {
		rc = ops_local.fsync(c->s->v, m, q->fsync.datasync != 0);
		minode_put(c->s->v, m);
	}
	return rc;
}

static int h_map(struct ctx *c, const struct proto_req *q)
{
	struct minode *m;
	int rc = with_minode(c, q->map.ino, &m);
	if (rc)
		return rc;
	union proto_reply p;
	rc = ops_local.map(c->s->v, m, q->map.lblk, &p.map.e);
	if (rc == 0) {
		p.map.size = atomic_load(&m->size);
		reply(c, &p);
	}
	minode_put(c->s->v, m);
	return rc;
}

static int h_alloc(struct ctx *c, const struct proto_req *q)
{
	struct minode *m;
	int rc = with_minode(c, q->alloc.ino, &m);
	if (rc)
		return rc;
	rc = ops_local.alloc(c->s->v, m, q->alloc.lblk, q->alloc.len);
	minode_put(c->s->v, m);
	return rc;
}

/* Every block of the range must be allocated: a participant writing into a
 * range a previous coordinator allocated and lost is told to map again. */
static int range_allocated(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len)
{
	for (uint64_t pos = lblk; pos < lblk + len;) {
		struct meta_extent e;
		int rc = ops_local.map(v, m, pos, &e);
		if (rc)
			return rc;
		if (e.state == EXTENT_HOLE)
			return -ESTALE;
		pos = e.lblk + e.len;
	}
	return 0;
}

/* Written blocks lie inside the file (e2fsck: "i_size is X, should be Y"). */
static int commit_checked(struct volume *v, struct minode *m, const struct proto_commit *k)
{
	uint64_t cur = atomic_load(&m->size), end = k->size > cur ? k->size : cur;
	int rc = k->len && (k->lblk + k->len - 1) * v->blocksize >= end ? -EINVAL : 0;
	if (rc == 0 && k->len)
		rc = range_allocated(v, m, k->lblk, k->len);
	/* The engine's commit, not ops_local's: that one also keeps the range
	 * as this node's own (m->pend); the participant keeps its own. */
	return rc ? rc : meta_commit_write(v, m, k->lblk, k->len, k->size);
}

static int h_commit(struct ctx *c, const struct proto_req *q)
{
	struct minode *m;
	int rc = with_minode(c, q->commit.ino, &m);
	if (rc)
		return rc;
	rc = commit_checked(c->s->v, m, &q->commit);
	if (rc == 0)
		reply(c, &(union proto_reply){ .u64 = atomic_load(&m->size) });
	minode_put(c->s->v, m);
	return rc;
}

static int h_touch(struct ctx *c, const struct proto_req *q)
{
	struct minode *m;
	int rc = with_minode(c, q->inode.ino, &m);
	if (rc == 0) {
		ops_local.touch_write(c->s->v, m);
		minode_put(c->s->v, m);
	}
	return rc;
}

static int h_fallocate(struct ctx *c, const struct proto_req *q)
{
	const struct proto_fallocate *f = &q->fallocate;
	struct minode *m;
	int rc = with_minode(c, f->ino, &m);
	if (rc)
		return rc;
	rc = ops_local.fallocate(c->s->v, m, (int)f->mode, f->off, f->len);
	if (rc == 0)
		reply(c, &(union proto_reply){ .u64 = atomic_load(&m->size) });
	minode_put(c->s->v, m);
	return rc;
}

static int h_seek(struct ctx *c, const struct proto_req *q)
{
	struct minode *m;
	int rc = with_minode(c, q->seek.ino, &m);
	if (rc)
		return rc;
	union proto_reply p;
	rc = ops_local.seek(c->s->v, m, q->seek.off, (int)q->seek.whence, &p.u64);
	if (rc == 0)
		reply(c, &p);
	minode_put(c->s->v, m);
	return rc;
}

/* ---- redirected I/O (design.md §7): a participant's data on our path ----- */

/* The blocks a LUN_READ / LUN_WRITE names must be where our own map of the
 * inode puts [lblk, lblk+nblk), inside one extent: WRITTEN for a read
 * (unwritten blocks read as zeros, never from the LUN), WRITTEN or
 * UNWRITTEN for a write. Anything else — a stale layout, blocks of another
 * file, a hole — is ESTALE: we never move data for blocks the node holds no
 * layout of (invariant 1; its layout lock, held for the whole transfer,
 * keeps them from being freed meanwhile). */
static int lun_range_checked(struct volume *v, struct minode *m, const struct proto_lun_io *l,
			     int write)
{
	struct meta_extent e;
	int rc = ops_local.map(v, m, l->lblk, &e);
	if (rc)
		return rc;
	int state_ok = e.state == EXTENT_WRITTEN || (write && e.state == EXTENT_UNWRITTEN);
	if (!state_ok || l->lblk + l->nblk > e.lblk + e.len || e.pblk + (l->lblk - e.lblk) != l->pblk)
		return -ESTALE;
	return 0;
}

/* O_DIRECT buffers are the handler thread's own (lun_thread_buffer), kept
 * across requests: a fresh 1 MiB buffer per request costs an mmap, its page
 * faults and a munmap. */
static int h_lun_read(struct ctx *c, const struct proto_req *q)
{
	struct volume *v = c->s->v;
	const struct proto_lun_io *l = &q->lun_io;
	size_t len = (size_t)l->nblk * v->blocksize;
	if (len > PROTO_LUN_IO_MAX)
		return -EINVAL;
	struct minode *m;
	int rc = with_minode(c, l->ino, &m);
	if (rc)
		return rc;
	void *buf = NULL;
	rc = lun_range_checked(v, m, l, 0);
	if (rc == 0 && !(buf = lun_thread_buffer(len)))
		rc = -ENOMEM;
	if (rc == 0)
		rc = lun_pread(&v->data_lun, buf, len, l->pblk * v->blocksize) ? -EIO : 0;
	if (rc == 0)
		reply(c, &(union proto_reply){ .lun_data = { .data = buf, .len = (uint32_t)len } });
	minode_put(v, m);
	return rc;
}

/* The request's data where O_DIRECT takes it: in the frame itself when rio
 * placed it page-aligned (rio.h, struct rio_request), else in a copy. */
static const void *lun_write_source(const struct proto_lun_io *l)
{
	if ((uintptr_t)l->data % 4096 == 0 && l->len % 4096 == 0)
		return l->data;
	void *buf = lun_thread_buffer(l->len);
	if (buf)
		memcpy(buf, l->data, l->len);
	return buf;
}

static int h_lun_write(struct ctx *c, const struct proto_req *q)
{
	struct volume *v = c->s->v;
	const struct proto_lun_io *l = &q->lun_io;
	if ((uint64_t)l->nblk * v->blocksize != l->len)
		return -EINVAL;
	struct minode *m;
	int rc = with_minode(c, l->ino, &m);
	if (rc)
		return rc;
	const void *src = NULL;
	rc = meta_write_check(v);   /* no data written for a node after corruption either */
	if (rc == 0)
		rc = lun_range_checked(v, m, l, 1);
	if (rc == 0 && !(src = lun_write_source(l)))
		rc = -ENOMEM;
	/* As a direct O_DIRECT write: on the LUN, not yet flushed. The node's
	 * flush (before a commit, at fsync, after an O_DSYNC write) is a
	 * LUN_FLUSH, which makes it durable on this same LUN. */
	if (rc == 0)
		rc = lun_pwrite(&v->data_lun, src, l->len, l->pblk * v->blocksize, 0) ? -EIO : 0;
	minode_put(v, m);
	return rc;
}

/* A redirected node's flush (what its fdatasync would have been): makes its
 * LUN_WRITEs durable, and the writes it made on its own path before that
 * failed (one shared LUN: a flush of it covers every writer). */
static int h_lun_flush(struct ctx *c, const struct proto_req *q)
{
	int rc = lun_fdatasync(&c->s->v->data_lun);
	if (rc == 0)
		return 0;
	csvfs_log(LOG_ERR_L, "LUN %s: flush for %s failed: %s", c->s->v->lun, c->peer->node,
		  strerror(-rc));
	return -EIO;
}

static int h_syncfs(struct ctx *c, const struct proto_req *q)
{
	return ops_local.syncfs(c->s->v);
}

static int h_move(struct ctx *c, const struct proto_req *q)
{
	char err[256];
	if (!c->s->move)
		return -EOPNOTSUPP;   /* standalone: no roles to move */
	int rc = c->s->move(c->s->move_arg, q->move.target, err, sizeof(err));
	if (rc)
		csvfs_log(LOG_WARN_L, "move requested by %s refused: %s", c->peer->node, err);
	return rc;
}

/* File locks: the peer is the lock's node, whatever the request says. */
static struct plock lock_of_peer(struct ctx *c, const struct proto_req *q)
{
	struct plock l = q->lock.l;
	snprintf(l.node, sizeof(l.node), "%s", c->peer->node);
	return l;
}

static int h_setlk(struct ctx *c, const struct proto_req *q)
{
	struct plock l = lock_of_peer(c, q);
	union proto_reply p = { .lock = { 0 } };
	int granted = 0;
	int rc = ops_local.setlk(c->s->v, &l, q->lock.reclaim, &granted, &p.lock.gen);
	p.lock.yes = (uint8_t)granted;
	return rc ? rc : reply(c, &p);
}

static int h_getlk(struct ctx *c, const struct proto_req *q)
{
	struct plock l = lock_of_peer(c, q);
	union proto_reply p = { .lock = { 0 } };
	int found = 0;
	int rc = ops_local.getlk(c->s->v, &l, &p.lock.l, &found);
	p.lock.yes = (uint8_t)found;
	p.lock.gen = plock_gen(c->s->v->plocks);
	return rc ? rc : reply(c, &p);
}

static int h_unlock_all(struct ctx *c, const struct proto_req *q)
{
	const struct proto_unlock_all *u = &q->unlock_all;
	return ops_local.unlock_all(c->s->v, c->peer->node, u->ino, (enum plock_by)u->by, u->key);
}

static int h_lkwait(struct ctx *c, const struct proto_req *q)
{
	union proto_reply p;
	int rc = ops_local.lkwait(c->s->v, q->lkwait.gen, q->lkwait.timeout_ms, &p.u64);
	return rc ? rc : reply(c, &p);
}

static int h_reclaim_done(struct ctx *c, const struct proto_req *q)
{
	(void)q;
	return ops_local.reclaim_done(c->s->v, c->peer->node);
}

typedef int (*handler_fn)(struct ctx *c, const struct proto_req *q);
static const handler_fn HANDLERS[OP_MAX_];

/* ONCE: a change the reply table says was applied already (by this or an
 * earlier coordinator) is answered as it was, from the record: no fields,
 * or from the inode it made or changed (now): its attributes, or for a
 * fallocate its size; a create_open or an open with O_TRUNC opens that file
 * for the node again, as the original did (without truncating it again). */
static int answer_applied(struct ctx *c, const struct meta_reply_slot *done)
{
	uint16_t code = c->op->code;
	switch (code) {
	case OP_UNLINK: case OP_RMDIR: case OP_RENAME: case OP_SETXATTR: case OP_REMOVEXATTR:
		return 0;
	default:
		break;
	}
	union proto_reply p;
	if (code == OP_FALLOCATE) {
		int rc = meta_reply_size(c->s->v, done, &p.u64);
		return rc ? rc : reply(c, &p);
	}
	int rc = meta_reply_attr(c->s->v, done, &p.attr);
	if (rc == 0 && (code == OP_CREATE_OPEN || code == OP_OPEN)) {
		struct minode *m = NULL;
		rc = ops_local.open(c->s->v, done->ino, done->gen, 0, &m);
		if (rc == 0 && (rc = open_record(c->s, c->peer->node, m)) != 0)
			release_put(c->s->v, m);
	}
	return rc ? rc : reply(c, &p);
}

/* ONCE (docs/cluster.md "Exactly once"): the change under its request id,
 * which the engine records with the change (meta_reply_expect), unless the
 * table already holds the id: then it is answered from the record. */
static int h_once(struct ctx *c, const struct proto_req *q)
{
	const struct proto_once *id = &q->once;
	struct meta_reply_key k = { .client = id->client, .slot = id->slot, .seq = id->seq, .op = id->op };
	snprintf(k.node, sizeof(k.node), "%s", c->peer->node);
	struct ctx inner = *c;
	inner.op = proto_op(id->op);
	struct meta_reply_slot done;
	if (meta_reply_lookup(c->s->v, &k, &done) == 1) {
		csvfs_log(LOG_INFO_L, "%s's %s (slot %u, seq %u) was applied before: answered from the "
			  "reply table", c->peer->node, inner.op->name, id->slot, id->seq);
		return answer_applied(&inner, &done);
	}
	meta_reply_expect(&k);
	int rc = HANDLERS[id->op](&inner, q);
	meta_reply_expect(NULL);
	if (rc == 0)
		c->once_applied = id->op;
	return rc;
}

/* Test only (tests/integration/commit_lost.sh): CSVFS_TEST_HOLD_COMMIT=PATH
 * holds a forwarded change's journal commit (60 s at most) while PATH exists. */
static void test_hold_commit(const char *node, const struct proto_op *o)
{
	const char *path = getenv("CSVFS_TEST_HOLD_COMMIT");
	if (!path || access(path, F_OK) != 0)
		return;
	csvfs_log(LOG_WARN_L, "test hook: holding the journal commit of %s's %s while %s exists "
		  "(CSVFS_TEST_HOLD_COMMIT)", node, o->name, path);
	for (int i = 0; i < 600 && access(path, F_OK) == 0; i++)
		usleep(100 * 1000);
}

/* Test only (tests/integration/once.sh): CSVFS_TEST_KILL_AFTER_COMMIT=
 * "OP[,OP...]:PATH" makes this daemon kill -9 itself right after the
 * journal commit of a forwarded change of one of those ops and before its
 * reply leaves, once: the daemon that removes PATH first. */
static void test_kill_after_commit(uint16_t op, const char *node)
{
	const char *spec = getenv("CSVFS_TEST_KILL_AFTER_COMMIT");
	const char *path = spec ? strchr(spec, ':') : NULL;
	if (!path)
		return;
	char ops[256], want[64];
	snprintf(ops, sizeof(ops), ",%.*s,", (int)(path - spec), spec);
	snprintf(want, sizeof(want), ",%s,", proto_op_name(op));
	if (!strstr(ops, want) || unlink(path + 1) != 0)
		return;
	csvfs_log(LOG_WARN_L, "test hook: killing this daemon after the journal commit of %s's %s, "
		  "before its reply (CSVFS_TEST_KILL_AFTER_COMMIT)", node, proto_op_name(op));
	kill(getpid(), SIGKILL);
}


/* One handler per operation of fs/proto.c's table. */
static const handler_fn HANDLERS[OP_MAX_] = {
	[OP_LOOKUP] = h_lookup, [OP_GETATTR] = h_getattr, [OP_SETATTR] = h_setattr,
	[OP_CREATE] = h_create, [OP_SYMLINK] = h_symlink, [OP_LINK] = h_link,
	[OP_UNLINK] = h_unlink, [OP_RMDIR] = h_rmdir, [OP_RENAME] = h_rename,
	[OP_READLINK] = h_readlink, [OP_READDIR] = h_readdir, [OP_STATFS] = h_statfs,
	[OP_GETXATTR] = h_xattr_get, [OP_LISTXATTR] = h_xattr_get, [OP_SETXATTR] = h_setxattr,
	[OP_REMOVEXATTR] = h_removexattr, [OP_OPEN] = h_open, [OP_RELEASE] = h_release,
	[OP_FSYNC] = h_fsync, [OP_MAP] = h_map, [OP_ALLOC] = h_alloc, [OP_COMMIT] = h_commit,
	[OP_TOUCH] = h_touch, [OP_FALLOCATE] = h_fallocate, [OP_SEEK] = h_seek,
	[OP_SYNCFS] = h_syncfs, [OP_MOVE] = h_move, [OP_READDIRPLUS] = h_readdirplus,
	[OP_CREATE_OPEN] = h_create_open, [OP_SETLK] = h_setlk, [OP_GETLK] = h_getlk,
	[OP_UNLOCK_ALL] = h_unlock_all, [OP_LKWAIT] = h_lkwait, [OP_RECLAIM_DONE] = h_reclaim_done,
	[OP_LUN_READ] = h_lun_read, [OP_LUN_WRITE] = h_lun_write, [OP_LUN_FLUSH] = h_lun_flush,
	[OP_ONCE] = h_once,
};

/* Decodes the request whole and in range, then runs its handler. */
static int run(struct ctx *c, const uint8_t *payload, uint32_t len)
{
	handler_fn h = c->op ? HANDLERS[c->op->code] : NULL;
	if (!h)
		return -EOPNOTSUPP;
	struct proto_req q;
	if (proto_decode_request(c->op, payload, len, &q))
		return -EPROTO;
	return h(c, &q);
}

int server_request(struct server *s, const char *node, const char *addr, uint16_t op,
		   const uint8_t *payload, uint32_t len, struct rio_writer *out)
{
	struct rio_peer peer = { .node = node, .addr = addr };
	struct ctx c = { .s = s, .peer = &peer, .op = proto_op(op), .w = out };
	/* A connection's threads end with it, and a role given up for a hung
	 * path ends them all: none may leave a transfer to the path. */
	lun_thread_use_workers();
	int rc = run(&c, payload, len);
	/* The NFS rule: a change is answered only once it is in the journal, so
	 * no coordinator crash takes back what a live node was told happened
	 * (group commit shares one transaction among concurrent requests). */
	if (rc == 0 && c.op->durable) {
		test_hold_commit(node, c.op);
		rc = make_durable(s->v, c.op, node);
	}
	if (rc == 0 && c.once_applied)
		test_kill_after_commit(c.once_applied, node);
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
