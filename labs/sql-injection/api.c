/*
 * api.c — lab-sql-injection's HTTP API (sql_injection.h lists its routes and answers): one search,
 * written twice. Both routes check the same things first (user a whole number, q short and free of
 * NUL bytes, each parameter once, nothing unknown); then
 *
 *   /v1/vulnerable/notes  puts q, sort and dir into the SQL with snprintf and sends the string with
 *                         pool_query_simple (PQsendQuery: the simple protocol, where a string of
 *                         several statements runs them all), and passes the server's error on;
 *   /v1/notes             sends q as a parameter (pool_query_prepared: a named statement per
 *                         allowed sort and dir, prepared once per connection, then Bind and
 *                         Execute of the extended protocol), LIKE wildcards escaped.
 *
 * Both connect as the API's role (lab_api), search_path lab_sql_injection, statement_timeout 5 s.
 * A payload changes its session without any ';' (' AND set_config('statement_timeout', '0',
 * false) ... turns the timeout off for every later statement on that connection; pg_advisory_lock
 * holds a lock of the whole database), so after every naive request, replied to, the connection
 * runs DISCARD ALL (what a pooler such as PgBouncer runs between clients: settings back to the
 * connection's own, session locks, temporary tables and prepared statements gone: the pool sees
 * the DISCARD ALL and prepares /v1/notes' statement again on that connection) and goes back
 * to the pool only when that succeeded; a string that left a transaction open is discarded by
 * pool_release.
 */
#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "internal.h"
#include "pg.h"
#include "pool.h"

/* the API's connections open before it answers; a server this slow is not coming */
#define POOL_READY_MS 10000
/* a request waits this long for a connection, then gets 503 */
#define ACQUIRE_TIMEOUT_MS 2000

struct sqli_api {
	struct http_app app;
	struct pool *pool;
};

/* One request from its check to its reply. */
struct request_ctx {
	struct evhttp_request *req;
	struct pool_conn *conn;
	bool naive;
	struct sqli_search s;
};

/* The naive route's statement: what string concatenation builds. */
static int naive_sql(char *out, size_t len, long user, const char *q, const char *sort, const char *dir)
{
	int n = snprintf(out, len,
	                 "SELECT " NOTE_COLUMNS " FROM notes WHERE owner_id = %ld AND title ILIKE '%%%s%%'"
	                 " ORDER BY %s %s LIMIT 100",
	                 user, q, sort, dir);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

int sqli_naive_sql(char *out, size_t len, long user, const char *q)
{
	return naive_sql(out, len, user, q, "id", "asc");
}

/*
 * The parameterized route's statements: one per allowed sort and direction, none built at run
 * time, each prepared once per pooled connection on its first use (pool_query_prepared).
 */
#define SAFE_SQL(order)                                                                                      \
	"SELECT " NOTE_COLUMNS " FROM " SCHEMA ".notes WHERE owner_id = $1 AND title ILIKE '%' || $2 || '%'" \
	" ESCAPE '\\' ORDER BY " order ", id LIMIT 100"
static const struct {
	const char *sort, *dir;
	struct pool_stmt stmt;
} ALLOWED[] = {
        {"id", "asc", {"sqli_notes_id_asc", SAFE_SQL("id ASC"), 2}},
        {"id", "desc", {"sqli_notes_id_desc", SAFE_SQL("id DESC"), 2}},
        {"title", "asc", {"sqli_notes_title_asc", SAFE_SQL("title ASC"), 2}},
        {"title", "desc", {"sqli_notes_title_desc", SAFE_SQL("title DESC"), 2}},
};

static const struct pool_stmt *safe_sql(const char *sort, const char *dir)
{
	for (size_t i = 0; i < sizeof(ALLOWED) / sizeof(ALLOWED[0]); i++)
		if (!strcmp(ALLOWED[i].sort, sort) && !strcmp(ALLOWED[i].dir, dir))
			return &ALLOWED[i].stmt;
	return NULL;
}

void sqli_like_escape(const char *q, char *out, size_t len)
{
	size_t n = 0;
	for (; *q && n + 2 < len; q++) {
		if (*q == '%' || *q == '_' || *q == LIKE_ESCAPE)
			out[n++] = LIKE_ESCAPE;
		out[n++] = *q;
	}
	out[n] = '\0';
}

/* The connection back to the pool only when DISCARD ALL reset what the payload may have set. */
static void reset_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)err;
	if (res && PQresultStatus(res) == PGRES_COMMAND_OK)
		pool_release(c);
	else
		pool_discard(c, "DISCARD ALL failed after a naive request");
	free(arg);
}

static void finish(struct request_ctx *ctx)
{
	if (ctx->conn && ctx->naive) {
		if (pool_query(ctx->conn, "DISCARD ALL", 0, NULL, reset_cb, ctx) == 0)
			return;
		pool_discard(ctx->conn, "could not send DISCARD ALL after a naive request");
	} else if (ctx->conn) {
		pool_release(ctx->conn);
	}
	free(ctx);
}

static void fail(struct request_ctx *ctx, const char *err)
{
	evhttp_add_header(evhttp_request_get_output_headers(ctx->req), "Retry-After", "1");
	http_reply_error(ctx->req, 503, "%s", err);
	finish(ctx);
}

static void rows_reply(struct request_ctx *ctx, PGresult *res)
{
	json_t *notes = json_array();
	for (int i = 0; i < PQntuples(res); i++)
		json_array_append_new(notes, json_pack("{s:I,s:I,s:s}", "id",
		                                       (json_int_t)atoll(PQgetvalue(res, i, 0)), "owner",
		                                       (json_int_t)atoll(PQgetvalue(res, i, 1)), "title",
		                                       PQgetvalue(res, i, 2)));
	http_reply_json(ctx->req, 200, json_pack("{s:o,s:i}", "notes", notes, "count", PQntuples(res)));
}

static void query_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct request_ctx *ctx = arg;
	if (!res) {
		fail(ctx, err);
		return;
	}
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQnfields(res) == 3) {
		rows_reply(ctx, res);
	} else if (ctx->naive) {
		/* what naive code does: the server's words to the client (error-based injection reads them)
		 */
		char msg[512];
		const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		pg_message_line(msg, sizeof(msg), primary ? primary : "the statement returned no rows");
		http_reply_error(ctx->req, 500, "query failed: %s", msg);
	} else {
		http_reply_error(ctx->req, 500, "query failed");
	}
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
	int rc;
	if (ctx->naive) {
		rc = pool_query_simple(conn, ctx->s.sql, query_cb, ctx);
	} else {
		char user[24], pattern[2 * Q_MAX + 1];
		snprintf(user, sizeof(user), "%ld", ctx->s.user);
		sqli_like_escape(ctx->s.q, pattern, sizeof(pattern));
		const char *p[] = {user, pattern};
		rc = pool_query_prepared(conn, safe_sql(ctx->s.sort, ctx->s.dir), p, query_cb, ctx);
	}
	if (rc < 0)
		fail(ctx, "could not send the query");
}

/* Copies one decoded parameter: at most once, at most Q_MAX bytes. 0, or -1 and err. */
static int take(const struct evkeyval *kv, char *dst, int *seen, char *err, size_t errlen)
{
	if ((*seen)++) {
		snprintf(err, errlen, "%s appears more than once; send one", kv->key);
		return -1;
	}
	if (strlen(kv->value) > Q_MAX) {
		snprintf(err, errlen, "%s is longer than %d bytes", kv->key, Q_MAX);
		return -1;
	}
	snprintf(dst, Q_MAX + 1, "%s", kv->value);
	return 0;
}

/* The names and values of the query into s. 0, or -1 and err. */
static int parse_names(struct evhttp_request *req, struct sqli_search *s, struct evkeyvalq *q, char *err,
                       size_t errlen)
{
	const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	if (http_query_parse(query, q, err, errlen) < 0)
		return -1;
	int users = 0, qs = 0, sorts = 0, dirs = 0;
	char ignored[Q_MAX + 1];
	struct evkeyval *kv;
	TAILQ_FOREACH(kv, q, next)
	{
		int rc;
		if (!strcmp(kv->key, "q"))
			rc = take(kv, s->q, &qs, err, errlen);
		else if (!strcmp(kv->key, "sort"))
			rc = take(kv, s->sort, &sorts, err, errlen);
		else if (!strcmp(kv->key, "dir"))
			rc = take(kv, s->dir, &dirs, err, errlen);
		else if (!strcmp(kv->key, "user"))
			rc = take(kv, ignored, &users, err, errlen);
		else {
			snprintf(err, errlen, "unknown parameter \"%.40s\" (user, q, sort, dir)", kv->key);
			rc = -1;
		}
		if (rc < 0)
			return -1;
	}
	return 0;
}

int sqli_parse_search(struct evhttp_request *req, bool naive, struct sqli_search *s, char *err, size_t errlen)
{
	struct evkeyvalq q;
	TAILQ_INIT(&q);
	memset(s, 0, sizeof(*s));
	snprintf(s->sort, sizeof(s->sort), "id");
	snprintf(s->dir, sizeof(s->dir), "asc");
	int got = parse_names(req, s, &q, err, errlen) < 0
	                  ? -1
	                  : http_kv_long(&q, "user", 1, SQLI_USER_MAX, &s->user, err, errlen);
	evhttp_clear_headers(&q);
	if (got <= 0) {
		if (got == 0)
			snprintf(err, errlen, "user is required: user=ID (1..1000000000)");
		return -1;
	}
	if (naive) {
		if (naive_sql(s->sql, sizeof(s->sql), s->user, s->q, s->sort, s->dir) < 0) {
			snprintf(err, errlen, "the search does not fit the statement");
			return -1;
		}
		return 0;
	}
	if (strcmp(s->sort, "id") && strcmp(s->sort, "title")) {
		/* an identifier cannot be a parameter: the allow-list is the fix */
		snprintf(err, errlen, "sort must be one of: id, title");
		return -1;
	}
	if (strcmp(s->dir, "asc") && strcmp(s->dir, "desc")) {
		snprintf(err, errlen, "dir must be asc or desc");
		return -1;
	}
	return 0;
}

static void route_cb(struct evhttp_request *req, void *arg, bool naive)
{
	struct sqli_api *api = arg;
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
	ctx->req = req;
	ctx->naive = naive;
	char err[256];
	if (sqli_parse_search(req, naive, &ctx->s, err, sizeof(err)) < 0) {
		http_reply_error(req, 400, "%s", err);
		free(ctx);
		return;
	}
	pool_acquire(api->pool, naive ? "naive_search" : "search", acquired_cb, ctx);
}

static void naive_cb(struct evhttp_request *req, void *arg)
{
	route_cb(req, arg, true);
}

static void safe_cb(struct evhttp_request *req, void *arg)
{
	route_cb(req, arg, false);
}

struct sqli_api *sqli_api_start(const struct sqli_config *cfg, int port, bool vulnerable, char *err,
                                size_t errlen)
{
	struct sqli_api *api = calloc(1, sizeof(*api));
	char conninfo[2048];
	if (!api) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (sqli_api_conninfo(cfg, conninfo, sizeof(conninfo), err, errlen) < 0) {
		free(api);
		return NULL;
	}
	struct pool_config pc = {
	        .conninfo = conninfo,
	        .min_idle = 1,
	        .max_size = cfg->pool_size,
	        .acquire_timeout_ms = ACQUIRE_TIMEOUT_MS,
	};
	if (http_app_open(&api->app, port, err, errlen) < 0 ||
	    !(api->pool = pool_new(api->app.base, &pc, err, errlen)) ||
	    pool_wait_ready(api->pool, POOL_READY_MS, err, errlen) < 0)
		goto fail;
	http_server_route(api->app.server, SQLI_ROUTE_SAFE, safe_cb, api);
	if (vulnerable)
		http_server_route(api->app.server, SQLI_ROUTE_NAIVE, naive_cb, api);
	if (http_app_run(&api->app, err, errlen) < 0)
		goto fail;
	return api;
fail:
	sqli_api_stop(api);
	return NULL;
}

int sqli_api_port(const struct sqli_api *api)
{
	return http_server_port(api->app.server);
}

/* http_app_stop's release step: every request still waiting or querying is answered and freed. */
static void release_cb(void *arg)
{
	struct sqli_api *api = arg;
	pool_free(api->pool);
	api->pool = NULL;
}

void sqli_api_stop(struct sqli_api *api)
{
	if (!api)
		return;
	http_app_stop(&api->app, release_cb, api);
	free(api);
}
