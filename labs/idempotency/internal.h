/*
 * internal.h — what the files of lab-idempotency share and nobody else uses:
 *
 *   api.c        the payment API: a request from parse to reply, the PostgreSQL route, start
 *                and the one stop order (http_app_stop with api_release)
 *   api_redis.c  the Redis connection of the API (redis_url_parse) and the Redis SET NX routes
 *   jobs.c       the reaper and the completer, on the API's loop and as blocking calls
 *   client.c     the blocking client, the load driver, the counts in PostgreSQL
 *   phases.c     the six phases
 *   idempotency.c  config, setup, teardown, the fingerprint, the phase list and its --predict
 *                  questions, the run and the judge
 */
#ifndef LAB_IDEMPOTENCY_INTERNAL_H
#define LAB_IDEMPOTENCY_INTERNAL_H

#include <event2/http.h>
#include <hiredis/async.h>
#include <stdbool.h>

#include "http.h"
#include "idempotency.h"
#include "pool.h"
#include "redis_async.h"

#define SCHEMA       "lab_idempotency"
#define REDIS_PREFIX "lab:idempotency:"
#define CHARGES_PATH "/v1/charges"
/* a client id or a customer: short printable names */
#define MAX_NAME 64
/* the mark the lab finds in pg_stat_activity to kill the request between charge and response */
#define PAUSE_MARK "lab_idempotency: between charge and response"
/*
 * This process's backends paused there ($1: pg_application_name(), "" when none was set): a lab
 * kills its own requests, never those of another run beside it.
 */
#define PAUSED_OF_MINE                                                                                       \
	"state = 'active' AND query LIKE '%" PAUSE_MARK "%' AND pid <> pg_backend_pid()"                     \
	" AND datname = current_database() AND ($1 = '' OR application_name = $1)"

/*
 * The charge as the API answers it, built by PostgreSQL from the charge's columns (or the values
 * that become them) in the statement that writes or reads them: one builder for every path (a new
 * key's single statement, the unkeyed charge, a resumed request, the completer), so a replay and
 * a resumed answer are the same bytes. The same compact JSON jansson's JSON_COMPACT writes:
 * to_json() quotes the two strings (customer and currency are printable ASCII, checked at parse).
 */
#define SQL_CHARGE_BODY(id, amount, currency, customer, created_at)                                          \
	"('{\"id\":\"ch_' || " id " || '\",\"object\":\"charge\",\"amount\":' || " amount                    \
	" || ',\"currency\":' || to_json(" currency "::text) || ',\"customer\":' || to_json(" customer       \
	"::text) || ',\"created\":' || extract(epoch FROM " created_at                                       \
	")::bigint || ',\"livemode\":false}')"

/* the same, for a charges row named c */
#define SQL_CHARGE_BODY_C                                                                                    \
	SQL_CHARGE_BODY("c.id", "c.amount_cents", "c.currency", "c.customer", "c.created_at")

enum route { ROUTE_PG, ROUTE_REDIS_KEEP, ROUTE_REDIS_RELEASE, ROUTE_COUNT };

extern const char *const idem_route_paths[ROUTE_COUNT];

struct charge_ctx;

struct route_ctx {
	struct idempotency_api *api;
	enum route route;
};

struct idempotency_api {
	struct idempotency_config cfg;
	struct http_app app; /* base, server, loop thread: stopped by http_app_stop only */
	struct pool *pool;
	struct redis_async redis; /* its ctx NULL when there is none or it was lost */
	struct event *reaper, *completer;
	bool reaping, completing;
	bool stopping; /* http_app_stop is releasing: a request that still arrives gets 503 */
	struct route_ctx routes[ROUTE_COUNT];
	struct charge_ctx *live; /* every request in progress, answered and freed at stop if still there */
};

/* One POST from parse to reply. */
struct charge_ctx {
	struct idempotency_api *api;
	struct evhttp_request *req;
	enum route route;
	struct pool_conn *conn;
	struct charge_ctx *prev, *next;
	char client[MAX_NAME + 1];
	char key[IDEMPOTENCY_MAX_KEY + 1];
	bool has_key;
	char fingerprint[65];
	char customer[MAX_NAME + 1];
	char currency[4];
	char amount[24];
	int delay_ms, pause_ms;
	char key_id[24];
	char expires[64];
	char *body; /* the response body, once built */
	int code;
	bool replayed;
	char rkey[sizeof(REDIS_PREFIX) + MAX_NAME + IDEMPOTENCY_MAX_KEY + 2];
	struct event *timer;
};

/* Stripe's limit on amounts: 8 digits of the smallest unit */
#define MAX_AMOUNT 99999999LL
/* the knobs are for a lab, not a denial of service: at most a minute */
#define MAX_KNOB_MS 60000

/*
 * api.c: everything a POST must get right before anything is written (Stripe: nothing is stored
 * when validation fails), read from ctx->req into ctx: the method, X-Client-Id, Idempotency-Key,
 * the knobs (when cfg.test_knobs), the body's three fields and, with a key, the fingerprint.
 * Returns the HTTP status to answer with and err, 0 when the request is good.
 */
int idempotency_parse_charge(struct charge_ctx *ctx, char *err, size_t errlen);

/* api.c, for the Redis routes */
void idem_ctx_release(struct charge_ctx *ctx);
void idem_ctx_fail(struct charge_ctx *ctx, int code, const char *msg);
void idem_send_stored(struct charge_ctx *ctx);
/* ctx->body from a column of a result (SQL_CHARGE_BODY); -1 when it is NULL or out of memory */
int idem_take_body(struct charge_ctx *ctx, PGresult *res, int col);
void idem_copy_value(char *out, size_t outlen, PGresult *res, int col);
extern const char IDEM_SQL_UNKEYED[];
extern const char IDEM_SQL_PAUSE[];
/* IDEM_SQL_PAUSE and IDEM_SQL_UNKEYED as statements prepared once per pooled connection (api.c) */
extern const struct pool_stmt IDEM_STMT_PAUSE, IDEM_STMT_UNKEYED;

/* api_redis.c */
int idem_redis_start(struct idempotency_api *api, char *err, size_t errlen);
/* The first step of a Redis route: SET NX on the key (the request is parsed). */
void idem_redis_charge(struct charge_ctx *ctx);
/* Frees the async context; its pending callbacks run now with no reply (their requests get 503). */
void idem_redis_free(struct idempotency_api *api);

/* jobs.c */
extern const char IDEM_SQL_STORE[];
int idem_jobs_start(struct idempotency_api *api, char *err, size_t errlen);
void idem_jobs_free(struct idempotency_api *api);

/*
 * idempotency.c, for the phases: a phase failed; which server, if any, went away? PostgreSQL is
 * asked for a connection and Redis (when the lab uses it) for a PING; the first that does not
 * answer is r->lost, and what it said replaces err. Returns -1 (the phase's return value).
 * Nothing is probed when r->lost is already set or the lab was interrupted.
 */
int idem_lost(const struct idempotency_config *cfg, struct idempotency_result *r, char *err, size_t errlen);

/*
 * idempotency.c: the fingerprint of a request whose body is already canonical (jansson's
 * JSON_SORT_KEYS | JSON_COMPACT): what idempotency_fingerprint hashes once it has canonicalised.
 */
int idem_fingerprint_canonical(const char *method, const char *path, const char *canon, char out[65],
                               char *err, size_t errlen);

/* client.c, for the phases */
/* idempotency_count on a connection of the caller's */
int idem_count_on(PGconn *conn, const char *client, int64_t *charges, int64_t *cents, char *err,
                  size_t errlen);
/* A client id of its own for every run, so that counts are this run's alone. */
void idem_run_client(char *out, size_t outlen, const char *what);
/*
 * keys keys, requests requests from clients clients at once through common/load.h; slow: one in
 * slow_every is answered after the client gave up, and every key is retried after the load until
 * answered. pause_ms: X-Lab-Pause-Ms on every request. Counts the charges after.
 */
struct idem_load_spec {
	const char *client;
	int keys, requests, clients;
	bool slow;
	int pause_ms;
};
int idem_load_keys(const struct idempotency_config *cfg, struct idempotency_api *api,
                   const struct idem_load_spec *spec, struct idempotency_load *r, char *err, size_t errlen);

#endif
