/*
 * pg.h — PostgreSQL for the labs: connect with a clear error, checked exec and query helpers,
 * a lab's own schema, and what the server itself counted (pg_stat_statements).
 *
 * Every function checks the result against the exact PGRES_* status it expects. On failure it
 * returns -1 (or NULL) and writes one line into err (errlen bytes, always NUL-terminated): the
 * server's or libpq's message, without libpq's trailing newline. Blocking libpq only: the
 * asynchronous path lives in pool.h.
 */
#ifndef LAB_PG_H
#define LAB_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PG_DEFAULT_URL "postgres://lab:lab@127.0.0.1:55432/lab"

/* LAB_PG_URL when set and not empty, else PG_DEFAULT_URL. */
const char *pg_url_default(void);

/*
 * Writes url without its password into out: "postgres://lab@127.0.0.1:55432/lab", a URL that
 * libpq reads back to the same user, host, port and database (each part percent-encoded, an IPv6
 * host in brackets, no host left empty). Accepts a URI or a key=value conninfo; on a string
 * libpq cannot parse, writes "(unparsable URL)", and "(URL too long to show)" when out is too
 * small. This function can't fail.
 */
void pg_url_redact(const char *url, char *out, size_t outlen);

/*
 * The one TCP endpoint url names, for a proxy to forward to: its host (hostaddr wins when both
 * are set) resolved to a numeric IPv4 address into host (hostlen bytes), and its port (5432 when
 * the URL names none). Accepts a URI or a key=value conninfo. -1 and one line in err when the URL
 * cannot be parsed (err never quotes it: it may hold a password), names a unix socket (no host,
 * or one starting with '/'), several hosts or ports, a port that is not 1..65535, or a host that
 * does not resolve to IPv4.
 */
int pg_url_endpoint(const char *url, char *host, size_t hostlen, int *port, char *err, size_t errlen);

/* connect_timeout when the URL sets none: a port where something else answers fails in ~2 s */
#define PG_CONNECT_TIMEOUT_S "2"
/* room for the keyword/value arrays of pg_conn_params: its own 3, the caller's extras, NULL */
#define PG_CONN_PARAMS_MAX 12

/*
 * The application_name every connection of this process sends from now on (copied; NULL or
 * "" sends none). lab_init sets "lab-<name>:<pid>", so a lab interrupted by Ctrl-C can find and
 * end its own backends, and no other's. This function can't fail.
 */
void pg_set_application_name(const char *name);
const char *pg_application_name(void);

/*
 * The keyword/value arrays (NULL-terminated, for PQconnectdbParams or PQconnectStartParams with
 * expand_dbname 1) for a connection to url as every connection of the suite is made:
 * connect_timeout 2 s unless the URL sets one, the URL itself, then extra_keys/extra_vals
 * (NULL-terminated, may be NULL), which override the URL (a proxy's host and port), then the
 * process's application_name. keys and vals have room for max entries. -1 when they do not
 * fit; the pointers are borrowed, not copied.
 */
int pg_conn_params(const char *url, const char *const *extra_keys, const char *const *extra_vals,
                   const char **keys, const char **vals, int max);

/*
 * Connects (blocking, with pg_conn_params). NULL and err on failure; the connection is never
 * left half-open.
 */
PGconn *pg_connect(const char *url, char *err, size_t errlen);

/*
 * The Ctrl-C guard's first step (common/lab.c): from now on pg_connect and pg_connect_with refuse,
 * and close a connection that finished opening after it, and the pool opens none (pool.h). So
 * every backend the lab has is one the guard can see and end before it drops the schema: a
 * thread opening a connection at that moment cannot CREATE what the guard just dropped.
 */
void pg_refuse_connections(void);
bool pg_connections_refused(void);
/* pg_connect_with, refused or not: the guard's own connection. */
PGconn *pg_connect_always(const char *url, const char *const *extra_keys, const char *const *extra_vals,
                          char *err, size_t errlen);
/* pg_connect with extra keyword/value pairs that override the URL's (NULL-terminated). */
PGconn *pg_connect_with(const char *url, const char *const *extra_keys, const char *const *extra_vals,
                        char *err, size_t errlen);

/*
 * Copies msg into out (outlen bytes, always NUL-terminated) as one line: runs of newlines, tabs
 * and spaces become one space, and none lead or trail; a message too long is cut on a UTF-8
 * character boundary, never inside a character. libpq's messages end in "\n" and may hold
 * several lines ("...failed: Connection refused\n\tIs the server running..."). NULL or empty
 * msg gives "unknown error". This function can't fail.
 */
void pg_message_line(char *out, size_t outlen, const char *msg);

/* Copies PQerrorMessage(conn), as pg_message_line does, into err. */
void pg_conn_error(PGconn *conn, char *err, size_t errlen);

/* Runs sql (no parameters, may hold several statements); expects COMMAND_OK or TUPLES_OK. */
int pg_exec(PGconn *conn, const char *sql, char *err, size_t errlen);

/*
 * Runs one statement with text parameters; expects TUPLES_OK. The caller PQclear()s the result.
 * NULL and err on failure.
 */
PGresult *pg_query(PGconn *conn, const char *sql, int nparams, const char *const *params, char *err,
                   size_t errlen);

/*
 * Runs one statement with text parameters that returns one row; parses its first column as an
 * integer into *out. -1 when the statement fails, returns no row, or the value is NULL or not
 * an integer.
 */
int pg_query_int64(PGconn *conn, const char *sql, int nparams, const char *const *params, int64_t *out,
                   char *err, size_t errlen);

/* DROP SCHEMA IF EXISTS schema CASCADE, then CREATE SCHEMA schema. schema is quoted as an identifier. */
int pg_schema_create(PGconn *conn, const char *schema, char *err, size_t errlen);

/* DROP SCHEMA IF EXISTS schema CASCADE. */
int pg_schema_drop(PGconn *conn, const char *schema, char *err, size_t errlen);

/* Connects to url, drops schema as pg_schema_drop does, disconnects: a lab's teardown. */
int pg_url_schema_drop(const char *url, const char *schema, char *err, size_t errlen);

/*
 * Statements the server ran: the sum of pg_stat_statements.calls in this database over the
 * entries whose query text matches the LIKE pattern. Take it before and after and subtract;
 * never reset the view (other labs may be running beside this one). -1 when the extension
 * is missing (the message says how to load it).
 */
int pg_statements_calls(PGconn *conn, const char *like, int64_t *calls, char *err, size_t errlen);

#endif
