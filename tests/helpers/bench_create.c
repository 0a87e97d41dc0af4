/* bench_create — metadata rates on a mounted filesystem, for the benchmarks
 * (tests/bench/cluster.sh). Not a test: it prints numbers.
 *
 *   bench_create create DIR [--count N] [--max-ms MS]
 *       open(DIR/f0000000.., O_CREAT|O_EXCL|O_WRONLY, 0644) + close, N times
 *       or until MS have passed. DIR must exist.
 *   bench_create stat DIR [--count N] [--max-ms MS] [--files K]
 *       stat() of DIR/f<i % K>, N times or until MS have passed (K: the
 *       number of files "create" made; default: counts DIR/f* present).
 *   bench_create unlink DIR [--count N] [--max-ms MS]
 *       unlink(DIR/f0000000..) until ENOENT, N or MS.
 *
 * Output: one line
 *   result OP n=N secs=S rate=OPS_PER_S p50=MS p99=MS max=MS
 * Exit: 0 ok, 1 an operation failed (errno printed), 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return v[k - 1];
}

static int usage(void)
{
	fprintf(stderr, "usage: bench_create create|stat|unlink DIR [--count N] [--max-ms MS] [--files K]\n");
	return 2;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return usage();
	const char *op = argv[1], *dir = argv[2];
	long count = 1000000, files = 0;
	double max_ms = 10000;
	for (int i = 3; i < argc; i++) {
		if (i + 1 >= argc)
			return usage();
		if (!strcmp(argv[i], "--count"))
			count = atol(argv[++i]);
		else if (!strcmp(argv[i], "--max-ms"))
			max_ms = atof(argv[++i]);
		else if (!strcmp(argv[i], "--files"))
			files = atol(argv[++i]);
		else
			return usage();
	}
	int kind = !strcmp(op, "create") ? 0 : !strcmp(op, "stat") ? 1 : !strcmp(op, "unlink") ? 2 : -1;
	if (kind < 0 || count <= 0)
		return usage();
	char path[4096];
	if (kind == 1 && files <= 0) {
		for (files = 0; files < 10000000; files++) {
			struct stat st;
			snprintf(path, sizeof(path), "%s/f%07ld", dir, files);
			if (stat(path, &st) != 0)
				break;
		}
		if (files == 0) {
			fprintf(stderr, "bench_create: no %s/f0000000\n", dir);
			return 1;
		}
	}
	size_t cap = count < 2000000 ? (size_t)count : 2000000;
	double *v = malloc(cap * sizeof(double));
	if (!v)
		return 1;
	size_t n = 0;
	int rc = 0;
	double t_start = now_ms(), end = t_start + max_ms;
	for (long i = 0; i < count && n < cap; i++) {
		double t0 = now_ms();
		if (t0 >= end)
			break;
		snprintf(path, sizeof(path), "%s/f%07ld", dir, kind == 1 ? i % files : i);
		if (kind == 0) {
			int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
			if (fd < 0 || close(fd) != 0) {
				fprintf(stderr, "bench_create: create %s: %s\n", path, strerror(errno));
				rc = 1;
				break;
			}
		} else if (kind == 1) {
			struct stat st;
			if (stat(path, &st) != 0) {
				fprintf(stderr, "bench_create: stat %s: %s\n", path, strerror(errno));
				rc = 1;
				break;
			}
		} else {
			if (unlink(path) != 0) {
				if (errno != ENOENT) {
					fprintf(stderr, "bench_create: unlink %s: %s\n", path, strerror(errno));
					rc = 1;
				}
				break;
			}
		}
		v[n++] = now_ms() - t0;
	}
	double secs = (now_ms() - t_start) / 1000.0;
	qsort(v, n, sizeof(*v), cmp_double);
	printf("result %s n=%zu secs=%.3f rate=%.1f p50=%.3f p99=%.3f max=%.3f\n", op, n, secs,
	       secs > 0 ? (double)n / secs : 0, pct(v, n, 50), pct(v, n, 99), n ? v[n - 1] : 0);
	free(v);
	return rc;
}
