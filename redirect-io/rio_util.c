/* Logging, clocks and threads for redirect-io. */
#include "redirect-io/rio_impl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

void rio_logf(const struct rio_logger *lg, enum rio_log_level lvl, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (lg && lg->fn) {
		lg->fn(lg->arg, lvl, line);
		return;
	}
	if (lvl <= RIO_LOG_INFO)
		fprintf(stderr, "%s\n", line);
}

void rio_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

uint64_t rio_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t rio_random_u64(void)
{
	uint64_t v = 0;

	/* Zero means "none" on the wire (client id, server instance). */
	while (v == 0) {
		if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			v = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)(uintptr_t)&v;
		}
	}
	return v;
}

int rio_thread_spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int rc;

	/* New threads inherit the creator's mask: block everything around the
	 * create so library threads never take SIGPIPE or the app's signals. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

void rio_cond_init(pthread_cond_t *c)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

int rio_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, uint64_t deadline_ms)
{
	struct timespec ts;

	if (rio_now_ms() >= deadline_ms)
		return ETIMEDOUT;
	ts.tv_sec = (time_t)(deadline_ms / 1000u);
	ts.tv_nsec = (long)(deadline_ms % 1000u) * 1000000L;
	return pthread_cond_timedwait(c, m, &ts);
}

void rio_sockaddr_str(const void *sa_any, char *out, size_t outlen)
{
	const struct sockaddr *sa = sa_any;
	char ip[INET6_ADDRSTRLEN] = "?";

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = sa_any;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(out, outlen, "%s:%u", ip, ntohs(s4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = sa_any;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(out, outlen, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else {
		snprintf(out, outlen, "?");
	}
}

/* ---- payload buffers ------------------------------------------------------ */

void rio_bufpool_init(struct rio_bufpool *p)
{
	pthread_mutex_init(&p->lock, NULL);
	p->nfree = 0;
}

void rio_bufpool_destroy(struct rio_bufpool *p)
{
	while (p->nfree)
		free(p->free_bufs[--p->nfree]);
	pthread_mutex_destroy(&p->lock);
}

static bool pooled(const struct rio_bufpool *p, uint32_t len)
{
	return p && len >= RIO_POOL_MIN_PAYLOAD && len <= RIO_POOL_BUF;
}

uint8_t *rio_payload_alloc(struct rio_bufpool *p, uint32_t len)
{
	void *buf = NULL;

	if (len == 0)
		return NULL;
	if (!pooled(p, len))
		return malloc(len);
	pthread_mutex_lock(&p->lock);
	if (p->nfree)
		buf = p->free_bufs[--p->nfree];
	pthread_mutex_unlock(&p->lock);
	if (!buf && posix_memalign(&buf, RIO_PAGE_SIZE, RIO_POOL_BUF) != 0)
		return NULL;
	return (uint8_t *)buf + RIO_POOL_BUF - len; /* ends on a page boundary */
}

void rio_payload_free(struct rio_bufpool *p, uint8_t *payload, uint32_t len)
{
	void *buf;

	if (!payload)
		return;
	if (!pooled(p, len)) {
		free(payload);
		return;
	}
	buf = payload + len - RIO_POOL_BUF;
	pthread_mutex_lock(&p->lock);
	if (p->nfree < RIO_POOL_KEEP) {
		p->free_bufs[p->nfree++] = buf;
		buf = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	free(buf);
}
