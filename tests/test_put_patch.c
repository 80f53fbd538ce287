/*
 * test_put_patch — lab-put-patch against the real PostgreSQL: the run's verdict and the counts
 * behind it (digests equal after 1 and 5 sends, n tags after n sends, lost updates > 0 blind and
 * 0 with If-Match), the HTTP contract sent raw over a socket (415 with Accept-Patch, 400, 409,
 * 422, 412, 428, 404, 405; the row's digest unchanged by every refusal), Ctrl-C, and patch.c on
 * the RFCs' own examples (RFC 7396 Appendix A, RFC 6902 Appendix A, RFC 6901 section 5) and on
 * hostile input.
 *
 * needs: postgres
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lab.h"
#include "patch.h"
#include "pg.h"
#include "put_patch.h"
#include "lab_run.h"
#include "upstream.h"

#define ADA                                                                                                  \
	"{\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\",\"bio\":\"wrote the first program\","      \
	"\"tags\":[\"admin\",\"math\"],\"visits\":41}"

static json_t *js(const char *text)
{
	json_error_t e;
	json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
	if (!v)
		fail_msg("bad JSON in the test: %s: %s", text, e.text);
	return v;
}

/* ---- patch.c on the RFCs' examples ---- */

static void test_merge_patch_rfc7396_appendix_a(void **state)
{
	(void)state;
	static const char *const cases[][3] = {
	        {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
	        {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
	        {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
	        {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
	        {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
	        {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
	        {"{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"},
	        {"{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"},
	        {"[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"},
	        {"{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"},
	        {"{\"a\":\"foo\"}", "null", "null"},
	        {"{\"a\":\"foo\"}", "\"bar\"", "\"bar\""},
	        {"{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"},
	        {"[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"},
	        {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *target = js(cases[i][0]), *patch = js(cases[i][1]), *want = js(cases[i][2]),
		       *out = NULL;
		char err[256];
		char *before = json_dumps(target, JSON_SORT_KEYS | JSON_ENCODE_ANY);
		assert_int_equal(merge_patch_apply(target, patch, &out, err, sizeof(err)), PATCH_OK);
		if (patch_json_equal(out, want) != 1)
			fail_msg("case %zu: %s + %s gave %s", i, cases[i][0], cases[i][1],
			         json_dumps(out, JSON_ENCODE_ANY));
		/* the target is never modified */
		char *after = json_dumps(target, JSON_SORT_KEYS | JSON_ENCODE_ANY);
		assert_string_equal(before, after);
		free(before), free(after);
		json_decref(target), json_decref(patch), json_decref(want), json_decref(out);
	}
}

/* doc + patch gives want (a JSON text) or fails with status want_status. */
static void json_patch_case(const char *name, const char *doc, const char *patch, const char *want,
                            enum patch_status want_status)
{
	json_t *d = js(doc), *p = js(patch), *out = NULL;
	char err[512] = "";
	enum patch_status s = json_patch_apply(d, p, &out, err, sizeof(err));
	if (s != want_status)
		fail_msg("%s: status %s, not %s (%s)", name, patch_status_name(s),
		         patch_status_name(want_status), err);
	if (want) {
		json_t *w = js(want);
		if (patch_json_equal(out, w) != 1)
			fail_msg("%s: got %s", name, json_dumps(out, JSON_ENCODE_ANY));
		json_decref(w);
	} else {
		assert_null(out);
		print_message("%s: %s\n", name, err);
	}
	json_decref(d), json_decref(p), json_decref(out);
}

static void test_json_patch_rfc6902_appendix_a(void **state)
{
	(void)state;
	json_patch_case("A.1", "{\"foo\":\"bar\"}", "[{\"op\":\"add\",\"path\":\"/baz\",\"value\":\"qux\"}]",
	                "{\"baz\":\"qux\",\"foo\":\"bar\"}", PATCH_OK);
	json_patch_case("A.2", "{\"foo\":[\"bar\",\"baz\"]}",
	                "[{\"op\":\"add\",\"path\":\"/foo/1\",\"value\":\"qux\"}]",
	                "{\"foo\":[\"bar\",\"qux\",\"baz\"]}", PATCH_OK);
	json_patch_case("A.3", "{\"baz\":\"qux\",\"foo\":\"bar\"}", "[{\"op\":\"remove\",\"path\":\"/baz\"}]",
	                "{\"foo\":\"bar\"}", PATCH_OK);
	json_patch_case("A.4", "{\"foo\":[\"bar\",\"qux\",\"baz\"]}",
	                "[{\"op\":\"remove\",\"path\":\"/foo/1\"}]", "{\"foo\":[\"bar\",\"baz\"]}", PATCH_OK);
	json_patch_case("A.5", "{\"baz\":\"qux\",\"foo\":\"bar\"}",
	                "[{\"op\":\"replace\",\"path\":\"/baz\",\"value\":\"boo\"}]",
	                "{\"baz\":\"boo\",\"foo\":\"bar\"}", PATCH_OK);
	json_patch_case(
	        "A.6", "{\"foo\":{\"bar\":\"baz\",\"waldo\":\"fred\"},\"qux\":{\"corge\":\"grault\"}}",
	        "[{\"op\":\"move\",\"from\":\"/foo/waldo\",\"path\":\"/qux/thud\"}]",
	        "{\"foo\":{\"bar\":\"baz\"},\"qux\":{\"corge\":\"grault\",\"thud\":\"fred\"}}", PATCH_OK);
	json_patch_case("A.7", "{\"foo\":[\"all\",\"grass\",\"cows\",\"eat\"]}",
	                "[{\"op\":\"move\",\"from\":\"/foo/1\",\"path\":\"/foo/3\"}]",
	                "{\"foo\":[\"all\",\"cows\",\"eat\",\"grass\"]}", PATCH_OK);
	json_patch_case("A.8", "{\"baz\":\"qux\",\"foo\":[\"a\",2,\"c\"]}",
	                "[{\"op\":\"test\",\"path\":\"/baz\",\"value\":\"qux\"},"
	                "{\"op\":\"test\",\"path\":\"/foo/1\",\"value\":2}]",
	                "{\"baz\":\"qux\",\"foo\":[\"a\",2,\"c\"]}", PATCH_OK);
	json_patch_case("A.9", "{\"baz\":\"qux\"}", "[{\"op\":\"test\",\"path\":\"/baz\",\"value\":\"bar\"}]",
	                NULL, PATCH_CONFLICT);
	json_patch_case("A.10", "{\"foo\":\"bar\"}",
	                "[{\"op\":\"add\",\"path\":\"/child\",\"value\":{\"grandchild\":{}}}]",
	                "{\"foo\":\"bar\",\"child\":{\"grandchild\":{}}}", PATCH_OK);
	json_patch_case("A.11", "{\"foo\":\"bar\"}",
	                "[{\"op\":\"add\",\"path\":\"/baz\",\"value\":\"qux\",\"xyz\":123}]",
	                "{\"foo\":\"bar\",\"baz\":\"qux\"}", PATCH_OK);
	json_patch_case("A.12", "{\"foo\":\"bar\"}",
	                "[{\"op\":\"add\",\"path\":\"/baz/bat\",\"value\":\"qux\"}]", NULL, PATCH_CONFLICT);
	/* A.13: two "op" members; the API parses with JSON_REJECT_DUPLICATES, so it never gets this far */
	json_error_t e;
	assert_null(json_loads("[{\"op\":\"add\",\"path\":\"/baz\",\"value\":\"qux\",\"op\":\"remove\"}]",
	                       JSON_REJECT_DUPLICATES, &e));
	json_patch_case("A.14", "{\"/\":9,\"~1\":10}", "[{\"op\":\"test\",\"path\":\"/~01\",\"value\":10}]",
	                "{\"/\":9,\"~1\":10}", PATCH_OK);
	json_patch_case("A.15", "{\"/\":9,\"~1\":10}",
	                "[{\"op\":\"test\",\"path\":\"/~01\",\"value\":\"10\"}]", NULL, PATCH_CONFLICT);
	json_patch_case("A.16", "{\"foo\":[\"bar\"]}",
	                "[{\"op\":\"add\",\"path\":\"/foo/-\",\"value\":[\"abc\",\"def\"]}]",
	                "{\"foo\":[\"bar\",[\"abc\",\"def\"]]}", PATCH_OK);
	/* copy (section 4.5), and a number compared by value (section 4.6): 1 equals 1.0 */
	json_patch_case("copy", "{\"a\":{\"b\":1}}", "[{\"op\":\"copy\",\"from\":\"/a\",\"path\":\"/c\"}]",
	                "{\"a\":{\"b\":1},\"c\":{\"b\":1}}", PATCH_OK);
	json_patch_case("1 == 1.0", "{\"n\":1}", "[{\"op\":\"test\",\"path\":\"/n\",\"value\":1.0}]",
	                "{\"n\":1}", PATCH_OK);
	/* all or nothing: the second op fails, the first is not applied either (doc untouched) */
	json_patch_case("atomic", "{\"a\":1}",
	                "[{\"op\":\"remove\",\"path\":\"/a\"},{\"op\":\"remove\",\"path\":\"/a\"}]", NULL,
	                PATCH_CONFLICT);
}

static void test_json_pointer_rfc6901_section_5(void **state)
{
	(void)state;
	json_t *doc = js("{\"foo\":[\"bar\",\"baz\"],\"\":0,\"a/b\":1,\"c%d\":2,\"e^f\":3,\"g|h\":4,"
	                 "\"i\\\\j\":5,\"k\\\"l\":6,\" \":7,\"m~n\":8}");
	static const struct {
		const char *ptr, *want;
	} cases[] = {{"/foo", "[\"bar\",\"baz\"]"},
	             {"/foo/0", "\"bar\""},
	             {"/", "0"},
	             {"/a~1b", "1"},
	             {"/c%d", "2"},
	             {"/e^f", "3"},
	             {"/g|h", "4"},
	             {"/i\\j", "5"},
	             {"/k\"l", "6"},
	             {"/ ", "7"},
	             {"/m~0n", "8"}};
	char err[256];
	assert_ptr_equal(json_pointer_get(doc, "", NULL, err, sizeof(err)), doc);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *want = js(cases[i].want);
		json_t *got = json_pointer_get(doc, cases[i].ptr, NULL, err, sizeof(err));
		if (!got || patch_json_equal(got, want) != 1)
			fail_msg("pointer %s: %s", cases[i].ptr,
			         got ? json_dumps(got, JSON_ENCODE_ANY) : err);
		json_decref(want);
	}
	json_decref(doc);
}

/* An array nested n deep: [[[...]]]. */
static json_t *nested(int n)
{
	json_t *v = json_array();
	for (int i = 0; i < n; i++) {
		json_t *outer = json_array();
		json_array_append_new(outer, v);
		v = outer;
	}
	return v;
}

static void test_patch_is_safe_on_hostile_input(void **state)
{
	(void)state;
	/* pointers into scalars, past the end, leading zeros, "-" where only add may use it */
	const char *doc = "{\"s\":\"x\",\"n\":1,\"a\":[1,2]}";
	json_patch_case("into a string", doc, "[{\"op\":\"add\",\"path\":\"/s/0\",\"value\":1}]", NULL,
	                PATCH_CONFLICT);
	json_patch_case("through a number", doc, "[{\"op\":\"add\",\"path\":\"/n/x/y\",\"value\":1}]", NULL,
	                PATCH_CONFLICT);
	json_patch_case("leading zero", doc, "[{\"op\":\"replace\",\"path\":\"/a/01\",\"value\":1}]", NULL,
	                PATCH_CONFLICT);
	json_patch_case("past the end", doc, "[{\"op\":\"add\",\"path\":\"/a/3\",\"value\":1}]", NULL,
	                PATCH_CONFLICT);
	json_patch_case("at the end", doc, "[{\"op\":\"add\",\"path\":\"/a/2\",\"value\":3}]",
	                "{\"s\":\"x\",\"n\":1,\"a\":[1,2,3]}", PATCH_OK);
	json_patch_case("remove -", doc, "[{\"op\":\"remove\",\"path\":\"/a/-\"}]", NULL, PATCH_CONFLICT);
	json_patch_case("replace -", doc, "[{\"op\":\"replace\",\"path\":\"/a/-\",\"value\":1}]", NULL,
	                PATCH_CONFLICT);
	json_patch_case("negative", doc, "[{\"op\":\"remove\",\"path\":\"/a/-1\"}]", NULL, PATCH_CONFLICT);
	json_patch_case("huge index", doc, "[{\"op\":\"remove\",\"path\":\"/a/99999999999999999999\"}]", NULL,
	                PATCH_CONFLICT);
	/* malformed documents: caught before the document is looked at */
	json_patch_case("~2", doc, "[{\"op\":\"remove\",\"path\":\"/a~2\"}]", NULL, PATCH_MALFORMED);
	json_patch_case("trailing ~", doc, "[{\"op\":\"remove\",\"path\":\"/a~\"}]", NULL, PATCH_MALFORMED);
	json_patch_case("no slash", doc, "[{\"op\":\"remove\",\"path\":\"a\"}]", NULL, PATCH_MALFORMED);
	json_patch_case("no value", doc, "[{\"op\":\"add\",\"path\":\"/b\"}]", NULL, PATCH_MALFORMED);
	json_patch_case("op not a string", doc, "[{\"op\":1,\"path\":\"/b\"}]", NULL, PATCH_MALFORMED);
	json_patch_case("not an object", doc, "[1]", NULL, PATCH_MALFORMED);
	json_patch_case("move into a child", doc, "[{\"op\":\"move\",\"from\":\"/a\",\"path\":\"/a/0\"}]",
	                NULL, PATCH_MALFORMED);
	json_patch_case("move onto itself", doc, "[{\"op\":\"move\",\"from\":\"/a\",\"path\":\"/a\"}]", doc,
	                PATCH_OK);
	json_patch_case("remove the root", doc, "[{\"op\":\"remove\",\"path\":\"\"}]", NULL, PATCH_CONFLICT);
	char err[256];
	json_t *out = (json_t *)1;
	assert_int_equal(json_patch_apply(NULL, NULL, &out, err, sizeof(err)), PATCH_MALFORMED);
	assert_null(out);
	assert_int_equal(merge_patch_apply(NULL, NULL, &out, err, sizeof(err)), PATCH_MALFORMED);
	/* a copy chain doubles the document at each step: cut at PATCH_MAX_VALUES, not at the memory */
	json_t *boom = json_array();
	for (int i = 0; i < 40; i++)
		json_array_append_new(boom,
		                      json_pack("{s:s,s:s,s:s}", "op", "copy", "from", "", "path", "/x/-"));
	json_t *d = js("{\"x\":[1,2,3,4,5,6,7,8]}");
	assert_int_equal(json_patch_apply(d, boom, &out, err, sizeof(err)), PATCH_UNPROCESSABLE);
	print_message("copy chain: %s\n", err);
	json_decref(boom);
	/* deeper than PATCH_MAX_DEPTH, as a document, a value and a merge patch */
	json_t *deep = nested(PATCH_MAX_DEPTH * 4);
	json_t *empty = js("[]");
	assert_int_equal(json_patch_apply(deep, empty, &out, err, sizeof(err)), PATCH_UNPROCESSABLE);
	json_decref(empty);
	json_t *p = json_pack("[{s:s,s:s,s:O}]", "op", "add", "path", "/y", "value", deep);
	assert_int_equal(json_patch_apply(d, p, &out, err, sizeof(err)), PATCH_MALFORMED);
	assert_int_equal(merge_patch_apply(d, deep, &out, err, sizeof(err)), PATCH_UNPROCESSABLE);
	assert_int_equal(patch_json_equal(deep, deep), -1);
	/* too many operations */
	json_t *many = json_array();
	for (int i = 0; i <= PATCH_MAX_OPS; i++)
		json_array_append_new(many, json_pack("{s:s,s:s}", "op", "test", "path", ""));
	assert_int_equal(json_patch_check(many, err, sizeof(err)), PATCH_MALFORMED);
	json_decref(many), json_decref(p), json_decref(deep), json_decref(d);
}

/* ---- the API, sent raw ---- */

static struct put_patch_config base_cfg;

static int group_setup(void **state)
{
	(void)state;
	put_patch_config_default(&base_cfg, true);
	char err[512];
	if (put_patch_setup(&base_cfg, err, sizeof(err)) < 0) {
		char url[256];
		pg_url_redact(base_cfg.pg_url, url, sizeof(url));
		fprintf(stderr, "test_put_patch: PostgreSQL at %s: %s\n", url, err);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	char err[512];
	put_patch_teardown(&base_cfg, err, sizeof(err));
	return 0;
}

/* One request on a new connection; the status, the response in out. */
static int raw(int port, const char *method, const char *path, const char *ctype, const char *if_match,
               const char *body, char *out, size_t outlen)
{
	char req[8192], ct[160] = "", im[160] = "";
	if (ctype)
		snprintf(ct, sizeof(ct), "Content-Type: %s\r\n", ctype);
	if (if_match)
		snprintf(im, sizeof(im), "If-Match: %s\r\n", if_match);
	int n = snprintf(
	        req, sizeof(req),
	        "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%sContent-Length: %zu\r\n\r\n%s",
	        method, path, ct, im, body ? strlen(body) : 0, body ? body : "");
	return http_exchange(port, req, (size_t)n, out, outlen);
}

/* The value of header name in a raw response, "" when absent. */
static void header_of(const char *resp, const char *name, char *out, size_t outlen)
{
	char key[64];
	snprintf(key, sizeof(key), "\r\n%s: ", name);
	const char *h = strcasestr(resp, key);
	size_t n = h ? strcspn(h + strlen(key), "\r\n") : 0;
	snprintf(out, outlen, "%.*s", (int)n, h ? h + strlen(key) : "");
}

static void digest_of(long long id, char digest[65])
{
	char err[512];
	if (put_patch_row(&base_cfg, id, digest, NULL, 0, err, sizeof(err)) < 0)
		fail_msg("%s", err);
}

/* Removes user id's bio in PostgreSQL directly. */
static int raw_patch_bio_null(long long id, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(base_cfg.pg_url, err, errlen);
	if (!conn)
		return -1;
	char ids[24];
	snprintf(ids, sizeof(ids), "%lld", id);
	const char *p[] = {ids};
	int64_t n = 0;
	int rc = pg_query_int64(
	        conn,
	        "WITH u AS (UPDATE lab_put_patch.users SET bio = NULL WHERE id = $1::bigint RETURNING 1)"
	        " SELECT count(*) FROM u",
	        1, p, &n, err, errlen);
	PQfinish(conn);
	return rc == 0 && n == 1 ? 0 : -1;
}

struct refusal {
	const char *method, *ctype, *if_match, *body;
	int want;
	const char *says; /* the error body names this */
};

static void test_api_refusals_are_answered_and_write_nothing(void **state)
{
	(void)state;
	char err[512], resp[8192], before[65], after[65], etag[64], stale[64];
	const long long id = 9001;
	assert_int_equal(put_patch_seed(&base_cfg, id, ADA, err, sizeof(err)), 0);
	struct put_patch_api *api = put_patch_api_start(&base_cfg, 0, err, sizeof(err));
	assert_non_null(api);
	int port = put_patch_api_port(api);
	const char *path = "/v1/users/9001";
	/* GET: the ETag; then one PATCH makes it stale */
	assert_int_equal(raw(port, "GET", path, NULL, NULL, NULL, resp, sizeof(resp)), 200);
	header_of(resp, "ETag", stale, sizeof(stale));
	assert_int_equal(strlen(stale), 18); /* "<16 hex digits>" */
	assert_int_equal(
	        raw(port, "PATCH", path, PP_MERGE_PATCH, stale, "{\"bio\":null}", resp, sizeof(resp)), 200);
	header_of(resp, "ETag", etag, sizeof(etag));
	assert_string_not_equal(etag, stale);
	assert_null(strstr(resp, "\"bio\""));
	const struct refusal cases[] = {
	        {"PATCH", "application/json", NULL, "{\"bio\":\"x\"}", PP_STATUS_UNSUPPORTED,
	         "application/merge-patch+json"},
	        {"PATCH", NULL, NULL, "{\"bio\":\"x\"}", PP_STATUS_UNSUPPORTED, "PATCH takes"},
	        {"PUT", "text/plain", NULL, ADA, PP_STATUS_UNSUPPORTED, "application/json"},
	        {"PATCH", PP_MERGE_PATCH, NULL, "{\"bio\":", PP_STATUS_MALFORMED, "invalid JSON"},
	        {"PATCH", PP_JSON_PATCH, NULL, "[{\"op\":\"add\",\"path\":\"/tags/-\"}]", PP_STATUS_MALFORMED,
	         "\\\"value\\\" is required"},
	        {"PATCH", PP_JSON_PATCH, NULL, "[{\"op\":\"test\",\"path\":\"/visits\",\"value\":7}]",
	         PP_STATUS_CONFLICT, "test failed"},
	        {"PATCH", PP_JSON_PATCH, NULL, "[{\"op\":\"replace\",\"path\":\"/visits\",\"value\":-1}]",
	         PP_STATUS_INVALID, "visits"},
	        {"PATCH", PP_MERGE_PATCH, NULL, "{\"id\":7}", PP_STATUS_INVALID, "id is read-only"},
	        {"PATCH", PP_INCREMENT, NULL, "{\"visits\":\"1\"}", PP_STATUS_MALFORMED, "increment"},
	        {"PUT", "application/json", NULL, "{\"name\":\"Ada\",\"email\":\"a@b.c\",\"tags\":[]}",
	         PP_STATUS_MALFORMED, "missing field \\\"visits\\\""},
	        {"PUT", "application/json", stale, ADA, PP_STATUS_PRECONDITION_FAILED,
	         "If-Match does not match"},
	        {"PATCH", PP_MERGE_PATCH, "W/\"abc\"", "{\"bio\":\"x\"}", PP_STATUS_PRECONDITION_FAILED,
	         "ETag now"},
	        {"PATCH", PP_MERGE_PATCH, "abc", "{\"bio\":\"x\"}", PP_STATUS_MALFORMED, "If-Match must be"},
	        {"DELETE", NULL, NULL, NULL, 405, "GET, HEAD, PUT, PATCH"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct refusal *c = &cases[i];
		digest_of(id, before);
		int got = raw(port, c->method, path, c->ctype, c->if_match, c->body, resp, sizeof(resp));
		digest_of(id, after);
		if (got != c->want || !strstr(resp, c->says))
			fail_msg("case %zu (%s %s): %d, not %d naming \"%s\": %s", i, c->method,
			         c->ctype ? c->ctype : "", got, c->want, c->says, resp);
		assert_string_equal(before, after);
	}
	/* 415 tells what PATCH takes (RFC 5789 section 3.1) */
	assert_int_equal(raw(port, "PATCH", path, "application/json", NULL, "{}", resp, sizeof(resp)), 415);
	header_of(resp, "Accept-Patch", etag, sizeof(etag));
	assert_non_null(strstr(etag, PP_JSON_PATCH));
	/* unknown and malformed ids */
	assert_int_equal(raw(port, "GET", "/v1/users/424242", NULL, NULL, NULL, resp, sizeof(resp)), 404);
	assert_int_equal(
	        raw(port, "PATCH", "/v1/users/424242", PP_MERGE_PATCH, NULL, "{}", resp, sizeof(resp)), 404);
	digest_of(424242, after);
	assert_string_equal(after, ""); /* a PATCH does not create */
	/* If-Match with the current ETag (and "*", and in a list) is honoured */
	assert_int_equal(raw(port, "GET", path, NULL, NULL, NULL, resp, sizeof(resp)), 200);
	header_of(resp, "ETag", etag, sizeof(etag));
	char list[160];
	snprintf(list, sizeof(list), "\"nope\", %s", etag);
	assert_int_equal(raw(port, "PATCH", path, PP_INCREMENT, list, "{\"visits\":1}", resp, sizeof(resp)),
	                 200);
	assert_int_equal(raw(port, "PATCH", path, PP_INCREMENT, "*", "{\"visits\":1}", resp, sizeof(resp)),
	                 200);
	assert_non_null(strstr(resp, "\"visits\":43"));
	put_patch_api_stop(api);
}

static void test_strict_api_answers_428_without_if_match_and_writes_nothing(void **state)
{
	(void)state;
	char err[512], resp[8192], before[65], after[65], etag[64];
	const long long id = 9002;
	const char *path = "/v1/users/9002";
	assert_int_equal(put_patch_seed(&base_cfg, id, ADA, err, sizeof(err)), 0);
	assert_int_equal(raw_patch_bio_null(id, err, sizeof(err)), 0);
	struct put_patch_config strict = base_cfg;
	strict.require_if_match = true;
	struct put_patch_api *api = put_patch_api_start(&strict, 0, err, sizeof(err));
	assert_non_null(api);
	int port = put_patch_api_port(api);
	digest_of(id, before);
	assert_int_equal(raw(port, "PUT", path, "application/json", NULL, ADA, resp, sizeof(resp)),
	                 PP_STATUS_PRECONDITION_REQUIRED);
	assert_non_null(strstr(resp, "requires If-Match"));
	assert_int_equal(
	        raw(port, "PATCH", path, PP_MERGE_PATCH, NULL, "{\"bio\":\"x\"}", resp, sizeof(resp)),
	        PP_STATUS_PRECONDITION_REQUIRED);
	digest_of(id, after);
	assert_string_equal(before, after);
	assert_int_equal(raw(port, "GET", path, NULL, NULL, NULL, resp, sizeof(resp)), 200);
	header_of(resp, "ETag", etag, sizeof(etag));
	assert_null(strstr(resp, "\"bio\""));
	assert_int_equal(raw(port, "PUT", path, "application/json", etag, ADA, resp, sizeof(resp)), 200);
	/* PUT's replace: the bio is back, as sent */
	assert_non_null(strstr(resp, "\"bio\":\"wrote the first program\""));
	assert_non_null(strstr(resp, "\"visits\":41"));
	put_patch_api_stop(api);
}

/* A PUT of ADA to each bad path of user 9003: 404 naming the id's form, and 9003 unchanged. */
static void bad_ids_write_nothing(int port)
{
	static const char *const paths[] = {"/v1/users/abc",     "/v1/users/-1",
	                                    "/v1/users/9003/x",  "/v1/users/09003",
	                                    "/v1/users/9003%20", "/v1/users/99999999999999999999999"};
	char resp[8192], before[65], after[65];
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		digest_of(9003, before);
		int got = raw(port, "PUT", paths[i], "application/json", NULL, ADA, resp, sizeof(resp));
		digest_of(9003, after);
		if (got != 404 || !strstr(resp, "id a whole number"))
			fail_msg("PUT %s: %d, not 404: %s", paths[i], got, resp);
		assert_string_equal(before, after);
	}
}

static void test_api_reads_headers_as_rfc_9110_says(void **state)
{
	(void)state;
	char err[512], resp[8192], before[65], after[65], etag[64], h[160];
	const char *path = "/v1/users/9003";
	assert_int_equal(put_patch_seed(&base_cfg, 9003, ADA, err, sizeof(err)), 0);
	struct put_patch_api *api = put_patch_api_start(&base_cfg, 0, err, sizeof(err));
	assert_non_null(api);
	int port = put_patch_api_port(api);
	assert_int_equal(raw(port, "GET", path, NULL, NULL, NULL, resp, sizeof(resp)), 200);
	header_of(resp, "ETag", etag, sizeof(etag));
	/* HEAD: GET's head, ETag included, and no body */
	assert_int_equal(raw(port, "HEAD", path, NULL, NULL, NULL, resp, sizeof(resp)), 200);
	header_of(resp, "ETag", h, sizeof(h));
	assert_string_equal(h, etag);
	assert_string_equal(strstr(resp, "\r\n\r\n"), "\r\n\r\n");
	/* If-Match on a read: strong comparison, so W/ of the current tag fails too */
	char weak[80];
	snprintf(weak, sizeof(weak), "W/%s", etag);
	assert_int_equal(raw(port, "GET", path, NULL, etag, NULL, resp, sizeof(resp)), 200);
	assert_int_equal(raw(port, "GET", path, NULL, weak, NULL, resp, sizeof(resp)), 412);
	assert_int_equal(raw(port, "GET", path, NULL, "\"0000\"", NULL, resp, sizeof(resp)), 412);
	assert_int_equal(raw(port, "GET", path, NULL, "0000", NULL, resp, sizeof(resp)), 400);
	/* refused writes, the row unchanged: junk after the media type, a tag with a space in it, a PUT's
	 * 415 with Accept (not Accept-Patch, which lists PATCH formats) */
	digest_of(9003, before);
	assert_int_equal(raw(port, "PATCH", path, PP_MERGE_PATCH " garbage", NULL, "{\"bio\":\"x\"}", resp,
	                     sizeof(resp)),
	                 400);
	assert_int_equal(
	        raw(port, "PATCH", path, PP_MERGE_PATCH, "\"a b\"", "{\"bio\":\"x\"}", resp, sizeof(resp)),
	        400);
	assert_int_equal(raw(port, "PUT", path, "text/plain", NULL, ADA, resp, sizeof(resp)), 415);
	header_of(resp, "Accept", h, sizeof(h));
	assert_string_equal(h, "application/json");
	assert_null(strcasestr(resp, "Accept-Patch"));
	assert_int_equal(raw(port, "DELETE", path, NULL, NULL, NULL, resp, sizeof(resp)), 405);
	header_of(resp, "Allow", h, sizeof(h));
	assert_string_equal(h, "GET, HEAD, PUT, PATCH");
	digest_of(9003, after);
	assert_string_equal(before, after);
	bad_ids_write_nothing(port);
	/* parameters and case in Content-Type are not the media type: both applied */
	assert_int_equal(raw(port, "PATCH", path, PP_MERGE_PATCH "; charset=utf-8", NULL, "{\"bio\":\"a\"}",
	                     resp, sizeof(resp)),
	                 200);
	assert_int_equal(raw(port, "PATCH", path, "Application/Merge-Patch+JSON", NULL, "{\"bio\":\"b\"}",
	                     resp, sizeof(resp)),
	                 200);
	assert_non_null(strstr(resp, "\"bio\":\"b\""));
	digest_of(9003, after);
	assert_string_not_equal(before, after);
	put_patch_api_stop(api);
}

/* ---- the run ---- */

/* The judge of a demonstrated run r says "not demonstrated" when what it rests on was not measured. */
static void judge_refuses(const struct put_patch_result *good, void (*spoil)(struct put_patch_result *),
                          const char *says)
{
	struct put_patch_result *r = malloc(sizeof(*r));
	assert_non_null(r);
	*r = *good;
	spoil(r);
	struct lab_verdict v;
	put_patch_judge(r, &v);
	if (v.demonstrated || !strstr(v.evidence, says))
		fail_msg("spoiled run judged %s: %s", v.demonstrated ? "demonstrated" : "not shown",
		         v.evidence);
	free(r);
}

/* every PUT refused: the row stays as seeded, one digest, and that shows nothing */
static void put_refused(struct put_patch_result *r)
{
	struct put_patch_retry_row *put = &r->retries.rows[PP_RETRY_PUT];
	for (int i = 0; i < PUT_PATCH_SEND_COUNTS; i++)
		for (int k = 0; k < put->after[i].n; k++)
			put->after[i].status[k] = PP_STATUS_UNSUPPORTED;
}
/* A's blind write refused: its email is missing, but nothing was lost */
static void blind_refused(struct put_patch_result *r)
{
	r->editors.rows[PP_EDIT_BLIND].a_status = PP_STATUS_MALFORMED;
}
/* no rounds at all: 0 acknowledged, 0 lost */
static void no_rounds(struct put_patch_result *r)
{
	for (int i = 0; i < PUT_PATCH_RACE_ROWS; i++) {
		struct put_patch_race_row *row = &r->race.rows[i];
		row->rounds = 0, row->acked = 0, row->stored = 0, row->lost = 0;
	}
}
/* PostgreSQL holding more than was acknowledged is a wrong count, not "none lost" */
static void patch_overcounted(struct put_patch_result *r)
{
	r->race.rows[PP_RACE_PATCH].stored++;
	r->race.rows[PP_RACE_PATCH].lost = -1;
}
static void nothing_ran(struct put_patch_result *r)
{
	memset(r, 0, sizeof(*r));
}

static void test_run_demonstrates_the_claim_and_the_counts_agree(void **state)
{
	(void)state;
	struct put_patch_config cfg = base_cfg;
	/* small: the claims hold at any size, and the lab's own run shows the large one */
	cfg.race_clients = 4;
	cfg.race_rounds = 20;
	struct put_patch_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	struct lab_answers answers = {0};
	cfg.hooks = lab_answers_hooks(&answers, &cfg, r);
	char err[512];
	if (put_patch_run(&cfg, r, err, sizeof(err)) < 0)
		fail_msg("the run failed: %s", err);
	struct lab_verdict v;
	put_patch_judge(r, &v);
	print_message("%s\n", v.evidence);
	assert_true(v.demonstrated);
	/* --predict's answers are the counts below: 2 + 5 tags; PUT reset the bio (b); the blind
	 * story lost A's email (b); only the blind PUT lost increments (a) */
	lab_assert_every_phase_asks(&answers, PUT_PATCH_PHASES);
	assert_true(lab_answer(&answers, "retries") ==
	            (double)(r->retries.rows[PP_RETRY_ADD].base_tags + put_patch_send_counts[2]));
	assert_true(lab_answer(&answers, "contract") == 1);
	assert_true(lab_answer(&answers, "editors") == 1);
	assert_true(lab_answer(&answers, "race") == 0);
	judge_refuses(r, put_refused, "a send was refused");
	judge_refuses(r, blind_refused, "editors' last writes answered");
	judge_refuses(r, no_rounds, "rounds acknowledged");
	judge_refuses(r, patch_overcounted, "PostgreSQL holds");
	judge_refuses(r, nothing_ran, "phase 1 ran 0");
	/* phase 1: PUT and merge patch, one digest after 1, 2 and 5 sends; add and increment, n after n */
	const struct put_patch_retry_row *put = &r->retries.rows[PP_RETRY_PUT],
	                                 *merge = &r->retries.rows[PP_RETRY_MERGE];
	const struct put_patch_retry_row *add = &r->retries.rows[PP_RETRY_ADD];
	const struct put_patch_retry_row *inc = &r->retries.rows[PP_RETRY_INCREMENT];
	assert_int_equal(put->after[2].n, 5);
	assert_string_equal(put->after[0].digest, put->after[2].digest);
	assert_int_equal(put->after[2].status[4], 200);
	assert_int_equal(merge->after[2].status[4], 200);
	assert_int_equal(strlen(put->after[0].digest), 64);
	assert_string_equal(merge->after[0].digest, merge->after[2].digest);
	assert_string_not_equal(put->after[0].digest, merge->after[0].digest);
	for (int i = 0; i < PUT_PATCH_SEND_COUNTS; i++) {
		assert_int_equal(add->after[i].tags, add->base_tags + add->after[i].n);
		assert_int_equal(inc->after[i].visits, inc->base_visits + inc->after[i].n);
	}
	assert_string_not_equal(add->after[0].digest, add->after[2].digest);
	/* the test op: the retries after the first got 409, the row stayed */
	const struct put_patch_retry_row *t = &r->retries.rows[PP_RETRY_TEST];
	assert_int_equal(t->after[2].status[0], 200);
	assert_int_equal(t->after[2].status[4], PP_STATUS_CONFLICT);
	assert_string_equal(t->after[0].digest, t->after[2].digest);
	/* phase 2: each status as the contract says, and only the PUT without bio changed the row */
	assert_int_equal(r->contract.nrows, PUT_PATCH_CONTRACT_ROWS);
	for (int i = 0; i < r->contract.nrows; i++) {
		assert_int_equal(r->contract.rows[i].got, r->contract.rows[i].want);
		assert_int_equal(r->contract.rows[i].changed, r->contract.rows[i].want_change);
	}
	/* phase 3: blind PUT kept B's name and lost A's email; If-Match and PATCH kept both; 428 */
	const struct put_patch_editors *e = &r->editors;
	assert_true(e->rows[PP_EDIT_BLIND].b_kept && !e->rows[PP_EDIT_BLIND].a_kept);
	assert_int_equal(e->rows[PP_EDIT_BLIND].a_status, 200); /* A was told its email was saved */
	assert_true(e->rows[PP_EDIT_IF_MATCH].a_kept && e->rows[PP_EDIT_IF_MATCH].b_kept);
	assert_non_null(strstr(e->rows[PP_EDIT_IF_MATCH].b, "412"));
	assert_true(e->rows[PP_EDIT_PATCH].a_kept && e->rows[PP_EDIT_PATCH].b_kept);
	assert_int_equal(e->no_if_match_status, PP_STATUS_PRECONDITION_REQUIRED);
	assert_false(e->no_if_match_changed);
	/* phase 4: counted from PostgreSQL */
	const struct put_patch_race_row *b = &r->race.rows[PP_RACE_BLIND],
	                                *m = &r->race.rows[PP_RACE_IF_MATCH];
	const struct put_patch_race_row *p = &r->race.rows[PP_RACE_PATCH];
	assert_int_equal(b->acked, 4 * 20);
	assert_true(b->lost > 0);
	assert_true(b->stored > 0); /* the blind PUTs did reach PostgreSQL: lost is not "nothing written" */
	assert_int_equal(m->acked, 4 * 20);
	assert_int_equal(m->stored, m->acked);
	assert_int_equal(m->lost, 0);
	assert_true(m->conflicts > 0); /* the clients did race: some copies were stale */
	assert_int_equal(p->stored, p->acked);
	assert_int_equal(p->lost, 0);
	free(r);
	lab_assert_nothing_left("lab_put_patch", NULL);
}

static void test_ctrl_c_drops_the_schema(void **state)
{
	(void)state;
	static char out[16384], errout[4096];
	double stop_ms = 0;
	int rc = lab_interrupt("put-patch", "--quick", "[2/", SIGINT, 15000, &stop_ms, out, sizeof(out),
	                       errout, sizeof(errout));
	print_message("exit %d, %.0f ms after SIGINT; stderr: %s\n", rc, stop_ms, errout);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	/* the lab keeps nothing in Redis: the schema is all there is to leave behind */
	lab_assert_nothing_left("lab_put_patch", NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_merge_patch_rfc7396_appendix_a),
	        cmocka_unit_test(test_json_patch_rfc6902_appendix_a),
	        cmocka_unit_test(test_json_pointer_rfc6901_section_5),
	        cmocka_unit_test(test_patch_is_safe_on_hostile_input),
	        cmocka_unit_test(test_api_refusals_are_answered_and_write_nothing),
	        cmocka_unit_test(test_strict_api_answers_428_without_if_match_and_writes_nothing),
	        cmocka_unit_test(test_api_reads_headers_as_rfc_9110_says),
	        /* drops the group's schema: the tests above need it, the one below needs it gone */
	        cmocka_unit_test(test_run_demonstrates_the_claim_and_the_counts_agree),
	        cmocka_unit_test(test_ctrl_c_drops_the_schema),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
