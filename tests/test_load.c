/*
 * test_load.c — load.h's per-request deadline against a server that trickles its response: a
 * byte every TRICKLE_GAP_MS, so the connection is never idle for long and an inactivity timeout
 * never fires, while a deadline from send to the whole response does. Pure: the server is a
 * thread of this test on 127.0.0.1 (tests/upstream.h, raw sockets: it must be able to misbehave).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include "load.h"
#include "upstream.h"

#define TRICKLE_GAP_MS 100
#define TRICKLE_BODY   "0123456789" /* 10 bytes: about a second per response */
#define ERRLEN         256

/* Reads one request head (up to the blank line); false when the client went away. */
static bool read_head(int fd)
{
	char c;
	int state = 0; /* how much of "\r\n\r\n" has been seen */
	while (state < 4) {
		ssize_t r = recv(fd, &c, 1, 0);
		if (r <= 0)
			return false;
		state = (c == "\r\n\r\n"[state]) ? state + 1 : (c == '\r' ? 1 : 0);
	}
	return true;
}

/* Answers every request on the connection: the head at once, the body a byte at a time. */
static void trickle_serve(struct upstream *u, int fd)
{
	const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n";
	while (!atomic_load(&u->stop) && read_head(fd)) {
		atomic_fetch_add(&u->requests, 1);
		if (!write_full(fd, head, sizeof(head) - 1))
			return;
		for (const char *b = TRICKLE_BODY; *b && !atomic_load(&u->stop); b++) {
			usleep(TRICKLE_GAP_MS * 1000);
			if (!write_full(fd, b, 1))
				return;
		}
	}
}

static int setup(void **state)
{
	return upstream_as_state(state, upstream_start(trickle_serve), "test_load");
}

static int teardown(void **state)
{
	upstream_stop(*state);
	return 0;
}

static struct load_config trickle_load(const struct upstream *t, int clients, uint64_t n, int timeout_ms)
{
	struct load_config cfg = {.port = t->port,
	                          .path = "/slow",
	                          .clients = clients,
	                          .max_requests = n,
	                          .timeout_ms = timeout_ms};
	return cfg;
}

static void test_a_trickled_response_misses_a_per_request_deadline(void **state)
{
	struct upstream *t = *state;
	char err[ERRLEN];
	struct load_result res;
	/* 3 gaps fit in the deadline, the whole body needs 10: only a per-request deadline fires */
	struct load_config cfg = trickle_load(t, 2, 4, 3 * TRICKLE_GAP_MS + TRICKLE_GAP_MS / 2);
	int before = atomic_load(&t->requests);

	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), 0);
	print_message("4 requests, a byte every %d ms, deadline %d ms: %llu timeouts, %llu completed in "
	              "%.2f s\n",
	              TRICKLE_GAP_MS, cfg.timeout_ms, (unsigned long long)res.timeouts,
	              (unsigned long long)res.completed, res.elapsed_s);
	assert_int_equal(res.sent, 4);
	assert_int_equal(res.completed, 0);
	assert_int_equal(res.errors, 4);
	assert_int_equal(res.timeouts, 4);
	assert_int_equal(res.latency.count, 0);
	/* each timed-out request went out on a new connection: the server read all four */
	for (int waited = 0; atomic_load(&t->requests) < before + 4 && waited < 2000; waited += 10)
		usleep(10000);
	assert_int_equal(atomic_load(&t->requests), before + 4);
}

static void test_the_same_trickle_within_its_deadline_completes(void **state)
{
	struct upstream *t = *state;
	char err[ERRLEN];
	struct load_result res;
	struct load_config cfg = trickle_load(t, 1, 1, 30 * TRICKLE_GAP_MS);

	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), 0);
	assert_int_equal(res.completed, 1);
	assert_int_equal(res.status_2xx, 1);
	assert_int_equal(res.timeouts, 0);
	assert_int_equal(res.errors, 0);
	/* the whole body, not its first byte: at least its ten gaps (a lower bound the server sets) */
	assert_true(res.latency.max_us >= (uint64_t)10 * TRICKLE_GAP_MS * 1000);
}

/* Answers every request at once, empty: a server as fast as loopback allows. */
static void quick_serve(struct upstream *u, int fd)
{
	const char head[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	while (!atomic_load(&u->stop) && read_head(fd)) {
		atomic_fetch_add(&u->requests, 1);
		if (!write_full(fd, head, sizeof(head) - 1))
			return;
	}
}

/* think_ms paces a client: at most one request per pause, where the same client unpaced sends many */
static void test_think_ms_paces_each_client(void **state)
{
	(void)state;
	struct upstream *u = upstream_start(quick_serve);
	assert_non_null(u);
	char err[ERRLEN];
	struct load_result paced, free_run;
	struct load_config cfg = {
	        .port = u->port, .path = "/", .clients = 1, .duration_ms = 500, .think_ms = 50};
	assert_int_equal(load_run(&cfg, &paced, err, sizeof(err)), 0);
	cfg.think_ms = 0;
	assert_int_equal(load_run(&cfg, &free_run, err, sizeof(err)), 0);
	upstream_stop(u);
	print_message("500 ms, one client: %llu answers with 50 ms between, %llu without\n",
	              (unsigned long long)paced.completed, (unsigned long long)free_run.completed);
	assert_int_equal(paced.errors + free_run.errors, 0);
	/* a send at 0 ms and one after each pause: 500 / 50 + 1 at most, and not far under */
	assert_true(paced.completed <= 500 / 50 + 1);
	assert_true(paced.completed >= 500 / 50 / 2);
	assert_true(free_run.completed > 4 * paced.completed);
	cfg.think_ms = -1;
	assert_int_equal(load_run(&cfg, &paced, err, sizeof(err)), -1);
}

int main(void)
{
	const struct CMUnitTest solo[] = {
	        cmocka_unit_test(test_think_ms_paces_each_client),
	};
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_a_trickled_response_misses_a_per_request_deadline),
	        cmocka_unit_test(test_the_same_trickle_within_its_deadline_completes),
	};
	int failed = cmocka_run_group_tests(solo, NULL, NULL);
	return failed + cmocka_run_group_tests(tests, setup, teardown);
}
