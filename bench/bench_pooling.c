/*
 * bench_pooling — what the pool and the lab's API path cost, beside pgbench in the same run.
 *
 *   1. pool_acquire + pool_release with an idle connection ready: the pool's own overhead.
 *   2. pgbench -S -c 16 over TCP against the same server: the baseline.
 *   3. the lab's HTTP API (/pooled?hold_ms=0: acquire, SELECT 1, release, JSON reply) at 16
 *      clients, and its throughput as a share of pgbench's: driven by wrk when it is installed
 *      (a dedicated load generator, as pgbench is), and by common/load.h in this process.
 * Target: the HTTP + pool path at 65% or more of pgbench's TPS (PgBouncer in transaction mode
 * reaches about 65% of direct on this machine). A benchmark, not a test: it reports, and exits 0
 * whether or not the target is met (2 when the server is unreachable or pgbench is missing).
 *
 * Run it: make bench, or build/bench_pooling [seconds per run, default 5].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lab.h"
#include "pg.h"
#include "api.h"
#include "pooling.h"

#define CLIENTS       16
#define TARGET_SHARE  0.65
#define ACQUIRE_PAIRS 1000000

struct pairs_ctx {
	struct pool *pool;
	long left;
};

static void pair_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct pairs_ctx *pc = arg;
	if (!conn) {
		fprintf(stderr, "bench_pooling: acquire failed: %s\n", err);
		pc->left = 0;
		return;
	}
	pool_release(conn);
}

/* ns per acquire + release pair, -1 on failure */
static double acquire_release_ns(const char *url, char *err, size_t errlen)
{
	struct event_base *base = event_base_new();
	struct pool_config pc = {.conninfo = url, .min_idle = 4, .max_size = 4, .acquire_timeout_ms = 1000};
	struct pool *pool = base ? pool_new(base, &pc, err, errlen) : NULL;
	double ns = -1;
	if (!pool || pool_wait_ready(pool, 10000, err, errlen) < 0)
		goto out;
	struct pairs_ctx ctx = {pool, ACQUIRE_PAIRS};
	uint64_t t0 = hist_now_us();
	for (long i = 0; i < ACQUIRE_PAIRS && ctx.left > 0; i++)
		pool_acquire(pool, "bench", pair_cb, &ctx);
	ns = (double)(hist_now_us() - t0) * 1000.0 / ACQUIRE_PAIRS;
out:
	pool_free(pool);
	if (base)
		event_base_free(base);
	return ns;
}

/* Runs pgbench -S against a schema of its own; tps, or -1 with err. */
static double pgbench_tps(const char *url, int seconds, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(url, err, errlen);
	if (!conn)
		return -1;
	double tps = -1;
	if (pg_schema_create(conn, "lab_bench", err, errlen) < 0)
		goto out;
	char cmd[1024];
	/* the URL goes through the environment, not the command line: it may hold a password */
	setenv("LAB_BENCH_URL", url, 1);
	snprintf(
	        cmd, sizeof(cmd),
	        "PGOPTIONS='-c search_path=lab_bench' pgbench -i -s 1 -q \"$LAB_BENCH_URL\" >/dev/null 2>&1 "
	        "&& "
	        "PGOPTIONS='-c search_path=lab_bench' pgbench -S -n -c %d -j 2 -T %d \"$LAB_BENCH_URL\" 2>&1",
	        CLIENTS, seconds);
	FILE *p = popen(cmd, "r");
	if (!p) {
		snprintf(err, errlen, "cannot run pgbench");
		goto out;
	}
	char line[512];
	while (fgets(line, sizeof(line), p))
		if (strncmp(line, "tps = ", 6) == 0)
			tps = atof(line + 6);
	if (pclose(p) != 0 || tps < 0)
		snprintf(err, errlen, "pgbench failed (is it installed? it ships with postgresql-client)");
out : {
	char drop_err[LAB_ERRLEN];
	pg_schema_drop(conn, "lab_bench", drop_err, sizeof(drop_err));
}
	PQfinish(conn);
	return tps;
}

/* wrk against the API: req/s, or -1 when wrk is not installed or failed. */
static double wrk_rps(int port, int seconds)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd),
	         "command -v wrk >/dev/null 2>&1 && wrk -t2 -c%d -d%ds "
	         "'http://127.0.0.1:%d/pooled?hold_ms=0' 2>&1",
	         CLIENTS, seconds, port);
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1;
	double rps = -1;
	char line[256];
	while (fgets(line, sizeof(line), p))
		if (strncmp(line, "Requests/sec:", 13) == 0)
			rps = atof(line + 13);
	if (pclose(p) != 0)
		return -1;
	return rps;
}

int main(int argc, char **argv)
{
	int seconds = argc > 1 ? atoi(argv[1]) : 5;
	if (seconds < 1 || seconds > 600) {
		fprintf(stderr, "usage: bench_pooling [seconds per run, 1..600]\n");
		return 2;
	}
	const char *url = pg_url_default();
	char err[LAB_ERRLEN] = "", redacted[256], b[4][32];
	pg_url_redact(url, redacted, sizeof(redacted));
	printf("bench_pooling — the pool's own cost, and the API path beside pgbench (%s, %d s a run)\n",
	       redacted, seconds);

	double ns = acquire_release_ns(url, err, sizeof(err));
	if (ns < 0) {
		fprintf(stderr, "bench_pooling: cannot reach PostgreSQL at %s: %s\n  start it: make up\n",
		        redacted, err);
		return 2;
	}
	printf("  pool acquire + release, idle connection ready: %.0f ns a pair (%d pairs)\n\n", ns,
	       ACQUIRE_PAIRS);

	err[0] = '\0';
	double tps = pgbench_tps(url, seconds, err, sizeof(err));
	if (tps < 0) {
		fprintf(stderr, "bench_pooling: %s\n", err);
		return 2;
	}

	struct pooling_config cfg;
	pooling_config_default(&cfg, true);
	cfg.pg_url = url;
	cfg.acquire_timeout_ms = 10000;
	/* as many server connections as pgbench has */
	struct pooling_api *api = pooling_api_start(&cfg, CLIENTS, 0, err, sizeof(err));
	if (!api) {
		fprintf(stderr, "bench_pooling: cannot start the API: %s\n", err);
		return 2;
	}
	struct load_result *res = calloc(1, sizeof(*res));
	struct load_config lc = {.port = pooling_api_port(api),
	                         .path = "/pooled?hold_ms=0",
	                         .clients = CLIENTS,
	                         .duration_ms = seconds * 1000};
	int rl = res ? load_run(&lc, res, err, sizeof(err)) : -1;
	double wrk = rl == 0 ? wrk_rps(pooling_api_port(api), seconds) : -1;
	pooling_api_stop(api, NULL);
	if (rl < 0) {
		fprintf(stderr, "bench_pooling: load failed: %s\n", err);
		free(res);
		return 2;
	}
	printf("  %-44s %7s %10s %10s\n", "", "clients", "req/s", "p99");
	printf("  %-44s %7d %10s %10s\n", "pgbench -S -c 16 -j 2 (TCP, 16 connections)", CLIENTS,
	       term_fmt_num(b[0], sizeof(b[0]), tps, 0), "");
	printf("  %-44s %7d %10s %10s\n", "HTTP API + pool, SELECT 1 (16 connections)", CLIENTS,
	       term_fmt_num(b[1], sizeof(b[1]), res->rps_2xx, 0),
	       term_fmt_us(b[2], sizeof(b[2]), (double)hist_percentile(&res->latency, 99)));
	if (wrk > 0)
		printf("  %-44s %7d %10s\n", "HTTP API + pool, SELECT 1, driven by wrk", CLIENTS,
		       term_fmt_num(b[3], sizeof(b[3]), wrk, 0));
	else
		printf("  (wrk is not installed: apt-get install wrk adds a dedicated HTTP load generator "
		       "here)\n");
	/* judged on the dedicated load generator when there is one, as pgbench is one */
	double best = wrk > res->rps_2xx ? wrk : res->rps_2xx;
	double share = best / tps;
	printf("\n  the HTTP + pool path reaches %.0f%% of pgbench's TPS (target %.0f%%: %s)\n", share * 100,
	       TARGET_SHARE * 100, share >= TARGET_SHARE ? "met" : "not met");
	if (res->errors || res->status_2xx != res->completed)
		printf("  note: %llu requests did not get 200\n",
		       (unsigned long long)(res->completed - res->status_2xx + res->errors));
	free(res);
	return 0;
}
