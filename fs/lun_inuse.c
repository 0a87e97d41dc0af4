/* Is a LUN in use by this machine's kernel? mkfs.csvfs asks before its first
 * write. A LUN is in use when the kernel has mounted it, or a device mapper /
 * md device sits on it, or anything holds it open exclusively — directly (a
 * block device) or through a loop device whose backing file it is. Symlinks
 * are followed: every comparison is by device number or by (st_dev, st_ino).
 * Another machine's use of a shared LUN shows only through MMP
 * (mmp_check_unheld). */
#include "fs/meta_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* The mount point of block device dev in /proc/self/mountinfo (field 3 is
 * major:minor, field 5 the mount point); 1 if found. */
static int mounted_at(dev_t dev, char *where, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return 0;
	char line[4096];
	int found = 0;
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned maj, min;
		char mnt[2048];
		if (sscanf(line, "%*u %*u %u:%u %*s %2047s", &maj, &min, mnt) == 3 &&
		    makedev(maj, min) == dev) {
			snprintf(where, len, "%s", mnt);
			found = 1;
		}
	}
	fclose(f);
	return found;
}

/* The first holder (dm-0, md0, ...) listed in /sys/dev/block/M:m/holders. */
static int held_by(dev_t dev, char *who, size_t len)
{
	char path[96];
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/holders", major(dev), minor(dev));
	DIR *d = opendir(path);
	if (!d)
		return 0;
	struct dirent *e;
	int found = 0;
	while (!found && (e = readdir(d)))
		if (e->d_name[0] != '.') {
			snprintf(who, len, "%s", e->d_name);
			found = 1;
		}
	closedir(d);
	return found;
}

/* Says why block device dev (named name) is in use, or returns 0. O_EXCL on a
 * block device fails with EBUSY while the kernel has it mounted or claimed. */
static int blockdev_busy(dev_t dev, const char *name, const char *lun, char *err, size_t errlen)
{
	char what[2048];
	const char *via = strcmp(name, lun) ? " through " : "";
	const char *via_name = strcmp(name, lun) ? name : "";
	if (mounted_at(dev, what, sizeof(what))) {
		snprintf(err, errlen, "LUN %s is in use: the kernel has it mounted on %s%s%s", lun, what,
			 via, via_name);
		return -EBUSY;
	}
	if (held_by(dev, what, sizeof(what))) {
		snprintf(err, errlen, "LUN %s is in use: %s is built on it%s%s", lun, what, via, via_name);
		return -EBUSY;
	}
	char node[64];
	snprintf(node, sizeof(node), "/dev/block/%u:%u", major(dev), minor(dev));
	int fd = open(node, O_RDONLY | O_EXCL | O_CLOEXEC);
	if (fd < 0)
		fd = open(name, O_RDONLY | O_EXCL | O_CLOEXEC);
	if (fd < 0 && errno == EBUSY) {
		snprintf(err, errlen, "LUN %s is in use: the kernel holds %s exclusively (mounted in "
			 "another namespace, or claimed by a driver)", lun, name);
		return -EBUSY;
	}
	if (fd >= 0)
		close(fd);
	return 0;
}

/* Whether loop device /sys/block/NAME is backed by the file (dev, ino). */
static int loop_backed_by(const char *name, dev_t dev, ino_t ino, dev_t *loopdev)
{
	char path[300];
	snprintf(path, sizeof(path), "/sys/block/%s/loop/backing_file", name);
	if (access(path, F_OK) != 0)
		return 0;   /* not bound to a file */
	snprintf(path, sizeof(path), "/dev/%s", name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	struct loop_info64 info;
	struct stat st;
	int match = ioctl(fd, LOOP_GET_STATUS64, &info) == 0 && fstat(fd, &st) == 0 &&
		    info.lo_device == (uint64_t)dev && info.lo_inode == (uint64_t)ino;
	if (match)
		*loopdev = st.st_rdev;
	close(fd);
	return match;
}

/* A busy loop device over the image file with identity st. */
static int image_busy(const struct stat *st, const char *lun, char *err, size_t errlen)
{
	DIR *d = opendir("/sys/block");
	if (!d)
		return 0;
	struct dirent *e;
	int rc = 0;
	while (rc == 0 && (e = readdir(d))) {
		dev_t loopdev;
		if (strncmp(e->d_name, "loop", 4) != 0 ||
		    !loop_backed_by(e->d_name, st->st_dev, st->st_ino, &loopdev))
			continue;
		char name[300];
		snprintf(name, sizeof(name), "/dev/%s", e->d_name);
		rc = blockdev_busy(loopdev, name, lun, err, errlen);
	}
	closedir(d);
	return rc;
}

int lun_check_kernel_unused(const char *lun, char *err, size_t errlen)
{
	struct stat st;
	if (stat(lun, &st) != 0)
		return 0;   /* opening it reports that */
	if (S_ISBLK(st.st_mode))
		return blockdev_busy(st.st_rdev, lun, lun, err, errlen);
	if (S_ISREG(st.st_mode))
		return image_busy(&st, lun, err, errlen);
	return 0;
}
