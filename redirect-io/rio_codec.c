/* The frame envelope and payload field codecs. Pure functions over byte
 * buffers, with no OpenSSL and no I/O, so the fuzz harness links just this. */
#include "redirect-io/rio_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const err_names[] = {
	[0] = "ok",
	[1] = "incomplete frame",
	[2] = "protocol error",
	[3] = "payload too large",
	[4] = "no common protocol version",
	[5] = "timed out",
	[6] = "connection closed",
	[7] = "TLS handshake or authentication failed",
	[8] = "out of memory",
	[9] = "I/O error",
	[10] = "request may or may not have been applied (server restarted)",
	[11] = "retried request no longer known to the server",
	[12] = "shutting down",
	[13] = "server handler failed",
	[14] = "invalid argument",
	[15] = "credential error",
	[16] = "too many connections",
	[17] = "peer reported an unknown error",
};

const char *rio_strerror(int err)
{
	unsigned i = err < 0 ? (unsigned)-err : (unsigned)err;
	if (i < sizeof(err_names) / sizeof(err_names[0]))
		return err_names[i];
	return "unknown error";
}

const char *rio_type_name(uint8_t type)
{
	switch (type) {
	case RIO_T_HELLO: return "HELLO";
	case RIO_T_HELLO_ACK: return "HELLO_ACK";
	case RIO_T_REQUEST: return "REQUEST";
	case RIO_T_RESPONSE: return "RESPONSE";
	case RIO_T_ERROR: return "ERROR";
	case RIO_T_PING: return "PING";
	case RIO_T_PONG: return "PONG";
	case RIO_T_GOAWAY: return "GOAWAY";
	default: return "UNKNOWN";
	}
}

int rio_err_from_wire(uint16_t status)
{
	int e = -(int)status;
	if (status == 0 || e < RIO_E_REMOTE)
		return RIO_E_REMOTE;
	return e;
}

/* ---- byte order ---------------------------------------------------------- */

static void be16_put(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

static void be32_put(uint8_t *p, uint32_t v)
{
	be16_put(p, (uint16_t)(v >> 16));
	be16_put(p + 2, (uint16_t)v);
}

static void be64_put(uint8_t *p, uint64_t v)
{
	be32_put(p, (uint32_t)(v >> 32));
	be32_put(p + 4, (uint32_t)v);
}

static uint16_t be16_get(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static uint32_t be32_get(const uint8_t *p)
{
	return (uint32_t)be16_get(p) << 16 | be16_get(p + 2);
}

static uint64_t be64_get(const uint8_t *p)
{
	return (uint64_t)be32_get(p) << 32 | be32_get(p + 4);
}

/* ---- header -------------------------------------------------------------- */

void rio_hdr_encode(const struct rio_hdr *h, uint8_t out[RIO_HDR_LEN])
{
	be32_put(out, RIO_MAGIC);
	out[4] = h->version;
	out[5] = h->type;
	be16_put(out + 6, h->flags);
	be16_put(out + 8, h->op);
	be16_put(out + 10, h->status);
	be32_put(out + 12, h->payload_len);
	be64_put(out + 16, h->request_id);
}

static bool is_control(uint8_t type)
{
	return type != RIO_T_REQUEST && type != RIO_T_RESPONSE;
}

/* The per-type rules of docs/protocol.md, "Header fields". *why names the
 * rule that failed (for logs). */
static int hdr_check_fields(const struct rio_hdr *h, uint32_t max_payload, const char **why)
{
	if (h->type < RIO_T_HELLO || h->type > RIO_T_GOAWAY)
		return *why = "unknown frame type", RIO_E_PROTO;
	if (h->flags & ~RIO_F_KNOWN)
		return *why = "unknown flag bits", RIO_E_PROTO;
	if (h->flags && h->type != RIO_T_REQUEST)
		return *why = "flags on a non-request frame", RIO_E_PROTO;
	if (h->type == RIO_T_REQUEST && h->status != 0)
		return *why = "status set on a request", RIO_E_PROTO;
	if (h->type == RIO_T_ERROR && h->status == 0)
		return *why = "error frame without an error code", RIO_E_PROTO;
	if (is_control(h->type) && h->type != RIO_T_ERROR && (h->op != 0 || h->status != 0))
		return *why = "op or status set on a control frame", RIO_E_PROTO;
	if ((h->type == RIO_T_PING || h->type == RIO_T_PONG || h->type == RIO_T_GOAWAY) &&
	    h->payload_len != 0)
		return *why = "payload on a PING, PONG or GOAWAY frame", RIO_E_PROTO;
	if (is_control(h->type) && h->payload_len > RIO_CONTROL_MAX)
		return *why = "control frame payload over its limit", RIO_E_TOOBIG;
	if (h->payload_len > max_payload)
		return *why = "payload length over the limit", RIO_E_TOOBIG;
	return RIO_OK;
}

int rio_hdr_decode_why(const uint8_t *buf, size_t len, uint32_t max_payload, struct rio_hdr *out,
		       const char **why)
{
	struct rio_hdr h;
	const char *dummy;
	int rc;

	if (!why)
		why = &dummy;
	*why = NULL;
	memset(out, 0, sizeof(*out));
	if (len < RIO_HDR_LEN)
		return *why = "incomplete header", RIO_E_AGAIN;
	if (be32_get(buf) != RIO_MAGIC)
		return *why = "bad magic", RIO_E_PROTO;
	h.version = buf[4];
	h.type = buf[5];
	h.flags = be16_get(buf + 6);
	h.op = be16_get(buf + 8);
	h.status = be16_get(buf + 10);
	h.payload_len = be32_get(buf + 12);
	h.request_id = be64_get(buf + 16);
	if (h.version < RIO_VERSION_MIN || h.version > RIO_VERSION_MAX)
		return *why = "unsupported protocol version", RIO_E_VERSION;
	if (max_payload > RIO_MAX_PAYLOAD)
		max_payload = RIO_MAX_PAYLOAD;
	rc = hdr_check_fields(&h, max_payload, why);
	if (rc == RIO_OK)
		*out = h;
	return rc;
}

int rio_hdr_decode(const uint8_t *buf, size_t len, uint32_t max_payload, struct rio_hdr *out)
{
	return rio_hdr_decode_why(buf, len, max_payload, out, NULL);
}

int rio_frame_decode(const uint8_t *buf, size_t len, uint32_t max_payload,
		     struct rio_hdr *hdr, const uint8_t **payload, size_t *frame_len)
{
	int rc = rio_hdr_decode(buf, len, max_payload, hdr);

	*payload = NULL;
	*frame_len = 0;
	if (rc != RIO_OK)
		return rc;
	if (len - RIO_HDR_LEN < hdr->payload_len)
		return RIO_E_AGAIN;
	*payload = buf + RIO_HDR_LEN;
	*frame_len = RIO_HDR_LEN + (size_t)hdr->payload_len;
	return RIO_OK;
}

/* ---- writer -------------------------------------------------------------- */

static void writer_init(struct rio_writer *w, size_t max, size_t head)
{
	memset(w, 0, sizeof(*w));
	w->head = head;
	w->max = max ? max : RIO_MAX_PAYLOAD;
}

void rio_writer_init(struct rio_writer *w, size_t max) { writer_init(w, max, 0); }

void rio_writer_init_frame(struct rio_writer *w, size_t max) { writer_init(w, max, RIO_HDR_LEN); }

void rio_writer_free(struct rio_writer *w)
{
	free(w->buf);
	w->buf = NULL;
	w->len = w->cap = 0;
}

static bool writer_reserve(struct rio_writer *w, size_t n)
{
	size_t want, cap;
	uint8_t *nb;

	if (w->err)
		return false;
	if (n > w->max - w->len) {
		w->err = RIO_E_TOOBIG;
		return false;
	}
	want = w->len + n;
	if (w->buf && want <= w->cap)
		return true;
	cap = w->cap ? w->cap : 256;
	while (cap < want)
		cap = cap > w->max / 2 ? w->max : cap * 2;
	nb = realloc(w->buf, w->head + cap);
	if (!nb) {
		w->err = RIO_E_NOMEM;
		return false;
	}
	w->buf = nb;
	w->cap = cap;
	return true;
}

uint8_t *rio_put_space(struct rio_writer *w, size_t n)
{
	uint8_t *p;

	if (!writer_reserve(w, n))
		return NULL;
	p = w->buf + w->head + w->len;
	w->len += n;
	return p;
}

void rio_put_raw(struct rio_writer *w, const void *src, size_t n)
{
	uint8_t *p = rio_put_space(w, n);
	if (p && n)
		memcpy(p, src, n);
}

void rio_put_u8(struct rio_writer *w, uint8_t v) { rio_put_raw(w, &v, 1); }

void rio_put_u16(struct rio_writer *w, uint16_t v)
{
	uint8_t *p = rio_put_space(w, 2);
	if (p)
		be16_put(p, v);
}

void rio_put_u32(struct rio_writer *w, uint32_t v)
{
	uint8_t *p = rio_put_space(w, 4);
	if (p)
		be32_put(p, v);
}

void rio_put_u64(struct rio_writer *w, uint64_t v)
{
	uint8_t *p = rio_put_space(w, 8);
	if (p)
		be64_put(p, v);
}

void rio_put_bytes(struct rio_writer *w, const void *src, size_t n)
{
	if (n > UINT32_MAX) {
		if (!w->err)
			w->err = RIO_E_TOOBIG;
		return;
	}
	rio_put_u32(w, (uint32_t)n);
	rio_put_raw(w, src, n);
}

void rio_put_str(struct rio_writer *w, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n > UINT16_MAX) {
		if (!w->err)
			w->err = RIO_E_TOOBIG;
		return;
	}
	rio_put_u16(w, (uint16_t)n);
	rio_put_raw(w, s, n);
}

int rio_writer_error(const struct rio_writer *w) { return w->err; }

const uint8_t *rio_writer_data(const struct rio_writer *w)
{
	return w->buf ? w->buf + w->head : NULL;
}

/* ---- reader -------------------------------------------------------------- */

void rio_reader_init(struct rio_reader *r, const void *p, size_t len)
{
	r->p = p;
	r->len = p ? len : 0;
	r->off = 0;
	r->err = RIO_OK;
}

/* Returns a pointer to the next n bytes and consumes them, or NULL (sticky). */
static const uint8_t *reader_take(struct rio_reader *r, size_t n)
{
	const uint8_t *p;

	if (r->err)
		return NULL;
	if (n > r->len - r->off) {
		r->err = RIO_E_PROTO;
		return NULL;
	}
	p = r->p + r->off;
	r->off += n;
	return p;
}

int rio_get_u8(struct rio_reader *r, uint8_t *v)
{
	const uint8_t *p = reader_take(r, 1);
	*v = p ? p[0] : 0;
	return p ? RIO_OK : RIO_E_PROTO;
}

int rio_get_u16(struct rio_reader *r, uint16_t *v)
{
	const uint8_t *p = reader_take(r, 2);
	*v = p ? be16_get(p) : 0;
	return p ? RIO_OK : RIO_E_PROTO;
}

int rio_get_u32(struct rio_reader *r, uint32_t *v)
{
	const uint8_t *p = reader_take(r, 4);
	*v = p ? be32_get(p) : 0;
	return p ? RIO_OK : RIO_E_PROTO;
}

int rio_get_u64(struct rio_reader *r, uint64_t *v)
{
	const uint8_t *p = reader_take(r, 8);
	*v = p ? be64_get(p) : 0;
	return p ? RIO_OK : RIO_E_PROTO;
}

int rio_get_raw(struct rio_reader *r, void *dst, size_t n)
{
	const uint8_t *p = reader_take(r, n);
	if (!p) {
		memset(dst, 0, n);
		return RIO_E_PROTO;
	}
	if (n)
		memcpy(dst, p, n);
	return RIO_OK;
}

int rio_get_bytes(struct rio_reader *r, const uint8_t **out, uint32_t *n, uint32_t max)
{
	uint32_t len = 0;

	*out = NULL;
	*n = 0;
	if (rio_get_u32(r, &len) != RIO_OK)
		return RIO_E_PROTO;
	if (len > max) {
		r->err = RIO_E_PROTO;
		return RIO_E_PROTO;
	}
	*out = reader_take(r, len);
	if (!*out)
		return RIO_E_PROTO;
	*n = len;
	return RIO_OK;
}

int rio_get_str(struct rio_reader *r, char *dst, size_t dstsz)
{
	uint16_t len = 0;
	const uint8_t *p;

	if (dstsz)
		dst[0] = '\0';
	if (rio_get_u16(r, &len) != RIO_OK)
		return RIO_E_PROTO;
	if ((size_t)len >= dstsz) {
		r->err = RIO_E_PROTO;
		return RIO_E_PROTO;
	}
	p = reader_take(r, len);
	if (!p)
		return RIO_E_PROTO;
	if (memchr(p, '\0', len)) {
		r->err = RIO_E_PROTO;
		return RIO_E_PROTO;
	}
	memcpy(dst, p, len);
	dst[len] = '\0';
	return RIO_OK;
}

size_t rio_reader_left(const struct rio_reader *r) { return r->err ? 0 : r->len - r->off; }

int rio_reader_end(const struct rio_reader *r)
{
	if (r->err)
		return r->err;
	return r->off == r->len ? RIO_OK : RIO_E_PROTO;
}

/* ---- frames as refcounted blobs ----------------------------------------- */

struct rio_blob *rio_blob_adopt(uint8_t *data, size_t len)
{
	struct rio_blob *b = malloc(sizeof(*b));

	if (!b)
		return NULL;
	atomic_init(&b->refs, 1);
	b->len = len;
	b->data = data;
	return b;
}

struct rio_blob *rio_blob_ref(struct rio_blob *b)
{
	atomic_fetch_add(&b->refs, 1);
	return b;
}

void rio_blob_unref(struct rio_blob *b)
{
	if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
		free(b->data);
		free(b);
	}
}

struct rio_blob *rio_frame_build(const struct rio_hdr *h, const void *payload, size_t len)
{
	struct rio_hdr hh = *h;
	uint8_t *data;
	struct rio_blob *b;

	if (len > RIO_MAX_PAYLOAD)
		return NULL;
	data = malloc(RIO_HDR_LEN + len);
	if (!data)
		return NULL;
	hh.payload_len = (uint32_t)len;
	rio_hdr_encode(&hh, data);
	if (len)
		memcpy(data + RIO_HDR_LEN, payload, len);
	b = rio_blob_adopt(data, RIO_HDR_LEN + len);
	if (!b)
		free(data);
	return b;
}

struct rio_blob *rio_frame_from_writer(struct rio_hdr *h, struct rio_writer *w)
{
	struct rio_blob *b;

	if (w->err || w->head != RIO_HDR_LEN)
		return NULL;
	if (!w->buf && !writer_reserve(w, 0)) /* an empty payload never allocated */
		return NULL;
	h->payload_len = (uint32_t)w->len;
	rio_hdr_encode(h, w->buf);
	b = rio_blob_adopt(w->buf, RIO_HDR_LEN + w->len);
	if (b)
		w->buf = NULL;
	return b;
}

/* ---- control payloads ---------------------------------------------------- */

void rio_hello_put(struct rio_writer *w, const struct rio_hello *h)
{
	rio_put_u16(w, h->min_version);
	rio_put_u16(w, h->max_version);
	rio_put_u64(w, h->client_id);
	rio_put_u32(w, h->max_payload);
}

/* Trailing bytes are ignored so later versions can append fields. */
int rio_hello_parse(const uint8_t *p, size_t len, struct rio_hello *out)
{
	struct rio_reader r;

	rio_reader_init(&r, p, len);
	rio_get_u16(&r, &out->min_version);
	rio_get_u16(&r, &out->max_version);
	rio_get_u64(&r, &out->client_id);
	rio_get_u32(&r, &out->max_payload);
	if (r.err)
		return RIO_E_PROTO;
	if (out->min_version == 0 || out->min_version > out->max_version || out->client_id == 0)
		return RIO_E_PROTO;
	if (out->max_payload < RIO_MIN_PAYLOAD_LIMIT)
		return RIO_E_PROTO;
	return RIO_OK;
}

void rio_hello_ack_put(struct rio_writer *w, const struct rio_hello_ack *a)
{
	rio_put_u16(w, a->version);
	rio_put_u64(w, a->server_instance);
	rio_put_u32(w, a->max_payload);
	rio_put_u32(w, a->keepalive_ms);
	rio_put_u32(w, a->idle_timeout_ms);
}

int rio_hello_ack_parse(const uint8_t *p, size_t len, struct rio_hello_ack *out)
{
	struct rio_reader r;

	rio_reader_init(&r, p, len);
	rio_get_u16(&r, &out->version);
	rio_get_u64(&r, &out->server_instance);
	rio_get_u32(&r, &out->max_payload);
	rio_get_u32(&r, &out->keepalive_ms);
	rio_get_u32(&r, &out->idle_timeout_ms);
	if (r.err)
		return RIO_E_PROTO;
	if (out->version < RIO_VERSION_MIN || out->version > RIO_VERSION_MAX)
		return RIO_E_VERSION;
	if (out->server_instance == 0 || out->max_payload < RIO_MIN_PAYLOAD_LIMIT)
		return RIO_E_PROTO;
	if (out->keepalive_ms < 100 || out->idle_timeout_ms <= out->keepalive_ms)
		return RIO_E_PROTO;
	return RIO_OK;
}

uint16_t rio_version_pick(const struct rio_hello *h)
{
	uint16_t hi = h->max_version < RIO_VERSION_MAX ? h->max_version : RIO_VERSION_MAX;
	uint16_t lo = h->min_version > RIO_VERSION_MIN ? h->min_version : RIO_VERSION_MIN;
	return hi >= lo ? hi : 0;
}

int rio_error_parse(const uint8_t *p, size_t len, char *msg, size_t msglen)
{
	struct rio_reader r;

	rio_reader_init(&r, p, len);
	rio_get_str(&r, msg, msglen);
	return rio_reader_end(&r);
}

struct rio_blob *rio_error_frame(uint8_t version, uint64_t request_id, uint16_t op,
				 int err, const char *msg)
{
	struct rio_hdr h = {
		.version = version, .type = RIO_T_ERROR, .op = op,
		.status = (uint16_t)(err < 0 ? -err : -RIO_E_REMOTE),
		.request_id = request_id,
	};
	char clipped[RIO_ERROR_MSG_MAX];
	struct rio_writer w;

	snprintf(clipped, sizeof(clipped), "%s", msg ? msg : rio_strerror(err));
	rio_writer_init_frame(&w, RIO_CONTROL_MAX);
	rio_put_str(&w, clipped);
	struct rio_blob *b = rio_frame_from_writer(&h, &w);
	rio_writer_free(&w);
	return b;
}
