/*
 * fuzz_versioning.c — lab-versioning's version selection, from the path, ?version= and Accept.
 *
 * Feeds: an HTTP request (fuzz_request.h: "GET /users/7?version=2", "Accept: ...", "User-Agent:
 * ...") to versioning_parse_request, the function the users routes call once the method is
 * allowed, as each of them: /v1/users/{id}, /v2/users/{id} and /users/{id}.
 *
 * Asserts beyond "no crash":
 *   - the answer is 0, 400, 404 or 406, and a refusal always says why (err set);
 *   - an accepted request names a user id in 1..10^12 and version 1 or 2, with the approach the
 *     route implies (the path's own version on /v1 and /v2; ?version= when the query gives one,
 *     else Accept, on /users), Vary only when Accept chose, and the Content-Type of that version
 *     (a vnd.backendlabs type only when Accept asked for that very type);
 *   - the User-Agent counted is printable ASCII, at most AGENT_LEN bytes;
 *   - parsing the same request twice gives the same answer (Accept is tokenised on a copy).
 * links: lab_versioning
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz_check.h"
#include "fuzz_request.h"
#include "internal.h"

/* whether Accept (any of them, lower-cased) holds needle */
static bool accept_holds(struct evhttp_request *req, const char *needle)
{
	const char *a = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
	if (!a)
		return false;
	char low[FUZZ_LINE_MAX];
	size_t n = 0;
	for (; a[n] && n < sizeof(low) - 1; n++)
		low[n] = (char)tolower((unsigned char)a[n]);
	low[n] = '\0';
	return strstr(low, needle) != NULL;
}

static void check_ok(struct evhttp_request *req, int path_version, const struct vers_request *r)
{
	check(r->id >= 1 && r->id <= 1000000000000L);
	check(r->version == 1 || r->version == 2);
	check(strlen(r->agent) >= 1 && strlen(r->agent) <= AGENT_LEN);
	for (const char *p = r->agent; *p; p++)
		check((unsigned char)*p >= 0x20 && (unsigned char)*p <= 0x7e);
	check(r->vary == (r->approach == VERSIONING_HEADER));
	if (path_version) {
		check(r->approach == VERSIONING_PATH && r->version == path_version);
	} else {
		check(r->approach == VERSIONING_QUERY || r->approach == VERSIONING_HEADER);
		/* ?version= chose only when the query names it exactly once (evhttp_find_header, which
		 * http_query_long reads it with, matches names in any case) */
		check(r->approach == VERSIONING_HEADER || fuzz_query_count(req, "version") == 1);
	}
	if (strcmp(r->content_type, "application/json") != 0) {
		char want[64];
		snprintf(want, sizeof(want), "application/vnd.backendlabs.v%d+json", r->version);
		check(r->vary && strcmp(r->content_type, want) == 0 && accept_holds(req, want + 12));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evhttp_request *req = fuzz_request(data, size);
	if (!req)
		return 0;
	for (int pv = 0; pv <= 2; pv++) {
		struct vers_request r, again;
		char err[256] = "", err2[256] = "";
		int code = versioning_parse_request(req, pv, &r, err, sizeof(err));
		check(code == 0 || code == 400 || code == 404 || code == 406);
		check(code == 0 || err[0]);
		if (code == 0)
			check_ok(req, pv, &r);
		int code2 = versioning_parse_request(req, pv, &again, err2, sizeof(err2));
		check(code2 == code && memcmp(&r, &again, sizeof(r)) == 0 && strcmp(err, err2) == 0);
	}
	evhttp_request_free(req);
	return 0;
}
