/*
 * sql_vs_nosql.h — the experiment of lab-sql-vs-nosql: "When would you choose a NoSQL database
 * over a relational one?"
 *
 * One workload, e-commerce orders with line items and a customer, stored three ways:
 *   relational  schema lab_sql_vs_nosql in PostgreSQL: customers, products, orders, order_items
 *   jsonb       the middle road: one jsonb document per order (customer and items inside), same
 *               server, same indexes on id and (customer_id, ts)
 *   Redis       as a Redis user designs it: a JSON string per order (lab:sql-vs-nosql:order:<id>)
 *               and a sorted set per customer of its orders by time
 *               (lab:sql-vs-nosql:customer:<id>:orders), written together in MULTI/EXEC, a hash
 *               per product (lab:sql-vs-nosql:product:<id>)
 * PostgreSQL is seeded server-side with generate_series from the seed; the documents are built
 * from the relational rows by the server (jsonb_build_object) and copied into Redis with
 * pipelined writes, so the three hold the same orders, byte for byte the same documents.
 *
 * Phases (sql_vs_nosql_run walks them in this order):
 *   1. seed        the three stores filled, timed, counted
 *   2. reads       pattern 1 (an order by id) and 2 (a customer's last 10 orders) at a fixed
 *                  concurrency on each store: p50/p99 of the round trips, the server's own time
 *                  per operation, round trips, lines of code
 *   3. adhoc       pattern 3, "revenue per category last week": one statement vs a SCAN of every
 *                  order key (keys read, bytes moved); the answers must agree to the cent
 *   4. rename      pattern 4, a product renamed: one UPDATE of one row vs every denormalized copy
 *                  found and rewritten (counted)
 *   5. race        pattern 5, the last item: naive read-check-write on each store oversells;
 *                  SELECT ... FOR UPDATE and WATCH/MULTI/EXEC do not (counted by the servers)
 *   6. schema      per-category attributes: EAV vs jsonb + GIN vs a Redis hash, by one attribute
 *   7. storage     the same orders: pg_total_relation_size vs Redis MEMORY USAGE and used_memory
 *   8. throughput  pattern 1 at several concurrencies on each store, as a ratio and orders a day
 *
 * Errors: -1 and one line in err (errlen bytes). Nothing here prints.
 */
#ifndef LAB_SQL_VS_NOSQL_H
#define LAB_SQL_VS_NOSQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"
#include "lab.h"

#define SQL_VS_NOSQL_SCHEMA "lab_sql_vs_nosql"
#define SQL_VS_NOSQL_PREFIX "lab:sql-vs-nosql:"
#define SVN_MAX_SWEEP       4
#define SVN_CATEGORIES      8
#define SVN_MAX_CLIENTS     6

/* The three ways the orders are stored. */
enum svn_store { SVN_SQL, SVN_JSONB, SVN_REDIS, SVN_STORES };

/* "PG relational", "PG jsonb", "Redis" */
const char *svn_store_name(enum svn_store s);

struct sql_vs_nosql_config {
	const char *pg_url;
	const char *redis_url;
	uint64_t seed;
	int orders;               /* 100,000 (quick 20,000) */
	int customers;            /* about 10 orders each */
	int products;             /* the catalogue: each order has 1 to 4 lines of it */
	int clients;              /* patterns 1 and 2: the fixed concurrency, clients per store */
	int ops;                  /* patterns 1 and 2: operations per client */
	int repeats;              /* patterns 3 and 6: timed runs, the median reported */
	int race_clients;         /* pattern 5: clients per store racing for each last item */
	int race_rounds;          /* pattern 5: items, one in stock each, raced for one after the other */
	int race_gap_us;          /* pattern 5: the pause injected between the check and the write */
	int sample_keys;          /* phase 7: keys whose MEMORY USAGE is read */
	int sweep[SVN_MAX_SWEEP]; /* phase 8: concurrencies */
	int nsweep;
	int sweep_ms; /* phase 8: how long each concurrency runs on each store */
	struct lab_phase_hooks hooks;
	/* Called from the lab's thread during long phases; may be NULL. */
	void (*progress_cb)(const char *what, double done_fraction, void *arg);
	void *progress_arg;
};

/* The defaults: full (100,000 orders) or quick (20,000, under 10 s in all). */
void sql_vs_nosql_config_default(struct sql_vs_nosql_config *cfg, bool quick);

enum svn_phase {
	SVN_PHASE_SEED,
	SVN_PHASE_READS,
	SVN_PHASE_ADHOC,
	SVN_PHASE_RENAME,
	SVN_PHASE_RACE,
	SVN_PHASE_SCHEMA,
	SVN_PHASE_STORAGE,
	SVN_PHASE_THROUGHPUT,
	SVN_PHASES
};

/* ---- lines of code: what each pattern's implementation took, counted from patterns.c ---- */

/*
 * The implementations of patterns.c whose lines are counted, in the order of svn_loc_regions: each
 * lies between a line "/ * loc: <name> * /" and a line "/ * loc end * /" in patterns.c, and counts
 * its lines that are neither blank nor only a comment. p3.redis and p4.redis also count the
 * region "redis.scan" (SCAN over every order key, MGET a batch at a time, repeats skipped), which
 * both needed. tests/test_sql_vs_nosql.c recounts them.
 */
enum svn_loc {
	SVN_LOC_P1_SQL,
	SVN_LOC_P1_JSONB,
	SVN_LOC_P1_REDIS,
	SVN_LOC_P2_SQL,
	SVN_LOC_P2_JSONB,
	SVN_LOC_P2_REDIS,
	SVN_LOC_P3_SQL,
	SVN_LOC_P3_JSONB,
	SVN_LOC_P3_REDIS,
	SVN_LOC_P4_SQL,
	SVN_LOC_P4_JSONB,
	SVN_LOC_P4_REDIS,
	SVN_LOC_P5_SQL_NAIVE,
	SVN_LOC_P5_SQL_GUARD,
	SVN_LOC_P5_REDIS_NAIVE,
	SVN_LOC_P5_REDIS_GUARD,
	SVN_LOC_REGIONS
};

/* The region's name in patterns.c ("p1.sql") and its line count (a constant). */
const char *svn_loc_name(enum svn_loc r);
int svn_loc_lines(enum svn_loc r);

/* ---- results ---- */

struct svn_seed {
	int64_t orders, items, customers, products; /* counted by PostgreSQL after the seed */
	int64_t redis_orders;                       /* order keys in Redis (SCAN), after the seed */
	double pg_s, jsonb_s, redis_s;              /* the time each store took */
	int64_t redis_round_trips;                  /* pipeline flushes of the copy */
	int64_t redis_commands;                     /* commands sent (MULTI, SET, ZADD, EXEC per order) */
};

/* Patterns 1 and 2 on one store: clients x ops operations. */
struct svn_reads {
	struct hist lat;
	uint64_t ops;
	uint64_t round_trips;
	uint64_t commands;    /* SQL statements or Redis commands sent (a pipeline holds several) */
	uint64_t orders_read; /* orders built from the answers */
	int64_t checksum;     /* the sum of the totals of every order read: equal on every store */
	double wall_s;
	/* the server's own accounting: calls of the pattern's statements or commands while it ran
	 * (pg_stat_statements; Redis INFO commandstats of GET and ZREVRANGE, which other clients of a
	 * shared Redis add to), and the microseconds it spent executing one operation's: its time
	 * per call times the lab's calls per operation */
	int64_t server_calls;
	double server_us;
};

/* Pattern 3 on one store: revenue per category over the last 7 days. */
struct svn_adhoc {
	int64_t statements;  /* SQL statements, or Redis commands */
	int64_t round_trips; /* SCAN and MGET batches */
	int64_t keys_read;   /* Redis: order keys read (SCAN may repeat one); SQL: 0, the server reads */
	int64_t orders_read; /* Redis: distinct orders among them */
	int64_t bytes_moved; /* bytes of the answers that reached the client */
	int64_t revenue[SVN_CATEGORIES];
	uint64_t median_us;
};

/* Pattern 4 on one store: product renamed. */
struct svn_rename {
	int64_t statements; /* SQL statements, or Redis commands */
	int64_t round_trips;
	int64_t keys_read; /* Redis: order keys read to find the copies */
	int64_t writes;    /* rows updated, or keys rewritten (the product's hash included) */
	uint64_t us;
};

/* Pattern 5: one store, one variant (naive or guarded). */
struct svn_race {
	int rounds, clients;
	int64_t sales;        /* sales recorded by the server */
	int64_t oversells;    /* sales past the one item in stock, summed over rounds */
	int rounds_oversold;  /* rounds with more than one sale */
	int64_t min_stock;    /* the lowest final stock of any round, read from the server */
	int64_t conflicts;    /* guarded Redis: EXEC aborted by WATCH; PostgreSQL: 0 */
	uint64_t round_trips; /* client attempts' round trips, all clients */
	uint64_t attempts;    /* purchase attempts, all clients */
	struct hist lat;      /* one client's attempt, from its check to its answer */
};

enum svn_variant { SVN_NAIVE, SVN_GUARDED, SVN_VARIANTS };

/* Phase 6: one schema for per-category attributes, queried by one attribute. */
enum svn_attr_design { SVN_EAV, SVN_GIN, SVN_HASH, SVN_DESIGNS };
struct svn_attr {
	int64_t matches; /* products with the attribute value */
	int64_t touched; /* Redis: keys read; PostgreSQL: rows returned (an index found them) */
	int64_t round_trips;
	uint64_t median_us;
};

struct svn_storage {
	int64_t sql_table_bytes, sql_index_bytes;     /* orders + order_items + customers */
	int64_t jsonb_table_bytes, jsonb_index_bytes; /* orders_doc (its TOAST included) */
	int64_t redis_sampled_bytes;                  /* MEMORY USAGE, sampled, scaled to every key */
	int sampled;                                  /* keys sampled */
	int64_t redis_used_delta;                     /* INFO used_memory after the seed - before */
	int64_t redis_doc_bytes;                      /* the JSON strings alone: STRLEN summed */
};

struct svn_sweep {
	int n;
	int clients[SVN_MAX_SWEEP];
	double ops_s[SVN_MAX_SWEEP][SVN_STORES];
};

struct sql_vs_nosql_result {
	struct svn_seed seed;
	struct svn_reads p1[SVN_STORES], p2[SVN_STORES];
	int clients, ops; /* of patterns 1 and 2 */
	struct svn_adhoc p3[SVN_STORES];
	int64_t p3_orders_in_week; /* orders of the last 7 days, counted by PostgreSQL */
	struct svn_rename p4[SVN_STORES];
	int64_t p4_copies; /* orders that hold the renamed product, counted by PostgreSQL */
	int p4_product;
	struct svn_race p5[2][SVN_VARIANTS]; /* [0] PostgreSQL, [1] Redis */
	int race_gap_us;
	struct svn_attr attrs[SVN_DESIGNS];
	struct svn_storage storage;
	struct svn_sweep sweep;
	/* when a server went away mid-run: "PostgreSQL" or "Redis", else "" */
	char lost_server[16];
};

/*
 * Creates schema lab_sql_vs_nosql and keys lab:sql-vs-nosql:*, walks the eight phases with
 * cfg->hooks around each, then drops the schema and deletes the keys, also when a phase failed.
 * 0, or -1 and err (res->lost_server names a server that went away). res is large: allocate it.
 */
int sql_vs_nosql_run(const struct sql_vs_nosql_config *cfg, struct sql_vs_nosql_result *res, char *err,
                     size_t errlen);

/* Redis' p50 advantage on pattern 1 as a client saw it: the relational p50 over Redis' (0 when
 * not measured). */
double svn_p1_ratio(const struct sql_vs_nosql_result *r);
/* The same from the servers' accounting: the relational server time per lookup over Redis'. */
double svn_p1_server_ratio(const struct sql_vs_nosql_result *r);

/* The claim and every threshold, with their reasons. */
void sql_vs_nosql_judge(const struct sql_vs_nosql_result *r, struct lab_verdict *v);

/* One row of the decision table: what fit better, by how much, why. */
struct svn_decision {
	char pattern[48];
	char winner[24];
	char by[40];
	char why[120];
};
#define SVN_DECISIONS 7
/* Fills rows[SVN_DECISIONS] from a run's numbers. This function can't fail. */
void sql_vs_nosql_decide(const struct sql_vs_nosql_result *r, struct svn_decision *rows);

#endif
