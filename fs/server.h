/* The coordinator's side of the metadata protocol (fs/server.c): a
 * participant's request, decoded with the protocol's table (fs/proto.h),
 * runs in the engine (ops_local, fs/ops.h); the reply's fields are encoded
 * back. The caller (the cluster's rio handler, fs/cluster_role.c) has
 * checked the role once and keeps it for the request. */
#ifndef CSVFS_FS_SERVER_H
#define CSVFS_FS_SERVER_H

#include <stddef.h>
#include <stdint.h>

struct volume;
struct minode;
struct server;
struct rio_writer;

int server_create(struct volume *v, struct server **out);
/* Drops every open the other nodes held through this server. */
void server_destroy(struct server *s);
/* How OP_MOVE reaches the role code (unset: standalone, EOPNOTSUPP). */
typedef int (*server_move_fn)(void *arg, const char *target, char *err, size_t errlen);
void server_set_mover(struct server *s, server_move_fn move, void *arg);
/* One request from node: decodes, runs, encodes the reply fields into out;
 * returns the status (0 or a positive errno; EPROTO when it does not decode). */
int server_request(struct server *s, const char *node, const char *addr, uint16_t op,
		   const uint8_t *payload, uint32_t len, struct rio_writer *out);
/* The other nodes' opens, "NODE inode N" each, "; " between, into out;
 * returns how many. server_peer_opens_on: how many of them are on m (the
 * rest of m's engine opens are this node's own). */
unsigned server_describe_opens(struct server *s, char *out, size_t len);
unsigned server_peer_opens_on(struct server *s, const struct minode *m);
/* A fenced node's opens are closed (unlinked files it held are freed). */
void server_drop_node(struct server *s, const char *node);

#endif
