/* File locks (internal to fs): a table of POSIX/OFD record locks and flock
 * locks, keyed by (node, owner), with the semantics of Linux's own
 * fs/locks.c for one inode: byte ranges, shared and exclusive, a lock of an
 * owner replaces what that owner held on its range (upgrade, downgrade,
 * split, merge of adjacent ranges of one type). POSIX and flock locks never
 * conflict with each other, as on Linux.
 *
 * Two tables per node (docs/file-locks.md):
 *   the volume's table  kept by the coordinator (or a standalone node): the
 *                       authority every lock request of every node is
 *                       decided by; rebuilt by reclaim at a new coordinator,
 *                       during a grace period
 *   the node's mirror   what this node's processes hold, as granted: what it
 *                       reclaims, and what it checks before it bothers the
 *                       coordinator at a close
 * Every function locks the table; none calls out while holding it. */
#ifndef CSVFS_FS_PLOCK_H
#define CSVFS_FS_PLOCK_H

#include <stddef.h>
#include <stdint.h>

#define PLOCK_NODE_MAX 64
/* The last byte a lock can cover: the kernel's OFFSET_MAX ("to end of file"). */
#define PLOCK_EOF ((uint64_t)INT64_MAX)

enum plock_kind { PLOCK_POSIX = 0, PLOCK_FLOCK = 1 };
enum plock_type { PLOCK_READ = 1, PLOCK_WRITE = 2, PLOCK_UNLOCK = 3 };
/* plock_release: which of a node's locks on an inode go. */
enum plock_by { PLOCK_BY_OWNER = 1, PLOCK_BY_FH = 2 };

struct plock {
	uint32_t ino;
	uint8_t kind, type;         /* enum plock_kind, enum plock_type */
	uint64_t start, end;        /* inclusive; end <= PLOCK_EOF */
	uint64_t owner;             /* FUSE's lock owner: a process's files, or an open file (OFD, flock) */
	uint64_t fh;                /* the node's open file the lock was taken through */
	uint32_t pid;               /* the holder, in its node's pid namespace */
	char node[PLOCK_NODE_MAX];
};

struct plock_table;

struct plock_table *plock_table_new(void);
void plock_table_free(struct plock_table *t);

/* The lock req conflicts with (another owner's, overlapping, one of them a
 * write lock, same kind): 1 and *conflict filled, else 0. */
int plock_test(struct plock_table *t, const struct plock *req, struct plock *conflict);
/* Takes req (or unlocks its range, type PLOCK_UNLOCK) if nothing conflicts:
 * 0, or -EAGAIN with the table unchanged. *gen: the table's generation the
 * answer was given at (plock_wait_change). */
int plock_set(struct plock_table *t, const struct plock *req, uint64_t *gen);
/* The owner of req holds some of req's range (an unlock would change something). */
int plock_owned(struct plock_table *t, const struct plock *req);
/* As plock_set without the conflict check: a lock granted before (reclaim,
 * the mirror of what the authority granted). */
void plock_apply(struct plock_table *t, const struct plock *req);
/* A node's locks on ino go: its POSIX locks of owner key (a close), or
 * every lock taken through its open file key (the last close). Returns how
 * many ranges went. */
unsigned plock_release(struct plock_table *t, const char *node, uint32_t ino, enum plock_by by,
		       uint64_t key);
/* Whether the node holds anything plock_release(by, key) would drop. */
int plock_holds(struct plock_table *t, const char *node, uint32_t ino, enum plock_by by, uint64_t key);
/* Every lock of node goes (fenced). Returns how many. */
unsigned plock_drop_node(struct plock_table *t, const char *node);
/* A copy of node's locks (NULL: everyone's), to send without the table
 * locked. Free *out. */
int plock_snapshot(struct plock_table *t, const char *node, struct plock **out, size_t *n);

/* ---- a node's mirror: what it reclaims, what it lost ------------------------ */

/* Every lock of from goes into to, unchecked (a new coordinator's own). */
void plock_copy_into(struct plock_table *from, struct plock_table *to);
/* The mirror's locks were released by the others (this node was fenced):
 * they go, and the open files that held them are remembered as lost.
 * Returns how many ranges went. */
unsigned plock_lose_all(struct plock_table *t);
/* One lock a new coordinator refused: its open file's locks are lost. */
void plock_forfeit(struct plock_table *t, const struct plock *l);
/* The open file fh held a lock that was lost (until plock_forget_fh). */
int plock_fh_lost(struct plock_table *t, uint64_t fh);
void plock_forget_fh(struct plock_table *t, uint64_t fh);

/* ---- generations and the grace period (the authority) ---------------------- */

uint64_t plock_gen(struct plock_table *t);
/* Waits until the generation differs from gen, or timeout_ms passes, or the
 * grace period ends; returns the generation then. */
uint64_t plock_wait_change(struct plock_table *t, uint64_t gen, unsigned timeout_ms);
/* A new authority: the table empties and, for at most max_ms, only reclaims
 * are taken, until every node of expect[0..n) said it is done. */
void plock_begin_grace(struct plock_table *t, const char *const *expect, size_t n, unsigned max_ms);
void plock_reclaim_done(struct plock_table *t, const char *node);
/* Ordinary requests wait: the table is being rebuilt. */
int plock_in_grace(struct plock_table *t);
/* Since the last plock_begin_grace: the nodes it expected that have not said
 * they are done (up to max names; returns how many there are). */
size_t plock_not_reclaimed(struct plock_table *t, char (*names)[PLOCK_NODE_MAX], size_t max);

#endif
