/* Filesystem operations as the FUSE front end sees them (internal to fs):
 * fs/fsops.c runs each in the implementation this node's role calls for
 * (fs/ops.h): on the coordinator (or standalone) the metadata engine, on a
 * participant requests to the coordinator; file data goes directly to the
 * LUN at the blocks the layouts name (fs/data.c). */
#ifndef CSVFS_FS_FSOPS_H
#define CSVFS_FS_FSOPS_H

#include <sys/types.h>
#include "fs/meta.h"
#include "fs/plock.h"

int fsop_lookup(struct volume *v, ext2_ino_t parent, const char *name, struct meta_attr *out);
int fsop_getattr(struct volume *v, ext2_ino_t ino, struct meta_attr *out);
int fsop_setattr(struct volume *v, ext2_ino_t ino, const struct meta_setattr *sa,
		 struct meta_attr *out);
int fsop_create(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
		uint32_t rdev, const struct meta_cred *cred, struct meta_attr *out);
int fsop_symlink(struct volume *v, ext2_ino_t parent, const char *name, const char *target,
		 const struct meta_cred *cred, struct meta_attr *out);
int fsop_link(struct volume *v, ext2_ino_t ino, ext2_ino_t newparent, const char *newname,
	      struct meta_attr *out);
int fsop_unlink(struct volume *v, ext2_ino_t parent, const char *name);
int fsop_rmdir(struct volume *v, ext2_ino_t parent, const char *name);
/* cred: the caller (owner of a RENAME_WHITEOUT whiteout). */
int fsop_rename(struct volume *v, ext2_ino_t parent, const char *name, ext2_ino_t newparent,
		const char *newname, unsigned flags, const struct meta_cred *cred);
int fsop_readlink(struct volume *v, ext2_ino_t ino, char *buf, size_t size);
int fsop_readdir(struct volume *v, ext2_ino_t ino, struct meta_dirent **out, size_t *n);
int fsop_statfs(struct volume *v, struct statvfs *out);
int fsop_statfs_quick(struct volume *v, struct statvfs *out);
int fsop_getxattr(struct volume *v, ext2_ino_t ino, const char *name, void *buf, size_t size);
int fsop_listxattr(struct volume *v, ext2_ino_t ino, char *buf, size_t size);
int fsop_setxattr(struct volume *v, ext2_ino_t ino, const char *name, const void *value,
		  size_t size, int flags);
int fsop_removexattr(struct volume *v, ext2_ino_t ino, const char *name);

/* Creates a regular file and opens it (one round trip for a participant). */
int fsop_create_open(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
		     const struct meta_cred *cred, struct meta_attr *out, struct minode **m);
/* Opens ino of generation gen (O_TRUNC: truncate); *out is the referenced
 * minode. -ESTALE: that file is gone (the kernel looks the name up again). */
int fsop_open(struct volume *v, ext2_ino_t ino, uint32_t gen, int truncate, struct minode **out);
/* Closes one open and drops the reference fsop_open took. */
int fsop_release(struct volume *v, struct minode *m);
int fsop_fsync(struct volume *v, struct minode *m, int datasync);
int fsop_syncfs(struct volume *v);
int fsop_fallocate(struct volume *v, struct minode *m, int mode, uint64_t off, uint64_t len);
int fsop_seek(struct volume *v, struct minode *m, uint64_t off, int whence, uint64_t *out);
/* File locks, decided where the lock table is (fs/ops.h "setlk"). */
int fsop_setlk(struct volume *v, const struct plock *req, int *granted, uint64_t *gen);
int fsop_getlk(struct volume *v, const struct plock *req, struct plock *conflict, int *found);
int fsop_unlock_all(struct volume *v, uint32_t ino, enum plock_by by, uint64_t key);
int fsop_lkwait(struct volume *v, uint64_t gen, unsigned timeout_ms, uint64_t *out);
ssize_t fsop_read(struct volume *v, struct minode *m, char *buf, size_t len, uint64_t off);
ssize_t fsop_write(struct volume *v, struct minode *m, const char *buf, size_t len, uint64_t off);

#endif
