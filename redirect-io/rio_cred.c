/* Cluster credential: a CA per cluster and a CA-signed certificate per node,
 * generated with OpenSSL's EVP/X509 APIs (EC P-256). */
#include "redirect-io/rio_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CA_DAYS   (20 * 365)
#define NODE_DAYS (10 * 365)
/* Tolerates clocks of freshly installed nodes that lag the issuing node. */
#define BACKDATE_SECONDS 3600

bool rio_node_name_valid(const char *name)
{
	size_t n = name ? strlen(name) : 0;

	if (n == 0 || n > RIO_NODE_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '-' && c != '_' && c != '.')))
			return false;
	}
	return true;
}

static void openssl_err(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "unknown error";

	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	rio_seterr(err, errlen, "%s: %s", what, buf);
}

static void path_join(char *out, size_t outlen, const char *dir, const char *file)
{
	snprintf(out, outlen, "%s/%s", dir, file);
}

/* mkdir -p, new components 0700: the directory holds private keys. */
static int make_dir(const char *dir, char *err, size_t errlen)
{
	char tmp[PATH_MAX];

	if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp)) {
		rio_seterr(err, errlen, "path too long: %s", dir);
		return RIO_E_INVAL;
	}
	for (char *p = tmp + 1; ; p++) {
		bool end = *p == '\0';
		if (*p != '/' && !end)
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
			rio_seterr(err, errlen, "mkdir %s: %s", tmp, strerror(errno));
			return RIO_E_CRED;
		}
		if (end)
			break;
		*p = '/';
	}
	return RIO_OK;
}

/* Writes via a temporary file and rename, so a reader never sees half a key
 * and an existing file is replaced only with RIO_CRED_FORCE. */
static int write_pem(const char *path, mode_t mode, unsigned flags,
		     int (*emit)(BIO *, void *), void *obj, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	int fd, rc = RIO_E_CRED;
	BIO *bio;

	if (!(flags & RIO_CRED_FORCE) && access(path, F_OK) == 0) {
		rio_seterr(err, errlen, "%s exists (use force to overwrite)", path);
		return RIO_E_CRED;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0) {
		rio_seterr(err, errlen, "create %s: %s", tmp, strerror(errno));
		return RIO_E_CRED;
	}
	fchmod(fd, mode); /* the umask may have narrowed it; never widened */
	bio = BIO_new_fd(fd, BIO_CLOSE);
	if (!bio) {
		close(fd);
		openssl_err(err, errlen, path);
	} else if (!emit(bio, obj) || BIO_flush(bio) != 1) {
		openssl_err(err, errlen, path);
	} else if (fsync(fd) != 0 || rename(tmp, path) != 0) {
		rio_seterr(err, errlen, "write %s: %s", path, strerror(errno));
	} else {
		rc = RIO_OK;
	}
	BIO_free(bio);
	if (rc != RIO_OK)
		unlink(tmp);
	return rc;
}

static int emit_key(BIO *b, void *key)
{
	return PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
}

static int emit_cert(BIO *b, void *cert) { return PEM_write_bio_X509(b, cert); }

static int emit_crl(BIO *b, void *crl) { return PEM_write_bio_X509_CRL(b, crl); }

static EVP_PKEY *load_key(const char *path, char *err, size_t errlen)
{
	struct stat st;
	EVP_PKEY *key = NULL;
	FILE *f;

	if (stat(path, &st) != 0) {
		rio_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (st.st_mode & 077) {
		rio_seterr(err, errlen, "%s is accessible by group or others (mode %04o); chmod 0600",
			   path, (unsigned)(st.st_mode & 07777));
		return NULL;
	}
	f = fopen(path, "re");
	if (!f) {
		rio_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!key)
		openssl_err(err, errlen, path);
	return key;
}

/* One PEM object from path; read is one of the PEM_read_* adapters below. */
static void *load_pem(const char *path, void *(*read)(FILE *), char *err, size_t errlen)
{
	void *obj;
	FILE *f = fopen(path, "re");

	if (!f) {
		rio_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	obj = read(f);
	fclose(f);
	if (!obj)
		openssl_err(err, errlen, path);
	return obj;
}

static void *read_cert(FILE *f) { return PEM_read_X509(f, NULL, NULL, NULL); }

static void *read_crl(FILE *f) { return PEM_read_X509_CRL(f, NULL, NULL, NULL); }

static X509 *load_cert(const char *path, char *err, size_t errlen)
{
	return load_pem(path, read_cert, err, errlen);
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return 0;
	ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok;
}

static int set_random_serial(X509 *cert)
{
	BIGNUM *bn = BN_new();
	int ok = bn && BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
		 BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL;

	BN_free(bn);
	return ok;
}

static X509 *new_cert(EVP_PKEY *key, const char *cn, const char *org, long days)
{
	X509 *cert = X509_new();
	X509_NAME *name;

	if (!cert)
		return NULL;
	name = X509_get_subject_name(cert);
	if (!X509_set_version(cert, X509_VERSION_3) || !set_random_serial(cert) ||
	    !X509_gmtime_adj(X509_getm_notBefore(cert), -BACKDATE_SECONDS) ||
	    !X509_time_adj_ex(X509_getm_notAfter(cert), (int)days, 0, NULL) ||
	    !X509_set_pubkey(cert, key) ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)org, -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0)) {
		X509_free(cert);
		return NULL;
	}
	return cert;
}

static int write_pair(const char *dir, const char *crt_name, const char *key_name, X509 *cert,
		      EVP_PKEY *key, unsigned flags, char *err, size_t errlen)
{
	char crt[PATH_MAX], keyp[PATH_MAX];
	int rc;

	path_join(crt, sizeof(crt), dir, crt_name);
	path_join(keyp, sizeof(keyp), dir, key_name);
	rc = write_pem(keyp, 0600, flags, emit_key, key, err, errlen);
	if (rc == RIO_OK)
		rc = write_pem(crt, 0644, flags, emit_cert, cert, err, errlen);
	return rc;
}

/* ---- revocation ------------------------------------------------------------
 * The CA directory keeps ca.crl (signed by ca.key; the revoked node
 * certificates by serial) and issued/<serial>.crt, a copy of every node
 * certificate it issued, so that a node can be revoked by name. Each node's
 * credential directory holds a copy of ca.crl: OpenSSL checks every peer
 * against it in the handshake (rio_tls.c), and rio_cred_check refuses a node
 * whose own certificate it lists. The CRL is valid as long as the CA is, so
 * a cluster never stops because nobody re-signed it. */

static X509_CRL *load_crl_file(const char *path, char *err, size_t errlen)
{
	return load_pem(path, read_crl, err, errlen);
}

static int crl_load_under(const char *dir, X509 *ca, X509_CRL **out, char *err, size_t errlen)
{
	char path[PATH_MAX];
	X509_CRL *crl;

	*out = NULL;
	path_join(path, sizeof(path), dir, "ca.crl");
	if (access(path, F_OK) != 0)
		return RIO_OK;
	crl = load_crl_file(path, err, errlen);
	if (!crl)
		return RIO_E_CRED;
	if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) != 0 ||
	    X509_CRL_verify(crl, X509_get0_pubkey(ca)) != 1) {
		ERR_clear_error();
		rio_seterr(err, errlen, "%s is not signed by the CA in ca.crt (another cluster's CRL?)",
			   path);
		X509_CRL_free(crl);
		return RIO_E_CRED;
	}
	*out = crl;
	return RIO_OK;
}

int rio_crl_load(const char *dir, X509_CRL **out, char *err, size_t errlen)
{
	char path[PATH_MAX];
	X509 *ca;
	int rc;

	*out = NULL;
	path_join(path, sizeof(path), dir, "ca.crl");
	if (access(path, F_OK) != 0)
		return RIO_OK;
	path_join(path, sizeof(path), dir, "ca.crt");
	ca = load_cert(path, err, errlen);
	rc = ca ? crl_load_under(dir, ca, out, err, errlen) : RIO_E_CRED;
	X509_free(ca);
	return rc;
}

static void serial_hex(X509 *cert, char *out, size_t outlen)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;

	snprintf(out, outlen, "%s", hex ? hex : "?");
	OPENSSL_free(hex);
	BN_free(bn);
}

static bool crl_lists(X509_CRL *crl, X509 *cert)
{
	X509_REVOKED *entry = NULL;

	return crl && X509_CRL_get0_by_cert(crl, &entry, cert) == 1;
}

static int add_revoked(X509_CRL *crl, const ASN1_INTEGER *serial, const ASN1_TIME *when)
{
	X509_REVOKED *r = X509_REVOKED_new();

	if (r && X509_REVOKED_set_serialNumber(r, (ASN1_INTEGER *)serial) &&
	    X509_REVOKED_set_revocationDate(r, (ASN1_TIME *)when) && X509_CRL_add0_revoked(crl, r))
		return 1;
	X509_REVOKED_free(r);
	return 0;
}

/* The CRL number goes up by one each time, as RFC 5280 asks. */
static int set_crl_number(X509_CRL *crl, X509_CRL *old)
{
	ASN1_INTEGER *prev = old ? X509_CRL_get_ext_d2i(old, NID_crl_number, NULL, NULL) : NULL;
	ASN1_INTEGER *next = ASN1_INTEGER_new();
	long n = prev ? ASN1_INTEGER_get(prev) : 0;
	int ok = next && ASN1_INTEGER_set(next, n + 1) &&
		 X509_CRL_add1_ext_i2d(crl, NID_crl_number, next, 0, 0) == 1;

	ASN1_INTEGER_free(prev);
	ASN1_INTEGER_free(next);
	return ok;
}

static int set_crl_aki(X509_CRL *crl, X509 *ca)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&v3, ca, NULL, NULL, crl, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_authority_key_identifier, "keyid:always");
	ok = ext && X509_CRL_add_ext(crl, ext, -1);
	X509_EXTENSION_free(ext);
	return ok;
}

/* A new CRL signed by ca_key: old's entries (old may be NULL) and add's. */
static X509_CRL *crl_build(X509 *ca, EVP_PKEY *ca_key, X509_CRL *old, STACK_OF(X509) *add)
{
	STACK_OF(X509_REVOKED) *prev = old ? X509_CRL_get_REVOKED(old) : NULL;
	ASN1_TIME *issued = X509_gmtime_adj(NULL, -BACKDATE_SECONDS);
	ASN1_TIME *now = X509_gmtime_adj(NULL, 0);
	X509_CRL *crl = X509_CRL_new();
	int ok = crl && issued && now && X509_CRL_set_version(crl, X509_CRL_VERSION_2) &&
		 X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) &&
		 X509_CRL_set1_lastUpdate(crl, issued) &&
		 X509_CRL_set1_nextUpdate(crl, X509_get0_notAfter(ca));

	for (int i = 0; ok && i < sk_X509_REVOKED_num(prev); i++) {
		X509_REVOKED *r = sk_X509_REVOKED_value(prev, i);
		ok = add_revoked(crl, X509_REVOKED_get0_serialNumber(r), X509_REVOKED_get0_revocationDate(r));
	}
	for (int i = 0; ok && i < sk_X509_num(add); i++)
		ok = add_revoked(crl, X509_get0_serialNumber(sk_X509_value(add, i)), now);
	ok = ok && set_crl_number(crl, old) && set_crl_aki(crl, ca) && X509_CRL_sort(crl) &&
	     X509_CRL_sign(crl, ca_key, EVP_sha256());
	ASN1_TIME_free(issued);
	ASN1_TIME_free(now);
	if (!ok) {
		X509_CRL_free(crl);
		return NULL;
	}
	return crl;
}

static int write_crl(const char *ca_dir, X509 *ca, EVP_PKEY *ca_key, X509_CRL *old,
		     STACK_OF(X509) *add, char *err, size_t errlen)
{
	char path[PATH_MAX];
	X509_CRL *crl = crl_build(ca, ca_key, old, add);
	int rc;

	if (!crl) {
		openssl_err(err, errlen, "signing the revocation list");
		return RIO_E_CRED;
	}
	path_join(path, sizeof(path), ca_dir, "ca.crl");
	rc = write_pem(path, 0644, RIO_CRED_FORCE, emit_crl, crl, err, errlen);
	X509_CRL_free(crl);
	return rc;
}

/* Keeps a copy of a node certificate the CA issued, named by its serial. */
static int record_issued(const char *ca_dir, X509 *cert, char *err, size_t errlen)
{
	char dir[PATH_MAX], path[PATH_MAX + 64], hex[48];
	int rc;

	path_join(dir, sizeof(dir), ca_dir, "issued");
	rc = make_dir(dir, err, errlen);
	serial_hex(cert, hex, sizeof(hex));
	snprintf(path, sizeof(path), "%s/%s.crt", dir, hex);
	return rc == RIO_OK ? write_pem(path, 0644, 0, emit_cert, cert, err, errlen) : rc;
}

/* Every certificate in ca_dir/issued naming node_name: pushed onto add
 * unless old lists it already. Returns how many name it, listed or not. */
static unsigned collect_issued(const char *ca_dir, const char *node_name, X509_CRL *old,
			       STACK_OF(X509) *add)
{
	char dir[PATH_MAX], path[PATH_MAX + 256], name[RIO_NODE_NAME_MAX + 1], ignored[64];
	unsigned found = 0;
	struct dirent *e;
	DIR *d;

	path_join(dir, sizeof(dir), ca_dir, "issued");
	d = opendir(dir);
	while (d && (e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		X509 *cert;
		if (n < 5 || strcmp(e->d_name + n - 4, ".crt") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		cert = load_cert(path, ignored, sizeof(ignored));
		if (cert && rio_cert_node_name(cert, name, sizeof(name)) == RIO_OK &&
		    strcmp(name, node_name) == 0) {
			found++;
			if (!crl_lists(old, cert) && sk_X509_push(add, cert) > 0)
				cert = NULL;
		}
		X509_free(cert);
	}
	if (d)
		closedir(d);
	return found;
}

static int verify_issued_by(X509 *cert, X509 *ca, char *err, size_t errlen);

/* The certificates to revoke: cert_path's, or every one issued to node_name. */
static int revoke_targets(const char *ca_dir, const char *node_name, const char *cert_path, X509 *ca,
			  X509_CRL *old, STACK_OF(X509) *add, char *err, size_t errlen)
{
	X509 *cert;

	if (!cert_path) {
		if (collect_issued(ca_dir, node_name, old, add) > 0)
			return RIO_OK;
		rio_seterr(err, errlen, "%s/issued records no certificate issued to %s (revoke a "
			   "certificate issued before csvfs kept records by its file: --cert NODE.crt)",
			   ca_dir, node_name);
		return RIO_E_INVAL;
	}
	cert = load_cert(cert_path, err, errlen);
	if (!cert)
		return RIO_E_CRED;
	if (verify_issued_by(cert, ca, err, errlen) != RIO_OK) {
		rio_seterr(err, errlen, "%s was not issued by the CA in %s", cert_path, ca_dir);
		X509_free(cert);
		return RIO_E_INVAL;
	}
	if (!crl_lists(old, cert) && sk_X509_push(add, cert) > 0)
		return RIO_OK;
	X509_free(cert);
	return RIO_OK;
}

/* The CA in ca_dir: its certificate and its key, which must match. RIO_OK
 * with both set; otherwise neither (freed), the cause in err. */
static int load_ca(const char *ca_dir, X509 **ca, EVP_PKEY **ca_key, char *err, size_t errlen)
{
	char path[PATH_MAX];
	path_join(path, sizeof(path), ca_dir, "ca.crt");
	*ca = load_cert(path, err, errlen);
	path_join(path, sizeof(path), ca_dir, "ca.key");
	*ca_key = *ca ? load_key(path, err, errlen) : NULL;
	if (*ca_key && X509_check_private_key(*ca, *ca_key) == 1)
		return RIO_OK;
	if (*ca_key) {
		ERR_clear_error();
		rio_seterr(err, errlen, "%s does not match ca.crt", path);
	}
	X509_free(*ca);
	EVP_PKEY_free(*ca_key);
	*ca = NULL;
	*ca_key = NULL;
	return RIO_E_CRED;
}

int rio_cred_revoke(const char *ca_dir, const char *node_name, const char *cert_path,
		    unsigned *revoked, char *err, size_t errlen)
{
	STACK_OF(X509) *add = sk_X509_new_null();
	EVP_PKEY *ca_key = NULL;
	X509_CRL *old = NULL;
	X509 *ca = NULL;
	int rc = RIO_E_CRED;

	*revoked = 0;
	if (!ca_dir || (!cert_path && !rio_node_name_valid(node_name)) || !add) {
		rio_seterr(err, errlen, "say which node to revoke: a valid node name or a certificate file");
		sk_X509_free(add);
		return RIO_E_INVAL;
	}
	if (load_ca(ca_dir, &ca, &ca_key, err, errlen) == RIO_OK &&
	    crl_load_under(ca_dir, ca, &old, err, errlen) == RIO_OK) {
		rc = revoke_targets(ca_dir, node_name, cert_path, ca, old, add, err, errlen);
		*revoked = (unsigned)sk_X509_num(add);
		/* Nothing new: the CRL stays as it is (its number too), unless there is none. */
		if (rc == RIO_OK && (*revoked || !old))
			rc = write_crl(ca_dir, ca, ca_key, old, add, err, errlen);
	}
	sk_X509_pop_free(add, X509_free);
	X509_CRL_free(old);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return rc;
}

/* The CA's current CRL goes with every credential it issues. */
static int copy_crl(const char *ca_dir, const char *node_dir, X509 *ca, char *err, size_t errlen)
{
	char dst[PATH_MAX];
	X509_CRL *crl = NULL;
	int rc = crl_load_under(ca_dir, ca, &crl, err, errlen);

	if (rc != RIO_OK || !crl)
		return rc;
	path_join(dst, sizeof(dst), node_dir, "ca.crl");
	rc = write_pem(dst, 0644, RIO_CRED_FORCE, emit_crl, crl, err, errlen);
	X509_CRL_free(crl);
	return rc;
}

static int check_not_revoked(const char *dir, X509 *ca, X509 *cert, char *err, size_t errlen)
{
	char hex[80];
	X509_CRL *crl = NULL;
	int rc = crl_load_under(dir, ca, &crl, err, errlen);

	if (rc == RIO_OK && crl_lists(crl, cert)) {
		serial_hex(cert, hex, sizeof(hex));
		rio_seterr(err, errlen, "node.crt in %s (serial %s) is revoked by %s/ca.crl: this node "
			   "may not join; issue it a new credential", dir, hex, dir);
		rc = RIO_E_CRED;
	}
	X509_CRL_free(crl);
	return rc;
}

int rio_cred_create_ca(const char *ca_dir, const char *cluster_name, unsigned flags,
		       char *err, size_t errlen)
{
	char cn[96], org[128];
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	int rc;

	if (!ca_dir || (cluster_name && strlen(cluster_name) > 64)) {
		rio_seterr(err, errlen, "invalid CA directory or cluster name");
		return RIO_E_INVAL;
	}
	rc = make_dir(ca_dir, err, errlen);
	if (rc != RIO_OK)
		return rc;
	/* A random id in the CA's name: two clusters' CAs never share a subject,
	 * so a foreign certificate fails as "unknown issuer", not as a bad
	 * signature from a look-alike. */
	snprintf(cn, sizeof(cn), "csvfs cluster CA %016llx", (unsigned long long)rio_random_u64());
	snprintf(org, sizeof(org), "csvfs cluster %s", cluster_name ? cluster_name : "");
	rc = RIO_E_CRED;
	key = EVP_EC_gen("P-256");
	if (key)
		cert = new_cert(key, cn, org, CA_DAYS);
	if (!cert || !X509_set_issuer_name(cert, X509_get_subject_name(cert)) ||
	    !add_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
	    !add_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    !add_ext(cert, cert, NID_subject_key_identifier, "hash") ||
	    !X509_sign(cert, key, EVP_sha256())) {
		openssl_err(err, errlen, "creating CA certificate");
	} else {
		rc = write_pair(ca_dir, "ca.crt", "ca.key", cert, key, flags, err, errlen);
		/* An empty CRL from the start: every node checks one, and a
		 * revocation later only replaces it. */
		if (rc == RIO_OK)
			rc = write_crl(ca_dir, cert, key, NULL, NULL, err, errlen);
	}
	X509_free(cert);
	EVP_PKEY_free(key);
	return rc;
}

static X509 *sign_node_cert(EVP_PKEY *node_key, const char *node_name, X509 *ca, EVP_PKEY *ca_key)
{
	char san[RIO_NODE_NAME_MAX + 8];
	char org[256] = "csvfs";
	X509 *cert;
	X509_NAME *ca_name = X509_get_subject_name(ca);
	int idx = X509_NAME_get_index_by_NID(ca_name, NID_organizationName, -1);

	if (idx >= 0) {
		ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(ca_name, idx));
		snprintf(org, sizeof(org), "%.*s", ASN1_STRING_length(s), ASN1_STRING_get0_data(s));
	}
	snprintf(san, sizeof(san), "DNS:%s", node_name);
	cert = new_cert(node_key, node_name, org, NODE_DAYS);
	if (!cert)
		return NULL;
	/* Every node is both a client (participant) and a server (coordinator). */
	if (!X509_set_issuer_name(cert, ca_name) ||
	    !add_ext(cert, ca, NID_basic_constraints, "critical,CA:FALSE") ||
	    !add_ext(cert, ca, NID_key_usage, "critical,digitalSignature") ||
	    !add_ext(cert, ca, NID_ext_key_usage, "serverAuth,clientAuth") ||
	    !add_ext(cert, ca, NID_subject_alt_name, san) ||
	    !add_ext(cert, ca, NID_subject_key_identifier, "hash") ||
	    !add_ext(cert, ca, NID_authority_key_identifier, "keyid:always") ||
	    !X509_sign(cert, ca_key, EVP_sha256())) {
		X509_free(cert);
		return NULL;
	}
	return cert;
}

/* True when node_dir already holds this CA's certificate (it may be the CA
 * directory itself, or a node directory being re-issued). */
static bool has_same_ca_cert(const char *node_dir, X509 *ca)
{
	char dst[PATH_MAX], ignored[64];
	X509 *have;
	bool same;

	path_join(dst, sizeof(dst), node_dir, "ca.crt");
	if (access(dst, F_OK) != 0)
		return false;
	have = load_cert(dst, ignored, sizeof(ignored));
	same = have && X509_cmp(have, ca) == 0;
	X509_free(have);
	return same;
}

/* Without RIO_CRED_FORCE nothing is written unless every file can be: a
 * half-issued credential (a new key beside an old certificate) is worse than
 * none. */
static int issue_preflight(const char *node_dir, X509 *ca, unsigned flags, char *err, size_t errlen)
{
	static const char *const files[] = { "node.key", "node.crt", "ca.crt" };
	char p[PATH_MAX];

	if (flags & RIO_CRED_FORCE)
		return RIO_OK;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		path_join(p, sizeof(p), node_dir, files[i]);
		if (i == 2 && has_same_ca_cert(node_dir, ca))
			continue;
		if (access(p, F_OK) == 0) {
			rio_seterr(err, errlen, "%s exists (use force to overwrite)", p);
			return RIO_E_CRED;
		}
	}
	return RIO_OK;
}

static int copy_ca_cert(const char *node_dir, X509 *ca, unsigned flags, char *err, size_t errlen)
{
	char dst[PATH_MAX];

	if (has_same_ca_cert(node_dir, ca))
		return RIO_OK;
	path_join(dst, sizeof(dst), node_dir, "ca.crt");
	return write_pem(dst, 0644, flags, emit_cert, ca, err, errlen);
}

int rio_cred_issue_node(const char *ca_dir, const char *node_dir, const char *node_name,
			unsigned flags, char *err, size_t errlen)
{
	EVP_PKEY *ca_key = NULL, *key = NULL;
	X509 *ca = NULL, *cert = NULL;
	int rc = RIO_E_CRED;

	if (!ca_dir || !node_dir || !rio_node_name_valid(node_name)) {
		rio_seterr(err, errlen, "invalid node name '%s' (1-%d of A-Z a-z 0-9 . _ -)",
			   node_name ? node_name : "", RIO_NODE_NAME_MAX);
		return RIO_E_INVAL;
	}
	if (load_ca(ca_dir, &ca, &ca_key, err, errlen) == RIO_OK && make_dir(node_dir, err, errlen) == RIO_OK &&
		   issue_preflight(node_dir, ca, flags, err, errlen) == RIO_OK) {
		key = EVP_EC_gen("P-256");
		cert = key ? sign_node_cert(key, node_name, ca, ca_key) : NULL;
		/* Recorded first: a certificate the CA cannot find again by name
		 * could not be revoked by name. */
		if (!cert)
			openssl_err(err, errlen, "issuing node certificate");
		else
			rc = record_issued(ca_dir, cert, err, errlen);
		if (rc == RIO_OK)
			rc = write_pair(node_dir, "node.crt", "node.key", cert, key, flags, err, errlen);
		if (rc == RIO_OK)
			rc = copy_ca_cert(node_dir, ca, flags, err, errlen);
		if (rc == RIO_OK)
			rc = copy_crl(ca_dir, node_dir, ca, err, errlen);
	}
	X509_free(cert);
	EVP_PKEY_free(key);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return rc;
}

int rio_cert_node_name(X509 *cert, char *out, size_t outlen)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	char name[RIO_NODE_NAME_MAX + 1] = "";

	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && !name[0]; i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		if (g->type == GEN_DNS && ASN1_STRING_length(g->d.dNSName) <= RIO_NODE_NAME_MAX)
			snprintf(name, sizeof(name), "%.*s", ASN1_STRING_length(g->d.dNSName),
				 ASN1_STRING_get0_data(g->d.dNSName));
	}
	GENERAL_NAMES_free(sans);
	if (!name[0]) {
		X509_NAME *subj = X509_get_subject_name(cert);
		int idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
		ASN1_STRING *s = idx >= 0 ? X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx)) : NULL;
		if (s && ASN1_STRING_length(s) <= RIO_NODE_NAME_MAX)
			snprintf(name, sizeof(name), "%.*s", ASN1_STRING_length(s), ASN1_STRING_get0_data(s));
	}
	/* Validated because it goes into logs and cache keys; embedded NULs fail too. */
	if (!rio_node_name_valid(name) || strlen(name) >= outlen)
		return RIO_E_CRED;
	snprintf(out, outlen, "%s", name);
	return RIO_OK;
}

static int verify_issued_by(X509 *cert, X509 *ca, char *err, size_t errlen)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	int rc = RIO_E_CRED;

	if (store && ctx && X509_STORE_add_cert(store, ca) &&
	    X509_STORE_CTX_init(ctx, store, cert, NULL)) {
		if (X509_verify_cert(ctx) == 1)
			rc = RIO_OK;
		else
			rio_seterr(err, errlen, "node.crt is not valid under ca.crt: %s",
				   X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
	} else {
		openssl_err(err, errlen, "verifying node.crt");
	}
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return rc;
}

int rio_cred_check(const char *dir, char *node_name, size_t node_name_len, char *err, size_t errlen)
{
	char path[PATH_MAX];
	X509 *ca = NULL, *cert = NULL;
	EVP_PKEY *key = NULL;
	int rc = RIO_E_CRED;

	if (!dir)
		dir = RIO_DEFAULT_CRED_DIR;
	path_join(path, sizeof(path), dir, "ca.crt");
	ca = load_cert(path, err, errlen);
	path_join(path, sizeof(path), dir, "node.crt");
	cert = ca ? load_cert(path, err, errlen) : NULL;
	path_join(path, sizeof(path), dir, "node.key");
	key = cert ? load_key(path, err, errlen) : NULL;
	if (!key) {
		/* err already says which file */
	} else if (X509_check_private_key(cert, key) != 1) {
		ERR_clear_error();
		rio_seterr(err, errlen, "%s does not match node.crt", path);
	} else if (verify_issued_by(cert, ca, err, errlen) == RIO_OK &&
		   check_not_revoked(dir, ca, cert, err, errlen) == RIO_OK) {
		rc = rio_cert_node_name(cert, node_name, node_name_len);
		if (rc != RIO_OK)
			rio_seterr(err, errlen, "node.crt in %s carries no valid node name", dir);
	}
	X509_free(ca);
	X509_free(cert);
	EVP_PKEY_free(key);
	return rc;
}
