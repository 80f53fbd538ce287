/*
 * lab-sql-injection — "How does SQL injection work and how do you prevent it?"
 * OWASP Top 10 (2021): A03 Injection.
 *
 * What you will see: a search API over users' notes, built twice, attacked for real:
 *   1. the data (users with password hashes, notes, a secret, a throwaway table) and the API's
 *      role lab_api, granted what an app owning its schema has;
 *   2. the classic payloads against the naive route (snprintf into the SQL, PQsendQuery):
 *      tautology, UNION, boolean- and time-blind extraction, a stacked DROP TABLE;
 *   3. the same payloads against the parameterized route (PQsendQueryParams): nothing extra, one
 *      statement shape on the server; and the stacked string refused by the extended protocol;
 *   4. what a parameter cannot be: ?sort= leaking a bit per request, the allow-list, and LIKE;
 *   5. the naive route again as a least-privilege role: what still leaks, what no longer does.
 * Flags: the common ones, and --vulnerable (with --serve: serve the naive route too), a flag of
 * the lab's own (lab_init_flags; refused without --serve).
 *
 * This file only tells: the experiment and every threshold are in sql_injection.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lab.h"
#include "pg.h"
#include "sql_injection.h"

#define QUESTION "How does SQL injection work and how do you prevent it?"

#define CFG(c) ((const struct sqli_config *)(c))
#define RES(r) ((const struct sqli_result *)(r))

static void before_setup(struct lab *lab, const void *cfg)
{
	lab_phase(lab,
	          "The data: %d users, %d notes each, a secret, a throwaway table; the API logs in as %s",
	          CFG(cfg)->users, CFG(cfg)->notes_per_user, CFG(cfg)->api_user);
}

static void after_setup(struct lab *lab, const void *cfg, const void *result)
{
	const struct sqli_setup_facts *s = &RES(result)->setup;
	term_printf(&lab->term,
	            "  users %d (password hashes) · notes %d (%d the caller's, user %d; %d of others) · "
	            "secrets: one key of %d chars (%s) · audit_log\n"
	            "  %s: SELECT on every table, CREATE in the schema, owns audit_log (an app that owns its "
	            "schema); search_path %s\n",
	            s->users, s->notes, s->own_notes, SQLI_CALLER, s->foreign_notes, s->secret_len,
	            s->secret_mask, CFG(cfg)->api_user, SQLI_SCHEMA);
	lab_phase_metrics(lab, "setup",
	                  json_pack("{s:i,s:i,s:i,s:i,s:i}", "users", s->users, "notes", s->notes,
	                            "own_notes", s->own_notes, "foreign_notes", s->foreign_notes,
	                            "secret_len", s->secret_len));
}

static const char *leak_text(char *buf, size_t len, const struct term *t, enum sqli_attack a,
                             const struct sqli_outcome *o, bool bad)
{
	const char *colour = o->leaked ? (bad ? term_red(t) : term_yellow(t)) : term_green(t);
	if (a == SQLI_STACKED)
		snprintf(buf, len, "%s%s%s", colour, o->leaked ? "audit_log dropped" : "audit_log kept",
		         term_reset(t));
	else if (a == SQLI_BLIND_TIME && o->attempted)
		snprintf(buf, len, "%s%d/%d%s %s", colour, o->leaked, o->attempted, term_reset(t),
		         sqli_attack_unit(a));
	else
		snprintf(buf, len, "%s%d%s %s", colour, o->leaked, term_reset(t), sqli_attack_unit(a));
	return buf;
}

static json_t *run_json(const struct sqli_route_run *run)
{
	json_t *attacks = json_object();
	for (int i = 0; i < SQLI_ATTACKS; i++) {
		const struct sqli_outcome *o = &run->a[i];
		json_object_set_new(attacks, sqli_attack_name((enum sqli_attack)i),
		                    json_pack("{s:i,s:i,s:i,s:i,s:s,s:f,s:s}", "requests", o->requests,
		                              "status", o->status, "rows", o->rows, "leaked", o->leaked,
		                              "unit", sqli_attack_unit((enum sqli_attack)i), "ms", o->ms,
		                              "said", o->said));
	}
	return json_pack("{s:o,s:I,s:i,s:s,s:b}", "attacks", attacks, "statements",
	                 (json_int_t)run->stmts.calls, "shapes", run->stmts.shapes, "kinds", run->stmts.kinds,
	                 "table_dropped", run->table_dropped);
}

static void before_naive(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab,
	          "The naive route: snprintf(\"... ILIKE '%%%%%%s%%%%' ...\", q), sent with PQsendQuery");
}

static void after_naive(struct lab *lab, const void *cfg, const void *result)
{
	const struct sqli_route_run *run = &RES(result)->naive;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"attack", 22, 'l'},
	                          {"requests", 8, 'r'},
	                          {"status", 6, 'r'},
	                          {"leaked", 26, 'l'},
	                          {"time", 9, 'r'}};
	term_table_header(t, 2, cols, 5);
	for (int i = 0; i < SQLI_ATTACKS; i++) {
		const struct sqli_outcome *o = &run->a[i];
		char leaked[96], st[16];
		snprintf(st, sizeof(st), "%d", o->status);
		const char *row[] = {sqli_attack_name((enum sqli_attack)i), TERM_NUM(o->requests, 0), st,
		                     leak_text(leaked, sizeof(leaked), t, (enum sqli_attack)i, o, true),
		                     TERM_US(o->ms * 1000)};
		term_table_row(t, 2, cols, 5, row);
	}
	const struct sqli_outcome *tb = &run->a[SQLI_BLIND_TIME];
	int len = RES(result)->setup.secret_len;
	term_printf(
	        t,
	        "  boolean-blind read \"%s\" (a bisection: 7 requests a char); time-blind: 5 plain requests "
	        "to\n"
	        "  time, then a bit each (pg_sleep %d ms on a 1), %d chars at %s a bit: all %d would take %d "
	        "requests, ~%s\n",
	        run->secret_read, CFG(cfg)->sleep_ms, tb->attempted, TERM_US(run->time_bit_ms * 1000), len,
	        len * 7, TERM_US(run->time_bit_ms * 1000 * len * 7));
	lab_phase_metrics(lab, "naive", run_json(run));
}

static void before_param(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab,
	          "The parameterized route: q as $2 of PQsendQueryParams, LIKE escaped, sort allow-listed");
}

static void after_param(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct sqli_result *r = RES(result);
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"attack", 22, 'l'}, {"naive leaked", 24, 'l'}, {"parameterized", 24, 'l'}};
	term_table_header(t, 2, cols, 3);
	for (int i = 0; i < SQLI_ATTACKS; i++) {
		char a[96], b[96];
		const char *row[] = {sqli_attack_name((enum sqli_attack)i),
		                     leak_text(a, sizeof(a), t, (enum sqli_attack)i, &r->naive.a[i], true),
		                     leak_text(b, sizeof(b), t, (enum sqli_attack)i, &r->param.a[i], true)};
		term_table_row(t, 2, cols, 3, row);
	}
	term_printf(t,
	            "  pg_stat_statements (what lab_api ran): naive %s statements in %d shapes (%s);\n"
	            "  parameterized %s in %d. The naive stacked string through PQexecParams: %s%s%s\n",
	            TERM_NUM(r->naive.stmts.calls, 0), r->naive.stmts.shapes, r->naive.stmts.kinds,
	            TERM_NUM(r->param.stmts.calls, 0), r->param.stmts.shapes,
	            r->multi_refused ? term_green(t) : term_red(t), r->multi_said, term_reset(t));
	lab_phase_metrics(lab, "parameterized",
	                  json_pack("{s:o,s:b,s:s}", "run", run_json(&r->param), "multi_statement_refused",
	                            r->multi_refused, "multi_statement_error", r->multi_said));
}

static void before_order(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "What a parameter cannot be: ?sort= (an identifier), and LIKE's wildcards");
}

/* "column "(CASE WHEN (SELECT value FROM ..." does not exist": the quoted name cut short */
static const char *short_said(char *buf, size_t len, const char *said)
{
	const char *open = strchr(said, '"'), *close = strrchr(said, '"');
	if (open && close && close - open > 34)
		snprintf(buf, len, "%.*s...%s", (int)(open - said) + 31, said, close);
	else
		snprintf(buf, len, "%s", said);
	return buf;
}

static void after_order(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct sqli_order *o = &RES(result)->order;
	const struct term *t = &lab->term;
	char said[SQLI_SAID_LEN];
	term_printf(
	        t,
	        "  ORDER BY <sort> concatenated     %3d requests  %s%d/%d bits right%s (%d chars): CASE WHEN "
	        "<bit> THEN title ELSE id\n"
	        "  allow-list {id, title}           %3d requests  %d answered 400, %s%d bits%s\n"
	        "  PQescapeIdentifier (fallback)    %sERROR %s%s\n"
	        "  LIKE: q=%% as a parameter matched %d of the caller's %d notes; escaped (ESCAPE '\\') %d; "
	        "the API %d\n",
	        o->naive_requests, term_red(t), o->naive_bits_right, o->naive_bits, term_reset(t),
	        o->naive_chars, o->allow_requests, o->allow_400, term_green(t), o->allow_bits, term_reset(t),
	        o->ident_refused ? term_green(t) : term_red(t), short_said(said, sizeof(said), o->ident_said),
	        term_reset(t), o->like_raw_rows, RES(result)->setup.own_notes, o->like_escaped_rows,
	        o->like_api_rows);
	lab_phase_metrics(
	        lab, "order_by",
	        json_pack("{s:i,s:i,s:i,s:i,s:i,s:b,s:s,s:i,s:i,s:i}", "naive_requests", o->naive_requests,
	                  "naive_bits_right", o->naive_bits_right, "allow_requests", o->allow_requests,
	                  "allow_400", o->allow_400, "allow_bits", o->allow_bits, "ident_refused",
	                  o->ident_refused, "ident_error", o->ident_said, "like_raw_rows", o->like_raw_rows,
	                  "like_escaped_rows", o->like_escaped_rows, "like_api_rows", o->like_api_rows));
}

static void before_least(struct lab *lab, const void *cfg)
{
	lab_phase(lab,
	          "Defence in depth: the naive route again, %s granted only SELECT (id, owner_id, title) ON "
	          "notes",
	          CFG(cfg)->api_user);
}

static void after_least(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct sqli_result *r = RES(result);
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"attack", 22, 'l'},
	                          {"wide grants", 24, 'l'},
	                          {"least privilege", 24, 'l'},
	                          {"the server said", 40, 'l'}};
	term_table_header(t, 2, cols, 4);
	for (int i = SQLI_TAUTOLOGY; i < SQLI_ATTACKS; i++) {
		char a[96], b[96], said[48];
		const char *s = r->least.a[i].said;
		if (!strncmp(s, "query failed: ", 14))
			s += 14;
		snprintf(said, sizeof(said), "%.40s", s);
		const char *row[] = {sqli_attack_name((enum sqli_attack)i),
		                     leak_text(a, sizeof(a), t, (enum sqli_attack)i, &r->naive.a[i], true),
		                     leak_text(b, sizeof(b), t, (enum sqli_attack)i, &r->least.a[i], true),
		                     said};
		term_table_row(t, 2, cols, 4, row);
	}
	term_printf(
	        t,
	        "  ORDER BY channel as %s: %d of %d bits right. Still open: other users' titles (the role "
	        "must "
	        "read notes)\n  and the catalogue; the hole is still there: only the parameters close it\n",
	        CFG(cfg)->api_user, r->least_order_bits_right, r->least_order_requests);
	lab_phase_metrics(lab, "least_privilege",
	                  json_pack("{s:o,s:i,s:i}", "run", run_json(&r->least), "order_bits_right",
	                            r->least_order_bits_right, "order_requests", r->least_order_requests));
}

static const struct lab_phase_tell TELLS[SQLI_PHASES] = {
        {before_setup, after_setup}, {before_naive, after_naive}, {before_param, after_param},
        {before_order, after_order}, {before_least, after_least},
};

/*
 * The key chart: what each payload leaked through the naive route, the parameterized one and the
 * naive one as a least-privilege role. It is the claim at a glance: bars everywhere, none, some.
 */
static json_t *leak_chart(const struct sqli_result *r)
{
	const struct sqli_route_run *runs[] = {&r->naive, &r->param, &r->least};
	const char *names[] = {"naive (concatenated)", "parameterized", "naive, least privilege"};
	json_t *labels = json_array(), *series = json_array();
	for (int i = SQLI_TAUTOLOGY; i < SQLI_ATTACKS; i++)
		json_array_append_new(labels, json_string(sqli_attack_name((enum sqli_attack)i)));
	for (int s = 0; s < 3; s++) {
		json_t *values = json_array();
		for (int i = SQLI_TAUTOLOGY; i < SQLI_ATTACKS; i++)
			json_array_append_new(values, json_integer(runs[s]->a[i].leaked));
		json_array_append_new(series, json_pack("{s:s,s:o}", "name", names[s], "values", values));
	}
	return json_pack("{s:s,s:s,s:o,s:o,s:b}", "title", "what each payload leaked, per route", "unit",
	                 "rows · hashes · names · chars · tables", "labels", labels, "series", series, "log",
	                 false);
}

static int serve(struct lab *lab, struct sqli_config *cfg, bool vulnerable)
{
	char err[LAB_ERRLEN], help[1400];
	if (sql_injection_setup(cfg, err, sizeof(err)) < 0)
		return lab_fail(lab, "%s", err);
	struct sqli_api *api = sqli_api_start(cfg, lab->opts.port, vulnerable, err, sizeof(err));
	if (!api) {
		char terr[LAB_ERRLEN];
		sql_injection_teardown(cfg, terr, sizeof(terr));
		return lab_fail(lab, "cannot start the API: %s", err);
	}
	int port = sqli_api_port(api);
	if (vulnerable)
		fprintf(stderr,
		        "lab-sql-injection: WARNING: --vulnerable serves %s, which is open to SQL "
		        "injection on purpose (127.0.0.1 only, as role %s inside schema %s)\n",
		        SQLI_ROUTE_NAIVE, cfg->api_user, SQLI_SCHEMA);
	snprintf(
	        help, sizeof(help),
	        "  GET /v1/notes?user=1&q=plan&sort=title&dir=asc   parameterized (sort: id|title, dir: "
	        "asc|desc)\n"
	        "%s"
	        "  try: curl -s 'http://127.0.0.1:%d/v1/notes?user=1&q=plan'\n"
	        "       curl -s "
	        "'http://127.0.0.1:%d/v1/notes?user=1&q=%%27%%20OR%%20%%271%%27%%3D%%271%%27%%20--'\n"
	        "%s",
	        vulnerable
	                ? "  GET /v1/vulnerable/notes?user=1&q=...           the naive route (--vulnerable)\n"
	                : "  (the naive route exists only with --vulnerable)\n",
	        port, port,
	        vulnerable ? "       the same against /v1/vulnerable/notes: every user's notes\n" : "");
	lab_serve_wait(lab, port, help);
	sqli_api_stop(api);
	sql_injection_teardown(cfg, err, sizeof(err));
	lab_free(lab);
	return LAB_EXIT_OK;
}

int main(int argc, char **argv)
{
	struct lab lab;
	bool vulnerable = false;
	const struct lab_flag flags[] = {{"--vulnerable",
	                                  "with --serve, also serve " SQLI_ROUTE_NAIVE
	                                  ", open to SQL injection on purpose (prints a warning)",
	                                  &vulnerable, true}};
	if (lab_init_flags(&lab, "sql-injection", QUESTION, SQLI_PHASES, flags, 1, argc, argv) < 0)
		return lab.exit_code;
	if (lab_probe(&lab, true, false) < 0)
		return lab.exit_code;
	struct sqli_config cfg;
	sql_injection_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.seed = lab.opts.seed;
	if (lab.opts.serve)
		return serve(&lab, &cfg, vulnerable);

	char url[256];
	pg_url_redact(cfg.pg_url, url, sizeof(url));
	lab_config_set(&lab, "time_chars", json_integer(cfg.time_chars));
	lab_config_set(&lab, "sleep_ms", json_integer(cfg.sleep_ms));
	lab_header(&lab, "PostgreSQL %s · OWASP Top 10 (2021) A03 Injection · API role %s · pg_sleep %d ms",
	           url, cfg.api_user, cfg.sleep_ms);
	struct sqli_result *result = calloc(1, sizeof(*result));
	if (!result)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, SQLI_PHASES, &cfg, result};
	cfg.hooks = lab_teller_hooks(&teller);
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	char err[LAB_ERRLEN];
	int ret;
	if (sql_injection_run(&cfg, result, err, sizeof(err)) < 0) {
		ret = lab_run_failed(&lab, result->lost ? "PostgreSQL" : NULL, err);
	} else {
		struct lab_verdict verdict;
		sql_injection_judge(result, &verdict);
		lab_chart(&lab, leak_chart(result));
		ret = lab_finish(&lab, &verdict);
	}
	free(result);
	return ret;
}
