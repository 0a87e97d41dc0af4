/* corrupt_tool — damages a csvfs (ext4) image on purpose, for
 * tests/integration/corrupt.sh, where debugfs cannot: inside a directory or
 * extent-tree block, with the block's metadata_csum checksum made right again,
 * so that the damage gets past libext2fs' checksum and reaches csvfs' own
 * checks.
 *
 *   corrupt_tool dirent IMAGE DIR NAME FIELD VALUE
 *       FIELD: rec_len | name_len | inode | file_type — of entry NAME in the
 *       directory at path DIR (a linear directory: its blocks are scanned)
 *   corrupt_tool leaf IMAGE FILE INDEX FIELD VALUE
 *       FIELD: lblk | len | pblk — of extent INDEX in the first leaf block of
 *       FILE's extent tree (depth 1)
 *   corrupt_tool dxroot IMAGE DIR NAME block|swap VALUE
 *       in the htree root of directory DIR, the index entry whose leaf holds
 *       NAME: block VALUE points it at directory block VALUE; swap (VALUE
 *       ignored) exchanges its hash with a neighbour's, so the index is out
 *       of order (DIR needs at least 3 leaves)
 *   corrupt_tool mmp IMAGE off|on|clear
 *       clears or sets the mmp feature flag, nothing else: debugfs -w waits
 *       11 s for MMP at every open, so the test turns it off around debugfs;
 *       clear: marks the MMP block clean (a killed holder, long gone)
 */
#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, errcode_t e)
{
	fprintf(stderr, "corrupt_tool: %s%s%s\n", what, e ? ": " : "", e ? error_message(e) : "");
	exit(1);
}

static ext2_ino_t path_ino(ext2_filsys fs, const char *path)
{
	ext2_ino_t ino;
	errcode_t e = ext2fs_namei(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, path, &ino);
	if (e)
		die(path, e);
	return ino;
}

/* The dirent tail checksum, computed over the whole block before the tail
 * whatever the entries say (ext2fs_dir_block_csum_set walks rec_len). */
static void dir_csum_set(ext2_filsys fs, ext2_ino_t ino, char *buf)
{
	struct ext2_inode in;
	if (ext2fs_read_inode(fs, ino, &in))
		die("reading the directory inode", 0);
	uint32_t le_ino = ext2fs_cpu_to_le32(ino), le_gen = ext2fs_cpu_to_le32(in.i_generation);
	uint32_t crc = ext2fs_crc32c_le(fs->csum_seed, (unsigned char *)&le_ino, 4);
	crc = ext2fs_crc32c_le(crc, (unsigned char *)&le_gen, 4);
	unsigned size = fs->blocksize - sizeof(struct ext2_dir_entry_tail);
	crc = ext2fs_crc32c_le(crc, (unsigned char *)buf, size);
	struct ext2_dir_entry_tail *t = (struct ext2_dir_entry_tail *)(buf + size);
	t->det_checksum = ext2fs_cpu_to_le32(crc);
}

static int dirent(ext2_filsys fs, char **argv)
{
	ext2_ino_t dir = path_ino(fs, argv[0]);
	const char *name = argv[1], *field = argv[2];
	unsigned long value = strtoul(argv[3], NULL, 0);
	struct ext2_inode in;
	if (ext2fs_read_inode(fs, dir, &in))
		die("reading the directory inode", 0);
	char *buf = malloc(fs->blocksize);
	for (blk64_t lblk = 0; lblk < EXT2_I_SIZE(&in) / fs->blocksize; lblk++) {
		blk64_t pblk;
		if (ext2fs_bmap2(fs, dir, &in, NULL, 0, lblk, NULL, &pblk) || !pblk ||
		    io_channel_read_blk64(fs->io, pblk, 1, buf))
			die("reading a directory block", 0);
		for (unsigned off = 0; off + 8 <= fs->blocksize;) {
			struct ext2_dir_entry *de = (struct ext2_dir_entry *)(buf + off);
			unsigned rec_len = ext2fs_le16_to_cpu(de->rec_len);
			unsigned nlen = de->name_len & 0xff;
			if (de->inode && nlen == strlen(name) && memcmp(de->name, name, nlen) == 0) {
				if (!strcmp(field, "rec_len"))
					de->rec_len = ext2fs_cpu_to_le16((uint16_t)value);
				else if (!strcmp(field, "name_len"))
					de->name_len = (uint16_t)((de->name_len & 0xff00) | (value & 0xff));
				else if (!strcmp(field, "inode"))
					de->inode = ext2fs_cpu_to_le32((uint32_t)value);
				else if (!strcmp(field, "file_type"))
					de->name_len = (uint16_t)((de->name_len & 0xff) | ((value & 0xff) << 8));
				else
					die("unknown dirent field", 0);
				dir_csum_set(fs, dir, buf);
				if (io_channel_write_blk64(fs->io, pblk, 1, buf))
					die("writing the directory block", 0);
				free(buf);
				return 0;
			}
			if (rec_len < 8)
				break;
			off += rec_len;
		}
	}
	die("no such entry", 0);
	return 1;
}

static int leaf(ext2_filsys fs, char **argv)
{
	ext2_ino_t ino = path_ino(fs, argv[0]);
	unsigned idx = (unsigned)strtoul(argv[1], NULL, 0);
	const char *field = argv[2];
	unsigned long long value = strtoull(argv[3], NULL, 0);
	struct ext2_inode in;
	if (ext2fs_read_inode(fs, ino, &in))
		die("reading the inode", 0);
	struct ext3_extent_header *root = (struct ext3_extent_header *)in.i_block;
	if (ext2fs_le16_to_cpu(root->eh_depth) != 1)
		die("the extent tree is not of depth 1", 0);
	struct ext3_extent_idx *ix = (struct ext3_extent_idx *)(root + 1);
	blk64_t pblk = ext2fs_le32_to_cpu(ix->ei_leaf) | ((blk64_t)ext2fs_le16_to_cpu(ix->ei_leaf_hi) << 32);
	char *buf = malloc(fs->blocksize);
	if (io_channel_read_blk64(fs->io, pblk, 1, buf))
		die("reading the leaf block", 0);
	struct ext3_extent_header *eh = (struct ext3_extent_header *)buf;
	if (idx >= ext2fs_le16_to_cpu(eh->eh_entries))
		die("no such extent in the leaf", 0);
	struct ext3_extent *ex = (struct ext3_extent *)(eh + 1) + idx;
	if (!strcmp(field, "lblk"))
		ex->ee_block = ext2fs_cpu_to_le32((uint32_t)value);
	else if (!strcmp(field, "len"))
		ex->ee_len = ext2fs_cpu_to_le16((uint16_t)value);
	else if (!strcmp(field, "pblk")) {
		ex->ee_start = ext2fs_cpu_to_le32((uint32_t)value);
		ex->ee_start_hi = ext2fs_cpu_to_le16((uint16_t)(value >> 32));
	} else
		die("unknown extent field", 0);
	errcode_t e = ext2fs_extent_block_csum_set(fs, ino, eh);
	if (e)
		die("checksumming the leaf block", e);
	if (io_channel_write_blk64(fs->io, pblk, 1, buf))
		die("writing the leaf block", 0);
	free(buf);
	return 0;
}

/* The root entry covering name's hash (as a lookup would pick it). */
static unsigned dx_entry_for(ext2_filsys fs, const struct ext2_dx_root_info *info,
			     const struct ext2_dx_entry *ent, unsigned count, const char *name)
{
	int version = info->hash_version;
	if (version <= EXT2_HASH_TEA && (fs->super->s_flags & EXT2_FLAGS_UNSIGNED_HASH))
		version += 3;
	ext2_dirhash_t hash, minor;
	if (ext2fs_dirhash2(version, name, (int)strlen(name), fs->encoding, 0, fs->super->s_hash_seed,
			    &hash, &minor))
		die("hashing the name", 0);
	unsigned at = 0;
	for (unsigned k = 1; k < count; k++)
		if (ext2fs_le32_to_cpu(ent[k].hash) <= hash)
			at = k;
	return at;
}

static int dxroot(ext2_filsys fs, char **argv)
{
	ext2_ino_t dir = path_ino(fs, argv[0]);
	const char *name = argv[1], *field = argv[2];
	unsigned long value = strtoul(argv[3], NULL, 0);
	struct ext2_inode in;
	blk64_t pblk;
	char *buf = malloc(fs->blocksize);
	if (ext2fs_read_inode(fs, dir, &in) || !(in.i_flags & EXT2_INDEX_FL))
		die("the directory is not an htree", 0);
	if (ext2fs_bmap2(fs, dir, &in, NULL, 0, 0, NULL, &pblk) || !pblk ||
	    io_channel_read_blk64(fs->io, pblk, 1, buf))
		die("reading the htree root", 0);
	struct ext2_dx_root_info *info = (struct ext2_dx_root_info *)(buf + 24);
	struct ext2_dx_entry *ent = (struct ext2_dx_entry *)(buf + 24 + info->info_length);
	unsigned count = ext2fs_le16_to_cpu(((struct ext2_dx_countlimit *)ent)->count);
	unsigned at = dx_entry_for(fs, info, ent, count, name);
	if (!strcmp(field, "block")) {
		ent[at].block = ext2fs_cpu_to_le32((uint32_t)value);
	} else if (!strcmp(field, "swap")) {
		if (count < 3)
			die("the htree root has fewer than 3 leaves", 0);
		unsigned a = at ? at : 1, b = a + 1 < count ? a + 1 : a - 1;
		uint32_t h = ent[a].hash;
		ent[a].hash = ent[b].hash;
		ent[b].hash = h;
	} else {
		die("unknown htree field", 0);
	}
	errcode_t e = ext2fs_dir_block_csum_set(fs, dir, (struct ext2_dir_entry *)buf);
	if (e)
		die("checksumming the htree root", e);
	if (io_channel_write_blk64(fs->io, pblk, 1, buf))
		die("writing the htree root", 0);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	int mmp = argc == 4 && !strcmp(argv[1], "mmp") &&
		  (!strcmp(argv[3], "on") || !strcmp(argv[3], "off") || !strcmp(argv[3], "clear"));
	if (!mmp && (argc != 7 || (strcmp(argv[1], "dirent") && strcmp(argv[1], "leaf") &&
				   strcmp(argv[1], "dxroot")))) {
		fprintf(stderr, "usage: corrupt_tool dirent IMAGE DIR NAME FIELD VALUE\n"
				"       corrupt_tool leaf IMAGE FILE INDEX FIELD VALUE\n"
				"       corrupt_tool dxroot IMAGE DIR NAME block|swap VALUE\n"
				"       corrupt_tool mmp IMAGE off|on|clear\n");
		return 2;
	}
	initialize_ext2_error_table();
	ext2_filsys fs;
	errcode_t e = ext2fs_open(argv[2], EXT2_FLAG_RW | EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP, 0, 0,
				  unix_io_manager, &fs);
	if (e)
		die(argv[2], e);
	if (mmp && !strcmp(argv[3], "clear")) {
		e = ext2fs_mmp_clear(fs);
		fs->flags &= ~EXT2_FLAG_DIRTY;
		ext2fs_close_free(&fs);
		if (e)
			die("clearing the MMP block", e);
		return 0;
	}
	if (mmp) {
		/* the superblock alone, in place: nothing else is rewritten */
		if (!strcmp(argv[3], "on"))
			ext2fs_set_feature_mmp(fs->super);
		else
			ext2fs_clear_feature_mmp(fs->super);
		fs->flags |= EXT2_FLAG_MASTER_SB_ONLY | EXT2_FLAG_SUPER_ONLY;
		ext2fs_mark_super_dirty(fs);
		e = ext2fs_close_free(&fs);
		if (e)
			die("writing the superblock", e);
		return 0;
	}
	int rc = !strcmp(argv[1], "dirent") ? dirent(fs, argv + 3) :
		 !strcmp(argv[1], "dxroot") ? dxroot(fs, argv + 3) : leaf(fs, argv + 3);
	fs->flags &= ~EXT2_FLAG_DIRTY;    /* nothing else changed: write nothing else */
	ext2fs_close_free(&fs);
	return rc;
}
