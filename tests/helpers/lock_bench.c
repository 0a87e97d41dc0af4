/*
 * lock_bench — file lock latency as an application sees it (a benchmark
 * helper, not a test: it asserts nothing).
 *
 *   lock_bench lat FILE COUNT
 *       COUNT times an OFD write lock on byte 0 and its unlock, uncontended;
 *       prints "result lat count=N p50_us=.. p99_us=.. mean_us=.."
 *   lock_bench handoff FILE ROUNDS SHM ID
 *       two (or more) processes, each with its own ID, on any nodes of one
 *       machine, take turns on one write lock (F_OFD_SETLKW on byte 0),
 *       holding it 2 ms. SHM is a file on the host (not on the volume) both
 *       map: the releaser stamps the time of its unlock there, the next
 *       holder measures how long after that unlock its wait ended. Prints
 *       "result handoff id=ID handoffs=N p50_us=.. p99_us=.."
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct shared {
	volatile uint64_t released_ns;
	volatile uint32_t releaser;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);   /* one machine: one clock for every node */
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int lock_byte0(int fd, short type, int wait)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
	return fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void print_stats(const char *what, uint64_t *ns, size_t n)
{
	if (!n) {
		printf("result %s count=0\n", what);
		return;
	}
	qsort(ns, n, sizeof(*ns), cmp_u64);
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += (double)ns[i];
	printf("result %s count=%zu p50_us=%.1f p99_us=%.1f mean_us=%.1f\n", what, n,
	       (double)ns[n / 2] / 1e3, (double)ns[(n * 99) / 100] / 1e3, sum / (double)n / 1e3);
}

static int bench_lat(int fd, long count)
{
	uint64_t *ns = calloc((size_t)count, sizeof(*ns));
	if (!ns)
		return 1;
	for (long i = 0; i < count; i++) {
		uint64_t t0 = now_ns();
		if (lock_byte0(fd, F_WRLCK, 0) || lock_byte0(fd, F_UNLCK, 0)) {
			fprintf(stderr, "lock_bench: lock: %s\n", strerror(errno));
			return 1;
		}
		ns[i] = now_ns() - t0;
	}
	print_stats("lat", ns, (size_t)count);
	free(ns);
	return 0;
}

static int bench_handoff(int fd, long rounds, const char *shm_path, uint32_t id)
{
	int sfd = open(shm_path, O_RDWR | O_CREAT, 0600);
	if (sfd < 0 || ftruncate(sfd, sizeof(struct shared)) != 0)
		return 1;
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
	uint64_t *ns = calloc((size_t)rounds, sizeof(*ns));
	if (sh == MAP_FAILED || !ns)
		return 1;
	size_t n = 0;
	for (long i = 0; i < rounds; i++) {
		if (lock_byte0(fd, F_WRLCK, 1)) {
			fprintf(stderr, "lock_bench: wait: %s\n", strerror(errno));
			return 1;
		}
		uint64_t got = now_ns();
		if (sh->releaser && sh->releaser != id && got > sh->released_ns)
			ns[n++] = got - sh->released_ns;
		usleep(2000);
		sh->releaser = id;
		sh->released_ns = now_ns();
		lock_byte0(fd, F_UNLCK, 0);
		usleep(500);   /* the other side gets its turn */
	}
	char what[32];
	snprintf(what, sizeof(what), "handoff id=%u", id);
	print_stats(what, ns, n);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: lock_bench lat FILE COUNT | handoff FILE ROUNDS SHM ID\n");
		return 2;
	}
	int fd = open(argv[2], O_RDWR | O_CREAT, 0644);
	if (fd < 0) {
		fprintf(stderr, "lock_bench: %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	if (strcmp(argv[1], "lat") == 0)
		return bench_lat(fd, atol(argv[3]));
	if (strcmp(argv[1], "handoff") == 0 && argc == 6)
		return bench_handoff(fd, atol(argv[3]), argv[4], (uint32_t)atoi(argv[5]));
	fprintf(stderr, "lock_bench: unknown mode %s\n", argv[1]);
	return 2;
}
