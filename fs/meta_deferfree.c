/* Deferred frees: a block freed by the running transaction is not handed out
 * again until that transaction is durable (design.md §3). Otherwise a crash
 * could leave the old owner (say a file whose truncate was never committed)
 * pointing at blocks that already hold another file's new data.
 *
 * libext2fs reports every free through its alloc-stats callbacks, after it
 * cleared the bitmap bit: the bit is set again so the allocator skips the
 * block, and the range is remembered. The commit clears the bits just before
 * the bitmaps are written into the transaction, under the volume lock, so
 * nothing allocates between then and the durable commit. */
#include "fs/meta_internal.h"

#include <stdlib.h>

static void defer(struct volume *v, blk64_t blk, blk64_t num)
{
	ext2fs_mark_block_bitmap_range2(v->fs->block_map, blk, (unsigned)num);
	v->freed_blocks += num;
	struct deferred_free *last = v->nfreed ? &v->freed[v->nfreed - 1] : NULL;
	if (last && last->txn == 0 && last->blk + last->num == blk) {
		last->num += num;
		return;
	}
	if (v->nfreed == v->freed_cap) {
		size_t cap = v->freed_cap ? v->freed_cap * 2 : 256;
		struct deferred_free *p = realloc(v->freed, cap * sizeof(*p));
		if (!p) {
			/* Cannot remember it: free it now rather than leak it. */
			ext2fs_unmark_block_bitmap_range2(v->fs->block_map, blk, (unsigned)num);
			v->freed_blocks -= num;
			csvfs_log(LOG_WARN_L, "out of memory deferring a free of %llu blocks",
				  (unsigned long long)num);
			return;
		}
		v->freed = p;
		v->freed_cap = cap;
	}
	v->freed[v->nfreed++] = (struct deferred_free){ blk, num, 0 };
}

static void on_block_stats(ext2_filsys fs, blk64_t blk, int inuse)
{
	struct volume *v = fs->priv_data;
	if (inuse < 0 && v->journaled)
		defer(v, blk, 1);
}

void deferfree_attach(struct volume *v)
{
	v->fs->priv_data = v;
	/* Only the per-block callback: libext2fs 1.47.0 calls the range one with
	 * the loop's final (blk, 0) instead of the freed range. Frees go through
	 * ext2fs_block_alloc_stats2 block by block (punch, xattr blocks). */
	ext2fs_set_block_alloc_stats_callback(v->fs, on_block_stats, NULL);
}

/* Before the bitmaps go into a transaction: forget frees whose transaction is
 * durable, and show every pending free as free. */
void deferfree_stage(struct volume *v)
{
	if (v->nfreed == 0)
		return;   /* (journal_durable_id may wait for home writes) */
	uint64_t durable = journal_durable_id(v->journal);
	size_t kept = 0;
	for (size_t i = 0; i < v->nfreed; i++) {
		struct deferred_free f = v->freed[i];
		ext2fs_unmark_block_bitmap_range2(v->fs->block_map, f.blk, (unsigned)f.num);
		if (f.txn == 0 || f.txn > durable)
			v->freed[kept++] = f;
		else
			v->freed_blocks -= f.num;
	}
	v->nfreed = kept;
}

/* After: the allocator keeps off them again until they are durable. */
void deferfree_unstage(struct volume *v)
{
	for (size_t i = 0; i < v->nfreed; i++)
		ext2fs_mark_block_bitmap_range2(v->fs->block_map, v->freed[i].blk,
						(unsigned)v->freed[i].num);
}

/* The frees of the running transaction belong to transaction id. */
void deferfree_tag(struct volume *v, uint64_t id)
{
	for (size_t i = 0; i < v->nfreed; i++)
		if (v->freed[i].txn == 0)
			v->freed[i].txn = id;
}

/* On ENOSPC: if frees are waiting for a commit, commit now and release them.
 * Returns 1 when a retry may succeed. Caller holds v->lock. */
int deferfree_reclaim(struct volume *v)
{
	if (v->nfreed == 0)
		return 0;
	volume_mark_dirty(v);
	if (volume_sync_locked(v) != 0)
		return 0;
	deferfree_stage(v);      /* now durable: dropped from the list */
	deferfree_unstage(v);
	return 1;
}

void deferfree_destroy(struct volume *v)
{
	free(v->freed);
	v->freed = NULL;
	v->nfreed = v->freed_cap = 0;
	v->freed_blocks = 0;
}

#define METADATA_RESERVE_BLOCKS 256u

uint64_t volume_blocks_available(struct volume *v)
{
	uint64_t free_now = ext2fs_free_blocks_count(v->fs->super);
	uint64_t held = v->freed_blocks + METADATA_RESERVE_BLOCKS;
	return free_now > held ? free_now - held : 0;
}
