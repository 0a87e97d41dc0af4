/* dlm-glue "cpg" backend: the ops table and the lockspace's life (connect,
 * disconnect, members). How the backend works and which file does what:
 * cpg_internal.h; design and the reasons for each rule: docs/locking.md §9. */
#include "dlm-glue/cpg_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void destroy(struct cpg_ls *ls)
{
	cpgb_close_corosync(ls);
	cpgb_reset_lineage(ls);
	for (size_t b = 0; b < LOCK_BUCKETS; b++) {
		while (ls->buckets[b]) {
			struct cpg_lock *lk = ls->buckets[b];
			ls->buckets[b] = lk->hnext;
			dg_lock_base_release(&lk->base);
			free(lk);
		}
	}
	dg_cb_clear(&ls->cbq);
	free(ls->fx);
	if (ls->wake_fd >= 0)
		close(ls->wake_fd);
	pthread_mutex_destroy(&ls->mu);
	pthread_cond_destroy(&ls->cv);
	free(ls->lockspace_name);
	free(ls->fence_command);
	free(ls);
}

static bool lockspace_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 100)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return true;
}

static int cpg_connect(const struct dg_config *cfg, struct dg_lockspace **out, char *err, size_t errlen)
{
	char scratch[256];
	if (!err || !errlen) {
		err = scratch;
		errlen = sizeof(scratch);
	}
	if (!cfg->lockspace || !lockspace_name_ok(cfg->lockspace)) {
		snprintf(err, errlen, "lockspace name must be 1-100 printable characters (the volume GUID)");
		return -EINVAL;
	}
	struct cpg_ls *ls = calloc(1, sizeof(*ls));
	if (!ls) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ls->cfg = *cfg;
	ls->lockspace_name = strdup(cfg->lockspace);
	ls->fence_command = cfg->fence_command && cfg->fence_command[0] ? strdup(cfg->fence_command) : NULL;
	ls->cfg.lockspace = ls->lockspace_name;
	ls->cfg.fence_command = ls->fence_command;
	ls->cfg.backend = "cpg";
	ls->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ls->cpg_fd = ls->q_fd = -1;
	ls->self_pid = (uint32_t)getpid();
	ls->sent_q_quorate = -1;
	pthread_mutex_init(&ls->mu, NULL);
	dg_cbq_init(&ls->cbq, &ls->mu, &ls->cfg, cpgb_forget_lock, ls);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ls->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (!ls->lockspace_name || ls->wake_fd < 0 || (cfg->fence_command && cfg->fence_command[0] && !ls->fence_command)) {
		snprintf(err, errlen, "out of memory");
		destroy(ls);
		return -ENOMEM;
	}
	cpgb_group_name(cfg->lockspace, &ls->group);

	int rc = cpgb_open_corosync(ls, err, errlen);
	if (rc < 0) {
		LOG(ls, 3, "%s", err);
		destroy(ls);
		return rc;
	}
	/* Deadline: the departed node's failure detection (token +
	 * consensus) plus its I/O drain (docs/locking.md). */
	unsigned detect = ls->token_ms + ls->consensus_ms;
	ls->fence_timeout_ms = cfg->fence_timeout_ms ? cfg->fence_timeout_ms : FENCE_TIMEOUT_DEFAULT_MS;
	ls->deadline_ms = cfg->self_fence_deadline_ms ? cfg->self_fence_deadline_ms : detect + DEFAULT_DRAIN_MS;
	if (ls->deadline_ms <= detect)
		LOG(ls, 4, "self-fence deadline %u ms does not exceed failure detection (token %u + consensus %u ms): "
		    "a departed node may still be doing I/O when its locks are released", ls->deadline_ms,
		    ls->token_ms, ls->consensus_ms);
	LOG(ls, 6, "lockspace %s: group %s, node %u (%s), self-fence deadline %u ms (detection %u ms)",
	    ls->lockspace_name, ls->group.value, ls->self_nodeid, cpgb_node_name(ls, ls->self_nodeid), ls->deadline_ms, detect);

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, DISPATCH_STACK);
	rc = pthread_create(&ls->thread, &attr, cpgb_dispatch_main, ls);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start the dispatch thread: %s", strerror(rc));
		destroy(ls);
		return -rc;
	}
	ls->thread_started = true;

	/* Wait (bounded) until we follow the lineage. */
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += CONNECT_WAIT_MS / 1000;
	pthread_mutex_lock(&ls->mu);
	int w = 0;
	while (ls->state != ST_SYNCED && ls->state != ST_FAILED && w == 0)
		w = pthread_cond_timedwait(&ls->cv, &ls->mu, &dl);
	int st = ls->state;
	int fail = ls->fail_status;
	char msg[256];
	snprintf(msg, sizeof(msg), "%s", ls->fail_msg);
	pthread_mutex_unlock(&ls->mu);
	if (st != ST_SYNCED) {
		if (st == ST_FAILED)
			snprintf(err, errlen, "%s", msg[0] ? msg : "could not join the lockspace");
		else
			snprintf(err, errlen, "lockspace %s: not joined within %d s (state %s)", cfg->lockspace,
				 CONNECT_WAIT_MS / 1000, cpgb_st_name(st));
		pthread_mutex_lock(&ls->mu);
		ls->stop = true;
		pthread_mutex_unlock(&ls->mu);
		cpgb_wake(ls);
		pthread_join(ls->thread, NULL);
		destroy(ls);
		return st == ST_FAILED && fail ? fail : -ETIMEDOUT;
	}
	*out = &ls->pub;
	return 0;
}

static void cpg_disconnect(struct dg_lockspace *p)
{
	struct cpg_ls *ls = cpgb_impl(p);
	pthread_mutex_lock(&ls->mu);
	ls->stop = true;
	pthread_mutex_unlock(&ls->mu);
	cpgb_wake(ls);
	if (ls->thread_started)
		pthread_join(ls->thread, NULL);
	pthread_mutex_lock(&ls->mu);
	/* leaving the group (cpg_finalize) releases our locks: the others see
	 * a clean leave */
	if (ls->cpg_open)
		LOG(ls, 5, "membership: leaving lockspace %s", ls->lockspace_name);
	cpgb_close_corosync(ls);
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += ls->fence_timeout_ms / 1000 + 5;
	int w = 0;
	while (ls->fence_threads > 0 && w == 0)
		w = pthread_cond_timedwait(&ls->cv, &ls->mu, &dl);
	int left = ls->fence_threads;
	pthread_mutex_unlock(&ls->mu);
	if (left > 0) {
		LOG(ls, 3, "%d fence command(s) still running at disconnect; leaking the lockspace", left);
		return;
	}
	destroy(ls);
}

static uint32_t cpg_this_node(struct dg_lockspace *p)
{
	struct cpg_ls *ls = cpgb_impl(p);
	pthread_mutex_lock(&ls->mu);
	uint32_t n = ls->self_nodeid;
	pthread_mutex_unlock(&ls->mu);
	return n;
}

struct members_ctx {
	struct cpg_ls *ls;
	struct dg_member *out;
	size_t max, n;
};

static void fill_member(struct members_ctx *c, uint32_t nodeid, enum dg_node_state st)
{
	if (c->n < c->max && c->out) {
		struct dg_member *m = &c->out[c->n];
		memset(m, 0, sizeof(*m));
		m->nodeid = nodeid;
		m->state = st;
		for (size_t i = 0; i < c->ls->nnodes; i++)
			if (c->ls->nodes[i].nodeid == nodeid) {
				snprintf(m->name, sizeof(m->name), "%s", c->ls->nodes[i].name);
				snprintf(m->address, sizeof(m->address), "%s", c->ls->nodes[i].addr);
			}
	}
	c->n++;
}

static void visit_member(void *ctx, const struct ls_member_info *m)
{
	fill_member(ctx, m->nodeid, m->departed ? DG_NODE_DEPARTED : DG_NODE_UP);
}

static int cpg_members(struct dg_lockspace *p, struct dg_member *out, size_t max, int *quorate)
{
	struct cpg_ls *ls = cpgb_impl(p);
	pthread_mutex_lock(&ls->mu);
	struct members_ctx c = { .ls = ls, .out = out, .max = max };
	if (ls->state == ST_SYNCED && ls->lst) {
		ls_foreach_member(ls->lst, visit_member, &c);
		for (size_t i = 0; i < ls->nfenced_nodes; i++)
			fill_member(&c, ls->fenced_nodes[i], DG_NODE_FENCED);
	}
	if (quorate)
		*quorate = ls->state == ST_SYNCED && ls->q_have && ls->q_quorate;
	pthread_mutex_unlock(&ls->mu);
	return (int)(c.n > (size_t)INT32_MAX ? INT32_MAX : c.n);
}

/* Deadlines count from the departure, which is seen token + consensus
 * after the death. */
static unsigned cpg_release_bound_ms(struct dg_lockspace *base)
{
	struct cpg_ls *ls = cpgb_impl(base);
	return ls->token_ms + ls->consensus_ms + ls->deadline_ms;
}

struct holders_walk {
	const char *name;
	size_t name_len;
	struct dg_holder *out;
	size_t max, n;
};

static void holder_seen(void *ctx, const struct ls_lock_info *info)
{
	struct holders_walk *w = ctx;
	if (info->name_len != w->name_len || memcmp(info->name, w->name, w->name_len) != 0 ||
	    info->queue == LS_QUEUE_WAITING)
		return;
	if (w->n < w->max)
		w->out[w->n] = (struct dg_holder){ .nodeid = info->nodeid, .granted = (enum dg_mode)info->granted,
						   .notified = info->blocking_notified, .departed = info->departed };
	w->n++;
}

/* Every node's copy of the lock state is the same: ours names the holders.
 * A walk of every lock: for a diagnosis only. */
static int cpg_holders(struct dg_lockspace *base, const char *name, struct dg_holder *out, size_t max)
{
	struct cpg_ls *ls = cpgb_impl(base);
	struct holders_walk w = { .name = name, .name_len = strlen(name), .out = out, .max = max };
	pthread_mutex_lock(&ls->mu);
	if (ls->lst)
		ls_foreach_lock(ls->lst, holder_seen, &w);
	pthread_mutex_unlock(&ls->mu);
	return (int)(w.n > (size_t)INT32_MAX ? INT32_MAX : w.n);
}

static const struct dg_backend_ops cpg_ops = {
	.name = "cpg",
	.connect = cpg_connect,
	.disconnect = cpg_disconnect,
	.this_node = cpg_this_node,
	.members = cpg_members,
	.lock = cpgb_lock,
	.convert = cpgb_convert,
	.unlock = cpgb_unlock,
	.cancel = cpgb_cancel,
	.release_bound_ms = cpg_release_bound_ms,
	.holders = cpg_holders,
};

const struct dg_backend_ops *dg_cpg_backend_ops(void)
{
	return &cpg_ops;
}
