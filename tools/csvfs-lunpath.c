/* csvfs-lunpath — one lab node's own path to the shared LUN, which a tester
 * can make fail or hang (docs/lab.md, "Path faults").
 *
 *   csvfs-lunpath IMAGE MODEFILE MOUNTPOINT
 *
 * Mounts a FUSE filesystem at MOUNTPOINT holding one file, "lun", whose
 * bytes are IMAGE's. The csvfs daemon of the node opens MOUNTPOINT/lun
 * (O_DIRECT) instead of IMAGE, so every LUN transfer it makes crosses this
 * path and the kernel hands it real errors. MODEFILE holds one word, read
 * every POLL_MS:
 *   ok    transfers reach IMAGE;
 *   fail  every read, write and flush fails with EIO (a dead HBA or cable);
 *   hang  every read, write and flush waits until the mode changes (a path
 *         that stops answering), then fails with EIO: what the SCSI error
 *         handler does to the commands of a path it resets (aborts them), so
 *         a write held by the hang never lands later, after newer data.
 *
 * Why a FUSE pass-through: this machine's kernel has neither device-mapper
 * (dm-error / dmsetup suspend would be the usual tools), nor nbd nor ublk,
 * and a loop device can neither fail nor hang on demand. FUSE gives both, and
 * the daemon still sees them from the kernel (pread returning EIO, or not
 * returning), not from a hook inside itself.
 *
 * IMAGE is opened without O_DIRECT: every node's path reaches the one host
 * page cache of IMAGE, so nodes stay coherent, and a flush (fsync on "lun")
 * is an fdatasync of IMAGE. */
#define FUSE_USE_VERSION 35
#include <fuse.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define POLL_MS 20
#define LUN_NAME "/lun"

enum path_mode { PATH_OK, PATH_FAIL, PATH_HANG };

/* Written by the mode watcher, read by every request: an atomic, and a
 * condition variable under mode_lock for the requests a hang holds. */
static _Atomic int mode = PATH_OK;
static pthread_mutex_t mode_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mode_cond = PTHREAD_COND_INITIALIZER;
static int image_fd = -1;           /* set before fuse_main, then read-only */
static const char *mode_file;       /* likewise */

static int parse_mode(const char *s, enum path_mode *out)
{
	if (strncmp(s, "ok", 2) == 0)
		*out = PATH_OK;
	else if (strncmp(s, "fail", 4) == 0)
		*out = PATH_FAIL;
	else if (strncmp(s, "hang", 4) == 0)
		*out = PATH_HANG;
	else
		return -1;
	return 0;
}

/* Polls MODEFILE; a missing or unreadable file leaves the mode as it is. */
static void *mode_watcher(void *arg)
{
	(void)arg;
	for (;;) {
		char buf[16] = { 0 };
		FILE *f = fopen(mode_file, "r");
		enum path_mode m;
		if (f) {
			if (fgets(buf, sizeof(buf), f) && parse_mode(buf, &m) == 0 &&
			    (int)m != atomic_load(&mode)) {
				pthread_mutex_lock(&mode_lock);
				atomic_store(&mode, m);
				pthread_cond_broadcast(&mode_cond);
				pthread_mutex_unlock(&mode_lock);
				fprintf(stderr, "csvfs-lunpath: path is now %s", buf);
			}
			fclose(f);
		}
		struct timespec t = { 0, POLL_MS * 1000000L };
		nanosleep(&t, NULL);
	}
	return NULL;
}

/* 0: go on to the image; -EIO: the path failed. Waits while it hangs, and
 * a request the hang held is aborted (EIO) when it ends. */
static int path_pass(void)
{
	if (atomic_load(&mode) == PATH_OK)
		return 0;
	pthread_mutex_lock(&mode_lock);
	int held = 0;
	while (atomic_load(&mode) == PATH_HANG) {
		held = 1;
		pthread_cond_wait(&mode_cond, &mode_lock);
	}
	int rc = held || atomic_load(&mode) == PATH_FAIL ? -EIO : 0;
	pthread_mutex_unlock(&mode_lock);
	return rc;
}

static int lp_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	(void)fi;
	memset(st, 0, sizeof(*st));
	if (strcmp(path, "/") == 0) {
		st->st_mode = S_IFDIR | 0700;
		st->st_nlink = 2;
		return 0;
	}
	if (strcmp(path, LUN_NAME) != 0)
		return -ENOENT;
	struct stat img;
	if (fstat(image_fd, &img) != 0)
		return -errno;
	st->st_mode = S_IFREG | 0600;
	st->st_nlink = 1;
	st->st_size = img.st_size;
	st->st_blksize = 4096;
	st->st_blocks = img.st_blocks;
	return 0;
}

static int lp_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	(void)off;
	(void)fi;
	(void)flags;
	if (strcmp(path, "/") != 0)
		return -ENOTDIR;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	fill(buf, &LUN_NAME[1], NULL, 0, 0);   /* "lun" */
	return 0;
}

static int lp_open(const char *path, struct fuse_file_info *fi)
{
	if (strcmp(path, LUN_NAME) != 0)
		return -ENOENT;
	/* Every transfer reaches us: no page cache between the node and its path. */
	fi->direct_io = 1;
	return 0;
}

static int lp_read(const char *path, char *buf, size_t len, off_t off, struct fuse_file_info *fi)
{
	(void)path;
	(void)fi;
	int rc = path_pass();
	if (rc)
		return rc;
	ssize_t n = pread(image_fd, buf, len, off);
	return n < 0 ? -errno : (int)n;
}

static int lp_write(const char *path, const char *buf, size_t len, off_t off,
		    struct fuse_file_info *fi)
{
	(void)path;
	(void)fi;
	int rc = path_pass();
	if (rc)
		return rc;
	ssize_t n = pwrite(image_fd, buf, len, off);
	return n < 0 ? -errno : (int)n;
}

static int lp_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	(void)datasync;
	(void)fi;
	int rc = path_pass();
	if (rc)
		return rc;
	return fdatasync(image_fd) == 0 ? 0 : -errno;
}

static void *lp_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->direct_io = 1;
	cfg->use_ino = 0;
	cfg->attr_timeout = 0;
	return NULL;
}

static const struct fuse_operations lunpath_ops = {
	.init = lp_init,
	.getattr = lp_getattr,
	.readdir = lp_readdir,
	.open = lp_open,
	.read = lp_read,
	.write = lp_write,
	.fsync = lp_fsync,
};

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: csvfs-lunpath IMAGE MODEFILE MOUNTPOINT\n");
		return 2;
	}
	image_fd = open(argv[1], O_RDWR | O_CLOEXEC);
	if (image_fd < 0) {
		fprintf(stderr, "csvfs-lunpath: cannot open the LUN image %s: %s\n", argv[1],
			strerror(errno));
		return 1;
	}
	mode_file = argv[2];
	pthread_t t;
	if (pthread_create(&t, NULL, mode_watcher, NULL) != 0) {
		fprintf(stderr, "csvfs-lunpath: cannot start the mode watcher\n");
		return 1;
	}
	pthread_detach(t);
	/* foreground, multi-threaded; one path per node, its own mount point */
	char *fargv[] = { argv[0], "-f", "-o", "fsname=csvfs-lunpath", argv[3], NULL };
	return fuse_main(5, fargv, &lunpath_ops, NULL);
}
