/*
 * test_http.c — http.h and load.h against each other: a real evhttp server on 127.0.0.1 in
 * its loop thread, driven by load_run from the test thread over real sockets. Pure: no
 * database or Redis. Counts are asserted exactly; times only within loose bounds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/queue.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "http.h"
#include "load.h"

#define ERRLEN    256
#define BODY_KEEP 256

/* A reply the /slow route owes: answered by its timer, or at teardown if the timer never fired. */
struct slow_reply {
	struct fixture *f;
	struct evhttp_request *req;
	struct event *timer;
	struct slow_reply *next;
};

/* One server per test. Fields below `port` belong to the loop thread. */
struct fixture {
	struct event_base *base;
	struct http_server *server;
	struct http_thread *thread;
	int port;
	uint64_t ok_hits;
	uint64_t flaky_hits;
	pthread_t route_tid;
	struct slow_reply *slow;
};

static void ok_cb(struct evhttp_request *req, void *arg)
{
	struct fixture *f = arg;
	f->ok_hits++;
	f->route_tid = pthread_self();
	http_reply_json(req, HTTP_OK, json_pack("{s:b}", "ok", 1));
}

/* 503 for every second request, counted on the server, so the client's 503 count is exact. */
static void flaky_cb(struct evhttp_request *req, void *arg)
{
	struct fixture *f = arg;
	if (++f->flaky_hits % 2 == 0)
		http_reply_error(req, 503, "busy, try again");
	else
		http_reply_json(req, HTTP_OK, json_pack("{s:b}", "ok", 1));
}

/* Echoes what http_query_long made of ?n=: the value, absent, or the error as a 400. */
static void echo_cb(struct evhttp_request *req, void *arg)
{
	(void)arg;
	char err[ERRLEN];
	long n = 0;
	int rc = http_query_long(req, "n", -1000, 1000, &n, err, sizeof(err));
	if (rc < 0)
		http_reply_error(req, HTTP_BADREQUEST, "%s", err);
	else if (rc == 0)
		http_reply_json(req, HTTP_OK, json_pack("{s:b}", "absent", 1));
	else
		http_reply_json(req, HTTP_OK, json_pack("{s:I}", "n", (json_int_t)n));
}

/* Parses the body as an object of at most 64 bytes; answers its key count or the error. */
static void json_cb(struct evhttp_request *req, void *arg)
{
	(void)arg;
	char err[ERRLEN];
	json_t *doc = http_read_json(req, 64, err, sizeof(err));
	if (!doc) {
		http_reply_error(req, HTTP_BADREQUEST, "%s", err);
		return;
	}
	http_reply_json(req, HTTP_OK, json_pack("{s:I}", "keys", (json_int_t)json_object_size(doc)));
	json_decref(doc);
}

/* A handler whose reply cannot be built: json_pack refuses a NULL string. */
static void broken_cb(struct evhttp_request *req, void *arg)
{
	(void)arg;
	http_reply_json(req, HTTP_OK, json_pack("{s:s}", "name", (const char *)NULL));
}

static void slow_unlink(struct slow_reply *sr)
{
	struct slow_reply **p = &sr->f->slow;
	while (*p != sr)
		p = &(*p)->next;
	*p = sr->next;
}

static void slow_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct slow_reply *sr = arg;
	slow_unlink(sr);
	http_reply_json(sr->req, HTTP_OK, json_pack("{s:b}", "late", 1));
	event_free(sr->timer);
	free(sr);
}

/* Answers after ?ms= milliseconds: longer than the client waits, in the timeout test. */
static void slow_cb(struct evhttp_request *req, void *arg)
{
	struct fixture *f = arg;
	char err[ERRLEN];
	long ms = 0;
	if (http_query_long(req, "ms", 0, 60000, &ms, err, sizeof(err)) != 1) {
		http_reply_error(req, HTTP_BADREQUEST, "ms is required");
		return;
	}
	struct slow_reply *sr = calloc(1, sizeof(*sr));
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	if (!sr || !(sr->timer = evtimer_new(f->base, slow_timer_cb, sr)) ||
	    evtimer_add(sr->timer, &tv) != 0) {
		free(sr);
		http_reply_error(req, HTTP_INTERNAL, "cannot arm the timer");
		return;
	}
	sr->f = f;
	sr->req = req;
	sr->next = f->slow;
	f->slow = sr;
}

/* On the loop thread at teardown: answer what /slow still owes, so evhttp frees every request. */
static void slow_flush_cb(void *arg)
{
	struct fixture *f = arg;
	while (f->slow) {
		struct slow_reply *sr = f->slow;
		f->slow = sr->next;
		event_free(sr->timer);
		http_reply_error(sr->req, 503, "server stopping");
		free(sr);
	}
}

static int setup(void **state)
{
	char err[ERRLEN];
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	f->base = http_base_new();
	if (!f->base)
		goto err;
	f->server = http_server_start(f->base, 0, err, sizeof(err));
	if (!f->server) {
		fprintf(stderr, "http_server_start: %s\n", err);
		goto err;
	}
	f->port = http_server_port(f->server);
	http_server_route(f->server, "/ok", ok_cb, f);
	http_server_route(f->server, "/flaky", flaky_cb, f);
	http_server_route(f->server, "/echo", echo_cb, f);
	http_server_route(f->server, "/json", json_cb, f);
	http_server_route(f->server, "/slow", slow_cb, f);
	http_server_route(f->server, "/broken", broken_cb, f);
	f->thread = http_thread_start(f->base, err, sizeof(err));
	if (!f->thread) {
		fprintf(stderr, "http_thread_start: %s\n", err);
		goto err;
	}
	*state = f;
	return 0;

err:
	http_server_free(f->server);
	if (f->base)
		event_base_free(f->base);
	free(f);
	return -1;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	http_thread_call(f->thread, slow_flush_cb, f);
	http_thread_stop(f->thread);
	http_server_free(f->server);
	event_base_free(f->base);
	free(f);
	return 0;
}

static struct load_config config_for(const struct fixture *f, const char *path, int clients, uint64_t max)
{
	struct load_config cfg = {
	        .port = f->port,
	        .path = path,
	        .clients = clients,
	        .max_requests = max,
	        .timeout_ms = 5000,
	};
	return cfg;
}

static uint64_t series_sum(const struct load_result *res)
{
	uint64_t sum = 0;
	for (int i = 0; i < res->series_len; i++)
		sum += res->series[i];
	return sum;
}

/*
 * Request cases driven through load_run: request_cb picks case seq, response_cb keeps what
 * came back, so each case is checked against its own answer whatever the client order.
 */
struct req_case {
	const char *path;
	enum evhttp_cmd_type method;
	const char *body; /* NULL: none */
	size_t body_len;  /* 0: strlen(body) */
	int want_code;
	const char *want_in_body; /* NULL: don't look */
	int got_code;
	int answered;
	char got_body[BODY_KEEP];
};

struct case_run {
	struct req_case *cases;
	size_t n;
};

static void case_request_cb(struct load_request *r, struct evhttp_request *req, int client, uint64_t seq,
                            void *arg)
{
	(void)client;
	struct case_run *run = arg;
	struct req_case *c = &run->cases[seq];
	snprintf(r->path, sizeof(r->path), "%s", c->path);
	if (c->method)
		r->method = c->method;
	if (c->body) {
		r->body = c->body;
		r->body_len = c->body_len ? c->body_len : strlen(c->body);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	}
}

static void case_response_cb(struct evhttp_request *req, int client, uint64_t seq, uint64_t latency_us,
                             void *arg)
{
	(void)client;
	(void)latency_us;
	struct case_run *run = arg;
	struct req_case *c = &run->cases[seq];
	c->answered++;
	if (!req)
		return;
	c->got_code = evhttp_request_get_response_code(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	if (len >= sizeof(c->got_body))
		len = sizeof(c->got_body) - 1;
	evbuffer_copyout(in, c->got_body, len);
	c->got_body[len] = '\0';
}

static void run_cases(struct fixture *f, struct req_case *cases, size_t n)
{
	char err[ERRLEN];
	struct load_result res;
	struct case_run run = {cases, n};
	struct load_config cfg = config_for(f, "/", 2, n);
	cfg.request_cb = case_request_cb;
	cfg.response_cb = case_response_cb;
	cfg.arg = &run;

	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), 0);
	assert_int_equal(res.sent, n);
	assert_int_equal(res.completed, n);
	assert_int_equal(res.errors, 0);
	for (size_t i = 0; i < n; i++) {
		struct req_case *c = &cases[i];
		if (c->answered != 1 || c->got_code != c->want_code ||
		    (c->want_in_body && !strstr(c->got_body, c->want_in_body)))
			fail_msg("%s (%s): want %d with \"%s\", got %d (answered %d) with %s", c->path,
			         c->body ? c->body : "no body", c->want_code,
			         c->want_in_body ? c->want_in_body : "", c->got_code, c->answered,
			         c->got_body);
		/* every reply of ours, errors included, is one JSON object */
		if (c->want_code != 413) {
			json_error_t jerr;
			json_t *doc = json_loads(c->got_body, 0, &jerr);
			assert_non_null(doc);
			assert_true(json_is_object(doc));
			json_decref(doc);
		}
	}
}

static void test_server_binds_loopback_only_on_a_real_port(void **state)
{
	struct fixture *f = *state;
	int found = 0;

	assert_true(f->port > 0 && f->port <= 65535);
	/* the listening socket is ours: find it by its port and ask the kernel where it is bound */
	for (int fd = 3; fd < 1024; fd++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int listening = 0;
		socklen_t optlen = sizeof(listening);
		if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
			continue;
		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) != 0 || !listening)
			continue;
		if (ss.ss_family == AF_INET6) {
			const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&ss;
			assert_int_not_equal(ntohs(a6->sin6_port), f->port);
			continue;
		}
		const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
		if (ss.ss_family != AF_INET || ntohs(a->sin_port) != f->port)
			continue;
		assert_int_equal(ntohl(a->sin_addr.s_addr), INADDR_LOOPBACK);
		found++;
	}
	assert_int_equal(found, 1);
}

static void test_route_added_later_replaces_the_earlier_one(void **state)
{
	struct fixture *f = *state;
	/* /flaky now answers like /ok: the first call of flaky_cb would have been a 200 too, so ask twice */
	http_server_route(f->server, "/flaky", ok_cb, f);
	struct req_case cases[] = {
	        {.path = "/flaky", .want_code = 200, .want_in_body = "\"ok\":true"},
	        {.path = "/flaky", .want_code = 200, .want_in_body = "\"ok\":true"},
	};
	run_cases(f, cases, 2);
	assert_int_equal(f->flaky_hits, 0);
}

static void count_hits_cb(void *arg)
{
	struct fixture *f = arg;
	f->flaky_hits = f->ok_hits; /* copied on the loop thread, read after the call returns */
}

static void test_load_sends_exactly_max_requests_and_all_succeed(void **state)
{
	struct fixture *f = *state;
	char err[ERRLEN];
	struct load_result res;
	const uint64_t k = 300;
	struct load_config cfg = config_for(f, "/ok", 8, k);

	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), 0);
	assert_int_equal(res.sent, k);
	assert_int_equal(res.completed, k);
	assert_int_equal(res.status_2xx, k);
	assert_int_equal(res.errors, 0);
	assert_int_equal(res.status_4xx + res.status_5xx + res.status_other, 0);
	assert_int_equal(res.latency.count, k);
	assert_int_equal(res.latency_2xx.count, k);
	assert_int_equal(series_sum(&res), k);
	assert_true(res.series_len >= 1);
	assert_int_equal(res.series_interval_ms, 1000);
	assert_true(res.elapsed_s > 0);
	assert_true(res.rps > 0 && res.rps_2xx == res.rps);
	/* and the server saw exactly as many: read its counter on its own thread */
	assert_int_equal(http_thread_call(f->thread, count_hits_cb, f), 0);
	assert_int_equal(f->flaky_hits, k);
}

static void test_every_other_request_answered_503_is_counted_exactly(void **state)
{
	struct fixture *f = *state;
	char err[ERRLEN];
	struct load_result res;
	struct load_config cfg = config_for(f, "/flaky", 4, 200);

	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), 0);
	assert_int_equal(res.completed, 200);
	assert_int_equal(res.status_503, 100);
	assert_int_equal(res.status_5xx, 100);
	assert_int_equal(res.status_2xx, 100);
	assert_int_equal(res.latency.count, 200);
	assert_int_equal(res.latency_2xx.count, 100);
	assert_int_equal(res.errors, 0);
}

struct progress_seen {
	int calls;
	double last_elapsed_s;
};

static void count_progress_cb(const struct load_progress *p, void *arg)
{
	struct progress_seen *seen = arg;
	/* each report comes later in the run than the one before */
	assert_true(p->elapsed_s > seen->last_elapsed_s);
	seen->last_elapsed_s = p->elapsed_s;
	seen->calls++;
}

static void test_duration_limited_run_stops_after_its_duration(void **state)
{
	struct fixture *f = *state;
	char err[ERRLEN];
	struct load_result res;
	struct progress_seen progress = {0, 0.0};
	struct load_config cfg = config_for(f, "/ok", 4, 0);
	cfg.duration_ms = 400;
	cfg.series_interval_ms = 100;
	cfg.progress_cb = count_progress_cb;
	cfg.arg = &progress;

	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), 0);
	/* not before its duration; the upper bound only catches a run that never stops */
	assert_true(res.elapsed_s >= 0.35);
	assert_true(res.elapsed_s < 20.0);
	assert_true(res.sent > 0);
	assert_int_equal(res.completed, res.sent);
	assert_int_equal(res.errors, 0);
	assert_int_equal(series_sum(&res), res.completed);
	assert_int_equal(res.series_interval_ms, 100);
	assert_true(res.series_len >= 4);
	assert_true(progress.calls >= 1);
}

/* Answers with the path it was given, so a test sees which prefix route claimed a request. */
static void path_cb(struct evhttp_request *req, void *arg)
{
	http_reply_json(req, HTTP_OK,
	                json_pack("{s:s,s:s}", "route", (const char *)arg, "path", http_request_path(req)));
}

static void test_prefix_route_serves_longer_paths_and_the_longest_prefix_wins(void **state)
{
	struct fixture *f = *state;
	http_server_route_prefix(f->server, "/v1/users/", path_cb, "users");
	http_server_route_prefix(f->server, "/v1/users/admin/", path_cb, "admins");
	http_server_route_prefix(f->server, "/ok", path_cb, "ok-prefix");
	struct req_case cases[] = {
	        {.path = "/v1/users/42?x=1",
	         .want_code = 200,
	         .want_in_body = "\"route\":\"users\",\"path\":\"/v1/users/42\""},
	        {.path = "/v1/users/admin/7", .want_code = 200, .want_in_body = "\"route\":\"admins\""},
	        /* the prefix alone is not a resource: nothing after it */
	        {.path = "/v1/users/", .want_code = 404, .want_in_body = "no route for /v1/users/"},
	        {.path = "/v1/user", .want_code = 404, .want_in_body = "\"error\""},
	        /* an exact route wins over a prefix that also matches */
	        {.path = "/ok", .want_code = 200, .want_in_body = "\"ok\":true"},
	        {.path = "/okay", .want_code = 200, .want_in_body = "\"route\":\"ok-prefix\""},
	};
	run_cases(f, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_unknown_path_gets_404_with_a_json_error(void **state)
{
	struct req_case cases[] = {
	        {.path = "/no/such/route",
	         .want_code = 404,
	         .want_in_body = "\"error\":\"no route for /no/such/route\""},
	        {.path = "/ok/", .want_code = 404, .want_in_body = "\"error\""},
	};
	run_cases(*state, cases, 2);
}

static void test_query_long_accepts_whole_numbers_in_range_only(void **state)
{
	struct req_case cases[] = {
	        {.path = "/echo", .want_code = 200, .want_in_body = "\"absent\":true"},
	        {.path = "/echo?other=1", .want_code = 200, .want_in_body = "\"absent\":true"},
	        {.path = "/echo?n=42", .want_code = 200, .want_in_body = "\"n\":42"},
	        {.path = "/echo?n=-7&x=1", .want_code = 200, .want_in_body = "\"n\":-7"},
	        {.path = "/echo?n=1000", .want_code = 200, .want_in_body = "\"n\":1000"},
	        {.path = "/echo?n=12x", .want_code = 400, .want_in_body = "whole number"},
	        {.path = "/echo?n=", .want_code = 400, .want_in_body = "whole number"},
	        {.path = "/echo?n=%2012", .want_code = 400, .want_in_body = "whole number"},
	        {.path = "/echo?n=1.5", .want_code = 400, .want_in_body = "whole number"},
	        {.path = "/echo?n=%FF", .want_code = 400, .want_in_body = "whole number, got \\\"?\\\""},
	        {.path = "/echo?n=%0A5", .want_code = 400, .want_in_body = "whole number"},
	        {.path = "/echo?n=1001", .want_code = 400, .want_in_body = "-1000..1000"},
	        {.path = "/echo?n=99999999999999999999999", .want_code = 400, .want_in_body = "-1000..1000"},
	        /* read up to the NUL, "5%00x" would be 5 */
	        {.path = "/echo?n=5%00x", .want_code = 400, .want_in_body = "NUL byte"},
	};
	run_cases(*state, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_query_parse_refuses_a_nul_and_broken_pairs_and_decodes_the_rest(void **state)
{
	(void)state;
	char err[128];
	struct evkeyvalq q;
	assert_int_equal(http_query_parse("a=1&b=x%20y", &q, err, sizeof(err)), 0);
	assert_string_equal(evhttp_find_header(&q, "b"), "x y");
	evhttp_clear_headers(&q);
	assert_int_equal(http_query_parse(NULL, &q, err, sizeof(err)), 0);
	assert_null(TAILQ_FIRST(&q));
	assert_int_equal(http_query_parse("cursor=abc%00junk", &q, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "%00"));
	evhttp_clear_headers(&q);
	/* a literal "%00" arrives as %2500 and is no NUL */
	assert_int_equal(http_query_parse("t=%2500", &q, err, sizeof(err)), 0);
	assert_string_equal(evhttp_find_header(&q, "t"), "%00");
	evhttp_clear_headers(&q);
	assert_int_equal(http_query_parse("a=1&&=", &q, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "key=value"));
	evhttp_clear_headers(&q);
}

static void test_read_json_rejects_malformed_large_and_non_object_bodies(void **state)
{
	static char huge[1024 * 1024 + 16];
	memset(huge, ' ', sizeof(huge));
	huge[0] = '{';
	huge[sizeof(huge) - 1] = '}';
	struct req_case cases[] = {
	        {.path = "/json",
	         .method = EVHTTP_REQ_POST,
	         .body = "{\"a\": 1,\n \"b\": }",
	         .want_code = 400,
	         .want_in_body = "line 2, column"},
	        {.path = "/json",
	         .method = EVHTTP_REQ_POST,
	         .body = "",
	         .want_code = 400,
	         .want_in_body = "empty"},
	        {.path = "/json", .method = EVHTTP_REQ_POST, .want_code = 400, .want_in_body = "empty"},
	        {.path = "/json",
	         .method = EVHTTP_REQ_POST,
	         .body = "{\"padding\": "
	                 "\"0123456789012345678901234567890123456789012345678901234567890123\"}",
	         .want_code = 400,
	         .want_in_body = "too large"},
	        {.path = "/json",
	         .method = EVHTTP_REQ_POST,
	         .body = "[1, 2]",
	         .want_code = 400,
	         .want_in_body = "object"},
	        {.path = "/json",
	         .method = EVHTTP_REQ_PUT,
	         .body = "42",
	         .want_code = 400,
	         .want_in_body = "object"},
	        {.path = "/json",
	         .method = EVHTTP_REQ_POST,
	         .body = "{\"a\": 1, \"a\": 2}",
	         .want_code = 400,
	         .want_in_body = "duplicate"},
	        {.path = "/json",
	         .method = EVHTTP_REQ_PATCH,
	         .body = "{\"a\": 1, \"b\": [true]}",
	         .want_code = 200,
	         .want_in_body = "\"keys\":2"},
	        /* over the server's 1 MiB: evhttp refuses it before any route sees it */
	        {.path = "/json",
	         .method = EVHTTP_REQ_POST,
	         .body = huge,
	         .body_len = sizeof(huge),
	         .want_code = 413},
	};
	run_cases(*state, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_a_reply_that_cannot_be_built_is_a_500_with_a_fixed_body(void **state)
{
	struct req_case cases[] = {
	        {.path = "/broken",
	         .want_code = 500,
	         .want_in_body = "{\"error\":\"internal error: reply could not be built\"}"},
	        /* and the connection still serves the next request */
	        {.path = "/ok", .want_code = 200, .want_in_body = "\"ok\":true"},
	};
	run_cases(*state, cases, 2);
}

/* A port nothing listens on: bound (so no one else takes it) but never listened on. */
static int closed_port(int *fd_out)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*fd_out = fd;
	return ntohs(a.sin_port);
}

static void count_null_cb(struct evhttp_request *req, int client, uint64_t seq, uint64_t latency_us,
                          void *arg)
{
	(void)client;
	(void)seq;
	(void)latency_us;
	if (!req)
		(*(int *)arg)++;
}

static void test_refused_connections_count_as_errors_and_the_run_ends(void **state)
{
	struct fixture *f = *state;
	char err[ERRLEN];
	struct load_result res;
	int fd = -1, no_response = 0;
	int port = closed_port(&fd);
	assert_true(port > 0);
	struct load_config cfg = config_for(f, "/ok", 3, 30);
	cfg.port = port;
	cfg.response_cb = count_null_cb;
	cfg.arg = &no_response;

	int rc = load_run(&cfg, &res, err, sizeof(err));
	close(fd);
	assert_int_equal(rc, 0);
	assert_int_equal(res.sent, 30);
	assert_int_equal(res.errors, 30);
	assert_int_equal(res.completed, 0);
	assert_int_equal(res.timeouts, 0);
	assert_int_equal(res.latency.count, 0);
	assert_int_equal(no_response, 30);
}

static void test_answers_slower_than_the_timeout_count_as_timeouts(void **state)
{
	struct fixture *f = *state;
	char err[ERRLEN];
	struct load_result res;
	int no_response = 0;
	struct load_config cfg = config_for(f, "/slow?ms=2000", 2, 4);
	cfg.timeout_ms = 150;
	cfg.response_cb = count_null_cb;
	cfg.arg = &no_response;

	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), 0);
	assert_int_equal(res.sent, 4);
	assert_int_equal(res.errors, 4);
	assert_int_equal(res.timeouts, 4);
	assert_int_equal(res.completed, 0);
	assert_int_equal(no_response, 4);
	/* the load goes on after a timeout, on a new connection: the server got all four */
	assert_true(res.elapsed_s >= 0.25);

	/* and a fast route on the same server still answers normally afterwards */
	cfg = config_for(f, "/ok", 2, 10);
	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), 0);
	assert_int_equal(res.status_2xx, 10);
}

static void test_load_rejects_a_run_without_any_limit(void **state)
{
	struct fixture *f = *state;
	char err[ERRLEN] = "";
	struct load_result res;
	struct load_config cfg = config_for(f, "/ok", 1, 0);

	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "duration_ms"));
	cfg = config_for(f, "no-slash", 1, 1);
	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), -1);
	cfg = config_for(f, "/ok", 0, 1);
	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), -1);
}

struct call_probe {
	struct fixture *f;
	pthread_t tid;
	pthread_t route_tid; /* copied here, on the thread that wrote it */
	int ran;
};

static void probe_cb(void *arg)
{
	struct call_probe *p = arg;
	p->tid = pthread_self();
	p->route_tid = p->f->route_tid;
	p->ran = 1;
}

/* Sends req on a new connection and reads everything until the server closes it. */
static size_t raw_stream(int port, const char *req, char *out, size_t outlen)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = {.tv_sec = 5};
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
	size_t n = 0;
	ssize_t r;
	while (n + 1 < outlen && (r = recv(fd, out + n, outlen - 1 - n, 0)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(fd);
	return n;
}

/* HEAD then GET on one keep-alive connection: the HEAD's head is followed by the GET's status
 * line, not by a body (which the client would read as its next response). */
static void test_head_is_answered_without_a_body(void **state)
{
	struct fixture *f = *state;
	static const char *const paths[] = {"/ok", "/no/such/route"};
	for (size_t i = 0; i < 2; i++) {
		char req[512], out[4096];
		snprintf(req, sizeof(req),
		         "HEAD %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
		         "GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
		         paths[i]);
		raw_stream(f->port, req, out, sizeof(out));
		const char *end = strstr(out, "\r\n\r\n");
		assert_non_null(end);
		if (strncmp(end + 4, "HTTP/1.1 200", 12) != 0)
			fail_msg("HEAD %s: after its head came \"%.40s\"", paths[i], end + 4);
		assert_non_null(strstr(end, "\"ok\":true"));
	}
}

static void test_thread_call_runs_on_the_loop_thread_and_waits_for_it(void **state)
{
	struct fixture *f = *state;
	char err[ERRLEN];
	struct load_result res;
	struct call_probe probe = {.f = f};

	/* one request, so a route has recorded which thread the loop runs on */
	struct load_config cfg = config_for(f, "/ok", 1, 1);
	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), 0);
	assert_int_equal(res.status_2xx, 1);

	assert_int_equal(http_thread_call(f->thread, probe_cb, &probe), 0);
	assert_int_equal(probe.ran, 1);
	assert_false(pthread_equal(probe.tid, pthread_self()));
	assert_true(pthread_equal(probe.tid, probe.route_tid));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_server_binds_loopback_only_on_a_real_port, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_route_added_later_replaces_the_earlier_one, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_load_sends_exactly_max_requests_and_all_succeed, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_every_other_request_answered_503_is_counted_exactly,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(test_duration_limited_run_stops_after_its_duration, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(
	                test_prefix_route_serves_longer_paths_and_the_longest_prefix_wins, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_unknown_path_gets_404_with_a_json_error, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_query_long_accepts_whole_numbers_in_range_only, setup,
	                                        teardown),
	        cmocka_unit_test(test_query_parse_refuses_a_nul_and_broken_pairs_and_decodes_the_rest),
	        cmocka_unit_test_setup_teardown(test_read_json_rejects_malformed_large_and_non_object_bodies,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(test_a_reply_that_cannot_be_built_is_a_500_with_a_fixed_body,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(test_refused_connections_count_as_errors_and_the_run_ends,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(test_answers_slower_than_the_timeout_count_as_timeouts, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_load_rejects_a_run_without_any_limit, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_head_is_answered_without_a_body, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_thread_call_runs_on_the_loop_thread_and_waits_for_it,
	                                        setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
