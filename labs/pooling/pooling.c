/*
 * pooling.c — the experiment of lab-pooling (see pooling.h for the phases) and its judge. The
 * API is in api.c, what --predict asks before each phase in questions.c, the telling in main.c;
 * nothing here prints.
 *
 * The API and its pools run on one event loop in a thread of their own; the load generator
 * runs in the caller's thread. The lab reads the pool's state while the load runs through
 * the API's loop (pooling_api_snapshot), so the numbers are the pool's own and no lock is needed.
 */
#include "pooling.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "pg.h"
#include "questions.h"

#define SCHEMA "lab_pooling"
/* 100 orders; ids above ORDERS are missing, and a missing id is the leaky handler's 404 path. */
#define ORDERS             100
#define STR_(x)            #x
#define STR(x)             STR_(x)
#define MISSING_ORDER_BASE 100000
/* one client in four follows a stale link to missing orders: the leaky handler loses a
 * connection on each of their requests, so the pool drains after pool_size of them */
#define STALE_EVERY 4
/* phase 1 times this many connects one at a time before the load (their median) */
#define CONNECT_SAMPLES 5
/* a request the load generator sends is answered within this, or counts as an error */
#define LOAD_TIMEOUT_MS 10000
/* each app instance of phase 4 opens its whole pool within this */
#define INSTANCE_READY_MS 15000
#define MAX_INSTANCES     16

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
	/* a connect costs ~25 ms on this VM: 24 of them (3 per client) already show the gap */
	cfg->compare_requests = quick ? 24 : 400;
	/* below, at, twice and ten times the pool size */
	int levels[] = {2, 5, 10, 50};
	cfg->nlevels = 4;
	memcpy(cfg->levels, levels, sizeof(levels));
	/* --quick: 75 requests a level at the cap, enough for p99 and the 503s */
	cfg->level_ms = quick ? 300 : 3000;
	cfg->leak_clients = 20;
	/* the leak drains the pool in about 0.1 s and is reported 0.5 s later; the rest shows it
	 * staying drained */
	cfg->leak_ms = quick ? 700 : 4000;
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
	cfg->size_ms = quick ? 300 : 2500;
	/* about 4 ms of CPU per query here: the server, not the pool, is the bottleneck */
	cfg->cpu_rows = 20000;
}

static int schema_setup(PGconn *conn, char *err, size_t errlen)
{
	if (pg_schema_create(conn, SCHEMA, err, errlen) < 0)
		return -1;
	return pg_exec(conn,
	               "CREATE TABLE " SCHEMA ".orders (id int PRIMARY KEY, total_cents int NOT NULL);"
	               "INSERT INTO " SCHEMA
	               ".orders SELECT i, 100 * i FROM generate_series(1, " STR(ORDERS) ") i",
	               err, errlen);
}

int pooling_setup(const struct pooling_config *cfg, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = schema_setup(conn, err, errlen);
	PQfinish(conn);
	return ret;
}

int pooling_teardown(const struct pooling_config *cfg, char *err, size_t errlen)
{
	return pg_url_schema_drop(cfg->pg_url, SCHEMA, err, errlen);
}

/* ---- running load against the API ---- */

struct run_ctx {
	const struct pooling_config *cfg;
	struct pooling_api *api;
	const char *what;
	int duration_ms;
	uint64_t max_requests;
	enum pooling_route route;
	uint64_t start_us;
	/* observed while the load runs */
	int max_waiting;
	struct pooling_snapshot snap; /* the last one */
	/* phase 3: every answer (200 or 404) and when its request was sent */
	uint64_t ok, not_found;
	uint64_t *answer_sent_us;
	size_t nanswers, answers_cap;
};

static void progress_cb(const struct load_progress *p, void *arg)
{
	struct run_ctx *rc = arg;
	char err[128];
	if (pooling_api_snapshot(rc->api, &rc->snap, err, sizeof(err)) == 0 &&
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
	snprintf(r->path, sizeof(r->path), "%s?id=%ld", pooling_route_path(rc->route), id);
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
	        .timeout_ms = LOAD_TIMEOUT_MS,
	        .progress_cb = progress_cb,
	        .arg = rc,
	};
	if (rc->route == POOLING_ROUTE_ORDERS || rc->route == POOLING_ROUTE_ORDERS_LEAKY) {
		lc.request_cb = orders_request_cb;
		lc.response_cb = orders_response_cb;
	}
	rc->max_waiting = 0;
	rc->start_us = hist_now_us();
	return load_run(&lc, res, err, errlen);
}

/* ---- phase 1: a new connection per request against a pool ---- */

/* What one connect costs with the server otherwise idle: one client, one request at a time. */
static int connect_alone(struct run_ctx *rc, struct pooling_compare *c, char *err, size_t errlen)
{
	struct load_result *alone = malloc(sizeof(*alone));
	if (!alone) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	rc->what = "one connection at a time";
	rc->max_requests = CONNECT_SAMPLES;
	rc->route = POOLING_ROUTE_DIRECT;
	int rl = run_load(rc, "/direct?hold_ms=0", 1, alone, err, errlen);
	c->connect_alone_p50_us = hist_percentile(&alone->latency, 50);
	free(alone);
	return rl;
}

static int compare_phase(const void *cfgp, void *resultp, char *err, size_t errlen)
{
	const struct pooling_config *cfg = cfgp;
	struct pooling_compare *c = &((struct pooling_result *)resultp)->compare;
	c->requests = cfg->compare_requests;
	int ret = -1;
	struct pooling_api_totals *totals = malloc(sizeof(*totals));
	struct run_ctx *rc = calloc(1, sizeof(*rc));
	struct pooling_api *api = NULL;
	if (!totals || !rc) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	api = pooling_api_start(cfg, cfg->pool_size, 0, err, errlen);
	*rc = (struct run_ctx){.cfg = cfg, .api = api};
	if (!api || connect_alone(rc, c, err, errlen) < 0)
		goto out;
	/* the same requests both ways: SELECT 1, so the difference is the connection alone */
	rc->what = "connection per request";
	rc->max_requests = (uint64_t)cfg->compare_requests;
	if (run_load(rc, "/direct?hold_ms=0", cfg->compare_clients, &c->direct, err, errlen) < 0)
		goto out;
	rc->what = "pooled";
	rc->route = POOLING_ROUTE_POOLED;
	if (run_load(rc, "/pooled?hold_ms=0", cfg->compare_clients, &c->pooled, err, errlen) < 0)
		goto out;
	pooling_api_stop(api, totals);
	api = NULL;
	/* the samples' connections are not the load's; a sample that failed opened none */
	c->connects = totals->direct.opened > CONNECT_SAMPLES ? totals->direct.opened - CONNECT_SAMPLES : 0;
	/* the direct path waits for its own fresh connection: that wait is the connect */
	c->connect_p50_us = hist_percentile(&totals->direct.wait, 50);
	c->pooled_opened = totals->pool.opened;
	c->speedup = c->direct.rps_2xx > 0 ? c->pooled.rps_2xx / c->direct.rps_2xx : 0;
	ret = 0;
out:
	pooling_api_stop(api, NULL);
	free(totals);
	free(rc);
	return ret;
}

/* ---- phase 2: exhaustion ---- */

static void level_fill(struct pooling_level *lv, const struct pooling_config *cfg, int clients,
                       const struct load_result *load, const struct hist *waits, int max_waiting)
{
	int busy = clients < cfg->pool_size ? clients : cfg->pool_size;
	lv->clients = clients;
	lv->predicted_rps = busy * 1000.0 / cfg->hold_ms;
	/* pool_size requests hold a connection and clients - pool_size wait, pool_size of them
	 * served every hold: each waits (clients / pool_size - 1) holds */
	lv->predicted_wait_ms =
	        clients > cfg->pool_size ? ((double)clients / cfg->pool_size - 1) * cfg->hold_ms : 0;
	lv->rps = load->rps_2xx;
	lv->p50_us = hist_percentile(&load->latency, 50);
	lv->p99_us = hist_percentile(&load->latency, 99);
	lv->wait_p50_us = hist_percentile(waits, 50);
	lv->wait_p99_us = hist_percentile(waits, 99);
	lv->ok = load->status_2xx;
	lv->http_503 = load->status_503;
	lv->errors = load->errors;
	lv->other = load->completed - load->status_2xx - load->status_503;
	lv->max_waiting = max_waiting;
}

/*
 * One API for every level: load_run returns once every request it sent was answered, so no
 * queue is carried into the next level, and each level's waits are a window of their own.
 */
static int exhaust_phase(const void *cfgp, void *resultp, char *err, size_t errlen)
{
	const struct pooling_config *cfg = cfgp;
	struct pooling_exhaust *e = &((struct pooling_result *)resultp)->exhaust;
	int ret = -1;
	struct run_ctx *rc = calloc(1, sizeof(*rc));
	struct load_result *load = malloc(sizeof(*load));
	struct hist *waits = malloc(sizeof(*waits));
	struct pooling_api *api = NULL;
	if (!rc || !load || !waits) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	api = pooling_api_start(cfg, cfg->pool_size, 0, err, errlen);
	if (!api)
		goto out;
	char path[64], what[64];
	snprintf(path, sizeof(path), "/pooled?hold_ms=%d", cfg->hold_ms);
	for (int i = 0; i < cfg->nlevels && i < POOLING_MAX_LEVELS; i++) {
		int clients = cfg->levels[i];
		snprintf(what, sizeof(what), "%d clients", clients);
		*rc = (struct run_ctx){.cfg = cfg,
		                       .api = api,
		                       .what = what,
		                       .duration_ms = cfg->level_ms,
		                       .route = POOLING_ROUTE_POOLED};
		if (pooling_api_window(api, NULL, err, errlen) < 0 ||
		    run_load(rc, path, clients, load, err, errlen) < 0 ||
		    pooling_api_window(api, waits, err, errlen) < 0)
			goto out;
		level_fill(&e->levels[e->nlevels++], cfg, clients, load, waits, rc->max_waiting);
	}
	ret = 0;
out:
	pooling_api_stop(api, NULL);
	free(rc);
	free(load);
	free(waits);
	return ret;
}

/* ---- phase 3: a leak against an undersized pool ---- */

/* The numbers of one drain run, once its API has stopped. */
static void drain_fill(struct pooling_drain *d, const struct run_ctx *rc, const struct load_result *load,
                       const struct pooling_api_totals *totals, uint64_t longest_leak_us)
{
	/* drained: every connection leaked; from the last leak on, nothing can be answered */
	if (totals->leaked >= (uint64_t)d->pool_size) {
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
	d->longest_hold_us = totals->hold.max_us > longest_leak_us ? totals->hold.max_us : longest_leak_us;
	d->leaks = totals->leaks;
	d->first_leak = totals->first_leak;
}

static int drain_run(const struct pooling_config *cfg, enum pooling_route route, int pool_size,
                     struct pooling_drain *d, char *err, size_t errlen)
{
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
	                       .what = route == POOLING_ROUTE_ORDERS_LEAKY ? "leaky handler"
	                                                                   : "undersized pool"};
	if (run_load(rc, pooling_route_path(route), cfg->leak_clients, load, err, errlen) < 0)
		goto out;
	/* the pool as the load left it, and who still holds a connection past the threshold */
	d->active = rc->snap.stats.active;
	d->idle = rc->snap.stats.idle;
	d->waiting = rc->snap.stats.waiting;
	uint64_t longest_leak = rc->snap.nleaks ? rc->snap.longest.held_us : 0;
	pooling_api_stop(api, totals);
	api = NULL;
	drain_fill(d, rc, load, totals, longest_leak);
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

static int leak_phase(const void *cfgp, void *resultp, char *err, size_t errlen)
{
	const struct pooling_config *cfg = cfgp;
	struct pooling_leak *l = &((struct pooling_result *)resultp)->leak;
	if (drain_run(cfg, POOLING_ROUTE_ORDERS_LEAKY, cfg->pool_size, &l->leaky, err, errlen) < 0)
		return -1;
	return drain_run(cfg, POOLING_ROUTE_ORDERS, cfg->undersized_pool, &l->undersized, err, errlen);
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
	res->in_use_before = (int)in_use - 2; /* not this one, nor pooling_run's own */
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

/*
 * App instances, each opening its whole pool at start, until the server refuses one. kept (may
 * be NULL) is instance 1 already: the API that served the CPU-bound load with a pool this size,
 * its connections still open.
 */
static int instances_run(const struct pooling_config *cfg, struct pooling_api *kept,
                         struct pooling_maxconn *res, char *err, size_t errlen)
{
	struct event_base *base = event_base_new();
	struct pool_stats *st = malloc(sizeof(*st));
	struct pool *pools[MAX_INSTANCES] = {0};
	int n = cfg->instances < MAX_INSTANCES ? cfg->instances : MAX_INSTANCES, ret = -1;
	res->instances = n;
	res->instance_pool = cfg->instance_pool;
	if (!base || !st) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	int first = 0;
	if (kept) {
		struct pooling_snapshot *snap = malloc(sizeof(*snap));
		if (!snap || pooling_api_snapshot(kept, snap, err, errlen) < 0) {
			free(snap);
			goto out;
		}
		res->opened_total = snap->stats.idle + snap->stats.active;
		res->instances_ready = first = 1;
		free(snap);
	}
	/* each instance opens its whole pool at start, as HikariCP does with minimumIdle = maximumPoolSize */
	struct pool_config pc = {.conninfo = cfg->pg_url,
	                         .min_idle = cfg->instance_pool,
	                         .max_size = cfg->instance_pool,
	                         .acquire_timeout_ms = 1000};
	for (int i = first; i < n; i++) {
		char perr[256];
		pools[i] = pool_new(base, &pc, err, errlen);
		if (!pools[i])
			goto out;
		int rc = pool_wait_ready(pools[i], INSTANCE_READY_MS, perr, sizeof(perr));
		pool_stats(pools[i], st);
		res->opened_total += (int)st->opened;
		if (rc < 0) {
			res->failed_instance = i + 1;
			snprintf(res->server_error, sizeof(res->server_error), "%s", perr);
			break;
		}
		res->instances_ready++;
	}
	ret = 0;
out:
	for (int i = 0; i < n; i++)
		pool_free(pools[i]);
	if (base)
		event_base_free(base);
	free(st);
	return ret;
}

/*
 * The same CPU-bound load at each pool size; a long timeout, so the queue shows as latency. The
 * API whose pool is as large as an app instance's stays up in *kept, as the first instance: its
 * connections need not be opened twice.
 */
static int sizes_run(const struct pooling_config *cfg, const struct pooling_config *sized,
                     struct pooling_maxconn *res, struct pooling_api **kept, char *err, size_t errlen)
{
	int ret = -1;
	struct run_ctx *rc = calloc(1, sizeof(*rc));
	struct load_result *load = malloc(sizeof(*load));
	if (!rc || !load) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	res->nsizes_asked = cfg->nsizes < POOLING_MAX_SIZES ? cfg->nsizes : POOLING_MAX_SIZES;
	for (int i = 0; i < res->nsizes_asked; i++) {
		char what[64];
		snprintf(what, sizeof(what), "pool size %d", cfg->sizes[i]);
		struct pooling_api *api = pooling_api_start(sized, cfg->sizes[i], 0, err, errlen);
		if (!api)
			goto out;
		*rc = (struct run_ctx){.cfg = cfg,
		                       .api = api,
		                       .what = what,
		                       .duration_ms = cfg->size_ms,
		                       .route = POOLING_ROUTE_CPU};
		int rl = run_load(rc, "/cpu", cfg->size_clients, load, err, errlen);
		if (rl == 0 && !*kept && cfg->sizes[i] == cfg->instance_pool)
			*kept = api;
		else
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

static int maxconn_phase(const void *cfgp, void *resultp, char *err, size_t errlen)
{
	const struct pooling_config *cfg = cfgp;
	struct pooling_maxconn *m = &((struct pooling_result *)resultp)->maxconn;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	m->cores = cores > 0 ? (int)cores : 1;
	/* HikariCP's "About Pool Sizing": connections = cores x 2 + effective spindles (1 for an SSD) */
	m->rule_of_thumb = m->cores * 2 + 1;
	if (server_limits(cfg, m, err, errlen) < 0)
		return -1;
	struct pooling_config sized = *cfg; /* lives until every API of this phase has stopped */
	sized.acquire_timeout_ms = LOAD_TIMEOUT_MS;
	struct pooling_api *kept = NULL;
	int ret = sizes_run(cfg, &sized, m, &kept, err, errlen);
	if (ret == 0)
		ret = instances_run(cfg, kept, m, err, errlen);
	pooling_api_stop(kept, NULL);
	return ret;
}

/* ---- the run ---- */

static const struct lab_phase_def PHASES[POOLING_PHASES] = {
        {"compare", compare_phase, &POOLING_Q_COMPARE},
        {"exhaustion", exhaust_phase, &POOLING_Q_EXHAUSTION},
        {"leak", leak_phase, &POOLING_Q_LEAK},
        {"max_connections", maxconn_phase, &POOLING_Q_MAX_CONNECTIONS},
};

/* After a failure: true, and err = what PostgreSQL says now, when it no longer answers. */
static bool pg_gone(const struct pooling_config *cfg, char *err, size_t errlen)
{
	char said[LAB_ERRLEN];
	PGconn *conn = pg_connect(cfg->pg_url, said, sizeof(said));
	if (conn) {
		PQfinish(conn);
		return false;
	}
	snprintf(err, errlen, "%s", said);
	return true;
}

int pooling_run(const struct pooling_config *cfg, struct pooling_result *result, char *err, size_t errlen)
{
	memset(result, 0, sizeof(*result));
	result->pool_size = cfg->pool_size;
	result->hold_ms = cfg->hold_ms;
	result->acquire_timeout_ms = cfg->acquire_timeout_ms;
	result->leak_threshold_ms = cfg->leak_threshold_ms;
	if (cfg->pool_size < 1 || cfg->hold_ms < 1 || cfg->undersized_pool < 1) {
		snprintf(err, errlen, "pool_size, hold_ms and undersized_pool must be at least 1");
		return -1;
	}
	/*
	 * One connection from setup to teardown: after phase 4 the server is busy ending some 90
	 * backends, and a new connection would queue behind them for a second or two.
	 */
	PGconn *admin = pg_connect(cfg->pg_url, err, errlen);
	if (!admin || schema_setup(admin, err, errlen) < 0) {
		PQfinish(admin);
		result->pg_lost = pg_gone(cfg, err, errlen);
		return -1;
	}
	int rc = lab_phases_walk(PHASES, POOLING_PHASES, cfg, result, &cfg->hooks, err, errlen);
	/* Ctrl-C: common/lab.c's guard ends our backends and drops the schema; a teardown of ours
	 * would only race it for the schema's lock */
	if (rc < 0 && lab_interrupted()) {
		PQfinish(admin);
		return -1;
	}
	if (rc < 0)
		result->pg_lost = pg_gone(cfg, err, errlen);
	char terr[LAB_ERRLEN];
	/* the admin connection may have been lost with the server: then a new one tries */
	if (pg_schema_drop(admin, SCHEMA, terr, sizeof(terr)) < 0 &&
	    pooling_teardown(cfg, terr, sizeof(terr)) < 0 && rc == 0) {
		snprintf(err, errlen, "cannot drop schema " SCHEMA ": %s", terr);
		result->pg_lost = pg_gone(cfg, err, errlen);
		rc = -1;
	}
	PQfinish(admin);
	return rc;
}

/* ---- the judge ---- */

/*
 * Pooled against connection per request: at least 10x the throughput. A connect forks a
 * backend and runs SCRAM (~25 ms on this VM, 2-5 ms on bare metal) where a pooled SELECT 1
 * costs ~0.2 ms: 10x holds even on fast hardware, and here it measures 35-150x.
 */
#define MIN_SPEEDUP 10.0
/*
 * No level may beat its prediction min(clients, pool_size) / hold by more than 5%: pg_sleep
 * never sleeps less, so only the clock's and the measuring window's slack is allowed.
 */
#define CAP_OVER 0.05
/*
 * And each level must reach 65% of it: every request also pays HTTP, a round trip and
 * pg_sleep's overshoot, each a thread wakeup that waits for a core on a shared 2-core machine.
 * The normal build reaches 85-95% there, the AddressSanitizer build of the tests 68-90% with
 * the machine oversubscribed; below 65% something other than the pool limited the throughput.
 * The cap itself is shown by the bound above and by the flat line below, both unaffected.
 */
#define CAP_UNDER 0.35
/*
 * Past the pool size more clients buy nothing: the top level's throughput within 15% of the
 * first level past the pool size (a ratio of two runs, which the machine's load moves together).
 */
#define FLAT_TOLERANCE 0.15
/*
 * A level whose predicted queue wait is at most half the acquire timeout gets no 503: the wait
 * varies with the machine's load, not by a factor of two. One whose predicted wait is past the
 * timeout must get 503s.
 */
#define QUIET_WAIT_SHARE 0.5
/*
 * The undersized pool keeps answering: at least half its own ceiling pool / hold (its 404s are
 * quick, and its 503s take a share of the clients' time). A drained pool answers nothing.
 */
#define SMALL_POOL_MIN_SHARE 0.5

/* Each check writes what disagreed into why and returns false, or returns true. */
static bool judge_compare(const struct pooling_result *r, char *why, size_t len)
{
	const struct pooling_compare *c = &r->compare;
	if (c->direct.status_2xx != (uint64_t)c->requests || c->pooled.status_2xx != (uint64_t)c->requests)
		snprintf(why, len, "of %d requests each way, %llu direct and %llu pooled got 200",
		         c->requests, (unsigned long long)c->direct.status_2xx,
		         (unsigned long long)c->pooled.status_2xx);
	else if (c->connects != (uint64_t)c->requests)
		snprintf(why, len, "the direct path opened %llu connections for %d requests",
		         (unsigned long long)c->connects, c->requests);
	else if (c->pooled_opened > (uint64_t)r->pool_size)
		snprintf(why, len, "the pool opened %llu connections, more than its %d",
		         (unsigned long long)c->pooled_opened, r->pool_size);
	else if (c->speedup < MIN_SPEEDUP)
		snprintf(why, len, "pooled was only %.1fx connection-per-request (expected %.0fx)",
		         c->speedup, MIN_SPEEDUP);
	else
		return true;
	return false;
}

static bool judge_level(const struct pooling_result *r, const struct pooling_level *l, char *why, size_t len)
{
	if (l->errors || l->other)
		snprintf(why, len, "at %d clients %llu requests failed outright", l->clients,
		         (unsigned long long)(l->errors + l->other));
	else if (l->rps > l->predicted_rps * (1 + CAP_OVER) || l->rps < l->predicted_rps * (1 - CAP_UNDER))
		snprintf(why, len, "at %d clients throughput was %.0f req/s, not the predicted %.0f",
		         l->clients, l->rps, l->predicted_rps);
	else if (l->predicted_wait_ms <= r->acquire_timeout_ms * QUIET_WAIT_SHARE && l->http_503)
		snprintf(why, len,
		         "%llu requests got 503 at %d clients, a queue of %.0f ms against a %d ms timeout",
		         (unsigned long long)l->http_503, l->clients, l->predicted_wait_ms,
		         r->acquire_timeout_ms);
	else if (l->predicted_wait_ms > r->acquire_timeout_ms &&
	         (l->http_503 == 0 || l->max_waiting <= r->pool_size))
		snprintf(why, len,
		         "at %d clients the queue (longest %d) brought %llu 503s past the %d ms timeout",
		         l->clients, l->max_waiting, (unsigned long long)l->http_503, r->acquire_timeout_ms);
	else
		return true;
	return false;
}

static bool judge_exhaust(const struct pooling_result *r, char *why, size_t len)
{
	const struct pooling_exhaust *e = &r->exhaust;
	const struct pooling_level *past = NULL, *top = e->nlevels ? &e->levels[e->nlevels - 1] : NULL;
	for (int i = 0; i < e->nlevels; i++) {
		if (!judge_level(r, &e->levels[i], why, len))
			return false;
		if (!past && e->levels[i].clients > r->pool_size)
			past = &e->levels[i];
	}
	if (!top || top->predicted_wait_ms <= r->acquire_timeout_ms)
		snprintf(why, len, "no level queued past the %d ms acquire timeout", r->acquire_timeout_ms);
	else if (past != top && fabs(top->rps - past->rps) > past->rps * FLAT_TOLERANCE)
		snprintf(why, len, "throughput moved from %.0f to %.0f req/s between %d and %d clients",
		         past->rps, top->rps, past->clients, top->clients);
	else
		return true;
	return false;
}

static bool judge_leak(const struct pooling_result *r, char *why, size_t len)
{
	const struct pooling_drain *k = &r->leak.leaky, *s = &r->leak.undersized;
	uint64_t threshold_us = (uint64_t)r->leak_threshold_ms * 1000;
	if (k->not_found != (uint64_t)k->pool_size || !k->drained_at_us || k->answered_after_drain ||
	    k->active != k->pool_size || k->idle != 0 || !k->http_503)
		snprintf(why, len,
		         "the leaky handler did not drain the pool (%llu of %d leaked, %llu answered after)",
		         (unsigned long long)k->not_found, k->pool_size,
		         (unsigned long long)k->answered_after_drain);
	else if (!k->leaks || strcmp(k->first_leak.holder, POOLING_LEAKY_HOLDER) ||
	         k->longest_hold_us < threshold_us)
		snprintf(why, len, "the leak detector did not name %s (%llu reports)", POOLING_LEAKY_HOLDER,
		         (unsigned long long)k->leaks);
	else if (s->leaks || s->longest_hold_us >= threshold_us)
		snprintf(why, len, "the undersized pool was reported as a leak (%llu reports)",
		         (unsigned long long)s->leaks);
	else if (!s->http_503 || s->drained_at_us ||
	         s->rps_ok < SMALL_POOL_MIN_SHARE * s->pool_size * 1000.0 / r->hold_ms)
		snprintf(why, len,
		         "the undersized pool answered %.0f/s with %llu 503s: not a small pool's signature",
		         s->rps_ok, (unsigned long long)s->http_503);
	else
		return true;
	return false;
}

static bool judge_maxconn(const struct pooling_result *r, char *why, size_t len)
{
	const struct pooling_maxconn *m = &r->maxconn;
	/* PostgreSQL's two words for it: the reserved-slot check at login, or no free process slot
	 * when connections race past that check together */
	bool servers_words = strstr(m->server_error, "connection slots are reserved") ||
	                     strstr(m->server_error, "too many clients already");
	bool sizes_ran = m->nsizes == m->nsizes_asked;
	for (int i = 0; i < m->nsizes; i++)
		sizes_ran = sizes_ran && m->sizes[i].rps > 0;
	if (!m->failed_instance)
		snprintf(why, len, "every app instance opened its pool: max_connections was never reached");
	else if (m->opened_total > m->max_connections - m->reserved || !servers_words)
		snprintf(why, len, "instance %d failed after %d connections with another error: %s",
		         m->failed_instance, m->opened_total, m->server_error);
	else if (!sizes_ran)
		snprintf(why, len, "the slots did not come back: %d of %d pool sizes ran", m->nsizes,
		         m->nsizes_asked);
	else
		return true;
	return false;
}

void pooling_judge(const struct pooling_result *r, struct lab_verdict *v)
{
	char why[512] = "";
	bool ok = judge_compare(r, why, sizeof(why)) && judge_exhaust(r, why, sizeof(why)) &&
	          judge_leak(r, why, sizeof(why)) && judge_maxconn(r, why, sizeof(why));
	const struct pooling_level *top =
	        r->exhaust.nlevels ? &r->exhaust.levels[r->exhaust.nlevels - 1] : NULL;
	double cap = r->hold_ms > 0 ? r->pool_size * 1000.0 / r->hold_ms : 0;
	lab_verdict_set(
	        v, ok,
	        "throughput is capped at pool_size / hold time; past it, latency becomes queue and the "
	        "acquire timeout turns the queue into 503s at the API",
	        "%s%spredicted %s req/s, measured %s at %d clients; %s requests got 503; pooled %.0fx a "
	        "new connection per request; the leak was named (\"%s\"); instance %d hit "
	        "max_connections",
	        why, ok ? "" : ". ", TERM_NUM(cap, 0), TERM_NUM(top ? top->rps : 0, 0),
	        top ? top->clients : 0, TERM_NUM(top ? top->http_503 : 0, 0), r->compare.speedup,
	        r->leak.leaky.leaks ? r->leak.leaky.first_leak.holder : "", r->maxconn.failed_instance);
}
