/* The csvfs daemon: options, LUN resolution, mount, serve, clean unmount. */
#define FUSE_USE_VERSION 312  /* fuse_loop_cfg_set_max_threads */
#include <fuse_lowlevel.h>

#include "fs/csvfs.h"
#include "fs/meta.h"
#include "fs/control.h"
#include "fs/fuse_ops.h"
#include "fs/locks.h"
#include "fs/fuse_alias.h"
#include "fs/cluster.h"
#include "fs/iostate.h"

#include <blkid/blkid.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <mntent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct daemon_opts {
	int foreground, standalone, cluster, read_only, allow_other, verbose;
	int errors_continue;           /* errors=continue (default remount-ro) */
	size_t cache_bytes;
	const char *source, *mountpoint;
	char default_mountpoint[64];   /* /ClusterStorage/LABEL when none is given */
	char lun[4096];
	char lun_hint[4096];           /* lun=PATH: where this node sees the LUN */
	char log_path[4096];           /* log=PATH: where a daemonized csvfs logs */
	char fuse_opts[512];
	struct cluster_opts co;
	unsigned path_timeout_ms;      /* fs/iostate.h */
};

static void usage(FILE *to)
{
	fprintf(to,
		"usage: csvfs [-f] [-v] [-o OPTIONS] LUN|UUID=GUID [MOUNTPOINT]\n"
		"  MOUNTPOINT      default: /ClusterStorage/LABEL, for a volume whose label is\n"
		"                  a plain name (mkfs.csvfs -L Volume1)\n"
		"  -f              stay in the foreground\n"
		"  -v              verbose logging\n"
		"  -h, --help      this help\n"
		"  -o standalone   this node is the coordinator of a one-node volume\n"
		"  -o cluster      join the corosync cluster that shares the volume, with:\n"
		"     node=NAME        this node's name (its certificate's; default: hostname)\n"
		"     nodeid=N         its corosync nodeid (checked)\n"
		"     lun=PATH         the LUN on this node (default: found by UUID=)\n"
		"     cred=DIR         redirect-io credential (default /etc/csvfs/cluster)\n"
		"     port=N           coordinator port (default 7100)\n"
		"     lockmgr=cpg|dlm  lock manager backend (default cpg)\n"
		"     fence_deadline=MS  self-fence deadline (default: token+consensus+10 s)\n"
		"     fence_cmd=PATH     run PATH NODEID NAME to fence a node that left; it is\n"
		"                        dead once PATH exits 0 (default: the deadline alone)\n"
		"     fence_timeout=MS   kill a fence_cmd still running after MS; it failed (60000)\n"
		"     coord_wait=MS      how long a request waits for a coordinator (120000)\n"
		"     lock_timeout=MS    how long a request waits for a lock a live node holds,\n"
		"                        then EIO (30000; a dead holder's fencing is waited out)\n"
		"     pause_timeout=MS   while quorum is lost, hold requests this long, then EIO (60000)\n"
		"     attr_cache=N     a participant caches the attributes of at most N inodes\n"
		"                        (kernel and daemon, in groups of 64; 0 none; 524288)\n"
		"     path_timeout=MS    a transfer on this node's LUN path not done in MS is a path\n"
		"                        failure: redirect, or give the coordinator role up (5000; 0 off)\n"
		"  -o ro           read-only\n"
		"  -o allow_other  let other users (e.g. the hypervisor's) use the mount\n"
		"  -o default_permissions  (always on: the kernel enforces POSIX permissions)\n"
		"  -o cache=MiB    metadata block cache size (default 64)\n"
		"  -o log=PATH     without -f, append the log to PATH\n"
		"                  (default /var/log/csvfs/GUID.log)\n"
		"  -o errors=remount-ro|continue  after corruption is found: refuse metadata\n"
		"                  changes with EROFS until unmount (default), or go on\n");
}

/* Options a mount helper passes that have no meaning for csvfs. */
static int is_ignored_mount_option(const char *o)
{
	static const char *const ignored[] = {
		"rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime",
		"relatime", "strictatime", "nofail", "_netdev", "auto", "noauto", "user",
		"nouser", "users", "defaults", "async", "default_permissions", NULL,
	};
	for (int i = 0; ignored[i]; i++)
		if (strcmp(o, ignored[i]) == 0)
			return 1;
	return strncmp(o, "x-", 2) == 0;
}

static int copy_value(char *dst, size_t len, const char *o, const char *v)
{
	if (!*v || strlen(v) >= len) {
		fprintf(stderr, "csvfs: bad option '%s': empty or too long\n", o);
		return -1;
	}
	memcpy(dst, v, strlen(v) + 1);
	return 1;
}

static int number_value(unsigned *dst, const char *o, const char *v, unsigned long max)
{
	char *end;
	unsigned long n = strtoul(v, &end, 10);
	if (!*v || *end || n > max) {
		fprintf(stderr, "csvfs: bad option '%s': expected a number up to %lu\n", o, max);
		return -1;
	}
	*dst = (unsigned)n;
	return 1;
}

/* 1: a cluster option, parsed; 0: not one; -1: a bad one. */
static int parse_cluster_option(struct daemon_opts *d, const char *o)
{
	const char *eq = strchr(o, '=');
	if (!eq)
		return 0;
	size_t k = (size_t)(eq - o);
	const char *v = eq + 1;
	unsigned n;
	int rc;
#define KEY(s) (k == strlen(s) && strncmp(o, s, k) == 0)
	if (KEY("node"))
		return copy_value(d->co.node, sizeof(d->co.node), o, v);
	if (KEY("lun"))
		return copy_value(d->lun_hint, sizeof(d->lun_hint), o, v);
	if (KEY("log"))
		return copy_value(d->log_path, sizeof(d->log_path), o, v);
	if (KEY("cred"))
		return copy_value(d->co.cred_dir, sizeof(d->co.cred_dir), o, v);
	if (KEY("fence_cmd"))
		return copy_value(d->co.fence_command, sizeof(d->co.fence_command), o, v);
	if (KEY("lockmgr")) {
		if (strcmp(v, "cpg") && strcmp(v, "dlm")) {
			fprintf(stderr, "csvfs: bad option '%s': lockmgr is cpg or dlm\n", o);
			return -1;
		}
		return copy_value(d->co.backend, sizeof(d->co.backend), o, v);
	}
	if (KEY("nodeid"))
		return number_value(&d->co.nodeid, o, v, UINT32_MAX);
	if (KEY("port")) {
		rc = number_value(&n, o, v, 65535);
		d->co.port = (uint16_t)n;
		return rc > 0 && n == 0 ? (fprintf(stderr, "csvfs: bad option '%s': port 0\n", o), -1) : rc;
	}
	if (KEY("fence_timeout"))
		return number_value(&d->co.fence_timeout_ms, o, v, 3600000);
	if (KEY("lock_timeout"))
		return number_value(&d->co.lock_timeout_ms, o, v, 3600000);
	if (KEY("fence_deadline"))
		return number_value(&d->co.fence_deadline_ms, o, v, 3600000);
	if (KEY("pause_timeout"))
		return number_value(&d->co.pause_timeout_ms, o, v, 86400000);
	if (KEY("path_timeout"))
		return number_value(&d->path_timeout_ms, o, v, 600000);
	if (KEY("attr_cache")) {
		d->co.attr_cache_set = 1;
		return number_value(&d->co.attr_cache, o, v, ATTR_CACHE_MAX);
	}
	if (KEY("coord_wait"))
		return number_value(&d->co.coord_wait_ms, o, v, 86400000);
#undef KEY
	return 0;
}

static int parse_one_option(struct daemon_opts *d, const char *o)
{
	int rc;
	if (strcmp(o, "standalone") == 0)
		d->standalone = 1;
	else if (strcmp(o, "cluster") == 0)
		d->cluster = 1;
	else if ((rc = parse_cluster_option(d, o)) != 0)
		return rc < 0 ? -1 : 0;
	else if (strcmp(o, "ro") == 0)
		d->read_only = 1;
	else if (strcmp(o, "allow_other") == 0)
		d->allow_other = 1;
	else if (strcmp(o, "errors=continue") == 0 || strcmp(o, "errors=remount-ro") == 0)
		d->errors_continue = strcmp(o, "errors=continue") == 0;
	else if (strncmp(o, "errors=", 7) == 0) {
		fprintf(stderr, "csvfs: bad option '%s': errors is continue or remount-ro\n", o);
		return -1;
	}
	else if (strncmp(o, "cache=", 6) == 0) {
		char *end;
		unsigned long mib = strtoul(o + 6, &end, 10);
		if (*end || mib == 0 || mib > 65536) {
			fprintf(stderr, "csvfs: bad option '%s': cache takes MiB from 1 to 65536\n", o);
			return -1;
		}
		d->cache_bytes = (size_t)mib << 20;
	} else if (!is_ignored_mount_option(o)) {
		fprintf(stderr, "csvfs: unknown option '%s'\n", o);
		return -1;
	}
	return 0;
}

static int parse_options(struct daemon_opts *d, char *list)
{
	for (char *save = NULL, *o = strtok_r(list, ",", &save); o; o = strtok_r(NULL, ",", &save))
		if (*o && parse_one_option(d, o))
			return -1;
	return 0;
}

static int parse_args(int argc, char **argv, struct daemon_opts *d)
{
	static const struct option long_opts[] = { { "help", no_argument, NULL, 'h' }, { 0 } };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "fvho:", long_opts, NULL)) != -1) {
		switch (c) {
		case 'f': d->foreground = 1; break;
		case 'v': d->verbose = 1; break;
		case 'o': {
			char *copy = strdup(optarg);
			int rc = copy ? parse_options(d, copy) : -1;
			free(copy);
			if (rc)
				return -1;
			break;
		}
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (argc - optind != 1 && argc - optind != 2) {
		usage(stderr);
		return -1;
	}
	d->source = argv[optind];
	d->mountpoint = argc - optind == 2 ? argv[optind + 1] : NULL;
	return 0;
}

int csvfs_find_lun_by_uuid(const char *guid, char *path, size_t pathlen, char *err, size_t errlen)
{
	blkid_cache cache = NULL;
	if (blkid_get_cache(&cache, "/dev/null") != 0) {
		snprintf(err, errlen, "cannot search devices for volume %s (libblkid)", guid);
		return -EIO;
	}
	blkid_probe_all(cache);
	/* A snapshot carries its source's GUID: with two devices holding it,
	 * picking one could mount the snapshot as the live volume. */
	char first[512] = "", second[512] = "";
	unsigned found = 0;
	blkid_dev_iterate it = blkid_dev_iterate_begin(cache);
	blkid_dev dev;
	blkid_dev_set_search(it, "UUID", (char *)guid);
	while (it && blkid_dev_next(it, &dev) == 0) {
		dev = blkid_verify(cache, dev);
		if (!dev)
			continue;
		snprintf(found++ ? second : first, sizeof(first), "%s", blkid_dev_devname(dev));
	}
	blkid_dev_iterate_end(it);
	blkid_put_cache(cache);
	if (found == 0) {
		snprintf(err, errlen, "no device holds volume %s (searched with libblkid)", guid);
		return -ENOENT;
	}
	if (found > 1) {
		snprintf(err, errlen, "volume %s is on %u devices (%s and %s): one is a snapshot or copy; "
			 "give the LUN (lun=PATH) or give the copy a GUID of its own (tune2fs -U random)",
			 guid, found, first, second);
		return -EEXIST;
	}
	snprintf(path, pathlen, "%s", first);
	return 0;
}

static int resolve_lun(struct daemon_opts *d)
{
	char err[512];
	if (d->lun_hint[0]) {
		snprintf(d->lun, sizeof(d->lun), "%s", d->lun_hint);
		return 0;
	}
	if (strncmp(d->source, "UUID=", 5) == 0) {
		if (csvfs_find_lun_by_uuid(d->source + 5, d->lun, sizeof(d->lun), err, sizeof(err))) {
			fprintf(stderr, "csvfs: %s\n", err);
			return -1;
		}
		return 0;
	}
	struct stat st;
	if (stat(d->source, &st) != 0) {
		fprintf(stderr, "csvfs: LUN %s: %s\n", d->source, strerror(errno));
		return -1;
	}
	snprintf(d->lun, sizeof(d->lun), "%s", d->source);
	return 0;
}

/* A second daemon stacked on a mount point that already serves a volume
 * (a repeated "mount -a": mount(8) compares the fstab's device with the
 * mount's csvfs:GUID and does not see it as mounted) would join the cluster
 * again under this node's name. */
static int refuse_mounted_mountpoint(const char *mnt)
{
	char real[PATH_MAX];
	if (!realpath(mnt, real))
		return 0;   /* stat just worked: a race, and the mount will say so */
	FILE *f = setmntent("/proc/self/mounts", "r");
	if (!f)
		return 0;
	int busy = 0;
	for (struct mntent *m; !busy && (m = getmntent(f)) != NULL;)
		if (strcmp(m->mnt_dir, real) == 0 && strcmp(m->mnt_type, "fuse.csvfs") == 0) {
			fprintf(stderr, "csvfs: %s already has a csvfs volume mounted (%s): unmount it first\n",
				real, m->mnt_fsname);
			busy = 1;
		}
	endmntent(f);
	return busy ? -1 : 0;
}

static int check_mountpoint(const char *mnt)
{
	struct stat st;
	if (stat(mnt, &st) != 0) {
		fprintf(stderr, "csvfs: mountpoint %s: %s\n", mnt, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "csvfs: mountpoint %s is not a directory\n", mnt);
		return -1;
	}
	return refuse_mounted_mountpoint(mnt);
}

/* A volume labelled Volume1 mounts at /ClusterStorage/Volume1 when no mount
 * point is given (as Windows' CSV names its volumes), so a node's mount path
 * follows from the volume itself. A label that is not a plain name (empty,
 * ".", "..", a '/' or anything outside [A-Za-z0-9._-]) names no path. */
static int mountpoint_from_label(struct daemon_opts *d, const struct volume *v)
{
	const char *label = v->label;
	int plain = label[0] && strcmp(label, ".") && strcmp(label, "..");
	for (const char *c = label; plain && *c; c++)
		plain = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
			(*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-';
	if (!plain) {
		fprintf(stderr, "csvfs: volume %s has %s label '%s': give a MOUNTPOINT "
			"(the default /ClusterStorage/LABEL needs a label like Volume1)\n",
			v->uuid, label[0] ? "the non-path" : "no", label);
		return -1;
	}
	snprintf(d->default_mountpoint, sizeof(d->default_mountpoint), "/ClusterStorage/%s", label);
	d->mountpoint = d->default_mountpoint;
	return check_mountpoint(d->mountpoint);
}

static struct fuse_session *make_session(struct daemon_opts *d, struct csvfs_fuse *cf)
{
	snprintf(d->fuse_opts, sizeof(d->fuse_opts),
		 "-ofsname=csvfs:%s,subtype=csvfs,default_permissions%s%s",
		 cf->vol->uuid, d->allow_other ? ",allow_other" : "", d->read_only ? ",ro" : "");
	char *fargv[] = { "csvfs", d->fuse_opts, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(2, fargv);
	struct fuse_session *se = fuse_session_new(&args, &csvfs_fuse_ops, sizeof(csvfs_fuse_ops), cf);
	fuse_opt_free_args(&args);
	return se;
}

/* Once daemonized (mount(8), fstab), stderr is /dev/null: the log lines go
 * to a file instead, so a failed join or a takeover can still be read. The
 * file is opened before the fork, while a failure still reaches mount(8). */
static int open_log(const struct daemon_opts *d, const struct volume *v)
{
	char path[4096];
	if (d->log_path[0]) {
		snprintf(path, sizeof(path), "%s", d->log_path);
	} else {
		if (mkdir("/var/log/csvfs", 0750) != 0 && errno != EEXIST) {
			fprintf(stderr, "csvfs: cannot create /var/log/csvfs: %s (give -o log=PATH)\n",
				strerror(errno));
			return -1;
		}
		snprintf(path, sizeof(path), "/var/log/csvfs/%s.log", v->uuid);
	}
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		fprintf(stderr, "csvfs: cannot open the log %s: %s\n", path, strerror(errno));
	return fd;
}

/* Cluster mode: join after daemonizing (threads do not survive a fork) and
 * before the session loop answers anything. */
static int join_cluster(struct daemon_opts *d, struct volume *v)
{
	if (!d->cluster)
		return 0;
	char err[1024];
	int rc = cluster_start(v, &d->co, err, sizeof(err));
	if (rc)
		csvfs_log(LOG_ERR_L, "cannot join the cluster: %s", err);
	/* The prober of a failed path and the user's redirect lease (design.md §7);
	 * without it a redirect would have no end: no mount without it (serve
	 * stops the cluster). */
	if (rc == 0 && (rc = iostate_start(&v->data_lun, v->blocksize, d->path_timeout_ms)) != 0)
		csvfs_log(LOG_ERR_L, "cannot start the LUN path prober: %s", strerror(-rc));
	return rc;
}

/* libfuse's loop keeps at most 10 worker threads by default: a VM's queue
 * of 32 direct I/Os would wait for them. FUSE_WORKERS_MAX matches the
 * kernel's max_background we ask for (fs/fuse_ops.c). */
static int serve_requests(struct fuse_session *se)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	if (!cfg)
		return -1;
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	fuse_loop_cfg_set_idle_threads(cfg, 16);
	fuse_loop_cfg_set_max_threads(cfg, FUSE_WORKERS_MAX);
	int rc = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return rc;
}

static int serve(struct daemon_opts *d, struct volume *v)
{
	struct csvfs_fuse cf = { .vol = v };
	int log_fd = d->foreground ? -1 : open_log(d, v);
	if (!d->foreground && log_fd < 0)
		return 1;
	struct fuse_session *se = make_session(d, &cf);
	if (!se) {
		fprintf(stderr, "csvfs: cannot create the FUSE session\n");
		if (log_fd >= 0)
			close(log_fd);
		return 1;
	}
	int status = 1;
	if (fuse_set_signal_handlers(se) != 0) {
		fprintf(stderr, "csvfs: cannot install signal handlers\n");
	} else if (fuse_session_mount(se, d->mountpoint) != 0) {
		fprintf(stderr, "csvfs: mounting volume %s on %s failed\n", v->uuid, d->mountpoint);
	} else {
		if (!d->foreground) {
			fuse_daemonize(0);
			dup2(log_fd, STDERR_FILENO);
		}
		/* after the fork: the thread must be the daemon's */
		cf.aliases = d->cluster ? alias_start(se) : NULL;
		volume_start(v);
		char host[64] = "localhost";
		gethostname(host, sizeof(host) - 1);
		struct control ctl;
		int locks_rc = locks_init(v, d->cluster ? d->co.node : host);
		if (locks_rc)
			csvfs_log(LOG_ERR_L, "cannot start file locking: %s", strerror(-locks_rc));
		if (locks_rc == 0 && join_cluster(d, v) == 0) {
			if (v->cluster)
				csvfs_fuse_cluster_caches(v, se);
			control_start(&ctl, v, d->mountpoint, d->cluster ? d->co.node : host);
			csvfs_log(LOG_INFO_L, "mounted LUN %s at %s (%s)", v->lun, d->mountpoint,
				  d->cluster ? "cluster" : v->read_only ? "read-only" : "standalone coordinator");
			int rc = serve_requests(se);
			status = rc < 0 ? 1 : 0;
			control_stop(&ctl);
			if (d->cluster)
				iostate_stop();
		}
		if (v->cluster)   /* no notification to a session going away */
			cluster_attr_set_inval(v->cluster, NULL, NULL, NULL);
		fuse_session_unmount(se);
		alias_stop(cf.aliases);
		cluster_stop(v);
		locks_fini(v);
		csvfs_log(LOG_INFO_L, "unmounted %s", d->mountpoint);
	}
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	if (log_fd >= 0)
		close(log_fd);
	return status;
}

/* The node-side volume of a cluster member: identity from the superblock,
 * which must be the volume asked for. */
static int open_cluster_volume(struct daemon_opts *d, struct volume **out)
{
	struct volume_opts vo = { .lun = d->lun, .read_only = 0, .cache_bytes = d->cache_bytes,
				  .errors_continue = d->errors_continue };
	char err[1024];
	struct volume *v;
	int rc = volume_new(&vo, &v, err, sizeof(err));
	if (rc == 0 && (rc = volume_probe(v, err, sizeof(err))) != 0)
		volume_free(v);
	if (rc) {
		fprintf(stderr, "csvfs: %s\n", err);
		return 1;
	}
	if (strncmp(d->source, "UUID=", 5) == 0 && strcasecmp(d->source + 5, v->uuid) != 0) {
		fprintf(stderr, "csvfs: LUN %s holds volume %s, not %s: refusing to join with it\n",
			d->lun, v->uuid, d->source + 5);
		volume_free(v);
		return 1;
	}
	*out = v;
	return 0;
}

int csvfs_daemon_main(int argc, char **argv)
{
	struct daemon_opts d = { .path_timeout_ms = IOSTATE_PATH_TIMEOUT_DEFAULT_MS };
	initialize_ext2_error_table();   /* libext2fs errors by name in logs */
	if (parse_args(argc, argv, &d))
		return 2;
	csvfs_verbose = d.verbose;
	if (d.standalone == d.cluster) {
		fprintf(stderr, "csvfs: say how to serve the volume: -o standalone (one node) or "
			"-o cluster (every node of the corosync cluster)\n");
		return 2;
	}
	if (d.cluster && d.read_only) {
		fprintf(stderr, "csvfs: -o ro is for standalone mounts\n");
		return 2;
	}
	if (d.cluster) {
		if (!d.co.node[0] && gethostname(d.co.node, sizeof(d.co.node) - 1) != 0)
			snprintf(d.co.node, sizeof(d.co.node), "localhost");
	}
	if (resolve_lun(&d) || (d.mountpoint && check_mountpoint(d.mountpoint)))
		return 1;
	struct volume *v;
	if (d.cluster) {
		char err[1024];
		if (cluster_check_credential(&d.co, err, sizeof(err)) != 0) {
			fprintf(stderr, "csvfs: %s\n", err);
			return 1;
		}
		if (open_cluster_volume(&d, &v))
			return 1;
	} else {
		struct volume_opts vo = { .lun = d.lun, .read_only = d.read_only, .cache_bytes = d.cache_bytes,
					  .errors_continue = d.errors_continue };
		char err[1024];
		if (volume_open(&vo, &v, err, sizeof(err)) != 0) {
			fprintf(stderr, "csvfs: %s\n", err);
			return 1;
		}
	}
	if (!d.mountpoint && mountpoint_from_label(&d, v)) {
		volume_close(v);
		return 1;
	}
	csvfs_log_set_context(d.cluster ? d.co.node : NULL, v->uuid);
	int status = serve(&d, v);
	volume_close(v);
	return status;
}
