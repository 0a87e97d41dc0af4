/* redirect-io: the TLS RPC channel between a node and a volume's coordinator.
 *
 * This is the transport only: a versioned, bounded frame envelope
 * (docs/protocol.md), TLS 1.3 with mutual authentication against a cluster CA,
 * a request/response client with retries that are applied once, and a threaded
 * server that hands each request to a callback together with the authenticated
 * node name of the peer. Operation codes and their payloads belong to the fs
 * module, which builds them with the bounds-checked rio_put_* / rio_get_*
 * helpers below.
 *
 * Threading: every object here is safe to use from several threads unless its
 * comment says otherwise. The library owns its threads and blocks all signals
 * in them (so SIGPIPE and the application's signals stay with the application).
 */
#ifndef CSVFS_RIO_H
#define CSVFS_RIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- envelope ------------------------------------------------------------ */

#define RIO_MAGIC        0x43535652u /* "CSVR" */
#define RIO_VERSION_MIN  1
#define RIO_VERSION_MAX  1
#define RIO_HDR_LEN      24
/* Largest file-data chunk one request or response carries in redirected mode. */
#define RIO_MAX_DATA     (16u << 20)
/* Largest payload: one data chunk plus room for the operation's own fields. */
#define RIO_MAX_PAYLOAD  (RIO_MAX_DATA + (64u << 10))
/* A peer must accept at least this much, or the hello is refused. */
#define RIO_MIN_PAYLOAD_LIMIT (64u << 10)
/* Payload bound for every frame type other than REQUEST and RESPONSE. */
#define RIO_CONTROL_MAX  1024
#define RIO_NODE_NAME_MAX 63
#define RIO_DEFAULT_CRED_DIR "/etc/csvfs/cluster"

enum rio_type {
	RIO_T_HELLO = 1,     /* client -> server, first frame after TLS */
	RIO_T_HELLO_ACK = 2, /* server -> client, the negotiated version */
	RIO_T_REQUEST = 3,
	RIO_T_RESPONSE = 4,  /* status = the operation's own result code */
	RIO_T_ERROR = 5,     /* status = a transport error (-RIO_E_*) */
	RIO_T_PING = 6,
	RIO_T_PONG = 7,
	RIO_T_GOAWAY = 8,    /* server: unanswered requests were not applied */
};

/* Header flags (REQUEST only; every other bit must be zero). */
#define RIO_F_RETRY      0x0001u /* re-sent after a reconnect: may be a duplicate */
#define RIO_F_IDEMPOTENT 0x0002u /* safe to apply twice: never cached for replay */
#define RIO_F_KNOWN      (RIO_F_RETRY | RIO_F_IDEMPOTENT)

struct rio_hdr {
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint16_t op;
	uint16_t status;
	uint32_t payload_len;
	uint64_t request_id;
};

/* Error codes. Values are fixed: ERROR frames carry -code on the wire. */
enum rio_err {
	RIO_OK = 0,
	RIO_E_AGAIN = -1,    /* decoder: the buffer holds only part of a frame */
	RIO_E_PROTO = -2,    /* malformed input or protocol violation */
	RIO_E_TOOBIG = -3,   /* over the payload limit */
	RIO_E_VERSION = -4,  /* no common protocol version */
	RIO_E_TIMEOUT = -5,
	RIO_E_CLOSED = -6,   /* connection closed */
	RIO_E_TLS = -7,      /* TLS handshake or peer authentication failed */
	RIO_E_NOMEM = -8,
	RIO_E_IO = -9,       /* socket error */
	RIO_E_INDOUBT = -10, /* may or may not have been applied (server restarted) */
	RIO_E_EXPIRED = -11, /* retry of a request the server no longer remembers */
	RIO_E_SHUTDOWN = -12,/* client or server is shutting down */
	RIO_E_HANDLER = -13, /* the server's handler failed */
	RIO_E_INVAL = -14,   /* bad argument or configuration */
	RIO_E_CRED = -15,    /* credential missing, unreadable or inconsistent */
	RIO_E_BUSY = -16,    /* too many connections */
	RIO_E_REMOTE = -17,  /* the peer reported an error code we do not know */
};

const char *rio_strerror(int err);
const char *rio_type_name(uint8_t type);

/* Encodes a header in network byte order into out[0..RIO_HDR_LEN). */
void rio_hdr_encode(const struct rio_hdr *h, uint8_t out[RIO_HDR_LEN]);

/* Pure, bounds-checked header decoder. Returns RIO_OK, RIO_E_AGAIN when
 * len < RIO_HDR_LEN, or RIO_E_PROTO / RIO_E_VERSION / RIO_E_TOOBIG for any
 * header that breaks a rule of docs/protocol.md (magic, version, type, flags
 * on non-requests, status/op on control frames, payload over max_payload or
 * over RIO_CONTROL_MAX for control frames). max_payload is clamped to
 * RIO_MAX_PAYLOAD. */
int rio_hdr_decode(const uint8_t *buf, size_t len, uint32_t max_payload, struct rio_hdr *out);

/* Decodes one whole frame at the start of buf. On RIO_OK, *payload points into
 * buf and *frame_len is the bytes consumed. RIO_E_AGAIN: need more bytes. */
int rio_frame_decode(const uint8_t *buf, size_t len, uint32_t max_payload,
		     struct rio_hdr *hdr, const uint8_t **payload, size_t *frame_len);

/* ---- payload field helpers ------------------------------------------------
 * Integers are big-endian. bytes = u32 length + data; str = u16 length + data
 * (no NUL on the wire). Errors are sticky: after the first failure every
 * further call fails, so a codec may write/read a whole struct and check once.
 */
struct rio_writer {
	uint8_t *buf;
	size_t head;  /* bytes reserved before the payload (frame header) */
	size_t len;   /* payload bytes written */
	size_t cap;   /* allocated bytes after head */
	size_t max;   /* payload bound */
	int err;
};

/* max bounds the payload; 0 means RIO_MAX_PAYLOAD. Memory grows on demand. */
void rio_writer_init(struct rio_writer *w, size_t max);
/* The same, with room for the frame header before the payload, so that
 * rio_client_call_writer sends the payload from where it was written. */
void rio_writer_init_frame(struct rio_writer *w, size_t max);
void rio_writer_free(struct rio_writer *w);
void rio_put_u8(struct rio_writer *w, uint8_t v);
void rio_put_u16(struct rio_writer *w, uint16_t v);
void rio_put_u32(struct rio_writer *w, uint32_t v);
void rio_put_u64(struct rio_writer *w, uint64_t v);
void rio_put_raw(struct rio_writer *w, const void *p, size_t n);
void rio_put_bytes(struct rio_writer *w, const void *p, size_t n);
void rio_put_str(struct rio_writer *w, const char *s);
/* Reserves n payload bytes and returns a pointer to them (e.g. to pread file
 * data straight into a response), or NULL on error. Valid until the next put. */
uint8_t *rio_put_space(struct rio_writer *w, size_t n);
int rio_writer_error(const struct rio_writer *w);
const uint8_t *rio_writer_data(const struct rio_writer *w);

struct rio_reader {
	const uint8_t *p;
	size_t len;
	size_t off;
	int err;
};

void rio_reader_init(struct rio_reader *r, const void *p, size_t len);
int rio_get_u8(struct rio_reader *r, uint8_t *v);
int rio_get_u16(struct rio_reader *r, uint16_t *v);
int rio_get_u32(struct rio_reader *r, uint32_t *v);
int rio_get_u64(struct rio_reader *r, uint64_t *v);
int rio_get_raw(struct rio_reader *r, void *dst, size_t n);
/* Zero-copy: *p points into the reader's buffer. Fails if the length exceeds
 * max or the bytes left. */
int rio_get_bytes(struct rio_reader *r, const uint8_t **p, uint32_t *n, uint32_t max);
/* Copies a NUL-terminated string; fails if it does not fit dstsz (with its NUL)
 * or contains a NUL byte. */
int rio_get_str(struct rio_reader *r, char *dst, size_t dstsz);
size_t rio_reader_left(const struct rio_reader *r);
/* RIO_OK only when no read failed and every byte was consumed. */
int rio_reader_end(const struct rio_reader *r);

/* ---- logging ------------------------------------------------------------- */

enum rio_log_level { RIO_LOG_ERR, RIO_LOG_WARN, RIO_LOG_INFO, RIO_LOG_DEBUG };
/* One event per call; line starts with "rio: " and has no newline. NULL in a
 * config means: write INFO and above to stderr. */
typedef void (*rio_log_fn)(void *arg, enum rio_log_level level, const char *line);

/* ---- cluster credential --------------------------------------------------
 * A credential directory holds ca.crt, node.crt, node.key (0600) and ca.crl;
 * the issuing directory also holds ca.key (0600), ca.crl and issued/ (a copy
 * of every node certificate, by serial). Keys are EC P-256. Node names
 * are 1..63 of [A-Za-z0-9._-], starting with a letter or digit, carried in the
 * node certificate's CN and as its DNS subjectAltName.
 */
#define RIO_CRED_FORCE 0x1 /* overwrite existing files */

/* Creates a new cluster CA (ca.crt, ca.key) in ca_dir (created 0700 if
 * missing). cluster_name may be NULL. */
int rio_cred_create_ca(const char *ca_dir, const char *cluster_name, unsigned flags,
		       char *err, size_t errlen);
/* Issues node.crt/node.key for node_name, signed by the CA in ca_dir, into
 * node_dir (created 0700 if missing) and copies ca.crt there. */
int rio_cred_issue_node(const char *ca_dir, const char *node_dir, const char *node_name,
			unsigned flags, char *err, size_t errlen);
/* Revokes node_name's certificates (every one recorded in ca_dir/issued), or
 * the one in cert_path when it is not NULL: adds them to ca_dir/ca.crl, which
 * every node's credential directory must then receive. *revoked: how many
 * were not listed before (0: the CRL is left as it was). */
int rio_cred_revoke(const char *ca_dir, const char *node_name, const char *cert_path,
		    unsigned *revoked, char *err, size_t errlen);
/* Loads and cross-checks a credential dir (key matches cert, cert issued by
 * ca.crt and not revoked by ca.crl when there is one, key not readable by
 * group or others); returns the node name. */
int rio_cred_check(const char *dir, char *node_name, size_t node_name_len,
		   char *err, size_t errlen);
bool rio_node_name_valid(const char *name);
/* Builds this process's TLS contexts (client and server) for a credential
 * dir now, so that a server or client started later — a node that becomes
 * the coordinator, a participant that reconnects — does not spend tens of
 * milliseconds on it. Servers and clients share the contexts while none of
 * the credential's files changes (a changed file builds fresh ones). */
int rio_tls_prepare(const char *cred_dir, char *err, size_t errlen);

/* ---- server -------------------------------------------------------------- */

struct rio_peer {
	const char *node;     /* authenticated node name from the certificate */
	const char *addr;     /* "ip:port" */
	uint64_t client_id;   /* the client's instance, stable across reconnects */
	uint8_t version;      /* negotiated protocol version */
};

/* A payload of 64 KiB to 1 MiB + 64 KiB ends on a 4096-byte boundary: a
 * trailing field of whole pages (redirected file data) can go to an O_DIRECT
 * descriptor as it is. Handlers still check the address: other sizes are not
 * aligned. */
struct rio_request {
	uint16_t op;
	uint16_t flags;       /* RIO_F_* */
	uint64_t id;
	const uint8_t *payload;
	uint32_t len;
};

struct rio_response {
	uint16_t status;          /* the operation's result; 0 by convention = success */
	struct rio_writer body;   /* bounded by the peer's payload limit */
};

/* Runs on a server worker thread; several run at once, also for one peer.
 * Must return in bounded time (shutdown joins it). Return 0 to send
 * resp as a RESPONSE; non-zero sends an ERROR RIO_E_HANDLER. Requests without
 * RIO_F_IDEMPOTENT are applied at most once per (node, client, request id):
 * a retried duplicate gets the cached reply without a second call. */
typedef int (*rio_handler_fn)(void *arg, const struct rio_peer *peer,
			      const struct rio_request *req, struct rio_response *resp);

struct rio_server_config {
	const char *cred_dir;        /* NULL: RIO_DEFAULT_CRED_DIR */
	const char *listen_addr;     /* numeric IPv4/IPv6; NULL: "127.0.0.1" */
	uint16_t port;               /* 0: ephemeral, see rio_server_port() */
	rio_handler_fn handler;
	void *handler_arg;
	rio_log_fn log;
	void *log_arg;
	/* Bounds; 0 picks the default shown. */
	unsigned max_conns;            /* 64, including connections in handshake */
	/* Connections not yet authenticated (TLS + hello) take at most
	 * max_handshakes of those slots, and at most max_handshakes_per_addr
	 * from one address, so a flood of connections from elsewhere leaves
	 * room for members. Addresses priority_addr() accepts (the cluster's
	 * members) count only against the per-address bound. */
	unsigned max_handshakes;          /* 16 */
	unsigned max_handshakes_per_addr; /* 4 */
	bool (*priority_addr)(void *arg, const char *host);
	void *priority_arg;
	unsigned workers_per_conn;     /* 4 handler threads per connection */
	unsigned max_inflight_per_conn;/* 32 requests queued or in a handler */
	size_t max_inflight_bytes;     /* 64 MiB of queued request payload per conn */
	uint32_t max_payload;          /* RIO_MAX_PAYLOAD */
	unsigned handshake_timeout_ms; /* 5000: TLS + hello */
	unsigned keepalive_ms;         /* 5000: ping a peer silent this long */
	unsigned idle_timeout_ms;      /* 20000: drop a peer silent this long */
	unsigned dedup_per_client;     /* 256 cached replies per (node, client) */
	unsigned dedup_max_clients;    /* 256 (node, client) tables */
	size_t dedup_max_bytes;        /* 64 MiB of cached replies in all */
};

struct rio_server;

struct rio_server_stats {
	uint64_t accepted;   /* authenticated connections */
	uint64_t refused;    /* TLS/auth/hello failures and over-limit connects */
	uint64_t dropped;    /* authenticated peers dropped for protocol errors */
	uint64_t requests;   /* handler calls */
	uint64_t replayed;   /* duplicates answered from the retry cache */
	uint64_t expired;    /* retries answered RIO_E_EXPIRED */
	unsigned connections;/* open now */
};

int rio_server_start(const struct rio_server_config *cfg, struct rio_server **out,
		     char *err, size_t errlen);
uint16_t rio_server_port(const struct rio_server *srv);
void rio_server_get_stats(struct rio_server *srv, struct rio_server_stats *out);
/* Stops accepting, lets running handlers finish and flushes their replies,
 * sends GOAWAY, closes every connection, joins every thread, frees srv. */
void rio_server_stop(struct rio_server *srv);

/* ---- client -------------------------------------------------------------- */

struct rio_client_config {
	const char *cred_dir;        /* NULL: RIO_DEFAULT_CRED_DIR */
	const char *host;            /* numeric address of the coordinator */
	uint16_t port;
	const char *expect_peer;     /* optional: the server's node name must match */
	rio_log_fn log;
	void *log_arg;
	/* 0 picks the default shown. */
	unsigned connect_timeout_ms;   /* 5000: TCP connect + TLS + hello */
	unsigned keepalive_ms;         /* 5000 (lowered to the server's if smaller) */
	unsigned idle_timeout_ms;      /* 20000 */
	unsigned reconnect_max_ms;     /* 2000: cap of the reconnect backoff */
	unsigned max_inflight;         /* 256 outstanding calls */
	uint32_t max_payload;          /* RIO_MAX_PAYLOAD we accept in replies */
	/* Optional: called from the connection thread each time an established
	 * connection drops (GOAWAY, EOF, error; not at shutdown), so that the
	 * owner can look for a new server at once instead of at its next poll. */
	void (*on_lost)(void *arg);
	void *on_lost_arg;
};

struct rio_client;

struct rio_reply {
	uint16_t status;     /* the operation's result code */
	uint8_t *payload;    /* malloc'd; free with rio_reply_free */
	uint32_t len;
};

#define RIO_CALL_IDEMPOTENT 0x1 /* may be applied twice; resent even to a restarted server */

/* Creates the client and its connection thread, which connects at once and
 * reconnects (with backoff) whenever the connection drops. */
int rio_client_create(const struct rio_client_config *cfg, struct rio_client **out,
		      char *err, size_t errlen);
/* Waits until connected; on failure returns the last connect error and its text. */
int rio_client_wait_connected(struct rio_client *cl, unsigned timeout_ms, char *err, size_t errlen);
/* Sends a request and waits for its reply. Returns RIO_OK with *reply filled,
 * or a RIO_E_* code (RIO_E_TIMEOUT, RIO_E_TOOBIG, RIO_E_INDOUBT, an ERROR
 * frame's code, ...). Survives reconnects: a request that may have reached the
 * server is resent with RIO_F_RETRY and the server applies it once. */
int rio_client_call(struct rio_client *cl, uint16_t op, unsigned call_flags,
		    const void *req, size_t req_len, struct rio_reply *reply,
		    unsigned timeout_ms);
/* rio_client_call with the request's payload in w, a writer from
 * rio_writer_init_frame: the frame goes out from w's own buffer, with no
 * copy. w is left as it was, ready for the same call again (a writer from
 * rio_writer_init works too, through a copy). */
int rio_client_call_writer(struct rio_client *cl, uint16_t op, unsigned call_flags,
			   struct rio_writer *w, struct rio_reply *reply, unsigned timeout_ms);
void rio_reply_free(struct rio_reply *reply);
/* Copies the authenticated server node name ("" when not connected). */
void rio_client_peer(struct rio_client *cl, char *buf, size_t len);
/* Drops the current connection as a network failure would (the connection
 * thread reconnects and retries pending calls). For failover and tests. */
void rio_client_disconnect(struct rio_client *cl);
/* Fails pending and later calls with RIO_E_SHUTDOWN without waiting (the
 * coordinator moved: callers go elsewhere); rio_client_destroy still frees. */
void rio_client_shutdown(struct rio_client *cl);
/* Fails pending calls with RIO_E_SHUTDOWN, waits for callers to return,
 * joins the connection thread and frees cl. */
void rio_client_destroy(struct rio_client *cl);

#endif
