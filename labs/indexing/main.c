/*
 * lab-indexing — "Explain database indexing. When would you not add an index?"
 *
 * What you will see: a lookup by code on an orders table with no index, a B-tree and a covering
 * B-tree, in pages read (EXPLAIN's buffers) and the server's time; the same rows inserted with 0,
 * 1, 3 and 6 secondary indexes, in WAL bytes a row, rows a second and bytes stored; a small
 * table where an index saves a few pages at most; a selectivity sweep from 0.1% to 30% with the planner's
 * choice beside each plan forced; and the follow-ups: composite column order, a function on the
 * column, LIKE prefix and suffix, a partial index, and the index nobody uses.
 *
 * This file only tells: the experiment and its verdict are indexing.c's (docs/architecture.md).
 * Run it: make lab-indexing (ARGS="--quick", "--json", "--step", "--seed 7").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "indexing.h"
#include "lab.h"
#include "pg.h"

#define QUESTION "Explain database indexing. When would you not add an index?"

/* "4.12 ms · 1,235": a plan's time and pages in one cell. */
static const char *fmt_cost(char *buf, const struct indexing_plan *p)
{
	char t[TERM_FMT_LEN], n[TERM_FMT_LEN];
	snprintf(buf, 48, "%s · %s", term_fmt_us(t, sizeof(t), p->exec_us),
	         term_fmt_num(n, sizeof(n), (double)p->buffers, 0));
	return buf;
}

/* "0.1%", "3%", "30%" */
static const char *fmt_share(char *buf, double fraction)
{
	snprintf(buf, TERM_FMT_LEN, fraction < 0.01 ? "%.1f%%" : "%.0f%%", fraction * 100);
	return buf;
}

#define COST(p)  fmt_cost((char[48]){0}, (p))
#define SHARE(f) fmt_share((char[TERM_FMT_LEN]){0}, (f))

static json_t *plan_json(const struct indexing_plan *p)
{
	return json_pack("{s:s,s:s,s:I,s:I,s:I,s:f}", "node", p->node, "index", p->index, "buffers",
	                 (json_int_t)p->buffers, "heap_fetches", (json_int_t)p->heap_fetches, "rows",
	                 (json_int_t)p->scan_rows, "exec_ms", p->exec_us / 1000.0);
}

static json_t *forced_json(const struct indexing_plan plan[IX_FORCES])
{
	return json_pack("{s:o,s:o,s:o,s:o}", "planner", plan_json(&plan[IX_PLANNER]), "seq_scan",
	                 plan_json(&plan[IX_FORCE_SEQ]), "index_scan", plan_json(&plan[IX_FORCE_INDEX]),
	                 "bitmap_scan", plan_json(&plan[IX_FORCE_BITMAP]));
}

static void note(const struct term *t, const char *text)
{
	term_printf(t, "  %s%s%s\n", term_dim(t), text, term_reset(t));
}

/* ---- phase 1: reads ---- */

static void before_reads(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "Reads: a lookup by code with no index, a B-tree, a covering B-tree (INCLUDE amount)");
}

static void after_reads(struct lab *lab, const void *cfg, const void *result)
{
	const struct indexing_config *c = cfg;
	const struct indexing_result *r = result;
	const struct indexing_reads *rd = &r->reads;
	const struct term *t = &lab->term;
	static const char *const kinds[IX_READ_KINDS] = {"none", "B-tree", "covering"};
	char range[48];
	snprintf(range, sizeof(range), "%d codes in a range", c->range_rows);
	struct term_col cols[] = {{"query", 20, 'l'},  {"index", 8, 'l'}, {"plan", 16, 'l'},
	                          {"buffers", 7, 'r'}, {"time", 8, 'r'},  {"heap fetches", 12, 'r'}};
	term_table_header(t, 2, cols, 6);
	for (int q = 0; q < 2; q++)
		for (int k = 0; k < IX_READ_KINDS; k++) {
			const struct indexing_plan *p = q == 0 ? &rd->point[k] : &rd->range[k];
			const char *row[] = {k        ? ""
			                     : q == 0 ? "code = ? (1 row)"
			                              : range,
			                     kinds[k],
			                     p->node,
			                     TERM_NUM(p->buffers, 0),
			                     TERM_US(p->exec_us),
			                     p->heap_fetches >= 0 ? TERM_NUM(p->heap_fetches, 0) : ""};
			term_table_row(t, 2, cols, 6, row);
		}
	char buf[256];
	snprintf(buf, sizeof(buf),
	         "buffers: shared hit + read; time: the server's, best of %d; %s of %s pages all-visible "
	         "after VACUUM",
	         c->repeats, TERM_NUM(rd->all_visible_pages, 0), TERM_NUM(rd->table_pages, 0));
	note(t, buf);
	lab_phase_metrics(
	        lab, "reads",
	        json_pack("{s:I,s:I,s:I,s:I,s:I,s:[o,o,o],s:[o,o,o]}", "table_rows", (json_int_t)r->rows,
	                  "table_pages", (json_int_t)rd->table_pages, "all_visible_pages",
	                  (json_int_t)rd->all_visible_pages, "btree_bytes", (json_int_t)rd->btree_bytes,
	                  "covering_bytes", (json_int_t)rd->covering_bytes, "point", plan_json(&rd->point[0]),
	                  plan_json(&rd->point[1]), plan_json(&rd->point[2]), "range",
	                  plan_json(&rd->range[0]), plan_json(&rd->range[1]), plan_json(&rd->range[2])));
}

/* ---- phase 2: writes ---- */

static void before_writes(struct lab *lab, const void *cfg)
{
	const struct indexing_config *c = cfg;
	lab_phase(lab, "Writes: the same %s rows inserted with 0, 1, 3 and 6 secondary indexes",
	          TERM_NUM(c->write_rows, 0));
}

static void after_writes(struct lab *lab, const void *cfg, const void *result)
{
	const struct indexing_config *c = cfg;
	const struct indexing_write *w = ((const struct indexing_result *)result)->writes;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"indexes", 7, 'r'}, {"rows/s", 9, 'r'}, {"WAL a row", 9, 'r'},
	                          {"", 30, 'l'},       {"table", 8, 'r'},  {"indexes", 8, 'r'}};
	term_table_header(t, 2, cols, 6);
	double max = indexing_wal_per_row(&w[INDEXING_WRITE_SETS - 1]);
	json_t *sets = json_array();
	int64_t lsn = 0, own = 0;
	for (int s = 0; s < INDEXING_WRITE_SETS; s++) {
		char bar[256];
		double wpr = indexing_wal_per_row(&w[s]);
		const char *row[] = {TERM_NUM(w[s].indexes, 0),
		                     TERM_NUM(indexing_rows_per_s(&w[s]), 0),
		                     TERM_BYTES(wpr),
		                     term_bar(bar, sizeof(bar), wpr, max, 30),
		                     TERM_BYTES(w[s].table_bytes),
		                     TERM_BYTES(w[s].index_bytes)};
		term_table_row(t, 2, cols, 6, row);
		lsn += w[s].lsn_bytes;
		own += w[s].wal_bytes;
		json_array_append_new(
		        sets,
		        json_pack("{s:i,s:I,s:I,s:I,s:f,s:f,s:I,s:I}", "indexes", w[s].indexes, "rows",
		                  (json_int_t)w[s].rows, "wal_bytes", (json_int_t)w[s].wal_bytes, "lsn_bytes",
		                  (json_int_t)w[s].lsn_bytes, "insert_ms", w[s].insert_us / 1000.0,
		                  "rows_per_s", indexing_rows_per_s(&w[s]), "table_bytes",
		                  (json_int_t)w[s].table_bytes, "index_bytes", (json_int_t)w[s].index_bytes));
	}
	char buf[256];
	snprintf(
	        buf, sizeof(buf),
	        "WAL: the INSERT's own, from EXPLAIN (%s in all; the cluster's insert LSN moved %s); rows/s: "
	        "best of %d; indexes: the primary key's too",
	        TERM_BYTES(own), TERM_BYTES(lsn), c->write_rounds);
	note(t, buf);
	lab_phase_metrics(lab, "writes", json_pack("{s:o}", "sets", sets));
}

/* ---- phase 3: the small table ---- */

static void before_small(struct lab *lab, const void *cfg)
{
	const struct indexing_config *c = cfg;
	lab_phase(lab, "A small table of %s rows: the planner's choice, and each plan forced (enable_*)",
	          TERM_NUM(c->small_rows, 0));
}

static void after_small(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct indexing_small *s = &((const struct indexing_result *)result)->small;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"query", 22, 'l'},    {"no index", 8, 'l'},    {"indexed", 16, 'l'},
	                          {"Seq Scan", 13, 'r'}, {"Index Scan", 13, 'r'}, {"Bitmap", 13, 'r'}};
	term_table_header(t, 2, cols, 6);
	const struct indexing_small_query *qs[] = {&s->point, &s->share};
	for (int i = 0; i < 2; i++) {
		char name[40];
		snprintf(name, sizeof(name), i == 0 ? "code = ? (%lld row)" : "category = ? (%lld rows)",
		         (long long)qs[i]->rows);
		const struct indexing_plan *p = qs[i]->plan;
		const char *row[] = {name,
		                     qs[i]->no_index.node,
		                     p[IX_PLANNER].node,
		                     COST(&p[IX_FORCE_SEQ]),
		                     COST(&p[IX_FORCE_INDEX]),
		                     COST(&p[IX_FORCE_BITMAP])};
		term_table_row(t, 2, cols, 6, row);
	}
	char buf[256];
	snprintf(buf, sizeof(buf),
	         "%s pages in all; forced plans: time · buffers; a round trip (SELECT 1) takes %s here",
	         TERM_NUM(s->pages, 0), TERM_US(s->round_trip_us));
	note(t, buf);
	lab_phase_metrics(lab, "small_table",
	                  json_pack("{s:I,s:I,s:f,s:{s:o,s:o},s:{s:o,s:o}}", "rows", (json_int_t)s->rows,
	                            "pages", (json_int_t)s->pages, "round_trip_ms", s->round_trip_us / 1000.0,
	                            "point", "no_index", plan_json(&s->point.no_index), "indexed",
	                            forced_json(s->point.plan), "share", "no_index",
	                            plan_json(&s->share.no_index), "indexed", forced_json(s->share.plan)));
}

/* ---- phase 4: selectivity ---- */

static void before_sweep(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab,
	          "Selectivity: sum(amount) WHERE bucket < k, the planner's choice and each plan forced");
}

static void after_sweep(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct indexing_sweep *sw = &((const struct indexing_result *)result)->sweep;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"rows", 7, 'l'},
	                          {"share", 5, 'r'},
	                          {"planner's choice", 16, 'l'},
	                          {"vs fastest", 10, 'r'},
	                          {"Seq Scan", 15, 'r'},
	                          {"Index Scan", 15, 'r'},
	                          {"Bitmap Heap Scan", 16, 'r'}};
	term_table_header(t, 2, cols, 7);
	json_t *points = json_array();
	for (int i = 0; i < sw->n; i++) {
		const struct indexing_sweep_point *p = &sw->p[i];
		enum indexing_force best = indexing_sweep_fastest(p);
		char cells[IX_FORCES][64];
		for (int f = IX_FORCE_SEQ; f < IX_FORCES; f++)
			snprintf(cells[f], sizeof(cells[f]), "%s%s%s", f == (int)best ? term_bold(t) : "",
			         COST(&p->plan[f]), f == (int)best ? term_reset(t) : "");
		char vs[TERM_FMT_LEN];
		snprintf(vs, sizeof(vs), "%.2fx", indexing_sweep_planner_vs_best(p));
		const char *row[] = {
		        TERM_NUM(p->rows, 0), SHARE(p->fraction),    p->plan[IX_PLANNER].node, vs,
		        cells[IX_FORCE_SEQ],  cells[IX_FORCE_INDEX], cells[IX_FORCE_BITMAP]};
		term_table_row(t, 2, cols, 7, row);
		json_t *pj = forced_json(p->plan);
		json_object_set_new(pj, "planner_vs_fastest", json_real(indexing_sweep_planner_vs_best(p)));
		json_object_set_new(pj, "fraction", json_real(p->fraction));
		json_object_set_new(pj, "rows", json_integer(p->rows));
		json_array_append_new(points, pj);
	}
	char buf[320], idx[64], bmp[64];
	snprintf(idx, sizeof(idx), sw->index_crossover >= 0 ? "from %s" : "nowhere here",
	         sw->index_crossover >= 0 ? SHARE(sw->p[sw->index_crossover].fraction) : "");
	snprintf(bmp, sizeof(bmp), sw->bitmap_crossover >= 0 ? "from %s" : "nowhere here",
	         sw->bitmap_crossover >= 0 ? SHARE(sw->p[sw->bitmap_crossover].fraction) : "");
	snprintf(buf, sizeof(buf),
	         "time · buffers (table: %s pages); vs fastest: the planner's plan ÷ the fastest; "
	         "the Seq Scan beats the Index Scan %s, the Bitmap Heap Scan %s",
	         TERM_NUM(sw->table_pages, 0), idx, bmp);
	note(t, buf);
	lab_phase_metrics(
	        lab, "selectivity",
	        json_pack("{s:I,s:o}", "table_pages", (json_int_t)sw->table_pages, "points", points));
}

/* ---- phase 5: follow-ups ---- */

static void before_followups(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab,
	          "Follow-ups: column order, a function on the column, LIKE, a partial index, an unused one");
}

static void after_followups(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct indexing_result *r = result;
	const struct indexing_followups *fu = &r->followups;
	const struct term *t = &lab->term;
	static const char *const topic[IX_FOLLOWUPS] = {"composite (a, b)",
	                                                "",
	                                                "",
	                                                "function, index on email",
	                                                "+ index on lower(email)",
	                                                "LIKE, text_pattern_ops",
	                                                "",
	                                                "partial WHERE pending"};
	struct term_col cols[] = {
	        {"index", 24, 'l'}, {"query", 38, 'l'}, {"plan", 16, 'l'}, {"buffers", 7, 'r'}};
	term_table_header(t, 2, cols, 4);
	json_t *qs = json_array(), *uses = json_array();
	for (int f = 0; f < IX_FOLLOWUPS; f++) {
		const struct indexing_plan *q = &fu->q[f];
		const char *row[] = {topic[f], indexing_followup_query(f), q->node, TERM_NUM(q->buffers, 0)};
		term_table_row(t, 2, cols, 4, row);
		json_t *qj = plan_json(q);
		json_object_set_new(qj, "query", json_string(indexing_followup_query(f)));
		json_array_append_new(qs, qj);
	}
	char buf[320];
	snprintf(buf, sizeof(buf),
	         "(a, b) has %s pages: b = ? reads them all; the partial index: %s pending rows in %s (every "
	         "row: %s)",
	         TERM_NUM(fu->ab_pages, 0), TERM_NUM(fu->partial_rows, 0), TERM_BYTES(fu->partial_bytes),
	         TERM_BYTES(fu->full_bytes));
	note(t, buf);
	for (int i = 0; i < fu->nuses; i++)
		json_array_append_new(uses,
		                      json_pack("{s:s,s:I,s:I,s:b}", "index", fu->uses[i].name, "idx_scan",
		                                (json_int_t)fu->uses[i].scans, "bytes",
		                                (json_int_t)fu->uses[i].bytes, "unique", fu->uses[i].unique));
	if (fu->unused >= 0) {
		const struct indexing_index_use *u = &fu->uses[fu->unused];
		term_printf(t,
		            "  %sunused%s: %s, idx_scan = %lld in pg_stat_user_indexes, %s, written on every "
		            "insert\n",
		            term_bold(t), term_reset(t), u->name, (long long)u->scans, TERM_BYTES(u->bytes));
	} else {
		term_printf(t, "  %d non-unique indexes with idx_scan = 0\n", fu->unused_count);
	}
	lab_phase_metrics(lab, "follow_ups",
	                  json_pack("{s:o,s:I,s:I,s:I,s:o}", "queries", qs, "partial_bytes",
	                            (json_int_t)fu->partial_bytes, "full_bytes", (json_int_t)fu->full_bytes,
	                            "partial_rows", (json_int_t)fu->partial_rows, "index_usage", uses));
}

static const struct lab_phase_tell TELLS[INDEXING_PHASES] = {
        {before_reads, after_reads}, {before_writes, after_writes},       {before_small, after_small},
        {before_sweep, after_sweep}, {before_followups, after_followups},
};

/*
 * The key chart: the pages each plan reads as the predicate matches more of the table (the
 * selectivity sweep, log scale): the Index Scan's climb, a page per row, past the Seq Scan's
 * flat table, and the Bitmap Heap Scan between them. Where to index, and where not, at a glance.
 */
static void chart(struct lab *lab, const struct indexing_result *r)
{
	static const enum indexing_force PLANS[] = {IX_FORCE_SEQ, IX_FORCE_INDEX, IX_FORCE_BITMAP};
	const struct indexing_sweep *sw = &r->sweep;
	json_t *labels = json_array(), *series = json_array();
	for (int i = 0; i < sw->n; i++) {
		char label[24];
		snprintf(label, sizeof(label), "%g%%", sw->p[i].fraction * 100);
		json_array_append_new(labels, json_string(label));
	}
	for (size_t k = 0; k < sizeof(PLANS) / sizeof(PLANS[0]); k++) {
		json_t *values = json_array();
		for (int i = 0; i < sw->n; i++)
			json_array_append_new(values, json_integer(sw->p[i].plan[PLANS[k]].buffers));
		json_array_append_new(series, json_pack("{s:s,s:o}", "name", indexing_force_node(PLANS[k]),
		                                        "values", values));
	}
	lab_chart(lab, json_pack("{s:s,s:s,s:o,s:o,s:b}", "title",
	                         "pages each plan reads, by the share of the rows matched", "unit",
	                         "pages (buffers)", "labels", labels, "series", series, "log", true));
}

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "indexing", QUESTION, INDEXING_PHASES, argc, argv) < 0)
		return lab.exit_code;
	if (lab.opts.serve)
		return lab_fail(&lab, "this lab has no API to serve: run it without --serve");
	if (lab_probe(&lab, true, false) < 0)
		return lab.exit_code;
	struct indexing_config cfg;
	indexing_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.seed = lab.opts.seed;
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	lab_config_set(&lab, "rows", json_integer(cfg.rows));
	lab_config_set(&lab, "write_rows", json_integer(cfg.write_rows));
	lab_config_set(&lab, "small_rows", json_integer(cfg.small_rows));
	lab_config_set(&lab, "repeats", json_integer(cfg.repeats));
	char url[256], err[LAB_ERRLEN];
	pg_url_redact(cfg.pg_url, url, sizeof(url));
	lab_header(&lab, "PostgreSQL %s · orders: %s rows (seed %llu) · no parallel workers, no JIT", url,
	           TERM_NUM(cfg.rows, 0), (unsigned long long)cfg.seed);

	struct indexing_result *result = calloc(1, sizeof(*result));
	if (!result)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, INDEXING_PHASES, &cfg, result};
	cfg.hooks = lab_teller_hooks(&teller);
	if (indexing_run(&cfg, result, err, sizeof(err)) < 0) {
		bool lost = result->server_lost;
		free(result);
		return lab_run_failed(&lab, lost ? "PostgreSQL" : NULL, err);
	}
	struct lab_verdict verdict;
	indexing_judge(result, &verdict);
	chart(&lab, result);
	free(result);
	return lab_finish(&lab, &verdict);
}
