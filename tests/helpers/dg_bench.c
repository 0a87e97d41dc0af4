/* dg_bench — dlm-glue lock latency benchmarks, run on the nodes of a
 * csvfs-lab (tests/bench/cluster.sh). Not a test: it prints numbers and
 * checks nothing but its own progress.
 *
 *   dg_bench [--deadline MS] LOCKSPACE uncontended [--count N] [--members N] [--max-ms MS]
 *   dg_bench [--deadline MS] LOCKSPACE cached      [--count N] [--members N] [--max-ms MS]
 *   dg_bench [--deadline MS] LOCKSPACE pingpong RES --role writer|reader
 *                                     [--rounds N] [--members N] [--max-ms MS]
 *   dg_bench [--deadline MS] LOCKSPACE idle [--until-file PATH] [--max-ms MS]
 *
 * uncontended: COUNT times, a lock in EX on a fresh resource ("u<pid>.<i>"),
 *   then its unlock. Reported: the time from dg_lock until the grant (ast)
 *   plus the dg_unlock call. dg_unlock is asynchronous (no callback tells
 *   its completion), so the unlock's own delivery shows up in the next
 *   lock's latency, not in its own.
 * cached: holds "cached" in PR for the whole run; COUNT times, a second PR
 *   lock on the same resource (compatible with what this node holds) and
 *   its unlock, timed the same way.
 * pingpong: one writer and one or more readers on RES. The writer converts
 *   NL->EX (timed), holds EX until a blocking callback, converts EX->NL
 *   writing the round number into the value block. A reader converts NL->PR
 *   (timed, reads the round), holds PR until a blocking callback, converts
 *   PR->NL, and asks again. Every timed request therefore conflicts with a
 *   holder on another node: request -> bast -> the holder's down-convert ->
 *   grant. The writer stops after ROUNDS rounds; a reader stops when it reads
 *   ROUNDS (or after --max-ms).
 * idle: joins the lockspace and does nothing until PATH exists or --max-ms
 *   passes (so that every node of the lab is a member while one measures).
 *
 * --members N: wait (30 s at most) until N members are up in the lockspace,
 * then 300 ms more, before measuring. --max-ms bounds the whole measurement
 * (default 60000).
 *
 * Output (stdout): "connected node N pid P", then one line per measurement:
 *   result NAME n=N p50=MS p99=MS mean=MS min=MS max=MS total_ms=MS
 * Exit: 0 ok, 1 a lock operation failed or timed out, 2 usage, 3 connect failed.
 */
#include "dlm-glue/dlmglue.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void log_fn(void *arg, int level, const char *fmt, va_list ap)
{
	(void)arg;
	if (level > 4)
		return;
	char line[1024];
	vsnprintf(line, sizeof(line), fmt, ap);
	fprintf(stderr, "dg_bench[%d] <%d> %s\n", (int)getpid(), level, line);
}

/* ---- a lock handle with counters ---------------------------------------------- */

struct handle {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct dg_lock *lk;
	int asts, basts;
	int status;
	int mode;
	int have_lvb;
	uint8_t lvb[DG_LVB_LEN];
};

static struct handle *h_new(void)
{
	/* never freed: a callback may still run when the program ends */
	struct handle *h = calloc(1, sizeof(*h));
	if (!h) {
		fprintf(stderr, "dg_bench: out of memory\n");
		exit(1);
	}
	pthread_mutex_init(&h->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cv, &ca);
	pthread_condattr_destroy(&ca);
	return h;
}

static void ast_cb(void *arg, int status, enum dg_mode granted, const uint8_t *lvb)
{
	struct handle *h = arg;
	pthread_mutex_lock(&h->mu);
	h->asts++;
	h->status = status;
	h->mode = granted;
	h->have_lvb = lvb != NULL;
	if (lvb)
		memcpy(h->lvb, lvb, DG_LVB_LEN);
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

static void bast_cb(void *arg, enum dg_mode mode)
{
	(void)mode;
	struct handle *h = arg;
	pthread_mutex_lock(&h->mu);
	h->basts++;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

static void deadline_ts(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Waits (bounded) until the ast count passes `seen`; the status or -ETIMEDOUT. */
static int h_wait_ast(struct handle *h, int seen, unsigned ms)
{
	double end = now_ms() + ms;
	pthread_mutex_lock(&h->mu);
	while (h->asts <= seen && !stop_flag && now_ms() < end) {
		struct timespec ts;
		deadline_ts(&ts, 50);
		pthread_cond_timedwait(&h->cv, &h->mu, &ts);
	}
	int st = h->asts > seen ? h->status : -ETIMEDOUT;
	pthread_mutex_unlock(&h->mu);
	return st;
}

/* Waits (bounded) until the bast count passes `seen`; 1 if it did. */
static int h_wait_bast(struct handle *h, int seen, unsigned ms)
{
	double end = now_ms() + ms;
	pthread_mutex_lock(&h->mu);
	while (h->basts <= seen && !stop_flag && now_ms() < end) {
		struct timespec ts;
		deadline_ts(&ts, 50);
		pthread_cond_timedwait(&h->cv, &h->mu, &ts);
	}
	int got = h->basts > seen;
	pthread_mutex_unlock(&h->mu);
	return got;
}

static void h_counts(struct handle *h, int *asts, int *basts)
{
	pthread_mutex_lock(&h->mu);
	*asts = h->asts;
	*basts = h->basts;
	pthread_mutex_unlock(&h->mu);
}

/* ---- statistics ------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return v[k - 1];
}

static void report(const char *name, double *v, size_t n, double total_ms)
{
	if (n == 0) {
		printf("result %s n=0\n", name);
		fflush(stdout);
		return;
	}
	qsort(v, n, sizeof(*v), cmp_double);
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	printf("result %s n=%zu p50=%.3f p99=%.3f mean=%.3f min=%.3f max=%.3f total_ms=%.1f\n", name, n,
	       pct(v, n, 50), pct(v, n, 99), sum / (double)n, v[0], v[n - 1], total_ms);
	fflush(stdout);
}

/* ---- commands ------------------------------------------------------------------ */

struct opts {
	int count, rounds, members;
	unsigned max_ms;
	const char *role;
	const char *until_file;
};

static int wait_members(struct dg_lockspace *ls, int members)
{
	if (members <= 0)
		return 0;
	double end = now_ms() + 30000;
	for (;;) {
		struct dg_member m[128];
		int n = dg_members(ls, m, 128, NULL), up = 0;
		for (int k = 0; k < n && k < 128; k++)
			up += m[k].state == DG_NODE_UP;
		if (up >= members)
			break;
		if (stop_flag || now_ms() > end) {
			printf("error only %d member(s) up\n", up);
			return -1;
		}
		usleep(20000);
	}
	usleep(300000);
	return 0;
}

/* lock RES in MODE (fresh handle), wait for the grant; 0 or an error */
static int lock_wait(struct dg_lockspace *ls, const char *res, int mode, unsigned flags, struct handle *h,
		     unsigned wait_ms)
{
	int rc = dg_lock(ls, res, (enum dg_mode)mode, flags, ast_cb, bast_cb, h, &h->lk);
	if (rc < 0)
		return rc;
	return h_wait_ast(h, 0, wait_ms);
}

static int cmd_series(struct dg_lockspace *ls, int cached, const struct opts *o)
{
	int count = o->count > 0 ? o->count : 500;
	double *v = calloc((size_t)count, sizeof(double));
	if (!v)
		return 1;
	struct handle *holder = NULL;
	if (cached) {
		holder = h_new();
		int st = lock_wait(ls, "cached", DG_PR, 0, holder, 10000);
		if (st != 0) {
			printf("error holding PR: %s\n", strerror(-st));
			return 1;
		}
	}
	double t_start = now_ms(), end = t_start + o->max_ms;
	size_t n = 0;
	for (int i = 0; i < count && !stop_flag && now_ms() < end; i++) {
		char res[64];
		if (cached)
			snprintf(res, sizeof(res), "cached");
		else
			snprintf(res, sizeof(res), "u%d.%d", (int)getpid(), i);
		struct handle *h = h_new();
		double t0 = now_ms();
		int st = lock_wait(ls, res, cached ? DG_PR : DG_EX, 0, h, 10000);
		if (st != 0) {
			printf("error lock %s: %s\n", res, strerror(-st));
			return 1;
		}
		int rc = dg_unlock(h->lk, 0, NULL);
		double t1 = now_ms();
		if (rc < 0) {
			printf("error unlock %s: %s\n", res, strerror(-rc));
			return 1;
		}
		v[n++] = t1 - t0;
		/* the handles are leaked on purpose (a few hundred bytes each) */
	}
	report(cached ? "cached" : "uncontended", v, n, now_ms() - t_start);
	if (holder)
		dg_unlock(holder->lk, 0, NULL);
	return n == (size_t)count ? 0 : 1;
}

static int cmd_pingpong(struct dg_lockspace *ls, const char *res, const struct opts *o)
{
	int writer = !strcmp(o->role, "writer");
	int rounds = o->rounds > 0 ? o->rounds : 200;
	double *v = calloc((size_t)rounds + 16, sizeof(double));
	if (!v)
		return 1;
	size_t cap = (size_t)rounds + 16;
	struct handle *h = h_new();
	int st = lock_wait(ls, res, DG_NL, DG_VALBLK, h, 10000);
	if (st != 0) {
		printf("error NL: %s\n", strerror(-st));
		return 1;
	}
	double t_start = now_ms(), end = t_start + o->max_ms;
	size_t n = 0;
	int rc_out = 0;
	long last_seen = -1;
	for (int r = 1; !stop_flag && now_ms() < end; r++) {
		if (writer && r > rounds)
			break;
		int asts, basts;
		h_counts(h, &asts, &basts);
		double t0 = now_ms();
		int rc = dg_convert(h->lk, writer ? DG_EX : DG_PR, DG_VALBLK, NULL);
		double left = end - now_ms();
		st = rc < 0 ? rc : h_wait_ast(h, asts, left > 0 ? (unsigned)left : 1);
		if (st != 0) {
			if (st == -ETIMEDOUT && !writer) /* the writer is gone */
				break;
			printf("error convert: %s\n", strerror(-st));
			rc_out = 1;
			break;
		}
		double t1 = now_ms();
		if (n < cap)
			v[n++] = t1 - t0;
		long c = h->have_lvb ? strtol((const char *)h->lvb, NULL, 10) : 0;
		if (!writer) {
			last_seen = c;
			if (c >= rounds) { /* the writer's last round: done */
				dg_convert(h->lk, DG_NL, 0, NULL);
				break;
			}
		}
		/* hold until someone wants an incompatible mode (bounded: the
		 * writer's last round does not wait) */
		if (!(writer && r == rounds))
			h_wait_bast(h, basts, 5000);
		h_counts(h, &asts, &basts);
		uint8_t lvb[DG_LVB_LEN];
		memset(lvb, 0, sizeof(lvb));
		if (writer)
			snprintf((char *)lvb, sizeof(lvb), "%d", r);
		rc = dg_convert(h->lk, DG_NL, writer ? DG_VALBLK : 0, writer ? lvb : NULL);
		st = rc < 0 ? rc : h_wait_ast(h, asts, 10000);
		if (st != 0) {
			printf("error down-convert: %s\n", strerror(-st));
			rc_out = 1;
			break;
		}
	}
	double total = now_ms() - t_start;
	char name[64];
	snprintf(name, sizeof(name), "pingpong-%s", writer ? "EX" : "PR");
	/* the first two requests meet no holder yet: leave them out */
	if (n > 4)
		report(name, v + 2, n - 2, total);
	else
		report(name, v, n, total);
	if (!writer)
		printf("reader last-seen=%ld\n", last_seen);
	dg_unlock(h->lk, 0, NULL);
	return rc_out;
}

static int cmd_idle(const struct opts *o)
{
	double end = now_ms() + o->max_ms;
	while (!stop_flag && now_ms() < end) {
		if (o->until_file && access(o->until_file, F_OK) == 0)
			break;
		usleep(50000);
	}
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: dg_bench [--deadline MS] LOCKSPACE uncontended|cached [--count N] [--members N] [--max-ms MS]\n"
			"       dg_bench [--deadline MS] LOCKSPACE pingpong RES --role writer|reader [--rounds N] [--members N] [--max-ms MS]\n"
			"       dg_bench [--deadline MS] LOCKSPACE idle [--until-file PATH] [--max-ms MS]\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct dg_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.log = log_fn;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--deadline") && i + 1 < argc)
			cfg.self_fence_deadline_ms = (unsigned)strtoul(argv[++i], NULL, 10);
		else
			return usage();
	}
	if (argc - i < 2)
		return usage();
	cfg.lockspace = argv[i];
	const char *cmd = argv[i + 1];
	i += 2;
	const char *res = NULL;
	if (!strcmp(cmd, "pingpong")) {
		if (i >= argc)
			return usage();
		res = argv[i++];
	} else if (strcmp(cmd, "uncontended") && strcmp(cmd, "cached") && strcmp(cmd, "idle")) {
		return usage();
	}
	struct opts o = { .max_ms = 60000, .role = "" };
	for (; i < argc; i += 2) {   /* --option value */
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (!val)
			return usage();
		if (!strcmp(a, "--count"))
			o.count = atoi(val);
		else if (!strcmp(a, "--rounds"))
			o.rounds = atoi(val);
		else if (!strcmp(a, "--members"))
			o.members = atoi(val);
		else if (!strcmp(a, "--max-ms"))
			o.max_ms = (unsigned)strtoul(val, NULL, 10);
		else if (!strcmp(a, "--role"))
			o.role = val;
		else if (!strcmp(a, "--until-file"))
			o.until_file = val;
		else
			return usage();
	}
	if (res && strcmp(o.role, "writer") && strcmp(o.role, "reader"))
		return usage();

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct dg_lockspace *ls = NULL;
	char err[256];
	double t0 = now_ms();
	int rc = dg_connect(&cfg, &ls, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "dg_bench: connect: %s (%s)\n", err, strerror(-rc));
		printf("error connect\n");
		return 3;
	}
	printf("connected node %u pid %d in %.0f ms\n", dg_this_node(ls), (int)getpid(), now_ms() - t0);
	fflush(stdout);
	int status;
	if (!strcmp(cmd, "idle"))
		status = cmd_idle(&o);
	else if (wait_members(ls, o.members) < 0)
		status = 1;
	else if (!strcmp(cmd, "pingpong"))
		status = cmd_pingpong(ls, res, &o);
	else
		status = cmd_series(ls, !strcmp(cmd, "cached"), &o);
	fflush(stdout);
	dg_disconnect(ls);
	return status;
}
