/*
 * internal.h — what the files of lab-sql-vs-nosql share (the experiment is described in
 * sql_vs_nosql.h); main.c and the tests see sql_vs_nosql.h only.
 *
 *   sql_vs_nosql.c  the config, the phase list, the run, the judge and the decision table
 *   store.c         the schema, the seed of the three stores, the storage phase, the teardown
 *   clients.c       counted calls (round trips), concurrent clients, decoding an order
 *   patterns.c      the five access patterns on each store: the code whose lines are counted
 *   phases.c        the phases: each pattern measured, the schema variability, the sweep
 */
#ifndef LAB_SQL_VS_NOSQL_INTERNAL_H
#define LAB_SQL_VS_NOSQL_INTERNAL_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "hist.h"
#include "pgset.h"
#include "sql_vs_nosql.h"

#define SCHEMA SQL_VS_NOSQL_SCHEMA
#define PREFIX SQL_VS_NOSQL_PREFIX
/* The data's "now": fixed (2024-06-01T00:00:00Z), so a seed makes the same orders on any day */
#define SVN_REF_TS 1717200000LL
/* Orders are placed over the 90 days before it, one second apart at most once: placed_at is
 * REF - SPAN + (id x 7919) mod SPAN, a bijection for id < SPAN (7919 is prime and no factor of
 * SPAN), so no two orders share a time and "the last 10" is the same on every store. */
#define SVN_SPAN_S 7776000LL
#define SVN_WEEK_S 604800LL
/* Rows of documents copied to Redis per pipeline: about 1.5 MB of writes, 20,000 commands. */
#define SVN_COPY_BATCH 5000
/* Redis commands time out after 2 s: far above a loopback round trip, short enough to notice */
#define SVN_REDIS_TIMEOUT_MS 2000

/* What a run holds from setup to teardown. */
struct svn_ctx {
	const struct sql_vs_nosql_config *cfg;
	PGconn *conn;                       /* the lab's own: setup, counts, teardown */
	redisContext *rc;                   /* the lab's own */
	struct pgset *pool;                 /* SVN_MAX_CLIENTS connections for the clients */
	redisContext *rcs[SVN_MAX_CLIENTS]; /* one Redis connection per client */
	long long redis_used_before;        /* INFO used_memory before the copy */
	char lost[16];                      /* the first server seen gone, or "" */
};

/* One client: its connections, what it counted, what it measured. */
struct svn_worker {
	struct svn_ctx *x;
	int id;
	PGconn *pg;
	redisContext *rc;
	uint64_t rng;
	struct hist lat;
	uint64_t ops, rt, orders, cmds;
	uint64_t wait_us; /* time spent in round trips: request sent to answer in hand */
	int64_t checksum;
	int64_t conflicts;
	int64_t keys_read, bytes_moved, writes;
	int pending; /* Redis commands appended and not yet read */
	/* pattern 5's naive buyers: where they meet between the read and the write (svn_race_pause) */
	struct svn_meet *meet;
};

/* An order decoded from rows or a document: enough to prove two stores hold the same one. */
struct svn_order {
	int64_t id, ts;
	int64_t total_cents;
	int items;
};

/* ---- clients.c: counted calls ---- */

/* A worker on the lab's own connections (phases 3, 4, 6), counters zero. */
void svn_solo(struct svn_ctx *x, struct svn_worker *w);

/* One statement that returns rows (TUPLES_OK); one round trip. The caller PQclears. */
PGresult *svn_pg(struct svn_worker *w, const char *sql, int n, const char *const *params, char *err,
                 size_t errlen);
/*
 * The statements of patterns 1 and 2 (patterns.c): run thousands of times each, so prepared once
 * per connection, as a driver does (pgx, JDBC past prepareThreshold, psycopg's prepare_threshold):
 * a lookup then pays no parse and, once PostgreSQL settles on a generic plan, no planning.
 */
struct svn_statement {
	const char *name, *sql;
	const char *stats_like; /* picks it out of pg_stat_statements (LIKE) */
};
#define SVN_NPREPARED 4
extern const struct svn_statement SVN_PREPARED[SVN_NPREPARED];
/* PREPAREs SVN_PREPARED on every connection of x->pool: setup, neither timed nor counted. */
int svn_prepare_pool(struct svn_ctx *x, char *err, size_t errlen);
/* Runs a statement svn_prepare_pool prepared on w->pg (TUPLES_OK); one round trip. The caller
 * PQclears. */
PGresult *svn_pg_prepared(struct svn_worker *w, const char *name, int n, const char *const *params, char *err,
                          size_t errlen);
/* One statement that returns none (COMMAND_OK); one round trip; *rows: rows it touched (may be NULL). */
int svn_pg_cmd(struct svn_worker *w, const char *sql, int n, const char *const *params, int64_t *rows,
               char *err, size_t errlen);
/* One Redis command and its reply, checked (redis_cmd); one round trip. */
redisReply *svn_redis(struct svn_worker *w, char *err, size_t errlen, const char *fmt, ...);
/* Appends a command to the pipeline (redisAppendCommand): no round trip yet. */
int svn_redis_append(struct svn_worker *w, char *err, size_t errlen, const char *fmt, ...);
/* The same with an argument vector. */
int svn_redis_append_argv(struct svn_worker *w, int argc, const char **argv, const size_t *lens, char *err,
                          size_t errlen);
/*
 * Reads every pending reply: one round trip. Each is checked for NULL and REDIS_REPLY_ERROR, also
 * inside an array (an EXEC's answers);
 * when out is not NULL the replies are kept there (out has room for w->pending), else freed.
 * -1 and err at the first bad one (the others are still read and freed).
 */
int svn_redis_flush(struct svn_worker *w, redisReply **out, char *err, size_t errlen);

/*
 * A SCAN reply taken apart: its next cursor into cursor (len bytes) and its keys (an array of
 * strings, borrowed from r) into *keys. -1 and err when r is not [cursor, [key, ...]].
 */
int svn_scan_reply(const redisReply *r, char *cursor, size_t len, const redisReply **keys, char *err,
                   size_t errlen);

/* Decodes a document (the JSON text both document stores hold) into o. -1 when it is not one. */
int svn_doc_decode(const char *text, size_t len, struct svn_order *o);
/* Decodes the rows of orders (columns id, ts, qty, price_cents; rows of one order together) into
 * o[0..max), returns how many. */
int svn_rows_decode(const PGresult *res, struct svn_order *o, int max);

/* Notes in x->lost "PostgreSQL" when w's connection to it is gone, else "Redis" when that one
 * is, unless a server was noted already. Safe from any client thread. */
void svn_note_lost(struct svn_ctx *x, const struct svn_worker *w);

/*
 * Runs clients workers on store at once, each calling op until ops calls (ops > 0) or until
 * duration_us passed (ops 0), each call timed into the worker's histogram. Workers borrow a
 * PostgreSQL connection of x->pool and use x->rcs[i]. The merged numbers go to out.
 */
typedef int (*svn_op_fn)(struct svn_worker *w, const void *arg, char *err, size_t errlen);
struct svn_load {
	enum svn_store store;
	int clients;
	int ops;
	uint64_t duration_us;
	svn_op_fn op;
	const void *arg;
	uint64_t salt; /* the workers' random streams: rng_stream(seed ^ salt, id) */
};
int svn_load_run(struct svn_ctx *x, const struct svn_load *l, struct svn_reads *out, char *err,
                 size_t errlen);

/*
 * A start gate for client threads: they wait at it until the main thread opens it, or until
 * it is failed (a thread could not be started), when they leave without working.
 */
struct svn_gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool open, failed;
};
void svn_gate_init(struct svn_gate *g);
void svn_gate_destroy(struct svn_gate *g);
/* Opens the gate; failed: every waiter leaves. */
void svn_gate_open(struct svn_gate *g, bool failed);
/* Waits for the gate; true when the threads must leave. */
bool svn_gate_wait(struct svn_gate *g);

/*
 * Where n threads meet, once a round: each waits until all n have come (bounded by
 * SVN_MEET_WAIT_MS, so a thread that failed before coming never hangs the others).
 */
struct svn_meet {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int n, come;
	unsigned round;
};
#define SVN_MEET_WAIT_MS 2000
void svn_meet_init(struct svn_meet *m, int n);
void svn_meet_destroy(struct svn_meet *m);
/*
 * Pattern 5's pause between a buyer's read and its write: with w->meet, first waits until every
 * buyer has read (the naive race scripted: every read before any write, whatever the machine's
 * load does to the threads' start), then gap_us; without, gap_us alone.
 */
void svn_race_pause(struct svn_worker *w, int gap_us);

/* A random order id of the data (1..orders), from the worker's stream. */
int64_t svn_pick_order(struct svn_worker *w);
/* A random customer id (1..customers). */
int64_t svn_pick_customer(struct svn_worker *w);
/* cfg's progress callback, done clamped to 0..1. */
void svn_progress(const struct sql_vs_nosql_config *cfg, const char *what, double done);

/* ---- patterns.c: the implementations whose lines are counted ---- */

/* Pattern 1: the order with this id, decoded into o. */
int p1_sql(struct svn_worker *w, int64_t id, struct svn_order *o, char *err, size_t errlen);
int p1_jsonb(struct svn_worker *w, int64_t id, struct svn_order *o, char *err, size_t errlen);
int p1_redis(struct svn_worker *w, int64_t id, struct svn_order *o, char *err, size_t errlen);
/* Pattern 2: the customer's last 10 orders, newest first, into o[10]; returns how many. */
int p2_sql(struct svn_worker *w, int64_t customer, struct svn_order *o, char *err, size_t errlen);
int p2_jsonb(struct svn_worker *w, int64_t customer, struct svn_order *o, char *err, size_t errlen);
int p2_redis(struct svn_worker *w, int64_t customer, struct svn_order *o, char *err, size_t errlen);
/* Pattern 3: revenue per category (the order of CATEGORIES in patterns.c) of orders placed at or after since.
 */
int p3_sql(struct svn_worker *w, int64_t since, int64_t *revenue, char *err, size_t errlen);
int p3_jsonb(struct svn_worker *w, int64_t since, int64_t *revenue, char *err, size_t errlen);
int p3_redis(struct svn_worker *w, int64_t since, int64_t *revenue, char *err, size_t errlen);
/* Pattern 4: product renamed; w->writes counts the rows or keys written. */
int p4_sql(struct svn_worker *w, int product, const char *name, char *err, size_t errlen);
int p4_jsonb(struct svn_worker *w, int product, const char *name, char *err, size_t errlen);
int p4_redis(struct svn_worker *w, int product, const char *name, char *err, size_t errlen);
/* Pattern 5: one attempt to buy round's last item; *sold 1 when this client sold it. */
int p5_sql_naive(struct svn_worker *w, int round, int gap_us, int *sold, char *err, size_t errlen);
int p5_sql_guarded(struct svn_worker *w, int round, int gap_us, int *sold, char *err, size_t errlen);
int p5_redis_naive(struct svn_worker *w, int round, int gap_us, int *sold, char *err, size_t errlen);
int p5_redis_guarded(struct svn_worker *w, int round, int gap_us, int *sold, char *err, size_t errlen);
/* The category's index in the order of CATEGORIES (patterns.c), -1 when unknown. */
int svn_category_index(const char *name);

/* ---- store.c ---- */

/* Connects, creates and seeds the three stores (phase 1's work is svn_seed_run). NULL and err. */
struct svn_ctx *svn_open(const struct sql_vs_nosql_config *cfg, char *lost, size_t lostlen, char *err,
                         size_t errlen);
/* Drops the schema and deletes the keys (not after Ctrl-C: the guard does), closes, frees. */
int svn_close(struct svn_ctx *x, char *err, size_t errlen);
int svn_seed_run(struct svn_ctx *x, struct svn_seed *out, char *err, size_t errlen);
int svn_storage_run(struct svn_ctx *x, struct svn_storage *out, char *err, size_t errlen);

/* ---- phases.c ---- */

int svn_reads_run(struct svn_ctx *x, struct sql_vs_nosql_result *r, char *err, size_t errlen);
int svn_adhoc_run(struct svn_ctx *x, struct sql_vs_nosql_result *r, char *err, size_t errlen);
int svn_rename_run(struct svn_ctx *x, struct sql_vs_nosql_result *r, char *err, size_t errlen);
int svn_race_run(struct svn_ctx *x, struct sql_vs_nosql_result *r, char *err, size_t errlen);
int svn_schema_run(struct svn_ctx *x, struct sql_vs_nosql_result *r, char *err, size_t errlen);
int svn_sweep_run(struct svn_ctx *x, struct sql_vs_nosql_result *r, char *err, size_t errlen);

#endif
