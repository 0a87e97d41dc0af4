// fuzz-sources: fs/[!m]*.c fs/m[!a]*.c journal/*.c dlm-glue/*.c redirect-io/*.c
// fuzz-cflags: -Wall -Wextra -Werror -Wno-unused-parameter -I/usr/include/fuse3 -I/usr/include/ext2fs -I/usr/include/et -I/usr/include/blkid
// fuzz-libs: -Wl,--wrap=csvfs_log -lfuse3 -lext2fs -lcom_err -lblkid -lcpg -lquorum -lvotequorum -lcmap -lqb -lssl -lcrypto -luring -luuid -lm
/* libFuzzer harness over the coordinator's side of the metadata protocol
 * (fs/server.c, fs/proto.c): arbitrary (op, payload) requests go to
 * server_request() on a real standalone volume (csvfs_format'ed image in
 * $FUZZ_PROTO_DIR, default /dev/shm, else $TMPDIR or /tmp; volume_open,
 * v->cluster NULL so fsops run the engine), and every
 * payload also goes through the shared codecs' decoders and every
 * operation's request and reply decoders (the table in fs/proto.c).
 *
 * Input: up to 16 records [u8 op][u8 node][u16 len, big-endian][len bytes];
 * a short last record takes what is left. op is taken mod 64 (unknown ops
 * included); OP_MOVE is skipped (it needs a cluster: fs/server.c h_move
 * dereferences v->cluster).
 *
 * Invariants beyond "no crash, no sanitizer report":
 *  - a status is 0 or an errno, and an error reply carries no fields;
 *  - a success reply decodes whole with the op's reply codec, as fsops.c's
 *    r_* decode it;
 *  - a decoder that accepts a payload re-encodes what it consumed, and what
 *    it returns is in range; a decoder that refuses leaves the reader failed;
 *    an op's request or reply decoder that accepts a payload encodes it back
 *    to the same bytes;
 *  - the volume stays consistent: every FUZZ_PROTO_CHECK_EVERY inputs
 *    (default 256) the server and volume are closed, the volume is mounted
 *    once more (which frees orphans: files a node left open and unlinked)
 *    and `e2fsck -fn` must pass; then the image is formatted afresh. On a failure the inputs since
 *    the last check are written to FUZZ_PROTO_HISTORY (default
 *    /tmp/fuzz_proto-history.<pid>/) in order, to replay with
 *    FUZZ_PROTO_FRESH=1, which formats a fresh volume for every input and
 *    checks it after each (slow, reproducible). With FUZZ_PROTO_KEEP=1 a
 *    clean check reopens the same image instead of a fresh one: replaying
 *    a history with FUZZ_PROTO_CHECK_EVERY=1 FUZZ_PROTO_KEEP=1 stops at the
 *    first input after which e2fsck fails.
 *
 * FUZZ_PROTO_VERBOSE=1 lets the engine's log lines through.
 * FUZZ_PROTO_CODECS_ONLY=1 runs the decoders alone (no volume, no server):
 * a hundred times faster, for the long runs of the codecs. */
#include "fs/csvfs.h"
#include "fs/meta.h"
#include "fs/proto.h"
#include "fs/server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz_proto: check failed: %s (%s:%d)\n", #c, __FILE__, __LINE__); abort(); } } while (0)

#define MAX_RECORDS 16
#define HISTORY_MAX 1024
#define HISTORY_BYTES (8u << 20)

static char image[256];
static struct volume *vol;
static struct server *srv;
static int fresh, verbose, keep, codecs_only;
static unsigned check_every = 256, since_check;
/* The inputs since the last check, end to end in one static arena: an input
 * that allocates no more than it frees must not look like a leak to
 * libFuzzer, which otherwise runs it twice and scans the heap for leaks
 * after it (that scan took 70% of the time). */
static uint8_t history_bytes[HISTORY_BYTES];
static size_t history_off[HISTORY_MAX + 1];   /* input i: [off[i], off[i + 1]) */
static unsigned history_n;                     /* kept: the first history_n since the check */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void __wrap_csvfs_log(int level, const char *fmt, ...);

/* The engine logs every refused request; that is the point here. */
void __wrap_csvfs_log(int level, const char *fmt, ...)
{
	if (!verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	csvfs_vlog(NULL, level, fmt, ap);
	va_end(ap);
}

static void vol_up(int format)
{
	char err[512] = "", guid[37];
	struct csvfs_format_opts fo = { .lun = image, .create_size = 32ull << 20 };
	if (format)
		unlink(image);
	if (format && csvfs_format(&fo, guid, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_proto: csvfs_format(%s): %s\n", image, err);
		abort();
	}
	struct volume_opts o = { .lun = image };
	if (volume_open(&o, &vol, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_proto: volume_open(%s): %s\n", image, err);
		abort();
	}
	CHECK(vol->cluster == NULL);
	CHECK(server_create(vol, &srv) == 0);
}

static void dump_history(void)
{
	const char *dir = getenv("FUZZ_PROTO_HISTORY");
	char def[128], path[512];
	if (!dir || !*dir) {
		snprintf(def, sizeof(def), "/tmp/fuzz_proto-history.%d", (int)getpid());
		dir = def;
	}
	mkdir(dir, 0700);
	for (unsigned i = 0; i < history_n; i++) {
		snprintf(path, sizeof(path), "%s/%04u", dir, i);
		FILE *f = fopen(path, "wb");
		if (!f)
			continue;
		size_t len = history_off[i + 1] - history_off[i];
		if (len && fwrite(history_bytes + history_off[i], 1, len, f) != len)
			fprintf(stderr, "fuzz_proto: short write of %s\n", path);
		fclose(f);
	}
	fprintf(stderr, "fuzz_proto: the %u inputs since the last clean check are in %s/%s "
		"(replay: FUZZ_PROTO_FRESH=1 and each file in order, or all of them as one run)\n",
		history_n, dir, history_n < since_check ? " (only the first ones: the history was full)" : "");
}

/* Closes everything, checks the image, starts over on a fresh one. */
static void vol_check_and_renew(void)
{
	server_destroy(srv);
	srv = NULL;
	volume_close(vol);
	vol = NULL;
	/* Files a node still had open and someone unlinked stay on the orphan
	 * list (a new coordinator would be told the opens again); the next
	 * mount frees them. Mount once so e2fsck sees the volume as a mount
	 * leaves it. */
	char err[512] = "";
	struct volume_opts o = { .lun = image };
	if (volume_open(&o, &vol, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_proto: volume_open(%s) after the run: %s\n", image, err);
		if (!fresh)
			dump_history();
		abort();
	}
	volume_close(vol);
	vol = NULL;
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "e2fsck -fn '%s' >'%s.fsck' 2>&1", image, image);
	int st = system(cmd);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "fuzz_proto: e2fsck -fn found the volume inconsistent (status %d):\n",
			st == -1 ? -1 : WEXITSTATUS(st));
		snprintf(cmd, sizeof(cmd), "cat '%s.fsck' >&2", image);
		if (system(cmd) != 0)
			fprintf(stderr, "(no log)\n");
		if (!fresh)
			dump_history();
		abort();
	}
	since_check = history_n = 0;
	vol_up(!keep);
}

/* The image and e2fsck's log go when the run ends (not after a crash: the
 * image is part of what to look at). */
static void remove_image(void)
{
	char fsck[300];
	snprintf(fsck, sizeof(fsck), "%s.fsck", image);
	unlink(fsck);
	unlink(image);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *e = getenv("FUZZ_PROTO_FRESH");
	fresh = e && *e == '1';
	e = getenv("FUZZ_PROTO_CODECS_ONLY");
	codecs_only = e && *e == '1';
	if (codecs_only)
		return 0;
	e = getenv("FUZZ_PROTO_VERBOSE");
	verbose = e && *e == '1';
	e = getenv("FUZZ_PROTO_KEEP");
	keep = e && *e == '1';
	e = getenv("FUZZ_PROTO_CHECK_EVERY");
	if (e && atoi(e) > 0)
		check_every = (unsigned)atoi(e);
	if (check_every > HISTORY_MAX)
		check_every = HISTORY_MAX;
	/* In memory when it can be: on a disk every commit waits for the device. */
	const char *dir = getenv("FUZZ_PROTO_DIR");
	if (!dir || !*dir)
		dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/tmp";
	snprintf(image, sizeof(image), "%s/fuzz_proto.%d.img", dir, (int)getpid());
	vol_up(1);
	atexit(remove_image);
	return 0;
}

/* ---- the codecs ----------------------------------------------------------- */

static void check_reencode(const uint8_t *consumed, struct rio_writer *w)
{
	CHECK(rio_writer_error(w) == RIO_OK);
	CHECK(w->len == 0 || memcmp(rio_writer_data(w), consumed, w->len) == 0);
	rio_writer_free(w);
}

static void fuzz_codecs(const uint8_t *p, size_t len)
{
	struct rio_reader r;
	struct rio_writer w;

	struct meta_attr a;
	rio_reader_init(&r, p, len);
	if (proto_get_attr(&r, &a) == 0) {
		CHECK(a.ino >= 1 && a.ino <= UINT32_MAX);
		CHECK(a.atime.tv_nsec < 1000000000 && a.mtime.tv_nsec < 1000000000 &&
		      a.ctime.tv_nsec < 1000000000);
		CHECK(r.off == 3 * 8 + 6 * 4 + 3 * 12);
		rio_writer_init(&w, 0);
		proto_put_attr(&w, &a);
		check_reencode(p, &w);
	}

	struct meta_setattr sa;
	rio_reader_init(&r, p, len);
	if (proto_get_setattr(&r, &sa) == 0) {
		CHECK((sa.valid & ~0x1ffu) == 0);
		CHECK(sa.atime.tv_nsec < 1000000000 && sa.mtime.tv_nsec < 1000000000 &&
		      sa.ctime.tv_nsec < 1000000000);
		rio_writer_init(&w, 0);
		proto_put_setattr(&w, &sa);
		check_reencode(p, &w);
	}

	struct meta_cred c;
	rio_reader_init(&r, p, len);
	if (proto_get_cred(&r, &c) == 0) {
		CHECK(c.umask <= 0777);
		rio_writer_init(&w, 0);
		proto_put_cred(&w, &c);
		check_reencode(p, &w);
	}

	struct meta_extent e;
	rio_reader_init(&r, p, len);
	if (proto_get_extent(&r, &e) == 0) {
		CHECK(e.state <= EXTENT_WRITTEN && e.len > 0 && e.lblk + e.len > e.lblk);
		rio_writer_init(&w, 0);
		proto_put_extent(&w, &e);
		check_reencode(p, &w);
	}

	struct statvfs st;
	rio_reader_init(&r, p, len);
	if (proto_get_statfs(&r, &st) == 0) {
		rio_writer_init(&w, 0);
		proto_put_statfs(&w, &st);
		check_reencode(p, &w);
	}
	(void)proto_op_name((uint16_t)(len ? p[0] : 0));
}

/* Every operation's request and reply decoders (fs/proto.c's table): what
 * decodes whole re-encodes to the same bytes. */
static void fuzz_op_codecs(const uint8_t *p, size_t len)
{
	static struct proto_req q;
	for (uint16_t op = 0; op < OP_MAX_; op++) {
		const struct proto_op *o = proto_op(op);
		if (!o)
			continue;
		struct rio_writer w;
		if (proto_decode_request(o, p, len, &q) == RIO_OK) {
			rio_writer_init(&w, 0);
			o->put_req(&w, &q);
			CHECK(w.len == len);
			check_reencode(p, &w);
		}
		union proto_reply r;
		memset(&r, 0, sizeof(r));
		if (proto_decode_reply(o, p, len, &r) == RIO_OK) {
			rio_writer_init(&w, 0);
			o->put_reply(&w, &r);
			CHECK(w.len == len);
			check_reencode(p, &w);
			proto_free_reply(o, &r);
		}
	}
}

/* ---- replies as a participant decodes them ---------------------------------- */

/* What the server may answer, beyond decoding whole. */
static void check_dirents(uint16_t op, const struct proto_dirents *pg)
{
	for (size_t i = 0; i < pg->n; i++) {
		const struct meta_dirent *e = &pg->d[i];
		CHECK(e->ino >= 1 && e->ino <= UINT32_MAX && e->name[0]);
		if (op == OP_READDIRPLUS && e->has_attr)
			CHECK(e->attr.ino == e->ino);
	}
}

static void check_reply(uint16_t op, const uint8_t *p, size_t len)
{
	const struct proto_op *o = proto_op(op);
	union proto_reply r;
	memset(&r, 0, sizeof(r));
	CHECK(o != NULL);
	CHECK(proto_decode_reply(o, p, len, &r) == RIO_OK);
	switch (op) {
	case OP_READDIR: case OP_READDIRPLUS:
		check_dirents(op, &r.dirents);
		break;
	case OP_STATFS:
		CHECK(r.statfs.f_bfree <= r.statfs.f_blocks && r.statfs.f_ffree <= r.statfs.f_files);
		break;
	case OP_GETXATTR: case OP_LISTXATTR:
		CHECK(r.xattr.n == 0 || r.xattr.n == r.xattr.len);
		break;
	default:
		break;
	}
	proto_free_reply(o, &r);
}

static void one_request(uint16_t op, const char *node, const uint8_t *p, size_t len)
{
	/* A heap copy of exactly len bytes, so any over-read hits a redzone. */
	uint8_t *copy = malloc(len ? len : 1);
	CHECK(copy != NULL);
	if (len)
		memcpy(copy, p, len);
	fuzz_codecs(copy, len);
	fuzz_op_codecs(copy, len);
	if (codecs_only) {
		free(copy);
		return;
	}
	struct rio_writer out;
	rio_writer_init(&out, 0);
	int st = server_request(srv, node, "192.0.2.1:7100", op, copy, (uint32_t)len, &out);
	CHECK(st >= 0 && st < 4096);
	CHECK(rio_writer_error(&out) == RIO_OK);
	if (st)
		CHECK(out.len == 0);
	else
		check_reply(op, rio_writer_data(&out), out.len);
	rio_writer_free(&out);
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!fresh && !codecs_only && history_n == since_check && history_n < HISTORY_MAX &&
	    size <= HISTORY_BYTES - history_off[history_n]) {
		memcpy(history_bytes + history_off[history_n], data, size);
		history_off[history_n + 1] = history_off[history_n] + size;
		history_n++;
	}
	since_check++;
	size_t off = 0;
	for (int rec = 0; rec < MAX_RECORDS && size - off >= 4; rec++) {
		uint16_t op = data[off] % 64;   /* reaches the LUN_* ops (50..52) */
		const char *node = (data[off + 1] & 1) ? "node-b" : "node-a";
		size_t len = (size_t)data[off + 2] << 8 | data[off + 3];
		off += 4;
		if (len > size - off)
			len = size - off;
		if (op != OP_MOVE)
			one_request(op, node, data + off, len);
		off += len;
	}
	/* The last commit's home writes run on the journal's home writer after
	 * the reply, and free its transaction there. libFuzzer counts an input's
	 * mallocs against its frees to suspect a leak and then scans the heap;
	 * a transaction still in the home writer's hands was once reported as
	 * leaked (not reproducible alone). So each input ends with them done. */
	if (!codecs_only)
		(void)journal_durable_id(vol->journal);
	if (!codecs_only && (fresh || since_check >= check_every))
		vol_check_and_renew();
	return 0;
}
