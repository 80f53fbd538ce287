/*
 * pool_internal.h — private to pool.c and pool_conn.c: the pool's and a connection's structures,
 * the per-state list helpers, and the functions the two files call in each other.
 *
 * pool.c holds the public API (pool_new, pool_acquire, pool_release, pool_discard, pool_stats,
 * pool_leaks, pool_free), the waiter queue and the handover of a ready connection to a waiter.
 * pool_conn.c holds a connection's life: opening with PQconnectPoll, the socket events (the idle
 * death watch, a held connection's unasked bytes), pool_query and its I/O, closing with a reason,
 * and the housekeeping timer. Nothing here is part of pool.h's API.
 */
#ifndef LAB_POOL_INTERNAL_H
#define LAB_POOL_INTERNAL_H

#include <stdbool.h>

#include "pg.h"
#include "pool.h"

enum pool_conn_state {
	POOL_CONN_OPENING,
	POOL_CONN_IDLE,
	POOL_CONN_ACTIVE,
};

struct pool_conn {
	struct pool *pool;
	PGconn *pg;
	/* which of the pool's lists holds it; prev and next link it there */
	enum pool_conn_state state;
	struct pool_conn *prev;
	struct pool_conn *next;
	/*
	 * read_ev: persistent EV_READ on read_fd (the socket of backend read_pid), registered
	 * when the connection becomes ready and kept through idle and active; NULL while opening
	 * and once the connection is seen dead. io_ev: one-shot, for io_fd and io_what:
	 * PQconnectPoll while opening, EV_WRITE while a query's output is flushed; NULL until
	 * first needed.
	 */
	struct event *read_ev;
	int read_fd;
	int read_pid;
	struct event *io_ev;
	int io_fd;
	short io_what;
	/* opening: fails the attempt after connect_timeout_ms */
	struct event *connect_timer;
	/* active: reports a leak once after leak_threshold_ms */
	struct event *leak_timer;
	/* active: delivers a pool_query failure on the loop rather than inside pool_query */
	struct event *query_fail_ev;
	uint64_t opened_at_us; /* when it became ready: max_lifetime_ms counts from here */
	uint64_t idle_since_us;
	uint64_t acquired_at_us;
	char holder[POOL_HOLDER_LEN];
	int backend_pid;
	/* a query saw the connection fail: pool_release closes it instead of reusing it */
	bool broken;
	/* the running pool_query, if any: its callback, whether output is still being flushed,
	 * the last result so far, and the first error message (the server's own words) */
	bool query_running;
	bool query_flushing;
	bool query_failed;
	pool_query_cb query_cb;
	void *query_arg;
	PGresult *query_last;
	char query_err[POOL_ERRLEN];
	/*
	 * pool_query_prepared: the statement running (NULL for pool_query), whether its prepare is
	 * the step in flight, whether it was prepared again after the server lost it, and the
	 * parameters, copied when a prepare goes first (one block, freed when the query ends).
	 * stmts: the statements prepared on this connection (pointers to the callers' static ones).
	 */
	const struct pool_stmt *query_stmt;
	bool query_preparing;
	bool query_reprepared;
	char **query_params;
	const struct pool_stmt **stmts;
	int nstmts;
	int stmts_cap;
	/*
	 * A terminated backend's FATAL reaches an idle connection as a notice: kept here as the
	 * reason it closes. Other notices go to libpq's own receiver (stderr), as without a pool.
	 */
	char server_fatal[POOL_ERRLEN];
	PQnoticeReceiver default_notice;
	/* a pipelined pool's connection: its statements in flight, oldest first (pool_pipe.c) */
	struct pool_pipe_item *pipe_head;
	struct pool_pipe_item *pipe_tail;
	int pipe_count;
	bool pipe_flushing; /* output left to write: io_ev waits for writable */
};

/* One pool_pipe_query statement in flight on a connection. */
struct pool_pipe_item {
	struct pool_pipe_item *next;
	const struct pool_stmt *stmt;
	bool preparing; /* its Parse went first: the first result is the prepare's */
	PGresult *res;  /* the result the callback gets: the first error, else the last */
	pool_query_cb cb;
	void *arg;
};

struct pool_conn_list {
	struct pool_conn *head;
	struct pool_conn *tail;
	int count;
};

struct pool_waiter {
	struct pool *pool;
	struct pool_waiter *prev;
	struct pool_waiter *next;
	char holder[POOL_HOLDER_LEN];
	pool_acquire_cb cb;
	void *arg;
	uint64_t enqueued_us;
	struct event *timeout_ev; /* NULL when acquire_timeout_ms is 0 (wait forever) */
};

struct pool {
	struct event_base *base;
	struct pool_config cfg; /* cfg.conninfo points at conninfo below */
	char *conninfo;
	/*
	 * opening: PQconnectPoll in progress, each with its socket event and connect timer. They
	 * belong to no waiter: whichever is ready first serves the oldest waiter.
	 */
	struct pool_conn_list opening;
	/*
	 * idle: ready and unused, most recently used at the head (handed out first), least
	 * recently used at the tail (closed first by idle_timeout_ms). Each watched for reading.
	 */
	struct pool_conn_list idle;
	/*
	 * active: lent to a holder, in the order they were acquired (the head has been held
	 * longest, so pool_leaks reads it front to back).
	 */
	struct pool_conn_list active;
	/* waiting: acquires that found no idle connection, oldest at the head, served first */
	struct pool_waiter *wait_head;
	struct pool_waiter *wait_tail;
	int waiting;
	struct event *housekeeping_ev;
	struct pool_stats stats;
	uint64_t connect_errors_seen; /* connect_errors already reported by pool_wait_ready */
	bool trace;                   /* LAB_POOL_TRACE set: every disconnect and its reason on stderr */
	bool closing;                 /* pool_free has begun: acquires fail with "pool closed" */
	bool in_wait_ready;           /* pool_wait_ready is running the loop */
	bool free_deferred;           /* pool_free ran under pool_wait_ready, which frees the pool */
};

static inline struct timeval ms_to_tv(int ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	return tv;
}

static inline struct pool_conn_list *pool_list_of(struct pool *p, enum pool_conn_state state)
{
	switch (state) {
	case POOL_CONN_OPENING:
		return &p->opening;
	case POOL_CONN_IDLE:
		return &p->idle;
	case POOL_CONN_ACTIVE:
		break;
	}
	return &p->active;
}

static inline void list_remove(struct pool_conn_list *l, struct pool_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		l->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		l->tail = c->prev;
	c->prev = c->next = NULL;
	l->count--;
}

static inline void list_push(struct pool_conn_list *l, struct pool_conn *c, bool at_head)
{
	if (at_head) {
		c->prev = NULL;
		c->next = l->head;
		if (l->head)
			l->head->prev = c;
		else
			l->tail = c;
		l->head = c;
	} else {
		c->next = NULL;
		c->prev = l->tail;
		if (l->tail)
			l->tail->next = c;
		else
			l->head = c;
		l->tail = c;
	}
	l->count++;
}

static inline void conn_move(struct pool_conn *c, enum pool_conn_state state, bool at_head)
{
	list_remove(pool_list_of(c->pool, c->state), c);
	c->state = state;
	list_push(pool_list_of(c->pool, state), c, at_head);
}

static inline void pool_set_error(struct pool *p, const char *msg)
{
	pg_message_line(p->stats.last_error, sizeof(p->stats.last_error), msg);
}

/* pool_conn.c: a connection's life (each is commented where it is defined) */
int conn_watch_reads(struct pool_conn *c);
void conn_mark_broken(struct pool_conn *c);
void conn_close(struct pool_conn *c, const char *reason, uint64_t *counter);
/* Why c is lost, in one line: the server's own words when it said any (a terminated backend's
 * FATAL arrives as a notice while idle, or as a query's error), else libpq's, else fallback
 * (NULL: libpq's even when empty, "unknown error"). */
void conn_why(struct pool_conn *c, const char *fallback, char *out, size_t len);
void conn_close_broken(struct pool_conn *c, const char *what);
void conn_drop_notifies(struct pool_conn *c);
void conn_query_clear(struct pool_conn *c);

int conn_watch(struct pool_conn *c, short what);
void conn_unwatch(struct pool_conn *c);

/* pool_pipe.c: a pipelined pool's connections (each is commented where it is defined) */
void pipe_read(struct pool_conn *c);
void pipe_lost(struct pool_conn *c, const char *what);
void pipe_fail_all(struct pool *p, const char *err);

/* pool_stmt.c: the statements a connection has prepared (each is commented where it is defined) */
bool stmt_sqlstate_is(const PGresult *res, const char *code);
int stmt_find(const struct pool_conn *c, const struct pool_stmt *s);
int stmt_remember(struct pool_conn *c, const struct pool_stmt *s);
void stmts_after(struct pool_conn *c, const PGresult *res);
void stmt_forget(struct pool_conn *c, const struct pool_stmt *s);
char **params_copy(const char *const *params, int n);
int conn_idle_check(struct pool_conn *c);
void pool_replace(struct pool *p);
void pool_fill(struct pool *p);
void pool_housekeeping_cb(evutil_socket_t fd, short what, void *arg);

/* pool.c: the handover to a waiter or to idle, and the leak report */
void conn_hand_over(struct pool_conn *c);
void conn_leak_cb(evutil_socket_t fd, short what, void *arg);

#endif
