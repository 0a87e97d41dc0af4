/* One TLS connection, driven by one I/O thread: non-blocking socket, frame
 * reassembly, a queue of outgoing frames, keepalive and idle timeout. */
#include "redirect-io/rio_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Frames handled per loop turn before the queue gets a chance to drain. */
#define RX_STEPS_PER_TURN 256

int rio_link_init(struct rio_link *l, int fd, SSL_CTX *ctx, const char *addr, uint32_t rx_max_payload)
{
	int one = 1;

	memset(l, 0, sizeof(*l));
	l->fd = fd;
	l->wake_fd = -1;
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	l->rx_max_payload = rx_max_payload;
	l->keepalive_ms = 5000;
	l->idle_timeout_ms = 20000;
	l->last_rx_ms = l->last_tx_ms = rio_now_ms();
	atomic_init(&l->stop, false);
	pthread_mutex_init(&l->lock, NULL);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	/* Small request/reply frames: do not wait for Nagle. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	l->ssl = l->wake_fd >= 0 ? SSL_new(ctx) : NULL;
	if (!l->ssl || SSL_set_fd(l->ssl, fd) != 1) {
		ERR_clear_error();
		return RIO_E_NOMEM;
	}
	SSL_set_app_data(l->ssl, l); /* for the verify callback (rio_tls.c) */
	return RIO_OK;
}

void rio_link_wake(struct rio_link *l)
{
	uint64_t one = 1;

	if (l->wake_fd >= 0 && write(l->wake_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is already non-zero, the loop will wake */
	}
}

void rio_link_request_stop(struct rio_link *l)
{
	atomic_store(&l->stop, true);
	rio_link_wake(l);
}

static void drain_wake(struct rio_link *l)
{
	uint64_t v;

	if (read(l->wake_fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing pending */
	}
}

/* Waits for events on the socket; RIO_E_SHUTDOWN if a stop is requested
 * (unless honor_stop is false), RIO_E_TIMEOUT at the deadline. */
static int wait_fd(struct rio_link *l, short events, uint64_t deadline_ms, bool honor_stop)
{
	for (;;) {
		struct pollfd p[2] = { { l->fd, events, 0 }, { l->wake_fd, POLLIN, 0 } };
		uint64_t now = rio_now_ms();
		int n;

		if (honor_stop && atomic_load(&l->stop))
			return RIO_E_SHUTDOWN;
		if (now >= deadline_ms)
			return RIO_E_TIMEOUT;
		n = poll(p, 2, (int)(deadline_ms - now));
		if (n < 0 && errno != EINTR)
			return RIO_E_IO;
		if (n > 0 && (p[1].revents & POLLIN))
			drain_wake(l);
		if (n > 0 && p[0].revents)
			return RIO_OK;
	}
}

static bool describe_is_eof(int ssl_err)
{
	unsigned long e = ERR_peek_last_error();

	if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN)
		return true;
	return e && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

/* Maps a failed SSL_read/SSL_write: RIO_E_AGAIN for would-block, else an
 * error with *why filled. */
static int ssl_io_error(struct rio_link *l, int n, char *why, size_t wl)
{
	int e = SSL_get_error(l->ssl, n);
	bool eof;

	switch (e) {
	case SSL_ERROR_WANT_READ:
		return RIO_E_AGAIN;
	case SSL_ERROR_WANT_WRITE:
		l->want_pollout = true;
		return RIO_E_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(why, wl, "peer closed the connection");
		return RIO_E_CLOSED;
	default:
		eof = describe_is_eof(e);
		l->broken = true;
		rio_tls_describe(l->ssl, e, why, wl);
		return eof ? RIO_E_CLOSED : RIO_E_TLS;
	}
}

int rio_link_handshake(struct rio_link *l, enum rio_role role, uint64_t deadline_ms,
		       char *why, size_t whylen)
{
	if (role == RIO_ROLE_SERVER)
		SSL_set_accept_state(l->ssl);
	else
		SSL_set_connect_state(l->ssl);
	for (;;) {
		int r, e, rc;

		ERR_clear_error();
		r = SSL_do_handshake(l->ssl);
		if (r == 1)
			break;
		e = SSL_get_error(l->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			rc = wait_fd(l, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline_ms, true);
			if (rc == RIO_E_TIMEOUT)
				snprintf(why, whylen, "TLS handshake timed out");
			else if (rc != RIO_OK)
				snprintf(why, whylen, "TLS handshake interrupted: %s", rio_strerror(rc));
			if (rc != RIO_OK) {
				l->broken = true;
				return rc;
			}
			continue;
		}
		l->broken = true;
		rc = describe_is_eof(e) ? RIO_E_CLOSED : RIO_E_TLS;
		rio_tls_describe(l->ssl, e, why, whylen);
		return rc;
	}
	if (rio_tls_peer_name(l->ssl, l->peer, sizeof(l->peer)) != RIO_OK) {
		snprintf(why, whylen, "peer certificate carries no valid node name");
		return RIO_E_TLS;
	}
	return RIO_OK;
}

int rio_link_send_now(struct rio_link *l, struct rio_blob *frame, uint64_t deadline_ms,
		      char *why, size_t whylen)
{
	size_t off = 0;

	while (off < frame->len) {
		int n, rc;

		ERR_clear_error();
		l->want_pollout = false;
		n = SSL_write(l->ssl, frame->data + off, (int)(frame->len - off));
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		rc = ssl_io_error(l, n, why, whylen);
		if (rc == RIO_E_AGAIN)
			rc = wait_fd(l, l->want_pollout ? POLLOUT : POLLIN, deadline_ms, true);
		if (rc == RIO_E_TIMEOUT)
			snprintf(why, whylen, "timed out sending");
		if (rc != RIO_OK)
			return rc;
	}
	l->last_tx_ms = rio_now_ms();
	return RIO_OK;
}

static void rx_reset(struct rio_link *l)
{
	l->rx_hdr_have = 0;
	l->rx_in_payload = false;
	l->rx_payload = NULL;
	l->rx_payload_have = 0;
}

static int rx_header_done(struct rio_link *l, bool *ready, char *why, size_t wl)
{
	const char *problem = NULL;
	int rc = rio_hdr_decode_why(l->rx_hdr_bytes, RIO_HDR_LEN, l->rx_max_payload, &l->rx_hdr, &problem);

	if (rc != RIO_OK) {
		snprintf(why, wl, "malformed frame header: %s", problem ? problem : rio_strerror(rc));
		return rc;
	}
	if (l->version && l->rx_hdr.version != l->version) {
		snprintf(why, wl, "malformed frame header: version %u, negotiated %u",
			 l->rx_hdr.version, l->version);
		return RIO_E_PROTO;
	}
	if (l->rx_hdr.payload_len == 0) {
		*ready = true;
		return RIO_OK;
	}
	l->rx_payload = rio_payload_alloc(l->rx_pool, l->rx_hdr.payload_len);
	if (!l->rx_payload) {
		snprintf(why, wl, "out of memory for a %u-byte frame", l->rx_hdr.payload_len);
		return RIO_E_NOMEM;
	}
	l->rx_in_payload = true;
	return RIO_OK;
}

/* One SSL_read into the frame being assembled. RIO_OK = progress (*ready
 * when a whole frame is in rx_hdr/rx_payload), RIO_E_AGAIN = would block. */
static int rx_step(struct rio_link *l, bool *ready, char *why, size_t wl)
{
	uint8_t *dst;
	size_t want;
	int n;

	*ready = false;
	if (!l->rx_in_payload) {
		dst = l->rx_hdr_bytes + l->rx_hdr_have;
		want = RIO_HDR_LEN - l->rx_hdr_have;
	} else {
		dst = l->rx_payload + l->rx_payload_have;
		want = l->rx_hdr.payload_len - l->rx_payload_have;
	}
	ERR_clear_error();
	n = SSL_read(l->ssl, dst, (int)want);
	if (n <= 0)
		return ssl_io_error(l, n, why, wl);
	l->last_rx_ms = rio_now_ms();
	if (!l->rx_in_payload) {
		l->rx_hdr_have += (size_t)n;
		return l->rx_hdr_have < RIO_HDR_LEN ? RIO_OK : rx_header_done(l, ready, why, wl);
	}
	l->rx_payload_have += (size_t)n;
	*ready = l->rx_payload_have == l->rx_hdr.payload_len;
	return RIO_OK;
}

int rio_link_recv_now(struct rio_link *l, struct rio_hdr *h, uint8_t **payload,
		      uint64_t deadline_ms, char *why, size_t whylen)
{
	for (;;) {
		bool ready;
		int rc;

		l->want_pollout = false;
		rc = rx_step(l, &ready, why, whylen);
		if (rc == RIO_OK && ready) {
			*h = l->rx_hdr;
			*payload = l->rx_payload;
			rx_reset(l);
			return RIO_OK;
		}
		if (rc == RIO_E_AGAIN)
			rc = wait_fd(l, l->want_pollout ? POLLOUT : POLLIN, deadline_ms, true);
		if (rc == RIO_E_TIMEOUT)
			snprintf(why, whylen, "timed out waiting for a frame");
		if (rc != RIO_OK)
			return rc;
	}
}

static int enqueue(struct rio_link *l, struct rio_blob *frame, uint64_t tag)
{
	struct rio_txitem *it = calloc(1, sizeof(*it));

	if (!it)
		return RIO_E_NOMEM;
	it->blob = rio_blob_ref(frame);
	it->tag = tag;
	pthread_mutex_lock(&l->lock);
	if (l->tx_closed) {
		pthread_mutex_unlock(&l->lock);
		rio_blob_unref(it->blob);
		free(it);
		return RIO_E_CLOSED;
	}
	if (l->tx_tail)
		l->tx_tail->next = it;
	else
		l->tx_head = it;
	l->tx_tail = it;
	pthread_mutex_unlock(&l->lock);
	return RIO_OK;
}

int rio_link_enqueue(struct rio_link *l, struct rio_blob *frame, uint64_t tag)
{
	int rc = enqueue(l, frame, tag);

	if (rc == RIO_OK)
		rio_link_wake(l);
	return rc;
}

static void send_control(struct rio_link *l, uint8_t type, uint64_t id)
{
	struct rio_hdr h = { .version = l->version, .type = type, .request_id = id };
	struct rio_blob *b = rio_frame_build(&h, NULL, 0);

	if (b) {
		enqueue(l, b, 0); /* tag 0: the owner is not told about control frames */
		rio_blob_unref(b);
	}
}

static void tx_finish_item(struct rio_link *l, struct rio_txitem *it, bool sent)
{
	if (it->tag && l->ops && l->ops->tx_done)
		l->ops->tx_done(l->ops->arg, it->tag, sent, it->off > 0);
	rio_blob_unref(it->blob);
	free(it);
}

/* Writes queued frames until the queue is empty or the socket is full. */
static int tx_pump(struct rio_link *l, char *why, size_t wl)
{
	for (;;) {
		struct rio_txitem *it;
		size_t left;
		int n;

		pthread_mutex_lock(&l->lock);
		it = l->tx_head;
		pthread_mutex_unlock(&l->lock);
		if (!it)
			return RIO_OK;
		left = it->blob->len - it->off;
		ERR_clear_error();
		n = SSL_write(l->ssl, it->blob->data + it->off, left > INT_MAX ? INT_MAX : (int)left);
		if (n <= 0) {
			int rc = ssl_io_error(l, n, why, wl);
			return rc == RIO_E_AGAIN ? RIO_OK : rc;
		}
		it->off += (size_t)n;
		l->last_tx_ms = rio_now_ms();
		if (it->off < it->blob->len)
			continue;
		pthread_mutex_lock(&l->lock);
		l->tx_head = it->next;
		if (!l->tx_head)
			l->tx_tail = NULL;
		pthread_mutex_unlock(&l->lock);
		tx_finish_item(l, it, true);
	}
}

static int dispatch(struct rio_link *l, const struct rio_hdr *h, uint8_t *payload, char *why, size_t wl)
{
	if (h->type == RIO_T_PING) {
		send_control(l, RIO_T_PONG, h->request_id);
		return RIO_OK;
	}
	if (h->type == RIO_T_PONG)
		return RIO_OK;
	return l->ops->on_frame(l->ops->arg, h, payload, why, wl);
}

static bool rx_blocked(struct rio_link *l)
{
	return l->ops->rx_blocked && l->ops->rx_blocked(l->ops->arg);
}

/* Reads and dispatches frames until the socket is drained, the owner applies
 * backpressure, or the per-turn budget is spent (*more). */
static int rx_pump(struct rio_link *l, bool *more, char *why, size_t wl)
{
	*more = false;
	for (int steps = 0; ; steps++) {
		bool ready;
		int rc;

		if (rx_blocked(l))
			return RIO_OK;
		if (steps == RX_STEPS_PER_TURN) {
			*more = true;
			return RIO_OK;
		}
		rc = rx_step(l, &ready, why, wl);
		if (rc == RIO_E_AGAIN)
			return RIO_OK;
		if (rc != RIO_OK)
			return rc;
		if (ready) {
			struct rio_hdr h = l->rx_hdr;
			uint8_t *payload = l->rx_payload;
			rx_reset(l);
			rc = dispatch(l, &h, payload, why, wl);
			if (rc != RIO_OK)
				return rc;
		}
	}
}

static int ms_until(uint64_t deadline, uint64_t now)
{
	if (deadline <= now)
		return 0;
	return deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
}

/* Keepalive: a side that has sent nothing for keepalive_ms sends a PING, so a
 * live peer always hears something well within its idle timeout, even while
 * it is not reading (backpressure). */
static int check_timers(struct rio_link *l, bool blocked, int *timeout, char *why, size_t wl)
{
	uint64_t now = rio_now_ms();

	if (blocked)
		l->last_rx_ms = now; /* we chose not to read: the peer is not idle */
	if (now - l->last_rx_ms >= l->idle_timeout_ms) {
		snprintf(why, wl, "idle timeout: nothing received for %u ms", l->idle_timeout_ms);
		return RIO_E_TIMEOUT;
	}
	if (now - l->last_tx_ms >= l->keepalive_ms) {
		send_control(l, RIO_T_PING, now);
		l->last_tx_ms = now; /* one ping per interval even if the socket is full */
	}
	*timeout = ms_until(l->last_tx_ms + l->keepalive_ms, now);
	if (!blocked) {
		int idle = ms_until(l->last_rx_ms + l->idle_timeout_ms, now);
		*timeout = idle < *timeout ? idle : *timeout;
	}
	return RIO_OK;
}

int rio_link_run(struct rio_link *l, char *why, size_t whylen)
{
	for (;;) {
		struct pollfd p[2];
		bool more, blocked;
		int rc, timeout;
		short ev = 0;

		if (atomic_load(&l->stop)) {
			snprintf(why, whylen, "stopped");
			return RIO_E_SHUTDOWN;
		}
		l->want_pollout = false;
		rc = rx_pump(l, &more, why, whylen);
		if (rc == RIO_OK)
			rc = tx_pump(l, why, whylen);
		blocked = rx_blocked(l);
		if (rc == RIO_OK)
			rc = check_timers(l, blocked, &timeout, why, whylen);
		if (rc != RIO_OK)
			return rc;
		if (!blocked && (more || SSL_has_pending(l->ssl)))
			timeout = 0; /* decrypted bytes that poll cannot see */
		if (!blocked)
			ev |= POLLIN;
		if (l->want_pollout)
			ev |= POLLOUT;
		p[0] = (struct pollfd){ l->fd, ev, 0 };
		p[1] = (struct pollfd){ l->wake_fd, POLLIN, 0 };
		if (poll(p, 2, timeout) < 0 && errno != EINTR) {
			snprintf(why, whylen, "poll: %s", strerror(errno));
			l->broken = true;
			return RIO_E_IO;
		}
		if (p[1].revents & POLLIN)
			drain_wake(l);
		if (blocked && (p[0].revents & (POLLERR | POLLHUP))) {
			snprintf(why, whylen, "connection lost");
			l->broken = true;
			return RIO_E_CLOSED;
		}
	}
}

int rio_link_flush(struct rio_link *l, uint64_t deadline_ms)
{
	char why[128];

	while (!l->broken) {
		bool empty;
		int rc;

		l->want_pollout = false;
		rc = tx_pump(l, why, sizeof(why));
		if (rc != RIO_OK)
			return rc;
		pthread_mutex_lock(&l->lock);
		empty = l->tx_head == NULL;
		pthread_mutex_unlock(&l->lock);
		if (empty)
			return RIO_OK;
		rc = wait_fd(l, l->want_pollout ? POLLOUT : POLLIN, deadline_ms, false);
		if (rc != RIO_OK)
			return rc;
	}
	return RIO_E_CLOSED;
}

void rio_link_close(struct rio_link *l)
{
	struct rio_txitem *it;

	pthread_mutex_lock(&l->lock);
	l->tx_closed = true;
	it = l->tx_head;
	l->tx_head = l->tx_tail = NULL;
	pthread_mutex_unlock(&l->lock);
	while (it) {
		struct rio_txitem *next = it->next;
		tx_finish_item(l, it, false);
		it = next;
	}
	if (l->ssl) {
		/* close_notify, best effort and non-blocking: a peer that is gone
		 * must not hold us here. */
		if (!l->broken && SSL_is_init_finished(l->ssl))
			SSL_shutdown(l->ssl);
		ERR_clear_error();
		SSL_free(l->ssl);
		l->ssl = NULL;
	}
	if (l->fd >= 0)
		close(l->fd);
	if (l->wake_fd >= 0)
		close(l->wake_fd);
	l->fd = l->wake_fd = -1;
	rio_payload_free(l->rx_pool, l->rx_payload, l->rx_hdr.payload_len);
	l->rx_payload = NULL;
	pthread_mutex_destroy(&l->lock);
}
