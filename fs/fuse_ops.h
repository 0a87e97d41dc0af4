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

/* Drops the kernel's cached attributes of a file (session: the FUSE
 * session; the cluster's attribute lock recalls call it). */
void csvfs_fuse_inval_attr(void *session, ext2_ino_t ino, uint32_t gen);
/* Makes the kernel look every name up again (0, or a negative errno when
 * the kernel cannot). */
int csvfs_fuse_inval_entries_all(void *session);
/* Cluster mode: gives the cluster the ways to drop what the kernel caches
 * (attributes; names when the kernel can drop them all at once). */
void csvfs_fuse_cluster_caches(struct volume *v, void *session);

struct fuse_lowlevel_ops;
extern const struct fuse_lowlevel_ops csvfs_fuse_ops;

#endif
