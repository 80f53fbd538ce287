/*
 * client.c — the lab's side of the wire: GETs on common/http_client.h, one connection kept alive
 * between requests (so a request's cost is the server's, not a TCP handshake's), and the readers
 * a v1 or a v2 client parses a user with. A tolerant reader takes the fields it knows and ignores
 * the others (what a client must do for "add a field" to need no new version); a strict one
 * refuses what it does not know.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "internal.h"

/* a response that takes longer than this is not coming */
#define CLIENT_TIMEOUT_MS 5000

void vclient_init(struct vclient *c, int port)
{
	c->http = NULL;
	c->port = port;
}

void vclient_close(struct vclient *c)
{
	http_client_free(c->http);
	c->http = NULL;
}

static void copy_header(const struct http_answer *a, const char *name, char *out, size_t outlen)
{
	const char *v = http_answer_header(a, name);
	snprintf(out, outlen, "%s", v ? v : "");
}

int vclient_get(struct vclient *c, const char *target, const char *accept, const char *agent,
                struct versioning_response *rs, char *err, size_t errlen)
{
	memset(rs, 0, sizeof(*rs));
	if (!c->http && !(c->http = http_client_new(c->port, CLIENT_TIMEOUT_MS, err, errlen)))
		return -1;
	struct http_header h[2] = {{"User-Agent", agent}, {"Accept", accept}};
	struct http_call call = {"GET", target, h, accept ? 2 : 1, NULL, 0};
	struct http_answer a;
	if (http_client_call(c->http, &call, &a, err, errlen) < 0)
		return -1;
	if (a.status == 0) {
		http_answer_free(&a);
		snprintf(err, errlen, "no response from 127.0.0.1:%d to GET %s", c->port, target);
		return -1;
	}
	rs->status = a.status;
	rs->latency_us = a.latency_us;
	copy_header(&a, "Content-Type", rs->content_type, sizeof(rs->content_type));
	copy_header(&a, "Vary", rs->vary, sizeof(rs->vary));
	copy_header(&a, "Cache-Control", rs->cache_control, sizeof(rs->cache_control));
	copy_header(&a, "Deprecation", rs->deprecation, sizeof(rs->deprecation));
	copy_header(&a, "Sunset", rs->sunset, sizeof(rs->sunset));
	copy_header(&a, "Link", rs->link, sizeof(rs->link));
	copy_header(&a, "X-Cache-Status", rs->cache_status, sizeof(rs->cache_status));
	snprintf(rs->body, sizeof(rs->body), "%s", a.body);
	http_answer_free(&a);
	return 0;
}

/* ---- the readers ---- */

static bool known_field(const char *name, int version)
{
	static const char *const v1[] = {"id", "name", "email", "price", NULL};
	static const char *const v2[] = {"id", "given_name", "family_name", "email", "price_cents", NULL};
	for (const char *const *f = version == 1 ? v1 : v2; *f; f++)
		if (strcmp(*f, name) == 0)
			return true;
	return false;
}

static bool fields_match(json_t *doc, int version, const struct user_row *row)
{
	if (json_integer_value(json_object_get(doc, "id")) != row->id ||
	    strcmp(json_string_value(json_object_get(doc, "email")), row->email) != 0)
		return false;
	if (version == 1) {
		char name[128];
		snprintf(name, sizeof(name), "%s %s", row->given, row->family);
		return strcmp(json_string_value(json_object_get(doc, "name")), name) == 0 &&
		       fabs(json_number_value(json_object_get(doc, "price")) - (double)row->cents / 100.0) <
		               1e-9;
	}
	return strcmp(json_string_value(json_object_get(doc, "given_name")), row->given) == 0 &&
	       strcmp(json_string_value(json_object_get(doc, "family_name")), row->family) == 0 &&
	       json_integer_value(json_object_get(doc, "price_cents")) == row->cents;
}

bool vers_reads(const char *body, int version, bool strict, const struct user_row *row)
{
	json_t *doc = json_loads(body, 0, NULL);
	if (!json_is_object(doc)) {
		json_decref(doc);
		return false;
	}
	bool ok =
	        json_is_integer(json_object_get(doc, "id")) && json_is_string(json_object_get(doc, "email"));
	if (version == 1)
		ok = ok && json_is_string(json_object_get(doc, "name")) &&
		     json_is_number(json_object_get(doc, "price"));
	else
		ok = ok && json_is_string(json_object_get(doc, "given_name")) &&
		     json_is_string(json_object_get(doc, "family_name")) &&
		     json_is_integer(json_object_get(doc, "price_cents"));
	const char *name;
	json_t *v;
	json_object_foreach(doc, name, v)
	{
		if (strict && !known_field(name, version))
			ok = false;
	}
	if (ok && row)
		ok = fields_match(doc, version, row);
	json_decref(doc);
	return ok;
}

void vers_target(enum versioning_approach a, int version, long id, char *out, size_t outlen,
                 const char **accept)
{
	*accept = NULL;
	if (a == VERSIONING_PATH)
		snprintf(out, outlen, "/v%d/users/%ld", version, id);
	else if (a == VERSIONING_QUERY)
		snprintf(out, outlen, "/users/%ld?version=%d", id, version);
	else {
		snprintf(out, outlen, "/users/%ld", id);
		*accept = version == 1 ? VERSIONING_MEDIA_V1 : VERSIONING_MEDIA_V2;
	}
}
