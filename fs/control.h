/* The control socket (fs/control.c): csvctl's way into a mounted volume
 * (status, move). */
#ifndef CSVFS_FS_CONTROL_H
#define CSVFS_FS_CONTROL_H

#include <pthread.h>

struct volume;

struct control {
	struct volume *vol;
	int listen_fd, running;
	volatile int stopping;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned snapshots;             /* snapshot requests being served (own threads) */
	char path[108];
	char mountpoint[4096];
	char node[64];
};
int control_start(struct control *c, struct volume *v, const char *mountpoint, const char *node);
void control_stop(struct control *c);
void control_socket_path(const char *uuid, char *out, size_t len);

#endif
