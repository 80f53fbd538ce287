/*
 * api.c — lab-pooling's HTTP API (see api.h for its routes). Every handler runs on the API's
 * loop thread: it parses, acquires (pool.h calls back when a connection is free, or with an
 * error after the acquire timeout), runs one statement with pool_query_prepared (prepared once
 * per pooled connection, on its first use there), replies, releases.
 *
 * A request's context lives from route_cb to the callback that replies: acquired_cb when the
 * acquire fails, the query callback otherwise. When the API stops, pool_free calls those
 * callbacks for every request still waiting or running ("pool closed"), before the server and
 * its requests are freed (http_app_stop's order): nothing replies to a freed request, and no
 * context is left behind.
 */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "pg.h"

#define SCHEMA "lab_pooling"
/*
 * The connection-per-request path may open this many at once: twice the lab's 8 clients, and
 * few enough that a local client hammering /direct cannot take the server's max_connections.
 */
#define DIRECT_MAX 16
/* /direct waits this long for a slot among DIRECT_MAX: a connect takes ~25 ms here */
#define DIRECT_ACQUIRE_TIMEOUT_MS 10000
/* the pool under test opens before the API answers; a server this slow is not coming */
#define POOL_READY_TIMEOUT_MS 10000
/* /stats lists at most this many connections held past the leak threshold */
#define STATS_LEAKS 16

static const char *const route_paths[POOLING_ROUTE_COUNT] = {"/pooled", "/direct", "/orders", "/orders-leaky",
                                                             "/cpu"};
/* the holder a leak report names: the handler that acquired */
static const char *const route_holders[POOLING_ROUTE_COUNT] = {
        "pooled_handler", "direct_handler", "orders_handler", POOLING_LEAKY_HOLDER, "cpu_handler"};

struct route_ctx {
	struct pooling_api *api;
	enum pooling_route route;
};

struct pooling_api {
	const struct pooling_config *cfg;
	int pool_size;
	struct http_app app;
	struct pool *pool;   /* the pool under test */
	struct pool *direct; /* connection per request: every connection discarded after one use */
	struct pool *piped;  /* /pipelined: cfg->pipe_conns connections in pipeline mode, or NULL */
	struct route_ctx routes[POOLING_ROUTE_COUNT];
	uint64_t started_us;
	/* owned by the loop thread; read through http_thread_call or after the loop stopped */
	struct hist hold;  /* acquire to release, for handlers that release */
	struct hist waits; /* acquire waits on the pool under test in this window */
	uint64_t leaks;
	struct pool_leak first_leak;
	uint64_t leaked;         /* connections the leaky handler kept (its bug, counted at the bug) */
	uint64_t last_leaked_us; /* hist_now_us() of the last of them */
	struct pooling_api_totals *totals_out; /* where api_release_cb copies them, or NULL */
	bool unprepared; /* pooling_api_set_prepared(false): statements sent whole (atomic) */
};

/* One request in a handler, from acquire to reply. */
struct request_ctx {
	struct pooling_api *api;
	struct evhttp_request *req;
	enum pooling_route route;
	struct pool_conn *conn;
	uint64_t asked_us;
	uint64_t acquired_us;
	struct pooling_params p;
};

const char *pooling_route_path(enum pooling_route route)
{
	return route >= 0 && route < POOLING_ROUTE_COUNT ? route_paths[route] : "/";
}

static void leak_cb(const struct pool_leak *leak, void *arg)
{
	struct pooling_api *api = arg;
	if (api->leaks++ == 0) {
		api->first_leak = *leak;
		api->first_leak.acquired_at_us = leak->acquired_at_us - api->started_us;
	}
}

/* Gives the connection back (or closes it, for /direct) and frees the request. */
static void finish(struct request_ctx *ctx)
{
	if (ctx->conn) {
		if (ctx->route == POOLING_ROUTE_DIRECT) {
			pool_discard(ctx->conn, "connection per request");
		} else {
			hist_record(&ctx->api->hold, hist_now_us() - ctx->acquired_us);
			pool_release(ctx->conn);
		}
	}
	free(ctx);
}

/* The answer of a route whose statement returns nothing the client needs: {"ok": true}, or 500. */
static void reply_ok(struct evhttp_request *req, PGresult *res, const char *err)
{
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
		http_reply_error(req, 500, "query failed: %s", res ? PQresultErrorMessage(res) : err);
	else
		http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static void simple_query_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct request_ctx *ctx = arg;
	reply_ok(ctx->req, res, err);
	finish(ctx);
}

static void orders_query_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct request_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		http_reply_error(ctx->req, 500, "query failed: %s", res ? PQresultErrorMessage(res) : err);
	} else if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 404, "no order %ld", ctx->p.order_id);
		if (ctx->route == POOLING_ROUTE_ORDERS_LEAKY) {
			/* THE BUG this lab shows: an early return on the error path skips the release. */
			ctx->api->leaked++;
			ctx->api->last_leaked_us = hist_now_us();
			free(ctx);
			return;
		}
	} else {
		http_reply_json(ctx->req, 200,
		                json_pack("{s:I,s:I}", "id", (json_int_t)atol(PQgetvalue(res, 0, 0)),
		                          "total_cents", (json_int_t)atol(PQgetvalue(res, 0, 1))));
	}
	finish(ctx);
}

/*
 * The handlers' statements, each prepared once per pooled connection on its first use (pool.h):
 * a request then costs the server a Bind and an Execute, no parse, no plan.
 */
static const struct pool_stmt SQL_SELECT1 = {"pooling_select1", "SELECT 1", 0};
static const struct pool_stmt SQL_HOLD = {"pooling_hold", "SELECT pg_sleep($1::float8 / 1000)", 1};
static const struct pool_stmt SQL_ORDER = {
        "pooling_order",
        "SELECT id, total_cents, pg_sleep($2::float8 / 1000) FROM " SCHEMA ".orders WHERE id = $1", 2};
static const struct pool_stmt SQL_CPU = {"pooling_cpu", "SELECT sum(i) FROM generate_series(1, $1::int) i",
                                         1};

/*
 * The route's statement: prepared, or sent whole (parsed and planned every time). Whole for
 * /direct, whose connection serves one request (a prepare would add a round trip to each), and
 * for every route when the bench asks (pooling_api_set_prepared).
 */
static int run_stmt(struct request_ctx *ctx, const struct pool_stmt *s, const char *const *params,
                    pool_query_cb cb)
{
	if (ctx->route == POOLING_ROUTE_DIRECT || __atomic_load_n(&ctx->api->unprepared, __ATOMIC_RELAXED))
		return pool_query(ctx->conn, s->sql, s->nparams, params, cb, ctx);
	return pool_query_prepared(ctx->conn, s, params, cb, ctx);
}

/* /pooled's (and /pipelined's) statement: SELECT 1, or the hold, whose one parameter is hold_ms */
static const struct pool_stmt *pooled_stmt(const struct request_ctx *ctx)
{
	return strcmp(ctx->p.hold_ms, "0") == 0 ? &SQL_SELECT1 : &SQL_HOLD;
}

/* Sends the route's one statement on the connection just acquired. */
static int send_query(struct request_ctx *ctx)
{
	const char *hold[] = {ctx->p.hold_ms};
	const char *order[] = {ctx->p.order, ctx->p.hold_ms};
	const char *rows[] = {ctx->p.rows};
	switch (ctx->route) {
	case POOLING_ROUTE_POOLED:
	case POOLING_ROUTE_DIRECT:
		return run_stmt(ctx, pooled_stmt(ctx), hold, simple_query_cb);
	case POOLING_ROUTE_ORDERS:
	case POOLING_ROUTE_ORDERS_LEAKY:
		return run_stmt(ctx, &SQL_ORDER, order, orders_query_cb);
	default:
		return run_stmt(ctx, &SQL_CPU, rows, simple_query_cb);
	}
}

void pooling_api_set_prepared(struct pooling_api *api, bool prepared)
{
	__atomic_store_n(&api->unprepared, !prepared, __ATOMIC_RELAXED);
}

static void acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct request_ctx *ctx = arg;
	if (ctx->route != POOLING_ROUTE_DIRECT)
		hist_record(&ctx->api->waits, hist_now_us() - ctx->asked_us);
	if (!conn) {
		/* the acquire timeout: the queue's wait reaches the API as 503 (also "pool closed") */
		evhttp_add_header(evhttp_request_get_output_headers(ctx->req), "Retry-After", "1");
		http_reply_error(ctx->req, 503, "%s", err);
		free(ctx);
		return;
	}
	ctx->conn = conn;
	ctx->acquired_us = hist_now_us();
	if (send_query(ctx) < 0) {
		http_reply_error(ctx->req, 500, "could not send the query");
		finish(ctx);
	}
}

int pooling_parse_request(const struct pooling_config *cfg, enum pooling_route route,
                          struct evhttp_request *req, struct pooling_params *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	long hold = cfg->hold_ms;
	if (http_query_long(req, "hold_ms", 0, POOLING_HOLD_MS_MAX, &hold, err, errlen) < 0)
		return -1;
	snprintf(out->hold_ms, sizeof(out->hold_ms), "%ld", hold);
	snprintf(out->rows, sizeof(out->rows), "%d", cfg->cpu_rows);
	if (route != POOLING_ROUTE_ORDERS && route != POOLING_ROUTE_ORDERS_LEAKY)
		return 0;
	int found = http_query_long(req, "id", 1, 1000000000, &out->order_id, err, errlen);
	if (found < 0)
		return -1;
	if (found == 0) {
		snprintf(err, errlen, "id is required (%s?id=42)", route_paths[route]);
		return -1;
	}
	snprintf(out->order, sizeof(out->order), "%ld", out->order_id);
	return 0;
}

/* /pipelined's statement is answered: the reply; no connection to give back. */
static void piped_query_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct request_ctx *ctx = arg;
	reply_ok(ctx->req, res, err);
	free(ctx);
}

/*
 * What every route does first: GET only (405), its context, its parameters (400). The context, or
 * NULL when the request was answered here.
 */
static struct request_ctx *request_begin(struct pooling_api *api, enum pooling_route route,
                                         struct evhttp_request *req)
{
	char err[256];
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		http_reply_error(req, 405, "only GET here");
		return NULL;
	}
	struct request_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		http_reply_error(req, 500, "out of memory");
		return NULL;
	}
	ctx->api = api;
	ctx->req = req;
	ctx->route = route;
	if (pooling_parse_request(api->cfg, route, req, &ctx->p, err, sizeof(err)) < 0) {
		http_reply_error(req, 400, "%s", err);
		free(ctx);
		return NULL;
	}
	return ctx;
}

/*
 * GET /pipelined?hold_ms=0: /pooled's statement through the pipelined pool (pool_pipe_query):
 * no acquire; several requests' statements in flight on each of its few connections, each
 * statement its own transaction. A hold delays every statement behind it on its connection.
 */
static void pipelined_cb(struct evhttp_request *req, void *arg)
{
	struct pooling_api *api = arg;
	struct request_ctx *ctx = request_begin(api, POOLING_ROUTE_POOLED, req);
	if (!ctx)
		return;
	const char *hold[] = {ctx->p.hold_ms};
	if (pool_pipe_query(api->piped, pooled_stmt(ctx), hold, piped_query_cb, ctx) < 0) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
		http_reply_error(req, 503, "no pipelined connection is open now");
		free(ctx);
	}
}

static void route_cb(struct evhttp_request *req, void *arg)
{
	struct route_ctx *rc = arg;
	struct pooling_api *api = rc->api;
	struct request_ctx *ctx = request_begin(api, rc->route, req);
	if (!ctx)
		return;
	ctx->asked_us = hist_now_us();
	pool_acquire(rc->route == POOLING_ROUTE_DIRECT ? api->direct : api->pool, route_holders[rc->route],
	             acquired_cb, ctx);
}

static json_t *stats_json(const struct pool_stats *s, int max_size)
{
	return json_pack("{s:i,s:i,s:i,s:i,s:i,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:s}", "max_size",
	                 max_size, "active", s->active, "idle", s->idle, "opening", s->opening, "waiting",
	                 s->waiting, "oldest_wait_ms", s->oldest_wait_us / 1000.0, "acquired",
	                 (json_int_t)s->acquired, "timeouts", (json_int_t)s->timeouts, "opened",
	                 (json_int_t)s->opened, "closed_broken", (json_int_t)s->closed_broken,
	                 "connect_errors", (json_int_t)s->connect_errors, "leaks", (json_int_t)s->leaks,
	                 "max_wait_ms", s->max_wait_us / 1000.0, "wait_p50_ms",
	                 hist_percentile(&s->wait, 50) / 1000.0, "wait_p99_ms",
	                 hist_percentile(&s->wait, 99) / 1000.0, "last_error", s->last_error);
}

/* GET /stats: the pool as PgBouncer's SHOW POOLS would show it, and who holds too long. */
static void stats_cb(struct evhttp_request *req, void *arg)
{
	struct pooling_api *api = arg;
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		http_reply_error(req, 405, "only GET here");
		return;
	}
	struct pool_stats *s = malloc(sizeof(*s));
	if (!s) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	pool_stats(api->pool, s);
	json_t *leaks = json_array();
	struct pool_leak held[STATS_LEAKS];
	int n = pool_leaks(api->pool, held, STATS_LEAKS);
	for (int i = 0; i < n; i++)
		json_array_append_new(leaks, json_pack("{s:s,s:f,s:i}", "holder", held[i].holder, "held_ms",
		                                       held[i].held_us / 1000.0, "backend_pid",
		                                       held[i].backend_pid));
	http_reply_json(req, 200,
	                json_pack("{s:o,s:o}", "pool", stats_json(s, api->pool_size), "leaks", leaks));
	free(s);
}

/* The pools, before the server answers: the pool under test open, the direct path empty. */
static int api_pools_open(struct pooling_api *api, char *err, size_t errlen)
{
	const struct pooling_config *cfg = api->cfg;
	struct pool_config pc = {
	        .conninfo = cfg->pg_url,
	        .min_idle = api->pool_size,
	        .max_size = api->pool_size,
	        .acquire_timeout_ms = cfg->acquire_timeout_ms,
	        .leak_threshold_ms = cfg->leak_threshold_ms,
	        .leak_cb = leak_cb,
	        .leak_arg = api,
	};
	api->pool = pool_new(api->app.base, &pc, err, errlen);
	if (!api->pool || pool_wait_ready(api->pool, POOL_READY_TIMEOUT_MS, err, errlen) < 0)
		return -1;
	struct pool_config dc = {
	        .conninfo = cfg->pg_url,
	        .min_idle = 0,
	        .max_size = DIRECT_MAX,
	        .acquire_timeout_ms = DIRECT_ACQUIRE_TIMEOUT_MS,
	};
	api->direct = pool_new(api->app.base, &dc, err, errlen);
	if (!api->direct)
		return -1;
	if (cfg->pipe_conns <= 0)
		return 0;
	struct pool_config pp = {
	        .conninfo = cfg->pg_url,
	        .min_idle = cfg->pipe_conns,
	        .max_size = cfg->pipe_conns,
	        .pipeline = true,
	};
	api->piped = pool_new(api->app.base, &pp, err, errlen);
	return api->piped && pool_wait_ready(api->piped, POOL_READY_TIMEOUT_MS, err, errlen) == 0 ? 0 : -1;
}

struct pooling_api *pooling_api_start(const struct pooling_config *cfg, int pool_size, int port, char *err,
                                      size_t errlen)
{
	struct pooling_api *api = calloc(1, sizeof(*api));
	if (!api) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	api->cfg = cfg;
	api->pool_size = pool_size;
	hist_init(&api->hold);
	hist_init(&api->waits);
	api->started_us = hist_now_us();
	if (http_app_open(&api->app, port, err, errlen) < 0 || api_pools_open(api, err, errlen) < 0)
		goto err;
	for (int r = 0; r < POOLING_ROUTE_COUNT; r++) {
		api->routes[r] = (struct route_ctx){api, (enum pooling_route)r};
		http_server_route(api->app.server, route_paths[r], route_cb, &api->routes[r]);
	}
	http_server_route(api->app.server, "/stats", stats_cb, api);
	if (api->piped)
		http_server_route(api->app.server, "/pipelined", pipelined_cb, api);
	if (http_app_run(&api->app, err, errlen) < 0)
		goto err;
	return api;
err:
	pooling_api_stop(api, NULL);
	return NULL;
}

int pooling_api_port(const struct pooling_api *api)
{
	return http_server_port(api->app.server);
}

struct snapshot_call {
	struct pooling_api *api;
	struct pooling_snapshot *out;
};

static void snapshot_fn(void *arg)
{
	struct snapshot_call *c = arg;
	memset(&c->out->longest, 0, sizeof(c->out->longest));
	pool_stats(c->api->pool, &c->out->stats);
	c->out->nleaks = pool_leaks(c->api->pool, &c->out->longest, 1);
}

int pooling_api_snapshot(struct pooling_api *api, struct pooling_snapshot *out, char *err, size_t errlen)
{
	struct snapshot_call c = {api, out};
	if (http_thread_call(api->app.thread, snapshot_fn, &c) < 0) {
		snprintf(err, errlen, "cannot read the pool on the API's loop");
		return -1;
	}
	return 0;
}

struct window_call {
	struct pooling_api *api;
	struct hist *waits;
};

static void window_fn(void *arg)
{
	struct window_call *w = arg;
	if (w->waits)
		*w->waits = w->api->waits;
	hist_init(&w->api->waits);
}

int pooling_api_window(struct pooling_api *api, struct hist *waits, char *err, size_t errlen)
{
	struct window_call w = {api, waits};
	if (http_thread_call(api->app.thread, window_fn, &w) < 0) {
		snprintf(err, errlen, "cannot read the waits on the API's loop");
		return -1;
	}
	return 0;
}

/* http_app_stop's release step: the loop has stopped, the server and its requests still live. */
static void api_release_cb(void *arg)
{
	struct pooling_api *api = arg;
	struct pooling_api_totals *t = api->totals_out;
	if (t) {
		memset(t, 0, sizeof(*t));
		if (api->pool)
			pool_stats(api->pool, &t->pool);
		if (api->direct)
			pool_stats(api->direct, &t->direct);
		if (api->piped)
			pool_stats(api->piped, &t->piped);
		t->hold = api->hold;
		t->leaks = api->leaks;
		t->first_leak = api->first_leak;
		t->leaked = api->leaked;
		t->last_leaked_us = api->last_leaked_us;
	}
	/* each request still waiting or running gets its reply here, and its context is freed */
	pool_free(api->direct);
	pool_free(api->pool);
	pool_free(api->piped);
	api->direct = api->pool = api->piped = NULL;
}

void pooling_api_stop(struct pooling_api *api, struct pooling_api_totals *totals)
{
	if (!api)
		return;
	api->totals_out = totals;
	http_app_stop(&api->app, api_release_cb, api);
	free(api);
}
