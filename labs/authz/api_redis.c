/*
 * api_redis.c — the deny-list of lab-authz's fixed API: one asynchronous hiredis context on the
 * API's loop (common/redis_async.h), keys lab:authz:deny:jti:<jti> (a logged-out
 * token) and lab:authz:deny:sub:<id> (every token of a deleted user), each with a TTL equal to what
 * is left of the life the verifier would give the token, so the list never outgrows the tokens
 * alive. When Redis cannot answer, the fixed API refuses (503): a deny-list that fails open is none.
 */
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "redis_async.h"

/* AUTH, SELECT and a PING answered within this, or the API does not start */
#define REDIS_READY_MS 2000

int az_redis_start(struct authz_api *api, char *err, size_t errlen)
{
	return redis_async_open(&api->redis, api->app.base, api->cfg.redis_url, REDIS_READY_MS, err, errlen);
}

void az_redis_free(struct authz_api *api)
{
	redis_async_close(&api->redis);
}

static void unavailable(struct az_ctx *ctx)
{
	char msg[300];
	snprintf(msg, sizeof(msg), "the deny-list (Redis) is unavailable: %s",
	         ctx->api->redis.error[0] ? ctx->api->redis.error : "not connected");
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
	if (!api->redis.ready ||
	    redisAsyncCommand(api->redis.ctx, check_cb, ctx, "EXISTS " DENY_JTI "%s " DENY_SUB "%lld",
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
		ctx->then(ctx);
}

void az_redis_deny(struct az_ctx *ctx, const char *key, long long ttl_s, void (*then)(struct az_ctx *ctx))
{
	ctx->then = then ? then : az_no_content;
	struct authz_api *api = ctx->api;
	if (ttl_s < 1)
		ttl_s = 1; /* the token is already past what the verifier accepts: a second is plenty */
	if (!api->redis.ready || redisAsyncCommand(api->redis.ctx, deny_cb, ctx, "SET %s %lld EX %lld", key,
	                                           az_now(), ttl_s) != REDIS_OK)
		unavailable(ctx);
}
