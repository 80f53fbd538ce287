/*
 * test_pool_prepared.c — pool_query_prepared (pool.h) against a real PostgreSQL: a named
 * statement is prepared once per connection, on its first use there, and only executed after
 * that (counted by the server: pg_prepared_statements of that session, its generic and custom
 * plans); prepared again on the connection that replaces a terminated one, and after DISCARD ALL
 * or a DEALLOCATE behind the pool's back; a bad statement gives the caller its error and leaves
 * the connection usable; a name taken by other SQL is refused.
 *
 * needs: postgres
 *
 * Run: ctest --test-dir build -R test_pool_prepared --output-on-failure (LAB_PG_URL picks the
 * server). The fixture and the loop driver are in pool_fixture.h.
 */
#define POOL_TEST "test_pool_prepared"
#include "pool_fixture.h"

static const struct pool_stmt ADD_ONE = {"test_pool_add_one", "SELECT $1::int + 1", 1};
static const struct pool_stmt BAD = {"test_pool_bad", "SELECT nope FROM test_pool_no_such_table", 0};

static struct answer prepared_now(struct fixture *f, struct pool_conn *c, const struct pool_stmt *s,
                                  const char *param)
{
	struct answer a;
	memset(&a, 0, sizeof(a));
	/* a local the pool must not read after the call: overwritten before the loop runs */
	char local[32];
	snprintf(local, sizeof(local), "%s", param ? param : "");
	const char *params[] = {local};
	assert_int_equal(pool_query_prepared(c, s, params, answer_cb, &a), 0);
	assert_int_equal(a.calls, 0);
	memset(local, 'x', sizeof(local) - 1);
	if (!run_until(f->base, answer_done, &a, DEADLINE_MS))
		fail_msg("no answer to %s", s->name);
	assert_int_equal(a.calls, 1);
	return a;
}

static void add_one_is(struct fixture *f, struct pool_conn *c, int n)
{
	char text[16];
	snprintf(text, sizeof(text), "%d", n);
	struct answer a = prepared_now(f, c, &ADD_ONE, text);
	if (!a.has_result || a.status != PGRES_TUPLES_OK)
		fail_msg("%s failed: %s", ADD_ONE.name, a.err);
	assert_int_equal(a.value, n + 1);
}

/* How many times the session of c prepared name (0 or 1), and ran it (generic + custom plans). */
static void session_counts(struct fixture *f, struct pool_conn *c, const char *name, int64_t *prepared,
                           int64_t *runs)
{
	const char *params[] = {name};
	struct answer a =
	        query_now(f, c, "SELECT count(*) FROM pg_prepared_statements WHERE name = $1", 1, params);
	assert_true(a.has_result && a.status == PGRES_TUPLES_OK);
	*prepared = a.value;
	a = query_now(f, c,
	              "SELECT coalesce(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements "
	              "WHERE name = $1",
	              1, params);
	assert_true(a.has_result && a.status == PGRES_TUPLES_OK);
	*runs = a.value;
}

static void test_a_statement_is_prepared_once_per_connection_and_executed_after(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "prepared_once");
	struct pool_config cfg = config_for(conninfo, 2, 2);
	struct pool *p = pool_ready(f, &cfg);
	struct pool_conn *a = acquire_now(f, p, "first");
	struct pool_conn *b = acquire_now(f, p, "second");
	assert_int_not_equal(pool_conn_pid(a), pool_conn_pid(b));
	for (int i = 0; i < 3; i++)
		add_one_is(f, a, 10 * i);
	for (int i = 0; i < 2; i++)
		add_one_is(f, b, 100 + i);
	assert_int_equal(stats_of(p).prepared, 2); /* one prepare per connection, 5 executes */

	int64_t prepared = 0, runs = 0;
	session_counts(f, a, ADD_ONE.name, &prepared, &runs);
	assert_int_equal(prepared, 1);
	assert_int_equal(runs, 3);
	session_counts(f, b, ADD_ONE.name, &prepared, &runs);
	assert_int_equal(prepared, 1);
	assert_int_equal(runs, 2);

	/* the statement stays with the connection across holders */
	pool_release(a);
	pool_release(b);
	struct pool_conn *again = acquire_now(f, p, "third");
	add_one_is(f, again, 7);
	assert_int_equal(stats_of(p).prepared, 2);
	pool_release(again);
	pool_free(p);
}

static bool replaced(void *arg)
{
	struct pool_stats s;
	pool_stats(arg, &s);
	return s.closed_broken == 1 && s.idle == 1;
}

static void test_the_connection_that_replaces_a_terminated_one_prepares_again(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "prepared_replaced");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);
	struct pool_conn *c = acquire_now(f, p, "before");
	int old_pid = pool_conn_pid(c);
	add_one_is(f, c, 1);
	pool_release(c);
	assert_int_equal(stats_of(p).prepared, 1);

	terminate_backend(f, old_pid);
	assert_true(run_until(f->base, replaced, p, DEADLINE_MS));
	c = acquire_now(f, p, "after");
	assert_int_not_equal(pool_conn_pid(c), old_pid);
	add_one_is(f, c, 2);
	assert_int_equal(stats_of(p).prepared, 2);
	int64_t prepared = 0, runs = 0;
	session_counts(f, c, ADD_ONE.name, &prepared, &runs);
	assert_int_equal(prepared, 1);
	assert_int_equal(runs, 1);
	pool_release(c);
	pool_free(p);
}

static void test_a_bad_statement_gives_its_error_and_leaves_the_connection_usable(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "prepared_bad");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);
	struct pool_conn *c = acquire_now(f, p, "bad");
	int pid = pool_conn_pid(c);

	for (int i = 1; i <= 2; i++) { /* not remembered: the second use tries, and fails, again */
		struct answer a = prepared_now(f, c, &BAD, NULL);
		assert_true(a.has_result);
		assert_int_equal(a.status, PGRES_FATAL_ERROR);
		assert_non_null(strstr(a.err, "test_pool_no_such_table"));
		assert_int_equal(stats_of(p).prepare_errors, (uint64_t)i);
	}
	add_one_is(f, c, 41); /* the same connection goes on */
	assert_int_equal(stats_of(p).prepared, 1);
	pool_release(c);
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.closed_broken, 0);
	assert_int_equal(s.closed_discarded, 0);
	c = acquire_now(f, p, "after");
	assert_int_equal(pool_conn_pid(c), pid);
	pool_release(c);
	pool_free(p);
}

static void test_statements_the_session_lost_are_prepared_again(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "prepared_lost");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);
	struct pool_conn *c = acquire_now(f, p, "lost");
	add_one_is(f, c, 1);

	/* through the pool: it reads the command tag and forgets */
	struct answer d = query_now(f, c, "DISCARD ALL", 0, NULL);
	assert_true(d.has_result && d.status == PGRES_COMMAND_OK);
	add_one_is(f, c, 2);
	assert_int_equal(stats_of(p).prepared, 2);

	/* behind its back: that call gets the server's 26000, the next prepares again */
	PGresult *res = PQexec(pool_conn_pg(c), "DEALLOCATE test_pool_add_one");
	assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	struct answer lost = prepared_now(f, c, &ADD_ONE, "3");
	assert_true(lost.has_result);
	assert_int_equal(lost.status, PGRES_FATAL_ERROR);
	add_one_is(f, c, 4);
	assert_int_equal(stats_of(p).prepared, 3);
	int64_t prepared = 0, runs = 0;
	session_counts(f, c, ADD_ONE.name, &prepared, &runs);
	assert_int_equal(prepared, 1);
	assert_int_equal(runs, 1);

	/* a name taken by other SQL on this connection is refused, and nothing runs */
	static const struct pool_stmt CLASH = {"test_pool_add_one", "SELECT $1::int + 2", 1};
	const char *params[] = {"1"};
	struct answer none = {0};
	assert_int_equal(pool_query_prepared(c, &CLASH, params, answer_cb, &none), -1);
	assert_int_equal(pool_query_prepared(c, NULL, params, answer_cb, &none), -1);
	run_for(f->base, 10);
	assert_int_equal(none.calls, 0);
	pool_release(c);
	assert_int_equal(stats_of(p).closed_discarded, 0);
	pool_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_a_statement_is_prepared_once_per_connection_and_executed_after),
	        cmocka_unit_test(test_the_connection_that_replaces_a_terminated_one_prepares_again),
	        cmocka_unit_test(test_a_bad_statement_gives_its_error_and_leaves_the_connection_usable),
	        cmocka_unit_test(test_statements_the_session_lost_are_prepared_again),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
