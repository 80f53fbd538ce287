/*
 * store.c — what lab-stampede keeps in PostgreSQL: schema lab_stampede (the orders the hot value
 * aggregates, the log every recompute writes itself into), and the counts read back from that
 * log. Nothing here prints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"

static const char *const SESSION_KEYS[] = {"options", NULL};
static const char *const SESSION_VALS[] = {PG_SESSION_OPTIONS, NULL};

/* A failed call on the lab's own connection: notes PostgreSQL as lost when the connection is. */
static int conn_failed(struct stampede *s)
{
	stampede_lost(s, stp_pg_gone(s->conn));
	return -1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Schema lab_stampede: the orders, and the recompute log. */
static int create_schema(struct stampede *s, const struct stampede_config *cfg, char *err, size_t errlen)
{
	char sql[1024];
	if (pg_schema_create(s->conn, SCHEMA, err, errlen) < 0)
		return conn_failed(s);
	/* unlogged: the lab's tables need no crash safety, and a WAL flush per recompute would
	 * measure the disk instead of the query */
	snprintf(sql, sizeof(sql),
	         "CREATE UNLOGGED TABLE " SCHEMA ".orders (id int PRIMARY KEY, bucket int NOT NULL, "
	         "customer int NOT NULL, amount_cents int NOT NULL);"
	         "INSERT INTO " SCHEMA ".orders SELECT i, i %% %d, (i * 37) %% 5000, i %% 9973 "
	         "FROM generate_series(1, %d) i;"
	         "CREATE INDEX ON " SCHEMA ".orders (bucket);"
	         "ANALYZE " SCHEMA ".orders;"
	         "CREATE SEQUENCE " SCHEMA ".run_ids;"
	         "CREATE UNLOGGED TABLE " SCHEMA ".recomputes (gen bigserial PRIMARY KEY, run int NOT NULL, "
	         "key int NOT NULL, replaces bigint NOT NULL, requested_at timestamptz, "
	         "started_at timestamptz NOT NULL, finished_at timestamptz NOT NULL, value text NOT NULL);"
	         "CREATE INDEX ON " SCHEMA ".recomputes (run);",
	         BUCKETS, cfg->rows);
	return pg_exec(s->conn, sql, err, errlen) < 0 ? conn_failed(s) : 0;
}

/* The hot query alone, as a client would run it: the median of five (not logged). */
static int measure_hot_query(struct stampede *s, double *query_us, char *err, size_t errlen)
{
	double t[5];
	const char *params[] = {"0", "-1"};
	for (int i = 0; i < 5; i++) {
		uint64_t t0 = hist_now_us();
		PGresult *res = pg_query(s->conn, HOT_SQL, 2, params, err, errlen);
		if (!res)
			return conn_failed(s);
		PQclear(res);
		t[i] = (double)(hist_now_us() - t0);
	}
	qsort(t, 5, sizeof(t[0]), cmp_double);
	*query_us = t[2];
	return pg_exec(s->conn, "TRUNCATE " SCHEMA ".recomputes", err, errlen) < 0 ? conn_failed(s) : 0;
}

struct stampede *store_open(const struct stampede_config *cfg, double *query_us, char *lost, size_t lostlen,
                            char *err, size_t errlen)
{
	snprintf(lost, lostlen, "%s", "");
	if (cfg->clients < 1 || cfg->pg_pool < 1 || cfg->rows < 1 || cfg->keys < 1 || cfg->keys > BUCKETS ||
	    cfg->sweepers < 1 || cfg->bucket_ms < 1 || cfg->ttl_ms < 1 || cfg->xfetch_ttl_ms < cfg->ttl_ms ||
	    cfg->key_ttl_ms < 1 || cfg->jitter_ms < 0 || cfg->run_ms < 1 || cfg->outage_run_ms < 1 ||
	    cfg->think_ms < 0) {
		snprintf(err, errlen, "bad configuration (keys must be 1..%d, every size and time positive)",
		         BUCKETS);
		return NULL;
	}
	struct stampede *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->cfg = cfg;
	if (!(s->conn = pg_connect_with(cfg->pg_url, SESSION_KEYS, SESSION_VALS, err, errlen)))
		stampede_lost(s, "PostgreSQL");
	else if (!(s->rc = redis_connect_url(cfg->redis_url, REDIS_TIMEOUT_MS, err, errlen)))
		stampede_lost(s, "Redis");
	else if (create_schema(s, cfg, err, errlen) == 0 &&
	         measure_hot_query(s, query_us, err, errlen) == 0) {
		if (redis_del_prefix(s->rc, PREFIX, NULL, err, errlen) < 0)
			stampede_lost(s, stp_redis_gone(s->rc));
		else if (!(s->app = pgset_open(cfg->pg_url, SESSION_KEYS, SESSION_VALS, cfg->pg_pool, err,
		                               errlen)))
			stampede_lost(s, "PostgreSQL");
		else
			return s;
	}
	snprintf(lost, lostlen, "%s", s->lost);
	char derr[256];
	store_close(s, derr, sizeof(derr));
	return NULL;
}

/* Drops the schema and the keys: through the lab's own connections, or new ones when those were
 * lost (the server may be back). */
static int store_drop(struct stampede *s, char *err, size_t errlen)
{
	int ret;
	if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
		ret = pg_schema_drop(s->conn, SCHEMA, err, errlen);
	else
		ret = pg_url_schema_drop(s->cfg->pg_url, SCHEMA, err, errlen);
	char rerr[256];
	if (!s->rc || s->rc->err) {
		if (s->rc)
			redisFree(s->rc);
		s->rc = redis_connect_url(s->cfg->redis_url, REDIS_TIMEOUT_MS, rerr, sizeof(rerr));
	}
	if (!s->rc || redis_del_prefix(s->rc, PREFIX, NULL, rerr, sizeof(rerr)) < 0) {
		if (ret == 0)
			snprintf(err, errlen, "%s", rerr);
		ret = -1;
	}
	return ret;
}

int store_close(struct stampede *s, char *err, size_t errlen)
{
	if (!s)
		return 0;
	int ret = -1;
	/* Ctrl-C: lab.c's guard drops the schema and the keys; a drop of ours beside it would only
	 * contend for its locks */
	if (lab_interrupted())
		snprintf(err, errlen, "interrupted");
	else
		ret = store_drop(s, err, errlen);
	pgset_close(s->app);
	if (s->rc)
		redisFree(s->rc);
	PQfinish(s->conn);
	free(s);
	return ret;
}

int log_begin(struct stampede *s, int *run_id, char *origin, size_t originlen, char *err, size_t errlen)
{
	int64_t id;
	if (pg_query_int64(s->conn, "SELECT nextval('" SCHEMA ".run_ids')", 0, NULL, &id, err, errlen) < 0)
		return conn_failed(s);
	*run_id = (int)id;
	PGresult *res = pg_query(s->conn, "SELECT clock_timestamp()::text", 0, NULL, err, errlen);
	if (!res)
		return conn_failed(s);
	int ret = -1;
	if (PQntuples(res) != 1)
		snprintf(err, errlen, "clock_timestamp() returned %d rows", PQntuples(res));
	else {
		snprintf(origin, originlen, "%s", PQgetvalue(res, 0, 0));
		ret = 0;
	}
	PQclear(res);
	return ret;
}

int log_series(struct stampede *s, int run_id, const char *origin, int bucket_ms, const char *at,
               double *series, int *nseries, char *err, size_t errlen)
{
	char run[16], bucket[16], sql[512];
	snprintf(run, sizeof(run), "%d", run_id);
	snprintf(bucket, sizeof(bucket), "%d", bucket_ms);
	snprintf(sql, sizeof(sql),
	         "SELECT floor(extract(epoch FROM %s - $2::timestamptz) * 1000 / $3::int)::int, count(*) "
	         "FROM " SCHEMA ".recomputes WHERE run = $1::int AND replaces <> -1 AND %s >= "
	         "$2::timestamptz GROUP BY 1 ORDER BY 1",
	         at, at);
	const char *params[] = {run, origin, bucket};
	PGresult *res = pg_query(s->conn, sql, 3, params, err, errlen);
	if (!res)
		return conn_failed(s);
	memset(series, 0, sizeof(double) * STAMPEDE_MAX_BUCKETS);
	int n = 0;
	for (int i = 0; i < PQntuples(res); i++) {
		int b = atoi(PQgetvalue(res, i, 0));
		if (b < 0 || b >= STAMPEDE_MAX_BUCKETS)
			continue;
		series[b] = atof(PQgetvalue(res, i, 1));
		if (b + 1 > n)
			n = b + 1;
	}
	PQclear(res);
	*nseries = n;
	return 0;
}

int log_peak(struct stampede *s, int run_id, int *peak, char *err, size_t errlen)
{
	char run[16];
	snprintf(run, sizeof(run), "%d", run_id);
	const char *params[] = {run};
	int64_t v;
	/* +1 at each start, -1 at each end, ends first on a tie; the running sum's maximum */
	if (pg_query_int64(
	            s->conn,
	            "SELECT coalesce(max(c), 0)::bigint FROM (SELECT sum(d) OVER (ORDER BY t, d ROWS "
	            "UNBOUNDED PRECEDING) AS c FROM (SELECT started_at AS t, 1 AS d FROM " SCHEMA
	            ".recomputes WHERE run = $1::int AND replaces <> -1 UNION ALL SELECT finished_at, -1 "
	            "FROM " SCHEMA ".recomputes WHERE run = $1::int AND replaces <> -1) e) x",
	            1, params, &v, err, errlen) < 0)
		return conn_failed(s);
	*peak = (int)v;
	return 0;
}

/* Recomputes, reads served from the database, their mean time, and statements before and after
 * lost_at_s (phase 4's statements per second). */
static int log_hot_counts(struct stampede *s, const char *run, const char *origin, double lost_at_s,
                          double run_s, struct stampede_hot_result *res, char *err, size_t errlen)
{
	char lost[32];
	snprintf(lost, sizeof(lost), "%.6f", lost_at_s);
	const char *params[] = {run, origin, lost};
	PGresult *r = pg_query(
	        s->conn,
	        "SELECT count(*) FILTER (WHERE replaces >= 0), count(*) FILTER (WHERE replaces = -2), "
	        "coalesce(avg(extract(epoch FROM finished_at - started_at)) FILTER (WHERE replaces >= 0), "
	        "0) * 1e6, count(*) FILTER (WHERE replaces <> -1 AND started_at < $2::timestamptz + "
	        "make_interval(secs => $3::float8)), count(*) FILTER (WHERE replaces <> -1 AND "
	        "started_at >= $2::timestamptz + make_interval(secs => $3::float8)) "
	        "FROM " SCHEMA ".recomputes WHERE run = $1::int",
	        3, params, err, errlen);
	if (!r)
		return conn_failed(s);
	res->recomputes = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
	res->degraded_queries = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
	res->recompute_mean_us = atof(PQgetvalue(r, 0, 2));
	double before = atof(PQgetvalue(r, 0, 3)), after = atof(PQgetvalue(r, 0, 4));
	PQclear(r);
	if (res->redis_lost) {
		res->queries_per_s_before = lost_at_s > 0 ? before / lost_at_s : 0;
		res->queries_per_s_after = run_s > lost_at_s ? after / (run_s - lost_at_s) : 0;
	}
	return 0;
}

/* Recomputes per expiry: the log's rows grouped by the epoch they replaced. */
static int log_per_expiry(struct stampede *s, const char *run, struct stampede_hot_result *res, char *err,
                          size_t errlen)
{
	const char *params[] = {run};
	PGresult *r =
	        pg_query(s->conn,
	                 "SELECT count(*) FROM " SCHEMA ".recomputes WHERE run = $1::int AND replaces >= 0 "
	                 "GROUP BY replaces ORDER BY replaces",
	                 1, params, err, errlen);
	if (!r)
		return conn_failed(s);
	res->expiries = PQntuples(r);
	res->min_per_expiry = res->max_per_expiry = 0;
	for (int i = 0; i < PQntuples(r); i++) {
		int n = atoi(PQgetvalue(r, i, 0));
		if (i < STAMPEDE_MAX_EXPIRIES)
			res->per_expiry[i] = n;
		if (i == 0 || n < res->min_per_expiry)
			res->min_per_expiry = n;
		if (n > res->max_per_expiry)
			res->max_per_expiry = n;
	}
	PQclear(r);
	res->recomputes_per_expiry = res->expiries ? (double)res->recomputes / res->expiries : 0;
	return 0;
}

int log_hot(struct stampede *s, int run_id, const char *origin, int bucket_ms, double lost_at_s, double run_s,
            struct stampede_hot_result *res, char *err, size_t errlen)
{
	char run[16];
	snprintf(run, sizeof(run), "%d", run_id);
	if (log_hot_counts(s, run, origin, lost_at_s, run_s, res, err, errlen) < 0 ||
	    log_per_expiry(s, run, res, err, errlen) < 0 ||
	    log_peak(s, run_id, &res->peak_concurrent, err, errlen) < 0)
		return -1;
	return log_series(s, run_id, origin, bucket_ms, "started_at", res->series, &res->nseries, err,
	                  errlen);
}

int log_keys(struct stampede *s, int run_id, uint64_t *rows, int *keys, char *err, size_t errlen)
{
	char run[16];
	snprintf(run, sizeof(run), "%d", run_id);
	const char *params[] = {run};
	PGresult *r = pg_query(s->conn,
	                       "SELECT count(*), count(DISTINCT key) FROM " SCHEMA
	                       ".recomputes WHERE run = $1::int",
	                       1, params, err, errlen);
	if (!r)
		return conn_failed(s);
	*rows = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
	*keys = atoi(PQgetvalue(r, 0, 1));
	PQclear(r);
	return 0;
}
