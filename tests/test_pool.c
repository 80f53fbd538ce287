/*
 * test_pool.c — the connection pool of pool.h against a real PostgreSQL, never a mock: acquire
 * and release, FIFO waiters, acquire timeouts, backends terminated while idle (seen by the
 * loop, or on acquire when the loop did not run), in a query and held between statements, leak
 * reports, max lifetime, idle timeout, the max_size cap under load, bad config, an unreachable
 * server, a server that never answers, and pool_free with queries in flight and waiters queued.
 *
 * needs: postgres
 *
 * Run: ctest --test-dir build -R test_pool --output-on-failure (LAB_PG_URL picks the server).
 * The event loop is driven by run_until: EVLOOP_ONCE until a condition holds or a deadline
 * passes, never an unbounded wait. Times are only checked against generous lower bounds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hist.h"
#include "pg.h"
#include "pool.h"

/* Long enough for any local connect or query; only reached when something is wrong. */
#define DEADLINE_MS 5000
/*
 * libevent times its timers with CLOCK_MONOTONIC_COARSE (a few ms of resolution), so a 50 ms
 * timer may look up to one tick early on the precise clock: lower bounds allow 10 ms.
 */
#define TIMER_SLACK_US 10000

struct fixture {
	PGconn *admin; /* blocking: terminates pooled backends, counts them in pg_stat_activity */
	struct event_base *base;
};

static int group_setup(void **state)
{
	char err[256];
	char url[256];
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	f->admin = pg_connect(pg_url_default(), err, sizeof(err));
	if (!f->admin) {
		pg_url_redact(pg_url_default(), url, sizeof(url));
		fprintf(stderr,
		        "test_pool: cannot connect to PostgreSQL at %s\n  server said: %s\n"
		        "  start it:    scripts/labenv up   (or set LAB_PG_URL)\n",
		        url, err);
		free(f);
		return -1;
	}
	f->base = event_base_new();
	if (!f->base) {
		fprintf(stderr, "test_pool: event_base_new failed\n");
		PQfinish(f->admin);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int group_teardown(void **state)
{
	struct fixture *f = *state;
	event_base_free(f->base);
	PQfinish(f->admin);
	free(f);
	return 0;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Runs the loop until done(arg) or deadline_ms pass. Returns whether done held. */
static bool run_until(struct event_base *base, bool (*done)(void *), void *arg, int deadline_ms)
{
	uint64_t end = hist_now_us() + (uint64_t)deadline_ms * 1000u;
	struct event *tick = evtimer_new(base, tick_cb, NULL);
	assert_non_null(tick);
	bool ok = false;
	for (;;) {
		ok = done && done(arg);
		uint64_t now = hist_now_us();
		if (ok || now >= end)
			break;
		uint64_t left = end - now;
		if (left > 20000)
			left = 20000;
		struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)left};
		evtimer_add(tick, &tv);
		assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0);
		evtimer_del(tick);
	}
	event_free(tick);
	return ok;
}

static void run_for(struct event_base *base, int ms)
{
	run_until(base, NULL, NULL, ms);
}

/* The pool's connections carry application_name, so pg_stat_activity can count them. */
static void conninfo_for(char *out, size_t outlen, const char *test)
{
	const char *url = pg_url_default();
	if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13))
		snprintf(out, outlen, "%s%sapplication_name=test_pool_%d_%s", url,
		         strchr(url, '?') ? "&" : "?", (int)getpid(), test);
	else
		snprintf(out, outlen, "%s application_name=test_pool_%d_%s", url, (int)getpid(), test);
}

static struct pool_config config_for(const char *conninfo, int min_idle, int max_size)
{
	struct pool_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.conninfo = conninfo;
	cfg.min_idle = min_idle;
	cfg.max_size = max_size;
	cfg.acquire_timeout_ms = DEADLINE_MS; /* nothing in a test waits forever */
	return cfg;
}

static struct pool *pool_ready(struct fixture *f, const struct pool_config *cfg)
{
	char err[POOL_ERRLEN] = "";
	struct pool *p = pool_new(f->base, cfg, err, sizeof(err));
	if (!p)
		fail_msg("pool_new: %s", err);
	if (pool_wait_ready(p, DEADLINE_MS, err, sizeof(err)) != 0)
		fail_msg("pool_wait_ready: %s", err);
	return p;
}

static struct pool_stats stats_of(const struct pool *p)
{
	static struct pool_stats s; /* about 8 KiB: off the stack */
	pool_stats(p, &s);
	return s;
}

/* One acquire's outcome. */
struct grab {
	struct pool_conn *conn;
	char err[POOL_ERRLEN];
	int calls;
	uint64_t at_us;
};

static void grab_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct grab *g = arg;
	g->conn = conn;
	g->calls++;
	g->at_us = hist_now_us();
	snprintf(g->err, sizeof(g->err), "%s", err ? err : "");
}

static bool grab_done(void *arg)
{
	return ((struct grab *)arg)->calls > 0;
}

static struct pool_conn *acquire_now(struct fixture *f, struct pool *p, const char *holder)
{
	struct grab g = {0};
	pool_acquire(p, holder, grab_cb, &g);
	if (!run_until(f->base, grab_done, &g, DEADLINE_MS))
		fail_msg("acquire for %s was not served", holder);
	assert_int_equal(g.calls, 1);
	if (!g.conn)
		fail_msg("acquire for %s failed: %s", holder, g.err);
	return g.conn;
}

/* One pool_query's outcome. */
struct answer {
	int calls;
	bool has_result;
	ExecStatusType status;
	int64_t value;
	char err[POOL_ERRLEN];
};

static void answer_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct answer *a = arg;
	a->calls++;
	a->has_result = res != NULL;
	if (!res) {
		snprintf(a->err, sizeof(a->err), "%s", err ? err : "(no error)");
		return;
	}
	a->status = PQresultStatus(res);
	if (a->status == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
		a->value = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	else
		snprintf(a->err, sizeof(a->err), "%s", PQresultErrorMessage(res));
}

static bool answer_done(void *arg)
{
	return ((struct answer *)arg)->calls > 0;
}

static struct answer query_now(struct fixture *f, struct pool_conn *c, const char *sql, int nparams,
                               const char *const *params)
{
	struct answer a;
	memset(&a, 0, sizeof(a));
	assert_int_equal(pool_query(c, sql, nparams, params, answer_cb, &a), 0);
	assert_int_equal(a.calls, 0); /* never called before pool_query returns */
	if (!run_until(f->base, answer_done, &a, DEADLINE_MS))
		fail_msg("no answer to %s", sql);
	assert_int_equal(a.calls, 1);
	return a;
}

static int64_t query_int(struct fixture *f, struct pool_conn *c, const char *sql)
{
	struct answer a = query_now(f, c, sql, 0, NULL);
	if (!a.has_result || a.status != PGRES_TUPLES_OK)
		fail_msg("%s failed: %s", sql, a.err);
	return a.value;
}

/* From the separate blocking connection; returns once the backend is gone. */
static void terminate_backend(struct fixture *f, int pid)
{
	char err[256];
	char pid_text[16];
	snprintf(pid_text, sizeof(pid_text), "%d", pid);
	const char *params[] = {pid_text};
	int64_t terminated = 0;
	if (pg_query_int64(f->admin, "SELECT pg_terminate_backend($1::int)::int", 1, params, &terminated, err,
	                   sizeof(err)) < 0)
		fail_msg("pg_terminate_backend: %s", err);
	assert_int_equal(terminated, 1);
	int64_t alive = 1;
	for (int i = 0; i < DEADLINE_MS / 10 && alive; i++) {
		if (pg_query_int64(f->admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", 1,
		                   params, &alive, err, sizeof(err)) < 0)
			fail_msg("pg_stat_activity: %s", err);
		if (alive)
			usleep(10000);
	}
	assert_int_equal(alive, 0);
}

static int64_t backends_named(struct fixture *f, const char *conninfo)
{
	char err[256];
	const char *app = strstr(conninfo, "application_name=") + strlen("application_name=");
	const char *params[] = {app};
	int64_t n = -1;
	if (pg_query_int64(f->admin, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", 1,
	                   params, &n, err, sizeof(err)) < 0)
		fail_msg("pg_stat_activity: %s", err);
	return n;
}

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
	        cmocka_unit_test(test_acquire_and_release_count_in_stats_and_reuse_the_same_backend),
	        cmocka_unit_test(test_waiters_are_served_in_order_of_arrival),
	        cmocka_unit_test(test_a_waiter_times_out_with_an_error_and_leaves_the_pool_whole),
	        cmocka_unit_test(
	                test_a_backend_terminated_while_idle_is_replaced_without_the_caller_seeing_an_error),
	        cmocka_unit_test(
	                test_a_backend_terminated_while_active_fails_the_query_and_is_replaced_on_release),
	        cmocka_unit_test(
	                test_a_backend_terminated_while_held_is_seen_on_the_loop_without_spinning_it),
	        cmocka_unit_test(
	                test_an_idle_backend_terminated_while_the_loop_did_not_run_is_caught_on_acquire),
	        cmocka_unit_test(
	                test_a_connection_held_past_the_threshold_is_reported_once_naming_its_holder),
	        cmocka_unit_test(test_a_connection_past_max_lifetime_is_retired_on_release_and_replaced),
	        cmocka_unit_test(test_idle_connections_above_min_idle_are_closed_after_idle_timeout),
	        cmocka_unit_test(
	                test_pool_query_runs_a_parameterised_query_and_passes_sql_errors_as_they_are),
	        cmocka_unit_test(test_a_connection_released_inside_a_transaction_is_closed_not_reused),
	        cmocka_unit_test(test_pool_query_sends_a_parameter_larger_than_the_socket_buffer),
	        cmocka_unit_test(test_a_discarded_connection_is_closed_and_its_waiter_gets_a_new_one),
	        cmocka_unit_test(test_wait_ready_opens_min_idle_connections),
	        cmocka_unit_test(test_max_size_is_never_exceeded_under_20_concurrent_acquires),
	        cmocka_unit_test(test_bad_config_returns_null_with_an_error),
	        cmocka_unit_test(test_an_unreachable_server_fails_wait_ready_quickly_with_a_clear_message),
	        cmocka_unit_test(test_a_waiter_times_out_while_its_connection_is_still_opening),
	        cmocka_unit_test(test_pool_free_fails_every_waiter_with_pool_closed),
	        cmocka_unit_test(test_pool_free_calls_back_every_query_in_flight_and_every_waiter_once),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
