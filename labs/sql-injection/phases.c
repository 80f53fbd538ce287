/*
 * phases.c — the five phases of lab-sql-injection (sql_injection.h tells what each shows). Each
 * phase that attacks starts the API (both routes: the lab's own run is where the vulnerable one
 * may exist), points the client at one route, and reads what the server ran from
 * pg_stat_statements on a connection of the lab's own role.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"

static const char *const NAMES[SQLI_ATTACKS] = {
        "baseline (q=plan)", "tautology",  "UNION: password hashes", "UNION: the catalogue",
        "boolean-blind",     "time-blind", "stacked DROP TABLE",
};
static const char *const UNITS[SQLI_ATTACKS] = {
        "rows of other users", "rows of other users", "hashes",         "table names",
        "secret chars",        "secret chars",        "tables dropped",
};

const char *sqli_attack_name(enum sqli_attack a)
{
	return a < SQLI_ATTACKS ? NAMES[a] : "?";
}

const char *sqli_attack_unit(enum sqli_attack a)
{
	return a < SQLI_ATTACKS ? UNITS[a] : "?";
}

int sqli_phase_setup(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct sqli_config *cfg = cfgv;
	struct sqli_result *r = result;
	int rc = sql_injection_setup(cfg, err, errlen);
	if (rc == -2)
		r->no_role = true;
	if (rc < 0)
		return sqli_lost(cfg, r, err, errlen);
	struct sqli_truth t;
	if (sqli_truth_read(cfg, &t, err, errlen) < 0)
		return sqli_lost(cfg, r, err, errlen);
	struct sqli_setup_facts *s = &r->setup;
	s->users = t.nhashes;
	s->own_notes = t.own_notes;
	s->foreign_notes = t.foreign_notes;
	s->notes = t.own_notes + t.foreign_notes;
	s->secret_len = (int)strlen(t.secret);
	s->tables = 4;
	for (int i = 0; i < s->secret_len; i++)
		s->secret_mask[i] = i < 2 ? t.secret[i] : '*';
	return 0;
}

/* Runs every attack against one route of a fresh API; what the server ran into run->stmts. */
static int attack_route(const struct sqli_config *cfg, const char *route, struct sqli_route_run *run,
                        char *err, size_t errlen)
{
	struct sqli_truth truth;
	struct sqli_stmt_snap *snap = calloc(1, sizeof(*snap));
	char *body = malloc(SQLI_BODY_MAX);
	PGconn *lab = NULL;
	struct sqli_api *api = NULL;
	int ret = -1;
	if (!snap || !body) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (sqli_truth_read(cfg, &truth, err, errlen) < 0 || !(lab = pg_connect(cfg->pg_url, err, errlen)) ||
	    !(api = sqli_api_start(cfg, 0, true, err, errlen)) || sqli_stmts_snap(lab, snap, err, errlen) < 0)
		goto out;
	struct sqli_client c = {sqli_api_port(api), route, &truth, cfg, body};
	if (sqli_attack_all(&c, run, err, errlen) < 0)
		goto out;
	sqli_api_stop(api);
	api = NULL;
	ret = sqli_stmts_diff(lab, snap, &run->stmts, err, errlen);
out:
	sqli_api_stop(api);
	PQfinish(lab);
	free(body);
	free(snap);
	return ret;
}

int sqli_phase_naive(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct sqli_config *cfg = cfgv;
	struct sqli_result *r = result;
	if (attack_route(cfg, SQLI_ROUTE_NAIVE, &r->naive, err, errlen) < 0)
		return sqli_lost(cfg, r, err, errlen);
	/* the next phases aim at it too */
	if (r->naive.table_dropped && sqli_table_restore(cfg, err, errlen) < 0)
		return sqli_lost(cfg, r, err, errlen);
	return 0;
}

/* The naive route's stacked string through the extended protocol: libpq sends it as one Parse. */
static int multi_statement(const struct sqli_config *cfg, struct sqli_result *r, char *err, size_t errlen)
{
	char sql[1024];
	if (sqli_naive_sql(sql, sizeof(sql), SQLI_CALLER, "'; DROP TABLE audit_log; --") < 0) {
		snprintf(err, errlen, "the stacked statement does not fit");
		return -1;
	}
	PGconn *conn = sqli_api_connect(cfg, err, errlen);
	if (!conn)
		return -1;
	PGresult *res = PQexecParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0);
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	pg_message_line(r->multi_said, sizeof(r->multi_said), primary ? primary : PQerrorMessage(conn));
	/* 42601 syntax_error, "cannot insert multiple commands into a prepared statement" */
	r->multi_refused = res && PQresultStatus(res) == PGRES_FATAL_ERROR && state &&
	                   !strcmp(state, "42601") && strstr(r->multi_said, "multiple commands");
	PQclear(res);
	PQfinish(conn);
	int exists = sqli_table_exists(cfg, err, errlen);
	if (exists < 0)
		return -1;
	if (!exists)
		r->param.table_dropped = true;
	return 0;
}

int sqli_phase_param(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct sqli_config *cfg = cfgv;
	struct sqli_result *r = result;
	if (attack_route(cfg, SQLI_ROUTE_SAFE, &r->param, err, errlen) < 0 ||
	    multi_statement(cfg, r, err, errlen) < 0)
		return sqli_lost(cfg, r, err, errlen);
	return 0;
}

/* PQescapeIdentifier: the ORDER BY payload becomes one quoted name, which no column has. */
static int escape_identifier(PGconn *conn, struct sqli_order *o, char *err, size_t errlen)
{
	static const char PAYLOAD[] = "(CASE WHEN (SELECT value FROM secrets LIMIT 1) > 'm' THEN title ELSE "
	                              "lpad(id::text, 20, '0') END)";
	char *ident = PQescapeIdentifier(conn, PAYLOAD, strlen(PAYLOAD));
	if (!ident) {
		pg_conn_error(conn, err, errlen);
		return -1;
	}
	char sql[512];
	snprintf(sql, sizeof(sql), "SELECT id FROM notes WHERE owner_id = 1 ORDER BY %s LIMIT 1", ident);
	PQfreemem(ident);
	PGresult *res = PQexecParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0);
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	/* 42703 undefined_column */
	o->ident_refused =
	        res && PQresultStatus(res) == PGRES_FATAL_ERROR && state && !strcmp(state, "42703");
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	pg_message_line(o->ident_said, sizeof(o->ident_said), primary ? primary : PQerrorMessage(conn));
	PQclear(res);
	return 0;
}

/* LIKE: '%' as a parameter is still a wildcard; escaped, it is a percent sign. */
static int like(PGconn *conn, struct sqli_order *o, char *err, size_t errlen)
{
	static const char *const SQL[] = {
	        "SELECT count(*) FROM notes WHERE owner_id = 1 AND title ILIKE '%' || $1 || '%'",
	        "SELECT count(*) FROM notes WHERE owner_id = 1 AND title ILIKE '%' || $1 || '%' ESCAPE '\\'",
	        "SELECT count(*) FROM notes WHERE owner_id = 1 AND strpos(title, $1) > 0",
	};
	const char *raw[] = {"%"}, *escaped[] = {"\\%"};
	int64_t n[3];
	for (int i = 0; i < 3; i++)
		if (pg_query_int64(conn, SQL[i], 1, i == 1 ? escaped : raw, &n[i], err, errlen) < 0)
			return -1;
	o->like_raw_rows = (int)n[0];
	o->like_escaped_rows = (int)n[1];
	o->like_literal_titles = (int)n[2];
	return 0;
}

static int order_routes(const struct sqli_config *cfg, struct sqli_order *o, char *err, size_t errlen)
{
	struct sqli_truth truth;
	char *body = malloc(SQLI_BODY_MAX);
	struct sqli_api *api = NULL;
	int ret = -1;
	if (!body) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (sqli_truth_read(cfg, &truth, err, errlen) < 0 ||
	    !(api = sqli_api_start(cfg, 0, true, err, errlen)))
		goto out;
	struct sqli_client c = {sqli_api_port(api), SQLI_ROUTE_NAIVE, &truth, cfg, body};
	struct sqli_order_count naive = {0}, allow = {0};
	if (sqli_order_attack(&c, cfg->order_chars, &naive, err, errlen) < 0)
		goto out;
	c.route = SQLI_ROUTE_SAFE;
	if (sqli_order_attack(&c, cfg->order_chars, &allow, err, errlen) < 0)
		goto out;
	int status;
	int64_t first;
	if (sqli_search(&c, "%", NULL, NULL, &status, &o->like_api_rows, &first, err, errlen) < 0)
		goto out;
	o->naive_requests = naive.requests;
	o->naive_bits = naive.requests;
	o->naive_bits_right = naive.right;
	o->naive_chars = naive.right / 7;
	o->allow_requests = allow.requests;
	o->allow_400 = allow.status400;
	o->allow_bits = allow.right;
	ret = 0;
out:
	sqli_api_stop(api);
	free(body);
	return ret;
}

int sqli_phase_order(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct sqli_config *cfg = cfgv;
	struct sqli_result *r = result;
	if (order_routes(cfg, &r->order, err, errlen) < 0)
		return sqli_lost(cfg, r, err, errlen);
	PGconn *conn = sqli_api_connect(cfg, err, errlen);
	if (!conn)
		return sqli_lost(cfg, r, err, errlen);
	int ret =
	        escape_identifier(conn, &r->order, err, errlen) < 0 || like(conn, &r->order, err, errlen) < 0
	                ? -1
	                : 0;
	PQfinish(conn);
	return ret < 0 ? sqli_lost(cfg, r, err, errlen) : 0;
}

/* The ORDER BY channel against the naive route, as the least-privilege role: one character. */
static int least_order(const struct sqli_config *cfg, struct sqli_result *r, char *err, size_t errlen)
{
	struct sqli_truth truth;
	char *body = malloc(SQLI_BODY_MAX);
	struct sqli_api *api = NULL;
	int ret = -1;
	if (!body) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (sqli_truth_read(cfg, &truth, err, errlen) < 0 ||
	    !(api = sqli_api_start(cfg, 0, true, err, errlen)))
		goto out;
	struct sqli_client c = {sqli_api_port(api), SQLI_ROUTE_NAIVE, &truth, cfg, body};
	struct sqli_order_count o = {0};
	if (sqli_order_attack(&c, 1, &o, err, errlen) < 0)
		goto out;
	r->least_order_requests = o.requests;
	r->least_order_bits_right = o.right;
	ret = 0;
out:
	sqli_api_stop(api);
	free(body);
	return ret;
}

int sqli_phase_least(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct sqli_config *cfg = cfgv;
	struct sqli_result *r = result;
	if (sqli_grant(cfg, SQLI_LEAST, err, errlen) < 0 ||
	    attack_route(cfg, SQLI_ROUTE_NAIVE, &r->least, err, errlen) < 0 ||
	    least_order(cfg, r, err, errlen) < 0)
		return sqli_lost(cfg, r, err, errlen);
	return 0;
}
