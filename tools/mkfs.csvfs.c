/* mkfs.csvfs — format a LUN (block device or image file) as a csvfs volume and
 * print its GUID. */
#include "fs/csvfs.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *to)
{
	fprintf(to, "usage: mkfs.csvfs [-L LABEL] [-U GUID] [-s SIZE] [-f] LUN\n"
		    "  -L LABEL  volume label (at most 16 bytes)\n"
		    "  -U GUID   volume GUID (default: random)\n"
		    "  -s SIZE   create LUN as a sparse image of SIZE (K, M, G, T suffixes) if absent\n"
		    "  -f        overwrite an existing filesystem or partition table\n"
		    "  -h, --help  this help\n");
}

/* "10G" -> bytes; 0 on a malformed size. */
static unsigned long long parse_size(const char *s)
{
	char *end;
	errno = 0;
	unsigned long long n = strtoull(s, &end, 10);
	if (errno || end == s)
		return 0;
	unsigned shift = 0;
	switch (toupper((unsigned char)*end)) {
	case 0: break;
	case 'K': shift = 10; break;
	case 'M': shift = 20; break;
	case 'G': shift = 30; break;
	case 'T': shift = 40; break;
	default: return 0;
	}
	if (*end && end[1] && !(toupper((unsigned char)end[1]) == 'B' && !end[2]) &&
	    !(toupper((unsigned char)end[1]) == 'I' && toupper((unsigned char)end[2]) == 'B' && !end[3]))
		return 0;
	if (n > (~0ull >> shift))
		return 0;
	return n << shift;
}

int main(int argc, char **argv)
{
	struct csvfs_format_opts o = { 0 };
	static const struct option long_opts[] = { { "help", no_argument, NULL, 'h' }, { 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "L:U:s:fh", long_opts, NULL)) != -1) {
		switch (c) {
		case 'L': o.label = optarg; break;
		case 'U': o.uuid = optarg; break;
		case 's':
			o.create_size = parse_size(optarg);
			if (!o.create_size) {
				fprintf(stderr, "mkfs.csvfs: bad size '%s'\n", optarg);
				return 2;
			}
			break;
		case 'f': o.force = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (argc - optind != 1) {
		usage(stderr);
		return 2;
	}
	o.lun = argv[optind];
	char guid[37], err[1024];
	if (csvfs_format(&o, guid, err, sizeof(err)) != 0) {
		fprintf(stderr, "mkfs.csvfs: %s\n", err);
		return 1;
	}
	printf("%s\n", guid);
	return 0;
}
