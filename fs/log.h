/* Logging (fs/log.c): one line per event, naming the node and the volume
 * (csvfs_log_set_context); -v adds the debug lines. */
#ifndef CSVFS_FS_LOG_H
#define CSVFS_FS_LOG_H

#include <pthread.h>
#include <stdarg.h>

enum { LOG_ERR_L = 3, LOG_WARN_L = 4, LOG_INFO_L = 6, LOG_DEBUG_L = 7 };
extern int csvfs_verbose; /* set once at start-up, read-only afterwards */
void csvfs_log_set_context(const char *node, const char *volume);
void csvfs_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void csvfs_vlog(void *arg, int level, const char *fmt, va_list ap);

/* A kind of line that can come in floods (an unauthenticated peer connecting
 * thousands of times a second): at most LOG_LIMIT_BURST lines per
 * LOG_LIMIT_INTERVAL seconds; the others are counted, and the next line let
 * through says how many were left out. One limiter per kind of line. */
#define LOG_LIMIT_BURST 10
#define LOG_LIMIT_INTERVAL 10
struct log_limit {
	pthread_mutex_t mu;
	long window;                   /* start of the current interval (monotonic s) */
	unsigned in_window;            /* lines let through in it */
	unsigned long suppressed;      /* left out since the last line let through */
};
#define LOG_LIMIT_INIT { PTHREAD_MUTEX_INITIALIZER, 0, 0, 0 }
void csvfs_log_limited(struct log_limit *ll, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
