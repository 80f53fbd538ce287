/*
 * internal.h — what the files of lab-sql-injection share and nobody else uses:
 *
 *   sql_injection.c  config, schema and data, lab_api's grants, the run over the phases, the judge
 *   api.c            the HTTP API (the naive and the parameterized route) on http_app and the pool
 *   client.c         the blocking HTTP GET, the payloads, the attacks as a client runs them
 *   phases.c         the five phases
 */
#ifndef LAB_SQL_INJECTION_INTERNAL_H
#define LAB_SQL_INJECTION_INTERNAL_H

#include <libpq-fe.h>

#include "sql_injection.h"

#define SCHEMA SQLI_SCHEMA
/* the columns a search returns, the same on both routes (a UNION must match them) */
#define NOTE_COLUMNS "id, owner_id, title"
/* a q longer than this is refused: a title search needs no more */
#define Q_MAX 200
/* the LIKE escape character the parameterized route declares (ESCAPE '\') */
#define LIKE_ESCAPE '\\'
/* the naive route's statement at most: q, sort and dir of Q_MAX bytes each and the rest fit */
#define SQL_MAX 1024
/* user=ID: 1 to this */
#define SQLI_USER_MAX 1000000000L

struct evhttp_request;

/*
 * A search as both routes read it from the query string: user (1..1000000000, required), q, sort
 * and dir (each at most once, at most Q_MAX bytes, no %00), nothing else. sort and dir default to
 * id and asc. The safe route (naive false) also holds sort to id|title and dir to asc|desc; the
 * naive one builds its statement by string concatenation into sql ("" on the safe route).
 */
struct sqli_search {
	long user;
	char q[Q_MAX + 1], sort[Q_MAX + 1], dir[Q_MAX + 1];
	char sql[SQL_MAX];
};
/* api.c: what the routes call before anything costs a query. 0, or -1 and err (the route: 400). */
int sqli_parse_search(struct evhttp_request *req, bool naive, struct sqli_search *s, char *err,
                      size_t errlen);
/* q with LIKE's wildcards and the escape character escaped: '%' matches a '%', nothing more. */
void sqli_like_escape(const char *q, char *out, size_t len);

/* What lab_api may do in the schema: what an app owning it has, or only what the search needs. */
enum sqli_grants { SQLI_WIDE, SQLI_LEAST };

/*
 * The conninfo of the API's role: pg_url with user and password replaced by cfg's, and
 * options "-c search_path=lab_sql_injection -c statement_timeout=5s" (a key=value string, values
 * quoted). -1 and err when pg_url cannot be parsed or out is too small.
 */
int sqli_api_conninfo(const struct sqli_config *cfg, char *out, size_t outlen, char *err, size_t errlen);

/* A blocking connection as the API's role (sqli_api_conninfo). NULL and err on failure. */
PGconn *sqli_api_connect(const struct sqli_config *cfg, char *err, size_t errlen);

/* Sets lab_api's rights in the schema (as lab, the owner). */
int sqli_grant(const struct sqli_config *cfg, enum sqli_grants g, char *err, size_t errlen);

/* Whether table audit_log exists now: 1 yes, 0 no, -1 and err. */
int sqli_table_exists(const struct sqli_config *cfg, char *err, size_t errlen);
/* Creates audit_log again (after a payload dropped it), owned as the wide grants want. */
int sqli_table_restore(const struct sqli_config *cfg, char *err, size_t errlen);

/* The truth the attacks are counted against (read as lab, never through the API). */
struct sqli_truth {
	char secret[SQLI_SECRET_MAX + 1];
	char hashes[16][128]; /* "username:password_hash" of each user */
	int nhashes;
	int own_notes; /* the caller's notes */
	int foreign_notes;
};
int sqli_truth_read(const struct sqli_config *cfg, struct sqli_truth *t, char *err, size_t errlen);

/* pg_stat_statements for role lab_api: a snapshot before a phase, the difference after. */
struct sqli_stmt_snap {
	int n;
	int64_t queryid[1024], calls[1024];
};
int sqli_stmts_snap(PGconn *lab, struct sqli_stmt_snap *s, char *err, size_t errlen);
int sqli_stmts_diff(PGconn *lab, const struct sqli_stmt_snap *before, struct sqli_stmts *out, char *err,
                    size_t errlen);

/* The naive route's SQL for q (sort id, dir asc): what phase 3 sends through PQexecParams. */
int sqli_naive_sql(char *out, size_t len, long user, const char *q);

/* ---- client.c: the attacks, each against one route of a running API ---- */
struct sqli_client {
	int port;
	const char *route; /* SQLI_ROUTE_NAIVE or SQLI_ROUTE_SAFE */
	const struct sqli_truth *truth;
	const struct sqli_config *cfg;
	char *body; /* a reply's body, SQLI_BODY_MAX bytes */
};
#define SQLI_BODY_MAX (256 * 1024)

/* Runs every attack of enum sqli_attack against the route into run; -1 and err when one failed. */
int sqli_attack_all(struct sqli_client *c, struct sqli_route_run *run, char *err, size_t errlen);

/* One request: q, sort, dir (NULL: left out). Status into *status, the rows into *rows (-1: not a
 * 200 with notes), the first row's id into *first (0: none). -1 and err when it could not ask. */
int sqli_search(struct sqli_client *c, const char *q, const char *sort, const char *dir, int *status,
                int *rows, int64_t *first, char *err, size_t errlen);

/* What the ORDER BY channel read: a bit per request through ?sort=. */
struct sqli_order_count {
	int requests, status400, answered, right; /* answered: a 200 whose first row gave a bit */
};
/* Reads chars characters of the secret a bit per request through ?sort= on c's route. */
int sqli_order_attack(struct sqli_client *c, int chars, struct sqli_order_count *o, char *err, size_t errlen);

void sqli_progress(const struct sqli_config *cfg, const char *what, double done);

/* A phase failed: does PostgreSQL still answer? Sets r->lost when not. Returns -1. */
int sqli_lost(const struct sqli_config *cfg, struct sqli_result *r, char *err, size_t errlen);

#endif
