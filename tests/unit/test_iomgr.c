/* The metadata io layer (journal/iomgr.c) without a journal attached: the
 * ext2 io_manager over a LUN opened O_DIRECT with a write-back 4 KiB block
 * cache.
 *
 * Every test works on a scratch image file (in $TMPDIR or /tmp) filled with a
 * known pattern, drives the layer only through the io_channel API that
 * libext2fs uses (plus journal_flush/forget/stats), and checks the LUN with an
 * independent plain pread() of the image: what the cache holds and what is on
 * the LUN are checked separately.
 *
 * The link wraps posix_memalign (tests/unit/test_iomgr.ldflags) so that a test
 * can make the cache's allocations fail and check the write-through path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ext2fs/ext2fs.h>

#include "journal/journal.h"
#include "tests/unit/scratch.h"

#define U 4096u                 /* the cache unit */
#define IMAGE_UNITS 256u        /* 1 MiB scratch image */

/* ---- posix_memalign under test control ------------------------------------- */

int __real_posix_memalign(void **p, size_t align, size_t size);
int __wrap_posix_memalign(void **p, size_t align, size_t size);

static int fail_memalign;       /* nonzero: every posix_memalign in the process fails */

int __wrap_posix_memalign(void **p, size_t align, size_t size)
{
	if (fail_memalign)
		return ENOMEM;
	return __real_posix_memalign(p, align, size);
}

/* ---- fixture ------------------------------------------------------------------ */

struct fx {
	char path[PATH_MAX];
	int vfd;                    /* plain (buffered) descriptor: the independent view */
	struct journal *j;
	io_channel ch;
	char log[8192];             /* everything the journal logged */
	size_t loglen;
};

/* The image's initial content: differs in every byte position of a unit and
 * between units. */
static uint8_t old_byte(uint64_t off)
{
	return (uint8_t)(off * 7u + (off >> 12) * 13u + 1u);
}

/* New content written by a test, tagged by `seed`. */
static uint8_t new_byte(unsigned seed, uint64_t off)
{
	return (uint8_t)(0x80u ^ (off * 11u + seed * 37u + (off >> 12)));
}

static void fill_new(unsigned seed, uint64_t off, size_t len, uint8_t *buf)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = new_byte(seed, off + i);
}

static void capture_log(void *arg, int level, const char *fmt, va_list ap)
{
	struct fx *f = arg;
	(void)level;
	if (f->loglen + 2 >= sizeof(f->log))
		return;
	int n = vsnprintf(f->log + f->loglen, sizeof(f->log) - f->loglen - 1, fmt, ap);
	if (n > 0) {
		f->loglen += (size_t)n < sizeof(f->log) - f->loglen - 2 ? (size_t)n
								       : sizeof(f->log) - f->loglen - 2;
		f->log[f->loglen++] = '\n';
		f->log[f->loglen] = 0;
	}
}

/* Creates the scratch image filled with old_byte(). */
static void make_image(struct fx *f)
{
	snprintf(f->path, sizeof(f->path), "%s/test_iomgr.XXXXXX", tmp_dir());
	int fd = mkstemp(f->path);
	assert_true(fd >= 0);
	uint8_t *buf = malloc(U);
	assert_non_null(buf);
	for (uint64_t u = 0; u < IMAGE_UNITS; u++) {
		for (unsigned i = 0; i < U; i++)
			buf[i] = old_byte(u * U + i);
		assert_int_equal(pwrite(fd, buf, U, (off_t)(u * U)), (ssize_t)U);
	}
	free(buf);
	assert_int_equal(fsync(fd), 0);
	close(fd);
	f->vfd = open(f->path, O_RDONLY | O_CLOEXEC);
	assert_true(f->vfd >= 0);
}

static void open_journal(struct fx *f, size_t cache_bytes, int read_only)
{
	char err[512] = "";
	struct journal_config cfg = { .lun_path = f->path, .read_only = read_only,
				      .cache_bytes = cache_bytes, .log = capture_log, .log_arg = f };
	int rc = journal_open(&cfg, &f->j, err, sizeof(err));
	if (rc)
		fail_msg("journal_open(%s): %d %s", f->path, rc, err);
	errcode_t e = journal_io_manager()->open(journal_channel_name(f->j),
						 read_only ? 0 : IO_FLAG_RW, &f->ch);
	assert_int_equal(e, 0);
}

static struct fx *fx_new(size_t cache_bytes, int read_only)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->vfd = -1;
	make_image(f);
	open_journal(f, cache_bytes, read_only);
	return f;
}

static void fx_close_journal(struct fx *f)
{
	if (f->ch)
		io_channel_close(f->ch);
	f->ch = NULL;
	journal_close(f->j);
	f->j = NULL;
}

static void fx_free(struct fx *f)
{
	if (!f)
		return;
	fx_close_journal(f);
	if (f->vfd >= 0)
		close(f->vfd);
	unlink(f->path);
	free(f);
}

static int teardown(void **state)
{
	fx_free(*state);
	*state = NULL;
	return 0;
}

/* ---- checking the LUN independently ------------------------------------------- */

static void disk_read(struct fx *f, uint64_t off, size_t len, uint8_t *buf)
{
	assert_int_equal(pread(f->vfd, buf, len, (off_t)off), (ssize_t)len);
}

/* Expected content of the whole image, maintained by each test. */
struct model {
	uint8_t *b;
};

static struct model model_new(void)
{
	struct model m = { malloc((size_t)IMAGE_UNITS * U) };
	assert_non_null(m.b);
	for (uint64_t i = 0; i < (uint64_t)IMAGE_UNITS * U; i++)
		m.b[i] = old_byte(i);
	return m;
}

static void first_diff_fail(const char *what, const uint8_t *got, const uint8_t *want, size_t len,
			    uint64_t base)
{
	for (size_t i = 0; i < len; i++)
		if (got[i] != want[i])
			fail_msg("%s: byte %llu is 0x%02x, expected 0x%02x", what,
				 (unsigned long long)(base + i), got[i], want[i]);
}

/* The LUN holds exactly the model. */
static void expect_disk(struct fx *f, const struct model *m, const char *what)
{
	size_t len = (size_t)IMAGE_UNITS * U;
	uint8_t *buf = malloc(len);
	assert_non_null(buf);
	disk_read(f, 0, len, buf);
	if (memcmp(buf, m->b, len) != 0)
		first_diff_fail(what, buf, m->b, len, 0);
	free(buf);
}

/* Reading through the channel (block size bs) shows exactly the model. */
static void expect_channel(struct fx *f, const struct model *m, unsigned bs, const char *what)
{
	size_t len = (size_t)IMAGE_UNITS * U;
	uint8_t *buf = malloc(len);
	assert_non_null(buf);
	int saved = f->ch->block_size;
	assert_int_equal(io_channel_set_blksize(f->ch, (int)bs), 0);
	assert_int_equal(io_channel_read_blk64(f->ch, 0, (int)(len / bs), buf), 0);
	assert_int_equal(io_channel_set_blksize(f->ch, saved), 0);
	if (memcmp(buf, m->b, len) != 0)
		first_diff_fail(what, buf, m->b, len, 0);
	free(buf);
}

static void expect_bytes(const uint8_t *got, const uint8_t *want, size_t len, const char *what)
{
	if (memcmp(got, want, len) != 0)
		first_diff_fail(what, got, want, len, 0);
}

/* ---- opening ----------------------------------------------------------------- */

static void test_missing_lun_names_path(void **state)
{
	(void)state;
	char path[PATH_MAX], err[512] = "";
	snprintf(path, sizeof(path), "%s/test_iomgr-no-such-dir-%d/lun.img", tmp_dir(), (int)getpid());
	struct journal *j = NULL;
	struct journal_config cfg = { .lun_path = path };
	assert_int_equal(journal_open(&cfg, &j, err, sizeof(err)), -ENOENT);
	assert_null(j);
	if (!strstr(err, path))
		fail_msg("error message does not name the LUN: '%s'", err);

	cfg.read_only = 1;
	err[0] = 0;
	assert_int_equal(journal_open(&cfg, &j, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));
}

static void test_directory_lun_refused(void **state)
{
	(void)state;
	char dir[PATH_MAX], err[512] = "";
	snprintf(dir, sizeof(dir), "%s/test_iomgr-dir.XXXXXX", tmp_dir());
	assert_non_null(mkdtemp(dir));
	struct journal *j = NULL;
	for (int ro = 0; ro <= 1; ro++) {
		struct journal_config cfg = { .lun_path = dir, .read_only = ro };
		err[0] = 0;
		int rc = journal_open(&cfg, &j, err, sizeof(err));
		assert_true(rc < 0);
		if (!strstr(err, dir))
			fail_msg("read_only=%d: error message does not name the LUN: '%s'", ro, err);
	}
	rmdir(dir);
}

static void test_bad_channel_name(void **state)
{
	(void)state;
	io_channel ch = NULL;
	io_manager m = journal_io_manager();
	assert_non_null(m);
	assert_int_equal(m->magic, EXT2_ET_MAGIC_IO_MANAGER);
	assert_int_equal(m->open("/dev/sda", IO_FLAG_RW, &ch), EXT2_ET_BAD_DEVICE_NAME);
	assert_int_equal(m->open(NULL, 0, &ch), EXT2_ET_BAD_DEVICE_NAME);
	assert_int_equal(m->open("csvfs-journal:(nil)", 0, &ch), EXT2_ET_BAD_DEVICE_NAME);
	assert_null(ch);
}

/* ---- write-back ----------------------------------------------------------------- */

static void test_write_back_4k(void **state)
{
	struct fx *f = *state = fx_new(0, 0);
	struct model m = model_new();
	uint8_t buf[U];
	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);

	fill_new(1, 5 * U, U, buf);
	assert_int_equal(io_channel_write_blk64(f->ch, 5, 1, buf), 0);
	/* Not on the LUN yet. */
	expect_disk(f, &m, "before flush");
	/* The channel sees it. */
	memcpy(m.b + 5 * U, buf, U);
	expect_channel(f, &m, 4096, "read before flush");
	struct model disk_now = model_new();
	expect_disk(f, &disk_now, "still not on the LUN after reading");
	free(disk_now.b);

	assert_int_equal(journal_flush(f->j), 0);
	expect_disk(f, &m, "after flush");
	expect_channel(f, &m, 4096, "read after flush");
	free(m.b);
}

/* 1 KiB blocks: a write covering parts of two units is merged with the rest
 * of each unit; neighbours keep their bytes. */
static void test_write_back_1k_spanning_units(void **state)
{
	struct fx *f = *state = fx_new(0, 0);
	struct model m = model_new();
	uint8_t buf[3 * 1024];
	assert_int_equal(io_channel_set_blksize(f->ch, 1024), 0);

	/* 1 KiB blocks 3..5 = bytes 3072..6143: tail of unit 0, head of unit 1. */
	fill_new(2, 3 * 1024, sizeof(buf), buf);
	assert_int_equal(io_channel_write_blk64(f->ch, 3, 3, buf), 0);
	expect_disk(f, &m, "before flush");
	memcpy(m.b + 3 * 1024, buf, sizeof(buf));
	expect_channel(f, &m, 1024, "1k read before flush");
	expect_channel(f, &m, 4096, "4k read before flush");

	/* A second write inside a unit that is dirty in the cache: merged with
	 * the cached (new) bytes, not with the LUN's old ones. */
	uint8_t b2[1024];
	fill_new(3, 5 * 1024, sizeof(b2), b2);
	assert_int_equal(io_channel_write_blk64(f->ch, 5, 1, b2), 0);
	memcpy(m.b + 5 * 1024, b2, sizeof(b2));
	expect_channel(f, &m, 1024, "after overlapping rewrite");

	/* 1 KiB blocks 1019..1021 across the boundary of the last two units. */
	uint8_t b3[3 * 1024];
	fill_new(4, 1019 * 1024, sizeof(b3), b3);
	assert_int_equal(io_channel_write_blk64(f->ch, 1019, 3, b3), 0);
	memcpy(m.b + 1019 * 1024, b3, sizeof(b3));

	struct model old = model_new();
	expect_disk(f, &old, "still before flush");
	free(old.b);
	assert_int_equal(journal_flush(f->j), 0);
	expect_disk(f, &m, "after flush");
	free(m.b);
}

/* Negative counts are byte counts (libext2fs uses them for the superblock). */
static void test_negative_counts_are_bytes(void **state)
{
	struct fx *f = *state = fx_new(0, 0);
	struct model m = model_new();
	uint8_t buf[5000], got[5000];
	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);

	fill_new(5, 2 * U, 100, buf);
	assert_int_equal(io_channel_write_blk64(f->ch, 2, -100, buf), 0);
	memcpy(m.b + 2 * U, buf, 100);
	assert_int_equal(io_channel_read_blk64(f->ch, 2, -100, got), 0);
	expect_bytes(got, buf, 100, "read -100");
	/* 5000 bytes from 2 units in: crosses into the next unit. */
	assert_int_equal(io_channel_read_blk64(f->ch, 2, -5000, got), 0);
	expect_bytes(got, m.b + 2 * U, 5000, "read -5000");

	/* With 1 KiB blocks: 1500 bytes at block 1 (bytes 1024..2523). */
	assert_int_equal(io_channel_set_blksize(f->ch, 1024), 0);
	fill_new(6, 1024, 1500, buf);
	assert_int_equal(io_channel_write_blk64(f->ch, 1, -1500, buf), 0);
	memcpy(m.b + 1024, buf, 1500);
	assert_int_equal(io_channel_read_blk64(f->ch, 1, -1500, got), 0);
	expect_bytes(got, buf, 1500, "read -1500 at 1k");
	/* Empty requests do nothing. */
	assert_int_equal(io_channel_write_blk64(f->ch, 9, 0, buf), 0);
	assert_int_equal(io_channel_read_blk64(f->ch, 9, 0, got), 0);

	struct model old = model_new();
	expect_disk(f, &old, "before flush");
	free(old.b);
	expect_channel(f, &m, 1024, "before flush");
	assert_int_equal(journal_flush(f->j), 0);
	expect_disk(f, &m, "after flush");
	free(m.b);
}

static void test_write_byte_unaligned(void **state)
{
	struct fx *f = *state = fx_new(0, 0);
	struct model m = model_new();
	static uint8_t buf[3 * U];

	/* 20 bytes across the unit 0/1 boundary. */
	fill_new(7, 4090, 20, buf);
	assert_int_equal(io_channel_write_byte(f->ch, 4090, 20, buf), 0);
	memcpy(m.b + 4090, buf, 20);
	/* From the last byte of unit 2 to the second byte of unit 5: a partial
	 * head, two whole units, a partial tail. */
	uint64_t off = 3 * U - 1;
	size_t len = 2 * U + 3;
	fill_new(8, off, len, buf);
	assert_int_equal(io_channel_write_byte(f->ch, (unsigned long)off, (int)len, buf), 0);
	memcpy(m.b + off, buf, len);
	/* One byte inside a unit already dirty. */
	uint8_t one = 0x5a;
	assert_int_equal(io_channel_write_byte(f->ch, 4 * U + 17, 1, &one), 0);
	m.b[4 * U + 17] = one;
	/* Overlapping rewrites of a partial unit merge with the cached bytes. */
	fill_new(9, 100 * U + 100, 10, buf);
	assert_int_equal(io_channel_write_byte(f->ch, 100 * U + 100, 10, buf), 0);
	memcpy(m.b + 100 * U + 100, buf, 10);
	fill_new(10, 100 * U + 105, 10, buf);
	assert_int_equal(io_channel_write_byte(f->ch, 100 * U + 105, 10, buf), 0);
	memcpy(m.b + 100 * U + 105, buf, 10);
	/* Empty and negative sizes write nothing. */
	assert_int_equal(io_channel_write_byte(f->ch, 50 * U, 0, buf), 0);
	assert_int_equal(io_channel_write_byte(f->ch, 50 * U, -5, buf), 0);

	struct model old = model_new();
	expect_disk(f, &old, "before flush");
	free(old.b);
	expect_channel(f, &m, 1024, "through the cache");
	assert_int_equal(journal_flush(f->j), 0);
	expect_disk(f, &m, "after flush");
	free(m.b);
}

/* A run longer than the 64-unit write/read batch. */
static void test_long_runs(void **state)
{
	struct fx *f = *state = fx_new(0, 0);
	struct model m = model_new();
	size_t len = 100 * U;
	uint8_t *buf = malloc(len);
	assert_non_null(buf);
	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);
	fill_new(11, 20 * U, len, buf);
	assert_int_equal(io_channel_write_blk64(f->ch, 20, 100, buf), 0);
	memcpy(m.b + 20 * U, buf, len);
	assert_int_equal(journal_flush(f->j), 0);
	expect_disk(f, &m, "after flush");
	struct journal_stats st;
	journal_get_stats(f->j, &st);
	assert_int_equal(st.bytes_written, len);

	/* A cold journal reads it back in runs. */
	fx_close_journal(f);
	open_journal(f, 0, 1);
	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);
	memset(buf, 0, len);
	assert_int_equal(io_channel_read_blk64(f->ch, 20, 100, buf), 0);
	expect_bytes(buf, m.b + 20 * U, len, "cold read");
	journal_get_stats(f->j, &st);
	assert_int_equal(st.cache_misses, 100);
	assert_int_equal(st.cache_hits, 0);
	assert_int_equal(st.bytes_read, len);
	free(buf);
	free(m.b);
}

/* ---- eviction ----------------------------------------------------------------- */

static void test_eviction_writes_back(void **state)
{
	struct fx *f = *state = fx_new(4 * U, 0);   /* room for 4 units */
	struct model m = model_new();
	uint8_t buf[U];
	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);

	for (unsigned u = 0; u < 8; u++) {
		fill_new(20 + u, (uint64_t)(30 + u) * U, U, buf);
		assert_int_equal(io_channel_write_blk64(f->ch, 30 + u, 1, buf), 0);
		memcpy(m.b + (uint64_t)(30 + u) * U, buf, U);
	}
	/* Units 30..33 were pushed out by 34..37: on the LUN already. */
	struct model expect = model_new();
	memcpy(expect.b + 30 * U, m.b + 30 * U, 4 * U);
	expect_disk(f, &expect, "evicted units on the LUN, cached ones not");
	struct journal_stats st;
	journal_get_stats(f->j, &st);
	assert_int_equal(st.bytes_written, 4 * U);

	/* Evicted units read back new (from the LUN), and so do cached ones. */
	uint8_t got[U];
	for (unsigned u = 0; u < 8; u++) {
		assert_int_equal(io_channel_read_blk64(f->ch, 30 + u, 1, got), 0);
		expect_bytes(got, m.b + (uint64_t)(30 + u) * U, U, "read after eviction");
	}
	assert_int_equal(journal_flush(f->j), 0);
	expect_disk(f, &m, "after flush");
	journal_get_stats(f->j, &st);
	assert_int_equal(st.bytes_written, 8 * U);   /* each unit written once */

	/* Evicting clean units writes nothing. */
	for (unsigned u = 100; u < 120; u++)
		assert_int_equal(io_channel_read_blk64(f->ch, u, 1, got), 0);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.bytes_written, 8 * U);

	/* A unit rewritten while dirty and evicted later reaches the LUN with
	 * its last content. */
	fill_new(40, 60 * U, U, buf);
	assert_int_equal(io_channel_write_blk64(f->ch, 60, 1, buf), 0);
	fill_new(41, 60 * U, U, buf);
	assert_int_equal(io_channel_write_blk64(f->ch, 60, 1, buf), 0);
	memcpy(m.b + 60 * U, buf, U);
	for (unsigned u = 120; u < 130; u++)
		assert_int_equal(io_channel_read_blk64(f->ch, u, 1, got), 0);
	disk_read(f, 60 * U, U, got);
	expect_bytes(got, buf, U, "evicted rewrite");
	expect_disk(f, &m, "all");
	free(expect.b);
	free(m.b);
}

/* The cache in a tiny cache still serves reads and partial writes. */
static void test_tiny_cache_partial_writes(void **state)
{
	struct fx *f = *state = fx_new(1, 0);   /* rounded up to one unit */
	struct model m = model_new();
	uint8_t buf[64];
	for (unsigned i = 0; i < 40; i++) {
		uint64_t off = (uint64_t)(i * 7 % 200) * U + U - 32;   /* straddles two units */
		fill_new(50 + i, off, sizeof(buf), buf);
		assert_int_equal(io_channel_write_byte(f->ch, (unsigned long)off, sizeof(buf), buf), 0);
		memcpy(m.b + off, buf, sizeof(buf));
	}
	expect_channel(f, &m, 4096, "tiny cache");
	assert_int_equal(journal_flush(f->j), 0);
	expect_disk(f, &m, "tiny cache after flush");
	free(m.b);
}

/* ---- forget ---------------------------------------------------------------------- */

static void test_forget_drops_dirty(void **state)
{
	struct fx *f = *state = fx_new(0, 0);
	struct model m = model_new();
	uint8_t buf[U], got[U];
	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);
	for (unsigned u = 3; u <= 5; u++) {
		fill_new(60 + u, (uint64_t)u * U, U, buf);
		assert_int_equal(io_channel_write_blk64(f->ch, u, 1, buf), 0);
	}
	/* Unit 4 changes hands: its cached copy is dropped, never written. */
	journal_forget(f->j, 4, 1);
	fill_new(63, 3 * U, U, m.b + 3 * U);
	fill_new(65, 5 * U, U, m.b + 5 * U);

	struct journal_stats before, after;
	journal_get_stats(f->j, &before);
	assert_int_equal(io_channel_read_blk64(f->ch, 4, 1, got), 0);
	expect_bytes(got, m.b + 4 * U, U, "forgotten unit reads from the LUN");
	journal_get_stats(f->j, &after);
	assert_int_equal(after.cache_misses, before.cache_misses + 1);

	assert_int_equal(journal_flush(f->j), 0);
	expect_disk(f, &m, "after flush");

	/* A range larger than the cache: the cache is walked instead. */
	fill_new(70, 7 * U, U, buf);
	assert_int_equal(io_channel_write_blk64(f->ch, 7, 1, buf), 0);
	fill_new(71, 200 * U, U, buf);
	assert_int_equal(io_channel_write_blk64(f->ch, 200, 1, buf), 0);
	memcpy(m.b + 200 * U, buf, U);
	journal_forget(f->j, 0, 150);           /* [0, 150): 7 but not 200 */
	journal_forget(f->j, 1000, 5);          /* nothing cached there */
	assert_int_equal(journal_flush(f->j), 0);
	expect_disk(f, &m, "after large forget");
	expect_channel(f, &m, 4096, "after large forget");
	free(m.b);
}

/* ---- zeroout ---------------------------------------------------------------------- */

static void test_zeroout_punches(void **state)
{
	struct fx *f = *state = fx_new(0, 0);
	struct model m = model_new();
	uint8_t buf[U];
	struct stat st0, st1;
	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);

	/* A dirty cached unit inside the range must not come back. */
	fill_new(80, 10 * U, U, buf);
	assert_int_equal(io_channel_write_blk64(f->ch, 10, 1, buf), 0);
	/* A clean cached unit inside the range must not be served stale. */
	assert_int_equal(io_channel_read_blk64(f->ch, 9, 1, buf), 0);

	assert_int_equal(fstat(f->vfd, &st0), 0);
	assert_int_equal(io_channel_zeroout(f->ch, 8, 4), 0);
	memset(m.b + 8 * U, 0, 4 * U);
	expect_channel(f, &m, 4096, "zeroed range through the channel");
	expect_disk(f, &m, "zeroed range on the LUN");
	assert_int_equal(journal_flush(f->j), 0);
	expect_disk(f, &m, "zeroed range after flush");
	/* Punched: the range is a hole in the image. */
	assert_int_equal(lseek(f->vfd, 8 * U, SEEK_HOLE), (off_t)(8 * U));
	assert_int_equal(lseek(f->vfd, 8 * U, SEEK_DATA), (off_t)(12 * U));
	assert_int_equal(fstat(f->vfd, &st1), 0);
	assert_int_equal(st1.st_size, st0.st_size);        /* KEEP_SIZE */
	assert_true(st1.st_blocks < st0.st_blocks);

	/* 1 KiB blocks: aligned to 4 KiB works... */
	assert_int_equal(io_channel_set_blksize(f->ch, 1024), 0);
	assert_int_equal(io_channel_zeroout(f->ch, 80, 8), 0);   /* bytes 80K..88K = units 20, 21 */
	memset(m.b + 20 * U, 0, 2 * U);
	/* ...unaligned is refused (libext2fs then writes zeros itself) and changes nothing. */
	assert_int_equal(io_channel_zeroout(f->ch, 1, 1), EXT2_ET_UNIMPLEMENTED);
	assert_int_equal(io_channel_zeroout(f->ch, 4, 3), EXT2_ET_UNIMPLEMENTED);
	expect_channel(f, &m, 1024, "after 1k zeroouts");
	expect_disk(f, &m, "after 1k zeroouts");
	free(m.b);
}

/* ---- read-only -------------------------------------------------------------------- */

static void test_read_only_refuses_writes(void **state)
{
	struct fx *f = *state = fx_new(0, 1);
	struct model m = model_new();
	uint8_t buf[U];
	io_channel rw = NULL;
	assert_int_equal(journal_io_manager()->open(journal_channel_name(f->j), IO_FLAG_RW, &rw),
			 EXT2_ET_RO_FILSYS);
	assert_null(rw);

	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);
	assert_int_equal(io_channel_read_blk64(f->ch, 2, 1, buf), 0);
	expect_bytes(buf, m.b + 2 * U, U, "read-only read");
	fill_new(90, 2 * U, U, buf);
	assert_int_equal(io_channel_write_blk64(f->ch, 2, 1, buf), EXT2_ET_RO_FILSYS);
	assert_int_equal(io_channel_write_blk64(f->ch, 3, -10, buf), EXT2_ET_RO_FILSYS);
	assert_int_equal(io_channel_write_byte(f->ch, 5, 10, buf), EXT2_ET_RO_FILSYS);
	assert_int_equal(io_channel_zeroout(f->ch, 0, 4), EXT2_ET_RO_FILSYS);
	assert_int_equal(journal_flush(f->j), 0);
	expect_channel(f, &m, 4096, "read-only channel");
	expect_disk(f, &m, "read-only LUN");
	struct journal_stats st;
	journal_get_stats(f->j, &st);
	assert_int_equal(st.bytes_written, 0);
	free(m.b);
}

/* ---- stats ----------------------------------------------------------------------- */

static void test_stats(void **state)
{
	struct fx *f = *state = fx_new(0, 0);
	struct journal_stats st;
	uint8_t buf[4 * U];
	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.cache_hits + st.cache_misses + st.bytes_read + st.bytes_written + st.flushes, 0);

	assert_int_equal(io_channel_read_blk64(f->ch, 0, 1, buf), 0);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.cache_misses, 1);
	assert_int_equal(st.cache_hits, 0);
	assert_int_equal(st.bytes_read, U);

	assert_int_equal(io_channel_read_blk64(f->ch, 0, 1, buf), 0);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.cache_hits, 1);
	assert_int_equal(st.cache_misses, 1);
	assert_int_equal(st.bytes_read, U);

	/* Unit 0 cached, 1..3 read in one run. */
	assert_int_equal(io_channel_read_blk64(f->ch, 0, 4, buf), 0);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.cache_hits, 2);
	assert_int_equal(st.cache_misses, 4);
	assert_int_equal(st.bytes_read, 4 * U);

	/* Two 1 KiB blocks in one unit: the unit is counted once per request. */
	assert_int_equal(io_channel_set_blksize(f->ch, 1024), 0);
	assert_int_equal(io_channel_read_blk64(f->ch, 1, 2, buf), 0);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.cache_hits, 3);
	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);

	/* Writes count when they reach the LUN, adjacent units coalesced. */
	fill_new(100, 10 * U, 2 * U, buf);
	assert_int_equal(io_channel_write_blk64(f->ch, 10, 2, buf), 0);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.bytes_written, 0);
	assert_int_equal(st.flushes, 0);
	assert_int_equal(journal_flush(f->j), 0);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.bytes_written, 2 * U);
	assert_int_equal(st.flushes, 1);
	/* A flush with nothing dirty still makes the LUN durable. */
	assert_int_equal(journal_flush(f->j), 0);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.bytes_written, 2 * U);
	assert_int_equal(st.flushes, 2);

	/* Rewriting a cached unit with the bytes it holds dirties nothing. */
	assert_int_equal(io_channel_read_blk64(f->ch, 0, 1, buf), 0);
	assert_int_equal(io_channel_write_blk64(f->ch, 0, 1, buf), 0);
	assert_int_equal(journal_flush(f->j), 0);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.bytes_written, 2 * U);

	/* libext2fs's view of the same counters. */
	io_stats ios = NULL;
	assert_int_equal(f->ch->manager->get_stats(f->ch, &ios), 0);
	assert_non_null(ios);
	assert_int_equal(ios->bytes_read, st.bytes_read);
	assert_int_equal(ios->bytes_written, st.bytes_written);
	/* io_channel_flush goes to journal_flush. */
	assert_int_equal(io_channel_flush(f->ch), 0);
	journal_get_stats(f->j, &st);
	assert_int_equal(st.flushes, 4);
}

/* ---- errors and logs ---------------------------------------------------------------- */

static void test_short_read_past_end(void **state)
{
	struct fx *f = *state = fx_new(0, 0);
	uint8_t buf[2 * U];
	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);
	assert_int_equal(io_channel_read_blk64(f->ch, IMAGE_UNITS, 1, buf), EXT2_ET_SHORT_READ);
	assert_int_equal(io_channel_read_blk64(f->ch, IMAGE_UNITS - 1, 2, buf), EXT2_ET_SHORT_READ);
	if (!strstr(f->log, f->path))
		fail_msg("short read log does not name the LUN: '%s'", f->log);
	/* A partial write of a unit past the end cannot read the unit. */
	assert_int_not_equal(io_channel_write_byte(f->ch, IMAGE_UNITS * U + 10, 4, buf), 0);
}

static void test_close_with_dirty_blocks_logs(void **state)
{
	struct fx *f = *state = fx_new(0, 0);
	struct model m = model_new();
	uint8_t buf[U];
	fill_new(110, 0, U, buf);
	assert_int_equal(io_channel_write_byte(f->ch, 0, (int)U, buf), 0);
	fx_close_journal(f);
	if (!strstr(f->log, "never written back") || !strstr(f->log, f->path))
		fail_msg("closing with dirty blocks was not reported: '%s'", f->log);
	expect_disk(f, &m, "dirty blocks dropped at close");
	free(m.b);
}

/* ---- threads ---------------------------------------------------------------------------- */

enum { IO_THREADS = 4, REGION_UNITS = 40, IO_OPS = 400 };

struct io_worker {
	struct fx *f;
	struct model *m;        /* each worker writes only its own region of it */
	unsigned id;
	int errors;
	char first_error[128];
};

static _Atomic int io_workers_done;

static void io_err(struct io_worker *w, const char *what, long v)
{
	if (!w->errors++)
		snprintf(w->first_error, sizeof(w->first_error), "worker %u: %s (%ld)", w->id, what, v);
}

/* Byte writes across unit boundaries inside the worker's region, each checked
 * by reading it back through the channel. */
static void *io_worker_main(void *arg)
{
	struct io_worker *w = arg;
	uint64_t base = (uint64_t)(8 + w->id * REGION_UNITS) * U, span = (uint64_t)REGION_UNITS * U;
	uint64_t x = 0x9E3779B97F4A7C15ull * (w->id + 1);
	static _Thread_local uint8_t buf[3 * U], got[5 * U];   /* a write touches at most 4 units */
	for (unsigned op = 0; op < IO_OPS; op++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		size_t len = 1 + (size_t)(x % (2 * U + 100));
		uint64_t off = base + (x >> 20) % (span - len);
		fill_new(200 + w->id * 1000 + op, off, len, buf);
		errcode_t e = io_channel_write_byte(w->f->ch, (unsigned long)off, (int)len, buf);
		if (e)
			io_err(w, "write_byte", (long)e);
		memcpy(w->m->b + off, buf, len);
		/* read back the units it touched (read_blk64 with a byte count) */
		uint64_t first = off / U, last = (off + len - 1) / U;
		e = io_channel_read_blk64(w->f->ch, first, -(int)((last - first + 1) * U), got);
		if (e)
			io_err(w, "read", (long)e);
		else if (memcmp(got, w->m->b + first * U, (last - first + 1) * U) != 0)
			io_err(w, "read back differs", (long)op);
	}
	atomic_fetch_add(&io_workers_done, 1);
	return NULL;
}

static void *io_flusher_main(void *arg)
{
	struct io_worker *w = arg;
	while (atomic_load(&io_workers_done) < IO_THREADS) {
		int rc = journal_flush(w->f->j);
		if (rc)
			io_err(w, "journal_flush", rc);
		struct journal_stats st;
		journal_get_stats(w->f->j, &st);
	}
	return NULL;
}

static void test_concurrent_channel_io(void **state)
{
	struct fx *f = *state = fx_new(8 * U, 0);     /* a small cache: evictions all along */
	struct model m = model_new();
	struct io_worker w[IO_THREADS + 1];
	pthread_t t[IO_THREADS + 1];
	atomic_store(&io_workers_done, 0);
	/* The channel's block size is shared: the workers use byte offsets and
	 * byte counts only. */
	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);
	for (unsigned i = 0; i <= IO_THREADS; i++) {
		w[i] = (struct io_worker){ .f = f, .m = &m, .id = i };
		assert_int_equal(pthread_create(&t[i], NULL, i < IO_THREADS ? io_worker_main : io_flusher_main,
						&w[i]), 0);
	}
	for (unsigned i = 0; i <= IO_THREADS; i++)
		pthread_join(t[i], NULL);
	for (unsigned i = 0; i <= IO_THREADS; i++)
		if (w[i].errors)
			fail_msg("%d errors, first: %s", w[i].errors, w[i].first_error);
	assert_int_equal(journal_flush(f->j), 0);
	expect_disk(f, &m, "after concurrent writes");
	expect_channel(f, &m, 1024, "after concurrent writes");
	free(m.b);
}

/* ---- memory failure: write-through ---------------------------------------------------- */

/* When the cache cannot get memory for a unit, the write goes straight to the
 * LUN. `misalign` offsets the caller's buffer from 4 KiB alignment (libext2fs
 * hands its own malloc'd buffers, which are not 4 KiB aligned). */
static void write_through_case(struct fx *f, struct model *m, unsigned misalign, unsigned unit)
{
	static _Alignas(4096) uint8_t raw[2 * U + 64];
	uint8_t *buf = raw + misalign;
	assert_int_equal(io_channel_set_blksize(f->ch, 4096), 0);
	fill_new(120 + unit, (uint64_t)unit * U, U, buf);
	fail_memalign = 1;
	errcode_t e = io_channel_write_blk64(f->ch, unit, 1, buf);
	fail_memalign = 0;
	if (e)
		fail_msg("whole-unit write with no cache memory (buffer %u bytes off 4 KiB alignment) "
			 "failed: %ld (%s) instead of writing through", misalign, (long)e, error_message(e));
	memcpy(m->b + (uint64_t)unit * U, buf, U);
	expect_disk(f, m, "written through");
}

static void test_write_through_without_memory(void **state)
{
	struct fx *f = *state = fx_new(0, 0);
	struct model m = model_new();
	uint8_t buf[64];
	/* Partial unit: merged in the aligned bounce buffer, written through. */
	fill_new(130, 50 * U + 4000, sizeof(buf), buf);
	fail_memalign = 1;
	errcode_t e = io_channel_write_byte(f->ch, 50 * U + 4000, sizeof(buf), buf);
	fail_memalign = 0;
	assert_int_equal(e, 0);
	memcpy(m.b + 50 * U + 4000, buf, sizeof(buf));
	expect_disk(f, &m, "partial units written through");
	/* Whole unit from an aligned buffer. */
	write_through_case(f, &m, 0, 60);
	expect_channel(f, &m, 4096, "after write-through");
	assert_int_equal(journal_flush(f->j), 0);
	expect_disk(f, &m, "after flush");
	free(m.b);
}

/* Same from a buffer libext2fs could hand in (malloc'd: 16-byte aligned). */
static void test_write_through_unaligned_buffer(void **state)
{  /* regression: write-through of an unaligned buffer */
	struct fx *f = *state = fx_new(0, 0);
	struct model m = model_new();
	write_through_case(f, &m, 16, 61);
	free(m.b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_missing_lun_names_path),
		cmocka_unit_test(test_directory_lun_refused),
		cmocka_unit_test(test_bad_channel_name),
		cmocka_unit_test_teardown(test_write_back_4k, teardown),
		cmocka_unit_test_teardown(test_write_back_1k_spanning_units, teardown),
		cmocka_unit_test_teardown(test_negative_counts_are_bytes, teardown),
		cmocka_unit_test_teardown(test_write_byte_unaligned, teardown),
		cmocka_unit_test_teardown(test_long_runs, teardown),
		cmocka_unit_test_teardown(test_eviction_writes_back, teardown),
		cmocka_unit_test_teardown(test_tiny_cache_partial_writes, teardown),
		cmocka_unit_test_teardown(test_forget_drops_dirty, teardown),
		cmocka_unit_test_teardown(test_zeroout_punches, teardown),
		cmocka_unit_test_teardown(test_read_only_refuses_writes, teardown),
		cmocka_unit_test_teardown(test_stats, teardown),
		cmocka_unit_test_teardown(test_short_read_past_end, teardown),
		cmocka_unit_test_teardown(test_close_with_dirty_blocks_logs, teardown),
		cmocka_unit_test_teardown(test_concurrent_channel_io, teardown),
		cmocka_unit_test_teardown(test_write_through_without_memory, teardown),
		cmocka_unit_test_teardown(test_write_through_unaligned_buffer, teardown),
	};
	return cmocka_run_group_tests_name("iomgr", tests, NULL, NULL);
}
