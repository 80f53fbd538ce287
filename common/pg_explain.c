/*
 * pg_explain.c — EXPLAIN's JSON, run and read (see pg_explain.h).
 */
#include "pg_explain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"

int64_t pg_plan_int(json_t *node, const char *key, int64_t dflt)
{
	json_t *v = json_object_get(node, key);
	return json_is_integer(v) ? (int64_t)json_integer_value(v)
	       : json_is_real(v)  ? (int64_t)json_real_value(v)
	                          : dflt;
}

const char *pg_plan_type(json_t *node)
{
	const char *type = json_string_value(json_object_get(node, "Node Type"));
	return type ? type : "";
}

json_t *pg_plan_children(json_t *node)
{
	json_t *plans = json_object_get(node, "Plans");
	return json_is_array(plans) ? plans : NULL;
}

void pg_plan_shape(json_t *node, char *out, size_t len)
{
	size_t used = 0;
	if (!len)
		return;
	out[0] = '\0';
	for (; node && used < len; node = json_array_get(pg_plan_children(node), 0)) {
		const char *type = pg_plan_type(node);
		int w = snprintf(out + used, len - used, "%s%s", used ? " > " : "", *type ? type : "?");
		used += w > 0 ? (size_t)w : 0;
	}
}

void pg_explain_free(struct pg_explain *out)
{
	json_decref(out->doc);
	memset(out, 0, sizeof(*out));
}

int pg_explain_parse(const char *text, struct pg_explain *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	json_error_t jerr;
	out->doc = json_loads(text, 0, &jerr);
	json_t *top = json_array_get(out->doc, 0);
	json_t *plan = json_object_get(top, "Plan");
	json_t *exec = json_object_get(top, "Execution Time");
	if (!json_is_object(plan) || !json_is_number(exec)) {
		snprintf(err, errlen, "EXPLAIN did not return a JSON plan with an Execution Time%s%s",
		         out->doc ? "" : ": ", out->doc ? "" : jerr.text);
		pg_explain_free(out);
		return -1;
	}
	out->plan = plan;
	out->exec_ms = json_number_value(exec);
	out->hit = pg_plan_int(plan, "Shared Hit Blocks", 0);
	out->read = pg_plan_int(plan, "Shared Read Blocks", 0);
	out->buffers = out->hit + out->read;
	out->rows = pg_plan_int(plan, "Actual Rows", 0);
	out->wal_bytes = pg_plan_int(plan, "WAL Bytes", 0);
	return 0;
}

int pg_explain_run(PGconn *conn, const char *options, const char *sql, int nparams, const char *const *params,
                   struct pg_explain *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	size_t len = strlen(options) + strlen(sql) + 32;
	char *stmt = malloc(len);
	if (!stmt) {
		snprintf(err, errlen, "out of memory for EXPLAIN");
		return -1;
	}
	snprintf(stmt, len, "EXPLAIN (%s, FORMAT JSON) %s", options, sql);
	PGresult *res = pg_query(conn, stmt, nparams, params, err, errlen);
	free(stmt);
	if (!res)
		return -1;
	int rc = -1;
	if (PQntuples(res) != 1 || PQnfields(res) != 1)
		snprintf(err, errlen, "EXPLAIN returned %d rows of %d columns, not one", PQntuples(res),
		         PQnfields(res));
	else
		rc = pg_explain_parse(PQgetvalue(res, 0, 0), out, err, errlen);
	PQclear(res);
	return rc;
}
