/* Internal to the journal module: the block cache shared by the io_manager
 * (iomgr.c) and the transaction layer (txn.c). */
#ifndef CSVFS_JOURNAL_JINTERNAL_H
#define CSVFS_JOURNAL_JINTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include "journal/journal.h"
#include "journal/jbd2.h"

#define UNIT 4096u
#define MAX_RUN_UNITS 64u

struct cache_entry {
	uint64_t unit;
	struct cache_entry *hash_next;
	struct cache_entry *lru_prev, *lru_next;
	struct cache_entry *dirty_prev, *dirty_next; /* on the dirty list when dirty */
	int dirty;
	unsigned pinned;               /* in-flight transactions holding it: not evictable */
	int forget_on_unpin;           /* forgotten while pinned: invisible, removed on unpin */
	unsigned char *data;           /* UNIT bytes, UNIT-aligned */
};

struct journal {
	int fd;
	int read_only;
	int is_blockdev;
	char *lun_path;
	char channel_name[64];
	journal_log_fn log;
	void *log_arg;
	struct lun lun;                /* fd and lun_path for lun_pread / lun_pwrite */

	pthread_mutex_t lock;
	struct cache_entry **buckets;
	size_t nbuckets, nentries, capacity;
	struct cache_entry lru;        /* sentinel: lru.lru_next is most recent */
	struct cache_entry dirty;      /* sentinel of the dirty list */
	size_t ndirty;
	unsigned char *bounce;         /* MAX_RUN_UNITS * UNIT, aligned */
	struct journal_stats stats;

	/* Transaction layer (txn.c); attached == 0 means plain write-back. */
	int attached;
	struct jbd2_format fmt;
	struct journal_log_extent *log_map;
	size_t log_map_len;
	unsigned char *jsb_raw;        /* journal superblock block, UNIT-aligned */
	struct jbd2_superblock jsb;    /* as last written: a commit rewrites it unread */
	unsigned char *log_stage;      /* LOG_STAGE_UNITS * UNIT, aligned: log blocks gathered */
	uint32_t next_sequence;
	size_t commit_threshold;       /* dirty blocks that ask for a commit */
	void (*commit_hint)(void *arg);
	void *commit_hint_arg;
	/* Commits finish in the order they were prepared (ids 1, 2, ...):
	 * durable once the commit block is, finished once home too. */
	uint64_t last_prepared, last_durable, last_finished;
	pthread_cond_t finished_cond;  /* with lock */
	/* The home writer (txn.c): writes a durable transaction's blocks home
	 * after its caller was answered. One at a time: the next commit waits
	 * for it (its first flush makes those home writes durable). */
	pthread_t home_thread;
	int home_running, home_stop;
	struct journal_txn *home_txn;  /* handed over, not yet taken */
	pthread_cond_t home_cond;      /* with lock */
};

/* A prepared transaction: a copy of the blocks it commits, sorted. */
struct journal_txn {
	uint64_t id;
	size_t n;
	struct jbd2_txn_block *blocks;
	struct cache_entry **entries;  /* pinned, unpinned when home */
	unsigned char *data;           /* n * UNIT, aligned */
};

/* ---- iomgr.c: the cache and the LUN (through lunio.c) ---- */
void jlog(struct journal *j, int level, const char *fmt, ...);
errcode_t lun_read_units(struct journal *j, uint64_t unit, unsigned n, void *buf);
errcode_t lun_write_units(struct journal *j, uint64_t unit, unsigned n, const void *buf);
int write_back_locked(struct journal *j);
void mark_clean(struct journal *j, struct cache_entry *e);
void mark_dirty(struct journal *j, struct cache_entry *e);
struct cache_entry *cache_find(struct journal *j, uint64_t unit);
void cache_drop_all(struct journal *j);
void cache_remove_entry(struct journal *j, struct cache_entry *e);

/* ---- txn.c: transactions ---- */
/* Under j->lock: takes the dirty blocks as the next transaction. */
int txn_prepare_locked(struct journal *j, struct journal_txn **out);
/* Without j->lock: makes it durable; its home writes follow, on the home
 * writer thread when it runs (else before this returns). */
int txn_finish(struct journal *j, struct journal_txn *txn);
/* Waits for the home writer's last transaction and ends the thread. */
void txn_stop_home_writer(struct journal *j);
void txn_free(struct journal *j);

#endif
