/*
 * redis_async.h — one asynchronous hiredis context on an API's libevent loop, connected from the
 * lab's redis:// URL (redis.h's redis_url_parse: user, decoded password, database): AUTH and
 * SELECT sent first, and the routes may use it once a PING was answered. A lost connection is
 * not reopened: ready turns false and error says why, and a route answers 503 with it.
 *
 * Errors: functions that can fail return -1 and write one line into err (errlen bytes).
 */
#ifndef LAB_REDIS_ASYNC_H
#define LAB_REDIS_ASYNC_H
#include <event2/event.h>
#include <hiredis/async.h>
#include <stdbool.h>
#include <stddef.h>

struct redis_async {
	redisAsyncContext *ctx; /* NULL when there is none or it was lost (hiredis freed it) */
	bool ready;             /* connected, and AUTH, SELECT and a PING answered OK */
	char error[256];        /* why it is not ready; "" while it is fine */
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
