/*
 * jbd2_tool — drives the JBD2 writer and replayer (journal/jbd2*.c) against
 * the internal journal of a real ext4 image, for tests/integration/jbd2_interop.sh.
 *
 *   jbd2_tool info IMAGE
 *   jbd2_tool set-features IMAGE
 *   jbd2_tool free-blocks IMAGE N
 *   jbd2_tool label-block IMAGE NAME OUT
 *   jbd2_tool write IMAGE [--head N] [--torn] TXN...
 *        TXN is a comma-separated list: B=FILE logs block B with FILE's first
 *        block, B+N=FILE logs B..B+N-1, -B revokes B. Transactions get ids
 *        from the journal's s_sequence on and start at --head (default
 *        s_first); --torn leaves out the last one's commit block.
 *   jbd2_tool replay IMAGE [--dry-run]
 *
 * libext2fs is used here only to find the journal inode's blocks and to flip
 * the ext4 needs_recovery flag; the journal itself is read and written with
 * pread/pwrite through the library's callbacks.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ext2fs/ext2fs.h>

#include "journal/jbd2.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "label-block edits the little-endian on-disk superblock in memory");

struct image {
	const char *path;
	int fd;
	uint32_t block_size;
	uint64_t fs_blocks;
	bool fs_64bit;
	bool needs_recovery;
	uint64_t *journal_map;    /* journal block -> filesystem block */
	uint32_t journal_blocks;
};

static int fail(const char *what, const char *cause)
{
	fprintf(stderr, "jbd2_tool: %s: %s\n", what, cause);
	return 1;
}

static int fail_ext2(const char *what, errcode_t code)
{
	return fail(what, error_message(code));
}

/* ------------------------------------------------------------------------ */
/* Image access                                                              */
/* ------------------------------------------------------------------------ */

static int map_journal(struct image *img, ext2_filsys fs)
{
	ext2_ino_t ino = fs->super->s_journal_inum;
	struct ext2_inode inode;
	errcode_t rc;

	if (!ext2fs_has_feature_journal(fs->super) || ino == 0)
		return fail(img->path, "no internal journal");
	rc = ext2fs_read_inode(fs, ino, &inode);
	if (rc)
		return fail_ext2("reading the journal inode", rc);
	uint64_t blocks = EXT2_I_SIZE(&inode) / img->block_size;
	if (blocks == 0 || blocks > UINT32_MAX)
		return fail(img->path, "journal inode has an impossible size");
	img->journal_blocks = (uint32_t)blocks;
	img->journal_map = calloc(blocks, sizeof(*img->journal_map));
	if (!img->journal_map)
		return fail(img->path, "no memory for the journal map");
	for (uint32_t i = 0; i < img->journal_blocks; i++) {
		blk64_t phys = 0;
		rc = ext2fs_bmap2(fs, ino, &inode, NULL, 0, i, NULL, &phys);
		if (rc)
			return fail_ext2("mapping the journal inode", rc);
		img->journal_map[i] = phys;
		if (img->journal_map[i] == 0 || img->journal_map[i] >= img->fs_blocks)
			return fail(img->path, "journal inode has a hole or a bad block");
	}
	return 0;
}

static int image_open(struct image *img, const char *path, bool writable)
{
	ext2_filsys fs;
	errcode_t rc = ext2fs_open2(path, NULL, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs);

	memset(img, 0, sizeof(*img));
	img->path = path;
	img->fd = -1;
	if (rc)
		return fail_ext2(path, rc);
	img->block_size = fs->blocksize;
	img->fs_blocks = ext2fs_blocks_count(fs->super);
	img->fs_64bit = ext2fs_has_feature_64bit(fs->super);
	img->needs_recovery = ext2fs_has_feature_journal_needs_recovery(fs->super);
	int err = map_journal(img, fs);
	ext2fs_close_free(&fs);
	if (err)
		return err;
	img->fd = open(path, writable ? O_RDWR : O_RDONLY);
	if (img->fd < 0)
		return fail(path, strerror(errno));
	return 0;
}

static void image_close(struct image *img)
{
	if (img->fd >= 0)
		close(img->fd);
	free(img->journal_map);
}

static int pread_block(const struct image *img, uint64_t fs_block, void *buf)
{
	ssize_t n = pread(img->fd, buf, img->block_size, (off_t)(fs_block * img->block_size));
	return n == (ssize_t)img->block_size ? 0 : -EIO;
}

static int pwrite_block(const struct image *img, uint64_t fs_block, const void *buf)
{
	ssize_t n = pwrite(img->fd, buf, img->block_size, (off_t)(fs_block * img->block_size));
	return n == (ssize_t)img->block_size ? 0 : -EIO;
}

static int cb_read_journal(void *ctx, uint32_t n, void *buf)
{
	const struct image *img = ctx;
	return n < img->journal_blocks ? pread_block(img, img->journal_map[n], buf) : -EIO;
}

static int cb_write_journal(void *ctx, uint32_t n, const void *buf)
{
	const struct image *img = ctx;
	return n < img->journal_blocks ? pwrite_block(img, img->journal_map[n], buf) : -EIO;
}

static int cb_write_fs(void *ctx, uint64_t block, const void *buf)
{
	const struct image *img = ctx;
	return block < img->fs_blocks ? pwrite_block(img, block, buf) : -EIO;
}

static int cb_flush(void *ctx)
{
	const struct image *img = ctx;
	return fsync(img->fd) ? -errno : 0;
}

static int read_journal_sb(const struct image *img, uint8_t *block, struct jbd2_superblock *sb)
{
	struct jbd2_error err = { 0 };
	if (cb_read_journal((void *)img, 0, block))
		return fail(img->path, "cannot read the journal superblock");
	if (jbd2_superblock_decode(block, img->block_size, sb, &err))
		return fail(img->path, err.message);
	return 0;
}

static int write_journal_sb(const struct image *img, uint8_t *block, const struct jbd2_superblock *sb)
{
	jbd2_superblock_encode(sb, block);
	if (cb_write_journal((void *)img, 0, block) || cb_flush((void *)img))
		return fail(img->path, "cannot write the journal superblock");
	return 0;
}

/* The ext4 needs_recovery flag lives in the primary superblock only. */
static int set_needs_recovery(const char *path, bool on)
{
	ext2_filsys fs;
	errcode_t rc = ext2fs_open2(path, NULL, EXT2_FLAG_RW | EXT2_FLAG_64BITS, 0, 0,
				    unix_io_manager, &fs);
	if (rc)
		return fail_ext2(path, rc);
	fs->flags |= EXT2_FLAG_MASTER_SB_ONLY;
	if (on)
		ext2fs_set_feature_journal_needs_recovery(fs->super);
	else
		ext2fs_clear_feature_journal_needs_recovery(fs->super);
	ext2fs_mark_super_dirty(fs);
	rc = ext2fs_close_free(&fs);
	return rc ? fail_ext2(path, rc) : 0;
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                  */
/* ------------------------------------------------------------------------ */

static int cmd_info(const char *path)
{
	struct image img;
	struct jbd2_superblock sb;
	int rc = image_open(&img, path, false);
	uint8_t *block = rc ? NULL : malloc(img.block_size);

	if (rc == 0 && !block)
		rc = fail(path, "no memory");
	if (rc == 0)
		rc = read_journal_sb(&img, block, &sb);
	if (rc == 0)
		printf("block_size=%u\nmaxlen=%u\nfirst=%u\nstart=%u\nsequence=%u\n"
		       "incompat=0x%x\ncompat=0x%x\nchecksum_type=%u\njournal_blocks=%u\n"
		       "fs_blocks=%llu\nneeds_recovery=%d\n",
		       sb.block_size, sb.max_len, sb.first, sb.start, sb.sequence,
		       sb.feature_incompat, sb.feature_compat, sb.checksum_type,
		       img.journal_blocks, (unsigned long long)img.fs_blocks, img.needs_recovery);
	free(block);
	image_close(&img);
	return rc;
}

static int cmd_set_features(const char *path)
{
	struct image img;
	struct jbd2_superblock sb;
	int rc = image_open(&img, path, true);
	uint8_t *block = rc ? NULL : malloc(img.block_size);

	if (rc == 0 && !block)
		rc = fail(path, "no memory");
	if (rc == 0)
		rc = read_journal_sb(&img, block, &sb);
	if (rc == 0 && (sb.start != 0 || img.needs_recovery))
		rc = fail(path, "journal needs recovery; replay it before changing features");
	if (rc == 0 && sb.blocktype != JBD2_BLOCKTYPE_SUPERBLOCK_V2)
		rc = fail(path, "journal superblock is v1; features need v2");
	if (rc == 0) {
		sb.feature_compat &= ~JBD2_FEATURE_COMPAT_CHECKSUM;
		sb.feature_incompat &= ~JBD2_FEATURE_INCOMPAT_CSUM_V2;
		sb.feature_incompat |= JBD2_FEATURE_INCOMPAT_CSUM_V3 | JBD2_FEATURE_INCOMPAT_REVOKE;
		if (img.fs_64bit)
			sb.feature_incompat |= JBD2_FEATURE_INCOMPAT_64BIT;
		sb.checksum_type = JBD2_CHECKSUM_TYPE_CRC32C;
		rc = write_journal_sb(&img, block, &sb);
	}
	free(block);
	image_close(&img);
	return rc;
}

static int cmd_free_blocks(const char *path, const char *count_arg)
{
	ext2_filsys fs;
	long want = strtol(count_arg, NULL, 10);
	errcode_t rc = ext2fs_open2(path, NULL, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs);

	if (rc)
		return fail_ext2(path, rc);
	rc = ext2fs_read_block_bitmap(fs);
	if (rc) {
		ext2fs_close_free(&fs);
		return fail_ext2("reading the block bitmap", rc);
	}
	const char *sep = "";
	for (blk64_t b = ext2fs_blocks_count(fs->super); b-- > fs->super->s_first_data_block && want > 0;) {
		if (!ext2fs_test_block_bitmap2(fs->block_map, b)) {
			printf("%s%llu", sep, (unsigned long long)b);
			sep = " ";
			want--;
		}
	}
	printf("\n");
	ext2fs_close_free(&fs);
	return want > 0 ? fail(path, "not enough free blocks") : 0;
}

/* Writes to `out` the filesystem block that holds the primary superblock,
 * with s_volume_name replaced and the superblock checksum recomputed. */
static int cmd_label_block(const char *path, const char *name, const char *out)
{
	ext2_filsys fs;
	errcode_t rc = ext2fs_open2(path, NULL, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs);
	if (rc)
		return fail_ext2(path, rc);
	uint32_t bs = fs->blocksize;
	uint64_t block_nr = SUPERBLOCK_OFFSET / bs;
	size_t offset = SUPERBLOCK_OFFSET % bs;
	uint8_t *block = malloc(bs);
	struct ext2_super_block sb;
	int err = block ? 0 : fail(path, "no memory");

	if (!err && io_channel_read_blk64(fs->io, block_nr, 1, block))
		err = fail(path, "cannot read the superblock block");
	if (!err) {
		memcpy(&sb, block + offset, sizeof(sb));
		memset(sb.s_volume_name, 0, sizeof(sb.s_volume_name));
		strncpy((char *)sb.s_volume_name, name, sizeof(sb.s_volume_name));
		ext2fs_clear_feature_journal_needs_recovery(&sb);
		rc = ext2fs_superblock_csum_set(fs, &sb);
		err = rc ? fail_ext2("superblock checksum", rc) : 0;
	}
	if (!err) {
		memcpy(block + offset, &sb, sizeof(sb));
		FILE *f = fopen(out, "wb");
		if (!f || fwrite(block, bs, 1, f) != 1)
			err = fail(out, "cannot write");
		if (f && fclose(f))
			err = fail(out, "cannot write");
		printf("%llu\n", (unsigned long long)block_nr);
	}
	free(block);
	ext2fs_close_free(&fs);
	return err;
}

/* ------------------------------------------------------------------------ */
/* write                                                                     */
/* ------------------------------------------------------------------------ */

struct txn_spec {
	struct jbd2_txn_block *blocks;
	size_t nblocks;
	uint64_t *revoked;
	size_t nrevoked;
	uint8_t **buffers;       /* file contents the blocks point into */
	size_t nbuffers;
};

static void txn_spec_free(struct txn_spec *t)
{
	for (size_t i = 0; i < t->nbuffers; i++)
		free(t->buffers[i]);
	free(t->buffers);
	free(t->blocks);
	free(t->revoked);
}

static int read_file_blocks(const char *file, uint8_t *buf, size_t bytes)
{
	FILE *f = fopen(file, "rb");
	size_t n = f ? fread(buf, 1, bytes, f) : 0;
	if (f)
		fclose(f);
	return n == bytes ? 0 : fail(file, "shorter than the blocks it should fill");
}

static void *grow(void *array, size_t count, size_t size)
{
	return count > SIZE_MAX / size ? NULL : realloc(array, count * size);
}

/* Logs `count` blocks from `first` with consecutive blocks of `file`. */
static int add_logged(struct txn_spec *t, uint64_t first, uint64_t count, const char *file,
		      uint32_t bs)
{
	if (count == 0 || count > (1u << 20))
		return fail(file, "block count out of range");
	uint8_t *data = malloc(count * bs);
	uint8_t **buffers = grow(t->buffers, t->nbuffers + 1, sizeof(*buffers));
	if (buffers)
		t->buffers = buffers;
	struct jbd2_txn_block *blocks = grow(t->blocks, t->nblocks + count, sizeof(*blocks));
	if (blocks)
		t->blocks = blocks;
	if (!data || !buffers || !blocks) {
		free(data);
		return fail(file, "no memory");
	}
	t->buffers[t->nbuffers++] = data;
	for (uint64_t i = 0; i < count; i++)
		t->blocks[t->nblocks++] = (struct jbd2_txn_block){ .fs_block = first + i,
								   .data = data + i * bs };
	return read_file_blocks(file, data, count * bs);
}

static int add_revoked(struct txn_spec *t, uint64_t block)
{
	uint64_t *revoked = grow(t->revoked, t->nrevoked + 1, sizeof(*revoked));
	if (!revoked)
		return fail("revoke list", "no memory");
	t->revoked = revoked;
	t->revoked[t->nrevoked++] = block;
	return 0;
}

/* One item of a TXN argument: "-B" revokes B, "B=FILE" logs B with FILE's
 * first block, "B+N=FILE" logs B..B+N-1 with FILE's first N blocks. */
static int parse_item(char *item, uint32_t bs, struct txn_spec *t)
{
	char *end;
	if (item[0] == '-') {
		uint64_t block = strtoull(item + 1, &end, 0);
		return *end ? fail(item, "bad revoked block number") : add_revoked(t, block);
	}
	uint64_t first = strtoull(item, &end, 0), count = 1;
	if (*end == '+')
		count = strtoull(end + 1, &end, 0);
	if (*end != '=' || end == item)
		return fail(item, "expected B=FILE, B+N=FILE or -B");
	return add_logged(t, first, count, end + 1, bs);
}

static int parse_txn(const char *arg, uint32_t bs, struct txn_spec *t)
{
	char *copy = strdup(arg), *save = NULL;
	int rc = copy ? 0 : fail(arg, "no memory");
	for (char *item = copy ? strtok_r(copy, ",", &save) : NULL; item && rc == 0;
	     item = strtok_r(NULL, ",", &save))
		rc = parse_item(item, bs, t);
	free(copy);
	return rc;
}

struct torn_writer {
	struct image *img;
	bool drop_commit;        /* simulate a crash before the commit block */
};

static int cb_write_maybe_torn(void *ctx, uint32_t n, const void *buf)
{
	struct torn_writer *tw = ctx;
	struct jbd2_header h;
	jbd2_header_decode(buf, &h);
	if (tw->drop_commit && h.magic == JBD2_MAGIC && h.blocktype == JBD2_BLOCKTYPE_COMMIT)
		return 0;
	return cb_write_journal(tw->img, n, buf);
}

static int cb_flush_torn(void *ctx)
{
	struct torn_writer *tw = ctx;
	return cb_flush(tw->img);
}

static int write_one(struct image *img, const struct jbd2_format *fmt, const char *arg,
		     uint32_t sequence, bool torn, uint32_t *head)
{
	struct txn_spec spec = { 0 };
	struct jbd2_error err = { 0 };
	int rc = parse_txn(arg, img->block_size, &spec);
	if (rc == 0) {
		struct jbd2_txn txn = {
			.sequence = sequence, .blocks = spec.blocks, .block_count = spec.nblocks,
			.revoked = spec.revoked, .revoked_count = spec.nrevoked,
			.commit_sec = (uint64_t)time(NULL),
		};
		struct torn_writer tw = { .img = img, .drop_commit = torn };
		struct jbd2_journal_writer w = { .ctx = &tw, .write_block = cb_write_maybe_torn,
						 .flush = cb_flush_torn };
		uint32_t start = *head;
		if (jbd2_write_transaction(fmt, &txn, start, &w, head, &err))
			rc = fail(img->path, err.message);
		else
			printf("transaction=%u start=%u next=%u blocks=%zu revoked=%zu%s\n", sequence,
			       start, *head, spec.nblocks, spec.nrevoked, torn ? " torn" : "");
	}
	txn_spec_free(&spec);
	return rc;
}

static int write_transactions(struct image *img, uint8_t *sb_block, struct jbd2_superblock *sb,
			      long head_arg, bool torn, char **txns, int ntxns)
{
	struct jbd2_format fmt;
	struct jbd2_error err = { 0 };

	if (sb->start != 0 || img->needs_recovery)
		return fail(img->path, "journal needs recovery; replay it before writing");
	if (jbd2_format_init(&fmt, sb, img->fs_blocks, &err))
		return fail(img->path, err.message);
	uint32_t start = head_arg >= 0 ? (uint32_t)head_arg : sb->first;
	uint32_t head = start;
	for (int i = 0; i < ntxns; i++) {
		bool drop_commit = torn && i == ntxns - 1;
		if (write_one(img, &fmt, txns[i], sb->sequence + (uint32_t)i, drop_commit, &head))
			return 1;
	}
	/* The log now starts with our first transaction, id sb->sequence. */
	if (jbd2_superblock_set_tail(sb_block, img->block_size, start, sb->sequence, &err))
		return fail(img->path, err.message);
	if (cb_write_journal(img, 0, sb_block) || cb_flush(img))
		return fail(img->path, "cannot write the journal superblock");
	return 0;
}

static int cmd_write(const char *path, int argc, char **argv)
{
	long head = -1;
	bool torn = false;
	int i = 0;
	for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
		if (strcmp(argv[i], "--torn") == 0)
			torn = true;
		else if (strcmp(argv[i], "--head") == 0 && i + 1 < argc)
			head = strtol(argv[++i], NULL, 0);
		else
			return fail(argv[i], "unknown option");
	}
	if (i == argc)
		return fail("write", "no transaction given");

	struct image img;
	struct jbd2_superblock sb;
	int rc = image_open(&img, path, true);
	uint8_t *block = rc ? NULL : malloc(img.block_size);
	if (rc == 0 && !block)
		rc = fail(path, "no memory");
	if (rc == 0)
		rc = read_journal_sb(&img, block, &sb);
	if (rc == 0)
		rc = write_transactions(&img, block, &sb, head, torn, argv + i, argc - i);
	free(block);
	image_close(&img);
	return rc ? rc : set_needs_recovery(path, true);
}

/* ------------------------------------------------------------------------ */
/* replay                                                                    */
/* ------------------------------------------------------------------------ */

static void print_report(const struct jbd2_replay_report *r)
{
	printf("was_clean=%d\nlog_start=%u\nfirst_transaction=%u\ntransactions=%u\n"
	       "blocks_written=%llu\nblocks_revoked=%llu\nrevoke_records=%llu\n"
	       "stop_reason=%s\nstop_transaction=%u\nstop_block=%u\nnext_sequence=%u\n"
	       "detail=%s\n",
	       r->was_clean, r->log_start, r->first_transaction, r->transactions_replayed,
	       (unsigned long long)r->blocks_written, (unsigned long long)r->blocks_revoked,
	       (unsigned long long)r->revoke_records, jbd2_stop_reason_name(r->stop_reason),
	       r->stop_transaction, r->stop_block, r->next_sequence, r->stop_detail);
}

static int cmd_replay(const char *path, int argc, char **argv)
{
	bool dry_run = argc > 0 && strcmp(argv[0], "--dry-run") == 0;
	struct image img;
	int rc = image_open(&img, path, !dry_run);
	if (rc)
		return rc;
	struct jbd2_replay_io io = {
		.ctx = &img, .read_journal = cb_read_journal, .write_journal = cb_write_journal,
		.write_fs = cb_write_fs, .flush = cb_flush,
	};
	struct jbd2_replay_options options = {
		.block_size = img.block_size, .fs_block_count = img.fs_blocks, .dry_run = dry_run,
	};
	struct jbd2_replay_report report;
	struct jbd2_error err = { 0 };
	rc = jbd2_replay(&io, &options, &report, &err);
	bool had_flag = img.needs_recovery;
	image_close(&img);
	if (rc)
		return fail(path, err.message);
	print_report(&report);
	/* The replay may have rewritten the superblock block: reopen, then clear. */
	if (!dry_run && had_flag)
		return set_needs_recovery(path, false);
	return 0;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: jbd2_tool info IMAGE\n"
		"       jbd2_tool set-features IMAGE\n"
		"       jbd2_tool free-blocks IMAGE N\n"
		"       jbd2_tool label-block IMAGE NAME OUT\n"
		"       jbd2_tool write IMAGE [--head N] [--torn] TXN...   (TXN: B=FILE,B+N=FILE,-R,...)\n"
		"       jbd2_tool replay IMAGE [--dry-run]\n");
	return 2;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return usage();
	const char *cmd = argv[1], *path = argv[2];
	if (strcmp(cmd, "info") == 0)
		return cmd_info(path);
	if (strcmp(cmd, "set-features") == 0)
		return cmd_set_features(path);
	if (strcmp(cmd, "free-blocks") == 0 && argc == 4)
		return cmd_free_blocks(path, argv[3]);
	if (strcmp(cmd, "label-block") == 0 && argc == 5)
		return cmd_label_block(path, argv[3], argv[4]);
	if (strcmp(cmd, "write") == 0)
		return cmd_write(path, argc - 3, argv + 3);
	if (strcmp(cmd, "replay") == 0)
		return cmd_replay(path, argc - 3, argv + 3);
	return usage();
}
