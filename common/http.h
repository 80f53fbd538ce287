/*
 * http.h — the HTTP side of the API labs, on libevent's evhttp: a server bound to 127.0.0.1
 * only, JSON replies and bodies through jansson, checked query parameters, and an event loop
 * running in a thread of its own so that a lab's load generator can drive it from another.
 *
 * Errors: functions that can fail return NULL or -1 and write one line into err (errlen bytes).
 */
#ifndef LAB_HTTP_H
#define LAB_HTTP_H

#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <stddef.h>

struct http_server;
struct http_thread;

/*
 * A new event_base whose loop may be broken and called into from other threads (libevent's
 * pthreads locking is switched on once, before the first base). SIGPIPE is ignored from then on
 * (unless the program set a handler of its own): a client that hangs up must not kill the lab.
 * NULL on failure.
 */
struct event_base *http_base_new(void);

/*
 * Listens on 127.0.0.1:port (0 picks a free port, see http_server_port) with evhttp on base.
 * Requests to unknown paths get 404 with a JSON error; bodies over 1 MiB get 413.
 */
struct http_server *http_server_start(struct event_base *base, int port, char *err, size_t errlen);

/* The port the server listens on. */
int http_server_port(const struct http_server *s);

/* Routes exact path (no query string) to cb. Later routes may replace earlier ones. */
void http_server_route(struct http_server *s, const char *path, void (*cb)(struct evhttp_request *, void *),
                       void *arg);

/* Stops listening and frees the server (requests in flight are dropped). NULL is a no-op. */
void http_server_free(struct http_server *s);

/* Replies with code and body as JSON (Content-Type: application/json); steals body. */
void http_reply_json(struct evhttp_request *req, int code, json_t *body);

/* Replies with code and {"error": "<message>"}. */
void http_reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/*
 * Reads integer query parameter name from the request URI. Returns 1 and sets *out when present
 * and a whole number within [min, max]; 0 and leaves *out when absent; -1 and err when present
 * but malformed or out of range (the caller replies 400).
 */
int http_query_long(struct evhttp_request *req, const char *name, long min, long max, long *out, char *err,
                    size_t errlen);

/*
 * Parses the request body as one JSON object. NULL and err when the body is empty, larger than
 * max_bytes, not valid JSON (err names line and column) or not an object.
 */
json_t *http_read_json(struct evhttp_request *req, size_t max_bytes, char *err, size_t errlen);

/*
 * Runs base's loop in a new thread until http_thread_stop (the loop does not exit when it has
 * no events). The base must come from http_base_new. NULL and err on failure.
 */
struct http_thread *http_thread_start(struct event_base *base, char *err, size_t errlen);

/*
 * Runs fn(arg) on the loop's thread and waits for it to return: the way for another thread to
 * read state that the loop owns (a pool's stats) without a race. Returns -1 if it could not be
 * scheduled.
 */
int http_thread_call(struct http_thread *t, void (*fn)(void *), void *arg);

/* Breaks the loop, joins the thread and frees t (not the base). NULL is a no-op. */
void http_thread_stop(struct http_thread *t);

#endif
