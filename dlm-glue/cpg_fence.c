/* cpg backend, fencing: a departed node's locks are released (a FENCED
 * message) once the fence command confirms or the self-fence deadline passes
 * while we are quorate (design.md §6, docs/locking.md §9). */
#include "dlm-glue/cpg_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

extern char **environ;

static struct fence_entry *fence_find(struct cpg_ls *ls, uint32_t nodeid, uint32_t inc)
{
	for (size_t i = 0; i < ls->nfences; i++)
		if (ls->fences[i].nodeid == nodeid && ls->fences[i].incarnation == inc)
			return &ls->fences[i];
	return NULL;
}

void cpgb_fence_remove_upto(struct cpg_ls *ls, uint32_t nodeid, uint32_t inc)
{
	size_t j = 0;
	for (size_t i = 0; i < ls->nfences; i++)
		if (!(ls->fences[i].nodeid == nodeid && ls->fences[i].incarnation <= inc))
			ls->fences[j++] = ls->fences[i];
	ls->nfences = j;
}

void cpgb_fenced_nodes_set(struct cpg_ls *ls, uint32_t nodeid, bool fenced)
{
	size_t j = 0;
	for (size_t i = 0; i < ls->nfenced_nodes; i++)
		if (ls->fenced_nodes[i] != nodeid)
			ls->fenced_nodes[j++] = ls->fenced_nodes[i];
	ls->nfenced_nodes = j;
	if (fenced && ls->nfenced_nodes < MAX_NODES)
		ls->fenced_nodes[ls->nfenced_nodes++] = nodeid;
}

void cpgb_arm_fence(struct cpg_ls *ls, uint32_t nodeid, uint32_t inc)
{
	if (fence_find(ls, nodeid, inc) || ls->nfences >= CPG_MEMBERS_MAX)
		return;
	struct fence_entry *f = &ls->fences[ls->nfences++];
	memset(f, 0, sizeof(*f));
	f->nodeid = nodeid;
	f->incarnation = inc;
	f->deadline = dg_now_ms() + ls->deadline_ms;
}

/* Quorum regained: a departed node can only have lost contact with a
 * quorate partition from now on, so its deadline counts from here
 * (design.md §6). */
void cpgb_fence_deadlines_from_now(struct cpg_ls *ls)
{
	int64_t d = dg_now_ms() + ls->deadline_ms;
	for (size_t i = 0; i < ls->nfences; i++)
		if (ls->fences[i].deadline < d && ls->fences[i].fenced_sent_at == 0 &&
		    ls->fences[i].cmd_state != 2)
			ls->fences[i].deadline = d;
}

struct fence_job {
	struct cpg_ls *ls;
	uint32_t nodeid, incarnation;
	char name[64];
};

/* Runs the fence command for one node and waits for it at most timeout_ms
 * (killing it then). Returns true when it exited 0; otherwise says why in
 * why (exit status, signal, timeout, spawn error). */
static bool run_fence_command(const char *cmd, uint32_t nodeid, const char *name, unsigned timeout_ms,
			      char *why, size_t whylen)
{
	char id[16], script[4096];
	snprintf(id, sizeof(id), "%u", nodeid);
	snprintf(script, sizeof(script), "%s \"$@\"", cmd);
	char *argv[] = { "sh", "-c", script, "sh", id, (char *)name, NULL };
	/* its own process group, so that a timeout kills what it started too */
	posix_spawnattr_t attr;
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
	posix_spawnattr_setpgroup(&attr, 0);
	pid_t pid;
	int err = posix_spawn(&pid, "/bin/sh", NULL, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	if (err) {
		snprintf(why, whylen, "could not start it: %s", strerror(err));
		return false;
	}
	int status = 0;
	int64_t end = dg_now_ms() + timeout_ms;
	pid_t r = 0;
	while ((r = waitpid(pid, &status, WNOHANG)) == 0 && dg_now_ms() < end)
		sleep_ms(50);
	if (r == 0) {
		kill(-pid, SIGKILL);
		waitpid(pid, &status, 0);
		snprintf(why, whylen, "still running after %u ms: killed", timeout_ms);
		return false;
	}
	if (r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return true;
	if (r == pid && WIFEXITED(status))
		snprintf(why, whylen, "exit status %d", WEXITSTATUS(status));
	else if (r == pid && WIFSIGNALED(status))
		snprintf(why, whylen, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(why, whylen, "waitpid: %s", strerror(errno));
	return false;
}

static void *fence_thread(void *arg)
{
	struct fence_job *job = arg;
	struct cpg_ls *ls = job->ls;
	pthread_mutex_lock(&ls->mu);
	char *cmd = strdup(ls->fence_command);
	unsigned timeout_ms = ls->fence_timeout_ms;
	pthread_mutex_unlock(&ls->mu);
	char why[128] = "out of memory";
	bool fenced = cmd && run_fence_command(cmd, job->nodeid, job->name, timeout_ms, why, sizeof(why));
	free(cmd);
	pthread_mutex_lock(&ls->mu);
	struct fence_entry *f = fence_find(ls, job->nodeid, job->incarnation);
	if (f)
		f->cmd_state = fenced ? 2 : 3;
	if (!fenced)
		LOG(ls, 4, "fence: command for node %u (%s) failed (%s); waiting for the self-fence deadline",
		    job->nodeid, job->name, why);
	ls->fence_threads--;
	pthread_cond_broadcast(&ls->cv);
	cpgb_wake(ls);
	pthread_mutex_unlock(&ls->mu);
	free(job);
	return NULL;
}

void cpgb_run_fencing(struct cpg_ls *ls)
{
	if (ls->state != ST_SYNCED || !ls->lst)
		return;
	int64_t now = dg_now_ms();
	bool quorate = ls_quorate(ls->lst);
	for (size_t i = 0; i < ls->nfences; i++) {
		struct fence_entry *f = &ls->fences[i];
		if (f->fenced_sent_at && now - f->fenced_sent_at < 2000)
			continue;
		if (!quorate && f->deadline > now)
			continue;
		/* fence command: run by the designated member only */
		if (quorate && ls->fence_command && f->cmd_state == 0 && cpgb_designated(ls) == ls->self_nodeid &&
		    ls->fence_threads < 16) {
			struct fence_job *job = calloc(1, sizeof(*job));
			if (job) {
				job->ls = ls;
				job->nodeid = f->nodeid;
				job->incarnation = f->incarnation;
				snprintf(job->name, sizeof(job->name), "%s", cpgb_node_name(ls, f->nodeid));
				pthread_t t;
				pthread_attr_t attr;
				pthread_attr_init(&attr);
				pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
				if (pthread_create(&t, &attr, fence_thread, job) == 0) {
					f->cmd_state = 1;
					ls->fence_threads++;
					LOG(ls, 5, "fence: running '%s %u %s'", ls->fence_command, f->nodeid, job->name);
				} else {
					free(job);
				}
				pthread_attr_destroy(&attr);
			}
		}
		bool ok_cmd = f->cmd_state == 2;
		bool past = f->deadline <= now;
		if (!ok_cmd && !(past && quorate))
			continue;
		LOG(ls, 5, "fence: node %u (%s) incarnation %u: %s", f->nodeid, cpgb_node_name(ls, f->nodeid), f->incarnation,
		    ok_cmd ? "fence command confirmed" : "self-fence deadline passed");
		cpgb_send_fenced(ls, f->nodeid, f->incarnation);
		f->fenced_sent_at = now;
	}
}
