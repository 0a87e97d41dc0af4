/* The metadata protocol (fs/proto.h, fs/server.c) without a network:
 *
 *  - the codecs of the shared structures (attr, setattr, cred, extent,
 *    statfs): encode -> decode equality, every truncation fails cleanly (on a
 *    heap buffer of exactly that length, so ASan sees any over-read), out-of-
 *    range values are refused, and a refusal is sticky in the reader, so a
 *    handler that checks only rio_reader_end() still refuses;
 *  - the table of operations (proto_op): row for row as docs/protocol.md's
 *    "Operations" table (code, name, idempotent); each op's request and
 *    reply codec encodes a sample to the bytes its documented layout gives
 *    (written here field by field: the frames are those sent before the
 *    table existed), and decodes them back to the same bytes;
 *  - server_request() against a real standalone volume (csvfs_format'ed
 *    scratch image, volume_open, v->cluster NULL so fsops run the engine),
 *    with requests built by the table's encoders as fsops.c's r_* build them.
 *    Well-formed requests work; every op's malformed variants (truncated at
 *    every length, a trailing byte, ino 0, a name longer than its bytes or
 *    than a name may be, an embedded NUL) answer EPROTO with no reply fields
 *    and change nothing (checked through GETATTR/READDIR/STATFS replies).
 *
 * Teardown closes the server and the volume and runs `e2fsck -fn` on the
 * image: every test must leave it clean. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs/csvfs.h"
#include "fs/meta.h"
#include "fs/proto.h"
#include "fs/server.h"
#include "tests/unit/scratch.h"

#define MiB (1ull << 20)
#define ROOT EXT2_ROOT_INO
#define NODE_A "node-a"
#define NODE_B "node-b"
#define ADDR "10.0.0.2:7100"

static const struct meta_cred CRED = { 1000, 100, 022 };
#define NOCRED { 0, 0, 0 }   /* RENAME without WHITEOUT sends none */

/* ---- codecs ------------------------------------------------------------ */

/* The bytes of a writer in a heap block of exactly their length. */
static uint8_t *take_bytes(struct rio_writer *w, size_t *len)
{
	assert_int_equal(rio_writer_error(w), RIO_OK);
	*len = w->len;
	uint8_t *p = malloc(w->len ? w->len : 1);
	assert_non_null(p);
	if (w->len)
		memcpy(p, rio_writer_data(w), w->len);
	rio_writer_free(w);
	return p;
}

typedef int (*decode_fn)(struct rio_reader *r, void *out);

static int dec_attr(struct rio_reader *r, void *o) { return proto_get_attr(r, o); }
static int dec_setattr(struct rio_reader *r, void *o) { return proto_get_setattr(r, o); }
static int dec_cred(struct rio_reader *r, void *o) { return proto_get_cred(r, o); }
static int dec_extent(struct rio_reader *r, void *o) { return proto_get_extent(r, o); }
static int dec_statfs(struct rio_reader *r, void *o) { return proto_get_statfs(r, o); }

/* Refusals that left the reader usable, counted by decode_whole and checked
 * at the end of each codec test (after its buffers are freed). */
static int nonsticky_refusals;

static void assert_refusals_sticky(void)
{
	int n = nonsticky_refusals;
	nonsticky_refusals = 0;
	if (n)
		fail_msg("%d refusal(s) left the reader without an error: a handler that checks "
			 "only rio_reader_end() would accept them", n);
}

/* Decodes p[0..len) whole: 0, or the decoder's error. A refusal must also
 * leave the reader failed (a handler checks only rio_reader_end). */
static int decode_whole(decode_fn fn, const uint8_t *p, size_t len, void *out)
{
	uint8_t *copy = malloc(len ? len : 1);
	assert_non_null(copy);
	memcpy(copy, p, len);
	struct rio_reader r;
	rio_reader_init(&r, copy, len);
	int rc = fn(&r, out);
	int end = rio_reader_end(&r);
	free(copy);
	if (rc != 0 && end == RIO_OK)
		nonsticky_refusals++;
	return rc ? rc : end;
}

/* Every strict prefix fails; a trailing byte leaves the reader unfinished. */
static void check_truncations(decode_fn fn, const uint8_t *p, size_t len, size_t outsz)
{
	void *out = malloc(outsz);
	assert_non_null(out);
	size_t decoded_prefix = SIZE_MAX;
	for (size_t n = 0; n < len; n++) {
		memset(out, 0xa5, outsz);
		if (decode_whole(fn, p, n, out) == 0 && decoded_prefix == SIZE_MAX)
			decoded_prefix = n;
	}
	uint8_t *longer = malloc(len + 1);
	assert_non_null(longer);
	memcpy(longer, p, len);
	longer[len] = 0;
	int trailing = decode_whole(fn, longer, len + 1, out);
	free(longer);
	free(out);
	if (decoded_prefix != SIZE_MAX)
		fail_msg("a %zu-byte prefix of a %zu-byte encoding decoded", decoded_prefix, len);
	assert_int_not_equal(trailing, 0);
}

static struct meta_attr sample_attr(void)
{
	struct meta_attr a = {
		.ino = 4242, .size = 0x123456789abull, .blocks = 777, .mode = 0100640,
		.nlink = 3, .uid = 1000, .gid = 0xfffffffeu, .rdev = 0x1234, .generation = 99,
		.atime = { 1700000000, 1 }, .mtime = { 1700000001, 999999999 },
		.ctime = { 0x1ffffffffll, 500000000 },
	};
	return a;
}

static void assert_attr_equal(const struct meta_attr *a, const struct meta_attr *b)
{
	assert_int_equal(a->ino, b->ino);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->blocks, b->blocks);
	assert_int_equal(a->mode, b->mode);
	assert_int_equal(a->nlink, b->nlink);
	assert_int_equal(a->uid, b->uid);
	assert_int_equal(a->gid, b->gid);
	assert_int_equal(a->rdev, b->rdev);
	assert_int_equal(a->generation, b->generation);
	assert_int_equal(a->atime.tv_sec, b->atime.tv_sec);
	assert_int_equal(a->atime.tv_nsec, b->atime.tv_nsec);
	assert_int_equal(a->mtime.tv_sec, b->mtime.tv_sec);
	assert_int_equal(a->mtime.tv_nsec, b->mtime.tv_nsec);
	assert_int_equal(a->ctime.tv_sec, b->ctime.tv_sec);
	assert_int_equal(a->ctime.tv_nsec, b->ctime.tv_nsec);
}

static int attr_decodes(const struct meta_attr *a, struct meta_attr *out)
{
	struct rio_writer w;
	size_t len;
	rio_writer_init(&w, 0);
	proto_put_attr(&w, a);
	uint8_t *p = take_bytes(&w, &len);
	int rc = decode_whole(dec_attr, p, len, out);
	free(p);
	return rc;
}

static void test_codec_attr(void **state)
{
	struct meta_attr a = sample_attr(), b;
	struct rio_writer w;
	size_t len;
	rio_writer_init(&w, 0);
	proto_put_attr(&w, &a);
	uint8_t *p = take_bytes(&w, &len);
	assert_int_equal(len, 3 * 8 + 6 * 4 + 3 * 12);
	assert_int_equal(decode_whole(dec_attr, p, len, &b), 0);
	assert_attr_equal(&a, &b);
	check_truncations(dec_attr, p, len, sizeof(struct meta_attr));
	free(p);

	/* Extremes that are valid. */
	a.ino = UINT32_MAX;
	a.size = UINT64_MAX;
	a.atime.tv_nsec = a.mtime.tv_nsec = a.ctime.tv_nsec = 999999999;
	assert_int_equal(attr_decodes(&a, &b), 0);
	assert_attr_equal(&a, &b);
	a.ino = 1;
	assert_int_equal(attr_decodes(&a, &b), 0);

	/* Out of range: ino 0 or past 32 bits, any nanoseconds >= 1e9. */
	a = sample_attr();
	a.ino = 0;
	assert_int_not_equal(attr_decodes(&a, &b), 0);
	a.ino = (uint64_t)UINT32_MAX + 1;
	assert_int_not_equal(attr_decodes(&a, &b), 0);
	struct timespec *ts[] = { &a.atime, &a.mtime, &a.ctime };
	for (int i = 0; i < 3; i++) {
		a = sample_attr();
		ts[i]->tv_nsec = 1000000000;
		if (attr_decodes(&a, &b) == 0)
			fail_msg("attr with %s nsec = 1e9 decoded", i == 0 ? "atime" : i == 1 ? "mtime" : "ctime");
		a = sample_attr();
		ts[i]->tv_nsec = (long)UINT32_MAX;
		assert_int_not_equal(attr_decodes(&a, &b), 0);
	}
	assert_refusals_sticky();
}

static struct meta_setattr sample_setattr(void)
{
	struct meta_setattr sa = {
		.valid = 0x1ff, .mode = 04755, .uid = 1, .gid = 2, .size = 1ull << 40,
		.atime = { 10, 20 }, .mtime = { 30, 999999999 }, .ctime = { 50, 0 },
	};
	return sa;
}

static int setattr_decodes(const struct meta_setattr *sa, struct meta_setattr *out)
{
	struct rio_writer w;
	size_t len;
	rio_writer_init(&w, 0);
	proto_put_setattr(&w, sa);
	uint8_t *p = take_bytes(&w, &len);
	int rc = decode_whole(dec_setattr, p, len, out);
	free(p);
	return rc;
}

static void test_codec_setattr(void **state)
{
	struct meta_setattr sa = sample_setattr(), b;
	struct rio_writer w;
	size_t len;
	rio_writer_init(&w, 0);
	proto_put_setattr(&w, &sa);
	uint8_t *p = take_bytes(&w, &len);
	assert_int_equal(len, 4 * 4 + 8 + 3 * 12);
	assert_int_equal(decode_whole(dec_setattr, p, len, &b), 0);
	assert_int_equal(b.valid, sa.valid);
	assert_int_equal(b.mode, sa.mode);
	assert_int_equal(b.uid, sa.uid);
	assert_int_equal(b.gid, sa.gid);
	assert_int_equal(b.size, sa.size);
	assert_int_equal(b.atime.tv_sec, 10);
	assert_int_equal(b.atime.tv_nsec, 20);
	assert_int_equal(b.mtime.tv_sec, 30);
	assert_int_equal(b.mtime.tv_nsec, 999999999);
	assert_int_equal(b.ctime.tv_sec, 50);
	assert_int_equal(b.ctime.tv_nsec, 0);
	check_truncations(dec_setattr, p, len, sizeof(struct meta_setattr));
	free(p);

	sa.valid = 0;
	assert_int_equal(setattr_decodes(&sa, &b), 0);
	for (unsigned bit = 9; bit < 32; bit++) {
		sa = sample_setattr();
		sa.valid = 1u << bit;
		if (setattr_decodes(&sa, &b) == 0)
			fail_msg("setattr with unknown valid bit %u decoded", bit);
	}
	struct timespec *ts[] = { &sa.atime, &sa.mtime, &sa.ctime };
	for (int i = 0; i < 3; i++) {
		sa = sample_setattr();
		ts[i]->tv_nsec = 1000000000;
		if (setattr_decodes(&sa, &b) == 0)
			fail_msg("setattr with %s nsec = 1e9 decoded", i == 0 ? "atime" : i == 1 ? "mtime" : "ctime");
	}
	assert_refusals_sticky();
}

static int cred_decodes(const struct meta_cred *c, struct meta_cred *out)
{
	struct rio_writer w;
	size_t len;
	rio_writer_init(&w, 0);
	proto_put_cred(&w, c);
	uint8_t *p = take_bytes(&w, &len);
	int rc = decode_whole(dec_cred, p, len, out);
	free(p);
	return rc;
}

static void test_codec_cred(void **state)
{
	struct meta_cred c = { 1000, 0xffffffffu, 0777 }, b;
	struct rio_writer w;
	size_t len;
	rio_writer_init(&w, 0);
	proto_put_cred(&w, &c);
	uint8_t *p = take_bytes(&w, &len);
	assert_int_equal(len, 12);
	assert_int_equal(decode_whole(dec_cred, p, len, &b), 0);
	assert_memory_equal(&b, &c, sizeof(c));
	check_truncations(dec_cred, p, len, sizeof(struct meta_cred));
	free(p);

	c.umask = 0;
	assert_int_equal(cred_decodes(&c, &b), 0);
	c.umask = 01000;
	assert_int_not_equal(cred_decodes(&c, &b), 0);
	c.umask = 0xffffffffu;
	assert_int_not_equal(cred_decodes(&c, &b), 0);
	assert_refusals_sticky();
}

static int extent_decodes(const struct meta_extent *e, struct meta_extent *out)
{
	struct rio_writer w;
	size_t len;
	rio_writer_init(&w, 0);
	proto_put_extent(&w, e);
	uint8_t *p = take_bytes(&w, &len);
	int rc = decode_whole(dec_extent, p, len, out);
	free(p);
	return rc;
}

static void test_codec_extent(void **state)
{
	struct meta_extent e = { .lblk = 7, .len = 9, .pblk = 123456, .state = EXTENT_UNWRITTEN }, b;
	struct rio_writer w;
	size_t len;
	rio_writer_init(&w, 0);
	proto_put_extent(&w, &e);
	uint8_t *p = take_bytes(&w, &len);
	assert_int_equal(len, 25);
	assert_int_equal(decode_whole(dec_extent, p, len, &b), 0);
	assert_int_equal(b.lblk, 7);
	assert_int_equal(b.len, 9);
	assert_int_equal(b.pblk, 123456);
	assert_int_equal(b.state, EXTENT_UNWRITTEN);
	check_truncations(dec_extent, p, len, sizeof(struct meta_extent));
	free(p);

	for (int st = EXTENT_HOLE; st <= EXTENT_WRITTEN; st++) {
		e.state = (enum extent_state)st;
		assert_int_equal(extent_decodes(&e, &b), 0);
		assert_int_equal(b.state, st);
	}
	e.state = (enum extent_state)3;
	assert_int_not_equal(extent_decodes(&e, &b), 0);
	e.state = (enum extent_state)255;
	assert_int_not_equal(extent_decodes(&e, &b), 0);
	e.state = EXTENT_WRITTEN;
	e.len = 0;
	assert_int_not_equal(extent_decodes(&e, &b), 0);
	e.lblk = UINT64_MAX - 1;   /* lblk + len wraps */
	e.len = 2;
	assert_int_not_equal(extent_decodes(&e, &b), 0);
	e.len = 1;                 /* ends exactly at 2^64 - 1: no wrap */
	assert_int_equal(extent_decodes(&e, &b), 0);
	assert_refusals_sticky();
}

static void test_codec_statfs(void **state)
{
	struct statvfs st, b;
	memset(&st, 0, sizeof(st));
	st.f_bsize = 4096;
	st.f_frsize = 4096;
	st.f_blocks = 16384;
	st.f_bfree = 1000;
	st.f_bavail = 900;
	st.f_files = 4096;
	st.f_ffree = 4000;
	st.f_favail = 3999;
	st.f_fsid = 0x1122334455667788ull;
	st.f_namemax = 255;
	struct rio_writer w;
	size_t len;
	rio_writer_init(&w, 0);
	proto_put_statfs(&w, &st);
	uint8_t *p = take_bytes(&w, &len);
	assert_int_equal(len, 80);
	assert_int_equal(decode_whole(dec_statfs, p, len, &b), 0);
	assert_int_equal(b.f_bsize, st.f_bsize);
	assert_int_equal(b.f_frsize, st.f_frsize);
	assert_int_equal(b.f_blocks, st.f_blocks);
	assert_int_equal(b.f_bfree, st.f_bfree);
	assert_int_equal(b.f_bavail, st.f_bavail);
	assert_int_equal(b.f_files, st.f_files);
	assert_int_equal(b.f_ffree, st.f_ffree);
	assert_int_equal(b.f_favail, st.f_favail);
	assert_int_equal(b.f_fsid, st.f_fsid);
	assert_int_equal(b.f_namemax, st.f_namemax);
	check_truncations(dec_statfs, p, len, sizeof(struct statvfs));
	free(p);
	assert_refusals_sticky();
}

static void test_op_names(void **state)
{
	assert_string_equal(proto_op_name(OP_LOOKUP), "lookup");
	assert_string_equal(proto_op_name(OP_READDIRPLUS), "readdirplus");
	assert_string_equal(proto_op_name(0), "?");
	assert_string_equal(proto_op_name(OP_MAX_), "?");
	assert_string_equal(proto_op_name(UINT16_MAX), "?");
	/* Codes are dense up to CREATE_OPEN; codes past it are allotted in
	 * blocks per feature (SNAPSHOT from 40), with unused codes between. */
	for (uint16_t op = 1; op <= OP_CREATE_OPEN; op++)
		assert_string_not_equal(proto_op_name(op), "?");
	for (uint16_t op = OP_CREATE_OPEN + 1; op < OP_MAX_; op++)
		assert_int_equal(strcmp(proto_op_name(op), "?") != 0, proto_op(op) != NULL);
	assert_string_equal(proto_op_name(OP_SNAPSHOT), "snapshot");
	assert_string_equal(proto_op_name(OP_LUN_READ), "lun_read");
	assert_string_equal(proto_op_name(OP_LUN_FLUSH), "lun_flush");
	assert_string_equal(proto_op_name(OP_MAINTENANCE), "maintenance");
	assert_string_equal(proto_op_name(OP_GROW), "grow");
}

/* q encoded as op's request, as fsops.c's r_* encode it. */
static struct rio_writer encode(uint16_t op, const struct proto_req *q)
{
	const struct proto_op *o = proto_op(op);
	struct rio_writer w;
	assert_non_null(o);
	rio_writer_init(&w, 0);
	o->put_req(&w, q);
	assert_int_equal(rio_writer_error(&w), RIO_OK);
	return w;
}

/* ---- the table (fs/proto.c OPS) against docs/protocol.md ------------------ */

/* docs/protocol.md from the source tree: the working directory is the
 * repository (make check), or the binary is build/tests/test_proto. */
static FILE *open_protocol_md(void)
{
	FILE *fp = fopen("docs/protocol.md", "r");
	char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 32);
	if (fp || n <= 0)
		return fp;
	path[n] = 0;
	for (int up = 0; up < 3; up++) {
		char *slash = strrchr(path, '/');
		if (slash)
			*slash = 0;
	}
	strcat(path, "/docs/protocol.md");
	return fopen(path, "r");
}

/* Every row of the "Operations" table: code, name, idempotent and durable yes/no, in
 * the order of the codes, one table operation per row and no other. */
static void test_op_table_matches_docs(void **state)
{
	FILE *fp = open_protocol_md();
	if (!fp)
		fail_msg("docs/protocol.md not found (run from the repository)");
	char line[1024], name[64], idem[8], dur[8];
	unsigned code, last = 0, rows = 0, in_ops = 0;
	while (fgets(line, sizeof(line), fp)) {
		if (strncmp(line, "## ", 3) == 0)
			in_ops = strncmp(line, "## Operations", 13) == 0;
		if (!in_ops || sscanf(line, "| %u | %63[A-Z_] | %7[a-z] | %7[a-z] |", &code, name, idem,
				      dur) != 4)
			continue;
		const struct proto_op *o = proto_op((uint16_t)code);
		if (!o)
			fail_msg("protocol.md op %u (%s) is not in the table", code, name);
		if (code <= last || o->code != code || strcasecmp(o->name, name) != 0)
			fail_msg("protocol.md row %u %s: the table says %u %s", code, name, o->code, o->name);
		if (o->idempotent != (strcmp(idem, "yes") == 0))
			fail_msg("protocol.md says %s is %sidempotent; the table does not", name,
				 strcmp(idem, "yes") == 0 ? "" : "not ");
		/* "trunc": durable when it truncates, by its handler (OPEN) */
		if (o->durable != (strcmp(dur, "yes") == 0))
			fail_msg("protocol.md says %s is %sdurable; the table does not", name,
				 strcmp(dur, "yes") == 0 ? "" : "not ");
		last = code;
		rows++;
	}
	fclose(fp);
	unsigned ops = 0;
	for (unsigned c = 0; c <= UINT16_MAX; c++) {
		const struct proto_op *o = proto_op((uint16_t)c);
		if (!o)
			continue;
		ops++;
		assert_non_null(o->put_req);
		assert_non_null(o->get_req);
		assert_non_null(o->put_reply);
		assert_non_null(o->get_reply);
	}
	assert_true(rows > 0);
	assert_int_equal(rows, ops);
}

/* ---- the table's codecs against the documented layouts ---------------------- */

/* Sample request q of op and, written field by field as protocol.md lays
 * them out (independently of fs/proto.c), the bytes it must encode to: the
 * frames fsops.c sent before the table existed. */
static void documented_request(uint16_t op, struct proto_req *q, struct rio_writer *w)
{
	static const struct meta_cred c = { 1000, 100, 022 };
	const struct meta_setattr sa = sample_setattr();
	switch (op) {
	case OP_LOOKUP: case OP_UNLINK: case OP_RMDIR: case OP_REMOVEXATTR:
		*q = (struct proto_req){ .ino_name = { 12, "name" } };
		rio_put_u32(w, 12), rio_put_str(w, "name");
		break;
	case OP_GETATTR: case OP_READLINK: case OP_RELEASE: case OP_TOUCH:
		*q = (struct proto_req){ .inode = { 13 } };
		rio_put_u32(w, 13);
		break;
	case OP_SETATTR:
		*q = (struct proto_req){ .setattr = { 14, sa } };
		rio_put_u32(w, 14), proto_put_setattr(w, &sa);
		break;
	case OP_CREATE: case OP_CREATE_OPEN:
		*q = (struct proto_req){ .create = { 2, "new", S_IFREG | 0640, 0, c } };
		rio_put_u32(w, 2), rio_put_str(w, "new"), rio_put_u32(w, S_IFREG | 0640);
		rio_put_u32(w, 0), proto_put_cred(w, &c);
		break;
	case OP_SYMLINK:
		*q = (struct proto_req){ .symlink = { 15, "sl", "../target", c } };
		rio_put_u32(w, 15), rio_put_str(w, "sl"), rio_put_str(w, "../target");
		proto_put_cred(w, &c);
		break;
	case OP_LINK:
		*q = (struct proto_req){ .link = { 16, 17, "hard" } };
		rio_put_u32(w, 16), rio_put_u32(w, 17), rio_put_str(w, "hard");
		break;
	case OP_RENAME:
		*q = (struct proto_req){ .rename = { 18, "a", 19, "b", META_RENAME_WHITEOUT, c } };
		rio_put_u32(w, 18), rio_put_str(w, "a"), rio_put_u32(w, 19), rio_put_str(w, "b");
		rio_put_u32(w, META_RENAME_WHITEOUT), proto_put_cred(w, &c);
		break;
	case OP_READDIR: case OP_READDIRPLUS:
		*q = (struct proto_req){ .readdir = { 20, 0x123456789ull } };
		rio_put_u32(w, 20), rio_put_u64(w, 0x123456789ull);
		break;
	case OP_STATFS: case OP_SYNCFS: case OP_RECLAIM_DONE:
		*q = (struct proto_req){ 0 };
		break;
	case OP_GETXATTR:
		*q = (struct proto_req){ .xattr_get = { 21, "user.k", 300 } };
		rio_put_u32(w, 21), rio_put_str(w, "user.k"), rio_put_u32(w, 300);
		break;
	case OP_LISTXATTR:
		*q = (struct proto_req){ .xattr_get = { 22, NULL, 400 } };
		rio_put_u32(w, 22), rio_put_u32(w, 400);
		break;
	case OP_SETXATTR:
		*q = (struct proto_req){ .setxattr = { 23, "user.v", "v\0w", 3, META_XATTR_REPLACE } };
		rio_put_u32(w, 23), rio_put_str(w, "user.v"), rio_put_bytes(w, "v\0w", 3);
		rio_put_u32(w, META_XATTR_REPLACE);
		break;
	case OP_OPEN:
		*q = (struct proto_req){ .open = { 24, 1, 0xabcdef01u } };
		rio_put_u32(w, 24), rio_put_u8(w, 1), rio_put_u32(w, 0xabcdef01u);
		break;
	case OP_FSYNC:
		*q = (struct proto_req){ .fsync = { 25, 1 } };
		rio_put_u32(w, 25), rio_put_u8(w, 1);
		break;
	case OP_MAP:
		*q = (struct proto_req){ .map = { 26, 77 } };
		rio_put_u32(w, 26), rio_put_u64(w, 77);
		break;
	case OP_ALLOC:
		*q = (struct proto_req){ .alloc = { 27, 78, 9 } };
		rio_put_u32(w, 27), rio_put_u64(w, 78), rio_put_u64(w, 9);
		break;
	case OP_COMMIT:
		*q = (struct proto_req){ .commit = { 28, 79, 10, 1ull << 40 } };
		rio_put_u32(w, 28), rio_put_u64(w, 79), rio_put_u64(w, 10), rio_put_u64(w, 1ull << 40);
		break;
	case OP_FALLOCATE:
		*q = (struct proto_req){ .fallocate = { 29, FALLOC_FL_KEEP_SIZE, 4096, 8192 } };
		rio_put_u32(w, 29), rio_put_u32(w, FALLOC_FL_KEEP_SIZE), rio_put_u64(w, 4096);
		rio_put_u64(w, 8192);
		break;
	case OP_SEEK:
		*q = (struct proto_req){ .seek = { 30, 5000, SEEK_DATA } };
		rio_put_u32(w, 30), rio_put_u64(w, 5000), rio_put_u32(w, SEEK_DATA);
		break;
	case OP_MOVE:
		*q = (struct proto_req){ .move = { "node-c" } };
		rio_put_str(w, "node-c");
		break;
	case OP_LUN_READ: case OP_LUN_WRITE:
		*q = (struct proto_req){ .lun_io = { .ino = 31, .nblk = 2, .lblk = 80, .pblk = 5000 } };
		rio_put_u32(w, 31), rio_put_u64(w, 80), rio_put_u64(w, 5000), rio_put_u32(w, 2);
		if (op == OP_LUN_WRITE) {
			static const char data[8192];
			q->lun_io.data = data;
			q->lun_io.len = sizeof(data);
			rio_put_bytes(w, data, sizeof(data));
		}
		break;
	case OP_LUN_FLUSH: case OP_MAINTENANCE: case OP_GROW:
		break;
	case OP_ONCE:   /* the id, then an UNLINK's fields */
		*q = (struct proto_req){ .ino_name = { 12, "name" },
					 .once = { 0x0102030405060708ull, 31, 9, OP_UNLINK } };
		rio_put_u64(w, 0x0102030405060708ull), rio_put_u32(w, 31), rio_put_u32(w, 9);
		rio_put_u16(w, OP_UNLINK), rio_put_u32(w, 12), rio_put_str(w, "name");
		break;
	case OP_IO_STATE:
		*q = (struct proto_req){ .io_state = { { IO_REASON_PATH | IO_REASON_USER, 1765000000123ull,
							 1765000300000ull, 110, 1765000000100ull,
							 "/dev/sdb" } } };
		rio_put_u32(w, 3), rio_put_u64(w, 1765000000123ull), rio_put_u64(w, 1765000300000ull);
		rio_put_u32(w, 110), rio_put_u64(w, 1765000000100ull), rio_put_str(w, "/dev/sdb");
		break;
	case OP_REDIRECT:
		*q = (struct proto_req){ .redirect = { "node2", 1, 600 } };
		rio_put_str(w, "node2"), rio_put_u8(w, 1), rio_put_u32(w, 600);
		break;
	case OP_SETLK: case OP_GETLK:
		*q = (struct proto_req){ .lock = { { .ino = 31, .kind = PLOCK_POSIX, .type = PLOCK_WRITE,
			.start = 100, .end = PLOCK_EOF, .owner = 0xabcdef, .fh = 0x1234, .pid = 77 },
			.reclaim = op == OP_SETLK } };
		rio_put_u32(w, 31), rio_put_u8(w, PLOCK_POSIX), rio_put_u8(w, PLOCK_WRITE);
		rio_put_u64(w, 100), rio_put_u64(w, PLOCK_EOF), rio_put_u64(w, 0xabcdef);
		rio_put_u64(w, 0x1234), rio_put_u32(w, 77), rio_put_u8(w, op == OP_SETLK);
		break;
	case OP_UNLOCK_ALL:
		*q = (struct proto_req){ .unlock_all = { 32, PLOCK_BY_FH, 0x5678 } };
		rio_put_u32(w, 32), rio_put_u8(w, PLOCK_BY_FH), rio_put_u64(w, 0x5678);
		break;
	case OP_LKWAIT:
		*q = (struct proto_req){ .lkwait = { 9, 250 } };
		rio_put_u64(w, 9), rio_put_u32(w, 250);
		break;
	case OP_SNAPSHOT:
		*q = (struct proto_req){ .snapshot = { "snap-1", "/usr/lib/hook", 30,
						       "0c4ab0dd-5db8-41b0-9ba2-67a38febe96f" } };
		rio_put_str(w, "snap-1"), rio_put_str(w, "/usr/lib/hook"), rio_put_u32(w, 30);
		rio_put_str(w, "0c4ab0dd-5db8-41b0-9ba2-67a38febe96f");
		break;
	case OP_SNAPSHOT_ABORT:
		*q = (struct proto_req){ .snapshot = { "snap-1", NULL, 0, NULL } };
		rio_put_str(w, "snap-1");
		break;
	case OP_SNAPSHOT_REPORT:
		*q = (struct proto_req){ .snapshot_report = { 1, 4, 250, 300 } };
		rio_put_u8(w, 1), rio_put_u32(w, 4), rio_put_u64(w, 250), rio_put_u64(w, 300);
		break;
	default:
		fail_msg("no documented request for op %u", op);
	}
}

/* Encodes q with op's codec, compares with want, decodes it back and
 * encodes the decoded request again: the same bytes. */
static void check_request_codec(uint16_t op, const struct proto_req *q, struct rio_writer *want)
{
	const struct proto_op *o = proto_op(op);
	struct rio_writer w = encode(op, q);
	if (w.len != want->len || (w.len && memcmp(rio_writer_data(&w), rio_writer_data(want), w.len)))
		fail_msg("%s: the table encodes %zu bytes unlike the documented %zu", o->name, w.len,
			 want->len);
	size_t len;
	uint8_t *p = take_bytes(&w, &len);
	struct proto_req *back = malloc(sizeof(*back));
	assert_non_null(back);
	if (proto_decode_request(o, p, len, back) != RIO_OK)
		fail_msg("%s: the documented request does not decode", o->name);
	struct rio_writer again = encode(op, back);
	assert_int_equal(again.len, len);
	if (len)
		assert_memory_equal(rio_writer_data(&again), p, len);
	rio_writer_free(&again);
	rio_writer_free(want);
	free(back);
	free(p);
}

static void test_request_layouts(void **state)
{
	for (uint16_t op = 0; op < OP_MAX_; op++) {
		if (!proto_op(op))
			continue;
		struct proto_req *q = malloc(sizeof(*q));
		struct rio_writer want;
		assert_non_null(q);
		rio_writer_init(&want, 0);
		documented_request(op, q, &want);
		check_request_codec(op, q, &want);
		if (op == OP_RENAME) {   /* without WHITEOUT: no cred */
			rio_writer_init(&want, 0);
			rio_put_u32(&want, 18), rio_put_str(&want, "a"), rio_put_u32(&want, 19);
			rio_put_str(&want, "b"), rio_put_u32(&want, META_RENAME_NOREPLACE);
			q->rename.flags = META_RENAME_NOREPLACE;
			check_request_codec(op, q, &want);
		}
		free(q);
	}
}

/* Sample reply of op and its documented bytes. */
static void documented_reply(uint16_t op, union proto_reply *p, struct rio_writer *w,
			     struct meta_dirent *d)
{
	const struct meta_attr a = sample_attr();
	switch (op) {
	case OP_LOOKUP: case OP_GETATTR: case OP_SETATTR: case OP_CREATE: case OP_SYMLINK:
	case OP_LINK: case OP_OPEN: case OP_CREATE_OPEN:
		p->attr = a;
		proto_put_attr(w, &a);
		break;
	case OP_COMMIT: case OP_FALLOCATE: case OP_SEEK: case OP_LKWAIT:
		p->u64 = 0x1122334455ull;
		rio_put_u64(w, 0x1122334455ull);
		break;
	case OP_READLINK:
		snprintf(p->target, sizeof(p->target), "../t");
		rio_put_str(w, "../t");
		break;
	case OP_STATFS:
		memset(&p->statfs, 0, sizeof(p->statfs));
		p->statfs.f_bsize = 4096;
		p->statfs.f_namemax = 255;
		proto_put_statfs(w, &p->statfs);
		break;
	case OP_MAP:
		p->map = (struct proto_map_reply){ { 8, 4, 1234, EXTENT_WRITTEN }, 65536 };
		proto_put_extent(w, &p->map.e), rio_put_u64(w, 65536);
		break;
	case OP_LUN_READ:
		p->lun_data = (struct proto_lun_data){ .data = "0123", .len = 4 };
		rio_put_bytes(w, "0123", 4);
		break;
	case OP_ONCE:   /* the wrapped change's reply, as it is */
		p->raw.data = "\x01\x02\x03";
		p->raw.len = 3;
		rio_put_raw(w, "\x01\x02\x03", 3);
		break;
	case OP_GETXATTR: case OP_LISTXATTR:
		p->xattr = (struct proto_xattr_reply){ .len = 9, .n = 3, .value = "abc" };
		rio_put_u32(w, 9), rio_put_bytes(w, "abc", 3);
		break;
	case OP_READDIR: case OP_READDIRPLUS:
		d[0] = (struct meta_dirent){ .name = "..", .ino = 2, .type = 4 };
		d[1] = (struct meta_dirent){ .name = "f", .ino = a.ino, .type = 8, .has_attr = 1, .attr = a };
		p->dirents = (struct proto_dirents){ 1, d, 2 };
		rio_put_u8(w, 1), rio_put_u32(w, 2);
		rio_put_u64(w, 2), rio_put_u8(w, 4), rio_put_str(w, "..");
		if (op == OP_READDIRPLUS)
			rio_put_u8(w, 0);
		rio_put_u64(w, a.ino), rio_put_u8(w, 8), rio_put_str(w, "f");
		if (op == OP_READDIRPLUS)
			rio_put_u8(w, 1), proto_put_attr(w, &a);
		break;
	case OP_SETLK: case OP_GETLK:
		p->lock = (struct proto_lock_reply){ 1, 12, { .type = PLOCK_READ, .start = 5, .end = 9, .pid = 0 } };
		rio_put_u8(w, 1), rio_put_u64(w, 12), rio_put_u8(w, PLOCK_READ);
		rio_put_u64(w, 5), rio_put_u64(w, 9), rio_put_u32(w, 0);
		break;
	case OP_SNAPSHOT:
		p->snapshot = (struct proto_snapshot_reply){ .error = 5, .wait_ms = 7, .frozen_ms = 8,
							     .hook_ms = 9 };
		snprintf(p->snapshot.message, sizeof(p->snapshot.message), "the hook exited with status 3");
		rio_put_u32(w, 5), rio_put_str(w, "the hook exited with status 3");
		rio_put_u64(w, 7), rio_put_u64(w, 8), rio_put_u64(w, 9);
		p->snapshot.stall_ms = 6;
		snprintf(p->snapshot.stall_node, sizeof(p->snapshot.stall_node), "node2");
		p->snapshot.nodes_reported = 2, p->snapshot.nodes_expected = 3;
		rio_put_u64(w, 6), rio_put_str(w, "node2"), rio_put_u32(w, 2), rio_put_u32(w, 3);
		snprintf(p->snapshot.guid, sizeof(p->snapshot.guid), "0c4ab0dd-5db8-41b0-9ba2-67a38febe96f");
		rio_put_str(w, "0c4ab0dd-5db8-41b0-9ba2-67a38febe96f");
		break;
	case OP_SNAPSHOT_REPORT:
		p->snapshot_info = (struct proto_snapshot_info){ .since = 100, .deadline = 130 };
		snprintf(p->snapshot_info.name, sizeof(p->snapshot_info.name), "snap-1");
		snprintf(p->snapshot_info.requester, sizeof(p->snapshot_info.requester), "node3");
		rio_put_str(w, "snap-1"), rio_put_str(w, "node3"), rio_put_u64(w, 100), rio_put_u64(w, 130);
		break;
	case OP_MAINTENANCE: case OP_GROW:
		p->maintenance = (struct proto_maintenance_reply){ .error = 16 };
		snprintf(p->maintenance.message, sizeof(p->maintenance.message), "node2: inode 12");
		rio_put_u32(w, 16), rio_put_str(w, "node2: inode 12");
		break;
	case OP_IO_STATE: {
		static struct proto_io_node nodes[2] = {
			{ "node1", 0, { 0, 1765000000000ull, 0, 0, 0, "" } },
			{ "node2", 1500, { IO_REASON_PATH, 1765000000123ull, 0, 5, 1765000000100ull, "/dev/sdb" } },
		};
		p->io_states = (struct proto_io_states){ 2, nodes, PROTO_ASK_ON, 300, 1 };
		rio_put_u32(w, 2);
		rio_put_str(w, "node1"), rio_put_u64(w, 0);
		rio_put_u32(w, 0), rio_put_u64(w, 1765000000000ull), rio_put_u64(w, 0);
		rio_put_u32(w, 0), rio_put_u64(w, 0), rio_put_str(w, "");
		rio_put_str(w, "node2"), rio_put_u64(w, 1500);
		rio_put_u32(w, IO_REASON_PATH), rio_put_u64(w, 1765000000123ull), rio_put_u64(w, 0);
		rio_put_u32(w, 5), rio_put_u64(w, 1765000000100ull), rio_put_str(w, "/dev/sdb");
		rio_put_u8(w, PROTO_ASK_ON), rio_put_u32(w, 300), rio_put_u8(w, 1);
		break;
	}
	default:   /* no fields */
		break;
	}
}

static void test_reply_layouts(void **state)
{
	for (uint16_t op = 0; op < OP_MAX_; op++) {
		const struct proto_op *o = proto_op(op);
		if (!o)
			continue;
		union proto_reply *p = calloc(1, sizeof(*p)), *back = calloc(1, sizeof(*back));
		struct meta_dirent d[2];
		struct rio_writer want, w, again;
		assert_true(p && back);
		rio_writer_init(&want, 0);
		rio_writer_init(&w, 0);
		rio_writer_init(&again, 0);
		documented_reply(op, p, &want, d);
		o->put_reply(&w, p);
		if (w.len != want.len || (w.len && memcmp(rio_writer_data(&w), rio_writer_data(&want), w.len)))
			fail_msg("%s: the table encodes a reply unlike the documented one", o->name);
		if (proto_decode_reply(o, rio_writer_data(&w), w.len, back) != RIO_OK)
			fail_msg("%s: the documented reply does not decode", o->name);
		o->put_reply(&again, back);
		assert_int_equal(again.len, w.len);
		if (w.len)
			assert_memory_equal(rio_writer_data(&again), rio_writer_data(&w), w.len);
		proto_free_reply(o, back);
		rio_writer_free(&want);
		rio_writer_free(&w);
		rio_writer_free(&again);
		free(p);
		free(back);
	}
}

/* IO_STATE: unknown reason bits, an errno that is none, a time past 2^47 ms,
 * a device too long, more nodes than a cluster has: refused. */
static void test_io_state_refusals(void **state)
{
	const struct proto_op *o = proto_op(OP_IO_STATE);
	struct proto_req q;
	struct { uint32_t reasons, err; uint64_t since; size_t dev_len; } bad[] = {
		{ 16, 0, 1, 1 }, { 1, 4096, 1, 1 }, { 1, 5, 1ull << 47, 1 }, { 1, 5, 1, 256 },
	};
	char dev[300];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct rio_writer w;
		rio_writer_init(&w, 0);
		memset(dev, 'd', bad[i].dev_len);
		dev[bad[i].dev_len] = 0;
		rio_put_u32(&w, bad[i].reasons), rio_put_u64(&w, bad[i].since), rio_put_u64(&w, 0);
		rio_put_u32(&w, bad[i].err), rio_put_u64(&w, 0), rio_put_str(&w, dev);
		if (proto_decode_request(o, rio_writer_data(&w), w.len, &q) == RIO_OK)
			fail_msg("io_state request %zu decoded", i);
		rio_writer_free(&w);
	}
	struct rio_writer w;
	union proto_reply p;
	rio_writer_init(&w, 0);
	rio_put_u32(&w, PROTO_IO_NODES_MAX + 1);
	for (unsigned i = 0; i <= PROTO_IO_NODES_MAX; i++) {
		rio_put_str(&w, "n"), rio_put_u64(&w, 0), rio_put_u32(&w, 0), rio_put_u64(&w, 0);
		rio_put_u64(&w, 0), rio_put_u32(&w, 0), rio_put_u64(&w, 0), rio_put_str(&w, "");
	}
	assert_int_not_equal(proto_decode_reply(o, rio_writer_data(&w), w.len, &p), RIO_OK);
	rio_writer_free(&w);
	/* REDIRECT: off with a lease, on without one or past the maximum, on = 2 */
	struct { uint8_t on; uint32_t seconds; } badr[] = { { 0, 5 }, { 1, 0 }, { 1, 86401 }, { 2, 5 } };
	for (size_t i = 0; i < sizeof(badr) / sizeof(badr[0]); i++) {
		rio_writer_init(&w, 0);
		rio_put_str(&w, "node2"), rio_put_u8(&w, badr[i].on), rio_put_u32(&w, badr[i].seconds);
		if (proto_decode_request(proto_op(OP_REDIRECT), rio_writer_data(&w), w.len, &q) == RIO_OK)
			fail_msg("redirect request %zu decoded", i);
		rio_writer_free(&w);
	}
}

/* ---- server_request against a real volume ------------------------------ */

struct sfx {
	char path[PATH_MAX];
	char guid[37];
	struct volume *v;
	struct server *s;
	struct rio_writer rep;       /* the last reply's fields */
	uint32_t file, dir, link;    /* /f (regular), /d (directory), /sl (symlink) */
};

/* One request from node; returns the status; the reply is in f->rep. */
static int call_from(struct sfx *f, const char *node, uint16_t op, const uint8_t *p, size_t len)
{
	rio_writer_free(&f->rep);
	rio_writer_init(&f->rep, 0);
	/* A heap copy of exactly len bytes: an over-read hits a redzone. */
	uint8_t *copy = malloc(len ? len : 1);
	assert_non_null(copy);
	if (len)
		memcpy(copy, p, len);
	int rc = server_request(f->s, node, ADDR, op, copy, (uint32_t)len, &f->rep);
	free(copy);
	assert_true(rc >= 0 && rc < 4096);
	if (rc)   /* an error reply carries no fields */
		assert_int_equal(f->rep.len, 0);
	return rc;
}

/* ---- requests and replies through the protocol's table (fs/proto.h) ---- */

/* Sends op's request q from node; the status, the reply in f->rep. */
static int req_from(struct sfx *f, const char *node, uint16_t op, const struct proto_req *q)
{
	struct rio_writer w = encode(op, q);
	int rc = call_from(f, node, op, rio_writer_data(&w), w.len);
	rio_writer_free(&w);
	return rc;
}

static int req(struct sfx *f, uint16_t op, const struct proto_req *q)
{
	return req_from(f, NODE_A, op, q);
}

/* The last reply, decoded whole as op's reply (as fsops.c's r_* do). */
static void decode(struct sfx *f, uint16_t op, union proto_reply *p)
{
	assert_int_equal(proto_decode_reply(proto_op(op), rio_writer_data(&f->rep), f->rep.len, p),
			 RIO_OK);
}

static void reply_void(struct sfx *f)
{
	assert_int_equal(f->rep.len, 0);
}

/* op's request q; its attr reply into *a (when not NULL). */
static int req_attr(struct sfx *f, const char *node, uint16_t op, const struct proto_req *q,
		    struct meta_attr *a)
{
	union proto_reply p;
	int rc = req_from(f, node, op, q);
	if (rc == 0 && a) {
		decode(f, op, &p);
		*a = p.attr;
	}
	return rc;
}

/* op's request q; its u64 reply. */
static uint64_t req_u64(struct sfx *f, uint16_t op, const struct proto_req *q, int *rc)
{
	union proto_reply p = { .u64 = 0 };
	*rc = req(f, op, q);
	if (*rc == 0)
		decode(f, op, &p);
	return p.u64;
}

static int s_lookup(struct sfx *f, uint32_t parent, const char *name, struct meta_attr *a)
{
	return req_attr(f, NODE_A, OP_LOOKUP, &(struct proto_req){ .ino_name = { parent, name } }, a);
}

static int s_getattr(struct sfx *f, uint32_t ino, struct meta_attr *a)
{
	return req_attr(f, NODE_A, OP_GETATTR, &(struct proto_req){ .inode = { ino } }, a);
}

/* LOOKUP, UNLINK, RMDIR, REMOVEXATTR: an inode and a name. */
static int s_ino_name(struct sfx *f, uint16_t op, uint32_t ino, const char *name)
{
	return req(f, op, &(struct proto_req){ .ino_name = { ino, name } });
}

static int s_create(struct sfx *f, uint32_t parent, const char *name, uint32_t mode,
		    struct meta_attr *a)
{
	struct proto_req q = { .create = { parent, name, mode, 0, CRED } };
	return req_attr(f, NODE_A, OP_CREATE, &q, a);
}

static int s_setattr(struct sfx *f, uint32_t ino, const struct meta_setattr *sa, struct meta_attr *a)
{
	return req_attr(f, NODE_A, OP_SETATTR, &(struct proto_req){ .setattr = { ino, *sa } }, a);
}

/* The generation of ino, as a participant's kernel knows it (0 if none). */
static uint32_t gen_of(struct sfx *f, uint32_t ino)
{
	struct meta_attr a;
	return meta_getattr(f->v, ino, &a) == 0 ? a.generation : 0;
}

static int s_open(struct sfx *f, const char *node, uint32_t ino, int trunc, struct meta_attr *a)
{
	struct proto_req q = { .open = { ino, (uint8_t)trunc, gen_of(f, ino) } };
	return req_attr(f, node, OP_OPEN, &q, a);
}

static int s_release(struct sfx *f, const char *node, uint32_t ino)
{
	int rc = req_from(f, node, OP_RELEASE, &(struct proto_req){ .inode = { ino } });
	if (rc == 0)
		reply_void(f);
	return rc;
}

static int s_alloc(struct sfx *f, uint32_t ino, uint64_t lblk, uint64_t len)
{
	int rc = req(f, OP_ALLOC, &(struct proto_req){ .alloc = { ino, lblk, len } });
	if (rc == 0)
		reply_void(f);
	return rc;
}

static int s_commit(struct sfx *f, uint32_t ino, uint64_t lblk, uint64_t len, uint64_t size,
		    uint64_t *size_out)
{
	int rc;
	uint64_t s = req_u64(f, OP_COMMIT, &(struct proto_req){ .commit = { ino, lblk, len, size } }, &rc);
	if (rc == 0 && size_out)
		*size_out = s;
	return rc;
}

static int s_map(struct sfx *f, uint32_t ino, uint64_t lblk, struct meta_extent *e, uint64_t *size)
{
	int rc = req(f, OP_MAP, &(struct proto_req){ .map = { ino, lblk } });
	if (rc == 0) {
		union proto_reply p;
		decode(f, OP_MAP, &p);
		*e = p.map.e;
		assert_true(e->lblk <= lblk && lblk < e->lblk + e->len);
		if (size)
			*size = p.map.size;
	}
	return rc;
}

static int s_setxattr(struct sfx *f, uint32_t ino, const char *name, const void *val, size_t n,
		      uint32_t flags)
{
	struct proto_req q = { .setxattr = { ino, name, val, (uint32_t)n, flags } };
	int rc = req(f, OP_SETXATTR, &q);
	if (rc == 0)
		reply_void(f);
	return rc;
}

/* getxattr (name) or listxattr (NULL): *len is the value's length, the
 * bytes (when size > 0) go to buf. */
static int s_xattr_get(struct sfx *f, uint32_t ino, const char *name, uint32_t size, void *buf,
		       uint32_t *len)
{
	uint16_t op = name ? OP_GETXATTR : OP_LISTXATTR;
	int rc = req(f, op, &(struct proto_req){ .xattr_get = { ino, name, size } });
	if (rc == 0) {
		union proto_reply p = { .xattr = { .buf = buf, .size = size } };
		decode(f, op, &p);
		*len = p.xattr.len;
		assert_int_equal(p.xattr.n, size ? *len : 0);
		assert_true(p.xattr.n <= size);
	}
	return rc;
}

/* One READDIR page: names appended to *names (NUL-separated), count added. */
struct page { int more; uint32_t count; };

static int s_readdir(struct sfx *f, uint32_t ino, uint64_t start, struct page *pg,
		     char ***names, size_t *n)
{
	int rc = req(f, OP_READDIR, &(struct proto_req){ .readdir = { ino, start } });
	if (rc)
		return rc;
	union proto_reply p;
	decode(f, OP_READDIR, &p);
	for (size_t i = 0; i < p.dirents.n; i++) {
		const struct meta_dirent *e = &p.dirents.d[i];
		assert_true(e->ino >= 1 && e->ino <= UINT32_MAX);
		if (names) {
			*names = realloc(*names, (*n + 1) * sizeof(**names));
			assert_non_null(*names);
			(*names)[(*n)++] = strdup(e->name);
		}
	}
	pg->more = p.dirents.more;
	pg->count = (uint32_t)p.dirents.n;
	proto_free_reply(proto_op(OP_READDIR), &p);
	return 0;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* ---- fixture --------------------------------------------------------------- */

static void sfx_open(struct sfx *f)
{
	char err[512] = "";
	struct volume_opts o = { .lun = f->path };
	int rc = volume_open(&o, &f->v, err, sizeof(err));
	if (rc)
		fail_msg("volume_open(%s): %d %s", f->path, rc, err);
	assert_null(f->v->cluster);
	assert_int_equal(server_create(f->v, &f->s), 0);
}

static void sfx_close(struct sfx *f)
{
	server_destroy(f->s);
	f->s = NULL;
	volume_close(f->v);
	f->v = NULL;
}

static int setup(void **state)
{
	struct sfx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->path, sizeof(f->path), "%s/test_proto.XXXXXX", tmp_dir());
	int fd = mkstemp(f->path);
	assert_true(fd >= 0);
	close(fd);
	unlink(f->path);
	char err[512] = "";
	struct csvfs_format_opts o = { .lun = f->path, .create_size = 64 * MiB };
	int rc = csvfs_format(&o, f->guid, err, sizeof(err));
	if (rc)
		fail_msg("csvfs_format(%s): %d %s", f->path, rc, err);
	sfx_open(f);
	rio_writer_init(&f->rep, 0);

	/* /f, /d, /sl and an xattr on /f, all through the server. */
	struct meta_attr a;
	assert_int_equal(s_create(f, ROOT, "f", S_IFREG | 0644, &a), 0);
	f->file = (uint32_t)a.ino;
	assert_int_equal(s_create(f, ROOT, "d", S_IFDIR | 0755, &a), 0);
	f->dir = (uint32_t)a.ino;
	struct proto_req q = { .symlink = { ROOT, "sl", "f", CRED } };
	assert_int_equal(req_attr(f, NODE_A, OP_SYMLINK, &q, &a), 0);
	f->link = (uint32_t)a.ino;
	assert_int_equal(s_setxattr(f, f->file, "user.x", "xv", 2, 0), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct sfx *f = *state;
	if (!f)
		return 0;
	rio_writer_free(&f->rep);
	if (f->v)
		sfx_close(f);
	int ok = fsck_clean(f->path);
	if (ok)
		unlink(f->path);
	else
		fprintf(stderr, "image kept for inspection: %s\n", f->path);
	free(f);
	*state = NULL;
	return ok ? 0 : -1;
}

/* ---- what "nothing changed" means ---------------------------------------- */

struct fingerprint {
	struct meta_attr a[4];    /* root, /f, /d, /sl: everything but atime */
	uint64_t bfree, ffree;
	char names[1024];         /* the root directory's entries */
	char xattrs[256];         /* /f's xattr names */
};

static void fingerprint(struct sfx *f, struct fingerprint *fp)
{
	memset(fp, 0, sizeof(*fp));
	uint32_t inos[4] = { ROOT, f->file, f->dir, f->link };
	for (int i = 0; i < 4; i++) {
		int rc = s_getattr(f, inos[i], &fp->a[i]);
		if (rc == 0) {
			fp->a[i].atime.tv_sec = 0;
			fp->a[i].atime.tv_nsec = 0;
		} else {
			fp->a[i].ino = (uint64_t)rc;   /* gone: compare the error */
		}
	}
	union proto_reply p;
	assert_int_equal(req(f, OP_STATFS, &(struct proto_req){ 0 }), 0);
	decode(f, OP_STATFS, &p);
	fp->bfree = p.statfs.f_bfree;
	fp->ffree = p.statfs.f_ffree;
	char **names = NULL;
	size_t n = 0;
	struct page pg;
	assert_int_equal(s_readdir(f, ROOT, 0, &pg, &names, &n), 0);
	assert_int_equal(pg.more, 0);
	size_t o = 0;
	for (size_t i = 0; i < n && o < sizeof(fp->names); i++)
		o += (size_t)snprintf(fp->names + o, sizeof(fp->names) - o, "%s/", names[i]);
	free_names(names, n);
	uint32_t len = 0;
	if (s_xattr_get(f, f->file, NULL, sizeof(fp->xattrs) - 1, fp->xattrs, &len) != 0)
		snprintf(fp->xattrs, sizeof(fp->xattrs), "(error)");
}

static void assert_unchanged(struct sfx *f, const struct fingerprint *before, const char *what)
{
	struct fingerprint now;
	fingerprint(f, &now);
	if (memcmp(&now, before, sizeof(now)) != 0)
		fail_msg("%s changed the volume", what);
}

/* Checks that go on after a failure, so one run lists every problem. */
static int soft_failures;

static void expect_status(int got, int want, const char *what)
{
	if (got != want) {
		fprintf(stderr, "FAIL: %s: status %d (%s), expected %d (%s)\n", what, got,
			strerror(got), want, strerror(want));
		soft_failures++;
	}
}

static void expect_refused(int got, const char *what)
{
	if (got == 0) {
		fprintf(stderr, "FAIL: %s succeeded\n", what);
		soft_failures++;
	}
}

static void end_soft(const char *test)
{
	int n = soft_failures;
	soft_failures = 0;
	if (n)
		fail_msg("%s: %d check(s) failed (listed above)", test, n);
}

/* ---- functional tests ------------------------------------------------------- */

static void test_create_lookup_getattr(void **state)
{
	struct sfx *f = *state;
	struct meta_attr a, b;
	assert_int_equal(s_create(f, ROOT, "new", S_IFREG | 0666, &a), 0);
	assert_true(a.ino > 11);
	/* The kernel applied the umask before the request (the engine does not). */
	assert_int_equal(a.mode, S_IFREG | 0666);
	assert_int_equal(a.uid, 1000);
	assert_int_equal(a.gid, 100);
	assert_int_equal(a.nlink, 1);
	assert_int_equal(a.size, 0);
	assert_int_equal(s_lookup(f, ROOT, "new", &b), 0);
	assert_attr_equal(&a, &b);
	assert_int_equal(s_getattr(f, (uint32_t)a.ino, &b), 0);
	assert_int_equal(b.ino, a.ino);
	assert_int_equal(b.mode, a.mode);
	assert_int_equal(s_create(f, ROOT, "new", S_IFREG | 0644, NULL), EEXIST);
	assert_int_equal(s_lookup(f, ROOT, "absent", NULL), ENOENT);
	assert_int_equal(s_lookup(f, f->file, "x", NULL), ENOTDIR);
	/* A name of 255 bytes is a name; 256 is not (a protocol error). */
	char name[300];
	memset(name, 'n', sizeof(name));
	name[255] = 0;
	assert_int_equal(s_create(f, f->dir, name, S_IFREG | 0600, &a), 0);
	assert_int_equal(s_lookup(f, f->dir, name, &b), 0);
	assert_int_equal(b.ino, a.ino);
	name[255] = 'n';
	name[256] = 0;
	assert_int_equal(s_create(f, f->dir, name, S_IFREG | 0600, NULL), EPROTO);
	assert_int_equal(s_lookup(f, f->dir, name, NULL), EPROTO);
	/* A directory, then readlink and statfs. */
	assert_int_equal(s_create(f, f->dir, "sub", S_IFDIR | 0777, &a), 0);
	assert_true(S_ISDIR(a.mode));
	assert_int_equal(a.nlink, 2);
	union proto_reply p;
	assert_int_equal(req(f, OP_READLINK, &(struct proto_req){ .inode = { f->link } }), 0);
	decode(f, OP_READLINK, &p);
	assert_string_equal(p.target, "f");
	assert_int_equal(req(f, OP_STATFS, &(struct proto_req){ 0 }), 0);
	decode(f, OP_STATFS, &p);
	const struct statvfs st = p.statfs;
	assert_int_equal(st.f_bsize, 4096);
	assert_true(st.f_blocks > 0 && st.f_bfree <= st.f_blocks && st.f_ffree < st.f_files);
}

static void test_open_release(void **state)
{
	struct sfx *f = *state;
	struct meta_attr a;
	/* RELEASE without OPEN: EBADF, for either node. */
	assert_int_equal(s_release(f, NODE_A, f->file), EBADF);
	assert_int_equal(s_open(f, NODE_A, f->file, 0, &a), 0);
	assert_int_equal(a.ino, f->file);
	assert_true(S_ISREG(a.mode));
	/* Opens are per node: B cannot release A's. */
	assert_int_equal(s_release(f, NODE_B, f->file), EBADF);
	assert_int_equal(s_release(f, NODE_A, f->file), 0);
	assert_int_equal(s_release(f, NODE_A, f->file), EBADF);
	/* Two opens, two releases. */
	assert_int_equal(s_open(f, NODE_A, f->file, 0, NULL), 0);
	assert_int_equal(s_open(f, NODE_B, f->file, 0, NULL), 0);
	assert_int_equal(s_release(f, NODE_B, f->file), 0);
	assert_int_equal(s_release(f, NODE_A, f->file), 0);
	/* Open of a missing inode, truncate flag other than 0/1. */
	assert_int_not_equal(s_open(f, NODE_A, 60000, 0, NULL), 0);
	assert_int_equal(s_open(f, NODE_A, f->file, 2, NULL), EPROTO);
	assert_int_equal(s_release(f, NODE_A, f->file), EBADF);
	/* An unlinked file lives until its last (remote) close. */
	assert_int_equal(s_create(f, ROOT, "tmp", S_IFREG | 0644, &a), 0);
	uint32_t ino = (uint32_t)a.ino;
	assert_int_equal(s_open(f, NODE_A, ino, 0, NULL), 0);
	assert_int_equal(s_ino_name(f, OP_UNLINK, ROOT, "tmp"), 0);
	assert_int_equal(s_getattr(f, ino, &a), 0);
	assert_int_equal(a.nlink, 0);
	assert_int_equal(s_release(f, NODE_A, ino), 0);
	assert_int_not_equal(s_getattr(f, ino, NULL), 0);
	/* O_TRUNC through OPEN. */
	assert_int_equal(s_alloc(f, f->file, 0, 2), 0);
	assert_int_equal(s_commit(f, f->file, 0, 2, 8192, NULL), 0);
	assert_int_equal(s_open(f, NODE_A, f->file, 1, &a), 0);
	assert_int_equal(a.size, 0);
	assert_int_equal(a.blocks, 0);
	assert_int_equal(s_release(f, NODE_A, f->file), 0);
	/* CREATE_OPEN: a regular file, created and opened for the node. */
	assert_int_equal(req(f, OP_CREATE_OPEN, &(struct proto_req){ .create = { ROOT, "co", S_IFREG | 0600, 0, CRED } }), 0);
	assert_int_equal(s_lookup(f, ROOT, "co", &a), 0);
	assert_int_equal(s_release(f, NODE_B, (uint32_t)a.ino), EBADF);
	assert_int_equal(s_release(f, NODE_A, (uint32_t)a.ino), 0);
	assert_int_equal(s_release(f, NODE_A, (uint32_t)a.ino), EBADF);
	assert_int_equal(req(f, OP_CREATE_OPEN, &(struct proto_req){ .create = { ROOT, "co", S_IFREG | 0600, 0, CRED } }), EEXIST);
	assert_int_equal(req(f, OP_CREATE_OPEN, &(struct proto_req){ .create = { ROOT, "codir", S_IFDIR | 0700, 0, CRED } }), EPROTO);
	assert_int_equal(s_lookup(f, ROOT, "codir", NULL), ENOENT);
}

static void test_alloc_commit_map(void **state)
{
	struct sfx *f = *state;
	struct meta_extent e;
	uint64_t size = 1;
	assert_int_equal(s_open(f, NODE_A, f->file, 0, NULL), 0);
	assert_int_equal(s_map(f, f->file, 0, &e, &size), 0);
	assert_int_equal(e.state, EXTENT_HOLE);
	assert_int_equal(size, 0);
	/* Committing a hole: the participant must map again. */
	assert_int_equal(s_commit(f, f->file, 0, 4, 16384, NULL), ESTALE);
	assert_int_equal(s_getattr(f, f->file, NULL), 0);
	struct meta_attr a;
	assert_int_equal(s_getattr(f, f->file, &a), 0);
	assert_int_equal(a.size, 0);
	/* Allocate four blocks: unwritten; commit them: written, size grows. */
	assert_int_equal(s_alloc(f, f->file, 0, 4), 0);
	assert_int_equal(s_map(f, f->file, 0, &e, NULL), 0);
	assert_int_equal(e.state, EXTENT_UNWRITTEN);
	assert_int_equal(e.lblk, 0);
	assert_true(e.len >= 4);
	uint64_t pblk = e.pblk;
	assert_true(pblk > 0);
	/* Partly allocated range: still stale. */
	assert_int_equal(s_commit(f, f->file, 2, 4, 6 * 4096, NULL), ESTALE);
	assert_int_equal(s_commit(f, f->file, 0, 4, 16384, &size), 0);
	assert_int_equal(size, 16384);
	assert_int_equal(s_map(f, f->file, 3, &e, &size), 0);
	assert_int_equal(e.state, EXTENT_WRITTEN);
	assert_int_equal(e.pblk + (3 - e.lblk), pblk + 3);
	assert_int_equal(size, 16384);
	assert_int_equal(s_map(f, f->file, 4, &e, NULL), 0);
	assert_int_equal(e.state, EXTENT_HOLE);
	/* A commit of no blocks only moves the size (never down). */
	assert_int_equal(s_commit(f, f->file, 0, 0, 10000, &size), 0);
	assert_int_equal(size, 16384);
	assert_int_equal(s_getattr(f, f->file, &a), 0);
	assert_int_equal(a.size, 16384);
	assert_int_equal(a.blocks, 4 * 8);
	/* Written blocks past the size the commit leaves: e2fsck would say
	 * "i_size is 16384, should be 32768". */
	assert_int_equal(s_alloc(f, f->file, 4, 4), 0);
	int rc = s_commit(f, f->file, 4, 4, 16384 + 5, NULL);
	if (rc != 0)
		assert_int_equal(s_commit(f, f->file, 4, 4, 8 * 4096, NULL), 0);
	else
		fprintf(stderr, "FAIL: COMMIT of blocks 4-7 with size 16389 succeeded\n");
	assert_int_equal(rc == 0, 0);
	/* Allocation far out, then commit part of it. */
	assert_int_equal(s_alloc(f, f->file, 1000, 8), 0);
	assert_int_equal(s_commit(f, f->file, 1002, 2, 1004 * 4096, &size), 0);
	assert_int_equal(size, 1004 * 4096);
	assert_int_equal(s_map(f, f->file, 1001, &e, NULL), 0);
	assert_int_equal(e.state, EXTENT_UNWRITTEN);
	assert_int_equal(s_map(f, f->file, 1003, &e, NULL), 0);
	assert_int_equal(e.state, EXTENT_WRITTEN);
	/* Bounds: len 0, len over 1 Mi blocks, past the ext4 block limit. */
	assert_int_equal(s_alloc(f, f->file, 0, 0), EPROTO);
	assert_int_equal(s_alloc(f, f->file, 0, (1u << 20) + 1), EPROTO);
	assert_int_equal(s_alloc(f, f->file, (1ull << 32) - 1, 2), EPROTO);
	assert_int_equal(s_map(f, f->file, 1ull << 32, &e, NULL), EPROTO);
	assert_int_equal(s_commit(f, f->file, (1ull << 32) - 1, 2, 0, NULL), EPROTO);
	assert_int_equal(s_commit(f, f->file, 0, 0, (1ull << 44) + 1, NULL), EPROTO);
	/* An inode that does not exist. */
	assert_int_not_equal(s_alloc(f, 60000, 0, 1), 0);
	assert_int_not_equal(s_map(f, 60000, 0, &e, NULL), 0);
	/* FSYNC, TOUCH, SEEK, FALLOCATE on the open file. */
	assert_int_equal(req(f, OP_FSYNC, &(struct proto_req){ .fsync = { f->file, 0 } }), 0);
	reply_void(f);
	assert_int_equal(req(f, OP_TOUCH, &(struct proto_req){ .inode = { f->file } }), 0);
	reply_void(f);
	struct proto_req q = { .seek = { f->file, 8 * 4096, SEEK_DATA } };
	assert_int_equal(req_u64(f, OP_SEEK, &q, &rc), 1002 * 4096);
	assert_int_equal(rc, 0);
	q = (struct proto_req){ .fallocate = { f->file, 0, 2000 * 4096ull, 4096 } };
	assert_int_equal(req_u64(f, OP_FALLOCATE, &q, &rc), 2001 * 4096);
	assert_int_equal(rc, 0);
	q = (struct proto_req){ .fallocate = { f->file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096 } };
	assert_int_equal(req_u64(f, OP_FALLOCATE, &q, &rc), 2001 * 4096);
	assert_int_equal(rc, 0);
	assert_int_equal(s_map(f, f->file, 0, &e, NULL), 0);
	assert_int_equal(e.state, EXTENT_HOLE);
	assert_int_equal(req(f, OP_SYNCFS, &(struct proto_req){ 0 }), 0);
	reply_void(f);
	assert_int_equal(s_release(f, NODE_A, f->file), 0);
}

static void test_setattr_size(void **state)
{
	struct sfx *f = *state;
	struct meta_attr a;
	assert_int_equal(s_alloc(f, f->file, 0, 8), 0);
	assert_int_equal(s_commit(f, f->file, 0, 8, 8 * 4096, NULL), 0);
	struct meta_setattr sa = { .valid = META_SET_SIZE, .size = 8192 + 100 };
	assert_int_equal(s_setattr(f, f->file, &sa, &a), 0);
	assert_int_equal(a.size, 8292);
	assert_int_equal(a.blocks, 3 * 8);
	struct meta_extent e;
	assert_int_equal(s_map(f, f->file, 3, &e, NULL), 0);
	assert_int_equal(e.state, EXTENT_HOLE);
	assert_int_equal(s_getattr(f, f->file, &a), 0);
	assert_int_equal(a.size, 8292);
	sa.size = 1ull << 30;   /* grow: sparse */
	assert_int_equal(s_setattr(f, f->file, &sa, &a), 0);
	assert_int_equal(a.size, 1ull << 30);
	assert_int_equal(a.blocks, 3 * 8);
	sa.size = 0;
	assert_int_equal(s_setattr(f, f->file, &sa, &a), 0);
	assert_int_equal(a.blocks, 0);
	/* Size of a directory; mode, owner, times. */
	assert_int_equal(s_setattr(f, f->dir, &sa, NULL), EISDIR);
	struct meta_setattr m = {
		.valid = META_SET_MODE | META_SET_UID | META_SET_GID | META_SET_MTIME | META_SET_ATIME,
		.mode = 0600, .uid = 70000, .gid = 80000, .atime = { 1000, 1 }, .mtime = { 2000, 999999999 },
	};
	assert_int_equal(s_setattr(f, f->file, &m, &a), 0);
	assert_int_equal(a.mode, S_IFREG | 0600);
	assert_int_equal(a.uid, 70000);
	assert_int_equal(a.gid, 80000);
	assert_int_equal(a.mtime.tv_sec, 2000);
	assert_int_equal(a.mtime.tv_nsec, 999999999);
	assert_int_equal(a.atime.tv_sec, 1000);
}

static void test_readdir_paging(void **state)
{
	struct sfx *f = *state;
	/* 4500 entries of 240-byte names, more than one 1 MiB page: hard links
	 * to /f (the 64 MiB volume has 4096 inodes). */
	enum { N = 4500 };
	char name[PROTO_NAME_MAX];
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "%06d-%0*d", i, 233, 0);
		struct proto_req q = { .link = { f->file, f->dir, name } };
		assert_int_equal(req(f, OP_LINK, &q), 0);
	}
	char **names = NULL;
	size_t n = 0;
	struct page pg = { .more = 1 };
	unsigned pages = 0;
	while (pg.more) {
		assert_int_equal(s_readdir(f, f->dir, n, &pg, &names, &n), 0);
		assert_true(pg.count > 0);
		assert_true(++pages < 10);
	}
	assert_true(pages >= 2);
	assert_int_equal(n, N + 2);   /* with . and .. */
	char *seen = calloc(N, 1);
	assert_non_null(seen);
	int dots = 0;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(names[i], ".") == 0 || strcmp(names[i], "..") == 0) {
			dots++;
			continue;
		}
		assert_int_equal(strlen(names[i]), 240);
		int k = atoi(names[i]);
		assert_true(k >= 0 && k < N);
		assert_int_equal(seen[k], 0);
		seen[k] = 1;
	}
	assert_int_equal(dots, 2);
	free(seen);
	/* Past the end: an empty last page. */
	assert_int_equal(s_readdir(f, f->dir, n, &pg, NULL, NULL), 0);
	assert_int_equal(pg.count, 0);
	assert_int_equal(pg.more, 0);
	assert_int_equal(s_readdir(f, f->dir, UINT64_MAX, &pg, NULL, NULL), 0);
	assert_int_equal(pg.count, 0);
	assert_int_equal(pg.more, 0);
	assert_int_equal(s_readdir(f, f->dir, n - 1, &pg, NULL, NULL), 0);
	assert_int_equal(pg.count, 1);
	assert_int_equal(pg.more, 0);
	free_names(names, n);
	/* Not a directory. */
	assert_int_equal(s_readdir(f, f->file, 0, &pg, NULL, NULL), ENOTDIR);
}

/* READDIRPLUS: every entry with the attributes GETATTR gives. */
static void test_readdirplus_attrs(void **state)
{
	struct sfx *f = *state;
	struct meta_attr made;
	assert_int_equal(s_create(f, f->dir, "p1", S_IFREG | 0640, &made), 0);
	assert_int_equal(req(f, OP_READDIRPLUS, &(struct proto_req){ .readdir = { f->dir, 0 } }), 0);
	union proto_reply p;
	decode(f, OP_READDIRPLUS, &p);
	uint32_t seen = 0;
	assert_int_equal(p.dirents.more, 0);
	assert_true(p.dirents.n >= 3);   /* ".", "..", "p1" */
	for (size_t i = 0; i < p.dirents.n; i++) {
		const struct meta_dirent *e = &p.dirents.d[i];
		const struct meta_attr *a = &e->attr;
		struct meta_attr g;
		assert_int_equal(e->has_attr, 1);
		assert_int_equal(a->ino, e->ino);
		assert_int_equal(s_getattr(f, (uint32_t)e->ino, &g), 0);
		assert_int_equal(a->mode, g.mode);
		assert_int_equal(a->size, g.size);
		if (strcmp(e->name, "p1") == 0) {
			assert_int_equal(a->ino, made.ino);
			assert_int_equal(a->mode, S_IFREG | 0640);
			seen++;
		}
	}
	proto_free_reply(proto_op(OP_READDIRPLUS), &p);
	assert_int_equal(seen, 1);
}

static void test_xattrs(void **state)
{
	struct sfx *f = *state;
	char buf[PROTO_XATTR_MAX];
	uint32_t len = 0;
	assert_int_equal(s_setxattr(f, f->file, "user.test", "hello", 5, 0), 0);
	assert_int_equal(s_xattr_get(f, f->file, "user.test", 0, buf, &len), 0);
	assert_int_equal(len, 5);
	assert_int_equal(s_xattr_get(f, f->file, "user.test", 64, buf, &len), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(s_xattr_get(f, f->file, "user.test", 2, buf, &len), ERANGE);
	assert_int_equal(s_xattr_get(f, f->file, "user.none", 64, buf, &len), ENODATA);
	/* create / replace flags */
	assert_int_equal(s_setxattr(f, f->file, "user.test", "x", 1, META_XATTR_CREATE), EEXIST);
	assert_int_equal(s_setxattr(f, f->file, "user.new", "x", 1, META_XATTR_REPLACE), ENODATA);
	assert_int_equal(s_setxattr(f, f->file, "user.test", "bye", 3, META_XATTR_REPLACE), 0);
	assert_int_equal(s_xattr_get(f, f->file, "user.test", 64, buf, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(buf, "bye", 3);
	assert_int_equal(s_setxattr(f, f->file, "user.test", "x", 1, 4), EPROTO);
	/* A value with NULs and an empty value. */
	assert_int_equal(s_setxattr(f, f->file, "user.bin", "\0a\0", 3, 0), 0);
	assert_int_equal(s_xattr_get(f, f->file, "user.bin", 64, buf, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(buf, "\0a\0", 3);
	assert_int_equal(s_setxattr(f, f->file, "user.empty", "", 0, 0), 0);
	assert_int_equal(s_xattr_get(f, f->file, "user.empty", 64, buf, &len), 0);
	assert_int_equal(len, 0);
	/* list */
	assert_int_equal(s_xattr_get(f, f->file, NULL, 0, buf, &len), 0);
	uint32_t need = len;
	assert_true(need > 0);
	assert_int_equal(s_xattr_get(f, f->file, NULL, sizeof(buf), buf, &len), 0);
	assert_int_equal(len, need);
	assert_non_null(memmem(buf, len, "user.test", 10));
	assert_non_null(memmem(buf, len, "user.x", 7));
	/* A buffer over the protocol's limit is a protocol error. */
	assert_int_equal(s_xattr_get(f, f->file, "user.test", PROTO_XATTR_MAX + 1, buf, &len), EPROTO);
	/* Names outside the namespaces ext4 knows: ext4 answers EOPNOTSUPP, and
	 * libext2fs would store them in a form e2fsck calls a corrupt block. */
	int rc1 = s_setxattr(f, ROOT, "foo.k", "value", 5, 0);
	int rc2 = s_setxattr(f, ROOT, "user.k", "value", 5, 0);
	int rc3 = s_setxattr(f, ROOT, "bar.k", "value", 5, 0);
	assert_int_equal(rc2, 0);
	expect_status(rc1, EOPNOTSUPP, "SETXATTR of \"foo.k\"");
	expect_status(rc3, EOPNOTSUPP, "SETXATTR of \"bar.k\"");
	/* remove */
	assert_int_equal(s_ino_name(f, OP_REMOVEXATTR, f->file, "user.test"), 0);
	assert_int_equal(s_xattr_get(f, f->file, "user.test", 64, buf, &len), ENODATA);
	end_soft(__func__);
}

static void test_namespace_ops(void **state)
{
	struct sfx *f = *state;
	struct meta_attr a;
	struct proto_req q = { .link = { f->file, f->dir, "hard" } };
	assert_int_equal(req_attr(f, NODE_A, OP_LINK, &q, &a), 0);
	assert_int_equal(a.nlink, 2);
	q = (struct proto_req){ .rename = { f->dir, "hard", ROOT, "moved", 0, NOCRED } };
	assert_int_equal(req(f, OP_RENAME, &q), 0);
	reply_void(f);
	assert_int_equal(s_lookup(f, ROOT, "moved", &a), 0);
	assert_int_equal(a.ino, f->file);
	q = (struct proto_req){ .rename = { ROOT, "moved", ROOT, "f", META_RENAME_NOREPLACE, NOCRED } };
	assert_int_equal(req(f, OP_RENAME, &q), EEXIST);
	/* WHITEOUT without the cred that must follow it. */
	q.rename.flags = 0;
	struct rio_writer w = encode(OP_RENAME, &q);
	uint8_t bytes[64];
	assert_true(w.len <= sizeof(bytes));
	memcpy(bytes, rio_writer_data(&w), w.len);
	bytes[w.len - 1] = META_RENAME_WHITEOUT;
	assert_int_equal(call_from(f, NODE_A, OP_RENAME, bytes, w.len), EPROTO);
	rio_writer_free(&w);
	assert_int_equal(s_ino_name(f, OP_UNLINK, ROOT, "moved"), 0);
	assert_int_equal(s_ino_name(f, OP_UNLINK, ROOT, "d"), EISDIR);
	assert_int_equal(s_ino_name(f, OP_RMDIR, ROOT, "f"), ENOTDIR);
	assert_int_equal(s_create(f, f->dir, "x", S_IFREG | 0644, NULL), 0);
	assert_int_equal(s_ino_name(f, OP_RMDIR, ROOT, "d"), ENOTEMPTY);
	assert_int_equal(s_ino_name(f, OP_UNLINK, f->dir, "x"), 0);
	assert_int_equal(s_ino_name(f, OP_RMDIR, ROOT, "d"), 0);
	assert_int_equal(s_lookup(f, ROOT, "d", NULL), ENOENT);
	f->dir = ROOT;   /* the fingerprint goes on without it */
}

static void test_unknown_ops(void **state)
{
	struct sfx *f = *state;
	struct fingerprint before;
	fingerprint(f, &before);
	uint8_t p[8] = { 0, 0, 0, 2, 0, 0, 0, 0 };
	uint16_t ops[] = { 0, OP_MAX_, 100, 0x7fff, 0xffff };
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		assert_int_equal(call_from(f, NODE_A, ops[i], NULL, 0), EOPNOTSUPP);
		assert_int_equal(call_from(f, NODE_A, ops[i], p, sizeof(p)), EOPNOTSUPP);
	}
	assert_unchanged(f, &before, "an unknown op");
}

/* ---- malformed requests of every op --------------------------------------- */

/* Where the fields a mutation targets are in each op's valid request. */
struct layout {
	uint16_t op;
	int ino_off[2];   /* u32 inode fields, -1 = none */
	int name_off[2];  /* str fields (u16 length), -1 = none */
};

/* A valid request of op, aimed at the fixture's objects. */
static struct proto_req valid_req(struct sfx *f, uint16_t op)
{
	struct meta_setattr sa = { .valid = META_SET_MODE, .mode = 0640 };
	switch (op) {
	case OP_LOOKUP: return (struct proto_req){ .ino_name = { ROOT, "f" } };
	case OP_GETATTR: return (struct proto_req){ .inode = { f->file } };
	case OP_SETATTR: return (struct proto_req){ .setattr = { f->file, sa } };
	case OP_CREATE: return (struct proto_req){ .create = { ROOT, "newfile", S_IFREG | 0644, 0, CRED } };
	case OP_CREATE_OPEN: return (struct proto_req){ .create = { ROOT, "newopen", S_IFREG | 0644, 0, CRED } };
	case OP_SYMLINK: return (struct proto_req){ .symlink = { ROOT, "newlink", "target", CRED } };
	case OP_LINK: return (struct proto_req){ .link = { f->file, f->dir, "hl" } };
	case OP_UNLINK: return (struct proto_req){ .ino_name = { ROOT, "sl" } };
	case OP_RMDIR: return (struct proto_req){ .ino_name = { ROOT, "d" } };
	case OP_RENAME: return (struct proto_req){ .rename = { ROOT, "f", f->dir, "g", 0, NOCRED } };
	case OP_READLINK: return (struct proto_req){ .inode = { f->link } };
	case OP_READDIR: case OP_READDIRPLUS: return (struct proto_req){ .readdir = { ROOT, 0 } };
	case OP_STATFS: case OP_SYNCFS: return (struct proto_req){ 0 };
	case OP_GETXATTR: return (struct proto_req){ .xattr_get = { f->file, "user.x", 64 } };
	case OP_LISTXATTR: return (struct proto_req){ .xattr_get = { f->file, NULL, 64 } };
	case OP_SETXATTR: return (struct proto_req){ .setxattr = { f->file, "user.y", "v", 1, 0 } };
	case OP_REMOVEXATTR: return (struct proto_req){ .ino_name = { f->file, "user.x" } };
	case OP_OPEN: return (struct proto_req){ .open = { f->file, 1, gen_of(f, f->file) } };
	case OP_RELEASE: case OP_TOUCH: return (struct proto_req){ .inode = { f->file } };
	case OP_FSYNC: return (struct proto_req){ .fsync = { f->file, 1 } };
	case OP_MAP: return (struct proto_req){ .map = { f->file, 0 } };
	case OP_ALLOC: return (struct proto_req){ .alloc = { f->file, 0, 2 } };
	case OP_COMMIT: return (struct proto_req){ .commit = { f->file, 0, 2, 8192 } };
	case OP_FALLOCATE: return (struct proto_req){ .fallocate = { f->file, 0, 0, 4096 } };
	case OP_SEEK: return (struct proto_req){ .seek = { f->file, 0, SEEK_HOLE } };
	default: fail_msg("no valid request for op %u", op);
	}
	return (struct proto_req){ 0 };
}

static void valid_request(struct sfx *f, uint16_t op, struct rio_writer *w)
{
	struct proto_req q = valid_req(f, op);
	*w = encode(op, &q);
}

/* OP_MOVE, OP_MAINTENANCE, OP_GROW and OP_SNAPSHOT(_ABORT) are left out: they need a cluster (see the
 * report on h_move; the snapshot ops never reach server_request). The
 * order keeps each valid request meaningful after the ones before it. */
static const struct layout LAYOUTS[] = {
	{ OP_LOOKUP, { 0, -1 }, { 4, -1 } },
	{ OP_GETATTR, { 0, -1 }, { -1, -1 } },
	{ OP_SETATTR, { 0, -1 }, { -1, -1 } },
	{ OP_CREATE, { 0, -1 }, { 4, -1 } },
	{ OP_CREATE_OPEN, { 0, -1 }, { 4, -1 } },
	{ OP_SYMLINK, { 0, -1 }, { 4, 4 + 2 + 7 } },
	{ OP_LINK, { 0, 4 }, { 8, -1 } },
	{ OP_READLINK, { 0, -1 }, { -1, -1 } },
	{ OP_READDIR, { 0, -1 }, { -1, -1 } },
	{ OP_READDIRPLUS, { 0, -1 }, { -1, -1 } },
	{ OP_STATFS, { -1, -1 }, { -1, -1 } },
	{ OP_GETXATTR, { 0, -1 }, { 4, -1 } },
	{ OP_LISTXATTR, { 0, -1 }, { -1, -1 } },
	{ OP_SETXATTR, { 0, -1 }, { 4, -1 } },
	{ OP_REMOVEXATTR, { 0, -1 }, { 4, -1 } },
	{ OP_OPEN, { 0, -1 }, { -1, -1 } },
	{ OP_FSYNC, { 0, -1 }, { -1, -1 } },
	{ OP_MAP, { 0, -1 }, { -1, -1 } },
	{ OP_ALLOC, { 0, -1 }, { -1, -1 } },
	{ OP_COMMIT, { 0, -1 }, { -1, -1 } },
	{ OP_TOUCH, { 0, -1 }, { -1, -1 } },
	{ OP_FALLOCATE, { 0, -1 }, { -1, -1 } },
	{ OP_SEEK, { 0, -1 }, { -1, -1 } },
	{ OP_SYNCFS, { -1, -1 }, { -1, -1 } },
	{ OP_RELEASE, { 0, -1 }, { -1, -1 } },
	{ OP_UNLINK, { 0, -1 }, { 4, -1 } },
	{ OP_RENAME, { 0, 4 + 2 + 1 }, { 4, 4 + 2 + 1 + 4 } },
	{ OP_RMDIR, { 0, -1 }, { 4, -1 } },
};

static void expect_eproto(struct sfx *f, uint16_t op, const uint8_t *p, size_t len,
			  const char *what)
{
	int rc = call_from(f, NODE_A, op, p, len);
	if (rc != EPROTO)
		fail_msg("%s %s (%zu bytes): status %d, not EPROTO", proto_op_name(op), what, len, rc);
}

static void test_malformed_every_op(void **state)
{
	struct sfx *f = *state;
	for (size_t i = 0; i < sizeof(LAYOUTS) / sizeof(LAYOUTS[0]); i++) {
		const struct layout *l = &LAYOUTS[i];
		struct rio_writer w;
		valid_request(f, l->op, &w);
		size_t len = w.len;
		uint8_t *p = malloc(len + 8);
		assert_non_null(p);
		if (len)
			memcpy(p, rio_writer_data(&w), len);
		rio_writer_free(&w);
		struct fingerprint before;
		fingerprint(f, &before);

		/* Truncated at every length, one or several trailing bytes. */
		for (size_t n = 0; n < len; n++)
			expect_eproto(f, l->op, p, n, "truncated");
		memset(p + len, 0, 8);
		expect_eproto(f, l->op, p, len + 1, "with a trailing byte");
		expect_eproto(f, l->op, p, len + 8, "with trailing bytes");
		/* ino 0 in each inode field. */
		for (int k = 0; k < 2; k++) {
			int o = l->ino_off[k];
			if (o < 0)
				continue;
			uint8_t save[4];
			memcpy(save, p + o, 4);
			memset(p + o, 0, 4);
			expect_eproto(f, l->op, p, len, "with ino 0");
			memcpy(p + o, save, 4);
		}
		/* Each name: a length past the payload, a NUL inside, too long. */
		for (int k = 0; k < 2; k++) {
			int o = l->name_off[k];
			if (o < 0)
				continue;
			uint16_t nlen = (uint16_t)(p[o] << 8 | p[o + 1]);
			assert_true(nlen > 0 && (size_t)o + 2 + nlen <= len);
			uint8_t save[2] = { p[o], p[o + 1] };
			p[o] = 0xff;
			p[o + 1] = 0xff;
			expect_eproto(f, l->op, p, len, "with a name longer than the payload");
			uint16_t over = (uint16_t)(len - (size_t)o - 2 + 1);
			p[o] = (uint8_t)(over >> 8);
			p[o + 1] = (uint8_t)over;
			expect_eproto(f, l->op, p, len, "with a name one byte past the payload");
			p[o] = save[0];
			p[o + 1] = save[1];
			uint8_t c = p[o + 2];
			p[o + 2] = 0;
			expect_eproto(f, l->op, p, len, "with a NUL in a name");
			p[o + 2] = c;
			/* The same request with this name 256 bytes long. */
			size_t big = len - nlen + 256;
			uint8_t *q = malloc(big);
			assert_non_null(q);
			memcpy(q, p, (size_t)o);
			q[o] = 1;
			q[o + 1] = 0;
			memset(q + o + 2, 'a', 256);
			memcpy(q + o + 2 + 256, p + o + 2 + nlen, len - (size_t)o - 2 - nlen);
			if (l->op != OP_SYMLINK || k == 0)
				expect_eproto(f, l->op, q, big, "with a 256-byte name");
			free(q);
		}
		assert_unchanged(f, &before, proto_op_name(l->op));

		/* The valid request itself decodes (whatever the engine says). */
		int rc = call_from(f, NODE_A, l->op, p, len);
		if (rc == EPROTO)
			fail_msg("the valid %s request was refused as malformed", proto_op_name(l->op));
		free(p);
	}
}

/* Values that decode as fields but are out of range for the op. */
static void test_out_of_range_values(void **state)
{
	struct sfx *f = *state;
	struct fingerprint before;
	assert_int_equal(s_open(f, NODE_A, f->file, 0, NULL), 0);
	fingerprint(f, &before);
	struct proto_req q;
	char what[128];

	/* setattr: unknown valid bits; nanoseconds >= 1e9 in each time. */
	struct meta_setattr sa = { .valid = META_SET_MODE | (1u << 9), .mode = 0 };
	expect_status(s_setattr(f, f->file, &sa, NULL), EPROTO, "SETATTR with valid bit 9");
	sa.valid = 0x80000000u | META_SET_MODE;
	expect_status(s_setattr(f, f->file, &sa, NULL), EPROTO, "SETATTR with valid bit 31");
	struct meta_setattr t = { .valid = META_SET_ATIME | META_SET_MTIME | META_SET_CTIME };
	t.atime.tv_sec = t.mtime.tv_sec = t.ctime.tv_sec = 5;
	struct timespec *ts[] = { &t.atime, &t.mtime, &t.ctime };
	for (int i = 0; i < 3; i++) {
		ts[i]->tv_nsec = 1000000000;
		snprintf(what, sizeof(what), "SETATTR with %s nsec = 1e9",
			 i == 0 ? "atime" : i == 1 ? "mtime" : "ctime");
		expect_status(s_setattr(f, f->file, &t, NULL), EPROTO, what);
		ts[i]->tv_nsec = 0;
	}
	/* create/symlink: umask over 0777. */
	q = (struct proto_req){ .create = { ROOT, "badumask", S_IFREG | 0644, 0, { 0, 0, 01000 } } };
	expect_status(req(f, OP_CREATE, &q), EPROTO, "CREATE with umask 01000");
	q = (struct proto_req){ .symlink = { ROOT, "badumask2", "t", { 0, 0, 0xffffffffu } } };
	expect_status(req(f, OP_SYMLINK, &q), EPROTO, "SYMLINK with umask 0xffffffff");
	/* alloc/commit ranges that wrap past 2^64 and land back below 2^32. */
	q = (struct proto_req){ .alloc = { f->file, UINT64_MAX, 2 } };
	expect_status(req(f, OP_ALLOC, &q), EPROTO, "ALLOC lblk 2^64-1 len 2 (wraps)");
	q = (struct proto_req){ .commit = { f->file, UINT64_MAX, 2, 0 } };
	expect_status(req(f, OP_COMMIT, &q), EPROTO, "COMMIT lblk 2^64-1 len 2 (wraps)");
	q = (struct proto_req){ .commit = { f->file, 1, UINT64_MAX, 0 } };
	expect_status(req(f, OP_COMMIT, &q), EPROTO, "COMMIT lblk 1 len 2^64-1 (wraps)");
	/* rename flags, setxattr flags, getxattr size. */
	q = (struct proto_req){ .rename = { ROOT, "f", ROOT, "g", 0x100, NOCRED } };
	expect_status(req(f, OP_RENAME, &q), EPROTO, "RENAME with flag 0x100");
	expect_status(s_setxattr(f, f->file, "user.z", "v", 1, 8), EPROTO, "SETXATTR with flag 8");
	uint32_t len;
	char buf[8];
	expect_status(s_xattr_get(f, f->file, NULL, UINT32_MAX, buf, &len), EPROTO,
		      "LISTXATTR of size 2^32-1");
	/* A symlink target longer than a path. */
	char *target = malloc(PROTO_PATH_MAX + 1);
	assert_non_null(target);
	memset(target, 't', PROTO_PATH_MAX);
	target[PROTO_PATH_MAX] = 0;
	q = (struct proto_req){ .symlink = { ROOT, "longlink", target, CRED } };
	expect_status(req(f, OP_SYMLINK, &q), EPROTO, "SYMLINK to a 4097-byte target");
	free(target);
	/* An xattr value over 64 KiB. */
	char *big = calloc(1, PROTO_XATTR_MAX + 1);
	assert_non_null(big);
	expect_status(s_setxattr(f, f->file, "user.big", big, PROTO_XATTR_MAX + 1, 0), EPROTO,
		      "SETXATTR of 64 KiB + 1");
	free(big);
	/* SEEK only knows SEEK_DATA and SEEK_HOLE. */
	int rc = req(f, OP_SEEK, &(struct proto_req){ .seek = { f->file, 0, 77 } });
	if (rc != EPROTO && rc != EINVAL && rc != ENXIO) {
		fprintf(stderr, "FAIL: SEEK with whence 77: status %d\n", rc);
		soft_failures++;
	}
	struct fingerprint now;
	fingerprint(f, &now);
	if (memcmp(&now, &before, sizeof(now)) != 0) {
		fprintf(stderr, "FAIL: an out-of-range request changed the volume\n");
		soft_failures++;
	}
	assert_int_equal(s_release(f, NODE_A, f->file), 0);
	end_soft(__func__);
}

/* Requests the wire allows but that would write outside a regular file's
 * data or into the filesystem's own (reserved) inodes. Every one must be
 * refused; what e2fsck says after teardown is the oracle. */
static void test_data_ops_on_other_inodes(void **state)
{
	struct sfx *f = *state;
	char what[128];
	/* A directory or a symlink has no data a participant may write. */
	uint32_t targets[] = { ROOT, f->dir, f->link };
	const char *names[] = { "the root directory", "directory /d", "symlink /sl" };
	for (size_t i = 0; i < 3; i++) {
		snprintf(what, sizeof(what), "ALLOC of block 0 of %s", names[i]);
		expect_refused(s_alloc(f, targets[i], 0, 1), what);
		snprintf(what, sizeof(what), "COMMIT of size 2^40 to %s", names[i]);
		expect_refused(s_commit(f, targets[i], 0, 0, 1ull << 40, NULL), what);
		snprintf(what, sizeof(what), "FALLOCATE on %s", names[i]);
		struct proto_req q = { .fallocate = { targets[i], 0, 1ull << 30, 4096 } };
		expect_refused(req(f, OP_FALLOCATE, &q), what);
	}
	/* The journal (8) and the other reserved inodes are not files. */
	for (uint32_t ino = 1; ino < 11; ino++) {
		if (ino == ROOT)
			continue;
		struct meta_setattr sa = { .valid = META_SET_SIZE, .size = 0 };
		snprintf(what, sizeof(what), "SETATTR size 0 of reserved inode %u", ino);
		expect_refused(s_setattr(f, ino, &sa, NULL), what);
		struct meta_setattr sm = { .valid = META_SET_MODE, .mode = 0777 };
		snprintf(what, sizeof(what), "SETATTR mode of reserved inode %u", ino);
		expect_refused(s_setattr(f, ino, &sm, NULL), what);
		snprintf(what, sizeof(what), "OPEN(O_TRUNC) of reserved inode %u", ino);
		int rc = s_open(f, NODE_A, ino, 1, NULL);
		expect_refused(rc, what);
		if (rc == 0)
			s_release(f, NODE_A, ino);
		snprintf(what, sizeof(what), "ALLOC in reserved inode %u", ino);
		expect_refused(s_alloc(f, ino, 1u << 20, 1), what);
		snprintf(what, sizeof(what), "SETXATTR on reserved inode %u", ino);
		expect_refused(s_setxattr(f, ino, "user.evil", "x", 1, 0), what);
		snprintf(what, sizeof(what), "LINK of reserved inode %u into /", ino);
		struct proto_req q = { .link = { ino, ROOT, "reserved" } };
		expect_refused(req(f, OP_LINK, &q), what);
	}
	/* CREATE makes files, fifos, sockets, devices and directories only. */
	uint32_t modes[] = { 0644, S_IFLNK | 0777, 0170000 | 0644, 0070000 | 0644 };
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		char name[32];
		snprintf(name, sizeof(name), "mode%zu", i);
		snprintf(what, sizeof(what), "CREATE with mode 0%o", modes[i]);
		expect_refused(s_create(f, ROOT, name, modes[i], NULL), what);
	}
	end_soft(__func__);
}

/* The largest size ext4 allows for an extent file is 2^44 - 1 with 4 KiB
 * blocks (32-bit logical blocks); e2fsck: "i_size is 17592186044416,
 * should be ...". */
static void test_size_limit(void **state)
{
	struct sfx *f = *state;
	assert_int_equal(s_open(f, NODE_A, f->file, 0, NULL), 0);
	expect_refused(s_commit(f, f->file, 0, 0, 1ull << 44, NULL), "COMMIT of size 2^44");
	struct meta_setattr sa = { .valid = META_SET_SIZE, .size = 1ull << 44 };
	expect_refused(s_setattr(f, f->file, &sa, NULL), "SETATTR size 2^44");
	struct proto_req q = { .fallocate = { f->file, FALLOC_FL_KEEP_SIZE, (1ull << 44) - 4096, 4096 } };
	int rc = req(f, OP_FALLOCATE, &q);   /* the last block: allowed or ENOSPC/EFBIG */
	(void)rc;
	/* Without KEEP_SIZE the same fallocate would make the size 2^44. */
	q.fallocate.mode = 0;
	expect_refused(req(f, OP_FALLOCATE, &q), "FALLOCATE to end at 2^44");
	sa.size = 0;
	assert_int_equal(s_setattr(f, f->file, &sa, NULL), 0);
	sa.size = (1ull << 44) - 1;   /* the largest size is fine */
	assert_int_equal(s_setattr(f, f->file, &sa, NULL), 0);
	sa.size = 0;
	assert_int_equal(s_setattr(f, f->file, &sa, NULL), 0);
	assert_int_equal(s_release(f, NODE_A, f->file), 0);
	end_soft(__func__);
}

/* The volume through the server is the volume: a remount sees it all. */
static void test_state_survives_remount(void **state)
{
	struct sfx *f = *state;
	struct meta_attr a, b;
	assert_int_equal(s_create(f, f->dir, "kept", S_IFREG | 0644, &a), 0);
	assert_int_equal(s_alloc(f, (uint32_t)a.ino, 0, 3), 0);
	assert_int_equal(s_commit(f, (uint32_t)a.ino, 0, 3, 10000, NULL), 0);
	/* An open left by a node when the server goes is dropped with it. */
	assert_int_equal(s_open(f, NODE_B, (uint32_t)a.ino, 0, NULL), 0);
	sfx_close(f);
	sfx_open(f);
	assert_int_equal(s_lookup(f, f->dir, "kept", &b), 0);
	assert_int_equal(b.ino, a.ino);
	assert_int_equal(b.size, 10000);
	assert_int_equal(b.blocks, 3 * 8);
	assert_int_equal(s_release(f, NODE_B, (uint32_t)a.ino), EBADF);
}

/* The LUN as a power cut would leave it now: a copy of the image, opened
 * (the journal replayed) while the server's volume is still open. */
static struct volume *crash_copy(struct sfx *f, char *copy, size_t len)
{
	snprintf(copy, len, "%s.crash", f->path);
	char cmd[4 * PATH_MAX + 128];
	/* the copy's MMP block says "in use": clear it, as an admin would
	 * for a volume whose node is known dead (docs/architecture.md) */
	snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s' && tune2fs -f -E clear_mmp '%s' >/dev/null 2>&1",
		 f->path, copy, copy);
	assert_int_equal(system(cmd), 0);
	char err[512] = "";
	struct volume_opts o = { .lun = copy };
	struct volume *v = NULL;
	if (volume_open(&o, &v, err, sizeof(err)))
		fail_msg("volume_open(%s): %s", copy, err);
	return v;
}

/* ---- exactly once (docs/cluster.md "Exactly once") ------------------------- */

/* op's request q wrapped in ONCE with id (client, slot, seq), from node. */
static int once_from(struct sfx *f, const char *node, uint64_t client, uint32_t slot, uint32_t seq,
		     uint16_t op, const struct proto_req *q)
{
	struct proto_once id = { client, slot, seq, op };
	struct rio_writer w;
	rio_writer_init(&w, 0);
	proto_put_once(&w, &id, q);
	int rc = call_from(f, node, OP_ONCE, rio_writer_data(&w), w.len);
	rio_writer_free(&w);
	return rc;
}

static struct meta_attr once_attr(struct sfx *f, uint16_t op)
{
	union proto_reply p;
	decode(f, op, &p);   /* ONCE's reply is the wrapped op's */
	return p.attr;
}

/* A bad id or a wrapped op that is not a change of the list: EPROTO, and
 * nothing applied. */
static void test_once_refusals(void **state)
{
	struct sfx *f = *state;
	struct fingerprint before;
	fingerprint(f, &before);
	struct proto_req q = { .create = { ROOT, "x", S_IFREG | 0644, 0, CRED } };
	assert_int_equal(once_from(f, NODE_A, 1, REPLY_SLOTS, 1, OP_CREATE, &q), EPROTO);
	assert_int_equal(once_from(f, NODE_A, 1, 0, 0, OP_CREATE, &q), EPROTO);
	struct proto_req l = { .ino_name = { ROOT, "f" } };
	assert_int_equal(once_from(f, NODE_A, 1, 0, 1, OP_LOOKUP, &l), EPROTO);
	assert_int_equal(once_from(f, NODE_A, 1, 0, 1, OP_ONCE, &l), EPROTO);
	/* an OPEN changes nothing without O_TRUNC: not a change of the list */
	struct proto_req o = { .open = { f->file, 0, gen_of(f, f->file) } };
	assert_int_equal(once_from(f, NODE_A, 1, 0, 1, OP_OPEN, &o), EPROTO);
	assert_unchanged(f, &before, "refused ONCE requests");
}

/* The coordinator applied a change, made it durable and died before its
 * reply left: the participant sends it again, with the same id, to the new
 * coordinator (a server over the LUN as the crash left it): the original
 * result, not EEXIST / ENOENT; a create_open's file is open for the node
 * again. The same change under a new id, or from another node, is applied
 * (and refused) as a new one. */
static void test_once_resend_after_crash(void **state)
{
	struct sfx *f = *state;
	struct proto_req mk = { .create = { ROOT, "made", S_IFDIR | 0755, 0, CRED } };
	struct proto_req co = { .create = { ROOT, "opened", S_IFREG | 0644, 0, CRED } };
	struct proto_req ul = { .ino_name = { ROOT, "sl" } };
	struct proto_req rn = { .rename = { ROOT, "f", f->dir, "g", 0, NOCRED } };
	assert_int_equal(once_from(f, NODE_A, 77, 0, 1, OP_CREATE, &mk), 0);
	struct meta_attr made = once_attr(f, OP_CREATE);
	assert_int_equal(once_from(f, NODE_A, 77, 1, 1, OP_CREATE_OPEN, &co), 0);
	struct meta_attr opened = once_attr(f, OP_CREATE_OPEN);
	assert_int_equal(once_from(f, NODE_A, 77, 2, 5, OP_UNLINK, &ul), 0);
	assert_int_equal(once_from(f, NODE_A, 77, 3, 1, OP_RENAME, &rn), 0);

	char copy[PATH_MAX];
	struct sfx after = { .file = f->file, .dir = f->dir };
	after.v = crash_copy(f, copy, sizeof(copy));
	assert_int_equal(server_create(after.v, &after.s), 0);
	rio_writer_init(&after.rep, 0);

	assert_int_equal(once_from(&after, NODE_A, 77, 0, 1, OP_CREATE, &mk), 0);
	struct meta_attr again = once_attr(&after, OP_CREATE);
	assert_int_equal(again.ino, made.ino);
	assert_int_equal(again.generation, made.generation);
	assert_true(S_ISDIR(again.mode));
	assert_int_equal(once_from(&after, NODE_A, 77, 1, 1, OP_CREATE_OPEN, &co), 0);
	again = once_attr(&after, OP_CREATE_OPEN);
	assert_int_equal(again.ino, opened.ino);
	assert_int_equal(again.generation, opened.generation);
	char opens[256];
	assert_int_equal(server_describe_opens(after.s, opens, sizeof(opens)), 1);
	assert_non_null(strstr(opens, NODE_A));
	assert_int_equal(once_from(&after, NODE_A, 77, 2, 5, OP_UNLINK, &ul), 0);
	assert_int_equal(once_from(&after, NODE_A, 77, 3, 1, OP_RENAME, &rn), 0);

	/* Not the same request: applied, and refused as the tree says. */
	assert_int_equal(once_from(&after, NODE_A, 77, 0, 2, OP_CREATE, &mk), EEXIST);
	assert_int_equal(once_from(&after, NODE_B, 77, 2, 5, OP_UNLINK, &ul), ENOENT);
	assert_int_equal(once_from(&after, NODE_A, 78, 3, 1, OP_RENAME, &rn), ENOENT);
	struct meta_attr b;
	assert_int_equal(meta_lookup(after.v, f->dir, "g", &b), 0);
	assert_int_equal(meta_lookup(after.v, ROOT, "made", &b), 0);

	rio_writer_free(&after.rep);
	server_destroy(after.s);
	volume_close(after.v);
	assert_true(fsck_clean(copy));
	unlink(copy);
}

/* A file of nblk written blocks from block 0 (size nblk blocks), open for
 * NODE_A; its inode. */
static uint32_t written_file(struct sfx *f, const char *name, uint64_t nblk)
{
	struct meta_attr a;
	assert_int_equal(s_create(f, ROOT, name, S_IFREG | 0644, &a), 0);
	assert_int_equal(s_open(f, NODE_A, (uint32_t)a.ino, 0, NULL), 0);
	assert_int_equal(s_alloc(f, (uint32_t)a.ino, 0, nblk), 0);
	assert_int_equal(s_commit(f, (uint32_t)a.ino, 0, nblk, nblk * 4096, NULL), 0);
	return (uint32_t)a.ino;
}

static enum extent_state state_of(struct sfx *f, uint32_t ino, uint64_t lblk)
{
	struct meta_extent e;
	assert_int_equal(s_map(f, ino, lblk, &e, NULL), 0);
	return e.state;
}

/* The other changes that are not idempotent once others act between the
 * change and its resend: SETXATTR with XATTR_CREATE and REMOVEXATTR (EEXIST,
 * ENODATA for what happened), a FALLOCATE punch (it would punch what was
 * written since) and an OPEN with O_TRUNC (it would truncate what was
 * written since). Applied, the coordinator dies before the replies leave,
 * writes land after the crash, then the resends: answered as they were,
 * the writes kept. */
static void test_once_xattr_punch_trunc_resend_after_crash(void **state)
{
	struct sfx *f = *state;
	uint32_t punched = written_file(f, "punched", 4), trunced = written_file(f, "trunced", 2);
	struct proto_req sx = { .setxattr = { f->file, "user.made", "v1", 2, META_XATTR_CREATE } };
	struct proto_req rx = { .ino_name = { f->file, "user.x" } };
	struct proto_req pu = { .fallocate = { punched, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
					       2 * 4096 } };
	struct proto_req tr = { .open = { trunced, 1, gen_of(f, trunced) } };
	assert_int_equal(once_from(f, NODE_A, 77, 0, 1, OP_SETXATTR, &sx), 0);
	assert_int_equal(once_from(f, NODE_A, 77, 1, 1, OP_REMOVEXATTR, &rx), 0);
	assert_int_equal(once_from(f, NODE_A, 77, 2, 1, OP_FALLOCATE, &pu), 0);
	assert_int_equal(state_of(f, punched, 0), EXTENT_HOLE);
	assert_int_equal(once_from(f, NODE_A, 77, 3, 1, OP_OPEN, &tr), 0);
	assert_int_equal(once_attr(f, OP_OPEN).size, 0);

	char copy[PATH_MAX];
	struct sfx after = { .file = f->file, .dir = f->dir };
	after.v = crash_copy(f, copy, sizeof(copy));
	assert_int_equal(server_create(after.v, &after.s), 0);
	rio_writer_init(&after.rep, 0);
	/* Writes after the changes, before their resends (a node that
	 * reclaimed first): block 0 of the punched file, two blocks of the
	 * truncated one; another value of the made xattr. */
	assert_int_equal(s_open(&after, NODE_B, punched, 0, NULL), 0);
	assert_int_equal(s_alloc(&after, punched, 0, 1), 0);
	assert_int_equal(s_commit(&after, punched, 0, 1, 4096, NULL), 0);
	assert_int_equal(s_open(&after, NODE_B, trunced, 0, NULL), 0);
	assert_int_equal(s_alloc(&after, trunced, 0, 2), 0);
	assert_int_equal(s_commit(&after, trunced, 0, 2, 2 * 4096, NULL), 0);
	assert_int_equal(s_setxattr(&after, f->file, "user.made", "v2", 2, META_XATTR_REPLACE), 0);

	assert_int_equal(once_from(&after, NODE_A, 77, 0, 1, OP_SETXATTR, &sx), 0);
	reply_void(&after);
	assert_int_equal(once_from(&after, NODE_A, 77, 1, 1, OP_REMOVEXATTR, &rx), 0);
	reply_void(&after);
	assert_int_equal(once_from(&after, NODE_A, 77, 2, 1, OP_FALLOCATE, &pu), 0);
	union proto_reply p;
	decode(&after, OP_FALLOCATE, &p);
	assert_int_equal(p.u64, 4 * 4096);
	assert_int_equal(state_of(&after, punched, 0), EXTENT_WRITTEN);   /* not punched again */
	assert_int_equal(once_from(&after, NODE_A, 77, 3, 1, OP_OPEN, &tr), 0);
	struct meta_attr t = once_attr(&after, OP_OPEN);
	assert_int_equal(t.ino, trunced);
	assert_int_equal(t.size, 2 * 4096);                                /* not truncated again */
	assert_int_equal(state_of(&after, trunced, 1), EXTENT_WRITTEN);
	char opens[256];
	assert_true(server_describe_opens(after.s, opens, sizeof(opens)) >= 1);
	assert_non_null(strstr(opens, NODE_A));                             /* opened again */
	char buf[8];
	uint32_t len = 0;
	assert_int_equal(s_xattr_get(&after, f->file, "user.made", sizeof(buf), buf, &len), 0);
	assert_int_equal(len, 2);
	assert_memory_equal(buf, "v2", 2);

	/* Not the same request: applied, and refused as the tree says. */
	assert_int_equal(once_from(&after, NODE_A, 77, 0, 2, OP_SETXATTR, &sx), EEXIST);
	assert_int_equal(once_from(&after, NODE_A, 77, 1, 2, OP_REMOVEXATTR, &rx), ENODATA);
	assert_int_equal(once_from(&after, NODE_A, 77, 3, 2, OP_OPEN, &tr), 0);
	assert_int_equal(once_attr(&after, OP_OPEN).size, 0);

	rio_writer_free(&after.rep);
	server_destroy(after.s);
	volume_close(after.v);
	assert_true(fsck_clean(copy));
	unlink(copy);
}

/* Durable replies: what the server answered is in the journal, so a copy
 * of the LUN taken right after the answer holds it; a change made on the
 * coordinator's own engine and not yet synced does not (the copy sees only
 * the LUN). */
static void test_durable_before_reply(void **state)
{
	struct sfx *f = *state;
	struct meta_attr a, b, local;
	assert_int_equal(s_create(f, f->dir, "answered", S_IFREG | 0644, &a), 0);
	struct proto_req q = { .rename = { .parent = f->dir, .name = "answered", .newparent = ROOT,
					   .newname = "moved" } };
	assert_int_equal(req(f, OP_RENAME, &q), 0);
	assert_int_equal(meta_create(f->v, ROOT, "unsynced", S_IFREG | 0644, 0, &CRED, &local), 0);
	char copy[PATH_MAX + 8];
	struct volume *v = crash_copy(f, copy, sizeof(copy));
	assert_int_equal(meta_lookup(v, ROOT, "moved", &b), 0);
	assert_int_equal(b.ino, a.ino);
	assert_int_equal(meta_lookup(v, f->dir, "answered", &b), -ENOENT);
	assert_int_equal(meta_lookup(v, ROOT, "unsynced", &b), -ENOENT);
	volume_close(v);
	unlink(copy);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codec_attr),
		cmocka_unit_test(test_codec_setattr),
		cmocka_unit_test(test_codec_cred),
		cmocka_unit_test(test_codec_extent),
		cmocka_unit_test(test_codec_statfs),
		cmocka_unit_test(test_op_names),
		cmocka_unit_test(test_op_table_matches_docs),
		cmocka_unit_test(test_request_layouts),
		cmocka_unit_test(test_reply_layouts),
		cmocka_unit_test(test_io_state_refusals),
		cmocka_unit_test_setup_teardown(test_create_lookup_getattr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alloc_commit_map, setup, teardown),
		cmocka_unit_test_setup_teardown(test_setattr_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readdir_paging, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readdirplus_attrs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_xattrs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_namespace_ops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_ops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_every_op, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_of_range_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_ops_on_other_inodes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_survives_remount, setup, teardown),
		cmocka_unit_test_setup_teardown(test_durable_before_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_once_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_once_resend_after_crash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_once_xattr_punch_trunc_resend_after_crash, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
