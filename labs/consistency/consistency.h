/*
 * consistency.h — the experiment of lab-consistency: "What are ACID properties? Which databases
 * don't fully guarantee them?" answered with its second half: many stores offer tunable
 * consistency, strong or eventual per operation, and the price of each, on real replicas.
 *
 * The servers (docs/consistency.md): `scripts/labenv up --replicas` starts a PostgreSQL primary
 * (55433, synchronous_standby_names = 'lab_replica') with a streaming hot standby (55434), and a
 * Redis primary (56380) with its replica (56381). The lab itself starts three throwaway
 * redis-servers (common/child.h) for the cut replica and the quorum model; they die with the run.
 *
 * Six phases (consistency_run walks them in this order):
 *   1. ryw      write on the primary, read at once on the replica (synchronous_commit = local,
 *               i.e. asynchronous replication): stale reads, how far behind (WAL bytes) and for
 *               how long, under a light and a heavy write load
 *   2. fixes    read from the primary after a write (stickiness); wait until the replica's
 *               pg_last_wal_replay_lsn() passes the commit; synchronous_commit = remote_apply
 *   3. knob     synchronous_commit off, local, remote_write, on, remote_apply: commit latency and
 *               stale reads per level, under the heavy load
 *   4. wait     Redis: SET on the primary, GET on the replica, without and with WAIT 1 timeout
 *   5. cut      Redis: a replica that replicates through common/proxy.h, cut off: WAIT times out
 *               and says 0 replicas; the replica serves the old value
 *   6. quorum   a client-side model of Dynamo/Cassandra quorums on N=3 redis-servers: each write
 *               reaches W nodes and each read asks R nodes (both chosen by the seeded RNG)
 *
 * Schema lab_consistency on the lab's primary (it replicates); keys lab:consistency:* on the
 * Redis primary (with a TTL: they die by themselves). Errors: -1 and one line in err.
 */
#ifndef LAB_CONSISTENCY_H
#define LAB_CONSISTENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"
#include "lab.h"

#define CONS_PRIMARY_URL       "postgres://lab:lab@127.0.0.1:55433/lab"
#define CONS_REPLICA_URL       "postgres://lab:lab@127.0.0.1:55434/lab"
#define CONS_REDIS_PRIMARY_URL "redis://127.0.0.1:56380/0"
#define CONS_REDIS_REPLICA_URL "redis://127.0.0.1:56381/0"

enum cons_phase { CONS_RYW, CONS_FIXES, CONS_KNOB, CONS_WAIT, CONS_CUT, CONS_QUORUM, CONS_PHASES };

/* synchronous_commit levels, weakest first */
enum cons_level { CONS_OFF, CONS_LOCAL, CONS_REMOTE_WRITE, CONS_ON, CONS_REMOTE_APPLY, CONS_LEVELS };
const char *cons_level_name(enum cons_level l); /* "off", "local", ... */

enum cons_fix { CONS_STICKY, CONS_LSN_WAIT, CONS_APPLY, CONS_FIXES_N };
const char *cons_fix_name(enum cons_fix f); /* "read the primary", ... */
const char *cons_fix_id(enum cons_fix f);   /* "sticky", "lsn_wait", "remote_apply" */

#define CONS_QUORUMS 5
struct cons_quorum_rw {
	int w, r;
};
extern const struct cons_quorum_rw CONS_QUORUM_RW[CONS_QUORUMS];

struct consistency_config {
	const char *primary_url;       /* LAB_PG_PRIMARY_URL or CONS_PRIMARY_URL */
	const char *replica_url;       /* LAB_PG_REPLICA_URL or CONS_REPLICA_URL */
	const char *redis_primary_url; /* LAB_REDIS_PRIMARY_URL or CONS_REDIS_PRIMARY_URL */
	const char *redis_replica_url; /* LAB_REDIS_REPLICA_URL or CONS_REDIS_REPLICA_URL */
	int pairs;                     /* write-then-read pairs per row of phases 1-3 */
	int writers;                   /* the heavy load's writer threads */
	int batch;                     /* rows per statement of a heavy writer */
	int redis_pairs;               /* phase 4, per row */
	int wait_timeout_ms;           /* WAIT's timeout in phases 4 and 5 */
	int cut_writes;                /* phase 5: writes while the replica is cut off */
	int quorum_pairs;              /* phase 6, per R/W row */
	uint64_t seed;
	void (*progress_cb)(const char *what, double done, void *arg);
	void *progress_arg;
	struct lab_phase_hooks hooks;
};

/* One row of phases 1-3: pairs of a write on the primary and a read right after it. */
struct cons_rw {
	int pairs;
	int stale;              /* reads that did not see the write just committed */
	struct hist commit_us;  /* the write's round trip, commit included */
	struct hist pair_us;    /* write + whatever the fix waits + the read */
	struct hist behind_b;   /* stale reads: WAL bytes the replica had still to replay */
	struct hist visible_us; /* stale reads: from the commit's return until the replica showed it */
	int64_t load_rows;      /* rows the heavy load wrote meanwhile (0 when light) */
};

struct cons_redis_rw {
	int pairs;
	int stale;      /* reads that missed the write (with WAIT: of those WAIT said replicated) */
	int wait_short; /* WAITs that returned fewer replicas than asked */
	struct hist pair_us;
};

struct cons_cut {
	int wait_before;     /* replicas WAIT counted before the cut (1) */
	int writes;          /* writes while cut off */
	int wait_zero;       /* of them, WAITs that returned 0 */
	int stale;           /* reads of the replica that served the old value */
	struct hist wait_us; /* how long each WAIT blocked */
	int wait_after_heal; /* replicas WAIT counted once the link was back */
};

struct cons_quorum {
	int w, r, pairs, stale;
};

struct consistency_result {
	char server_version[64];
	struct cons_rw ryw[2]; /* [0] light, [1] heavy */
	struct cons_rw fixes[CONS_FIXES_N];
	struct cons_rw knob[CONS_LEVELS];
	struct cons_redis_rw redis[2]; /* [0] without WAIT, [1] with WAIT 1 */
	struct cons_cut cut;
	struct cons_quorum quorum[CONS_QUORUMS];
	int phases_done;
};

/* Sizes for a run (quick: seconds). */
void consistency_config_default(struct consistency_config *cfg, bool quick);

int consistency_run(const struct consistency_config *cfg, struct consistency_result *res, char *err,
                    size_t errlen);

void consistency_judge(const struct consistency_result *res, struct lab_verdict *v);

#endif
