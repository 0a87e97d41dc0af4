/* Inodes: attributes, times, setattr, open counts, freeing and the orphan list.
 * Every function here that touches libext2fs runs under v->lock. */
#include "fs/meta_internal.h"
#include "fs/cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <stdlib.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int errcode_to_errno(errcode_t e)
{
	if (e == 0)
		return 0;
	if (e > 0 && e < 4096)
		return (int)e;
	switch (e) {
	case EXT2_ET_FILE_NOT_FOUND: return ENOENT;
	case EXT2_ET_FILE_EXISTS: return EEXIST;
	case EXT2_ET_DIR_NO_SPACE:
	case EXT2_ET_BLOCK_ALLOC_FAIL:
	case EXT2_ET_INODE_ALLOC_FAIL:
	case EXT2_ET_EA_NO_SPACE:
	case EXT2_ET_DIR_NO_SPACE_FOR_CSUM:
		return ENOSPC;
	case EXT2_ET_RO_FILSYS: return EROFS;
	case EXT2_ET_NO_MEMORY: return ENOMEM;
	case EXT2_ET_EA_KEY_NOT_FOUND: return ENODATA;
	case EXT2_ET_FILE_TOO_BIG: return EFBIG;
	case EXT2_ET_INVALID_ARGUMENT: return EINVAL;
	case EXT2_ET_EA_BAD_NAME_LEN:
	case EXT2_ET_EA_BAD_VALUE_SIZE:
		return ERANGE;
	case EXT2_ET_EXTENT_NOT_FOUND: return ENOENT;
	default:
		return EIO;
	}
}

/* ---- times ------------------------------------------------------------ */

struct timespec now_ts(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts;
}

static uint32_t time_extra(struct timespec ts)
{
	int64_t sec = ts.tv_sec;
	uint32_t epoch = (uint32_t)(((sec - (int32_t)sec) >> 32) & EXT4_EPOCH_MASK);
	return ((uint32_t)ts.tv_nsec << EXT4_EPOCH_BITS) | epoch;
}

static struct timespec time_decode(uint32_t lo, uint32_t extra, int has_extra)
{
	struct timespec ts = { .tv_sec = (int32_t)lo, .tv_nsec = 0 };
	if (has_extra) {
		ts.tv_sec += (int64_t)(extra & EXT4_EPOCH_MASK) << 32;
		ts.tv_nsec = extra >> EXT4_EPOCH_BITS;
		if (ts.tv_nsec >= 1000000000)
			ts.tv_nsec = 0;
	}
	return ts;
}

static int has_extra(const struct ext2_inode_large *in, size_t field_end)
{
	return (size_t)EXT2_GOOD_OLD_INODE_SIZE + in->i_extra_isize >= field_end;
}

#define EXTRA_END(field) (offsetof(struct ext2_inode_large, field) + sizeof(uint32_t))

void inode_set_time(struct volume *v, struct ext2_inode_large *in, int which, struct timespec ts)
{
	(void)v;
	if (which & TIME_A) {
		in->i_atime = (uint32_t)ts.tv_sec;
		if (has_extra(in, EXTRA_END(i_atime_extra)))
			in->i_atime_extra = time_extra(ts);
	}
	if (which & TIME_M) {
		in->i_mtime = (uint32_t)ts.tv_sec;
		if (has_extra(in, EXTRA_END(i_mtime_extra)))
			in->i_mtime_extra = time_extra(ts);
	}
	if (which & TIME_C) {
		in->i_ctime = (uint32_t)ts.tv_sec;
		if (has_extra(in, EXTRA_END(i_ctime_extra)))
			in->i_ctime_extra = time_extra(ts);
	}
	if ((which & TIME_CR) && has_extra(in, EXTRA_END(i_crtime_extra))) {
		in->i_crtime = (uint32_t)ts.tv_sec;
		in->i_crtime_extra = time_extra(ts);
	}
}

/* ---- reading and writing ---------------------------------------------- */

int inode_read(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in)
{
	if (ino < 1 || ino > v->fs->super->s_inodes_count)
		return -ESTALE;
	if (v->fs->inode_map && !ext2fs_test_inode_bitmap2(v->fs->inode_map, ino))
		return -ESTALE;   /* freed: a stale handle, not an inode */
	memset(in, 0, sizeof(*in));
	errcode_t e = ext2fs_read_inode_full(v->fs, ino, (struct ext2_inode *)in, sizeof(*in));
	if (e) {
		csvfs_log(LOG_ERR_L, "inode %u: read failed: %s", ino, error_message(e));
		return -errcode_to_errno(e);
	}
	return inode_check(v, ino, in);
}

static int inode_store(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in)
{
	errcode_t e = ext2fs_write_inode_full(v->fs, ino, (struct ext2_inode *)in, sizeof(*in));
	if (e) {
		csvfs_log(LOG_ERR_L, "inode %u: write failed: %s", ino, error_message(e));
		return -errcode_to_errno(e);
	}
	return 0;
}

/* In a cluster, other nodes may cache a file's attributes, or a
 * directory's entries, under its attribute lock (docs/cluster.md, "Attribute
 * caching"): their copies go before the change, which no one can read
 * before v->lock is released. Every change to a directory's entries writes
 * the directory's inode (its times). */
int inode_write(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in)
{
	if (v->cluster) {
		int rc = cluster_attr_change(v->cluster, ino);
		if (rc)
			return rc;
	}
	return inode_store(v, ino, in);
}

/* Before an operation's first change, under v->lock: the attribute lock of
 * every inode it will write (0s are skipped). A node that does not give its
 * copies up fails the operation here, with nothing changed, never half way
 * through it (a name without its inode, an inode without its name). Taken
 * now, they stay until v->lock goes: a coordinator's EX is dropped only
 * between engine operations (cluster_attr.c). */
int inode_lock_writes(struct volume *v, ext2_ino_t a, ext2_ino_t b, ext2_ino_t c, ext2_ino_t d)
{
	const ext2_ino_t inos[] = { a, b, c, d };
	for (unsigned i = 0; v->cluster && i < sizeof(inos) / sizeof(inos[0]); i++) {
		int rc = inos[i] ? cluster_attr_change(v->cluster, inos[i]) : 0;
		if (rc)
			return rc;
	}
	return 0;
}

/* A number just allocated: whatever a node cached of the file that had it
 * before went when that file was freed (an inode_write). */
int inode_write_fresh(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in)
{
	if (v->cluster)
		cluster_attr_prefetch(v->cluster, ino);
	return inode_store(v, ino, in);
}

static uint32_t inode_rdev(const struct ext2_inode_large *in)
{
	if (in->i_block[0]) {            /* old encoding: major 8 bits, minor 8 bits */
		uint32_t d = in->i_block[0];
		return makedev((d >> 8) & 0xff, d & 0xff);
	}
	uint32_t d = in->i_block[1];     /* new encoding, as the kernel's new_encode_dev */
	return makedev((d & 0xfff00) >> 8, (d & 0xff) | ((d >> 12) & 0xfff00));
}

void inode_to_attr(struct volume *v, ext2_ino_t ino, const struct ext2_inode_large *in,
		   struct meta_attr *out)
{
	memset(out, 0, sizeof(*out));
	out->ino = ino;
	out->mode = in->i_mode;
	out->nlink = in->i_links_count;
	out->uid = in->i_uid | ((uint32_t)in->osd2.linux2.l_i_uid_high << 16);
	out->gid = in->i_gid | ((uint32_t)in->osd2.linux2.l_i_gid_high << 16);
	out->size = EXT2_I_SIZE(in);
	out->blocks = ext2fs_get_stat_i_blocks(v->fs, (struct ext2_inode *)in);
	out->generation = in->i_generation;
	if (LINUX_S_ISCHR(in->i_mode) || LINUX_S_ISBLK(in->i_mode))
		out->rdev = inode_rdev(in);
	out->atime = time_decode(in->i_atime, in->i_atime_extra, has_extra(in, EXTRA_END(i_atime_extra)));
	out->mtime = time_decode(in->i_mtime, in->i_mtime_extra, has_extra(in, EXTRA_END(i_mtime_extra)));
	out->ctime = time_decode(in->i_ctime, in->i_ctime_extra, has_extra(in, EXTRA_END(i_ctime_extra)));

	/* Writes keep size and times in memory until the next sync. */
	pthread_mutex_lock(&v->table_lock);
	for (struct minode *m = v->buckets[ino % v->nbuckets]; m; m = m->hash_next) {
		if (m->ino != ino)
			continue;
		out->size = atomic_load(&m->size);
		if (m->times_dirty) {
			out->mtime = m->mtime;
			out->ctime = m->ctime;
		}
		break;
	}
	pthread_mutex_unlock(&v->table_lock);
}

int meta_getattr(struct volume *v, ext2_ino_t ino, struct meta_attr *out)
{
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	int rc = inode_read(v, ino, &in);
	if (rc == 0 && in.i_links_count == 0 && in.i_dtime && !in.i_mode)
		rc = -ESTALE;
	if (rc == 0)
		inode_to_attr(v, ino, &in, out);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

/* ---- the in-memory inode table ----------------------------------------- */

static struct minode *table_find(struct volume *v, ext2_ino_t ino)
{
	struct minode *m = v->buckets[ino % v->nbuckets];
	while (m && m->ino != ino)
		m = m->hash_next;
	return m;
}

/* Caller must not hold v->lock: the size is loaded under it, and the table
 * entry is inserted under the same hold so no size change can slip between. */
struct minode *minode_get(struct volume *v, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	pthread_mutex_lock(&v->table_lock);
	struct minode *m = table_find(v, ino);
	if (m) {
		m->refs++;
		pthread_mutex_unlock(&v->table_lock);
		pthread_mutex_unlock(&v->lock);
		return m;
	}
	pthread_mutex_unlock(&v->table_lock);
	if (!v->fs) {
		memset(&in, 0, sizeof(in));
	} else if (inode_read(v, ino, &in) != 0 || (in.i_links_count == 0 && !in.i_mode)) {
		pthread_mutex_unlock(&v->lock);
		return NULL;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		pthread_mutex_unlock(&v->lock);
		return NULL;
	}
	m->ino = ino;
	m->refs = 1;
	atomic_store(&m->size, EXT2_I_SIZE(&in));
	pthread_rwlock_init(&m->io_lock, NULL);
	pthread_mutex_init(&m->write_lock, NULL);
	pthread_mutex_init(&m->map_lock, NULL);
	pthread_mutex_lock(&v->table_lock);
	m->hash_next = v->buckets[ino % v->nbuckets];
	v->buckets[ino % v->nbuckets] = m;
	pthread_mutex_unlock(&v->table_lock);
	pthread_mutex_unlock(&v->lock);
	return m;
}

/* Under v->table_lock: takes m out of the table (if it is still there). */
static void table_remove_locked(struct volume *v, struct minode *m)
{
	struct minode **pp = &v->buckets[m->ino % v->nbuckets];
	while (*pp && *pp != m)
		pp = &(*pp)->hash_next;
	if (*pp)
		*pp = m->hash_next;
	m->hash_next = NULL;
}

void minode_forget(struct volume *v, struct minode *m)
{
	pthread_mutex_lock(&v->table_lock);
	table_remove_locked(v, m);
	pthread_mutex_unlock(&v->table_lock);
}

void minode_put(struct volume *v, struct minode *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&v->table_lock);
	if (--m->refs > 0) {
		pthread_mutex_unlock(&v->table_lock);
		return;
	}
	table_remove_locked(v, m);
	pthread_mutex_unlock(&v->table_lock);
	pthread_rwlock_destroy(&m->io_lock);
	pthread_mutex_destroy(&m->write_lock);
	pthread_mutex_destroy(&m->map_lock);
	free(m->pend);
	free(m->map);
	free(m);
}

struct minode *minode_find(struct volume *v, ext2_ino_t ino)
{
	pthread_mutex_lock(&v->table_lock);
	struct minode *m = table_find(v, ino);
	if (m)
		m->refs++;
	pthread_mutex_unlock(&v->table_lock);
	return m;
}

struct minode *minode_get_generation(struct volume *v, ext2_ino_t ino, uint32_t gen)
{
	struct minode *m = minode_get(v, ino);
	if (!m)
		return NULL;
	pthread_mutex_lock(&v->lock);
	int stale = m->open_count == 0 && m->generation != gen;
	if (m->open_count == 0)
		m->generation = gen;
	pthread_mutex_unlock(&v->lock);
	pthread_mutex_lock(&v->table_lock);
	int shared = m->refs > 1;
	pthread_mutex_unlock(&v->table_lock);
	if (!stale || !shared)
		return m;
	minode_forget(v, m);
	minode_put(v, m);
	m = minode_get(v, ino);
	if (m) {
		pthread_mutex_lock(&v->lock);
		m->generation = gen;
		pthread_mutex_unlock(&v->lock);
	}
	return m;
}

void minode_ref(struct volume *v, struct minode *m)
{
	pthread_mutex_lock(&v->table_lock);
	m->refs++;
	pthread_mutex_unlock(&v->table_lock);
}

unsigned minode_open_count(struct volume *v, struct minode *m)
{
	pthread_mutex_lock(&v->lock);
	unsigned n = m->open_count;
	pthread_mutex_unlock(&v->lock);
	return n;
}

void minode_reload_size(struct volume *v, struct minode *m)
{
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	if (inode_read(v, m->ino, &in) == 0)
		atomic_store(&m->size, EXT2_I_SIZE(&in));
	pthread_mutex_unlock(&v->lock);
}

/* The ranges are taken out first: a commit that fails here is reported, not
 * kept, since no later coordinator could apply it either (its allocation
 * died with the old coordinator's unjournaled state). */
void meta_replay_pending(struct volume *v, struct minode *m)
{
	pthread_mutex_lock(&m->map_lock);
	unsigned n = m->npend;
	struct pending_commit *p = n ? malloc(n * sizeof(*p)) : NULL;
	if (p)
		memcpy(p, m->pend, n * sizeof(*p));
	m->npend = 0;
	pthread_mutex_unlock(&m->map_lock);
	for (unsigned i = 0; p && i < n; i++)
		if (meta_commit_write(v, m, p[i].lblk, p[i].len, p[i].size))
			csvfs_log(LOG_ERR_L, "inode %u: blocks %" PRIu64 "+%" PRIu64 " written before the "
				  "takeover were lost with their allocation", m->ino, p[i].lblk, p[i].len);
	free(p);
	/* A participant flags its overwrites and leaves the times to the
	 * coordinator (OP_TOUCH stamps them there): it kept none to adopt. */
	struct timespec now = now_ts();
	pthread_mutex_lock(&v->lock);
	if (m->times_dirty) {
		m->mtime = now;
		m->ctime = now;
	}
	pthread_mutex_unlock(&v->lock);
}

void minode_foreach(struct volume *v, void (*fn)(struct volume *v, struct minode *m, void *arg),
		    void *arg)
{
	size_t n = 0, cap = 0;
	struct minode **all = NULL;
	pthread_mutex_lock(&v->table_lock);
	for (size_t b = 0; b < v->nbuckets; b++) {
		for (struct minode *m = v->buckets[b]; m; m = m->hash_next) {
			if (n == cap) {
				struct minode **p = realloc(all, (cap = cap ? 2 * cap : 64) * sizeof(*p));
				if (!p)
					break;
				all = p;
			}
			if (n < cap) {
				m->refs++;
				all[n++] = m;
			}
		}
	}
	pthread_mutex_unlock(&v->table_lock);
	for (size_t i = 0; i < n; i++) {
		fn(v, all[i], arg);
		minode_put(v, all[i]);
	}
	free(all);
}

void minode_invalidate_map(struct minode *m)
{
	pthread_mutex_lock(&m->map_lock);
	m->nmap = 0;
	pthread_mutex_unlock(&m->map_lock);
}

/* Whether m is still the table's entry for its inode. Compares pointers
 * only: a last minode_put frees an entry without v->lock, so an entry found
 * here may not be dereferenced without a reference (minode_find). */
static int minode_is_current(struct volume *v, const struct minode *m)
{
	pthread_mutex_lock(&v->table_lock);
	int current = table_find(v, m->ino) == m;
	pthread_mutex_unlock(&v->table_lock);
	return current;
}

/* ---- freeing, links and the orphan list -------------------------------- */

int inode_free(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in)
{
	/* never free blocks a corrupt tree claims (they may be metadata) */
	int rc = extent_tree_check(v, ino, in);
	if (rc == 0 && ext2fs_inode_has_valid_blocks2(v->fs, (struct ext2_inode *)in))
		rc = extent_punch(v, ino, in, 0, ~0ull);
	if (rc == 0 && ext2fs_file_acl_block(v->fs, (struct ext2_inode *)in)) {
		errcode_t e = ext2fs_free_ext_attr(v->fs, ino, in);
		if (e)
			rc = -errcode_to_errno(e);
	}
	if (rc) {
		csvfs_log(LOG_ERR_L, "inode %u: freeing blocks failed: %s", ino, strerror(-rc));
		return rc;
	}
	int is_dir = LINUX_S_ISDIR(in->i_mode);
	in->i_links_count = 0;
	in->i_dtime = (uint32_t)now_ts().tv_sec;
	in->i_size = 0;
	in->i_size_high = 0;
	rc = inode_write(v, ino, in);
	if (rc == 0) {
		ext2fs_inode_alloc_stats2(v->fs, ino, -1, is_dir);
		volume_mark_dirty(v);
	}
	return rc;
}

/* The ext4 orphan chain: s_last_orphan -> i_dtime -> ... so that an unlinked
 * but open inode is freed by replay or the next mount after a crash. */
int orphan_add(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in)
{
	in->i_dtime = v->fs->super->s_last_orphan;
	v->fs->super->s_last_orphan = ino;
	ext2fs_mark_super_dirty(v->fs);
	volume_mark_dirty(v);
	return inode_write(v, ino, in);
}

int orphan_remove(struct volume *v, ext2_ino_t ino)
{
	struct ext2_inode_large cur;
	ext2_ino_t prev = 0, at = v->fs->super->s_last_orphan;
	for (unsigned hops = 0; at && hops < v->fs->super->s_inodes_count; hops++) {
		int rc = inode_read(v, at, &cur);
		if (rc)
			return rc;
		if (at == ino) {
			ext2_ino_t next = cur.i_dtime;
			if (prev == 0) {
				v->fs->super->s_last_orphan = next;
				ext2fs_mark_super_dirty(v->fs);
				volume_mark_dirty(v);
			} else {
				struct ext2_inode_large p;
				rc = inode_read(v, prev, &p);
				if (rc)
					return rc;
				p.i_dtime = next;
				rc = inode_write(v, prev, &p);
				if (rc)
					return rc;
			}
			cur.i_dtime = 0;
			return inode_write(v, ino, &cur);
		}
		prev = at;
		at = cur.i_dtime;
	}
	return -ENOENT;
}

/* At mount: finish what crashed processes left — free unlinked inodes. */
int orphan_process_all(struct volume *v)
{
	unsigned freed = 0;
	for (unsigned hops = 0; v->fs->super->s_last_orphan && hops < 1000000; hops++) {
		ext2_ino_t ino = v->fs->super->s_last_orphan;
		struct ext2_inode_large in;
		if (ino < EXT2_FIRST_INODE(v->fs->super) || ino > v->fs->super->s_inodes_count ||
		    inode_read(v, ino, &in) != 0) {
			csvfs_log(LOG_WARN_L, "orphan list: bad inode %u; dropping the rest of the list", ino);
			v->fs->super->s_last_orphan = 0;
			break;
		}
		v->fs->super->s_last_orphan = in.i_dtime;
		in.i_dtime = 0;
		int rc = in.i_links_count == 0 ? inode_free(v, ino, &in) : inode_write(v, ino, &in);
		if (rc && inode_known_bad(v, ino))
			continue;   /* corrupt (logged): left allocated for e2fsck, never freed */
		if (rc)
			return rc;
		freed++;
	}
	ext2fs_mark_super_dirty(v->fs);
	volume_mark_dirty(v);
	if (freed)
		csvfs_log(LOG_INFO_L, "orphan list: finished %u unlinked inodes", freed);
	return 0;
}

/* Under v->lock: the orphan list's inodes, in list order, at most
 * s_inodes_count of them (a loop in a corrupt list ends there). */
static int orphan_list_snapshot(struct volume *v, ext2_ino_t **out, size_t *n)
{
	size_t cap = 0;
	*out = NULL;
	*n = 0;
	for (ext2_ino_t at = v->fs->super->s_last_orphan; at && *n < v->fs->super->s_inodes_count;) {
		struct ext2_inode_large in;
		if (at < EXT2_FIRST_INODE(v->fs->super) || at > v->fs->super->s_inodes_count ||
		    inode_read(v, at, &in) != 0) {
			csvfs_log(LOG_WARN_L, "orphan list: bad inode %u; the rest of the list is left for e2fsck", at);
			break;
		}
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			ext2_ino_t *p = realloc(*out, cap * sizeof(*p));
			if (!p) {
				free(*out);
				*out = NULL;
				*n = 0;
				return -ENOMEM;
			}
			*out = p;
		}
		(*out)[(*n)++] = at;
		at = in.i_dtime;
	}
	return 0;
}

/* Under v->lock: ino off the orphan list and freed, unless some open (this
 * node's, or one another node told this coordinator) still holds it.
 * Returns 1 when freed. */
static int orphan_finish_unopened(struct volume *v, ext2_ino_t ino)
{
	struct minode *m = minode_find(v, ino);
	int rc = 0;
	if (!m || m->open_count == 0) {
		struct ext2_inode_large in;
		rc = orphan_remove(v, ino);
		if (rc == 0)
			rc = inode_read(v, ino, &in);
		if (rc == 0 && in.i_links_count == 0) {
			rc = inode_free(v, ino, &in);
			if (rc == 0 && m) {   /* as inode_drop_link: a later open must not find it */
				pthread_mutex_lock(&v->table_lock);
				table_remove_locked(v, m);
				pthread_mutex_unlock(&v->table_lock);
			}
			rc = rc ? rc : 1;
		}
	}
	minode_put(v, m);
	return rc;
}

int volume_end_takeover(struct volume *v)
{
	pthread_mutex_lock(&v->lock);
	if (!v->takeover || !v->fs || v->read_only || volume_refuses_changes(v)) {
		pthread_mutex_unlock(&v->lock);
		return 0;
	}
	/* From here meta_open refuses an unlinked file nobody has open. */
	v->takeover = 0;
	ext2_ino_t *inos;
	size_t n;
	int rc = orphan_list_snapshot(v, &inos, &n);
	unsigned freed = 0, kept = 0;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		int r = orphan_finish_unopened(v, inos[i]);
		if (r < 0 && inode_known_bad(v, inos[i]))
			continue;   /* corrupt (logged): left allocated for e2fsck, never freed */
		if (r < 0)
			rc = r;
		else if (r)
			freed++;
		else
			kept++;
	}
	pthread_mutex_unlock(&v->lock);
	free(inos);
	if (rc)
		csvfs_log(LOG_ERR_L, "volume %s: freeing the orphans no node reopened after the takeover "
			  "failed: %s", v->uuid, strerror(-rc));
	else if (freed)
		csvfs_log(LOG_INFO_L, "volume %s: freed %u unlinked inode(s) whose openers died with the "
			  "previous coordinator; %u still open", v->uuid, freed, kept);
	return rc ? rc : (int)freed;
}

int inode_drop_link(struct volume *v, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	int rc = inode_read(v, ino, &in);
	if (rc)
		return rc;
	if (in.i_links_count == 0)   /* freeing it would free a linked inode */
		return inode_corrupt(v, ino, "links_count is 0 but a directory entry names it");
	in.i_links_count--;
	inode_set_time(v, &in, TIME_C, now_ts());
	if (in.i_links_count > 0)
		return inode_write(v, ino, &in);
	/* A reference, not a peek: a release elsewhere may drop the last one
	 * at any moment (minode_put takes no v->lock). */
	struct minode *m = minode_find(v, ino);
	if (m && m->open_count > 0) {
		minode_put(v, m);
		return orphan_add(v, ino, &in);
	}
	rc = inode_free(v, ino, &in);
	/* Someone may hold a reference without an open (an open on its way
	 * to meta_open, a stat, a truncate): that minode names a freed inode
	 * now. Out of the table with it, so that meta_open refuses it and a
	 * create that reuses the number gets a fresh one. */
	if (rc == 0 && m) {
		pthread_mutex_lock(&v->table_lock);
		table_remove_locked(v, m);
		pthread_mutex_unlock(&v->table_lock);
	}
	minode_put(v, m);
	return rc;
}

/* ---- setattr ----------------------------------------------------------- */

static int truncate_locked(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			   uint64_t size, struct minode *m);

int meta_setattr(struct volume *v, ext2_ino_t ino, const struct meta_setattr *sa,
		 struct meta_attr *out)
{
	struct minode *m = NULL;
	if (sa->valid & META_SET_SIZE) {
		/* Blocks may be freed: no I/O may use a mapping meanwhile. */
		m = minode_get(v, ino);
		if (!m)
			return -ENOENT;
		pthread_rwlock_wrlock(&m->io_lock);
	}
	struct ext2_inode_large in;
	struct timespec now = now_ts();
	pthread_mutex_lock(&v->lock);
	int rc = volume_refuses_changes(v) ? -EROFS : inode_read(v, ino, &in);
	if (rc == 0 && (sa->valid & META_SET_SIZE) && !LINUX_S_ISREG(in.i_mode))
		rc = LINUX_S_ISDIR(in.i_mode) ? -EISDIR : -EINVAL;
	if (rc == 0)
		rc = inode_lock_writes(v, ino, 0, 0, 0);
	if (rc == 0 && (sa->valid & META_SET_MODE))
		in.i_mode = (uint16_t)((in.i_mode & LINUX_S_IFMT) | (sa->mode & 07777));
	if (rc == 0 && (sa->valid & META_SET_UID)) {
		in.i_uid = (uint16_t)sa->uid;
		in.osd2.linux2.l_i_uid_high = (uint16_t)(sa->uid >> 16);
	}
	if (rc == 0 && (sa->valid & META_SET_GID)) {
		in.i_gid = (uint16_t)sa->gid;
		in.osd2.linux2.l_i_gid_high = (uint16_t)(sa->gid >> 16);
	}
	if (rc == 0 && (sa->valid & META_SET_SIZE)) {
		rc = truncate_locked(v, ino, &in, sa->size, m);
		if (rc == 0 && !(sa->valid & (META_SET_MTIME | META_SET_MTIME_NOW)))
			inode_set_time(v, &in, TIME_M, now);
	}
	if (rc == 0) {
		struct minode *live = minode_find(v, ino);
		if (live && live->times_dirty) {
			inode_set_time(v, &in, TIME_M, live->mtime);
			live->times_dirty = 0;
		}
		minode_put(v, live);
		if (sa->valid & META_SET_ATIME_NOW)
			inode_set_time(v, &in, TIME_A, now);
		else if (sa->valid & META_SET_ATIME)
			inode_set_time(v, &in, TIME_A, sa->atime);
		if (sa->valid & META_SET_MTIME_NOW)
			inode_set_time(v, &in, TIME_M, now);
		else if (sa->valid & META_SET_MTIME)
			inode_set_time(v, &in, TIME_M, sa->mtime);
		inode_set_time(v, &in, TIME_C, (sa->valid & META_SET_CTIME) ? sa->ctime : now);
		rc = inode_write(v, ino, &in);
	}
	if (rc == 0 && out)
		inode_to_attr(v, ino, &in, out);
	reply_record(v, rc, ino, in.i_generation);
	pthread_mutex_unlock(&v->lock);
	if (m) {
		pthread_rwlock_unlock(&m->io_lock);
		minode_put(v, m);
	}
	return rc;
}

static int truncate_locked(struct volume *v, ext2_ino_t ino, struct ext2_inode_large *in,
			   uint64_t size, struct minode *m)
{
	uint64_t old = m ? atomic_load(&m->size) : EXT2_I_SIZE(in);
	unsigned bs = v->blocksize;
	int rc = 0;
	if (size >= (1ull << 32) * bs)   /* e2fsck: an extent file stays below 2^32 blocks */
		return -EFBIG;
	if (size < old) {
		rc = extent_tree_check(v, ino, in);   /* frees nothing a corrupt tree claims */
		if (rc == 0 && size % bs)
			rc = extent_zero_in_block(v, ino, in, size, bs - size % bs);
		if (rc == 0)
			rc = extent_punch(v, ino, in, (size + bs - 1) / bs, ~0ull);
		if (m)
			m->spec_start = m->spec_end = 0;
	}
	if (rc)
		return rc;
	errcode_t e = ext2fs_inode_size_set(v->fs, (struct ext2_inode *)in, size);
	if (e)
		return -errcode_to_errno(e);
	if (m) {
		atomic_store(&m->size, size);
		minode_invalidate_map(m);
	}
	volume_mark_dirty(v);
	return 0;
}

/* ---- open, release, fsync ---------------------------------------------- */

/* Counts an open only of the file the caller looked up, checked under the
 * same hold of the volume lock: the caller found m (minode_get) before taking
 * the lock, and an unlink may have freed the inode since — its number may
 * even belong to a new file by now. Live: m is still the table's minode for
 * the number (an unlink that frees an inode takes its minode out), the inode
 * is allocated, has the generation the caller looked up, and has a link or
 * is already open (an unlinked file open elsewhere stays openable, e.g.
 * through /proc/PID/fd). After a takeover the orphans other nodes hold open
 * have no open counted here until those nodes reclaim them: live too, until
 * the reclaim window ends (volume_end_takeover).
 *
 * Not live is -ESTALE, not -ENOENT: the kernel's open(2) (do_filp_open)
 * walks the path again once with LOOKUP_REVAL on ESTALE, so the open ends as
 * on ext4 — ENOENT if the name is gone, or the file now under the name (for
 * O_CREAT a new one), where ENOENT would fail open(O_CREAT) of an existing
 * name. */
int meta_open(struct volume *v, struct minode *m, uint32_t generation, int truncate)
{
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	int rc = minode_is_current(v, m) ? inode_read(v, m->ino, &in) : -ESTALE;
	/* A freed inode keeps its mode: the bitmap tells. After a takeover an
	 * unlinked file is kept for the participants that reclaim their opens. */
	int freed = rc == 0 && (!ext2fs_test_inode_bitmap2(v->fs->inode_map, m->ino) ||
				(in.i_links_count == 0 && m->open_count == 0 && !v->takeover));
	if (freed || (rc == 0 && m->ino != EXT2_ROOT_INO && in.i_generation != generation))
		rc = -ESTALE;
	if (rc == 0) {
		m->open_count++;
		/* what this node reclaims its opens as if it hands the role on */
		m->generation = in.i_generation;
	}
	pthread_mutex_unlock(&v->lock);
	if (rc == 0 && truncate) {
		/* Counted first: an unlink meanwhile orphans the file instead
		 * of freeing it under the truncate. */
		struct meta_setattr sa = { .valid = META_SET_SIZE, .size = 0 };
		rc = meta_setattr(v, m->ino, &sa, NULL);
		if (rc)
			meta_release(v, m);
	}
	return rc;
}

/* Under v->lock: writes in-memory times back to the inode. */
static int flush_times(struct volume *v, struct minode *m, struct ext2_inode_large *in)
{
	if (!m->times_dirty)
		return 0;
	inode_set_time(v, in, TIME_M, m->mtime);
	inode_set_time(v, in, TIME_C, m->ctime);
	m->times_dirty = 0;
	return inode_write(v, m->ino, in);
}

/* Returns the blocks writes allocated ahead and never used (below EOF too:
 * unwritten blocks read as zeros, so a hole there reads the same). */
static int trim_speculative(struct volume *v, struct minode *m, struct ext2_inode_large *in)
{
	if (m->spec_end <= m->spec_start)
		return 0;
	int rc = extent_punch_unwritten(v, m->ino, in, m->spec_start, m->spec_end);
	m->spec_start = m->spec_end = 0;
	minode_invalidate_map(m);
	return rc;
}

int meta_release(struct volume *v, struct minode *m)
{
	struct ext2_inode_large in;
	/* Trimming frees blocks: exclude I/O that might still use a mapping. */
	pthread_rwlock_wrlock(&m->io_lock);
	pthread_mutex_lock(&v->lock);
	int rc = inode_read(v, m->ino, &in);
	/* The last close may free or trim: without the lock it does neither (an
	 * unlinked file stays an orphan, freed by the next mount or takeover) */
	int unlocked = rc == 0 && m->open_count == 1 ? inode_lock_writes(v, m->ino, 0, 0, 0) : 0;
	if (unlocked && --m->open_count == 0)
		rc = unlocked;
	else if (rc == 0 && m->open_count > 0 && --m->open_count == 0) {
		if (in.i_links_count == 0) {
			rc = orphan_remove(v, m->ino);
			if (rc == 0 || rc == -ENOENT)
				rc = inode_read(v, m->ino, &in);
			if (rc == 0)
				rc = inode_free(v, m->ino, &in);
			/* The inode number is free for the next create now, while
			 * m (its size, its map) lives on until the last reference
			 * goes: FUSE sends RELEASE after close() has returned, so
			 * a create can reuse the number before minode_put. It
			 * must get a fresh minode, not this one. */
			if (rc == 0) {
				pthread_mutex_lock(&v->table_lock);
				table_remove_locked(v, m);
				pthread_mutex_unlock(&v->table_lock);
			}
		} else {
			rc = flush_times(v, m, &in);
			if (rc == 0)
				rc = trim_speculative(v, m, &in);
		}
	}
	pthread_mutex_unlock(&v->lock);
	pthread_rwlock_unlock(&m->io_lock);
	return rc;
}

int meta_fsync(struct volume *v, struct minode *m, int datasync)
{
	struct ext2_inode_large in;
	pthread_mutex_lock(&v->lock);
	int rc = inode_read(v, m->ino, &in);
	if (rc == 0 && !datasync)
		rc = flush_times(v, m, &in);
	pthread_mutex_unlock(&v->lock);
	return rc ? rc : volume_sync(v);
}

void meta_touch_write(struct volume *v, struct minode *m)
{
	struct timespec now = now_ts();
	pthread_mutex_lock(&v->lock);
	m->mtime = now;
	m->ctime = now;
	m->times_dirty = 1;
	pthread_mutex_unlock(&v->lock);
}
