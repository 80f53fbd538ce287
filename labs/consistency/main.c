/*
 * lab-consistency — "What are ACID properties? Which databases don't fully guarantee them?":
 * many stores offer tunable consistency, strong or eventual per operation, as a trade-off.
 *
 * What you will see: a write on a PostgreSQL primary read back at once from its streaming
 * replica (stale reads, how far behind in WAL bytes and in time), the three fixes, the
 * synchronous_commit knob level by level (latency against stale reads), Redis WAIT with its
 * replica connected and cut off, and a quorum model (R + W > N) on three redis-servers.
 *
 * Run it: make lab-consistency (ARGS="--quick", "--json", "--step", "--seed 7"); the replica set
 * comes from scripts/labenv up --replicas (the make target starts it).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consistency.h"
#include "lab.h"
#include "pg.h"
#include "redis.h"

#define QUESTION                                                                                             \
	"What are ACID properties? Which databases don't fully guarantee them? (tunable consistency: "       \
	"strong "                                                                                            \
	"or eventual, per operation)"

static const struct term_col RW_COLS[] = {
        {"", 34, 'l'},           {"commit p50", 10, 'r'}, {"p99", 9, 'r'},          {"stale", 9, 'r'},
        {"behind p50", 10, 'r'}, {"max", 9, 'r'},         {"visible p50", 11, 'r'}, {"max", 9, 'r'}};
#define NRW_COLS 8

static void rw_row(struct lab *lab, const char *name, const struct cons_rw *r)
{
	char stale[32];
	snprintf(stale, sizeof(stale), "%d/%d", r->stale, r->pairs);
	bool any = r->stale > 0;
	const char *row[] = {name,
	                     TERM_US(hist_percentile(&r->commit_us, 50)),
	                     TERM_US(hist_percentile(&r->commit_us, 99)),
	                     stale,
	                     any ? TERM_BYTES(hist_percentile(&r->behind_b, 50)) : "-",
	                     any ? TERM_BYTES(r->behind_b.max_us) : "-",
	                     any ? TERM_US(hist_percentile(&r->visible_us, 50)) : "-",
	                     any ? TERM_US(r->visible_us.max_us) : "-"};
	term_table_row(&lab->term, 2, RW_COLS, NRW_COLS, row);
}

static json_t *rw_json(const struct cons_rw *r)
{
	return json_pack("{s:i,s:i,s:f,s:f,s:f,s:I,s:I,s:f,s:I}", "pairs", r->pairs, "stale", r->stale,
	                 "commit_p50_ms", hist_percentile(&r->commit_us, 50) / 1000.0, "commit_p99_ms",
	                 hist_percentile(&r->commit_us, 99) / 1000.0, "pair_p50_ms",
	                 hist_percentile(&r->pair_us, 50) / 1000.0, "behind_p50_bytes",
	                 (json_int_t)hist_percentile(&r->behind_b, 50), "behind_max_bytes",
	                 (json_int_t)r->behind_b.max_us, "visible_p50_ms",
	                 hist_percentile(&r->visible_us, 50) / 1000.0, "load_rows", (json_int_t)r->load_rows);
}

static void ryw_before(struct lab *lab, const void *c)
{
	(void)c;
	lab_phase(lab,
	          "read-your-writes: INSERT on the primary, SELECT at once on the replica (async: local)");
}

static void ryw_after(struct lab *lab, const void *c, const void *result)
{
	const struct consistency_config *cfg = c;
	const struct consistency_result *r = result;
	term_table_header(&lab->term, 2, RW_COLS, NRW_COLS);
	rw_row(lab, "light load (this client only)", &r->ryw[0]);
	char name[64];
	snprintf(name, sizeof(name), "heavy load (%d writers)", cfg->writers);
	rw_row(lab, name, &r->ryw[1]);
	lab_phase_metrics(lab, "read_your_writes",
	                  json_pack("{s:o,s:o}", "light", rw_json(&r->ryw[0]), "heavy", rw_json(&r->ryw[1])));
}

static void fixes_before(struct lab *lab, const void *c)
{
	(void)c;
	lab_phase(lab, "the fixes, under the heavy load");
}

static void fixes_after(struct lab *lab, const void *c, const void *result)
{
	(void)c;
	const struct consistency_result *r = result;
	json_t *m = json_object();
	term_table_header(&lab->term, 2, RW_COLS, NRW_COLS);
	for (int f = 0; f < CONS_FIXES_N; f++) {
		rw_row(lab, cons_fix_name((enum cons_fix)f), &r->fixes[f]);
		json_object_set_new(m, cons_fix_id((enum cons_fix)f), rw_json(&r->fixes[f]));
	}
	term_printf(&lab->term, "  write+read p50: sticky %s · LSN wait %s · remote_apply %s\n",
	            TERM_US(hist_percentile(&r->fixes[0].pair_us, 50)),
	            TERM_US(hist_percentile(&r->fixes[1].pair_us, 50)),
	            TERM_US(hist_percentile(&r->fixes[2].pair_us, 50)));
	lab_phase_metrics(lab, "fixes", m);
}

static void knob_before(struct lab *lab, const void *c)
{
	(void)c;
	lab_phase(lab, "the knob: synchronous_commit level by level, under the heavy load");
}

static void knob_after(struct lab *lab, const void *c, const void *result)
{
	(void)c;
	const struct consistency_result *r = result;
	json_t *m = json_object();
	term_table_header(&lab->term, 2, RW_COLS, NRW_COLS);
	for (int l = 0; l < CONS_LEVELS; l++) {
		rw_row(lab, cons_level_name((enum cons_level)l), &r->knob[l]);
		json_object_set_new(m, cons_level_name((enum cons_level)l), rw_json(&r->knob[l]));
	}
	lab_phase_metrics(lab, "knob", m);
}

static void wait_before(struct lab *lab, const void *c)
{
	const struct consistency_config *cfg = c;
	lab_phase(lab, "Redis: SET on the primary, GET on its replica, without and with WAIT 1 %d",
	          cfg->wait_timeout_ms);
}

static void wait_after(struct lab *lab, const void *c, const void *result)
{
	(void)c;
	const struct consistency_result *r = result;
	for (int i = 0; i < 2; i++)
		term_printf(&lab->term, "  %-13s %4d/%d stale   write+read p50 %s\n",
		            i ? "with WAIT" : "without WAIT", r->redis[i].stale, r->redis[i].pairs,
		            TERM_US(hist_percentile(&r->redis[i].pair_us, 50)));
	lab_phase_metrics(lab, "redis_wait",
	                  json_pack("{s:i,s:i,s:i,s:i,s:i}", "pairs", r->redis[0].pairs, "stale_without_wait",
	                            r->redis[0].stale, "stale_with_wait", r->redis[1].stale, "wait_short",
	                            r->redis[1].wait_short, "pairs_with_wait", r->redis[1].pairs));
}

static void cut_before(struct lab *lab, const void *c)
{
	(void)c;
	lab_phase(lab, "Redis: the replica cut off (through the proxy), WAIT 1 after each write");
}

static void cut_after(struct lab *lab, const void *c, const void *result)
{
	const struct consistency_config *cfg = c;
	const struct cons_cut *k = &((const struct consistency_result *)result)->cut;
	const struct term *t = &lab->term;
	term_printf(t,
	            "  connected: WAIT -> %d · cut: %s%d/%d WAITs returned 0%s after %s each, %d/%d reads "
	            "stale\n",
	            k->wait_before, term_red(t), k->wait_zero, k->writes, term_reset(t),
	            TERM_US(hist_percentile(&k->wait_us, 50)), k->stale, k->writes);
	term_printf(t,
	            "  healed: WAIT -> %d. A client told 0: the write is on the primary only; retry, alert, "
	            "or treat it as unsafe (%d ms bought no durability)\n",
	            k->wait_after_heal, cfg->wait_timeout_ms);
	lab_phase_metrics(lab, "redis_cut",
	                  json_pack("{s:i,s:i,s:i,s:i,s:i}", "wait_before", k->wait_before, "writes",
	                            k->writes, "wait_zero", k->wait_zero, "stale", k->stale,
	                            "wait_after_heal", k->wait_after_heal));
}

static void quorum_before(struct lab *lab, const void *c)
{
	(void)c;
	lab_phase(lab,
	          "quorums on N=3 redis-servers (a client-side model of Dynamo/Cassandra, not Cassandra)");
}

static void quorum_after(struct lab *lab, const void *c, const void *result)
{
	(void)c;
	const struct consistency_result *r = result;
	json_t *m = json_array();
	for (int i = 0; i < CONS_QUORUMS; i++) {
		const struct cons_quorum *q = &r->quorum[i];
		term_printf(&lab->term, "  W=%d R=%d  R+W%sN  %4d/%d reads missed the latest write\n", q->w,
		            q->r, q->r + q->w > 3 ? "> " : "<=", q->stale, q->pairs);
		json_array_append_new(m, json_pack("{s:i,s:i,s:i,s:i}", "w", q->w, "r", q->r, "pairs",
		                                   q->pairs, "stale", q->stale));
	}
	lab_phase_metrics(lab, "quorum", json_pack("{s:o}", "rows", m));
}

/* stale reads as a share of the pairs, one decimal; null when the row did not run */
static json_t *stale_pct(int stale, int pairs)
{
	return pairs > 0 ? json_real(round(1000.0 * stale / pairs) / 10.0) : json_null();
}

/*
 * The key chart: the share of reads that missed the write just made, per way of reading, weakest
 * first in each store. The claim at a glance: the eventual ones (async, on, Redis alone, R+W<=N)
 * have bars, the strong ones (remote_apply, the LSN wait, WAIT, R+W>N) none. Shares, since the
 * rows ran different numbers of pairs.
 */
static json_t *stale_chart(const struct consistency_result *r)
{
	const struct cons_rw *k = r->knob;
	json_t *values = json_pack("[o,o,o,o,o,o,o,o]", stale_pct(k[CONS_LOCAL].stale, k[CONS_LOCAL].pairs),
	                           stale_pct(k[CONS_ON].stale, k[CONS_ON].pairs),
	                           stale_pct(k[CONS_REMOTE_APPLY].stale, k[CONS_REMOTE_APPLY].pairs),
	                           stale_pct(r->fixes[CONS_LSN_WAIT].stale, r->fixes[CONS_LSN_WAIT].pairs),
	                           stale_pct(r->redis[0].stale, r->redis[0].pairs),
	                           stale_pct(r->redis[1].stale, r->redis[1].pairs),
	                           stale_pct(r->quorum[0].stale, r->quorum[0].pairs),
	                           stale_pct(r->quorum[2].stale, r->quorum[2].pairs));
	return json_pack("{s:s,s:s,s:[s,s,s,s,s,s,s,s],s:[{s:s,s:o}],s:b}", "title",
	                 "reads that missed the write just made", "unit", "% stale", "labels",
	                 "PG async (local)", "PG on", "PG remote_apply", "PG LSN wait", "Redis replica",
	                 "Redis + WAIT 1", "quorum W=1 R=1", "quorum W=2 R=2", "series", "name",
	                 "stale reads, % of pairs", "values", values, "log", false);
}

static const struct lab_phase_tell TELLS[CONS_PHASES] = {
        [CONS_RYW] = {ryw_before, ryw_after},    [CONS_FIXES] = {fixes_before, fixes_after},
        [CONS_KNOB] = {knob_before, knob_after}, [CONS_WAIT] = {wait_before, wait_after},
        [CONS_CUT] = {cut_before, cut_after},    [CONS_QUORUM] = {quorum_before, quorum_after},
};

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "consistency", QUESTION, CONS_PHASES, argc, argv) < 0)
		return lab.exit_code;
	if (lab.opts.serve)
		return lab_fail(&lab, "--serve: this lab has no API to serve; run it without --serve");
	if (lab_probe(&lab, true, true) < 0)
		return lab.exit_code;
	struct consistency_config cfg;
	consistency_config_default(&cfg, lab.opts.quick);
	cfg.seed = lab.opts.seed;
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	lab_config_set(&lab, "pairs", json_integer(cfg.pairs));
	lab_config_set(&lab, "writers", json_integer(cfg.writers));
	lab_config_set(&lab, "quick", json_boolean(lab.opts.quick));
	lab_config_set(&lab, "seed", json_integer((json_int_t)cfg.seed));
	char pp[256], pr[256], rp[256], rr[256];
	pg_url_redact(cfg.primary_url, pp, sizeof(pp));
	pg_url_redact(cfg.replica_url, pr, sizeof(pr));
	redis_url_redact(cfg.redis_primary_url, rp, sizeof(rp));
	redis_url_redact(cfg.redis_replica_url, rr, sizeof(rr));
	lab_header(&lab, "primary %s → replica %s\nRedis %s → %s · %d pairs a row", pp, pr, rp, rr,
	           cfg.pairs);
	struct consistency_result *res = calloc(1, sizeof(*res));
	if (!res)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, CONS_PHASES, &cfg, res};
	cfg.hooks = lab_teller_hooks(&teller);
	char err[LAB_ERRLEN];
	if (consistency_run(&cfg, res, err, sizeof(err)) < 0) {
		free(res);
		return lab_fail(&lab, "%s", err);
	}
	struct lab_verdict verdict;
	consistency_judge(res, &verdict);
	lab_chart(&lab, stale_chart(res));
	free(res);
	return lab_finish(&lab, &verdict);
}
