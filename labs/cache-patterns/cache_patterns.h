/*
 * cache_patterns.h — the experiment of lab-cache-patterns: "What caching patterns do you know?
 * Cache-aside, write-through, write-behind: each has different consistency and failure
 * implications."
 *
 * One entity, a product's price, in PostgreSQL (lab_cache_patterns.products: the source of
 * truth, a version bumped by every UPDATE) cached in Redis (lab:cache-patterns:*), read and
 * written by concurrent clients. Each pattern is written the way production code writes it, then
 * attacked. Four phases (cache_patterns_run walks them in this order):
 *   1. aside     cache-aside (read: cache, else DB then SET; write: UPDATE then DEL). The race
 *                that leaves a stale value for good, first scripted (the lab holds the reader
 *                between its DB read and its SET while a writer's UPDATE+DEL lands), then under
 *                random load (readers and writers, the same gap injected into every miss); and
 *                update-the-cache-on-write (SET instead of DEL): two writers racing.
 *   2. fixes     the same race scripted and under load with each fix: a short TTL (a bound:
 *                stale until expiry), a delayed second DEL, and a versioned set (a Lua script:
 *                SET only if the stored version is older; the writer leaves a version tombstone
 *                instead of deleting, or a stale reader's SET would land on an empty key).
 *   3. through   write-through (UPDATE and SET in the request): its cost per write, and the
 *                second of the two writes failing (PostgreSQL refuses a CHECK; Redis cut through
 *                common/proxy.h) in both orders: which order leaves which inconsistency.
 *   4. behind    write-behind (a Lua script: SET + XADD to a Redis stream; a worker flushes to
 *                PostgreSQL through a consumer group): its latency, coalescing (10 writes to a
 *                key, 1 DB write), and a crash: the worker killed mid-flush, a throwaway
 *                redis-server the lab started (common/child.h) killed with SIGKILL and
 *                restarted, without persistence and with AOF (appendfsync always): acknowledged
 *                writes lost, counted against what the clients were told.
 *
 * Staleness is judged by versions: every cached value is "V:<version>:<price>", and a key is
 * stale when its version differs from the row's. A read is stale when the version it was served
 * is older than one a writer had committed before the read began.
 *
 * Errors: -1 and one line in err; a server that went away mid-run is named in res->lost_server.
 * The files: cache_patterns.c runs and judges; store.c owns the schema and the cache encoding;
 * clients.c runs a load of readers and writers for any pattern; aside.c the scripted races;
 * through.c write-through's failures; behind.c write-behind's worker, crash and coalescing.
 */
#ifndef LAB_CACHE_PATTERNS_H
#define LAB_CACHE_PATTERNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"
#include "lab.h"

#define CP_MAX_KEYS 64
/* clients of a load, the write-behind worker included: each holds one connection to each server,
 * and two lab tests may run at once against max_connections 100 */
#define CP_MAX_CLIENTS 8
/* a "later" count waits this long past the TTL: Redis expires a key on the first access after its
 * TTL, so any margin works; 20 ms keeps the printed wait a round figure */
#define CP_TTL_MARGIN_MS 20

/* The patterns measured under load, in the summary table's order. */
enum cp_pattern {
	CP_ASIDE,         /* cache-aside: UPDATE then DEL; a miss reads the DB then SETs */
	CP_ASIDE_TTL,     /* the same, the reader's SET with a short TTL */
	CP_ASIDE_DD,      /* the same, plus a second DEL dd_delay_ms after the first */
	CP_ASIDE_VERSION, /* versioned set: a Lua script sets only a newer version */
	CP_UPDATE,        /* update-the-cache-on-write: UPDATE then SET (a gap injected between) */
	CP_THROUGH,       /* write-through, DB first: UPDATE then SET, in the request */
	CP_BEHIND,        /* write-behind: SET + XADD, a worker flushes to PostgreSQL */
	CP_PATTERNS
};

/* "cache-aside (DEL)", ...: the table's names */
const char *cp_pattern_name(enum cp_pattern p);

struct cache_patterns_config {
	const char *pg_url;
	const char *redis_url;
	int keys;         /* products read and written (<= CP_MAX_KEYS) */
	int readers;      /* reader threads of each load */
	int writers;      /* writer threads of each load (readers + writers + the worker <= CP_MAX_CLIENTS) */
	int run_ms;       /* how long each load runs */
	int gap_ms;       /* the delay injected in a reader's miss between its DB read and its SET */
	int ttl_ms;       /* the short TTL of the TTL fix */
	int dd_delay_ms;  /* the delayed second DEL comes this long after the first */
	int scripted;     /* races played step by step per scripted scenario (one key each) */
	int wt_writes;    /* write-through failures: writes per order and failing store */
	int wb_writes;    /* write-behind crash: acknowledged writes before the crash */
	int wb_batch;     /* the worker's batch (XREADGROUP COUNT) */
	int coalesce_per; /* coalescing: writes per key before the worker runs */
	uint64_t seed;
	struct lab_phase_hooks hooks; /* around each phase (main.c tells through them); zero = none */
	/* Called from the lab's thread while a phase runs; may be NULL. */
	void (*progress_cb)(const char *what, double done_fraction, void *arg);
	void *progress_arg;
};

/* The defaults: full or quick (under 10 s in all). */
void cache_patterns_config_default(struct cache_patterns_config *cfg, bool quick);

enum cp_phase { CP_PHASE_ASIDE, CP_PHASE_FIXES, CP_PHASE_THROUGH, CP_PHASE_BEHIND, CP_PHASES };

/* One pattern under random load. */
struct cp_load_result {
	int keys;
	uint64_t reads, writes;
	uint64_t misses;      /* reads that went to PostgreSQL */
	uint64_t stale_reads; /* reads served a version older than one committed before they began */
	uint64_t rejected;    /* versioned set: SETs the script refused (an older version) */
	uint64_t db_writes;   /* write-behind: rows the worker wrote (server: sum of flushes) */
	int stale_keys;       /* keys whose cached version differs from the row's after the load */
	int stale_keys_later; /* the same, ttl_ms later (the TTL's bound; the others stay) */
	struct hist read_lat, write_lat;
};

/* A scripted race: one key per race, each step in a fixed order. */
struct cp_scripted {
	int races;
	int stale;       /* keys stale once the races are over */
	int stale_later; /* the same, ttl_ms (and the second DEL) later */
};

/* write-through: the first write succeeds, the second fails. */
enum cp_order { CP_CACHE_FIRST, CP_DB_FIRST, CP_ORDERS };
enum cp_fault { CP_DB_REFUSES, CP_REDIS_CUT, CP_FAULTS };

struct cp_through_cell {
	int writes;       /* attempted */
	int told_ok;      /* the client was told the write succeeded */
	int inconsistent; /* keys whose cache disagrees with the row afterwards */
};

/* write-behind's crash, one persistence setting. */
struct cp_crash {
	bool aof;
	int acked;             /* writes the clients were told succeeded */
	int flushed_before;    /* stream entries the worker had acknowledged (XACK) before it died */
	int db_rows_at_kill;   /* rows the dying worker had written in its last, unacknowledged batch */
	int recovered_entries; /* entries the new worker found after the restart */
	int lost;              /* acknowledged writes whose version never reached PostgreSQL */
};

struct cache_patterns_result {
	struct cp_load_result load[CP_PATTERNS];
	/* phase 1 */
	struct cp_scripted aside_race; /* no fix: stale, and still stale later */
	struct cp_scripted update_race;
	/* phase 2 */
	struct cp_scripted fix[3]; /* [0] TTL, [1] delayed second DEL, [2] versioned set */
	/* phase 3 */
	struct cp_through_cell through[CP_ORDERS][CP_FAULTS];
	int connections_cut;
	/* phase 4 */
	struct cp_crash crash[2]; /* [0] no persistence, [1] AOF */
	int coalesce_keys, coalesce_client_writes, coalesce_db_writes;
	char redis_server[64]; /* the throwaway redis-server's version line */
	char lost_server[16];  /* "PostgreSQL" or "Redis" when a server went away, else "" */
};

/*
 * Creates schema lab_cache_patterns, walks the four phases with cfg->hooks around each, then
 * drops the schema and every lab:cache-patterns:* key and stops the throwaway redis-server, also
 * when a phase failed. 0, or -1 and err. res is large (histograms): allocate it.
 */
int cache_patterns_run(const struct cache_patterns_config *cfg, struct cache_patterns_result *res, char *err,
                       size_t errlen);

/* The claim and every threshold, with their reasons; fills v. */
void cache_patterns_judge(const struct cache_patterns_result *res, struct lab_verdict *v);

#endif
