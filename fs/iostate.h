/* This node's I/O state for its volume (internal to fs; design.md §7,
 * docs/cluster.md "Redirected I/O"): direct, or redirected for a set of
 * reasons — its file data then goes through the coordinator (OP_LUN_*).
 * (paused and unavailable are the cluster's, fs/cluster.c.)
 *
 * Process-wide, like the LUN I/O gate it sits beside: one daemon serves one
 * volume over one path. Every reason has an end that does not depend on
 * anyone remembering it: a path failure ends when the prober has read the
 * path back PROBE_SUCCESSES times in a row; a user request ends at its
 * lease's deadline. Every transition is one log line (node and volume from
 * the log context, from, to, cause). */
#ifndef CSVFS_FS_IOSTATE_H
#define CSVFS_FS_IOSTATE_H

#include <stddef.h>
#include <stdint.h>

struct lun;

enum io_reason {
	IO_REASON_PATH = 1,           /* the node's path to the LUN failed */
	IO_REASON_USER = 2,           /* csvctl redirect on, until its lease ends */
	IO_REASON_SNAPSHOT = 4,       /* reserved: a snapshot in progress (issue 12) */
	IO_REASON_MAINTENANCE = 8,    /* reserved */
};
#define IO_REASONS_ALL 15u

#define IOSTATE_LEASE_DEFAULT_S (30 * 60)   /* csvctl redirect on, no --for */
#define IOSTATE_LEASE_MAX_S (24 * 60 * 60)

#define IOSTATE_PATH_TIMEOUT_DEFAULT_MS 5000   /* -o path_timeout=MS */

/* Starts the prober (path probes, lease expiry) for this node's data LUN;
 * block is a readable, aligned block size; a transfer longer than
 * path_timeout_ms (0: never) is a path failure — every LUN transfer of the
 * process from now on (lun_set_path_timeout), the coordinator's too. 0 or a
 * negative errno. */
int iostate_start(const struct lun *data_lun, unsigned block, unsigned path_timeout_ms);
/* The path timeout the data path's own transfers use (0: none). */
unsigned iostate_path_timeout_ms(void);
void iostate_stop(void);

/* 1 when this node's file data must go through the coordinator. */
int iostate_redirected(void);
/* 1 while this node's path has failed and not yet read back: such a node
 * does not take the coordinator role (fs/cluster_role.c). */
int iostate_path_down(void);
/* One probe read of the path now, on the caller's thread (bounded by the
 * path timeout): 1 if it fails too. A transfer error the path reads past
 * is the block's (a bad sector), not the path's. */
int iostate_path_confirm(void);
/* iostate_path_down(), or else one probe read now (bounded by the path
 * timeout): 1 if the path is down, and a failed probe puts this node in
 * path failure as a failed transfer would. For a node about to take the
 * coordinator role: an idle one may not have noticed its path fail. */
int iostate_path_check(void);
/* A transfer on this node's own LUN descriptor failed with err (negative
 * errno), which lun_error_is_path() says means the path (or -ETIMEDOUT: it
 * did not complete within the path timeout): redirect. */
void iostate_path_failed(const char *device, int err);
/* csvctl redirect on (seconds > 0: the lease) / off. 0, or -EINVAL with
 * the reason in err. */
int iostate_user_request(int on, unsigned seconds, char *err, size_t len);

/* The state as JSON fields for csvctl status, without braces:
 * "io_state":"direct|redirected","io_reasons":[...],"io_since":"...",
 * "io_redirect_until":"..."|null,
 * "io_last_path_error":{"device","errno","cause","at"}|null.
 * override (the cluster's "paused" / "unavailable") replaces io_state. */
void iostate_json(char *out, size_t len, const char *override);

/* A node's I/O state as it travels (OP_IO_STATE: each participant reports
 * its own to the coordinator, which answers with every node's), so that
 * csvctl status on any node shows every node's. Times are Unix ms. */
#define IO_DEVICE_MAX 256
struct io_report {
	uint32_t reasons;             /* enum io_reason bits */
	uint64_t since_ms;            /* the last transition */
	uint64_t lease_until_ms;      /* the user's lease ends; 0: none */
	uint32_t path_errno;          /* the last path error; 0: none seen */
	uint64_t path_at_ms;
	char path_dev[IO_DEVICE_MAX]; /* "" when path_errno is 0 */
};
/* This node's, now (an ended lease is gone first). */
void iostate_report(struct io_report *r);
/* The same JSON fields as iostate_json, for any node's report. */
void iostate_report_json(const struct io_report *r, char *out, size_t len, const char *override);
/* Changes at every transition of this node's state (a reason to report it). */
unsigned iostate_generation(void);

#endif
