/* csvctl — administer csvfs volumes: status, moving the coordinator role,
 * the cluster credential. */
#include "fs/csvfs.h"
#include "redirect-io/rio.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_CA_DIR "/etc/csvfs/ca"

static void usage(FILE *to)
{
	fprintf(to,
		"usage: csvctl status [--json] [MOUNTPOINT]   (default %s)\n"
		"       csvctl move [NODE] [--mount MOUNTPOINT]\n"
		"              hand the coordinator role to NODE (default: any other node)\n"
		"       csvctl redirect on|off [NODE...|--all] [--for DURATION] [--mount MOUNTPOINT]\n"
		"              send this node's file data through the coordinator, for DURATION\n"
		"              (Ns, Nm, Nh; default 30m, at most 24h), or stop; NODE...: those nodes\n"
		"              (through the coordinator), --all: every node; neither: this node\n"
		"       csvctl snapshot --hook PATH [--name NAME] [--timeout SECONDS] [--json] [VOLUME]\n"
		"              freeze the volume on every node, run PATH on the coordinator, thaw\n"
		"              (VOLUME: mountpoint, UUID=GUID or label; docs/snapshot.md)\n"
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
	int json;
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
	snprintf(req, sizeof(req), "snapshot %u %s %s", a.timeout, a.name, hook);
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
	}
	if (!ok)
		fprintf(stderr, "csvctl snapshot: snapshot %s of volume %s failed (volume thawed): %s\n",
			a.name, guid, field(reply, "error", why, sizeof(why)));
	return ok ? 0 : 1;
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
	if (strcmp(argv[1], "snapshot") == 0)
		return cmd_snapshot(argc - 2, argv + 2);
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
