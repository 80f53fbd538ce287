/*
 * lab-pagination — "How would you design pagination for a large dataset?"
 *
 * What you will see: a feed of a million rows in PostgreSQL (100,000 with --quick), read newest
 * first, and the two ways to page it:
 *   1. the feed seeded in one statement, with ties on created_at, and its index;
 *   2. what page 1, 100 and 10,000 cost by OFFSET and by keyset, from EXPLAIN (ANALYZE, BUFFERS):
 *      OFFSET reads every row it skips, keyset reads the page;
 *   3. a client walking a feed to its end while writers insert at the head and delete behind and
 *      ahead of it: OFFSET serves rows twice and skips others, keyset neither;
 *   4. the API a client gets: GET /v1/items with an opaque, signed, expiring next_cursor, what
 *      it refuses (400 each), and what a cursor cannot tell (a total: an estimate, a capped count).
 * Limits: one machine, loopback, a warm cache; the writers write between the walker's pages,
 * driven by its progress, so the run repeats (--seed picks the writes).
 *
 * This file only tells: the experiment and every threshold are in pagination.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lab.h"
#include "pagination.h"
#include "pg.h"

#define QUESTION "How would you design pagination for a large dataset?"

#define CFG(c) ((const struct pagination_config *)(c))
#define RES(r) ((const struct pagination_result *)(r))

static const char *mb(char *buf, size_t len, int64_t bytes)
{
	snprintf(buf, len, "%s MB", TERM_NUM(bytes / 1048576.0, 0));
	return buf;
}

static void before_seed(struct lab *lab, const void *cfg)
{
	lab_phase(lab, "The feed: %s rows in one INSERT ... SELECT FROM generate_series, newest first",
	          TERM_NUM(CFG(cfg)->rows, 0));
}

static void after_seed(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct pagination_seed *s = &RES(result)->seed;
	char t[32], i[32];
	term_printf(&lab->term,
	            "  %s rows in %s · %s distinct created_at (%.1f rows a second, at most %lld: ties, so id "
	            "breaks "
	            "them)\n  table %s, index (created_at DESC, id DESC) %s · ORDER BY created_at DESC, id "
	            "DESC\n",
	            TERM_NUM(s->rows, 0), TERM_US(s->seed_ms * 1000), TERM_NUM(s->distinct_created, 0),
	            s->distinct_created ? (double)s->rows / s->distinct_created : 0.0, (long long)s->max_ties,
	            mb(t, sizeof(t), s->table_bytes), mb(i, sizeof(i), s->index_bytes));
	lab_phase_metrics(lab, "seed",
	                  json_pack("{s:I,s:I,s:I,s:I,s:I,s:f}", "rows", (json_int_t)s->rows,
	                            "distinct_created_at", (json_int_t)s->distinct_created, "max_ties",
	                            (json_int_t)s->max_ties, "table_bytes", (json_int_t)s->table_bytes,
	                            "index_bytes", (json_int_t)s->index_bytes, "seed_ms", s->seed_ms));
}

static void before_cost(struct lab *lab, const void *cfg)
{
	const struct pagination_config *c = CFG(cfg);
	lab_phase(lab,
	          "What a page costs: pages %s, %s and %s of %d rows, by OFFSET and by keyset, EXPLAIN "
	          "(ANALYZE, BUFFERS)",
	          TERM_NUM(c->pages[0], 0), TERM_NUM(c->pages[1], 0), TERM_NUM(c->pages[2], 0), c->page_size);
}

static json_t *measure_json(const struct pagination_measure *m)
{
	return json_pack("{s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:s}", "page", m->page, "offset",
	                 (json_int_t)m->offset, "buffers", (json_int_t)m->buffers, "shared_hit",
	                 (json_int_t)m->hit, "shared_read", (json_int_t)m->read, "rows_scanned",
	                 (json_int_t)m->rows_scanned, "rows_returned", (json_int_t)m->rows_returned,
	                 "exec_ms", m->exec_ms, "plan", m->plan);
}

static void cost_row(const struct term *t, const struct term_col *cols, const char *method,
                     const struct pagination_measure *m)
{
	char page[24];
	snprintf(page, sizeof(page), "%s", TERM_NUM(m->page, 0));
	const char *row[] = {page,
	                     TERM_NUM(m->offset, 0),
	                     method,
	                     TERM_NUM(m->rows_scanned, 0),
	                     TERM_NUM(m->buffers, 0),
	                     TERM_US(m->exec_ms * 1000),
	                     m->plan};
	term_table_row(t, 2, cols, 7, row);
}

static void cost_chart(const struct term *t, const struct pagination_cost *c)
{
	double max = 1;
	for (int d = 0; d < c->ndepths; d++)
		if (c->offset[d].buffers > max)
			max = (double)c->offset[d].buffers;
	term_printf(t, "  buffers a page touched (shared hit + read)\n");
	for (int m = 0; m < PAGINATION_METHODS; m++)
		for (int d = 0; d < c->ndepths; d++) {
			const struct pagination_measure *x =
			        m == PAGINATION_OFFSET ? &c->offset[d] : &c->keyset[d];
			char bar[256], label[32];
			snprintf(label, sizeof(label), "%s page %s",
			         pagination_method_name((enum pagination_method)m), TERM_NUM(x->page, 0));
			term_printf(t, "  %-20s %s%s%s %s\n", label,
			            m == PAGINATION_OFFSET ? term_red(t) : term_green(t),
			            term_bar(bar, sizeof(bar), (double)x->buffers, max, 48), term_reset(t),
			            TERM_NUM(x->buffers, 0));
		}
}

static void after_cost(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct pagination_cost *c = &RES(result)->cost;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"page", 6, 'r'},          {"OFFSET", 9, 'r'},  {"method", 7, 'l'},
	                          {"rows touched", 12, 'r'}, {"buffers", 8, 'r'}, {"time", 9, 'r'},
	                          {"plan", 30, 'l'}};
	term_table_header(t, 2, cols, 7);
	json_t *offset = json_array(), *keyset = json_array();
	for (int d = 0; d < c->ndepths; d++) {
		cost_row(t, cols, "OFFSET", &c->offset[d]);
		cost_row(t, cols, "keyset", &c->keyset[d]);
		json_array_append_new(offset, measure_json(&c->offset[d]));
		json_array_append_new(keyset, measure_json(&c->keyset[d]));
	}
	cost_chart(t, c);
	term_printf(t, "  page 1 -> %s: OFFSET %sx the rows and %sx the buffers; keyset %sx and %sx\n",
	            TERM_NUM(c->ndepths ? c->offset[c->ndepths - 1].page : 0, 0),
	            TERM_NUM(pagination_growth_rows(c, PAGINATION_OFFSET), 0),
	            TERM_NUM(pagination_growth_buffers(c, PAGINATION_OFFSET), 0),
	            TERM_NUM(pagination_growth_rows(c, PAGINATION_KEYSET), 1),
	            TERM_NUM(pagination_growth_buffers(c, PAGINATION_KEYSET), 1));
	lab_phase_metrics(
	        lab, "cost",
	        json_pack("{s:i,s:o,s:o}", "page_size", c->page_size, "offset", offset, "keyset", keyset));
}

static void before_walk(struct lab *lab, const void *cfg)
{
	lab_phase(lab,
	          "Walking %s rows in pages of %d while two writers insert at the head and delete behind and "
	          "ahead",
	          TERM_NUM(CFG(cfg)->walk_rows, 0), CFG(cfg)->walk_page);
}

static const char *id_or_none(char *buf, size_t len, int64_t id)
{
	snprintf(buf, len, id ? "%lld" : "-", (long long)id);
	return buf;
}

static void after_walk(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"method", 7, 'l'},      {"pages", 5, 'r'},    {"rows read", 9, 'r'},
	                          {"inserted", 8, 'r'},    {"deleted", 11, 'r'}, {"stable", 6, 'r'},
	                          {"duplicates", 10, 'r'}, {"skips", 5, 'r'},    {"first dup", 9, 'r'},
	                          {"first skip", 10, 'r'}};
	term_table_header(t, 2, cols, 10);
	json_t *walks = json_object();
	for (int m = 0; m < PAGINATION_METHODS; m++) {
		const struct pagination_walk *w = &RES(result)->walk[m];
		char del[32], d1[24], s1[24], dups[48], skips[48];
		snprintf(del, sizeof(del), "%lld + %lld", (long long)w->deleted_behind,
		         (long long)w->deleted_ahead);
		const char *bad = m == PAGINATION_OFFSET ? term_red(t) : term_green(t);
		snprintf(dups, sizeof(dups), "%s%s%s", w->duplicates ? bad : term_green(t),
		         TERM_NUM(w->duplicates, 0), term_reset(t));
		snprintf(skips, sizeof(skips), "%s%s%s", w->skips ? bad : term_green(t),
		         TERM_NUM(w->skips, 0), term_reset(t));
		const char *row[] = {pagination_method_name((enum pagination_method)m),
		                     TERM_NUM(w->pages, 0),
		                     TERM_NUM(w->rows_read, 0),
		                     TERM_NUM(w->inserted, 0),
		                     del,
		                     TERM_NUM(w->stable, 0),
		                     dups,
		                     skips,
		                     id_or_none(d1, sizeof(d1), w->first_duplicate),
		                     id_or_none(s1, sizeof(s1), w->first_skip)};
		term_table_row(t, 2, cols, 10, row);
		json_object_set_new(
		        walks, pagination_method_name((enum pagination_method)m),
		        json_pack("{s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "pages", w->pages,
		                  "rows_read", (json_int_t)w->rows_read, "inserted", (json_int_t)w->inserted,
		                  "deleted_behind", (json_int_t)w->deleted_behind, "deleted_ahead",
		                  (json_int_t)w->deleted_ahead, "stable", (json_int_t)w->stable, "duplicates",
		                  (json_int_t)w->duplicates, "skips", (json_int_t)w->skips, "first_duplicate",
		                  (json_int_t)w->first_duplicate, "first_skip", (json_int_t)w->first_skip,
		                  "cursor_rows_deleted", (json_int_t)w->cursor_rows_deleted));
	}
	term_printf(
	        t,
	        "  deleted: behind + ahead of the walker (the row its cursor pointed at %lld times); stable: "
	        "rows\n"
	        "  there from start to end. A row at the head shifts OFFSET back (a duplicate), one deleted\n"
	        "  behind shifts it forward (a skip); keyset resumes after its last row, whatever moved.\n",
	        (long long)RES(result)->walk[PAGINATION_KEYSET].cursor_rows_deleted);
	lab_phase_metrics(lab, "walk", walks);
}

static void before_api(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "The API: GET /v1/items with an opaque next_cursor (HMAC-SHA256, base64url)");
}

static void after_api(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct pagination_api_story *a = &RES(result)->api;
	const struct term *t = &lab->term;
	/* 2 + 42 + 6 + 58 and the gaps: 112 columns, as wide as the other phases' lines */
	struct term_col cols[] = {{"request", 42, 'l'}, {"status", 6, 'r'}, {"answer", 58, 'l'}};
	term_table_header(t, 2, cols, 3);
	json_t *steps = json_array();
	for (int i = 0; i < a->nsteps; i++) {
		const struct pagination_api_step *s = &a->steps[i];
		char st[48], note[80];
		snprintf(st, sizeof(st), "%s%d%s", s->status == s->want ? term_green(t) : term_red(t),
		         s->status, term_reset(t));
		snprintf(note, sizeof(note), "%.55s%s", s->note, strlen(s->note) > 55 ? "..." : "");
		const char *row[] = {s->what, st, note};
		term_table_row(t, 2, cols, 3, row);
		json_array_append_new(steps, json_pack("{s:s,s:i,s:i,s:s}", "request", s->what, "status",
		                                       s->status, "contract", s->want, "answer", s->note));
	}
	term_printf(
	        t,
	        "  a cursor knows where it is, not how far from the start: no page 500, no total; the count\n"
	        "  answers with the planner's estimate and counts at most %s rows\n",
	        TERM_NUM(CFG(cfg)->count_cap, 0));
	lab_phase_metrics(lab, "api",
	                  json_pack("{s:o,s:I,s:I,s:b}", "steps", steps, "estimate", (json_int_t)a->estimate,
	                            "count_at_least", (json_int_t)a->count_at_least, "exact", a->exact));
}

static const struct lab_phase_tell TELLS[PAGINATION_PHASES] = {
        {before_seed, after_seed},
        {before_cost, after_cost},
        {before_walk, after_walk},
        {before_api, after_api},
};

static int serve(struct lab *lab, struct pagination_config *cfg)
{
	char err[LAB_ERRLEN], help[1600];
	term_printf(&lab->term, "seeding %s rows ...\n", TERM_NUM(cfg->rows, 0));
	if (pagination_setup(cfg, err, sizeof(err)) < 0)
		return lab_env_error(lab, "PostgreSQL", cfg->pg_url, err);
	struct pagination_api *api = pagination_api_start(cfg, lab->opts.port, err, sizeof(err));
	if (!api) {
		char terr[LAB_ERRLEN];
		pagination_teardown(cfg, terr, sizeof(terr));
		return lab_fail(lab, "cannot start the API: %s", err);
	}
	int port = pagination_api_port(api);
	snprintf(help, sizeof(help),
	         "  GET /v1/items?limit=20                  the newest page (limit 1..100, default 20)\n"
	         "  GET /v1/items?limit=20&cursor=<next>    the page after the one that gave next_cursor\n"
	         "  GET /v1/items/count                     the planner's estimate and a count capped at %d\n"
	         "  cursors expire after %d s and are signed with a key made at start: a restart voids them\n"
	         "  try: curl -s 'http://127.0.0.1:%d/v1/items?limit=2'\n"
	         "       next=$(curl -s 'http://127.0.0.1:%d/v1/items?limit=2' | sed -E "
	         "'s/.*\"next_cursor\":\"([^\"]*)\".*/\\1/')\n"
	         "       curl -s \"http://127.0.0.1:%d/v1/items?limit=2&cursor=$next\"\n"
	         "       curl -si 'http://127.0.0.1:%d/v1/items?page=500'      (400: a cursor cannot jump)\n"
	         "       curl -s 'http://127.0.0.1:%d/v1/items/count'\n",
	         cfg->count_cap, cfg->cursor_ttl_s, port, port, port, port, port);
	lab_serve_wait(lab, port, help);
	pagination_api_stop(api);
	pagination_teardown(cfg, err, sizeof(err));
	lab_free(lab);
	return LAB_EXIT_OK;
}

static void header(struct lab *lab, const struct pagination_config *cfg)
{
	char url[256];
	pg_url_redact(cfg->pg_url, url, sizeof(url));
	lab_config_set(lab, "rows", json_integer(cfg->rows));
	lab_config_set(lab, "page_size", json_integer(cfg->page_size));
	lab_config_set(lab, "walk_rows", json_integer(cfg->walk_rows));
	lab_config_set(lab, "walk_page", json_integer(cfg->walk_page));
	lab_config_set(lab, "cursor_ttl_s", json_integer(cfg->cursor_ttl_s));
	lab_header(lab, "PostgreSQL %s · feed of %s rows · pages of %d · walk of %s rows in pages of %d", url,
	           TERM_NUM(cfg->rows, 0), cfg->page_size, TERM_NUM(cfg->walk_rows, 0), cfg->walk_page);
}

/*
 * The key chart: the rows PostgreSQL read for one page at each depth, OFFSET beside keyset, on a
 * log scale: OFFSET's climb with the depth (it reads what it skips) against keyset's flat page.
 */
static void chart(struct lab *lab, const struct pagination_result *r)
{
	const struct pagination_cost *c = &r->cost;
	json_t *labels = json_array(), *offset = json_array(), *keyset = json_array();
	for (int i = 0; i < c->ndepths; i++) {
		char label[32];
		snprintf(label, sizeof(label), "page %s", TERM_NUM(c->offset[i].page, 0));
		json_array_append_new(labels, json_string(label));
		json_array_append_new(offset, json_integer(c->offset[i].rows_scanned));
		json_array_append_new(keyset, json_integer(c->keyset[i].rows_scanned));
	}
	char title[96];
	snprintf(title, sizeof(title), "rows read to return one page of %d, by depth", c->page_size);
	lab_chart(lab, json_pack("{s:s,s:s,s:o,s:[{s:s,s:o},{s:s,s:o}],s:b}", "title", title, "unit", "rows",
	                         "labels", labels, "series", "name", "OFFSET", "values", offset, "name",
	                         "keyset", "values", keyset, "log", true));
}

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "pagination", QUESTION, PAGINATION_PHASES, argc, argv) < 0)
		return lab.exit_code;
	if (lab_probe(&lab, true, false) < 0)
		return lab.exit_code;
	struct pagination_config cfg;
	pagination_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.seed = lab.opts.seed;
	if (lab.opts.serve)
		return serve(&lab, &cfg);

	header(&lab, &cfg);
	struct pagination_result *result = calloc(1, sizeof(*result));
	if (!result)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, PAGINATION_PHASES, &cfg, result};
	cfg.hooks = lab_teller_hooks(&teller);
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	char err[LAB_ERRLEN];
	int ret;
	if (pagination_run(&cfg, result, err, sizeof(err)) < 0) {
		ret = lab_run_failed(&lab, result->lost ? "PostgreSQL" : NULL, err);
	} else {
		struct lab_verdict verdict;
		pagination_judge(result, &verdict);
		chart(&lab, result);
		ret = lab_finish(&lab, &verdict);
	}
	free(result);
	return ret;
}
