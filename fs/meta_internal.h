/* Private to the metadata engine (fs/meta_*.c): the pieces its files share.
 * Callers hold v->lock unless a comment says otherwise. */
#ifndef CSVFS_FS_META_INTERNAL_H
#define CSVFS_FS_META_INTERNAL_H

#include "fs/meta.h"

int errcode_to_errno(errcode_t e);
void inode_to_attr(struct volume *v, ext2_ino_t ino, const struct ext2_inode_large *in,
		   struct meta_attr *out);
int inode_read(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in);
int inode_write(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in);
int inode_lock_writes(struct volume *v, ext2_ino_t a, ext2_ino_t b, ext2_ino_t c, ext2_ino_t d);
/* inode_write of an inode just allocated: no node can have cached it. */
int inode_write_fresh(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in);
void inode_set_time(struct volume *v, struct ext2_inode_large *in, int which, struct timespec ts);
struct timespec now_ts(void);
enum { TIME_A = 1, TIME_M = 2, TIME_C = 4, TIME_CR = 8 };

/* Directories (meta_dir.c). */
int dir_find(struct volume *v, ext2_ino_t dir, const char *name, ext2_ino_t *ino, int *ftype);
int dir_add(struct volume *v, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ftype);
int dir_remove(struct volume *v, ext2_ino_t dir, const char *name);
int dir_set_entry(struct volume *v, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ftype);
int dir_is_empty(struct volume *v, ext2_ino_t dir, int *empty);
int dir_make_indexed(struct volume *v, ext2_ino_t dir);
int mode_to_ftype(uint32_t mode);

/* Extents (meta_extent.c). */
int extent_map(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in, uint64_t lblk,
	       struct meta_extent *out);
int extent_alloc_unwritten(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			   uint64_t lblk, uint64_t len);
int extent_mark_written(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			uint64_t lblk, uint64_t len);
int extent_mark_unwritten(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			  uint64_t lblk, uint64_t len);
/* Writes zeros over [off, off+len) inside one block, if that block is written. */
int extent_zero_in_block(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			 uint64_t off, uint64_t len);
/* Frees the unwritten blocks of [lblk, end) (write-ahead no one used). */
int extent_punch_unwritten(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			   uint64_t lblk, uint64_t end);
/* Blocks the allocator can hand out now (frees still deferred and a reserve
 * for extent-tree and directory growth excluded). Caller holds v->lock. */
uint64_t volume_blocks_available(struct volume *v);
/* Frees blocks of [lblk, end) (end = ~0 for "to the end"). */
int extent_punch(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
		 uint64_t lblk, uint64_t end);

/* Validity checks (meta_check.c, docs/hostile-input.md). Each failing check
 * logs once per inode and returns -EIO; a fatal one makes every later
 * inode_read of that inode -EIO, so it is never written or freed. */
int sysz_build(struct volume *v, char *err, size_t errlen);
void sysz_free(struct volume *v);
/* Metadata changes are refused: a read-only mount, or corruption found under
 * errors=remount-ro (the default). Caller holds v->lock. */
int volume_refuses_changes(const struct volume *v);
/* At mount: the root inode passes inode_check and is a directory. */
int root_check(struct volume *v, char *err, size_t errlen);
/* NULL, or what [start, start+len) hits: "the group descriptor table", ... */
const char *blocks_invalid(const struct volume *v, blk64_t start, uint64_t len);
int inode_known_bad(const struct volume *v, ext2_ino_t ino);
int corruption_report(struct volume *v, ext2_ino_t ino, int fatal, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* A corrupt inode: EIO for it from now on. */
#define inode_corrupt(v, ino, ...) corruption_report((v), (ino), 1, __VA_ARGS__)
/* A bad entry or block in directory dir: logged once, the directory's other
 * entries stay usable. */
#define dir_entry_corrupt(v, dir, ...) corruption_report((v), (dir), 0, __VA_ARGS__)
/* An entry may name the root or an inode from s_first_ino to s_inodes_count. */
int dir_entry_check(struct volume *v, ext2_ino_t dir, const char *name, ext2_ino_t ino);
/* Cheap checks at every read: i_size, the extent root in i_block, the xattr
 * block. */
int inode_check(struct volume *v, ext2_ino_t ino, const struct ext2_inode_large *in);
/* One mapping [lblk, +len) -> pblk the engine is about to hand out. */
int extent_check(struct volume *v, ext2_ino_t ino, uint64_t lblk, blk64_t pblk, uint64_t len);
/* Every extent and tree block, before blocks are freed. */
int extent_tree_check(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in);

/* Frees deferred until their transaction is durable (meta_deferfree.c). */
void deferfree_attach(struct volume *v);
void deferfree_stage(struct volume *v);
void deferfree_unstage(struct volume *v);
void deferfree_tag(struct volume *v, uint64_t id);
int deferfree_reclaim(struct volume *v);
void deferfree_destroy(struct volume *v);

/* Multi-mount protection (meta_mmp.c). */
int mmp_acquire(struct volume *v, char *err, size_t errlen);
void mmp_heartbeat(struct volume *v);
void mmp_release(struct volume *v);
/* For mkfs, before any write: -EBUSY with the holder named in err when the
 * filesystem on the LUN has a live MMP holder (a csvfs daemon, the kernel's
 * ext4 on another machine, e2fsck); reads only, may wait out a heartbeat. */
int mmp_check_unheld(const char *lun, char *err, size_t errlen);

/* For mkfs, before any write: -EBUSY when this machine's kernel has the LUN
 * mounted or claimed, directly or through a loop device over it (lun_inuse.c). */
int lun_check_kernel_unused(const char *lun, char *err, size_t errlen);

/* ACL inheritance at create (meta_acl.c). */
int acl_inherit(struct volume *v, ext2_ino_t parent, ext2_ino_t ino, struct ext2_inode_large *in);

/* Inode lifetime (meta_inode.c). */
int inode_free(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in);
int orphan_add(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in);
int orphan_remove(struct volume *v, ext2_ino_t ino);
int orphan_process_all(struct volume *v);
/* Drops one link; frees or orphans the inode when it was the last. */
int inode_drop_link(struct volume *v, ext2_ino_t ino);

/* Exactly once (meta_reply.c): a change that succeeded (rc 0) records the
 * result of the request this thread runs, if any, before its volume-lock
 * hold ends; the table is dropped with the engine. */
void reply_record(struct volume *v, int rc, ext2_ino_t ino, uint32_t gen);
void reply_table_free(struct volume *v);

#endif
