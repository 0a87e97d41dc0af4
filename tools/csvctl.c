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
		int mounted = strcmp(field(n, "mounted", c, sizeof(c)), "true") == 0;
		printf("  %-19s %-7s %-8s %s\n", field(n, "name", a, sizeof(a)), field(n, "state", b, sizeof(b)),
		       mounted ? "yes" : "no", field(n, "io_state", c, sizeof(c)));
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
