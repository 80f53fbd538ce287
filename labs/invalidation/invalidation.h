/*
 * invalidation.h — the experiment of lab-invalidation: "How do you handle cache invalidation?"
 *
 * P products (1,000) live in lab_invalidation.products (id, version, price); R reader threads
 * (8) read random products through a cache in Redis (keys lab:invalidation:*), and one writer
 * thread changes products. Every write is one transaction that bumps the product's version and
 * logs (product, version, commit time) in lab_invalidation.writes; right after COMMIT returns,
 * the writer publishes the version and the time in memory (atomics, per product; the time first,
 * so a reader that sees a version also sees its time), so a reader knows the latest version
 * published before its read began. Every read is then judged: stale when the value's version is
 * older than that, and stale by how long (the read's start minus the commit time of the first
 * version it missed).
 *
 * Which way that errs: a version is published a little after it committed (COMMIT's reply, then
 * two stores), so a read that begins in that gap is judged against the older version. A read
 * counted stale is therefore stale for certain (its value is older than a version committed
 * before it began); a read in the gap that got the old value is missed, and a staleness is
 * short by the gap (microseconds against TTLs of tens of ms). So the stale counts are lower
 * bounds: safe for "stale reads happen" (TTL, delete, reconnect); for "0 stale" (versioned keys)
 * the version is read from PostgreSQL after the read began, so it is at least the published one
 * and no stale value can hide in the gap; for "near zero" (NOTIFY) the gap is tiny beside the lag.
 *
 * Five phases (invalidation_run walks them in this order):
 *   1. ttl        cache-aside with a TTL only, swept over several TTLs: hit ratio and stale-read
 *                 share against the TTL, and the worst staleness against the TTL
 *   2. delete     the writer deletes the key after COMMIT; a counted set of writes "crash"
 *                 between COMMIT and the delete (the writer's session is closed, the delete
 *                 never sent): stale until the TTL
 *   3. notify     an AFTER UPDATE trigger calls pg_notify on a channel named for this run; a
 *                 listener thread (LISTEN, poll on the socket, PQconsumeInput, PQnotifies)
 *                 deletes the keys; the writer crashes after the same writes (its session
 *                 closed right after COMMIT): nothing is left stale; the lag from COMMIT to the
 *                 delete
 *   4. reconnect  the listener's backend is ended (pg_terminate_backend) and stays away while
 *                 writes go on; it reconnects without, then with, a re-sync (delete every key
 *                 changed since the last change it heard of, by a change sequence)
 *   5. versioned  the key carries the product's version and a namespace generation, read from
 *                 PostgreSQL per read (one extra round trip); old versions age out by TTL; one
 *                 generation bump invalidates the whole set
 *
 * Faults are injected by the lab and counted, never left to chance: in phases 2 to 4 the cache
 * is warmed, the TTL is longer than the phase, and each product is written at most once (the
 * writer walks a permutation), so no reader can miss a key before its write and fill it late
 * with an old row: every key left stale is one a fault left.
 *
 * Errors: -1 and one line in err; a server lost mid-run is named in the result.
 */
#ifndef LAB_INVALIDATION_H
#define LAB_INVALIDATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"
#include "lab.h"

#define INV_MAX_TTLS 8

struct invalidation_config {
	const char *pg_url;
	const char *redis_url;
	int products;              /* rows in lab_invalidation.products (and keys) */
	int readers;               /* reader threads */
	int pg_pool;               /* libpq connections the readers share (common/pgset.h) */
	int read_pause_us;         /* a reader's pause between reads */
	int write_pause_us;        /* the writer's pause between writes */
	int ttls_ms[INV_MAX_TTLS]; /* phase 1's sweep */
	int nttls;
	int ttl_run_ms;  /* phase 1: how long each TTL runs */
	int run_ms;      /* phases 2, 3, 5: how long the load runs */
	int long_ttl_ms; /* phases 2 to 5: a TTL longer than the phase, so a stale key stays */
	int crash_every; /* phases 2, 3: every crash_every-th write skips what follows its COMMIT */
	int drop_writes; /* phase 4: writes before, during and after the listener's absence */
	uint64_t seed;
	struct lab_phase_hooks hooks;
	void (*progress_cb)(const char *what, double done_fraction, void *arg);
	void *progress_arg;
};

/* The defaults: full or quick (under 10 s in all). */
void invalidation_config_default(struct invalidation_config *cfg, bool quick);

enum invalidation_phase {
	INV_PHASE_TTL,
	INV_PHASE_DELETE,
	INV_PHASE_NOTIFY,
	INV_PHASE_RECONNECT,
	INV_PHASE_VERSIONED,
	INV_PHASES
};

/* What the readers saw in one run of the load. */
struct inv_reads {
	uint64_t reads, hits, misses;
	uint64_t stale;            /* reads whose value was older than the latest committed */
	uint64_t worst_stale_us;   /* the longest a stale read was behind */
	uint64_t longest_fill_us;  /* the longest fill: a miss's SELECT sent to its SET answered */
	uint64_t round_trips;      /* Redis commands + PostgreSQL queries the readers sent */
	uint64_t version_lookups;  /* versioned keys: the extra lookup per read */
	uint64_t writes;           /* committed by the writer during the run */
	uint64_t crashed;          /* writes whose after-COMMIT step was skipped */
	uint64_t stale_keys_after; /* keys holding an older version than the row, after the run */
	double run_s;
};

struct inv_ttl_run {
	int ttl_ms;
	struct inv_reads r;
};

/* Phase 4: one absence of the listener. */
struct inv_drop_run {
	bool resync;
	struct inv_reads r;
	uint64_t notified;       /* notifications the listener received */
	uint64_t missed;         /* writes committed while it was away (notifications lost) */
	uint64_t resync_deleted; /* keys the re-sync deleted */
	int reconnects;
};

struct invalidation_result {
	struct inv_ttl_run ttl[INV_MAX_TTLS];
	int nttl;
	struct inv_reads del;        /* phase 2 */
	struct inv_reads notify;     /* phase 3 */
	uint64_t notified;           /* phase 3: notifications received */
	struct hist lag;             /* phase 3: COMMIT returned to the key deleted */
	uint64_t lag_before_commit;  /* deletes done before the writer's COMMIT returned (lag 0) */
	struct inv_drop_run drop[2]; /* phase 4: [0] no re-sync, [1] re-sync */
	struct inv_reads versioned;  /* phase 5 */
	uint64_t old_version_keys;   /* keys of versions no longer current, after the load */
	uint64_t current_keys;
	uint64_t old_version_bytes; /* MEMORY USAGE summed over them */
	uint64_t gen_misses;        /* reads that missed after one generation bump (of products) */
	uint64_t gen_old_keys;      /* keys of the old generation still held after the bump */
	int long_ttl_ms;
	int products;
	char lost_server[16];
};

/*
 * TTL only: a value read at t was filled by a read of the row that began before its next version
 * committed, and its key lives TTL from the SET; so a read is behind by at most TTL + that fill
 * (the row's SELECT sent to the SET answered). invalidation_judge holds the worst staleness of each TTL
 * to TTL + the run's longest fill + this slack: PX is whole milliseconds and Redis' clock is not
 * the lab's (both monotonic, on one machine), 2 ms covers both. No luck: a bound, not a rate.
 * The staleness measured runs from the version's publication, microseconds after its commit, so
 * the check is that much lenient (said above, under "Which way that errs").
 */
#define INV_TTL_SLACK_US 2000

int invalidation_run(const struct invalidation_config *cfg, struct invalidation_result *res, char *err,
                     size_t errlen);

void invalidation_judge(const struct invalidation_result *res, struct lab_verdict *v);

/* Stale-read share of r (0..1). */
double inv_stale_share(const struct inv_reads *r);
double inv_hit_ratio(const struct inv_reads *r);

#endif
