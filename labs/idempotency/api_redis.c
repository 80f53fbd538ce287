/*
 * api_redis.c — the Redis side of the payment API: one asynchronous hiredis context on the API's
 * loop (common/redis_async.h), and the two routes of phase 6 that guard a charge with SET NX instead of
 * a key in the charge's transaction.
 */
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"
#include "redis_async.h"

/* AUTH, SELECT and a PING answered within this, or the API does not start */
#define REDIS_READY_MS 2000

/* The async context on the API's loop (common/redis_async.h). */
int idem_redis_start(struct idempotency_api *api, char *err, size_t errlen)
{
	return redis_async_open(&api->redis, api->app.base, api->cfg.redis_url, REDIS_READY_MS, err, errlen);
}

void idem_redis_free(struct idempotency_api *api)
{
	redis_async_close(&api->redis);
}

/* 503 naming why: the lab reads it to tell a lost Redis from a failed charge. */
static void redis_unavailable(struct charge_ctx *ctx)
{
	char msg[300];
	snprintf(msg, sizeof(msg), "Redis is unavailable: %s",
	         ctx->api->redis.error[0] ? ctx->api->redis.error : "not connected");
	idem_ctx_fail(ctx, 503, msg);
}

/* ---- the routes: SET NX guards the charge, and nothing ties the two together ---- */

static void redis_done_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	(void)ac;
	(void)r;
	(void)privdata;
}

static void redis_db_failed(struct charge_ctx *ctx, PGresult *res, const char *err)
{
	char msg[256];
	pg_message_line(msg, sizeof(msg), res ? PQresultErrorMessage(res) : err);
	/* release: let the client retry, on the belief that the failed write wrote nothing */
	if (ctx->route == ROUTE_REDIS_RELEASE && ctx->api->redis.ctx)
		redisAsyncCommand(ctx->api->redis.ctx, redis_done_cb, NULL, "DEL %s", ctx->rkey);
	idem_ctx_fail(ctx, 500, msg);
}

static void redis_stored_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	(void)ac;
	struct charge_ctx *ctx = privdata;
	redisReply *reply = r;
	if (!reply || reply->type == REDIS_REPLY_ERROR) {
		idem_ctx_fail(ctx, 500, "the charge was made but Redis did not store the response");
		return;
	}
	idem_send_stored(ctx);
}

/* ctx->body is the charge's response, built by the INSERT that made it (IDEM_SQL_UNKEYED). */
static void redis_store(struct charge_ctx *ctx)
{
	ctx->code = 201;
	idem_ctx_release(ctx);
	if (!ctx->api->redis.ready ||
	    redisAsyncCommand(ctx->api->redis.ctx, redis_stored_cb, ctx, "SET %s 201:%s XX PX %lld",
	                      ctx->rkey, ctx->body, (long long)ctx->api->cfg.key_window_s * 1000) != REDIS_OK)
		redis_unavailable(ctx);
}

static void redis_pause_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct charge_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		redis_db_failed(ctx, res, err);
		return;
	}
	redis_store(ctx);
}

static void redis_charge_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	struct charge_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		redis_db_failed(ctx, res, err);
		return;
	}
	if (idem_take_body(ctx, res, 0) < 0) {
		redis_db_failed(ctx, NULL, "out of memory");
		return;
	}
	if (ctx->pause_ms > 0) {
		char ms[24];
		snprintf(ms, sizeof(ms), "%d", ctx->pause_ms);
		const char *p[] = {ms};
		if (pool_query_prepared(c, &IDEM_STMT_PAUSE, p, redis_pause_cb, ctx) < 0)
			redis_db_failed(ctx, NULL, "could not send the query");
		return;
	}
	redis_store(ctx);
}

static void redis_acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct charge_ctx *ctx = arg;
	if (!conn) {
		redis_db_failed(ctx, NULL, err);
		return;
	}
	ctx->conn = conn;
	const char *p[] = {ctx->client, ctx->key, ctx->customer, ctx->amount, ctx->currency};
	if (pool_query_prepared(conn, &IDEM_STMT_UNKEYED, p, redis_charge_cb, ctx) < 0)
		redis_db_failed(ctx, NULL, "could not send the query");
}

static void redis_get_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	(void)ac;
	struct charge_ctx *ctx = privdata;
	redisReply *reply = r;
	if (!reply || reply->type == REDIS_REPLY_ERROR) {
		redis_unavailable(ctx);
		return;
	}
	const char *colon = reply->type == REDIS_REPLY_STRING ? strchr(reply->str, ':') : NULL;
	if (!colon) {
		/* "pending", or gone since the SET: either way another request owns the key */
		idem_ctx_fail(ctx, 409, "a request with this Idempotency-Key is in progress; retry later");
		return;
	}
	ctx->code = atoi(reply->str);
	ctx->body = strdup(colon + 1);
	ctx->replayed = true;
	if (!ctx->body) {
		idem_ctx_fail(ctx, 500, "out of memory");
		return;
	}
	idem_send_stored(ctx);
}

static void redis_set_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct charge_ctx *ctx = privdata;
	redisReply *reply = r;
	if (!reply || reply->type == REDIS_REPLY_ERROR) {
		redis_unavailable(ctx);
		return;
	}
	if (reply->type == REDIS_REPLY_NIL) {
		if (redisAsyncCommand(ac, redis_get_cb, ctx, "GET %s", ctx->rkey) != REDIS_OK)
			redis_unavailable(ctx);
		return;
	}
	pool_acquire(ctx->api->pool, "redis_charge_handler", redis_acquired_cb, ctx);
}

void idem_redis_charge(struct charge_ctx *ctx)
{
	struct idempotency_api *api = ctx->api;
	snprintf(ctx->rkey, sizeof(ctx->rkey), REDIS_PREFIX "%s:%s", ctx->client, ctx->key);
	if (!api->redis.ready ||
	    redisAsyncCommand(api->redis.ctx, redis_set_cb, ctx, "SET %s pending NX PX %lld", ctx->rkey,
	                      (long long)api->cfg.key_window_s * 1000) != REDIS_OK)
		redis_unavailable(ctx);
}
