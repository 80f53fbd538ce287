/*
 * stampede.h — the experiment of lab-stampede: "What's a cache stampede and how do you prevent
 * it?"
 *
 * C concurrent clients read one hot key through cache-aside in Redis. Its value costs a real
 * aggregation in PostgreSQL (count(DISTINCT), sum and a percentile over a table the lab fills:
 * milliseconds alone, tens under load). The TTL is short, so a run spans at least one expiry.
 * Four phases (stampede_run walks them in this order):
 *   1. herd      plain cache-aside: every client that misses recomputes
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
 * Clients are threads, one blocking hiredis connection each, sharing a small set of blocking
 * libpq connections (common/pgset.h): the simplest honest model of an app server's pool. A
 * connection per client would be hundreds of backends, past the server's max_connections (100,
 * shared with every lab), and an app pool is what stands between a real herd and the database.
 * So the herd shows as clients queued on the pool and a database running pg_pool recomputes at
 * once, flat out.
 *
 * Counts come from the server: every recompute is one statement that computes the value AND
 * inserts a row into lab_stampede.recomputes (run, key, the epoch it replaces, the statement's
 * start and end on the server's clock). Recomputes, recomputes per expiry, recomputes running
 * at once and the per-100 ms series are all read back from that table. An "expiry" is an epoch:
 * the value carries the number of recomputes in its chain, and a recompute replaces epoch e
 * with e + 1; recomputes per expiry = recomputes grouped by the epoch they replaced.
 *
 * Redis keys: lab:stampede:*. Schema: lab_stampede. Errors: -1 and one line in err; a server
 * that went away mid-run (outside phase 4's deliberate outage) is named in the result.
 *
 * The files: stampede.c runs the phases (and holds their --predict questions) and judges;
 * store.c owns the schema and reads the server's log; cache.c is one client of the hot key and
 * its defences; hot.c runs the clients (phases 1, 2 and 4); jitter.c runs the many keys of
 * phase 3.
 */
#ifndef LAB_STAMPEDE_H
#define LAB_STAMPEDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"
#include "lab.h"

#define STAMPEDE_MAX_BUCKETS  160
#define STAMPEDE_MAX_EXPIRIES 64

enum stampede_defence { STAMPEDE_NONE, STAMPEDE_LOCK, STAMPEDE_XFETCH, STAMPEDE_SWR, STAMPEDE_DEFENCES };

/* "no protection", "lock (waiters wait)", "XFetch", "stale-while-revalidate" */
const char *stampede_defence_name(enum stampede_defence d);
/* "none", "lock", "xfetch", "swr": the --json names */
const char *stampede_defence_id(enum stampede_defence d);

struct stampede_config {
	const char *pg_url;
	const char *redis_url;
	int clients;       /* concurrent readers of the hot key */
	int pg_pool;       /* libpq connections the clients share */
	int rows;          /* rows in lab_stampede.orders: the hot query's cost */
	int ttl_ms;        /* the hot key's TTL (SWR's soft TTL) */
	int xfetch_ttl_ms; /* XFetch's TTL: long against its early window (see the defaults) */
	int run_ms;        /* how long each defence runs (XFetch: longer by xfetch_ttl_ms - ttl_ms) */
	int think_ms;      /* mean pause between a client's reads; 0: about one recompute (stampede.c) */
	int lock_ms;       /* the lock's PX: the longest a dead holder blocks the key */
	int lock_poll_ms;  /* how often a waiter looks at the cache again */
	double beta;       /* XFetch's beta: above 1 favours earlier recomputes */
	int stale_ms;      /* SWR: how long past the soft TTL a stale value may still be served */
	int keys;          /* phase 3: keys warmed at the same moment */
	int key_ttl_ms;    /* phase 3: their base TTL (a recomputed key is kept 10x longer: one wave) */
	int jitter_ms;     /* phase 3: the jittered TTL is key_ttl_ms + uniform(0, jitter_ms) */
	int sweepers;      /* phase 3: reader threads, each with its share of the keys */
	int sweep_ms;      /* phase 3: each key is read this often */
	int bucket_ms;     /* phase 3: the series' interval */
	int outage_at_ms;  /* phase 4: Redis goes away this long into the run ... */
	int outage_run_ms; /* ... which lasts this long */
	uint64_t seed;
	struct lab_phase_hooks hooks; /* around each phase (main.c tells through them); zero = none */
	/* Called from the lab's thread about every 250 ms while a phase runs; may be NULL. */
	void (*progress_cb)(const char *what, double done_fraction, void *arg);
	void *progress_arg;
};

/* The defaults: full (hundreds of clients, a few seconds a defence) or quick (under 10 s in all). */
void stampede_config_default(struct stampede_config *cfg, bool quick);

/* The phases, in the order stampede_run walks them (and main.c tells them). */
enum stampede_phase {
	STAMPEDE_PHASE_HERD,
	STAMPEDE_PHASE_DEFENCES,
	STAMPEDE_PHASE_JITTER,
	STAMPEDE_PHASE_OUTAGE,
	STAMPEDE_PHASES
};

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
	/* Redis going away (phase 4's outage) */
	bool redis_lost;
	double redis_lost_at_s;      /* when the first client saw it, from the start */
	char redis_error[256];       /* what hiredis said */
	uint64_t reads_after_loss;   /* reads answered after it */
	uint64_t reconnect_attempts; /* clients trying Redis again (each at most every 500 ms) */
	double queries_per_s_before; /* server statements per second, before and after the loss */
	double queries_per_s_after;
};

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
	int bucket_ms; /* the series' interval */
};

/* Everything a run measured. */
struct stampede_result {
	double query_us;                                   /* the hot query alone: the median of five */
	int think_ms;                                      /* the clients' mean pause between reads */
	struct stampede_hot_result hot[STAMPEDE_DEFENCES]; /* phase 1 fills [NONE], phase 2 the rest */
	struct stampede_jitter_result jitter[2];           /* phase 3: [0] same TTL, [1] jittered */
	struct stampede_hot_result outage;                 /* phase 4 */
	int connections_cut;                               /* phase 4: the proxy's cut connections */
	/* when the run failed because a server went away (outside phase 4's deliberate outage):
	 * "PostgreSQL" or "Redis", else "" */
	char lost_server[16];
};

/*
 * Creates schema lab_stampede (orders: cfg->rows rows; the recompute log), measures the hot query
 * alone, walks the four phases with cfg->hooks around each, then drops the schema and every
 * lab:stampede:* key, also when a phase failed. 0, or -1 and err (with res->lost_server set when
 * a server went away). res is large (histograms): allocate it.
 */
int stampede_run(const struct stampede_config *cfg, struct stampede_result *res, char *err, size_t errlen);

/* The claim and every threshold, with their reasons; fills v. */
void stampede_judge(const struct stampede_result *res, struct lab_verdict *v);

/* How many times jitter cut the peak of recomputes asked for per bucket (j[0] same TTL, j[1] jittered). */
double stampede_jitter_fall(const struct stampede_jitter_result *j);

#endif
