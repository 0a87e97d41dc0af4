/* What the unit tests that work on a scratch image share: where to put it,
 * and the independent check that it is consistent (e2fsck -fn). Static
 * functions: each test program is one .c file linked with libcsvfs.a. */
#ifndef CSVFS_TESTS_UNIT_SCRATCH_H
#define CSVFS_TESTS_UNIT_SCRATCH_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static inline const char *tmp_dir(void)
{
	const char *t = getenv("TMPDIR");
	return t && *t ? t : "/tmp";
}

/* e2fsck -fn must find nothing to fix; its output goes to stderr if it does. */
static inline int fsck_clean(const char *path)
{
	char log[PATH_MAX + 8], cmd[3 * PATH_MAX];
	snprintf(log, sizeof(log), "%s.fsck", path);
	snprintf(cmd, sizeof(cmd), "e2fsck -fn '%s' >'%s' 2>&1", path, log);
	int st = system(cmd);
	int ok = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	if (!ok) {
		fprintf(stderr, "e2fsck -fn %s: status %d\n", path, st == -1 ? -1 : WEXITSTATUS(st));
		snprintf(cmd, sizeof(cmd), "cat '%s' >&2", log);
		if (system(cmd) != 0)
			fprintf(stderr, "(no e2fsck log)\n");
	}
	unlink(log);
	return ok;
}

#endif
