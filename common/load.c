/*
 * load.c — the closed-loop load generator on libevent's evhttp client.
 *
 * Closed loop: each client has at most one request in flight and sends the next one from the
 * callback of the last, so the offered load is set by the server's answers (as with wrk), and
 * a slow server shows as fewer requests per second, not as an ever longer queue.
 *
 * evhttp owns every request handed to evhttp_make_request and frees it after its callback;
 * this file never frees a request itself.
 */
#include "load.h"
#include "loop.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* About four progress lines a second: smooth on a terminal, negligible next to the requests. */
#define LOAD_PROGRESS_US         250000
#define LOAD_DEFAULT_TIMEOUT_MS  10000
#define LOAD_DEFAULT_INTERVAL_MS 1000

struct load_state;

/*
 * One client: one keep-alive connection and at most one request in flight on it.
 *
 * conn is NULL until the first send and again after a failed request: a connection that
 * was refused, reset or timed out is thrown away and a new one made on the next send, as a
 * real client would, so one bad moment does not end the client's part of the run.
 */
struct load_client {
	struct load_state *st;
	int id;
	struct evhttp_connection *conn;
	struct event *kick_ev;     /* sends the next request from a fresh loop turn: after an error, or think_ms */
	struct event *deadline_ev; /* the request in flight has had timeout_ms: it fails */
	uint64_t seq;              /* of the request in flight */
	uint64_t sent_us;
	int failed;     /* the last request got no response: replace conn before sending */
	int error_seen; /* evhttp reported last_error for the request in flight */
	enum evhttp_request_error last_error;
};

struct load_state {
	const struct load_config *cfg;
	struct load_result *res;
	struct event_base *base;
	struct load_client *clients;
	struct event *stop_ev;     /* duration_ms elapsed: send no more */
	struct event *progress_ev; /* progress_cb, every LOAD_PROGRESS_US */
	const char *host;
	char host_header[300];
	enum evhttp_cmd_type method;
	struct timeval timeout;
	struct timeval think; /* cfg->think_ms */
	uint64_t timeout_us;
	uint64_t interval_us;
	int stopping; /* no request is sent once this is set */
	int active;   /* clients that have not retired; the loop ends when this reaches 0 */
	uint64_t start_us;
	uint64_t last_us; /* the last answer (or failure) seen */
	char *err;
	size_t errlen;
	int broken; /* the event machinery failed: load_run returns -1 */
};

static void load_send(struct load_client *c);

static void load_retire(struct load_client *c)
{
	struct load_state *st = c->st;
	if (--st->active == 0)
		event_base_loopbreak(st->base);
}

static void load_break(struct load_state *st, const char *what)
{
	if (!st->broken)
		snprintf(st->err, st->errlen, "load: %s", what);
	st->broken = 1;
	event_base_loopbreak(st->base);
}

static void load_count_series(struct load_state *st, uint64_t now)
{
	struct load_result *res = st->res;
	uint64_t idx = (now - st->start_us) / st->interval_us;
	if (idx >= LOAD_MAX_SERIES)
		return; /* a run longer than the series keeps its totals, not its chart */
	res->series[idx]++;
	if ((int)idx + 1 > res->series_len)
		res->series_len = (int)idx + 1;
}

/* The client's next request after tv (from the loop); a client that cannot be scheduled retires
 * and ends the run. */
static void load_kick(struct load_client *c, const struct timeval *tv)
{
	if (evtimer_add(c->kick_ev, tv) != 0) {
		load_retire(c);
		load_break(c->st, "cannot schedule the next request");
	}
}

/*
 * The request in flight got no response (refused, reset, timed out, never sent): counted,
 * told to response_cb, and the next one sent from a fresh loop turn on a new connection.
 */
static void load_fail(struct load_client *c, uint64_t now, int timed_out)
{
	struct load_state *st = c->st;
	const struct load_config *cfg = st->cfg;
	const struct timeval now_tv = {0, 0};

	st->res->errors++;
	if (timed_out)
		st->res->timeouts++;
	st->last_us = now;
	if (cfg->response_cb)
		cfg->response_cb(NULL, c->id, c->seq, now - c->sent_us, cfg->arg);
	c->failed = 1;
	load_kick(c, cfg->think_ms > 0 ? &st->think : &now_tv);
}

/*
 * The request outlived its deadline: timeout_ms from its send, whatever still trickles in (an
 * inactivity timeout would wait forever on a server that sends a byte now and then).
 */
static void load_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct load_client *c = arg;
	/* evhttp frees the request in flight with its connection, without calling back */
	evhttp_connection_free(c->conn);
	c->conn = NULL;
	load_fail(c, hist_now_us(), 1);
}

static void load_error_cb(enum evhttp_request_error error, void *arg)
{
	struct load_client *c = arg;
	c->error_seen = 1;
	c->last_error = error;
}

/*
 * Every request ends here once: req is NULL after a failure evhttp reported through
 * load_error_cb, or has response code 0 when the connection was never made (refused).
 */
static void load_response_cb(struct evhttp_request *req, void *arg)
{
	struct load_client *c = arg;
	struct load_state *st = c->st;
	struct load_result *res = st->res;
	const struct load_config *cfg = st->cfg;
	uint64_t now = hist_now_us();
	uint64_t latency = now - c->sent_us;
	int code = req ? evhttp_request_get_response_code(req) : 0;

	evtimer_del(c->deadline_ev);
	st->last_us = now;
	if (code == 0) {
		/* the connection is in the middle of failing: load_fail replaces it from a fresh turn */
		load_fail(c, now,
		          (c->error_seen && c->last_error == EVREQ_HTTP_TIMEOUT) ||
		                  (!c->error_seen && latency >= st->timeout_us));
		return;
	}

	res->completed++;
	hist_record(&res->latency, latency);
	if (code >= 200 && code < 300) {
		res->status_2xx++;
		hist_record(&res->latency_2xx, latency);
	} else if (code >= 400 && code < 500) {
		res->status_4xx++;
	} else if (code >= 500 && code < 600) {
		res->status_5xx++;
		if (code == 503)
			res->status_503++;
	} else {
		res->status_other++;
	}
	load_count_series(st, now);
	if (cfg->response_cb)
		cfg->response_cb(req, c->id, c->seq, latency, cfg->arg);
	if (cfg->think_ms > 0 && !st->stopping) {
		load_kick(c, &st->think);
		return;
	}
	load_send(c);
}

static void load_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	load_send(arg);
}

static int load_connect(struct load_client *c)
{
	struct load_state *st = c->st;

	c->conn = evhttp_connection_base_new(st->base, NULL, st->host, (ev_uint16_t)st->cfg->port);
	if (!c->conn)
		return -1;
	/* a failed request is the measurement: evhttp must not quietly retry it */
	evhttp_connection_set_retries(c->conn, 0);
	evhttp_connection_set_timeout_tv(c->conn, &st->timeout);
	/* a server that answers (413) and closes before reading the whole body is still heard */
	evhttp_connection_set_flags(c->conn, EVHTTP_CON_READ_ON_WRITE_ERROR);
	return 0;
}

/* Sends c's next request, or retires c when the run is over. */
static void load_send(struct load_client *c)
{
	struct load_state *st = c->st;
	const struct load_config *cfg = st->cfg;
	struct load_result *res = st->res;

	if (cfg->max_requests && res->sent >= cfg->max_requests)
		st->stopping = 1;
	if (st->stopping || st->broken) {
		load_retire(c);
		return;
	}
	if (c->failed && c->conn) {
		evhttp_connection_free(c->conn);
		c->conn = NULL;
	}
	c->failed = 0;
	if (!c->conn && load_connect(c) != 0) {
		load_retire(c);
		load_break(st, "evhttp_connection_base_new failed");
		return;
	}
	struct evhttp_request *req = evhttp_request_new(load_response_cb, c);
	if (!req) {
		load_retire(c);
		load_break(st, "evhttp_request_new failed");
		return;
	}
	evhttp_request_set_error_cb(req, load_error_cb);
	struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
	evhttp_add_header(headers, "Host", st->host_header);

	struct load_request r = {.method = st->method, .body = NULL, .body_len = 0};
	snprintf(r.path, sizeof(r.path), "%s", cfg->path);
	uint64_t seq = res->sent++;
	if (cfg->request_cb)
		cfg->request_cb(&r, req, c->id, seq, cfg->arg);
	if (r.body) {
		evbuffer_add(evhttp_request_get_output_buffer(req), r.body, r.body_len);
		/* evhttp adds Content-Length itself for POST and PUT only */
		if (!evhttp_find_header(headers, "Content-Length")) {
			char len[32];
			snprintf(len, sizeof(len), "%zu", r.body_len);
			evhttp_add_header(headers, "Content-Length", len);
		}
	}

	c->seq = seq;
	c->error_seen = 0;
	c->sent_us = hist_now_us();
	if (seq == 0)
		st->start_us = c->sent_us;
	if (evtimer_add(c->deadline_ev, &st->timeout) != 0) {
		evhttp_request_free(req);
		load_retire(c);
		load_break(st, "cannot arm the request's deadline");
		return;
	}
	/* the callback may run before this returns (a refused connect): c is ready for it */
	if (evhttp_make_request(c->conn, req, r.method, r.path) != 0) {
		/* evhttp did not take the request (no memory, no socket): it never got an answer */
		evtimer_del(c->deadline_ev);
		load_fail(c, hist_now_us(), 0);
	}
}

static void load_stop_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct load_state *st = arg;
	st->stopping = 1; /* clients retire as their last answers come in */
}

static void load_progress_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct load_state *st = arg;
	struct load_progress p = {
	        .completed = st->res->completed,
	        .errors = st->res->errors,
	        .elapsed_s = (double)(hist_now_us() - st->start_us) / 1e6,
	};
	p.rps = p.elapsed_s > 0 ? (double)p.completed / p.elapsed_s : 0;
	st->cfg->progress_cb(&p, st->cfg->arg);
}

static int load_check_config(const struct load_config *cfg, char *err, size_t errlen)
{
	if (cfg->clients < 1) {
		snprintf(err, errlen, "load: clients must be at least 1, got %d", cfg->clients);
		return -1;
	}
	if (cfg->port < 1 || cfg->port > 65535) {
		snprintf(err, errlen, "load: port must be in 1..65535, got %d", cfg->port);
		return -1;
	}
	if (!cfg->path || cfg->path[0] != '/' || strlen(cfg->path) >= LOAD_PATH_LEN) {
		snprintf(err, errlen, "load: path must start with / and be shorter than %d bytes",
		         LOAD_PATH_LEN);
		return -1;
	}
	if (cfg->duration_ms < 0 || cfg->timeout_ms < 0 || cfg->series_interval_ms < 0 || cfg->think_ms < 0) {
		snprintf(err, errlen,
		         "load: duration_ms, timeout_ms, series_interval_ms and think_ms cannot be negative");
		return -1;
	}
	if (cfg->duration_ms == 0 && cfg->max_requests == 0) {
		snprintf(err, errlen, "load: set duration_ms or max_requests, or the run never ends");
		return -1;
	}
	return 0;
}

/* The base, the clients and their timers, the duration and progress timers; -1 and st->err. */
static int load_prepare(struct load_state *st)
{
	const struct load_config *cfg = st->cfg;
	st->base = event_base_new();
	if (!st->base) {
		snprintf(st->err, st->errlen, "load: event_base_new failed");
		return -1;
	}
	st->clients = calloc((size_t)cfg->clients, sizeof(*st->clients));
	if (!st->clients) {
		snprintf(st->err, st->errlen, "load: out of memory for %d clients", cfg->clients);
		return -1;
	}
	for (int i = 0; i < cfg->clients; i++) {
		struct load_client *c = &st->clients[i];
		c->st = st;
		c->id = i;
		c->kick_ev = evtimer_new(st->base, load_kick_cb, c);
		c->deadline_ev = evtimer_new(st->base, load_deadline_cb, c);
		if (!c->kick_ev || !c->deadline_ev) {
			snprintf(st->err, st->errlen, "load: evtimer_new failed");
			return -1;
		}
	}
	if (cfg->duration_ms > 0) {
		struct timeval tv = {cfg->duration_ms / 1000, (cfg->duration_ms % 1000) * 1000};
		st->stop_ev = evtimer_new(st->base, load_stop_cb, st);
		if (!st->stop_ev || evtimer_add(st->stop_ev, &tv) != 0) {
			snprintf(st->err, st->errlen, "load: cannot arm the duration timer");
			return -1;
		}
	}
	if (cfg->progress_cb) {
		struct timeval tv = {0, LOAD_PROGRESS_US};
		st->progress_ev = event_new(st->base, -1, EV_PERSIST, load_progress_cb, st);
		if (!st->progress_ev || event_add(st->progress_ev, &tv) != 0) {
			snprintf(st->err, st->errlen, "load: cannot arm the progress timer");
			return -1;
		}
	}
	return 0;
}

/* Rates and the series' length, from the first send to the last answer. */
static void load_totals(const struct load_state *st, struct load_result *res)
{
	if (res->sent == 0 || st->last_us <= st->start_us)
		return;
	res->elapsed_s = (double)(st->last_us - st->start_us) / 1e6;
	res->rps = (double)res->completed / res->elapsed_s;
	res->rps_2xx = (double)res->status_2xx / res->elapsed_s;
	/* intervals at the end with failures only still belong to the run */
	uint64_t last_idx = (st->last_us - st->start_us) / st->interval_us;
	if (last_idx >= LOAD_MAX_SERIES)
		last_idx = LOAD_MAX_SERIES - 1;
	if ((int)last_idx + 1 > res->series_len)
		res->series_len = (int)last_idx + 1;
}

static void load_release(struct load_state *st)
{
	for (int i = 0; st->clients && i < st->cfg->clients; i++) {
		struct load_client *c = &st->clients[i];
		if (c->conn)
			evhttp_connection_free(c->conn);
		if (c->kick_ev)
			event_free(c->kick_ev);
		if (c->deadline_ev)
			event_free(c->deadline_ev);
	}
	free(st->clients);
	if (st->stop_ev)
		event_free(st->stop_ev);
	if (st->progress_ev)
		event_free(st->progress_ev);
	if (st->base)
		event_base_free(st->base);
}

int load_run(const struct load_config *cfg, struct load_result *res, char *err, size_t errlen)
{
	struct load_state st = {.cfg = cfg, .res = res, .err = err, .errlen = errlen};
	int ret = -1;

	memset(res, 0, sizeof(*res));
	hist_init(&res->latency);
	hist_init(&res->latency_2xx);
	if (load_check_config(cfg, err, errlen) != 0)
		return -1;
	loop_sigpipe_ignore();

	st.host = cfg->host ? cfg->host : "127.0.0.1";
	snprintf(st.host_header, sizeof(st.host_header), "%s:%d", st.host, cfg->port);
	st.method = cfg->method ? cfg->method : EVHTTP_REQ_GET;
	int timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : LOAD_DEFAULT_TIMEOUT_MS;
	st.timeout.tv_sec = timeout_ms / 1000;
	st.timeout.tv_usec = (timeout_ms % 1000) * 1000;
	st.timeout_us = (uint64_t)timeout_ms * 1000;
	st.think.tv_sec = cfg->think_ms / 1000;
	st.think.tv_usec = (cfg->think_ms % 1000) * 1000;
	res->series_interval_ms =
	        cfg->series_interval_ms ? cfg->series_interval_ms : LOAD_DEFAULT_INTERVAL_MS;
	st.interval_us = (uint64_t)res->series_interval_ms * 1000;

	if (load_prepare(&st) == 0) {
		st.active = cfg->clients;
		for (int i = 0; i < cfg->clients; i++)
			load_send(&st.clients[i]);
		/* the loop has no other way out than every client retiring (or a broken machinery) */
		if (st.active > 0 && event_base_dispatch(st.base) < 0)
			load_break(&st, "event_base_dispatch failed");
		if (!st.broken) {
			load_totals(&st, res);
			ret = 0;
		}
	}
	load_release(&st);
	return ret;
}
