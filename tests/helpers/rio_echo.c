/* rio_echo — an echo server and clients over redirect-io, for
 * tests/integration/rio_tls.sh.
 *
 *   rio_echo server --cred DIR [--port N] [--port-file F] [--seconds N]
 *                   [--handshake-timeout MS] [--keepalive MS] [--idle-timeout MS]
 *                   [--max-conns N]
 *       Serves op 1 ECHO (payload back), op 2 WHOAMI (the caller's
 *       authenticated node name), op 3 FAIL (handler error) until SIGTERM,
 *       SIGINT or --seconds; then stops gracefully and prints its counters.
 *
 *   rio_echo client --cred DIR --port N [--host H] [--expect-peer NAME]
 *                   [--message S] [--count N] [--timeout MS]
 *       Connects, asks WHOAMI, echoes S N times and checks every reply.
 *
 *   rio_echo raw --cred DIR --port N --send magic|version|oversize|flags|request
 *                [--after-hello] [--timeout MS]
 *       A separate OpenSSL client (not the library's): authenticates, then
 *       sends one malformed frame and exits 0 when the server hangs up.
 */
#include "redirect-io/rio.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { OP_ECHO = 1, OP_WHOAMI = 2, OP_FAIL = 3 };

struct opts {
	const char *cred, *host, *port_file, *expect_peer, *message, *send;
	unsigned port, seconds, count, timeout_ms, hs_timeout, keepalive, idle, max_conns;
	int after_hello;
};

static int parse_opts(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){ .host = "127.0.0.1", .message = "hello", .count = 1, .timeout_ms = 5000 };
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		const char **s = NULL;
		unsigned *u = NULL;

		if (strcmp(a, "--after-hello") == 0) { o->after_hello = 1; continue; }
		if (strcmp(a, "--cred") == 0) s = &o->cred;
		else if (strcmp(a, "--host") == 0) s = &o->host;
		else if (strcmp(a, "--port-file") == 0) s = &o->port_file;
		else if (strcmp(a, "--expect-peer") == 0) s = &o->expect_peer;
		else if (strcmp(a, "--message") == 0) s = &o->message;
		else if (strcmp(a, "--send") == 0) s = &o->send;
		else if (strcmp(a, "--port") == 0) u = &o->port;
		else if (strcmp(a, "--seconds") == 0) u = &o->seconds;
		else if (strcmp(a, "--count") == 0) u = &o->count;
		else if (strcmp(a, "--timeout") == 0) u = &o->timeout_ms;
		else if (strcmp(a, "--handshake-timeout") == 0) u = &o->hs_timeout;
		else if (strcmp(a, "--keepalive") == 0) u = &o->keepalive;
		else if (strcmp(a, "--idle-timeout") == 0) u = &o->idle;
		else if (strcmp(a, "--max-conns") == 0) u = &o->max_conns;
		if ((!s && !u) || !v) {
			fprintf(stderr, "rio_echo: bad option %s\n", a);
			return -1;
		}
		if (s)
			*s = v;
		else
			*u = (unsigned)strtoul(v, NULL, 10);
		i++;
	}
	return 0;
}

/* ---- server ---------------------------------------------------------------- */

static int echo_handler(void *arg, const struct rio_peer *peer, const struct rio_request *req,
			struct rio_response *resp)
{
	switch (req->op) {
	case OP_ECHO:
		rio_put_raw(&resp->body, req->payload, req->len);
		return 0;
	case OP_WHOAMI:
		rio_put_str(&resp->body, peer->node);
		return 0;
	case OP_FAIL:
		return -1;
	default:
		resp->status = 1;
		return 0;
	}
}

static void log_stderr(void *arg, enum rio_log_level level, const char *line)
{
	if (level <= RIO_LOG_INFO)
		fprintf(stderr, "%s\n", line);
}

static int run_server(const struct opts *o)
{
	struct rio_server_config cfg = {
		.cred_dir = o->cred, .port = (uint16_t)o->port, .handler = echo_handler,
		.log = log_stderr, .handshake_timeout_ms = o->hs_timeout, .keepalive_ms = o->keepalive,
		.idle_timeout_ms = o->idle, .max_conns = o->max_conns,
	};
	struct rio_server *srv;
	struct rio_server_stats st;
	struct timespec ts = { 1, 0 };
	char err[512];
	sigset_t set;
	unsigned waited = 0;

	/* Blocked before the library starts threads; main takes them with sigtimedwait. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if (rio_server_start(&cfg, &srv, err, sizeof(err)) != RIO_OK) {
		fprintf(stderr, "rio_echo: %s\n", err);
		return 1;
	}
	if (o->port_file) {
		FILE *f = fopen(o->port_file, "w");
		if (!f || fprintf(f, "%u\n", rio_server_port(srv)) < 0 || fclose(f) != 0) {
			fprintf(stderr, "rio_echo: cannot write %s\n", o->port_file);
			rio_server_stop(srv);
			return 1;
		}
	}
	while (!o->seconds || waited < o->seconds) {
		if (sigtimedwait(&set, NULL, &ts) >= 0)
			break;
		waited++;
	}
	rio_server_get_stats(srv, &st);
	rio_server_stop(srv);
	printf("stats: accepted=%llu refused=%llu dropped=%llu requests=%llu\n",
	       (unsigned long long)st.accepted, (unsigned long long)st.refused,
	       (unsigned long long)st.dropped, (unsigned long long)st.requests);
	return 0;
}

/* ---- library client ---------------------------------------------------------- */

static int client_calls(struct rio_client *cl, const struct opts *o)
{
	struct rio_reply r;
	char name[RIO_NODE_NAME_MAX + 1], peer[RIO_NODE_NAME_MAX + 1];
	struct rio_reader rd;
	size_t len = strlen(o->message);
	int rc = rio_client_call(cl, OP_WHOAMI, RIO_CALL_IDEMPOTENT, NULL, 0, &r, o->timeout_ms);

	if (rc != RIO_OK) {
		fprintf(stderr, "rio_echo: whoami: %s\n", rio_strerror(rc));
		return 1;
	}
	rio_reader_init(&rd, r.payload, r.len);
	rio_get_str(&rd, name, sizeof(name));
	rc = rio_reader_end(&rd);
	rio_reply_free(&r);
	if (rc != RIO_OK) {
		fprintf(stderr, "rio_echo: malformed whoami reply\n");
		return 1;
	}
	rio_client_peer(cl, peer, sizeof(peer));
	printf("server: %s\nwhoami: %s\n", peer, name);
	for (unsigned i = 0; i < o->count; i++) {
		rc = rio_client_call(cl, OP_ECHO, 0, o->message, len, &r, o->timeout_ms);
		if (rc != RIO_OK || r.status != 0 || r.len != len || memcmp(r.payload, o->message, len)) {
			fprintf(stderr, "rio_echo: echo %u failed: %s\n", i, rio_strerror(rc));
			rio_reply_free(&r);
			return 1;
		}
		rio_reply_free(&r);
	}
	printf("echo: %s x%u\n", o->message, o->count);
	return 0;
}

static int run_client(const struct opts *o)
{
	struct rio_client_config cfg = {
		.cred_dir = o->cred, .host = o->host, .port = (uint16_t)o->port,
		.expect_peer = o->expect_peer, .log = log_stderr,
	};
	struct rio_client *cl;
	char err[512];
	int rc;

	if (rio_client_create(&cfg, &cl, err, sizeof(err)) != RIO_OK) {
		fprintf(stderr, "rio_echo: %s\n", err);
		return 1;
	}
	rc = rio_client_wait_connected(cl, o->timeout_ms, err, sizeof(err));
	if (rc != RIO_OK) {
		printf("connect failed: %s: %s\n", rio_strerror(rc), err);
		rio_client_destroy(cl);
		return 1;
	}
	rc = client_calls(cl, o);
	rio_client_destroy(cl);
	return rc;
}

/* ---- raw OpenSSL client sending malformed frames -------------------------------- */

static SSL_CTX *raw_ctx(const char *dir)
{
	char ca[4096], crt[4096], key[4096];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	snprintf(crt, sizeof(crt), "%s/node.crt", dir);
	snprintf(key, sizeof(key), "%s/node.key", dir);
	if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_use_certificate_file(ctx, crt, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		ERR_print_errors_fp(stderr);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

static int raw_connect(const struct opts *o)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)o->port) };
	struct timeval tv = { (time_t)(o->timeout_ms / 1000), (suseconds_t)(o->timeout_ms % 1000) * 1000 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || inet_pton(AF_INET, o->host, &sa.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		perror("rio_echo: connect");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static int send_frame(SSL *ssl, struct rio_hdr *h, const void *payload, size_t len)
{
	uint8_t hdr[RIO_HDR_LEN];

	h->payload_len = h->payload_len ? h->payload_len : (uint32_t)len;
	rio_hdr_encode(h, hdr);
	if (SSL_write(ssl, hdr, sizeof(hdr)) != (int)sizeof(hdr))
		return -1;
	return len && SSL_write(ssl, payload, (int)len) != (int)len ? -1 : 0;
}

/* A valid HELLO built by hand from docs/protocol.md, and its HELLO_ACK read back. */
static int raw_hello(SSL *ssl)
{
	struct rio_hdr h = { .version = 1, .type = RIO_T_HELLO };
	struct rio_writer w;
	uint8_t buf[RIO_HDR_LEN + RIO_CONTROL_MAX];
	struct rio_hdr ack;
	int rc, n, have = 0;

	rio_writer_init(&w, 64);
	rio_put_u16(&w, 1);
	rio_put_u16(&w, 1);
	rio_put_u64(&w, 0x1234);
	rio_put_u32(&w, RIO_MAX_PAYLOAD);
	rc = send_frame(ssl, &h, rio_writer_data(&w), w.len);
	rio_writer_free(&w);
	while (rc == 0 && have < RIO_HDR_LEN && (n = SSL_read(ssl, buf + have, RIO_HDR_LEN - have)) > 0)
		have += n;
	if (rc || have < RIO_HDR_LEN || rio_hdr_decode(buf, have, RIO_MAX_PAYLOAD, &ack) != RIO_OK ||
	    ack.type != RIO_T_HELLO_ACK)
		return -1;
	for (have = 0; have < (int)ack.payload_len; have += n)
		if ((n = SSL_read(ssl, buf, (int)ack.payload_len - have)) <= 0)
			return -1;
	return 0;
}

static int send_malformed(SSL *ssl, const char *kind)
{
	struct rio_hdr h = { .version = 1, .type = RIO_T_REQUEST, .op = OP_ECHO, .request_id = 1 };
	uint8_t hdr[RIO_HDR_LEN];

	if (strcmp(kind, "magic") == 0) {
		rio_hdr_encode(&h, hdr);
		memcpy(hdr, "GET ", 4);
		return SSL_write(ssl, hdr, sizeof(hdr)) == (int)sizeof(hdr) ? 0 : -1;
	}
	if (strcmp(kind, "version") == 0)
		h.version = 99;
	else if (strcmp(kind, "oversize") == 0)
		h.payload_len = RIO_MAX_PAYLOAD + 1;
	else if (strcmp(kind, "flags") == 0)
		h.flags = 0x8000;
	else if (strcmp(kind, "request") != 0) /* "request": a request where HELLO belongs */
		return -1;
	return send_frame(ssl, &h, "x", h.payload_len ? 0 : 1);
}

static int run_raw(const struct opts *o)
{
	SSL_CTX *ctx = raw_ctx(o->cred);
	SSL *ssl = NULL;
	uint8_t buf[256];
	int fd = ctx ? raw_connect(o) : -1, rc = 1, n;

	if (fd >= 0) {
		ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
	}
	if (!ssl || SSL_connect(ssl) != 1) {
		fprintf(stderr, "rio_echo: TLS handshake failed\n");
		ERR_print_errors_fp(stderr);
	} else if (o->after_hello && raw_hello(ssl) != 0) {
		fprintf(stderr, "rio_echo: hello failed\n");
	} else if (send_malformed(ssl, o->send ? o->send : "") != 0) {
		fprintf(stderr, "rio_echo: cannot send '%s'\n", o->send ? o->send : "");
	} else {
		/* Whatever the server sends (an ERROR frame at most), it must then hang up. */
		while ((n = SSL_read(ssl, buf, sizeof(buf))) > 0)
			;
		if (SSL_get_error(ssl, n) == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			printf("server kept the connection open\n");
		} else {
			printf("closed by server\n");
			rc = 0;
		}
	}
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	if (fd >= 0)
		close(fd);
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o;

	if (argc < 2 || parse_opts(argc, argv, &o) != 0 || !o.cred) {
		fprintf(stderr, "usage: rio_echo server|client|raw --cred DIR [options] (see source)\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(argv[1], "server") == 0)
		return run_server(&o);
	if (strcmp(argv[1], "client") == 0 && o.port)
		return run_client(&o);
	if (strcmp(argv[1], "raw") == 0 && o.port)
		return run_raw(&o);
	fprintf(stderr, "rio_echo: unknown mode or missing --port\n");
	return 2;
}
