/* dlm-glue core: the callback queue both backends use (backend.h).
 *
 * A backend changes lock state under its own mutex, where it must not call
 * the application (an ast may call dg_convert or dg_unlock, which take that
 * mutex). So it queues what the application is to hear, in order, and its
 * dispatch thread runs the queue without the mutex. A handle is freed by the
 * queue too (DG_CB_FREE), after every callback queued before it. */
#include "dlm-glue/backend.h"

#include <stdlib.h>
#include <string.h>

struct dg_cb {
	struct dg_cb *next;
	enum dg_cb_kind kind;
	struct dg_lock *lk;          /* AST, BAST, FREE */
	int status;                  /* AST; QUORUM: quorate */
	int mode;                    /* AST: granted; BAST: blocking */
	bool has_lvb;
	uint8_t lvb[DG_LVB_LEN];
	uint32_t nodeid;             /* NODE_DOWN, NODE_FENCED */
};

void dg_cbq_init(struct dg_cbq *q, pthread_mutex_t *mu, const struct dg_config *cfg,
		 void (*forget)(void *owner, struct dg_lock *lk), void *owner)
{
	memset(q, 0, sizeof(*q));
	q->mu = mu;
	q->cfg = cfg;
	q->forget = forget;
	q->owner = owner;
}

static struct dg_cb *cb_push(struct dg_cbq *q, enum dg_cb_kind kind, struct dg_lock *lk)
{
	struct dg_cb *c = calloc(1, sizeof(*c));
	if (!c) {
		dg_logf(q->cfg, 3, "out of memory queueing a callback");
		return NULL;
	}
	c->kind = kind;
	c->lk = lk;
	if (q->tail)
		q->tail->next = c;
	else
		q->head = c;
	q->tail = c;
	return c;
}

void dg_cb_event(struct dg_cbq *q, enum dg_cb_kind kind, uint32_t nodeid, int status)
{
	struct dg_cb *c = cb_push(q, kind, NULL);
	if (c) {
		c->nodeid = nodeid;
		c->status = status;
	}
}

void dg_cb_ast(struct dg_cbq *q, struct dg_lock *lk, int status, int mode, const uint8_t *lvb)
{
	if (lk->unlocking || lk->freeing || !lk->ast)
		return;
	struct dg_cb *c = cb_push(q, DG_CB_AST, lk);
	if (!c)
		return;
	c->status = status;
	c->mode = mode < DG_NL || mode > DG_EX ? DG_NL : mode;
	if (lvb) {
		c->has_lvb = true;
		memcpy(c->lvb, lvb, DG_LVB_LEN);
	}
}

void dg_cb_bast(struct dg_cbq *q, struct dg_lock *lk, int mode)
{
	if (lk->unlocking || lk->freeing || !lk->bast)
		return;
	struct dg_cb *c = cb_push(q, DG_CB_BAST, lk);
	if (c)
		c->mode = mode;
}

bool dg_cb_free(struct dg_cbq *q, struct dg_lock *lk)
{
	lk->freeing = true;
	return cb_push(q, DG_CB_FREE, lk) != NULL;
}

/* ---- running (dispatch thread, without mu) -------------------------------- */

static void run_ast(struct dg_cbq *q, const struct dg_cb *c)
{
	/* dg_unlock may have been called since it was queued */
	pthread_mutex_lock(q->mu);
	bool skip = c->lk->unlocking;
	dg_ast_fn ast = c->lk->ast;
	void *arg = c->lk->arg;
	pthread_mutex_unlock(q->mu);
	if (!skip && ast)
		ast(arg, c->status, (enum dg_mode)c->mode, c->has_lvb ? c->lvb : NULL);
}

static void run_bast(struct dg_cbq *q, const struct dg_cb *c)
{
	pthread_mutex_lock(q->mu);
	bool skip = c->lk->unlocking || c->lk->dead;
	dg_bast_fn bast = c->lk->bast;
	void *arg = c->lk->arg;
	pthread_mutex_unlock(q->mu);
	if (!skip && bast)
		bast(arg, (enum dg_mode)c->mode);
}

static void run_free(struct dg_cbq *q, const struct dg_cb *c)
{
	pthread_mutex_lock(q->mu);
	q->forget(q->owner, c->lk);
	pthread_mutex_unlock(q->mu);
	dg_lock_base_release(c->lk);
	free(c->lk); /* the backend's handle starts with its struct dg_lock */
}

/* The application's own callbacks (membership, recovery, quorum). */
static void run_event(const struct dg_callbacks *cb, const struct dg_cb *c)
{
	switch (c->kind) {
	case DG_CB_MEMBERSHIP:
		if (cb->membership)
			cb->membership(cb->arg);
		break;
	case DG_CB_NODE_DOWN:
		if (cb->node_down)
			cb->node_down(cb->arg, c->nodeid);
		break;
	case DG_CB_NODE_FENCED:
		if (cb->node_fenced)
			cb->node_fenced(cb->arg, c->nodeid);
		break;
	case DG_CB_RECOVERY_DONE:
		if (cb->recovery_done)
			cb->recovery_done(cb->arg);
		break;
	case DG_CB_QUORUM:
		if (cb->quorum)
			cb->quorum(cb->arg, c->status);
		break;
	default:
		break;
	}
}

static void run_one(struct dg_cbq *q, const struct dg_cb *c)
{
	switch (c->kind) {
	case DG_CB_AST:
		run_ast(q, c);
		break;
	case DG_CB_BAST:
		run_bast(q, c);
		break;
	case DG_CB_FREE:
		run_free(q, c);
		break;
	default:
		run_event(&q->cfg->cb, c);
		break;
	}
}

static struct dg_cb *take_all(struct dg_cbq *q)
{
	pthread_mutex_lock(q->mu);
	struct dg_cb *list = q->head;
	q->head = q->tail = NULL;
	pthread_mutex_unlock(q->mu);
	return list;
}

void dg_cb_run(struct dg_cbq *q, int max_rounds)
{
	for (int round = 0; max_rounds <= 0 || round < max_rounds; round++) {
		struct dg_cb *list = take_all(q);
		if (!list)
			return;
		while (list) {
			struct dg_cb *c = list;
			list = c->next;
			run_one(q, c);
			free(c);
		}
	}
}

void dg_cb_clear(struct dg_cbq *q)
{
	while (q->head) {
		struct dg_cb *c = q->head;
		q->head = c->next;
		free(c);
	}
	q->tail = NULL;
}
