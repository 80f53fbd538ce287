/*
 * cost.c — phase 2: what one page costs the server, by OFFSET and by keyset, at a few depths.
 * Each page runs under EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) and the plan is read with
 * jansson: the whole plan's shared buffers (hit + read), the rows its scan nodes produced (and
 * any their filters removed), the rows the Limit returned, the execution time. The keyset page
 * at depth P starts after the last row of page P - 1, as a client holding its cursor would.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "pg_explain.h"

#define COLUMNS "id, created_at, author, body"

static const char SQL_OFFSET[] = "SELECT " COLUMNS " FROM " SCHEMA ".feed " FEED_ORDER " LIMIT $1 OFFSET $2";
static const char SQL_KEYSET[] =
        "SELECT " COLUMNS " FROM " SCHEMA ".feed"
        " WHERE (created_at, id) < ($2::timestamptz, $3::bigint) " FEED_ORDER " LIMIT $1";
static const char SQL_FIRST[] = "SELECT " COLUMNS " FROM " SCHEMA ".feed " FEED_ORDER " LIMIT $1";
/* the cursor of page P: the last row of page P - 1 (not measured) */
static const char SQL_POSITION[] =
        "SELECT created_at, id FROM " SCHEMA ".feed " FEED_ORDER " OFFSET $1 LIMIT 1";

/* Rows the scan nodes under node produced (times their loops) plus those their filters removed. */
static int64_t scanned(json_t *node)
{
	int64_t n = 0;
	if (strstr(pg_plan_type(node), "Scan"))
		n += pg_plan_int(node, "Actual Rows", 0) * (pg_plan_int(node, "Actual Loops", 0) ?: 1) +
		     pg_plan_int(node, "Rows Removed by Filter", 0) +
		     pg_plan_int(node, "Rows Removed by Index Recheck", 0);
	size_t i;
	json_t *child;
	json_array_foreach(pg_plan_children(node), i, child) n += scanned(child);
	return n;
}

/*
 * One EXPLAIN into m: the time is the best so far (the first run may pay for a cold cache),
 * buffers and rows the most any run touched, so the repeats can only flatter the clock.
 */
static void take_plan(const struct pg_explain *e, struct pagination_measure *m, bool first)
{
	if (first || e->buffers > m->buffers) {
		m->hit = e->hit;
		m->read = e->read;
		m->buffers = e->buffers;
	}
	int64_t rows = scanned(e->plan);
	if (first || rows > m->rows_scanned)
		m->rows_scanned = rows;
	m->rows_returned = e->rows;
	pg_plan_shape(e->plan, m->plan, sizeof(m->plan));
	if (first || e->exec_ms < m->exec_ms)
		m->exec_ms = e->exec_ms;
}

/* Runs an EXPLAIN repeats times into m. */
static int explain(PGconn *conn, const struct pagination_config *cfg, const char *sql, int n,
                   const char *const *p, struct pagination_measure *m, char *err, size_t errlen)
{
	for (int i = 0; i < cfg->repeats; i++) {
		struct pg_explain e;
		int rc = pg_explain_run(conn, "ANALYZE, BUFFERS", sql, n, p, &e, err, errlen);
		if (rc == 0)
			take_plan(&e, m, i == 0);
		pg_explain_free(&e);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* One depth: page by OFFSET, then by keyset from the last row of the page before. */
static int one_depth(PGconn *conn, const struct pagination_config *cfg, int page,
                     struct pagination_measure *o, struct pagination_measure *k, char *err, size_t errlen)
{
	char limit[24], offset[24], before[24];
	int64_t skip = (int64_t)(page - 1) * cfg->page_size;
	snprintf(limit, sizeof(limit), "%d", cfg->page_size);
	snprintf(offset, sizeof(offset), "%lld", (long long)skip);
	o->page = k->page = page;
	o->offset = k->offset = skip;
	const char *po[] = {limit, offset};
	if (explain(conn, cfg, SQL_OFFSET, 2, po, o, err, errlen) < 0)
		return -1;
	if (page == 1) {
		const char *pf[] = {limit};
		return explain(conn, cfg, SQL_FIRST, 1, pf, k, err, errlen);
	}
	snprintf(before, sizeof(before), "%lld", (long long)(skip - 1));
	const char *pp[] = {before};
	PGresult *res = pg_query(conn, SQL_POSITION, 1, pp, err, errlen);
	if (!res)
		return -1;
	if (PQntuples(res) != 1) {
		snprintf(err, errlen, "no row at position %s of the feed", before);
		PQclear(res);
		return -1;
	}
	const char *pk[] = {limit, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1)};
	int rc = explain(conn, cfg, SQL_KEYSET, 3, pk, k, err, errlen);
	PQclear(res);
	return rc;
}

int pagination_phase_cost(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct pagination_config *cfg = cfgv;
	struct pagination_result *r = result;
	struct pagination_cost *c = &r->cost;
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return pag_lost(cfg, r, err, errlen);
	c->page_size = cfg->page_size;
	c->ndepths = 0;
	int ret = 0;
	for (int d = 0; d < PAGINATION_DEPTHS && !lab_interrupted(); d++) {
		pag_progress(cfg, "EXPLAIN ANALYZE, page by page", (double)d / PAGINATION_DEPTHS);
		if (one_depth(conn, cfg, cfg->pages[d], &c->offset[d], &c->keyset[d], err, errlen) < 0) {
			ret = pag_lost(cfg, r, err, errlen);
			break;
		}
		c->ndepths++;
	}
	PQfinish(conn);
	return ret;
}

/* --predict: the rows the deepest OFFSET page reads, as EXPLAIN counted them */
static double q_cost_given(const void *cfgv, int i)
{
	const struct pagination_config *cfg = cfgv;
	int page = cfg->pages[PAGINATION_DEPTHS - 1];
	return i == 0 ? page : i == 1 ? cfg->page_size : (double)(page - 1) * cfg->page_size;
}

static double q_cost_measured(const void *cfgv, const void *result)
{
	const struct pagination_config *cfg = cfgv;
	const struct pagination_cost *c = &((const struct pagination_result *)result)->cost;
	if (c->ndepths != PAGINATION_DEPTHS ||
	    c->offset[c->ndepths - 1].page != cfg->pages[PAGINATION_DEPTHS - 1])
		return NAN;
	return (double)c->offset[c->ndepths - 1].rows_scanned;
}

const struct lab_question pag_q_cost = {
        .text = "Page {} of the feed in pages of {} rows, by LIMIT and OFFSET {}: how many rows does "
                "PostgreSQL read to return it?",
        .given = q_cost_given,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "rows",
        .within_pct = 1,
        .measured = q_cost_measured,
        .why = "OFFSET n reads the n rows it skips, then the page: OFFSET + LIMIT, page after page "
               "deeper; keyset seeks to its cursor and reads the page alone, at any depth"};
