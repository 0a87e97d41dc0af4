/* TLS 1.3 contexts with mutual authentication against the cluster CA. */
#include "redirect-io/rio_impl.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define RIO_TLS_CIPHERSUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
/* Several full records (16 KiB + overhead each) per read. */
#define RIO_TLS_READ_BUFFER (128u << 10)

static void ctx_fail(SSL_CTX *ctx, char *err, size_t errlen, const char *what, const char *path)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "unknown error";

	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	rio_seterr(err, errlen, "%s %s: %s", what, path, buf);
	SSL_CTX_free(ctx);
}

/* A refused peer's certificate is not trusted, but the node name it claims
 * makes the refusal's log line say which node was turned away. */
static int verify_note_claim(int ok, X509_STORE_CTX *xctx)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(xctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct rio_link *l = ssl ? SSL_get_app_data(ssl) : NULL;
	X509 *cert = X509_STORE_CTX_get0_cert(xctx);

	if (!ok && l && cert && !l->claimed[0] &&
	    rio_cert_node_name(cert, l->claimed, sizeof(l->claimed)) != RIO_OK)
		l->claimed[0] = '\0';
	return ok;
}

/* Peer verification: only our CA is trusted (no system store), a peer must
 * send a certificate, and it must be a node certificate fit for its role,
 * not listed in the CA's revocation list when the credential has one. */
static int ctx_set_verify(SSL_CTX *ctx, const char *cred_dir, const char *ca_path, enum rio_role role,
			  char *err, size_t errlen)
{
	X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
	unsigned long flags = X509_V_FLAG_X509_STRICT;
	X509_CRL *crl = NULL;

	if (SSL_CTX_load_verify_locations(ctx, ca_path, NULL) != 1)
		return 0;
	if (rio_crl_load(cred_dir, &crl, err, errlen) != RIO_OK)
		return -1;
	if (crl) {
		int added = X509_STORE_add_crl(SSL_CTX_get_cert_store(ctx), crl);
		X509_CRL_free(crl);
		if (!added)
			return 0;
		flags |= X509_V_FLAG_CRL_CHECK;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_note_claim);
	SSL_CTX_set_verify_depth(ctx, 1); /* node cert directly under the cluster CA */
	X509_VERIFY_PARAM_set_flags(param, flags);
	X509_VERIFY_PARAM_set_purpose(param, role == RIO_ROLE_SERVER ? X509_PURPOSE_SSL_CLIENT
								     : X509_PURPOSE_SSL_SERVER);
	if (role == RIO_ROLE_SERVER) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_path);
		if (!names)
			return 0;
		SSL_CTX_set_client_CA_list(ctx, names);
	}
	return 1;
}

static SSL_CTX *ctx_build(const char *cred_dir, enum rio_role role, char *node, size_t nodelen,
			  char *err, size_t errlen)
{
	char ca[PATH_MAX], crt[PATH_MAX], key[PATH_MAX];
	SSL_CTX *ctx;

	/* Checked up front so a misconfigured node says which file is wrong
	 * instead of failing every handshake. */
	if (rio_cred_check(cred_dir, node, nodelen, err, errlen) != RIO_OK)
		return NULL;
	snprintf(ca, sizeof(ca), "%s/ca.crt", cred_dir);
	snprintf(crt, sizeof(crt), "%s/node.crt", cred_dir);
	snprintf(key, sizeof(key), "%s/node.key", cred_dir);
	ctx = SSL_CTX_new(role == RIO_ROLE_SERVER ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		ctx_fail(NULL, err, errlen, "creating TLS context", "");
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
		ctx_fail(ctx, err, errlen, "enabling TLS 1.3", "");
		return NULL;
	}
	if (SSL_CTX_use_certificate_file(ctx, crt, SSL_FILETYPE_PEM) != 1) {
		ctx_fail(ctx, err, errlen, "loading", crt);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ctx_fail(ctx, err, errlen, "loading", key);
		return NULL;
	}
	int verify = ctx_set_verify(ctx, cred_dir, ca, role, err, errlen);
	if (verify <= 0) {
		if (verify == 0)
			ctx_fail(ctx, err, errlen, "loading", ca);
		else
			SSL_CTX_free(ctx); /* err says which file */
		return NULL;
	}
	/* No resumption: every connection proves its certificate afresh, and a
	 * client never has to read tickets it would not use. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	/* Non-blocking writes of large frames resume from where they stopped. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* Send the node certificate alone: the peer trusts only the CA it has. */
	SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
	SSL_CTX_clear_mode(ctx, SSL_MODE_AUTO_RETRY);
	/* Redirected file data is most of the bytes: AES-128-GCM first (with
	 * AES-NI the fastest TLS 1.3 suite here, fewer rounds than AES-256),
	 * the others still accepted. */
	if (SSL_CTX_set_ciphersuites(ctx, RIO_TLS_CIPHERSUITES) != 1) {
		ctx_fail(ctx, err, errlen, "setting the TLS 1.3 cipher suites", "");
		return NULL;
	}
	/* Read whole records and whatever follows them in one recv: a 1 MiB
	 * frame is 64 records, two reads each without this. */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, RIO_TLS_READ_BUFFER);
	return ctx;
}

int rio_tls_peer_name(SSL *ssl, char *out, size_t outlen)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);

	if (!cert || SSL_get_verify_result(ssl) != X509_V_OK)
		return RIO_E_TLS;
	return rio_cert_node_name(cert, out, outlen);
}

void rio_tls_describe(SSL *ssl, int ssl_err, char *why, size_t len)
{
	unsigned long e = ERR_peek_last_error();
	long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	const char *reason = e ? ERR_reason_error_string(e) : NULL;

	if (vr != X509_V_OK) {
		snprintf(why, len, "certificate verify failed (%s)", X509_verify_cert_error_string(vr));
	} else if (reason && ERR_GET_LIB(e) == ERR_LIB_SSL &&
		   ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET) {
		/* An alert from the peer: it refused us (e.g. our certificate is revoked). */
		snprintf(why, len, "the peer refused the handshake: %s", reason);
	} else if (reason) {
		snprintf(why, len, "%s", reason);
	} else if (ssl_err == SSL_ERROR_SYSCALL && errno) {
		snprintf(why, len, "%s", strerror(errno));
	} else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN) {
		snprintf(why, len, "connection closed by peer");
	} else {
		snprintf(why, len, "TLS error %d", ssl_err);
	}
	ERR_clear_error();
}

/* The identity of cred_dir/name now (present false: no such file). */
static struct rio_crl_stamp file_stamp(const char *cred_dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", cred_dir, name);
	if (stat(path, &st) != 0)
		return (struct rio_crl_stamp){ 0 };
	return (struct rio_crl_stamp){ .present = true, .dev = st.st_dev, .ino = st.st_ino,
				       .size = st.st_size, .mtime = st.st_mtim };
}

static bool stamp_equal(const struct rio_crl_stamp *a, const struct rio_crl_stamp *b)
{
	return a->present == b->present && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

bool rio_crl_stamp_changed(const char *cred_dir, struct rio_crl_stamp *s)
{
	struct rio_crl_stamp now = file_stamp(cred_dir, "ca.crl");
	bool changed = !stamp_equal(&now, s);
	*s = now;
	return changed;
}

/* ---- contexts, built once per credential -------------------------------- */

/* Building a context takes tens of milliseconds (OpenSSL's method set-up,
 * PEM parsing, the credential check, CA and revocation list), and a
 * coordinator move builds one on the new coordinator and one on every
 * participant that reconnects, all on the applications' critical path. So
 * the last context built for each role is kept and shared (an SSL_CTX is
 * reference-counted and safe to use from several threads; nothing changes
 * one after it is built) while none of the credential's files changed. A
 * replaced file (a renewed certificate, a new ca.crl) builds a fresh one,
 * checked as before. The cache is process-wide state: one mutex guards it. */
static const char *const cred_files[] = { "ca.crt", "node.crt", "node.key", "ca.crl" };
#define CRED_FILES (sizeof(cred_files) / sizeof(cred_files[0]))

struct ctx_cached {
	SSL_CTX *ctx;                      /* one reference is the cache's */
	char cred_dir[PATH_MAX];
	char node[RIO_NODE_NAME_MAX + 1];
	struct rio_crl_stamp stamps[CRED_FILES];
};
static pthread_mutex_t ctx_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ctx_cached ctx_cache[2];    /* by enum rio_role */

static void cred_stamps(const char *cred_dir, struct rio_crl_stamp *out)
{
	for (size_t i = 0; i < CRED_FILES; i++)
		out[i] = file_stamp(cred_dir, cred_files[i]);
}

static bool cached_is_current(const struct ctx_cached *e, const char *cred_dir,
			      const struct rio_crl_stamp *now)
{
	if (!e->ctx || strcmp(e->cred_dir, cred_dir) != 0)
		return false;
	for (size_t i = 0; i < CRED_FILES; i++)
		if (!stamp_equal(&e->stamps[i], &now[i]))
			return false;
	return true;
}

SSL_CTX *rio_tls_ctx_new(const char *cred_dir, enum rio_role role, char *node, size_t nodelen,
			 char *err, size_t errlen)
{
	struct rio_crl_stamp now[CRED_FILES];
	struct ctx_cached *e = &ctx_cache[role == RIO_ROLE_SERVER];
	SSL_CTX *ctx = NULL;

	if (!cred_dir)
		cred_dir = RIO_DEFAULT_CRED_DIR;
	cred_stamps(cred_dir, now);
	pthread_mutex_lock(&ctx_cache_lock);
	if (cached_is_current(e, cred_dir, now) && SSL_CTX_up_ref(e->ctx) == 1) {
		ctx = e->ctx;
		snprintf(node, nodelen, "%s", e->node);
	}
	pthread_mutex_unlock(&ctx_cache_lock);
	if (ctx)
		return ctx;
	ctx = ctx_build(cred_dir, role, node, nodelen, err, errlen);
	if (!ctx || SSL_CTX_up_ref(ctx) != 1)
		return ctx;
	pthread_mutex_lock(&ctx_cache_lock);
	SSL_CTX *old = e->ctx;
	e->ctx = ctx;
	snprintf(e->cred_dir, sizeof(e->cred_dir), "%s", cred_dir);
	snprintf(e->node, sizeof(e->node), "%s", node);
	memcpy(e->stamps, now, sizeof(e->stamps));
	pthread_mutex_unlock(&ctx_cache_lock);
	SSL_CTX_free(old);
	return ctx;
}

int rio_tls_prepare(const char *cred_dir, char *err, size_t errlen)
{
	char node[RIO_NODE_NAME_MAX + 1];
	for (int role = RIO_ROLE_CLIENT; role <= RIO_ROLE_SERVER; role++) {
		SSL_CTX *ctx = rio_tls_ctx_new(cred_dir, (enum rio_role)role, node, sizeof(node), err, errlen);
		if (!ctx)
			return RIO_E_CRED;
		SSL_CTX_free(ctx);
	}
	return RIO_OK;
}

int rio_tls_still_trusted(SSL_CTX *ctx, X509 *cert, char *why, size_t len)
{
	X509_STORE_CTX *xctx = X509_STORE_CTX_new();
	int rc = RIO_E_NOMEM;

	if (xctx && X509_STORE_CTX_init(xctx, SSL_CTX_get_cert_store(ctx), cert, NULL) == 1 &&
	    X509_VERIFY_PARAM_set1(X509_STORE_CTX_get0_param(xctx), SSL_CTX_get0_param(ctx)) == 1) {
		rc = X509_verify_cert(xctx) == 1 ? RIO_OK : RIO_E_TLS;
		if (rc != RIO_OK)
			snprintf(why, len, "%s",
				 X509_verify_cert_error_string(X509_STORE_CTX_get_error(xctx)));
	} else {
		snprintf(why, len, "out of memory");
	}
	ERR_clear_error();
	X509_STORE_CTX_free(xctx);
	return rc;
}
