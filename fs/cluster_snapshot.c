/* Cluster mode: csvctl snapshot on the coordinator (docs/snapshot.md).
 *
 * The coordinator runs the whole snapshot: it is the node that can make the
 * LUN a clean ext4 (only it writes metadata: it commits and checkpoints the
 * journal), so it is also where the hook runs, right after that and with no
 * round trip in between. One snapshot at a time; a second is refused. */
#include "fs/cluster_internal.h"
#include "fs/proto.h"
#include "redirect-io/rio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#define STDERR_TAIL 1024
/* After the thaw, how long the coordinator waits for every node to tell the
 * longest its changes waited (a node that does not answer is counted out). */
#define REPORTS_WAIT_MS 1500
#define HOOK_ENV_VARS 9
#define HOOK_ENV_LEN 4200

extern char **environ;

static int name_char_ok(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '.' || ch == '_' || ch == '-';
}

static int guid_ok(const char *guid)
{
	uuid_t uu;
	return uuid_parse(guid, uu) == 0 && !uuid_is_null(uu);
}

int cluster_snap_check(const struct cluster_snap_request *rq, char *err, size_t errlen)
{
	size_t n = strnlen(rq->name, sizeof(rq->name));
	int name_ok = n > 0 && n <= SNAP_NAME_MAX && rq->name[0] != '.';
	for (size_t i = 0; name_ok && i < n; i++)
		name_ok = name_char_ok(rq->name[i]);
	struct stat st;
	if (!name_ok)
		snprintf(err, errlen, "snapshot name '%.64s' is not 1-%d characters of A-Z a-z 0-9 . _ - "
			 "(not starting with '.')", rq->name, SNAP_NAME_MAX);
	else if (rq->timeout_s < 1 || rq->timeout_s > SNAP_TIMEOUT_MAX_S)
		snprintf(err, errlen, "timeout %u s is out of range: 1 to %d s (the volume is frozen "
			 "that long at most)", rq->timeout_s, SNAP_TIMEOUT_MAX_S);
	else if (rq->new_guid[0] && !guid_ok(rq->new_guid))
		snprintf(err, errlen, "new GUID '%.40s' is not xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", rq->new_guid);
	else if (rq->hook[0] != '/')
		snprintf(err, errlen, "hook '%.200s' is not an absolute path", rq->hook);
	else if (stat(rq->hook, &st) != 0)
		snprintf(err, errlen, "hook %.200s: %s", rq->hook, strerror(errno));
	else if (!S_ISREG(st.st_mode) || access(rq->hook, X_OK) != 0)
		snprintf(err, errlen, "hook %.200s is not an executable file", rq->hook);
	else
		return 0;
	return -EINVAL;
}

/* ---- the hook ----------------------------------------------------------------- */

struct hook_run {
	pid_t pid;
	int out_fd;                      /* the hook's stdout and stderr */
	char tail[STDERR_TAIL];          /* their last bytes */
	size_t tail_len;
};

/* The environment: the daemon's, plus what the hook needs to know. Built
 * before fork (only async-signal-safe calls after it). */
static int same_name(const char *a, const char *b)
{
	size_t n = strcspn(b, "=");
	return strncmp(a, b, n + 1) == 0;
}

/* The csvctl installed beside this daemon (a hook that gives its copy a new
 * GUID runs it), else the one on PATH. */
static const char *csvctl_path(char *buf, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	char *slash = n > 0 ? memrchr(buf, '/', (size_t)n) : NULL;
	if (slash && (size_t)(slash - buf) + sizeof("/csvctl") <= len) {
		memcpy(slash, "/csvctl", sizeof("/csvctl"));
		if (access(buf, X_OK) == 0)
			return buf;
	}
	return "csvctl";
}

static char **hook_env(struct cluster *c, const struct cluster_snap_request *rq, int64_t deadline,
		       char (*store)[HOOK_ENV_LEN])
{
	struct volume *v = c->v;
	char path[PATH_MAX];
	snprintf(store[0], HOOK_ENV_LEN, "CSVFS_VOLUME_GUID=%s", v->uuid);
	snprintf(store[1], HOOK_ENV_LEN, "CSVFS_VOLUME_LABEL=%s", v->label);
	snprintf(store[2], HOOK_ENV_LEN, "CSVFS_LUN=%s", v->lun);
	snprintf(store[3], HOOK_ENV_LEN, "CSVFS_SNAPSHOT_NAME=%s", rq->name);
	snprintf(store[4], HOOK_ENV_LEN, "CSVFS_FREEZE_DEADLINE=%lld", (long long)deadline);
	snprintf(store[5], HOOK_ENV_LEN, "CSVFS_REQUESTED_BY=%s", rq->requester);
	snprintf(store[6], HOOK_ENV_LEN, "CSVFS_NODE=%s", c->o.node);
	snprintf(store[7], HOOK_ENV_LEN, "CSVFS_NEW_GUID=%s", rq->new_guid);
	snprintf(store[8], HOOK_ENV_LEN, "CSVFS_CSVCTL=%s", csvctl_path(path, sizeof(path)));
	size_t n = 0;
	while (environ[n])
		n++;
	char **env = calloc(n + HOOK_ENV_VARS + 1, sizeof(*env));
	if (!env)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		int ours = 0;   /* the daemon's own value of one of ours gives way */
		for (int j = 0; j < HOOK_ENV_VARS && !ours; j++)
			ours = same_name(environ[i], store[j]);
		if (!ours)
			env[k++] = environ[i];
	}
	for (int i = 0; i < HOOK_ENV_VARS; i++)
		env[k++] = store[i];
	return env;
}

static int hook_start(struct cluster *c, const struct cluster_snap_request *rq, int64_t deadline,
		      struct hook_run *h, char *err, size_t errlen)
{
	char (*store)[HOOK_ENV_LEN] = calloc(HOOK_ENV_VARS, HOOK_ENV_LEN);
	char **env = store ? hook_env(c, rq, deadline, store) : NULL;
	int p[2];
	if (!env || pipe2(p, O_CLOEXEC) != 0) {
		free(env);
		free(store);
		snprintf(err, errlen, "cannot start hook %.200s: %s", rq->hook, strerror(env ? errno : ENOMEM));
		return -EIO;
	}
	char *argv[] = { (char *)rq->hook, (char *)rq->name, NULL };
	pid_t pid = fork();
	if (pid == 0) {
		setpgid(0, 0);   /* its own group: a kill reaches what it started */
		/* A daemon killed mid-snapshot takes its hook along: the new
		 * coordinator has thawed, the snapshot it was taking is void. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int null = open("/dev/null", O_RDONLY);
		if (null >= 0)
			dup2(null, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		close_range(3, ~0u, 0);
		execve(rq->hook, argv, env);
		_exit(127);
	}
	int e = errno;
	free(env);
	free(store);
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		snprintf(err, errlen, "cannot start hook %.200s: %s", rq->hook, strerror(e));
		return -EIO;
	}
	setpgid(pid, pid);
	*h = (struct hook_run){ .pid = pid, .out_fd = p[0] };
	return 0;
}

/* Reads what the hook printed, keeping the last STDERR_TAIL bytes. */
static void hook_drain(struct hook_run *h, int wait_ms)
{
	struct pollfd pf = { h->out_fd, POLLIN, 0 };
	char buf[512];
	while (h->out_fd >= 0 && poll(&pf, 1, wait_ms) > 0) {
		ssize_t n = read(h->out_fd, buf, sizeof(buf));
		if (n <= 0) {
			close(h->out_fd);
			h->out_fd = -1;
			break;
		}
		if ((size_t)n >= sizeof(h->tail))
			n = sizeof(h->tail) - 1;
		if (h->tail_len + (size_t)n >= sizeof(h->tail)) {
			size_t drop = h->tail_len + (size_t)n - (sizeof(h->tail) - 1);
			memmove(h->tail, h->tail + drop, h->tail_len - drop);
			h->tail_len -= drop;
		}
		memcpy(h->tail + h->tail_len, buf, (size_t)n);
		h->tail_len += (size_t)n;
		wait_ms = 0;
	}
	h->tail[h->tail_len] = 0;
}

/* Waits for the hook until deadline_ms or aborted(); kills its process
 * group then. Returns 0 when it exited 0, else -1 with the cause in why. */
static int hook_wait(struct hook_run *h, uint64_t deadline_ms, int (*aborted)(void *), void *arg,
		     char *why, size_t whylen)
{
	int status = 0;
	for (;;) {
		hook_drain(h, 100);
		pid_t r = waitpid(h->pid, &status, WNOHANG);
		if (r == h->pid)
			break;
		int late = cl_now_ms() >= deadline_ms, gone = aborted && aborted(arg);
		if (late || gone) {
			kill(-h->pid, SIGKILL);
			waitpid(h->pid, &status, 0);
			hook_drain(h, 0);
			snprintf(why, whylen, "%s; the hook was killed",
				 late ? "the snapshot timeout passed" : "the requesting csvctl went away");
			return -1;
		}
	}
	kill(-h->pid, SIGKILL);   /* whatever it left running in its group */
	hook_drain(h, 0);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		snprintf(why, whylen, "the hook exited with status %d", WEXITSTATUS(status));
	else
		snprintf(why, whylen, "the hook was killed by signal %d", WTERMSIG(status));
	return -1;
}

/* ---- the snapshot -------------------------------------------------------------- */

struct stop_args {
	struct cluster *c;
	int (*aborted)(void *);
	void *arg;
};

/* The requester went away: its csvctl here, or its node said so. */
static int stop_requested(void *p)
{
	struct stop_args *s = p;
	pthread_mutex_lock(&s->c->freeze.mu);
	int remote = s->c->freeze.snap_abort;
	pthread_mutex_unlock(&s->c->freeze.mu);
	return remote || (s->aborted && s->aborted(s->arg));
}

static int claim(struct cluster *c, const struct cluster_snap_request *rq, char *err, size_t errlen)
{
	struct freeze *f = &c->freeze;
	pthread_mutex_lock(&f->mu);
	int busy = f->snap_active || f->ex_orphan;
	if (f->snap_active)
		snprintf(err, errlen, "snapshot '%s' requested by %s is in progress (until %lld at the latest); "
			 "try again after it", f->snap.name, f->snap.requester, (long long)f->snap_deadline);
	else if (busy)
		snprintf(err, errlen, "the lock manager has not yet answered the cancel of an earlier "
			 "snapshot's freeze request; try again later");
	else {
		f->snap_active = 1;
		f->snap_abort = 0;
		f->snap = *rq;
		f->snap_since = (int64_t)time(NULL);
		f->snap_deadline = f->snap_since + rq->timeout_s;
	}
	pthread_mutex_unlock(&f->mu);
	return busy ? -EBUSY : 0;
}

static void release_claim(struct cluster *c)
{
	pthread_mutex_lock(&c->freeze.mu);
	c->freeze.snap_active = 0;
	pthread_mutex_unlock(&c->freeze.mu);
}

/* A new GUID was asked for, and the hook's output does not say it set it. */
static int new_guid_unconfirmed(const struct cluster_snap_request *rq, struct hook_run *h)
{
	char want[64];
	if (!rq->new_guid[0])
		return 0;
	snprintf(want, sizeof(want), "CSVFS_SNAPSHOT_GUID=%s", rq->new_guid);
	return strstr(h->tail, want) == NULL;
}

/* With every node frozen: the LUN made clean, the hook, the journal back.
 * Returns what the resume said (not 0: this node cannot journal now). */
static int snapshot_frozen(struct cluster *c, const struct cluster_snap_request *rq,
			    uint64_t deadline_ms, struct stop_args *stop, struct cluster_snap_result *res)
{
	char err[512] = "", why[256] = "";
	struct hook_run h = { .out_fd = -1 };
	int rc = volume_quiesce(c->v, err, sizeof(err));
	if (rc == 0) {
		int64_t deadline = (int64_t)time(NULL) + (int64_t)((deadline_ms - cl_now_ms()) / 1000);
		uint64_t t0 = cl_now_ms();
		rc = hook_start(c, rq, deadline, &h, err, sizeof(err));
		if (rc == 0 && hook_wait(&h, deadline_ms, stop_requested, stop, why, sizeof(why)) != 0) {
			rc = -EIO;
			snprintf(err, sizeof(err), "%s", why);
		}
		res->hook_ms = cl_now_ms() - t0;
		if (rc == 0 && new_guid_unconfirmed(rq, &h)) {
			rc = -EIO;
			snprintf(err, sizeof(err), "the hook did not confirm the snapshot's new GUID %s (a hook "
				 "asked for one runs csvctl guid --fresh-copy --set \"$CSVFS_NEW_GUID\" on its copy "
				 "and prints CSVFS_SNAPSHOT_GUID=$CSVFS_NEW_GUID)", rq->new_guid);
		}
	}
	char rerr[512] = "";
	int resumed = volume_resume(c->v, rerr, sizeof(rerr));
	if (resumed)
		csvfs_log(LOG_ERR_L, "node %s, volume %s: after snapshot '%s': %s", c->o.node, c->v->uuid,
			  rq->name, rerr);
	if (h.tail_len)
		csvfs_log(rc ? LOG_WARN_L : LOG_INFO_L, "snapshot '%s': the hook said: %.400s", rq->name,
			  h.tail);
	res->status = rc;
	snprintf(res->guid, sizeof(res->guid), "%s", rc ? "" : rq->new_guid[0] ? rq->new_guid : c->v->uuid);
	if (rc)
		snprintf(res->message, sizeof(res->message), "%s%s%.1000s", err,
			 h.tail_len ? "; its output ends with: " : "", h.tail);
	for (char *p = res->message; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = '|';   /* one line, for the log and csvctl */
	return resumed;
}

/* ---- a participant's request goes to the coordinator ------------------------ */

struct forward {
	struct cluster *c;
	const struct cluster_snap_request *rq;
	struct cluster_snap_result *res;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
};

static void forward_result(struct forward *fw, int rc, struct rio_reply *rep)
{
	struct cluster_snap_result *res = fw->res;
	union proto_reply *p = calloc(1, sizeof(*p));
	if (rc == 0 && !p)
		rc = -ENOMEM;
	if (rc == 0 && proto_decode_reply(proto_op(OP_SNAPSHOT), rep->payload, rep->len, p) != 0)
		rc = -EPROTO;
	if (rc == 0) {
		res->status = -(int)p->snapshot.error;
		snprintf(res->message, sizeof(res->message), "%s", p->snapshot.message);
		res->wait_ms = p->snapshot.wait_ms;
		res->frozen_ms = p->snapshot.frozen_ms;
		res->hook_ms = p->snapshot.hook_ms;
		res->stall_ms = p->snapshot.stall_ms;
		snprintf(res->stall_node, sizeof(res->stall_node), "%s", p->snapshot.stall_node);
		res->nodes_reported = p->snapshot.nodes_reported;
		res->nodes_expected = p->snapshot.nodes_expected;
		snprintf(res->guid, sizeof(res->guid), "%s", p->snapshot.guid);
	} else {
		res->status = rc;
		snprintf(res->message, sizeof(res->message), "the coordinator could not be asked: %s",
			 strerror(rc == -ERESTART ? EHOSTUNREACH : -rc));
	}
	free(p);
}

static void *forward_main(void *arg)
{
	struct forward *fw = arg;
	struct proto_req q = { .snapshot = { fw->rq->name, fw->rq->hook, fw->rq->timeout_s, fw->rq->new_guid } };
	struct rio_writer w;
	struct rio_reply rep;
	rio_writer_init(&w, 0);
	proto_op(OP_SNAPSHOT)->put_req(&w, &q);
	/* The coordinator answers by the timeout (it kills the hook then). */
	int rc = cluster_call_timeout(fw->c, OP_SNAPSHOT, &w, &rep, fw->rq->timeout_s * 1000u + 30000u);
	rio_writer_free(&w);
	forward_result(fw, rc, &rep);
	if (rc == 0)
		rio_reply_free(&rep);
	pthread_mutex_lock(&fw->mu);
	fw->done = 1;
	pthread_cond_broadcast(&fw->cv);
	pthread_mutex_unlock(&fw->mu);
	return NULL;
}

static void send_abort(struct cluster *c, const char *name)
{
	struct proto_req q = { .snapshot = { name, NULL, 0, NULL } };
	struct rio_writer w;
	struct rio_reply rep;
	rio_writer_init(&w, 0);
	proto_op(OP_SNAPSHOT_ABORT)->put_req(&w, &q);
	if (cluster_call(c, OP_SNAPSHOT_ABORT, &w, &rep) == 0)
		rio_reply_free(&rep);
	rio_writer_free(&w);
	csvfs_log(LOG_WARN_L, "node %s, volume %s: the csvctl that asked for snapshot '%s' went away; "
		  "the coordinator was told to thaw", c->o.node, c->v->uuid, name);
}

/* Runs the request on the coordinator; when aborted() says so while it
 * runs, tells the coordinator, then waits for its answer (the thaw). */
static void snapshot_forward(struct cluster *c, const struct cluster_snap_request *rq,
			     int (*aborted)(void *), void *arg, struct cluster_snap_result *res)
{
	struct forward fw = { .c = c, .rq = rq, .res = res };
	pthread_mutex_init(&fw.mu, NULL);
	pthread_cond_init(&fw.cv, NULL);
	pthread_t t;
	if (pthread_create(&t, NULL, forward_main, &fw) != 0) {
		res->status = -EAGAIN;
		snprintf(res->message, sizeof(res->message), "cannot start a thread for the request");
		return;
	}
	int told = 0;
	pthread_mutex_lock(&fw.mu);
	while (!fw.done) {
		struct timespec dl = cl_deadline_in(100);
		pthread_cond_timedwait(&fw.cv, &fw.mu, &dl);
		if (!fw.done && !told && aborted && aborted(arg)) {
			told = 1;
			pthread_mutex_unlock(&fw.mu);
			send_abort(c, rq->name);
			pthread_mutex_lock(&fw.mu);
		}
	}
	pthread_mutex_unlock(&fw.mu);
	pthread_join(t, NULL);
	pthread_mutex_destroy(&fw.mu);
	pthread_cond_destroy(&fw.cv);
}

/* ---- the coordinator's side of a participant's request -------------------------- */

static void serve_abort(struct cluster *c, const char *peer, const char *name)
{
	struct freeze *f = &c->freeze;
	pthread_mutex_lock(&f->mu);
	int mine = f->snap_active && strcmp(f->snap.name, name) == 0 && strcmp(f->snap.requester, peer) == 0;
	if (mine)
		f->snap_abort = 1;
	pthread_mutex_unlock(&f->mu);
	if (mine)
		csvfs_log(LOG_WARN_L, "node %s, volume %s: %s says the requester of snapshot '%s' went away",
			  c->o.node, c->v->uuid, peer, name);
}

int snapshot_serve(struct cluster *c, const struct rio_peer *peer, const struct rio_request *req,
		   struct rio_response *resp)
{
	const struct proto_op *o = proto_op(req->op);
	struct proto_req *q = calloc(1, sizeof(*q));
	union proto_reply *p = calloc(1, sizeof(*p));
	struct cluster_snap_request *rq = calloc(1, sizeof(*rq));
	struct cluster_snap_result *res = calloc(1, sizeof(*res));
	if (!q || !p || !rq || !res)
		resp->status = ENOMEM;
	else if (proto_decode_request(o, req->payload, req->len, q) != 0)
		resp->status = EPROTO;
	else if (req->op == OP_SNAPSHOT_ABORT)
		serve_abort(c, peer->node, q->snapshot.name);
	else if (req->op == OP_SNAPSHOT_REPORT) {
		int rc = freeze_report_serve(c, peer->node, &q->snapshot_report, &p->snapshot_info);
		if (rc == 0)
			o->put_reply(&resp->body, p);
		resp->status = (uint16_t)-rc;
	}
	else if (strlen(q->snapshot.name) > SNAP_NAME_MAX || strlen(q->snapshot.hook) >= SNAP_HOOK_MAX)
		resp->status = ENAMETOOLONG;
	else {
		snprintf(rq->name, sizeof(rq->name), "%s", q->snapshot.name);
		snprintf(rq->hook, sizeof(rq->hook), "%s", q->snapshot.hook);
		snprintf(rq->requester, sizeof(rq->requester), "%s", peer->node);
		rq->timeout_s = q->snapshot.timeout_s;
		snprintf(rq->new_guid, sizeof(rq->new_guid), "%s", q->snapshot.new_guid);
		cluster_snapshot(c, rq, NULL, NULL, res);
		p->snapshot.error = (uint32_t)-res->status;
		snprintf(p->snapshot.message, sizeof(p->snapshot.message), "%s", res->message);
		p->snapshot.wait_ms = res->wait_ms;
		p->snapshot.frozen_ms = res->frozen_ms;
		p->snapshot.hook_ms = res->hook_ms;
		p->snapshot.stall_ms = res->stall_ms;
		snprintf(p->snapshot.stall_node, sizeof(p->snapshot.stall_node), "%s", res->stall_node);
		p->snapshot.nodes_reported = res->nodes_reported;
		p->snapshot.nodes_expected = res->nodes_expected;
		snprintf(p->snapshot.guid, sizeof(p->snapshot.guid), "%s", res->guid);
		o->put_reply(&resp->body, p);
	}
	free(q);
	free(p);
	free(rq);
	free(res);
	return 0;
}

/* ---- the snapshot ------------------------------------------------------------------ */

void cluster_snapshot(struct cluster *c, const struct cluster_snap_request *rq,
		      int (*aborted)(void *), void *arg, struct cluster_snap_result *res)
{
	memset(res, 0, sizeof(*res));
	char err[512];
	uint64_t t0 = cl_now_ms(), deadline_ms = t0 + rq->timeout_s * 1000ull;
	int rc = cluster_snap_check(rq, err, sizeof(err));
	if (rc == 0 && atomic_load(&c->role) != CL_COORDINATOR) {
		snapshot_forward(c, rq, aborted, arg, res);
		return;
	}
	if (rc == 0)
		rc = claim(c, rq, err, sizeof(err));
	if (rc) {
		res->status = rc;
		snprintf(res->message, sizeof(res->message), "%s", err);
		return;
	}
	csvfs_log(LOG_INFO_L, "node %s, volume %s: snapshot '%s' requested by %s: freezing every node "
		  "(timeout %u s)", c->o.node, c->v->uuid, rq->name, rq->requester, rq->timeout_s);
	struct stop_args stop = { c, aborted, arg };
	int resumed = 0;
	struct freeze *f = &c->freeze;
	rc = held_request(&f->ex, DG_EX, 0);
	if (rc == 0)
		rc = held_wait_until(&f->ex, deadline_ms, stop_requested, &stop);
	res->wait_ms = cl_now_ms() - t0;
	if (rc) {
		pthread_mutex_lock(&f->ex.mu);
		int unanswered = f->ex.pending;
		pthread_mutex_unlock(&f->ex.mu);
		pthread_mutex_lock(&f->mu);
		f->ex_orphan = unanswered;   /* the freeze thread lets it go when answered */
		if (!unanswered)
			f->ex.lk = NULL;     /* cancelled: dlm-glue frees the handle */
		pthread_mutex_unlock(&f->mu);
		res->status = rc;
		snprintf(res->message, sizeof(res->message), "not every node froze within %llu ms (%s): "
			 "a node is slow, dead and not yet fenced, or cut off; nothing was snapshotted",
			 (unsigned long long)res->wait_ms,
			 stop_requested(&stop) ? "the requesting csvctl went away" : strerror(-rc));
	} else {
		/* The role cannot change under the engine while the hook runs. */
		pthread_rwlock_rdlock(&c->role_lock);
		if (atomic_load(&c->role) == CL_COORDINATOR)
			resumed = snapshot_frozen(c, rq, deadline_ms, &stop, res);
		else {
			res->status = -EREMOTE;
			snprintf(res->message, sizeof(res->message), "this node stopped being the coordinator");
		}
		pthread_rwlock_unlock(&c->role_lock);
		freeze_reports_open(c);
		held_unlock(&f->ex, 0, NULL);
		res->frozen_ms = cl_now_ms() - t0 - res->wait_ms;
		freeze_reports_close(c, REPORTS_WAIT_MS, res);
	}
	release_claim(c);
	if (resumed && cluster_move(c, "", err, sizeof(err)) != 0)
		csvfs_log(LOG_ERR_L, "node %s, volume %s: cannot hand the role to a node that can journal: %s",
			  c->o.node, c->v->uuid, err);
	if (res->status)
		csvfs_log(LOG_ERR_L, "node %s, volume %s: snapshot '%s' requested by %s failed, volume thawed: %s",
			  c->o.node, c->v->uuid, rq->name, rq->requester, res->message);
	else
		csvfs_log(LOG_INFO_L, "node %s, volume %s: snapshot '%s' requested by %s taken; frozen %llu ms "
			  "(hook %llu ms) after %llu ms to freeze every node; the longest write stall %llu ms "
			  "(%s; %u of %u nodes reported)", c->o.node, c->v->uuid, rq->name, rq->requester,
			  (unsigned long long)res->frozen_ms, (unsigned long long)res->hook_ms,
			  (unsigned long long)res->wait_ms, (unsigned long long)res->stall_ms,
			  res->stall_node[0] ? res->stall_node : "no change waited", res->nodes_reported,
			  res->nodes_expected);
}
