/*
 * redis_async.c — an API's asynchronous Redis connection (see redis_async.h).
 */
#include "redis_async.h"

#include <hiredis/adapters/libevent.h>
#include <stdio.h>
#include <string.h>

#include "redis.h"

static void lost(struct redis_async *r, const char *why)
{
	if (!r->error[0] || r->ready)
		snprintf(r->error, sizeof(r->error), "%s", why && *why ? why : "connection lost");
	r->ready = false;
	r->failed = true;
}

/* After a loss of a connection that was ready once: another try in REDIS_ASYNC_RETRY_MS. */
static void retry_later(struct redis_async *r)
{
	struct timeval tv = {REDIS_ASYNC_RETRY_MS / 1000, (REDIS_ASYNC_RETRY_MS % 1000) * 1000};
	if (r->opened && !r->closing && r->retry)
		evtimer_add(r->retry, &tv);
}

static void connect_cb(const redisAsyncContext *ac, int status)
{
	struct redis_async *r = ac->data;
	if (status != REDIS_OK) {
		lost(r, ac->errstr);
		r->ctx = NULL; /* hiredis frees it after this callback */
		retry_later(r);
	}
}

static void disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct redis_async *r = ac->data;
	lost(r, status == REDIS_OK ? "disconnected" : ac->errstr);
	r->ctx = NULL;
	retry_later(r);
}

/* AUTH and SELECT: an error reply leaves the connection unusable (it would run as someone else). */
static void setup_cb(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	struct redis_async *r = ac->data;
	redisReply *reply = reply_v;
	if (reply && reply->type != REDIS_REPLY_ERROR)
		return;
	char why[200];
	snprintf(why, sizeof(why), "%s failed: %s", (const char *)privdata,
	         reply ? reply->str : (ac->errstr[0] ? ac->errstr : "no reply"));
	lost(r, why);
	if (reply)
		redisAsyncDisconnect(ac);
}

/* The PING after them: from its answer on, the routes may use the connection. */
static void ready_cb(redisAsyncContext *ac, void *reply_v, void *privdata)
{
	(void)privdata;
	struct redis_async *r = ac->data;
	redisReply *reply = reply_v;
	if (reply && reply->type == REDIS_REPLY_STATUS && !r->failed) {
		r->ready = true;
		r->error[0] = '\0';
	} else
		setup_cb(ac, reply_v, "PING");
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	lost(arg, "no answer to AUTH, SELECT or PING");
}

/* Runs the loop until the PING was answered or the connection failed or timed out. */
static int wait_ready(struct redis_async *r, struct event_base *base, int timeout_ms, char *err,
                      size_t errlen)
{
	struct event *timeout = evtimer_new(base, timeout_cb, r);
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	if (!timeout || evtimer_add(timeout, &tv) < 0) {
		if (timeout)
			event_free(timeout);
		snprintf(err, errlen, "cannot add a timer to the loop");
		return -1;
	}
	while (!r->ready && !r->error[0])
		event_base_loop(base, EVLOOP_ONCE);
	event_free(timeout);
	if (r->ready)
		return 0;
	snprintf(err, errlen, "Redis: %s", r->error);
	return -1;
}

/* A new connection on r->base: AUTH, SELECT and PING queued; ready_cb says when it is usable. */
static int connect_start(struct redis_async *r, char *err, size_t errlen)
{
	struct redis_url u;
	if (redis_url_parse(r->url, &u, err, errlen) < 0)
		return -1;
	r->failed = false;
	r->ctx = redisAsyncConnect(u.host, u.port);
	if (!r->ctx || r->ctx->err) {
		snprintf(err, errlen, "cannot connect to Redis: %s",
		         r->ctx ? r->ctx->errstr : "out of memory");
		if (r->ctx)
			redisAsyncFree(r->ctx);
		r->ctx = NULL;
		redis_url_free(&u);
		return -1;
	}
	r->ctx->data = r;
	redisLibeventAttach(r->ctx, r->base);
	redisAsyncSetConnectCallback(r->ctx, connect_cb);
	redisAsyncSetDisconnectCallback(r->ctx, disconnect_cb);
	if (u.password && u.user)
		redisAsyncCommand(r->ctx, setup_cb, "AUTH", "AUTH %s %s", u.user, u.password);
	else if (u.password)
		redisAsyncCommand(r->ctx, setup_cb, "AUTH", "AUTH %s", u.password);
	if (u.db != 0)
		redisAsyncCommand(r->ctx, setup_cb, "SELECT", "SELECT %d", u.db);
	redisAsyncCommand(r->ctx, ready_cb, NULL, "PING");
	redis_url_free(&u);
	return 0;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct redis_async *r = arg;
	char err[256];
	if (r->closing || r->ctx)
		return;
	if (connect_start(r, err, sizeof(err)) < 0) {
		lost(r, err);
		retry_later(r);
	}
}

int redis_async_open(struct redis_async *r, struct event_base *base, const char *url, int timeout_ms,
                     char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	r->base = base;
	if (snprintf(r->url, sizeof(r->url), "%s", url) >= (int)sizeof(r->url)) {
		snprintf(err, errlen, "the Redis URL is longer than %zu bytes", sizeof(r->url) - 1);
		return -1;
	}
	r->retry = evtimer_new(base, retry_cb, r);
	if (!r->retry) {
		snprintf(err, errlen, "cannot add a timer to the loop");
		return -1;
	}
	if (connect_start(r, err, errlen) < 0 || wait_ready(r, base, timeout_ms, err, errlen) < 0)
		return -1;
	r->opened = true;
	return 0;
}

void redis_async_close(struct redis_async *r)
{
	redisAsyncContext *ac = r->ctx;
	/* first: the callbacks that run inside redisAsyncFree must not queue new commands, nor try
	 * again */
	r->ctx = NULL;
	r->closing = true;
	lost(r, "the API is stopping");
	if (ac)
		redisAsyncFree(ac);
	if (r->retry)
		event_free(r->retry);
	r->retry = NULL;
}
