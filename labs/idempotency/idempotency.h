/*
 * idempotency.h — the experiment of lab-idempotency: "What does idempotency mean in API design
 * and why does it matter?"
 *
 * A real payment API (libevent, 127.0.0.1, PostgreSQL through common/pool.h) with
 * POST /v1/charges {"amount": cents, "currency": "usd", "customer": "cus_..."} and an
 * Idempotency-Key header, following the IETF httpapi draft and Stripe:
 *   first request       executed; the response is stored with the key
 *   same key + payload  the stored response, byte for byte, with Idempotent-Replayed: true
 *   same key, new body  422          in flight      409
 *   no key              400 (unless require_key is off)
 *   two Idempotency-Key headers, a key over 255 characters or holding a control character,
 *   malformed JSON, a body over max_body, a bad field: 400, nothing written
 * Every keyed response carries Idempotency-Key-Expires (an HTTP-date: created + key_window_s),
 * which is how the API publishes its window; a reaper deletes keys past it.
 *
 * Storage (schema lab_idempotency): idempotency_keys, unique on (client, key), with the request's
 * fingerprint (SHA-256 of method, path and the canonical JSON body), its recovery point, locked_at
 * and the stored response; charges. Two transactions per keyed request, as in Brandur Leach's
 * rocket-rides-atomic: (1) the key and the charge together (recovery point charge_created),
 * (2) the stored response (recovery point finished). A request that dies between them leaves the
 * key locked at charge_created; a retry after lock_timeout_ms takes the lock over and resumes
 * from there, so the charge is never made twice, and the completer finishes the keys of clients
 * that never come back.
 *
 * Beside it, the Redis variant of phase 6 (POST /v1/charges-redis and /v1/charges-redis-release):
 * SET NX on lab:idempotency:<client>:<key>, then the charge in PostgreSQL; on a failed database
 * write the first keeps the Redis key, the second deletes it so the client may retry. It is the
 * naive guard on purpose: no fingerprint, and nothing ties the Redis key to the charge.
 *
 * Test knobs, honoured only when the config's test_knobs is set (the lab's own phases set it;
 * --serve and the defaults leave it off, and the API then ignores them as any unknown header):
 * X-Lab-Delay-Ms delays the reply after everything was committed (a response lost to the client's
 * timeout); X-Lab-Pause-Ms pauses between the charge and the stored response in a pg_sleep the
 * lab can kill (pg_terminate_backend).
 *
 * Errors: functions return -1 (or NULL) and write one line into err (errlen bytes).
 */
#ifndef LAB_IDEMPOTENCY_H
#define LAB_IDEMPOTENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lab.h"

#define IDEMPOTENCY_MAX_KEY      255
#define IDEMPOTENCY_BODY_LEN     1024
#define IDEMPOTENCY_MAX_ATTEMPTS 6
#define IDEMPOTENCY_GUARD_ROWS   6
#define IDEMPOTENCY_PHASES       6

struct idempotency_config {
	const char *pg_url;
	const char *redis_url;    /* NULL: the API serves no Redis routes */
	int pool_size;            /* the API's connections at most ... */
	int pool_min_idle;        /* ... and open from the start */
	int acquire_timeout_ms;   /* a request waiting longer for one gets 503 */
	bool require_key;         /* false: POST /v1/charges without a key is executed (phase 1) */
	int key_window_s;         /* keys are kept this long, then reaped (Stripe: 24 h) */
	int lock_timeout_ms;      /* a key locked longer is taken over by a retry (its request died) */
	int max_body;             /* bytes; a larger body is 400 */
	bool test_knobs;          /* honour X-Lab-Delay-Ms and X-Lab-Pause-Ms; off by default */
	int reap_interval_ms;     /* the API's reaper runs this often; 0 = never */
	int complete_interval_ms; /* the API's completer runs this often; 0 = never */
	/* the experiment */
	int client_timeout_ms; /* the retrying client gives up after this */
	int slow_ms;           /* phases 1-2: the server answers this late (past the client's timeout) */
	int pause_ms;          /* phases 5-6: the pause between charge and response that the lab kills */
	int duplicates;        /* phase 3: clients sending one key at the same instant */
	int bank_ms;           /* phase 3: a charge holds its key this long (the card network's answer) */
	int mixed_keys;        /* phase 3: keys ... */
	int mixed_requests;    /* ... requests over them ... */
	int mixed_clients;     /* ... from this many clients, one in slow_every answered too late */
	int slow_every;
	/* the telling: called around each phase (zero = none), and with the progress of the long ones */
	struct lab_phase_hooks hooks;
	void (*progress_cb)(const char *what, double done, void *arg); /* NULL = none */
	void *progress_arg;
};

/* The defaults (quick: fewer requests, shorter waits). */
void idempotency_config_default(struct idempotency_config *cfg, bool quick);

/* Creates schema lab_idempotency (keys and charges). */
int idempotency_setup(const struct idempotency_config *cfg, char *err, size_t errlen);
/* Drops it and deletes every Redis key under lab:idempotency: (when redis_url is set). */
int idempotency_teardown(const struct idempotency_config *cfg, char *err, size_t errlen);

/* ---- the API ---- */

struct idempotency_api;

/* Starts the API on 127.0.0.1:port (0 = a free one) in a thread of its own. */
struct idempotency_api *idempotency_api_start(const struct idempotency_config *cfg, int port, char *err,
                                              size_t errlen);
int idempotency_api_port(const struct idempotency_api *api);
/*
 * Stops it (http_app_stop: the loop first, then Redis, the pool, the timers and the requests
 * still in progress, each answered, then the server) and frees it. NULL is a no-op.
 */
void idempotency_api_stop(struct idempotency_api *api);

/* SHA-256 of "METHOD path\n" + json_dumps(body, JSON_SORT_KEYS | JSON_COMPACT), as 64 hex digits. */
int idempotency_fingerprint(const char *method, const char *path, const char *json_body, char out[65],
                            char *err, size_t errlen);

/* ---- a client that sends one request and waits (blocking, its own event loop) ---- */

struct idempotency_request {
	const char *path;   /* "/v1/charges" when NULL */
	const char *client; /* X-Client-Id; NULL: none */
	const char *key;    /* Idempotency-Key; NULL: none */
	const char *body;
	int delay_ms;   /* X-Lab-Delay-Ms, 0 = none */
	int pause_ms;   /* X-Lab-Pause-Ms, 0 = none */
	int timeout_ms; /* 0 = 5000 */
};

struct idempotency_response {
	int status; /* 0: no response (timed out, refused) */
	bool replayed;
	char expires[64]; /* Idempotency-Key-Expires, "" when absent */
	char body[IDEMPOTENCY_BODY_LEN];
	size_t body_len;
	uint64_t latency_us;
};

/* -1 and err only when the request could not be made at all; a timeout is status 0. */
int idempotency_call(int port, const struct idempotency_request *rq, struct idempotency_response *rs,
                     char *err, size_t errlen);

/* Charges of client in PostgreSQL: count(*) and sum(amount_cents). */
int idempotency_count(const struct idempotency_config *cfg, const char *client, int64_t *charges,
                      int64_t *cents, char *err, size_t errlen);
/* Keys stored for client. */
int idempotency_count_keys(const struct idempotency_config *cfg, const char *client, int64_t *keys, char *err,
                           size_t errlen);

/* The reaper: deletes keys older than key_window_s; *deleted may be NULL. */
int idempotency_reap(const struct idempotency_config *cfg, int64_t *deleted, char *err, size_t errlen);

/*
 * The completer: finishes the keys whose request died after the charge (recovery point
 * charge_created, locked longer than lock_timeout_ms or not at all): stores the response built
 * from the charge, so the client's next retry gets the replay. *completed may be NULL. The API
 * runs the same two statements on its loop every complete_interval_ms.
 */
int idempotency_complete(const struct idempotency_config *cfg, int64_t *completed, char *err, size_t errlen);

/* ---- the phases and their numbers ---- */

/* One request as the lab sent it and what came back. */
struct idempotency_attempt {
	char what[64]; /* "attempt 1 (server answers in 600 ms)" */
	struct idempotency_response rs;
};

/* Phases 1, 2, 4 and 5: a few attempts, then the charges PostgreSQL holds. */
struct idempotency_story {
	struct idempotency_attempt attempts[IDEMPOTENCY_MAX_ATTEMPTS];
	int nattempts;
	int64_t charges, cents;  /* counted in PostgreSQL after the last attempt */
	int64_t expected_cents;  /* what the customer meant to pay */
	char recovery_point[32]; /* phase 5: the key's recovery point right after the kill */
	int killed_pid;          /* phase 5: the backend the lab terminated */
	bool bodies_identical;   /* every 2xx body of the story is byte for byte the same */
};

struct idempotency_load {
	int keys, requests, clients;
	uint64_t fresh, replayed, conflict, other, no_response; /* 201, 201 replayed, 409, other, none */
	uint64_t settle_requests; /* phase 3b: the retries after the load, one per key until answered */
	int64_t charges, cents, expected_cents;
};

struct idempotency_duplicates {
	struct idempotency_load same_instant; /* duplicates clients, one key, all at once */
	struct idempotency_load mixed;        /* mixed_requests over mixed_keys, some answered too late */
};

/* Phase 6: one design under one fault. */
struct idempotency_guard_row {
	const char *design; /* "key in PostgreSQL, same txn", "Redis SET NX, key kept", ... */
	const char *fault;  /* "charge INSERT refused", "connection killed after the charge" */
	bool key_in_pg;     /* the design under test keeps the key in the charge's transaction */
	int statuses[IDEMPOTENCY_MAX_ATTEMPTS]; /* what each attempt got (0: no response) */
	int nattempts;
	int64_t charges; /* in PostgreSQL; 1 is right */
};

struct idempotency_guard {
	struct idempotency_guard_row rows[IDEMPOTENCY_GUARD_ROWS];
	int nrows;
	long long redis_keys_deleted; /* lab:idempotency:* removed at the end */
};

/* How a row of phase 6 ended: "once", "LOST: ...", "DOUBLED: ...", "charged, the answer never comes". */
const char *idempotency_guard_outcome(const struct idempotency_guard_row *r);

/* Which server a failed run lost (its error named it, or it no longer answers). */
enum idempotency_server { IDEMPOTENCY_SERVER_NONE, IDEMPOTENCY_SERVER_PG, IDEMPOTENCY_SERVER_REDIS };

struct idempotency_result {
	struct idempotency_story no_key;          /* phase 1 */
	struct idempotency_story with_key;        /* phase 2 */
	struct idempotency_duplicates duplicates; /* phase 3 */
	struct idempotency_story mismatch;        /* phase 4 */
	struct idempotency_story crash;           /* phase 5 */
	struct idempotency_guard guard;           /* phase 6 */
	enum idempotency_server lost;             /* set when the run failed because a server went away */
};

/* "PostgreSQL", "Redis", or NULL for IDEMPOTENCY_SERVER_NONE. */
const char *idempotency_server_name(enum idempotency_server s);

/*
 * Sets up, runs the six phases in order (cfg->hooks around each), tears down (also when a phase
 * failed) and fills *result. -1 and err when a phase or the setup failed; result->lost then says
 * whether a server went away (main.c ends with lab_lost naming it).
 */
int idempotency_run(const struct idempotency_config *cfg, struct idempotency_result *result, char *err,
                    size_t errlen);

/* The claim and every threshold: fills v from the numbers of a run. */
void idempotency_judge(const struct idempotency_result *r, struct lab_verdict *v);

/*
 * The phases as the run walks them (cfg: struct idempotency_config, result: struct
 * idempotency_result), exposed for the tests; each starts its own API on a free port.
 */
int idempotency_phase_no_key(const void *cfg, void *result, char *err, size_t errlen);
int idempotency_phase_with_key(const void *cfg, void *result, char *err, size_t errlen);
int idempotency_phase_duplicates(const void *cfg, void *result, char *err, size_t errlen);
int idempotency_phase_mismatch(const void *cfg, void *result, char *err, size_t errlen);
int idempotency_phase_crash(const void *cfg, void *result, char *err, size_t errlen);
int idempotency_phase_guard(const void *cfg, void *result, char *err, size_t errlen);

#endif
