/*
 * test_pool_health.c — how the pool of pool.h handles connections that break, retire or close,
 * against a real PostgreSQL, never a mock: backends terminated while idle (seen by the loop, or
 * on acquire when the loop did not run), in a query and held between statements, max lifetime,
 * idle timeout, a discarded connection, one released inside a transaction, and pool_free with
 * queries in flight and waiters queued. test_pool.c tests acquire, waiters, queries and stats.
 *
 * needs: postgres
 *
 * Run: ctest --test-dir build -R test_pool_health --output-on-failure (LAB_PG_URL picks the server).
 * The fixture and the loop driver are in pool_fixture.h.
 */
#define POOL_TEST "test_pool_health"
#include "pool_fixture.h"

static bool broken_replaced(void *arg)
{
	struct pool_stats s = stats_of(arg);
	return s.closed_broken == 1 && s.idle == 1 && s.opening == 0;
}

static void test_a_backend_terminated_while_idle_is_replaced_without_the_caller_seeing_an_error(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "idle_kill");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);

	struct pool_conn *c = acquire_now(f, p, "before");
	int old_pid = pool_conn_pid(c);
	pool_release(c);

	terminate_backend(f, old_pid);
	/* the idle watch sees it on the loop, with no acquire asking */
	assert_true(run_until(f->base, broken_replaced, p, DEADLINE_MS));
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.closed_broken, 1);
	assert_int_equal(s.opened, 2);
	assert_non_null(strstr(s.last_error, "terminating connection"));

	struct grab g = {0};
	pool_acquire(p, "after", grab_cb, &g);
	assert_int_equal(g.calls, 1);
	assert_non_null(g.conn);
	assert_string_equal(g.err, "");
	int new_pid = pool_conn_pid(g.conn);
	assert_int_not_equal(new_pid, old_pid);
	assert_int_equal(query_int(f, g.conn, "SELECT pg_backend_pid()"), new_pid);
	pool_release(g.conn);
	s = stats_of(p);
	assert_int_equal(s.closed_broken, 1);
	assert_int_equal(s.idle, 1);
	pool_free(p);
}

static void test_a_backend_terminated_while_active_fails_the_query_and_is_replaced_on_release(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "active_kill");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);

	struct pool_conn *c = acquire_now(f, p, "victim");
	int old_pid = pool_conn_pid(c);
	terminate_backend(f, old_pid);

	struct answer a = query_now(f, c, "SELECT 1", 0, NULL);
	assert_false(a.has_result);
	assert_true(strlen(a.err) > 0);
	assert_null(strchr(a.err, '\n'));
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.closed_broken, 0); /* not before the holder gives it back */
	assert_int_equal(s.active, 1);

	pool_release(c);
	assert_true(run_until(f->base, broken_replaced, p, DEADLINE_MS));
	s = stats_of(p);
	assert_int_equal(s.closed_broken, 1);
	assert_int_equal(s.released, 1);
	assert_int_equal(s.active, 0);

	c = acquire_now(f, p, "next");
	assert_int_not_equal(pool_conn_pid(c), old_pid);
	assert_int_equal(query_int(f, c, "SELECT 2"), 2);
	pool_release(c);
	pool_free(p);
}

/* Runs the loop for ms, one pass per EVLOOP_ONCE, and counts the passes. */
static int loop_passes_for(struct event_base *base, int ms)
{
	uint64_t end = hist_now_us() + (uint64_t)ms * 1000u;
	struct event *tick = evtimer_new(base, tick_cb, NULL);
	assert_non_null(tick);
	int passes = 0;
	for (uint64_t now = hist_now_us(); now < end; now = hist_now_us()) {
		uint64_t left = end - now < 20000 ? end - now : 20000;
		struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)left};
		evtimer_add(tick, &tv);
		assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0);
		evtimer_del(tick);
		passes++;
	}
	event_free(tick);
	return passes;
}

static void test_a_backend_terminated_while_held_is_seen_on_the_loop_without_spinning_it(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "held_kill");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);

	struct pool_conn *c = acquire_now(f, p, "between_statements");
	int old_pid = pool_conn_pid(c);
	assert_int_equal(query_int(f, c, "SELECT 1"), 1);
	terminate_backend(f, old_pid);

	/*
	 * The socket stays watched while held: the FATAL and the end of file are read on the loop
	 * (so libpq knows), then the watch stops. 100 ms at one pass per 20 ms tick is about 5
	 * passes; a dead socket left registered would make thousands.
	 */
	int passes = loop_passes_for(f->base, 100);
	assert_true(passes < 50);
	assert_int_equal(PQstatus(pool_conn_pg(c)), CONNECTION_BAD);
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.closed_broken, 0); /* not taken from its holder */
	assert_int_equal(s.active, 1);

	/* a statement now fails at once, on the loop, with the server's words */
	struct answer a = query_now(f, c, "SELECT 1", 0, NULL);
	assert_false(a.has_result);
	assert_non_null(strstr(a.err, "terminating connection"));

	pool_release(c);
	s = stats_of(p);
	assert_int_equal(s.closed_broken, 1);
	assert_non_null(strstr(s.last_error, "terminating connection"));
	assert_true(run_until(f->base, broken_replaced, p, DEADLINE_MS));
	c = acquire_now(f, p, "next");
	assert_int_not_equal(pool_conn_pid(c), old_pid);
	assert_int_equal(query_int(f, c, "SELECT 4"), 4);
	pool_release(c);
	pool_free(p);
}

/* Past the pool's 500 ms window in which a recently released connection is not checked. */
#define PAST_ALIVE_BYPASS_MS 600

static void test_an_idle_backend_terminated_while_the_loop_did_not_run_is_caught_on_acquire(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "stale_kill");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);

	struct pool_conn *c = acquire_now(f, p, "before");
	int old_pid = pool_conn_pid(c);
	pool_release(c);
	/* the loop does not run: only the check on acquire can see the FATAL */
	usleep(PAST_ALIVE_BYPASS_MS * 1000);
	terminate_backend(f, old_pid);

	struct grab g = {0};
	pool_acquire(p, "after", grab_cb, &g);
	assert_int_equal(g.calls, 0); /* found dead, so this acquire waits for the replacement */
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.closed_broken, 1);
	assert_non_null(strstr(s.last_error, "terminating connection"));
	assert_true(run_until(f->base, grab_done, &g, DEADLINE_MS));
	assert_non_null(g.conn);
	assert_string_equal(g.err, "");
	assert_int_not_equal(pool_conn_pid(g.conn), old_pid);
	assert_int_equal(query_int(f, g.conn, "SELECT 5"), 5);
	pool_release(g.conn);
	pool_free(p);
}

static bool one_idle(void *arg)
{
	struct pool_stats s = stats_of(arg);
	return s.idle == 1 && s.opening == 0;
}

static void test_a_connection_past_max_lifetime_is_retired_on_release_and_replaced(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "lifetime");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	cfg.max_lifetime_ms = 300;
	struct pool *p = pool_ready(f, &cfg);

	struct pool_conn *c = acquire_now(f, p, "old_timer");
	int old_pid = pool_conn_pid(c);
	run_for(f->base, 350);
	assert_int_equal(stats_of(p).closed_lifetime, 0); /* never taken from its holder */
	pool_release(c);
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.closed_lifetime, 1);
	assert_int_equal(s.released, 1);
	assert_int_equal(s.idle, 0);

	assert_true(run_until(f->base, one_idle, p, DEADLINE_MS));
	c = acquire_now(f, p, "young");
	assert_int_not_equal(pool_conn_pid(c), old_pid);
	assert_int_equal(query_int(f, c, "SELECT 3"), 3);
	pool_release(c);
	s = stats_of(p);
	assert_int_equal(s.closed_lifetime, 1);
	assert_int_equal(s.opened, 2);
	pool_free(p);
}

static bool none_idle(void *arg)
{
	return stats_of(arg).idle == 0;
}

static void test_idle_connections_above_min_idle_are_closed_after_idle_timeout(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "idle_timeout");
	struct pool_config cfg = config_for(conninfo, 0, 2);
	cfg.idle_timeout_ms = 100;
	struct pool *p = pool_ready(f, &cfg);

	struct pool_conn *c = acquire_now(f, p, "brief");
	pool_release(c);
	assert_int_equal(stats_of(p).idle, 1);
	uint64_t released_at = hist_now_us();
	assert_true(run_until(f->base, none_idle, p, DEADLINE_MS));
	assert_true(hist_now_us() - released_at >= 100000 - TIMER_SLACK_US);
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.closed_idle, 1);
	assert_int_equal(s.opening, 0); /* min_idle 0: nothing to top up */
	pool_free(p);
}

static void test_a_discarded_connection_is_closed_and_its_waiter_gets_a_new_one(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "discard");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);
	struct pool_conn *c = acquire_now(f, p, "suspicious");
	int pid = pool_conn_pid(c);
	struct grab g = {0};
	pool_acquire(p, "next_in_line", grab_cb, &g);
	assert_int_equal(stats_of(p).opening, 0); /* max_size 1 is taken */

	pool_discard(c, "the holder saw something odd");
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.closed_discarded, 1);
	assert_int_equal(s.active, 0);
	assert_int_equal(s.opening, 1); /* opened for the waiter */
	assert_true(run_until(f->base, grab_done, &g, DEADLINE_MS));
	assert_non_null(g.conn);
	assert_int_not_equal(pool_conn_pid(g.conn), pid);
	pool_release(g.conn);
	pool_free(p);
}

static void test_a_connection_released_inside_a_transaction_is_closed_not_reused(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "dirty");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	struct pool *p = pool_ready(f, &cfg);
	struct pool_conn *c = acquire_now(f, p, "forgetful");
	int pid = pool_conn_pid(c);
	struct answer a = query_now(f, c, "BEGIN", 0, NULL);
	assert_int_equal(a.status, PGRES_COMMAND_OK);
	pool_release(c);
	assert_int_equal(stats_of(p).closed_discarded, 1);
	c = acquire_now(f, p, "next");
	assert_int_not_equal(pool_conn_pid(c), pid);
	assert_int_equal(PQtransactionStatus(pool_conn_pg(c)), PQTRANS_IDLE);
	pool_release(c);
	pool_free(p);
}

/* A waiter that, failed by pool_free, asks the closing pool again. */
struct closing_waiter {
	struct pool *pool;
	struct grab first;
	struct grab late;
};

static void closing_waiter_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct closing_waiter *w = arg;
	grab_cb(conn, err, &w->first);
	pool_acquire(w->pool, "late", grab_cb, &w->late);
	pool_free(w->pool); /* a no-op while the pool is closing */
}

static void test_pool_free_fails_every_waiter_with_pool_closed(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "free");
	struct pool_config cfg = config_for(conninfo, 1, 1);
	cfg.acquire_timeout_ms = 0; /* wait forever: only pool_free ends these waits */
	struct pool *p = pool_ready(f, &cfg);

	struct pool_conn *held = acquire_now(f, p, "holder");
	(void)held;
	struct closing_waiter w = {.pool = p};
	struct grab second = {0};
	pool_acquire(p, "first", closing_waiter_cb, &w);
	pool_acquire(p, "second", grab_cb, &second);
	run_for(f->base, 20);
	assert_int_equal(stats_of(p).waiting, 2);

	pool_free(p);
	assert_int_equal(w.first.calls, 1);
	assert_null(w.first.conn);
	assert_string_equal(w.first.err, "pool closed");
	assert_int_equal(w.late.calls, 1);
	assert_string_equal(w.late.err, "pool closed");
	assert_int_equal(second.calls, 1);
	assert_null(second.conn);
	assert_string_equal(second.err, "pool closed");
	run_for(f->base, 20); /* no event of the pool is left to fire */
}

/*
 * What an API keeps per request: allocated when the request asks for a connection, freed only by
 * the callback that ends it. A callback that never comes is a leak (LeakSanitizer reports it); a
 * second one is a use after free (AddressSanitizer).
 */
struct closing_tally {
	int query_calls, query_results, query_closed, requery_refused;
	int waiter_calls, waiter_served, waiter_closed;
};

struct closing_request {
	struct closing_tally *tally;
};

static void closing_query_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	struct closing_request *r = arg;
	struct closing_tally *t = r->tally;
	t->query_calls++;
	t->query_results += res != NULL;
	t->query_closed += err && !strcmp(err, "pool closed");
	/* a handler that retries on the closing pool is refused, not called again */
	t->requery_refused += pool_query(c, "SELECT 1", 0, NULL, closing_query_cb, r) < 0;
	pool_release(c);
	free(r);
}

static void closing_acquire_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct closing_request *r = arg;
	struct closing_tally *t = r->tally;
	t->waiter_calls++;
	t->waiter_closed += err && !strcmp(err, "pool closed");
	if (conn) {
		t->waiter_served++; /* a connection released while closing must not come here */
		pool_release(conn);
	}
	free(r);
}

static struct closing_request *closing_request_new(struct closing_tally *t)
{
	struct closing_request *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	r->tally = t;
	return r;
}

static void test_pool_free_calls_back_every_query_in_flight_and_every_waiter_once(void **state)
{
	struct fixture *f = *state;
	char conninfo[512];
	conninfo_for(conninfo, sizeof(conninfo), "free_inflight");
	struct pool_config cfg = config_for(conninfo, 2, 2);
	cfg.acquire_timeout_ms = 0; /* wait forever: only pool_free ends these waits */
	struct pool *p = pool_ready(f, &cfg);
	struct closing_tally t = {0};

	/* two requests hold a connection each, a statement running; three more wait in the queue */
	for (int i = 0; i < 2; i++) {
		struct pool_conn *c = acquire_now(f, p, "in_flight");
		assert_int_equal(pool_query(c, "SELECT pg_sleep(1)", 0, NULL, closing_query_cb,
		                            closing_request_new(&t)),
		                 0);
	}
	for (int i = 0; i < 3; i++)
		pool_acquire(p, "queued", closing_acquire_cb, closing_request_new(&t));
	run_for(f->base, 50); /* the statements reach the server; none can finish in 1 s */
	struct pool_stats s = stats_of(p);
	assert_int_equal(s.active, 2);
	assert_int_equal(s.waiting, 3);
	assert_int_equal(t.query_calls, 0);
	assert_int_equal(t.waiter_calls, 0);

	pool_free(p);
	assert_int_equal(t.query_calls, 2);
	assert_int_equal(t.query_results, 0);
	assert_int_equal(t.query_closed, 2);
	assert_int_equal(t.requery_refused, 2);
	assert_int_equal(t.waiter_calls, 3);
	assert_int_equal(t.waiter_closed, 3);
	assert_int_equal(t.waiter_served, 0);
	run_for(f->base, 20); /* no event of the pool is left to fire, and nothing is called twice */
	assert_int_equal(t.query_calls, 2);
	assert_int_equal(t.waiter_calls, 3);
}
int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(
	                test_a_backend_terminated_while_idle_is_replaced_without_the_caller_seeing_an_error),
	        cmocka_unit_test(
	                test_a_backend_terminated_while_active_fails_the_query_and_is_replaced_on_release),
	        cmocka_unit_test(
	                test_a_backend_terminated_while_held_is_seen_on_the_loop_without_spinning_it),
	        cmocka_unit_test(
	                test_an_idle_backend_terminated_while_the_loop_did_not_run_is_caught_on_acquire),
	        cmocka_unit_test(test_a_connection_past_max_lifetime_is_retired_on_release_and_replaced),
	        cmocka_unit_test(test_idle_connections_above_min_idle_are_closed_after_idle_timeout),
	        cmocka_unit_test(test_a_connection_released_inside_a_transaction_is_closed_not_reused),
	        cmocka_unit_test(test_a_discarded_connection_is_closed_and_its_waiter_gets_a_new_one),
	        cmocka_unit_test(test_pool_free_fails_every_waiter_with_pool_closed),
	        cmocka_unit_test(test_pool_free_calls_back_every_query_in_flight_and_every_waiter_once),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
