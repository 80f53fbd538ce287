/*
 * test_sql_injection.c — lab-sql-injection's claims, against the real PostgreSQL and the real API.
 * needs: postgres
 *
 * Three groups in one run of tests: the API's contract over a real HTTP client on a schema the
 * group sets up (a search returns the caller's notes only; every bad request is 400 and reaches
 * no statement on the server, counted from pg_stat_statements, and leaves the tables as they
 * were; the vulnerable route exists only when asked for); one sql_injection_run with the quick
 * config, whose judge must say "demonstrated", and the counts behind it (what each payload
 * leaked against the truth, the statements the server ran for each route); and the binary
 * interrupted by Ctrl-C, leaving nothing. The run test drops the group's schema: the API tests
 * come before it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "pg.h"
#include "sql_injection.h"

struct group {
	struct sqli_config cfg;
	struct sqli_api *api;
	int port;
	PGconn *lab;
	char body[64 * 1024];
};

static int group_setup(void **state)
{
	static struct group g;
	char err[512], url[256];
	sql_injection_config_default(&g.cfg, true);
	if (sql_injection_setup(&g.cfg, err, sizeof(err)) < 0 ||
	    !(g.api = sqli_api_start(&g.cfg, 0, true, err, sizeof(err))) ||
	    !(g.lab = pg_connect(g.cfg.pg_url, err, sizeof(err)))) {
		pg_url_redact(g.cfg.pg_url, url, sizeof(url));
		fprintf(stderr,
		        "test_sql_injection: cannot set up against %s: %s (start the servers: make up)\n",
		        url, err);
		return -1;
	}
	g.port = sqli_api_port(g.api);
	*state = &g;
	return 0;
}

static int group_teardown(void **state)
{
	char err[512];
	struct group *g = *state;
	sqli_api_stop(g->api);
	PQfinish(g->lab);
	return sql_injection_teardown(&g->cfg, err, sizeof(err)) < 0 ? -1 : 0;
}

static int get(struct group *g, const char *target)
{
	char err[256];
	int status = 0;
	if (http_get(g->port, target, 5000, &status, g->body, sizeof(g->body), err, sizeof(err)) < 0)
		fail_msg("GET %s: %s", target, err);
	return status;
}

/* Statements lab_api completed so far (pg_stat_statements). */
static int64_t api_calls(struct group *g)
{
	char err[256];
	const char *p[] = {g->cfg.api_user};
	int64_t calls = -1;
	if (pg_query_int64(
	            g->lab,
	            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE userid = (SELECT oid FROM"
	            " pg_roles WHERE rolname = $1)",
	            1, p, &calls, err, sizeof(err)) < 0)
		fail_msg("pg_stat_statements: %s", err);
	return calls;
}

static int64_t notes_and_tables(struct group *g)
{
	char err[256];
	int64_t n = -1;
	if (pg_query_int64(g->lab,
	                   "SELECT (SELECT count(*) FROM " SQLI_SCHEMA
	                   ".notes) * 100 + (SELECT count(*) FROM "
	                   "pg_tables WHERE schemaname = '" SQLI_SCHEMA "')",
	                   0, NULL, &n, err, sizeof(err)) < 0)
		fail_msg("count: %s", err);
	return n;
}

static void test_search_returns_only_the_callers_notes_and_escapes_like(void **state)
{
	struct group *g = *state;
	assert_int_equal(get(g, SQLI_ROUTE_SAFE "?user=1&q=plan&sort=title&dir=desc"), 200);
	json_t *doc = json_loads(g->body, 0, NULL);
	json_t *notes = json_object_get(doc, "notes");
	assert_true(json_is_array(notes));
	/* "travel plan", "plan for the launch", "zoo trip plan" */
	assert_int_equal(json_array_size(notes), 3);
	size_t i;
	json_t *n;
	json_array_foreach(notes, i, n) assert_int_equal(json_integer_value(json_object_get(n, "owner")), 1);
	json_decref(doc);
	/* '%' is a percent sign here, not "every row": one title holds one */
	assert_int_equal(get(g, SQLI_ROUTE_SAFE "?user=1&q=%25"), 200);
	doc = json_loads(g->body, 0, NULL);
	assert_int_equal(json_integer_value(json_object_get(doc, "count")), 1);
	json_decref(doc);
	/* the tautology is a search for a strange title, nothing more */
	assert_int_equal(get(g, SQLI_ROUTE_SAFE "?user=1&q=%27%20OR%20%271%27%3D%271%27%20--"), 200);
	doc = json_loads(g->body, 0, NULL);
	assert_int_equal(json_integer_value(json_object_get(doc, "count")), 0);
	json_decref(doc);
}

static void test_bad_input_gets_400_and_reaches_no_statement(void **state)
{
	struct group *g = *state;
	static const char *const BAD[] = {
	        SQLI_ROUTE_SAFE "?q=plan",
	        SQLI_ROUTE_SAFE "?user=abc",
	        SQLI_ROUTE_SAFE "?user=0",
	        SQLI_ROUTE_SAFE "?user=1&user=2",
	        SQLI_ROUTE_SAFE "?user=1&q=a&q=b",
	        SQLI_ROUTE_SAFE "?user=1&q=plan%00%27%3B%20DROP%20TABLE%20audit_log",
	        SQLI_ROUTE_SAFE "?user=1&sort=name",
	        SQLI_ROUTE_SAFE "?user=1&sort=title%3B%20DROP%20TABLE%20audit_log",
	        SQLI_ROUTE_SAFE
	        "?user=1&sort=(CASE%20WHEN%201%3D1%20THEN%20title%20ELSE%20id%3A%3Atext%20END)",
	        SQLI_ROUTE_SAFE "?user=1&dir=sideways",
	        SQLI_ROUTE_SAFE "?user=1&admin=1",
	        SQLI_ROUTE_NAIVE "?user=1%20OR%201%3D1",
	        SQLI_ROUTE_NAIVE "?q=plan",
	};
	char q[300];
	memset(q, 'a', sizeof(q) - 1);
	q[sizeof(q) - 1] = '\0';
	char longq[400];
	snprintf(longq, sizeof(longq), SQLI_ROUTE_SAFE "?user=1&q=%s", q);
	int64_t calls = api_calls(g), shape = notes_and_tables(g);
	for (size_t i = 0; i < sizeof(BAD) / sizeof(BAD[0]); i++) {
		int status = get(g, BAD[i]);
		if (status != 400)
			fail_msg("%s: %d, want 400 (%s)", BAD[i], status, g->body);
		json_t *doc = json_loads(g->body, 0, NULL);
		assert_non_null(json_string_value(json_object_get(doc, "error")));
		json_decref(doc);
	}
	assert_int_equal(get(g, longq), 400);
	/* nothing reached PostgreSQL, nothing changed */
	assert_int_equal(api_calls(g), calls);
	assert_int_equal(notes_and_tables(g), shape);
}

static void test_vulnerable_route_exists_only_when_asked_for(void **state)
{
	struct group *g = *state;
	char err[512];
	struct sqli_api *plain = sqli_api_start(&g->cfg, 0, false, err, sizeof(err));
	assert_non_null(plain);
	int status = 0;
	assert_int_equal(http_get(sqli_api_port(plain), SQLI_ROUTE_NAIVE "?user=1&q=plan", 5000, &status,
	                          g->body, sizeof(g->body), err, sizeof(err)),
	                 0);
	sqli_api_stop(plain);
	assert_int_equal(status, 404);
	/* and with it, the naive route does leak: every note of every user */
	assert_int_equal(get(g, SQLI_ROUTE_NAIVE "?user=1&q=%27%20OR%20%271%27%3D%271%27%20--"), 200);
	json_t *doc = json_loads(g->body, 0, NULL);
	assert_int_equal(json_integer_value(json_object_get(doc, "count")),
	                 g->cfg.users * g->cfg.notes_per_user);
	json_decref(doc);
}

/* What lab_api has left outside the schema: its large objects * 10 + its role defaults (0 or 1). */
static int64_t api_leftovers(struct group *g)
{
	char err[256];
	const char *p[] = {g->cfg.api_user};
	int64_t n = -1;
	if (pg_query_int64(g->lab,
	                   "SELECT (SELECT count(*) FROM pg_largeobject_metadata WHERE lomowner ="
	                   " (SELECT oid FROM pg_roles WHERE rolname = $1)) * 10 + (SELECT count(*) FROM"
	                   " pg_roles WHERE rolname = $1 AND rolconfig IS NOT NULL)",
	                   1, p, &n, err, sizeof(err)) < 0)
		fail_msg("leftovers: %s", err);
	return n;
}

/* A payload reaches past the schema with what PUBLIC may do (large objects) and what any role may
 * do to itself (ALTER ROLE ... SET): the teardown undoes both. */
static void test_teardown_undoes_what_a_payload_left_outside_the_schema(void **state)
{
	struct group *g = *state;
	char err[512];
	assert_int_equal(api_leftovers(g), 0);
	/* a large object for each other user's note (the caller's own end the OR before it) */
	assert_int_equal(
	        get(g, SQLI_ROUTE_NAIVE "?user=1&q=%27%20OR%20lo_from_bytea(0%2C%20%27x%27)%20%3E%200%20--"),
	        200);
	assert_int_equal(get(g, SQLI_ROUTE_NAIVE
	                     "?user=1&q=%27%3B%20ALTER%20ROLE%20CURRENT_USER%20SET%20work_mem%20%3D%20"
	                     "%274MB%27%3B%20--"),
	                 500);
	assert_int_equal(api_leftovers(g), 10 * (g->cfg.users - 1) * g->cfg.notes_per_user + 1);
	if (sql_injection_teardown(&g->cfg, err, sizeof(err)) < 0)
		fail_msg("teardown: %s", err);
	assert_int_equal(api_leftovers(g), 0);
	if (sql_injection_setup(&g->cfg, err, sizeof(err)) < 0)
		fail_msg("setup again: %s", err);
}

static void test_run_demonstrates_the_claim_and_the_counts_agree(void **state)
{
	(void)state;
	struct sqli_config cfg;
	sql_injection_config_default(&cfg, true);
	struct sqli_result *r = calloc(1, sizeof(*r));
	char err[512];
	assert_non_null(r);
	/* each phase's --predict question, answered from what the phase measured */
	struct lab_answers answers = {0};
	cfg.hooks = lab_answers_hooks(&answers, &cfg, r);
	int rc = sql_injection_run(&cfg, r, err, sizeof(err));
	if (rc < 0)
		fail_msg("run: %s", err);
	struct lab_verdict v;
	sql_injection_judge(r, &v);
	print_message("%s\n", v.evidence);
	assert_true(v.demonstrated);
	const struct sqli_outcome *n = r->naive.a, *p = r->param.a, *l = r->least.a;
	/* naive: the truth, whole */
	assert_int_equal(n[SQLI_BASELINE].leaked, 0);
	assert_int_equal(n[SQLI_TAUTOLOGY].leaked, r->setup.foreign_notes);
	assert_int_equal(n[SQLI_UNION_HASHES].leaked, r->setup.users);
	assert_int_equal(n[SQLI_UNION_CATALOG].leaked, r->setup.tables);
	assert_int_equal(n[SQLI_BLIND_BOOL].leaked, r->setup.secret_len);
	/* a bisection of 0..127: 7 requests per character and 7 for the end */
	assert_int_equal(n[SQLI_BLIND_BOOL].requests, 7 * (r->setup.secret_len + 1));
	assert_true(r->naive.table_dropped);
	/* parameterized: nothing, and the server ran exactly one statement per request, one shape */
	int requests = 0;
	for (int i = 0; i < SQLI_ATTACKS; i++) {
		assert_int_equal(p[i].leaked, 0);
		requests += p[i].requests;
	}
	assert_false(r->param.table_dropped);
	assert_int_equal(r->param.stmts.calls, requests);
	assert_int_equal(r->param.stmts.shapes, 1);
	/* the naive route ran statements no search has: UNION, DROP TABLE, pg_sleep */
	assert_true(r->naive.stmts.shapes >= 5);
	assert_non_null(strstr(r->naive.stmts.kinds, "UNION"));
	assert_non_null(strstr(r->naive.stmts.kinds, "DROP TABLE"));
	assert_true(r->multi_refused);
	assert_non_null(strstr(r->multi_said, "cannot insert multiple commands into a prepared statement"));
	/* ORDER BY: a bit per request naive, every payload 400 on the allow-list */
	assert_int_equal(r->order.naive_bits_right, r->order.naive_requests);
	assert_int_equal(r->order.naive_requests, 7 * cfg.order_chars);
	assert_int_equal(r->order.allow_400, r->order.allow_requests);
	assert_int_equal(r->order.allow_bits, 0);
	assert_true(r->order.ident_refused);
	assert_int_equal(r->order.like_raw_rows, r->setup.own_notes);
	assert_int_equal(r->order.like_escaped_rows, 1);
	/* least privilege: what it closes, and what it leaves open */
	assert_int_equal(l[SQLI_UNION_HASHES].leaked, 0);
	assert_int_equal(l[SQLI_BLIND_BOOL].leaked, 0);
	assert_int_equal(l[SQLI_BLIND_TIME].leaked, 0);
	assert_false(r->least.table_dropped);
	assert_int_equal(r->least_order_bits_right, 0);
	assert_non_null(strstr(l[SQLI_UNION_HASHES].said, "permission denied for table users"));
	assert_int_equal(l[SQLI_TAUTOLOGY].leaked, r->setup.foreign_notes);
	assert_int_equal(l[SQLI_UNION_CATALOG].leaked, r->setup.tables);
	/* the questions: every phase asks one, and their answers are the counts above */
	lab_assert_every_phase_asks(&answers, SQLI_PHASES);
	assert_true(lab_answer(&answers, "setup") == (cfg.users - 1) * cfg.notes_per_user);
	assert_true(lab_answer(&answers, "naive") == 7 * (cfg.secret_len + 1));
	assert_true(lab_answer(&answers, "parameterized") == 1);
	assert_true(lab_answer(&answers, "order_by") == 7 * cfg.order_chars);
	assert_true(lab_answer(&answers, "least_privilege") == 1); /* b: the tautology */
	free(r);
	lab_assert_nothing_left(SQLI_SCHEMA, NULL);
}

static void test_judge_says_which_claim_failed(void **state)
{
	(void)state;
	struct sqli_result r;
	memset(&r, 0, sizeof(r));
	r.setup.foreign_notes = 24;
	r.setup.users = 5;
	struct lab_verdict v;
	sql_injection_judge(&r, &v);
	assert_false(v.demonstrated);
	assert_non_null(strstr(v.evidence, "tautology leaked 0 of 24"));
}

static void test_ctrl_c_drops_the_schema(void **state)
{
	(void)state;
	static char out[8192], errout[4096];
	double stop_ms;
	/* the signal lands while the naive route is under attack */
	int rc = lab_interrupt("sql-injection", "--quick", "[2/", SIGINT, 10000, &stop_ms, out, sizeof(out),
	                       errout, sizeof(errout));
	print_message("exit %d, %.0f ms after SIGINT; stderr: %s\n", rc, stop_ms, errout);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left(SQLI_SCHEMA, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_search_returns_only_the_callers_notes_and_escapes_like),
	        cmocka_unit_test(test_bad_input_gets_400_and_reaches_no_statement),
	        cmocka_unit_test(test_vulnerable_route_exists_only_when_asked_for),
	        cmocka_unit_test(test_teardown_undoes_what_a_payload_left_outside_the_schema),
	        cmocka_unit_test(test_judge_says_which_claim_failed),
	        cmocka_unit_test(test_run_demonstrates_the_claim_and_the_counts_agree),
	        cmocka_unit_test(test_ctrl_c_drops_the_schema),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
