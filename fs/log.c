/* Logging: one line per event, prefixed with node and volume, so a line read
 * alone in a cluster's merged logs says where it happened. */
#include "fs/log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int csvfs_verbose;

/* Set once at start-up before threads exist; read-only afterwards. */
static char log_node[64] = "local";
static char log_volume[64] = "-";

void csvfs_log_set_context(const char *node, const char *volume)
{
	if (node)
		snprintf(log_node, sizeof(log_node), "%s", node);
	if (volume)
		snprintf(log_volume, sizeof(log_volume), "%s", volume);
}

static const char *level_name(int level)
{
	switch (level) {
	case LOG_ERR_L: return "error";
	case LOG_WARN_L: return "warning";
	case LOG_INFO_L: return "info";
	default: return "debug";
	}
}

void csvfs_vlog(void *arg, int level, const char *fmt, va_list ap)
{
	(void)arg;
	if (level >= LOG_DEBUG_L && !csvfs_verbose)
		return;
	char msg[1024];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	/* One write per line keeps concurrent lines whole. */
	fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ csvfs[node=%s volume=%s] %s: %s\n",
		tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		ts.tv_nsec / 1000000, log_node, log_volume, level_name(level), msg);
}

void csvfs_log(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	csvfs_vlog(NULL, level, fmt, ap);
	va_end(ap);
}

void csvfs_log_limited(struct log_limit *ll, int level, const char *fmt, ...)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&ll->mu);
	if (now.tv_sec - ll->window >= LOG_LIMIT_INTERVAL) {
		ll->window = now.tv_sec;
		ll->in_window = 0;
	}
	int let_through = ll->in_window < LOG_LIMIT_BURST;
	unsigned long left_out = 0;
	if (let_through) {
		ll->in_window++;
		left_out = ll->suppressed;
		ll->suppressed = 0;
	} else {
		ll->suppressed++;
	}
	pthread_mutex_unlock(&ll->mu);
	if (!let_through)
		return;
	char msg[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (left_out)
		csvfs_log(level, "%s (and %lu more like it not logged: at most %u lines per %u s)", msg,
			  left_out, LOG_LIMIT_BURST, LOG_LIMIT_INTERVAL);
	else
		csvfs_log(level, "%s", msg);
}
