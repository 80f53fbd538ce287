/*
 * indexing.c — lab-indexing's experiment as a whole (the phases are in indexing.h): its config,
 * its list of phases, indexing_run, and indexing_judge, where every threshold of the claim is
 * written once with its reason. The telling is in main.c; nothing here prints.
 */
#include "indexing.h"

#include <stdio.h>
#include <string.h>

#include "indexing_internal.h"
#include "pg.h"
#include "term.h"

void indexing_config_default(struct indexing_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	cfg->seed = 1;
	/* the sizes: a million rows is ~12,000 pages, where a scan is felt; 100,000 in seconds */
	cfg->rows = quick ? 100000 : 1000000;
	/* a range of 500 codes: a page of results, scattered over the table as codes are */
	cfg->range_rows = 500;
	/* a tenth of the table, inserted four times (and again): enough rows that the per-row WAL
	 * is the indexes', not the statement's, and each insert lasts milliseconds at least */
	cfg->write_rows = cfg->rows / 10;
	/* two rounds, the sets taking turns: the best time of two sees a quieter machine */
	cfg->write_rounds = 2;
	/* "a few thousand rows": 2,000 short rows fill 13 pages */
	cfg->small_rows = 2000;
	/* the best of 3 (5 full) EXPLAIN ANALYZE runs: the work is the same, the machine is not */
	cfg->repeats = quick ? 3 : 5;
	/* 0.1% to 30% of the rows, about evenly on a log scale */
	double sweep[] = {0.001, 0.01, 0.03, 0.1, 0.3};
	cfg->nsweep = 5;
	memcpy(cfg->sweep, sweep, sizeof(sweep));
}

double indexing_point_buffer_ratio(const struct indexing_result *r)
{
	const struct indexing_plan *p = r->reads.point;
	return p[IX_BTREE].buffers > 0 ? (double)p[IX_NO_INDEX].buffers / (double)p[IX_BTREE].buffers : 0;
}

/* ---- the phases, in order ---- */

static int phase_reads(const void *cfg, void *result, char *err, size_t errlen)
{
	return ix_reads_run(cfg, &((struct indexing_result *)result)->reads, err, errlen);
}

static int phase_writes(const void *cfg, void *result, char *err, size_t errlen)
{
	return ix_writes_run(cfg, ((struct indexing_result *)result)->writes, err, errlen);
}

static int phase_small(const void *cfg, void *result, char *err, size_t errlen)
{
	return ix_small_run(cfg, &((struct indexing_result *)result)->small, err, errlen);
}

static int phase_sweep(const void *cfg, void *result, char *err, size_t errlen)
{
	return ix_sweep_run(cfg, &((struct indexing_result *)result)->sweep, err, errlen);
}

static int phase_followups(const void *cfg, void *result, char *err, size_t errlen)
{
	return ix_followups_run(cfg, &((struct indexing_result *)result)->followups, err, errlen);
}

static const struct lab_phase_def PHASES[INDEXING_PHASES] = {
        {"reads", phase_reads, &ix_q_reads},
        {"writes", phase_writes, &ix_q_writes},
        {"small_table", phase_small, &ix_q_small},
        {"selectivity", phase_sweep, &ix_q_sweep},
        {"follow_ups", phase_followups, &ix_q_followups},
};

/* After a failure: does PostgreSQL still answer? When not, the failure was losing it. */
static bool server_lost(const struct indexing_config *cfg)
{
	char err[LAB_ERRLEN];
	PGconn *conn = pg_connect(cfg->pg_url, err, sizeof(err));
	PQfinish(conn);
	return conn == NULL;
}

int indexing_run(const struct indexing_config *cfg, struct indexing_result *res, char *err, size_t errlen)
{
	memset(res, 0, sizeof(*res));
	char why[LAB_ERRLEN];
	int ret = ix_setup(cfg, res, why, sizeof(why));
	if (ret < 0)
		snprintf(err, errlen, "cannot create schema " SCHEMA ": %s", why);
	else
		ret = lab_phases_walk(PHASES, INDEXING_PHASES, cfg, res, &cfg->hooks, err, errlen);
	/* Ctrl-C: common/lab.c's guard ends our backends and drops the schema; a teardown of ours
	 * would only race it for the schema's lock */
	if (ret < 0 && lab_interrupted())
		return -1;
	if (ret < 0)
		res->server_lost = server_lost(cfg);
	/* the phase's error is the one to report; the teardown's only when all else went well */
	if (pg_url_schema_drop(cfg->pg_url, SCHEMA, why, sizeof(why)) < 0 && ret == 0) {
		snprintf(err, errlen, "cannot drop schema " SCHEMA ": %s", why);
		res->server_lost = server_lost(cfg);
		ret = -1;
	}
	return ret;
}

/* ---- the verdict ---- */

#define CLAIM                                                                                                \
	"an index cuts a selective lookup's pages by a large ratio and costs every insert WAL and "          \
	"space; on a small table it saves a few pages at most (none for 2% of it), and the planner "         \
	"drops the Index Scan where it would lose"

/*
 * The point lookup reads at least 20 times fewer pages with the B-tree than with the Seq Scan. A
 * B-tree lookup reads its height (2 levels at 100,000 rows, 3 at a million) and one heap page; the
 * scan reads every page: 1,235 against 3 at 100,000 rows is ~400x, and even the test's 30,000
 * rows (371 pages) give ~120x. 20 says "a large ratio" with room for a far smaller table.
 */
#define MIN_POINT_BUFFER_RATIO 20.0
/*
 * The range of codes through the covering index reads at least 5 times fewer pages than through
 * the plain B-tree: the plain one fetches each row's heap page (codes are scattered: ~one page a
 * row), the covering one reads the leaf pages holding the range (a few). Measured 80 to 150x.
 */
#define MIN_COVERING_RANGE_RATIO 5.0
/*
 * Inserting the same rows with 6 secondary indexes takes at least 1.5 times as long as with none
 * (the primary key alone). Each index is a B-tree insert per row, and three of them (email,
 * customer_id, amount) land on random leaf pages: measured 2.5 to 8x on this 2-core machine. 1.5
 * is a generous margin for a neighbour's burst during one of the inserts; the WAL bytes, which
 * no neighbour changes, carry the claim.
 */
#define MIN_INSERT_SLOWDOWN 1.5
/*
 * "A small table" is one of at most 32 pages (256 kB): all any index can save a lookup on it is
 * reading those pages, a few dozen shared hits, ~0.1 ms from cache. The lab's 2,000 rows fill 13.
 */
#define MAX_SMALL_TABLE_PAGES 32

/* enable_* forced the plans they name: else a "forced" comparison measured one plan twice. */
static const char *forced_disagree(const struct indexing_plan p[IX_FORCES], const char *what, char *buf,
                                   size_t len)
{
	for (int f = IX_FORCE_SEQ; f < IX_FORCES; f++)
		if (strcmp(p[f].node, indexing_force_node((enum indexing_force)f)) != 0) {
			snprintf(buf, len, "%s: the settings forcing %s gave \"%s\"", what,
			         indexing_force_node((enum indexing_force)f), p[f].node);
			return buf;
		}
	return NULL;
}

/* Reads: the ratio, the covering index's plan and the visibility map. */
static const char *reads_disagree(const struct indexing_result *r, char *buf, size_t len)
{
	const struct indexing_reads *rd = &r->reads;
	double ratio = indexing_point_buffer_ratio(r);
	/* every plan found what the query asks for: one row, and the range's every code */
	for (int k = 0; k < IX_READ_KINDS; k++)
		if (rd->point[k].rows != 1 || rd->range[k].rows != rd->range_rows) {
			snprintf(buf, len, "%s found %lld rows for the point and %lld of %lld for the range",
			         rd->point[k].node, (long long)rd->point[k].rows,
			         (long long)rd->range[k].rows, (long long)rd->range_rows);
			return buf;
		}
	if (strcmp(rd->point[IX_NO_INDEX].node, "Seq Scan") != 0 ||
	    strcmp(rd->point[IX_BTREE].node, "Index Scan") != 0 || ratio < MIN_POINT_BUFFER_RATIO) {
		snprintf(buf, len,
		         "the point lookup read %lld pages with %s and %lld with %s: not %gx fewer with the "
		         "index",
		         (long long)rd->point[IX_NO_INDEX].buffers, rd->point[IX_NO_INDEX].node,
		         (long long)rd->point[IX_BTREE].buffers, rd->point[IX_BTREE].node,
		         MIN_POINT_BUFFER_RATIO);
		return buf;
	}
	const struct indexing_plan *cp = &rd->point[IX_COVERING], *cr = &rd->range[IX_COVERING];
	if (strcmp(cp->node, "Index Only Scan") != 0 || strcmp(cr->node, "Index Only Scan") != 0 ||
	    cp->heap_fetches != 0 || cr->heap_fetches != 0) {
		const struct indexing_plan *bad =
		        strcmp(cp->node, "Index Only Scan") || cp->heap_fetches ? cp : cr;
		snprintf(buf, len,
		         "the covering index gave %s with %lld heap fetches (%lld of %lld pages "
		         "all-visible), not an "
		         "Index Only Scan with 0",
		         bad->node, (long long)bad->heap_fetches, (long long)rd->all_visible_pages,
		         (long long)rd->table_pages);
		return buf;
	}
	if ((double)cr->buffers * MIN_COVERING_RANGE_RATIO > (double)rd->range[IX_BTREE].buffers) {
		snprintf(buf, len,
		         "the range read %lld pages through the covering index, %lld through the B-tree",
		         (long long)cr->buffers, (long long)rd->range[IX_BTREE].buffers);
		return buf;
	}
	return NULL;
}

/* Writes: WAL per row and index size grow with every set; the inserts slow down. */
static const char *writes_disagree(const struct indexing_result *r, char *buf, size_t len)
{
	const struct indexing_write *w = r->writes;
	if (w[0].rows <= 0)
		return "the inserts wrote no rows";
	for (int s = 1; s < INDEXING_WRITE_SETS; s++)
		if (w[s].rows != w[0].rows || w[s].wal_bytes <= w[s - 1].wal_bytes ||
		    w[s].index_bytes <= w[s - 1].index_bytes) {
			snprintf(buf, len,
			         "with %d indexes the insert wrote %.0f B of WAL a row and %lld B of "
			         "indexes, with "
			         "%d: %.0f B and %lld B",
			         w[s].indexes, indexing_wal_per_row(&w[s]), (long long)w[s].index_bytes,
			         w[s - 1].indexes, indexing_wal_per_row(&w[s - 1]),
			         (long long)w[s - 1].index_bytes);
			return buf;
		}
	const struct indexing_write *none = &w[0], *six = &w[INDEXING_WRITE_SETS - 1];
	if (six->insert_us < MIN_INSERT_SLOWDOWN * none->insert_us) {
		snprintf(buf, len, "inserts with %d indexes took %s, with none %s: not %gx slower",
		         six->indexes, TERM_US(six->insert_us), TERM_US(none->insert_us),
		         MIN_INSERT_SLOWDOWN);
		return buf;
	}
	return NULL;
}

/* The small table: the planner scans without the index, and 2% of it costs an index as many pages. */
static const char *small_disagree(const struct indexing_result *r, char *buf, size_t len)
{
	const struct indexing_small *s = &r->small;
	const struct indexing_plan *p = s->share.plan;
	if (s->pages < 1 || s->pages > MAX_SMALL_TABLE_PAGES || s->share.rows < 1) {
		snprintf(buf, len, "the small table had %lld pages (at most %d) and 2%% of it %lld rows",
		         (long long)s->pages, MAX_SMALL_TABLE_PAGES, (long long)s->share.rows);
		return buf;
	}
	if (strcmp(s->point.no_index.node, "Seq Scan") != 0 ||
	    strcmp(s->share.no_index.node, "Seq Scan") != 0)
		return "the small table was not scanned without an index";
	const char *forced = forced_disagree(s->point.plan, "small table, point", buf, len);
	if (forced || (forced = forced_disagree(p, "small table, 2%", buf, len)))
		return forced;
	if (p[IX_FORCE_SEQ].buffers > p[IX_FORCE_INDEX].buffers ||
	    p[IX_FORCE_SEQ].buffers > p[IX_FORCE_BITMAP].buffers) {
		snprintf(
		        buf, len,
		        "on the small table 2%% of the rows took %lld pages with the Seq Scan, %lld with the "
		        "Index Scan, %lld with the Bitmap Heap Scan",
		        (long long)p[IX_FORCE_SEQ].buffers, (long long)p[IX_FORCE_INDEX].buffers,
		        (long long)p[IX_FORCE_BITMAP].buffers);
		return buf;
	}
	return NULL;
}

/*
 * The sweep's ends: the planner's choice beats the plan it turned down. At the low end it reads
 * through the index (Index Scan or Bitmap Heap Scan) and is faster than the forced Seq Scan; at the
 * high end it does not pick the Index Scan, which reads more pages than the table holds (a heap
 * page per row), and is faster than the forced Index Scan. No margin on the times: they are the
 * server's, the best of several runs, and the plan turned down was 2 to 100 times slower in every
 * run on this machine (Bitmap Heap Scan against Seq Scan at 30% is the close race, and is not judged:
 * both read each page once).
 */
static const char *sweep_disagree(const struct indexing_result *r, char *buf, size_t len)
{
	const struct indexing_sweep *sw = &r->sweep;
	if (sw->n < 2)
		return "the selectivity sweep measured fewer than two points";
	const struct indexing_sweep_point *lo = &sw->p[0], *hi = &sw->p[sw->n - 1];
	const struct indexing_plan *l = lo->plan, *h = hi->plan;
	if (lo->rows < 1)
		return "the selectivity sweep's lowest point matched no row";
	const char *forced = forced_disagree(l, "selectivity, lowest point", buf, len);
	if (forced || (forced = forced_disagree(h, "selectivity, highest point", buf, len)))
		return forced;
	if (!indexing_plan_uses_index(&l[IX_PLANNER]) || l[IX_PLANNER].buffers >= l[IX_FORCE_SEQ].buffers ||
	    l[IX_PLANNER].exec_us >= l[IX_FORCE_SEQ].exec_us) {
		snprintf(buf, len,
		         "at %.1f%% the planner chose %s (%s, %lld pages); the forced Seq Scan took %s",
		         lo->fraction * 100, l[IX_PLANNER].node, TERM_US(l[IX_PLANNER].exec_us),
		         (long long)l[IX_PLANNER].buffers, TERM_US(l[IX_FORCE_SEQ].exec_us));
		return buf;
	}
	if (!strcmp(h[IX_PLANNER].node, "Index Scan") || h[IX_PLANNER].exec_us >= h[IX_FORCE_INDEX].exec_us ||
	    h[IX_FORCE_INDEX].buffers <= h[IX_FORCE_SEQ].buffers) {
		snprintf(buf, len,
		         "at %.0f%% the planner chose %s (%s); the forced Index Scan took %s and %lld pages",
		         hi->fraction * 100, h[IX_PLANNER].node, TERM_US(h[IX_PLANNER].exec_us),
		         TERM_US(h[IX_FORCE_INDEX].exec_us), (long long)h[IX_FORCE_INDEX].buffers);
		return buf;
	}
	return NULL;
}

/* The index each follow-up must read ("" = none, a scan) and must not. */
static const char *const followup_index[IX_FOLLOWUPS] = {
        [IX_FU_AB] = "orders_a_b_idx",
        [IX_FU_A] = "orders_a_b_idx",
        [IX_FU_B] = "",
        [IX_FU_LOWER_PLAIN] = "",
        [IX_FU_LOWER_EXPR] = "orders_lower_email_idx",
        [IX_FU_PREFIX] = "orders_email_idx",
        [IX_FU_SUFFIX] = "",
        [IX_FU_PARTIAL] = "orders_pending_idx",
};

static const char *followups_disagree(const struct indexing_result *r, char *buf, size_t len)
{
	const struct indexing_followups *fu = &r->followups;
	for (int f = 0; f < IX_FOLLOWUPS; f++) {
		const struct indexing_plan *q = &fu->q[f];
		bool want = followup_index[f][0] != 0;
		/* each query looks up values read from a row of the table: a plan finding none measured
		 * nothing */
		if (q->rows < 1) {
			snprintf(buf, len, "%s found no row", indexing_followup_query(f));
			return buf;
		}
		/* b = ? cannot descend (a, b): it is a scan of the table, or of the whole index */
		if (f == IX_FU_B && !strcmp(q->index, "orders_a_b_idx") && q->buffers >= fu->ab_pages)
			continue;
		if (want ? strcmp(q->index, followup_index[f]) != 0 : strcmp(q->node, "Seq Scan") != 0) {
			snprintf(buf, len, "%s was planned as %s%s%s, not %s%s", indexing_followup_query(f),
			         q->node, q->index[0] ? " on " : "", q->index,
			         want ? "a scan of " : "a Seq Scan", followup_index[f]);
			return buf;
		}
	}
	if (fu->partial_bytes >= fu->full_bytes)
		return "the partial index was not smaller than the same index over every row";
	bool used = false;
	for (int i = 0; i < fu->nuses; i++)
		used |= fu->uses[i].scans > 0;
	if (fu->unused < 0 || strcmp(fu->uses[fu->unused].name, INDEXING_UNUSED_INDEX) != 0 || !used) {
		snprintf(buf, len,
		         "pg_stat_user_indexes showed %d unused indexes, not " INDEXING_UNUSED_INDEX " alone",
		         fu->unused_count);
		return buf;
	}
	return NULL;
}

void indexing_judge(const struct indexing_result *r, struct lab_verdict *v)
{
	char buf[1024];
	const char *why = reads_disagree(r, buf, sizeof(buf));
	if (!why)
		why = writes_disagree(r, buf, sizeof(buf));
	if (!why)
		why = small_disagree(r, buf, sizeof(buf));
	if (!why)
		why = sweep_disagree(r, buf, sizeof(buf));
	if (!why)
		why = followups_disagree(r, buf, sizeof(buf));
	const struct indexing_write *w0 = &r->writes[0], *w6 = &r->writes[INDEXING_WRITE_SETS - 1];
	const struct indexing_small *s = &r->small;
	const struct indexing_sweep_point *hi = &r->sweep.p[r->sweep.n > 0 ? r->sweep.n - 1 : 0];
	const struct indexing_followups *fu = &r->followups;
	const struct indexing_plan *pt = r->reads.point;
	lab_verdict_set(
	        v, why == NULL, CLAIM,
	        "%s%spoint lookup %s pages scanned, %lld by B-tree (%.0fx); WAL a row %.0f B with 0 "
	        "indexes, %.0f B with %d, inserts %.1fx slower; small table (%lld pages): point %lld → "
	        "%lld pages, 2%% %lld → %lld; at %.0f%% the planner's %s took %.2fx the fastest plan, "
	        "the Index Scan %s pages; unused: %s",
	        why ? why : "", why ? ". " : "", TERM_NUM(pt[IX_NO_INDEX].buffers, 0),
	        (long long)pt[IX_BTREE].buffers, indexing_point_buffer_ratio(r), indexing_wal_per_row(w0),
	        indexing_wal_per_row(w6), w6->indexes, w0->insert_us > 0 ? w6->insert_us / w0->insert_us : 0,
	        (long long)s->pages, (long long)s->point.plan[IX_FORCE_SEQ].buffers,
	        (long long)s->point.plan[IX_PLANNER].buffers, (long long)s->share.plan[IX_FORCE_SEQ].buffers,
	        (long long)s->share.plan[IX_PLANNER].buffers, hi->fraction * 100, hi->plan[IX_PLANNER].node,
	        indexing_sweep_planner_vs_best(hi), TERM_NUM(hi->plan[IX_FORCE_INDEX].buffers, 0),
	        fu->unused >= 0 ? fu->uses[fu->unused].name : "none");
}
