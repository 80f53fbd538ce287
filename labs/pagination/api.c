/*
 * api.c — lab-pagination's HTTP API (pagination.h lists its routes and answers). Every handler
 * runs on the API's loop thread: it checks the request (nothing reaches PostgreSQL before the
 * parameters and the cursor are good), borrows a connection from common/pool.h, runs one
 * statement with pool_query_prepared (prepared once per connection), replies and gives the connection back.
 * When the API stops, pool_free calls back every request still waiting or running ("pool closed"), which
 * replies 503 and frees its context, before the server and its requests are freed (http_app_stop's order).
 */
#include <event2/http.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "internal.h"
#include "pool.h"

/* the API's connections open before it answers; a server this slow is not coming */
#define POOL_READY_MS 10000
/* a request waits this long for a connection, then gets 503 */
#define ACQUIRE_TIMEOUT_MS 2000

#define ITEM_COLUMNS                                                                                         \
	"SELECT id, (extract(epoch FROM created_at) * 1000000)::bigint,"                                     \
	" to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), author, body "        \
	"FROM " SCHEMA ".feed"
/* Each prepared once per pooled connection, on its first use there (pool_query_prepared). */
static const struct pool_stmt SQL_FIRST = {"pagination_first", ITEM_COLUMNS " " FEED_ORDER " LIMIT $1", 1};
/* the cursor's created_at is µs since the epoch: integer arithmetic, no rounding through a float */
static const struct pool_stmt SQL_AFTER = {"pagination_after",
                                           ITEM_COLUMNS
                                           " WHERE (created_at, id) < (timestamptz 'epoch' + $2::bigint *"
                                           " interval '1 microsecond', $3::bigint) " FEED_ORDER " LIMIT $1",
                                           3};
static const struct pool_stmt SQL_COUNT = {
        "pagination_count",
        "SELECT (SELECT reltuples::bigint FROM pg_class WHERE oid = '" SCHEMA
        ".feed'::regclass), (SELECT count(*) FROM (SELECT 1 FROM " SCHEMA ".feed LIMIT $1) t)",
        1};

struct pagination_api {
	struct pagination_config cfg;
	struct http_app app;
	struct pool *pool;
	const unsigned char *key;
};

/* One request from its check to its reply. */
struct request_ctx {
	struct pagination_api *api;
	struct evhttp_request *req;
	struct pool_conn *conn;
	bool count; /* /v1/items/count */
	long limit;
	bool has_cursor;
	struct pagination_cursor cursor;
};

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static unsigned char key_bytes[PAGINATION_CURSOR_KEY_LEN];
static bool key_ok;

static void key_make(void)
{
	key_ok = RAND_bytes(key_bytes, sizeof(key_bytes)) == 1;
}

const unsigned char *pagination_cursor_key(void)
{
	pthread_once(&key_once, key_make);
	return key_ok ? key_bytes : NULL;
}

static void finish(struct request_ctx *ctx)
{
	if (ctx->conn)
		pool_release(ctx->conn);
	free(ctx);
}

static void fail(struct request_ctx *ctx, const char *err)
{
	/* "pool closed": the API is stopping; a client may retry elsewhere */
	evhttp_add_header(evhttp_request_get_output_headers(ctx->req), "Retry-After", "1");
	http_reply_error(ctx->req, 503, "%s", err);
	finish(ctx);
}

static json_t *item_json(PGresult *res, int row)
{
	return json_pack("{s:I,s:s,s:I,s:s}", "id", (json_int_t)atoll(PQgetvalue(res, row, 0)), "created_at",
	                 PQgetvalue(res, row, 2), "author", (json_int_t)atoll(PQgetvalue(res, row, 3)),
	                 "body", PQgetvalue(res, row, 4));
}

/* The page: limit + 1 rows were asked for, so a next page exists when they all came. */
static void items_reply(struct request_ctx *ctx, PGresult *res)
{
	int rows = PQntuples(res);
	int shown = rows > ctx->limit ? (int)ctx->limit : rows;
	json_t *items = json_array();
	for (int i = 0; i < shown; i++)
		json_array_append_new(items, item_json(res, i));
	json_t *next = json_null();
	if (rows > ctx->limit) {
		struct pagination_cursor c = {atoll(PQgetvalue(res, shown - 1, 1)),
		                              atoll(PQgetvalue(res, shown - 1, 0)), (int64_t)time(NULL)};
		char text[PAGINATION_CURSOR_TEXT_MAX];
		if (pagination_cursor_encode(ctx->api->key, &c, text, sizeof(text)) < 0) {
			json_decref(items);
			http_reply_error(ctx->req, 500, "the cursor could not be signed");
			return;
		}
		next = json_string(text);
	}
	http_reply_json(
	        ctx->req, 200,
	        json_pack("{s:o,s:o,s:i}", "items", items, "next_cursor", next, "limit", (int)ctx->limit));
}

static void count_reply(struct request_ctx *ctx, PGresult *res)
{
	int cap = ctx->api->cfg.count_cap;
	int64_t counted = atoll(PQgetvalue(res, 0, 1));
	http_reply_json(ctx->req, 200,
	                json_pack("{s:I,s:s,s:I,s:b,s:i}", "estimate",
	                          (json_int_t)atoll(PQgetvalue(res, 0, 0)), "estimate_source",
	                          "pg_class.reltuples (as of the last ANALYZE or VACUUM)", "count_at_least",
	                          (json_int_t)(counted > cap ? cap : counted), "exact", counted <= cap, "cap",
	                          cap));
}

static void query_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct request_ctx *ctx = arg;
	if (!res) {
		fail(ctx, err);
		return;
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK || (ctx->count && PQntuples(res) != 1))
		http_reply_error(ctx->req, 500, "query failed: %s", PQresultErrorMessage(res));
	else if (ctx->count)
		count_reply(ctx, res);
	else
		items_reply(ctx, res);
	finish(ctx);
}

static void acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct request_ctx *ctx = arg;
	if (!conn) {
		fail(ctx, err);
		return;
	}
	ctx->conn = conn;
	char limit[24], at[24], id[24];
	snprintf(limit, sizeof(limit), "%ld",
	         ctx->count ? (long)ctx->api->cfg.count_cap + 1 : ctx->limit + 1);
	snprintf(at, sizeof(at), "%lld", (long long)ctx->cursor.created_us);
	snprintf(id, sizeof(id), "%lld", (long long)ctx->cursor.id);
	const char *p[] = {limit, at, id};
	const struct pool_stmt *s = ctx->count ? &SQL_COUNT : ctx->has_cursor ? &SQL_AFTER : &SQL_FIRST;
	int rc = pool_query_prepared(conn, s, p, query_cb, ctx);
	if (rc < 0)
		fail(ctx, "could not send the query");
}

/* A bad cursor: 400 with the reason, in words a client developer can act on. */
static void cursor_refused(struct evhttp_request *req, enum pagination_cursor_status s, int ttl_s)
{
	char msg[256];
	if (s == PAGINATION_CURSOR_EXPIRED)
		snprintf(msg, sizeof(msg),
		         "cursor expired: it was issued more than %d s ago; start again from the first page",
		         ttl_s);
	else if (s == PAGINATION_CURSOR_TAMPERED)
		snprintf(msg, sizeof(msg),
		         "cursor failed its signature check: it was changed after the API issued it; pass "
		         "next_cursor back exactly as received");
	else
		snprintf(msg, sizeof(msg),
		         "cursor is malformed: not one this API issues (%d base64url characters); pass "
		         "next_cursor "
		         "back exactly as received",
		         PAGINATION_CURSOR_TEXT_LEN);
	http_reply_json(req, 400,
	                json_pack("{s:s,s:s}", "error", msg, "reason", pagination_cursor_status_name(s)));
}

/* Everything a request must get right before it costs a query. 0, or -1 having replied 400. */
static int parse_items(struct pagination_api *api, struct evhttp_request *req, struct request_ctx *ctx)
{
	char err[256];
	struct pagination_items_query q;
	const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	int ttl = api->cfg.cursor_ttl_s;
	if (pagination_parse_items(query, api->key, (int64_t)time(NULL), ttl, &q, err, sizeof(err)) < 0) {
		if (q.cursor_status != PAGINATION_CURSOR_OK)
			cursor_refused(req, q.cursor_status, ttl);
		else
			http_reply_error(req, 400, "%s", err);
		return -1;
	}
	ctx->limit = q.limit;
	ctx->has_cursor = q.has_cursor;
	ctx->cursor = q.cursor;
	return 0;
}

static void route_cb(struct evhttp_request *req, void *arg, bool count)
{
	struct pagination_api *api = arg;
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		/* RFC 9110 15.5.6: a 405 names the methods the resource has */
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
		http_reply_error(req, 405, "only GET here");
		return;
	}
	struct request_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	ctx->api = api;
	ctx->req = req;
	ctx->count = count;
	if (count && evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req))) {
		http_reply_error(req, 400, "/v1/items/count takes no parameters");
		free(ctx);
		return;
	}
	if (!count && parse_items(api, req, ctx) < 0) {
		free(ctx);
		return;
	}
	pool_acquire(api->pool, count ? "count_handler" : "items_handler", acquired_cb, ctx);
}

static void items_cb(struct evhttp_request *req, void *arg)
{
	route_cb(req, arg, false);
}

static void count_cb(struct evhttp_request *req, void *arg)
{
	route_cb(req, arg, true);
}

struct pagination_api *pagination_api_start(const struct pagination_config *cfg, int port, char *err,
                                            size_t errlen)
{
	struct pagination_api *api = calloc(1, sizeof(*api));
	if (!api) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	api->cfg = *cfg;
	api->key = pagination_cursor_key();
	if (!api->key) {
		snprintf(err, errlen, "no random bytes for the cursor key (RAND_bytes failed)");
		free(api);
		return NULL;
	}
	struct pool_config pc = {
	        .conninfo = cfg->pg_url,
	        .min_idle = 1,
	        .max_size = cfg->pool_size,
	        .acquire_timeout_ms = ACQUIRE_TIMEOUT_MS,
	};
	if (http_app_open(&api->app, port, err, errlen) < 0 ||
	    !(api->pool = pool_new(api->app.base, &pc, err, errlen)) ||
	    pool_wait_ready(api->pool, POOL_READY_MS, err, errlen) < 0)
		goto fail;
	http_server_route(api->app.server, "/v1/items", items_cb, api);
	http_server_route(api->app.server, "/v1/items/count", count_cb, api);
	if (http_app_run(&api->app, err, errlen) < 0)
		goto fail;
	return api;
fail:
	pagination_api_stop(api);
	return NULL;
}

int pagination_api_port(const struct pagination_api *api)
{
	return http_server_port(api->app.server);
}

/* http_app_stop's release step: every request still waiting or querying is answered and freed. */
static void release_cb(void *arg)
{
	struct pagination_api *api = arg;
	pool_free(api->pool);
	api->pool = NULL;
}

void pagination_api_stop(struct pagination_api *api)
{
	if (!api)
		return;
	http_app_stop(&api->app, release_cb, api);
	free(api);
}
