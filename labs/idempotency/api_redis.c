/*
 * api_redis.c — the Redis side of the payment API: one asynchronous hiredis context on the API's
 * loop, connected from the lab's redis:// URL (common/redis.h's redis_url_parse: user, decoded
 * password, database), and the two routes of phase 6 that guard a charge with SET NX instead of
 * a key in the charge's transaction.
 */
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"

/* AUTH, SELECT and a PING answered within this, or the API does not start */
#define REDIS_READY_MS 2000

/* ---- the connection ---- */

static void redis_lost(struct idempotency_api *api, const char *why)
{
	if (!api->redis_error[0])
		snprintf(api->redis_error, sizeof(api->redis_error), "%s",
		         why && *why ? why : "connection lost");
	api->redis_ready = false;
}

static void redis_connect_cb(const redisAsyncContext *ac, int status)
{
	struct idempotency_api *api = ac->data;
	if (status != REDIS_OK) {
		redis_lost(api, ac->errstr);
		api->redis = NULL; /* hiredis frees it after this callback */
	}
}

static void redis_disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct idempotency_api *api = ac->data;
	redis_lost(api, status == REDIS_OK ? "disconnected" : ac->errstr);
	api->redis = NULL;
}

/* AUTH and SELECT: an error reply leaves the connection unusable (it would run as someone else). */
static void setup_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct idempotency_api *api = ac->data;
	redisReply *reply = r;
	if (reply && reply->type != REDIS_REPLY_ERROR)
		return;
	char why[200];
	snprintf(why, sizeof(why), "%s failed: %s", (const char *)privdata,
	         reply ? reply->str : (ac->errstr[0] ? ac->errstr : "no reply"));
	redis_lost(api, why);
	if (reply)
		redisAsyncDisconnect(ac);
}

/* The PING after them: from its answer on, the routes may use the connection. */
static void ready_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	(void)privdata;
	struct idempotency_api *api = ac->data;
	redisReply *reply = r;
	if (reply && reply->type != REDIS_REPLY_ERROR && !api->redis_error[0])
		api->redis_ready = true;
	else
		setup_cb(ac, r, "PING");
}

static void ready_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	redis_lost(arg, "no answer to AUTH, SELECT or PING");
}

/* Runs the loop (not yet in its thread) until Redis answered the PING or failed. */
static int redis_wait_ready(struct idempotency_api *api, char *err, size_t errlen)
{
	struct event *timeout = evtimer_new(api->app.base, ready_timeout_cb, api);
	struct timeval tv = {REDIS_READY_MS / 1000, (REDIS_READY_MS % 1000) * 1000};
	if (!timeout || evtimer_add(timeout, &tv) < 0) {
		if (timeout)
			event_free(timeout);
		snprintf(err, errlen, "cannot add a timer to the loop");
		return -1;
	}
	while (!api->redis_ready && !api->redis_error[0])
		event_base_loop(api->app.base, EVLOOP_ONCE);
	event_free(timeout);
	if (api->redis_ready)
		return 0;
	snprintf(err, errlen, "Redis: %s", api->redis_error);
	return -1;
}

/* The async context on the API's loop; AUTH (with the user when there is one) and SELECT first. */
int idem_redis_start(struct idempotency_api *api, char *err, size_t errlen)
{
	struct redis_url u;
	if (redis_url_parse(api->cfg.redis_url, &u, err, errlen) < 0)
		return -1;
	api->redis = redisAsyncConnect(u.host, u.port);
	if (!api->redis || api->redis->err) {
		snprintf(err, errlen, "cannot connect to Redis: %s",
		         api->redis ? api->redis->errstr : "out of memory");
		if (api->redis)
			redisAsyncFree(api->redis);
		api->redis = NULL;
		redis_url_free(&u);
		return -1;
	}
	api->redis->data = api;
	redisLibeventAttach(api->redis, api->app.base);
	redisAsyncSetConnectCallback(api->redis, redis_connect_cb);
	redisAsyncSetDisconnectCallback(api->redis, redis_disconnect_cb);
	if (u.password && u.user)
		redisAsyncCommand(api->redis, setup_cb, "AUTH", "AUTH %s %s", u.user, u.password);
	else if (u.password)
		redisAsyncCommand(api->redis, setup_cb, "AUTH", "AUTH %s", u.password);
	if (u.db != 0)
		redisAsyncCommand(api->redis, setup_cb, "SELECT", "SELECT %d", u.db);
	redisAsyncCommand(api->redis, ready_cb, NULL, "PING");
	redis_url_free(&u);
	return redis_wait_ready(api, err, errlen);
}

void idem_redis_free(struct idempotency_api *api)
{
	redisAsyncContext *ac = api->redis;
	/* set first: the callbacks that run inside redisAsyncFree must not queue new commands */
	api->redis = NULL;
	redis_lost(api, "the API is stopping");
	if (ac)
		redisAsyncFree(ac);
}

/* 503 naming why: the lab reads it to tell a lost Redis from a failed charge. */
static void redis_unavailable(struct charge_ctx *ctx)
{
	char msg[300];
	snprintf(msg, sizeof(msg), "Redis is unavailable: %s",
	         ctx->api->redis_error[0] ? ctx->api->redis_error : "not connected");
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
	if (ctx->route == ROUTE_REDIS_RELEASE && ctx->api->redis)
		redisAsyncCommand(ctx->api->redis, redis_done_cb, NULL, "DEL %s", ctx->rkey);
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

static void redis_store(struct charge_ctx *ctx)
{
	if (idem_build_body(ctx) < 0) {
		redis_db_failed(ctx, NULL, "out of memory");
		return;
	}
	ctx->code = 201;
	idem_ctx_release(ctx);
	if (!ctx->api->redis_ready ||
	    redisAsyncCommand(ctx->api->redis, redis_stored_cb, ctx, "SET %s 201:%s XX PX %lld", ctx->rkey,
	                      ctx->body, (long long)ctx->api->cfg.key_window_s * 1000) != REDIS_OK)
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
	idem_copy_value(ctx->charge_id, sizeof(ctx->charge_id), res, 0);
	idem_copy_value(ctx->created, sizeof(ctx->created), res, 1);
	if (ctx->pause_ms > 0) {
		char ms[24];
		snprintf(ms, sizeof(ms), "%d", ctx->pause_ms);
		const char *p[] = {ms};
		if (pool_query(c, IDEM_SQL_PAUSE, 1, p, redis_pause_cb, ctx) < 0)
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
	if (pool_query(conn, IDEM_SQL_UNKEYED, 5, p, redis_charge_cb, ctx) < 0)
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
	if (!api->redis_ready ||
	    redisAsyncCommand(api->redis, redis_set_cb, ctx, "SET %s pending NX PX %lld", ctx->rkey,
	                      (long long)api->cfg.key_window_s * 1000) != REDIS_OK)
		redis_unavailable(ctx);
}
