/*
 * http_guard.c — per-connection limits and the request-head lexer of http_guard.h.
 *
 * Everything here runs on the server's loop thread, but the count of open connections, which
 * any thread may read.
 */
#include "http_guard.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Defaults of struct http_limits, with the reason for each in http.h. */
#define GUARD_HEADER_BYTES (16 * 1024)
#define GUARD_IDLE_MS      5000
#define GUARD_REQUEST_MS   10000
#define GUARD_CONNECTIONS  512
/* Past these a limit is a typo, not a policy. */
#define GUARD_MAX_HEADER     (1024 * 1024)
#define GUARD_MAX_TIMEOUT_MS (3600 * 1000)
#define GUARD_MAX_CONNS      65536

/* What a client is told about a bad head (the JSON error of the 400). */
#define FAULT_NUL   "a request header holds a NUL byte"
#define FAULT_CTL   "a request header holds a control character"
#define FAULT_CR    "a request header holds a carriage return that does not end its line"
#define FAULT_FOLD  "a request header is folded onto a line starting with a space or tab (obsolete)"
#define FAULT_EMPTY "the request line is empty"

struct http_conn {
	struct http_guard *g;
	struct bufferevent *bev;
	struct evbuffer_cb_entry *in_cb;
	struct event *adopt_ev;    /* next loop turn: learn evhttp's connection */
	struct event *deadline_ev; /* request_timeout after a head's first byte, until dispatch */
	bool guard_ref;            /* our bufferevent_incref, held until adopted */
	/* the lexer, over the head of the request evhttp reads next (its fault read at dispatch) */
	struct http_head_lex lex;
	bool head_started; /* a byte of this head arrived: the deadline runs */
};

struct http_guard {
	struct evhttp *http;
	struct evconnlistener *listener;
	struct timeval request_tv;
	int max_conns;
	atomic_int nconns;
	bool paused;  /* the listener is disabled: max_conns are open */
	bool closing; /* evhttp_free is running: the listener is gone */
	/* open addressing on the bufferevent pointer (linear probing, no tombstones) */
	struct http_conn **slots;
	size_t nslots, nused;
};

static size_t slot_of(const struct http_guard *g, const struct bufferevent *bev)
{
	uint64_t h = (uint64_t)(uintptr_t)bev * 0x9E3779B97F4A7C15u;
	return (size_t)(h >> 20) & (g->nslots - 1);
}

static struct http_conn *conn_find(const struct http_guard *g, const struct bufferevent *bev)
{
	for (size_t i = slot_of(g, bev);; i = (i + 1) & (g->nslots - 1)) {
		if (!g->slots[i] || g->slots[i]->bev == bev)
			return g->slots[i];
	}
}

static void slot_put(struct http_guard *g, struct http_conn *c)
{
	size_t i = slot_of(g, c->bev);
	while (g->slots[i])
		i = (i + 1) & (g->nslots - 1);
	g->slots[i] = c;
}

static int conn_insert(struct http_guard *g, struct http_conn *c)
{
	if ((g->nused + 1) * 2 > g->nslots) {
		size_t old_n = g->nslots;
		struct http_conn **old = g->slots;
		struct http_conn **slots = calloc(old_n * 2, sizeof(*slots));
		if (!slots)
			return -1;
		g->slots = slots;
		g->nslots = old_n * 2;
		for (size_t i = 0; i < old_n; i++)
			if (old[i])
				slot_put(g, old[i]);
		free(old);
	}
	slot_put(g, c);
	g->nused++;
	return 0;
}

/* Removes c and shifts back the run after it, so lookups never need tombstones. */
static void conn_remove(struct http_guard *g, struct http_conn *c)
{
	size_t mask = g->nslots - 1, i = slot_of(g, c->bev);
	while (g->slots[i] != c)
		i = (i + 1) & mask;
	g->slots[i] = NULL;
	g->nused--;
	for (size_t j = (i + 1) & mask; g->slots[j]; j = (j + 1) & mask) {
		struct http_conn *m = g->slots[j];
		g->slots[j] = NULL;
		slot_put(g, m);
	}
}

/* Closes c's connection as evhttp closes an idle one: no reply, from a fresh loop turn. */
static void conn_drop(struct http_conn *c, short what)
{
	bufferevent_trigger_event(c->bev, BEV_EVENT_READING | what, BEV_TRIG_DEFER_CALLBACKS);
}

static void lex_fault(struct http_head_lex *l, const char *fault)
{
	if (!l->fault)
		l->fault = fault;
}

/* A line ended: true when it was the blank line that ends the head. */
static bool lex_line_end(struct http_head_lex *l)
{
	if (l->line_empty && !l->first_line) {
		l->in_head = false;
		l->head_done = true;
		return true;
	}
	if (l->line_empty)
		lex_fault(l, FAULT_EMPTY); /* evhttp refuses it too, and closes */
	l->first_line = false;
	l->line_empty = true;
	return false;
}

void http_head_lex_start(struct http_head_lex *l)
{
	*l = (struct http_head_lex){.in_head = true, .first_line = true, .line_empty = true};
}

size_t http_head_lex(struct http_head_lex *l, const unsigned char *p, size_t n)
{
	if (!l->in_head)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = p[i];
		if (l->pending_cr) {
			l->pending_cr = false;
			if (ch == '\n') {
				if (lex_line_end(l))
					return i + 1;
				continue;
			}
			lex_fault(l, FAULT_CR);
			l->line_empty = false;
		}
		if (ch == '\r') {
			l->pending_cr = true;
			continue;
		}
		if (ch == '\n') {
			if (lex_line_end(l))
				return i + 1;
			continue;
		}
		if (l->line_empty && !l->first_line && (ch == ' ' || ch == '\t'))
			lex_fault(l, FAULT_FOLD);
		else if (ch == 0)
			lex_fault(l, FAULT_NUL);
		else if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			lex_fault(l, FAULT_CTL);
		l->line_empty = false;
	}
	return n;
}

/* Lexes len bytes of buf from offset while the head lasts; arms the deadline at its first byte. */
static void lex_buffer(struct http_conn *c, struct evbuffer *buf, size_t offset, size_t len)
{
	struct evbuffer_ptr pos;
	struct evbuffer_iovec vec[8];

	if (!c->lex.in_head || len == 0 || evbuffer_ptr_set(buf, &pos, offset, EVBUFFER_PTR_SET) != 0)
		return;
	if (!c->head_started) {
		c->head_started = true;
		if (evtimer_add(c->deadline_ev, &c->g->request_tv) != 0)
			conn_drop(c, BEV_EVENT_ERROR);
	}
	while (len > 0 && c->lex.in_head) {
		int n = evbuffer_peek(buf, (ev_ssize_t)len, &pos, vec, 8);
		size_t seen = 0;
		for (int i = 0; i < n && i < 8 && c->lex.in_head && seen < len; i++) {
			size_t take = vec[i].iov_len < len - seen ? vec[i].iov_len : len - seen;
			seen += http_head_lex(&c->lex, vec[i].iov_base, take);
		}
		if (n <= 0 || seen == 0 || evbuffer_ptr_set(buf, &pos, seen, EVBUFFER_PTR_ADD) != 0)
			break;
		len -= seen;
	}
}

/* Every read: the new bytes are the last n_added of the buffer, not yet parsed by evhttp. */
static void conn_input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct http_conn *c = arg;
	if (info->n_added > 0)
		lex_buffer(c, buf, evbuffer_get_length(buf) - info->n_added, info->n_added);
}

/* The head of the next request starts at what evhttp left unread, and is lexed from there. */
static void conn_next_head(struct http_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	http_head_lex_start(&c->lex);
	c->head_started = false;
	lex_buffer(c, in, 0, evbuffer_get_length(in));
	/* a pipelined head already here is not late: its clock starts when more of it arrives */
	evtimer_del(c->deadline_ev);
	c->head_started = false;
}

static void conn_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_drop(arg, BEV_EVENT_TIMEOUT);
}

/* What c added to the loop and to its bufferevent: the input callback and its two timers. */
static void conn_unhook(struct http_conn *c)
{
	if (c->in_cb)
		evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->in_cb);
	if (c->adopt_ev)
		event_free(c->adopt_ev);
	if (c->deadline_ev)
		event_free(c->deadline_ev);
}

static void conn_free(struct http_conn *c)
{
	struct http_guard *g = c->g;
	conn_unhook(c);
	if (c->guard_ref) {
		void *cbarg = NULL;
		bufferevent_getcb(c->bev, NULL, NULL, NULL, &cbarg);
		/* evhttp never took it (it could not make its connection): ours to free */
		if (!cbarg && bufferevent_getfd(c->bev) < 0)
			bufferevent_free(c->bev);
		bufferevent_decref(c->bev);
	}
	conn_remove(g, c);
	atomic_fetch_sub(&g->nconns, 1);
	if (g->paused && !g->closing && atomic_load(&g->nconns) < g->max_conns &&
	    evconnlistener_enable(g->listener) == 0)
		g->paused = false;
	free(c);
}

static void conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
	(void)evcon;
	conn_free(arg);
}

/* One loop turn after accept: evhttp's connection is the bufferevent's callback argument. */
static void conn_adopt_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct http_conn *c = arg;
	void *cbarg = NULL;
	bufferevent_getcb(c->bev, NULL, NULL, NULL, &cbarg);
	if (!cbarg) {
		conn_free(c); /* evhttp let it go already (bufferevent_free clears the callbacks) */
		return;
	}
	evhttp_connection_set_closecb(cbarg, conn_closed_cb, c);
	c->guard_ref = false;
	bufferevent_decref(c->bev);
}

/* evhttp's bevcb: a new connection's bufferevent, with the lexer on its input. */
static struct bufferevent *guard_bev_cb(struct event_base *base, void *arg)
{
	struct http_guard *g = arg;
	const struct timeval now = {0, 0};
	struct http_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL; /* evhttp makes its own; http_guard_check refuses its requests */
	c->g = g;
	/*
	 * Closed on free, not by evhttp: while our reference holds a bufferevent evhttp already
	 * freed, its read event stays registered, so its socket must stay open (never reused).
	 */
	c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	c->adopt_ev = evtimer_new(base, conn_adopt_cb, c);
	c->deadline_ev = evtimer_new(base, conn_deadline_cb, c);
	if (!c->bev || !c->adopt_ev || !c->deadline_ev || conn_insert(g, c) != 0)
		goto err;
	c->in_cb = evbuffer_add_cb(bufferevent_get_input(c->bev), conn_input_cb, c);
	if (!c->in_cb || evtimer_add(c->adopt_ev, &now) != 0) {
		conn_remove(g, c);
		goto err;
	}
	bufferevent_incref(c->bev); /* alive until adopted, even if evhttp frees it first */
	c->guard_ref = true;
	http_head_lex_start(&c->lex);
	/* at the cap, accept no more: the next connections wait in the kernel's backlog */
	if (atomic_fetch_add(&g->nconns, 1) + 1 >= g->max_conns && !g->paused) {
		evconnlistener_disable(g->listener);
		g->paused = true;
	}
	return c->bev;

err:
	conn_unhook(c);
	if (c->bev)
		bufferevent_free(c->bev);
	free(c);
	return NULL;
}

struct http_guard *http_guard_new(struct evhttp *http, struct evhttp_bound_socket *sock)
{
	struct http_guard *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->http = http;
	g->listener = evhttp_bound_socket_get_listener(sock);
	g->nslots = 64;
	g->slots = calloc(g->nslots, sizeof(*g->slots));
	struct http_limits defaults = {0};
	if (!g->slots || http_guard_set_limits(g, &defaults, NULL, 0) != 0) {
		free(g->slots);
		free(g);
		return NULL;
	}
	evhttp_set_bevcb(http, guard_bev_cb, g);
	return g;
}

int http_guard_set_limits(struct http_guard *g, const struct http_limits *lim, char *err, size_t errlen)
{
	size_t header = lim->max_header_bytes ? lim->max_header_bytes : GUARD_HEADER_BYTES;
	int idle = lim->idle_timeout_ms ? lim->idle_timeout_ms : GUARD_IDLE_MS;
	int request = lim->request_timeout_ms ? lim->request_timeout_ms : GUARD_REQUEST_MS;
	int conns = lim->max_connections ? lim->max_connections : GUARD_CONNECTIONS;

	if (header < 64 || header > GUARD_MAX_HEADER || idle < 0 || idle > GUARD_MAX_TIMEOUT_MS ||
	    request < 0 || request > GUARD_MAX_TIMEOUT_MS || conns < 0 || conns > GUARD_MAX_CONNS) {
		if (err)
			snprintf(
			        err, errlen,
			        "http limits: header bytes 64..%d, timeouts 0..%d ms, connections 0..%d (0 = "
			        "the default)",
			        GUARD_MAX_HEADER, GUARD_MAX_TIMEOUT_MS, GUARD_MAX_CONNS);
		return -1;
	}
	struct timeval idle_tv = {idle / 1000, (idle % 1000) * 1000};
	evhttp_set_max_headers_size(g->http, (ev_ssize_t)header);
	evhttp_set_timeout_tv(g->http, &idle_tv);
	g->request_tv = (struct timeval){request / 1000, (request % 1000) * 1000};
	g->max_conns = conns;
	if (g->paused && atomic_load(&g->nconns) < conns && evconnlistener_enable(g->listener) == 0)
		g->paused = false;
	else if (!g->paused && atomic_load(&g->nconns) >= conns && evconnlistener_disable(g->listener) == 0)
		g->paused = true;
	return 0;
}

const char *http_guard_check(struct http_guard *g, struct evhttp_request *req, int *code)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	struct http_conn *c = bev ? conn_find(g, bev) : NULL;
	if (!c) {
		*code = 503;
		return "the server could not check this connection (out of memory)";
	}
	/* evhttp saw the blank line, so the lexer did: if not, it refuses rather than guess */
	const char *fault = c->lex.head_done ? c->lex.fault : "the request head could not be checked";
	evtimer_del(c->deadline_ev);
	conn_next_head(c);
	*code = 400;
	return fault;
}

int http_guard_connections(const struct http_guard *g)
{
	return atomic_load(&g->nconns);
}

void http_guard_free(struct http_guard *g)
{
	if (!g)
		return;
	g->closing = true; /* evhttp_free frees the listener first, then each connection */
	evhttp_free(g->http);
	/* only connections evhttp dropped before their adoption are left (a removal may move others) */
	while (g->nused > 0) {
		for (size_t i = 0; i < g->nslots; i++)
			if (g->slots[i]) {
				conn_free(g->slots[i]);
				break;
			}
	}
	free(g->slots);
	free(g);
}
