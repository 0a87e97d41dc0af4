/* The FUSE front end's file locks (internal to fs): POSIX and OFD record
 * locks (getlk, setlk) and flock, handed to fs/locks.h. fh is the open
 * file's key (fuse_file_info's fh), owner FUSE's lock owner. */
#ifndef CSVFS_FS_FUSE_LOCKS_H
#define CSVFS_FS_FUSE_LOCKS_H

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include "fs/meta.h"

void fuse_getlk(fuse_req_t req, struct volume *v, ext2_ino_t ino, struct fuse_file_info *fi,
		struct flock *lock);
void fuse_setlk(fuse_req_t req, struct volume *v, ext2_ino_t ino, struct fuse_file_info *fi,
		struct flock *lock, int sleep);
void fuse_flock(fuse_req_t req, struct volume *v, ext2_ino_t ino, struct fuse_file_info *fi, int op);

#endif
