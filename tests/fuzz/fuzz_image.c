// fuzz-sources: fs/[!m]*.c fs/m[!a]*.c journal/*.c dlm-glue/*.c redirect-io/*.c
// fuzz-cflags: -Wall -Wextra -Werror -Wno-unused-parameter -I/usr/include/fuse3 -I/usr/include/ext2fs -I/usr/include/et -I/usr/include/blkid
// fuzz-libs: -Wl,--wrap=csvfs_log -lfuse3 -lext2fs -lcom_err -lblkid -lcpg -lquorum -lvotequorum -lcmap -lqb -lssl -lcrypto -luring -luuid -lm
// fuzz-args: -max_len=321 -len_control=10
/* libFuzzer harness over the metadata engine reading a damaged volume
 * (docs/hostile-input.md): the metadata blocks of a small populated csvfs
 * image are patched from the input, then the engine mounts it, walks it
 * (readdir, lookup, stat, readlink, xattrs, read every file), makes a few
 * changes and unmounts, all through fs/fsops.h as the FUSE front end calls
 * it (standalone: the engine in this process, fs/ops_local.c), under
 * ASan/UBSan. No FUSE, no daemon.
 *
 * At startup two base images are built in $FUZZ_IMAGE_DIR (default
 * /dev/shm, else $TMPDIR or /tmp) with csvfs_format and the engine itself:
 *  A: cleanly unmounted: directories, a directory of 80 long names (an
 *     htree with a root and six leaves), small and multi-block files, a file of
 *     20 separate extents (extent tree depth 1), a fast and a block symlink,
 *     hard links, a fifo, xattrs in the inode and in an xattr block;
 *  B: A after more changes, copied while still mounted after a commit: its
 *     journal holds transactions to replay and its orphan list an open,
 *     unlinked file (its MMP block reset to clean so the mount does not wait
 *     out the heartbeat).
 * Each is kept in memory as its non-zero blocks, with a catalogue of the
 * regions worth damaging: the superblock, the group descriptors, the block
 * and inode bitmaps, every inode in use, every extent tree block, directory
 * and htree block, the xattr block, the block symlink's block and the
 * journal's used blocks.
 *
 * Input: [u8 flags] then up to 16 records [u8 target][u16 offset, LE]
 * [u8 ctl][n bytes]: n = (ctl & 15) + 1 bytes are written at offset (mod the
 * region's length) into region target (mod the catalogue's length); with
 * ctl & 0x80 the region's checksum is made right again afterwards, so the
 * damage reaches the engine's own checks rather than libext2fs's checksum
 * test. flags & 1: image B (else A); flags & 2: errors=continue (else the
 * default remount-ro).
 *
 * Invariants beyond "no crash, no sanitizer report, no leak, no hang"
 * (libFuzzer's -timeout):
 *  - a failed mount says why; every status is 0 or a negative errno;
 *  - a file the engine says it wrote reads back with exactly those bytes;
 *  - after unmount no file data lies in an inode table or bitmap block, and
 *    no inode claims a block of the system zones that none claimed before;
 *  - no block a file read returns is a metadata block of the base image (the
 *    superblock, descriptors, bitmaps, inode table, the journal's own blocks,
 *    MMP block): every file the images hold is letters or holes;
 *  - unmount returns.
 *
 * FUZZ_IMAGE_VERBOSE=1 lets the engine's log lines through; FUZZ_IMAGE_KEEP=1
 * keeps the base images' files (to look at with debugfs); FUZZ_IMAGE_PROFILE=1
 * prints at exit where the executions' wall time went, phase by phase. The base images
 * have a fixed GUID and hash seed, so a crashing input replays on another
 * run; inode generations and times differ from run to run. */
#include "fs/csvfs.h"
#include "fs/fsops.h"
#include "fs/meta.h"
#include "journal/jbd2.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz_image: check failed: %s (%s:%d)\n", #c, __FILE__, __LINE__); abort(); } } while (0)

#define IMAGE_BYTES (160ull << 20)   /* two block groups: a backup superblock, two descriptors */
#define BS 4096u
#define MAX_RECORDS 16
/* The htree directory: a root and six leaves, as 400 names of 29 bytes
 * gave, from 80 names of 190 bytes: five times fewer lookups per walk. */
#define BIG_DIR_NAMES 80
#define BIG_NAME_LEN 190
#define FRAG_EXTENTS 20
#define WALK_MAX_DEPTH 6
#define WALK_MAX_ENTRIES 1500
#define READ_MAX_BYTES (1u << 20)
#define CACHE_BYTES (1u << 20)       /* the metadata cache: a small volume needs little */
#define VOLUME_GUID "f022ab1e-0000-4000-8000-000000000016"

/* The harness's own scans of whole blocks are not instrumented for
 * coverage: they would feed libFuzzer features that say nothing about the
 * engine (and cost a comparison hook per byte). Not inlined: inlined into an
 * instrumented caller they would be instrumented after all. */
#define NO_COVERAGE __attribute__((no_sanitize("coverage"), noinline))

NO_COVERAGE static int block_is_zero(const uint8_t *p)
{
	uint64_t acc = 0;
	for (unsigned i = 0; i < BS; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		acc |= w;
	}
	return acc == 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void __wrap_csvfs_log(int level, const char *fmt, ...);

static int verbose, keep_bases, profile;

void __wrap_csvfs_log(int level, const char *fmt, ...)
{
	if (!verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	csvfs_vlog(NULL, level, fmt, ap);
	va_end(ap);
}

/* ---- where an execution's time goes (FUZZ_IMAGE_PROFILE=1) --------------------- */

enum phase { P_DAMAGE, P_MOUNT, P_WALK, P_CHANGES, P_UNMOUNT, P_GROUP_CHECK, P_CLAIMS, P_COUNT };
static const char *const phase_names[P_COUNT] = { "damage and image restore", "mount (volume_open)",
	"walk", "changes", "unmount (volume_close)", "group metadata check", "system zone claims" };
/* Wall time and the process's CPU time (on a loaded machine the fair one). */
static struct { double wall[P_COUNT], cpu[P_COUNT]; unsigned long execs, mounted;
		double last_wall, last_cpu; } prof;

static double clock_seconds(clockid_t c)
{
	struct timespec t;
	clock_gettime(c, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The time since the previous mark goes to phase p. */
static void prof_mark(enum phase p)
{
	if (!profile)
		return;
	double wall = clock_seconds(CLOCK_MONOTONIC), cpu = clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
	if (p != P_COUNT) {
		prof.wall[p] += wall - prof.last_wall;
		prof.cpu[p] += cpu - prof.last_cpu;
	}
	prof.last_wall = wall;
	prof.last_cpu = cpu;
}

static void prof_report(void)
{
	double total = 0;
	for (int p = 0; p < P_COUNT; p++)
		total += prof.cpu[p];
	fprintf(stderr, "fuzz_image: profile of %lu executions (%lu mounted), per execution:\n",
		prof.execs, prof.mounted);
	for (int p = 0; p < P_COUNT && prof.execs; p++)
		fprintf(stderr, "fuzz_image:   %-26s %7.3f ms CPU %5.1f%%, %7.3f ms wall\n", phase_names[p],
			prof.cpu[p] * 1e3 / (double)prof.execs, total > 0 ? 100 * prof.cpu[p] / total : 0,
			prof.wall[p] * 1e3 / (double)prof.execs);
	fprintf(stderr, "fuzz_image:   %-26s %7.3f ms CPU\n", "in all", total * 1e3 / (double)prof.execs);
}

/* ---- base images, kept as their non-zero blocks ---------------------------- */

enum region_kind { R_SUPER, R_GDT, R_BITMAP, R_INODE, R_EXTENT, R_DIR, R_XATTR, R_DATA, R_JOURNAL };
static const char *const region_names[] = { "superblock", "group descriptors", "bitmap", "inode",
	"extent block", "directory block", "xattr block", "symlink block", "journal block" };

struct region {
	enum region_kind kind;
	uint64_t blk;                  /* the block holding it */
	uint32_t off, len;             /* within that block */
	ext2_ino_t owner;              /* inode it belongs to (checksum seed); R_BITMAP: group */
	int journal_sb;                /* R_JOURNAL: the journal superblock */
	int inode_bitmap;              /* R_BITMAP: of inodes (else of blocks) */
};

struct base {
	size_t n;                      /* non-zero blocks */
	uint64_t *blk;                 /* sorted */
	uint8_t *data;                 /* n * BS, in blk order */
	struct region *r;
	size_t nr, rcap;
	ext2_filsys fs;                /* read-only, for checksums */
	struct jbd2_format jfmt;
	int jfmt_ok;
	struct zone_sum { uint32_t crc; uint64_t blk; } *zs;   /* metadata blocks, by crc */
	size_t nzs;
	struct range { uint64_t start, end; } *zones;        /* group metadata, journal, MMP */
	size_t nzones;
};

static struct base bases[2];
static const struct base *cur;         /* the base of the input being run */
static char image[256];
static int image_fd = -1;
static char image_before[256];         /* the damaged image again, to read the claims before */
static int image_before_fd = -1;

static void region_add(struct base *b, enum region_kind k, uint64_t blk, uint32_t off,
		       uint32_t len, ext2_ino_t owner)
{
	if (b->nr == b->rcap) {
		b->rcap = b->rcap ? b->rcap * 2 : 64;
		b->r = realloc(b->r, b->rcap * sizeof(*b->r));
		CHECK(b->r);
	}
	b->r[b->nr++] = (struct region){ .kind = k, .blk = blk, .off = off, .len = len, .owner = owner };
}

NO_COVERAGE static const uint8_t *base_block(const struct base *b, uint64_t blk)
{
	size_t lo = 0, hi = b->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (b->blk[mid] < blk)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < b->n && b->blk[lo] == blk ? b->data + lo * BS : NULL;
}

static void base_load(struct base *b, const char *path)
{
	int fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	static uint8_t buf[BS], zero[BS];
	size_t cap = 0;
	for (uint64_t blk = 0; blk < IMAGE_BYTES / BS; blk++) {
		CHECK(pread(fd, buf, BS, (off_t)(blk * BS)) == (ssize_t)BS);
		if (memcmp(buf, zero, BS) == 0)
			continue;
		if (b->n == cap) {
			cap = cap ? cap * 2 : 1024;
			b->blk = realloc(b->blk, cap * sizeof(*b->blk));
			b->data = realloc(b->data, cap * BS);
			CHECK(b->blk && b->data);
		}
		b->blk[b->n] = blk;
		memcpy(b->data + b->n * BS, buf, BS);
		b->n++;
	}
	close(fd);
}

struct iter_ctx { struct base *b; ext2_ino_t ino; int is_dir, is_journal, is_symlink; };

static int catalogue_block(ext2_filsys fs, blk64_t *blk, e2_blkcnt_t cnt, blk64_t ref,
			   int refoff, void *arg)
{
	(void)fs, (void)ref, (void)refoff;
	struct iter_ctx *c = arg;
	if (cnt < 0)
		region_add(c->b, R_EXTENT, *blk, 0, BS, c->ino);
	else if (c->is_dir)
		region_add(c->b, R_DIR, *blk, 0, BS, c->ino);
	else if (c->is_symlink)
		region_add(c->b, R_DATA, *blk, 0, BS, c->ino);
	else if (c->is_journal && base_block(c->b, *blk)) {
		region_add(c->b, R_JOURNAL, *blk, 0, BS, c->ino);
		c->b->r[c->b->nr - 1].journal_sb = cnt == 0;
	}
	return 0;
}

static void catalogue(struct base *b, const char *path)
{
	CHECK(ext2fs_open(path, EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP, 0, 0, unix_io_manager, &b->fs) == 0);
	ext2_filsys fs = b->fs;
	CHECK(fs->blocksize == BS && ext2fs_read_bitmaps(fs) == 0);
	region_add(b, R_SUPER, 0, 1024, 1024, 0);
	region_add(b, R_GDT, 1, 0, EXT2_DESC_SIZE(fs->super) * fs->group_desc_count, 0);
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		region_add(b, R_BITMAP, ext2fs_block_bitmap_loc(fs, g), 0, BS, g);
		region_add(b, R_BITMAP, ext2fs_inode_bitmap_loc(fs, g), 0, BS, g);
		b->r[b->nr - 1].inode_bitmap = 1;
	}
	unsigned isz = EXT2_INODE_SIZE(fs->super);
	for (ext2_ino_t ino = 1; ino <= fs->super->s_inodes_count; ino++) {
		if (!ext2fs_test_inode_bitmap2(fs->inode_map, ino))
			continue;
		dgrp_t g = (ino - 1) / fs->super->s_inodes_per_group;
		uint64_t byte = (uint64_t)((ino - 1) % fs->super->s_inodes_per_group) * isz;
		region_add(b, R_INODE, ext2fs_inode_table_loc(fs, g) + byte / BS, (uint32_t)(byte % BS), isz, ino);
		struct ext2_inode in;
		CHECK(ext2fs_read_inode(fs, ino, &in) == 0);
		if (ext2fs_file_acl_block(fs, &in))
			region_add(b, R_XATTR, ext2fs_file_acl_block(fs, &in), 0, BS, ino);
		if (!(in.i_flags & EXT4_EXTENTS_FL) || ino == EXT2_RESIZE_INO || ino == EXT2_BAD_INO)
			continue;
		struct iter_ctx c = { b, ino, LINUX_S_ISDIR(in.i_mode), ino == EXT2_JOURNAL_INO,
				      LINUX_S_ISLNK(in.i_mode) };
		if (c.is_dir || c.is_journal || c.is_symlink || ino >= EXT2_FIRST_INO(fs->super))
			CHECK(ext2fs_block_iterate3(fs, ino, c.is_dir || c.is_journal || c.is_symlink ? 0 :
						    BLOCK_FLAG_READ_ONLY, NULL, catalogue_block, &c) == 0);
	}
	/* The journal's format, to make its block checksums right again. */
	for (size_t i = 0; i < b->nr; i++) {
		if (b->r[i].kind != R_JOURNAL || !b->r[i].journal_sb)
			continue;
		struct jbd2_superblock sb;
		struct jbd2_error err;
		const uint8_t *raw = base_block(b, b->r[i].blk);
		b->jfmt_ok = jbd2_superblock_decode(raw, JBD2_SUPERBLOCK_SIZE, &sb, &err) == 0 &&
			     jbd2_format_init(&b->jfmt, &sb, ext2fs_blocks_count(fs->super), &err) == 0;
		b->r[i].len = JBD2_SUPERBLOCK_SIZE;
	}
}

static int zone_sum_cmp(const void *a, const void *b)
{
	const struct zone_sum *x = a, *y = b;
	return x->crc < y->crc ? -1 : x->crc > y->crc;
}

static uint32_t block_crc(const uint8_t *p)
{
	return ext2fs_crc32c_le(~0u, p, BS);
}

/* The metadata blocks' checksums, to recognise one served as file data. Of
 * the journal only its own blocks (superblock, descriptor, commit, revoke:
 * they start with the journal magic): the rest are copies of other blocks,
 * a symlink's block among them. */
static void zone_sums(struct base *b)
{
	b->zs = calloc(b->nr + 1, sizeof(*b->zs));
	CHECK(b->zs);
	uint64_t mmp = b->fs->super->s_mmp_block;
	for (size_t i = 0; i <= b->nr; i++) {
		uint64_t blk = i < b->nr ? b->r[i].blk : mmp;
		int meta = i == b->nr || b->r[i].kind == R_SUPER || b->r[i].kind == R_GDT ||
			   b->r[i].kind == R_BITMAP || b->r[i].kind == R_INODE || b->r[i].kind == R_JOURNAL;
		const uint8_t *p = base_block(b, blk);
		if (meta && p && i < b->nr && b->r[i].kind == R_JOURNAL && jbd2_get_be32(p) != JBD2_MAGIC)
			meta = 0;
		if (meta && p)
			b->zs[b->nzs++] = (struct zone_sum){ block_crc(p), blk };
	}
	qsort(b->zs, b->nzs, sizeof(*b->zs), zone_sum_cmp);
}

/* The base's metadata block whose bytes p holds, or 0. */
NO_COVERAGE static uint64_t metadata_block_like(const struct base *b, const uint8_t *p)
{
	uint32_t crc = block_crc(p);
	for (size_t i = 0; i < b->nzs; i++)
		if (b->zs[i].crc == crc && memcmp(base_block(b, b->zs[i].blk), p, BS) == 0)
			return b->zs[i].blk ? b->zs[i].blk : UINT64_MAX;
	return 0;
}

static void zone_range(struct base *b, uint64_t start, uint64_t len)
{
	b->zones = realloc(b->zones, (b->nzones + 1) * sizeof(*b->zones));
	CHECK(b->zones);
	b->zones[b->nzones++] = (struct range){ start, start + len };
}

static int journal_range_cb(ext2_filsys fs, blk64_t *blk, e2_blkcnt_t cnt, blk64_t ref,
			    int refoff, void *arg)
{
	(void)fs, (void)cnt, (void)ref, (void)refoff;
	struct base *b = arg;
	if (b->nzones && b->zones[b->nzones - 1].end == *blk)
		b->zones[b->nzones - 1].end++;
	else
		zone_range(b, *blk, 1);
	return 0;
}

/* Where the base's system zones are: no file may come to claim a block of
 * them (the fuzzer's "made worse" check). */
static void zone_ranges(struct base *b)
{
	ext2_filsys fs = b->fs;
	zone_range(b, 0, 1 + fs->desc_blocks + fs->super->s_reserved_gdt_blocks);
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		blk64_t super = 0, old_desc = 0, new_desc = 0;
		blk_t used = 0;
		ext2fs_super_and_bgd_loc2(fs, g, &super, &old_desc, &new_desc, &used);
		if (g && super)
			zone_range(b, super, 1 + fs->desc_blocks + fs->super->s_reserved_gdt_blocks);
		zone_range(b, ext2fs_block_bitmap_loc(fs, g), 1);
		zone_range(b, ext2fs_inode_bitmap_loc(fs, g), 1);
		zone_range(b, ext2fs_inode_table_loc(fs, g), fs->inode_blocks_per_group);
	}
	zone_range(b, fs->super->s_mmp_block, 1);
	CHECK(ext2fs_block_iterate3(fs, EXT2_JOURNAL_INO, BLOCK_FLAG_READ_ONLY, NULL,
				    journal_range_cb, b) == 0);
}

/* ---- building the base images with the engine ------------------------------- */

static const struct meta_cred root_cred = { 0, 0, 022 };

static ext2_ino_t mk(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode)
{
	struct meta_attr a;
	CHECK(fsop_create(v, parent, name, mode, 0, &root_cred, &a) == 0);
	return (ext2_ino_t)a.ino;
}

/* Not instrumented either: 10,000 bytes a new file, a hook per byte. */
NO_COVERAGE static void fill(char *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)('a' + (i * 7 + seed) % 26);
}

/* A file with len bytes at each of the given offsets. */
static ext2_ino_t mkfile(struct volume *v, ext2_ino_t parent, const char *name,
			 const uint64_t *offs, size_t n, size_t len, struct minode **keep)
{
	struct meta_attr a;
	struct minode *m;
	char *buf = malloc(len);
	CHECK(buf);
	fill(buf, len, (unsigned)len);
	CHECK(fsop_create_open(v, parent, name, S_IFREG | 0644, &root_cred, &a, &m) == 0);
	for (size_t i = 0; i < n; i++)
		CHECK(fsop_write(v, m, buf, len, offs[i]) == (ssize_t)len);
	free(buf);
	if (keep)
		*keep = m;
	else
		CHECK(fsop_release(v, m) == 0);
	return (ext2_ino_t)a.ino;
}

/* Name i of the htree directory: "entry-NNNN-" padded to BIG_NAME_LEN. */
static void big_name(char *buf, size_t size, int i)
{
	static const char pad[] = "with-a-longer-name-";
	CHECK(size > BIG_NAME_LEN);
	int n = snprintf(buf, size, "entry-%04d-", i);
	for (; n < BIG_NAME_LEN; n++)
		buf[n] = pad[n % (sizeof(pad) - 1)];
	buf[n] = 0;
}

static void populate(struct volume *v)
{
	const ext2_ino_t root = EXT2_ROOT_INO;
	ext2_ino_t d1 = mk(v, root, "d1", S_IFDIR | 0755);
	ext2_ino_t d2 = mk(v, d1, "d2", S_IFDIR | 0700);
	ext2_ino_t big = mk(v, root, "big", S_IFDIR | 0755);
	uint64_t zero = 0;
	ext2_ino_t small = mkfile(v, d1, "small.txt", &zero, 1, 100, NULL);
	mkfile(v, d2, "three-blocks", &zero, 1, 3 * BS + 17, NULL);
	mkfile(v, root, "empty", &zero, 0, 1, NULL);
	uint64_t offs[FRAG_EXTENTS];
	for (int i = 0; i < FRAG_EXTENTS; i++)
		offs[i] = (uint64_t)(2 * i + 1) * BS * 8;   /* holes between: one extent each */
	mkfile(v, root, "fragmented", offs, FRAG_EXTENTS, BS, NULL);
	struct meta_attr a;
	char name[256], target[300];
	for (int i = 0; i < BIG_DIR_NAMES; i++) {   /* names of one file: the htree, not inodes */
		big_name(name, sizeof(name), i);
		CHECK(fsop_link(v, small, big, name, &a) == 0);
	}
	CHECK(fsop_symlink(v, root, "fast-link", "d1/small.txt", &root_cred, &a) == 0);
	memset(target, 'x', sizeof(target) - 1);
	target[sizeof(target) - 1] = 0;
	memcpy(target, "d1/", 3);
	CHECK(fsop_symlink(v, d1, "block-link", target, &root_cred, &a) == 0);
	mk(v, d1, "fifo", S_IFIFO | 0644);
	CHECK(fsop_setxattr(v, small, "user.inline", "value", 5, 0) == 0);
	ext2_ino_t x = mkfile(v, d1, "xattr-block", &zero, 1, 10, NULL);
	char val[2000];
	fill(val, sizeof(val), 3);
	CHECK(fsop_setxattr(v, x, "user.big", val, sizeof(val), 0) == 0);
	CHECK(fsop_setxattr(v, d1, "user.dir", "d", 1, 0) == 0);
}

/* More changes, committed to the journal but not checkpointed; an open,
 * unlinked file on the orphan list. */
static struct minode *change_after_commit(struct volume *v)
{
	uint64_t zero = 0, far = 100 * BS;
	struct minode *orphan;
	mkfile(v, EXT2_ROOT_INO, "journaled", &far, 1, 2 * BS, NULL);
	mkfile(v, EXT2_ROOT_INO, "orphan", &zero, 1, 5000, &orphan);
	CHECK(fsop_unlink(v, EXT2_ROOT_INO, "orphan") == 0);
	CHECK(fsop_rename(v, EXT2_ROOT_INO, "empty", EXT2_ROOT_INO, "moved", 0, &root_cred) == 0);
	mk(v, EXT2_ROOT_INO, "dir-in-journal", S_IFDIR | 0755);
	char name[256];
	struct meta_attr a;
	CHECK(fsop_lookup(v, EXT2_ROOT_INO, "big", &a) == 0);
	for (int i = 0; i < BIG_DIR_NAMES / 10; i++) {
		big_name(name, sizeof(name), i);
		CHECK(fsop_unlink(v, (ext2_ino_t)a.ino, name) == 0);
	}
	CHECK(volume_sync(v) == 0);
	/* Committed, and its home writes (the journal's home writer, after the
	 * commit) done: B is copied next and read by libext2fs without a replay,
	 * so its home blocks must not be half written. */
	(void)journal_durable_id(v->journal);
	return orphan;
}

static void copy_file(const char *from, const char *to)
{
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(in >= 0 && out >= 0 && ftruncate(out, (off_t)IMAGE_BYTES) == 0);
	static uint8_t buf[1 << 16], zero[1 << 16];
	for (off_t off = 0; off < (off_t)IMAGE_BYTES; off += (off_t)sizeof(buf)) {
		CHECK(pread(in, buf, sizeof(buf), off) == (ssize_t)sizeof(buf));
		if (memcmp(buf, zero, sizeof(buf)) != 0)
			CHECK(pwrite(out, buf, sizeof(buf), off) == (ssize_t)sizeof(buf));
	}
	close(in);
	close(out);
}

/* B was copied while mounted: its MMP block says "held". Reset it, as
 * csvfs_set_guid does for a fresh snapshot copy. */
static void mmp_make_clean(struct base *b)
{
	uint64_t blk = b->fs->super->s_mmp_block;
	for (size_t i = 0; i < b->n; i++) {
		if (b->blk[i] != blk)
			continue;
		struct mmp_struct *mmp = (struct mmp_struct *)(b->data + i * BS);
		mmp->mmp_seq = EXT4_MMP_SEQ_CLEAN;
		CHECK(ext2fs_mmp_csum_set(b->fs, mmp) == 0);
	}
}

/* The same htree layout every run (the format picks a random seed; the root
 * holds one leaf then, so its index stays right). */
static void fix_hash_seed(const char *path)
{
	ext2_filsys fs;
	CHECK(ext2fs_open(path, EXT2_FLAG_RW | EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP, 0, 0,
			  unix_io_manager, &fs) == 0);
	for (unsigned i = 0; i < 4; i++)
		fs->super->s_hash_seed[i] = 0x16160000u + i;
	ext2fs_mark_super_dirty(fs);
	CHECK(ext2fs_close_free(&fs) == 0);
}

static void build_bases(const char *dir)
{
	char a[300], bpath[300], work[300], err[512] = "", guid[37];
	snprintf(a, sizeof(a), "%s/fuzz_image.%d.A", dir, (int)getpid());
	snprintf(bpath, sizeof(bpath), "%s/fuzz_image.%d.B", dir, (int)getpid());
	snprintf(work, sizeof(work), "%s/fuzz_image.%d.work", dir, (int)getpid());
	unlink(a);
	struct csvfs_format_opts fo = { .lun = a, .create_size = IMAGE_BYTES, .uuid = VOLUME_GUID };
	if (csvfs_format(&fo, guid, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_image: csvfs_format(%s): %s\n", a, err);
		abort();
	}
	fix_hash_seed(a);
	struct volume_opts o = { .lun = a, .cache_bytes = CACHE_BYTES };
	struct volume *v;
	CHECK(volume_open(&o, &v, err, sizeof(err)) == 0);
	populate(v);
	volume_close(v);

	copy_file(a, work);
	o.lun = work;
	CHECK(volume_open(&o, &v, err, sizeof(err)) == 0);
	struct minode *orphan = change_after_commit(v);
	copy_file(work, bpath);
	fsop_release(v, orphan);
	volume_close(v);

	base_load(&bases[0], a);
	base_load(&bases[1], bpath);
	catalogue(&bases[0], a);
	catalogue(&bases[1], bpath);
	mmp_make_clean(&bases[1]);
	zone_sums(&bases[0]);
	zone_sums(&bases[1]);
	zone_ranges(&bases[0]);
	zone_ranges(&bases[1]);
	CHECK(ext2fs_has_feature_journal_needs_recovery(bases[1].fs->super));
	unlink(work);
	if (keep_bases) {
		fprintf(stderr, "fuzz_image: base images kept: %s %s (B's MMP block not reset)\n", a, bpath);
		return;
	}
	unlink(a);
	unlink(bpath);
}

static void remove_image(void)
{
	unlink(image);
	unlink(image_before);
}

/* Images earlier runs left when they crashed (their process is gone); base
 * images kept with FUZZ_IMAGE_KEEP stay. */
static void remove_stale_images(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		int pid;
		char tail[8], path[600];
		if (sscanf(e->d_name, "fuzz_image.%d.%7s", &pid, tail) != 2 || pid <= 0 ||
		    (strcmp(tail, "img") != 0 && strcmp(tail, "before") != 0) || kill(pid, 0) == 0 ||
		    errno != ESRCH)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *e = getenv("FUZZ_IMAGE_VERBOSE");
	verbose = e && *e == '1';
	e = getenv("FUZZ_IMAGE_KEEP");
	keep_bases = e && *e == '1';
	e = getenv("FUZZ_IMAGE_PROFILE");
	profile = e && *e == '1';
	const char *dir = getenv("FUZZ_IMAGE_DIR");
	if (!dir || !*dir)
		dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/tmp";
	initialize_ext2_error_table();
	remove_stale_images(dir);
	build_bases(dir);
	snprintf(image, sizeof(image), "%s/fuzz_image.%d.img", dir, (int)getpid());
	image_fd = open(image, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(image_fd >= 0);
	snprintf(image_before, sizeof(image_before), "%s/fuzz_image.%d.before", dir, (int)getpid());
	atexit(remove_image);
	if (profile)
		atexit(prof_report);
	for (int i = 0; i < 2; i++)
		fprintf(stderr, "fuzz_image: base %c: %zu non-zero blocks, %zu regions to damage\n",
			'A' + i, bases[i].n, bases[i].nr);
	return 0;
}

/* ---- damaging a copy ----------------------------------------------------------- */

struct patched { uint64_t blk; uint8_t data[BS]; };

static uint8_t *patched_block(const struct base *b, struct patched *p, size_t *np, uint64_t blk)
{
	for (size_t i = 0; i < *np; i++)
		if (p[i].blk == blk)
			return p[i].data;
	const uint8_t *src = base_block(b, blk);
	p[*np].blk = blk;
	if (src)
		memcpy(p[*np].data, src, BS);
	else
		memset(p[*np].data, 0, BS);
	return p[(*np)++].data;
}

static void gdt_csum_fix(const struct base *b, uint8_t *gdt)
{
	unsigned dsz = EXT2_DESC_SIZE(b->fs->super);
	for (dgrp_t g = 0; g < b->fs->group_desc_count; g++) {
		struct ext4_group_desc *d = (struct ext4_group_desc *)(gdt + g * dsz);
		d->bg_checksum = 0;
		uint32_t crc = ext2fs_crc32c_le(b->fs->csum_seed, (unsigned char *)&g, sizeof(g));
		d->bg_checksum = (uint16_t)(ext2fs_crc32c_le(crc, (unsigned char *)d, dsz) & 0xffff);
	}
}

static void journal_csum_fix(const struct base *b, const struct region *r, uint8_t *blk)
{
	if (r->journal_sb) {
		jbd2_put_be32(blk + offsetof(struct jbd2_disk_superblock, s_checksum),
			      jbd2_superblock_checksum(blk));
		return;
	}
	if (!b->jfmt_ok)
		return;
	struct jbd2_header h;
	jbd2_header_decode(blk, &h);
	if (h.magic != JBD2_MAGIC)
		return;
	if (h.blocktype == JBD2_BLOCKTYPE_DESCRIPTOR || h.blocktype == JBD2_BLOCKTYPE_REVOKE)
		jbd2_block_tail_set(&b->jfmt, blk);
	else if (h.blocktype == JBD2_BLOCKTYPE_COMMIT)
		jbd2_put_be32(blk + offsetof(struct jbd2_disk_commit, h_chksum),
			      jbd2_commit_checksum(&b->jfmt, blk));
}

/* A bitmap's checksum lives in its group's descriptor (whose own checksum
 * the caller makes right afterwards). */
static void bitmap_csum_fix(const struct base *b, const struct region *r, const uint8_t *bitmap,
			    uint8_t *gdt)
{
	ext2_filsys fs = b->fs;
	struct ext4_group_desc *d = (struct ext4_group_desc *)(gdt + r->owner * EXT2_DESC_SIZE(fs->super));
	uint32_t crc = ext2fs_crc32c_le(fs->csum_seed, bitmap, r->inode_bitmap ?
					EXT2_INODES_PER_GROUP(fs->super) / 8 :
					EXT2_CLUSTERS_PER_GROUP(fs->super) / 8);
	if (r->inode_bitmap) {
		d->bg_inode_bitmap_csum_lo = (uint16_t)crc;
		d->bg_inode_bitmap_csum_hi = (uint16_t)(crc >> 16);
	} else {
		d->bg_block_bitmap_csum_lo = (uint16_t)crc;
		d->bg_block_bitmap_csum_hi = (uint16_t)(crc >> 16);
	}
}

/* Makes the region's checksum right again for what it now holds. */
static void csum_fix(const struct base *b, const struct region *r, uint8_t *blk)
{
	ext2_filsys fs = b->fs;
	uint8_t *p = blk + r->off;
	switch (r->kind) {
	case R_SUPER:
		ext2fs_superblock_csum_set(fs, (struct ext2_super_block *)p);
		break;
	case R_GDT:
		gdt_csum_fix(b, p);
		break;
	case R_INODE:
		ext2fs_inode_csum_set(fs, r->owner, (struct ext2_inode_large *)p);
		break;
	case R_EXTENT:
		ext2fs_extent_block_csum_set(fs, r->owner, (struct ext3_extent_header *)p);
		break;
	case R_DIR:
		ext2fs_dir_block_csum_set(fs, r->owner, (struct ext2_dir_entry *)p);
		break;
	case R_XATTR:
		ext2fs_ext_attr_block_csum_set(fs, r->owner, r->blk, (struct ext2_ext_attr_header *)p);
		break;
	case R_JOURNAL:
		journal_csum_fix(b, r, blk);
		break;
	case R_BITMAP: case R_DATA:
		break;
	}
}

/* Punches out the blocks of the image file outside the base: what the
 * previous input's run (or patches) wrote there. The file is kept from one
 * input to the next rather than truncated: on tmpfs a truncation frees every
 * page and the next writes allocate them again, which was most of the time
 * this step took. Without SEEK_DATA every block is looked at. */
static void punch_outside_base(int fd, const struct base *b)
{
	off_t at = 0;
	while (at < (off_t)IMAGE_BYTES) {
		off_t data = lseek(fd, at, SEEK_DATA);
		if (data < 0)
			break;                  /* ENXIO: no data after at */
		off_t hole = lseek(fd, data, SEEK_HOLE);
		CHECK(hole > data);
		for (uint64_t blk = (uint64_t)data / BS; blk * BS < (uint64_t)hole;) {
			uint64_t end = blk;
			while (end * BS < (uint64_t)hole && !base_block(b, end))
				end++;
			if (end > blk)
				CHECK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(blk * BS),
						(off_t)((end - blk) * BS)) == 0);
			blk = end + 1;          /* end is a base block (or past the run) */
		}
		at = hole;
	}
}

/* An image file: the base's blocks (contiguous runs in one write), then the
 * patched ones over them, every other block a hole. */
static void write_image(int fd, const struct base *b, const struct patched *p, size_t np)
{
	struct stat st;
	CHECK(fstat(fd, &st) == 0);
	if (st.st_size != (off_t)IMAGE_BYTES)
		CHECK(ftruncate(fd, 0) == 0 && ftruncate(fd, (off_t)IMAGE_BYTES) == 0);
	else
		punch_outside_base(fd, b);
	for (size_t i = 0; i < b->n;) {
		size_t j = i + 1;
		while (j < b->n && b->blk[j] == b->blk[j - 1] + 1)
			j++;
		size_t len = (j - i) * BS;
		CHECK(pwrite(fd, b->data + i * BS, len, (off_t)(b->blk[i] * BS)) == (ssize_t)len);
		i = j;
	}
	for (size_t i = 0; i < np; i++)
		CHECK(pwrite(fd, p[i].data, BS, (off_t)(p[i].blk * BS)) == (ssize_t)BS);
}

/* The blocks the input patched, kept to write the damaged image again. */
static struct patched patches[MAX_RECORDS];
static size_t npatches;

static void damage(const struct base *b, const uint8_t *data, size_t size)
{
	struct patched *p = patches;
	size_t np = 0, off = 0;
	const struct region *fix[MAX_RECORDS];
	size_t nfix = 0;
	for (int rec = 0; rec < MAX_RECORDS && size - off >= 4; rec++) {
		const struct region *r = &b->r[data[off] % b->nr];
		uint32_t at = (uint32_t)(data[off + 1] | data[off + 2] << 8) % r->len;
		uint8_t ctl = data[off + 3];
		size_t n = (ctl & 15u) + 1;
		off += 4;
		if (n > size - off)
			n = size - off;
		if (n > r->len - at)
			n = r->len - at;
		uint8_t *blk = patched_block(b, p, &np, r->blk);
		memcpy(blk + r->off + at, data + off, n);
		if (verbose)
			fprintf(stderr, "fuzz_image: damage: %s of inode %u, block %llu, byte %u: %zu bytes%s\n",
				region_names[r->kind], r->owner, (unsigned long long)r->blk, r->off + at, n,
				ctl & 0x80 ? ", checksum made right" : "");
		off += n;
		if (ctl & 0x80)
			fix[nfix++] = r;
	}
	const struct region *gdt = &b->r[1];
	int bitmaps = 0;
	for (size_t i = 0; i < nfix; i++) {
		if (fix[i]->kind != R_BITMAP)
			continue;
		bitmap_csum_fix(b, fix[i], patched_block(b, p, &np, fix[i]->blk),
				patched_block(b, p, &np, gdt->blk) + gdt->off);
		bitmaps = 1;
	}
	for (size_t i = 0; i < nfix; i++)
		csum_fix(b, fix[i], patched_block(b, p, &np, fix[i]->blk));
	if (bitmaps)
		gdt_csum_fix(b, patched_block(b, p, &np, gdt->blk) + gdt->off);
	npatches = np;
	write_image(image_fd, b, p, np);
}

/* ---- what a user does on the mounted volume ------------------------------------ */

#define STATUS_OK(call) do { long rc_ = (call); CHECK(rc_ <= 0 && rc_ > -4096); } while (0)

struct walk {
	struct volume *v;
	unsigned entries;
	ext2_ino_t first_file, first_dir[3];
	uint32_t first_file_gen;
	unsigned ndirs;
	char *buf;
	uint64_t seen[64];             /* inodes visited: the htree's names of one file are read once */
	unsigned nseen;
};

static int seen_before(struct walk *w, uint64_t ino)
{
	for (unsigned i = 0; i < w->nseen; i++)
		if (w->seen[i] == ino)
			return 1;
	if (w->nseen < sizeof(w->seen) / sizeof(w->seen[0]))
		w->seen[w->nseen++] = ino;
	return 0;
}

static void read_file(struct walk *w, const struct meta_attr *a)
{
	struct minode *m;
	int rc = fsop_open(w->v, (ext2_ino_t)a->ino, a->generation, 0, &m);
	STATUS_OK(rc);
	if (rc)
		return;
	for (uint64_t off = 0; off < READ_MAX_BYTES;) {
		ssize_t n = fsop_read(w->v, m, w->buf, 65536, off);
		CHECK(n >= -4095 && n <= 65536);
		if (n <= 0)
			break;
		for (ssize_t i = 0; i + (ssize_t)BS <= n; i += BS) {
			const uint8_t *p = (const uint8_t *)w->buf + i;
			uint64_t meta = block_is_zero(p) ? 0 : metadata_block_like(cur, p);
			if (meta) {
				fprintf(stderr, "fuzz_image: inode %llu: file block %llu served the bytes of "
					"metadata block %llu\n", (unsigned long long)a->ino,
					(unsigned long long)((off + (uint64_t)i) / BS),
					(unsigned long long)(meta == UINT64_MAX ? 0 : meta));
				abort();
			}
		}
		off += (uint64_t)n;
	}
	STATUS_OK(fsop_release(w->v, m));
}

static void visit(struct walk *w, ext2_ino_t dir, const char *name, const struct meta_attr *a)
{
	char buf[4096];
	int rc = fsop_listxattr(w->v, (ext2_ino_t)a->ino, buf, sizeof(buf));
	CHECK(rc >= -4095);
	for (int i = 0; rc > 0 && i < rc; i += (int)strnlen(buf + i, (size_t)(rc - i)) + 1) {
		char val[4096];
		CHECK(fsop_getxattr(w->v, (ext2_ino_t)a->ino, buf + i, val, sizeof(val)) >= -4095);
	}
	if (S_ISLNK(a->mode)) {
		rc = fsop_readlink(w->v, (ext2_ino_t)a->ino, buf, sizeof(buf));
		CHECK(rc >= -4095 && rc < (int)sizeof(buf));
	} else if (S_ISREG(a->mode)) {
		read_file(w, a);
		if (!w->first_file) {
			w->first_file = (ext2_ino_t)a->ino;
			w->first_file_gen = a->generation;
		}
	}
	(void)dir, (void)name;
}

static void walk_dir(struct walk *w, ext2_ino_t dir, int depth)
{
	struct meta_dirent *d = NULL;
	size_t n = 0;
	int rc = fsop_readdir(w->v, dir, &d, &n);
	STATUS_OK(rc);
	if (rc)
		return;
	if (w->ndirs < 3)
		w->first_dir[w->ndirs++] = dir;
	for (size_t i = 0; i < n && w->entries < WALK_MAX_ENTRIES; i++, w->entries++) {
		CHECK(d[i].name && d[i].name[0]);
		if (!strcmp(d[i].name, ".") || !strcmp(d[i].name, ".."))
			continue;
		struct meta_attr a, g;
		rc = fsop_lookup(w->v, dir, d[i].name, &a);
		STATUS_OK(rc);
		if (rc)
			continue;
		STATUS_OK(fsop_getattr(w->v, (ext2_ino_t)a.ino, &g));
		if (!seen_before(w, a.ino))
			visit(w, dir, d[i].name, &a);
		if (S_ISDIR(a.mode) && depth < WALK_MAX_DEPTH && a.ino != dir)
			walk_dir(w, (ext2_ino_t)a.ino, depth + 1);
	}
	meta_free_dirents(d, n);
}

/* Writes a pattern and reads it back: what the engine says it wrote, it
 * must serve exactly. */
static void write_check(struct volume *v, struct minode *m, uint64_t off, size_t len, unsigned seed)
{
	char *w = malloc(len), *r = malloc(len);
	CHECK(w && r);
	fill(w, len, seed);
	ssize_t n = fsop_write(v, m, w, len, off);
	CHECK(n >= -4095 && n <= (ssize_t)len);
	if (n > 0) {
		ssize_t got = fsop_read(v, m, r, (size_t)n, off);
		CHECK(got >= -4095 && got <= n);
		if (got > 0 && memcmp(w, r, (size_t)got) != 0) {
			fprintf(stderr, "fuzz_image: inode %u: %zd bytes written at %llu read back different\n",
				m->ino, got, (unsigned long long)off);
			abort();
		}
	}
	free(w);
	free(r);
}

static void new_file(struct volume *v, ext2_ino_t dir, const char *name, unsigned seed)
{
	struct meta_attr a;
	struct minode *m;
	int rc = fsop_create_open(v, dir, name, S_IFREG | 0644, &root_cred, &a, &m);
	STATUS_OK(rc);
	if (rc)
		return;
	write_check(v, m, 0, 10000, seed);
	write_check(v, m, 3 * BS + 5, 100, seed + 1);
	STATUS_OK(fsop_release(v, m));
}

static void changes(struct walk *w)
{
	struct volume *v = w->v;
	struct meta_attr a;
	new_file(v, EXT2_ROOT_INO, "fz-new", 1);
	for (unsigned i = 0; i < w->ndirs; i++) {
		char name[32];
		snprintf(name, sizeof(name), "fz-dir-%u", i);
		int rc = fsop_create(v, w->first_dir[i], name, S_IFDIR | 0755, 0, &root_cred, &a);
		STATUS_OK(rc);
		if (rc == 0) {
			new_file(v, (ext2_ino_t)a.ino, "inside", 2 + i);
			STATUS_OK(fsop_unlink(v, (ext2_ino_t)a.ino, "inside"));
			STATUS_OK(fsop_rmdir(v, w->first_dir[i], name));
		}
	}
	if (w->first_file) {
		struct minode *m;
		int rc = fsop_open(v, w->first_file, w->first_file_gen, 0, &m);
		STATUS_OK(rc);
		if (rc == 0) {
			write_check(v, m, 0, BS, 7);            /* overwrite */
			write_check(v, m, 40 * BS + 3, 500, 8); /* beyond: allocate */
			struct meta_setattr sa = { .valid = META_SET_SIZE, .size = BS + 1 };
			STATUS_OK(fsop_setattr(v, w->first_file, &sa, &a));
			STATUS_OK(fsop_release(v, m));
		}
		STATUS_OK(fsop_setxattr(v, w->first_file, "user.fz", "fz", 2, 0));
		STATUS_OK(fsop_removexattr(v, w->first_file, "user.inline"));
		STATUS_OK(fsop_link(v, w->first_file, EXT2_ROOT_INO, "fz-link", &a));
	}
	/* names found by lookup in the damaged volume: rename, unlink, rmdir */
	STATUS_OK(fsop_rename(v, EXT2_ROOT_INO, "fz-new", EXT2_ROOT_INO, "fz-renamed", 0, &root_cred));
	STATUS_OK(fsop_unlink(v, EXT2_ROOT_INO, "fz-renamed"));
	STATUS_OK(fsop_unlink(v, EXT2_ROOT_INO, "fragmented"));
	STATUS_OK(fsop_rename(v, EXT2_ROOT_INO, "d1", EXT2_ROOT_INO, "d1-renamed", 0, &root_cred));
	if (fsop_lookup(v, EXT2_ROOT_INO, "big", &a) == 0) {
		char name[256];   /* every 8th name past those B's journal removes: all leaves */
		for (int i = BIG_DIR_NAMES / 10 + 1; i < BIG_DIR_NAMES; i += 8) {
			big_name(name, sizeof(name), i);
			STATUS_OK(fsop_unlink(v, (ext2_ino_t)a.ino, name));
		}
	}
	struct statvfs st;
	STATUS_OK(fsop_statfs(v, &st));
	STATUS_OK(fsop_syncfs(v));
}

/* 64 letters in fill()'s sequence: file data (no metadata looks like that). */
NO_COVERAGE static int holds_file_data(const uint8_t *p)
{
	unsigned run = 0;
	for (unsigned i = 1; i < BS; i++) {
		if (p[i - 1] >= 'a' && p[i - 1] <= 'z' && p[i] == 'a' + (p[i - 1] - 'a' + 7) % 26) {
			if (++run >= 64)
				return 1;
		} else {
			run = 0;
		}
	}
	return 0;
}

/* Blocks of the base's system zones that inodes (from the root on; not the
 * engine's own: resize, journal) claim in the image file as it is now,
 * through their extents or xattr block: clipped ranges, at most cap. */
struct claims { struct range r[256]; size_t n; int full; };

static void claim(const struct base *b, struct claims *c, uint64_t start, uint64_t len)
{
	for (size_t z = 0; z < b->nzones; z++) {
		uint64_t s = start > b->zones[z].start ? start : b->zones[z].start;
		uint64_t e = start + len < b->zones[z].end ? start + len : b->zones[z].end;
		if (s >= e)
			continue;
		if (c->n == sizeof(c->r) / sizeof(c->r[0])) {
			c->full = 1;
			return;
		}
		c->r[c->n++] = (struct range){ s, e };
	}
}

static void zone_claims(const struct base *b, const char *path, struct claims *c)
{
	ext2_filsys fs;
	c->n = 0;
	c->full = 0;
	if (ext2fs_open(path, EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP | EXT2_FLAG_IGNORE_CSUM_ERRORS,
			0, 0, unix_io_manager, &fs))
		return;
	ext2_ino_t last = fs->super->s_inodes_count < 256 ? fs->super->s_inodes_count : 256;
	for (ext2_ino_t ino = EXT2_ROOT_INO; ino <= last && !c->full; ino++) {
		struct ext2_inode_large in;
		if ((ino > EXT2_ROOT_INO && ino < EXT2_FIRST_INO(fs->super)) ||
		    ext2fs_read_inode_full(fs, ino, (struct ext2_inode *)&in, sizeof(in)) ||
		    !in.i_links_count || !in.i_mode)
			continue;
		blk64_t acl = ext2fs_file_acl_block(fs, (struct ext2_inode *)&in);
		if (acl)
			claim(b, c, acl, 1);
		ext2_extent_handle_t h;
		if (!(in.i_flags & EXT4_EXTENTS_FL) ||
		    ext2fs_extent_open2(fs, ino, (struct ext2_inode *)&in, &h))
			continue;
		struct ext2fs_extent ex;
		errcode_t e = ext2fs_extent_get(h, EXT2_EXTENT_ROOT, &ex);
		for (unsigned guard = 0; !e && guard < 100000 && !c->full; guard++) {
			claim(b, c, ex.e_pblk, (ex.e_flags & EXT2_EXTENT_FLAGS_LEAF) ? ex.e_len : 1);
			e = ext2fs_extent_get(h, EXT2_EXTENT_NEXT, &ex);
		}
		ext2fs_extent_free(h);
	}
	ext2fs_close_free(&fs);
}

static void check_claims_covered(const struct claims *before, const struct claims *after)
{
	for (size_t i = 0; i < after->n; i++) {
		int covered = 0;
		for (size_t j = 0; j < before->n && !covered; j++)
			covered = before->r[j].start <= after->r[i].start && after->r[i].end <= before->r[j].end;
		if (!covered) {
			fprintf(stderr, "fuzz_image: after unmount an inode claims blocks %llu-%llu of the "
				"system zones, which no inode claimed before the mount\n",
				(unsigned long long)after->r[i].start, (unsigned long long)after->r[i].end - 1);
			abort();
		}
	}
}

/* A claim after unmount that no claim before the mount covers: the engine
 * gave a file, directory or xattr block of the system zones. The claims
 * before the mount are read only when there are claims after it (rarely):
 * from the damaged image written again to a second file, as it was before
 * the mount (the image stays as the engine left it, to look at). */
static void check_no_new_claims(const struct base *b)
{
	static struct claims before, after;
	zone_claims(b, image, &after);
	if (after.n == 0 || after.full)
		return;
	if (image_before_fd < 0)
		image_before_fd = open(image_before, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(image_before_fd >= 0);
	write_image(image_before_fd, b, patches, npatches);
	zone_claims(b, image_before, &before);
	if (before.full)
		return;
	check_claims_covered(&before, &after);
}

/* Whether the image file's block blk is a hole (never written since the
 * image was written again: reads as zeroes), and the first block from blk
 * on that is not (or past the end). On a file system without SEEK_DATA
 * every block counts as written. */
static int image_hole(uint64_t blk)
{
	off_t at = lseek(image_fd, (off_t)(blk * BS), SEEK_DATA);
	CHECK(at >= 0 || errno == ENXIO);
	return at < 0 || (uint64_t)at >= (blk + 1) * BS;
}

static uint64_t image_next_data(uint64_t blk)
{
	off_t at = lseek(image_fd, (off_t)(blk * BS), SEEK_DATA);
	CHECK(at >= 0 || errno == ENXIO);
	return at < 0 ? IMAGE_BYTES / BS : (uint64_t)at / BS;
}

/* After unmount: no file data landed in the inode tables or bitmaps where
 * the base image has them (a damaged structure made worse). */
static void check_group_metadata(const struct base *b)
{
	ext2_filsys fs = b->fs;
	static uint8_t buf[BS];
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		blk64_t it = ext2fs_inode_table_loc(fs, g);
		for (blk64_t k = 0; k < fs->inode_blocks_per_group + 2; k++) {
			blk64_t blk = k < fs->inode_blocks_per_group ? it + k :
				      k == fs->inode_blocks_per_group ? ext2fs_block_bitmap_loc(fs, g) :
				      ext2fs_inode_bitmap_loc(fs, g);
			if (k < fs->inode_blocks_per_group && image_hole(blk)) {
				blk64_t data = image_next_data(blk);   /* most of a table is never written */
				k = data < it + fs->inode_blocks_per_group ? data - it - 1 :
				    fs->inode_blocks_per_group - 1;
				continue;
			}
			CHECK(pread(image_fd, buf, BS, (off_t)(blk * BS)) == (ssize_t)BS);
			if (!block_is_zero(buf) && holds_file_data(buf)) {
				fprintf(stderr, "fuzz_image: after unmount, block %llu (group %u's %s) holds "
					"file data\n", (unsigned long long)blk, g,
					k < fs->inode_blocks_per_group ? "inode table" : "bitmaps");
				abort();
			}
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	prof.execs++;
	prof_mark(P_COUNT);
	const struct base *b = cur = &bases[data[0] & 1];
	damage(b, data + 1, size - 1);
	prof_mark(P_DAMAGE);
	char err[512] = "";
	struct volume_opts o = { .lun = image, .errors_continue = (data[0] & 2) != 0,
				 .cache_bytes = CACHE_BYTES };
	struct volume *v;
	int rc = volume_open(&o, &v, err, sizeof(err));
	prof_mark(P_MOUNT);
	STATUS_OK(rc);
	if (rc) {
		CHECK(err[0]);   /* a refused mount says why */
		if (verbose)
			fprintf(stderr, "fuzz_image: mount refused: %s\n", err);
		return 0;
	}
	static char *buf;
	if (!buf)
		buf = malloc(65536);
	struct walk w = { .v = v, .buf = buf };
	prof.mounted++;
	walk_dir(&w, EXT2_ROOT_INO, 0);
	prof_mark(P_WALK);
	changes(&w);
	prof_mark(P_CHANGES);
	volume_close(v);
	prof_mark(P_UNMOUNT);
	check_group_metadata(b);
	prof_mark(P_GROUP_CHECK);
	check_no_new_claims(b);
	prof_mark(P_CLAIMS);
	return 0;
}
