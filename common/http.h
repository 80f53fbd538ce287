/*
 * http.h — the HTTP side of the API labs, on libevent's evhttp: a server bound to 127.0.0.1
 * only, with limits on what one client may cost it (struct http_limits) and every request head
 * checked before any handler runs, JSON replies and bodies through jansson, checked query
 * parameters, and an event loop running in a thread of its own so that a lab's load generator
 * can drive it from another.
 *
 * How the heads are checked (http_guard.h has the detail): evhttp's parser has already cut a
 * header at a NUL and joined folded lines by the time a handler runs, so the raw bytes are
 * read before it parses them, by an evbuffer callback on the input of each connection's
 * bufferevent, which the server makes for evhttp (evhttp_set_bevcb). Not a bufferevent
 * filter: behind one, evhttp frees a connection that replied "Connection: close" before the
 * reply reaches the socket (libevent issue #616), and 400s, 413s and HTTP/1.0 replies are cut.
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
 * Listens on 127.0.0.1:port (0 picks a free port, see http_server_port) with evhttp on base,
 * with the default http_limits. Requests to unknown paths get 404 with a JSON error; bodies
 * over 1 MiB get 413 (evhttp's own reply, an HTML page, and the connection closed).
 *
 * Every request head is checked before any handler runs (http_guard.h tells how): a NUL byte
 * or another control character (HTAB aside) in the request line or a header, a CR that does
 * not end its line, or an obsolete folded header (a line starting with SP or HTAB) gets 400
 * {"error": "..."} and the connection is closed. Handlers therefore see every header value
 * whole: evhttp would cut "Key: zz<NUL>first" to "zz" and join folded lines silently.
 */
struct http_server *http_server_start(struct event_base *base, int port, char *err, size_t errlen);

/*
 * What one client may cost the server. A field left 0 takes its default.
 *
 * max_header_bytes: the request line and headers together (default 16 KiB, what a browser or
 *   a curl sends many times over). Past it evhttp answers 400 itself (an HTML page: libevent
 *   2.1 has no 431 and no hook to change the page) and closes, having read little more than the
 *   limit: a 64 MB header line costs the server tens of KiB, not 64 MB.
 * idle_timeout_ms: a connection with nothing read or written for this long is closed without
 *   a reply (default 5 s): keep-alive connections left open, clients that stopped reading. A
 *   handler at work does not count: evhttp reads nothing then.
 * request_timeout_ms: from a request's first byte to the last of its body (default 10 s), so
 *   a client that trickles a byte now and then (slowloris), which an idle timeout never cuts,
 *   is closed without a reply.
 * max_connections: open at once (default 512). At the cap the server stops accepting: new
 *   connections wait in the kernel's listen backlog, served as soon as one closes (an idle one
 *   within idle_timeout_ms), and cost no descriptor meanwhile. (libevent 2.1.12 has no
 *   evhttp_set_max_connections; 2.2's answers 503 and closes, at an accept per refusal.)
 */
struct http_limits {
	size_t max_header_bytes;
	int idle_timeout_ms;
	int request_timeout_ms;
	int max_connections;
};

/*
 * Sets the limits (zeros = defaults) for connections accepted from now on; the cap at once.
 * Call it before the loop runs (http_app_run) or on the loop thread (http_thread_call).
 * -1 and err when a value is out of range.
 */
int http_server_set_limits(struct http_server *s, const struct http_limits *lim, char *err, size_t errlen);

/* Connections open now; any thread may ask. */
int http_server_connections(const struct http_server *s);

/* The port the server listens on. */
int http_server_port(const struct http_server *s);

/*
 * Routes exact path (no query string) to cb. Later routes may replace earlier ones. cb runs only
 * for requests whose head passed the check above; it must not set a close callback on the
 * request's connection (evhttp_connection_set_closecb): the server uses it.
 */
void http_server_route(struct http_server *s, const char *path, void (*cb)(struct evhttp_request *, void *),
                       void *arg);

/*
 * Routes every path that starts with prefix and is longer than it (a resource by id:
 * "/v1/users/" serves "/v1/users/42") to cb, which reads the rest from http_request_path. An
 * exact route wins over a prefix; of two prefixes, the longer. Same rules for cb as above.
 */
void http_server_route_prefix(struct http_server *s, const char *prefix,
                              void (*cb)(struct evhttp_request *, void *), void *arg);
/* The request's path as sent (percent-encoded, no query string); "/" when it has none. */
const char *http_request_path(struct evhttp_request *req);
/* Stops listening and frees the server (requests in flight are dropped). NULL is a no-op. */
void http_server_free(struct http_server *s);

/*
 * Replies with code and body as JSON (Content-Type: application/json); steals body. A body
 * that is NULL (a json_pack that failed) or cannot be printed is answered 500 with
 * {"error":"internal error: reply could not be built"}, never code with a body of null.
 */
void http_reply_json(struct evhttp_request *req, int code, json_t *body);

/*
 * Sends the reply with out as its body, or with no body when the request is a HEAD: evhttp
 * writes a HEAD answer's body too (it only leaves out Content-Length), and a keep-alive client
 * would then read that body as the start of its next response. http_reply_json and
 * http_reply_error send through it; a handler that builds its own body should too.
 */
void http_send_reply(struct evhttp_request *req, int code, struct evbuffer *out);

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
/* http_query_long on a query string as the URI carries it ("limit=5&cursor=..."; NULL: none),
 * read with http_query_parse (below): a %00 in it is an error. */
int http_query_str_long(const char *query, const char *name, long min, long max, long *out, char *err,
                        size_t errlen);
/* The same reading of name on a query http_query_parse already decoded into q. */
int http_kv_long(const struct evkeyvalq *q, const char *name, long min, long max, long *out, char *err,
                 size_t errlen);

/*
 * A query string as the URI carries it (NULL: none) decoded into q (initialised here; the caller
 * clears it with evhttp_clear_headers whatever this returned). 0, or -1 and err (the caller
 * replies 400) when it holds a %00 (a decoded value is a C string: what follows the NUL would be
 * dropped silently; a literal "%00" is sent as "%2500") or is not key=value pairs joined by &.
 */
int http_query_parse(const char *query, struct evkeyvalq *q, char *err, size_t errlen);

/*
 * Request header name (case-insensitive) when it appears exactly once: 1 and *value (borrowed
 * from req, valid while req lives); 0 when absent; -1 and err when it appears more than once or
 * its value holds a control character (the caller replies 400: a careful API does not guess
 * which of two keys the client meant).
 */
int http_header_one(struct evhttp_request *req, const char *name, const char **value, char *err,
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

/*
 * An API as every API lab runs it: a base, a server on 127.0.0.1, the loop in a thread of its
 * own. Open it, add routes and whatever the handlers borrow from (a pool, a Redis context) on
 * app->base, run it; stop it with http_app_stop and nothing else.
 */
struct http_app {
	struct event_base *base;
	struct http_server *server;
	struct http_thread *thread;
};

/*
 * Makes the base and the server on 127.0.0.1:port (not serving until http_app_run). -1 and err
 * on failure; the app can then be passed to http_app_stop (a no-op on what was not made).
 */
int http_app_open(struct http_app *app, int port, char *err, size_t errlen);

/* Starts the loop thread: the API answers from now on. -1 and err on failure. */
int http_app_run(struct http_app *app, char *err, size_t errlen);

/*
 * Stops the API in the one order that is safe with requests in flight and queued:
 *   1. the loop thread stops: no callback of the loop runs after this;
 *   2. release(arg) frees what the handlers borrow from (pools, Redis, timers): the callbacks
 *      that this runs (a waiter failed with "pool closed", a query cut off) still reply to
 *      live requests and free their contexts;
 *   3. the loop turns a few times without blocking, so those replies reach their sockets (a
 *      request that arrives now gets 503 "shutting down" without reaching its handler);
 *   4. the server is freed, and with it every connection and request;
 *   5. the base.
 * release must delete every event of its own on app->base (timers included): step 3 runs the loop.
 * release may be NULL. Safe on a zeroed or half-opened app; the app is zeroed after. Can't fail.
 */
void http_app_stop(struct http_app *app, void (*release)(void *arg), void *arg);

#endif
