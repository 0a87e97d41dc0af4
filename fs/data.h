/* The data path (internal to fs): file data directly on the LUN. */
#ifndef CSVFS_FS_DATA_H
#define CSVFS_FS_DATA_H

#include <sys/types.h>
#include "fs/meta.h"

struct fs_ops;

/* Layouts, allocations and commits come from ops (fs/ops.h): the engine's
 * on the coordinator, the coordinator's on a participant. */
/* Returns bytes read (short at EOF) or a negative errno. */
ssize_t data_read(struct volume *v, const struct fs_ops *ops, struct minode *m, char *buf,
		  size_t len, uint64_t off);
/* Returns bytes written or a negative errno. */
ssize_t data_write(struct volume *v, const struct fs_ops *ops, struct minode *m, const char *buf,
		   size_t len, uint64_t off);

#endif
