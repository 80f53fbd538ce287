/*
 * api_redis.c — the deny-list of lab-authz's fixed API: one asynchronous hiredis context on the
 * API's loop (AUTH, SELECT from the lab's redis:// URL), keys lab:authz:deny:jti:<jti> (a logged-out
 * token) and lab:authz:deny:sub:<id> (every token of a deleted user), each with a TTL equal to what
 * is left of the life the verifier would give the token, so the list never outgrows the tokens
 * alive. When Redis cannot answer, the fixed API refuses (503): a deny-list that fails open is none.
 */
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "redis.h"

/* AUTH, SELECT and a PING answered within this, or the API does not start */
#define REDIS_READY_MS 2000

static void redis_lost(struct authz_api *api, const char *why)
{
	if (!api->redis_error[0])
		snprintf(api->redis_error, sizeof(api->redis_error), "%s",
		         why && *why ? why : "connection lost");
	api->redis_ready = false;
}

static void connect_cb(const redisAsyncContext *ac, int status)
{
	struct authz_api *api = ac->data;
	if (status != REDIS_OK) {
		redis_lost(api, ac->errstr);
		api->redis = NULL; /* hiredis frees it after this callback */
	}
}

static void disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct authz_api *api = ac->data;
	redis_lost(api, status == REDIS_OK ? "disconnected" : ac->errstr);
	api->redis = NULL;
}

/* AUTH, SELECT, PING: an error leaves the connection unusable; PING's answer makes it ready */
static void setup_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct authz_api *api = ac->data;
	redisReply *reply = r;
	if (reply && reply->type != REDIS_REPLY_ERROR) {
		if (privdata && !strcmp(privdata, "PING") && !api->redis_error[0])
			api->redis_ready = true;
		return;
	}
	char why[200];
	snprintf(why, sizeof(why), "%s failed: %s", (const char *)privdata,
	         reply ? reply->str : (ac->errstr[0] ? ac->errstr : "no reply"));
	redis_lost(api, why);
	if (reply)
		redisAsyncDisconnect(ac);
}

static void ready_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	redis_lost(arg, "no answer to AUTH, SELECT or PING");
}

/* Runs the loop (not yet in its thread) until Redis answered the PING or failed. */
static int wait_ready(struct authz_api *api, char *err, size_t errlen)
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

int az_redis_start(struct authz_api *api, char *err, size_t errlen)
{
	struct redis_url u;
	if (redis_url_parse(api->cfg.redis_url, &u, err, errlen) < 0)
		return -1;
	api->redis = redisAsyncConnect(u.host, u.port);
	if (!api->redis || api->redis->err) {
		snprintf(err, errlen, "Redis: cannot connect: %s",
		         api->redis ? api->redis->errstr : "out of memory");
		if (api->redis)
			redisAsyncFree(api->redis);
		api->redis = NULL;
		redis_url_free(&u);
		return -1;
	}
	api->redis->data = api;
	redisLibeventAttach(api->redis, api->app.base);
	redisAsyncSetConnectCallback(api->redis, connect_cb);
	redisAsyncSetDisconnectCallback(api->redis, disconnect_cb);
	if (u.password && u.user)
		redisAsyncCommand(api->redis, setup_cb, "AUTH", "AUTH %s %s", u.user, u.password);
	else if (u.password)
		redisAsyncCommand(api->redis, setup_cb, "AUTH", "AUTH %s", u.password);
	if (u.db != 0)
		redisAsyncCommand(api->redis, setup_cb, "SELECT", "SELECT %d", u.db);
	redisAsyncCommand(api->redis, setup_cb, "PING", "PING");
	redis_url_free(&u);
	return wait_ready(api, err, errlen);
}

void az_redis_free(struct authz_api *api)
{
	redisAsyncContext *ac = api->redis;
	/* set first: the callbacks that run inside redisAsyncFree must not queue new commands */
	api->redis = NULL;
	redis_lost(api, "the API is stopping");
	if (ac)
		redisAsyncFree(ac);
}

static void unavailable(struct az_ctx *ctx)
{
	char msg[300];
	snprintf(msg, sizeof(msg), "the deny-list (Redis) is unavailable: %s",
	         ctx->api->redis_error[0] ? ctx->api->redis_error : "not connected");
	az_fail(ctx, 503, msg);
}

static void check_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	(void)ac;
	struct az_ctx *ctx = privdata;
	redisReply *reply = r;
	if (!reply || reply->type != REDIS_REPLY_INTEGER) {
		unavailable(ctx);
		return;
	}
	if (reply->integer > 0)
		az_unauthorized(ctx, "token revoked");
	else
		az_dispatch(ctx);
}

void az_redis_check(struct az_ctx *ctx)
{
	struct authz_api *api = ctx->api;
	if (!api->redis_ready ||
	    redisAsyncCommand(api->redis, check_cb, ctx, "EXISTS " DENY_JTI "%s " DENY_SUB "%lld",
	                      ctx->claims.jti, ctx->claims.sub) != REDIS_OK)
		unavailable(ctx);
}

static void deny_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	(void)ac;
	struct az_ctx *ctx = privdata;
	redisReply *reply = r;
	if (!reply || reply->type != REDIS_REPLY_STATUS)
		unavailable(ctx);
	else
		az_no_content(ctx);
}

void az_redis_deny(struct az_ctx *ctx, const char *key, long long ttl_s)
{
	struct authz_api *api = ctx->api;
	if (ttl_s < 1)
		ttl_s = 1; /* the token is already past what the verifier accepts: a second is plenty */
	if (!api->redis_ready || redisAsyncCommand(api->redis, deny_cb, ctx, "SET %s %lld EX %lld", key,
	                                           az_now(), ttl_s) != REDIS_OK)
		unavailable(ctx);
}
