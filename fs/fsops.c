/* Filesystem operations, dispatched by this node's role (fs/fsops.h): the
 * coordinator (or a standalone node) runs them in its metadata engine; a
 * participant forwards them to the coordinator (fs/proto.h) and moves file
 * data itself, directly on the LUN.
 *
 * A role change (takeover, move) waits for the requests inside; a
 * participant's request that cannot reach a coordinator returns -ERESTART
 * from the inner call, leaves, waits for one and runs again. */
#include "fs/fsops.h"
#include "fs/cluster.h"
#include "fs/data.h"
#include "fs/proto.h"

#include <errno.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DISPATCH(v, LOCAL, REMOTE)                                                   \
	do {                                                                         \
		if (!(v)->cluster)                                                   \
			return (LOCAL);                                              \
		for (uint64_t since_ = 0;;) {                                        \
			int role_ = cluster_enter((v)->cluster);                     \
			if (role_ < 0)                                               \
				return role_;                                        \
			int rc_ = role_ == CL_COORDINATOR ? (LOCAL) : (REMOTE);      \
			cluster_leave((v)->cluster);                                 \
			if (rc_ != -ERESTART)                                        \
				return rc_;                                          \
			int wait_ = cluster_wait_coordinator((v)->cluster, &since_); \
			if (wait_)                                                   \
				return wait_;                                        \
		}                                                                    \
	} while (0)

/* Every role refuses a bad name the same way, before anything is sent. */
#define CHECK_NAME(name)                                                             \
	do {                                                                         \
		int bad_ = meta_check_name(name);                                    \
		if (bad_)                                                            \
			return bad_;                                                 \
	} while (0)

/* ---- participant side: requests to the coordinator -------------------- */

static struct rio_writer req_init(void)
{
	struct rio_writer w;
	rio_writer_init(&w, 0);
	return w;
}

/* Sends w (freed here); on 0 the caller decodes and frees *rep. */
static int call(struct volume *v, uint16_t op, int idempotent, struct rio_writer *w,
		struct rio_reply *rep)
{
	int rc = rio_writer_error(w) ? -ENAMETOOLONG
				     : cluster_call(v->cluster, op, idempotent, w, rep);
	rio_writer_free(w);
	return rc;
}

/* A reply that does not decode is the coordinator's fault, not ours. */
static int decoded(struct rio_reader *r, struct rio_reply *rep, uint16_t op)
{
	int rc = rio_reader_end(r);
	rio_reply_free(rep);
	if (rc) {
		csvfs_log(LOG_ERR_L, "coordinator sent a malformed %s reply", proto_op_name(op));
		return -EIO;
	}
	return 0;
}

static int call_attr(struct volume *v, uint16_t op, int idem, struct rio_writer *w,
		     struct meta_attr *out)
{
	struct rio_reply rep;
	int rc = call(v, op, idem, w, &rep);
	if (rc)
		return rc;
	struct rio_reader r;
	struct meta_attr a;
	rio_reader_init(&r, rep.payload, rep.len);
	proto_get_attr(&r, &a);
	rc = decoded(&r, &rep, op);
	if (rc == 0 && out)
		*out = a;
	return rc;
}

static int call_void(struct volume *v, uint16_t op, int idem, struct rio_writer *w)
{
	struct rio_reply rep;
	int rc = call(v, op, idem, w, &rep);
	if (rc)
		return rc;
	struct rio_reader r;
	rio_reader_init(&r, rep.payload, rep.len);
	return decoded(&r, &rep, op);
}

static int call_u64(struct volume *v, uint16_t op, int idem, struct rio_writer *w, uint64_t *out)
{
	struct rio_reply rep;
	int rc = call(v, op, idem, w, &rep);
	if (rc)
		return rc;
	struct rio_reader r;
	uint64_t x = 0;
	rio_reader_init(&r, rep.payload, rep.len);
	rio_get_u64(&r, &x);
	rc = decoded(&r, &rep, op);
	if (rc == 0 && out)
		*out = x;
	return rc;
}

static int r_ino_name(struct volume *v, uint16_t op, int idem, ext2_ino_t ino, const char *name,
		      struct meta_attr *out)
{
	struct rio_writer w = req_init();
	rio_put_u32(&w, ino);
	rio_put_str(&w, name);
	return out ? call_attr(v, op, idem, &w, out) : call_void(v, op, idem, &w);
}

static int r_getattr(struct volume *v, ext2_ino_t ino, struct meta_attr *out)
{
	struct rio_writer w = req_init();
	rio_put_u32(&w, ino);
	return call_attr(v, OP_GETATTR, 1, &w, out);
}

/* Our own size change: what this node's open files know follows it at
 * once (a truncate elsewhere reaches them through a layout recall). */
static void remote_size_changed(struct volume *v, ext2_ino_t ino, uint64_t size)
{
	struct minode *m = minode_find(v, ino);
	if (m) {
		atomic_store(&m->size, size);
		minode_put(v, m);
	}
}

static int r_setattr(struct volume *v, ext2_ino_t ino, const struct meta_setattr *sa,
		     struct meta_attr *out)
{
	struct rio_writer w = req_init();
	rio_put_u32(&w, ino);
	proto_put_setattr(&w, sa);
	struct meta_attr a;
	int rc = call_attr(v, OP_SETATTR, 0, &w, &a);
	if (rc == 0 && (sa->valid & META_SET_SIZE))
		remote_size_changed(v, ino, a.size);
	if (rc == 0 && out)
		*out = a;
	return rc;
}

static int r_create(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
		    uint32_t rdev, const struct meta_cred *cred, struct meta_attr *out)
{
	struct rio_writer w = req_init();
	rio_put_u32(&w, parent);
	rio_put_str(&w, name);
	rio_put_u32(&w, mode);
	rio_put_u32(&w, rdev);
	proto_put_cred(&w, cred);
	return call_attr(v, OP_CREATE, 0, &w, out);
}

static int r_symlink(struct volume *v, ext2_ino_t parent, const char *name, const char *target,
		     const struct meta_cred *cred, struct meta_attr *out)
{
	if (strlen(target) >= PROTO_PATH_MAX)
		return -ENAMETOOLONG;
	struct rio_writer w = req_init();
	rio_put_u32(&w, parent);
	rio_put_str(&w, name);
	rio_put_str(&w, target);
	proto_put_cred(&w, cred);
	return call_attr(v, OP_SYMLINK, 0, &w, out);
}

static int r_link(struct volume *v, ext2_ino_t ino, ext2_ino_t newparent, const char *newname,
		  struct meta_attr *out)
{
	struct rio_writer w = req_init();
	rio_put_u32(&w, ino);
	rio_put_u32(&w, newparent);
	rio_put_str(&w, newname);
	return call_attr(v, OP_LINK, 0, &w, out);
}

static int r_rename(struct volume *v, ext2_ino_t parent, const char *name, ext2_ino_t newparent,
		    const char *newname, unsigned flags, const struct meta_cred *cred)
{
	struct rio_writer w = req_init();
	rio_put_u32(&w, parent);
	rio_put_str(&w, name);
	rio_put_u32(&w, newparent);
	rio_put_str(&w, newname);
	rio_put_u32(&w, flags);
	if (flags & META_RENAME_WHITEOUT)
		proto_put_cred(&w, cred);
	return call_void(v, OP_RENAME, 0, &w);
}

static int r_readlink(struct volume *v, ext2_ino_t ino, char *buf, size_t size)
{
	struct rio_writer w = req_init();
	struct rio_reply rep;
	rio_put_u32(&w, ino);
	int rc = call(v, OP_READLINK, 1, &w, &rep);
	if (rc)
		return rc;
	struct rio_reader r;
	char target[PROTO_PATH_MAX];
	rio_reader_init(&r, rep.payload, rep.len);
	rio_get_str(&r, target, sizeof(target));
	rc = decoded(&r, &rep, OP_READLINK);
	if (rc == 0 && strlen(target) >= size)
		rc = -ENAMETOOLONG;
	if (rc == 0)
		memcpy(buf, target, strlen(target) + 1);
	return rc;
}

/* One page of entries from index start; *more when the directory goes on. */
static int r_readdir_page(struct volume *v, ext2_ino_t ino, uint64_t start,
			  struct meta_dirent **d, size_t *n, size_t *cap, int *more)
{
	struct rio_writer w = req_init();
	struct rio_reply rep;
	rio_put_u32(&w, ino);
	rio_put_u64(&w, start);
	/* With attributes: readdirplus then needs no round trip per entry. */
	int rc = call(v, OP_READDIRPLUS, 1, &w, &rep);
	if (rc)
		return rc;
	struct rio_reader r;
	uint8_t m = 0;
	uint32_t count = 0;
	rio_reader_init(&r, rep.payload, rep.len);
	rio_get_u8(&r, &m);
	rio_get_u32(&r, &count);
	for (uint32_t i = 0; i < count && rc == 0 && r.err == 0; i++) {
		char name[PROTO_NAME_MAX];
		uint64_t e_ino = 0;
		uint8_t type = 0;
		uint8_t have = 0;
		struct meta_attr a;
		memset(&a, 0, sizeof(a));
		rio_get_u64(&r, &e_ino);
		rio_get_u8(&r, &type);
		rio_get_str(&r, name, sizeof(name));
		if (rio_get_u8(&r, &have) || have > 1 || (have && proto_get_attr(&r, &a)))
			break;
		if (*n == *cap) {
			struct meta_dirent *p = realloc(*d, (*cap = *cap ? 2 * *cap : 64) * sizeof(*p));
			if (!p) {
				rc = -ENOMEM;
				break;
			}
			*d = p;
		}
		(*d)[*n] = (struct meta_dirent){ .name = strdup(name), .ino = e_ino, .type = type,
						 .has_attr = have, .attr = a };
		if (!(*d)[*n].name)
			rc = -ENOMEM;
		else
			(*n)++;
	}
	int dec = decoded(&r, &rep, OP_READDIR);
	*more = m;
	return rc ? rc : dec;
}

static int r_readdir(struct volume *v, ext2_ino_t ino, struct meta_dirent **out, size_t *n)
{
	struct meta_dirent *d = NULL;
	size_t count = 0, cap = 0;
	int more = 1, rc = 0;
	for (unsigned guard = 0; more && rc == 0 && guard < 100000; guard++)
		rc = r_readdir_page(v, ino, count, &d, &count, &cap, &more);
	if (rc) {
		meta_free_dirents(d, count);
		return rc;
	}
	*out = d;
	*n = count;
	return 0;
}

static int r_statfs(struct volume *v, struct statvfs *out)
{
	struct rio_writer w = req_init();
	struct rio_reply rep;
	int rc = call(v, OP_STATFS, 1, &w, &rep);
	if (rc)
		return rc;
	struct rio_reader r;
	rio_reader_init(&r, rep.payload, rep.len);
	proto_get_statfs(&r, out);
	return decoded(&r, &rep, OP_STATFS);
}

/* getxattr and listxattr: size 0 asks for the length only. */
static int r_xattr_get(struct volume *v, uint16_t op, ext2_ino_t ino, const char *name, void *buf,
		       size_t size)
{
	struct rio_writer w = req_init();
	struct rio_reply rep;
	rio_put_u32(&w, ino);
	if (name)
		rio_put_str(&w, name);
	rio_put_u32(&w, (uint32_t)(size > PROTO_XATTR_MAX ? PROTO_XATTR_MAX : size));
	int rc = call(v, op, 1, &w, &rep);
	if (rc)
		return rc;
	struct rio_reader r;
	uint32_t len = 0, n = 0;
	const uint8_t *p = NULL;
	rio_reader_init(&r, rep.payload, rep.len);
	rio_get_u32(&r, &len);
	rio_get_bytes(&r, &p, &n, PROTO_XATTR_MAX);
	if (r.err == 0 && size && n <= size && n)
		memcpy(buf, p, n);
	rc = decoded(&r, &rep, op);
	if (rc == 0 && size && n > size)
		rc = -EIO;
	return rc ? rc : (int)len;
}

static int r_setxattr(struct volume *v, ext2_ino_t ino, const char *name, const void *value,
		      size_t size, int flags)
{
	if (size > PROTO_XATTR_MAX)
		return -E2BIG;
	struct rio_writer w = req_init();
	rio_put_u32(&w, ino);
	rio_put_str(&w, name);
	rio_put_bytes(&w, value, size);
	rio_put_u32(&w, (uint32_t)flags);
	return call_void(v, OP_SETXATTR, 0, &w);
}

/* ---- namespace and attribute operations -------------------------------- */

int fsop_lookup(struct volume *v, ext2_ino_t parent, const char *name, struct meta_attr *out)
{
	CHECK_NAME(name);
	DISPATCH(v, meta_lookup(v, parent, name, out), r_ino_name(v, OP_LOOKUP, 1, parent, name, out));
}

int fsop_getattr(struct volume *v, ext2_ino_t ino, struct meta_attr *out)
{
	DISPATCH(v, meta_getattr(v, ino, out), r_getattr(v, ino, out));
}

/* Coordinator: a truncate frees blocks other nodes may hold layouts of. */
static int local_setattr(struct volume *v, ext2_ino_t ino, const struct meta_setattr *sa,
			 struct meta_attr *out)
{
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

int fsop_setattr(struct volume *v, ext2_ino_t ino, const struct meta_setattr *sa,
		 struct meta_attr *out)
{
	DISPATCH(v, local_setattr(v, ino, sa, out), r_setattr(v, ino, sa, out));
}

int fsop_create(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
		uint32_t rdev, const struct meta_cred *cred, struct meta_attr *out)
{
	CHECK_NAME(name);
	DISPATCH(v, meta_create(v, parent, name, mode, rdev, cred, out),
		 r_create(v, parent, name, mode, rdev, cred, out));
}

int fsop_symlink(struct volume *v, ext2_ino_t parent, const char *name, const char *target,
		 const struct meta_cred *cred, struct meta_attr *out)
{
	CHECK_NAME(name);
	DISPATCH(v, meta_symlink(v, parent, name, target, cred, out),
		 r_symlink(v, parent, name, target, cred, out));
}

int fsop_link(struct volume *v, ext2_ino_t ino, ext2_ino_t newparent, const char *newname,
	      struct meta_attr *out)
{
	CHECK_NAME(newname);
	DISPATCH(v, meta_link(v, ino, newparent, newname, out), r_link(v, ino, newparent, newname, out));
}

int fsop_unlink(struct volume *v, ext2_ino_t parent, const char *name)
{
	CHECK_NAME(name);
	DISPATCH(v, meta_unlink(v, parent, name), r_ino_name(v, OP_UNLINK, 0, parent, name, NULL));
}

int fsop_rmdir(struct volume *v, ext2_ino_t parent, const char *name)
{
	CHECK_NAME(name);
	DISPATCH(v, meta_rmdir(v, parent, name), r_ino_name(v, OP_RMDIR, 0, parent, name, NULL));
}

int fsop_rename(struct volume *v, ext2_ino_t parent, const char *name, ext2_ino_t newparent,
		const char *newname, unsigned flags, const struct meta_cred *cred)
{
	CHECK_NAME(name);
	CHECK_NAME(newname);
	DISPATCH(v, meta_rename_cred(v, parent, name, newparent, newname, flags, cred),
		 r_rename(v, parent, name, newparent, newname, flags, cred));
}

int fsop_readlink(struct volume *v, ext2_ino_t ino, char *buf, size_t size)
{
	DISPATCH(v, meta_readlink(v, ino, buf, size), r_readlink(v, ino, buf, size));
}

int fsop_readdir(struct volume *v, ext2_ino_t ino, struct meta_dirent **out, size_t *n)
{
	DISPATCH(v, meta_readdir(v, ino, out, n), r_readdir(v, ino, out, n));
}

int fsop_statfs(struct volume *v, struct statvfs *out)
{
	DISPATCH(v, meta_statfs(v, out), r_statfs(v, out));
}

/* For status reports: never waits for a coordinator (2 s at most). */
int fsop_statfs_quick(struct volume *v, struct statvfs *out)
{
	if (!v->cluster)
		return meta_statfs(v, out);
	if (!cluster_ready(v->cluster))
		return -EAGAIN;
	int role = cluster_enter(v->cluster), rc = role;
	if (role == CL_COORDINATOR) {
		rc = meta_statfs(v, out);
	} else if (role > 0) {
		struct rio_writer w = req_init();
		struct rio_reply rep;
		rc = cluster_call_timeout(v->cluster, OP_STATFS, 1, &w, &rep, 2000);
		rio_writer_free(&w);
		if (rc == 0) {
			struct rio_reader r;
			rio_reader_init(&r, rep.payload, rep.len);
			proto_get_statfs(&r, out);
			rc = decoded(&r, &rep, OP_STATFS);
		}
	}
	if (role > 0)
		cluster_leave(v->cluster);
	return rc;
}

int fsop_getxattr(struct volume *v, ext2_ino_t ino, const char *name, void *buf, size_t size)
{
	DISPATCH(v, meta_getxattr(v, ino, name, buf, size),
		 r_xattr_get(v, OP_GETXATTR, ino, name, buf, size));
}

int fsop_listxattr(struct volume *v, ext2_ino_t ino, char *buf, size_t size)
{
	DISPATCH(v, meta_listxattr(v, ino, buf, size), r_xattr_get(v, OP_LISTXATTR, ino, NULL, buf, size));
}

int fsop_setxattr(struct volume *v, ext2_ino_t ino, const char *name, const void *value,
		  size_t size, int flags)
{
	DISPATCH(v, meta_setxattr(v, ino, name, value, size, flags),
		 r_setxattr(v, ino, name, value, size, flags));
}

int fsop_removexattr(struct volume *v, ext2_ino_t ino, const char *name)
{
	DISPATCH(v, meta_removexattr(v, ino, name), r_ino_name(v, OP_REMOVEXATTR, 0, ino, name, NULL));
}

/* ---- open files ------------------------------------------------------------ */

static int local_open(struct volume *v, ext2_ino_t ino, uint32_t gen, int truncate,
		      struct minode **out)
{
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

/* The coordinator counts an open of ours: ours to count too. */
static int remote_opened(struct volume *v, const struct meta_attr *a, struct minode **out)
{
	ext2_ino_t ino = (ext2_ino_t)a->ino;
	struct minode *m = minode_get(v, ino);
	if (m) {
		/* A minode left over from a file whose number was freed and
		 * reused (its last release still on the way): not this file's. */
		pthread_mutex_lock(&v->lock);
		int stale = m->open_count == 0 && m->generation != a->generation;
		if (m->open_count == 0)
			m->generation = a->generation;
		pthread_mutex_unlock(&v->lock);
		pthread_mutex_lock(&v->table_lock);
		int shared = m->refs > 1;
		pthread_mutex_unlock(&v->table_lock);
		if (stale && shared) {
			minode_forget(v, m);
			minode_put(v, m);
			m = minode_get(v, ino);
			if (m)
				m->generation = a->generation;
		}
	}
	if (!m)
		return -ENOMEM;   /* the coordinator's open is undone at its next takeover */
	atomic_store(&m->size, a->size);
	atomic_store(&m->size_stale, 0);
	pthread_mutex_lock(&v->lock);
	m->open_count++;
	pthread_mutex_unlock(&v->lock);
	*out = m;
	return 0;
}

static int r_open(struct volume *v, ext2_ino_t ino, uint32_t gen, int truncate, struct minode **out)
{
	struct rio_writer w = req_init();
	struct meta_attr a;
	rio_put_u32(&w, ino);
	rio_put_u8(&w, (uint8_t)truncate);
	rio_put_u32(&w, gen);
	int rc = call_attr(v, OP_OPEN, 0, &w, &a);
	return rc ? rc : remote_opened(v, &a, out);
}

/* A new regular file, opened: one round trip for a participant. */
static int local_create_open(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
			     const struct meta_cred *cred, struct meta_attr *out, struct minode **m)
{
	int rc = meta_create(v, parent, name, mode, 0, cred, out);
	return rc ? rc : local_open(v, (ext2_ino_t)out->ino, out->generation, 0, m);
}

static int r_create_open(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
			 const struct meta_cred *cred, struct meta_attr *out, struct minode **m)
{
	struct rio_writer w = req_init();
	rio_put_u32(&w, parent);
	rio_put_str(&w, name);
	rio_put_u32(&w, mode);
	rio_put_u32(&w, 0);
	proto_put_cred(&w, cred);
	int rc = call_attr(v, OP_CREATE_OPEN, 0, &w, out);
	return rc ? rc : remote_opened(v, out, m);
}

int fsop_create_open(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
		     const struct meta_cred *cred, struct meta_attr *out, struct minode **m)
{
	CHECK_NAME(name);
	DISPATCH(v, local_create_open(v, parent, name, mode, cred, out, m),
		 r_create_open(v, parent, name, mode, cred, out, m));
}

int fsop_open(struct volume *v, ext2_ino_t ino, uint32_t gen, int truncate, struct minode **out)
{
	DISPATCH(v, local_open(v, ino, gen, truncate, out), r_open(v, ino, gen, truncate, out));
}

/* A participant's dirty times travel with its release and fsync. */
static int r_touch_if_dirty(struct volume *v, struct minode *m)
{
	pthread_mutex_lock(&v->lock);
	int dirty = m->times_dirty;
	m->times_dirty = 0;
	pthread_mutex_unlock(&v->lock);
	if (!dirty)
		return 0;
	struct rio_writer w = req_init();
	rio_put_u32(&w, m->ino);
	return call_void(v, OP_TOUCH, 1, &w);
}

static int r_release(struct volume *v, struct minode *m)
{
	int rc = r_touch_if_dirty(v, m);
	if (rc == -ERESTART)
		return rc;
	pthread_mutex_lock(&v->lock);
	int last = m->open_count > 0 && --m->open_count == 0;
	pthread_mutex_unlock(&v->lock);
	/* The layouts go before the coordinator may free the blocks. */
	if (last)
		cluster_layout_drop(v->cluster, m);
	struct rio_writer w = req_init();
	rio_put_u32(&w, m->ino);
	rc = call_void(v, OP_RELEASE, 0, &w);
	if (rc == -ERESTART) {
		/* Not applied: keep the open so the retry (or a reclaim) counts it. */
		pthread_mutex_lock(&v->lock);
		m->open_count++;
		pthread_mutex_unlock(&v->lock);
	}
	return rc;
}

static int release_once(struct volume *v, struct minode *m)
{
	DISPATCH(v, meta_release(v, m), r_release(v, m));
}

int fsop_release(struct volume *v, struct minode *m)
{
	int rc = release_once(v, m);
	minode_put(v, m);
	return rc;
}

/* Remembers a written range the coordinator has not made durable yet. */
static void pending_add(struct minode *m, uint64_t lblk, uint64_t len, uint64_t size,
			uint32_t epoch)
{
	pthread_mutex_lock(&m->map_lock);
	struct pending_commit *last = m->npend ? &m->pend[m->npend - 1] : NULL;
	if (last && last->epoch == epoch && last->lblk + last->len == lblk) {
		last->len += len;
		if (size > last->size)
			last->size = size;
	} else {
		if (m->npend == m->pend_cap) {
			unsigned cap = m->pend_cap ? 2 * m->pend_cap : 8;
			struct pending_commit *p = realloc(m->pend, cap * sizeof(*p));
			if (p) {
				m->pend = p;
				m->pend_cap = cap;
			}
		}
		if (m->npend < m->pend_cap)
			m->pend[m->npend++] = (struct pending_commit){ lblk, len, size, epoch };
	}
	pthread_mutex_unlock(&m->map_lock);
}

static unsigned pending_count(struct minode *m)
{
	pthread_mutex_lock(&m->map_lock);
	unsigned n = m->npend;
	pthread_mutex_unlock(&m->map_lock);
	return n;
}

static int r_commit_send(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len,
			 uint64_t new_size)
{
	struct rio_writer w = req_init();
	uint64_t size = 0;
	rio_put_u32(&w, m->ino);
	rio_put_u64(&w, lblk);
	rio_put_u64(&w, len);
	rio_put_u64(&w, new_size);
	int rc = call_u64(v, OP_COMMIT, 1, &w, &size);
	if (rc == 0 && size > atomic_load(&m->size))
		atomic_store(&m->size, size);
	return rc;
}

/* Ranges committed to an earlier coordinator may have died with it before
 * its journal made them durable: commit them again to this one. */
static int pending_resend(struct volume *v, struct minode *m, uint32_t epoch)
{
	int rc = 0;
	pthread_mutex_lock(&m->map_lock);
	for (unsigned i = 0; i < m->npend && rc == 0; i++) {
		struct pending_commit p = m->pend[i];
		if (p.epoch == epoch)
			continue;
		pthread_mutex_unlock(&m->map_lock);
		rc = r_commit_send(v, m, p.lblk, p.len, p.size);
		pthread_mutex_lock(&m->map_lock);
		if (rc == 0 && i < m->npend)
			m->pend[i].epoch = epoch;
	}
	pthread_mutex_unlock(&m->map_lock);
	return rc;
}

static void pending_clear(struct minode *m, uint32_t epoch)
{
	pthread_mutex_lock(&m->map_lock);
	unsigned keep = 0;
	for (unsigned i = 0; i < m->npend; i++)
		if (m->pend[i].epoch != epoch)
			m->pend[keep++] = m->pend[i];
	m->npend = keep;
	pthread_mutex_unlock(&m->map_lock);
}

static int r_fsync(struct volume *v, struct minode *m, int datasync)
{
	/* Our data first: the coordinator's commit cannot flush our writes. */
	if (fdatasync(v->data_fd) != 0)
		return -errno;
	int rc = datasync ? 0 : r_touch_if_dirty(v, m);
	uint32_t epoch = cluster_epoch(v->cluster);
	if (rc == 0)
		rc = pending_resend(v, m, epoch);
	if (rc == -ESTALE) {
		csvfs_log(LOG_ERR_L, "inode %u: data written before the coordinator changed was "
			  "lost with its allocation", m->ino);
		pending_clear(m, 0);
		return -EIO;
	}
	struct rio_writer w = req_init();
	rio_put_u32(&w, m->ino);
	rio_put_u8(&w, (uint8_t)datasync);
	if (rc == 0)
		rc = call_void(v, OP_FSYNC, 1, &w);
	else
		rio_writer_free(&w);
	if (rc == 0)
		pending_clear(m, epoch);
	return rc;
}

int fsop_fsync(struct volume *v, struct minode *m, int datasync)
{
	DISPATCH(v, meta_fsync(v, m, datasync), r_fsync(v, m, datasync));
}

static int r_syncfs(struct volume *v)
{
	if (fdatasync(v->data_fd) != 0)
		return -errno;
	struct rio_writer w = req_init();
	return call_void(v, OP_SYNCFS, 1, &w);
}

int fsop_syncfs(struct volume *v)
{
	DISPATCH(v, volume_sync(v), r_syncfs(v));
}

/* Collapse and insert range are refused (meta_fallocate, docs/cluster.md). */
#define FALLOC_UNWRITES (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)

static int local_fallocate(struct volume *v, struct minode *m, int mode, uint64_t off, uint64_t len)
{
	void *recall = NULL;
	int rc = (mode & FALLOC_UNWRITES) && v->cluster ? cluster_recall_begin(v->cluster, m->ino, &recall) : 0;
	if (rc == 0)
		rc = meta_fallocate(v, m, mode, off, len);
	if (recall)
		cluster_recall_end(v->cluster, recall);
	return rc;
}

static int r_fallocate(struct volume *v, struct minode *m, int mode, uint64_t off, uint64_t len)
{
	struct rio_writer w = req_init();
	uint64_t size = 0;
	rio_put_u32(&w, m->ino);
	rio_put_u32(&w, (uint32_t)mode);
	rio_put_u64(&w, off);
	rio_put_u64(&w, len);
	int rc = call_u64(v, OP_FALLOCATE, 0, &w, &size);
	if (rc == 0)
		atomic_store(&m->size, size);
	return rc;
}

int fsop_fallocate(struct volume *v, struct minode *m, int mode, uint64_t off, uint64_t len)
{
	DISPATCH(v, local_fallocate(v, m, mode, off, len), r_fallocate(v, m, mode, off, len));
}

static int r_seek(struct volume *v, struct minode *m, uint64_t off, int whence, uint64_t *out)
{
	struct rio_writer w = req_init();
	rio_put_u32(&w, m->ino);
	rio_put_u64(&w, off);
	rio_put_u32(&w, (uint32_t)whence);
	return call_u64(v, OP_SEEK, 1, &w, out);
}

int fsop_seek(struct volume *v, struct minode *m, uint64_t off, int whence, uint64_t *out)
{
	DISPATCH(v, meta_seek(v, m, off, whence, out), r_seek(v, m, off, whence, out));
}

/* ---- file data ------------------------------------------------------------- */

/* Runs a data transfer, going on after a role change with what is left:
 * data moves in pieces, each whole or not at all. */
static ssize_t transfer(struct volume *v, struct minode *m, char *rbuf, const char *wbuf,
			size_t len, uint64_t off)
{
	if (!v->cluster)
		return rbuf ? data_read(v, m, rbuf, len, off) : data_write(v, m, wbuf, len, off);
	size_t done = 0;
	for (uint64_t since = 0;;) {
		int role = cluster_enter(v->cluster);
		if (role < 0)
			return done ? (ssize_t)done : role;
		ssize_t n = rbuf ? data_read(v, m, rbuf + done, len - done, off + done)
				 : data_write(v, m, wbuf + done, len - done, off + done);
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
	return transfer(v, m, NULL, buf, len, off);
}

/* A participant caches only written mappings, and only under its layout
 * lock: they change only by truncate, punch or zeroing, which recall the
 * lock first. Holes and unwritten extents are asked for every time, since
 * another node may fill them at any moment. */
static int r_map(struct volume *v, struct minode *m, uint64_t lblk, struct meta_extent *out)
{
	int held = cluster_layout_hold(v->cluster, m) == 0;
	if (held && minode_map_lookup(m, lblk, out))
		return 0;
	pthread_mutex_lock(&m->map_lock);
	uint64_t token = m->layout_token;
	pthread_mutex_unlock(&m->map_lock);
	struct rio_writer w = req_init();
	struct rio_reply rep;
	rio_put_u32(&w, m->ino);
	rio_put_u64(&w, lblk);
	int rc = call(v, OP_MAP, 1, &w, &rep);
	if (rc)
		return rc;
	struct rio_reader r;
	struct meta_extent e;
	uint64_t size = 0;
	rio_reader_init(&r, rep.payload, rep.len);
	proto_get_extent(&r, &e);
	rio_get_u64(&r, &size);
	rc = decoded(&r, &rep, OP_MAP);
	if (rc == 0 && (lblk < e.lblk || lblk >= e.lblk + e.len))
		rc = -EIO;
	if (rc)
		return rc;
	*out = e;
	if (e.state == EXTENT_WRITTEN && held) {
		pthread_mutex_lock(&m->map_lock);
		int still = m->layout_state == LAYOUT_GRANTED && m->layout_token == token;
		pthread_mutex_unlock(&m->map_lock);
		if (still)
			minode_map_store(m, &e);
	}
	return 0;
}

int fsop_map(struct volume *v, struct minode *m, uint64_t lblk, struct meta_extent *out)
{
	return v->fs ? meta_map(v, m, lblk, out) : r_map(v, m, lblk, out);
}

static int r_alloc(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len)
{
	struct rio_writer w = req_init();
	rio_put_u32(&w, m->ino);
	rio_put_u64(&w, lblk);
	rio_put_u64(&w, len);
	return call_void(v, OP_ALLOC, 1, &w);
}

int fsop_alloc(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len)
{
	return v->fs ? meta_alloc(v, m, lblk, len) : r_alloc(v, m, lblk, len);
}

#define PENDING_MAX 256

static int r_commit_write(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len,
			  uint64_t new_size)
{
	/* The blocks become readable as data on every node: the data must be
	 * durable first (design.md §4). */
	if (len && fdatasync(v->data_fd) != 0)
		return -errno;
	uint32_t epoch = cluster_epoch(v->cluster);
	int rc = r_commit_send(v, m, lblk, len, new_size);
	if (rc == 0 && len)
		pending_add(m, lblk, len, new_size, epoch);
	if (rc == 0 && pending_count(m) > PENDING_MAX)
		rc = r_fsync(v, m, 1);
	return rc;
}

int fsop_commit_write(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len,
		      uint64_t new_size)
{
	return v->fs ? meta_commit_write(v, m, lblk, len, new_size)
		     : r_commit_write(v, m, lblk, len, new_size);
}

void fsop_touch_write(struct volume *v, struct minode *m)
{
	if (v->fs) {
		meta_touch_write(v, m);
		return;
	}
	pthread_mutex_lock(&v->lock);
	m->times_dirty = 1;
	pthread_mutex_unlock(&v->lock);
}

int fsop_refresh_size(struct volume *v, struct minode *m, uint64_t end)
{
	if (v->fs)
		return 0;
	/* The size is ours to trust only under the layout lock (a truncate
	 * elsewhere recalls it and marks the size stale), so hold it first. */
	int held = cluster_layout_hold(v->cluster, m) == 0;
	if (held && !atomic_load(&m->size_stale) && end <= atomic_load(&m->size))
		return 0;
	struct meta_attr a;
	int rc = r_getattr(v, m->ino, &a);
	if (rc == 0) {
		atomic_store(&m->size, a.size);
		atomic_store(&m->size_stale, 0);
	}
	return rc;
}
