/* The metadata engine (fs/meta_*.c), as the rest of fs sees it: the volume,
 * the in-memory inode states (minodes) it shares with the data path and the
 * cluster code, and the meta_* operations every metadata change goes
 * through — on the coordinator or a standalone node only (fs/ops_local.c
 * calls them; a participant's requests reach them through fs/server.c).
 * Inode numbers are ext4 inode numbers; errors are negative errno.
 * The pieces the engine's files share among themselves are in
 * fs/meta_internal.h. */
#ifndef CSVFS_FS_META_H
#define CSVFS_FS_META_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include <ext2fs/ext2fs.h>

#include "fs/log.h"
#include "journal/journal.h"

/* ---- in-memory inode state -------------------------------------------- */

enum extent_state { EXTENT_HOLE, EXTENT_UNWRITTEN, EXTENT_WRITTEN };

/* A run of file blocks: [lblk, lblk+len) maps to [pblk, pblk+len) (no pblk for
 * a hole). This is the unit of a layout. */
struct meta_extent {
	uint64_t lblk, len, pblk;
	enum extent_state state;
};

/* Mappings cached per inode: enough for the extent map of a VM disk, so a
 * participant's random I/O needs no round trip once warm. */
#define MINODE_MAP_CACHE 4096

/* State of an inode that is open or being worked on. Lifetime: references from
 * the table; fields are guarded as noted. */
struct minode {
	ext2_ino_t ino;
	struct minode *hash_next;      /* table lock */
	unsigned refs;                 /* table lock */
	unsigned open_count;           /* volume lock */
	uint64_t spec_start, spec_end; /* volume lock: write-ahead blocks we added (lblk range) */
	int times_dirty;               /* volume lock: mtime/ctime newer than disk */
	int tree_checked;              /* volume lock: the whole extent tree passed extent_tree_check */
	struct timespec mtime, ctime;  /* volume lock, valid when times_dirty */
	_Atomic uint64_t size;         /* authoritative while referenced */

	/* Reads and writes hold io_lock shared; truncate, punch and anything
	 * else that frees or moves blocks holds it exclusive. */
	pthread_rwlock_t io_lock;
	/* Serialises writes that allocate, convert or read-modify-write. */
	pthread_mutex_t write_lock;
	pthread_mutex_t map_lock;      /* guards map cache */
	struct meta_extent *map;       /* sorted by lblk, disjoint; grows to MINODE_MAP_CACHE */
	unsigned nmap, map_cap;

	/* Participant state (cluster_layout.c, fsops.c); guarded by the cluster's
	 * lock unless noted. The layout lock holds a reference on the minode. */
	struct dg_lock *layout_lk;
	struct cl_lockres *layout_res; /* its callbacks' argument (cluster_layout.c) */
	uint64_t layout_token;         /* names the lock in its callbacks */
	int layout_state;              /* LAYOUT_* */
	_Atomic int size_stale;        /* refresh size from the coordinator before a read */
	uint32_t generation;           /* of the inode this minode was opened as (reclaim sends it) */
	/* Written ranges committed to a coordinator but not yet made durable
	 * there: sent again to a new coordinator (map_lock). A participant's
	 * until an fsync; the coordinator's own until txn, the journal
	 * transaction that holds them, is durable (0: a participant's). */
	struct pending_commit { uint64_t lblk, len, size; uint32_t epoch; uint64_t txn; } *pend;
	unsigned npend, pend_cap;
};

enum { LAYOUT_NONE, LAYOUT_WAITING, LAYOUT_GRANTED, LAYOUT_FAILED };

/* ---- the volume --------------------------------------------------------- */

struct volume_opts {
	const char *lun;
	int read_only;
	size_t cache_bytes;
	int errors_continue;           /* errors=continue: keep taking changes after corruption */
};

struct cluster;
struct cl_lockres;
struct dg_lock;

struct deferred_free { blk64_t blk, num; uint64_t txn; /* 0: running transaction */ };

struct remote_link;

struct plock_table;
struct lock_client;

struct volume {
	ext2_filsys fs;
	struct journal *journal;
	pthread_mutex_t lock;          /* libext2fs is not thread-safe: every call under it */
	int data_fd;                   /* LUN, O_DIRECT, file data only */
	struct lun data_lun;           /* data_fd named, for lun_pread / lun_pwrite */
	unsigned blocksize;
	int read_only;
	char lun[4096];
	char uuid[37];
	char label[17];

	pthread_mutex_t table_lock;    /* guards the inode table */
	struct minode **buckets;
	size_t nbuckets;

	int dirty;                     /* volume lock: bitmaps/sb need writing */
	/* Group commit (volume_sync), under the volume lock: a leader is
	 * writing a transaction; how many were taken, finished, finished well. */
	pthread_cond_t sync_cond;
	int sync_busy;
	uint64_t sync_prepared, sync_done, sync_ok_upto;
	int mmp_held;                  /* we hold the MMP block (fsck state + heartbeat) */
	/* volume lock: the LUN holds a cleanly unmounted ext4 for a snapshot
	 * (volume_quiesce); commits wait on sync_cond until volume_resume. */
	int quiesced;
	int journaled;                 /* metadata goes through the JBD2 journal */
	int opened;                    /* volume_open succeeded: close writes state */
	struct deferred_free *freed;   /* volume lock: frees of the running transaction */
	size_t nfreed, freed_cap;
	uint64_t freed_blocks;         /* volume lock: blocks in freed[] */
	pthread_t flusher;
	int flusher_running;
	pthread_mutex_t flusher_lock;
	pthread_cond_t flusher_cond;
	int stopping;
	size_t cache_bytes;
	int takeover;                  /* volume lock: the engine was attached by a takeover (or a
					* move) and the other nodes' reclaims may still come */
	/* Validity checks (meta_check.c, docs/hostile-input.md), built when the
	 * engine attaches: the metadata zones no extent or directory block may
	 * touch (sorted), and the inodes found corrupt (volume lock). */
	struct sys_zone *zones;
	size_t nzones;
	struct bad_inode *bad;
	size_t nbad, bad_cap;
	int errors_continue;           /* errors=continue (else remount-ro) */
	/* Corruption seen since the engine attached: set under the volume lock,
	 * read without it by the data path (meta_write_check). */
	_Atomic int errors_found;
	/* Participant: the coordinator's last I/O state answer said it refuses
	 * changes after corruption (fs/cluster_iostate.c); writes get EROFS. */
	_Atomic int coord_refuses_writes;
	/* Cluster mode (fs/cluster*.c); NULL when standalone. The engine (fs,
	 * journal) is attached only while this node is the coordinator. */
	struct cluster *cluster;
	/* A participant's way to the coordinator (fs/ops.h): the cluster's
	 * connection; NULL when standalone. */
	const struct remote_link *remote;
	/* File locks (fs/locks.h): the table this node decides lock requests
	 * by while it is the coordinator (or standalone), this node's mirror of
	 * what its processes hold, and the name both know this node by. */
	struct plock_table *plocks, *plocks_mine;
	char node_name[64];
	struct lock_client *lockc;     /* waiters, lost files (fs/locks.c) */
	_Atomic unsigned lock_epoch;   /* bumped when this node's file locks were lost */
	/* volume lock: the reply table (meta_reply.c), loaded while the engine
	 * is attached; replies_off: inode 5 is not one, records are not kept. */
	struct reply_table *replies;
	int replies_off;
	/* volume lock: a hash-tree lookup's blocks (meta_dir.c), allocated at
	 * the first one and kept: a lookup allocates no 16 KiB each time. */
	char *lookup_buf;
};

int volume_open(const struct volume_opts *o, struct volume **out, char *err, size_t errlen);
/* Cluster roles: every node has the node-side volume (volume_new: inode
 * table, LUN for data; volume_probe: identity from the superblock); the
 * coordinator attaches the engine, and detaches it cleanly when it hands the
 * role over, or abandons it (no write) when it lost the role. */
int volume_new(const struct volume_opts *o, struct volume **out, char *err, size_t errlen);
int volume_probe(struct volume *v, char *err, size_t errlen);
int volume_attach_engine(struct volume *v, int takeover, char *err, size_t errlen);
void volume_detach_engine(struct volume *v);
/* Ends the reclaim window a takeover (or move) opened, once every node that
 * may hold files open told the new coordinator (docs/cluster.md, "Orphans
 * across a takeover"): the orphans no open holds any more are freed, and from
 * now on an unlinked file nobody has open cannot be opened. Returns how many
 * were freed, or -errno; 0 at once when no window is open. */
int volume_end_takeover(struct volume *v);
void volume_abandon_engine(struct volume *v);
void volume_free(struct volume *v);
/* Writes everything and makes it durable. Caller holds no locks. */
int volume_sync(struct volume *v);
void volume_start(struct volume *v);
void volume_close(struct volume *v);
/* Under v->lock: mark that allocation state changed. */
void volume_mark_dirty(struct volume *v);
/* Snapshot freeze (docs/snapshot.md), coordinator only, with every node's
 * changes held: commits the journal, checkpoints it and leaves the LUN a
 * cleanly unmounted ext4 (no replay needed, MMP clean). Commits wait until
 * volume_resume, which journals and marks the volume in use again. */
int volume_quiesce(struct volume *v, char *err, size_t errlen);
int volume_resume(struct volume *v, char *err, size_t errlen);
int volume_sync_locked(struct volume *v);

/* With the engine attached the inode must exist; without (a participant)
 * the minode starts with size 0 and the caller sets it. */
struct minode *minode_get(struct volume *v, ext2_ino_t ino);
/* Takes m out of the table: the next minode_get of its number gets a fresh
 * one (its inode was freed and the number may be reused). */
void minode_forget(struct volume *v, struct minode *m);
/* A reference to ino's minode if one is live, else NULL. */
struct minode *minode_find(struct volume *v, ext2_ino_t ino);
/* Without the engine (a participant): ino's minode for the file of
 * generation gen. A minode left over from an earlier file with that number
 * (no opens here, another generation, its last release still on the way)
 * is not this file's: it is forgotten and a fresh one made. */
struct minode *minode_get_generation(struct volume *v, ext2_ino_t ino, uint32_t gen);
/* One more reference on m, which the caller already holds one of (a lock
 * that outlives the caller's use keeps its own). */
void minode_ref(struct volume *v, struct minode *m);
/* How many opens this node's engine or front end counts on m. */
unsigned minode_open_count(struct volume *v, struct minode *m);
/* Engine attached: m's size read again from its inode (what a participant
 * knew may be stale). */
void minode_reload_size(struct volume *v, struct minode *m);
/* Engine attached: applies the written ranges this node committed as a
 * participant that no fsync made durable (the coordinator they went to may
 * have lost them); logs a range whose allocation is gone. Overwrite times
 * the participant had yet to send are stamped now. */
void meta_replay_pending(struct volume *v, struct minode *m);
/* The written ranges waiting in m->pend (fs/meta_pending.c), on either role. */
/* Remembers [lblk, lblk+len) and the size, committed to epoch's coordinator
 * (txn: the coordinator's own, its transaction; 0: a participant's). */
void minode_pend_add(struct minode *m, uint64_t lblk, uint64_t len, uint64_t size,
		     uint32_t epoch, uint64_t txn);
unsigned minode_pend_count(struct minode *m);
/* Forgets the ranges committed to epoch (an fsync there made them durable). */
void minode_pend_clear_epoch(struct minode *m, uint32_t epoch);
/* Engine attached: the transaction a change made now will be in (or an
 * earlier one: never a later one). */
uint64_t volume_txn_open(struct volume *v);
/* Forgets the coordinator's own ranges whose transaction is durable; with
 * all set, every one of them (the engine was detached cleanly). */
void minode_pend_prune(struct volume *v, struct minode *m, int all);
/* Calls fn on every live minode (each held by a reference during the call). */
void minode_foreach(struct volume *v, void (*fn)(struct volume *v, struct minode *m, void *arg),
		    void *arg);
/* The mapping cache: a hit fills out. */
int minode_map_lookup(struct minode *m, uint64_t lblk, struct meta_extent *out);
void minode_map_store(struct minode *m, const struct meta_extent *e);
void minode_put(struct volume *v, struct minode *m);
/* Forgets cached mappings after the extent tree changed. */
void minode_invalidate_map(struct minode *m);

/* ---- metadata engine ------------------------------------------------- */

struct meta_attr {
	uint64_t ino, size, blocks;    /* blocks in 512-byte units */
	uint32_t mode, nlink, uid, gid, rdev, generation;
	struct timespec atime, mtime, ctime;
};

struct meta_cred { uint32_t uid, gid, umask; };

enum {
	META_SET_MODE = 1 << 0, META_SET_UID = 1 << 1, META_SET_GID = 1 << 2,
	META_SET_SIZE = 1 << 3, META_SET_ATIME = 1 << 4, META_SET_MTIME = 1 << 5,
	META_SET_ATIME_NOW = 1 << 6, META_SET_MTIME_NOW = 1 << 7, META_SET_CTIME = 1 << 8,
};

struct meta_setattr {
	unsigned valid;
	uint32_t mode, uid, gid;
	uint64_t size;
	struct timespec atime, mtime, ctime;
};

struct meta_dirent {
	char *name;
	uint64_t ino;
	unsigned type;                 /* DT_* */
	int has_attr;                  /* attr is filled (a participant's readdirplus) */
	struct meta_attr attr;
};

/* 0, or the errno the engine gives a name it cannot hold (ENAMETOOLONG, ...). */
/* ---- Exactly once (meta_reply.c, docs/cluster.md "Exactly once") ----------
 * A participant's non-idempotent request is named by (node, client, slot,
 * seq): node its authenticated name, client a number its daemon drew at
 * start, slot one of its REPLY_SLOTS concurrent requests, seq that slot's
 * count. The engine records the id and the result with the change, in the
 * same journal transaction, so a new coordinator answers a resend from it. */
#define REPLY_SLOTS 32u
#define REPLY_NODES_MAX 64u
#define REPLY_ENTRY_BYTES 1024u
#define REPLY_TABLE_BYTES (REPLY_NODES_MAX * REPLY_ENTRY_BYTES)
struct meta_reply_key {
	char node[64];
	uint64_t client;
	uint32_t slot, seq;            /* slot < REPLY_SLOTS, seq > 0 */
	uint32_t op;                   /* the request's operation code */
};
/* A slot's last change: its seq and op, the inode and generation it made or
 * changed (0 for unlink, rmdir, rename). */
struct meta_reply_slot { uint32_t seq, op, ino, gen; };
struct meta_reply_entry {
	char node[64];                 /* "" = a free entry */
	uint64_t client, stamp;        /* stamp: when last used (least recently used goes first) */
	struct meta_reply_slot slot[REPLY_SLOTS];
};
/* The next change this thread makes is k's (NULL: none). */
void meta_reply_expect(const struct meta_reply_key *k);
/* 1 and *out when k was applied and recorded; 0 when not known. */
int meta_reply_lookup(struct volume *v, const struct meta_reply_key *k, struct meta_reply_slot *out);
/* The attributes now of the inode a recorded change made or changed;
 * -ESTALE when it is gone (freed, or its number reused) since. */
int meta_reply_attr(struct volume *v, const struct meta_reply_slot *done, struct meta_attr *out);
/* A recorded fallocate's answer: the size now of the file it changed. The
 * caller held it open, so an unlinked file is still the same object while
 * its inode is allocated with the recorded generation; -ESTALE when not. */
int meta_reply_size(struct volume *v, const struct meta_reply_slot *done, uint64_t *size);
/* An entry as it is on disk (REPLY_ENTRY_BYTES); decode: 1 an entry, 0 a
 * free one, -EINVAL a bad one (magic, checksum, name). */
void meta_reply_encode(const struct meta_reply_entry *e, uint8_t *buf);
int meta_reply_decode(const uint8_t *buf, struct meta_reply_entry *e);

int meta_check_name(const char *name);
int meta_lookup(struct volume *v, ext2_ino_t parent, const char *name, struct meta_attr *out);
int meta_getattr(struct volume *v, ext2_ino_t ino, struct meta_attr *out);
int meta_setattr(struct volume *v, ext2_ino_t ino, const struct meta_setattr *sa,
		 struct meta_attr *out);
/* Regular files, fifos, sockets, devices and directories (by mode). */
int meta_create(struct volume *v, ext2_ino_t parent, const char *name, uint32_t mode,
		uint32_t rdev, const struct meta_cred *cred, struct meta_attr *out);
int meta_symlink(struct volume *v, ext2_ino_t parent, const char *name, const char *target,
		 const struct meta_cred *cred, struct meta_attr *out);
int meta_link(struct volume *v, ext2_ino_t ino, ext2_ino_t newparent, const char *newname,
	      struct meta_attr *out);
int meta_unlink(struct volume *v, ext2_ino_t parent, const char *name);
int meta_rmdir(struct volume *v, ext2_ino_t parent, const char *name);
#define META_RENAME_NOREPLACE 1u
#define META_RENAME_EXCHANGE 2u
/* The source name is left holding a whiteout (overlayfs): a character device
 * 0:0 with mode 0, owned by cred, made in the same step as the rename. */
#define META_RENAME_WHITEOUT 4u
#define META_RENAME_FLAGS (META_RENAME_NOREPLACE | META_RENAME_EXCHANGE | META_RENAME_WHITEOUT)
int meta_rename(struct volume *v, ext2_ino_t parent, const char *name,
		ext2_ino_t newparent, const char *newname, unsigned flags);
/* cred: the caller, owner of a whiteout (NULL: root). */
int meta_rename_cred(struct volume *v, ext2_ino_t parent, const char *name,
		     ext2_ino_t newparent, const char *newname, unsigned flags,
		     const struct meta_cred *cred);
int meta_readlink(struct volume *v, ext2_ino_t ino, char *buf, size_t size);
/* Reads all entries of a directory (including . and ..). */
int meta_readdir(struct volume *v, ext2_ino_t ino, struct meta_dirent **out, size_t *n);
void meta_free_dirents(struct meta_dirent *d, size_t n);
int meta_statfs(struct volume *v, struct statvfs *out);

int meta_getxattr(struct volume *v, ext2_ino_t ino, const char *name, void *buf, size_t size);
int meta_listxattr(struct volume *v, ext2_ino_t ino, char *buf, size_t size);
#define META_XATTR_CREATE 1
#define META_XATTR_REPLACE 2
int meta_setxattr(struct volume *v, ext2_ino_t ino, const char *name, const void *value,
		  size_t size, int flags);
int meta_removexattr(struct volume *v, ext2_ino_t ino, const char *name);

/* Open counts keep unlinked files alive until their last close. */
/* -ESTALE: the inode is being freed, or its number now names another file. */
int meta_open(struct volume *v, struct minode *m, uint32_t generation, int truncate);
int meta_release(struct volume *v, struct minode *m);
/* Makes the inode's metadata durable (fsync). */
int meta_fsync(struct volume *v, struct minode *m, int datasync);

/* Layouts: the mapping of lblk (hole, unwritten or written run). */
int meta_map(struct volume *v, struct minode *m, uint64_t lblk, struct meta_extent *out);
/* Allocates unwritten blocks for the hole containing lblk, at least [lblk, lblk+len). */
int meta_alloc(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len);
/* Marks [lblk, lblk+len) written (data is on the LUN), extends size to
 * new_size if larger, and stamps mtime/ctime. */
int meta_commit_write(struct volume *v, struct minode *m, uint64_t lblk, uint64_t len,
		      uint64_t new_size);
/* 0, or -EROFS when no file data may be written now: the engine found
 * corruption under errors=remount-ro (docs/hostile-input.md). Every write,
 * an overwrite of written blocks too, asks first. */
int meta_write_check(struct volume *v);
/* Records mtime/ctime of an overwrite (kept in memory until the next sync). */
void meta_touch_write(struct volume *v, struct minode *m);
int meta_fallocate(struct volume *v, struct minode *m, int mode, uint64_t off, uint64_t len);
/* SEEK_DATA / SEEK_HOLE. */
int meta_seek(struct volume *v, struct minode *m, uint64_t off, int whence, uint64_t *out);

#endif
