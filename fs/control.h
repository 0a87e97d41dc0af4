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

/* This node's coordinator roles, one marker per volume in the control
 * directory (<GUID>.coordinator, holding the daemon's pid): the election
 * prefers the node that coordinates fewest volumes (docs/volumes.md). */
void control_note_coordinator(const char *uuid, int coordinating);
/* Volumes other than uuid that a live daemon of this node coordinates. */
unsigned control_coordinated_here(const char *except_uuid);

#endif
