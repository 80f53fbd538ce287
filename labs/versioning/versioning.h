/*
 * versioning.h — the experiment of lab-versioning: "How do you version an API?"
 *
 * One resource, a user, with a real breaking change between v1 and v2, served from the same rows
 * of PostgreSQL (schema lab_versioning) three ways at once:
 *
 *   v1  {"id": 7, "name": "Ada Lovelace", "email": "...", "price": 19.99}            (dollars, float)
 *   v2  {"id": 7, "given_name": "Ada", "family_name": "Lovelace", "email": "...", "price_cents": 1999}
 *
 *   path    GET /v1/users/7, /v2/users/7           unknown version (/v3/users/7): 404
 *   header  GET /users/7 with Accept: application/vnd.backendlabs.v2+json, answered with that
 *           Content-Type; no version asked (no Accept, application/json, * / *): v1, the oldest
 *           still served, so a client that never asked keeps what it got on day one; an unknown
 *           one (vnd.backendlabs.v9+json): 406 with the media types it serves
 *   query   GET /users/7?version=2                 unknown or malformed (?version=3, =two): 400
 *           The query parameter wins over Accept when both are sent (it names the version
 *           explicitly); such an answer does not vary on Accept.
 *
 * Every error is one JSON object {"error": "..."} (406 adds "supported"). Every 200 carries
 * Cache-Control: public, max-age=<max_age_s>; answers chosen by Accept carry Vary: Accept unless
 * the API's config turns it off (the mistake phase 2 shows). Every v1 answer carries
 * Deprecation (RFC 9745: @<epoch>), Sunset (RFC 8594: an HTTP-date) and Link to its successor
 * (rel="successor-version"), and is counted by its client (User-Agent) in the API:
 * GET /stats/v1-calls. A non-breaking change, a field "locale" added to both versions, is
 * deployed mid-run (versioning_api_add_field).
 *
 * In front of the API: nginx with proxy_cache (versioning_cache_*), started by the lab as its own
 * child on 127.0.0.1 (common/child.h) with a config in a private temporary directory; it adds
 * X-Cache-Status so the client counts hits and misses, and writes an access log the lab reads. A
 * second API without Vary is mounted under /no-vary/ on the same cache.
 *
 * Phases: (1) both versions from the API directly, three approaches, the error bodies, the added
 * field; (2) through the cache: a mix of v1 and v2 clients on the same users, wrong answers and
 * hit ratio per approach, header versioning without and with Vary; (3) deprecation: the headers,
 * and the v1 callers counted at the edge (the cache's log) and at the API.
 *
 * Errors: functions return -1 (or NULL) and write one line into err (errlen bytes).
 */
#ifndef LAB_VERSIONING_H
#define LAB_VERSIONING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lab.h"

#define VERSIONING_PHASES  3
#define VERSIONING_BODY    1024
#define VERSIONING_CLIENTS 3
#define VERSIONING_ERRORS  4
#define VERSIONING_HDR     160

/* The media type of version v: application/vnd.backendlabs.v<v>+json */
#define VERSIONING_MEDIA_V1 "application/vnd.backendlabs.v1+json"
#define VERSIONING_MEDIA_V2 "application/vnd.backendlabs.v2+json"

enum versioning_approach { VERSIONING_PATH, VERSIONING_HEADER, VERSIONING_QUERY, VERSIONING_APPROACHES };

/* Phase 2's rows: each approach through the cache, header versioning twice. */
enum versioning_row { ROW_PATH, ROW_HEADER_NO_VARY, ROW_HEADER_VARY, ROW_QUERY, VERSIONING_ROWS };

struct versioning_config {
	const char *pg_url;
	const char *nginx;   /* the nginx program (versioning_find_nginx) */
	int pool_size;       /* the API's connections at most */
	int users;           /* users per block: each phase (and each row of phase 2) has its own */
	int direct_requests; /* phase 1: requests per approach and version (for the p50) */
	int cache_requests;  /* phase 2: requests per row */
	int client_requests; /* phase 3: requests per client */
	int max_age_s;       /* Cache-Control: public, max-age= */
	int sunset_days;     /* Sunset: this many days after the API started */
	bool vary_accept;    /* Vary: Accept on answers chosen by Accept (off: the mistake) */
	bool added_field;    /* "locale" in both versions from the start (--serve); the run deploys it */
	uint64_t seed;
	/* the telling: called around each phase (zero = none), and with the progress of the long ones */
	struct lab_phase_hooks hooks;
	void (*progress_cb)(const char *what, double done, void *arg); /* NULL = none */
	void *progress_arg;
};

/* The defaults (quick: fewer requests). */
void versioning_config_default(struct versioning_config *cfg, bool quick);

/*
 * Finds nginx: $LAB_NGINX, then PATH, then /usr/sbin, /usr/local/sbin, /usr/local/nginx/sbin.
 * -1 and err naming what was tried and how to install it.
 */
int versioning_find_nginx(char *out, size_t outlen, char *err, size_t errlen);

/* "1.22.1", from nginx -v; "?" when it does not say. */
void versioning_nginx_version(const char *nginx, char *out, size_t outlen);

/* How many users versioning_setup makes: ids 1..that (blocks of cfg->users, one per phase and row). */
int versioning_users_total(const struct versioning_config *cfg);

/* Creates schema lab_versioning with its users (blocks of cfg->users, enough for every phase). */
int versioning_setup(const struct versioning_config *cfg, char *err, size_t errlen);
int versioning_teardown(const struct versioning_config *cfg, char *err, size_t errlen);

/* ---- the API ---- */

struct versioning_api;

/* Starts the API on 127.0.0.1:port (0 = a free one) in a thread of its own. */
struct versioning_api *versioning_api_start(const struct versioning_config *cfg, int port, char *err,
                                            size_t errlen);
int versioning_api_port(const struct versioning_api *api);
/* Deploys the non-breaking change: "locale" appears in both versions from now on. */
void versioning_api_add_field(struct versioning_api *api);
/* Stops it (http_app_stop: the loop, then the pool and the requests in progress) and frees it. */
void versioning_api_stop(struct versioning_api *api);

/* ---- the cache: nginx with proxy_cache, a child of the lab ---- */

struct versioning_cache;

/*
 * Starts nginx on a free port of 127.0.0.1 in front of 127.0.0.1:api_port, and of
 * 127.0.0.1:no_vary_port under /no-vary/ when that is not 0, with an empty cache in a private
 * temporary directory. -1 and err (with the last lines of nginx's log) when it cannot start.
 */
struct versioning_cache *versioning_cache_start(const char *nginx, int api_port, int no_vary_port, char *err,
                                                size_t errlen);
int versioning_cache_port(const struct versioning_cache *c);
int versioning_cache_pid(const struct versioning_cache *c);
/* Its access log: "user-agent|request-uri|cache-status|deprecation" per line. */
const char *versioning_cache_log(const struct versioning_cache *c);
/* Stops nginx (SIGTERM, then SIGKILL) and removes its directory. NULL is a no-op. */
void versioning_cache_stop(struct versioning_cache *c);

/* ---- one request, as the lab's clients send it ---- */

struct versioning_response {
	int status; /* 0: no response */
	char content_type[VERSIONING_HDR];
	char vary[VERSIONING_HDR];
	char cache_control[VERSIONING_HDR];
	char deprecation[VERSIONING_HDR];
	char sunset[VERSIONING_HDR];
	char link[VERSIONING_HDR * 2];
	char cache_status[32]; /* X-Cache-Status from nginx: HIT, MISS, ...; "" directly */
	char body[VERSIONING_BODY];
	uint64_t latency_us;
};

/* ---- the numbers ---- */

/* Phase 1: one approach, one version, from the API directly. */
struct versioning_direct {
	int requests, correct;   /* 200 with the right Content-Type and the asked shape and values */
	int deprecation_right;   /* v1: Deprecation, Sunset and Link present; v2: none of them */
	uint64_t p50_us, p99_us; /* per request, keep-alive, on loopback */
	char target[160];        /* the URL of user 1's request */
	char content_type[VERSIONING_HDR];
};

/* Phase 1: a request for a version that does not exist. */
struct versioning_error {
	const char *what; /* "header: Accept vnd.backendlabs.v9+json" */
	struct versioning_response rs;
	bool json_error; /* the body is {"error": "<non-empty>", ...} with Content-Type application/json */
};

struct versioning_added {
	bool tolerant_before, tolerant_after; /* a v1 reader that ignores unknown fields parsed it */
	bool strict_before, strict_after;     /* a v1 reader that refuses unknown fields */
	bool v2_after;                        /* a v2 reader still parsed v2 */
	char body_after[VERSIONING_BODY];
};

struct versioning_cache_row {
	int requests, v1_requests, v2_requests;
	int hits, misses;
	int wrong;           /* a body of the other version (or not 200) */
	int wrong_v2_got_v1; /* asked v2, got v1 */
	int wrong_v1_got_v2;
	double hit_ratio;
	uint64_t p50_us;
	char example[400]; /* the first wrong answer, "asked v2 of /users/42, got {\"id\":42,\"name\":..." */
	char v1_target[160], v2_target[160]; /* the URLs a v1 and a v2 client asked for the same user */
	bool in_log;                         /* the cache's access log tells a v1 request from a v2 one */
};

struct versioning_client {
	const char *agent; /* User-Agent */
	int requests, v1_sent;
	int64_t v1_edge; /* v1 answers in the cache's access log (Deprecation set) */
	int64_t v1_api;  /* v1 answers the API counted (cache misses only) */
	int hits;
};

struct versioning_deprecation {
	struct versioning_client clients[VERSIONING_CLIENTS];
	int v1_answers, v1_with_headers; /* every v1 answer of the phase, and those with all three */
	int v2_answers, v2_with_any;     /* every v2 answer, and those with any of the three */
	char deprecation[VERSIONING_HDR], sunset[VERSIONING_HDR], link[VERSIONING_HDR * 2];
};

struct versioning_env; /* the API, the API without Vary and the cache, while the run lasts */

struct versioning_result {
	bool lost_pg; /* the run failed and PostgreSQL no longer answers (main.c: lab_lost) */
	int api_port, cache_port, nginx_pid;
	struct versioning_direct direct[VERSIONING_APPROACHES][2]; /* [approach][version - 1] */
	struct versioning_error errors[VERSIONING_ERRORS];
	struct versioning_added added;
	struct versioning_cache_row rows[VERSIONING_ROWS];
	struct versioning_deprecation deprecation;
	struct versioning_env *env; /* NULL outside versioning_run */
};

/* "path", "header", "query". */
const char *versioning_approach_name(enum versioning_approach a);
/* "path", "header, no Vary", "header + Vary: Accept", "query". */
const char *versioning_row_name(enum versioning_row r);

/*
 * Sets up, starts the API, the API without Vary and the cache, runs the three phases
 * (cfg->hooks around each), stops them and tears down (also when a phase failed).
 */
int versioning_run(const struct versioning_config *cfg, struct versioning_result *result, char *err,
                   size_t errlen);

/* The claim and every threshold: fills v from the numbers of a run. */
void versioning_judge(const struct versioning_result *r, struct lab_verdict *v);

#endif
