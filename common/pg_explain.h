/*
 * pg_explain.h — what the server says a statement cost: EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
 * run and read with jansson. The facts every lab reads are lifted out (time, the whole plan's
 * shared buffers, rows, WAL bytes); the parsed plan stays for a lab's own walk, with small helpers
 * to read a node.
 *
 * Buffers: a node's "Shared Hit Blocks" and "Shared Read Blocks" include its children's, so the
 * top node's are the whole plan's (planning's own buffers are reported apart and not counted).
 *
 * Errors: functions that can fail return -1 and write one line into err (errlen bytes).
 */
#ifndef LAB_PG_EXPLAIN_H
#define LAB_PG_EXPLAIN_H
#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

struct pg_explain {
	json_t *doc;       /* the whole document (owned: pg_explain_free) */
	json_t *plan;      /* its top "Plan" node (borrowed from doc) */
	double exec_ms;    /* "Execution Time" */
	int64_t hit, read; /* the top node's shared buffers: hit and read from disk or the OS */
	int64_t buffers;   /* hit + read: the pages the whole plan touched */
	int64_t rows;      /* the top node's "Actual Rows" */
	int64_t wal_bytes; /* the top node's "WAL Bytes" (with the WAL option; 0 without) */
};

/*
 * Runs "EXPLAIN (<options>, FORMAT JSON) <sql>" with params ($1...) and parses the plan into out
 * (which the caller frees with pg_explain_free, also after a failure). options: "ANALYZE,
 * BUFFERS", say, or "ANALYZE, BUFFERS, WAL, TIMING OFF". -1 and err when the statement fails or
 * does not return one JSON plan with an "Execution Time" (which needs ANALYZE).
 */
int pg_explain_run(PGconn *conn, const char *options, const char *sql, int nparams, const char *const *params,
                   struct pg_explain *out, char *err, size_t errlen);
/* Parses EXPLAIN's JSON text into out (as pg_explain_run does after running it). */
int pg_explain_parse(const char *text, struct pg_explain *out, char *err, size_t errlen);
/* Frees what out holds and zeroes it. Safe on a zeroed or freed struct. */
void pg_explain_free(struct pg_explain *out);

/* A node's integer field (a real is truncated); dflt when absent or not a number. */
int64_t pg_plan_int(json_t *node, const char *key, int64_t dflt);
/* A node's "Node Type" ("Index Scan"), or "" when it has none. */
const char *pg_plan_type(json_t *node);
/* A node's children (its "Plans" array), or NULL: for json_array_foreach. */
json_t *pg_plan_children(json_t *node);
/* "Limit > Index Scan": the node types down the first child of each, into out (truncated). */
void pg_plan_shape(json_t *node, char *out, size_t len);
#endif
