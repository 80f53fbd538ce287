/*
 * cost.c — phase 2: what one page costs the server, by OFFSET and by keyset, at a few depths.
 * Each page runs under EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) and the plan is read with
 * jansson: the whole plan's shared buffers (hit + read), the rows its scan nodes produced (and
 * any their filters removed), the rows the Limit returned, the execution time. The keyset page
 * at depth P starts after the last row of page P - 1, as a client holding its cursor would.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"

#define COLUMNS "id, created_at, author, body"
#define EXPLAIN "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "

static const char SQL_OFFSET[] =
        EXPLAIN "SELECT " COLUMNS " FROM " SCHEMA ".feed " FEED_ORDER " LIMIT $1 OFFSET $2";
static const char SQL_KEYSET[] =
        EXPLAIN "SELECT " COLUMNS " FROM " SCHEMA ".feed"
                " WHERE (created_at, id) < ($2::timestamptz, $3::bigint) " FEED_ORDER " LIMIT $1";
static const char SQL_FIRST[] = EXPLAIN "SELECT " COLUMNS " FROM " SCHEMA ".feed " FEED_ORDER " LIMIT $1";
/* the cursor of page P: the last row of page P - 1 (not measured) */
static const char SQL_POSITION[] =
        "SELECT created_at, id FROM " SCHEMA ".feed " FEED_ORDER " OFFSET $1 LIMIT 1";

static int64_t node_int(json_t *node, const char *key)
{
	json_t *v = json_object_get(node, key);
	return json_is_integer(v) ? (int64_t)json_integer_value(v)
	       : json_is_real(v)  ? (int64_t)json_real_value(v)
	                          : 0;
}

/* Rows the scan nodes under node produced (times their loops) plus those their filters removed. */
static int64_t scanned(json_t *node)
{
	int64_t n = 0;
	const char *type = json_string_value(json_object_get(node, "Node Type"));
	if (type && strstr(type, "Scan"))
		n += node_int(node, "Actual Rows") * (node_int(node, "Actual Loops") ?: 1) +
		     node_int(node, "Rows Removed by Filter") +
		     node_int(node, "Rows Removed by Index Recheck");
	size_t i;
	json_t *child;
	json_array_foreach(json_object_get(node, "Plans"), i, child) n += scanned(child);
	return n;
}

/* "Limit > Index Scan": the node types down the first child of each. */
static void plan_shape(json_t *node, char *out, size_t len)
{
	size_t used = 0;
	out[0] = '\0';
	for (; node && used < len; node = json_array_get(json_object_get(node, "Plans"), 0)) {
		const char *type = json_string_value(json_object_get(node, "Node Type"));
		int w = snprintf(out + used, len - used, "%s%s", used ? " > " : "", type ? type : "?");
		used += w > 0 ? (size_t)w : 0;
	}
}

/*
 * Reads one EXPLAIN's JSON into m: the time is the best so far (the first run may pay for a cold
 * cache), buffers and rows the most any run touched, so the repeats can only flatter the clock.
 */
static int read_plan(const char *text, struct pagination_measure *m, bool first, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *doc = json_loads(text, 0, &jerr);
	json_t *top = json_array_get(doc, 0);
	json_t *plan = json_object_get(top, "Plan");
	if (!plan) {
		snprintf(err, errlen, "EXPLAIN gave no plan: %s", doc ? "no \"Plan\"" : jerr.text);
		json_decref(doc);
		return -1;
	}
	int64_t hit = node_int(plan, "Shared Hit Blocks"), read = node_int(plan, "Shared Read Blocks");
	if (first || hit + read > m->buffers) {
		m->hit = hit;
		m->read = read;
		m->buffers = hit + read;
	}
	int64_t rows = scanned(plan);
	if (first || rows > m->rows_scanned)
		m->rows_scanned = rows;
	m->rows_returned = node_int(plan, "Actual Rows");
	plan_shape(plan, m->plan, sizeof(m->plan));
	double ms = json_number_value(json_object_get(top, "Execution Time"));
	if (first || ms < m->exec_ms)
		m->exec_ms = ms;
	json_decref(doc);
	return 0;
}

/* Runs an EXPLAIN repeats times into m. */
static int explain(PGconn *conn, const struct pagination_config *cfg, const char *sql, int n,
                   const char *const *p, struct pagination_measure *m, char *err, size_t errlen)
{
	for (int i = 0; i < cfg->repeats; i++) {
		PGresult *res = pg_query(conn, sql, n, p, err, errlen);
		if (!res)
			return -1;
		int rc = PQntuples(res) == 1 ? read_plan(PQgetvalue(res, 0, 0), m, i == 0, err, errlen) : -1;
		if (PQntuples(res) != 1)
			snprintf(err, errlen, "EXPLAIN returned %d rows", PQntuples(res));
		PQclear(res);
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
