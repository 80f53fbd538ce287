/*
 * api.c — the payment API of lab-idempotency: POST /v1/charges from parse to reply, with the key
 * and the charge in one PostgreSQL transaction and the stored response in the next (see
 * idempotency.h), and the one order in which it stops.
 *
 * The API runs on one event loop in a thread of its own (struct http_app): its handlers borrow
 * PostgreSQL connections from common/pool.h (asynchronous libpq) and, on the Redis routes
 * (api_redis.c), talk to Redis with hiredis' asynchronous API on the same loop, so no handler
 * ever blocks the loop.
 */
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"

/* the lab's APIs open their pool's first connections within this, or the server is not there */
#define POOL_READY_MS 10000

const char *const idem_route_paths[ROUTE_COUNT] = {CHARGES_PATH, "/v1/charges-redis",
                                                   "/v1/charges-redis-release"};

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
void idem_ctx_release(struct charge_ctx *ctx)
{
	if (ctx->conn) {
		pool_release(ctx->conn);
		ctx->conn = NULL;
	}
}

/* An error reply ends the request: nothing more happens for it. */
void idem_ctx_fail(struct charge_ctx *ctx, int code, const char *msg)
{
	/* a query cut off by the stop (pool_free calls it back) is the stop's doing, not an error:
	 * the client retries with the same key */
	if (ctx->api->stopping && code == 500) {
		code = 503;
		msg = "the API is shutting down; retry with the same key";
	}
	idem_ctx_release(ctx);
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
	http_send_reply(ctx->req, ctx->code, out);
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
void idem_send_stored(struct charge_ctx *ctx)
{
	idem_ctx_release(ctx);
	if (ctx->delay_ms > 0) {
		ctx->timer = evtimer_new(ctx->api->app.base, delayed_cb, ctx);
		struct timeval tv = {ctx->delay_ms / 1000, (ctx->delay_ms % 1000) * 1000};
		if (ctx->timer && evtimer_add(ctx->timer, &tv) == 0)
			return;
	}
	send_now(ctx);
}

int idem_take_body(struct charge_ctx *ctx, PGresult *res, int col)
{
	free(ctx->body);
	ctx->body = PQgetisnull(res, 0, col) ? NULL : strdup(PQgetvalue(res, 0, col));
	return ctx->body ? 0 : -1;
}

void idem_copy_value(char *out, size_t outlen, PGresult *res, int col)
{
	snprintf(out, outlen, "%s", PQgetisnull(res, 0, col) ? "" : PQgetvalue(res, 0, col));
}

/* ---- parsing: everything a request must get right before anything is written ---- */

static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

/* A test knob: read only when the config turns knobs on; otherwise the header means nothing. */
static bool knob(struct evhttp_request *req, const char *name, int *out, char *err, size_t errlen)
{
	const char *v;
	int found = http_header_one(req, name, &v, err, errlen);
	if (found <= 0)
		return found == 0;
	char *end = NULL;
	long ms = strtol(v, &end, 10);
	if (!*v || *end || ms < 0 || ms > MAX_KNOB_MS) {
		snprintf(err, errlen, "%s must be a whole number of ms in 0..%d", name, MAX_KNOB_MS);
		return false;
	}
	*out = (int)ms;
	return true;
}

/* The key as the client sent it: once, 1..255 printable characters, bare or as "..." (the draft). */
static int parse_key(struct charge_ctx *ctx, const char *key, char *err, size_t errlen)
{
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
	return 0;
}

/* The headers: the method, X-Client-Id, Idempotency-Key and the knobs. 0 or the status to answer. */
static int parse_headers(struct charge_ctx *ctx, char *err, size_t errlen)
{
	struct evhttp_request *req = ctx->req;
	const struct idempotency_config *cfg = &ctx->api->cfg;
	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		snprintf(err, errlen, "only POST here");
		return 405;
	}
	const char *client, *key;
	int found = http_header_one(req, "X-Client-Id", &client, err, errlen);
	if (found < 0)
		return 400;
	if (!found)
		client = "anonymous";
	if (!*client || strlen(client) > MAX_NAME || !printable(client)) {
		snprintf(err, errlen, "X-Client-Id must be 1..%d printable characters", MAX_NAME);
		return 400;
	}
	snprintf(ctx->client, sizeof(ctx->client), "%s", client);
	/* two keys in one request: a careful API does not guess which one the client meant */
	found = http_header_one(req, "Idempotency-Key", &key, err, errlen);
	if (found < 0)
		return 400;
	if (found) {
		int code = parse_key(ctx, key, err, errlen);
		if (code)
			return code;
	} else if (cfg->require_key || ctx->route != ROUTE_PG) {
		snprintf(err, errlen, "Idempotency-Key header is required on POST %s",
		         idem_route_paths[ctx->route]);
		return 400;
	}
	if (cfg->test_knobs && (!knob(req, "X-Lab-Delay-Ms", &ctx->delay_ms, err, errlen) ||
	                        !knob(req, "X-Lab-Pause-Ms", &ctx->pause_ms, err, errlen)))
		return 400;
	return 0;
}

/* The three fields of a charge, and nothing else. 0 or 400 with err. */
static int parse_fields(struct charge_ctx *ctx, json_t *doc, char *err, size_t errlen)
{
	const char *name;
	json_t *v;
	json_object_foreach(doc, name, v)
	{
		if (strcmp(name, "amount") && strcmp(name, "currency") && strcmp(name, "customer")) {
			snprintf(err, errlen, "unknown field \"%.64s\" (amount, currency, customer)", name);
			return 400;
		}
	}
	json_t *amount = json_object_get(doc, "amount");
	if (!json_is_integer(amount) || json_integer_value(amount) < 1 ||
	    json_integer_value(amount) > MAX_AMOUNT) {
		snprintf(err, errlen, "amount must be a whole number of cents in 1..%lld", MAX_AMOUNT);
		return 400;
	}
	const char *cur = json_string_value(json_object_get(doc, "currency"));
	if (!cur || strlen(cur) != 3 || !islower((unsigned char)cur[0]) || !islower((unsigned char)cur[1]) ||
	    !islower((unsigned char)cur[2])) {
		snprintf(err, errlen, "currency must be a three-letter ISO code in lower case (\"usd\")");
		return 400;
	}
	const char *cus = json_string_value(json_object_get(doc, "customer"));
	if (!cus || !*cus || strlen(cus) > MAX_NAME || !printable(cus)) {
		snprintf(err, errlen, "customer must be 1..%d printable characters", MAX_NAME);
		return 400;
	}
	snprintf(ctx->amount, sizeof(ctx->amount), "%lld", (long long)json_integer_value(amount));
	snprintf(ctx->currency, sizeof(ctx->currency), "%s", cur);
	snprintf(ctx->customer, sizeof(ctx->customer), "%s", cus);
	return 0;
}

int idempotency_parse_charge(struct charge_ctx *ctx, char *err, size_t errlen)
{
	int code = parse_headers(ctx, err, errlen);
	if (code)
		return code;
	json_t *doc = http_read_json(ctx->req, (size_t)ctx->api->cfg.max_body, err, errlen);
	if (!doc)
		return 400;
	code = parse_fields(ctx, doc, err, errlen);
	if (!code && ctx->has_key) {
		/* canonical already: hashed as it is, not parsed and dumped again */
		char *canon = json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT);
		if (!canon || idem_fingerprint_canonical("POST", idem_route_paths[ctx->route], canon,
		                                         ctx->fingerprint, err, errlen) < 0)
			code = 500;
		free(canon);
	}
	json_decref(doc);
	return code;
}

/*
 * ---- the PostgreSQL route ----
 * A new key with nothing outside the database between the charge and its response (the fast
 * path): the key, the charge and the stored response in one statement, one transaction, one
 * round trip. A new key whose charge goes to the "card network" (X-Lab-Pause-Ms): the key and the
 * charge in one transaction (recovery point charge_created), the response in the next.
 */

/* expires: created_at + the window (seconds), as an HTTP-date */
#define SQL_EXPIRES(created, window)                                                                         \
	"to_char((" created " + make_interval(secs => " window ")) AT TIME ZONE 'UTC', "                     \
	"'Dy, DD Mon YYYY HH24:MI:SS \"GMT\"')"

/*
 * A new key: the key row and the charge in one statement, one transaction, prepared once per
 * pooled connection ($8: no card network between the charge and its response). The charge's id
 * and time come first (v, materialized: nextval runs once), and its response is built from them
 * once, so that the key can go in finished and unlocked with it; with the card network it goes
 * in locked at charge_created and the response is stored after. The charge joins the key that
 * went in: a key that exists inserts nothing, so no charge and no row (the sequence number is
 * spent, as a failed INSERT spends one). It replaced a PL/pgSQL function (charge_new_key): the
 * same two INSERTs, run through SPI as two executor runs with the function call around them.
 */
#define RECOVERY_POINT(p)         "'" p "'::" SCHEMA ".recovery_point"
#define FINISHED(then, otherwise) "CASE WHEN $8::bool THEN " then " ELSE " otherwise " END"
#define FRESH_KEY_STATE                                                                                      \
	FINISHED(RECOVERY_POINT("finished"), RECOVERY_POINT("charge_created"))                               \
	", " FINISHED("NULL", "v.at") ", " FINISHED("201", "NULL") ", " FINISHED("v.body", "NULL")
#define FRESH_BODY SQL_CHARGE_BODY("n.id", "$5::bigint", "$6::text", "$4::text", "n.at")
static const char SQL_FRESH[] =
        "WITH v AS MATERIALIZED (SELECT n.id, n.at, " FRESH_BODY " AS body FROM"
        " (SELECT nextval('" SCHEMA ".charges_id_seq') AS id, now() AS at) n),"
        " k AS (INSERT INTO " SCHEMA ".idempotency_keys"
        " (client, key, fingerprint, recovery_point, locked_at, response_code, response_body, created_at)"
        " SELECT $1::text, $2::text, $3::text, " FRESH_KEY_STATE ", v.at FROM v"
        " ON CONFLICT (client, key) DO NOTHING RETURNING id),"
        " c AS (INSERT INTO " SCHEMA ".charges"
        " (id, idempotency_key_id, client, idempotency_key, customer, amount_cents, currency, created_at)"
        " SELECT v.id, k.id, $1, $2, $4, $5::bigint, $6, v.at FROM v, k)"
        " SELECT k.id, v.body, " SQL_EXPIRES("v.at", "$7::float8") " FROM k, v";

/*
 * The key exists: lock its row, and take the request's lock when the fingerprint matches, it is
 * not finished, and nobody holds it (or its holder died: locked longer than the lock timeout).
 * The charge comes along, for a request that resumes from charge_created.
 */
#define EXISTING_EXPIRES SQL_EXPIRES("k.created_at", "$5::float8")
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
        " k.response_body, " EXISTING_EXPIRES ", " SQL_CHARGE_BODY_C " FROM k LEFT JOIN " SCHEMA
        ".charges c ON c.idempotency_key_id = k.id";

static const char SQL_UNLOCK[] = "UPDATE " SCHEMA ".idempotency_keys SET locked_at = NULL WHERE id = $1";

const char IDEM_SQL_PAUSE[] = "SELECT pg_sleep($1::float8 / 1000) /* " PAUSE_MARK " */";

#define UNKEYED_BODY SQL_CHARGE_BODY("id", "amount_cents", "currency", "customer", "created_at")
const char IDEM_SQL_UNKEYED[] =
        "INSERT INTO " SCHEMA ".charges (client, idempotency_key, customer, amount_cents, currency)"
        " VALUES ($1, $2, $3, $4::bigint, $5) RETURNING " UNKEYED_BODY;

/*
 * The request path's statements, each prepared once per pooled connection on its first use
 * (pool_query_prepared): the server parses and plans them once, not on every charge.
 */
static const struct pool_stmt STMT_FRESH = {"idem_fresh", SQL_FRESH, 8};
static const struct pool_stmt STMT_EXISTING = {"idem_existing", SQL_EXISTING, 5};
static const struct pool_stmt STMT_UNLOCK = {"idem_unlock", SQL_UNLOCK, 1};
static const struct pool_stmt STMT_STORE = {"idem_store", IDEM_SQL_STORE, 3};
const struct pool_stmt IDEM_STMT_PAUSE = {"idem_pause", IDEM_SQL_PAUSE, 1};
const struct pool_stmt IDEM_STMT_UNKEYED = {"idem_unkeyed", IDEM_SQL_UNKEYED, 5};

#define STORE_FAILED "the charge was made but its response could not be stored; retry with the same key"

static void unlock_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	(void)res;
	(void)err;
	/* best effort: when it fails, the lock times out instead */
	idem_ctx_fail(arg, 500, STORE_FAILED);
}

/*
 * The request failed after its key was locked. On a live connection, unlock the key so that a
 * retry may resume at once; on a dead one (killed, crashed) the lock times out instead.
 */
static void fail_locked(struct charge_ctx *ctx, PGresult *res)
{
	if (res && ctx->conn && PQstatus(pool_conn_pg(ctx->conn)) == CONNECTION_OK) {
		const char *p[] = {ctx->key_id};
		if (pool_query_prepared(ctx->conn, &STMT_UNLOCK, p, unlock_cb, ctx) == 0)
			return;
	}
	idem_ctx_fail(ctx, 500, STORE_FAILED);
}

static void store_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	(void)err;
	struct charge_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
		fail_locked(ctx, res);
		return;
	}
	idem_send_stored(ctx);
}

/* ctx->body is the response built with the charge (SQL_FRESH) or from it (SQL_EXISTING). */
static void store_response(struct charge_ctx *ctx)
{
	ctx->code = 201;
	const char *p[] = {ctx->key_id, "201", ctx->body};
	if (pool_query_prepared(ctx->conn, &STMT_STORE, p, store_cb, ctx) < 0)
		fail_locked(ctx, NULL);
}

static void pause_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	(void)err;
	struct charge_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		fail_locked(ctx, res);
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
		if (pool_query_prepared(ctx->conn, &IDEM_STMT_PAUSE, p, pause_cb, ctx) < 0)
			fail_locked(ctx, NULL);
		return;
	}
	store_response(ctx);
}

static void fail_query(struct charge_ctx *ctx, PGresult *res, const char *err)
{
	char msg[256];
	pg_message_line(msg, sizeof(msg), res ? PQresultErrorMessage(res) : err);
	idem_ctx_fail(ctx, 500, msg);
}

/* The key was there: 422, the replay, 409, or the lock is ours and the request resumes. */
static void existing_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct charge_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		fail_query(ctx, res, err);
		return;
	}
	if (PQntuples(res) != 1) {
		/* reaped between the two statements: the client's retry starts afresh */
		idem_ctx_fail(ctx, 409, "this key was just expired; retry");
		return;
	}
	idem_copy_value(ctx->key_id, sizeof(ctx->key_id), res, 0);
	idem_copy_value(ctx->expires, sizeof(ctx->expires), res, 6);
	if (strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
		idem_ctx_fail(ctx, 422,
		              "this Idempotency-Key was used with a different request; use a new key");
		return;
	}
	if (strcmp(PQgetvalue(res, 0, 2), "finished") == 0) {
		ctx->code = atoi(PQgetvalue(res, 0, 4));
		ctx->body = strdup(PQgetvalue(res, 0, 5));
		ctx->replayed = true;
		if (!ctx->body)
			idem_ctx_fail(ctx, 500, "out of memory");
		else
			idem_send_stored(ctx);
		return;
	}
	if (strcmp(PQgetvalue(res, 0, 3), "t") != 0) {
		idem_ctx_fail(ctx, 409, "a request with this Idempotency-Key is in progress; retry later");
		return;
	}
	/* the lock is ours and the charge exists (its response built from it): resume from charge_created */
	if (idem_take_body(ctx, res, 7) < 0) {
		fail_locked(ctx, NULL);
		return;
	}
	after_charge(ctx);
}

static void fresh_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	struct charge_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		/* nothing was written: the statement was the whole transaction */
		fail_query(ctx, res, err);
		return;
	}
	if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
		idem_copy_value(ctx->key_id, sizeof(ctx->key_id), res, 0);
		idem_copy_value(ctx->expires, sizeof(ctx->expires), res, 2);
		if (idem_take_body(ctx, res, 1) < 0) {
			fail_locked(ctx, NULL);
			return;
		}
		/* the card network, then the response in a transaction of its own */
		if (ctx->pause_ms > 0) {
			after_charge(ctx);
			return;
		}
		/* committed finished, with its response, in the charge's transaction */
		ctx->code = 201;
		idem_send_stored(ctx);
		return;
	}
	char lock_ms[24], window[24];
	snprintf(lock_ms, sizeof(lock_ms), "%d", ctx->api->cfg.lock_timeout_ms);
	snprintf(window, sizeof(window), "%d", ctx->api->cfg.key_window_s);
	const char *p[] = {ctx->client, ctx->key, ctx->fingerprint, lock_ms, window};
	if (pool_query_prepared(c, &STMT_EXISTING, p, existing_cb, ctx) < 0)
		idem_ctx_fail(ctx, 500, "could not send the query");
}

static void unkeyed_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct charge_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		fail_query(ctx, res, err);
		return;
	}
	if (idem_take_body(ctx, res, 0) < 0) {
		idem_ctx_fail(ctx, 500, "out of memory");
		return;
	}
	ctx->code = 201;
	idem_send_stored(ctx);
}

static void pg_acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct charge_ctx *ctx = arg;
	if (!conn) {
		idem_ctx_fail(ctx, 503, err);
		return;
	}
	ctx->conn = conn;
	int rc;
	if (!ctx->has_key) {
		const char *p[] = {ctx->client, NULL, ctx->customer, ctx->amount, ctx->currency};
		rc = pool_query_prepared(conn, &IDEM_STMT_UNKEYED, p, unkeyed_cb, ctx);
	} else {
		char window[24];
		snprintf(window, sizeof(window), "%d", ctx->api->cfg.key_window_s);
		const char *p[] = {
		        ctx->client, ctx->key,      ctx->fingerprint, ctx->customer,
		        ctx->amount, ctx->currency, window,           ctx->pause_ms > 0 ? "f" : "t"};
		rc = pool_query_prepared(conn, &STMT_FRESH, p, fresh_cb, ctx);
	}
	if (rc < 0)
		idem_ctx_fail(ctx, 500, "could not send the query");
}

static void charges_cb(struct evhttp_request *req, void *arg)
{
	struct route_ctx *rc = arg;
	if (rc->api->stopping) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
		http_reply_error(req, 503, "the API is shutting down; retry with the same key");
		return;
	}
	struct charge_ctx *ctx = ctx_new(rc->api, req, rc->route);
	if (!ctx) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	char err[256];
	int code = idempotency_parse_charge(ctx, err, sizeof(err));
	if (code) {
		idem_ctx_fail(ctx, code, err);
		return;
	}
	if (rc->route == ROUTE_PG)
		pool_acquire(rc->api->pool, "charge_handler", pg_acquired_cb, ctx);
	else
		idem_redis_charge(ctx);
}

/* ---- starting and stopping ---- */

/*
 * The request was still in progress when the API stopped: its connection went with the pool.
 * A response already stored (held back by X-Lab-Delay-Ms) is sent now; anything else gets 503.
 */
static void ctx_abort(struct charge_ctx *ctx)
{
	ctx->conn = NULL;
	if (ctx->timer && ctx->body) {
		send_now(ctx);
		return;
	}
	idem_ctx_fail(ctx, 503, "the API is shutting down; retry with the same key");
}

/*
 * http_app_stop's release, with the loop thread already stopped: Redis first (its pending
 * callbacks answer their requests), then the pool (waiters answer "pool closed"; connections
 * in use are closed), the reaper's and the completer's timers, and last the requests that were
 * mid-query, each answered before the server and its requests are freed (http_app_stop then
 * turns the loop to put the answers on the wire).
 */
static void api_release(void *arg)
{
	struct idempotency_api *api = arg;
	api->stopping = true;
	idem_redis_free(api);
	pool_free(api->pool);
	api->pool = NULL;
	idem_jobs_free(api);
	while (api->live)
		ctx_abort(api->live);
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
	if (http_app_open(&api->app, port, err, errlen) < 0)
		goto err;
	struct pool_config pc = {
	        .conninfo = cfg->pg_url,
	        .min_idle = cfg->pool_min_idle,
	        .max_size = cfg->pool_size,
	        .acquire_timeout_ms = cfg->acquire_timeout_ms,
	};
	api->pool = pool_new(api->app.base, &pc, err, errlen);
	if (!api->pool)
		goto err;
	if (cfg->redis_url && idem_redis_start(api, err, errlen) < 0)
		goto err;
	for (int r = 0; r < ROUTE_COUNT; r++) {
		if (r != ROUTE_PG && !cfg->redis_url)
			continue;
		api->routes[r] = (struct route_ctx){api, (enum route)r};
		http_server_route(api->app.server, idem_route_paths[r], charges_cb, &api->routes[r]);
	}
	if (idem_jobs_start(api, err, errlen) < 0 ||
	    pool_wait_ready(api->pool, POOL_READY_MS, err, errlen) < 0 ||
	    http_app_run(&api->app, err, errlen) < 0)
		goto err;
	return api;
err:
	idempotency_api_stop(api);
	return NULL;
}

int idempotency_api_port(const struct idempotency_api *api)
{
	return http_server_port(api->app.server);
}

void idempotency_api_stop(struct idempotency_api *api)
{
	if (!api)
		return;
	http_app_stop(&api->app, api_release, api);
	free(api);
}
