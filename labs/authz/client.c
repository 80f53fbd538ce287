/*
 * client.c — the lab's side of the wire: common/http_client.h's blocking client on one keep-alive
 * connection, so that every attack is a real request to the real API; this file only adds the
 * bearer token and keeps the two things a phase reads (WWW-Authenticate, the body).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "internal.h"

/* no answer within this is status 0: the API is on the same machine, seconds mean it is gone */
#define CALL_TIMEOUT_MS 5000

struct az_client {
	struct http_client *http;
};

struct az_client *az_client_new(int port, char *err, size_t errlen)
{
	struct az_client *c = calloc(1, sizeof(*c));
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

void az_client_free(struct az_client *c)
{
	if (!c)
		return;
	http_client_free(c->http);
	free(c);
}

int az_call(struct az_client *c, const char *method, const char *path, const char *bearer, const char *body,
            struct az_response *rs, char *err, size_t errlen)
{
	memset(rs, 0, sizeof(*rs));
	char *auth = NULL;
	struct http_header h[2];
	int n = 0;
	if (bearer) {
		size_t len = strlen(bearer) + sizeof("Bearer ");
		if (!(auth = malloc(len))) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		snprintf(auth, len, "Bearer %s", bearer);
		h[n++] = (struct http_header){"Authorization", auth};
	}
	if (body)
		h[n++] = (struct http_header){"Content-Type", "application/json"};
	struct http_call call = {method, path, h, n, body, body ? strlen(body) : 0};
	struct http_answer a;
	int rc = http_client_call(c->http, &call, &a, err, errlen);
	free(auth);
	if (rc == 0 && a.status > 0) {
		rs->status = a.status;
		const char *w = http_answer_header(&a, "WWW-Authenticate");
		snprintf(rs->www, sizeof(rs->www), "%s", w ? w : "");
		size_t len = a.body_len < sizeof(rs->body) - 1 ? a.body_len : sizeof(rs->body) - 1;
		memcpy(rs->body, a.body, len);
		rs->body[len] = '\0';
	}
	http_answer_free(&a);
	return rc;
}
