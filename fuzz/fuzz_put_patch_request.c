/*
 * fuzz_put_patch_request.c — what lab-put-patch's /v1/users/{id} route checks before the
 * database (labs/put-patch/request.c: pp_parse_request, the function the handler calls on what
 * it read off evhttp), then the write it would make (pp_next_user on a stored user).
 *
 * The input: its first byte picks the method (bits 0-2: GET HEAD PUT PATCH DELETE POST, PATCH
 * again), whether the API requires If-Match (bit 3), and whether Content-Type (bit 4) or
 * If-Match (bit 5) came twice; an empty If-Match line counts as sent when bit 6 is set. Then
 * lines: the path, Content-Type (empty: absent), If-Match (empty: absent), and the rest is the
 * body. Asserted:
 *   - accepted: the path is /v1/users/ and the id's digits, idv their value; GET and HEAD carry
 *     no body; PUT's body is a valid user for that id; a JSON Patch passed json_patch_check; an
 *     increment is {"visits": n}; If-Match kept as sent (a valid list) exactly when sent; never
 *     a write without If-Match when the API requires one;
 *   - refused: a status among 400 404 405 412 413 415 428 (never 500: nothing ran out), a
 *     message, and nothing kept (no body, no If-Match);
 *   - the write, for an accepted PUT or PATCH on two stored users (visits 0, and the most a
 *     count may be): 0 and a user valid for the id, or 400, 409 or 422 with a message and none.
 *
 * links: lab_put_patch
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "patch.h"
#include "fuzz_check.h"

#define MAX_BODY 2048

static char *next_line(char **p, char *end)
{
	char *line = *p, *nl = memchr(*p, '\n', (size_t)(end - *p));
	if (nl) {
		*nl = '\0';
		*p = nl + 1;
	} else {
		*p = end;
	}
	return line;
}

static void check_accepted(const struct pp_request *rq, bool required, const struct pp_parsed *p)
{
	char digits[32];
	snprintf(digits, sizeof(digits), "%lld", p->idv);
	check(p->idv >= 0 && !strcmp(digits, p->id) &&
	      !strncmp(rq->path, USERS_PREFIX, strlen(USERS_PREFIX)) &&
	      !strcmp(rq->path + strlen(USERS_PREFIX), p->id));
	check(!rq->if_match == !p->if_match);
	if (p->if_match)
		check(!strcmp(p->if_match, rq->if_match) && pp_if_match(p->if_match, NULL) >= 0);
	char err[512];
	switch (p->kind) {
	case PP_KIND_GET:
		check((rq->method == EVHTTP_REQ_GET || rq->method == EVHTTP_REQ_HEAD) && !p->body);
		return;
	case PP_KIND_PUT:
		check(rq->method == EVHTTP_REQ_PUT && pp_user_check(p->body, p->idv, err, sizeof(err)) == 0);
		break;
	case PP_KIND_JSON:
		check(json_patch_check(p->body, err, sizeof(err)) == PATCH_OK);
		/* fall through */
	case PP_KIND_MERGE:
		check(rq->method == EVHTTP_REQ_PATCH && p->body);
		break;
	case PP_KIND_INCREMENT:
		check(rq->method == EVHTTP_REQ_PATCH && json_is_integer(json_object_get(p->body, "visits")));
		break;
	}
	check(!required || p->if_match);
}

static void check_write(const struct pp_parsed *p)
{
	static const long long VISITS[] = {0, 1000000000000LL};
	for (size_t i = 0; i < 2; i++) {
		json_t *cur = json_pack("{s:I,s:s,s:s,s:n,s:[s],s:I,s:{s:i}}", "id", (json_int_t)p->idv,
		                        "name", "Ada", "email", "ada@example.com", "bio", "tags", "x",
		                        "visits", (json_int_t)VISITS[i], "counters", "likes", 1);
		check(cur != NULL);
		char err[512] = "", why[512];
		json_t *out = NULL;
		int code = pp_next_user(p->kind, p->body, p->idv, cur, &out, err, sizeof(err));
		if (code == 0)
			check(out && pp_user_check(out, p->idv, why, sizeof(why)) == 0);
		else
			check(!out && err[0] && (code == 400 || code == 409 || code == 422));
		json_decref(out);
		json_decref(cur);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum evhttp_cmd_type METHODS[] = {EVHTTP_REQ_GET,   EVHTTP_REQ_HEAD,   EVHTTP_REQ_PUT,
	                                               EVHTTP_REQ_PATCH, EVHTTP_REQ_DELETE, EVHTTP_REQ_POST,
	                                               EVHTTP_REQ_PATCH, EVHTTP_REQ_PATCH};
	if (size < 1)
		return 0;
	uint8_t flags = data[0];
	char *text = fuzz_text(data + 1, size - 1);
	if (!text)
		return 0;
	char *p = text, *end = text + size - 1;

	struct pp_request rq = {.method = METHODS[flags & 7]};
	bool required = flags & 8;
	rq.path = next_line(&p, end);
	rq.content_type = next_line(&p, end);
	rq.if_match = next_line(&p, end);
	if (!*rq.content_type)
		rq.content_type = NULL;
	if (!*rq.if_match && !(flags & 64))
		rq.if_match = NULL;
	rq.content_type_bad = flags & 16 ? "Content-Type appears more than once" : NULL;
	rq.if_match_bad = flags & 32 ? "If-Match appears more than once" : NULL;
	rq.body = p;
	rq.body_len = (size_t)(end - p);

	struct pp_parsed parsed;
	char err[512] = "";
	int code = pp_parse_request(&rq, MAX_BODY, required, &parsed, err, sizeof(err));
	if (code == 0) {
		check_accepted(&rq, required, &parsed);
		if (parsed.kind != PP_KIND_GET)
			check_write(&parsed);
	} else {
		check(err[0] != '\0' && !parsed.body && !parsed.if_match);
		check(code == 400 || code == 404 || code == 405 || code == 412 || code == 413 ||
		      code == 415 || code == 428);
	}
	pp_parsed_free(&parsed);
	free(text);
	return 0;
}
