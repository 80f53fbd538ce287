/*
 * cors.h — the experiment of lab-cors: "What is CORS and why does it exist?", in a real browser.
 *
 * CORS is enforced by browsers, so the lab drives one: Debian's headless Chromium, started once
 * per run as the lab's own child (common/child.h). Three origins, all on 127.0.0.1 (same site,
 * three ports, so three origins):
 *
 *   B  the API (cors_api_*): GET /login makes the victim's session (a row in PostgreSQL, schema
 *      lab_cors) and sets "sid" (HttpOnly, SameSite=Lax), then redirects to A's page. Under
 *      /api/<policy>/ the same three resources are served with five CORS policies:
 *        public          GET, no authentication
 *        me              GET, the session's private account (PostgreSQL), 401 without a session
 *        notes/<id>      PUT with a JSON body (a preflighted request), echoes what it got
 *      policies: none (no CORS header at all), star (Access-Control-Allow-Origin: * and
 *      -Credentials: true, the tempting one), reflect (any Origin echoed back with -Credentials:
 *      true and no Vary: the common mistake), allowlist (only A, -Credentials: true, Vary: Origin,
 *      preflights cached with Max-Age 600), allowlist-0 (the same with Max-Age 0).
 *      Every request is logged (method, path, Origin, whether a cookie came, status, bytes).
 *   A  the API's own front-end (cors_pages_*): its page runs the legitimate cases with fetch and
 *      writes each outcome into the page, then frames E's page and adds what it reports.
 *   E  an evil page on a third origin, open in the victim's browser: it reads /api/reflect/me and
 *      /api/allowlist/me with the victim's cookie and reports what it could read.
 *
 * The lab reads the page (chromium --dump-dom) and the API's log: each case is a row with what
 * the browser let the page read and what the server received.
 *
 * Phases: (1) the browser run, and A's cases: no CORS headers, * on a public GET, a preflight
 * refused and allowed, * with credentials, the allow-listed app; (2) the attack from E: bytes of
 * the victim's data stolen through the reflecting policy, none through the allow-list; (3)
 * Access-Control-Max-Age: repeated PUTs, the preflights counted in the log; (4) no browser: the
 * lab's own HTTP client reads everything the API sends, whatever the CORS headers say.
 *
 * The vulnerable policy (reflect) exists only inside the lab's run, and with --serve only behind
 * --vulnerable (main.c).
 *
 * Errors: functions return -1 (or NULL) and write one line into err (errlen bytes).
 */
#ifndef LAB_CORS_H
#define LAB_CORS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lab.h"

#define CORS_PHASES 4
#define CORS_BODY   512

enum cors_policy { CORS_NONE, CORS_STAR, CORS_REFLECT, CORS_ALLOWLIST, CORS_ALLOWLIST_0, CORS_POLICIES };

/* The browser's cases, in the order the pages run them. */
enum cors_case {
	CASE_NO_CORS,      /* A: GET /api/none/me with the cookie */
	CASE_STAR_PUBLIC,  /* A: GET /api/star/public */
	CASE_PREFLIGHT_NO, /* A: PUT JSON to /api/none/notes/1 */
	CASE_PREFLIGHT_OK, /* A: PUT JSON to /api/allowlist/notes/1 */
	CASE_STAR_CRED,    /* A: GET /api/star/me with the cookie */
	CASE_APP_ME,       /* A: GET /api/allowlist/me with the cookie */
	CASE_MAXAGE_0,     /* A: PUT ×repeats to /api/allowlist-0/notes/2 */
	CASE_MAXAGE_600,   /* A: PUT ×repeats to /api/allowlist/notes/2 */
	CASE_EVIL_REFLECT, /* E: GET /api/reflect/me with the victim's cookie */
	CASE_EVIL_ALLOW,   /* E: GET /api/allowlist/me with the victim's cookie */
	CORS_CASES
};

struct cors_config {
	const char *pg_url;
	const char *chromium; /* the browser program (cors_find_chromium) */
	int pool_size;        /* the API's connections at most */
	int repeats;          /* phase 3: PUTs per Max-Age */
	int browser_timeout_ms;
	uint64_t seed;
	struct lab_phase_hooks hooks;
	void (*progress_cb)(const char *what, double done, void *arg);
	void *progress_arg;
};

void cors_config_default(struct cors_config *cfg, bool quick);

/*
 * Finds Chromium: $LAB_CHROMIUM, then chromium and chromium-browser in PATH, /usr/bin,
 * /usr/lib/chromium. -1 and err naming what was tried and the install command.
 */
int cors_find_chromium(char *out, size_t outlen, char *err, size_t errlen);
/* "Chromium 120.0.6099.224", from --version; "?" when it does not say. */
void cors_chromium_version(const char *chromium, char *out, size_t outlen);

/* Creates schema lab_cors with the victim's account. */
int cors_setup(const struct cors_config *cfg, char *err, size_t errlen);
int cors_teardown(const struct cors_config *cfg, char *err, size_t errlen);

const char *cors_case_name(enum cors_case c);

/* ---- the API (origin B) and the pages (origins A and E) ---- */

struct cors_api;
struct cors_pages;

/* One request as the API logged it. */
struct cors_log_entry {
	char method[8];
	char target[128]; /* path and query */
	char origin[64];  /* "" when the request had none */
	bool cookie;      /* a session cookie came with it */
	int status;
	int bytes; /* of the body sent */
};

/*
 * Starts the API on 127.0.0.1:port (0 = a free one). app_origin is A ("http://127.0.0.1:PORT"),
 * the only origin on the allow-list and where /login redirects; vulnerable serves the reflect
 * policy (off: /api/reflect/ answers 404).
 */
struct cors_api *cors_api_start(const struct cors_config *cfg, int port, const char *app_origin,
                                bool vulnerable, char *err, size_t errlen);
int cors_api_port(const struct cors_api *api);
/* A copy of the log from entry from on (at most max into out); returns how many. */
int cors_api_log(struct cors_api *api, int from, struct cors_log_entry *out, int max);
int cors_api_log_count(struct cors_api *api);
void cors_api_stop(struct cors_api *api);

/*
 * A's page server and E's (two ports of 127.0.0.1). Their pages fetch from the API on the port
 * set by cors_pages_set_api (the API needs A's origin first, for its allow-list).
 */
struct cors_pages *cors_pages_start(int repeats, char *err, size_t errlen);
void cors_pages_set_api(struct cors_pages *p, int api_port);
int cors_pages_app_port(const struct cors_pages *p);
int cors_pages_evil_port(const struct cors_pages *p);
void cors_pages_stop(struct cors_pages *p);

/* ---- the numbers ---- */

struct cors_case_result {
	/* what the page could do, as the browser decided */
	int tries;            /* fetches the page ran (repeats for the Max-Age cases) */
	int readable;         /* of them, a response the page could read */
	int page_status;      /* the status the page saw (0: TypeError, nothing readable) */
	int bytes_read;       /* the body the page read (the last try), bytes */
	char error[48];       /* "TypeError: Failed to fetch" */
	char body[CORS_BODY]; /* what it read (cut) */
	/* what the API's log says arrived for this case */
	int preflights;    /* OPTIONS */
	int requests;      /* the GET or PUT itself */
	int with_cookie;   /* of the requests, with the session cookie */
	int server_status; /* of the last request (0: none arrived) */
	int bytes_sent;    /* body the API sent for the last request */
	char origin[64];   /* the Origin the browser sent */
};

/* Phase 4: one request from the lab's own HTTP client (no browser). */
struct cors_client_row {
	const char *what;
	char target[96];
	bool cookie;
	char origin[64];
	int status;
	int bytes;
	char acao[64]; /* Access-Control-Allow-Origin in the answer, "" when none */
	char vary[32]; /* Vary in the answer, "" when none */
};

#define CORS_CLIENT_ROWS 3

struct cors_env;

struct cors_result {
	bool lost_pg;
	int api_port, app_port, evil_port;
	char app_origin[48], evil_origin[48];
	int browser_pid;
	double browser_ms; /* the browser's start, every case, its exit */
	int browser_starts;
	int log_entries;
	char victim_email[64]; /* the secret the evil page must (not) read */
	struct cors_case_result cases[CORS_CASES];
	/* phase 2: what the evil page read of the victim's account, through each policy */
	int stolen_reflect, stolen_allowlist; /* bytes */
	bool secret_in_stolen;                /* the victim's email is in what it read */
	/* phase 3: OPTIONS in the log for cfg->repeats PUTs each */
	int preflights_max_age_0, preflights_max_age_600;
	struct cors_client_row client[CORS_CLIENT_ROWS];
	struct cors_env *env; /* NULL outside cors_run */
};

/* Sets up, starts the API, the pages and the browser's run, walks the phases, stops, tears down. */
int cors_run(const struct cors_config *cfg, struct cors_result *result, char *err, size_t errlen);

/* The claim and every threshold. */
void cors_judge(const struct cors_result *r, struct lab_verdict *v);

/* "GET /api/none/me +cookie": the case's request as the page sends it. Returns buf. */
const char *cors_case_request(enum cors_case c, char *buf, size_t len);

/* Whether the browser must let the page read case c (what the Fetch standard says). */
bool cors_case_expect_readable(enum cors_case c);

#endif
