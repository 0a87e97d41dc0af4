/* The FUSE front end (internal to fs). */
#ifndef CSVFS_FS_FUSE_OPS_H
#define CSVFS_FS_FUSE_OPS_H

#include "fs/meta.h"

/* setxattr flag values as the kernel passes them (linux/xattr.h). */
#define XATTR_CREATE_FLAG 1
#define XATTR_REPLACE_FLAG 2

/* The daemon's FUSE worker threads at most, and the kernel's background
 * requests (async direct I/O) in flight at most: one number, so that
 * neither waits for the other. */
#define FUSE_WORKERS_MAX 64

struct alias_table;

struct csvfs_fuse {
	struct volume *vol;
	int acl_enforced;      /* the kernel took FUSE_CAP_POSIX_ACL */
	struct alias_table *aliases;   /* cluster mode: fs/fuse_alias.h */
};

struct fuse_lowlevel_ops;
extern const struct fuse_lowlevel_ops csvfs_fuse_ops;

#endif
