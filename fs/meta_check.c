/* Validity checks of what the engine follows on disk (docs/hostile-input.md):
 * the kernel's ext4 block-validity ("system zone") check, its reserved-inode
 * and i_size checks, for csvfs. A corrupt inode is answered with EIO from then
 * on (logged once, with its number and the cause) and is never freed or
 * written: a damaged structure is never made worse, and no bytes from the
 * wrong place are ever served. */
#include "fs/meta_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_EXTENT_DEPTH 5             /* EXT4_MAX_EXTENT_DEPTH */
#define EXT4_ERR_EFSCORRUPTED 5        /* the kernel's code for s_*_error_errcode */
#define INIT_MAX_LEN 32768u

/* One run of metadata blocks [start, end). */
struct sys_zone {
	blk64_t start, end;
	const char *what;
};

struct bad_inode {
	ext2_ino_t ino;
	int fatal;                     /* 0: only a bad entry in it was reported */
};

struct zone_list {
	struct sys_zone *z;
	size_t n, cap;
	int err;
};

static void zone_add(struct zone_list *l, blk64_t start, uint64_t len, const char *what)
{
	if (!len || l->err)
		return;
	if (l->n && l->z[l->n - 1].what == what && l->z[l->n - 1].end == start) {
		l->z[l->n - 1].end += len;   /* the journal comes block by block */
		return;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		struct sys_zone *p = realloc(l->z, cap * sizeof(*p));
		if (!p) {
			l->err = -ENOMEM;
			return;
		}
		l->z = p;
		l->cap = cap;
	}
	l->z[l->n++] = (struct sys_zone){ start, start + len, what };
}

static int zone_cmp(const void *a, const void *b)
{
	const struct sys_zone *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* The zone overlapping [start, start+len), or NULL. Zones may overlap each
 * other (flex_bg packs bitmaps next to tables): any overlapping one will do,
 * so look back from the last zone starting before the end. */
static const struct sys_zone *zone_hit(const struct volume *v, blk64_t start, uint64_t len)
{
	size_t lo = 0, hi = v->nzones;
	while (lo < hi) {                /* first zone starting at or after start+len */
		size_t mid = (lo + hi) / 2;
		if (v->zones[mid].start < start + len)
			lo = mid + 1;
		else
			hi = mid;
	}
	const struct sys_zone *first = NULL;   /* the one holding the lowest block: named */
	for (size_t i = lo, seen = 0; i > 0 && seen < 64; i--, seen++)
		if (v->zones[i - 1].end > start)
			first = &v->zones[i - 1];
	return first;
}

static int journal_block_cb(ext2_filsys fs, blk64_t *blk, e2_blkcnt_t cnt, blk64_t ref,
			    int refoff, void *priv)
{
	(void)fs; (void)cnt; (void)ref; (void)refoff;
	zone_add(priv, *blk, 1, "the journal");
	return 0;
}

/* The journal inode's blocks, extent by extent (a 1 GiB journal is a few
 * extents but 262,144 blocks: ext2fs_block_iterate3 calls back for each one,
 * at every attach), its extent tree blocks too; a journal without extents
 * block by block. */
static errcode_t add_journal_zones(ext2_filsys fs, ext2_ino_t ino, struct zone_list *l)
{
	struct ext2_inode in;
	errcode_t e = ext2fs_read_inode(fs, ino, &in);
	if (e)
		return e;
	if (!(in.i_flags & EXT4_EXTENTS_FL))
		return ext2fs_block_iterate3(fs, ino, BLOCK_FLAG_READ_ONLY, NULL, journal_block_cb, l);
	ext2_extent_handle_t h;
	e = ext2fs_extent_open2(fs, ino, &in, &h);
	if (e)
		return e;
	struct ext2fs_extent ex;
	e = ext2fs_extent_get(h, EXT2_EXTENT_ROOT, &ex);
	while (!e && !l->err) {
		if (!(ex.e_flags & EXT2_EXTENT_FLAGS_SECOND_VISIT))   /* an index entry, on the way up */
			zone_add(l, ex.e_pblk, (ex.e_flags & EXT2_EXTENT_FLAGS_LEAF) ? ex.e_len : 1,
				 "the journal");
		e = ext2fs_extent_get(h, EXT2_EXTENT_NEXT, &ex);
	}
	ext2fs_extent_free(h);
	return e == EXT2_ET_EXTENT_NO_NEXT ? 0 : e;
}

static void add_group_zones(ext2_filsys fs, struct zone_list *l)
{
	unsigned gdt_blocks = fs->desc_blocks + fs->super->s_reserved_gdt_blocks;
	zone_add(l, 0, fs->super->s_first_data_block + 1, "the superblock");
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		blk64_t super = 0, old_desc = 0, new_desc = 0;
		blk_t used = 0;
		ext2fs_super_and_bgd_loc2(fs, g, &super, &old_desc, &new_desc, &used);
		if (super || g == 0)
			zone_add(l, super, 1, "a superblock");
		if (old_desc)
			zone_add(l, old_desc, ext2fs_has_feature_meta_bg(fs->super) ? 1 : gdt_blocks,
				 "the group descriptor table");
		if (new_desc)
			zone_add(l, new_desc, 1, "the group descriptor table");
		zone_add(l, ext2fs_block_bitmap_loc(fs, g), 1, "a block bitmap");
		zone_add(l, ext2fs_inode_bitmap_loc(fs, g), 1, "an inode bitmap");
		zone_add(l, ext2fs_inode_table_loc(fs, g), fs->inode_blocks_per_group, "an inode table");
	}
}

/* Every metadata block must be marked in use in the block bitmap, or an
 * allocation could hand it out and a new directory block, extent block or
 * file data would overwrite it (the kernel's ext4_validate_block_bitmap).
 * A read-only mount allocates nothing. */
static int zones_in_use(struct volume *v, char *err, size_t errlen)
{
	ext2_filsys fs = v->fs;
	for (size_t i = 0; i < v->nzones && !v->read_only; i++) {
		const struct sys_zone *z = &v->zones[i];
		blk64_t free_blk;
		if (ext2fs_find_first_zero_block_bitmap2(fs->block_map, z->start, z->end - 1, &free_blk) == 0) {
			snprintf(err, errlen, "LUN %s: volume %s: the block bitmap of group %u marks block "
				 "%llu (%s) free: corrupt block bitmap; run e2fsck -f %s", v->lun, v->uuid,
				 ext2fs_group_of_blk2(fs, free_blk), (unsigned long long)free_blk, z->what,
				 v->lun);
			return -EUCLEAN;
		}
	}
	return 0;
}

int sysz_build(struct volume *v, char *err, size_t errlen)
{
	ext2_filsys fs = v->fs;
	struct zone_list l = { 0 };
	add_group_zones(fs, &l);
	size_t group_zones = l.n;
	if (ext2fs_has_feature_mmp(fs->super))
		zone_add(&l, fs->super->s_mmp_block, 1, "the MMP block");
	errcode_t e = 0;
	if (ext2fs_has_feature_journal(fs->super) && fs->super->s_journal_inum)
		e = add_journal_zones(fs, fs->super->s_journal_inum, &l);
	if (l.err || e) {
		free(l.z);
		snprintf(err, errlen, "LUN %s: volume %s: the journal inode's blocks are unreadable: %s",
			 v->lun, v->uuid, l.err ? strerror(-l.err) : error_message(e));
		return l.err ? l.err : -EUCLEAN;
	}
	qsort(l.z, group_zones, sizeof(*l.z), zone_cmp);
	free(v->zones);
	v->zones = l.z;
	v->nzones = group_zones;
	/* The journal and the MMP block must lie in the volume, clear of the
	 * group metadata: the journal writes over them. */
	blk64_t total = ext2fs_blocks_count(fs->super);
	for (size_t i = group_zones; i < l.n; i++) {
		const struct sys_zone *z = &l.z[i], *hit = zone_hit(v, z->start, z->end - z->start);
		if (z->end > total || z->start < fs->super->s_first_data_block || hit) {
			snprintf(err, errlen, "LUN %s: volume %s: %s (blocks %llu-%llu) %s%s", v->lun,
				 v->uuid, z->what, (unsigned long long)z->start,
				 (unsigned long long)z->end - 1, hit ? "overlaps " : "lies outside the volume",
				 hit ? hit->what : "");
			sysz_free(v);
			return -EUCLEAN;
		}
	}
	v->nzones = l.n;
	qsort(v->zones, v->nzones, sizeof(*v->zones), zone_cmp);
	int rc = zones_in_use(v, err, errlen);
	if (rc)
		sysz_free(v);
	return rc;
}

void sysz_free(struct volume *v)
{
	free(v->zones);
	v->zones = NULL;
	v->nzones = 0;
	free(v->bad);
	v->bad = NULL;
	v->nbad = v->bad_cap = 0;
	v->errors_found = 0;
}

int volume_refuses_changes(const struct volume *v)
{
	return v->read_only || (v->errors_found && !v->errors_continue);
}

/* Overwrites change no metadata, but after corruption under remount-ro the
 * volume takes no writes at all, as ext4's read-only remount: data written
 * now could land in blocks a damaged structure also claims. */
int meta_write_check(struct volume *v)
{
	return volume_refuses_changes(v) ? -EROFS : 0;
}

/* One of the superblock's two error records (first, last). */
static void set_error_record(__u32 *time_lo, __u8 *time_hi, __u32 *ino_field,
			     __u64 *block, __u32 *line, __u8 *errcode, __u8 func[32],
			     ext2_ino_t ino, uint64_t now)
{
	*time_lo = (uint32_t)now;
	*time_hi = (uint8_t)(now >> 32);
	*ino_field = ino;
	*block = 0;
	*line = 0;
	*errcode = EXT4_ERR_EFSCORRUPTED;
	memset(func, 0, 32);
	memcpy(func, "csvfs", 5);
}

/* As ext4's save_error_info: the error state and count, and the first and
 * last error, in the superblock (committed with the next transaction), so
 * that e2fsck and dumpe2fs see the volume needs checking. */
static void record_error(struct volume *v, ext2_ino_t ino)
{
	struct ext2_super_block *sb = v->fs->super;
	if (v->read_only || !(v->fs->flags & EXT2_FLAG_RW))
		return;
	uint64_t now = (uint64_t)time(NULL);
	sb->s_state |= EXT2_ERROR_FS;
	if (sb->s_error_count < UINT32_MAX)
		sb->s_error_count++;
	if (!sb->s_first_error_time && !sb->s_first_error_time_hi)
		set_error_record(&sb->s_first_error_time, &sb->s_first_error_time_hi,
				 &sb->s_first_error_ino, &sb->s_first_error_block,
				 &sb->s_first_error_line, &sb->s_first_error_errcode,
				 sb->s_first_error_func, ino, now);
	set_error_record(&sb->s_last_error_time, &sb->s_last_error_time_hi, &sb->s_last_error_ino,
			 &sb->s_last_error_block, &sb->s_last_error_line, &sb->s_last_error_errcode,
			 sb->s_last_error_func, ino, now);
	ext2fs_mark_super_dirty(v->fs);
	volume_mark_dirty(v);
}

const char *blocks_invalid(const struct volume *v, blk64_t start, uint64_t len)
{
	blk64_t total = ext2fs_blocks_count(v->fs->super);
	if (len == 0 || start < v->fs->super->s_first_data_block || start >= total || len > total - start)
		return "beyond the end of the volume";
	const struct sys_zone *z = zone_hit(v, start, len);
	return z ? z->what : NULL;
}

static struct bad_inode *bad_find(const struct volume *v, ext2_ino_t ino)
{
	for (size_t i = 0; i < v->nbad; i++)
		if (v->bad[i].ino == ino)
			return &v->bad[i];
	return NULL;
}

int inode_known_bad(const struct volume *v, ext2_ino_t ino)
{
	const struct bad_inode *b = bad_find(v, ino);
	return b && b->fatal;
}

/* Records ino (fatal: every later access is EIO) and logs the first report. */
static int report(struct volume *v, ext2_ino_t ino, int fatal, const char *fmt, va_list ap)
{
	struct bad_inode *b = bad_find(v, ino);
	int first = !b || (fatal && !b->fatal);
	if (!b && v->nbad == v->bad_cap) {
		size_t cap = v->bad_cap ? v->bad_cap * 2 : 16;
		struct bad_inode *p = realloc(v->bad, cap * sizeof(*p));
		if (p) {
			v->bad = p;
			v->bad_cap = cap;
		}
	}
	if (!b && v->nbad < v->bad_cap) {
		b = &v->bad[v->nbad++];
		*b = (struct bad_inode){ ino, 0 };
	}
	if (b && fatal)
		b->fatal = 1;
	if (first) {
		char why[512];
		vsnprintf(why, sizeof(why), fmt, ap);
		csvfs_log(LOG_ERR_L, "corruption: inode %u: %s; answering EIO%s (run e2fsck -f %s "
			  "when the volume is offline)", ino, why, fatal ? " for this inode" : "", v->lun);
		record_error(v, ino);
	}
	if (!v->errors_found && !v->errors_continue && !v->read_only)
		csvfs_log(LOG_ERR_L, "corruption found: metadata changes are refused (EROFS) until "
			  "unmount (errors=remount-ro); unmount and run e2fsck -f %s", v->lun);
	v->errors_found = 1;
	return -EIO;
}

int corruption_report(struct volume *v, ext2_ino_t ino, int fatal, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = report(v, ino, fatal, fmt, ap);
	va_end(ap);
	return rc;
}

int dir_entry_check(struct volume *v, ext2_ino_t dir, const char *name, ext2_ino_t ino)
{
	if (ino == EXT2_ROOT_INO || (ino >= EXT2_FIRST_INODE(v->fs->super) &&
				     ino <= v->fs->super->s_inodes_count))
		return 0;
	return dir_entry_corrupt(v, dir, "entry '%.255s' names %s inode %u", name,
				 ino > v->fs->super->s_inodes_count ? "nonexistent" : "reserved", ino);
}

/* The largest i_size an extent-mapped inode can have: 2^32 blocks. */
static uint64_t max_file_bytes(const struct volume *v)
{
	return (1ull << 32) * v->blocksize;
}

static int check_mapping(struct volume *v, ext2_ino_t ino, const char *kind, uint64_t lblk,
			 blk64_t pblk, uint64_t len)
{
	const char *what = blocks_invalid(v, pblk, len);
	if (!what)
		return 0;
	return inode_corrupt(v, ino, "%s at file block %llu points to blocks %llu-%llu, %s", kind,
			     (unsigned long long)lblk, (unsigned long long)pblk,
			     (unsigned long long)(pblk + (len ? len : 1) - 1), what);
}

int extent_check(struct volume *v, ext2_ino_t ino, uint64_t lblk, blk64_t pblk, uint64_t len)
{
	return check_mapping(v, ino, "extent", lblk, pblk, len);
}

/* The extent header in i_block and the entries it holds. */
static int check_root(struct volume *v, ext2_ino_t ino, const struct ext2_inode_large *in)
{
	const struct ext3_extent_header *eh = (const void *)in->i_block;
	unsigned max_entries = (sizeof(in->i_block) - sizeof(*eh)) / sizeof(struct ext3_extent);
	if (ext2fs_le16_to_cpu(eh->eh_magic) != EXT3_EXT_MAGIC)
		return inode_corrupt(v, ino, "extent header magic 0x%04x (not 0x%04x)",
				     ext2fs_le16_to_cpu(eh->eh_magic), EXT3_EXT_MAGIC);
	unsigned depth = ext2fs_le16_to_cpu(eh->eh_depth), n = ext2fs_le16_to_cpu(eh->eh_entries);
	if (depth > MAX_EXTENT_DEPTH)
		return inode_corrupt(v, ino, "extent tree depth %u (at most %u)", depth, MAX_EXTENT_DEPTH);
	if (ext2fs_le16_to_cpu(eh->eh_max) > max_entries || n > ext2fs_le16_to_cpu(eh->eh_max))
		return inode_corrupt(v, ino, "extent header says %u of %u entries (at most %u fit)", n,
				     ext2fs_le16_to_cpu(eh->eh_max), max_entries);
	for (unsigned i = 0; i < n; i++) {
		int rc;
		if (depth == 0) {
			const struct ext3_extent *ex = (const void *)(eh + 1);
			unsigned len = ext2fs_le16_to_cpu(ex[i].ee_len);
			blk64_t pblk = ext2fs_le32_to_cpu(ex[i].ee_start) |
				       ((blk64_t)ext2fs_le16_to_cpu(ex[i].ee_start_hi) << 32);
			rc = check_mapping(v, ino, "extent", ext2fs_le32_to_cpu(ex[i].ee_block), pblk,
					   len > INIT_MAX_LEN ? len - INIT_MAX_LEN : len);
		} else {
			const struct ext3_extent_idx *ix = (const void *)(eh + 1);
			blk64_t pblk = ext2fs_le32_to_cpu(ix[i].ei_leaf) |
				       ((blk64_t)ext2fs_le16_to_cpu(ix[i].ei_leaf_hi) << 32);
			rc = check_mapping(v, ino, "extent tree block", ext2fs_le32_to_cpu(ix[i].ei_block),
					   pblk, 1);
		}
		if (rc)
			return rc;
	}
	return 0;
}

int extent_tree_check(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in)
{
	if (!(in->i_flags & EXT4_EXTENTS_FL))
		return 0;
	ext2_extent_handle_t h;
	errcode_t e = ext2fs_extent_open2(v->fs, ino, (struct ext2_inode *)in, &h);
	if (e)
		return inode_corrupt(v, ino, "extent tree unreadable: %s", error_message(e));
	struct ext2fs_extent ex;
	int rc = 0;
	uint64_t last_end = 0;
	e = ext2fs_extent_get(h, EXT2_EXTENT_ROOT, &ex);
	for (unsigned guard = 0; !e && rc == 0 && guard < 10000000; guard++) {
		int leaf = (ex.e_flags & EXT2_EXTENT_FLAGS_LEAF) != 0;
		rc = check_mapping(v, ino, leaf ? "extent" : "extent tree block", ex.e_lblk, ex.e_pblk,
				   leaf ? ex.e_len : 1);
		if (rc == 0 && leaf && ex.e_lblk < last_end)
			rc = inode_corrupt(v, ino, "extents overlap at file block %llu",
					   (unsigned long long)ex.e_lblk);
		if (leaf)
			last_end = ex.e_lblk + ex.e_len;
		e = ext2fs_extent_get(h, EXT2_EXTENT_NEXT, &ex);
	}
	ext2fs_extent_free(h);
	if (rc == 0 && e && e != EXT2_ET_EXTENT_NO_NEXT)
		rc = inode_corrupt(v, ino, "extent tree unreadable: %s", error_message(e));
	return rc;
}

int inode_check(struct volume *v, ext2_ino_t ino, const struct ext2_inode_large *in)
{
	if (inode_known_bad(v, ino))
		return -EIO;
	if (!v->zones || !in->i_mode || (ino < EXT2_FIRST_INODE(v->fs->super) && ino != EXT2_ROOT_INO))
		return 0;   /* not built yet (mounting), free, or the engine's own */
	uint64_t size = EXT2_I_SIZE(in);
	if (size > max_file_bytes(v))
		return inode_corrupt(v, ino, "i_size %llu is beyond the largest file (%llu)",
				     (unsigned long long)size, (unsigned long long)max_file_bytes(v));
	blk64_t acl = ext2fs_file_acl_block(v->fs, (const struct ext2_inode *)in);
	int rc = acl ? check_mapping(v, ino, "extended attribute block", 0, acl, 1) : 0;
	/* Deeper levels are checked where they are followed: a directory's
	 * blocks one by one before they are read (and by their checksums, which
	 * name the directory), a file's tree once per minode (meta_map). Walking
	 * a big directory's tree at every read would cost every lookup. */
	if (rc == 0 && (in->i_flags & EXT4_EXTENTS_FL))
		rc = check_root(v, ino, in);
	return rc;
}

int root_check(struct volume *v, char *err, size_t errlen)
{
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	int rc = inode_read(v, EXT2_ROOT_INO, &in);
	if (rc == 0 && !LINUX_S_ISDIR(in.i_mode))
		rc = inode_corrupt(v, EXT2_ROOT_INO, "mode 0%o is not a directory's", in.i_mode);
	pthread_mutex_unlock(&v->lock);
	if (rc)
		snprintf(err, errlen, "LUN %s: volume %s: the root directory (inode 2) is corrupt "
			 "(the log says why); run e2fsck -f %s", v->lun, v->uuid, v->lun);
	return rc ? -EUCLEAN : 0;
}
