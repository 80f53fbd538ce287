/*
 * sql_injection.h — the experiment of lab-sql-injection: "How does SQL injection work and how do
 * you prevent it?" OWASP Top 10 (2021): A03 Injection.
 *
 * Schema lab_sql_injection holds users (names and password hashes), notes (each owned by a user),
 * secrets (one API key) and audit_log (the throwaway table a stacked query drops). A search API,
 * GET <route>?user=ID&q=TEXT&sort=COL&dir=asc|desc, returns the caller's notes whose title holds
 * q. It is built twice:
 *
 *   naive          /v1/vulnerable/notes: snprintf puts q, sort and dir into the SQL, sent with
 *                  PQsendQuery (the simple protocol: several statements in one string run)
 *   parameterized  /v1/notes: q is $2 of PQsendQueryParams (the extended protocol: one
 *                  statement, values apart from the SQL), LIKE wildcards escaped, sort and dir
 *                  from an allow-list
 *
 * Both run as role lab_api (scripts/labenv and scripts/docker-initdb.sql make it: a login with no
 * privileges of its own), with search_path = lab_sql_injection, never as lab: the only rights a
 * payload has are those the lab granted lab_api inside the schema, so nothing outside it can be
 * touched. The phases:
 *
 *   1. setup           the data; lab_api granted what an app that owns its schema has: SELECT on
 *                      every table, CREATE in the schema, audit_log its own ("wide")
 *   2. naive           the classic payloads against the naive route: tautology, UNION of the
 *                      password hashes, UNION of the catalogue, boolean-blind and time-blind
 *                      extraction of the secret, a stacked DROP TABLE; what leaked, counted
 *   3. parameterized   the same payloads against the parameterized route: the extra rows, the
 *                      statements the server ran (pg_stat_statements); and the naive string sent
 *                      through the extended protocol (PQexecParams): "cannot insert multiple
 *                      commands into a prepared statement"
 *   4. order_by        what a parameter cannot be: ?sort= concatenated leaks the secret a bit per
 *                      request through ORDER BY CASE WHEN; the allow-list refuses every payload
 *                      (400), PQescapeIdentifier turns it into a missing column; LIKE wildcards in
 *                      a parameter ('%' matches every row) and their escape
 *   5. least_privilege the naive route again, lab_api now granted only SELECT (id, owner_id,
 *                      title) on notes: what still leaks and what no longer does
 *
 * sql_injection_run sets up, walks the phases and drops the schema; sql_injection_judge decides.
 * Errors: -1 (or NULL) and one line in err (errlen bytes). Nothing here prints.
 */
#ifndef LAB_SQL_INJECTION_H
#define LAB_SQL_INJECTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lab.h"

#define SQLI_SCHEMA     "lab_sql_injection"
#define SQLI_PHASES     5
#define SQLI_SECRET_MAX 48
#define SQLI_SAID_LEN   160
/* the caller every request of the lab's run speaks for (a stand-in for an authenticated user) */
#define SQLI_CALLER 1
/* the route of each handler */
#define SQLI_ROUTE_NAIVE "/v1/vulnerable/notes"
#define SQLI_ROUTE_SAFE  "/v1/notes"

struct sqli_config {
	const char *pg_url;       /* the lab's own role (lab): the schema, the data, the grants */
	const char *api_user;     /* the API's role (lab_api) and its password, over pg_url's host */
	const char *api_password; /* never printed */
	uint64_t seed;            /* the secret and the hashes */
	int users;                /* users, the caller among them */
	int notes_per_user;
	int secret_len;  /* characters of the secret (a-z0-9) */
	int time_chars;  /* phase 2: characters the time-blind attack reads (the rest extrapolated) */
	int sleep_ms;    /* the time-blind attack's pg_sleep when a bit is 1 */
	int order_chars; /* phase 4: characters the ORDER BY channel reads */
	int pool_size;   /* the API's connections */
	struct lab_phase_hooks hooks;
	void (*progress_cb)(const char *what, double done, void *arg); /* NULL = none */
	void *progress_arg;
};

/* The defaults (quick: the time-blind attack reads 3 characters, the rest extrapolated). */
void sql_injection_config_default(struct sqli_config *cfg, bool quick);

/* Creates the schema and its data, checks role lab_api, grants it the wide rights. */
int sql_injection_setup(const struct sqli_config *cfg, char *err, size_t errlen);
/* Drops the schema. */
int sql_injection_teardown(const struct sqli_config *cfg, char *err, size_t errlen);

/* ---- the API ---- */

struct sqli_api;

/*
 * Starts the API on 127.0.0.1:port (0 = a free one) over the schema sql_injection_setup made,
 * connected as cfg->api_user. GET /v1/notes always; GET /v1/vulnerable/notes only when
 * vulnerable. Parameters: user (required, 1..1,000,000,000), q (0..200 bytes, default ""), sort
 * (id | title, default id), dir (asc | desc, default asc); each at most once, nothing else.
 *   200 {"notes": [{"id", "owner", "title"}...], "count": n}
 *   400 {"error": "..."}: user missing or not a whole number in range, q too long or holding a
 *       NUL byte, a repeated or unknown parameter; on /v1/notes also a sort or dir outside the
 *       allow-list. Nothing reaches PostgreSQL then.
 *   500 {"error": ...}: the naive route passes on the server's message (as naive code does);
 *       the parameterized route says only "query failed".
 * Other methods: 405 with Allow: GET.
 */
struct sqli_api *sqli_api_start(const struct sqli_config *cfg, int port, bool vulnerable, char *err,
                                size_t errlen);
int sqli_api_port(const struct sqli_api *api);
/* Stops it (http_app_stop: the loop, then the pool, whose callbacks answer what is in flight). */
void sqli_api_stop(struct sqli_api *api);

/* ---- the phases and their numbers ---- */

enum sqli_attack {
	SQLI_BASELINE,      /* q=plan: the caller's own notes, the control */
	SQLI_TAUTOLOGY,     /* ' OR '1'='1' --: other users' notes */
	SQLI_UNION_HASHES,  /* ' UNION SELECT ... FROM users --: the password hashes */
	SQLI_UNION_CATALOG, /* ' UNION SELECT ... FROM pg_class --: the schema's table names */
	SQLI_BLIND_BOOL,    /* rows or none, a bisection per character: the secret */
	SQLI_BLIND_TIME,    /* pg_sleep or not, a bit per request: the secret */
	SQLI_STACKED,       /* '; DROP TABLE audit_log; --: the table */
	SQLI_ATTACKS
};

/* "tautology", "UNION: password hashes", ... */
const char *sqli_attack_name(enum sqli_attack a);
/* What the leaked count of attack a counts: "rows of other users", "hashes", "chars", ... */
const char *sqli_attack_unit(enum sqli_attack a);

struct sqli_outcome {
	int requests;
	int status;               /* the last answer's status */
	int rows;                 /* rows the answers held, all requests together */
	int leaked;               /* what the attack is after (sqli_attack_unit), counted against the truth */
	int attempted;            /* blind attacks: characters tried; stacked: tables aimed at (1) */
	double ms;                /* wall time of all its requests */
	char said[SQLI_SAID_LEN]; /* the last 500's error, "" when none */
};

/* What pg_stat_statements counted for lab_api while a phase ran. */
struct sqli_stmts {
	int64_t calls;  /* statements that completed */
	int shapes;     /* distinct normalized statements (queryid) among them */
	char kinds[96]; /* the shapes beyond the route's own: "UNION, DROP TABLE, pg_sleep" */
};

struct sqli_route_run {
	struct sqli_outcome a[SQLI_ATTACKS];
	struct sqli_stmts stmts;
	char secret_read[SQLI_SECRET_MAX + 1]; /* the boolean-blind attack's reading */
	bool table_dropped;                    /* audit_log gone after the stacked payload */
	double time_bit_ms;                    /* time-blind: the mean time of a request */
	int time_errors;                       /* time-blind: characters read wrong */
};

struct sqli_setup_facts {
	int users, notes, own_notes, foreign_notes, secret_len, tables;
	char secret_mask[SQLI_SECRET_MAX + 1]; /* the secret's first 2 characters, the rest '*' */
};

struct sqli_order {
	/* ?sort= concatenated, a bit per request */
	int naive_requests, naive_bits, naive_bits_right, naive_chars;
	/* the allow-list: every payload refused before any SQL */
	int allow_requests, allow_400, allow_bits;
	/* PQescapeIdentifier: the payload becomes one quoted name */
	bool ident_refused;
	char ident_said[SQLI_SAID_LEN];
	/* LIKE: '%' through a parameter, raw and escaped; the API's answer to q=% */
	int like_raw_rows, like_escaped_rows, like_api_rows, like_literal_titles;
};

struct sqli_result {
	struct sqli_setup_facts setup;  /* phase 1 */
	struct sqli_route_run naive;    /* phase 2 */
	struct sqli_route_run param;    /* phase 3 */
	bool multi_refused;             /* phase 3: PQexecParams refused the stacked string */
	char multi_said[SQLI_SAID_LEN]; /* ... with libpq's / the server's words */
	struct sqli_order order;        /* phase 4 */
	struct sqli_route_run least;    /* phase 5 */
	int least_order_bits_right;     /* phase 5: ORDER BY bits read right as lab_api least */
	int least_order_requests;
	bool lost;    /* the run failed because PostgreSQL no longer answers */
	bool no_role; /* the run failed because role lab_api is missing */
};

/*
 * Sets up, runs the five phases (cfg->hooks around each), tears down (also when a phase failed)
 * and fills *result. -1 and err when the setup or a phase failed; result->lost / no_role say
 * whether PostgreSQL went away or the role is missing.
 */
int sql_injection_run(const struct sqli_config *cfg, struct sqli_result *result, char *err, size_t errlen);

/* The claim and every threshold: fills v from the numbers of a run. */
void sql_injection_judge(const struct sqli_result *r, struct lab_verdict *v);

/* The phases as the run walks them (cfg: struct sqli_config, result: struct sqli_result). */
int sqli_phase_setup(const void *cfg, void *result, char *err, size_t errlen);
int sqli_phase_naive(const void *cfg, void *result, char *err, size_t errlen);
int sqli_phase_param(const void *cfg, void *result, char *err, size_t errlen);
int sqli_phase_order(const void *cfg, void *result, char *err, size_t errlen);
int sqli_phase_least(const void *cfg, void *result, char *err, size_t errlen);

#endif
