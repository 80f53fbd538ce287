/*
 * redis_async.h — one asynchronous hiredis context on an API's libevent loop, connected from the
 * lab's redis:// URL (redis.h's redis_url_parse: user, decoded password, database): AUTH and
 * SELECT sent first, and the routes may use it once a PING was answered. A lost connection (Redis
 * restarted, say) is reopened by itself: ready turns false and error says why (a route answers
 * 503 with it meanwhile), and every REDIS_ASYNC_RETRY_MS a new connection is tried on the loop,
 * AUTH, SELECT and PING again; ready turns true once its PING is answered.
 *
 * Errors: functions that can fail return -1 and write one line into err (errlen bytes).
 */
#ifndef LAB_REDIS_ASYNC_H
#define LAB_REDIS_ASYNC_H
#include <event2/event.h>
#include <hiredis/async.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * How long after a loss the connection is tried again, and again after each failed try: a Redis
 * that restarts answers within a second, and an API that tries 4 times a second costs the server
 * nothing while it is down.
 */
#define REDIS_ASYNC_RETRY_MS 250

struct redis_async {
	redisAsyncContext *ctx; /* NULL when there is none or it was lost (hiredis freed it) */
	bool ready;             /* connected, and AUTH, SELECT and a PING answered OK */
	char error[256];        /* why it is not ready; "" while it is fine */
	/* for the reconnection (redis_async.c) */
	struct event_base *base;
	struct event *retry;
	char url[512];
	bool opened;  /* the first connection was ready: a loss from now on is retried */
	bool closing; /* redis_async_close began: no retry */
	bool failed;  /* the current try's AUTH, SELECT or PING failed */
};

/*
 * Connects r to url on base and runs base's loop (which must not run in another thread yet) until
 * the PING is answered or timeout_ms passed. -1 and err when it did not become ready; r can then
 * be passed to redis_async_close.
 */
int redis_async_open(struct redis_async *r, struct event_base *base, const char *url, int timeout_ms,
                     char *err, size_t errlen);
/*
 * Frees the context on the loop's thread (or with the loop stopped): callbacks of commands still
 * pending run now with a NULL reply, and may not queue new ones (ctx is NULL and ready false
 * when they run). A no-op on a closed or never-opened r.
 */
void redis_async_close(struct redis_async *r);
#endif
