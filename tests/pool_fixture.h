/*
 * pool_fixture.h — what test_pool.c and test_pool_health.c share: the fixture (a blocking admin
 * connection that terminates pooled backends and counts them in pg_stat_activity, and the event
 * base the pools run on), the loop driver run_until, and one-line helpers to build a pool,
 * acquire, query, and terminate a backend.
 *
 * The event loop is driven by run_until: EVLOOP_ONCE until a condition holds or a deadline
 * passes, never an unbounded wait. Times are only checked against generous lower bounds.
 * Header-only, as tests/upstream.h: each test file uses its own subset of the helpers.
 *
 * Include it after defining POOL_TEST, the test program's name for its messages.
 */
#ifndef LAB_TESTS_POOL_FIXTURE_H
#define LAB_TESTS_POOL_FIXTURE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hist.h"
#include "pg.h"
#include "pool.h"

#ifndef POOL_TEST
#error "define POOL_TEST (the test program's name) before including pool_fixture.h"
#endif

#define POOL_FIXTURE_FN static __attribute__((unused))

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

POOL_FIXTURE_FN int group_setup(void **state)
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
		        POOL_TEST ": cannot connect to PostgreSQL at %s\n  server said: %s\n"
		                  "  start it:    scripts/labenv up   (or set LAB_PG_URL)\n",
		        url, err);
		free(f);
		return -1;
	}
	f->base = event_base_new();
	if (!f->base) {
		fprintf(stderr, POOL_TEST ": event_base_new failed\n");
		PQfinish(f->admin);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

POOL_FIXTURE_FN int group_teardown(void **state)
{
	struct fixture *f = *state;
	event_base_free(f->base);
	PQfinish(f->admin);
	free(f);
	return 0;
}

POOL_FIXTURE_FN void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Runs the loop until done(arg) or deadline_ms pass. Returns whether done held. */
POOL_FIXTURE_FN bool run_until(struct event_base *base, bool (*done)(void *), void *arg, int deadline_ms)
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

POOL_FIXTURE_FN void run_for(struct event_base *base, int ms)
{
	run_until(base, NULL, NULL, ms);
}

/* The pool's connections carry application_name, so pg_stat_activity can count them. */
POOL_FIXTURE_FN void conninfo_for(char *out, size_t outlen, const char *test)
{
	const char *url = pg_url_default();
	if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13))
		snprintf(out, outlen, "%s%sapplication_name=test_pool_%d_%s", url,
		         strchr(url, '?') ? "&" : "?", (int)getpid(), test);
	else
		snprintf(out, outlen, "%s application_name=test_pool_%d_%s", url, (int)getpid(), test);
}

POOL_FIXTURE_FN struct pool_config config_for(const char *conninfo, int min_idle, int max_size)
{
	struct pool_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.conninfo = conninfo;
	cfg.min_idle = min_idle;
	cfg.max_size = max_size;
	cfg.acquire_timeout_ms = DEADLINE_MS; /* nothing in a test waits forever */
	return cfg;
}

POOL_FIXTURE_FN struct pool *pool_ready(struct fixture *f, const struct pool_config *cfg)
{
	char err[POOL_ERRLEN] = "";
	struct pool *p = pool_new(f->base, cfg, err, sizeof(err));
	if (!p)
		fail_msg("pool_new: %s", err);
	if (pool_wait_ready(p, DEADLINE_MS, err, sizeof(err)) != 0)
		fail_msg("pool_wait_ready: %s", err);
	return p;
}

POOL_FIXTURE_FN struct pool_stats stats_of(const struct pool *p)
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

POOL_FIXTURE_FN void grab_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct grab *g = arg;
	g->conn = conn;
	g->calls++;
	g->at_us = hist_now_us();
	snprintf(g->err, sizeof(g->err), "%s", err ? err : "");
}

POOL_FIXTURE_FN bool grab_done(void *arg)
{
	return ((struct grab *)arg)->calls > 0;
}

POOL_FIXTURE_FN struct pool_conn *acquire_now(struct fixture *f, struct pool *p, const char *holder)
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

POOL_FIXTURE_FN void answer_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
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

POOL_FIXTURE_FN bool answer_done(void *arg)
{
	return ((struct answer *)arg)->calls > 0;
}

POOL_FIXTURE_FN struct answer query_now(struct fixture *f, struct pool_conn *c, const char *sql, int nparams,
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

POOL_FIXTURE_FN int64_t query_int(struct fixture *f, struct pool_conn *c, const char *sql)
{
	struct answer a = query_now(f, c, sql, 0, NULL);
	if (!a.has_result || a.status != PGRES_TUPLES_OK)
		fail_msg("%s failed: %s", sql, a.err);
	return a.value;
}

/* From the separate blocking connection; returns once the backend is gone. */
POOL_FIXTURE_FN void terminate_backend(struct fixture *f, int pid)
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

POOL_FIXTURE_FN int64_t backends_named(struct fixture *f, const char *conninfo)
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

#endif
