/*
 * client.c — the lab's side of the wire: a blocking HTTP client on one keep-alive connection,
 * with its own event loop, so that each of the race's threads is a real client of the real API
 * (evhttp reconnects by itself when the server closed an idle connection).
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

struct put_patch_client {
	struct event_base *base;
	struct evhttp_connection *conn;
	int port;
};

struct call {
	struct put_patch_client *c;
	struct put_patch_response *rs;
};

struct put_patch_client *put_patch_client_new(int port, char *err, size_t errlen)
{
	struct put_patch_client *c = calloc(1, sizeof(*c));
	if (c && (c->base = event_base_new()))
		c->conn = evhttp_connection_base_new(c->base, NULL, "127.0.0.1", (unsigned short)port);
	if (!c || !c->conn) {
		snprintf(err, errlen, "cannot make a client for 127.0.0.1:%d", port);
		put_patch_client_free(c);
		return NULL;
	}
	c->port = port;
	evhttp_connection_set_timeout(c->conn, CALL_TIMEOUT_S);
	return c;
}

void put_patch_client_free(struct put_patch_client *c)
{
	if (!c)
		return;
	if (c->conn)
		evhttp_connection_free(c->conn);
	if (c->base)
		event_base_free(c->base);
	free(c);
}

static void copy_header(struct evkeyvalq *h, const char *name, char *out, size_t outlen)
{
	const char *v = evhttp_find_header(h, name);
	snprintf(out, outlen, "%s", v ? v : "");
}

static void done_cb(struct evhttp_request *req, void *arg)
{
	struct call *cl = arg;
	struct put_patch_response *rs = cl->rs;
	if (req && evhttp_request_get_response_code(req) > 0) {
		rs->status = evhttp_request_get_response_code(req);
		struct evkeyvalq *h = evhttp_request_get_input_headers(req);
		copy_header(h, "ETag", rs->etag, sizeof(rs->etag));
		copy_header(h, "Accept-Patch", rs->accept_patch, sizeof(rs->accept_patch));
		struct evbuffer *in = evhttp_request_get_input_buffer(req);
		size_t n = evbuffer_get_length(in);
		if (n > sizeof(rs->body) - 1)
			n = sizeof(rs->body) - 1;
		evbuffer_copyout(in, rs->body, n);
		rs->body[n] = '\0';
		rs->body_len = n;
	}
	event_base_loopbreak(cl->c->base);
}

static enum evhttp_cmd_type method_of(const char *m)
{
	if (strcmp(m, "PUT") == 0)
		return EVHTTP_REQ_PUT;
	if (strcmp(m, "PATCH") == 0)
		return EVHTTP_REQ_PATCH;
	if (strcmp(m, "POST") == 0)
		return EVHTTP_REQ_POST;
	if (strcmp(m, "DELETE") == 0)
		return EVHTTP_REQ_DELETE;
	return EVHTTP_REQ_GET;
}

int put_patch_call(struct put_patch_client *c, const struct put_patch_request *rq,
                   struct put_patch_response *rs, char *err, size_t errlen)
{
	memset(rs, 0, sizeof(*rs));
	struct call cl = {c, rs};
	struct evhttp_request *req = evhttp_request_new(done_cb, &cl);
	if (!req) {
		snprintf(err, errlen, "cannot create the request");
		return -1;
	}
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", "127.0.0.1");
	if (rq->content_type)
		evhttp_add_header(h, "Content-Type", rq->content_type);
	if (rq->if_match)
		evhttp_add_header(h, "If-Match", rq->if_match);
	if (rq->body) {
		/* evhttp sets Content-Length for POST and PUT only: a PATCH's body would be read as
		 * the next request on the connection */
		char len[24];
		snprintf(len, sizeof(len), "%zu", strlen(rq->body));
		evhttp_add_header(h, "Content-Length", len);
		evbuffer_add(evhttp_request_get_output_buffer(req), rq->body, strlen(rq->body));
	}
	/* evhttp_make_request frees req when it fails */
	if (evhttp_make_request(c->conn, req, method_of(rq->method), rq->path) != 0) {
		snprintf(err, errlen, "cannot send the request to 127.0.0.1:%d", c->port);
		return -1;
	}
	event_base_dispatch(c->base);
	return 0;
}
