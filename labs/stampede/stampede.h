/*
 * stampede.h — the experiment of lab-stampede: "What's a cache stampede and how do you prevent
 * it?"
 *
 * C concurrent clients read one hot key through cache-aside in Redis. Its value costs a real
 * aggregation in PostgreSQL (count(DISTINCT), sum and a percentile over a table the lab fills:
 * tens of milliseconds). The TTL is short, so a run spans several expiries. Four phases:
 *   1. none      plain cache-aside: every client that misses recomputes (the herd)
 *   2. defences  the same load with a lock (SET NX PX with a random token, released by a
 *                compare-and-delete script; waiters WAIT: they poll the cache until the holder
 *                writes, they never serve stale), XFetch (probabilistic early expiration,
 *                Vattani et al. VLDB 2015) and stale-while-revalidate (serve stale past a soft
 *                TTL while one client refreshes)
 *   3. jitter    many keys warmed at once with the same TTL, then with a jittered TTL:
 *                recomputes per 100 ms as the server logged them
 *   4. outage    Redis goes away mid-run (through common/proxy.h): every client degrades to
 *                PostgreSQL and the run ends without a crash
 *
 * Clients are threads, one blocking hiredis connection each, sharing a small blocking pool of
 * libpq connections: the simplest honest model of an app server. A connection per client would
 * be hundreds of backends, past the server's max_connections (100, shared with every lab), and
 * an app pool is what stands between a real herd and the database. So the herd shows as clients
 * queued on the pool and a database running pg_pool recomputes at once, flat out.
 *
 * Counts come from the server: every recompute is one statement that computes the value AND
 * inserts a row into lab_stampede.recomputes (run, key, the epoch it replaces, the statement's
 * start and end on the server's clock). Recomputes, recomputes per expiry, recomputes running
 * at once and the per-100 ms series are all read back from that table. An "expiry" is an epoch:
 * the value carries the number of recomputes in its chain, and a recompute replaces epoch e
 * with e + 1; recomputes per expiry = recomputes grouped by the epoch they replaced.
 *
 * Redis keys: lab:stampede:*. Schema: lab_stampede. Errors: -1 and one line in err.
 */
#ifndef LAB_STAMPEDE_H
#define LAB_STAMPEDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"

#define STAMPEDE_MAX_BUCKETS  160
#define STAMPEDE_MAX_EXPIRIES 64

enum stampede_defence { STAMPEDE_NONE, STAMPEDE_LOCK, STAMPEDE_XFETCH, STAMPEDE_SWR, STAMPEDE_DEFENCES };

/* "no protection", "lock (waiters wait)", "XFetch (beta 1.0)" ... */
const char *stampede_defence_name(enum stampede_defence d);
/* "none", "lock", "xfetch", "swr": the --json names */
const char *stampede_defence_id(enum stampede_defence d);

struct stampede_config {
	const char *pg_url;
	const char *redis_url;
	int clients;      /* concurrent readers of the hot key */
	int pg_pool;      /* libpq connections the clients share */
	int rows;         /* rows in lab_stampede.orders: the hot query's cost */
	int ttl_ms;       /* the hot key's TTL (XFetch's expiry, SWR's soft TTL) */
	int run_ms;       /* how long each defence runs */
	int think_ms;     /* mean pause between a client's reads */
	int lock_ms;      /* the lock's PX: the longest a dead holder blocks the key */
	int lock_poll_ms; /* how often a waiter looks at the cache again */
	double beta;      /* XFetch's beta: above 1 favours earlier recomputes */
	int stale_ms;     /* SWR: how long past the soft TTL a stale value may still be served */
	int keys;         /* phase 3: keys warmed at the same moment */
	int key_ttl_ms; /* phase 3: their base TTL (a recomputed key is kept 10x longer: one wave is watched)
	                 */
	int jitter_ms;  /* phase 3: the jittered TTL is key_ttl_ms + uniform(0, jitter_ms) */
	int sweepers;   /* phase 3: reader threads, each with its share of the keys and a connection */
	int sweep_ms;   /* phase 3: each key is read this often */
	int bucket_ms;  /* phase 3: the series' interval */
	int outage_at_ms;  /* phase 4: Redis goes away this long into the run ... */
	int outage_run_ms; /* ... which lasts this long */
	uint64_t seed;
	/* Called from the lab's thread about every 250 ms while a phase runs; may be NULL. */
	void (*progress_cb)(const char *what, double done_fraction, void *arg);
	void *progress_arg;
};

/* The defaults: full (hundreds of clients, a few seconds a defence) or quick (under 10 s in all). */
void stampede_config_default(struct stampede_config *cfg, bool quick);

/*
 * What a lab run holds from setup to teardown: a connection to each server, and the app's pool
 * of max(pg_pool, sweepers) libpq connections (each run lends at most its own pg_pool or
 * sweepers of them at once). Opened once: connecting costs milliseconds each on a busy machine.
 */
struct stampede;

/*
 * Creates schema lab_stampede: orders (rows rows) and the recompute log; measures the hot query
 * alone (*query_us: the median of five; may be NULL); deletes lab:stampede:* keys; opens the
 * pool. NULL and err on failure, with nothing left behind.
 */
struct stampede *stampede_setup(const struct stampede_config *cfg, double *query_us, char *err,
                                size_t errlen);
/* Drops the schema, deletes every lab:stampede:* key, closes and frees s. NULL is a no-op. */
int stampede_teardown(struct stampede *s, char *err, size_t errlen);

/* One defence (or one outage run) on the hot key. */
struct stampede_hot_result {
	enum stampede_defence defence;
	int clients;
	double run_s; /* from the clients' start to the last client's end */
	/* counted by the server, from the recompute log */
	uint64_t recomputes;                   /* the hot value computed, the warm-up not counted */
	int expiries;                          /* epochs that were replaced */
	int per_expiry[STAMPEDE_MAX_EXPIRIES]; /* recomputes that replaced each epoch, in order */
	double recomputes_per_expiry;          /* recomputes / expiries */
	int min_per_expiry, max_per_expiry;
	int peak_concurrent;                 /* recompute statements running at once on the server */
	double recompute_mean_us;            /* their mean duration on the server */
	double series[STAMPEDE_MAX_BUCKETS]; /* statements per bucket_ms from the clients' start */
	int nseries;
	uint64_t degraded_queries; /* reads the server answered directly because Redis was gone */
	/* counted by the clients */
	uint64_t reads;             /* reads that returned a value */
	uint64_t lost;              /* reads that got no value (a lock waiter that gave up, an error) */
	uint64_t db_waits;          /* reads that waited on a recompute: their own, or the lock holder's */
	uint64_t stale_reads;       /* reads served past the soft TTL (SWR) */
	uint64_t hard_misses;       /* reads that found no value in Redis at all */
	uint64_t client_recomputes; /* recomputes the clients ran (cross-check of the server's count) */
	uint64_t lock_busy;         /* lock: SET NX that found the lock taken */
	int peak_in_flight;         /* reads queued for or running a recompute at once (client side) */
	struct hist latency;        /* every read, from the request to the value in hand */
	/* Redis going away (phase 4, or any Redis failure mid-run) */
	bool redis_lost;
	double redis_lost_at_s;      /* when the first client saw it, from the start */
	char redis_error[256];       /* what hiredis said */
	uint64_t reads_after_loss;   /* reads answered after it */
	uint64_t reconnect_attempts; /* clients trying Redis again (each at most every 500 ms) */
	double queries_per_s_before; /* server statements per second, before and after the loss */
	double queries_per_s_after;
};

/* Runs clients against the hot key with one defence for run_ms (the cfg given to setup, or a
 * copy with other clients, durations or TTLs; pg_pool up to the pool's size). */
int stampede_hot_run(struct stampede *s, const struct stampede_config *cfg, enum stampede_defence defence,
                     struct stampede_hot_result *res, char *err, size_t errlen);

/*
 * Phase 4: the lock defence, with every client's Redis connection through a proxy (common/
 * proxy.h) in front of cfg->redis_url. At outage_at_ms the proxy cuts every connection and
 * refuses new ones: to the clients, Redis went away. Clients that lose Redis serve from
 * PostgreSQL and try Redis again at most every 500 ms. The shared Redis itself is never touched.
 * *cut (may be NULL) gets the connections the proxy cut.
 */
int stampede_outage_run(struct stampede *s, const struct stampede_config *cfg,
                        struct stampede_hot_result *res, int *cut, char *err, size_t errlen);

/* Phase 3: keys warmed at once, with or without jitter, until every key was recomputed once. */
struct stampede_jitter_result {
	bool jittered;
	int keys;
	uint64_t recomputes; /* server: the log's rows for this run */
	int keys_recomputed; /* distinct keys among them */
	/* recomputes per bucket_ms from the warm-up, as logged by the server: series by the moment a
	 * reader asked (found its key missing), started by the moment the statement started */
	double series[STAMPEDE_MAX_BUCKETS];
	int nseries;
	double started[STAMPEDE_MAX_BUCKETS];
	int nstarted;
	int window_first, window_last; /* buckets the expiries can fall in: [ttl, ttl + jitter] */
	double peak;                   /* most recomputes asked for in one bucket */
	double mean;                   /* recomputes / buckets of the window */
	double peak_to_mean;
	int peak_concurrent; /* server: statements running at once */
	struct hist wait;    /* clients: from seeing a key missing to its value back in Redis */
	double run_s;
};

int stampede_jitter_run(struct stampede *s, const struct stampede_config *cfg, bool jittered,
                        struct stampede_jitter_result *res, char *err, size_t errlen);

#endif
