/* Directory aliases in this node's kernel (internal to the FUSE front end).
 *
 * The kernel keeps one dentry per directory inode. When another node renames
 * a directory, this node's kernel still has it under its old name; a lookup
 * that finds it under the new name must move that dentry, and cannot while a
 * rename on this node holds the rename lock, nor while the old parent is
 * locked: the VFS answers ESTALE (its d_splice_alias). So every directory
 * told to the kernel is remembered with the (parent, name) and the node id it
 * was told under; when it turns up elsewhere, the old dentry is invalidated
 * (fuse_lowlevel_notify_inval_entry) by a thread of its own, and the
 * directory is told under a new alternate node id, which has no dentry to
 * move. Lookups at its place then keep answering that id, so the kernel's
 * revalidation keeps its dentry.
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

/* The kernel is about to be told that directory id (its canonical node id)
 * is parent/name; returns the node id to tell it by. A directory that has
 * not moved keeps the id the kernel knows it by (so a revalidating lookup
 * finds the same inode). One that moved (another node renamed it) has its
 * old dentry invalidated — waiting up to 100 ms with wait — and gets a fresh
 * alternate id (alias_alt_id): a second kernel inode with no alias. Never
 * the old inode again, because its dentry may outlive the invalidation (an
 * open file below keeps it) or be locked by the very operation asking (a
 * rename here), and the kernel cannot move a directory alias while this
 * node renames: its d_splice_alias would answer ESTALE. */
fuse_ino_t alias_tell_dir(struct alias_table *t, fuse_ino_t id, fuse_ino_t parent, const char *name,
			  int wait);
/* Every alternate id alias_tell_dir returns is held once for the reply:
 * alias_forget(id, 1) if the kernel did not get it. */
/* An alternate node id for canonical (same inode number, another
 * generation), held once for the reply that tells it (canonical itself if
 * there is no memory); and back (any other id comes back as it is). An
 * alternate id resolves until the kernel has forgotten every lookup of it. */
fuse_ino_t alias_alt_id(fuse_ino_t canonical);
fuse_ino_t alias_canonical(fuse_ino_t id);
/* The kernel forgot nlookup lookups of id (FUSE_FORGET), or a reply that
 * told it did not reach the kernel (nlookup 1); no-op for other ids. */
void alias_forget(fuse_ino_t id, uint64_t nlookup);
/* How many alternate ids resolve now (tests). */
size_t alias_alt_ids_held(void);
/* This node renamed parent/name to newparent/newname (exchange: both ways);
 * the kernel moved its own dentries. */
void alias_renamed(struct alias_table *t, fuse_ino_t parent, const char *name,
		   fuse_ino_t newparent, const char *newname, int exchange);

#endif
