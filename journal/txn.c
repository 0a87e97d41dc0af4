/* The transaction layer: the dirty metadata blocks of the cache become one
 * JBD2 transaction at each commit (sync, fsync, the periodic flusher, or when
 * enough is dirty). Protocol of a commit (design.md §3):
 *
 *   1. flush the LUN: file data written before the commit (whose unwritten ->
 *      written conversion this transaction may hold) and the previous
 *      transaction's home writes become durable (skipped when no LUN write
 *      came since the flush the home writer makes after its home writes);
 *   2. journal superblock -> (s_start = first, s_sequence = this id); the
 *      transaction's revoke/descriptor/data blocks; flush; commit block; flush
 *      — now the transaction is durable and the caller may be acknowledged.
 *      The superblock and the blocks after it are adjacent in the log and go
 *      as one write (log blocks are gathered until a flush or a gap), and the
 *      superblock is not read back first: a participant's create waits for
 *      this, and each LUN write costs about as much as a flush;
 *   3. write the blocks home, on the home writer thread once the caller has
 *      its answer, then flush (step 1 of the next commit, done early).
 *
 * The log holds one transaction at a time, so replay after a crash rewrites
 * blocks that are either already home or about to be: it is idempotent and
 * never resurrects an older version of a block, which is why no revoke
 * records are needed (a block freed and reused as file data is dropped from
 * the cache by journal_forget before its data is written).
 */
#include "journal/jinternal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void start_home_writer(struct journal *j);

static int map_log_block(const struct journal_log_extent *m, size_t n, uint32_t lb, uint64_t *lun)
{
	for (size_t i = 0; i < n; i++) {
		if (lb >= m[i].log_block && lb - m[i].log_block < m[i].count) {
			*lun = m[i].lun_block + (lb - m[i].log_block);
			return 0;
		}
	}
	return -EUCLEAN;
}

struct log_io {
	struct journal *j;
	const struct journal_log_extent *map;
	size_t map_len;
	unsigned char *buf;            /* one aligned block */
	/* Gathering (a commit's log writes only; NULL: each block at once):
	 * stage_n blocks that go to the LUN at stage_lun in one write. */
	unsigned char *stage;          /* LOG_STAGE_UNITS blocks, aligned */
	uint64_t stage_lun;
	unsigned stage_n;
};

/* A commit's log writes gathered: 64 blocks (256 KiB) at most per write. */
#define LOG_STAGE_UNITS 64

static int log_read(void *ctx, uint32_t jb, void *out)
{
	struct log_io *io = ctx;
	uint64_t lun;
	if (map_log_block(io->map, io->map_len, jb, &lun))
		return -EUCLEAN;
	if (lun_read_units(io->j, lun, 1, io->buf))
		return -EIO;
	memcpy(out, io->buf, UNIT);
	return 0;
}

/* Writes the gathered log blocks, if any. */
static int stage_write(struct log_io *io)
{
	if (io->stage_n == 0)
		return 0;
	unsigned n = io->stage_n;
	io->stage_n = 0;
	return lun_write_units(io->j, io->stage_lun, n, io->stage) ? -EIO : 0;
}

static int log_write(void *ctx, uint32_t jb, const void *data)
{
	struct log_io *io = ctx;
	uint64_t lun;
	if (map_log_block(io->map, io->map_len, jb, &lun))
		return -EUCLEAN;
	if (!io->stage) {
		memcpy(io->buf, data, UNIT);
		return lun_write_units(io->j, lun, 1, io->buf) ? -EIO : 0;
	}
	/* Not adjacent on the LUN (the log wrapped, or a new extent of it) or
	 * no room: what is gathered goes first. */
	if (io->stage_n && (lun != io->stage_lun + io->stage_n || io->stage_n == LOG_STAGE_UNITS)) {
		int rc = stage_write(io);
		if (rc)
			return rc;
	}
	if (io->stage_n == 0)
		io->stage_lun = lun;
	memcpy(io->stage + (size_t)io->stage_n++ * UNIT, data, UNIT);
	return 0;
}

static int fs_write(void *ctx, uint64_t blk, const void *data)
{
	struct log_io *io = ctx;
	memcpy(io->buf, data, UNIT);
	return lun_write_units(io->j, blk, 1, io->buf) ? -EIO : 0;
}

static int lun_flush(void *ctx)
{
	struct log_io *io = ctx;
	int rc = stage_write(io);   /* a flush orders what was written before it */
	if (rc)
		return rc;
	uint64_t mark = lun_writes_mark();
	if (lun_fdatasync(&io->j->lun) != 0)
		return -EIO;   /* logged, naming the LUN */
	lun_writes_flushed(mark);
	return 0;
}

static int read_superblock(struct log_io *io, struct jbd2_superblock *sb, char *err, size_t errlen)
{
	struct jbd2_error jerr = { 0 };
	int rc = log_read(io, 0, io->buf);
	if (rc == 0)
		rc = jbd2_superblock_decode(io->buf, JBD2_SUPERBLOCK_SIZE, sb, &jerr);
	if (rc)
		snprintf(err, errlen, "LUN %s: journal superblock unusable: %s", io->j->lun_path,
			 jerr.message[0] ? jerr.message : strerror(-rc));
	return rc;
}

int journal_recover(struct journal *j, const struct journal_log *log,
		    struct journal_recovery *report, char *err, size_t errlen)
{
	memset(report, 0, sizeof(*report));
	if (log->fs_block_size != UNIT) {
		snprintf(err, errlen, "LUN %s: journal recovery needs 4096-byte blocks", j->lun_path);
		return -EINVAL;
	}
	struct log_io io = { j, log->extents, log->count, NULL, NULL, 0, 0 };
	if (posix_memalign((void **)&io.buf, UNIT, UNIT))
		return -ENOMEM;
	struct jbd2_replay_io rio = { &io, log_read, log_write, fs_write, lun_flush };
	struct jbd2_replay_options opt = { .block_size = UNIT, .fs_block_count = log->fs_block_count };
	struct jbd2_replay_report rep;
	struct jbd2_error jerr = { 0 };
	pthread_mutex_lock(&j->lock);
	int rc = j->read_only ? 0 : jbd2_replay(&rio, &opt, &rep, &jerr);
	if (j->read_only) {
		struct jbd2_superblock sb;
		rc = read_superblock(&io, &sb, err, errlen);
		if (rc == 0 && sb.start != 0) {
			snprintf(err, errlen, "LUN %s: the journal needs recovery, which a read-only mount "
				 "cannot do; mount read-write once", j->lun_path);
			rc = -EROFS;
		}
		pthread_mutex_unlock(&j->lock);
		free(io.buf);
		return rc;
	}
	if (rc == 0 && rep.transactions_replayed > 0)
		cache_drop_all(j);
	pthread_mutex_unlock(&j->lock);
	free(io.buf);
	if (rc) {
		snprintf(err, errlen, "LUN %s: journal recovery failed: %s", j->lun_path,
			 jerr.message[0] ? jerr.message : strerror(-rc));
		return rc;
	}
	report->replayed = rep.transactions_replayed > 0;
	report->transactions = rep.transactions_replayed;
	report->blocks = rep.blocks_written;
	if (rep.was_clean)
		snprintf(report->detail, sizeof(report->detail), "journal clean");
	else
		snprintf(report->detail, sizeof(report->detail),
			 "replayed %u transaction(s) from %u, %llu block(s); stopped at transaction %u: %s%s%.160s",
			 rep.transactions_replayed, rep.first_transaction,
			 (unsigned long long)rep.blocks_written, rep.stop_transaction,
			 jbd2_stop_reason_name(rep.stop_reason), rep.stop_detail[0] ? " — " : "",
			 rep.stop_detail);
	return 0;
}

/* The superblock as attach read it, with this start and sequence: only this
 * process writes it while the journal is attached. */
static int write_superblock(struct journal *j, struct log_io *io, uint32_t start, uint32_t seq)
{
	j->jsb.start = start;
	j->jsb.sequence = seq;
	jbd2_superblock_encode(&j->jsb, io->buf);
	return log_write(io, 0, io->buf);
}

/* The features csvfs writes: 64bit tags, revoke, checksums v3 (the kernel and
 * e2fsck replay these). */
static void upgrade_features(struct jbd2_superblock *sb, const uint8_t *fs_uuid)
{
	sb->feature_incompat |= JBD2_FEATURE_INCOMPAT_REVOKE | JBD2_FEATURE_INCOMPAT_64BIT |
				JBD2_FEATURE_INCOMPAT_CSUM_V3;
	sb->feature_incompat &= ~(JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT);
	sb->feature_compat &= ~JBD2_FEATURE_COMPAT_CHECKSUM;
	sb->checksum_type = JBD2_CHECKSUM_TYPE_CRC32C;
	static const uint8_t zero[JBD2_UUID_SIZE];
	if (memcmp(sb->uuid, zero, sizeof(zero)) == 0)
		memcpy(sb->uuid, fs_uuid, JBD2_UUID_SIZE);
}

int journal_attach(struct journal *j, const struct journal_log *log,
		   void (*commit_hint)(void *arg), void *hint_arg, char *err, size_t errlen)
{
	if (log->fs_block_size != UNIT || j->read_only) {
		snprintf(err, errlen, "LUN %s: journaling needs a writable volume with 4096-byte blocks",
			 j->lun_path);
		return -EINVAL;
	}
	struct journal_log_extent *map = malloc(log->count * sizeof(*map));
	unsigned char *buf = NULL, *stage = NULL;
	if (!map || posix_memalign((void **)&buf, UNIT, UNIT) ||
	    posix_memalign((void **)&stage, UNIT, LOG_STAGE_UNITS * UNIT)) {
		free(map);
		free(buf);
		return -ENOMEM;
	}
	memcpy(map, log->extents, log->count * sizeof(*map));
	struct log_io io = { j, map, log->count, buf, NULL, 0, 0 };
	struct jbd2_superblock sb;
	struct jbd2_error jerr = { 0 };
	pthread_mutex_lock(&j->lock);
	int rc = read_superblock(&io, &sb, err, errlen);
	if (rc == 0 && sb.start != 0) {
		snprintf(err, errlen, "LUN %s: the journal still needs recovery", j->lun_path);
		rc = -EUCLEAN;
	}
	if (rc == 0) {
		upgrade_features(&sb, log->fs_uuid);
		rc = jbd2_format_init(&j->fmt, &sb, log->fs_block_count, &jerr);
		if (rc)
			snprintf(err, errlen, "LUN %s: journal: %.200s", j->lun_path, jerr.message);
	}
	if (rc == 0) {
		jbd2_superblock_encode(&sb, buf);
		rc = log_write(&io, 0, buf);
		if (rc == 0)
			rc = lun_flush(&io);
	}
	if (rc == 0) {
		/* attached again after a detach (a snapshot's quiesce): the old map goes */
		free(j->log_map);
		free(j->jsb_raw);
		free(j->log_stage);
		j->log_map = map;
		j->log_map_len = log->count;
		j->jsb_raw = buf;
		j->jsb = sb;
		j->log_stage = stage;
		j->next_sequence = sb.sequence;
		j->commit_threshold = jbd2_log_size(&j->fmt) / 4;
		j->commit_hint = commit_hint;
		j->commit_hint_arg = hint_arg;
		j->attached = 1;
		start_home_writer(j);
	}
	pthread_mutex_unlock(&j->lock);
	if (rc) {
		free(map);
		free(buf);
		free(stage);
	}
	return rc;
}

static int unit_order(const void *a, const void *b)
{
	const struct cache_entry *x = *(struct cache_entry *const *)a, *y = *(struct cache_entry *const *)b;
	return x->unit < y->unit ? -1 : x->unit > y->unit;
}

static void txn_destroy(struct journal_txn *t)
{
	if (!t)
		return;
	free(t->blocks);
	free(t->entries);
	free(t->data);
	free(t);
}

/* Copies the dirty blocks into a new transaction and pins them: they stay in
 * the cache, clean, until their home write, so a read never goes to a home
 * block that is older than what the log holds. */
int txn_prepare_locked(struct journal *j, struct journal_txn **out)
{
	*out = NULL;
	if (j->ndirty == 0)
		return 0;
	struct journal_txn *t = calloc(1, sizeof(*t));
	size_t n = j->ndirty;
	if (!t || !(t->blocks = malloc(n * sizeof(*t->blocks))) ||
	    !(t->entries = malloc(n * sizeof(*t->entries))) ||
	    posix_memalign((void **)&t->data, UNIT, n * UNIT)) {
		txn_destroy(t);
		return -ENOMEM;
	}
	size_t i = 0;
	for (struct cache_entry *e = j->dirty.dirty_next; e != &j->dirty; e = e->dirty_next)
		t->entries[i++] = e;
	qsort(t->entries, n, sizeof(*t->entries), unit_order);
	for (i = 0; i < n; i++) {
		struct cache_entry *e = t->entries[i];
		memcpy(t->data + i * UNIT, e->data, UNIT);
		t->blocks[i] = (struct jbd2_txn_block){ e->unit, t->data + i * UNIT };
		e->pinned++;
	}
	for (i = 0; i < n; i++)
		mark_clean(j, t->entries[i]);
	t->n = n;
	t->id = ++j->last_prepared;
	*out = t;
	return 0;
}

static int write_log(struct journal *j, struct log_io *io, const struct journal_txn *t, uint32_t seq)
{
	uint32_t next_head;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct jbd2_txn txn = { .sequence = seq, .blocks = t->blocks, .block_count = t->n,
				.commit_sec = (uint64_t)now.tv_sec, .commit_nsec = (uint32_t)now.tv_nsec };
	struct jbd2_journal_writer w = { io, log_write, lun_flush };
	struct jbd2_error jerr = { 0 };
	if (jbd2_txn_journal_blocks(&j->fmt, t->n, 0) >= jbd2_log_size(&j->fmt)) {
		jlog(j, 3, "journal: transaction %u of %zu blocks does not fit the journal of %s", seq,
		     t->n, j->lun_path);
		return -ENOSPC;
	}
	io->stage = j->log_stage;
	io->stage_n = 0;
	int rc = write_superblock(j, io, j->fmt.first, seq);
	if (rc == 0)
		rc = jbd2_write_transaction(&j->fmt, &txn, j->fmt.first, &w, &next_head, &jerr);
	if (rc == 0)
		rc = stage_write(io);   /* nothing left after the last flush, unless no flush came */
	io->stage = NULL;
	io->stage_n = 0;
	if (rc)
		jlog(j, 3, "journal: committing transaction %u to %s failed: %s", seq, j->lun_path,
		     jerr.message[0] ? jerr.message : strerror(-rc));
	return rc;
}

/* Home writes straight from the transaction's sorted copy, one pwrite per run
 * of adjacent blocks. Not flushed: the next commit's first flush does that. */
static int write_home(struct journal *j, const struct journal_txn *t)
{
	for (size_t i = 0; i < t->n;) {
		size_t run = 1;
		while (i + run < t->n && t->blocks[i + run].fs_block == t->blocks[i].fs_block + run)
			run++;
		if (lun_write_units(j, t->blocks[i].fs_block, (unsigned)run, t->data + i * UNIT))
			return -EIO;
		i += run;
	}
	return 0;
}

/* A transaction's end: its blocks unpinned (put back to dirty when it did
 * not reach the log), and the next transaction may start. */
static void txn_done(struct journal *j, struct journal_txn *t, int logged, int rc)
{
	pthread_mutex_lock(&j->lock);
	if (logged) {
		j->next_sequence++;
		if (j->last_durable < t->id)
			j->last_durable = t->id;
	}
	for (size_t i = 0; i < t->n; i++) {
		struct cache_entry *e = t->entries[i];
		if (rc && !e->dirty && !e->forget_on_unpin)
			mark_dirty(j, e);   /* not committed, or not home: it belongs to the next try */
		if (--e->pinned == 0 && e->forget_on_unpin)
			cache_remove_entry(j, e);
	}
	j->last_finished = t->id;
	pthread_cond_broadcast(&j->finished_cond);
	pthread_mutex_unlock(&j->lock);
	txn_destroy(t);
}

static void *home_writer_main(void *arg)
{
	struct journal *j = arg;
	pthread_mutex_lock(&j->lock);
	for (;;) {
		while (!j->home_txn && !j->home_stop)
			pthread_cond_wait(&j->home_cond, &j->lock);
		struct journal_txn *t = j->home_txn;
		if (!t)
			break;
		j->home_txn = NULL;   /* before txn_done lets the next one hand over */
		pthread_mutex_unlock(&j->lock);
		int rc = write_home(j, t);
		if (rc)
			jlog(j, 3, "journal: writing transaction %llu home to %s failed: its blocks go "
			     "into the next transaction", (unsigned long long)t->id, j->lun_path);
		/* The next commit's first flush, done here off its path (a
		 * failure is logged; that commit then flushes itself). */
		struct log_io io = { j, NULL, 0, NULL, NULL, 0, 0 };
		if (rc == 0)
			lun_flush(&io);
		txn_done(j, t, 1, rc);
		pthread_mutex_lock(&j->lock);
	}
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

/* Under j->lock. No thread: home writes stay on the committing caller. */
static void start_home_writer(struct journal *j)
{
	if (j->home_running)
		return;
	j->home_stop = 0;
	if (pthread_create(&j->home_thread, NULL, home_writer_main, j) == 0)
		j->home_running = 1;
	else
		jlog(j, 4, "journal: no home writer thread for %s: commits write home themselves",
		     j->lun_path);
}

void txn_stop_home_writer(struct journal *j)
{
	pthread_mutex_lock(&j->lock);
	int running = j->home_running;
	j->home_stop = 1;
	pthread_cond_broadcast(&j->home_cond);
	pthread_mutex_unlock(&j->lock);
	if (running)
		pthread_join(j->home_thread, NULL);   /* it takes a handed-over one first */
	j->home_running = 0;
}

/* A durable transaction's home writes to the home writer: 1 if handed over. */
static int hand_home(struct journal *j, struct journal_txn *t)
{
	pthread_mutex_lock(&j->lock);
	int ok = j->home_running && !j->home_stop && !j->home_txn;
	if (ok) {
		j->last_durable = t->id;
		j->home_txn = t;
		pthread_cond_signal(&j->home_cond);
		pthread_cond_broadcast(&j->finished_cond);   /* waiters for durability */
	}
	pthread_mutex_unlock(&j->lock);
	return ok;
}

/* Transactions finish one at a time in the order they were prepared: a block
 * in two transactions must reach home in its newer version, and the previous
 * one's home writes must be durable (this one's first flush) before this one
 * overwrites its log. The caller is answered once the commit block is
 * durable; the home writes (one LUN write per run of adjacent blocks, about
 * as many as the log write and two flushes together) follow on the home
 * writer, off the reply's path. */
int txn_finish(struct journal *j, struct journal_txn *t)
{
	pthread_mutex_lock(&j->lock);
	while (j->last_finished + 1 != t->id)
		pthread_cond_wait(&j->finished_cond, &j->lock);
	uint32_t seq = j->next_sequence;
	struct log_io io = { j, j->log_map, j->log_map_len, j->jsb_raw, NULL, 0, 0 };
	pthread_mutex_unlock(&j->lock);

	/* j->jsb_raw is used only by the one finishing transaction. The first
	 * flush (file data before a commit that may convert it, the previous
	 * transaction's home writes before its log is overwritten) is skipped
	 * when no LUN write came since the home writer's flush. */
	int rc = lun_writes_flushed_all() ? 0 : lun_flush(&io);
	if (rc == 0)
		rc = write_log(j, &io, t, seq);
	int logged = rc == 0;
	if (logged && hand_home(j, t))
		return 0;
	if (logged)
		rc = write_home(j, t);
	txn_done(j, t, logged, rc);
	return rc;
}

int journal_detach(struct journal *j)
{
	pthread_mutex_lock(&j->lock);
	int rc = 0;
	if (j->attached) {
		struct log_io io = { j, j->log_map, j->log_map_len, j->jsb_raw, NULL, 0, 0 };
		struct journal_txn *t = NULL;
		rc = txn_prepare_locked(j, &t);
		if (rc == 0 && t) {
			pthread_mutex_unlock(&j->lock);
			rc = txn_finish(j, t);
			pthread_mutex_lock(&j->lock);
		}
		while (j->last_finished < j->last_prepared)
			pthread_cond_wait(&j->finished_cond, &j->lock);
		if (rc == 0)
			rc = lun_flush(&io);
		if (rc == 0)
			rc = write_superblock(j, &io, 0, j->next_sequence);
		if (rc == 0)
			rc = lun_flush(&io);
		if (rc == 0)
			j->attached = 0;
	}
	pthread_mutex_unlock(&j->lock);
	return rc;
}

void txn_free(struct journal *j)
{
	free(j->log_map);
	free(j->jsb_raw);
	free(j->log_stage);
	j->log_map = NULL;
	j->jsb_raw = NULL;
	j->log_stage = NULL;
}
