/* csvctl — administer csvfs volumes: status of a mounted volume. */
#include "fs/csvfs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *to)
{
	fprintf(to, "usage: csvctl status [--json] [MOUNTPOINT]   (default %s)\n",
		CSVFS_DEFAULT_MOUNTPOINT);
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

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "status") == 0)
		return cmd_status(argc - 2, argv + 2);
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "csvctl: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
