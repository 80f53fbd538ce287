/*
 * indexing.h — the experiment of lab-indexing: "Explain database indexing. When would you not add
 * an index?"
 *
 * Schema lab_indexing, PostgreSQL only. One orders table of cfg->rows rows, seeded server-side
 * (one INSERT ... SELECT over generate_series) from cfg->seed, VACUUMed and ANALYZEd, then five
 * phases, each measured with the server's own accounting:
 *
 *   1. reads        a point and a range lookup by code with no index (Seq Scan), a B-tree (Index
 *                   Scan) and a covering B-tree with INCLUDE (Index Only Scan, Heap Fetches 0 as
 *                   the visibility map the VACUUM set allows)
 *   2. writes       the same rows inserted into tables with 0, 1, 3 and 6 secondary indexes: the
 *                   statement's WAL bytes (EXPLAIN's WAL, beside the cluster's pg_current_wal_lsn()
 *                   difference), its execution time, the table's and the indexes' sizes
 *   3. small        a table of a few thousand rows: the planner's choice with and without an
 *                   index, and each plan forced (enable_seqscan, enable_indexscan, enable_bitmapscan)
 *   4. selectivity  sum(amount) WHERE bucket < k from ~0.1% to ~30% of the rows: the planner's
 *                   choice beside the Seq Scan, the Index Scan and the Bitmap Heap Scan forced
 *   5. follow-ups   composite column order, lower(email) with and without an expression index,
 *                   LIKE 'abc%' vs LIKE '%abc' (a text_pattern_ops index), a partial index on the
 *                   hot 1%, and the index nobody uses, found by pg_stat_user_indexes.idx_scan = 0
 *
 * Plans and buffers come from EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON), parsed with
 * jansson: the first scan node of the plan tree, the index it reads, shared hit + read of the
 * whole plan, Heap Fetches, and the server's Execution Time (the best of cfg->repeats runs: the
 * work is the same each time, so a slower run only measured a busier machine). Every session
 * runs with max_parallel_workers_per_gather = 0 and jit = off: one process per plan, so plans and
 * times do not depend on how many of the two shared cores a worker would get.
 *
 * indexing_run sets up, walks the phases and drops the schema; indexing_judge decides from its
 * numbers. Errors: -1 and one line in err (errlen bytes). Nothing here prints.
 */
#ifndef LAB_INDEXING_H
#define LAB_INDEXING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lab.h"

#define INDEXING_SCHEMA     "lab_indexing"
#define INDEXING_NODE_LEN   24
#define INDEXING_NAME_LEN   64
#define INDEXING_SWEEP_MAX  8
#define INDEXING_WRITE_SETS 4 /* 0, 1, 3 and 6 secondary indexes */
#define INDEXING_USES_MAX   12

struct indexing_config {
	const char *pg_url;
	uint64_t seed;                    /* the data: codes, buckets, customers, amounts */
	int rows;                         /* the orders table (phases 1, 4, 5) */
	int range_rows;                   /* phase 1: the range query's width, in codes */
	int write_rows;                   /* phase 2: rows inserted into each table */
	int write_rounds;                 /* phase 2: each insert made this many times (TRUNCATE between) */
	int small_rows;                   /* phase 3: the small table */
	int repeats;                      /* EXPLAIN ANALYZE runs per plan: its best time */
	double sweep[INDEXING_SWEEP_MAX]; /* phase 4: fractions of the rows matched, ascending */
	int nsweep;
	/* Called from the lab's thread within a long phase; may be NULL. */
	void (*progress_cb)(const char *what, double done_fraction, void *arg);
	void *progress_arg;
	struct lab_phase_hooks hooks; /* around each phase of indexing_run (zero: none) */
};

/* The defaults: 1,000,000 rows, or 100,000 with quick. */
void indexing_config_default(struct indexing_config *cfg, bool quick);

/* One plan as EXPLAIN (ANALYZE, BUFFERS) reported it. */
struct indexing_plan {
	char node[INDEXING_NODE_LEN];  /* the first scan node, depth first: "Seq Scan", "Index Scan", ... */
	char index[INDEXING_NAME_LEN]; /* the first index the plan reads ("" when none) */
	int64_t buffers;               /* shared hit + shared read of the whole plan (the top node's) */
	int64_t heap_fetches;          /* an Index Only Scan's Heap Fetches; -1 for other nodes */
	int64_t rows;                  /* rows the top node returned */
	int64_t scan_rows;             /* rows the scan node returned (under an Aggregate, say) */
	int64_t wal_bytes;             /* WAL Bytes of the top node (INSERT with WAL); 0 for reads */
	double exec_us;                /* the server's Execution Time, the best of the runs */
};

/* True when the plan reads an index (Index Scan, Index Only Scan or Bitmap Heap Scan). */
bool indexing_plan_uses_index(const struct indexing_plan *p);

/* ---- phase 1: reads ---- */

enum indexing_read_kind { IX_NO_INDEX, IX_BTREE, IX_COVERING, IX_READ_KINDS };

struct indexing_reads {
	struct indexing_plan point[IX_READ_KINDS]; /* code = ? */
	struct indexing_plan range[IX_READ_KINDS]; /* code BETWEEN ? AND ? + range_rows - 1 */
	int64_t range_rows; /* codes in the range: the rows every range plan must find */
	int64_t table_pages;
	int64_t all_visible_pages; /* pg_class.relallvisible: pages the visibility map marks all-visible */
	int64_t btree_bytes, covering_bytes;
};

/* ---- phase 2: writes ---- */

struct indexing_write {
	int indexes;         /* secondary indexes (the primary key is there in every set) */
	int64_t rows;        /* rows in the table after its insert: the server's count(*) */
	int64_t wal_bytes;   /* the INSERT's own WAL (EXPLAIN's WAL Bytes), first round */
	int64_t lsn_bytes;   /* pg_current_wal_lsn() moved across it: the whole cluster's WAL */
	double insert_us;    /* its Execution Time, the best of the rounds */
	int64_t table_bytes; /* pg_relation_size of the table after the insert */
	int64_t index_bytes; /* pg_indexes_size: every index, the primary key's included */
};

/* WAL bytes per row and rows per second of one set. */
double indexing_wal_per_row(const struct indexing_write *w);
double indexing_rows_per_s(const struct indexing_write *w);

/* ---- phase 3: the small table ---- */

enum indexing_force { IX_PLANNER, IX_FORCE_SEQ, IX_FORCE_INDEX, IX_FORCE_BITMAP, IX_FORCES };

/* The plan node a setting forces: "Seq Scan", "Index Scan", "Bitmap Heap Scan" ("" for IX_PLANNER). */
const char *indexing_force_node(enum indexing_force f);

struct indexing_small_query {
	int64_t rows;                         /* rows it matches */
	struct indexing_plan no_index;        /* the planner's choice before the index exists */
	struct indexing_plan plan[IX_FORCES]; /* with the index: the planner's, then each forced */
};

struct indexing_small {
	int64_t rows, pages;
	struct indexing_small_query point; /* code = ?: one row */
	struct indexing_small_query share; /* category = ?: 2% of the rows */
	double round_trip_us;              /* the median SELECT 1 from the client, for scale */
};

/* ---- phase 4: selectivity ---- */

struct indexing_sweep_point {
	double fraction;                      /* of the rows the predicate was meant to match */
	int64_t rows;                         /* rows it matched */
	struct indexing_plan plan[IX_FORCES]; /* the planner's choice, then each forced */
};

struct indexing_sweep {
	int n;
	struct indexing_sweep_point p[INDEXING_SWEEP_MAX];
	int64_t table_pages;
	int index_crossover;  /* first point where the forced Seq Scan beat the Index Scan; -1 none */
	int bitmap_crossover; /* ... beat the Bitmap Heap Scan; -1 none */
};

/* The forced plan the point measured fastest (IX_FORCE_SEQ, _INDEX or _BITMAP). */
enum indexing_force indexing_sweep_fastest(const struct indexing_sweep_point *p);

/*
 * The planner's choice against the fastest plan: the time of the planner's plan forced (its
 * twin among the forced ones, so two runs of one plan never show as a loss) over the fastest
 * forced time. 1 when the planner picked the fastest; 1.5 when the fastest was 1.5x quicker.
 * 0 when the planner's plan is none of the three (or nothing was measured).
 */
double indexing_sweep_planner_vs_best(const struct indexing_sweep_point *p);

/* ---- phase 5: follow-ups ---- */

enum indexing_followup {
	IX_FU_AB,          /* a = ? AND b = ?, index (a, b) */
	IX_FU_A,           /* a = ? */
	IX_FU_B,           /* b = ? */
	IX_FU_LOWER_PLAIN, /* lower(email) = ?, with only the index on email */
	IX_FU_LOWER_EXPR,  /* the same with an index on lower(email) */
	IX_FU_PREFIX,      /* email LIKE 'abc%' */
	IX_FU_SUFFIX,      /* email LIKE '%abc' */
	IX_FU_PARTIAL,     /* status = 'pending' AND customer_id = ?, partial index WHERE pending */
	IX_FOLLOWUPS
};

/* "a = ? AND b = ?", ... for tables. */
const char *indexing_followup_query(enum indexing_followup f);

/* One index of the orders table as pg_stat_user_indexes counted it at the end of phase 5. */
struct indexing_index_use {
	char name[INDEXING_NAME_LEN];
	int64_t scans; /* idx_scan */
	int64_t bytes;
	bool unique; /* unique indexes enforce something: never "unused" */
};

struct indexing_followups {
	struct indexing_plan q[IX_FOLLOWUPS];
	int64_t partial_bytes, full_bytes; /* the partial index, and the same index over every row */
	int64_t partial_rows;              /* rows the partial index covers */
	int64_t ab_pages;                  /* pages of the index on (a, b) */
	struct indexing_index_use uses[INDEXING_USES_MAX];
	int nuses;
	int unused;       /* uses[unused] is the one non-unique index with idx_scan = 0; -1 when not one */
	int unused_count; /* non-unique indexes with idx_scan = 0 */
};

/* The name of the index the lab creates and never queries. */
#define INDEXING_UNUSED_INDEX "orders_created_at_idx"

/* ---- the whole run ---- */

#define INDEXING_PHASES 5

struct indexing_result {
	int64_t rows, pages; /* the orders table, counted by the server */
	struct indexing_reads reads;
	struct indexing_write writes[INDEXING_WRITE_SETS];
	struct indexing_small small;
	struct indexing_sweep sweep;
	struct indexing_followups followups;
	bool server_lost; /* the run failed and PostgreSQL no longer answers (lab_lost, not lab_fail) */
};

/* The secondary indexes of each write set: 0, 1, 3, 6. */
extern const int indexing_write_sets[INDEXING_WRITE_SETS];

/*
 * Creates schema lab_indexing with the orders table, walks the five phases with cfg->hooks
 * around each, and drops the schema, also when a phase failed. 0 when every phase ran; -1 and err
 * otherwise (the first error).
 */
int indexing_run(const struct indexing_config *cfg, struct indexing_result *res, char *err, size_t errlen);

/*
 * The claim (an index cuts the pages a selective lookup reads by a large ratio; each index makes
 * every insert write more WAL and store more; on a small table it saves a few pages at most,
 * none for 2% of it; the planner drops the Index Scan where it loses; the follow-ups' plans), each
 * plan checked for the rows it must find and forced plans for the node they name, against the
 * numbers of a run that returned 0. This function can't fail.
 */
void indexing_judge(const struct indexing_result *res, struct lab_verdict *v);

/* The ratio the judge reads: seq / B-tree buffers of the point lookup (0 when not measured). */
double indexing_point_buffer_ratio(const struct indexing_result *res);

#endif
