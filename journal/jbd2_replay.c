/*
 * journal/jbd2_replay.c — journal recovery in three passes, as the kernel does.
 *
 *   SCAN    walk the log from s_start/s_sequence and find how many complete
 *           transactions follow: every descriptor, revoke and commit checksum
 *           and every data checksum must hold and every block number must be
 *           inside the filesystem. The first transaction that fails ends the
 *           log; it and everything after it are ignored.
 *   REVOKE  build the revoke table (block -> newest revoking transaction)
 *           from the complete transactions only.
 *   REPLAY  write every logged block of the complete transactions to its
 *           home, unless a transaction at or after it revoked the block.
 *
 * SCAN verifies everything before anything is written, so a torn transaction
 * never writes half of itself. REVOKE and REPLAY re-read the log; if it no
 * longer matches what SCAN saw the replay fails rather than guess.
 */
#include "journal/jbd2.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum pass { PASS_SCAN, PASS_REVOKE, PASS_REPLAY };

/* Outcome of walking one transaction (errors are negative errno). */
enum walk { WALK_CONTINUE = 0, WALK_STOP = 1, WALK_COMMITTED = 2 };

static const char *pass_name(enum pass pass)
{
	switch (pass) {
	case PASS_SCAN: return "scan";
	case PASS_REVOKE: return "revoke";
	case PASS_REPLAY: return "replay";
	}
	return "?";
}

const char *jbd2_stop_reason_name(enum jbd2_stop_reason reason)
{
	switch (reason) {
	case JBD2_STOP_CLEAN: return "clean";
	case JBD2_STOP_END_OF_LOG: return "end-of-log";
	case JBD2_STOP_NO_COMMIT: return "no-commit";
	case JBD2_STOP_BAD_DESCRIPTOR: return "bad-descriptor";
	case JBD2_STOP_BAD_REVOKE: return "bad-revoke";
	case JBD2_STOP_BAD_DATA: return "bad-data-checksum";
	case JBD2_STOP_BAD_COMMIT: return "bad-commit";
	case JBD2_STOP_BAD_BLOCK_NUMBER: return "bad-block-number";
	case JBD2_STOP_BAD_BLOCK_TYPE: return "bad-block-type";
	case JBD2_STOP_LOG_OVERRUN: return "log-overrun";
	}
	return "unknown";
}

/* ------------------------------------------------------------------------ */
/* Revoke table: block -> newest transaction that revoked it                 */
/* ------------------------------------------------------------------------ */

struct revoke_entry {
	uint64_t block;
	uint32_t sequence;
	bool     used;
};

struct revoke_table {
	struct revoke_entry *slots;  /* open addressing, capacity a power of two */
	size_t capacity;
	size_t count;
};

static struct revoke_entry *revoke_slot(const struct revoke_table *t, uint64_t block)
{
	uint64_t h = block * 0x9E3779B97F4A7C15ull;
	size_t mask = t->capacity - 1;
	size_t i = (size_t)(h ^ (h >> 31)) & mask;

	while (t->slots[i].used && t->slots[i].block != block)
		i = (i + 1) & mask;
	return &t->slots[i];
}

static int revoke_grow(struct revoke_table *t)
{
	size_t capacity = t->capacity ? t->capacity * 2 : 1024;
	if (capacity > SIZE_MAX / sizeof(struct revoke_entry))
		return -ENOMEM;
	struct revoke_entry *old = t->slots;
	size_t old_capacity = t->capacity;
	struct revoke_entry *slots = calloc(capacity, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	t->slots = slots;
	t->capacity = capacity;
	for (size_t i = 0; i < old_capacity; i++)
		if (old[i].used)
			*revoke_slot(t, old[i].block) = old[i];
	free(old);
	return 0;
}

static int revoke_record(struct revoke_table *t, uint64_t block, uint32_t sequence)
{
	if ((t->count + 1) * 2 > t->capacity) {
		int rc = revoke_grow(t);
		if (rc)
			return rc;
	}
	struct revoke_entry *e = revoke_slot(t, block);
	if (!e->used) {
		*e = (struct revoke_entry){ .block = block, .sequence = sequence, .used = true };
		t->count++;
	} else if (jbd2_tid_gt(sequence, e->sequence)) {
		e->sequence = sequence;
	}
	return 0;
}

/* A copy logged in transaction `sequence` is dead if a revoke at or after it exists. */
static bool revoke_covers(const struct revoke_table *t, uint64_t block, uint32_t sequence)
{
	if (t->count == 0)
		return false;
	const struct revoke_entry *e = revoke_slot(t, block);
	return e->used && jbd2_tid_geq(e->sequence, sequence);
}

/* ------------------------------------------------------------------------ */
/* Replay state                                                              */
/* ------------------------------------------------------------------------ */

struct replay {
	const struct jbd2_replay_io *io;
	const struct jbd2_replay_options *options;
	struct jbd2_replay_report *report;
	struct jbd2_error *err;
	struct jbd2_superblock sb;
	struct jbd2_format fmt;
	enum pass pass;
	uint32_t committed;      /* complete transactions found by SCAN */
	uint32_t pos;            /* next log block to read */
	uint32_t consumed;       /* log blocks walked in this pass */
	uint8_t *sb_block;       /* journal block 0, rewritten when we finish */
	uint8_t *block;          /* current descriptor / revoke / commit block */
	uint8_t *data;           /* current data block */
	struct jbd2_tag *tags;
	size_t tag_capacity;
	uint64_t *records;
	size_t record_capacity;
	struct revoke_table revokes;
};

/*
 * Ends the scan at transaction `sequence` (SCAN), or fails the replay when a
 * later pass meets something SCAN did not (the log changed under us).
 */
__attribute__((format(printf, 5, 6)))
static int stop(struct replay *r, enum jbd2_stop_reason reason, uint32_t sequence,
		uint32_t block, const char *fmt, ...)
{
	char detail[sizeof(r->report->stop_detail)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	if (r->pass != PASS_SCAN)
		return jbd2_error_set(r->err, -EIO, "journal changed between passes (%s pass): %s",
				      pass_name(r->pass), detail);
	r->report->stop_reason = reason;
	r->report->stop_transaction = sequence;
	r->report->stop_block = block;
	memcpy(r->report->stop_detail, detail, sizeof(detail));
	return WALK_STOP;
}

static int read_log_block(struct replay *r, uint32_t at, void *buf)
{
	int rc = r->io->read_journal(r->io->ctx, at, buf);
	if (rc)
		return jbd2_error_set(r->err, rc < 0 ? rc : -EIO,
				      "journal block %u: read failed (%d) in %s pass",
				      at, rc, pass_name(r->pass));
	return 0;
}

/* Claims the next log block for transaction `sequence`. */
static int next_log_block(struct replay *r, uint32_t sequence, uint32_t *at)
{
	if (r->consumed >= jbd2_log_size(&r->fmt))
		return stop(r, JBD2_STOP_LOG_OVERRUN, sequence, r->pos,
			    "transaction %u: runs past the whole log (%u blocks from block %u)",
			    sequence, jbd2_log_size(&r->fmt), r->sb.start);
	*at = r->pos;
	r->pos = jbd2_log_advance(&r->fmt, r->pos, 1);
	r->consumed++;
	return WALK_CONTINUE;
}

/* ------------------------------------------------------------------------ */
/* Block handlers                                                            */
/* ------------------------------------------------------------------------ */

static bool pass_reads_data(const struct replay *r)
{
	if (r->pass == PASS_REPLAY)
		return true;
	return r->pass == PASS_SCAN && r->fmt.csum != JBD2_CSUM_NONE;
}

static int replay_block(struct replay *r, uint32_t sequence, const struct jbd2_tag *tag,
			uint32_t at)
{
	if (revoke_covers(&r->revokes, tag->fs_block, sequence)) {
		r->report->blocks_revoked++;
		return 0;
	}
	if (tag->flags & JBD2_FLAG_ESCAPE)
		jbd2_unescape_block(r->data);
	if (!r->options->dry_run) {
		int rc = r->io->write_fs(r->io->ctx, tag->fs_block, r->data);
		if (rc)
			return jbd2_error_set(r->err, rc < 0 ? rc : -EIO,
					      "filesystem block %llu (transaction %u, journal block %u): write failed (%d)",
					      (unsigned long long)tag->fs_block, sequence, at, rc);
	}
	r->report->blocks_written++;
	return 0;
}

static int walk_data_block(struct replay *r, uint32_t sequence, const struct jbd2_tag *tag,
			   uint32_t descriptor_at, uint32_t *v1_crc)
{
	uint32_t at;

	if (tag->fs_block >= r->fmt.fs_block_count)
		return stop(r, JBD2_STOP_BAD_BLOCK_NUMBER, sequence, descriptor_at,
			    "transaction %u: descriptor at journal block %u names block %llu beyond the filesystem (%llu blocks)",
			    sequence, descriptor_at, (unsigned long long)tag->fs_block,
			    (unsigned long long)r->fmt.fs_block_count);
	int rc = next_log_block(r, sequence, &at);
	if (rc || !pass_reads_data(r))
		return rc;
	rc = read_log_block(r, at, r->data);
	if (rc)
		return rc;
	if (!jbd2_data_checksum_verify(&r->fmt, tag, sequence, r->data))
		return stop(r, JBD2_STOP_BAD_DATA, sequence, at,
			    "transaction %u: copy of block %llu at journal block %u: checksum 0x%08x in tag, computed 0x%08x",
			    sequence, (unsigned long long)tag->fs_block, at, tag->checksum,
			    jbd2_data_checksum(&r->fmt, sequence, r->data));
	if (r->fmt.csum == JBD2_CSUM_V1 && r->pass == PASS_SCAN)
		*v1_crc = jbd2_crc32_be(*v1_crc, r->data, r->fmt.block_size);
	if (r->pass == PASS_REPLAY)
		return replay_block(r, sequence, tag, at);
	return 0;
}

static int walk_descriptor(struct replay *r, uint32_t sequence, uint32_t at, uint32_t *v1_crc)
{
	struct jbd2_error why;
	size_t count;

	if (!jbd2_block_tail_verify(&r->fmt, r->block))
		return stop(r, JBD2_STOP_BAD_DESCRIPTOR, sequence, at,
			    "transaction %u: descriptor at journal block %u: checksum 0x%08x, computed 0x%08x",
			    sequence, at,
			    jbd2_get_be32(r->block + r->fmt.block_size - jbd2_tail_size(&r->fmt)),
			    jbd2_block_tail_checksum(&r->fmt, r->block));
	if (jbd2_descriptor_decode(&r->fmt, r->block, r->tags, r->tag_capacity, &count, &why))
		return stop(r, JBD2_STOP_BAD_DESCRIPTOR, sequence, at,
			    "transaction %u: descriptor at journal block %u: %s",
			    sequence, at, why.message);
	if (r->fmt.csum == JBD2_CSUM_V1 && r->pass == PASS_SCAN)
		*v1_crc = jbd2_crc32_be(*v1_crc, r->block, r->fmt.block_size);
	for (size_t i = 0; i < count; i++) {
		int rc = walk_data_block(r, sequence, &r->tags[i], at, v1_crc);
		if (rc)
			return rc;
	}
	return WALK_CONTINUE;
}

static int record_revokes(struct replay *r, uint32_t sequence, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		if (revoke_record(&r->revokes, r->records[i], sequence))
			return jbd2_error_set(r->err, -ENOMEM,
					      "transaction %u: no memory for the revoke table (%zu entries)",
					      sequence, r->revokes.count);
		r->report->revoke_records++;
	}
	return 0;
}

static int walk_revoke(struct replay *r, uint32_t sequence, uint32_t at)
{
	struct jbd2_error why;
	size_t count;

	if (!jbd2_block_tail_verify(&r->fmt, r->block))
		return stop(r, JBD2_STOP_BAD_REVOKE, sequence, at,
			    "transaction %u: revoke block at journal block %u: checksum mismatch",
			    sequence, at);
	if (jbd2_revoke_decode(&r->fmt, r->block, r->records, r->record_capacity, &count, &why))
		return stop(r, JBD2_STOP_BAD_REVOKE, sequence, at,
			    "transaction %u: revoke block at journal block %u: %s",
			    sequence, at, why.message);
	for (size_t i = 0; i < count; i++) {
		if (r->records[i] >= r->fmt.fs_block_count)
			return stop(r, JBD2_STOP_BAD_REVOKE, sequence, at,
				    "transaction %u: revoke block at journal block %u: record %zu names block %llu beyond the filesystem",
				    sequence, at, i, (unsigned long long)r->records[i]);
	}
	if (r->pass == PASS_REVOKE)
		return record_revokes(r, sequence, count);
	return WALK_CONTINUE;
}

static int check_commit(struct replay *r, uint32_t sequence, uint32_t at, uint32_t v1_crc)
{
	struct jbd2_commit commit;

	/* Later passes do not recompute the v1 crc; SCAN already checked it. */
	if (r->pass != PASS_SCAN || jbd2_commit_verify(&r->fmt, r->block, v1_crc))
		return WALK_COMMITTED;
	jbd2_commit_decode(r->block, &commit);
	uint32_t computed = r->fmt.csum == JBD2_CSUM_V1 ? v1_crc :
			    jbd2_commit_checksum(&r->fmt, r->block);
	return stop(r, JBD2_STOP_BAD_COMMIT, sequence, at,
		    "transaction %u: commit block at journal block %u: checksum 0x%08x, computed 0x%08x",
		    sequence, at, commit.checksum, computed);
}

/* The block at `at` does not belong to transaction `sequence`. */
static int end_of_transaction(struct replay *r, uint32_t sequence, uint32_t at,
			      const struct jbd2_header *h, unsigned blocks_seen)
{
	char found[64];

	if (h->magic != JBD2_MAGIC)
		snprintf(found, sizeof(found), "no journal magic");
	else
		snprintf(found, sizeof(found), "a block of transaction %u", h->sequence);
	if (blocks_seen == 0)
		return stop(r, JBD2_STOP_END_OF_LOG, sequence, at,
			    "log ends before transaction %u: journal block %u holds %s",
			    sequence, at, found);
	return stop(r, JBD2_STOP_NO_COMMIT, sequence, at,
		    "transaction %u: torn, no commit block (journal block %u holds %s)",
		    sequence, at, found);
}

static int walk_transaction(struct replay *r, uint32_t sequence)
{
	uint32_t v1_crc = JBD2_V1_CRC_INIT;
	unsigned blocks_seen = 0;

	if (r->consumed >= jbd2_log_size(&r->fmt))
		return stop(r, JBD2_STOP_END_OF_LOG, sequence, r->pos,
			    "log ends before transaction %u: the whole log is committed transactions",
			    sequence);
	for (;;) {
		struct jbd2_header h;
		uint32_t at;
		int rc = next_log_block(r, sequence, &at);
		if (rc == 0)
			rc = read_log_block(r, at, r->block);
		if (rc)
			return rc;
		jbd2_header_decode(r->block, &h);
		if (h.magic != JBD2_MAGIC || h.sequence != sequence)
			return end_of_transaction(r, sequence, at, &h, blocks_seen);
		blocks_seen++;
		switch (h.blocktype) {
		case JBD2_BLOCKTYPE_DESCRIPTOR:
			rc = walk_descriptor(r, sequence, at, &v1_crc);
			break;
		case JBD2_BLOCKTYPE_REVOKE:
			rc = walk_revoke(r, sequence, at);
			break;
		case JBD2_BLOCKTYPE_COMMIT:
			return check_commit(r, sequence, at, v1_crc);
		default:
			return stop(r, JBD2_STOP_BAD_BLOCK_TYPE, sequence, at,
				    "transaction %u: journal block %u has unknown block type %u",
				    sequence, at, h.blocktype);
		}
		if (rc)
			return rc;
	}
}

static int walk_log(struct replay *r, enum pass pass)
{
	uint32_t sequence = r->sb.sequence;

	r->pass = pass;
	r->pos = r->sb.start;
	r->consumed = 0;
	for (uint32_t done = 0; pass == PASS_SCAN || done < r->committed; done++, sequence++) {
		int rc = walk_transaction(r, sequence);
		if (rc < 0)
			return rc;
		if (rc == WALK_STOP)
			return 0;
		if (pass == PASS_SCAN)
			r->committed++;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Superblock and setup                                                      */
/* ------------------------------------------------------------------------ */

static int check_arguments(const struct jbd2_replay_io *io, const struct jbd2_replay_options *o,
			   struct jbd2_replay_report *report, struct jbd2_error *err)
{
	if (!io || !o || !report || !io->read_journal)
		return jbd2_error_set(err, -EINVAL, "journal replay: missing argument");
	if (!o->dry_run && (!io->write_journal || !io->write_fs || !io->flush))
		return jbd2_error_set(err, -EINVAL, "journal replay: write callbacks missing");
	if (o->block_size < JBD2_SUPERBLOCK_SIZE || o->block_size > JBD2_MAX_BLOCK_SIZE)
		return jbd2_error_set(err, -EINVAL, "journal replay: block size %u out of range",
				      o->block_size);
	return 0;
}

static int load_superblock(struct replay *r)
{
	r->sb_block = malloc(r->options->block_size);
	if (!r->sb_block)
		return jbd2_error_set(r->err, -ENOMEM, "journal superblock: no memory");
	int rc = read_log_block(r, 0, r->sb_block);
	if (rc == 0)
		rc = jbd2_superblock_decode(r->sb_block, r->options->block_size, &r->sb, r->err);
	if (rc)
		return rc;
	if (r->sb.block_size != r->options->block_size)
		return jbd2_error_set(r->err, -EUCLEAN,
				      "journal superblock: block size %u differs from the filesystem's %u",
				      r->sb.block_size, r->options->block_size);
	return jbd2_format_init(&r->fmt, &r->sb, r->options->fs_block_count, r->err);
}

static int allocate_buffers(struct replay *r)
{
	r->block = malloc(r->fmt.block_size);
	r->data = malloc(r->fmt.block_size);
	r->tag_capacity = jbd2_descriptor_max_tags(&r->fmt);
	r->tags = calloc(r->tag_capacity, sizeof(*r->tags));
	r->record_capacity = jbd2_revoke_capacity(&r->fmt);
	r->records = calloc(r->record_capacity, sizeof(*r->records));
	if (!r->block || !r->data || !r->tags || !r->records)
		return jbd2_error_set(r->err, -ENOMEM, "journal replay: no memory for buffers");
	return 0;
}

static void free_replay(struct replay *r)
{
	free(r->sb_block);
	free(r->block);
	free(r->data);
	free(r->tags);
	free(r->records);
	free(r->revokes.slots);
}

static int flush_all(struct replay *r, const char *when)
{
	int rc = r->io->flush(r->io->ctx);
	if (rc)
		return jbd2_error_set(r->err, rc < 0 ? rc : -EIO, "journal replay: flush %s failed (%d)",
				      when, rc);
	return 0;
}

/* Replayed blocks must be durable before the journal stops protecting them. */
static int mark_journal_clean(struct replay *r)
{
	int rc = flush_all(r, "of replayed blocks");
	if (rc)
		return rc;
	rc = jbd2_superblock_set_tail(r->sb_block, r->fmt.block_size, 0,
				      r->report->next_sequence, r->err);
	if (rc)
		return rc;
	rc = r->io->write_journal(r->io->ctx, 0, r->sb_block);
	if (rc)
		return jbd2_error_set(r->err, rc < 0 ? rc : -EIO,
				      "journal superblock: write failed (%d)", rc);
	return flush_all(r, "of the journal superblock");
}

static void report_clean(struct replay *r)
{
	struct jbd2_replay_report *rep = r->report;

	rep->was_clean = true;
	rep->stop_reason = JBD2_STOP_CLEAN;
	rep->stop_transaction = r->sb.sequence;
	rep->next_sequence = r->sb.sequence;
	snprintf(rep->stop_detail, sizeof(rep->stop_detail),
		 "journal is clean (s_start 0); next transaction %u", r->sb.sequence);
}

static int recover(struct replay *r)
{
	int rc = allocate_buffers(r);
	if (rc == 0)
		rc = walk_log(r, PASS_SCAN);
	if (rc == 0)
		rc = walk_log(r, PASS_REVOKE);
	if (rc == 0)
		rc = walk_log(r, PASS_REPLAY);
	if (rc)
		return rc;
	r->report->transactions_replayed = r->committed;
	/* Skip one id so stale blocks of the torn transaction can never match. */
	r->report->next_sequence = r->sb.sequence + r->committed + 1;
	if (r->options->dry_run)
		return 0;
	return mark_journal_clean(r);
}

int jbd2_replay(const struct jbd2_replay_io *io, const struct jbd2_replay_options *options,
		struct jbd2_replay_report *report, struct jbd2_error *err)
{
	int rc = check_arguments(io, options, report, err);
	if (rc)
		return rc;
	memset(report, 0, sizeof(*report));
	struct replay r = { .io = io, .options = options, .report = report, .err = err };
	rc = load_superblock(&r);
	if (rc == 0) {
		report->log_start = r.sb.start;
		report->first_transaction = r.sb.sequence;
		report->journal_errno = r.sb.error_number;
		if (r.sb.start == 0)
			report_clean(&r);
		else
			rc = recover(&r);
	}
	free_replay(&r);
	return rc;
}
