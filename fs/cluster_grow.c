/* Cluster mode: csvctl grow (docs/volumes.md). The LUN grew (a SAN resize,
 * truncate of an image); the filesystem takes the new size while every node
 * keeps running. The coordinator checks that growing moves no block, then
 * its cluster thread steps down with the engine detached (journal clean,
 * MMP released; requests wait as in a move), runs resize2fs on the LUN and
 * takes the role again at once (role_grow, a move to itself). Participants
 * reconnect as after any move; their layouts stay valid, since no block in
 * use moves, and the new size reaches them through statfs. */
#include "fs/cluster_internal.h"
#include "fs/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define GROW_WAIT_MS 120000

static int lun_bytes(const char *lun, uint64_t *out)
{
	int fd = open(lun, O_RDONLY | O_CLOEXEC);
	struct stat st;
	int rc = fd >= 0 && fstat(fd, &st) == 0 ? 0 : -errno;
	if (rc == 0 && S_ISBLK(st.st_mode))
		rc = ioctl(fd, BLKGETSIZE64, out) == 0 ? 0 : -errno;
	else if (rc == 0)
		*out = (uint64_t)st.st_size;
	if (fd >= 0)
		close(fd);
	return rc;
}

/* The engine's geometry, and what the LUN's size allows. A group count that
 * needs more descriptor blocks than the volume has and reserved (resize_inode:
 * mkfs.csvfs reserves them for 1024 times its size) makes resize2fs move the
 * blocks after the descriptors: refused, since participants' layouts point
 * at them. meta_bg needs no room after the descriptors. */
static int grow_plan(struct cluster *c, uint64_t *old_blocks, uint64_t *new_blocks, char *msg, size_t len)
{
	struct volume *v = c->v;
	pthread_mutex_lock(&v->lock);
	if (!v->fs) {
		pthread_mutex_unlock(&v->lock);
		snprintf(msg, len, "volume %s: this node has no engine attached", v->uuid);
		return -EREMCHG;
	}
	struct ext2_super_block *sb = v->fs->super;
	uint64_t blocks = ext2fs_blocks_count(sb), per_group = sb->s_blocks_per_group;
	uint64_t first = sb->s_first_data_block, per_desc_block = EXT2_DESC_PER_BLOCK(sb);
	uint64_t desc_blocks = v->fs->desc_blocks, bs = v->fs->blocksize;
	if (ext2fs_has_feature_resize_inode(sb))
		desc_blocks += sb->s_reserved_gdt_blocks;
	int unbounded = ext2fs_has_feature_meta_bg(sb);
	pthread_mutex_unlock(&v->lock);
	uint64_t bytes = 0;
	int rc = lun_bytes(v->lun, &bytes);
	if (rc) {
		snprintf(msg, len, "volume %s: LUN %s: cannot read its size: %s", v->uuid, v->lun, strerror(-rc));
		return rc;
	}
	uint64_t want = bytes / bs, max = desc_blocks * per_desc_block * per_group + first;
	*old_blocks = blocks;
	*new_blocks = want;
	if (want <= blocks) {
		snprintf(msg, len, "volume %s: LUN %s holds %llu blocks, the volume %llu already: grow the LUN "
			 "first", v->uuid, v->lun, (unsigned long long)want, (unsigned long long)blocks);
		return -EINVAL;
	}
	if (!unbounded && want > max) {
		snprintf(msg, len, "volume %s: growing to %llu blocks needs more group descriptor blocks than its "
			 "%llu, and resize2fs would move blocks in use to make room; it can grow to %llu blocks "
			 "(%.1f GiB) at most", v->uuid, (unsigned long long)want, (unsigned long long)desc_blocks,
			 (unsigned long long)max, max * (double)bs / 1073741824.0);
		return -EFBIG;
	}
	return 0;
}

/* resize2fs -f LUN BLOCKS; its output's end goes to out. */
static int run_resize2fs(const char *lun, uint64_t blocks, char *out, size_t len)
{
	char size[32];
	int p[2];
	snprintf(size, sizeof(size), "%llu", (unsigned long long)blocks);
	if (pipe2(p, O_CLOEXEC) != 0)
		return -errno;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(p[1], 1);
		dup2(p[1], 2);
		/* -f: the engine just detached cleanly, so the last-check rule
		 * (made for volumes mounted since their last e2fsck) is moot. */
		execlp("resize2fs", "resize2fs", "-f", lun, size, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	size_t got = 0;
	char buf[4096];
	ssize_t n;
	while (pid > 0 && (n = read(p[0], buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < n; i++) {
			if (got + 1 >= len) {     /* keep the end */
				memmove(out, out + len / 2, got - len / 2);
				got -= len / 2;
			}
			out[got++] = buf[i] == '\n' ? '|' : buf[i];
		}
	out[got] = 0;
	close(p[0]);
	int st = 0;
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -ECHILD;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

void grow_detached(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	uint64_t blocks = c->grow_blocks;
	pthread_mutex_unlock(&c->mu);
	char out[400] = "";
	uint64_t t0 = cl_now_ms();
	int rc = run_resize2fs(c->v->lun, blocks, out, sizeof(out));
	pthread_mutex_lock(&c->mu);
	c->grow_rc = rc;
	if (rc)
		snprintf(c->grow_msg, sizeof(c->grow_msg), "volume %s: resize2fs failed (the volume keeps its "
			 "size): %s", c->v->uuid, out);
	else
		snprintf(c->grow_msg, sizeof(c->grow_msg), "volume %s grew to %llu blocks (resize2fs took %llu ms)",
			 c->v->uuid, (unsigned long long)blocks, (unsigned long long)(cl_now_ms() - t0));
	c->grow_done++;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	csvfs_log(rc ? LOG_ERR_L : LOG_WARN_L, "%s", c->grow_msg);
}

/* Coordinator: checks, then asks the cluster thread. wait: for the outcome
 * and the role back (not from a rio handler: stepping down waits for the
 * handlers). */
static int coordinator_grow(struct cluster *c, int wait, char *msg, size_t len)
{
	uint64_t from = 0, to = 0;
	if (freeze_snapshot_active(c)) {
		snprintf(msg, len, "volume %s: a snapshot is in progress; grow after it", c->v->uuid);
		return -EBUSY;
	}
	int rc = grow_plan(c, &from, &to, msg, len);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->mu);
	unsigned seq = c->grow_done;
	c->grow_blocks = to;
	c->grow_request = 1;
	c->recheck = 1;
	pthread_cond_broadcast(&c->cv);
	csvfs_log(LOG_WARN_L, "volume %s: growing from %llu to %llu blocks: the coordinator detaches, runs "
		  "resize2fs and takes the role again", c->v->uuid, (unsigned long long)from,
		  (unsigned long long)to);
	snprintf(msg, len, "volume %s: growing from %llu to %llu blocks", c->v->uuid,
		 (unsigned long long)from, (unsigned long long)to);
	struct timespec dl = cl_deadline_in(GROW_WAIT_MS);
	while (wait && c->grow_done == seq && pthread_cond_timedwait(&c->cv, &c->mu, &dl) == 0)
		;
	int done = c->grow_done != seq;
	if (wait && done) {
		rc = c->grow_rc;
		snprintf(msg, len, "%s", c->grow_msg);
	}
	pthread_mutex_unlock(&c->mu);
	if (wait && !done) {
		snprintf(msg, len, "volume %s: the grow did not run within %u s (see this node's log)",
			 c->v->uuid, GROW_WAIT_MS / 1000);
		return -ETIMEDOUT;
	}
	return rc;
}

int grow_served(struct cluster *c, char *msg, size_t len)
{
	if (atomic_load(&c->role) != CL_COORDINATOR) {
		snprintf(msg, len, "this node no longer coordinates volume %s; try again", c->v->uuid);
		return -EREMCHG;
	}
	return coordinator_grow(c, 0, msg, len);
}

int cluster_grow(struct cluster *c, char *msg, size_t len)
{
	if (cluster_in_maintenance(c)) {
		snprintf(msg, len, "volume %s is in maintenance: grow it after 'csvctl maintenance off'", c->v->uuid);
		return -EBUSY;
	}
	if (atomic_load(&c->role) == CL_COORDINATOR)
		return coordinator_grow(c, 1, msg, len);
	/* The coordinator has begun; csvctl then watches the size. */
	return cluster_ask_outcome(c, OP_GROW, CALL_TIMEOUT_MS, msg, len);
}
