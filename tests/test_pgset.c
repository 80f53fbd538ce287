/*
 * test_pgset.c — a fixed set of blocking PostgreSQL connections shared by threads, against the
 * real server.
 * needs: postgres
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hist.h"
#include "pg.h"
#include "pgset.h"

static struct pgset *open_set(int n)
{
	char err[512] = "";
	struct pgset *s = pgset_open(pg_url_default(), NULL, NULL, n, err, sizeof(err));
	if (!s) {
		char shown[256];
		pg_url_redact(pg_url_default(), shown, sizeof(shown));
		fail_msg("cannot open %d connections to %s: %s (start the servers: make up)", n, shown, err);
	}
	assert_int_equal(pgset_size(s), n);
	return s;
}

static int backend_pid(PGconn *c)
{
	char err[256];
	int64_t pid = 0;
	if (pg_query_int64(c, "SELECT pg_backend_pid()", 0, NULL, &pid, err, sizeof(err)) < 0)
		fail_msg("SELECT pg_backend_pid(): %s", err);
	return (int)pid;
}

static void test_each_borrower_holds_its_own_connection_until_it_returns_it(void **state)
{
	(void)state;
	struct pgset *s = open_set(3);
	char err[256] = "";
	PGconn *c[3];
	int pid[3];
	for (int i = 0; i < 3; i++) {
		c[i] = pgset_borrow(s, 0, err, sizeof(err));
		assert_non_null(c[i]);
		pid[i] = backend_pid(c[i]);
	}
	assert_true(pid[0] != pid[1] && pid[1] != pid[2] && pid[0] != pid[2]);
	/* all three lent: a borrow that does not wait gets none, and says so */
	assert_null(pgset_borrow(s, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "all 3 lent"));
	pgset_return(s, c[1]);
	PGconn *again = pgset_borrow(s, 0, err, sizeof(err));
	assert_ptr_equal(again, c[1]);
	for (int i = 0; i < 3; i++)
		pgset_return(s, c[i]);
	pgset_close(s);
}

struct returner {
	struct pgset *s;
	PGconn *conn;
	atomic_bool returned;
};

static void *return_later_cb(void *arg)
{
	struct returner *r = arg;
	usleep(100 * 1000);
	atomic_store(&r->returned, true);
	pgset_return(r->s, r->conn);
	return NULL;
}

static void test_a_waiter_gets_the_connection_another_thread_returns(void **state)
{
	(void)state;
	struct pgset *s = open_set(1);
	char err[256] = "";
	struct returner r = {.s = s};
	r.conn = pgset_borrow(s, 0, err, sizeof(err));
	assert_non_null(r.conn);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, return_later_cb, &r), 0);
	/* a timeout far above the 100 ms the other thread holds it: the wait ends by the return */
	PGconn *c = pgset_borrow(s, 30000, err, sizeof(err));
	assert_ptr_equal(c, r.conn);
	assert_true(atomic_load(&r.returned));
	pthread_join(t, NULL);
	pgset_return(s, c);
	pgset_close(s);
}

static void test_borrow_gives_up_after_its_timeout_when_nothing_comes_back(void **state)
{
	(void)state;
	struct pgset *s = open_set(1);
	char err[256] = "";
	PGconn *held = pgset_borrow(s, 0, err, sizeof(err));
	assert_non_null(held);
	uint64_t t0 = hist_now_us();
	assert_null(pgset_borrow(s, 150, err, sizeof(err)));
	/* it waited (a busy machine only makes the wait longer, never shorter) */
	assert_true(hist_now_us() - t0 >= 150 * 1000);
	assert_string_equal(err, "no connection free within 150 ms: all 1 lent");
	pgset_return(s, held);
	pgset_close(s);
}

#define THREADS 8
#define ROUNDS  60

struct sharer {
	struct pgset *s;
	PGconn **conns; /* the set's 2 connections, as first borrowed */
	atomic_int *holders;
	atomic_int *shared; /* times a connection was found already held */
	int done;
};

static void *borrow_many_cb(void *arg)
{
	struct sharer *w = arg;
	char err[256];
	for (int i = 0; i < ROUNDS; i++) {
		PGconn *c = pgset_borrow(w->s, 30000, err, sizeof(err));
		if (!c)
			return NULL;
		int k = c == w->conns[0] ? 0 : 1;
		if (atomic_fetch_add(&w->holders[k], 1) != 0)
			atomic_fetch_add(w->shared, 1);
		PGresult *res = PQexec(c, "SELECT 1");
		bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
		PQclear(res);
		atomic_fetch_sub(&w->holders[k], 1);
		pgset_return(w->s, c);
		if (!ok)
			return NULL;
		w->done++;
	}
	return NULL;
}

static void test_threads_never_hold_the_same_connection_at_once(void **state)
{
	(void)state;
	struct pgset *s = open_set(2);
	char err[256] = "";
	PGconn *conns[2];
	conns[0] = pgset_borrow(s, 0, err, sizeof(err));
	conns[1] = pgset_borrow(s, 0, err, sizeof(err));
	assert_non_null(conns[0]);
	assert_non_null(conns[1]);
	pgset_return(s, conns[0]);
	pgset_return(s, conns[1]);
	atomic_int holders[2] = {0, 0}, shared = 0;
	struct sharer w[THREADS];
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct sharer){.s = s, .conns = conns, .holders = holders, .shared = &shared};
		assert_int_equal(pthread_create(&t[i], NULL, borrow_many_cb, &w[i]), 0);
	}
	int done = 0;
	for (int i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		done += w[i].done;
	}
	assert_int_equal(done, THREADS * ROUNDS);
	assert_int_equal(atomic_load(&shared), 0);
	pgset_close(s);
}

static void test_every_connection_carries_the_extra_keys_and_the_application_name(void **state)
{
	(void)state;
	pg_set_application_name("test_pgset:extra");
	const char *keys[] = {"options", NULL}, *vals[] = {"-c jit=off -c work_mem=1234kB", NULL};
	char err[512] = "";
	struct pgset *s = pgset_open(pg_url_default(), keys, vals, 2, err, sizeof(err));
	assert_non_null(s);
	PGconn *c[2];
	for (int i = 0; i < 2; i++) {
		c[i] = pgset_borrow(s, 0, err, sizeof(err));
		assert_non_null(c[i]);
		PGresult *r = pg_query(
		        c[i], "SELECT current_setting('work_mem'), current_setting('application_name')", 0,
		        NULL, err, sizeof(err));
		assert_non_null(r);
		assert_string_equal(PQgetvalue(r, 0, 0), "1234kB");
		assert_string_equal(PQgetvalue(r, 0, 1), "test_pgset:extra");
		PQclear(r);
	}
	pgset_return(s, c[0]);
	pgset_return(s, c[1]);
	pgset_close(s);
	pg_set_application_name(NULL);
}

static void test_an_unreachable_server_leaves_nothing_open_and_says_why(void **state)
{
	(void)state;
	char err[512] = "";
	assert_null(pgset_open("postgres://lab:secretpw@127.0.0.1:1/lab", NULL, NULL, 3, err, sizeof(err)));
	assert_non_null(strstr(err, "refused"));
	assert_null(strstr(err, "secretpw"));
	assert_null(pgset_open(pg_url_default(), NULL, NULL, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "at least one"));
}

static void test_a_connection_whose_backend_ended_comes_back_broken(void **state)
{
	(void)state;
	struct pgset *s = open_set(1);
	char err[512] = "";
	PGconn *c = pgset_borrow(s, 0, err, sizeof(err));
	assert_non_null(c);
	char pid[16];
	snprintf(pid, sizeof(pid), "%d", backend_pid(c));
	PGconn *admin = pg_connect(pg_url_default(), err, sizeof(err));
	assert_non_null(admin);
	const char *params[] = {pid};
	PGresult *r = pg_query(admin, "SELECT pg_terminate_backend($1::int)", 1, params, err, sizeof(err));
	assert_non_null(r);
	PQclear(r);
	PQfinish(admin);
	/* the set does not look behind its borrowers: the next query finds the connection gone */
	PGresult *q = NULL;
	for (int i = 0; i < 50 && PQstatus(c) == CONNECTION_OK; i++) {
		PQclear(q);
		q = PQexec(c, "SELECT 1");
		if (PQresultStatus(q) == PGRES_TUPLES_OK)
			usleep(20 * 1000); /* the backend is still on its way out */
	}
	assert_int_not_equal(PQresultStatus(q), PGRES_TUPLES_OK);
	PQclear(q);
	assert_int_equal(PQstatus(c), CONNECTION_BAD);
	pgset_return(s, c);
	PGconn *again = pgset_borrow(s, 0, err, sizeof(err));
	assert_ptr_equal(again, c);
	assert_int_equal(PQstatus(again), CONNECTION_BAD);
	pgset_return(s, again);
	pgset_close(s);
}

/* In a child: returns conn a second time; the set must abort rather than lend it twice. */
static int return_twice_in_a_child(struct pgset *s, PGconn *conn)
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (!freopen("/dev/null", "w", stderr)) /* its one line would clutter the test output */
			_exit(2);
		pgset_return(s, conn);
		_exit(0);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void test_a_connection_given_back_twice_aborts_instead_of_being_shared(void **state)
{
	(void)state;
	struct pgset *s = open_set(1);
	char err[256];
	PGconn *c = pgset_borrow(s, 1000, err, sizeof(err));
	assert_non_null(c);
	pgset_return(s, c);
	assert_int_equal(return_twice_in_a_child(s, c), SIGABRT);
	pgset_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_each_borrower_holds_its_own_connection_until_it_returns_it),
	        cmocka_unit_test(test_a_waiter_gets_the_connection_another_thread_returns),
	        cmocka_unit_test(test_borrow_gives_up_after_its_timeout_when_nothing_comes_back),
	        cmocka_unit_test(test_threads_never_hold_the_same_connection_at_once),
	        cmocka_unit_test(test_every_connection_carries_the_extra_keys_and_the_application_name),
	        cmocka_unit_test(test_an_unreachable_server_leaves_nothing_open_and_says_why),
	        cmocka_unit_test(test_a_connection_whose_backend_ended_comes_back_broken),
	        cmocka_unit_test(test_a_connection_given_back_twice_aborts_instead_of_being_shared),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
