/* Extended attributes through libext2fs (which also translates POSIX ACLs
 * between the VFS form and ext4's on-disk form, so setfacl works). */
#include "fs/meta_internal.h"

#include <errno.h>
#include <string.h>

static int xattrs_open(struct volume *v, ext2_ino_t ino, struct ext2_xattr_handle **h)
{
	errcode_t e = ext2fs_xattrs_open(v->fs, ino, h);
	if (!e) {
		e = ext2fs_xattrs_read(*h);
		if (e)
			ext2fs_xattrs_close(h);
	}
	if (e)
		csvfs_log(LOG_ERR_L, "inode %u: reading xattrs failed: %s", ino, error_message(e));
	return e ? -errcode_to_errno(e) : 0;
}

int meta_getxattr(struct volume *v, ext2_ino_t ino, const char *name, void *buf, size_t size)
{
	struct ext2_xattr_handle *h;
	void *value = NULL;
	size_t len = 0;
	pthread_mutex_lock(&v->lock);
	int rc = xattrs_open(v, ino, &h);
	if (rc == 0) {
		errcode_t e = ext2fs_xattr_get(h, name, &value, &len);
		rc = e ? -errcode_to_errno(e) : 0;
		ext2fs_xattrs_close(&h);
	}
	pthread_mutex_unlock(&v->lock);
	if (rc == 0 && size > 0) {
		if (len > size)
			rc = -ERANGE;
		else
			memcpy(buf, value, len);
	}
	if (value)
		ext2fs_free_mem(&value);
	return rc ? rc : (int)len;
}

struct list_ctx {
	char *buf;
	size_t size, used;
};

static int list_cb(char *name, char *value, size_t value_len, void *data)
{
	(void)value; (void)value_len;
	struct list_ctx *c = data;
	size_t n = strlen(name) + 1;
	if (c->size && c->used + n <= c->size)
		memcpy(c->buf + c->used, name, n);
	c->used += n;
	return 0;
}

int meta_listxattr(struct volume *v, ext2_ino_t ino, char *buf, size_t size)
{
	struct ext2_xattr_handle *h;
	struct list_ctx c = { buf, size, 0 };
	pthread_mutex_lock(&v->lock);
	int rc = xattrs_open(v, ino, &h);
	if (rc == 0) {
		errcode_t e = ext2fs_xattrs_iterate(h, list_cb, &c);
		rc = e ? -errcode_to_errno(e) : 0;
		ext2fs_xattrs_close(&h);
	}
	pthread_mutex_unlock(&v->lock);
	if (rc)
		return rc;
	if (size && c.used > size)
		return -ERANGE;
	return (int)c.used;
}

/* The xattr change's ctime, and its request id's record (exactly once:
 * under the same volume-lock hold, so in the change's transaction). */
static int stamp_ctime_recorded(struct volume *v, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	int rc = inode_read(v, ino, &in);
	if (rc == 0) {
		inode_set_time(v, &in, TIME_C, now_ts());
		rc = inode_write(v, ino, &in);
	}
	reply_record(v, rc, ino, rc == 0 ? in.i_generation : 0);
	return rc;
}

/* The namespaces ext4 stores (an unknown prefix is kept by libext2fs with
 * index 0, which e2fsck calls a corrupt xattr block): as ext4, EOPNOTSUPP. */
static int xattr_name_ok(const char *name)
{
	static const char *const prefixes[] = { "user.", "trusted.", "security.", "system." };
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		size_t n = strlen(prefixes[i]);
		if (strncmp(name, prefixes[i], n) == 0 && name[n])
			return 1;
	}
	return 0;
}

int meta_setxattr(struct volume *v, ext2_ino_t ino, const char *name, const void *value,
		  size_t size, int flags)
{
	if (!xattr_name_ok(name))
		return -EOPNOTSUPP;
	struct ext2_xattr_handle *h;
	pthread_mutex_lock(&v->lock);
	int rc = volume_refuses_changes(v) ? -EROFS : inode_lock_writes(v, ino, 0, 0, 0);
	if (rc == 0)
		rc = xattrs_open(v, ino, &h);
	if (rc == 0) {
		void *old = NULL;
		size_t old_len;
		errcode_t e = ext2fs_xattr_get(h, name, &old, &old_len);
		if (old)
			ext2fs_free_mem(&old);
		if (e == 0 && (flags & META_XATTR_CREATE))
			rc = -EEXIST;
		else if (e == EXT2_ET_EA_KEY_NOT_FOUND && (flags & META_XATTR_REPLACE))
			rc = -ENODATA;
		if (rc == 0) {
			e = ext2fs_xattr_set(h, name, value, size);
			rc = e ? -errcode_to_errno(e) : 0;
		}
		ext2fs_xattrs_close(&h);
	}
	if (rc == 0) {
		volume_mark_dirty(v);
		rc = stamp_ctime_recorded(v, ino);
	}
	pthread_mutex_unlock(&v->lock);
	return rc;
}

int meta_removexattr(struct volume *v, ext2_ino_t ino, const char *name)
{
	struct ext2_xattr_handle *h;
	pthread_mutex_lock(&v->lock);
	int rc = volume_refuses_changes(v) ? -EROFS : inode_lock_writes(v, ino, 0, 0, 0);
	if (rc == 0)
		rc = xattrs_open(v, ino, &h);
	if (rc == 0) {
		void *old = NULL;
		size_t old_len;
		errcode_t e = ext2fs_xattr_get(h, name, &old, &old_len);
		if (old)
			ext2fs_free_mem(&old);
		if (e == 0)
			e = ext2fs_xattr_remove(h, name);
		rc = e ? -errcode_to_errno(e) : 0;
		ext2fs_xattrs_close(&h);
	}
	if (rc == 0) {
		volume_mark_dirty(v);
		rc = stamp_ctime_recorded(v, ino);
	}
	pthread_mutex_unlock(&v->lock);
	return rc;
}
