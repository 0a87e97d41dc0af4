/* csvctl — administer csvfs volumes: status, moving the coordinator role,
 * the cluster credential and its revocation list. */
#include "fs/csvfs.h"
#include "redirect-io/rio.h"
#include "dlm-glue/dlmglue.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#define DEFAULT_CA_DIR "/etc/csvfs/ca"

static void usage(FILE *to)
{
	fprintf(to,
		"usage: csvctl status [--json] [MOUNTPOINT]\n"
		"              one volume, or every csvfs volume mounted on this node (--json: one\n"
		"              object per volume, one per line)\n"
		"       csvctl balance [--dry-run]\n"
		"              spread the coordinator roles of this node's volumes evenly over\n"
		"              the nodes, with moves (docs/volumes.md)\n"
		"       csvctl move [NODE] [--mount MOUNTPOINT]\n"
		"              hand the coordinator role to NODE (default: any other node)\n"
		"       csvctl redirect on|off [NODE...|--all] [--for DURATION] [--mount MOUNTPOINT]\n"
		"              send this node's file data through the coordinator, for DURATION\n"
		"              (Ns, Nm, Nh; default 30m, at most 24h), or stop; NODE...: those nodes\n"
		"              (through the coordinator), --all: every node; neither: this node\n"
		"       csvctl snapshot --hook PATH [--name NAME] [--timeout SECONDS] [--new-guid] [--json]\n"
		"              [VOLUME]\n"
		"              freeze the volume on every node, run PATH on the coordinator, thaw\n"
		"              (VOLUME: mountpoint, UUID=GUID or label; docs/snapshot.md); --new-guid:\n"
		"              the hook gives its copy a GUID of its own (CSVFS_NEW_GUID)\n"
		"       csvctl guid [--set GUID] [--fresh-copy] LUN\n"
		"              give a snapshot LUN a GUID of its own (default random); refused while\n"
		"              a node has it mounted; --fresh-copy: for hooks, on the copy just made\n"
		"       csvctl maintenance on|off VOLUME\n"
		"              stop every node's use of the volume (refused, with the open files\n"
		"              by node, while any is open), or end it (docs/volumes.md)\n"
		"       csvctl grow VOLUME\n"
		"              extend the volume to its LUN's new size while every node runs\n"
		"       csvctl fsck UUID=GUID|LUN [-- E2FSCK-OPTIONS]\n"
		"              e2fsck the LUN (default -f -y) once no node uses the volume;\n"
		"              clears a crashed daemon's MMP claim the cluster proves stale\n"
		"       csvctl keygen [--cluster NAME] [--ca-dir DIR] [--force]\n"
		"              create the cluster credential (a CA; default %s)\n"
		"       csvctl keygen --node NAME [--ca-dir DIR] [--out DIR] [--force]\n"
		"              issue NAME's node certificate from the CA into DIR (default %s)\n"
		"       csvctl revoke NODE|--cert FILE [--ca-dir DIR]\n"
		"              revoke NODE's certificates (or FILE) in the CA's ca.crl; then copy\n"
		"              ca.crl into every node's credential directory (docs/credentials.md)\n",
		DEFAULT_CA_DIR, RIO_DEFAULT_CRED_DIR);
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

static int cmd_revoke(int argc, char **argv)
{
	const char *ca_dir = DEFAULT_CA_DIR, *node = NULL, *cert = NULL;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		int has_value = i + 1 < argc;
		if (strcmp(a, "--ca-dir") == 0 && has_value)
			ca_dir = argv[++i];
		else if (strcmp(a, "--cert") == 0 && has_value && !cert)
			cert = argv[++i];
		else if (a[0] != '-' && !node && rio_node_name_valid(a))
			node = a;
		else {
			fprintf(stderr, "csvctl revoke: bad argument '%s'\n", a);
			return 2;
		}
	}
	if (!node == !cert) {
		fprintf(stderr, "csvctl revoke: say which node (NODE) or which certificate (--cert FILE)\n");
		return 2;
	}
	char err[1024];
	unsigned revoked = 0;
	if (rio_cred_revoke(ca_dir, node, cert, &revoked, err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl revoke: %s\n", err);
		return 1;
	}
	const char *what = node ? node : cert;
	if (revoked)
		printf("%s: %u certificate(s) revoked in %s/ca.crl; copy it to ca.crl in every node's "
		       "credential directory (default %s): running daemons reload it by themselves\n",
		       what, revoked, ca_dir, RIO_DEFAULT_CRED_DIR);
	else
		printf("%s: already revoked in %s/ca.crl (unchanged)\n", what, ca_dir);
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
	/* Another node's state is as it last reported it (every 2 s, or at a
	 * change): say so when that is a while ago, or not yet. */
	char age[32];
	unsigned long long ms = strtoull(field(o, "io_reported_ms_ago", age, sizeof(age)), NULL, 10);
	if (ms >= 5000 && n < len)
		n += (size_t)snprintf(out + n, len - n, " (reported %llu s ago)", ms / 1000);
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
	const char *fz = strstr(j, "\"freeze\":");
	if (fz && strcmp(field(fz, "frozen", a, sizeof(a)), "true") == 0) {
		time_t since = (time_t)strtoll(field(fz, "frozen_since", b, sizeof(b)), NULL, 10);
		char when[32];
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&since));
		printf("  FROZEN      since %s (changes held, reads go on)\n", when);
		const char *sn = strstr(fz, "\"snapshot\":");
		if (sn) {
			time_t dl = (time_t)strtoll(field(sn, "deadline", b, sizeof(b)), NULL, 10);
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&dl));
			printf("  snapshot    %s requested from %s, thawed by %s at the latest\n",
			       field(sn, "name", a, sizeof(a)), field(sn, "requested_by", c, sizeof(c)), when);
		}
	}
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

static int cmd_status_all(int json);

static int cmd_status(int argc, char **argv)
{
	int json = 0;
	const char *mnt = NULL;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (argv[i][0] == '-') {
			fprintf(stderr, "csvctl status: unknown option '%s'\n", argv[i]);
			return 2;
		} else
			mnt = argv[i];
	}
	if (!mnt)
		return cmd_status_all(json);
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
	const char *mnt = CSVFS_DEFAULT_MOUNTPOINT, *dur = NULL;
	char nodes[1024] = "";
	size_t nlen = 0;
	int on = argc > 0 && strcmp(argv[0], "on") == 0, all = 0, named = 0;
	if (argc < 1 || (!on && strcmp(argv[0], "off") != 0)) {
		fprintf(stderr, "csvctl redirect: expected on or off\n");
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--mount") == 0 && i + 1 < argc)
			mnt = argv[++i];
		else if (strcmp(argv[i], "--for") == 0 && i + 1 < argc && on)
			dur = argv[++i];
		else if (strcmp(argv[i], "--all") == 0)
			all = 1;
		else if (argv[i][0] != '-' && rio_node_name_valid(argv[i]) &&
			 nlen + strlen(argv[i]) + 2 < sizeof(nodes)) {
			nlen += (size_t)snprintf(nodes + nlen, sizeof(nodes) - nlen, " %s", argv[i]);
			named++;
		} else {
			fprintf(stderr, "csvctl redirect: bad argument '%s'\n", argv[i]);
			return 2;
		}
	}
	if (all && named) {
		fprintf(stderr, "csvctl redirect: --all or node names, not both\n");
		return 2;
	}
	unsigned long seconds = on ? (dur ? parse_duration(dur) : 30 * 60) : 0;
	if (on && (seconds == 0 || seconds > 24 * 3600)) {
		fprintf(stderr, "csvctl redirect: bad duration '%s' (1s to 24h: N, Ns, Nm or Nh)\n", dur);
		return 2;
	}
	char guid[37], req[1200], reply[16384], err[512], why[512];
	if (guid_of_mount(mnt, guid) != 0) {
		fprintf(stderr, "csvctl: no csvfs volume is mounted at %s\n", mnt);
		return 1;
	}
	const char *targets = all ? " *" : nodes;
	if (on)
		snprintf(req, sizeof(req), "redirect on %lu%s", seconds, targets);
	else
		snprintf(req, sizeof(req), "redirect off%s", targets);
	if (csvfs_control_request(guid, req, reply, sizeof(reply), err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl: %s\n", err);
		return 1;
	}
	if (strstr(reply, "\"error\":")) {
		fprintf(stderr, "csvctl redirect: %s\n", field(reply, "error", why, sizeof(why)));
		return 1;
	}
	int self = strcmp(field(reply, "this_node", why, sizeof(why)), "true") == 0;
	int others = atoi(field(reply, "others", why, sizeof(why)));
	if (self && on)
		printf("volume %s: this node's I/O redirected through the coordinator for %lu s\n", guid,
		       seconds);
	else if (self)
		printf("volume %s: user redirect ended (a path failure, if any, still redirects)\n", guid);
	if (others)
		printf("volume %s: redirect %s asked of %s through the coordinator; each node applies "
		       "it at its next report (within 2 s): see csvctl status\n", guid, on ? "on" : "off",
		       others < 0 ? "every other node" : nodes + 1);
	return 0;
}

/* ---- snapshot -------------------------------------------------------------- */

/* The volume whose label is label, among the daemons of this node: each
 * answers on /run/csvfs/<GUID>.sock. Two with that label: refused. */
static int guid_of_label(const char *label, char guid[37], char *err, size_t errlen)
{
	DIR *d = opendir("/run/csvfs");
	int found = 0;
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (n != 36 + 5 || strcmp(e->d_name + 36, ".sock") != 0)
			continue;
		char g[37], reply[16384], ignored[256], l[64];
		memcpy(g, e->d_name, 36);
		g[36] = 0;
		if (csvfs_control_request(g, "status", reply, sizeof(reply), ignored, sizeof(ignored)) != 0 ||
		    strcmp(field(reply, "label", l, sizeof(l)), label) != 0)
			continue;
		if (found++) {
			snprintf(err, errlen, "label '%s' names two mounted volumes (%s and %s): say UUID=GUID",
				 label, guid, g);
			break;
		}
		memcpy(guid, g, 37);
	}
	if (d)
		closedir(d);
	if (!found)
		snprintf(err, errlen, "no mounted csvfs volume is called '%s' (a mountpoint, UUID=GUID "
			 "or a label)", label);
	return found == 1 ? 0 : -ENOENT;
}

static int guid_of_volume(const char *vol, char guid[37], char *err, size_t errlen)
{
	if (strncmp(vol, "UUID=", 5) == 0) {
		char reply[16384], ignored[256];
		if (strlen(vol + 5) != 36 ||
		    csvfs_control_request(vol + 5, "status", reply, sizeof(reply), ignored, sizeof(ignored))) {
			snprintf(err, errlen, "no csvfs volume %s is mounted on this node", vol);
			return -ENOENT;
		}
		memcpy(guid, vol + 5, 37);
		return 0;
	}
	if (vol[0] == '/') {
		if (guid_of_mount(vol, guid) == 0)
			return 0;
		snprintf(err, errlen, "no csvfs volume is mounted at %s", vol);
		return -ENOENT;
	}
	return guid_of_label(vol, guid, err, errlen);
}

struct snap_args {
	const char *hook, *name, *volume;
	unsigned timeout;
	int json, new_guid;
};

static int parse_snap_args(int argc, char **argv, struct snap_args *a)
{
	*a = (struct snap_args){ .volume = CSVFS_DEFAULT_MOUNTPOINT, .timeout = 30 };
	int have_volume = 0;
	for (int i = 0; i < argc; i++) {
		const char *o = argv[i];
		int has_value = i + 1 < argc;
		if (strcmp(o, "--json") == 0)
			a->json = 1;
		else if (strcmp(o, "--new-guid") == 0)
			a->new_guid = 1;
		else if (strcmp(o, "--hook") == 0 && has_value)
			a->hook = argv[++i];
		else if (strcmp(o, "--name") == 0 && has_value)
			a->name = argv[++i];
		else if (strcmp(o, "--timeout") == 0 && has_value) {
			char *end;
			unsigned long t = strtoul(argv[++i], &end, 10);
			if (*end || argv[i][0] == '-' || !argv[i][0] || t < 1 || t > 600) {
				fprintf(stderr, "csvctl snapshot: timeout '%s' is not 1 to 600 seconds\n", argv[i]);
				return 2;
			}
			a->timeout = (unsigned)t;
		} else if (o[0] == '-' || have_volume) {
			fprintf(stderr, "csvctl snapshot: bad argument '%s'\n", o);
			return 2;
		} else {
			a->volume = o;
			have_volume = 1;
		}
	}
	if (!a->hook) {
		fprintf(stderr, "csvctl snapshot: say which hook takes the snapshot (--hook PATH; "
			"tools/csvfs-hook-* are examples)\n");
		return 2;
	}
	return 0;
}

/* The longest a write waited for the freeze, cluster-wide, as the nodes told it. */
static void print_write_stall(const char *reply)
{
	char ms[32], node[80], got[16], want[16];
	field(reply, "longest_write_stall_ms", ms, sizeof(ms));
	field(reply, "longest_write_stall_node", node, sizeof(node));
	field(reply, "nodes_reported", got, sizeof(got));
	field(reply, "nodes_expected", want, sizeof(want));
	if (node[0])
		printf("longest write stall: %s ms, on %s", ms, node);
	else
		printf("longest write stall: none (no write waited)");
	printf(" (%s of %s nodes reported)\n", got, want);
}

static int cmd_snapshot(int argc, char **argv)
{
	struct snap_args a;
	int rc = parse_snap_args(argc, argv, &a);
	if (rc)
		return rc;
	char guid[37], err[512], hook[PATH_MAX], name[80];
	if (guid_of_volume(a.volume, guid, err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl snapshot: %s\n", err);
		return 1;
	}
	/* The hook runs on the coordinator, which checks it again there. */
	if (!realpath(a.hook, hook)) {
		fprintf(stderr, "csvctl snapshot: hook %s: %s\n", a.hook, strerror(errno));
		return 1;
	}
	if (!a.name) {
		time_t now = time(NULL);
		strftime(name, sizeof(name), "snap-%Y%m%dT%H%M%SZ", gmtime(&now));
		a.name = name;
	}
	char req[4096 + 128], reply[16384], why[2048], v[64];
	char new_guid[37] = "-";
	if (a.new_guid) {
		uuid_t uu;
		uuid_generate(uu);
		uuid_unparse_lower(uu, new_guid);
	}
	snprintf(req, sizeof(req), "snapshot %u %s %s %s", a.timeout, a.name, new_guid, hook);
	if (csvfs_control_request_within(guid, req, reply, sizeof(reply), a.timeout * 1000 + 30000, err,
					 sizeof(err)) != 0) {
		fprintf(stderr, "csvctl snapshot: %s\n", err);
		return 1;
	}
	int ok = strcmp(field(reply, "ok", v, sizeof(v)), "true") == 0;
	if (a.json)
		fputs(reply, stdout);
	else if (ok) {
		char c[64], w[32], f[32], h[32];
		printf("snapshot %s of volume %s taken by the hook on %s: every node frozen after %s ms, "
		       "frozen for %s ms (hook %s ms); thawed\n", a.name, guid,
		       field(reply, "coordinator", c, sizeof(c)), field(reply, "freeze_wait_ms", w, sizeof(w)),
		       field(reply, "frozen_ms", f, sizeof(f)), field(reply, "hook_ms", h, sizeof(h)));
		print_write_stall(reply);
		char g[64];
		field(reply, "guid", g, sizeof(g));
		printf("the snapshot's volume GUID: %s%s\n", g,
		       a.new_guid ? " (its own: it mounts beside the volume)" : " (the volume's: see --new-guid)");
	}
	if (!ok)
		fprintf(stderr, "csvctl snapshot: snapshot %s of volume %s failed (volume thawed): %s\n",
			a.name, guid, field(reply, "error", why, sizeof(why)));
	return ok ? 0 : 1;
}

/* csvctl guid: a snapshot's own GUID, so that it mounts beside its source. */
static int cmd_guid(int argc, char **argv)
{
	const char *set = NULL, *lun = NULL;
	unsigned flags = 0;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--fresh-copy") == 0)
			flags |= CSVFS_GUID_FRESH_COPY;
		else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc)
			set = argv[++i];
		else if (argv[i][0] == '-' || lun) {
			fprintf(stderr, "csvctl guid: bad argument '%s'\n", argv[i]);
			return 2;
		} else
			lun = argv[i];
	}
	if (!lun) {
		fprintf(stderr, "csvctl guid: which LUN (a snapshot's image or device)?\n");
		return 2;
	}
	char guid[37], err[512];
	if (csvfs_set_guid(lun, set, flags, guid, err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl guid: %s\n", err);
		return 1;
	}
	printf("CSVFS_SNAPSHOT_GUID=%s\n", guid);
	return 0;
}

/* ---- every volume of this node: status, balance ----------------------------- */

#define MAX_VOLUMES 64
#define MAX_BALANCE_NODES 64

struct mounted_volume {
	char guid[37];
	char mountpoint[512];
};

/* The csvfs volumes in this node's mount table, in its order. */
static int mounted_volumes(struct mounted_volume *out, int max)
{
	FILE *f = fopen("/proc/self/mounts", "r");
	if (!f)
		return -errno;
	char src[512], dir[512], type[64];
	int n = 0;
	while (n < max && fscanf(f, "%511s %511s %63s %*[^\n]", src, dir, type) == 3) {
		if (strcmp(type, "fuse.csvfs") != 0 || strncmp(src, "csvfs:", 6) != 0 || strlen(src + 6) != 36)
			continue;
		memcpy(out[n].guid, src + 6, 37);
		snprintf(out[n].mountpoint, sizeof(out[n].mountpoint), "%s", dir);
		n++;
	}
	fclose(f);
	return n;
}

static int cmd_status_all(int json)
{
	struct mounted_volume vols[MAX_VOLUMES];
	int n = mounted_volumes(vols, MAX_VOLUMES), failed = 0;
	if (n <= 0) {
		fprintf(stderr, "csvctl: no csvfs volume is mounted on this node\n");
		return 1;
	}
	for (int i = 0; i < n; i++) {
		char reply[16384], err[512];
		if (csvfs_control_request(vols[i].guid, "status", reply, sizeof(reply), err, sizeof(err)) != 0 ||
		    strstr(reply, "\"error\":")) {
			fprintf(stderr, "csvctl: volume %s at %s: %s\n", vols[i].guid, vols[i].mountpoint,
				strstr(reply, "\"error\":") ? reply : err);
			failed = 1;
			continue;
		}
		if (json)
			fputs(reply, stdout);
		else {
			if (i)
				putchar('\n');
			print_human(reply);
		}
	}
	return failed;
}

/* One volume as balance sees it: who coordinates, who could. */
struct volume_roles {
	struct mounted_volume vol;
	char coordinator[64];
	char candidates[MAX_BALANCE_NODES][64];   /* up and mounted */
	int ncandidates;
};

struct node_count {
	char name[64];
	int volumes;
};

static struct node_count *count_of(struct node_count *nc, int *n, const char *name)
{
	for (int i = 0; i < *n; i++)
		if (strcmp(nc[i].name, name) == 0)
			return &nc[i];
	if (*n >= MAX_BALANCE_NODES)
		return NULL;
	snprintf(nc[*n].name, sizeof(nc[*n].name), "%s", name);
	nc[*n].volumes = 0;
	return &nc[(*n)++];
}

static int read_roles(const struct mounted_volume *mv, struct volume_roles *r, char *err, size_t errlen)
{
	char reply[16384], o[2048], a[64], b[64], m[16];
	memset(r, 0, sizeof(*r));
	r->vol = *mv;
	if (csvfs_control_request(mv->guid, "status", reply, sizeof(reply), err, errlen) != 0)
		return -EIO;
	if (strstr(reply, "\"error\":") || strcmp(field(reply, "mode", m, sizeof(m)), "cluster") != 0) {
		snprintf(err, errlen, "volume %.36s at %.400s is not a cluster mount", mv->guid, mv->mountpoint);
		return -EINVAL;
	}
	field(reply, "coordinator", r->coordinator, sizeof(r->coordinator));
	const char *n = strstr(reply, "\"nodes\":[");
	while (n && (n = strstr(n, "{\"name\":")) != NULL && r->ncandidates < MAX_BALANCE_NODES) {
		node_object(n, o, sizeof(o));
		if (strcmp(field(o, "state", a, sizeof(a)), "up") == 0 &&
		    strcmp(field(o, "mounted", b, sizeof(b)), "true") == 0)
			field(o, "name", r->candidates[r->ncandidates++], 64);
		n++;
	}
	return 0;
}

/* The move that evens the counts most: from a coordinator to a candidate
 * of the same volume with at least two volumes fewer, the largest gap
 * first (ties: the first volume in the mount table, the first candidate in
 * node order). -1 when balanced. */
static int pick_move(struct volume_roles *r, int nvol, struct node_count *nc, int *nn, const char **to)
{
	int best = -1, best_gain = 1;
	for (int v = 0; v < nvol; v++) {
		struct node_count *from = r[v].coordinator[0] ? count_of(nc, nn, r[v].coordinator) : NULL;
		for (int k = 0; from && k < r[v].ncandidates; k++) {
			struct node_count *cand = count_of(nc, nn, r[v].candidates[k]);
			if (!cand || cand == from)
				continue;
			int gain = from->volumes - cand->volumes;
			if (gain > best_gain) {
				best = v;
				best_gain = gain;
				*to = cand->name;
			}
		}
	}
	return best;
}

/* Asks volume v to move its role to node, and waits (bounded) until its
 * daemon here names node as coordinator. */
static int move_and_wait(struct volume_roles *r, const char *node)
{
	char req[128], reply[16384], err[512], why[512], now[64];
	snprintf(req, sizeof(req), "move %s", node);
	if (csvfs_control_request(r->vol.guid, req, reply, sizeof(reply), err, sizeof(err)) != 0 ||
	    strstr(reply, "\"error\":")) {
		fprintf(stderr, "csvctl balance: volume %s: move to %s refused: %s\n", r->vol.guid, node,
			strstr(reply, "\"error\":") ? field(reply, "error", why, sizeof(why)) : err);
		return -1;
	}
	for (int i = 0; i < 300; i++) {   /* 30 s at most */
		if (csvfs_control_request(r->vol.guid, "status", reply, sizeof(reply), err, sizeof(err)) == 0 &&
		    strcmp(field(reply, "coordinator", now, sizeof(now)), node) == 0)
			return 0;
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "csvctl balance: volume %s: %s did not become its coordinator within 30 s\n",
		r->vol.guid, node);
	return -1;
}

static void print_counts(const char *what, struct node_count *nc, int nn)
{
	printf("%s:", what);
	for (int i = 0; i < nn; i++)
		printf(" %s %d%s", nc[i].name, nc[i].volumes, i + 1 < nn ? "," : "");
	printf("\n");
}

static int cmd_balance(int argc, char **argv)
{
	int dry_run = 0;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--dry-run") == 0)
			dry_run = 1;
		else {
			fprintf(stderr, "csvctl balance: bad argument '%s'\n", argv[i]);
			return 2;
		}
	}
	struct mounted_volume mv[MAX_VOLUMES];
	static struct volume_roles r[MAX_VOLUMES];
	struct node_count nc[MAX_BALANCE_NODES];
	int nmv = mounted_volumes(mv, MAX_VOLUMES), nvol = 0, nn = 0, failed = 0;
	for (int i = 0; i < nmv; i++) {
		char err[512];
		if (read_roles(&mv[i], &r[nvol], err, sizeof(err)) != 0) {
			fprintf(stderr, "csvctl balance: %s (left out)\n", err);
			continue;
		}
		if (!r[nvol].coordinator[0])
			fprintf(stderr, "csvctl balance: volume %s has no coordinator now (left as it is)\n",
				mv[i].guid);
		for (int k = 0; k < r[nvol].ncandidates; k++)
			count_of(nc, &nn, r[nvol].candidates[k]);
		struct node_count *cn = r[nvol].coordinator[0] ? count_of(nc, &nn, r[nvol].coordinator) : NULL;
		if (cn)
			cn->volumes++;
		nvol++;
	}
	if (!nvol) {
		fprintf(stderr, "csvctl balance: no csvfs cluster volume is mounted on this node\n");
		return 1;
	}
	print_counts("coordinated volumes per node before", nc, nn);
	/* Each move lowers the sum of squared counts: at most nvol^2 of them. */
	for (int moves = 0; moves < nvol * nvol; moves++) {
		const char *to = NULL;
		int v = pick_move(r, nvol, nc, &nn, &to);
		if (v < 0)
			break;
		char target[64];
		snprintf(target, sizeof(target), "%s", to);
		printf("volume %s (%s): coordinator %s -> %s%s\n", r[v].vol.guid, r[v].vol.mountpoint,
		       r[v].coordinator, target, dry_run ? " (dry run)" : "");
		if (!dry_run && move_and_wait(&r[v], target) != 0) {
			failed = 1;
			break;
		}
		count_of(nc, &nn, r[v].coordinator)->volumes--;
		count_of(nc, &nn, target)->volumes++;
		snprintf(r[v].coordinator, sizeof(r[v].coordinator), "%s", target);
	}
	print_counts(dry_run ? "after (planned)" : "coordinated volumes per node after", nc, nn);
	return failed;
}

/* ---- maintenance ---------------------------------------------------------------- */

static int cmd_maintenance(int argc, char **argv)
{
	if (argc != 2 || (strcmp(argv[0], "on") != 0 && strcmp(argv[0], "off") != 0)) {
		fprintf(stderr, "csvctl maintenance: usage: csvctl maintenance on|off VOLUME\n");
		return 2;
	}
	char guid[37], err[512], req[32], reply[16384], msg[4096];
	if (guid_of_volume(argv[1], guid, err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl maintenance: %s\n", err);
		return 1;
	}
	snprintf(req, sizeof(req), "maintenance %s", argv[0]);
	if (csvfs_control_request_within(guid, req, reply, sizeof(reply), 70000, err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl maintenance: %s\n", err);
		return 1;
	}
	if (strstr(reply, "\"error\":")) {
		fprintf(stderr, "csvctl maintenance %s: %s\n", argv[0], field(reply, "error", msg, sizeof(msg)));
		return 1;
	}
	printf("%s\n", field(reply, "message", msg, sizeof(msg)));
	return 0;
}

/* ---- grow ------------------------------------------------------------------------ */

static unsigned long long volume_blocks(const char *guid)
{
	char reply[16384], ignored[256], b[32];
	if (csvfs_control_request(guid, "status", reply, sizeof(reply), ignored, sizeof(ignored)) != 0)
		return 0;
	return strtoull(field(reply, "blocks", b, sizeof(b)), NULL, 10);
}

static int cmd_grow(int argc, char **argv)
{
	if (argc != 1 || argv[0][0] == '-') {
		fprintf(stderr, "csvctl grow: usage: csvctl grow VOLUME\n");
		return 2;
	}
	char guid[37], err[512], reply[16384], msg[4096];
	if (guid_of_volume(argv[0], guid, err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl grow: %s\n", err);
		return 1;
	}
	unsigned long long before = volume_blocks(guid), now = before;
	if (csvfs_control_request_within(guid, "grow", reply, sizeof(reply), 150000, err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl grow: %s\n", err);
		return 1;
	}
	if (strstr(reply, "\"error\":")) {
		fprintf(stderr, "csvctl grow: %s\n", field(reply, "error", msg, sizeof(msg)));
		return 1;
	}
	printf("%s\n", field(reply, "message", msg, sizeof(msg)));
	/* The size this node's statfs reports once a coordinator serves again. */
	for (int i = 0; i < 600 && now <= before; i++) {
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		now = volume_blocks(guid);
	}
	if (now <= before) {
		fprintf(stderr, "csvctl grow: volume %s: this node still sees %llu blocks after 60 s; see the "
			"coordinator's log\n", guid, now);
		return 1;
	}
	printf("volume %s: this node sees %llu blocks (was %llu)\n", guid, now, before);
	return 0;
}

/* ---- fsck -------------------------------------------------------------------- */

struct fsck_target {
	char guid[37];
	char lun[4096];
	int mounted_here, in_maintenance;
};

/* UUID=GUID: the LUN the daemon here opened, else libblkid's; a path: itself. */
static int fsck_resolve(const char *arg, struct fsck_target *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	struct mounted_volume mv[MAX_VOLUMES];
	int n = mounted_volumes(mv, MAX_VOLUMES);
	if (strncmp(arg, "UUID=", 5) == 0) {
		if (strlen(arg + 5) != 36) {
			snprintf(err, errlen, "'%s' is not UUID=GUID (36 characters)", arg);
			return -EINVAL;
		}
		memcpy(t->guid, arg + 5, 37);
		for (int i = 0; i < n; i++) {
			char reply[16384], ignored[256];
			if (strcmp(mv[i].guid, t->guid) == 0 &&
			    csvfs_control_request(t->guid, "status", reply, sizeof(reply), ignored, sizeof(ignored)) == 0)
				field(reply, "lun", t->lun, sizeof(t->lun));
		}
		if (!t->lun[0] && csvfs_find_lun_by_uuid(t->guid, t->lun, sizeof(t->lun), err, errlen) != 0)
			return -ENOENT;
	} else
		snprintf(t->lun, sizeof(t->lun), "%s", arg);
	return 0;
}

/* This node's daemon of the volume, if one answers: in maintenance? (The
 * mount a crashed daemon left has nobody behind it: the cluster check
 * below sees any daemon that still lives.) */
static void fsck_local_use(struct fsck_target *t)
{
	char reply[16384], ignored[256], m[16];
	if (csvfs_control_request(t->guid, "status", reply, sizeof(reply), ignored, sizeof(ignored)) != 0)
		return;
	t->mounted_here = 1;
	t->in_maintenance = strcmp(field(reply, "maintenance", m, sizeof(m)), "true") == 0;
}

/* No node may use the volume: refused with the reason, else 0. A stale
 * csvfs MMP claim is cleared when no daemon of the volume runs anywhere. */
static int fsck_may_run(struct fsck_target *t, const struct csvfs_lun_mmp *mmp)
{
	uint32_t ids[64];
	int quorate = 0;
	char err[512], list[512] = "";
	int users = dg_lockspace_users(t->guid, ids, 64, &quorate, err, sizeof(err));
	if (users < 0) {
		fprintf(stderr, "csvctl fsck: volume %s: cannot ask the cluster who uses it: %s\n", t->guid, err);
		return 1;
	}
	if (!quorate) {
		fprintf(stderr, "csvctl fsck: volume %s: this node is not quorate, so it cannot prove that no "
			"node uses the volume; refused\n", t->guid);
		return 1;
	}
	for (int i = 0; i < users && i < 64; i++) {
		size_t k = strlen(list);
		snprintf(list + k, sizeof(list) - k, "%s%u", i ? "," : "", ids[i]);
	}
	if (t->mounted_here && !t->in_maintenance) {
		fprintf(stderr, "csvctl fsck: volume %s is in use: mounted on this node, daemons on node id(s) %s; "
			"run 'csvctl maintenance on' first\n", t->guid, list);
		return 1;
	}
	if (!t->mounted_here && users > 0) {
		fprintf(stderr, "csvctl fsck: volume %s is in use: csvfs daemons run on node id(s) %s; put it in "
			"maintenance and run csvctl fsck on one of them\n", t->guid, list);
		return 1;
	}
	if (mmp->clean)
		return 0;
	if (!mmp->by_csvfs) {
		fprintf(stderr, "csvctl fsck: volume %s: LUN %s is claimed (MMP) by e2fsck or a kernel on %s; "
			"refused\n", t->guid, t->lun, mmp->holder);
		return 1;
	}
	if (users > 0) {
		fprintf(stderr, "csvctl fsck: volume %s: its MMP block is still held by the csvfs coordinator on %s; "
			"refused\n", t->guid, mmp->holder);
		return 1;
	}
	if (csvfs_lun_mmp_clear(t->lun, err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl fsck: %s\n", err);
		return 1;
	}
	printf("volume %s: cleared the MMP claim left by the csvfs daemon on %s (no daemon of the volume "
	       "runs on any node of the quorate cluster)\n", t->guid, mmp->holder);
	return 0;
}

static int cmd_fsck(int argc, char **argv)
{
	if (argc < 1 || argv[0][0] == '-' || (argc > 1 && strcmp(argv[1], "--") != 0)) {
		fprintf(stderr, "csvctl fsck: usage: csvctl fsck UUID=GUID|LUN [-- E2FSCK-OPTIONS]\n");
		return 2;
	}
	struct fsck_target t;
	struct csvfs_lun_mmp mmp;
	char err[512];
	if (fsck_resolve(argv[0], &t, err, sizeof(err)) != 0 || csvfs_lun_mmp(t.lun, &mmp, err, sizeof(err)) != 0) {
		fprintf(stderr, "csvctl fsck: %s\n", err);
		return 1;
	}
	if (t.guid[0] && strcmp(t.guid, mmp.guid) != 0) {
		fprintf(stderr, "csvctl fsck: LUN %s holds volume %s, not %s\n", t.lun, mmp.guid, t.guid);
		return 1;
	}
	memcpy(t.guid, mmp.guid, sizeof(t.guid));
	fsck_local_use(&t);
	if (fsck_may_run(&t, &mmp) != 0)
		return 1;
	char *args[64] = { "e2fsck" };
	int n = 1;
	if (argc > 2)
		for (int i = 2; i < argc && n < 62; i++)
			args[n++] = argv[i];
	else {
		args[n++] = "-f";
		args[n++] = "-y";
	}
	args[n++] = t.lun;
	args[n] = NULL;
	printf("volume %s: running e2fsck on %s\n", t.guid, t.lun);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		execvp("e2fsck", args);
		fprintf(stderr, "csvctl fsck: cannot run e2fsck: %s\n", strerror(errno));
		_exit(127);
	}
	int st = 0;
	if (pid < 0 || waitpid(pid, &st, 0) < 0) {
		fprintf(stderr, "csvctl fsck: cannot run e2fsck: %s\n", strerror(errno));
		return 1;
	}
	int code = WIFEXITED(st) ? WEXITSTATUS(st) : 8;
	printf("volume %s: e2fsck exited %d (%s)\n", t.guid, code,
	       code == 0 ? "clean" : code == 1 ? "errors corrected" : "see its output; 4 and above: not clean");
	return code;
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
	if (strcmp(argv[1], "balance") == 0)
		return cmd_balance(argc - 2, argv + 2);
	if (strcmp(argv[1], "maintenance") == 0)
		return cmd_maintenance(argc - 2, argv + 2);
	if (strcmp(argv[1], "grow") == 0)
		return cmd_grow(argc - 2, argv + 2);
	if (strcmp(argv[1], "fsck") == 0)
		return cmd_fsck(argc - 2, argv + 2);
	if (strcmp(argv[1], "redirect") == 0)
		return cmd_redirect(argc - 2, argv + 2);
	if (strcmp(argv[1], "snapshot") == 0)
		return cmd_snapshot(argc - 2, argv + 2);
	if (strcmp(argv[1], "guid") == 0)
		return cmd_guid(argc - 2, argv + 2);
	if (strcmp(argv[1], "keygen") == 0)
		return cmd_keygen(argc - 2, argv + 2);
	if (strcmp(argv[1], "revoke") == 0)
		return cmd_revoke(argc - 2, argv + 2);
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "csvctl: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
