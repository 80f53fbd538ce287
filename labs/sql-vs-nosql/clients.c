/*
 * clients.c — lab-sql-vs-nosql's counted calls and concurrent clients. Every call to a server
 * goes through svn_pg, svn_pg_cmd, svn_redis or svn_redis_flush, which count one round trip
 * each: a round trip is what the client waited for, so a pipeline of many commands is one. The
 * clients of svn_load_run are threads, each with its own connection to each store, started
 * together at a barrier.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"
#include "rng.h"

void svn_solo(struct svn_ctx *x, struct svn_worker *w)
{
	memset(w, 0, sizeof(*w));
	w->x = x;
	w->pg = x->conn;
	w->rc = x->rc;
	hist_init(&w->lat);
}

PGresult *svn_pg(struct svn_worker *w, const char *sql, int n, const char *const *params, char *err,
                 size_t errlen)
{
	w->rt++;
	w->cmds++;
	uint64_t t0 = hist_now_us();
	PGresult *res = pg_query(w->pg, sql, n, params, err, errlen);
	w->wait_us += hist_now_us() - t0;
	return res;
}

PGresult *svn_pg_prepared(struct svn_worker *w, const char *name, int n, const char *const *params, char *err,
                          size_t errlen)
{
	w->rt++;
	w->cmds++;
	uint64_t t0 = hist_now_us();
	PGresult *res = PQexecPrepared(w->pg, name, n, params, NULL, NULL, 0);
	w->wait_us += hist_now_us() - t0;
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pg_message_line(err, errlen, res ? PQresultErrorMessage(res) : PQerrorMessage(w->pg));
		PQclear(res);
		return NULL;
	}
	return res;
}

int svn_prepare_pool(struct svn_ctx *x, char *err, size_t errlen)
{
	int n = pgset_size(x->pool), ret = 0;
	PGconn *conns[SVN_MAX_CLIENTS];
	for (int i = 0; i < n; i++)
		if (!(conns[i] = pgset_borrow(x->pool, 5000, err, errlen))) {
			n = i;
			ret = -1;
		}
	for (int i = 0; ret == 0 && i < n; i++)
		for (int k = 0; ret == 0 && k < SVN_NPREPARED; k++) {
			PGresult *res =
			        PQprepare(conns[i], SVN_PREPARED[k].name, SVN_PREPARED[k].sql, 0, NULL);
			if (PQresultStatus(res) != PGRES_COMMAND_OK) {
				pg_message_line(err, errlen,
				                res ? PQresultErrorMessage(res) : PQerrorMessage(conns[i]));
				ret = -1;
			}
			PQclear(res);
		}
	for (int i = 0; i < n; i++)
		pgset_return(x->pool, conns[i]);
	return ret;
}

int svn_pg_cmd(struct svn_worker *w, const char *sql, int n, const char *const *params, int64_t *rows,
               char *err, size_t errlen)
{
	w->rt++;
	w->cmds++;
	uint64_t t0 = hist_now_us();
	PGresult *res = PQexecParams(w->pg, sql, n, NULL, params, NULL, NULL, 0);
	w->wait_us += hist_now_us() - t0;
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pg_message_line(err, errlen, res ? PQresultErrorMessage(res) : PQerrorMessage(w->pg));
		PQclear(res);
		return -1;
	}
	if (rows)
		*rows = strtoll(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return 0;
}

/* An error reply, or one inside an array (EXEC answers each queued command, errors included). */
static const redisReply *reply_error(const redisReply *r)
{
	if (r->type == REDIS_REPLY_ERROR)
		return r;
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
		const redisReply *e = reply_error(r->element[i]);
		if (e)
			return e;
	}
	return NULL;
}

/* A reply checked: NULL (the connection failed) or an error reply, at any depth, give -1 and err. */
static int reply_ok(redisContext *c, redisReply *r, char *err, size_t errlen)
{
	if (!r) {
		redis_error_text(c, errno, err, errlen);
		return -1;
	}
	const redisReply *e = reply_error(r);
	if (e) {
		snprintf(err, errlen, "%.*s", (int)e->len, e->str);
		return -1;
	}
	return 0;
}

int svn_scan_reply(const redisReply *r, char *cursor, size_t len, const redisReply **keys, char *err,
                   size_t errlen)
{
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
	    r->element[1]->type != REDIS_REPLY_ARRAY) {
		snprintf(err, errlen, "SCAN answered something other than [cursor, keys]");
		return -1;
	}
	for (size_t i = 0; i < r->element[1]->elements; i++)
		if (r->element[1]->element[i]->type != REDIS_REPLY_STRING) {
			snprintf(err, errlen, "SCAN answered a key that is not a string");
			return -1;
		}
	snprintf(cursor, len, "%s", r->element[0]->str);
	*keys = r->element[1];
	return 0;
}

/*
 * After Ctrl-C, lab.c's guard deletes lab:sql-vs-nosql:* while the lab's threads wind down: a
 * command sent after that could write a key back and leave it behind. Nothing is sent once the
 * lab was interrupted.
 */
static bool refused(char *err, size_t errlen)
{
	if (!lab_interrupted())
		return false;
	snprintf(err, errlen, "interrupted");
	return true;
}

redisReply *svn_redis(struct svn_worker *w, char *err, size_t errlen, const char *fmt, ...)
{
	if (refused(err, errlen))
		return NULL;
	w->rt++;
	w->cmds++;
	va_list ap;
	va_start(ap, fmt);
	uint64_t t0 = hist_now_us();
	redisReply *r = redisvCommand(w->rc, fmt, ap);
	w->wait_us += hist_now_us() - t0;
	va_end(ap);
	if (reply_ok(w->rc, r, err, errlen) < 0) {
		if (r)
			freeReplyObject(r);
		return NULL;
	}
	return r;
}

int svn_redis_append(struct svn_worker *w, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = redisvAppendCommand(w->rc, fmt, ap);
	va_end(ap);
	if (rc != REDIS_OK) {
		redis_error_text(w->rc, errno, err, errlen);
		return -1;
	}
	w->pending++;
	w->cmds++;
	return 0;
}

int svn_redis_append_argv(struct svn_worker *w, int argc, const char **argv, const size_t *lens, char *err,
                          size_t errlen)
{
	if (redisAppendCommandArgv(w->rc, argc, argv, lens) != REDIS_OK) {
		redis_error_text(w->rc, errno, err, errlen);
		return -1;
	}
	w->pending++;
	w->cmds++;
	return 0;
}

int svn_redis_flush(struct svn_worker *w, redisReply **out, char *err, size_t errlen)
{
	int ret = 0, n = w->pending;
	w->pending = 0;
	if (refused(err, errlen))
		return -1; /* the appended commands stay unsent in the context's buffer */
	w->rt++;
	uint64_t t0 = hist_now_us();
	for (int i = 0; i < n; i++) {
		void *p = NULL;
		if (redisGetReply(w->rc, &p) != REDIS_OK)
			p = NULL;
		if (i == n - 1)
			w->wait_us += hist_now_us() - t0;
		redisReply *r = p;
		if (ret == 0 && reply_ok(w->rc, r, err, errlen) < 0)
			ret = -1;
		if (!r) {
			/* the connection is gone: no more replies will come */
			for (int k = 0; out && k < n; k++) {
				if (k < i)
					freeReplyObject(out[k]);
				out[k] = NULL;
			}
			return -1;
		}
		if (out)
			out[i] = r;
		else
			freeReplyObject(r);
	}
	for (int i = 0; ret < 0 && out && i < n; i++) {
		freeReplyObject(out[i]);
		out[i] = NULL;
	}
	return ret;
}

int svn_doc_decode(const char *text, size_t len, struct svn_order *o)
{
	json_error_t je;
	json_t *doc = json_loadb(text, len, 0, &je);
	json_t *items = json_object_get(doc, "items");
	if (!json_is_object(doc) || !json_is_array(items)) {
		json_decref(doc);
		return -1;
	}
	memset(o, 0, sizeof(*o));
	o->id = json_integer_value(json_object_get(doc, "id"));
	o->ts = json_integer_value(json_object_get(doc, "ts"));
	size_t i;
	json_t *it;
	json_array_foreach(items, i, it)
	{
		o->total_cents += json_integer_value(json_object_get(it, "qty")) *
		                  json_integer_value(json_object_get(it, "price_cents"));
		o->items++;
	}
	json_decref(doc);
	return 0;
}

int svn_rows_decode(const PGresult *res, struct svn_order *o, int max)
{
	int n = 0;
	for (int r = 0; r < PQntuples(res); r++) {
		int64_t id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
		if (n == 0 || o[n - 1].id != id) {
			if (n == max)
				break;
			memset(&o[n], 0, sizeof(o[n]));
			o[n].id = id;
			o[n].ts = strtoll(PQgetvalue(res, r, 1), NULL, 10);
			n++;
		}
		o[n - 1].total_cents +=
		        strtoll(PQgetvalue(res, r, 2), NULL, 10) * strtoll(PQgetvalue(res, r, 3), NULL, 10);
		o[n - 1].items++;
	}
	return n;
}

void svn_note_lost(struct svn_ctx *x, const struct svn_worker *w)
{
	/* clients that fail together note it together: the first one names the server */
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	const char *gone = NULL;
	if (w && w->pg && PQstatus(w->pg) == CONNECTION_BAD)
		gone = "PostgreSQL";
	else if (w && w->rc && w->rc->err)
		gone = "Redis";
	pthread_mutex_lock(&mu);
	if (gone && !x->lost[0])
		snprintf(x->lost, sizeof(x->lost), "%s", gone);
	pthread_mutex_unlock(&mu);
}

int64_t svn_pick_order(struct svn_worker *w)
{
	return 1 + (int64_t)(rng_next(&w->rng) % (uint64_t)w->x->cfg->orders);
}

int64_t svn_pick_customer(struct svn_worker *w)
{
	return 1 + (int64_t)(rng_next(&w->rng) % (uint64_t)w->x->cfg->customers);
}

void svn_progress(const struct sql_vs_nosql_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done < 0 ? 0 : done > 1 ? 1 : done, cfg->progress_arg);
}

/* ---- concurrent clients ---- */

void svn_gate_init(struct svn_gate *g)
{
	memset(g, 0, sizeof(*g));
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
}

void svn_gate_destroy(struct svn_gate *g)
{
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->mu);
}

void svn_gate_open(struct svn_gate *g, bool failed)
{
	pthread_mutex_lock(&g->mu);
	g->open = true;
	g->failed = failed;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

bool svn_gate_wait(struct svn_gate *g)
{
	pthread_mutex_lock(&g->mu);
	while (!g->open)
		pthread_cond_wait(&g->cv, &g->mu);
	bool failed = g->failed;
	pthread_mutex_unlock(&g->mu);
	return failed;
}

void svn_meet_init(struct svn_meet *m, int n)
{
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	m->n = n;
	m->come = 0;
	m->round = 0;
}

void svn_meet_destroy(struct svn_meet *m)
{
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cv);
}

void svn_race_pause(struct svn_worker *w, int gap_us)
{
	struct svn_meet *m = w->meet;
	if (m) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += SVN_MEET_WAIT_MS / 1000;
		until.tv_nsec += (long)(SVN_MEET_WAIT_MS % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L)
			until.tv_sec++, until.tv_nsec -= 1000000000L;
		pthread_mutex_lock(&m->mu);
		unsigned round = m->round;
		if (++m->come >= m->n) {
			m->come = 0;
			m->round++;
			pthread_cond_broadcast(&m->cv);
		}
		while (m->round == round && pthread_cond_timedwait(&m->cv, &m->mu, &until) == 0)
			;
		pthread_mutex_unlock(&m->mu);
	}
	hist_sleep_us(gap_us);
}

struct load_run {
	struct svn_ctx *x;
	const struct svn_load *l;
	struct svn_gate go;
	uint64_t deadline_us;
	pthread_mutex_t mu;
	atomic_int failed;
	char err[LAB_ERRLEN];
};

struct load_client {
	struct load_run *run;
	struct svn_worker w;
	pthread_t thread;
};

static void load_fail(struct load_run *run, const char *msg)
{
	pthread_mutex_lock(&run->mu);
	if (!run->failed)
		snprintf(run->err, sizeof(run->err), "%s", msg);
	run->failed = 1;
	pthread_mutex_unlock(&run->mu);
}

static void *load_client_cb(void *arg)
{
	struct load_client *c = arg;
	struct load_run *run = c->run;
	const struct svn_load *l = run->l;
	char err[LAB_ERRLEN] = "";
	if (svn_gate_wait(&run->go))
		return NULL;
	for (int i = 0; l->ops == 0 || i < l->ops; i++) {
		uint64_t waited = c->w.wait_us;
		if ((l->ops == 0 && hist_now_us() >= run->deadline_us) || run->failed || lab_interrupted())
			break;
		if (l->op(&c->w, l->arg, err, sizeof(err)) < 0) {
			svn_note_lost(run->x, &c->w);
			load_fail(run, err);
			break;
		}
		/* the store's latency: from the request sent to the answer in hand, decoding excluded */
		hist_record(&c->w.lat, c->w.wait_us - waited);
		c->w.ops++;
	}
	return NULL;
}

/* Gives each client its connections: a borrowed PostgreSQL one, its own Redis one. */
static int clients_prepare(struct load_run *run, struct load_client *cs, int n, char *err, size_t errlen)
{
	for (int i = 0; i < n; i++) {
		struct svn_worker *w = &cs[i].w;
		svn_solo(run->x, w);
		w->id = i;
		w->rc = run->x->rcs[i];
		w->rng = rng_stream(run->x->cfg->seed ^ run->l->salt, i);
		w->pg = pgset_borrow(run->x->pool, 5000, err, errlen);
		cs[i].run = run;
		if (!w->pg) {
			for (int k = 0; k < i; k++)
				pgset_return(run->x->pool, cs[k].w.pg);
			return -1;
		}
	}
	return 0;
}

int svn_load_run(struct svn_ctx *x, const struct svn_load *l, struct svn_reads *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	hist_init(&out->lat);
	if (l->clients < 1 || l->clients > SVN_MAX_CLIENTS) {
		snprintf(err, errlen, "clients must be 1..%d", SVN_MAX_CLIENTS);
		return -1;
	}
	struct load_run run = {.x = x, .l = l};
	struct load_client cs[SVN_MAX_CLIENTS];
	if (clients_prepare(&run, cs, l->clients, err, errlen) < 0)
		return -1;
	pthread_mutex_init(&run.mu, NULL);
	svn_gate_init(&run.go);
	int started = 0;
	for (; started < l->clients; started++)
		if (pthread_create(&cs[started].thread, NULL, load_client_cb, &cs[started]) != 0)
			break;
	if (started < l->clients)
		load_fail(&run, "cannot start a client thread");
	uint64_t t0 = hist_now_us();
	run.deadline_us = t0 + l->duration_us;
	svn_gate_open(&run.go, started < l->clients);
	for (int i = 0; i < started; i++)
		pthread_join(cs[i].thread, NULL);
	out->wall_s = (double)(hist_now_us() - t0) / 1e6;
	for (int i = 0; i < l->clients; i++) {
		pgset_return(x->pool, cs[i].w.pg);
		hist_merge(&out->lat, &cs[i].w.lat);
		out->ops += cs[i].w.ops;
		out->round_trips += cs[i].w.rt;
		out->commands += cs[i].w.cmds;
		out->orders_read += cs[i].w.orders;
		out->checksum += cs[i].w.checksum;
	}
	svn_gate_destroy(&run.go);
	pthread_mutex_destroy(&run.mu);
	if (run.failed || lab_interrupted()) {
		snprintf(err, errlen, "%s", run.failed ? run.err : "interrupted");
		return -1;
	}
	return 0;
}
