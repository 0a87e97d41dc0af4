/* ops_remote (fs/ops.h) driven in-process against a real coordinator:
 *
 *  - the coordinator: a csvfs_format'ed scratch image opened with
 *    volume_open (v->cluster NULL) and a server (server_create);
 *  - the participant: a second volume on the same image built as a cluster
 *    member builds it (volume_new + volume_probe: no engine, v->fs NULL,
 *    v->data_fd the LUN), whose remote_link sends each request as a rio
 *    frame over one end of a socket pair; a server thread reads the frames
 *    from the other end, runs server_request as node "node-b" and writes
 *    the reply frame back. File data moves directly on the LUN, as in a
 *    cluster.
 *
 * Every result is checked through a path that does not go through
 * ops_remote: ops_local and data_read on the coordinator's volume, the
 * server's table of opens, and `e2fsck -fn` of the image at teardown. The
 * link can also answer EREMCHG (a coordinator that lost its role) or mangle
 * one reply, so errors are seen crossing the wire as values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs/csvfs.h"
#include "fs/data.h"
#include "fs/iostate.h"
#include "fs/meta.h"
#include "fs/ops.h"
#include "fs/proto.h"
#include "fs/server.h"
#include "tests/unit/scratch.h"

#define MiB (1ull << 20)
#define BS 4096u
#define ROOT EXT2_ROOT_INO
#define NODE "node-b"
#define ADDR "10.0.0.2:7100"
#define EPOCH 7u
/* A server thread that stops answering fails the test instead of hanging it. */
#define RECV_TIMEOUT_SEC 30

static const struct meta_cred CRED = { 1000, 100, 022 };

/* ---- the test link: rio frames over a socket pair ------------------------- */

struct tlink {
	int fd[2];                   /* [0] the participant's end, [1] the server's */
	pthread_t thread;
	int running;
	struct server *s;
	pthread_mutex_t lock;        /* one call at a time on the stream */
	uint64_t next_id;
	_Atomic int remchg_op;       /* answer the next request of this op EREMCHG */
	_Atomic int lost_op;         /* apply the next request of this op, answer EREMCHG */
	_Atomic int cut_op;          /* drop the last byte of this op's next reply */
	_Atomic int extra_op;        /* add a byte to this op's next reply */
	_Atomic unsigned requests;   /* requests the server thread answered */
	_Atomic unsigned per_op[OP_MAX_];   /* ... of each op */
	_Atomic uint32_t epoch;      /* the coordinator's, as the link reports it */
	struct remote_link link;
};

static int write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return RIO_E_IO;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* RIO_E_CLOSED at end of stream: the peer went away. */
static int read_all(int fd, void *p, size_t n)
{
	uint8_t *b = p;
	while (n) {
		ssize_t r = read(fd, b, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return RIO_E_CLOSED;
		if (r < 0)
			return RIO_E_IO;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

/* One frame as redirect-io puts it on the wire: rio's header, then payload. */
static int frame_send(int fd, uint8_t type, uint16_t op, uint16_t status, uint64_t id,
		      const uint8_t *p, size_t len)
{
	struct rio_hdr h = { .version = RIO_VERSION_MIN, .type = type, .op = op, .status = status,
			     .payload_len = (uint32_t)len, .request_id = id };
	uint8_t hdr[RIO_HDR_LEN];
	rio_hdr_encode(&h, hdr);
	int rc = write_all(fd, hdr, sizeof(hdr));
	return rc || !len ? rc : write_all(fd, p, len);
}

/* One frame of type want; *payload is malloc'd (NULL when empty), so a
 * reply built from it frees with rio_reply_free as a rio client's does. */
static int frame_recv(int fd, uint8_t want, struct rio_hdr *h, uint8_t **payload)
{
	uint8_t hdr[RIO_HDR_LEN];
	*payload = NULL;
	int rc = read_all(fd, hdr, sizeof(hdr));
	if (rc == 0)
		rc = rio_hdr_decode(hdr, sizeof(hdr), RIO_MAX_PAYLOAD, h);
	if (rc == 0 && h->type != want)
		rc = RIO_E_PROTO;
	if (rc || !h->payload_len)
		return rc;
	*payload = malloc(h->payload_len);
	if (!*payload)
		return RIO_E_NOMEM;
	rc = read_all(fd, *payload, h->payload_len);
	if (rc) {
		free(*payload);
		*payload = NULL;
	}
	return rc;
}

/* The flag names an op; it is taken by the first request of that op. */
static int take(_Atomic int *flag, uint16_t op)
{
	int want = op;
	return atomic_compare_exchange_strong(flag, &want, 0);
}

static uint16_t serve_one(struct tlink *l, const struct rio_hdr *h, const uint8_t *p,
			  struct rio_writer *w)
{
	/* What server_handle answers once this node is no longer coordinator:
	 * the request is not applied. */
	if (take(&l->remchg_op, h->op))
		return EREMCHG;
	uint16_t status = (uint16_t)server_request(l->s, NODE, ADDR, h->op, p, h->payload_len, w);
	/* A coordinator that applied the change (durably) and died before its
	 * reply left: the participant hears only that it must go elsewhere. */
	if (take(&l->lost_op, h->op)) {
		w->len = 0;
		return EREMCHG;
	}
	return status;
}

/* A reply's bytes, mangled if a test asked for it. */
static int reply_send(struct tlink *l, const struct rio_hdr *h, uint16_t status,
		      struct rio_writer *w)
{
	size_t len = w->len;
	if (take(&l->cut_op, h->op) && len)
		len--;
	if (take(&l->extra_op, h->op)) {
		rio_put_u8(w, 0x5a);   /* a trailing byte no field claims */
		len++;
	}
	return frame_send(l->fd[1], RIO_T_RESPONSE, h->op, status, h->request_id,
			  rio_writer_data(w), len);
}

static void *server_main(void *arg)
{
	struct tlink *l = arg;
	struct rio_hdr h;
	uint8_t *p;
	while (frame_recv(l->fd[1], RIO_T_REQUEST, &h, &p) == 0) {
		struct rio_writer w;
		rio_writer_init(&w, 0);
		uint16_t status = serve_one(l, &h, p, &w);
		/* counted before the reply leaves: the caller may look at once */
		atomic_fetch_add(&l->requests, 1);
		if (h.op < OP_MAX_)
			atomic_fetch_add(&l->per_op[h.op], 1);
		int rc = reply_send(l, &h, status, &w);
		rio_writer_free(&w);
		free(p);
		if (rc)
			break;
	}
	return NULL;
}

/* A status as fs/cluster_conn.c cluster_call_timeout maps it: 0 keeps the
 * reply for the caller; a coordinator that lost the role means "retry at the
 * next one"; any other status is the operation's errno. */
static int status_errno(struct rio_reply *rep)
{
	int status = rep->status;
	if (status == 0)
		return 0;
	rio_reply_free(rep);
	return status == EREMCHG ? -ERESTART : -status;
}

/* remote_link.call: the request's bytes really cross the socket. The
 * timeout is the socket's receive timeout (set once, at setup). */
static int link_call(void *ctx, uint16_t op, struct rio_writer *req, struct rio_reply *rep,
		     unsigned timeout_ms)
{
	struct tlink *l = ctx;
	struct rio_hdr h;
	memset(rep, 0, sizeof(*rep));
	pthread_mutex_lock(&l->lock);
	uint64_t id = ++l->next_id;
	int rc = frame_send(l->fd[0], RIO_T_REQUEST, op, 0, id, rio_writer_data(req), req->len);
	if (rc == 0)
		rc = frame_recv(l->fd[0], RIO_T_RESPONSE, &h, &rep->payload);
	pthread_mutex_unlock(&l->lock);
	if (rc == 0 && (h.request_id != id || h.op != op)) {
		free(rep->payload);
		rep->payload = NULL;
		rc = RIO_E_PROTO;
	}
	if (rc)   /* a closed link was not answered: retry elsewhere */
		return rc == RIO_E_CLOSED ? -ERESTART : -EIO;
	rep->status = h.status;
	rep->len = h.payload_len;
	return status_errno(rep);
}

static uint32_t link_epoch(void *ctx)
{
	struct tlink *l = ctx;
	return EPOCH + atomic_load(&l->epoch);
}

/* No layout lock: nothing cached, every map and size asked for. */
static int link_layout_hold(void *ctx, struct minode *m)
{
	return -1;
}

static void link_layout_drop(void *ctx, struct minode *m)
{
}

static void link_start(struct tlink *l, struct server *s)
{
	memset(l, 0, sizeof(*l));
	l->s = s;
	pthread_mutex_init(&l->lock, NULL);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, l->fd), 0);
	struct timeval tv = { RECV_TIMEOUT_SEC, 0 };
	assert_int_equal(setsockopt(l->fd[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	assert_int_equal(pthread_create(&l->thread, NULL, server_main, l), 0);
	l->running = 1;
	l->link = (struct remote_link){ .ctx = l, .call = link_call, .epoch = link_epoch,
					.layout_hold = link_layout_hold,
					.layout_drop = link_layout_drop };
}

/* Closing the participant's end ends the server thread's stream. */
static void link_stop(struct tlink *l)
{
	if (!l->running)
		return;
	close(l->fd[0]);
	pthread_join(l->thread, NULL);
	close(l->fd[1]);
	pthread_mutex_destroy(&l->lock);
	l->running = 0;
}

/* ---- fixture ---------------------------------------------------------------- */

struct fx {
	char path[PATH_MAX];
	struct volume *cv;           /* the coordinator's: the engine attached */
	struct server *s;
	struct volume *pv;           /* the participant's: no engine, the LUN for data */
	struct tlink l;
};

static void format_image(struct fx *f)
{
	snprintf(f->path, sizeof(f->path), "%s/test_ops_remote.XXXXXX", tmp_dir());
	int fd = mkstemp(f->path);
	assert_true(fd >= 0);
	close(fd);
	unlink(f->path);
	char err[512] = "", guid[37];
	struct csvfs_format_opts o = { .lun = f->path, .create_size = 64 * MiB };
	int rc = csvfs_format(&o, guid, err, sizeof(err));
	if (rc)
		fail_msg("csvfs_format(%s): %d %s", f->path, rc, err);
}

static void open_coordinator(struct fx *f)
{
	char err[512] = "";
	struct volume_opts o = { .lun = f->path };
	int rc = volume_open(&o, &f->cv, err, sizeof(err));
	if (rc)
		fail_msg("volume_open(%s): %d %s", f->path, rc, err);
	assert_null(f->cv->cluster);
	assert_int_equal(server_create(f->cv, &f->s), 0);
}

/* As fs/daemon.c open_cluster_volume: identity from the superblock only. */
static void open_participant(struct fx *f)
{
	char err[512] = "";
	struct volume_opts o = { .lun = f->path };
	int rc = volume_new(&o, &f->pv, err, sizeof(err));
	if (rc == 0 && (rc = volume_probe(f->pv, err, sizeof(err))) != 0) {
		volume_free(f->pv);
		f->pv = NULL;
	}
	if (rc)
		fail_msg("participant volume on %s: %d %s", f->path, rc, err);
	assert_null(f->pv->fs);
	assert_true(f->pv->data_fd >= 0);
	assert_string_equal(f->pv->uuid, f->cv->uuid);
	f->pv->remote = &f->l.link;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	*state = f;
	format_image(f);
	open_coordinator(f);
	link_start(&f->l, f->s);
	open_participant(f);
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (!f)
		return 0;
	link_stop(&f->l);
	volume_close(f->pv);
	server_destroy(f->s);
	volume_close(f->cv);
	int ok = f->path[0] && fsck_clean(f->path);
	if (ok)
		unlink(f->path);
	else
		fprintf(stderr, "image kept for inspection: %s\n", f->path);
	free(f);
	*state = NULL;
	return ok ? 0 : -1;
}

/* ---- helpers ----------------------------------------------------------------- */

static ext2_ino_t local_ino(struct fx *f, ext2_ino_t dir, const char *name)
{
	struct meta_attr a;
	int rc = ops_local.lookup(f->cv, dir, name, &a);
	return rc ? 0 : (ext2_ino_t)a.ino;
}

/* How many opens the coordinator's engine counts on ino (the server's
 * record of the participant's opens). */
static unsigned coord_opens(struct fx *f, ext2_ino_t ino)
{
	struct minode *m = minode_find(f->cv, ino);
	unsigned n = m ? minode_open_count(f->cv, m) : 0;
	minode_put(f->cv, m);
	return n;
}

static struct meta_attr local_attr(struct fx *f, ext2_ino_t ino)
{
	struct meta_attr a;
	assert_int_equal(ops_local.getattr(f->cv, ino, &a), 0);
	return a;
}

/* The entry named name in d[0..n), or NULL. */
static const struct meta_dirent *entry(const struct meta_dirent *d, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(d[i].name, name) == 0)
			return &d[i];
	return NULL;
}

/* Deterministic bytes, different per seed. */
static void pattern(char *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)((i * 131 + seed * 7 + (i >> 12)) & 0xff);
}

static int all_zero(const char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i])
			return 0;
	return 1;
}

/* A new regular file, created and opened through ops_remote. */
static struct minode *remote_create_open(struct fx *f, const char *name, struct meta_attr *a)
{
	struct minode *m = NULL;
	assert_int_equal(ops_remote.create_open(f->pv, ROOT, name, S_IFREG | 0644, &CRED, a, &m), 0);
	assert_non_null(m);
	assert_int_equal(m->ino, a->ino);
	return m;
}

static void remote_close(struct fx *f, struct minode *m)
{
	assert_int_equal(ops_remote.release(f->pv, m), 0);
	minode_put(f->pv, m);
}

static void remote_write(struct fx *f, struct minode *m, const char *buf, size_t len,
			 uint64_t off)
{
	assert_int_equal(data_write(f->pv, &ops_remote, m, buf, len, off), (ssize_t)len);
}

/* Reads [off, off+len) of ino on the coordinator, through its own open. */
static ssize_t local_read(struct fx *f, ext2_ino_t ino, char *buf, size_t len, uint64_t off)
{
	struct minode *m = NULL;
	struct meta_attr a = local_attr(f, ino);
	assert_int_equal(ops_local.open(f->cv, ino, a.generation, 0, &m), 0);
	ssize_t n = data_read(f->cv, &ops_local, m, buf, len, off);
	assert_int_equal(ops_local.release(f->cv, m), 0);
	minode_put(f->cv, m);
	return n;
}

/* ---- 1. namespace -------------------------------------------------------------- */

static void check_created(struct fx *f, const struct meta_attr *a, uint32_t mode)
{
	struct meta_attr b = local_attr(f, (ext2_ino_t)a->ino);
	assert_int_equal(b.mode, mode);
	assert_int_equal(b.uid, CRED.uid);
	assert_int_equal(b.gid, CRED.gid);
	assert_int_equal(b.generation, a->generation);
}

static void test_create_lookup_getattr(void **state)
{
	struct fx *f = *state;
	struct meta_attr a, r;
	/* The mode arrives masked (the kernel applies the umask): kept as is. */
	assert_int_equal(ops_remote.create(f->pv, ROOT, "f", S_IFREG | 0640, 0, &CRED, &a), 0);
	assert_int_equal(local_ino(f, ROOT, "f"), a.ino);
	check_created(f, &a, S_IFREG | 0640);
	assert_int_equal(ops_remote.lookup(f->pv, ROOT, "f", &r), 0);
	assert_int_equal(r.ino, a.ino);
	assert_int_equal(r.generation, a.generation);
	assert_int_equal(ops_remote.getattr(f->pv, (ext2_ino_t)a.ino, &r), 0);
	assert_int_equal(r.mode, local_attr(f, (ext2_ino_t)a.ino).mode);
	assert_int_equal(r.nlink, 1);
}

/* mkdir is a create with S_IFDIR. */
static void test_mkdir_symlink(void **state)
{
	struct fx *f = *state;
	struct meta_attr d, s;
	char buf[64];
	unsigned root_links = local_attr(f, ROOT).nlink;
	assert_int_equal(ops_remote.create(f->pv, ROOT, "d", S_IFDIR | 0750, 0, &CRED, &d), 0);
	check_created(f, &d, S_IFDIR | 0750);
	assert_int_equal(local_attr(f, (ext2_ino_t)d.ino).nlink, 2);
	assert_int_equal(local_attr(f, ROOT).nlink, root_links + 1);

	assert_int_equal(ops_remote.symlink(f->pv, (ext2_ino_t)d.ino, "sl", "../f", &CRED, &s), 0);
	check_created(f, &s, S_IFLNK | 0777);
	assert_int_equal(ops_local.readlink(f->cv, (ext2_ino_t)s.ino, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "../f");
	memset(buf, 0, sizeof(buf));
	assert_int_equal(ops_remote.readlink(f->pv, (ext2_ino_t)s.ino, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "../f");
	/* the caller's buffer is checked here, not trusted to the reply */
	assert_int_equal(ops_remote.readlink(f->pv, (ext2_ino_t)s.ino, buf, 4), -ENAMETOOLONG);
}

static void test_link_rename(void **state)
{
	struct fx *f = *state;
	struct meta_attr a, d, l;
	assert_int_equal(ops_remote.create(f->pv, ROOT, "f", S_IFREG | 0644, 0, &CRED, &a), 0);
	assert_int_equal(ops_remote.create(f->pv, ROOT, "d", S_IFDIR | 0755, 0, &CRED, &d), 0);
	ext2_ino_t ino = (ext2_ino_t)a.ino, dir = (ext2_ino_t)d.ino;

	assert_int_equal(ops_remote.link(f->pv, ino, dir, "hard", &l), 0);
	assert_int_equal(l.nlink, 2);
	assert_int_equal(local_ino(f, dir, "hard"), ino);
	assert_int_equal(local_attr(f, ino).nlink, 2);

	assert_int_equal(ops_remote.rename(f->pv, ROOT, "f", dir, "g", 0, &CRED), 0);
	assert_int_equal(local_ino(f, ROOT, "f"), 0);
	assert_int_equal(local_ino(f, dir, "g"), ino);
	/* flags travel too */
	assert_int_equal(ops_remote.rename(f->pv, dir, "g", dir, "hard", META_RENAME_NOREPLACE,
					   &CRED), -EEXIST);
	assert_int_equal(ops_remote.create(f->pv, ROOT, "e", S_IFREG | 0644, 0, &CRED, &l), 0);
	assert_int_equal(ops_remote.rename(f->pv, dir, "g", ROOT, "e", META_RENAME_EXCHANGE, &CRED), 0);
	assert_int_equal(local_ino(f, ROOT, "e"), ino);
	assert_int_equal(local_ino(f, dir, "g"), l.ino);
}

/* READDIRPLUS pages against the engine's own listing. */
static void check_readdir(struct fx *f, ext2_ino_t dir)
{
	struct meta_dirent *rd, *ld;
	size_t rn, ln;
	assert_int_equal(ops_remote.readdir(f->pv, dir, &rd, &rn), 0);
	assert_int_equal(ops_local.readdir(f->cv, dir, &ld, &ln), 0);
	assert_int_equal(rn, ln);
	for (size_t i = 0; i < ln; i++) {
		const struct meta_dirent *e = entry(rd, rn, ld[i].name);
		if (!e)
			fail_msg("%s is missing from the remote listing", ld[i].name);
		assert_int_equal(e->ino, ld[i].ino);
		assert_int_equal(e->type, ld[i].type);
		assert_true(e->has_attr);
		assert_int_equal(e->attr.ino, ld[i].ino);
	}
	meta_free_dirents(rd, rn);
	meta_free_dirents(ld, ln);
}

static void test_readdir_unlink_rmdir(void **state)
{
	struct fx *f = *state;
	struct meta_attr d, a;
	unsigned root_links = local_attr(f, ROOT).nlink;
	assert_int_equal(ops_remote.create(f->pv, ROOT, "d", S_IFDIR | 0755, 0, &CRED, &d), 0);
	ext2_ino_t dir = (ext2_ino_t)d.ino;
	char name[32];
	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "entry-%02d", i);
		assert_int_equal(ops_remote.create(f->pv, dir, name, S_IFREG | 0644, 0, &CRED, &a), 0);
	}
	assert_int_equal(ops_remote.symlink(f->pv, dir, "sl", "entry-00", &CRED, &a), 0);
	check_readdir(f, dir);
	check_readdir(f, ROOT);

	assert_int_equal(ops_remote.rmdir(f->pv, ROOT, "d"), -ENOTEMPTY);
	assert_int_not_equal(local_ino(f, ROOT, "d"), 0);
	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "entry-%02d", i);
		assert_int_equal(ops_remote.unlink(f->pv, dir, name), 0);
		assert_int_equal(local_ino(f, dir, name), 0);
	}
	assert_int_equal(ops_remote.unlink(f->pv, dir, "sl"), 0);
	check_readdir(f, dir);
	assert_int_equal(ops_remote.rmdir(f->pv, ROOT, "d"), 0);
	assert_int_equal(local_ino(f, ROOT, "d"), 0);
	assert_int_equal(local_attr(f, ROOT).nlink, root_links);
}

/* xattrs and statfs: the remote answers are the engine's. */
static void test_xattr_statfs(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	assert_int_equal(ops_remote.create(f->pv, ROOT, "x", S_IFREG | 0644, 0, &CRED, &a), 0);
	ext2_ino_t ino = (ext2_ino_t)a.ino;
	assert_int_equal(ops_remote.setxattr(f->pv, ino, "user.k", "value", 5, 0), 0);
	char buf[64] = "";
	assert_int_equal(ops_local.getxattr(f->cv, ino, "user.k", buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "value", 5);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(ops_remote.getxattr(f->pv, ino, "user.k", NULL, 0), 5);
	assert_int_equal(ops_remote.getxattr(f->pv, ino, "user.k", buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "value", 5);
	assert_int_equal(ops_remote.getxattr(f->pv, ino, "user.k", buf, 2), -ERANGE);
	assert_int_equal(ops_remote.listxattr(f->pv, ino, buf, sizeof(buf)),
			 ops_local.listxattr(f->cv, ino, NULL, 0));
	assert_string_equal(buf, "user.k");
	assert_int_equal(ops_remote.removexattr(f->pv, ino, "user.k"), 0);
	assert_int_equal(ops_local.getxattr(f->cv, ino, "user.k", NULL, 0), -ENODATA);
	assert_int_equal(ops_remote.getxattr(f->pv, ino, "user.k", NULL, 0), -ENODATA);

	struct statvfs rs, ls;
	assert_int_equal(ops_remote.statfs(f->pv, &rs, 0), 0);
	assert_int_equal(ops_local.statfs(f->cv, &ls, 0), 0);
	assert_int_equal(rs.f_blocks, ls.f_blocks);
	assert_int_equal(rs.f_bfree, ls.f_bfree);
	assert_int_equal(rs.f_ffree, ls.f_ffree);
	assert_int_equal(ops_remote.unlink(f->pv, ROOT, "x"), 0);
}

/* ---- 2. open and data --------------------------------------------------------- */

/* Into a hole, unaligned at both ends: map -> alloc -> pwrite on the LUN ->
 * commit over the socket. */
#define D_OFF (2 * BS + 17)
#define D_LEN (3 * BS + 100)
#define D_END (D_OFF + D_LEN)

static void check_bytes_both_sides(struct fx *f, struct minode *m, const char *want, size_t len)
{
	char *got = calloc(1, len + BS);
	assert_non_null(got);
	/* the coordinator's view: its own open, its own map, the same LUN */
	assert_int_equal(local_read(f, m->ino, got, len + BS, 0), (ssize_t)len);
	assert_memory_equal(got, want, len);
	memset(got, 0xee, len + BS);
	/* the participant's: size and maps asked for over the socket */
	assert_int_equal(data_read(f->pv, &ops_remote, m, got, len + BS, 0), (ssize_t)len);
	assert_memory_equal(got, want, len);
	free(got);
}

static void test_open_write_read(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	struct minode *m = remote_create_open(f, "data", &a);
	assert_int_equal(m->open_count, 1);
	assert_int_equal(coord_opens(f, m->ino), 1);

	char *want = calloc(1, D_END);
	assert_non_null(want);
	pattern(want + D_OFF, D_LEN, 1);
	remote_write(f, m, want + D_OFF, D_LEN, D_OFF);
	assert_int_equal(atomic_load(&m->size), D_END);
	assert_int_equal(m->npend, 1);   /* committed, not yet durable there */
	assert_int_equal(ops_remote.fsync(f->pv, m, 0), 0);
	assert_int_equal(m->npend, 0);
	assert_int_equal(local_attr(f, m->ino).size, D_END);
	check_bytes_both_sides(f, m, want, D_END);

	/* An overwrite of written blocks is a pwrite alone; the times follow
	 * with the release. */
	pattern(want + BS * 3, 500, 2);
	remote_write(f, m, want + BS * 3, 500, BS * 3);
	assert_int_equal(m->times_dirty, 1);
	check_bytes_both_sides(f, m, want, D_END);

	ext2_ino_t ino = m->ino;
	remote_close(f, m);
	assert_int_equal(coord_opens(f, ino), 0);
	struct meta_attr b = local_attr(f, ino);
	assert_int_equal(b.size, D_END);
	assert_true(b.blocks >= 4 * (BS / 512));
	free(want);
}

/* ---- 2b. redirected I/O (design.md §7) -------------------------------------------- */

/* Redirected, the participant's data goes through the coordinator only:
 * its own descriptor is made unusable, and writes into a hole, overwrites,
 * reads and fsync all still work and read back the same on both sides. */
static void test_redirected_data(void **state)
{
	struct fx *f = *state;
	char err[128];
	struct meta_attr a;
	struct minode *m = remote_create_open(f, "redirected", &a);
	assert_int_equal(iostate_user_request(1, 60, err, sizeof(err)), 0);
	assert_true(iostate_redirected());
	int own_fd = f->pv->data_lun.fd;
	f->pv->data_lun.fd = -1;    /* any direct transfer would fail */

	char *want = calloc(1, D_END);
	assert_non_null(want);
	pattern(want + D_OFF, D_LEN, 3);
	remote_write(f, m, want + D_OFF, D_LEN, D_OFF);          /* alloc, LUN_WRITE, commit */
	pattern(want + BS * 3, 700, 4);
	remote_write(f, m, want + BS * 3, 700, BS * 3);          /* edges LUN_READ, LUN_WRITE */
	assert_int_equal(ops_remote.fsync(f->pv, m, 0), 0);      /* LUN_FLUSH, FSYNC */
	check_bytes_both_sides(f, m, want, D_END);               /* LUN_READ */

	f->pv->data_lun.fd = own_fd;
	assert_int_equal(iostate_user_request(0, 0, err, sizeof(err)), 0);
	assert_false(iostate_redirected());
	check_bytes_both_sides(f, m, want, D_END);               /* direct again */
	remote_close(f, m);
	free(want);
}

/* server_request for op with request q as node-b: the status. */
static int serve_as_node(struct fx *f, uint16_t op, const struct proto_req *q)
{
	struct rio_writer w, out;
	rio_writer_init(&w, 0);
	rio_writer_init(&out, 0);
	proto_op(op)->put_req(&w, q);
	int st = server_request(f->s, NODE, ADDR, op, rio_writer_data(&w), (uint32_t)w.len, &out);
	rio_writer_free(&w);
	rio_writer_free(&out);
	return st;
}

/* The coordinator moves a redirected node's data only for blocks its own
 * map gives that inode at that place: a wrong block, a range past the
 * extent, an unwritten block read, or data that is not whole blocks are
 * refused and nothing is written. */
static void test_redirected_requests_checked(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	struct minode *m = remote_create_open(f, "checked", &a);
	char *buf = calloc(1, 2 * BS);
	assert_non_null(buf);
	pattern(buf, BS, 5);
	remote_write(f, m, buf, BS, 0);
	assert_int_equal(ops_remote.fsync(f->pv, m, 0), 0);
	assert_int_equal(ops_remote.fallocate(f->pv, m, FALLOC_FL_KEEP_SIZE, 8 * BS, BS), 0);
	struct meta_extent e, u;
	struct minode *cm = minode_get(f->cv, m->ino);
	assert_non_null(cm);
	assert_int_equal(ops_local.map(f->cv, cm, 0, &e), 0);
	assert_int_equal(e.state, EXTENT_WRITTEN);
	assert_int_equal(ops_local.map(f->cv, cm, 8, &u), 0);
	assert_int_equal(u.state, EXTENT_UNWRITTEN);
	minode_put(f->cv, cm);

	struct proto_req q = { .lun_io = { .ino = m->ino, .nblk = 1, .lblk = 0, .pblk = e.pblk } };
	assert_int_equal(serve_as_node(f, OP_LUN_READ, &q), 0);
	q.lun_io.pblk = e.pblk + 1;                 /* not where lblk 0 is */
	assert_int_equal(serve_as_node(f, OP_LUN_READ, &q), ESTALE);
	q.lun_io = (struct proto_lun_io){ .ino = m->ino, .nblk = 2, .lblk = 0, .pblk = e.pblk };
	assert_int_equal(serve_as_node(f, OP_LUN_READ, &q), ESTALE);   /* past the extent */
	q.lun_io = (struct proto_lun_io){ .ino = m->ino, .nblk = 1, .lblk = 8, .pblk = u.pblk };
	assert_int_equal(serve_as_node(f, OP_LUN_READ, &q), ESTALE);   /* unwritten */
	q.lun_io.data = buf;
	q.lun_io.len = 2 * BS;                      /* two blocks of data for one */
	assert_int_equal(serve_as_node(f, OP_LUN_WRITE, &q), EINVAL);
	q.lun_io.pblk = e.pblk;                     /* another extent's block */
	q.lun_io.len = BS;
	memset(buf, 0x77, BS);
	assert_int_equal(serve_as_node(f, OP_LUN_WRITE, &q), ESTALE);
	q.lun_io.pblk = u.pblk;                     /* an unwritten block of its own: written */
	assert_int_equal(serve_as_node(f, OP_LUN_WRITE, &q), 0);

	char back[BS];
	pattern(buf, BS, 5);
	assert_int_equal(local_read(f, m->ino, back, BS, 0), BS);
	assert_memory_equal(back, buf, BS);         /* the refused write changed nothing */
	remote_close(f, m);
	free(buf);
}

/* A write that extends the file over a block already written commits only
 * the size; the bytes a truncate cut off read back as zeros. */
static void test_reopen_extend(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	char buf[BS], back[2 * BS];
	struct minode *m = remote_create_open(f, "grow", &a);
	pattern(buf, BS, 3);
	remote_write(f, m, buf, BS, 0);
	remote_close(f, m);

	assert_int_equal(ops_remote.open(f->pv, (ext2_ino_t)a.ino, a.generation, 0, &m), 0);
	assert_int_equal(atomic_load(&m->size), BS);
	assert_int_equal(ops_remote.setattr(f->pv, m->ino,
					    &(struct meta_setattr){ .valid = META_SET_SIZE, .size = 100 },
					    NULL), 0);
	/* block 0 stays written; a write to bytes 200..300 overwrites it and
	 * moves the size past 100 */
	remote_write(f, m, buf + 200, 100, 200);
	assert_int_equal(local_attr(f, m->ino).size, 300);
	assert_int_equal(local_read(f, m->ino, back, sizeof(back), 0), 300);
	assert_memory_equal(back, buf, 100);
	assert_true(all_zero(back + 100, 100));
	assert_memory_equal(back + 200, buf + 200, 100);
	assert_int_equal(ops_remote.fsync(f->pv, m, 1), 0);
	remote_close(f, m);
}

/* ---- 3. truncate and punch ---------------------------------------------------- */

static void test_truncate_punch(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	char want[4 * BS], got[4 * BS];
	struct minode *m = remote_create_open(f, "t", &a);
	pattern(want, sizeof(want), 4);
	remote_write(f, m, want, sizeof(want), 0);
	assert_int_equal(m->npend, 1);
	assert_int_equal(m->pend[0].lblk, 0);
	assert_int_equal(m->pend[0].len, 4);

	struct meta_setattr sa = { .valid = META_SET_SIZE, .size = 5000 };
	assert_int_equal(ops_remote.setattr(f->pv, m->ino, &sa, &a), 0);
	assert_int_equal(a.size, 5000);
	assert_int_equal(atomic_load(&m->size), 5000);   /* our own open follows at once */
	assert_int_equal(local_attr(f, m->ino).size, 5000);
	assert_int_equal(local_attr(f, m->ino).blocks, 2 * (BS / 512));
	/* what was cut off is no longer ours to commit again */
	assert_int_equal(m->npend, 1);
	assert_int_equal(m->pend[0].len, 2);

	assert_int_equal(ops_remote.fallocate(f->pv, m, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					      0, BS), 0);
	assert_int_equal(atomic_load(&m->size), 5000);
	assert_int_equal(local_attr(f, m->ino).blocks, BS / 512);
	/* block 1 is still written and still waits to be made durable */
	assert_int_equal(m->npend, 1);
	assert_int_equal(m->pend[0].lblk, 1);
	assert_int_equal(m->pend[0].len, 1);
	memset(want, 0, BS);
	check_bytes_both_sides(f, m, want, 5000);
	uint64_t data_at = 0;
	assert_int_equal(ops_remote.seek(f->pv, m, 0, SEEK_DATA, &data_at), 0);
	assert_int_equal(data_at, BS);

	assert_int_equal(ops_remote.fsync(f->pv, m, 0), 0);
	assert_int_equal(m->npend, 0);
	memset(got, 0xee, sizeof(got));
	assert_int_equal(local_read(f, m->ino, got, sizeof(got), 0), 5000);
	assert_memory_equal(got, want, 5000);
	remote_close(f, m);
}

/* ---- 4. errors cross the wire as values ---------------------------------------- */

static void test_errors(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	assert_int_equal(ops_remote.lookup(f->pv, ROOT, "missing", &a), -ENOENT);
	assert_int_equal(ops_remote.create(f->pv, ROOT, "e", S_IFREG | 0644, 0, &CRED, &a), 0);
	ext2_ino_t ino = (ext2_ino_t)a.ino;
	assert_int_equal(ops_remote.create(f->pv, ROOT, "e", S_IFREG | 0644, 0, &CRED, &a), -EEXIST);
	assert_int_equal(local_ino(f, ROOT, "e"), ino);
	assert_int_equal(ops_remote.unlink(f->pv, ROOT, "missing"), -ENOENT);
	assert_int_equal(ops_remote.rmdir(f->pv, ROOT, "e"), -ENOTDIR);
	struct minode *m;
	assert_int_equal(ops_remote.open(f->pv, ROOT, 0, 0, &m), -EISDIR);
	assert_int_equal(ops_remote.unlink(f->pv, ROOT, "e"), 0);
}

/* An open names the file the caller looked up, by number and generation; a
 * number another node freed and reused for a directory or a symlink is ESTALE
 * (the kernel looks the name up again), not EISDIR or EINVAL, which open(2)
 * would hand to the application (found by cluster_fs's nsrace -L: "open
 * O_RDONLY: Is a directory" on a participant, for a name that was a file). */
static void test_open_reused_number(void **state)
{
	struct fx *f = *state;
	struct meta_attr a, d;
	assert_int_equal(ops_remote.create(f->pv, ROOT, "was-file", S_IFREG | 0644, 0, &CRED, &a), 0);
	assert_int_equal(ops_local.unlink(f->cv, ROOT, "was-file"), 0);
	assert_int_equal(ops_local.create(f->cv, ROOT, "now-dir", S_IFDIR | 0755, 0, &CRED, &d), 0);
	if (d.ino != a.ino)
		fail_msg("the directory got inode %llu, not the freed %llu: nothing reused",
			 (unsigned long long)d.ino, (unsigned long long)a.ino);
	struct minode *m = NULL;
	assert_int_equal(ops_remote.open(f->pv, (ext2_ino_t)a.ino, a.generation, 0, &m), -ESTALE);
	assert_int_equal(ops_remote.open(f->pv, (ext2_ino_t)a.ino, a.generation, 1, &m), -ESTALE);
	assert_null(m);
	assert_int_equal(ops_remote.rmdir(f->pv, ROOT, "now-dir"), 0);
	assert_int_equal(ops_local.symlink(f->cv, ROOT, "now-link", "t", &CRED, &d), 0);
	if (d.ino != a.ino)
		fail_msg("the symlink got inode %llu, not the freed %llu: nothing reused",
			 (unsigned long long)d.ino, (unsigned long long)a.ino);
	assert_int_equal(ops_remote.open(f->pv, (ext2_ino_t)a.ino, a.generation, 0, &m), -ESTALE);
	assert_null(m);
	assert_int_equal(ops_remote.unlink(f->pv, ROOT, "now-link"), 0);
}

/* A coordinator that lost its role answers EREMCHG: -ERESTART, not applied. */
static void test_remchg_restarts(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	atomic_store(&f->l.remchg_op, OP_ONCE);   /* a create goes wrapped in ONCE */
	assert_int_equal(ops_remote.create(f->pv, ROOT, "r", S_IFREG | 0644, 0, &CRED, &a), -ERESTART);
	assert_int_equal(local_ino(f, ROOT, "r"), 0);
	assert_int_equal(ops_remote.create(f->pv, ROOT, "r", S_IFREG | 0644, 0, &CRED, &a), 0);
	assert_int_equal(local_ino(f, ROOT, "r"), a.ino);
	assert_int_equal(ops_remote.unlink(f->pv, ROOT, "r"), 0);
}

/* Exactly once: a change the coordinator applied but whose answer was lost
 * (-ERESTART) is sent again under the same id and answered as it was, not
 * EEXIST / ENOENT; the next operation gets a new id and is applied. */
static void test_lost_answer_resent_once(void **state)
{
	struct fx *f = *state;
	struct meta_attr a, b;
	atomic_store(&f->l.lost_op, OP_ONCE);
	assert_int_equal(ops_remote.create(f->pv, ROOT, "once", S_IFDIR | 0755, 0, &CRED, &a), -ERESTART);
	ext2_ino_t made = local_ino(f, ROOT, "once");
	assert_true(made != 0);   /* applied */
	assert_int_equal(ops_remote.create(f->pv, ROOT, "once", S_IFDIR | 0755, 0, &CRED, &a), 0);
	assert_int_equal(a.ino, made);
	assert_true(S_ISDIR(a.mode));
	remote_once_end();        /* fsops.c: the operation is over */
	assert_int_equal(ops_remote.create(f->pv, ROOT, "once", S_IFDIR | 0755, 0, &CRED, &b), -EEXIST);

	atomic_store(&f->l.lost_op, OP_ONCE);
	assert_int_equal(ops_remote.rename(f->pv, ROOT, "once", ROOT, "twice", 0, &CRED), -ERESTART);
	assert_int_equal(ops_remote.rename(f->pv, ROOT, "once", ROOT, "twice", 0, &CRED), 0);
	atomic_store(&f->l.lost_op, OP_ONCE);
	assert_int_equal(ops_remote.rmdir(f->pv, ROOT, "twice"), -ERESTART);
	assert_int_equal(local_ino(f, ROOT, "twice"), 0);
	assert_int_equal(ops_remote.rmdir(f->pv, ROOT, "twice"), 0);
	/* A new operation after one that ended (not -ERESTART): a new id. */
	assert_int_equal(ops_remote.rmdir(f->pv, ROOT, "twice"), -ENOENT);

	/* create_open's resend at a new coordinator (which opens the file for
	 * the node again): test_proto's test_once_resend_after_crash. */
}

/* The same for the xattr changes and a punch: a resend of a SETXATTR with
 * XATTR_CREATE is not EEXIST, of a REMOVEXATTR not ENODATA, and a punch
 * sent again does not punch what was written after it. (OPEN with O_TRUNC,
 * which opens the file again: test_proto's
 * test_once_xattr_punch_trunc_resend_after_crash.) */
static void test_lost_answer_resent_once_xattr_punch(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	struct minode *m = remote_create_open(f, "x", &a);
	ext2_ino_t ino = (ext2_ino_t)a.ino;
	atomic_store(&f->l.lost_op, OP_ONCE);
	assert_int_equal(ops_remote.setxattr(f->pv, ino, "user.k", "v", 1, META_XATTR_CREATE), -ERESTART);
	assert_int_equal(ops_remote.setxattr(f->pv, ino, "user.k", "v", 1, META_XATTR_CREATE), 0);
	remote_once_end();
	assert_int_equal(ops_remote.setxattr(f->pv, ino, "user.k", "v", 1, META_XATTR_CREATE), -EEXIST);
	atomic_store(&f->l.lost_op, OP_ONCE);
	assert_int_equal(ops_remote.removexattr(f->pv, ino, "user.k"), -ERESTART);
	assert_int_equal(ops_remote.removexattr(f->pv, ino, "user.k"), 0);
	remote_once_end();
	assert_int_equal(ops_remote.removexattr(f->pv, ino, "user.k"), -ENODATA);

	remote_write(f, m, "first", 5, 0);
	atomic_store(&f->l.lost_op, OP_ONCE);
	assert_int_equal(ops_remote.fallocate(f->pv, m, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, BS),
			 -ERESTART);
	remote_write(f, m, "later", 5, 0);   /* after the punch, before its resend */
	assert_int_equal(ops_remote.fallocate(f->pv, m, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, BS),
			 0);
	remote_once_end();
	char buf[8] = "";
	assert_int_equal(local_read(f, ino, buf, 5, 0), 5);
	assert_memory_equal(buf, "later", 5);
	remote_close(f, m);
}

/* A release that did not get through keeps the open, for the retry. */
static void test_remchg_release_keeps_open(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	struct minode *m = remote_create_open(f, "rel", &a);
	atomic_store(&f->l.remchg_op, OP_RELEASE);
	assert_int_equal(ops_remote.release(f->pv, m), -ERESTART);
	assert_int_equal(m->open_count, 1);
	ext2_ino_t ino = m->ino;
	assert_int_equal(coord_opens(f, ino), 1);
	remote_close(f, m);
	assert_int_equal(coord_opens(f, ino), 0);
	assert_int_equal(ops_remote.unlink(f->pv, ROOT, "rel"), 0);
}

/* The coordinator changes: a new engine-side server with no record of this
 * participant's opens (the old one's opens uncounted), at a new epoch, on
 * the same link. */
static void new_coordinator(struct fx *f)
{
	link_stop(&f->l);
	server_destroy(f->s);
	assert_int_equal(server_create(f->cv, &f->s), 0);
	link_start(&f->l, f->s);
	atomic_store(&f->l.epoch, 1);
}

/* Issue 15 (docs/testing.md, ledger row 20): a new coordinator whose reclaim
 * came while a release was on its way does not know the open and answers the
 * RELEASE EBADF. The close still succeeds: the caller gets no error, and the
 * open is gone on both sides (the file reopens and closes as any other). */
static void test_release_unknown_at_new_coordinator(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	struct minode *m = remote_create_open(f, "crossed", &a);
	ext2_ino_t ino = m->ino;
	new_coordinator(f);
	assert_int_equal(coord_opens(f, ino), 0);
	assert_int_equal(ops_remote.release(f->pv, m), 0);
	assert_int_equal(atomic_load(&f->l.per_op[OP_RELEASE]), 1);   /* asked, answered EBADF */
	assert_int_equal(m->open_count, 0);
	minode_put(f->pv, m);
	assert_int_equal(coord_opens(f, ino), 0);
	assert_int_equal(ops_remote.open(f->pv, ino, a.generation, 0, &m), 0);
	assert_int_equal(coord_opens(f, ino), 1);
	remote_close(f, m);
	assert_int_equal(coord_opens(f, ino), 0);
	assert_int_equal(ops_remote.unlink(f->pv, ROOT, "crossed"), 0);
}

/* The write times a release carries (TOUCH) survive a TOUCH that did not
 * get through: the retried release sends them. */
static void test_remchg_touch_kept(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	char buf[BS];
	struct minode *m = remote_create_open(f, "tt", &a);
	pattern(buf, BS, 6);
	remote_write(f, m, buf, BS, 0);
	remote_write(f, m, buf, 100, 0);   /* an overwrite: times only, sent later */
	assert_int_equal(m->times_dirty, 1);
	atomic_store(&f->l.remchg_op, OP_TOUCH);
	assert_int_equal(ops_remote.release(f->pv, m), -ERESTART);
	assert_int_equal(m->times_dirty, 1);
	assert_int_equal(m->open_count, 1);
	unsigned before = atomic_load(&f->l.requests);
	remote_close(f, m);
	assert_int_equal(atomic_load(&f->l.requests), before + 2);   /* TOUCH, RELEASE */
}

/* ---- durability of written ranges across a coordinator change ------------- */

/* Committed ranges wait on this node until an fsync; the last close makes
 * them durable (as NFS commits at close): nothing would remember them after. */
static void test_last_close_commits(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	char buf[BS];
	struct minode *m = remote_create_open(f, "closed", &a);
	pattern(buf, BS, 7);
	remote_write(f, m, buf, BS, 0);
	assert_int_equal(m->npend, 1);
	unsigned fsyncs = atomic_load(&f->l.per_op[OP_FSYNC]);
	remote_close(f, m);
	assert_int_equal(atomic_load(&f->l.per_op[OP_FSYNC]), fsyncs + 1);
	/* a close with nothing waiting asks for nothing more */
	assert_int_equal(ops_remote.open(f->pv, (ext2_ino_t)a.ino, a.generation, 0, &m), 0);
	remote_close(f, m);
	assert_int_equal(atomic_load(&f->l.per_op[OP_FSYNC]), fsyncs + 1);
}

/* After the coordinator changes (a new epoch), the next read or write of the
 * file first commits its waiting ranges again to the new one. */
static void test_new_coordinator_gets_pending_ranges(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	char buf[BS], got[BS];
	struct minode *m = remote_create_open(f, "moved", &a);
	pattern(buf, BS, 8);
	remote_write(f, m, buf, BS, 0);
	unsigned commits = atomic_load(&f->l.per_op[OP_COMMIT]);
	assert_int_equal(data_read(f->pv, &ops_remote, m, got, BS, 0), BS);
	assert_int_equal(atomic_load(&f->l.per_op[OP_COMMIT]), commits);   /* same coordinator */
	atomic_fetch_add(&f->l.epoch, 1);
	assert_int_equal(data_read(f->pv, &ops_remote, m, got, BS, 0), BS);
	assert_int_equal(atomic_load(&f->l.per_op[OP_COMMIT]), commits + 1);
	assert_memory_equal(got, buf, BS);
	assert_int_equal(m->npend, 1);                 /* still waiting for an fsync */
	assert_int_equal(m->pend[0].epoch, EPOCH + 1); /* but known to the new one */
	remote_close(f, m);
}

/* An overwrite past EOF inside written blocks commits a size alone: that
 * too waits for an fsync and goes to a new coordinator; and a truncate of
 * our own is not undone when earlier ranges are committed again. */
static void test_pending_sizes(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	char buf[2 * BS];
	struct minode *m = remote_create_open(f, "sizes", &a);
	pattern(buf, sizeof(buf), 9);
	remote_write(f, m, buf, 2 * BS, 0);               /* blocks 0-1, size 8192 */
	assert_int_equal(ops_remote.fsync(f->pv, m, 1), 0);
	struct meta_setattr sa = { .valid = META_SET_SIZE, .size = 100 };
	assert_int_equal(ops_remote.setattr(f->pv, m->ino, &sa, NULL), 0);
	remote_write(f, m, buf, 300, 0);                  /* block 0 written: a size alone */
	assert_int_equal(m->npend, 1);
	assert_int_equal(m->pend[0].len, 0);
	assert_int_equal(m->pend[0].size, 300);
	atomic_fetch_add(&f->l.epoch, 1);
	unsigned commits = atomic_load(&f->l.per_op[OP_COMMIT]);
	char got[BS];
	assert_int_equal(data_read(f->pv, &ops_remote, m, got, BS, 0), 300);
	assert_int_equal(atomic_load(&f->l.per_op[OP_COMMIT]), commits + 1);

	remote_write(f, m, buf, 2 * BS, BS);              /* block 2 new: range + size 12288 */
	sa.size = 5000;
	assert_int_equal(ops_remote.setattr(f->pv, m->ino, &sa, NULL), 0);
	for (unsigned i = 0; i < m->npend; i++)
		assert_true(m->pend[i].size <= 5000);
	atomic_fetch_add(&f->l.epoch, 1);
	assert_int_equal(data_read(f->pv, &ops_remote, m, got, BS, 0), BS);
	assert_int_equal(local_attr(f, m->ino).size, 5000);   /* not grown back */
	remote_close(f, m);
}

/* A write past the fsynced end that the old coordinator never made durable,
 * then, first thing at the new one, a punch of all the blocks it wrote: the
 * range is not ours to commit again, but the size it wrote is (a punch keeps
 * the size) — the soak saw st_size fall back to the last fsync's. */
static void test_punch_after_takeover_keeps_size(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	char buf[3 * BS];
	struct minode *m = remote_create_open(f, "punched", &a);
	pattern(buf, sizeof(buf), 10);
	remote_write(f, m, buf, BS, 0);
	assert_int_equal(ops_remote.fsync(f->pv, m, 1), 0);          /* block 0, size 4096: durable */
	remote_write(f, m, buf, 2 * BS + 100, BS);                   /* blocks 1-3, size 12388 */
	/* The coordinator dies before its journal holds that commit: the new
	 * one knows the size of the fsync (and the blocks' allocation is gone). */
	struct meta_setattr lost = { .valid = META_SET_SIZE, .size = BS };
	assert_int_equal(ops_local.setattr(f->cv, m->ino, &lost, NULL), 0);
	atomic_fetch_add(&f->l.epoch, 1);
	assert_int_equal(ops_remote.fallocate(f->pv, m, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					      BS, 3 * BS), 0);
	assert_int_equal(local_attr(f, m->ino).size, 3 * BS + 100);
	assert_int_equal(atomic_load(&m->size), 3 * BS + 100);
	/* the range's blocks are nobody's to commit again: only its size waits */
	for (unsigned i = 0; i < m->npend; i++)
		assert_int_equal(m->pend[i].len, 0);
	assert_int_equal(ops_remote.fsync(f->pv, m, 1), 0);
	assert_int_equal(m->npend, 0);
	char want[3 * BS + 100], got[3 * BS + 100];
	memcpy(want, buf, BS);
	memset(want + BS, 0, sizeof(want) - BS);
	assert_int_equal(local_read(f, m->ino, got, sizeof(got), 0), (int)sizeof(got));
	assert_memory_equal(got, want, sizeof(got));
	remote_close(f, m);
}

/* A size the old coordinator never made durable, and a stat as the first
 * request at the new one: it shows the size this node wrote (make soak under
 * kills: st_size fell back to the journal's right after a takeover). */
static void test_stat_after_takeover_keeps_size(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	char buf[BS];
	struct minode *m = remote_create_open(f, "statted", &a);
	pattern(buf, sizeof(buf), 11);
	remote_write(f, m, buf, BS, 0);
	assert_int_equal(ops_remote.fsync(f->pv, m, 1), 0);          /* block 0 written */
	struct meta_setattr sa = { .valid = META_SET_SIZE, .size = 100 };
	assert_int_equal(ops_remote.setattr(f->pv, m->ino, &sa, NULL), 0);
	assert_int_equal(ops_remote.fsync(f->pv, m, 1), 0);          /* size 100: durable */
	remote_write(f, m, buf, 3000, 0);                            /* a size alone: 3000 */
	/* The coordinator dies before its journal holds the size: the new one
	 * knows the fsynced 100. */
	struct meta_setattr lost = { .valid = META_SET_SIZE, .size = 100 };
	assert_int_equal(ops_local.setattr(f->cv, m->ino, &lost, NULL), 0);
	atomic_fetch_add(&f->l.epoch, 1);
	assert_int_equal(ops_remote.getattr(f->pv, m->ino, &a), 0);
	assert_int_equal(a.size, 3000);
	assert_int_equal(local_attr(f, m->ino).size, 3000);
	assert_int_equal(m->pend[0].epoch, EPOCH + 1);               /* known to the new one */
	remote_close(f, m);
}

/* ---- 5. a malformed reply is the coordinator's fault: -EIO, no crash ---------- */

static void test_malformed_replies(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	char buf[64];
	struct meta_dirent *d;
	size_t n;
	assert_int_equal(ops_remote.symlink(f->pv, ROOT, "m", "target", &CRED, &a), 0);
	ext2_ino_t ino = (ext2_ino_t)a.ino;

	atomic_store(&f->l.cut_op, OP_GETATTR);
	assert_int_equal(ops_remote.getattr(f->pv, ino, &a), -EIO);
	atomic_store(&f->l.cut_op, OP_READLINK);
	assert_int_equal(ops_remote.readlink(f->pv, ino, buf, sizeof(buf)), -EIO);
	/* a page cut inside its last entry: the names decoded so far are freed */
	atomic_store(&f->l.cut_op, OP_READDIRPLUS);
	assert_int_equal(ops_remote.readdir(f->pv, ROOT, &d, &n), -EIO);
	atomic_store(&f->l.extra_op, OP_LOOKUP);
	assert_int_equal(ops_remote.lookup(f->pv, ROOT, "m", &a), -EIO);
	atomic_store(&f->l.cut_op, OP_STATFS);
	struct statvfs st;
	assert_int_equal(ops_remote.statfs(f->pv, &st, 0), -EIO);

	/* the link is still in step: the next calls work */
	assert_int_equal(ops_remote.getattr(f->pv, ino, &a), 0);
	assert_int_equal(ops_remote.readdir(f->pv, ROOT, &d, &n), 0);
	assert_non_null(entry(d, n, "m"));
	meta_free_dirents(d, n);
	assert_int_equal(ops_remote.unlink(f->pv, ROOT, "m"), 0);
}

/* In the data path too: a cut MAP reply fails the read, not the process. */
static void test_malformed_map(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	char buf[BS], back[BS];
	struct minode *m = remote_create_open(f, "mm", &a);
	pattern(buf, BS, 5);
	remote_write(f, m, buf, BS, 0);
	atomic_store(&f->l.cut_op, OP_MAP);
	assert_int_equal(data_read(f->pv, &ops_remote, m, back, BS, 0), -EIO);
	atomic_store(&f->l.cut_op, OP_COMMIT);
	assert_true(data_write(f->pv, &ops_remote, m, buf, BS, BS) < 0);
	/* the commit was applied there; only its answer was lost */
	assert_int_equal(local_attr(f, m->ino).size, 2 * BS);
	assert_int_equal(data_read(f->pv, &ops_remote, m, back, BS, 0), BS);
	assert_memory_equal(back, buf, BS);
	assert_int_equal(ops_remote.fsync(f->pv, m, 0), 0);
	remote_close(f, m);
}

/* File locks over the wire: a participant's lock is decided by the
 * coordinator's table under the peer's name (not a field it sends), a
 * conflict with the coordinator's own lock is refused, F_GETLK shows a
 * holder of another node with pid 0, UNLOCK_ALL drops only the peer's
 * locks, LKWAIT answers at once after a change, and a table in its grace
 * period answers EBUSY to everything but a reclaim. */
static struct plock file_lock(const char *node, uint64_t owner, int type, uint64_t start, uint64_t end)
{
	struct plock l = { .ino = 20, .kind = PLOCK_POSIX, .type = (uint8_t)type, .start = start,
			   .end = end, .owner = owner, .fh = owner + 100, .pid = 4242 };
	snprintf(l.node, sizeof(l.node), "%s", node);
	return l;
}

static void test_file_locks(void **state)
{
	struct fx *f = *state;
	int granted = 0, found = 0;
	uint64_t gen = 0, g2 = 0;
	struct plock mine = file_lock("node-a", 1, PLOCK_WRITE, 0, 9), c;
	assert_int_equal(ops_local.setlk(f->cv, &mine, 0, &granted, &gen), 0);
	assert_true(granted);
	struct plock theirs = file_lock("forged-name", 1, PLOCK_WRITE, 5, 5);
	assert_int_equal(ops_remote.setlk(f->pv, &theirs, 0, &granted, &gen), 0);
	assert_false(granted);                                  /* the coordinator's lock holds */
	assert_int_equal(ops_remote.getlk(f->pv, &theirs, &c, &found), 0);
	assert_true(found);
	assert_int_equal(c.start, 0);
	assert_int_equal(c.end, 9);
	assert_int_equal(c.type, PLOCK_WRITE);
	assert_int_equal(c.pid, 0);                             /* a process of another node */
	theirs.start = theirs.end = 10;
	assert_int_equal(ops_remote.setlk(f->pv, &theirs, 0, &granted, &gen), 0);
	assert_true(granted);
	assert_true(plock_holds(f->cv->plocks, NODE, 20, PLOCK_BY_FH, theirs.fh));   /* the peer's name */
	assert_false(plock_holds(f->cv->plocks, "forged-name", 20, PLOCK_BY_FH, theirs.fh));
	/* LKWAIT: nothing changed, the timeout; a change, at once */
	assert_int_equal(ops_remote.lkwait(f->pv, gen, 20, &g2), 0);
	assert_int_equal(g2, gen);
	assert_int_equal(ops_remote.unlock_all(f->pv, "ignored", 20, PLOCK_BY_FH, mine.fh), 0);
	assert_int_equal(ops_remote.getlk(f->pv, &theirs, &c, &found), 0);   /* ours is not its to drop */
	struct plock probe = file_lock("node-c", 9, PLOCK_WRITE, 0, 0);
	assert_true(plock_test(f->cv->plocks, &probe, &c));
	assert_int_equal(ops_remote.unlock_all(f->pv, "ignored", 20, PLOCK_BY_FH, theirs.fh), 0);
	assert_int_equal(ops_remote.lkwait(f->pv, gen, 1000, &g2), 0);
	assert_true(g2 > gen);
	assert_false(plock_holds(f->cv->plocks, NODE, 20, PLOCK_BY_FH, theirs.fh));
	/* a new coordinator's grace: EBUSY but for reclaims, until the peer is done */
	const char *expect[] = { NODE };
	plock_begin_grace(f->cv->plocks, expect, 1, 60000);
	assert_int_equal(ops_remote.setlk(f->pv, &theirs, 0, &granted, &gen), -EBUSY);
	assert_int_equal(ops_remote.getlk(f->pv, &theirs, &c, &found), -EBUSY);
	assert_int_equal(ops_remote.setlk(f->pv, &theirs, 1, &granted, &gen), 0);
	assert_true(granted);
	assert_int_equal(ops_remote.reclaim_done(f->pv, "ignored"), 0);
	assert_false(plock_in_grace(f->cv->plocks));
	struct plock other = file_lock("x", 2, PLOCK_READ, 10, 10);
	assert_int_equal(ops_remote.setlk(f->pv, &other, 0, &granted, &gen), 0);
	assert_false(granted);                                  /* the reclaimed lock conflicts */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_lookup_getattr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mkdir_symlink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_link_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readdir_unlink_rmdir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_xattr_statfs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_write_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_extend, setup, teardown),
		cmocka_unit_test_setup_teardown(test_redirected_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_redirected_requests_checked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncate_punch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_reused_number, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remchg_restarts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_answer_resent_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_answer_resent_once_xattr_punch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remchg_release_keeps_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_release_unknown_at_new_coordinator, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remchg_touch_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_last_close_commits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_coordinator_gets_pending_ranges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pending_sizes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_punch_after_takeover_keeps_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stat_after_takeover_keeps_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_replies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_map, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_locks, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
