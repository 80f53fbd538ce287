/*
 * lab-stampede — "What's a cache stampede and how do you prevent it?"
 *
 * What you will see: hundreds of clients reading one hot key through cache-aside in Redis, its
 * value a real aggregation in PostgreSQL of tens of milliseconds, the TTL short. Without
 * protection every expiry sends the whole herd to the database; then the same load with a lock
 * (waiters wait), XFetch and stale-while-revalidate, in one table; then a thousand keys warmed at
 * once expiring together, against the same keys with a jittered TTL; then Redis going away
 * mid-run, and the clients degrading to PostgreSQL. Every recompute count is the server's: each
 * recompute is one statement that also logs itself in lab_stampede.recomputes.
 *
 * Run it: make lab-stampede (ARGS="--quick", "--json", "--step", "--seed 7").
 * Limits: one machine, loopback, 2 cores: the database, Redis and every client share them, so
 * a herd slows everything at once (which is the point), and absolute times vary run to run.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lab.h"
#include "pg.h"
#include "redis.h"
#include "stampede.h"

#define QUESTION "What's a cache stampede and how do you prevent it?"

/* sparklines wider than this are summed into coarser intervals, so a line fits the screen */
#define SPARK_COLS 40

/* Sums groups of buckets of in (n) into out so at most SPARK_COLS remain; *nout gets their count.
 * Returns how many buckets each column holds. */
static int spark_fit(const double *in, int n, int factor, double *out, int *nout)
{
	if (factor < 1)
		factor = (n + SPARK_COLS - 1) / SPARK_COLS;
	if (factor < 1)
		factor = 1;
	int m = 0;
	for (int i = 0; i < n; i++) {
		if (i % factor == 0)
			out[m++] = 0;
		out[m - 1] += in[i];
	}
	*nout = m;
	return factor;
}

static json_t *series_json(const double *s, int n)
{
	json_t *a = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(a, json_integer((json_int_t)s[i]));
	return a;
}

static json_t *hot_json(const struct stampede_hot_result *r, int bucket_ms)
{
	json_t *per = json_array();
	for (int i = 0; i < r->expiries && i < STAMPEDE_MAX_EXPIRIES; i++)
		json_array_append_new(per, json_integer(r->per_expiry[i]));
	json_t *o = json_pack(
	        "{s:s,s:i,s:f,s:I,s:i,s:f,s:i,s:i,s:o,s:i,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:f,s:f,s:f,s:i,"
	        "s:o}",
	        "defence", stampede_defence_id(r->defence), "clients", r->clients, "run_s", r->run_s,
	        "recomputes", (json_int_t)r->recomputes, "expiries", r->expiries, "recomputes_per_expiry",
	        r->recomputes_per_expiry, "min_per_expiry", r->min_per_expiry, "max_per_expiry",
	        r->max_per_expiry, "per_expiry", per, "peak_concurrent_recomputes", r->peak_concurrent,
	        "recompute_mean_ms", r->recompute_mean_us / 1000.0, "reads", (json_int_t)r->reads,
	        "lost_reads", (json_int_t)r->lost, "reads_waited_on_db", (json_int_t)r->db_waits,
	        "stale_reads", (json_int_t)r->stale_reads, "hard_misses", (json_int_t)r->hard_misses,
	        "lock_busy", (json_int_t)r->lock_busy, "peak_at_db_queued_or_running", r->peak_in_flight,
	        "p50_ms", hist_percentile(&r->latency, 50) / 1000.0, "p99_ms",
	        hist_percentile(&r->latency, 99) / 1000.0, "max_ms", r->latency.max_us / 1000.0, "bucket_ms",
	        bucket_ms, "db_statements_per_bucket", series_json(r->series, r->nseries));
	if (o && r->redis_lost)
		json_object_set_new(
		        o, "redis_lost",
		        json_pack("{s:f,s:s,s:I,s:I,s:I,s:f,s:f}", "at_s", r->redis_lost_at_s, "error",
		                  r->redis_error, "reads_after", (json_int_t)r->reads_after_loss,
		                  "degraded_queries", (json_int_t)r->degraded_queries, "reconnect_attempts",
		                  (json_int_t)r->reconnect_attempts, "db_queries_per_s_before",
		                  r->queries_per_s_before, "db_queries_per_s_after", r->queries_per_s_after));
	return o;
}

static json_t *jitter_json(const struct stampede_jitter_result *r, int bucket_ms)
{
	return json_pack("{s:b,s:i,s:I,s:i,s:f,s:f,s:f,s:i,s:f,s:i,s:i,s:i,s:o,s:o}", "jittered", r->jittered,
	                 "keys", r->keys, "recomputes", (json_int_t)r->recomputes, "keys_recomputed",
	                 r->keys_recomputed, "peak_asked", r->peak, "mean", r->mean, "peak_to_mean",
	                 r->peak_to_mean, "peak_concurrent", r->peak_concurrent, "wait_p99_ms",
	                 hist_percentile(&r->wait, 99) / 1000.0, "window_first_bucket", r->window_first,
	                 "window_last_bucket", r->window_last, "bucket_ms", bucket_ms, "asked_per_bucket",
	                 series_json(r->series, r->nseries), "started_per_bucket",
	                 series_json(r->started, r->nstarted));
}

/* The hot key's run, expiry by expiry, and what the database saw. */
static void print_herd(struct lab *lab, const struct stampede_config *cfg,
                       const struct stampede_hot_result *r, double query_us, int think_ms)
{
	const struct term *t = &lab->term;
	char line[512] = "", spark[1024];
	int shown = r->expiries < 12 ? r->expiries : 12;
	for (int i = 0; i < shown; i++) {
		size_t l = strlen(line);
		snprintf(line + l, sizeof(line) - l, "%s%d", i ? " · " : "", r->per_expiry[i]);
	}
	term_printf(
	        t,
	        "  recomputes at each expiry (server log): %s%s%s%s = %s%s per expiry%s for %d clients;\n"
	        "  predicted: up to %d, the reads that arrive during one recompute (a read every ~%d ms;\n"
	        "  a recompute took %s in the herd, %s alone)\n",
	        term_bold(t), line, r->expiries > shown ? " …" : "", term_reset(t), term_red(t),
	        TERM_NUM(r->recomputes_per_expiry, 1), term_reset(t), r->clients, r->clients, think_ms,
	        TERM_US(r->recompute_mean_us), TERM_US(query_us));
	double fitted[STAMPEDE_MAX_BUCKETS];
	int nf, f = spark_fit(r->series, r->nseries, 0, fitted, &nf);
	term_printf(t, "  PostgreSQL  %s  recomputes per %d ms; %d at once (the pool's %d, flat out)\n",
	            term_sparkline(spark, sizeof(spark), fitted, nf, 0), f * cfg->bucket_ms,
	            r->peak_concurrent, cfg->pg_pool);
	term_printf(t, "  %d reads queued for the database at the peak; p99 read %s, max %s\n",
	            r->peak_in_flight, TERM_US((double)hist_percentile(&r->latency, 99)),
	            TERM_US((double)r->latency.max_us));
}

static void print_defences(struct lab *lab, const struct stampede_config *cfg,
                           const struct stampede_hot_result *r)
{
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"defence", 22, 'l'},  {"recomputes/expiry", 17, 'r'},
	                          {"predicted", 9, 'r'}, {"waited on PG", 12, 'r'},
	                          {"at once", 7, 'r'},   {"p99 read", 9, 'r'},
	                          {"max read", 9, 'r'},  {"stale", 6, 'r'}};
	char xpred[32];
	/* 1 + (e^(1/beta) - 1) when a recompute takes what the last one took (docs/stampede.md) */
	snprintf(xpred, sizeof(xpred), "~%.1f", exp(1.0 / cfg->beta));
	const char *const predicted[] = {"≤ clients", "1", xpred, "1"};
	term_table_header(t, 2, cols, 8);
	for (int d = 0; d < STAMPEDE_DEFENCES; d++) {
		char label[64];
		snprintf(label, sizeof(label), "%s", stampede_defence_name((enum stampede_defence)d));
		if (d == STAMPEDE_XFETCH)
			snprintf(label, sizeof(label), "XFetch (beta %.1f)", cfg->beta);
		const char *row[] = {label,
		                     TERM_NUM(r[d].recomputes_per_expiry, 1),
		                     predicted[d],
		                     TERM_NUM((double)r[d].db_waits, 0),
		                     TERM_NUM(r[d].peak_concurrent, 0),
		                     TERM_US((double)hist_percentile(&r[d].latency, 99)),
		                     TERM_US((double)r[d].latency.max_us),
		                     TERM_NUM((double)r[d].stale_reads, 0)};
		term_table_row(t, 2, cols, 8, row);
	}
	const struct stampede_hot_result *lk = &r[STAMPEDE_LOCK], *xf = &r[STAMPEDE_XFETCH],
	                                 *sw = &r[STAMPEDE_SWR];
	term_printf(
	        t,
	        "  lock: %s SET NX found it taken; the waiters polled every %d ms for the holder's value\n"
	        "  (one recompute, and every waiter pays its latency); %llu reads lost\n",
	        TERM_NUM((double)lk->lock_busy, 0), cfg->lock_poll_ms, (unsigned long long)lk->lost);
	term_printf(t,
	            "  XFetch: recompute early when now - delta x beta x ln(rand) >= expiry: %s of %s reads\n"
	            "  waited (%.2f%%), %llu found the key missing\n",
	            TERM_NUM((double)xf->db_waits, 0), TERM_NUM((double)xf->reads, 0),
	            xf->reads ? 100.0 * xf->db_waits / xf->reads : 0.0, (unsigned long long)xf->hard_misses);
	term_printf(t, "  SWR: %s reads served stale (up to one recompute old) while one client refreshed\n",
	            TERM_NUM((double)sw->stale_reads, 0));
}

static void print_jitter(struct lab *lab, const struct stampede_config *cfg,
                         const struct stampede_jitter_result *j)
{
	const struct term *t = &lab->term;
	double max = j[0].peak > j[1].peak ? j[0].peak : j[1].peak;
	int n = 0;
	for (int i = 0; i < 2; i++) {
		n = j[i].nseries > n ? j[i].nseries : n;
		n = j[i].nstarted > n ? j[i].nstarted : n;
	}
	term_printf(t,
	            "  recomputes per %d ms from the warm-up, from the server's log, one scale; the wave "
	            "falls in "
	            "[%.1f s, %.1f s]\n  asked: when a reader found its key missing · run: when the "
	            "statement started\n",
	            cfg->bucket_ms, cfg->key_ttl_ms / 1000.0, (cfg->key_ttl_ms + cfg->jitter_ms) / 1000.0);
	for (int i = 0; i < 2; i++) {
		double asked[STAMPEDE_MAX_BUCKETS] = {0}, run[STAMPEDE_MAX_BUCKETS] = {0};
		char spark[2][1024];
		memcpy(asked, j[i].series, sizeof(double) * (size_t)j[i].nseries);
		memcpy(run, j[i].started, sizeof(double) * (size_t)j[i].nstarted);
		term_printf(t, "  %-9s asked  %s  peak %s\n            run    %s\n",
		            j[i].jittered ? "jittered" : "same TTL",
		            term_sparkline(spark[0], sizeof(spark[0]), asked, n, max), TERM_NUM(j[i].peak, 0),
		            term_sparkline(spark[1], sizeof(spark[1]), run, n, max));
	}
	term_printf(t, "\n");
	struct term_col cols[] = {
	        {"TTL", 28, 'l'},         {"recomputes", 10, 'r'}, {"peak asked/100 ms", 17, 'r'},
	        {"mean/100 ms", 11, 'r'}, {"peak/mean", 9, 'r'},   {"predicted", 9, 'r'},
	        {"peak at once", 12, 'r'}};
	term_table_header(t, 2, cols, 7);
	int window = j[0].window_last - j[0].window_first + 1;
	for (int i = 0; i < 2; i++) {
		char label[64], ratio[32], pred[32];
		if (j[i].jittered)
			snprintf(label, sizeof(label), "%.1f s + uniform(0, %.1f s)",
			         cfg->key_ttl_ms / 1000.0, cfg->jitter_ms / 1000.0);
		else
			snprintf(label, sizeof(label), "%.1f s for every key", cfg->key_ttl_ms / 1000.0);
		/* all in one bucket: peak/mean = the window's buckets; spread evenly: about 1 */
		snprintf(pred, sizeof(pred), "%s%dx", j[i].jittered ? "~" : "≤ ", j[i].jittered ? 1 : window);
		snprintf(ratio, sizeof(ratio), "%.1fx", j[i].peak_to_mean);
		const char *row[] = {label,
		                     TERM_NUM((double)j[i].recomputes, 0),
		                     TERM_NUM(j[i].peak, 0),
		                     TERM_NUM(j[i].mean, 1),
		                     ratio,
		                     pred,
		                     TERM_NUM(j[i].peak_concurrent, 0)};
		term_table_row(t, 2, cols, 7, row);
	}
	term_printf(
	        t,
	        "  the same %s recomputes (each key once); the peak fell %s%.1fx%s. A key's reader waited "
	        "for its\n"
	        "  value p99 %s with one TTL (the database took the wave as a queue) and %s with jitter\n",
	        TERM_NUM(j[0].keys, 0), term_bold(t), stampede_jitter_fall(j), term_reset(t),
	        TERM_US((double)hist_percentile(&j[0].wait, 99)),
	        TERM_US((double)hist_percentile(&j[1].wait, 99)));
}

static void print_outage(struct lab *lab, const struct stampede_hot_result *o, int cut, int bucket_ms)
{
	const struct term *t = &lab->term;
	if (!o->redis_lost) {
		term_printf(t, "  %sRedis never went away%s (the proxy cut %d connections)\n", term_red(t),
		            term_reset(t), cut);
		return;
	}
	term_printf(t, "  %s⚠ Redis went away at t=%.2f s (%s): serving reads from PostgreSQL%s\n",
	            term_yellow(t), o->redis_lost_at_s, o->redis_error, term_reset(t));
	term_printf(t,
	            "  the proxy cut %d connections; %s reconnect attempts refused (each client tries every "
	            "500 ms)\n",
	            cut, TERM_NUM((double)o->reconnect_attempts, 0));
	term_printf(t, "  reads answered: %s in all, %s after the loss, %s%llu lost%s; p99 read %s\n",
	            TERM_NUM((double)o->reads, 0), TERM_NUM((double)o->reads_after_loss, 0),
	            o->lost ? term_red(t) : term_green(t), (unsigned long long)o->lost, term_reset(t),
	            TERM_US((double)hist_percentile(&o->latency, 99)));
	term_printf(t,
	            "  PostgreSQL ran %s statements/s before (the cache answered) and %s/s after: every read "
	            "is a\n"
	            "  query now, and the app's pool is what keeps the herd from becoming %d backends\n",
	            TERM_NUM(o->queries_per_s_before, 0), TERM_NUM(o->queries_per_s_after, 0), o->clients);
	char spark[1024];
	double fitted[STAMPEDE_MAX_BUCKETS];
	int nf, f = spark_fit(o->series, o->nseries, 0, fitted, &nf);
	term_printf(t, "  PostgreSQL  %s  statements per %d ms\n",
	            term_sparkline(spark, sizeof(spark), fitted, nf, 0), f * bucket_ms);
}

/* ---- the telling: one before and one after per phase ---- */

static void herd_before(struct lab *lab, const void *c)
{
	const struct stampede_config *cfg = c;
	lab_phase(lab, "The hot key: %d clients, cache-aside, no protection (%.1f s, TTL %d ms)",
	          cfg->clients, cfg->run_ms / 1000.0, cfg->ttl_ms);
}

static void herd_after(struct lab *lab, const void *c, const void *result)
{
	const struct stampede_config *cfg = c;
	const struct stampede_result *r = result;
	print_herd(lab, cfg, &r->hot[STAMPEDE_NONE], r->query_us, r->think_ms);
	lab_phase_metrics(lab, "herd", hot_json(&r->hot[STAMPEDE_NONE], cfg->bucket_ms));
}

static void defences_before(struct lab *lab, const void *c)
{
	const struct stampede_config *cfg = c;
	if (cfg->xfetch_ttl_ms == cfg->ttl_ms)
		lab_phase(lab, "The defences, same load (%d clients, %.1f s each, TTL %d ms)", cfg->clients,
		          cfg->run_ms / 1000.0, cfg->ttl_ms);
	else
		lab_phase(lab,
		          "The defences, same load (%d clients, TTL %d ms for %.1f s; XFetch: %d ms for %.1f "
		          "s)",
		          cfg->clients, cfg->ttl_ms, cfg->run_ms / 1000.0, cfg->xfetch_ttl_ms,
		          (cfg->run_ms + cfg->xfetch_ttl_ms - cfg->ttl_ms) / 1000.0);
}

static void defences_after(struct lab *lab, const void *c, const void *result)
{
	const struct stampede_config *cfg = c;
	const struct stampede_result *r = result;
	print_defences(lab, cfg, r->hot);
	json_t *defences = json_object();
	for (int d = 0; d < STAMPEDE_DEFENCES; d++)
		json_object_set_new(defences, stampede_defence_id((enum stampede_defence)d),
		                    hot_json(&r->hot[d], cfg->bucket_ms));
	lab_phase_metrics(lab, "defences", defences);
}

static void jitter_before(struct lab *lab, const void *c)
{
	const struct stampede_config *cfg = c;
	lab_phase(lab, "TTL jitter: %s keys warmed at the same moment, the same TTL vs a jittered one",
	          TERM_NUM(cfg->keys, 0));
}

static void jitter_after(struct lab *lab, const void *c, const void *result)
{
	const struct stampede_config *cfg = c;
	const struct stampede_jitter_result *j = ((const struct stampede_result *)result)->jitter;
	print_jitter(lab, cfg, j);
	lab_phase_metrics(lab, "jitter",
	                  json_pack("{s:o,s:o,s:f}", "same_ttl", jitter_json(&j[0], cfg->bucket_ms),
	                            "jittered", jitter_json(&j[1], cfg->bucket_ms), "peak_fall",
	                            stampede_jitter_fall(j)));
}

static void outage_before(struct lab *lab, const void *c)
{
	const struct stampede_config *cfg = c;
	lab_phase(lab,
	          "Redis goes away mid-run: the lock defence, Redis behind a proxy that cuts it at %.1f s",
	          cfg->outage_at_ms / 1000.0);
}

static void outage_after(struct lab *lab, const void *c, const void *result)
{
	const struct stampede_config *cfg = c;
	const struct stampede_result *r = result;
	print_outage(lab, &r->outage, r->connections_cut, cfg->bucket_ms);
	json_t *om = hot_json(&r->outage, cfg->bucket_ms);
	json_object_set_new(om, "connections_cut", json_integer(r->connections_cut));
	lab_phase_metrics(lab, "outage", om);
}

static const struct lab_phase_tell TELLS[STAMPEDE_PHASES] = {
        [STAMPEDE_PHASE_HERD] = {herd_before, herd_after},
        [STAMPEDE_PHASE_DEFENCES] = {defences_before, defences_after},
        [STAMPEDE_PHASE_JITTER] = {jitter_before, jitter_after},
        [STAMPEDE_PHASE_OUTAGE] = {outage_before, outage_after},
};

static void config_json(struct lab *lab, const struct stampede_config *cfg)
{
	lab_config_set(lab, "clients", json_integer(cfg->clients));
	lab_config_set(lab, "pg_pool", json_integer(cfg->pg_pool));
	lab_config_set(lab, "rows", json_integer(cfg->rows));
	lab_config_set(lab, "ttl_ms", json_integer(cfg->ttl_ms));
	lab_config_set(lab, "xfetch_ttl_ms", json_integer(cfg->xfetch_ttl_ms));
	lab_config_set(lab, "run_ms", json_integer(cfg->run_ms));
	lab_config_set(lab, "lock_ms", json_integer(cfg->lock_ms));
	lab_config_set(lab, "beta", json_real(cfg->beta));
	lab_config_set(lab, "stale_ms", json_integer(cfg->stale_ms));
	lab_config_set(lab, "keys", json_integer(cfg->keys));
	lab_config_set(lab, "key_ttl_ms", json_integer(cfg->key_ttl_ms));
	lab_config_set(lab, "jitter_ms", json_integer(cfg->jitter_ms));
	lab_config_set(lab, "bucket_ms", json_integer(cfg->bucket_ms));
	lab_config_set(lab, "outage_at_ms", json_integer(cfg->outage_at_ms));
	lab_config_set(lab, "outage_run_ms", json_integer(cfg->outage_run_ms));
	lab_config_set(lab, "quick", json_boolean(lab->opts.quick));
	lab_config_set(lab, "seed", json_integer((json_int_t)cfg->seed));
}

/*
 * The key chart: recomputes at each expiry of the hot key, per defence, beside what each
 * predicts (every client, 1, e^(1/beta), 1). The claim at a glance: one tall bar, three at ~1.
 */
static json_t *recomputes_chart(const struct stampede_config *cfg, const struct stampede_result *r)
{
	json_t *labels = json_array(), *measured = json_array(), *predicted = json_array();
	for (int d = 0; d < STAMPEDE_DEFENCES; d++) {
		json_array_append_new(labels, json_string(stampede_defence_name((enum stampede_defence)d)));
		json_array_append_new(measured, json_real(round(r->hot[d].recomputes_per_expiry * 10) / 10));
		double p = d == STAMPEDE_NONE     ? cfg->clients
		           : d == STAMPEDE_XFETCH ? exp(1.0 / cfg->beta)
		                                  : 1;
		json_array_append_new(predicted, json_real(round(p * 10) / 10));
	}
	char title[96];
	snprintf(title, sizeof(title), "recomputes at each expiry of one hot key, %d clients", cfg->clients);
	return json_pack("{s:s,s:s,s:o,s:[{s:s,s:o},{s:s,s:o,s:b}],s:b}", "title", title, "unit",
	                 "recomputes per expiry", "labels", labels, "series", "name", "measured (server log)",
	                 "values", measured, "name", "predicted", "values", predicted, "line", 1, "log", 0);
}

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "stampede", QUESTION, STAMPEDE_PHASES, argc, argv) < 0)
		return lab.exit_code;
	if (lab.opts.serve)
		return lab_fail(&lab, "--serve: this lab has no API to serve; run it without --serve");
	if (lab_probe(&lab, true, true) < 0)
		return lab.exit_code;
	struct stampede_config cfg;
	stampede_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.redis_url = lab.opts.redis_url;
	cfg.seed = lab.opts.seed;
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	config_json(&lab, &cfg);
	char pgu[256], ru[256];
	pg_url_redact(cfg.pg_url, pgu, sizeof(pgu));
	redis_url_redact(cfg.redis_url, ru, sizeof(ru));
	lab_header(&lab,
	           "PostgreSQL %s · Redis %s\n%d clients · app pool %d · TTL %d ms · the value: an "
	           "aggregation over %s rows",
	           pgu, ru, cfg.clients, cfg.pg_pool, cfg.ttl_ms, TERM_NUM(cfg.rows, 0));

	struct stampede_result *res = calloc(1, sizeof(*res));
	if (!res)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, STAMPEDE_PHASES, &cfg, res};
	cfg.hooks = lab_teller_hooks(&teller);
	char err[LAB_ERRLEN];
	int rc = stampede_run(&cfg, res, err, sizeof(err));
	if (rc < 0) {
		/* after Ctrl-C each of these holds, silent, while lab.c's guard cleans up and exits 130 */
		rc = lab_run_failed(&lab, res->lost_server, err);
		free(res);
		return rc;
	}
	lab_config_set(&lab, "query_ms", json_real(res->query_us / 1000.0));
	lab_config_set(&lab, "think_ms", json_integer(res->think_ms));
	struct lab_verdict verdict;
	stampede_judge(res, &verdict);
	lab_chart(&lab, recomputes_chart(&cfg, res));
	free(res);
	return lab_finish(&lab, &verdict);
}
