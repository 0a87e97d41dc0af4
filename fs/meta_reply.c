/* The reply table: exactly-once for forwarded changes (docs/cluster.md
 * "Exactly once"). A participant's non-idempotent request carries its id
 * (node, client, slot, seq); the engine writes the id and the result into
 * this table under the same volume-lock hold as the change, so the journal
 * transaction that holds the change holds its record too. A new coordinator
 * that replays the journal then answers a resend of the id from the record
 * instead of applying it again (EEXIST, ENOENT for what did happen).
 *
 * Home: ext4's reserved boot-loader inode (5), a regular file of
 * REPLY_TABLE_BYTES made by the first record. e2fsck accepts a regular file
 * there and checks its blocks like any file's; the kernel never reads it
 * (only EXT4_IOC_SWAP_BOOT does). An inode 5 that is not a table of ours is
 * left alone: records are then not kept, and the log says so once.
 *
 * One entry of REPLY_ENTRY_BYTES per node (its authenticated name), up to
 * REPLY_NODES_MAX; the least recently used entry is reused when full. */
#include "fs/meta_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define REPLY_INO EXT2_BOOT_LOADER_INO
#define REPLY_MAGIC 0x52565343u   /* "CSVR" little-endian */

struct reply_table {
	struct meta_reply_entry e[REPLY_NODES_MAX];
	blk64_t pblk[REPLY_TABLE_BYTES / 1024];   /* per table block (blocksize >= 1024) */
	unsigned nblocks;
	uint64_t stamp;                           /* the highest entry stamp */
};

/* The id this thread's next change is recorded under (NULL: none). */
static __thread const struct meta_reply_key *tl_expect;

/* ---- encoding (little-endian, crc32c over the entry after its crc) ------- */

static void put32(uint8_t *p, uint32_t x)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(x >> (8 * i));
}

static void put64(uint8_t *p, uint64_t x)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(x >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

enum { OFF_MAGIC = 0, OFF_CRC = 4, OFF_NODE = 8, OFF_CLIENT = 72, OFF_STAMP = 80, OFF_SLOTS = 128,
       SLOT_BYTES = 16 };

void meta_reply_encode(const struct meta_reply_entry *e, uint8_t *buf)
{
	memset(buf, 0, REPLY_ENTRY_BYTES);
	if (!e->node[0])
		return;   /* a free entry is all zeros */
	put32(buf + OFF_MAGIC, REPLY_MAGIC);
	memcpy(buf + OFF_NODE, e->node, strnlen(e->node, sizeof(e->node) - 1));
	put64(buf + OFF_CLIENT, e->client);
	put64(buf + OFF_STAMP, e->stamp);
	for (unsigned i = 0; i < REPLY_SLOTS; i++) {
		uint8_t *s = buf + OFF_SLOTS + i * SLOT_BYTES;
		put32(s, e->slot[i].seq);
		put32(s + 4, e->slot[i].op);
		put32(s + 8, e->slot[i].ino);
		put32(s + 12, e->slot[i].gen);
	}
	put32(buf + OFF_CRC, ext2fs_crc32c_le(~0u, buf + OFF_NODE, REPLY_ENTRY_BYTES - OFF_NODE));
}

int meta_reply_decode(const uint8_t *buf, struct meta_reply_entry *e)
{
	memset(e, 0, sizeof(*e));
	uint32_t magic = get32(buf + OFF_MAGIC);
	if (magic == 0) {
		for (unsigned i = 0; i < REPLY_ENTRY_BYTES; i++)
			if (buf[i])
				return -EINVAL;
		return 0;
	}
	if (magic != REPLY_MAGIC ||
	    get32(buf + OFF_CRC) != ext2fs_crc32c_le(~0u, buf + OFF_NODE, REPLY_ENTRY_BYTES - OFF_NODE))
		return -EINVAL;
	memcpy(e->node, buf + OFF_NODE, sizeof(e->node) - 1);
	if (!e->node[0] || memchr(buf + OFF_NODE, 0, sizeof(e->node)) == NULL)
		return -EINVAL;
	e->client = get64(buf + OFF_CLIENT);
	e->stamp = get64(buf + OFF_STAMP);
	for (unsigned i = 0; i < REPLY_SLOTS; i++) {
		const uint8_t *s = buf + OFF_SLOTS + i * SLOT_BYTES;
		e->slot[i] = (struct meta_reply_slot){ get32(s), get32(s + 4), get32(s + 8), get32(s + 12) };
	}
	return 1;
}

/* ---- the table in memory, loaded from inode 5 ---------------------------- */

static int table_blocks(struct volume *v, struct ext2_inode_large *in, struct reply_table *t)
{
	t->nblocks = REPLY_TABLE_BYTES / v->blocksize;
	for (unsigned i = 0; i < t->nblocks; i++) {
		errcode_t e = ext2fs_bmap2(v->fs, REPLY_INO, (struct ext2_inode *)in, NULL, 0, i, NULL,
					   &t->pblk[i]);
		if (e || !t->pblk[i] || blocks_invalid(v, t->pblk[i], 1))
			return -EIO;
	}
	return 0;
}

/* A new table: inode 5 as a regular file of zeroed, written blocks. */
static int table_make(struct volume *v, struct ext2_inode_large *in)
{
	memset(in, 0, sizeof(*in));
	in->i_mode = LINUX_S_IFREG | 0600;
	in->i_links_count = 1;
	in->i_flags = EXT4_EXTENTS_FL;
	in->i_extra_isize = sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
	struct timespec now = now_ts();
	inode_set_time(v, in, TIME_A | TIME_M | TIME_C | TIME_CR, now);
	errcode_t e = ext2fs_write_new_inode(v->fs, REPLY_INO, (struct ext2_inode *)in);
	struct ext2_extent_handle *h = NULL;
	if (!e)
		e = ext2fs_extent_open2(v->fs, REPLY_INO, (struct ext2_inode *)in, &h);
	if (!e) {
		ext2fs_extent_free(h);
		e = ext2fs_write_inode_full(v->fs, REPLY_INO, (struct ext2_inode *)in, sizeof(*in));
	}
	if (!e)
		e = ext2fs_fallocate(v->fs, EXT2_FALLOCATE_FORCE_INIT | EXT2_FALLOCATE_ZERO_BLOCKS,
				     REPLY_INO, (struct ext2_inode *)in, ~0ULL, 0,
				     REPLY_TABLE_BYTES / v->blocksize);
	if (!e) {
		e = ext2fs_inode_size_set(v->fs, (struct ext2_inode *)in, REPLY_TABLE_BYTES);
		if (!e)
			e = ext2fs_write_inode_full(v->fs, REPLY_INO, (struct ext2_inode *)in, sizeof(*in));
	}
	volume_mark_dirty(v);
	return e ? -errcode_to_errno(e) : 0;
}

static int table_read(struct volume *v, struct reply_table *t)
{
	uint8_t *buf = malloc(v->blocksize);
	if (!buf)
		return -ENOMEM;
	unsigned per = v->blocksize / REPLY_ENTRY_BYTES;
	int rc = 0;
	for (unsigned b = 0; rc == 0 && b < t->nblocks; b++) {
		errcode_t e = io_channel_read_blk64(v->fs->io, t->pblk[b], 1, buf);
		if (e)
			rc = -errcode_to_errno(e);
		for (unsigned i = 0; rc == 0 && i < per; i++) {
			struct meta_reply_entry *x = &t->e[b * per + i];
			if (meta_reply_decode(buf + i * REPLY_ENTRY_BYTES, x) < 0)
				rc = -EIO;
			else if (x->stamp > t->stamp)
				t->stamp = x->stamp;
		}
	}
	free(buf);
	return rc;
}

/* The table, loaded (made, if inode 5 is unused and make is set); NULL when
 * there is none or it cannot be used (logged once per attach). */
static struct reply_table *table_get(struct volume *v, int make)
{
	if (v->replies || v->replies_off)
		return v->replies;
	struct ext2_inode_large in;
	errcode_t e = ext2fs_read_inode_full(v->fs, REPLY_INO, (struct ext2_inode *)&in, sizeof(in));
	if (e)
		return NULL;
	int unused = in.i_mode == 0 && ext2fs_get_stat_i_blocks(v->fs, (struct ext2_inode *)&in) == 0;
	if (unused && !make)
		return NULL;
	struct reply_table *t = calloc(1, sizeof(*t));
	int rc = t ? 0 : -ENOMEM;
	if (rc == 0 && unused && (rc = table_make(v, &in)) == 0)
		csvfs_log(LOG_INFO_L, "volume %s: made the reply table (inode %u, %u bytes)", v->uuid,
			  REPLY_INO, REPLY_TABLE_BYTES);
	else if (rc == 0 && (!LINUX_S_ISREG(in.i_mode) || EXT2_I_SIZE(&in) != REPLY_TABLE_BYTES ||
			     !(in.i_flags & EXT4_EXTENTS_FL)))
		rc = -EINVAL;
	if (rc == 0)
		rc = table_blocks(v, &in, t);
	if (rc == 0 && !unused)
		rc = table_read(v, t);
	if (rc) {
		csvfs_log(LOG_ERR_L, "volume %s: inode %u is not a usable reply table (%s): resent "
			  "requests are not answered from it (exactly-once off)", v->uuid, REPLY_INO,
			  strerror(-rc));
		free(t);
		v->replies_off = 1;
		return NULL;
	}
	v->replies = t;
	return t;
}

void reply_table_free(struct volume *v)
{
	free(v->replies);
	v->replies = NULL;
	v->replies_off = 0;
}

static int entry_write(struct volume *v, struct reply_table *t, unsigned idx)
{
	unsigned per = v->blocksize / REPLY_ENTRY_BYTES, b = idx / per;
	uint8_t *buf = malloc(v->blocksize);
	if (!buf)
		return -ENOMEM;
	for (unsigned i = 0; i < per; i++)
		meta_reply_encode(&t->e[b * per + i], buf + i * REPLY_ENTRY_BYTES);
	errcode_t e = io_channel_write_blk64(v->fs->io, t->pblk[b], 1, buf);
	free(buf);
	return e ? -errcode_to_errno(e) : 0;
}

static int entry_of(struct reply_table *t, const char *node)
{
	for (unsigned i = 0; i < REPLY_NODES_MAX; i++)
		if (t->e[i].node[0] && strcmp(t->e[i].node, node) == 0)
			return (int)i;
	return -1;
}

/* The node's entry, or a free one, or the least recently used one. */
static unsigned entry_for(struct reply_table *t, const char *node)
{
	int i = entry_of(t, node);
	if (i >= 0)
		return (unsigned)i;
	unsigned pick = 0;
	for (unsigned j = 0; j < REPLY_NODES_MAX; j++) {
		if (!t->e[j].node[0])
			return j;
		if (t->e[j].stamp < t->e[pick].stamp)
			pick = j;
	}
	return pick;
}

/* ---- what the server and the engine's changes call -------------------------- */

void meta_reply_expect(const struct meta_reply_key *k)
{
	tl_expect = k;
}

int meta_reply_lookup(struct volume *v, const struct meta_reply_key *k, struct meta_reply_slot *out)
{
	if (k->slot >= REPLY_SLOTS || k->seq == 0)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	struct reply_table *t = v->fs ? table_get(v, 0) : NULL;
	int i = t ? entry_of(t, k->node) : -1;
	int found = 0;
	if (i >= 0 && t->e[i].client == k->client) {
		const struct meta_reply_slot *s = &t->e[i].slot[k->slot];
		if (s->seq == k->seq && s->op == k->op) {
			*out = *s;
			found = 1;
		}
	}
	pthread_mutex_unlock(&v->lock);
	return found;
}

int meta_reply_attr(struct volume *v, const struct meta_reply_slot *done, struct meta_attr *out)
{
	int rc = meta_getattr(v, done->ino, out);
	return rc == 0 && out->generation == done->gen && out->nlink ? 0 : -ESTALE;
}

int meta_reply_size(struct volume *v, const struct meta_reply_slot *done, uint64_t *size)
{
	struct meta_attr a;
	int rc = meta_getattr(v, done->ino, &a);
	pthread_mutex_lock(&v->lock);
	int allocated = v->fs && done->ino >= 1 && done->ino <= v->fs->super->s_inodes_count &&
			ext2fs_test_inode_bitmap2(v->fs->inode_map, done->ino);
	pthread_mutex_unlock(&v->lock);
	if (rc || !allocated || a.generation != done->gen)
		return -ESTALE;
	*size = a.size;
	return 0;
}

void reply_record(struct volume *v, int rc, ext2_ino_t ino, uint32_t gen)
{
	const struct meta_reply_key *k = tl_expect;
	if (!k || rc)
		return;
	tl_expect = NULL;   /* one change per request */
	struct reply_table *t = table_get(v, 1);
	if (!t)
		return;
	unsigned i = entry_for(t, k->node);
	struct meta_reply_entry *e = &t->e[i];
	if (strcmp(e->node, k->node) != 0 || e->client != k->client) {
		/* A new node, or the node's daemon restarted (a new client id):
		 * nothing of the old one's can be resent. */
		if (e->node[0] && strcmp(e->node, k->node) != 0)
			csvfs_log(LOG_WARN_L, "volume %s: reply table full: node %s's records give way to "
				  "node %s's", v->uuid, e->node, k->node);
		memset(e, 0, sizeof(*e));
		snprintf(e->node, sizeof(e->node), "%s", k->node);
		e->client = k->client;
	}
	e->stamp = ++t->stamp;
	e->slot[k->slot] = (struct meta_reply_slot){ k->seq, k->op, ino, gen };
	int w = entry_write(v, t, i);
	if (w)
		csvfs_log(LOG_ERR_L, "volume %s: writing node %s's reply record failed (%s): a resend of "
			  "that %u request would run again", v->uuid, k->node, strerror(-w), k->op);
}
