/* The metadata operations carried over redirect-io (internal to fs): one
 * table of operations (proto_op: code, name, idempotent or not, request
 * codec, reply codec) that mirrors docs/protocol.md's "Operations" table row
 * for row, and the codecs of the structures the payloads share.
 *
 * Requests and replies are built only with the bounds-checked rio_put_* /
 * rio_get_* helpers. A request decoder refuses every field out of range
 * (an inode number that is neither the root nor an ordinary inode, a name
 * too long, unknown flag bits, a block range past ext4's limits, ...) as it
 * refuses a short read: the reader fails, and proto_decode_request says so.
 * A RESPONSE's status is 0 or a positive errno; an error reply has no fields.
 *
 * Adding an operation: an OP_ code, a row in proto.c's OPS (with a request
 * shape below, new or shared, and its codec), a client call in fsops.c, a
 * handler in server.c, a row in docs/protocol.md (test_proto checks the
 * table against it). */
#ifndef CSVFS_FS_PROTO_H
#define CSVFS_FS_PROTO_H

#include "fs/iostate.h"
#include "fs/meta.h"
#include "fs/plock.h"
#include "redirect-io/rio.h"

#include <stdbool.h>

enum csv_op {
	OP_LOOKUP = 1, OP_GETATTR = 2, OP_SETATTR = 3, OP_CREATE = 4, OP_SYMLINK = 5,
	OP_LINK = 6, OP_UNLINK = 7, OP_RMDIR = 8, OP_RENAME = 9, OP_READLINK = 10,
	OP_READDIR = 11, OP_STATFS = 12, OP_GETXATTR = 13, OP_LISTXATTR = 14,
	OP_SETXATTR = 15, OP_REMOVEXATTR = 16, OP_OPEN = 17, OP_RELEASE = 18,
	OP_FSYNC = 19, OP_MAP = 20, OP_ALLOC = 21, OP_COMMIT = 22, OP_TOUCH = 23,
	OP_FALLOCATE = 24, OP_SEEK = 25, OP_SYNCFS = 26, OP_MOVE = 27, OP_READDIRPLUS = 28,
	OP_CREATE_OPEN = 29, OP_SETLK = 30, OP_GETLK = 31, OP_UNLOCK_ALL = 32, OP_LKWAIT = 33,
	OP_RECLAIM_DONE = 34,
	OP_SNAPSHOT = 40, OP_SNAPSHOT_ABORT = 41, OP_SNAPSHOT_REPORT = 42,
	/* redirected I/O (design.md §7): a participant's data through the coordinator */
	OP_LUN_READ = 50, OP_LUN_WRITE = 51, OP_LUN_FLUSH = 52,
	OP_IO_STATE = 53, OP_REDIRECT = 54,
	/* volume maintenance (docs/volumes.md) */
	OP_MAINTENANCE = 60, OP_GROW = 61,
	/* exactly once (docs/cluster.md "Exactly once"): a change with its request id */
	OP_ONCE = 70,
	OP_MAX_ = 71
};

#define PROTO_NAME_MAX 256      /* a file name with its NUL */
#define PROTO_PATH_MAX 4097     /* a symlink target with its NUL */
#define PROTO_XATTR_MAX 65536   /* an xattr value or list */
#define PROTO_READDIR_BYTES (1u << 20)
#define PROTO_ALLOC_MAX (1u << 20)   /* blocks one ALLOC may ask for */
/* An extent file's size stays below 2^32 blocks of 4 KiB (e2fsck: "i_size
 * is 17592186044416, should be ..."). */
#define PROTO_FILE_SIZE_MAX ((1ull << 44) - 1)
/* One redirected transfer: at most 1 MiB of data (the data path's chunk), so
 * a frame stays small and several of a node's transfers are in flight at once. */
#define PROTO_LUN_IO_MAX (1u << 20)
#define PROTO_LUN_BLOCK_MAX (1ull << 48)   /* a LUN block number (ext4 64bit) */

/* ---- requests: one struct per shape, named in the OPS table --------------- */

struct proto_inode { uint32_t ino; };                 /* GETATTR READLINK RELEASE TOUCH */
struct proto_ino_name { uint32_t ino; const char *name; };  /* LOOKUP UNLINK RMDIR REMOVEXATTR */
struct proto_setattr { uint32_t ino; struct meta_setattr sa; };
struct proto_create {                                 /* CREATE CREATE_OPEN */
	uint32_t parent;
	const char *name;
	uint32_t mode, rdev;
	struct meta_cred cred;
};
struct proto_symlink { uint32_t parent; const char *name, *target; struct meta_cred cred; };
struct proto_link { uint32_t ino, newparent; const char *newname; };
struct proto_rename {
	uint32_t parent;
	const char *name;
	uint32_t newparent;
	const char *newname;
	uint32_t flags;             /* META_RENAME_* */
	struct meta_cred cred;      /* on the wire only with META_RENAME_WHITEOUT */
};
struct proto_readdir { uint32_t ino; uint64_t start; };    /* READDIR READDIRPLUS */
/* GETXATTR (name) and LISTXATTR (no name): size 0 asks for the length only. */
struct proto_xattr_get { uint32_t ino; const char *name; uint32_t size; };
struct proto_setxattr {
	uint32_t ino;
	const char *name;
	const void *value;          /* decoded: points into the payload */
	uint32_t size, flags;       /* flags: META_XATTR_CREATE / REPLACE */
};
struct proto_open { uint32_t ino; uint8_t truncate; uint32_t generation; };
struct proto_fsync { uint32_t ino; uint8_t datasync; };
struct proto_map { uint32_t ino; uint64_t lblk; };
struct proto_alloc { uint32_t ino; uint64_t lblk, len; };
struct proto_commit { uint32_t ino; uint64_t lblk, len, size; };
struct proto_fallocate { uint32_t ino, mode; uint64_t off, len; };
struct proto_seek { uint32_t ino; uint64_t off; uint32_t whence; };
struct proto_move { const char *target; };           /* "" = any node */
/* SETLK GETLK: a file lock; the node is the authenticated peer, never a field. */
struct proto_lock { struct plock l; uint8_t reclaim; };
struct proto_unlock_all { uint32_t ino; uint8_t by; uint64_t key; };   /* by: enum plock_by */
#define PROTO_LKWAIT_MAX_MS 1000
struct proto_lkwait { uint64_t gen; uint32_t timeout_ms; };
/* SNAPSHOT (the requester is the calling node) and SNAPSHOT_ABORT (name only). */
struct proto_snapshot { const char *name, *hook; uint32_t timeout_s; const char *new_guid; };
/* SNAPSHOT_REPORT: a node tells the coordinator that it froze (thawed 0) or
 * thawed (1), and what the freeze cost it: changes held, the longest wait,
 * how long it was frozen. The node is the authenticated peer. */
struct proto_snapshot_report { uint8_t thawed; uint32_t held; uint64_t longest_ms, frozen_ms; };
/* LUN_READ / LUN_WRITE: blocks [pblk, pblk+nblk) of the LUN, which the
 * sender's layout maps to [lblk, lblk+nblk) of inode ino; a write carries
 * the data (decoded: points into the payload; the coordinator checks that
 * len is nblk whole blocks). */
struct proto_lun_io {
	uint32_t ino, nblk;
	uint64_t lblk, pblk;
	const void *data;
	uint32_t len;
};

/* IO_STATE: the sender's own I/O state (fs/iostate.h). */
#define PROTO_TIME_MS_MAX (1ull << 47)   /* a Unix time in ms: past year 6000 */
struct proto_io_state { struct io_report r; };
/* REDIRECT: csvctl redirect on|off for another node ("": every node);
 * seconds: the lease (on: 1..IOSTATE_LEASE_MAX_S; off: 0). */
struct proto_redirect { const char *node; uint8_t on; uint32_t seconds; };

/* ONCE: a non-idempotent change (proto_op_once) named by its request id:
 * client (drawn by the sender's daemon at start), slot (< REPLY_SLOTS) and
 * seq (> 0); the change's own fields follow, in q's union. */
struct proto_once { uint64_t client; uint32_t slot, seq; uint16_t op; };

/* A request of any operation (STATFS and SYNCFS have no fields). Decoding
 * copies its strings into str[], which the const char * fields point to. */
struct proto_req {
	union {
		struct proto_inode inode;
		struct proto_ino_name ino_name;
		struct proto_setattr setattr;
		struct proto_create create;
		struct proto_symlink symlink;
		struct proto_link link;
		struct proto_rename rename;
		struct proto_readdir readdir;
		struct proto_xattr_get xattr_get;
		struct proto_setxattr setxattr;
		struct proto_open open;
		struct proto_fsync fsync;
		struct proto_map map;
		struct proto_alloc alloc;
		struct proto_commit commit;
		struct proto_fallocate fallocate;
		struct proto_seek seek;
		struct proto_move move;
		struct proto_lock lock;
		struct proto_unlock_all unlock_all;
		struct proto_lkwait lkwait;
		struct proto_snapshot snapshot;
		struct proto_snapshot_report snapshot_report;
		struct proto_lun_io lun_io;
		struct proto_io_state io_state;
		struct proto_redirect redirect;
	};
	struct proto_once once;     /* ONCE's id; the change's fields are in the union */
	char str[2][PROTO_PATH_MAX];
	char new_guid[37];          /* SNAPSHOT's */
};

/* ---- replies ---------------------------------------------------------------- */

struct proto_map_reply { struct meta_extent e; uint64_t size; };
/* GETXATTR / LISTXATTR: the length, and the bytes when the request's size
 * was not 0. Decoding points value into the payload and, when n <= size,
 * copies the bytes to buf (set buf and size before decoding). */
struct proto_xattr_reply {
	uint32_t len, n;
	const void *value;
	void *buf;
	size_t size;
};
/* One page of a directory: n entries (names allocated when decoded, freed
 * with meta_free_dirents); READDIRPLUS entries carry has_attr and attr. */
struct proto_dirents { uint8_t more; struct meta_dirent *d; size_t n; };
/* SETLK: granted (0: a conflicting lock is held); GETLK: found, and the
 * conflicting lock (pid 0 when its holder is on another node). gen: the
 * lock table's generation the answer was given at. */
struct proto_lock_reply { uint8_t yes; uint64_t gen; struct plock l; };
/* SNAPSHOT: how it went (error 0: taken; else a positive errno), always with
 * status 0 so that the cause travels with a failure. */
#define PROTO_SNAP_MESSAGE_MAX 1536
struct proto_snapshot_reply {
	uint32_t error;
	char message[PROTO_SNAP_MESSAGE_MAX];
	uint64_t wait_ms, frozen_ms, hook_ms;
	/* The longest a change waited at the gate on any node, which node, and
	 * how many nodes reported out of how many were asked. */
	uint64_t stall_ms;
	char stall_node[RIO_NODE_NAME_MAX + 1];
	uint32_t nodes_reported, nodes_expected;
	char guid[37];              /* the snapshot's GUID ("" when none was taken) */
};
/* SNAPSHOT_REPORT: the snapshot in progress on the coordinator (name ""
 * when none), so that a frozen node's status can name it. */
struct proto_snapshot_info {
	char name[PROTO_NAME_MAX];
	char requester[RIO_NODE_NAME_MAX + 1];
	int64_t since, deadline;
};

/* MAINTENANCE, GROW: done or begun (error 0), or why not (a positive errno
 * and the cause: MAINTENANCE, the open files by node), always with status 0
 * so that the cause travels. */
struct proto_maintenance_reply {
	uint32_t error;
	char message[PROTO_SNAP_MESSAGE_MAX];
};

/* LUN_READ: the blocks' bytes. Decoding points data into the payload and,
 * when len <= size, copies them to buf (set buf and size before decoding). */
struct proto_lun_data { const void *data; uint32_t len; void *buf; size_t size; };

/* IO_STATE: every node's I/O state the coordinator knows, its own among them;
 * age_ms: how long ago that node reported it (0 for the coordinator's own);
 * then a redirect asked of the sender by another node (REDIRECT), if any.
 * Decoding allocates nodes (freed with proto_free_reply). */
#define PROTO_IO_NODES_MAX 64
struct proto_io_node { char node[RIO_NODE_NAME_MAX + 1]; uint64_t age_ms; struct io_report r; };
enum proto_redirect_ask { PROTO_ASK_NONE = 0, PROTO_ASK_ON = 1, PROTO_ASK_OFF = 2 };
struct proto_io_states {
	uint32_t n;
	struct proto_io_node *nodes;
	uint8_t ask;                /* enum proto_redirect_ask */
	uint32_t ask_seconds;       /* PROTO_ASK_ON: the lease */
	uint8_t refuses_writes;     /* 1: the coordinator found corruption and, under
	                             * errors=remount-ro, refuses every change: the
	                             * participant stops writing data too */
};

union proto_reply {
	struct meta_attr attr;      /* LOOKUP GETATTR SETATTR CREATE SYMLINK LINK OPEN CREATE_OPEN */
	uint64_t u64;               /* COMMIT, FALLOCATE: the size; SEEK: the offset; LKWAIT: gen */
	char target[PROTO_PATH_MAX];    /* READLINK */
	struct statvfs statfs;
	struct proto_map_reply map;
	struct proto_xattr_reply xattr;
	struct proto_dirents dirents;   /* READDIR READDIRPLUS */
	struct proto_lock_reply lock;   /* SETLK GETLK */
	struct proto_snapshot_reply snapshot;
	struct proto_snapshot_info snapshot_info;   /* SNAPSHOT_REPORT */
	struct proto_maintenance_reply maintenance;   /* MAINTENANCE GROW */
	struct proto_lun_data lun_data; /* LUN_READ */
	struct proto_io_states io_states;  /* IO_STATE */
	/* ONCE: the wrapped change's reply, whole (decoded with that op's codec) */
	struct { const void *data; uint32_t len; } raw;
};

/* ---- the table ---------------------------------------------------------------- */

struct proto_op {
	uint16_t code;
	const char *name;           /* docs/protocol.md's name, in lower case (logs) */
	bool idempotent;            /* sent with RIO_CALL_IDEMPOTENT, never cached (protocol.md §7) */
	bool durable;               /* answered only once its change is in the journal */
	void (*put_req)(struct rio_writer *w, const struct proto_req *q);
	int (*get_req)(struct rio_reader *r, struct proto_req *q);
	void (*put_reply)(struct rio_writer *w, const union proto_reply *p);
	int (*get_reply)(struct rio_reader *r, union proto_reply *p);
	void (*free_reply)(union proto_reply *p);   /* NULL: nothing allocated */
};

/* The operation with this code, or NULL. */
const struct proto_op *proto_op(uint16_t code);
/* A change a participant sends wrapped in ONCE, so that a resend to a new
 * coordinator is answered from the reply table, not applied again. */
bool proto_op_once(uint16_t code);
/* This request of that op goes wrapped in ONCE (an OPEN only with O_TRUNC). */
bool proto_req_once(uint16_t code, const struct proto_req *q);
/* ONCE's request: the id, then q as id->op's request. */
void proto_put_once(struct rio_writer *w, const struct proto_once *id, const struct proto_req *q);
/* Its name for log lines ("?" if unknown). */
const char *proto_op_name(uint16_t code);
/* Whole payloads: every field decodes and is in range, no byte is left
 * over. 0 or a RIO_E_* code; a failed reply decode frees what it allocated. */
int proto_decode_request(const struct proto_op *o, const uint8_t *p, size_t len,
			 struct proto_req *q);
int proto_decode_reply(const struct proto_op *o, const uint8_t *p, size_t len,
		       union proto_reply *out);
void proto_free_reply(const struct proto_op *o, union proto_reply *p);

/* ---- the structures the payloads share (docs/protocol.md "Field types") ---- */

void proto_put_attr(struct rio_writer *w, const struct meta_attr *a);
int proto_get_attr(struct rio_reader *r, struct meta_attr *a);
void proto_put_setattr(struct rio_writer *w, const struct meta_setattr *sa);
int proto_get_setattr(struct rio_reader *r, struct meta_setattr *sa);
void proto_put_cred(struct rio_writer *w, const struct meta_cred *c);
int proto_get_cred(struct rio_reader *r, struct meta_cred *c);
void proto_put_extent(struct rio_writer *w, const struct meta_extent *e);
int proto_get_extent(struct rio_reader *r, struct meta_extent *e);
void proto_put_statfs(struct rio_writer *w, const struct statvfs *st);
int proto_get_statfs(struct rio_reader *r, struct statvfs *st);

#endif
