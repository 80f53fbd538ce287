/*
 * bench_proxy — what the latency proxy itself adds to a round trip, beside direct ones in the
 * same run, so a lab's "1 ms of network" is 1 ms and not 1 ms plus the proxy.
 *
 *   1. SELECT 1 on one reused libpq connection against the real PostgreSQL, direct and through
 *      the proxy at zero delay, interleaved one for one so both see the same machine.
 *   2. one byte there and back against the echo server of tests/upstream.h, the same way.
 *   3. the echo again through the proxy at 1 ms + 1 ms: how close a set delay lands.
 * Target (issue 15): under 50 us added per round trip at p50 (Toxiproxy promises under 100 µs),
 * met or not said for each path. Beside it, what the proxy's thread cost per round trip, from
 * the kernel's accounting of that thread (/proc/self/task/TID/schedstat and status): time on a
 * CPU, time runnable but waiting for one (the machine's load, not the proxy), and sleeps (each
 * one a wake-up); and the load average, since on a shared 2-core machine the wait dominates.
 * A benchmark, not a test: it reports, and exits 0 whether or not the target is met (2 when
 * PostgreSQL is unreachable).
 *
 * Each path runs for the seconds given (default 1) and at least MIN_ROUND_TRIPS round trips.
 * Run it: make bench, or build/bench_proxy [seconds per path, default 1].
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hist.h"
#include "lab.h"
#include "pg.h"
#include "proxy.h"
#include "term.h"
#include "../tests/upstream.h"

/* 50 us: a tenth of the 0.5 ms delays the labs set, and half of what Toxiproxy promises. */
#define TARGET_ADDED_US 50.0
/* 1 ms each way: the round trip a same-region network costs, as the N+1 lab sets it. */
#define DELAY_EACH_WAY_US 1000
/* round trips before measuring: connections warm, caches and branch predictors settled */
#define WARMUP 200
/* "a few thousand each" even when the seconds run out first: p99 needs a hundred samples above it */
#define MIN_ROUND_TRIPS 3000
/* round trips behind the 1 ms + 1 ms delay: each costs 2 ms, so 500 is a second */
#define DELAYED_ROUND_TRIPS 500

/* SELECT 1 checked against PGRES_TUPLES_OK: its round trip in us, 0 on failure. */
static uint64_t pg_round_trip(PGconn *conn)
{
	uint64_t t0 = hist_now_us();
	PGresult *res = PQexec(conn, "SELECT 1");
	bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	PQclear(res);
	if (!ok)
		return 0;
	uint64_t rt = hist_now_us() - t0;
	return rt ? rt : 1;
}

static const struct term_col COLS[] = {
        {"round trip", 34, 'l'}, {"n", 7, 'r'}, {"p50", 9, 'r'}, {"p99", 9, 'r'}, {"mean", 9, 'r'}};

static void print_row(const struct term *t, const char *name, const struct hist *h)
{
	char b[4][32];
	const char *cells[] = {name, term_fmt_num(b[0], sizeof(b[0]), (double)h->count, 0),
	                       term_fmt_us(b[1], sizeof(b[1]), (double)hist_percentile(h, 50)),
	                       term_fmt_us(b[2], sizeof(b[2]), (double)hist_percentile(h, 99)),
	                       term_fmt_us(b[3], sizeof(b[3]), hist_mean_us(h))};
	term_table_row(t, 2, COLS, 5, cells);
}

static double added_p50(const struct hist *direct, const struct hist *proxied)
{
	return (double)hist_percentile(proxied, 50) - (double)hist_percentile(direct, 50);
}

/*
 * What the proxy's thread cost, from the kernel's own accounting of it: time on a CPU, time
 * runnable but waiting for one (a loaded machine), and how often it went to sleep (each is a
 * wake-up later). Where a round trip's added microseconds go, beside the clock's p50.
 */
struct thread_use {
	uint64_t run_ns, wait_ns, sleeps;
	bool ok;
};

/* The task directory of the thread named PROXY_THREAD_NAME into dir; false when none. */
static bool proxy_thread_dir(char *dir, size_t dirlen)
{
	DIR *d = opendir("/proc/self/task");
	bool found = false;
	for (struct dirent *e; d && !found && (e = readdir(d));) {
		char path[300], comm[32] = "";
		snprintf(dir, dirlen, "/proc/self/task/%s", e->d_name);
		snprintf(path, sizeof(path), "%s/comm", dir);
		FILE *f = e->d_name[0] == '.' ? NULL : fopen(path, "r");
		if (!f)
			continue;
		found = fgets(comm, sizeof(comm), f) && strcmp(comm, PROXY_THREAD_NAME "\n") == 0;
		fclose(f);
	}
	if (d)
		closedir(d);
	return found;
}

/* The proxy's thread now (schedstat and voluntary_ctxt_switches); u->ok false when unreadable. */
static void thread_use_read(struct thread_use *u)
{
	char dir[280], path[300], line[128];
	memset(u, 0, sizeof(*u));
	if (!proxy_thread_dir(dir, sizeof(dir)))
		return;
	snprintf(path, sizeof(path), "%s/schedstat", dir);
	FILE *f = fopen(path, "r");
	bool sched = f && fscanf(f, "%" SCNu64 " %" SCNu64, &u->run_ns, &u->wait_ns) == 2;
	if (f)
		fclose(f);
	snprintf(path, sizeof(path), "%s/status", dir);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "voluntary_ctxt_switches: %" SCNu64, &u->sleeps) == 1)
			u->ok = sched;
	if (f)
		fclose(f);
}

/* *u = now - *u, per round trip of n */
static void thread_use_since(struct thread_use *u, uint64_t n)
{
	struct thread_use now;
	thread_use_read(&now);
	if (!u->ok || !now.ok || n == 0) {
		u->ok = false;
		return;
	}
	u->run_ns = (now.run_ns - u->run_ns) / n;
	u->wait_ns = (now.wait_ns - u->wait_ns) / n;
	u->sleeps = (now.sleeps - u->sleeps) * 100 / n; /* in hundredths */
}

/*
 * Round trips on a and b, one for one, for at least `seconds` and MIN_ROUND_TRIPS pairs after
 * WARMUP, which goes first taking turns (neither always follows the other's wake-up). *use:
 * the proxy's thread per measured pair. 0, or -1 when one failed.
 */
static int measure_pairs(uint64_t (*rt)(void *), void *a, void *b, int seconds, struct hist *ha,
                         struct hist *hb, struct thread_use *use)
{
	uint64_t end = 0;
	hist_init(ha);
	hist_init(hb);
	for (long i = 0;; i++) {
		if (i == WARMUP) {
			end = hist_now_us() + (uint64_t)seconds * 1000000u;
			thread_use_read(use);
		}
		if (i > WARMUP && ha->count >= MIN_ROUND_TRIPS && hist_now_us() >= end) {
			thread_use_since(use, hb->count);
			return 0;
		}
		uint64_t ta = 0, tb = 0;
		if (i % 2 == 0)
			ta = rt(a), tb = rt(b);
		else
			tb = rt(b), ta = rt(a);
		if (!ta || !tb)
			return -1;
		if (i >= WARMUP) {
			hist_record(ha, ta);
			hist_record(hb, tb);
		}
	}
}

static uint64_t pg_rt_cb(void *conn)
{
	return pg_round_trip(conn);
}

static uint64_t echo_rt_cb(void *fd)
{
	return ping(*(int *)fd);
}

/* The round trips the bench measures: SELECT 1 and echo, direct and proxied; echo at 1 + 1 ms. */
struct bench {
	struct hist pd, pp, ed, ep, edelay;
	struct thread_use pg_use, echo_use; /* the proxy's thread per proxied round trip */
};

/* SELECT 1 direct and through a proxy, one for one; -1 with a message on stderr. */
static int bench_pg(const char *url, const char *redacted, int seconds, struct bench *b)
{
	char err[LAB_ERRLEN] = "", host[128], port_text[16];
	int pg_port = 0, ret = -1;
	struct proxy *proxy = NULL;
	PGconn *proxied = NULL, *direct = pg_connect(url, err, sizeof(err));

	if (!direct) {
		fprintf(stderr,
		        "bench_proxy: cannot connect to PostgreSQL at %s\n  server said: %s\n"
		        "  start it:    make up   (or docker compose up -d --wait, or set LAB_PG_URL)\n",
		        redacted, err);
		return -1;
	}
	if (pg_host_port(url, host, sizeof(host), &pg_port) != 0) {
		fprintf(stderr, "bench_proxy: cannot parse the PostgreSQL URL %s\n", redacted);
		goto out;
	}
	struct proxy_config pc = {.upstream_host = host, .upstream_port = pg_port};
	proxy = proxy_start(&pc, err, sizeof(err));
	if (!proxy) {
		fprintf(stderr, "bench_proxy: %s\n", err);
		goto out;
	}
	snprintf(port_text, sizeof(port_text), "%d", proxy_port(proxy));
	const char *const keys[] = {"host", "port", NULL}, *const vals[] = {"127.0.0.1", port_text, NULL};
	proxied = pg_connect_with(url, keys, vals, err, sizeof(err));
	if (!proxied) {
		fprintf(stderr, "bench_proxy: cannot connect to PostgreSQL through the proxy: %s\n", err);
		goto out;
	}
	if (measure_pairs(pg_rt_cb, direct, proxied, seconds, &b->pd, &b->pp, &b->pg_use) != 0) {
		pg_conn_error(direct, err, sizeof(err));
		fprintf(stderr, "bench_proxy: SELECT 1 failed (direct: %s)\n", err);
		goto out;
	}
	ret = 0;
out:
	PQfinish(proxied);
	PQfinish(direct);
	proxy_free(proxy);
	return ret;
}

/* One byte echoed direct and through a proxy, then behind 1 + 1 ms; -1 with a message. */
static int bench_echo(int seconds, struct bench *b)
{
	char err[LAB_ERRLEN] = "";
	int direct = -1, proxied = -1, ret = -1;
	struct proxy *proxy = NULL;
	struct upstream *echo = echo_start();

	if (!echo) {
		fprintf(stderr, "bench_proxy: cannot start the echo server: %s\n", strerror(errno));
		return -1;
	}
	struct proxy_config ec = {.upstream_port = echo->port};
	proxy = proxy_start(&ec, err, sizeof(err));
	if (!proxy) {
		fprintf(stderr, "bench_proxy: %s\n", err);
		goto out;
	}
	direct = client_connect(echo->port);
	proxied = client_connect(proxy_port(proxy));
	if (direct < 0 || proxied < 0 ||
	    measure_pairs(echo_rt_cb, &direct, &proxied, seconds, &b->ed, &b->ep, &b->echo_use) != 0) {
		fprintf(stderr, "bench_proxy: the echo round trips failed: %s\n", strerror(errno));
		goto out;
	}
	if (proxy_set_delay(proxy, DELAY_EACH_WAY_US, DELAY_EACH_WAY_US) != 0) {
		fprintf(stderr, "bench_proxy: proxy_set_delay failed\n");
		goto out;
	}
	hist_init(&b->edelay);
	for (int i = 0; i < DELAYED_ROUND_TRIPS; i++) {
		uint64_t rt = ping(proxied);
		if (!rt) {
			fprintf(stderr, "bench_proxy: the delayed echo failed: %s\n", strerror(errno));
			goto out;
		}
		hist_record(&b->edelay, rt);
	}
	ret = 0;
out:
	if (direct >= 0)
		close(direct);
	if (proxied >= 0)
		close(proxied);
	proxy_free(proxy);
	upstream_stop(echo);
	return ret;
}

/* One path's verdict: the p50 added, the target, and the proxy thread's share of it. */
static void report_path(const char *name, const struct hist *direct, const struct hist *proxied,
                        const struct thread_use *u)
{
	double added = added_p50(direct, proxied);
	printf("  %-9s %+4.0f µs at p50, %+.0f µs at p99", name, added,
	       (double)hist_percentile(proxied, 99) - (double)hist_percentile(direct, 99));
	if (u->ok)
		printf("; the proxy's thread: %.1f µs on a CPU, %.1f µs waiting for one, %" PRIu64
		       ".%02" PRIu64 " sleeps",
		       (double)u->run_ns / 1000.0, (double)u->wait_ns / 1000.0, u->sleeps / 100,
		       u->sleeps % 100);
	printf("\n  %-9s target under %.0f µs added at p50: %s\n", "", TARGET_ADDED_US,
	       added < TARGET_ADDED_US ? "met" : "not met");
}

static void bench_report(const struct bench *b)
{
	struct term t;
	term_init(&t, stdout);
	term_table_header(&t, 2, COLS, 5);
	print_row(&t, "SELECT 1, direct", &b->pd);
	print_row(&t, "SELECT 1, through the proxy", &b->pp);
	print_row(&t, "echo 1 byte, direct", &b->ed);
	print_row(&t, "echo 1 byte, through the proxy", &b->ep);
	char label[64];
	snprintf(label, sizeof(label), "echo, proxy at %d + %d µs", DELAY_EACH_WAY_US, DELAY_EACH_WAY_US);
	print_row(&t, label, &b->edelay);

	double delay_over = (double)hist_percentile(&b->edelay, 50) - (double)hist_percentile(&b->ep, 50) -
	                    2.0 * DELAY_EACH_WAY_US;
	printf("\n  added by the proxy per round trip (Toxiproxy promises under 100 µs):\n");
	report_path("SELECT 1:", &b->pd, &b->pp, &b->pg_use);
	report_path("echo:", &b->ed, &b->ep, &b->echo_use);
	printf("  a set delay of %d µs lands %+.0f µs from it at p50 (timer wake-up on a shared machine)\n",
	       2 * DELAY_EACH_WAY_US, delay_over);
	double load[1];
	if (getloadavg(load, 1) == 1)
		printf("  load average %.2f on %ld cores\n", load[0], sysconf(_SC_NPROCESSORS_ONLN));
}

int main(int argc, char **argv)
{
	int seconds = argc > 1 ? atoi(argv[1]) : 1;
	if (seconds < 1 || seconds > 600) {
		fprintf(stderr, "usage: bench_proxy [seconds per path, 1..600]\n");
		return 2;
	}
	const char *url = pg_url_default();
	char redacted[256];
	static struct bench b;

	pg_url_redact(url, redacted, sizeof(redacted));
	printf("bench_proxy — what the proxy adds to a round trip at zero delay (%s, %d s a path)\n\n",
	       redacted, seconds);
	fflush(stdout);
	if (bench_pg(url, redacted, seconds, &b) != 0 || bench_echo(seconds, &b) != 0)
		return 2;
	bench_report(&b);
	return 0;
}
