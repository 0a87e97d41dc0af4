/* The metadata operations carried over redirect-io (internal to fs): op
 * codes and the codecs of the structures they share. Requests and replies
 * are built only with the bounds-checked rio_put_* / rio_get_* helpers; a
 * RESPONSE's status is 0 or a positive errno. docs/protocol.md, "Operations",
 * lists every payload. */
#ifndef CSVFS_FS_PROTO_H
#define CSVFS_FS_PROTO_H

#include "fs/internal.h"
#include "redirect-io/rio.h"

enum csv_op {
	OP_LOOKUP = 1, OP_GETATTR = 2, OP_SETATTR = 3, OP_CREATE = 4, OP_SYMLINK = 5,
	OP_LINK = 6, OP_UNLINK = 7, OP_RMDIR = 8, OP_RENAME = 9, OP_READLINK = 10,
	OP_READDIR = 11, OP_STATFS = 12, OP_GETXATTR = 13, OP_LISTXATTR = 14,
	OP_SETXATTR = 15, OP_REMOVEXATTR = 16, OP_OPEN = 17, OP_RELEASE = 18,
	OP_FSYNC = 19, OP_MAP = 20, OP_ALLOC = 21, OP_COMMIT = 22, OP_TOUCH = 23,
	OP_FALLOCATE = 24, OP_SEEK = 25, OP_SYNCFS = 26, OP_MOVE = 27, OP_READDIRPLUS = 28,
	OP_CREATE_OPEN = 29, OP_MAX_ = 30
};

#define PROTO_NAME_MAX 256      /* a file name with its NUL */
#define PROTO_PATH_MAX 4097     /* a symlink target with its NUL */
#define PROTO_XATTR_MAX 65536   /* an xattr value or list */
#define PROTO_READDIR_BYTES (1u << 20)

void proto_put_attr(struct rio_writer *w, const struct meta_attr *a);
int proto_get_attr(struct rio_reader *r, struct meta_attr *a);
void proto_put_setattr(struct rio_writer *w, const struct meta_setattr *sa);
int proto_get_setattr(struct rio_reader *r, struct meta_setattr *sa);
void proto_put_cred(struct rio_writer *w, const struct meta_cred *c);
int proto_get_cred(struct rio_reader *r, struct meta_cred *c);
void proto_put_extent(struct rio_writer *w, const struct meta_extent *e);
int proto_get_extent(struct rio_reader *r, struct meta_extent *e);
void proto_put_statfs(struct rio_writer *w, const struct statvfs *st);
int proto_get_statfs(struct rio_reader *r, struct statvfs *st);
const char *proto_op_name(uint16_t op);

#endif
