/*
 * client.c — the API as a client sees it: a blocking HTTP GET (common/http_client.h) and phase 4, which pages
 * through GET /v1/items with next_cursor and sends what a client should not (a changed cursor, an old one, a
 * forged one, a page number, a limit out of range), each answer set beside the status the API's contract
 * gives it.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_client.h"
#include "internal.h"

#define TIMEOUT_MS 5000
/* a page of 100 items is about 15 KB */
#define BODY_MAX (256 * 1024)
/* the step of the changed cursor, as the table names it and --predict's question finds it */
#define CHANGED_CURSOR "next_cursor with one character changed"

/* ---- phase 4 ---- */

struct api_walk {
	int port;
	struct pagination_api_story *st;
	char body[BODY_MAX];
	char cursor[PAGINATION_CURSOR_TEXT_MAX + 1]; /* the last next_cursor */
	char last_at[40];                            /* the last item's created_at and id */
	int64_t last_id;
};

/* One request as a step of the story: its status and a note from the body. */
static int step(struct api_walk *w, const char *what, const char *target, int want, const char *want_reason,
                char *err, size_t errlen)
{
	struct pagination_api_story *st = w->st;
	if (st->nsteps == PAGINATION_API_MAX) {
		snprintf(err, errlen, "too many steps");
		return -1;
	}
	struct pagination_api_step *s = &st->steps[st->nsteps++];
	snprintf(s->what, sizeof(s->what), "%s", what);
	s->want = want;
	s->want_reason = want_reason;
	if (http_get(w->port, target, TIMEOUT_MS, &s->status, w->body, sizeof(w->body), err, errlen) < 0)
		return -1;
	json_t *doc = json_loads(w->body, 0, NULL);
	const char *reason = json_string_value(json_object_get(doc, "reason"));
	const char *error = json_string_value(json_object_get(doc, "error"));
	snprintf(s->reason, sizeof(s->reason), "%s", reason ? reason : "");
	if (error)
		snprintf(s->note, sizeof(s->note), "%s%s%s", reason ? reason : "", reason ? ": " : "", error);
	json_decref(doc);
	return 0;
}

/* Reads a 200 page: order against the page before, the next cursor. The items it held, or -1. */
static int read_items(struct api_walk *w)
{
	json_t *doc = json_loads(w->body, 0, NULL);
	json_t *items = json_object_get(doc, "items");
	if (!json_is_array(items)) {
		json_decref(doc);
		return -1;
	}
	size_t i;
	json_t *it;
	json_array_foreach(items, i, it)
	{
		const char *at = json_string_value(json_object_get(it, "created_at"));
		int64_t id = (int64_t)json_integer_value(json_object_get(it, "id"));
		/* feed order, newest first: each row strictly after the one before (ISO times sort as text)
		 */
		int cmp = at ? strcmp(at, w->last_at) : 0;
		if (!at || (w->last_id && (cmp > 0 || (cmp == 0 && id >= w->last_id))))
			w->st->in_order = false;
		snprintf(w->last_at, sizeof(w->last_at), "%s", at ? at : "");
		w->last_id = id;
	}
	const char *next = json_string_value(json_object_get(doc, "next_cursor"));
	snprintf(w->cursor, sizeof(w->cursor), "%s", next ? next : "");
	w->st->cursor_len = next ? (int)strlen(next) : w->st->cursor_len;
	int n = (int)json_array_size(items);
	json_decref(doc);
	return n;
}

/* Page 1, then api_pages - 1 pages by next_cursor: one step, each page continuing the last. */
static int follow(struct api_walk *w, const struct pagination_config *cfg, char *err, size_t errlen)
{
	char target[256];
	struct pagination_api_story *st = w->st;
	struct pagination_api_step *s = &st->steps[st->nsteps++];
	snprintf(s->what, sizeof(s->what), "pages 1-%d, each by the last's next_cursor", cfg->api_pages);
	s->want = 200;
	st->in_order = true;
	for (int p = 1; p <= cfg->api_pages; p++) {
		if (p == 1)
			snprintf(target, sizeof(target), "/v1/items?limit=%d", cfg->api_limit);
		else
			snprintf(target, sizeof(target), "/v1/items?limit=%d&cursor=%s", cfg->api_limit,
			         w->cursor);
		if (http_get(w->port, target, TIMEOUT_MS, &s->status, w->body, sizeof(w->body), err, errlen) <
		    0)
			return -1;
		int items = s->status == 200 ? read_items(w) : -1;
		if (items < 0) {
			/* a 200 whose body is not a page shows nothing: the judge must not count it */
			if (s->status == 200)
				st->in_order = false;
			break;
		}
		st->walked_rows += items;
		st->walked_pages++;
		if (!w->cursor[0])
			break;
	}
	if (s->status == 200)
		snprintf(s->note, sizeof(s->note), "%lld items on %lld pages %s; cursor %d chars",
		         (long long)st->walked_rows, (long long)st->walked_pages,
		         st->in_order ? "in feed order" : "OUT OF ORDER", st->cursor_len);
	return 0;
}

/* A cursor the API's key signed for the last row, issued age_s ago. */
static void mint(struct api_walk *w, int64_t age_s, const unsigned char *key, char *out, size_t len)
{
	/* the last row's position in µs is not needed: the API refuses the cursor before reading it */
	struct pagination_cursor c = {0, w->last_id, (int64_t)time(NULL) - age_s};
	if (pagination_cursor_encode(key, &c, out, len) < 0)
		snprintf(out, len, "x");
}

/* What a client should not send, and what it cannot ask. */
static int refusals(struct api_walk *w, const struct pagination_config *cfg, char *err, size_t errlen)
{
	char target[256], cursor[PAGINATION_CURSOR_TEXT_MAX + 1];
	unsigned char other_key[PAGINATION_CURSOR_KEY_LEN] = {0};
	if (strlen(w->cursor) != PAGINATION_CURSOR_TEXT_LEN) {
		snprintf(err, errlen,
		         "the walk by next_cursor left no cursor to change (a feed of %d pages?)",
		         cfg->api_pages);
		return -1;
	}
	/* one character in the middle changed: 6 bits of the position */
	snprintf(cursor, sizeof(cursor), "%s", w->cursor);
	cursor[PAGINATION_CURSOR_TEXT_LEN / 2] = cursor[PAGINATION_CURSOR_TEXT_LEN / 2] == 'A' ? 'B' : 'A';
	snprintf(target, sizeof(target), "/v1/items?cursor=%s", cursor);
	if (step(w, CHANGED_CURSOR, target, 400, "tampered", err, errlen) < 0)
		return -1;
	mint(w, 0, other_key, cursor, sizeof(cursor));
	snprintf(target, sizeof(target), "/v1/items?cursor=%s", cursor);
	if (step(w, "a position signed with another key", target, 400, "tampered", err, errlen) < 0)
		return -1;
	mint(w, cfg->cursor_ttl_s + 60, pagination_cursor_key(), cursor, sizeof(cursor));
	snprintf(target, sizeof(target), "/v1/items?cursor=%s", cursor);
	if (step(w, "a cursor issued a minute past its lifetime", target, 400, "expired", err, errlen) < 0 ||
	    step(w, "cursor=not-a-cursor", "/v1/items?cursor=not-a-cursor", 400, "malformed", err, errlen) <
	            0 ||
	    step(w, "limit=0", "/v1/items?limit=0", 400, NULL, err, errlen) < 0 ||
	    step(w, "limit=101", "/v1/items?limit=101", 400, NULL, err, errlen) < 0 ||
	    step(w, "page=500 (jump to a page)", "/v1/items?page=500", 400, NULL, err, errlen) < 0)
		return -1;
	return 0;
}

/* GET /v1/items/count: the answers to "how many?" that a cursor cannot give. */
static int count(struct api_walk *w, char *err, size_t errlen)
{
	if (step(w, "GET /v1/items/count", "/v1/items/count", 200, NULL, err, errlen) < 0)
		return -1;
	struct pagination_api_step *s = &w->st->steps[w->st->nsteps - 1];
	json_t *doc = json_loads(w->body, 0, NULL);
	w->st->estimate = (int64_t)json_integer_value(json_object_get(doc, "estimate"));
	w->st->count_at_least = (int64_t)json_integer_value(json_object_get(doc, "count_at_least"));
	w->st->exact = json_is_true(json_object_get(doc, "exact"));
	if (s->status == 200)
		snprintf(s->note, sizeof(s->note), "estimate %s (reltuples), counted %s%s",
		         TERM_NUM(w->st->estimate, 0), TERM_NUM(w->st->count_at_least, 0),
		         w->st->exact ? "" : "+");
	json_decref(doc);
	return 0;
}

int pagination_phase_api(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct pagination_config *cfg = cfgv;
	struct pagination_result *r = result;
	struct api_walk *w = calloc(1, sizeof(*w));
	if (!w) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	struct pagination_api *api = pagination_api_start(cfg, 0, err, errlen);
	int ret = -1;
	if (api) {
		w->port = pagination_api_port(api);
		w->st = &r->api;
		ret = follow(w, cfg, err, errlen) < 0 || refusals(w, cfg, err, errlen) < 0 ||
		                      count(w, err, errlen) < 0
		              ? -1
		              : 0;
		pagination_api_stop(api);
	}
	free(w);
	return ret < 0 ? pag_lost(cfg, r, err, errlen) : 0;
}

/* --predict: what the API answers a next_cursor with one character changed (the answer's index) */
static double q_api_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct pagination_api_story *a = &((const struct pagination_result *)result)->api;
	for (int i = 0; i < a->nsteps; i++) {
		const struct pagination_api_step *s = &a->steps[i];
		if (strcmp(s->what, CHANGED_CURSOR) != 0)
			continue;
		if (s->status == 200)
			return 0;
		if (s->status == 400 && strcmp(s->reason, "tampered") == 0)
			return 1;
		return s->status >= 500 ? 2 : NAN;
	}
	return NAN;
}

const struct lab_question pag_q_api = {
        .text = "The API hands out an opaque next_cursor. A client changes one character of it and "
                "sends it back. What does it get?",
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"200: the page at the position it now names", "400: the cursor fails its signature check",
                    "500: the server cannot decode it"},
        .measured = q_api_measured,
        .why = "the cursor is the position signed with HMAC-SHA256: a changed one fails the check and "
               "is refused, so clients cannot forge positions or depend on its format"};
