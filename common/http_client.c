/*
 * http_client.c — a blocking client on evhttp's (see http_client.h).
 */
#include "http_client.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hist.h"
#include "http.h"

struct http_client {
	struct event_base *base;
	struct evhttp_connection *conn;
	int port;
};

/* One call in flight: where its answer goes. */
struct call_state {
	struct http_client *c;
	struct http_answer *out;
	bool oom;
};

struct http_client *http_client_new(int port, int timeout_ms, char *err, size_t errlen)
{
	if (port <= 0 || port > 65535 || timeout_ms <= 0) {
		snprintf(err, errlen, "http_client_new: port %d, timeout %d ms", port, timeout_ms);
		return NULL;
	}
	struct http_client *c = calloc(1, sizeof(*c));
	/* http_base_new: SIGPIPE ignored, as for every socket of the lab's */
	if (c && (c->base = http_base_new()))
		c->conn = evhttp_connection_base_new(c->base, NULL, "127.0.0.1", (unsigned short)port);
	if (!c || !c->conn) {
		snprintf(err, errlen, "cannot make a client for 127.0.0.1:%d", port);
		http_client_free(c);
		return NULL;
	}
	c->port = port;
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	evhttp_connection_set_timeout_tv(c->conn, &tv);
	return c;
}

void http_client_free(struct http_client *c)
{
	if (!c)
		return;
	if (c->conn)
		evhttp_connection_free(c->conn);
	if (c->base)
		event_base_free(c->base);
	free(c);
}

static void take_headers(struct call_state *st, struct evhttp_request *req)
{
	struct http_answer *a = st->out;
	struct evkeyval *kv;
	for (kv = evhttp_request_get_input_headers(req)->tqh_first; kv; kv = kv->next.tqe_next) {
		if (a->nheaders == HTTP_ANSWER_HEADERS)
			break;
		char *n = strdup(kv->key), *v = strdup(kv->value);
		if (!n || !v) {
			free(n);
			free(v);
			st->oom = true;
			return;
		}
		a->names[a->nheaders] = n;
		a->values[a->nheaders++] = v;
	}
}

static void done_cb(struct evhttp_request *req, void *arg)
{
	struct call_state *st = arg;
	struct http_answer *a = st->out;
	/* req NULL or code 0: refused, reset or timed out, which the caller sees as status 0 */
	if (req && evhttp_request_get_response_code(req) > 0) {
		struct evbuffer *in = evhttp_request_get_input_buffer(req);
		size_t n = evbuffer_get_length(in);
		if (!(a->body = malloc(n + 1))) {
			st->oom = true;
		} else {
			evbuffer_copyout(in, a->body, n);
			a->body[n] = '\0';
			a->body_len = n;
			a->status = evhttp_request_get_response_code(req);
			take_headers(st, req);
		}
	}
	event_base_loopbreak(st->c->base);
}

static int method_of(const char *m, enum evhttp_cmd_type *out)
{
	static const struct {
		const char *name;
		enum evhttp_cmd_type type;
	} known[] = {{"GET", EVHTTP_REQ_GET},        {"HEAD", EVHTTP_REQ_HEAD},
	             {"POST", EVHTTP_REQ_POST},      {"PUT", EVHTTP_REQ_PUT},
	             {"PATCH", EVHTTP_REQ_PATCH},    {"DELETE", EVHTTP_REQ_DELETE},
	             {"OPTIONS", EVHTTP_REQ_OPTIONS}};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (m && strcmp(m, known[i].name) == 0) {
			*out = known[i].type;
			return 0;
		}
	return -1;
}

int http_client_call(struct http_client *c, const struct http_call *call, struct http_answer *out, char *err,
                     size_t errlen)
{
	memset(out, 0, sizeof(*out));
	enum evhttp_cmd_type type;
	if (method_of(call->method, &type) < 0 || !call->target) {
		snprintf(err, errlen, "http_client_call: method %s, target %s",
		         call->method ? call->method : "none", call->target ? call->target : "none");
		return -1;
	}
	struct call_state st = {c, out, false};
	struct evhttp_request *req = evhttp_request_new(done_cb, &st);
	if (!req) {
		snprintf(err, errlen, "out of memory for a request");
		return -1;
	}
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", "127.0.0.1");
	for (int i = 0; i < call->nheaders; i++)
		evhttp_add_header(h, call->headers[i].name, call->headers[i].value);
	if (call->body) {
		/* evhttp adds Content-Length for POST and PUT only: a PATCH's body would be read as the
		 * next request on the connection */
		char len[24];
		snprintf(len, sizeof(len), "%zu", call->body_len);
		evhttp_add_header(h, "Content-Length", len);
		evbuffer_add(evhttp_request_get_output_buffer(req), call->body, call->body_len);
	}
	uint64_t t0 = hist_now_us();
	/* evhttp_make_request frees req when it fails */
	if (evhttp_make_request(c->conn, req, type, call->target) != 0) {
		snprintf(err, errlen, "cannot send %s %s to 127.0.0.1:%d", call->method, call->target,
		         c->port);
		return -1;
	}
	event_base_dispatch(c->base);
	out->latency_us = hist_now_us() - t0;
	if (st.oom) {
		http_answer_free(out);
		snprintf(err, errlen, "out of memory for an answer");
		return -1;
	}
	return 0;
}

int http_get(int port, const char *target, int timeout_ms, int *status, char *body, size_t bodylen, char *err,
             size_t errlen)
{
	*status = 0;
	if (bodylen)
		body[0] = '\0';
	struct http_client *c = http_client_new(port, timeout_ms, err, errlen);
	if (!c)
		return -1;
	struct http_call call = {"GET", target, NULL, 0, NULL, 0};
	struct http_answer a;
	int rc = http_client_call(c, &call, &a, err, errlen);
	if (rc == 0 && a.status > 0) {
		*status = a.status;
		if (bodylen)
			snprintf(body, bodylen, "%s", a.body);
	}
	http_answer_free(&a);
	http_client_free(c);
	return rc;
}

const char *http_answer_header(const struct http_answer *a, const char *name)
{
	for (int i = 0; i < a->nheaders; i++)
		if (strcasecmp(a->names[i], name) == 0)
			return a->values[i];
	return NULL;
}

void http_answer_free(struct http_answer *a)
{
	free(a->body);
	for (int i = 0; i < a->nheaders; i++) {
		free(a->names[i]);
		free(a->values[i]);
	}
	memset(a, 0, sizeof(*a));
}
