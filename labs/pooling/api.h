/*
 * api.h — lab-pooling's HTTP API: the routes the phases drive (pooling.c) and --serve exposes
 * (main.c). Handlers borrow PostgreSQL connections from common/pool.h; the server and its
 * pools run on one event loop in a thread of their own (http.h's struct http_app), so the load
 * generator can drive them from the caller's thread.
 *
 *   GET /pooled?hold_ms=20   a pooled connection, held hold_ms (pg_sleep) or SELECT 1 for 0
 *   GET /direct?hold_ms=0    the same on a new connection opened for this request alone
 *   GET /orders?id=42        one order (404 when missing); hold_ms as above
 *   GET /orders-leaky?id=42  the same, with the bug the lab shows: the 404 path never releases
 *   GET /cpu                 a CPU-bound query (sum over cfg->cpu_rows rows)
 *   GET /stats               the pool as PgBouncer's SHOW POOLS shows it, and who holds too long
 *   GET /pipelined?hold_ms=0 when cfg->pipe_conns > 0 (bench_pooling's API; not the phases' nor
 *                            --serve's): /pooled's statement through a second, pipelined pool
 *                            (pool.h's pool_pipe_query: libpq's pipeline mode, pipe_conns
 *                            connections, several requests' statements in flight on each, every
 *                            statement its own transaction). Not the pool under test: what the
 *                            bench shows beside it, on its own row, as what it is
 *
 * Bad input gets 400 and changes nothing: a hold_ms outside 0..POOLING_HOLD_MS_MAX, an id
 * outside 1..10^9 or missing. Other methods get 405.
 *
 * Errors: functions that can fail return NULL or -1 and write one line into err (errlen bytes).
 */
#ifndef LAB_POOLING_API_H
#define LAB_POOLING_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"
#include "pool.h"
#include "pooling.h"

/*
 * A second: fifty times the lab's hold, already a request that starves a pool of 5. Longer
 * would let any local client keep the lab's connections busy, and its teardown's DROP SCHEMA
 * waiting on their locks, past the 2 s a Ctrl-C allows the API to stop in.
 */
#define POOLING_HOLD_MS_MAX 1000

/*
 * The pipelined pool's connections when bench_pooling asks for one (cfg->pipe_conns): few, since
 * each carries many requests' statements at once; enough that the server works on them in
 * parallel on a machine of a few cores.
 */
#define POOLING_PIPE_CONNS 4

/* The holder a leak report names for /orders-leaky: the handler that acquired. */
#define POOLING_LEAKY_HOLDER "leaky_orders_handler"

enum pooling_route {
	POOLING_ROUTE_POOLED,
	POOLING_ROUTE_DIRECT,
	POOLING_ROUTE_ORDERS,
	POOLING_ROUTE_ORDERS_LEAKY,
	POOLING_ROUTE_CPU,
	POOLING_ROUTE_COUNT
};

/* "/pooled", "/direct", ... */
const char *pooling_route_path(enum pooling_route route);

struct evhttp_request;

/* A request's parameters, as its route reads them from the query string. */
struct pooling_params {
	long order_id;    /* /orders and /orders-leaky: ?id=, 1..10^9, required there */
	char hold_ms[24]; /* ?hold_ms=, 0..POOLING_HOLD_MS_MAX; cfg->hold_ms when absent */
	char order[24];   /* order_id as text, "" on the other routes */
	char rows[24];    /* cfg->cpu_rows as text (/cpu) */
};

/*
 * What a route reads before it asks the pool for anything (the method is the route's check):
 * 0, or -1 and err (the route answers 400 with it).
 */
int pooling_parse_request(const struct pooling_config *cfg, enum pooling_route route,
                          struct evhttp_request *req, struct pooling_params *out, char *err, size_t errlen);

struct pooling_api;

/*
 * Creates the pool under test (pool_size connections, opened before this returns; acquire
 * timeout and leak threshold from cfg), the connection-per-request path, and the server on
 * 127.0.0.1:port (0 = a free one), and starts serving. cfg must outlive the API.
 */
struct pooling_api *pooling_api_start(const struct pooling_config *cfg, int pool_size, int port, char *err,
                                      size_t errlen);

int pooling_api_port(const struct pooling_api *api);

/*
 * Whether the handlers run their statements prepared once per connection (the default,
 * pool_query_prepared) or send them whole every time (pool_query): bench_pooling measures both
 * in one run. Takes effect from the next request; any thread.
 */
void pooling_api_set_prepared(struct pooling_api *api, bool prepared);

/* The pool under test as the loop sees it now. */
struct pooling_snapshot {
	struct pool_stats stats;
	struct pool_leak longest; /* the connection held longest past the leak threshold */
	int nleaks;               /* 0 or 1: whether longest is filled */
};

/* Reads it on the loop's thread (no lock, no race). -1 and err when the call failed. */
int pooling_api_snapshot(struct pooling_api *api, struct pooling_snapshot *out, char *err, size_t errlen);

/*
 * Ends the current window and starts the next: *waits (may be NULL) gets the acquire waits on
 * the pool under test since the last call (or the start), served or timed out. The pool's own
 * distribution counts from its start; a window is one load level. -1 and err when the call
 * failed.
 */
int pooling_api_window(struct pooling_api *api, struct hist *waits, char *err, size_t errlen);

/* What the API counted, read once its loop has stopped. */
struct pooling_api_totals {
	struct pool_stats pool;      /* the pool under test */
	struct pool_stats direct;    /* the connection-per-request path: opened = connections made */
	struct pool_stats piped;     /* /pipelined's pool (zeros when cfg->pipe_conns was 0) */
	struct hist hold;            /* acquire to release, for the handlers that released */
	uint64_t leaks;              /* leak reports */
	struct pool_leak first_leak; /* acquired_at_us counted from the API's start */
	uint64_t leaked;             /* connections /orders-leaky kept, counted where it forgets them */
	uint64_t last_leaked_us;     /* hist_now_us() of the last one */
};

/*
 * Stops the API with http_app_stop: the loop stops, the pools close (every request still in
 * flight or queued gets its reply, 500 or 503 "pool closed", and its context is freed), then
 * the server and the requests go. *totals (may be NULL) gets what it counted, read before the
 * pools close. NULL is a no-op. Can't fail.
 */
void pooling_api_stop(struct pooling_api *api, struct pooling_api_totals *totals);

#endif
