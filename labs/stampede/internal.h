/*
 * internal.h — what the files of lab-stampede share (the experiment is described in stampede.h).
 * main.c and the tests see stampede.h only.
 */
#ifndef LAB_STAMPEDE_INTERNAL_H
#define LAB_STAMPEDE_INTERNAL_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "pgset.h"
#include "stampede.h"

#define SCHEMA   "lab_stampede"
#define PREFIX   "lab:stampede:"
#define HOT_KEY  PREFIX "hot"
#define HOT_LOCK PREFIX "hot:lock"
/* the newest epoch written, kept past the value's expiry: a client that finds the value gone
 * learns which epoch expired, even if it slept through that epoch's whole life */
#define HOT_EPOCH PREFIX "hot:epoch"
/* Stores the value (KEYS[1], ARGV[1], PX ARGV[2]) and raises the epoch (KEYS[2]) to ARGV[3], in
 * one round trip; a late writer of an older epoch does not lower it. */
#define STORE_SCRIPT                                                                                         \
	"redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) "                                                \
	"if tonumber(redis.call('get', KEYS[2]) or '-1') < tonumber(ARGV[3]) then "                          \
	"redis.call('set', KEYS[2], ARGV[3]) end return 1"
/* rows per bucket for phase 3: bucket = id % BUCKETS, so at most BUCKETS distinct keys */
#define BUCKETS 1000
/* Redis commands time out after 1 s: far above a loopback round trip, short enough to notice */
#define REDIS_TIMEOUT_MS 1000
/* a recompute waits at most this long for a connection of the app's pool: a herd's queue is a
 * few seconds here (200 clients, 2 connections, tens of ms a recompute); ten times that is a
 * database that stopped answering */
#define BORROW_TIMEOUT_MS 30000
/* the epoch a recompute "replaces" for the warm-up, and for reads served while Redis is gone */
#define REPLACES_WARM     (-1)
#define REPLACES_DEGRADED (-2)

/* Every connection of the lab: one backend per query (no parallel workers, no JIT), so a
 * recompute is one process on the server and its cost is stable. */
#define PG_SESSION_OPTIONS "-c max_parallel_workers_per_gather=0 -c jit=off"

/* The hot value: an aggregation over every order. Computing it also logs it, in one statement,
 * so the server counts every recompute and times it on its own clock. */
#define HOT_SQL                                                                                              \
	"INSERT INTO " SCHEMA ".recomputes (run, key, replaces, started_at, finished_at, value) "            \
	"SELECT $1::int, 0, $2::bigint, statement_timestamp(), clock_timestamp(), "                          \
	"a.customers || ':' || a.total || ':' || round(a.p99::numeric, 2) "                                  \
	"FROM (SELECT count(DISTINCT customer) AS customers, sum(amount_cents) AS total, "                   \
	"percentile_cont(0.99) WITHIN GROUP (ORDER BY amount_cents) AS p99 FROM " SCHEMA ".orders) a "       \
	"RETURNING gen, value"
/* Phase 3: one key's value, an aggregation over its bucket (an index scan: well under 1 ms).
 * requested_at is when its reader found the key missing: the load offered to the database,
 * which a queue may spread before the statements start. */
#define KEY_SQL                                                                                              \
	"INSERT INTO " SCHEMA                                                                                \
	".recomputes (run, key, replaces, requested_at, started_at, finished_at, value) "                    \
	"SELECT $1::int, $2::int, 0, to_timestamp($3::float8), statement_timestamp(), clock_timestamp(), "   \
	"count(*) || ':' || coalesce(sum(amount_cents), 0) FROM " SCHEMA ".orders WHERE bucket = $2::int "   \
	"RETURNING gen, value"

/* What a run holds from setup to teardown (store.c). */
struct stampede {
	const struct stampede_config *cfg;
	PGconn *conn;      /* the lab's own: setup, reading the log, teardown */
	redisContext *rc;  /* the lab's own: warm-ups, deleting keys */
	struct pgset *app; /* the app's pool: pg_pool connections the hot key's clients share */
	char lost[16];     /* the first server seen gone: "PostgreSQL", "Redis" or "" */
};

/* ---- stampede.c: small tools ---- */

/* A failure shared by threads: the first one's message and the server it lost (NULL: none). */
struct fault {
	pthread_mutex_t mu;
	atomic_bool failed;
	const char *server;
	char err[512];
};

void fault_init(struct fault *f);
void fault_destroy(struct fault *f);
/* Records the first failure; later ones are dropped. server: "PostgreSQL", "Redis" or NULL. */
void fault_set(struct fault *f, const char *server, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
bool fault_failed(struct fault *f);
/*
 * Ctrl-C: true, with f failed ("interrupted"), once the lab was interrupted. Checked before every
 * Redis write: the lab's guard deletes lab:stampede:* keys while the lab's threads wind down, and
 * a key written after that would be left behind.
 */
bool fault_interrupted(struct fault *f);
/* Copies f's message into err and notes its server as lost in s; returns -1. */
int fault_report(struct fault *f, struct stampede *s, char *err, size_t errlen);

/* "PostgreSQL" when a call on c failed because the connection is gone (CONNECTION_BAD), else NULL. */
const char *stp_pg_gone(const PGconn *c);
/* "Redis" when a call on c failed on the connection itself (not an error reply), else NULL. */
const char *stp_redis_gone(const redisContext *c);
/* Notes server (NULL: nothing) as the run's lost server; the first one wins. */
void stampede_lost(struct stampede *s, const char *server);

int64_t stp_wall_us(void);
/* cfg's progress callback, with done clamped to 0..1. */
void stp_progress(const struct stampede_config *cfg, const char *what, double done);

/* ---- store.c: the schema, the recompute log ---- */

/*
 * Creates schema lab_stampede, measures the hot query alone (*query_us), deletes lab:stampede:*
 * keys, opens the app's pool. NULL and err on failure, with nothing left behind (*lost: the
 * server that was gone, or "").
 */
struct stampede *store_open(const struct stampede_config *cfg, double *query_us, char *lost, size_t lostlen,
                            char *err, size_t errlen);
/* Drops the schema and every lab:stampede:* key (through new connections when the lab's own were
 * lost), closes and frees s. NULL is a no-op. */
int store_close(struct stampede *s, char *err, size_t errlen);

/* Starts a run in the log: a fresh run id and the server's clock now (the series' origin). */
int log_begin(struct stampede *s, int *run_id, char *origin, size_t originlen, char *err, size_t errlen);
/* Statements of the run per bucket_ms from origin, the warm-up left out, by the time in column at
 * ("started_at" or "requested_at"). */
int log_series(struct stampede *s, int run_id, const char *origin, int bucket_ms, const char *at,
               double *series, int *nseries, char *err, size_t errlen);
/* The most statements of the run running at the same moment, on the server's clock. */
int log_peak(struct stampede *s, int run_id, int *peak, char *err, size_t errlen);
/* The server's counts of a hot-key run into res (lost_at_s splits the outage's before and after). */
int log_hot(struct stampede *s, int run_id, const char *origin, int bucket_ms, double lost_at_s, double run_s,
            struct stampede_hot_result *res, char *err, size_t errlen);
/* Rows and distinct keys of a phase 3 run. */
int log_keys(struct stampede *s, int run_id, uint64_t *rows, int *keys, char *err, size_t errlen);

/* ---- cache.c: one client of the hot key ---- */

/* What the cache holds: "epoch|gen|expiry_us|delta_us|soft_us|value". expiry is XFetch's
 * expiry (and the Redis TTL for the plain defences), soft is SWR's soft TTL, delta the time
 * the recompute took; all on the wall clock so any process could read them. */
struct cached {
	int64_t epoch; /* recomputes in this value's chain: an expiry replaces epoch e with e + 1 */
	int64_t gen;   /* the recompute log's row */
	int64_t expiry_us, delta_us, soft_us;
	char value[96];
};

/* The value as the cache holds it. */
void cached_format(const struct cached *v, char *out, size_t outlen);

/*
 * One run on the hot key, shared by its clients. Counters that every client bumps are atomics;
 * the rest of what a client counts lives in its struct client and is summed after the join.
 */
struct hot_run {
	const struct stampede_config *cfg;
	enum stampede_defence defence;
	const char *client_url; /* where the clients find Redis (the proxy in phase 4) */
	bool degrade;           /* phase 4: a client that loses Redis serves from PostgreSQL */
	int run_id;
	char origin[64]; /* the server's clock when the run began: the series' origin */
	struct pgset *app;
	uint64_t started_us;          /* the go */
	uint64_t clock_us;            /* the run's clock: the go, later by a slow settle recompute */
	_Atomic uint64_t deadline_us; /* clock_us + run_ms */
	atomic_int in_flight;         /* reads queued for a connection or running a recompute */
	atomic_int peak_in_flight;
	struct fault fault;     /* what ends the run: PostgreSQL, or Redis outside phase 4 */
	atomic_bool redis_lost; /* phase 4: some client saw Redis go away */
	pthread_mutex_t mu;     /* guards redis_error, redis_lost_us and the gate */
	pthread_cond_t gate;    /* clients connect, then wait here for go */
	int connected;          /* clients past their connect (or its failure) */
	bool go;
	char redis_error[256];
	uint64_t redis_lost_us;
};

struct client {
	struct hot_run *run;
	pthread_t thread;
	redisContext *rc; /* NULL while Redis is gone (phase 4) */
	uint64_t next_reconnect_us;
	uint64_t rng;
	int64_t last_epoch; /* the epoch of the last value this client saw (or that expired) */
	struct hist latency;
	uint64_t reads, lost, db_waits, stale_reads, hard_misses, recomputes, lock_busy;
	uint64_t reads_after_loss, reconnects;
};

/* A client's thread: connect, wait at the gate, read until the deadline. */
void *client_main_cb(void *arg);
/* The value from PostgreSQL (replaces: the epoch it replaces, or REPLACES_*). -1: the run failed. */
int client_recompute(struct client *c, int64_t replaces, struct cached *v);
/* Writes v with a Redis TTL of px ms. 0, 1 when Redis is gone (phase 4), -1: the run failed. */
int client_store_px(struct client *c, const struct cached *v, int px);
/* The Redis TTL the run's defence wants: SWR keeps the value past its soft TTL, to serve it stale. */
int store_px(const struct hot_run *run);

/* ---- hot.c, jitter.c: the runs ---- */

/* Runs cfg->clients clients against the hot key with one defence for cfg->run_ms. */
int hot_run(struct stampede *s, const struct stampede_config *cfg, enum stampede_defence defence,
            struct stampede_hot_result *res, char *err, size_t errlen);
/*
 * Phase 4: the lock defence, with every client's Redis connection through a proxy (common/
 * proxy.h) in front of cfg->redis_url. At outage_at_ms the proxy cuts every connection and
 * refuses new ones: to the clients, Redis went away. Clients that lose Redis serve from
 * PostgreSQL and try Redis again at most every 500 ms. The shared Redis itself is never touched.
 * *cut gets the connections the proxy cut.
 */
int outage_run(struct stampede *s, const struct stampede_config *cfg, struct stampede_hot_result *res,
               int *cut, char *err, size_t errlen);
/* Phase 3: keys warmed at once, with or without jitter, until every key was recomputed once;
 * cfg->sweepers readers recompute through the app's pool. */
int jitter_run(struct stampede *s, const struct stampede_config *cfg, bool jittered,
               struct stampede_jitter_result *res, char *err, size_t errlen);

#endif
