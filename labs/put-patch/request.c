/*
 * request.c — everything a request to /v1/users/{id} must get right before the database is
 * touched, as one plain function of what the handler read off evhttp (pp_parse_request): the
 * path's id, the method, the media type, If-Match's syntax, the body and the patch document.
 * No I/O, so its fuzz harness (fuzz/fuzz_put_patch_request.c) runs the very code the route runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "patch.h"

/* a delta of the increment type: a person's "add one", not a way to overflow the counter */
#define MAX_DELTA 1000000

/* The media type says which kind of write; 0 or the status with err. */
static int parse_type(const struct pp_request *rq, bool put, struct pp_parsed *out, char *err, size_t errlen)
{
	char mt[96];
	if (rq->content_type_bad) {
		snprintf(err, errlen, "%s", rq->content_type_bad);
		return PP_STATUS_MALFORMED;
	}
	if (put)
		out->kind = PP_KIND_PUT;
	if (pp_media_type(rq->content_type ? rq->content_type : "", mt, sizeof(mt)) < 0) {
		snprintf(err, errlen,
		         "Content-Type \"%.60s\" is not a media type (type/subtype, then ;parameters)",
		         rq->content_type);
		return PP_STATUS_MALFORMED;
	}
	if (put) {
		if (strcmp(mt, "application/json") == 0)
			return 0;
		snprintf(err, errlen, "PUT takes the whole user as application/json, not \"%.60s\"", mt);
		return PP_STATUS_UNSUPPORTED;
	}
	if (strcmp(mt, PP_MERGE_PATCH) == 0)
		out->kind = PP_KIND_MERGE;
	else if (strcmp(mt, PP_JSON_PATCH) == 0)
		out->kind = PP_KIND_JSON;
	else if (strcmp(mt, PP_INCREMENT) == 0)
		out->kind = PP_KIND_INCREMENT;
	else {
		snprintf(err, errlen, "PATCH takes %s, not \"%.60s\"", ACCEPT_PATCH, mt);
		return PP_STATUS_UNSUPPORTED;
	}
	return 0;
}

/* If-Match on any method; required (428) on writes when the API says so. */
static int parse_if_match(const struct pp_request *rq, bool write, bool required, struct pp_parsed *out,
                          char *err, size_t errlen)
{
	if (rq->if_match_bad) {
		snprintf(err, errlen, "%s", rq->if_match_bad);
		return PP_STATUS_MALFORMED;
	}
	if (!rq->if_match && write && required) {
		snprintf(err, errlen,
		         "this API requires If-Match on PUT and PATCH: GET the user and send its ETag");
		return PP_STATUS_PRECONDITION_REQUIRED;
	}
	if (rq->if_match && pp_if_match(rq->if_match, NULL) < 0) {
		snprintf(err, errlen, "If-Match must be * or a list of quoted entity tags (\"...\")");
		return PP_STATUS_MALFORMED;
	}
	if (rq->if_match && !(out->if_match = strdup(rq->if_match))) {
		snprintf(err, errlen, "out of memory");
		return 500;
	}
	return 0;
}

/* The body as the kind requires it. */
static int parse_body(const struct pp_request *rq, int max_body, struct pp_parsed *out, char *err,
                      size_t errlen)
{
	size_t len = rq->body_len;
	if (len == 0 || len > (size_t)max_body) {
		snprintf(err, errlen, "the body must hold 1..%d bytes, got %zu", max_body, len);
		return len ? 413 : PP_STATUS_MALFORMED;
	}
	if (!rq->body) {
		snprintf(err, errlen, "out of memory reading the body");
		return 500;
	}
	json_error_t jerr;
	out->body = json_loadb(rq->body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!out->body) {
		snprintf(err, errlen, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
		         jerr.text);
		return PP_STATUS_MALFORMED;
	}
	if (out->kind == PP_KIND_PUT && pp_user_check(out->body, out->idv, err, errlen) < 0)
		return PP_STATUS_MALFORMED;
	if (out->kind == PP_KIND_JSON && json_patch_check(out->body, err, errlen) != PATCH_OK)
		return PP_STATUS_MALFORMED;
	if (out->kind == PP_KIND_INCREMENT) {
		json_t *d = json_object_get(out->body, "visits");
		if (!json_is_object(out->body) || json_object_size(out->body) != 1 || !json_is_integer(d) ||
		    json_integer_value(d) < -MAX_DELTA || json_integer_value(d) > MAX_DELTA) {
			snprintf(err, errlen, "an increment is {\"visits\": n}, n a whole number in -%d..%d",
			         MAX_DELTA, MAX_DELTA);
			return PP_STATUS_MALFORMED;
		}
	}
	return 0;
}

/* "/v1/users/42": 42, digits only, no leading zero, at most 18 of them. -1 otherwise. */
static long long parse_id(const char *path, char *out, size_t outlen)
{
	if (strncmp(path, USERS_PREFIX, strlen(USERS_PREFIX)) != 0)
		return -1;
	const char *s = path + strlen(USERS_PREFIX);
	size_t n = strlen(s);
	if (n == 0 || n > 18 || (s[0] == '0' && n > 1) || strspn(s, "0123456789") != n)
		return -1;
	snprintf(out, outlen, "%s", s);
	return strtoll(s, NULL, 10);
}

static int parse(const struct pp_request *rq, int max_body, bool require_if_match, struct pp_parsed *out,
                 char *err, size_t errlen)
{
	enum evhttp_cmd_type m = rq->method;
	if ((out->idv = parse_id(rq->path, out->id, sizeof(out->id))) < 0) {
		snprintf(err, errlen, "no such resource: users are /v1/users/{id}, id a whole number");
		return 404;
	}
	if (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD) {
		out->kind = PP_KIND_GET; /* evhttp sends HEAD's answer without its body */
		return parse_if_match(rq, false, require_if_match, out, err, errlen);
	}
	if (m != EVHTTP_REQ_PUT && m != EVHTTP_REQ_PATCH) {
		snprintf(err, errlen, "a user takes %s", ALLOW);
		return 405;
	}
	int code = parse_type(rq, m == EVHTTP_REQ_PUT, out, err, errlen);
	if (!code)
		code = parse_if_match(rq, true, require_if_match, out, err, errlen);
	if (!code)
		code = parse_body(rq, max_body, out, err, errlen);
	return code;
}

int pp_parse_request(const struct pp_request *rq, int max_body, bool require_if_match, struct pp_parsed *out,
                     char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	int code = parse(rq, max_body, require_if_match, out, err, errlen);
	if (code)
		pp_parsed_free(out);
	return code;
}

int pp_next_user(enum pp_kind kind, const json_t *body, long long idv, const json_t *cur, json_t **out,
                 char *err, size_t errlen)
{
	enum patch_status s = PATCH_OK;
	*out = NULL;
	if (kind == PP_KIND_PUT) {
		*out = json_deep_copy(body);
	} else if (kind == PP_KIND_MERGE) {
		s = merge_patch_apply(cur, body, out, err, errlen);
	} else if (kind == PP_KIND_JSON) {
		s = json_patch_apply(cur, body, out, err, errlen);
	} else {
		json_int_t v = json_integer_value(json_object_get(cur, "visits")) +
		               json_integer_value(json_object_get(body, "visits"));
		*out = json_deep_copy(cur);
		if (*out)
			json_object_set_new(*out, "visits", json_integer(v));
	}
	if (s != PATCH_OK)
		return s == PATCH_MALFORMED  ? PP_STATUS_MALFORMED
		       : s == PATCH_CONFLICT ? PP_STATUS_CONFLICT
		                             : PP_STATUS_INVALID;
	if (!*out) {
		snprintf(err, errlen, "out of memory");
		return 500;
	}
	char why[400];
	if (pp_user_check(*out, idv, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "the patched user would be invalid: %s", why);
		json_decref(*out);
		*out = NULL;
		return PP_STATUS_INVALID;
	}
	return 0;
}

void pp_parsed_free(struct pp_parsed *p)
{
	json_decref(p->body);
	free(p->if_match);
	p->body = NULL;
	p->if_match = NULL;
}
