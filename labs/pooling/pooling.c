/*
 * pooling.c — the experiment of lab-pooling (see pooling.h for the phases). The telling is
 * in main.c; nothing here prints.
 *
 * The API and its pools run on one event loop in a thread of their own; the load generator
 * runs in the caller's thread. The lab reads the pool's state while the load runs through
 * http_thread_call, so the numbers are the pool's own and no lock is needed.
 */
#include "pooling.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg.h"

#define SCHEMA "lab_pooling"
/* 100 orders; ids above ORDERS are missing, and a missing id is the leaky handler's 404 path. */
#define ORDERS             100
#define MISSING_ORDER_BASE 100000
/* one client in four follows a stale link to missing orders: the leaky handler loses a
 * connection on each of their requests, so the pool drains after pool_size of them */
#define STALE_EVERY 4
/* phase 1 times this many connects one at a time before the load (the median of 11) */
#define CONNECT_SAMPLES 11
/* the connection-per-request path may open this many at once: more than any client count */
#define DIRECT_MAX 64

void pooling_config_default(struct pooling_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	/* 5 connections: cores x 2 + 1 on this 2-core machine, and small enough that 50 clients queue */
	cfg->pool_size = 5;
	/* 20 ms per request: the ceiling pool_size / hold is 250 req/s, easy to read and to predict */
	cfg->hold_ms = 20;
	/* 100 ms: five times the hold, so the queue must be 25 deep before requests fail */
	cfg->acquire_timeout_ms = 100;
	/* 500 ms: 25 times the normal hold, so no honest request is ever reported */
	cfg->leak_threshold_ms = 500;
	/* 8 clients: enough to overlap connects on 2 cores without queueing on the pool */
	cfg->compare_clients = 8;
	/* a connect costs ~25 ms on this VM: 60 of them already show the gap, in 1.5 s */
	cfg->compare_requests = quick ? 60 : 400;
	/* below, at, twice and ten times the pool size */
	int levels[] = {2, 5, 10, 50};
	cfg->nlevels = 4;
	memcpy(cfg->levels, levels, sizeof(levels));
	/* --quick: 125 requests a level at the cap, enough for p99 and the 503s */
	cfg->level_ms = quick ? 500 : 3000;
	cfg->leak_clients = 20;
	/* the leak drains the pool in about 0.1 s; a second shows it staying drained */
	cfg->leak_ms = quick ? 800 : 4000;
	/* 2 connections for 20 clients: 503s at the API like the leak, for an honest reason */
	cfg->undersized_pool = 2;
	/* 4 x 30 = 120 connections against max_connections 100 (97 for a non-superuser) */
	cfg->instances = 4;
	cfg->instance_pool = 30;
	/* one, the cores, the rule of thumb, and far past it (--quick: one, the rule, far past) */
	int sizes[] = {1, 2, 5, 10, 30}, quick_sizes[] = {1, 5, 30};
	cfg->nsizes = quick ? 3 : 5;
	memcpy(cfg->sizes, quick ? quick_sizes : sizes, quick ? sizeof(quick_sizes) : sizeof(sizes));
	/* 32 clients: more than every pool size, so each pool is kept full */
	cfg->size_clients = 32;
	cfg->size_ms = quick ? 400 : 2500;
	/* about 4 ms of CPU per query here: the server, not the pool, is the bottleneck */
	cfg->cpu_rows = 20000;
}

int pooling_setup(const struct pooling_config *cfg, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	if (pg_schema_create(conn, SCHEMA, err, errlen) < 0)
		goto out;
	if (pg_exec(conn,
	            "CREATE TABLE " SCHEMA ".orders (id int PRIMARY KEY, total_cents int NOT NULL);"
	            "INSERT INTO " SCHEMA ".orders SELECT i, 100 * i FROM generate_series(1, 100) i",
	            err, errlen) < 0)
		goto out;
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

int pooling_teardown(const struct pooling_config *cfg, char *err, size_t errlen)
{
	return pg_url_schema_drop(cfg->pg_url, SCHEMA, err, errlen);
}

/* ---- the API ---- */

/* What each route runs once it holds a connection. */
enum route { ROUTE_POOLED, ROUTE_DIRECT, ROUTE_ORDERS, ROUTE_ORDERS_LEAKY, ROUTE_CPU, ROUTE_COUNT };

static const char *const route_paths[ROUTE_COUNT] = {"/pooled", "/direct", "/orders", "/orders-leaky",
                                                     "/cpu"};
/* the holder a leak report names: the handler that acquired */
static const char *const route_holders[ROUTE_COUNT] = {"pooled_handler", "direct_handler", "orders_handler",
                                                       "leaky_orders_handler", "cpu_handler"};

struct pooling_api;

struct route_ctx {
	struct pooling_api *api;
	enum route route;
};

struct pooling_api {
	const struct pooling_config *cfg;
	int pool_size;
	struct event_base *base;
	struct pool *pool;   /* the pool under test */
	struct pool *direct; /* connection per request: every connection discarded after one use */
	struct http_server *http;
	struct http_thread *thread;
	struct route_ctx routes[ROUTE_COUNT];
	uint64_t started_us;
	/* owned by the loop thread; read after the thread stopped or through http_thread_call */
	struct hist hold; /* acquire to release, for handlers that release */
	uint64_t leaks;
	struct pool_leak first_leak;
	uint64_t leaked;         /* connections the leaky handler kept (its bug, counted at the bug) */
	uint64_t last_leaked_us; /* hist_now_us() of the last of them */
};

/* One request in a handler, from acquire to reply. */
struct request_ctx {
	struct pooling_api *api;
	struct evhttp_request *req;
	enum route route;
	struct pool_conn *conn;
	uint64_t acquired_us;
	long order_id;
	char hold_ms[24];
	char order[24];
	char rows[24];
};

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
		if (ctx->route == ROUTE_DIRECT) {
			pool_discard(ctx->conn, "connection per request");
		} else {
			hist_record(&ctx->api->hold, hist_now_us() - ctx->acquired_us);
			pool_release(ctx->conn);
		}
	}
	free(ctx);
}

static void simple_query_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct request_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
		http_reply_error(ctx->req, 500, "query failed: %s", res ? PQresultErrorMessage(res) : err);
	else
		http_reply_json(ctx->req, 200, json_pack("{s:b}", "ok", 1));
	finish(ctx);
}

static void orders_query_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct request_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		http_reply_error(ctx->req, 500, "query failed: %s", res ? PQresultErrorMessage(res) : err);
	} else if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 404, "no order %ld", ctx->order_id);
		if (ctx->route == ROUTE_ORDERS_LEAKY) {
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

static void acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct request_ctx *ctx = arg;
	if (!conn) {
		/* the acquire timeout: the queue's wait reaches the API as 503 */
		evhttp_add_header(evhttp_request_get_output_headers(ctx->req), "Retry-After", "1");
		http_reply_error(ctx->req, 503, "%s", err);
		free(ctx);
		return;
	}
	ctx->conn = conn;
	ctx->acquired_us = hist_now_us();
	const char *hold[] = {ctx->hold_ms};
	const char *order[] = {ctx->order, ctx->hold_ms};
	const char *rows[] = {ctx->rows};
	int rc;
	switch (ctx->route) {
	case ROUTE_POOLED:
	case ROUTE_DIRECT:
		if (strcmp(ctx->hold_ms, "0") == 0)
			rc = pool_query(conn, "SELECT 1", 0, NULL, simple_query_cb, ctx);
		else
			rc = pool_query(conn, "SELECT pg_sleep($1::float8 / 1000)", 1, hold, simple_query_cb,
			                ctx);
		break;
	case ROUTE_ORDERS:
	case ROUTE_ORDERS_LEAKY:
		rc = pool_query(conn,
		                "SELECT id, total_cents, pg_sleep($2::float8 / 1000) FROM " SCHEMA
		                ".orders WHERE id = $1",
		                2, order, orders_query_cb, ctx);
		break;
	default:
		rc = pool_query(conn, "SELECT sum(i) FROM generate_series(1, $1::int) i", 1, rows,
		                simple_query_cb, ctx);
		break;
	}
	if (rc < 0) {
		http_reply_error(ctx->req, 500, "could not send the query");
		finish(ctx);
	}
}

static void route_cb(struct evhttp_request *req, void *arg)
{
	struct route_ctx *rc = arg;
	struct pooling_api *api = rc->api;
	char err[256];
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		http_reply_error(req, 405, "only GET here");
		return;
	}
	struct request_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	ctx->api = api;
	ctx->req = req;
	ctx->route = rc->route;
	long hold = api->cfg->hold_ms;
	if (http_query_long(req, "hold_ms", 0, 10000, &hold, err, sizeof(err)) < 0)
		goto bad;
	snprintf(ctx->hold_ms, sizeof(ctx->hold_ms), "%ld", hold);
	snprintf(ctx->rows, sizeof(ctx->rows), "%d", api->cfg->cpu_rows);
	if (rc->route == ROUTE_ORDERS || rc->route == ROUTE_ORDERS_LEAKY) {
		int found = http_query_long(req, "id", 1, 1000000000, &ctx->order_id, err, sizeof(err));
		if (found < 0)
			goto bad;
		if (found == 0) {
			snprintf(err, sizeof(err), "id is required (%s?id=42)", route_paths[rc->route]);
			goto bad;
		}
		snprintf(ctx->order, sizeof(ctx->order), "%ld", ctx->order_id);
	}
	pool_acquire(rc->route == ROUTE_DIRECT ? api->direct : api->pool, route_holders[rc->route],
	             acquired_cb, ctx);
	return;
bad:
	http_reply_error(req, 400, "%s", err);
	free(ctx);
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
	struct pool_stats *s = malloc(sizeof(*s));
	if (!s) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	pool_stats(api->pool, s);
	json_t *leaks = json_array();
	struct pool_leak held[16];
	int n = pool_leaks(api->pool, held, 16);
	for (int i = 0; i < n; i++)
		json_array_append_new(leaks, json_pack("{s:s,s:f,s:i}", "holder", held[i].holder, "held_ms",
		                                       held[i].held_us / 1000.0, "backend_pid",
		                                       held[i].backend_pid));
	http_reply_json(req, 200,
	                json_pack("{s:o,s:o}", "pool", stats_json(s, api->pool_size), "leaks", leaks));
	free(s);
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
	api->base = http_base_new();
	if (!api->base) {
		snprintf(err, errlen, "cannot create an event base");
		goto err;
	}
	api->started_us = hist_now_us();
	struct pool_config pc = {
	        .conninfo = cfg->pg_url,
	        .min_idle = pool_size,
	        .max_size = pool_size,
	        .acquire_timeout_ms = cfg->acquire_timeout_ms,
	        .leak_threshold_ms = cfg->leak_threshold_ms,
	        .leak_cb = leak_cb,
	        .leak_arg = api,
	};
	api->pool = pool_new(api->base, &pc, err, errlen);
	if (!api->pool || pool_wait_ready(api->pool, 10000, err, errlen) < 0)
		goto err;
	struct pool_config dc = {
	        .conninfo = cfg->pg_url,
	        .min_idle = 0,
	        .max_size = DIRECT_MAX,
	        .acquire_timeout_ms = 10000,
	};
	api->direct = pool_new(api->base, &dc, err, errlen);
	if (!api->direct)
		goto err;
	api->http = http_server_start(api->base, port, err, errlen);
	if (!api->http)
		goto err;
	for (int r = 0; r < ROUTE_COUNT; r++) {
		api->routes[r] = (struct route_ctx){api, (enum route)r};
		http_server_route(api->http, route_paths[r], route_cb, &api->routes[r]);
	}
	http_server_route(api->http, "/stats", stats_cb, api);
	api->thread = http_thread_start(api->base, err, errlen);
	if (!api->thread)
		goto err;
	return api;
err:
	pooling_api_stop(api, NULL);
	return NULL;
}

int pooling_api_port(const struct pooling_api *api)
{
	return http_server_port(api->http);
}

void pooling_api_stop(struct pooling_api *api, struct pooling_api_totals *totals)
{
	if (!api)
		return;
	http_thread_stop(api->thread);
	if (totals) {
		memset(totals, 0, sizeof(*totals));
		if (api->pool)
			pool_stats(api->pool, &totals->pool);
		if (api->direct)
			pool_stats(api->direct, &totals->direct);
		totals->hold = api->hold;
		totals->leaks = api->leaks;
		totals->first_leak = api->first_leak;
		totals->leaked = api->leaked;
		totals->last_leaked_us = api->last_leaked_us;
	}
	http_server_free(api->http);
	pool_free(api->direct);
	pool_free(api->pool);
	if (api->base)
		event_base_free(api->base);
	free(api);
}

struct snapshot_ctx {
	struct pooling_api *api;
	struct pool_stats stats;
	struct pool_leak longest; /* the connection held longest past the leak threshold */
	int nleaks;
};

static void snapshot_fn(void *arg)
{
	struct snapshot_ctx *s = arg;
	pool_stats(s->api->pool, &s->stats);
	s->nleaks = pool_leaks(s->api->pool, &s->longest, 1);
}

/* ---- running load against the API ---- */

struct run_ctx {
	const struct pooling_config *cfg;
	struct pooling_api *api;
	const char *what;
	int duration_ms;
	uint64_t max_requests;
	enum route route;
	uint64_t start_us;
	/* observed while the load runs */
	int max_waiting;
	struct snapshot_ctx snap; /* the last one */
	/* phase 3: every answer (200 or 404) and when its request was sent */
	uint64_t ok, not_found;
	uint64_t *answer_sent_us;
	size_t nanswers, answers_cap;
};

static void progress_cb(const struct load_progress *p, void *arg)
{
	struct run_ctx *rc = arg;
	rc->snap.api = rc->api;
	if (http_thread_call(rc->api->thread, snapshot_fn, &rc->snap) == 0 &&
	    rc->snap.stats.waiting > rc->max_waiting)
		rc->max_waiting = rc->snap.stats.waiting;
	if (rc->cfg->progress_cb) {
		double frac = rc->duration_ms ? p->elapsed_s * 1000.0 / rc->duration_ms
		                              : (double)p->completed / (double)rc->max_requests;
		rc->cfg->progress_cb(rc->what, frac > 1 ? 1 : frac, rc->cfg->progress_arg);
	}
}

/* /orders ids: orders that exist, but for the stale clients (the 404 path). */
static void orders_request_cb(struct load_request *r, struct evhttp_request *req, int client, uint64_t seq,
                              void *arg)
{
	(void)req;
	struct run_ctx *rc = arg;
	long id = client % STALE_EVERY == 0 ? MISSING_ORDER_BASE + (long)seq : 1 + (long)(seq % ORDERS);
	snprintf(r->path, sizeof(r->path), "%s?id=%ld", route_paths[rc->route], id);
}

static void orders_response_cb(struct evhttp_request *req, int client, uint64_t seq, uint64_t latency_us,
                               void *arg)
{
	(void)client;
	(void)seq;
	struct run_ctx *rc = arg;
	int code = req ? evhttp_request_get_response_code(req) : 0;
	if (code != 200 && code != 404)
		return;
	if (code == 200)
		rc->ok++;
	else
		rc->not_found++;
	if (rc->nanswers == rc->answers_cap) {
		size_t cap = rc->answers_cap ? rc->answers_cap * 2 : 1024;
		uint64_t *grown = realloc(rc->answer_sent_us, cap * sizeof(*grown));
		if (!grown)
			return; /* the count above still holds; only the timing of this one is lost */
		rc->answer_sent_us = grown;
		rc->answers_cap = cap;
	}
	rc->answer_sent_us[rc->nanswers++] = hist_now_us() - latency_us;
}

static int run_load(struct run_ctx *rc, const char *path, int clients, struct load_result *res, char *err,
                    size_t errlen)
{
	struct load_config lc = {
	        .port = pooling_api_port(rc->api),
	        .path = path,
	        .clients = clients,
	        .duration_ms = rc->duration_ms,
	        .max_requests = rc->max_requests,
	        .timeout_ms = 10000,
	        .progress_cb = progress_cb,
	        .arg = rc,
	};
	if (rc->route == ROUTE_ORDERS || rc->route == ROUTE_ORDERS_LEAKY) {
		lc.request_cb = orders_request_cb;
		lc.response_cb = orders_response_cb;
	}
	rc->start_us = hist_now_us();
	return load_run(&lc, res, err, errlen);
}

/* ---- phase 1: a new connection per request against a pool ---- */

int pooling_compare_run(const struct pooling_config *cfg, struct pooling_compare *res, char *err,
                        size_t errlen)
{
	memset(res, 0, sizeof(*res));
	int ret = -1;
	struct pooling_api_totals *totals = malloc(sizeof(*totals));
	struct run_ctx *rc = calloc(1, sizeof(*rc));
	struct pooling_api *api = NULL;
	if (!totals || !rc) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	api = pooling_api_start(cfg, cfg->pool_size, 0, err, errlen);
	if (!api)
		goto out;
	/* what one connect costs with the server otherwise idle: one client, one at a time */
	struct load_result *alone = malloc(sizeof(*alone));
	if (!alone) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	*rc = (struct run_ctx){.cfg = cfg,
	                       .api = api,
	                       .what = "one connection at a time",
	                       .max_requests = CONNECT_SAMPLES,
	                       .route = ROUTE_DIRECT};
	int rl = run_load(rc, "/direct?hold_ms=0", 1, alone, err, errlen);
	res->connect_alone_p50_us = hist_percentile(&alone->latency, 50);
	free(alone);
	if (rl < 0)
		goto out;
	/* the same requests both ways: SELECT 1, so the difference is the connection alone */
	*rc = (struct run_ctx){.cfg = cfg,
	                       .api = api,
	                       .what = "connection per request",
	                       .max_requests = (uint64_t)cfg->compare_requests,
	                       .route = ROUTE_DIRECT};
	if (run_load(rc, "/direct?hold_ms=0", cfg->compare_clients, &res->direct, err, errlen) < 0)
		goto out;
	rc->what = "pooled";
	rc->route = ROUTE_POOLED;
	if (run_load(rc, "/pooled?hold_ms=0", cfg->compare_clients, &res->pooled, err, errlen) < 0)
		goto out;
	pooling_api_stop(api, totals);
	api = NULL;
	res->connects = totals->direct.opened - CONNECT_SAMPLES;
	/* the direct path waits for its own fresh connection: that wait is the connect */
	res->connect_p50_us = hist_percentile(&totals->direct.wait, 50);
	res->pooled_opened = totals->pool.opened;
	res->speedup = res->direct.rps_2xx > 0 ? res->pooled.rps_2xx / res->direct.rps_2xx : 0;
	ret = 0;
out:
	pooling_api_stop(api, NULL);
	free(totals);
	free(rc);
	return ret;
}

/* ---- phase 2: exhaustion ---- */

int pooling_exhaust_run(const struct pooling_config *cfg, struct pooling_exhaust *res, char *err,
                        size_t errlen)
{
	memset(res, 0, sizeof(*res));
	int ret = -1;
	struct pooling_api_totals *totals = malloc(sizeof(*totals));
	struct run_ctx *rc = calloc(1, sizeof(*rc));
	struct load_result *load = malloc(sizeof(*load));
	if (!totals || !rc || !load) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	char path[64];
	snprintf(path, sizeof(path), "/pooled?hold_ms=%d", cfg->hold_ms);
	for (int i = 0; i < cfg->nlevels && i < POOLING_MAX_LEVELS; i++) {
		int clients = cfg->levels[i];
		char what[64];
		snprintf(what, sizeof(what), "%d clients", clients);
		/* a fresh pool per level: no queue carried over from the level before */
		struct pooling_api *api = pooling_api_start(cfg, cfg->pool_size, 0, err, errlen);
		if (!api)
			goto out;
		*rc = (struct run_ctx){.cfg = cfg,
		                       .api = api,
		                       .what = what,
		                       .duration_ms = cfg->level_ms,
		                       .route = ROUTE_POOLED};
		int rl = run_load(rc, path, clients, load, err, errlen);
		pooling_api_stop(api, totals);
		if (rl < 0)
			goto out;
		struct pooling_level *lv = &res->levels[res->nlevels++];
		int busy = clients < cfg->pool_size ? clients : cfg->pool_size;
		lv->clients = clients;
		lv->predicted_rps = busy * 1000.0 / cfg->hold_ms;
		lv->rps = load->rps_2xx;
		lv->p50_us = hist_percentile(&load->latency, 50);
		lv->p99_us = hist_percentile(&load->latency, 99);
		lv->wait_p50_us = hist_percentile(&totals->pool.wait, 50);
		lv->wait_p99_us = hist_percentile(&totals->pool.wait, 99);
		lv->ok = load->status_2xx;
		lv->http_503 = load->status_503;
		lv->errors = load->errors;
		lv->max_waiting = rc->max_waiting;
	}
	ret = 0;
out:
	free(totals);
	free(rc);
	free(load);
	return ret;
}

/* ---- phase 3: a leak against an undersized pool ---- */

static int drain_run(const struct pooling_config *cfg, enum route route, int pool_size,
                     struct pooling_drain *d, char *err, size_t errlen)
{
	memset(d, 0, sizeof(*d));
	d->pool_size = pool_size;
	int ret = -1;
	struct pooling_api_totals *totals = malloc(sizeof(*totals));
	struct run_ctx *rc = calloc(1, sizeof(*rc));
	struct load_result *load = malloc(sizeof(*load));
	struct pooling_api *api = NULL;
	if (!totals || !rc || !load) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	api = pooling_api_start(cfg, pool_size, 0, err, errlen);
	if (!api)
		goto out;
	*rc = (struct run_ctx){.cfg = cfg,
	                       .api = api,
	                       .duration_ms = cfg->leak_ms,
	                       .route = route,
	                       .what = route == ROUTE_ORDERS_LEAKY ? "leaky handler" : "undersized pool"};
	if (run_load(rc, route_paths[route], cfg->leak_clients, load, err, errlen) < 0)
		goto out;
	/* the pool as the load left it, and who still holds a connection past the threshold */
	d->active = rc->snap.stats.active;
	d->idle = rc->snap.stats.idle;
	d->waiting = rc->snap.stats.waiting;
	uint64_t longest_leak = rc->snap.nleaks ? rc->snap.longest.held_us : 0;
	pooling_api_stop(api, totals);
	api = NULL;
	/* drained: every connection leaked; from the last leak on, nothing can be answered */
	if (totals->leaked >= (uint64_t)pool_size) {
		d->drained_at_us = totals->last_leaked_us - rc->start_us;
		for (size_t i = 0; i < rc->nanswers; i++)
			if (rc->answer_sent_us[i] > totals->last_leaked_us)
				d->answered_after_drain++;
	}
	d->ok = rc->ok;
	d->not_found = rc->not_found;
	d->http_503 = load->status_503;
	d->errors = load->errors;
	d->rps_ok = load->elapsed_s > 0 ? (double)(rc->ok + rc->not_found) / load->elapsed_s : 0;
	d->longest_hold_us = totals->hold.max_us > longest_leak ? totals->hold.max_us : longest_leak;
	d->leaks = totals->leaks;
	d->first_leak = totals->first_leak;
	ret = 0;
out:
	pooling_api_stop(api, NULL);
	free(totals);
	if (rc)
		free(rc->answer_sent_us);
	free(rc);
	free(load);
	return ret;
}

int pooling_leak_run(const struct pooling_config *cfg, struct pooling_leak *res, char *err, size_t errlen)
{
	memset(res, 0, sizeof(*res));
	if (drain_run(cfg, ROUTE_ORDERS_LEAKY, cfg->pool_size, &res->leaky, err, errlen) < 0)
		return -1;
	return drain_run(cfg, ROUTE_ORDERS, cfg->undersized_pool, &res->undersized, err, errlen);
}

/* ---- phase 4: too many connections, and what pool size buys ---- */

static int server_limits(const struct pooling_config *cfg, struct pooling_maxconn *res, char *err,
                         size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int64_t max = 0, reserved = 0, in_use = 0;
	int ret = -1;
	if (pg_query_int64(conn, "SELECT current_setting('max_connections')::int", 0, NULL, &max, err,
	                   errlen) < 0 ||
	    pg_query_int64(conn, "SELECT current_setting('superuser_reserved_connections')::int", 0, NULL,
	                   &reserved, err, errlen) < 0 ||
	    pg_query_int64(conn,
	                   "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'", 0,
	                   NULL, &in_use, err, errlen) < 0)
		goto out;
	res->max_connections = (int)max;
	res->reserved = (int)reserved;
	res->in_use_before = (int)in_use - 1; /* not this one */
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

static int instances_run(const struct pooling_config *cfg, struct pooling_maxconn *res, char *err,
                         size_t errlen)
{
	struct event_base *base = event_base_new();
	if (!base) {
		snprintf(err, errlen, "cannot create an event base");
		return -1;
	}
	struct pool *pools[16] = {0};
	int n = cfg->instances < 16 ? cfg->instances : 16;
	int ret = 0;
	struct pool_stats *st = malloc(sizeof(*st));
	if (!st) {
		snprintf(err, errlen, "out of memory");
		ret = -1;
		goto out;
	}
	/* each instance opens its whole pool at start, as HikariCP does with minimumIdle = maximumPoolSize */
	struct pool_config pc = {.conninfo = cfg->pg_url,
	                         .min_idle = cfg->instance_pool,
	                         .max_size = cfg->instance_pool,
	                         .acquire_timeout_ms = 1000};
	for (int i = 0; i < n; i++) {
		char perr[256];
		pools[i] = pool_new(base, &pc, err, errlen);
		if (!pools[i]) {
			ret = -1;
			goto out;
		}
		int rc = pool_wait_ready(pools[i], 15000, perr, sizeof(perr));
		pool_stats(pools[i], st);
		res->opened_total += (int)st->opened;
		if (rc < 0) {
			res->failed_instance = i + 1;
			snprintf(res->server_error, sizeof(res->server_error), "%s", perr);
			break;
		}
		res->instances_ready++;
	}
out:
	for (int i = 0; i < n; i++)
		pool_free(pools[i]);
	event_base_free(base);
	free(st);
	return ret;
}

int pooling_maxconn_run(const struct pooling_config *cfg, struct pooling_maxconn *res, char *err,
                        size_t errlen)
{
	memset(res, 0, sizeof(*res));
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	res->cores = cores > 0 ? (int)cores : 1;
	/* HikariCP's "About Pool Sizing": connections = cores x 2 + effective spindles (1 for an SSD) */
	res->rule_of_thumb = res->cores * 2 + 1;
	if (server_limits(cfg, res, err, errlen) < 0 || instances_run(cfg, res, err, errlen) < 0)
		return -1;

	/* the same CPU-bound load at each pool size; a long timeout, so the queue shows as latency */
	struct pooling_config sized = *cfg;
	sized.acquire_timeout_ms = 10000;
	int ret = -1;
	struct run_ctx *rc = calloc(1, sizeof(*rc));
	struct load_result *load = malloc(sizeof(*load));
	if (!rc || !load) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (int i = 0; i < cfg->nsizes && i < POOLING_MAX_SIZES; i++) {
		char what[64];
		snprintf(what, sizeof(what), "pool size %d", cfg->sizes[i]);
		struct pooling_api *api = pooling_api_start(&sized, cfg->sizes[i], 0, err, errlen);
		if (!api)
			goto out;
		*rc = (struct run_ctx){.cfg = cfg,
		                       .api = api,
		                       .what = what,
		                       .duration_ms = cfg->size_ms,
		                       .route = ROUTE_CPU};
		int rl = run_load(rc, "/cpu", cfg->size_clients, load, err, errlen);
		pooling_api_stop(api, NULL);
		if (rl < 0)
			goto out;
		struct pooling_size *sz = &res->sizes[res->nsizes++];
		sz->pool_size = cfg->sizes[i];
		sz->rps = load->rps_2xx;
		sz->p50_us = hist_percentile(&load->latency, 50);
		sz->p99_us = hist_percentile(&load->latency, 99);
		sz->http_503 = load->status_503;
	}
	ret = 0;
out:
	free(rc);
	free(load);
	return ret;
}
