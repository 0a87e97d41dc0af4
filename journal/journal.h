/* journal — the one io layer through which libext2fs reads and writes a csvfs
 * volume's metadata (design.md §3), over the process's one LUN I/O layer.
 *
 * Every metadata block libext2fs touches goes through the io_manager this module
 * provides (iomgr.c): a write-back block cache over the LUN opened O_DIRECT.
 * With the ext4 internal journal attached, each commit takes the dirty blocks
 * as one JBD2 transaction (txn.c, encoded by jbd2_writer.c, replayed by
 * jbd2_replay.c; docs/journal-format.md). File data never passes through the
 * cache; it reaches the LUN, as the cache does, through lun_pread / lun_pwrite
 * (lunio.c, last section), which hold the I/O gate and the test fault hook.
 */
#ifndef CSVFS_JOURNAL_H
#define CSVFS_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <et/com_err.h>
#include <ext2fs/ext2_types.h>
#include <ext2fs/ext2_io.h>

struct journal;

/* A log sink: one line per call, without the trailing newline. */
typedef void (*journal_log_fn)(void *arg, int level, const char *fmt, va_list ap);

struct journal_config {
	const char *lun_path;     /* block device or image file */
	int read_only;
	size_t cache_bytes;       /* metadata block cache; 0 = default (64 MiB) */
	journal_log_fn log;       /* NULL = stderr */
	void *log_arg;
};

/* Opens the LUN with O_DIRECT. Returns 0 or a negative errno, with a message
 * naming the LUN and the cause in err. */
int journal_open(const struct journal_config *cfg, struct journal **out,
		 char *err, size_t errlen);

/* The io_manager and the channel name to hand to ext2fs_open2() so that
 * libext2fs does all its I/O through this journal. */
io_manager journal_io_manager(void);
const char *journal_channel_name(const struct journal *j);

/* Writes back every dirty metadata block and makes it durable on the LUN
 * (with a journal attached: commits them as one transaction). */
int journal_flush(struct journal *j);

/* journal_flush in two steps, so that the caller's metadata lock is held only
 * while the transaction is taken (group commit: operations go on while it is
 * written). prepare runs under the caller's lock and takes the dirty blocks
 * (txn NULL if none); finish makes txn durable, or with txn NULL waits until
 * transaction wait_id is durable and flushes the LUN (the caller's data). */
struct journal_txn;
int journal_commit_prepare(struct journal *j, struct journal_txn **txn, uint64_t *wait_id);
int journal_commit_finish(struct journal *j, struct journal_txn *txn, uint64_t wait_id);
/* The last transaction id that is durable and written home (what a block it
 * freed may be reused after: no home write of it is left to come). Waits for
 * the home writes of a durable transaction still under way. */
uint64_t journal_durable_id(struct journal *j);

/* ---- the JBD2 journal --------------------------------------------------- */

/* Where the journal's blocks are on the LUN: log block `log_block` + i is LUN
 * block `lun_block` + i for i < count (filesystem-block units). */
struct journal_log_extent {
	uint32_t log_block;
	uint64_t lun_block;
	uint32_t count;
};

struct journal_log {
	const struct journal_log_extent *extents;
	size_t count;
	unsigned fs_block_size;        /* must be 4096 */
	uint64_t fs_block_count;
	const uint8_t *fs_uuid;        /* 16 bytes */
};

struct journal_recovery {
	int replayed;                  /* 1 if blocks were written home */
	uint32_t transactions;
	uint64_t blocks;
	char detail[320];              /* what was found, where replay stopped and why */
};

/* Replays committed transactions found in the journal (design.md §3). After a
 * replay every cached block is dropped: the caller reopens the filesystem.
 * Fails (and changes nothing) on a journal that cannot be trusted. */
int journal_recover(struct journal *j, const struct journal_log *log,
		    struct journal_recovery *report, char *err, size_t errlen);

/* From now on every journal_flush() commits the dirty metadata blocks as one
 * JBD2 transaction before any of them is written home. commit_hint is called
 * (under the journal's lock: it must only signal) when enough is dirty that a
 * commit should happen soon. */
int journal_attach(struct journal *j, const struct journal_log *log,
		   void (*commit_hint)(void *arg), void *hint_arg, char *err, size_t errlen);

/* Commits what is dirty, marks the journal clean and returns to plain
 * write-back (for a clean unmount). */
int journal_detach(struct journal *j);

/* Drops cached copies of [block, block+count) (in 4 KiB units of the LUN), for
 * blocks that change hands between metadata and file data. */
void journal_forget(struct journal *j, uint64_t block4k, uint64_t count);

struct journal_stats {
	uint64_t cache_hits, cache_misses, bytes_read, bytes_written, flushes;
};
void journal_get_stats(struct journal *j, struct journal_stats *out);

void journal_close(struct journal *j);

/* ---- LUN I/O (lunio.c) ---------------------------------------------------- */

/* Every LUN read and write of the process goes through lun_pread / lun_pwrite:
 * they pass the I/O gate, the power-cut test hook and one error path, which
 * later path-failure handling and redirected I/O hook into. */

/* A descriptor on the LUN (O_DIRECT: buffers, offsets and lengths aligned)
 * and what a failure is logged with. */
struct lun {
	int fd;
	const char *name;         /* device or image path, for the log */
	journal_log_fn log;       /* NULL = stderr */
	void *log_arg;
};

/* lun_pwrite flags. */
enum {
	LUN_SYNC = 1,             /* fdatasync before the gate is left */
	LUN_NO_FAULT = 2,         /* not a write the power-cut hook counts or drops */
};

/* Transfer all of [off, off+len): 0, or a negative errno after one log line
 * naming the LUN, the offset and the cause. -EIO without a log line: the gate
 * is closed. -ENODATA (read) / -ENOSPC (write): the LUN ends inside the range. */
int lun_pread(const struct lun *l, void *buf, size_t len, uint64_t off);
int lun_pwrite(const struct lun *l, const void *buf, size_t len, uint64_t off, unsigned flags);
/* fdatasync of the LUN: 0, or a negative errno after one log line naming it. */
int lun_fdatasync(const struct lun *l);
/* Cluster mode (design.md §7): from now on every lun_pread, lun_pwrite and
 * lun_fdatasync of the process has a path timeout of timeout_ms, as
 * lun_transfer_timed's — a coordinator's hung path is a failed path too, and
 * no thread of it waits longer for the LUN (a flush then also passes the
 * gate). 0: none (the default; a standalone mount waits as the kernel does). */
void lun_set_path_timeout(unsigned timeout_ms);

/* Which LUN writes of this process a flush covered, so that a commit skips a
 * flush with nothing to make durable: take a mark before a flush of the LUN
 * (all descriptors of the process are on one LUN) and hand it back once the
 * flush succeeded; lun_writes_flushed_all() is 1 when every write ended
 * before such a flush began and none is under way (or given up on). */
uint64_t lun_writes_mark(void);
void lun_writes_flushed(uint64_t mark);
int lun_writes_flushed_all(void);

/* Path failure (design.md §7): 1 when err (a negative errno from the calls
 * above, or a positive errno) says the path to the LUN is gone — EIO, ENXIO,
 * ENODEV, ETIMEDOUT — rather than something about the request. A closed
 * gate's -EIO is also EIO: callers ask only about their own transfers. */
int lun_error_is_path(int err);
/* A probe of the path: reads len bytes at off like lun_pread (the gate, the
 * whole range), but a failure is not logged — the prober of a failed path
 * logs the transition, not each of its tries. */
int lun_probe(const struct lun *l, void *buf, size_t len, uint64_t off, unsigned timeout_ms);
/* lun_pread / lun_pwrite (flags 0) with a path timeout: a transfer not done
 * within timeout_ms is -ETIMEDOUT, after one log line, and is given up on:
 * the path keeps it until it ends it, and the caller's memory is no longer
 * part of it. From a buffer from lun_thread_buffer it runs as an io_uring
 * request from the calling thread, with no copy (unless the thread called
 * lun_thread_use_workers); any other on a worker thread with a buffer of its
 * own, through a copy — as everything where io_uring is not available.
 * timeout_ms 0: the process's default (lun_set_path_timeout), or none. */
int lun_transfer_timed(const struct lun *l, int write, void *buf, size_t len, uint64_t off,
		       unsigned timeout_ms);
/* This thread's transfers go through the worker threads, its own buffer's
 * too: for a thread that may end while its path hangs (the kernel holds a
 * thread's end until the io_uring requests it submitted are done). */
void lun_thread_use_workers(void);
/* This thread's transfer buffer, at least len bytes, page-aligned, kept until
 * the thread ends (a larger len replaces it); NULL if out of memory. The
 * pages of a transfer given up on are replaced under it (same address, same
 * bytes), so it can be used on at once. */
void *lun_thread_buffer(size_t len);
/* How many timed-out transfers the path has not answered yet. */
unsigned lun_abandoned_inflight(void);
/* Called (on the failing thread, with no lock of this layer held) for every
 * logged transfer failure that lun_error_is_path() says means the path: the
 * LUN's name and the negative errno. Set once, before LUN I/O starts;
 * NULL: none. It must not block. */
typedef void (*lun_path_observer_fn)(const char *name, int err);
void lun_set_path_observer(lun_path_observer_fn fn);

/* The I/O gate. PAUSED (quorum lost) holds LUN I/O until the gate opens again
 * or closes; CLOSED (this node lost its right to the LUN) fails it with -EIO. */
enum journal_gate { JOURNAL_GATE_OPEN, JOURNAL_GATE_PAUSED, JOURNAL_GATE_CLOSED };
void journal_gate_set(enum journal_gate state);
enum journal_gate journal_gate_get(void);
/* Waits until no I/O that passed the gate is still in flight. */
void journal_gate_drain(void);

/* Test only: with CSVFS_FAULT_WRITE_LIMIT=N in the environment, every
 * lun_pwrite after the Nth (LUN_NO_FAULT ones aside) is dropped and reported
 * done, a power cut while the process runs on; a normal exit reports how many
 * were issued. */

#endif
