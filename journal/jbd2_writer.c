/*
 * journal/jbd2_writer.c — encodes one transaction into the circular log.
 *
 * Layout (same order as the kernel's commit): revoke blocks, then for each
 * group of up to jbd2_descriptor_capacity() blocks a descriptor followed by
 * the group's data blocks, then the commit block. Pure: everything comes from
 * the arguments, every write goes through the caller's callback.
 */
#include "journal/jbd2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint64_t div_round_up(uint64_t n, uint64_t d)
{
	return (n + d - 1) / d;
}

uint64_t jbd2_txn_journal_blocks(const struct jbd2_format *fmt, size_t block_count,
				 size_t revoked_count)
{
	uint64_t revoke_blocks = div_round_up(revoked_count, jbd2_revoke_capacity(fmt));
	uint64_t descriptors = div_round_up(block_count, jbd2_descriptor_capacity(fmt));
	return revoke_blocks + descriptors + block_count + 1;
}

int jbd2_txn_layout(const struct jbd2_format *fmt, size_t block_count, size_t revoked_count,
		    struct jbd2_txn_layout *layout, struct jbd2_error *err)
{
	uint64_t total = jbd2_txn_journal_blocks(fmt, block_count, revoked_count);

	if (total > jbd2_log_size(fmt))
		return jbd2_error_set(err, -ENOSPC,
				      "transaction of %zu blocks and %zu revokes needs %llu journal blocks, the log has %u",
				      block_count, revoked_count, (unsigned long long)total,
				      jbd2_log_size(fmt));
	layout->revoke_blocks = (uint32_t)div_round_up(revoked_count, jbd2_revoke_capacity(fmt));
	layout->descriptor_blocks =
		(uint32_t)div_round_up(block_count, jbd2_descriptor_capacity(fmt));
	layout->data_blocks = (uint32_t)block_count;
	layout->total = (uint32_t)total;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Validation                                                                */
/* ------------------------------------------------------------------------ */

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* A revoke in transaction T also cancels T's own copy on replay, so a block
 * logged and revoked in the same transaction would silently not be replayed. */
static int check_logged_not_revoked(const struct jbd2_txn *txn, struct jbd2_error *err)
{
	if (txn->revoked_count == 0 || txn->block_count == 0)
		return 0;
	uint64_t *sorted = malloc(txn->revoked_count * sizeof(*sorted));
	if (!sorted)
		return jbd2_error_set(err, -ENOMEM, "transaction %u: no memory for revoke list",
				      txn->sequence);
	memcpy(sorted, txn->revoked, txn->revoked_count * sizeof(*sorted));
	qsort(sorted, txn->revoked_count, sizeof(*sorted), compare_u64);
	int rc = 0;
	for (size_t i = 0; i < txn->block_count && rc == 0; i++) {
		if (bsearch(&txn->blocks[i].fs_block, sorted, txn->revoked_count,
			    sizeof(*sorted), compare_u64))
			rc = jbd2_error_set(err, -EINVAL,
					    "transaction %u: block %llu is both logged and revoked",
					    txn->sequence,
					    (unsigned long long)txn->blocks[i].fs_block);
	}
	free(sorted);
	return rc;
}

static int check_block_numbers(const struct jbd2_format *fmt, const struct jbd2_txn *txn,
			       struct jbd2_error *err)
{
	for (size_t i = 0; i < txn->block_count; i++) {
		const struct jbd2_txn_block *b = &txn->blocks[i];
		if (!b->data)
			return jbd2_error_set(err, -EINVAL, "transaction %u: block %zu has no data",
					      txn->sequence, i);
		if (b->fs_block >= fmt->fs_block_count)
			return jbd2_error_set(err, -EINVAL,
					      "transaction %u: logged block %llu beyond filesystem (%llu blocks)",
					      txn->sequence, (unsigned long long)b->fs_block,
					      (unsigned long long)fmt->fs_block_count);
	}
	for (size_t i = 0; i < txn->revoked_count; i++) {
		if (txn->revoked[i] >= fmt->fs_block_count)
			return jbd2_error_set(err, -EINVAL,
					      "transaction %u: revoked block %llu beyond filesystem (%llu blocks)",
					      txn->sequence, (unsigned long long)txn->revoked[i],
					      (unsigned long long)fmt->fs_block_count);
	}
	return 0;
}

static int check_request(const struct jbd2_format *fmt, const struct jbd2_txn *txn,
			 uint32_t head, const struct jbd2_journal_writer *writer,
			 struct jbd2_error *err)
{
	if (!fmt || !txn || !writer || !writer->write_block)
		return jbd2_error_set(err, -EINVAL, "transaction writer: missing argument");
	if ((txn->block_count && !txn->blocks) || (txn->revoked_count && !txn->revoked))
		return jbd2_error_set(err, -EINVAL, "transaction %u: missing block or revoke list",
				      txn->sequence);
	if (!jbd2_log_contains(fmt, head))
		return jbd2_error_set(err, -EINVAL,
				      "transaction %u: head %u outside the log [%u, %u)",
				      txn->sequence, head, fmt->first, fmt->last);
	int rc = check_block_numbers(fmt, txn, err);
	if (rc)
		return rc;
	return check_logged_not_revoked(txn, err);
}

/* ------------------------------------------------------------------------ */
/* Emitting blocks                                                           */
/* ------------------------------------------------------------------------ */

struct log_writer {
	const struct jbd2_format *fmt;
	const struct jbd2_journal_writer *io;
	uint32_t sequence;
	uint32_t pos;            /* next journal block to write */
	uint32_t v1_crc;         /* running csum v1 over descriptors and data */
	uint8_t *block;          /* descriptor / revoke / commit being built */
	uint8_t *data;           /* escaped copy of a data block */
	struct jbd2_tag *tags;
	struct jbd2_error *err;
};

static int emit(struct log_writer *lw, const void *block, const char *what, bool in_v1_crc)
{
	int rc = lw->io->write_block(lw->io->ctx, lw->pos, block);
	if (rc)
		return jbd2_error_set(lw->err, rc < 0 ? rc : -EIO,
				      "transaction %u: writing %s at journal block %u failed (%d)",
				      lw->sequence, what, lw->pos, rc);
	if (lw->fmt->csum == JBD2_CSUM_V1 && in_v1_crc)
		lw->v1_crc = jbd2_crc32_be(lw->v1_crc, block, lw->fmt->block_size);
	lw->pos = jbd2_log_advance(lw->fmt, lw->pos, 1);
	return 0;
}

static int flush(struct log_writer *lw, const char *when)
{
	if (!lw->io->flush)
		return 0;
	int rc = lw->io->flush(lw->io->ctx);
	if (rc)
		return jbd2_error_set(lw->err, rc < 0 ? rc : -EIO,
				      "transaction %u: flush %s failed (%d)", lw->sequence, when, rc);
	return 0;
}

static int write_revokes(struct log_writer *lw, const struct jbd2_txn *txn)
{
	size_t per_block = jbd2_revoke_capacity(lw->fmt);

	for (size_t done = 0; done < txn->revoked_count; done += per_block) {
		size_t n = txn->revoked_count - done;
		if (n > per_block)
			n = per_block;
		int rc = jbd2_revoke_encode(lw->fmt, txn->sequence, txn->revoked + done, n,
					    lw->block, lw->err);
		if (rc == 0)
			rc = emit(lw, lw->block, "revoke block", false);
		if (rc)
			return rc;
	}
	return 0;
}

/* The journal copy of a data block: escaped if it starts with the magic. */
static bool journal_copy(struct log_writer *lw, const struct jbd2_txn_block *b)
{
	memcpy(lw->data, b->data, lw->fmt->block_size);
	bool escaped = jbd2_block_needs_escape(lw->data);
	if (escaped)
		jbd2_escape_block(lw->data);
	return escaped;
}

static int write_group(struct log_writer *lw, const struct jbd2_txn_block *group, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		bool escaped = journal_copy(lw, &group[i]);
		lw->tags[i] = (struct jbd2_tag){
			.fs_block = group[i].fs_block,
			.flags = escaped ? JBD2_FLAG_ESCAPE : 0,
			/* The tag checksums the block as logged, i.e. escaped. */
			.checksum = jbd2_data_checksum(lw->fmt, lw->sequence, lw->data),
		};
	}
	int rc = jbd2_descriptor_encode(lw->fmt, lw->sequence, lw->tags, count, lw->block, lw->err);
	if (rc == 0)
		rc = emit(lw, lw->block, "descriptor block", true);
	for (size_t i = 0; i < count && rc == 0; i++) {
		journal_copy(lw, &group[i]);
		rc = emit(lw, lw->data, "data block", true);
	}
	return rc;
}

static int write_data(struct log_writer *lw, const struct jbd2_txn *txn)
{
	size_t per_descriptor = jbd2_descriptor_capacity(lw->fmt);

	for (size_t done = 0; done < txn->block_count; done += per_descriptor) {
		size_t n = txn->block_count - done;
		if (n > per_descriptor)
			n = per_descriptor;
		int rc = write_group(lw, txn->blocks + done, n);
		if (rc)
			return rc;
	}
	return 0;
}

static int write_commit(struct log_writer *lw, const struct jbd2_txn *txn)
{
	int rc = flush(lw, "before the commit block");
	if (rc)
		return rc;
	jbd2_commit_encode(lw->fmt, txn->sequence, txn->commit_sec, txn->commit_nsec,
			   lw->v1_crc, lw->block);
	rc = emit(lw, lw->block, "commit block", false);
	if (rc)
		return rc;
	return flush(lw, "after the commit block");
}

int jbd2_write_transaction(const struct jbd2_format *fmt, const struct jbd2_txn *txn,
			   uint32_t head, const struct jbd2_journal_writer *writer,
			   uint32_t *next_head, struct jbd2_error *err)
{
	struct jbd2_txn_layout layout;
	int rc = check_request(fmt, txn, head, writer, err);
	if (rc == 0)
		rc = jbd2_txn_layout(fmt, txn->block_count, txn->revoked_count, &layout, err);
	if (rc)
		return rc;

	struct log_writer lw = {
		.fmt = fmt, .io = writer, .sequence = txn->sequence, .pos = head,
		.v1_crc = JBD2_V1_CRC_INIT, .err = err,
		.block = malloc(fmt->block_size),
		.data = malloc(fmt->block_size),
		.tags = calloc(jbd2_descriptor_capacity(fmt), sizeof(struct jbd2_tag)),
	};
	if (!lw.block || !lw.data || !lw.tags)
		rc = jbd2_error_set(err, -ENOMEM, "transaction %u: no memory for block buffers",
				    txn->sequence);
	if (rc == 0)
		rc = write_revokes(&lw, txn);
	if (rc == 0)
		rc = write_data(&lw, txn);
	if (rc == 0)
		rc = write_commit(&lw, txn);
	if (rc == 0 && next_head)
		*next_head = lw.pos;
	free(lw.block);
	free(lw.data);
	free(lw.tags);
	return rc;
}
