/* Formatting a LUN as a csvfs volume: an ext4 filesystem laid out by
 * libext2fs (64bit, extents, metadata_csum, dir_index, internal journal) with
 * an htree root directory. */
#include "fs/csvfs.h"
#include "fs/meta_internal.h"

#include <blkid/blkid.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#define BLOCKSIZE 4096u
#define BYTES_PER_INODE 16384u
#define WIPE_BYTES (1u << 20)

/* Opens (creating a sparse image if asked) and sizes the LUN. */
static int open_lun(const struct csvfs_format_opts *o, uint64_t *bytes, char *err, size_t errlen)
{
	struct stat st;
	if (stat(o->lun, &st) != 0) {
		if (errno != ENOENT || !o->create_size) {
			snprintf(err, errlen, "LUN %s: %s%s", o->lun, strerror(errno),
				 errno == ENOENT ? " (give -s SIZE to create an image file)" : "");
			return -ENOENT;
		}
		int fd = open(o->lun, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || ftruncate(fd, (off_t)o->create_size) != 0) {
			snprintf(err, errlen, "LUN %s: cannot create image: %s", o->lun, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -EIO;
		}
		return fd;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		snprintf(err, errlen, "LUN %s is neither a block device nor an image file", o->lun);
		return -EINVAL;
	}
	int fd = open(o->lun, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "LUN %s cannot be opened for writing: %s%s", o->lun, strerror(e),
			 (e == EROFS || e == EACCES || e == EPERM) ? " (read-only LUN)" : "");
		return -e;
	}
	int ro = 0;
	if (S_ISBLK(st.st_mode) && ioctl(fd, BLKROGET, &ro) == 0 && ro) {
		snprintf(err, errlen, "LUN %s is read-only", o->lun);
		close(fd);
		return -EROFS;
	}
	if (S_ISREG(st.st_mode) && st.st_size == 0 && o->create_size &&
	    ftruncate(fd, (off_t)o->create_size) != 0) {
		snprintf(err, errlen, "LUN %s: cannot size image: %s", o->lun, strerror(errno));
		close(fd);
		return -EIO;
	}
	(void)bytes;
	return fd;
}

static int lun_size(int fd, const char *lun, uint64_t *bytes, char *err, size_t errlen)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, bytes) != 0) {
			snprintf(err, errlen, "LUN %s: cannot read device size: %s", lun, strerror(errno));
			return -EIO;
		}
	} else {
		*bytes = (uint64_t)st.st_size;
	}
	if (*bytes < CSVFS_MIN_LUN_BYTES) {
		snprintf(err, errlen, "LUN %s is too small: %llu bytes (csvfs needs at least %llu MiB)", lun,
			 (unsigned long long)*bytes, CSVFS_MIN_LUN_BYTES >> 20);
		return -ENOSPC;
	}
	return 0;
}

/* Refuses to overwrite a filesystem or partition table unless forced. */
static int check_existing(const struct csvfs_format_opts *o, char *err, size_t errlen)
{
	blkid_probe pr = blkid_new_probe_from_filename(o->lun);
	if (!pr) {
		snprintf(err, errlen, "LUN %s: cannot probe for existing contents", o->lun);
		return -EIO;
	}
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_enable_partitions(pr, 1);
	int found = blkid_do_safeprobe(pr);
	const char *what = NULL;
	if (found == 0 && blkid_probe_lookup_value(pr, "TYPE", &what, NULL) != 0)
		blkid_probe_lookup_value(pr, "PTTYPE", &what, NULL);
	int rc = 0;
	if (found == 0 && !o->force) {
		snprintf(err, errlen, "LUN %s already holds %s%s; use -f to overwrite it", o->lun,
			 what ? "a " : "data", what ? what : "");
		rc = -EEXIST;
	} else if (found == -2 && !o->force) {
		snprintf(err, errlen, "LUN %s holds ambiguous signatures; use -f to overwrite it", o->lun);
		rc = -EEXIST;
	}
	blkid_free_probe(pr);
	return rc;
}

/* Zeroes the first and last MiB so old signatures (partition tables, other
 * filesystems) cannot outlive the format. */
static int wipe_signatures(int fd, uint64_t bytes)
{
	static const char zeros[64 * 1024];
	for (uint64_t off = 0; off < WIPE_BYTES; off += sizeof(zeros)) {
		if (pwrite(fd, zeros, sizeof(zeros), (off_t)off) != (ssize_t)sizeof(zeros) ||
		    pwrite(fd, zeros, sizeof(zeros), (off_t)(bytes - WIPE_BYTES + off)) != (ssize_t)sizeof(zeros))
			return -errno;
	}
	return fdatasync(fd) == 0 ? 0 : -errno;
}

static void set_params(struct ext2_super_block *p, uint64_t bytes)
{
	uint64_t blocks = bytes / BLOCKSIZE;
	memset(p, 0, sizeof(*p));
	p->s_rev_level = EXT2_DYNAMIC_REV;
	p->s_log_block_size = 2;        /* 4096 */
	ext2fs_blocks_count_set(p, blocks);
	ext2fs_r_blocks_count_set(p, blocks / 100);
	uint64_t inodes = bytes / BYTES_PER_INODE;
	p->s_inodes_count = inodes > 0xfffffff0u ? 0xfffffff0u : (uint32_t)inodes;
	p->s_inode_size = 256;
	p->s_min_extra_isize = p->s_want_extra_isize = 32;
	p->s_desc_size = EXT2_MIN_DESC_SIZE_64BIT;
	p->s_log_groups_per_flex = 4;
	ext2fs_set_feature_64bit(p);
	ext2fs_set_feature_extents(p);
	ext2fs_set_feature_metadata_csum(p);
	ext2fs_set_feature_dir_index(p);
	ext2fs_set_feature_filetype(p);
	ext2fs_set_feature_sparse_super(p);
	ext2fs_set_feature_large_file(p);
	ext2fs_set_feature_huge_file(p);
	ext2fs_set_feature_flex_bg(p);
	ext2fs_set_feature_dir_nlink(p);
	ext2fs_set_feature_extra_isize(p);
	ext2fs_set_feature_xattr(p);
	/* Descriptor blocks reserved for growth (libext2fs sizes them for 1024
	 * times the volume, as mke2fs): csvctl grow adds groups without moving
	 * a block that a node's layout points at (docs/volumes.md). */
	ext2fs_set_feature_resize_inode(p);
}

static void set_identity(ext2_filsys fs, const uuid_t uu, const char *label)
{
	struct ext2_super_block *sb = fs->super;
	memcpy(sb->s_uuid, uu, 16);
	uuid_generate((unsigned char *)sb->s_hash_seed);
	sb->s_def_hash_version = EXT2_HASH_HALF_MD4;
	sb->s_flags |= ((char)-1 < 0) ? EXT2_FLAGS_SIGNED_HASH : EXT2_FLAGS_UNSIGNED_HASH;
	sb->s_checksum_type = EXT2_CRC32C_CHKSUM;
	sb->s_max_mnt_count = (uint16_t)-1;
	sb->s_default_mount_opts = EXT2_DEFM_XATTR_USER | EXT2_DEFM_ACL;
	if (label)
		strncpy((char *)sb->s_volume_name, label, sizeof(sb->s_volume_name));
	/* metadata_csum_seed: checksums are seeded from this fixed value, not
	 * from the GUID, so a snapshot can get a GUID of its own (tune2fs -U)
	 * without rewriting every checksum (docs/snapshot.md). */
	ext2fs_set_feature_csum_seed(sb);
	sb->s_checksum_seed = ext2fs_crc32c_le(~0U, sb->s_uuid, sizeof(sb->s_uuid));
	ext2fs_init_csum_seed(fs);
}

static errcode_t zero_inode_tables(ext2_filsys fs)
{
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		errcode_t e = ext2fs_zero_blocks2(fs, ext2fs_inode_table_loc(fs, g),
						  fs->inode_blocks_per_group, NULL, NULL);
		if (e)
			return e;
		ext2fs_bg_flags_set(fs, g, EXT2_BG_INODE_ZEROED);
		ext2fs_group_desc_csum_set(fs, g);
	}
	return 0;
}

static errcode_t make_lost_and_found(ext2_filsys fs)
{
	ext2_ino_t ino;
	fs->umask = 077;
	errcode_t e = ext2fs_mkdir(fs, EXT2_ROOT_INO, 0, "lost+found");
	fs->umask = 022;
	if (!e)
		e = ext2fs_lookup(fs, EXT2_ROOT_INO, "lost+found", 10, NULL, &ino);
	/* e2fsck wants room in lost+found without allocating: 16 KiB like mke2fs */
	for (unsigned size = fs->blocksize; !e && size < 16384; size += fs->blocksize)
		e = ext2fs_expand_dir(fs, ino);
	return e;
}

/* The bad-blocks inode owns the volume's last block, so no file ever does:
 * libext2fs 1.46.6-1.47.0 (Debian 12) refuses to free a range that ends at
 * the last block (an off-by-one in punch_extent_blocks, fixed upstream), which
 * would make such a file impossible to delete or truncate. */
static errcode_t reserve_inodes(ext2_filsys fs)
{
	ext2fs_mark_inode_bitmap2(fs->inode_map, EXT2_BAD_INO);
	ext2fs_inode_alloc_stats2(fs, EXT2_BAD_INO, +1, 0);
	badblocks_list guard;
	blk64_t last = ext2fs_blocks_count(fs->super) - 1;
	errcode_t e = ext2fs_badblocks_list_create(&guard, 1);
	if (!e)
		e = ext2fs_badblocks_list_add(guard, (blk_t)last);
	if (!e) {
		/* summary counts are recomputed from the bitmaps at the end */
		ext2fs_mark_block_bitmap2(fs->block_map, last);
		e = ext2fs_update_bb_inode(fs, guard);
		ext2fs_badblocks_list_free(guard);
	}
	for (ext2_ino_t i = EXT2_ROOT_INO + 1; !e && i < EXT2_FIRST_INODE(fs->super); i++)
		ext2fs_inode_alloc_stats2(fs, i, +1, 0);
	return e;
}

static errcode_t add_journal(ext2_filsys fs)
{
	struct ext2fs_journal_params jp;
	errcode_t e = ext2fs_get_journal_params(&jp, fs);
	if (!e)
		e = ext2fs_add_journal_inode3(fs, &jp, ~0ULL, 0);
	return e;
}

/* The root directory as an htree, through the engine's own directory code. */
static int index_root(ext2_filsys fs)
{
	struct volume v = { .fs = fs, .blocksize = fs->blocksize };
	return dir_make_indexed(&v, EXT2_ROOT_INO);
}

static int build_fs(const struct csvfs_format_opts *o, uint64_t bytes, const uuid_t uu,
		    char *err, size_t errlen)
{
	struct ext2_super_block param;
	ext2_filsys fs = NULL;
	set_params(&param, bytes);
	errcode_t e = ext2fs_initialize(o->lun, EXT2_FLAG_64BITS | EXT2_FLAG_EXCLUSIVE, &param,
					unix_io_manager, &fs);
	const char *step = "initialising";
	if (!e) {
		set_identity(fs, uu, o->label);
		step = "allocating group tables";
		e = ext2fs_allocate_tables(fs);
	}
	if (!e && (step = "reserving descriptor blocks for growth", 1))
		e = ext2fs_create_resize_inode(fs);
	if (!e && (step = "setting up multi-mount protection", 1)) {
		ext2fs_set_feature_mmp(fs->super);
		fs->super->s_mmp_update_interval = 5;
		e = ext2fs_mmp_init(fs);
	}
	if (!e && (step = "zeroing inode tables", 1))
		e = zero_inode_tables(fs);
	if (!e && (step = "creating the root directory", 1))
		e = ext2fs_mkdir(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, 0);
	if (!e && (step = "creating lost+found", 1))
		e = make_lost_and_found(fs);
	if (!e && (step = "reserving inodes", 1))
		e = reserve_inodes(fs);
	if (!e && (step = "creating the journal", 1))
		e = add_journal(fs);
	if (!e && (step = "indexing the root directory", 1) && index_root(fs) != 0)
		e = EXT2_ET_DIR_CORRUPTED;
	if (!e && (step = "writing", 1)) {
		fs->super->s_state |= EXT2_VALID_FS;
		e = ext2fs_calculate_summary_stats(fs, 0);
		if (!e)
			e = ext2fs_set_gdt_csum(fs);
		if (!e)
			e = ext2fs_close_free(&fs);
	}
	if (e) {
		snprintf(err, errlen, "LUN %s: formatting failed while %s: %s", o->lun, step, error_message(e));
		if (fs)
			ext2fs_free(fs);
		return -EIO;
	}
	return 0;
}

int csvfs_format(const struct csvfs_format_opts *o, char guid_out[37], char *err, size_t errlen)
{
	uuid_t uu;
	initialize_ext2_error_table();
	if (o->label && strlen(o->label) > 16) {
		snprintf(err, errlen, "label '%s' is longer than 16 bytes", o->label);
		return -EINVAL;
	}
	if (o->uuid) {
		if (uuid_parse(o->uuid, uu) != 0 || uuid_is_null(uu)) {
			snprintf(err, errlen, "bad volume GUID '%s' (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
				 o->uuid);
			return -EINVAL;
		}
	} else {
		uuid_generate(uu);
	}
	uint64_t bytes = 0;
	int fd = open_lun(o, &bytes, err, errlen);
	if (fd < 0)
		return fd;
	/* "In use" is never overridden (-f only overrides "holds a filesystem"),
	 * and is settled before anything is written. */
	int rc = lun_size(fd, o->lun, &bytes, err, errlen);
	if (rc == 0)
		rc = lun_check_kernel_unused(o->lun, err, errlen);
	if (rc == 0)
		rc = mmp_check_unheld(o->lun, err, errlen);
	if (rc == 0)
		rc = check_existing(o, err, errlen);
	if (rc == 0 && o->force && (rc = wipe_signatures(fd, bytes)) != 0)
		snprintf(err, errlen, "LUN %s: wiping old signatures failed: %s", o->lun, strerror(-rc));
	close(fd);
	if (rc == 0)
		rc = build_fs(o, bytes, uu, err, errlen);
	if (rc == 0)
		uuid_unparse_lower(uu, guid_out);
	return rc;
}

/* ---- a GUID of its own, for a snapshot ---------------------------------------- */

static int parse_or_generate(const char *guid, uuid_t uu, char *err, size_t errlen)
{
	if (!guid) {
		uuid_generate(uu);
		return 0;
	}
	if (uuid_parse(guid, uu) == 0 && !uuid_is_null(uu))
		return 0;
	snprintf(err, errlen, "bad volume GUID '%s' (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", guid);
	return -EINVAL;
}

/* What stops a GUID change on an open volume, or NULL. */
static const char *guid_change_refused(ext2_filsys fs, const uuid_t uu)
{
	struct ext2_super_block *sb = fs->super;
	if (ext2fs_has_feature_metadata_csum(sb) && !ext2fs_has_feature_csum_seed(sb))
		return "it was formatted without metadata_csum_seed, so every checksum depends on its "
		       "GUID (tune2fs -U rewrites them all)";
	if (ext2fs_has_feature_journal_needs_recovery(sb))
		return "its journal needs recovery (a copy taken outside a csvfs snapshot?): run e2fsck "
		       "on it first";
	if (memcmp(sb->s_uuid, uu, sizeof(uuid_t)) == 0)
		return "it already has that GUID";
	return NULL;
}

int csvfs_set_guid(const char *lun, const char *new_guid, unsigned flags, char guid_out[37],
		   char *err, size_t errlen)
{
	uuid_t uu;
	initialize_ext2_error_table();
	int rc = parse_or_generate(new_guid, uu, err, errlen);
	if (rc)
		return rc;
	int fresh = (flags & CSVFS_GUID_FRESH_COPY) != 0;
	ext2_filsys fs = NULL;
	errcode_t e = ext2fs_open(lun, EXT2_FLAG_RW | EXT2_FLAG_64BITS | (fresh ? EXT2_FLAG_SKIP_MMP : 0), 0, 0,
				  unix_io_manager, &fs);
	if (e) {
		int busy = e == EXT2_ET_MMP_FAILED || e == EXT2_ET_MMP_FSCK_ON || e == EXT2_ET_MMP_UNKNOWN_SEQ;
		snprintf(err, errlen, "LUN %s: %s%s", lun, error_message(e),
			 busy ? " (a node has it mounted: only a copy gets a GUID of its own)" : "");
		return busy ? -EBUSY : -EIO;
	}
	const char *why = guid_change_refused(fs, uu);
	if (why) {
		snprintf(err, errlen, "LUN %s: not changing its GUID: %s", lun, why);
		ext2fs_close_free(&fs);
		return -EINVAL;
	}
	memcpy(fs->super->s_uuid, uu, sizeof(uuid_t));
	if (ext2fs_has_feature_gdt_csum(fs->super))
		ext2fs_set_gdt_csum(fs);   /* uninit_bg's descriptor checksums hash the GUID */
	ext2fs_mark_super_dirty(fs);
	e = fresh && ext2fs_has_feature_mmp(fs->super) ? ext2fs_mmp_clear(fs) : 0;
	errcode_t ce = ext2fs_close_free(&fs);
	if (e || ce) {
		snprintf(err, errlen, "LUN %s: writing the new GUID failed: %s", lun, error_message(e ? e : ce));
		return -EIO;
	}
	uuid_unparse_lower(uu, guid_out);
	return 0;
}
