/*
 * lockprobe — file locks as a test script takes them: runs a list of steps
 * on one open file and prints one line per step, so a test on another node
 * can compare what each node sees.
 *
 *   lockprobe [-r] FILE STEP...
 *
 * -r opens read-only (a write lock then fails with EBADF, as on ext4).
 * Steps (START and LEN in bytes; LEN 0 = to the end of the file):
 *   posix:KIND:START:LEN  fcntl F_SETLK    KIND r, w or u (unlock)
 *   posixw:KIND:START:LEN fcntl F_SETLKW   (blocks)
 *   ofd:KIND:START:LEN    fcntl F_OFD_SETLK
 *   ofdw:KIND:START:LEN   fcntl F_OFD_SETLKW
 *   get:KIND:START:LEN    fcntl F_GETLK;  prints "free" or "held KIND START LEN pid PID"
 *   ofdget:KIND:START:LEN fcntl F_OFD_GETLK
 *   flock:OP              flock(2): sh, ex, un, shnb, exnb
 *   sleep:MS              sleeps
 *   ready                 prints "ready" (a test waits for it)
 *   pid                   prints "pid N" (this process, for a test that kills it)
 *   until:PATH            waits (at most 10 minutes) until PATH exists
 *   write                 pwrites 4 KiB at offset 0 (fails with EIO once the
 *                         node lost the file's locks)
 * A lock step prints "ok" or the errno's name (EAGAIN, EINTR, ...); a
 * SETLKW that a signal (SIGALRM set by "alarm:SEC") interrupts prints EINTR.
 *   alarm:SEC             the next blocking step is interrupted after SEC s
 * Exit status: 0 when every step ran (whatever it printed), 2 on bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static void on_alarm(int sig)
{
	(void)sig;
}

static const char *errname(int e)
{
	switch (e) {
	case EAGAIN: return "EAGAIN";
	case EINTR: return "EINTR";
	case EBADF: return "EBADF";
	case EINVAL: return "EINVAL";
	case EIO: return "EIO";
	case ENOLCK: return "ENOLCK";
	case EDEADLK: return "EDEADLK";
	case EOVERFLOW: return "EOVERFLOW";
	default: return strerror(e);
	}
}

static int parse_range(const char *spec, struct flock *fl)
{
	char kind;
	long long start, len;
	if (sscanf(spec, "%c:%lld:%lld", &kind, &start, &len) != 3)
		return -1;
	memset(fl, 0, sizeof(*fl));
	fl->l_type = kind == 'r' ? F_RDLCK : kind == 'w' ? F_WRLCK : kind == 'u' ? F_UNLCK : -1;
	fl->l_whence = SEEK_SET;
	fl->l_start = (off_t)start;
	fl->l_len = (off_t)len;
	return fl->l_type == -1 ? -1 : 0;
}

static void print_lock(const struct flock *fl)
{
	if (fl->l_type == F_UNLCK)
		printf("free\n");
	else
		printf("held %c %lld %lld pid %d\n", fl->l_type == F_WRLCK ? 'w' : 'r',
		       (long long)fl->l_start, (long long)fl->l_len, (int)fl->l_pid);
}

static int fcntl_step(int fd, int cmd, const char *spec)
{
	struct flock fl;
	if (parse_range(spec, &fl))
		return -1;
	int rc = fcntl(fd, cmd, &fl);
	if (rc != 0)
		printf("%s\n", errname(errno));
	else if (cmd == F_GETLK || cmd == F_OFD_GETLK)
		print_lock(&fl);
	else
		printf("ok\n");
	return 0;
}

static int flock_step(int fd, const char *op)
{
	int how = strcmp(op, "sh") == 0 ? LOCK_SH : strcmp(op, "ex") == 0 ? LOCK_EX
		: strcmp(op, "un") == 0 ? LOCK_UN : strcmp(op, "shnb") == 0 ? LOCK_SH | LOCK_NB
		: strcmp(op, "exnb") == 0 ? LOCK_EX | LOCK_NB : -1;
	if (how < 0)
		return -1;
	printf("%s\n", flock(fd, how) == 0 ? "ok" : errname(errno));
	return 0;
}

static void wait_for(const char *path)
{
	for (int i = 0; i < 12000 && access(path, F_OK) != 0; i++)
		usleep(50000);
}

static int run_step(int fd, const char *s)
{
	static const struct { const char *prefix; int cmd; } fcntls[] = {
		{ "posix:", F_SETLK }, { "posixw:", F_SETLKW }, { "ofd:", F_OFD_SETLK },
		{ "ofdw:", F_OFD_SETLKW }, { "get:", F_GETLK }, { "ofdget:", F_OFD_GETLK },
	};
	for (size_t i = 0; i < sizeof(fcntls) / sizeof(fcntls[0]); i++) {
		size_t n = strlen(fcntls[i].prefix);
		if (strncmp(s, fcntls[i].prefix, n) == 0)
			return fcntl_step(fd, fcntls[i].cmd, s + n);
	}
	if (strncmp(s, "flock:", 6) == 0)
		return flock_step(fd, s + 6);
	if (strncmp(s, "sleep:", 6) == 0)
		return usleep((useconds_t)atoi(s + 6) * 1000u), 0;
	if (strncmp(s, "alarm:", 6) == 0)
		return alarm((unsigned)atoi(s + 6)), 0;
	if (strcmp(s, "ready") == 0)
		return printf("ready\n"), 0;
	if (strcmp(s, "pid") == 0)
		return printf("pid %d\n", (int)getpid()), 0;
	if (strncmp(s, "until:", 6) == 0)
		return wait_for(s + 6), 0;
	if (strcmp(s, "write") == 0) {
		static char buf[4096];
		printf("%s\n", pwrite(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf) ? "ok" : errname(errno));
		return 0;
	}
	return -1;
}

int main(int argc, char **argv)
{
	int ro = argc > 1 && strcmp(argv[1], "-r") == 0;
	if (argc < 3 + ro) {
		fprintf(stderr, "usage: lockprobe [-r] FILE STEP...\n");
		return 2;
	}
	struct sigaction sa = { .sa_handler = on_alarm };   /* no SA_RESTART: EINTR */
	sigaction(SIGALRM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	int fd = open(argv[1 + ro], ro ? O_RDONLY : O_RDWR | O_CREAT, 0644);
	if (fd < 0) {
		fprintf(stderr, "lockprobe: %s: %s\n", argv[1 + ro], strerror(errno));
		return 2;
	}
	for (int i = 2 + ro; i < argc; i++) {
		if (run_step(fd, argv[i]) != 0) {
			fprintf(stderr, "lockprobe: bad step %s\n", argv[i]);
			return 2;
		}
	}
	close(fd);
	return 0;
}
