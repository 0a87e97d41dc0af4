/* POSIX ACL inheritance at create time (what the kernel's posix_acl_create does
 * for a local filesystem): a new inode under a directory with a default ACL gets
 * that ACL as its access ACL, masked by the create mode, and a new directory
 * also inherits the default ACL. The kernel enforces ACLs (FUSE_CAP_POSIX_ACL);
 * it does not inherit them for FUSE filesystems, so the engine does. */
#include "fs/meta_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ACL_XATTR_VERSION 2
#define ACL_USER_OBJ 0x01
#define ACL_GROUP_OBJ 0x04
#define ACL_MASK 0x10
#define ACL_OTHER 0x20

struct acl_entry_vfs {
	uint16_t tag, perm;
	uint32_t id;
} __attribute__((packed));

static const char DEFAULT_ACL[] = "system.posix_acl_default";
static const char ACCESS_ACL[] = "system.posix_acl_access";

/* The parent's default ACL in the VFS xattr form, or NULL. */
static void *read_default_acl(struct volume *v, ext2_ino_t dir, size_t *len)
{
	struct ext2_xattr_handle *h;
	void *value = NULL;
	if (ext2fs_xattrs_open(v->fs, dir, &h))
		return NULL;
	if (ext2fs_xattrs_read(h) == 0 && ext2fs_xattr_get(h, DEFAULT_ACL, &value, len) != 0)
		value = NULL;
	ext2fs_xattrs_close(&h);
	if (value && (*len < 4 || (*len - 4) % sizeof(struct acl_entry_vfs) ||
		      ext2fs_le32_to_cpu(*(uint32_t *)value) != ACL_XATTR_VERSION)) {
		csvfs_log(LOG_WARN_L, "directory %u: malformed default ACL ignored", dir);
		ext2fs_free_mem(&value);
		return NULL;
	}
	return value;
}

/* Masks mode by the ACL and the ACL by mode; returns whether the ACL says more
 * than the mode bits can (named users/groups). */
static int apply_mode(void *acl, size_t len, uint32_t *mode)
{
	struct acl_entry_vfs *e = (struct acl_entry_vfs *)((char *)acl + 4);
	size_t n = (len - 4) / sizeof(*e);
	struct acl_entry_vfs *group_obj = NULL, *mask = NULL;
	int extended = 0;
	for (size_t i = 0; i < n; i++) {
		uint16_t perm = ext2fs_le16_to_cpu(e[i].perm);
		switch (ext2fs_le16_to_cpu(e[i].tag)) {
		case ACL_USER_OBJ:
			perm &= (*mode >> 6) & 7;
			*mode &= ~(uint32_t)0700 | ((uint32_t)perm << 6);
			e[i].perm = ext2fs_cpu_to_le16(perm);
			break;
		case ACL_GROUP_OBJ: group_obj = &e[i]; break;
		case ACL_MASK: mask = &e[i]; break;
		case ACL_OTHER:
			perm &= *mode & 7;
			*mode &= ~(uint32_t)07 | perm;
			e[i].perm = ext2fs_cpu_to_le16(perm);
			break;
		default: extended = 1;
		}
	}
	struct acl_entry_vfs *g = mask ? mask : group_obj;
	if (g) {
		uint16_t perm = ext2fs_le16_to_cpu(g->perm) & ((*mode >> 3) & 7);
		*mode &= ~(uint32_t)070 | ((uint32_t)perm << 3);
		g->perm = ext2fs_cpu_to_le16(perm);
	}
	return extended || mask;
}

static int set_xattr(struct volume *v, ext2_ino_t ino, const char *name, const void *val, size_t len)
{
	struct ext2_xattr_handle *h;
	errcode_t e = ext2fs_xattrs_open(v->fs, ino, &h);
	if (!e) {
		e = ext2fs_xattrs_read(h);
		if (!e)
			e = ext2fs_xattr_set(h, name, val, len);
		ext2fs_xattrs_close(&h);
	}
	return e ? -errcode_to_errno(e) : 0;
}

int acl_inherit(struct volume *v, ext2_ino_t parent, ext2_ino_t ino, struct ext2_inode_large *in)
{
	if (LINUX_S_ISLNK(in->i_mode))
		return 0;
	size_t len = 0;
	void *dacl = read_default_acl(v, parent, &len);
	if (!dacl)
		return 0;
	int rc = 0;
	if (LINUX_S_ISDIR(in->i_mode))
		rc = set_xattr(v, ino, DEFAULT_ACL, dacl, len);
	uint32_t mode = in->i_mode;
	if (rc == 0 && apply_mode(dacl, len, &mode))
		rc = set_xattr(v, ino, ACCESS_ACL, dacl, len);
	ext2fs_free_mem(&dacl);
	if (rc == 0)
		rc = inode_read(v, ino, in); /* the xattrs may have changed i_file_acl */
	if (rc == 0) {
		in->i_mode = (uint16_t)mode;
		rc = inode_write(v, ino, in);
	}
	volume_mark_dirty(v);
	return rc;
}
