/*
 * pool_conn.c — a pooled connection's life, for pool.c (pool_internal.h has the structures):
 * opening with PQconnectPoll, the socket events of a ready connection (the idle death watch, the
 * bytes a held connection receives unasked), pool_query and its I/O, closing with a reason and
 * replacing, and the housekeeping timer that retires idle connections. pool.c holds the public
 * API, the waiter queue and the handover.
 *
 * Socket events. A handover must not cost a system call, so a ready connection's socket is
 * registered once, with one persistent EV_READ event (read_ev), and stays registered through
 * idle and active: acquire and release only move the connection between lists. The callback
 * reads the state to know what the bytes mean:
 *
 *   idle                  the death watch: PQconsumeInput; a FATAL from the server, or the
 *                         connection gone bad, closes it with the server's words and replaces it.
 *   active, pool_query    the query's replies (query_step).
 *   active, no query      only what the server sends unasked: a NOTIFY or a notice (left for
 *                         the holder), or a terminated backend's FATAL and end of file: the
 *                         connection is then marked broken and unwatched, and pool_query fails
 *                         at once and pool_release replaces it.
 *
 * read_ev is re-created only when the socket changes (PQsocket, or a new backend behind the
 * same number after a PQreset), and deleted as soon as the connection is seen dead, since
 * libpq has then closed the socket and its number may be reused; always before PQfinish.
 * Writing is rarer and needs no persistent event: a second, one-shot event (io_ev) waits for
 * writable while a large pool_query is flushed (PQflush returned 1), and drives PQconnectPoll
 * (readable or writable, as it asks) while opening, before read_ev exists.
 *
 * The rule this sets for a holder: use pool_query, or blocking libpq (PQexec and friends, which
 * wait on the socket themselves), not asynchronous libpq of its own: read_ev would take the
 * holder's replies into libpq's buffer, and the holder's own socket event might never fire.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"
#include "pool_internal.h"

/* The same default as pg_connect: a server that has not answered in 5 s is not coming. */
#define POOL_CONNECT_TIMEOUT_MS 5000
/* Shown in pg_stat_activity unless the conninfo names its own application_name. */
#define POOL_APPLICATION_NAME "backend-labs pool"

static void conn_io_cb(evutil_socket_t fd, short what, void *arg);
static void conn_read_cb(evutil_socket_t fd, short what, void *arg);
static void conn_connect_timeout_cb(evutil_socket_t fd, short what, void *arg);
static void conn_query_fail_cb(evutil_socket_t fd, short what, void *arg);
static void query_fail(struct pool_conn *c, const char *msg, bool broken);

static int pool_total(const struct pool *p)
{
	return p->opening.count + p->idle.count + p->active.count;
}

/* Waits once for what on the connection's current socket (libpq may have replaced it). */
int conn_watch(struct pool_conn *c, short what)
{
	int fd = PQsocket(c->pg);
	if (fd < 0)
		return -1;
	if (c->io_ev && (c->io_fd != fd || c->io_what != what)) {
		event_free(c->io_ev);
		c->io_ev = NULL;
	}
	if (!c->io_ev) {
		c->io_ev = event_new(c->pool->base, fd, what, conn_io_cb, c);
		if (!c->io_ev)
			return -1;
		c->io_fd = fd;
		c->io_what = what;
	}
	return event_add(c->io_ev, NULL);
}

/* Cancels the one-shot wait, if any (no system call when none is pending). */
void conn_unwatch(struct pool_conn *c)
{
	if (c->io_ev)
		event_del(c->io_ev);
}

/*
 * Stops watching the socket for reading: the connection is dead (libpq has closed the socket,
 * whose number may be reused) or is being freed.
 */
static void conn_unwatch_reads(struct pool_conn *c)
{
	if (c->read_ev) {
		event_free(c->read_ev);
		c->read_ev = NULL;
	}
}

/*
 * Keeps read_ev registered on the connection's current socket. On the hot path (every release,
 * every pool_query) it finds it so and returns 0 without a system call. -1 when the connection
 * has no socket or libevent fails; the connection is then not watched.
 */
int conn_watch_reads(struct pool_conn *c)
{
	int fd = PQsocket(c->pg);
	int pid = PQbackendPID(c->pg);
	if (c->read_ev && c->read_fd == fd && c->read_pid == pid)
		return 0;
	conn_unwatch_reads(c);
	if (fd < 0)
		return -1;
	c->read_ev = event_new(c->pool->base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
	if (!c->read_ev)
		return -1;
	if (event_add(c->read_ev, NULL) < 0) {
		conn_unwatch_reads(c);
		return -1;
	}
	c->read_fd = fd;
	c->read_pid = pid;
	return 0;
}

/*
 * The connection is broken: pool_release will replace it. Nothing is read from it any more, so a
 * dead socket cannot wake the loop again and again.
 */
void conn_mark_broken(struct pool_conn *c)
{
	c->broken = true;
	conn_unwatch(c);
	conn_unwatch_reads(c);
}

/* Frees c and everything it holds. Its events go before PQfinish closes the socket. */
static void conn_free(struct pool_conn *c)
{
	list_remove(pool_list_of(c->pool, c->state), c);
	conn_unwatch_reads(c);
	if (c->io_ev)
		event_free(c->io_ev);
	if (c->connect_timer)
		event_free(c->connect_timer);
	if (c->leak_timer)
		event_free(c->leak_timer);
	if (c->query_fail_ev)
		event_free(c->query_fail_ev);
	conn_query_clear(c);
	while (c->pipe_head) { /* none by now: pipe_lost and pool_free call them back first */
		struct pool_pipe_item *it = c->pipe_head;
		c->pipe_head = it->next;
		PQclear(it->res);
		free(it);
	}
	free(c->stmts);
	PQclear(c->query_last);
	PQfinish(c->pg);
	free(c);
}

/* Every disconnect carries a reason: counted in *counter (when not NULL), traced on request. */
void conn_close(struct pool_conn *c, const char *reason, uint64_t *counter)
{
	struct pool *p = c->pool;
	if (counter)
		(*counter)++;
	if (p->trace)
		fprintf(stderr, "pool: closed connection (backend pid %d, holder \"%s\"): %s\n",
		        c->backend_pid, c->holder, reason);
	conn_free(c);
}

static void conn_notice_cb(void *arg, const PGresult *res)
{
	struct pool_conn *c = arg;
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	if (severity && (!strcmp(severity, "FATAL") || !strcmp(severity, "PANIC"))) {
		pg_message_line(c->server_fatal, sizeof(c->server_fatal), PQresultErrorMessage(res));
		return;
	}
	if (c->default_notice)
		c->default_notice(NULL, res); /* libpq's default receiver ignores its argument */
}

/* A connection attempt failed: counted, its message kept; waiters are not failed by it. */
static void conn_connect_failed(struct pool_conn *c, const char *msg)
{
	struct pool *p = c->pool;
	p->stats.connect_errors++;
	pool_set_error(p, msg && *msg ? msg : "connection failed (libpq gave no message)");
	conn_close(c, p->stats.last_error, NULL);
}

/*
 * Starts opening one connection. -1 when libpq fails at once (the error is counted and kept);
 * callers then stop opening more, so a server that refuses is retried by housekeeping only.
 */
static int conn_open(struct pool *p)
{
	const char *xkeys[] = {"fallback_application_name", NULL};
	const char *xvals[] = {POOL_APPLICATION_NAME, NULL};
	const char *keys[PG_CONN_PARAMS_MAX], *vals[PG_CONN_PARAMS_MAX];
	if (pg_conn_params(p->conninfo, xkeys, xvals, keys, vals, PG_CONN_PARAMS_MAX) < 0) {
		p->stats.connect_errors++;
		pool_set_error(p, "too many connection parameters");
		return -1;
	}
	struct pool_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		p->stats.connect_errors++;
		pool_set_error(p, "out of memory");
		return -1;
	}
	c->pool = p;
	c->io_fd = -1;
	c->read_fd = -1;
	if (pg_connections_refused()) { /* the Ctrl-C guard began (pg.h) */
		p->stats.connect_errors++;
		pool_set_error(p, "the lab is ending (interrupted): no new connection");
		free(c);
		return -1;
	}
	c->pg = PQconnectStartParams(keys, vals, 1);
	if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
		p->stats.connect_errors++;
		pool_set_error(p, c->pg ? PQerrorMessage(c->pg) : "out of memory");
		PQfinish(c->pg);
		free(c);
		return -1;
	}
	c->state = POOL_CONN_OPENING;
	list_push(&p->opening, c, false);
	c->default_notice = PQsetNoticeReceiver(c->pg, conn_notice_cb, c);
	c->connect_timer = evtimer_new(p->base, conn_connect_timeout_cb, c);
	c->leak_timer = evtimer_new(p->base, conn_leak_cb, c);
	c->query_fail_ev = evtimer_new(p->base, conn_query_fail_cb, c);
	if (!c->connect_timer || !c->leak_timer || !c->query_fail_ev)
		goto err;
	int timeout_ms = p->cfg.connect_timeout_ms > 0 ? p->cfg.connect_timeout_ms : POOL_CONNECT_TIMEOUT_MS;
	struct timeval tv = ms_to_tv(timeout_ms);
	if (evtimer_add(c->connect_timer, &tv) < 0)
		goto err;
	/* libpq: behave as if PQconnectPoll last returned PGRES_POLLING_WRITING */
	if (conn_watch(c, EV_WRITE) < 0)
		goto err;
	return 0;
err:
	conn_connect_failed(c, "cannot set up events for a new connection");
	return -1;
}

/* Opens a connection for one that was closed and must be replaced, then tops up. */
void pool_replace(struct pool *p)
{
	if (!p->closing && pool_total(p) < p->cfg.max_size)
		conn_open(p);
	pool_fill(p);
}

/*
 * Opens connections, within max_size, until idle plus opening reach min_idle and there is one
 * opening for each waiter. Stops at the first attempt that fails at once.
 */
void pool_fill(struct pool *p)
{
	while (!p->closing && pool_total(p) < p->cfg.max_size &&
	       (p->idle.count + p->opening.count < p->cfg.min_idle || p->opening.count < p->waiting))
		if (conn_open(p) < 0)
			break;
}

void conn_why(struct pool_conn *c, const char *fallback, char *out, size_t len)
{
	const char *pq = PQerrorMessage(c->pg);
	if (c->server_fatal[0])
		snprintf(out, len, "%s", c->server_fatal);
	else if (c->query_err[0])
		snprintf(out, len, "%s", c->query_err);
	else
		pg_message_line(out, len, *pq || !fallback ? pq : fallback);
}

/* Closes c as found dead and replaces it, saying why (conn_why). */
void conn_close_broken(struct pool_conn *c, const char *what)
{
	struct pool *p = c->pool;
	char reason[2 * POOL_ERRLEN], said[POOL_ERRLEN];
	conn_why(c, NULL, said, sizeof(said));
	snprintf(reason, sizeof(reason), "%s: %s", what, said);
	pool_set_error(p, reason);
	conn_close(c, reason, &p->stats.closed_broken);
	pool_replace(p);
}

static void conn_ready(struct pool_conn *c)
{
	struct pool *p = c->pool;
	evtimer_del(c->connect_timer);
	if (PQsetnonblocking(c->pg, 1) != 0 || (p->cfg.pipeline && PQenterPipelineMode(c->pg) != 1)) {
		conn_connect_failed(c, PQerrorMessage(c->pg));
		return;
	}
	c->backend_pid = PQbackendPID(c->pg);
	c->opened_at_us = hist_now_us();
	/* registered once, for the rest of the connection's life */
	if (conn_watch_reads(c) < 0) {
		conn_connect_failed(c, "cannot watch the socket of a new connection");
		return;
	}
	p->stats.opened++;
	conn_hand_over(c);
}

static void conn_connect_step(struct pool_conn *c)
{
	switch (PQconnectPoll(c->pg)) {
	case PGRES_POLLING_READING:
		if (conn_watch(c, EV_READ) < 0)
			break;
		return;
	case PGRES_POLLING_WRITING:
		if (conn_watch(c, EV_WRITE) < 0)
			break;
		return;
	case PGRES_POLLING_OK:
		if (pg_connections_refused()) { /* opened while the guard began: it may not see it (pg.h) */
			conn_connect_failed(c, "the lab is ending (interrupted): no new connection");
			return;
		}
		conn_ready(c);
		return;
	case PGRES_POLLING_FAILED:
	case PGRES_POLLING_ACTIVE:
		break;
	}
	conn_connect_failed(c, PQerrorMessage(c->pg));
}

static void conn_connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct pool_conn *c = arg;
	char msg[POOL_ERRLEN];
	int timeout_ms = c->pool->cfg.connect_timeout_ms > 0 ? c->pool->cfg.connect_timeout_ms
	                                                     : POOL_CONNECT_TIMEOUT_MS;
	snprintf(msg, sizeof(msg), "timed out after %d ms connecting to the server", timeout_ms);
	conn_connect_failed(c, msg);
}

/*
 * Drops the NOTIFYs no holder will read. Parsing what libpq has buffered (in memory, no system
 * call) also hands a FATAL the server sent between statements to conn_notice_cb.
 */
void conn_drop_notifies(struct pool_conn *c)
{
	PGnotify *n;
	while ((n = PQnotifies(c->pg)) != NULL)
		PQfreemem(n);
}

/*
 * Reads whatever the server sent an idle connection. 0 when it is alive; -1 when it is dead,
 * after closing and replacing it. Dead is gone bad, or a FATAL received: the backend sends it
 * as it exits, and the end of file may not have been read yet.
 */
int conn_idle_check(struct pool_conn *c)
{
	bool alive = PQconsumeInput(c->pg) && PQstatus(c->pg) == CONNECTION_OK;
	conn_drop_notifies(c);
	if (!alive || c->server_fatal[0]) {
		conn_close_broken(c, "idle connection closed by the server");
		return -1;
	}
	return 0;
}

/*
 * Between a holder's statements the server sends only what it sends unasked: a NOTIFY or a
 * notice (parsed and left for the holder), or a terminated backend's FATAL (kept in
 * server_fatal: pool_release will replace the connection) and then end of file. Every call
 * reads something, so the socket cannot stay readable; at end of file the connection is gone
 * bad and is marked broken, which stops the watch.
 */
static void conn_active_readable(struct pool_conn *c)
{
	bool alive = PQconsumeInput(c->pg) && PQstatus(c->pg) == CONNECTION_OK;
	PQisBusy(c->pg); /* parses without taking the holder's NOTIFYs */
	if (!alive)
		conn_mark_broken(c);
}

static int query_send(struct pool_conn *c, const char *sql, int nparams, const char *const *params,
                      bool simple);

/* Frees what a pool_query_prepared keeps while it runs; its connection's statements stay. */
void conn_query_clear(struct pool_conn *c)
{
	free(c->query_params);
	c->query_params = NULL;
	c->query_stmt = NULL;
	c->query_preparing = false;
}

/*
 * The prepare of a pool_query_prepared is over: when it succeeded (or the statement was there
 * already, 42P05) the statement is remembered and executed, and true says the query goes on.
 * False when query_done must report: a failed prepare (its result goes to the caller), an
 * execute that ended, or a send that failed. An execute the server refused with 26000 (the
 * session lost its statement) makes the connection forget them all.
 */
static bool query_next_step(struct pool_conn *c)
{
	const struct pool_stmt *s = c->query_stmt;
	PGresult *res = c->query_last;
	if (!s || c->query_failed || c->broken || !res)
		return false;
	if (!c->query_preparing) {
		if (PQresultStatus(res) == PGRES_FATAL_ERROR && stmt_sqlstate_is(res, "26000"))
			c->nstmts = 0;
		return false;
	}
	bool there = PQresultStatus(res) == PGRES_FATAL_ERROR && stmt_sqlstate_is(res, "42P05");
	if (PQresultStatus(res) != PGRES_COMMAND_OK && !there) {
		c->pool->stats.prepare_errors++;
		return false;
	}
	PQclear(res);
	c->query_last = NULL;
	if (stmt_remember(c, s) < 0) {
		query_fail(c, "out of memory", false);
		return false;
	}
	if (!there)
		c->pool->stats.prepared++;
	c->query_preparing = false;
	c->query_err[0] = '\0';
	return query_send(c, NULL, s->nparams, (const char *const *)c->query_params, false) == 0;
}

/* The query is over: the callback gets the last result, or NULL and an error. Last thing done. */
static void query_done(struct pool_conn *c)
{
	struct pool *p = c->pool;
	if (query_next_step(c))
		return;
	bool prepared = c->query_stmt != NULL;
	conn_query_clear(c);
	PGresult *res = c->query_last;
	pool_query_cb cb = c->query_cb;
	void *arg = c->query_arg;
	c->query_last = NULL;
	c->query_running = false;
	c->query_cb = NULL;
	c->query_arg = NULL;
	if (!c->broken && PQstatus(c->pg) != CONNECTION_OK)
		conn_mark_broken(c);
	conn_unwatch(c); /* it may end with a wait for writable still pending */
	if (!c->query_failed && !c->broken && res)
		c->query_err[0] = '\0'; /* an SQL error is not a reason to close it later */
	if (c->query_failed || c->broken || !res) {
		char err[POOL_ERRLEN];
		if (c->query_err[0])
			snprintf(err, sizeof(err), "%s", c->query_err);
		else if (res || c->broken)
			pg_message_line(err, sizeof(err), PQerrorMessage(c->pg));
		else
			snprintf(err, sizeof(err), "the statement returned no result");
		pool_set_error(p, err);
		PQclear(res);
		cb(c, NULL, err, arg);
		return;
	}
	if (PQresultStatus(res) == PGRES_FATAL_ERROR)
		pool_set_error(p, PQresultErrorMessage(res));
	else if (!prepared)
		stmts_after(c, res);
	cb(c, res, NULL, arg);
	PQclear(res);
}

static void query_fail(struct pool_conn *c, const char *msg, bool broken)
{
	c->query_failed = true;
	if (broken)
		conn_mark_broken(c);
	if (!c->query_err[0])
		pg_message_line(c->query_err, sizeof(c->query_err), msg);
}

/* Socket events of a running query: flush what is left, read, collect results until NULL. */
static void query_step(struct pool_conn *c, short what)
{
	PGconn *pg = c->pg;
	if ((what & EV_READ) && !PQconsumeInput(pg)) {
		query_fail(c, PQerrorMessage(pg), true);
		/* a dead connection returns its error results without blocking; anything else might */
		if (PQstatus(pg) == CONNECTION_OK) {
			query_done(c);
			return;
		}
	}
	if (c->query_flushing && PQstatus(pg) == CONNECTION_OK) {
		int r = PQflush(pg);
		if (r < 0) {
			query_fail(c, PQerrorMessage(pg), true);
			query_done(c);
			return;
		}
		c->query_flushing = r > 0;
		if (!c->query_flushing)
			conn_unwatch(c); /* PQconsumeInput may have flushed the rest */
	}
	for (;;) {
		if (PQstatus(pg) == CONNECTION_OK && PQisBusy(pg))
			break;
		PGresult *res = PQgetResult(pg);
		if (!res) {
			query_done(c);
			return;
		}
		ExecStatusType st = PQresultStatus(res);
		if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
			/* PQgetResult would return the COPY state forever; the connection is unusable */
			PQclear(res);
			query_fail(c, "COPY is not supported by pool_query", true);
			query_done(c);
			return;
		}
		if (st == PGRES_FATAL_ERROR && !c->query_err[0])
			pg_message_line(c->query_err, sizeof(c->query_err), PQresultErrorMessage(res));
		PQclear(c->query_last);
		c->query_last = res;
	}
	/* read_ev hears the rest of the replies; only writing needs a new wait */
	if (c->query_flushing && conn_watch(c, EV_WRITE) < 0) {
		query_fail(c, "cannot watch the socket of a running query", true);
		query_done(c);
	}
}

static void conn_query_fail_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct pool_conn *c = arg;
	if (c->pool->cfg.pipeline)
		pipe_lost(c, "sending a pipelined statement failed"); /* pool_pipe_query could not send */
	else
		query_done(c);
}

/* The one-shot event: PQconnectPoll while opening, writable for a query's output while active. */
static void conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	struct pool_conn *c = arg;
	switch (c->state) {
	case POOL_CONN_OPENING:
		conn_connect_step(c);
		break;
	case POOL_CONN_IDLE:
		if (c->pool->cfg.pipeline)
			pipe_read(c); /* a pipelined connection's output, flushed */
		break;
	case POOL_CONN_ACTIVE:
		if (c->query_running && !c->query_failed)
			query_step(c, what);
		break;
	}
}

/* The persistent read event of a ready connection: what the bytes mean depends on the state. */
static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct pool_conn *c = arg;
	switch (c->state) {
	case POOL_CONN_OPENING:
		break; /* registered only once the connection is ready */
	case POOL_CONN_IDLE:
		if (c->pool->cfg.pipeline)
			pipe_read(c); /* its statements' results, or its death */
		else
			conn_idle_check(c);
		break;
	case POOL_CONN_ACTIVE:
		if (!c->query_running)
			conn_active_readable(c);
		else if (!c->query_failed)
			query_step(c, EV_READ);
		/* else pool_query could not send: query_fail_ev reports it on this pass of the loop */
		break;
	}
}

void pool_housekeeping_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct pool *p = arg;
	uint64_t now = hist_now_us();
	uint64_t lifetime_us = (uint64_t)p->cfg.max_lifetime_ms * 1000u;
	uint64_t idle_us = (uint64_t)p->cfg.idle_timeout_ms * 1000u;
	int retired = 0;
	struct pool_conn *prev;
	for (struct pool_conn *c = p->idle.tail; c; c = prev) {
		prev = c->prev;
		if (c->pipe_count > 0)
			continue; /* statements in flight: retired once they are answered */
		if (lifetime_us && now - c->opened_at_us >= lifetime_us) {
			conn_close(c, "max lifetime reached while idle", &p->stats.closed_lifetime);
			retired++;
		} else if (idle_us && p->idle.count > p->cfg.min_idle && now - c->idle_since_us >= idle_us) {
			conn_close(c, "idle timeout", &p->stats.closed_idle);
		}
	}
	while (retired-- > 0 && !p->closing && pool_total(p) < p->cfg.max_size)
		if (conn_open(p) < 0)
			break;
	pool_fill(p);
}

PGconn *pool_conn_pg(struct pool_conn *c)
{
	return c ? c->pg : NULL;
}

int pool_conn_pid(const struct pool_conn *c)
{
	return c ? c->backend_pid : 0;
}

/*
 * Sends the query's next statement (a pool_stmt's prepare or execute, or sql), flushes, and
 * watches for the rest. 0, or -1 after query_fail: the caller has the failure reported.
 */
static int query_send(struct pool_conn *c, const char *sql, int nparams, const char *const *params,
                      bool simple)
{
	const struct pool_stmt *s = c->query_stmt;
	int sent;
	if (s && c->query_preparing)
		sent = PQsendPrepare(c->pg, s->name, s->sql, s->nparams, NULL);
	else if (s)
		sent = PQsendQueryPrepared(c->pg, s->name, s->nparams, params, NULL, NULL, 0);
	else if (simple)
		sent = PQsendQuery(c->pg, sql);
	else
		sent = PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
	if (!sent) {
		query_fail(c, PQerrorMessage(c->pg), PQstatus(c->pg) != CONNECTION_OK);
		return -1;
	}
	int r = PQflush(c->pg);
	if (r < 0) {
		query_fail(c, PQerrorMessage(c->pg), true);
		return -1;
	}
	c->query_flushing = r > 0;
	/* read_ev is registered already (no system call); only unsent output needs a wait */
	if (conn_watch_reads(c) < 0 || (c->query_flushing && conn_watch(c, EV_WRITE) < 0)) {
		query_fail(c, "cannot watch the socket of a running query", true);
		return -1;
	}
	return 0;
}

/* pool_query, pool_query_simple (PQsendQuery, no parameters) and pool_query_prepared (stmt). */
static int query_start(struct pool_conn *c, const char *sql, int nparams, const char *const *params,
                       bool simple, const struct pool_stmt *stmt, pool_query_cb cb, void *arg)
{
	if (!c || !cb || c->state != POOL_CONN_ACTIVE || c->query_running || c->pool->closing)
		return -1;
	int known = 0;
	if (stmt) {
		if (!stmt->name || !stmt->name[0] || !stmt->sql || stmt->nparams < 0 ||
		    (stmt->nparams && !params))
			return -1;
		known = stmt_find(c, stmt);
		if (known < 0)
			return -1;
		nparams = stmt->nparams;
	} else if (!sql) {
		return -1;
	}
	c->query_running = true;
	c->query_flushing = false;
	c->query_failed = false;
	c->query_cb = cb;
	c->query_arg = arg;
	c->query_err[0] = '\0';
	c->query_stmt = stmt;
	c->query_preparing = stmt && !known;
	if (c->query_preparing && nparams > 0) {
		/* the execute goes after the prepare's round trip, when the caller's array is gone */
		c->query_params = params_copy(params, nparams);
		if (!c->query_params) {
			query_fail(c, "out of memory", false);
			goto fail_later;
		}
	}
	if (c->broken || c->server_fatal[0]) {
		/* seen dying already: say why instead of trying */
		const char *why = "the connection broke in an earlier statement";
		if (c->server_fatal[0])
			why = c->server_fatal;
		else if (*PQerrorMessage(c->pg))
			why = PQerrorMessage(c->pg);
		query_fail(c, why, true);
		goto fail_later;
	}
	if (query_send(c, sql, nparams, params, simple) < 0)
		goto fail_later;
	return 0;
fail_later:
	/* the callback runs on the loop, never before pool_query returns */
	event_active(c->query_fail_ev, EV_TIMEOUT, 1);
	return 0;
}

int pool_query(struct pool_conn *c, const char *sql, int nparams, const char *const *params, pool_query_cb cb,
               void *arg)
{
	return query_start(c, sql, nparams, params, false, NULL, cb, arg);
}

int pool_query_simple(struct pool_conn *c, const char *sql, pool_query_cb cb, void *arg)
{
	return query_start(c, sql, 0, NULL, true, NULL, cb, arg);
}

int pool_query_prepared(struct pool_conn *c, const struct pool_stmt *s, const char *const *params,
                        pool_query_cb cb, void *arg)
{
	return query_start(c, NULL, 0, params, false, s, cb, arg);
}
