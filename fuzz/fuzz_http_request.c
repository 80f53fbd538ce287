/*
 * fuzz_http_request.c — the request-side helpers of common/http.c that every API lab's handlers
 * call on what a client sent: http_query_str_long (http_query_long's parse of the query string),
 * http_header_one and http_read_json, on a request made with evhttp_request_new (no connection).
 *
 * The input reads like a request: its first line is the query string, the lines after it up to
 * an empty line are headers "Name: value" (added as evhttp adds them; values it refuses are
 * left out), and the rest is the body. Asserted:
 *   - http_query_str_long for "limit" in 1..100 and "n" in -5..5: 1 with the value in range,
 *     0 with *out untouched, or -1 with a message;
 *   - http_header_one for each header name sent (and one never sent): -1 with a message when
 *     the name came more than once (any case) or its value holds a control character, else 1
 *     with that very value; 0 for the absent one;
 *   - http_read_json (at most 1024 bytes): an object exactly when the body is 1..1024 bytes of
 *     JSON without duplicate keys whose value is an object; otherwise NULL with a message.
 *
 * links: labcore
 */
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"
#include "fuzz_check.h"

#define MAX_BODY    1024
#define MAX_HEADERS 16

static void query(const char *q)
{
	static const struct {
		const char *name;
		long min, max;
	} PARAMS[] = {{"limit", 1, 100}, {"n", -5, 5}, {"cursor", 0, 0}};
	for (size_t i = 0; i < sizeof(PARAMS) / sizeof(PARAMS[0]); i++) {
		char err[256] = "";
		long v = 12345;
		int r = http_query_str_long(q, PARAMS[i].name, PARAMS[i].min, PARAMS[i].max, &v, err,
		                            sizeof(err));
		if (r == 1)
			check(v >= PARAMS[i].min && v <= PARAMS[i].max);
		else if (r == 0)
			check(v == 12345);
		else
			check(r == -1 && err[0] != '\0' && v == 12345);
	}
}

static bool has_control(const char *s)
{
	for (const unsigned char *c = (const unsigned char *)s; *c; c++)
		if (*c < 0x20 || *c == 0x7f)
			return true;
	return false;
}

static void headers(struct evhttp_request *req, char **names, char **values, int n)
{
	for (int i = 0; i <= n; i++) {
		const char *name = i < n ? names[i] : "X-Never-Sent-Fuzz";
		int seen = 0, at = -1;
		for (int k = 0; k < n; k++)
			if (!strcasecmp(names[k], name) && seen++ == 0)
				at = k;
		char err[256] = "";
		const char *value = NULL;
		int r = http_header_one(req, name, &value, err, sizeof(err));
		if (seen == 0)
			check(r == 0 && value == NULL);
		else if (seen > 1 || has_control(values[at]))
			check(r == -1 && value == NULL && err[0] != '\0');
		else
			check(r == 1 && value && !strcmp(value, values[at]));
	}
}

static void body(struct evhttp_request *req, const char *text, size_t len)
{
	check(evbuffer_add(evhttp_request_get_input_buffer(req), text, len) == 0);
	json_error_t jerr;
	json_t *expect = len >= 1 && len <= MAX_BODY
	                         ? json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr)
	                         : NULL;
	bool object = expect && json_is_object(expect);
	char err[512] = "";
	json_t *got = http_read_json(req, MAX_BODY, err, sizeof(err));
	check(object ? got && json_equal(got, expect) : !got && err[0] != '\0');
	json_decref(got);
	json_decref(expect);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_text(data, size);
	if (!text)
		return 0;
	struct evhttp_request *req = evhttp_request_new(NULL, NULL);
	check(req != NULL);

	/* line 1: the query (up to a NUL, as the URI parser hands it over) */
	char *p = text, *end = text + size, *nl = memchr(p, '\n', (size_t)(end - p));
	if (nl)
		*nl = '\0';
	query(p);
	p = nl ? nl + 1 : end;

	/* headers up to an empty line */
	char *names[MAX_HEADERS], *values[MAX_HEADERS];
	int n = 0;
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) && nl != p) {
		*nl = '\0';
		char *colon = strchr(p, ':');
		if (colon && colon != p && n < MAX_HEADERS) {
			*colon = '\0';
			char *value = colon + 1 + (colon[1] == ' ');
			if (evhttp_add_header(h, p, value) == 0)
				names[n] = p, values[n++] = value;
		}
		p = nl + 1;
	}
	if (p < end && *p == '\n')
		p++;
	headers(req, names, values, n);
	body(req, p, (size_t)(end - p));

	evhttp_request_free(req);
	free(text);
	return 0;
}
