/*
 * indexing_plan.c — lab-indexing's instruments: a session with one process per plan, the facts of
 * EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) read with jansson, a plan forced with the planner's
 * enable_* settings, and the sizes the server keeps (see indexing_internal.h).
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "indexing_internal.h"
#include "pg.h"
#include "pg_explain.h"

PGconn *ix_connect(const struct indexing_config *cfg, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return NULL;
	/* one process per plan: a parallel worker's share of two busy cores is noise, and JIT's
	 * compile time is not the plan's */
	if (pg_exec(conn, "SET max_parallel_workers_per_gather = 0; SET jit = off", err, errlen) < 0) {
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

void ix_progress(const struct indexing_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done, cfg->progress_arg);
}

bool indexing_plan_uses_index(const struct indexing_plan *p)
{
	return !strcmp(p->node, "Index Scan") || !strcmp(p->node, "Index Only Scan") ||
	       !strcmp(p->node, "Bitmap Heap Scan");
}

/* Depth first: the first scan node (a Bitmap Index Scan is its heap scan's part) and index name. */
static void plan_walk(json_t *node, struct indexing_plan *p)
{
	const char *type = pg_plan_type(node);
	const char *index = json_string_value(json_object_get(node, "Index Name"));
	if (!p->node[0] && strstr(type, "Scan") && strcmp(type, "Bitmap Index Scan") != 0) {
		snprintf(p->node, sizeof(p->node), "%s", type);
		p->heap_fetches = pg_plan_int(node, "Heap Fetches", -1);
		p->scan_rows = pg_plan_int(node, "Actual Rows", 0);
	}
	if (index && !p->index[0])
		snprintf(p->index, sizeof(p->index), "%s", index);
	size_t i;
	json_t *child;
	json_array_foreach(pg_plan_children(node), i, child) plan_walk(child, p);
}

/* The facts of one EXPLAIN, as the lab reads them. */
static void take_plan(const struct pg_explain *e, struct indexing_plan *p)
{
	memset(p, 0, sizeof(*p));
	p->heap_fetches = -1;
	p->buffers = e->buffers;
	p->rows = e->rows;
	p->wal_bytes = e->wal_bytes;
	p->exec_us = e->exec_ms * 1000.0;
	plan_walk(e->plan, p);
}

int ix_explain(PGconn *conn, const char *sql, int repeats, bool wal, struct indexing_plan *p, char *err,
               size_t errlen)
{
	double best = 0;
	for (int i = 0; i < (repeats < 1 ? 1 : repeats); i++) {
		struct pg_explain e;
		int rc = pg_explain_run(
		        conn, wal ? "ANALYZE, BUFFERS, WAL, TIMING OFF" : "ANALYZE, BUFFERS, TIMING OFF", sql,
		        0, NULL, &e, err, errlen);
		if (rc == 0)
			take_plan(&e, p);
		pg_explain_free(&e);
		if (rc < 0)
			return -1;
		if (i == 0 || p->exec_us < best)
			best = p->exec_us;
	}
	p->exec_us = best;
	return 0;
}

const char *indexing_force_node(enum indexing_force f)
{
	static const char *const named[IX_FORCES] = {[IX_FORCE_SEQ] = "Seq Scan",
	                                             [IX_FORCE_INDEX] = "Index Scan",
	                                             [IX_FORCE_BITMAP] = "Bitmap Heap Scan"};
	return f > IX_PLANNER && f < IX_FORCES ? named[f] : "";
}

int ix_force(PGconn *conn, enum indexing_force f, char *err, size_t errlen)
{
	/* each plan forced by turning the other two off: the planner still costs the one left */
	static const char *const sets[IX_FORCES] = {
	        [IX_PLANNER] = "RESET enable_seqscan; RESET enable_indexscan; RESET enable_bitmapscan",
	        [IX_FORCE_SEQ] = "SET enable_seqscan = on; SET enable_indexscan = off; "
	                         "SET enable_bitmapscan = off",
	        [IX_FORCE_INDEX] = "SET enable_seqscan = off; SET enable_indexscan = on; "
	                           "SET enable_bitmapscan = off",
	        [IX_FORCE_BITMAP] = "SET enable_seqscan = off; SET enable_indexscan = off; "
	                            "SET enable_bitmapscan = on",
	};
	return pg_exec(conn, sets[f], err, errlen);
}

int ix_explain_forced(PGconn *conn, const char *sql, int repeats, struct indexing_plan plans[IX_FORCES],
                      char *err, size_t errlen)
{
	/* the plans take turns, run by run: each one's best time was taken beside the others', so a
	 * neighbour's burst lands on all of them alike rather than on one plan's every run */
	for (int r = 0; r < (repeats < 1 ? 1 : repeats); r++)
		for (int f = 0; f < IX_FORCES; f++) {
			struct indexing_plan p;
			if (ix_force(conn, (enum indexing_force)f, err, errlen) < 0 ||
			    ix_explain(conn, sql, 1, false, &p, err, errlen) < 0)
				return -1;
			if (r == 0)
				plans[f] = p;
			else if (p.exec_us < plans[f].exec_us)
				plans[f].exec_us = p.exec_us;
		}
	return ix_force(conn, IX_PLANNER, err, errlen);
}

int ix_sqlf(char *buf, size_t len, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len) {
		snprintf(err, errlen, "statement longer than %zu bytes: %.60s...", len, fmt);
		return -1;
	}
	return 0;
}

int ix_int(PGconn *conn, const char *sql, int64_t *out, char *err, size_t errlen)
{
	return pg_query_int64(conn, sql, 0, NULL, out, err, errlen);
}

int ix_bytes(PGconn *conn, const char *rel, int64_t *bytes, char *err, size_t errlen)
{
	const char *params[] = {rel};
	return pg_query_int64(conn, "SELECT pg_relation_size($1::regclass)", 1, params, bytes, err, errlen);
}

int ix_pages(PGconn *conn, const char *rel, int64_t *pages, char *err, size_t errlen)
{
	const char *params[] = {rel};
	return pg_query_int64(conn,
	                      "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::bigint",
	                      1, params, pages, err, errlen);
}
