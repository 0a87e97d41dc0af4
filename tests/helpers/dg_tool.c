/* dg_tool — drives a dlm-glue lockspace from the command line, for the
 * cluster tests (tests/integration/dlmglue_cluster.sh) and for people.
 *
 *   dg_tool [OPTIONS] LOCKSPACE members
 *   dg_tool [OPTIONS] LOCKSPACE lock RES MODE [--noqueue] [--valblk] [--write STR] [--wait MS] [--hold MS]
 *   dg_tool [OPTIONS] LOCKSPACE hold RES MODE [--valblk] [--write STR] [--for MS]
 *   dg_tool [OPTIONS] LOCKSPACE cancel RES MODE [--after MS]
 *   dg_tool [OPTIONS] LOCKSPACE pingpong RES [--rounds N] [--hold MS] [--wait MS] [--members N]
 *   dg_tool [OPTIONS] LOCKSPACE watch [--for MS]
 *   dg_tool [OPTIONS] LOCKSPACE probe RES [--for MS]
 *
 * probe (for partition tests): holds RES in EX; when this node loses quorum
 * it tries RES.p in EX with NOQUEUE ("probe-noquorum ..."); when the
 * lockspace comes back after its locks were lost (a fresh rejoin) it tries
 * RES in EX with NOQUEUE ("probe-rejoined ...") and exits.
 *
 * OPTIONS: --backend NAME, --deadline MS (self-fence deadline), --fence CMD,
 *          --quiet (no dlm-glue log on stderr)
 *
 * Results go to stdout, one line each ("granted EX lvb=...", "error EAGAIN",
 * "bast EX", "event quorum 0", "wrote 7", ...); the lockspace's log goes to
 * stderr. Exit status: 0 ok, 1 the operation failed, 2 usage, 3 connect failed.
 */
#include "dlm-glue/dlmglue.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const mode_names[] = { "NL", "CR", "CW", "PR", "PW", "EX" };
static volatile sig_atomic_t stop_flag;
static int quiet;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	va_list ap;
	va_start(ap, fmt);
	pthread_mutex_lock(&mu);
	vprintf(fmt, ap);
	putchar('\n');
	fflush(stdout);
	pthread_mutex_unlock(&mu);
	va_end(ap);
}

static void log_fn(void *arg, int level, const char *fmt, va_list ap)
{
	(void)arg;
	if (quiet && level > 4)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	localtime_r(&ts.tv_sec, &tm);
	char line[1024];
	vsnprintf(line, sizeof(line), fmt, ap);
	fprintf(stderr, "%02d:%02d:%02d.%03ld dg_tool[%d] <%d> %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
		ts.tv_nsec / 1000000, (int)getpid(), level, line);
}

static int parse_mode(const char *s)
{
	for (int i = 0; i < 6; i++)
		if (strcasecmp(s, mode_names[i]) == 0)
			return i;
	return -1;
}

static const char *err_name(int st)
{
	switch (st) {
	case 0: return "OK";
	case -EAGAIN: return "EAGAIN";
	case -ECANCELED: return "ECANCELED";
	case -ENOTCONN: return "ENOTCONN";
	case -ETIMEDOUT: return "ETIMEDOUT";
	case -EDEADLK: return "EDEADLK";
	case -EBUSY: return "EBUSY";
	case -EINVAL: return "EINVAL";
	case -EEXIST: return "EEXIST";
	case -ENOENT: return "ENOENT";
	default: return strerror(-st);
	}
}

/* ---- one lock handle with its callbacks --------------------------------------- */

struct handle {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct dg_lock *lk;
	int asts, basts;
	int status;
	int mode;
	int bast_mode;
	int have_lvb;
	uint8_t lvb[DG_LVB_LEN];
};

/* Handles live until exit: a callback may still be running when a command
 * returns, so they are never freed. */
static struct handle *all_handles[16];
static size_t nhandles;

static struct handle *h_new(void)
{
	struct handle *h = calloc(1, sizeof(*h));
	if (!h || nhandles == sizeof(all_handles) / sizeof(all_handles[0])) {
		out("error ENOMEM");
		exit(1);
	}
	all_handles[nhandles++] = h; /* reachable until exit */
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
	if (status == -ENOTCONN)
		out("lost %s", mode_names[granted]);
}

static void bast_cb(void *arg, enum dg_mode mode)
{
	struct handle *h = arg;
	pthread_mutex_lock(&h->mu);
	h->basts++;
	h->bast_mode = mode;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	out("bast %s", mode_names[mode]);
}

/* Waits until the ast count passes `seen` (bounded); returns the status or
 * -ETIMEDOUT. */
static int h_wait_ast(struct handle *h, int seen, unsigned ms)
{
	int64_t end = now_ms() + ms;
	pthread_mutex_lock(&h->mu);
	while (h->asts <= seen && !stop_flag && now_ms() < end) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&h->cv, &h->mu, &ts);
	}
	int st = h->asts > seen ? h->status : -ETIMEDOUT;
	pthread_mutex_unlock(&h->mu);
	return st;
}

static int h_wait_bast(struct handle *h, int seen, unsigned ms)
{
	int64_t end = now_ms() + ms;
	pthread_mutex_lock(&h->mu);
	while (h->basts <= seen && !stop_flag && now_ms() < end) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&h->cv, &h->mu, &ts);
	}
	int got = h->basts > seen;
	pthread_mutex_unlock(&h->mu);
	return got;
}

static int h_asts(struct handle *h)
{
	pthread_mutex_lock(&h->mu);
	int n = h->asts;
	pthread_mutex_unlock(&h->mu);
	return n;
}

static int h_basts(struct handle *h)
{
	pthread_mutex_lock(&h->mu);
	int n = h->basts;
	pthread_mutex_unlock(&h->mu);
	return n;
}

static void lvb_text(const struct handle *h, char *buf, size_t len)
{
	if (!h->have_lvb) {
		snprintf(buf, len, "-");
		return;
	}
	size_t n = strnlen((const char *)h->lvb, DG_LVB_LEN);
	snprintf(buf, len, "%.*s", (int)n, (const char *)h->lvb);
	if (!buf[0])
		snprintf(buf, len, "(empty)");
}

static void set_lvb(uint8_t lvb[DG_LVB_LEN], const char *s)
{
	memset(lvb, 0, DG_LVB_LEN);
	snprintf((char *)lvb, DG_LVB_LEN, "%s", s);
}

/* ---- lockspace callbacks ------------------------------------------------------- */

static void cb_membership(void *arg) { (void)arg; }
static void cb_node_down(void *arg, uint32_t n) { (void)arg; out("event node_down %u", n); }
static void cb_node_fenced(void *arg, uint32_t n) { (void)arg; out("event node_fenced %u", n); }
static void cb_recovery_done(void *arg) { (void)arg; out("event recovery_done"); }
static volatile int quorum_now = -1, quorum_events;
static void cb_quorum(void *arg, int q)
{
	(void)arg;
	__atomic_store_n(&quorum_now, q, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&quorum_events, 1, __ATOMIC_SEQ_CST);
	out("event quorum %d", q);
}

/* ---- commands ------------------------------------------------------------------ */

static int usage(void)
{
	fprintf(stderr,
		"usage: dg_tool [--backend NAME] [--deadline MS] [--fence CMD] [--quiet] LOCKSPACE COMMAND ...\n"
		"  members\n"
		"  lock RES MODE [--noqueue] [--valblk] [--write STR] [--wait MS] [--hold MS]\n"
		"  hold RES MODE [--valblk] [--write STR] [--for MS]\n"
		"  cancel RES MODE [--after MS]\n"
		"  pingpong RES [--rounds N] [--hold MS] [--wait MS] [--members N]\n"
		"  watch [--for MS]\n"
		"  probe RES [--for MS]\n");
	return 2;
}

struct opts {
	int noqueue, valblk;
	const char *write;
	unsigned wait_ms, hold_ms, for_ms, after_ms;
	int rounds;
	int members;
};

static int parse_opts(int argc, char **argv, int i, struct opts *o)
{
	for (; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--noqueue"))
			o->noqueue = 1;
		else if (!strcmp(a, "--valblk"))
			o->valblk = 1;
		else if (!strcmp(a, "--write") && v)
			o->write = v, i++, o->valblk = 1;
		else if (!strcmp(a, "--wait") && v)
			o->wait_ms = (unsigned)strtoul(v, NULL, 10), i++;
		else if (!strcmp(a, "--hold") && v)
			o->hold_ms = (unsigned)strtoul(v, NULL, 10), i++;
		else if (!strcmp(a, "--for") && v)
			o->for_ms = (unsigned)strtoul(v, NULL, 10), i++;
		else if (!strcmp(a, "--after") && v)
			o->after_ms = (unsigned)strtoul(v, NULL, 10), i++;
		else if (!strcmp(a, "--rounds") && v)
			o->rounds = atoi(v), i++;
		else if (!strcmp(a, "--members") && v)
			o->members = atoi(v), i++;
		else
			return -1;
	}
	return 0;
}

static void sleep_until_stop(unsigned ms)
{
	int64_t end = now_ms() + ms;
	while (!stop_flag && now_ms() < end)
		usleep(20000);
}

static int cmd_members(struct dg_lockspace *ls)
{
	struct dg_member m[128];
	int q = 0;
	int n = dg_members(ls, m, 128, &q);
	static const char *const st[] = { "up", "departed", "fenced" };
	for (int i = 0; i < n && i < 128; i++)
		out("node %u %s %s %s", m[i].nodeid, m[i].name, m[i].address, st[m[i].state]);
	out("self %u", dg_this_node(ls));
	out("quorate %d", q);
	return 0;
}

/* lock: take a lock (waiting up to --wait), report, optionally hold, then
 * release (writing --write into the value block when held in PW/EX). */
static int cmd_lock(struct dg_lockspace *ls, const char *res, int mode, const struct opts *o, int hold_forever)
{
	struct handle *h = h_new();
	unsigned flags = (o->noqueue ? DG_NOQUEUE : 0) | (o->valblk ? DG_VALBLK : 0);
	int rc = dg_lock(ls, res, (enum dg_mode)mode, flags, ast_cb, bast_cb, h, &h->lk);
	if (rc < 0) {
		out("error %s", err_name(rc));
		return 1;
	}
	int st = h_wait_ast(h, 0, o->wait_ms ? o->wait_ms : 30000);
	if (st == -ETIMEDOUT) {
		out("error ETIMEDOUT");
		dg_cancel(h->lk);
		h_wait_ast(h, 0, 5000);
		return 1;
	}
	if (st != 0) {
		out("error %s", err_name(st));
		return 1;
	}
	char text[64];
	lvb_text(h, text, sizeof(text));
	out("granted %s lvb=%s", mode_names[h->mode], text);
	if (hold_forever) {
		int64_t end = o->for_ms ? now_ms() + o->for_ms : INT64_MAX;
		while (!stop_flag && now_ms() < end) {
			pthread_mutex_lock(&h->mu);
			int lost = h->status == -ENOTCONN;
			pthread_mutex_unlock(&h->mu);
			if (lost)
				return 1;
			usleep(20000);
		}
	} else if (o->hold_ms) {
		sleep_until_stop(o->hold_ms);
	}
	uint8_t lvb[DG_LVB_LEN];
	if (o->write)
		set_lvb(lvb, o->write);
	rc = dg_unlock(h->lk, o->valblk ? DG_VALBLK : 0, o->write ? lvb : NULL);
	if (rc < 0) {
		out("unlock error %s", err_name(rc));
		return 1;
	}
	out("released");
	return 0;
}

static int cmd_cancel(struct dg_lockspace *ls, const char *res, int mode, const struct opts *o)
{
	struct handle *h = h_new();
	int rc = dg_lock(ls, res, (enum dg_mode)mode, 0, ast_cb, bast_cb, h, &h->lk);
	if (rc < 0) {
		out("error %s", err_name(rc));
		return 1;
	}
	int st = h_wait_ast(h, 0, o->after_ms ? o->after_ms : 1000);
	if (st == 0) {
		out("granted %s", mode_names[h->mode]);
		dg_unlock(h->lk, 0, NULL);
		return 1;
	}
	if (st != -ETIMEDOUT) {
		out("error %s", err_name(st));
		return 1;
	}
	out("waiting; cancelling");
	rc = dg_cancel(h->lk);
	if (rc < 0) {
		out("cancel error %s", err_name(rc));
		return 1;
	}
	st = h_wait_ast(h, 0, 10000);
	out("%s", st == -ECANCELED ? "canceled" : err_name(st));
	return st == -ECANCELED ? 0 : 1;
}

/* pingpong --members N: a player that is done stays (holding NL, so the
 * value block lives) until the counter says every player is done; a
 * player that saw N members up a moment after the others had must still
 * find someone to play with. */
static int wait_all_rounds(struct handle *h, long target, unsigned wait_ms)
{
	for (int64_t end = now_ms() + wait_ms; !stop_flag; usleep(50000)) {
		int seen = h_asts(h);
		int rc = dg_convert(h->lk, DG_PR, DG_VALBLK, NULL);
		int st = rc < 0 ? rc : h_wait_ast(h, seen, wait_ms);
		long c = st == 0 && h->have_lvb ? strtol((const char *)h->lvb, NULL, 10) : -1;
		seen = h_asts(h);
		rc = dg_convert(h->lk, DG_NL, DG_VALBLK, NULL);
		if (st == 0)
			st = rc < 0 ? rc : h_wait_ast(h, seen, wait_ms);
		if (st != 0) {
			out("error waiting for the others %s", err_name(st));
			return 1;
		}
		if (c >= target)
			return 0;
		if (now_ms() > end) {
			out("error the others did not finish: counter %ld of %ld", c, target);
			return 1;
		}
	}
	return 1;
}

/* pingpong: the value block holds a counter. Each round: NL->EX (read the
 * counter, write counter+1), EX->PR (writes the value block), hold PR until
 * a blocking callback (or --hold ms), PR->NL. */
static int cmd_pingpong(struct dg_lockspace *ls, const char *res, const struct opts *o)
{
	struct handle *h = h_new();
	unsigned wait_ms = o->wait_ms ? o->wait_ms : 30000;
	int rounds = o->rounds > 0 ? o->rounds : 5;
	/* --members N: start only once N nodes are up in the lockspace */
	for (int64_t end = now_ms() + 30000; o->members > 0 && !stop_flag; usleep(50000)) {
		struct dg_member m[128];
		int n = dg_members(ls, m, 128, NULL), up = 0;
		for (int k = 0; k < n && k < 128; k++)
			up += m[k].state == DG_NODE_UP;
		if (up >= o->members)
			break;
		if (now_ms() > end) {
			out("error only %d member(s) up", up);
			return 1;
		}
	}
	int rc = dg_lock(ls, res, DG_NL, DG_VALBLK, ast_cb, bast_cb, h, &h->lk);
	if (rc < 0 || h_wait_ast(h, 0, wait_ms) != 0) {
		out("error NL %s", err_name(rc < 0 ? rc : h->status));
		return 1;
	}
	long last = -1;
	int failures = 0;
	for (int r = 0; r < rounds && !stop_flag; r++) {
		int seen = h_asts(h);
		rc = dg_convert(h->lk, DG_EX, DG_VALBLK, NULL);
		int st = rc < 0 ? rc : h_wait_ast(h, seen, wait_ms);
		if (st != 0) {
			out("error EX %s", err_name(st));
			return 1;
		}
		long c = h->have_lvb ? strtol((const char *)h->lvb, NULL, 10) : 0;
		out("got %ld", c);
		if (c < last) {
			out("error counter went back from %ld to %ld", last, c);
			failures++;
		}
		char buf[32];
		snprintf(buf, sizeof(buf), "%ld", c + 1);
		uint8_t lvb[DG_LVB_LEN];
		set_lvb(lvb, buf);
		last = c + 1;
		seen = h_asts(h);
		int bseen = h_basts(h);
		rc = dg_convert(h->lk, DG_PR, DG_VALBLK, lvb);
		st = rc < 0 ? rc : h_wait_ast(h, seen, wait_ms);
		if (st != 0) {
			out("error PR %s", err_name(st));
			return 1;
		}
		out("wrote %ld", c + 1);
		/* hold PR until someone wants EX */
		h_wait_bast(h, bseen, o->hold_ms ? o->hold_ms : 300);
		seen = h_asts(h);
		rc = dg_convert(h->lk, DG_NL, DG_VALBLK, NULL);
		st = rc < 0 ? rc : h_wait_ast(h, seen, wait_ms);
		if (st != 0) {
			out("error NL %s", err_name(st));
			return 1;
		}
	}
	if (o->members > 0 && wait_all_rounds(h, (long)o->members * rounds, wait_ms) != 0)
		return 1;
	dg_unlock(h->lk, 0, NULL);
	out("done %d", failures ? 1 : 0);
	return failures ? 1 : 0;
}

static int cmd_probe(struct dg_lockspace *ls, const char *res, const struct opts *o)
{
	struct handle *h = h_new();
	int rc = dg_lock(ls, res, DG_EX, 0, ast_cb, bast_cb, h, &h->lk);
	int st = rc < 0 ? rc : h_wait_ast(h, 0, 30000);
	if (st != 0) {
		out("error %s", err_name(st));
		return 1;
	}
	out("granted EX");
	int64_t end = now_ms() + (o->for_ms ? o->for_ms : 60000);
	int tried_noquorum = 0, lost = 0;
	char other[DG_RESOURCE_MAX + 2];
	snprintf(other, sizeof(other), "%.*s.p", DG_RESOURCE_MAX - 3, res);
	while (!stop_flag && now_ms() < end) {
		int q = __atomic_load_n(&quorum_now, __ATOMIC_SEQ_CST);
		pthread_mutex_lock(&h->mu);
		lost |= h->status == -ENOTCONN;
		pthread_mutex_unlock(&h->mu);
		if (q == 0 && !tried_noquorum && !lost) {
			tried_noquorum = 1;
			struct dg_lock *lk = NULL;
			st = dg_lock_wait(ls, other, DG_EX, DG_NOQUEUE, 3000, NULL, &lk);
			out("probe-noquorum %s", st == 0 ? "granted" : err_name(st));
			if (st == 0)
				dg_unlock(lk, 0, NULL);
		}
		if (lost && q == 1) {
			struct dg_lock *lk = NULL;
			st = dg_lock_wait(ls, res, DG_EX, DG_NOQUEUE, 5000, NULL, &lk);
			if (st == -ENOTCONN) {
				usleep(100000);
				continue;
			}
			out("probe-rejoined %s", st == 0 ? "granted" : err_name(st));
			if (st == 0)
				dg_unlock(lk, 0, NULL);
			return st == 0 ? 0 : 1;
		}
		usleep(20000);
	}
	out("probe-timeout");
	return 1;
}

int main(int argc, char **argv)
{
	struct dg_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.log = log_fn;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--backend") && i + 1 < argc)
			cfg.backend = argv[++i];
		else if (!strcmp(argv[i], "--deadline") && i + 1 < argc)
			cfg.self_fence_deadline_ms = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--fence") && i + 1 < argc)
			cfg.fence_command = argv[++i];
		else if (!strcmp(argv[i], "--quiet"))
			quiet = 1;
		else
			return usage();
	}
	if (argc - i < 2)
		return usage();
	cfg.lockspace = argv[i];
	const char *cmd = argv[i + 1];
	i += 2;
	cfg.cb.membership = cb_membership;
	cfg.cb.node_down = cb_node_down;
	cfg.cb.node_fenced = cb_node_fenced;
	cfg.cb.recovery_done = cb_recovery_done;
	cfg.cb.quorum = cb_quorum;

	struct opts o;
	memset(&o, 0, sizeof(o));
	const char *res = NULL;
	int mode = -1;
	if (!strcmp(cmd, "lock") || !strcmp(cmd, "hold") || !strcmp(cmd, "cancel")) {
		if (argc - i < 2 || (mode = parse_mode(argv[i + 1])) < 0)
			return usage();
		res = argv[i];
		i += 2;
	} else if (!strcmp(cmd, "pingpong") || !strcmp(cmd, "probe")) {
		if (argc - i < 1)
			return usage();
		res = argv[i++];
	} else if (strcmp(cmd, "members") && strcmp(cmd, "watch")) {
		return usage();
	}
	if (parse_opts(argc, argv, i, &o) < 0)
		return usage();

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct dg_lockspace *ls = NULL;
	char err[256];
	int64_t t0 = now_ms();
	int rc = dg_connect(&cfg, &ls, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "dg_tool: connect: %s (%s)\n", err, err_name(rc));
		out("error connect %s", err_name(rc));
		return 3;
	}
	out("connected node %u pid %d in %lld ms", dg_this_node(ls), (int)getpid(), (long long)(now_ms() - t0));
	int status = 0;
	if (!strcmp(cmd, "members"))
		status = cmd_members(ls);
	else if (!strcmp(cmd, "lock"))
		status = cmd_lock(ls, res, mode, &o, 0);
	else if (!strcmp(cmd, "hold"))
		status = cmd_lock(ls, res, mode, &o, 1);
	else if (!strcmp(cmd, "cancel"))
		status = cmd_cancel(ls, res, mode, &o);
	else if (!strcmp(cmd, "pingpong"))
		status = cmd_pingpong(ls, res, &o);
	else if (!strcmp(cmd, "probe"))
		status = cmd_probe(ls, res, &o);
	else if (!strcmp(cmd, "watch"))
		sleep_until_stop(o.for_ms ? o.for_ms : 3600000);
	dg_disconnect(ls);
	return status;
}
