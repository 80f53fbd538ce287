/*
 * versioning.c — lab-versioning's experiment as a whole: its config, the schema and its users,
 * the run (the API, the API without Vary and the cache started once, the three phases of
 * phases.c walked in front of them) and the judge that decides from their numbers. The API is in
 * api.c, the cache in cache.c, the client in client.c. The telling is in main.c; nothing here
 * prints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"

void versioning_config_default(struct versioning_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	/* 4: the lab's client sends one request at a time; the rest is for curl beside it */
	cfg->pool_size = 4;
	/* 20 users in each block: each user is asked for 10 to 30 times in phase 2, so a cache that
	 * works shows a high hit ratio and one variant more per user shows as a lower one */
	cfg->users = quick ? 20 : 40;
	cfg->direct_requests = quick ? 100 : 400;
	cfg->cache_requests = quick ? 400 : 1200;
	cfg->client_requests = quick ? 40 : 120;
	/* a minute: longer than the run, so nothing expires mid-phase and every repeat can hit */
	cfg->max_age_s = 60;
	/* half a year's notice, a common sunset for a public API */
	cfg->sunset_days = 180;
	cfg->vary_accept = true;
	cfg->added_field = true;
	cfg->seed = 1;
}

void vers_progress(const struct versioning_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done, cfg->progress_arg);
}

int versioning_users_total(const struct versioning_config *cfg)
{
	return BLOCKS * cfg->users;
}

long vers_user_id(const struct versioning_config *cfg, int block, int i)
{
	return (long)block * cfg->users + i + 1;
}

const struct user_row *vers_row(const struct versioning_env *env, long id)
{
	return id >= 1 && id <= env->nrows ? &env->rows[id - 1] : NULL;
}

/* Names and prices from the id and the seed: the same seed, the same users. */
static const char SQL_USERS[] =
        "WITH ins AS (INSERT INTO " SCHEMA ".users"
        " SELECT i,"
        " (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Margaret','Ken','Frances','Niklaus'])"
        "[1 + (i * 7 + $1::bigint) % 10],"
        " (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Hamilton','Thompson','Allen','"
        "Wirth'])"
        "[1 + (i * 13 + $1::bigint * 3) % 10],"
        " 'user' || i || '@example.com',"
        " 100 + (i * 7919 + $1::bigint * 31) % 99900,"
        " (ARRAY['en-GB','fr-FR','de-DE','ja-JP'])[1 + i % 4]"
        " FROM generate_series(1, $2::int) i RETURNING 1)"
        " SELECT count(*) FROM ins";

int versioning_setup(const struct versioning_config *cfg, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	char seed[24], n[24];
	snprintf(seed, sizeof(seed), "%llu", (unsigned long long)(cfg->seed % 1000003));
	snprintf(n, sizeof(n), "%d", BLOCKS * cfg->users);
	const char *p[] = {seed, n};
	int64_t inserted = 0;
	if (pg_schema_create(conn, SCHEMA, err, errlen) < 0 ||
	    pg_exec(conn,
	            "CREATE TABLE " SCHEMA ".users ("
	            " id bigint PRIMARY KEY,"
	            " given_name text NOT NULL,"
	            " family_name text NOT NULL,"
	            " email text NOT NULL,"
	            " price_cents bigint NOT NULL CHECK (price_cents >= 0),"
	            " locale text NOT NULL)",
	            err, errlen) < 0 ||
	    pg_query_int64(conn, SQL_USERS, 2, p, &inserted, err, errlen) < 0)
		goto out;
	if (inserted != BLOCKS * cfg->users) {
		snprintf(err, errlen, "inserted %lld users, not %d", (long long)inserted,
		         BLOCKS * cfg->users);
		goto out;
	}
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

int versioning_teardown(const struct versioning_config *cfg, char *err, size_t errlen)
{
	return pg_url_schema_drop(cfg->pg_url, SCHEMA, err, errlen);
}

int vers_load_rows(const struct versioning_config *cfg, struct versioning_env *env, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	PGresult *res = pg_query(conn,
	                         "SELECT id, given_name, family_name, email, price_cents FROM " SCHEMA
	                         ".users ORDER BY id",
	                         0, NULL, err, errlen);
	int ret = -1;
	if (!res)
		goto out;
	int n = PQntuples(res);
	if (n != BLOCKS * cfg->users) {
		/* a user the readers had no row for would be read unchecked: every one must be there */
		snprintf(err, errlen, "%d users in " SCHEMA ".users, %d made", n, BLOCKS * cfg->users);
		goto out;
	}
	env->rows = calloc((size_t)(n ? n : 1), sizeof(*env->rows));
	if (!env->rows) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		struct user_row *r = &env->rows[i];
		r->id = strtol(PQgetvalue(res, i, 0), NULL, 10);
		snprintf(r->given, sizeof(r->given), "%s", PQgetvalue(res, i, 1));
		snprintf(r->family, sizeof(r->family), "%s", PQgetvalue(res, i, 2));
		snprintf(r->email, sizeof(r->email), "%s", PQgetvalue(res, i, 3));
		r->cents = strtol(PQgetvalue(res, i, 4), NULL, 10);
		if (r->id != i + 1) {
			snprintf(err, errlen, "users are not numbered 1..%d", n);
			goto out;
		}
	}
	env->nrows = n;
	ret = 0;
out:
	if (res)
		PQclear(res);
	PQfinish(conn);
	return ret;
}

const char *versioning_approach_name(enum versioning_approach a)
{
	static const char *const names[] = {"path", "header", "query"};
	return a < VERSIONING_APPROACHES ? names[a] : "?";
}

const char *versioning_row_name(enum versioning_row r)
{
	static const char *const names[] = {"path", "header, no Vary", "header + Vary: Accept", "query"};
	return r < VERSIONING_ROWS ? names[r] : "?";
}

/* ---- the run ---- */

/* After a failure: true when PostgreSQL no longer answers (the failure was its going away). */
static bool pg_lost(const char *url)
{
	char said[LAB_ERRLEN];
	PGconn *conn = pg_connect(url, said, sizeof(said));
	if (conn)
		PQfinish(conn);
	return conn == NULL;
}

static const struct lab_phase_def PHASES[VERSIONING_PHASES] = {
        {"direct", vers_phase_direct, &vers_q_direct},
        {"cache", vers_phase_cache, &vers_q_cache},
        {"deprecation", vers_phase_deprecation, &vers_q_deprecation},
};

static void env_stop(struct versioning_env *env)
{
	versioning_cache_stop(env->cache);
	versioning_api_stop(env->api);
	versioning_api_stop(env->api_no_vary);
	free(env->rows);
	memset(env, 0, sizeof(*env));
}

static int env_start(const struct versioning_config *cfg, struct versioning_env *env,
                     struct versioning_result *r, char *err, size_t errlen)
{
	struct versioning_config c = *cfg;
	/* the non-breaking change is deployed in phase 1, in front of the lab */
	c.added_field = false;
	c.vary_accept = true;
	env->api = versioning_api_start(&c, 0, err, errlen);
	if (!env->api)
		return -1;
	c.vary_accept = false;
	env->api_no_vary = versioning_api_start(&c, 0, err, errlen);
	if (!env->api_no_vary)
		return -1;
	env->cache = versioning_cache_start(cfg->nginx, versioning_api_port(env->api),
	                                    versioning_api_port(env->api_no_vary), err, errlen);
	if (!env->cache)
		return -1;
	r->api_port = versioning_api_port(env->api);
	r->cache_port = versioning_cache_port(env->cache);
	r->nginx_pid = versioning_cache_pid(env->cache);
	return vers_load_rows(cfg, env, err, errlen);
}

int versioning_run(const struct versioning_config *cfg, struct versioning_result *result, char *err,
                   size_t errlen)
{
	memset(result, 0, sizeof(*result));
	if (!cfg->nginx) {
		snprintf(err, errlen, "no nginx given (versioning_find_nginx)");
		return -1;
	}
	if (versioning_setup(cfg, err, errlen) < 0) {
		result->lost_pg = pg_lost(cfg->pg_url);
		return -1;
	}
	struct versioning_env env = {0};
	int ret = env_start(cfg, &env, result, err, errlen);
	if (ret == 0) {
		result->env = &env;
		ret = lab_phases_walk(PHASES, VERSIONING_PHASES, cfg, result, &cfg->hooks, err, errlen);
		result->env = NULL;
	}
	env_stop(&env);
	/* Ctrl-C: common/lab.c's guard drops the schema; a teardown of ours would only race it */
	if (ret < 0 && lab_interrupted())
		return -1;
	char terr[LAB_ERRLEN];
	if (versioning_teardown(cfg, terr, sizeof(terr)) < 0 && ret == 0) {
		snprintf(err, errlen, "teardown: %s", terr);
		ret = -1;
	}
	if (ret < 0)
		result->lost_pg = pg_lost(cfg->pg_url);
	return ret;
}

/* ---- the judge ---- */

/* Phase 1: what the API must answer for a version it does not serve, in the order phases.c asks:
 * header (406, RFC 9110 15.5.7: no representation matches Accept), path (404: no such resource),
 * query (400: a bad parameter), twice (an unknown number and a malformed one) */
static const int ERROR_STATUS[VERSIONING_ERRORS] = {406, 404, 400, 400};
/* Phase 2: without Vary the cache stores one answer per URL whatever the Accept: with v1 and v2
 * clients mixed on the same users, at least one v2 client must get a v1 body (or the other way
 * round), or the phase did not show the mistake */
#define MIN_WRONG_WITHOUT_VARY 1
/* ... and with Vary, or with the version in the URL, not one: a wrong body is a broken client */
#define MAX_WRONG_CORRECT 0
/* Phase 2: every row must be served from the cache for the most part, or "0 wrong" means only
 * that nothing was cached: each user is asked for about 20 times (quick), so a working cache
 * hits on well over half even with two variants per user */
#define MIN_HIT_RATIO 0.5

static bool direct_disagrees(const struct versioning_result *r, char *why, size_t len)
{
	for (int a = 0; a < VERSIONING_APPROACHES; a++)
		for (int v = 0; v < 2; v++) {
			const struct versioning_direct *d = &r->direct[a][v];
			if (d->requests == 0 || d->correct != d->requests ||
			    d->deprecation_right != d->requests) {
				snprintf(why, len,
				         "%s v%d from the API: %d of %d correct, deprecation headers right "
				         "on %d",
				         versioning_approach_name((enum versioning_approach)a), v + 1,
				         d->correct, d->requests, d->deprecation_right);
				return true;
			}
		}
	for (int i = 0; i < VERSIONING_ERRORS; i++)
		if (r->errors[i].rs.status != ERROR_STATUS[i] || !r->errors[i].json_error) {
			snprintf(why, len, "%s: %d%s, not %d with a JSON error", r->errors[i].what,
			         r->errors[i].rs.status,
			         r->errors[i].json_error ? "" : " without a JSON error", ERROR_STATUS[i]);
			return true;
		}
	const struct versioning_added *ad = &r->added;
	if (!ad->tolerant_before || !ad->tolerant_after || !ad->v2_after) {
		snprintf(why, len,
		         "the added field broke a tolerant reader (v1 before %s, after %s; v2 after %s)",
		         ad->tolerant_before ? "ok" : "failed", ad->tolerant_after ? "ok" : "failed",
		         ad->v2_after ? "ok" : "failed");
		return true;
	}
	return false;
}

static bool cache_disagrees(const struct versioning_result *r, char *why, size_t len)
{
	const struct versioning_cache_row *nv = &r->rows[ROW_HEADER_NO_VARY], *vy = &r->rows[ROW_HEADER_VARY];
	for (int i = 0; i < VERSIONING_ROWS; i++)
		if (r->rows[i].requests == 0 || r->rows[i].hit_ratio < MIN_HIT_RATIO) {
			snprintf(why, len,
			         "%s through the cache: hit ratio %.2f < %.2f, the cache did not cache",
			         versioning_row_name((enum versioning_row)i), r->rows[i].hit_ratio,
			         MIN_HIT_RATIO);
			return true;
		}
	if (nv->wrong < MIN_WRONG_WITHOUT_VARY) {
		snprintf(why, len,
		         "header versioning without Vary: %d wrong answers through the cache, expected >= %d",
		         nv->wrong, MIN_WRONG_WITHOUT_VARY);
		return true;
	}
	for (int i = 0; i < VERSIONING_ROWS; i++)
		if (i != ROW_HEADER_NO_VARY && r->rows[i].wrong > MAX_WRONG_CORRECT) {
			snprintf(why, len, "%s: %d wrong answers through the cache, expected %d",
			         versioning_row_name((enum versioning_row)i), r->rows[i].wrong,
			         MAX_WRONG_CORRECT);
			return true;
		}
	if (!(vy->hit_ratio < nv->hit_ratio)) {
		snprintf(why, len, "Vary: Accept did not lower the hit ratio (%.2f with, %.2f without)",
		         vy->hit_ratio, nv->hit_ratio);
		return true;
	}
	return false;
}

static bool deprecation_disagrees(const struct versioning_deprecation *d, char *why, size_t len)
{
	if (d->v1_answers == 0 || d->v1_with_headers != d->v1_answers || d->v2_with_any != 0) {
		snprintf(why, len,
		         "deprecation headers: on %d of %d v1 answers (Deprecation, Sunset, Link), on %d of "
		         "%d v2 answers",
		         d->v1_with_headers, d->v1_answers, d->v2_with_any, d->v2_answers);
		return true;
	}
	for (int i = 0; i < VERSIONING_CLIENTS; i++)
		if (d->clients[i].v1_edge != d->clients[i].v1_sent) {
			snprintf(why, len, "the cache's log counted %lld v1 calls of %s, it sent %d",
			         (long long)d->clients[i].v1_edge, d->clients[i].agent,
			         d->clients[i].v1_sent);
			return true;
		}
	return false;
}

void versioning_judge(const struct versioning_result *r, struct lab_verdict *v)
{
	char why[320] = "";
	bool bad = direct_disagrees(r, why, sizeof(why)) || cache_disagrees(r, why, sizeof(why)) ||
	           deprecation_disagrees(&r->deprecation, why, sizeof(why));
	const struct versioning_cache_row *rows = r->rows;
	lab_verdict_set(
	        v, !bad,
	        "path, header and query versioning all serve v1 and v2 correctly from the API; only header "
	        "versioning needs Vary: Accept to stay correct behind a cache",
	        "%s%swrong answers through nginx: header without Vary %d of %d, with Vary %d, path %d, query "
	        "%d; hit ratio %.0f%% without Vary (the wrong ones were hits), %.0f%% with, as path's "
	        "%.0f%%; "
	        "unknown versions %d/%d/%d",
	        why, bad ? ". " : "", rows[ROW_HEADER_NO_VARY].wrong, rows[ROW_HEADER_NO_VARY].requests,
	        rows[ROW_HEADER_VARY].wrong, rows[ROW_PATH].wrong, rows[ROW_QUERY].wrong,
	        100 * rows[ROW_HEADER_NO_VARY].hit_ratio, 100 * rows[ROW_HEADER_VARY].hit_ratio,
	        100 * rows[ROW_PATH].hit_ratio, r->errors[0].rs.status, r->errors[1].rs.status,
	        r->errors[2].rs.status);
}
