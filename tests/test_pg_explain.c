/*
 * test_pg_explain.c — EXPLAIN's JSON read the way the labs read it: the facts of a real plan
 * from the real server, and text that is not a plan refused.
 * needs: postgres
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "pg.h"
#include "pg_explain.h"

#define ERRLEN 512

static void test_a_real_plan_gives_its_shape_rows_and_buffers(void **state)
{
	(void)state;
	char err[ERRLEN], shape[128];
	PGconn *conn = pg_connect(pg_url_default(), err, sizeof(err));
	if (!conn)
		fail_msg("%s", err);
	const char *params[] = {"5"};
	struct pg_explain e;
	/* pg_class is there in every database, with an index on oid the planner takes for a range */
	int rc = pg_explain_run(conn, "ANALYZE, BUFFERS",
	                        "SELECT oid FROM pg_class WHERE oid > 0 ORDER BY oid LIMIT $1::int", 1,
	                        params, &e, err, sizeof(err));
	if (rc != 0)
		fail_msg("%s", err);
	pg_plan_shape(e.plan, shape, sizeof(shape));
	assert_int_equal(e.rows, 5);
	assert_string_equal(pg_plan_type(e.plan), "Limit");
	assert_non_null(strstr(shape, "Limit > "));
	assert_true(e.buffers >= 1);
	assert_int_equal(e.buffers, e.hit + e.read);
	assert_true(e.exec_ms > 0);
	assert_non_null(pg_plan_children(e.plan));
	pg_explain_free(&e);
	assert_null(e.doc);

	/* a statement that fails is an error, not a plan */
	assert_int_equal(pg_explain_run(conn, "ANALYZE", "SELECT * FROM no_such_table_here", 0, NULL, &e, err,
	                                sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "no_such_table_here"));
	pg_explain_free(&e);
	PQfinish(conn);
}

static void test_text_that_is_not_an_analyzed_plan_is_refused(void **state)
{
	(void)state;
	char err[ERRLEN];
	struct pg_explain e;
	const char *bad[] = {
	        "",
	        "not json",
	        "{}",
	        "[]",
	        "[{\"Plan\": 3, \"Execution Time\": 1.0}]",
	        /* EXPLAIN without ANALYZE: no Execution Time */
	        "[{\"Plan\": {\"Node Type\": \"Seq Scan\"}}]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(pg_explain_parse(bad[i], &e, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "EXPLAIN did not return a JSON plan"));
		assert_null(e.doc);
	}
	assert_int_equal(
	        pg_explain_parse("[{\"Plan\": {\"Node Type\": \"Limit\", \"Actual Rows\": 2,"
	                         " \"Shared Hit Blocks\": 3, \"Shared Read Blocks\": 4, \"WAL Bytes\": 9.0,"
	                         " \"Plans\": [{\"Node Type\": \"Seq Scan\"}]},"
	                         " \"Execution Time\": 0.5}]",
	                         &e, err, sizeof(err)),
	        0);
	char shape[16];
	pg_plan_shape(e.plan, shape, sizeof(shape));
	assert_string_equal(shape, "Limit > Seq Sca"); /* cut to the buffer, never past it */
	assert_int_equal(e.buffers, 7);
	assert_int_equal(e.wal_bytes, 9);
	assert_int_equal(pg_plan_int(e.plan, "No Such Key", -1), -1);
	assert_string_equal(pg_plan_type(json_array_get(pg_plan_children(e.plan), 0)), "Seq Scan");
	assert_null(pg_plan_children(json_array_get(pg_plan_children(e.plan), 0)));
	pg_explain_free(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_a_real_plan_gives_its_shape_rows_and_buffers),
	        cmocka_unit_test(test_text_that_is_not_an_analyzed_plan_is_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
