/*
 * test_indexing.c — lab-indexing's claims, measured against the real PostgreSQL.
 * needs: postgres
 *
 * One indexing_run with a small config (30,000 rows), whose judge must say "demonstrated", and the
 * facts behind that verdict, each read from the server: plan node types and the index each plan
 * read (EXPLAIN's JSON), pages read (its buffers), WAL bytes (EXPLAIN's WAL and the insert LSN),
 * sizes (pg_relation_size, pg_indexes_size) and index use (pg_stat_user_indexes.idx_scan). Pages,
 * WAL and plans are asserted, never a time: the times are compared only by the judge, with each
 * other within one run. Then the binary as a user runs it: Ctrl-C, --serve.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"

#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "indexing.h"
#include "pg.h"

struct run_fixture {
	struct indexing_config cfg;
	struct indexing_result *result;
	struct lab_verdict verdict;
	struct lab_answers answers; /* what each phase's --predict question measured */
};

static int run_setup(void **state)
{
	static struct run_fixture rf;
	char err[512], url[256];
	indexing_config_default(&rf.cfg, true);
	/* ~370 pages: a Seq Scan still reads a hundred times what a B-tree lookup does */
	rf.cfg.rows = 30000;
	rf.cfg.write_rows = 5000;
	double sweep[] = {0.001, 0.01, 0.1, 0.3};
	memcpy(rf.cfg.sweep, sweep, sizeof(sweep));
	rf.cfg.nsweep = 4;
	rf.result = calloc(1, sizeof(*rf.result));
	rf.cfg.hooks = lab_answers_hooks(&rf.answers, &rf.cfg, rf.result);
	if (!rf.result || indexing_run(&rf.cfg, rf.result, err, sizeof(err)) < 0) {
		pg_url_redact(rf.cfg.pg_url, url, sizeof(url));
		fprintf(stderr, "test_indexing: indexing_run against %s: %s\n", url, err);
		free(rf.result);
		return -1;
	}
	indexing_judge(rf.result, &rf.verdict);
	*state = &rf;
	return 0;
}

static int run_teardown(void **state)
{
	struct run_fixture *rf = *state;
	free(rf->result);
	return 0;
}

static void assert_node(const struct indexing_plan *p, const char *node)
{
	if (strcmp(p->node, node) != 0)
		fail_msg("expected %s, the plan was %s (index \"%s\", %lld buffers)", node, p->node, p->index,
		         (long long)p->buffers);
}

static void test_run_demonstrates_the_claim(void **state)
{
	const struct run_fixture *rf = *state;
	print_message("verdict: %s\n", rf->verdict.evidence);
	assert_true(rf->verdict.demonstrated);
	assert_int_equal(rf->result->rows, rf->cfg.rows);
	/* the run dropped its schema */
	lab_assert_nothing_left(INDEXING_SCHEMA, NULL);
}

/* --predict's answers are the run's own counts, and the reasoned numbers score */
static void test_every_phase_asks_and_the_answers_are_the_counts(void **state)
{
	const struct run_fixture *rf = *state;
	const struct indexing_result *r = rf->result;
	lab_assert_every_phase_asks(&rf->answers, INDEXING_PHASES);
	/* root, leaf (an inner page at most more), heap page: 3 or 4 */
	double point = lab_answer(&rf->answers, "reads");
	assert_true(point == (double)r->reads.point[IX_BTREE].buffers);
	assert_true(point >= 3 && point <= 4);
	assert_true(lab_answer(&rf->answers, "writes") == 1);      /* 1.5x to 10x the WAL a row */
	assert_true(lab_answer(&rf->answers, "small_table") == 2); /* nothing saved at 2% */
	/* a heap page a row: the rows matched, within the question's 15% */
	const struct indexing_sweep_point *hi = &r->sweep.p[r->sweep.n - 1];
	double pages = lab_answer(&rf->answers, "selectivity");
	assert_true(pages == (double)hi->plan[IX_FORCE_INDEX].buffers);
	if (fabs(pages - (double)hi->rows) > 0.15 * pages)
		fail_msg("the Index Scan touched %.0f pages for %lld rows: not a page a row", pages,
		         (long long)hi->rows);
	assert_true(lab_answer(&rf->answers, "follow_ups") == 2); /* b = ? alone */
}

static void test_reads_index_cuts_pages_covering_skips_the_heap(void **state)
{
	const struct run_fixture *rf = *state;
	const struct indexing_reads *r = &rf->result->reads;
	print_message("point: %lld / %lld / %lld pages; range: %lld / %lld / %lld; ratio %.0f\n",
	              (long long)r->point[0].buffers, (long long)r->point[1].buffers,
	              (long long)r->point[2].buffers, (long long)r->range[0].buffers,
	              (long long)r->range[1].buffers, (long long)r->range[2].buffers,
	              indexing_point_buffer_ratio(rf->result));
	assert_node(&r->point[IX_NO_INDEX], "Seq Scan");
	assert_node(&r->point[IX_BTREE], "Index Scan");
	assert_string_equal(r->point[IX_BTREE].index, "orders_code_idx");
	assert_node(&r->point[IX_COVERING], "Index Only Scan");
	assert_node(&r->range[IX_NO_INDEX], "Seq Scan");
	assert_true(indexing_plan_uses_index(&r->range[IX_BTREE]));
	assert_node(&r->range[IX_COVERING], "Index Only Scan");
	/* a Seq Scan reads every page of the table; a B-tree lookup its height and one heap page */
	assert_int_equal(r->point[IX_NO_INDEX].buffers, r->table_pages);
	assert_int_equal(r->range[IX_NO_INDEX].buffers, r->table_pages);
	assert_true(r->point[IX_BTREE].buffers >= 2 && r->point[IX_BTREE].buffers <= 4);
	assert_true(r->point[IX_COVERING].buffers <= r->point[IX_BTREE].buffers);
	/* the VACUUM after the seed set every page all-visible: no heap page for the index-only scan */
	assert_int_equal(r->all_visible_pages, r->table_pages);
	assert_int_equal(r->point[IX_COVERING].heap_fetches, 0);
	assert_int_equal(r->range[IX_COVERING].heap_fetches, 0);
	assert_true(r->range[IX_COVERING].buffers < r->range[IX_BTREE].buffers);
	/* the range: the scattered codes cost the plain index a heap page a row, about */
	assert_int_equal(r->range[IX_BTREE].scan_rows, rf->cfg.range_rows);
	assert_int_equal(r->range[IX_COVERING].scan_rows, rf->cfg.range_rows);
	/* INCLUDE (amount) rides in the leaf tuples: no larger, here, than the key's own padding */
	assert_true(r->btree_bytes > 0 && r->covering_bytes >= r->btree_bytes);
}

static void test_writes_each_index_adds_wal_and_space(void **state)
{
	const struct run_fixture *rf = *state;
	const struct indexing_write *w = rf->result->writes;
	for (int s = 0; s < INDEXING_WRITE_SETS; s++) {
		print_message("%d indexes: %.0f B WAL a row (LSN %lld B in all), %.0f rows/s, table %lld B, "
		              "indexes "
		              "%lld B\n",
		              w[s].indexes, indexing_wal_per_row(&w[s]), (long long)w[s].lsn_bytes,
		              indexing_rows_per_s(&w[s]), (long long)w[s].table_bytes,
		              (long long)w[s].index_bytes);
		assert_int_equal(w[s].indexes, indexing_write_sets[s]);
		assert_int_equal(w[s].rows, rf->cfg.write_rows);
		/* the cluster's WAL holds this statement's, and whatever the neighbours wrote */
		assert_true(w[s].lsn_bytes >= w[s].wal_bytes);
		assert_int_equal(w[s].table_bytes, w[0].table_bytes);
		assert_true(w[s].index_bytes > 0);
		if (s > 0) {
			assert_true(w[s].wal_bytes > w[s - 1].wal_bytes);
			assert_true(w[s].index_bytes > w[s - 1].index_bytes);
		}
	}
}

static void test_small_table_index_saves_a_few_pages_none_for_2_percent(void **state)
{
	const struct run_fixture *rf = *state;
	const struct indexing_small *s = &rf->result->small;
	const struct indexing_plan *p = s->share.plan;
	print_message("%lld pages; 2%%: seq %lld, index %lld, bitmap %lld pages; planner %s\n",
	              (long long)s->pages, (long long)p[IX_FORCE_SEQ].buffers,
	              (long long)p[IX_FORCE_INDEX].buffers, (long long)p[IX_FORCE_BITMAP].buffers,
	              p[IX_PLANNER].node);
	assert_int_equal(s->rows, rf->cfg.small_rows);
	assert_int_equal(s->point.rows, 1);
	assert_int_equal(s->share.rows, rf->cfg.small_rows / 50);
	assert_node(&s->point.no_index, "Seq Scan");
	assert_node(&s->share.no_index, "Seq Scan");
	/* each setting forced the plan it names */
	const struct indexing_small_query *qs[] = {&s->point, &s->share};
	for (int i = 0; i < 2; i++) {
		assert_node(&qs[i]->plan[IX_FORCE_SEQ], "Seq Scan");
		assert_node(&qs[i]->plan[IX_FORCE_INDEX], "Index Scan");
		assert_node(&qs[i]->plan[IX_FORCE_BITMAP], "Bitmap Heap Scan");
		assert_int_equal(qs[i]->plan[IX_FORCE_SEQ].buffers, s->pages);
	}
	/* the point lookup: the index does save pages, but fewer than the table has */
	assert_true(s->point.plan[IX_PLANNER].buffers < s->pages);
	/* 2% of the rows lie on every page: the index reads them all, and its own pages too */
	assert_true(p[IX_FORCE_SEQ].buffers <= p[IX_FORCE_INDEX].buffers);
	assert_true(p[IX_FORCE_SEQ].buffers <= p[IX_FORCE_BITMAP].buffers);
}

static void test_selectivity_planner_drops_the_index_scan_where_it_loses(void **state)
{
	const struct run_fixture *rf = *state;
	const struct indexing_sweep *sw = &rf->result->sweep;
	assert_int_equal(sw->n, rf->cfg.nsweep);
	for (int i = 0; i < sw->n; i++) {
		const struct indexing_plan *p = sw->p[i].plan;
		print_message("%5.1f%%: %6lld rows, planner %s; pages seq %lld, index %lld, bitmap %lld\n",
		              sw->p[i].fraction * 100, (long long)sw->p[i].rows, p[IX_PLANNER].node,
		              (long long)p[IX_FORCE_SEQ].buffers, (long long)p[IX_FORCE_INDEX].buffers,
		              (long long)p[IX_FORCE_BITMAP].buffers);
		assert_node(&p[IX_FORCE_SEQ], "Seq Scan");
		assert_node(&p[IX_FORCE_INDEX], "Index Scan");
		assert_node(&p[IX_FORCE_BITMAP], "Bitmap Heap Scan");
		assert_int_equal(p[IX_FORCE_SEQ].buffers, sw->table_pages);
		/* every plan found the same rows */
		assert_int_equal(p[IX_FORCE_INDEX].scan_rows, sw->p[i].rows);
		assert_int_equal(p[IX_FORCE_SEQ].scan_rows, sw->p[i].rows);
		if (i > 0) {
			assert_true(sw->p[i].rows > sw->p[i - 1].rows);
			assert_true(p[IX_FORCE_INDEX].buffers > sw->p[i - 1].plan[IX_FORCE_INDEX].buffers);
		}
	}
	const struct indexing_plan *lo = sw->p[0].plan, *hi = sw->p[sw->n - 1].plan;
	/* 0.1%: a few dozen pages through the index; 30%: a heap page a row, more than the table */
	assert_true(indexing_plan_uses_index(&lo[IX_PLANNER]));
	assert_true(lo[IX_FORCE_INDEX].buffers < sw->table_pages);
	assert_true(strcmp(hi[IX_PLANNER].node, "Index Scan") != 0);
	assert_true(hi[IX_FORCE_INDEX].buffers > sw->table_pages);
}

static void test_followups_plans_and_the_unused_index(void **state)
{
	const struct run_fixture *rf = *state;
	const struct indexing_followups *fu = &rf->result->followups;
	for (int f = 0; f < IX_FOLLOWUPS; f++)
		print_message("%-40s %-16s %-24s %lld pages\n", indexing_followup_query(f), fu->q[f].node,
		              fu->q[f].index, (long long)fu->q[f].buffers);
	assert_true(indexing_plan_uses_index(&fu->q[IX_FU_AB]));
	assert_string_equal(fu->q[IX_FU_AB].index, "orders_a_b_idx");
	assert_string_equal(fu->q[IX_FU_A].index, "orders_a_b_idx");
	/* b = ? cannot descend (a, b): a scan of the table, or of every page of the index */
	const struct indexing_plan *b = &fu->q[IX_FU_B];
	assert_true(!strcmp(b->node, "Seq Scan") || b->buffers >= fu->ab_pages);
	assert_true(b->buffers > fu->q[IX_FU_A].buffers);
	assert_node(&fu->q[IX_FU_LOWER_PLAIN], "Seq Scan");
	assert_string_equal(fu->q[IX_FU_LOWER_EXPR].index, "orders_lower_email_idx");
	assert_int_equal(fu->q[IX_FU_LOWER_EXPR].scan_rows, 1);
	assert_string_equal(fu->q[IX_FU_PREFIX].index, "orders_email_idx");
	assert_node(&fu->q[IX_FU_SUFFIX], "Seq Scan");
	/* the rows each LIKE matched, counted here from the emails the seed wrote: 'User' || id || ... */
	int64_t prefix = 0, suffix = 0;
	for (int id = 1; id <= rf->cfg.rows; id++) {
		char email[32];
		int n = snprintf(email, sizeof(email), "%d", id);
		prefix += !strncmp(email, "4242", 4);
		suffix += n >= 4 && !strcmp(email + n - 4, "4242");
	}
	assert_int_equal(fu->q[IX_FU_PREFIX].scan_rows, prefix);
	assert_int_equal(fu->q[IX_FU_SUFFIX].scan_rows, suffix);
	assert_string_equal(fu->q[IX_FU_PARTIAL].index, "orders_pending_idx");
	assert_true(fu->partial_rows > 0 && fu->partial_rows < rf->cfg.rows / 20);
	assert_true(fu->partial_bytes > 0 && fu->partial_bytes < fu->full_bytes);
	/* pg_stat_user_indexes: the one index no query read, and the ones they did */
	assert_int_equal(fu->unused_count, 1);
	assert_true(fu->unused >= 0);
	assert_string_equal(fu->uses[fu->unused].name, INDEXING_UNUSED_INDEX);
	assert_int_equal(fu->uses[fu->unused].scans, 0);
	assert_true(fu->uses[fu->unused].bytes > 0);
	/* (a, b) was read by a = ? AND b = ?, by a = ?, and by b = ? when that read the whole index
	 * rather than the table: pg_stat_user_indexes counted each plan that read it, no more */
	int64_t ab_scans = -1;
	for (int i = 0; i < fu->nuses; i++)
		if (!strcmp(fu->uses[i].name, "orders_a_b_idx"))
			ab_scans = fu->uses[i].scans;
	assert_int_equal(ab_scans, 2 + !strcmp(b->index, "orders_a_b_idx"));
}

/* The judge on the run's numbers with one of them spoiled: not demonstrated, saying which first. */
static void judge_spoiled(const struct run_fixture *rf, void (*spoil)(struct indexing_result *),
                          const char *first)
{
	struct indexing_result *r = malloc(sizeof(*r));
	assert_non_null(r);
	memcpy(r, rf->result, sizeof(*r));
	spoil(r);
	struct lab_verdict v;
	indexing_judge(r, &v);
	free(r);
	if (v.demonstrated || strncmp(v.evidence, first, strlen(first)) != 0)
		fail_msg("expected \"%s...\", the judge said %s: %s", first, v.demonstrated ? "✔" : "✘",
		         v.evidence);
}

static void spoil_heap_fetches(struct indexing_result *r)
{
	r->reads.range[IX_COVERING].heap_fetches = 17;
}

static void spoil_wal(struct indexing_result *r)
{
	r->writes[3].wal_bytes = r->writes[2].wal_bytes;
}

static void spoil_planner(struct indexing_result *r)
{
	snprintf(r->sweep.p[0].plan[IX_PLANNER].node, INDEXING_NODE_LEN, "Seq Scan");
}

static void spoil_unused(struct indexing_result *r)
{
	r->followups.unused = -1;
	r->followups.unused_count = 0;
}

/* A judge that would pass on a comparison of one plan with itself measured nothing. */
static void spoil_forced(struct indexing_result *r)
{
	r->small.share.plan[IX_FORCE_INDEX] = r->small.share.plan[IX_FORCE_SEQ];
}

static void spoil_no_rows(struct indexing_result *r)
{
	r->followups.q[IX_FU_PREFIX].rows = 0;
}

static void test_judge_says_first_what_disagreed(void **state)
{
	const struct run_fixture *rf = *state;
	judge_spoiled(rf, spoil_heap_fetches, "the covering index gave Index Only Scan with 17 heap fetches");
	judge_spoiled(rf, spoil_wal, "with 6 indexes the insert wrote");
	judge_spoiled(rf, spoil_planner, "at 0.1% the planner chose Seq Scan");
	judge_spoiled(rf, spoil_unused, "pg_stat_user_indexes showed 0 unused indexes");
	judge_spoiled(rf, spoil_forced, "small table, 2%: the settings forcing Index Scan gave \"Seq Scan\"");
	judge_spoiled(rf, spoil_no_rows, "email LIKE 'User4242%' found no row");
}

/* ---- the binary, as a user runs it ---- */

static void test_ctrl_c_drops_the_schema_and_exits_130(void **state)
{
	(void)state;
	static char out[65536], err[8192];
	double stop_ms = 0;
	/* the seed of 100,000 rows and phase 1 come first: 20 s for that on a busy machine */
	int rc = lab_interrupt("indexing", "--quick", "[2/", SIGINT, 20000, &stop_ms, out, sizeof(out), err,
	                       sizeof(err));
	print_message("exit %d, %.0f ms after SIGINT; stderr: %s", rc, stop_ms, err);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	assert_non_null(strstr(out, "[1/5] Reads"));
	assert_non_null(strstr(out, "Index Only Scan"));
	/* the lab owns no Redis key: only its schema can be left */
	lab_assert_nothing_left(INDEXING_SCHEMA, NULL);
}

static void test_serve_is_refused_there_is_no_api(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	assert_int_equal(lab_run("indexing", NULL, "--serve", out, sizeof(out), err, sizeof(err)),
	                 LAB_EXIT_ENV);
	assert_non_null(strstr(err, "no API"));
	assert_string_equal(out, "");
}

int main(void)
{
	const struct CMUnitTest run[] = {
	        cmocka_unit_test(test_run_demonstrates_the_claim),
	        cmocka_unit_test(test_every_phase_asks_and_the_answers_are_the_counts),
	        cmocka_unit_test(test_reads_index_cuts_pages_covering_skips_the_heap),
	        cmocka_unit_test(test_writes_each_index_adds_wal_and_space),
	        cmocka_unit_test(test_small_table_index_saves_a_few_pages_none_for_2_percent),
	        cmocka_unit_test(test_selectivity_planner_drops_the_index_scan_where_it_loses),
	        cmocka_unit_test(test_followups_plans_and_the_unused_index),
	        cmocka_unit_test(test_judge_says_first_what_disagreed),
	};
	const struct CMUnitTest binary[] = {
	        cmocka_unit_test(test_ctrl_c_drops_the_schema_and_exits_130),
	        cmocka_unit_test(test_serve_is_refused_there_is_no_api),
	};
	int failed = cmocka_run_group_tests(run, run_setup, run_teardown);
	return failed + cmocka_run_group_tests(binary, NULL, NULL);
}
