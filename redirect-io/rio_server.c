/* The coordinator side: accept loop, one I/O thread and a few handler
 * workers per connection, the retry cache, graceful shutdown. */
#include "redirect-io/rio_impl.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define GOAWAY_FLUSH_MS 2000

struct srv_req {
	struct srv_req *next;
	struct rio_hdr hdr;
	uint8_t *payload;
};

struct srv_conn {
	struct srv_conn *next;
	struct rio_server *srv;
	pthread_t thread;
	bool finished; /* srv->lock */
	bool handshaking; /* srv->lock: not yet authenticated */
	bool priority;    /* from an address priority_addr() accepts */
	char host[RIO_ADDR_MAX]; /* the peer's address without the port */
	struct rio_link link;
	struct rio_link_ops ops;
	uint64_t client_id;
	uint32_t peer_max_payload;
	X509 *peer_cert; /* srv->lock: set once authenticated, checked when ca.crl changes */
	/* request queue and backpressure: lock */
	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct srv_req *q_head, *q_tail;
	unsigned inflight;      /* queued, in a handler, or reply not yet written */
	size_t inflight_bytes;
	bool stop_workers;
	pthread_t *workers;
	unsigned nworkers;
};

struct rio_server {
	struct rio_server_config cfg;
	char *cred_dir;
	char node[RIO_NODE_NAME_MAX + 1];
	struct rio_logger log;
	SSL_CTX *ctx; /* the acceptor's: replaced when ca.crl changes */
	struct rio_crl_stamp crl_seen;
	int listen_fd;
	int wake_fd;
	uint16_t port;
	uint64_t instance;
	pthread_t acceptor;
	atomic_bool stopping;
	struct rio_dedup *dedup;
	struct rio_bufpool payloads; /* every connection's received payloads */
	pthread_mutex_t lock;
	struct srv_conn *conns;
	unsigned nconns;
	_Atomic uint64_t accepted, refused, dropped, requests, replayed, expired;
};

/* ---- per-connection request queue --------------------------------------- */

/* Tags must be non-zero; a reply's tag carries the request bytes it releases. */
static uint64_t charge_tag(uint32_t payload_len) { return (uint64_t)payload_len + 1; }

static void release_charge(struct srv_conn *c, uint64_t tag)
{
	pthread_mutex_lock(&c->lock);
	c->inflight--;
	c->inflight_bytes -= (size_t)(tag - 1);
	pthread_mutex_unlock(&c->lock);
	rio_link_wake(&c->link); /* reading may resume */
}

static void conn_tx_done(void *arg, uint64_t tag, bool sent, bool started)
{
	release_charge(arg, tag);
}

static bool conn_rx_blocked(void *arg)
{
	struct srv_conn *c = arg;
	bool blocked;

	pthread_mutex_lock(&c->lock);
	blocked = c->inflight >= c->srv->cfg.max_inflight_per_conn ||
		  c->inflight_bytes >= c->srv->cfg.max_inflight_bytes;
	pthread_mutex_unlock(&c->lock);
	return blocked;
}

static int conn_on_frame(void *arg, const struct rio_hdr *h, uint8_t *payload, char *why, size_t wl)
{
	struct srv_conn *c = arg;
	struct srv_req *r;

	if (h->type != RIO_T_REQUEST) {
		snprintf(why, wl, "unexpected %s frame", rio_type_name(h->type));
		rio_payload_free(&c->srv->payloads, payload, h->payload_len);
		return RIO_E_PROTO;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(why, wl, "out of memory");
		rio_payload_free(&c->srv->payloads, payload, h->payload_len);
		return RIO_E_NOMEM;
	}
	r->hdr = *h;
	r->payload = payload;
	pthread_mutex_lock(&c->lock);
	if (c->q_tail)
		c->q_tail->next = r;
	else
		c->q_head = r;
	c->q_tail = r;
	c->inflight++;
	c->inflight_bytes += h->payload_len;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->lock);
	return RIO_OK;
}

/* ---- handling one request ----------------------------------------------- */

static struct rio_blob *run_handler(struct srv_conn *c, const struct srv_req *r)
{
	struct rio_server *srv = c->srv;
	struct rio_peer peer = { c->link.peer, c->link.addr, c->client_id, c->link.version };
	struct rio_request req = { r->hdr.op, r->hdr.flags, r->hdr.request_id, r->payload, r->hdr.payload_len };
	struct rio_response resp = { .status = 0 };
	struct rio_hdr h = { .version = c->link.version, .type = RIO_T_RESPONSE,
			     .op = r->hdr.op, .request_id = r->hdr.request_id };
	struct rio_blob *reply = NULL;
	int rc;

	rio_writer_init_frame(&resp.body, c->peer_max_payload);
	atomic_fetch_add(&srv->requests, 1);
	rc = srv->cfg.handler(srv->cfg.handler_arg, &peer, &req, &resp);
	if (rc != 0) {
		reply = rio_error_frame(c->link.version, h.request_id, h.op, RIO_E_HANDLER, NULL);
	} else if (resp.body.err) {
		rio_logf(&srv->log, RIO_LOG_WARN, "rio: reply to %s (%s) op %u: %s", c->link.addr,
			 c->link.peer, h.op, rio_strerror(resp.body.err));
		reply = rio_error_frame(c->link.version, h.request_id, h.op,
					resp.body.err == RIO_E_TOOBIG ? RIO_E_TOOBIG : RIO_E_HANDLER,
					"reply could not be built");
	} else {
		h.status = resp.status;
		reply = rio_frame_from_writer(&h, &resp.body);
	}
	rio_writer_free(&resp.body);
	return reply;
}

static void send_reply(struct srv_conn *c, const struct srv_req *r, struct rio_blob *reply)
{
	uint64_t tag = charge_tag(r->hdr.payload_len);

	if (!reply || rio_link_enqueue(&c->link, reply, tag) != RIO_OK)
		release_charge(c, tag);
	rio_blob_unref(reply);
}

static void handle_request(struct srv_conn *c, struct srv_req *r)
{
	struct rio_server *srv = c->srv;
	struct rio_blob *reply = NULL;
	bool idempotent = r->hdr.flags & RIO_F_IDEMPOTENT;
	enum rio_dedup_verdict v = RIO_DEDUP_EXECUTE;

	if (!idempotent)
		v = rio_dedup_begin(srv->dedup, c->link.peer, c->client_id, r->hdr.request_id,
				    r->hdr.flags & RIO_F_RETRY, &reply);
	switch (v) {
	case RIO_DEDUP_REPLAY:
		atomic_fetch_add(&srv->replayed, 1);
		rio_logf(&srv->log, RIO_LOG_DEBUG, "rio: replayed reply to %s (%s) request %llu",
			 c->link.addr, c->link.peer, (unsigned long long)r->hdr.request_id);
		break;
	case RIO_DEDUP_EXPIRED:
		atomic_fetch_add(&srv->expired, 1);
		rio_logf(&srv->log, RIO_LOG_WARN, "rio: %s (%s) retried request %llu which is no longer cached",
			 c->link.addr, c->link.peer, (unsigned long long)r->hdr.request_id);
		reply = rio_error_frame(c->link.version, r->hdr.request_id, r->hdr.op, RIO_E_EXPIRED, NULL);
		break;
	case RIO_DEDUP_EXECUTE:
		reply = run_handler(c, r);
		if (!idempotent)
			rio_dedup_finish(srv->dedup, c->link.peer, c->client_id, r->hdr.request_id, reply);
		break;
	}
	send_reply(c, r, reply);
}

static void *worker_main(void *arg)
{
	struct srv_conn *c = arg;

	for (;;) {
		struct srv_req *r;

		pthread_mutex_lock(&c->lock);
		while (!c->q_head && !c->stop_workers)
			pthread_cond_wait(&c->cv, &c->lock);
		if (c->stop_workers) {
			pthread_mutex_unlock(&c->lock);
			return NULL;
		}
		r = c->q_head;
		c->q_head = r->next;
		if (!c->q_head)
			c->q_tail = NULL;
		pthread_mutex_unlock(&c->lock);
		handle_request(c, r);
		rio_payload_free(&c->srv->payloads, r->payload, r->hdr.payload_len);
		free(r);
	}
}

static int start_workers(struct srv_conn *c)
{
	unsigned n = c->srv->cfg.workers_per_conn;

	c->workers = calloc(n, sizeof(*c->workers));
	if (!c->workers)
		return RIO_E_NOMEM;
	for (; c->nworkers < n; c->nworkers++)
		if (rio_thread_spawn(&c->workers[c->nworkers], worker_main, c) != 0)
			return c->nworkers ? RIO_OK : RIO_E_NOMEM;
	return RIO_OK;
}

/* Running handlers finish (their replies are queued); requests not started
 * are dropped unapplied, which is what GOAWAY promises the client. */
static void stop_workers(struct srv_conn *c)
{
	struct srv_req *r;

	pthread_mutex_lock(&c->lock);
	c->stop_workers = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
	for (unsigned i = 0; i < c->nworkers; i++)
		pthread_join(c->workers[i], NULL);
	pthread_mutex_lock(&c->lock);
	r = c->q_head;
	c->q_head = c->q_tail = NULL;
	pthread_mutex_unlock(&c->lock);
	while (r) {
		struct srv_req *next = r->next;
		release_charge(c, charge_tag(r->hdr.payload_len));
		rio_payload_free(&c->srv->payloads, r->payload, r->hdr.payload_len);
		free(r);
		r = next;
	}
}

/* ---- connection lifecycle ------------------------------------------------ */

static int refuse_hello(struct srv_conn *c, int err, const char *msg, uint64_t deadline,
			char *why, size_t wl)
{
	struct rio_blob *b = rio_error_frame(RIO_VERSION_MIN, 0, 0, err, msg);
	char ignored[64];

	snprintf(why, wl, "%s", msg);
	if (b)
		rio_link_send_now(&c->link, b, deadline, ignored, sizeof(ignored));
	rio_blob_unref(b);
	return err;
}

static int server_hello(struct srv_conn *c, uint64_t deadline, char *why, size_t wl)
{
	struct rio_server *srv = c->srv;
	struct rio_hello hello;
	struct rio_hello_ack ack;
	struct rio_hdr h;
	struct rio_writer w;
	struct rio_blob *b;
	uint8_t *payload = NULL;
	int rc = rio_link_recv_now(&c->link, &h, &payload, deadline, why, wl);

	if (rc != RIO_OK)
		return rc;
	if (h.type != RIO_T_HELLO)
		rc = RIO_E_PROTO;
	else
		rc = rio_hello_parse(payload, h.payload_len, &hello);
	rio_payload_free(&srv->payloads, payload, h.payload_len);
	if (rc != RIO_OK)
		return refuse_hello(c, RIO_E_PROTO, "expected a valid HELLO", deadline, why, wl);
	ack = (struct rio_hello_ack){
		.version = rio_version_pick(&hello), .server_instance = srv->instance,
		.max_payload = srv->cfg.max_payload, .keepalive_ms = srv->cfg.keepalive_ms,
		.idle_timeout_ms = srv->cfg.idle_timeout_ms,
	};
	if (!ack.version) {
		char msg[96];
		snprintf(msg, sizeof(msg), "no common protocol version: client %u-%u, server %u-%u",
			 hello.min_version, hello.max_version, RIO_VERSION_MIN, RIO_VERSION_MAX);
		return refuse_hello(c, RIO_E_VERSION, msg, deadline, why, wl);
	}
	c->client_id = hello.client_id;
	c->peer_max_payload = hello.max_payload < RIO_MAX_PAYLOAD ? hello.max_payload : RIO_MAX_PAYLOAD;
	rio_writer_init_frame(&w, RIO_CONTROL_MAX);
	rio_hello_ack_put(&w, &ack);
	h = (struct rio_hdr){ .version = RIO_VERSION_MIN, .type = RIO_T_HELLO_ACK };
	b = rio_frame_from_writer(&h, &w);
	rio_writer_free(&w);
	rc = b ? rio_link_send_now(&c->link, b, deadline, why, wl) : RIO_E_NOMEM;
	rio_blob_unref(b);
	c->link.version = (uint8_t)ack.version;
	return rc;
}

static void log_close(struct srv_conn *c, int rc, const char *why)
{
	struct rio_server *srv = c->srv;
	const char *addr = c->link.addr, *node = c->link.peer;

	switch (rc) {
	case RIO_E_SHUTDOWN:
		rio_logf(&srv->log, RIO_LOG_INFO, "rio: closed %s (%s): server stopping", addr, node);
		break;
	case RIO_E_CLOSED:
		rio_logf(&srv->log, RIO_LOG_INFO, "rio: closed %s (%s): %s", addr, node, why);
		break;
	default:
		atomic_fetch_add(&srv->dropped, 1);
		rio_logf(&srv->log, RIO_LOG_WARN, "rio: dropped %s (%s): %s", addr, node, why);
	}
}

static void serve(struct srv_conn *c)
{
	char why[256] = "";
	int rc;

	c->ops = (struct rio_link_ops){ conn_on_frame, conn_rx_blocked, conn_tx_done, c };
	c->link.ops = &c->ops;
	c->link.keepalive_ms = c->srv->cfg.keepalive_ms;
	c->link.idle_timeout_ms = c->srv->cfg.idle_timeout_ms;
	if (start_workers(c) != RIO_OK) {
		rio_logf(&c->srv->log, RIO_LOG_ERR, "rio: dropped %s (%s): cannot start workers",
			 c->link.addr, c->link.peer);
		return;
	}
	rc = rio_link_run(&c->link, why, sizeof(why));
	stop_workers(c);
	if (rc == RIO_E_SHUTDOWN) {
		struct rio_hdr h = { .version = c->link.version, .type = RIO_T_GOAWAY };
		struct rio_blob *b = rio_frame_build(&h, NULL, 0);
		if (b)
			rio_link_enqueue(&c->link, b, 0);
		rio_blob_unref(b);
		rio_link_flush(&c->link, rio_now_ms() + GOAWAY_FLUSH_MS);
	}
	log_close(c, rc, why);
}

/* Remembered for a later ca.crl; a handshake that began under the trust
 * before the last reload is checked again under the new one. */
static int keep_peer_cert(struct srv_conn *c, char *why, size_t wl)
{
	struct rio_server *srv = c->srv;
	char reason[128];
	int rc = RIO_OK;

	pthread_mutex_lock(&srv->lock);
	c->handshaking = false;
	c->peer_cert = SSL_get1_peer_certificate(c->link.ssl);
	if (SSL_get_SSL_CTX(c->link.ssl) != srv->ctx &&
	    rio_tls_still_trusted(srv->ctx, c->peer_cert, reason, sizeof(reason)) != RIO_OK) {
		snprintf(why, wl, "certificate verify failed (%s)", reason);
		rc = RIO_E_TLS;
	}
	pthread_mutex_unlock(&srv->lock);
	return rc;
}

static void *conn_main(void *arg)
{
	struct srv_conn *c = arg;
	struct rio_server *srv = c->srv;
	uint64_t deadline = rio_now_ms() + srv->cfg.handshake_timeout_ms;
	char why[256] = "";
	int rc = rio_link_handshake(&c->link, RIO_ROLE_SERVER, deadline, why, sizeof(why));

	if (rc == RIO_OK)
		rc = server_hello(c, deadline, why, sizeof(why));
	if (rc == RIO_OK)
		rc = keep_peer_cert(c, why, sizeof(why));
	if (rc == RIO_OK) {
		atomic_fetch_add(&srv->accepted, 1);
		rio_logf(&srv->log, RIO_LOG_INFO, "rio: accepted %s (%s) client %016llx protocol v%u",
			 c->link.addr, c->link.peer, (unsigned long long)c->client_id, c->link.version);
		serve(c);
	} else if (rc != RIO_E_SHUTDOWN) {
		atomic_fetch_add(&srv->refused, 1);
		if (c->link.peer[0])
			rio_logf(&srv->log, RIO_LOG_WARN, "rio: refused %s (%s): %s", c->link.addr,
				 c->link.peer, why);
		else if (c->link.claimed[0])
			rio_logf(&srv->log, RIO_LOG_WARN, "rio: refused %s (certificate names %s): %s",
				 c->link.addr, c->link.claimed, why);
		else
			rio_logf(&srv->log, RIO_LOG_WARN, "rio: refused %s: %s", c->link.addr, why);
	}
	/* Marked first: rio_server_stop must not poke a link being closed. The
	 * reaper joins this thread before freeing c. */
	pthread_mutex_lock(&srv->lock);
	c->finished = true;
	srv->nconns--;
	pthread_mutex_unlock(&srv->lock);
	rio_link_close(&c->link);
	return NULL;
}

static void conn_free(struct srv_conn *c)
{
	pthread_join(c->thread, NULL);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->lock);
	X509_free(c->peer_cert);
	free(c->workers);
	free(c);
}

/* ---- a new revocation list ---------------------------------------------- */

/* Connections whose peer the new trust no longer accepts are closed; the
 * node is refused when it connects again. */
static void drop_untrusted(struct rio_server *srv)
{
	char why[128];

	pthread_mutex_lock(&srv->lock);
	for (struct srv_conn *c = srv->conns; c; c = c->next) {
		if (c->finished || !c->peer_cert ||
		    rio_tls_still_trusted(srv->ctx, c->peer_cert, why, sizeof(why)) == RIO_OK)
			continue;
		rio_logf(&srv->log, RIO_LOG_WARN, "rio: closing %s (%s): its certificate is no longer "
			 "accepted: %s", c->link.addr, c->link.peer, why);
		rio_link_request_stop(&c->link);
	}
	pthread_mutex_unlock(&srv->lock);
}

/* Called by the acceptor: a replaced ca.crl takes effect for new handshakes
 * and for the connections already open. SSL objects hold their own
 * reference to the context they were made from. */
static void reload_crl_if_changed(struct rio_server *srv)
{
	char err[512], node[RIO_NODE_NAME_MAX + 1];
	SSL_CTX *ctx;

	if (!rio_crl_stamp_changed(srv->cred_dir, &srv->crl_seen))
		return;
	ctx = rio_tls_ctx_new(srv->cred_dir, RIO_ROLE_SERVER, node, sizeof(node), err, sizeof(err));
	if (!ctx) {
		rio_logf(&srv->log, RIO_LOG_ERR, "rio: %s/ca.crl changed but the credential does not "
			 "load (%s): keeping the trust loaded before", srv->cred_dir, err);
		return;
	}
	pthread_mutex_lock(&srv->lock);
	SSL_CTX_free(srv->ctx);
	srv->ctx = ctx;
	pthread_mutex_unlock(&srv->lock);
	rio_logf(&srv->log, RIO_LOG_INFO, "rio: %s/ca.crl changed: revocation list reloaded",
		 srv->cred_dir);
	drop_untrusted(srv);
}

/* ---- accept loop --------------------------------------------------------- */

/* Joins connection threads that have ended (or all, at shutdown). */
static void reap(struct rio_server *srv, bool all)
{
	struct srv_conn *done = NULL, **pp;

	pthread_mutex_lock(&srv->lock);
	for (pp = &srv->conns; *pp;) {
		struct srv_conn *c = *pp;
		if (all || c->finished) {
			*pp = c->next;
			c->next = done;
			done = c;
		} else {
			pp = &c->next;
		}
	}
	pthread_mutex_unlock(&srv->lock);
	while (done) {
		struct srv_conn *next = done->next;
		conn_free(done);
		done = next;
	}
}

/* The address part of "a.b.c.d:port" or "[v6]:port". */
static void host_of(const char *addr, char *host, size_t len)
{
	const char *start = addr[0] == '[' ? addr + 1 : addr;
	const char *end = addr[0] == '[' ? strchr(start, ']') : strrchr(start, ':');
	size_t n = end ? (size_t)(end - start) : strlen(start);
	snprintf(host, len, "%.*s", (int)n, start);
}

/* Why a new connection from host gets no slot now (NULL: it does), under
 * srv->lock. Handshakes have their own budget inside max_conns, so that a
 * flood of connections that never authenticate cannot crowd members out. */
static const char *no_slot_for(struct rio_server *srv, const char *host, bool priority, char *why, size_t wl)
{
	unsigned pending = 0, from_host = 0;
	for (struct srv_conn *c = srv->conns; c; c = c->next) {
		if (c->finished || !c->handshaking)
			continue;
		pending += !c->priority;
		from_host += strcmp(c->host, host) == 0;
	}
	if (from_host >= srv->cfg.max_handshakes_per_addr)
		snprintf(why, wl, "%u handshakes already pending from %s (limit %u)", from_host, host,
			 srv->cfg.max_handshakes_per_addr);
	else if (!priority && pending >= srv->cfg.max_handshakes)
		snprintf(why, wl, "%u handshakes already pending (limit %u; members are let in first)", pending,
			 srv->cfg.max_handshakes);
	else if (srv->nconns >= srv->cfg.max_conns)
		snprintf(why, wl, "too many connections (limit %u)", srv->cfg.max_conns);
	else
		return NULL;
	return why;
}

static void accept_one(struct rio_server *srv)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char addr[RIO_ADDR_MAX];
	struct srv_conn *c;
	int fd = accept4(srv->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			rio_logf(&srv->log, RIO_LOG_ERR, "rio: accept: %s", strerror(errno));
		if (errno == EMFILE || errno == ENFILE)
			poll(NULL, 0, 100); /* let connections close before retrying */
		return;
	}
	rio_sockaddr_str(&ss, addr, sizeof(addr));
	char host[RIO_ADDR_MAX], why[160];
	host_of(addr, host, sizeof(host));
	bool priority = srv->cfg.priority_addr && srv->cfg.priority_addr(srv->cfg.priority_arg, host);
	pthread_mutex_lock(&srv->lock);
	if (no_slot_for(srv, host, priority, why, sizeof(why))) {
		pthread_mutex_unlock(&srv->lock);
		atomic_fetch_add(&srv->refused, 1);
		rio_logf(&srv->log, RIO_LOG_WARN, "rio: refused %s: %s", addr, why);
		close(fd);
		return;
	}
	srv->nconns++;
	pthread_mutex_unlock(&srv->lock);
	c = calloc(1, sizeof(*c));
	if (c) {
		c->srv = srv;
		c->handshaking = true;
		c->priority = priority;
		snprintf(c->host, sizeof(c->host), "%s", host);
		pthread_mutex_init(&c->lock, NULL);
		pthread_cond_init(&c->cv, NULL);
	}
	bool linked = c && rio_link_init(&c->link, fd, srv->ctx, addr, srv->cfg.max_payload) == RIO_OK;
	if (linked)
		c->link.rx_pool = &srv->payloads;
	if (!linked || rio_thread_spawn(&c->thread, conn_main, c) != 0) {
		rio_logf(&srv->log, RIO_LOG_ERR, "rio: refused %s: out of resources", addr);
		if (c) {
			rio_link_close(&c->link);
			pthread_cond_destroy(&c->cv);
			pthread_mutex_destroy(&c->lock);
			free(c);
		} else {
			close(fd);
		}
		pthread_mutex_lock(&srv->lock);
		srv->nconns--;
		pthread_mutex_unlock(&srv->lock);
		return;
	}
	pthread_mutex_lock(&srv->lock);
	c->next = srv->conns;
	srv->conns = c;
	pthread_mutex_unlock(&srv->lock);
}

static void *acceptor_main(void *arg)
{
	struct rio_server *srv = arg;

	while (!atomic_load(&srv->stopping)) {
		struct pollfd p[2] = { { srv->listen_fd, POLLIN, 0 }, { srv->wake_fd, POLLIN, 0 } };

		/* The timeout only bounds how long ended threads wait to be joined. */
		poll(p, 2, 500);
		reap(srv, false);
		reload_crl_if_changed(srv);
		if (!atomic_load(&srv->stopping) && (p[0].revents & POLLIN))
			accept_one(srv);
	}
	return NULL;
}

/* ---- start / stop -------------------------------------------------------- */

static void apply_defaults(struct rio_server_config *c)
{
	if (!c->max_conns) c->max_conns = 64;
	if (!c->max_handshakes) c->max_handshakes = 16;
	if (!c->max_handshakes_per_addr) c->max_handshakes_per_addr = 4;
	if (!c->workers_per_conn) c->workers_per_conn = 4;
	if (!c->max_inflight_per_conn) c->max_inflight_per_conn = 32;
	if (!c->max_inflight_bytes) c->max_inflight_bytes = 64u << 20;
	if (!c->max_payload || c->max_payload > RIO_MAX_PAYLOAD) c->max_payload = RIO_MAX_PAYLOAD;
	if (c->max_payload < RIO_MIN_PAYLOAD_LIMIT) c->max_payload = RIO_MIN_PAYLOAD_LIMIT;
	if (!c->handshake_timeout_ms) c->handshake_timeout_ms = 5000;
	if (!c->keepalive_ms) c->keepalive_ms = 5000;
	if (c->keepalive_ms < 100) c->keepalive_ms = 100;
	if (!c->idle_timeout_ms) c->idle_timeout_ms = 20000;
	if (c->idle_timeout_ms <= c->keepalive_ms) c->idle_timeout_ms = 2 * c->keepalive_ms;
}

static int open_listener(struct rio_server *srv, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
				  .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char port[8];
	int one = 1, rc;

	snprintf(port, sizeof(port), "%u", srv->cfg.port);
	rc = getaddrinfo(srv->cfg.listen_addr, port, &hints, &ai);
	if (rc != 0) {
		rio_seterr(err, errlen, "listen address %s: %s", srv->cfg.listen_addr, gai_strerror(rc));
		return RIO_E_INVAL;
	}
	srv->listen_fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (srv->listen_fd >= 0)
		setsockopt(srv->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (srv->listen_fd < 0 || bind(srv->listen_fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
	    listen(srv->listen_fd, 64) != 0 ||
	    getsockname(srv->listen_fd, (struct sockaddr *)&ss, &sl) != 0) {
		rio_seterr(err, errlen, "listen on %s:%s: %s", srv->cfg.listen_addr, port, strerror(errno));
		freeaddrinfo(ai);
		return RIO_E_IO;
	}
	freeaddrinfo(ai);
	srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						   : ((struct sockaddr_in *)&ss)->sin_port);
	return RIO_OK;
}

static void server_free(struct rio_server *srv)
{
	if (srv->listen_fd >= 0)
		close(srv->listen_fd);
	if (srv->wake_fd >= 0)
		close(srv->wake_fd);
	rio_dedup_free(srv->dedup);
	SSL_CTX_free(srv->ctx);
	pthread_mutex_destroy(&srv->lock);
	rio_bufpool_destroy(&srv->payloads);
	free(srv->cred_dir);
	free(srv);
}

int rio_server_start(const struct rio_server_config *cfg, struct rio_server **out,
		     char *err, size_t errlen)
{
	struct rio_server *srv;
	int rc;

	*out = NULL;
	if (!cfg || !cfg->handler) {
		rio_seterr(err, errlen, "a request handler is required");
		return RIO_E_INVAL;
	}
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return RIO_E_NOMEM;
	srv->cfg = *cfg;
	apply_defaults(&srv->cfg);
	srv->cred_dir = strdup(cfg->cred_dir ? cfg->cred_dir : RIO_DEFAULT_CRED_DIR);
	srv->cfg.cred_dir = srv->cred_dir;
	if (!srv->cfg.listen_addr)
		srv->cfg.listen_addr = "127.0.0.1";
	srv->log = (struct rio_logger){ cfg->log, cfg->log_arg };
	srv->listen_fd = -1;
	srv->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	srv->instance = rio_random_u64();
	pthread_mutex_init(&srv->lock, NULL);
	rio_bufpool_init(&srv->payloads);
	atomic_init(&srv->stopping, false);
	srv->dedup = rio_dedup_new(cfg->dedup_per_client, cfg->dedup_max_clients, cfg->dedup_max_bytes);
	rio_crl_stamp_changed(srv->cred_dir, &srv->crl_seen); /* the list loaded next */
	srv->ctx = rio_tls_ctx_new(srv->cred_dir, RIO_ROLE_SERVER, srv->node, sizeof(srv->node), err, errlen);
	rc = srv->ctx ? RIO_OK : RIO_E_CRED;
	if (rc == RIO_OK && (!srv->cred_dir || !srv->dedup || srv->wake_fd < 0)) {
		rio_seterr(err, errlen, "out of memory");
		rc = RIO_E_NOMEM;
	}
	if (rc == RIO_OK)
		rc = open_listener(srv, err, errlen);
	if (rc == RIO_OK && rio_thread_spawn(&srv->acceptor, acceptor_main, srv) != 0) {
		rio_seterr(err, errlen, "cannot start the accept thread");
		rc = RIO_E_NOMEM;
	}
	if (rc != RIO_OK) {
		server_free(srv);
		return rc;
	}
	rio_logf(&srv->log, RIO_LOG_INFO, "rio: serving on %s port %u as %s", srv->cfg.listen_addr,
		 srv->port, srv->node);
	*out = srv;
	return RIO_OK;
}

uint16_t rio_server_port(const struct rio_server *srv) { return srv->port; }

void rio_server_get_stats(struct rio_server *srv, struct rio_server_stats *out)
{
	out->accepted = atomic_load(&srv->accepted);
	out->refused = atomic_load(&srv->refused);
	out->dropped = atomic_load(&srv->dropped);
	out->requests = atomic_load(&srv->requests);
	out->replayed = atomic_load(&srv->replayed);
	out->expired = atomic_load(&srv->expired);
	pthread_mutex_lock(&srv->lock);
	out->connections = srv->nconns;
	pthread_mutex_unlock(&srv->lock);
}

void rio_server_stop(struct rio_server *srv)
{
	uint64_t one = 1;

	if (!srv)
		return;
	atomic_store(&srv->stopping, true);
	if (write(srv->wake_fd, &one, sizeof(one)) < 0) {
		/* the acceptor polls with a timeout anyway */
	}
	pthread_join(srv->acceptor, NULL);
	close(srv->listen_fd);
	srv->listen_fd = -1;
	pthread_mutex_lock(&srv->lock);
	for (struct srv_conn *c = srv->conns; c; c = c->next)
		if (!c->finished)
			rio_link_request_stop(&c->link);
	pthread_mutex_unlock(&srv->lock);
	reap(srv, true);
	rio_logf(&srv->log, RIO_LOG_INFO, "rio: server on port %u stopped", srv->port);
	server_free(srv);
}
