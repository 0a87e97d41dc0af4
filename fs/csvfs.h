/* csvfs — public interface of the fs module: formatting a LUN and serving a
 * volume. Tools (mkfs.csvfs, csvctl) and the daemon's main() use only this.
 */
#ifndef CSVFS_CSVFS_H
#define CSVFS_CSVFS_H

#include <stddef.h>
#include <stdint.h>

#define CSVFS_DEFAULT_MOUNTPOINT "/ClusterStorage/Volume1"
#define CSVFS_MIN_LUN_BYTES (16ull << 20)

struct csvfs_format_opts {
	const char *lun;          /* block device or image file */
	const char *label;        /* NULL = none; at most 16 bytes */
	const char *uuid;         /* NULL = random; else a GUID string */
	uint64_t create_size;     /* create a sparse image of this size if absent (0 = don't) */
	int force;                /* overwrite an existing filesystem or partition table */
};

/* Formats the LUN as a csvfs volume (ext4: 64bit, extents, metadata_csum, resize_inode,
 * dir_index, internal journal, htree root). On success writes the volume GUID
 * (36 chars + NUL) into guid_out. Returns 0 or a negative errno with a message
 * naming the LUN and the cause in err. */
int csvfs_format(const struct csvfs_format_opts *opts, char guid_out[37],
		 char *err, size_t errlen);

/* Gives the volume on lun (a snapshot) a GUID of its own: new_guid, or a
 * random one when NULL; guid_out gets it. A volume in use is refused:
 * libext2fs's MMP check watches the MMP block as tune2fs does (about twice
 * the MMP interval). With CSVFS_GUID_FRESH_COPY the caller vouches that lun is
 * a copy it has just made and nobody has opened (a snapshot hook): no wait,
 * and the copy's MMP block is reset to clean. Only the superblock changes:
 * csvfs volumes carry metadata_csum_seed, so no checksum depends on the GUID
 * (a volume without it is refused: tune2fs -U rewrites every checksum). */
#define CSVFS_GUID_FRESH_COPY 1u
int csvfs_set_guid(const char *lun, const char *new_guid, unsigned flags, char guid_out[37],
		   char *err, size_t errlen);

/* Finds the LUN that holds volume GUID (libblkid; block devices only). */
int csvfs_find_lun_by_uuid(const char *guid, char *path, size_t pathlen,
			   char *err, size_t errlen);

/* The multi-mount protection state of a LUN, read from the LUN itself
 * (csvctl fsck): its volume GUID, whether anyone claims it, and who. */
struct csvfs_lun_mmp {
	char guid[37];
	int has_mmp;                /* the volume has the ext4 mmp feature */
	int clean;                  /* nobody claims it */
	int by_csvfs;               /* claimed by a csvfs coordinator (else e2fsck or a kernel) */
	char holder[65];            /* the claiming node's name */
};
int csvfs_lun_mmp(const char *lun, struct csvfs_lun_mmp *out, char *err, size_t errlen);
/* Marks the MMP block clean. Only for a claim that the cluster proved
 * stale (no daemon of the volume runs on any node of a quorate cluster). */
int csvfs_lun_mmp_clear(const char *lun, char *err, size_t errlen);

/* Sends one request ("status") to the daemon serving volume GUID and reads its
 * JSON reply. */
int csvfs_control_request(const char *guid, const char *request, char *reply, size_t len,
			  char *err, size_t errlen);

/* The same, waiting up to timeout_ms for the reply (a snapshot lasts). */
int csvfs_control_request_within(const char *guid, const char *request, char *reply, size_t len,
				 unsigned timeout_ms, char *err, size_t errlen);

/* Runs the daemon: parses argv the way mount helpers pass it, mounts, serves
 * until unmounted. Returns the process exit status. */
int csvfs_daemon_main(int argc, char **argv);

#endif
