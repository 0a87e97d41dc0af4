/* The data path: file data moves between the caller and the LUN with
 * lun_pread / lun_pwrite (journal/lunio.c) on an O_DIRECT descriptor, at the
 * blocks a layout names (ops->map: the engine's own, or the coordinator's).
 * libext2fs never sees file data.
 *
 * Writes into holes allocate unwritten blocks, write the data, then mark the
 * blocks written (design.md §4); overwrites of written blocks are a single
 * lun_pwrite with no metadata change but the in-memory mtime. */
#include "fs/meta.h"
#include "fs/data.h"
#include "fs/ops.h"
#include "fs/iostate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BOUNCE_BYTES (1u << 20)
#define ALIGN 4096u

/* One aligned bounce buffer per FUSE worker thread: lunio's thread buffer,
 * which its transfers with a path timeout use without a copy. */
static char *bounce(void)
{
	/* room for a full chunk plus a partial block at each edge */
	return lun_thread_buffer(BOUNCE_BYTES + 2 * ALIGN);
}

/* Moves len bytes at file block lblk, which extent e maps. The gate, the
 * fault hook and the log line are lunio's. On a participant, a failure that
 * means this node's path is gone — or a transfer the path does not answer
 * within the path timeout: a hung path is a failed path — redirects the node
 * (fs/iostate.h) and the same transfer goes through the coordinator, so the
 * caller sees latency, not an error; while redirected every transfer goes
 * there. Otherwise the caller sees EIO, as from a local disk. A closed gate
 * (this node lost its right to the LUN) is not a path failure. */
static int lun_io(struct volume *v, const struct fs_ops *ops, struct minode *m,
		  const struct meta_extent *e, int write, void *buf, size_t len, uint64_t lblk)
{
	uint64_t pblk = e->pblk + (lblk - e->lblk);
	uint32_t nblk = (uint32_t)(len / v->blocksize);
	if (ops->lun_redirect && iostate_redirected())
		return ops->lun_redirect(v, m, write, buf, lblk, pblk, nblk);
	uint64_t at = pblk * v->blocksize;
	/* A participant's transfer has a path timeout: one its path never
	 * answers is a path failure too, and goes through the coordinator. */
	unsigned timeout_ms = ops->lun_redirect ? iostate_path_timeout_ms() : 0;
	int rc = lun_transfer_timed(&v->data_lun, write, buf, len, at, timeout_ms);
	if (rc == 0)
		return 0;
	if (!ops->lun_redirect || !lun_error_is_path(rc) || journal_gate_get() != JOURNAL_GATE_OPEN)
		return -EIO;
	iostate_path_failed(v->data_lun.name, rc);
	return ops->lun_redirect(v, m, write, buf, lblk, pblk, nblk);
}

ssize_t data_read(struct volume *v, const struct fs_ops *ops, struct minode *m, char *buf,
		  size_t len, uint64_t off)
{
	unsigned bs = v->blocksize;
	char *bb = bounce();
	if (!bb)
		return -ENOMEM;
	pthread_rwlock_rdlock(&m->io_lock);
	int rc = ops->refresh_size(v, m, off + len);
	if (rc) {
		pthread_rwlock_unlock(&m->io_lock);
		return rc;
	}
	uint64_t size = atomic_load(&m->size);
	if (off >= size)
		len = 0;
	else if (len > size - off)
		len = size - off;
	uint64_t pos = off, end = off + len;
	while (pos < end && rc == 0) {
		struct meta_extent e;
		rc = ops->map(v, m, pos / bs, &e);
		if (rc)
			break;
		uint64_t stop = (e.lblk + e.len) * bs;
		if (stop > end)
			stop = end;
		uint64_t span_start = pos - pos % bs;
		if (stop - span_start > BOUNCE_BYTES)
			stop = span_start + BOUNCE_BYTES;
		if (e.state == EXTENT_WRITTEN) {
			uint64_t span_end = (stop + bs - 1) / bs * bs;
			rc = lun_io(v, ops, m, &e, 0, bb, span_end - span_start, span_start / bs);
			if (rc == 0)
				memcpy(buf + (pos - off), bb + (pos - span_start), stop - pos);
		} else {
			memset(buf + (pos - off), 0, stop - pos);
		}
		pos = stop;
	}
	pthread_rwlock_unlock(&m->io_lock);
	return rc ? rc : (ssize_t)len;
}

/* Fills the partial head and tail blocks of [pos, stop) in bb (which maps
 * span_start..) from the LUN; whole blocks are about to be overwritten. */
static int read_edges(struct volume *v, const struct fs_ops *ops, struct minode *m, char *bb,
		      const struct meta_extent *e, uint64_t span_start, uint64_t span_end,
		      uint64_t pos, uint64_t stop)
{
	unsigned bs = v->blocksize;
	int rc = 0;
	if (pos % bs)
		rc = lun_io(v, ops, m, e, 0, bb, bs, span_start / bs);
	uint64_t tail = span_end - bs;
	if (rc == 0 && stop % bs && (tail != span_start || pos % bs == 0))
		rc = lun_io(v, ops, m, e, 0, bb + (tail - span_start), bs, tail / bs);
	return rc;
}

/* Overwrites written blocks: one pwrite; edges read-modify-write under the
 * inode's write lock so concurrent partial writes to one block don't race. */
static int write_written(struct volume *v, const struct fs_ops *ops, struct minode *m,
			 const char *src, uint64_t pos, uint64_t stop, const struct meta_extent *e,
			 char *bb)
{
	unsigned bs = v->blocksize;
	uint64_t span_start = pos - pos % bs, span_end = (stop + bs - 1) / bs * bs;
	int partial = pos % bs || stop % bs;
	if (partial)
		pthread_mutex_lock(&m->write_lock);
	int rc = partial ? read_edges(v, ops, m, bb, e, span_start, span_end, pos, stop) : 0;
	if (rc == 0) {
		memcpy(bb + (pos - span_start), src, stop - pos);
		rc = lun_io(v, ops, m, e, 1, bb, span_end - span_start, span_start / bs);
	}
	if (partial)
		pthread_mutex_unlock(&m->write_lock);
	return rc;
}

/* Writes into a hole or unwritten extent: allocate (unwritten), write the
 * data with zeros around it, then mark the blocks written. Returns how far it
 * got (a concurrent writer may have changed the mapping: the caller loops). */
static int write_allocating(struct volume *v, const struct fs_ops *ops, struct minode *m,
			    const char *src, uint64_t pos, uint64_t end, char *bb, uint64_t *advanced)
{
	unsigned bs = v->blocksize;
	struct meta_extent e;
	*advanced = pos;
	pthread_mutex_lock(&m->write_lock);
	int rc = ops->map(v, m, pos / bs, &e);
	if (rc == 0 && e.state == EXTENT_HOLE) {
		uint64_t want_end = end < (e.lblk + e.len) * bs ? end : (e.lblk + e.len) * bs;
		rc = ops->alloc(v, m, pos / bs, (want_end + bs - 1) / bs - pos / bs);
		if (rc == 0)
			rc = ops->map(v, m, pos / bs, &e);
	}
	if (rc == 0 && e.state == EXTENT_UNWRITTEN) {
		uint64_t stop = (e.lblk + e.len) * bs;
		if (stop > end)
			stop = end;
		uint64_t span_start = pos - pos % bs;
		if (stop - span_start > BOUNCE_BYTES)
			stop = span_start + BOUNCE_BYTES;
		uint64_t span_end = (stop + bs - 1) / bs * bs;
		/* unwritten blocks read as zeros, so the edges are zeros */
		memset(bb, 0, bs);
		memset(bb + (span_end - span_start - bs), 0, bs);
		memcpy(bb + (pos - span_start), src, stop - pos);
		rc = lun_io(v, ops, m, &e, 1, bb, span_end - span_start, span_start / bs);
		/* The commit grows the size to at least stop, never shrinks it. */
		if (rc == 0)
			rc = ops->commit_write(v, m, span_start / bs, (span_end - span_start) / bs, stop);
		if (rc == 0)
			*advanced = stop;
	}
	pthread_mutex_unlock(&m->write_lock);
	return rc;
}

ssize_t data_write(struct volume *v, const struct fs_ops *ops, struct minode *m, const char *buf,
		   size_t len, uint64_t off)
{
	unsigned bs = v->blocksize;
	char *bb = bounce();
	if (!bb)
		return -ENOMEM;
	if (v->read_only)
		return -EROFS;
	int refused = ops->write_check ? ops->write_check(v) : 0;
	if (refused)
		return refused;
	if (off + len < off || (off + len + bs - 1) / bs > (1ull << 32))
		return -EFBIG;
	pthread_rwlock_rdlock(&m->io_lock);
	uint64_t pos = off, end = off + len;
	int rc = ops->refresh_size(v, m, 0), overwrote = 0;
	for (unsigned guard = 0; pos < end && rc == 0 && guard < 100000; guard++) {
		struct meta_extent e;
		rc = ops->map(v, m, pos / bs, &e);
		if (rc)
			break;
		if (e.state != EXTENT_WRITTEN) {
			uint64_t next;
			rc = write_allocating(v, ops, m, buf + (pos - off), pos, end, bb, &next);
			/* A new coordinator lost an allocation we were writing
			 * into (it died before journaling it): map again. */
			if (rc == -ESTALE && guard < 8)
				rc = 0;
			pos = next;
			continue;
		}
		uint64_t stop = (e.lblk + e.len) * bs;
		if (stop > end)
			stop = end;
		if (stop - (pos - pos % bs) > BOUNCE_BYTES)
			stop = pos - pos % bs + BOUNCE_BYTES;
		rc = write_written(v, ops, m, buf + (pos - off), pos, stop, &e, bb);
		overwrote = 1;
		pos = stop;
	}
	if (rc == 0 && overwrote) {
		if (end > atomic_load(&m->size))
			rc = ops->commit_write(v, m, 0, 0, end);
		else
			ops->touch_write(v, m);
	}
	pthread_rwlock_unlock(&m->io_lock);
	if (pos > off && rc)
		return (ssize_t)(pos - off); /* a short write reports what landed */
	return rc ? rc : (ssize_t)len;
}
