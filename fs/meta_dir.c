/* Directories: lookup by hash tree (htree) so a directory of 100,000 entries is
 * not a linear scan; removal and in-place update at the entry found; conversion
 * of a full one-block directory into an htree; readdir.
 *
 * libext2fs inserts into htrees itself (ext2fs_link); its lookup and unlink are
 * linear scans, which is why they are here. Callers hold v->lock. */
#include "fs/meta_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DX_ROOT_INFO_OFF 24        /* after the "." and ".." entries of block 0 */
#define DX_MAX_LEVELS 3

int mode_to_ftype(uint32_t mode)
{
	switch (mode & LINUX_S_IFMT) {
	case LINUX_S_IFREG: return EXT2_FT_REG_FILE;
	case LINUX_S_IFDIR: return EXT2_FT_DIR;
	case LINUX_S_IFLNK: return EXT2_FT_SYMLINK;
	case LINUX_S_IFCHR: return EXT2_FT_CHRDEV;
	case LINUX_S_IFBLK: return EXT2_FT_BLKDEV;
	case LINUX_S_IFIFO: return EXT2_FT_FIFO;
	case LINUX_S_IFSOCK: return EXT2_FT_SOCK;
	default: return EXT2_FT_UNKNOWN;
	}
}

/* Where a directory entry sits. */
struct dirent_loc {
	blk64_t pblk;
	unsigned off;
	int prev_off;                  /* -1: first entry of its block */
};

/* Maps and reads the blocks of one directory for one lookup. The extent
 * handle is opened once, at the first block: ext2fs_bmap2 would open one and
 * allocate two blocks of scratch for every block it maps, which is most of
 * the cost of a lookup (and of the time it holds the volume lock). A
 * directory without extents is mapped by ext2fs_bmap2, with the scratch
 * given. */
struct dir_map {
	struct volume *v;
	ext2_ino_t dir;
	struct ext2_inode_large *in;
	ext2_extent_handle_t h;
	char *scratch;                 /* 2 blocks, for ext2fs_bmap2: allocated when needed */
};

/* The physical block of directory block lblk; 0 for a hole; *uninit set
 * for an unwritten extent. Errors as ext2fs_bmap2's. */
static errcode_t dir_map_block(struct dir_map *m, blk64_t lblk, blk64_t *pblk, int *uninit)
{
	ext2_filsys fs = m->v->fs;
	struct ext2_inode *in = (struct ext2_inode *)m->in;
	*pblk = 0;
	*uninit = 0;
	if (!(in->i_flags & EXT4_EXTENTS_FL) || (in->i_flags & EXT4_INLINE_DATA_FL)) {
		int ret_flags = 0;
		if (!m->scratch && !(m->scratch = malloc(2 * (size_t)fs->blocksize)))
			return EXT2_ET_NO_MEMORY;
		errcode_t e = ext2fs_bmap2(fs, m->dir, in, m->scratch, 0, lblk, &ret_flags, pblk);
		*uninit = (ret_flags & BMAP_RET_UNINIT) != 0;
		return e;
	}
	if (lblk >= (1ull << 32) - 1)  /* as ext2fs_bmap2: past what an extent can map */
		return EXT2_ET_FILE_TOO_BIG;
	errcode_t e = m->h ? 0 : ext2fs_extent_open2(fs, m->dir, in, &m->h);
	if (!e)
		e = ext2fs_extent_goto2(m->h, 0, lblk);
	if (e == EXT2_ET_EXTENT_NOT_FOUND)
		return 0;
	struct ext2fs_extent ex;
	if (!e)
		e = ext2fs_extent_get(m->h, EXT2_EXTENT_CURRENT, &ex);
	if (!e && lblk >= ex.e_lblk && lblk < (blk64_t)ex.e_lblk + ex.e_len) {
		*pblk = ex.e_pblk + (lblk - ex.e_lblk);
		*uninit = (ex.e_flags & EXT2_EXTENT_FLAGS_UNINIT) != 0;
	}
	return e;
}

static void dir_map_done(struct dir_map *m)
{
	if (m->h)
		ext2fs_extent_free(m->h);
	m->h = NULL;
	free(m->scratch);
	m->scratch = NULL;
}

static int read_block(struct dir_map *m, blk64_t lblk, blk64_t *pblk, void *buf)
{
	struct volume *v = m->v;
	ext2_ino_t dir = m->dir;
	int uninit = 0;
	errcode_t e = dir_map_block(m, lblk, pblk, &uninit);
	if (!e && (*pblk == 0 || uninit))
		e = EXT2_ET_DIR_CORRUPTED;
	const char *what = e ? NULL : blocks_invalid(v, *pblk, 1);
	if (what)
		return inode_corrupt(v, dir, "directory block %llu is block %llu, %s",
				     (unsigned long long)lblk, (unsigned long long)*pblk, what);
	if (!e)
		e = ext2fs_read_dir_block4(v->fs, *pblk, buf, 0, dir);
	if (e == EXT2_ET_DIR_CSUM_INVALID || e == EXT2_ET_DIR_CORRUPTED)
		return dir_entry_corrupt(v, dir, "directory block %llu (block %llu): %s",
					 (unsigned long long)lblk, (unsigned long long)*pblk, error_message(e));
	if (e) {
		csvfs_log(LOG_ERR_L, "directory %u: block %llu unreadable: %s", dir,
			  (unsigned long long)lblk, error_message(e));
		return -EIO;
	}
	return 0;
}

/* Scans one leaf block for name; every field is bounds-checked because the
 * block came from disk. Returns 1 found, 0 not found, <0 corrupt. */
static int scan_block(struct volume *v, const char *buf, const char *name, int len,
		      unsigned *off_out, int *prev_out, ext2_ino_t *ino, int *ftype)
{
	unsigned bs = v->blocksize, off = 0;
	int prev = -1;
	while (off + 8 <= bs) {
		struct ext2_dir_entry *de = (struct ext2_dir_entry *)(buf + off);
		unsigned rec_len;
		if (ext2fs_get_rec_len(v->fs, de, &rec_len) || rec_len < 8 || rec_len % 4 ||
		    off + rec_len > bs)
			return -EIO;
		int nlen = ext2fs_dirent_name_len(de);
		if (de->inode && nlen == len && (unsigned)nlen + 8 <= rec_len &&
		    memcmp(de->name, name, (size_t)len) == 0) {
			*off_out = off;
			*prev_out = prev;
			*ino = de->inode;
			*ftype = ext2fs_dirent_file_type(de);
			return 1;
		}
		prev = (int)off;
		off += rec_len;
	}
	return 0;
}

static int linear_find(struct dir_map *m, const char *name, struct dirent_loc *loc,
		       ext2_ino_t *ino, int *ftype)
{
	struct volume *v = m->v;
	ext2_ino_t dir = m->dir;
	struct ext2_inode_large *in = m->in;
	uint64_t nblocks = EXT2_I_SIZE(in) / v->blocksize;
	char *buf = malloc(v->blocksize);
	if (!buf)
		return -ENOMEM;
	int rc = 0;
	for (uint64_t b = 0; b < nblocks && rc == 0; b++) {
		rc = read_block(m, b, &loc->pblk, buf);
		if (rc == 0)
			rc = scan_block(v, buf, name, (int)strlen(name), &loc->off, &loc->prev_off, ino, ftype);
		if (rc < 0 && rc != -ENOMEM)
			dir_entry_corrupt(v, dir, "directory block %llu: an entry's rec_len is impossible",
					  (unsigned long long)b);
	}
	free(buf);
	return rc < 0 ? rc : rc == 1 ? 0 : -ENOENT;
}

/* One level of the hash tree on the path to a leaf: an index block and the
 * hash range [lo, hi] its parent's entry gives it (the root: everything). */
struct dx_frame {
	char *buf;
	struct ext2_dx_entry *entries;
	unsigned count, at;
	ext2_dirhash_t lo, hi;
};

static int dx_hash(struct volume *v, int version, const char *name, int len, ext2_dirhash_t *hash)
{
	ext2_dirhash_t minor;
	if (version <= EXT2_HASH_TEA && (v->fs->super->s_flags & EXT2_FLAGS_UNSIGNED_HASH))
		version += 3;
	errcode_t e = ext2fs_dirhash2(version, name, len, v->fs->encoding, 0,
				      v->fs->super->s_hash_seed, hash, &minor);
	return e ? -EIO : 0;
}

static ext2_dirhash_t dx_hash_at(const struct dx_frame *f, unsigned i)
{
	return i ? ext2fs_le32_to_cpu(f->entries[i].hash) & ~1u : f->lo;
}

static uint32_t dx_block_at(const struct dx_frame *f, unsigned i)
{
	return ext2fs_le32_to_cpu(f->entries[i].block) & 0x0fffffff;
}

/* Loads the index block in f->buf (directory block lblk) and checks it as
 * the kernel's dx_probe does, and more: its count and limit (the limit is
 * what the block's layout gives), hashes in order and inside the range its
 * parent gave it, every child a block of the directory other than the root.
 * A bad index block is corruption: the caller scans the directory linearly,
 * which finds every name the leaves hold whatever the index says. */
static int dx_load_frame(struct volume *v, ext2_ino_t dir, const struct ext2_inode_large *in,
			 struct dx_frame *f, uint32_t lblk)
{
	struct ext2_dx_countlimit *cl;
	int off;
	if (ext2fs_get_dx_countlimit(v->fs, (struct ext2_dir_entry *)f->buf, &cl, &off))
		return dir_entry_corrupt(v, dir, "htree block %u is not an index block", lblk);
	unsigned tail = ext2fs_has_feature_metadata_csum(v->fs->super) ? sizeof(struct ext2_dx_tail) : 0;
	unsigned count = ext2fs_le16_to_cpu(cl->count), limit = ext2fs_le16_to_cpu(cl->limit);
	unsigned want = (v->blocksize - (unsigned)off - tail) / sizeof(struct ext2_dx_entry);
	if (count == 0 || count > limit || limit != want)
		return dir_entry_corrupt(v, dir, "htree block %u: count %u, limit %u (limit should be %u)",
					 lblk, count, limit, want);
	f->entries = (struct ext2_dx_entry *)cl;
	f->count = count;
	uint64_t nblocks = EXT2_I_SIZE(in) / v->blocksize;
	for (unsigned i = 0; i < count; i++) {
		uint32_t child = dx_block_at(f, i);
		if (child == 0 || child == lblk || child >= nblocks)
			return dir_entry_corrupt(v, dir, "htree block %u: entry %u points to block %u "
						 "(the directory has %llu)", lblk, i, child,
						 (unsigned long long)nblocks);
		ext2_dirhash_t h = dx_hash_at(f, i);
		if (h < f->lo || h > f->hi || (i && h < dx_hash_at(f, i - 1)))
			return dir_entry_corrupt(v, dir, "htree block %u: entry %u's hash 0x%08x is out of "
						 "order (range 0x%08x-0x%08x)", lblk, i, h, f->lo, f->hi);
	}
	return 0;
}

/* Reads the child of frames[l]'s current entry into frames[l + 1], with the
 * hash range that entry covers. */
static int dx_descend(struct dir_map *m, struct dx_frame *frames, int l)
{
	struct dx_frame *p = &frames[l], *c = &frames[l + 1];
	uint32_t child = dx_block_at(p, p->at);
	blk64_t pblk;
	c->lo = dx_hash_at(p, p->at);
	c->hi = p->at + 1 < p->count ? dx_hash_at(p, p->at + 1) | 1u : p->hi;
	int rc = read_block(m, child, &pblk, c->buf);
	return rc ? rc : dx_load_frame(m->v, m->dir, m->in, c, child);
}

/* Index of the last entry whose hash is <= hash (entry 0 covers from 0). */
static unsigned dx_search(const struct dx_frame *f, ext2_dirhash_t hash)
{
	unsigned lo = 1, hi = f->count;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (ext2fs_le32_to_cpu(f->entries[mid].hash) > hash)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo - 1;
}

/* Advances to the next leaf whose hash range may still hold `hash` (hash
 * collisions continue into the next leaf). Returns 1 moved, 0 no more. */
static int dx_next_leaf(struct dir_map *m, struct dx_frame *frames, int levels,
			ext2_dirhash_t hash)
{
	int l = levels - 1;
	while (l >= 0 && frames[l].at + 1 >= frames[l].count)
		l--;
	if (l < 0)
		return 0;
	frames[l].at++;
	if ((ext2fs_le32_to_cpu(frames[l].entries[frames[l].at].hash) & ~1u) != hash)
		return 0;
	for (int k = l + 1; k < levels; k++) {
		if (dx_descend(m, frames, k - 1))
			return -EIO;
		frames[k].at = 0;
	}
	return 1;
}

static int dx_find(struct dir_map *m, const char *name, struct dirent_loc *loc,
		   ext2_ino_t *ino, int *ftype)
{
	struct volume *v = m->v;
	ext2_ino_t dir = m->dir;
	struct ext2_inode_large *in = m->in;
	unsigned bs = v->blocksize;
	int len = (int)strlen(name);
	struct dx_frame frames[DX_MAX_LEVELS] = { { 0 } };
	char *leaf = NULL;
	if (!v->lookup_buf && !(v->lookup_buf = malloc((size_t)bs * (DX_MAX_LEVELS + 1))))
		return -ENOMEM;
	char *mem = v->lookup_buf;
	for (int i = 0; i < DX_MAX_LEVELS; i++)
		frames[i].buf = mem + (size_t)i * bs;
	leaf = mem + (size_t)DX_MAX_LEVELS * bs;

	blk64_t pblk;
	int rc = read_block(m, 0, &pblk, frames[0].buf);
	struct ext2_dx_root_info *root = (struct ext2_dx_root_info *)(frames[0].buf + DX_ROOT_INFO_OFF);
	int levels = 0;
	ext2_dirhash_t hash = 0;
	if (rc == 0 && (root->reserved_zero || root->info_length != 8 ||
			root->indirect_levels >= DX_MAX_LEVELS ||
			root->hash_version > EXT2_HASH_TEA))
		rc = dir_entry_corrupt(v, dir, "htree root: bad info (levels %u, hash %u)",
				       root->indirect_levels, root->hash_version);
	if (rc == 0)
		rc = dx_hash(v, root->hash_version, name, len, &hash);
	if (rc == 0) {
		levels = root->indirect_levels + 1;
		frames[0].lo = 0;
		frames[0].hi = 0xffffffffu;
		rc = dx_load_frame(v, dir, in, &frames[0], 0);
	}
	for (int l = 0; rc == 0 && l < levels; l++) {
		frames[l].at = dx_search(&frames[l], hash);
		if (l + 1 < levels)
			rc = dx_descend(m, frames, l);
	}
	int found = 0;
	for (unsigned hops = 0; rc == 0 && !found && hops < 65536; hops++) {
		uint32_t lblk = ext2fs_le32_to_cpu(frames[levels - 1].entries[frames[levels - 1].at].block) & 0x0fffffff;
		rc = read_block(m, lblk, &loc->pblk, leaf);
		if (rc == 0)
			rc = scan_block(v, leaf, name, len, &loc->off, &loc->prev_off, ino, ftype);
		if (rc < 0 && rc != -ENOMEM)
			dir_entry_corrupt(v, dir, "directory block %u: an entry's rec_len is impossible", lblk);
		if (rc == 1) {
			found = 1;
			rc = 0;
		} else if (rc == 0) {
			rc = dx_next_leaf(m, frames, levels, hash);
			if (rc == 0)
				break;
			if (rc == 1)
				rc = 0;
		}
	}
	if (rc)
		return rc;
	return found ? 0 : -ENOENT;
}

static int is_indexed(struct volume *v, const struct ext2_inode_large *in)
{
	return (in->i_flags & EXT2_INDEX_FL) && ext2fs_has_feature_dir_index(v->fs->super);
}

static int locate(struct volume *v, ext2_ino_t dir, const char *name, struct dirent_loc *loc,
		  ext2_ino_t *ino, int *ftype)
{
	struct ext2_inode_large in;
	int rc = inode_read(v, dir, &in);
	if (rc)
		return rc;
	if (!LINUX_S_ISDIR(in.i_mode))
		return -ENOTDIR;
	if (strlen(name) > EXT2_NAME_LEN)
		return -ENAMETOOLONG;
	struct dir_map m = { .v = v, .dir = dir, .in = &in };
	rc = -EIO;                     /* no index: the linear scan */
	if (is_indexed(v, &in)) {
		rc = dx_find(&m, name, loc, ino, ftype);
		if (rc == -EIO)
			csvfs_log(LOG_WARN_L, "directory %u: hash tree unusable; scanning linearly", dir);
	}
	if (rc == -EIO)
		rc = linear_find(&m, name, loc, ino, ftype);
	dir_map_done(&m);
	return rc;
}

int dir_find(struct volume *v, ext2_ino_t dir, const char *name, ext2_ino_t *ino, int *ftype)
{
	struct dirent_loc loc;
	int rc = locate(v, dir, name, &loc, ino, ftype);
	return rc ? rc : dir_entry_check(v, dir, name, *ino);
}

static int rewrite_entry(struct volume *v, ext2_ino_t dir, const char *name,
			 int (*edit)(struct volume *, char *, const struct dirent_loc *, void *),
			 void *arg)
{
	struct dirent_loc loc;
	ext2_ino_t ino;
	int ftype;
	int rc = locate(v, dir, name, &loc, &ino, &ftype);
	if (rc)
		return rc;
	char *buf = malloc(v->blocksize);
	if (!buf)
		return -ENOMEM;
	errcode_t e = ext2fs_read_dir_block4(v->fs, loc.pblk, buf, 0, dir);
	if (!e) {
		rc = edit(v, buf, &loc, arg);
		if (rc == 0)
			e = ext2fs_write_dir_block4(v->fs, loc.pblk, buf, 0, dir);
	}
	free(buf);
	return e ? -errcode_to_errno(e) : rc;
}

static int edit_remove(struct volume *v, char *buf, const struct dirent_loc *loc, void *arg)
{
	(void)arg;
	struct ext2_dir_entry *de = (struct ext2_dir_entry *)(buf + loc->off);
	if (loc->prev_off < 0) {
		de->inode = 0;
		return 0;
	}
	struct ext2_dir_entry *prev = (struct ext2_dir_entry *)(buf + loc->prev_off);
	unsigned prev_len, cur_len;
	if (ext2fs_get_rec_len(v->fs, prev, &prev_len) || ext2fs_get_rec_len(v->fs, de, &cur_len))
		return -EIO;
	return ext2fs_set_rec_len(v->fs, prev_len + cur_len, prev) ? -EIO : 0;
}

int dir_remove(struct volume *v, ext2_ino_t dir, const char *name)
{
	return rewrite_entry(v, dir, name, edit_remove, NULL);
}

struct set_entry_arg { ext2_ino_t ino; int ftype; };

static int edit_set(struct volume *v, char *buf, const struct dirent_loc *loc, void *arg)
{
	(void)v;
	const struct set_entry_arg *a = arg;
	struct ext2_dir_entry *de = (struct ext2_dir_entry *)(buf + loc->off);
	de->inode = a->ino;
	if (ext2fs_has_feature_filetype(v->fs->super))
		ext2fs_dirent_set_file_type(de, a->ftype);
	return 0;
}

int dir_set_entry(struct volume *v, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ftype)
{
	struct set_entry_arg a = { ino, ftype };
	return rewrite_entry(v, dir, name, edit_set, &a);
}

/* ---- conversion to an htree ------------------------------------------- */

struct dx_item {
	ext2_dirhash_t hash;
	ext2_ino_t ino;
	int ftype, len;
	char name[EXT2_NAME_LEN];
};

static int item_cmp(const void *a, const void *b)
{
	const struct dx_item *x = a, *y = b;
	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	return 0;
}

struct collect_ctx {
	struct volume *v;
	struct dx_item *items;
	size_t n, cap;
	ext2_ino_t parent;
	int err;
};

static int collect_cb(ext2_ino_t dir, int entry, struct ext2_dir_entry *de, int offset,
		      int blocksize, char *buf, void *priv)
{
	(void)dir; (void)offset; (void)blocksize; (void)buf;
	struct collect_ctx *c = priv;
	int len = ext2fs_dirent_name_len(de);
	if (entry == DIRENT_DOT_FILE)
		return 0;
	if (entry == DIRENT_DOT_DOT_FILE) {
		c->parent = de->inode;
		return 0;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		struct dx_item *p = realloc(c->items, cap * sizeof(*p));
		if (!p) {
			c->err = -ENOMEM;
			return DIRENT_ABORT;
		}
		c->items = p;
		c->cap = cap;
	}
	struct dx_item *it = &c->items[c->n++];
	it->ino = de->inode;
	it->ftype = ext2fs_dirent_file_type(de);
	it->len = len;
	memcpy(it->name, de->name, (size_t)len);
	return 0;
}

/* Packs items[from, to) into a leaf block with a checksum tail. */
static int build_leaf(struct volume *v, char *buf, const struct dx_item *items, size_t from, size_t to)
{
	unsigned bs = v->blocksize;
	unsigned tail = ext2fs_has_feature_metadata_csum(v->fs->super) ? sizeof(struct ext2_dir_entry_tail) : 0;
	unsigned off = 0;
	struct ext2_dir_entry *last = NULL;
	memset(buf, 0, bs);
	for (size_t i = from; i < to; i++) {
		struct ext2_dir_entry *de = (struct ext2_dir_entry *)(buf + off);
		unsigned rec = EXT2_DIR_REC_LEN(items[i].len);
		de->inode = items[i].ino;
		ext2fs_dirent_set_name_len(de, items[i].len);
		ext2fs_dirent_set_file_type(de, items[i].ftype);
		memcpy(de->name, items[i].name, (size_t)items[i].len);
		if (ext2fs_set_rec_len(v->fs, rec, de))
			return -EIO;
		last = de;
		off += rec;
	}
	if (!last) {
		last = (struct ext2_dir_entry *)buf;
		off = 0;
	} else {
		off -= last->rec_len;
	}
	if (ext2fs_set_rec_len(v->fs, bs - tail - off, last))
		return -EIO;
	if (tail)
		ext2fs_initialize_dirent_tail(v->fs, EXT2_DIRENT_TAIL(buf, bs));
	return 0;
}

static void build_root(struct volume *v, char *buf, ext2_ino_t dir, ext2_ino_t parent,
		       const ext2_dirhash_t *starts, unsigned nleaves)
{
	unsigned bs = v->blocksize;
	unsigned tail = ext2fs_has_feature_metadata_csum(v->fs->super) ? sizeof(struct ext2_dx_tail) : 0;
	memset(buf, 0, bs);
	struct ext2_dir_entry *dot = (struct ext2_dir_entry *)buf;
	dot->inode = dir;
	ext2fs_dirent_set_name_len(dot, 1);
	ext2fs_dirent_set_file_type(dot, EXT2_FT_DIR);
	dot->name[0] = '.';
	ext2fs_set_rec_len(v->fs, 12, dot);
	struct ext2_dir_entry *dotdot = (struct ext2_dir_entry *)(buf + 12);
	dotdot->inode = parent;
	ext2fs_dirent_set_name_len(dotdot, 2);
	ext2fs_dirent_set_file_type(dotdot, EXT2_FT_DIR);
	dotdot->name[0] = dotdot->name[1] = '.';
	ext2fs_set_rec_len(v->fs, bs - 12, dotdot);
	struct ext2_dx_root_info *info = (struct ext2_dx_root_info *)(buf + DX_ROOT_INFO_OFF);
	info->hash_version = v->fs->super->s_def_hash_version;
	info->info_length = 8;
	struct ext2_dx_entry *ent = (struct ext2_dx_entry *)(buf + DX_ROOT_INFO_OFF + 8);
	struct ext2_dx_countlimit *cl = (struct ext2_dx_countlimit *)ent;
	cl->limit = ext2fs_cpu_to_le16((uint16_t)((bs - (DX_ROOT_INFO_OFF + 8) - tail) / sizeof(*ent)));
	cl->count = ext2fs_cpu_to_le16((uint16_t)nleaves);
	for (unsigned i = 0; i < nleaves; i++) {
		if (i > 0)
			ent[i].hash = ext2fs_cpu_to_le32(starts[i]);
		ent[i].block = ext2fs_cpu_to_le32(i + 1);
	}
}

/* Splits sorted items into leaves about half full, never splitting a run of
 * equal hashes. Returns the number of leaves; starts[i] = first index. */
static unsigned plan_leaves(struct volume *v, const struct dx_item *items, size_t n,
			    size_t *starts, unsigned max_leaves)
{
	unsigned target = v->blocksize / 2, nleaves = 1;
	unsigned used = 0;
	starts[0] = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned rec = EXT2_DIR_REC_LEN(items[i].len);
		if (used + rec > target && i > starts[nleaves - 1] && items[i].hash != items[i - 1].hash &&
		    nleaves < max_leaves) {
			starts[nleaves++] = i;
			used = 0;
		}
		used += rec;
	}
	return nleaves;
}

static int write_indexed(struct volume *v, ext2_ino_t dir, struct ext2_inode_large *in,
			 struct collect_ctx *c)
{
	unsigned bs = v->blocksize;
	size_t starts[8];
	unsigned nleaves = plan_leaves(v, c->items, c->n, starts, 8);
	ext2_dirhash_t start_hash[8];
	for (unsigned i = 0; i < nleaves; i++)
		start_hash[i] = starts[i] < c->n ? c->items[starts[i]].hash : 0;
	/* Allocate the leaf blocks (block 0 becomes the root). */
	uint64_t have = EXT2_I_SIZE(in) / bs;
	if (have < 1 + nleaves) {
		errcode_t e = ext2fs_fallocate(v->fs, EXT2_FALLOCATE_FORCE_INIT, dir,
					       (struct ext2_inode *)in, ~0ULL, have, 1 + nleaves - have);
		if (e)
			return -errcode_to_errno(e);
	}
	char *buf = malloc(bs);
	if (!buf)
		return -ENOMEM;
	int rc = 0;
	for (unsigned i = 0; i < nleaves && rc == 0; i++) {
		size_t end = i + 1 < nleaves ? starts[i + 1] : c->n;
		blk64_t pblk;
		rc = build_leaf(v, buf, c->items, starts[i], end);
		if (rc == 0 && (ext2fs_bmap2(v->fs, dir, (struct ext2_inode *)in, NULL, 0, i + 1, NULL, &pblk) ||
				blocks_invalid(v, pblk, 1)))
			rc = -EIO;
		if (rc == 0 && ext2fs_write_dir_block4(v->fs, pblk, buf, 0, dir))
			rc = -EIO;
	}
	blk64_t root_pblk;
	if (rc == 0 && (ext2fs_bmap2(v->fs, dir, (struct ext2_inode *)in, NULL, 0, 0, NULL, &root_pblk) ||
			blocks_invalid(v, root_pblk, 1)))
		rc = -EIO;
	if (rc == 0) {
		build_root(v, buf, dir, c->parent, start_hash, nleaves);
		if (ext2fs_write_dir_block4(v->fs, root_pblk, buf, 0, dir))
			rc = -EIO;
	}
	free(buf);
	if (rc)
		return rc;
	in->i_flags |= EXT2_INDEX_FL;
	ext2fs_inode_size_set(v->fs, (struct ext2_inode *)in, (uint64_t)(1 + nleaves) * bs);
	volume_mark_dirty(v);
	return inode_write(v, dir, in);
}

/* Converts a one-block linear directory into an htree (root + leaves). */
int dir_make_indexed(struct volume *v, ext2_ino_t dir)
{
	struct ext2_inode_large in;
	int rc = inode_read(v, dir, &in);
	if (rc)
		return rc;
	if (is_indexed(v, &in) || EXT2_I_SIZE(&in) != v->blocksize ||
	    !ext2fs_has_feature_dir_index(v->fs->super))
		return -EINVAL;
	struct collect_ctx c = { .v = v };
	errcode_t e = ext2fs_dir_iterate2(v->fs, dir, 0, NULL, collect_cb, &c);
	if (!e && !c.err) {
		for (size_t i = 0; i < c.n && rc == 0; i++)
			rc = dx_hash(v, v->fs->super->s_def_hash_version, c.items[i].name, c.items[i].len,
				     &c.items[i].hash);
		qsort(c.items, c.n, sizeof(*c.items), item_cmp);
		if (rc == 0)
			rc = write_indexed(v, dir, &in, &c);
	}
	free(c.items);
	if (e)
		return -errcode_to_errno(e);
	return c.err ? c.err : rc;
}

int dir_add(struct volume *v, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ftype)
{
	if (strlen(name) > EXT2_NAME_LEN)
		return -ENAMETOOLONG;
	errcode_t e = ext2fs_link(v->fs, dir, name, ino, ftype);
	if (e == EXT2_ET_DIR_NO_SPACE) {
		struct ext2_inode_large in;
		int rc = inode_read(v, dir, &in);
		if (rc)
			return rc;
		if (is_indexed(v, &in))
			return -ENOSPC;  /* the htree is at its depth limit */
		if (ext2fs_has_feature_dir_index(v->fs->super) && EXT2_I_SIZE(&in) == v->blocksize)
			rc = dir_make_indexed(v, dir);
		else
			rc = ext2fs_expand_dir(v->fs, dir) ? -ENOSPC : 0;
		if (rc)
			return rc;
		e = ext2fs_link(v->fs, dir, name, ino, ftype);
	}
	if (e)
		return -errcode_to_errno(e);
	volume_mark_dirty(v);
	return 0;
}

struct empty_ctx { int empty; };

static int empty_cb(ext2_ino_t dir, int entry, struct ext2_dir_entry *de, int offset,
		    int blocksize, char *buf, void *priv)
{
	(void)dir; (void)de; (void)offset; (void)blocksize; (void)buf;
	struct empty_ctx *c = priv;
	if (entry == DIRENT_DOT_FILE || entry == DIRENT_DOT_DOT_FILE)
		return 0;
	c->empty = 0;
	return DIRENT_ABORT;
}

int dir_is_empty(struct volume *v, ext2_ino_t dir, int *empty)
{
	struct empty_ctx c = { 1 };
	errcode_t e = ext2fs_dir_iterate2(v->fs, dir, 0, NULL, empty_cb, &c);
	*empty = c.empty;
	return e ? -errcode_to_errno(e) : 0;
}

/* ---- readdir ------------------------------------------------------------ */

struct list_ctx {
	struct volume *v;
	ext2_ino_t dir;
	struct meta_dirent *d;
	size_t n, cap;
	int err;
};

static unsigned ftype_to_dt(int ft)
{
	static const unsigned map[] = {
		[EXT2_FT_UNKNOWN] = DT_UNKNOWN, [EXT2_FT_REG_FILE] = DT_REG, [EXT2_FT_DIR] = DT_DIR,
		[EXT2_FT_CHRDEV] = DT_CHR, [EXT2_FT_BLKDEV] = DT_BLK, [EXT2_FT_FIFO] = DT_FIFO,
		[EXT2_FT_SOCK] = DT_SOCK, [EXT2_FT_SYMLINK] = DT_LNK,
	};
	return ft >= 0 && ft < (int)(sizeof(map) / sizeof(map[0])) ? map[ft] : DT_UNKNOWN;
}

static int list_cb(ext2_ino_t dir, int entry, struct ext2_dir_entry *de, int offset,
		   int blocksize, char *buf, void *priv)
{
	(void)dir; (void)entry; (void)offset; (void)blocksize; (void)buf;
	struct list_ctx *c = priv;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		struct meta_dirent *p = realloc(c->d, cap * sizeof(*p));
		if (!p) {
			c->err = -ENOMEM;
			return DIRENT_ABORT;
		}
		c->d = p;
		c->cap = cap;
	}
	int len = ext2fs_dirent_name_len(de);
	/* a name no lookup can reach (NUL or '/' inside, or empty) is not listed */
	if (len == 0 || memchr(de->name, 0, (size_t)len) || memchr(de->name, '/', (size_t)len)) {
		dir_entry_corrupt(c->v, c->dir, "entry of inode %u has a name with NUL or '/' in it "
				  "(name_len %d)", de->inode, len);
		return 0;
	}
	char *name = strndup(de->name, (size_t)len);
	if (!name) {
		c->err = -ENOMEM;
		return DIRENT_ABORT;
	}
	c->d[c->n].name = name;
	c->d[c->n].ino = de->inode;
	c->d[c->n].type = ftype_to_dt(ext2fs_dirent_file_type(de));
	c->d[c->n].has_attr = 0;
	c->n++;
	return 0;
}

int meta_readdir(struct volume *v, ext2_ino_t ino, struct meta_dirent **out, size_t *n)
{
	struct list_ctx c = { .v = v, .dir = ino };
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	int rc = inode_read(v, ino, &in);
	if (rc == 0 && !LINUX_S_ISDIR(in.i_mode))
		rc = -ENOTDIR;
	if (rc == 0) {
		errcode_t e = ext2fs_dir_iterate2(v->fs, ino, 0, NULL, list_cb, &c);
		if (e == EXT2_ET_DIR_CSUM_INVALID || e == EXT2_ET_DIR_CORRUPTED) {
			rc = dir_entry_corrupt(v, ino, "listing failed: %s", error_message(e));
		} else if (e) {
			csvfs_log(LOG_ERR_L, "directory %u: listing failed: %s", ino, error_message(e));
			rc = -errcode_to_errno(e);
		} else {
			rc = c.err;
		}
	}
	pthread_mutex_unlock(&v->lock);
	if (rc) {
		meta_free_dirents(c.d, c.n);
		return rc;
	}
	*out = c.d;
	*n = c.n;
	return 0;
}

void meta_free_dirents(struct meta_dirent *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(d[i].name);
	free(d);
}
