/* The reply table (fs/meta_reply.c, docs/cluster.md "Exactly once"): the
 * on-disk encoding of an entry, and the engine recording a change's result
 * under the request's id on a scratch volume, read back after the volume is
 * closed and opened again. Every test leaves an image e2fsck -fn finds clean
 * (the table lives in reserved inode 5). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/csvfs.h"
#include "fs/meta.h"
#include "fs/proto.h"
#include "tests/unit/scratch.h"

#define ROOT EXT2_ROOT_INO

static const struct meta_cred CRED = { 0, 0, 022 };

struct fx {
	char path[PATH_MAX];
	struct volume *v;
};

static void fx_open(struct fx *f)
{
	char err[512] = "";
	struct volume_opts o = { .lun = f->path };
	int rc = volume_open(&o, &f->v, err, sizeof(err));
	if (rc)
		fail_msg("volume_open(%s): %d %s", f->path, rc, err);
}

static void fx_reopen(struct fx *f)
{
	volume_close(f->v);
	fx_open(f);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->path, sizeof(f->path), "%s/test_reply.XXXXXX", tmp_dir());
	int fd = mkstemp(f->path);
	assert_true(fd >= 0);
	close(fd);
	unlink(f->path);
	char guid[37], err[512] = "";
	struct csvfs_format_opts o = { .lun = f->path, .create_size = 64ull << 20 };
	if (csvfs_format(&o, guid, err, sizeof(err)))
		fail_msg("csvfs_format: %s", err);
	fx_open(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (f->v)
		volume_close(f->v);
	int ok = fsck_clean(f->path);
	unlink(f->path);
	free(f);
	assert_true(ok);
	return 0;
}

static struct meta_reply_key key(const char *node, uint64_t client, uint32_t slot, uint32_t seq,
				 uint32_t op)
{
	struct meta_reply_key k = { .client = client, .slot = slot, .seq = seq, .op = op };
	snprintf(k.node, sizeof(k.node), "%s", node);
	return k;
}

/* ---- encoding ------------------------------------------------------------ */

static void test_entry_round_trip(void **state)
{
	(void)state;
	struct meta_reply_entry e = { .client = 0x1122334455667788ull, .stamp = 42 };
	snprintf(e.node, sizeof(e.node), "node2");
	for (unsigned i = 0; i < REPLY_SLOTS; i++)
		e.slot[i] = (struct meta_reply_slot){ 1000 + i, 4, 12 + i, 0xabcd0000u + i };
	uint8_t buf[REPLY_ENTRY_BYTES];
	meta_reply_encode(&e, buf);
	struct meta_reply_entry d;
	assert_int_equal(meta_reply_decode(buf, &d), 1);
	assert_string_equal(d.node, "node2");
	assert_true(d.client == e.client && d.stamp == 42);
	assert_memory_equal(d.slot, e.slot, sizeof(e.slot));
	/* Fixed layout: magic "CSVR", the name at 8, the client at 72. */
	assert_memory_equal(buf, "CSVR", 4);
	assert_memory_equal(buf + 8, "node2", 6);
	assert_int_equal(buf[72], 0x88);
}

static void test_entry_free_and_bad(void **state)
{
	(void)state;
	uint8_t buf[REPLY_ENTRY_BYTES];
	struct meta_reply_entry e = { 0 }, d;
	meta_reply_encode(&e, buf);
	for (unsigned i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0);
	assert_int_equal(meta_reply_decode(buf, &d), 0);
	buf[700] = 1;   /* a free entry with something in it */
	assert_int_equal(meta_reply_decode(buf, &d), -EINVAL);

	snprintf(e.node, sizeof(e.node), "n1");
	e.slot[3].seq = 7;
	meta_reply_encode(&e, buf);
	buf[128 + 3 * 16] ^= 1;   /* slot 3's seq: the checksum no longer matches */
	assert_int_equal(meta_reply_decode(buf, &d), -EINVAL);
	meta_reply_encode(&e, buf);
	buf[1] ^= 0x20;           /* the magic */
	assert_int_equal(meta_reply_decode(buf, &d), -EINVAL);
}

/* ---- the engine records with the change ------------------------------------ */

static void test_create_recorded_and_kept(void **state)
{
	struct fx *f = *state;
	struct meta_reply_slot s;
	struct meta_reply_key k = key("node2", 77, 5, 1, 4);
	assert_int_equal(meta_reply_lookup(f->v, &k, &s), 0);   /* no table yet */
	struct meta_attr a;
	meta_reply_expect(&k);
	assert_int_equal(meta_create(f->v, ROOT, "f", 0100644, 0, &CRED, &a), 0);
	meta_reply_expect(NULL);
	assert_int_equal(meta_reply_lookup(f->v, &k, &s), 1);
	assert_int_equal(s.ino, a.ino);
	assert_int_equal(s.gen, a.generation);

	/* A change nobody expects records nothing. */
	assert_int_equal(meta_create(f->v, ROOT, "g", 0100644, 0, &CRED, &a), 0);
	struct meta_reply_key k2 = key("node2", 77, 6, 1, 4);
	assert_int_equal(meta_reply_lookup(f->v, &k2, &s), 0);
	/* A failed change records nothing either. */
	meta_reply_expect(&k2);
	assert_int_equal(meta_create(f->v, ROOT, "g", 0100644, 0, &CRED, &a), -EEXIST);
	meta_reply_expect(NULL);
	assert_int_equal(meta_reply_lookup(f->v, &k2, &s), 0);

	fx_reopen(f);
	assert_int_equal(meta_reply_lookup(f->v, &k, &s), 1);
	struct meta_reply_key other = key("node2", 77, 5, 2, 4);   /* the slot's next seq */
	assert_int_equal(meta_reply_lookup(f->v, &other, &s), 0);
	other = key("node2", 77, 5, 1, 7);                         /* another op */
	assert_int_equal(meta_reply_lookup(f->v, &other, &s), 0);
	other = key("node3", 77, 5, 1, 4);                         /* another node */
	assert_int_equal(meta_reply_lookup(f->v, &other, &s), 0);
}

static void test_namespace_changes_recorded(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	assert_int_equal(meta_create(f->v, ROOT, "d", 040755, 0, &CRED, &a), 0);
	assert_int_equal(meta_create(f->v, ROOT, "x", 0100644, 0, &CRED, &a), 0);
	struct meta_reply_key ren = key("node1", 9, 0, 3, 9), unl = key("node1", 9, 1, 8, 7),
			      rmd = key("node1", 9, 2, 1, 8);
	meta_reply_expect(&ren);
	assert_int_equal(meta_rename(f->v, ROOT, "x", ROOT, "y", 0), 0);
	meta_reply_expect(&unl);
	assert_int_equal(meta_unlink(f->v, ROOT, "y"), 0);
	meta_reply_expect(&rmd);
	assert_int_equal(meta_rmdir(f->v, ROOT, "d"), 0);
	meta_reply_expect(NULL);
	fx_reopen(f);
	struct meta_reply_slot s;
	assert_int_equal(meta_reply_lookup(f->v, &ren, &s), 1);
	assert_int_equal(meta_reply_lookup(f->v, &unl, &s), 1);
	assert_int_equal(meta_reply_lookup(f->v, &rmd, &s), 1);
	/* The node's daemon restarted: its new client id replaces the entry. */
	struct meta_reply_key fresh = key("node1", 10, 0, 1, 4);
	meta_reply_expect(&fresh);
	assert_int_equal(meta_create(f->v, ROOT, "z", 0100644, 0, &CRED, &a), 0);
	meta_reply_expect(NULL);
	assert_int_equal(meta_reply_lookup(f->v, &fresh, &s), 1);
	assert_int_equal(meta_reply_lookup(f->v, &ren, &s), 0);
}

/* The xattr changes, a fallocate and an open's O_TRUNC record too, with the
 * inode they changed; a failed one (XATTR_CREATE of a name there) does not. */
static void test_xattr_fallocate_truncate_recorded(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	assert_int_equal(meta_create(f->v, ROOT, "x", 0100644, 0, &CRED, &a), 0);
	ext2_ino_t ino = (ext2_ino_t)a.ino;
	struct meta_reply_key sx = key("node2", 5, 0, 1, OP_SETXATTR), rx = key("node2", 5, 1, 1, OP_REMOVEXATTR),
			      fa = key("node2", 5, 2, 1, OP_FALLOCATE), tr = key("node2", 5, 3, 1, OP_OPEN),
			      dup = key("node2", 5, 4, 1, OP_SETXATTR);
	meta_reply_expect(&sx);
	assert_int_equal(meta_setxattr(f->v, ino, "user.k", "v", 1, META_XATTR_CREATE), 0);
	meta_reply_expect(&dup);
	assert_int_equal(meta_setxattr(f->v, ino, "user.k", "v", 1, META_XATTR_CREATE), -EEXIST);
	meta_reply_expect(&rx);
	assert_int_equal(meta_removexattr(f->v, ino, "user.k"), 0);
	struct minode *m = minode_get(f->v, ino);
	assert_non_null(m);
	meta_reply_expect(&fa);
	assert_int_equal(meta_fallocate(f->v, m, 0, 0, 8192), 0);
	meta_reply_expect(&tr);
	assert_int_equal(meta_open(f->v, m, a.generation, 1), 0);
	meta_reply_expect(NULL);
	/* A fallocate's answer: the size of the file, open still when unlinked
	 * (which the attributes' answer calls gone), gone once freed. */
	struct meta_reply_slot s;
	uint64_t size = 1;
	assert_int_equal(meta_reply_lookup(f->v, &fa, &s), 1);
	assert_int_equal(meta_reply_size(f->v, &s, &size), 0);
	assert_int_equal(size, 0);   /* the O_TRUNC after it */
	assert_int_equal(meta_unlink(f->v, ROOT, "x"), 0);
	struct meta_attr gone;
	assert_int_equal(meta_reply_attr(f->v, &s, &gone), -ESTALE);
	assert_int_equal(meta_reply_size(f->v, &s, &size), 0);
	assert_int_equal(meta_release(f->v, m), 0);
	minode_put(f->v, m);
	assert_int_equal(meta_reply_size(f->v, &s, &size), -ESTALE);
	fx_reopen(f);
	const struct meta_reply_key *done[] = { &sx, &rx, &fa, &tr };
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(meta_reply_lookup(f->v, done[i], &s), 1);
		assert_int_equal(s.ino, ino);
		assert_int_equal(s.gen, a.generation);
	}
	assert_int_equal(meta_reply_lookup(f->v, &dup, &s), 0);
}

/* More nodes than entries: the least recently used gives way, the table
 * stays whole. */
static void test_table_full(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	char name[32];
	for (unsigned i = 0; i <= REPLY_NODES_MAX; i++) {
		char node[16];
		snprintf(node, sizeof(node), "n%u", i);
		struct meta_reply_key k = key(node, 1, 0, 1, 4);
		snprintf(name, sizeof(name), "f%u", i);
		meta_reply_expect(&k);
		assert_int_equal(meta_create(f->v, ROOT, name, 0100644, 0, &CRED, &a), 0);
	}
	meta_reply_expect(NULL);
	fx_reopen(f);
	struct meta_reply_slot s;
	struct meta_reply_key first = key("n0", 1, 0, 1, 4), last = key("n64", 1, 0, 1, 4),
			      second = key("n1", 1, 0, 1, 4);
	assert_int_equal(meta_reply_lookup(f->v, &first, &s), 0);
	assert_int_equal(meta_reply_lookup(f->v, &second, &s), 1);
	assert_int_equal(meta_reply_lookup(f->v, &last, &s), 1);
	struct meta_reply_key bad = key("n1", 1, REPLY_SLOTS, 1, 4);
	assert_int_equal(meta_reply_lookup(f->v, &bad, &s), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_entry_round_trip),
		cmocka_unit_test(test_entry_free_and_bad),
		cmocka_unit_test_setup_teardown(test_create_recorded_and_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_namespace_changes_recorded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_xattr_fallocate_truncate_recorded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_table_full, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
