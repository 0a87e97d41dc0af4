/* The participant side: one connection thread that connects, reconnects and
 * runs the link; callers on any thread queue requests and wait for replies
 * matched by request id. */
#include "redirect-io/rio_impl.h"

#include <errno.h>
#include <netdb.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_CALL_TIMEOUT_MS 30000
#define FIRST_BACKOFF_MS 100
#define STOP_POLL_MS 200

struct rio_call {
	struct rio_call *next;
	uint64_t id;
	uint16_t op;
	unsigned call_flags;
	struct rio_blob *frame;
	int frame_owners;      /* references to frame that are no connection's */
	bool on_link;          /* queued on the current connection */
	bool sent_here;        /* written whole to the current connection */
	bool sent_earlier;     /* ...to an earlier one, which may have applied it */
	bool done;
	int result;
	struct rio_reply reply;
	pthread_cond_t cv;
};

struct rio_client {
	struct rio_client_config cfg;
	char *cred_dir, *host, *expect_peer;
	struct rio_logger log;
	SSL_CTX *ctx;
	char self[RIO_NODE_NAME_MAX + 1];
	char addr[RIO_ADDR_MAX];
	uint64_t client_id;
	pthread_t thread;
	struct rio_link_ops ops;
	pthread_mutex_t lock;
	pthread_cond_t cv; /* connection state, free slots, callers leaving */
	struct rio_call *calls, *calls_tail; /* in request id order */
	unsigned ncalls;
	uint64_t next_id;
	struct rio_link *link; /* connecting or connected */
	bool link_live;
	bool goaway;
	char peer[RIO_NODE_NAME_MAX + 1];
	uint64_t instance;
	uint32_t server_max_payload;
	uint8_t version;
	int last_err;
	char last_why[256];
	uint64_t fail_seq;
	bool stop;
	unsigned callers;
};

/* ---- calls (cl->lock held) ---------------------------------------------- */

static void call_finish(struct rio_call *call, int result)
{
	call->result = result;
	call->done = true;
	pthread_cond_signal(&call->cv);
}

static struct rio_call *find_call(struct rio_client *cl, uint64_t id)
{
	for (struct rio_call *c = cl->calls; c; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

static void remove_call(struct rio_client *cl, struct rio_call *call)
{
	struct rio_call *prev = NULL;

	for (struct rio_call *c = cl->calls; c; prev = c, c = c->next) {
		if (c != call)
			continue;
		if (prev)
			prev->next = c->next;
		else
			cl->calls = c->next;
		if (cl->calls_tail == c)
			cl->calls_tail = prev;
		cl->ncalls--;
		return;
	}
}

/* The frame's header is rewritten in place for each connection; copy the
 * frame if an old connection's queue still holds it. */
static bool call_frame_exclusive(struct rio_call *call)
{
	struct rio_blob *copy;
	uint8_t *data;

	if (atomic_load(&call->frame->refs) == call->frame_owners)
		return true;
	data = malloc(call->frame->len);
	copy = data ? rio_blob_adopt(data, call->frame->len) : NULL;
	if (!copy) {
		free(data);
		return false;
	}
	memcpy(data, call->frame->data, call->frame->len);
	rio_blob_unref(call->frame);
	call->frame = copy;
	call->frame_owners = 1;
	return true;
}

/* The header is written here, per connection: the version is negotiated and
 * the retry flag depends on what happened to earlier connections. */
static void enqueue_call(struct rio_client *cl, struct rio_call *call)
{
	struct rio_hdr h;
	uint16_t flags = 0;

	if (call->frame->len - RIO_HDR_LEN > cl->server_max_payload) {
		call_finish(call, RIO_E_TOOBIG);
		return;
	}
	if (!call_frame_exclusive(call)) {
		call_finish(call, RIO_E_NOMEM);
		return;
	}
	if (call->call_flags & RIO_CALL_IDEMPOTENT)
		flags |= RIO_F_IDEMPOTENT;
	if (call->sent_earlier)
		flags |= RIO_F_RETRY;
	h = (struct rio_hdr){ .version = cl->version, .type = RIO_T_REQUEST, .flags = flags,
			      .op = call->op, .payload_len = (uint32_t)(call->frame->len - RIO_HDR_LEN),
			      .request_id = call->id };
	rio_hdr_encode(&h, call->frame->data);
	if (rio_link_enqueue(cl->link, call->frame, call->id) == RIO_OK)
		call->on_link = true;
}

/* ---- link callbacks (connection thread) --------------------------------- */

static void client_tx_done(void *arg, uint64_t tag, bool sent, bool started)
{
	struct rio_client *cl = arg;
	struct rio_call *call;

	/* A partly written frame cannot be applied; a whole one may have been. */
	if (!sent)
		return;
	pthread_mutex_lock(&cl->lock);
	call = find_call(cl, tag);
	if (call)
		call->sent_here = true;
	pthread_mutex_unlock(&cl->lock);
}

/* Takes *payload when the reply keeps it. */
static int complete_call(struct rio_client *cl, const struct rio_hdr *h, uint8_t **payload,
			 char *why, size_t wl)
{
	struct rio_call *call = find_call(cl, h->request_id);
	char msg[RIO_ERROR_MSG_MAX];

	if (!call || call->done || !call->on_link)
		return RIO_OK; /* the caller gave up; a late reply is harmless */
	if (call->op != h->op) {
		snprintf(why, wl, "reply to request %llu carries op %u, sent op %u",
			 (unsigned long long)h->request_id, h->op, call->op);
		return RIO_E_PROTO;
	}
	if (h->type == RIO_T_RESPONSE) {
		call->reply = (struct rio_reply){ h->status, *payload, h->payload_len };
		*payload = NULL;
		call_finish(call, RIO_OK);
		return RIO_OK;
	}
	if (rio_error_parse(*payload, h->payload_len, msg, sizeof(msg)) != RIO_OK)
		snprintf(msg, sizeof(msg), "(unreadable message)");
	rio_logf(&cl->log, RIO_LOG_WARN, "rio: %s (%s) failed request %llu op %u: %s: %s", cl->addr,
		 cl->peer, (unsigned long long)h->request_id, h->op,
		 rio_strerror(rio_err_from_wire(h->status)), msg);
	call_finish(call, rio_err_from_wire(h->status));
	return RIO_OK;
}

static int client_on_frame(void *arg, const struct rio_hdr *h, uint8_t *payload, char *why, size_t wl)
{
	struct rio_client *cl = arg;
	int rc = RIO_E_PROTO;

	pthread_mutex_lock(&cl->lock);
	switch (h->type) {
	case RIO_T_RESPONSE:
	case RIO_T_ERROR:
		rc = complete_call(cl, h, &payload, why, wl);
		break;
	case RIO_T_GOAWAY:
		cl->goaway = true;
		snprintf(why, wl, "server is going away (GOAWAY)");
		rc = RIO_E_CLOSED;
		break;
	default:
		snprintf(why, wl, "unexpected %s frame", rio_type_name(h->type));
	}
	pthread_mutex_unlock(&cl->lock);
	free(payload);
	return rc;
}

/* ---- connecting ----------------------------------------------------------- */

static bool stopping(struct rio_client *cl)
{
	bool s;

	pthread_mutex_lock(&cl->lock);
	s = cl->stop;
	pthread_mutex_unlock(&cl->lock);
	return s;
}

static int tcp_connect(struct rio_client *cl, uint64_t deadline, int *fd_out, char *why, size_t wl)
{
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai = NULL;
	char port[8];
	int fd, rc, soerr = 0;
	socklen_t sl = sizeof(soerr);

	snprintf(port, sizeof(port), "%u", cl->cfg.port);
	rc = getaddrinfo(cl->host, port, &hints, &ai);
	if (rc != 0) {
		snprintf(why, wl, "address %s: %s", cl->host, gai_strerror(rc));
		return RIO_E_INVAL;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	rc = fd < 0 ? -1 : connect(fd, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (rc != 0 && (fd < 0 || errno != EINPROGRESS)) {
		snprintf(why, wl, "%s", strerror(errno));
		goto fail;
	}
	while (rc != 0) {
		struct pollfd p = { fd, POLLOUT, 0 };
		uint64_t now = rio_now_ms();
		if (stopping(cl) || now >= deadline) {
			snprintf(why, wl, stopping(cl) ? "stopped" : "connect timed out");
			goto fail;
		}
		if (poll(&p, 1, (int)(deadline - now < STOP_POLL_MS ? deadline - now : STOP_POLL_MS)) > 0)
			rc = 0;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
		snprintf(why, wl, "%s", strerror(soerr ? soerr : errno));
		goto fail;
	}
	*fd_out = fd;
	return RIO_OK;
fail:
	if (fd >= 0)
		close(fd);
	return RIO_E_IO;
}

static int client_hello(struct rio_client *cl, struct rio_link *l, uint64_t deadline,
			struct rio_hello_ack *ack, char *why, size_t wl)
{
	struct rio_hello hello = { RIO_VERSION_MIN, RIO_VERSION_MAX, cl->client_id, cl->cfg.max_payload };
	struct rio_hdr h = { .version = RIO_VERSION_MIN, .type = RIO_T_HELLO };
	struct rio_writer w;
	struct rio_blob *b;
	uint8_t *payload = NULL;
	char msg[RIO_ERROR_MSG_MAX];
	int rc;

	rio_writer_init_frame(&w, RIO_CONTROL_MAX);
	rio_hello_put(&w, &hello);
	b = rio_frame_from_writer(&h, &w);
	rio_writer_free(&w);
	rc = b ? rio_link_send_now(l, b, deadline, why, wl) : RIO_E_NOMEM;
	rio_blob_unref(b);
	if (rc == RIO_OK)
		rc = rio_link_recv_now(l, &h, &payload, deadline, why, wl);
	if (rc != RIO_OK)
		return rc;
	if (h.type == RIO_T_ERROR) {
		if (rio_error_parse(payload, h.payload_len, msg, sizeof(msg)) != RIO_OK)
			snprintf(msg, sizeof(msg), "%s", rio_strerror(rio_err_from_wire(h.status)));
		snprintf(why, wl, "server refused the hello: %s", msg);
		rc = rio_err_from_wire(h.status);
	} else if (h.type != RIO_T_HELLO_ACK) {
		snprintf(why, wl, "expected HELLO_ACK, got %s", rio_type_name(h.type));
		rc = RIO_E_PROTO;
	} else if ((rc = rio_hello_ack_parse(payload, h.payload_len, ack)) != RIO_OK) {
		snprintf(why, wl, "malformed HELLO_ACK");
	}
	free(payload);
	return rc;
}

static void set_link(struct rio_client *cl, struct rio_link *l)
{
	pthread_mutex_lock(&cl->lock);
	cl->link = l;
	pthread_mutex_unlock(&cl->lock);
}

static int client_connect(struct rio_client *cl, struct rio_link **out, struct rio_hello_ack *ack,
			  char *why, size_t wl)
{
	uint64_t deadline = rio_now_ms() + cl->cfg.connect_timeout_ms;
	struct rio_link *l;
	int fd = -1, rc = tcp_connect(cl, deadline, &fd, why, wl);

	if (rc != RIO_OK)
		return rc;
	l = calloc(1, sizeof(*l));
	if (!l) {
		close(fd);
		snprintf(why, wl, "out of memory");
		return RIO_E_NOMEM;
	}
	rc = rio_link_init(l, fd, cl->ctx, cl->addr, cl->cfg.max_payload);
	if (rc == RIO_OK && cl->expect_peer) {
		/* The coordinator must be the node we were told it is, not just any
		 * node of the cluster. */
		SSL_set_hostflags(l->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(l->ssl, cl->expect_peer) != 1)
			rc = RIO_E_NOMEM;
	}
	if (rc != RIO_OK)
		snprintf(why, wl, "out of memory");
	set_link(cl, l); /* from here rio_client_destroy can interrupt us */
	if (rc == RIO_OK)
		rc = rio_link_handshake(l, RIO_ROLE_CLIENT, deadline, why, wl);
	if (rc == RIO_OK)
		rc = client_hello(cl, l, deadline, ack, why, wl);
	if (rc != RIO_OK) {
		set_link(cl, NULL);
		rio_link_close(l);
		free(l);
		return rc;
	}
	*out = l;
	return RIO_OK;
}

/* ---- connection thread ----------------------------------------------------- */

static void attach(struct rio_client *cl, struct rio_link *l, const struct rio_hello_ack *ack)
{
	bool new_instance;

	l->ops = &cl->ops;
	l->version = (uint8_t)ack->version;
	l->keepalive_ms = cl->cfg.keepalive_ms < ack->keepalive_ms ? cl->cfg.keepalive_ms : ack->keepalive_ms;
	l->idle_timeout_ms = cl->cfg.idle_timeout_ms > 2 * ack->keepalive_ms ? cl->cfg.idle_timeout_ms
									  : 2 * ack->keepalive_ms;
	pthread_mutex_lock(&cl->lock);
	new_instance = cl->instance && cl->instance != ack->server_instance;
	cl->instance = ack->server_instance;
	cl->server_max_payload = ack->max_payload;
	cl->version = (uint8_t)ack->version;
	cl->goaway = false;
	snprintf(cl->peer, sizeof(cl->peer), "%s", l->peer);
	cl->link_live = true;
	for (struct rio_call *c = cl->calls; c; c = c->next) {
		if (c->done)
			continue;
		if (c->sent_earlier && new_instance && !(c->call_flags & RIO_CALL_IDEMPOTENT)) {
			/* The restarted server has no retry cache: we cannot know. */
			rio_logf(&cl->log, RIO_LOG_WARN, "rio: request %llu op %u to %s: server restarted, "
				 "outcome unknown", (unsigned long long)c->id, c->op, cl->addr);
			call_finish(c, RIO_E_INDOUBT);
			continue;
		}
		if (new_instance)
			c->sent_earlier = false; /* a new server has no cache to retry against */
		enqueue_call(cl, c);
	}
	pthread_cond_broadcast(&cl->cv);
	pthread_mutex_unlock(&cl->lock);
	rio_logf(&cl->log, RIO_LOG_INFO, "rio: connected to %s (%s) protocol v%u%s", cl->addr, l->peer,
		 l->version, new_instance ? ", new server instance" : "");
}

static void detach(struct rio_client *cl, struct rio_link *l, int rc, const char *why)
{
	bool stop;

	pthread_mutex_lock(&cl->lock);
	cl->link_live = false;
	cl->link = NULL;
	stop = cl->stop;
	pthread_mutex_unlock(&cl->lock);
	rio_link_close(l);
	pthread_mutex_lock(&cl->lock);
	/* GOAWAY promises that what this connection left unanswered was not
	 * applied here; it says nothing about earlier connections. */
	for (struct rio_call *c = cl->calls; c; c = c->next) {
		c->on_link = false;
		if (!cl->goaway)
			c->sent_earlier |= c->sent_here;
		c->sent_here = false;
	}
	pthread_mutex_unlock(&cl->lock);
	if (!stop)
		rio_logf(&cl->log, rc == RIO_E_SHUTDOWN || rc == RIO_E_CLOSED ? RIO_LOG_INFO : RIO_LOG_WARN,
			 "rio: connection to %s (%s) lost: %s; reconnecting", cl->addr, l->peer,
			 rc == RIO_E_SHUTDOWN ? "disconnect requested" : why);
	free(l);
	if (!stop && cl->cfg.on_lost)
		cl->cfg.on_lost(cl->cfg.on_lost_arg);
}

static void connect_failed(struct rio_client *cl, int rc, const char *why, unsigned backoff)
{
	bool repeat;

	pthread_mutex_lock(&cl->lock);
	repeat = cl->last_err == rc && strcmp(cl->last_why, why) == 0;
	cl->last_err = rc;
	snprintf(cl->last_why, sizeof(cl->last_why), "%s", why);
	cl->fail_seq++;
	pthread_cond_broadcast(&cl->cv);
	if (!repeat && !cl->stop)
		rio_logf(&cl->log, RIO_LOG_WARN, "rio: connect to %s failed: %s (retrying)", cl->addr, why);
	/* Back off, but wake at once for destroy. */
	uint64_t until = rio_now_ms() + backoff;
	while (!cl->stop && rio_cond_wait_until(&cl->cv, &cl->lock, until) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&cl->lock);
}

static void *client_main(void *arg)
{
	struct rio_client *cl = arg;
	unsigned backoff = FIRST_BACKOFF_MS;

	while (!stopping(cl)) {
		struct rio_hello_ack ack;
		struct rio_link *l = NULL;
		char why[256] = "";
		int rc = client_connect(cl, &l, &ack, why, sizeof(why));

		if (rc != RIO_OK) {
			if (rc != RIO_E_SHUTDOWN)
				connect_failed(cl, rc, why, backoff);
			backoff = backoff * 2 > cl->cfg.reconnect_max_ms ? cl->cfg.reconnect_max_ms : backoff * 2;
			continue;
		}
		backoff = FIRST_BACKOFF_MS;
		attach(cl, l, &ack);
		rc = rio_link_run(l, why, sizeof(why));
		detach(cl, l, rc, why);
	}
	return NULL;
}

/* ---- public API ------------------------------------------------------------ */

static void apply_defaults(struct rio_client_config *c)
{
	if (!c->connect_timeout_ms) c->connect_timeout_ms = 5000;
	if (!c->keepalive_ms) c->keepalive_ms = 5000;
	if (c->keepalive_ms < 100) c->keepalive_ms = 100;
	if (!c->idle_timeout_ms) c->idle_timeout_ms = 20000;
	if (c->idle_timeout_ms <= c->keepalive_ms) c->idle_timeout_ms = 2 * c->keepalive_ms;
	if (!c->reconnect_max_ms) c->reconnect_max_ms = 2000;
	if (c->reconnect_max_ms < FIRST_BACKOFF_MS) c->reconnect_max_ms = FIRST_BACKOFF_MS;
	if (!c->max_inflight) c->max_inflight = 256;
	if (!c->max_payload || c->max_payload > RIO_MAX_PAYLOAD) c->max_payload = RIO_MAX_PAYLOAD;
	if (c->max_payload < RIO_MIN_PAYLOAD_LIMIT) c->max_payload = RIO_MIN_PAYLOAD_LIMIT;
}

static void client_free(struct rio_client *cl)
{
	SSL_CTX_free(cl->ctx);
	pthread_cond_destroy(&cl->cv);
	pthread_mutex_destroy(&cl->lock);
	free(cl->cred_dir);
	free(cl->host);
	free(cl->expect_peer);
	free(cl);
}

int rio_client_create(const struct rio_client_config *cfg, struct rio_client **out,
		      char *err, size_t errlen)
{
	struct rio_client *cl;

	*out = NULL;
	if (!cfg || !cfg->host || !cfg->port ||
	    (cfg->expect_peer && !rio_node_name_valid(cfg->expect_peer))) {
		rio_seterr(err, errlen, "a host, a port and a valid expected node name are required");
		return RIO_E_INVAL;
	}
	cl = calloc(1, sizeof(*cl));
	if (!cl)
		return RIO_E_NOMEM;
	cl->cfg = *cfg;
	apply_defaults(&cl->cfg);
	pthread_mutex_init(&cl->lock, NULL);
	rio_cond_init(&cl->cv);
	cl->cred_dir = strdup(cfg->cred_dir ? cfg->cred_dir : RIO_DEFAULT_CRED_DIR);
	cl->host = strdup(cfg->host);
	cl->expect_peer = cfg->expect_peer ? strdup(cfg->expect_peer) : NULL;
	cl->log = (struct rio_logger){ cfg->log, cfg->log_arg };
	cl->ops = (struct rio_link_ops){ client_on_frame, NULL, client_tx_done, cl };
	cl->client_id = rio_random_u64();
	snprintf(cl->addr, sizeof(cl->addr), strchr(cfg->host, ':') ? "[%s]:%u" : "%s:%u", cfg->host, cfg->port);
	if (!cl->cred_dir || !cl->host || (cfg->expect_peer && !cl->expect_peer)) {
		client_free(cl);
		return RIO_E_NOMEM;
	}
	cl->ctx = rio_tls_ctx_new(cl->cred_dir, RIO_ROLE_CLIENT, cl->self, sizeof(cl->self), err, errlen);
	if (!cl->ctx) {
		client_free(cl);
		return RIO_E_CRED;
	}
	if (rio_thread_spawn(&cl->thread, client_main, cl) != 0) {
		rio_seterr(err, errlen, "cannot start the connection thread");
		client_free(cl);
		return RIO_E_NOMEM;
	}
	*out = cl;
	return RIO_OK;
}

/* Errors that retrying the same connection will not fix. */
static bool permanent(int err)
{
	return err == RIO_E_TLS || err == RIO_E_VERSION || err == RIO_E_PROTO || err == RIO_E_INVAL;
}

int rio_client_wait_connected(struct rio_client *cl, unsigned timeout_ms, char *err, size_t errlen)
{
	uint64_t deadline = rio_now_ms() + timeout_ms;
	uint64_t seq0;
	int rc;

	pthread_mutex_lock(&cl->lock);
	seq0 = cl->fail_seq;
	while (!cl->link_live && !cl->stop) {
		if (cl->fail_seq != seq0 && permanent(cl->last_err))
			break;
		if (rio_cond_wait_until(&cl->cv, &cl->lock, deadline) == ETIMEDOUT)
			break;
	}
	if (cl->link_live)
		rc = RIO_OK;
	else if (cl->stop)
		rc = RIO_E_SHUTDOWN;
	else
		rc = cl->last_err ? cl->last_err : RIO_E_TIMEOUT;
	if (rc != RIO_OK)
		rio_seterr(err, errlen, "%s", cl->last_err ? cl->last_why : rio_strerror(rc));
	pthread_mutex_unlock(&cl->lock);
	return rc;
}

static int wait_for_slot(struct rio_client *cl, uint64_t deadline)
{
	while (!cl->stop && cl->ncalls >= cl->cfg.max_inflight)
		if (rio_cond_wait_until(&cl->cv, &cl->lock, deadline) == ETIMEDOUT)
			return RIO_E_TIMEOUT;
	return cl->stop ? RIO_E_SHUTDOWN : RIO_OK;
}

static int run_call(struct rio_client *cl, struct rio_call *call, uint64_t deadline)
{
	int rc = wait_for_slot(cl, deadline);

	if (rc != RIO_OK)
		return rc;
	/* Ids are assigned and queued under one lock: wire order = id order. */
	call->id = ++cl->next_id;
	if (cl->calls_tail)
		cl->calls_tail->next = call;
	else
		cl->calls = call;
	cl->calls_tail = call;
	cl->ncalls++;
	if (cl->link_live)
		enqueue_call(cl, call);
	while (!call->done)
		if (rio_cond_wait_until(&call->cv, &cl->lock, deadline) == ETIMEDOUT)
			break;
	remove_call(cl, call);
	return call->done ? call->result : RIO_E_TIMEOUT;
}

/* Sends frame as op's request (see rio_client_call). The call takes over the
 * caller's reference to frame; *sent gets the call's frame back (frame
 * itself, or its copy made for a later connection), for the caller to unref.
 * A caller that keeps a reference of its own says so with caller_refs 1. */
static int call_frame(struct rio_client *cl, uint16_t op, unsigned call_flags,
		      struct rio_blob *frame, int caller_refs, struct rio_reply *reply,
		      unsigned timeout_ms, struct rio_blob **sent)
{
	struct rio_call *call;
	uint64_t deadline = rio_now_ms() + (timeout_ms ? timeout_ms : DEFAULT_CALL_TIMEOUT_MS);
	int rc;

	*sent = frame;
	call = calloc(1, sizeof(*call));
	if (!call)
		return RIO_E_NOMEM;
	call->op = op;
	call->call_flags = call_flags;
	call->frame = frame;
	call->frame_owners = 1 + caller_refs;
	rio_cond_init(&call->cv);
	pthread_mutex_lock(&cl->lock);
	cl->callers++;
	rc = run_call(cl, call, deadline);
	if (rc == RIO_OK && reply) {
		*reply = call->reply;
		call->reply.payload = NULL;
	}
	cl->callers--;
	pthread_cond_broadcast(&cl->cv);
	pthread_mutex_unlock(&cl->lock);
	rio_reply_free(&call->reply);
	*sent = call->frame;
	pthread_cond_destroy(&call->cv);
	free(call);
	return rc;
}

int rio_client_call(struct rio_client *cl, uint16_t op, unsigned call_flags,
		    const void *req, size_t req_len, struct rio_reply *reply, unsigned timeout_ms)
{
	struct rio_hdr h = { .version = RIO_VERSION_MIN, .type = RIO_T_REQUEST, .op = op };
	struct rio_blob *frame, *sent;
	int rc;

	if (reply)
		memset(reply, 0, sizeof(*reply));
	if (req_len > RIO_MAX_PAYLOAD)
		return RIO_E_TOOBIG;
	if (req_len && !req)
		return RIO_E_INVAL;
	frame = rio_frame_build(&h, req, req_len);
	if (!frame)
		return RIO_E_NOMEM;
	rc = call_frame(cl, op, call_flags, frame, 0, reply, timeout_ms, &sent);
	rio_blob_unref(sent);
	return rc;
}

/* Gives w its buffer back from frame, which carried it (the caller holds
 * one reference, the finished call's sent another): the buffer itself when
 * no connection's queue holds it any more, else a copy of its bytes. */
static int writer_take_back(struct rio_writer *w, struct rio_blob *frame, struct rio_blob *sent)
{
	if (sent == frame && atomic_load(&frame->refs) == 2) {
		w->buf = frame->data;
		frame->data = NULL; /* w's again */
		return RIO_OK;
	}
	w->buf = malloc(frame->len);
	if (!w->buf) {
		w->len = w->cap = 0;
		w->err = RIO_E_NOMEM;
		return RIO_E_NOMEM;
	}
	memcpy(w->buf, frame->data, frame->len);
	w->cap = w->len;
	return RIO_OK;
}

int rio_client_call_writer(struct rio_client *cl, uint16_t op, unsigned call_flags,
			   struct rio_writer *w, struct rio_reply *reply, unsigned timeout_ms)
{
	struct rio_hdr h = { .version = RIO_VERSION_MIN, .type = RIO_T_REQUEST, .op = op,
			     .payload_len = (uint32_t)w->len };
	struct rio_blob *frame, *sent;
	int rc, back;

	if (w->err)
		return w->err;
	if (w->head != RIO_HDR_LEN || !w->buf)
		return rio_client_call(cl, op, call_flags, rio_writer_data(w), w->len, reply, timeout_ms);
	if (reply)
		memset(reply, 0, sizeof(*reply));
	rio_hdr_encode(&h, w->buf);
	frame = rio_blob_adopt(w->buf, RIO_HDR_LEN + w->len);
	if (!frame)
		return RIO_E_NOMEM;
	w->buf = NULL;
	rio_blob_ref(frame); /* ours: its bytes stay readable whatever the call does */
	rc = call_frame(cl, op, call_flags, frame, 1, reply, timeout_ms, &sent);
	back = writer_take_back(w, frame, sent);
	rio_blob_unref(sent);
	rio_blob_unref(frame);
	if (back != RIO_OK && rc == RIO_OK) {
		rio_reply_free(reply);
		rc = back;
	}
	return rc;
}

void rio_reply_free(struct rio_reply *reply)
{
	if (!reply)
		return;
	free(reply->payload);
	reply->payload = NULL;
	reply->len = 0;
}

void rio_client_peer(struct rio_client *cl, char *buf, size_t len)
{
	pthread_mutex_lock(&cl->lock);
	snprintf(buf, len, "%s", cl->link_live ? cl->peer : "");
	pthread_mutex_unlock(&cl->lock);
}

void rio_client_disconnect(struct rio_client *cl)
{
	pthread_mutex_lock(&cl->lock);
	if (cl->link_live)
		rio_link_request_stop(cl->link);
	pthread_mutex_unlock(&cl->lock);
}

/* Under cl->lock: no more calls; the pending ones fail with RIO_E_SHUTDOWN. */
static void shutdown_locked(struct rio_client *cl)
{
	cl->stop = true;
	for (struct rio_call *c = cl->calls; c; c = c->next)
		if (!c->done)
			call_finish(c, RIO_E_SHUTDOWN);
	if (cl->link)
		rio_link_request_stop(cl->link);
	pthread_cond_broadcast(&cl->cv);
}

void rio_client_shutdown(struct rio_client *cl)
{
	if (!cl)
		return;
	pthread_mutex_lock(&cl->lock);
	shutdown_locked(cl);
	pthread_mutex_unlock(&cl->lock);
}

void rio_client_destroy(struct rio_client *cl)
{
	if (!cl)
		return;
	pthread_mutex_lock(&cl->lock);
	shutdown_locked(cl);
	while (cl->callers)
		pthread_cond_wait(&cl->cv, &cl->lock);
	pthread_mutex_unlock(&cl->lock);
	pthread_join(cl->thread, NULL);
	client_free(cl);
}
