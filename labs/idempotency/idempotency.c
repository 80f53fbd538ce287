/*
 * idempotency.c — the experiment of lab-idempotency (see idempotency.h for the API and the
 * phases). The telling is in main.c; nothing here prints.
 *
 * The API runs on one event loop in a thread of its own: its handlers borrow PostgreSQL
 * connections from common/pool.h (asynchronous libpq) and, on the Redis routes, talk to Redis with
 * hiredis' asynchronous API on the same loop, so no handler ever blocks the loop. The lab drives it
 * from its own thread with a blocking client (idempotency_call) or with common/load.h.
 */
#include "idempotency.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "pg.h"
#include "pool.h"
#include "redis.h"

#define SCHEMA       "lab_idempotency"
#define REDIS_PREFIX "lab:idempotency:"
#define CHARGES_PATH "/v1/charges"
/* Stripe's limit on amounts: 8 digits of the smallest unit */
#define MAX_AMOUNT 99999999LL
/* a client id or a customer: short printable names */
#define MAX_NAME 64
/* the knobs are for a lab, not a denial of service: at most a minute */
#define MAX_KNOB_MS 60000
/* the mark the lab finds in pg_stat_activity to kill the request between charge and response */
#define PAUSE_MARK "lab_idempotency: between charge and response"
/* a retry backs off this far past the lock timeout: the lock was taken a little after it was sent */
#define LOCK_MARGIN_MS 300

void idempotency_config_default(struct idempotency_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	cfg->redis_url = NULL;
	/* 8 connections: more than the 2 cores need, so duplicates race in the server, not the pool */
	cfg->pool_size = 8;
	/* two open at start: every phase starts its own API, and opening 8 would cost more than most
	 * phases; the loads of phase 3 open all 8 first, so duplicates race in the server */
	cfg->pool_min_idle = 2;
	cfg->acquire_timeout_ms = 2000;
	cfg->require_key = true;
	/* 24 h: Stripe's window; published on every keyed response */
	cfg->key_window_s = 24 * 3600;
	/* a request that holds its key this long is dead: hundreds of times a charge here, and well
	 * past the client's timeout, so a retry at once still finds the key in flight */
	cfg->lock_timeout_ms = 1000;
	/* 4 KiB: a charge is under 100 bytes */
	cfg->max_body = 4096;
	cfg->test_knobs = true;
	cfg->reap_interval_ms = 60000;
	/* the client waits 200 ms, the slow response comes two or three times too late */
	cfg->client_timeout_ms = 200;
	cfg->slow_ms = quick ? 400 : 600;
	/* long enough for the lab to find the paused backend and kill it */
	cfg->pause_ms = 5000;
	cfg->duplicates = quick ? 16 : 32;
	/* 100 ms at the card network: the window in which duplicates find the key in flight */
	cfg->bank_ms = 100;
	cfg->mixed_keys = quick ? 20 : 40;
	cfg->mixed_requests = quick ? 200 : 600;
	cfg->mixed_clients = 8;
	/* one request in ten is answered after the client gave up: it retries later, same key */
	cfg->slow_every = 10;
}

int idempotency_setup(const struct idempotency_config *cfg, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	if (pg_schema_create(conn, SCHEMA, err, errlen) < 0)
		goto out;
	if (pg_exec(conn,
	            "CREATE TABLE " SCHEMA ".idempotency_keys ("
	            " id bigserial PRIMARY KEY,"
	            " client text NOT NULL,"
	            " key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),"
	            " fingerprint text NOT NULL,"
	            " recovery_point text NOT NULL CHECK (recovery_point IN ('charge_created', 'finished')),"
	            " locked_at timestamptz,"
	            " response_code int,"
	            " response_body text,"
	            " created_at timestamptz NOT NULL DEFAULT now(),"
	            " UNIQUE (client, key));"
	            "CREATE INDEX ON " SCHEMA ".idempotency_keys (created_at);"
	            "CREATE TABLE " SCHEMA ".charges ("
	            " id bigserial PRIMARY KEY,"
	            " idempotency_key_id bigint REFERENCES " SCHEMA ".idempotency_keys ON DELETE SET NULL,"
	            " client text NOT NULL,"
	            " idempotency_key text,"
	            " customer text NOT NULL,"
	            " amount_cents bigint NOT NULL CHECK (amount_cents > 0),"
	            " currency text NOT NULL,"
	            " created_at timestamptz NOT NULL DEFAULT now());"
	            "CREATE INDEX ON " SCHEMA ".charges (idempotency_key_id);"
	            "CREATE INDEX ON " SCHEMA ".charges (client)",
	            err, errlen) < 0)
		goto out;
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

int idempotency_teardown(const struct idempotency_config *cfg, char *err, size_t errlen)
{
	int ret = pg_url_schema_drop(cfg->pg_url, SCHEMA, err, errlen);
	if (ret == 0 && cfg->redis_url) {
		redisContext *rc = redis_connect_url(cfg->redis_url, 2000, err, errlen);
		if (!rc)
			return -1;
		ret = redis_del_prefix(rc, REDIS_PREFIX, NULL, err, errlen);
		redisFree(rc);
	}
	return ret;
}

int idempotency_fingerprint(const char *method, const char *path, const char *json_body, char out[65],
                            char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *doc = json_loads(json_body, JSON_DECODE_ANY, &jerr);
	if (!doc) {
		snprintf(err, errlen, "invalid JSON: %s", jerr.text);
		return -1;
	}
	/* canonical: keys sorted, no whitespace, so {"a":1, "b":2} and {"b":2,"a":1} match */
	char *canon = json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(doc);
	if (!canon) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	size_t len = strlen(method) + strlen(path) + strlen(canon) + 3;
	char *text = malloc(len);
	if (!text) {
		free(canon);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int n = snprintf(text, len, "%s %s\n%s", method, path, canon);
	free(canon);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int ok = EVP_Digest(text, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
	free(text);
	if (!ok || mdlen != 32) {
		snprintf(err, errlen, "SHA-256 failed (libcrypto)");
		return -1;
	}
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* ---- the API ---- */

enum route { ROUTE_PG, ROUTE_REDIS_KEEP, ROUTE_REDIS_RELEASE, ROUTE_COUNT };

static const char *const route_paths[ROUTE_COUNT] = {CHARGES_PATH, "/v1/charges-redis",
                                                     "/v1/charges-redis-release"};

struct charge_ctx;

struct route_ctx {
	struct idempotency_api *api;
	enum route route;
};

struct idempotency_api {
	struct idempotency_config cfg;
	struct event_base *base;
	struct pool *pool;
	struct http_server *http;
	struct http_thread *thread;
	redisAsyncContext *redis; /* NULL when there is none or it failed (its callbacks free it) */
	char redis_error[128];
	struct event *reaper;
	bool reaping;
	struct route_ctx routes[ROUTE_COUNT];
	struct charge_ctx *live; /* every request in progress, freed at stop if still there */
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
	char charge_id[24];
	char created[24];
	char expires[64];
	char *body; /* the response body, once built */
	int code;
	bool replayed;
	char rkey[sizeof(REDIS_PREFIX) + MAX_NAME + IDEMPOTENCY_MAX_KEY + 2];
	struct event *timer;
};

static struct charge_ctx *ctx_new(struct idempotency_api *api, struct evhttp_request *req, enum route route)
{
	struct charge_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return NULL;
	ctx->api = api;
	ctx->req = req;
	ctx->route = route;
	ctx->next = api->live;
	if (api->live)
		api->live->prev = ctx;
	api->live = ctx;
	return ctx;
}

static void ctx_free(struct charge_ctx *ctx)
{
	struct idempotency_api *api = ctx->api;
	if (ctx->prev)
		ctx->prev->next = ctx->next;
	else
		api->live = ctx->next;
	if (ctx->next)
		ctx->next->prev = ctx->prev;
	if (ctx->timer)
		event_free(ctx->timer);
	free(ctx->body);
	free(ctx);
}

/* Gives the connection back (a broken one is replaced by the pool). */
static void ctx_release(struct charge_ctx *ctx)
{
	if (ctx->conn) {
		pool_release(ctx->conn);
		ctx->conn = NULL;
	}
}

/* An error reply ends the request: nothing more happens for it. */
static void ctx_fail(struct charge_ctx *ctx, int code, const char *msg)
{
	ctx_release(ctx);
	if (code == 409 || code == 503)
		evhttp_add_header(evhttp_request_get_output_headers(ctx->req), "Retry-After", "1");
	http_reply_error(ctx->req, code, "%s", msg);
	ctx_free(ctx);
}

static void send_now(struct charge_ctx *ctx)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(ctx->req);
	evhttp_add_header(h, "Content-Type", "application/json");
	if (ctx->expires[0])
		evhttp_add_header(h, "Idempotency-Key-Expires", ctx->expires);
	if (ctx->replayed)
		evhttp_add_header(h, "Idempotent-Replayed", "true");
	struct evbuffer *out = evhttp_request_get_output_buffer(ctx->req);
	evbuffer_add(out, ctx->body, strlen(ctx->body));
	evhttp_send_reply(ctx->req, ctx->code, NULL, out);
	ctx_free(ctx);
}

static void delayed_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	send_now(arg);
}

/*
 * Replies with the stored (or just stored) response: ctx->code and ctx->body. The test knob
 * X-Lab-Delay-Ms holds it back after everything was committed: the response a flaky network
 * loses.
 */
static void send_stored(struct charge_ctx *ctx)
{
	ctx_release(ctx);
	if (ctx->delay_ms > 0) {
		ctx->timer = evtimer_new(ctx->api->base, delayed_cb, ctx);
		struct timeval tv = {ctx->delay_ms / 1000, (ctx->delay_ms % 1000) * 1000};
		if (ctx->timer && evtimer_add(ctx->timer, &tv) == 0)
			return;
	}
	send_now(ctx);
}

/* The charge as the API answers it; built from the charges row, so a resumed request builds the same. */
/* The charge as the API answers it, from the charges row: a resumed request builds the same bytes. */
static char *charge_body(const char *charge_id, const char *amount, const char *currency,
                         const char *customer, const char *created)
{
	json_t *doc = json_pack("{s:s+,s:s,s:I,s:s,s:s,s:I,s:b}", "id", "ch_", charge_id, "object", "charge",
	                        "amount", (json_int_t)atoll(amount), "currency", currency, "customer",
	                        customer, "created", (json_int_t)atoll(created), "livemode", 0);
	if (!doc)
		return NULL;
	char *body = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return body;
}

static int build_body(struct charge_ctx *ctx)
{
	free(ctx->body);
	ctx->body = charge_body(ctx->charge_id, ctx->amount, ctx->currency, ctx->customer, ctx->created);
	return ctx->body ? 0 : -1;
}

static bool knob(struct evhttp_request *req, const char *name, bool allowed, int *out, char *err,
                 size_t errlen)
{
	const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), name);
	if (!v)
		return true;
	if (!allowed) {
		snprintf(err, errlen, "%s is a test knob, and test knobs are off on this API", name);
		return false;
	}
	char *end = NULL;
	long ms = strtol(v, &end, 10);
	if (!*v || *end || ms < 0 || ms > MAX_KNOB_MS) {
		snprintf(err, errlen, "%s must be a whole number of ms in 0..%d", name, MAX_KNOB_MS);
		return false;
	}
	*out = (int)ms;
	return true;
}

static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

/*
 * Everything a request must get right before anything is written (Stripe: nothing is stored when
 * validation fails). Returns the HTTP status to answer with, 0 when the request is good.
 */
static int parse_request(struct charge_ctx *ctx, char *err, size_t errlen)
{
	struct evhttp_request *req = ctx->req;
	const struct idempotency_config *cfg = &ctx->api->cfg;
	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		snprintf(err, errlen, "only POST here");
		return 405;
	}
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *client = evhttp_find_header(in, "X-Client-Id");
	if (!client)
		client = "anonymous";
	if (!*client || strlen(client) > MAX_NAME || !printable(client)) {
		snprintf(err, errlen, "X-Client-Id must be 1..%d printable characters", MAX_NAME);
		return 400;
	}
	snprintf(ctx->client, sizeof(ctx->client), "%s", client);
	const char *key = evhttp_find_header(in, "Idempotency-Key");
	if (key) {
		/* the draft sends it as a Structured Field string ("..."); Stripe as a bare value */
		size_t len = strlen(key);
		if (len >= 2 && key[0] == '"' && key[len - 1] == '"') {
			key++;
			len -= 2;
		}
		if (len == 0 || len > IDEMPOTENCY_MAX_KEY) {
			snprintf(err, errlen, "Idempotency-Key must be 1..%d characters, got %zu",
			         IDEMPOTENCY_MAX_KEY, len);
			return 400;
		}
		memcpy(ctx->key, key, len);
		ctx->key[len] = '\0';
		if (!printable(ctx->key)) {
			snprintf(err, errlen, "Idempotency-Key must be printable ASCII");
			return 400;
		}
		ctx->has_key = true;
	} else if (cfg->require_key || ctx->route != ROUTE_PG) {
		snprintf(err, errlen, "Idempotency-Key header is required on POST %s",
		         route_paths[ctx->route]);
		return 400;
	}
	if (!knob(req, "X-Lab-Delay-Ms", cfg->test_knobs, &ctx->delay_ms, err, errlen) ||
	    !knob(req, "X-Lab-Pause-Ms", cfg->test_knobs, &ctx->pause_ms, err, errlen))
		return 400;
	json_t *doc = http_read_json(req, (size_t)cfg->max_body, err, errlen);
	if (!doc)
		return 400;
	int code = 400;
	const char *name;
	json_t *v;
	json_object_foreach(doc, name, v)
	{
		if (strcmp(name, "amount") && strcmp(name, "currency") && strcmp(name, "customer")) {
			snprintf(err, errlen, "unknown field \"%.64s\" (amount, currency, customer)", name);
			goto out;
		}
	}
	json_t *amount = json_object_get(doc, "amount");
	json_t *currency = json_object_get(doc, "currency");
	json_t *customer = json_object_get(doc, "customer");
	if (!json_is_integer(amount) || json_integer_value(amount) < 1 ||
	    json_integer_value(amount) > MAX_AMOUNT) {
		snprintf(err, errlen, "amount must be a whole number of cents in 1..%lld", MAX_AMOUNT);
		goto out;
	}
	const char *cur = json_string_value(currency);
	if (!cur || strlen(cur) != 3 || !islower((unsigned char)cur[0]) || !islower((unsigned char)cur[1]) ||
	    !islower((unsigned char)cur[2])) {
		snprintf(err, errlen, "currency must be a three-letter ISO code in lower case (\"usd\")");
		goto out;
	}
	const char *cus = json_string_value(customer);
	if (!cus || !*cus || strlen(cus) > MAX_NAME || !printable(cus)) {
		snprintf(err, errlen, "customer must be 1..%d printable characters", MAX_NAME);
		goto out;
	}
	snprintf(ctx->amount, sizeof(ctx->amount), "%lld", (long long)json_integer_value(amount));
	snprintf(ctx->currency, sizeof(ctx->currency), "%s", cur);
	snprintf(ctx->customer, sizeof(ctx->customer), "%s", cus);
	if (ctx->has_key) {
		char *canon = json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT);
		if (!canon || idempotency_fingerprint("POST", route_paths[ctx->route], canon,
		                                      ctx->fingerprint, err, errlen) < 0) {
			free(canon);
			code = 500;
			goto out;
		}
		free(canon);
	}
	code = 0;
out:
	json_decref(doc);
	return code;
}

/* ---- the PostgreSQL route: key and charge in one transaction, the response in the next ---- */

/* expires: created_at + the window, as an HTTP-date */
#define SQL_EXPIRES(created)                                                                                 \
	"to_char((" created " + make_interval(secs => $7::float8)) AT TIME ZONE 'UTC', "                     \
	"'Dy, DD Mon YYYY HH24:MI:SS \"GMT\"')"

/* A new key: the key row (locked, at charge_created) and the charge, one statement, one transaction. */
static const char SQL_FRESH[] =
        "WITH k AS ("
        " INSERT INTO " SCHEMA ".idempotency_keys (client, key, fingerprint, recovery_point, locked_at)"
        " VALUES ($1, $2, $3, 'charge_created', now())"
        " ON CONFLICT (client, key) DO NOTHING RETURNING id, created_at),"
        " c AS ("
        " INSERT INTO " SCHEMA
        ".charges (idempotency_key_id, client, idempotency_key, customer, amount_cents, currency)"
        " SELECT id, $1, $2, $4, $5::bigint, $6 FROM k RETURNING id, extract(epoch FROM created_at)::bigint "
        "AS created)"
        " SELECT k.id, c.id, c.created, " SQL_EXPIRES("k.created_at") " FROM k, c";

/*
 * The key exists: lock its row, and take the request's lock when the fingerprint matches, it is
 * not finished, and nobody holds it (or its holder died: locked longer than the lock timeout).
 * The charge comes along, for a request that resumes from charge_created.
 */
static const char SQL_EXISTING[] =
        "WITH k AS ("
        " SELECT id, fingerprint, recovery_point, locked_at, response_code, response_body, created_at"
        " FROM " SCHEMA ".idempotency_keys WHERE client = $1 AND key = $2 FOR UPDATE),"
        " took AS ("
        " UPDATE " SCHEMA ".idempotency_keys i SET locked_at = now() FROM k"
        " WHERE i.id = k.id AND k.fingerprint = $3 AND k.recovery_point <> 'finished'"
        " AND (k.locked_at IS NULL OR k.locked_at < now() - make_interval(secs => $4::float8 / 1000))"
        " RETURNING i.id)"
        " SELECT k.id, k.fingerprint = $3, k.recovery_point, EXISTS (SELECT 1 FROM took), k.response_code,"
        " k.response_body, to_char((k.created_at + make_interval(secs => $5::float8)) AT TIME ZONE 'UTC',"
        " 'Dy, DD Mon YYYY HH24:MI:SS \"GMT\"'), c.id, extract(epoch FROM c.created_at)::bigint, "
        "c.amount_cents,"
        " c.currency, c.customer"
        " FROM k LEFT JOIN " SCHEMA ".charges c ON c.idempotency_key_id = k.id";

static const char SQL_STORE[] = "UPDATE " SCHEMA ".idempotency_keys SET recovery_point = 'finished',"
                                " locked_at = NULL, response_code = $2, response_body = $3"
                                " WHERE id = $1 AND recovery_point = 'charge_created'";

static const char SQL_UNLOCK[] = "UPDATE " SCHEMA ".idempotency_keys SET locked_at = NULL WHERE id = $1";

static const char SQL_PAUSE[] = "SELECT pg_sleep($1::float8 / 1000) /* " PAUSE_MARK " */";

static const char SQL_UNKEYED[] =
        "INSERT INTO " SCHEMA ".charges (client, idempotency_key, customer, amount_cents, currency)"
        " VALUES ($1, $2, $3, $4::bigint, $5) RETURNING id, extract(epoch FROM created_at)::bigint";

static void store_response(struct charge_ctx *ctx);

static void unlock_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	(void)res;
	(void)err;
	/* best effort: when it fails, the lock times out instead */
	ctx_fail(arg, 500,
	         "the charge was made but its response could not be stored; retry with the same key");
}

/*
 * The request failed after its key was locked. On a live connection, unlock the key so that a
 * retry may resume at once; on a dead one (killed, crashed) the lock times out instead.
 */
static void fail_locked(struct charge_ctx *ctx, PGresult *res, const char *err)
{
	char msg[256];
	pg_message_line(msg, sizeof(msg), res ? PQresultErrorMessage(res) : err);
	if (res && ctx->conn && PQstatus(pool_conn_pg(ctx->conn)) == CONNECTION_OK) {
		const char *p[] = {ctx->key_id};
		if (pool_query(ctx->conn, SQL_UNLOCK, 1, p, unlock_cb, ctx) == 0)
			return;
	}
	ctx_fail(ctx, 500,
	         "the charge was made but its response could not be stored; retry with the same key");
}

static void store_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct charge_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
		fail_locked(ctx, res, err);
		return;
	}
	send_stored(ctx);
}

static void store_response(struct charge_ctx *ctx)
{
	if (build_body(ctx) < 0) {
		fail_locked(ctx, NULL, "out of memory");
		return;
	}
	ctx->code = 201;
	const char *p[] = {ctx->key_id, "201", ctx->body};
	if (pool_query(ctx->conn, SQL_STORE, 3, p, store_cb, ctx) < 0)
		fail_locked(ctx, NULL, "could not send the query");
}

static void pause_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct charge_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		fail_locked(ctx, res, err);
		return;
	}
	store_response(ctx);
}

/* The charge is committed (recovery point charge_created): on to the response. */
static void after_charge(struct charge_ctx *ctx)
{
	if (ctx->pause_ms > 0) {
		char ms[24];
		snprintf(ms, sizeof(ms), "%d", ctx->pause_ms);
		const char *p[] = {ms};
		if (pool_query(ctx->conn, SQL_PAUSE, 1, p, pause_cb, ctx) < 0)
			fail_locked(ctx, NULL, "could not send the query");
		return;
	}
	store_response(ctx);
}

static void copy_value(char *out, size_t outlen, PGresult *res, int col)
{
	snprintf(out, outlen, "%s", PQgetisnull(res, 0, col) ? "" : PQgetvalue(res, 0, col));
}

static void existing_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct charge_ctx *ctx = arg;
	char msg[256];
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		pg_message_line(msg, sizeof(msg), res ? PQresultErrorMessage(res) : err);
		ctx_fail(ctx, 500, msg);
		return;
	}
	if (PQntuples(res) != 1) {
		/* reaped between the two statements: the client's retry starts afresh */
		ctx_fail(ctx, 409, "this key was just expired; retry");
		return;
	}
	copy_value(ctx->key_id, sizeof(ctx->key_id), res, 0);
	copy_value(ctx->expires, sizeof(ctx->expires), res, 6);
	if (strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
		ctx_fail(ctx, 422, "this Idempotency-Key was used with a different request; use a new key");
		return;
	}
	const char *rp = PQgetvalue(res, 0, 2);
	if (strcmp(rp, "finished") == 0) {
		ctx->code = atoi(PQgetvalue(res, 0, 4));
		ctx->body = strdup(PQgetvalue(res, 0, 5));
		ctx->replayed = true;
		if (!ctx->body) {
			ctx_fail(ctx, 500, "out of memory");
			return;
		}
		send_stored(ctx);
		return;
	}
	if (strcmp(PQgetvalue(res, 0, 3), "t") != 0) {
		ctx_fail(ctx, 409, "a request with this Idempotency-Key is in progress; retry later");
		return;
	}
	/* the lock is ours and the charge exists: resume from charge_created */
	if (PQgetisnull(res, 0, 7)) {
		fail_locked(ctx, NULL, "key at charge_created without its charge");
		return;
	}
	copy_value(ctx->charge_id, sizeof(ctx->charge_id), res, 7);
	copy_value(ctx->created, sizeof(ctx->created), res, 8);
	copy_value(ctx->amount, sizeof(ctx->amount), res, 9);
	copy_value(ctx->currency, sizeof(ctx->currency), res, 10);
	copy_value(ctx->customer, sizeof(ctx->customer), res, 11);
	after_charge(ctx);
}

static void fresh_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	struct charge_ctx *ctx = arg;
	char msg[256];
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		/* nothing was written: the statement was the whole transaction */
		pg_message_line(msg, sizeof(msg), res ? PQresultErrorMessage(res) : err);
		ctx_fail(ctx, 500, msg);
		return;
	}
	if (PQntuples(res) == 1) {
		copy_value(ctx->key_id, sizeof(ctx->key_id), res, 0);
		copy_value(ctx->charge_id, sizeof(ctx->charge_id), res, 1);
		copy_value(ctx->created, sizeof(ctx->created), res, 2);
		copy_value(ctx->expires, sizeof(ctx->expires), res, 3);
		after_charge(ctx);
		return;
	}
	char lock_ms[24], window[24];
	snprintf(lock_ms, sizeof(lock_ms), "%d", ctx->api->cfg.lock_timeout_ms);
	snprintf(window, sizeof(window), "%d", ctx->api->cfg.key_window_s);
	const char *p[] = {ctx->client, ctx->key, ctx->fingerprint, lock_ms, window};
	if (pool_query(c, SQL_EXISTING, 5, p, existing_cb, ctx) < 0)
		ctx_fail(ctx, 500, "could not send the query");
}

static void unkeyed_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct charge_ctx *ctx = arg;
	char msg[256];
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pg_message_line(msg, sizeof(msg), res ? PQresultErrorMessage(res) : err);
		ctx_fail(ctx, 500, msg);
		return;
	}
	copy_value(ctx->charge_id, sizeof(ctx->charge_id), res, 0);
	copy_value(ctx->created, sizeof(ctx->created), res, 1);
	if (build_body(ctx) < 0) {
		ctx_fail(ctx, 500, "out of memory");
		return;
	}
	ctx->code = 201;
	send_stored(ctx);
}

static void pg_acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct charge_ctx *ctx = arg;
	if (!conn) {
		ctx_fail(ctx, 503, err);
		return;
	}
	ctx->conn = conn;
	int rc;
	if (!ctx->has_key) {
		const char *p[] = {ctx->client, NULL, ctx->customer, ctx->amount, ctx->currency};
		rc = pool_query(conn, SQL_UNKEYED, 5, p, unkeyed_cb, ctx);
	} else {
		char window[24];
		snprintf(window, sizeof(window), "%d", ctx->api->cfg.key_window_s);
		const char *p[] = {ctx->client,   ctx->key, ctx->fingerprint, ctx->customer, ctx->amount,
		                   ctx->currency, window};
		rc = pool_query(conn, SQL_FRESH, 7, p, fresh_cb, ctx);
	}
	if (rc < 0)
		ctx_fail(ctx, 500, "could not send the query");
}

/* ---- the Redis routes: SET NX guards the charge, and nothing ties the two together ---- */

static void redis_done_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	(void)ac;
	(void)r;
	(void)privdata;
}

static void redis_db_failed(struct charge_ctx *ctx, PGresult *res, const char *err)
{
	char msg[256];
	pg_message_line(msg, sizeof(msg), res ? PQresultErrorMessage(res) : err);
	/* release: let the client retry, on the belief that the failed write wrote nothing */
	if (ctx->route == ROUTE_REDIS_RELEASE && ctx->api->redis)
		redisAsyncCommand(ctx->api->redis, redis_done_cb, NULL, "DEL %s", ctx->rkey);
	ctx_fail(ctx, 500, msg);
}

static void redis_stored_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	(void)ac;
	struct charge_ctx *ctx = privdata;
	redisReply *reply = r;
	if (!reply || reply->type == REDIS_REPLY_ERROR) {
		ctx_fail(ctx, 500, "the charge was made but Redis did not store the response");
		return;
	}
	send_stored(ctx);
}

static void redis_store(struct charge_ctx *ctx)
{
	if (build_body(ctx) < 0) {
		redis_db_failed(ctx, NULL, "out of memory");
		return;
	}
	ctx->code = 201;
	ctx_release(ctx);
	if (!ctx->api->redis ||
	    redisAsyncCommand(ctx->api->redis, redis_stored_cb, ctx, "SET %s 201:%s XX PX %lld", ctx->rkey,
	                      ctx->body, (long long)ctx->api->cfg.key_window_s * 1000) != REDIS_OK)
		ctx_fail(ctx, 503, "Redis is unavailable");
}

static void redis_pause_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct charge_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		redis_db_failed(ctx, res, err);
		return;
	}
	redis_store(ctx);
}

static void redis_charge_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	struct charge_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		redis_db_failed(ctx, res, err);
		return;
	}
	copy_value(ctx->charge_id, sizeof(ctx->charge_id), res, 0);
	copy_value(ctx->created, sizeof(ctx->created), res, 1);
	if (ctx->pause_ms > 0) {
		char ms[24];
		snprintf(ms, sizeof(ms), "%d", ctx->pause_ms);
		const char *p[] = {ms};
		if (pool_query(c, SQL_PAUSE, 1, p, redis_pause_cb, ctx) < 0)
			redis_db_failed(ctx, NULL, "could not send the query");
		return;
	}
	redis_store(ctx);
}

static void redis_acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct charge_ctx *ctx = arg;
	if (!conn) {
		redis_db_failed(ctx, NULL, err);
		return;
	}
	ctx->conn = conn;
	const char *p[] = {ctx->client, ctx->key, ctx->customer, ctx->amount, ctx->currency};
	if (pool_query(conn, SQL_UNKEYED, 5, p, redis_charge_cb, ctx) < 0)
		redis_db_failed(ctx, NULL, "could not send the query");
}

static void redis_get_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	(void)ac;
	struct charge_ctx *ctx = privdata;
	redisReply *reply = r;
	if (!reply || reply->type == REDIS_REPLY_ERROR) {
		ctx_fail(ctx, 503, "Redis is unavailable");
		return;
	}
	const char *colon = reply->type == REDIS_REPLY_STRING ? strchr(reply->str, ':') : NULL;
	if (!colon) {
		/* "pending", or gone since the SET: either way another request owns the key */
		ctx_fail(ctx, 409, "a request with this Idempotency-Key is in progress; retry later");
		return;
	}
	ctx->code = atoi(reply->str);
	ctx->body = strdup(colon + 1);
	ctx->replayed = true;
	if (!ctx->body) {
		ctx_fail(ctx, 500, "out of memory");
		return;
	}
	send_stored(ctx);
}

static void redis_set_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct charge_ctx *ctx = privdata;
	redisReply *reply = r;
	if (!reply || reply->type == REDIS_REPLY_ERROR) {
		ctx_fail(ctx, 503, "Redis is unavailable");
		return;
	}
	if (reply->type == REDIS_REPLY_NIL) {
		if (redisAsyncCommand(ac, redis_get_cb, ctx, "GET %s", ctx->rkey) != REDIS_OK)
			ctx_fail(ctx, 503, "Redis is unavailable");
		return;
	}
	pool_acquire(ctx->api->pool, "redis_charge_handler", redis_acquired_cb, ctx);
}

static void charges_cb(struct evhttp_request *req, void *arg)
{
	struct route_ctx *rc = arg;
	struct idempotency_api *api = rc->api;
	struct charge_ctx *ctx = ctx_new(api, req, rc->route);
	if (!ctx) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	char err[256];
	int code = parse_request(ctx, err, sizeof(err));
	if (code) {
		ctx_fail(ctx, code, err);
		return;
	}
	if (rc->route == ROUTE_PG) {
		pool_acquire(api->pool, "charge_handler", pg_acquired_cb, ctx);
		return;
	}
	snprintf(ctx->rkey, sizeof(ctx->rkey), REDIS_PREFIX "%s:%s", ctx->client, ctx->key);
	if (!api->redis || redisAsyncCommand(api->redis, redis_set_cb, ctx, "SET %s pending NX PX %lld",
	                                     ctx->rkey, (long long)api->cfg.key_window_s * 1000) != REDIS_OK)
		ctx_fail(ctx, 503, "Redis is unavailable");
}

/* ---- the reaper ---- */

static const char SQL_REAP[] = "DELETE FROM " SCHEMA ".idempotency_keys"
                               " WHERE created_at < now() - make_interval(secs => $1::float8)";

static void reaped_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)res;
	(void)err;
	struct idempotency_api *api = arg;
	pool_release(c);
	api->reaping = false;
}

static void reap_acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	(void)err;
	struct idempotency_api *api = arg;
	if (!conn) {
		api->reaping = false;
		return;
	}
	char window[24];
	snprintf(window, sizeof(window), "%d", api->cfg.key_window_s);
	const char *p[] = {window};
	if (pool_query(conn, SQL_REAP, 1, p, reaped_cb, api) < 0) {
		pool_release(conn);
		api->reaping = false;
	}
}

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct idempotency_api *api = arg;
	if (api->reaping)
		return;
	api->reaping = true;
	pool_acquire(api->pool, "reaper", reap_acquired_cb, api);
}

int idempotency_reap(const struct idempotency_config *cfg, int64_t *deleted, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	char window[24];
	snprintf(window, sizeof(window), "%d", cfg->key_window_s);
	const char *p[] = {window};
	PGresult *res = PQexecParams(conn, SQL_REAP, 1, NULL, p, NULL, NULL, 0);
	int ret = -1;
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pg_message_line(err, errlen, PQresultErrorMessage(res));
		goto out;
	}
	if (deleted)
		*deleted = atoll(PQcmdTuples(res));
	ret = 0;
out:
	PQclear(res);
	PQfinish(conn);
	return ret;
}

int idempotency_complete(const struct idempotency_config *cfg, int64_t *completed, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	PGresult *res = NULL;
	int64_t done = 0;
	char rollback_err[256];
	if (pg_exec(conn, "BEGIN", err, errlen) < 0)
		goto out;
	char lock_ms[24];
	snprintf(lock_ms, sizeof(lock_ms), "%d", cfg->lock_timeout_ms);
	const char *p[] = {lock_ms};
	/* keys whose request died after the charge; SKIP LOCKED leaves the ones a retry is resuming */
	res = pg_query(
	        conn,
	        "SELECT k.id, c.id, extract(epoch FROM c.created_at)::bigint, c.amount_cents, c.currency,"
	        " c.customer FROM " SCHEMA ".idempotency_keys k JOIN " SCHEMA
	        ".charges c ON c.idempotency_key_id = k.id"
	        " WHERE k.recovery_point = 'charge_created'"
	        " AND (k.locked_at IS NULL OR k.locked_at < now() - make_interval(secs => $1::float8 / 1000))"
	        " FOR UPDATE OF k SKIP LOCKED",
	        1, p, err, errlen);
	if (!res)
		goto rollback;
	for (int i = 0; i < PQntuples(res); i++) {
		char *body = charge_body(PQgetvalue(res, i, 1), PQgetvalue(res, i, 3), PQgetvalue(res, i, 4),
		                         PQgetvalue(res, i, 5), PQgetvalue(res, i, 2));
		if (!body) {
			snprintf(err, errlen, "out of memory");
			goto rollback;
		}
		const char *sp[] = {PQgetvalue(res, i, 0), "201", body};
		PGresult *u = PQexecParams(conn, SQL_STORE, 3, NULL, sp, NULL, NULL, 0);
		free(body);
		if (PQresultStatus(u) != PGRES_COMMAND_OK) {
			pg_message_line(err, errlen, PQresultErrorMessage(u));
			PQclear(u);
			goto rollback;
		}
		done += atoll(PQcmdTuples(u));
		PQclear(u);
	}
	if (pg_exec(conn, "COMMIT", err, errlen) < 0)
		goto out;
	if (completed)
		*completed = done;
	ret = 0;
	goto out;
rollback:
	/* the error already in err is the one to report */
	pg_exec(conn, "ROLLBACK", rollback_err, sizeof(rollback_err));
out:
	PQclear(res);
	PQfinish(conn);
	return ret;
}

/* ---- starting and stopping ---- */

static void redis_connect_cb(const redisAsyncContext *ac, int status)
{
	struct idempotency_api *api = ac->data;
	if (status != REDIS_OK) {
		snprintf(api->redis_error, sizeof(api->redis_error), "%s", ac->errstr);
		api->redis = NULL; /* hiredis frees it after this callback */
	}
}

static void redis_disconnect_cb(const redisAsyncContext *ac, int status)
{
	(void)status;
	struct idempotency_api *api = ac->data;
	api->redis = NULL;
}

/* The async context on the API's loop; AUTH and SELECT from the URL go first in its queue. */
static int redis_start(struct idempotency_api *api, char *err, size_t errlen)
{
	struct evhttp_uri *uri = evhttp_uri_parse(api->cfg.redis_url);
	if (!uri || !evhttp_uri_get_host(uri) || strcmp(evhttp_uri_get_scheme(uri), "redis") != 0) {
		snprintf(err, errlen, "not a redis:// URL");
		if (uri)
			evhttp_uri_free(uri);
		return -1;
	}
	int port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 6379;
	api->redis = redisAsyncConnect(evhttp_uri_get_host(uri), port);
	if (!api->redis || api->redis->err) {
		snprintf(err, errlen, "cannot connect to Redis: %s",
		         api->redis ? api->redis->errstr : "out of memory");
		if (api->redis)
			redisAsyncFree(api->redis);
		api->redis = NULL;
		evhttp_uri_free(uri);
		return -1;
	}
	api->redis->data = api;
	redisLibeventAttach(api->redis, api->base);
	redisAsyncSetConnectCallback(api->redis, redis_connect_cb);
	redisAsyncSetDisconnectCallback(api->redis, redis_disconnect_cb);
	const char *userinfo = evhttp_uri_get_userinfo(uri);
	const char *colon = userinfo ? strchr(userinfo, ':') : NULL;
	if (colon && colon[1])
		redisAsyncCommand(api->redis, redis_done_cb, NULL, "AUTH %s", colon + 1);
	const char *path = evhttp_uri_get_path(uri);
	if (path && path[0] == '/' && atoi(path + 1) > 0)
		redisAsyncCommand(api->redis, redis_done_cb, NULL, "SELECT %d", atoi(path + 1));
	evhttp_uri_free(uri);
	return 0;
}

struct idempotency_api *idempotency_api_start(const struct idempotency_config *cfg, int port, char *err,
                                              size_t errlen)
{
	struct idempotency_api *api = calloc(1, sizeof(*api));
	if (!api) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	api->cfg = *cfg;
	api->base = http_base_new();
	if (!api->base) {
		snprintf(err, errlen, "cannot create an event base");
		goto err;
	}
	struct pool_config pc = {
	        .conninfo = cfg->pg_url,
	        .min_idle = cfg->pool_min_idle,
	        .max_size = cfg->pool_size,
	        .acquire_timeout_ms = cfg->acquire_timeout_ms,
	};
	api->pool = pool_new(api->base, &pc, err, errlen);
	if (!api->pool || pool_wait_ready(api->pool, 10000, err, errlen) < 0)
		goto err;
	if (cfg->redis_url && redis_start(api, err, errlen) < 0)
		goto err;
	api->http = http_server_start(api->base, port, err, errlen);
	if (!api->http)
		goto err;
	for (int r = 0; r < ROUTE_COUNT; r++) {
		if (r != ROUTE_PG && !cfg->redis_url)
			continue;
		api->routes[r] = (struct route_ctx){api, (enum route)r};
		http_server_route(api->http, route_paths[r], charges_cb, &api->routes[r]);
	}
	if (cfg->reap_interval_ms > 0) {
		api->reaper = event_new(api->base, -1, EV_PERSIST, reaper_cb, api);
		struct timeval tv = {cfg->reap_interval_ms / 1000, (cfg->reap_interval_ms % 1000) * 1000};
		if (!api->reaper || event_add(api->reaper, &tv) < 0) {
			snprintf(err, errlen, "cannot start the reaper's timer");
			goto err;
		}
	}
	api->thread = http_thread_start(api->base, err, errlen);
	if (!api->thread)
		goto err;
	return api;
err:
	idempotency_api_stop(api);
	return NULL;
}

int idempotency_api_port(const struct idempotency_api *api)
{
	return http_server_port(api->http);
}

void idempotency_api_stop(struct idempotency_api *api)
{
	if (!api)
		return;
	http_thread_stop(api->thread);
	if (api->reaper)
		event_free(api->reaper);
	/* pending Redis callbacks run now with no reply: their requests fail and are freed */
	if (api->redis)
		redisAsyncFree(api->redis);
	api->redis = NULL;
	/* waiters for a connection are failed by pool_free; requests mid-query are freed below */
	pool_free(api->pool);
	while (api->live)
		ctx_free(api->live);
	http_server_free(api->http);
	if (api->base)
		event_base_free(api->base);
	free(api);
}

/* ---- the client ---- */

struct call_ctx {
	struct event_base *base;
	struct idempotency_response *rs;
	uint64_t start_us;
};

static void call_done_cb(struct evhttp_request *req, void *arg)
{
	struct call_ctx *cc = arg;
	struct idempotency_response *rs = cc->rs;
	rs->latency_us = hist_now_us() - cc->start_us;
	if (req && evhttp_request_get_response_code(req) > 0) {
		rs->status = evhttp_request_get_response_code(req);
		struct evkeyvalq *h = evhttp_request_get_input_headers(req);
		const char *replayed = evhttp_find_header(h, "Idempotent-Replayed");
		rs->replayed = replayed && strcmp(replayed, "true") == 0;
		const char *expires = evhttp_find_header(h, "Idempotency-Key-Expires");
		snprintf(rs->expires, sizeof(rs->expires), "%s", expires ? expires : "");
		struct evbuffer *in = evhttp_request_get_input_buffer(req);
		size_t n = evbuffer_get_length(in);
		if (n > sizeof(rs->body) - 1)
			n = sizeof(rs->body) - 1;
		evbuffer_copyout(in, rs->body, n);
		rs->body[n] = '\0';
		rs->body_len = n;
	}
	event_base_loopbreak(cc->base);
}

int idempotency_call(int port, const struct idempotency_request *rq, struct idempotency_response *rs,
                     char *err, size_t errlen)
{
	memset(rs, 0, sizeof(*rs));
	struct call_ctx cc = {.rs = rs};
	struct evhttp_connection *conn = NULL;
	int ret = -1;
	cc.base = event_base_new();
	if (!cc.base) {
		snprintf(err, errlen, "cannot create an event base");
		return -1;
	}
	conn = evhttp_connection_base_new(cc.base, NULL, "127.0.0.1", (unsigned short)port);
	struct evhttp_request *req = conn ? evhttp_request_new(call_done_cb, &cc) : NULL;
	if (!req) {
		snprintf(err, errlen, "cannot create the request");
		goto out;
	}
	int timeout_ms = rq->timeout_ms > 0 ? rq->timeout_ms : 5000;
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	evhttp_connection_set_timeout_tv(conn, &tv);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", "127.0.0.1");
	evhttp_add_header(h, "Content-Type", "application/json");
	if (rq->client)
		evhttp_add_header(h, "X-Client-Id", rq->client);
	if (rq->key)
		evhttp_add_header(h, "Idempotency-Key", rq->key);
	char ms[24];
	if (rq->delay_ms > 0) {
		snprintf(ms, sizeof(ms), "%d", rq->delay_ms);
		evhttp_add_header(h, "X-Lab-Delay-Ms", ms);
	}
	if (rq->pause_ms > 0) {
		snprintf(ms, sizeof(ms), "%d", rq->pause_ms);
		evhttp_add_header(h, "X-Lab-Pause-Ms", ms);
	}
	if (rq->body)
		evbuffer_add(evhttp_request_get_output_buffer(req), rq->body, strlen(rq->body));
	cc.start_us = hist_now_us();
	/* evhttp_make_request frees req when it fails */
	if (evhttp_make_request(conn, req, EVHTTP_REQ_POST, rq->path ? rq->path : CHARGES_PATH) != 0) {
		snprintf(err, errlen, "cannot send the request to 127.0.0.1:%d", port);
		goto out;
	}
	event_base_dispatch(cc.base);
	ret = 0;
out:
	if (conn)
		evhttp_connection_free(conn);
	event_base_free(cc.base);
	return ret;
}

/* ---- counting in PostgreSQL ---- */

int idempotency_count(const struct idempotency_config *cfg, const char *client, int64_t *charges,
                      int64_t *cents, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	const char *p[] = {client};
	int ret = -1;
	PGresult *res = pg_query(conn,
	                         "SELECT count(*), coalesce(sum(amount_cents), 0) FROM " SCHEMA
	                         ".charges WHERE client = $1",
	                         1, p, err, errlen);
	if (!res)
		goto out;
	if (PQntuples(res) != 1) {
		snprintf(err, errlen, "count returned %d rows", PQntuples(res));
		PQclear(res);
		goto out;
	}
	*charges = atoll(PQgetvalue(res, 0, 0));
	*cents = atoll(PQgetvalue(res, 0, 1));
	PQclear(res);
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

int idempotency_count_keys(const struct idempotency_config *cfg, const char *client, int64_t *keys, char *err,
                           size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	const char *p[] = {client};
	int ret = pg_query_int64(conn, "SELECT count(*) FROM " SCHEMA ".idempotency_keys WHERE client = $1",
	                         1, p, keys, err, errlen);
	PQfinish(conn);
	return ret;
}

/* ---- the phases ---- */

/* A client id of its own for every run, so that counts are this run's alone. */
static void run_client(char *out, size_t outlen, const char *what)
{
	static unsigned runs;
	snprintf(out, outlen, "%s-%d-%u-%llu", what, (int)getpid(), ++runs,
	         (unsigned long long)(hist_now_us() % 1000000));
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int attempt(struct idempotency_story *st, int port, const char *what,
                   const struct idempotency_request *rq, char *err, size_t errlen)
{
	struct idempotency_attempt *a = &st->attempts[st->nattempts++];
	snprintf(a->what, sizeof(a->what), "%s", what);
	return idempotency_call(port, rq, &a->rs, err, errlen);
}

static void story_finish(struct idempotency_story *st)
{
	const char *first = NULL;
	st->bodies_identical = true;
	for (int i = 0; i < st->nattempts; i++) {
		const struct idempotency_response *rs = &st->attempts[i].rs;
		if (rs->status < 200 || rs->status > 299)
			continue;
		if (!first)
			first = rs->body;
		else if (strcmp(first, rs->body) != 0)
			st->bodies_identical = false;
	}
}

#define CHARGE_BODY "{\"amount\": 2500, \"currency\": \"usd\", \"customer\": \"cus_ada\"}"

int idempotency_flaky_run(const struct idempotency_config *cfg, bool with_key, struct idempotency_story *st,
                          char *err, size_t errlen)
{
	memset(st, 0, sizeof(*st));
	struct idempotency_config c = *cfg;
	c.require_key = with_key;
	c.test_knobs = true;
	c.redis_url = NULL;
	struct idempotency_api *api = idempotency_api_start(&c, 0, err, errlen);
	if (!api)
		return -1;
	int ret = -1;
	char client[MAX_NAME + 1], what[64];
	run_client(client, sizeof(client), with_key ? "flaky-key" : "flaky");
	int port = idempotency_api_port(api);
	struct idempotency_request rq = {.client = client,
	                                 .key = with_key ? "order-1042-pay" : NULL,
	                                 .body = CHARGE_BODY,
	                                 .delay_ms = cfg->slow_ms,
	                                 .timeout_ms = cfg->client_timeout_ms};
	snprintf(what, sizeof(what), "attempt 1 (answered after %d ms)", cfg->slow_ms);
	uint64_t t0 = hist_now_us();
	if (attempt(st, port, what, &rq, err, errlen) < 0)
		goto out;
	/* the client's timeout fired: it retries at once, as most HTTP clients do */
	rq.delay_ms = 0;
	/* the retry waits longer, as clients that back off do: its answer must not be lost too */
	rq.timeout_ms = 5000;
	if (attempt(st, port, "retry", &rq, err, errlen) < 0)
		goto out;
	/* with a key, once more after the slow answer went out, to see that the replay holds */
	if (with_key) {
		uint64_t waited_ms = (hist_now_us() - t0) / 1000;
		if (waited_ms < (uint64_t)cfg->slow_ms + 50)
			sleep_ms(cfg->slow_ms + 50 - (int)waited_ms);
		if (attempt(st, port, "retry again", &rq, err, errlen) < 0)
			goto out;
	}
	if (idempotency_count(cfg, client, &st->charges, &st->cents, err, errlen) < 0)
		goto out;
	st->expected_cents = 2500;
	story_finish(st);
	ret = 0;
out:
	idempotency_api_stop(api);
	return ret;
}

/* The load's requests: POST /v1/charges with a key and a body chosen by seq. */
struct load_ctx {
	const struct idempotency_config *cfg;
	const char *client;
	int keys;            /* 1: every request the same key (phase 3a) */
	bool slow;           /* one in slow_every answered after the client gave up */
	int pause_ms;        /* X-Lab-Pause-Ms on every request: the charge's time at the bank */
	char (*bodies)[128]; /* one per key, alive until the load ends */
	char (*key_names)[64];
	struct idempotency_load *r;
};

static int key_of(const struct load_ctx *lc, uint64_t seq)
{
	/* consecutive requests share a key, so they race each other from two clients */
	return (int)((seq / 2) % (uint64_t)lc->keys);
}

static void load_request_cb(struct load_request *r, struct evhttp_request *req, int client, uint64_t seq,
                            void *arg)
{
	(void)client;
	struct load_ctx *lc = arg;
	int k = key_of(lc, seq);
	r->method = EVHTTP_REQ_POST;
	r->body = lc->bodies[k];
	r->body_len = strlen(lc->bodies[k]);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "X-Client-Id", lc->client);
	evhttp_add_header(h, "Idempotency-Key", lc->key_names[k]);
	if (lc->pause_ms > 0) {
		char ms[24];
		snprintf(ms, sizeof(ms), "%d", lc->pause_ms);
		evhttp_add_header(h, "X-Lab-Pause-Ms", ms);
	}
	if (lc->slow && lc->cfg->slow_every > 0 && seq % (uint64_t)lc->cfg->slow_every == 0) {
		char ms[24];
		snprintf(ms, sizeof(ms), "%d", lc->cfg->slow_ms);
		evhttp_add_header(h, "X-Lab-Delay-Ms", ms);
	}
}

static void load_response_cb(struct evhttp_request *req, int client, uint64_t seq, uint64_t latency_us,
                             void *arg)
{
	(void)client;
	(void)seq;
	(void)latency_us;
	struct load_ctx *lc = arg;
	int code = req ? evhttp_request_get_response_code(req) : 0;
	if (code == 0) {
		lc->r->no_response++;
	} else if (code == 201) {
		const char *h =
		        evhttp_find_header(evhttp_request_get_input_headers(req), "Idempotent-Replayed");
		if (h && strcmp(h, "true") == 0)
			lc->r->replayed++;
		else
			lc->r->fresh++;
	} else if (code == 409) {
		lc->r->conflict++;
	} else {
		lc->r->other++;
	}
}

static int load_keys(const struct idempotency_config *cfg, struct idempotency_api *api, const char *client,
                     int keys, int requests, int clients, bool slow, int pause_ms, struct idempotency_load *r,
                     char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	r->keys = keys;
	r->requests = requests;
	r->clients = clients;
	int ret = -1;
	struct load_ctx lc = {
	        .cfg = cfg, .client = client, .keys = keys, .slow = slow, .pause_ms = pause_ms, .r = r};
	lc.bodies = calloc((size_t)keys, sizeof(*lc.bodies));
	lc.key_names = calloc((size_t)keys, sizeof(*lc.key_names));
	struct load_result *res = malloc(sizeof(*res));
	if (!lc.bodies || !lc.key_names || !res) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (int k = 0; k < keys; k++) {
		/* amounts differ by key, so a doubled or lost charge shows in the cents too */
		long cents = 1000 + 37L * k;
		snprintf(lc.bodies[k], sizeof(lc.bodies[k]),
		         "{\"amount\": %ld, \"currency\": \"usd\", \"customer\": \"cus_%d\"}", cents, k);
		snprintf(lc.key_names[k], sizeof(lc.key_names[k]), "order-%d-pay", k);
		r->expected_cents += cents;
	}
	struct load_config cfgl = {
	        .port = idempotency_api_port(api),
	        .path = CHARGES_PATH,
	        .method = EVHTTP_REQ_POST,
	        .clients = clients,
	        .max_requests = (uint64_t)requests,
	        .timeout_ms = slow ? cfg->client_timeout_ms : 10000,
	        .request_cb = load_request_cb,
	        .response_cb = load_response_cb,
	        .arg = &lc,
	};
	if (load_run(&cfgl, res, err, errlen) < 0)
		goto out;
	if (slow) {
		/* the clients whose answers were lost retry each key until it is answered */
		for (int k = 0; k < keys; k++) {
			for (int tries = 0; tries < 50; tries++) {
				struct idempotency_request rq = {
				        .client = client, .key = lc.key_names[k], .body = lc.bodies[k]};
				struct idempotency_response rs;
				if (idempotency_call(idempotency_api_port(api), &rq, &rs, err, errlen) < 0)
					goto out;
				r->settle_requests++;
				if (rs.status == 201)
					break;
				if (rs.status != 409) {
					snprintf(err, errlen, "retry of %s got %d: %s", lc.key_names[k],
					         rs.status, rs.body);
					goto out;
				}
				sleep_ms(50);
			}
		}
	}
	if (idempotency_count(cfg, client, &r->charges, &r->cents, err, errlen) < 0)
		goto out;
	ret = 0;
out:
	free(lc.bodies);
	free(lc.key_names);
	free(res);
	return ret;
}

int idempotency_mixed_run(const struct idempotency_config *cfg, const char *client,
                          struct idempotency_load *r, char *err, size_t errlen)
{
	struct idempotency_config c = *cfg;
	c.test_knobs = true;
	c.redis_url = NULL;
	c.pool_min_idle = c.pool_size;
	struct idempotency_api *api = idempotency_api_start(&c, 0, err, errlen);
	if (!api)
		return -1;
	int ret = load_keys(cfg, api, client, cfg->mixed_keys, cfg->mixed_requests, cfg->mixed_clients, true,
	                    0, r, err, errlen);
	/* slow answers still owed to clients that gave up are dropped with the API */
	idempotency_api_stop(api);
	return ret;
}

int idempotency_duplicates_run(const struct idempotency_config *cfg, struct idempotency_duplicates *d,
                               char *err, size_t errlen)
{
	memset(d, 0, sizeof(*d));
	struct idempotency_config c = *cfg;
	c.redis_url = NULL;
	c.pool_min_idle = c.pool_size;
	struct idempotency_api *api = idempotency_api_start(&c, 0, err, errlen);
	if (!api)
		return -1;
	char client[MAX_NAME + 1];
	run_client(client, sizeof(client), "dups");
	/* every client sends one request at the same instant, all with the same key */
	int ret = load_keys(cfg, api, client, 1, cfg->duplicates, cfg->duplicates, false, cfg->bank_ms,
	                    &d->same_instant, err, errlen);
	idempotency_api_stop(api);
	if (ret < 0)
		return -1;
	run_client(client, sizeof(client), "mixed");
	return idempotency_mixed_run(cfg, client, &d->mixed, err, errlen);
}

int idempotency_mismatch_run(const struct idempotency_config *cfg, struct idempotency_story *st, char *err,
                             size_t errlen)
{
	memset(st, 0, sizeof(*st));
	struct idempotency_config c = *cfg;
	c.redis_url = NULL;
	struct idempotency_api *api = idempotency_api_start(&c, 0, err, errlen);
	if (!api)
		return -1;
	int ret = -1;
	char client[MAX_NAME + 1];
	run_client(client, sizeof(client), "mismatch");
	int port = idempotency_api_port(api);
	char long_key[IDEMPOTENCY_MAX_KEY + 2];
	memset(long_key, 'k', IDEMPOTENCY_MAX_KEY + 1);
	long_key[IDEMPOTENCY_MAX_KEY + 1] = '\0';
	struct idempotency_request rq = {
	        .client = client,
	        .key = "order-7-pay",
	        .body = "{\"amount\": 1000, \"currency\": \"usd\", \"customer\": \"cus_bob\"}"};
	if (attempt(st, port, "$10.00 with key order-7-pay", &rq, err, errlen) < 0)
		goto out;
	rq.body = "{\"amount\": 5000, \"currency\": \"usd\", \"customer\": \"cus_bob\"}";
	if (attempt(st, port, "$50.00 with the same key", &rq, err, errlen) < 0)
		goto out;
	/* the same payload, fields reordered and spaced: the canonical fingerprint still matches */
	rq.body = "{\"customer\":\"cus_bob\",\"currency\":\"usd\",\"amount\":1000}";
	if (attempt(st, port, "$10.00 again, fields reordered", &rq, err, errlen) < 0)
		goto out;
	rq.key = NULL;
	if (attempt(st, port, "$10.00 without a key", &rq, err, errlen) < 0)
		goto out;
	rq.key = long_key;
	if (attempt(st, port, "a key of 256 characters", &rq, err, errlen) < 0)
		goto out;
	rq.key = "order-8-pay";
	rq.body = "{\"amount\": 1000, \"currency\": ";
	if (attempt(st, port, "malformed JSON", &rq, err, errlen) < 0)
		goto out;
	if (idempotency_count(cfg, client, &st->charges, &st->cents, err, errlen) < 0)
		goto out;
	st->expected_cents = 1000;
	story_finish(st);
	ret = 0;
out:
	idempotency_api_stop(api);
	return ret;
}

/*
 * Finds the backends paused between charge and response (PAUSE_MARK in pg_stat_activity) and
 * terminates them, as a crash or a failover would, until want of them were killed. Returns the
 * pid of the first, -1 with err.
 */
static int kill_paused(PGconn *side, int want, char *err, size_t errlen)
{
	int killed = 0, first_pid = 0;
	for (int i = 0; i < 500 && killed < want; i++) {
		PGresult *res = pg_query(
		        side,
		        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'active'"
		        " AND query LIKE '%" PAUSE_MARK "%' AND pid <> pg_backend_pid()"
		        " AND datname = current_database()",
		        0, NULL, err, errlen);
		if (!res)
			return -1;
		for (int r = 0; r < PQntuples(res); r++) {
			if (strcmp(PQgetvalue(res, r, 1), "t") != 0) {
				snprintf(err, errlen, "pg_terminate_backend(%s) refused",
				         PQgetvalue(res, r, 0));
				PQclear(res);
				return -1;
			}
			if (!first_pid)
				first_pid = atoi(PQgetvalue(res, r, 0));
			killed++;
		}
		PQclear(res);
		if (killed < want)
			sleep_ms(10);
	}
	if (killed < want) {
		snprintf(err, errlen, "only %d of %d paused requests showed in pg_stat_activity", killed,
		         want);
		return -1;
	}
	return first_pid;
}

/* Sleeps until the lock taken by a request sent at t0_us has timed out, with a margin. */
static void wait_lock_timeout(const struct idempotency_config *cfg, uint64_t t0_us)
{
	int64_t left_ms = cfg->lock_timeout_ms + LOCK_MARGIN_MS - (int64_t)(hist_now_us() - t0_us) / 1000;
	if (left_ms > 0)
		sleep_ms((int)left_ms);
}

int idempotency_crash_run(const struct idempotency_config *cfg, struct idempotency_story *st, char *err,
                          size_t errlen)
{
	memset(st, 0, sizeof(*st));
	struct idempotency_config c = *cfg;
	c.test_knobs = true;
	c.redis_url = NULL;
	PGconn *side = pg_connect(cfg->pg_url, err, errlen);
	if (!side)
		return -1;
	struct idempotency_api *api = idempotency_api_start(&c, 0, err, errlen);
	int ret = -1;
	if (!api)
		goto out;
	char client[MAX_NAME + 1], what[64];
	run_client(client, sizeof(client), "crash");
	int port = idempotency_api_port(api);
	struct idempotency_request rq = {.client = client,
	                                 .key = "order-99-pay",
	                                 .body = CHARGE_BODY,
	                                 .pause_ms = cfg->pause_ms,
	                                 .timeout_ms = cfg->client_timeout_ms};
	uint64_t t0 = hist_now_us();
	if (attempt(st, port, "attempt 1: charge, then killed", &rq, err, errlen) < 0)
		goto out;
	st->killed_pid = kill_paused(side, 1, err, errlen);
	if (st->killed_pid < 0)
		goto out;
	const char *p[] = {client, "order-99-pay"};
	PGresult *res = pg_query(
	        side, "SELECT recovery_point FROM " SCHEMA ".idempotency_keys WHERE client = $1 AND key = $2",
	        2, p, err, errlen);
	if (!res)
		goto out;
	snprintf(st->recovery_point, sizeof(st->recovery_point), "%s",
	         PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "(no key)");
	PQclear(res);
	rq.pause_ms = 0;
	rq.timeout_ms = 5000;
	if (attempt(st, port, "retry at once", &rq, err, errlen) < 0)
		goto out;
	wait_lock_timeout(cfg, t0);
	snprintf(what, sizeof(what), "retry after the lock timeout (%d ms)", cfg->lock_timeout_ms);
	if (attempt(st, port, what, &rq, err, errlen) < 0)
		goto out;
	if (attempt(st, port, "retry again", &rq, err, errlen) < 0)
		goto out;
	if (idempotency_count(cfg, client, &st->charges, &st->cents, err, errlen) < 0)
		goto out;
	st->expected_cents = 2500;
	story_finish(st);
	ret = 0;
out:
	idempotency_api_stop(api);
	PQfinish(side);
	return ret;
}

static const char *const guard_designs[ROUTE_COUNT] = {"key in PostgreSQL (same txn)",
                                                       "Redis SET NX, key kept", "Redis SET NX, key deleted"};

/* The retries of one row after its faulty first attempt, then the charges PostgreSQL holds. */
static int guard_retries(const struct idempotency_config *cfg, int port,
                         const struct idempotency_request *first, struct idempotency_guard_row *row,
                         char *err, size_t errlen)
{
	struct idempotency_request rq = *first;
	rq.pause_ms = 0;
	rq.timeout_ms = 5000;
	for (int i = 0; i < 2; i++) {
		struct idempotency_response rs;
		if (idempotency_call(port, &rq, &rs, err, errlen) < 0)
			return -1;
		row->statuses[row->nattempts++] = rs.status;
	}
	int64_t cents;
	return idempotency_count(cfg, rq.client, &row->charges, &cents, err, errlen);
}

/*
 * Each design under each fault: attempt 1 meets the fault, then two retries with the same key.
 * Refused: a CHECK (false) constraint on charges for attempt 1 alone. Killed: attempt 1 pauses
 * after its charge and the lab terminates its backend; the three designs' first attempts are
 * killed together and retried after one wait past the lock timeout.
 */
static int guard_rows(const struct idempotency_config *cfg, int port, PGconn *side,
                      struct idempotency_guard *g, char *err, size_t errlen)
{
	char clients[2][ROUTE_COUNT][MAX_NAME + 1];
	struct idempotency_request rqs[2][ROUTE_COUNT];
	for (int kill = 0; kill < 2; kill++)
		for (int r = 0; r < ROUTE_COUNT; r++) {
			run_client(clients[kill][r], sizeof(clients[kill][r]), "guard");
			rqs[kill][r] = (struct idempotency_request){.path = route_paths[r],
			                                            .client = clients[kill][r],
			                                            .key = "order-5-pay",
			                                            .body = CHARGE_BODY,
			                                            .timeout_ms = 5000};
		}
	for (int r = 0; r < ROUTE_COUNT; r++) {
		struct idempotency_guard_row *row = &g->rows[g->nrows++];
		row->design = guard_designs[r];
		row->fault = "database refuses the write";
		struct idempotency_response rs;
		if (pg_exec(side,
		            "ALTER TABLE " SCHEMA ".charges ADD CONSTRAINT outage CHECK (false) NOT VALID",
		            err, errlen) < 0)
			return -1;
		int rc = idempotency_call(port, &rqs[0][r], &rs, err, errlen);
		if (pg_exec(side, "ALTER TABLE " SCHEMA ".charges DROP CONSTRAINT outage", err, errlen) < 0 ||
		    rc < 0)
			return -1;
		row->statuses[row->nattempts++] = rs.status;
		if (guard_retries(cfg, port, &rqs[0][r], row, err, errlen) < 0)
			return -1;
	}
	uint64_t t0 = hist_now_us();
	for (int r = 0; r < ROUTE_COUNT; r++) {
		struct idempotency_guard_row *row = &g->rows[g->nrows + r];
		row->design = guard_designs[r];
		row->fault = "connection killed after the charge";
		rqs[1][r].pause_ms = cfg->pause_ms;
		rqs[1][r].timeout_ms = cfg->client_timeout_ms;
		struct idempotency_response rs;
		if (idempotency_call(port, &rqs[1][r], &rs, err, errlen) < 0)
			return -1;
		row->statuses[row->nattempts++] = rs.status;
	}
	if (kill_paused(side, ROUTE_COUNT, err, errlen) < 0)
		return -1;
	/* the clients back off past the lock timeout, counted from the first attempt, then retry */
	wait_lock_timeout(cfg, t0);
	for (int r = 0; r < ROUTE_COUNT; r++)
		if (guard_retries(cfg, port, &rqs[1][r], &g->rows[g->nrows++], err, errlen) < 0)
			return -1;
	return 0;
}

int idempotency_guard_run(const struct idempotency_config *cfg, struct idempotency_guard *g, char *err,
                          size_t errlen)
{
	memset(g, 0, sizeof(*g));
	if (!cfg->redis_url) {
		snprintf(err, errlen, "the Redis variant needs a Redis URL");
		return -1;
	}
	struct idempotency_config c = *cfg;
	c.test_knobs = true;
	PGconn *side = pg_connect(cfg->pg_url, err, errlen);
	if (!side)
		return -1;
	int ret = -1;
	struct idempotency_api *api = idempotency_api_start(&c, 0, err, errlen);
	if (!api || guard_rows(cfg, idempotency_api_port(api), side, g, err, errlen) < 0)
		goto out;
	redisContext *rc = redis_connect_url(cfg->redis_url, 2000, err, errlen);
	if (!rc)
		goto out;
	ret = redis_del_prefix(rc, REDIS_PREFIX, &g->redis_keys_deleted, err, errlen);
	redisFree(rc);
out:
	idempotency_api_stop(api);
	if (ret < 0) {
		/* never leave the outage constraint behind */
		char e2[256];
		pg_exec(side, "ALTER TABLE " SCHEMA ".charges DROP CONSTRAINT IF EXISTS outage", e2,
		        sizeof(e2));
	}
	PQfinish(side);
	return ret;
}
