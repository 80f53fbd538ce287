/*
 * lab-isolation — "What are ACID properties? Which databases don't fully guarantee them?"
 *
 * Hermitage's anomaly tests run by a step driver at the three levels and compared with the
 * published PostgreSQL column; write skew with doctors on call and three fixes; a transaction
 * killed half-way; synchronous_commit off vs on under kill -9 of a throwaway cluster.
 * Usage: lab-isolation [--quick] [--json] [--step] [--seed N]
 *
 * This file only tells: the experiment and every threshold are in isolation.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "isolation.h"
#include "lab.h"
#include "pg.h"

#define QUESTION "What are ACID properties? Which databases don't fully guarantee them?"
#define RES(r)   ((const struct isolation_result *)(r))

static void before_matrix(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab,
	          "Isolation: Hermitage's 10 anomaly tests x 3 levels, run step by step on 2-3 sessions");
}

static void after_matrix(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct isolation_result *r = RES(result);
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"test", 8, 'l'},
	                          {"anomaly", 25, 'l'},
	                          {"READ COMMITTED", 14, 'l'},
	                          {"REPEATABLE READ", 15, 'l'},
	                          {"SERIALIZABLE", 12, 'l'},
	                          {"Hermitage", 9, 'l'},
	                          {"agree", 5, 'l'}};
	term_table_header(t, 2, cols, 7);
	json_t *rows = json_array();
	for (int i = 0; i < ISO_TESTS; i++) {
		char cell[ISO_LEVELS][48], pub[32] = "", agree[32];
		bool all = true;
		json_t *levels = json_object();
		for (int l = 0; l < ISO_LEVELS; l++) {
			const struct iso_cell *c = &r->cells[i][l];
			bool an = c->outcome == ISO_ANOMALY, ok = iso_cell_agrees(c);
			all = all && ok;
			snprintf(cell[l], sizeof(cell[l]), "%s%s %s%s", ok ? "" : term_red(t), an ? "—" : "✓",
			         iso_outcome_name(c->outcome), ok ? "" : term_reset(t));
			size_t n = strlen(pub);
			snprintf(pub + n, sizeof(pub) - n, "%s%s", l ? " " : "",
			         iso_hermitage[i][l] ? "✓" : "—");
			json_object_set_new(levels, iso_level_names[l],
			                    json_pack("{s:s,s:b}", "outcome", iso_outcome_name(c->outcome),
			                              "published_prevented", iso_hermitage[i][l]));
		}
		snprintf(agree, sizeof(agree), "%s%s%s", all ? term_green(t) : term_red(t),
		         all ? "yes" : "NO", term_reset(t));
		const char *cells[] = {
		        iso_test_names[i], iso_test_titles[i], cell[0], cell[1], cell[2], pub, agree};
		term_table_row(t, 2, cols, 7, cells);
		json_array_append_new(rows, json_pack("{s:s,s:o,s:b}", "test", iso_test_names[i], "levels",
		                                      levels, "agrees", all));
	}
	term_printf(t, "  ✓ prevented (blocked: waited for a lock; 40001: rolled back; read ok: saw a serial "
	               "state), — anomaly observed\n");
	int tt, ll;
	if (iso_first_disagreement(r, &tt, &ll) >= 0) {
		char trace[4096];
		iso_trace_format(r, tt, ll, trace, sizeof(trace));
		term_printf(t, "%s", trace);
	}
	lab_phase_metrics(lab, "matrix", json_pack("{s:o}", "tests", rows));
}

static void before_ws(struct lab *lab, const void *cfgv)
{
	const struct isolation_config *cfg = cfgv;
	lab_phase(lab, "Write skew: %d pairs of doctors x %d shifts, both ask to go off call at once",
	          cfg->ws_pairs, cfg->ws_rounds);
}

static void after_ws(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct isolation_result *r = RES(result);
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"how", 46, 'l'},    {"off call", 8, 'r'}, {"declined", 8, 'r'},
	                          {"retries", 7, 'r'}, {"refused", 7, 'r'},  {"no doctor", 9, 'r'},
	                          {"tx/s", 7, 'r'}};
	term_table_header(t, 2, cols, 7);
	json_t *rows = json_array();
	for (int m = 0; m < r->nws; m++) {
		const struct iso_ws_row *w = &r->ws[m];
		char v[48];
		snprintf(v, sizeof(v), "%s%s%s", w->violated ? term_red(t) : term_green(t),
		         TERM_NUM(w->violated, 0), term_reset(t));
		double tps = w->elapsed_s > 0 ? (double)w->attempts / w->elapsed_s : 0;
		const char *cells[] = {w->what,
		                       TERM_NUM(w->off_call, 0),
		                       TERM_NUM(w->declined, 0),
		                       TERM_NUM(w->retries, 0),
		                       TERM_NUM(w->refused, 0),
		                       v,
		                       TERM_NUM(tps, 0)};
		term_table_row(t, 2, cols, 7, cells);
		json_array_append_new(
		        rows, json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:f}", "mode", w->what, "off_call",
		                        (json_int_t)w->off_call, "declined", (json_int_t)w->declined,
		                        "retries", (json_int_t)w->retries, "refused", (json_int_t)w->refused,
		                        "violated", (json_int_t)w->violated, "tx_per_s", tps));
	}
	term_printf(
	        t, "  no doctor = shifts left with nobody on call (each started with 2; the rule: keep 1)\n");
	lab_phase_metrics(lab, "write_skew", json_pack("{s:o}", "modes", rows));
}

static void before_atom(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "Atomicity: a transfer's backend terminated between its debit and its credit");
}

static void after_atom(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct isolation_result *r = RES(result);
	term_printf(&lab->term,
	            "  inside: debit done, %lld ledger row seen · pg_terminate_backend · the credit: %.60s\n"
	            "  after:  %lld ledger rows, account 1 balance %lld (was 100): nothing of it is left\n",
	            (long long)r->atom_seen_inside, r->atom_error, (long long)r->atom_rows_after,
	            (long long)r->atom_balance_after);
	lab_phase_metrics(lab, "atomicity",
	                  json_pack("{s:I,s:I,s:I}", "seen_inside", (json_int_t)r->atom_seen_inside,
	                            "rows_after", (json_int_t)r->atom_rows_after, "balance_after",
	                            (json_int_t)r->atom_balance_after));
}

static void before_dur(struct lab *lab, const void *cfgv)
{
	const struct isolation_config *cfg = cfgv;
	lab_phase(lab,
	          "Durability: %d + %d clients (sync commit off + on) insert; kill -9 of the cluster after "
	          "%d ms",
	          cfg->dur_clients, cfg->dur_clients, cfg->dur_load_ms);
}

static void after_dur(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct isolation_result *r = RES(result);
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"clients' sessions", 24, 'l'},
	                          {"acknowledged", 12, 'r'},
	                          {"after restart", 13, 'r'},
	                          {"lost", 6, 'r'},
	                          {"in flight, kept", 15, 'r'}};
	term_table_header(t, 2, cols, 5);
	json_t *rows = json_array();
	for (int m = 0; m < r->ndur; m++) {
		const struct iso_dur_row *d = &r->dur[m];
		char lost[48];
		snprintf(lost, sizeof(lost), "%s%s%s", d->lost ? term_red(t) : term_green(t),
		         TERM_NUM(d->lost, 0), term_reset(t));
		const char *cells[] = {d->what, TERM_NUM(d->acked, 0), TERM_NUM(d->present, 0), lost,
		                       TERM_NUM(d->extra, 0)};
		term_table_row(t, 2, cols, 5, cells);
		json_array_append_new(rows,
		                      json_pack("{s:s,s:I,s:I,s:I,s:I}", "mode", d->what, "acked",
		                                (json_int_t)d->acked, "present", (json_int_t)d->present,
		                                "lost", (json_int_t)d->lost, "extra", (json_int_t)d->extra));
	}
	if (r->ndur == ISO_DUR_MODES && r->dur[0].lost == 0)
		term_printf(
		        t,
		        "  off lost nothing this time: the WAL writer had flushed before the kill landed\n");
	if (r->ndur == ISO_DUR_MODES)
		term_printf(t,
		            "  SIGKILL to its %d processes at once (postmaster, backends, WAL writer) after "
		            "%s of "
		            "load, then a restart\n",
		            r->dur[0].killed, TERM_US(r->dur[0].load_s * 1e6));
	term_printf(t, "  a process kill keeps the OS page cache: an OS crash or power cut is where fsync "
	               "matters\n");
	lab_phase_metrics(lab, "durability", json_pack("{s:o}", "modes", rows));
}

/*
 * The key chart: anomalies observed per isolation level, of Hermitage's 10 tests, beside the
 * published PostgreSQL column as a line. The claim at a glance: the bars meet the line (5, 2, 0),
 * and only SERIALIZABLE has none (write skew is the one REPEATABLE READ lets through).
 */
static json_t *levels_chart(const struct isolation_result *r)
{
	json_t *labels = json_array(), *seen = json_array(), *published = json_array();
	for (int l = 0; l < ISO_LEVELS; l++) {
		int n = 0, p = 0;
		for (int t = 0; t < ISO_TESTS; t++) {
			n += r->cells[t][l].outcome == ISO_ANOMALY;
			p += !iso_hermitage[t][l];
		}
		json_array_append_new(labels, json_string(iso_level_names[l]));
		json_array_append_new(seen, json_integer(n));
		json_array_append_new(published, json_integer(p));
	}
	return json_pack("{s:s,s:s,s:o,s:[{s:s,s:o},{s:s,s:o,s:b}],s:b}", "title",
	                 "anomalies each level let through, of Hermitage's 10 tests", "unit", "anomalies",
	                 "labels", labels, "series", "name", "observed", "values", seen, "name",
	                 "Hermitage (published)", "values", published, "line", true, "log", false);
}

static const struct lab_phase_tell TELLS[ISOLATION_PHASES] = {
        {before_matrix, after_matrix},
        {before_ws, after_ws},
        {before_atom, after_atom},
        {before_dur, after_dur},
};

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "isolation", QUESTION, ISOLATION_PHASES, argc, argv) < 0)
		return lab.exit_code;
	if (lab_probe(&lab, true, false) < 0)
		return lab.exit_code;
	struct isolation_config cfg;
	isolation_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	char url[256];
	pg_url_redact(cfg.pg_url, url, sizeof(url));
	lab_config_set(&lab, "block_ms", json_integer(cfg.block_ms));
	lab_config_set(&lab, "ws_rounds", json_integer(cfg.ws_rounds));
	lab_header(&lab, "PostgreSQL %s · schema lab_isolation · a throwaway cluster for phase 4", url);
	struct isolation_result *result = calloc(1, sizeof(*result));
	if (!result)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, ISOLATION_PHASES, &cfg, result};
	cfg.hooks = lab_teller_hooks(&teller);
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	char err[LAB_ERRLEN];
	int ret;
	if (isolation_run(&cfg, result, err, sizeof(err)) < 0) {
		ret = lab_run_failed(&lab, result->lost_pg ? "PostgreSQL" : NULL, err);
	} else {
		struct lab_verdict verdict;
		isolation_judge(result, &verdict);
		lab_chart(&lab, levels_chart(result));
		ret = lab_finish(&lab, &verdict);
	}
	free(result);
	return ret;
}
