/*
 * bench_proxy — what the latency proxy itself adds to a round trip, beside direct ones in the
 * same run, so a lab's "1 ms of network" is 1 ms and not 1 ms plus the proxy.
 *
 *   1. SELECT 1 on one reused libpq connection against the real PostgreSQL, direct and through
 *      the proxy at zero delay, interleaved one for one so both see the same machine.
 *   2. one byte there and back against an echo server in this program, the same way.
 *   3. the echo again through the proxy at 1 ms + 1 ms: how close a set delay lands.
 * Target: under 50 us added per round trip at p50 (Toxiproxy promises under 100 µs). A
 * benchmark, not a test: it reports, and exits 0 whether or not the target is met (2 when
 * PostgreSQL is unreachable).
 *
 * Run it: make bench, or build/bench_proxy [round trips per path, default 5000].
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hist.h"
#include "lab.h"
#include "pg.h"
#include "proxy.h"
#include "term.h"

/* 50 us: a tenth of the 0.5 ms delays the labs set, and half of what Toxiproxy promises. */
#define TARGET_ADDED_US 50.0
/* 1 ms each way: the round trip a same-region network costs, as the N+1 lab sets it. */
#define DELAY_EACH_WAY_US 1000
/* round trips before measuring: connections warm, caches and branch predictors settled */
#define WARMUP 200

/* The upstream for the pure-socket path: one connection at a time, every byte echoed back. */
struct echo {
	int listen_fd;
	int port;
	pthread_t tid;
};

static void *echo_main(void *arg)
{
	struct echo *e = arg;
	char buf[4096];
	for (;;) {
		int fd = accept(e->listen_fd, NULL, NULL);
		if (fd < 0)
			return NULL; /* the listening socket was shut down: the bench is over */
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		ssize_t n;
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
				break;
		close(fd);
	}
}

static int echo_start(struct echo *e)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	e->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (e->listen_fd < 0 || bind(e->listen_fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(e->listen_fd, 16) != 0 || getsockname(e->listen_fd, (struct sockaddr *)&sin, &len) != 0 ||
	    pthread_create(&e->tid, NULL, echo_main, e) != 0)
		return -1;
	e->port = ntohs(sin.sin_port);
	return 0;
}

static void echo_stop(struct echo *e)
{
	shutdown(e->listen_fd, SHUT_RDWR);
	pthread_join(e->tid, NULL);
	close(e->listen_fd);
}

static int tcp_connect(int port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET,
	                          .sin_port = htons((uint16_t)port),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {.tv_sec = 5};
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* One byte there and back: its round trip in us, 0 on failure. */
static uint64_t echo_round_trip(int fd)
{
	char c = 'b';
	uint64_t t0 = hist_now_us();
	if (send(fd, &c, 1, MSG_NOSIGNAL) != 1 || recv(fd, &c, 1, 0) != 1)
		return 0;
	uint64_t rt = hist_now_us() - t0;
	return rt ? rt : 1;
}

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
        {"round trip", 34, 'l'}, {"p50", 9, 'r'}, {"p99", 9, 'r'}, {"mean", 9, 'r'}};

static void print_row(const struct term *t, const char *name, const struct hist *h)
{
	char b[3][32];
	const char *cells[] = {name, term_fmt_us(b[0], sizeof(b[0]), (double)hist_percentile(h, 50)),
	                       term_fmt_us(b[1], sizeof(b[1]), (double)hist_percentile(h, 99)),
	                       term_fmt_us(b[2], sizeof(b[2]), hist_mean_us(h))};
	term_table_row(t, 2, COLS, 4, cells);
}

static double added_p50(const struct hist *direct, const struct hist *proxied)
{
	return (double)hist_percentile(proxied, 50) - (double)hist_percentile(direct, 50);
}

static int pg_host_port(const char *url, char *host, size_t hostlen, int *port)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(url, &perr);
	if (!opts) {
		PQfreemem(perr);
		return -1;
	}
	snprintf(host, hostlen, "127.0.0.1");
	*port = 5432;
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (o->val && *o->val && !strcmp(o->keyword, "host"))
			snprintf(host, hostlen, "%s", o->val);
		if (o->val && *o->val && !strcmp(o->keyword, "port"))
			*port = atoi(o->val);
	}
	PQconninfoFree(opts);
	return 0;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 5000;
	if (n < 100 || n > 1000000) {
		fprintf(stderr, "usage: bench_proxy [round trips per path, 100..1000000]\n");
		return 2;
	}
	const char *url = pg_url_default();
	char err[LAB_ERRLEN] = "", redacted[256], host[128], port_text[16];
	int pg_port = 0, ret = 2;
	struct proxy *pg_proxy = NULL, *echo_proxy = NULL;
	PGconn *direct = NULL, *proxied = NULL;
	int echo_direct = -1, echo_proxied = -1;
	struct echo echo = {.listen_fd = -1};
	bool echo_started = false;
	struct hist pd, pp, ed, ep, edelay;

	pg_url_redact(url, redacted, sizeof(redacted));
	printf("bench_proxy — what the proxy adds to a round trip at zero delay (%s, %d round trips a "
	       "path)\n\n",
	       redacted, n);

	direct = pg_connect(url, err, sizeof(err));
	if (!direct) {
		fprintf(stderr,
		        "bench_proxy: cannot connect to PostgreSQL at %s\n  server said: %s\n  start it: "
		        "make up\n",
		        redacted, err);
		goto out;
	}
	if (pg_host_port(url, host, sizeof(host), &pg_port) != 0) {
		fprintf(stderr, "bench_proxy: cannot parse the PostgreSQL URL %s\n", redacted);
		goto out;
	}
	struct proxy_config pc = {.upstream_host = host, .upstream_port = pg_port};
	pg_proxy = proxy_start(&pc, err, sizeof(err));
	if (!pg_proxy) {
		fprintf(stderr, "bench_proxy: %s\n", err);
		goto out;
	}
	snprintf(port_text, sizeof(port_text), "%d", proxy_port(pg_proxy));
	const char *keys[] = {"dbname", "host", "port", "connect_timeout", NULL};
	const char *vals[] = {url, "127.0.0.1", port_text, "5", NULL};
	proxied = PQconnectdbParams(keys, vals, 1);
	if (PQstatus(proxied) != CONNECTION_OK) {
		pg_conn_error(proxied, err, sizeof(err));
		fprintf(stderr, "bench_proxy: cannot connect to PostgreSQL through the proxy: %s\n", err);
		goto out;
	}

	hist_init(&pd);
	hist_init(&pp);
	for (int i = 0; i < WARMUP + n; i++) {
		uint64_t a = pg_round_trip(direct), b = pg_round_trip(proxied);
		if (!a || !b) {
			fprintf(stderr, "bench_proxy: SELECT 1 failed: %s\n",
			        PQerrorMessage(a ? proxied : direct));
			goto out;
		}
		if (i >= WARMUP) {
			hist_record(&pd, a);
			hist_record(&pp, b);
		}
	}

	if (echo_start(&echo) != 0) {
		fprintf(stderr, "bench_proxy: cannot start the echo server: %s\n", strerror(errno));
		goto out;
	}
	echo_started = true;
	struct proxy_config ec = {.upstream_port = echo.port};
	echo_proxy = proxy_start(&ec, err, sizeof(err));
	if (!echo_proxy) {
		fprintf(stderr, "bench_proxy: %s\n", err);
		goto out;
	}
	/* the echo server serves one connection at a time: direct first, then through the proxy */
	hist_init(&ed);
	hist_init(&ep);
	hist_init(&edelay);
	echo_direct = tcp_connect(echo.port);
	for (int i = 0; echo_direct >= 0 && i < WARMUP + n; i++) {
		uint64_t a = echo_round_trip(echo_direct);
		if (!a)
			break;
		if (i >= WARMUP)
			hist_record(&ed, a);
	}
	if (echo_direct >= 0)
		close(echo_direct);
	echo_proxied = tcp_connect(proxy_port(echo_proxy));
	for (int i = 0; echo_proxied >= 0 && i < WARMUP + n; i++) {
		uint64_t b = echo_round_trip(echo_proxied);
		if (!b)
			break;
		if (i >= WARMUP)
			hist_record(&ep, b);
	}
	if (ed.count != (uint64_t)n || ep.count != (uint64_t)n) {
		fprintf(stderr, "bench_proxy: the echo round trips failed: %s\n", strerror(errno));
		goto out;
	}
	/* a delay of 1 ms each way: the share of n kept small, each costs 2 ms */
	int ndelay = n / 10 < 500 ? n / 10 : 500;
	if (proxy_set_delay(echo_proxy, DELAY_EACH_WAY_US, DELAY_EACH_WAY_US) != 0) {
		fprintf(stderr, "bench_proxy: proxy_set_delay failed\n");
		goto out;
	}
	for (int i = 0; i < ndelay; i++) {
		uint64_t b = echo_round_trip(echo_proxied);
		if (!b)
			break;
		hist_record(&edelay, b);
	}

	struct term t;
	term_init(&t, stdout);
	term_table_header(&t, 2, COLS, 4);
	print_row(&t, "SELECT 1, direct", &pd);
	print_row(&t, "SELECT 1, through the proxy", &pp);
	print_row(&t, "echo 1 byte, direct", &ed);
	print_row(&t, "echo 1 byte, through the proxy", &ep);
	char label[64];
	snprintf(label, sizeof(label), "echo, proxy at %d + %d µs", DELAY_EACH_WAY_US, DELAY_EACH_WAY_US);
	print_row(&t, label, &edelay);

	double pg_added = added_p50(&pd, &pp), echo_added = added_p50(&ed, &ep);
	double delay_over = (double)hist_percentile(&edelay, 50) - (double)hist_percentile(&ep, 50) -
	                    2.0 * DELAY_EACH_WAY_US;
	printf("\n  added by the proxy at p50: %+.0f µs a SELECT 1, %+.0f µs an echo; p99: %+.0f µs, %+.0f "
	       "µs\n",
	       pg_added, echo_added, (double)hist_percentile(&pp, 99) - (double)hist_percentile(&pd, 99),
	       (double)hist_percentile(&ep, 99) - (double)hist_percentile(&ed, 99));
	printf("  a set delay of %d µs lands %+.0f µs from it at p50 (timer wake-up on a shared machine)\n",
	       2 * DELAY_EACH_WAY_US, delay_over);
	bool met = pg_added < TARGET_ADDED_US && echo_added < TARGET_ADDED_US;
	printf("  target: under %.0f µs added per round trip (Toxiproxy promises under 100 µs): %s\n",
	       TARGET_ADDED_US, met ? "met" : "not met");
	ret = 0;

out:
	if (echo_proxied >= 0)
		close(echo_proxied);
	PQfinish(proxied);
	PQfinish(direct);
	proxy_free(pg_proxy);
	proxy_free(echo_proxy);
	if (echo_started)
		echo_stop(&echo);
	return ret;
}
