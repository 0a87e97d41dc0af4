/* csvctl — administer csvfs volumes: status, moving the coordinator role,
 * the cluster credential. */
#include "fs/csvfs.h"
#include "redirect-io/rio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CA_DIR "/etc/csvfs/ca"

static void usage(FILE *to)
{
	fprintf(to,
		"usage: csvctl status [--json] [MOUNTPOINT]   (default %s)\n"
		"       csvctl move [NODE] [--mount MOUNTPOINT]\n"
		"              hand the coordinator role to NODE (default: any other node)\n"
		"       csvctl redirect on|off [NODE] [--for DURATION] [--mount MOUNTPOINT]\n"
		"              send this node's file data through the coordinator, for DURATION\n"
		"              (Ns, Nm, Nh; default 30m, at most 24h), or stop; NODE: this node\n"
		"       csvctl keygen [--cluster NAME] [--ca-dir DIR] [--force]\n"
		"              create the cluster credential (a CA; default %s)\n"
		"       csvctl keygen --node NAME [--ca-dir DIR] [--out DIR] [--force]\n"
		"              issue NAME's node certificate from the CA into DIR (default %s)\n",
		CSVFS_DEFAULT_MOUNTPOINT, DEFAULT_CA_DIR, RIO_DEFAULT_CRED_DIR);
}

static int cmd_keygen(int argc, char **argv)
{
	const char *cluster = NULL, *ca_dir = DEFAULT_CA_DIR, *node = NULL, *out = RIO_DEFAULT_CRED_DIR;
	unsigned flags = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		int has_value = i + 1 < argc;
		if (strcmp(a, "--force") == 0)
			flags |= RIO_CRED_FORCE;
		else if (strcmp(a, "--cluster") == 0 && has_value)
			cluster = argv[++i];
		else if (strcmp(a, "--ca-dir") == 0 && has_value)
			ca_dir = argv[++i];
		else if (strcmp(a, "--node") == 0 && has_value)
			node = argv[++i];
		else if (strcmp(a, "--out") == 0 && has_value)
			out = argv[++i];
		else {
			fprintf(stderr, "csvctl keygen: bad argument '%s'\n", a);
			return 2;
		}
	}
	char err[512];
	if (!node) {
		if (rio_cred_create_ca(ca_dir, cluster, flags, err, sizeof(err)) != 0) {
			fprintf(stderr, "csvctl keygen: %s\n", err);
			return 1;
		}
		printf("cluster credential created in %s (keep ca.key there only; issue each node "
		       "with 'csvctl keygen --node NAME')\n", ca_dir);
		return 0;
	}
	if (!rio_node_name_valid(node)) {
		fprintf(stderr, "csvctl keygen: bad node name '%s' (1-63 of A-Z a-z 0-9 . _ -)\n", node);
		return 2;
	}
	char checked[64];
	if (rio_cred_issue_node(ca_dir, out, node, flags, err, sizeof(err)) != 0 ||
	    rio_cred_check(out, checked, sizeof(checked), err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl keygen: %s\n", err);
		return 1;
	}
	printf("node credential for %s written to %s (ca.crt, node.crt, node.key)\n", checked, out);
	return 0;
}

/* The GUID of the csvfs volume mounted at mnt, from the mount table
 * (the daemon mounts with fsname "csvfs:<GUID>"). */
static int guid_of_mount(const char *mnt, char guid[37])
{
	FILE *f = fopen("/proc/self/mounts", "r");
	if (!f)
		return -errno;
	char src[512], dir[4096], type[64];
	int rc = -ENOENT;
	while (fscanf(f, "%511s %4095s %63s %*[^\n]", src, dir, type) == 3) {
		if (strcmp(dir, mnt) == 0 && strcmp(type, "fuse.csvfs") == 0 &&
		    strncmp(src, "csvfs:", 6) == 0 && strlen(src + 6) == 36) {
			memcpy(guid, src + 6, 37);
			rc = 0;
		}
	}
	fclose(f);
	return rc;
}

/* The value of "key": in a flat stretch of our own JSON (string or literal). */
static const char *field(const char *json, const char *key, char *out, size_t len)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(json, pat);
	out[0] = 0;
	if (!p)
		return out;
	p += strlen(pat);
	int quoted = *p == '"';
	p += quoted;
	size_t n = 0;
	while (*p && n + 1 < len && (quoted ? *p != '"' : (*p != ',' && *p != '}' && *p != ']')))
		out[n++] = *p++;
	out[n] = 0;
	return out;
}

/* The JSON object of one node, from "{\"name\":" to the next node's. */
static void node_object(const char *n, char *out, size_t len)
{
	const char *next = strstr(n + 1, "{\"name\":");
	size_t k = next ? (size_t)(next - n) : strlen(n);
	if (k >= len)
		k = len - 1;
	memcpy(out, n, k);
	out[k] = 0;
}

/* "redirected (path-failure) since T, until T; last path error DEV: E at T" */
static void io_summary(const char *o, char *out, size_t len)
{
	char st[64], since[64], until[64], dev[256], err[128], at[64], rs[128] = "";
	field(o, "io_state", st, sizeof(st));
	const char *r = strstr(o, "\"io_reasons\":[");
	if (r) {
		r += strlen("\"io_reasons\":[");
		size_t k = 0;
		for (; *r && *r != ']' && k + 1 < sizeof(rs); r++)
			if (*r != '"')
				rs[k++] = *r == ',' ? ' ' : *r;
		rs[k] = 0;
	}
	size_t n = (size_t)snprintf(out, len, "%s", st);
	if (rs[0] && n < len)
		n += (size_t)snprintf(out + n, len - n, " (%s)", rs);
	if (strcmp(st, "redirected") == 0 && field(o, "io_since", since, sizeof(since))[0] && n < len)
		n += (size_t)snprintf(out + n, len - n, " since %s", since);
	if (field(o, "io_redirect_until", until, sizeof(until))[0] && strcmp(until, "null") && n < len)
		n += (size_t)snprintf(out + n, len - n, ", user lease until %s", until);
	if (strstr(o, "\"io_last_path_error\":{") && n < len) {
		const char *e = strstr(o, "\"io_last_path_error\":{");
		snprintf(out + n, len - n, "; last path error %s: %s at %s",
			 field(e, "device", dev, sizeof(dev)), field(e, "cause", err, sizeof(err)),
			 field(e, "at", at, sizeof(at)));
	}
}

static void print_human(const char *j)
{
	char a[512], b[512], c[512];
	printf("Volume %s  label \"%s\"\n", field(j, "guid", a, sizeof(a)), field(j, "label", b, sizeof(b)));
	printf("  LUN         %s\n", field(j, "lun", a, sizeof(a)));
	printf("  mounted at  %s (%s)\n", field(j, "mountpoint", a, sizeof(a)), field(j, "mode", b, sizeof(b)));
	unsigned long long blocks = strtoull(field(j, "blocks", a, sizeof(a)), NULL, 10);
	unsigned long long free_b = strtoull(field(j, "free_blocks", a, sizeof(a)), NULL, 10);
	unsigned long long bs = strtoull(field(j, "block_size", a, sizeof(a)), NULL, 10);
	printf("  size        %.1f GiB, %.1f GiB free\n", blocks * bs / 1073741824.0, free_b * bs / 1073741824.0);
	printf("  journal     %s\n", strcmp(field(j, "journaled", a, sizeof(a)), "true") == 0 ? "on" : "off");
	printf("  coordinator %s\n", field(j, "coordinator", a, sizeof(a)));
	printf("  NODE                STATE   MOUNTED  I/O\n");
	const char *n = strstr(j, "\"nodes\":[");
	while (n && (n = strstr(n, "{\"name\":")) != NULL) {
		char o[2048], io[1024];
		node_object(n, o, sizeof(o));
		int mounted = strcmp(field(o, "mounted", c, sizeof(c)), "true") == 0;
		io_summary(o, io, sizeof(io));
		printf("  %-19s %-7s %-8s %s\n", field(o, "name", a, sizeof(a)), field(o, "state", b, sizeof(b)),
		       mounted ? "yes" : "no", io);
		n++;
	}
}

static int cmd_status(int argc, char **argv)
{
	int json = 0;
	const char *mnt = CSVFS_DEFAULT_MOUNTPOINT;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (argv[i][0] == '-') {
			fprintf(stderr, "csvctl status: unknown option '%s'\n", argv[i]);
			return 2;
		} else
			mnt = argv[i];
	}
	char guid[37], reply[16384], err[512];
	if (guid_of_mount(mnt, guid) != 0) {
		fprintf(stderr, "csvctl: no csvfs volume is mounted at %s\n", mnt);
		return 1;
	}
	if (csvfs_control_request(guid, "status", reply, sizeof(reply), err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl: %s\n", err);
		return 1;
	}
	if (strstr(reply, "\"error\":")) {
		fprintf(stderr, "csvctl: daemon says: %s", reply);
		return 1;
	}
	if (json)
		fputs(reply, stdout);
	else
		print_human(reply);
	return 0;
}

static int cmd_move(int argc, char **argv)
{
	const char *mnt = CSVFS_DEFAULT_MOUNTPOINT, *node = "";
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--mount") == 0 && i + 1 < argc)
			mnt = argv[++i];
		else if (argv[i][0] == '-' || node[0]) {
			fprintf(stderr, "csvctl move: bad argument '%s'\n", argv[i]);
			return 2;
		} else if (!rio_node_name_valid(argv[i])) {
			fprintf(stderr, "csvctl move: bad node name '%s'\n", argv[i]);
			return 2;
		} else
			node = argv[i];
	}
	char guid[37], req[128], reply[16384], err[512];
	if (guid_of_mount(mnt, guid) != 0) {
		fprintf(stderr, "csvctl: no csvfs volume is mounted at %s\n", mnt);
		return 1;
	}
	snprintf(req, sizeof(req), node[0] ? "move %s" : "move", node);
	if (csvfs_control_request(guid, req, reply, sizeof(reply), err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl: %s\n", err);
		return 1;
	}
	char why[512];
	if (strstr(reply, "\"error\":")) {
		fprintf(stderr, "csvctl move: %s\n", field(reply, "error", why, sizeof(why)));
		return 1;
	}
	printf("volume %s: coordinator role moving to %s\n", guid, node[0] ? node : "another node");
	return 0;
}

/* "30", "30s", "5m", "2h": seconds, or 0 when it is none of those or 0. */
static unsigned long parse_duration(const char *s)
{
	char *end = NULL;
	if (!s || *s < '0' || *s > '9')
		return 0;
	unsigned long v = strtoul(s, &end, 10);
	unsigned long unit = strcmp(end, "") == 0 || strcmp(end, "s") == 0 ? 1
			   : strcmp(end, "m") == 0 ? 60 : strcmp(end, "h") == 0 ? 3600 : 0;
	if (!unit || v > 1000000)
		return 0;
	return v * unit;
}

static int cmd_redirect(int argc, char **argv)
{
	const char *mnt = CSVFS_DEFAULT_MOUNTPOINT, *node = NULL, *dur = NULL;
	int on = argc > 0 && strcmp(argv[0], "on") == 0;
	if (argc < 1 || (!on && strcmp(argv[0], "off") != 0)) {
		fprintf(stderr, "csvctl redirect: expected on or off\n");
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--mount") == 0 && i + 1 < argc)
			mnt = argv[++i];
		else if (strcmp(argv[i], "--for") == 0 && i + 1 < argc && on)
			dur = argv[++i];
		else if (argv[i][0] != '-' && !node && rio_node_name_valid(argv[i]))
			node = argv[i];
		else {
			fprintf(stderr, "csvctl redirect: bad argument '%s'\n", argv[i]);
			return 2;
		}
	}
	unsigned long seconds = on ? (dur ? parse_duration(dur) : 30 * 60) : 0;
	if (on && (seconds == 0 || seconds > 24 * 3600)) {
		fprintf(stderr, "csvctl redirect: bad duration '%s' (1s to 24h: N, Ns, Nm or Nh)\n", dur);
		return 2;
	}
	char guid[37], req[160], reply[16384], err[512], why[512];
	if (guid_of_mount(mnt, guid) != 0) {
		fprintf(stderr, "csvctl: no csvfs volume is mounted at %s\n", mnt);
		return 1;
	}
	snprintf(req, sizeof(req), "redirect %s %lu %s", on ? "on" : "off", seconds, node ? node : "");
	if (!on)
		snprintf(req, sizeof(req), "redirect off %s", node ? node : "");
	if (csvfs_control_request(guid, req, reply, sizeof(reply), err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl: %s\n", err);
		return 1;
	}
	if (strstr(reply, "\"error\":")) {
		fprintf(stderr, "csvctl redirect: %s\n", field(reply, "error", why, sizeof(why)));
		return 1;
	}
	if (on)
		printf("volume %s: this node's I/O redirected through the coordinator for %lu s\n", guid,
		       seconds);
	else
		printf("volume %s: user redirect ended (a path failure, if any, still redirects)\n", guid);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "status") == 0)
		return cmd_status(argc - 2, argv + 2);
	if (strcmp(argv[1], "move") == 0)
		return cmd_move(argc - 2, argv + 2);
	if (strcmp(argv[1], "redirect") == 0)
		return cmd_redirect(argc - 2, argv + 2);
	if (strcmp(argv[1], "keygen") == 0)
		return cmd_keygen(argc - 2, argv + 2);
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "csvctl: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
