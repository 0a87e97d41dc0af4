/* File locks as a node's processes see them (internal to fs): POSIX and OFD
 * record locks and flock, coherent across every node of the volume. The
 * coordinator's table decides (fs/plock.h, fs/ops.h "setlk"); this layer
 * keeps the node's mirror of what it was granted, waits for blocked locks
 * (F_SETLKW, LOCK_EX without LOCK_NB) without holding a FUSE thread, tells
 * files whose locks were lost (the node was cut off and fenced, fs/plock.h
 * "mirror") fail I/O with EIO rather than write unprotected. The cluster
 * code reclaims and loses locks with the tables alone (fs/plock.h).
 * docs/file-locks.md describes the protocol and the choices. */
#ifndef CSVFS_FS_LOCKS_H
#define CSVFS_FS_LOCKS_H

#include "fs/meta.h"
#include "fs/plock.h"

/* The waiting thread; node names this node in lock tables (the volume
 * holds the tables themselves). */
int locks_init(struct volume *v, const char *node);
/* Blocked waits end with -EINTR. */
void locks_fini(struct volume *v);

/* Takes or unlocks req at once: 0, -EAGAIN (a conflicting lock is held),
 * or an errno. req->node is filled in. */
int locks_set(struct volume *v, struct plock *req);
/* The lock that would block req (type PLOCK_UNLOCK in *req when none). */
int locks_get(struct volume *v, struct plock *req);

/* A blocked request: made (NULL: out of memory), then started; from then
 * on done(arg, rc) is called exactly once, from the waiting thread, with 0
 * (granted), -EINTR (locks_wait_interrupt, which may come any time after
 * the making) or an errno. */
typedef void (*lock_done_fn)(void *arg, int rc);
struct lock_wait;
struct lock_wait *locks_wait_new(struct volume *v, const struct plock *req, lock_done_fn done,
				 void *arg);
void locks_wait_start(struct lock_wait *w);
void locks_wait_interrupt(struct lock_wait *w);

/* A close (PLOCK_BY_OWNER: the POSIX locks of that owner) or the last close
 * of an open file (PLOCK_BY_FH: everything taken through it). */
void locks_release(struct volume *v, uint32_t ino, enum plock_by by, uint64_t key);
/* The open file fh held a lock that was lost: its I/O must fail. */
int locks_fh_lost(struct volume *v, uint64_t fh);

#endif
