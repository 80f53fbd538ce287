/*
 * test_http_guard.c — what http.h promises a hostile or broken client, over raw sockets against
 * a real server on 127.0.0.1 in this process: a NUL, a control character, a bare CR or a folded
 * header gets 400 before any handler runs; heads past the size limit are refused without the
 * server holding them; a slowloris is cut by the request deadline, idle connections by the idle
 * timeout, and past the connection cap new connections wait; meanwhile a normal request is
 * answered. Memory is read from /proc/self/status (VmRSS) and checked with a wide margin.
 * Pure: no database or Redis. Times are bounds the test sets, never what the machine achieved.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hist.h"
#include "http.h"
#include "upstream.h"

#define ERRLEN   256
#define RESP_MAX 4096
/* No read waits longer: a server that leaves a client hanging fails the test instead. */
#define READ_TIMEOUT_MS UPSTREAM_HTTP_TIMEOUT_MS

struct server {
	struct http_app app;
	int port;
	atomic_int hits; /* requests a handler saw */
};

static void count_cb(struct evhttp_request *req, void *arg)
{
	struct server *s = arg;
	atomic_fetch_add(&s->hits, 1);
	http_reply_json(req, HTTP_OK, json_pack("{s:b}", "ok", 1));
}

/* A server with lim (NULL: the defaults), route /count, its loop running. */
static struct server *server_start(const struct http_limits *lim)
{
	char err[ERRLEN];
	struct server *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	if (http_app_open(&s->app, 0, err, sizeof(err)) != 0)
		fail_msg("http_app_open: %s", err);
	if (lim && http_server_set_limits(s->app.server, lim, err, sizeof(err)) != 0)
		fail_msg("http_server_set_limits: %s", err);
	http_server_route(s->app.server, "/count", count_cb, s);
	if (http_app_run(&s->app, err, sizeof(err)) != 0)
		fail_msg("http_app_run: %s", err);
	s->port = http_server_port(s->app.server);
	return s;
}

static void server_stop(struct server *s)
{
	http_app_stop(&s->app, NULL, NULL);
	free(s);
}

static int connect_to(int port)
{
	int fd = client_connect(port);
	assert_true(fd >= 0);
	return fd;
}

/* The peer closed: EOF or reset, not silence (waits up to ms). */
static bool sees_close(int fd, int ms)
{
	char c;
	int r;
	while ((r = recv_byte(fd, &c, ms)) == 1)
		;
	return r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE));
}

static int normal_request(int port)
{
	static const char req[] = "GET /count HTTP/1.1\r\nHost: lab\r\n\r\n";
	char out[RESP_MAX];
	return http_exchange(port, req, sizeof(req) - 1, out, sizeof(out));
}

static long rss_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* Waits until the server counts want open connections or ms pass; returns the last count. */
static int wait_connections(struct server *s, int want, int ms)
{
	for (int waited = 0;; waited += 10) {
		int n = http_server_connections(s->app.server);
		if (n == want || waited >= ms)
			return n;
		usleep(10000);
	}
}

struct bad_head {
	const char *what;
	const char *req;
	size_t len;                /* with the NUL bytes it holds */
	const char *want_in_error; /* NULL: evhttp's own parser refuses it first (its HTML 400) */
};

#define HEAD(what, lit, want)                                                                                \
	{                                                                                                    \
		what, lit, sizeof(lit) - 1, want                                                             \
	}

static void test_bad_bytes_in_a_head_get_400_before_any_handler(void **state)
{
	(void)state;
	static const struct bad_head cases[] = {
	        HEAD("NUL in a header value",
	             "GET /count HTTP/1.1\r\nHost: lab\r\nIdempotency-Key: zz\0first\r\n\r\n", "NUL byte"),
	        /* cut at the NUL, the line has no colon left: evhttp refuses it before dispatch */
	        HEAD("NUL in a header name", "GET /count HTTP/1.1\r\nHost: lab\r\nX-\0A: b\r\n\r\n", NULL),
	        HEAD("SOH in a value", "GET /count HTTP/1.1\r\nHost: lab\r\nX-A: a\x01z\r\n\r\n",
	             "control character"),
	        HEAD("DEL in a value", "GET /count HTTP/1.1\r\nHost: lab\r\nX-A: a\x7fz\r\n\r\n",
	             "control character"),
	        HEAD("ESC in the request line", "GET /cou\x1bnt HTTP/1.1\r\nHost: lab\r\n\r\n",
	             "control character"),
	        /* evhttp refuses a CR inside a header value itself; in the request line it does not */
	        HEAD("bare CR in a value", "GET /count HTTP/1.1\r\nHost: lab\r\nX-A: a\rb\r\n\r\n", NULL),
	        HEAD("bare CR in the request line", "GET /co\runt HTTP/1.1\r\nHost: lab\r\n\r\n",
	             "carriage return"),
	        HEAD("obsolete folding", "GET /count HTTP/1.1\r\nHost: lab\r\nX-A: a\r\n b\r\n\r\n",
	             "folded"),
	        HEAD("folding with a tab", "GET /count HTTP/1.1\r\nX-A: a\r\n\tb\r\nHost: lab\r\n\r\n",
	             "folded"),
	        /* a continuation of no header at all: evhttp refuses it itself */
	        HEAD("space before the first header", "GET /count HTTP/1.1\r\n Host: lab\r\n\r\n", NULL),
	};
	struct server *s = server_start(NULL);
	char out[RESP_MAX];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int fd = connect_to(s->port);
		assert_true(write_full(fd, cases[i].req, cases[i].len));
		int code = http_read_response(fd, out, sizeof(out));
		const char *want = cases[i].want_in_error;
		if (code != 400 || (want && (!strstr(out, want) || !strstr(out, "application/json"))))
			fail_msg("%s: want 400 naming \"%s\", got %d:\n%s", cases[i].what, want ? want : "",
			         code, out);
		assert_true(sees_close(fd, READ_TIMEOUT_MS)); /* and the connection is closed after it */
		close(fd);
	}
	assert_int_equal(atomic_load(&s->hits), 0);

	/* what is allowed: a tab inside a value, lines ended by LF alone, bytes past ASCII */
	static const char ok[] = "GET /count HTTP/1.1\nHost: lab\nX-A: a\tb \xc3\xa9\n\n";
	assert_int_equal(http_exchange(s->port, ok, sizeof(ok) - 1, out, sizeof(out)), 200);
	assert_int_equal(atomic_load(&s->hits), 1);
	server_stop(s);
}

static void test_each_request_on_a_connection_is_checked_pipelined_ones_too(void **state)
{
	(void)state;
	struct server *s = server_start(NULL);
	char out[RESP_MAX];
	int fd = connect_to(s->port);

	/* keep-alive: one after the other */
	static const char get[] = "GET /count HTTP/1.1\r\nHost: lab\r\n\r\n";
	assert_true(write_full(fd, get, sizeof(get) - 1));
	assert_int_equal(http_read_response(fd, out, sizeof(out)), 200);
	/*
	 * A body is not a head: lines starting with spaces, a tab, a NUL, a blank line, and then a
	 * request right behind it in the same write, whose head is checked as the next one.
	 */
	static const char post[] = "POST /count HTTP/1.1\r\nHost: lab\r\nContent-Type: text/plain\r\n"
	                           "Content-Length: 17\r\n\r\n{\n  \"a\":\t1\0\r\n\r\n}\n"
	                           "GET /count HTTP/1.1\r\nHost: lab\r\n\r\n";
	assert_true(write_full(fd, post, sizeof(post) - 1));
	assert_int_equal(http_read_response(fd, out, sizeof(out)), 200);
	assert_int_equal(http_read_response(fd, out, sizeof(out)), 200);
	/* pipelined in one write: a good request, then a bad one behind it */
	static const char two[] = "GET /count HTTP/1.1\r\nHost: lab\r\n\r\n"
	                          "GET /count HTTP/1.1\r\nHost: lab\r\nX-K: a\0b\r\n\r\n";
	assert_true(write_full(fd, two, sizeof(two) - 1));
	assert_int_equal(http_read_response(fd, out, sizeof(out)), 200);
	assert_int_equal(http_read_response(fd, out, sizeof(out)), 400);
	assert_non_null(strstr(out, "NUL byte"));
	assert_true(sees_close(fd, READ_TIMEOUT_MS));
	close(fd);
	/* the handlers ran for the four good ones only */
	assert_int_equal(atomic_load(&s->hits), 4);
	server_stop(s);
}

/* Sends head, then (when given) filler bytes of one character, in chunks; how many went out. */
static size_t offer(int fd, const char *head, char filler, size_t filler_len, const char *tail)
{
	static char chunk[64 * 1024];
	size_t sent = 0;
	if (!write_full(fd, head, strlen(head)))
		return 0;
	memset(chunk, filler, sizeof(chunk));
	while (sent < filler_len) {
		size_t n = filler_len - sent < sizeof(chunk) ? filler_len - sent : sizeof(chunk);
		if (!write_full(fd, chunk, n))
			return sent; /* the server closed: it would not take more */
		sent += n;
	}
	write_full(fd, tail, strlen(tail));
	return sent;
}

static void test_heads_past_the_size_limit_are_refused(void **state)
{
	(void)state;
	struct server *s = server_start(NULL);
	char out[RESP_MAX];

	/* 1 MiB in one header value, a 100 KB request line: evhttp answers 400 and closes */
	int fd = connect_to(s->port);
	offer(fd, "GET /count HTTP/1.1\r\nHost: lab\r\nX-Big: ", 'a', 1024 * 1024, "\r\n\r\n");
	assert_int_equal(http_read_response(fd, out, sizeof(out)), 400);
	close(fd);
	fd = connect_to(s->port);
	offer(fd, "GET /count?q=", 'q', 100 * 1000, " HTTP/1.1\r\nHost: lab\r\n\r\n");
	assert_int_equal(http_read_response(fd, out, sizeof(out)), 400);
	close(fd);

	/* 10,000 small headers: each fine, together 110 KB */
	char *many = malloc(10000 * 12 + 64);
	assert_non_null(many);
	size_t len = (size_t)sprintf(many, "GET /count HTTP/1.1\r\nHost: lab\r\n");
	for (int i = 0; i < 10000; i++)
		len += (size_t)sprintf(many + len, "X-%05d: v\r\n", i);
	len += (size_t)sprintf(many + len, "\r\n");
	fd = connect_to(s->port);
	write_full(fd, many, len);
	assert_int_equal(http_read_response(fd, out, sizeof(out)), 400);
	close(fd);
	free(many);

	/* just under the limit is fine */
	char big[15 * 1024];
	int n = snprintf(big, sizeof(big), "GET /count HTTP/1.1\r\nHost: lab\r\nX-A: ");
	memset(big + n, 'b', sizeof(big) - (size_t)n - 5);
	memcpy(big + sizeof(big) - 5, "\r\n\r\n", 4);
	assert_int_equal(http_exchange(s->port, big, sizeof(big) - 1, out, sizeof(out)), 200);
	assert_int_equal(atomic_load(&s->hits), 1);
	server_stop(s);
}

static void test_a_64_mib_header_line_costs_the_server_little_memory(void **state)
{
	(void)state;
	const size_t offered = 64u * 1024 * 1024;
	struct server *s = server_start(NULL);
	long before = rss_kib();
	int fd = connect_to(s->port);
	size_t sent = offer(fd, "GET /count HTTP/1.1\r\nHost: lab\r\nX-Big: ", 'a', offered, "\r\n\r\n");
	assert_true(sees_close(fd, READ_TIMEOUT_MS));
	close(fd);
	long after = rss_kib();
	print_message("64 MiB header line offered: %zu KiB taken before the server closed; VmRSS %ld -> %ld "
	              "KiB\n",
	              sent / 1024, before, after);
	/* what the kernel's socket buffers absorb, not the whole line */
	assert_true(sent < offered / 4);
	/* the server held none of it: the margin is for the allocator, not for 64 MiB */
	assert_true(before > 0 && after - before < 16 * 1024);
	assert_int_equal(normal_request(s->port), 200);
	server_stop(s);
}

static void test_a_slowloris_is_cut_by_the_request_deadline(void **state)
{
	(void)state;
	/* the idle timeout alone would never cut a byte every 100 ms; the request deadline does */
	struct http_limits lim = {.request_timeout_ms = 600, .idle_timeout_ms = 5000};
	struct server *s = server_start(&lim);
	static const char head[] = "GET /count HTTP/1.1\r\nHost: lab\r\nX-Slow: ";
	const int max_bytes = 60; /* 6 s of trickling: ten times the deadline */
	int fd = connect_to(s->port), trickled = 0;
	bool cut = false;

	assert_true(write_full(fd, head, sizeof(head) - 1));
	for (; trickled < max_bytes && !cut; trickled++) {
		char c;
		/* waiting for the next byte is where a cut shows: EOF or reset instead of silence */
		int r = recv_byte(fd, &c, 100);
		cut = r == 0 || (r < 0 && errno == ECONNRESET) || !write_full(fd, "s", 1);
		if (trickled == 2)
			assert_int_equal(normal_request(s->port), 200); /* others are served meanwhile */
	}
	print_message("slowloris: cut after %d bytes a 100 ms apart (deadline %d ms)\n", trickled,
	              lim.request_timeout_ms);
	assert_true(cut);
	assert_true(trickled < max_bytes);
	close(fd);
	assert_int_equal(atomic_load(&s->hits), 1);
	server_stop(s);
}

static void test_idle_connections_are_cut_and_memory_comes_back(void **state)
{
	(void)state;
	/* within evhttp's listen backlog (128), so every connect completes at once */
	enum { IDLE = 120 };
	struct http_limits lim = {.idle_timeout_ms = 1000};
	struct server *s = server_start(&lim);
	int fds[IDLE];
	long before = rss_kib();

	for (int i = 0; i < IDLE; i++)
		fds[i] = connect_to(s->port);
	assert_int_equal(wait_connections(s, IDLE, READ_TIMEOUT_MS), IDLE);
	long open_kib = rss_kib();
	assert_int_equal(normal_request(s->port), 200); /* answered with all of them open */
	/* nothing read or written for a second: every one closed by the server, none left counted */
	for (int i = 0; i < IDLE; i++) {
		assert_true(sees_close(fds[i], READ_TIMEOUT_MS));
		close(fds[i]);
	}
	assert_int_equal(wait_connections(s, 0, READ_TIMEOUT_MS), 0);
	long after = rss_kib();
	print_message("%d idle connections: VmRSS %ld KiB before, %ld open, %ld after they were cut\n", IDLE,
	              before, open_kib, after);
	/* a wide margin: the allocator may keep what it got back; the exact proof is the count of 0 */
	assert_true(after - before < 8 * 1024);
	server_stop(s);
}

static void test_past_the_cap_new_connections_wait_for_a_free_slot(void **state)
{
	(void)state;
	enum { CAP = 8 };
	struct http_limits lim = {.max_connections = CAP};
	struct server *s = server_start(&lim);
	int fds[CAP];
	char out[RESP_MAX], c;

	for (int i = 0; i < CAP; i++)
		fds[i] = connect_to(s->port);
	assert_int_equal(wait_connections(s, CAP, READ_TIMEOUT_MS), CAP);
	/* the kernel completes the handshake; the server does not accept it while CAP are open */
	int late = connect_to(s->port);
	static const char get[] = "GET /count HTTP/1.1\r\nHost: lab\r\n\r\n";
	assert_true(write_full(late, get, sizeof(get) - 1));
	assert_int_equal(recv_byte(late, &c, 300), -1); /* silence: nothing answered it */
	assert_int_equal(http_server_connections(s->app.server), CAP);
	assert_int_equal(atomic_load(&s->hits), 0);
	/* one slot frees: the waiting connection is accepted and answered */
	close(fds[0]);
	assert_int_equal(http_read_response(late, out, sizeof(out)), 200);
	assert_int_equal(atomic_load(&s->hits), 1);
	assert_true(http_server_connections(s->app.server) <= CAP);
	close(late);
	for (int i = 1; i < CAP; i++)
		close(fds[i]);
	server_stop(s);
}

static void test_limits_out_of_range_are_refused(void **state)
{
	(void)state;
	char err[ERRLEN] = "";
	struct http_app app;
	assert_int_equal(http_app_open(&app, 0, err, sizeof(err)), 0);
	struct http_limits bad[] = {{.max_header_bytes = 10},
	                            {.idle_timeout_ms = -1},
	                            {.request_timeout_ms = 4 * 3600 * 1000},
	                            {.max_connections = -5}};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(http_server_set_limits(app.server, &bad[i], err, sizeof(err)), -1);
		assert_non_null(strstr(err, "http limits"));
	}
	struct http_limits zero = {0};
	assert_int_equal(http_server_set_limits(app.server, &zero, err, sizeof(err)), 0);
	http_app_stop(&app, NULL, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_bad_bytes_in_a_head_get_400_before_any_handler),
	        cmocka_unit_test(test_each_request_on_a_connection_is_checked_pipelined_ones_too),
	        cmocka_unit_test(test_heads_past_the_size_limit_are_refused),
	        cmocka_unit_test(test_a_64_mib_header_line_costs_the_server_little_memory),
	        cmocka_unit_test(test_a_slowloris_is_cut_by_the_request_deadline),
	        cmocka_unit_test(test_idle_connections_are_cut_and_memory_comes_back),
	        cmocka_unit_test(test_past_the_cap_new_connections_wait_for_a_free_slot),
	        cmocka_unit_test(test_limits_out_of_range_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
