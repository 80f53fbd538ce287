/*
 * http.c — evhttp server helpers: a loopback-only listener, JSON in and out through jansson,
 * strict query parameters, and a loop thread that other threads can break and call into.
 *
 * Only libevent parses HTTP here and only jansson parses JSON: the labs teach what a server
 * does under load, not how to write a parser.
 */
#include "http.h"
#include "http_guard.h"
#include "loop.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>

/* 1 MiB: the largest body an API lab accepts; evhttp itself answers 413 above it. */
#define HTTP_MAX_BODY (1024 * 1024)

struct http_route;

struct http_server {
	struct evhttp *http;
	struct evhttp_bound_socket *sock;
	struct http_guard *guard; /* limits, and every request head checked before its handler */
	struct http_route *routes;
	int port;      /* read back from the socket, so port 0 becomes the one the kernel chose */
	bool stopping; /* http_app_stop began: a request that arrives now is not given to a handler */
};

/* A route as evhttp sees it: the guard's check first, then the handler. */
struct http_route {
	struct http_server *s;
	char *path;
	bool prefix; /* serves every longer path that starts with path; evhttp does not know it */
	void (*cb)(struct evhttp_request *, void *);
	void *arg;
	struct http_route *next;
};

struct http_thread {
	struct event_base *base;
	pthread_t tid;
	/* start waits on these until the loop has run started_ev, its first callback */
	struct event *started_ev;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int running;
};

struct event_base *http_base_new(void)
{
	if (loop_threads_init() != 0)
		return NULL;
	loop_sigpipe_ignore();
	/*
	 * epoll's changelist: the changes a pass of the loop makes to one socket's events are
	 * applied once, before epoll_wait, and those that cancel out cost nothing. evhttp turns a
	 * connection's read and write events off and on around every request (4 epoll_ctl a
	 * request under wrk, 11% of the API's cycles); the pool's sockets live on this base too.
	 * Its one hazard, a descriptor shared through dup(), does not arise: evhttp and libpq
	 * each own theirs. Other backends ignore the flag.
	 */
	struct event_config *cfg = event_config_new();
	if (!cfg)
		return NULL;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	struct event_base *base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return base;
}

/*
 * Before any handler: the guard's verdict on the request's head. false when the request was
 * answered here (400, and the connection closed after it).
 */
static bool http_admit(struct http_server *s, struct evhttp_request *req)
{
	if (s->stopping) {
		/* what its handler borrows from is gone: the client retries elsewhere or later */
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
		http_reply_error(req, 503, "shutting down");
		return false;
	}
	int code = 400;
	const char *why = http_guard_check(s->guard, req, &code);
	if (!why)
		return true;
	evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
	http_reply_error(req, code, "%s", why);
	return false;
}

static void http_route_cb(struct evhttp_request *req, void *arg)
{
	struct http_route *r = arg;
	if (http_admit(r->s, req))
		r->cb(req, r->arg);
}

/* The prefix route of the longest prefix that path starts with and is longer than; or NULL. */
static struct http_route *http_prefix_route(struct http_server *s, const char *path)
{
	struct http_route *best = NULL;
	size_t best_len = 0;
	for (struct http_route *r = s->routes; r; r = r->next) {
		size_t n = strlen(r->path);
		if (r->prefix && n > best_len && strncmp(path, r->path, n) == 0 && path[n] != '\0') {
			best = r;
			best_len = n;
		}
	}
	return best;
}

/* Requests no exact route claimed: a prefix route's, else 404 in the JSON error shape. */
static void http_not_found_cb(struct evhttp_request *req, void *arg)
{
	struct http_server *s = arg;
	if (!http_admit(s, req))
		return;
	const char *path = http_request_path(req);
	struct http_route *r = http_prefix_route(s, path);
	if (r)
		r->cb(req, r->arg);
	else
		http_reply_error(req, HTTP_NOTFOUND, "no route for %s", path);
}

const char *http_request_path(struct evhttp_request *req)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	return path && *path ? path : "/";
}

struct http_server *http_server_start(struct event_base *base, int port, char *err, size_t errlen)
{
	struct http_server *s = NULL;

	if (!base) {
		snprintf(err, errlen, "http_server_start: no event base");
		goto err;
	}
	if (port < 0 || port > 65535) {
		snprintf(err, errlen, "port %d is not in 0..65535", port);
		goto err;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		goto err;
	}
	s->http = evhttp_new(base);
	if (!s->http) {
		snprintf(err, errlen, "evhttp_new failed");
		goto err;
	}
	evhttp_set_max_body_size(s->http, HTTP_MAX_BODY);
	/* REST labs update with PATCH; evhttp's default set leaves it out */
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH |
	                                            EVHTTP_REQ_OPTIONS);
	evhttp_set_gencb(s->http, http_not_found_cb, s);

	/* 127.0.0.1 only: a lab's API has no authentication and must not be reachable from outside */
	s->sock = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", (ev_uint16_t)port);
	if (!s->sock) {
		snprintf(err, errlen, "cannot listen on 127.0.0.1:%d: %s", port,
		         evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		goto err;
	}
	struct sockaddr_in addr;
	socklen_t addrlen = sizeof(addr);
	if (getsockname(evhttp_bound_socket_get_fd(s->sock), (struct sockaddr *)&addr, &addrlen) != 0) {
		snprintf(err, errlen, "getsockname on the listening socket: %s", strerror(errno));
		goto err;
	}
	s->port = ntohs(addr.sin_port);
	s->guard = http_guard_new(s->http, s->sock);
	if (!s->guard) {
		snprintf(err, errlen, "out of memory for the connection guard");
		goto err;
	}
	return s;

err:
	http_server_free(s);
	return NULL;
}

int http_server_port(const struct http_server *s)
{
	return s->port;
}

int http_server_set_limits(struct http_server *s, const struct http_limits *lim, char *err, size_t errlen)
{
	return http_guard_set_limits(s->guard, lim, err, errlen);
}

int http_server_connections(const struct http_server *s)
{
	return http_guard_connections(s->guard);
}

static void http_route_add(struct http_server *s, const char *path, bool prefix,
                           void (*cb)(struct evhttp_request *, void *), void *arg)
{
	struct http_route *r;
	for (r = s->routes; r; r = r->next)
		if (r->prefix == prefix && strcmp(r->path, path) == 0)
			break;
	if (r) { /* a later route replaces the earlier one: evhttp keeps calling the same record */
		r->cb = cb;
		r->arg = arg;
		return;
	}
	r = calloc(1, sizeof(*r));
	if (!r || !(r->path = strdup(path)) ||
	    (!prefix && evhttp_set_cb(s->http, path, http_route_cb, r) != 0)) {
		if (r)
			free(r->path);
		free(r);
		return; /* out of memory: the path stays unrouted and answers 404 */
	}
	r->s = s;
	r->prefix = prefix;
	r->cb = cb;
	r->arg = arg;
	r->next = s->routes;
	s->routes = r;
}

void http_server_route(struct http_server *s, const char *path, void (*cb)(struct evhttp_request *, void *),
                       void *arg)
{
	http_route_add(s, path, false, cb, arg);
}

void http_server_route_prefix(struct http_server *s, const char *prefix,
                              void (*cb)(struct evhttp_request *, void *), void *arg)
{
	http_route_add(s, prefix, true, cb, arg);
}

void http_server_free(struct http_server *s)
{
	if (!s)
		return;
	/* closes the listener and every connection with its requests */
	if (s->guard)
		http_guard_free(s->guard);
	else if (s->http)
		evhttp_free(s->http);
	while (s->routes) {
		struct http_route *r = s->routes;
		s->routes = r->next;
		free(r->path);
		free(r);
	}
	free(s);
}

/* What a client gets when its reply could not be built: fixed, so it needs no memory. */
#define HTTP_REPLY_BROKEN "{\"error\":\"internal error: reply could not be built\"}"

void http_send_reply(struct evhttp_request *req, int code, struct evbuffer *out)
{
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD)
		evbuffer_drain(out, evbuffer_get_length(out));
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	evhttp_send_reply(req, code, NULL, out);
	/*
	 * evhttp leaves the reply in the connection's output and turns its write event on: one
	 * epoll_ctl to watch for writable, an epoll_wait that says so, one more epoll_ctl to stop.
	 * A socket that has just read a request is writable, so the write event runs now, on this
	 * pass of the loop (the same writev, and evhttp's own completion after it): with the
	 * changelist the on and off cancel out. A full socket buffer makes it wait as before.
	 * Later in this pass, not inside this call: the caller may still use req.
	 */
	if (bev)
		event_active(&bev->ev_write, EV_WRITE, 1);
}

void http_reply_json(struct evhttp_request *req, int code, json_t *body)
{
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	if (text && evbuffer_add(out, text, strlen(text)) == 0) {
		http_send_reply(req, code, out);
	} else {
		/*
		 * No body (json_pack failed), no memory to print it or to hold it: the status the
		 * handler meant would be a lie, so a 500 with a fixed body the client can still read.
		 */
		evbuffer_drain(out, evbuffer_get_length(out));
		evbuffer_add(out, HTTP_REPLY_BROKEN, sizeof(HTTP_REPLY_BROKEN) - 1);
		http_send_reply(req, HTTP_INTERNAL, out);
	}
	free(text);
	json_decref(body);
}

void http_reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_t *text = json_string(msg);
	if (!text) {
		/* not UTF-8 (a query value echoed back): the client still gets an error it can read */
		for (char *p = msg; *p; p++)
			if ((unsigned char)*p >= 0x80)
				*p = '?';
		text = json_string(msg);
	}
	http_reply_json(req, code, json_pack("{s:o}", "error", text));
}

int http_query_long(struct evhttp_request *req, const char *name, long min, long max, long *out, char *err,
                    size_t errlen)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
	return http_query_str_long(query, name, min, max, out, err, errlen);
}

int http_query_parse(const char *query, struct evkeyvalq *q, char *err, size_t errlen)
{
	TAILQ_INIT(q);
	if (query && strstr(query, "%00")) {
		snprintf(err, errlen, "the query string holds a NUL byte (%%00)");
		return -1;
	}
	if (query && evhttp_parse_query_str(query, q) < 0) {
		snprintf(err, errlen, "the query string is not valid: key=value pairs joined by &");
		return -1;
	}
	return 0;
}

int http_kv_long(const struct evkeyvalq *q, const char *name, long min, long max, long *out, char *err,
                 size_t errlen)
{
	const char *value = evhttp_find_header(q, name);
	if (!value)
		return 0;
	/* strtol alone accepts " 12", "12x" and "": a parameter is a whole number or it is wrong */
	char *end = NULL;
	errno = 0;
	long v = strtol(value, &end, 10);
	if (*value == '\0' || isspace((unsigned char)*value) || end == value || *end != '\0') {
		snprintf(err, errlen, "%s must be a whole number, got \"%.64s\"", name, value);
		return -1;
	}
	if (errno == ERANGE || v < min || v > max) {
		snprintf(err, errlen, "%s must be in %ld..%ld, got %.64s", name, min, max, value);
		return -1;
	}
	*out = v;
	return 1;
}

int http_query_str_long(const char *query, const char *name, long min, long max, long *out, char *err,
                        size_t errlen)
{
	if (!query)
		return 0;
	/* http_query_parse: "limit=5%00x" is refused, not read as 5 */
	struct evkeyvalq params;
	int ret = http_query_parse(query, &params, err, errlen);
	if (ret == 0)
		ret = http_kv_long(&params, name, min, max, out, err, errlen);
	evhttp_clear_headers(&params);
	return ret;
}

static const char *http_json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		return "null";
	default:
		return "something else";
	}
}

json_t *http_read_json(struct evhttp_request *req, size_t max_bytes, char *err, size_t errlen)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	json_t *doc = NULL;
	json_error_t jerr;

	if (len == 0) {
		snprintf(err, errlen, "empty body: a JSON object is required");
		goto err;
	}
	if (len > max_bytes) {
		snprintf(err, errlen, "body too large: %zu bytes, at most %zu", len, max_bytes);
		goto err;
	}
	const char *text = (const char *)evbuffer_pullup(in, -1);
	if (!text) {
		snprintf(err, errlen, "out of memory reading the body");
		goto err;
	}
	/*
	 * Duplicate keys are rejected: {"amount":1,"amount":1000} must not mean whichever came last.
	 * Any value is decoded, so a body of 42 is told it is not an object, not that it is not JSON.
	 */
	doc = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!doc) {
		snprintf(err, errlen, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
		         jerr.text);
		goto err;
	}
	if (!json_is_object(doc)) {
		snprintf(err, errlen, "body must be a JSON object, got %s", http_json_kind(doc));
		goto err;
	}
	return doc;

err:
	json_decref(doc);
	return NULL;
}

/* The loop's first callback: from here on, event_base_loopbreak cannot be lost. */
static void http_thread_running_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct http_thread *t = arg;
	pthread_mutex_lock(&t->mu);
	t->running = 1;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->mu);
}

static void *http_thread_main(void *arg)
{
	struct http_thread *t = arg;
	event_base_loop(t->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

struct http_thread *http_thread_start(struct event_base *base, char *err, size_t errlen)
{
	const struct timeval now = {0, 0};
	struct http_thread *t = calloc(1, sizeof(*t));

	if (!t) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->base = base;
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cond, NULL);
	/*
	 * event_base_loop clears a pending break when it starts, so a stop that came before the
	 * thread reached the loop would be lost and the join would hang: wait for the loop to run.
	 */
	t->started_ev = evtimer_new(base, http_thread_running_cb, t);
	if (!t->started_ev || evtimer_add(t->started_ev, &now) != 0) {
		snprintf(err, errlen, "cannot add the start event to the loop");
		goto err;
	}
	int rc = pthread_create(&t->tid, NULL, http_thread_main, t);
	if (rc != 0) {
		snprintf(err, errlen, "pthread_create: %s", strerror(rc));
		goto err;
	}
	pthread_mutex_lock(&t->mu);
	while (!t->running)
		pthread_cond_wait(&t->cond, &t->mu);
	pthread_mutex_unlock(&t->mu);
	return t;

err:
	if (t->started_ev)
		event_free(t->started_ev);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->mu);
	free(t);
	return NULL;
}

int http_thread_call(struct http_thread *t, void (*fn)(void *), void *arg)
{
	return t ? loop_call(t->base, t->tid, fn, arg) : -1;
}

void http_thread_stop(struct http_thread *t)
{
	if (!t)
		return;
	event_base_loopbreak(t->base);
	pthread_join(t->tid, NULL);
	event_free(t->started_ev);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

int http_header_one(struct evhttp_request *req, const char *name, const char **value, char *err,
                    size_t errlen)
{
	const struct evkeyvalq *headers = evhttp_request_get_input_headers(req);
	const struct evkeyval *h;
	int seen = 0;
	*value = NULL;
	for (h = headers->tqh_first; h; h = h->next.tqe_next) {
		if (strcasecmp(h->key, name) != 0)
			continue;
		if (++seen > 1) {
			snprintf(err, errlen, "%s appears more than once", name);
			*value = NULL;
			return -1;
		}
		*value = h->value;
	}
	if (!seen)
		return 0;
	for (const unsigned char *c = (const unsigned char *)*value; *c; c++)
		if (*c < 0x20 || *c == 0x7f) {
			snprintf(err, errlen, "%s holds a control character", name);
			*value = NULL;
			return -1;
		}
	return 1;
}

/* Turns of the loop that flush the last replies at a stop: each writes what a socket takes. */
#define HTTP_APP_FLUSH_TURNS 8

int http_app_open(struct http_app *app, int port, char *err, size_t errlen)
{
	memset(app, 0, sizeof(*app));
	app->base = http_base_new();
	if (!app->base) {
		snprintf(err, errlen, "cannot make an event base");
		return -1;
	}
	app->server = http_server_start(app->base, port, err, errlen);
	return app->server ? 0 : -1;
}

int http_app_run(struct http_app *app, char *err, size_t errlen)
{
	app->thread = http_thread_start(app->base, err, errlen);
	return app->thread ? 0 : -1;
}

void http_app_stop(struct http_app *app, void (*release)(void *arg), void *arg)
{
	if (!app)
		return;
	bool served = app->thread != NULL;
	http_thread_stop(app->thread);
	if (app->server)
		app->server->stopping = true;
	if (release)
		release(arg);
	/* the replies release's callbacks wrote sit in buffers until the loop writes them out */
	for (int i = 0; served && i < HTTP_APP_FLUSH_TURNS; i++)
		event_base_loop(app->base, EVLOOP_NONBLOCK);
	http_server_free(app->server);
	if (app->base)
		event_base_free(app->base);
	memset(app, 0, sizeof(*app));
}
