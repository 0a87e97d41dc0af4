/* redirect-io internals shared by the module's .c files (and its unit test).
 * Other modules include only rio.h. */
#ifndef CSVFS_RIO_IMPL_H
#define CSVFS_RIO_IMPL_H

#include "redirect-io/rio.h"

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <time.h>

#define RIO_ADDR_MAX 64
#define RIO_ERROR_MSG_MAX 200

/* ---- refcounted frame bytes (shared by a tx queue, a call and the retry cache) */
struct rio_blob {
	atomic_int refs;
	size_t len;
	uint8_t *data;
};

struct rio_blob *rio_blob_adopt(uint8_t *data, size_t len);
struct rio_blob *rio_blob_ref(struct rio_blob *b);
void rio_blob_unref(struct rio_blob *b);
/* A frame: h (payload_len is set here) followed by a copy of payload. */
struct rio_blob *rio_frame_build(const struct rio_hdr *h, const void *payload, size_t len);
/* A frame whose payload was written into a writer initialised with
 * rio_writer_init_frame (rio.h); takes the writer's buffer. */
struct rio_blob *rio_frame_from_writer(struct rio_hdr *h, struct rio_writer *w);

/* ---- payload buffers of received frames
 * A payload of RIO_POOL_MIN_PAYLOAD..RIO_POOL_BUF bytes (redirected file
 * data) is placed so that it ends on a page boundary, in a page-aligned
 * buffer of RIO_POOL_BUF bytes that the pool keeps for reuse: a trailing field
 * of whole pages is then ready for O_DIRECT as it is (rio.h, rio_request),
 * and no request pays for a fresh mmap, its page faults and its munmap. Other
 * sizes, and every payload when pool is NULL, are plain malloc/free. */
#define RIO_PAGE_SIZE 4096u
#define RIO_POOL_MIN_PAYLOAD (64u << 10)
#define RIO_POOL_BUF ((1u << 20) + (64u << 10))
#define RIO_POOL_KEEP 16 /* free buffers kept at most (17 MiB) */

struct rio_bufpool {
	pthread_mutex_t lock;
	unsigned nfree;
	void *free_bufs[RIO_POOL_KEEP];
};

void rio_bufpool_init(struct rio_bufpool *p);
void rio_bufpool_destroy(struct rio_bufpool *p);
/* NULL when out of memory. len 0 gives NULL too (no payload). */
uint8_t *rio_payload_alloc(struct rio_bufpool *p, uint32_t len);
/* payload from rio_payload_alloc(p, len) with the same p and len; NULL is fine. */
void rio_payload_free(struct rio_bufpool *p, uint8_t *payload, uint32_t len);

/* rio_hdr_decode, and *why names the broken rule (static string, for logs). */
int rio_hdr_decode_why(const uint8_t *buf, size_t len, uint32_t max_payload, struct rio_hdr *out,
		       const char **why);

/* ---- control payloads (pure codecs, fuzzed) */
struct rio_hello {
	uint16_t min_version;
	uint16_t max_version;
	uint64_t client_id;
	uint32_t max_payload;
};

struct rio_hello_ack {
	uint16_t version;
	uint64_t server_instance;
	uint32_t max_payload;
	uint32_t keepalive_ms;
	uint32_t idle_timeout_ms;
};

void rio_hello_put(struct rio_writer *w, const struct rio_hello *h);
int rio_hello_parse(const uint8_t *p, size_t len, struct rio_hello *out);
void rio_hello_ack_put(struct rio_writer *w, const struct rio_hello_ack *a);
int rio_hello_ack_parse(const uint8_t *p, size_t len, struct rio_hello_ack *out);
int rio_error_parse(const uint8_t *p, size_t len, char *msg, size_t msglen);
struct rio_blob *rio_error_frame(uint8_t version, uint64_t request_id, uint16_t op,
				 int err, const char *msg);
/* Highest version in both [RIO_VERSION_MIN, RIO_VERSION_MAX] and the hello's
 * range, or 0. */
uint16_t rio_version_pick(const struct rio_hello *h);
int rio_err_from_wire(uint16_t status);

/* ---- logging, time, threads */
struct rio_logger {
	rio_log_fn fn;
	void *arg;
};

void rio_logf(const struct rio_logger *lg, enum rio_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void rio_seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
uint64_t rio_now_ms(void);
uint64_t rio_random_u64(void);
/* pthread_create with every signal blocked in the new thread. */
int rio_thread_spawn(pthread_t *t, void *(*fn)(void *), void *arg);
void rio_cond_init(pthread_cond_t *c); /* CLOCK_MONOTONIC */
/* Returns ETIMEDOUT once rio_now_ms() >= deadline_ms. */
int rio_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, uint64_t deadline_ms);
void rio_sockaddr_str(const void *sa, char *out, size_t outlen);

/* ---- TLS */
/* The node name a certificate carries: its first DNS SAN, else its CN. */
int rio_cert_node_name(X509 *cert, char *out, size_t outlen);
/* dir/ca.crl checked against dir/ca.crt; *out NULL (and RIO_OK) when there is
 * no ca.crl. */
int rio_crl_load(const char *dir, X509_CRL **out, char *err, size_t errlen);
enum rio_role { RIO_ROLE_CLIENT, RIO_ROLE_SERVER };
/* A TLS 1.3-only context that trusts only <cred_dir>/ca.crt and presents
 * node.crt/node.key; every peer must present a certificate it issued. */
SSL_CTX *rio_tls_ctx_new(const char *cred_dir, enum rio_role role, char *node, size_t nodelen,
			 char *err, size_t errlen);
/* The verified peer's node name (DNS SAN, else CN), validated. */
int rio_tls_peer_name(SSL *ssl, char *out, size_t outlen);
/* Why a handshake or I/O call failed, from the verify result and error queue. */
void rio_tls_describe(SSL *ssl, int ssl_err, char *why, size_t len);
/* The identity of <cred_dir>/ca.crl as last seen, so a long-lived server
 * notices a new revocation list. */
struct rio_crl_stamp {
	bool present;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};
/* Updates *s; true when ca.crl appeared, went or was replaced since *s. */
bool rio_crl_stamp_changed(const char *cred_dir, struct rio_crl_stamp *s);
/* RIO_OK when cert still verifies under ctx's trust (CA, CRL, purpose). */
int rio_tls_still_trusted(SSL_CTX *ctx, X509 *cert, char *why, size_t len);

/* ---- one TLS connection driven by a single I/O thread (rio_link.c)
 * OpenSSL forbids concurrent calls on one SSL object, so exactly one thread
 * calls SSL_* on a link; other threads enqueue frames and wake it. The socket
 * is non-blocking and the loop never blocks on a write while data is readable,
 * so two peers writing large frames at each other cannot deadlock. */
struct rio_txitem {
	struct rio_txitem *next;
	struct rio_blob *blob;
	size_t off;
	uint64_t tag;
};

struct rio_link_ops {
	/* A complete, header-validated frame; takes ownership of payload (may be
	 * NULL when empty; from rio_payload_alloc(rx_pool, payload_len)). Non-zero
	 * closes the link; *why says why. */
	int (*on_frame)(void *arg, const struct rio_hdr *h, uint8_t *payload, char *why, size_t len);
	/* Backpressure: while true, no more frames are read. */
	bool (*rx_blocked)(void *arg);
	/* Every enqueued item is reported once: written whole, or dropped at close
	 * (started = some of its bytes reached the socket). */
	void (*tx_done)(void *arg, uint64_t tag, bool sent, bool started);
	void *arg;
};

struct rio_link {
	int fd;
	int wake_fd;
	SSL *ssl;
	char addr[RIO_ADDR_MAX];
	char peer[RIO_NODE_NAME_MAX + 1];
	char claimed[RIO_NODE_NAME_MAX + 1]; /* a refused peer certificate's name, for logs */
	uint32_t rx_max_payload;
	struct rio_bufpool *rx_pool; /* payload memory (NULL: malloc); set after init */
	uint8_t version; /* 0 until negotiated: then every frame must carry it */
	unsigned keepalive_ms;
	unsigned idle_timeout_ms;
	const struct rio_link_ops *ops;
	/* rx state: I/O thread only */
	uint8_t rx_hdr_bytes[RIO_HDR_LEN];
	size_t rx_hdr_have;
	struct rio_hdr rx_hdr;
	uint8_t *rx_payload;
	size_t rx_payload_have;
	bool rx_in_payload;
	bool want_pollout;
	uint64_t last_rx_ms;
	uint64_t last_tx_ms;
	bool broken; /* an I/O error: do not flush or shut down TLS */
	/* tx queue: lock */
	pthread_mutex_t lock;
	struct rio_txitem *tx_head, *tx_tail;
	bool tx_closed;
	atomic_bool stop;
};

int rio_link_init(struct rio_link *l, int fd, SSL_CTX *ctx, const char *addr, uint32_t rx_max_payload);
/* TLS handshake and peer identity, bounded by deadline_ms. */
int rio_link_handshake(struct rio_link *l, enum rio_role role, uint64_t deadline_ms,
		       char *why, size_t whylen);
/* Blocking helpers for the hello phase, before rio_link_run. */
int rio_link_send_now(struct rio_link *l, struct rio_blob *frame, uint64_t deadline_ms,
		      char *why, size_t whylen);
int rio_link_recv_now(struct rio_link *l, struct rio_hdr *h, uint8_t **payload,
		      uint64_t deadline_ms, char *why, size_t whylen);
/* The event loop; returns when stopped (RIO_E_SHUTDOWN) or on error (*why). */
int rio_link_run(struct rio_link *l, char *why, size_t whylen);
/* Any thread. Takes a reference to frame. RIO_E_CLOSED once the link is closing. */
int rio_link_enqueue(struct rio_link *l, struct rio_blob *frame, uint64_t tag);
void rio_link_wake(struct rio_link *l);
void rio_link_request_stop(struct rio_link *l);
/* Writes what is queued (no reading) until empty or deadline_ms. */
int rio_link_flush(struct rio_link *l, uint64_t deadline_ms);
/* Drops the queue (tx_done for each item), shuts TLS down if healthy, closes fds. */
void rio_link_close(struct rio_link *l);

/* ---- retry cache: (node, client id, request id) -> reply frame (rio_dedup.c) */
enum rio_dedup_verdict {
	RIO_DEDUP_EXECUTE,  /* new: run it, then rio_dedup_finish */
	RIO_DEDUP_REPLAY,   /* duplicate: *reply holds the cached frame */
	RIO_DEDUP_EXPIRED,  /* a retry we cannot prove was not applied */
};

struct rio_dedup;
struct rio_dedup *rio_dedup_new(unsigned per_client, unsigned max_clients, size_t max_bytes);
void rio_dedup_free(struct rio_dedup *d);
/* Waits while the same request is running on another connection: that
 * handler is bounded and its reply is what the duplicate must get. */
enum rio_dedup_verdict rio_dedup_begin(struct rio_dedup *d, const char *node, uint64_t client_id,
				       uint64_t request_id, bool retry, struct rio_blob **reply);
/* Ends an EXECUTE verdict: stores a reference to its reply frame (NULL: no
 * reply could be built; later retries get EXPIRED). */
void rio_dedup_finish(struct rio_dedup *d, const char *node, uint64_t client_id,
		      uint64_t request_id, struct rio_blob *reply);
size_t rio_dedup_bytes(struct rio_dedup *d);
unsigned rio_dedup_clients(struct rio_dedup *d);

#endif
