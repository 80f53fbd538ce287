/*
 * stampede.c — the experiment of lab-stampede (see stampede.h for the phases). The telling is
 * in main.c; nothing here prints.
 *
 * Every client is a thread with its own blocking hiredis connection; the recomputes borrow a
 * libpq connection from a small blocking pool (a mutex, a condition variable and a free list).
 * The caller's thread starts the clients, reports progress, and reads the server's recompute log
 * once they are done.
 */
#include "stampede.h"

#include <errno.h>
#include <event2/http.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "pg.h"
#include "proxy.h"
#include "redis.h"

#define SCHEMA   "lab_stampede"
#define PREFIX   "lab:stampede:"
#define HOT_KEY  PREFIX "hot"
#define HOT_LOCK PREFIX "hot:lock"
/* rows per bucket for phase 3: bucket = id % BUCKETS, so at most BUCKETS distinct keys */
#define BUCKETS 1000
/* 256 KiB stacks: a client's frames are small, and hundreds of default 8 MiB stacks are not */
#define CLIENT_STACK (256 * 1024)
/* Redis commands time out after 1 s: far above a loopback round trip, short enough to notice */
#define REDIS_TIMEOUT_MS 1000
/* a client that lost Redis tries it again at most this often */
#define RECONNECT_EVERY_US 500000
/* XFetch: rand() is clamped here, so -ln(rand) <= 6.9 and no read recomputes more than
 * 6.9 x delta x beta before the expiry (a tiny rand() would recompute far too early) */
#define XFETCH_MIN_RAND 1e-3
/* the clients read this long before the value is computed again under their load */
#define SETTLE_MS 150
/* a lock waiter gives up (a lost read) after this many lock lifetimes */
#define LOCK_GIVE_UP 3
/* the epoch a recompute "replaces" for the warm-up, and for reads served while Redis is gone */
#define REPLACES_WARM     (-1)
#define REPLACES_DEGRADED (-2)

/* The hot value: an aggregation over every order. Computing it also logs it, in one statement,
 * so the server counts every recompute and times it on its own clock. */
#define HOT_SQL                                                                                              \
	"INSERT INTO " SCHEMA ".recomputes (run, key, replaces, started_at, finished_at, value) "            \
	"SELECT $1::int, 0, $2::bigint, statement_timestamp(), clock_timestamp(), "                          \
	"a.customers || ':' || a.total || ':' || round(a.p99::numeric, 2) "                                  \
	"FROM (SELECT count(DISTINCT customer) AS customers, sum(amount_cents) AS total, "                   \
	"percentile_cont(0.99) WITHIN GROUP (ORDER BY amount_cents) AS p99 FROM " SCHEMA ".orders) a "       \
	"RETURNING gen, value, (extract(epoch FROM finished_at - started_at) * 1e6)::bigint"
/* Phase 3: one key's value, an aggregation over its bucket (an index scan: well under 1 ms).
 * requested_at is when its reader found the key missing: the load offered to the database,
 * which a queue may spread before the statements start. */
#define KEY_SQL                                                                                              \
	"INSERT INTO " SCHEMA                                                                                \
	".recomputes (run, key, replaces, requested_at, started_at, finished_at, value) "                    \
	"SELECT $1::int, $2::int, 0, to_timestamp($3::float8), statement_timestamp(), clock_timestamp(), "   \
	"count(*) || ':' || coalesce(sum(amount_cents), 0) FROM " SCHEMA ".orders WHERE bucket = $2::int "   \
	"RETURNING gen, value"

const char *stampede_defence_name(enum stampede_defence d)
{
	switch (d) {
	case STAMPEDE_NONE:
		return "no protection";
	case STAMPEDE_LOCK:
		return "lock (waiters wait)";
	case STAMPEDE_XFETCH:
		return "XFetch";
	case STAMPEDE_SWR:
		return "stale-while-revalidate";
	default:
		return "?";
	}
}

const char *stampede_defence_id(enum stampede_defence d)
{
	static const char *const ids[] = {"none", "lock", "xfetch", "swr"};
	return (unsigned)d < STAMPEDE_DEFENCES ? ids[d] : "?";
}

void stampede_config_default(struct stampede_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	cfg->redis_url = redis_url_default();
	/* hundreds of readers of one key; 40 with --quick keeps the herd visible and the run short */
	cfg->clients = quick ? 40 : 200;
	/* 4 connections: cores x 2 on this 2-core machine (HikariCP's rule of thumb, less the
	 * spindle), far below max_connections; more would only share the same two cores */
	cfg->pg_pool = 4;
	/* 50,000 orders: the hot aggregation costs about 10-15 ms here alone (30,000 with --quick:
	 * 7-10 ms), tens of ms under a herd. A costlier query makes the herd longer, and XFetch's
	 * duplicates grow with how much a recompute slows down under load */
	cfg->rows = quick ? 30000 : 50000;
	/* 2 s (700 ms with --quick): long against a recompute, since XFetch goes early by about
	 * delta x ln(reads/s x delta) and a TTL near that would recompute on every read; short
	 * enough that a full run sees several expiries (--quick: one each) */
	cfg->ttl_ms = quick ? 700 : 2000;
	cfg->run_ms = quick ? 1100 : 5000;
	/* every client reads about every 20 ms: all of them read within one recompute */
	cfg->think_ms = 20;
	/* 1 s: tens of recomputes, so a live holder does not lose its lock */
	cfg->lock_ms = 1000;
	cfg->lock_poll_ms = 5;
	/* beta 2, not the paper's 1: a reader that goes early is followed, while its recompute runs
	 * for delta', by about e^(delta' / (beta x delta)) - 1 others. On a shared 2-core machine a
	 * recompute often takes twice its last time; beta 2 keeps that near 1.7 extra, not 6 */
	cfg->beta = 2.0;
	/* stale values may be served for up to 5 s past the soft TTL */
	cfg->stale_ms = 5000;
	/* a thousand keys (200 with --quick) warmed at once */
	cfg->keys = quick ? 200 : 1000;
	/* TTL 300 ms + up to 700 ms of jitter (1 s + up to 2 s): the jitter spreads the wave over
	 * 7 (20) intervals of 100 ms */
	cfg->key_ttl_ms = quick ? 300 : 1000;
	cfg->jitter_ms = quick ? 700 : 2000;
	/* 8 readers with a connection each */
	cfg->sweepers = 8;
	/* each key read every 10 ms: an expiry is seen within one bucket */
	cfg->sweep_ms = 10;
	cfg->bucket_ms = 100;
	/* Redis goes away before the first expiry, and the run goes on without it */
	cfg->outage_at_ms = quick ? 300 : 1500;
	cfg->outage_run_ms = quick ? 800 : 3000;
	cfg->seed = 1;
}

/* ---- small tools ---- */

static int64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_us(int64_t us)
{
	if (us <= 0)
		return;
	struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* xorshift64*: a per-thread generator, seeded from --seed so a run's choices repeat */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* uniform in (0, 1] */
static double rng_unit(uint64_t *s)
{
	return ((rng_next(s) >> 11) + 1) * (1.0 / 9007199254740992.0);
}

static uint64_t rng_seed(uint64_t seed, int id)
{
	uint64_t s = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)id * 0xBF58476D1CE4E5B9ULL + 1;
	for (int i = 0; i < 4; i++)
		rng_next(&s);
	return s ? s : 1;
}

/* A lock token nobody else can guess: 16 bytes from the kernel, in hex. */
static void lock_token(char *out, uint64_t *rng)
{
	unsigned char b[16];
	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = (unsigned char)rng_next(rng);
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void atomic_max(atomic_int *m, int v)
{
	int cur = atomic_load(m);
	while (v > cur && !atomic_compare_exchange_weak(m, &cur, v))
		;
}

/* ---- the app's connection pool ---- */

struct pg_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	PGconn **conns; /* every connection, for close */
	PGconn **idle;  /* the free list: a stack of nidle */
	int size, nidle;
	int limit; /* at most this many lent at once: a run's pool size (<= size) */
};

static void pgp_close(struct pg_pool *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->size; i++)
		if (p->conns[i])
			PQfinish(p->conns[i]);
	free(p->conns);
	free(p->idle);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p);
}

/* One connection of the pool, opened in a thread of its own. */
struct pgp_opener {
	const char *url;
	PGconn *conn;
	pthread_t thread;
	bool started;
	char err[256];
};

/* Connects and readies one connection: one backend per query (no parallel workers, no JIT), so a
 * recompute is one process on the server and its cost is stable; the recompute statements
 * prepared once, so a recompute pays for its query, not for planning it. */
static void *pgp_open_one_cb(void *arg)
{
	struct pgp_opener *o = arg;
	o->conn = pg_connect(o->url, o->err, sizeof(o->err));
	if (!o->conn)
		return NULL;
	bool ok = pg_exec(o->conn,
	                  "SET max_parallel_workers_per_gather = 0; SET jit = off; "
	                  "SET application_name = 'lab-stampede'",
	                  o->err, sizeof(o->err)) == 0;
	const char *names[] = {"hot", "key"}, *sqls[] = {HOT_SQL, KEY_SQL};
	for (int s = 0; ok && s < 2; s++) {
		PGresult *res = PQprepare(o->conn, names[s], sqls[s], 0, NULL);
		ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		if (!ok)
			pg_message_line(o->err, sizeof(o->err),
			                res ? PQresultErrorMessage(res) : PQerrorMessage(o->conn));
		PQclear(res);
	}
	if (!ok) {
		PQfinish(o->conn);
		o->conn = NULL;
	}
	return NULL;
}

/* Opens n connections at once (n authentications in parallel take about as long as one). */
static struct pg_pool *pgp_open(const char *url, int n, char *err, size_t errlen)
{
	struct pg_pool *p = calloc(1, sizeof(*p));
	struct pgp_opener *o = calloc((size_t)n, sizeof(*o));
	if (!p || !o) {
		snprintf(err, errlen, "out of memory");
		free(p);
		free(o);
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->conns = calloc((size_t)n, sizeof(*p->conns));
	p->idle = calloc((size_t)n, sizeof(*p->idle));
	if (!p->conns || !p->idle) {
		snprintf(err, errlen, "out of memory");
		goto err;
	}
	p->size = p->limit = n;
	for (int i = 0; i < n; i++) {
		o[i].url = url;
		if (pthread_create(&o[i].thread, NULL, pgp_open_one_cb, &o[i]) == 0)
			o[i].started = true;
		else
			snprintf(o[i].err, sizeof(o[i].err), "cannot start a thread");
	}
	bool ok = true;
	for (int i = 0; i < n; i++) {
		if (o[i].started)
			pthread_join(o[i].thread, NULL);
		p->conns[i] = o[i].conn;
		if (o[i].conn)
			p->idle[p->nidle++] = o[i].conn;
		else if (ok) {
			snprintf(err, errlen, "%s", o[i].err);
			ok = false;
		}
	}
	if (!ok)
		goto err;
	free(o);
	return p;
err:
	free(o);
	pgp_close(p);
	return NULL;
}

static PGconn *pgp_acquire(struct pg_pool *p)
{
	pthread_mutex_lock(&p->mu);
	while (p->nidle == 0 || p->size - p->nidle >= p->limit)
		pthread_cond_wait(&p->cv, &p->mu);
	PGconn *c = p->idle[--p->nidle];
	pthread_mutex_unlock(&p->mu);
	return c;
}

static void pgp_release(struct pg_pool *p, PGconn *c)
{
	pthread_mutex_lock(&p->mu);
	p->idle[p->nidle++] = c;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* Lends at most limit connections at once from now on (clamped to 1..size); call between runs. */
static void pgp_set_limit(struct pg_pool *p, int limit)
{
	pthread_mutex_lock(&p->mu);
	p->limit = limit < 1 ? 1 : limit > p->size ? p->size : limit;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/*
 * Runs one prepared recompute statement ("hot" or "key"); fills gen and value (valuelen bytes),
 * and *query_us (may be NULL) with the statement's round trip, the wait for a connection excluded.
 * -1 and err on failure.
 */
static int pgp_recompute(struct pg_pool *p, const char *stmt, int nparams, const char *const *params,
                         int64_t *gen, char *value, size_t valuelen, int64_t *query_us, char *err,
                         size_t errlen)
{
	PGconn *c = pgp_acquire(p);
	int ret = -1;
	uint64_t t0 = hist_now_us();
	PGresult *res = PQexecPrepared(c, stmt, nparams, params, NULL, NULL, 0);
	if (query_us)
		*query_us = (int64_t)(hist_now_us() - t0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pg_message_line(err, errlen, res ? PQresultErrorMessage(res) : PQerrorMessage(c));
		goto out;
	}
	if (PQntuples(res) != 1) {
		snprintf(err, errlen, "recompute returned %d rows, expected 1", PQntuples(res));
		goto out;
	}
	*gen = atoll(PQgetvalue(res, 0, 0));
	snprintf(value, valuelen, "%s", PQgetvalue(res, 0, 1));

	ret = 0;
out:
	PQclear(res);
	pgp_release(p, c);
	return ret;
}

/* ---- setup ---- */

static int query_text(PGconn *conn, const char *sql, int nparams, const char *const *params, char *out,
                      size_t outlen, char *err, size_t errlen)
{
	PGresult *res = pg_query(conn, sql, nparams, params, err, errlen);
	if (!res)
		return -1;
	int ret = -1;
	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
		snprintf(err, errlen, "expected one value from: %.60s", sql);
	else {
		snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
		ret = 0;
	}
	PQclear(res);
	return ret;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/*
 * What the lab holds for its whole run: one connection to each server for setup and for reading
 * the log, and the app's pool, opened once (a connection costs milliseconds of authentication,
 * and hundreds of them on a busy machine would time the connects instead of the stampede).
 */
struct stampede {
	PGconn *conn;
	redisContext *rc;
	struct pg_pool *pool; /* max(pg_pool, sweepers) connections; each run sets its limit */
};

static void stampede_free(struct stampede *s)
{
	if (!s)
		return;
	pgp_close(s->pool);
	if (s->rc)
		redisFree(s->rc);
	if (s->conn)
		PQfinish(s->conn);
	free(s);
}

struct stampede *stampede_setup(const struct stampede_config *cfg, double *query_us, char *err, size_t errlen)
{
	if (cfg->clients < 1 || cfg->pg_pool < 1 || cfg->rows < 1 || cfg->keys < 1 || cfg->keys > BUCKETS ||
	    cfg->sweepers < 1 || cfg->bucket_ms < 1 || cfg->ttl_ms < 1 || cfg->key_ttl_ms < 1 ||
	    cfg->jitter_ms < 0) {
		snprintf(err, errlen, "bad configuration (keys must be 1..%d, every size and time positive)",
		         BUCKETS);
		return NULL;
	}
	struct stampede *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (!(s->conn = pg_connect(cfg->pg_url, err, errlen)))
		goto err;
	if (!(s->rc = redis_connect_url(cfg->redis_url, REDIS_TIMEOUT_MS, err, errlen)))
		goto err;
	char sql[1024], rows[24];
	snprintf(rows, sizeof(rows), "%d", cfg->rows);
	if (pg_schema_create(s->conn, SCHEMA, err, errlen) < 0)
		goto err;
	/* unlogged: the lab's tables need no crash safety, and a WAL flush per recompute would
	 * measure the disk instead of the query */
	snprintf(sql, sizeof(sql),
	         "CREATE UNLOGGED TABLE " SCHEMA ".orders (id int PRIMARY KEY, bucket int NOT NULL, "
	         "customer int NOT NULL, amount_cents int NOT NULL);"
	         "INSERT INTO " SCHEMA ".orders SELECT i, i %% %d, (i * 37) %% 5000, i %% 9973 "
	         "FROM generate_series(1, %s) i;"
	         "CREATE INDEX ON " SCHEMA ".orders (bucket);"
	         "ANALYZE " SCHEMA ".orders;"
	         "CREATE SEQUENCE " SCHEMA ".run_ids;"
	         "CREATE UNLOGGED TABLE " SCHEMA ".recomputes (gen bigserial PRIMARY KEY, run int NOT NULL, "
	         "key int NOT NULL, replaces bigint NOT NULL, requested_at timestamptz, started_at "
	         "timestamptz NOT NULL, "
	         "finished_at timestamptz NOT NULL, value text NOT NULL);"
	         "CREATE INDEX ON " SCHEMA ".recomputes (run);"
	         "SET max_parallel_workers_per_gather = 0; SET jit = off",
	         BUCKETS, rows);
	if (pg_exec(s->conn, sql, err, errlen) < 0)
		goto err;
	if (redis_del_prefix(s->rc, PREFIX, NULL, err, errlen) < 0)
		goto err;
	if (query_us) {
		/* the hot query alone, as a client would run it: the median of five */
		double t[5];
		const char *params[] = {"0", "-1"};
		for (int i = 0; i < 5; i++) {
			uint64_t t0 = hist_now_us();
			PGresult *res = pg_query(s->conn, HOT_SQL, 2, params, err, errlen);
			if (!res)
				goto err;
			PQclear(res);
			t[i] = (double)(hist_now_us() - t0);
		}
		qsort(t, 5, sizeof(t[0]), cmp_double);
		*query_us = t[2];
		if (pg_exec(s->conn, "TRUNCATE " SCHEMA ".recomputes", err, errlen) < 0)
			goto err;
	}
	if (!(s->pool = pgp_open(cfg->pg_url, cfg->pg_pool > cfg->sweepers ? cfg->pg_pool : cfg->sweepers,
	                         err, errlen)))
		goto err;
	return s;
err:
	if (s->conn) {
		char derr[256];
		pg_schema_drop(s->conn, SCHEMA, derr, sizeof(derr));
	}
	stampede_free(s);
	return NULL;
}

int stampede_teardown(struct stampede *s, char *err, size_t errlen)
{
	if (!s)
		return 0;
	int ret = 0;
	if (pg_schema_drop(s->conn, SCHEMA, err, errlen) < 0)
		ret = -1;
	char rerr[256];
	if (redis_del_prefix(s->rc, PREFIX, NULL, rerr, sizeof(rerr)) < 0 && ret == 0) {
		snprintf(err, errlen, "%s", rerr);
		ret = -1;
	}
	stampede_free(s);
	return ret;
}

/* ---- what the server logged ---- */

/* Starts a run: a fresh run id and the server's clock now (the origin of the series). */
static int run_begin(PGconn *conn, int *run_id, char *origin, size_t originlen, char *err, size_t errlen)
{
	int64_t id;
	if (pg_query_int64(conn, "SELECT nextval('" SCHEMA ".run_ids')", 0, NULL, &id, err, errlen) < 0)
		return -1;
	*run_id = (int)id;
	return query_text(conn, "SELECT clock_timestamp()::text", 0, NULL, origin, originlen, err, errlen);
}

/* Statements per bucket_ms from origin, every row of the run but the warm-up, by the time in
 * column `at` ("started_at" or "requested_at"). */
static int read_series(PGconn *conn, int run_id, const char *origin, int bucket_ms, const char *at,
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
	PGresult *res = pg_query(conn, sql, 3, params, err, errlen);
	if (!res)
		return -1;
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

/* The most statements of the run that were running at the same moment, on the server's clock. */
static int read_peak(PGconn *conn, int run_id, int *peak, char *err, size_t errlen)
{
	char run[16];
	snprintf(run, sizeof(run), "%d", run_id);
	const char *params[] = {run};
	int64_t v;
	/* +1 at each start, -1 at each end, ends first on a tie; the running sum's maximum */
	if (pg_query_int64(
	            conn,
	            "SELECT coalesce(max(c), 0)::bigint FROM (SELECT sum(d) OVER (ORDER BY t, d ROWS "
	            "UNBOUNDED PRECEDING) AS c FROM (SELECT started_at AS t, 1 AS d FROM " SCHEMA
	            ".recomputes WHERE run = $1::int AND replaces <> -1 UNION ALL SELECT finished_at, -1 "
	            "FROM " SCHEMA ".recomputes WHERE run = $1::int AND replaces <> -1) e) x",
	            1, params, &v, err, errlen) < 0)
		return -1;
	*peak = (int)v;
	return 0;
}

static int read_hot_log(PGconn *conn, int run_id, const char *origin, int bucket_ms, double lost_at_s,
                        double run_s, struct stampede_hot_result *res, char *err, size_t errlen)
{
	char run[16], lost[32];
	snprintf(run, sizeof(run), "%d", run_id);
	snprintf(lost, sizeof(lost), "%.6f", lost_at_s);
	const char *params[] = {run, origin, lost};
	PGresult *r = pg_query(
	        conn,
	        "SELECT count(*) FILTER (WHERE replaces >= 0), count(*) FILTER (WHERE replaces = -2), "
	        "coalesce(avg(extract(epoch FROM finished_at - started_at)) FILTER (WHERE replaces >= 0), "
	        "0) * 1e6, count(*) FILTER (WHERE replaces <> -1 AND started_at < $2::timestamptz + "
	        "make_interval(secs => $3::float8)), count(*) FILTER (WHERE replaces <> -1 AND "
	        "started_at >= $2::timestamptz + make_interval(secs => $3::float8)) "
	        "FROM " SCHEMA ".recomputes WHERE run = $1::int",
	        3, params, err, errlen);
	if (!r)
		return -1;
	if (PQntuples(r) != 1) {
		PQclear(r);
		snprintf(err, errlen, "the recompute log returned no row");
		return -1;
	}
	res->recomputes = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
	res->degraded_queries = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
	res->recompute_mean_us = atof(PQgetvalue(r, 0, 2));
	double before = atof(PQgetvalue(r, 0, 3)), after = atof(PQgetvalue(r, 0, 4));
	PQclear(r);
	if (res->redis_lost) {
		res->queries_per_s_before = lost_at_s > 0 ? before / lost_at_s : 0;
		res->queries_per_s_after = run_s > lost_at_s ? after / (run_s - lost_at_s) : 0;
	}

	const char *p1[] = {run};
	r = pg_query(conn,
	             "SELECT count(*) FROM " SCHEMA ".recomputes WHERE run = $1::int AND replaces >= 0 "
	             "GROUP BY replaces ORDER BY replaces",
	             1, p1, err, errlen);
	if (!r)
		return -1;
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
	if (read_peak(conn, run_id, &res->peak_concurrent, err, errlen) < 0)
		return -1;
	return read_series(conn, run_id, origin, bucket_ms, "started_at", res->series, &res->nseries, err,
	                   errlen);
}

/* ---- the hot key: clients ---- */

/* What the cache holds: "epoch|gen|expiry_us|delta_us|soft_us|value". expiry is XFetch's
 * expiry (and the Redis TTL for the plain defences), soft is SWR's soft TTL, delta the time
 * the recompute took; all on the wall clock so any process could read them. */
struct cached {
	int64_t epoch; /* recomputes in this value's chain: an expiry replaces epoch e with e + 1 */
	int64_t gen;   /* the recompute log's row */
	int64_t expiry_us, delta_us, soft_us;
	char value[96];
};

static int cached_parse(const char *s, struct cached *v)
{
	long long e, g, x, d, so;
	int n = 0;
	if (sscanf(s, "%lld|%lld|%lld|%lld|%lld|%n", &e, &g, &x, &d, &so, &n) != 5 || n == 0)
		return -1;
	v->epoch = e;
	v->gen = g;
	v->expiry_us = x;
	v->delta_us = d;
	v->soft_us = so;
	snprintf(v->value, sizeof(v->value), "%s", s + n);
	return 0;
}

static void cached_format(const struct cached *v, char *out, size_t outlen)
{
	snprintf(out, outlen, "%lld|%lld|%lld|%lld|%lld|%s", (long long)v->epoch, (long long)v->gen,
	         (long long)v->expiry_us, (long long)v->delta_us, (long long)v->soft_us, v->value);
}

/*
 * One run on the hot key, shared by its clients. Counters that every client bumps are atomics;
 * the rest of what a client counts lives in its struct client and is summed after the join.
 */
struct hot_run {
	const struct stampede_config *cfg;
	enum stampede_defence defence;
	const char *client_url; /* where the clients find Redis (the proxy in phase 4) */
	int run_id;
	struct pg_pool *pool;
	uint64_t started_us, deadline_us;
	atomic_int in_flight; /* reads queued for a connection or running a recompute */
	atomic_int peak_in_flight;
	atomic_bool failed;     /* a client hit an error it cannot serve around (PostgreSQL) */
	atomic_bool redis_lost; /* some client saw Redis go away */
	pthread_mutex_t mu;     /* guards err, redis_error, redis_lost_us and the gate */
	pthread_cond_t gate;    /* clients connect, then wait here for go */
	int connected;          /* clients past their connect (or its failure) */
	bool go;
	char err[512];
	char redis_error[256];
	uint64_t redis_lost_us;
};

struct client {
	struct hot_run *run;
	int id;
	pthread_t thread;
	redisContext *rc; /* NULL while Redis is gone */
	uint64_t next_reconnect_us;
	uint64_t rng;
	int64_t last_epoch; /* the epoch of the last value this client saw */
	struct hist latency;
	uint64_t reads, lost, db_waits, stale_reads, hard_misses, recomputes, lock_busy;
	uint64_t reads_after_loss, reconnects;
	char err[512];
};

static void run_fail(struct hot_run *run, const char *msg)
{
	pthread_mutex_lock(&run->mu);
	if (!atomic_load(&run->failed))
		snprintf(run->err, sizeof(run->err), "%s", msg);
	atomic_store(&run->failed, true);
	pthread_mutex_unlock(&run->mu);
}

/* Redis failed under this client: drop the connection, remember the first words said about it. */
static void client_lost_redis(struct client *c, const char *why)
{
	struct hot_run *run = c->run;
	if (c->rc) {
		redisFree(c->rc);
		c->rc = NULL;
	}
	c->next_reconnect_us = hist_now_us() + RECONNECT_EVERY_US;
	pthread_mutex_lock(&run->mu);
	if (!atomic_load(&run->redis_lost)) {
		snprintf(run->redis_error, sizeof(run->redis_error), "%s", why);
		run->redis_lost_us = hist_now_us();
		atomic_store(&run->redis_lost, true);
	}
	pthread_mutex_unlock(&run->mu);
}

/*
 * A checked Redis command for a client. NULL with *gone = true when the connection failed (the
 * client has dropped it); NULL with *gone = false for an error reply (the run fails: Redis said
 * no to a command the lab relies on).
 */
static redisReply *client_cmd(struct client *c, bool *gone, const char *fmt, ...)
{
	*gone = false;
	if (!c->rc) {
		*gone = true;
		return NULL;
	}
	va_list ap;
	va_start(ap, fmt);
	redisReply *reply = redisvCommand(c->rc, fmt, ap);
	va_end(ap);
	if (!reply) {
		int e = errno;
		char why[160];
		redis_error_text(c->rc, e, why, sizeof(why));
		client_lost_redis(c, why);
		*gone = true;
		return NULL;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		char msg[600];
		snprintf(msg, sizeof(msg), "Redis replied with an error: %.*s",
		         (int)(reply->len > 400 ? 400 : reply->len), reply->str);
		freeReplyObject(reply);
		run_fail(c->run, msg);
		return NULL;
	}
	return reply;
}

/* The value from PostgreSQL: replaces is the epoch it replaces (or REPLACES_*). */
static int client_recompute(struct client *c, int64_t replaces, struct cached *v)
{
	struct hot_run *run = c->run;
	char runs[16], reps[24];
	snprintf(runs, sizeof(runs), "%d", run->run_id);
	snprintf(reps, sizeof(reps), "%lld", (long long)replaces);
	const char *params[] = {runs, reps};
	atomic_max(&run->peak_in_flight, atomic_fetch_add(&run->in_flight, 1) + 1);
	int64_t query_us = 0;
	int r = pgp_recompute(run->pool, "hot", 2, params, &v->gen, v->value, sizeof(v->value), &query_us,
	                      c->err, sizeof(c->err));
	int64_t t1 = wall_us();
	atomic_fetch_sub(&run->in_flight, 1);
	if (r < 0) {
		char msg[600];
		snprintf(msg, sizeof(msg), "recompute failed: %s", c->err);
		run_fail(run, msg);
		return -1;
	}
	c->recomputes++;
	v->epoch = replaces >= 0 ? replaces + 1 : 0;
	/* XFetch's delta: the query's round trip, the wait for a pooled connection excluded (a wait
	 * would make the next value's delta, and so its early window, as long as a herd's queue) */
	v->delta_us = query_us;
	v->expiry_us = t1 + (int64_t)run->cfg->ttl_ms * 1000;
	v->soft_us = v->expiry_us;
	return 0;
}

/* The Redis TTL the defence wants: SWR keeps the value past its soft TTL, to serve it stale. */
static int store_px(const struct hot_run *run)
{
	const struct stampede_config *cfg = run->cfg;
	return run->defence == STAMPEDE_SWR ? cfg->ttl_ms + cfg->stale_ms : cfg->ttl_ms;
}

/* Writes v with a Redis TTL of px ms. Returns 0, 1 when Redis is gone, -1 on an error. */
static int client_store_px(struct client *c, const struct cached *v, int px)
{
	char buf[256];
	cached_format(v, buf, sizeof(buf));
	bool gone;
	redisReply *reply = client_cmd(c, &gone, "SET %s %s PX %d", HOT_KEY, buf, px);
	if (!reply)
		return gone ? 1 : -1;
	freeReplyObject(reply);
	return 0;
}

/* Writes v with the defence's TTL. */
static int client_store(struct client *c, const struct cached *v)
{
	return client_store_px(c, v, store_px(c->run));
}

/* GET: 0 with *hit, 1 when Redis is gone, -1 on an error. */
static int client_get(struct client *c, struct cached *v, bool *hit)
{
	bool gone;
	*hit = false;
	redisReply *reply = client_cmd(c, &gone, "GET %s", HOT_KEY);
	if (!reply)
		return gone ? 1 : -1;
	int ret = 0;
	if (reply->type == REDIS_REPLY_STRING) {
		if (cached_parse(reply->str, v) < 0) {
			run_fail(c->run, "the cached value is not in the lab's format");
			ret = -1;
		} else {
			*hit = true;
			c->last_epoch = v->epoch;
		}
	} else if (reply->type != REDIS_REPLY_NIL) {
		run_fail(c->run, "GET returned neither a string nor nil");
		ret = -1;
	}
	freeReplyObject(reply);
	return ret;
}

/* Recomputes and stores; the value is served even if storing it found Redis gone. */
static int recompute_and_store(struct client *c, int64_t replaces, struct cached *v)
{
	if (client_recompute(c, replaces, v) < 0)
		return -1;
	c->last_epoch = v->epoch;
	return client_store(c, v) < 0 ? -1 : 0;
}

/* Deletes the lock only if it still holds our token: a holder whose lock expired must not
 * delete the next holder's. */
static int lock_release(struct client *c, const char *token)
{
	bool gone;
	redisReply *reply =
	        client_cmd(c, &gone, "EVAL %s 1 %s %s",
	                   "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
	                   "else return 0 end",
	                   HOT_LOCK, token);
	if (!reply)
		return gone ? 1 : -1;
	freeReplyObject(reply);
	return 0;
}

/*
 * One read with the client's defence. Returns 0 (v holds the value, *served_us when it was in
 * hand), 1 when Redis went away before a value was found, -1 on an error.
 */
static int read_none(struct client *c, struct cached *v, uint64_t *served_us)
{
	bool hit;
	int r = client_get(c, v, &hit);
	if (r != 0)
		return r;
	if (!hit) {
		c->hard_misses++;
		c->db_waits++;
		if (recompute_and_store(c, c->last_epoch, v) < 0)
			return -1;
	}
	*served_us = hist_now_us();
	return 0;
}

static int read_lock(struct client *c, struct cached *v, uint64_t *served_us)
{
	const struct stampede_config *cfg = c->run->cfg;
	bool hit;
	int r = client_get(c, v, &hit);
	if (r != 0)
		return r;
	if (hit) {
		*served_us = hist_now_us();
		return 0;
	}
	c->hard_misses++;
	c->db_waits++;
	uint64_t start = hist_now_us(), give_up = start + (uint64_t)LOCK_GIVE_UP * cfg->lock_ms * 1000;
	int64_t replaces = c->last_epoch;
	while (hist_now_us() < give_up) {
		char token[40];
		lock_token(token, &c->rng);
		bool gone;
		redisReply *reply = client_cmd(c, &gone, "SET %s %s NX PX %d", HOT_LOCK, token, cfg->lock_ms);
		if (!reply)
			return gone ? 1 : -1;
		bool locked = reply->type == REDIS_REPLY_STATUS;
		freeReplyObject(reply);
		if (locked) {
			/* someone may have written between our miss and our lock: look again first */
			r = client_get(c, v, &hit);
			if (r != 0)
				return r;
			if (!hit && recompute_and_store(c, replaces, v) < 0)
				return -1;
			/* released, or Redis went away and the lock goes with it: the value is in hand */
			if (lock_release(c, token) < 0)
				return -1;
			*served_us = hist_now_us();
			return 0;
		}
		c->lock_busy++;
		/* the lock is held: wait for its holder's value, for at most one lock lifetime */
		uint64_t until = hist_now_us() + (uint64_t)cfg->lock_ms * 1000;
		while (hist_now_us() < until) {
			sleep_us((int64_t)cfg->lock_poll_ms * 1000);
			r = client_get(c, v, &hit);
			if (r != 0)
				return r;
			if (hit) {
				*served_us = hist_now_us();
				return 0;
			}
		}
	}
	c->lost++;
	*served_us = 0;
	return 0;
}

static int read_xfetch(struct client *c, struct cached *v, uint64_t *served_us)
{
	const struct stampede_config *cfg = c->run->cfg;
	bool hit;
	int r = client_get(c, v, &hit);
	if (r != 0)
		return r;
	if (!hit) {
		c->hard_misses++;
		c->db_waits++;
		if (recompute_and_store(c, c->last_epoch, v) < 0)
			return -1;
	} else {
		double u = rng_unit(&c->rng);
		if (u < XFETCH_MIN_RAND)
			u = XFETCH_MIN_RAND;
		/* now - delta * beta * ln(rand) >= expiry: recompute early, alone, while others serve */
		double early = -(double)v->delta_us * cfg->beta * log(u);
		if ((double)wall_us() + early >= (double)v->expiry_us) {
			c->db_waits++;
			if (recompute_and_store(c, v->epoch, v) < 0)
				return -1;
		}
	}
	*served_us = hist_now_us();
	return 0;
}

static int read_swr(struct client *c, struct cached *v, uint64_t *served_us)
{
	const struct stampede_config *cfg = c->run->cfg;
	bool hit;
	int r = client_get(c, v, &hit);
	if (r != 0)
		return r;
	if (!hit) {
		/* past the stale window too: nothing to serve, so this read waits */
		c->hard_misses++;
		c->db_waits++;
		if (recompute_and_store(c, c->last_epoch, v) < 0)
			return -1;
		*served_us = hist_now_us();
		return 0;
	}
	*served_us = hist_now_us();
	if (wall_us() < v->soft_us)
		return 0;
	/* stale: it is served (the read is over), and one client refreshes behind it */
	c->stale_reads++;
	char token[40];
	lock_token(token, &c->rng);
	bool gone;
	redisReply *reply = client_cmd(c, &gone, "SET %s %s NX PX %d", HOT_LOCK, token, cfg->lock_ms);
	if (!reply)
		return gone ? 0 : -1; /* the stale value was served; the refresh waits for Redis */
	bool locked = reply->type == REDIS_REPLY_STATUS;
	freeReplyObject(reply);
	if (!locked) {
		c->lock_busy++;
		return 0;
	}
	struct cached now;
	r = client_get(c, &now, &hit);
	if (r != 0)
		return r < 0 ? -1 : 0;
	/* refresh unless someone did between our read and our lock */
	if (!(hit && wall_us() < now.soft_us) && recompute_and_store(c, v->epoch, &now) < 0)
		return -1;
	return lock_release(c, token) < 0 ? -1 : 0;
}

/* Redis is gone for this client: the read goes straight to PostgreSQL. */
static int read_degraded(struct client *c, struct cached *v, uint64_t *served_us)
{
	if (client_recompute(c, REPLACES_DEGRADED, v) < 0)
		return -1;
	c->recomputes--; /* a read served from the database, not a recompute of the cache */
	c->db_waits++;
	*served_us = hist_now_us();
	return 0;
}

static void client_try_reconnect(struct client *c)
{
	uint64_t now = hist_now_us();
	if (c->rc || now < c->next_reconnect_us)
		return;
	c->reconnects++;
	c->next_reconnect_us = now + RECONNECT_EVERY_US;
	char err[256];
	c->rc = redis_connect_url(c->run->client_url, REDIS_TIMEOUT_MS, err, sizeof(err));
}

static int read_once(struct client *c, struct cached *v, uint64_t *served_us)
{
	client_try_reconnect(c);
	if (c->rc) {
		int r;
		switch (c->run->defence) {
		case STAMPEDE_LOCK:
			r = read_lock(c, v, served_us);
			break;
		case STAMPEDE_XFETCH:
			r = read_xfetch(c, v, served_us);
			break;
		case STAMPEDE_SWR:
			r = read_swr(c, v, served_us);
			break;
		default:
			r = read_none(c, v, served_us);
			break;
		}
		if (r != 1)
			return r;
	}
	return read_degraded(c, v, served_us);
}

static void *client_main_cb(void *arg)
{
	struct client *c = arg;
	struct hot_run *run = c->run;
	const struct stampede_config *cfg = run->cfg;
	/* connect, then wait at the gate: every client starts reading at the same moment */
	char err[256];
	c->rc = redis_connect_url(run->client_url, REDIS_TIMEOUT_MS, err, sizeof(err));
	if (!c->rc) {
		char url[256], msg[600];
		redis_url_redact(run->client_url, url, sizeof(url));
		snprintf(msg, sizeof(msg), "cannot connect to Redis at %s: %s", url, err);
		run_fail(run, msg);
	}
	pthread_mutex_lock(&run->mu);
	run->connected++;
	pthread_cond_broadcast(&run->gate);
	while (!run->go)
		pthread_cond_wait(&run->gate, &run->mu);
	pthread_mutex_unlock(&run->mu);
	while (hist_now_us() < run->deadline_us && !atomic_load(&run->failed)) {
		struct cached v;
		uint64_t t0 = hist_now_us(), served = 0;
		if (read_once(c, &v, &served) < 0)
			break;
		if (served) {
			c->reads++;
			hist_record(&c->latency, served - t0);
			if (atomic_load(&run->redis_lost))
				c->reads_after_loss++;
		}
		/* think: uniform in [0.5, 1.5] x think_ms, so the clients do not march in step */
		sleep_us((int64_t)((0.5 + rng_unit(&c->rng)) * cfg->think_ms * 1000));
	}
	return NULL;
}

static void progress(const struct stampede_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done < 0 ? 0 : done > 1 ? 1 : done, cfg->progress_arg);
}

/*
 * Computes the hot value outside the clients' count (logged as a warm-up) and stores it through
 * the lab's own Redis connection: for `lasting`, with ten times the TTL (it only has to last
 * until the value is computed again under the clients' load), else with the defence's TTL.
 */
static int warm_key(struct stampede *s, struct hot_run *run, bool lasting, char *err, size_t errlen)
{
	struct client warm = {.run = run, .rc = s->rc, .rng = rng_seed(run->cfg->seed, 0)};
	struct cached v;
	if (client_recompute(&warm, REPLACES_WARM, &v) < 0) {
		snprintf(err, errlen, "cannot warm the cache: %s", run->err);
		return -1;
	}
	int px = store_px(run);
	if (lasting) {
		v.expiry_us += 9LL * run->cfg->ttl_ms * 1000;
		v.soft_us = v.expiry_us;
		px *= 10;
	}
	int stored = client_store_px(&warm, &v, px);
	if (stored != 0) {
		snprintf(err, errlen, "cannot warm the cache: %s", stored < 0 ? run->err : run->redis_error);
		if (stored > 0)
			s->rc = NULL; /* dropped by client_lost_redis */
		return -1;
	}
	return 0;
}

static int hot_run(struct stampede *s, const struct stampede_config *cfg, enum stampede_defence defence,
                   const char *client_url, int (*take_away_cb)(void *), void *take_away_arg,
                   struct stampede_hot_result *res, char *err, size_t errlen)
{
	memset(res, 0, sizeof(*res));
	hist_init(&res->latency);
	res->defence = defence;
	res->clients = cfg->clients;
	int ret = -1, started = 0;
	PGconn *conn = s->conn;
	struct client *clients = NULL;
	struct hot_run run = {.cfg = cfg, .defence = defence, .client_url = client_url, .pool = s->pool};
	pthread_mutex_init(&run.mu, NULL);
	pthread_cond_init(&run.gate, NULL);
	char origin[64];

	if (redis_del_prefix(s->rc, PREFIX, NULL, err, errlen) < 0)
		goto out;
	pgp_set_limit(s->pool, cfg->pg_pool);
	if (!(clients = calloc((size_t)cfg->clients, sizeof(*clients)))) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (int i = 0; i < cfg->clients; i++) {
		struct client *c = &clients[i];
		c->run = &run;
		c->id = i;
		c->rng = rng_seed(cfg->seed, i + 1);
		hist_init(&c->latency);
	}
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, CLIENT_STACK);
	for (; started < cfg->clients; started++) {
		if (pthread_create(&clients[started].thread, &attr, client_main_cb, &clients[started]) != 0) {
			run_fail(&run, "cannot start a client thread");
			break;
		}
	}
	pthread_attr_destroy(&attr);
	pthread_mutex_lock(&run.mu);
	while (run.connected < started)
		pthread_cond_wait(&run.gate, &run.mu);
	pthread_mutex_unlock(&run.mu);
	if (atomic_load(&run.failed)) {
		snprintf(err, errlen, "%s", run.err);
		goto out;
	}
	if (run_begin(conn, &run.run_id, origin, sizeof(origin), err, errlen) < 0)
		goto out;

	/* warm the key (epoch 0) before the clients start, as a running service would have it */
	if (warm_key(s, &run, true, err, errlen) < 0)
		goto out;

	pthread_mutex_lock(&run.mu);
	run.started_us = hist_now_us();
	run.deadline_us = run.started_us + (uint64_t)cfg->run_ms * 1000;
	run.go = true;
	pthread_cond_broadcast(&run.gate);
	pthread_mutex_unlock(&run.mu);

	/* once the clients' load is on, the value is computed again, so its delta (XFetch's) is what
	 * a recompute costs under this load, as it would be in a running service; the first expiry
	 * comes a TTL after this */
	sleep_us(SETTLE_MS * 1000);
	if (warm_key(s, &run, false, err, errlen) < 0) {
		run_fail(&run, err);
		goto joined;
	}
	bool taken = false;
	while (hist_now_us() < run.deadline_us && !atomic_load(&run.failed)) {
		uint64_t now = hist_now_us();
		if (take_away_cb && !taken && now >= run.started_us + (uint64_t)cfg->outage_at_ms * 1000) {
			taken = true;
			if (take_away_cb(take_away_arg) < 0)
				run_fail(&run, "could not take Redis away");
		}
		progress(cfg, stampede_defence_name(defence),
		         (double)(now - run.started_us) / (cfg->run_ms * 1000.0));
		int64_t left = (int64_t)(run.deadline_us - now);
		int64_t nap = take_away_cb && !taken ? 10000 : 250000;
		sleep_us(nap < left ? nap : left);
	}
joined:
	for (int i = 0; i < started; i++)
		pthread_join(clients[i].thread, NULL);
	res->run_s = (hist_now_us() - run.started_us) / 1e6;
	started = 0;
	if (atomic_load(&run.failed)) {
		snprintf(err, errlen, "%s", run.err);
		goto out;
	}

	for (int i = 0; i < cfg->clients; i++) {
		struct client *c = &clients[i];
		hist_merge(&res->latency, &c->latency);
		res->reads += c->reads;
		res->lost += c->lost;
		res->db_waits += c->db_waits;
		res->stale_reads += c->stale_reads;
		res->hard_misses += c->hard_misses;
		res->client_recomputes += c->recomputes;
		res->lock_busy += c->lock_busy;
		res->reads_after_loss += c->reads_after_loss;
		res->reconnect_attempts += c->reconnects;
	}
	res->peak_in_flight = atomic_load(&run.peak_in_flight);
	res->redis_lost = atomic_load(&run.redis_lost);
	if (res->redis_lost) {
		res->redis_lost_at_s = (run.redis_lost_us - run.started_us) / 1e6;
		snprintf(res->redis_error, sizeof(res->redis_error), "%s", run.redis_error);
	}
	if (read_hot_log(conn, run.run_id, origin, cfg->bucket_ms,
	                 res->redis_lost ? res->redis_lost_at_s : res->run_s, res->run_s, res, err,
	                 errlen) < 0)
		goto out;
	/* the clients' own count must agree with the server's log */
	if (res->client_recomputes != res->recomputes) {
		snprintf(err, errlen, "the clients counted %llu recomputes, the server logged %llu",
		         (unsigned long long)res->client_recomputes, (unsigned long long)res->recomputes);
		goto out;
	}
	ret = 0;
out:
	atomic_store(&run.failed, true);
	pthread_mutex_lock(&run.mu);
	run.go = true; /* clients still at the gate see failed and leave */
	pthread_cond_broadcast(&run.gate);
	pthread_mutex_unlock(&run.mu);
	for (int i = 0; i < started; i++)
		pthread_join(clients[i].thread, NULL);
	if (clients) {
		for (int i = 0; i < cfg->clients; i++)
			if (clients[i].rc)
				redisFree(clients[i].rc);
		free(clients);
	}
	if (s->rc) {
		char derr[256];
		redis_del_prefix(s->rc, PREFIX, NULL, derr, sizeof(derr));
	}
	pthread_cond_destroy(&run.gate);
	pthread_mutex_destroy(&run.mu);
	return ret;
}

int stampede_hot_run(struct stampede *s, const struct stampede_config *cfg, enum stampede_defence defence,
                     struct stampede_hot_result *res, char *err, size_t errlen)
{
	return hot_run(s, cfg, defence, cfg->redis_url, NULL, NULL, res, err, errlen);
}

/*
 * The clients' URL: cfg->redis_url with its host and port replaced by the proxy's, so a password
 * and a database carry over. The proxy wants a numeric upstream: the host is resolved first.
 */
static struct proxy *outage_proxy(const struct stampede_config *cfg, char *url, size_t urllen, char *err,
                                  size_t errlen)
{
	struct proxy *p = NULL;
	struct evhttp_uri *uri = evhttp_uri_parse(cfg->redis_url);
	const char *host = uri ? evhttp_uri_get_host(uri) : NULL;
	if (!host) {
		snprintf(err, errlen, "not a Redis URL: expected redis://[[user]:password@]host[:port][/db]");
		goto out;
	}
	char hostbuf[256];
	snprintf(hostbuf, sizeof(hostbuf), "%s", host);
	size_t hl = strlen(hostbuf);
	if (hl > 2 && hostbuf[0] == '[' && hostbuf[hl - 1] == ']') {
		memmove(hostbuf, hostbuf + 1, hl - 2);
		hostbuf[hl - 2] = '\0';
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
	char numeric[INET6_ADDRSTRLEN];
	int gai = getaddrinfo(hostbuf, NULL, &hints, &ai);
	if (gai != 0 || !ai ||
	    getnameinfo(ai->ai_addr, ai->ai_addrlen, numeric, sizeof(numeric), NULL, 0, NI_NUMERICHOST) !=
	            0) {
		snprintf(err, errlen, "cannot resolve the Redis host: %s",
		         gai ? gai_strerror(gai) : "no address");
		if (ai)
			freeaddrinfo(ai);
		goto out;
	}
	freeaddrinfo(ai);
	int port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 6379;
	struct proxy_config pc = {.upstream_host = numeric, .upstream_port = port};
	if (!(p = proxy_start(&pc, err, errlen)))
		goto out;
	if (evhttp_uri_set_host(uri, "127.0.0.1") < 0 || evhttp_uri_set_port(uri, proxy_port(p)) < 0 ||
	    !evhttp_uri_join(uri, url, urllen)) {
		snprintf(err, errlen, "cannot build the proxied Redis URL");
		proxy_free(p);
		p = NULL;
	}
out:
	if (uri)
		evhttp_uri_free(uri);
	return p;
}

/* Redis goes away: the proxy closes every open connection and refuses new ones. */
static int take_redis_away_cb(void *arg)
{
	struct proxy *p = arg;
	if (proxy_refuse(p, true) < 0)
		return -1;
	return proxy_cut(p) < 0 ? -1 : 0;
}

int stampede_outage_run(struct stampede *s, const struct stampede_config *cfg,
                        struct stampede_hot_result *res, int *cut, char *err, size_t errlen)
{
	char url[512];
	struct proxy *p = outage_proxy(cfg, url, sizeof(url), err, errlen);
	if (!p)
		return -1;
	struct stampede_config oc = *cfg;
	oc.run_ms = cfg->outage_run_ms;
	int ret = hot_run(s, &oc, STAMPEDE_LOCK, url, take_redis_away_cb, p, res, err, errlen);
	struct proxy_stats st;
	proxy_stats(p, &st);
	if (cut)
		*cut = (int)st.cut;
	proxy_free(p);
	return ret;
}

/* ---- phase 3: many keys, one wave of expiries ---- */

struct jitter_run {
	const struct stampede_config *cfg;
	bool jittered;
	int run_id;
	struct pg_pool *pool;
	uint64_t deadline_us;
	atomic_int keys_done;
	atomic_bool stop;
	atomic_bool failed;
	atomic_uchar *done; /* one flag per key: recomputed once */
	pthread_mutex_t mu;
	char err[512];
};

struct sweeper {
	struct jitter_run *run;
	int id;
	pthread_t thread;
	redisContext *rc;
	uint64_t rng;
	struct hist wait; /* from the MGET that saw a key missing to its new value stored */
};

static int key_ttl(const struct stampede_config *cfg, bool jittered, uint64_t *rng)
{
	if (!jittered || cfg->jitter_ms <= 0)
		return cfg->key_ttl_ms;
	return cfg->key_ttl_ms + (int)(rng_unit(rng) * cfg->jitter_ms);
}

static void jitter_fail(struct jitter_run *run, const char *what, const char *msg)
{
	pthread_mutex_lock(&run->mu);
	if (!atomic_load(&run->failed))
		snprintf(run->err, sizeof(run->err), "%s: %s", what, msg);
	atomic_store(&run->failed, true);
	pthread_mutex_unlock(&run->mu);
}

static void *sweeper_main_cb(void *arg)
{
	struct sweeper *s = arg;
	struct jitter_run *run = s->run;
	const struct stampede_config *cfg = run->cfg;
	int nkeys = 0;
	for (int k = s->id; k < cfg->keys; k += cfg->sweepers)
		nkeys++;
	const char **argv = calloc((size_t)nkeys + 1, sizeof(*argv));
	char(*names)[48] = calloc((size_t)nkeys, sizeof(*names));
	int *ids = calloc((size_t)nkeys, sizeof(*ids));
	char err[512];
	if (!argv || !names || !ids) {
		jitter_fail(run, "sweeper", "out of memory");
		goto out;
	}
	argv[0] = "MGET";
	for (int i = 0, k = s->id; k < cfg->keys; k += cfg->sweepers, i++) {
		ids[i] = k;
		snprintf(names[i], sizeof(names[i]), PREFIX "key:%d", k);
		argv[i + 1] = names[i];
	}
	while (!atomic_load(&run->stop) && !atomic_load(&run->failed) && hist_now_us() < run->deadline_us) {
		uint64_t t0 = hist_now_us();
		redisReply *reply = redisCommandArgv(s->rc, nkeys + 1, argv, NULL);
		if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != (size_t)nkeys) {
			jitter_fail(run, "MGET",
			            reply ? (reply->type == REDIS_REPLY_ERROR ? reply->str : "not an array")
			                  : s->rc->errstr);
			if (reply)
				freeReplyObject(reply);
			break;
		}
		uint64_t seen = hist_now_us();
		char requested[32];
		snprintf(requested, sizeof(requested), "%.6f", wall_us() / 1e6);
		for (int i = 0; i < nkeys && !atomic_load(&run->failed); i++) {
			if (reply->element[i]->type != REDIS_REPLY_NIL)
				continue;
			char runs[16], key[16], value[96];
			int64_t gen;
			snprintf(runs, sizeof(runs), "%d", run->run_id);
			snprintf(key, sizeof(key), "%d", ids[i]);
			const char *params[] = {runs, key, requested};
			if (pgp_recompute(run->pool, "key", 3, params, &gen, value, sizeof(value), NULL, err,
			                  sizeof(err)) < 0) {
				jitter_fail(run, "recompute", err);
				break;
			}
			/* one wave is watched: a recomputed key is kept for ten of its TTLs, so no key
			 * expires twice within the run and both runs do the same work */
			redisReply *set = redis_cmd(s->rc, err, sizeof(err), "SET %s %s PX %d", names[i],
			                            value, 10 * key_ttl(cfg, run->jittered, &s->rng));
			if (!set) {
				jitter_fail(run, "SET", err);
				break;
			}
			freeReplyObject(set);
			hist_record(&s->wait, hist_now_us() - seen);
			if (atomic_exchange(&run->done[ids[i]], 1) == 0 &&
			    atomic_fetch_add(&run->keys_done, 1) + 1 == cfg->keys)
				atomic_store(&run->stop, true);
		}
		freeReplyObject(reply);
		sleep_us((int64_t)(t0 + (uint64_t)cfg->sweep_ms * 1000) - (int64_t)hist_now_us());
	}
out:
	free(argv);
	free(names);
	free(ids);
	return NULL;
}

int stampede_jitter_run(struct stampede *s, const struct stampede_config *cfg, bool jittered,
                        struct stampede_jitter_result *res, char *err, size_t errlen)
{
	memset(res, 0, sizeof(*res));
	res->jittered = jittered;
	res->keys = cfg->keys;
	int ret = -1, started = 0;
	PGconn *conn = s->conn;
	redisContext *rc = s->rc;
	PGresult *warm = NULL;
	struct sweeper *sweepers = NULL;
	struct jitter_run run = {.cfg = cfg, .jittered = jittered, .pool = s->pool};
	pthread_mutex_init(&run.mu, NULL);
	char origin[64];
	uint64_t rng = rng_seed(cfg->seed, jittered ? 7 : 5);

	if (!rc) {
		snprintf(err, errlen, "not connected to Redis");
		goto out;
	}
	if (redis_del_prefix(rc, PREFIX, NULL, err, errlen) < 0)
		goto out;
	/* a connection per sweeper: the wave is limited by the database, not by a pool */
	pgp_set_limit(s->pool, cfg->sweepers);
	run.done = calloc((size_t)cfg->keys, sizeof(*run.done));
	sweepers = calloc((size_t)cfg->sweepers, sizeof(*sweepers));
	if (!run.done || !sweepers) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (int i = 0; i < cfg->sweepers; i++) {
		sweepers[i].run = &run;
		sweepers[i].id = i;
		sweepers[i].rng = rng_seed(cfg->seed, 1000 + i + (jittered ? 100 : 0));
		hist_init(&sweepers[i].wait);
		if (!(sweepers[i].rc = redis_connect_url(cfg->redis_url, REDIS_TIMEOUT_MS, err, errlen)))
			goto out;
	}

	/* every key's value in one statement, then every SET in one pipeline: warmed at once */
	char nkeys[16];
	snprintf(nkeys, sizeof(nkeys), "%d", cfg->keys);
	const char *wparams[] = {nkeys};
	if (!(warm = pg_query(conn,
	                      "SELECT bucket, count(*) || ':' || sum(amount_cents) FROM " SCHEMA ".orders "
	                      "WHERE bucket < $1::int GROUP BY bucket ORDER BY bucket",
	                      1, wparams, err, errlen)))
		goto out;
	if (run_begin(conn, &run.run_id, origin, sizeof(origin), err, errlen) < 0)
		goto out;
	uint64_t t0 = hist_now_us();
	for (int k = 0; k < cfg->keys; k++) {
		const char *value = k < PQntuples(warm) ? PQgetvalue(warm, k, 1) : "0:0";
		if (redisAppendCommand(rc, "SET " PREFIX "key:%d %s PX %d", k, value,
		                       key_ttl(cfg, jittered, &rng)) != REDIS_OK) {
			snprintf(err, errlen, "cannot queue SET: %s", rc->errstr);
			goto out;
		}
	}
	for (int k = 0; k < cfg->keys; k++) {
		void *r = NULL;
		if (redisGetReply(rc, &r) != REDIS_OK || !r) {
			snprintf(err, errlen, "SET failed: %s", rc->errstr);
			goto out;
		}
		redisReply *reply = r;
		bool bad = reply->type == REDIS_REPLY_ERROR;
		if (bad)
			snprintf(err, errlen, "SET failed: %s", reply->str);
		freeReplyObject(reply);
		if (bad)
			goto out;
	}

	/* the wave ends by key_ttl + jitter; the deadline only guards against a stuck run */
	run.deadline_us = t0 + (uint64_t)(cfg->key_ttl_ms + cfg->jitter_ms + 3000) * 1000;
	for (; started < cfg->sweepers; started++)
		if (pthread_create(&sweepers[started].thread, NULL, sweeper_main_cb, &sweepers[started]) !=
		    0) {
			jitter_fail(&run, "sweeper", "cannot start a thread");
			break;
		}
	double span = cfg->key_ttl_ms + (jittered ? cfg->jitter_ms : 0) + 100.0;
	while (!atomic_load(&run.stop) && !atomic_load(&run.failed) && hist_now_us() < run.deadline_us) {
		progress(cfg, jittered ? "jittered TTL" : "same TTL", (hist_now_us() - t0) / (span * 1000.0));
		sleep_us(100000);
	}
	for (int i = 0; i < started; i++)
		pthread_join(sweepers[i].thread, NULL);
	started = 0;
	hist_init(&res->wait);
	for (int i = 0; i < cfg->sweepers; i++)
		hist_merge(&res->wait, &sweepers[i].wait);
	res->run_s = (hist_now_us() - t0) / 1e6;
	if (atomic_load(&run.failed)) {
		snprintf(err, errlen, "%s", run.err);
		goto out;
	}

	char runs[16];
	snprintf(runs, sizeof(runs), "%d", run.run_id);
	const char *p1[] = {runs};
	int64_t n, distinct;
	if (pg_query_int64(conn, "SELECT count(*) FROM " SCHEMA ".recomputes WHERE run = $1::int", 1, p1, &n,
	                   err, errlen) < 0 ||
	    pg_query_int64(conn, "SELECT count(DISTINCT key) FROM " SCHEMA ".recomputes WHERE run = $1::int",
	                   1, p1, &distinct, err, errlen) < 0)
		goto out;
	res->recomputes = (uint64_t)n;
	res->keys_recomputed = (int)distinct;
	if (read_series(conn, run.run_id, origin, cfg->bucket_ms, "requested_at", res->series, &res->nseries,
	                err, errlen) < 0 ||
	    read_series(conn, run.run_id, origin, cfg->bucket_ms, "started_at", res->started, &res->nstarted,
	                err, errlen) < 0 ||
	    read_peak(conn, run.run_id, &res->peak_concurrent, err, errlen) < 0)
		goto out;
	/* the window where the wave can fall, the same for both runs: [ttl, ttl + jitter] */
	res->window_first = cfg->key_ttl_ms / cfg->bucket_ms;
	res->window_last = (cfg->key_ttl_ms + cfg->jitter_ms) / cfg->bucket_ms;
	if (res->window_last >= STAMPEDE_MAX_BUCKETS)
		res->window_last = STAMPEDE_MAX_BUCKETS - 1;
	if (res->nseries < res->window_last + 1)
		res->nseries = res->window_last + 1;
	if (res->nstarted < res->nseries)
		res->nstarted = res->nseries;
	for (int b = 0; b < res->nseries; b++)
		if (res->series[b] > res->peak)
			res->peak = res->series[b];
	res->mean = (double)res->recomputes / (res->window_last - res->window_first + 1);
	res->peak_to_mean = res->mean > 0 ? res->peak / res->mean : 0;
	ret = 0;
out:
	atomic_store(&run.stop, true);
	for (int i = 0; i < started; i++)
		pthread_join(sweepers[i].thread, NULL);
	if (sweepers) {
		for (int i = 0; i < cfg->sweepers; i++)
			if (sweepers[i].rc)
				redisFree(sweepers[i].rc);
		free(sweepers);
	}
	free(run.done);
	PQclear(warm);
	if (rc) {
		char derr[256];
		redis_del_prefix(rc, PREFIX, NULL, derr, sizeof(derr));
	}
	pthread_mutex_destroy(&run.mu);
	return ret;
}
