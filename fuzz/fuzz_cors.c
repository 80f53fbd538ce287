/*
 * fuzz_cors.c — lab-cors's reading of /api/<policy>/<resource> and its Origin, and the CORS
 * headers each policy answers with.
 *
 * Feeds: an HTTP request (fuzz_request.h: "OPTIONS /api/allowlist/me", "Origin: ...",
 * "Access-Control-Request-Method: ...", "Access-Control-Request-Headers: ...") to
 * cors_parse_request, the function the /api/ route calls first (with and without the vulnerable
 * policy), then, when it was accepted, to cors_decide, the function that gives the route its CORS
 * headers, for the preflight and the actual answer.
 *
 * Asserts beyond "no crash":
 *   - a refusal always says why (err set), and is 400 or 404;
 *   - reflect is a policy only on the vulnerable API; an accepted Origin is one, short, no
 *     control characters;
 *   - the allow-lists: Vary: Origin always; Access-Control-Allow-Origin only for an Origin equal
 *     to the app's, byte for byte, and then that very origin; never "*"; an Origin not on the
 *     list gets no Allow-Origin, no Allow-Credentials, nothing but Vary;
 *   - no policy: no CORS header at all; star: "*", never an echo; reflect: the Origin echoed whole;
 *   - Allow-Credentials only beside an Allow-Origin; the preflight headers (Allow-Methods,
 *     Allow-Headers, Max-Age) only on a preflight; no header value holds CR or LF; the list fits.
 * links: lab_cors
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "fuzz_request.h"
#include "internal.h"

#define APP_ORIGIN "http://127.0.0.1:8081"

static const char *find(const struct cors_header *hs, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(hs[i].name, name) == 0)
			return hs[i].value;
	return NULL;
}

static void check_headers(const struct cors_request *r, const struct cors_header *hs, int n, bool preflight)
{
	check(n >= 0 && n <= CORS_HEADERS_MAX);
	for (int i = 0; i < n; i++) {
		check(hs[i].name && hs[i].value && !strpbrk(hs[i].value, "\r\n"));
		check(preflight || strcmp(hs[i].name, "Access-Control-Allow-Methods") != 0);
		check(preflight || strcmp(hs[i].name, "Access-Control-Allow-Headers") != 0);
		check(preflight || strcmp(hs[i].name, "Access-Control-Max-Age") != 0);
	}
	const char *allow = find(hs, n, "Access-Control-Allow-Origin");
	check(!find(hs, n, "Access-Control-Allow-Credentials") || allow);
	switch (r->policy) {
	case CORS_NONE:
		check(n == 0);
		break;
	case CORS_STAR:
		check(allow && strcmp(allow, "*") == 0);
		break;
	case CORS_REFLECT:
		check(allow ? r->origin && strcmp(allow, r->origin) == 0 : n == 0);
		check(!allow || strlen(allow) <= ORIGIN_MAX);
		break;
	case CORS_ALLOWLIST:
	case CORS_ALLOWLIST_0: {
		const char *vary = find(hs, n, "Vary");
		check(vary && strcmp(vary, "Origin") == 0);
		bool listed = r->origin && strcmp(r->origin, APP_ORIGIN) == 0;
		check(listed ? allow && strcmp(allow, APP_ORIGIN) == 0 : !allow && n == 1);
		break;
	}
	default:
		check(false);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evhttp_request *req = fuzz_request(data, size);
	if (!req)
		return 0;
	for (int vulnerable = 0; vulnerable <= 1; vulnerable++) {
		struct cors_request r;
		char err[256] = "";
		int code = cors_parse_request(req, vulnerable, &r, err, sizeof(err));
		check(code == 0 || ((code == 400 || code == 404) && err[0]));
		if (code)
			continue;
		check(r.policy >= 0 && r.policy < CORS_POLICIES && (vulnerable || r.policy != CORS_REFLECT));
		check(r.resource &&
		      (r.is_note || !strcmp(r.resource, "public") || !strcmp(r.resource, "me")));
		if (r.origin) {
			check(strlen(r.origin) <= ORIGIN_MAX);
			for (const char *p = r.origin; *p; p++)
				check((unsigned char)*p >= 0x20 && *p != 0x7f);
		}
		for (int preflight = 0; preflight <= 1; preflight++) {
			struct cors_header hs[CORS_HEADERS_MAX];
			int n = cors_decide(req, r.policy, APP_ORIGIN, preflight, hs, CORS_HEADERS_MAX);
			check_headers(&r, hs, n, preflight);
		}
	}
	evhttp_request_free(req);
	return 0;
}
