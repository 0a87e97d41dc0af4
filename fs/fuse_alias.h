/* Directory aliases in this node's kernel (internal to the FUSE front end).
 *
 * The kernel keeps one dentry per directory inode. When another node renames
 * a directory, this node's kernel still has it under its old name; a lookup
 * that finds it under the new name must move that dentry, and cannot while a
 * rename on this node holds the rename lock: the VFS answers ESTALE (its
 * d_splice_alias), and retries once. So every directory told to the kernel is
 * remembered with the (parent, name) it was told under; when it turns up
 * elsewhere, the old dentry is invalidated (fuse_lowlevel_notify_inval_entry)
 * by a thread of its own, and the lookup's reply waits (100 ms at most) until
 * that is done. The thread waits for the old parent's lock: a rename here
 * that asked holds it until it fails, and its retry then finds no stale
 * alias; any other lookup gets its reply after the old dentry is gone.
 */
#ifndef CSVFS_FS_FUSE_ALIAS_H
#define CSVFS_FS_FUSE_ALIAS_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 34
#endif
#include <fuse_lowlevel.h>
#include <stdint.h>

struct alias_table;

/* NULL if there is no memory or no thread: aliases are then not tracked,
 * and every call below is a no-op. */
struct alias_table *alias_start(struct fuse_session *se);
/* After the session is unmounted (an invalidation in flight then fails). */
void alias_stop(struct alias_table *t);

/* The kernel is told that directory id (node id) is parent/name. With wait,
 * returns 1 if its old dentry could not be invalidated in time: the old
 * parent is locked, by the very operation that asked (a rename here), and
 * the kernel would refuse the reply (ESTALE) — it is then given an
 * alternate node id for the directory (alias_alt_id), a second kernel inode
 * with no alias; the stale one goes when the invalidation gets through. */
int alias_seen_dir(struct alias_table *t, fuse_ino_t id, fuse_ino_t parent, const char *name,
		   int wait);
/* An alternate node id for canonical (same inode number, another
 * generation), and back (any other id comes back as it is). */
fuse_ino_t alias_alt_id(fuse_ino_t canonical);
fuse_ino_t alias_canonical(fuse_ino_t id);
/* This node renamed parent/name to newparent/newname (exchange: both ways);
 * the kernel moved its own dentries. */
void alias_renamed(struct alias_table *t, fuse_ino_t parent, const char *name,
		   fuse_ino_t newparent, const char *newname, int exchange);

#endif
