/* Extents: the map from file blocks to LUN blocks (layouts), allocation of
 * unwritten extents, conversion unwritten <-> written, punch, fallocate, seek.
 *
 * Invariant 2 (design.md §11): blocks are allocated unwritten and become
 * written only after their data is on the LUN, so a reader never sees another
 * file's stale bytes. */
#include "fs/meta_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LBLK (1ull << 32)                  /* ext4 logical block limit */
#define PREALLOC_BLOCKS 2048u                  /* 8 MiB ahead for growing files */
#define INIT_MAX_LEN 32768u
#define UNINIT_MAX_LEN 32767u

static enum extent_state state_of(const struct ext2fs_extent *ex)
{
	return (ex->e_flags & EXT2_EXTENT_FLAGS_UNINIT) ? EXTENT_UNWRITTEN : EXTENT_WRITTEN;
}

/* The first extent starting after lblk, or MAX_LBLK. The handle is left where
 * a failed goto put it: at the extent before lblk, or the first one. */
static uint64_t next_extent_start(ext2_extent_handle_t h, uint64_t lblk)
{
	struct ext2fs_extent ex;
	if (ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex))
		return MAX_LBLK;
	if (ex.e_lblk > lblk)
		return ex.e_lblk;
	for (unsigned i = 0; i < 1000000; i++) {
		if (ext2fs_extent_get(h, EXT2_EXTENT_NEXT_LEAF, &ex))
			return MAX_LBLK;
		if (ex.e_lblk > lblk)
			return ex.e_lblk;
	}
	return MAX_LBLK;
}

static int map_blockmapped(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			   uint64_t lblk, struct meta_extent *out)
{
	blk64_t pblk = 0;
	errcode_t e = ext2fs_bmap2(v->fs, ino, (struct ext2_inode *)in, NULL, 0, lblk, NULL, &pblk);
	if (e)
		return -errcode_to_errno(e);
	*out = (struct meta_extent){ lblk, 1, pblk, pblk ? EXTENT_WRITTEN : EXTENT_HOLE };
	return pblk ? extent_check(v, ino, lblk, pblk, 1) : 0;
}

int extent_map(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in, uint64_t lblk,
	       struct meta_extent *out)
{
	if (lblk >= MAX_LBLK)
		return -EFBIG;
	if (!(in->i_flags & EXT4_EXTENTS_FL))
		return map_blockmapped(v, ino, in, lblk, out);
	ext2_extent_handle_t h;
	errcode_t e = ext2fs_extent_open2(v->fs, ino, (struct ext2_inode *)in, &h);
	if (e)
		return -errcode_to_errno(e);
	struct ext2fs_extent ex;
	e = ext2fs_extent_goto2(h, 0, lblk);
	if (!e)
		e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex);
	int rc = 0;
	if (!e && ex.e_lblk <= lblk && lblk < ex.e_lblk + ex.e_len) {
		*out = (struct meta_extent){ ex.e_lblk, ex.e_len, ex.e_pblk, state_of(&ex) };
		rc = extent_check(v, ino, ex.e_lblk, ex.e_pblk, ex.e_len);
	} else if (!e || e == EXT2_ET_EXTENT_NOT_FOUND) {
		uint64_t next = next_extent_start(h, lblk);
		*out = (struct meta_extent){ lblk, next - lblk, 0, EXTENT_HOLE };
	} else {
		rc = inode_corrupt(v, ino, "extent tree unreadable at file block %llu: %s",
				   (unsigned long long)lblk, error_message(e));
	}
	ext2fs_extent_free(h);
	return rc;
}

static errcode_t merge_with_prev(ext2_extent_handle_t h, struct ext2fs_extent cur);

/* Allocates [lblk, lblk+len) of a hole as unwritten extents, each inserted
 * after the extent before it (before the first one if none is), the first
 * merged into the extent before it when they are contiguous. For the holes
 * ext2fs_fallocate (1.47.0) gets wrong: see extent_alloc_unwritten. */
static errcode_t alloc_in_hole(struct volume *v, ext2_extent_handle_t h,
			       struct ext2_inode_large *in, uint64_t lblk, uint64_t len,
			       blk64_t goal)
{
	ext2_filsys fs = v->fs;
	while (len > 0) {
		blk64_t pblk, plen;
		errcode_t e = ext2fs_new_range(fs, 0, goal, len < UNINIT_MAX_LEN ? len : UNINIT_MAX_LEN,
					       NULL, &pblk, &plen);
		if (e)
			return e;
		ext2fs_block_alloc_stats_range(fs, pblk, (blk_t)plen, +1);
		struct ext2fs_extent ex = { .e_lblk = lblk, .e_pblk = pblk, .e_len = (uint32_t)plen,
					    .e_flags = EXT2_EXTENT_FLAGS_UNINIT };
		struct ext2fs_extent cur;
		ext2fs_extent_goto(h, lblk);
		e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &cur);
		if (!e)
			e = ext2fs_extent_insert(h, cur.e_lblk > lblk ? 0 : EXT2_EXTENT_INSERT_AFTER, &ex);
		if (!e)
			e = ext2fs_extent_fix_parents(h);
		if (e) {
			ext2fs_block_alloc_stats_range(fs, pblk, (blk_t)plen, -1);
			return e;
		}
		ext2fs_iblk_add_blocks(fs, (struct ext2_inode *)in, plen);
		if (ext2fs_extent_goto(h, lblk) == 0 && (e = merge_with_prev(h, ex)) != 0)
			return e;
		lblk += plen;
		len -= plen;
		goal = pblk + plen;
	}
	return 0;
}

/* Whether [lblk, lblk+len) (inside a hole) is one ext2fs_fallocate 1.47.0
 * must not be given, and if so the goal to allocate it at ourselves:
 *
 * - a hole before the file's first extent: it fills the hole up to the next
 *   extent whatever `len` says;
 * - exactly a whole hole between two unwritten extents whose lengths add up
 *   to one extent's: it first tries to merge all three by allocating, at the
 *   left extent's end, right.pblk - (left.pblk + left.len) + 1 blocks. When
 *   the right extent lies before the left one on the LUN that count wraps
 *   below zero, ext2fs_new_range's bitmap search runs from a start past its
 *   end, and libext2fs prints "Illegal block number passed to
 *   ext2fs_test_block_bitmap #<left end> for block bitmap for ..." before
 *   giving the merge up (later e2fsprogs check that the three are contiguous
 *   first). Nothing is harmed, but a warning in the log says something is
 *   wrong when nothing is. */
static int alloc_needs_us(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			  uint64_t lblk, uint64_t len, ext2_extent_handle_t *h, blk64_t *goal,
			  uint64_t *room)
{
	struct ext2fs_extent left, right;
	if (!(in->i_flags & EXT4_EXTENTS_FL) ||
	    ext2fs_extent_open2(v->fs, ino, (struct ext2_inode *)in, h))
		return 0;
	ext2fs_extent_goto(*h, lblk);
	if (ext2fs_extent_get(*h, EXT2_EXTENT_CURRENT, &left) == 0 && left.e_lblk > lblk) {
		*room = left.e_lblk - lblk;       /* "left" is the first extent */
		*goal = left.e_pblk > *room ? left.e_pblk - *room : 0;
		return 1;
	}
	int wraps = 0;
	if (ext2fs_extent_get(*h, EXT2_EXTENT_CURRENT, &left) == 0 &&
	    left.e_lblk + left.e_len == lblk && (left.e_flags & EXT2_EXTENT_FLAGS_UNINIT) &&
	    ext2fs_extent_get(*h, EXT2_EXTENT_NEXT_LEAF, &right) == 0 && right.e_lblk == lblk + len &&
	    (right.e_flags & EXT2_EXTENT_FLAGS_UNINIT) &&
	    left.e_len + len + right.e_len <= UNINIT_MAX_LEN &&
	    right.e_pblk < left.e_pblk + left.e_len) {
		*room = len;
		*goal = left.e_pblk + left.e_len;
		wraps = 1;
	}
	if (!wraps)
		ext2fs_extent_free(*h);
	return wraps;
}

int extent_alloc_unwritten(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			   uint64_t lblk, uint64_t len)
{
	uint64_t size = EXT2_I_SIZE(in), room = 0;
	ext2_extent_handle_t h;
	blk64_t goal = 0;
	errcode_t e;
	if (alloc_needs_us(v, ino, in, lblk, len, &h, &goal, &room)) {
		e = alloc_in_hole(v, h, in, lblk, len < room ? len : room, goal);
		ext2fs_extent_free(h);
	} else {
		e = ext2fs_fallocate(v->fs, EXT2_FALLOCATE_FORCE_UNINIT, ino,
				     (struct ext2_inode *)in, ~0ULL, lblk, len);
	}
	/* fallocate may move i_size; the caller decides the size. */
	ext2fs_inode_size_set(v->fs, (struct ext2_inode *)in, size);
	volume_mark_dirty(v);
	if (e == EXT2_ET_BLOCK_ALLOC_FAIL)
		return -ENOSPC;
	return e ? -errcode_to_errno(e) : 0;
}

/* Merges the current extent into the one before it when they are adjacent
 * in both file and LUN and have the same state. */
static errcode_t merge_with_prev(ext2_extent_handle_t h, struct ext2fs_extent cur)
{
	struct ext2fs_extent prev;
	unsigned max = (cur.e_flags & EXT2_EXTENT_FLAGS_UNINIT) ? UNINIT_MAX_LEN : INIT_MAX_LEN;
	if (ext2fs_extent_get(h, EXT2_EXTENT_PREV_LEAF, &prev))
		return ext2fs_extent_goto2(h, 0, cur.e_lblk);
	int mergeable = prev.e_lblk + prev.e_len == cur.e_lblk &&
			prev.e_pblk + prev.e_len == cur.e_pblk &&
			(prev.e_flags & EXT2_EXTENT_FLAGS_UNINIT) == (cur.e_flags & EXT2_EXTENT_FLAGS_UNINIT) &&
			prev.e_len + cur.e_len <= max;
	if (!mergeable)
		return ext2fs_extent_goto2(h, 0, cur.e_lblk);
	prev.e_len += cur.e_len;
	errcode_t e = ext2fs_extent_replace(h, 0, &prev);
	if (!e)
		e = ext2fs_extent_fix_parents(h);
	if (!e)
		e = ext2fs_extent_goto2(h, 0, cur.e_lblk);
	/* goto lands on prev now, which covers cur's range; step to cur itself */
	struct ext2fs_extent at;
	if (!e)
		e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &at);
	if (!e && at.e_lblk != cur.e_lblk)
		e = ext2fs_extent_get(h, EXT2_EXTENT_NEXT_LEAF, &at);
	if (!e && at.e_lblk == cur.e_lblk && at.e_len == cur.e_len)
		e = ext2fs_extent_delete(h, 0);
	if (!e)
		e = ext2fs_extent_fix_parents(h);
	return e;
}

/* Sets [a, b) of the current extent ex to the state `uninit`, splitting ex
 * into up to three extents. */
static errcode_t split_set_state(ext2_extent_handle_t h, struct ext2fs_extent ex,
				 uint64_t a, uint64_t b, int uninit)
{
	uint64_t ex_end = ex.e_lblk + ex.e_len;
	int flag_new = uninit ? EXT2_EXTENT_FLAGS_UNINIT : 0;
	int flag_old = ex.e_flags & EXT2_EXTENT_FLAGS_UNINIT;
	struct ext2fs_extent mid = { .e_lblk = a, .e_pblk = ex.e_pblk + (a - ex.e_lblk),
				     .e_len = (uint32_t)(b - a), .e_flags = flag_new };
	struct ext2fs_extent tail = { .e_lblk = b, .e_pblk = ex.e_pblk + (b - ex.e_lblk),
				      .e_len = (uint32_t)(ex_end - b), .e_flags = flag_old };
	errcode_t e;
	if (a == ex.e_lblk && b == ex_end) {
		e = ext2fs_extent_replace(h, 0, &mid);
		if (!e)
			e = ext2fs_extent_fix_parents(h);
		return e ? e : merge_with_prev(h, mid);
	}
	if (a == ex.e_lblk) {
		e = ext2fs_extent_replace(h, 0, &mid);
		if (!e)
			e = ext2fs_extent_insert(h, EXT2_EXTENT_INSERT_AFTER, &tail);
		if (!e)
			e = ext2fs_extent_fix_parents(h);
		if (!e)
			e = ext2fs_extent_goto2(h, 0, mid.e_lblk);
		return e ? e : merge_with_prev(h, mid);
	}
	struct ext2fs_extent head = ex;
	head.e_len = (uint32_t)(a - ex.e_lblk);
	e = ext2fs_extent_replace(h, 0, &head);
	if (!e)
		e = ext2fs_extent_insert(h, EXT2_EXTENT_INSERT_AFTER, &mid);
	if (!e && b < ex_end)
		e = ext2fs_extent_insert(h, EXT2_EXTENT_INSERT_AFTER, &tail);
	if (!e)
		e = ext2fs_extent_fix_parents(h);
	return e;
}

static int set_state_range(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			   uint64_t lblk, uint64_t len, int uninit)
{
	ext2_extent_handle_t h;
	errcode_t e = ext2fs_extent_open2(v->fs, ino, (struct ext2_inode *)in, &h);
	if (e)
		return -errcode_to_errno(e);
	uint64_t pos = lblk, end = lblk + len;
	for (unsigned guard = 0; pos < end && !e && guard < 1000000; guard++) {
		struct ext2fs_extent ex;
		e = ext2fs_extent_goto2(h, 0, pos);
		if (e == EXT2_ET_EXTENT_NOT_FOUND) {      /* a hole: nothing to convert */
			pos = next_extent_start(h, pos);
			e = 0;
			continue;
		}
		if (!e)
			e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex);
		if (e)
			break;
		uint64_t b = ex.e_lblk + ex.e_len < end ? ex.e_lblk + ex.e_len : end;
		int is_uninit = (ex.e_flags & EXT2_EXTENT_FLAGS_UNINIT) != 0;
		if (is_uninit != uninit)
			e = split_set_state(h, ex, pos, b, uninit);
		pos = b;
	}
	ext2fs_extent_free(h);
	volume_mark_dirty(v);
	if (e) {
		csvfs_log(LOG_ERR_L, "inode %u: converting blocks %llu+%llu failed: %s", ino,
			  (unsigned long long)lblk, (unsigned long long)len, error_message(e));
		return e == EXT2_ET_BLOCK_ALLOC_FAIL ? -ENOSPC : -EIO;
	}
	/* The extent handle updated i_block and i_blocks in *in itself. */
	return 0;
}

int extent_mark_written(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			uint64_t lblk, uint64_t len)
{
	return set_state_range(v, ino, in, lblk, len, 0);
}

int extent_mark_unwritten(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			  uint64_t lblk, uint64_t len)
{
	return set_state_range(v, ino, in, lblk, len, 1);
}

int extent_punch(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
		 uint64_t lblk, uint64_t end)
{
	if (end != ~0ull && end <= lblk)
		return 0;
	errcode_t e = ext2fs_punch(v->fs, ino, (struct ext2_inode *)in, NULL, lblk,
				   end == ~0ull ? ~0ULL : end - 1);
	volume_mark_dirty(v);
	if (e) {
		csvfs_log(LOG_ERR_L, "inode %u: freeing blocks from %llu failed: %s", ino,
			  (unsigned long long)lblk, error_message(e));
		return -errcode_to_errno(e);
	}
	return 0;
}

int extent_punch_unwritten(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			   uint64_t lblk, uint64_t end)
{
	uint64_t pos = lblk;
	for (unsigned guard = 0; pos < end && guard < 100000; guard++) {
		struct meta_extent e;
		int rc = extent_map(v, ino, in, pos, &e);
		if (rc)
			return rc;
		uint64_t stop = e.lblk + e.len < end ? e.lblk + e.len : end;
		if (e.state == EXTENT_UNWRITTEN && (rc = extent_punch(v, ino, in, pos, stop)) != 0)
			return rc;
		pos = stop;
	}
	return 0;
}

/* ---- the data path's view ---------------------------------------------- */

/* Index of the first cached extent ending after lblk (caller holds map_lock). */
static unsigned map_search(const struct minode *m, uint64_t lblk)
{
	unsigned lo = 0, hi = m->nmap;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (m->map[mid].lblk + m->map[mid].len <= lblk)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int minode_map_lookup(struct minode *m, uint64_t lblk, struct meta_extent *out)
{
	pthread_mutex_lock(&m->map_lock);
	unsigned i = map_search(m, lblk);
	int hit = i < m->nmap && m->map[i].lblk <= lblk;
	if (hit)
		*out = m->map[i];
	pthread_mutex_unlock(&m->map_lock);
	return hit;
}

void minode_map_store(struct minode *m, const struct meta_extent *e)
{
	if (e->len == 0)
		return;
	pthread_mutex_lock(&m->map_lock);
	/* Whatever the new extent overlaps is older news. */
	unsigned i = map_search(m, e->lblk), j = i;
	while (j < m->nmap && m->map[j].lblk < e->lblk + e->len)
		j++;
	if (j == i && m->nmap == m->map_cap) {
		if (m->map_cap == MINODE_MAP_CACHE) {
			m->nmap = 0;           /* full: start over rather than search for a victim */
			i = j = 0;
		} else {
			unsigned cap = m->map_cap ? 2 * m->map_cap : 16;
			struct meta_extent *p = realloc(m->map, cap * sizeof(*p));
			if (!p) {
				pthread_mutex_unlock(&m->map_lock);
				return;
			}
			m->map = p;
			m->map_cap = cap;
		}
	}
	if (j == i)
		memmove(&m->map[i + 1], &m->map[i], (m->nmap - i) * sizeof(*m->map));
	else if (j > i + 1)
		memmove(&m->map[i + 1], &m->map[j], (m->nmap - j) * sizeof(*m->map));
	m->map[i] = *e;
	m->nmap = m->nmap + 1 - (j - i);
	pthread_mutex_unlock(&m->map_lock);
}

int meta_map(struct volume *v, struct minode *m, uint64_t lblk, struct meta_extent *out)
{
	if (minode_map_lookup(m, lblk, out))
		return 0;
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	int rc = inode_read(v, m->ino, &in);
	/* Once per minode, before the first mapping is handed out: every
	 * extent and tree block in place and in order (the kernel checks each
	 * leaf as it reads it). The engine's own changes keep it so. */
	if (rc == 0 && !m->tree_checked && (rc = extent_tree_check(v, m->ino, &in)) == 0)
		m->tree_checked = 1;
	if (rc == 0)
		rc = extent_map(v, m->ino, &in, lblk, out);
	pthread_mutex_unlock(&v->lock);
	if (rc == 0)
		minode_map_store(m, out);
	return rc;
}

/* Drops metadata-cache copies of blocks that now hold file data. */
static void forget_allocated(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			     uint64_t lblk, uint64_t len)
{
	uint64_t pos = lblk;
	for (unsigned guard = 0; pos < lblk + len && guard < 100000; guard++) {
		struct meta_extent e;
		if (extent_map(v, ino, in, pos, &e) || e.len == 0)
			return;
		if (e.state != EXTENT_HOLE)
			journal_forget(v->journal, e.pblk * (v->blocksize / 4096), e.len * (v->blocksize / 4096));
		pos = e.lblk + e.len;
	}
}

/* Clamps a wish for `want` blocks to what can be had without running libext2fs
 * into ENOSPC half-way through an allocation (it does not undo partial work):
 * commits first if deferred frees would make room. -ENOSPC if not even `need`. */
static int fit_allocation(struct volume *v, uint64_t need, uint64_t *want)
{
	uint64_t avail = volume_blocks_available(v);
	if (avail < *want && v->nfreed && deferfree_reclaim(v))
		avail = volume_blocks_available(v);
	if (avail < need)
		return -ENOSPC;
	if (*want > avail)
		*want = avail;
	return 0;
}

int meta_alloc(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len)
{
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	int rc = volume_refuses_changes(v) ? -EROFS : inode_read(v, m->ino, &in);
	struct meta_extent hole;
	if (rc == 0)
		rc = extent_map(v, m->ino, &in, lblk, &hole);
	if (rc == 0 && hole.state == EXTENT_HOLE)
		rc = inode_lock_writes(v, m->ino, 0, 0, 0);
	if (rc == 0 && hole.state == EXTENT_HOLE) {
		uint64_t eof_blk = (atomic_load(&m->size) + v->blocksize - 1) / v->blocksize;
		uint64_t want = len;
		/* A file growing by appends (an append at EOF of a file that already
		 * holds 1 MiB — not a sparse file written far out): allocate ahead,
		 * trimmed at last close unless written. */
		uint64_t held = ext2fs_get_stat_i_blocks(v->fs, (struct ext2_inode *)&in) * 512;
		if (lblk == eof_blk && held >= (1u << 20) && want < PREALLOC_BLOCKS)
			want = PREALLOC_BLOCKS;
		if (want > hole.lblk + hole.len - lblk)
			want = hole.lblk + hole.len - lblk;
		rc = fit_allocation(v, len, &want);
		if (rc == 0)
			rc = extent_alloc_unwritten(v, m->ino, &in, lblk, want);
		if (rc == 0 && want > len) {
			uint64_t s = lblk + len, e = lblk + want;
			m->spec_start = m->spec_end > m->spec_start && m->spec_start < s ? m->spec_start : s;
			m->spec_end = m->spec_end > e ? m->spec_end : e;
		}
		if (rc == 0)
			rc = inode_write(v, m->ino, &in);
		if (rc == 0)
			forget_allocated(v, m->ino, &in, lblk, want);
	}
	pthread_mutex_unlock(&v->lock);
	minode_invalidate_map(m);
	return rc;
}

int meta_commit_write(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len,
		      uint64_t new_size)
{
	struct ext2_inode_large in;
	struct timespec now = now_ts();
	pthread_mutex_lock(&v->lock);
	int rc = inode_read(v, m->ino, &in);
	if (rc == 0)
		rc = inode_lock_writes(v, m->ino, 0, 0, 0);
	if (rc == 0 && len)
		rc = extent_mark_written(v, m->ino, &in, lblk, len);
	if (rc == 0) {
		if (new_size > atomic_load(&m->size)) {
			ext2fs_inode_size_set(v->fs, (struct ext2_inode *)&in, new_size);
			atomic_store(&m->size, new_size);
		}
		inode_set_time(v, &in, TIME_M | TIME_C, now);
		m->times_dirty = 0;
		rc = inode_write(v, m->ino, &in);
	}
	pthread_mutex_unlock(&v->lock);
	if (len)
		minode_invalidate_map(m);
	return rc;
}

/* ---- fallocate ----------------------------------------------------------- */

/* Writes zeros over [off, off+len) inside one block, if that block is written. */
int extent_zero_in_block(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			     uint64_t off, uint64_t len)
{
	unsigned bs = v->blocksize;
	struct meta_extent e;
	int rc = extent_map(v, ino, in, off / bs, &e);
	if (rc || e.state != EXTENT_WRITTEN || len == 0)
		return rc;
	uint64_t pblk = e.pblk + (off / bs - e.lblk);
	void *buf;
	if (posix_memalign(&buf, 4096, bs))
		return -ENOMEM;
	/* Read, zero, write back: a gate closing in between refuses the write. */
	rc = lun_pread(&v->data_lun, buf, bs, pblk * bs);
	if (rc == 0) {
		memset((char *)buf + off % bs, 0, len);
		rc = lun_pwrite(&v->data_lun, buf, bs, pblk * bs, 0);
	}
	rc = rc ? -EIO : 0;
	free(buf);
	if (rc)
		csvfs_log(LOG_ERR_L, "inode %u: zeroing bytes in block %llu failed", ino,
			  (unsigned long long)pblk);
	return rc;
}

/* Zeroes the partial blocks at both edges of [off, end); returns the whole
 * blocks in between as [*first, *last). */
static int zero_edges(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
		      uint64_t off, uint64_t end, uint64_t *first, uint64_t *last)
{
	unsigned bs = v->blocksize;
	*first = (off + bs - 1) / bs;
	*last = end / bs;
	if (off / bs == (end - 1) / bs && (off % bs || end % bs)) {
		*first = *last = 0;
		return extent_zero_in_block(v, ino, in, off, end - off);
	}
	int rc = 0;
	if (off % bs)
		rc = extent_zero_in_block(v, ino, in, off, bs - off % bs);
	if (rc == 0 && end % bs)
		rc = extent_zero_in_block(v, ino, in, end - end % bs, end % bs);
	return rc;
}

/* Allocates unwritten blocks for every hole in [first, last). */
static int fill_holes(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
		      uint64_t first, uint64_t last)
{
	uint64_t pos = first;
	for (unsigned guard = 0; pos < last && guard < 1000000; guard++) {
		struct meta_extent e;
		int rc = extent_map(v, ino, in, pos, &e);
		if (rc)
			return rc;
		uint64_t stop = e.lblk + e.len < last ? e.lblk + e.len : last;
		if (e.state == EXTENT_HOLE) {
			uint64_t want = stop - pos;
			rc = fit_allocation(v, want, &want);
			if (rc == 0)
				rc = extent_alloc_unwritten(v, ino, in, pos, want);
			if (rc)
				return rc;
			forget_allocated(v, ino, in, pos, stop - pos);
		}
		pos = stop;
	}
	return 0;
}

static int fallocate_locked(struct volume *v, struct minode *m, struct ext2_inode_large *in,
			    int mode, uint64_t off, uint64_t len)
{
	unsigned bs = v->blocksize;
	uint64_t end = off + len, first, last;
	int rc = 0;
	int keep_size = mode & FALLOC_FL_KEEP_SIZE;
	if (mode & FALLOC_FL_PUNCH_HOLE) {
		if (!keep_size)
			return -EOPNOTSUPP;
		uint64_t size = atomic_load(&m->size);
		if (off >= size)
			return 0;
		if (end > size)
			end = size;
		rc = zero_edges(v, m->ino, in, off, end, &first, &last);
		if (rc == 0 && last > first)
			rc = extent_punch(v, m->ino, in, first, last);
	} else if (mode & FALLOC_FL_ZERO_RANGE) {
		rc = zero_edges(v, m->ino, in, off, end, &first, &last);
		if (rc == 0 && last > first)
			rc = fill_holes(v, m->ino, in, first, last);
		if (rc == 0 && last > first)
			rc = extent_mark_unwritten(v, m->ino, in, first, last - first);
		/* partial edge blocks that were holes are allocated too, as ext4 does */
		if (rc == 0 && (off % bs || end % bs))
			rc = fill_holes(v, m->ino, in, off / bs, (end + bs - 1) / bs);
	} else {
		rc = fill_holes(v, m->ino, in, off / bs, (end + bs - 1) / bs);
	}
	if (rc == 0 && !keep_size && end > atomic_load(&m->size)) {
		ext2fs_inode_size_set(v->fs, (struct ext2_inode *)in, end);
		atomic_store(&m->size, end);
	}
	return rc;
}

/* Collapse and insert range are refused: the kernel's FUSE client never
 * sends them (docs/cluster.md). */
int meta_fallocate(struct volume *v, struct minode *m, int mode, uint64_t off, uint64_t len)
{
	int supported = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
	if (mode & ~supported)
		return -EOPNOTSUPP;
	if (len == 0)
		return -EINVAL;
	if (off + len >= MAX_LBLK * v->blocksize || off + len < off)
		return -EFBIG;
	struct ext2_inode_large in;
	pthread_rwlock_wrlock(&m->io_lock);
	pthread_mutex_lock(&v->lock);
	int rc = volume_refuses_changes(v) ? -EROFS : inode_read(v, m->ino, &in);
	if (rc == 0 && !LINUX_S_ISREG(in.i_mode))
		rc = LINUX_S_ISDIR(in.i_mode) ? -EISDIR : -ENODEV;
	if (rc == 0)
		rc = inode_lock_writes(v, m->ino, 0, 0, 0);
	if (rc == 0) {
		/* Blocks the user allocates are theirs: no write-ahead trimming over them. */
		m->spec_start = m->spec_end = 0;
		rc = fallocate_locked(v, m, &in, mode, off, len);
		struct timespec now = now_ts();
		if (rc == 0 || rc == -ENOSPC)
			inode_set_time(v, &in, TIME_C | ((mode & ~FALLOC_FL_KEEP_SIZE) ? TIME_M : 0), now);
		int wrc = inode_write(v, m->ino, &in);
		if (rc == 0)
			rc = wrc;
	}
	/* exactly once: a resent punch or zeroing must not undo later writes */
	reply_record(v, rc, m->ino, rc == 0 ? in.i_generation : 0);
	pthread_mutex_unlock(&v->lock);
	minode_invalidate_map(m);
	pthread_rwlock_unlock(&m->io_lock);
	return rc;
}

int meta_seek(struct volume *v, struct minode *m, uint64_t off, int whence, uint64_t *out)
{
	unsigned bs = v->blocksize;
	uint64_t size = atomic_load(&m->size);
	if (off >= size)
		return -ENXIO;
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	int rc = inode_read(v, m->ino, &in);
	uint64_t pos = off / bs, found = size;
	/* Unwritten extents read as zeros: for seeking they are holes, as in ext4. */
	for (unsigned guard = 0; rc == 0 && pos * bs < size && guard < 1000000; guard++) {
		struct meta_extent e;
		rc = extent_map(v, m->ino, &in, pos, &e);
		if (rc)
			break;
		int data = e.state == EXTENT_WRITTEN;
		if ((whence == SEEK_DATA) == data) {
			found = pos * bs > off ? pos * bs : off;
			break;
		}
		pos = e.lblk + e.len;
	}
	pthread_mutex_unlock(&v->lock);
	if (rc)
		return rc;
	if (whence == SEEK_DATA && found >= size)
		return -ENXIO;
	*out = found > size ? size : found;
	return 0;
}
