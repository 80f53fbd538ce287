/*
 * fuzz_authz_request.c — lab-authz's request parsing before any token or database: the login
 * body, the new-order body and the id in an order's or a user's path, each through the function
 * its route calls (labs/authz/api.c): authz_parse_login (POST /v1/login), authz_parse_order
 * (POST /v1/orders) and authz_parse_id (GET /v1/orders/{id}, DELETE /v1/users/{id}, and the
 * /vuln twins).
 *
 * The input is a request as on the wire (fuzz/fuzz_request.h: "METHOD /path\n", headers, a blank
 * line, the body). Every request goes to all three: its path to authz_parse_id with both
 * prefixes, its body to both body parsers (they read the input buffer without draining it), so
 * one input reaches every branch whatever its route.
 *
 * Asserts beyond "no crash":
 *   - authz_parse_id: 0 or 404; accepted, the id is 1..10^18-1 and prints back as the very
 *     digits that follow the prefix (no sign, no leading zero, nothing after); a path that is the
 *     prefix and such digits is always accepted; refused, err is set and *id untouched;
 *   - authz_parse_login: 0 or 400; accepted, the body was at most AUTHZ_MAX_BODY bytes, the name
 *     is 1..64 bytes and the password at most 255, each the body's own string, whole (the same
 *     bytes and length as jansson reads them); refused, err is set and *out untouched;
 *   - authz_parse_order: the same for item (1..100 bytes, the body's own) and amount_cents
 *     (1..AUTHZ_MAX_AMOUNT, the body's own integer).
 * links: lab_authz
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_request.h"
#include "http.h"
#include "internal.h"
#include "fuzz_check.h"

/* twice the body limit: the "too large" refusal is reached too */
#define INPUT_MAX (2 * AUTHZ_MAX_BODY + 512)
#define SENTINEL  0x5a

/* whether the n bytes at p are all SENTINEL: what the parser was told not to touch */
static bool untouched(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i] != SENTINEL)
			return false;
	return true;
}

static void check_id(const char *path, const char *prefix)
{
	long long id;
	char err[128];
	memset(&id, SENTINEL, sizeof(id));
	err[0] = '\0';
	int rc = authz_parse_id(path, prefix, &id, err, sizeof(err));
	const char *at = strstr(path, prefix);
	const char *digits = at ? at + strlen(prefix) : NULL;
	size_t n = digits ? strlen(digits) : 0;
	bool canonical =
	        n >= 1 && n <= AUTHZ_MAX_ID_DIGITS && digits[0] != '0' && strspn(digits, "0123456789") == n;
	if (rc == 0) {
		check(id >= 1 && id <= 999999999999999999LL && digits);
		char back[32];
		snprintf(back, sizeof(back), "%lld", id);
		check(strcmp(back, digits) == 0);
		return;
	}
	check(rc == 404 && err[0] && untouched(&id, sizeof(id)));
	check(!(canonical && strncmp(path, prefix, strlen(prefix)) == 0));
}

/* the body as jansson reads it, with the flags http_read_json uses; NULL when it is not one */
static json_t *reference(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	if (len == 0 || len > AUTHZ_MAX_BODY)
		return NULL;
	const char *text = (const char *)evbuffer_pullup(in, -1);
	return json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
}

/* the body's own string field name is s, whole */
static bool same_string(json_t *body, const char *name, const char *s)
{
	json_t *v = json_object_get(body, name);
	return json_is_string(v) && json_string_length(v) == strlen(s) &&
	       memcmp(json_string_value(v), s, strlen(s)) == 0;
}

static void check_login(struct evhttp_request *req)
{
	struct authz_login_body l;
	char err[256];
	memset(&l, SENTINEL, sizeof(l));
	err[0] = '\0';
	int rc = authz_parse_login(req, &l, err, sizeof(err));
	if (rc != 0) {
		check(rc == 400 && err[0] && untouched(&l, sizeof(l)));
		return;
	}
	size_t name = strnlen(l.name, sizeof(l.name)), pw = strnlen(l.password, sizeof(l.password));
	check(name >= 1 && name <= AUTHZ_MAX_NAME && pw <= AUTHZ_MAX_PASSWORD);
	json_t *body = reference(req);
	check(json_is_object(body) && same_string(body, "name", l.name) &&
	      same_string(body, "password", l.password));
	json_decref(body);
}

static void check_order(struct evhttp_request *req)
{
	struct authz_order_body o;
	char err[256];
	memset(&o, SENTINEL, sizeof(o));
	err[0] = '\0';
	int rc = authz_parse_order(req, &o, err, sizeof(err));
	if (rc != 0) {
		check(rc == 400 && err[0] && untouched(&o, sizeof(o)));
		return;
	}
	size_t item = strnlen(o.item, sizeof(o.item));
	check(item >= 1 && item <= AUTHZ_MAX_ITEM);
	check(o.amount_cents >= 1 && o.amount_cents <= AUTHZ_MAX_AMOUNT);
	json_t *body = reference(req);
	json_t *amount = json_object_get(body, "amount_cents");
	check(json_is_object(body) && same_string(body, "item", o.item) && json_is_integer(amount) &&
	      (long long)json_integer_value(amount) == o.amount_cents);
	json_decref(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > INPUT_MAX)
		return 0;
	struct evhttp_request *req = fuzz_request(data, size);
	if (!req)
		return 0;
	const char *path = http_request_path(req);
	check_id(path, AUTHZ_ORDERS_PREFIX);
	check_id(path, AUTHZ_USERS_PREFIX);
	check_login(req);
	check_order(req);
	evhttp_request_free(req);
	return 0;
}
