/* cpg backend, fencing: a departed node's locks are released (a FENCED
 * message) once the fence command confirms or the self-fence deadline passes
 * while we are quorate (design.md §6, docs/locking.md §9). */
#include "dlm-glue/cpg_internal.h"

#include <signal.h>
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

static void *fence_thread(void *arg)
{
	struct fence_job *job = arg;
	struct cpg_ls *ls = job->ls;
	char id[16];
	snprintf(id, sizeof(id), "%u", job->nodeid);
	pthread_mutex_lock(&ls->mu);
	char *cmd = strdup(ls->fence_command);
	pthread_mutex_unlock(&ls->mu);
	int result = 3;
	if (cmd) {
		char script[4096];
		snprintf(script, sizeof(script), "%s \"$@\"", cmd);
		char *argv[] = { "sh", "-c", script, "sh", id, job->name, NULL };
		pid_t pid;
		if (posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ) == 0) {
			int status = 0;
			int64_t end = dg_now_ms() + FENCE_CMD_TIMEOUT_MS;
			pid_t r = 0;
			while ((r = waitpid(pid, &status, WNOHANG)) == 0 && dg_now_ms() < end)
				sleep_ms(50);
			if (r == 0) {
				kill(pid, SIGKILL);
				waitpid(pid, &status, 0);
				status = -1;
			}
			result = r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 2 : 3;
		}
		free(cmd);
	}
	pthread_mutex_lock(&ls->mu);
	struct fence_entry *f = fence_find(ls, job->nodeid, job->incarnation);
	if (f)
		f->cmd_state = result;
	if (result != 2)
		LOG(ls, 4, "fence: command for node %u failed; waiting for the self-fence deadline", job->nodeid);
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
