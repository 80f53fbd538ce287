/*
 * pool.c — the connection pool of pool.h: asynchronous libpq driven by libevent.
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
 *
 * Acquire does not read the socket of a connection that went idle less than
 * POOL_ALIVE_BYPASS_MS ago: read_ev has watched it since. What it cannot cover is a backend
 * terminated after the loop last polled, in a program that acquires again before the loop
 * runs; that connection fails its first statement, is marked broken and is replaced on
 * release, as one that dies while held.
 *
 * Re-entrancy: user callbacks (acquire, query, leak) may call any pool function, pool_free
 * included. So a callback is always the last thing the code that calls it does: nothing reads
 * the pool or the connection after a user callback returns. pool_wait_ready is the one place
 * that must read the pool after running callbacks (it runs the loop); pool_free called under
 * it closes everything at once and leaves only the release of the pool's memory to it.
 *
 * Closing. pool_free calls back every query in flight and every waiter before it closes a
 * connection, so a holder frees its request while the request is still alive (an API stops its
 * loop, frees its pools, and only then its HTTP server: http_app_stop). While it closes,
 * pool_release closes instead of handing over, and pool_query and pool_acquire fail at once.
 */
#include "pool.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"

/* Often enough that a lifetime or idle limit is honoured within half a second; costs nothing. */
#define POOL_HOUSEKEEPING_MS 500
/* The same default as pg_connect: a server that has not answered in 5 s is not coming. */
#define POOL_CONNECT_TIMEOUT_MS 5000
/* Shown in pg_stat_activity unless the conninfo names its own application_name. */
#define POOL_APPLICATION_NAME "backend-labs pool"
/*
 * 500 ms, HikariCP's aliveBypassWindowMs: a connection released less than this ago is handed
 * out without reading its socket, which saves a recvfrom (EAGAIN) on nearly every acquire of a
 * busy pool. Inside the window read_ev covers it: in a program that serves requests the loop
 * usually runs between one request's release and the next one's acquire, and reads a terminated
 * backend's FATAL then. Past it, the check costs nothing beside that long a pause, and it
 * catches a program that let the connection sit without running the loop.
 */
#define POOL_ALIVE_BYPASS_MS 500

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
	 * A terminated backend's FATAL reaches an idle connection as a notice: kept here as the
	 * reason it closes. Other notices go to libpq's own receiver (stderr), as without a pool.
	 */
	char server_fatal[POOL_ERRLEN];
	PQnoticeReceiver default_notice;
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

static void conn_io_cb(evutil_socket_t fd, short what, void *arg);
static void conn_read_cb(evutil_socket_t fd, short what, void *arg);
static void conn_connect_timeout_cb(evutil_socket_t fd, short what, void *arg);
static void conn_leak_cb(evutil_socket_t fd, short what, void *arg);
static void conn_query_fail_cb(evutil_socket_t fd, short what, void *arg);
static void pool_fill(struct pool *p);

static struct timeval ms_to_tv(int ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	return tv;
}

static struct pool_conn_list *pool_list_of(struct pool *p, enum pool_conn_state state)
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

static void list_remove(struct pool_conn_list *l, struct pool_conn *c)
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

static void list_push(struct pool_conn_list *l, struct pool_conn *c, bool at_head)
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

static void conn_move(struct pool_conn *c, enum pool_conn_state state, bool at_head)
{
	list_remove(pool_list_of(c->pool, c->state), c);
	c->state = state;
	list_push(pool_list_of(c->pool, state), c, at_head);
}

static int pool_total(const struct pool *p)
{
	return p->opening.count + p->idle.count + p->active.count;
}

static void pool_set_error(struct pool *p, const char *msg)
{
	pg_message_line(p->stats.last_error, sizeof(p->stats.last_error), msg);
}

static void pool_record_wait(struct pool *p, uint64_t waited_us)
{
	hist_record(&p->stats.wait, waited_us);
	if (waited_us > p->stats.max_wait_us)
		p->stats.max_wait_us = waited_us;
}

/* Waits once for what on the connection's current socket (libpq may have replaced it). */
static int conn_watch(struct pool_conn *c, short what)
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
static void conn_unwatch(struct pool_conn *c)
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
static int conn_watch_reads(struct pool_conn *c)
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
static void conn_mark_broken(struct pool_conn *c)
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
	PQclear(c->query_last);
	PQfinish(c->pg);
	free(c);
}

/* Every disconnect carries a reason: counted in *counter (when not NULL), traced on request. */
static void conn_close(struct pool_conn *c, const char *reason, uint64_t *counter)
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
static void pool_replace(struct pool *p)
{
	if (!p->closing && pool_total(p) < p->cfg.max_size)
		conn_open(p);
	pool_fill(p);
}

/*
 * Opens connections, within max_size, until idle plus opening reach min_idle and there is one
 * opening for each waiter. Stops at the first attempt that fails at once.
 */
static void pool_fill(struct pool *p)
{
	while (!p->closing && pool_total(p) < p->cfg.max_size &&
	       (p->idle.count + p->opening.count < p->cfg.min_idle || p->opening.count < p->waiting))
		if (conn_open(p) < 0)
			break;
}

/*
 * Closes c as found dead and replaces it. The reason is the server's own words when it said
 * any (a terminated backend's FATAL arrives as a notice while idle, or as a query's error),
 * else libpq's.
 */
static void conn_close_broken(struct pool_conn *c, const char *what)
{
	struct pool *p = c->pool;
	char reason[2 * POOL_ERRLEN];
	const char *said = c->server_fatal[0] ? c->server_fatal : c->query_err[0] ? c->query_err : NULL;
	char pq[POOL_ERRLEN];
	if (!said) {
		pg_message_line(pq, sizeof(pq), PQerrorMessage(c->pg));
		said = pq;
	}
	snprintf(reason, sizeof(reason), "%s: %s", what, said);
	pool_set_error(p, reason);
	conn_close(c, reason, &p->stats.closed_broken);
	pool_replace(p);
}

static void waiter_remove(struct pool *p, struct pool_waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		p->wait_head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		p->wait_tail = w->prev;
	w->prev = w->next = NULL;
	p->waiting--;
}

static void waiter_free(struct pool_waiter *w)
{
	if (w->timeout_ev)
		event_free(w->timeout_ev);
	free(w);
}

/* What an acquire gets when the connection's leak timer cannot be armed. */
#define POOL_ERR_LEAK_TIMER "cannot arm the leak detection timer"

/*
 * Lends c (idle, opening or just released) to holder, at now. read_ev stays registered. -1 when
 * the leak timer cannot be armed: a connection lent unwatched would leak unseen, so c is closed
 * instead (pool_fill opens another if a waiter or min_idle needs it) and the acquire fails.
 */
static int conn_activate(struct pool_conn *c, const char *holder, uint64_t now)
{
	struct pool *p = c->pool;
	if (p->cfg.leak_threshold_ms > 0) {
		struct timeval tv = ms_to_tv(p->cfg.leak_threshold_ms);
		if (evtimer_add(c->leak_timer, &tv) < 0) {
			pool_set_error(p, POOL_ERR_LEAK_TIMER);
			conn_close(c, POOL_ERR_LEAK_TIMER, &p->stats.closed_discarded);
			pool_fill(p);
			return -1;
		}
	}
	conn_move(c, POOL_CONN_ACTIVE, false);
	snprintf(c->holder, sizeof(c->holder), "%s", holder);
	c->acquired_at_us = now;
	p->stats.acquired++;
	return 0;
}

/* Serves waiter w with c (or fails it, see conn_activate). The callback is the last thing done. */
static void conn_give(struct pool_conn *c, struct pool_waiter *w)
{
	struct pool *p = c->pool;
	uint64_t now = hist_now_us();
	waiter_remove(p, w);
	pool_record_wait(p, now - w->enqueued_us);
	pool_acquire_cb cb = w->cb;
	void *arg = w->arg;
	char holder[POOL_HOLDER_LEN];
	snprintf(holder, sizeof(holder), "%s", w->holder);
	waiter_free(w);
	if (conn_activate(c, holder, now) < 0) {
		cb(NULL, POOL_ERR_LEAK_TIMER, arg);
		return;
	}
	cb(c, NULL, arg);
}

/*
 * A ready connection, its read_ev registered, goes to the oldest waiter, else to the head of
 * idle, where read_ev is its death watch.
 */
static void conn_hand_over(struct pool_conn *c)
{
	struct pool *p = c->pool;
	if (p->wait_head) {
		conn_give(c, p->wait_head);
		return;
	}
	conn_move(c, POOL_CONN_IDLE, true);
	c->idle_since_us = hist_now_us();
	c->holder[0] = '\0';
}

static void conn_ready(struct pool_conn *c)
{
	struct pool *p = c->pool;
	evtimer_del(c->connect_timer);
	if (PQsetnonblocking(c->pg, 1) != 0) {
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
static void conn_drop_notifies(struct pool_conn *c)
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
static int conn_idle_check(struct pool_conn *c)
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

/* The query is over: the callback gets the last result, or NULL and an error. Last thing done. */
static void query_done(struct pool_conn *c)
{
	struct pool *p = c->pool;
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
	query_done(arg);
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

static void conn_leak_fill(const struct pool_conn *c, struct pool_leak *leak, uint64_t now)
{
	memset(leak, 0, sizeof(*leak));
	snprintf(leak->holder, sizeof(leak->holder), "%s", c->holder);
	leak->held_us = now - c->acquired_at_us;
	leak->acquired_at_us = c->acquired_at_us;
	leak->backend_pid = c->backend_pid;
}

static void conn_leak_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct pool_conn *c = arg;
	struct pool *p = c->pool;
	struct pool_leak leak;
	conn_leak_fill(c, &leak, hist_now_us());
	p->stats.leaks++;
	if (p->cfg.leak_cb)
		p->cfg.leak_cb(&leak, p->cfg.leak_arg);
}

static void waiter_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct pool_waiter *w = arg;
	struct pool *p = w->pool;
	char err[POOL_ERRLEN];
	waiter_remove(p, w);
	p->stats.timeouts++;
	pool_record_wait(p, hist_now_us() - w->enqueued_us);
	snprintf(err, sizeof(err), "timed out after %d ms waiting for a connection (pool max %d)",
	         p->cfg.acquire_timeout_ms, p->cfg.max_size);
	pool_acquire_cb cb = w->cb;
	void *cb_arg = w->arg;
	waiter_free(w);
	/* a connection opening for it carries on, and goes to the next waiter or to idle */
	cb(NULL, err, cb_arg);
}

static void pool_housekeeping_cb(evutil_socket_t fd, short what, void *arg)
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

struct pool *pool_new(struct event_base *base, const struct pool_config *cfg, char *err, size_t errlen)
{
	struct pool *p = NULL;
	char *perr = NULL;
	PQconninfoOption *opts = NULL;

	if (!base || !cfg || !cfg->conninfo) {
		snprintf(err, errlen, "pool_new: base, cfg and cfg->conninfo are required");
		goto err;
	}
	if (cfg->max_size < 1) {
		snprintf(err, errlen, "pool_new: max_size must be at least 1 (got %d)", cfg->max_size);
		goto err;
	}
	if (cfg->min_idle < 0 || cfg->min_idle > cfg->max_size) {
		snprintf(err, errlen, "pool_new: min_idle must be between 0 and max_size %d (got %d)",
		         cfg->max_size, cfg->min_idle);
		goto err;
	}
	if (cfg->acquire_timeout_ms < 0 || cfg->max_lifetime_ms < 0 || cfg->idle_timeout_ms < 0 ||
	    cfg->leak_threshold_ms < 0 || cfg->connect_timeout_ms < 0) {
		snprintf(err, errlen, "pool_new: times must not be negative");
		goto err;
	}
	opts = PQconninfoParse(cfg->conninfo, &perr);
	if (!opts) {
		char msg[POOL_ERRLEN];
		pg_message_line(msg, sizeof(msg), perr ? perr : "out of memory");
		snprintf(err, errlen, "pool_new: invalid conninfo: %s", msg);
		goto err;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, errlen, "pool_new: out of memory");
		goto err;
	}
	p->base = base;
	p->cfg = *cfg;
	p->conninfo = strdup(cfg->conninfo);
	if (!p->conninfo) {
		snprintf(err, errlen, "pool_new: out of memory");
		goto err;
	}
	p->cfg.conninfo = p->conninfo;
	const char *trace = getenv("LAB_POOL_TRACE");
	p->trace = trace && *trace;
	hist_init(&p->stats.wait);
	p->housekeeping_ev = event_new(base, -1, EV_PERSIST, pool_housekeeping_cb, p);
	struct timeval tv = ms_to_tv(POOL_HOUSEKEEPING_MS);
	if (!p->housekeeping_ev || event_add(p->housekeeping_ev, &tv) < 0) {
		snprintf(err, errlen, "pool_new: cannot add the housekeeping timer");
		goto err;
	}
	pool_fill(p);
	PQconninfoFree(opts);
	return p;
err:
	if (p) {
		if (p->housekeeping_ev)
			event_free(p->housekeeping_ev);
		free(p->conninfo);
		free(p);
	}
	PQconninfoFree(opts);
	PQfreemem(perr);
	return NULL;
}

static void wait_ready_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(bool *)arg = true;
}

static void pool_destroy(struct pool *p)
{
	free(p->conninfo);
	free(p);
}

int pool_wait_ready(struct pool *p, int timeout_ms, char *err, size_t errlen)
{
	bool timed_out = false;
	int ret = -1;
	if (p->closing) {
		snprintf(err, errlen, "pool closed");
		return -1;
	}
	struct event *timer = evtimer_new(p->base, wait_ready_timeout_cb, &timed_out);
	struct timeval tv = ms_to_tv(timeout_ms > 0 ? timeout_ms : 0);
	if (!timer || evtimer_add(timer, &tv) < 0) {
		snprintf(err, errlen, "cannot add the pool_wait_ready timer");
		goto out;
	}
	p->in_wait_ready = true;
	for (;;) {
		if (p->free_deferred) {
			snprintf(err, errlen, "pool closed");
			break;
		}
		int open = p->idle.count + p->active.count;
		if (open >= p->cfg.min_idle) {
			ret = 0;
			break;
		}
		if (p->stats.connect_errors > p->connect_errors_seen) {
			snprintf(err, errlen, "%s", p->stats.last_error);
			break;
		}
		if (timed_out) {
			snprintf(err, errlen, "timed out after %d ms with %d of min_idle %d connections open",
			         timeout_ms, open, p->cfg.min_idle);
			break;
		}
		if (event_base_loop(p->base, EVLOOP_ONCE) < 0) {
			snprintf(err, errlen, "event_base_loop failed (is the base running already?)");
			break;
		}
	}
	p->in_wait_ready = false;
	p->connect_errors_seen = p->stats.connect_errors;
out:
	if (timer)
		event_free(timer);
	if (p->free_deferred)
		pool_destroy(p);
	return ret;
}

void pool_acquire(struct pool *p, const char *holder, pool_acquire_cb cb, void *arg)
{
	if (!p || !cb)
		return;
	if (!holder)
		holder = "";
	if (p->closing) {
		cb(NULL, "pool closed", arg);
		return;
	}
	uint64_t now = hist_now_us();
	while (p->idle.head) {
		struct pool_conn *c = p->idle.head;
		/*
		 * Idle past the window: a backend terminated while the loop did not run is read now,
		 * not in the holder's first statement. Within it, read_ev has been watching.
		 */
		if (now - c->idle_since_us >= (uint64_t)POOL_ALIVE_BYPASS_MS * 1000u &&
		    conn_idle_check(c) < 0)
			continue;
		pool_record_wait(p, 0);
		if (conn_activate(c, holder, now) < 0) {
			cb(NULL, POOL_ERR_LEAK_TIMER, arg);
			return;
		}
		pool_fill(p);
		cb(c, NULL, arg);
		return;
	}
	struct pool_waiter *w = calloc(1, sizeof(*w));
	if (!w) {
		cb(NULL, "out of memory", arg);
		return;
	}
	w->pool = p;
	snprintf(w->holder, sizeof(w->holder), "%s", holder);
	w->cb = cb;
	w->arg = arg;
	w->enqueued_us = now;
	if (p->cfg.acquire_timeout_ms > 0) {
		struct timeval tv = ms_to_tv(p->cfg.acquire_timeout_ms);
		w->timeout_ev = evtimer_new(p->base, waiter_timeout_cb, w);
		if (!w->timeout_ev || evtimer_add(w->timeout_ev, &tv) < 0) {
			waiter_free(w);
			cb(NULL, "cannot add the acquire timeout timer", arg);
			return;
		}
	}
	w->prev = p->wait_tail;
	if (p->wait_tail)
		p->wait_tail->next = w;
	else
		p->wait_head = w;
	p->wait_tail = w;
	p->waiting++;
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

void pool_release(struct pool_conn *c)
{
	if (!c || c->state != POOL_CONN_ACTIVE)
		return;
	struct pool *p = c->pool;
	p->stats.released++;
	evtimer_del(c->leak_timer);
	if (p->closing) {
		/* released from a callback of pool_free: closed, never handed to a waiter */
		conn_close(c, "pool closed", NULL);
		return;
	}
	if (c->broken || PQstatus(c->pg) != CONNECTION_OK || c->server_fatal[0]) {
		conn_close_broken(c, "released broken");
		return;
	}
	/* a query still running is abandoned: its callback is not called after the release */
	const char *reason = NULL;
	uint64_t *counter = &p->stats.closed_discarded;
	PGTransactionStatusType tx = PQtransactionStatus(c->pg);
	if (c->query_running || tx == PQTRANS_ACTIVE)
		reason = "released with a query running";
	else if (tx == PQTRANS_INTRANS || tx == PQTRANS_INERROR)
		reason = "released inside a transaction";
	else if (tx != PQTRANS_IDLE) {
		conn_close_broken(c, "released in an unknown transaction state");
		return;
	} else if (p->cfg.max_lifetime_ms > 0 &&
	           hist_now_us() - c->opened_at_us >= (uint64_t)p->cfg.max_lifetime_ms * 1000u) {
		reason = "max lifetime reached";
		counter = &p->stats.closed_lifetime;
	}
	if (reason) {
		conn_close(c, reason, counter);
		pool_replace(p);
		return;
	}
	/* a NOTIFY the holder left unread is not the next holder's; this may parse a FATAL */
	conn_drop_notifies(c);
	if (c->server_fatal[0]) {
		conn_close_broken(c, "released broken");
		return;
	}
	/* normally registered since the connection opened: no system call */
	if (conn_watch_reads(c) < 0) {
		conn_close_broken(c, "cannot watch the socket of a released connection");
		return;
	}
	conn_hand_over(c);
}

void pool_discard(struct pool_conn *c, const char *reason)
{
	if (!c || c->state != POOL_CONN_ACTIVE)
		return;
	struct pool *p = c->pool;
	conn_close(c, reason ? reason : "discarded", &p->stats.closed_discarded);
	pool_fill(p);
}

int pool_query(struct pool_conn *c, const char *sql, int nparams, const char *const *params, pool_query_cb cb,
               void *arg)
{
	if (!c || !sql || !cb || c->state != POOL_CONN_ACTIVE || c->query_running || c->pool->closing)
		return -1;
	c->query_running = true;
	c->query_flushing = false;
	c->query_failed = false;
	c->query_cb = cb;
	c->query_arg = arg;
	c->query_err[0] = '\0';
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
	if (!PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0)) {
		query_fail(c, PQerrorMessage(c->pg), PQstatus(c->pg) != CONNECTION_OK);
		goto fail_later;
	}
	int r = PQflush(c->pg);
	if (r < 0) {
		query_fail(c, PQerrorMessage(c->pg), true);
		goto fail_later;
	}
	c->query_flushing = r > 0;
	/* read_ev is registered already (no system call); only unsent output needs a wait */
	if (conn_watch_reads(c) < 0 || (c->query_flushing && conn_watch(c, EV_WRITE) < 0)) {
		query_fail(c, "cannot watch the socket of a running query", true);
		goto fail_later;
	}
	return 0;
fail_later:
	/* the callback runs on the loop, never before pool_query returns */
	event_active(c->query_fail_ev, EV_TIMEOUT, 1);
	return 0;
}

void pool_stats(const struct pool *p, struct pool_stats *out)
{
	*out = p->stats;
	out->active = p->active.count;
	out->idle = p->idle.count;
	out->opening = p->opening.count;
	out->waiting = p->waiting;
	out->oldest_wait_us = p->wait_head ? hist_now_us() - p->wait_head->enqueued_us : 0;
}

int pool_leaks(const struct pool *p, struct pool_leak *out, int max)
{
	if (p->cfg.leak_threshold_ms <= 0)
		return 0;
	uint64_t now = hist_now_us();
	uint64_t threshold_us = (uint64_t)p->cfg.leak_threshold_ms * 1000u;
	int n = 0;
	for (const struct pool_conn *c = p->active.head; c && n < max; c = c->next)
		if (now - c->acquired_at_us >= threshold_us)
			conn_leak_fill(c, &out[n++], now);
	return n;
}

/*
 * pool_free's first step: every query in flight gets its callback (res NULL, "pool closed"), so
 * that its holder can reply and free what it keeps. A callback may release, discard or close
 * any connection, so the search starts over from the head after each one; each callback clears
 * its query first, and pool_query fails while the pool closes, so the loop ends.
 */
static void pool_fail_queries(struct pool *p)
{
	for (;;) {
		struct pool_conn *c = p->active.head;
		while (c && !c->query_running)
			c = c->next;
		if (!c)
			return;
		pool_query_cb cb = c->query_cb;
		void *arg = c->query_arg;
		c->query_running = false;
		c->query_cb = NULL;
		c->query_arg = NULL;
		PQclear(c->query_last);
		c->query_last = NULL;
		conn_mark_broken(c); /* its statement was cut off: never reused */
		cb(c, NULL, "pool closed", arg);
	}
}

/* Then every waiter, oldest first. A callback may call pool_acquire (it fails at once). */
static void pool_fail_waiters(struct pool *p)
{
	while (p->wait_head) {
		struct pool_waiter *w = p->wait_head;
		waiter_remove(p, w);
		pool_acquire_cb cb = w->cb;
		void *arg = w->arg;
		waiter_free(w);
		cb(NULL, "pool closed", arg);
	}
}

void pool_free(struct pool *p)
{
	if (!p || p->closing)
		return;
	p->closing = true;
	event_free(p->housekeeping_ev);
	p->housekeeping_ev = NULL;
	pool_fail_queries(p);
	pool_fail_waiters(p);
	/* what is left: opening, idle, and active connections whose holders run no query */
	struct pool_conn_list *lists[] = {&p->opening, &p->idle, &p->active};
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		while (lists[i]->head)
			conn_close(lists[i]->head, "pool closed", NULL);
	if (p->in_wait_ready) {
		p->free_deferred = true;
		return;
	}
	pool_destroy(p);
}
