/*
 * test_pool.c — the connection pool of pool.h against a real PostgreSQL, never a mock: acquire
 * and release, FIFO waiters, acquire timeouts (also while the connection is still opening), leak
 * reports, pool_query (SQL errors, a parameter larger than the socket buffer), pool_query_simple
 * (several statements in one string), wait_ready, the
 * max_size cap under load, bad config and an unreachable server. test_pool_health.c tests how
 * connections break, retire and close.
 *
 * needs: postgres
 *
 * Run: ctest --test-dir build -R test_pool --output-on-failure (LAB_PG_URL picks the server).
 * The fixture and the loop driver are in pool_fixture.h.
 */
#define POOL_TEST "test_pool"
#include "pool_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static void test_acquire_and_release_count_in_stats_and_reuse_the_same_backend(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "reuse");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);

	struct pool_stats s = stats_of(p);
	assert_int_equal(s.idle, 1);
	assert_int_equal(s.active, 0);
	assert_int_equal(s.opened, 1);

	/* an idle connection is handed out before pool_acquire returns */
	struct grab g = {0};
	pool_acquire(p, "first", grab_cb, &g);
	assert_int_equal(g.calls, 1);
	assert_non_null(g.conn);
	int pid = pool_conn_pid(g.conn);
	assert_true(pid > 0);
	s = stats_of(p);
	assert_int_equal(s.active, 1);
	assert_int_equal(s.idle, 0);
	assert_int_equal(s.acquired, 1);
	assert_int_equal(s.released, 0);

	/* the holder may also use it with blocking libpq */
	char err[256];
	int64_t server_pid = 0;
	assert_int_equal(pg_query_int64(pool_conn_pg(g.conn), "SELECT pg_backend_pid()", 0, NULL, &server_pid,
	                                err, sizeof(err)),
	                 0);
	assert_int_equal(server_pid, pid);

	pool_release(g.conn);
	s = stats_of(p);
	assert_int_equal(s.active, 0);
	assert_int_equal(s.idle, 1);
	assert_int_equal(s.released, 1);

	struct grab again = {0};
	pool_acquire(p, "second", grab_cb, &again);
	assert_int_equal(again.calls, 1);
	assert_int_equal(pool_conn_pid(again.conn), pid);
	assert_int_equal(query_int(f, again.conn, "SELECT pg_backend_pid()"), pid);
	pool_release(again.conn);

	s = stats_of(p);
	assert_int_equal(s.acquired, 2);
	assert_int_equal(s.released, 2);
	assert_int_equal(s.opened, 1);
	assert_int_equal(s.wait.count, 2);
	assert_string_equal(s.last_error, "");
	pool_free(p);
}

/* A waiter that records its turn and gives the connection straight back, from its callback. */
struct fifo_waiter {
	int id;
	int *order;
	int *served;
};

static void fifo_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct fifo_waiter *w = arg;
	if (!conn) {
		fprintf(stderr, "waiter %d failed: %s\n", w->id, err);
		return;
	}
	w->order[(*w->served)++] = w->id;
	pool_release(conn); /* re-entrant: hands it on to the next waiter */
}

static void test_waiters_are_served_in_order_of_arrival(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "fifo");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);

	struct pool_conn *held = acquire_now(f, p, "holder");
	int order[5] = {-1, -1, -1, -1, -1};
	int served = 0;
	struct fifo_waiter waiters[5];
	for (int i = 0; i < 5; i++) {
		waiters[i] = (struct fifo_waiter){.id = i, .order = order, .served = &served};
		pool_acquire(p, "waiter", fifo_cb, &waiters[i]);
	}
	run_for(f->base, 20);
	struct pool_stats s = stats_of(p);
	assert_int_equal(served, 0);
	assert_int_equal(s.waiting, 5);
	assert_int_equal(s.opening, 0); /* max_size 1 is taken by the holder */
	assert_true(s.oldest_wait_us >= 20000 - TIMER_SLACK_US);

	pool_release(held);
	assert_int_equal(served, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(order[i], i);
	s = stats_of(p);
	assert_int_equal(s.waiting, 0);
	assert_int_equal(s.idle, 1);
	assert_int_equal(s.active, 0);
	assert_int_equal(s.acquired, 6);
	assert_int_equal(s.released, 6);
	assert_int_equal(s.opened, 1);
	pool_free(p);
}

static void test_a_waiter_times_out_with_an_error_and_leaves_the_pool_whole(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "timeout");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	cfg.acquire_timeout_ms = 50;
	struct pool *p = pool_ready(f, &cfg);

	struct pool_conn *held = acquire_now(f, p, "holder");
	int pid = pool_conn_pid(held);
	struct grab g = {0};
	uint64_t asked_at = hist_now_us();
	pool_acquire(p, "impatient", grab_cb, &g);
	assert_int_equal(g.calls, 0);
	assert_true(run_until(f->base, grab_done, &g, DEADLINE_MS));
	assert_int_equal(g.calls, 1);
	assert_null(g.conn);
	assert_non_null(strstr(g.err, "timed out after 50 ms"));
	assert_true(g.at_us - asked_at >= 50000 - TIMER_SLACK_US);

	struct pool_stats s = stats_of(p);
	assert_int_equal(s.timeouts, 1);
	assert_int_equal(s.waiting, 0);
	assert_int_equal(s.active, 1);
	assert_int_equal(s.idle, 0);
	assert_true(s.max_wait_us >= 50000 - TIMER_SLACK_US);

	/* the pool is whole: the held connection works, and goes back and out again */
	assert_int_equal(query_int(f, held, "SELECT 1"), 1);
	pool_release(held);
	s = stats_of(p);
	assert_int_equal(s.active, 0);
	assert_int_equal(s.idle, 1);
	struct grab again = {0};
	pool_acquire(p, "patient", grab_cb, &again);
	assert_int_equal(again.calls, 1);
	assert_non_null(again.conn);
	assert_int_equal(pool_conn_pid(again.conn), pid);
	s = stats_of(p);
	assert_int_equal(s.active, 1);
	assert_int_equal(s.idle, 0);
	assert_int_equal(s.timeouts, 1);
	pool_release(again.conn);
	pool_free(p);
}

struct leak_log {
	int calls;
	struct pool_leak last;
};

static void leak_log_cb(const struct pool_leak *leak, void *arg)
{
	struct leak_log *log = arg;
	log->calls++;
	log->last = *leak;
}

static void test_a_connection_held_past_the_threshold_is_reported_once_naming_its_holder(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "leak");
	struct leak_log log = {0};
	struct pool_config cfg = config_for(conninfo, 1, 2);
	cfg.leak_threshold_ms = 50;
	cfg.leak_cb = leak_log_cb;
	cfg.leak_arg = &log;
	struct pool *p = pool_ready(f, &cfg);

	struct pool_conn *c = acquire_now(f, p, "orders_handler");
	int pid = pool_conn_pid(c);
	struct pool_conn *fine = acquire_now(f, p, "short_lived");
	pool_release(fine);

	run_for(f->base, 150);
	assert_int_equal(log.calls, 1);
	assert_string_equal(log.last.holder, "orders_handler");
	assert_int_equal(log.last.backend_pid, pid);
	assert_true(log.last.held_us >= 50000 - TIMER_SLACK_US);
	assert_true(log.last.acquired_at_us > 0);
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.leaks, 1);

	struct pool_leak leaks[4];
	assert_int_equal(pool_leaks(p, leaks, 4), 1);
	assert_string_equal(leaks[0].holder, "orders_handler");
	assert_int_equal(leaks[0].backend_pid, pid);
	assert_true(leaks[0].held_us >= 150000 - TIMER_SLACK_US);

	/* closing the pool with the leaked connection still out is allowed, and frees it */
	pool_free(p);
}

static void test_pool_query_runs_a_parameterised_query_and_passes_sql_errors_as_they_are(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "query");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);
	struct pool_conn *c = acquire_now(f, p, "querier");
	int pid = pool_conn_pid(c);

	const char *params[] = {"6", "7"};
	struct answer a = query_now(f, c, "SELECT $1::int * $2::int", 2, params);
	assert_true(a.has_result);
	assert_int_equal(a.status, PGRES_TUPLES_OK);
	assert_int_equal(a.value, 42);

	/* one query at a time: the second is refused and its callback never runs */
	struct answer first = {0};
	struct answer second = {0};
	assert_int_equal(pool_query(c, "SELECT 1", 0, NULL, answer_cb, &first), 0);
	assert_int_equal(pool_query(c, "SELECT 2", 0, NULL, answer_cb, &second), -1);
	assert_true(run_until(f->base, answer_done, &first, DEADLINE_MS));
	run_for(f->base, 20);
	assert_int_equal(first.value, 1);
	assert_int_equal(second.calls, 0);

	/* an SQL error is a result, not a broken connection */
	a = query_now(f, c, "SELECT 1 / 0", 0, NULL);
	assert_true(a.has_result);
	assert_int_equal(a.status, PGRES_FATAL_ERROR);
	assert_non_null(strstr(a.err, "division by zero"));
	assert_non_null(strstr(stats_of(p).last_error, "division by zero"));
	pool_release(c);
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.idle, 1);
	assert_int_equal(s.closed_broken, 0);
	c = acquire_now(f, p, "querier");
	assert_int_equal(pool_conn_pid(c), pid);
	pool_release(c);
	pool_free(p);
}

/* pool_query_simple: the simple protocol runs every statement of a string, where pool_query
 * (the extended protocol) refuses a string of two */
static void test_pool_query_simple_runs_several_statements_and_pool_query_refuses_them(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "simple");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);
	struct pool_conn *c = acquire_now(f, p, "simple");

	struct answer a = query_now(f, c, "SELECT 1; SELECT 2", 0, NULL);
	assert_int_equal(a.status, PGRES_FATAL_ERROR);
	assert_non_null(strstr(a.err, "cannot insert multiple commands into a prepared statement"));

	memset(&a, 0, sizeof(a));
	assert_int_equal(
	        pool_query_simple(c, "SET application_name = 'simple-test'; SELECT 6 * 7", answer_cb, &a), 0);
	assert_int_equal(a.calls, 0);
	assert_true(run_until(f->base, answer_done, &a, DEADLINE_MS));
	/* the last result, as PQexec gives it, and the first statement ran too */
	assert_int_equal(a.status, PGRES_TUPLES_OK);
	assert_int_equal(a.value, 42);
	assert_int_equal(query_int(f, c, "SELECT (current_setting('application_name') = 'simple-test')::int"),
	                 1);

	/* an error stops the string: the statement after it does not run */
	memset(&a, 0, sizeof(a));
	assert_int_equal(pool_query_simple(c, "SELECT 1 / 0; SET application_name = 'after'", answer_cb, &a),
	                 0);
	assert_true(run_until(f->base, answer_done, &a, DEADLINE_MS));
	assert_int_equal(a.status, PGRES_FATAL_ERROR);
	assert_int_equal(query_int(f, c, "SELECT (current_setting('application_name') = 'simple-test')::int"),
	                 1);
	pool_discard(c, "its application_name was changed");
	pool_free(p);
}

static void test_pool_query_sends_a_parameter_larger_than_the_socket_buffer(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "flush");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);
	struct pool_conn *c = acquire_now(f, p, "uploader");

	/* 8 MiB: PQflush returns 1 many times, and the pool waits for writable in between */
	size_t n = 8u << 20;
	char *big = malloc(n + 1);
	assert_non_null(big);
	memset(big, 'x', n);
	big[n] = '\0';
	const char *params[] = {big};
	struct answer a = query_now(f, c, "SELECT length($1)", 1, params);
	free(big);
	assert_true(a.has_result);
	assert_int_equal(a.value, (int64_t)n);
	pool_release(c);
	assert_int_equal(stats_of(p).idle, 1);
	pool_free(p);
}

static void test_wait_ready_opens_min_idle_connections(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "min_idle");
	struct pool_config cfg = config_for(conninfo, 3, 5);
	struct pool *p = pool_ready(f, &cfg);
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.idle, 3);
	assert_int_equal(s.opened, 3);
	assert_int_equal(s.opening, 0);
	assert_int_equal(s.active, 0);
	assert_int_equal(backends_named(f, conninfo), 3);
	pool_free(p);
	/* pool_free closed them: the server sees them go (asynchronously, so poll briefly) */
	for (int i = 0; i < 200 && backends_named(f, conninfo) > 0; i++)
		usleep(10000);
	assert_int_equal(backends_named(f, conninfo), 0);
}

/* One of 20 concurrent requests: acquire, count the pool's backends on the server, release. */
struct request {
	struct pool *pool;
	const char *app;
	int *done;
	int *failed;
	int *max_total;
	int64_t *max_backends;
};

static void request_counted_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	struct request *r = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		fprintf(stderr, "count failed: %s\n", err ? err : PQresultErrorMessage(res));
		(*r->failed)++;
	} else {
		int64_t n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		if (n > *r->max_backends)
			*r->max_backends = n;
	}
	(*r->done)++;
	pool_release(c); /* re-entrant: serves the next waiter from inside this callback */
}

static void request_acquired_cb(struct pool_conn *c, const char *err, void *arg)
{
	struct request *r = arg;
	if (!c) {
		fprintf(stderr, "acquire failed: %s\n", err);
		(*r->failed)++;
		(*r->done)++;
		return;
	}
	struct pool_stats s;
	pool_stats(r->pool, &s);
	int total = s.active + s.idle + s.opening;
	if (total > *r->max_total)
		*r->max_total = total;
	const char *params[] = {r->app};
	if (pool_query(c, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", 1, params,
	               request_counted_cb, r) < 0) {
		(*r->failed)++;
		(*r->done)++;
		pool_release(c);
	}
}

static bool all_done(void *arg)
{
	return *(int *)arg == 20;
}

static void test_max_size_is_never_exceeded_under_20_concurrent_acquires(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "cap");
	const char *app = strstr(conninfo, "application_name=") + strlen("application_name=");
	struct pool_config cfg = config_for(conninfo, 0, 4);
	char err[POOL_ERRLEN];
	struct pool *p = pool_new(f->base, &cfg, err, sizeof(err));
	assert_non_null(p);

	int done = 0, failed = 0, max_total = 0;
	int64_t max_backends = 0;
	struct request requests[20];
	for (int i = 0; i < 20; i++) {
		requests[i] = (struct request){.pool = p,
		                               .app = app,
		                               .done = &done,
		                               .failed = &failed,
		                               .max_total = &max_total,
		                               .max_backends = &max_backends};
		pool_acquire(p, "request", request_acquired_cb, &requests[i]);
		struct pool_stats s = stats_of(p);
		assert_true(s.active + s.idle + s.opening <= 4);
	}
	assert_true(run_until(f->base, all_done, &done, DEADLINE_MS * 2));
	assert_int_equal(failed, 0);
	assert_true(max_total <= 4);
	assert_true(max_backends >= 1 && max_backends <= 4);
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.acquired, 20);
	assert_int_equal(s.released, 20);
	assert_true(s.opened <= 4);
	assert_int_equal(s.waiting, 0);
	assert_int_equal(s.active, 0);
	assert_int_equal(s.wait.count, 20);
	assert_true(s.max_wait_us > 0);
	assert_true(backends_named(f, conninfo) <= 4);
	pool_free(p);
}

static void test_bad_config_returns_null_with_an_error(void **state)
{
	struct fixture *f = *state;
	char err[POOL_ERRLEN];
	struct pool_config cfg = config_for(pg_url_default(), 0, 0);

	err[0] = '\0';
	assert_null(pool_new(f->base, &cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "max_size"));

	cfg = config_for(pg_url_default(), 3, 2);
	err[0] = '\0';
	assert_null(pool_new(f->base, &cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "min_idle"));

	cfg = config_for(pg_url_default(), 0, 2);
	cfg.acquire_timeout_ms = -1;
	err[0] = '\0';
	assert_null(pool_new(f->base, &cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "negative"));

	cfg = config_for("this is not a conninfo", 0, 2);
	err[0] = '\0';
	assert_null(pool_new(f->base, &cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "conninfo"));
	assert_null(strchr(err, '\n'));
}

static void test_an_unreachable_server_fails_wait_ready_quickly_with_a_clear_message(void **state)
{
	struct fixture *f = *state;
	char err[POOL_ERRLEN] = "";
	struct pool_config cfg = config_for("postgres://lab:lab@127.0.0.1:1/lab", 1, 2);
	struct pool *p = pool_new(f->base, &cfg, err, sizeof(err));
	assert_non_null(p);
	uint64_t t0 = hist_now_us();
	assert_int_equal(pool_wait_ready(p, DEADLINE_MS, err, sizeof(err)), -1);
	assert_true(hist_now_us() - t0 < 2000000);
	assert_non_null(strstr(err, "Connection refused"));
	assert_null(strchr(err, '\n'));
	struct pool_stats s = stats_of(p);
	assert_true(s.connect_errors >= 1);
	assert_int_equal(s.opened, 0);
	assert_string_equal(s.last_error, err);
	pool_free(p);
}

static bool connect_failed(void *arg)
{
	return stats_of(arg).connect_errors == 1;
}

static void test_a_waiter_times_out_while_its_connection_is_still_opening(void **state)
{
	struct fixture *f = *state;
	/* a server that accepts TCP (the kernel's backlog does) and never says a word */
	int silent = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(silent >= 0);
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(addr);
	assert_int_equal(bind(silent, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(silent, 8), 0);
	assert_int_equal(getsockname(silent, (struct sockaddr *)&addr, &len), 0);
	char conninfo[256];
	snprintf(conninfo, sizeof(conninfo), "postgres://lab:lab@127.0.0.1:%d/lab?sslmode=disable",
	         ntohs(addr.sin_port));

	struct pool_config cfg = config_for(conninfo, 0, 1);
	cfg.acquire_timeout_ms = 50;
	cfg.connect_timeout_ms = 300;
	char err[POOL_ERRLEN];
	struct pool *p = pool_new(f->base, &cfg, err, sizeof(err));
	assert_non_null(p);

	struct grab g = {0};
	uint64_t asked_at = hist_now_us();
	pool_acquire(p, "hopeful", grab_cb, &g);
	assert_int_equal(stats_of(p).opening, 1);
	assert_true(run_until(f->base, grab_done, &g, DEADLINE_MS));
	assert_null(g.conn);
	assert_non_null(strstr(g.err, "timed out"));
	assert_true(g.at_us - asked_at >= 50000 - TIMER_SLACK_US);
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.timeouts, 1);
	assert_int_equal(s.waiting, 0);
	assert_int_equal(s.opening, 1); /* the attempt goes on without its waiter */

	assert_true(run_until(f->base, connect_failed, p, DEADLINE_MS));
	assert_true(hist_now_us() - asked_at >= 300000 - TIMER_SLACK_US);
	s = stats_of(p);
	assert_int_equal(s.opening, 0);
	assert_int_equal(s.opened, 0);
	assert_non_null(strstr(s.last_error, "timed out after 300 ms connecting"));
	pool_free(p);
	close(silent);
}
int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_acquire_and_release_count_in_stats_and_reuse_the_same_backend),
	        cmocka_unit_test(test_waiters_are_served_in_order_of_arrival),
	        cmocka_unit_test(test_a_waiter_times_out_with_an_error_and_leaves_the_pool_whole),
	        cmocka_unit_test(
	                test_a_connection_held_past_the_threshold_is_reported_once_naming_its_holder),
	        cmocka_unit_test(
	                test_pool_query_runs_a_parameterised_query_and_passes_sql_errors_as_they_are),
	        cmocka_unit_test(test_pool_query_simple_runs_several_statements_and_pool_query_refuses_them),
	        cmocka_unit_test(test_pool_query_sends_a_parameter_larger_than_the_socket_buffer),
	        cmocka_unit_test(test_wait_ready_opens_min_idle_connections),
	        cmocka_unit_test(test_max_size_is_never_exceeded_under_20_concurrent_acquires),
	        cmocka_unit_test(test_bad_config_returns_null_with_an_error),
	        cmocka_unit_test(test_an_unreachable_server_fails_wait_ready_quickly_with_a_clear_message),
	        cmocka_unit_test(test_a_waiter_times_out_while_its_connection_is_still_opening),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
