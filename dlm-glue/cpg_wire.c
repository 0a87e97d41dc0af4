/* cpg backend, wire format: every CPG message carries a 24-byte envelope
 * (magic, version, type, synced flag, lineage, incarnation); messages leave
 * through an ordered out-queue that rides out CS_ERR_TRY_AGAIN; state machine
 * requests stay in flight until their own delivery; snapshot chunks name the
 * joiners they cover. docs/locking.md §9. */
#include "dlm-glue/cpg_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

void cpgb_out_clear(struct cpg_ls *ls)
{
	while (ls->out_head) {
		struct outmsg *m = ls->out_head;
		ls->out_head = m->next;
		free(m);
	}
	ls->out_tail = NULL;
	while (ls->inflight) {
		struct inflight *f = ls->inflight;
		ls->inflight = f->next;
		free(f);
	}
}

void cpgb_out_flush(struct cpg_ls *ls)
{
	if (!ls->cpg_open)
		return;
	if (ls->out_retry_at && dg_now_ms() < ls->out_retry_at)
		return;
	ls->out_retry_at = 0;
	while (ls->out_head) {
		struct outmsg *m = ls->out_head;
		struct iovec iov = { .iov_base = m->buf, .iov_len = m->len };
		cs_error_t err = cpg_mcast_joined(ls->cpg, CPG_TYPE_AGREED, &iov, 1);
		if (err == CS_ERR_TRY_AGAIN) {
			ls->out_backoff = ls->out_backoff ? ls->out_backoff * 2 : 1;
			if (ls->out_backoff > BACKOFF_MAX_MS)
				ls->out_backoff = BACKOFF_MAX_MS;
			ls->out_retry_at = dg_now_ms() + ls->out_backoff;
			return;
		}
		ls->out_backoff = 0;
		if (err != CS_OK) {
			LOG(ls, 3, "cpg_mcast_joined failed (error %d); dropping a %zu-byte message", err, m->len);
		}
		ls->out_head = m->next;
		if (!ls->out_head)
			ls->out_tail = NULL;
		free(m);
	}
}

int cpgb_send_raw(struct cpg_ls *ls, int type, const uint8_t *payload, size_t len)
{
	struct outmsg *m = malloc(sizeof(*m) + ENV_LEN + len);
	if (!m)
		return -ENOMEM;
	m->next = NULL;
	m->len = ENV_LEN + len;
	put32(m->buf, ENV_MAGIC);
	m->buf[4] = ENV_VERSION;
	m->buf[5] = (uint8_t)type;
	m->buf[6] = ls->state == ST_SYNCED ? ENV_F_SYNCED : 0;
	m->buf[7] = 0;
	put64(m->buf + 8, ls->lineage);
	put32(m->buf + 16, ls->incarnation);
	put32(m->buf + 20, 0);
	if (len)
		memcpy(m->buf + ENV_LEN, payload, len);
	if (ls->out_tail)
		ls->out_tail->next = m;
	else
		ls->out_head = m;
	ls->out_tail = m;
	cpgb_out_flush(ls);
	if (ls->out_head)
		cpgb_wake(ls);
	return 0;
}

/* The envelope of a delivered message: false unless it is a message with our
 * magic and version. */
bool cpgb_env_open(const struct ev *e, struct env *env)
{
	if (e->kind != EV_MSG || e->len < ENV_LEN || get32(e->data) != ENV_MAGIC || e->data[4] != ENV_VERSION)
		return false;
	env->type = e->data[5];
	env->lineage = get64(e->data + 8);
	env->incarnation = get32(e->data + 16);
	env->payload = e->data + ENV_LEN;
	env->len = e->len - ENV_LEN;
	return true;
}

/* Sends one state machine request with a fresh tag; it stays in flight until
 * its own delivery is seen. */
int cpgb_send_ls(struct cpg_ls *ls, struct ls_msg *msg)
{
	msg->tag = ++ls->next_tag;
	uint8_t buf[LS_MSG_MAX_LEN + LS_LVB_LEN];
	int len = ls_msg_encode(msg, buf, sizeof(buf));
	if (len < 0) {
		LOG(ls, 3, "cannot encode request type %u: %s", msg->type, ls_strerror(len));
		return -EINVAL;
	}
	struct inflight *f = malloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	int rc = cpgb_send_raw(ls, ENV_LS, buf, (size_t)len);
	if (rc < 0) {
		free(f);
		return rc;
	}
	f->tag = msg->tag;
	f->msg = *msg;
	f->next = ls->inflight;
	ls->inflight = f;
	return 0;
}

/* Our own request came back: done, or (if it was not applied because our
 * incarnation changed under it) sent again with a new tag. */
void cpgb_inflight_delivered(struct cpg_ls *ls, uint64_t tag, bool applied)
{
	struct inflight **pp = &ls->inflight;
	while (*pp && (*pp)->tag != tag)
		pp = &(*pp)->next;
	if (!*pp)
		return;
	struct inflight *f = *pp;
	*pp = f->next;
	if (!applied && ls->state == ST_SYNCED) {
		LOG(ls, 5, "request tag %" PRIu64 " was not applied (sent under another incarnation): resending", tag);
		struct ls_msg msg = f->msg;
		cpgb_send_ls(ls, &msg);
	}
	free(f);
}

void cpgb_send_fenced(struct cpg_ls *ls, uint32_t nodeid, uint32_t incarnation)
{
	struct ls_msg msg;
	memset(&msg, 0, sizeof(msg));
	msg.type = LS_MSG_FENCED;
	msg.fenced_nodeid = nodeid;
	msg.fenced_incarnation = incarnation;
	cpgb_send_ls(ls, &msg);
}

/* The designated member refuses a second process of an admitted node. */
void cpgb_send_reject(struct cpg_ls *ls, uint32_t nodeid, uint32_t pid)
{
	uint8_t p[8];
	put32(p, nodeid);
	put32(p + 4, pid);
	cpgb_send_raw(ls, ENV_REJECT, p, sizeof(p));
}

bool cpgb_parse_snap(const uint8_t *p, size_t len, struct snap_hdr *h)
{
	if (len < 20)
		return false;
	h->id = get32(p);
	h->idx = get32(p + 4);
	h->nchunks = get32(p + 8);
	h->total = get32(p + 12);
	h->ncovered = get32(p + 16);
	if (h->ncovered > CPG_MEMBERS_MAX || len < 20 + (size_t)h->ncovered * 8 || h->nchunks == 0 ||
	    h->idx >= h->nchunks || h->total > SNAP_MAX)
		return false;
	for (uint32_t i = 0; i < h->ncovered; i++) {
		h->covered[i].nodeid = get32(p + 20 + 8 * i);
		h->covered[i].pid = get32(p + 24 + 8 * i);
		h->covered[i].reason = 0;
	}
	h->data = p + 20 + (size_t)h->ncovered * 8;
	h->len = len - 20 - (size_t)h->ncovered * 8;
	return true;
}

bool cpgb_snap_covers(const struct snap_hdr *h, uint32_t nodeid, uint32_t pid)
{
	for (uint32_t i = 0; i < h->ncovered; i++)
		if (h->covered[i].nodeid == nodeid && h->covered[i].pid == pid)
			return true;
	return false;
}
