/*
 * pool.c — the connection pool of pool.h: asynchronous libpq driven by libevent.
 *
 * This file holds the public API (pool_new, pool_wait_ready, pool_acquire, pool_release,
 * pool_discard, pool_stats, pool_leaks, pool_free), the waiter queue and the handover of a ready
 * connection; pool_conn.c a connection's life (opening, socket events, pool_query, closing,
 * housekeeping), with how the socket events work; pool_internal.h the structures they share.
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
#include "pool_internal.h"

/* Often enough that a lifetime or idle limit is honoured within half a second; costs nothing. */
#define POOL_HOUSEKEEPING_MS 500
/*
 * 500 ms, HikariCP's aliveBypassWindowMs: a connection released less than this ago is handed
 * out without reading its socket, which saves a recvfrom (EAGAIN) on nearly every acquire of a
 * busy pool. Inside the window read_ev covers it: in a program that serves requests the loop
 * usually runs between one request's release and the next one's acquire, and reads a terminated
 * backend's FATAL then. Past it, the check costs nothing beside that long a pause, and it
 * catches a program that let the connection sit without running the loop.
 */
#define POOL_ALIVE_BYPASS_MS 500

static void pool_record_wait(struct pool *p, uint64_t waited_us)
{
	hist_record(&p->stats.wait, waited_us);
	if (waited_us > p->stats.max_wait_us)
		p->stats.max_wait_us = waited_us;
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
void conn_hand_over(struct pool_conn *c)
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

static void conn_leak_fill(const struct pool_conn *c, struct pool_leak *leak, uint64_t now)
{
	memset(leak, 0, sizeof(*leak));
	snprintf(leak->holder, sizeof(leak->holder), "%s", c->holder);
	leak->held_us = now - c->acquired_at_us;
	leak->acquired_at_us = c->acquired_at_us;
	leak->backend_pid = c->backend_pid;
}

void conn_leak_cb(evutil_socket_t fd, short what, void *arg)
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
	if (p->cfg.pipeline) {
		cb(NULL, "a pipelined pool lends no connection: use pool_pipe_query", arg);
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
		conn_query_clear(c);
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
	pipe_fail_all(p, "pool closed");
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
