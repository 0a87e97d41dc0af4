/* Namespace operations of the metadata engine. Each holds v->lock for its
 * whole duration, so it is atomic with respect to every other metadata op. */
#include "fs/meta_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/sysmacros.h>

#define LINK_MAX_EXT4 65000u

/* The one check of a new name, for every role: a participant runs it before
 * forwarding, so it never sends what the engine would refuse. */
int meta_check_name(const char *name)
{
	size_t len = strlen(name);
	if (len == 0)
		return -ENOENT;
	if (len > EXT2_NAME_LEN)
		return -ENAMETOOLONG;
	if (strchr(name, '/'))
		return -EINVAL;
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EEXIST;   /* always present, never created */
	return 0;
}

static int read_dir_inode(struct volume *v, ext2_ino_t dir, struct ext2_inode_large *in)
{
	int rc = inode_read(v, dir, in);
	if (rc == 0 && !LINUX_S_ISDIR(in->i_mode))
		rc = -ENOTDIR;
	return rc;
}

/* Directory link counts saturate at 1 ("many") with dir_nlink, as in ext4. */
static int dir_links_inc(struct volume *v, struct ext2_inode_large *dir)
{
	if (dir->i_links_count == 1 && ext2fs_has_feature_dir_nlink(v->fs->super))
		return 0;
	if (dir->i_links_count + 1u >= LINK_MAX_EXT4) {
		if (!ext2fs_has_feature_dir_nlink(v->fs->super))
			return -EMLINK;
		dir->i_links_count = 1;
		return 0;
	}
	dir->i_links_count++;
	return 0;
}

static void dir_links_dec(struct ext2_inode_large *dir)
{
	if (dir->i_links_count > 2)
		dir->i_links_count--;
}

/* Stamps mtime/ctime on a directory whose entries changed, then writes it. */
static int touch_dir(struct volume *v, ext2_ino_t dir, struct ext2_inode_large *in)
{
	struct timespec now = now_ts();
	inode_set_time(v, in, TIME_M | TIME_C, now);
	return inode_write(v, dir, in);
}

static int reread_touch_dir(struct volume *v, ext2_ino_t dir, int link_delta)
{
	struct ext2_inode_large in;
	int rc = inode_read(v, dir, &in);
	if (rc)
		return rc;
	if (link_delta > 0)
		rc = dir_links_inc(v, &in);
	else if (link_delta < 0)
		dir_links_dec(&in);
	return rc ? rc : touch_dir(v, dir, &in);
}

static int dir_parent(struct volume *v, ext2_ino_t dir, ext2_ino_t *parent);

int meta_lookup(struct volume *v, ext2_ino_t parent, const char *name, struct meta_attr *out)
{
	if (strlen(name) > EXT2_NAME_LEN)
		return -ENAMETOOLONG;
	ext2_ino_t ino = parent;
	int ftype;
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	/* "." and ".." are not entries an htree lookup can find */
	int rc = strcmp(name, ".") == 0 ? 0
	       : strcmp(name, "..") == 0 ? dir_parent(v, parent, &ino)
	       : dir_find(v, parent, name, &ino, &ftype);
	if (rc == 0)
		rc = inode_read(v, ino, &in);
	/* the kernel's "deleted inode referenced": an open and a last close
	 * would free an inode a directory still names */
	if (rc == 0 && in.i_links_count == 0)
		rc = inode_corrupt(v, ino, "links_count is 0 but directory %u names it '%.255s'",
				   parent, name);
	if (rc == 0)
		inode_to_attr(v, ino, &in, out);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

/* Allocates and initialises an inode (not yet linked anywhere). */
static int new_inode(struct volume *v, ext2_ino_t parent, const struct ext2_inode_large *pin,
		     uint32_t mode, uint32_t rdev, const struct meta_cred *cred,
		     ext2_ino_t *ino_out, struct ext2_inode_large *in)
{
	ext2_ino_t ino;
	errcode_t e = ext2fs_new_inode(v->fs, parent, (int)mode, NULL, &ino);
	if (e)
		return e == EXT2_ET_INODE_ALLOC_FAIL ? -ENOSPC : -errcode_to_errno(e);
	uint32_t gid = cred->gid;
	if (pin->i_mode & LINUX_S_ISGID) {
		/* setgid directories hand their group (and, to directories, the bit) down */
		gid = pin->i_gid | ((uint32_t)pin->osd2.linux2.l_i_gid_high << 16);
		if (LINUX_S_ISDIR(mode))
			mode |= LINUX_S_ISGID;
	}
	memset(in, 0, sizeof(*in));
	in->i_mode = (uint16_t)mode;
	in->i_uid = (uint16_t)cred->uid;
	in->osd2.linux2.l_i_uid_high = (uint16_t)(cred->uid >> 16);
	in->i_gid = (uint16_t)gid;
	in->osd2.linux2.l_i_gid_high = (uint16_t)(gid >> 16);
	in->i_links_count = 1;
	in->i_extra_isize = sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
	if (EXT2_INODE_SIZE(v->fs->super) < sizeof(struct ext2_inode_large))
		in->i_extra_isize = (uint16_t)(EXT2_INODE_SIZE(v->fs->super) - EXT2_GOOD_OLD_INODE_SIZE);
	struct timespec now = now_ts();
	in->i_generation = (uint32_t)(now.tv_nsec ^ (ino * 2654435761u));
	inode_set_time(v, in, TIME_A | TIME_M | TIME_C | TIME_CR, now);
	if (LINUX_S_ISREG(mode) || LINUX_S_ISDIR(mode)) {
		struct ext3_extent_header *eh = (struct ext3_extent_header *)in->i_block;
		in->i_flags |= EXT4_EXTENTS_FL;
		eh->eh_magic = ext2fs_cpu_to_le16(EXT3_EXT_MAGIC);
		eh->eh_max = ext2fs_cpu_to_le16((sizeof(in->i_block) - sizeof(*eh)) /
						sizeof(struct ext3_extent));
	} else if (LINUX_S_ISCHR(mode) || LINUX_S_ISBLK(mode)) {
		unsigned maj = major(rdev), min = minor(rdev);
		in->i_block[1] = (min & 0xff) | (maj << 8) | ((min & ~0xffu) << 12);
	}
	/* write_new_inode zeroes the whole on-disk slot (no stale in-inode xattrs);
	 * the full write then stores nanosecond times. */
	e = ext2fs_write_new_inode(v->fs, ino, (struct ext2_inode *)in);
	int rc = e ? -errcode_to_errno(e) : inode_write_fresh(v, ino, in);
	if (rc)
		return rc;
	ext2fs_inode_alloc_stats2(v->fs, ino, +1, LINUX_S_ISDIR(mode));
	volume_mark_dirty(v);
	*ino_out = ino;
	return 0;
}

static int init_dir_block(struct volume *v, ext2_ino_t ino, ext2_ino_t parent,
			  struct ext2_inode_large *in)
{
	/* The metadata reserve is for extent trees and growing directories, not
	 * for new directories: a full volume says ENOSPC to mkdir. */
	if (volume_blocks_available(v) < 1)
		return -ENOSPC;
	errcode_t e = ext2fs_fallocate(v->fs, EXT2_FALLOCATE_FORCE_INIT, ino,
				       (struct ext2_inode *)in, ~0ULL, 0, 1);
	blk64_t pblk = 0;
	if (!e)
		e = ext2fs_bmap2(v->fs, ino, (struct ext2_inode *)in, NULL, 0, 0, NULL, &pblk);
	char *block = NULL;
	if (!e)
		e = ext2fs_new_dir_block(v->fs, ino, parent, &block);
	if (!e)
		e = ext2fs_write_dir_block4(v->fs, pblk, block, 0, ino);
	if (block)
		ext2fs_free_mem(&block);
	if (e)
		return -errcode_to_errno(e);
	in->i_links_count = 2;
	ext2fs_inode_size_set(v->fs, (struct ext2_inode *)in, v->blocksize);
	return inode_write(v, ino, in);
}

/* Undo of a half-made inode after a later step failed. */
static void discard_inode(struct volume *v, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	if (inode_read(v, ino, &in) == 0)
		inode_free(v, ino, &in);
}

int meta_create(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
		uint32_t rdev, const struct meta_cred *cred, struct meta_attr *out)
{
	int rc = meta_check_name(name);
	if (rc)
		return rc;
	struct ext2_inode_large pin, in;
	ext2_ino_t ino = 0, existing;
	int ftype;
	pthread_mutex_lock(&v->lock);
	rc = volume_refuses_changes(v) ? -EROFS : read_dir_inode(v, parent, &pin);
	if (rc == 0 && pin.i_links_count == 0)
		rc = -ENOENT;
	if (rc == 0) {
		rc = dir_find(v, parent, name, &existing, &ftype);
		rc = rc == 0 ? -EEXIST : rc == -ENOENT ? 0 : rc;
	}
	if (rc == 0)
		rc = inode_lock_writes(v, parent, 0, 0, 0);
	if (rc == 0 && LINUX_S_ISDIR(mode)) {
		struct ext2_inode_large probe = pin;
		rc = dir_links_inc(v, &probe);
	}
	if (rc == 0)
		rc = new_inode(v, parent, &pin, mode, rdev, cred, &ino, &in);
	if (rc == 0) {
		if (LINUX_S_ISDIR(mode)) {
			rc = init_dir_block(v, ino, parent, &in);
			if (rc == -ENOSPC && deferfree_reclaim(v))
				rc = init_dir_block(v, ino, parent, &in);
		}
		if (rc == 0)
			rc = acl_inherit(v, parent, ino, &in);
		if (rc == 0)
			rc = dir_add(v, parent, name, ino, mode_to_ftype(mode));
		if (rc == 0)
			rc = reread_touch_dir(v, parent, LINUX_S_ISDIR(mode) ? +1 : 0);
		if (rc)
			discard_inode(v, ino);
	}
	if (rc == 0 && out)
		inode_to_attr(v, ino, &in, out);
	reply_record(v, rc, ino, in.i_generation);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

int meta_symlink(struct volume *v, ext2_ino_t parent, const char *name, const char *target,
		 const struct meta_cred *cred, struct meta_attr *out)
{
	int rc = meta_check_name(name);
	if (rc)
		return rc;
	size_t tlen = strlen(target);
	if (tlen == 0)
		return -ENOENT;
	struct ext2_inode_large pin, in;
	ext2_ino_t ino = 0, existing;
	int ftype;
	pthread_mutex_lock(&v->lock);
	if (tlen >= v->blocksize)
		rc = -ENAMETOOLONG;
	else
		rc = volume_refuses_changes(v) ? -EROFS : read_dir_inode(v, parent, &pin);
	if (rc == 0) {
		rc = dir_find(v, parent, name, &existing, &ftype);
		rc = rc == 0 ? -EEXIST : rc == -ENOENT ? 0 : rc;
	}
	if (rc == 0)
		rc = inode_lock_writes(v, parent, 0, 0, 0);
	if (rc == 0) {
		errcode_t e = ext2fs_new_inode(v->fs, parent, LINUX_S_IFLNK | 0777, NULL, &ino);
		if (!e)
			e = ext2fs_symlink(v->fs, parent, ino, NULL, (char *)target);
		rc = e ? (e == EXT2_ET_INODE_ALLOC_FAIL || e == EXT2_ET_BLOCK_ALLOC_FAIL ? -ENOSPC
			  : -errcode_to_errno(e)) : 0;
		if (e)
			ino = 0;
	}
	if (rc == 0)
		rc = inode_read(v, ino, &in);
	if (rc == 0) {
		in.i_uid = (uint16_t)cred->uid;
		in.osd2.linux2.l_i_uid_high = (uint16_t)(cred->uid >> 16);
		in.i_gid = (uint16_t)cred->gid;
		in.osd2.linux2.l_i_gid_high = (uint16_t)(cred->gid >> 16);
		inode_set_time(v, &in, TIME_A | TIME_M | TIME_C | TIME_CR, now_ts());
		volume_mark_dirty(v);
		rc = inode_write(v, ino, &in);
	}
	if (rc == 0)
		rc = dir_add(v, parent, name, ino, EXT2_FT_SYMLINK);
	if (rc == 0)
		rc = reread_touch_dir(v, parent, 0);
	if (rc && ino)
		discard_inode(v, ino);
	if (rc == 0 && out)
		inode_to_attr(v, ino, &in, out);
	reply_record(v, rc, ino, in.i_generation);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

int meta_link(struct volume *v, ext2_ino_t ino, ext2_ino_t newparent, const char *newname,
	      struct meta_attr *out)
{
	int rc = meta_check_name(newname);
	if (rc)
		return rc;
	struct ext2_inode_large pin, in;
	ext2_ino_t existing;
	int ftype;
	pthread_mutex_lock(&v->lock);
	rc = volume_refuses_changes(v) ? -EROFS : read_dir_inode(v, newparent, &pin);
	if (rc == 0)
		rc = inode_read(v, ino, &in);
	if (rc == 0 && LINUX_S_ISDIR(in.i_mode))
		rc = -EPERM;
	if (rc == 0 && in.i_links_count == 0)
		rc = -ENOENT;
	if (rc == 0 && in.i_links_count >= LINK_MAX_EXT4)
		rc = -EMLINK;
	if (rc == 0) {
		rc = dir_find(v, newparent, newname, &existing, &ftype);
		rc = rc == 0 ? -EEXIST : rc == -ENOENT ? 0 : rc;
	}
	if (rc == 0)
		rc = inode_lock_writes(v, newparent, ino, 0, 0);
	if (rc == 0)
		rc = dir_add(v, newparent, newname, ino, mode_to_ftype(in.i_mode));
	if (rc == 0) {
		in.i_links_count++;
		inode_set_time(v, &in, TIME_C, now_ts());
		rc = inode_write(v, ino, &in);
	}
	if (rc == 0)
		rc = reread_touch_dir(v, newparent, 0);
	if (rc == 0 && out)
		inode_to_attr(v, ino, &in, out);
	reply_record(v, rc, ino, in.i_generation);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

int meta_unlink(struct volume *v, ext2_ino_t parent, const char *name)
{
	ext2_ino_t ino;
	int ftype;
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	int rc = volume_refuses_changes(v) ? -EROFS : dir_find(v, parent, name, &ino, &ftype);
	if (rc == 0)
		rc = inode_read(v, ino, &in);
	if (rc == 0 && LINUX_S_ISDIR(in.i_mode))
		rc = -EISDIR;
	if (rc == 0)
		rc = inode_lock_writes(v, parent, ino, 0, 0);
	if (rc == 0)
		rc = dir_remove(v, parent, name);
	if (rc == 0)
		rc = reread_touch_dir(v, parent, 0);
	if (rc == 0)
		rc = inode_drop_link(v, ino);
	reply_record(v, rc, 0, 0);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

/* Removes an empty directory's inode once its last name is gone. */
static int free_dir(struct volume *v, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	int rc = inode_read(v, ino, &in);
	if (rc)
		return rc;
	in.i_links_count = 0;
	return inode_free(v, ino, &in);
}

static int check_removable_dir(struct volume *v, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	int empty = 0;
	int rc = inode_read(v, ino, &in);
	if (rc == 0 && !LINUX_S_ISDIR(in.i_mode))
		rc = -ENOTDIR;
	if (rc == 0)
		rc = dir_is_empty(v, ino, &empty);
	if (rc == 0 && !empty)
		rc = -ENOTEMPTY;
	return rc;
}

int meta_rmdir(struct volume *v, ext2_ino_t parent, const char *name)
{
	if (strcmp(name, ".") == 0)
		return -EINVAL;
	if (strcmp(name, "..") == 0)
		return -ENOTEMPTY;
	ext2_ino_t ino;
	int ftype;
	pthread_mutex_lock(&v->lock);
	int rc = volume_refuses_changes(v) ? -EROFS : dir_find(v, parent, name, &ino, &ftype);
	if (rc == 0)
		rc = check_removable_dir(v, ino);
	if (rc == 0)
		rc = inode_lock_writes(v, parent, ino, 0, 0);
	if (rc == 0)
		rc = dir_remove(v, parent, name);
	if (rc == 0)
		rc = reread_touch_dir(v, parent, -1);
	if (rc == 0)
		rc = free_dir(v, ino);
	reply_record(v, rc, 0, 0);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

/* Points a directory's ".." at a new parent ("." and ".." open block 0 in
 * both linear and htree directories, so ".." is always at offset 12). */
static int set_dotdot(struct volume *v, ext2_ino_t dir, ext2_ino_t parent)
{
	struct ext2_inode_large in;
	int rc = inode_read(v, dir, &in);
	if (rc)
		return rc;
	blk64_t pblk;
	errcode_t e = ext2fs_bmap2(v->fs, dir, (struct ext2_inode *)&in, NULL, 0, 0, NULL, &pblk);
	char *buf = malloc(v->blocksize);
	if (!buf)
		return -ENOMEM;
	if (!e)
		e = ext2fs_read_dir_block4(v->fs, pblk, buf, 0, dir);
	if (!e) {
		struct ext2_dir_entry *dd = (struct ext2_dir_entry *)(buf + 12);
		if (ext2fs_dirent_name_len(dd) != 2 || memcmp(dd->name, "..", 2) != 0)
			e = EXT2_ET_DIR_CORRUPTED;
		else
			dd->inode = parent;
	}
	if (!e)
		e = ext2fs_write_dir_block4(v->fs, pblk, buf, 0, dir);
	free(buf);
	return e ? -errcode_to_errno(e) : 0;
}

/* The directory's parent, from ".." at offset 12 of block 0 (linear and
 * htree directories alike). */
static int dir_parent(struct volume *v, ext2_ino_t dir, ext2_ino_t *parent)
{
	struct ext2_inode_large in;
	int rc = inode_read(v, dir, &in);
	if (rc)
		return rc;
	if (!LINUX_S_ISDIR(in.i_mode))
		return -ENOTDIR;
	blk64_t pblk;
	char *buf = malloc(v->blocksize);
	if (!buf)
		return -ENOMEM;
	errcode_t e = ext2fs_bmap2(v->fs, dir, (struct ext2_inode *)&in, NULL, 0, 0, NULL, &pblk);
	if (!e && blocks_invalid(v, pblk, 1))
		e = EXT2_ET_DIR_CORRUPTED;
	if (!e)
		e = ext2fs_read_dir_block4(v->fs, pblk, buf, 0, dir);
	*parent = e ? 0 : ((struct ext2_dir_entry *)(buf + 12))->inode;
	free(buf);
	if (e || *parent == 0)
		return -EIO;
	return dir_entry_check(v, dir, "..", *parent);
}

/* EINVAL if `dir` is `ancestor` or lies below it (a directory cannot move
 * into its own subtree). */
static int check_not_below(struct volume *v, ext2_ino_t dir, ext2_ino_t ancestor)
{
	for (unsigned depth = 0; depth < 4096; depth++) {
		if (dir == ancestor)
			return -EINVAL;
		if (dir == EXT2_ROOT_INO)
			return 0;
		int rc = dir_parent(v, dir, &dir);
		if (rc)
			return rc;
	}
	return -ELOOP;
}

struct rename_ends {
	ext2_ino_t ino;
	int ftype;
	int is_dir;
};

static int rename_exchange(struct volume *v, ext2_ino_t parent, const char *name,
			   ext2_ino_t newparent, const char *newname,
			   const struct rename_ends *src, const struct rename_ends *dst)
{
	int rc = dir_set_entry(v, parent, name, dst->ino, dst->ftype);
	if (rc == 0)
		rc = dir_set_entry(v, newparent, newname, src->ino, src->ftype);
	if (rc == 0 && parent != newparent) {
		if (src->is_dir)
			rc = set_dotdot(v, src->ino, newparent);
		if (rc == 0 && dst->is_dir)
			rc = set_dotdot(v, dst->ino, parent);
		int delta = src->is_dir - dst->is_dir; /* dirs moving from parent to newparent */
		if (rc == 0)
			rc = reread_touch_dir(v, parent, -delta);
		if (rc == 0)
			rc = reread_touch_dir(v, newparent, delta);
	} else if (rc == 0) {
		rc = reread_touch_dir(v, parent, 0);
	}
	return rc;
}

/* whiteout: 0, or the inode the source name is to hold afterwards. */
static int rename_replace(struct volume *v, ext2_ino_t parent, const char *name,
			  ext2_ino_t newparent, const char *newname,
			  const struct rename_ends *src, const struct rename_ends *dst,
			  ext2_ino_t whiteout)
{
	int rc;
	if (dst->ino) {
		if (src->is_dir && !dst->is_dir)
			return -ENOTDIR;
		if (!src->is_dir && dst->is_dir)
			return -EISDIR;
		if (dst->is_dir && (rc = check_removable_dir(v, dst->ino)) != 0)
			return rc;
		rc = dir_set_entry(v, newparent, newname, src->ino, src->ftype);
	} else {
		rc = dir_add(v, newparent, newname, src->ino, src->ftype);
	}
	if (rc == 0)
		rc = whiteout ? dir_set_entry(v, parent, name, whiteout, EXT2_FT_CHRDEV)
			      : dir_remove(v, parent, name);
	if (rc == 0 && src->is_dir && parent != newparent)
		rc = set_dotdot(v, src->ino, newparent);
	int moved = src->is_dir && parent != newparent;
	int replaced_dir = dst->ino && dst->is_dir;
	if (rc == 0)
		rc = reread_touch_dir(v, parent, moved ? -1 : 0);
	if (rc == 0 && parent != newparent)
		rc = reread_touch_dir(v, newparent, (moved ? 1 : 0) - replaced_dir);
	else if (rc == 0 && replaced_dir)
		rc = reread_touch_dir(v, newparent, -1);
	if (rc == 0 && dst->ino)
		rc = dst->is_dir ? free_dir(v, dst->ino) : inode_drop_link(v, dst->ino);
	return rc;
}

static int stamp_ctime(struct volume *v, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	int rc = inode_read(v, ino, &in);
	if (rc)
		return rc;
	inode_set_time(v, &in, TIME_C, now_ts());
	return inode_write(v, ino, &in);
}

/* The whiteout RENAME_WHITEOUT leaves at the source name: made before the
 * rename changes anything, so that a failure (ENOSPC) changes nothing. As
 * in ext4: a character device 0:0, mode 0, owned by the caller (the group
 * of a setgid directory), the directory's default ACL applied. */
static int make_whiteout(struct volume *v, ext2_ino_t parent, const struct meta_cred *cred,
			 ext2_ino_t *ino)
{
	static const struct meta_cred root = { 0, 0, 0 };
	struct ext2_inode_large pin, in;
	int rc = read_dir_inode(v, parent, &pin);
	if (rc == 0)
		rc = new_inode(v, parent, &pin, LINUX_S_IFCHR, 0, cred ? cred : &root, ino, &in);
	if (rc == 0 && (rc = acl_inherit(v, parent, *ino, &in)) != 0)
		discard_inode(v, *ino);
	return rc;
}

int meta_rename(struct volume *v, ext2_ino_t parent, const char *name,
		ext2_ino_t newparent, const char *newname, unsigned flags)
{
	return meta_rename_cred(v, parent, name, newparent, newname, flags, NULL);
}

int meta_rename_cred(struct volume *v, ext2_ino_t parent, const char *name,
		     ext2_ino_t newparent, const char *newname, unsigned flags,
		     const struct meta_cred *cred)
{
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EBUSY;
	int rc = meta_check_name(newname);
	if (rc)
		return rc == -EEXIST ? -EBUSY : rc;
	if ((flags & ~META_RENAME_FLAGS) ||
	    ((flags & META_RENAME_EXCHANGE) && (flags & (META_RENAME_NOREPLACE | META_RENAME_WHITEOUT))))
		return -EINVAL;
	struct rename_ends src = { 0 }, dst = { 0 };
	pthread_mutex_lock(&v->lock);
	rc = volume_refuses_changes(v) ? -EROFS : dir_find(v, parent, name, &src.ino, &src.ftype);
	if (rc == 0) {
		rc = dir_find(v, newparent, newname, &dst.ino, &dst.ftype);
		if (rc == -ENOENT) {
			dst.ino = 0;
			rc = (flags & META_RENAME_EXCHANGE) ? -ENOENT : 0;
		} else if (rc == 0 && (flags & META_RENAME_NOREPLACE)) {
			rc = -EEXIST;
		}
	}
	struct ext2_inode_large in;
	if (rc == 0 && (rc = inode_read(v, src.ino, &in)) == 0)
		src.is_dir = LINUX_S_ISDIR(in.i_mode);
	if (rc == 0 && dst.ino && (rc = inode_read(v, dst.ino, &in)) == 0)
		dst.is_dir = LINUX_S_ISDIR(in.i_mode);
	if (rc == 0 && src.is_dir && parent != newparent)
		rc = check_not_below(v, newparent, src.ino);
	if (rc == 0 && dst.is_dir && parent != newparent && (flags & META_RENAME_EXCHANGE))
		rc = check_not_below(v, parent, dst.ino);
	if (rc == 0 && src.ino == dst.ino) {
		reply_record(v, rc, 0, 0);
		pthread_mutex_unlock(&v->lock);
		return 0; /* two names of one inode: POSIX says do nothing */
	}
	if (rc == 0)
		rc = inode_lock_writes(v, parent, newparent, src.ino, dst.ino);
	ext2_ino_t whiteout = 0;
	if (rc == 0 && (flags & META_RENAME_WHITEOUT))
		rc = make_whiteout(v, parent, cred, &whiteout);
	if (rc == 0)
		rc = (flags & META_RENAME_EXCHANGE)
			? rename_exchange(v, parent, name, newparent, newname, &src, &dst)
			: rename_replace(v, parent, name, newparent, newname, &src, &dst, whiteout);
	if (rc && whiteout && dir_find(v, parent, name, &src.ino, &src.ftype) == 0 && src.ino != whiteout)
		discard_inode(v, whiteout);   /* not linked: the rename failed before the source name changed */
	if (rc == 0)
		rc = stamp_ctime(v, src.ino);
	if (rc == 0 && dst.ino && (flags & META_RENAME_EXCHANGE))
		rc = stamp_ctime(v, dst.ino);
	reply_record(v, rc, 0, 0);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

int meta_readlink(struct volume *v, ext2_ino_t ino, char *buf, size_t size)
{
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	int rc = inode_read(v, ino, &in);
	uint64_t len = EXT2_I_SIZE(&in);
	if (rc == 0 && !LINUX_S_ISLNK(in.i_mode))
		rc = -EINVAL;
	if (rc == 0 && (len >= v->blocksize || len + 1 > size))
		rc = len >= v->blocksize ? -EIO : -ENAMETOOLONG;
	if (rc == 0 && ext2fs_is_fast_symlink((struct ext2_inode *)&in)) {
		memcpy(buf, in.i_block, len);
		buf[len] = 0;
	} else if (rc == 0) {
		blk64_t pblk = 0;
		char *blk = malloc(v->blocksize);
		errcode_t e = blk ? ext2fs_bmap2(v->fs, ino, (struct ext2_inode *)&in, NULL, 0, 0, NULL, &pblk)
				  : EXT2_ET_NO_MEMORY;
		if (!e && pblk == 0)
			e = EXT2_ET_BAD_BLOCK_NUM;
		if (!e)
			e = io_channel_read_blk64(v->fs->io, pblk, 1, blk);
		if (!e) {
			memcpy(buf, blk, len);
			buf[len] = 0;
		}
		free(blk);
		rc = e ? -errcode_to_errno(e) : 0;
	}
	pthread_mutex_unlock(&v->lock);
	return rc;
}
