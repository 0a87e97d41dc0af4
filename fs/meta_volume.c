/* The volume: opening a LUN as a csvfs volume, validation, periodic and explicit
 * sync, statfs, close. */
#include "fs/meta_internal.h"
#include "fs/plock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#define FLUSH_INTERVAL_SEC 5
#define CSVFS_BLOCKSIZE 4096u

void volume_mark_dirty(struct volume *v)
{
	v->dirty = 1;
}

/* Under v->lock: puts the allocation state (bitmaps, group descriptors,
 * superblock) into the metadata cache and takes everything dirty as the next
 * transaction. */
static int commit_begin(struct volume *v, struct journal_txn **txn, uint64_t *wait_id)
{
	*txn = NULL;
	*wait_id = 0;
	if (v->read_only)
		return 0;
	/* Frozen for a snapshot: nothing may reach the LUN, and the journal is
	 * detached; the commit waits for volume_resume (bounded by the freeze). */
	while (v->quiesced)
		pthread_cond_wait(&v->sync_cond, &v->lock);
	if (v->dirty) {
		/* The bitmaps written must show this transaction's frees as free;
		 * the allocator must not see them until it is durable. */
		deferfree_stage(v);
		errcode_t e = ext2fs_write_bitmaps(v->fs);
		if (!e) {
			ext2fs_mark_super_dirty(v->fs);
			e = ext2fs_flush2(v->fs, EXT2_FLAG_FLUSH_NO_SYNC);
		}
		deferfree_unstage(v);
		if (e) {
			csvfs_log(LOG_ERR_L, "sync: writing allocation state failed: %s", error_message(e));
			return -errcode_to_errno(e);
		}
		v->dirty = 0;
	}
	int rc = journal_commit_prepare(v->journal, txn, wait_id);
	if (rc == 0)
		deferfree_tag(v, *wait_id);
	return rc;
}

/* Everything done so far becomes durable. Holding v->lock throughout. */
int volume_sync_locked(struct volume *v)
{
	struct journal_txn *txn;
	uint64_t wait_id;
	int rc = commit_begin(v, &txn, &wait_id);
	return rc ? rc : journal_commit_finish(v->journal, txn, wait_id);
}

/* The same, with v->lock held only while the transaction is taken: other
 * operations go on while it is written. Group commit: one caller at a time
 * (the leader) writes a transaction; callers that arrive meanwhile wait for
 * it, then the first of them takes everything they all changed as the next
 * transaction and the others wait for that one. N concurrent fsyncs cost
 * about two commits, not N. */
int volume_sync(struct volume *v)
{
	pthread_mutex_lock(&v->lock);
	uint64_t entry = v->sync_prepared;
	while (v->sync_busy && v->sync_prepared == entry)
		pthread_cond_wait(&v->sync_cond, &v->lock);
	if (v->sync_prepared > entry) {
		/* A transaction taken after we came holds our changes. */
		uint64_t mine = v->sync_prepared;
		while (v->sync_done < mine)
			pthread_cond_wait(&v->sync_cond, &v->lock);
		/* Transactions finish in order, and a failed one's blocks go
		 * into the next: durable if any at or after ours succeeded. */
		int rc = v->sync_ok_upto >= mine ? 0 : -EIO;
		pthread_mutex_unlock(&v->lock);
		if (rc)
			csvfs_log(LOG_ERR_L, "sync: transaction %llu, which holds these changes, failed",
				  (unsigned long long)mine);
		return rc;
	}
	struct journal_txn *txn;
	uint64_t wait_id;
	v->sync_busy = 1;
	int rc = commit_begin(v, &txn, &wait_id);
	uint64_t mine = ++v->sync_prepared;
	pthread_mutex_unlock(&v->lock);
	if (rc == 0)
		rc = journal_commit_finish(v->journal, txn, wait_id);
	pthread_mutex_lock(&v->lock);
	v->sync_done = mine;
	if (rc == 0)
		v->sync_ok_upto = mine;
	v->sync_busy = 0;
	pthread_cond_broadcast(&v->sync_cond);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

static void *flusher_main(void *arg)
{
	struct volume *v = arg;
	pthread_mutex_lock(&v->flusher_lock);
	while (!v->stopping) {
		struct timespec deadline;
		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_sec += FLUSH_INTERVAL_SEC;
		pthread_cond_timedwait(&v->flusher_cond, &v->flusher_lock, &deadline);
		if (v->stopping)
			break;
		pthread_mutex_unlock(&v->flusher_lock);
		mmp_heartbeat(v);
		volume_sync(v);
		pthread_mutex_lock(&v->flusher_lock);
	}
	pthread_mutex_unlock(&v->flusher_lock);
	return NULL;
}

/* Features whose on-disk forms the engine or data path do not handle. */
static int check_features(struct volume *v, char *err, size_t errlen)
{
	struct ext2_super_block *sb = v->fs->super;
	const char *bad = NULL;
	if (!ext2fs_has_feature_extents(sb))
		bad = "it lacks the extents feature";
	else if (ext2fs_has_feature_inline_data(sb))
		bad = "it uses inline_data";
	else if (ext2fs_has_feature_encrypt(sb))
		bad = "it uses encryption";
	else if (ext2fs_has_feature_casefold(sb))
		bad = "it uses casefolding";
	else if (ext2fs_has_feature_bigalloc(sb))
		bad = "it uses bigalloc";
	else if (ext2fs_has_feature_journal_dev(sb))
		bad = "it is an external journal device";
	else if (v->fs->blocksize != CSVFS_BLOCKSIZE)
		bad = "its block size is not 4096";
	if (!bad)
		return 0;
	snprintf(err, errlen, "LUN %s: volume %s cannot be served: %s", v->lun, v->uuid, bad);
	return -EINVAL;
}

/* A LUN shorter than its filesystem (a truncated image, a shrunk device). */
static int check_lun_size(struct volume *v, char *err, size_t errlen)
{
	uint64_t need = ext2fs_blocks_count(v->fs->super) * (uint64_t)v->fs->blocksize, have = 0;
	struct stat st;
	if (fstat(v->data_fd, &st) != 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(v->data_fd, BLKGETSIZE64, &have) != 0)
			return -errno;
	} else {
		have = (uint64_t)st.st_size;
	}
	if (have >= need)
		return 0;
	snprintf(err, errlen, "LUN %s is shorter (%llu bytes) than volume %s (%llu bytes)", v->lun,
		 (unsigned long long)have, v->uuid, (unsigned long long)need);
	return -EUCLEAN;
}

static int validate_fs(struct volume *v, char *err, size_t errlen)
{
	int rc = check_features(v, err, errlen);
	if (rc)
		return rc;
	errcode_t e = ext2fs_check_desc(v->fs);
	if (e) {
		snprintf(err, errlen, "LUN %s: volume %s: group descriptors are corrupt: %s", v->lun,
			 v->uuid, error_message(e));
		return -EUCLEAN;
	}
	return check_lun_size(v, err, errlen);
}

static int open_error(struct volume *v, errcode_t e, char *err, size_t errlen)
{
	const char *why;
	switch (e) {
	case EXT2_ET_BAD_MAGIC:
		why = "not a csvfs volume (no ext4 superblock)";
		break;
	case EXT2_ET_SB_CSUM_INVALID:
		why = "superblock checksum does not match (corrupt superblock)";
		break;
	case EXT2_ET_GDESC_BAD_BLOCK_MAP:
	case EXT2_ET_GDESC_BAD_INODE_MAP:
	case EXT2_ET_GDESC_BAD_INODE_TABLE:
	case EXT2_ET_BAD_DESC_SIZE:
		why = "group descriptors are corrupt";
		break;
	case EXT2_ET_UNSUPP_FEATURE:
	case EXT2_ET_RO_UNSUPP_FEATURE:
		why = "it uses ext4 features this csvfs does not support";
		break;
	case EXT2_ET_CORRUPT_SUPERBLOCK:
		why = "superblock is corrupt";
		break;
	default:
		why = error_message(e);
	}
	snprintf(err, errlen, "LUN %s: %s", v->lun, why);
	return -EINVAL;
}

/* The journal inode's blocks as runs on the LUN. */
static int journal_map(struct volume *v, struct journal_log_extent **out, size_t *n)
{
	ext2_ino_t jino = v->fs->super->s_journal_inum;
	struct ext2_inode_large in;
	ext2_extent_handle_t h;
	struct ext2fs_extent ex;
	size_t cap = 16;
	*n = 0;
	*out = malloc(cap * sizeof(**out));
	if (!*out || inode_read(v, jino, &in) || !(in.i_flags & EXT4_EXTENTS_FL) ||
	    ext2fs_extent_open2(v->fs, jino, (struct ext2_inode *)&in, &h))
		return -EUCLEAN;
	errcode_t e = ext2fs_extent_get(h, EXT2_EXTENT_ROOT, &ex);
	for (unsigned guard = 0; !e && guard < 1000000; guard++) {
		if ((ex.e_flags & EXT2_EXTENT_FLAGS_LEAF) && !(ex.e_flags & EXT2_EXTENT_FLAGS_SECOND_VISIT)) {
			if (*n == cap) {
				struct journal_log_extent *p = realloc(*out, (cap *= 2) * sizeof(*p));
				if (!p)
					break;
				*out = p;
			}
			(*out)[(*n)++] = (struct journal_log_extent){ (uint32_t)ex.e_lblk, ex.e_pblk, ex.e_len };
		}
		e = ext2fs_extent_get(h, EXT2_EXTENT_NEXT, &ex);
	}
	ext2fs_extent_free(h);
	return e == EXT2_ET_EXTENT_NO_NEXT && *n > 0 ? 0 : -EUCLEAN;
}

static int journal_log_of(struct volume *v, struct journal_log *log, struct journal_log_extent **map)
{
	size_t n;
	int rc = journal_map(v, map, &n);
	*log = (struct journal_log){ .extents = *map, .count = n, .fs_block_size = v->fs->blocksize,
				     .fs_block_count = ext2fs_blocks_count(v->fs->super),
				     .fs_uuid = v->fs->super->s_uuid };
	return rc;
}

/* Replays the journal if it holds committed transactions; the filesystem is
 * then reopened, since libext2fs read the pre-replay superblock. */
static int recover(struct volume *v, int *reopen, char *err, size_t errlen)
{
	struct journal_log log;
	struct journal_log_extent *map = NULL;
	struct journal_recovery rep;
	*reopen = 0;
	int rc = journal_log_of(v, &log, &map);
	if (rc)
		snprintf(err, errlen, "LUN %s: volume %s: the journal inode is unusable", v->lun, v->uuid);
	else
		rc = journal_recover(v->journal, &log, &rep, err, errlen);
	free(map);
	if (rc == 0 && rep.replayed) {
		csvfs_log(LOG_WARN_L, "journal recovery of %s: %s", v->lun, rep.detail);
		*reopen = 1;
	} else if (rc == 0 && ext2fs_has_feature_journal_needs_recovery(v->fs->super)) {
		csvfs_log(LOG_INFO_L, "journal of %s: %s", v->lun, rep.detail);
	}
	return rc;
}

static int open_fs(struct volume *v, char *err, size_t errlen)
{
	int flags = EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP | (v->read_only ? 0 : EXT2_FLAG_RW);
	errcode_t e = ext2fs_open2(journal_channel_name(v->journal), NULL, flags, 0, 0,
				   journal_io_manager(), &v->fs);
	if (e)
		return open_error(v, e, err, errlen);
	uuid_unparse_lower(v->fs->super->s_uuid, v->uuid);
	snprintf(v->label, sizeof(v->label), "%.16s", (const char *)v->fs->super->s_volume_name);
	v->blocksize = v->fs->blocksize;
	csvfs_log_set_context(NULL, v->uuid);
	return 0;
}

/* After MMP says the volume is ours: replay, validate, load bitmaps. */
static int prepare_fs(struct volume *v, char *err, size_t errlen)
{
	int flags = EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP | (v->read_only ? 0 : EXT2_FLAG_RW);
	errcode_t e;
	int reopen = 0;
	if (ext2fs_has_feature_journal(v->fs->super) && v->fs->blocksize == CSVFS_BLOCKSIZE) {
		int rc = recover(v, &reopen, err, errlen);
		if (rc)
			return rc;
	}
	if (reopen) {
		ext2fs_free(v->fs);
		v->fs = NULL;
		e = ext2fs_open2(journal_channel_name(v->journal), NULL, flags, 0, 0,
				 journal_io_manager(), &v->fs);
		if (e)
			return open_error(v, e, err, errlen);
	}
	uuid_unparse_lower(v->fs->super->s_uuid, v->uuid);
	snprintf(v->label, sizeof(v->label), "%.16s", (const char *)v->fs->super->s_volume_name);
	v->blocksize = v->fs->blocksize;
	int rc = check_features(v, err, errlen);
	if (rc)
		return rc;
	e = ext2fs_read_bitmaps(v->fs);
	if (!e)
		deferfree_attach(v);
	if (e) {
		snprintf(err, errlen, "LUN %s: volume %s: reading allocation bitmaps failed: %s",
			 v->lun, v->uuid, error_message(e));
		return -EIO;
	}
	return 0;
}

static void commit_hint(void *arg)
{
	struct volume *v = arg;
	pthread_mutex_lock(&v->flusher_lock);
	pthread_cond_signal(&v->flusher_cond);
	pthread_mutex_unlock(&v->flusher_lock);
}

/* From here on every metadata change reaches the LUN through the journal. */
static int attach_journal(struct volume *v, char *err, size_t errlen)
{
	if (!ext2fs_has_feature_journal(v->fs->super)) {
		csvfs_log(LOG_WARN_L, "volume %s has no journal: metadata is not crash-safe", v->uuid);
		return 0;
	}
	struct journal_log log;
	struct journal_log_extent *map = NULL;
	int rc = journal_log_of(v, &log, &map);
	if (rc)
		snprintf(err, errlen, "LUN %s: volume %s: the journal inode is unusable", v->lun, v->uuid);
	else
		rc = journal_attach(v->journal, &log, commit_hint, v, err, errlen);
	free(map);
	if (rc == 0)
		v->journaled = 1;
	return rc;
}

/* Marks the volume in use (not cleanly unmounted) until volume_close. */
static int mark_mounted(struct volume *v)
{
	struct ext2_super_block *sb = v->fs->super;
	if (!(sb->s_state & EXT2_VALID_FS))
		csvfs_log(LOG_WARN_L, "volume was not cleanly unmounted; run e2fsck -f %s when it is offline",
			  v->lun);
	if (sb->s_state & EXT2_ERROR_FS)
		csvfs_log(LOG_WARN_L, "volume has errors recorded; run e2fsck -f %s when it is offline", v->lun);
	/* As the kernel does: a journaled volume says "replay me" while mounted;
	 * one without a journal says "not clean". */
	if (v->journaled)
		ext2fs_set_feature_journal_needs_recovery(sb);
	else
		sb->s_state &= (uint16_t)~EXT2_VALID_FS;
	sb->s_mnt_count++;
	sb->s_mtime = (uint32_t)time(NULL);
	/* Backup superblocks are only rewritten at close. */
	v->fs->flags |= EXT2_FLAG_MASTER_SB_ONLY;
	ext2fs_mark_super_dirty(v->fs);
	volume_mark_dirty(v);
	/* At a takeover other nodes may still hold orphans open: they are
	 * freed at their last close, or when the reclaim window ends
	 * (volume_end_takeover) with no open left. */
	int rc = v->takeover ? 0 : orphan_process_all(v);
	return rc ? rc : volume_sync_locked(v);
}

int volume_quiesce(struct volume *v, char *err, size_t errlen)
{
	pthread_mutex_lock(&v->lock);
	int rc = v->fs && !v->read_only ? 0 : -EROFS;
	if (rc == 0) {
		v->fs->super->s_state |= EXT2_VALID_FS;
		ext2fs_mark_super_dirty(v->fs);
		volume_mark_dirty(v);
		rc = volume_sync_locked(v);
	}
	if (rc == 0 && v->journaled)
		rc = journal_detach(v->journal);
	int detached = rc == 0;
	if (rc == 0) {
		/* Checkpointed and clean: what the snapshot holds needs no replay. */
		ext2fs_clear_feature_journal_needs_recovery(v->fs->super);
		ext2fs_mark_super_dirty(v->fs);
		volume_mark_dirty(v);
		rc = volume_sync_locked(v);
	}
	if (rc == 0)
		mmp_release(v);
	/* Even if a later step failed: volume_resume attaches the journal again. */
	v->quiesced = detached;
	pthread_mutex_unlock(&v->lock);
	if (rc == 0)
		rc = lun_fdatasync(&v->data_lun);
	if (rc)
		snprintf(err, errlen, "volume %s: making the LUN clean for the snapshot failed: %s",
			 v->uuid, strerror(-rc));
	return rc;
}

int volume_resume(struct volume *v, char *err, size_t errlen)
{
	pthread_mutex_lock(&v->lock);
	int rc = 0, was = v->quiesced;
	if (was && v->journaled) {
		v->journaled = 0;
		rc = attach_journal(v, err, errlen);
		if (rc == 0)
			ext2fs_set_feature_journal_needs_recovery(v->fs->super);
	}
	if (was && rc == 0 && !v->mmp_held)
		rc = mmp_acquire(v, err, errlen);
	v->quiesced = 0;
	pthread_cond_broadcast(&v->sync_cond);
	if (was && rc == 0) {
		ext2fs_mark_super_dirty(v->fs);
		volume_mark_dirty(v);
		rc = volume_sync_locked(v);
		if (rc)
			snprintf(err, errlen, "volume %s: the first commit after the snapshot failed: %s",
				 v->uuid, strerror(-rc));
	}
	pthread_mutex_unlock(&v->lock);
	return rc;
}

/* The node-side part of a volume: the inode table and the LUN opened O_DIRECT
 * for file data. Every node has one; only the coordinator attaches the engine. */
int volume_new(const struct volume_opts *o, struct volume **out, char *err, size_t errlen)
{
	struct volume *v = calloc(1, sizeof(*v));
	if (!v) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	snprintf(v->lun, sizeof(v->lun), "%s", o->lun);
	v->read_only = o->read_only;
	v->errors_continue = o->errors_continue;
	v->cache_bytes = o->cache_bytes;
	v->data_fd = -1;
	v->plocks = plock_table_new();
	v->plocks_mine = plock_table_new();
	if (!v->plocks || !v->plocks_mine) {
		plock_table_free(v->plocks);
		plock_table_free(v->plocks_mine);
		free(v);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->sync_cond, NULL);
	pthread_mutex_init(&v->table_lock, NULL);
	pthread_mutex_init(&v->flusher_lock, NULL);
	pthread_cond_init(&v->flusher_cond, NULL);
	v->nbuckets = 4099;
	v->buckets = calloc(v->nbuckets, sizeof(*v->buckets));
	if (!v->buckets) {
		volume_free(v);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	v->data_fd = open(o->lun, (o->read_only ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC);
	if (v->data_fd < 0) {
		int rc = -errno;
		snprintf(err, errlen, "LUN %s: cannot open for data with O_DIRECT: %s", o->lun,
			 strerror(errno));
		volume_free(v);
		return rc;
	}
	v->data_lun = (struct lun){ v->data_fd, v->lun, csvfs_vlog, NULL };
	*out = v;
	return 0;
}

/* Reads the superblock straight from the LUN: a participant learns the
 * volume's identity without opening the engine (the coordinator owns it). */
int volume_probe(struct volume *v, char *err, size_t errlen)
{
	void *buf;
	if (posix_memalign(&buf, 4096, 4096))
		return -ENOMEM;
	int rc = 0;
	ssize_t n = pread(v->data_fd, buf, 4096, 0);
	struct ext2_super_block *sb = (struct ext2_super_block *)((char *)buf + 1024);
	if (n != 4096) {
		snprintf(err, errlen, "LUN %s: reading the superblock failed: %s", v->lun,
			 n < 0 ? strerror(errno) : "short read");
		rc = -EIO;
	} else if (sb->s_magic != EXT2_SUPER_MAGIC) {
		snprintf(err, errlen, "LUN %s: not a csvfs volume (no ext4 superblock)", v->lun);
		rc = -EINVAL;
	} else if (EXT2_BLOCK_SIZE(sb) != CSVFS_BLOCKSIZE || !ext2fs_has_feature_extents(sb) ||
		   !ext2fs_has_feature_64bit(sb)) {
		snprintf(err, errlen, "LUN %s: volume cannot be served: it is not a csvfs volume "
			 "(4 KiB blocks, 64bit, extents)", v->lun);
		rc = -EINVAL;
	} else {
		uuid_unparse_lower(sb->s_uuid, v->uuid);
		snprintf(v->label, sizeof(v->label), "%.16s", (const char *)sb->s_volume_name);
		v->blocksize = CSVFS_BLOCKSIZE;
	}
	free(buf);
	return rc;
}

/* Opens the metadata engine on this node: journal io layer, libext2fs, MMP,
 * replay, the journal attached, the volume marked in use. With takeover, the
 * previous coordinator is known to be gone (the lock manager granted us its
 * role), so its MMP heartbeat is not waited out, and orphans (files it kept
 * open for other nodes) are left for their last close or the end of the
 * reclaim window (volume_end_takeover). */
int volume_attach_engine(struct volume *v, int takeover, char *err, size_t errlen)
{
	struct journal_config jc = { .lun_path = v->lun, .read_only = v->read_only,
				     .cache_bytes = v->cache_bytes, .log = csvfs_vlog };
	v->takeover = takeover;
	int rc = journal_open(&jc, &v->journal, err, errlen);
	if (rc == 0)
		rc = open_fs(v, err, errlen);
	if (rc == 0)
		rc = validate_fs(v, err, errlen);   /* before anything is written */
	if (rc == 0)
		rc = mmp_acquire(v, err, errlen);
	if (rc == 0)
		rc = prepare_fs(v, err, errlen);
	if (rc == 0)
		rc = sysz_build(v, err, errlen);
	if (rc == 0)
		rc = root_check(v, err, errlen);
	if (rc == 0 && !v->read_only)
		rc = attach_journal(v, err, errlen);
	if (rc == 0 && !v->read_only) {
		pthread_mutex_lock(&v->lock);
		rc = mark_mounted(v);
		pthread_mutex_unlock(&v->lock);
		if (rc)
			snprintf(err, errlen, "LUN %s: volume %s: preparing for use failed: %s", v->lun,
				 v->uuid, strerror(-rc));
	}
	if (rc) {
		volume_detach_engine(v);
		return rc;
	}
	v->opened = 1;
	return 0;
}

int volume_open(const struct volume_opts *o, struct volume **out, char *err, size_t errlen)
{
	struct volume *v;
	int rc = volume_new(o, &v, err, errlen);
	if (rc)
		return rc;
	rc = volume_attach_engine(v, 0, err, errlen);
	if (rc) {
		volume_free(v);
		return rc;
	}
	*out = v;
	return 0;
}

/* Starts background work; after any fork (daemonizing), never before. */
void volume_start(struct volume *v)
{
	pthread_mutex_lock(&v->flusher_lock);
	v->stopping = 0;
	pthread_mutex_unlock(&v->flusher_lock);
	if (v->fs && !v->read_only && !v->flusher_running &&
	    pthread_create(&v->flusher, NULL, flusher_main, v) == 0)
		v->flusher_running = 1;
}

static void stop_flusher(struct volume *v)
{
	if (!v->flusher_running)
		return;
	pthread_mutex_lock(&v->flusher_lock);
	v->stopping = 1;
	pthread_cond_signal(&v->flusher_cond);
	pthread_mutex_unlock(&v->flusher_lock);
	pthread_join(v->flusher, NULL);
	v->flusher_running = 0;
}

/* Clean close of the engine: everything durable, journal clean, MMP released. */
void volume_detach_engine(struct volume *v)
{
	stop_flusher(v);
	if (v->fs) {
		if (v->opened && !v->read_only && (v->fs->flags & EXT2_FLAG_RW)) {
			pthread_mutex_lock(&v->lock);
			/* What is dirty is committed (through the journal, then
			 * marked clean); one plain superblock write after that says
			 * "clean", not a transaction of its own as well: a move
			 * waits for every flush here (its step-down committed
			 * just before, so there is little else). */
			int rc = volume_sync_locked(v);
			if (rc == 0 && v->journaled && (rc = journal_detach(v->journal)) == 0)
				ext2fs_clear_feature_journal_needs_recovery(v->fs->super);
			if (rc == 0) {
				v->fs->super->s_state |= EXT2_VALID_FS;
				v->fs->flags &= ~EXT2_FLAG_MASTER_SB_ONLY;
				ext2fs_mark_super_dirty(v->fs);
				volume_mark_dirty(v);
				rc = volume_sync_locked(v);
			}
			if (rc != 0)
				csvfs_log(LOG_ERR_L, "unmount: final sync failed; the journal will be replayed at the next mount");
			else
				mmp_release(v);
			pthread_mutex_unlock(&v->lock);
		}
		if (!v->opened) {
			mmp_release(v);            /* a failed open writes nothing else */
			ext2fs_free(v->fs);
			v->fs = NULL;
		} else {
			errcode_t e = ext2fs_close_free(&v->fs);
			if (e)
				csvfs_log(LOG_ERR_L, "unmount: closing volume failed: %s", error_message(e));
		}
	}
	if (v->data_fd >= 0)
		lun_fdatasync(&v->data_lun);   /* a failure is logged */
	journal_close(v->journal);
	v->journal = NULL;
	deferfree_destroy(v);
	sysz_free(v);
	reply_table_free(v);
	v->opened = v->journaled = v->mmp_held = v->dirty = 0;
}

/* This node lost the coordinator role while cut off: the new coordinator owns
 * the volume now, so nothing in memory may reach the LUN. Drops the engine
 * without a write (the LUN gate is closed by the caller). */
void volume_abandon_engine(struct volume *v)
{
	stop_flusher(v);
	if (v->fs)
		ext2fs_free(v->fs);
	v->fs = NULL;
	journal_close(v->journal);
	v->journal = NULL;
	deferfree_destroy(v);
	sysz_free(v);
	reply_table_free(v);
	v->opened = v->journaled = v->mmp_held = v->dirty = 0;
}

void volume_free(struct volume *v)
{
	if (!v)
		return;
	if (v->data_fd >= 0)
		close(v->data_fd);
	free(v->buckets);
	pthread_mutex_destroy(&v->lock);
	pthread_cond_destroy(&v->sync_cond);
	pthread_mutex_destroy(&v->table_lock);
	pthread_mutex_destroy(&v->flusher_lock);
	pthread_cond_destroy(&v->flusher_cond);
	plock_table_free(v->plocks);
	plock_table_free(v->plocks_mine);
	free(v->lookup_buf);
	free(v);
}

void volume_close(struct volume *v)
{
	if (!v)
		return;
	volume_detach_engine(v);
	volume_free(v);
}

int meta_statfs(struct volume *v, struct statvfs *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&v->lock);
	struct ext2_super_block *sb = v->fs->super;
	uint64_t blocks = ext2fs_blocks_count(sb);
	uint64_t free_blocks = ext2fs_free_blocks_count(sb);
	uint64_t reserved = ext2fs_r_blocks_count(sb);
	out->f_bsize = v->blocksize;
	out->f_frsize = v->blocksize;
	out->f_blocks = blocks - sb->s_first_data_block;
	out->f_bfree = free_blocks;
	out->f_bavail = free_blocks > reserved ? free_blocks - reserved : 0;
	out->f_files = sb->s_inodes_count;
	out->f_ffree = sb->s_free_inodes_count;
	out->f_favail = sb->s_free_inodes_count;
	out->f_namemax = EXT2_NAME_LEN;
	memcpy(&out->f_fsid, sb->s_uuid, sizeof(out->f_fsid));
	pthread_mutex_unlock(&v->lock);
	return 0;
}
