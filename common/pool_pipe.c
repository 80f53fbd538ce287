/*
 * pool_pipe.c — a pipelined pool's statements (pool.h: cfg.pipeline, pool_pipe_query). Each of
 * the pool's connections stays idle in pool.c's sense (never lent) and is in libpq's pipeline
 * mode from the moment it opens; its statements in flight wait in a FIFO on the connection
 * (pipe_head .. pipe_tail), as libpq's own queue of commands does, and its results are matched
 * to them in that order.
 *
 * One statement on the wire: [Parse, on its first use on this connection] Bind Execute Sync.
 * Its results, read from the persistent read event (pool_conn.c's conn_read_cb): [the prepare's
 * COMMAND_OK, NULL] the execute's result, NULL, then PGRES_PIPELINE_SYNC, which ends the
 * statement: the head item goes to its caller. A prepare that fails aborts only its own
 * statement (the execute comes back PGRES_PIPELINE_ABORTED) and the caller gets the prepare's
 * error, as pool_query_prepared's does; the statement is forgotten, so the next use prepares it.
 *
 * The connection lost (end of file, a FATAL, a send or flush that fails): every statement in
 * flight on it is taken off, the connection is closed and replaced (pool_replace), and then the
 * callers hear of it, res NULL. Callbacks always run last, from a list of their own, so a
 * callback may call any pool function (pool_free too) without pulling the connection from
 * under this code.
 *
 * libpq 15's PQpipelineSync flushes what is buffered, so each statement costs one send; what the
 * pipeline saves is the round trip per statement per connection: the server reads and answers
 * several callers' statements per wake-up on a few connections instead of one each on many.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

/* Callbacks still to run: filled while the connection is read, run when nothing else is left. */
struct pipe_done {
	struct pool_pipe_item *head;
	struct pool_pipe_item *tail;
};

static struct pool_pipe_item *pipe_pop(struct pool_conn *c)
{
	struct pool_pipe_item *it = c->pipe_head;
	c->pipe_head = it->next;
	if (!c->pipe_head)
		c->pipe_tail = NULL;
	c->pipe_count--;
	it->next = NULL;
	return it;
}

static void done_push(struct pipe_done *d, struct pool_pipe_item *it)
{
	if (d->tail)
		d->tail->next = it;
	else
		d->head = it;
	d->tail = it;
}

/* Runs the callbacks, in order: the last thing the caller does. */
static void done_run(struct pipe_done *d, const char *err)
{
	struct pool_pipe_item *it = d->head;
	while (it) {
		struct pool_pipe_item *next = it->next;
		if (it->res)
			it->cb(NULL, it->res, NULL, it->arg);
		else
			it->cb(NULL, NULL, err ? err : "the statement returned no result", it->arg);
		PQclear(it->res);
		free(it);
		it = next;
	}
}

/* Takes every statement in flight off c, each with no result: its connection is gone. */
static void pipe_take_all(struct pool_conn *c, struct pipe_done *d)
{
	while (c->pipe_head) {
		struct pool_pipe_item *it = pipe_pop(c);
		PQclear(it->res);
		it->res = NULL;
		done_push(d, it);
	}
}

/*
 * c is lost (or could not send): its statements in flight fail, it is closed and replaced, then
 * the callers hear of it: first those in answered (their results in hand), then the lost.
 */
static void pipe_close(struct pool_conn *c, struct pipe_done *answered, const char *what)
{
	struct pipe_done lost = {0};
	char why[POOL_ERRLEN];
	conn_why(c, what, why, sizeof(why));
	pipe_take_all(c, &lost);
	conn_close_broken(c, what);
	done_run(answered, NULL);
	done_run(&lost, why);
}

void pipe_lost(struct pool_conn *c, const char *what)
{
	struct pipe_done none = {0};
	pipe_close(c, &none, what);
}

/*
 * One result of the head statement: the prepare's (counted; on failure, kept for the caller and
 * the statement forgotten), an execute's (kept unless an error is kept already), or an abort
 * that follows a failed prepare (dropped). The first error is what the caller gets.
 */
static void pipe_result(struct pool_conn *c, struct pool_pipe_item *it, PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);
	if (it->preparing) {
		it->preparing = false;
		if (st == PGRES_COMMAND_OK) {
			c->pool->stats.prepared++;
			PQclear(res);
			return;
		}
		c->pool->stats.prepare_errors++;
		stmt_forget(c, it->stmt);
	} else if (st == PGRES_FATAL_ERROR && stmt_sqlstate_is(res, "26000")) {
		stmt_forget(c, it->stmt); /* deallocated behind the pool's back */
	}
	bool kept_error = it->res && PQresultStatus(it->res) == PGRES_FATAL_ERROR;
	if (st == PGRES_PIPELINE_ABORTED || kept_error) {
		PQclear(res);
		return;
	}
	if (st == PGRES_FATAL_ERROR)
		pool_set_error(c->pool, PQresultErrorMessage(res));
	PQclear(it->res);
	it->res = res;
}

/*
 * The read event of a pipelined connection (and its write event while output is left): flushes,
 * reads, and hands each statement whose Sync came back to its caller. A connection found dead,
 * with statements in flight or not, goes to pipe_lost.
 */
void pipe_read(struct pool_conn *c)
{
	PGconn *pg = c->pg;
	struct pipe_done d = {0};
	bool dead = !PQconsumeInput(pg) || PQstatus(pg) != CONNECTION_OK;
	if (!dead && c->pipe_flushing) {
		int r = PQflush(pg);
		dead = r < 0;
		c->pipe_flushing = r > 0;
		if (r == 0)
			conn_unwatch(c);
	}
	int nulls = 0; /* two NULLs in a row: libpq has nothing more to say now */
	while (!dead && c->pipe_head && !PQisBusy(pg) && nulls < 2) {
		PGresult *res = PQgetResult(pg);
		if (!res) {
			nulls++;
			continue;
		}
		nulls = 0;
		if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
			PQclear(res);
			done_push(&d, pipe_pop(c));
			continue;
		}
		pipe_result(c, c->pipe_head, res);
	}
	if (!c->pipe_head)
		conn_drop_notifies(c); /* parses a FATAL sent between statements into server_fatal */
	if (dead || c->server_fatal[0] || PQstatus(pg) != CONNECTION_OK) {
		pipe_close(c, &d, "pipelined connection closed by the server");
		return;
	}
	done_run(&d, NULL);
}

/* pool_free's step: every statement in flight, on every connection, fails with err. */
void pipe_fail_all(struct pool *p, const char *err)
{
	struct pipe_done d = {0};
	for (struct pool_conn *c = p->idle.head; c; c = c->next)
		pipe_take_all(c, &d);
	done_run(&d, err);
}

/* The connection with the fewest statements in flight, of those open and not broken. */
static struct pool_conn *pipe_pick(struct pool *p)
{
	struct pool_conn *best = NULL;
	for (struct pool_conn *c = p->idle.head; c; c = c->next)
		if (!c->broken && !c->server_fatal[0] && (!best || c->pipe_count < best->pipe_count))
			best = c;
	return best;
}

/* [Parse] Bind Execute Sync, pushed out. false when libpq could not (the connection is bad). */
static bool pipe_send(struct pool_conn *c, const struct pool_stmt *s, const char *const *params, bool prepare)
{
	PGconn *pg = c->pg;
	if (prepare && (!PQsendPrepare(pg, s->name, s->sql, s->nparams, NULL) || stmt_remember(c, s) < 0))
		return false;
	if (!PQsendQueryPrepared(pg, s->name, s->nparams, params, NULL, NULL, 0) || !PQpipelineSync(pg))
		return false;
	int r = PQflush(pg); /* PQpipelineSync flushed: nothing left, no system call, as a rule */
	if (r > 0 && !c->pipe_flushing) {
		c->pipe_flushing = true;
		return conn_watch(c, EV_WRITE) == 0;
	}
	return r >= 0;
}

int pool_pipe_query(struct pool *p, const struct pool_stmt *s, const char *const *params, pool_query_cb cb,
                    void *arg)
{
	if (!p || !cb || !p->cfg.pipeline || p->closing || !s || !s->name || !s->name[0] || !s->sql ||
	    s->nparams < 0 || (s->nparams && !params))
		return -1;
	struct pool_conn *c = pipe_pick(p);
	int known = c ? stmt_find(c, s) : -1;
	struct pool_pipe_item *it = known >= 0 ? calloc(1, sizeof(*it)) : NULL;
	if (!it)
		return -1;
	it->stmt = s;
	it->cb = cb;
	it->arg = arg;
	it->preparing = !known;
	if (c->pipe_tail)
		c->pipe_tail->next = it;
	else
		c->pipe_head = it;
	c->pipe_tail = it;
	if (++c->pipe_count > p->stats.pipe_depth_max)
		p->stats.pipe_depth_max = c->pipe_count;
	p->stats.pipelined++;
	if (!pipe_send(c, s, params, !known)) {
		/* the pipeline is cut mid-statement: the connection goes, on the loop, with its callers */
		pg_message_line(c->query_err, sizeof(c->query_err), PQerrorMessage(c->pg));
		conn_mark_broken(c);
		event_active(c->query_fail_ev, EV_TIMEOUT, 1);
	}
	return 0;
}
