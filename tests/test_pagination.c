/*
 * test_pagination.c — lab-pagination's claims, against the real PostgreSQL and the real API.
 * needs: postgres
 *
 * Four groups in one run of tests: the cursor codec alone (pure: round trips, RFC 4648 vectors,
 * every way a cursor is refused); the API's contract over a real HTTP client (raw requests on a
 * socket, tests/upstream.h) on a small feed the group seeds: a walk by next_cursor that returns
 * every row exactly once, each bad request 400 with its reason and nothing else; one
 * pagination_run with a small config, whose judge must say "demonstrated", and the counts
 * behind it (EXPLAIN's rows and buffers by depth, duplicates and skips per method, which the
 * model predicts exactly where it can); and the binary interrupted by Ctrl-C, leaving nothing.
 * The run test drops the group's schema: the API tests come before it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"
#include "upstream.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pagination.h"
#include "pg.h"

/* the group's feed: big enough for many pages and ties across their edges, small to seed */
#define FEED_ROWS 1000
#define TTL_S     3600

static const unsigned char KEY[PAGINATION_CURSOR_KEY_LEN] = "0123456789abcdef0123456789abcdef";

struct group {
	struct pagination_config cfg;
	struct pagination_api *api;
	int port;
};

static int group_setup(void **state)
{
	static struct group g;
	char err[512], url[256];
	pagination_config_default(&g.cfg, true);
	pagination_config_rows(&g.cfg, FEED_ROWS);
	g.cfg.cursor_ttl_s = TTL_S;
	if (pagination_setup(&g.cfg, err, sizeof(err)) < 0 ||
	    !(g.api = pagination_api_start(&g.cfg, 0, err, sizeof(err)))) {
		pg_url_redact(g.cfg.pg_url, url, sizeof(url));
		fprintf(stderr,
		        "test_pagination: cannot set up against %s: %s (start the servers: make up)\n", url,
		        err);
		return -1;
	}
	g.port = pagination_api_port(g.api);
	*state = &g;
	return 0;
}

static int group_teardown(void **state)
{
	char err[512];
	struct group *g = *state;
	pagination_api_stop(g->api);
	return pagination_teardown(&g->cfg, err, sizeof(err)) < 0 ? -1 : 0;
}

/* ---- the codec ---- */

static void test_b64url_matches_rfc4648_and_uses_the_url_alphabet(void **state)
{
	(void)state;
	/* RFC 4648 section 10, without the padding (section 3.2 allows leaving it off) */
	static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const want[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	char text[64];
	unsigned char back[64];
	for (int i = 0; i < 7; i++) {
		size_t n = strlen(in[i]);
		assert_int_equal(
		        pagination_b64url_encode((const unsigned char *)in[i], n, text, sizeof(text)),
		        (int)strlen(want[i]));
		assert_string_equal(text, want[i]);
		assert_int_equal(pagination_b64url_decode(text, back, sizeof(back)), (int)n);
		assert_memory_equal(back, in[i], n);
	}
	/* 0xfb 0xff is "+/8=" in base64, "-_8" in base64url */
	const unsigned char b[] = {0xfb, 0xff};
	assert_int_equal(pagination_b64url_encode(b, 2, text, sizeof(text)), 3);
	assert_string_equal(text, "-_8");
	assert_int_equal(pagination_b64url_decode("-_8", back, sizeof(back)), 2);
	assert_memory_equal(back, b, 2);
	/* the standard alphabet, padding, whitespace, a length of 1 mod 4, non-canonical bits: refused */
	static const char *const bad[] = {"+/8",   "-_8=", "Zm9v ", " Zm9v", "Zm9\n",
	                                  "Zm9vY", "Zh",   "Zm9",   "Zm8=",  "Zm.v"};
	for (int i = 0; i < 10; i++)
		if (pagination_b64url_decode(bad[i], back, sizeof(back)) != -1)
			fail_msg("\"%s\" decoded", bad[i]);
	/* "Zm9" is "fo" with a low bit set where "Zm8" has none: one value, one spelling */
	assert_int_equal(pagination_b64url_decode("Zm9", back, sizeof(back)), -1);
	/* too little room */
	assert_int_equal(pagination_b64url_encode((const unsigned char *)"foobar", 6, text, 8), -1);
	assert_int_equal(pagination_b64url_decode("Zm9vYmFy", back, 5), -1);
	/* any length: refused past the bound, whatever the room, without reading all of it */
	static char huge[100001];
	memset(huge, 'A', sizeof(huge) - 1);
	static unsigned char big[sizeof(huge)];
	assert_int_equal(pagination_b64url_decode(huge, big, sizeof(big)), -1);
	struct pagination_cursor c;
	assert_int_equal(pagination_cursor_decode(KEY, huge, 0, TTL_S, &c), PAGINATION_CURSOR_MALFORMED);
}

static void test_cursor_round_trip(void **state)
{
	(void)state;
	const struct pagination_cursor cases[] = {
	        {1704067200123456, 42, 1700000000},
	        {0, 1, 0},
	        {-1, INT64_MAX, INT64_MAX},
	        {INT64_MIN, INT64_MIN, 1},
	};
	for (int i = 0; i < 4; i++) {
		char text[PAGINATION_CURSOR_TEXT_MAX];
		struct pagination_cursor back;
		assert_int_equal(pagination_cursor_encode(KEY, &cases[i], text, sizeof(text)), 0);
		assert_int_equal(strlen(text), PAGINATION_CURSOR_TEXT_LEN);
		assert_int_equal(
		        strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
		        PAGINATION_CURSOR_TEXT_LEN);
		/* the clock at the moment of issue: ok, whatever the issue time */
		assert_int_equal(pagination_cursor_decode(KEY, text, cases[i].issued_s, 0, &back),
		                 PAGINATION_CURSOR_OK);
		assert_true(back.created_us == cases[i].created_us && back.id == cases[i].id &&
		            back.issued_s == cases[i].issued_s);
	}
	char text[PAGINATION_CURSOR_TEXT_MAX];
	assert_int_equal(pagination_cursor_encode(KEY, &cases[0], text, PAGINATION_CURSOR_TEXT_LEN), -1);
}

/* A cursor whose bytes are raw: signed right (or not), any version. */
static void raw_cursor(unsigned char version, bool sign, char *text, size_t len)
{
	unsigned char raw[PAGINATION_CURSOR_BYTES] = {version};
	raw[16] = 7;    /* id 7 */
	raw[24] = 0x10; /* issued at 16 s */
	unsigned int taglen = 0;
	assert_non_null(HMAC(EVP_sha256(), KEY, sizeof(KEY), raw, 25, raw + 25, &taglen));
	if (!sign)
		raw[56] ^= 1;
	assert_int_equal(pagination_b64url_encode(raw, sizeof(raw), text, len), PAGINATION_CURSOR_TEXT_LEN);
}

static void test_cursor_refused_when_tampered_forged_expired_or_malformed(void **state)
{
	(void)state;
	struct pagination_cursor c = {1704067200000000, 1234, 1000}, out = {0};
	char text[PAGINATION_CURSOR_TEXT_MAX], changed[PAGINATION_CURSOR_TEXT_MAX];
	assert_int_equal(pagination_cursor_encode(KEY, &c, text, sizeof(text)), 0);
	/* every character changed, one at a time: never accepted */
	for (int i = 0; i < PAGINATION_CURSOR_TEXT_LEN; i++) {
		memcpy(changed, text, sizeof(text));
		changed[i] = changed[i] == 'A' ? 'B' : 'A';
		enum pagination_cursor_status s = pagination_cursor_decode(KEY, changed, 1000, TTL_S, &out);
		if (s != PAGINATION_CURSOR_TAMPERED && s != PAGINATION_CURSOR_MALFORMED)
			fail_msg("character %d changed: %s", i, pagination_cursor_status_name(s));
	}
	/* a middle character carries 6 bits of data: the tag no longer matches */
	changed[0] = '\0';
	memcpy(changed, text, sizeof(text));
	changed[20] = changed[20] == 'A' ? 'B' : 'A';
	assert_int_equal(pagination_cursor_decode(KEY, changed, 1000, TTL_S, &out),
	                 PAGINATION_CURSOR_TAMPERED);
	/* another key: forged */
	unsigned char other[PAGINATION_CURSOR_KEY_LEN] = {0};
	assert_int_equal(pagination_cursor_decode(other, text, 1000, TTL_S, &out),
	                 PAGINATION_CURSOR_TAMPERED);
	/* expired: one second past the lifetime; at the lifetime still good */
	assert_int_equal(pagination_cursor_decode(KEY, text, 1000 + TTL_S + 1, TTL_S, &out),
	                 PAGINATION_CURSOR_EXPIRED);
	assert_int_equal(pagination_cursor_decode(KEY, text, 1000 + TTL_S, TTL_S, &out),
	                 PAGINATION_CURSOR_OK);
	/* malformed: empty, short, long, padded, another alphabet, whitespace */
	static const char *const bad[] = {"", "abc", "not-a-cursor", "====", "a b"};
	for (int i = 0; i < 5; i++)
		assert_int_equal(pagination_cursor_decode(KEY, bad[i], 1000, TTL_S, &out),
		                 PAGINATION_CURSOR_MALFORMED);
	memcpy(changed, text, sizeof(text));
	changed[PAGINATION_CURSOR_TEXT_LEN - 1] = '\0';
	assert_int_equal(pagination_cursor_decode(KEY, changed, 1000, TTL_S, &out),
	                 PAGINATION_CURSOR_MALFORMED);
	char longer[PAGINATION_CURSOR_TEXT_MAX + 8];
	snprintf(longer, sizeof(longer), "%sAAAA", text);
	assert_int_equal(pagination_cursor_decode(KEY, longer, 1000, TTL_S, &out),
	                 PAGINATION_CURSOR_MALFORMED);
	snprintf(longer, sizeof(longer), "%s=", text);
	assert_int_equal(pagination_cursor_decode(KEY, longer, 1000, TTL_S, &out),
	                 PAGINATION_CURSOR_MALFORMED);
	memcpy(changed, text, sizeof(text));
	changed[10] = '+';
	assert_int_equal(pagination_cursor_decode(KEY, changed, 1000, TTL_S, &out),
	                 PAGINATION_CURSOR_MALFORMED);
	/* signed by us but of a version we do not know: malformed; unsigned: tampered */
	raw_cursor(PAGINATION_CURSOR_VERSION, true, changed, sizeof(changed));
	assert_int_equal(pagination_cursor_decode(KEY, changed, 16, TTL_S, &out), PAGINATION_CURSOR_OK);
	assert_int_equal(out.id, 7);
	raw_cursor(2, true, changed, sizeof(changed));
	assert_int_equal(pagination_cursor_decode(KEY, changed, 16, TTL_S, &out),
	                 PAGINATION_CURSOR_MALFORMED);
	raw_cursor(PAGINATION_CURSOR_VERSION, false, changed, sizeof(changed));
	assert_int_equal(pagination_cursor_decode(KEY, changed, 16, TTL_S, &out), PAGINATION_CURSOR_TAMPERED);
}

/* ---- the API, through a raw HTTP client ---- */

static char response[1 << 16];

/* GET target (method GET unless given); the status, the JSON body parsed (NULL when none). */
static int call(void **state, const char *method, const char *target, json_t **body)
{
	struct group *g = *state;
	char req[1024];
	int len = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
	                   method ? method : "GET", target);
	int code = http_exchange(g->port, req, (size_t)len, response, sizeof(response));
	const char *sep = strstr(response, "\r\n\r\n");
	if (body)
		*body = sep ? json_loads(sep + 4, 0, NULL) : NULL;
	if (code)
		assert_non_null(strcasestr(response, "\r\nContent-Type: application/json"));
	return code;
}

static void test_api_walk_by_cursor_returns_every_row_exactly_once_in_order(void **state)
{
	/* 7 a page: page edges fall inside runs of rows sharing a created_at, where only id decides */
	static int seen[FEED_ROWS + 1];
	memset(seen, 0, sizeof(seen));
	char target[256] = "/v1/items?limit=7", last_at[40] = "";
	int64_t last_id = 0, rows = 0, pages = 0;
	for (;;) {
		json_t *body;
		assert_int_equal(call(state, NULL, target, &body), 200);
		json_t *items = json_object_get(body, "items");
		assert_true(json_is_array(items));
		assert_true(json_array_size(items) <= 7);
		assert_int_equal(json_integer_value(json_object_get(body, "limit")), 7);
		size_t i;
		json_t *it;
		json_array_foreach(items, i, it)
		{
			int64_t id = json_integer_value(json_object_get(it, "id"));
			const char *at = json_string_value(json_object_get(it, "created_at"));
			assert_true(id >= 1 && id <= FEED_ROWS);
			assert_non_null(at);
			seen[id]++;
			/* strictly after the row before it: newest first, id breaking ties */
			int cmp = strcmp(at, last_at);
			if (last_id && !(cmp < 0 || (cmp == 0 && id < last_id)))
				fail_msg("row %lld (%s) after row %lld (%s)", (long long)id, at,
				         (long long)last_id, last_at);
			snprintf(last_at, sizeof(last_at), "%s", at);
			last_id = id;
			rows++;
		}
		pages++;
		json_t *next = json_object_get(body, "next_cursor");
		if (json_is_null(next)) {
			json_decref(body);
			break;
		}
		assert_int_equal(json_array_size(items), 7);
		assert_int_equal(strlen(json_string_value(next)), PAGINATION_CURSOR_TEXT_LEN);
		snprintf(target, sizeof(target), "/v1/items?limit=7&cursor=%s", json_string_value(next));
		json_decref(body);
		assert_true(pages < FEED_ROWS);
	}
	assert_int_equal(rows, FEED_ROWS);
	assert_int_equal(pages, (FEED_ROWS + 6) / 7);
	for (int id = 1; id <= FEED_ROWS; id++)
		if (seen[id] != 1)
			fail_msg("row %d returned %d times", id, seen[id]);
	/* no limit: 20, the default */
	json_t *body;
	assert_int_equal(call(state, NULL, "/v1/items", &body), 200);
	assert_int_equal(json_array_size(json_object_get(body, "items")), 20);
	json_decref(body);
}

/* A request the API must refuse: 400, {"error": ...} (and reason when given), nothing else. */
static void refused(void **state, const char *target, const char *reason, const char *says)
{
	json_t *body;
	int code = call(state, NULL, target, &body);
	if (code != 400)
		fail_msg("%s: %d, not 400: %s", target, code, response);
	assert_non_null(body);
	const char *error = json_string_value(json_object_get(body, "error"));
	assert_non_null(error);
	if (says && !strstr(error, says))
		fail_msg("%s: \"%s\" does not say \"%s\"", target, error, says);
	assert_null(json_object_get(body, "items"));
	assert_null(json_object_get(body, "next_cursor"));
	if (reason)
		assert_string_equal(json_string_value(json_object_get(body, "reason")), reason);
	assert_int_equal(json_object_size(body), reason ? 2 : 1);
	json_decref(body);
}

static void test_api_refuses_bad_cursors_and_limits_with_400_and_a_clear_body(void **state)
{
	json_t *body;
	assert_int_equal(call(state, NULL, "/v1/items?limit=3", &body), 200);
	char cursor[PAGINATION_CURSOR_TEXT_MAX], target[256];
	snprintf(cursor, sizeof(cursor), "%s", json_string_value(json_object_get(body, "next_cursor")));
	json_decref(body);
	/* the cursor as given works, limit and cursor in either order */
	snprintf(target, sizeof(target), "/v1/items?cursor=%s&limit=3", cursor);
	assert_int_equal(call(state, NULL, target, NULL), 200);
	/* tampered: one character of the position changed */
	cursor[20] = cursor[20] == 'A' ? 'B' : 'A';
	snprintf(target, sizeof(target), "/v1/items?cursor=%s", cursor);
	refused(state, target, "tampered", "signature");
	/* forged: a position of the client's choosing, signed with a key that is not the API's */
	struct pagination_cursor c = {1704067200000000, 500, (int64_t)time(NULL)};
	assert_int_equal(pagination_cursor_encode(KEY, &c, cursor, sizeof(cursor)), 0);
	snprintf(target, sizeof(target), "/v1/items?cursor=%s", cursor);
	refused(state, target, "tampered", "signature");
	/* expired: the API's own key, issued a second past the lifetime */
	c.issued_s = (int64_t)time(NULL) - TTL_S - 2;
	assert_int_equal(pagination_cursor_encode(pagination_cursor_key(), &c, cursor, sizeof(cursor)), 0);
	snprintf(target, sizeof(target), "/v1/items?cursor=%s", cursor);
	refused(state, target, "expired", "expired");
	/* malformed */
	refused(state, "/v1/items?cursor=not-a-cursor", "malformed", "malformed");
	refused(state, "/v1/items?cursor=", "malformed", "malformed");
	refused(state, "/v1/items?cursor=%2B%2F%3D", "malformed", "malformed");
	/* limits out of 1..100, or not numbers */
	refused(state, "/v1/items?limit=0", NULL, "limit");
	refused(state, "/v1/items?limit=101", NULL, "limit");
	refused(state, "/v1/items?limit=-1", NULL, "limit");
	refused(state, "/v1/items?limit=ten", NULL, "limit");
	/* what a cursor cannot do, and what is not a parameter */
	refused(state, "/v1/items?page=500", NULL, "cannot jump");
	refused(state, "/v1/items?offset=10000", NULL, "cannot jump");
	refused(state, "/v1/items?sort=id", NULL, "unknown parameter");
	refused(state, "/v1/items?cursor=a&cursor=b", NULL, "send one");
	refused(state, "/v1/items?limit=5&limit=500", NULL, "send one");
	/* a NUL would end the decoded value early: a good cursor with junk after it is not good */
	assert_int_equal(call(state, NULL, "/v1/items?limit=3", &body), 200);
	snprintf(target, sizeof(target), "/v1/items?cursor=%s%%00junk",
	         json_string_value(json_object_get(body, "next_cursor")));
	json_decref(body);
	refused(state, target, NULL, "NUL");
	refused(state, "/v1/items?limit=5%00x", NULL, "NUL");
	/* the edges of the range are fine */
	assert_int_equal(call(state, NULL, "/v1/items?limit=1", NULL), 200);
	assert_int_equal(call(state, NULL, "/v1/items?limit=100", &body), 200);
	assert_int_equal(json_array_size(json_object_get(body, "items")), 100);
	json_decref(body);
	assert_int_equal(call(state, "POST", "/v1/items", NULL), 405);
	assert_non_null(strcasestr(response, "\r\nAllow: GET\r\n"));
	assert_int_equal(call(state, "DELETE", "/v1/items/count", NULL), 405);
	assert_non_null(strcasestr(response, "\r\nAllow: GET\r\n"));
}

static void test_api_count_is_the_estimate_beside_a_capped_count(void **state)
{
	struct group *g = *state;
	json_t *body;
	assert_int_equal(call(state, NULL, "/v1/items/count", &body), 200);
	/* reltuples after the seed's VACUUM ANALYZE: the table's size */
	assert_int_equal(json_integer_value(json_object_get(body, "estimate")), FEED_ROWS);
	/* the cap (10,000) is above the feed: counted exactly */
	assert_int_equal(json_integer_value(json_object_get(body, "count_at_least")), FEED_ROWS);
	assert_true(json_is_true(json_object_get(body, "exact")));
	json_decref(body);
	/* an API whose cap is below the feed says "at least" */
	char err[512];
	struct pagination_config cfg = g->cfg;
	cfg.count_cap = 100;
	struct pagination_api *api = pagination_api_start(&cfg, 0, err, sizeof(err));
	if (!api)
		fail_msg("%s", err);
	struct group other = {cfg, api, pagination_api_port(api)};
	void *ostate = &other;
	assert_int_equal(call(&ostate, NULL, "/v1/items/count", &body), 200);
	assert_int_equal(json_integer_value(json_object_get(body, "count_at_least")), 100);
	assert_true(json_is_false(json_object_get(body, "exact")));
	assert_int_equal(json_integer_value(json_object_get(body, "cap")), 100);
	json_decref(body);
	refused(&ostate, "/v1/items/count?exact=1", NULL, "no parameters");
	pagination_api_stop(api);
}

/* ---- the run, judged ---- */

/* Phase 4 of a run: the API's contract, request by request, and the walk by next_cursor. */
static void assert_api_story(const struct pagination_api_story *a, const struct pagination_config *cfg)
{
	assert_true(a->nsteps >= 9);
	for (int i = 0; i < a->nsteps; i++)
		if (a->steps[i].status != a->steps[i].want ||
		    (a->steps[i].want_reason && strcmp(a->steps[i].reason, a->steps[i].want_reason)))
			fail_msg("%s: %d %s, not %d %s", a->steps[i].what, a->steps[i].status,
			         a->steps[i].reason, a->steps[i].want,
			         a->steps[i].want_reason ? a->steps[i].want_reason : "");
	assert_int_equal(a->walked_pages, cfg->api_pages);
	assert_int_equal(a->walked_rows, (int64_t)cfg->api_pages * cfg->api_limit);
	assert_true(a->in_order);
	assert_int_equal(a->cursor_len, PAGINATION_CURSOR_TEXT_LEN);
	assert_int_equal(a->estimate, cfg->rows);
	assert_int_equal(a->count_at_least, cfg->count_cap);
	assert_false(a->exact);
}

static void test_run_demonstrates_the_claim_and_the_counts_agree(void **state)
{
	(void)state;
	struct pagination_config cfg;
	pagination_config_default(&cfg, true);
	/* pages 1, 5 and 500 of 20: the deepest skips 9,980 rows */
	pagination_config_rows(&cfg, 50000);
	cfg.walk_rows = 1000;
	struct pagination_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	struct lab_answers answers = {0};
	cfg.hooks = lab_answers_hooks(&answers, &cfg, r);
	char err[LAB_ERRLEN];
	if (pagination_run(&cfg, r, err, sizeof(err)) < 0)
		fail_msg("pagination_run: %s", err);
	struct lab_verdict v;
	pagination_judge(r, &v);
	print_message("%s\n  %s\n", v.claim, v.evidence);
	assert_true(v.demonstrated);
	/* --predict's answers: ties (b); the deepest OFFSET page reads OFFSET + LIMIT rows, as the
	 * question's own numbers say; only OFFSET served duplicates or skips (a); a changed cursor
	 * fails its signature (b) */
	lab_assert_every_phase_asks(&answers, PAGINATION_PHASES);
	assert_true(lab_answer(&answers, "seed") == 1);
	int deepest = cfg.pages[PAGINATION_DEPTHS - 1];
	assert_true(lab_answer(&answers, "cost") == (double)(deepest - 1) * cfg.page_size + cfg.page_size);
	assert_true(lab_answer(&answers, "walk") == 0);
	assert_true(lab_answer(&answers, "api") == 1);

	/* phase 1: the feed as seeded, about three rows to a created_at */
	assert_int_equal(r->seed.rows, 50000);
	assert_true(r->seed.distinct_created * 2 < r->seed.rows && r->seed.max_ties >= 3);

	/* phase 2: OFFSET reads every row it skips, keyset the page alone (the model, exactly) */
	const struct pagination_cost *c = &r->cost;
	assert_int_equal(c->ndepths, PAGINATION_DEPTHS);
	assert_int_equal(c->offset[2].page, 500);
	for (int d = 0; d < c->ndepths; d++) {
		assert_int_equal(c->offset[d].rows_scanned, (int64_t)c->offset[d].page * cfg.page_size);
		assert_int_equal(c->keyset[d].rows_scanned, cfg.page_size);
		assert_int_equal(c->offset[d].rows_returned, cfg.page_size);
		assert_int_equal(c->keyset[d].rows_returned, cfg.page_size);
		assert_true(c->offset[d].buffers >= 1 && c->keyset[d].buffers >= 1);
	}
	/* buffers: OFFSET's grow with every depth; keyset's deepest page costs less than OFFSET's */
	assert_true(c->offset[0].buffers < c->offset[1].buffers &&
	            c->offset[1].buffers < c->offset[2].buffers);
	assert_true(c->keyset[2].buffers < c->offset[2].buffers);
	assert_true(pagination_growth_rows(c, PAGINATION_OFFSET) == 500.0);
	assert_true(pagination_growth_rows(c, PAGINATION_KEYSET) == 1.0);

	/* phase 3: the same writes faced both walks */
	const struct pagination_walk *o = &r->walk[PAGINATION_OFFSET], *k = &r->walk[PAGINATION_KEYSET];
	print_message("OFFSET: %lld inserted, %lld + %lld deleted, %lld duplicates, %lld skips (first %lld, "
	              "%lld)\n",
	              (long long)o->inserted, (long long)o->deleted_behind, (long long)o->deleted_ahead,
	              (long long)o->duplicates, (long long)o->skips, (long long)o->first_duplicate,
	              (long long)o->first_skip);
	assert_true(o->inserted > 0 && o->deleted_behind > 0 && o->deleted_ahead > 0);
	assert_int_equal(o->inserted, k->inserted);
	/* every row added at the head pushes one read row back onto OFFSET's next page; the deleter may
	 * remove a few of those later (then they are not stable): most, never more, are counted */
	assert_true(o->duplicates <= o->inserted && o->duplicates * 2 >= o->inserted);
	/* every row deleted behind pulls one forward past it (unless that one is deleted later) */
	assert_true(o->skips >= 1 && o->skips <= o->deleted_behind);
	assert_true(o->first_duplicate > 0 && o->first_skip > 0);
	assert_int_equal(k->duplicates, 0);
	assert_int_equal(k->skips, 0);
	assert_int_equal(k->first_duplicate, 0);
	assert_int_equal(k->first_skip, 0);
	/* keyset read each stable row once, and each row deleted behind it before it was deleted */
	assert_int_equal(k->stable, cfg.walk_rows - k->deleted_behind - k->deleted_ahead);
	assert_int_equal(k->rows_read, k->stable + k->deleted_behind);
	/* the cursor's own row was deleted under it, and keyset went on */
	assert_true(k->cursor_rows_deleted > 0);

	assert_api_story(&r->api, &cfg);
	free(r);
	lab_assert_nothing_left(PAGINATION_SCHEMA, NULL);
}

/* A result the judge accepts: the numbers of a --quick run, rounded. */
static void good_result(struct pagination_result *r)
{
	memset(r, 0, sizeof(*r));
	struct pagination_cost *c = &r->cost;
	c->page_size = 20;
	c->ndepths = 3;
	const int pages[] = {1, 10, 1000}, obuf[] = {4, 17, 1149}, kbuf[] = {4, 7, 7};
	for (int d = 0; d < 3; d++) {
		c->offset[d] = (struct pagination_measure){
		        .page = pages[d], .rows_scanned = pages[d] * 20, .buffers = obuf[d]};
		c->keyset[d] =
		        (struct pagination_measure){.page = pages[d], .rows_scanned = 20, .buffers = kbuf[d]};
	}
	for (int m = 0; m < PAGINATION_METHODS; m++)
		r->walk[m] = (struct pagination_walk){
		        .pages = 40, .inserted = 45, .deleted_behind = 42, .stable = 1922};
	r->walk[PAGINATION_OFFSET].duplicates = 45;
	r->walk[PAGINATION_OFFSET].skips = 42;
	struct pagination_api_story *a = &r->api;
	a->nsteps = 2;
	a->steps[0] = (struct pagination_api_step){.what = "pages", .status = 200, .want = 200};
	a->steps[1] = (struct pagination_api_step){.what = "tampered",
	                                           .status = 400,
	                                           .want = 400,
	                                           .want_reason = "tampered",
	                                           .reason = "tampered"};
	a->walked_pages = 5;
	a->in_order = true;
}

/* The judge on r: not demonstrated, and the evidence starts with says. */
static void judged_not_shown(const struct pagination_result *r, const char *says)
{
	struct lab_verdict v;
	pagination_judge(r, &v);
	if (v.demonstrated || strncmp(v.evidence, says, strlen(says)) != 0)
		fail_msg("%s: %s", v.demonstrated ? "demonstrated" : "not shown", v.evidence);
}

static void test_judge_says_which_claim_failed(void **state)
{
	(void)state;
	struct pagination_result r;
	struct lab_verdict v;
	good_result(&r);
	pagination_judge(&r, &v);
	assert_true(v.demonstrated);
	memset(&r, 0, sizeof(r));
	judged_not_shown(&r, "fewer than two depths");
	good_result(&r);
	r.cost.keyset[0].buffers = 0;
	judged_not_shown(&r, "page 1 touched no rows or no buffers");
	good_result(&r);
	r.cost.offset[2].buffers = 30;
	judged_not_shown(&r, "OFFSET grew only");
	good_result(&r);
	r.cost.keyset[2].buffers = 40;
	judged_not_shown(&r, "keyset grew");
	/* a walk nobody wrote under shows nothing, whatever its counts */
	good_result(&r);
	r.walk[PAGINATION_KEYSET].inserted = 0;
	judged_not_shown(&r, "the keyset walk had no writes");
	good_result(&r);
	r.walk[PAGINATION_OFFSET].duplicates = 0;
	judged_not_shown(&r, "OFFSET under writes");
	good_result(&r);
	r.walk[PAGINATION_KEYSET].skips = 1;
	judged_not_shown(&r, "keyset under writes");
	/* the API: a status, a reason, a walk that never followed a cursor, pages out of order */
	good_result(&r);
	r.api.steps[0].status = 500;
	judged_not_shown(&r, "the API: pages got 500");
	good_result(&r);
	snprintf(r.api.steps[1].reason, sizeof(r.api.steps[1].reason), "malformed");
	judged_not_shown(&r, "the API: tampered was refused as \"malformed\"");
	good_result(&r);
	r.api.walked_pages = 1;
	judged_not_shown(&r, "the API walk read 1 pages");
	good_result(&r);
	r.api.in_order = false;
	judged_not_shown(&r, "the API's pages did not continue");
}

/*
 * --predict on a real terminal, against the real servers: the lab asks each phase's question, the
 * test types the answers ahead (right, wrong, skipped, right), and the reveals and the score are
 * on the screen beside a demonstrated verdict. (lab-pagination is the quickest lab whose answers
 * the test knows from the concept alone.)
 */
static void test_predict_on_a_terminal_scores_right_wrong_and_skipped(void **state)
{
	(void)state;
	static char screen[65536];
	/* b: ties, the tie-breaker's reason (right); 5 rows for a deep OFFSET page (wrong); Enter on
	 * the walk (skipped); b: a changed cursor is refused with 400 (right) */
	int rc = lab_run_pty("pagination", "--quick --predict", "b\n5\n\nb\n", screen, sizeof(screen));
	if (rc != LAB_EXIT_OK)
		fail_msg("exit %d, not 0; the screen:\n%s", rc, screen);
	assert_true(lab_screen_shows(screen, "Why the id?"));
	assert_true(lab_screen_shows(screen, "✔ you said b (ties: several rows share a created_at"));
	assert_true(lab_screen_shows(screen, "✘ you said 5 rows · measured"));
	assert_true(lab_screen_shows(screen, "outside ±1%"));
	assert_true(lab_screen_shows(screen, "– skipped · it was a (OFFSET)"));
	assert_true(
	        lab_screen_shows(screen, "✔ you said b (400: the cursor fails its signature check) · right"));
	assert_true(lab_screen_shows(screen, "prediction score: 2 of 4 within tolerance (1 skipped)"));
	assert_true(lab_screen_shows(screen, "✔ demonstrated:"));
	/* the question after the phase's title, the reveal after its table */
	const char *title = strstr(screen, "[2/4]"), *ask = strstr(screen, "? Page ");
	const char *reveal = strstr(screen, "✘ you said 5 rows");
	assert_true(title && ask && reveal);
	assert_true(title < ask && ask < reveal);
	lab_assert_nothing_left("lab_pagination", "lab:pagination:");
}

static void test_ctrl_c_drops_the_schema(void **state)
{
	(void)state;
	static char out[8192], errout[4096];
	double stop_ms;
	/* the full run: the signal lands while the server seeds a million rows */
	int rc = lab_interrupt("pagination", "", "[1/", SIGINT, 15000, &stop_ms, out, sizeof(out), errout,
	                       sizeof(errout));
	print_message("exit %d, %.0f ms after SIGINT; stderr: %s\n", rc, stop_ms, errout);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_pagination", "lab:pagination:");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_b64url_matches_rfc4648_and_uses_the_url_alphabet),
	        cmocka_unit_test(test_cursor_round_trip),
	        cmocka_unit_test(test_cursor_refused_when_tampered_forged_expired_or_malformed),
	        cmocka_unit_test(test_api_walk_by_cursor_returns_every_row_exactly_once_in_order),
	        cmocka_unit_test(test_api_refuses_bad_cursors_and_limits_with_400_and_a_clear_body),
	        cmocka_unit_test(test_api_count_is_the_estimate_beside_a_capped_count),
	        cmocka_unit_test(test_judge_says_which_claim_failed),
	        /* drops the group's schema: the tests above need it */
	        cmocka_unit_test(test_run_demonstrates_the_claim_and_the_counts_agree),
	        cmocka_unit_test(test_predict_on_a_terminal_scores_right_wrong_and_skipped),
	        cmocka_unit_test(test_ctrl_c_drops_the_schema),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
