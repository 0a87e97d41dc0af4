// fuzz-sources: redirect-io/rio_codec.c
/* libFuzzer harness over the redirect-io envelope decoder: a byte stream is
 * parsed frame by frame exactly as the link does, each frame's payload goes
 * through the control-payload decoders and a walk with the field readers.
 * Invariants checked beyond "no crash": a decoded header re-encodes to the
 * same bytes, and a decoded string/bytes field re-encodes to what was read. */
#include "redirect-io/rio_impl.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static void check_reencode_str(const uint8_t *consumed, const char *s)
{
	struct rio_writer w;

	rio_writer_init(&w, 0);
	rio_put_str(&w, s);
	CHECK(rio_writer_error(&w) == RIO_OK && memcmp(rio_writer_data(&w), consumed, w.len) == 0);
	rio_writer_free(&w);
}

static void check_reencode_bytes(const uint8_t *consumed, const uint8_t *p, uint32_t n)
{
	struct rio_writer w;

	rio_writer_init(&w, 0);
	rio_put_bytes(&w, p, n);
	CHECK(rio_writer_error(&w) == RIO_OK && memcmp(rio_writer_data(&w), consumed, w.len) == 0);
	rio_writer_free(&w);
}

/* Reads fields in an order chosen by the payload itself until one fails or
 * the payload is consumed (each successful read consumes at least a byte). */
static void walk_fields(const uint8_t *p, size_t len)
{
	struct rio_reader r;
	char s[64];
	uint8_t raw[16];

	rio_reader_init(&r, p, len);
	for (size_t i = 0; len && rio_reader_left(&r) > 0; i++) {
		const uint8_t *at = p + r.off, *bp;
		uint64_t v64;
		uint32_t v32, n;
		uint16_t v16;
		uint8_t v8;
		int rc = RIO_OK;

		switch (p[i % len] % 7) {
		case 0: rc = rio_get_u8(&r, &v8); break;
		case 1: rc = rio_get_u16(&r, &v16); break;
		case 2: rc = rio_get_u32(&r, &v32); break;
		case 3: rc = rio_get_u64(&r, &v64); break;
		case 4:
			rc = rio_get_bytes(&r, &bp, &n, 4096);
			if (rc == RIO_OK)
				check_reencode_bytes(at, bp, n);
			break;
		case 5:
			rc = rio_get_str(&r, s, sizeof(s));
			if (rc == RIO_OK)
				check_reencode_str(at, s);
			break;
		default: /* at least one byte, so every step makes progress */
			rc = rio_get_raw(&r, raw, 1 + p[i % len] % (sizeof(raw) - 1));
			break;
		}
		if (rc != RIO_OK) {
			CHECK(rio_reader_end(&r) != RIO_OK && rio_reader_left(&r) == 0);
			return;
		}
	}
}

static void decode_payload(const struct rio_hdr *h, const uint8_t *p, size_t len)
{
	struct rio_hello hello;
	struct rio_hello_ack ack;
	char msg[RIO_ERROR_MSG_MAX];

	switch (h->type) {
	case RIO_T_HELLO:
		if (rio_hello_parse(p, len, &hello) == RIO_OK)
			CHECK(hello.client_id != 0 && hello.min_version <= hello.max_version);
		break;
	case RIO_T_HELLO_ACK:
		if (rio_hello_ack_parse(p, len, &ack) == RIO_OK)
			CHECK(ack.idle_timeout_ms > ack.keepalive_ms);
		break;
	case RIO_T_ERROR:
		if (rio_error_parse(p, len, msg, sizeof(msg)) == RIO_OK)
			CHECK(strlen(msg) < sizeof(msg));
		CHECK(rio_err_from_wire(h->status) < 0);
		break;
	default:
		walk_fields(p, len);
	}
}

static void parse_stream(const uint8_t *data, size_t size, uint32_t max_payload)
{
	size_t off = 0;

	while (off < size) {
		struct rio_hdr h;
		const uint8_t *payload;
		size_t frame_len;
		uint8_t re[RIO_HDR_LEN];
		int rc = rio_frame_decode(data + off, size - off, max_payload, &h, &payload, &frame_len);

		if (rc != RIO_OK) {
			CHECK(rc == RIO_E_AGAIN || rc == RIO_E_PROTO || rc == RIO_E_VERSION || rc == RIO_E_TOOBIG);
			CHECK(payload == NULL && frame_len == 0);
			return;
		}
		CHECK(frame_len == RIO_HDR_LEN + (size_t)h.payload_len && frame_len <= size - off);
		CHECK(h.payload_len <= max_payload);
		rio_hdr_encode(&h, re);
		CHECK(memcmp(re, data + off, RIO_HDR_LEN) == 0);
		decode_payload(&h, payload, h.payload_len);
		off += frame_len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A heap copy of exactly size bytes, so any over-read hits a redzone. */
	uint8_t *copy = malloc(size ? size : 1);

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	parse_stream(copy, size, RIO_MAX_PAYLOAD);
	parse_stream(copy, size, 64); /* a tight limit reaches the TOOBIG paths */
	free(copy);
	return 0;
}
