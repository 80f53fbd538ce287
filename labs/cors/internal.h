/*
 * internal.h — what the files of lab-cors share and nobody else uses:
 *
 *   api.c      the API on origin B: /login, /api/<policy>/{public,me,notes/<id>}, the CORS headers
 *              of each policy, the access log
 *   pages.c    the pages on origins A (the app) and E (the evil page), generated from CASES
 *   browser.c  finding Chromium, one headless run (--dump-dom), reading the page's results
 *   client.c   the lab's own HTTP client (phase 4)
 *   cors.c     config, schema, the cases, the phases, the run and the judge
 */
#ifndef LAB_CORS_INTERNAL_H
#define LAB_CORS_INTERNAL_H

#include <stdbool.h>

#include "cors.h"

#define SCHEMA "lab_cors"
/* the victim's email: in her account (cors_setup), and what phase 2 looks for in what E read */
#define VICTIM_EMAIL "ada@example.com"
/* the session cookie */
#define COOKIE_NAME "sid"
/* the log keeps this many requests (a run makes about 40) */
#define LOG_MAX 4096

enum case_origin { FROM_APP, FROM_EVIL };

/* One case as the page runs it: fetch(B + path + "?case=<i>", options). */
struct case_def {
	enum case_origin from;
	const char *method; /* "GET" or "PUT" (a JSON body: a preflighted request) */
	const char *path;
	bool credentials; /* credentials: 'include' (the cookie goes along) */
	bool repeated;    /* run cfg->repeats times (the Max-Age cases) */
};

extern const struct case_def CASES[CORS_CASES];

/* ---- api.c ---- */

/* an Origin is scheme://host[:port]: a host name is at most 253 bytes, so a longer one is no origin
 * (and is never echoed back, not even by the reflecting policy) */
#define ORIGIN_MAX 300
/* the most CORS headers one answer carries (an allow-list preflight: five) */
#define CORS_HEADERS_MAX 8

struct evhttp_request;

/* A request to /api/<policy>/<resource>, as the route reads it before the method. */
struct cors_request {
	enum cors_policy policy;
	const char *origin;   /* the one Origin header, NULL when none; the request's own */
	bool is_note;         /* notes/<id>: resource is then the id's text */
	const char *resource; /* "public", "me" or the note's id */
};
/*
 * 0, or the status to answer with err: 404 no such policy (reflect only when vulnerable) or
 * resource, 400 Origin twice, with a control character or longer than ORIGIN_MAX.
 */
int cors_parse_request(struct evhttp_request *req, bool vulnerable, struct cors_request *out, char *err,
                       size_t errlen);

/* One response header; name and value are literals or the request's own header values. */
struct cors_header {
	const char *name, *value;
};
/*
 * The CORS headers policy p puts on an answer to req (preflight: to its OPTIONS), from its
 * Origin and Access-Control-Request-* headers; app_origin is the allow-list. Fills at most max
 * into out, returns how many.
 */
int cors_decide(struct evhttp_request *req, enum cors_policy p, const char *app_origin, bool preflight,
                struct cors_header *out, int max);

/* ---- browser.c ---- */

/*
 * Runs chromium once, headless, on url (the victim's first visit), in a private temporary
 * directory (profile, HOME) removed after; fills r->cases' page halves from the page it dumps.
 * -1 and err (with the end of its log) when it cannot start, does not finish within
 * cfg->browser_timeout_ms, or the page holds no results.
 */
int cors_browser_run(const struct cors_config *cfg, const char *url, struct cors_result *r, char *err,
                     size_t errlen);

/* ---- client.c ---- */

/*
 * One request to 127.0.0.1:port, Connection: close: status, the body's length and the
 * Access-Control-Allow-Origin header into row. -1 and err when no response came.
 */
int cors_client_get(int port, const char *target, const char *origin, const char *cookie,
                    struct cors_client_row *row, char *body, size_t bodylen, char *err, size_t errlen);

/* ---- cors.c ---- */

struct cors_env {
	struct cors_api *api;
	struct cors_pages *pages;
	char session[80]; /* the victim's cookie value, read from the API's sessions (phase 4) */
};

#endif
