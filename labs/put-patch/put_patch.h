/*
 * put_patch.h — the experiment of lab-put-patch: "What's the difference between PUT and PATCH?"
 *
 * A real API (libevent, 127.0.0.1, PostgreSQL through common/pool.h) for one resource,
 * /v1/users/{id}: {"id", "name", "email", "bio"?, "tags": [...], "visits", "counters"?: {...}}.
 *   GET    200 with the user and its ETag (a strong validator: the first 16 hex digits of the
 *          SHA-256 of the stored row, computed by PostgreSQL)
 *   PUT    application/json, the whole user: replaces it. A required field missing (name, email,
 *          tags, visits) is 400 naming it; an optional one missing (bio, counters) is reset: that
 *          is what "replace" means.
 *   PATCH  application/merge-patch+json (RFC 7396), application/json-patch+json (RFC 6902), or
 *          application/vnd.backendlabs.increment+json ({"visits": 1}: a delta, the lab's own type,
 *          to show a PATCH that is not idempotent by design)
 * Every write is one transaction on one pooled connection: the row is read FOR UPDATE, If-Match
 * is checked against it, the change is applied in C (patch.h), the result is validated and
 * written, and the new ETag answered. So two PATCHes of disjoint fields never lose each other.
 * The answers (PP_STATUS_*): 415 with Accept-Patch for another media type, 400 for a malformed
 * body or patch, 409 for a failed JSON Patch test, 422 when the patched user would be invalid,
 * 412 when If-Match does not match, 428 when the API requires If-Match and it is missing, 404 for
 * an unknown user. A rejected request writes nothing.
 *
 * Phases: (1) the same request sent 1, 2 and 5 times; (2) the HTTP contract, each bad request and
 * the row's digest before and after; (3) two editors, blind PUT vs If-Match vs PATCH; (4) the race,
 * N clients x R rounds of read-modify-write, lost updates counted from PostgreSQL.
 * Storage: schema lab_put_patch (PostgreSQL only; no Redis).
 *
 * Errors: functions return -1 (or NULL) and write one line into err (errlen bytes).
 */
#ifndef LAB_PUT_PATCH_H
#define LAB_PUT_PATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lab.h"

#define PUT_PATCH_PHASES      4
#define PUT_PATCH_MAX_CLIENTS 16
#define PUT_PATCH_BODY_LEN    4096
/* phase 1 sends each request this many times, on fresh copies of the same user */
#define PUT_PATCH_SEND_COUNTS   3
#define PUT_PATCH_MAX_SENDS     5
#define PUT_PATCH_RETRY_ROWS    6
#define PUT_PATCH_CONTRACT_ROWS 12
#define PUT_PATCH_EDITOR_ROWS   3
#define PUT_PATCH_RACE_ROWS     3

/*
 * The API's answers, defined once: api.c answers them, the lab's contract phase expects them.
 * RFC 5789 section 2.2 sorts a PATCH that cannot be applied: malformed patch document 400,
 * unsupported patch document 415, unprocessable request 422, conflicting state 409.
 */
/* a media type the method does not take (415 carries Accept-Patch, RFC 5789 section 3.1) */
#define PP_STATUS_UNSUPPORTED 415
/* a body that is not JSON, a patch document that is wrong whatever it is applied to, a PUT
 * without a required field */
#define PP_STATUS_MALFORMED 400
/* a JSON Patch whose "test" fails, or whose path is not in the user as it is now: the patch is
 * right, the resource is not in the state the client believed; re-read and decide (409, not 422:
 * the same patch would apply to another state of the same resource) */
#define PP_STATUS_CONFLICT 409
/* a well-formed patch whose result is not a valid user (a required field removed, a wrong type) */
#define PP_STATUS_INVALID 422
/* If-Match names another version than the stored one (RFC 9110 section 13.1.1) */
#define PP_STATUS_PRECONDITION_FAILED 412
/* the API requires If-Match and the request has none (RFC 6585 section 3) */
#define PP_STATUS_PRECONDITION_REQUIRED 428

/* the PATCH media types, as Accept-Patch lists them */
#define PP_MERGE_PATCH "application/merge-patch+json"
#define PP_JSON_PATCH  "application/json-patch+json"
#define PP_INCREMENT   "application/vnd.backendlabs.increment+json"

struct put_patch_config {
	const char *pg_url;
	int pool_size;          /* the API's connections at most ... */
	int pool_min_idle;      /* ... and open from the start */
	int acquire_timeout_ms; /* a request waiting longer for one gets 503 */
	bool require_if_match;  /* PUT and PATCH without If-Match get 428 */
	int max_body;           /* bytes; a larger body is 413 */
	/* phase 4 */
	int race_clients; /* concurrent clients, each a thread with its own keep-alive connection */
	int race_rounds;  /* read-modify-write rounds per client and mode */
	/* the telling: called around each phase (zero = none), and with the progress of the long ones */
	struct lab_phase_hooks hooks;
	void (*progress_cb)(const char *what, double done, void *arg); /* NULL = none */
	void *progress_arg;
};

/* The defaults (quick: fewer rounds). */
void put_patch_config_default(struct put_patch_config *cfg, bool quick);

/* Creates schema lab_put_patch: the users table and the functions rep(), digest(), etag(). */
int put_patch_setup(const struct put_patch_config *cfg, char *err, size_t errlen);
/* Drops it. */
int put_patch_teardown(const struct put_patch_config *cfg, char *err, size_t errlen);

/* Inserts or overwrites user id with the JSON object user_json (every field of a user). */
int put_patch_seed(const struct put_patch_config *cfg, long long id, const char *user_json, char *err,
                   size_t errlen);
/* The stored row of user id, read by PostgreSQL: its SHA-256 (64 hex digits) and representation
 * (may be NULL). "" when there is no such user. */
int put_patch_row(const struct put_patch_config *cfg, long long id, char digest[65], char *rep, size_t replen,
                  char *err, size_t errlen);

/* ---- the API ---- */

struct put_patch_api;

/* Starts the API on 127.0.0.1:port (0 = a free one) in a thread of its own. */
struct put_patch_api *put_patch_api_start(const struct put_patch_config *cfg, int port, char *err,
                                          size_t errlen);
int put_patch_api_port(const struct put_patch_api *api);
/* Stops it (http_app_stop: the loop, then the pool, then the requests still in progress, each
 * answered 503, then the server) and frees it. NULL is a no-op. */
void put_patch_api_stop(struct put_patch_api *api);

/* ---- a blocking client on one keep-alive connection (its own event loop; one thread) ---- */

struct put_patch_client;

struct put_patch_request {
	const char *method;       /* "GET", "PUT", "PATCH" */
	const char *path;         /* "/v1/users/7" */
	const char *content_type; /* NULL: none */
	const char *if_match;     /* NULL: none */
	const char *body;         /* NULL: none */
};

struct put_patch_response {
	int status; /* 0: no response */
	char etag[64];
	char accept_patch[160];
	char body[PUT_PATCH_BODY_LEN];
	size_t body_len;
};

struct put_patch_client *put_patch_client_new(int port, char *err, size_t errlen);
/* -1 and err only when the request could not be made; no answer is status 0. */
int put_patch_call(struct put_patch_client *c, const struct put_patch_request *rq,
                   struct put_patch_response *rs, char *err, size_t errlen);
void put_patch_client_free(struct put_patch_client *c);

/* ---- the phases and their numbers ---- */

/* phase 1: how many times each request is sent ({1, 2, 5}) */
extern const int put_patch_send_counts[PUT_PATCH_SEND_COUNTS];

/* One request sent n times to a fresh copy of the user: the stored row after. */
struct put_patch_sends {
	int n;
	int status[PUT_PATCH_MAX_SENDS];
	char digest[65];
	long long tags, visits; /* the user's tag count and visits after the sends */
};

struct put_patch_retry_row {
	const char *what; /* "PATCH json add /tags/-" */
	bool watch_count; /* show tags or visits (false: the digest only) */
	const char *watch;
	struct put_patch_sends after[PUT_PATCH_SEND_COUNTS];
	long long base_tags, base_visits; /* the user before any send */
};

struct put_patch_retries {
	struct put_patch_retry_row rows[PUT_PATCH_RETRY_ROWS];
	int nrows;
};

/* Phase 2: one bad (or telling) request and what it did. */
struct put_patch_contract_row {
	const char *what;
	int want;         /* the status the API must answer */
	bool want_change; /* only a PUT that leaves out an optional field changes the row */
	int got;
	bool changed; /* the row's digest differs after the request */
	char body[160];
	char accept_patch[160];
};

struct put_patch_contract {
	struct put_patch_contract_row rows[PUT_PATCH_CONTRACT_ROWS];
	int nrows;
};

/* Phase 3: two editors, A changes the email and B the name of the same user. */
struct put_patch_editors_row {
	const char *what;
	char a[48], b[64];        /* what each got: "200", "412, re-read, 200" */
	int a_status, b_status;   /* the answer to each one's last write */
	char name[64], email[64]; /* the final row */
	bool a_kept, b_kept;      /* each change is in the final row */
};

struct put_patch_editors {
	struct put_patch_editors_row rows[PUT_PATCH_EDITOR_ROWS];
	int nrows;
	int no_if_match_status; /* a PUT without If-Match where the API requires it */
	char no_if_match_body[160];
	bool no_if_match_changed;
};

/* Phase 4: one mode of the race. */
struct put_patch_race_row {
	const char *what; /* "PUT, no If-Match" */
	int clients, rounds;
	uint64_t requests;  /* every request sent, reads included */
	uint64_t acked;     /* 2xx answers to writes: increments the clients believe were made */
	uint64_t stored;    /* the sum of the clients' counters in PostgreSQL after the race */
	uint64_t conflicts; /* 412 answers, each followed by a re-read and a retry */
	uint64_t other;     /* any other answer, or none */
	int64_t lost;       /* acked - stored */
	double elapsed_s;
};

struct put_patch_race {
	struct put_patch_race_row rows[PUT_PATCH_RACE_ROWS];
	int nrows;
};

struct put_patch_result {
	struct put_patch_retries retries;   /* phase 1 */
	struct put_patch_contract contract; /* phase 2 */
	struct put_patch_editors editors;   /* phase 3 */
	struct put_patch_race race;         /* phase 4 */
	bool lost_pg;                       /* set when the run failed because PostgreSQL went away */
};

/* Row indexes of phase 1 and 4, for the judge and the tests. */
enum { PP_RETRY_PUT, PP_RETRY_MERGE, PP_RETRY_REPLACE, PP_RETRY_ADD, PP_RETRY_INCREMENT, PP_RETRY_TEST };
enum { PP_EDIT_BLIND, PP_EDIT_IF_MATCH, PP_EDIT_PATCH };
enum { PP_RACE_BLIND, PP_RACE_IF_MATCH, PP_RACE_PATCH };

/* Phase 1: the same stored digest after every count of sends. */
bool put_patch_retry_idempotent(const struct put_patch_retry_row *r);

/*
 * Sets up, runs the four phases in order (cfg->hooks around each), tears down (also when a phase
 * failed) and fills *result. -1 and err when a phase or the setup failed; result->lost_pg then
 * says whether PostgreSQL went away.
 */
int put_patch_run(const struct put_patch_config *cfg, struct put_patch_result *result, char *err,
                  size_t errlen);

/* The claim and every threshold: fills v from the numbers of a run. */
void put_patch_judge(const struct put_patch_result *r, struct lab_verdict *v);

/* The phases as the run walks them (cfg: struct put_patch_config, result: struct put_patch_result). */
int put_patch_phase_retries(const void *cfg, void *result, char *err, size_t errlen);
int put_patch_phase_contract(const void *cfg, void *result, char *err, size_t errlen);
int put_patch_phase_editors(const void *cfg, void *result, char *err, size_t errlen);
int put_patch_phase_race(const void *cfg, void *result, char *err, size_t errlen);

#endif
