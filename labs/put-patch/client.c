/*
 * client.c — the lab's side of the wire: a blocking HTTP client on one keep-alive connection
 * (common/http_client.h), so that each of the race's threads is a real client of the real API,
 * and the headers the lab reads from its answers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "internal.h"

/* no answer within this is status 0: the API is on the same machine, seconds mean it is gone */
#define CALL_TIMEOUT_MS 5000

struct put_patch_client {
	struct http_client *http;
};

struct put_patch_client *put_patch_client_new(int port, char *err, size_t errlen)
{
	struct put_patch_client *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (!(c->http = http_client_new(port, CALL_TIMEOUT_MS, err, errlen))) {
		free(c);
		return NULL;
	}
	return c;
}

void put_patch_client_free(struct put_patch_client *c)
{
	if (!c)
		return;
	http_client_free(c->http);
	free(c);
}

static void copy_header(const struct http_answer *a, const char *name, char *out, size_t outlen)
{
	const char *v = http_answer_header(a, name);
	snprintf(out, outlen, "%s", v ? v : "");
}

int put_patch_call(struct put_patch_client *c, const struct put_patch_request *rq,
                   struct put_patch_response *rs, char *err, size_t errlen)
{
	memset(rs, 0, sizeof(*rs));
	struct http_header h[2];
	int n = 0;
	if (rq->content_type)
		h[n++] = (struct http_header){"Content-Type", rq->content_type};
	if (rq->if_match)
		h[n++] = (struct http_header){"If-Match", rq->if_match};
	struct http_call call = {rq->method, rq->path, h, n, rq->body, rq->body ? strlen(rq->body) : 0};
	struct http_answer a;
	int rc = http_client_call(c->http, &call, &a, err, errlen);
	if (rc == 0 && a.status > 0) {
		rs->status = a.status;
		copy_header(&a, "ETag", rs->etag, sizeof(rs->etag));
		copy_header(&a, "Accept-Patch", rs->accept_patch, sizeof(rs->accept_patch));
		size_t len = a.body_len < sizeof(rs->body) - 1 ? a.body_len : sizeof(rs->body) - 1;
		memcpy(rs->body, a.body, len);
		rs->body[len] = '\0';
		rs->body_len = len;
	}
	http_answer_free(&a);
	return rc;
}
