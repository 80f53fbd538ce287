/*
 * test_sql_vs_nosql.c — lab-sql-vs-nosql's claims, measured against the real PostgreSQL and Redis.
 * needs: postgres redis
 *
 * One small run of the lab (sql_vs_nosql_run with 3,000 orders): the test asserts that
 * sql_vs_nosql_judge found the claim demonstrated, and the counts behind it, which hold at any
 * speed: the stores hold the same orders (checksums of patterns 1 and 2, revenue to the cent);
 * the servers' own accounting (pg_stat_statements, INFO commandstats) saw every lookup;
 * pattern 3 is one statement in SQL and a read of every order key in Redis; pattern 4 one row in
 * SQL and every copy rewritten in the documents; pattern 5's naive races oversold on both stores
 * and the guarded ones never did, stock never below zero, each item sold exactly once; the lines
 * of code the lab reports are the lines of patterns.c; every phase asks a --predict question
 * whose answer this run measured as those counts; and the judge refuses a run whose numbers
 * disagree. Nothing asserts a time.
 *
 * Then the binary: Ctrl-C mid-run leaves no schema and no keys.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h" /* SVN_COPY_BATCH: the orders a pipeline of the copy carries */
#include "sql_vs_nosql.h"

static struct sql_vs_nosql_result *result;
static struct sql_vs_nosql_config cfg;
static struct lab_answers answers;

/* The lab once, small: every test of the run reads the same result. */
static int run_once(void **state)
{
	(void)state;
	sql_vs_nosql_config_default(&cfg, true);
	cfg.orders = 3000;
	cfg.customers = 300;
	cfg.products = 200;
	cfg.clients = 3;
	cfg.ops = 100;
	cfg.repeats = 1;
	cfg.race_clients = 3;
	cfg.race_rounds = 10;
	cfg.sample_keys = 50;
	cfg.nsweep = 2;
	cfg.sweep[0] = 1, cfg.sweep[1] = 2;
	cfg.sweep_ms = 50;
	result = calloc(1, sizeof(*result));
	if (!result)
		return -1;
	cfg.hooks = lab_answers_hooks(&answers, &cfg, result);
	char err[LAB_ERRLEN] = "";
	if (sql_vs_nosql_run(&cfg, result, err, sizeof(err)) < 0) {
		print_error("sql_vs_nosql_run: %s (lost: %s)\n", err,
		            result->lost_server[0] ? result->lost_server : "none");
		return -1;
	}
	return 0;
}

static int run_free(void **state)
{
	(void)state;
	free(result);
	return 0;
}

static void test_the_judge_says_demonstrated(void **state)
{
	(void)state;
	struct lab_verdict v;
	sql_vs_nosql_judge(result, &v);
	print_message("%s\n  %s\n", v.claim, v.evidence);
	assert_true(v.demonstrated);
	struct svn_decision d[SVN_DECISIONS];
	sql_vs_nosql_decide(result, d);
	assert_string_equal(d[0].winner, "Redis");
	assert_string_equal(d[2].winner, "PostgreSQL");
	assert_string_equal(d[3].winner, "PostgreSQL");
}

/* What --predict asks before each phase: the answers a person is scored against, from this run. */
static void test_every_phase_asks_and_the_answers_are_the_counts(void **state)
{
	(void)state;
	const struct sql_vs_nosql_result *r = result;
	lab_assert_every_phase_asks(&answers, SVN_PHASES);
	for (int i = 0; i < answers.n; i++)
		print_message("%-10s %g\n", answers.a[i].phase, answers.a[i].measured);
	/* a pipeline per batch of orders, one for the catalogue */
	assert_true(lab_answer(&answers, "seed") == (cfg.orders + SVN_COPY_BATCH - 1) / SVN_COPY_BATCH + 1);
	assert_true(lab_answer(&answers, "reads") == 2);
	assert_true(lab_answer(&answers, "adhoc") == cfg.orders);
	assert_true(lab_answer(&answers, "rename") == 1); /* a copy per order, and the hash */
	assert_true(lab_answer(&answers, "race") == (double)r->p5[0][SVN_NAIVE].oversells);
	assert_true(lab_answer(&answers, "race") > 0);
	/* the reasoned (buyers - 1) x rounds scores within the question's own margin, as its why says */
	for (int i = 0; i < answers.n; i++)
		if (!strcmp(answers.a[i].phase, "race") &&
		    fabs((double)(cfg.race_clients - 1) * cfg.race_rounds - answers.a[i].measured) >
		            answers.a[i].q->within_pct / 100.0 * answers.a[i].measured)
			fail_msg("oversold %g: (%d - 1) x %d is not within %g%%", answers.a[i].measured,
			         cfg.race_clients, cfg.race_rounds, answers.a[i].q->within_pct);
	assert_true(lab_answer(&answers, "schema") >= cfg.products);
	assert_true(lab_answer(&answers, "storage") == 0); /* the rows take the least room */
	/* b: thousands of lookups a second, millions of orders a day (the band is three decades wide) */
	assert_true(lab_answer(&answers, "throughput") == 1);
}

/* The judge says no when the numbers do, and says first what disagreed. */
static void test_the_judge_refuses_a_run_that_did_not_show_it(void **state)
{
	(void)state;
	struct sql_vs_nosql_result *r = malloc(sizeof(*r));
	assert_non_null(r);
	struct lab_verdict v;
	memset(r, 0, sizeof(*r)); /* nothing measured */
	sql_vs_nosql_judge(r, &v);
	assert_false(v.demonstrated);
	memcpy(r, result, sizeof(*r)); /* Redis' lookup as costly as the join */
	r->p1[SVN_REDIS].server_us = r->p1[SVN_SQL].server_us;
	sql_vs_nosql_judge(r, &v);
	assert_false(v.demonstrated);
	assert_true(strncmp(v.evidence, "pattern 1", 9) == 0);
	memcpy(r, result, sizeof(*r)); /* a naive race that did not oversell */
	r->p5[1][SVN_NAIVE].oversells = 0;
	sql_vs_nosql_judge(r, &v);
	assert_false(v.demonstrated);
	assert_true(strncmp(v.evidence, "pattern 5 on Redis", 18) == 0);
	free(r);
}

static void test_the_three_stores_hold_the_same_orders(void **state)
{
	(void)state;
	const struct sql_vs_nosql_result *r = result;
	assert_int_equal(r->seed.orders, cfg.orders);
	assert_int_equal(r->seed.redis_orders, cfg.orders);
	for (int s = 0; s < SVN_STORES; s++) {
		/* every read found its order, and the same ones on every store */
		assert_int_equal(r->p1[s].ops, (uint64_t)cfg.clients * (uint64_t)cfg.ops);
		assert_int_equal(r->p1[s].orders_read, r->p1[s].ops);
		assert_int_equal(r->p1[s].checksum, r->p1[0].checksum);
		assert_int_equal(r->p2[s].orders_read, r->p2[0].orders_read);
		assert_int_equal(r->p2[s].checksum, r->p2[0].checksum);
		assert_memory_equal(r->p3[s].revenue, r->p3[0].revenue, sizeof(r->p3[0].revenue));
	}
	assert_true(r->p1[0].checksum > 0);
	assert_true(r->p3_orders_in_week > 0);
}

static void test_round_trips_are_one_per_lookup_and_two_for_redis_last_ten(void **state)
{
	(void)state;
	const struct sql_vs_nosql_result *r = result;
	for (int s = 0; s < SVN_STORES; s++)
		assert_int_equal(r->p1[s].round_trips, r->p1[s].ops);
	assert_int_equal(r->p2[SVN_SQL].round_trips, r->p2[SVN_SQL].ops);
	assert_int_equal(r->p2[SVN_JSONB].round_trips, r->p2[SVN_JSONB].ops);
	/* ZREVRANGE for the ids, then a pipeline of GETs: the secondary structure costs a trip */
	assert_int_equal(r->p2[SVN_REDIS].round_trips, 2 * r->p2[SVN_REDIS].ops);
}

/* The servers' own accounting saw this run's lookups: each prepared statement once per lookup. */
static void test_the_servers_counted_every_lookup(void **state)
{
	(void)state;
	const struct sql_vs_nosql_result *r = result;
	for (int s = 0; s < SVN_STORES; s++) {
		const struct svn_reads *p[] = {&r->p1[s], &r->p2[s]};
		for (int k = 0; k < 2; k++) {
			print_message(
			        "%s pattern %d: %lld server calls for %llu commands, %.1f µs an operation\n",
			        svn_store_name(s), k + 1, (long long)p[k]->server_calls,
			        (unsigned long long)p[k]->commands, p[k]->server_us);
			assert_true(p[k]->server_us > 0);
			if (s == SVN_REDIS) /* a shared Redis: other clients' GETs count too */
				assert_true(p[k]->server_calls >= (int64_t)p[k]->commands);
			else
				assert_int_equal(p[k]->server_calls, p[k]->ops);
		}
	}
	/* ZREVRANGE, then a GET per order */
	assert_int_equal(r->p2[SVN_REDIS].commands, r->p2[SVN_REDIS].ops + r->p2[SVN_REDIS].orders_read);
}

static void test_the_adhoc_question_is_one_statement_against_a_scan_of_every_order(void **state)
{
	(void)state;
	const struct svn_adhoc *a = result->p3;
	assert_int_equal(a[SVN_SQL].statements, 1);
	assert_int_equal(a[SVN_JSONB].statements, 1);
	assert_int_equal(a[SVN_SQL].keys_read, 0);
	/* SCAN may return a key twice; every order was read, once as far as the answer goes */
	assert_true(a[SVN_REDIS].keys_read >= cfg.orders);
	assert_int_equal(a[SVN_REDIS].orders_read, cfg.orders);
	assert_true(a[SVN_REDIS].bytes_moved > 100 * a[SVN_SQL].bytes_moved);
}

static void test_the_rename_is_one_row_against_every_copy(void **state)
{
	(void)state;
	const struct sql_vs_nosql_result *r = result;
	assert_true(r->p4_copies >= 2);
	assert_int_equal(r->p4[SVN_SQL].statements, 1);
	assert_int_equal(r->p4[SVN_SQL].writes, 1);
	assert_int_equal(r->p4[SVN_JSONB].statements, 1);
	assert_int_equal(r->p4[SVN_JSONB].writes, r->p4_copies);
	/* every copy, and the product's own hash */
	assert_int_equal(r->p4[SVN_REDIS].writes, r->p4_copies + 1);
	assert_true(r->p4[SVN_REDIS].keys_read >= cfg.orders);
}

static void test_naive_races_oversell_on_both_and_guarded_ones_never(void **state)
{
	(void)state;
	for (int s = 0; s < 2; s++) {
		const struct svn_race *n = &result->p5[s][SVN_NAIVE], *g = &result->p5[s][SVN_GUARDED];
		print_message("%s: naive %lld sales, %lld oversold in %d rounds, stock down to %lld; guarded "
		              "%lld sales, "
		              "%lld retries\n",
		              s ? "Redis" : "PostgreSQL", (long long)n->sales, (long long)n->oversells,
		              n->rounds_oversold, (long long)n->min_stock, (long long)g->sales,
		              (long long)g->conflicts);
		assert_true(n->oversells > 0);
		assert_int_equal(n->sales, n->rounds + n->oversells);
		assert_true(n->min_stock < 0);
		assert_int_equal(g->oversells, 0);
		assert_int_equal(g->rounds_oversold, 0);
		assert_int_equal(g->sales, g->rounds);
		assert_int_equal(g->min_stock, 0);
		assert_int_equal(g->attempts, (uint64_t)cfg.race_clients * (uint64_t)cfg.race_rounds);
	}
	/* the clients read the same stock inside the gap, so WATCH did abort transactions */
	assert_true(result->p5[1][SVN_GUARDED].conflicts > 0);
}

static void test_every_attribute_design_finds_the_same_products(void **state)
{
	(void)state;
	const struct svn_attr *a = result->attrs;
	assert_true(a[SVN_EAV].matches > 0);
	assert_int_equal(a[SVN_GIN].matches, a[SVN_EAV].matches);
	assert_int_equal(a[SVN_HASH].matches, a[SVN_EAV].matches);
	assert_true(a[SVN_HASH].touched >= cfg.products);
}

static void test_the_documents_take_more_room_than_the_rows(void **state)
{
	(void)state;
	const struct svn_storage *st = &result->storage;
	assert_true(st->sql_table_bytes > 0 && st->sql_index_bytes > 0);
	/* every document repeats its keys, its customer and its products' names */
	assert_true(st->jsonb_table_bytes > st->sql_table_bytes);
	/* a Redis key costs more than its JSON: the key, the object, the sorted set's entry */
	assert_true(st->redis_doc_bytes > 0 && st->redis_doc_bytes < st->redis_sampled_bytes);
}

/* Lines in patterns.c between "loc: name" and "loc end", blank lines and comments left out. */
static int count_region(const char *src, const char *name)
{
	char marker[64], line[512];
	snprintf(marker, sizeof(marker), "/* loc: %s */", name);
	FILE *f = fopen(src, "r");
	assert_non_null(f);
	int n = -1;
	bool in = false, comment = false;
	while (fgets(line, sizeof(line), f)) {
		char *s = line;
		while (*s == ' ' || *s == '\t')
			s++;
		s[strcspn(s, "\n")] = '\0';
		if (!in) {
			in = strcmp(s, marker) == 0;
			n = in ? 0 : n;
			continue;
		}
		if (strcmp(s, "/* loc end */") == 0)
			break;
		if (comment)
			comment = strstr(s, "*/") == NULL;
		else if (!strncmp(s, "/*", 2))
			comment = strstr(s, "*/") == NULL;
		else if (*s && strncmp(s, "//", 2) != 0)
			n++;
	}
	fclose(f);
	return n;
}

static void test_the_lines_reported_are_the_lines_of_patterns_c(void **state)
{
	(void)state;
	const char *src = LAB_SOURCE_DIR "/labs/sql-vs-nosql/patterns.c";
	int scan = count_region(src, "redis.scan");
	assert_true(scan > 0);
	for (int r = 0; r < SVN_LOC_REGIONS; r++) {
		int n = count_region(src, svn_loc_name((enum svn_loc)r));
		if (r == SVN_LOC_P3_REDIS || r == SVN_LOC_P4_REDIS)
			n += scan;
		print_message("%-18s %3d lines\n", svn_loc_name((enum svn_loc)r), n);
		assert_true(n > 0);
		assert_int_equal(svn_loc_lines((enum svn_loc)r), n);
	}
}

static void test_the_run_left_no_schema_and_no_keys(void **state)
{
	(void)state;
	lab_assert_nothing_left("lab_sql_vs_nosql", "lab:sql-vs-nosql:");
}

static void test_ctrl_c_mid_run_leaves_no_schema_and_no_keys(void **state)
{
	(void)state;
	static char out[65536], err[4096];
	double stop_ms = 0;
	int rc = lab_interrupt("sql-vs-nosql", "--quick", "[2/", SIGINT, 30000, &stop_ms, out, sizeof(out),
	                       err, sizeof(err));
	print_message("exit %d %.0f ms after Ctrl-C; stderr: %s", rc, stop_ms, err);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_sql_vs_nosql", "lab:sql-vs-nosql:");
}

int main(void)
{
	const struct CMUnitTest run[] = {
	        cmocka_unit_test(test_the_judge_says_demonstrated),
	        cmocka_unit_test(test_the_judge_refuses_a_run_that_did_not_show_it),
	        cmocka_unit_test(test_every_phase_asks_and_the_answers_are_the_counts),
	        cmocka_unit_test(test_the_three_stores_hold_the_same_orders),
	        cmocka_unit_test(test_round_trips_are_one_per_lookup_and_two_for_redis_last_ten),
	        cmocka_unit_test(test_the_servers_counted_every_lookup),
	        cmocka_unit_test(test_the_adhoc_question_is_one_statement_against_a_scan_of_every_order),
	        cmocka_unit_test(test_the_rename_is_one_row_against_every_copy),
	        cmocka_unit_test(test_naive_races_oversell_on_both_and_guarded_ones_never),
	        cmocka_unit_test(test_every_attribute_design_finds_the_same_products),
	        cmocka_unit_test(test_the_documents_take_more_room_than_the_rows),
	};
	const struct CMUnitTest alone[] = {
	        cmocka_unit_test(test_the_run_left_no_schema_and_no_keys),
	        cmocka_unit_test(test_the_lines_reported_are_the_lines_of_patterns_c),
	        cmocka_unit_test(test_ctrl_c_mid_run_leaves_no_schema_and_no_keys),
	};
	int failed = cmocka_run_group_tests_name("run", run, run_once, run_free);
	return failed + cmocka_run_group_tests_name("alone", alone, NULL, NULL);
}
