/*
 * Unit tests for the JBD2 codec, writer and replayer (journal/jbd2*.c).
 *
 * Journals live in memory: block 0 is the journal superblock, [1, len) the
 * log; the "filesystem" is an array of blocks whose initial contents are a
 * per-block pattern, so a replay's effect on every block can be checked.
 * Known-answer vectors come from debugfs 1.47 (jo -c; jw; jc), i.e. their
 * checksums were computed by e2fsprogs, not by the code under test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal/jbd2.h"

static const uint8_t TEST_UUID[16] = {
	0x5c, 0x1d, 0x7e, 0x02, 0x11, 0x22, 0x43, 0x84,
	0x95, 0xa6, 0xb7, 0xc8, 0xd9, 0xea, 0xfb, 0x0c,
};

#define INCOMPAT_V3_64 (JBD2_FEATURE_INCOMPAT_REVOKE | JBD2_FEATURE_INCOMPAT_64BIT | \
			JBD2_FEATURE_INCOMPAT_CSUM_V3)

/* ------------------------------------------------------------------------ */
/* In-memory journal and filesystem                                          */
/* ------------------------------------------------------------------------ */

struct mem_disk {
	uint32_t block_size;
	uint32_t journal_len;
	uint64_t fs_blocks;
	uint8_t *journal;
	uint8_t *fs;
	unsigned fs_writes;
	unsigned sb_writes;
	unsigned journal_writes;
	unsigned flushes;
	long fail_journal_read;   /* journal block whose read fails, -1 = none */
	bool fail_fs_write;
	char events[256];         /* 'W' log write, 'C' commit write, 'F' flush */
	size_t nevents;
};

static void orig_content(uint64_t block, uint8_t *buf, uint32_t bs)
{
	memset(buf, 0xEE, bs);
	memcpy(buf + 8, &block, sizeof(block));
}

static void txn_content(uint32_t sequence, uint64_t block, uint8_t *buf, uint32_t bs)
{
	memset(buf, (int)((sequence * 31 + block) & 0xFF), bs);
	memcpy(buf + 8, &block, sizeof(block));
	memcpy(buf + 16, &sequence, sizeof(sequence));
}

static struct mem_disk *disk_new(uint32_t bs, uint32_t journal_len, uint64_t fs_blocks)
{
	struct mem_disk *d = calloc(1, sizeof(*d));
	assert_non_null(d);
	d->block_size = bs;
	d->journal_len = journal_len;
	d->fs_blocks = fs_blocks;
	d->journal = calloc(journal_len, bs);
	d->fs = calloc(fs_blocks, bs);
	assert_non_null(d->journal);
	assert_non_null(d->fs);
	for (uint64_t b = 0; b < fs_blocks; b++)
		orig_content(b, d->fs + b * bs, bs);
	d->fail_journal_read = -1;
	return d;
}

static void disk_free(struct mem_disk *d)
{
	free(d->journal);
	free(d->fs);
	free(d);
}

static uint8_t *jblock(struct mem_disk *d, uint32_t n)
{
	assert_true(n < d->journal_len);
	return d->journal + (size_t)n * d->block_size;
}

static uint8_t *fsblock(struct mem_disk *d, uint64_t n)
{
	assert_true(n < d->fs_blocks);
	return d->fs + n * d->block_size;
}

static void note_event(struct mem_disk *d, char c)
{
	if (d->nevents + 1 < sizeof(d->events))
		d->events[d->nevents++] = c;
}

static int mem_read_journal(void *ctx, uint32_t n, void *buf)
{
	struct mem_disk *d = ctx;
	if (n >= d->journal_len || (long)n == d->fail_journal_read)
		return -EIO;
	memcpy(buf, jblock(d, n), d->block_size);
	return 0;
}

static int mem_write_journal(void *ctx, uint32_t n, const void *buf)
{
	struct mem_disk *d = ctx;
	if (n >= d->journal_len)
		return -EIO;
	memcpy(jblock(d, n), buf, d->block_size);
	if (n == 0)
		d->sb_writes++;
	d->journal_writes++;
	struct jbd2_header h;
	jbd2_header_decode(buf, &h);
	note_event(d, h.magic == JBD2_MAGIC && h.blocktype == JBD2_BLOCKTYPE_COMMIT ? 'C' : 'W');
	return 0;
}

static int mem_write_fs(void *ctx, uint64_t n, const void *buf)
{
	struct mem_disk *d = ctx;
	/* The replayer must never name a block outside the filesystem. */
	assert_true(n < d->fs_blocks);
	if (d->fail_fs_write)
		return -EIO;
	memcpy(fsblock(d, n), buf, d->block_size);
	d->fs_writes++;
	return 0;
}

static int mem_flush(void *ctx)
{
	struct mem_disk *d = ctx;
	d->flushes++;
	note_event(d, 'F');
	return 0;
}

static void journal_init(struct mem_disk *d, uint32_t compat, uint32_t incompat, uint32_t sequence)
{
	struct jbd2_superblock sb = {
		.blocktype = JBD2_BLOCKTYPE_SUPERBLOCK_V2,
		.block_size = d->block_size,
		.max_len = d->journal_len,
		.first = 1,
		.sequence = sequence,
		.feature_compat = compat,
		.feature_incompat = incompat,
		.nr_users = 1,
	};
	if (incompat & (JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3))
		sb.checksum_type = JBD2_CHECKSUM_TYPE_CRC32C;
	memcpy(sb.uuid, TEST_UUID, sizeof(TEST_UUID));
	memset(jblock(d, 0), 0, d->block_size);
	jbd2_superblock_encode(&sb, jblock(d, 0));
}

static struct jbd2_superblock journal_sb(struct mem_disk *d)
{
	struct jbd2_superblock sb;
	struct jbd2_error err = { 0 };
	int rc = jbd2_superblock_decode(jblock(d, 0), d->block_size, &sb, &err);
	if (rc)
		fail_msg("journal superblock: %s", err.message);
	return sb;
}

static struct jbd2_format journal_format(struct mem_disk *d)
{
	struct jbd2_superblock sb = journal_sb(d);
	struct jbd2_format fmt;
	struct jbd2_error err = { 0 };
	if (jbd2_format_init(&fmt, &sb, d->fs_blocks, &err))
		fail_msg("journal format: %s", err.message);
	return fmt;
}

/* Marks the log as starting at `start` with transaction `sequence` (dirty). */
static void journal_set_start(struct mem_disk *d, uint32_t start, uint32_t sequence)
{
	struct jbd2_superblock sb = journal_sb(d);
	sb.start = start;
	sb.sequence = sequence;
	jbd2_superblock_encode(&sb, jblock(d, 0));
}

static struct jbd2_journal_writer disk_writer(struct mem_disk *d)
{
	return (struct jbd2_journal_writer){ .ctx = d, .write_block = mem_write_journal,
					     .flush = mem_flush };
}

/* Logs `blocks` (contents: txn_content(sequence, block)) and revokes `revoked`
 * as transaction `sequence` at `head`; returns the next head. */
static uint32_t log_txn(struct mem_disk *d, uint32_t head, uint32_t sequence,
			const uint64_t *blocks, size_t n, const uint64_t *revoked, size_t nr)
{
	struct jbd2_format fmt = journal_format(d);
	struct jbd2_txn_block *tb = calloc(n ? n : 1, sizeof(*tb));
	uint8_t *data = calloc(n ? n : 1, d->block_size);
	assert_non_null(tb);
	assert_non_null(data);
	for (size_t i = 0; i < n; i++) {
		txn_content(sequence, blocks[i], data + i * d->block_size, d->block_size);
		tb[i] = (struct jbd2_txn_block){ .fs_block = blocks[i],
						 .data = data + i * d->block_size };
	}
	struct jbd2_txn txn = {
		.sequence = sequence, .blocks = tb, .block_count = n,
		.revoked = revoked, .revoked_count = nr,
		.commit_sec = 1700000000u + sequence, .commit_nsec = 1234,
	};
	uint32_t next = 0;
	struct jbd2_error err = { 0 };
	struct jbd2_journal_writer w = disk_writer(d);
	if (jbd2_write_transaction(&fmt, &txn, head, &w, &next, &err))
		fail_msg("writing transaction %u: %s", sequence, err.message);
	free(tb);
	free(data);
	return next;
}

static int replay(struct mem_disk *d, bool dry_run, struct jbd2_replay_report *rep,
		  struct jbd2_error *err)
{
	struct jbd2_replay_io io = {
		.ctx = d, .read_journal = mem_read_journal, .write_journal = mem_write_journal,
		.write_fs = mem_write_fs, .flush = mem_flush,
	};
	struct jbd2_replay_options opt = {
		.block_size = d->block_size, .fs_block_count = d->fs_blocks, .dry_run = dry_run,
	};
	memset(err, 0, sizeof(*err));
	return jbd2_replay(&io, &opt, rep, err);
}

static void replay_ok(struct mem_disk *d, struct jbd2_replay_report *rep)
{
	struct jbd2_error err;
	int rc = replay(d, false, rep, &err);
	if (rc)
		fail_msg("replay failed (%d): %s", rc, err.message);
}

static void expect_txn_block(struct mem_disk *d, uint64_t block, uint32_t sequence)
{
	uint8_t *want = malloc(d->block_size);
	assert_non_null(want);
	txn_content(sequence, block, want, d->block_size);
	if (memcmp(want, fsblock(d, block), d->block_size) != 0)
		fail_msg("fs block %llu does not hold its copy from transaction %u",
			 (unsigned long long)block, sequence);
	free(want);
}

static void expect_orig_block(struct mem_disk *d, uint64_t block)
{
	uint8_t *want = malloc(d->block_size);
	assert_non_null(want);
	orig_content(block, want, d->block_size);
	if (memcmp(want, fsblock(d, block), d->block_size) != 0)
		fail_msg("fs block %llu was written but should be untouched",
			 (unsigned long long)block);
	free(want);
}

static void expect_journal_clean(struct mem_disk *d, uint32_t sequence)
{
	struct jbd2_superblock sb = journal_sb(d);
	assert_int_equal(sb.start, 0);
	assert_int_equal(sb.sequence, sequence);
}

/* A standard v3/64bit disk with 1 KiB blocks: 64-block journal, 256-block fs. */
static struct mem_disk *v3_disk(uint32_t first_sequence)
{
	struct mem_disk *d = disk_new(1024, 64, 256);
	journal_init(d, 0, INCOMPAT_V3_64, first_sequence);
	return d;
}

/* ------------------------------------------------------------------------ */
/* Checksums and superblock                                                  */
/* ------------------------------------------------------------------------ */

static void test_crc32c_known_answer(void **state)
{
	(void)state;
	/* Standard crc32c("123456789") = 0xE3069283; the library keeps the
	 * register un-inverted, as the kernel's crc32c() does. */
	assert_int_equal(jbd2_crc32c(~0u, "123456789", 9), ~0xE3069283u);
	assert_int_equal(jbd2_csum_seed(TEST_UUID), jbd2_crc32c(~0u, TEST_UUID, 16));
}

static void test_tag_sizes_and_capacities(void **state)
{
	(void)state;
	struct {
		enum jbd2_csum_version csum;
		bool b64;
		size_t tag;
	} cases[] = {
		{ JBD2_CSUM_V3, true, 16 }, { JBD2_CSUM_V3, false, 16 },
		{ JBD2_CSUM_V2, true, 14 }, { JBD2_CSUM_V2, false, 10 },
		{ JBD2_CSUM_NONE, true, 12 }, { JBD2_CSUM_NONE, false, 8 },
		{ JBD2_CSUM_V1, true, 12 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct jbd2_format fmt = { .block_size = 4096, .csum = cases[i].csum,
					   .has_64bit = cases[i].b64 };
		assert_int_equal(jbd2_tag_size(&fmt), cases[i].tag);
	}
	struct jbd2_format v3 = { .block_size = 4096, .csum = JBD2_CSUM_V3, .has_64bit = true };
	/* 12-byte header, 32 bytes for the first tag + UUID, 4-byte tail. */
	assert_int_equal(jbd2_descriptor_capacity(&v3), 1 + (4096 - 12 - 4 - 32) / 16);
	assert_int_equal(jbd2_descriptor_max_tags(&v3), (4096 - 12 - 4) / 16);
	assert_int_equal(jbd2_revoke_capacity(&v3), (4096 - 16 - 4) / 8);
	struct jbd2_format v32 = { .block_size = 4096, .csum = JBD2_CSUM_NONE };
	assert_int_equal(jbd2_revoke_capacity(&v32), (4096 - 16) / 4);
}

static void test_superblock_roundtrip(void **state)
{
	(void)state;
	uint8_t raw[JBD2_SUPERBLOCK_SIZE];
	memset(raw, 0, sizeof(raw));
	raw[0x100] = 0x77; /* s_users: not modelled, must survive encode */
	struct jbd2_superblock sb = {
		.blocktype = JBD2_BLOCKTYPE_SUPERBLOCK_V2, .block_size = 4096, .max_len = 1024,
		.first = 1, .sequence = 0xFFFFFFF0u, .start = 17, .error_number = -5,
		.feature_incompat = INCOMPAT_V3_64, .nr_users = 1, .max_transaction = 9,
		.checksum_type = JBD2_CHECKSUM_TYPE_CRC32C, .head = 33,
	};
	memcpy(sb.uuid, TEST_UUID, 16);
	jbd2_superblock_encode(&sb, raw);
	assert_int_equal(raw[0x100], 0x77);

	struct jbd2_superblock back;
	struct jbd2_error err = { 0 };
	assert_int_equal(jbd2_superblock_decode(raw, sizeof(raw), &back, &err), 0);
	assert_int_equal(back.sequence, 0xFFFFFFF0u);
	assert_int_equal(back.start, 17);
	assert_int_equal(back.error_number, -5);
	assert_int_equal(back.head, 33);
	assert_int_equal(back.checksum, jbd2_superblock_checksum(raw));
	assert_memory_equal(back.uuid, TEST_UUID, 16);

	raw[0x30] ^= 1; /* flip a UUID bit: checksum must catch it */
	assert_int_equal(jbd2_superblock_decode(raw, sizeof(raw), &back, &err), -EBADMSG);
	assert_non_null(strstr(err.message, "journal superblock"));
	assert_non_null(strstr(err.message, "checksum"));
}

static void test_superblock_set_tail(void **state)
{
	(void)state;
	struct mem_disk *d = v3_disk(9);
	struct jbd2_error err = { 0 };
	assert_int_equal(jbd2_superblock_set_tail(jblock(d, 0), 1024, 17, 12, &err), 0);
	struct jbd2_superblock sb = journal_sb(d); /* decode verifies the new checksum */
	assert_int_equal(sb.start, 17);
	assert_int_equal(sb.sequence, 12);
	assert_int_equal(jbd2_superblock_set_tail(jblock(d, 0), 1024, 0, 13, &err), 0);
	expect_journal_clean(d, 13);
	assert_int_equal(jbd2_superblock_set_tail(jblock(d, 0), 1024, 64, 13, &err), -EINVAL);
	assert_non_null(strstr(err.message, "new log start 64"));
	jblock(d, 0)[0] = 0;
	assert_int_equal(jbd2_superblock_set_tail(jblock(d, 0), 1024, 1, 13, &err), -EUCLEAN);
	disk_free(d);
}

static void test_superblock_rejects_bad_fields(void **state)
{
	(void)state;
	struct {
		uint32_t block_size, max_len, first, start;
		const char *cause;
	} cases[] = {
		{ 3000, 1024, 1, 0, "block size" },
		{ 512, 1024, 1, 0, "block size" },
		{ 131072, 1024, 1, 0, "block size" },
		{ 4096, 1024, 0, 0, "first log block" },
		{ 4096, 1024, 1024, 0, "first log block" },
		{ 4096, 1024, 8, 4, "log start" },
		{ 4096, 1024, 1, 1024, "log start" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t raw[JBD2_SUPERBLOCK_SIZE] = { 0 };
		struct jbd2_superblock sb = {
			.blocktype = JBD2_BLOCKTYPE_SUPERBLOCK_V2, .block_size = cases[i].block_size,
			.max_len = cases[i].max_len, .first = cases[i].first, .start = cases[i].start,
		};
		jbd2_superblock_encode(&sb, raw);
		struct jbd2_error err = { 0 };
		assert_int_equal(jbd2_superblock_decode(raw, sizeof(raw), &sb, &err), -EUCLEAN);
		if (!strstr(err.message, cases[i].cause))
			fail_msg("case %zu: message '%s' lacks '%s'", i, err.message, cases[i].cause);
	}
	uint8_t raw[JBD2_SUPERBLOCK_SIZE] = { 0 };
	struct jbd2_superblock sb;
	struct jbd2_error err = { 0 };
	assert_int_equal(jbd2_superblock_decode(raw, sizeof(raw), &sb, &err), -EUCLEAN);
	assert_non_null(strstr(err.message, "magic"));
	assert_int_equal(jbd2_superblock_decode(raw, 100, &sb, &err), -EINVAL);
	/* A descriptor block is not a superblock. */
	jbd2_header_encode(raw, JBD2_BLOCKTYPE_DESCRIPTOR, 1);
	assert_int_equal(jbd2_superblock_decode(raw, sizeof(raw), &sb, &err), -EUCLEAN);
	/* csum v3 with a non-crc32c checksum type */
	struct jbd2_superblock bad = { .blocktype = JBD2_BLOCKTYPE_SUPERBLOCK_V2, .block_size = 4096,
				       .max_len = 1024, .first = 1, .feature_incompat = INCOMPAT_V3_64,
				       .checksum_type = JBD2_CHECKSUM_TYPE_CRC32 };
	jbd2_superblock_encode(&bad, raw);
	assert_int_equal(jbd2_superblock_decode(raw, sizeof(raw), &sb, &err), -EUCLEAN);
	assert_non_null(strstr(err.message, "checksum type"));
}

static void test_format_rejects_unsupported_features(void **state)
{
	(void)state;
	struct jbd2_superblock sb = { .blocktype = JBD2_BLOCKTYPE_SUPERBLOCK_V2, .block_size = 4096,
				      .max_len = 1024, .first = 1 };
	struct jbd2_format fmt;
	struct jbd2_error err = { 0 };

	sb.feature_incompat = JBD2_FEATURE_INCOMPAT_FAST_COMMIT;
	assert_int_equal(jbd2_format_init(&fmt, &sb, 1000, &err), -EOPNOTSUPP);
	assert_non_null(strstr(err.message, "fast_commit"));
	sb.feature_incompat = 0x80;
	assert_int_equal(jbd2_format_init(&fmt, &sb, 1000, &err), -EOPNOTSUPP);
	sb.feature_incompat = 0;
	sb.feature_ro_compat = 1;
	assert_int_equal(jbd2_format_init(&fmt, &sb, 1000, &err), -EOPNOTSUPP);
	sb.feature_ro_compat = 0;
	sb.feature_incompat = JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3;
	assert_int_equal(jbd2_format_init(&fmt, &sb, 1000, &err), -EUCLEAN);
	sb.feature_incompat = JBD2_FEATURE_INCOMPAT_CSUM_V3;
	sb.feature_compat = JBD2_FEATURE_COMPAT_CHECKSUM;
	assert_int_equal(jbd2_format_init(&fmt, &sb, 1000, &err), -EUCLEAN);
	sb.feature_compat = 0;
	/* 32-bit journal in front of a filesystem bigger than 2^32 blocks */
	sb.feature_incompat = JBD2_FEATURE_INCOMPAT_CSUM_V3;
	assert_int_equal(jbd2_format_init(&fmt, &sb, (1ull << 32) + 1, &err), -EOPNOTSUPP);
	assert_int_equal(jbd2_format_init(&fmt, &sb, 1ull << 32, &err), 0);
	assert_int_equal(fmt.csum, JBD2_CSUM_V3);
	assert_false(fmt.has_64bit);
	assert_int_equal(jbd2_format_init(&fmt, &sb, 0, &err), -EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Known answers from e2fsprogs (debugfs 1.47: jo -c; jw -b 5000,5001; jw -r  */
/* 5000; jc — filesystem UUID 01234567-89ab-cdef-0123-456789abcdef)          */
/* ------------------------------------------------------------------------ */

struct byte_run {
	size_t offset;
	const char *hex;
};

static void build_block(uint8_t *block, size_t size, const struct byte_run *runs, size_t n)
{
	memset(block, 0, size);
	for (size_t i = 0; i < n; i++) {
		const char *h = runs[i].hex;
		for (size_t j = 0; h[2 * j]; j++) {
			unsigned v;
			sscanf(h + 2 * j, "%2x", &v);
			block[runs[i].offset + j] = (uint8_t)v;
		}
	}
}

static const struct byte_run E2FS_SUPERBLOCK[] = {
	{ 0x00, "c03b3998000000040000000000001000000004000000000100000001000000010000000000000000" },
	{ 0x28, "0000001300000000" },
	{ 0x30, "0123456789abcdef0123456789abcdef00000001" },
	{ 0x50, "04" },
	{ 0xfc, "f23af1dc" },
};
static const struct byte_run E2FS_DESCRIPTOR[] = {
	{ 0x00, "c03b39980000000100000001" },
	{ 0x0c, "000013880000000000000000" "2d3e2d4d" },
	{ 0x2c, "000013890000000b0000000005b37100" },
	/* debugfs 1.47 writes the first tag's UUID at the wrong offset; harmless */
	{ 0xcc, "0123456789abcdef0123456789abcdef" },
	{ 0xffc, "812ac026" },
};
static const struct byte_run E2FS_COMMIT1[] = {
	{ 0x00, "c03b39980000000200000001" },
	{ 0x10, "98b26050" },
	{ 0x30, "6b045ce90000000027852c18" },
};
static const struct byte_run E2FS_REVOKE2[] = {
	{ 0x00, "c03b3998000000050000000200000018" },
	{ 0x10, "0000000000001388" },
	{ 0xffc, "a40b0de6" },
};
static const struct byte_run E2FS_COMMIT2[] = {
	{ 0x00, "c03b39980000000200000002" },
	{ 0x10, "1ff5ebbc" },
	{ 0x30, "6b045ce90000000027855710" },
};

static void test_e2fsprogs_known_answers(void **state)
{
	(void)state;
	uint8_t block[4096], data[4096];
	struct jbd2_superblock sb;
	struct jbd2_format fmt;
	struct jbd2_error err = { 0 };

	build_block(block, sizeof(block), E2FS_SUPERBLOCK, 5);
	assert_int_equal(jbd2_superblock_decode(block, sizeof(block), &sb, &err), 0);
	assert_int_equal(sb.checksum, 0xf23af1dc);
	assert_int_equal(sb.start, 1);
	assert_int_equal(jbd2_format_init(&fmt, &sb, 16384, &err), 0);
	assert_int_equal(fmt.csum, JBD2_CSUM_V3);
	assert_true(fmt.has_64bit);

	build_block(block, sizeof(block), E2FS_DESCRIPTOR, 5);
	assert_true(jbd2_block_tail_verify(&fmt, block));
	struct jbd2_tag tags[256];
	size_t n;
	assert_int_equal(jbd2_descriptor_decode(&fmt, block, tags, 256, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(tags[0].fs_block, 5000);
	assert_int_equal(tags[0].flags, 0);
	assert_int_equal(tags[1].fs_block, 5001);
	assert_int_equal(tags[1].flags, JBD2_FLAG_ESCAPE | JBD2_FLAG_SAME_UUID | JBD2_FLAG_LAST_TAG);

	memset(data, 0xAB, sizeof(data));
	assert_int_equal(jbd2_data_checksum(&fmt, 1, data), tags[0].checksum);
	memset(data, 0x11, sizeof(data));
	jbd2_escape_block(data); /* the logged copy of a block that began with the magic */
	assert_int_equal(jbd2_data_checksum(&fmt, 1, data), tags[1].checksum);

	build_block(block, sizeof(block), E2FS_COMMIT1, 3);
	assert_true(jbd2_commit_verify(&fmt, block, 0));
	block[0x38] ^= 1;
	assert_false(jbd2_commit_verify(&fmt, block, 0));

	build_block(block, sizeof(block), E2FS_REVOKE2, 3);
	assert_true(jbd2_block_tail_verify(&fmt, block));
	uint64_t rec[600];
	assert_int_equal(jbd2_revoke_decode(&fmt, block, rec, 600, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(rec[0], 5000);
	/* Our encoder produces the very same revoke block. */
	uint8_t ours[4096];
	assert_int_equal(jbd2_revoke_encode(&fmt, 2, rec, 1, ours, &err), 0);
	assert_memory_equal(ours, block, sizeof(ours));

	build_block(block, sizeof(block), E2FS_COMMIT2, 3);
	assert_true(jbd2_commit_verify(&fmt, block, 0));
	/* ...and the same commit block, given the same (odd) commit time. */
	jbd2_commit_encode(&fmt, 2, 0x6b045ce900000000ull, 0x27855710, 0, ours);
	assert_memory_equal(ours, block, sizeof(ours));
}

/* ------------------------------------------------------------------------ */
/* Descriptor, revoke and commit blocks                                      */
/* ------------------------------------------------------------------------ */

static struct jbd2_format test_format(enum jbd2_csum_version csum, bool b64, uint32_t bs)
{
	struct jbd2_format fmt = { .block_size = bs, .first = 1, .last = 64, .csum = csum,
				   .has_64bit = b64, .fs_block_count = b64 ? (1ull << 40) : (1ull << 32) };
	memcpy(fmt.uuid, TEST_UUID, 16);
	if (csum == JBD2_CSUM_V2 || csum == JBD2_CSUM_V3)
		fmt.csum_seed = jbd2_csum_seed(TEST_UUID);
	return fmt;
}

static void check_descriptor_roundtrip(enum jbd2_csum_version csum, bool b64)
{
	struct jbd2_format fmt = test_format(csum, b64, 1024);
	size_t cap = jbd2_descriptor_capacity(&fmt);
	struct jbd2_tag *in = calloc(cap, sizeof(*in));
	struct jbd2_tag *out = calloc(jbd2_descriptor_max_tags(&fmt), sizeof(*out));
	uint8_t block[1024];
	struct jbd2_error err = { 0 };
	assert_non_null(in);
	assert_non_null(out);

	for (size_t i = 0; i < cap; i++) {
		in[i].fs_block = (b64 ? 0x1234500000000ull : 0xFFFF0000ull) + i * 7;
		in[i].flags = (i % 3 == 0) ? JBD2_FLAG_ESCAPE : 0;
		in[i].checksum = csum == JBD2_CSUM_V3 ? 0xA5A50000u + (uint32_t)i :
				 csum == JBD2_CSUM_V2 ? 0x5A00u + (uint32_t)i : 0;
	}
	assert_int_equal(jbd2_descriptor_encode(&fmt, 42, in, cap, block, &err), 0);
	struct jbd2_header h;
	jbd2_header_decode(block, &h);
	assert_int_equal(h.magic, JBD2_MAGIC);
	assert_int_equal(h.blocktype, JBD2_BLOCKTYPE_DESCRIPTOR);
	assert_int_equal(h.sequence, 42);
	/* The journal UUID follows the first tag only. */
	assert_memory_equal(block + 12 + jbd2_tag_size(&fmt), TEST_UUID, 16);
	assert_true(jbd2_block_tail_verify(&fmt, block));

	size_t n = 0;
	assert_int_equal(jbd2_descriptor_decode(&fmt, block, out, jbd2_descriptor_max_tags(&fmt),
						&n, &err), 0);
	assert_int_equal(n, cap);
	for (size_t i = 0; i < cap; i++) {
		assert_int_equal(out[i].fs_block, in[i].fs_block);
		assert_int_equal(out[i].checksum, in[i].checksum);
		uint32_t layout = (i ? JBD2_FLAG_SAME_UUID : 0) | (i == cap - 1 ? JBD2_FLAG_LAST_TAG : 0);
		assert_int_equal(out[i].flags, in[i].flags | layout);
	}
	if (csum == JBD2_CSUM_V2 || csum == JBD2_CSUM_V3) {
		block[100] ^= 0x40;
		assert_false(jbd2_block_tail_verify(&fmt, block));
	}
	free(in);
	free(out);
}

static void test_descriptor_roundtrip(void **state)
{
	(void)state;
	check_descriptor_roundtrip(JBD2_CSUM_V3, true);
	check_descriptor_roundtrip(JBD2_CSUM_V3, false);
	check_descriptor_roundtrip(JBD2_CSUM_V2, true);
	check_descriptor_roundtrip(JBD2_CSUM_V2, false);
	check_descriptor_roundtrip(JBD2_CSUM_NONE, true);
	check_descriptor_roundtrip(JBD2_CSUM_NONE, false);
	check_descriptor_roundtrip(JBD2_CSUM_V1, true);
}

static void test_descriptor_edge_cases(void **state)
{
	(void)state;
	struct jbd2_format fmt = test_format(JBD2_CSUM_V3, false, 1024);
	struct jbd2_tag tag = { .fs_block = 1ull << 32 };
	uint8_t block[1024];
	struct jbd2_tag out[128];
	size_t n;
	struct jbd2_error err = { 0 };

	/* A 32-bit journal cannot name block 2^32. */
	assert_int_equal(jbd2_descriptor_encode(&fmt, 1, &tag, 1, block, &err), -EINVAL);
	assert_int_equal(jbd2_descriptor_encode(&fmt, 1, &tag, 0, block, &err), -EINVAL);

	/* Without 64BIT, a v3 tag's high word is ignored on read (kernel does too). */
	tag.fs_block = 77;
	assert_int_equal(jbd2_descriptor_encode(&fmt, 1, &tag, 1, block, &err), 0);
	jbd2_put_be32(block + 12 + 8, 0xDEAD);
	assert_int_equal(jbd2_descriptor_decode(&fmt, block, out, 128, &n, &err), 0);
	assert_int_equal(out[0].fs_block, 77);

	/* A full descriptor without LAST_TAG (as debugfs writes one) ends at the tail;
	 * with every tag SAME_UUID it holds max_tags tags. */
	fmt = test_format(JBD2_CSUM_V3, true, 1024);
	memset(block, 0, sizeof(block));
	jbd2_header_encode(block, JBD2_BLOCKTYPE_DESCRIPTOR, 1);
	for (size_t off = 12; off + 16 <= 1024 - 4; off += 16) {
		jbd2_put_be32(block + off, (uint32_t)off);
		jbd2_put_be32(block + off + 4, JBD2_FLAG_SAME_UUID);
	}
	assert_int_equal(jbd2_descriptor_decode(&fmt, block, out, 128, &n, &err), 0);
	assert_int_equal(n, jbd2_descriptor_max_tags(&fmt));
	assert_int_equal(out[n - 1].fs_block, 12 + 16 * (n - 1));
	/* ...and an array too small for them is an error, not an overflow. */
	assert_int_equal(jbd2_descriptor_decode(&fmt, block, out, 10, &n, &err), -EINVAL);

	/* Tag flags are the 16 bits at offset 6, even in a tag3: debugfs 1.47
	 * leaves UUID bytes in 4-5 of one tag of a full descriptor. */
	block[12 + 4] = 0x86;
	block[12 + 5] = 0x14;
	assert_int_equal(jbd2_descriptor_decode(&fmt, block, out, 128, &n, &err), 0);
	assert_int_equal(out[0].flags, JBD2_FLAG_SAME_UUID);

	/* Unknown tag flags are corruption. */
	jbd2_put_be16(block + 12 + 6, 0x100 | JBD2_FLAG_LAST_TAG);
	assert_int_equal(jbd2_descriptor_decode(&fmt, block, out, 128, &n, &err), -EUCLEAN);
	assert_non_null(strstr(err.message, "flags"));
}

static void test_escape(void **state)
{
	(void)state;
	uint8_t block[1024];
	memset(block, 0x5A, sizeof(block));
	assert_false(jbd2_block_needs_escape(block));
	jbd2_put_be32(block, JBD2_MAGIC);
	assert_true(jbd2_block_needs_escape(block));
	jbd2_escape_block(block);
	assert_int_equal(jbd2_get_be32(block), 0);
	assert_int_equal(block[4], 0x5A);
	jbd2_unescape_block(block);
	assert_int_equal(jbd2_get_be32(block), JBD2_MAGIC);
}

static void test_escaped_block_survives_writer_and_replay(void **state)
{
	(void)state;
	struct mem_disk *d = v3_disk(5);
	struct jbd2_format fmt = journal_format(d);
	uint8_t content[1024];
	memset(content, 0x3C, sizeof(content));
	jbd2_put_be32(content, JBD2_MAGIC); /* looks like a log block */
	jbd2_header_encode(content, JBD2_BLOCKTYPE_COMMIT, 5);
	struct jbd2_txn_block tb = { .fs_block = 9, .data = content };
	struct jbd2_txn txn = { .sequence = 5, .blocks = &tb, .block_count = 1 };
	struct jbd2_error err = { 0 };
	uint32_t next;
	struct jbd2_journal_writer w = disk_writer(d);
	assert_int_equal(jbd2_write_transaction(&fmt, &txn, 1, &w, &next, &err), 0);
	assert_int_equal(next, 4);
	/* In the log the data block is escaped and its tag says so. */
	assert_int_equal(jbd2_get_be32(jblock(d, 2)), 0);
	struct jbd2_tag tag;
	size_t n;
	assert_int_equal(jbd2_descriptor_decode(&fmt, jblock(d, 1), &tag, 1, &n, &err), 0);
	assert_true(tag.flags & JBD2_FLAG_ESCAPE);
	assert_true(jbd2_data_checksum_verify(&fmt, &tag, 5, jblock(d, 2)));

	journal_set_start(d, 1, 5);
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.transactions_replayed, 1);
	assert_memory_equal(fsblock(d, 9), content, sizeof(content));
	disk_free(d);
}

static void test_revoke_block_roundtrip_and_bounds(void **state)
{
	(void)state;
	struct jbd2_error err = { 0 };
	uint8_t block[1024];
	size_t n;

	for (int b64 = 0; b64 <= 1; b64++) {
		struct jbd2_format fmt = test_format(JBD2_CSUM_V3, b64, 1024);
		size_t cap = jbd2_revoke_capacity(&fmt);
		uint64_t *in = calloc(cap, sizeof(*in)), *out = calloc(cap, sizeof(*out));
		assert_non_null(in);
		assert_non_null(out);
		for (size_t i = 0; i < cap; i++)
			in[i] = (b64 ? 0xABCD00000000ull : 0x80000000ull) + i;
		assert_int_equal(jbd2_revoke_encode(&fmt, 8, in, cap, block, &err), 0);
		assert_true(jbd2_block_tail_verify(&fmt, block));
		assert_int_equal(jbd2_get_be32(block + 12), 16 + cap * (b64 ? 8 : 4));
		assert_int_equal(jbd2_revoke_decode(&fmt, block, out, cap, &n, &err), 0);
		assert_int_equal(n, cap);
		assert_memory_equal(in, out, cap * sizeof(*in));
		assert_int_equal(jbd2_revoke_encode(&fmt, 8, in, cap + 1, block, &err), -EINVAL);
		free(in);
		free(out);
	}

	struct jbd2_format fmt = test_format(JBD2_CSUM_V3, true, 1024);
	uint64_t rec[200];
	uint32_t bad_counts[] = { 0, 15, 17, 1024, 1021, 0xFFFFFFFF };
	for (size_t i = 0; i < sizeof(bad_counts) / sizeof(bad_counts[0]); i++) {
		memset(block, 0, sizeof(block));
		jbd2_header_encode(block, JBD2_BLOCKTYPE_REVOKE, 1);
		jbd2_put_be32(block + 12, bad_counts[i]);
		assert_int_equal(jbd2_revoke_decode(&fmt, block, rec, 200, &n, &err), -EUCLEAN);
		assert_non_null(strstr(err.message, "r_count"));
	}
	/* 32-bit records cannot carry block 2^32. */
	struct jbd2_format f32 = test_format(JBD2_CSUM_V3, false, 1024);
	uint64_t big = 1ull << 32;
	assert_int_equal(jbd2_revoke_encode(&f32, 1, &big, 1, block, &err), -EINVAL);
}

static void test_commit_block_checksums(void **state)
{
	(void)state;
	uint8_t block[1024];
	struct jbd2_commit c;

	struct jbd2_format v3 = test_format(JBD2_CSUM_V3, true, 1024);
	jbd2_commit_encode(&v3, 99, 1700000000, 500, 0, block);
	jbd2_commit_decode(block, &c);
	assert_int_equal(c.sequence, 99);
	assert_int_equal(c.commit_sec, 1700000000);
	assert_int_equal(c.commit_nsec, 500);
	assert_int_equal(c.checksum_type, 0);
	assert_int_equal(c.checksum, jbd2_commit_checksum(&v3, block));
	assert_true(jbd2_commit_verify(&v3, block, 0));
	block[1023] ^= 1; /* the checksum covers the whole block */
	assert_false(jbd2_commit_verify(&v3, block, 0));

	struct jbd2_format v2 = test_format(JBD2_CSUM_V2, true, 1024);
	jbd2_commit_encode(&v2, 7, 1, 2, 0, block);
	assert_true(jbd2_commit_verify(&v2, block, 0));
	block[0x30] ^= 1;
	assert_false(jbd2_commit_verify(&v2, block, 0));

	struct jbd2_format v1 = test_format(JBD2_CSUM_V1, true, 1024);
	jbd2_commit_encode(&v1, 7, 1, 2, 0xCAFEF00D, block);
	jbd2_commit_decode(block, &c);
	assert_int_equal(c.checksum_type, JBD2_CHECKSUM_TYPE_CRC32);
	assert_int_equal(c.checksum_size, 4);
	assert_true(jbd2_commit_verify(&v1, block, 0xCAFEF00D));
	assert_false(jbd2_commit_verify(&v1, block, 0xCAFEF00E));

	struct jbd2_format none = test_format(JBD2_CSUM_NONE, true, 1024);
	jbd2_commit_encode(&none, 7, 1, 2, 0, block);
	assert_true(jbd2_commit_verify(&none, block, 0));
}

static void test_data_checksum_v2_is_truncated(void **state)
{
	(void)state;
	uint8_t block[1024];
	memset(block, 0x42, sizeof(block));
	struct jbd2_format v2 = test_format(JBD2_CSUM_V2, true, 1024);
	struct jbd2_format v3 = test_format(JBD2_CSUM_V3, true, 1024);
	uint32_t full = jbd2_data_checksum(&v3, 12, block);
	assert_int_equal(jbd2_data_checksum(&v2, 12, block), full & 0xFFFF);
	/* The sequence number is part of the checksum. */
	assert_int_not_equal(jbd2_data_checksum(&v3, 13, block), full);
	struct jbd2_tag tag = { .checksum = full };
	assert_true(jbd2_data_checksum_verify(&v3, &tag, 12, block));
	assert_false(jbd2_data_checksum_verify(&v3, &tag, 13, block));
}

static void test_log_arithmetic(void **state)
{
	(void)state;
	struct jbd2_format fmt = { .first = 10, .last = 20 };
	assert_int_equal(jbd2_log_size(&fmt), 10);
	assert_int_equal(jbd2_log_advance(&fmt, 18, 1), 19);
	assert_int_equal(jbd2_log_advance(&fmt, 19, 1), 10);
	assert_int_equal(jbd2_log_advance(&fmt, 15, 27), 12);
	assert_int_equal(jbd2_log_distance(&fmt, 18, 12), 4);
	assert_int_equal(jbd2_log_distance(&fmt, 12, 18), 6);
	assert_true(jbd2_log_contains(&fmt, 10));
	assert_false(jbd2_log_contains(&fmt, 20));
	assert_false(jbd2_log_contains(&fmt, 9));
	assert_int_equal(jbd2_log_free(&fmt, 0, 14), 9);    /* empty: all but one */
	assert_int_equal(jbd2_log_free(&fmt, 12, 18), 3);   /* 6 used */
	assert_int_equal(jbd2_log_free(&fmt, 18, 12), 5);   /* 4 used, wrapped */
	assert_int_equal(jbd2_log_free(&fmt, 12, 11), 0);   /* full */
	assert_true(jbd2_tid_gt(0, 0xFFFFFFFF));
	assert_true(jbd2_tid_geq(5, 5));
	assert_false(jbd2_tid_gt(0xFFFFFFFF, 0));
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */
/* ------------------------------------------------------------------------ */

static void test_layout_counts(void **state)
{
	(void)state;
	struct jbd2_format fmt = test_format(JBD2_CSUM_V3, true, 4096);
	fmt.last = 100000;
	size_t per_desc = jbd2_descriptor_capacity(&fmt); /* 254 */
	size_t per_revoke = jbd2_revoke_capacity(&fmt);   /* 509 */
	assert_int_equal(per_desc, 254);
	assert_int_equal(per_revoke, 509);
	assert_int_equal(jbd2_txn_journal_blocks(&fmt, 0, 0), 1);
	assert_int_equal(jbd2_txn_journal_blocks(&fmt, 1, 0), 3);
	assert_int_equal(jbd2_txn_journal_blocks(&fmt, per_desc, 0), per_desc + 2);
	assert_int_equal(jbd2_txn_journal_blocks(&fmt, per_desc + 1, 0), per_desc + 4);
	assert_int_equal(jbd2_txn_journal_blocks(&fmt, 0, per_revoke), 2);
	assert_int_equal(jbd2_txn_journal_blocks(&fmt, 0, per_revoke + 1), 3);
	struct jbd2_txn_layout layout;
	struct jbd2_error err = { 0 };
	assert_int_equal(jbd2_txn_layout(&fmt, 600, 1000, &layout, &err), 0);
	assert_int_equal(layout.revoke_blocks, 2);
	assert_int_equal(layout.descriptor_blocks, 3);
	assert_int_equal(layout.data_blocks, 600);
	assert_int_equal(layout.total, 2 + 3 + 600 + 1);
	fmt.last = 1 + 605; /* one block short */
	assert_int_equal(jbd2_txn_layout(&fmt, 600, 1000, &layout, &err), -ENOSPC);
	assert_non_null(strstr(err.message, "needs 606 journal blocks"));
}

static void test_writer_rejects_bad_requests(void **state)
{
	(void)state;
	struct mem_disk *d = v3_disk(1);
	struct jbd2_format fmt = journal_format(d);
	uint8_t data[1024] = { 0 };
	struct jbd2_txn_block tb = { .fs_block = 3, .data = data };
	uint64_t revoked = 3;
	struct jbd2_txn txn = { .sequence = 9, .blocks = &tb, .block_count = 1 };
	struct jbd2_error err = { 0 };
	uint32_t next;
	struct jbd2_journal_writer w = disk_writer(d);

	assert_int_equal(jbd2_write_transaction(&fmt, &txn, 0, &w, &next, &err), -EINVAL);
	assert_non_null(strstr(err.message, "head 0 outside"));
	assert_int_equal(jbd2_write_transaction(&fmt, &txn, 64, &w, &next, &err), -EINVAL);

	txn.revoked = &revoked;
	txn.revoked_count = 1;
	assert_int_equal(jbd2_write_transaction(&fmt, &txn, 1, &w, &next, &err), -EINVAL);
	assert_non_null(strstr(err.message, "transaction 9: block 3 is both logged and revoked"));

	txn.revoked_count = 0;
	tb.fs_block = 256;
	assert_int_equal(jbd2_write_transaction(&fmt, &txn, 1, &w, &next, &err), -EINVAL);
	assert_non_null(strstr(err.message, "beyond filesystem"));
	revoked = 300;
	tb.fs_block = 3;
	txn.revoked_count = 1;
	assert_int_equal(jbd2_write_transaction(&fmt, &txn, 1, &w, &next, &err), -EINVAL);

	tb.data = NULL;
	txn.revoked_count = 0;
	assert_int_equal(jbd2_write_transaction(&fmt, &txn, 1, &w, &next, &err), -EINVAL);

	/* More blocks than the log holds */
	struct jbd2_txn_block many[70];
	for (int i = 0; i < 70; i++)
		many[i] = (struct jbd2_txn_block){ .fs_block = (uint64_t)i, .data = data };
	struct jbd2_txn big = { .sequence = 9, .blocks = many, .block_count = 70 };
	assert_int_equal(jbd2_write_transaction(&fmt, &big, 1, &w, &next, &err), -ENOSPC);
	assert_int_equal(d->journal_writes, 0);
	disk_free(d);
}

static void test_writer_barrier_before_commit(void **state)
{
	(void)state;
	struct mem_disk *d = v3_disk(1);
	uint64_t blocks[] = { 4, 5 };
	uint64_t revoked[] = { 6 };
	log_txn(d, 1, 1, blocks, 2, revoked, 1);
	/* revoke, descriptor, 2 data, flush, commit, flush */
	assert_string_equal(d->events, "WWWWFCF");
	disk_free(d);
}

static int failing_write(void *ctx, uint32_t n, const void *buf)
{
	(void)buf;
	unsigned *left = ctx;
	(void)n;
	return (*left)-- == 0 ? -EIO : 0;
}

static void test_writer_reports_write_failure(void **state)
{
	(void)state;
	struct mem_disk *d = v3_disk(1);
	struct jbd2_format fmt = journal_format(d);
	uint8_t data[1024] = { 0 };
	struct jbd2_txn_block tb[2] = { { 3, data }, { 4, data } };
	struct jbd2_txn txn = { .sequence = 12, .blocks = tb, .block_count = 2 };
	unsigned left = 2;
	struct jbd2_journal_writer w = { .ctx = &left, .write_block = failing_write };
	struct jbd2_error err = { 0 };
	uint32_t next = 0;
	assert_int_equal(jbd2_write_transaction(&fmt, &txn, 10, &w, &next, &err), -EIO);
	assert_non_null(strstr(err.message, "transaction 12: writing data block at journal block 12"));
	assert_int_equal(next, 0);
	disk_free(d);
}

/* ------------------------------------------------------------------------ */
/* Replay: round trips                                                       */
/* ------------------------------------------------------------------------ */

static void check_roundtrip(uint32_t compat, uint32_t incompat, uint32_t bs)
{
	struct mem_disk *d = disk_new(bs, 64, 256);
	journal_init(d, compat, incompat, 100);
	uint64_t t1[] = { 1, 2, 3 }, t2[] = { 2, 200 }, t3[] = { 255 };
	uint32_t head = log_txn(d, 1, 100, t1, 3, NULL, 0);
	head = log_txn(d, head, 101, t2, 2, NULL, 0);
	log_txn(d, head, 102, t3, 1, NULL, 0);
	journal_set_start(d, 1, 100);

	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_false(rep.was_clean);
	assert_int_equal(rep.first_transaction, 100);
	assert_int_equal(rep.transactions_replayed, 3);
	assert_int_equal(rep.blocks_written, 6);
	assert_int_equal(rep.stop_reason, JBD2_STOP_END_OF_LOG);
	assert_int_equal(rep.stop_transaction, 103);
	assert_int_equal(rep.next_sequence, 104);
	expect_txn_block(d, 1, 100);
	expect_txn_block(d, 2, 101); /* the later copy wins */
	expect_txn_block(d, 3, 100);
	expect_txn_block(d, 200, 101);
	expect_txn_block(d, 255, 102);
	expect_orig_block(d, 0);
	expect_orig_block(d, 4);
	expect_journal_clean(d, 104);
	disk_free(d);
}

static void test_roundtrip_every_format(void **state)
{
	(void)state;
	check_roundtrip(0, INCOMPAT_V3_64, 1024);
	check_roundtrip(0, INCOMPAT_V3_64, 4096);
	check_roundtrip(0, JBD2_FEATURE_INCOMPAT_CSUM_V3, 1024);
	check_roundtrip(0, JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_64BIT, 1024);
	check_roundtrip(0, JBD2_FEATURE_INCOMPAT_CSUM_V2, 2048);
	check_roundtrip(0, JBD2_FEATURE_INCOMPAT_64BIT, 1024);
	check_roundtrip(0, 0, 1024);
	check_roundtrip(JBD2_FEATURE_COMPAT_CHECKSUM, JBD2_FEATURE_INCOMPAT_64BIT, 1024);
}

static void test_roundtrip_multi_descriptor_and_revoke_blocks(void **state)
{
	(void)state;
	struct mem_disk *d = disk_new(1024, 300, 4096);
	journal_init(d, 0, INCOMPAT_V3_64, 1);
	struct jbd2_format fmt = journal_format(d);
	size_t nblocks = 2 * jbd2_descriptor_capacity(&fmt) + 5;  /* 3 descriptors */
	size_t nrevoked = jbd2_revoke_capacity(&fmt) + 3;         /* 2 revoke blocks */
	uint64_t *blocks = calloc(nblocks, sizeof(*blocks));
	uint64_t *revoked = calloc(nrevoked, sizeof(*revoked));
	assert_non_null(blocks);
	assert_non_null(revoked);
	for (size_t i = 0; i < nblocks; i++)
		blocks[i] = 1000 + i;
	for (size_t i = 0; i < nrevoked; i++)
		revoked[i] = 2000 + i;
	uint32_t head = log_txn(d, 1, 1, blocks, nblocks, NULL, 0);
	/* Transaction 2 revokes blocks that transaction 1 did not touch, and
	 * transaction 3 relogs one of them: that copy must be replayed. */
	head = log_txn(d, head, 2, NULL, 0, revoked, nrevoked);
	uint64_t relog[] = { 2001 };
	uint32_t end = log_txn(d, head, 3, relog, 1, NULL, 0);
	assert_int_equal(end - 1, jbd2_txn_journal_blocks(&fmt, nblocks, 0) +
			 jbd2_txn_journal_blocks(&fmt, 0, nrevoked) + 3);
	journal_set_start(d, 1, 1);

	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.transactions_replayed, 3);
	assert_int_equal(rep.blocks_written, nblocks + 1);
	assert_int_equal(rep.revoke_records, nrevoked);
	for (size_t i = 0; i < nblocks; i++)
		expect_txn_block(d, blocks[i], 1);
	expect_txn_block(d, 2001, 3);
	expect_orig_block(d, 2000);
	free(blocks);
	free(revoked);
	disk_free(d);
}

static void test_wrapped_transaction(void **state)
{
	(void)state;
	/* Log is [1, 16); transaction 7 starts at 13 and wraps to 1, 2, 3. */
	struct mem_disk *d = disk_new(1024, 16, 64);
	journal_init(d, 0, INCOMPAT_V3_64, 7);
	uint64_t t7[] = { 10, 11, 12, 13 }, t8[] = { 14 };
	uint64_t revoked[] = { 30 };
	uint32_t head = log_txn(d, 13, 7, t7, 4, revoked, 1);
	assert_int_equal(head, 5); /* revoke 13, desc 14, data 15 1 2 3, commit 4 */
	head = log_txn(d, head, 8, t8, 1, NULL, 0);
	journal_set_start(d, 13, 7);

	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.log_start, 13);
	assert_int_equal(rep.transactions_replayed, 2);
	assert_int_equal(rep.blocks_written, 5);
	for (size_t i = 0; i < 4; i++)
		expect_txn_block(d, t7[i], 7);
	expect_txn_block(d, 14, 8);
	assert_int_equal(rep.stop_block, head);
	expect_journal_clean(d, 10);
	disk_free(d);
}

static void test_revoke_semantics(void **state)
{
	(void)state;
	struct mem_disk *d = v3_disk(20);
	/* 20 logs A B C; 21 revokes A B and E; 22 logs A again and E;
	 * 23 revokes C; 24 revokes E again (E logged in 22 must be skipped). */
	enum { A = 40, B = 41, C = 42, E = 44 };
	uint64_t t20[] = { A, B, C }, r21[] = { A, B, E }, t22[] = { A, E }, r23[] = { C },
		 r24[] = { E };
	uint32_t head = log_txn(d, 1, 20, t20, 3, NULL, 0);
	head = log_txn(d, head, 21, NULL, 0, r21, 3);
	head = log_txn(d, head, 22, t22, 2, NULL, 0);
	head = log_txn(d, head, 23, NULL, 0, r23, 1);
	log_txn(d, head, 24, NULL, 0, r24, 1);
	journal_set_start(d, 1, 20);

	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.transactions_replayed, 5);
	expect_txn_block(d, A, 22);   /* logged after the revoke: replayed */
	expect_orig_block(d, B);      /* revoked later: never replayed */
	expect_orig_block(d, C);
	expect_orig_block(d, E);      /* revoked again in 24 >= 22 */
	assert_int_equal(rep.blocks_written, 1);
	assert_int_equal(rep.blocks_revoked, 4);
	assert_int_equal(rep.revoke_records, 5);
	disk_free(d);
}

static void test_revoke_in_same_transaction_applies(void **state)
{
	(void)state;
	/* Our writer refuses it, but a foreign journal may revoke a block in the
	 * transaction that logs it: the revoke (>= the copy's id) wins. */
	struct mem_disk *d = v3_disk(10);
	struct jbd2_format fmt = journal_format(d);
	uint64_t logged[] = { 70, 72 }, revoked[] = { 71 };
	log_txn(d, 1, 10, logged, 2, revoked, 1); /* revoke at block 1 */
	jbd2_put_be64(jblock(d, 1) + 16, 70);
	jbd2_block_tail_set(&fmt, jblock(d, 1));
	journal_set_start(d, 1, 10);
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.transactions_replayed, 1);
	expect_orig_block(d, 70);
	expect_txn_block(d, 72, 10);
	assert_int_equal(rep.blocks_revoked, 1);
	disk_free(d);
}

static void test_revokes_of_unreplayed_transaction_are_ignored(void **state)
{
	(void)state;
	struct mem_disk *d = v3_disk(1);
	uint64_t t1[] = { 5 }, r2[] = { 5 };
	uint32_t head = log_txn(d, 1, 1, t1, 1, NULL, 0);
	uint32_t t2_start = head;
	log_txn(d, head, 2, NULL, 0, r2, 1);
	/* Tear transaction 2: its commit block never reached the disk. */
	memset(jblock(d, t2_start + 1), 0, d->block_size);
	journal_set_start(d, 1, 1);
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.transactions_replayed, 1);
	assert_int_equal(rep.stop_reason, JBD2_STOP_NO_COMMIT);
	expect_txn_block(d, 5, 1);
	assert_int_equal(rep.revoke_records, 0);
	disk_free(d);
}

/* ------------------------------------------------------------------------ */
/* Replay: torn and corrupt journals                                         */
/* ------------------------------------------------------------------------ */

/* Three transactions 30, 31, 32 at block 1, each logging 2 blocks:
 *   30: desc 1, data 2 3, commit 4     (blocks 50, 51)
 *   31: desc 5, data 6 7, commit 8     (blocks 52, 53)
 *   32: desc 9, data 10 11, commit 12  (blocks 54, 55)  */
static struct mem_disk *three_txn_disk(uint32_t compat, uint32_t incompat)
{
	struct mem_disk *d = disk_new(1024, 64, 256);
	journal_init(d, compat, incompat, 30);
	uint64_t t30[] = { 50, 51 }, t31[] = { 52, 53 }, t32[] = { 54, 55 };
	uint32_t head = log_txn(d, 1, 30, t30, 2, NULL, 0);
	head = log_txn(d, head, 31, t31, 2, NULL, 0);
	log_txn(d, head, 32, t32, 2, NULL, 0);
	journal_set_start(d, 1, 30);
	return d;
}

/* After a stop at transaction 31: 30 replayed, 31 and 32 not. */
static void expect_stopped_at_31(struct mem_disk *d, const struct jbd2_replay_report *rep,
				 enum jbd2_stop_reason reason, uint32_t block)
{
	if (rep->stop_reason != reason)
		fail_msg("stopped for %s (%s), expected %s", jbd2_stop_reason_name(rep->stop_reason),
			 rep->stop_detail, jbd2_stop_reason_name(reason));
	assert_int_equal(rep->transactions_replayed, 1);
	assert_int_equal(rep->stop_transaction, 31);
	assert_int_equal(rep->stop_block, block);
	assert_non_null(strstr(rep->stop_detail, "transaction 31"));
	expect_txn_block(d, 50, 30);
	expect_txn_block(d, 51, 30);
	for (uint64_t b = 52; b <= 55; b++)
		expect_orig_block(d, b);
	expect_journal_clean(d, 32);
}

static void test_torn_transaction_without_commit(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(0, INCOMPAT_V3_64);
	memset(jblock(d, 8), 0, d->block_size); /* 31's commit block never written */
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	expect_stopped_at_31(d, &rep, JBD2_STOP_NO_COMMIT, 8);
	assert_non_null(strstr(rep.stop_detail, "no commit block"));
	disk_free(d);
}

static void test_bad_commit_checksum(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(0, INCOMPAT_V3_64);
	jblock(d, 8)[0x3F] ^= 0x10; /* inside 31's commit block */
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	expect_stopped_at_31(d, &rep, JBD2_STOP_BAD_COMMIT, 8);
	assert_non_null(strstr(rep.stop_detail, "commit block at journal block 8"));
	disk_free(d);
}

static void test_bad_data_checksum(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(0, INCOMPAT_V3_64);
	jblock(d, 7)[500] ^= 0x01; /* copy of block 53 */
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	expect_stopped_at_31(d, &rep, JBD2_STOP_BAD_DATA, 7);
	assert_non_null(strstr(rep.stop_detail, "copy of block 53 at journal block 7"));
	disk_free(d);
}

static void test_bad_descriptor_checksum(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(0, INCOMPAT_V3_64);
	jblock(d, 5)[200] ^= 0x80;
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	expect_stopped_at_31(d, &rep, JBD2_STOP_BAD_DESCRIPTOR, 5);
	disk_free(d);
}

static void test_bad_revoke_block(void **state)
{
	(void)state;
	struct mem_disk *d = v3_disk(30);
	uint64_t t30[] = { 50, 51 }, r31[] = { 50 };
	uint32_t head = log_txn(d, 1, 30, t30, 2, NULL, 0); /* blocks 1..4 */
	log_txn(d, head, 31, NULL, 0, r31, 1);              /* revoke 5, commit 6 */
	journal_set_start(d, 1, 30);
	jblock(d, 5)[20] ^= 0xFF;
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.stop_reason, JBD2_STOP_BAD_REVOKE);
	assert_int_equal(rep.stop_transaction, 31);
	assert_int_equal(rep.transactions_replayed, 1);
	expect_txn_block(d, 50, 30); /* the corrupt revoke was not applied */
	expect_txn_block(d, 51, 30);
	disk_free(d);
}

static void test_stale_sequence_ends_log(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(0, INCOMPAT_V3_64);
	/* The log is said to start at block 5 with transaction 40, but block 5
	 * holds transaction 31 of an older epoch: nothing to replay. */
	journal_set_start(d, 5, 40);
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.stop_reason, JBD2_STOP_END_OF_LOG);
	assert_int_equal(rep.transactions_replayed, 0);
	assert_int_equal(rep.stop_transaction, 40);
	assert_non_null(strstr(rep.stop_detail, "holds a block of transaction 31"));
	assert_int_equal(d->fs_writes, 0);
	expect_journal_clean(d, 41);
	disk_free(d);
}

static void test_block_number_beyond_filesystem(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(0, INCOMPAT_V3_64);
	/* The same journal in front of a smaller filesystem: block 53 is out. */
	d->fs_blocks = 53;
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.stop_reason, JBD2_STOP_BAD_BLOCK_NUMBER);
	assert_int_equal(rep.stop_transaction, 31);
	assert_int_equal(rep.transactions_replayed, 1);
	assert_non_null(strstr(rep.stop_detail, "block 53 beyond the filesystem"));
	d->fs_blocks = 256;
	expect_orig_block(d, 52);
	disk_free(d);
}

static void test_unknown_block_type(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(0, JBD2_FEATURE_INCOMPAT_64BIT);
	jbd2_header_encode(jblock(d, 5), 9, 31);
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	expect_stopped_at_31(d, &rep, JBD2_STOP_BAD_BLOCK_TYPE, 5);
	disk_free(d);
}

static void test_v1_checksum_mismatch(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(JBD2_FEATURE_COMPAT_CHECKSUM, JBD2_FEATURE_INCOMPAT_64BIT);
	jblock(d, 6)[300] ^= 0x04; /* a data block of 31: only the v1 crc in the commit sees it */
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	expect_stopped_at_31(d, &rep, JBD2_STOP_BAD_COMMIT, 8);
	disk_free(d);
}

static void test_log_overrun_without_checksums(void **state)
{
	(void)state;
	/* A descriptor claiming more data blocks than the whole log has. */
	struct mem_disk *d = disk_new(1024, 10, 100);
	journal_init(d, 0, JBD2_FEATURE_INCOMPAT_64BIT, 3);
	struct jbd2_format fmt = journal_format(d);
	struct jbd2_tag tags[20];
	for (int i = 0; i < 20; i++)
		tags[i] = (struct jbd2_tag){ .fs_block = (uint64_t)i };
	struct jbd2_error err = { 0 };
	assert_int_equal(jbd2_descriptor_encode(&fmt, 3, tags, 20, jblock(d, 1), &err), 0);
	journal_set_start(d, 1, 3);
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.stop_reason, JBD2_STOP_LOG_OVERRUN);
	assert_int_equal(rep.stop_transaction, 3);
	assert_int_equal(d->fs_writes, 0);
	disk_free(d);
}

static void test_full_log_ends_cleanly(void **state)
{
	(void)state;
	/* Log [1, 10) filled exactly by three 3-block transactions. */
	struct mem_disk *d = disk_new(1024, 10, 100);
	journal_init(d, 0, INCOMPAT_V3_64, 1);
	uint64_t b[] = { 7 };
	uint32_t head = 1;
	for (uint32_t t = 1; t <= 3; t++) {
		uint64_t blk = b[0] + t;
		head = log_txn(d, head, t, &blk, 1, NULL, 0);
	}
	assert_int_equal(head, 1);
	journal_set_start(d, 1, 1);
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.transactions_replayed, 3);
	assert_int_equal(rep.stop_reason, JBD2_STOP_END_OF_LOG);
	expect_txn_block(d, 8, 1);
	expect_txn_block(d, 10, 3);
	disk_free(d);
}

static void test_sequence_wraparound(void **state)
{
	(void)state;
	struct mem_disk *d = v3_disk(0xFFFFFFFEu);
	uint64_t a[] = { 60 }, r[] = { 60 }, c[] = { 61 };
	uint32_t head = log_txn(d, 1, 0xFFFFFFFEu, a, 1, NULL, 0);
	head = log_txn(d, head, 0xFFFFFFFFu, c, 1, NULL, 0);
	head = log_txn(d, head, 0, NULL, 0, r, 1);       /* revokes 60 across the wrap */
	log_txn(d, head, 1, a, 1, NULL, 0);              /* and 60 is logged again */
	journal_set_start(d, 1, 0xFFFFFFFEu);
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.transactions_replayed, 4);
	expect_txn_block(d, 60, 1);
	expect_txn_block(d, 61, 0xFFFFFFFFu);
	assert_int_equal(rep.blocks_revoked, 1);
	assert_int_equal(rep.next_sequence, 3);
	expect_journal_clean(d, 3);
	disk_free(d);
}

/* ------------------------------------------------------------------------ */
/* Replay: superblock handling, dry run, errors                              */
/* ------------------------------------------------------------------------ */

static void test_clean_journal_is_left_alone(void **state)
{
	(void)state;
	struct mem_disk *d = v3_disk(77);
	uint64_t t[] = { 5 };
	log_txn(d, 1, 77, t, 1, NULL, 0); /* in the log, but s_start is 0 */
	unsigned writes = d->journal_writes;
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_true(rep.was_clean);
	assert_int_equal(rep.stop_reason, JBD2_STOP_CLEAN);
	assert_int_equal(rep.next_sequence, 77);
	assert_int_equal(d->fs_writes, 0);
	assert_int_equal(d->journal_writes, writes);
	expect_orig_block(d, 5);
	disk_free(d);
}

static void test_dry_run_writes_nothing(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(0, INCOMPAT_V3_64);
	unsigned writes = d->journal_writes, flushes = d->flushes;
	struct jbd2_replay_report rep;
	struct jbd2_error err;
	assert_int_equal(replay(d, true, &rep, &err), 0);
	assert_int_equal(rep.transactions_replayed, 3);
	assert_int_equal(rep.blocks_written, 6);
	assert_int_equal(d->fs_writes, 0);
	assert_int_equal(d->journal_writes, writes);
	assert_int_equal(d->flushes, flushes);
	assert_int_equal(journal_sb(d).start, 1);
	disk_free(d);
}

static void test_replay_twice_is_a_no_op(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(0, INCOMPAT_V3_64);
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.transactions_replayed, 3);
	unsigned writes = d->fs_writes;
	replay_ok(d, &rep);
	assert_true(rep.was_clean);
	assert_int_equal(d->fs_writes, writes);
	disk_free(d);
}

static void test_replay_flushes_before_marking_clean(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(0, INCOMPAT_V3_64);
	d->nevents = 0;
	memset(d->events, 0, sizeof(d->events));
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	/* fs writes do not log events; the superblock write is between flushes */
	assert_string_equal(d->events, "FWF");
	assert_int_equal(d->sb_writes, 1);
	disk_free(d);
}

static void test_io_errors_leave_journal_dirty(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(0, INCOMPAT_V3_64);
	struct jbd2_replay_report rep;
	struct jbd2_error err;

	d->fail_journal_read = 6;
	assert_int_equal(replay(d, false, &rep, &err), -EIO);
	assert_non_null(strstr(err.message, "journal block 6: read failed"));
	assert_int_equal(journal_sb(d).start, 1);
	assert_int_equal(d->fs_writes, 0);

	d->fail_journal_read = 0;
	assert_int_equal(replay(d, false, &rep, &err), -EIO);

	d->fail_journal_read = -1;
	d->fail_fs_write = true;
	assert_int_equal(replay(d, false, &rep, &err), -EIO);
	assert_non_null(strstr(err.message, "filesystem block 50 (transaction 30"));
	assert_int_equal(journal_sb(d).start, 1);
	disk_free(d);
}

static void test_replay_rejects_bad_superblocks(void **state)
{
	(void)state;
	struct jbd2_replay_report rep;
	struct jbd2_error err;

	struct mem_disk *d = three_txn_disk(0, INCOMPAT_V3_64);
	jblock(d, 0)[0x20] ^= 1; /* s_errno bit: checksum catches it */
	assert_int_equal(replay(d, false, &rep, &err), -EBADMSG);
	assert_int_equal(d->fs_writes, 0);
	disk_free(d);

	d = three_txn_disk(0, INCOMPAT_V3_64);
	struct jbd2_superblock sb = journal_sb(d);
	sb.feature_incompat |= JBD2_FEATURE_INCOMPAT_FAST_COMMIT;
	jbd2_superblock_encode(&sb, jblock(d, 0));
	assert_int_equal(replay(d, false, &rep, &err), -EOPNOTSUPP);
	sb.feature_incompat &= ~JBD2_FEATURE_INCOMPAT_FAST_COMMIT;
	sb.block_size = 2048;
	jbd2_superblock_encode(&sb, jblock(d, 0));
	assert_int_equal(replay(d, false, &rep, &err), -EUCLEAN);
	assert_non_null(strstr(err.message, "differs from the filesystem"));
	disk_free(d);

	struct jbd2_replay_io io = { .read_journal = mem_read_journal };
	struct jbd2_replay_options opt = { .block_size = 1024, .fs_block_count = 10 };
	assert_int_equal(jbd2_replay(&io, &opt, &rep, &err), -EINVAL); /* no write callbacks */
}

static void test_journal_errno_is_reported(void **state)
{
	(void)state;
	struct mem_disk *d = three_txn_disk(0, INCOMPAT_V3_64);
	struct jbd2_superblock sb = journal_sb(d);
	sb.error_number = -30;
	jbd2_superblock_encode(&sb, jblock(d, 0));
	struct jbd2_replay_report rep;
	replay_ok(d, &rep);
	assert_int_equal(rep.journal_errno, -30);
	assert_int_equal(journal_sb(d).error_number, -30); /* kept for the fs to act on */
	disk_free(d);
}

/* ------------------------------------------------------------------------ */
/* Random corruption: never a crash, never a write outside the filesystem     */
/* ------------------------------------------------------------------------ */

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void fuzz_journal(uint32_t compat, uint32_t incompat, unsigned rounds, uint64_t seed)
{
	enum { TXNS = 6 }; /* 6 blocks each: fits the 39-block log once */
	struct mem_disk *base = disk_new(1024, 40, 128);
	journal_init(base, compat, incompat, 500);
	uint32_t head = 30; /* wraps */
	for (uint32_t t = 500; t < 500 + TXNS; t++) {
		uint64_t blocks[3] = { t % 128, (t * 7) % 128, (t * 13 + 1) % 128 };
		uint64_t revoked[1] = { (t * 5 + 3) % 128 };
		bool dup = revoked[0] == blocks[0] || revoked[0] == blocks[1] || revoked[0] == blocks[2];
		head = log_txn(base, head, t, blocks, 3, revoked, dup ? 0 : 1);
	}
	journal_set_start(base, 30, 500);
	struct jbd2_replay_report pristine;
	struct jbd2_error perr;
	assert_int_equal(replay(base, true, &pristine, &perr), 0);
	assert_int_equal(pristine.transactions_replayed, TXNS);
	size_t jbytes = (size_t)base->journal_len * base->block_size;
	size_t fbytes = (size_t)base->fs_blocks * base->block_size;
	uint8_t *pristine_fs = malloc(fbytes);
	assert_non_null(pristine_fs);
	memcpy(pristine_fs, base->fs, fbytes);
	uint8_t *journal = malloc(jbytes);
	assert_non_null(journal);
	memcpy(journal, base->journal, jbytes);

	for (unsigned i = 0; i < rounds; i++) {
		memcpy(base->journal, journal, jbytes);
		memcpy(base->fs, pristine_fs, fbytes);
		unsigned flips = 1 + (unsigned)(xorshift(&seed) % 6);
		for (unsigned f = 0; f < flips; f++) {
			/* Mostly headers and tags, where the decisions are made. */
			uint32_t blk = (uint32_t)(xorshift(&seed) % base->journal_len);
			uint32_t span = (xorshift(&seed) & 1) ? 64 : 1024;
			uint32_t off = (uint32_t)(xorshift(&seed) % span);
			uint8_t bit = (uint8_t)(1u << (xorshift(&seed) % 8));
			base->journal[(size_t)blk * 1024 + off] ^= bit;
		}
		struct jbd2_replay_report rep;
		struct jbd2_error err;
		int rc = replay(base, false, &rep, &err);
		assert_true(rc <= 0);
		if (rc == 0)
			assert_true(rep.transactions_replayed <= TXNS);
	}
	free(pristine_fs);
	free(journal);
	disk_free(base);
}

static void test_random_corruption(void **state)
{
	(void)state;
	fuzz_journal(0, INCOMPAT_V3_64, 1500, 0x9E3779B97F4A7C15ull);
	fuzz_journal(0, JBD2_FEATURE_INCOMPAT_64BIT, 1500, 0x1234567);
	fuzz_journal(0, 0, 1500, 0xABCDEF);
	fuzz_journal(JBD2_FEATURE_COMPAT_CHECKSUM, 0, 500, 0x5555);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_known_answer),
		cmocka_unit_test(test_tag_sizes_and_capacities),
		cmocka_unit_test(test_superblock_roundtrip),
		cmocka_unit_test(test_superblock_set_tail),
		cmocka_unit_test(test_superblock_rejects_bad_fields),
		cmocka_unit_test(test_format_rejects_unsupported_features),
		cmocka_unit_test(test_e2fsprogs_known_answers),
		cmocka_unit_test(test_descriptor_roundtrip),
		cmocka_unit_test(test_descriptor_edge_cases),
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_escaped_block_survives_writer_and_replay),
		cmocka_unit_test(test_revoke_block_roundtrip_and_bounds),
		cmocka_unit_test(test_commit_block_checksums),
		cmocka_unit_test(test_data_checksum_v2_is_truncated),
		cmocka_unit_test(test_log_arithmetic),
		cmocka_unit_test(test_layout_counts),
		cmocka_unit_test(test_writer_rejects_bad_requests),
		cmocka_unit_test(test_writer_barrier_before_commit),
		cmocka_unit_test(test_writer_reports_write_failure),
		cmocka_unit_test(test_roundtrip_every_format),
		cmocka_unit_test(test_roundtrip_multi_descriptor_and_revoke_blocks),
		cmocka_unit_test(test_wrapped_transaction),
		cmocka_unit_test(test_revoke_semantics),
		cmocka_unit_test(test_revoke_in_same_transaction_applies),
		cmocka_unit_test(test_revokes_of_unreplayed_transaction_are_ignored),
		cmocka_unit_test(test_torn_transaction_without_commit),
		cmocka_unit_test(test_bad_commit_checksum),
		cmocka_unit_test(test_bad_data_checksum),
		cmocka_unit_test(test_bad_descriptor_checksum),
		cmocka_unit_test(test_bad_revoke_block),
		cmocka_unit_test(test_stale_sequence_ends_log),
		cmocka_unit_test(test_block_number_beyond_filesystem),
		cmocka_unit_test(test_unknown_block_type),
		cmocka_unit_test(test_v1_checksum_mismatch),
		cmocka_unit_test(test_log_overrun_without_checksums),
		cmocka_unit_test(test_full_log_ends_cleanly),
		cmocka_unit_test(test_sequence_wraparound),
		cmocka_unit_test(test_clean_journal_is_left_alone),
		cmocka_unit_test(test_dry_run_writes_nothing),
		cmocka_unit_test(test_replay_twice_is_a_no_op),
		cmocka_unit_test(test_replay_flushes_before_marking_clean),
		cmocka_unit_test(test_io_errors_leave_journal_dirty),
		cmocka_unit_test(test_replay_rejects_bad_superblocks),
		cmocka_unit_test(test_journal_errno_is_reported),
		cmocka_unit_test(test_random_corruption),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
