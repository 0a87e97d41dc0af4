/*
 * journal/jbd2_format.c — JBD2 on-disk encode/decode and checksums.
 *
 * Every decoder validates each field it returns against the block it came
 * from and the format; a corrupt journal yields an error, never a read or a
 * write outside a buffer.
 */
#include "journal/jbd2.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <ext2fs/ext2fs.h>

#define FIELD_OFFSET(type, field) offsetof(struct type, field)
#define SB_OFF(field) FIELD_OFFSET(jbd2_disk_superblock, field)
#define COMMIT_OFF(field) FIELD_OFFSET(jbd2_disk_commit, field)

_Static_assert(sizeof(struct jbd2_disk_header) == 12, "journal header is 12 bytes");
_Static_assert(sizeof(struct jbd2_disk_superblock) == JBD2_SUPERBLOCK_SIZE,
	       "journal superblock is 1024 bytes");
_Static_assert(offsetof(struct jbd2_disk_superblock, s_feature_compat) == 0x24, "sb layout");
_Static_assert(offsetof(struct jbd2_disk_superblock, s_uuid) == 0x30, "sb layout");
_Static_assert(offsetof(struct jbd2_disk_superblock, s_checksum_type) == 0x50, "sb layout");
_Static_assert(offsetof(struct jbd2_disk_superblock, s_num_fc_blks) == 0x54, "sb layout");
_Static_assert(offsetof(struct jbd2_disk_superblock, s_head) == 0x58, "sb layout");
_Static_assert(offsetof(struct jbd2_disk_superblock, s_checksum) == 0xFC, "sb layout");
_Static_assert(offsetof(struct jbd2_disk_superblock, s_users) == 0x100, "sb layout");
_Static_assert(sizeof(struct jbd2_disk_tag3) == 16, "tag3 is 16 bytes");
_Static_assert(sizeof(struct jbd2_disk_tag) == 12, "tag is 12 bytes");
_Static_assert(offsetof(struct jbd2_disk_tag, t_flags) == 6, "tag flags at 6");
_Static_assert(sizeof(struct jbd2_disk_revoke_header) == 16, "revoke header is 16 bytes");
_Static_assert(offsetof(struct jbd2_disk_commit, h_chksum) == 0x10, "commit layout");
_Static_assert(offsetof(struct jbd2_disk_commit, h_commit_sec) == 0x30, "commit layout");
_Static_assert(offsetof(struct jbd2_disk_commit, h_commit_nsec) == 0x38, "commit layout");

#define HEADER_SIZE sizeof(struct jbd2_disk_header)
#define REVOKE_HEADER_SIZE sizeof(struct jbd2_disk_revoke_header)

int jbd2_error_set(struct jbd2_error *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		err->code = code;
		vsnprintf(err->message, sizeof(err->message), fmt, ap);
		va_end(ap);
	}
	return code;
}

/* ------------------------------------------------------------------------ */
/* Checksums                                                                 */
/* ------------------------------------------------------------------------ */

uint32_t jbd2_crc32c(uint32_t crc, const void *buf, size_t len)
{
	return ext2fs_crc32c_le(crc, buf, len);
}

uint32_t jbd2_crc32_be(uint32_t crc, const void *buf, size_t len)
{
	return ext2fs_crc32_be(crc, buf, len);
}

uint32_t jbd2_csum_seed(const uint8_t uuid[JBD2_UUID_SIZE])
{
	return jbd2_crc32c(~0u, uuid, JBD2_UUID_SIZE);
}

/* crc32c(seed) over `len` bytes of block, with the 4 bytes at hole_offset read
 * as zero: the stored checksum must not checksum itself. */
static uint32_t crc32c_with_hole(uint32_t seed, const uint8_t *block, size_t len,
				 size_t hole_offset)
{
	static const uint8_t zero[4];
	uint32_t crc = jbd2_crc32c(seed, block, hole_offset);
	crc = jbd2_crc32c(crc, zero, sizeof(zero));
	return jbd2_crc32c(crc, block + hole_offset + 4, len - hole_offset - 4);
}

/* ------------------------------------------------------------------------ */
/* Superblock                                                                */
/* ------------------------------------------------------------------------ */

static bool is_power_of_two(uint32_t v)
{
	return v && !(v & (v - 1));
}

static bool sb_has_csum_v2or3(uint32_t incompat)
{
	return incompat & (JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3);
}

uint32_t jbd2_superblock_checksum(const void *raw)
{
	return crc32c_with_hole(~0u, raw, JBD2_SUPERBLOCK_SIZE, SB_OFF(s_checksum));
}

static void superblock_read_fields(const uint8_t *b, struct jbd2_superblock *sb)
{
	memset(sb, 0, sizeof(*sb));
	sb->blocktype = jbd2_get_be32(b + SB_OFF(s_header.h_blocktype));
	sb->block_size = jbd2_get_be32(b + SB_OFF(s_blocksize));
	sb->max_len = jbd2_get_be32(b + SB_OFF(s_maxlen));
	sb->first = jbd2_get_be32(b + SB_OFF(s_first));
	sb->sequence = jbd2_get_be32(b + SB_OFF(s_sequence));
	sb->start = jbd2_get_be32(b + SB_OFF(s_start));
	sb->error_number = (int32_t)jbd2_get_be32(b + SB_OFF(s_errno));
	if (sb->blocktype != JBD2_BLOCKTYPE_SUPERBLOCK_V2)
		return; /* v1 ends here: no features, no checksum */
	sb->feature_compat = jbd2_get_be32(b + SB_OFF(s_feature_compat));
	sb->feature_incompat = jbd2_get_be32(b + SB_OFF(s_feature_incompat));
	sb->feature_ro_compat = jbd2_get_be32(b + SB_OFF(s_feature_ro_compat));
	memcpy(sb->uuid, b + SB_OFF(s_uuid), JBD2_UUID_SIZE);
	sb->nr_users = jbd2_get_be32(b + SB_OFF(s_nr_users));
	sb->max_transaction = jbd2_get_be32(b + SB_OFF(s_max_transaction));
	sb->max_trans_data = jbd2_get_be32(b + SB_OFF(s_max_trans_data));
	sb->checksum_type = b[SB_OFF(s_checksum_type)];
	sb->num_fc_blocks = jbd2_get_be32(b + SB_OFF(s_num_fc_blks));
	sb->head = jbd2_get_be32(b + SB_OFF(s_head));
	sb->checksum = jbd2_get_be32(b + SB_OFF(s_checksum));
}

static int superblock_check_geometry(const struct jbd2_superblock *sb, struct jbd2_error *err)
{
	if (!is_power_of_two(sb->block_size) || sb->block_size < JBD2_MIN_BLOCK_SIZE ||
	    sb->block_size > JBD2_MAX_BLOCK_SIZE)
		return jbd2_error_set(err, -EUCLEAN,
				      "journal superblock: block size %u is not a power of two in [%u, %u]",
				      sb->block_size, JBD2_MIN_BLOCK_SIZE, JBD2_MAX_BLOCK_SIZE);
	if (sb->first == 0 || sb->first >= sb->max_len)
		return jbd2_error_set(err, -EUCLEAN,
				      "journal superblock: first log block %u outside [1, maxlen %u)",
				      sb->first, sb->max_len);
	if (sb->start != 0 && (sb->start < sb->first || sb->start >= sb->max_len))
		return jbd2_error_set(err, -EUCLEAN,
				      "journal superblock: log start %u outside [first %u, maxlen %u)",
				      sb->start, sb->first, sb->max_len);
	return 0;
}

static int superblock_check_checksum(const uint8_t *raw, const struct jbd2_superblock *sb,
				     struct jbd2_error *err)
{
	if (!sb_has_csum_v2or3(sb->feature_incompat))
		return 0;
	if (sb->checksum_type != JBD2_CHECKSUM_TYPE_CRC32C)
		return jbd2_error_set(err, -EUCLEAN,
				      "journal superblock: checksum type %u, expected crc32c (%u)",
				      sb->checksum_type, JBD2_CHECKSUM_TYPE_CRC32C);
	uint32_t computed = jbd2_superblock_checksum(raw);
	if (computed != sb->checksum)
		return jbd2_error_set(err, -EBADMSG,
				      "journal superblock: checksum 0x%08x, computed 0x%08x",
				      sb->checksum, computed);
	return 0;
}

int jbd2_superblock_decode(const void *raw, size_t len, struct jbd2_superblock *sb,
			   struct jbd2_error *err)
{
	const uint8_t *b = raw;

	if (!raw || !sb || len < JBD2_SUPERBLOCK_SIZE)
		return jbd2_error_set(err, -EINVAL, "journal superblock: buffer of %zu bytes, need %u",
				      len, JBD2_SUPERBLOCK_SIZE);
	uint32_t magic = jbd2_get_be32(b + SB_OFF(s_header.h_magic));
	if (magic != JBD2_MAGIC)
		return jbd2_error_set(err, -EUCLEAN, "journal superblock: bad magic 0x%08x", magic);
	superblock_read_fields(b, sb);
	if (sb->blocktype != JBD2_BLOCKTYPE_SUPERBLOCK_V1 &&
	    sb->blocktype != JBD2_BLOCKTYPE_SUPERBLOCK_V2)
		return jbd2_error_set(err, -EUCLEAN, "journal superblock: block type %u is not a superblock",
				      sb->blocktype);
	int rc = superblock_check_geometry(sb, err);
	if (rc)
		return rc;
	return superblock_check_checksum(b, sb, err);
}

void jbd2_superblock_encode(const struct jbd2_superblock *sb, void *raw)
{
	uint8_t *b = raw;

	jbd2_header_encode(b, sb->blocktype, 0);
	jbd2_put_be32(b + SB_OFF(s_blocksize), sb->block_size);
	jbd2_put_be32(b + SB_OFF(s_maxlen), sb->max_len);
	jbd2_put_be32(b + SB_OFF(s_first), sb->first);
	jbd2_put_be32(b + SB_OFF(s_sequence), sb->sequence);
	jbd2_put_be32(b + SB_OFF(s_start), sb->start);
	jbd2_put_be32(b + SB_OFF(s_errno), (uint32_t)sb->error_number);
	if (sb->blocktype != JBD2_BLOCKTYPE_SUPERBLOCK_V2)
		return;
	jbd2_put_be32(b + SB_OFF(s_feature_compat), sb->feature_compat);
	jbd2_put_be32(b + SB_OFF(s_feature_incompat), sb->feature_incompat);
	jbd2_put_be32(b + SB_OFF(s_feature_ro_compat), sb->feature_ro_compat);
	memcpy(b + SB_OFF(s_uuid), sb->uuid, JBD2_UUID_SIZE);
	jbd2_put_be32(b + SB_OFF(s_nr_users), sb->nr_users);
	jbd2_put_be32(b + SB_OFF(s_max_transaction), sb->max_transaction);
	jbd2_put_be32(b + SB_OFF(s_max_trans_data), sb->max_trans_data);
	b[SB_OFF(s_checksum_type)] = sb->checksum_type;
	jbd2_put_be32(b + SB_OFF(s_num_fc_blks), sb->num_fc_blocks);
	jbd2_put_be32(b + SB_OFF(s_head), sb->head);
	uint32_t checksum = sb_has_csum_v2or3(sb->feature_incompat) ?
		jbd2_superblock_checksum(b) : sb->checksum;
	jbd2_put_be32(b + SB_OFF(s_checksum), checksum);
}

int jbd2_superblock_set_tail(void *raw, size_t len, uint32_t start, uint32_t sequence,
			     struct jbd2_error *err)
{
	struct jbd2_superblock sb;
	int rc = jbd2_superblock_decode(raw, len, &sb, err);
	if (rc)
		return rc;
	if (start != 0 && (start < sb.first || start >= sb.max_len))
		return jbd2_error_set(err, -EINVAL,
				      "journal superblock: new log start %u outside [first %u, maxlen %u)",
				      start, sb.first, sb.max_len);
	sb.start = start;
	sb.sequence = sequence;
	jbd2_superblock_encode(&sb, raw);
	return 0;
}

static int format_pick_csum(const struct jbd2_superblock *sb, enum jbd2_csum_version *csum,
			    struct jbd2_error *err)
{
	bool v1 = sb->feature_compat & JBD2_FEATURE_COMPAT_CHECKSUM;
	bool v2 = sb->feature_incompat & JBD2_FEATURE_INCOMPAT_CSUM_V2;
	bool v3 = sb->feature_incompat & JBD2_FEATURE_INCOMPAT_CSUM_V3;

	if (v2 && v3)
		return jbd2_error_set(err, -EUCLEAN, "journal superblock: both csum v2 and v3 set");
	if (v1 && (v2 || v3))
		return jbd2_error_set(err, -EUCLEAN,
				      "journal superblock: csum v1 set together with v%d", v3 ? 3 : 2);
	*csum = v3 ? JBD2_CSUM_V3 : v2 ? JBD2_CSUM_V2 : v1 ? JBD2_CSUM_V1 : JBD2_CSUM_NONE;
	return 0;
}

int jbd2_format_init(struct jbd2_format *fmt, const struct jbd2_superblock *sb,
		     uint64_t fs_block_count, struct jbd2_error *err)
{
	if (!fmt || !sb)
		return jbd2_error_set(err, -EINVAL, "journal format: missing argument");
	uint32_t unknown = sb->feature_incompat & ~JBD2_SUPPORTED_INCOMPAT;
	if (unknown)
		return jbd2_error_set(err, -EOPNOTSUPP,
				      "journal superblock: unsupported incompat features 0x%08x%s",
				      unknown,
				      (unknown & JBD2_FEATURE_INCOMPAT_FAST_COMMIT) ? " (fast_commit)" : "");
	if (sb->feature_ro_compat)
		return jbd2_error_set(err, -EOPNOTSUPP,
				      "journal superblock: unsupported ro_compat features 0x%08x",
				      sb->feature_ro_compat);
	memset(fmt, 0, sizeof(*fmt));
	int rc = format_pick_csum(sb, &fmt->csum, err);
	if (rc)
		return rc;
	fmt->block_size = sb->block_size;
	fmt->first = sb->first;
	fmt->last = sb->max_len;
	fmt->has_64bit = sb->feature_incompat & JBD2_FEATURE_INCOMPAT_64BIT;
	memcpy(fmt->uuid, sb->uuid, JBD2_UUID_SIZE);
	if (fmt->csum == JBD2_CSUM_V2 || fmt->csum == JBD2_CSUM_V3)
		fmt->csum_seed = jbd2_csum_seed(sb->uuid);
	if (fs_block_count == 0)
		return jbd2_error_set(err, -EINVAL, "journal format: filesystem has no blocks");
	if (!fmt->has_64bit && fs_block_count > ((uint64_t)1 << 32))
		return jbd2_error_set(err, -EOPNOTSUPP,
				      "journal superblock: no 64bit feature, but the filesystem has %llu blocks",
				      (unsigned long long)fs_block_count);
	fmt->fs_block_count = fs_block_count;
	return 0;
}

static bool has_block_checksums(const struct jbd2_format *fmt)
{
	return fmt->csum == JBD2_CSUM_V2 || fmt->csum == JBD2_CSUM_V3;
}

size_t jbd2_tag_size(const struct jbd2_format *fmt)
{
	if (fmt->csum == JBD2_CSUM_V3)
		return sizeof(struct jbd2_disk_tag3);
	size_t size = sizeof(struct jbd2_disk_tag);
	if (fmt->csum == JBD2_CSUM_V2)
		size += 2; /* the kernel counts the 16-bit checksum twice; so must we */
	return fmt->has_64bit ? size : size - 4;
}

size_t jbd2_tail_size(const struct jbd2_format *fmt)
{
	return has_block_checksums(fmt) ? sizeof(struct jbd2_disk_block_tail) : 0;
}

size_t jbd2_descriptor_capacity(const struct jbd2_format *fmt)
{
	size_t room = fmt->block_size - HEADER_SIZE - jbd2_tail_size(fmt);
	size_t tag = jbd2_tag_size(fmt);
	/* The first tag carries the 16-byte UUID, the others SAME_UUID. */
	return 1 + (room - tag - JBD2_UUID_SIZE) / tag;
}

size_t jbd2_descriptor_max_tags(const struct jbd2_format *fmt)
{
	/* A foreign writer may mark every tag SAME_UUID: no UUID at all. */
	size_t room = fmt->block_size - HEADER_SIZE - jbd2_tail_size(fmt);
	return room / jbd2_tag_size(fmt);
}

static size_t revoke_record_size(const struct jbd2_format *fmt)
{
	return fmt->has_64bit ? 8 : 4;
}

size_t jbd2_revoke_capacity(const struct jbd2_format *fmt)
{
	size_t room = fmt->block_size - REVOKE_HEADER_SIZE - jbd2_tail_size(fmt);
	return room / revoke_record_size(fmt);
}

/* ------------------------------------------------------------------------ */
/* Log position arithmetic                                                   */
/* ------------------------------------------------------------------------ */

uint32_t jbd2_log_size(const struct jbd2_format *fmt)
{
	return fmt->last - fmt->first;
}

bool jbd2_log_contains(const struct jbd2_format *fmt, uint32_t pos)
{
	return pos >= fmt->first && pos < fmt->last;
}

uint32_t jbd2_log_advance(const struct jbd2_format *fmt, uint32_t pos, uint32_t n)
{
	uint32_t size = jbd2_log_size(fmt);
	uint64_t offset = ((uint64_t)(pos - fmt->first) + n) % size;
	return fmt->first + (uint32_t)offset;
}

uint32_t jbd2_log_free(const struct jbd2_format *fmt, uint32_t tail, uint32_t head)
{
	uint32_t used = tail == 0 ? 0 : jbd2_log_distance(fmt, tail, head);
	return jbd2_log_size(fmt) - 1 - used;
}

uint32_t jbd2_log_distance(const struct jbd2_format *fmt, uint32_t from, uint32_t to)
{
	return to >= from ? to - from : jbd2_log_size(fmt) - (from - to);
}

/* ------------------------------------------------------------------------ */
/* Headers, tail checksums, escaping                                         */
/* ------------------------------------------------------------------------ */

void jbd2_header_decode(const void *block, struct jbd2_header *h)
{
	const uint8_t *b = block;
	h->magic = jbd2_get_be32(b);
	h->blocktype = jbd2_get_be32(b + 4);
	h->sequence = jbd2_get_be32(b + 8);
}

void jbd2_header_encode(void *block, uint32_t blocktype, uint32_t sequence)
{
	uint8_t *b = block;
	jbd2_put_be32(b, JBD2_MAGIC);
	jbd2_put_be32(b + 4, blocktype);
	jbd2_put_be32(b + 8, sequence);
}

uint32_t jbd2_block_tail_checksum(const struct jbd2_format *fmt, const void *block)
{
	size_t tail = fmt->block_size - sizeof(struct jbd2_disk_block_tail);
	return crc32c_with_hole(fmt->csum_seed, block, fmt->block_size, tail);
}

void jbd2_block_tail_set(const struct jbd2_format *fmt, void *block)
{
	if (!has_block_checksums(fmt))
		return;
	uint8_t *tail = (uint8_t *)block + fmt->block_size - sizeof(struct jbd2_disk_block_tail);
	jbd2_put_be32(tail, jbd2_block_tail_checksum(fmt, block));
}

bool jbd2_block_tail_verify(const struct jbd2_format *fmt, const void *block)
{
	if (!has_block_checksums(fmt))
		return true;
	const uint8_t *tail = (const uint8_t *)block + fmt->block_size -
			      sizeof(struct jbd2_disk_block_tail);
	return jbd2_get_be32(tail) == jbd2_block_tail_checksum(fmt, block);
}

uint32_t jbd2_data_checksum(const struct jbd2_format *fmt, uint32_t sequence,
			    const void *journal_block)
{
	if (!has_block_checksums(fmt))
		return 0;
	uint8_t seq[4];
	jbd2_put_be32(seq, sequence);
	uint32_t crc = jbd2_crc32c(fmt->csum_seed, seq, sizeof(seq));
	crc = jbd2_crc32c(crc, journal_block, fmt->block_size);
	return fmt->csum == JBD2_CSUM_V2 ? (crc & 0xFFFFu) : crc;
}

bool jbd2_data_checksum_verify(const struct jbd2_format *fmt, const struct jbd2_tag *tag,
			       uint32_t sequence, const void *journal_block)
{
	if (!has_block_checksums(fmt))
		return true;
	return tag->checksum == jbd2_data_checksum(fmt, sequence, journal_block);
}

bool jbd2_block_needs_escape(const void *data)
{
	return jbd2_get_be32(data) == JBD2_MAGIC;
}

void jbd2_escape_block(void *journal_copy)
{
	jbd2_put_be32(journal_copy, 0);
}

void jbd2_unescape_block(void *block)
{
	jbd2_put_be32(block, JBD2_MAGIC);
}

/* ------------------------------------------------------------------------ */
/* Descriptor blocks                                                         */
/* ------------------------------------------------------------------------ */

static void tag_read(const struct jbd2_format *fmt, const uint8_t *p, struct jbd2_tag *tag)
{
	uint64_t high = 0;

	/*
	 * Flags are the 16 bits at offset 6 in every tag format: the kernel and
	 * e2fsck read them so even for tag3 (whose t_flags is 32 bits), and
	 * debugfs 1.47 leaves junk in bytes 4-5 of one tag of a full descriptor.
	 */
	tag->flags = jbd2_get_be16(p + offsetof(struct jbd2_disk_tag, t_flags));
	if (fmt->csum == JBD2_CSUM_V3) {
		high = jbd2_get_be32(p + offsetof(struct jbd2_disk_tag3, t_blocknr_high));
		tag->checksum = jbd2_get_be32(p + offsetof(struct jbd2_disk_tag3, t_checksum));
	} else {
		if (fmt->has_64bit)
			high = jbd2_get_be32(p + offsetof(struct jbd2_disk_tag, t_blocknr_high));
		tag->checksum = fmt->csum == JBD2_CSUM_V2 ?
			jbd2_get_be16(p + offsetof(struct jbd2_disk_tag, t_checksum)) : 0;
	}
	/* Without 64BIT a v3 tag still has the high word; it means nothing. */
	if (!fmt->has_64bit)
		high = 0;
	tag->fs_block = (high << 32) | jbd2_get_be32(p);
}

static void tag_write(const struct jbd2_format *fmt, uint8_t *p, const struct jbd2_tag *tag)
{
	uint32_t high = fmt->has_64bit ? (uint32_t)(tag->fs_block >> 32) : 0;

	jbd2_put_be32(p, (uint32_t)tag->fs_block);
	if (fmt->csum == JBD2_CSUM_V3) {
		jbd2_put_be32(p + offsetof(struct jbd2_disk_tag3, t_flags), tag->flags);
		jbd2_put_be32(p + offsetof(struct jbd2_disk_tag3, t_blocknr_high), high);
		jbd2_put_be32(p + offsetof(struct jbd2_disk_tag3, t_checksum), tag->checksum);
		return;
	}
	jbd2_put_be16(p + offsetof(struct jbd2_disk_tag, t_flags), (uint16_t)tag->flags);
	if (fmt->csum == JBD2_CSUM_V2)
		jbd2_put_be16(p + offsetof(struct jbd2_disk_tag, t_checksum), (uint16_t)tag->checksum);
	if (fmt->has_64bit)
		jbd2_put_be32(p + offsetof(struct jbd2_disk_tag, t_blocknr_high), high);
}

int jbd2_descriptor_decode(const struct jbd2_format *fmt, const void *block,
			   struct jbd2_tag *tags, size_t capacity, size_t *count,
			   struct jbd2_error *err)
{
	const uint8_t *b = block;
	size_t tag_size = jbd2_tag_size(fmt);
	size_t limit = fmt->block_size - jbd2_tail_size(fmt);
	size_t offset = HEADER_SIZE;
	size_t n = 0;

	*count = 0;
	while (offset + tag_size <= limit) {
		struct jbd2_tag tag;
		tag_read(fmt, b + offset, &tag);
		if (tag.flags & ~JBD2_KNOWN_TAG_FLAGS)
			return jbd2_error_set(err, -EUCLEAN,
					      "descriptor tag %zu: unknown flags 0x%x", n, tag.flags);
		if (n == capacity)
			return jbd2_error_set(err, -EINVAL,
					      "descriptor tag %zu: more tags than the %zu-entry array",
					      n, capacity);
		tags[n++] = tag;
		offset += tag_size;
		if (!(tag.flags & JBD2_FLAG_SAME_UUID))
			offset += JBD2_UUID_SIZE;
		if (tag.flags & JBD2_FLAG_LAST_TAG)
			break;
	}
	*count = n;
	return 0;
}

int jbd2_descriptor_encode(const struct jbd2_format *fmt, uint32_t sequence,
			   const struct jbd2_tag *tags, size_t count, void *block,
			   struct jbd2_error *err)
{
	uint8_t *b = block;
	size_t tag_size = jbd2_tag_size(fmt);

	if (count == 0 || count > jbd2_descriptor_capacity(fmt))
		return jbd2_error_set(err, -EINVAL,
				      "descriptor for transaction %u: %zu tags, capacity %zu",
				      sequence, count, jbd2_descriptor_capacity(fmt));
	memset(b, 0, fmt->block_size);
	jbd2_header_encode(b, JBD2_BLOCKTYPE_DESCRIPTOR, sequence);
	size_t offset = HEADER_SIZE;
	for (size_t i = 0; i < count; i++) {
		struct jbd2_tag tag = tags[i];
		if (!fmt->has_64bit && (tag.fs_block >> 32))
			return jbd2_error_set(err, -EINVAL,
					      "descriptor for transaction %u: block %llu needs 64bit journal",
					      sequence, (unsigned long long)tag.fs_block);
		tag.flags &= JBD2_FLAG_ESCAPE | JBD2_FLAG_DELETED;
		if (i > 0)
			tag.flags |= JBD2_FLAG_SAME_UUID;
		if (i == count - 1)
			tag.flags |= JBD2_FLAG_LAST_TAG;
		tag_write(fmt, b + offset, &tag);
		offset += tag_size;
		if (i == 0) {
			memcpy(b + offset, fmt->uuid, JBD2_UUID_SIZE);
			offset += JBD2_UUID_SIZE;
		}
	}
	jbd2_block_tail_set(fmt, b);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Revoke blocks                                                             */
/* ------------------------------------------------------------------------ */

int jbd2_revoke_decode(const struct jbd2_format *fmt, const void *block,
		       uint64_t *records, size_t capacity, size_t *count,
		       struct jbd2_error *err)
{
	const uint8_t *b = block;
	uint32_t used = jbd2_get_be32(b + offsetof(struct jbd2_disk_revoke_header, r_count));
	size_t record = revoke_record_size(fmt);
	size_t limit = fmt->block_size - jbd2_tail_size(fmt);

	*count = 0;
	if (used < REVOKE_HEADER_SIZE || used > limit)
		return jbd2_error_set(err, -EUCLEAN,
				      "revoke block: r_count %u outside [%zu, %zu]",
				      used, REVOKE_HEADER_SIZE, limit);
	if ((used - REVOKE_HEADER_SIZE) % record)
		return jbd2_error_set(err, -EUCLEAN,
				      "revoke block: r_count %u is not a whole number of %zu-byte records",
				      used, record);
	size_t n = (used - REVOKE_HEADER_SIZE) / record;
	if (n > capacity)
		return jbd2_error_set(err, -EINVAL, "revoke block: %zu records, array holds %zu",
				      n, capacity);
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p = b + REVOKE_HEADER_SIZE + i * record;
		records[i] = record == 8 ? jbd2_get_be64(p) : jbd2_get_be32(p);
	}
	*count = n;
	return 0;
}

int jbd2_revoke_encode(const struct jbd2_format *fmt, uint32_t sequence,
		       const uint64_t *records, size_t count, void *block,
		       struct jbd2_error *err)
{
	uint8_t *b = block;
	size_t record = revoke_record_size(fmt);

	if (count > jbd2_revoke_capacity(fmt))
		return jbd2_error_set(err, -EINVAL,
				      "revoke block for transaction %u: %zu records, capacity %zu",
				      sequence, count, jbd2_revoke_capacity(fmt));
	memset(b, 0, fmt->block_size);
	jbd2_header_encode(b, JBD2_BLOCKTYPE_REVOKE, sequence);
	for (size_t i = 0; i < count; i++) {
		uint8_t *p = b + REVOKE_HEADER_SIZE + i * record;
		if (record == 4 && (records[i] >> 32))
			return jbd2_error_set(err, -EINVAL,
					      "revoke block for transaction %u: block %llu needs 64bit journal",
					      sequence, (unsigned long long)records[i]);
		if (record == 8)
			jbd2_put_be64(p, records[i]);
		else
			jbd2_put_be32(p, (uint32_t)records[i]);
	}
	jbd2_put_be32(b + offsetof(struct jbd2_disk_revoke_header, r_count),
		      (uint32_t)(REVOKE_HEADER_SIZE + count * record));
	jbd2_block_tail_set(fmt, b);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Commit blocks                                                             */
/* ------------------------------------------------------------------------ */

uint32_t jbd2_commit_checksum(const struct jbd2_format *fmt, const void *block)
{
	return crc32c_with_hole(fmt->csum_seed, block, fmt->block_size, COMMIT_OFF(h_chksum));
}

void jbd2_commit_encode(const struct jbd2_format *fmt, uint32_t sequence, uint64_t commit_sec,
			uint32_t commit_nsec, uint32_t v1_crc, void *block)
{
	uint8_t *b = block;

	memset(b, 0, fmt->block_size);
	jbd2_header_encode(b, JBD2_BLOCKTYPE_COMMIT, sequence);
	jbd2_put_be64(b + COMMIT_OFF(h_commit_sec), commit_sec);
	jbd2_put_be32(b + COMMIT_OFF(h_commit_nsec), commit_nsec);
	if (fmt->csum == JBD2_CSUM_V1) {
		b[COMMIT_OFF(h_chksum_type)] = JBD2_CHECKSUM_TYPE_CRC32;
		b[COMMIT_OFF(h_chksum_size)] = JBD2_CRC32_CHECKSUM_SIZE;
		jbd2_put_be32(b + COMMIT_OFF(h_chksum), v1_crc);
	} else if (has_block_checksums(fmt)) {
		jbd2_put_be32(b + COMMIT_OFF(h_chksum), jbd2_commit_checksum(fmt, b));
	}
}

void jbd2_commit_decode(const void *block, struct jbd2_commit *commit)
{
	const uint8_t *b = block;

	commit->sequence = jbd2_get_be32(b + COMMIT_OFF(h_header.h_sequence));
	commit->checksum_type = b[COMMIT_OFF(h_chksum_type)];
	commit->checksum_size = b[COMMIT_OFF(h_chksum_size)];
	commit->checksum = jbd2_get_be32(b + COMMIT_OFF(h_chksum));
	commit->commit_sec = jbd2_get_be64(b + COMMIT_OFF(h_commit_sec));
	commit->commit_nsec = jbd2_get_be32(b + COMMIT_OFF(h_commit_nsec));
}

static bool commit_v1_matches(const struct jbd2_commit *c, uint32_t v1_crc)
{
	bool crc_present = c->checksum_type == JBD2_CHECKSUM_TYPE_CRC32 &&
			   c->checksum_size == JBD2_CRC32_CHECKSUM_SIZE &&
			   c->checksum == v1_crc;
	/* The kernel accepts a commit block that carries no v1 checksum at all. */
	bool crc_absent = c->checksum_type == 0 && c->checksum_size == 0 && c->checksum == 0;
	return crc_present || crc_absent;
}

bool jbd2_commit_verify(const struct jbd2_format *fmt, const void *block, uint32_t v1_crc)
{
	struct jbd2_commit commit;

	jbd2_commit_decode(block, &commit);
	switch (fmt->csum) {
	case JBD2_CSUM_V1:
		return commit_v1_matches(&commit, v1_crc);
	case JBD2_CSUM_V2:
	case JBD2_CSUM_V3:
		return commit.checksum == jbd2_commit_checksum(fmt, block);
	case JBD2_CSUM_NONE:
		break;
	}
	return true;
}
