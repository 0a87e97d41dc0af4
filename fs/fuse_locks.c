/* The FUSE front end's file locks (fs/fuse_locks.h): translates the
 * kernel's lock requests into fs/locks.h requests. A blocked request is
 * answered later, from the lock waiting thread, so it holds no FUSE worker
 * thread; a signal to the waiting process (FUSE_INTERRUPT) ends it with
 * EINTR, as on a local filesystem. */
#include "fs/fuse_locks.h"
#include "fs/locks.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>

/* The kernel's range (libfuse: l_len 0 = to the end of file) as first..last. */
static int to_plock(const struct flock *fl, ext2_ino_t ino, const struct fuse_file_info *fi,
		    struct plock *out)
{
	if (fl->l_start < 0 || fl->l_len < 0 ||
	    (fl->l_len > 0 && (uint64_t)fl->l_len - 1 > PLOCK_EOF - (uint64_t)fl->l_start))
		return -EINVAL;
	int type = fl->l_type == F_RDLCK ? PLOCK_READ : fl->l_type == F_WRLCK ? PLOCK_WRITE
		 : fl->l_type == F_UNLCK ? PLOCK_UNLOCK : 0;
	if (!type)
		return -EINVAL;
	*out = (struct plock){
		.ino = ino, .kind = PLOCK_POSIX, .type = (uint8_t)type,
		.start = (uint64_t)fl->l_start,
		.end = fl->l_len ? (uint64_t)fl->l_start + (uint64_t)fl->l_len - 1 : PLOCK_EOF,
		.owner = fi->lock_owner, .fh = fi->fh, .pid = (uint32_t)fl->l_pid,
	};
	return 0;
}

void fuse_getlk(fuse_req_t req, struct volume *v, ext2_ino_t ino, struct fuse_file_info *fi,
		struct flock *lock)
{
	struct plock l;
	int rc = to_plock(lock, ino, fi, &l);
	if (rc == 0)
		rc = locks_get(v, &l);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	struct flock out = { .l_whence = SEEK_SET, .l_type = F_UNLCK };
	if (l.type != PLOCK_UNLOCK) {
		out.l_type = l.type == PLOCK_WRITE ? F_WRLCK : F_RDLCK;
		out.l_start = (off_t)l.start;
		out.l_len = l.end == PLOCK_EOF ? 0 : (off_t)(l.end - l.start + 1);
		out.l_pid = (pid_t)l.pid;
	}
	fuse_reply_lock(req, &out);
}

static void blocked_done(void *arg, int rc)
{
	fuse_req_t req = arg;
	fuse_req_interrupt_func(req, NULL, NULL);   /* no interrupt runs after this */
	fuse_reply_err(req, -rc);
}

static void blocked_interrupted(fuse_req_t req, void *data)
{
	(void)req;
	locks_wait_interrupt(data);
}

/* Takes l now, or (sleep) answers once it is granted or interrupted. */
static void set_or_wait(fuse_req_t req, struct volume *v, struct plock *l, int sleep)
{
	int rc = locks_set(v, l);
	if (rc != -EAGAIN || !sleep) {
		fuse_reply_err(req, -rc);
		return;
	}
	struct lock_wait *w = locks_wait_new(v, l, blocked_done, req);
	if (!w) {
		fuse_reply_err(req, ENOLCK);
		return;
	}
	fuse_req_interrupt_func(req, blocked_interrupted, w);
	locks_wait_start(w);
}

void fuse_setlk(fuse_req_t req, struct volume *v, ext2_ino_t ino, struct fuse_file_info *fi,
		struct flock *lock, int sleep)
{
	struct plock l;
	int rc = to_plock(lock, ino, fi, &l);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	set_or_wait(req, v, &l, sleep);
}

/* flock: the whole file, owned by the open file; never against POSIX locks. */
void fuse_flock(fuse_req_t req, struct volume *v, ext2_ino_t ino, struct fuse_file_info *fi, int op)
{
	int how = op & ~LOCK_NB;
	int type = how == LOCK_SH ? PLOCK_READ : how == LOCK_EX ? PLOCK_WRITE
		 : how == LOCK_UN ? PLOCK_UNLOCK : 0;
	if (!type) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	struct plock l = {
		.ino = ino, .kind = PLOCK_FLOCK, .type = (uint8_t)type, .start = 0, .end = PLOCK_EOF,
		.owner = fi->lock_owner, .fh = fi->fh, .pid = (uint32_t)fuse_req_ctx(req)->pid,
	};
	set_or_wait(req, v, &l, !(op & LOCK_NB));
}
