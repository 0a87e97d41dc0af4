/* rio_bench — the redirect-io transport alone, for docs/benchmarks-cluster.md
 * ("Redirected I/O: where the time goes"): a server and a client in one
 * process over loopback TLS (a fresh cluster CA and two node credentials in a
 * scratch directory), QD threads each keeping one bulk call in flight, as a
 * redirected participant's FUSE workers do.
 *
 *   rio_bench write|read [--size BYTES] [--qd N] [--seconds N] [--workers N]
 *
 * write: requests carry SIZE bytes (sent from the caller's writer, as
 * LUN_WRITE), the handler reads them once and answers empty; read: empty
 * requests, the handler answers SIZE bytes (copied into the reply, as
 * LUN_READ). Prints one line: MiB/s, calls, and the process's CPU time per
 * GiB moved (user + system: both ends, TLS, the loopback TCP), the figure
 * that does not depend on what else the machine runs.
 */
#include "redirect-io/rio.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

enum { OP_BULK_WRITE = 1, OP_BULK_READ = 2 };

static size_t chunk = 1u << 20;
static uint8_t *source;             /* what reads answer with */
static atomic_uint_fast64_t sink;   /* keeps the handler's reads of the data */

static int handler(void *arg, const struct rio_peer *peer, const struct rio_request *req,
		   struct rio_response *resp)
{
	uint64_t sum = 0;

	if (req->op == OP_BULK_WRITE) {
		for (uint32_t i = 0; i < req->len; i += 4096)
			sum += req->payload[i];
		atomic_fetch_add(&sink, sum);
		return 0;
	}
	uint8_t *p = rio_put_space(&resp->body, chunk);
	if (!p)
		return -1;
	memcpy(p, source, chunk);
	return 0;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
	       (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

struct caller {
	struct rio_client *cl;
	int write;
	double until;
	uint64_t calls;
	int failed;
};

static void *caller_main(void *arg)
{
	struct caller *c = arg;
	struct rio_writer w;

	rio_writer_init_frame(&w, 0);
	if (c->write) {
		uint8_t *p = rio_put_space(&w, chunk);
		if (p)
			memset(p, 0x5a, chunk);
	}
	while (now_s() < c->until && !c->failed) {
		struct rio_reply r;
		int rc = rio_client_call_writer(c->cl, c->write ? OP_BULK_WRITE : OP_BULK_READ,
						c->write ? 0 : RIO_CALL_IDEMPOTENT, &w, &r, 30000);
		if (rc != RIO_OK || (!c->write && r.len != chunk)) {
			fprintf(stderr, "rio_bench: call failed: %s\n", rio_strerror(rc));
			c->failed = 1;
		}
		rio_reply_free(&r);
		c->calls++;
	}
	rio_writer_free(&w);
	return NULL;
}

static int usage(void)
{
	fprintf(stderr, "usage: rio_bench write|read [--size BYTES] [--qd N] [--seconds N] [--workers N]\n");
	return 2;
}

int main(int argc, char **argv)
{
	unsigned qd = 8, seconds = 5, workers = 12;
	char dir[] = "/tmp/rio_bench.XXXXXX", ca[64], na[64], nb[64], err[512];

	if (argc < 2 || (strcmp(argv[1], "write") && strcmp(argv[1], "read")))
		return usage();
	int write = strcmp(argv[1], "write") == 0;
	for (int i = 2; i + 1 < argc; i += 2) {
		unsigned long v = strtoul(argv[i + 1], NULL, 0);
		if (!strcmp(argv[i], "--size") && v > 0 && v <= (1u << 20))
			chunk = v;
		else if (!strcmp(argv[i], "--qd") && v > 0 && v <= 64)
			qd = (unsigned)v;
		else if (!strcmp(argv[i], "--seconds") && v > 0 && v <= 600)
			seconds = (unsigned)v;
		else if (!strcmp(argv[i], "--workers") && v > 0 && v <= 64)
			workers = (unsigned)v;
		else
			return usage();
	}
	if (!mkdtemp(dir)) {
		perror("rio_bench: mkdtemp");
		return 1;
	}
	snprintf(ca, sizeof(ca), "%s/ca", dir);
	snprintf(na, sizeof(na), "%s/a", dir);
	snprintf(nb, sizeof(nb), "%s/b", dir);
	if (rio_cred_create_ca(ca, "bench", 0, err, sizeof(err)) ||
	    rio_cred_issue_node(ca, na, "node-a", 0, err, sizeof(err)) ||
	    rio_cred_issue_node(ca, nb, "node-b", 0, err, sizeof(err))) {
		fprintf(stderr, "rio_bench: credentials: %s\n", err);
		return 1;
	}
	source = malloc(chunk);
	if (!source)
		return 1;
	memset(source, 0xa5, chunk);
	struct rio_server_config sc = { .cred_dir = na, .handler = handler, .workers_per_conn = workers };
	struct rio_server *srv;
	if (rio_server_start(&sc, &srv, err, sizeof(err)) != RIO_OK) {
		fprintf(stderr, "rio_bench: server: %s\n", err);
		return 1;
	}
	struct rio_client_config cc = { .cred_dir = nb, .host = "127.0.0.1", .port = rio_server_port(srv) };
	struct rio_client *cl;
	if (rio_client_create(&cc, &cl, err, sizeof(err)) != RIO_OK ||
	    rio_client_wait_connected(cl, 5000, err, sizeof(err)) != RIO_OK) {
		fprintf(stderr, "rio_bench: client: %s\n", err);
		return 1;
	}
	struct caller *c = calloc(qd, sizeof(*c));
	pthread_t *t = calloc(qd, sizeof(*t));
	double t0 = now_s(), c0 = cpu_s();
	for (unsigned i = 0; i < qd; i++) {
		c[i] = (struct caller){ cl, write, t0 + seconds, 0, 0 };
		pthread_create(&t[i], NULL, caller_main, &c[i]);
	}
	uint64_t calls = 0;
	int failed = 0;
	for (unsigned i = 0; i < qd; i++) {
		pthread_join(t[i], NULL);
		calls += c[i].calls;
		failed |= c[i].failed;
	}
	double wall = now_s() - t0, cpu = cpu_s() - c0;
	double mib = (double)calls * (double)chunk / 1048576.0;
	printf("rio_bench %s size=%zu qd=%u workers=%u: %.0f MiB/s, %llu calls in %.1f s, "
	       "cpu %.2f s = %.0f ms per GiB\n", argv[1], chunk, qd, workers, mib / wall,
	       (unsigned long long)calls, wall, cpu, mib > 0 ? cpu * 1000.0 * 1024.0 / mib : 0.0);
	rio_client_destroy(cl);
	rio_server_stop(srv);
	free(c);
	free(t);
	free(source);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "rio_bench: could not remove %s\n", dir);
	return failed;
}
