/* Test-only power-cut simulation. With CSVFS_FAULT_WRITE_LIMIT=N in the
 * environment, the first N writes to the LUN happen and every later one is
 * silently dropped (reported as done), as if power failed after write N while
 * the process ran on. Process-wide by nature (it models the one LUN the
 * process writes), hence a global: an atomic counter, set once.
 * At a normal exit (not kill -9) the process reports how many writes it
 * issued, so a test can spread its limits over a workload's writes
 * (tests/integration/powercut.sh calibrates with a limit it never reaches). */
#include "journal/journal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_once_t fault_once = PTHREAD_ONCE_INIT;
static long long fault_limit = -1;              /* written once under fault_once */
static atomic_llong fault_writes;
static atomic_int fault_announced;

static void fault_report(void)
{
	long long n = atomic_load(&fault_writes);
	fprintf(stderr, "csvfs: fault injection: %lld LUN writes issued, %lld dropped\n", n,
		n > fault_limit ? n - fault_limit : 0);
}

static void fault_init(void)
{
	const char *s = getenv("CSVFS_FAULT_WRITE_LIMIT");
	if (s && *s) {
		fault_limit = atoll(s);
		if (fault_limit >= 0)
			atexit(fault_report);
	}
}

int journal_fault_drop_write(void)
{
	pthread_once(&fault_once, fault_init);
	if (fault_limit < 0)
		return 0;
	if (atomic_fetch_add(&fault_writes, 1) < fault_limit)
		return 0;
	if (atomic_exchange(&fault_announced, 1) == 0)
		fprintf(stderr, "csvfs: fault injection: power cut after %lld LUN writes; "
			"later writes are dropped\n", fault_limit);
	return 1;
}
