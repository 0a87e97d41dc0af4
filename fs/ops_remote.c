/* ops_remote (fs/ops.h): a participant's operations, as requests to the
 * coordinator (fs/proto.h) over the volume's remote_link. File data does
 * not travel while this node's path works: the data path (fs/data.c) asks
 * here only for layouts (map, alloc) and commits, and moves the bytes
 * directly on the LUN; redirected (fs/iostate.h), it sends them here
 * (lun_redirect, OP_LUN_*).
 *
 * A participant trusts what it caches (written mappings, the size) only
 * while it holds the inode's layout lock; a truncate, punch or zeroing
 * elsewhere recalls it first (docs/cluster.md). */
#include "fs/ops.h"
#include "fs/proto.h"
#include "fs/iostate.h"
#include "fs/cluster.h"

#include <errno.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ---- exactly once: request ids (docs/cluster.md "Exactly once") ---------- */

/* This daemon's client id and its REPLY_SLOTS slots: one process serves one
 * volume, and a restarted daemon must draw a new id (the coordinator then
 * forgets the old one's records), hence one table per process. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t freed;
	uint64_t client;                /* drawn at the first change sent */
	uint32_t seq[REPLY_SLOTS];      /* the last seq sent in each slot */
	uint32_t busy;                  /* a bit per slot held by an operation */
} once = { .lock = PTHREAD_MUTEX_INITIALIZER, .freed = PTHREAD_COND_INITIALIZER };

_Static_assert(REPLY_SLOTS <= 32, "once.busy has a bit per slot");

/* The id this thread's change went under. A change that got -ERESTART (the
 * coordinator died or moved) is sent again by fsops.c's retry loop: with the
 * same id (resend), so that a coordinator that applied it answers from its
 * table. Any other outcome ends the id, and so does remote_once_end. */
static __thread struct { int held, resend; uint32_t slot, seq; uint16_t op; } mine;

static uint64_t draw_client_id(void)
{
	uint64_t id = 0;
	while (id == 0)
		if (getrandom(&id, sizeof(id), 0) != sizeof(id))
			id = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
	return id;
}

/* The id for op's change: the last one again for its resend, else the next
 * seq of a free slot (waiting while every slot is held). */
static struct proto_once once_id(uint16_t op)
{
	pthread_mutex_lock(&once.lock);
	if (!(mine.held && mine.resend && mine.op == op)) {
		if (!once.client)
			once.client = draw_client_id();
		if (!mine.held) {
			while (once.busy == (uint32_t)((1ull << REPLY_SLOTS) - 1))
				pthread_cond_wait(&once.freed, &once.lock);
			mine.slot = (uint32_t)__builtin_ctz(~once.busy);
			once.busy |= 1u << mine.slot;
			mine.held = 1;
		}
		if (++once.seq[mine.slot] == 0)
			once.seq[mine.slot] = 1;   /* 0 names no request */
		mine.seq = once.seq[mine.slot];
		mine.op = op;
	}
	mine.resend = 0;
	struct proto_once id = { once.client, mine.slot, mine.seq, op };
	pthread_mutex_unlock(&once.lock);
	return id;
}

void remote_once_end(void)
{
	if (!mine.held)
		return;
	pthread_mutex_lock(&once.lock);
	once.busy &= ~(1u << mine.slot);
	pthread_cond_signal(&once.freed);
	pthread_mutex_unlock(&once.lock);
	mine.held = mine.resend = 0;
}

/* After the call: kept for a resend only when the answer was -ERESTART. */
static void once_sent(int rc)
{
	if (rc == -ERESTART)
		mine.resend = 1;
	else
		remote_once_end();
}

int remote_once_sent(const struct volume *v, uint16_t op, struct meta_reply_key *k)
{
	if (!mine.held || !mine.resend || mine.op != op)
		return 0;
	pthread_mutex_lock(&once.lock);
	*k = (struct meta_reply_key){ .client = once.client, .slot = mine.slot, .seq = mine.seq,
				      .op = op };
	pthread_mutex_unlock(&once.lock);
	snprintf(k->node, sizeof(k->node), "%s", v->node_name);
	return 1;
}

void remote_once_test_hold(const struct volume *v)
{
	const char *path = getenv("CSVFS_TEST_HOLD_RESEND");
	if (!path || !mine.held || !mine.resend || access(path, F_OK) != 0)
		return;
	csvfs_log(LOG_WARN_L, "test hook: holding the resend of node %s's %s (slot %u, seq %u) while %s "
		  "exists (CSVFS_TEST_HOLD_RESEND)", v->node_name, proto_op_name(mine.op), mine.slot,
		  mine.seq, path);
	for (unsigned i = 0; i < 600 && access(path, F_OK) == 0; i++)
		usleep(100 * 1000);
}

/* ---- requests ------------------------------------------------------------ */
/* Sends o's request q (timeout_ms 0: the usual call timeout); on 0 the
 * caller decodes and frees *rep. A change that must apply once goes
 * wrapped in ONCE with this operation's request id. */
static int send_request(struct volume *v, const struct proto_op *o, const struct proto_req *q,
			struct rio_reply *rep, unsigned timeout_ms)
{
	struct rio_writer w;
	rio_writer_init_frame(&w, 0);   /* sent from here, with no copy */
	int once_op = proto_req_once(o->code, q);
	if (once_op) {
		struct proto_once id = once_id(o->code);
		proto_put_once(&w, &id, q);
	} else {
		o->put_req(&w, q);
	}
	int rc = rio_writer_error(&w) ? -ENAMETOOLONG
				       : v->remote->call(v->remote->ctx, once_op ? OP_ONCE : o->code, &w,
							 rep, timeout_ms);
	rio_writer_free(&w);
	if (once_op)
		once_sent(rc);
	return rc;
}

/* A reply that does not decode is the coordinator's fault, not ours. */
static int decode_reply(const struct proto_op *o, struct rio_reply *rep, union proto_reply *out)
{
	int rc = proto_decode_reply(o, rep->payload, rep->len, out);
	rio_reply_free(rep);
	if (rc && rc != RIO_E_NOMEM)
		csvfs_log(LOG_ERR_L, "coordinator sent a malformed %s reply", o->name);
	return rc == 0 ? 0 : rc == RIO_E_NOMEM ? -ENOMEM : -EIO;
}

/* op's request q to the coordinator, its reply's fields into *out. */
static int call_within(struct volume *v, uint16_t op, const struct proto_req *q,
		       union proto_reply *out, unsigned timeout_ms)
{
	const struct proto_op *o = proto_op(op);
	struct rio_reply rep;
	int rc = send_request(v, o, q, &rep, timeout_ms);
	return rc ? rc : decode_reply(o, &rep, out);
}

static int call(struct volume *v, uint16_t op, const struct proto_req *q, union proto_reply *out)
{
	return call_within(v, op, q, out, 0);
}

static int call_void(struct volume *v, uint16_t op, const struct proto_req *q)
{
	union proto_reply p;
	return call(v, op, q, &p);
}

static int call_u64(struct volume *v, uint16_t op, const struct proto_req *q, uint64_t *out)
{
	union proto_reply p;
	int rc = call(v, op, q, &p);
	if (rc == 0 && out)
		*out = p.u64;
	return rc;
}

/* Operations that answer with an attr (out may be NULL), or nothing. */
static int call_attr(struct volume *v, uint16_t op, const struct proto_req *q,
		     struct meta_attr *out)
{
	union proto_reply p;
	int rc = call(v, op, q, &p);
	if (rc == 0 && out)
		*out = p.attr;
	return rc;
}

static int r_ino_name(struct volume *v, uint16_t op, ext2_ino_t ino, const char *name,
		      struct meta_attr *out)
{
	struct proto_req q = { .ino_name = { ino, name } };
	return call_attr(v, op, &q, out);
}

static int pending_resend(struct volume *v, struct minode *m, uint32_t epoch);

/* A stat after a takeover shows what this node wrote: the ranges and sizes
 * it committed to an earlier coordinator go to this one first, as before the
 * file's next read or write (the first request after the takeover may be a
 * stat: the size came back short, make soak under kills). A call that meets
 * the takeover returns -ERESTART and runs again here with the new epoch. */
static int r_getattr(struct volume *v, ext2_ino_t ino, struct meta_attr *out)
{
	struct minode *m = minode_find(v, ino);
	int rc = m ? pending_resend(v, m, v->remote->epoch(v->remote->ctx)) : 0;
	if (m)
		minode_put(v, m);
	if (rc)
		return rc;
	/* a file not open here: the copy a readdirplus left under its lock */
	if (!m && v->cluster && cluster_attr_cached(v->cluster, ino, out))
		return 0;
	struct proto_req q = { .inode = { ino } };
	return call_attr(v, OP_GETATTR, &q, out);
}

/* ---- namespace and attributes -------------------------------------------- */

/* Our own truncate, punch or zeroing of [from, to) (blocks): written ranges
 * there that wait to be committed again to a new coordinator are no longer
 * ours to commit — a resend would fail on freed blocks (ESTALE, and fsync
 * said EIO after a move), or mark zeroed blocks written again. The size a
 * range wrote stays (a punch keeps the size; a truncate clamps it after):
 * a range punched whole becomes a size alone, else a punch after a takeover
 * lost the size of a write the old coordinator had not made durable. */
static void pending_forget(struct minode *m, uint64_t from, uint64_t to)
{
	pthread_mutex_lock(&m->map_lock);
	unsigned keep = 0, n = m->npend;
	struct pending_commit tail = { 0 };
	int split = 0;
	for (unsigned i = 0; i < n; i++) {
		struct pending_commit p = m->pend[i];
		if (p.len == 0) {
			m->pend[keep++] = p;   /* a size only: pending_clamp's */
			continue;
		}
		uint64_t end = p.lblk + p.len;
		if (end > from && p.lblk < to && p.lblk < from && end > to) {
			tail = (struct pending_commit){ to, end - to, p.size, p.epoch, p.txn };
			split = 1;
		}
		if (end > from && p.lblk >= from && p.lblk < to && end > to)
			p = (struct pending_commit){ to, end - to, p.size, p.epoch, p.txn };   /* the part after to */
		else if (end > from && p.lblk < to)
			p.len = p.lblk < from ? from - p.lblk : 0;   /* the part before from, or a size alone */
		m->pend[keep++] = p;
	}
	m->npend = keep;
	if (split && keep < m->pend_cap)
		m->pend[m->npend++] = tail;   /* the part after to; dropped if no room */
	pthread_mutex_unlock(&m->map_lock);
}

/* Our own truncate to size: a range or size committed before it must not
 * grow the file again when it is committed again to a new coordinator. */
static void pending_clamp(struct minode *m, uint64_t size)
{
	pthread_mutex_lock(&m->map_lock);
	for (unsigned i = 0; i < m->npend; i++)
		if (m->pend[i].size > size)
			m->pend[i].size = size;
	pthread_mutex_unlock(&m->map_lock);
}

/* Our own size change: what this node's open files know follows it at
 * once (a truncate elsewhere reaches them through a layout recall). */
static void remote_size_changed(struct volume *v, ext2_ino_t ino, uint64_t size)
{
	struct minode *m = minode_find(v, ino);
	if (m) {
		atomic_store(&m->size, size);
		pending_forget(m, (size + v->blocksize - 1) / v->blocksize, UINT64_MAX);
		pending_clamp(m, size);
		minode_put(v, m);
	}
}

static int r_setattr(struct volume *v, ext2_ino_t ino, const struct meta_setattr *sa,
		     struct meta_attr *out)
{
	struct proto_req q = { .setattr = { ino, *sa } };
	struct meta_attr a;
	int rc = call_attr(v, OP_SETATTR, &q, &a);
	if (rc == 0 && (sa->valid & META_SET_SIZE))
		remote_size_changed(v, ino, a.size);
	if (rc == 0 && out)
		*out = a;
	return rc;
}

static int r_create(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
		    uint32_t rdev, const struct meta_cred *cred, struct meta_attr *out)
{
	struct proto_req q = { .create = { parent, name, mode, rdev, *cred } };
	return call_attr(v, OP_CREATE, &q, out);
}

static int r_symlink(struct volume *v, ext2_ino_t parent, const char *name, const char *target,
		     const struct meta_cred *cred, struct meta_attr *out)
{
	if (strlen(target) >= PROTO_PATH_MAX)
		return -ENAMETOOLONG;
	struct proto_req q = { .symlink = { parent, name, target, *cred } };
	return call_attr(v, OP_SYMLINK, &q, out);
}

static int r_link(struct volume *v, ext2_ino_t ino, ext2_ino_t newparent, const char *newname,
		  struct meta_attr *out)
{
	struct proto_req q = { .link = { ino, newparent, newname } };
	return call_attr(v, OP_LINK, &q, out);
}

static int r_rename(struct volume *v, ext2_ino_t parent, const char *name, ext2_ino_t newparent,
		    const char *newname, unsigned flags, const struct meta_cred *cred)
{
	struct proto_req q = { .rename = { .parent = parent, .name = name, .newparent = newparent,
					   .newname = newname, .flags = flags } };
	if (flags & META_RENAME_WHITEOUT)
		q.rename.cred = *cred;
	return call_void(v, OP_RENAME, &q);
}

static int r_readlink(struct volume *v, ext2_ino_t ino, char *buf, size_t size)
{
	struct proto_req q = { .inode = { ino } };
	union proto_reply p;
	int rc = call(v, OP_READLINK, &q, &p);
	if (rc == 0 && strlen(p.target) >= size)
		rc = -ENAMETOOLONG;
	if (rc == 0)
		memcpy(buf, p.target, strlen(p.target) + 1);
	return rc;
}

/* Appends a page's entries to *d (n of them, room for *cap); frees the page. */
static int dirents_append(struct proto_dirents *pg, struct meta_dirent **d, size_t *n, size_t *cap)
{
	if (*n + pg->n > *cap) {
		size_t want = *cap ? *cap : 64;
		while (want < *n + pg->n)
			want *= 2;
		struct meta_dirent *p = realloc(*d, want * sizeof(*p));
		if (!p) {
			meta_free_dirents(pg->d, pg->n);
			return -ENOMEM;
		}
		*d = p;
		*cap = want;
	}
	if (pg->n)
		memcpy(*d + *n, pg->d, pg->n * sizeof(*pg->d));
	*n += pg->n;
	free(pg->d);
	return 0;
}

/* One page of entries from index start; *more when the directory goes on. */
static int r_readdir_page(struct volume *v, ext2_ino_t ino, uint64_t start,
			  struct meta_dirent **d, size_t *n, size_t *cap, int *more)
{
	struct proto_req q = { .readdir = { ino, start } };
	union proto_reply p;
	/* With attributes: readdirplus then needs no round trip per entry. */
	int rc = call(v, OP_READDIRPLUS, &q, &p);
	if (rc)
		return rc;
	*more = p.dirents.more;
	return dirents_append(&p.dirents, d, n, cap);
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

static int r_statfs(struct volume *v, struct statvfs *out, unsigned timeout_ms)
{
	struct proto_req q = { 0 };
	union proto_reply p;
	int rc = call_within(v, OP_STATFS, &q, &p, timeout_ms);
	if (rc == 0)
		*out = p.statfs;
	return rc;
}

/* getxattr and listxattr: size 0 asks for the length only. */
static int r_xattr_get(struct volume *v, uint16_t op, ext2_ino_t ino, const char *name, void *buf,
		       size_t size)
{
	uint32_t ask = (uint32_t)(size > PROTO_XATTR_MAX ? PROTO_XATTR_MAX : size);
	struct proto_req q = { .xattr_get = { ino, name, ask } };
	union proto_reply p = { .xattr = { .buf = buf, .size = size } };
	int rc = call(v, op, &q, &p);
	if (rc == 0 && size && p.xattr.n > size)
		rc = -EIO;
	return rc ? rc : (int)p.xattr.len;
}

static int r_setxattr(struct volume *v, ext2_ino_t ino, const char *name, const void *value,
		      size_t size, int flags)
{
	if (size > PROTO_XATTR_MAX)
		return -E2BIG;
	struct proto_req q = { .setxattr = { ino, name, value, (uint32_t)size, (uint32_t)flags } };
	return call_void(v, OP_SETXATTR, &q);
}

/* ---- open files ------------------------------------------------------------ */

/* The coordinator counts an open of ours: ours to count too. */
static int remote_opened(struct volume *v, const struct meta_attr *a, struct minode **out)
{
	struct minode *m = minode_get_generation(v, (ext2_ino_t)a->ino, a->generation);
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
	struct proto_req q = { .open = { ino, (uint8_t)truncate, gen } };
	struct meta_attr a;
	int rc = call_attr(v, OP_OPEN, &q, &a);
	if (rc == 0 && truncate)
		remote_size_changed(v, ino, 0);
	return rc ? rc : remote_opened(v, &a, out);
}

static int r_create_open(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
			 const struct meta_cred *cred, struct meta_attr *out, struct minode **m)
{
	struct proto_req q = { .create = { parent, name, mode, 0, *cred } };
	int rc = call_attr(v, OP_CREATE_OPEN, &q, out);
	return rc ? rc : remote_opened(v, out, m);
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
	struct proto_req q = { .inode = { m->ino } };
	int rc = call_void(v, OP_TOUCH, &q);
	if (rc == -ERESTART) {
		/* Not applied: the retried release or fsync sends them. */
		pthread_mutex_lock(&v->lock);
		m->times_dirty = 1;
		pthread_mutex_unlock(&v->lock);
	}
	return rc;
}


/* ---- durability: commits a new coordinator may not have ------------------- */

static int r_commit_send(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len,
			 uint64_t new_size)
{
	struct proto_req q = { .commit = { m->ino, lblk, len, new_size } };
	uint64_t size = 0;
	int rc = call_u64(v, OP_COMMIT, &q, &size);
	if (rc == 0 && size > atomic_load(&m->size))
		atomic_store(&m->size, size);
	return rc;
}

/* Ranges committed to an earlier coordinator may have died with it before
 * its journal made them durable: commit them again to this one (fsync, and
 * the file's next read or write: until then this node and every other would
 * read its data there as zeros). A range whose allocation died too is lost:
 * -EIO, once. */
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
		if (rc == 0 && i < m->npend) {
			m->pend[i].epoch = epoch;
			m->pend[i].txn = 0;   /* a participant's now (a coordinator's before) */
		}
	}
	pthread_mutex_unlock(&m->map_lock);
	if (rc != -ESTALE)
		return rc;
	csvfs_log(LOG_ERR_L, "inode %u: data written before the coordinator changed was "
		  "lost with its allocation", m->ino);
	minode_pend_clear_epoch(m, 0);
	return -EIO;
}

/* Group flush: every commit of written ranges needs our data durable first,
 * and concurrent writers (a VM's queue) would each pay an fdatasync. A flush
 * covers every write completed before it started, so a caller waits for the
 * first flush that starts after it arrived — running one itself if none is
 * running — and shares its result. One daemon serves one volume, so one
 * group per process; the lock guards it. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t started, done;   /* flushes started / finished, in order */
	int running;
	int last_err;             /* errno of flush number `done` (0: durable) */
} flush_group = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0 };

static int grouped_fdatasync(const struct lun *l)
{
	pthread_mutex_lock(&flush_group.mu);
	uint64_t need = flush_group.started + 1;
	while (flush_group.done < need) {
		if (flush_group.running) {
			pthread_cond_wait(&flush_group.cv, &flush_group.mu);
			continue;
		}
		flush_group.running = 1;
		uint64_t this_flush = ++flush_group.started;
		pthread_mutex_unlock(&flush_group.mu);
		int err = -lun_fdatasync(l);
		pthread_mutex_lock(&flush_group.mu);
		flush_group.running = 0;
		flush_group.done = this_flush;
		flush_group.last_err = err;
		pthread_cond_broadcast(&flush_group.cv);
	}
	/* done >= need: the last flush started after we arrived (a later one
	 * too, whose result is the one kept: as good for us) */
	int err = flush_group.last_err;
	pthread_mutex_unlock(&flush_group.mu);
	return err;
}

/* Our data durable on the LUN: our own path's flush, or — redirected, or when
 * that flush finds the path gone — the coordinator's (OP_LUN_FLUSH: its
 * fdatasync of the same LUN covers our redirected writes and the direct ones
 * we made before the path failed). */
static int data_flush(struct volume *v)
{
	if (!iostate_redirected()) {
		int err = grouped_fdatasync(&v->data_lun);
		if (err == 0)
			return 0;
		if (!lun_error_is_path(err))
			return -err;
		iostate_path_failed(v->lun, -err);
	}
	struct proto_req q = { 0 };
	return call_void(v, OP_LUN_FLUSH, &q);
}

static int r_fsync(struct volume *v, struct minode *m, int datasync)
{
	/* Our data first: the coordinator's commit cannot flush our writes. */
	int flushed = data_flush(v);
	if (flushed)
		return flushed;
	int rc = datasync ? 0 : r_touch_if_dirty(v, m);
	uint32_t epoch = v->remote->epoch(v->remote->ctx);
	if (rc == 0)
		rc = pending_resend(v, m, epoch);
	struct proto_req q = { .fsync = { m->ino, (uint8_t)datasync } };
	if (rc == 0)
		rc = call_void(v, OP_FSYNC, &q);
	if (rc == 0)
		minode_pend_clear_epoch(m, epoch);
	return rc;
}

static int r_release(struct volume *v, struct minode *m)
{
	pthread_mutex_lock(&v->lock);
	int last = m->open_count == 1;
	pthread_mutex_unlock(&v->lock);
	/* As NFS commits at close: what this node wrote is durable before its
	 * last close is answered, so no coordinator crash after it loses it
	 * (nothing here would remember the ranges to send again). */
	int rc = last && minode_pend_count(m) ? r_fsync(v, m, 1) : 0;   /* an error is logged there */
	if (rc == -ERESTART || r_touch_if_dirty(v, m) == -ERESTART)
		return -ERESTART;
	pthread_mutex_lock(&v->lock);
	last = m->open_count > 0 && --m->open_count == 0;
	pthread_mutex_unlock(&v->lock);
	/* The layouts go before the coordinator may free the blocks. */
	if (last)
		v->remote->layout_drop(v->remote->ctx, m);
	struct proto_req q = { .inode = { m->ino } };
	rc = call_void(v, OP_RELEASE, &q);
	if (rc == -EBADF) {
		/* A new coordinator whose reclaim came while this release was
		 * on its way (the open uncounted for that moment): not open there. */
		csvfs_log(LOG_DEBUG_L, "inode %u: the new coordinator had no open of ours to release", m->ino);
		rc = 0;
	}
	if (rc == -ERESTART) {
		/* Not applied: keep the open so the retry (or a reclaim) counts it. */
		pthread_mutex_lock(&v->lock);
		m->open_count++;
		pthread_mutex_unlock(&v->lock);
	}
	return rc;
}

static int r_syncfs(struct volume *v)
{
	int rc = data_flush(v);
	if (rc)
		return rc;
	struct proto_req q = { 0 };
	return call_void(v, OP_SYNCFS, &q);
}

/* What went to an older coordinator goes to this one first (as before a
 * read or write): the coordinator answers with the size, which must hold
 * what we wrote before the takeover. The ranges a punch or zeroing is about
 * to remove are not ours to commit again, but their sizes are. */
static int r_fallocate(struct volume *v, struct minode *m, int mode, uint64_t off, uint64_t len)
{
	int removes = (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) != 0;
	if (removes)
		pending_forget(m, (off + v->blocksize - 1) / v->blocksize, (off + len) / v->blocksize);
	int rc = pending_resend(v, m, v->remote->epoch(v->remote->ctx));
	if (rc)
		return rc;
	struct proto_req q = { .fallocate = { m->ino, (uint32_t)mode, off, len } };
	uint64_t size = 0;
	rc = call_u64(v, OP_FALLOCATE, &q, &size);
	if (rc == 0)
		atomic_store(&m->size, size);
	return rc;
}

static int r_seek(struct volume *v, struct minode *m, uint64_t off, int whence, uint64_t *out)
{
	struct proto_req q = { .seek = { m->ino, off, (uint32_t)whence } };
	return call_u64(v, OP_SEEK, &q, out);
}

/* ---- the data path's metadata ----------------------------------------------- */

/* A participant caches only written mappings, and only under its layout
 * lock: they change only by truncate, punch or zeroing, which recall the
 * lock first. Holes and unwritten extents are asked for every time, since
 * another node may fill them at any moment. */
static int r_map(struct volume *v, struct minode *m, uint64_t lblk, struct meta_extent *out)
{
	int held = v->remote->layout_hold(v->remote->ctx, m) == 0;
	if (held && minode_map_lookup(m, lblk, out))
		return 0;
	pthread_mutex_lock(&m->map_lock);
	uint64_t token = m->layout_token;
	pthread_mutex_unlock(&m->map_lock);
	struct proto_req q = { .map = { m->ino, lblk } };
	union proto_reply p;
	int rc = call(v, OP_MAP, &q, &p);
	if (rc)
		return rc;
	struct meta_extent e = p.map.e;
	if (lblk < e.lblk || lblk >= e.lblk + e.len)
		return -EIO;
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

static int r_alloc(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len)
{
	struct proto_req q = { .alloc = { m->ino, lblk, len } };
	return call_void(v, OP_ALLOC, &q);
}

#define PENDING_MAX 256

static int r_commit_write(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len,
			  uint64_t new_size)
{
	/* The blocks become readable as data on every node: the data must be
	 * durable first (design.md §4). */
	int rc = len ? data_flush(v) : 0;
	if (rc)
		return rc;
	uint32_t epoch = v->remote->epoch(v->remote->ctx);
	rc = r_commit_send(v, m, lblk, len, new_size);
	if (rc == 0)
		minode_pend_add(m, lblk, len, new_size, epoch, 0);
	if (rc == 0 && minode_pend_count(m) > PENDING_MAX)
		rc = r_fsync(v, m, 1);
	return rc;
}

/* Our write's times go to the coordinator with the next release or fsync. */
static void r_touch_write(struct volume *v, struct minode *m)
{
	pthread_mutex_lock(&v->lock);
	m->times_dirty = 1;
	pthread_mutex_unlock(&v->lock);
}

static int r_refresh_size(struct volume *v, struct minode *m, uint64_t end)
{
	int rc = pending_resend(v, m, v->remote->epoch(v->remote->ctx));
	if (rc)
		return rc;
	/* The size is ours to trust only under the layout lock (a truncate
	 * elsewhere recalls it and marks the size stale), so hold it first. */
	int held = v->remote->layout_hold(v->remote->ctx, m) == 0;
	if (held && !atomic_load(&m->size_stale) && end <= atomic_load(&m->size))
		return 0;
	struct meta_attr a;
	rc = r_getattr(v, m->ino, &a);
	if (rc == 0) {
		atomic_store(&m->size, a.size);
		atomic_store(&m->size_stale, 0);
	}
	return rc;
}

static int r_lookup(struct volume *v, ext2_ino_t parent, const char *name, struct meta_attr *out)
{
	return r_ino_name(v, OP_LOOKUP, parent, name, out);
}

static int r_unlink(struct volume *v, ext2_ino_t parent, const char *name)
{
	return r_ino_name(v, OP_UNLINK, parent, name, NULL);
}

static int r_rmdir(struct volume *v, ext2_ino_t parent, const char *name)
{
	return r_ino_name(v, OP_RMDIR, parent, name, NULL);
}

static int r_getxattr(struct volume *v, ext2_ino_t ino, const char *name, void *buf, size_t size)
{
	return r_xattr_get(v, OP_GETXATTR, ino, name, buf, size);
}

static int r_listxattr(struct volume *v, ext2_ino_t ino, char *buf, size_t size)
{
	return r_xattr_get(v, OP_LISTXATTR, ino, NULL, buf, size);
}

static int r_removexattr(struct volume *v, ext2_ino_t ino, const char *name)
{
	return r_ino_name(v, OP_REMOVEXATTR, ino, name, NULL);
}

/* ---- file locks: the coordinator decides -------------------------------------- */

static int r_setlk(struct volume *v, const struct plock *req, int reclaim, int *granted,
		   uint64_t *gen)
{
	struct proto_req q = { .lock = { .l = *req, .reclaim = (uint8_t)(reclaim != 0) } };
	union proto_reply p;
	int rc = call(v, OP_SETLK, &q, &p);
	if (rc == 0) {
		*granted = p.lock.yes;
		*gen = p.lock.gen;
	}
	return rc;
}

static int r_getlk(struct volume *v, const struct plock *req, struct plock *conflict, int *found)
{
	struct proto_req q = { .lock = { .l = *req } };
	union proto_reply p;
	int rc = call(v, OP_GETLK, &q, &p);
	if (rc == 0) {
		*found = p.lock.yes;
		*conflict = p.lock.l;
		conflict->ino = req->ino;
		conflict->kind = req->kind;
	}
	return rc;
}

static int r_unlock_all(struct volume *v, const char *node, uint32_t ino, enum plock_by by,
			uint64_t key)
{
	(void)node;   /* the coordinator knows us by our certificate */
	struct proto_req q = { .unlock_all = { .ino = ino, .by = (uint8_t)by, .key = key } };
	return call_void(v, OP_UNLOCK_ALL, &q);
}

static int r_lkwait(struct volume *v, uint64_t gen, unsigned timeout_ms, uint64_t *out)
{
	struct proto_req q = { .lkwait = { .gen = gen, .timeout_ms = timeout_ms } };
	union proto_reply p;
	int rc = call_within(v, OP_LKWAIT, &q, &p, timeout_ms + 5000);
	if (rc == 0)
		*out = p.u64;
	return rc;
}

static int r_reclaim_done(struct volume *v, const char *node)
{
	(void)node;
	struct proto_req q = { 0 };
	return call_void(v, OP_RECLAIM_DONE, &q);
}

/* The data path's transfer, through the coordinator (design.md §7): in
 * requests of at most PROTO_LUN_IO_MAX; a LUN_WRITE is on the LUN when
 * answered and durable after the next data_flush, as a direct write. */
static int r_lun_redirect(struct volume *v, struct minode *m, int write, void *buf,
			  uint64_t lblk, uint64_t pblk, uint32_t nblk)
{
	uint32_t per = PROTO_LUN_IO_MAX / v->blocksize;
	int rc = 0;
	for (uint32_t done = 0; done < nblk && rc == 0;) {
		uint32_t n = nblk - done < per ? nblk - done : per;
		size_t len = (size_t)n * v->blocksize;
		char *at = (char *)buf + (size_t)done * v->blocksize;
		struct proto_req q = { .lun_io = { .ino = m->ino, .nblk = n, .lblk = lblk + done,
						   .pblk = pblk + done } };
		if (write) {
			q.lun_io.data = at;
			q.lun_io.len = (uint32_t)len;
			rc = call_void(v, OP_LUN_WRITE, &q);
		} else {
			union proto_reply p = { .lun_data = { .buf = at, .size = len } };
			rc = call(v, OP_LUN_READ, &q, &p);
			if (rc == 0 && p.lun_data.len != len) {
				csvfs_log(LOG_ERR_L, "coordinator answered a redirected read of %zu bytes "
					  "with %u", len, p.lun_data.len);
				rc = -EIO;
			}
		}
		done += n;
	}
	return rc;
}

/* After corruption under errors=remount-ro the coordinator refuses every
 * change, and this node must not overwrite blocks its layouts still map
 * (they may be claimed by a damaged structure): it learns that with its next
 * I/O state report (fs/cluster_iostate.c). */
static int r_write_check(struct volume *v)
{
	return atomic_load(&v->coord_refuses_writes) ? -EROFS : 0;
}

const struct fs_ops ops_remote = {
	.name = "remote",
	.write_check = r_write_check,
	.lookup = r_lookup,
	.getattr = r_getattr,
	.setattr = r_setattr,
	.create = r_create,
	.symlink = r_symlink,
	.link = r_link,
	.unlink = r_unlink,
	.rmdir = r_rmdir,
	.rename = r_rename,
	.readlink = r_readlink,
	.readdir = r_readdir,
	.statfs = r_statfs,
	.getxattr = r_getxattr,
	.listxattr = r_listxattr,
	.setxattr = r_setxattr,
	.removexattr = r_removexattr,
	.create_open = r_create_open,
	.open = r_open,
	.release = r_release,
	.fsync = r_fsync,
	.syncfs = r_syncfs,
	.fallocate = r_fallocate,
	.seek = r_seek,
	.map = r_map,
	.alloc = r_alloc,
	.commit_write = r_commit_write,
	.touch_write = r_touch_write,
	.refresh_size = r_refresh_size,
	.setlk = r_setlk,
	.getlk = r_getlk,
	.unlock_all = r_unlock_all,
	.lkwait = r_lkwait,
	.reclaim_done = r_reclaim_done,
	.lun_redirect = r_lun_redirect,
};
