/* The LUN I/O gate (design.md §6, invariant 5): a node that lost quorum must
 * issue no LUN I/O after its deadline. Every LUN reader and writer of the
 * process (metadata cache, journal commits, MMP, the data path) passes the
 * gate first. Process-wide by nature — it models this node's one path to the
 * LUN — hence global state, guarded by its own mutex. */
#include "journal/journal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static _Atomic int gate_state = JOURNAL_GATE_OPEN;
static unsigned gate_inside;     /* I/Os between pass and done (gate_lock) */

void journal_gate_set(enum journal_gate state)
{
	pthread_mutex_lock(&gate_lock);
	atomic_store(&gate_state, state);
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
}

enum journal_gate journal_gate_get(void)
{
	return atomic_load(&gate_state);
}

int journal_gate_enter(void)
{
	if (atomic_load(&gate_state) == JOURNAL_GATE_OPEN) {
		pthread_mutex_lock(&gate_lock);
		if (atomic_load(&gate_state) == JOURNAL_GATE_OPEN) {
			gate_inside++;
			pthread_mutex_unlock(&gate_lock);
			return 0;
		}
		pthread_mutex_unlock(&gate_lock);
	}
	pthread_mutex_lock(&gate_lock);
	while (atomic_load(&gate_state) == JOURNAL_GATE_PAUSED)
		pthread_cond_wait(&gate_cond, &gate_lock);
	int rc = atomic_load(&gate_state) == JOURNAL_GATE_OPEN ? 0 : -EIO;
	if (rc == 0)
		gate_inside++;
	pthread_mutex_unlock(&gate_lock);
	return rc;
}

void journal_gate_leave(void)
{
	pthread_mutex_lock(&gate_lock);
	if (--gate_inside == 0)
		pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
}

void journal_gate_drain(void)
{
	pthread_mutex_lock(&gate_lock);
	while (gate_inside)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
}
