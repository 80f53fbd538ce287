/*
 * lab-invalidation — "How do you handle cache invalidation?"
 *
 * What you will see: 1,000 products cached in Redis, 8 readers, a writer changing them, and
 * every read judged stale or not against the latest version committed before it began. TTL
 * alone swept over several TTLs (hit ratio against stale reads, and the worst staleness against
 * the TTL); the writer deleting after COMMIT, with a counted set of writes "crashing" before
 * the delete; a LISTEN/NOTIFY listener fed by a trigger, surviving the same crash, its lag; the
 * listener's backend ended mid-run, reconnecting without and with a re-sync; versioned keys
 * with a namespace generation. Then the table the interview answer needs.
 *
 * Run it: make lab-invalidation (ARGS="--quick", "--json", "--step", "--seed 7").
 * Limits: one machine, loopback, 2 shared cores: lags and times vary run to run; the counts
 * the verdict rests on (keys left stale by a fault) do not.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invalidation.h"
#include "lab.h"
#include "pg.h"
#include "redis.h"

#define QUESTION "How do you handle cache invalidation?"

static json_t *reads_json(const struct inv_reads *r)
{
	return json_pack("{s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:I,s:I,s:I,s:f}", "reads", (json_int_t)r->reads,
	                 "hits", (json_int_t)r->hits, "stale", (json_int_t)r->stale, "stale_share",
	                 inv_stale_share(r), "hit_ratio", inv_hit_ratio(r), "worst_stale_ms",
	                 r->worst_stale_us / 1000.0, "longest_fill_ms", r->longest_fill_us / 1000.0,
	                 "round_trips_per_read", r->reads ? (double)r->round_trips / r->reads : 0.0, "writes",
	                 (json_int_t)r->writes, "crashed", (json_int_t)r->crashed, "stale_keys_after",
	                 (json_int_t)r->stale_keys_after, "run_s", r->run_s);
}

static const char *pct(char *buf, size_t len, double share)
{
	snprintf(buf, len, "%.2f%%", 100 * share);
	return buf;
}
#define PCT(v) pct((char[16]){0}, 16, (v))

/* ---- the telling ---- */

static void ttl_before(struct lab *lab, const void *c)
{
	const struct invalidation_config *cfg = c;
	lab_phase(lab, "TTL only: cache-aside, %d TTLs from %d to %d ms, %.1f s each", cfg->nttls,
	          cfg->ttls_ms[0], cfg->ttls_ms[cfg->nttls - 1], cfg->ttl_run_ms / 1000.0);
}

static void ttl_after(struct lab *lab, const void *c, const void *result)
{
	(void)c;
	const struct invalidation_result *r = result;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"TTL", 7, 'r'},          {"reads", 7, 'r'},
	                          {"hit ratio", 20, 'l'},   {"stale reads", 20, 'l'},
	                          {"worst stale", 11, 'r'}, {"≤ TTL + fill", 12, 'r'}};
	term_table_header(t, 2, cols, 6);
	double max_stale = 0;
	for (int i = 0; i < r->nttl; i++)
		max_stale =
		        inv_stale_share(&r->ttl[i].r) > max_stale ? inv_stale_share(&r->ttl[i].r) : max_stale;
	json_t *runs = json_array();
	for (int i = 0; i < r->nttl; i++) {
		const struct inv_reads *x = &r->ttl[i].r;
		char hit[64], stale[64], hb[32], sb[32];
		snprintf(hit, sizeof(hit), "%-9s %s", term_bar(hb, sizeof(hb), inv_hit_ratio(x), 1, 8),
		         PCT(inv_hit_ratio(x)));
		snprintf(stale, sizeof(stale), "%-9s %s",
		         term_bar(sb, sizeof(sb), inv_stale_share(x), max_stale, 8), PCT(inv_stale_share(x)));
		char ttl[16];
		snprintf(ttl, sizeof(ttl), "%d ms", r->ttl[i].ttl_ms);
		const char *row[] = {ttl,
		                     TERM_NUM(x->reads, 0),
		                     hit,
		                     stale,
		                     TERM_US(x->worst_stale_us),
		                     TERM_US(r->ttl[i].ttl_ms * 1000.0 + x->longest_fill_us)};
		term_table_row(t, 2, cols, 6, row);
		json_t *o = reads_json(x);
		json_object_set_new(o, "ttl_ms", json_integer(r->ttl[i].ttl_ms));
		json_array_append_new(runs, o);
	}
	term_printf(t, "  a longer TTL buys hits with staleness; no read was behind by more than its TTL + "
	               "its fill\n");
	lab_phase_metrics(lab, "ttl", runs);
}

static void delete_before(struct lab *lab, const void *c)
{
	const struct invalidation_config *cfg = c;
	lab_phase(lab, "Delete after COMMIT (TTL %d s); every %dth write crashes between COMMIT and DEL",
	          cfg->long_ttl_ms / 1000, cfg->crash_every);
}

static void delete_after(struct lab *lab, const void *c, const void *result)
{
	(void)c;
	const struct inv_reads *d = &((const struct invalidation_result *)result)->del;
	const struct term *t = &lab->term;
	term_printf(t, "  %s writes, %s crashed before their DEL; %s of %s reads stale (%s), worst %s\n",
	            TERM_NUM(d->writes, 0), TERM_NUM(d->crashed, 0), TERM_NUM(d->stale, 0),
	            TERM_NUM(d->reads, 0), PCT(inv_stale_share(d)), TERM_US(d->worst_stale_us));
	term_printf(t, "  keys stale after the load: %s%llu%s = the crashed writes: stale until their TTL\n",
	            term_red(t), (unsigned long long)d->stale_keys_after, term_reset(t));
	lab_phase_metrics(lab, "delete", reads_json(d));
}

static void notify_before(struct lab *lab, const void *c)
{
	(void)c;
	lab_phase(lab, "LISTEN/NOTIFY: an AFTER UPDATE trigger, a listener deleting keys; the same crashes");
}

static void notify_after(struct lab *lab, const void *c, const void *result)
{
	(void)c;
	const struct invalidation_result *r = result;
	const struct inv_reads *n = &r->notify;
	const struct term *t = &lab->term;
	term_printf(t, "  %s writes (%s crashed after COMMIT), %s notifications heard; %s stale reads (%s)\n",
	            TERM_NUM(n->writes, 0), TERM_NUM(n->crashed, 0), TERM_NUM(r->notified, 0),
	            TERM_NUM(n->stale, 0), PCT(inv_stale_share(n)));
	term_printf(t, "  lag COMMIT → DEL: p50 %s · p99 %s · max %s; keys stale after: %s%llu%s\n",
	            TERM_US(hist_percentile(&r->lag, 50)), TERM_US(hist_percentile(&r->lag, 99)),
	            TERM_US(r->lag.max_us), term_green(t), (unsigned long long)n->stale_keys_after,
	            term_reset(t));
	json_t *o = reads_json(n);
	json_object_set_new(o, "notified", json_integer((json_int_t)r->notified));
	json_object_set_new(o, "lag_p50_ms", json_real(hist_percentile(&r->lag, 50) / 1000.0));
	json_object_set_new(o, "lag_p99_ms", json_real(hist_percentile(&r->lag, 99) / 1000.0));
	json_object_set_new(o, "lag_max_ms", json_real(r->lag.max_us / 1000.0));
	lab_phase_metrics(lab, "notify", o);
}

static void reconnect_before(struct lab *lab, const void *c)
{
	const struct invalidation_config *cfg = c;
	lab_phase(lab,
	          "The listener's backend ended (pg_terminate_backend): %d writes heard, %d while away, %d "
	          "after",
	          cfg->drop_writes, cfg->drop_writes, cfg->drop_writes);
}

static void reconnect_after(struct lab *lab, const void *c, const void *result)
{
	(void)c;
	const struct inv_drop_run *d = ((const struct invalidation_result *)result)->drop;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"reconnect", 16, 'l'},
	                          {"writes", 6, 'r'},
	                          {"heard", 5, 'r'},
	                          {"lost", 4, 'r'},
	                          {"re-sync deleted", 15, 'r'},
	                          {"stale reads", 11, 'r'},
	                          {"keys stale after", 16, 'r'}};
	term_table_header(t, 2, cols, 7);
	json_t *o = json_object();
	for (int i = 0; i < 2; i++) {
		const char *row[] = {d[i].resync ? "with re-sync" : "without re-sync",
		                     TERM_NUM(d[i].r.writes, 0),
		                     TERM_NUM(d[i].notified, 0),
		                     TERM_NUM(d[i].missed, 0),
		                     TERM_NUM(d[i].resync_deleted, 0),
		                     TERM_NUM(d[i].r.stale, 0),
		                     TERM_NUM(d[i].r.stale_keys_after, 0)};
		term_table_row(t, 2, cols, 7, row);
		json_t *x = reads_json(&d[i].r);
		json_object_set_new(x, "notified", json_integer((json_int_t)d[i].notified));
		json_object_set_new(x, "missed", json_integer((json_int_t)d[i].missed));
		json_object_set_new(x, "resync_deleted", json_integer((json_int_t)d[i].resync_deleted));
		json_object_set_new(o, d[i].resync ? "resync" : "no_resync", x);
	}
	term_printf(t, "  NOTIFY reaches only sessions listening at COMMIT: a reconnect must re-sync what it "
	               "missed\n");
	lab_phase_metrics(lab, "reconnect", o);
}

static void versioned_before(struct lab *lab, const void *c)
{
	(void)c;
	lab_phase(lab,
	          "Versioned keys: product:<id>:v<version> under a generation, both read from PostgreSQL");
}

/* The answer in one table: each method's staleness, its price, and the failure it showed. */
static void summary(struct lab *lab, const struct invalidation_result *r)
{
	const struct term *t = &lab->term;
	const struct inv_ttl_run *last = &r->ttl[r->nttl - 1];
	char ttl_label[40], ttl_fail[64];
	snprintf(ttl_label, sizeof(ttl_label), "TTL only (%d ms)", last->ttl_ms);
	snprintf(ttl_fail, sizeof(ttl_fail), "stale up to the TTL, by design");
	char del_fail[64], ntf_fail[64], ver_fail[64];
	snprintf(del_fail, sizeof(del_fail), "crash before DEL: %llu keys stale",
	         (unsigned long long)r->del.stale_keys_after);
	snprintf(ntf_fail, sizeof(ntf_fail), "reconnect w/o re-sync: %llu stale keys",
	         (unsigned long long)r->drop[0].r.stale_keys_after);
	snprintf(ver_fail, sizeof(ver_fail), "%llu old versions held until TTL",
	         (unsigned long long)r->old_version_keys);
	const struct inv_reads *rows[] = {&last->r, &r->del, &r->notify, &r->versioned};
	const char *names[] = {ttl_label, "delete after commit", "LISTEN/NOTIFY", "versioned keys"};
	const char *fails[] = {ttl_fail, del_fail, ntf_fail, ver_fail};
	struct term_col cols[] = {{"method", 19, 'l'},        {"stale reads", 11, 'r'},
	                          {"worst stale", 11, 'r'},   {"hit ratio", 9, 'r'},
	                          {"extra RT/read", 13, 'r'}, {"failure reproduced", 36, 'l'}};
	term_printf(t, "\n");
	term_table_header(t, 2, cols, 6);
	for (int i = 0; i < 4; i++) {
		const struct inv_reads *x = rows[i];
		const char *row[] = {names[i],
		                     PCT(inv_stale_share(x)),
		                     TERM_US(x->worst_stale_us),
		                     PCT(inv_hit_ratio(x)),
		                     TERM_NUM(x->reads ? (double)x->version_lookups / x->reads : 0, 2),
		                     fails[i]};
		term_table_row(t, 2, cols, 6, row);
	}
}

static void versioned_after(struct lab *lab, const void *c, const void *result)
{
	(void)c;
	const struct invalidation_result *r = result;
	const struct inv_reads *v = &r->versioned;
	const struct term *t = &lab->term;
	term_printf(t,
	            "  %s reads, %s%llu stale%s; %s version lookups (%.2f a read), %.2f round trips a read\n",
	            TERM_NUM(v->reads, 0), term_green(t), (unsigned long long)v->stale, term_reset(t),
	            TERM_NUM(v->version_lookups, 0), v->reads ? (double)v->version_lookups / v->reads : 0,
	            v->reads ? (double)v->round_trips / v->reads : 0);
	term_printf(t, "  old versions still held: %s keys, %s (MEMORY USAGE), beside %s current ones\n",
	            TERM_NUM(r->old_version_keys, 0), TERM_BYTES(r->old_version_bytes),
	            TERM_NUM(r->current_keys, 0));
	term_printf(t,
	            "  one generation bump (one UPDATE): %s of %s reads missed; %s keys of the old one wait "
	            "for TTL\n",
	            TERM_NUM(r->gen_misses, 0), TERM_NUM(r->products, 0), TERM_NUM(r->gen_old_keys, 0));
	json_t *o = reads_json(v);
	json_object_set_new(o, "version_lookups", json_integer((json_int_t)v->version_lookups));
	json_object_set_new(o, "old_version_keys", json_integer((json_int_t)r->old_version_keys));
	json_object_set_new(o, "old_version_bytes", json_integer((json_int_t)r->old_version_bytes));
	json_object_set_new(o, "generation_bump_misses", json_integer((json_int_t)r->gen_misses));
	json_object_set_new(o, "old_generation_keys", json_integer((json_int_t)r->gen_old_keys));
	lab_phase_metrics(lab, "versioned", o);
	summary(lab, r);
}

static const struct lab_phase_tell TELLS[INV_PHASES] = {
        [INV_PHASE_TTL] = {ttl_before, ttl_after},
        [INV_PHASE_DELETE] = {delete_before, delete_after},
        [INV_PHASE_NOTIFY] = {notify_before, notify_after},
        [INV_PHASE_RECONNECT] = {reconnect_before, reconnect_after},
        [INV_PHASE_VERSIONED] = {versioned_before, versioned_after},
};

static void config_json(struct lab *lab, const struct invalidation_config *cfg)
{
	json_t *ttls = json_array();
	for (int i = 0; i < cfg->nttls; i++)
		json_array_append_new(ttls, json_integer(cfg->ttls_ms[i]));
	lab_config_set(lab, "products", json_integer(cfg->products));
	lab_config_set(lab, "readers", json_integer(cfg->readers));
	lab_config_set(lab, "pg_pool", json_integer(cfg->pg_pool));
	lab_config_set(lab, "read_pause_us", json_integer(cfg->read_pause_us));
	lab_config_set(lab, "write_pause_us", json_integer(cfg->write_pause_us));
	lab_config_set(lab, "ttls_ms", ttls);
	lab_config_set(lab, "ttl_run_ms", json_integer(cfg->ttl_run_ms));
	lab_config_set(lab, "run_ms", json_integer(cfg->run_ms));
	lab_config_set(lab, "long_ttl_ms", json_integer(cfg->long_ttl_ms));
	lab_config_set(lab, "crash_every", json_integer(cfg->crash_every));
	lab_config_set(lab, "drop_writes", json_integer(cfg->drop_writes));
	lab_config_set(lab, "quick", json_boolean(lab->opts.quick));
	lab_config_set(lab, "seed", json_integer((json_int_t)cfg->seed));
}

/*
 * The key chart: the worst stale read of each method, in ms, beside the TTL as a line. Under TTL
 * alone the bars climb with the line and stay under it (the TTL bounds staleness, by design);
 * delete after commit, whose crashes leave keys stale until a 30 s TTL, is behind by as long as
 * the load ran; LISTEN/NOTIFY only by its lag; versioned keys never: "none is perfect" at a
 * glance. Up to 5 of the sweep's TTLs, spread over it, so the chart keeps 8 groups.
 */
#define CHART_TTLS 5
static void key_chart(struct lab *lab, const struct invalidation_result *r)
{
	json_t *labels = json_array(), *worst = json_array(), *ttl = json_array();
	int n = r->nttl < CHART_TTLS ? r->nttl : CHART_TTLS;
	for (int k = 0; k < n; k++) {
		const struct inv_ttl_run *t =
		        &r->ttl[n < 2 ? 0 : (k * (r->nttl - 1) + (n - 1) / 2) / (n - 1)];
		json_array_append_new(labels, json_sprintf("TTL %d ms", t->ttl_ms));
		json_array_append_new(worst, json_real(t->r.worst_stale_us / 1000.0));
		json_array_append_new(ttl, json_integer(t->ttl_ms));
	}
	const struct inv_reads *m[] = {&r->del, &r->notify, &r->versioned};
	static const char *const names[] = {"delete after commit", "LISTEN/NOTIFY", "versioned keys"};
	for (int i = 0; i < 3; i++) {
		json_array_append_new(labels, json_string(names[i]));
		json_array_append_new(worst, json_real(m[i]->worst_stale_us / 1000.0));
		json_array_append_new(ttl, json_null());
	}
	lab_chart(lab, json_pack("{s:s,s:s,s:o,s:[{s:s,s:o},{s:s,s:o,s:b}],s:b}", "title",
	                         "worst stale read per method, against the TTL that bounds it", "unit", "ms",
	                         "labels", labels, "series", "name", "worst stale read", "values", worst,
	                         "name", "the TTL", "values", ttl, "line", 1, "log", 0));
}

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "invalidation", QUESTION, INV_PHASES, argc, argv) < 0)
		return lab.exit_code;
	if (lab.opts.serve)
		return lab_fail(&lab, "--serve: this lab has no API to serve; run it without --serve");
	if (lab_probe(&lab, true, true) < 0)
		return lab.exit_code;
	struct invalidation_config cfg;
	invalidation_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.redis_url = lab.opts.redis_url;
	cfg.seed = lab.opts.seed;
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	config_json(&lab, &cfg);
	char pgu[256], ru[256];
	pg_url_redact(cfg.pg_url, pgu, sizeof(pgu));
	redis_url_redact(cfg.redis_url, ru, sizeof(ru));
	lab_header(&lab, "PostgreSQL %s · Redis %s\n%s products · %d readers · a write every %d ms", pgu, ru,
	           TERM_NUM(cfg.products, 0), cfg.readers, cfg.write_pause_us / 1000);
	struct invalidation_result *res = calloc(1, sizeof(*res));
	if (!res)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, INV_PHASES, &cfg, res};
	cfg.hooks = lab_teller_hooks(&teller);
	char err[LAB_ERRLEN];
	int rc = invalidation_run(&cfg, res, err, sizeof(err));
	if (rc < 0) {
		rc = lab_run_failed(&lab, res->lost_server, err);
		free(res);
		return rc;
	}
	struct lab_verdict verdict;
	invalidation_judge(res, &verdict);
	key_chart(&lab, res);
	free(res);
	return lab_finish(&lab, &verdict);
}
