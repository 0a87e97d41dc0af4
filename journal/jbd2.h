/*
 * journal/jbd2.h — JBD2 on-disk codec, transaction writer and replayer.
 *
 * INTERNAL to the journal module (the public interface is journal/journal.h).
 * Format reference: the kernel's Documentation/filesystems/ext4/journal.rst,
 * include/linux/jbd2.h and fs/jbd2/recovery.c; docs/journal-format.md says
 * which subset csvfs writes and the replay rules it follows.
 *
 * Nothing here knows about ext4: the journal is addressed by journal-relative
 * block numbers (0 = journal superblock, [first, last) = the circular log) and
 * the filesystem by its block numbers; the caller maps both through callbacks.
 *
 * Conventions: functions that can fail return 0 or a negative errno and, when
 * `err` is not NULL, fill it with a message naming the object and the cause.
 *   -EINVAL      bad argument from the caller
 *   -EUCLEAN     on-disk structure is corrupt (bad magic, field out of range)
 *   -EBADMSG     checksum mismatch
 *   -EOPNOTSUPP  journal uses a feature we do not implement (e.g. fast commit)
 *   -ENOSPC      transaction does not fit in the log
 *   -ENOMEM, or whatever a callback returned (normally -EIO)
 */
#ifndef CSVFS_JOURNAL_JBD2_H
#define CSVFS_JOURNAL_JBD2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* On-disk constants                                                         */
/* ------------------------------------------------------------------------ */

#define JBD2_MAGIC 0xC03B3998u

#define JBD2_BLOCKTYPE_DESCRIPTOR   1u
#define JBD2_BLOCKTYPE_COMMIT       2u
#define JBD2_BLOCKTYPE_SUPERBLOCK_V1 3u
#define JBD2_BLOCKTYPE_SUPERBLOCK_V2 4u
#define JBD2_BLOCKTYPE_REVOKE       5u

#define JBD2_FEATURE_COMPAT_CHECKSUM       0x00000001u /* csum v1 */
#define JBD2_FEATURE_INCOMPAT_REVOKE       0x00000001u
#define JBD2_FEATURE_INCOMPAT_64BIT        0x00000002u
#define JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT 0x00000004u
#define JBD2_FEATURE_INCOMPAT_CSUM_V2      0x00000008u
#define JBD2_FEATURE_INCOMPAT_CSUM_V3      0x00000010u
#define JBD2_FEATURE_INCOMPAT_FAST_COMMIT  0x00000020u
/* Fast commit is deliberately absent: its blocks need ext4 knowledge to replay. */
#define JBD2_SUPPORTED_INCOMPAT                                             \
	(JBD2_FEATURE_INCOMPAT_REVOKE | JBD2_FEATURE_INCOMPAT_64BIT |          \
	 JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT | JBD2_FEATURE_INCOMPAT_CSUM_V2 |  \
	 JBD2_FEATURE_INCOMPAT_CSUM_V3)

/* s_checksum_type and commit h_chksum_type */
#define JBD2_CHECKSUM_TYPE_CRC32  1u
#define JBD2_CHECKSUM_TYPE_CRC32C 4u
#define JBD2_CRC32_CHECKSUM_SIZE  4u

/* Descriptor tag flags */
#define JBD2_FLAG_ESCAPE    0x1u /* data block began with JBD2_MAGIC; zeroed in the log */
#define JBD2_FLAG_SAME_UUID 0x2u /* no 16-byte UUID follows this tag */
#define JBD2_FLAG_DELETED   0x4u /* historic, ignored on replay */
#define JBD2_FLAG_LAST_TAG  0x8u
#define JBD2_KNOWN_TAG_FLAGS 0xFu

#define JBD2_SUPERBLOCK_SIZE 1024u
#define JBD2_UUID_SIZE       16u
#define JBD2_MIN_BLOCK_SIZE  1024u
#define JBD2_MAX_BLOCK_SIZE  65536u

/* ------------------------------------------------------------------------ */
/* On-disk layouts (big-endian). The codec never casts a buffer to these     */
/* (alignment, aliasing); it reads and writes bytes at offsetof() them.      */
/* ------------------------------------------------------------------------ */

typedef uint16_t jbd2_be16;
typedef uint32_t jbd2_be32;
typedef uint64_t jbd2_be64;

struct jbd2_disk_header {
	jbd2_be32 h_magic;
	jbd2_be32 h_blocktype;
	jbd2_be32 h_sequence;
};

struct jbd2_disk_superblock {
	struct jbd2_disk_header s_header;
	jbd2_be32 s_blocksize;
	jbd2_be32 s_maxlen;      /* blocks in the journal, superblock included */
	jbd2_be32 s_first;       /* first block of the log */
	jbd2_be32 s_sequence;    /* first transaction expected at s_start */
	jbd2_be32 s_start;       /* log tail; 0 = journal is clean */
	jbd2_be32 s_errno;
	jbd2_be32 s_feature_compat;
	jbd2_be32 s_feature_incompat;
	jbd2_be32 s_feature_ro_compat;
	uint8_t   s_uuid[16];
	jbd2_be32 s_nr_users;
	jbd2_be32 s_dynsuper;
	jbd2_be32 s_max_transaction;
	jbd2_be32 s_max_trans_data;
	uint8_t   s_checksum_type;
	uint8_t   s_padding2[3];
	jbd2_be32 s_num_fc_blks;
	jbd2_be32 s_head;        /* log head, only meaningful while clean */
	jbd2_be32 s_padding[40];
	jbd2_be32 s_checksum;    /* crc32c(~0, superblock with s_checksum = 0) */
	uint8_t   s_users[16 * 48];
};

/* Tag when CSUM_V3 is set: always 16 bytes, even without 64BIT. */
struct jbd2_disk_tag3 {
	jbd2_be32 t_blocknr;
	jbd2_be32 t_flags;
	jbd2_be32 t_blocknr_high;
	jbd2_be32 t_checksum;
};

/* Tag otherwise: 12 bytes with 64BIT, 8 without; CSUM_V2 adds 2 (sic, kernel). */
struct jbd2_disk_tag {
	jbd2_be32 t_blocknr;
	jbd2_be16 t_checksum;    /* low 16 bits of the v2 data checksum */
	jbd2_be16 t_flags;
	jbd2_be32 t_blocknr_high;
};

/* Last 4 bytes of descriptor and revoke blocks under CSUM_V2/V3. */
struct jbd2_disk_block_tail {
	jbd2_be32 t_checksum;
};

struct jbd2_disk_revoke_header {
	struct jbd2_disk_header r_header;
	jbd2_be32 r_count;       /* bytes used in the block, header included */
};

struct jbd2_disk_commit {
	struct jbd2_disk_header h_header;
	uint8_t   h_chksum_type;
	uint8_t   h_chksum_size;
	uint8_t   h_padding[2];
	jbd2_be32 h_chksum[8];
	jbd2_be64 h_commit_sec;
	jbd2_be32 h_commit_nsec;
};

/* ------------------------------------------------------------------------ */
/* Big-endian field access                                                   */
/* ------------------------------------------------------------------------ */

static inline uint16_t jbd2_get_be16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)((b[0] << 8) | b[1]);
}

static inline uint32_t jbd2_get_be32(const void *p)
{
	const uint8_t *b = p;
	return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) |
	       ((uint32_t)b[2] << 8) | b[3];
}

static inline uint64_t jbd2_get_be64(const void *p)
{
	const uint8_t *b = p;
	return ((uint64_t)jbd2_get_be32(b) << 32) | jbd2_get_be32(b + 4);
}

static inline void jbd2_put_be16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 8);
	b[1] = (uint8_t)v;
}

static inline void jbd2_put_be32(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 24);
	b[1] = (uint8_t)(v >> 16);
	b[2] = (uint8_t)(v >> 8);
	b[3] = (uint8_t)v;
}

static inline void jbd2_put_be64(void *p, uint64_t v)
{
	uint8_t *b = p;
	jbd2_put_be32(b, (uint32_t)(v >> 32));
	jbd2_put_be32(b + 4, (uint32_t)v);
}

/* Transaction ids wrap at 2^32; compare them the way the kernel does. */
static inline bool jbd2_tid_gt(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}

static inline bool jbd2_tid_geq(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) >= 0;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

struct jbd2_error {
	int  code;               /* negative errno, 0 when no error */
	char message[256];
};

/* Records code and message (printf-style) in err (may be NULL); returns code. */
int jbd2_error_set(struct jbd2_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ------------------------------------------------------------------------ */
/* Superblock and format                                                     */
/* ------------------------------------------------------------------------ */

/* The journal superblock in host order. */
struct jbd2_superblock {
	uint32_t blocktype;      /* JBD2_BLOCKTYPE_SUPERBLOCK_V1 or _V2 */
	uint32_t block_size;
	uint32_t max_len;
	uint32_t first;
	uint32_t sequence;
	uint32_t start;
	int32_t  error_number;
	uint32_t feature_compat;
	uint32_t feature_incompat;
	uint32_t feature_ro_compat;
	uint8_t  uuid[JBD2_UUID_SIZE];
	uint32_t nr_users;
	uint32_t max_transaction;
	uint32_t max_trans_data;
	uint8_t  checksum_type;
	uint32_t num_fc_blocks;
	uint32_t head;
	uint32_t checksum;       /* as stored */
};

enum jbd2_csum_version {
	JBD2_CSUM_NONE,
	JBD2_CSUM_V1,            /* crc32_be of the transaction in the commit block */
	JBD2_CSUM_V2,            /* crc32c per block, 16-bit tag checksums */
	JBD2_CSUM_V3,            /* crc32c per block, 32-bit tag checksums */
};

/* Everything the codec needs, derived once from a superblock (jbd2_format_init). */
struct jbd2_format {
	uint32_t block_size;
	uint32_t first;          /* first log block (s_first) */
	uint32_t last;           /* one past the last log block (s_maxlen) */
	bool     has_64bit;
	enum jbd2_csum_version csum;
	uint32_t csum_seed;      /* crc32c(~0, uuid), v2/v3 only */
	uint8_t  uuid[JBD2_UUID_SIZE];
	uint64_t fs_block_count; /* every logged or revoked block must be below this */
};

uint32_t jbd2_crc32c(uint32_t crc, const void *buf, size_t len);
uint32_t jbd2_crc32_be(uint32_t crc, const void *buf, size_t len);
uint32_t jbd2_csum_seed(const uint8_t uuid[JBD2_UUID_SIZE]);

/*
 * Decodes and validates the first JBD2_SUPERBLOCK_SIZE bytes of journal
 * block 0: magic, type, geometry (block size, first, maxlen, start) and, under
 * csum v2/v3, the checksum type and the checksum itself. A v1 superblock
 * decodes with all feature words zero.
 */
int jbd2_superblock_decode(const void *raw, size_t len, struct jbd2_superblock *sb,
			   struct jbd2_error *err);

/*
 * Writes every field of sb into raw (JBD2_SUPERBLOCK_SIZE bytes), leaving the
 * bytes we do not model (s_users, padding, s_dynsuper) as they were, and sets
 * s_checksum when csum v2/v3 is on. To make a fresh superblock, zero raw first.
 */
void jbd2_superblock_encode(const struct jbd2_superblock *sb, void *raw);

/*
 * Records the log tail in a raw superblock and refreshes its checksum:
 * start = first block of the oldest transaction not yet checkpointed and
 * sequence = its id, or start = 0 and sequence = the next id when every
 * transaction is checkpointed (the journal is clean).
 */
int jbd2_superblock_set_tail(void *raw, size_t len, uint32_t start, uint32_t sequence,
			     struct jbd2_error *err);

/* crc32c(~0) over the 1024-byte superblock with s_checksum taken as zero. */
uint32_t jbd2_superblock_checksum(const void *raw);

/*
 * Checks that the features are ones we implement and builds the format.
 * fs_block_count bounds every block number the log may name.
 */
int jbd2_format_init(struct jbd2_format *fmt, const struct jbd2_superblock *sb,
		     uint64_t fs_block_count, struct jbd2_error *err);

size_t jbd2_tag_size(const struct jbd2_format *fmt);
size_t jbd2_tail_size(const struct jbd2_format *fmt);        /* 4 under v2/v3 */
size_t jbd2_descriptor_capacity(const struct jbd2_format *fmt); /* tags we put in a block */
size_t jbd2_descriptor_max_tags(const struct jbd2_format *fmt); /* tags a block can hold */
size_t jbd2_revoke_capacity(const struct jbd2_format *fmt);     /* records per block */

/* Circular log arithmetic over [first, last). */
uint32_t jbd2_log_size(const struct jbd2_format *fmt);
uint32_t jbd2_log_advance(const struct jbd2_format *fmt, uint32_t pos, uint32_t n);
uint32_t jbd2_log_distance(const struct jbd2_format *fmt, uint32_t from, uint32_t to);
bool     jbd2_log_contains(const struct jbd2_format *fmt, uint32_t pos);
/* Blocks a transaction written at head may use when the oldest live one
 * starts at tail (0: log empty). One block is always kept free so that
 * head == tail never means a full log. */
uint32_t jbd2_log_free(const struct jbd2_format *fmt, uint32_t tail, uint32_t head);

/* ------------------------------------------------------------------------ */
/* Log blocks                                                                */
/* ------------------------------------------------------------------------ */

struct jbd2_header {
	uint32_t magic;
	uint32_t blocktype;
	uint32_t sequence;
};

void jbd2_header_decode(const void *block, struct jbd2_header *h);
void jbd2_header_encode(void *block, uint32_t blocktype, uint32_t sequence);

struct jbd2_tag {
	uint64_t fs_block;
	uint32_t flags;          /* JBD2_FLAG_* */
	uint32_t checksum;       /* v3: 32 bits; v2: low 16 bits; else 0 */
};

/*
 * Reads the tags of a descriptor block (header not checked here; tail checksum
 * not checked here). Stops at LAST_TAG or when the next tag would not fit,
 * as the kernel does. Fails on unknown flags or block numbers that do not fit
 * the format (high bits without 64BIT).
 */
int jbd2_descriptor_decode(const struct jbd2_format *fmt, const void *block,
			   struct jbd2_tag *tags, size_t capacity, size_t *count,
			   struct jbd2_error *err);

/*
 * Builds a whole descriptor block: header, tags (the encoder sets SAME_UUID
 * and LAST_TAG; the caller gives ESCAPE and the data checksum), the journal
 * UUID after the first tag, and the tail checksum. 1 <= count <= capacity.
 */
int jbd2_descriptor_encode(const struct jbd2_format *fmt, uint32_t sequence,
			   const struct jbd2_tag *tags, size_t count, void *block,
			   struct jbd2_error *err);

/* Tail checksum of descriptor and revoke blocks (v2/v3; true when no csum). */
uint32_t jbd2_block_tail_checksum(const struct jbd2_format *fmt, const void *block);
void     jbd2_block_tail_set(const struct jbd2_format *fmt, void *block);
bool     jbd2_block_tail_verify(const struct jbd2_format *fmt, const void *block);

/*
 * Checksum of a logged data block as stored in its tag: crc32c(seed, be32
 * sequence) continued over the block as it sits in the journal (escaped).
 * Truncated to 16 bits under v2; 0 without v2/v3.
 */
uint32_t jbd2_data_checksum(const struct jbd2_format *fmt, uint32_t sequence,
			    const void *journal_block);
bool     jbd2_data_checksum_verify(const struct jbd2_format *fmt, const struct jbd2_tag *tag,
				   uint32_t sequence, const void *journal_block);

/* Escaping: a logged block must not start with JBD2_MAGIC or replay would
 * mistake it for a log block. */
bool jbd2_block_needs_escape(const void *data);
void jbd2_escape_block(void *journal_copy);
void jbd2_unescape_block(void *block);

/* Revoke block: header, r_count, then be32 or be64 (64BIT) block numbers. */
int jbd2_revoke_decode(const struct jbd2_format *fmt, const void *block,
		       uint64_t *records, size_t capacity, size_t *count,
		       struct jbd2_error *err);
int jbd2_revoke_encode(const struct jbd2_format *fmt, uint32_t sequence,
		       const uint64_t *records, size_t count, void *block,
		       struct jbd2_error *err);

struct jbd2_commit {
	uint32_t sequence;
	uint8_t  checksum_type;
	uint8_t  checksum_size;
	uint32_t checksum;       /* h_chksum[0] */
	uint64_t commit_sec;
	uint32_t commit_nsec;
};

/* v1_crc: under csum v1, crc32_be (from ~0) over the transaction's descriptor
 * and data blocks in log order; ignored otherwise. */
void jbd2_commit_encode(const struct jbd2_format *fmt, uint32_t sequence, uint64_t commit_sec,
			uint32_t commit_nsec, uint32_t v1_crc, void *block);
void jbd2_commit_decode(const void *block, struct jbd2_commit *commit);
uint32_t jbd2_commit_checksum(const struct jbd2_format *fmt, const void *block);
bool jbd2_commit_verify(const struct jbd2_format *fmt, const void *block, uint32_t v1_crc);

#define JBD2_V1_CRC_INIT 0xFFFFFFFFu

/* ------------------------------------------------------------------------ */
/* Transaction writer (jbd2_writer.c)                                        */
/* ------------------------------------------------------------------------ */

struct jbd2_txn_block {
	uint64_t    fs_block;
	const void *data;        /* fmt->block_size bytes, written as is (escaped in the log) */
};

struct jbd2_txn {
	uint32_t sequence;                    /* transaction id */
	const struct jbd2_txn_block *blocks;  /* later entries win if a block repeats */
	size_t   block_count;
	const uint64_t *revoked;              /* freed metadata blocks */
	size_t   revoked_count;
	uint64_t commit_sec;                  /* commit time, stored in the commit block */
	uint32_t commit_nsec;
};

struct jbd2_journal_writer {
	void *ctx;
	/* Write one block at a journal-relative block number. */
	int (*write_block)(void *ctx, uint32_t journal_block, const void *buf);
	/* Optional. Called once after every block but the commit block is written
	 * (a barrier: the commit must not become durable before them) and once
	 * after the commit block (the transaction is then durable). */
	int (*flush)(void *ctx);
};

struct jbd2_txn_layout {
	uint32_t revoke_blocks;
	uint32_t descriptor_blocks;
	uint32_t data_blocks;
	uint32_t total;          /* + 1 commit block */
};

/* How a transaction of this size is laid out; -ENOSPC if it exceeds the log. */
int jbd2_txn_layout(const struct jbd2_format *fmt, size_t block_count, size_t revoked_count,
		    struct jbd2_txn_layout *layout, struct jbd2_error *err);

/* Journal blocks a transaction needs (may exceed the log: check with jbd2_log_size). */
uint64_t jbd2_txn_journal_blocks(const struct jbd2_format *fmt, size_t block_count,
				 size_t revoked_count);

/*
 * Encodes txn into the log starting at `head` (in [first, last)), wrapping at
 * the end of the log: revoke block(s), then per descriptor its data blocks,
 * then the commit block. On success *next_head is the block after the commit.
 * The caller guarantees the space from head on is free (checkpointed).
 * A block may not be both logged and revoked in one transaction.
 */
int jbd2_write_transaction(const struct jbd2_format *fmt, const struct jbd2_txn *txn,
			   uint32_t head, const struct jbd2_journal_writer *writer,
			   uint32_t *next_head, struct jbd2_error *err);

/* ------------------------------------------------------------------------ */
/* Replayer (jbd2_replay.c)                                                  */
/* ------------------------------------------------------------------------ */

struct jbd2_replay_io {
	void *ctx;
	/* Read journal-relative block into buf (block_size bytes). */
	int (*read_journal)(void *ctx, uint32_t journal_block, void *buf);
	/* Write journal-relative block; only block 0 (the superblock) is written. */
	int (*write_journal)(void *ctx, uint32_t journal_block, const void *buf);
	/* Write a filesystem block (always < fs_block_count). */
	int (*write_fs)(void *ctx, uint64_t fs_block, const void *buf);
	/* Make every write so far durable. */
	int (*flush)(void *ctx);
};

struct jbd2_replay_options {
	uint32_t block_size;     /* filesystem block size; the journal's must match */
	uint64_t fs_block_count;
	bool     dry_run;        /* scan and count only: no write at all */
};

enum jbd2_stop_reason {
	JBD2_STOP_CLEAN,            /* s_start == 0: nothing to replay */
	JBD2_STOP_END_OF_LOG,       /* next block is not part of the expected transaction */
	JBD2_STOP_NO_COMMIT,        /* torn: transaction began but has no commit block */
	JBD2_STOP_BAD_DESCRIPTOR,   /* descriptor checksum or contents */
	JBD2_STOP_BAD_REVOKE,       /* revoke block checksum or contents */
	JBD2_STOP_BAD_DATA,         /* data block checksum in its tag */
	JBD2_STOP_BAD_COMMIT,       /* commit block checksum */
	JBD2_STOP_BAD_BLOCK_NUMBER, /* a tag names a block outside the filesystem */
	JBD2_STOP_BAD_BLOCK_TYPE,   /* unknown block type with our magic and sequence */
	JBD2_STOP_LOG_OVERRUN,      /* transaction runs past the whole log */
};

const char *jbd2_stop_reason_name(enum jbd2_stop_reason reason);

struct jbd2_replay_report {
	bool     was_clean;              /* journal needed no recovery */
	uint32_t log_start;              /* s_start found */
	uint32_t first_transaction;      /* s_sequence found */
	uint32_t transactions_replayed;  /* complete transactions [first, first + n) */
	uint64_t blocks_written;         /* filesystem block writes (would-be, in dry run) */
	uint64_t blocks_revoked;         /* logged blocks skipped because of a revoke */
	uint64_t revoke_records;         /* revoke records read in replayed transactions */
	enum jbd2_stop_reason stop_reason;
	uint32_t stop_transaction;       /* id of the first transaction not replayed */
	uint32_t stop_block;             /* journal block where the scan stopped */
	uint32_t next_sequence;          /* s_sequence now in the superblock */
	int32_t  journal_errno;          /* s_errno: nonzero if the journal was aborted */
	char     stop_detail[256];       /* names the transaction and the cause */
};

/*
 * Recovers the journal: reads the superblock (journal block 0), SCANs for
 * the complete, checksum-valid transactions from s_start/s_sequence, builds
 * the revoke table from them, REPLAYs their unrevoked blocks to the
 * filesystem, flushes, then marks the journal clean (s_start = 0,
 * s_sequence = first unreplayed id + 1) and flushes again.
 *
 * Stopping at a torn or invalid transaction is a normal outcome (return 0,
 * see report->stop_reason); an error return means nothing reliable happened
 * (bad superblock, unsupported feature, I/O error) and the superblock is left
 * dirty so a later recovery starts over.
 */
int jbd2_replay(const struct jbd2_replay_io *io, const struct jbd2_replay_options *options,
		struct jbd2_replay_report *report, struct jbd2_error *err);

#endif /* CSVFS_JOURNAL_JBD2_H */
