/*
 * test_proxy_faults.c — the faults the proxy of proxy.h injects and its control API, end to
 * end over real sockets: connections that come and go leave nothing open, cut closes both sides,
 * refuse and an upstream that refuses fail the client at once, a real libpq connection through
 * the proxy fails cleanly (CONNECTION_BAD) when cut, proxy_free with bytes in flight, out of
 * descriptors, bad config, a host name upstream, and calls from many threads at once.
 * test_proxy.c tests the relay itself (bytes, delays, bandwidth).
 *
 * needs: postgres
 *
 * Run: ctest --test-dir build -R test_proxy_faults --output-on-failure (LAB_PG_URL picks the
 * server). The upstream is the echo server of tests/upstream.h; only the libpq test reaches
 * PostgreSQL. The fixture is in proxy_fixture.h.
 */
#define PROXY_TEST "test_proxy_faults"
#include "proxy_fixture.h"

#include <dirent.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sys/resource.h>

#include "pg.h"

static int count_open_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void test_connections_that_come_and_go_leave_nothing_open(void **state)
{
	struct upstream *e = *state;
	struct proxy *p = start_proxy(e->port, 0, 0, 0);
	struct proxy_stats st;
	int eofs = atomic_load(&e->eofs);

	/* the echo server keeps a thread per connection it saw: stay within its table */
	const int n = 40;
	int before = count_open_fds();
	for (int i = 0; i < n; i++) {
		int fd = client_connect(proxy_port(p));
		assert_true(fd >= 0);
		assert_true(ping(fd) > 0);
		close(fd); /* the client goes first: its FIN goes up, the upstream's comes back, both close */
	}
	assert_int_equal(wait_active(p, 0, RECV_TIMEOUT_S * 1000), 0);
	assert_true(echo_wait(e, echo_eofs_reach, eofs + n, RECV_TIMEOUT_S * 1000));
	proxy_stats(p, &st);
	assert_int_equal(st.accepted, n);
	assert_int_equal(st.cut, 0);
	assert_int_equal(st.upstream_errors, 0);
	/* the proxy's two sockets per connection are closed; the echo server keeps its own until teardown */
	int after = count_open_fds();
	print_message("%d connections came and went: %d descriptors open before, %d after (echo side: %d)\n",
	              n, before, after, n);
	assert_true(after <= before + n);
	proxy_free(p);
}

static void test_cut_closes_both_sides_and_is_counted(void **state)
{
	struct upstream *e = *state;
	struct proxy *p = start_proxy(e->port, 0, 0, 0);
	int fd = client_connect(proxy_port(p));
	struct proxy_stats st;

	assert_true(fd >= 0);
	assert_true(ping(fd) > 0);
	int eofs = atomic_load(&e->eofs);
	uint64_t t0 = hist_now_us();
	assert_int_equal(proxy_cut(p), 1);
	assert_true(read_sees_close(fd));
	print_message("the client saw the cut after %llu us\n", (unsigned long long)(hist_now_us() - t0));
	assert_true(echo_wait(e, echo_eofs_reach, eofs + 1, RECV_TIMEOUT_S * 1000));

	proxy_stats(p, &st);
	assert_int_equal(st.cut, 1);
	assert_int_equal(st.active, 0);
	assert_int_equal(proxy_cut(p), 0);
	close(fd);

	/* the proxy itself stays up: the next connection goes through */
	fd = client_connect(proxy_port(p));
	assert_true(fd >= 0);
	assert_true(ping(fd) > 0);
	close(fd);
	proxy_free(p);
}

static void test_many_connections_stay_apart_and_cut_counts_every_one(void **state)
{
	struct upstream *e = *state;
	enum { NCONN = 40 };
	struct proxy *p = start_proxy(e->port, 200, 200, 0);
	int fds[NCONN];
	struct proxy_stats st;

	for (int i = 0; i < NCONN; i++) {
		fds[i] = client_connect(proxy_port(p));
		assert_true(fds[i] >= 0);
	}
	/* every connection's bytes come back on that connection and no other */
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < NCONN; i++) {
			unsigned char msg[2] = {(unsigned char)i, (unsigned char)round};
			assert_true(write_full(fds[i], msg, sizeof(msg)));
		}
		for (int i = 0; i < NCONN; i++) {
			unsigned char back[2] = {0, 0};
			assert_true(read_full(fds[i], back, sizeof(back)));
			assert_int_equal(back[0], i);
			assert_int_equal(back[1], round);
		}
	}
	int eofs = atomic_load(&e->eofs);
	assert_int_equal(proxy_cut(p), NCONN);
	for (int i = 0; i < NCONN; i++) {
		assert_true(read_sees_close(fds[i]));
		close(fds[i]);
	}
	assert_true(echo_wait(e, echo_eofs_reach, eofs + NCONN, RECV_TIMEOUT_S * 1000));
	proxy_stats(p, &st);
	assert_int_equal(st.accepted, NCONN);
	assert_int_equal(st.cut, NCONN);
	assert_int_equal(st.active, 0);
	assert_int_equal(st.bytes_up, NCONN * 2 * 3);
	assert_int_equal(st.bytes_down, NCONN * 2 * 3);
	proxy_free(p);
}

static void test_refuse_makes_new_connects_fail_at_once_and_is_counted(void **state)
{
	struct upstream *e = *state;
	struct proxy *p = start_proxy(e->port, 0, 0, 0);
	struct proxy_stats st;

	assert_int_equal(proxy_refuse(p, true), 0);
	int before = atomic_load(&e->connections);
	int fd = client_connect(proxy_port(p));
	assert_true(fd >= 0); /* the kernel completes the handshake; the proxy then closes it */
	char c = 'r';
	write_full(fd, &c, 1); /* may fail already: the reset can be there first */
	assert_true(read_sees_close(fd));
	close(fd);
	proxy_stats(p, &st);
	assert_int_equal(st.refused, 1);
	assert_int_equal(st.active, 0);
	assert_int_equal(atomic_load(&e->connections), before);

	assert_int_equal(proxy_refuse(p, false), 0);
	fd = client_connect(proxy_port(p));
	assert_true(fd >= 0);
	assert_true(ping(fd) > 0);
	close(fd);
	proxy_stats(p, &st);
	assert_int_equal(st.refused, 1);
	assert_int_equal(st.accepted, 2);
	proxy_free(p);
}

static void test_an_upstream_that_refuses_closes_the_client_and_counts_an_upstream_error(void **state)
{
	(void)state;
	/* a port the kernel handed out and nobody listens on: connect gets ECONNREFUSED */
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	assert_true(s >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &len), 0);
	struct proxy *p = start_proxy(ntohs(sin.sin_port), 0, 0, 0);
	struct proxy_stats st;

	int fd = client_connect(proxy_port(p));
	assert_true(fd >= 0);
	assert_true(read_sees_close(fd));
	close(fd);
	proxy_stats(p, &st);
	assert_int_equal(st.upstream_errors, 1);
	assert_int_equal(st.accepted, 1);
	assert_int_equal(st.active, 0);
	assert_int_equal(st.bytes_up, 0);
	close(s);
	proxy_free(p);
}

static void test_libpq_through_the_proxy_runs_select_1_and_fails_cleanly_when_cut(void **state)
{
	(void)state;
	char host[128], port_text[16], url[256];
	int pg_port = 0;
	assert_int_equal(pg_host_port(pg_url_default(), host, sizeof(host), &pg_port), 0);
	struct proxy_config cfg = {.upstream_host = host, .upstream_port = pg_port};
	char err[256] = "";
	struct proxy *p = proxy_start(&cfg, err, sizeof(err));
	if (!p)
		print_message("proxy_start: %s\n", err);
	assert_non_null(p);

	/* the lab's URL, with host and port pointed at the proxy (pg.c's 2 s connect timeout) */
	snprintf(port_text, sizeof(port_text), "%d", proxy_port(p));
	const char *const keys[] = {"host", "port", NULL}, *const vals[] = {"127.0.0.1", port_text, NULL};
	PGconn *conn = pg_connect_with(pg_url_default(), keys, vals, err, sizeof(err));
	if (!conn) {
		pg_url_redact(pg_url_default(), url, sizeof(url));
		print_message("cannot connect to PostgreSQL at %s through the proxy: %s\n", url, err);
	}
	assert_non_null(conn);
	PGresult *res = PQexec(conn, "SELECT 1");
	assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
	assert_string_equal(PQgetvalue(res, 0, 0), "1");
	PQclear(res);

	assert_int_equal(proxy_cut(p), 1);
	/*
	 * The next query fails with libpq's own error. Sent asynchronously and polled for at most
	 * 3 s, so a proxy that left the socket open would fail this test, not hang it.
	 */
	uint64_t t0 = hist_now_us();
	if (PQsendQuery(conn, "SELECT 1") == 1) {
		struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
		assert_int_equal(poll(&pfd, 1, 3000), 1);
		PQconsumeInput(conn);
		while ((res = PQgetResult(conn)) != NULL) {
			assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
			PQclear(res);
		}
	}
	assert_int_equal(PQstatus(conn), CONNECTION_BAD);
	pg_conn_error(conn, err, sizeof(err));
	assert_true(strlen(err) > 0);
	print_message("after the cut, in %llu us, libpq said: %s\n", (unsigned long long)(hist_now_us() - t0),
	              err);
	PQfinish(conn);

	struct proxy_stats st;
	proxy_stats(p, &st);
	assert_int_equal(st.cut, 1);
	assert_true(st.bytes_up > 0);
	assert_true(st.bytes_down > 0);
	proxy_free(p);
}

static void test_free_with_connections_open_and_bytes_in_flight(void **state)
{
	struct upstream *e = *state;
	/* 50 ms down delay: replies are still queued in the proxy when it is freed */
	struct proxy *p = start_proxy(e->port, 0, 50000, 0);
	int fds[3];
	for (int i = 0; i < 3; i++) {
		fds[i] = client_connect(proxy_port(p));
		assert_true(fds[i] >= 0);
		assert_true(write_full(fds[i], "hello", 5));
	}
	/* all three forwarding and their bytes upstream: the echoes are what is in flight */
	struct proxy_stats st;
	for (int waited = 0; waited < RECV_TIMEOUT_S * 1000; waited += 5) {
		proxy_stats(p, &st);
		if (st.active == 3 && st.bytes_up == 15)
			break;
		usleep(5000);
	}
	assert_int_equal(st.active, 3);
	assert_int_equal(st.bytes_up, 15);
	proxy_free(p);
	for (int i = 0; i < 3; i++) {
		assert_true(read_sees_close(fds[i]));
		close(fds[i]);
	}
}

static void test_out_of_descriptors_the_proxy_waits_and_then_accepts(void **state)
{
	struct upstream *e = *state;
	struct proxy *p = start_proxy(e->port, 0, 0, 0);
	struct proxy_stats st;
	struct rlimit old, low;
	int fillers[256], nfill = 0;

	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	/* a low limit, then every descriptor taken: the proxy's accept gets EMFILE */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = 256;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	while (nfill < 256) {
		int d = dup(fd);
		if (d < 0)
			break;
		fillers[nfill++] = d;
	}
	assert_true(nfill < 256);
	struct sockaddr_in sin = {.sin_family = AF_INET,
	                          .sin_port = htons((uint16_t)proxy_port(p)),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0); /* the kernel's backlog */
	struct rusage r0, r1;
	getrusage(RUSAGE_SELF, &r0);
	usleep(500000);
	getrusage(RUSAGE_SELF, &r1);
	proxy_stats(p, &st);
	double cpu_ms =
	        (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) *
	                1e3 +
	        (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec -
	                 r0.ru_stime.tv_usec) /
	                1e3;
	print_message("no descriptors for 500 ms: %llu accepted, %.1f ms of CPU (a spinning loop would use "
	              "up to 500)\n",
	              (unsigned long long)st.accepted, cpu_ms);
	assert_int_equal(st.accepted, 0);
	/*
	 * A pause, not a busy loop: a spinning thread burns most of a core even on a busy machine;
	 * the margin leaves room for whatever else this process's threads did meanwhile.
	 */
	assert_true(cpu_ms < 100.0);

	for (int i = 0; i < nfill; i++)
		close(fillers[i]);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	struct timeval tv = {.tv_sec = RECV_TIMEOUT_S};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_true(ping(fd) > 0); /* the waiting connection goes through once descriptors are back */
	proxy_stats(p, &st);
	assert_int_equal(st.accepted, 1);
	close(fd);
	proxy_free(p);
}

static void test_bad_config_is_refused_with_a_message(void **state)
{
	struct upstream *e = *state;
	char err[256] = "";
	/* .invalid never resolves (RFC 6761), and fails fast without asking a DNS server */
	struct proxy_config cfg = {.upstream_host = "db.invalid", .upstream_port = 5432};
	assert_null(proxy_start(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot resolve upstream host \"db.invalid\""));
	print_message("an upstream that does not resolve: %s\n", err);
	cfg.upstream_host = NULL;
	cfg.upstream_port = 0;
	assert_null(proxy_start(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "port"));
	cfg.upstream_port = 5432;
	cfg.delay_up_us = -1;
	assert_null(proxy_start(&cfg, err, sizeof(err)));
	cfg.delay_up_us = 0;
	cfg.listen_port = 70000;
	assert_null(proxy_start(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "listen port"));
	/* a port someone else listens on: the kernel's reason, not a crash */
	cfg.listen_port = e->port;
	assert_null(proxy_start(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot listen"));
	print_message("listening on a taken port: %s\n", err);
	/* numeric IPv6 is an address too */
	cfg.listen_port = 0;
	cfg.upstream_host = "::1";
	struct proxy *p = proxy_start(&cfg, err, sizeof(err));
	assert_non_null(p);
	proxy_free(p);
	proxy_free(NULL);
}

static void test_a_host_name_upstream_is_resolved_at_start(void **state)
{
	struct upstream *e = *state;
	char err[256] = "";
	/* "localhost" may list ::1 first; the echo server listens on 127.0.0.1 only */
	struct proxy_config cfg = {.upstream_host = "localhost", .upstream_port = e->port};
	struct proxy *p = proxy_start(&cfg, err, sizeof(err));
	if (!p)
		print_message("proxy_start: %s\n", err);
	assert_non_null(p);
	int before = atomic_load(&e->connections);
	int fd = client_connect(proxy_port(p));
	assert_true(fd >= 0);
	assert_true(ping(fd) > 0);
	assert_int_equal(atomic_load(&e->connections), before + 1);
	close(fd);
	struct proxy_stats st;
	proxy_stats(p, &st);
	assert_int_equal(st.upstream_errors, 0);
	assert_int_equal(st.bytes_up, 1);
	proxy_free(p);
}

/*
 * Several threads drive one proxy at once while a client's bytes flow through it: each call
 * runs on the proxy's loop, so nothing the loop owns is touched from two threads (ASan and
 * TSan builds see any slip), no call hangs, and the counters only ever grow.
 */
struct hammer {
	struct proxy *p;
	int id;
	int calls;
	int failed;
	bool regressed;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;
	struct proxy_stats prev = {0}, st;
	for (int i = 0; i < h->calls; i++) {
		proxy_stats(h->p, &st);
		if (st.accepted < prev.accepted || st.bytes_up < prev.bytes_up ||
		    st.bytes_down < prev.bytes_down || st.cut < prev.cut)
			h->regressed = true;
		prev = st;
		int rc = h->id == 0   ? proxy_set_delay(h->p, i % 3 * 100, i % 2 * 100)
		         : h->id == 1 ? (int)proxy_set_bandwidth(h->p, i % 2 ? 0 : 50 * 1000 * 1000)
		         : h->id == 2 ? (i % 50 == 49 ? (proxy_cut(h->p) >= 0 ? 0 : -1) : 0)
		                      : proxy_refuse(h->p, false);
		if (rc != 0)
			h->failed++;
	}
	return NULL;
}

static void test_calls_from_many_threads_at_once_stay_on_the_loop(void **state)
{
	struct upstream *e = *state;
	enum { THREADS = 4, CALLS = 300 };
	struct proxy *p = start_proxy(e->port, 0, 0, 0);
	struct hammer hs[THREADS];
	pthread_t tids[THREADS];

	for (int i = 0; i < THREADS; i++) {
		hs[i] = (struct hammer){.p = p, .id = i, .calls = CALLS};
		assert_int_equal(pthread_create(&tids[i], NULL, hammer_main, &hs[i]), 0);
	}
	/* traffic meanwhile; a cut may end a connection mid-ping: then a new one */
	int pings = 0, fd = -1;
	for (int i = 0; i < 200; i++) {
		if (fd < 0)
			fd = client_connect(proxy_port(p));
		assert_true(fd >= 0);
		if (ping(fd) > 0) {
			pings++;
		} else {
			close(fd);
			fd = -1;
		}
	}
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(tids[i], NULL), 0);
		assert_int_equal(hs[i].failed, 0);
		assert_false(hs[i].regressed);
	}
	if (fd >= 0)
		close(fd);
	struct proxy_stats st;
	proxy_stats(p, &st);
	print_message("%d threads x %d calls beside %d pings: %llu connections, %llu cut\n", THREADS, CALLS,
	              pings, (unsigned long long)st.accepted, (unsigned long long)st.cut);
	assert_true(pings > 0);
	assert_true(st.bytes_up >= (uint64_t)pings);
	/* the last call of all, after every thread that used p was joined */
	proxy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_connections_that_come_and_go_leave_nothing_open),
	        cmocka_unit_test(test_cut_closes_both_sides_and_is_counted),
	        cmocka_unit_test(test_many_connections_stay_apart_and_cut_counts_every_one),
	        cmocka_unit_test(test_refuse_makes_new_connects_fail_at_once_and_is_counted),
	        cmocka_unit_test(
	                test_an_upstream_that_refuses_closes_the_client_and_counts_an_upstream_error),
	        cmocka_unit_test(test_libpq_through_the_proxy_runs_select_1_and_fails_cleanly_when_cut),
	        cmocka_unit_test(test_free_with_connections_open_and_bytes_in_flight),
	        cmocka_unit_test(test_out_of_descriptors_the_proxy_waits_and_then_accepts),
	        cmocka_unit_test(test_bad_config_is_refused_with_a_message),
	        cmocka_unit_test(test_a_host_name_upstream_is_resolved_at_start),
	        cmocka_unit_test(test_calls_from_many_threads_at_once_stay_on_the_loop),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
