/*
 * request.c — the checks of GET /v1/items's query string before anything reaches PostgreSQL,
 * as one plain function (pagination_parse_items) that the route calls with the raw query and
 * the clock: no I/O, so its fuzz harness (fuzz/fuzz_pagination_request.c) runs the route's code.
 */
#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <string.h>

#include "http.h"
#include "internal.h"

/*
 * The query's names into q (the caller clears it): limit and cursor at most once each, nothing
 * else. The cursor's text (in q) or NULL into *cursor. 0, or -1 with err.
 */
static int check_names(const char *query, struct evkeyvalq *q, const char **cursor, char *err, size_t errlen)
{
	/* "cursor=<good>%00junk" or "limit=5%00x" would be read up to the NUL: refused there */
	if (http_query_parse(query, q, err, errlen) < 0)
		return -1;
	int cursors = 0, limits = 0;
	struct evkeyval *kv;
	TAILQ_FOREACH(kv, q, next)
	{
		if (!strcmp(kv->key, "page") || !strcmp(kv->key, "offset")) {
			snprintf(err, errlen,
			         "%s= is not supported: this API pages with a cursor, which cannot jump to a "
			         "page; follow next_cursor from the first page (GET /v1/items/count gives "
			         "an estimate of the total)",
			         kv->key);
			return -1;
		}
		if (strcmp(kv->key, "limit") && strcmp(kv->key, "cursor")) {
			snprintf(err, errlen, "unknown parameter \"%.40s\" (limit, cursor)", kv->key);
			return -1;
		}
		if (!strcmp(kv->key, "cursor") && cursors++ == 0)
			*cursor = kv->value;
		limits += !strcmp(kv->key, "limit");
	}
	/* which of two the client meant is not ours to guess (http_query_long would take the first) */
	if (cursors > 1 || limits > 1) {
		snprintf(err, errlen, "%s appears %d times; send one", cursors > 1 ? "cursor" : "limit",
		         cursors > 1 ? cursors : limits);
		return -1;
	}
	return 0;
}

int pagination_parse_items(const char *query, const unsigned char *key, int64_t now_s, int ttl_s,
                           struct pagination_items_query *out, char *err, size_t errlen)
{
	const char *cursor = NULL;
	struct evkeyvalq q;
	TAILQ_INIT(&q);
	memset(out, 0, sizeof(*out));
	out->limit = PAGINATION_LIMIT_DEFAULT;
	out->cursor_status = PAGINATION_CURSOR_OK;
	int ret = check_names(query, &q, &cursor, err, errlen);
	if (ret == 0 && http_kv_long(&q, "limit", 1, PAGINATION_LIMIT_MAX, &out->limit, err, errlen) < 0)
		ret = -1;
	if (ret == 0 && cursor) {
		out->has_cursor = true;
		out->cursor_status = pagination_cursor_decode(key, cursor, now_s, ttl_s, &out->cursor);
		if (out->cursor_status != PAGINATION_CURSOR_OK) {
			snprintf(err, errlen, "cursor refused: %s",
			         pagination_cursor_status_name(out->cursor_status));
			ret = -1;
		}
	}
	evhttp_clear_headers(&q);
	return ret;
}
