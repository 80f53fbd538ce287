/*
 * test_versioning.c — lab-versioning's claims, against the real PostgreSQL and a real nginx.
 * needs: postgres
 *
 * The API's contract is checked request by request with raw bytes (status codes, Content-Type,
 * Vary, Cache-Control, Deprecation, Sunset, Link, the error bodies); the run through its judge
 * (the verdict must be demonstrated) and the counts behind it: wrong answers and hits through
 * nginx, v1 calls in nginx's access log and at the API. The Ctrl-C and --serve tests check that
 * no nginx is left running and what is left on disk. No Redis: the lab uses none.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"
#include "upstream.h"

#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "child.h"
#include "pg.h"
#include "versioning.h"

struct group {
	struct versioning_config cfg; /* first: tests read *state as the config */
	char nginx[PATH_MAX];
	struct versioning_api *api;
	struct versioning_cache *cache;
	int port, cache_port;
};

static int group_setup(void **state)
{
	static struct group g;
	char err[1024], url[256];
	versioning_config_default(&g.cfg, true);
	/* small: the run test's counts need only a few users asked for many times */
	g.cfg.users = 10;
	g.cfg.direct_requests = 20;
	g.cfg.cache_requests = 200;
	g.cfg.client_requests = 20;
	if (versioning_find_nginx(g.nginx, sizeof(g.nginx), err, sizeof(err)) < 0) {
		fprintf(stderr, "test_versioning: %s\n", err);
		return -1;
	}
	g.cfg.nginx = g.nginx;
	if (versioning_setup(&g.cfg, err, sizeof(err)) < 0 ||
	    !(g.api = versioning_api_start(&g.cfg, 0, err, sizeof(err))) ||
	    !(g.cache = versioning_cache_start(g.nginx, versioning_api_port(g.api), 0, err, sizeof(err)))) {
		pg_url_redact(g.cfg.pg_url, url, sizeof(url));
		fprintf(stderr,
		        "test_versioning: cannot set up against %s: %s (start the servers: make up)\n", url,
		        err);
		return -1;
	}
	g.port = versioning_api_port(g.api);
	g.cache_port = versioning_cache_port(g.cache);
	*state = &g;
	return 0;
}

static int group_teardown(void **state)
{
	struct group *g = *state;
	char err[512];
	versioning_cache_stop(g->cache);
	versioning_api_stop(g->api);
	versioning_teardown(&g->cfg, err, sizeof(err));
	return 0;
}

/* ---- raw requests ---- */

static char resp[16384];

/* GET target with extra header lines ("Accept: ...\r\n"); the status, the response in resp. */
static int get(int port, const char *target, const char *extra)
{
	char req[1024];
	snprintf(req, sizeof(req),
	         "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test-versioning\r\n%s"
	         "Connection: close\r\n\r\n",
	         target, extra ? extra : "");
	return http_exchange(port, req, strlen(req), resp, sizeof(resp));
}

/* The value of header name in resp, or NULL. */
static const char *hdr(const char *name)
{
	static char value[512];
	char want[128];
	snprintf(want, sizeof(want), "\r\n%s:", name);
	const char *h = strcasestr(resp, want);
	const char *end = strstr(resp, "\r\n\r\n");
	if (!h || (end && h > end))
		return NULL;
	h += strlen(want);
	while (*h == ' ')
		h++;
	snprintf(value, sizeof(value), "%.*s", (int)strcspn(h, "\r\n"), h);
	return value;
}

static json_t *body(void)
{
	const char *b = strstr(resp, "\r\n\r\n");
	assert_non_null(b);
	b += 4;
	/* nginx relays the API's HTTP/1.0 answer (no Content-Length) chunked: one chunk here */
	const char *te = hdr("Transfer-Encoding");
	if (te && strcmp(te, "chunked") == 0)
		b = strstr(b, "\r\n") + 2;
	json_t *doc = json_loads(b, JSON_DISABLE_EOF_CHECK, NULL);
	if (!doc)
		fail_msg("not JSON: %s", b);
	return doc;
}

static void assert_header(const char *name, const char *want)
{
	const char *v = hdr(name);
	if (!v || strcmp(v, want) != 0)
		fail_msg("%s: got \"%s\", want \"%s\" in\n%s", name, v ? v : "(none)", want, resp);
}

static void assert_v1(json_t *doc)
{
	assert_true(json_is_string(json_object_get(doc, "name")));
	assert_true(json_is_real(json_object_get(doc, "price")));
	assert_null(json_object_get(doc, "given_name"));
}

static void assert_v2(json_t *doc)
{
	assert_true(json_is_string(json_object_get(doc, "given_name")));
	assert_true(json_is_string(json_object_get(doc, "family_name")));
	assert_true(json_is_integer(json_object_get(doc, "price_cents")));
	assert_null(json_object_get(doc, "name"));
}

/* The same user in both versions: the name split, the dollars become cents. */
static void test_v1_and_v2_are_the_same_row_with_the_breaking_change(void **state)
{
	struct group *g = *state;
	assert_int_equal(get(g->port, "/v1/users/3", NULL), 200);
	json_t *v1 = body();
	assert_int_equal(get(g->port, "/v2/users/3", NULL), 200);
	json_t *v2 = body();
	assert_v1(v1);
	assert_v2(v2);
	char name[128];
	snprintf(name, sizeof(name), "%s %s", json_string_value(json_object_get(v2, "given_name")),
	         json_string_value(json_object_get(v2, "family_name")));
	assert_string_equal(json_string_value(json_object_get(v1, "name")), name);
	double price = json_real_value(json_object_get(v1, "price"));
	assert_true(price * 100 > json_integer_value(json_object_get(v2, "price_cents")) - 0.001);
	assert_true(price * 100 < json_integer_value(json_object_get(v2, "price_cents")) + 0.001);
	/* the added field, in both (cfg.added_field is on, as under --serve) */
	assert_non_null(json_object_get(v1, "locale"));
	assert_non_null(json_object_get(v2, "locale"));
	json_decref(v1);
	json_decref(v2);
}

static void test_path_versioning_headers(void **state)
{
	struct group *g = *state;
	assert_int_equal(get(g->port, "/v1/users/1", NULL), 200);
	assert_header("Content-Type", "application/json");
	assert_header("Cache-Control", "public, max-age=60");
	assert_null(hdr("Vary"));
	assert_true(hdr("Deprecation")[0] == '@');
	assert_non_null(strstr(hdr("Sunset"), " GMT"));
	assert_header("Link", "</v2/users/1>; rel=\"successor-version\"");
	assert_int_equal(get(g->port, "/v2/users/1", NULL), 200);
	assert_null(hdr("Deprecation"));
	assert_null(hdr("Sunset"));
	assert_null(hdr("Link"));
}

static void test_header_versioning_negotiates_and_says_vary(void **state)
{
	struct group *g = *state;
	assert_int_equal(get(g->port, "/users/1", "Accept: " VERSIONING_MEDIA_V2 "\r\n"), 200);
	assert_header("Content-Type", VERSIONING_MEDIA_V2);
	assert_header("Vary", "Accept");
	assert_null(hdr("Deprecation"));
	json_t *doc = body();
	assert_v2(doc);
	json_decref(doc);
	assert_int_equal(get(g->port, "/users/1", "Accept: " VERSIONING_MEDIA_V1 "\r\n"), 200);
	assert_header("Content-Type", VERSIONING_MEDIA_V1);
	assert_header("Link", "</users/1>; rel=\"successor-version\"; type=\"" VERSIONING_MEDIA_V2 "\"");
	/* no version asked: v1 (the oldest served), as plain JSON, still varying on Accept */
	assert_int_equal(get(g->port, "/users/1", NULL), 200);
	assert_header("Content-Type", "application/json");
	assert_header("Vary", "Accept");
	assert_non_null(hdr("Deprecation"));
	/* q-values: the preferred known version wins */
	assert_int_equal(get(g->port, "/users/1",
	                     "Accept: " VERSIONING_MEDIA_V1 ";q=0.5, " VERSIONING_MEDIA_V2 "\r\n"),
	                 200);
	assert_header("Content-Type", VERSIONING_MEDIA_V2);
}

static void test_query_versioning_and_the_query_wins_over_accept(void **state)
{
	struct group *g = *state;
	assert_int_equal(get(g->port, "/users/2?version=2", "Accept: " VERSIONING_MEDIA_V1 "\r\n"), 200);
	assert_header("Content-Type", "application/json");
	assert_null(hdr("Vary"));
	json_t *doc = body();
	assert_v2(doc);
	json_decref(doc);
	assert_int_equal(get(g->port, "/users/2?version=1", NULL), 200);
	assert_header("Link", "</users/2?version=2>; rel=\"successor-version\"");
}

/* An error body: Content-Type application/json, {"error": "<contains want>"}. */
static void assert_error(int status, int want_status, const char *want)
{
	if (status != want_status)
		fail_msg("status %d, want %d:\n%s", status, want_status, resp);
	assert_header("Content-Type", "application/json");
	json_t *doc = body();
	const char *msg = json_string_value(json_object_get(doc, "error"));
	if (!msg || !strstr(msg, want))
		fail_msg("error \"%s\" does not say \"%s\"", msg ? msg : "(none)", want);
	json_decref(doc);
}

/* The API's count of v1 answers to this test's User-Agent (its only state a request can change). */
static long long v1_calls_of_the_test(int port)
{
	assert_int_equal(get(port, "/stats/v1-calls", NULL), 200);
	json_t *doc = body();
	long long n =
	        json_integer_value(json_object_get(json_object_get(doc, "v1_calls"), "test-versioning"));
	json_decref(doc);
	return n;
}

static void test_unknown_versions_and_bad_requests_get_one_clear_json_error(void **state)
{
	struct group *g = *state;
	long long v1_before = v1_calls_of_the_test(g->port);
	assert_error(get(g->port, "/users/1", "Accept: application/vnd.backendlabs.v9+json\r\n"), 406,
	             "no version application/vnd.backendlabs.v9+json");
	json_t *doc = body();
	json_t *supported = json_object_get(doc, "supported");
	assert_int_equal(json_array_size(supported), 3);
	assert_string_equal(json_string_value(json_array_get(supported, 1)), VERSIONING_MEDIA_V2);
	json_decref(doc);
	assert_error(get(g->port, "/users/1", "Accept: text/html\r\n"), 406, "none of the media types");
	assert_error(get(g->port, "/v3/users/1", NULL), 404, "no version v3");
	assert_error(get(g->port, "/users/1?version=3", NULL), 400, "no version=3");
	assert_error(get(g->port, "/users/1?version=two", NULL), 400, "version must be");
	assert_error(get(g->port, "/v1/users/999999", NULL), 404, "no user 999999");
	assert_error(get(g->port, "/v1/users/abc", NULL), 404, "no user");
	assert_error(get(g->port, "/users/1",
	                 "Accept: " VERSIONING_MEDIA_V1 "\r\nAccept: " VERSIONING_MEDIA_V2 "\r\n"),
	             400, "Accept");
	const char post[] =
	        "POST /v1/users/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
	assert_int_equal(http_exchange(g->port, post, sizeof(post) - 1, resp, sizeof(resp)), 405);
	assert_header("Allow", "GET, HEAD");
	assert_error(get(g->port, "/users/1?version=1&version=2", NULL), 400, "given once");
	assert_error(get(g->port, "/users/1?version=", NULL), 400, "version must be");
	/* not one of them was answered as v1: the count of v1 callers did not move */
	assert_int_equal(v1_calls_of_the_test(g->port), v1_before);
	assert_int_equal(get(g->port, "/v1/users/1", NULL), 200);
	assert_int_equal(v1_calls_of_the_test(g->port), v1_before + 1);
}

/* Through nginx with Vary: Accept, the second Accept is a miss of its own and gets its own body. */
static void test_the_cache_keeps_a_variant_per_accept_with_vary(void **state)
{
	struct group *g = *state;
	assert_int_equal(get(g->cache_port, "/users/4", "Accept: " VERSIONING_MEDIA_V1 "\r\n"), 200);
	assert_header("X-Cache-Status", "MISS");
	assert_int_equal(get(g->cache_port, "/users/4", "Accept: " VERSIONING_MEDIA_V1 "\r\n"), 200);
	assert_header("X-Cache-Status", "HIT");
	assert_int_equal(get(g->cache_port, "/users/4", "Accept: " VERSIONING_MEDIA_V2 "\r\n"), 200);
	assert_header("X-Cache-Status", "MISS");
	assert_header("Content-Type", VERSIONING_MEDIA_V2);
	json_t *doc = body();
	assert_v2(doc);
	json_decref(doc);
	assert_int_equal(get(g->cache_port, "/users/4", "Accept: " VERSIONING_MEDIA_V2 "\r\n"), 200);
	assert_header("X-Cache-Status", "HIT");
	/* the same version spelled another way is another variant: Vary keys on the header's bytes */
	assert_int_equal(get(g->cache_port, "/users/4", "Accept: " VERSIONING_MEDIA_V2 ", */*;q=0.1\r\n"),
	                 200);
	assert_header("X-Cache-Status", "MISS");
	assert_header("Content-Type", VERSIONING_MEDIA_V2);
	/* who called v1, as the API saw it: the test's one miss, not the hit */
	assert_int_equal(get(g->port, "/stats/v1-calls", NULL), 200);
	doc = body();
	assert_true(json_integer_value(
	                    json_object_get(json_object_get(doc, "v1_calls"), "test-versioning")) >= 1);
	json_decref(doc);
}

static void test_run_demonstrates_the_claim_and_the_counts_agree(void **state)
{
	struct group *g = *state;
	struct versioning_result *r = calloc(1, sizeof(*r));
	char err[1024];
	assert_non_null(r);
	const char *tmp = getenv("TMPDIR");
	tmp = tmp && *tmp ? tmp : "/tmp";
	/* the group's own cache has one */
	int dirs_before = lab_tmpdirs(tmp, "versioning", getpid());
	struct versioning_config cfg = g->cfg;
	struct lab_answers answers = {0};
	cfg.hooks = lab_answers_hooks(&answers, &cfg, r);
	if (versioning_run(&cfg, r, err, sizeof(err)) < 0)
		fail_msg("versioning_run: %s", err);
	struct lab_verdict v;
	versioning_judge(r, &v);
	if (!v.demonstrated)
		fail_msg("not demonstrated: %s", v.evidence);
	/* --predict's answers: the strict reader broke (b); the wrong share is the count below, and
	 * the reasoned answer (half of what the first answer per user serves) is within its ±10
	 * points; only the edge's log has all of mobile-ios's v1 calls (b) */
	lab_assert_every_phase_asks(&answers, VERSIONING_PHASES);
	assert_true(lab_answer(&answers, "direct") == 1);
	const struct versioning_cache_row *nv = &r->rows[ROW_HEADER_NO_VARY];
	double wrong_pct = lab_answer(&answers, "cache");
	assert_true(wrong_pct == 100.0 * nv->wrong / nv->requests);
	double reasoned = 50.0 * (cfg.cache_requests - cfg.users) / cfg.cache_requests;
	double within = NAN; /* the question's own margin, not retyped here */
	for (int i = 0; i < answers.n; i++)
		if (!strcmp(answers.a[i].phase, "cache"))
			within = answers.a[i].q->within;
	if (!(fabs(wrong_pct - reasoned) <= within))
		fail_msg("wrong answers %.1f%%, the reasoned %.1f%% is not within %g points", wrong_pct,
		         reasoned, within);
	assert_true(lab_answer(&answers, "deprecation") == 1);
	/* phase 1: every request right, in every approach and version */
	for (int a = 0; a < VERSIONING_APPROACHES; a++)
		for (int k = 0; k < 2; k++) {
			assert_int_equal(r->direct[a][k].requests, g->cfg.direct_requests);
			assert_int_equal(r->direct[a][k].correct, g->cfg.direct_requests);
			assert_int_equal(r->direct[a][k].deprecation_right, g->cfg.direct_requests);
		}
	assert_string_equal(r->direct[VERSIONING_HEADER][1].content_type, VERSIONING_MEDIA_V2);
	assert_int_equal(r->errors[0].rs.status, 406);
	assert_int_equal(r->errors[1].rs.status, 404);
	assert_int_equal(r->errors[2].rs.status, 400);
	assert_true(r->added.tolerant_after);
	assert_false(r->added.strict_after); /* what a strict reader costs: the added field breaks it */
	/* phase 2: wrong answers only for header versioning without Vary, and a lower hit ratio with it */
	const struct versioning_cache_row *rows = r->rows;
	assert_true(rows[ROW_HEADER_NO_VARY].wrong > 0);
	assert_true(rows[ROW_HEADER_NO_VARY].wrong_v2_got_v1 > 0);
	assert_int_equal(rows[ROW_HEADER_VARY].wrong, 0);
	assert_int_equal(rows[ROW_PATH].wrong, 0);
	assert_int_equal(rows[ROW_QUERY].wrong, 0);
	assert_true(rows[ROW_HEADER_VARY].hit_ratio < rows[ROW_HEADER_NO_VARY].hit_ratio);
	for (int i = 0; i < VERSIONING_ROWS; i++)
		assert_int_equal(rows[i].hits + rows[i].misses, g->cfg.cache_requests);
	/* without Vary one entry per user, with it one per user and version: misses = distinct keys */
	assert_true(rows[ROW_HEADER_VARY].misses > rows[ROW_HEADER_NO_VARY].misses);
	assert_true(rows[ROW_HEADER_NO_VARY].misses <= g->cfg.users);
	assert_true(rows[ROW_HEADER_VARY].misses <= 2 * g->cfg.users);
	assert_true(rows[ROW_PATH].in_log);
	assert_false(rows[ROW_HEADER_VARY].in_log);
	/* phase 3: headers on v1 only; the edge counts every v1 call, the API only the misses */
	const struct versioning_deprecation *d = &r->deprecation;
	assert_true(d->v1_answers > 0);
	assert_int_equal(d->v1_with_headers, d->v1_answers);
	assert_int_equal(d->v2_with_any, 0);
	const struct versioning_client *mobile = &d->clients[0];
	assert_int_equal(mobile->v1_sent, mobile->requests);
	assert_int_equal(mobile->v1_edge, mobile->v1_sent);
	assert_int_equal(mobile->v1_api, mobile->v1_sent - mobile->hits);
	assert_true(mobile->v1_api < mobile->v1_sent);
	assert_int_equal(d->clients[2].v1_edge, 0);
	/* nothing left: the schema, nginx, its directory */
	assert_true(r->nginx_pid > 0);
	assert_true(kill(r->nginx_pid, 0) < 0);
	assert_int_equal(lab_tmpdirs(tmp, "versioning", getpid()), dirs_before);
	free(r);
	lab_assert_nothing_left("lab_versioning", NULL);
}

static void wait_no_process_with(const char *needle)
{
	for (int i = 0; i < 100 && lab_processes_with(needle) > 0; i++)
		usleep(10000);
	if (lab_processes_with(needle) > 0)
		fail_msg("an nginx started under %s is still running", needle);
}

static void test_ctrl_c_leaves_no_schema_and_no_nginx(void **state)
{
	(void)state;
	static char out[16384], errout[4096];
	char dir[128], err[256];
	lab_private_tmpdir(dir, sizeof(dir), "versioning", "ctrl-c");
	double stop_ms;
	/* "[2/": the cache started before phase 1, so nginx runs when the signal comes */
	int rc = lab_interrupt("versioning", "--quick", "[2/", SIGINT, 15000, &stop_ms, out, sizeof(out),
	                       errout, sizeof(errout));
	unsetenv("TMPDIR");
	print_message("exit %d, %.0f ms after SIGINT; stderr: %s\n", rc, stop_ms, errout);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_versioning", NULL);
	/* nginx ran ("[2/" comes after the cache started) and the guard removed its directory */
	assert_non_null(strstr(out, "[1/"));
	assert_int_equal(lab_tmpdirs(dir, "versioning", 0), 0);
	wait_no_process_with(dir);
	assert_int_equal(child_rmtree(dir, err, sizeof(err)), 0);
}

static void test_serve_stops_nginx_and_removes_its_directory(void **state)
{
	(void)state;
	static char out[16384], errout[4096];
	char dir[128], err[256];
	lab_private_tmpdir(dir, sizeof(dir), "versioning", "serve");
	double stop_ms;
	int rc = lab_interrupt("versioning", "--serve", "Ctrl-C", SIGINT, 15000, &stop_ms, out, sizeof(out),
	                       errout, sizeof(errout));
	unsetenv("TMPDIR");
	assert_int_equal(rc, LAB_EXIT_OK);
	assert_non_null(strstr(out, "listening on http://127.0.0.1:"));
	assert_non_null(strstr(out, "cache: nginx proxy_cache in front of it on http://127.0.0.1:"));
	assert_non_null(strstr(out, "curl -si http://127.0.0.1:"));
	wait_no_process_with(dir);
	assert_int_equal(lab_tmpdirs(dir, "versioning", 0), 0);
	DIR *d = opendir(dir);
	int entries = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		entries += e->d_name[0] != '.';
	if (d)
		closedir(d);
	assert_int_equal(entries, 0);
	lab_assert_nothing_left("lab_versioning", NULL);
	assert_int_equal(child_rmtree(dir, err, sizeof(err)), 0);
}

static void test_without_nginx_exits_2_naming_what_was_tried_and_the_fix(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	int rc = lab_run("versioning", "LAB_NGINX=/nonexistent/nginx", "--quick", out, sizeof(out), err,
	                 sizeof(err));
	assert_int_equal(rc, LAB_EXIT_ENV);
	assert_non_null(strstr(err, "$LAB_NGINX=/nonexistent/nginx is not an executable file"));
	assert_non_null(strstr(err, "scripts/bootstrap"));
	assert_non_null(strstr(err, "apt-get install nginx"));
	assert_string_equal(out, "");
	lab_assert_nothing_left("lab_versioning", NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_v1_and_v2_are_the_same_row_with_the_breaking_change),
	        cmocka_unit_test(test_path_versioning_headers),
	        cmocka_unit_test(test_header_versioning_negotiates_and_says_vary),
	        cmocka_unit_test(test_query_versioning_and_the_query_wins_over_accept),
	        cmocka_unit_test(test_unknown_versions_and_bad_requests_get_one_clear_json_error),
	        cmocka_unit_test(test_the_cache_keeps_a_variant_per_accept_with_vary),
	        /* drops the group's schema: the tests above need it, the ones below need it gone */
	        cmocka_unit_test(test_run_demonstrates_the_claim_and_the_counts_agree),
	        cmocka_unit_test(test_ctrl_c_leaves_no_schema_and_no_nginx),
	        cmocka_unit_test(test_serve_stops_nginx_and_removes_its_directory),
	        cmocka_unit_test(test_without_nginx_exits_2_naming_what_was_tried_and_the_fix),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
