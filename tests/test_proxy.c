/*
 * test_proxy.c — the latency and fault proxy of proxy.h relaying bytes, end to end over real
 * sockets: bytes pass intact both ways, delays add at least what they promise and per direction
 * (a shorter one on another connection is not held behind a longer one: one timer serves all),
 * the bandwidth limit holds (also when set mid-connection), a delay costs latency and not
 * throughput, a half close and an upstream's hang-up pass what was queued and the EOF.
 * test_proxy_faults.c tests the faults it injects (cut, refuse) and its control API.
 *
 * needs: nothing (pure: the upstream is the echo server of tests/upstream.h)
 *
 * Run: ctest --test-dir build -R test_proxy --output-on-failure.
 * The upstream is the small echo server of tests/upstream.h (blocking threads on 127.0.0.1, a
 * free port). Times are only checked against lower bounds (what the proxy promises to add);
 * client sockets carry a receive timeout, so nothing waits forever. The fixture is in
 * proxy_fixture.h.
 */
#define PROXY_TEST "test_proxy"
#include "proxy_fixture.h"

#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"

/* 8 MiB: well past every socket buffer and the proxy's 4 MiB queue, so back-pressure is exercised. */
#define BIG_BYTES (8 * 1024 * 1024)

struct writer {
	int fd;
	const unsigned char *buf;
	size_t len;
	bool ok;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	w->ok = write_full(w->fd, w->buf, w->len);
	return NULL;
}

/* Sends len bytes on fd while reading the echo back (a writer thread), so neither side stalls. */
static bool echo_exchange(int fd, const unsigned char *out, unsigned char *in, size_t len)
{
	struct writer w = {.fd = fd, .buf = out, .len = len};
	pthread_t tid;
	if (pthread_create(&tid, NULL, writer_main, &w) != 0)
		return false;
	bool ok = read_full(fd, in, len);
	pthread_join(tid, NULL);
	return ok && w.ok;
}

/*
 * echo_exchange on a new connection to port. *elapsed_us counts from before the connect to
 * the last byte read.
 */
static bool echo_transfer(int port, const unsigned char *out, unsigned char *in, size_t len,
                          uint64_t *elapsed_us)
{
	uint64_t t0 = hist_now_us();
	int fd = client_connect(port);
	if (fd < 0)
		return false;
	bool ok = echo_exchange(fd, out, in, len);
	*elapsed_us = hist_now_us() - t0;
	close(fd);
	return ok;
}

/* FNV-1a over the bytes: equal checksums both ways, as a person would check a copied file. */
static uint64_t checksum(const unsigned char *buf, size_t len)
{
	uint64_t h = 1469598103934665603u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ buf[i]) * 1099511628211u;
	return h;
}

static void fill_random(unsigned char *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed | 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char)(x >> 24);
	}
}

static void test_bytes_pass_intact_both_ways(void **state)
{
	struct upstream *e = *state;
	struct proxy *p = start_proxy(e->port, 0, 0, 0);
	unsigned char *out = malloc(BIG_BYTES), *in = calloc(1, BIG_BYTES);
	uint64_t elapsed = 0;
	struct proxy_stats st;

	assert_non_null(out);
	assert_non_null(in);
	fill_random(out, BIG_BYTES, 42);
	assert_true(echo_transfer(proxy_port(p), out, in, BIG_BYTES, &elapsed));
	assert_int_equal(checksum(in, BIG_BYTES), checksum(out, BIG_BYTES));
	assert_memory_equal(in, out, BIG_BYTES);
	print_message("%d MiB there and back through the proxy in %.1f ms\n", BIG_BYTES >> 20,
	              elapsed / 1000.0);

	proxy_stats(p, &st);
	assert_int_equal(st.accepted, 1);
	assert_int_equal(st.bytes_up, BIG_BYTES);
	assert_int_equal(st.bytes_down, BIG_BYTES);
	free(out);
	free(in);
	proxy_free(p);
}

static void test_round_trip_takes_at_least_delay_up_plus_delay_down(void **state)
{
	struct upstream *e = *state;
	const int up = 3000, down = 2000;
	struct proxy *p = start_proxy(e->port, up, down, 0);
	int fd = client_connect(proxy_port(p));
	uint64_t min_rt = UINT64_MAX;

	assert_true(fd >= 0);
	for (int i = 0; i < 20; i++) {
		uint64_t rt = ping(fd);
		assert_true(rt > 0);
		if (rt < min_rt)
			min_rt = rt;
	}
	print_message("delay %d + %d us: fastest of 20 round trips %llu us\n", up, down,
	              (unsigned long long)min_rt);
	assert_true(min_rt >= (uint64_t)(up + down));
	close(fd);
	proxy_free(p);
}

static void test_a_new_delay_takes_effect_on_an_open_connection(void **state)
{
	struct upstream *e = *state;
	struct proxy *p = start_proxy(e->port, 0, 0, 0);
	int direct = client_connect(e->port);
	int proxied = client_connect(proxy_port(p));
	struct hist hd, hp;

	assert_true(direct >= 0);
	assert_true(proxied >= 0);
	hist_init(&hd);
	hist_init(&hp);
	for (int i = 0; i < 2000; i++) {
		uint64_t a = ping(direct), b = ping(proxied);
		assert_true(a > 0 && b > 0);
		hist_record(&hd, a);
		hist_record(&hp, b);
	}
	/* what zero delay adds is a speed figure: bench_proxy measures it beside a direct path; here it
	 * is shown, not asserted (a shared machine) */
	print_message("zero delay: p50 direct %llu us, through the proxy %llu us\n",
	              (unsigned long long)hist_percentile(&hd, 50),
	              (unsigned long long)hist_percentile(&hp, 50));

	/* the same open connection, a new delay: bytes read from now on pay it */
	assert_int_equal(proxy_set_delay(p, 4000, 1000), 0);
	uint64_t rt = ping(proxied);
	assert_true(rt >= 5000);
	assert_int_equal(proxy_set_delay(p, 0, 0), 0);
	assert_true(ping(proxied) > 0);
	assert_int_equal(proxy_set_delay(p, -1, 0), -1);
	close(direct);
	close(proxied);
	proxy_free(p);
}

/* A listening socket on 127.0.0.1 that the test accepts from itself; its port in *port. */
static int listen_loopback(int *port)
{
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	assert_true(ls >= 0);
	assert_int_equal(bind(ls, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(ls, 4), 0);
	assert_int_equal(getsockname(ls, (struct sockaddr *)&sin, &len), 0);
	*port = ntohs(sin.sin_port);
	return ls;
}

/* The proxy's next connection upstream, as the test's server sees it (a receive timeout on it). */
static int accept_upstream(int ls)
{
	struct timeval tv = {.tv_sec = RECV_TIMEOUT_S};
	int fd = accept(ls, NULL, NULL);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* round trips on the fast connection while the slow one's byte is held */
#define FAST_TRIPS 5

/*
 * The proxy has one timer for every connection: a byte due sooner on another connection (here
 * 1 ms down legs after a 400 ms up leg) must move it earlier, not wait behind the one set. Were
 * it held, a would be released with b's first byte, long before b's FAST_TRIPS are done.
 */
static void test_an_earlier_wake_on_another_connection_is_not_held_behind_a_later_one(void **state)
{
	(void)state;
	const int slow_us = 400000, fast_us = 1000;
	int port = 0, ls = listen_loopback(&port);
	struct proxy *p = start_proxy(port, slow_us, fast_us, 0);
	int a = client_connect(proxy_port(p));
	assert_true(a >= 0);
	int up_a = accept_upstream(ls);
	int b = client_connect(proxy_port(p));
	assert_true(b >= 0);
	int up_b = accept_upstream(ls);
	char got = 0;

	uint64_t t0 = hist_now_us(), rt_b = UINT64_MAX;
	assert_true(write_full(a, "a", 1)); /* held 400 ms on its way up */
	for (int i = 0; i < FAST_TRIPS; i++) {
		uint64_t t1 = hist_now_us();
		assert_true(write_full(up_b, "b", 1)); /* held 1 ms on its way down */
		assert_true(read_full(b, &got, 1));
		assert_int_equal(got, 'b');
		uint64_t rt = hist_now_us() - t1;
		rt_b = rt < rt_b ? rt : rt_b;
	}
	/* b went through FAST_TRIPS times while a is still held: nothing has reached a's server */
	struct pollfd pfd = {.fd = up_a, .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, 0), 0);
	assert_true(read_full(up_a, &got, 1));
	uint64_t rt_a = hist_now_us() - t0;
	assert_int_equal(got, 'a');
	print_message("one timer, two connections: %llu us for a %d us leg (fastest of %d), then %llu us for "
	              "a %d us one\n",
	              (unsigned long long)rt_b, fast_us, FAST_TRIPS, (unsigned long long)rt_a, slow_us);
	assert_true(rt_b >= (uint64_t)fast_us);
	assert_true(rt_a >= (uint64_t)slow_us);
	close(a);
	close(b);
	close(up_a);
	close(up_b);
	close(ls);
	proxy_free(p);
}

/* Up leg: send to the echo server's read; down leg: its read to the reply back. */
static void one_way_legs(struct upstream *e, int fd, uint64_t *up_leg, uint64_t *down_leg)
{
	char c = 'x', back = 0;
	uint64_t t0 = hist_now_us();
	assert_true(write_full(fd, &c, 1));
	assert_true(read_full(fd, &back, 1));
	uint64_t t1 = hist_now_us();
	uint64_t arrival = atomic_load(&e->last_arrival_us);
	assert_true(arrival >= t0 && arrival <= t1);
	*up_leg = arrival - t0;
	*down_leg = t1 - arrival;
}

static void test_delays_apply_per_direction(void **state)
{
	struct upstream *e = *state;
	struct proxy *p = start_proxy(e->port, 8000, 2000, 0);
	int fd = client_connect(proxy_port(p));
	uint64_t up_leg, down_leg;

	assert_true(fd >= 0);
	one_way_legs(e, fd, &up_leg, &down_leg);
	print_message("up 8 ms, down 2 ms: up leg %llu us, down leg %llu us\n", (unsigned long long)up_leg,
	              (unsigned long long)down_leg);
	assert_true(up_leg >= 8000);
	assert_true(down_leg >= 2000);

	assert_int_equal(proxy_set_delay(p, 2000, 8000), 0);
	one_way_legs(e, fd, &up_leg, &down_leg);
	print_message("up 2 ms, down 8 ms: up leg %llu us, down leg %llu us\n", (unsigned long long)up_leg,
	              (unsigned long long)down_leg);
	assert_true(up_leg >= 2000);
	assert_true(down_leg >= 8000);
	close(fd);
	proxy_free(p);
}

static void test_bandwidth_limit_holds_a_transfer_to_at_least_n_over_b(void **state)
{
	struct upstream *e = *state;
	/* 400 kB at 1 MB/s: at least 400 ms; unlimited, the same bytes take a few ms */
	const size_t n = 400 * 1000;
	const int64_t bps = 1000 * 1000;
	struct proxy *p = start_proxy(e->port, 0, 0, bps);
	unsigned char *out = malloc(n), *in = malloc(n);
	uint64_t limited = 0, unlimited = 0;

	assert_non_null(out);
	assert_non_null(in);
	fill_random(out, n, 7);
	assert_true(echo_transfer(proxy_port(p), out, in, n, &limited));
	assert_memory_equal(in, out, n);
	assert_int_equal(proxy_set_bandwidth(p, 0), 0);
	memset(in, 0, n);
	assert_true(echo_transfer(proxy_port(p), out, in, n, &unlimited));
	assert_memory_equal(in, out, n);
	print_message("%zu bytes at %lld B/s: %.1f ms (at least %.1f ms); unlimited: %.1f ms\n", n,
	              (long long)bps, limited / 1000.0, (double)n * 1000.0 / (double)bps, unlimited / 1000.0);
	assert_true(limited >= (uint64_t)((double)n * 1e6 / (double)bps));
	assert_true(unlimited * 2 < limited);
	assert_int_equal(proxy_set_bandwidth(p, -5), -1);
	free(out);
	free(in);
	proxy_free(p);
}

static void test_a_bandwidth_limit_set_mid_connection_holds_for_the_bytes_after_it(void **state)
{
	struct upstream *e = *state;
	/* 100 kB at 250 kB/s on a connection that was unlimited: at least 400 ms */
	const size_t n = 100 * 1000;
	const int64_t bps = 250 * 1000;
	struct proxy *p = start_proxy(e->port, 0, 0, 0);
	unsigned char *out = malloc(n), *in = malloc(n);

	assert_non_null(out);
	assert_non_null(in);
	fill_random(out, n, 5);
	int fd = client_connect(proxy_port(p));
	assert_true(fd >= 0);
	assert_true(ping(fd) > 0);
	/* timed from before the change: the bucket starts empty when the change takes effect */
	uint64_t t0 = hist_now_us();
	assert_int_equal(proxy_set_bandwidth(p, bps), 0);
	assert_true(echo_exchange(fd, out, in, n));
	uint64_t limited = hist_now_us() - t0;
	assert_memory_equal(in, out, n);
	print_message("limit set mid-connection: %zu bytes at %lld B/s in %.1f ms (at least %.1f ms)\n", n,
	              (long long)bps, limited / 1000.0, (double)n * 1000.0 / (double)bps);
	assert_true(limited >= (uint64_t)((double)n * 1e6 / (double)bps));

	/* and lifted again: the same connection is no longer held back */
	assert_int_equal(proxy_set_bandwidth(p, 0), 0);
	t0 = hist_now_us();
	assert_true(echo_exchange(fd, out, in, n));
	uint64_t lifted = hist_now_us() - t0;
	assert_memory_equal(in, out, n);
	print_message("limit lifted: the same bytes in %.1f ms\n", lifted / 1000.0);
	assert_true(lifted * 2 < limited);
	close(fd);
	free(out);
	free(in);
	proxy_free(p);
}

static void test_the_delay_costs_latency_not_throughput(void **state)
{
	struct upstream *e = *state;
	const int delay = 50000;
	struct proxy *p = start_proxy(e->port, 0, 0, 0);
	unsigned char *out = malloc(BIG_BYTES), *in = calloc(1, BIG_BYTES);
	uint64_t undelayed = 0, delayed = 0;

	assert_non_null(out);
	assert_non_null(in);
	fill_random(out, BIG_BYTES, 11);
	assert_true(echo_transfer(proxy_port(p), out, in, BIG_BYTES, &undelayed));
	assert_int_equal(proxy_set_delay(p, delay, delay), 0);
	memset(in, 0, BIG_BYTES);
	assert_true(echo_transfer(proxy_port(p), out, in, BIG_BYTES, &delayed));
	assert_memory_equal(in, out, BIG_BYTES);
	print_message("%d MiB there and back: %.1f ms undelayed, %.1f ms behind %d + %d ms\n",
	              BIG_BYTES >> 20, undelayed / 1000.0, delayed / 1000.0, delay / 1000, delay / 1000);
	assert_true(delayed >= (uint64_t)(2 * delay));
	/*
	 * Bytes in flight, not one chunk per delay: the transfer costs about one more round trip.
	 * A proxy that held one read at a time would take 8 MiB / 256 KiB x 100 ms = 3.2 s.
	 */
	assert_true(delayed < 4 * (undelayed + 2 * (uint64_t)delay));
	free(out);
	free(in);
	proxy_free(p);
}

static void test_a_half_close_flushes_what_is_queued_before_the_fin(void **state)
{
	struct upstream *e = *state;
	/* 20 ms up: the client's FIN reaches the proxy long before its bytes are due upstream */
	struct proxy *p = start_proxy(e->port, 20000, 0, 0);
	const size_t n = 100 * 1000;
	unsigned char *out = malloc(n), *in = calloc(1, n);
	struct proxy_stats st;

	assert_non_null(out);
	assert_non_null(in);
	fill_random(out, n, 3);
	int eofs = atomic_load(&e->eofs);
	int fd = client_connect(proxy_port(p));
	assert_true(fd >= 0);
	assert_true(write_full(fd, out, n));
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	assert_true(read_full(fd, in, n)); /* the reverse direction stays open after our FIN */
	assert_memory_equal(in, out, n);
	char c;
	assert_int_equal(recv(fd, &c, 1, 0), 0); /* then the upstream's FIN, passed on */
	assert_true(echo_wait(e, echo_eofs_reach, eofs + 1, RECV_TIMEOUT_S * 1000));
	assert_int_equal(wait_active(p, 0, RECV_TIMEOUT_S * 1000), 0);
	proxy_stats(p, &st);
	assert_int_equal(st.bytes_up, n);
	assert_int_equal(st.bytes_down, n);
	assert_int_equal(st.cut, 0);
	close(fd);
	free(out);
	free(in);
	proxy_free(p);
}

static void test_an_upstream_that_hangs_up_passes_its_last_bytes_and_eof_to_the_client(void **state)
{
	(void)state;
	int port = 0, ls = listen_loopback(&port);
	struct proxy *p = start_proxy(port, 0, 5000, 0);

	int fd = client_connect(proxy_port(p));
	assert_true(fd >= 0);
	int up = accept_upstream(ls); /* the proxy's own connection upstream */
	assert_true(write_full(up, "bye", 3));
	close(up); /* a server that says goodbye and goes: its FIN follows its bytes */
	char buf[4] = "";
	assert_true(read_full(fd, buf, 3));
	assert_memory_equal(buf, "bye", 3);
	assert_true(read_sees_close(fd));
	close(fd);
	assert_int_equal(wait_active(p, 0, RECV_TIMEOUT_S * 1000), 0);
	close(ls);
	proxy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_bytes_pass_intact_both_ways),
	        cmocka_unit_test(test_round_trip_takes_at_least_delay_up_plus_delay_down),
	        cmocka_unit_test(test_a_new_delay_takes_effect_on_an_open_connection),
	        cmocka_unit_test(test_an_earlier_wake_on_another_connection_is_not_held_behind_a_later_one),
	        cmocka_unit_test(test_delays_apply_per_direction),
	        cmocka_unit_test(test_bandwidth_limit_holds_a_transfer_to_at_least_n_over_b),
	        cmocka_unit_test(test_a_bandwidth_limit_set_mid_connection_holds_for_the_bytes_after_it),
	        cmocka_unit_test(test_the_delay_costs_latency_not_throughput),
	        cmocka_unit_test(test_a_half_close_flushes_what_is_queued_before_the_fin),
	        cmocka_unit_test(test_an_upstream_that_hangs_up_passes_its_last_bytes_and_eof_to_the_client),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
