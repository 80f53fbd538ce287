/*
 * http_guard.h — the part of http.c that stands between a client's raw bytes and evhttp:
 * per-connection limits and the check of every request head. Internal to http.c (labs use
 * http.h); http.h tells what a client sees, this file how it is done.
 *
 * How the raw bytes are seen. evhttp's parser cuts a header value at a NUL ("Key: zz\0first"
 * reaches a handler as "zz") and joins an obsolete folded line to the header before it, so by
 * the time a handler runs the evidence is gone. The guard gives evhttp each connection's
 * bufferevent itself (evhttp_set_bevcb): a plain socket bufferevent, as evhttp would make, with
 * an evbuffer callback on its input that runs on every read, before evhttp parses the bytes.
 * A small lexer walks each request head there (lines of LF or CR LF, up to the blank line):
 * a NUL, another control character (HTAB aside), a CR not followed by LF, or a line starting
 * with SP or HTAB (obsolete folding) marks the head bad. The lexer never frames a body: where
 * the next head starts is learnt from evhttp itself when it hands a request over (what is left
 * in the input buffer then is the next request), so a body is never mistaken for a head.
 * The verdict is read when evhttp dispatches the request, before any handler: a bad head is
 * answered 400 with a JSON error and the connection is closed.
 *
 * Why not a bufferevent filter: with a filter, evhttp believes a reply is sent once it is in
 * the filter's underlying buffer, and on "Connection: close" frees the connection (and shuts
 * the socket) before those bytes reach the kernel (libevent issue #616): every 400, 413 and
 * HTTP/1.0 reply could be cut. The input callback leaves evhttp's output path untouched.
 *
 * Lifetime: a connection's guard is made in the bevcb, learns evhttp's connection one loop turn
 * later (the bufferevent's callback argument, which evhttp sets to its connection) and is freed
 * by evhttp_connection_set_closecb: handlers must not set a close callback of their own.
 */
#ifndef LAB_HTTP_GUARD_H
#define LAB_HTTP_GUARD_H

#include <event2/http.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "http.h"

struct http_guard;

/*
 * The request-head lexer above, on its own so that it runs without a connection (its fuzz
 * harness, fuzz/fuzz_http_head.c, drives it with any bytes in any chunks): http_head_lex_start
 * before a head, then http_head_lex on its bytes as they arrive.
 */
struct http_head_lex {
	bool in_head;      /* false once the head's blank line came: later bytes are not the head's */
	bool first_line;   /* on the request line */
	bool line_empty;   /* no byte on this line yet (a pending CR is not one) */
	bool pending_cr;   /* the last byte was CR: LF ends the line, anything else is a fault */
	bool head_done;    /* the head's blank line came */
	const char *fault; /* the head's first fault, NULL while none: the 400's message */
};

void http_head_lex_start(struct http_head_lex *l);

/* Walks n more bytes of the head; returns how many belong to it (none once it is done; it stops
 * after the blank line). Any split of the same bytes gives the same lexer state. */
size_t http_head_lex(struct http_head_lex *l, const unsigned char *p, size_t n);

/* Guards every connection http accepts on sock from now on, with the default limits. */
struct http_guard *http_guard_new(struct evhttp *http, struct evhttp_bound_socket *sock);

/* Applies lim (zeros = defaults) to connections accepted from now on; -1 and err if invalid. */
int http_guard_set_limits(struct http_guard *g, const struct http_limits *lim, char *err, size_t errlen);

/*
 * At dispatch, before any handler: NULL when req may reach its handler; else the reason it
 * may not, and *code (400 for a bad head, 503 for a connection the guard could not follow).
 */
const char *http_guard_check(struct http_guard *g, struct evhttp_request *req, int *code);

/* Connections open now (any thread). */
int http_guard_connections(const struct http_guard *g);

/* Frees the evhttp it guards (every connection and request with it), then itself. */
void http_guard_free(struct http_guard *g);

#endif
