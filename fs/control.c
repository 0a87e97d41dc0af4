/* The control channel: a Unix socket per volume (/run/csvfs/<GUID>.sock,
 * root only) on which csvctl asks the daemon for its state. One request line,
 * one JSON reply, then the connection closes. Requests: "status". */
#include "fs/csvfs.h"
#include "fs/internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_DIR "/run/csvfs"
#define REQUEST_MAX 256
#define REPLY_MAX 16384

void control_socket_path(const char *uuid, char *out, size_t len)
{
	snprintf(out, len, "%s/%s.sock", CONTROL_DIR, uuid);
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
	meta_statfs(v, &st);
	struct journal_stats js;
	journal_get_stats(v->journal, &js);
	char lun[512], label[64], mnt[512], node[128];
	json_str(lun, sizeof(lun), v->lun);
	json_str(label, sizeof(label), v->label);
	json_str(mnt, sizeof(mnt), c->mountpoint);
	json_str(node, sizeof(node), c->node);
	snprintf(out, len,
		 "{\"volume\":{\"guid\":\"%s\",\"label\":\"%s\",\"lun\":\"%s\",\"mountpoint\":\"%s\","
		 "\"mode\":\"%s\",\"journaled\":%s,\"block_size\":%u,\"blocks\":%llu,\"free_blocks\":%llu,"
		 "\"inodes\":%llu,\"free_inodes\":%llu},"
		 "\"coordinator\":\"%s\","
		 "\"nodes\":[{\"name\":\"%s\",\"this_node\":true,\"state\":\"up\",\"mounted\":true,"
		 "\"io_state\":\"%s\",\"io_reasons\":[]}],"
		 "\"journal\":{\"commits_durable\":%llu,\"cache_hits\":%llu,\"cache_misses\":%llu}}\n",
		 v->uuid, label, lun, mnt, v->read_only ? "read-only" : "standalone",
		 v->journaled ? "true" : "false", v->blocksize,
		 (unsigned long long)st.f_blocks, (unsigned long long)st.f_bfree,
		 (unsigned long long)st.f_files, (unsigned long long)st.f_ffree, node, node,
		 "direct", (unsigned long long)journal_durable_id(v->journal),
		 (unsigned long long)js.cache_hits, (unsigned long long)js.cache_misses);
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

static void serve_client(struct control *c, int fd)
{
	char req[REQUEST_MAX], reply[REPLY_MAX];
	int rc = read_request(fd, req, sizeof(req));
	if (rc)
		snprintf(reply, sizeof(reply), "{\"error\":\"%s\"}\n",
			 rc == -E2BIG ? "request too long" : "no request");
	else if (strcmp(req, "status") == 0)
		status_json(c, reply, sizeof(reply));
	else {
		char esc[REQUEST_MAX * 6];
		json_str(esc, sizeof(esc), req);
		snprintf(reply, sizeof(reply), "{\"error\":\"unknown request '%.200s'\"}\n", esc);
	}
	size_t off = 0, len = strlen(reply);
	while (off < len) {
		ssize_t n = write(fd, reply + off, len - off);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
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
		serve_client(c, fd);
		close(fd);
	}
	return NULL;
}

int control_start(struct control *c, struct volume *v, const char *mountpoint, const char *node)
{
	memset(c, 0, sizeof(*c));
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
	close(c->listen_fd);
	unlink(c->path);
	c->running = 0;
}

int csvfs_control_request(const char *uuid, const char *request, char *reply, size_t len,
			  char *err, size_t errlen)
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
		if (poll(&p, 1, 5000) <= 0) {
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
