/*
 * test_http_client.c — the blocking client against a real evhttp server of the suite's own
 * (http.h) on 127.0.0.1: methods with bodies (PATCH's needs its Content-Length), headers both
 * ways, keep-alive, no answer as status 0, bad calls refused.
 * needs: nothing (pure: the server is in this process)
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <string.h>

#include "child.h"
#include "http.h"
#include "http_client.h"

#define ERRLEN 256

/* Answers {"method", "body", "x"} with header X-Seen: the X-Test header it got. */
static void echo_cb(struct evhttp_request *req, void *arg)
{
	(void)arg;
	const char *method = "?";
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET:
		method = "GET";
		break;
	case EVHTTP_REQ_HEAD:
		method = "HEAD";
		break;
	case EVHTTP_REQ_PATCH:
		method = "PATCH";
		break;
	case EVHTTP_REQ_PUT:
		method = "PUT";
		break;
	default:
		break;
	}
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(in);
	char body[256] = "";
	evbuffer_copyout(in, body, n < sizeof(body) - 1 ? n : sizeof(body) - 1);
	const char *x = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Test");
	evhttp_add_header(evhttp_request_get_output_headers(req), "X-Seen", x ? x : "none");
	http_reply_json(req, 200, json_pack("{s:s,s:s}", "method", method, "body", body));
}

static void test_methods_bodies_and_headers_go_both_ways_on_one_connection(void **state)
{
	(void)state;
	char err[ERRLEN];
	struct http_app app;
	assert_int_equal(http_app_open(&app, 0, err, sizeof(err)), 0);
	http_server_route(app.server, "/echo", echo_cb, NULL);
	assert_int_equal(http_app_run(&app, err, sizeof(err)), 0);

	struct http_client *c = http_client_new(http_server_port(app.server), 2000, err, sizeof(err));
	assert_non_null(c);
	struct http_header h[] = {{"X-Test", "yes"}, {"Content-Type", "application/merge-patch+json"}};
	struct http_answer a;
	/* a PATCH with a body, then a GET on the same connection: the body did not leak into it */
	struct http_call patch = {"PATCH", "/echo", h, 2, "{\"a\":1}", 7};
	assert_int_equal(http_client_call(c, &patch, &a, err, sizeof(err)), 0);
	assert_int_equal(a.status, 200);
	assert_non_null(strstr(a.body, "\"method\":\"PATCH\""));
	assert_non_null(strstr(a.body, "\"body\":\"{\\\"a\\\":1}\""));
	assert_string_equal(http_answer_header(&a, "x-seen"), "yes");
	assert_string_equal(http_answer_header(&a, "Content-Type"), "application/json");
	assert_null(http_answer_header(&a, "X-Nothing"));
	http_answer_free(&a);
	assert_int_equal(http_server_connections(app.server), 1);

	struct http_call get = {"GET", "/echo?q=1", NULL, 0, NULL, 0};
	assert_int_equal(http_client_call(c, &get, &a, err, sizeof(err)), 0);
	assert_int_equal(a.status, 200);
	assert_non_null(strstr(a.body, "\"method\":\"GET\",\"body\":\"\""));
	assert_string_equal(http_answer_header(&a, "X-Seen"), "none");
	http_answer_free(&a);
	assert_int_equal(http_server_connections(app.server), 1);

	/* HEAD: headers, no body */
	struct http_call head = {"HEAD", "/echo", NULL, 0, NULL, 0};
	assert_int_equal(http_client_call(c, &head, &a, err, sizeof(err)), 0);
	assert_int_equal(a.status, 200);
	assert_int_equal(a.body_len, 0);
	http_answer_free(&a);

	/* an unknown path is the server's 404, an answer all the same */
	struct http_call missing = {"GET", "/nope", NULL, 0, NULL, 0};
	assert_int_equal(http_client_call(c, &missing, &a, err, sizeof(err)), 0);
	assert_int_equal(a.status, 404);
	http_answer_free(&a);

	/* a call that cannot be made is refused before anything is sent */
	struct http_call bad = {"BREW", "/echo", NULL, 0, NULL, 0};
	assert_int_equal(http_client_call(c, &bad, &a, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "BREW"));
	http_client_free(c);
	http_app_stop(&app, NULL, NULL);
}

static void test_nobody_listening_is_status_0_not_a_hang(void **state)
{
	(void)state;
	char err[ERRLEN];
	int port = child_free_port(err, sizeof(err));
	assert_true(port > 0);
	struct http_client *c = http_client_new(port, 1000, err, sizeof(err));
	assert_non_null(c);
	struct http_answer a;
	struct http_call get = {"GET", "/", NULL, 0, NULL, 0};
	assert_int_equal(http_client_call(c, &get, &a, err, sizeof(err)), 0);
	assert_int_equal(a.status, 0);
	assert_null(a.body);
	http_answer_free(&a);
	http_client_free(c);
	assert_null(http_client_new(0, 1000, err, sizeof(err)));
	assert_null(http_client_new(80, 0, err, sizeof(err)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_methods_bodies_and_headers_go_both_ways_on_one_connection),
	        cmocka_unit_test(test_nobody_listening_is_status_0_not_a_hang),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
