/*
 * fuzz_idempotency.c — lab-idempotency's POST /v1/charges (and its two Redis twins) before
 * anything is written: the method, X-Client-Id, Idempotency-Key, the test knobs, the charge body
 * and the request's fingerprint.
 *
 * Feeds: an HTTP request (fuzz_request.h: "POST /v1/charges", "Idempotency-Key: ...", the JSON
 * body) to idempotency_parse_charge, the function the charges route calls first, on each of the
 * three routes, with the key required or not and the knobs on or off.
 *
 * Asserts beyond "no crash":
 *   - the answer is 0, 400 or 405, and a refusal always says why (err set);
 *   - what is accepted is what the route writes: POST; a client and a key of printable ASCII
 *     within their lengths (the key mandatory on the Redis routes and when required); amount
 *     1..MAX_AMOUNT in digits, currency three lower-case letters, customer printable 1..64; and
 *     each of these exactly what the body held (a string is never cut short at a \u0000);
 *   - the knobs are 0 unless turned on, and in 0..MAX_KNOB_MS when on;
 *   - with a key, the fingerprint is 64 hex digits, idempotency_fingerprint's of the same body
 *     (however its keys were ordered or spaced), and differs between routes (the path is in it).
 * links: lab_idempotency
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "fuzz_request.h"
#include "internal.h"

static bool printable(const char *s, size_t min, size_t max)
{
	size_t n = strlen(s);
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			return false;
	return n >= min && n <= max;
}

/* the body as the route read it (the harness's own copy), and the string field name of it */
static const char *field(json_t *doc, const char *name, size_t *len)
{
	json_t *v = json_object_get(doc, name);
	*len = json_string_length(v);
	return json_string_value(v);
}

static void check_accepted(const struct charge_ctx *c, enum route route, bool require, bool knobs,
                           struct evhttp_request *req)
{
	check(printable(c->client, 1, MAX_NAME));
	check(c->has_key || (!require && route == ROUTE_PG));
	check(!c->has_key || printable(c->key, 1, IDEMPOTENCY_MAX_KEY));
	char *end;
	long long amount = strtoll(c->amount, &end, 10);
	check(!*end && amount >= 1 && amount <= MAX_AMOUNT);
	check(strlen(c->currency) == 3 && strspn(c->currency, "abcdefghijklmnopqrstuvwxyz") == 3);
	check(printable(c->customer, 1, MAX_NAME));
	check(knobs || (c->delay_ms == 0 && c->pause_ms == 0));
	check(c->delay_ms >= 0 && c->delay_ms <= MAX_KNOB_MS && c->pause_ms >= 0 &&
	      c->pause_ms <= MAX_KNOB_MS);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *text = (const char *)evbuffer_pullup(in, -1);
	json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	check(doc != NULL);
	size_t n;
	const char *cur = field(doc, "currency", &n);
	check(cur && n == strlen(c->currency) && !strcmp(cur, c->currency));
	const char *cus = field(doc, "customer", &n);
	check(cus && n == strlen(c->customer) && !strcmp(cus, c->customer));
	json_decref(doc);
	if (!c->has_key)
		return;
	check(strlen(c->fingerprint) == 64 && strspn(c->fingerprint, "0123456789abcdef") == 64);
	if (memchr(text, '\0', len))
		return; /* idempotency_fingerprint takes a C string */
	char *body = strndup(text, len), fp[65], err[256];
	check(body &&
	      idempotency_fingerprint("POST", idem_route_paths[route], body, fp, err, sizeof(err)) == 0);
	check(strcmp(fp, c->fingerprint) == 0);
	free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evhttp_request *req = fuzz_request(data, size);
	if (!req)
		return 0;
	static struct idempotency_api api;
	api.cfg.max_body = 4096;
	char fps[ROUTE_COUNT][65] = {""};
	for (int v = 0; v < 4; v++) {
		api.cfg.require_key = v & 1;
		api.cfg.test_knobs = v & 2;
		for (int r = 0; r < ROUTE_COUNT; r++) {
			struct charge_ctx c = {.api = &api, .req = req, .route = (enum route)r};
			char err[256] = "";
			int code = idempotency_parse_charge(&c, err, sizeof(err));
			check(code == 0 || ((code == 400 || code == 405) && err[0]));
			check(code != 405 || evhttp_request_get_command(req) != EVHTTP_REQ_POST);
			if (code)
				continue;
			check(evhttp_request_get_command(req) == EVHTTP_REQ_POST);
			check_accepted(&c, (enum route)r, api.cfg.require_key, api.cfg.test_knobs, req);
			if (c.has_key)
				snprintf(fps[r], sizeof(fps[r]), "%s", c.fingerprint);
		}
	}
	for (int r = 1; r < ROUTE_COUNT; r++)
		check(!fps[r][0] || !fps[0][0] || strcmp(fps[r], fps[0]) != 0);
	evhttp_request_free(req);
	return 0;
}
