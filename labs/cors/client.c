/*
 * client.c — the lab's own HTTP client for phase 4, what curl would do: one GET on a connection of
 * its own (common/http_client.h), any Origin and Cookie it likes, and the whole answer
 * read, whatever its CORS headers say. No browser: nothing between the answer and the reader.
 */
#include <stdio.h>
#include <string.h>

#include "http_client.h"
#include "internal.h"

#define TIMEOUT_MS 5000

int cors_client_get(int port, const char *target, const char *origin, const char *cookie,
                    struct cors_client_row *row, char *body, size_t bodylen, char *err, size_t errlen)
{
	struct http_client *c = http_client_new(port, TIMEOUT_MS, err, errlen);
	if (!c)
		return -1;
	char cookie_header[256];
	snprintf(cookie_header, sizeof(cookie_header), "%s=%s", COOKIE_NAME, cookie ? cookie : "");
	struct http_header h[3] = {{"User-Agent", "lab-cors-client"}};
	int n = 1;
	if (origin)
		h[n++] = (struct http_header){"Origin", origin};
	if (cookie)
		h[n++] = (struct http_header){"Cookie", cookie_header};
	struct http_call call = {"GET", target, h, n, NULL, 0};
	struct http_answer a;
	int rc = http_client_call(c, &call, &a, err, errlen);
	http_client_free(c);
	if (rc == 0 && a.status == 0) {
		snprintf(err, errlen, "no HTTP answer from 127.0.0.1:%d for %s", port, target);
		rc = -1;
	}
	if (rc == 0) {
		row->status = a.status;
		const char *acao = http_answer_header(&a, "Access-Control-Allow-Origin");
		snprintf(row->acao, sizeof(row->acao), "%s", acao ? acao : "");
		const char *vary = http_answer_header(&a, "Vary");
		snprintf(row->vary, sizeof(row->vary), "%s", vary ? vary : "");
		row->bytes = (int)a.body_len;
		snprintf(body, bodylen, "%s", a.body);
		snprintf(row->target, sizeof(row->target), "%s", target);
		snprintf(row->origin, sizeof(row->origin), "%s", origin ? origin : "");
		row->cookie = cookie != NULL;
	}
	http_answer_free(&a);
	return rc;
}
