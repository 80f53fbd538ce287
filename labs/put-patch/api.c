/*
 * api.c — the API of lab-put-patch: GET (and HEAD), PUT and PATCH on /v1/users/{id}, on one
 * event loop in a thread of its own (struct http_app), with connections from common/pool.h
 * (asynchronous libpq), so that no handler blocks the loop.
 *
 * Everything a request can get wrong is checked before the database is touched (the media type,
 * If-Match's syntax, the body, the patch document). A write is then one transaction on one pooled
 * connection: BEGIN; SELECT ... FOR UPDATE (the row as it is now, locked); If-Match against its
 * ETag; the change applied in C (patch.h) and the result validated; UPDATE ... RETURNING the new
 * representation and ETag; COMMIT. Anything refused on the way is a ROLLBACK: nothing written.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "internal.h"
#include "patch.h"
#include "pg.h"
#include "pool.h"

/* the lab's APIs open their pool's first connections within this, or the server is not there */
#define POOL_READY_MS 10000

struct pp_ctx;

struct put_patch_api {
	struct put_patch_config cfg;
	struct http_app app; /* base, server, loop thread: stopped by http_app_stop only */
	struct pool *pool;
	bool stopping;
	struct pp_ctx *live; /* every request in progress, answered at stop if still there */
};

/* One request from parse to reply. */
struct pp_ctx {
	struct put_patch_api *api;
	struct evhttp_request *req;
	struct pp_ctx *prev, *next;
	struct pool_conn *conn;
	enum pp_kind kind;
	char id[24];
	long long idv;
	json_t *body;   /* the parsed request body */
	char *if_match; /* NULL when absent */
	int code;       /* the error answered after the ROLLBACK */
	char msg[512];
};

/*
 * Each prepared once per pooled connection, on its first use there (pool_query_prepared). BEGIN,
 * COMMIT and ROLLBACK go as they are: the server has nothing to plan in them.
 */
static const struct pool_stmt SQL_GET = {
        "put_patch_get", "SELECT " SQL_REP ", " SQL_ETAG " FROM " SCHEMA ".users u WHERE id = $1", 1};
static const struct pool_stmt SQL_LOCK = {
        "put_patch_lock", "SELECT " SQL_REP ", " SQL_ETAG " FROM " SCHEMA ".users u WHERE id = $1 FOR UPDATE",
        1};
static const struct pool_stmt SQL_WRITE = {
        "put_patch_write",
        "UPDATE " SCHEMA ".users u SET name = d->>'name', email = d->>'email', bio = d->>'bio',"
        " tags = d->'tags', visits = (d->>'visits')::bigint,"
        " counters = coalesce(nullif(d->'counters', 'null'::jsonb), '{}'::jsonb)"
        " FROM (SELECT $2::jsonb AS d) s WHERE u.id = $1 RETURNING " SQL_REP ", " SQL_ETAG,
        2};

static struct pp_ctx *ctx_new(struct put_patch_api *api, struct evhttp_request *req)
{
	struct pp_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return NULL;
	ctx->api = api;
	ctx->req = req;
	ctx->next = api->live;
	if (api->live)
		api->live->prev = ctx;
	api->live = ctx;
	return ctx;
}

static void ctx_free(struct pp_ctx *ctx)
{
	struct put_patch_api *api = ctx->api;
	if (ctx->prev)
		ctx->prev->next = ctx->next;
	else
		api->live = ctx->next;
	if (ctx->next)
		ctx->next->prev = ctx->prev;
	json_decref(ctx->body);
	free(ctx->if_match);
	free(ctx);
}

static void ctx_release(struct pp_ctx *ctx)
{
	if (ctx->conn) {
		pool_release(ctx->conn);
		ctx->conn = NULL;
	}
}

/* An error reply ends the request. */
static void ctx_fail(struct pp_ctx *ctx, int code, const char *msg)
{
	if (ctx->api->stopping && code == 500) {
		code = 503;
		msg = "the API is shutting down; retry";
	}
	ctx_release(ctx);
	struct evkeyvalq *h = evhttp_request_get_output_headers(ctx->req);
	/* a 415 says what would have been taken: Accept-Patch for PATCH (RFC 5789 section 3.1),
	 * Accept for PUT (RFC 9110 section 15.5.16) */
	if (code == PP_STATUS_UNSUPPORTED)
		evhttp_add_header(h, ctx->kind == PP_KIND_PUT ? "Accept" : "Accept-Patch",
		                  ctx->kind == PP_KIND_PUT ? "application/json" : ACCEPT_PATCH);
	if (code == 405)
		evhttp_add_header(h, "Allow", ALLOW);
	if (code == 503)
		evhttp_add_header(h, "Retry-After", "1");
	http_reply_error(ctx->req, code, "%s", msg);
	ctx_free(ctx);
}

static void query_failed(struct pp_ctx *ctx, PGresult *res, const char *err)
{
	char msg[256];
	pg_message_line(msg, sizeof(msg), res ? PQresultErrorMessage(res) : err);
	ctx_fail(ctx, 500, msg);
}

/* 200 with user (compact, as every answer) and its ETag; accept_patch on GET (RFC 5789 3.1). */
static void reply_user(struct pp_ctx *ctx, const json_t *user, const char *etag, bool accept_patch)
{
	char *text = user ? json_dumps(user, JSON_COMPACT) : NULL;
	if (!text) {
		ctx_fail(ctx, 500, "the stored user could not be read");
		return;
	}
	struct evkeyvalq *h = evhttp_request_get_output_headers(ctx->req);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "ETag", etag);
	if (accept_patch)
		evhttp_add_header(h, "Accept-Patch", ACCEPT_PATCH);
	struct evbuffer *out = evhttp_request_get_output_buffer(ctx->req);
	evbuffer_add(out, text, strlen(text));
	free(text);
	http_send_reply(ctx->req, 200, out); /* no body for HEAD */
	ctx_free(ctx);
}

/* ---- inside the transaction ---- */

static void rollback_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)err;
	struct pp_ctx *ctx = arg;
	/* a failed ROLLBACK leaves the connection in a state nobody knows: never lent again. The
	 * refusal stands either way: nothing was committed. */
	if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
		pool_discard(c, "ROLLBACK failed");
		ctx->conn = NULL;
	}
	ctx_fail(ctx, ctx->code, ctx->msg);
}

/* Refuses the write: ROLLBACK, then the answer. Nothing was written. */
static void txn_refuse(struct pp_ctx *ctx, int code, const char *fmt, const char *detail)
{
	ctx->code = code;
	snprintf(ctx->msg, sizeof(ctx->msg), fmt, detail);
	if (pool_query(ctx->conn, "ROLLBACK", 0, NULL, rollback_cb, ctx) < 0)
		ctx_fail(ctx, code, ctx->msg);
}

static void commit_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct pp_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
		query_failed(ctx, res, err);
		return;
	}
	/* the new representation and ETag came with the UPDATE (body and msg), answered once committed */
	ctx_release(ctx);
	reply_user(ctx, ctx->body, ctx->msg, false);
}

static void write_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	struct pp_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		query_failed(ctx, res, err);
		return;
	}
	json_decref(ctx->body);
	ctx->body = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	snprintf(ctx->msg, sizeof(ctx->msg), "%s", PQgetvalue(res, 0, 1));
	if (!ctx->body || pool_query(c, "COMMIT", 0, NULL, commit_cb, ctx) < 0)
		ctx_fail(ctx, 500, "could not commit");
}

static void lock_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	struct pp_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		query_failed(ctx, res, err);
		return;
	}
	if (PQntuples(res) != 1) {
		txn_refuse(ctx, 404, "no user %s", ctx->id);
		return;
	}
	const char *etag = PQgetvalue(res, 0, 1);
	if (ctx->if_match && pp_if_match(ctx->if_match, etag) != 1) {
		txn_refuse(
		        ctx, PP_STATUS_PRECONDITION_FAILED,
		        "If-Match does not match: the user changed since you read it (ETag now %s); GET it, "
		        "apply your change again, send the new ETag",
		        etag);
		return;
	}
	char why[512];
	json_t *cur = json_loads(PQgetvalue(res, 0, 0), 0, NULL), *next = NULL;
	int code = cur ? pp_next_user(ctx->kind, ctx->body, ctx->idv, cur, &next, why, sizeof(why)) : 500;
	json_decref(cur);
	if (code) {
		txn_refuse(ctx, code, "%s", cur ? why : "the stored user could not be read");
		return;
	}
	char *text = json_dumps(next, JSON_COMPACT);
	json_decref(next);
	const char *p[] = {ctx->id, text};
	int rc = text ? pool_query_prepared(c, &SQL_WRITE, p, write_cb, ctx) : -1;
	free(text);
	if (rc < 0)
		txn_refuse(ctx, 500, "%s", "could not send the write");
}

static void begin_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	struct pp_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
		query_failed(ctx, res, err);
		return;
	}
	const char *p[] = {ctx->id};
	if (pool_query_prepared(c, &SQL_LOCK, p, lock_cb, ctx) < 0)
		txn_refuse(ctx, 500, "%s", "could not send the query");
}

static void get_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct pp_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		query_failed(ctx, res, err);
		return;
	}
	char msg[160];
	if (PQntuples(res) != 1) {
		snprintf(msg, sizeof(msg), "no user %s", ctx->id);
		ctx_fail(ctx, 404, msg);
		return;
	}
	const char *etag = PQgetvalue(res, 0, 1);
	/* If-Match is evaluated for every method (RFC 9110 section 13.1.1), a read included */
	if (ctx->if_match && pp_if_match(ctx->if_match, etag) != 1) {
		snprintf(msg, sizeof(msg), "If-Match does not match: the user is at ETag %s", etag);
		ctx_fail(ctx, PP_STATUS_PRECONDITION_FAILED, msg);
		return;
	}
	ctx_release(ctx); /* the result lives until this callback returns */
	json_t *user = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	reply_user(ctx, user, etag, true);
	json_decref(user);
}

static void acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct pp_ctx *ctx = arg;
	if (!conn) {
		ctx_fail(ctx, 503, err);
		return;
	}
	ctx->conn = conn;
	const char *p[] = {ctx->id};
	int rc = ctx->kind == PP_KIND_GET ? pool_query_prepared(conn, &SQL_GET, p, get_cb, ctx)
	                                  : pool_query(conn, "BEGIN", 0, NULL, begin_cb, ctx);
	if (rc < 0)
		ctx_fail(ctx, 500, "could not send the query");
}

/* What pp_parse_request needs, read off evhttp; bad1 and bad2 hold http_header_one's messages. */
static struct pp_request read_request(struct evhttp_request *req, char bad1[160], char bad2[160])
{
	struct pp_request rq = {.method = evhttp_request_get_command(req), .path = http_request_path(req)};
	if (http_header_one(req, "Content-Type", &rq.content_type, bad1, 160) < 0)
		rq.content_type_bad = bad1;
	if (http_header_one(req, "If-Match", &rq.if_match, bad2, 160) < 0)
		rq.if_match_bad = bad2;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	rq.body_len = evbuffer_get_length(in);
	rq.body = rq.body_len ? (const char *)evbuffer_pullup(in, -1) : "";
	return rq;
}

static void users_cb(struct evhttp_request *req, void *arg)
{
	struct put_patch_api *api = arg;
	if (api->stopping) {
		http_reply_error(req, 503, "the API is shutting down; retry");
		return;
	}
	struct pp_ctx *ctx = ctx_new(api, req);
	if (!ctx) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	char err[512], bad1[160], bad2[160];
	struct pp_request rq = read_request(req, bad1, bad2);
	struct pp_parsed p;
	int code = pp_parse_request(&rq, api->cfg.max_body, api->cfg.require_if_match, &p, err, sizeof(err));
	/* the kind first: a 415 says what would have been taken */
	ctx->kind = p.kind;
	if (code) {
		ctx_fail(ctx, code, err);
		return;
	}
	snprintf(ctx->id, sizeof(ctx->id), "%s", p.id);
	ctx->idv = p.idv;
	ctx->body = p.body;
	ctx->if_match = p.if_match;
	pool_acquire(api->pool, "users_handler", acquired_cb, ctx);
}

/* ---- starting and stopping ---- */

/* http_app_stop's release, the loop stopped: the pool (its callbacks answer their requests 503),
 * then whatever is still live. */
static void api_release(void *arg)
{
	struct put_patch_api *api = arg;
	api->stopping = true;
	pool_free(api->pool);
	api->pool = NULL;
	while (api->live) {
		api->live->conn = NULL; /* closed with the pool */
		ctx_fail(api->live, 503, "the API is shutting down; retry");
	}
}

struct put_patch_api *put_patch_api_start(const struct put_patch_config *cfg, int port, char *err,
                                          size_t errlen)
{
	struct put_patch_api *api = calloc(1, sizeof(*api));
	if (!api) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	api->cfg = *cfg;
	if (http_app_open(&api->app, port, err, errlen) < 0)
		goto err;
	struct pool_config pc = {
	        .conninfo = cfg->pg_url,
	        .min_idle = cfg->pool_min_idle,
	        .max_size = cfg->pool_size,
	        .acquire_timeout_ms = cfg->acquire_timeout_ms,
	};
	api->pool = pool_new(api->app.base, &pc, err, errlen);
	if (!api->pool)
		goto err;
	http_server_route_prefix(api->app.server, USERS_PREFIX, users_cb, api);
	if (pool_wait_ready(api->pool, POOL_READY_MS, err, errlen) < 0 ||
	    http_app_run(&api->app, err, errlen) < 0)
		goto err;
	return api;
err:
	put_patch_api_stop(api);
	return NULL;
}

int put_patch_api_port(const struct put_patch_api *api)
{
	return http_server_port(api->app.server);
}

void put_patch_api_stop(struct put_patch_api *api)
{
	if (!api)
		return;
	http_app_stop(&api->app, api_release, api);
	free(api);
}
