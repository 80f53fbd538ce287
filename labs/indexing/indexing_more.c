/*
 * indexing_more.c — lab-indexing's phases 4 and 5 (see indexing.h): the selectivity sweep, each
 * point planned and forced three ways, and the follow-ups an interviewer pulls on, ending with
 * the index nobody used, found the way a real system finds it: pg_stat_user_indexes.idx_scan = 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "indexing_internal.h"
#include "pg.h"

/* ---- phase 4: selectivity ---- */

/* bucket is uniform over 0..999: bucket < k matches k / 1000 of the rows */
#define BUCKETS 1000

enum indexing_force indexing_sweep_fastest(const struct indexing_sweep_point *p)
{
	enum indexing_force best = IX_FORCE_SEQ;
	for (int f = IX_FORCE_INDEX; f < IX_FORCES; f++)
		if (p->plan[f].exec_us < p->plan[best].exec_us)
			best = (enum indexing_force)f;
	return best;
}

double indexing_sweep_planner_vs_best(const struct indexing_sweep_point *p)
{
	double best = p->plan[indexing_sweep_fastest(p)].exec_us;
	for (int f = IX_FORCE_SEQ; f < IX_FORCES; f++)
		if (!strcmp(p->plan[IX_PLANNER].node, indexing_force_node((enum indexing_force)f)))
			return best > 0 ? p->plan[f].exec_us / best : 0;
	return 0;
}

int ix_sweep_run(const struct indexing_config *cfg, struct indexing_sweep *sw, char *err, size_t errlen)
{
	memset(sw, 0, sizeof(*sw));
	sw->index_crossover = sw->bitmap_crossover = -1;
	PGconn *conn = ix_connect(cfg, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	if (ix_pages(conn, ORDERS, &sw->table_pages, err, errlen) < 0 ||
	    pg_exec(conn, "CREATE INDEX orders_bucket_idx ON " ORDERS " (bucket)", err, errlen) < 0)
		goto out;
	for (int i = 0; i < cfg->nsweep; i++) {
		struct indexing_sweep_point *p = &sw->p[i];
		int k = (int)(cfg->sweep[i] * BUCKETS + 0.5);
		p->fraction = (double)(k < 1 ? 1 : k) / BUCKETS;
		char sql[160];
		/* sum(amount): every matching row's heap tuple is read (no index-only scan), and one
		 * row comes back, so the plans differ only in how they find the rows */
		if (ix_sqlf(sql, sizeof(sql), err, errlen,
		            "SELECT sum(amount) FROM " ORDERS " WHERE bucket < %d", k < 1 ? 1 : k) < 0)
			goto out;
		ix_progress(cfg, "sweep", (double)i / cfg->nsweep);
		if (ix_explain_forced(conn, sql, cfg->repeats, p->plan, err, errlen) < 0)
			goto out;
		p->rows = p->plan[IX_PLANNER].scan_rows;
		sw->n = i + 1;
		if (sw->index_crossover < 0 &&
		    p->plan[IX_FORCE_SEQ].exec_us < p->plan[IX_FORCE_INDEX].exec_us)
			sw->index_crossover = i;
		if (sw->bitmap_crossover < 0 &&
		    p->plan[IX_FORCE_SEQ].exec_us < p->plan[IX_FORCE_BITMAP].exec_us)
			sw->bitmap_crossover = i;
	}
	if (pg_exec(conn, "DROP INDEX " SCHEMA ".orders_bucket_idx", err, errlen) < 0)
		goto out;
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

/* --predict: the pages a forced Index Scan touches at the sweep's widest point */
static double q_sweep_given(const void *cfgv, int i)
{
	const struct indexing_config *cfg = cfgv;
	return i == 0 ? 100 * cfg->sweep[cfg->nsweep - 1] : cfg->rows;
}

static double q_sweep_measured(const void *cfg, const void *result)
{
	const struct indexing_sweep *sw = &((const struct indexing_result *)result)->sweep;
	if (sw->n != ((const struct indexing_config *)cfg)->nsweep || sw->n == 0)
		return NAN;
	int64_t b = sw->p[sw->n - 1].plan[IX_FORCE_INDEX].buffers;
	return b > 0 ? (double)b : NAN;
}

const struct lab_question ix_q_sweep = {
        .text = "WHERE bucket < k matches {}% of {} orders, scattered through the table. How many "
                "pages (buffers) does an Index Scan touch to fetch them?",
        .given = q_sweep_given,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "pages",
        .within_pct = 15,
        .measured = q_sweep_measured,
        .why = "about one heap page per row, as the rows lie on different pages: many times the table, "
               "which a Seq Scan reads once; that is where the planner drops the Index Scan"};

/* ---- phase 5: follow-ups ---- */

static const char *const followup_queries[IX_FOLLOWUPS] = {
        [IX_FU_AB] = "a = ? AND b = ?",
        [IX_FU_A] = "a = ?",
        [IX_FU_B] = "b = ?",
        [IX_FU_LOWER_PLAIN] = "lower(email) = ?",
        [IX_FU_LOWER_EXPR] = "lower(email) = ?",
        [IX_FU_PREFIX] = "email LIKE 'User4242%'",
        [IX_FU_SUFFIX] = "email LIKE '%4242@Example.com'",
        [IX_FU_PARTIAL] = "status = 'pending' AND customer_id = ?",
};

const char *indexing_followup_query(enum indexing_followup f)
{
	return f >= 0 && f < IX_FOLLOWUPS ? followup_queries[f] : "?";
}

/* The values the follow-ups look up: a row's a, b and email, and a pending order's customer. */
struct fu_keys {
	int a, b, customer;
	char email[64];
};

static int fu_keys_read(PGconn *conn, const struct indexing_config *cfg, struct fu_keys *k, char *err,
                        size_t errlen)
{
	char sql[256];
	if (ix_sqlf(sql, sizeof(sql), err, errlen,
	            "SELECT a, b, lower(email), (SELECT customer_id FROM " ORDERS
	            " WHERE status = 'pending' ORDER BY id LIMIT 1) FROM " ORDERS " WHERE id = %d",
	            cfg->rows / 2) < 0)
		return -1;
	PGresult *res = pg_query(conn, sql, 0, NULL, err, errlen);
	if (!res)
		return -1;
	int ret = -1;
	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 3)) {
		snprintf(err, errlen, "the follow-ups' keys: no row %d or no pending order", cfg->rows / 2);
		goto out;
	}
	k->a = atoi(PQgetvalue(res, 0, 0));
	k->b = atoi(PQgetvalue(res, 0, 1));
	snprintf(k->email, sizeof(k->email), "%s", PQgetvalue(res, 0, 2));
	k->customer = atoi(PQgetvalue(res, 0, 3));
	ret = 0;
out:
	PQclear(res);
	return ret;
}

/* EXPLAIN ANALYZE of SELECT * FROM orders WHERE <where>, once: the follow-ups are told by their
 * plans and pages, which do not change run to run. */
static int fu_explain(PGconn *conn, const char *where, struct indexing_plan *q, char *err, size_t errlen)
{
	char sql[320];
	if (ix_sqlf(sql, sizeof(sql), err, errlen, "SELECT * FROM " ORDERS " WHERE %s", where) < 0)
		return -1;
	return ix_explain(conn, sql, 1, false, q, err, errlen);
}

/* Composite column order, the function on the column, LIKE: the queries in their order. */
static int fu_queries(PGconn *conn, const struct fu_keys *k, struct indexing_followups *fu, char *err,
                      size_t errlen)
{
	/* the email was read back from the seed's own 'User<id>@Example.com': no quote can be in it */
	char w[IX_FOLLOWUPS][160];
	size_t n = sizeof(w[0]);
	if (ix_sqlf(w[IX_FU_AB], n, err, errlen, "a = %d AND b = %d", k->a, k->b) < 0 ||
	    ix_sqlf(w[IX_FU_A], n, err, errlen, "a = %d", k->a) < 0 ||
	    ix_sqlf(w[IX_FU_B], n, err, errlen, "b = %d", k->b) < 0 ||
	    ix_sqlf(w[IX_FU_LOWER_PLAIN], n, err, errlen, "lower(email) = '%s'", k->email) < 0 ||
	    ix_sqlf(w[IX_FU_LOWER_EXPR], n, err, errlen, "lower(email) = '%s'", k->email) < 0 ||
	    ix_sqlf(w[IX_FU_PREFIX], n, err, errlen, "email LIKE 'User4242%%'") < 0 ||
	    ix_sqlf(w[IX_FU_SUFFIX], n, err, errlen, "email LIKE '%%4242@Example.com'") < 0 ||
	    ix_sqlf(w[IX_FU_PARTIAL], n, err, errlen, "status = 'pending' AND customer_id = %d",
	            k->customer) < 0)
		return -1;
	if (ix_pages(conn, SCHEMA ".orders_a_b_idx", &fu->ab_pages, err, errlen) < 0)
		return -1;
	for (int f = IX_FU_AB; f <= IX_FU_LOWER_PLAIN; f++)
		if (fu_explain(conn, w[f], &fu->q[f], err, errlen) < 0)
			return -1;
	/* the expression index: ANALYZE gives the planner statistics of lower(email) itself */
	if (pg_exec(conn, "CREATE INDEX orders_lower_email_idx ON " ORDERS " (lower(email)); ANALYZE " ORDERS,
	            err, errlen) < 0)
		return -1;
	for (int f = IX_FU_LOWER_EXPR; f <= IX_FU_SUFFIX; f++)
		if (fu_explain(conn, w[f], &fu->q[f], err, errlen) < 0)
			return -1;
	/* the partial index beside the same index over every row, which is measured and dropped */
	if (pg_exec(conn, "CREATE INDEX orders_customer_all_idx ON " ORDERS " (customer_id)", err, errlen) <
	            0 ||
	    ix_bytes(conn, SCHEMA ".orders_customer_all_idx", &fu->full_bytes, err, errlen) < 0 ||
	    pg_exec(conn,
	            "DROP INDEX " SCHEMA ".orders_customer_all_idx;"
	            "CREATE INDEX orders_pending_idx ON " ORDERS " (customer_id) WHERE status = 'pending'",
	            err, errlen) < 0 ||
	    ix_bytes(conn, SCHEMA ".orders_pending_idx", &fu->partial_bytes, err, errlen) < 0 ||
	    ix_int(conn, "SELECT count(*) FROM " ORDERS " WHERE status = 'pending'", &fu->partial_rows, err,
	           errlen) < 0)
		return -1;
	return fu_explain(conn, w[IX_FU_PARTIAL], &fu->q[IX_FU_PARTIAL], err, errlen);
}

/*
 * pg_stat_user_indexes for the orders table. The counts a backend gathers reach the shared view
 * when it goes idle, at most once a second: pg_stat_force_next_flush() (PostgreSQL 15) makes the
 * flush after that statement unconditional, so the next statement reads every scan of ours.
 */
static int fu_uses(PGconn *conn, struct indexing_followups *fu, char *err, size_t errlen)
{
	if (pg_exec(conn, "SELECT pg_stat_force_next_flush()", err, errlen) < 0)
		return -1;
	PGresult *res = pg_query(conn,
	                         "SELECT s.indexrelname, s.idx_scan, pg_relation_size(s.indexrelid), "
	                         "i.indisunique FROM pg_stat_user_indexes s JOIN pg_index i "
	                         "ON i.indexrelid = s.indexrelid WHERE s.schemaname = '" SCHEMA
	                         "' AND s.relname = 'orders' ORDER BY s.indexrelname",
	                         0, NULL, err, errlen);
	if (!res)
		return -1;
	fu->unused = -1;
	for (int i = 0; i < PQntuples(res) && fu->nuses < INDEXING_USES_MAX; i++) {
		struct indexing_index_use *u = &fu->uses[fu->nuses];
		snprintf(u->name, sizeof(u->name), "%s", PQgetvalue(res, i, 0));
		u->scans = atoll(PQgetvalue(res, i, 1));
		u->bytes = atoll(PQgetvalue(res, i, 2));
		u->unique = PQgetvalue(res, i, 3)[0] == 't';
		if (!u->unique && u->scans == 0) {
			fu->unused_count++;
			fu->unused = fu->nuses;
		}
		fu->nuses++;
	}
	if (fu->unused_count != 1)
		fu->unused = -1;
	PQclear(res);
	return 0;
}

int ix_followups_run(const struct indexing_config *cfg, struct indexing_followups *fu, char *err,
                     size_t errlen)
{
	memset(fu, 0, sizeof(*fu));
	fu->unused = -1;
	PGconn *conn = ix_connect(cfg, err, errlen);
	if (!conn)
		return -1;
	struct fu_keys k;
	int ret = -1;
	/* the email index uses text_pattern_ops: it compares byte by byte, so LIKE 'abc%' becomes a
	 * range on it under any collation (a plain index does that only under the C collation);
	 * created_at's index is the one no query of the lab ever reads */
	if (fu_keys_read(conn, cfg, &k, err, errlen) < 0 ||
	    pg_exec(conn,
	            "CREATE INDEX orders_a_b_idx ON " ORDERS " (a, b);"
	            "CREATE INDEX orders_email_idx ON " ORDERS " (email text_pattern_ops);"
	            "CREATE INDEX " INDEXING_UNUSED_INDEX " ON " ORDERS " (created_at)",
	            err, errlen) < 0 ||
	    fu_queries(conn, &k, fu, err, errlen) < 0 || fu_uses(conn, fu, err, errlen) < 0)
		goto out;
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

/* --predict: the one query of the composite index that reads at least all of its pages (its index) */
static double q_followups_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct indexing_followups *fu = &((const struct indexing_result *)result)->followups;
	static const enum indexing_followup Q[] = {IX_FU_AB, IX_FU_A, IX_FU_B};
	int whole = -1, n = 0;
	for (int i = 0; i < 3; i++)
		if (fu->ab_pages > 0 && fu->q[Q[i]].buffers >= fu->ab_pages)
			whole = i, n++;
	return n == 1 ? whole : NAN;
}

const struct lab_question ix_q_followups = {
        .text = "An index on (a, b). Which query cannot descend it to its rows, and reads at least "
                "every page of it?",
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"a = ? AND b = ?", "a = ?", "b = ?"},
        .measured = q_followups_measured,
        .why = "the index is sorted by a, then b within each a: a leading-column prefix descends to "
               "its rows; b alone is scattered across every a, so it scans all of the index"};
