/* Multi-mount protection: while csvfs serves a volume, the ext4 MMP block is
 * held in the "fsck" state with a heartbeat in mmp_time, so the kernel's ext4
 * and e2fsck refuse the volume; a clean unmount releases it. The block is read
 * and written with O_DIRECT on the data descriptor, by lun_pread / lun_pwrite
 * (never through the metadata cache: other nodes' and tools' writes must be
 * seen). */
#include "fs/meta_internal.h"
#include "fs/csvfs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#define CSVFS_MMP_TAG "csvfs"
#define MMP_MIN_INTERVAL 1u
#define MMP_MAX_INTERVAL 60u

static unsigned mmp_interval(struct volume *v)
{
	unsigned i = v->fs->super->s_mmp_update_interval;
	return i < MMP_MIN_INTERVAL ? 5 : i > MMP_MAX_INTERVAL ? MMP_MAX_INTERVAL : i;
}

/* The heartbeat is durable before the gate is left (a drain waits for it),
 * and the power-cut hook leaves it alone: it is no workload write, and
 * counting it would make where a test's cut lands depend on timing. */
static int mmp_io(struct volume *v, int write, struct mmp_struct *mmp)
{
	blk64_t blk = v->fs->super->s_mmp_block;
	if (blk < v->fs->super->s_first_data_block || blk >= ext2fs_blocks_count(v->fs->super))
		return -EUCLEAN;
	uint64_t at = blk * v->blocksize;
	int rc = write ? lun_pwrite(&v->data_lun, mmp, v->blocksize, at, LUN_SYNC | LUN_NO_FAULT)
		       : lun_pread(&v->data_lun, mmp, v->blocksize, at);
	return rc ? -EIO : 0;
}

/* MMP blocks are little-endian on disk; so is every machine csvfs runs on. */
static int mmp_read(struct volume *v, struct mmp_struct *mmp)
{
	int rc = mmp_io(v, 0, mmp);
	if (rc)
		return rc;
	if (mmp->mmp_magic != EXT4_MMP_MAGIC || !ext2fs_mmp_csum_verify(v->fs, mmp))
		return -EUCLEAN;
	return 0;
}

static int mmp_write(struct volume *v, struct mmp_struct *mmp, uint32_t seq)
{
	char host[64] = "";
	gethostname(host, sizeof(host) - 1);
	mmp->mmp_magic = EXT4_MMP_MAGIC;
	mmp->mmp_seq = seq;
	mmp->mmp_time = (uint64_t)time(NULL);
	memset(mmp->mmp_nodename, 0, sizeof(mmp->mmp_nodename));
	memcpy(mmp->mmp_nodename, host, strnlen(host, sizeof(mmp->mmp_nodename)));
	memset(mmp->mmp_bdevname, 0, sizeof(mmp->mmp_bdevname));
	memcpy(mmp->mmp_bdevname, CSVFS_MMP_TAG, sizeof(CSVFS_MMP_TAG) - 1);
	mmp->mmp_check_interval = (uint16_t)mmp_interval(v);
	ext2fs_mmp_csum_set(v->fs, mmp);
	return mmp_io(v, 1, mmp);
}

static int held_by_csvfs(const struct mmp_struct *mmp)
{
	return memcmp(mmp->mmp_bdevname, CSVFS_MMP_TAG, sizeof(CSVFS_MMP_TAG) - 1) == 0;
}

static const char *holder_kind(const struct mmp_struct *mmp)
{
	return held_by_csvfs(mmp) ? "csvfs" : "another system (kernel ext4)";
}

/* A holder's heartbeat moved between two reads (csvfs moves mmp_time, the
 * kernel mmp_seq and mmp_time). */
static int heartbeat_moved(const struct mmp_struct *before, const struct mmp_struct *after)
{
	return after->mmp_seq != before->mmp_seq || after->mmp_time != before->mmp_time;
}

/* Decides whether the current holder is alive: its heartbeat (csvfs: mmp_time;
 * the kernel: mmp_seq) must move within two intervals. */
static int holder_alive(struct volume *v, const struct mmp_struct *seen, int *alive)
{
	unsigned interval = mmp_interval(v);
	if (v->takeover && held_by_csvfs(seen)) {
		/* The lock manager gave us the coordinator role: the previous
		 * holder left the cluster or was fenced, so it writes no more. */
		*alive = 0;
		return 0;
	}
	if (held_by_csvfs(seen) && (uint64_t)time(NULL) > seen->mmp_time + 4ull * interval) {
		*alive = 0;   /* heartbeat long stale: no wait needed */
		return 0;
	}
	csvfs_log(LOG_INFO_L, "MMP: volume was not released by %.64s; waiting %u s for its heartbeat",
		  (const char *)seen->mmp_nodename, 2 * interval + 1);
	sleep(2 * interval + 1);
	struct mmp_struct *now;
	if (posix_memalign((void **)&now, 4096, v->blocksize))
		return -ENOMEM;
	int rc = mmp_read(v, now);
	if (rc == 0)
		*alive = heartbeat_moved(seen, now);
	free(now);
	return rc;
}

int mmp_acquire(struct volume *v, char *err, size_t errlen)
{
	if (!ext2fs_has_feature_mmp(v->fs->super) || v->read_only)
		return 0;
	struct mmp_struct *mmp;
	if (posix_memalign((void **)&mmp, 4096, v->blocksize))
		return -ENOMEM;
	int rc = mmp_read(v, mmp), alive = 0;
	if (rc) {
		snprintf(err, errlen, "LUN %s: volume %s: MMP block unreadable or corrupt", v->lun, v->uuid);
	} else if (mmp->mmp_seq == EXT4_MMP_SEQ_FSCK && !held_by_csvfs(mmp)) {
		snprintf(err, errlen, "LUN %s: volume %s is being checked by e2fsck on %.64s", v->lun,
			 v->uuid, (const char *)mmp->mmp_nodename);
		rc = -EBUSY;
	} else if (mmp->mmp_seq != EXT4_MMP_SEQ_CLEAN) {
		rc = holder_alive(v, mmp, &alive);
		if (rc == 0 && alive) {
			snprintf(err, errlen, "LUN %s: volume %s is in use by %s on %.64s", v->lun, v->uuid,
				 holder_kind(mmp),
				 (const char *)mmp->mmp_nodename);
			rc = -EBUSY;
		} else if (rc == 0) {
			csvfs_log(LOG_WARN_L, "MMP: previous holder %.64s is gone; taking the volume over",
				  (const char *)mmp->mmp_nodename);
		}
	}
	if (rc == 0 && (rc = mmp_write(v, mmp, EXT4_MMP_SEQ_FSCK)) != 0)
		snprintf(err, errlen, "LUN %s: volume %s: writing the MMP block failed", v->lun, v->uuid);
	if (rc == 0)
		v->mmp_held = 1;
	free(mmp);
	return rc;
}

void mmp_heartbeat(struct volume *v)
{
	if (!v->mmp_held)
		return;
	struct mmp_struct *mmp;
	if (posix_memalign((void **)&mmp, 4096, v->blocksize))
		return;
	memset(mmp, 0, v->blocksize);
	if (mmp_write(v, mmp, EXT4_MMP_SEQ_FSCK) != 0)
		csvfs_log(LOG_ERR_L, "MMP: heartbeat write failed");
	free(mmp);
}

void mmp_release(struct volume *v)
{
	if (!v->mmp_held)
		return;
	struct mmp_struct *mmp;
	if (posix_memalign((void **)&mmp, 4096, v->blocksize))
		return;
	memset(mmp, 0, v->blocksize);
	if (mmp_write(v, mmp, EXT4_MMP_SEQ_CLEAN) != 0)
		csvfs_log(LOG_ERR_L, "MMP: releasing the volume failed; the next mount will wait out the heartbeat");
	v->mmp_held = 0;
	free(mmp);
}

/* ---- a LUN no daemon here has open (csvctl fsck) ----------------------------- */

static int lun_open_skip_mmp(const char *lun, int flags, ext2_filsys *fs, char *err, size_t errlen)
{
	errcode_t e = ext2fs_open(lun, flags | EXT2_FLAG_SKIP_MMP | EXT2_FLAG_64BITS, 0, 0, unix_io_manager, fs);
	if (e) {
		snprintf(err, errlen, "LUN %s: not a readable ext4/csvfs volume: %s", lun, error_message(e));
		return -EINVAL;
	}
	return 0;
}

int csvfs_lun_mmp(const char *lun, struct csvfs_lun_mmp *out, char *err, size_t errlen)
{
	ext2_filsys fs;
	memset(out, 0, sizeof(*out));
	int rc = lun_open_skip_mmp(lun, 0, &fs, err, errlen);
	if (rc)
		return rc;
	uuid_unparse(fs->super->s_uuid, out->guid);
	out->has_mmp = ext2fs_has_feature_mmp(fs->super);
	out->clean = 1;
	if (out->has_mmp) {
		struct mmp_struct *mmp = NULL;
		errcode_t e = posix_memalign((void **)&mmp, 4096, fs->blocksize) ? EXT2_ET_NO_MEMORY
			      : ext2fs_mmp_read(fs, fs->super->s_mmp_block, mmp);
		if (e) {
			snprintf(err, errlen, "LUN %s: volume %s: MMP block unreadable: %s", lun, out->guid,
				 error_message(e));
			free(mmp);
			ext2fs_close_free(&fs);
			return -EIO;
		}
		out->clean = mmp->mmp_seq == EXT4_MMP_SEQ_CLEAN;
		out->by_csvfs = held_by_csvfs(mmp);
		snprintf(out->holder, sizeof(out->holder), "%.64s", (const char *)mmp->mmp_nodename);
		free(mmp);
	}
	ext2fs_close_free(&fs);
	return 0;
}

int csvfs_lun_mmp_clear(const char *lun, char *err, size_t errlen)
{
	ext2_filsys fs;
	int rc = lun_open_skip_mmp(lun, EXT2_FLAG_RW, &fs, err, errlen);
	if (rc)
		return rc;
	errcode_t e = ext2fs_mmp_clear(fs);
	if (e) {
		snprintf(err, errlen, "LUN %s: clearing the MMP block failed: %s", lun, error_message(e));
		rc = -EIO;
	}
	e = ext2fs_close_free(&fs);
	if (e && !rc) {
		snprintf(err, errlen, "LUN %s: closing after clearing MMP failed: %s", lun, error_message(e));
		rc = -EIO;
	}
	return rc;
}

/* ---- for mkfs: is the filesystem on a LUN held through MMP? ----
 * Read-only, like the first half of ext2fs_mmp_start (which then writes its
 * own sequence: mkfs must write nothing before it knows the LUN is free). */

/* Reads the MMP block of the ext4 filesystem at the start of the LUN, if it
 * has one and it is valid: 1 = read, 0 = nothing to honour. */
static int mmp_read_raw(const char *lun, struct ext2_super_block *sb, struct mmp_struct *mmp)
{
	int fd = open(lun, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		return 0;
	struct stat st;
	uint64_t bytes = 0;
	if (fstat(fd, &st) == 0)
		bytes = (uint64_t)st.st_size;
	if (S_ISBLK(st.st_mode) && ioctl(fd, BLKGETSIZE64, &bytes) != 0)
		bytes = 0;
	int found = 0;
	char *buf;
	if (posix_memalign((void **)&buf, 4096, 65536) == 0) {
		/* the superblock sits at 1024 inside the first 4 KiB */
		if (pread(fd, buf, 4096, 0) == 4096) {
			memcpy(sb, buf + 1024, sizeof(*sb));
			unsigned bs = sb->s_log_block_size <= 6 ? 1024u << sb->s_log_block_size : 0;
			uint64_t at = (uint64_t)sb->s_mmp_block * bs;
			found = sb->s_magic == EXT2_SUPER_MAGIC && ext2fs_has_feature_mmp(sb) && bs &&
				at && at + bs <= bytes && pread(fd, buf, bs, (off_t)at) == (ssize_t)bs;
			if (found) {
				memcpy(mmp, buf, sizeof(*mmp));
				found = mmp->mmp_magic == EXT4_MMP_MAGIC;
			}
		}
		free(buf);
	}
	close(fd);
	return found;
}

int mmp_check_unheld(const char *lun, char *err, size_t errlen)
{
	struct ext2_super_block sb;
	struct mmp_struct seen, now;
	if (!mmp_read_raw(lun, &sb, &seen) || seen.mmp_seq == EXT4_MMP_SEQ_CLEAN)
		return 0;
	if (seen.mmp_seq == EXT4_MMP_SEQ_FSCK && !held_by_csvfs(&seen)) {
		snprintf(err, errlen, "LUN %s is in use: e2fsck on %.64s is checking it (if that e2fsck "
			 "is gone: tune2fs -f -E clear_mmp %s)", lun, (const char *)seen.mmp_nodename, lun);
		return -EBUSY;
	}
	/* ext2fs_mmp_start's wait: twice the longer of the two intervals, and a second */
	unsigned interval = sb.s_mmp_update_interval > seen.mmp_check_interval ? sb.s_mmp_update_interval
									      : seen.mmp_check_interval;
	interval = interval < EXT4_MMP_MIN_CHECK_INTERVAL ? EXT4_MMP_MIN_CHECK_INTERVAL
		 : interval > MMP_MAX_INTERVAL ? MMP_MAX_INTERVAL : interval;
	int64_t age = (int64_t)time(NULL) - (int64_t)seen.mmp_time;
	int alive = age >= -(int64_t)interval && age <= 2 * (int64_t)interval;
	if (!alive) {
		fprintf(stderr, "mkfs: LUN %s: MMP says %s on %.64s holds it; waiting %u s for its heartbeat\n",
			lun, holder_kind(&seen), (const char *)seen.mmp_nodename, 2 * interval + 1);
		sleep(2 * interval + 1);
		if (!mmp_read_raw(lun, &sb, &now) || now.mmp_seq == EXT4_MMP_SEQ_CLEAN)
			return 0;   /* released meanwhile */
		alive = heartbeat_moved(&seen, &now);
		age = (int64_t)time(NULL) - (int64_t)now.mmp_time;
		seen = now;
	}
	if (!alive)
		return 0;
	snprintf(err, errlen, "LUN %s is in use: %s on %.64s holds it (MMP heartbeat %lld s ago)", lun,
		 holder_kind(&seen), (const char *)seen.mmp_nodename, (long long)(age < 0 ? 0 : age));
	return -EBUSY;
}
