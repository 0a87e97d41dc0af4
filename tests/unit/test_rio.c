/* redirect-io: envelope and field codecs, retry cache, credentials, and the
 * client/server over real TLS on 127.0.0.1. Includes the module's private
 * header to test the retry cache and hello codecs directly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "redirect-io/rio_impl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- fixtures ---------------------------------------------------------------- */

static char tmpdir[64];
static char dir_ca[128], dir_a[128], dir_b[128], dir_ca2[128], dir_evil[128];

static void path(char *out, size_t len, const char *leaf)
{
	snprintf(out, len, "%s/%s", tmpdir, leaf);
}

static int creds_setup(void **state)
{
	char err[256];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_rio.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	path(dir_ca, sizeof(dir_ca), "ca");
	path(dir_a, sizeof(dir_a), "node-a");
	path(dir_b, sizeof(dir_b), "node-b");
	path(dir_ca2, sizeof(dir_ca2), "ca2");
	path(dir_evil, sizeof(dir_evil), "evil");
	if (rio_cred_create_ca(dir_ca, "unit", 0, err, sizeof(err)) ||
	    rio_cred_issue_node(dir_ca, dir_a, "node-a", 0, err, sizeof(err)) ||
	    rio_cred_issue_node(dir_ca, dir_b, "node-b", 0, err, sizeof(err)) ||
	    rio_cred_create_ca(dir_ca2, "other", 0, err, sizeof(err)) ||
	    rio_cred_issue_node(dir_ca2, dir_evil, "node-b", 0, err, sizeof(err))) {
		fprintf(stderr, "creds_setup: %s\n", err);
		return -1;
	}
	return 0;
}

static int creds_teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Log lines captured for assertions. */
struct logbuf {
	pthread_mutex_t lock;
	char text[16384];
	size_t len;
};

static void capture_log(void *arg, enum rio_log_level level, const char *line)
{
	struct logbuf *lb = arg;

	pthread_mutex_lock(&lb->lock);
	int n = snprintf(lb->text + lb->len, sizeof(lb->text) - lb->len, "%s\n", line);
	if (n > 0 && (size_t)n < sizeof(lb->text) - lb->len)
		lb->len += (size_t)n;
	pthread_mutex_unlock(&lb->lock);
}

static bool log_has(struct logbuf *lb, const char *needle)
{
	bool has;

	pthread_mutex_lock(&lb->lock);
	has = strstr(lb->text, needle) != NULL;
	pthread_mutex_unlock(&lb->lock);
	return has;
}

static bool wait_log(struct logbuf *lb, const char *needle, unsigned ms)
{
	uint64_t end = rio_now_ms() + ms;

	while (!log_has(lb, needle) && rio_now_ms() < end)
		usleep(10000);
	return log_has(lb, needle);
}

static struct logbuf *logbuf_new(void)
{
	struct logbuf *lb = calloc(1, sizeof(*lb));
	pthread_mutex_init(&lb->lock, NULL);
	return lb;
}

static void logbuf_free(struct logbuf *lb)
{
	pthread_mutex_destroy(&lb->lock);
	free(lb);
}

/* ---- envelope ------------------------------------------------------------------ */

static void test_hdr_roundtrip(void **state)
{
	uint8_t buf[RIO_HDR_LEN];

	for (uint8_t t = RIO_T_HELLO; t <= RIO_T_GOAWAY; t++) {
		struct rio_hdr in = { .version = 1, .type = t, .request_id = 0x0102030405060708ull };
		struct rio_hdr out;
		if (t == RIO_T_REQUEST) {
			in.flags = RIO_F_RETRY | RIO_F_IDEMPOTENT;
			in.op = 0xbeef;
			in.payload_len = RIO_MAX_PAYLOAD;
		} else if (t == RIO_T_RESPONSE) {
			in.op = 7;
			in.status = 0xffff;
			in.payload_len = 12345;
		} else if (t == RIO_T_ERROR) {
			in.status = 11;
			in.payload_len = RIO_CONTROL_MAX;
		}
		rio_hdr_encode(&in, buf);
		assert_int_equal(rio_hdr_decode(buf, sizeof(buf), RIO_MAX_PAYLOAD, &out), RIO_OK);
		assert_int_equal(out.version, in.version);
		assert_int_equal(out.type, in.type);
		assert_int_equal(out.flags, in.flags);
		assert_int_equal(out.op, in.op);
		assert_int_equal(out.status, in.status);
		assert_int_equal(out.payload_len, in.payload_len);
		assert_true(out.request_id == in.request_id);
	}
	/* Network byte order, fixed offsets (docs/protocol.md). */
	assert_memory_equal(buf, "CSVR\x01\x08", 6);
	assert_int_equal(buf[16], 0x01);
	assert_int_equal(buf[23], 0x08);
}

static int decode_modified(void (*mod)(struct rio_hdr *), uint32_t max)
{
	struct rio_hdr h = { .version = 1, .type = RIO_T_REQUEST, .op = 1, .request_id = 1, .payload_len = 10 };
	uint8_t buf[RIO_HDR_LEN];
	struct rio_hdr out;

	mod(&h);
	rio_hdr_encode(&h, buf);
	return rio_hdr_decode(buf, sizeof(buf), max, &out);
}

static void m_none(struct rio_hdr *h) { (void)h; }
static void m_version0(struct rio_hdr *h) { h->version = 0; }
static void m_version2(struct rio_hdr *h) { h->version = 2; }
static void m_type0(struct rio_hdr *h) { h->type = 0; }
static void m_type9(struct rio_hdr *h) { h->type = 9; }
static void m_unknown_flag(struct rio_hdr *h) { h->flags = 0x0004; }
static void m_flag_on_response(struct rio_hdr *h) { h->type = RIO_T_RESPONSE; h->flags = RIO_F_RETRY; }
static void m_status_on_request(struct rio_hdr *h) { h->status = 1; }
static void m_error_no_status(struct rio_hdr *h) { h->type = RIO_T_ERROR; }
static void m_op_on_ping(struct rio_hdr *h) { h->type = RIO_T_PING; h->payload_len = 0; }
static void m_payload_on_pong(struct rio_hdr *h) { h->type = RIO_T_PONG; h->op = 0; h->payload_len = 1; }
static void m_big_hello(struct rio_hdr *h) { h->type = RIO_T_HELLO; h->op = 0; h->payload_len = RIO_CONTROL_MAX + 1; }
static void m_big_request(struct rio_hdr *h) { h->payload_len = RIO_MAX_PAYLOAD + 1; }
static void m_at_limit(struct rio_hdr *h) { h->payload_len = 4096; }
static void m_over_limit(struct rio_hdr *h) { h->payload_len = 4097; }

static void test_hdr_rejects(void **state)
{
	uint8_t buf[RIO_HDR_LEN] = { 0 };
	struct rio_hdr out;

	assert_int_equal(decode_modified(m_none, RIO_MAX_PAYLOAD), RIO_OK);
	assert_int_equal(rio_hdr_decode(buf, sizeof(buf), RIO_MAX_PAYLOAD, &out), RIO_E_PROTO);
	assert_int_equal(decode_modified(m_version0, RIO_MAX_PAYLOAD), RIO_E_VERSION);
	assert_int_equal(decode_modified(m_version2, RIO_MAX_PAYLOAD), RIO_E_VERSION);
	assert_int_equal(decode_modified(m_type0, RIO_MAX_PAYLOAD), RIO_E_PROTO);
	assert_int_equal(decode_modified(m_type9, RIO_MAX_PAYLOAD), RIO_E_PROTO);
	assert_int_equal(decode_modified(m_unknown_flag, RIO_MAX_PAYLOAD), RIO_E_PROTO);
	assert_int_equal(decode_modified(m_flag_on_response, RIO_MAX_PAYLOAD), RIO_E_PROTO);
	assert_int_equal(decode_modified(m_status_on_request, RIO_MAX_PAYLOAD), RIO_E_PROTO);
	assert_int_equal(decode_modified(m_error_no_status, RIO_MAX_PAYLOAD), RIO_E_PROTO);
	assert_int_equal(decode_modified(m_op_on_ping, RIO_MAX_PAYLOAD), RIO_E_PROTO);
	assert_int_equal(decode_modified(m_payload_on_pong, RIO_MAX_PAYLOAD), RIO_E_PROTO);
	assert_int_equal(decode_modified(m_big_hello, RIO_MAX_PAYLOAD), RIO_E_TOOBIG);
	assert_int_equal(decode_modified(m_big_request, UINT32_MAX), RIO_E_TOOBIG); /* max clamped */
	assert_int_equal(decode_modified(m_at_limit, 4096), RIO_OK);
	assert_int_equal(decode_modified(m_over_limit, 4096), RIO_E_TOOBIG);
	/* A rejected header leaves the output zeroed, not half-filled. */
	decode_modified(m_type9, RIO_MAX_PAYLOAD);
	assert_int_equal(rio_hdr_decode(buf, 3, RIO_MAX_PAYLOAD, &out), RIO_E_AGAIN);
	assert_int_equal(out.type, 0);
}

/* Every prefix of a valid frame is "incomplete", read from an exactly sized
 * heap copy so ASan catches any read past the end. */
static void test_frame_prefixes(void **state)
{
	struct rio_hdr h = { .version = 1, .type = RIO_T_RESPONSE, .op = 3, .request_id = 9 };
	struct rio_blob *b = rio_frame_build(&h, "payload!", 8);
	struct rio_hdr out;
	const uint8_t *payload;
	size_t consumed;

	assert_non_null(b);
	for (size_t n = 0; n <= b->len; n++) {
		uint8_t *copy = malloc(n ? n : 1);
		memcpy(copy, b->data, n);
		int rc = rio_frame_decode(copy, n, RIO_MAX_PAYLOAD, &out, &payload, &consumed);
		if (n < b->len) {
			assert_int_equal(rc, RIO_E_AGAIN);
		} else {
			assert_int_equal(rc, RIO_OK);
			assert_int_equal(consumed, b->len);
			assert_memory_equal(payload, "payload!", 8);
			assert_int_equal(out.payload_len, 8);
		}
		free(copy);
	}
	rio_blob_unref(b);
}

/* ---- payload fields -------------------------------------------------------------- */

static void test_fields_roundtrip(void **state)
{
	struct rio_writer w;
	struct rio_reader r;
	uint8_t u8;
	uint16_t u16;
	uint32_t u32, n;
	uint64_t u64;
	const uint8_t *p;
	char s[16];
	uint8_t raw[3];

	rio_writer_init(&w, 0);
	rio_put_u8(&w, 0xab);
	rio_put_u16(&w, 0xbeef);
	rio_put_u32(&w, 0xdeadbeef);
	rio_put_u64(&w, 0x0123456789abcdefull);
	rio_put_bytes(&w, "\x00\x01\x02", 3);
	rio_put_str(&w, "node-a");
	rio_put_str(&w, "");
	rio_put_raw(&w, "xyz", 3);
	memcpy(rio_put_space(&w, 2), "qq", 2);
	assert_int_equal(rio_writer_error(&w), RIO_OK);
	assert_int_equal(w.len, 1 + 2 + 4 + 8 + 4 + 3 + 2 + 6 + 2 + 3 + 2);

	rio_reader_init(&r, rio_writer_data(&w), w.len);
	assert_int_equal(rio_get_u8(&r, &u8), RIO_OK);
	assert_int_equal(rio_get_u16(&r, &u16), RIO_OK);
	assert_int_equal(rio_get_u32(&r, &u32), RIO_OK);
	assert_int_equal(rio_get_u64(&r, &u64), RIO_OK);
	assert_int_equal(rio_get_bytes(&r, &p, &n, 3), RIO_OK);
	assert_int_equal(u8, 0xab);
	assert_int_equal(u16, 0xbeef);
	assert_int_equal(u32, 0xdeadbeef);
	assert_true(u64 == 0x0123456789abcdefull);
	assert_int_equal(n, 3);
	assert_memory_equal(p, "\x00\x01\x02", 3);
	assert_int_equal(rio_get_str(&r, s, sizeof(s)), RIO_OK);
	assert_string_equal(s, "node-a");
	assert_int_equal(rio_get_str(&r, s, sizeof(s)), RIO_OK);
	assert_string_equal(s, "");
	assert_int_equal(rio_get_raw(&r, raw, 3), RIO_OK);
	assert_memory_equal(raw, "xyz", 3);
	assert_int_equal(rio_reader_end(&r), RIO_E_PROTO); /* "qq" left over */
	assert_int_equal(rio_reader_left(&r), 2);
	assert_int_equal(rio_get_raw(&r, raw, 2), RIO_OK);
	assert_int_equal(rio_reader_end(&r), RIO_OK);
	rio_writer_free(&w);
}

static void test_fields_bounds(void **state)
{
	struct rio_reader r;
	struct rio_writer w;
	uint64_t u64 = 7;
	uint32_t n;
	uint16_t u16;
	const uint8_t *p;
	char s[4];

	/* Truncated integer: fails, zeroes the output, and stays failed. */
	rio_reader_init(&r, "\x01\x02\x03", 3);
	assert_int_equal(rio_get_u64(&r, &u64), RIO_E_PROTO);
	assert_true(u64 == 0);
	assert_int_equal(rio_get_u16(&r, &u16), RIO_E_PROTO);
	assert_int_equal(rio_reader_end(&r), RIO_E_PROTO);

	/* bytes: length past the buffer, and over the caller's max. */
	rio_reader_init(&r, "\x00\x00\x00\x05" "abc", 7);
	assert_int_equal(rio_get_bytes(&r, &p, &n, 100), RIO_E_PROTO);
	assert_null(p);
	rio_reader_init(&r, "\x00\x00\x00\x03" "abc", 7);
	assert_int_equal(rio_get_bytes(&r, &p, &n, 2), RIO_E_PROTO);
	rio_reader_init(&r, "\xff\xff\xff\xff", 4);
	assert_int_equal(rio_get_bytes(&r, &p, &n, UINT32_MAX), RIO_E_PROTO);

	/* str: embedded NUL, too long for the destination, past the buffer. */
	rio_reader_init(&r, "\x00\x03" "a\0b", 5);
	assert_int_equal(rio_get_str(&r, s, sizeof(s)), RIO_E_PROTO);
	rio_reader_init(&r, "\x00\x04" "abcd", 6);
	assert_int_equal(rio_get_str(&r, s, sizeof(s)), RIO_E_PROTO);
	assert_string_equal(s, "");
	rio_reader_init(&r, "\x00\x09" "abc", 5);
	assert_int_equal(rio_get_str(&r, s, sizeof(s)), RIO_E_PROTO);
	rio_reader_init(&r, NULL, 10);
	assert_int_equal(rio_get_u8(&r, (uint8_t *)s), RIO_E_PROTO);

	/* writer: the bound is exact and errors are sticky. */
	rio_writer_init(&w, 6);
	rio_put_u32(&w, 1);
	rio_put_u16(&w, 2);
	assert_int_equal(rio_writer_error(&w), RIO_OK);
	rio_put_u8(&w, 3);
	assert_int_equal(rio_writer_error(&w), RIO_E_TOOBIG);
	assert_null(rio_put_space(&w, 0));
	assert_int_equal(w.len, 6);
	rio_writer_free(&w);
}

static void test_control_payloads(void **state)
{
	struct rio_hello h = { 1, 3, 42, RIO_MAX_PAYLOAD }, h2;
	struct rio_hello_ack a = { 1, 99, RIO_MIN_PAYLOAD_LIMIT, 100, 201 }, a2;
	struct rio_writer w;
	char msg[64];

	rio_writer_init(&w, 0);
	rio_hello_put(&w, &h);
	assert_int_equal(rio_hello_parse(rio_writer_data(&w), w.len, &h2), RIO_OK);
	assert_true(h2.min_version == 1 && h2.max_version == 3 && h2.client_id == 42 &&
		    h2.max_payload == RIO_MAX_PAYLOAD);
	for (size_t n = 0; n < w.len; n++)
		assert_int_equal(rio_hello_parse(rio_writer_data(&w), n, &h2), RIO_E_PROTO);
	rio_put_u32(&w, 0xfeed); /* a later version's extra field is ignored */
	assert_int_equal(rio_hello_parse(rio_writer_data(&w), w.len, &h2), RIO_OK);
	rio_writer_free(&w);
	assert_int_equal(rio_version_pick(&h), 1);
	h.min_version = 2;
	assert_int_equal(rio_version_pick(&h), 0);

	rio_writer_init(&w, 0);
	h = (struct rio_hello){ 2, 1, 42, RIO_MAX_PAYLOAD }; /* min > max */
	rio_hello_put(&w, &h);
	h = (struct rio_hello){ 1, 1, 0, RIO_MAX_PAYLOAD };  /* no client id */
	rio_hello_put(&w, &h);
	h = (struct rio_hello){ 1, 1, 42, 1024 };            /* limit too small */
	rio_hello_put(&w, &h);
	for (int i = 0; i < 3; i++)
		assert_int_equal(rio_hello_parse(rio_writer_data(&w) + i * 16, 16, &h2), RIO_E_PROTO);
	rio_writer_free(&w);

	rio_writer_init(&w, 0);
	rio_hello_ack_put(&w, &a);
	assert_int_equal(rio_hello_ack_parse(rio_writer_data(&w), w.len, &a2), RIO_OK);
	assert_true(a2.version == 1 && a2.server_instance == 99 && a2.max_payload == RIO_MIN_PAYLOAD_LIMIT &&
		    a2.keepalive_ms == 100 && a2.idle_timeout_ms == 201);
	rio_writer_free(&w);
	a.idle_timeout_ms = 100; /* must exceed keepalive */
	rio_writer_init(&w, 0);
	rio_hello_ack_put(&w, &a);
	assert_int_equal(rio_hello_ack_parse(rio_writer_data(&w), w.len, &a2), RIO_E_PROTO);
	rio_writer_free(&w);

	struct rio_blob *e = rio_error_frame(1, 5, 3, RIO_E_EXPIRED, "gone");
	struct rio_hdr eh;
	assert_int_equal(rio_hdr_decode(e->data, e->len, RIO_MAX_PAYLOAD, &eh), RIO_OK);
	assert_int_equal(eh.type, RIO_T_ERROR);
	assert_int_equal(rio_err_from_wire(eh.status), RIO_E_EXPIRED);
	assert_int_equal(rio_error_parse(e->data + RIO_HDR_LEN, eh.payload_len, msg, sizeof(msg)), RIO_OK);
	assert_string_equal(msg, "gone");
	assert_int_equal(rio_err_from_wire(999), RIO_E_REMOTE);
	rio_blob_unref(e);
}

/* ---- retry cache ------------------------------------------------------------------ */

static struct rio_blob *blob_of(size_t len)
{
	return rio_blob_adopt(calloc(1, len ? len : 1), len);
}

static void finish_with(struct rio_dedup *d, const char *node, uint64_t cid, uint64_t id, size_t len)
{
	struct rio_blob *b = blob_of(len);
	rio_dedup_finish(d, node, cid, id, b);
	rio_blob_unref(b);
}

static void test_dedup_basic(void **state)
{
	struct rio_dedup *d = rio_dedup_new(4, 8, 1 << 20);
	struct rio_blob *r;

	/* A retry from a client we never saw cannot be proven new. */
	assert_int_equal(rio_dedup_begin(d, "a", 1, 1, true, &r), RIO_DEDUP_EXPIRED);
	assert_int_equal(rio_dedup_begin(d, "a", 1, 1, false, &r), RIO_DEDUP_EXECUTE);
	finish_with(d, "a", 1, 1, 10);
	assert_int_equal(rio_dedup_begin(d, "a", 1, 1, true, &r), RIO_DEDUP_REPLAY);
	assert_int_equal(r->len, 10);
	rio_blob_unref(r);
	/* Even without the retry flag a duplicate id is not applied twice. */
	assert_int_equal(rio_dedup_begin(d, "a", 1, 1, false, &r), RIO_DEDUP_REPLAY);
	rio_blob_unref(r);
	/* Same client id from another node is another client. */
	assert_int_equal(rio_dedup_begin(d, "b", 1, 1, false, &r), RIO_DEDUP_EXECUTE);
	finish_with(d, "b", 1, 1, 1);
	/* A retry above everything seen was never received: it runs. */
	assert_int_equal(rio_dedup_begin(d, "a", 1, 2, true, &r), RIO_DEDUP_EXECUTE);
	finish_with(d, "a", 1, 2, 1);

	/* Per-client bound: ids 1..6 with room for 4 forget 1 and 2. */
	for (uint64_t id = 3; id <= 6; id++) {
		assert_int_equal(rio_dedup_begin(d, "a", 1, id, false, &r), RIO_DEDUP_EXECUTE);
		finish_with(d, "a", 1, id, 1);
	}
	assert_int_equal(rio_dedup_begin(d, "a", 1, 1, true, &r), RIO_DEDUP_EXPIRED);
	assert_int_equal(rio_dedup_begin(d, "a", 1, 2, true, &r), RIO_DEDUP_EXPIRED);
	assert_int_equal(rio_dedup_begin(d, "a", 1, 3, true, &r), RIO_DEDUP_REPLAY);
	rio_blob_unref(r);

	/* No reply could be built: a later retry must not re-run it. */
	assert_int_equal(rio_dedup_begin(d, "a", 1, 7, false, &r), RIO_DEDUP_EXECUTE);
	rio_dedup_finish(d, "a", 1, 7, NULL);
	assert_int_equal(rio_dedup_begin(d, "a", 1, 7, true, &r), RIO_DEDUP_EXPIRED);
	rio_dedup_free(d);
}

static void test_dedup_bounds(void **state)
{
	struct rio_dedup *d = rio_dedup_new(100, 2, 1000);
	struct rio_blob *r;

	/* Byte bound: oldest replies go first. */
	for (uint64_t id = 1; id <= 5; id++) {
		assert_int_equal(rio_dedup_begin(d, "a", 1, id, false, &r), RIO_DEDUP_EXECUTE);
		finish_with(d, "a", 1, id, 300);
	}
	assert_true(rio_dedup_bytes(d) <= 1000);
	assert_int_equal(rio_dedup_begin(d, "a", 1, 1, true, &r), RIO_DEDUP_EXPIRED);
	assert_int_equal(rio_dedup_begin(d, "a", 1, 5, true, &r), RIO_DEDUP_REPLAY);
	rio_blob_unref(r);

	/* Client bound: a third client evicts the least recently used idle one,
	 * but never one with a request still running. */
	assert_int_equal(rio_dedup_begin(d, "b", 2, 1, false, &r), RIO_DEDUP_EXECUTE); /* running */
	assert_int_equal(rio_dedup_begin(d, "c", 3, 1, false, &r), RIO_DEDUP_EXECUTE);
	assert_int_equal(rio_dedup_clients(d), 2);
	assert_int_equal(rio_dedup_begin(d, "a", 1, 5, true, &r), RIO_DEDUP_EXPIRED); /* "a" evicted */
	finish_with(d, "b", 2, 1, 1);
	assert_int_equal(rio_dedup_begin(d, "b", 2, 1, true, &r), RIO_DEDUP_REPLAY);
	rio_blob_unref(r);
	finish_with(d, "c", 3, 1, 1);
	rio_dedup_free(d);
}

struct dup_arg {
	struct rio_dedup *d;
	enum rio_dedup_verdict v;
	struct rio_blob *reply;
};

static void *begin_duplicate(void *arg)
{
	struct dup_arg *a = arg;
	a->v = rio_dedup_begin(a->d, "a", 1, 1, true, &a->reply);
	return NULL;
}

/* The duplicate waits for the original's reply instead of running again. */
static void test_dedup_waits_for_running(void **state)
{
	struct dup_arg a = { .d = rio_dedup_new(0, 0, 0) };
	struct rio_blob *r, *reply = blob_of(3);
	pthread_t t;

	assert_int_equal(rio_dedup_begin(a.d, "a", 1, 1, false, &r), RIO_DEDUP_EXECUTE);
	pthread_create(&t, NULL, begin_duplicate, &a);
	usleep(50000);
	rio_dedup_finish(a.d, "a", 1, 1, reply);
	pthread_join(t, NULL);
	assert_int_equal(a.v, RIO_DEDUP_REPLAY);
	assert_ptr_equal(a.reply, reply);
	rio_blob_unref(a.reply);
	rio_blob_unref(reply);
	rio_dedup_free(a.d);
}

/* ---- credentials --------------------------------------------------------------------- */

static mode_t file_mode(const char *dir, const char *leaf)
{
	char p[256];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", dir, leaf);
	return stat(p, &st) == 0 ? st.st_mode & 07777 : 0;
}

static void test_cred_layout(void **state)
{
	char node[RIO_NODE_NAME_MAX + 1], err[256];

	assert_int_equal(file_mode(dir_ca, "ca.key"), 0600);
	assert_int_equal(file_mode(dir_a, "node.key"), 0600);
	assert_int_equal(file_mode(dir_a, "node.crt"), 0644);
	assert_int_equal(file_mode(dir_a, "ca.crt"), 0644);
	assert_int_equal(file_mode(dir_a, "ca.key"), 0); /* never copied to nodes */
	assert_int_equal(file_mode(tmpdir, "node-a") & 0777, 0700);
	assert_int_equal(rio_cred_check(dir_a, node, sizeof(node), err, sizeof(err)), RIO_OK);
	assert_string_equal(node, "node-a");
	/* Issuing into the CA directory itself gives the all-in-one layout. */
	char both[256];
	path(both, sizeof(both), "both");
	assert_int_equal(rio_cred_create_ca(both, NULL, 0, err, sizeof(err)), RIO_OK);
	assert_int_equal(rio_cred_issue_node(both, both, "n1", 0, err, sizeof(err)), RIO_OK);
	assert_int_equal(rio_cred_check(both, node, sizeof(node), err, sizeof(err)), RIO_OK);
	assert_string_equal(node, "n1");
}

static void test_cred_refusals(void **state)
{
	char node[RIO_NODE_NAME_MAX + 1], err[256], d[200], key[256], cmd[700];

	/* No silent overwrite; force replaces. */
	assert_int_equal(rio_cred_create_ca(dir_ca, NULL, 0, err, sizeof(err)), RIO_E_CRED);
	assert_non_null(strstr(err, "exists"));
	path(d, sizeof(d), "forced");
	assert_int_equal(rio_cred_issue_node(dir_ca, d, "x1", 0, err, sizeof(err)), RIO_OK);
	assert_int_equal(rio_cred_issue_node(dir_ca, d, "x2", 0, err, sizeof(err)), RIO_E_CRED);
	assert_int_equal(rio_cred_check(d, node, sizeof(node), err, sizeof(err)), RIO_OK); /* untouched */
	assert_string_equal(node, "x1");
	assert_int_equal(rio_cred_issue_node(dir_ca, d, "x2", RIO_CRED_FORCE, err, sizeof(err)), RIO_OK);
	assert_int_equal(rio_cred_check(d, node, sizeof(node), err, sizeof(err)), RIO_OK);
	assert_string_equal(node, "x2");

	/* Only node.crt missing: still nothing is written without force. */
	snprintf(cmd, sizeof(cmd), "rm '%s/node.crt'", d);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(rio_cred_issue_node(dir_ca, d, "x3", 0, err, sizeof(err)), RIO_E_CRED);
	assert_non_null(strstr(err, "node.key exists"));
	assert_int_equal(rio_cred_issue_node(dir_ca, d, "x2", RIO_CRED_FORCE, err, sizeof(err)), RIO_OK);

	/* Node names become log text and DNS names. */
	const char *bad[] = { "", "-a", "a b", "a/b", "a\nb", ".x",
			      "0123456789012345678901234567890123456789012345678901234567890123" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(rio_cred_issue_node(dir_ca, d, bad[i], RIO_CRED_FORCE, err, sizeof(err)),
				 RIO_E_INVAL);
	assert_true(rio_node_name_valid("node_1.rack-2"));

	/* A readable private key is refused, with the fix in the message. */
	snprintf(key, sizeof(key), "%s/node.key", d);
	chmod(key, 0644);
	assert_int_equal(rio_cred_check(d, node, sizeof(node), err, sizeof(err)), RIO_E_CRED);
	assert_non_null(strstr(err, "chmod 0600"));
	chmod(key, 0600);

	/* A key that is not the certificate's. */
	snprintf(cmd, sizeof(cmd), "cp '%s/node.key' '%s'", dir_b, key);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(rio_cred_check(d, node, sizeof(node), err, sizeof(err)), RIO_E_CRED);
	assert_non_null(strstr(err, "does not match"));

	/* A certificate from another cluster's CA next to our ca.crt. */
	snprintf(cmd, sizeof(cmd), "cp '%s/node.crt' '%s/node.key' '%s/'", dir_evil, dir_evil, d);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(rio_cred_check(d, node, sizeof(node), err, sizeof(err)), RIO_E_CRED);
	assert_non_null(strstr(err, "not valid under ca.crt"));

	/* Issuing needs ca.key; a node directory cannot issue. */
	assert_int_equal(rio_cred_issue_node(dir_a, d, "x3", RIO_CRED_FORCE, err, sizeof(err)), RIO_E_CRED);
	path(d, sizeof(d), "missing");
	assert_int_equal(rio_cred_check(d, node, sizeof(node), err, sizeof(err)), RIO_E_CRED);
}

/* ---- client and server over TLS -------------------------------------------------------- */

enum { OP_ECHO = 1, OP_WHOAMI, OP_FAIL, OP_SLOW, OP_BIG, OP_SLOW_ECHO, OP_PAGE_END };

struct handler_state {
	atomic_int slow_runs;
	unsigned slow_ms;
	char last_peer[RIO_NODE_NAME_MAX + 1];
	pthread_mutex_t lock;
};

static struct handler_state hs = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int test_handler(void *arg, const struct rio_peer *peer, const struct rio_request *req,
			struct rio_response *resp)
{
	struct handler_state *h = arg;

	pthread_mutex_lock(&h->lock);
	snprintf(h->last_peer, sizeof(h->last_peer), "%s", peer->node);
	pthread_mutex_unlock(&h->lock);
	switch (req->op) {
	case OP_SLOW:
		atomic_fetch_add(&h->slow_runs, 1);
		usleep(h->slow_ms * 1000);
		rio_put_u32(&resp->body, (uint32_t)atomic_load(&h->slow_runs));
		return 0;
	case OP_SLOW_ECHO:
		usleep((unsigned)(req->id % 7) * 1000); /* replies overtake each other */
		/* fallthrough */
	case OP_ECHO:
		rio_put_raw(&resp->body, req->payload, req->len);
		resp->status = 200;
		return 0;
	case OP_WHOAMI:
		rio_put_str(&resp->body, peer->node);
		return 0;
	case OP_PAGE_END: /* where the payload ends in its page, then the payload */
		rio_put_u32(&resp->body, (uint32_t)((uintptr_t)(req->payload + req->len) % 4096));
		rio_put_raw(&resp->body, req->payload, req->len);
		return 0;
	case OP_BIG: {
		uint8_t *p = rio_put_space(&resp->body, 128 << 10);
		if (p)
			memset(p, 'b', 128 << 10);
		return 0;
	}
	default:
		return -1;
	}
}

static struct rio_server *start_server(struct logbuf *lb, uint16_t port, struct rio_server_config *over)
{
	struct rio_server_config cfg = { 0 };
	struct rio_server *srv = NULL;
	char err[256];

	if (over)
		cfg = *over;
	cfg.cred_dir = dir_a;
	cfg.port = port;
	cfg.handler = test_handler;
	cfg.handler_arg = &hs;
	cfg.log = capture_log;
	cfg.log_arg = lb;
	if (rio_server_start(&cfg, &srv, err, sizeof(err)) != RIO_OK)
		fail_msg("server: %s", err);
	return srv;
}

static struct rio_client *start_client(const char *cred, uint16_t port, struct logbuf *lb,
				       struct rio_client_config *over)
{
	struct rio_client_config cfg = { 0 };
	struct rio_client *cl = NULL;
	char err[256];

	if (over)
		cfg = *over;
	cfg.cred_dir = cred;
	cfg.host = "127.0.0.1";
	cfg.port = port;
	cfg.log = capture_log;
	cfg.log_arg = lb;
	if (rio_client_create(&cfg, &cl, err, sizeof(err)) != RIO_OK)
		fail_msg("client: %s", err);
	return cl;
}

static void connect_ok(struct rio_client *cl)
{
	char err[256];
	int rc = rio_client_wait_connected(cl, 5000, err, sizeof(err));
	if (rc != RIO_OK)
		fail_msg("connect: %s: %s", rio_strerror(rc), err);
}

static void test_echo_and_identity(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server *srv = start_server(lb, 0, NULL);
	struct rio_client_config cc = { .expect_peer = "node-a" };
	struct rio_client *cl = start_client(dir_b, rio_server_port(srv), lb, &cc);
	struct rio_reply r;
	struct rio_reader rd;
	char name[RIO_NODE_NAME_MAX + 1];

	connect_ok(cl);
	rio_client_peer(cl, name, sizeof(name));
	assert_string_equal(name, "node-a");
	assert_int_equal(rio_client_call(cl, OP_ECHO, 0, "abc", 3, &r, 5000), RIO_OK);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.len, 3);
	assert_memory_equal(r.payload, "abc", 3);
	rio_reply_free(&r);
	assert_int_equal(rio_client_call(cl, OP_ECHO, 0, NULL, 0, &r, 5000), RIO_OK);
	assert_int_equal(r.len, 0);
	rio_reply_free(&r);
	/* The server attributes requests to the certificate's node name. */
	assert_int_equal(rio_client_call(cl, OP_WHOAMI, RIO_CALL_IDEMPOTENT, NULL, 0, &r, 5000), RIO_OK);
	rio_reader_init(&rd, r.payload, r.len);
	rio_get_str(&rd, name, sizeof(name));
	assert_int_equal(rio_reader_end(&rd), RIO_OK);
	assert_string_equal(name, "node-b");
	rio_reply_free(&r);
	assert_int_equal(rio_client_call(cl, OP_FAIL, 0, NULL, 0, &r, 5000), RIO_E_HANDLER);
	assert_true(log_has(lb, "accepted 127.0.0.1:"));
	assert_true(log_has(lb, "(node-b) client"));
	rio_client_destroy(cl);
	rio_server_stop(srv);
	assert_true(log_has(lb, "closed 127.0.0.1:"));
	logbuf_free(lb);
}

struct hammer {
	struct rio_client *cl;
	int id;
	int failures;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;

	for (int i = 0; i < 200; i++) {
		char msg[32];
		struct rio_reply r;
		int n = snprintf(msg, sizeof(msg), "t%d-%d", h->id, i);
		if (rio_client_call(h->cl, OP_SLOW_ECHO, 0, msg, (size_t)n, &r, 10000) != RIO_OK ||
		    r.len != (uint32_t)n || memcmp(r.payload, msg, (size_t)n) != 0)
			h->failures++;
		rio_reply_free(&r);
	}
	return NULL;
}

/* Bulk calls sent from the caller's writer (rio_client_call_writer), many in
 * flight from several threads while the connection drops now and then: every
 * reply echoes its request intact, each writer still holds its bytes after
 * its call (and is sent again), and the server sees every payload of 64 KiB
 * to 1 MiB + 64 KiB end on a page boundary. */
struct bulk {
	struct rio_client *cl;
	int id;
	int failures;
	int unaligned;
};

static bool page_end_echo_ok(const struct rio_reply *r, const struct rio_writer *w, uint32_t *end)
{
	struct rio_reader rd;

	rio_reader_init(&rd, r->payload, r->len);
	return rio_get_u32(&rd, end) == RIO_OK && rio_reader_left(&rd) == w->len &&
	       memcmp(r->payload + 4, rio_writer_data(w), w->len) == 0;
}

static void *bulk_main(void *arg)
{
	static const size_t sizes[] = { 100, 4096, 64 << 10, (1 << 20) + 40, 300 << 10, 70000 };
	struct bulk *b = arg;

	for (int i = 0; i < 24; i++) {
		size_t n = sizes[(size_t)(i + b->id) % (sizeof(sizes) / sizeof(sizes[0]))];
		struct rio_writer w;
		uint8_t *p;

		rio_writer_init_frame(&w, 0);
		p = rio_put_space(&w, n);
		for (size_t k = 0; p && k < n; k++)
			p[k] = (uint8_t)(k * 31 + (size_t)i + (size_t)b->id * 7);
		for (int again = 0; again < 2; again++) {
			struct rio_reply r;
			uint32_t end = 1;
			int rc = rio_client_call_writer(b->cl, OP_PAGE_END, 0, &w, &r, 20000);
			if (rc != RIO_OK || !page_end_echo_ok(&r, &w, &end))
				b->failures++;
			else if (end != 0 && n >= RIO_POOL_MIN_PAYLOAD && n <= RIO_POOL_BUF)
				b->unaligned++;
			rio_reply_free(&r);
		}
		rio_writer_free(&w);
	}
	return NULL;
}

static void test_bulk_writer_calls(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server *srv = start_server(lb, 0, NULL);
	struct rio_client_config cc = { .reconnect_max_ms = 100 };
	struct rio_client *cl = start_client(dir_b, rio_server_port(srv), lb, &cc);
	struct bulk b[6];
	pthread_t t[6];
	struct rio_writer w;
	struct rio_reply r;

	connect_ok(cl);
	for (int i = 0; i < 6; i++) {
		b[i] = (struct bulk){ cl, i, 0, 0 };
		pthread_create(&t[i], NULL, bulk_main, &b[i]);
	}
	/* dropped connections: calls in flight are resent on the next one */
	for (int i = 0; i < 3; i++) {
		usleep(150000);
		rio_client_disconnect(cl);
	}
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(b[i].failures, 0);
		assert_int_equal(b[i].unaligned, 0);
	}
	/* a plain writer (no room for the header) goes through a copy */
	rio_writer_init(&w, 0);
	rio_put_str(&w, "plain");
	assert_int_equal(rio_client_call_writer(cl, OP_ECHO, 0, &w, &r, 5000), RIO_OK);
	assert_int_equal(r.len, w.len);
	assert_memory_equal(r.payload, rio_writer_data(&w), w.len);
	rio_reply_free(&r);
	rio_writer_free(&w);
	rio_client_destroy(cl);
	rio_server_stop(srv);
	logbuf_free(lb);
}

/* Many threads, many outstanding requests, replies out of order. */
static void test_concurrent_calls(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server *srv = start_server(lb, 0, NULL);
	struct rio_client *cl = start_client(dir_b, rio_server_port(srv), lb, NULL);
	struct hammer h[8];
	pthread_t t[8];

	connect_ok(cl);
	for (int i = 0; i < 8; i++) {
		h[i] = (struct hammer){ cl, i, 0 };
		pthread_create(&t[i], NULL, hammer_main, &h[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(h[i].failures, 0);
	}
	rio_client_destroy(cl);
	rio_server_stop(srv);
	logbuf_free(lb);
}

static void test_payload_limits(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server_config sc = { .max_payload = 1 << 20 };
	struct rio_server *srv = start_server(lb, 0, NULL);
	struct rio_server *small = start_server(lb, 0, &sc);
	struct rio_client_config cc = { .max_payload = RIO_MIN_PAYLOAD_LIMIT };
	struct rio_client *cl = start_client(dir_b, rio_server_port(srv), lb, NULL);
	struct rio_client *cl_small = start_client(dir_b, rio_server_port(small), lb, &cc);
	uint8_t *big = malloc(RIO_MAX_DATA);
	struct rio_reply r;

	for (size_t i = 0; i < RIO_MAX_DATA; i++)
		big[i] = (uint8_t)(i * 7 + (i >> 13));
	connect_ok(cl);
	connect_ok(cl_small);
	/* A full 16 MiB data chunk both ways, intact. */
	assert_int_equal(rio_client_call(cl, OP_ECHO, 0, big, RIO_MAX_DATA, &r, 20000), RIO_OK);
	assert_int_equal(r.len, RIO_MAX_DATA);
	assert_memory_equal(r.payload, big, RIO_MAX_DATA);
	rio_reply_free(&r);
	assert_int_equal(rio_client_call(cl, OP_ECHO, 0, big, RIO_MAX_PAYLOAD + 1, &r, 5000), RIO_E_TOOBIG);
	/* Over the limit the server announced: refused before sending. */
	assert_int_equal(rio_client_call(cl_small, OP_ECHO, 0, big, (1 << 20) + 1, &r, 5000), RIO_E_TOOBIG);
	/* A reply over the client's limit becomes an error reply, not a dropped link. */
	assert_int_equal(rio_client_call(cl_small, OP_BIG, 0, NULL, 0, &r, 5000), RIO_E_TOOBIG);
	assert_int_equal(rio_client_call(cl_small, OP_ECHO, 0, "ok", 2, &r, 5000), RIO_OK);
	rio_reply_free(&r);
	free(big);
	rio_client_destroy(cl);
	rio_client_destroy(cl_small);
	rio_server_stop(srv);
	rio_server_stop(small);
	logbuf_free(lb);
}

static void test_call_timeout(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server *srv = start_server(lb, 0, NULL);
	struct rio_client *cl = start_client(dir_b, rio_server_port(srv), lb, NULL);
	struct rio_reply r;
	uint64_t t0;

	connect_ok(cl);
	hs.slow_ms = 400;
	t0 = rio_now_ms();
	assert_int_equal(rio_client_call(cl, OP_SLOW, 0, NULL, 0, &r, 100), RIO_E_TIMEOUT);
	assert_true(rio_now_ms() - t0 < 350);
	/* The late reply is dropped; the connection keeps working. */
	assert_int_equal(rio_client_call(cl, OP_ECHO, 0, "x", 1, &r, 5000), RIO_OK);
	rio_reply_free(&r);
	rio_client_destroy(cl);
	rio_server_stop(srv);
	logbuf_free(lb);
}

static void test_foreign_cluster_refused(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server *srv = start_server(lb, 0, NULL);
	struct rio_client *cl = start_client(dir_evil, rio_server_port(srv), lb, NULL);
	struct rio_server_stats st;
	struct rio_reply r;
	char err[256];
	uint64_t t0 = rio_now_ms();

	/* Authentication failures are reported at once, not after the timeout. */
	assert_int_equal(rio_client_wait_connected(cl, 5000, err, sizeof(err)), RIO_E_TLS);
	assert_true(rio_now_ms() - t0 < 3000);
	assert_non_null(strstr(err, "certificate verify failed"));
	assert_int_equal(rio_client_call(cl, OP_ECHO, 0, "x", 1, &r, 300), RIO_E_TIMEOUT);
	assert_true(wait_log(lb, "rio: refused 127.0.0.1:", 2000));
	assert_true(log_has(lb, "unknown ca"));
	rio_server_get_stats(srv, &st);
	assert_true(st.refused >= 1);
	assert_int_equal(st.accepted, 0);
	assert_int_equal(st.requests, 0);
	rio_client_destroy(cl);

	/* Our own cluster, but not the coordinator we expect. */
	struct rio_client_config cc = { .expect_peer = "node-z" };
	cl = start_client(dir_b, rio_server_port(srv), lb, &cc);
	assert_int_equal(rio_client_wait_connected(cl, 5000, err, sizeof(err)), RIO_E_TLS);
	assert_non_null(strstr(err, "hostname mismatch"));
	rio_client_destroy(cl);
	rio_server_stop(srv);
	logbuf_free(lb);
}

/* ---- revocation ------------------------------------------------------------------------ */

static void copy_file(const char *from_dir, const char *to_dir, const char *leaf)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "cp '%s/%s' '%s/%s'", from_dir, leaf, to_dir, leaf);
	assert_int_equal(system(cmd), 0);
}

static struct rio_server *start_server_in(const char *cred, struct logbuf *lb)
{
	struct rio_server_config cfg = { .cred_dir = cred, .handler = test_handler, .handler_arg = &hs,
					 .log = capture_log, .log_arg = lb };
	struct rio_server *srv = NULL;
	char err[256];

	if (rio_server_start(&cfg, &srv, err, sizeof(err)) != RIO_OK)
		fail_msg("server: %s", err);
	return srv;
}

static void echo_ok(struct rio_client *cl)
{
	struct rio_reply r;

	assert_int_equal(rio_client_call(cl, OP_ECHO, 0, "ok", 2, &r, 5000), RIO_OK);
	assert_int_equal(r.len, 2);
	rio_reply_free(&r);
}

/* A revoked node: refused by rio_cred_check once its own directory has the
 * CRL, refused by a server that has it (the server names the node), and a
 * revoked server refused by a client that has it. A server notices a new
 * ca.crl by itself and closes the revoked node's open connection; the
 * others keep working. */
static void test_revocation(void **state)
{
	char ca[200], srv_dir[200], good[200], bad[200], other[200], node[RIO_NODE_NAME_MAX + 1];
	char err[512];
	unsigned n = 0;
	struct logbuf *lb = logbuf_new();

	path(ca, sizeof(ca), "rca");
	path(srv_dir, sizeof(srv_dir), "r-srv");
	path(good, sizeof(good), "r-good");
	path(bad, sizeof(bad), "r-bad");
	path(other, sizeof(other), "r-other");
	assert_int_equal(rio_cred_create_ca(ca, "rev", 0, err, sizeof(err)), RIO_OK);
	assert_int_equal(file_mode(ca, "ca.crl"), 0644); /* an empty list from the start */
	assert_int_equal(rio_cred_issue_node(ca, srv_dir, "r-srv", 0, err, sizeof(err)), RIO_OK);
	assert_int_equal(rio_cred_issue_node(ca, good, "r-good", 0, err, sizeof(err)), RIO_OK);
	assert_int_equal(rio_cred_issue_node(ca, bad, "r-bad", 0, err, sizeof(err)), RIO_OK);
	assert_int_equal(file_mode(bad, "ca.crl"), 0644); /* the list goes with each credential */

	struct rio_server *srv = start_server_in(srv_dir, lb);
	uint16_t port = rio_server_port(srv);
	struct rio_client *cl_good = start_client(good, port, lb, NULL);
	struct rio_client *cl_bad = start_client(bad, port, lb, NULL);
	connect_ok(cl_good);
	connect_ok(cl_bad);

	/* Revoke by name; again changes nothing; an unknown name is an error. */
	assert_int_equal(rio_cred_revoke(ca, "r-bad", NULL, &n, err, sizeof(err)), RIO_OK);
	assert_int_equal(n, 1);
	assert_int_equal(rio_cred_revoke(ca, "r-bad", NULL, &n, err, sizeof(err)), RIO_OK);
	assert_int_equal(n, 0);
	assert_int_equal(rio_cred_revoke(ca, "r-none", NULL, &n, err, sizeof(err)), RIO_E_INVAL);
	assert_non_null(strstr(err, "r-none"));
	char bad_crt[256];
	snprintf(bad_crt, sizeof(bad_crt), "%s/node.crt", bad);
	assert_int_equal(rio_cred_revoke(ca, NULL, bad_crt, &n, err, sizeof(err)), RIO_OK);
	assert_int_equal(n, 0); /* the same certificate, by file */
	/* Only the CA's own certificates can be revoked by file. */
	snprintf(bad_crt, sizeof(bad_crt), "%s/node.crt", dir_evil);
	assert_int_equal(rio_cred_revoke(ca, NULL, bad_crt, &n, err, sizeof(err)), RIO_E_INVAL);

	/* The new list reaches the server: it closes r-bad's connection. */
	copy_file(ca, srv_dir, "ca.crl");
	assert_true(wait_log(lb, "closing 127.0.0.1:", 5000));
	assert_true(log_has(lb, "(r-bad): its certificate is no longer accepted: certificate revoked"));
	echo_ok(cl_good);

	/* r-bad, without the new list, connects again: refused, named. */
	rio_client_destroy(cl_bad);
	cl_bad = start_client(bad, port, lb, NULL);
	assert_int_equal(rio_client_wait_connected(cl_bad, 5000, err, sizeof(err)), RIO_E_TLS);
	assert_non_null(strstr(err, "the peer refused the handshake"));
	assert_non_null(strstr(err, "certificate revoked"));
	assert_true(wait_log(lb, "(certificate names r-bad): certificate verify failed (certificate revoked)", 5000));
	rio_client_destroy(cl_bad);
	echo_ok(cl_good);

	/* r-bad as a server: a client with the list refuses it. */
	struct rio_server *bad_srv = start_server_in(bad, lb);
	copy_file(ca, good, "ca.crl");
	struct rio_client *cl = start_client(good, rio_server_port(bad_srv), lb, NULL);
	assert_int_equal(rio_client_wait_connected(cl, 5000, err, sizeof(err)), RIO_E_TLS);
	assert_non_null(strstr(err, "certificate verify failed (certificate revoked)"));
	rio_client_destroy(cl);
	rio_server_stop(bad_srv);

	/* Its own directory with the list: r-bad cannot even start. */
	copy_file(ca, bad, "ca.crl");
	assert_int_equal(rio_cred_check(bad, node, sizeof(node), err, sizeof(err)), RIO_E_CRED);
	assert_non_null(strstr(err, "is revoked by"));
	struct rio_server_config sc = { .cred_dir = bad, .handler = test_handler };
	assert_int_equal(rio_server_start(&sc, &bad_srv, err, sizeof(err)), RIO_E_CRED);
	assert_non_null(strstr(err, "revoked"));
	assert_int_equal(rio_cred_check(good, node, sizeof(node), err, sizeof(err)), RIO_OK);

	/* Re-issued, the node is back (a new serial). */
	assert_int_equal(rio_cred_issue_node(ca, bad, "r-bad", RIO_CRED_FORCE, err, sizeof(err)), RIO_OK);
	assert_int_equal(rio_cred_check(bad, node, sizeof(node), err, sizeof(err)), RIO_OK);
	cl_bad = start_client(bad, port, lb, NULL);
	connect_ok(cl_bad);
	echo_ok(cl_bad);
	rio_client_destroy(cl_bad);

	/* Another cluster's list is refused, not silently ignored. */
	assert_int_equal(rio_cred_issue_node(dir_ca2, other, "r-other", 0, err, sizeof(err)), RIO_OK);
	copy_file(other, good, "ca.crl");
	assert_int_equal(rio_cred_check(good, node, sizeof(node), err, sizeof(err)), RIO_E_CRED);
	assert_non_null(strstr(err, "is not signed by the CA"));

	rio_client_destroy(cl_good);
	rio_server_stop(srv);
	logbuf_free(lb);
}

struct bg_call {
	struct rio_client *cl;
	uint16_t op;
	unsigned flags;
	int rc;
	uint32_t value;
};

static void *bg_call_main(void *arg)
{
	struct bg_call *b = arg;
	struct rio_reply r;
	struct rio_reader rd;

	b->rc = rio_client_call(b->cl, b->op, b->flags, NULL, 0, &r, 10000);
	if (b->rc == RIO_OK) {
		rio_reader_init(&rd, r.payload, r.len);
		rio_get_u32(&rd, &b->value);
	}
	rio_reply_free(&r);
	return NULL;
}

/* A connection lost while the server runs a request: the client resends it
 * on a new connection and the server answers from its cache. */
static void test_retry_applied_once(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server *srv = start_server(lb, 0, NULL);
	struct rio_client *cl = start_client(dir_b, rio_server_port(srv), lb, NULL);
	struct bg_call b = { cl, OP_SLOW, 0, -1, 0 };
	struct rio_server_stats st;
	pthread_t t;

	connect_ok(cl);
	atomic_store(&hs.slow_runs, 0);
	hs.slow_ms = 500;
	pthread_create(&t, NULL, bg_call_main, &b);
	usleep(150000);
	rio_client_disconnect(cl);
	pthread_join(t, NULL);
	assert_int_equal(b.rc, RIO_OK);
	assert_int_equal(atomic_load(&hs.slow_runs), 1);
	assert_int_equal(b.value, 1);
	rio_server_get_stats(srv, &st);
	assert_int_equal(st.replayed, 1);
	assert_int_equal(st.accepted, 2);

	/* An idempotent request is simply run again. */
	b = (struct bg_call){ cl, OP_SLOW, RIO_CALL_IDEMPOTENT, -1, 0 };
	pthread_create(&t, NULL, bg_call_main, &b);
	usleep(150000);
	rio_client_disconnect(cl);
	pthread_join(t, NULL);
	assert_int_equal(b.rc, RIO_OK);
	assert_int_equal(atomic_load(&hs.slow_runs), 3);
	rio_client_destroy(cl);
	rio_server_stop(srv);
	logbuf_free(lb);
}

static void *stop_server_main(void *arg)
{
	rio_server_stop(arg);
	return NULL;
}

/* The server restarts (a new instance, no cache) while a request it may
 * have applied is unanswered: the client must say "in doubt", not resend. */
static void test_restart_in_doubt(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server *srv = start_server(lb, 0, NULL);
	uint16_t port = rio_server_port(srv);
	struct rio_client *cl = start_client(dir_b, port, lb, NULL);
	struct bg_call b1 = { cl, OP_SLOW, 0, -1, 0 }, b2 = { cl, OP_SLOW, RIO_CALL_IDEMPOTENT, -1, 0 };
	pthread_t t1, t2, ts;

	connect_ok(cl);
	atomic_store(&hs.slow_runs, 0);
	hs.slow_ms = 800;
	pthread_create(&t1, NULL, bg_call_main, &b1);
	pthread_create(&t2, NULL, bg_call_main, &b2);
	usleep(200000);
	pthread_create(&ts, NULL, stop_server_main, srv); /* waits for the handlers */
	usleep(100000);
	rio_client_disconnect(cl); /* the replies will have nowhere to go */
	pthread_join(ts, NULL);
	srv = start_server(lb, port, NULL);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	assert_int_equal(b1.rc, RIO_E_INDOUBT);
	assert_int_equal(b2.rc, RIO_OK);
	assert_int_equal(atomic_load(&hs.slow_runs), 3);
	assert_true(log_has(lb, "outcome unknown"));
	rio_client_destroy(cl);
	rio_server_stop(srv);
	logbuf_free(lb);
}

/* Graceful stop: a running request still gets its reply; the client then
 * reconnects to the next server on its own. */
static void count_lost(void *arg)
{
	atomic_fetch_add((_Atomic int *)arg, 1);
}

static void test_graceful_stop_and_reconnect(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server *srv = start_server(lb, 0, NULL);
	uint16_t port = rio_server_port(srv);
	_Atomic int lost = 0;
	struct rio_client_config cc = { .reconnect_max_ms = 200, .on_lost = count_lost,
					.on_lost_arg = &lost };
	struct rio_client *cl = start_client(dir_b, port, lb, &cc);
	struct bg_call b = { cl, OP_SLOW, 0, -1, 0 };
	struct rio_reply r;
	pthread_t t;

	connect_ok(cl);
	hs.slow_ms = 300;
	pthread_create(&t, NULL, bg_call_main, &b);
	usleep(100000);
	rio_server_stop(srv);
	pthread_join(t, NULL);
	assert_int_equal(b.rc, RIO_OK);
	assert_true(wait_log(lb, "GOAWAY", 2000));
	/* the owner hears of the lost connection (a new coordinator to find) */
	for (int i = 0; i < 200 && atomic_load(&lost) == 0; i++)
		usleep(10000);
	assert_int_equal(atomic_load(&lost), 1);
	assert_int_equal(rio_client_call(cl, OP_ECHO, 0, "x", 1, &r, 300), RIO_E_TIMEOUT);
	srv = start_server(lb, port, NULL);
	assert_int_equal(rio_client_call(cl, OP_ECHO, 0, "y", 1, &r, 5000), RIO_OK);
	rio_reply_free(&r);
	rio_client_destroy(cl);
	assert_int_equal(atomic_load(&lost), 1);   /* not at the owner's own shutdown */
	rio_server_stop(srv);
	logbuf_free(lb);
}

/* Destroy with a call in flight: the caller gets SHUTDOWN, nothing leaks. */
static void test_client_destroy_in_flight(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server *srv = start_server(lb, 0, NULL);
	struct rio_client *cl = start_client(dir_b, rio_server_port(srv), lb, NULL);
	struct bg_call b = { cl, OP_SLOW, 0, -1, 0 };
	pthread_t t;

	connect_ok(cl);
	hs.slow_ms = 300;
	pthread_create(&t, NULL, bg_call_main, &b);
	usleep(100000);
	rio_client_destroy(cl);
	pthread_join(t, NULL);
	assert_int_equal(b.rc, RIO_E_SHUTDOWN);
	rio_server_stop(srv);
	logbuf_free(lb);
}

static int tcp_connect_local(uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* True when the server hangs up on fd within ms. */
static bool hung_up(int fd, unsigned ms)
{
	char buf[512];
	uint64_t end = rio_now_ms() + ms;

	while (rio_now_ms() < end) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 50) > 0) {
			ssize_t n = read(fd, buf, sizeof(buf));
			if (n <= 0)
				return true;
		}
	}
	return false;
}

static void test_silent_and_garbage_peers(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server_config sc = { .handshake_timeout_ms = 1000, .max_conns = 3 };
	struct rio_server *srv = start_server(lb, 0, &sc);
	uint16_t port = rio_server_port(srv);
	struct rio_client *cl;
	struct rio_reply r;
	int silent = tcp_connect_local(port), garbage = tcp_connect_local(port);

	assert_int_equal(write(garbage, "GET / HTTP/1.0\r\n\r\n", 18), 18);
	assert_true(hung_up(garbage, 3000));
	assert_true(hung_up(silent, 3000));
	assert_true(log_has(lb, "TLS handshake timed out"));
	close(silent);
	close(garbage);

	/* Connection bound: with 3 slots held, a 4th connect is turned away. */
	int held[3];
	for (int i = 0; i < 3; i++)
		held[i] = tcp_connect_local(port);
	usleep(100000);
	int extra = tcp_connect_local(port);
	assert_true(hung_up(extra, 1000));
	assert_true(log_has(lb, "too many connections"));
	for (int i = 0; i < 3; i++)
		close(held[i]);
	close(extra);
	usleep(100000);

	/* And the next good client is served. */
	cl = start_client(dir_b, port, lb, NULL);
	connect_ok(cl);
	assert_int_equal(rio_client_call(cl, OP_ECHO, 0, "x", 1, &r, 5000), RIO_OK);
	rio_reply_free(&r);
	rio_client_destroy(cl);
	rio_server_stop(srv);
	logbuf_free(lb);
}

/* A TCP connection to the local server from source address 127.0.0.N. */
static int tcp_connect_from(uint16_t port, int n)
{
	struct sockaddr_in src = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)n - 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&src, sizeof(src)), 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static bool only_127_0_0_1(void *arg, const char *host)
{
	(void)arg;
	return strcmp(host, "127.0.0.1") == 0;
}

/* Connections that never authenticate have a budget of their own: per
 * address, and in all for addresses that are not members; a member is let
 * in while the budget is spent. */
static void test_handshake_budget(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server_config sc = { .handshake_timeout_ms = 10000, .max_conns = 16, .max_handshakes = 3,
					.max_handshakes_per_addr = 2, .priority_addr = only_127_0_0_1 };
	struct rio_server *srv = start_server(lb, 0, &sc);
	uint16_t port = rio_server_port(srv);
	int held[3], extra;

	held[0] = tcp_connect_from(port, 2);
	held[1] = tcp_connect_from(port, 2);
	usleep(100000);
	extra = tcp_connect_from(port, 2);
	assert_true(hung_up(extra, 1000));
	assert_true(wait_log(lb, "2 handshakes already pending from 127.0.0.2 (limit 2)", 1000));
	close(extra);

	held[2] = tcp_connect_from(port, 3);
	usleep(100000);
	extra = tcp_connect_from(port, 4);
	assert_true(hung_up(extra, 1000));
	assert_true(wait_log(lb, "3 handshakes already pending (limit 3; members are let in first)", 1000));
	close(extra);

	/* the budget is spent, and a member is still served */
	struct rio_client *cl = start_client(dir_b, port, lb, NULL);
	connect_ok(cl);
	echo_ok(cl);
	rio_client_destroy(cl);
	for (int i = 0; i < 3; i++)
		close(held[i]);
	rio_server_stop(srv);
	logbuf_free(lb);
}

/* A TLS-authenticated peer that breaks the protocol: built from the
 * module's own link with hand-made frames. */
static struct rio_link *raw_link(uint16_t port, SSL_CTX **ctx)
{
	struct rio_link *l = calloc(1, sizeof(*l));
	char node[RIO_NODE_NAME_MAX + 1], err[256], why[256];

	*ctx = rio_tls_ctx_new(dir_b, RIO_ROLE_CLIENT, node, sizeof(node), err, sizeof(err));
	assert_non_null(*ctx);
	assert_int_equal(rio_link_init(l, tcp_connect_local(port), *ctx, "test", RIO_MAX_PAYLOAD), RIO_OK);
	assert_int_equal(rio_link_handshake(l, RIO_ROLE_CLIENT, rio_now_ms() + 3000, why, sizeof(why)), RIO_OK);
	return l;
}

static void send_raw_hello(struct rio_link *l, uint16_t vmin, uint16_t vmax)
{
	struct rio_hello h = { vmin, vmax, 77, RIO_MAX_PAYLOAD };
	struct rio_hdr hdr = { .version = 1, .type = RIO_T_HELLO };
	struct rio_writer w;
	struct rio_blob *b;
	char why[128];

	rio_writer_init_frame(&w, RIO_CONTROL_MAX);
	rio_hello_put(&w, &h);
	b = rio_frame_from_writer(&hdr, &w);
	rio_writer_free(&w);
	assert_int_equal(rio_link_send_now(l, b, rio_now_ms() + 2000, why, sizeof(why)), RIO_OK);
	rio_blob_unref(b);
}

static int recv_raw(struct rio_link *l, struct rio_hdr *h)
{
	uint8_t *payload = NULL;
	char why[128];
	int rc = rio_link_recv_now(l, h, &payload, rio_now_ms() + 3000, why, sizeof(why));

	free(payload);
	return rc;
}

static void close_raw(struct rio_link *l, SSL_CTX *ctx)
{
	rio_link_close(l);
	free(l);
	SSL_CTX_free(ctx);
}

static void test_protocol_violations(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server *srv = start_server(lb, 0, NULL);
	uint16_t port = rio_server_port(srv);
	struct rio_server_stats st;
	struct rio_hdr h;
	SSL_CTX *ctx;
	struct rio_link *l;
	char why[128];

	/* No common version: an ERROR naming both ranges, then a hang-up. */
	l = raw_link(port, &ctx);
	send_raw_hello(l, 5, 7);
	assert_int_equal(recv_raw(l, &h), RIO_OK);
	assert_int_equal(h.type, RIO_T_ERROR);
	assert_int_equal(rio_err_from_wire(h.status), RIO_E_VERSION);
	assert_int_not_equal(recv_raw(l, &h), RIO_OK);
	close_raw(l, ctx);
	assert_true(wait_log(lb, "no common protocol version: client 5-7, server 1-1", 2000));

	/* A request where the hello belongs. */
	l = raw_link(port, &ctx);
	struct rio_hdr req = { .version = 1, .type = RIO_T_REQUEST, .op = OP_ECHO, .request_id = 1 };
	struct rio_blob *b = rio_frame_build(&req, "x", 1);
	assert_int_equal(rio_link_send_now(l, b, rio_now_ms() + 2000, why, sizeof(why)), RIO_OK);
	assert_int_equal(recv_raw(l, &h), RIO_OK);
	assert_int_equal(h.type, RIO_T_ERROR);
	assert_int_not_equal(recv_raw(l, &h), RIO_OK);
	close_raw(l, ctx);

	/* After a good hello: a frame with the wrong version, then a HELLO again. */
	for (int i = 0; i < 2; i++) {
		l = raw_link(port, &ctx);
		send_raw_hello(l, 1, 1);
		assert_int_equal(recv_raw(l, &h), RIO_OK);
		assert_int_equal(h.type, RIO_T_HELLO_ACK);
		if (i == 0) {
			rio_blob_unref(b);
			b = rio_frame_build(&req, "x", 1);
			b->data[4] = 0; /* version 0 */
			assert_int_equal(rio_link_send_now(l, b, rio_now_ms() + 2000, why, sizeof(why)), RIO_OK);
		} else {
			send_raw_hello(l, 1, 1);
		}
		assert_int_not_equal(recv_raw(l, &h), RIO_OK);
		close_raw(l, ctx);
	}
	rio_blob_unref(b);
	assert_true(wait_log(lb, "dropped 127.0.0.1:", 2000));
	assert_true(wait_log(lb, "(node-b): malformed frame header: unsupported protocol version", 2000));
	assert_true(wait_log(lb, "(node-b): unexpected HELLO frame", 2000));
	rio_server_get_stats(srv, &st);
	assert_int_equal(st.dropped, 2);
	assert_int_equal(st.requests, 0);
	rio_server_stop(srv);
	logbuf_free(lb);
}

/* Pings keep an idle connection up; a peer that stops answering is dropped. */
static void test_keepalive_and_idle(void **state)
{
	struct logbuf *lb = logbuf_new();
	struct rio_server_config sc = { .keepalive_ms = 100, .idle_timeout_ms = 400 };
	struct rio_server *srv = start_server(lb, 0, &sc);
	struct rio_client *cl = start_client(dir_b, rio_server_port(srv), lb, NULL);
	struct rio_server_stats st;
	struct rio_reply r;
	struct rio_hdr h;
	SSL_CTX *ctx;
	struct rio_link *l;

	connect_ok(cl);
	usleep(1200000);
	assert_int_equal(rio_client_call(cl, OP_ECHO, 0, "x", 1, &r, 2000), RIO_OK);
	rio_reply_free(&r);
	rio_server_get_stats(srv, &st);
	assert_int_equal(st.accepted, 1); /* never reconnected */

	/* A peer that completes the hello and then goes silent. */
	l = raw_link(rio_server_port(srv), &ctx);
	send_raw_hello(l, 1, 1);
	assert_int_equal(recv_raw(l, &h), RIO_OK);
	assert_true(wait_log(lb, "idle timeout", 3000));
	close_raw(l, ctx);
	rio_client_destroy(cl);
	rio_server_stop(srv);
	logbuf_free(lb);
}

static void test_bad_config(void **state)
{
	struct rio_server_config sc = { .cred_dir = "/nonexistent", .handler = test_handler };
	struct rio_client_config cc = { .cred_dir = dir_b, .host = "127.0.0.1", .port = 1,
					.expect_peer = "bad name" };
	struct rio_server *srv;
	struct rio_client *cl;
	char err[256];

	assert_int_equal(rio_server_start(&sc, &srv, err, sizeof(err)), RIO_E_CRED);
	assert_non_null(strstr(err, "/nonexistent/ca.crt"));
	sc.handler = NULL;
	assert_int_equal(rio_server_start(&sc, &srv, err, sizeof(err)), RIO_E_INVAL);
	assert_int_equal(rio_client_create(&cc, &cl, err, sizeof(err)), RIO_E_INVAL);
	cc.expect_peer = NULL;
	cc.cred_dir = dir_ca; /* a CA dir has no node credential */
	assert_int_equal(rio_client_create(&cc, &cl, err, sizeof(err)), RIO_E_CRED);
	assert_string_equal(rio_strerror(RIO_E_INDOUBT),
			    "request may or may not have been applied (server restarted)");
}

/* The last TLS context built per role is shared while the credential's
 * files are unchanged (a move starts a server and reconnects clients with
 * them); another dir, or a replaced file, builds a fresh one. Runs last: it
 * re-issues node-a's credential. */
static void test_tls_ctx_shared(void **state)
{
	(void)state;
	char node[RIO_NODE_NAME_MAX + 1] = "", err[256];
	SSL_CTX *a1 = rio_tls_ctx_new(dir_a, RIO_ROLE_SERVER, node, sizeof(node), err, sizeof(err));
	assert_non_null(a1);
	assert_string_equal(node, "node-a");
	node[0] = '\0';
	SSL_CTX *a2 = rio_tls_ctx_new(dir_a, RIO_ROLE_SERVER, node, sizeof(node), err, sizeof(err));
	assert_ptr_equal(a2, a1);
	assert_string_equal(node, "node-a");
	SSL_CTX *c1 = rio_tls_ctx_new(dir_a, RIO_ROLE_CLIENT, node, sizeof(node), err, sizeof(err));
	assert_non_null(c1);
	assert_ptr_not_equal(c1, a1);
	SSL_CTX *b1 = rio_tls_ctx_new(dir_b, RIO_ROLE_SERVER, node, sizeof(node), err, sizeof(err));
	assert_non_null(b1);
	assert_ptr_not_equal(b1, a1);
	assert_string_equal(node, "node-b");

	/* A renewed node certificate: built again, then shared again. */
	assert_int_equal(rio_cred_issue_node(dir_ca, dir_a, "node-a", RIO_CRED_FORCE, err, sizeof(err)), RIO_OK);
	SSL_CTX *a3 = rio_tls_ctx_new(dir_a, RIO_ROLE_SERVER, node, sizeof(node), err, sizeof(err));
	assert_non_null(a3);
	assert_ptr_not_equal(a3, a1);
	assert_ptr_not_equal(a3, b1);
	SSL_CTX *a4 = rio_tls_ctx_new(dir_a, RIO_ROLE_SERVER, node, sizeof(node), err, sizeof(err));
	assert_ptr_equal(a4, a3);

	/* rio_tls_prepare keeps a current context and rebuilds a stale one. */
	assert_int_equal(rio_tls_prepare(dir_a, err, sizeof(err)), RIO_OK);
	SSL_CTX *a5 = rio_tls_ctx_new(dir_a, RIO_ROLE_SERVER, node, sizeof(node), err, sizeof(err));
	assert_ptr_equal(a5, a3);
	SSL_CTX *c2 = rio_tls_ctx_new(dir_a, RIO_ROLE_CLIENT, node, sizeof(node), err, sizeof(err));
	assert_non_null(c2);
	assert_ptr_not_equal(c2, c1);
	/* A dir without a node credential is refused, as before. */
	assert_int_equal(rio_tls_prepare(dir_ca, err, sizeof(err)), RIO_E_CRED);

	SSL_CTX *all[] = { a1, a2, c1, b1, a3, a4, a5, c2 };
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		SSL_CTX_free(all[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hdr_roundtrip),
		cmocka_unit_test(test_hdr_rejects),
		cmocka_unit_test(test_frame_prefixes),
		cmocka_unit_test(test_fields_roundtrip),
		cmocka_unit_test(test_fields_bounds),
		cmocka_unit_test(test_control_payloads),
		cmocka_unit_test(test_dedup_basic),
		cmocka_unit_test(test_dedup_bounds),
		cmocka_unit_test(test_dedup_waits_for_running),
		cmocka_unit_test(test_cred_layout),
		cmocka_unit_test(test_cred_refusals),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_echo_and_identity),
		cmocka_unit_test(test_concurrent_calls),
		cmocka_unit_test(test_bulk_writer_calls),
		cmocka_unit_test(test_payload_limits),
		cmocka_unit_test(test_call_timeout),
		cmocka_unit_test(test_foreign_cluster_refused),
		cmocka_unit_test(test_revocation),
		cmocka_unit_test(test_retry_applied_once),
		cmocka_unit_test(test_restart_in_doubt),
		cmocka_unit_test(test_graceful_stop_and_reconnect),
		cmocka_unit_test(test_client_destroy_in_flight),
		cmocka_unit_test(test_silent_and_garbage_peers),
		cmocka_unit_test(test_handshake_budget),
		cmocka_unit_test(test_protocol_violations),
		cmocka_unit_test(test_keepalive_and_idle),
		cmocka_unit_test(test_tls_ctx_shared),
	};

	return cmocka_run_group_tests(tests, creds_setup, creds_teardown);
}
