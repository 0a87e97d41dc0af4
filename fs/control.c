/* The control channel: a Unix socket per volume (/run/csvfs/<GUID>.sock,
 * root only) on which csvctl asks the daemon for its state. One request line,
 * one JSON reply, then the connection closes. Requests: "status", "move
 * [NODE]", "redirect on SECONDS [NODE...|*]", "redirect off [NODE...|*]",
 * "snapshot TIMEOUT NAME HOOK" (served on a thread of its own: it
 * lasts up to TIMEOUT, and a status must still answer meanwhile; the client
 * closing its end aborts it, docs/snapshot.md). */
#include "fs/csvfs.h"
#include "fs/meta.h"
#include "fs/control.h"
#include "fs/cluster.h"
#include "fs/fsops.h"
#include "fs/iostate.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_DIR "/run/csvfs"
#define REQUEST_MAX 2048
#define REPLY_MAX 16384

void control_socket_path(const char *uuid, char *out, size_t len)
{
	snprintf(out, len, "%s/%s.sock", CONTROL_DIR, uuid);
}

static void marker_path(const char *uuid, char *out, size_t len)
{
	snprintf(out, len, "%s/%s.coordinator", CONTROL_DIR, uuid);
}

void control_note_coordinator(const char *uuid, int coordinating)
{
	char path[256];
	marker_path(uuid, path, sizeof(path));
	if (!coordinating) {
		unlink(path);
		return;
	}
	if (mkdir(CONTROL_DIR, 0700) != 0 && errno != EEXIST)
		return;
	FILE *f = fopen(path, "w");
	if (!f) {
		csvfs_log(LOG_WARN_L, "volume %s: cannot record this node's coordinator role in %s: %s "
			  "(the election then counts it as coordinating one volume fewer)", uuid, path,
			  strerror(errno));
		return;
	}
	fprintf(f, "%ld\n", (long)getpid());
	fclose(f);
}

/* A marker counts while the daemon that wrote it lives (a crashed one's
 * stays behind until its volume is mounted here again). */
static int marker_alive(const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", CONTROL_DIR, name);
	FILE *f = fopen(path, "r");
	long pid = 0;
	if (!f)
		return 0;
	int ok = fscanf(f, "%ld", &pid) == 1 && pid > 0;
	fclose(f);
	return ok && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

unsigned control_coordinated_here(const char *except_uuid)
{
	DIR *d = opendir(CONTROL_DIR);
	unsigned n = 0;
	struct dirent *e;
	const char *suffix = ".coordinator";
	while (d && (e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name), sl = strlen(suffix);
		if (len <= sl || strcmp(e->d_name + len - sl, suffix) != 0)
			continue;
		if (strncmp(e->d_name, except_uuid, len - sl) == 0 && strlen(except_uuid) == len - sl)
			continue;
		n += (unsigned)marker_alive(e->d_name);
	}
	if (d)
		closedir(d);
	return n;
}

/* JSON string escaping for the few free-text fields (paths, labels). */
static void json_str(char *out, size_t len, const char *s)
{
	size_t o = 0;
	for (; *s && o + 7 < len; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			o += (size_t)snprintf(out + o, len - o, "\\%c", c);
		else if (c < 0x20)
			o += (size_t)snprintf(out + o, len - o, "\\u%04x", c);
		else
			out[o++] = (char)c;
	}
	out[o] = 0;
}

static void status_json(struct control *c, char *out, size_t len)
{
	struct volume *v = c->vol;
	struct statvfs st;
	memset(&st, 0, sizeof(st));
	/* Status answers at once: a paused or cut-off node reports no sizes. */
	if (fsop_statfs_quick(v, &st) != 0)
		memset(&st, 0, sizeof(st));
	struct journal_stats js = { 0 };
	uint64_t durable = 0;
	char lun[512], label[64], mnt[512], node[128], nodes[12288];
	json_str(lun, sizeof(lun), v->lun);
	json_str(label, sizeof(label), v->label);
	json_str(mnt, sizeof(mnt), c->mountpoint);
	json_str(node, sizeof(node), c->node);
	const char *mode = v->read_only ? "read-only" : "standalone";
	if (v->cluster) {
		mode = "cluster";
		cluster_status_json(v->cluster, nodes, sizeof(nodes));
	} else {
		snprintf(nodes, sizeof(nodes),
			 "\"coordinator\":\"%s\",\"role\":\"%s\",\"nodes\":[{\"name\":\"%s\",\"this_node\":true,"
			 "\"state\":\"up\",\"role\":\"coordinator\",\"mounted\":true,\"io_state\":\"direct\","
			 "\"io_reasons\":[]}]", node, "coordinator", node);
	}
	/* The engine's counters exist only where it is attached (racy on a
	 * role change, but only counters: read under the volume lock). */
	pthread_mutex_lock(&v->lock);
	int journaled = v->journaled;
	if (v->journal) {
		journal_get_stats(v->journal, &js);
		durable = journal_durable_id(v->journal);
	}
	pthread_mutex_unlock(&v->lock);
	snprintf(out, len,
		 "{\"volume\":{\"guid\":\"%s\",\"label\":\"%s\",\"lun\":\"%s\",\"mountpoint\":\"%s\","
		 "\"mode\":\"%s\",\"journaled\":%s,\"block_size\":%u,\"blocks\":%llu,\"free_blocks\":%llu,"
		 "\"inodes\":%llu,\"free_inodes\":%llu},%s,"
		 "\"journal\":{\"commits_durable\":%llu,\"cache_hits\":%llu,\"cache_misses\":%llu}}\n",
		 v->uuid, label, lun, mnt, mode, journaled || v->cluster ? "true" : "false", v->blocksize,
		 (unsigned long long)st.f_blocks, (unsigned long long)st.f_bfree,
		 (unsigned long long)st.f_files, (unsigned long long)st.f_ffree, nodes,
		 (unsigned long long)durable, (unsigned long long)js.cache_hits,
		 (unsigned long long)js.cache_misses);
}

static void move_request(struct control *c, const char *target, char *reply, size_t len)
{
	char err[256], esc[512];
	if (!c->vol->cluster) {
		snprintf(reply, len, "{\"error\":\"volume is mounted standalone: there is no role to move\"}\n");
		return;
	}
	int rc = cluster_move(c->vol->cluster, target, err, sizeof(err));
	json_str(esc, sizeof(esc), err);
	if (rc)
		snprintf(reply, len, "{\"error\":\"%s\"}\n", esc);
	else
		snprintf(reply, len, "{\"moving\":true}\n");
}

/* The reply to a request whose outcome is rc and msg: {"error":msg}, or
 * {"<key>":<value>,"message":msg}. */
static void outcome_reply(int rc, const char *key, const char *value, const char *msg, char *reply, size_t len)
{
	char esc[4096];
	json_str(esc, sizeof(esc), msg);
	if (rc)
		snprintf(reply, len, "{\"error\":\"%s\"}\n", esc);
	else
		snprintf(reply, len, "{\"%s\":%s,\"message\":\"%s\"}\n", key, value, esc);
}

/* "maintenance on|off": answered once the cluster followed (30 s at most). */
static void maintenance_request(struct control *c, const char *arg, char *reply, size_t len)
{
	char msg[2048] = "maintenance: expected on or off";
	int on = strcmp(arg, "on") == 0, rc = -EINVAL;
	if (!c->vol->cluster)
		snprintf(msg, sizeof(msg), "volume is mounted standalone: unmount it to check it");
	else if (on || strcmp(arg, "off") == 0)
		rc = cluster_maintenance(c->vol->cluster, on, msg, sizeof(msg));
	outcome_reply(rc, "maintenance", on ? "true" : "false", msg, reply, len);
}

/* "grow": begun (from a participant) or done (on the coordinator). */
static void grow_request(struct control *c, char *reply, size_t len)
{
	char msg[2048] = "volume is mounted standalone: unmount it and run resize2fs";
	int rc = c->vol->cluster ? cluster_grow(c->vol->cluster, msg, sizeof(msg)) : -EINVAL;
	outcome_reply(rc, "grow", "true", msg, reply, len);
}

/* "redirect on SECONDS [NODE...|*]" / "redirect off [NODE...|*]" (csvctl
 * checked the syntax; checked again here, the socket is the interface). No
 * node, or this node's name: this node. Another node, or * (every node):
 * through the coordinator (cluster_redirect), after every name is checked. */
#define REDIRECT_NODES_MAX 64
static void redirect_request(struct control *c, char *args, char *reply, size_t len)
{
	char err[256] = "", esc[512];
	char *save = NULL, *word = strtok_r(args, " ", &save);
	int on = word && strcmp(word, "on") == 0, off = word && strcmp(word, "off") == 0;
	unsigned seconds = 0;
	if (on) {
		char *sec = strtok_r(NULL, " ", &save), *end = NULL;
		unsigned long s = sec ? strtoul(sec, &end, 10) : 0;
		seconds = sec && *sec && !*end && s <= IOSTATE_LEASE_MAX_S ? (unsigned)s : 0;
		if (!seconds)
			snprintf(err, sizeof(err), "redirect on: a lease of 1 to %d seconds is needed",
				 IOSTATE_LEASE_MAX_S);
	} else if (!off) {
		snprintf(err, sizeof(err), "redirect: expected on or off");
	}
	const char *others[REDIRECT_NODES_MAX];
	int nothers = 0, self = 1, all = 0, named = 0;
	while (!err[0] && (word = strtok_r(NULL, " ", &save)) != NULL) {
		if (!named++)
			self = 0;   /* names given: this node only if named */
		if (strcmp(word, "*") == 0)
			all = self = 1;
		else if (strcmp(word, c->node) == 0)
			self = 1;
		else if (!c->vol->cluster || !cluster_is_member(c->vol->cluster, word))
			snprintf(err, sizeof(err), "no node '%s' has this volume mounted", word);
		else if (nothers < REDIRECT_NODES_MAX)
			others[nothers++] = word;
	}
	if (!err[0] && !c->vol->cluster)
		snprintf(err, sizeof(err), "volume is mounted standalone: there is no coordinator to redirect to");
	if (!err[0] && self)
		iostate_user_request(on, seconds, err, sizeof(err));
	if (!err[0] && all)
		cluster_redirect(c->vol->cluster, "", on, seconds, err, sizeof(err));
	for (int i = 0; !err[0] && !all && i < nothers; i++)
		cluster_redirect(c->vol->cluster, others[i], on, seconds, err, sizeof(err));
	json_str(esc, sizeof(esc), err);
	if (err[0])
		snprintf(reply, len, "{\"error\":\"%s\"}\n", esc);
	else
		snprintf(reply, len, "{\"redirect\":\"%s\",\"seconds\":%u,\"this_node\":%s,\"others\":%d}\n",
			 on ? "on" : "off", seconds, self ? "true" : "false", all ? -1 : nothers);
}

/* ---- snapshot -------------------------------------------------------------- */

struct snap_client {
	struct control *c;
	int fd;
	struct cluster_snap_request rq;
};

/* The requester closed its end (csvctl killed or gone). */
static int client_gone(void *arg)
{
	struct snap_client *sc = arg;
	struct pollfd p = { sc->fd, POLLRDHUP, 0 };
	return (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) || sc->c->stopping;
}

static void write_all(int fd, const char *s)
{
	size_t off = 0, len = strlen(s);
	while (off < len) {
		ssize_t n = write(fd, s + off, len - off);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
}

static void *snapshot_main(void *arg)
{
	struct snap_client *sc = arg;
	struct control *c = sc->c;
	struct cluster_snap_result res;
	cluster_snapshot(c->vol->cluster, &sc->rq, client_gone, sc, &res);
	char msg[sizeof(res.message) * 6], reply[REPLY_MAX];
	json_str(msg, sizeof(msg), res.message);
	int n = snprintf(reply, sizeof(reply),
			 "{%s%s%s\"snapshot\":{\"name\":\"%s\",\"ok\":%s,\"coordinator\":\"%s\","
			 "\"requested_by\":\"%s\",\"freeze_wait_ms\":%llu,\"frozen_ms\":%llu,\"hook_ms\":%llu,"
			 "\"longest_write_stall_ms\":%llu,\"longest_write_stall_node\":\"%s\","
			 "\"nodes_reported\":%u,\"nodes_expected\":%u,\"guid\":\"%s\"}}\n",
			 res.status ? "\"error\":\"" : "", res.status ? msg : "", res.status ? "\"," : "",
			 sc->rq.name, res.status ? "false" : "true", c->node, sc->rq.requester,
			 (unsigned long long)res.wait_ms, (unsigned long long)res.frozen_ms,
			 (unsigned long long)res.hook_ms, (unsigned long long)res.stall_ms, res.stall_node,
			 res.nodes_reported, res.nodes_expected, res.guid);
	if (n > 0)
		write_all(sc->fd, reply);
	close(sc->fd);
	free(sc);
	pthread_mutex_lock(&c->mu);
	c->snapshots--;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* "TIMEOUT NAME NEWGUID|- HOOK": 0 with *rq filled, or the cause in err. */
static int parse_snapshot(const char *args, struct cluster_snap_request *rq, char *err, size_t errlen)
{
	char name[SNAP_NAME_MAX + 2], guid[38];
	unsigned timeout;
	int used = 0;
	memset(rq, 0, sizeof(*rq));
	if (sscanf(args, "%u %65s %37s %n", &timeout, name, guid, &used) != 3 || used == 0 || !args[used]) {
		snprintf(err, errlen, "snapshot request wants TIMEOUT NAME NEWGUID|- HOOK");
		return -EINVAL;
	}
	if (strlen(name) > SNAP_NAME_MAX || strlen(guid) > 36 || strlen(args + used) >= sizeof(rq->hook)) {
		snprintf(err, errlen, "snapshot name, GUID or hook path too long");
		return -EINVAL;
	}
	if (strcmp(guid, "-") != 0)
		snprintf(rq->new_guid, sizeof(rq->new_guid), "%s", guid);
	snprintf(rq->name, sizeof(rq->name), "%s", name);
	snprintf(rq->hook, sizeof(rq->hook), "%s", args + used);
	rq->timeout_s = timeout;
	return 0;
}

/* Starts the snapshot thread, which then owns fd; 1 when it did. */
static int snapshot_request(struct control *c, int fd, const char *args, char *reply, size_t len)
{
	char err[512], esc[1024];
	struct snap_client *sc = calloc(1, sizeof(*sc));
	int rc = sc ? 0 : -ENOMEM;
	if (rc)
		snprintf(err, sizeof(err), "out of memory");
	else if (!c->vol->cluster) {
		snprintf(err, sizeof(err), "volume %s is mounted standalone: snapshots are for cluster "
			 "volumes (unmount it and copy the LUN instead)", c->vol->uuid);
		rc = -EINVAL;
	} else
		rc = parse_snapshot(args, &sc->rq, err, sizeof(err));
	if (rc == 0)
		rc = cluster_snap_check(&sc->rq, err, sizeof(err));
	pthread_t t;
	if (rc == 0) {
		sc->c = c;
		sc->fd = fd;
		snprintf(sc->rq.requester, sizeof(sc->rq.requester), "%s", c->node);
		pthread_mutex_lock(&c->mu);
		c->snapshots++;
		pthread_mutex_unlock(&c->mu);
		if (pthread_create(&t, NULL, snapshot_main, sc) == 0) {
			pthread_detach(t);
			return 1;
		}
		pthread_mutex_lock(&c->mu);
		c->snapshots--;
		pthread_mutex_unlock(&c->mu);
		snprintf(err, sizeof(err), "cannot start the snapshot thread");
	}
	free(sc);
	json_str(esc, sizeof(esc), err);
	snprintf(reply, len, "{\"error\":\"%s\"}\n", esc);
	return 0;
}

/* Reads one request line with a deadline; a silent client cannot pin us. */
static int read_request(int fd, char *buf, size_t len)
{
	size_t got = 0;
	while (got + 1 < len) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 2000) <= 0)
			return -ETIMEDOUT;
		ssize_t n = read(fd, buf + got, len - 1 - got);
		if (n <= 0)
			return -EIO;
		got += (size_t)n;
		buf[got] = 0;
		char *nl = strchr(buf, '\n');
		if (nl) {
			*nl = 0;
			return 0;
		}
	}
	return -E2BIG;
}

/* 1 when fd was handed to a thread that answers later. */
static int serve_client(struct control *c, int fd)
{
	char req[REQUEST_MAX], reply[REPLY_MAX];
	int rc = read_request(fd, req, sizeof(req));
	if (rc == 0 && strncmp(req, "snapshot ", 9) == 0) {
		if (snapshot_request(c, fd, req + 9, reply, sizeof(reply)))
			return 1;
	} else if (rc)
		snprintf(reply, sizeof(reply), "{\"error\":\"%s\"}\n",
			 rc == -E2BIG ? "request too long" : "no request");
	else if (strcmp(req, "status") == 0)
		status_json(c, reply, sizeof(reply));
	else if (strncmp(req, "move", 4) == 0 && (req[4] == 0 || req[4] == ' '))
		move_request(c, req[4] ? req + 5 : "", reply, sizeof(reply));
	else if (strcmp(req, "grow") == 0)
		grow_request(c, reply, sizeof(reply));
	else if (strncmp(req, "maintenance ", 12) == 0)
		maintenance_request(c, req + 12, reply, sizeof(reply));
	else if (strncmp(req, "redirect ", 9) == 0)
		redirect_request(c, req + 9, reply, sizeof(reply));
	else {
		char esc[REQUEST_MAX * 6];
		json_str(esc, sizeof(esc), req);
		snprintf(reply, sizeof(reply), "{\"error\":\"unknown request '%.200s'\"}\n", esc);
	}
	write_all(fd, reply);
	return 0;
}

static void *control_main(void *arg)
{
	struct control *c = arg;
	while (!c->stopping) {
		struct pollfd p = { c->listen_fd, POLLIN, 0 };
		if (poll(&p, 1, 500) <= 0)
			continue;
		int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		if (!serve_client(c, fd))
			close(fd);
	}
	return NULL;
}

int control_start(struct control *c, struct volume *v, const char *mountpoint, const char *node)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	c->vol = v;
	c->listen_fd = -1;
	snprintf(c->mountpoint, sizeof(c->mountpoint), "%s", mountpoint);
	snprintf(c->node, sizeof(c->node), "%s", node);
	control_socket_path(v->uuid, c->path, sizeof(c->path));
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(c->path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	strcpy(addr.sun_path, c->path);
	if (mkdir(CONTROL_DIR, 0700) != 0 && errno != EEXIST) {
		csvfs_log(LOG_WARN_L, "control: cannot create %s: %s", CONTROL_DIR, strerror(errno));
		return -errno;
	}
	c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->listen_fd < 0)
		return -errno;
	unlink(c->path);  /* a socket left by a crashed daemon of this volume */
	mode_t old = umask(077);
	int rc = bind(c->listen_fd, (struct sockaddr *)&addr, sizeof(addr));
	umask(old);
	if (rc == 0)
		rc = listen(c->listen_fd, 8);
	if (rc == 0)
		rc = pthread_create(&c->thread, NULL, control_main, c);
	if (rc) {
		int e = errno;
		csvfs_log(LOG_WARN_L, "control: cannot serve %s: %s", c->path, strerror(e));
		close(c->listen_fd);
		c->listen_fd = -1;
		return -e;
	}
	c->running = 1;
	return 0;
}

void control_stop(struct control *c)
{
	if (!c->running)
		return;
	c->stopping = 1;
	pthread_join(c->thread, NULL);
	/* A snapshot in progress sees stopping, thaws and answers. */
	pthread_mutex_lock(&c->mu);
	while (c->snapshots)
		pthread_cond_wait(&c->cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
	close(c->listen_fd);
	unlink(c->path);
	c->running = 0;
}

int csvfs_control_request(const char *uuid, const char *request, char *reply, size_t len,
			  char *err, size_t errlen)
{
	return csvfs_control_request_within(uuid, request, reply, len, 5000, err, errlen);
}

int csvfs_control_request_within(const char *uuid, const char *request, char *reply, size_t len,
				 unsigned timeout_ms, char *err, size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	control_socket_path(uuid, addr.sun_path, sizeof(addr.sun_path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		int e = errno;
		snprintf(err, errlen, "no csvfs daemon answers for volume %s at %s: %s", uuid,
			 addr.sun_path, strerror(e));
		if (fd >= 0)
			close(fd);
		return -e;
	}
	char line[REQUEST_MAX];
	snprintf(line, sizeof(line), "%s\n", request);
	size_t got = 0;
	int rc = write(fd, line, strlen(line)) == (ssize_t)strlen(line) ? 0 : -EIO;
	while (rc == 0 && got + 1 < len) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, (int)timeout_ms) <= 0) {
			rc = -ETIMEDOUT;
			break;
		}
		ssize_t n = read(fd, reply + got, len - 1 - got);
		if (n < 0)
			rc = -EIO;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	reply[got] = 0;
	close(fd);
	if (rc)
		snprintf(err, errlen, "volume %s: control request '%s' failed: %s", uuid, request,
			 strerror(-rc));
	return rc;
}
