/*
 * test_pool_pipe.c — a pipelined pool (pool.h: cfg.pipeline, pool_pipe_query) against a real
 * PostgreSQL: many callers' statements in flight on fewer connections, each answered with its
 * own row and, on each connection, in the order sent; each statement its own transaction (one
 * that fails aborts no other); a backend terminated mid-pipeline fails exactly the statements
 * in flight on it, the connection is replaced, prepares its statement again, and the next
 * statements succeed; pool_free calls back what is in flight; such a pool lends no connection.
 * Counts only, no time.
 *
 * needs: postgres
 *
 * Run: ./build/test_pool_pipe (LAB_PG_URL picks the server). The fixture and the loop driver
 * are in pool_fixture.h.
 */
#define POOL_TEST "test_pool_pipe"
#include "pool_fixture.h"

static const struct pool_stmt ECHO = {"test_pipe_echo", "SELECT $1::int, pg_backend_pid()", 1};
static const struct pool_stmt DIVIDE = {"test_pipe_divide", "SELECT 10 / $1::int, pg_backend_pid()", 1};
static const struct pool_stmt SLEEP = {"test_pipe_sleep", "SELECT pg_sleep($1::float8), pg_backend_pid()", 1};

#define MAX_CALLS 64

/* Every callback of a run, in the order they came. */
struct calls {
	int n;
	struct call {
		int sent; /* the caller's number, in send order */
		bool has_result;
		ExecStatusType status;
		long value;
		int pid;
		char sqlstate[8];
		char err[POOL_ERRLEN];
		bool conn_null;
	} at[MAX_CALLS];
	int tag[MAX_CALLS]; /* tag[i] = i: the callback's arg */
};

static struct calls calls; /* off the stack; reset by each test */

static void pipe_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	assert_true(calls.n < MAX_CALLS);
	struct call *k = &calls.at[calls.n++];
	k->sent = *(int *)arg;
	k->conn_null = c == NULL;
	k->has_result = res != NULL;
	if (!res) {
		snprintf(k->err, sizeof(k->err), "%s", err ? err : "(no error)");
		return;
	}
	k->status = PQresultStatus(res);
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	snprintf(k->sqlstate, sizeof(k->sqlstate), "%s", state ? state : "");
	if (k->status == PGRES_TUPLES_OK && PQntuples(res) == 1) {
		k->value = atol(PQgetvalue(res, 0, 0));
		k->pid = atoi(PQgetvalue(res, 0, 1));
	}
}

static bool calls_reach(void *arg)
{
	return calls.n >= *(int *)arg;
}

/* Sends s(param) as caller number `sent`; asserts nothing was called back yet for it. */
static void pipe_send(struct pool *p, const struct pool_stmt *s, const char *param, int sent)
{
	char local[32];
	snprintf(local, sizeof(local), "%s", param);
	const char *params[] = {local};
	calls.tag[sent] = sent;
	int before = calls.n;
	assert_int_equal(pool_pipe_query(p, s, params, pipe_cb, &calls.tag[sent]), 0);
	assert_int_equal(calls.n, before);     /* never called back before it returns */
	memset(local, 'x', sizeof(local) - 1); /* copied: the pool must not read it later */
}

static void wait_calls(struct fixture *f, int n)
{
	if (!run_until(f->base, calls_reach, &n, DEADLINE_MS))
		fail_msg("%d of %d statements answered", calls.n, n);
	run_for(f->base, 20); /* and no more than that */
	assert_int_equal(calls.n, n);
}

static struct pool_config pipe_config(const char *conninfo, int conns)
{
	struct pool_config cfg = config_for(conninfo, conns, conns);
	cfg.pipeline = true;
	return cfg;
}

static void test_statements_in_flight_on_fewer_connections_come_back_right_and_in_order(void **state)
{
	struct fixture *f = *state;
	enum { CONNS = 2, N = 24 };
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "pipe_order");
	struct pool_config cfg = pipe_config(conninfo, CONNS);
	struct pool *p = pool_ready(f, &cfg);
	memset(&calls, 0, sizeof(calls));
	for (int i = 0; i < N; i++) {
		char v[16];
		snprintf(v, sizeof(v), "%d", 1000 + i);
		pipe_send(p, &ECHO, v, i);
	}
	wait_calls(f, N);
	int pids[CONNS] = {0}, last[CONNS] = {-1, -1};
	for (int k = 0; k < N; k++) {
		struct call *c = &calls.at[k];
		if (!c->has_result || c->status != PGRES_TUPLES_OK)
			fail_msg("statement %d failed: %s", c->sent, c->err);
		assert_true(c->conn_null);
		assert_int_equal(c->value, 1000 + c->sent); /* its own row */
		int slot = c->pid == pids[0] || !pids[0] ? 0 : 1;
		if (!pids[slot])
			pids[slot] = c->pid;
		assert_int_equal(c->pid, pids[slot]);
		assert_true(c->sent > last[slot]); /* on one connection, in the order sent */
		last[slot] = c->sent;
	}
	assert_int_not_equal(pids[0], pids[1]); /* both connections served */
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.pipelined, N);
	assert_true(s.pipe_depth_max >= N / CONNS); /* many in flight on one connection at once */
	assert_int_equal(s.prepared, CONNS);        /* prepared once per connection */
	assert_int_equal(s.opened, CONNS);
	assert_int_equal(backends_named(f, conninfo), CONNS);
	pool_free(p);
}

static void test_each_statement_is_its_own_transaction(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "pipe_txn");
	struct pool_config cfg = pipe_config(conninfo, 1);
	struct pool *p = pool_ready(f, &cfg);
	memset(&calls, 0, sizeof(calls));
	pipe_send(p, &DIVIDE, "1", 0);
	pipe_send(p, &DIVIDE, "0", 1); /* division by zero, between two that must still succeed */
	pipe_send(p, &DIVIDE, "2", 2);
	wait_calls(f, 3);
	for (int k = 0; k < 3; k++)
		assert_int_equal(calls.at[k].sent, k);
	assert_int_equal(calls.at[0].status, PGRES_TUPLES_OK);
	assert_int_equal(calls.at[0].value, 10);
	assert_true(calls.at[1].has_result);
	assert_int_equal(calls.at[1].status, PGRES_FATAL_ERROR);
	assert_string_equal(calls.at[1].sqlstate, "22012");
	assert_int_equal(calls.at[2].status, PGRES_TUPLES_OK);
	assert_int_equal(calls.at[2].value, 5);
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.closed_broken, 0); /* an SQL error is not a lost connection */
	assert_int_equal(s.prepared, 1);
	pool_free(p);
}

static int pid_named(struct fixture *f, const char *conninfo)
{
	char err[256];
	const char *app = strstr(conninfo, "application_name=") + strlen("application_name=");
	const char *params[] = {app};
	int64_t pid = 0;
	if (pg_query_int64(f->admin, "SELECT pid FROM pg_stat_activity WHERE application_name = $1", 1,
	                   params, &pid, err, sizeof(err)) < 0)
		fail_msg("pg_stat_activity: %s", err);
	return (int)pid;
}

static bool reopened(void *arg)
{
	struct pool_stats s;
	pool_stats(arg, &s);
	return s.opened == 2 && s.idle == 1;
}

static bool reopened_again(void *arg)
{
	struct pool_stats s;
	pool_stats(arg, &s);
	return s.opened == 3 && s.idle == 1;
}

static void test_a_backend_killed_mid_pipeline_fails_exactly_the_statements_in_flight(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "pipe_kill");
	struct pool_config cfg = pipe_config(conninfo, 1);
	struct pool *p = pool_ready(f, &cfg);
	memset(&calls, 0, sizeof(calls));
	pipe_send(p, &ECHO, "7", 0); /* answered before the kill */
	wait_calls(f, 1);
	int pid = pid_named(f, conninfo);
	assert_int_equal(calls.at[0].pid, pid);
	pipe_send(p, &SLEEP, "30", 1); /* in flight when its backend is terminated */
	pipe_send(p, &ECHO, "8", 2);
	pipe_send(p, &ECHO, "9", 3);
	terminate_backend(f, pid);
	wait_calls(f, 4);
	for (int k = 1; k < 4; k++) {
		assert_int_equal(calls.at[k].sent, k);
		assert_false(calls.at[k].has_result);
		assert_true(calls.at[k].err[0] != '\0');
	}
	if (!run_until(f->base, reopened, p, DEADLINE_MS))
		fail_msg("the lost connection was not replaced");
	uint64_t prepared_before = stats_of(p).prepared;
	pipe_send(p, &ECHO, "10", 4);
	pipe_send(p, &ECHO, "11", 5);
	wait_calls(f, 6);
	for (int k = 4; k < 6; k++) {
		if (!calls.at[k].has_result || calls.at[k].status != PGRES_TUPLES_OK)
			fail_msg("statement %d after the kill failed: %s", k, calls.at[k].err);
		assert_int_equal(calls.at[k].value, 6 + k);
		assert_int_not_equal(calls.at[k].pid, pid); /* on the connection that replaced it */
	}
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.closed_broken, 1);
	/* ECHO prepared once on the new connection for its two statements (without it, they would
	 * fail with 26000); whether SLEEP's Parse was confirmed before the kill is the server's race */
	assert_int_equal(s.prepared - prepared_before, 1);

	/* killed while nothing is in flight: the death watch replaces it, no caller sees an error */
	terminate_backend(f, calls.at[5].pid);
	if (!run_until(f->base, reopened_again, p, DEADLINE_MS))
		fail_msg("the idle connection killed was not replaced");
	pipe_send(p, &ECHO, "12", 6);
	wait_calls(f, 7);
	assert_int_equal(calls.at[6].status, PGRES_TUPLES_OK);
	assert_int_equal(calls.at[6].value, 12);
	assert_int_equal(stats_of(p).closed_broken, 2);
	pool_free(p);
}

static void test_pool_free_calls_back_what_is_in_flight_and_the_pool_lends_nothing(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "pipe_free");
	struct pool_config cfg = pipe_config(conninfo, 1);
	struct pool *p = pool_ready(f, &cfg);
	struct grab g = {0};
	pool_acquire(p, "holder", grab_cb, &g);
	assert_int_equal(g.calls, 1);
	assert_null(g.conn);
	assert_non_null(strstr(g.err, "pool_pipe_query"));
	/* a plain pool refuses pool_pipe_query */
	struct pool_config plain_cfg = config_for(conninfo, 0, 1);
	char err[POOL_ERRLEN];
	struct pool *plain = pool_new(f->base, &plain_cfg, err, sizeof(err));
	assert_non_null(plain);
	const char *one[] = {"1"};
	assert_int_equal(pool_pipe_query(plain, &ECHO, one, pipe_cb, &calls.tag[0]), -1);
	pool_free(plain);

	memset(&calls, 0, sizeof(calls));
	pipe_send(p, &SLEEP, "30", 0);
	pipe_send(p, &ECHO, "1", 1);
	pool_free(p);
	assert_int_equal(calls.n, 2);
	for (int k = 0; k < 2; k++) {
		assert_int_equal(calls.at[k].sent, k);
		assert_false(calls.at[k].has_result);
		assert_string_equal(calls.at[k].err, "pool closed");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_statements_in_flight_on_fewer_connections_come_back_right_and_in_order),
	        cmocka_unit_test(test_each_statement_is_its_own_transaction),
	        cmocka_unit_test(test_a_backend_killed_mid_pipeline_fails_exactly_the_statements_in_flight),
	        cmocka_unit_test(test_pool_free_calls_back_what_is_in_flight_and_the_pool_lends_nothing),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
