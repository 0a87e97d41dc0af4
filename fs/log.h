/* Logging (fs/log.c): one line per event, naming the node and the volume
 * (csvfs_log_set_context); -v adds the debug lines. */
#ifndef CSVFS_FS_LOG_H
#define CSVFS_FS_LOG_H

#include <stdarg.h>

enum { LOG_ERR_L = 3, LOG_WARN_L = 4, LOG_INFO_L = 6, LOG_DEBUG_L = 7 };
extern int csvfs_verbose; /* set once at start-up, read-only afterwards */
void csvfs_log_set_context(const char *node, const char *volume);
void csvfs_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void csvfs_vlog(void *arg, int level, const char *fmt, va_list ap);

#endif
