/*
 * lab-pooling — "Walk me through how you'd handle database connection pooling in a
 * high-throughput API."
 *
 * What you will see: a real HTTP API on 127.0.0.1 whose handlers borrow PostgreSQL connections
 * from a pool, under a load generator, in four phases: a new connection per request against a
 * pool; exhaustion as concurrency passes the pool size (throughput flat at pool_size / hold
 * time, the queue growing, 503s from the acquire timeout); a leak against an undersized pool;
 * too many connections for the server, and what pool size buys for a CPU-bound query.
 *
 * Run it: make lab-pooling (ARGS="--quick", "--json", "--step", "--serve --port 8080").
 * Limits: one machine, loopback: there is no network round trip here, so the connect cost you
 * see is the server's fork and authentication alone.
 *
 * This file tells; pooling.c measures and judges, api.c is the API.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "lab.h"
#include "pg.h"
#include "pooling.h"

#define QUESTION "Walk me through how you'd handle database connection pooling in a high-throughput API."

static json_t *load_json(const struct load_result *r)
{
	return json_pack("{s:I,s:I,s:I,s:f,s:f,s:f,s:f}", "requests", (json_int_t)r->completed, "ok",
	                 (json_int_t)r->status_2xx, "http_503", (json_int_t)r->status_503, "rps", r->rps_2xx,
	                 "p50_ms", hist_percentile(&r->latency, 50) / 1000.0, "p99_ms",
	                 hist_percentile(&r->latency, 99) / 1000.0, "max_ms", r->latency.max_us / 1000.0);
}

/* ---- phase 1 ---- */

static void compare_before(struct lab *lab, const void *cfgp)
{
	const struct pooling_config *cfg = cfgp;
	lab_phase(lab, "New connection per request vs a pool (%d requests each way, %d clients, SELECT 1)",
	          cfg->compare_requests, cfg->compare_clients);
}

static void compare_after(struct lab *lab, const void *cfgp, const void *resultp)
{
	const struct pooling_config *cfg = cfgp;
	const struct pooling_compare *c = &((const struct pooling_result *)resultp)->compare;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"", 20, 'l'},
	                          {"req/s", 8, 'r'},
	                          {"p50", 9, 'r'},
	                          {"p99", 9, 'r'},
	                          {"connections opened", 19, 'r'}};
	term_table_header(t, 2, cols, 5);
	const char *row1[] = {"connect per request", TERM_NUM(c->direct.rps_2xx, 0),
	                      TERM_US(hist_percentile(&c->direct.latency, 50)),
	                      TERM_US(hist_percentile(&c->direct.latency, 99)), TERM_NUM(c->connects, 0)};
	term_table_row(t, 2, cols, 5, row1);
	const char *row2[] = {
	        "pooled", TERM_NUM(c->pooled.rps_2xx, 0), TERM_US(hist_percentile(&c->pooled.latency, 50)),
	        TERM_US(hist_percentile(&c->pooled.latency, 99)), TERM_NUM(c->pooled_opened, 0)};
	term_table_row(t, 2, cols, 5, row2);
	term_printf(t,
	            "  %s%.0fx the throughput%s: each request paid for a new backend (fork, SCRAM "
	            "authentication),\n"
	            "  %s alone and %s with %d connecting at once; the pool opened %s connections in all\n",
	            term_bold(t), c->speedup, term_reset(t), TERM_US(c->connect_alone_p50_us),
	            TERM_US(c->connect_p50_us), cfg->compare_clients, TERM_NUM(c->pooled_opened, 0));
	lab_phase_metrics(lab, "compare",
	                  json_pack("{s:o,s:o,s:I,s:f,s:f,s:f}", "direct", load_json(&c->direct), "pooled",
	                            load_json(&c->pooled), "connections_opened", (json_int_t)c->connects,
	                            "connect_p50_ms", c->connect_p50_us / 1000.0, "connect_alone_p50_ms",
	                            c->connect_alone_p50_us / 1000.0, "speedup", c->speedup));
}

/* ---- phase 2 ---- */

static void exhaust_before(struct lab *lab, const void *cfgp)
{
	const struct pooling_config *cfg = cfgp;
	lab_phase(lab, "Exhaustion: concurrency past the pool size (%.1f s a level)", cfg->level_ms / 1000.0);
}

static json_t *exhaust_json(const struct pooling_exhaust *e)
{
	json_t *levels = json_array();
	for (int i = 0; i < e->nlevels; i++) {
		const struct pooling_level *l = &e->levels[i];
		json_array_append_new(
		        levels, json_pack("{s:i,s:f,s:f,s:f,s:f,s:f,s:I,s:I,s:i}", "clients", l->clients,
		                          "rps", l->rps, "predicted_rps", l->predicted_rps, "p50_ms",
		                          l->p50_us / 1000.0, "p99_ms", l->p99_us / 1000.0, "wait_p99_ms",
		                          l->wait_p99_us / 1000.0, "ok", (json_int_t)l->ok, "http_503",
		                          (json_int_t)l->http_503, "max_waiting", l->max_waiting));
	}
	return json_pack("{s:o}", "levels", levels);
}

static void exhaust_after(struct lab *lab, const void *cfgp, const void *resultp)
{
	const struct pooling_config *cfg = cfgp;
	const struct pooling_exhaust *e = &((const struct pooling_result *)resultp)->exhaust;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"clients", 7, 'r'},   {"req/s", 6, 'r'}, {"predicted", 9, 'r'},
	                          {"p50", 8, 'r'},       {"p99", 8, 'r'},   {"p99 pool wait", 13, 'r'},
	                          {"max queue", 9, 'r'}, {"503s", 6, 'r'}};
	term_table_header(t, 2, cols, 8);
	double rps[POOLING_MAX_LEVELS], wait[POOLING_MAX_LEVELS], rps_max = 0;
	for (int i = 0; i < e->nlevels; i++) {
		const struct pooling_level *l = &e->levels[i];
		const char *row[] = {
		        TERM_NUM(l->clients, 0),     TERM_NUM(l->rps, 0),     TERM_NUM(l->predicted_rps, 0),
		        TERM_US(l->p50_us),          TERM_US(l->p99_us),      TERM_US(l->wait_p99_us),
		        TERM_NUM(l->max_waiting, 0), TERM_NUM(l->http_503, 0)};
		term_table_row(t, 2, cols, 8, row);
		rps[i] = l->rps;
		wait[i] = (double)l->wait_p99_us;
		if (l->predicted_rps > rps_max)
			rps_max = l->predicted_rps;
	}
	char spark[128];
	term_printf(t,
	            "  throughput     %s   flat at pool_size / hold = %d / %d ms = %s req/s (Little's law)\n",
	            term_sparkline(spark, sizeof(spark), rps, e->nlevels, rps_max), cfg->pool_size,
	            cfg->hold_ms, TERM_NUM(rps_max, 0));
	term_printf(t,
	            "  p99 pool wait  %s   the queue grows instead; past %d ms it becomes 503s at the API\n",
	            term_sparkline(spark, sizeof(spark), wait, e->nlevels, 0), cfg->acquire_timeout_ms);
	lab_phase_metrics(lab, "exhaustion", exhaust_json(e));
}

/* ---- phase 3 ---- */

static void leak_before(struct lab *lab, const void *cfgp)
{
	const struct pooling_config *cfg = cfgp;
	lab_phase(
	        lab,
	        "A leak vs an undersized pool (%d clients, %.1f s each; one in four asks for missing orders)",
	        cfg->leak_clients, cfg->leak_ms / 1000.0);
}

static void drain_row(const struct term *t, const struct term_col *cols, const char *label,
                      const struct pooling_drain *d)
{
	char pool[48];
	snprintf(pool, sizeof(pool), "%d / %d / %d", d->active, d->idle, d->waiting);
	const char *row[] = {label, TERM_NUM(d->rps_ok, 1),      TERM_NUM(d->http_503, 0),
	                     pool,  TERM_US(d->longest_hold_us), TERM_NUM(d->leaks, 0)};
	term_table_row(t, 2, cols, 6, row);
}

static json_t *drain_json(const struct pooling_drain *d)
{
	return json_pack("{s:i,s:f,s:I,s:I,s:I,s:f,s:I,s:i,s:i,s:i,s:f,s:I,s:s}", "pool_size", d->pool_size,
	                 "answers_per_s", d->rps_ok, "ok", (json_int_t)d->ok, "not_found",
	                 (json_int_t)d->not_found, "http_503", (json_int_t)d->http_503, "drained_at_ms",
	                 d->drained_at_us / 1000.0, "answered_after_drain",
	                 (json_int_t)d->answered_after_drain, "active", d->active, "idle", d->idle, "waiting",
	                 d->waiting, "longest_hold_ms", d->longest_hold_us / 1000.0, "leaks",
	                 (json_int_t)d->leaks, "leak_holder", d->leaks ? d->first_leak.holder : "");
}

static void leak_after(struct lab *lab, const void *cfgp, const void *resultp)
{
	const struct pooling_config *cfg = cfgp;
	const struct pooling_leak *l = &((const struct pooling_result *)resultp)->leak;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"", 28, 'l'},
	                          {"answers/s", 9, 'r'},
	                          {"503s", 6, 'r'},
	                          {"active/idle/waiting", 19, 'r'},
	                          {"longest hold", 12, 'r'},
	                          {"leak reports", 12, 'r'}};
	char label1[64], label2[64];
	snprintf(label1, sizeof(label1), "leak: 404 path, pool of %d", l->leaky.pool_size);
	snprintf(label2, sizeof(label2), "too small: pool of %d", l->undersized.pool_size);
	term_table_header(t, 2, cols, 6);
	drain_row(t, cols, label1, &l->leaky);
	drain_row(t, cols, label2, &l->undersized);
	if (l->leaky.leaks)
		term_printf(t,
		            "  %sleak detector%s: \"%s\" held a connection past %d ms (acquired at t=%s, "
		            "backend pid "
		            "%d); %llu reports\n",
		            term_bold(t), term_reset(t), l->leaky.first_leak.holder, cfg->leak_threshold_ms,
		            TERM_US(l->leaky.first_leak.acquired_at_us), l->leaky.first_leak.backend_pid,
		            (unsigned long long)l->leaky.leaks);
	if (l->leaky.drained_at_us)
		term_printf(
		        t,
		        "  the leak drained the pool at t=%s: %s answers to the requests sent after it%s\n",
		        TERM_US(l->leaky.drained_at_us), TERM_NUM(l->leaky.answered_after_drain, 0),
		        l->leaky.answered_after_drain ? "" : ", only 503s");
	/* what the small pool did, said from its numbers: the judge decides whether it told them apart */
	term_printf(t,
	            "  the small pool %s: %s answers/s against pool / hold = %s/s, longest hold %s, %s "
	            "leak reports.\n"
	            "  Both give 503s at the API; the pool's own numbers tell them apart.\n",
	            l->undersized.drained_at_us ? "drained too" : "never drained",
	            TERM_NUM(l->undersized.rps_ok, 0),
	            TERM_NUM(l->undersized.pool_size * 1000.0 / cfg->hold_ms, 0),
	            TERM_US(l->undersized.longest_hold_us), TERM_NUM(l->undersized.leaks, 0));
	lab_phase_metrics(lab, "leak",
	                  json_pack("{s:o,s:o}", "leaky", drain_json(&l->leaky), "undersized",
	                            drain_json(&l->undersized)));
}

/* ---- phase 4 ---- */

static void maxconn_before(struct lab *lab, const void *cfgp)
{
	const struct pooling_config *cfg = cfgp;
	lab_phase(lab,
	          "Too many connections: %d app instances x pool %d against the server's max_connections",
	          cfg->instances, cfg->instance_pool);
}

static void instances_tell(const struct term *t, const struct pooling_maxconn *m)
{
	term_printf(t,
	            "  server: max_connections %d, %d reserved for superusers (%d for this role), %d in use "
	            "before\n",
	            m->max_connections, m->reserved, m->max_connections - m->reserved, m->in_use_before);
	for (int i = 0; i < m->instances_ready; i++)
		term_printf(t, "  instance %d: %d connections open\n", i + 1, m->instance_pool);
	if (m->failed_instance)
		term_printf(t, "  instance %d: %d opened, then %s%s%s\n", m->failed_instance,
		            m->opened_total - m->instances_ready * m->instance_pool, term_red(t),
		            m->server_error, term_reset(t));
	else
		term_printf(t, "  every instance opened its pool: the server has room for %d\n",
		            m->opened_total);
}

static json_t *maxconn_json(const struct pooling_maxconn *m)
{
	json_t *sizes = json_array();
	for (int i = 0; i < m->nsizes; i++)
		json_array_append_new(sizes,
		                      json_pack("{s:i,s:f,s:f,s:f}", "pool_size", m->sizes[i].pool_size,
		                                "rps", m->sizes[i].rps, "p50_ms", m->sizes[i].p50_us / 1000.0,
		                                "p99_ms", m->sizes[i].p99_us / 1000.0));
	return json_pack("{s:i,s:i,s:i,s:i,s:s,s:o,s:i}", "max_connections", m->max_connections,
	                 "instances_ready", m->instances_ready, "failed_instance", m->failed_instance,
	                 "opened_total", m->opened_total, "server_error", m->server_error, "sizes", sizes,
	                 "rule_of_thumb", m->rule_of_thumb);
}

static void maxconn_after(struct lab *lab, const void *cfgp, const void *resultp)
{
	const struct pooling_config *cfg = cfgp;
	const struct pooling_maxconn *m = &((const struct pooling_result *)resultp)->maxconn;
	const struct term *t = &lab->term;
	instances_tell(t, m);
	term_printf(
	        t,
	        "\n  the same CPU-bound load (%d clients, sum over %s rows a request) at each pool size:\n",
	        cfg->size_clients, TERM_NUM(cfg->cpu_rows, 0));
	struct term_col cols[] = {
	        {"pool size", 9, 'r'}, {"req/s", 7, 'r'}, {"p50", 8, 'r'}, {"p99", 8, 'r'}, {"", 24, 'l'}};
	term_table_header(t, 2, cols, 5);
	double best = 0;
	for (int i = 0; i < m->nsizes; i++)
		if (m->sizes[i].rps > best)
			best = m->sizes[i].rps;
	for (int i = 0; i < m->nsizes; i++) {
		const struct pooling_size *s = &m->sizes[i];
		char bar[128];
		const char *row[] = {TERM_NUM(s->pool_size, 0), TERM_NUM(s->rps, 0), TERM_US(s->p50_us),
		                     TERM_US(s->p99_us), term_bar(bar, sizeof(bar), s->rps, best, 24)};
		term_table_row(t, 2, cols, 5, row);
	}
	term_printf(
	        t,
	        "  rule of thumb (HikariCP): cores x 2 + spindles = %d x 2 + 1 = %d; past the cores, more\n"
	        "  connections queue inside the server instead of the pool, and cost it memory and slots\n",
	        m->cores, m->rule_of_thumb);
	lab_phase_metrics(lab, "max_connections", maxconn_json(m));
}

/*
 * The key chart: throughput at each concurrency of phase 2 against Little's law, min(clients,
 * pool) / hold. The claim at a glance: the bars follow the line up to the pool size, then stay flat.
 */
static json_t *throughput_chart(const struct pooling_result *r)
{
	const struct pooling_exhaust *e = &r->exhaust;
	json_t *labels = json_array(), *measured = json_array(), *law = json_array();
	for (int i = 0; i < e->nlevels; i++) {
		char label[32];
		snprintf(label, sizeof(label), "%d clients", e->levels[i].clients);
		json_array_append_new(labels, json_string(label));
		json_array_append_new(measured, json_real(round(e->levels[i].rps)));
		json_array_append_new(law, json_real(e->levels[i].predicted_rps));
	}
	char title[96];
	snprintf(title, sizeof(title), "throughput against concurrency, pool of %d, %d ms a request",
	         r->pool_size, r->hold_ms);
	return json_pack("{s:s,s:s,s:o,s:[{s:s,s:o},{s:s,s:o,s:b}],s:b}", "title", title, "unit",
	                 "requests/s", "labels", labels, "series", "name", "measured", "values", measured,
	                 "name", "Little's law: min(clients, pool) / hold", "values", law, "line", 1, "log",
	                 0);
}

static const struct lab_phase_tell TELLS[POOLING_PHASES] = {
        {compare_before, compare_after},
        {exhaust_before, exhaust_after},
        {leak_before, leak_after},
        {maxconn_before, maxconn_after},
};

/* --serve: the API alone, until Ctrl-C. */
static int serve(struct lab *lab, const struct pooling_config *cfg)
{
	char err[LAB_ERRLEN], help[1024];
	if (pooling_setup(cfg, err, sizeof(err)) < 0)
		return lab_fail(lab, "cannot create schema lab_pooling: %s", err);
	struct pooling_api *api = pooling_api_start(cfg, cfg->pool_size, lab->opts.port, err, sizeof(err));
	if (!api) {
		char terr[LAB_ERRLEN];
		pooling_teardown(cfg, terr, sizeof(terr));
		return lab_fail(lab, "cannot start the API: %s", err);
	}
	snprintf(help, sizeof(help),
	         "  GET /pooled?hold_ms=20   a pooled connection held 20 ms (0..%d; pool max %d, timeout %d "
	         "ms)\n"
	         "  GET /direct?hold_ms=0    a new connection for this request alone\n"
	         "  GET /orders?id=42        an order; /orders-leaky?id=999 leaks its connection on the 404 "
	         "path\n"
	         "  GET /cpu                 a CPU-bound query\n"
	         "  GET /stats               the pool: active, idle, waiting, waits, leaks\n",
	         POOLING_HOLD_MS_MAX, cfg->pool_size, cfg->acquire_timeout_ms);
	lab_serve_wait(lab, pooling_api_port(api), help);
	/* every request in flight or queued gets its reply before the server goes */
	pooling_api_stop(api, NULL);
	if (pooling_teardown(cfg, err, sizeof(err)) < 0)
		return lab_fail(lab, "cannot drop schema lab_pooling: %s", err);
	lab_free(lab);
	return LAB_EXIT_OK;
}

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "pooling", QUESTION, POOLING_PHASES, argc, argv) < 0)
		return lab.exit_code;
	struct pooling_config cfg;
	pooling_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	if (lab_probe(&lab, true, false) < 0)
		return lab.exit_code;
	if (lab.opts.serve)
		return serve(&lab, &cfg);

	char url[256], err[LAB_ERRLEN];
	pg_url_redact(cfg.pg_url, url, sizeof(url));
	lab_config_set(&lab, "pool_size", json_integer(cfg.pool_size));
	lab_config_set(&lab, "hold_ms", json_integer(cfg.hold_ms));
	lab_config_set(&lab, "acquire_timeout_ms", json_integer(cfg.acquire_timeout_ms));
	lab_config_set(&lab, "leak_threshold_ms", json_integer(cfg.leak_threshold_ms));
	lab_header(
	        &lab,
	        "PostgreSQL %s · pool max %d · a request holds its connection %d ms · acquire timeout %d ms",
	        url, cfg.pool_size, cfg.hold_ms, cfg.acquire_timeout_ms);

	struct pooling_result *result = calloc(1, sizeof(*result));
	if (!result)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, POOLING_PHASES, &cfg, result};
	cfg.hooks = lab_teller_hooks(&teller);
	if (pooling_run(&cfg, result, err, sizeof(err)) < 0) {
		bool lost = result->pg_lost;
		free(result);
		return lab_run_failed(&lab, lost ? "PostgreSQL" : NULL, err);
	}
	struct lab_verdict verdict;
	pooling_judge(result, &verdict);
	lab_chart(&lab, throughput_chart(result));
	free(result);
	return lab_finish(&lab, &verdict);
}
