/*
 * client.c — the lab's side of the wire: a blocking HTTP client on one keep-alive connection with
 * its own event loop, so that every attack is a real request to the real API.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* no answer within this is status 0: the API is on the same machine, seconds mean it is gone */
#define CALL_TIMEOUT_S 5

struct az_client {
	struct event_base *base;
	struct evhttp_connection *conn;
	int port;
};

struct az_call_state {
	struct az_client *c;
	struct az_response *rs;
};

struct az_client *az_client_new(int port, char *err, size_t errlen)
{
	struct az_client *c = calloc(1, sizeof(*c));
	if (c && (c->base = event_base_new()))
		c->conn = evhttp_connection_base_new(c->base, NULL, "127.0.0.1", (unsigned short)port);
	if (!c || !c->conn) {
		snprintf(err, errlen, "cannot make a client for 127.0.0.1:%d", port);
		az_client_free(c);
		return NULL;
	}
	c->port = port;
	evhttp_connection_set_timeout(c->conn, CALL_TIMEOUT_S);
	return c;
}

void az_client_free(struct az_client *c)
{
	if (!c)
		return;
	if (c->conn)
		evhttp_connection_free(c->conn);
	if (c->base)
		event_base_free(c->base);
	free(c);
}

static void done_cb(struct evhttp_request *req, void *arg)
{
	struct az_call_state *cl = arg;
	struct az_response *rs = cl->rs;
	if (req && evhttp_request_get_response_code(req) > 0) {
		rs->status = evhttp_request_get_response_code(req);
		const char *w = evhttp_find_header(evhttp_request_get_input_headers(req), "WWW-Authenticate");
		snprintf(rs->www, sizeof(rs->www), "%s", w ? w : "");
		struct evbuffer *in = evhttp_request_get_input_buffer(req);
		size_t n = evbuffer_get_length(in);
		if (n > sizeof(rs->body) - 1)
			n = sizeof(rs->body) - 1;
		evbuffer_copyout(in, rs->body, n);
		rs->body[n] = '\0';
	}
	event_base_loopbreak(cl->c->base);
}

static enum evhttp_cmd_type method_of(const char *m)
{
	return !strcmp(m, "POST")     ? EVHTTP_REQ_POST
	       : !strcmp(m, "DELETE") ? EVHTTP_REQ_DELETE
	                              : EVHTTP_REQ_GET;
}

int az_call(struct az_client *c, const char *method, const char *path, const char *bearer, const char *body,
            struct az_response *rs, char *err, size_t errlen)
{
	memset(rs, 0, sizeof(*rs));
	struct az_call_state cl = {c, rs};
	struct evhttp_request *req = evhttp_request_new(done_cb, &cl);
	if (!req) {
		snprintf(err, errlen, "cannot create the request");
		return -1;
	}
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", "127.0.0.1");
	if (bearer) {
		size_t n = strlen(bearer) + 8;
		char *auth = malloc(n);
		if (!auth) {
			evhttp_request_free(req);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		snprintf(auth, n, "Bearer %s", bearer);
		evhttp_add_header(h, "Authorization", auth);
		free(auth);
	}
	if (body) {
		evhttp_add_header(h, "Content-Type", "application/json");
		evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
	}
	/* evhttp_make_request frees req when it fails */
	if (evhttp_make_request(c->conn, req, method_of(method), path) != 0) {
		snprintf(err, errlen, "cannot send the request to 127.0.0.1:%d", c->port);
		return -1;
	}
	event_base_dispatch(c->base);
	return 0;
}
