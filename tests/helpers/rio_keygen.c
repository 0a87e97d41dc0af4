/* rio_keygen — creates cluster credentials for tests (the library calls that
 * `csvctl keygen` will use).
 *
 *   rio_keygen ca DIR [CLUSTER_NAME]          new cluster CA in DIR
 *   rio_keygen node CA_DIR NODE_DIR NAME      node certificate for NAME
 *   rio_keygen check DIR                      validate DIR, print the node name
 */
#include "redirect-io/rio.h"

#include <stdio.h>
#include <string.h>

static int usage(void)
{
	fprintf(stderr, "usage: rio_keygen ca DIR [CLUSTER] | node CA_DIR NODE_DIR NAME | check DIR\n");
	return 2;
}

int main(int argc, char **argv)
{
	char err[512] = "", node[RIO_NODE_NAME_MAX + 1];
	int rc;

	if (argc >= 3 && argc <= 4 && strcmp(argv[1], "ca") == 0) {
		rc = rio_cred_create_ca(argv[2], argc == 4 ? argv[3] : NULL, 0, err, sizeof(err));
	} else if (argc == 5 && strcmp(argv[1], "node") == 0) {
		rc = rio_cred_issue_node(argv[2], argv[3], argv[4], 0, err, sizeof(err));
	} else if (argc == 3 && strcmp(argv[1], "check") == 0) {
		rc = rio_cred_check(argv[2], node, sizeof(node), err, sizeof(err));
		if (rc == RIO_OK)
			printf("%s\n", node);
	} else {
		return usage();
	}
	if (rc != RIO_OK) {
		fprintf(stderr, "rio_keygen: %s\n", err[0] ? err : rio_strerror(rc));
		return 1;
	}
	return 0;
}
