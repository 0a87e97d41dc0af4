/*
 * fsrand — seeded random operation sequences on a real mount, checked after
 * every step against an in-memory model (issue 15, docs/testing.md).
 *
 *   fsrand file [options] ROOT [ROOT...]
 *       Random sequences on one file: pwrite/pread, ftruncate up and down,
 *       fallocate (plain, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE with and
 *       without KEEP_SIZE), copy_file_range within the file, mmap read and
 *       write (msync), O_DIRECT (aligned) and buffered opens, fsync,
 *       fdatasync, close/reopen, and "peek": fsync, then open the file through
 *       another root, read a range and close. After every step: fstat size,
 *       and the range touched read back and compared; the whole file every K
 *       operations and at the end. A fallocate mode (or copy_file_range) that
 *       the filesystem refuses with EOPNOTSUPP is reported once and not used
 *       again; O_DIRECT refused with EINVAL likewise.
 *
 *   fsrand ns [options] ROOT [ROOT...]
 *       Random namespace sequences in a small tree (names a..h, depth <= 3,
 *       rarely a 255- and a 256-byte name): create (O_EXCL), open O_TRUNC,
 *       mkdir, rename (plain, RENAME_NOREPLACE, RENAME_EXCHANGE through the
 *       renameat2 syscall), link, unlink, rmdir, symlink, readlink, chmod,
 *       truncate, utimensat, set/get/removexattr (user.*), write through a
 *       fresh open, lstat, and one file held open (O_DIRECT) across other
 *       operations: written (+fsync), read, fstat'ed while it is renamed or
 *       unlinked elsewhere. Each operation's errno must be the one the model
 *       predicts; the whole tree (readdir of every directory, lstat type,
 *       mode, size, nlink, inode identity, symlink targets, xattrs, file
 *       contents, mtimes set by utimensat) is compared every K operations and
 *       at the end; with -T also after every operation what it touched (the
 *       directories of its paths: their names; the objects at its paths: as
 *       in the full compare, a directory's names but not what lies below).
 *
 *   Several ROOTs are one directory seen through several nodes (for a lab
 *   node, /proc/<its csvfs pid>/root/ClusterStorage/Volume1/DIR). A ROOT may
 *   be written LABEL=PATH; LABEL names it in the output. Each operation runs
 *   on one root; the root changes at random every few operations (-m). In
 *   file mode a change of root is a live migration: fsync + close on the old
 *   node, open on the new one.
 *
 *   Options: -s SEED (default: from the clock, printed), -n OPS (2000),
 *   -t SECONDS (no limit), -k K full-compare interval (file 50, ns 25),
 *   -m N mean operations between root switches (8), -w SECONDS per-operation
 *   watchdog (90), -S SECONDS shrink budget (60), -M BYTES largest file
 *   offset (4 MiB), -p PREFIX name prefix of the work file/dir ("fsrand"),
 *   -x OP,OP... do not generate these operations (names as printed, e.g.
 *   -x ftruncate,peek), -N no 256-byte names, -D (ns) fsync the directory
 *   (and the object) after every change, so that nothing acknowledged may be
 *   lost when a coordinator dies, -T (ns) compare what each operation
 *   touched after it, -F N (ns, with -T) a negative control: after
 *   operation N make an entry the model lacks (the next check must fail),
 *   -K keep the work file/dir,
 *   -v trace each operation on stderr.
 *
 *   Exit: 0 and one summary line when every check held. 1 on the first
 *   unexpected errno, mismatch or hang (watchdog): the seed, the operation,
 *   what was expected and what came back, then a minimised failing sequence
 *   (shrunk prefixes/subsets re-run on a fresh file or tree, bounded by -S),
 *   and whether it reproduces with every operation on one root. 2 on usage
 *   or setup errors. The run is deterministic given the seed, up to timing.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define ALIGN 4096
#define MAXROOTS 16

/* ------------------------------------------------------------------ basics */

static uint64_t opt_seed;
static long opt_ops = 2000;
static double opt_secs;
static unsigned opt_wd = 90;
static int opt_k;
static int opt_switch = 8;
static double opt_shrink = 60;
static int opt_verbose, opt_keep;
static int64_t opt_max = 4 << 20;
static const char *opt_prefix = "fsrand";
static const char *opt_exclude = ""; /* -x: operation kinds not generated */
static int opt_nolong;              /* -N: no 256-byte names */
static int opt_durable;             /* -D: ns: every change made durable (fsync) before the next op */
static long opt_fault;              /* -F N: ns: a name the model lacks made after op N (a negative control) */
static int opt_touched;             /* -T: ns: what each operation touched compared after it */

struct root {
	char label[64];
	char path[PATH_MAX];
	long ops;
};
static struct root roots[MAXROOTS];
static int nroots;

static uint64_t sm64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t rs; /* the generator's state: only the generator draws from it */
static uint64_t rnd(void) { return sm64(&rs); }
static int64_t rn(int64_t n) { return n > 0 ? (int64_t)(rnd() % (uint64_t)n) : 0; }
static int pct(int p) { return rn(100) < p; }

static void fill(unsigned char *b, size_t n, uint64_t seed)
{
	uint64_t s = seed;
	size_t i = 0;
	while (i < n) {
		uint64_t v = sm64(&s);
		for (int k = 0; k < 8 && i < n; k++, i++)
			b[i] = (unsigned char)(v >> (8 * k));
	}
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "fsrand: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(2);
}

static void *xmalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);
	if (!p)
		die("out of memory");
	return p;
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		die("out of memory");
	return q;
}

static void *xalign(size_t n)
{
	void *p;
	if (posix_memalign(&p, ALIGN, n))
		die("out of memory");
	memset(p, 0, n);
	return p;
}

static const char *ename(int e)
{
	static char b[8][32];
	static int k;
	if (e == 0)
		return "success";
	const char *n = strerrorname_np(e);
	k = (k + 1) % 8;
	snprintf(b[k], sizeof(b[k]), "%s", n ? n : "E?");
	if (!n)
		snprintf(b[k], sizeof(b[k]), "errno %d", e);
	return b[k];
}

/* ---------------------------------------------------- failure and watchdog */

enum { C_ERRNO = 1, C_SIZE, C_DATA, C_ATTR, C_SIGBUS, C_CMP };
static const char *cls_name[] = { "", "errno", "size", "data", "attributes", "SIGBUS", "tree" };

static struct {
	int cls, e_exp, e_got;
	char msg[2048];
} fl;

static int fail(int cls, const char *fmt, ...)
{
	va_list ap;
	fl.cls = cls;
	va_start(ap, fmt);
	vsnprintf(fl.msg, sizeof(fl.msg), fmt, ap);
	va_end(ap);
	return -1;
}

static int fail_errno(int exp, int got, const char *fmt, ...)
{
	va_list ap;
	char b[1500];
	va_start(ap, fmt);
	vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	fl.e_exp = exp;
	fl.e_got = got;
	return fail(C_ERRNO, "%s: expected %s, got %s", b, ename(exp), ename(got));
}

static char wd_desc[1024];
static void on_alarm(int sig)
{
	static const char m[] = "fsrand: FAIL: watchdog: no answer within the watchdog time: ";
	(void)sig;
	if (write(2, m, sizeof(m) - 1) < 0 || write(2, wd_desc, strlen(wd_desc)) < 0 || write(2, "\n", 1) < 0)
		_exit(1);
	_exit(1);
}

static sigjmp_buf bus_jb;
static volatile sig_atomic_t in_mmap;
static void on_bus(int sig)
{
	if (in_mmap)
		siglongjmp(bus_jb, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* -x: a comma-separated list of operation names (as printed) not to generate */
static int excluded(const char *name)
{
	size_t l = strlen(name);
	for (const char *p = opt_exclude; (p = strstr(p, name)); p += l)
		if ((p == opt_exclude || p[-1] == ',') && (p[l] == ',' || !p[l]))
			return 1;
	return 0;
}

/* ---------------------------------------------------------------- the ops */

struct op {
	uint8_t kind, root, direct;
	uint32_t mode;
	int64_t a, b, c;
	uint64_t seed;
	int p1, p2;
};

static struct op *ops;
static long nops, capops;
static void push_op(const struct op *o)
{
	if (nops == capops) {
		capops = capops ? capops * 2 : 1024;
		ops = xrealloc(ops, (size_t)capops * sizeof(*ops));
	}
	ops[nops++] = *o;
}

static int cur_attempt;
static int replaying; /* minimiser replays: no periodic full compare, only the final one */
static char mode_name[8];

/* ======================================================== file mode ===== */

enum { F_WRITE, F_READ, F_TRUNC, F_FALLOC, F_COPY, F_MMAPR, F_MMAPW, F_FSYNC, F_FDSYNC, F_CLOSE, F_PEEK, F_NK };
static const char *fk_name[F_NK] = { "pwrite", "pread", "ftruncate", "fallocate", "copy_file_range", "mmap-read",
				     "mmap-write", "fsync", "fdatasync", "close", "peek" };
static const int fk_weight[F_NK] = { 26, 10, 9, 13, 5, 4, 5, 4, 2, 3, 4 };
static const int fa_modes[5] = { 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				 FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE };
static const char *fa_name[5] = { "plain", "KEEP_SIZE", "PUNCH_HOLE|KEEP_SIZE", "ZERO_RANGE", "ZERO_RANGE|KEEP_SIZE" };
#define DIS_COPY (1u << 5)
static unsigned f_disabled; /* fallocate modes (bit i) and copy_file_range refused with EOPNOTSUPP */
static int f_nodirect;      /* O_DIRECT refused with EINVAL */

struct fst {
	int fd, froot, fdirect;
	unsigned char *m;
	int64_t size;
	char name[128];
	unsigned char *buf, *buf2;
	long cnt[F_NK], skipped, migrations;
};

static const char *fpath(const struct fst *st, int r)
{
	static char b[2][PATH_MAX + 200];
	static int k;
	k ^= 1;
	snprintf(b[k], sizeof(b[k]), "%s/%s", roots[r].path, st->name);
	return b[k];
}

static void fmt_fop(char *b, size_t n, const struct op *o)
{
	int k = snprintf(b, n, "[%s %s] %s", roots[o->root].label, o->direct ? "O_DIRECT" : "buffered", fk_name[o->kind]);
	if (k < 0 || (size_t)k >= n)
		return;
	b += k;
	n -= (size_t)k;
	switch (o->kind) {
	case F_WRITE:
	case F_READ:
	case F_MMAPR:
	case F_MMAPW:
		snprintf(b, n, " off=%" PRId64 " len=%" PRId64, o->a, o->b);
		break;
	case F_TRUNC:
		snprintf(b, n, " size=%" PRId64, o->a);
		break;
	case F_FALLOC:
		snprintf(b, n, " %s off=%" PRId64 " len=%" PRId64, fa_name[o->mode], o->a, o->b);
		break;
	case F_COPY:
		snprintf(b, n, " src=%" PRId64 " dst=%" PRId64 " len=%" PRId64, o->a, o->b, o->c);
		break;
	case F_PEEK:
		snprintf(b, n, " via %s off=%" PRId64 " len=%" PRId64 "%s", roots[o->a].label, o->b, o->c,
			 o->c ? "" : " (whole file)");
		break;
	default:
		break;
	}
}

/* Reads len bytes at off into buf (an O_DIRECT read stops at a short read). */
static ssize_t full_pread(int fd, unsigned char *buf, size_t len, off_t off, int direct)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pread(fd, buf + done, len - done, off + (off_t)done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		done += (size_t)r;
		if (direct && (r % ALIGN))
			break;
	}
	return (ssize_t)done;
}

static int describe_mismatch(const unsigned char *want, const unsigned char *got, int64_t base, int64_t n,
			     const char *what)
{
	int64_t first = -1, last = -1, zeros = 1;
	for (int64_t i = 0; i < n; i++) {
		if (want[i] != got[i]) {
			if (first < 0)
				first = i;
			last = i;
		}
	}
	if (first < 0)
		return 0;
	for (int64_t i = first; i <= last; i++)
		if (got[i])
			zeros = 0;
	int wz = 1;
	for (int64_t i = first; i <= last; i++)
		if (want[i])
			wz = 0;
	return fail(C_DATA,
		    "%s: data differs in [%" PRId64 ", %" PRId64 "] (first byte: expected 0x%02x, got 0x%02x; "
		    "the file has %s there, the model %s)",
		    what, base + first, base + last, want[first], got[first], zeros ? "zeros" : "other bytes",
		    wz ? "zeros" : "data");
}

/* Reads [start, end) of the file through fd and compares with the model. */
static int f_check_range(struct fst *st, int fd, int direct, int64_t start, int64_t end, const char *what)
{
	if (start < 0)
		start = 0;
	if (end > opt_max + ALIGN)
		end = opt_max + ALIGN;
	int64_t s = start, e = end;
	if (direct) {
		s &= ~(int64_t)(ALIGN - 1);
		e = (e + ALIGN - 1) & ~(int64_t)(ALIGN - 1);
	}
	if (e <= s)
		return 0;
	int64_t want = st->size > s ? (e < st->size ? e : st->size) - s : 0;
	ssize_t r = full_pread(fd, st->buf, (size_t)(e - s), s, direct);
	if (r < 0)
		return fail_errno(0, errno, "%s: pread [%" PRId64 ", +%" PRId64 ")", what, s, e - s);
	if (r != want)
		return fail(C_SIZE,
			    "%s: pread [%" PRId64 ", +%" PRId64 ") returned %zd bytes, expected %" PRId64
			    " (model size %" PRId64 ")",
			    what, s, e - s, r, want, st->size);
	return describe_mismatch(st->m + s, st->buf, s, want, what);
}

static int f_check_size(struct fst *st, int fd, const char *what)
{
	struct stat sb;
	if (fstat(fd, &sb))
		return fail_errno(0, errno, "%s: fstat", what);
	if (sb.st_size != st->size)
		return fail(C_SIZE, "%s: st_size is %lld, expected %" PRId64, what, (long long)sb.st_size, st->size);
	return 0;
}

static int f_ensure_open(struct fst *st, int root, int direct)
{
	if (st->fd >= 0 && st->froot == root && st->fdirect == direct)
		return 0;
	if (st->fd >= 0) {
		if (st->froot != root) {
			if (fsync(st->fd))
				return fail_errno(0, errno, "fsync on %s before moving to %s", roots[st->froot].label,
						  roots[root].label);
			st->migrations++;
		}
		if (close(st->fd)) {
			st->fd = -1;
			return fail_errno(0, errno, "close on %s (before reopening)", roots[st->froot].label);
		}
		st->fd = -1;
	}
	st->fd = open(fpath(st, root), O_RDWR | (direct ? O_DIRECT : 0));
	if (st->fd < 0)
		return fail_errno(0, errno, "open(O_RDWR%s) on %s", direct ? "|O_DIRECT" : "", roots[root].label);
	st->froot = root;
	st->fdirect = direct;
	return 0;
}

static void f_zero(struct fst *st, int64_t a, int64_t b)
{
	if (b > st->size)
		b = st->size;
	if (a < b)
		memset(st->m + a, 0, (size_t)(b - a));
}

static int f_exec(struct fst *st, const struct op *o)
{
	int64_t off = o->a, len = o->b;
	char what[96];
	snprintf(what, sizeof(what), "after %s", fk_name[o->kind]);
	st->cnt[o->kind]++;

	if (o->kind == F_CLOSE) {
		if (st->fd >= 0) {
			int r = close(st->fd);
			st->fd = -1;
			if (r)
				return fail_errno(0, errno, "close");
		}
		return 0;
	}
	if (o->kind == F_PEEK) {
		if (st->fd >= 0 && fsync(st->fd))
			return fail_errno(0, errno, "fsync before peeking from %s", roots[o->a].label);
		int pfd = open(fpath(st, (int)o->a), O_RDONLY);
		if (pfd < 0)
			return fail_errno(0, errno, "peek: open(O_RDONLY) on %s", roots[o->a].label);
		snprintf(what, sizeof(what), "peek on %s", roots[o->a].label);
		int rc = f_check_size(st, pfd, what);
		if (!rc)
			rc = o->c ? f_check_range(st, pfd, 0, o->b, o->b + o->c, what)
				  : f_check_range(st, pfd, 0, 0, st->size, what);
		if (close(pfd) && !rc)
			rc = fail_errno(0, errno, "peek: close on %s", roots[o->a].label);
		return rc;
	}
	if (f_ensure_open(st, o->root, o->direct))
		return -1;
	int fd = st->fd;
	switch (o->kind) {
	case F_WRITE: {
		fill(st->buf2, (size_t)len, o->seed);
		ssize_t r = pwrite(fd, st->buf2, (size_t)len, off);
		if (r < 0)
			return fail_errno(0, errno, "pwrite");
		if (r != len)
			return fail(C_SIZE, "pwrite of %" PRId64 " bytes wrote %zd", len, r);
		memcpy(st->m + off, st->buf2, (size_t)len);
		if (off + len > st->size)
			st->size = off + len;
		if (f_check_size(st, fd, what))
			return -1;
		return f_check_range(st, fd, st->fdirect, off, off + len, what);
	}
	case F_READ:
		if (f_check_range(st, fd, st->fdirect, off, off + len, "pread"))
			return -1;
		return f_check_size(st, fd, what);
	case F_TRUNC: {
		int64_t old = st->size;
		if (ftruncate(fd, off))
			return fail_errno(0, errno, "ftruncate");
		if (off < st->size)
			f_zero(st, off, st->size);
		st->size = off;
		if (f_check_size(st, fd, what))
			return -1;
		int64_t lo = off < old ? off : old, hi = off < old ? old : off;
		if (f_check_range(st, fd, st->fdirect, lo - 8192, lo + 8192, what))
			return -1;
		if (hi - lo > 8192)
			return f_check_range(st, fd, st->fdirect, hi - 8192, hi + 8192, what);
		return 0;
	}
	case F_FALLOC: {
		unsigned bit = 1u << o->mode;
		if (f_disabled & bit) {
			st->skipped++;
			return 0;
		}
		if (fallocate(fd, fa_modes[o->mode], off, len)) {
			if (errno == EOPNOTSUPP) {
				f_disabled |= bit;
				fprintf(stderr, "fsrand: fallocate %s: EOPNOTSUPP on %s, not used again\n",
					fa_name[o->mode], roots[o->root].label);
				return 0;
			}
			return fail_errno(0, errno, "fallocate %s", fa_name[o->mode]);
		}
		switch (o->mode) {
		case 0:
			if (off + len > st->size)
				st->size = off + len;
			break;
		case 1:
			break;
		case 2:
		case 4:
			f_zero(st, off, off + len);
			break;
		case 3:
			f_zero(st, off, off + len);
			if (off + len > st->size)
				st->size = off + len;
			break;
		}
		if (f_check_size(st, fd, what))
			return -1;
		return f_check_range(st, fd, st->fdirect, off - 4096, off + len + 4096, what);
	}
	case F_COPY: {
		if (f_disabled & DIS_COPY) {
			st->skipped++;
			return 0;
		}
		loff_t s = o->a, d = o->b;
		int64_t want = o->a >= st->size ? 0 : (o->c < st->size - o->a ? o->c : st->size - o->a);
		ssize_t r = copy_file_range(fd, &s, fd, &d, (size_t)o->c, 0);
		if (r < 0 && (errno == EOPNOTSUPP || errno == EXDEV)) {
			f_disabled |= DIS_COPY;
			fprintf(stderr, "fsrand: copy_file_range: %s on %s, not used again\n", ename(errno),
				roots[o->root].label);
			return 0;
		}
		if (r < 0)
			return fail_errno(0, errno, "copy_file_range");
		/* a short copy is allowed (the kernel's splice fallback copies in chunks), not none */
		if (r > want || (r == 0 && want > 0))
			return fail(C_SIZE, "copy_file_range returned %zd, expected %s%" PRId64 " (model size %" PRId64 ")",
				    r, want ? "1.." : "", want, st->size);
		memmove(st->m + o->b, st->m + o->a, (size_t)r);
		if (r > 0 && o->b + r > st->size)
			st->size = o->b + r;
		if (f_check_size(st, fd, what))
			return -1;
		if (f_check_range(st, fd, st->fdirect, o->b, o->b + r, what))
			return -1;
		return f_check_range(st, fd, st->fdirect, o->a, o->a + r, what);
	}
	case F_MMAPR:
	case F_MMAPW: {
		if (st->size == 0) {
			st->skipped++;
			return 0;
		}
		int w = o->kind == F_MMAPW;
		int64_t mo = off % st->size, ml = len < st->size - mo ? len : st->size - mo;
		long pg = sysconf(_SC_PAGESIZE);
		int64_t pa = mo & ~(int64_t)(pg - 1), mlen = mo + ml - pa;
		unsigned char *p = mmap(NULL, (size_t)mlen, PROT_READ | (w ? PROT_WRITE : 0), MAP_SHARED, fd, pa);
		if (p == MAP_FAILED)
			return fail_errno(0, errno, "mmap [%" PRId64 ", +%" PRId64 ")", pa, mlen);
		if (sigsetjmp(bus_jb, 1)) {
			in_mmap = 0;
			munmap(p, (size_t)mlen);
			return fail(C_SIGBUS, "SIGBUS touching the mapping [%" PRId64 ", +%" PRId64 ") (model size %" PRId64 ")",
				    mo, ml, st->size);
		}
		in_mmap = 1;
		int rc = 0;
		if (w) {
			fill(st->buf2, (size_t)ml, o->seed);
			memcpy(p + (mo - pa), st->buf2, (size_t)ml);
			in_mmap = 0;
			if (msync(p, (size_t)mlen, MS_SYNC))
				rc = fail_errno(0, errno, "msync");
			memcpy(st->m + mo, st->buf2, (size_t)ml);
		} else {
			memcpy(st->buf, p + (mo - pa), (size_t)ml);
			in_mmap = 0;
			rc = describe_mismatch(st->m + mo, st->buf, mo, ml, "mmap read");
		}
		if (munmap(p, (size_t)mlen) && !rc)
			rc = fail_errno(0, errno, "munmap");
		if (rc)
			return rc;
		if (f_check_size(st, fd, what))
			return -1;
		return w ? f_check_range(st, fd, st->fdirect, mo, mo + ml, what) : 0;
	}
	case F_FSYNC:
		if (fsync(fd))
			return fail_errno(0, errno, "fsync");
		return f_check_size(st, fd, what);
	case F_FDSYNC:
		if (fdatasync(fd))
			return fail_errno(0, errno, "fdatasync");
		return f_check_size(st, fd, what);
	}
	return 0;
}

static int f_fullcmp(struct fst *st, int root, const char *what)
{
	int fd = st->fd, direct = st->fdirect, own = 0;
	if (fd < 0) {
		fd = open(fpath(st, root), O_RDONLY);
		if (fd < 0)
			return fail_errno(0, errno, "%s: open(O_RDONLY) on %s", what, roots[root].label);
		own = 1;
		direct = 0;
	}
	int rc = f_check_size(st, fd, what);
	if (!rc)
		rc = f_check_range(st, fd, direct, 0, st->size + ALIGN, what);
	if (own && close(fd) && !rc)
		rc = fail_errno(0, errno, "%s: close", what);
	return rc;
}

struct fgen {
	int root, direct;
};

static int64_t f_pick_len(void)
{
	int r = (int)rn(100);
	if (r < 55)
		return 1 + rn(4096);
	if (r < 90)
		return 1 + rn(65536);
	return 1 + rn(512 * 1024);
}

static int64_t f_pick_off(int64_t size)
{
	int r = (int)rn(100);
	int64_t o;
	if (r < 45)
		o = size - 65536 + rn(131072);
	else if (r < 75)
		o = rn(size + 4096);
	else
		o = rn(opt_max);
	return o < 0 ? 0 : o;
}

static void f_fit(int64_t *off, int64_t *len, int direct)
{
	if (direct) {
		*off &= ~(int64_t)(ALIGN - 1);
		*len = (*len + ALIGN - 1) & ~(int64_t)(ALIGN - 1);
	}
	if (*len > opt_max)
		*len = opt_max;
	if (*off + *len > opt_max)
		*off = opt_max - *len;
	if (direct)
		*off &= ~(int64_t)(ALIGN - 1);
}

static void f_gen(struct fgen *g, const struct fst *st, struct op *o)
{
	memset(o, 0, sizeof(*o));
	if (nroots > 1 && rn(opt_switch) == 0)
		g->root = (g->root + 1 + (int)rn(nroots - 1)) % nroots;
	if (!f_nodirect && pct(4))
		g->direct = !g->direct;
	int tot = 0, k;
	for (k = 0; k < F_NK; k++)
		tot += fk_weight[k];
	for (;;) {
		int64_t r = rn(tot);
		for (k = 0; k < F_NK; k++) {
			if (r < fk_weight[k])
				break;
			r -= fk_weight[k];
		}
		if (k == F_COPY && (f_disabled & DIS_COPY))
			continue;
		if (excluded(fk_name[k]))
			continue;
		if (k == F_FALLOC && (f_disabled & 0x1f) == 0x1f)
			continue;
		break;
	}
	/* mmap needs the page cache; copy_file_range's O_DIRECT splice fallback
	 * refuses an unaligned tail at EOF (EINVAL): both go through a buffered open */
	if ((k == F_MMAPR || k == F_MMAPW || k == F_COPY) && g->direct)
		g->direct = 0;
	o->kind = (uint8_t)k;
	o->root = (uint8_t)g->root;
	o->direct = (uint8_t)g->direct;
	o->seed = rnd();
	int64_t size = st->size;
	switch (k) {
	case F_WRITE:
	case F_READ:
		o->a = f_pick_off(size);
		o->b = f_pick_len();
		f_fit(&o->a, &o->b, o->direct);
		break;
	case F_TRUNC: {
		int r = (int)rn(100);
		o->a = r < 40 ? rn(size + 1) : r < 80 ? size + rn(256 * 1024) : rn(opt_max);
		if (o->a > opt_max)
			o->a = opt_max;
		break;
	}
	case F_FALLOC:
		do
			o->mode = (uint32_t)rn(5);
		while (f_disabled & (1u << o->mode));
		o->a = f_pick_off(size);
		o->b = f_pick_len();
		f_fit(&o->a, &o->b, 0);
		break;
	case F_COPY: {
		int64_t len = 1 + rn(pct(70) ? 16384 : 256 * 1024);
		int64_t src = rn(size > 0 ? size : 1), dst = f_pick_off(size);
		f_fit(&src, &len, o->direct);
		f_fit(&dst, &len, o->direct);
		if (dst < src + len && src < dst + len) { /* same-file ranges must not overlap */
			dst = src + len + rn(65536);
			f_fit(&dst, &len, o->direct);
			if (dst < src + len && src < dst + len) {
				o->kind = F_READ;
				o->a = src;
				o->b = len;
				break;
			}
		}
		o->a = src;
		o->b = dst;
		o->c = len;
		break;
	}
	case F_MMAPR:
	case F_MMAPW:
		o->a = rn(size > 0 ? size : 1);
		o->b = 1 + rn(pct(70) ? 8192 : 256 * 1024);
		break;
	case F_PEEK:
		o->a = nroots > 1 ? (g->root + 1 + (int)rn(nroots - 1)) % nroots : 0;
		if (pct(30)) {
			o->b = 0;
			o->c = 0;
		} else {
			o->b = f_pick_off(size);
			o->c = f_pick_len();
			f_fit(&o->b, &o->c, 0);
		}
		break;
	default:
		break;
	}
}

static struct fst fst_main;

/* One session on a fresh file: list given (replay) or generated (gen). Returns
 * 1 and *fail_at on a failure. The main session keeps its state in fst_main. */
static int f_session(struct fst *st, const struct op *list, long n, int gen, long *fail_at)
{
	struct fgen g = { 0, 0 };
	int k = opt_k ? opt_k : 50;
	double t0 = now_s();
	memset(st->cnt, 0, sizeof(st->cnt));
	st->skipped = st->migrations = 0;
	st->fd = -1;
	st->size = 0;
	memset(st->m, 0, (size_t)(opt_max + 2 * ALIGN));
	snprintf(st->name, sizeof(st->name), "%s-file-%" PRIu64 "-%d-%d", opt_prefix, opt_seed, (int)getpid(),
		 cur_attempt++);
	int r0 = gen ? 0 : (n > 0 ? list[0].root : 0);
	int fd = open(fpath(st, r0), O_CREAT | O_EXCL | O_RDWR, 0644);
	if (fd < 0)
		die("cannot create %s: %s", fpath(st, r0), strerror(errno));
	if (gen && !f_nodirect) {
		int dfd = open(fpath(st, r0), O_RDWR | O_DIRECT);
		if (dfd < 0 && errno == EINVAL) {
			f_nodirect = 1;
			fprintf(stderr, "fsrand: O_DIRECT: EINVAL on %s, only buffered opens\n", roots[r0].label);
		} else if (dfd >= 0)
			close(dfd);
	}
	close(fd);
	long i;
	int failed = 0;
	for (i = 0;; i++) {
		struct op o;
		if (gen) {
			if (i >= opt_ops || (opt_secs > 0 && now_s() - t0 >= opt_secs))
				break;
			f_gen(&g, st, &o);
			push_op(&o);
		} else {
			if (i >= n)
				break;
			o = list[i];
		}
		char d[256];
		fmt_fop(d, sizeof(d), &o);
		snprintf(wd_desc, sizeof(wd_desc), "file seed=%" PRIu64 " op #%ld %s", opt_seed, i, d);
		if (opt_verbose)
			fprintf(stderr, "#%ld %s\n", i, d);
		if (gen)
			roots[o.root].ops++;
		alarm(opt_wd);
		int rc = f_exec(st, &o);
		if (!rc && !replaying && (i + 1) % k == 0)
			rc = f_fullcmp(st, o.root, "full compare");
		alarm(0);
		if (rc) {
			failed = 1;
			*fail_at = i;
			break;
		}
	}
	if (!failed && i > 0) {
		snprintf(wd_desc, sizeof(wd_desc), "file seed=%" PRIu64 " final compare", opt_seed);
		alarm(opt_wd);
		const struct op *last = gen ? &ops[i - 1] : &list[i - 1];
		if (f_fullcmp(st, last->root, "final compare")) {
			failed = 1;
			*fail_at = i - 1;
		}
		alarm(0);
	}
	if (st->fd >= 0)
		close(st->fd);
	st->fd = -1;
	if (!opt_keep && !(gen && failed))
		unlink(fpath(st, 0));
	return failed;
}

/* ========================================================== ns mode ===== */

enum { N_CREATE, N_OTRUNC, N_MKDIR, N_RENAME, N_LINK, N_UNLINK, N_RMDIR, N_SYMLINK, N_READLINK, N_CHMOD, N_TRUNC,
       N_UTIMES, N_SETX, N_GETX, N_REMX, N_WRITE, N_LSTAT, N_HOLD, N_HWRITE, N_HREAD, N_HCLOSE, N_NK };
static const char *nk_name[N_NK] = { "create", "open-trunc", "mkdir", "rename", "link", "unlink", "rmdir",
				     "symlink", "readlink", "chmod", "truncate", "utimensat", "setxattr",
				     "getxattr", "removexattr", "write", "lstat", "hold-open", "held-write",
				     "held-read", "held-close" };
static const int nk_weight[N_NK] = { 9, 3, 7, 12, 5, 8, 5, 5, 3, 3, 3, 3, 5, 3, 2, 5, 4, 2, 3, 2, 1 };

#define NS_DMAX 8192
#define NX 4
#define XVMAX 256
enum { T_FREE, T_REG, T_DIR, T_LNK };

/* interned strings: paths, names, symlink targets */
static char **strs;
static int nstrs, cstrs;
static int intern(const char *s)
{
	for (int i = 0; i < nstrs; i++)
		if (!strcmp(strs[i], s))
			return i;
	if (nstrs == cstrs) {
		cstrs = cstrs ? cstrs * 2 : 256;
		strs = xrealloc(strs, (size_t)cstrs * sizeof(*strs));
	}
	strs[nstrs] = strdup(s);
	if (!strs[nstrs])
		die("out of memory");
	return nstrs++;
}

struct ment {
	char *name;
	int ino;
};
struct mino {
	int type, mode, nlink, size, target, held, parent;
	unsigned char *data;
	int xl[NX];
	unsigned char xv[NX][XVMAX];
	int mknown;
	int64_t msec;
	long mnsec;
	struct ment *ch;
	int nch, cch;
	ino_t real;
	int has_real;
};
static struct mino *mi;
static int nmi, cmi;

struct nst {
	char work[128];
	int hfd, hino, hroot;
	long cnt[N_NK], errs;
	long ecount[160];
	unsigned char *buf;
};

static int m_new(int type, int mode)
{
	int i;
	for (i = 1; i < nmi; i++)
		if (mi[i].type == T_FREE)
			break;
	if (i >= nmi || nmi == 0) {
		if (nmi == 0)
			i = 0;
		if (nmi == cmi) {
			cmi = cmi ? cmi * 2 : 64;
			mi = xrealloc(mi, (size_t)cmi * sizeof(*mi));
		}
		i = nmi++;
	}
	memset(&mi[i], 0, sizeof(mi[i]));
	mi[i].type = type;
	mi[i].mode = mode;
	mi[i].nlink = type == T_DIR ? 2 : 1;
	mi[i].parent = -1;
	mi[i].target = -1;
	for (int x = 0; x < NX; x++)
		mi[i].xl[x] = -1;
	if (type == T_REG)
		mi[i].data = xmalloc(NS_DMAX);
	return i;
}

static void m_free(int i)
{
	free(mi[i].data);
	for (int k = 0; k < mi[i].nch; k++)
		free(mi[i].ch[k].name);
	free(mi[i].ch);
	memset(&mi[i], 0, sizeof(mi[i]));
	mi[i].type = T_FREE;
}

static void m_reset(void)
{
	for (int i = 0; i < nmi; i++)
		if (mi[i].type != T_FREE)
			m_free(i);
	nmi = 0;
}

static int m_child(int dir, const char *name)
{
	for (int k = 0; k < mi[dir].nch; k++)
		if (!strcmp(mi[dir].ch[k].name, name))
			return mi[dir].ch[k].ino;
	return -1;
}

static void m_add(int dir, const char *name, int ino)
{
	struct mino *d = &mi[dir];
	if (d->nch == d->cch) {
		d->cch = d->cch ? d->cch * 2 : 8;
		d->ch = xrealloc(d->ch, (size_t)d->cch * sizeof(*d->ch));
	}
	d->ch[d->nch].name = strdup(name);
	d->ch[d->nch].ino = ino;
	d->nch++;
	mi[dir].mknown = 0;
}

static void m_del(int dir, const char *name)
{
	struct mino *d = &mi[dir];
	for (int k = 0; k < d->nch; k++)
		if (!strcmp(d->ch[k].name, name)) {
			free(d->ch[k].name);
			d->ch[k] = d->ch[--d->nch];
			break;
		}
	mi[dir].mknown = 0;
}

static void m_set(int dir, const char *name, int ino)
{
	for (int k = 0; k < mi[dir].nch; k++)
		if (!strcmp(mi[dir].ch[k].name, name))
			mi[dir].ch[k].ino = ino;
	mi[dir].mknown = 0;
}

static void m_maybe_free(int ino)
{
	if (mi[ino].type != T_DIR && mi[ino].nlink <= 0 && !mi[ino].held)
		m_free(ino);
}

/* Resolves every component but the last, as the kernel's path walk does:
 * a missing component is ENOENT, a file ENOTDIR, a (always dangling) symlink
 * ENOENT, a name over 255 bytes ENAMETOOLONG. */
static int m_parent(const char *path, int *dir, char *last)
{
	char tmp[1200];
	snprintf(tmp, sizeof(tmp), "%s", path);
	char *comp[8];
	int n = 0;
	for (char *s = strtok(tmp, "/"); s && n < 8; s = strtok(NULL, "/"))
		comp[n++] = s;
	int cur = 0;
	for (int i = 0; i < n - 1; i++) {
		if (strlen(comp[i]) > 255)
			return ENAMETOOLONG;
		int c = m_child(cur, comp[i]);
		if (c < 0)
			return ENOENT;
		if (mi[c].type == T_REG)
			return ENOTDIR;
		if (mi[c].type == T_LNK)
			return ENOENT;
		cur = c;
	}
	*dir = cur;
	snprintf(last, 300, "%s", comp[n - 1]);
	return 0;
}

static int m_last(int dir, const char *last, int *ino)
{
	if (strlen(last) > 255)
		return ENAMETOOLONG;
	*ino = m_child(dir, last);
	return 0;
}

/* dir a is a proper ancestor of dir b */
static int m_ancestor(int a, int b)
{
	for (int p = mi[b].parent; p >= 0; p = mi[p].parent)
		if (p == a)
			return 1;
	return 0;
}

/* the child of a (an ancestor of b) on the way to b */
static int m_child_towards(int a, int b)
{
	int c = b;
	while (mi[c].parent != a)
		c = mi[c].parent;
	return c;
}

static const char *npath(const struct nst *st, int r, const char *rel)
{
	static char b[4][PATH_MAX + 1400];
	static int k;
	k = (k + 1) % 4;
	if (rel)
		snprintf(b[k], sizeof(b[k]), "%s/%s/%s", roots[r].path, st->work, rel);
	else
		snprintf(b[k], sizeof(b[k]), "%s/%s", roots[r].path, st->work);
	return b[k];
}

static const char *short_name(const char *p)
{
	/* long names shown as L255/L256 */
	static char b[4][128];
	static int k;
	k = (k + 1) % 4;
	char *o = b[k];
	size_t n = 0;
	while (*p && n < sizeof(b[k]) - 8) {
		const char *e = strchr(p, '/');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l > 40)
			n += (size_t)snprintf(o + n, sizeof(b[k]) - n, "<%zu-byte name>", l);
		else
			n += (size_t)snprintf(o + n, sizeof(b[k]) - n, "%.*s", (int)l, p);
		p += l;
		if (*p == '/') {
			if (n < sizeof(b[k]) - 2)
				o[n++] = '/';
			o[n] = 0;
			p++;
		}
	}
	return o;
}

static void fmt_nop(char *b, size_t n, const struct op *o)
{
	const char *p1 = o->p1 >= 0 ? short_name(strs[o->p1]) : "";
	int k = snprintf(b, n, "[%s] %s %s", roots[o->root].label, nk_name[o->kind], p1);
	if (k < 0 || (size_t)k >= n)
		return;
	b += k;
	n -= (size_t)k;
	switch (o->kind) {
	case N_CREATE:
	case N_OTRUNC:
	case N_MKDIR:
	case N_CHMOD:
		snprintf(b, n, " mode=%04o", o->mode);
		break;
	case N_RENAME:
		snprintf(b, n, " -> %s%s", short_name(strs[o->p2]),
			 o->mode == RENAME_NOREPLACE ? " NOREPLACE" : o->mode == RENAME_EXCHANGE ? " EXCHANGE" : "");
		break;
	case N_LINK:
		snprintf(b, n, " -> %s", short_name(strs[o->p2]));
		break;
	case N_SYMLINK:
		snprintf(b, n, " (target %zu bytes)", strlen(strs[o->p2]));
		break;
	case N_TRUNC:
		snprintf(b, n, " size=%" PRId64, o->a);
		break;
	case N_UTIMES:
		snprintf(b, n, " mtime=%" PRId64 ".%09" PRId64, o->a, o->b);
		break;
	case N_SETX:
		snprintf(b, n, " user.fsr%" PRId64 " len=%" PRId64 "%s", o->a, o->b,
			 o->mode == XATTR_CREATE ? " CREATE" : o->mode == XATTR_REPLACE ? " REPLACE" : "");
		break;
	case N_GETX:
	case N_REMX:
		snprintf(b, n, " user.fsr%" PRId64, o->a);
		break;
	case N_WRITE:
		snprintf(b, n, " off=%" PRId64 " len=%" PRId64, o->a, o->b);
		break;
	case N_HWRITE:
		snprintf(b, n, "off=%" PRId64 " len=4096 +fsync", o->a * 4096);
		break;
	default:
		break;
	}
}

static int n_check_ino(int ino, const struct stat *sb, const char *p)
{
	struct mino *m = &mi[ino];
	if (m->has_real) {
		if (sb->st_ino != m->real)
			return fail(C_ATTR, "%s: st_ino %llu, but this object was seen as inode %llu before", p,
				    (unsigned long long)sb->st_ino, (unsigned long long)m->real);
		return 0;
	}
	for (int i = 0; i < nmi; i++)
		if (i != ino && mi[i].type != T_FREE && mi[i].has_real && mi[i].real == sb->st_ino)
			return fail(C_ATTR, "%s: st_ino %llu is the inode of another live object", p,
				    (unsigned long long)sb->st_ino);
	m->real = sb->st_ino;
	m->has_real = 1;
	return 0;
}

static int n_check_attrs(int ino, const struct stat *sb, const char *p)
{
	struct mino *m = &mi[ino];
	int t = S_ISREG(sb->st_mode) ? T_REG : S_ISDIR(sb->st_mode) ? T_DIR : S_ISLNK(sb->st_mode) ? T_LNK : -1;
	static const char *tn[] = { "free", "file", "directory", "symlink" };
	if (t != m->type)
		return fail(C_ATTR, "%s: is a %s, expected a %s", p, t < 0 ? "special file" : tn[t], tn[m->type]);
	if (t != T_LNK && (int)(sb->st_mode & 07777) != m->mode)
		return fail(C_ATTR, "%s: mode %04o, expected %04o", p, sb->st_mode & 07777, m->mode);
	if ((int)sb->st_nlink != m->nlink)
		return fail(C_ATTR, "%s: st_nlink %lu, expected %d", p, (unsigned long)sb->st_nlink, m->nlink);
	if (t == T_REG && sb->st_size != m->size)
		return fail(C_ATTR, "%s: st_size %lld, expected %d", p, (long long)sb->st_size, m->size);
	if (t == T_LNK && sb->st_size != (off_t)strlen(strs[m->target]))
		return fail(C_ATTR, "%s: symlink st_size %lld, expected %zu", p, (long long)sb->st_size,
			    strlen(strs[m->target]));
	if (m->mknown && (sb->st_mtim.tv_sec != m->msec || sb->st_mtim.tv_nsec != m->mnsec))
		return fail(C_ATTR, "%s: mtime %lld.%09ld, expected %" PRId64 ".%09ld (set by utimensat)", p,
			    (long long)sb->st_mtim.tv_sec, sb->st_mtim.tv_nsec, m->msec, m->mnsec);
	return n_check_ino(ino, sb, p);
}

static int n_check_content(struct nst *st, int ino, const char *full, const char *p)
{
	int fd = open(full, O_RDONLY | O_NOFOLLOW);
	if (fd < 0)
		return fail_errno(0, errno, "%s: open(O_RDONLY) to compare contents", p);
	ssize_t r = full_pread(fd, st->buf, NS_DMAX + 1, 0, 0);
	int e = errno;
	if (close(fd))
		return fail_errno(0, errno, "%s: close after reading", p);
	if (r < 0)
		return fail_errno(0, e, "%s: read", p);
	if (r != mi[ino].size)
		return fail(C_SIZE, "%s: read %zd bytes, expected %d", p, r, mi[ino].size);
	char w[700];
	snprintf(w, sizeof(w), "%.600s: contents", p);
	return describe_mismatch(mi[ino].data, st->buf, 0, r, w);
}

static int n_check_xattrs(int ino, const char *full, const char *p)
{
	struct mino *m = &mi[ino];
	if (m->type == T_LNK)
		return 0;
	char list[4096], val[XVMAX + 16];
	ssize_t n = llistxattr(full, list, sizeof(list));
	if (n < 0)
		return fail_errno(0, errno, "%s: llistxattr", p);
	int seen = 0;
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(list + i) + 1) {
		const char *x = list + i;
		if (strncmp(x, "user.", 5))
			continue;
		int idx = -1;
		if (!strncmp(x, "user.fsr", 8) && x[8] >= '0' && x[8] < '0' + NX && !x[9])
			idx = x[8] - '0';
		if (idx < 0 || m->xl[idx] < 0)
			return fail(C_ATTR, "%s: listxattr names %s, which the model does not have", p, x);
		seen++;
	}
	int want = 0;
	for (int x = 0; x < NX; x++) {
		if (m->xl[x] < 0)
			continue;
		want++;
		char name[32];
		snprintf(name, sizeof(name), "user.fsr%d", x);
		ssize_t l = lgetxattr(full, name, val, sizeof(val));
		if (l < 0)
			return fail_errno(0, errno, "%s: lgetxattr %s (compare)", p, name);
		if (l != m->xl[x] || memcmp(val, m->xv[x], (size_t)l))
			return fail(C_ATTR, "%s: xattr %s is %zd bytes and %s, expected %d bytes", p, name, l,
				    l == m->xl[x] ? "differs" : "has another length", m->xl[x]);
	}
	if (seen != want)
		return fail(C_ATTR, "%s: listxattr lists %d user.* names, expected %d", p, seen, want);
	return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The directory of path rel into out: "" for the work dir. */
static void dir_of(const char *rel, char *out, size_t n)
{
	snprintf(out, n, "%s", rel);
	char *sl = strrchr(out, '/');
	if (sl)
		*sl = 0;
	else
		out[0] = 0;
}

/* Compares the names directory ino (at rel, "" for the work dir) lists with the model's. */
static int n_cmp_names(struct nst *st, int r, int ino, const char *rel)
{
	const char *full = npath(st, r, *rel ? rel : NULL);
	char dfull[PATH_MAX + 1400];
	snprintf(dfull, sizeof(dfull), "%s", full);
	const char *shown = *rel ? short_name(rel) : "(work dir)";
	DIR *d = opendir(dfull);
	if (!d)
		return fail_errno(0, errno, "%s: opendir", shown);
	char **names = NULL;
	int nn = 0, cn = 0;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (nn == cn) {
			cn = cn ? cn * 2 : 16;
			names = xrealloc(names, (size_t)cn * sizeof(*names));
		}
		names[nn++] = strdup(de->d_name);
	}
	int e = errno;
	closedir(d);
	int rc = 0;
	if (e)
		rc = fail_errno(0, e, "%s: readdir", shown);
	struct mino *m = &mi[ino];
	char **mn = xmalloc((size_t)(m->nch + 1) * sizeof(*mn));
	for (int k = 0; k < m->nch; k++)
		mn[k] = m->ch[k].name;
	if (nn)   /* an empty directory: names is NULL, which qsort may not take */
		qsort(names, (size_t)nn, sizeof(*names), cmp_str);
	qsort(mn, (size_t)m->nch, sizeof(*mn), cmp_str);
	for (int i = 0, j = 0; !rc && (i < nn || j < m->nch);) {
		int c = i >= nn ? 1 : j >= m->nch ? -1 : strcmp(names[i], mn[j]);
		if (c < 0)
			rc = fail(C_CMP, "%s: readdir lists %s, which the model does not have", shown,
				  short_name(names[i]));
		else if (c > 0)
			rc = fail(C_CMP, "%s: readdir does not list %s, which the model has", shown, short_name(mn[j]));
		else {
			i++;
			j++;
		}
	}
	for (int i = 0; i < nn; i++)
		free(names[i]);
	free(names);
	free(mn);
	return rc;
}

static int n_cmp_dir(struct nst *st, int r, int ino, const char *rel);

/* Compares object ci at crel with the model: attributes, symlink target,
 * xattrs, contents; a directory's names, and with recurse everything below. */
static int n_cmp_object(struct nst *st, int r, int ci, const char *crel, int recurse)
{
	char shownc[600];
	snprintf(shownc, sizeof(shownc), "%s", short_name(crel));
	const char *cfull = npath(st, r, crel);
	struct stat sb;
	if (lstat(cfull, &sb))
		return fail_errno(0, errno, "%s: lstat (tree compare)", shownc);
	int rc = n_check_attrs(ci, &sb, shownc);
	if (rc)
		return rc;
	if (mi[ci].type == T_LNK) {
		char t[4200];
		ssize_t l = readlink(cfull, t, sizeof(t));
		if (l < 0)
			return fail_errno(0, errno, "%s: readlink (tree compare)", shownc);
		if ((size_t)l != strlen(strs[mi[ci].target]) || memcmp(t, strs[mi[ci].target], (size_t)l))
			return fail(C_ATTR, "%s: symlink target differs (%zd bytes, expected %zu)", shownc, l,
				    strlen(strs[mi[ci].target]));
		return 0;
	}
	rc = n_check_xattrs(ci, cfull, shownc);
	if (!rc && mi[ci].type == T_REG)
		rc = n_check_content(st, ci, cfull, shownc);
	if (!rc && mi[ci].type == T_DIR)
		rc = recurse ? n_cmp_dir(st, r, ci, crel) : n_cmp_names(st, r, ci, crel);
	return rc;
}

/* Compares directory ino, at rel ("" for the work dir), and everything below. */
static int n_cmp_dir(struct nst *st, int r, int ino, const char *rel)
{
	int rc = n_cmp_names(st, r, ino, rel);
	struct mino *m = &mi[ino];
	for (int k = 0; !rc && k < m->nch; k++) {
		char crel[1400];
		snprintf(crel, sizeof(crel), "%s%s%s", rel, *rel ? "/" : "", m->ch[k].name);
		rc = n_cmp_object(st, r, m->ch[k].ino, crel, 1);
	}
	return rc;
}

/* After every operation: what it touched at path rel — its directory's names
 * and the object there, if the model has one (a directory: its names, not
 * what lies below). A path the model cannot resolve has nothing to compare. */
static int n_cmp_touched(struct nst *st, int r, const char *rel)
{
	int dir;
	char last[300];
	if (m_parent(rel, &dir, last))
		return 0;
	char drel[1400];
	dir_of(rel, drel, sizeof(drel));
	int rc = n_cmp_names(st, r, dir, drel);
	int ino = -1;
	if (!rc && !m_last(dir, last, &ino) && ino >= 0)
		rc = n_cmp_object(st, r, ino, rel, 0);
	return rc;
}

static int n_fullcmp(struct nst *st, int r)
{
	struct stat sb;
	if (lstat(npath(st, r, NULL), &sb))
		return fail_errno(0, errno, "(work dir): lstat");
	if ((int)sb.st_nlink != mi[0].nlink)
		return fail(C_ATTR, "(work dir): st_nlink %lu, expected %d", (unsigned long)sb.st_nlink, mi[0].nlink);
	return n_cmp_dir(st, r, 0, "");
}

static int n_hclose(struct nst *st)
{
	if (st->hfd < 0)
		return 0;
	int r = close(st->hfd);
	int e = errno;
	st->hfd = -1;
	mi[st->hino].held = 0;
	m_maybe_free(st->hino);
	st->hino = -1;
	if (r)
		return fail_errno(0, e, "close of the held file");
	return 0;
}

/* -D: fsync the directory holding path (and the object itself when it can be
 * opened), so that a change acknowledged is durable before the next operation:
 * after a coordinator dies, nothing of it may be lost. */
static int n_sync_path(struct nst *st, int r, const char *rel, int object)
{
	char tmp[1400];
	dir_of(rel, tmp, sizeof(tmp));
	const char *dir = *tmp ? tmp : NULL;
	const char *full = object ? npath(st, r, rel) : npath(st, r, dir);
	int fd = open(full, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 && object && errno == ELOOP)
		return 0; /* a symlink: its directory is synced by the caller */
	if (fd < 0)
		return fail_errno(0, errno, "-D: open %s to fsync it", object ? short_name(rel) : dir ? short_name(dir) : "(work dir)");
	int rc = fsync(fd) ? fail_errno(0, errno, "-D: fsync %s", object ? short_name(rel) : dir ? short_name(dir) : "(work dir)") : 0;
	close(fd);
	return rc;
}

static int n_durable(struct nst *st, const struct op *o)
{
	switch (o->kind) {
	case N_READLINK:
	case N_GETX:
	case N_LSTAT:
	case N_HOLD:
	case N_HWRITE:
	case N_HREAD:
	case N_HCLOSE:
		return 0;
	case N_CHMOD:
	case N_TRUNC:
	case N_UTIMES:
	case N_SETX:
	case N_REMX:
	case N_WRITE:
	case N_OTRUNC:
		if (n_sync_path(st, o->root, strs[o->p1], 1))
			return -1;
		break;
	default:
		break;
	}
	if (n_sync_path(st, o->root, strs[o->p1], 0))
		return -1;
	if ((o->kind == N_RENAME || o->kind == N_LINK) && n_sync_path(st, o->root, strs[o->p2], 0))
		return -1;
	return 0;
}

static int n_exec1(struct nst *st, const struct op *o);
static int n_exec(struct nst *st, const struct op *o)
{
	long before = st->errs;
	int rc = n_exec1(st, o);
	if (rc || !opt_durable || st->errs != before)
		return rc;
	return n_durable(st, o);
}

static int n_exec1(struct nst *st, const struct op *o)
{
	const char *p1 = o->p1 >= 0 ? strs[o->p1] : NULL, *p2 = o->p2 >= 0 ? strs[o->p2] : NULL;
	const char *f1 = p1 ? npath(st, o->root, p1) : NULL;
	const char *f2 = (p2 && o->kind != N_SYMLINK) ? npath(st, o->root, p2) : NULL;
	const char *s1 = p1 ? short_name(p1) : "";
	char last[300], last2[300];
	int d = 0, x = -1, d2 = 0, x2 = -1, e, got = 0;
	long rr = 0;
	st->cnt[o->kind]++;

	/* prediction of the parent walk and the last lookup, for path ops */
	e = 0;
	if (p1 && o->kind != N_HWRITE && o->kind != N_HREAD && o->kind != N_HCLOSE) {
		e = m_parent(p1, &d, last);
		if (!e)
			e = m_last(d, last, &x);
	}

	switch (o->kind) {
	case N_CREATE: {
		if (!e && x >= 0)
			e = EEXIST;
		int fd = open(f1, O_CREAT | O_EXCL | O_WRONLY, o->mode);
		got = fd < 0 ? errno : 0;
		if (fd >= 0 && close(fd))
			return fail_errno(0, errno, "close after create %s", s1);
		if (got != e)
			return fail_errno(e, got, "create %s", s1);
		if (!e)
			m_add(d, last, m_new(T_REG, (int)o->mode));
		break;
	}
	case N_OTRUNC: {
		if (!e && x >= 0)
			e = mi[x].type == T_LNK ? ELOOP : mi[x].type == T_DIR ? EISDIR : 0;
		int fd = open(f1, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, o->mode);
		got = fd < 0 ? errno : 0;
		if (fd >= 0 && close(fd))
			return fail_errno(0, errno, "close after open-trunc %s", s1);
		if (got != e)
			return fail_errno(e, got, "open(O_CREAT|O_TRUNC|O_NOFOLLOW) %s", s1);
		if (!e && x >= 0) {
			memset(mi[x].data, 0, NS_DMAX);
			mi[x].size = 0;
			mi[x].mknown = 0;
		} else if (!e)
			m_add(d, last, m_new(T_REG, (int)o->mode));
		break;
	}
	case N_MKDIR:
	case N_SYMLINK:
		if (!e && x >= 0)
			e = EEXIST;
		rr = o->kind == N_MKDIR ? mkdir(f1, o->mode) : symlink(p2, f1);
		got = rr < 0 ? errno : 0;
		if (got != e)
			return fail_errno(e, got, "%s %s", nk_name[o->kind], s1);
		if (!e) {
			int ni = m_new(o->kind == N_MKDIR ? T_DIR : T_LNK, o->kind == N_MKDIR ? (int)o->mode : 0777);
			if (o->kind == N_MKDIR) {
				mi[ni].parent = d;
				mi[d].nlink++;
			} else
				mi[ni].target = o->p2;
			m_add(d, last, ni);
		}
		break;
	case N_UNLINK:
	case N_RMDIR:
		if (!e && x < 0)
			e = ENOENT;
		if (!e && o->kind == N_UNLINK && mi[x].type == T_DIR)
			e = EISDIR;
		if (!e && o->kind == N_RMDIR && mi[x].type != T_DIR)
			e = ENOTDIR;
		if (!e && o->kind == N_RMDIR && mi[x].nch)
			e = ENOTEMPTY;
		rr = o->kind == N_UNLINK ? unlink(f1) : rmdir(f1);
		got = rr < 0 ? errno : 0;
		if (got != e)
			return fail_errno(e, got, "%s %s", nk_name[o->kind], s1);
		if (!e) {
			m_del(d, last);
			if (o->kind == N_RMDIR) {
				mi[d].nlink--;
				m_free(x);
			} else {
				mi[x].nlink--;
				m_maybe_free(x);
			}
		}
		break;
	case N_LINK:
		if (!e && x < 0)
			e = ENOENT;
		if (!e) {
			e = m_parent(p2, &d2, last2);
			if (!e)
				e = m_last(d2, last2, &x2);
			if (!e && x2 >= 0)
				e = EEXIST;
			if (!e && mi[x].type == T_DIR)
				e = EPERM;
		}
		rr = link(f1, f2);
		got = rr < 0 ? errno : 0;
		if (got != e)
			return fail_errno(e, got, "link %s -> %s", s1, short_name(p2));
		if (!e) {
			mi[x].nlink++;
			m_add(d2, last2, x);
		}
		break;
	case N_RENAME: {
		/* do_renameat2: both parents, old lookup, new lookup, flags, traps, vfs_rename */
		int ep1 = m_parent(p1, &d, last), ep2 = 0;
		e = ep1;
		if (!e)
			e = ep2 = m_parent(p2, &d2, last2);
		if (!e)
			e = m_last(d, last, &x);
		if (!e && x < 0)
			e = ENOENT;
		if (!e)
			e = m_last(d2, last2, &x2);
		int exch = o->mode == RENAME_EXCHANGE;
		if (!e && o->mode == RENAME_NOREPLACE && x2 >= 0)
			e = EEXIST;
		if (!e && exch && x2 < 0)
			e = ENOENT;
		if (!e && d != d2) {
			if (m_ancestor(d, d2) && m_child_towards(d, d2) == x)
				e = EINVAL;
			else if (m_ancestor(d2, d) && x2 >= 0 && m_child_towards(d2, d) == x2)
				e = exch ? EINVAL : ENOTEMPTY;
		}
		int same = !e && x == x2;
		if (!e && !same && x2 >= 0 && !exch) {
			if (mi[x].type == T_DIR && mi[x2].type != T_DIR)
				e = ENOTDIR;
			else if (mi[x].type != T_DIR && mi[x2].type == T_DIR)
				e = EISDIR;
			else if (mi[x2].type == T_DIR && mi[x2].nch)
				e = ENOTEMPTY;
		}
		rr = syscall(SYS_renameat2, AT_FDCWD, f1, AT_FDCWD, f2, (unsigned)o->mode);
		got = rr < 0 ? errno : 0;
		if (got != e)
			return fail_errno(e, got, "rename%s %s -> %s",
					  o->mode == RENAME_NOREPLACE ? "(NOREPLACE)" : exch ? "(EXCHANGE)" : "", s1,
					  short_name(p2));
		if (e || same)
			break;
		if (exch) {
			m_set(d, last, x2);
			m_set(d2, last2, x);
			if (d != d2) {
				if (mi[x].type == T_DIR) {
					mi[x].parent = d2;
					mi[d].nlink--;
					mi[d2].nlink++;
					mi[x].mknown = 0;
				}
				if (mi[x2].type == T_DIR) {
					mi[x2].parent = d;
					mi[d2].nlink--;
					mi[d].nlink++;
					mi[x2].mknown = 0;
				}
			}
			break;
		}
		if (x2 >= 0) {
			m_del(d2, last2);
			if (mi[x2].type == T_DIR) {
				mi[d2].nlink--;
				m_free(x2);
			} else {
				mi[x2].nlink--;
				m_maybe_free(x2);
			}
		}
		m_del(d, last);
		m_add(d2, last2, x);
		if (mi[x].type == T_DIR && d != d2) {
			mi[x].parent = d2;
			mi[d].nlink--;
			mi[d2].nlink++;
			mi[x].mknown = 0;
		}
		break;
	}
	case N_READLINK: {
		char t[4200];
		if (!e && x < 0)
			e = ENOENT;
		if (!e && mi[x].type != T_LNK)
			e = EINVAL;
		ssize_t l = readlink(f1, t, sizeof(t));
		got = l < 0 ? errno : 0;
		if (got != e)
			return fail_errno(e, got, "readlink %s", s1);
		if (!e && ((size_t)l != strlen(strs[mi[x].target]) || memcmp(t, strs[mi[x].target], (size_t)l)))
			return fail(C_ATTR, "readlink %s: target differs (%zd bytes, expected %zu)", s1, l,
				    strlen(strs[mi[x].target]));
		break;
	}
	case N_CHMOD:
	case N_TRUNC:
		if (!e && (x < 0 || mi[x].type == T_LNK)) /* follows the (dangling) link */
			e = ENOENT;
		if (!e && o->kind == N_TRUNC && mi[x].type == T_DIR)
			e = EISDIR;
		rr = o->kind == N_CHMOD ? chmod(f1, o->mode) : truncate(f1, o->a);
		got = rr < 0 ? errno : 0;
		if (got != e)
			return fail_errno(e, got, "%s %s", nk_name[o->kind], s1);
		if (!e && o->kind == N_CHMOD)
			mi[x].mode = (int)o->mode;
		if (!e && o->kind == N_TRUNC) {
			if (o->a < mi[x].size)
				memset(mi[x].data + o->a, 0, (size_t)(mi[x].size - o->a));
			mi[x].size = (int)o->a;
			mi[x].mknown = 0;
		}
		break;
	case N_UTIMES: {
		if (!e && x < 0)
			e = ENOENT;
		struct timespec ts[2] = { { (time_t)o->a, (long)o->b }, { (time_t)o->a, (long)o->b } };
		rr = utimensat(AT_FDCWD, f1, ts, AT_SYMLINK_NOFOLLOW);
		got = rr < 0 ? errno : 0;
		if (got != e)
			return fail_errno(e, got, "utimensat %s", s1);
		if (!e) {
			mi[x].mknown = 1;
			mi[x].msec = o->a;
			mi[x].mnsec = (long)o->b;
		}
		break;
	}
	case N_SETX:
	case N_GETX:
	case N_REMX: {
		char name[32];
		unsigned char v[XVMAX + 16];
		int idx = (int)o->a;
		snprintf(name, sizeof(name), "user.fsr%d", idx);
		if (!e && x < 0)
			e = ENOENT;
		if (!e && mi[x].type == T_LNK) /* user.* on a symlink: xattr_permission */
			e = o->kind == N_GETX ? ENODATA : EPERM;
		if (!e && o->kind == N_SETX && o->mode == XATTR_CREATE && mi[x].xl[idx] >= 0)
			e = EEXIST;
		if (!e && o->kind == N_SETX && o->mode == XATTR_REPLACE && mi[x].xl[idx] < 0)
			e = ENODATA;
		if (!e && o->kind != N_SETX && mi[x].xl[idx] < 0)
			e = ENODATA;
		ssize_t l = 0;
		if (o->kind == N_SETX) {
			fill(v, (size_t)o->b, o->seed);
			l = lsetxattr(f1, name, v, (size_t)o->b, (int)o->mode);
		} else if (o->kind == N_GETX)
			l = lgetxattr(f1, name, v, sizeof(v));
		else
			l = lremovexattr(f1, name);
		got = l < 0 ? errno : 0;
		if (got != e)
			return fail_errno(e, got, "%s %s %s", nk_name[o->kind], s1, name);
		if (e)
			break;
		if (o->kind == N_SETX) {
			memcpy(mi[x].xv[idx], v, (size_t)o->b);
			mi[x].xl[idx] = (int)o->b;
		} else if (o->kind == N_REMX)
			mi[x].xl[idx] = -1;
		else if (l != mi[x].xl[idx] || memcmp(v, mi[x].xv[idx], (size_t)l))
			return fail(C_ATTR, "getxattr %s %s: %zd bytes%s, expected %d bytes", s1, name, l,
				    l == mi[x].xl[idx] ? " that differ" : "", mi[x].xl[idx]);
		break;
	}
	case N_WRITE:
	case N_HOLD: {
		if (!e && x < 0)
			e = ENOENT;
		if (!e)
			e = mi[x].type == T_LNK ? ELOOP : mi[x].type == T_DIR ? EISDIR : 0;
		if (o->kind == N_HOLD && n_hclose(st))
			return -1;
		int fd = open(f1, (o->kind == N_HOLD ? O_RDWR | O_DIRECT : O_WRONLY) | O_NOFOLLOW);
		got = fd < 0 ? errno : 0;
		if (got != e) {
			if (fd >= 0)
				close(fd);
			return fail_errno(e, got, "open(%s|O_NOFOLLOW) %s", o->kind == N_HOLD ? "O_RDWR|O_DIRECT" : "O_WRONLY",
					  s1);
		}
		if (e)
			break;
		if (o->kind == N_HOLD) {
			st->hfd = fd;
			st->hino = x;
			st->hroot = o->root;
			mi[x].held = 1;
			struct stat sb;
			if (fstat(fd, &sb))
				return fail_errno(0, errno, "fstat of the held file");
			return n_check_attrs(x, &sb, s1);
		}
		unsigned char b[256];
		fill(b, (size_t)o->b, o->seed);
		ssize_t w = pwrite(fd, b, (size_t)o->b, o->a);
		int we = errno;
		if (close(fd))
			return fail_errno(0, errno, "close after write %s", s1);
		if (w < 0)
			return fail_errno(0, we, "pwrite %s", s1);
		if (w != o->b)
			return fail(C_SIZE, "pwrite %s: %zd of %" PRId64 " bytes", s1, w, o->b);
		memcpy(mi[x].data + o->a, b, (size_t)o->b);
		if (o->a + o->b > mi[x].size)
			mi[x].size = (int)(o->a + o->b);
		mi[x].mknown = 0;
		break;
	}
	case N_LSTAT: {
		if (!e && x < 0)
			e = ENOENT;
		struct stat sb;
		rr = lstat(f1, &sb);
		got = rr < 0 ? errno : 0;
		if (got != e)
			return fail_errno(e, got, "lstat %s", s1);
		if (!e)
			return n_check_attrs(x, &sb, s1);
		break;
	}
	case N_HWRITE:
	case N_HREAD: {
		if (st->hfd < 0)
			break;
		int h = st->hino;
		struct mino *m = &mi[h];
		if (o->kind == N_HWRITE) {
			fill(st->buf, 4096, o->seed);
			ssize_t w = pwrite(st->hfd, st->buf, 4096, o->a * 4096);
			if (w < 0)
				return fail_errno(0, errno, "pwrite to the held file (opened on %s)", roots[st->hroot].label);
			if (w != 4096)
				return fail(C_SIZE, "pwrite to the held file: %zd of 4096 bytes", w);
			if (fsync(st->hfd))
				return fail_errno(0, errno, "fsync of the held file");
			memcpy(m->data + o->a * 4096, st->buf, 4096);
			if (o->a * 4096 + 4096 > m->size)
				m->size = (int)(o->a * 4096 + 4096);
			m->mknown = 0;
		}
		struct stat sb;
		if (fstat(st->hfd, &sb))
			return fail_errno(0, errno, "fstat of the held file (opened on %s)", roots[st->hroot].label);
		if (sb.st_size != m->size)
			return fail(C_SIZE, "held file (opened on %s): st_size %lld, expected %d", roots[st->hroot].label,
				    (long long)sb.st_size, m->size);
		if ((int)sb.st_nlink != m->nlink)
			return fail(C_ATTR, "held file: st_nlink %lu, expected %d", (unsigned long)sb.st_nlink, m->nlink);
		if (o->kind == N_HREAD) {
			ssize_t r = full_pread(st->hfd, st->buf, NS_DMAX, 0, 1);
			if (r < 0)
				return fail_errno(0, errno, "pread of the held file (opened on %s)", roots[st->hroot].label);
			if (r != m->size)
				return fail(C_SIZE, "pread of the held file: %zd bytes, expected %d", r, m->size);
			if (describe_mismatch(m->data, st->buf, 0, r, "held file contents"))
				return -1;
		}
		break;
	}
	case N_HCLOSE:
		return n_hclose(st);
	}
	if (e > 0 && e < 160) {
		st->ecount[e]++;
		st->errs++;
	}
	return 0;
}

/* ---- ns generator: paths that exist (mostly), new names, random paths */

static const char *NAMES[] = { "a", "b", "c", "d", "e", "f", "g", "h" };
static char long255[256], long256[257];

struct ent {
	char path[1200];
	int ino;
	int depth;
};
static struct ent *ents;
static int nents, cents;

static void collect(int dir, const char *pre, int depth)
{
	for (int k = 0; k < mi[dir].nch; k++) {
		if (nents == cents) {
			cents = cents ? cents * 2 : 64;
			ents = xrealloc(ents, (size_t)cents * sizeof(*ents));
		}
		struct ent *en = &ents[nents++];
		snprintf(en->path, sizeof(en->path), "%.800s%s%.256s", pre, *pre ? "/" : "", mi[dir].ch[k].name);
		en->ino = mi[dir].ch[k].ino;
		en->depth = depth;
		if (mi[en->ino].type == T_DIR && depth < 3) {
			char p[1200];
			snprintf(p, sizeof(p), "%s", en->path);
			collect(en->ino, p, depth + 1);
		}
	}
}

static const char *rand_name(void)
{
	int r = (int)rn(1000);
	if (r < 8)
		return long255;
	if (r < 14 && !opt_nolong)
		return long256;
	return NAMES[rn(8)];
}

static int rand_path(void)
{
	char p[1200] = "";
	int r = (int)rn(100), depth = r < 60 ? 1 : r < 90 ? 2 : 3;
	for (int i = 0; i < depth; i++) {
		size_t l = strlen(p);
		snprintf(p + l, sizeof(p) - l, "%s%s", i ? "/" : "", rand_name());
	}
	return intern(p);
}

/* type: 0 any, else T_REG / T_DIR / T_LNK preferred */
static int existing(int type)
{
	int cand[4096], n = 0;
	for (int i = 0; i < nents && n < 4096; i++)
		if (!type || mi[ents[i].ino].type == type)
			cand[n++] = i;
	if (!n) {
		if (type && nents)
			return intern(ents[rn(nents)].path);
		return rand_path();
	}
	return intern(ents[cand[rn(n)]].path);
}

static int new_path(void)
{
	int cand[4096], n = 0;
	for (int i = 0; i < nents && n < 4095; i++)
		if (mi[ents[i].ino].type == T_DIR && ents[i].depth < 3)
			cand[n++] = i;
	int pick = (n && !pct(35)) ? cand[rn(n)] : -1;
	char p[1600];
	snprintf(p, sizeof(p), "%s%s%s", pick >= 0 ? ents[pick].path : "", pick >= 0 ? "/" : "", rand_name());
	return intern(p);
}

static int any_path(int type) { return pct(75) ? existing(type) : rand_path(); }

static int rand_target(void)
{
	char t[400];
	int r = (int)rn(100);
	if (r < 50)
		snprintf(t, sizeof(t), "zz%" PRId64, rn(1000));
	else if (r < 75)
		snprintf(t, sizeof(t), "/nonexistent-fsrand/zz%" PRId64, rn(1000));
	else {
		int len = 60 + (int)rn(200), i;
		t[0] = 'z';
		for (i = 1; i < len; i++)
			t[i] = (i % 50 == 0) ? '/' : (char)('a' + rn(26));
		t[i] = 0;
	}
	return intern(t);
}

struct ngen {
	int root;
};

static void n_gen(struct ngen *g, const struct nst *st, struct op *o)
{
	memset(o, 0, sizeof(*o));
	o->p1 = o->p2 = -1;
	if (nroots > 1 && rn(opt_switch) == 0)
		g->root = (g->root + 1 + (int)rn(nroots - 1)) % nroots;
	o->root = (uint8_t)g->root;
	o->seed = rnd();
	nents = 0;
	collect(0, "", 1);
	int tot = 0, k;
	for (k = 0; k < N_NK; k++)
		tot += nk_weight[k];
	do {
		int64_t r = rn(tot);
		for (k = 0; k < N_NK; k++) {
			if (r < nk_weight[k])
				break;
			r -= nk_weight[k];
		}
	} while (excluded(nk_name[k]));
	o->kind = (uint8_t)k;
	switch (k) {
	case N_CREATE:
		o->p1 = pct(75) ? new_path() : any_path(0);
		o->mode = (uint32_t)(0600 | rn(0200));
		break;
	case N_OTRUNC:
		o->p1 = pct(50) ? existing(T_REG) : pct(50) ? new_path() : any_path(0);
		o->mode = (uint32_t)(0600 | rn(0200));
		break;
	case N_MKDIR:
		o->p1 = pct(75) ? new_path() : any_path(0);
		o->mode = (uint32_t)(0700 | rn(0100));
		break;
	case N_SYMLINK:
		o->p1 = pct(80) ? new_path() : any_path(0);
		o->p2 = rand_target();
		break;
	case N_RENAME: {
		o->p1 = pct(85) ? existing(pct(30) ? T_DIR : 0) : any_path(0);
		int r2 = (int)rn(100);
		o->p2 = r2 < 50 ? new_path() : r2 < 85 ? existing(0) : any_path(0);
		int f = (int)rn(100);
		o->mode = f < 60 ? 0 : f < 80 ? RENAME_NOREPLACE : RENAME_EXCHANGE;
		break;
	}
	case N_LINK:
		o->p1 = pct(85) ? existing(pct(70) ? T_REG : 0) : any_path(0);
		o->p2 = pct(75) ? new_path() : existing(0);
		break;
	case N_UNLINK:
		o->p1 = pct(85) ? existing(pct(80) ? T_REG : 0) : any_path(0);
		break;
	case N_RMDIR:
		o->p1 = pct(80) ? existing(T_DIR) : any_path(0);
		break;
	case N_READLINK:
		o->p1 = pct(85) ? existing(T_LNK) : any_path(0);
		break;
	case N_CHMOD:
		o->p1 = any_path(0);
		o->mode = (uint32_t)rn(01000);
		if (pct(50))
			o->mode |= 0700;
		break;
	case N_TRUNC:
		o->p1 = any_path(pct(80) ? T_REG : 0);
		o->a = rn(NS_DMAX + 1);
		break;
	case N_UTIMES:
		o->p1 = any_path(0);
		o->a = 1000000000 + rn(1000000000);
		o->b = rn(1000000000);
		break;
	case N_SETX:
		o->p1 = any_path(0);
		o->a = rn(NX);
		o->b = rn(XVMAX + 1);
		o->mode = pct(60) ? 0 : pct(50) ? XATTR_CREATE : XATTR_REPLACE;
		break;
	case N_GETX:
	case N_REMX:
		o->p1 = any_path(0);
		o->a = rn(NX);
		break;
	case N_WRITE:
		o->p1 = any_path(T_REG);
		o->b = 1 + rn(200);
		o->a = rn(NS_DMAX - o->b + 1);
		break;
	case N_LSTAT:
		o->p1 = any_path(0);
		break;
	case N_HOLD:
		o->p1 = pct(85) ? existing(T_REG) : any_path(0);
		break;
	case N_HWRITE:
		o->a = rn(2);
		break;
	default:
		break;
	}
	(void)st;
}

static void rm_tree(const char *p)
{
	struct stat sb;
	if (lstat(p, &sb))
		return;
	if (!S_ISDIR(sb.st_mode)) {
		unlink(p);
		return;
	}
	chmod(p, 0700);
	DIR *d = opendir(p);
	if (d) {
		struct dirent *de;
		char **names = NULL;
		int n = 0;
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			names = xrealloc(names, (size_t)(n + 1) * sizeof(*names));
			names[n] = xmalloc(strlen(p) + strlen(de->d_name) + 2);
			sprintf(names[n], "%s/%s", p, de->d_name);
			n++;
		}
		closedir(d);
		for (int i = 0; i < n; i++) {
			rm_tree(names[i]);
			free(names[i]);
		}
		free(names);
	}
	rmdir(p);
}

static struct nst nst_main;

/* -F: a directory entry the model does not know, in the directory of
 * operation #i's first path: the check after that operation must report it.
 * 0 when that path's directory is not in the model (nothing made: the next
 * operation tries). */
static int n_fault(struct nst *st, const struct op *o, long i)
{
	int dir;
	char last[300], rel[1400];
	if (o->p1 < 0 || m_parent(strs[o->p1], &dir, last))
		return 0;
	dir_of(strs[o->p1], rel, sizeof(rel));
	char name[1500];
	snprintf(name, sizeof(name), "%s%sfault", rel, *rel ? "/" : "");
	const char *full = npath(st, o->root, name);
	if (mkdir(full, 0755))
		die("-F: cannot make %s: %s", full, strerror(errno));
	printf("# -F: after op #%ld made %s, which the model does not have\n", i + 1, short_name(name));
	return 1;
}

static int n_session(struct nst *st, const struct op *list, long n, int gen, long *fail_at)
{
	struct ngen g = { 0 };
	int k = opt_k ? opt_k : 25;
	double t0 = now_s();
	memset(st->cnt, 0, sizeof(st->cnt));
	memset(st->ecount, 0, sizeof(st->ecount));
	st->errs = 0;
	st->hfd = -1;
	st->hino = -1;
	m_reset();
	m_new(T_DIR, 0755);
	snprintf(st->work, sizeof(st->work), "%s-ns-%" PRIu64 "-%d-%d", opt_prefix, opt_seed, (int)getpid(),
		 cur_attempt++);
	int r0 = gen ? 0 : (n > 0 ? list[0].root : 0);
	if (mkdir(npath(st, r0, NULL), 0755))
		die("cannot create %s: %s", npath(st, r0, NULL), strerror(errno));
	chmod(npath(st, r0, NULL), 0755);
	long i;
	int failed = 0, lastroot = r0, fault_made = 0;
	for (i = 0;; i++) {
		struct op o;
		if (gen) {
			if (i >= opt_ops || (opt_secs > 0 && now_s() - t0 >= opt_secs))
				break;
			n_gen(&g, st, &o);
			push_op(&o);
		} else {
			if (i >= n)
				break;
			o = list[i];
		}
		char d[600];
		fmt_nop(d, sizeof(d), &o);
		snprintf(wd_desc, sizeof(wd_desc), "ns seed=%" PRIu64 " op #%ld %s", opt_seed, i, d);
		if (opt_verbose)
			fprintf(stderr, "#%ld %s\n", i, d);
		if (gen)
			roots[o.root].ops++;
		lastroot = o.root;
		alarm(opt_wd);
		int rc = n_exec(st, &o);
		if (!rc && gen && opt_fault && i + 1 >= opt_fault && !fault_made)
			fault_made = n_fault(st, &o, i);
		if (!rc && opt_touched && o.p1 >= 0)
			rc = n_cmp_touched(st, o.root, strs[o.p1]);
		if (!rc && opt_touched && o.p2 >= 0 && o.kind != N_SYMLINK)
			rc = n_cmp_touched(st, o.root, strs[o.p2]);
		if (!rc && !replaying && (i + 1) % k == 0)
			rc = n_fullcmp(st, o.root);
		alarm(0);
		if (rc) {
			failed = 1;
			*fail_at = i;
			break;
		}
	}
	if (!failed && i > 0) {
		snprintf(wd_desc, sizeof(wd_desc), "ns seed=%" PRIu64 " final compare", opt_seed);
		alarm(opt_wd);
		if (n_fullcmp(st, lastroot) || n_hclose(st) || n_fullcmp(st, lastroot)) {
			failed = 1;
			*fail_at = i - 1;
		}
		alarm(0);
	}
	if (st->hfd >= 0)
		close(st->hfd);
	st->hfd = -1;
	if (!opt_keep && !(gen && failed)) {
		alarm(opt_wd);
		rm_tree(npath(st, lastroot, NULL));
		alarm(0);
	}
	return failed;
}

/* ==================================================== minimisation ===== */

static int is_file_mode;
static struct op *mcur;

struct sig {
	int cls, e_exp, e_got, kind;
	uint64_t shape; /* the failure message with its numbers left out */
};

static uint64_t msg_shape(const char *m)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *m; m++) {
		if ((*m >= '0' && *m <= '9') || *m == '-')
			continue;
		h ^= (unsigned char)*m;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static int replay(struct op *list, long n, long *fail_at, struct sig *s)
{
	int failed;
	memset(&fl, 0, sizeof(fl));
	replaying = 1;
	if (is_file_mode) {
		static struct fst st;
		if (!st.m) {
			st.m = xalign((size_t)(opt_max + 2 * ALIGN));
			st.buf = xalign((size_t)(opt_max + 2 * ALIGN));
			st.buf2 = xalign((size_t)(opt_max + 2 * ALIGN));
		}
		failed = f_session(&st, list, n, 0, fail_at);
	} else {
		static struct nst st;
		if (!st.buf)
			st.buf = xalign(NS_DMAX + ALIGN);
		failed = n_session(&st, list, n, 0, fail_at);
	}
	if (failed) {
		s->cls = fl.cls;
		s->e_exp = fl.e_exp;
		s->e_got = fl.e_got;
		s->kind = list[*fail_at].kind;
		s->shape = msg_shape(fl.msg);
	}
	return failed;
}

static int same_sig(const struct sig *a, const struct sig *b)
{
	/* an unexpected errno: the same operation kind getting the same errno */
	if (a->cls == C_ERRNO && b->cls == C_ERRNO)
		return a->kind == b->kind && a->e_got == b->e_got;
	if (a->cls != b->cls || a->e_exp != b->e_exp || a->e_got != b->e_got || a->shape != b->shape)
		return 0;
	return a->cls == C_CMP || a->kind == b->kind;
}

static void print_seq(const struct op *list, long n, const char *failmsg)
{
	for (long i = 0; i < n; i++) {
		char d[700];
		if (is_file_mode)
			fmt_fop(d, sizeof(d), &list[i]);
		else
			fmt_nop(d, sizeof(d), &list[i]);
		printf("    %3ld. %s\n", i + 1, d);
	}
	printf("         => %s\n", failmsg);
}

/* ddmin-style: removes chunks of operations while the run still fails the
 * same way; then tries every operation on one root. */
static void minimise(long fail_at, const struct sig *orig)
{
	double t0 = now_s();
	long n = fail_at + 1;
	mcur = xmalloc((size_t)n * sizeof(*mcur));
	memcpy(mcur, ops, (size_t)n * sizeof(*mcur));
	struct op *cand = xmalloc((size_t)n * sizeof(*cand));
	long fa;
	struct sig s;
	char lastmsg[2048];
	long runs = 0;
	printf("# minimising (at most %.0f s)...\n", opt_shrink);
	fflush(stdout);
	runs++;
	if (!replay(mcur, n, &fa, &s) || !same_sig(&s, orig)) {
		printf("# the first %ld operations replayed on a fresh %s did not fail the same way (%s): "
		       "timing-dependent; the last operations before the failure were:\n",
		       n, is_file_mode ? "file" : "tree", fl.cls ? fl.msg : "no failure");
		long from = n > 25 ? n - 25 : 0;
		print_seq(ops + from, n - from, "(the original failure above)");
		free(cand);
		return;
	}
	n = fa + 1;
	snprintf(lastmsg, sizeof(lastmsg), "%s", fl.msg);
	/* most failures are local: the shortest suffix that still fails first */
	for (long L = 1; L < n && now_s() - t0 < opt_shrink; L *= 2) {
		runs++;
		if (replay(mcur + n - L, L, &fa, &s) && same_sig(&s, orig)) {
			memmove(mcur, mcur + n - L, (size_t)(fa + 1) * sizeof(*mcur));
			n = fa + 1;
			snprintf(lastmsg, sizeof(lastmsg), "%s", fl.msg);
			break;
		}
	}
	long chunk = n / 2 > 0 ? n / 2 : 1;
	while (chunk >= 1 && now_s() - t0 < opt_shrink) {
		int progress = 0;
		for (long i = 0; i < n && now_s() - t0 < opt_shrink;) {
			long len = chunk < n - i ? chunk : n - i;
			if (len >= n) {
				i += len;
				continue;
			}
			long cn = 0;
			for (long j = 0; j < n; j++)
				if (j < i || j >= i + len)
					cand[cn++] = mcur[j];
			runs++;
			if (replay(cand, cn, &fa, &s) && same_sig(&s, orig)) {
				n = fa + 1;
				memcpy(mcur, cand, (size_t)n * sizeof(*mcur));
				snprintf(lastmsg, sizeof(lastmsg), "%s", fl.msg);
				progress = 1;
			} else
				i += len;
		}
		if (!progress) {
			if (chunk == 1)
				break;
			chunk /= 2;
		}
	}
	int done = now_s() - t0 < opt_shrink;
	char onroot[256] = "";
	if (nroots > 1) {
		int used[MAXROOTS] = { 0 }, nused = 0;
		for (long j = 0; j < n; j++)
			if (!used[mcur[j].root]++)
				nused++;
		size_t l = 0;
		for (int r = 0; r < nroots && now_s() - t0 < opt_shrink + 30; r++) {
			for (long j = 0; j < n; j++) {
				cand[j] = mcur[j];
				cand[j].root = (uint8_t)r;
				if (cand[j].kind == F_PEEK && is_file_mode)
					cand[j].a = r;
			}
			runs++;
			int f = replay(cand, n, &fa, &s) && same_sig(&s, orig);
			l += (size_t)snprintf(onroot + l, sizeof(onroot) - l, "%s%s: %s", r ? ", " : "", roots[r].label,
					      f ? "fails" : "passes");
			if (l >= sizeof(onroot))
				break;
		}
		printf("# the minimised sequence uses %d root(s); with every operation on one root: %s\n", nused,
		       onroot);
	}
	printf("# minimised%s to %ld operation(s) in %.1f s (%ld replays):\n", done ? "" : " (time budget hit)", n,
	       now_s() - t0, runs);
	print_seq(mcur, n, lastmsg);
	free(cand);
}

/* ============================================================== main ===== */

static void usage(void)
{
	fprintf(stderr, "usage: fsrand file|ns [-s SEED] [-n OPS] [-t SECONDS] [-k K] [-m N] [-w SECONDS] [-S SECONDS]\n"
			"              [-M BYTES] [-p PREFIX] [-x OP,OP...] [-N] [-D] [-F N] [-T] [-K] [-v] [LABEL=]ROOT [[LABEL=]ROOT...]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	if (!strcmp(argv[1], "file"))
		is_file_mode = 1;
	else if (strcmp(argv[1], "ns"))
		usage();
	snprintf(mode_name, sizeof(mode_name), "%s", argv[1]);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	opt_seed = ((uint64_t)ts.tv_sec * 1000003u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 20);
	opt_seed %= 1000000000ULL;
	int c;
	optind = 2;
	while ((c = getopt(argc, argv, "s:n:t:k:m:w:S:M:p:x:F:NDTKv")) != -1) {
		switch (c) {
		case 's': opt_seed = strtoull(optarg, NULL, 0); break;
		case 'n': opt_ops = strtol(optarg, NULL, 0); break;
		case 't': opt_secs = strtod(optarg, NULL); break;
		case 'k': opt_k = atoi(optarg); break;
		case 'm': opt_switch = atoi(optarg); break;
		case 'w': opt_wd = (unsigned)atoi(optarg); break;
		case 'S': opt_shrink = strtod(optarg, NULL); break;
		case 'M': opt_max = strtoll(optarg, NULL, 0); break;
		case 'p': opt_prefix = optarg; break;
		case 'x': opt_exclude = optarg; break;
		case 'N': opt_nolong = 1; break;
		case 'D': opt_durable = 1; break;
		case 'F': opt_fault = strtol(optarg, NULL, 0); break;
		case 'T': opt_touched = 1; break;
		case 'K': opt_keep = 1; break;
		case 'v': opt_verbose = 1; break;
		default: usage();
		}
	}
	if (optind >= argc || opt_switch < 1 || opt_k < 0 || opt_max < 65536)
		usage();
	opt_max &= ~(int64_t)(ALIGN - 1);
	for (; optind < argc; optind++) {
		if (nroots == MAXROOTS)
			die("at most %d roots", MAXROOTS);
		struct root *r = &roots[nroots];
		const char *a = argv[optind], *eq = strchr(a, '=');
		const char *sl = strchr(a, '/');
		if (eq && (!sl || eq < sl) && eq - a < (long)sizeof(r->label)) {
			snprintf(r->label, sizeof(r->label), "%.*s", (int)(eq - a), a);
			a = eq + 1;
		} else
			snprintf(r->label, sizeof(r->label), "root%d", nroots);
		snprintf(r->path, sizeof(r->path), "%s", a);
		struct stat sb;
		if (stat(r->path, &sb) || !S_ISDIR(sb.st_mode))
			die("%s is not a directory", r->path);
		nroots++;
	}
	umask(0);
	memset(long255, 'L', 255);
	memset(long256, 'M', 256);
	signal(SIGALRM, on_alarm);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_bus;
	sigaction(SIGBUS, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	rs = opt_seed;

	double t0 = now_s();
	long fail_at = -1;
	int failed;
	if (is_file_mode) {
		fst_main.m = xalign((size_t)(opt_max + 2 * ALIGN));
		fst_main.buf = xalign((size_t)(opt_max + 2 * ALIGN));
		fst_main.buf2 = xalign((size_t)(opt_max + 2 * ALIGN));
		failed = f_session(&fst_main, NULL, 0, 1, &fail_at);
	} else {
		nst_main.buf = xalign(NS_DMAX + ALIGN);
		failed = n_session(&nst_main, NULL, 0, 1, &fail_at);
	}
	double el = now_s() - t0;
	char rootsum[1024] = "";
	size_t l = 0;
	for (int r = 0; r < nroots && l < sizeof(rootsum); r++)
		l += (size_t)snprintf(rootsum + l, sizeof(rootsum) - l, "%s%s:%ld", r ? " " : "", roots[r].label,
				      roots[r].ops);
	if (failed) {
		char d[700];
		if (is_file_mode)
			fmt_fop(d, sizeof(d), &ops[fail_at]);
		else
			fmt_nop(d, sizeof(d), &ops[fail_at]);
		printf("FAIL fsrand %s seed=%" PRIu64 " op #%ld of %ld (%.1f s; ops per root %s): %s\n", mode_name,
		       opt_seed, fail_at + 1, nops, el, rootsum, d);
		printf("# %s failure: %s\n", cls_name[fl.cls], fl.msg);
		printf("# the failing %s is kept: %s\n", is_file_mode ? "file" : "tree",
			       is_file_mode ? fpath(&fst_main, 0) : npath(&nst_main, 0, NULL));
		struct sig s = { fl.cls, fl.e_exp, fl.e_got, ops[fail_at].kind, msg_shape(fl.msg) };
		char orig[2048];
		snprintf(orig, sizeof(orig), "%s", fl.msg);
		minimise(fail_at, &s);
		printf("# reproduce: fsrand %s -s %" PRIu64 " -n %ld", mode_name, opt_seed, fail_at + 1);
		if (opt_k)
			printf(" -k %d", opt_k);
		if (opt_switch != 8)
			printf(" -m %d", opt_switch);
		if (opt_max != 4 << 20)
			printf(" -M %" PRId64, opt_max);
		if (*opt_exclude)
			printf(" -x %s", opt_exclude);
		if (opt_nolong)
			printf(" -N");
		if (opt_durable)
			printf(" -D");
		for (int r = 0; r < nroots; r++)
			printf(" %s=%s", roots[r].label, roots[r].path);
		printf("\n");
		return 1;
	}
	char kinds[1500] = "";
	l = 0;
	int nk = is_file_mode ? F_NK : N_NK;
	for (int k = 0; k < nk && l < sizeof(kinds); k++) {
		long cnt = is_file_mode ? fst_main.cnt[k] : nst_main.cnt[k];
		l += (size_t)snprintf(kinds + l, sizeof(kinds) - l, "%s%s=%ld", k ? " " : "",
				      is_file_mode ? fk_name[k] : nk_name[k], cnt);
	}
	if (is_file_mode) {
		char un[200] = "";
		size_t u = 0;
		for (int m = 0; m < 5; m++)
			if (f_disabled & (1u << m))
				u += (size_t)snprintf(un + u, sizeof(un) - u, " fallocate-%s", fa_name[m]);
		if ((f_disabled & DIS_COPY) && u < sizeof(un))
			u += (size_t)snprintf(un + u, sizeof(un) - u, " copy_file_range");
		if (f_nodirect && u < sizeof(un))
			snprintf(un + u, sizeof(un) - u, " O_DIRECT");
		printf("ok fsrand file seed=%" PRIu64 " ops=%ld elapsed=%.1fs roots=%d (%s) migrations=%ld; %s%s%s\n",
		       opt_seed, nops, el, nroots, rootsum, fst_main.migrations, kinds, *un ? "; unsupported:" : "", un);
	} else {
		char es[600] = "";
		size_t u = 0;
		for (int e = 1; e < 160 && u < sizeof(es); e++)
			if (nst_main.ecount[e])
				u += (size_t)snprintf(es + u, sizeof(es) - u, " %s=%ld", ename(e), nst_main.ecount[e]);
		printf("ok fsrand ns seed=%" PRIu64 " ops=%ld elapsed=%.1fs roots=%d (%s); %s; predicted errors:%s\n",
		       opt_seed, nops, el, nroots, rootsum, kinds, es);
	}
	return 0;
}
