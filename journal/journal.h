/* journal — the one io layer through which libext2fs reads and writes a csvfs
 * volume's metadata (design.md §3).
 *
 * Every metadata block libext2fs touches goes through the io_manager this module
 * provides. Today the layer is a write-back block cache over the LUN opened
 * O_DIRECT; the JBD2 transaction overlay (issue: journal) slots in here without
 * changing the metadata engine. File data never passes through this layer.
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

/* Writes back every dirty metadata block and makes it durable on the LUN. */
int journal_flush(struct journal *j);

/* Drops cached copies of [block, block+count) (in 4 KiB units of the LUN), for
 * blocks that change hands between metadata and file data. */
void journal_forget(struct journal *j, uint64_t block4k, uint64_t count);

struct journal_stats {
	uint64_t cache_hits, cache_misses, bytes_read, bytes_written, flushes;
};
void journal_get_stats(struct journal *j, struct journal_stats *out);

void journal_close(struct journal *j);

#endif
