/*
 * pagination.c — lab-pagination's experiment as a whole: its config, the schema and the seeded
 * feed (phase 1), the run over the four phases (cost.c, walk.c, client.c) and the judge that
 * decides from their numbers. The telling is in main.c; nothing here prints.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "internal.h"
#include "pg.h"

void pagination_config_rows(struct pagination_config *cfg, int rows)
{
	cfg->rows = rows;
	/* 1, 100 and 10,000 pages of 20 in a million rows: the first page, a user who kept
	 * scrolling, a crawler 20% of the way down; the same fractions of a smaller feed */
	double scale = rows / 1e6;
	int mid = (int)(100 * scale), deep = (int)(10000 * scale);
	int last = rows / cfg->page_size;
	cfg->pages[0] = 1;
	cfg->pages[1] = mid < 2 ? 2 : mid;
	cfg->pages[2] = deep <= cfg->pages[1] ? cfg->pages[1] + 1 : deep;
	if (cfg->pages[2] > last)
		cfg->pages[2] = last;
}

void pagination_config_default(struct pagination_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	cfg->seed = 1;
	/* 20 rows a page: a feed's screenful */
	cfg->page_size = 20;
	pagination_config_rows(cfg, quick ? 100000 : 1000000);
	/* the best of three: the first run of a query may read from disk and set hint bits */
	cfg->repeats = 3;
	/* the walk reads every page, and OFFSET's cost grows with each: a feed of its own, small
	 * enough that walking all of it by OFFSET takes well under a second */
	cfg->walk_rows = quick ? 2000 : 5000;
	cfg->walk_page = 50;
	cfg->api_limit = 20;
	cfg->api_pages = 5;
	/* an hour: longer than anyone reads a feed in one sitting, short enough that a leaked cursor
	 * soon stops working and the key can be rotated */
	cfg->cursor_ttl_s = 3600;
	/* "10,000+" is what a UI shows past this; counting further costs a scan of every row */
	cfg->count_cap = 10000;
	/* two clients at most at a time in the lab's run; a few more for curl */
	cfg->pool_size = 4;
}

void pag_progress(const struct pagination_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done, cfg->progress_arg);
}

const char *pagination_method_name(enum pagination_method m)
{
	return m == PAGINATION_OFFSET ? "OFFSET" : "keyset";
}

int pag_seed_table(PGconn *conn, const char *table, int n, char *err, size_t errlen)
{
	char sql[1024], count[24];
	snprintf(count, sizeof(count), "%d", n);
	const char *p[] = {count};
	/* one statement, all on the server: no row crosses the wire */
	snprintf(sql, sizeof(sql),
	         "INSERT INTO " SCHEMA ".%s (id, created_at, author, body)"
	         " SELECT i, timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => i / 3 + (i * 7919) "
	         "%% 4),"
	         " 1 + (i * 31) %% 5000, 'post ' || i || ': ' || repeat(chr(97 + (i %% 26)::int), 40)"
	         " FROM generate_series(1::bigint, $1::bigint) i",
	         table);
	PGresult *res = PQexecParams(conn, sql, 1, NULL, p, NULL, NULL, 0);
	bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		pg_message_line(err, errlen, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
	PQclear(res);
	if (!ok)
		return -1;
	snprintf(sql, sizeof(sql),
	         "CREATE INDEX %s_order ON " SCHEMA ".%s (created_at DESC, id DESC);"
	         "SELECT setval(pg_get_serial_sequence('" SCHEMA ".%s', 'id'), %d)",
	         table, table, table, n);
	if (pg_exec(conn, sql, err, errlen) < 0)
		return -1;
	/* on its own: VACUUM runs outside any transaction, so not in a multi-statement string */
	snprintf(sql, sizeof(sql), "VACUUM ANALYZE " SCHEMA ".%s", table);
	return pg_exec(conn, sql, err, errlen);
}

static int seed_facts(PGconn *conn, struct pagination_seed *s, char *err, size_t errlen)
{
	PGresult *res = pg_query(
	        conn,
	        "SELECT count(*), count(DISTINCT created_at),"
	        " (SELECT max(c) FROM (SELECT count(*) c FROM " SCHEMA ".feed GROUP BY created_at) t),"
	        " pg_table_size('" SCHEMA ".feed'), pg_relation_size('" SCHEMA ".feed_order')"
	        " FROM " SCHEMA ".feed",
	        0, NULL, err, errlen);
	if (!res)
		return -1;
	s->rows = atoll(PQgetvalue(res, 0, 0));
	s->distinct_created = atoll(PQgetvalue(res, 0, 1));
	s->max_ties = atoll(PQgetvalue(res, 0, 2));
	s->table_bytes = atoll(PQgetvalue(res, 0, 3));
	s->index_bytes = atoll(PQgetvalue(res, 0, 4));
	PQclear(res);
	return 0;
}

static int seed_feed(const struct pagination_config *cfg, struct pagination_seed *s, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	uint64_t t0 = hist_now_us();
	int ret = -1;
	if (pg_schema_create(conn, SCHEMA, err, errlen) < 0 ||
	    pg_exec(conn, FEED_DDL("feed"), err, errlen) < 0 ||
	    pag_seed_table(conn, "feed", cfg->rows, err, errlen) < 0)
		goto out;
	if (s) {
		s->seed_ms = (hist_now_us() - t0) / 1000.0;
		if (seed_facts(conn, s, err, errlen) < 0)
			goto out;
	}
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

int pagination_setup(const struct pagination_config *cfg, char *err, size_t errlen)
{
	return seed_feed(cfg, NULL, err, errlen);
}

int pagination_teardown(const struct pagination_config *cfg, char *err, size_t errlen)
{
	return pg_url_schema_drop(cfg->pg_url, SCHEMA, err, errlen);
}

int pagination_phase_seed(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct pagination_config *cfg = cfgv;
	struct pagination_result *r = result;
	pag_progress(cfg, "seeding the feed", 0.0);
	if (seed_feed(cfg, &r->seed, err, errlen) < 0)
		return pag_lost(cfg, r, err, errlen);
	return 0;
}

int pag_lost(const struct pagination_config *cfg, struct pagination_result *r, char *err, size_t errlen)
{
	if (r->lost || lab_interrupted())
		return -1;
	char said[LAB_ERRLEN];
	PGconn *conn = pg_connect(cfg->pg_url, said, sizeof(said));
	if (!conn) {
		r->lost = true;
		snprintf(err, errlen, "%s", said);
		return -1;
	}
	PQfinish(conn);
	return -1;
}

/* --predict: why the feed's order ends in id; decided by the ties the seed made (its answer's index) */
static double q_seed_given(const void *cfgv, int i)
{
	(void)i;
	return ((const struct pagination_config *)cfgv)->rows;
}

static double q_seed_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct pagination_seed *s = &((const struct pagination_result *)result)->seed;
	if (s->rows <= 0 || s->max_ties <= 0)
		return NAN;
	return s->max_ties > 1 ? 1 : 2;
}

static const struct lab_question Q_SEED = {
        .text = "{} posts, written about 3 a second. The feed reads them ORDER BY created_at DESC, "
                "id DESC. Why the id?",
        .given = q_seed_given,
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"speed: a B-tree needs a unique last column",
                    "ties: several rows share a created_at, and a page's edge would skip or repeat them",
                    "no reason: timestamps are unique enough"},
        .measured = q_seed_measured,
        .why = "the seed counts the rows per created_at: several share one, so the order among them is "
               "undefined without a tie-breaker, and a cursor must be (created_at, id)"};

/* The phases, in the order main.c tells them, each with the question --predict asks before it. */
static const struct lab_phase_def PHASES[PAGINATION_PHASES] = {
        {"seed", pagination_phase_seed, &Q_SEED},
        {"cost", pagination_phase_cost, &pag_q_cost},
        {"walk", pagination_phase_walk, &pag_q_walk},
        {"api", pagination_phase_api, &pag_q_api},
};

int pagination_run(const struct pagination_config *cfg, struct pagination_result *result, char *err,
                   size_t errlen)
{
	memset(result, 0, sizeof(*result));
	int ret = lab_phases_walk(PHASES, PAGINATION_PHASES, cfg, result, &cfg->hooks, err, errlen);
	/* Ctrl-C: common/lab.c's guard drops the schema; a teardown of ours would only race it */
	if (ret < 0 && lab_interrupted())
		return -1;
	char terr[LAB_ERRLEN];
	if (pagination_teardown(cfg, terr, sizeof(terr)) < 0 && ret == 0) {
		snprintf(err, errlen, "teardown: %s", terr);
		return pag_lost(cfg, result, err, errlen);
	}
	return ret;
}

/* ---- the judge ---- */

static double growth(int64_t deep, int64_t first)
{
	return first > 0 ? (double)deep / (double)first : 0.0;
}

static const struct pagination_measure *depths(const struct pagination_cost *c, enum pagination_method m)
{
	return m == PAGINATION_OFFSET ? c->offset : c->keyset;
}

double pagination_growth_rows(const struct pagination_cost *c, enum pagination_method m)
{
	const struct pagination_measure *d = depths(c, m);
	return c->ndepths < 2 ? 0.0 : growth(d[c->ndepths - 1].rows_scanned, d[0].rows_scanned);
}

double pagination_growth_buffers(const struct pagination_cost *c, enum pagination_method m)
{
	const struct pagination_measure *d = depths(c, m);
	return c->ndepths < 2 ? 0.0 : growth(d[c->ndepths - 1].buffers, d[0].buffers);
}

/*
 * OFFSET at page P reads the (P - 1) * n rows it skips and then the n it returns: P times the
 * rows of page 1, and their index and heap pages. The deepest page measured is 500 even in the
 * test's small feed, so a growth of 10 leaves a margin of 50: only a plan that does not read
 * what it skips (none exists for OFFSET) could come under it.
 */
#define OFFSET_GROWTH_MIN 10.0
/*
 * Keyset at any depth descends the index to the position ($1, $2) and reads n rows: the same
 * rows as page 1, and about the same pages. 3x page 1 leaves room for a descent that crosses a
 * leaf boundary and a page of heap more (page 1 touches about 4 buffers), not for a growth
 * with depth.
 */
#define KEYSET_FLAT_MAX 3.0
/* Phase 3: OFFSET must show both anomalies at least once, or the phase showed nothing ... */
#define OFFSET_ANOMALIES_MIN 1
/* ... and keyset none: its position is a key, not a count of rows that writes move */
#define KEYSET_ANOMALIES 0
/* Phase 4: page 1 and at least one page reached by its next_cursor, or no cursor was shown working */
#define API_PAGES_MIN 2

/* Why phase 2 does not show the claim, into why; false when it does. */
static bool cost_disagrees(const struct pagination_cost *c, char *why, size_t len)
{
	double orow = pagination_growth_rows(c, PAGINATION_OFFSET),
	       obuf = pagination_growth_buffers(c, PAGINATION_OFFSET);
	double krow = pagination_growth_rows(c, PAGINATION_KEYSET),
	       kbuf = pagination_growth_buffers(c, PAGINATION_KEYSET);
	if (c->ndepths < 2)
		snprintf(why, len, "fewer than two depths measured");
	else if (c->offset[0].rows_scanned <= 0 || c->offset[0].buffers <= 0 ||
	         c->keyset[0].rows_scanned <= 0 || c->keyset[0].buffers <= 0)
		snprintf(why, len, "page 1 touched no rows or no buffers: EXPLAIN measured nothing");
	else if (orow < OFFSET_GROWTH_MIN || obuf < OFFSET_GROWTH_MIN)
		snprintf(why, len,
		         "OFFSET grew only %.1fx in rows and %.1fx in buffers to page %d (at least %.0fx)",
		         orow, obuf, c->offset[c->ndepths - 1].page, OFFSET_GROWTH_MIN);
	else if (krow > KEYSET_FLAT_MAX || kbuf > KEYSET_FLAT_MAX || krow <= 0 || kbuf <= 0)
		snprintf(why, len,
		         "keyset grew %.1fx in rows and %.1fx in buffers to page %d (at most %.0fx)", krow,
		         kbuf, c->keyset[c->ndepths - 1].page, KEYSET_FLAT_MAX);
	else
		return false;
	return true;
}

static bool walk_disagrees(const struct pagination_walk *w, char *why, size_t len)
{
	const struct pagination_walk *o = &w[PAGINATION_OFFSET], *k = &w[PAGINATION_KEYSET];
	for (int m = 0; m < PAGINATION_METHODS; m++)
		if (w[m].inserted < 1 || w[m].deleted_behind < 1 || w[m].stable < 1) {
			snprintf(why, len,
			         "the %s walk had no writes to face (%lld inserted, %lld deleted behind)",
			         pagination_method_name((enum pagination_method)m), (long long)w[m].inserted,
			         (long long)w[m].deleted_behind);
			return true;
		}
	if (o->duplicates < OFFSET_ANOMALIES_MIN || o->skips < OFFSET_ANOMALIES_MIN)
		snprintf(why, len,
		         "OFFSET under writes: %lld duplicates and %lld skips (at least %d of each)",
		         (long long)o->duplicates, (long long)o->skips, OFFSET_ANOMALIES_MIN);
	else if (k->duplicates != KEYSET_ANOMALIES || k->skips != KEYSET_ANOMALIES)
		snprintf(why, len, "keyset under writes: %lld duplicates and %lld skips (%d of each)",
		         (long long)k->duplicates, (long long)k->skips, KEYSET_ANOMALIES);
	else
		return false;
	return true;
}

static bool api_disagrees(const struct pagination_api_story *a, char *why, size_t len)
{
	if (a->nsteps == 0) {
		snprintf(why, len, "the API phase made no request");
		return true;
	}
	for (int i = 0; i < a->nsteps; i++) {
		const struct pagination_api_step *s = &a->steps[i];
		if (s->status != s->want) {
			snprintf(why, len, "the API: %s got %d, its contract says %d", s->what, s->status,
			         s->want);
			return true;
		}
		if (s->want_reason && strcmp(s->reason, s->want_reason) != 0) {
			snprintf(why, len, "the API: %s was refused as \"%s\", its contract says \"%s\"",
			         s->what, s->reason, s->want_reason);
			return true;
		}
	}
	if (a->walked_pages < API_PAGES_MIN) {
		snprintf(why, len, "the API walk read %lld pages (at least %d: one by next_cursor)",
		         (long long)a->walked_pages, API_PAGES_MIN);
		return true;
	}
	if (!a->in_order) {
		snprintf(why, len, "the API's pages did not continue one another in feed order");
		return true;
	}
	return false;
}

void pagination_judge(const struct pagination_result *r, struct lab_verdict *v)
{
	char why[256] = "";
	const struct pagination_cost *c = &r->cost;
	const struct pagination_walk *o = &r->walk[PAGINATION_OFFSET], *k = &r->walk[PAGINATION_KEYSET];
	if (!cost_disagrees(c, why, sizeof(why)) && !walk_disagrees(r->walk, why, sizeof(why)))
		api_disagrees(&r->api, why, sizeof(why));
	int deep = c->ndepths > 0 ? c->offset[c->ndepths - 1].page : 0;
	lab_verdict_set(
	        v, why[0] == '\0',
	        "keyset pagination costs the same at any depth and walks a feed under writes exactly once; "
	        "OFFSET does neither",
	        "%s%spage 1 -> %s: OFFSET %.0fx the rows and %.0fx the buffers, keyset %.1fx and %.1fx; "
	        "under "
	        "writes OFFSET served %lld duplicates and skipped %lld rows, keyset %lld and %lld",
	        why, why[0] ? ". " : "", TERM_NUM(deep, 0), pagination_growth_rows(c, PAGINATION_OFFSET),
	        pagination_growth_buffers(c, PAGINATION_OFFSET), pagination_growth_rows(c, PAGINATION_KEYSET),
	        pagination_growth_buffers(c, PAGINATION_KEYSET), (long long)o->duplicates,
	        (long long)o->skips, (long long)k->duplicates, (long long)k->skips);
}
