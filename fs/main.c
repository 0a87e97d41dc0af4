/* csvfs: the per-node daemon that serves a csvfs volume through FUSE. */
#include "fs/csvfs.h"

int main(int argc, char **argv)
{
	return csvfs_daemon_main(argc, argv);
}
