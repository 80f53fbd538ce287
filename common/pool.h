/*
 * pool.h — a PostgreSQL connection pool on libevent, with asynchronous libpq, so that an API
 * waiting for a connection never blocks its event loop.
 *
 * The pool lives on one event_base and is used from that base's thread only (no locks). Every
 * connection is in exactly one state, and the pool keeps one list per state, as PgBouncer does:
 *
 *   opening  PQconnectStart was called; PQconnectPoll is driven by socket events until the
 *            connection is ready (it then goes to the first waiter, else to idle) or fails
 *            (the server's message is kept in stats.last_error; a waiter is not failed by it,
 *            it keeps waiting until its own timeout or another connection frees up).
 *   idle     open and unused. Its socket is watched: PostgreSQL writes a FATAL message and
 *            closes the socket when the backend is terminated (pg_terminate_backend, a
 *            restart, idle_session_timeout), so a broken idle connection is seen at once,
 *            closed with a reason and replaced, instead of failing the next request.
 *            Idle connections are handed out most recently used first (as PgBouncer does by
 *            default), so a pool that is larger than its load keeps the rest cold.
 *   active   lent to a holder (a name such as "orders_handler", copied). A timer per
 *            connection reports a leak once when it is held past leak_threshold_ms, naming
 *            the holder, the backend pid and when it was acquired.
 *
 * Callers that find no idle connection wait in one FIFO queue, each with its own timeout
 * (acquire_timeout_ms). A waiter causes a new connection to be opened when the pool is below
 * max_size. Released connections go to the oldest waiter first. When the timeout fires, the
 * waiter's callback gets NULL and an error, and the pool is otherwise unchanged.
 *
 * Named statements (struct pool_stmt, pool_query_prepared) are prepared on a connection once, on
 * their first use there, and stay with it across holders until it closes.
 *
 * A pipelined pool (cfg.pipeline, off by default; pool_pipe.c) lends nothing: pool_pipe_query
 * puts many callers' statements, each its own transaction, in flight at once on its few
 * connections, in libpq's pipeline mode. See pool_pipe_query for what that buys and costs.
 *
 * A housekeeping timer (every 500 ms) closes idle connections past max_lifetime_ms or, above
 * min_idle, past idle_timeout_ms, and opens connections to get back to min_idle.
 *
 * Errors: functions that can fail return NULL or -1 and write one line into err (errlen bytes).
 * Every disconnect carries a reason, counted in stats.
 */
#ifndef LAB_POOL_H
#define LAB_POOL_H

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"

#define POOL_HOLDER_LEN 64
#define POOL_ERRLEN     256

struct pool;
struct pool_conn;

struct pool_leak {
	char holder[POOL_HOLDER_LEN]; /* who acquired it and has not released it */
	uint64_t held_us;             /* how long, when reported */
	uint64_t acquired_at_us;      /* hist_now_us() at acquire */
	int backend_pid;
};

struct pool_config {
	const char *conninfo;   /* libpq URI or key=value string; copied */
	int min_idle;           /* opened at start and kept open */
	int max_size;           /* cap on opening + idle + active */
	int acquire_timeout_ms; /* a waiter fails after this; 0 waits forever (node-postgres' default) */
	int max_lifetime_ms;    /* retired when released or idle past this age; 0 = never */
	int idle_timeout_ms;    /* idle connections above min_idle closed after this; 0 = never */
	int leak_threshold_ms;  /* report a connection held longer; 0 = off */
	int connect_timeout_ms; /* an opening connection fails after this; 0 = 5000 */
	/*
	 * A pipelined pool (off by default: see pool_pipe_query). Its connections are never lent:
	 * each is put in libpq's pipeline mode when it opens, and statements from many callers are
	 * in flight on it at once. pool_acquire on it fails at once.
	 */
	bool pipeline;
	/* Called once per leak, on the loop thread; may be NULL (stats.leaks still counts). */
	void (*leak_cb)(const struct pool_leak *leak, void *arg);
	void *leak_arg;
};

struct pool_stats {
	/* now, as PgBouncer's SHOW POOLS: cl_waiting ~ waiting, sv_active ~ active, sv_idle ~ idle */
	int active;
	int idle;
	int opening;
	int waiting;
	uint64_t oldest_wait_us; /* how long the first waiter has waited now (PgBouncer's maxwait) */
	/* since the pool was created */
	uint64_t acquired; /* acquires served with a connection */
	uint64_t timeouts; /* acquires that failed after acquire_timeout_ms */
	uint64_t released;
	uint64_t opened;         /* connections that became ready */
	uint64_t connect_errors; /* connection attempts that failed */
	uint64_t closed_broken;  /* found dead (idle watch or a failed query) and replaced */
	uint64_t closed_lifetime;
	uint64_t closed_idle;
	uint64_t closed_discarded;    /* pool_discard */
	uint64_t leaks;               /* leak reports */
	uint64_t prepared;            /* pool_stmt prepared on a connection (once per connection) */
	uint64_t prepare_errors;      /* prepares the server refused (the caller got the error) */
	uint64_t pipelined;           /* statements sent by pool_pipe_query */
	int pipe_depth_max;           /* most pool_pipe_query statements in flight on one connection */
	uint64_t max_wait_us;         /* longest wait of any acquire, served or timed out */
	struct hist wait;             /* wait of every acquire, served or timed out */
	char last_error[POOL_ERRLEN]; /* the last connect or query error, "" if none */
};

/*
 * Creates a pool on base and starts opening min_idle connections (asynchronously: the base
 * must run for them to open). NULL and err when the config is invalid (max_size < 1,
 * min_idle > max_size, negative times) or libpq rejects the conninfo.
 */
struct pool *pool_new(struct event_base *base, const struct pool_config *cfg, char *err, size_t errlen);

/*
 * Runs the base (from the calling thread, which must be the base's thread and the base not
 * running elsewhere) until min_idle connections are open. -1 and err (the server's own message,
 * e.g. "FATAL: remaining connection slots are reserved...") when a connection attempt fails
 * before that or timeout_ms passes.
 */
int pool_wait_ready(struct pool *p, int timeout_ms, char *err, size_t errlen);

/*
 * Called once per acquire: with a connection, or with conn NULL and err set ("timed out after
 * 100 ms waiting for a connection (pool max 5)", "pool closed", "cannot arm the leak detection
 * timer").
 */
typedef void (*pool_acquire_cb)(struct pool_conn *conn, const char *err, void *arg);

/*
 * Asks for a connection for holder (copied, for leak reports). When one is idle, cb runs before
 * pool_acquire returns; otherwise the caller joins the FIFO queue and cb runs later on the loop.
 */
void pool_acquire(struct pool *p, const char *holder, pool_acquire_cb cb, void *arg);

/* The libpq connection of an active pooled connection. Use it with pool_query, or blocking. */
PGconn *pool_conn_pg(struct pool_conn *c);

/* The backend's process id (PQbackendPID). */
int pool_conn_pid(const struct pool_conn *c);

/*
 * Gives the connection back: to the oldest waiter, else to idle; closed and replaced instead
 * when it is broken (PQstatus not OK, or a pool_query saw the connection fail), past
 * max_lifetime_ms, or still inside a transaction or a query. This function can't fail.
 */
void pool_release(struct pool_conn *c);

/* Closes the connection instead of reusing it (reason is counted as discarded). Can't fail. */
void pool_discard(struct pool_conn *c, const char *reason);

/*
 * Runs one statement asynchronously on an active connection (PQsendQueryParams, text
 * parameters, socket events on the pool's base). cb gets the final result, or res NULL and err
 * when sending failed or the connection broke (the connection is then marked broken, and
 * pool_release replaces it). res is freed when cb returns; a result with an error status is
 * passed as it is, for the caller to check. cb runs on the loop, never before pool_query
 * returns, and once: pool_free calls it with "pool closed" if the query is still running.
 * Returns -1 and calls nothing if a query is already running on c or the pool is closing.
 */
typedef void (*pool_query_cb)(struct pool_conn *c, PGresult *res, const char *err, void *arg);
int pool_query(struct pool_conn *c, const char *sql, int nparams, const char *const *params, pool_query_cb cb,
               void *arg);

/*
 * A named statement, prepared on each pooled connection once, on its first use there (and again on
 * the connection that replaces it): later uses send only Bind and Execute, and the server skips
 * parsing and planning. name must be unique in the program (a lab prefixes its own, e.g.
 * "pooling_select1"); sql takes nparams text parameters $1..$n. Define it static const: the pool
 * keeps a pointer to it for as long as a connection lives.
 */
struct pool_stmt {
	const char *name;
	const char *sql;
	int nparams;
};

/*
 * pool_query of a named statement (PQsendQueryPrepared), preparing it first (PQsendPrepare, one
 * more round trip) when this connection has not yet. params are copied when that happens, so
 * the caller's array may be a local. When the prepare fails (bad SQL), cb gets its PGresult, as
 * pool_query's caller gets a failed statement's, the connection stays usable, and the next use
 * tries to prepare it again. A statement the session lost is prepared again on its next use: a
 * DISCARD ALL or DEALLOCATE run through the pool makes the connection forget them all, and so
 * does an execute the server refused with 26000 (dropped behind the pool's back: that call gets
 * the error).
 * Same rules, callback and failures as pool_query; -1 also when s is NULL or has no name or sql,
 * or another statement of that name, with other SQL, is prepared on this connection.
 */
int pool_query_prepared(struct pool_conn *c, const struct pool_stmt *s, const char *const *params,
                        pool_query_cb cb, void *arg);

/*
 * pool_query through the simple query protocol (PQsendQuery): sql may hold several statements,
 * which the server runs in order in one implicit transaction; cb gets the last result, or the
 * first error (the statements after it do not run, those before it are rolled back), as PQexec
 * would return. No parameters: for SQL with no outside input in it, or to show why that rule
 * exists (lab-sql-injection's vulnerable handler). Same rules and failures as pool_query.
 */
int pool_query_simple(struct pool_conn *c, const char *sql, pool_query_cb cb, void *arg);

/*
 * A pipelined pool's statement (cfg.pipeline): no acquire, no holder. s runs, prepared once per
 * connection as with pool_query_prepared, on the pool's connection with the fewest statements
 * in flight, in libpq's pipeline mode: Bind and Execute (after a Parse on its first use there)
 * and a Sync of its own, so each statement is its own transaction, as if sent alone: one that
 * fails aborts no other. The server runs a connection's statements one after another; several
 * callers' statements travel together and their results come back in the order sent. What it
 * buys: fewer connections, fewer round trips and wake-ups for the same statements. What it
 * costs: a slow statement delays the ones behind it on its connection (head-of-line), and
 * nothing that needs a session (a transaction over several statements, SET, LISTEN) fits it.
 *
 * params are copied into libpq's output before this returns. cb runs on the loop, never before
 * this returns, once, with c NULL: the statement's result (an error status as it is, for the
 * caller to check), or res NULL and err when its connection was lost with it in flight (every
 * statement in flight there fails so; the connection is replaced and later statements go to
 * the others or to it) or the pool closed. Returns -1 and calls nothing when the pool is not
 * pipelined or is closing, s is invalid or its name is taken by other SQL, or no connection is
 * open now (all lost and reopening: the caller answers 503, as for an acquire timeout).
 */
int pool_pipe_query(struct pool *p, const struct pool_stmt *s, const char *const *params, pool_query_cb cb,
                    void *arg);

/* A snapshot of the counters and the wait distribution. Can't fail. */
void pool_stats(const struct pool *p, struct pool_stats *out);

/*
 * Connections held past leak_threshold_ms right now, longest first, at most max of them into
 * out. Returns how many were written.
 */
int pool_leaks(const struct pool *p, struct pool_leak *out, int max);

/*
 * Closes the pool, so that every holder and waiter hears of it and can free what it keeps for
 * its request (an API's request context):
 *   1. every query in flight gets its callback, once: res NULL, err "pool closed";
 *   2. every waiter gets its acquire callback, once, oldest first: conn NULL, "pool closed";
 *   3. every connection is closed, active ones included.
 * From those callbacks a holder may call pool_release or pool_discard (the connection is
 * closed, never handed on), pool_acquire (fails at once with "pool closed"), pool_query
 * (returns -1) or pool_free (a no-op). A holder with no query running is not called: it must
 * not use its connection after this. Statements cut off are not cancelled: the server finishes
 * them and then sees the socket closed. NULL is a no-op.
 */
void pool_free(struct pool *p);

#endif
