/* The metadata io_manager: libext2fs's only path to the LUN.
 *
 * Blocks are cached in 4 KiB units (the LUN's O_DIRECT alignment) and written
 * back: a metadata change stays in memory until journal_flush() (sync, fsync,
 * the periodic flusher) or until its entry is evicted. With the journal
 * attached, the dirty blocks become a transaction's blocks (txn.c).
 * One mutex guards the cache: libext2fs calls arrive under the metadata
 * engine's lock, but flush and stats may come from other threads.
 */
#include "journal/journal.h"
#include "journal/jinternal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ext2fs/ext2fs.h>

#define DEFAULT_CACHE_BYTES (64u << 20)

void jlog(struct journal *j, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (j->log) {
		j->log(j->log_arg, level, fmt, ap);
	} else {
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
}

/* ---- cache ------------------------------------------------------------ */

static size_t bucket_of(const struct journal *j, uint64_t unit)
{
	return (size_t)((unit * 0x9E3779B97F4A7C15ull) >> 20) & (j->nbuckets - 1);
}

static void lru_unlink(struct cache_entry *e)
{
	e->lru_prev->lru_next = e->lru_next;
	e->lru_next->lru_prev = e->lru_prev;
}

static void lru_push_front(struct journal *j, struct cache_entry *e)
{
	e->lru_next = j->lru.lru_next;
	e->lru_prev = &j->lru;
	j->lru.lru_next->lru_prev = e;
	j->lru.lru_next = e;
}

void mark_clean(struct journal *j, struct cache_entry *e)
{
	if (!e->dirty)
		return;
	e->dirty_prev->dirty_next = e->dirty_next;
	e->dirty_next->dirty_prev = e->dirty_prev;
	e->dirty = 0;
	j->ndirty--;
}

void mark_dirty(struct journal *j, struct cache_entry *e)
{
	if (e->dirty)
		return;
	e->dirty_next = j->dirty.dirty_next;
	e->dirty_prev = &j->dirty;
	j->dirty.dirty_next->dirty_prev = e;
	j->dirty.dirty_next = e;
	e->dirty = 1;
	j->ndirty++;
}

struct cache_entry *cache_find(struct journal *j, uint64_t unit)
{
	struct cache_entry *e = j->buckets[bucket_of(j, unit)];
	while (e && (e->unit != unit || e->forget_on_unpin))
		e = e->hash_next;
	if (e) {
		lru_unlink(e);
		lru_push_front(j, e);
	}
	return e;
}

static void cache_remove(struct journal *j, struct cache_entry *e)
{
	struct cache_entry **pp = &j->buckets[bucket_of(j, e->unit)];
	while (*pp != e)
		pp = &(*pp)->hash_next;
	*pp = e->hash_next;
	lru_unlink(e);
	mark_clean(j, e);
	j->nentries--;
}

/* The entry to reuse when the cache is full: the least recently used one. A
 * journaled cache never evicts a dirty block (it belongs to the running
 * transaction and must not reach its home before the commit): it grows past
 * its capacity until the next commit instead. */
static struct cache_entry *victim(struct journal *j)
{
	struct cache_entry *e = j->lru.lru_prev;
	for (unsigned n = 0; e != &j->lru && n < 256; n++, e = e->lru_prev) {
		if (e->pinned)
			continue;
		if (!e->dirty)
			return e;
		if (!j->attached)
			return lun_write_units(j, e->unit, 1, e->data) == 0 ? e : NULL;
	}
	return NULL;
}

/* Stores a copy of one unit. Returns the entry, or NULL when no memory could
 * be had. */
static struct cache_entry *cache_store(struct journal *j, uint64_t unit, const void *data)
{
	struct cache_entry *e = cache_find(j, unit);
	if (!e) {
		if (j->nentries >= j->capacity && (e = victim(j)) != NULL) {
			cache_remove(j, e);
		} else {
			e = calloc(1, sizeof(*e));
			if (!e || posix_memalign((void **)&e->data, UNIT, UNIT)) {
				free(e);
				return NULL;
			}
		}
		e->unit = unit;
		size_t b = bucket_of(j, unit);
		e->hash_next = j->buckets[b];
		j->buckets[b] = e;
		lru_push_front(j, e);
		j->nentries++;
	}
	memcpy(e->data, data, UNIT);
	return e;
}

void cache_drop_all(struct journal *j)
{
	while (j->lru.lru_next != &j->lru) {
		struct cache_entry *e = j->lru.lru_next;
		cache_remove(j, e);
		free(e->data);
		free(e);
	}
}

/* ---- raw LUN access (aligned) ---------------------------------------- */

/* Gate, fault hook and the log line are lunio.c's; only the errcode
 * libext2fs expects and the counters are added here. */
errcode_t lun_read_units(struct journal *j, uint64_t unit, unsigned n, void *buf)
{
	size_t len = (size_t)n * UNIT;
	int rc = lun_pread(&j->lun, buf, len, unit * UNIT);
	if (rc == -ENODATA)
		return EXT2_ET_SHORT_READ;  /* the LUN is shorter than the volume */
	if (rc)
		return -rc;
	j->stats.bytes_read += len;
	return 0;
}

errcode_t lun_write_units(struct journal *j, uint64_t unit, unsigned n, const void *buf)
{
	size_t len = (size_t)n * UNIT;
	int rc = lun_pwrite(&j->lun, buf, len, unit * UNIT, 0);
	if (rc)
		return -rc;
	j->stats.bytes_written += len;
	return 0;
}

/* Makes units [unit, unit+n) available: from the cache, else one LUN read per
 * run of misses. Calls back with each unit's bytes. */
static errcode_t read_units(struct journal *j, uint64_t unit, uint64_t n,
			    void (*use)(void *arg, uint64_t unit, const unsigned char *data),
			    void *arg)
{
	uint64_t u = unit, end = unit + n;
	while (u < end) {
		struct cache_entry *e = cache_find(j, u);
		if (e) {
			j->stats.cache_hits++;
			use(arg, u, e->data);
			u++;
			continue;
		}
		unsigned run = 1;
		while (u + run < end && run < MAX_RUN_UNITS && !cache_find(j, u + run))
			run++;
		j->stats.cache_misses += run;
		errcode_t err = lun_read_units(j, u, run, j->bounce);
		if (err)
			return err;
		for (unsigned i = 0; i < run; i++) {
			cache_store(j, u + i, j->bounce + (size_t)i * UNIT);
			use(arg, u + i, j->bounce + (size_t)i * UNIT);
		}
		u += run;
	}
	return 0;
}

struct byte_range {
	uint64_t off;       /* byte offset on the LUN */
	size_t len;
	unsigned char *buf; /* caller's buffer */
};

static void copy_out(void *arg, uint64_t unit, const unsigned char *data)
{
	struct byte_range *r = arg;
	uint64_t ustart = unit * UNIT, uend = ustart + UNIT;
	uint64_t s = r->off > ustart ? r->off : ustart;
	uint64_t e = r->off + r->len < uend ? r->off + r->len : uend;
	memcpy(r->buf + (s - r->off), data + (s - ustart), e - s);
}

static errcode_t read_bytes(struct journal *j, uint64_t off, size_t len, void *buf)
{
	struct byte_range r = { off, len, buf };
	uint64_t first = off / UNIT, last = (off + len - 1) / UNIT;
	return read_units(j, first, last - first + 1, copy_out, &r);
}

/* Keeps a unit's new content dirty in the cache, or writes it through when
 * the cache cannot hold it. */
static errcode_t store_dirty(struct journal *j, uint64_t unit, const void *data)
{
	struct cache_entry *same = cache_find(j, unit);
	if (same && memcmp(same->data, data, UNIT) == 0)
		return 0;  /* libext2fs rewrites unchanged bitmaps and descriptors */
	struct cache_entry *c = cache_store(j, unit, data);
	if (c) {
		mark_dirty(j, c);
		if (j->attached && j->ndirty >= j->commit_threshold && j->commit_hint)
			j->commit_hint(j->commit_hint_arg);
		return 0;
	}
	/* Only an unjournaled cache may write a block home outside a commit. */
	if (j->attached)
		return EXT2_ET_NO_MEMORY;
	if (data != j->bounce)
		memmove(j->bounce, data, UNIT);   /* O_DIRECT wants an aligned buffer */
	return lun_write_units(j, unit, 1, j->bounce);
}

/* Writes one unit's new content: the caller's bytes over the old content. */
static errcode_t write_unit(struct journal *j, uint64_t unit, const struct byte_range *r)
{
	uint64_t ustart = unit * UNIT, uend = ustart + UNIT;
	uint64_t s = r->off > ustart ? r->off : ustart;
	uint64_t e = r->off + r->len < uend ? r->off + r->len : uend;
	unsigned char *tmp = j->bounce;
	if (s != ustart || e != uend) {
		struct cache_entry *c = cache_find(j, unit);
		if (c) {
			memcpy(tmp, c->data, UNIT);
		} else {
			errcode_t err = lun_read_units(j, unit, 1, tmp);
			if (err)
				return err;
		}
	}
	memcpy(tmp + (s - ustart), r->buf + (s - r->off), e - s);
	return store_dirty(j, unit, tmp);
}

static errcode_t write_bytes(struct journal *j, uint64_t off, size_t len, const void *buf)
{
	if (j->read_only)
		return EXT2_ET_RO_FILSYS;
	struct byte_range r = { off, len, (unsigned char *)buf };
	uint64_t first = off / UNIT, last = (off + len - 1) / UNIT;
	uint64_t u = first;
	/* Whole aligned units go out in runs; partial head/tail units are merged. */
	while (u <= last) {
		uint64_t ustart = u * UNIT;
		int whole = ustart >= off && ustart + UNIT <= off + len;
		if (!whole) {
			errcode_t err = write_unit(j, u, &r);
			if (err)
				return err;
			u++;
			continue;
		}
		errcode_t err = store_dirty(j, u, r.buf + (ustart - off));
		if (err)
			return err;
		u++;
	}
	return 0;
}

/* ---- io_manager glue -------------------------------------------------- */

static struct journal *chan_journal(io_channel ch)
{
	return ch->private_data;
}

static size_t request_bytes(io_channel ch, int count)
{
	return count < 0 ? (size_t)-count : (size_t)count * (size_t)ch->block_size;
}

static errcode_t jio_open(const char *name, int flags, io_channel *channel);

static errcode_t jio_close(io_channel ch)
{
	if (--ch->refcount > 0)
		return 0;
	ext2fs_free_mem(&ch->name);
	ext2fs_free_mem(&ch);
	return 0;
}

static errcode_t jio_set_blksize(io_channel ch, int blksize)
{
	ch->block_size = blksize;
	return 0;
}

static errcode_t jio_read_blk64(io_channel ch, unsigned long long block, int count, void *data)
{
	struct journal *j = chan_journal(ch);
	size_t len = request_bytes(ch, count);
	if (len == 0)
		return 0;
	pthread_mutex_lock(&j->lock);
	errcode_t err = read_bytes(j, (uint64_t)block * (uint64_t)ch->block_size, len, data);
	pthread_mutex_unlock(&j->lock);
	return err;
}

static errcode_t jio_write_blk64(io_channel ch, unsigned long long block, int count,
				 const void *data)
{
	struct journal *j = chan_journal(ch);
	size_t len = request_bytes(ch, count);
	if (len == 0)
		return 0;
	pthread_mutex_lock(&j->lock);
	errcode_t err = write_bytes(j, (uint64_t)block * (uint64_t)ch->block_size, len, data);
	pthread_mutex_unlock(&j->lock);
	return err;
}

static errcode_t jio_read_blk(io_channel ch, unsigned long block, int count, void *data)
{
	return jio_read_blk64(ch, block, count, data);
}

static errcode_t jio_write_blk(io_channel ch, unsigned long block, int count, const void *data)
{
	return jio_write_blk64(ch, block, count, data);
}

static errcode_t jio_write_byte(io_channel ch, unsigned long offset, int size, const void *data)
{
	struct journal *j = chan_journal(ch);
	if (size <= 0)
		return 0;
	pthread_mutex_lock(&j->lock);
	errcode_t err = write_bytes(j, offset, (size_t)size, data);
	pthread_mutex_unlock(&j->lock);
	return err;
}

static errcode_t jio_flush(io_channel ch)
{
	int rc = journal_flush(chan_journal(ch));
	return rc ? (errcode_t)-rc : 0;
}

static errcode_t jio_set_option(io_channel ch, const char *option, const char *arg)
{
	return EXT2_ET_INVALID_ARGUMENT;
}

static errcode_t jio_get_stats(io_channel ch, io_stats *stats)
{
	static __thread struct struct_io_stats s; /* libext2fs expects a pointer it does not free */
	struct journal *j = chan_journal(ch);
	pthread_mutex_lock(&j->lock);
	s.num_fields = 2;
	s.bytes_read = j->stats.bytes_read;
	s.bytes_written = j->stats.bytes_written;
	pthread_mutex_unlock(&j->lock);
	*stats = &s;
	return 0;
}

/* Zeroing whole units without writing them: a hole in an image file, or
 * BLKZEROOUT on a device. libext2fs falls back to writing zeros on error. */
static errcode_t jio_zeroout(io_channel ch, unsigned long long block, unsigned long long count)
{
	struct journal *j = chan_journal(ch);
	uint64_t off = (uint64_t)block * (uint64_t)ch->block_size;
	uint64_t len = (uint64_t)count * (uint64_t)ch->block_size;
	if (j->read_only)
		return EXT2_ET_RO_FILSYS;
	if (off % UNIT || len % UNIT)
		return EXT2_ET_UNIMPLEMENTED;
	int rc;
	if (j->is_blockdev) {
		uint64_t range[2] = { off, len };
		rc = ioctl(j->fd, BLKZEROOUT, range);
	} else {
		rc = fallocate(j->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
	}
	if (rc)
		return EXT2_ET_UNIMPLEMENTED;
	journal_forget(j, off / UNIT, len / UNIT);
	return 0;
}

static struct struct_io_manager journal_manager = {
	.magic = EXT2_ET_MAGIC_IO_MANAGER,
	.name = "csvfs journal io manager",
	.open = jio_open,
	.close = jio_close,
	.set_blksize = jio_set_blksize,
	.read_blk = jio_read_blk,
	.write_blk = jio_write_blk,
	.flush = jio_flush,
	.write_byte = jio_write_byte,
	.set_option = jio_set_option,
	.get_stats = jio_get_stats,
	.read_blk64 = jio_read_blk64,
	.write_blk64 = jio_write_blk64,
	.zeroout = jio_zeroout,
};

/* libext2fs opens channels by name only, so the name carries the journal's
 * address; it is only ever produced by journal_channel_name(). */
static errcode_t jio_open(const char *name, int flags, io_channel *channel)
{
	struct journal *j = NULL;
	if (!name || sscanf(name, "csvfs-journal:%p", (void **)&j) != 1 || !j)
		return EXT2_ET_BAD_DEVICE_NAME;
	if ((flags & IO_FLAG_RW) && j->read_only)
		return EXT2_ET_RO_FILSYS;
	io_channel ch;
	errcode_t err = ext2fs_get_memzero(sizeof(*ch), &ch);
	if (err)
		return err;
	err = ext2fs_get_mem(strlen(name) + 1, &ch->name);
	if (err) {
		ext2fs_free_mem(&ch);
		return err;
	}
	strcpy(ch->name, name);
	ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
	ch->manager = &journal_manager;
	ch->block_size = 1024;
	ch->refcount = 1;
	ch->private_data = j;
	ch->align = (int)UNIT;
	if (j->is_blockdev)
		ch->flags |= CHANNEL_FLAGS_BLOCK_DEVICE;
	*channel = ch;
	return 0;
}

io_manager journal_io_manager(void)
{
	return &journal_manager;
}

const char *journal_channel_name(const struct journal *j)
{
	return j->channel_name;
}

/* ---- public ----------------------------------------------------------- */

int journal_open(const struct journal_config *cfg, struct journal **out, char *err, size_t errlen)
{
	int fd = open(cfg->lun_path, (cfg->read_only ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "cannot open LUN %s with O_DIRECT: %s", cfg->lun_path, strerror(e));
		return -e;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
		snprintf(err, errlen, "LUN %s is neither a block device nor an image file", cfg->lun_path);
		close(fd);
		return -EINVAL;
	}
	struct journal *j = calloc(1, sizeof(*j));
	if (!j || !(j->lun_path = strdup(cfg->lun_path)) ||
	    posix_memalign((void **)&j->bounce, UNIT, (size_t)MAX_RUN_UNITS * UNIT)) {
		if (j)
			free(j->lun_path);
		free(j);
		close(fd);
		snprintf(err, errlen, "out of memory opening %s", cfg->lun_path);
		return -ENOMEM;
	}
	j->fd = fd;
	j->read_only = cfg->read_only;
	j->is_blockdev = S_ISBLK(st.st_mode);
	j->log = cfg->log;
	j->log_arg = cfg->log_arg;
	j->lun = (struct lun){ fd, j->lun_path, cfg->log, cfg->log_arg };
	size_t bytes = cfg->cache_bytes ? cfg->cache_bytes : DEFAULT_CACHE_BYTES;
	j->capacity = bytes / UNIT ? bytes / UNIT : 1;
	j->nbuckets = 1;
	while (j->nbuckets < j->capacity * 2)
		j->nbuckets <<= 1;
	j->buckets = calloc(j->nbuckets, sizeof(*j->buckets));
	if (!j->buckets) {
		free(j->bounce);
		free(j->lun_path);
		free(j);
		close(fd);
		snprintf(err, errlen, "out of memory opening %s", cfg->lun_path);
		return -ENOMEM;
	}
	j->lru.lru_next = j->lru.lru_prev = &j->lru;
	j->dirty.dirty_next = j->dirty.dirty_prev = &j->dirty;
	pthread_cond_init(&j->finished_cond, NULL);
	pthread_cond_init(&j->home_cond, NULL);
	pthread_mutex_init(&j->lock, NULL);
	snprintf(j->channel_name, sizeof(j->channel_name), "csvfs-journal:%p", (void *)j);
	*out = j;
	return 0;
}

static int unit_cmp(const void *a, const void *b)
{
	uint64_t x = (*(struct cache_entry *const *)a)->unit, y = (*(struct cache_entry *const *)b)->unit;
	return x < y ? -1 : x > y;
}

/* Writes every dirty unit, in LUN order, coalescing adjacent units. */
int write_back_locked(struct journal *j)
{
	if (j->ndirty == 0)
		return 0;
	struct cache_entry **v = malloc(j->ndirty * sizeof(*v));
	size_t n = 0;
	int rc = 0;
	if (!v)
		return -ENOMEM;
	for (struct cache_entry *e = j->dirty.dirty_next; e != &j->dirty; e = e->dirty_next)
		v[n++] = e;
	qsort(v, n, sizeof(*v), unit_cmp);
	for (size_t i = 0; i < n && rc == 0;) {
		size_t run = 1;
		while (i + run < n && run < MAX_RUN_UNITS && v[i + run]->unit == v[i]->unit + run)
			run++;
		for (size_t k = 0; k < run; k++)
			memcpy(j->bounce + k * UNIT, v[i + k]->data, UNIT);
		errcode_t err = lun_write_units(j, v[i]->unit, (unsigned)run, j->bounce);
		if (err) {
			rc = err > 0 && err < 4096 ? -(int)err : -EIO;
			break;
		}
		for (size_t k = 0; k < run; k++)
			mark_clean(j, v[i + k]);
		i += run;
	}
	free(v);
	return rc;
}

int journal_flush(struct journal *j)
{
	if (j->read_only)
		return 0;
	struct journal_txn *txn = NULL;
	uint64_t wait_id = 0;
	int rc = journal_commit_prepare(j, &txn, &wait_id);
	return rc ? rc : journal_commit_finish(j, txn, wait_id);
}

int journal_commit_prepare(struct journal *j, struct journal_txn **txn, uint64_t *wait_id)
{
	*txn = NULL;
	pthread_mutex_lock(&j->lock);
	int rc = j->attached ? txn_prepare_locked(j, txn) : write_back_locked(j);
	*wait_id = j->last_prepared;
	pthread_mutex_unlock(&j->lock);
	return rc;
}

uint64_t journal_durable_id(struct journal *j)
{
	pthread_mutex_lock(&j->lock);
	while (j->last_finished < j->last_durable)
		pthread_cond_wait(&j->finished_cond, &j->lock);
	uint64_t id = j->last_finished;
	pthread_mutex_unlock(&j->lock);
	return id;
}

int journal_commit_finish(struct journal *j, struct journal_txn *txn, uint64_t wait_id)
{
	if (j->read_only)
		return 0;
	if (txn)
		return txn_finish(j, txn);
	/* Nothing of ours left to commit: our metadata is in an earlier
	 * transaction (wait for it), our data needs a flush of its own. */
	pthread_mutex_lock(&j->lock);
	while (j->last_durable < wait_id && j->last_finished < wait_id)
		pthread_cond_wait(&j->finished_cond, &j->lock);
	pthread_mutex_unlock(&j->lock);
	int rc = lun_fdatasync(&j->lun);   /* a failure is logged, naming the LUN */
	if (rc)
		return rc;
	pthread_mutex_lock(&j->lock);
	j->stats.flushes++;
	pthread_mutex_unlock(&j->lock);
	return 0;
}

/* Removes an entry; a pinned one (its transaction is still being written)
 * is hidden now and removed when unpinned. */
void cache_remove_entry(struct journal *j, struct cache_entry *e)
{
	if (e->pinned) {
		mark_clean(j, e);
		e->forget_on_unpin = 1;
		return;
	}
	cache_remove(j, e);
	free(e->data);
	free(e);
}

void journal_forget(struct journal *j, uint64_t block4k, uint64_t count)
{
	pthread_mutex_lock(&j->lock);
	if (count > j->nentries) {
		/* Walk the cache instead of the range when the range is larger. */
		struct cache_entry *e = j->lru.lru_next;
		while (e != &j->lru) {
			struct cache_entry *next = e->lru_next;
			if (e->unit >= block4k && e->unit < block4k + count && !e->forget_on_unpin)
				cache_remove_entry(j, e);
			e = next;
		}
	} else {
		for (uint64_t u = block4k; u < block4k + count; u++) {
			struct cache_entry *e = cache_find(j, u);
			if (e)
				cache_remove_entry(j, e);
		}
	}
	pthread_mutex_unlock(&j->lock);
}

void journal_get_stats(struct journal *j, struct journal_stats *out)
{
	pthread_mutex_lock(&j->lock);
	*out = j->stats;
	pthread_mutex_unlock(&j->lock);
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	txn_stop_home_writer(j);
	if (j->ndirty)
		jlog(j, 3, "journal: %zu metadata blocks of %s were never written back", j->ndirty, j->lun_path);
	cache_drop_all(j);
	txn_free(j);
	free(j->buckets);
	free(j->bounce);
	close(j->fd);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->finished_cond);
	pthread_cond_destroy(&j->home_cond);
	free(j->lun_path);
	free(j);
}
