#include "pg.h"

#include <arpa/inet.h>
#include <event2/http.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *pg_url_default(void)
{
	const char *url = getenv("LAB_PG_URL");
	return url && *url ? url : PG_DEFAULT_URL;
}

/* The bytes of the UTF-8 character that starts with byte c (1 for ASCII and for stray bytes). */
static size_t utf8_len(unsigned char c)
{
	if (c >= 0xF0 && c <= 0xF4)
		return 4;
	if (c >= 0xE0)
		return c <= 0xEF ? 3 : 1;
	if (c >= 0xC2)
		return 2;
	return 1;
}

void pg_message_line(char *out, size_t outlen, const char *msg)
{
	if (!out || outlen == 0)
		return;
	size_t n = 0;
	bool space = false;
	const char *s = msg && *msg ? msg : "unknown error";
	while (*s) {
		if (*s == '\n' || *s == '\r' || *s == '\t' || *s == ' ') {
			space = n > 0;
			s++;
			continue;
		}
		/* a lead byte and the continuation bytes that follow it (a stray byte of another
		 * encoding stands alone: it never swallows the newline after it) */
		size_t len = utf8_len((unsigned char)*s), have = 1;
		while (have < len && ((unsigned char)s[have] & 0xC0) == 0x80)
			have++;
		if (n + (space ? 1 : 0) + have + 1 > outlen)
			break; /* the whole character or nothing of it */
		if (space)
			out[n++] = ' ';
		space = false;
		memcpy(out + n, s, have);
		n += have;
		s += have;
	}
	out[n] = '\0';
}

void pg_conn_error(PGconn *conn, char *err, size_t errlen)
{
	pg_message_line(err, errlen, conn ? PQerrorMessage(conn) : "out of memory");
}

static void result_error(PGconn *conn, PGresult *res, char *err, size_t errlen)
{
	const char *msg = res ? PQresultErrorMessage(res) : NULL;
	if (msg && *msg)
		pg_message_line(err, errlen, msg);
	else if (res)
		snprintf(err, errlen, "unexpected result status %s", PQresStatus(PQresultStatus(res)));
	else
		pg_conn_error(conn, err, errlen);
}

/* The value of keyword in opts, NULL when unset or empty. */
static const char *conninfo_value(const PQconninfoOption *opts, const char *keyword)
{
	for (const PQconninfoOption *o = opts; o->keyword; o++)
		if (!strcmp(o->keyword, keyword))
			return o->val && *o->val ? o->val : NULL;
	return NULL;
}

/* Appends the len bytes of s to the n bytes of out, percent-encoded (evhttp_uriencode: all but
 * A-Z a-z 0-9 - . _ ~) as libpq decodes them; a host that is an IPv6 address goes in brackets, as
 * it is. false when out of memory or room. */
static bool put_encoded(char *out, size_t outlen, size_t *n, const char *s, size_t len, bool host)
{
	bool v6 = host && memchr(s, ':', len) && strspn(s, "0123456789abcdefABCDEF:.") >= len;
	char *enc = v6 ? NULL : evhttp_uriencode(s, (ev_ssize_t)len, 0);
	if (!v6 && !enc)
		return false;
	int w = v6 ? snprintf(out + *n, outlen - *n, "[%.*s]", (int)len, s)
	           : snprintf(out + *n, outlen - *n, "%s", enc);
	free(enc);
	if (w < 0 || (size_t)w >= outlen - *n)
		return false;
	*n += (size_t)w;
	return true;
}

static bool put_char(char *out, size_t outlen, size_t *n, char c)
{
	if (*n + 1 >= outlen)
		return false;
	out[(*n)++] = c;
	out[*n] = '\0';
	return true;
}

/* host and port lists ("a,b" and "1,2", or one port for all) as a URL's netloc: "a:1,b:2" */
static bool put_hosts(char *out, size_t outlen, size_t *n, const char *hosts, const char *ports)
{
	const char *h = hosts ? hosts : "", *p = ports ? ports : "";
	bool one_port = !strchr(p, ',');
	do {
		size_t hl = strcspn(h, ","), pl = strcspn(p, ",");
		if (!put_encoded(out, outlen, n, h, hl, true))
			return false;
		if (pl && !(put_char(out, outlen, n, ':') && put_encoded(out, outlen, n, p, pl, false)))
			return false;
		h += hl;
		if (!one_port)
			p += pl + (p[pl] == ',');
		if (*h == ',' && !put_char(out, outlen, n, ','))
			return false;
	} while (*h++ == ',');
	return true;
}

void pg_url_redact(const char *url, char *out, size_t outlen)
{
	if (!out || outlen == 0)
		return;
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(url ? url : "", &perr);
	if (!opts) {
		PQfreemem(perr);
		snprintf(out, outlen, "(unparsable URL)");
		return;
	}
	const char *user = conninfo_value(opts, "user"), *host = conninfo_value(opts, "host");
	const char *port = conninfo_value(opts, "port"), *db = conninfo_value(opts, "dbname");
	if (!host)
		host = conninfo_value(opts, "hostaddr");
	/* every part percent-encoded as libpq decodes it: a user "a@b" printed raw would read as
	 * user "a" at host "b"; no host stays empty (libpq's default, a Unix socket), not "localhost" */
	size_t n = (size_t)snprintf(out, outlen, "postgres://");
	bool ok = n < outlen;
	if (ok && user)
		ok = put_encoded(out, outlen, &n, user, strlen(user), false) && put_char(out, outlen, &n, '@');
	ok = ok && put_hosts(out, outlen, &n, host, port) && put_char(out, outlen, &n, '/');
	if (ok && db)
		ok = put_encoded(out, outlen, &n, db, strlen(db), false);
	if (!ok)
		snprintf(out, outlen, "(URL too long to show)");
	PQconninfoFree(opts);
}

/* A port as libpq would take it, digits only, 1..65535; -1 otherwise. */
static int port_number(const char *s)
{
	if (!s || !*s || strlen(s) > 5 || strspn(s, "0123456789") != strlen(s))
		return -1;
	int port = atoi(s);
	return port >= 1 && port <= 65535 ? port : -1;
}

int pg_url_endpoint(const char *url, char *host, size_t hostlen, int *port, char *err, size_t errlen)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(url ? url : "", &perr);
	if (!opts) {
		/* libpq's message quotes the URL, password and all */
		PQfreemem(perr);
		snprintf(err, errlen, "cannot parse the PostgreSQL URL");
		return -1;
	}
	const char *name = conninfo_value(opts, "hostaddr");
	if (!name)
		name = conninfo_value(opts, "host");
	const char *portval = conninfo_value(opts, "port");
	int ret = -1;
	struct addrinfo hints, *ai = NULL;
	if (!name || name[0] == '/' || strchr(name, ',') || (portval && strchr(portval, ','))) {
		snprintf(err, errlen, "the URL names %s, not one TCP host:port",
		         !name || name[0] == '/' ? "a unix socket" : "several hosts");
		goto out;
	}
	*port = portval ? port_number(portval) : 5432;
	if (*port < 0) {
		snprintf(err, errlen, "the URL's port \"%s\" is not a port number (1 to 65535)", portval);
		goto out;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	int gai = getaddrinfo(name, NULL, &hints, &ai);
	if (gai != 0 || !ai) {
		snprintf(err, errlen, "cannot resolve %s to an IPv4 address: %s", name, gai_strerror(gai));
		goto out;
	}
	if (!inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, host, (socklen_t)hostlen))
		snprintf(err, errlen, "the address of %s does not fit in %zu bytes", name, hostlen);
	else
		ret = 0;
	freeaddrinfo(ai);
out:
	PQconninfoFree(opts);
	return ret;
}

/* Written once by lab_init before any connection, read by every connect after. */
static char application_name[64];

void pg_set_application_name(const char *name)
{
	snprintf(application_name, sizeof(application_name), "%s", name ? name : "");
}

const char *pg_application_name(void)
{
	return application_name;
}

int pg_conn_params(const char *url, const char *const *extra_keys, const char *const *extra_vals,
                   const char **keys, const char **vals, int max)
{
	int n = 0;
	/* libpq takes the later of two values: the URL's connect_timeout wins over ours, the extras
	 * and the application_name win over the URL's */
	keys[n] = "connect_timeout", vals[n++] = PG_CONNECT_TIMEOUT_S;
	keys[n] = "dbname", vals[n++] = url;
	for (int i = 0; extra_keys && extra_keys[i]; i++) {
		if (n + 2 >= max)
			return -1;
		keys[n] = extra_keys[i], vals[n++] = extra_vals[i];
	}
	if (application_name[0]) {
		if (n + 2 >= max)
			return -1;
		keys[n] = "application_name", vals[n++] = application_name;
	}
	keys[n] = NULL, vals[n] = NULL;
	return 0;
}

static atomic_bool connections_refused;

void pg_refuse_connections(void)
{
	atomic_store(&connections_refused, true);
}

bool pg_connections_refused(void)
{
	return atomic_load(&connections_refused);
}

PGconn *pg_connect_always(const char *url, const char *const *extra_keys, const char *const *extra_vals,
                          char *err, size_t errlen)
{
	const char *keys[PG_CONN_PARAMS_MAX], *vals[PG_CONN_PARAMS_MAX];
	if (pg_conn_params(url, extra_keys, extra_vals, keys, vals, PG_CONN_PARAMS_MAX) < 0) {
		snprintf(err, errlen, "too many connection parameters");
		return NULL;
	}
	PGconn *conn = PQconnectdbParams(keys, vals, 1);
	if (!conn || PQstatus(conn) != CONNECTION_OK) {
		pg_conn_error(conn, err, errlen);
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

PGconn *pg_connect_with(const char *url, const char *const *extra_keys, const char *const *extra_vals,
                        char *err, size_t errlen)
{
	if (pg_connections_refused()) {
		snprintf(err, errlen, "the lab is ending (interrupted): no new connection");
		return NULL;
	}
	PGconn *conn = pg_connect_always(url, extra_keys, extra_vals, err, errlen);
	/* opened while the guard began: its backend may have missed the guard's sweep, so it runs
	 * nothing (a CREATE after the guard's DROP would leave the schema behind) */
	if (conn && pg_connections_refused()) {
		PQfinish(conn);
		snprintf(err, errlen, "the lab is ending (interrupted): no new connection");
		return NULL;
	}
	return conn;
}

PGconn *pg_connect(const char *url, char *err, size_t errlen)
{
	return pg_connect_with(url, NULL, NULL, err, errlen);
}

int pg_exec(PGconn *conn, const char *sql, char *err, size_t errlen)
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		result_error(conn, res, err, errlen);
		PQclear(res);
		return -1;
	}
	PQclear(res);
	return 0;
}

PGresult *pg_query(PGconn *conn, const char *sql, int nparams, const char *const *params, char *err,
                   size_t errlen)
{
	PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		result_error(conn, res, err, errlen);
		PQclear(res);
		return NULL;
	}
	return res;
}

int pg_query_int64(PGconn *conn, const char *sql, int nparams, const char *const *params, int64_t *out,
                   char *err, size_t errlen)
{
	PGresult *res = pg_query(conn, sql, nparams, params, err, errlen);
	if (!res)
		return -1;
	int ret = -1;
	if (PQntuples(res) < 1 || PQnfields(res) < 1) {
		snprintf(err, errlen, "expected one row, got %d", PQntuples(res));
		goto out;
	}
	if (PQgetisnull(res, 0, 0)) {
		snprintf(err, errlen, "expected an integer, got NULL");
		goto out;
	}
	const char *v = PQgetvalue(res, 0, 0);
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno || end == v || *end) {
		snprintf(err, errlen, "expected an integer, got \"%.64s\"", v);
		goto out;
	}
	*out = n;
	ret = 0;
out:
	PQclear(res);
	return ret;
}

static int schema_sql(PGconn *conn, const char *fmt1, const char *fmt2, const char *schema, char *err,
                      size_t errlen)
{
	char *ident = PQescapeIdentifier(conn, schema, strlen(schema));
	if (!ident) {
		pg_conn_error(conn, err, errlen);
		return -1;
	}
	char sql[512];
	int n = snprintf(sql, sizeof(sql), fmt1, ident);
	if (fmt2 && n > 0 && (size_t)n < sizeof(sql))
		snprintf(sql + n, sizeof(sql) - (size_t)n, fmt2, ident);
	PQfreemem(ident);
	return pg_exec(conn, sql, err, errlen);
}

int pg_schema_create(PGconn *conn, const char *schema, char *err, size_t errlen)
{
	/* quiet: a NOTICE that the schema did not exist is not news */
	return schema_sql(conn, "SET client_min_messages = warning; DROP SCHEMA IF EXISTS %s CASCADE; ",
	                  "CREATE SCHEMA %s", schema, err, errlen);
}

int pg_schema_drop(PGconn *conn, const char *schema, char *err, size_t errlen)
{
	return schema_sql(conn, "SET client_min_messages = warning; DROP SCHEMA IF EXISTS %s CASCADE", NULL,
	                  schema, err, errlen);
}

int pg_url_schema_drop(const char *url, const char *schema, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(url, err, errlen);
	if (!conn)
		return -1;
	int ret = pg_schema_drop(conn, schema, err, errlen);
	PQfinish(conn);
	return ret;
}

int pg_statements_calls(PGconn *conn, const char *like, int64_t *calls, char *err, size_t errlen)
{
	const char *params[] = {like};
	int64_t present = 0;
	if (pg_query_int64(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'", 0,
	                   NULL, &present, err, errlen) < 0)
		return -1;
	if (!present) {
		snprintf(err, errlen,
		         "pg_stat_statements is not installed in this database: preload it "
		         "(shared_preload_libraries) and CREATE EXTENSION pg_stat_statements");
		return -1;
	}
	return pg_query_int64(conn,
	                      "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements "
	                      "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
	                      "AND query LIKE $1",
	                      1, params, calls, err, errlen);
}
