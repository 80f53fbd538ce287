/*
 * sql_injection.c — lab-sql-injection's experiment as a whole: its config, the schema and its
 * data, role lab_api's rights in it, what the server counted (pg_stat_statements), the run over
 * the five phases (phases.c) and the judge. The telling is in main.c; nothing here prints.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "rng.h"

void sql_injection_config_default(struct sqli_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	/* the role and password scripts/labenv and scripts/docker-initdb.sql make */
	cfg->api_user = "lab_api";
	cfg->api_password = "lab_api";
	cfg->seed = 1;
	cfg->users = 5;
	cfg->notes_per_user = 6;
	/* an API key's worth of entropy: 12 of [a-z0-9] is 62 bits */
	cfg->secret_len = 12;
	/* a bit that is 1 costs sleep_ms: 3 characters are 21 requests and about 0.6 s; the whole
	 * secret (84 requests, ~2.5 s) only without --quick */
	cfg->time_chars = quick ? 3 : 12;
	/* well above a request's own time on loopback (~1 ms), short enough to read many bits */
	cfg->sleep_ms = 50;
	cfg->order_chars = quick ? 4 : 12;
	/* one client at a time in the lab's run; a few more for curl */
	cfg->pool_size = 3;
}

void sqli_progress(const struct sqli_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done, cfg->progress_arg);
}

static void quote_value(char *out, size_t outlen, size_t *n, const char *key, const char *v)
{
	*n += (size_t)snprintf(out + *n, *n < outlen ? outlen - *n : 0, "%s%s='", *n ? " " : "", key);
	for (; *v; v++) {
		if (*v == '\'' || *v == '\\')
			*n += (size_t)snprintf(out + *n, *n < outlen ? outlen - *n : 0, "\\");
		*n += (size_t)snprintf(out + *n, *n < outlen ? outlen - *n : 0, "%c", *v);
	}
	*n += (size_t)snprintf(out + *n, *n < outlen ? outlen - *n : 0, "'");
}

int sqli_api_conninfo(const struct sqli_config *cfg, char *out, size_t outlen, char *err, size_t errlen)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(cfg->pg_url, &perr);
	if (!opts) {
		/* never the message: it may quote the URL, password and all */
		snprintf(err, errlen, "the PostgreSQL URL cannot be parsed");
		PQfreemem(perr);
		return -1;
	}
	size_t n = 0;
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (o->val && *o->val && strcmp(o->keyword, "user") && strcmp(o->keyword, "password") &&
		    strcmp(o->keyword, "options"))
			quote_value(out, outlen, &n, o->keyword, o->val);
	PQconninfoFree(opts);
	quote_value(out, outlen, &n, "user", cfg->api_user);
	quote_value(out, outlen, &n, "password", cfg->api_password);
	/* a payload's unqualified names resolve inside the schema; a stuck statement ends */
	quote_value(out, outlen, &n, "options", "-c search_path=" SCHEMA " -c statement_timeout=5s");
	if (n >= outlen) {
		snprintf(err, errlen, "the API's conninfo does not fit");
		return -1;
	}
	return 0;
}

/* The lab's own connections as lab_api say nothing on stderr (PQescapeIdentifier's long name is
 * truncated with a NOTICE): what the server said is in the lab's numbers. */
static void notice_ignore(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

PGconn *sqli_api_connect(const struct sqli_config *cfg, char *err, size_t errlen)
{
	char conninfo[2048];
	if (sqli_api_conninfo(cfg, conninfo, sizeof(conninfo), err, errlen) < 0)
		return NULL;
	PGconn *conn = pg_connect(conninfo, err, errlen);
	if (conn)
		PQsetNoticeProcessor(conn, notice_ignore, NULL);
	return conn;
}

/* lab_api exists and lab may grant it rights and end its backends (a member of it). */
static int role_check(PGconn *conn, const struct sqli_config *cfg, char *err, size_t errlen)
{
	const char *p[] = {cfg->api_user};
	int64_t ok = 0;
	if (pg_query_int64(conn,
	                   "SELECT count(*) FROM pg_roles WHERE rolname = $1 AND NOT rolsuper"
	                   " AND pg_has_role(current_user, oid, 'MEMBER')",
	                   1, p, &ok, err, errlen) < 0)
		return -1;
	if (ok != 1) {
		snprintf(
		        err, errlen,
		        "role %s is missing (or not granted to this role): scripts/labenv up adds it to a "
		        "labenv cluster; a Docker one: docker compose down -v && docker compose up -d --wait",
		        cfg->api_user);
		return -2;
	}
	return 0;
}

static const char DDL[] =
        "CREATE TABLE " SCHEMA ".users (id bigint PRIMARY KEY, username text NOT NULL UNIQUE,"
        " password_hash text NOT NULL);"
        "CREATE TABLE " SCHEMA ".notes (id bigint PRIMARY KEY, owner_id bigint NOT NULL REFERENCES " SCHEMA
        ".users, title text NOT NULL, body text NOT NULL);"
        "CREATE TABLE " SCHEMA ".secrets (name text PRIMARY KEY, value text NOT NULL);"
        "CREATE TABLE " SCHEMA ".audit_log (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " at timestamptz NOT NULL DEFAULT now(), what text NOT NULL);"
        "INSERT INTO " SCHEMA ".audit_log (what) VALUES ('schema created')";

/* Users 1..n (the caller is 1), notes_per_user notes each, the secret. */
static const char SEED_SQL[] =
        "WITH u AS (INSERT INTO " SCHEMA ".users SELECT i, ($3::text[])[i],"
        " 'pbkdf2_sha256$600000$' || substr(md5($1 || ':salt:' || i), 1, 16) || '$' ||"
        " encode(sha256(convert_to($1 || ':pw:' || i, 'UTF8')), 'base64')"
        " FROM generate_series(1, $2::int) i RETURNING id, username)"
        " INSERT INTO " SCHEMA ".notes SELECT (u.id - 1) * $4::int + k, u.id,"
        " CASE WHEN u.id = 1 THEN '' ELSE u.username || '''s ' END ||"
        " (ARRAY['travel plan', 'budget: 100% done', 'plan for the launch', 'groceries',"
        " 'zoo trip plan', 'archive'])[1 + (k - 1) % 6] || CASE WHEN k > 6 THEN ' ' || k ELSE '' END,"
        " 'private to ' || u.username || ': ' || md5($1 || u.id || ':' || k)"
        " FROM u, generate_series(1, $4::int) k";

static const char *const NAMES = "{alice,bob,carol,dave,erin,frank,grace,heidi}";

static int seed_data(PGconn *conn, const struct sqli_config *cfg, char *err, size_t errlen)
{
	char seed[24], users[16], per[16], secret[SQLI_SECRET_MAX + 1];
	snprintf(seed, sizeof(seed), "%llu", (unsigned long long)cfg->seed);
	snprintf(users, sizeof(users), "%d", cfg->users);
	snprintf(per, sizeof(per), "%d", cfg->notes_per_user);
	const char *p[] = {seed, users, NAMES, per};
	PGresult *res = PQexecParams(conn, SEED_SQL, 4, NULL, p, NULL, NULL, 0);
	bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		pg_message_line(err, errlen, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
	PQclear(res);
	if (!ok)
		return -1;
	static const char ALPHABET[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	uint64_t st = rng_stream(cfg->seed, 12);
	int i = 0;
	for (; i < cfg->secret_len && i < SQLI_SECRET_MAX; i++)
		secret[i] = ALPHABET[rng_between(&st, 0, (int)sizeof(ALPHABET) - 2)];
	secret[i] = '\0';
	const char *sp[] = {secret};
	res = PQexecParams(conn, "INSERT INTO " SCHEMA ".secrets VALUES ('payment_api_key', $1)", 1, NULL, sp,
	                   NULL, NULL, 0);
	ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		pg_message_line(err, errlen, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
	PQclear(res);
	return ok ? 0 : -1;
}

static int grant_on(PGconn *conn, const struct sqli_config *cfg, enum sqli_grants g, char *err, size_t errlen)
{
	char *role = PQescapeIdentifier(conn, cfg->api_user, strlen(cfg->api_user));
	if (!role) {
		pg_conn_error(conn, err, errlen);
		return -1;
	}
	char sql[1024];
	if (g == SQLI_WIDE)
		/* what an app that connects as its schema's owner can do: read every table, make and
		 * drop tables */
		snprintf(sql, sizeof(sql),
		         "GRANT USAGE, CREATE ON SCHEMA " SCHEMA " TO %s;"
		         "GRANT SELECT ON ALL TABLES IN SCHEMA " SCHEMA " TO %s;"
		         "ALTER TABLE " SCHEMA ".audit_log OWNER TO %s",
		         role, role, role);
	else
		/* what the search needs and nothing else: three columns of one table, no DDL */
		snprintf(sql, sizeof(sql),
		         "ALTER TABLE " SCHEMA ".audit_log OWNER TO CURRENT_USER;"
		         "REVOKE ALL ON ALL TABLES IN SCHEMA " SCHEMA " FROM %s;"
		         "REVOKE CREATE ON SCHEMA " SCHEMA " FROM %s;"
		         "GRANT USAGE ON SCHEMA " SCHEMA " TO %s;"
		         "GRANT SELECT (" NOTE_COLUMNS ") ON " SCHEMA ".notes TO %s",
		         role, role, role, role);
	PQfreemem(role);
	return pg_exec(conn, sql, err, errlen);
}

int sqli_grant(const struct sqli_config *cfg, enum sqli_grants g, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = grant_on(conn, cfg, g, err, errlen);
	PQfinish(conn);
	return ret;
}

/*
 * What a payload running as lab_api can leave OUTSIDE the schema, undone (lab may: it is a member
 * of lab_api): large objects (lo_create / lo_from_bytea are open to PUBLIC, and a DROP SCHEMA does
 * not see them) and anything else it owns in this database, by DROP OWNED; and its own role's
 * defaults (an ordinary role may ALTER ROLE itself SET ...) and its password (a stacked payload's
 * ALTER ROLE ... PASSWORD), both reset as lab_api, the password sent as the verifier libpq
 * computes (never the plain text on the wire or in pg_stat_statements). Run after the schema is
 * dropped, and before it is made (a Ctrl-C'd run's leftovers: the guard drops only the schema).
 */
static int role_clean(PGconn *conn, const struct sqli_config *cfg, char *err, size_t errlen)
{
	char *role = PQescapeIdentifier(conn, cfg->api_user, strlen(cfg->api_user));
	char *verifier = PQencryptPasswordConn(conn, cfg->api_password, cfg->api_user, NULL);
	char *secret = verifier ? PQescapeLiteral(conn, verifier, strlen(verifier)) : NULL;
	int ret = -1;
	if (!role || !secret) {
		pg_conn_error(conn, err, errlen);
	} else {
		char sql[1024];
		snprintf(sql, sizeof(sql),
		         "DROP OWNED BY %s; SET ROLE %s; ALTER ROLE %s RESET ALL; ALTER ROLE %s PASSWORD %s; "
		         "RESET ROLE",
		         role, role, role, role, secret);
		ret = pg_exec(conn, sql, err, errlen);
	}
	PQfreemem(role);
	PQfreemem(verifier);
	PQfreemem(secret);
	return ret;
}

int sql_injection_setup(const struct sqli_config *cfg, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = role_check(conn, cfg, err, errlen);
	if (ret == 0 &&
	    (role_clean(conn, cfg, err, errlen) < 0 || pg_schema_create(conn, SCHEMA, err, errlen) < 0 ||
	     pg_exec(conn, DDL, err, errlen) < 0 || seed_data(conn, cfg, err, errlen) < 0 ||
	     grant_on(conn, cfg, SQLI_WIDE, err, errlen) < 0))
		ret = -1;
	PQfinish(conn);
	return ret;
}

int sql_injection_teardown(const struct sqli_config *cfg, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = pg_schema_drop(conn, SCHEMA, err, errlen) < 0 || role_clean(conn, cfg, err, errlen) < 0 ? -1
	                                                                                                  : 0;
	PQfinish(conn);
	return ret;
}

int sqli_table_exists(const struct sqli_config *cfg, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int64_t n = -1;
	int rc = pg_query_int64(conn,
	                        "SELECT count(*) FROM pg_tables WHERE schemaname = '" SCHEMA
	                        "' AND tablename = 'audit_log'",
	                        0, NULL, &n, err, errlen);
	PQfinish(conn);
	return rc < 0 ? -1 : n > 0;
}

int sqli_table_restore(const struct sqli_config *cfg, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = pg_exec(conn,
	                  "CREATE TABLE IF NOT EXISTS " SCHEMA
	                  ".audit_log (id bigint GENERATED ALWAYS AS IDENTITY"
	                  " PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), what text NOT NULL)",
	                  err, errlen);
	if (ret == 0)
		ret = grant_on(conn, cfg, SQLI_WIDE, err, errlen);
	PQfinish(conn);
	return ret;
}

int sqli_truth_read(const struct sqli_config *cfg, struct sqli_truth *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	PGresult *res = pg_query(conn,
	                         "SELECT (SELECT value FROM " SCHEMA ".secrets LIMIT 1),"
	                         " (SELECT count(*) FROM " SCHEMA ".notes WHERE owner_id = 1),"
	                         " (SELECT count(*) FROM " SCHEMA ".notes WHERE owner_id <> 1)",
	                         0, NULL, err, errlen);
	if (!res)
		goto out;
	snprintf(t->secret, sizeof(t->secret), "%s", PQgetvalue(res, 0, 0));
	t->own_notes = atoi(PQgetvalue(res, 0, 1));
	t->foreign_notes = atoi(PQgetvalue(res, 0, 2));
	PQclear(res);
	res = pg_query(conn, "SELECT username || ':' || password_hash FROM " SCHEMA ".users ORDER BY id", 0,
	               NULL, err, errlen);
	if (!res)
		goto out;
	for (int i = 0; i < PQntuples(res) && i < 16; i++)
		snprintf(t->hashes[t->nhashes++], sizeof(t->hashes[0]), "%s", PQgetvalue(res, i, 0));
	PQclear(res);
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

/* ---- what the server ran, from pg_stat_statements ---- */

static const char STMTS_SQL[] =
        "SELECT queryid, calls, query FROM pg_stat_statements"
        " WHERE userid = (SELECT oid FROM pg_roles WHERE rolname = $1)"
        " AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        /* the API's reset after each naive request (api.c), not a statement a payload made */
        " AND query <> 'DISCARD ALL'";

static const char *api_user_of_lab;

static PGresult *stmts_query(PGconn *lab, char *err, size_t errlen)
{
	const char *p[] = {api_user_of_lab ? api_user_of_lab : "lab_api"};
	return pg_query(lab, STMTS_SQL, 1, p, err, errlen);
}

int sqli_stmts_snap(PGconn *lab, struct sqli_stmt_snap *s, char *err, size_t errlen)
{
	PGresult *res = stmts_query(lab, err, errlen);
	if (!res)
		return -1;
	s->n = 0;
	for (int i = 0; i < PQntuples(res) && s->n < 1024; i++, s->n++) {
		s->queryid[s->n] = atoll(PQgetvalue(res, i, 0));
		s->calls[s->n] = atoll(PQgetvalue(res, i, 1));
	}
	PQclear(res);
	return 0;
}

static void add_kind(struct sqli_stmts *out, const char *query)
{
	static const char *const KINDS[][2] = {{" OR ", "OR"},           {"UNION", "UNION"},
	                                       {"pg_class", "pg_class"}, {"pg_sleep", "pg_sleep"},
	                                       {"DROP", "DROP TABLE"},   {"CASE", "CASE"}};
	for (size_t k = 0; k < sizeof(KINDS) / sizeof(KINDS[0]); k++) {
		if (!strstr(query, KINDS[k][0]) || strstr(out->kinds, KINDS[k][1]))
			continue;
		size_t n = strlen(out->kinds);
		snprintf(out->kinds + n, sizeof(out->kinds) - n, "%s%s", n ? ", " : "", KINDS[k][1]);
	}
}

int sqli_stmts_diff(PGconn *lab, const struct sqli_stmt_snap *before, struct sqli_stmts *out, char *err,
                    size_t errlen)
{
	PGresult *res = stmts_query(lab, err, errlen);
	if (!res)
		return -1;
	memset(out, 0, sizeof(*out));
	for (int i = 0; i < PQntuples(res); i++) {
		int64_t id = atoll(PQgetvalue(res, i, 0)), calls = atoll(PQgetvalue(res, i, 1)), was = 0;
		for (int j = 0; j < before->n; j++)
			if (before->queryid[j] == id)
				was = before->calls[j];
		if (calls <= was)
			continue;
		out->calls += calls - was;
		out->shapes++;
		add_kind(out, PQgetvalue(res, i, 2));
	}
	PQclear(res);
	return 0;
}

int sqli_lost(const struct sqli_config *cfg, struct sqli_result *r, char *err, size_t errlen)
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

/* ---- what --predict asks before each phase (data beside the phase: common/lab.h) ---- */

#define QCFG(c) ((const struct sqli_config *)(c))
#define QRES(r) ((const struct sqli_result *)(r))

static double q_users_notes(const void *cfg, int i)
{
	return i == 0 ? QCFG(cfg)->users : QCFG(cfg)->notes_per_user;
}
static double q_foreign_notes(const void *cfg, const void *r)
{
	(void)cfg;
	return QRES(r)->setup.foreign_notes;
}
static const struct lab_question Q_SETUP = {
        .text = "{} users, {} notes each; the search shows the caller (user 1) only their own. How "
                "many notes could it show if its owner filter were lost?",
        .given = q_users_notes,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "notes of other users",
        .measured = q_foreign_notes,
        .why = "(users − 1) × notes: what the role may read is what an injection can show; the "
               "tautology in [2/5] leaks exactly these"};

static double q_secret_len(const void *cfg, int i)
{
	(void)i;
	return QCFG(cfg)->secret_len;
}
static double q_bool_requests(const void *cfg, const void *r)
{
	(void)cfg;
	return QRES(r)->naive.a[SQLI_BLIND_BOOL].requests;
}
static const struct lab_question Q_NAIVE = {
        .text = "Boolean-blind on the naive route: rows or none, a yes/no per request, a bisection of "
                "each character's code (0..127) until the one after the end reads 0. A {}-character "
                "secret: how many requests?",
        .given = q_secret_len,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "requests",
        .measured = q_bool_requests,
        .why = "7 yes/no answers pin one of 128 codes (2^7): (length + 1) × 7. Rows or no rows is "
               "all a blind attack needs to read any value"};

static double q_param_shapes(const void *cfg, const void *r)
{
	(void)cfg;
	return QRES(r)->param.stmts.shapes;
}
static const struct lab_question Q_PARAM = {
        .text = "The same payloads as $2 of PQsendQueryParams: how many distinct statements "
                "(pg_stat_statements shapes) does the server run for them all?",
        .kind = LAB_ANSWER_NUMBER,
        .unit = "statement shapes",
        .measured = q_param_shapes,
        .why = "the SQL text never changes, only the value beside it: one statement whatever q "
               "holds; each naive payload was new SQL"};

static double q_order_chars(const void *cfg, int i)
{
	(void)i;
	return QCFG(cfg)->order_chars;
}
static double q_order_requests(const void *cfg, const void *r)
{
	(void)cfg;
	return QRES(r)->order.naive_requests;
}
static const struct lab_question Q_ORDER = {
        .text = "?sort= concatenated: ORDER BY CASE WHEN <a bit of the secret> THEN title ELSE id. "
                "{} characters of 7 bits: how many requests to read them?",
        .given = q_order_chars,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "requests",
        .measured = q_order_requests,
        .why = "the order of the rows is one bit per request: chars × 7. A column name cannot be a "
               "parameter, so only an allow-list shuts it (400 before any SQL)"};

static double q_least_leaks(const void *cfg, const void *r)
{
	(void)cfg;
	const struct sqli_outcome *a = QRES(r)->least.a;
	bool rows = a[SQLI_TAUTOLOGY].leaked > 0, hashes = a[SQLI_UNION_HASHES].leaked > 0,
	     dropped = QRES(r)->least.table_dropped;
	if (rows + hashes + dropped > 1)
		return NAN; /* more than one leaked: no one answer among the choices */
	return rows ? 1 : hashes ? 0 : dropped ? 2 : 3;
}
static const struct lab_question Q_LEAST = {
        .text = "lab_api may now read only (id, owner_id, title) of notes. The naive route again: "
                "of these, which still leaks?",
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"UNION of the password hashes", "the tautology: other users' notes",
                    "the stacked DROP TABLE", "none: least privilege closes the hole"},
        .measured = q_least_leaks,
        .why = "the role must read notes, so a WHERE that loses its owner filter still shows them "
               "all (and any role reads the catalogue): least privilege limits the damage, only "
               "parameters close the hole"};

/* The phases, in the order main.c tells them. */
static const struct lab_phase_def PHASES[SQLI_PHASES] = {
        {"setup", sqli_phase_setup, &Q_SETUP},           {"naive", sqli_phase_naive, &Q_NAIVE},
        {"parameterized", sqli_phase_param, &Q_PARAM},   {"order_by", sqli_phase_order, &Q_ORDER},
        {"least_privilege", sqli_phase_least, &Q_LEAST},
};

int sql_injection_run(const struct sqli_config *cfg, struct sqli_result *result, char *err, size_t errlen)
{
	memset(result, 0, sizeof(*result));
	api_user_of_lab = cfg->api_user;
	int ret = lab_phases_walk(PHASES, SQLI_PHASES, cfg, result, &cfg->hooks, err, errlen);
	/* Ctrl-C: common/lab.c's guard drops the schema; a teardown of ours would only race it */
	if (ret < 0 && lab_interrupted())
		return -1;
	char terr[LAB_ERRLEN];
	if (sql_injection_teardown(cfg, terr, sizeof(terr)) < 0 && ret == 0) {
		snprintf(err, errlen, "teardown: %s", terr);
		return sqli_lost(cfg, result, err, errlen);
	}
	return ret;
}

/* ---- the judge ---- */

/*
 * A tautology removes the owner filter: every note of every other user comes back. Fewer than all
 * of them would mean the payload did not do what the row claims, so the share required is all.
 */
#define TAUTOLOGY_SHARE 1.0
/* UNION reads another table whole: every user's hash, or the row shows no extraction */
#define UNION_HASH_SHARE 1.0
/*
 * Boolean-blind reads with a yes/no per request and no timing: it reads the whole secret exactly
 * or the channel is not shown.
 */
#define BOOL_BLIND_SHARE 1.0
/*
 * Time-blind reads bits from the time of a request on a machine shared with other work: a
 * request can be slow for its own reasons, and a bit misread. Most characters right shows the
 * channel; the lab prints how many were misread.
 */
#define TIME_BLIND_SHARE 0.5
/* The parameterized route: not one row beyond the caller's own, not one character, no table */
#define PARAM_LEAKS 0
/* ... and the server ran one statement shape for every payload: the route's own */
#define PARAM_SHAPES 1
/* ORDER BY concatenated: every bit read right (no timing involved: the order is exact) */
#define ORDER_BITS_SHARE 1.0
/* The allow-list: no bit, every payload refused */
#define ALLOW_BITS 0
/*
 * Least privilege: the role cannot read users or secrets nor drop audit_log, so not one hash,
 * character, ORDER BY bit or table (the tautology still leaks: the role must read notes)
 */
#define LEAST_LEAKS 0

static bool share_below(int got, int want, double share)
{
	return want <= 0 || got < share * want;
}

static bool naive_disagrees(const struct sqli_result *r, char *why, size_t len)
{
	const struct sqli_outcome *a = r->naive.a;
	const struct sqli_setup_facts *s = &r->setup;
	if (share_below(a[SQLI_TAUTOLOGY].leaked, s->foreign_notes, TAUTOLOGY_SHARE))
		snprintf(why, len, "naive: the tautology leaked %d of %d other users' notes",
		         a[SQLI_TAUTOLOGY].leaked, s->foreign_notes);
	else if (share_below(a[SQLI_UNION_HASHES].leaked, s->users, UNION_HASH_SHARE))
		snprintf(why, len, "naive: UNION leaked %d of %d password hashes",
		         a[SQLI_UNION_HASHES].leaked, s->users);
	else if (share_below(a[SQLI_BLIND_BOOL].leaked, s->secret_len, BOOL_BLIND_SHARE))
		snprintf(why, len, "naive: boolean-blind read %d of %d characters of the secret",
		         a[SQLI_BLIND_BOOL].leaked, s->secret_len);
	else if (share_below(a[SQLI_BLIND_TIME].leaked, a[SQLI_BLIND_TIME].attempted, TIME_BLIND_SHARE))
		snprintf(why, len, "naive: time-blind read %d of %d characters right",
		         a[SQLI_BLIND_TIME].leaked, a[SQLI_BLIND_TIME].attempted);
	else if (!r->naive.table_dropped)
		snprintf(why, len, "naive: the stacked DROP TABLE left audit_log in place");
	else
		return false;
	return true;
}

static bool param_disagrees(const struct sqli_result *r, char *why, size_t len)
{
	for (int i = SQLI_TAUTOLOGY; i < SQLI_ATTACKS; i++)
		if (r->param.a[i].leaked != PARAM_LEAKS) {
			snprintf(why, len, "parameterized: %s leaked %d %s",
			         sqli_attack_name((enum sqli_attack)i), r->param.a[i].leaked,
			         sqli_attack_unit((enum sqli_attack)i));
			return true;
		}
	if (r->param.table_dropped)
		snprintf(why, len, "parameterized: audit_log was dropped");
	else if (r->param.stmts.shapes != PARAM_SHAPES)
		snprintf(why, len, "parameterized: the server ran %d statement shapes (%d: the route's own)",
		         r->param.stmts.shapes, PARAM_SHAPES);
	else if (!r->multi_refused)
		snprintf(why, len,
		         "PQexecParams ran a string of two statements: the extended protocol refuses them");
	else
		return false;
	return true;
}

static bool order_disagrees(const struct sqli_result *r, char *why, size_t len)
{
	const struct sqli_order *o = &r->order;
	if (share_below(o->naive_bits_right, o->naive_bits, ORDER_BITS_SHARE))
		snprintf(why, len, "ORDER BY: the naive sort read %d of %d bits right", o->naive_bits_right,
		         o->naive_bits);
	else if (o->allow_bits != ALLOW_BITS || o->allow_400 != o->allow_requests || o->allow_requests == 0)
		snprintf(why, len,
		         "ORDER BY: the allow-list answered %d of %d payloads 400 and leaked %d bits",
		         o->allow_400, o->allow_requests, o->allow_bits);
	else if (!o->ident_refused)
		snprintf(why, len, "ORDER BY: PQescapeIdentifier's quoted payload was not refused");
	else if (o->like_raw_rows != r->setup.own_notes || o->like_escaped_rows != o->like_literal_titles ||
	         o->like_api_rows != o->like_literal_titles)
		snprintf(why, len,
		         "LIKE: q=%% matched %d raw, %d escaped, %d on the API (%d own notes, %d with a %%)",
		         o->like_raw_rows, o->like_escaped_rows, o->like_api_rows, r->setup.own_notes,
		         o->like_literal_titles);
	else
		return false;
	return true;
}

static bool least_disagrees(const struct sqli_result *r, char *why, size_t len)
{
	const struct sqli_outcome *a = r->least.a;
	if (a[SQLI_UNION_HASHES].leaked != LEAST_LEAKS || a[SQLI_BLIND_BOOL].leaked != LEAST_LEAKS ||
	    a[SQLI_BLIND_TIME].leaked != LEAST_LEAKS || r->least_order_bits_right != LEAST_LEAKS ||
	    r->least.table_dropped)
		snprintf(why, len,
		         "least privilege: %d hashes, %d + %d secret characters, ORDER BY %d bits right, "
		         "audit_log %s",
		         a[SQLI_UNION_HASHES].leaked, a[SQLI_BLIND_BOOL].leaked, a[SQLI_BLIND_TIME].leaked,
		         r->least_order_bits_right, r->least.table_dropped ? "dropped" : "kept");
	else
		return false;
	return true;
}

void sql_injection_judge(const struct sqli_result *r, struct lab_verdict *v)
{
	char why[256] = "";
	if (!naive_disagrees(r, why, sizeof(why)) && !param_disagrees(r, why, sizeof(why)) &&
	    !order_disagrees(r, why, sizeof(why)))
		least_disagrees(r, why, sizeof(why));
	const struct sqli_outcome *n = r->naive.a;
	int param_requests = 0;
	for (int i = 0; i < SQLI_ATTACKS; i++)
		param_requests += r->param.a[i].requests;
	lab_verdict_set(v, why[0] == '\0',
	                "concatenated SQL leaks rows, hashes and a secret and drops a table; parameters leak "
	                "nothing; the allow-list shuts the ORDER BY channel (OWASP A03:2021 Injection)",
	                "%s%snaive: %d foreign rows, %d hashes, secret in %d requests, audit_log %s; "
	                "parameterized: 0 extra rows in %d requests, %d statement shape; ORDER BY %d bits "
	                "naive, %d allow-list; least privilege: %d hashes, %d secret chars",
	                why, why[0] ? ". " : "", n[SQLI_TAUTOLOGY].leaked, n[SQLI_UNION_HASHES].leaked,
	                n[SQLI_BLIND_BOOL].requests, r->naive.table_dropped ? "dropped" : "kept",
	                param_requests, r->param.stmts.shapes, r->order.naive_bits_right, r->order.allow_bits,
	                r->least.a[SQLI_UNION_HASHES].leaked,
	                r->least.a[SQLI_BLIND_BOOL].leaked + r->least.a[SQLI_BLIND_TIME].leaked);
}
