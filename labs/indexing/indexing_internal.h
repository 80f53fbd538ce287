/*
 * indexing_internal.h — what the files of lab-indexing's experiment share and nobody else uses.
 *
 *   indexing.c         the config, the phase list, indexing_run and indexing_judge
 *   indexing_plan.c    a session, EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) read with jansson, forcing
 *                      a plan, sizes
 *   indexing_phases.c  the orders table, phases 1 to 3: reads, writes, the small table
 *   indexing_more.c    phases 4 and 5: the selectivity sweep, the follow-ups
 */
#ifndef LAB_INDEXING_INTERNAL_H
#define LAB_INDEXING_INTERNAL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "indexing.h"

#define SCHEMA INDEXING_SCHEMA
#define ORDERS SCHEMA ".orders"

/*
 * A connection for the lab's statements: pg_connect, then max_parallel_workers_per_gather = 0
 * and jit = off for the session (see indexing.h). NULL and err on failure.
 */
PGconn *ix_connect(const struct indexing_config *cfg, char *err, size_t errlen);

/*
 * Runs EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) sql repeats times (>= 1) and fills p
 * from the last run, with the best Execution Time of all. wal adds WAL to the options (an
 * INSERT's WAL Bytes). -1 and err when a run fails or the plan is not the JSON EXPLAIN gives.
 */
int ix_explain(PGconn *conn, const char *sql, int repeats, bool wal, struct indexing_plan *p, char *err,
               size_t errlen);

/* Sets enable_seqscan, enable_indexscan and enable_bitmapscan for the session as f needs. */
int ix_force(PGconn *conn, enum indexing_force f, char *err, size_t errlen);

/*
 * ix_explain under each of the IX_FORCES settings (plans[f]), the settings taking turns run by run,
 * repeats rounds; each plan's facts from its first run, its best time of all. Then back to the
 * planner's own settings; on failure they stay forced, which is safe only because every phase
 * closes its own connection on the way out.
 */
int ix_explain_forced(PGconn *conn, const char *sql, int repeats, struct indexing_plan plans[IX_FORCES],
                      char *err, size_t errlen);

/*
 * snprintf of a statement (or a part of one) into buf: 0, or -1 and err when it does not fit, so
 * that no statement is ever sent cut short. Every value formatted in is a number or a constant of
 * the lab's, never user input.
 */
int ix_sqlf(char *buf, size_t len, char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

/* One integer from a statement that returns one (pg_query_int64 without parameters). */
int ix_int(PGconn *conn, const char *sql, int64_t *out, char *err, size_t errlen);

/* pg_relation_size(rel) / the block size: pages of a table or an index. */
int ix_pages(PGconn *conn, const char *rel, int64_t *pages, char *err, size_t errlen);

/* pg_relation_size(rel) in bytes. */
int ix_bytes(PGconn *conn, const char *rel, int64_t *bytes, char *err, size_t errlen);

/* Calls cfg's progress callback when there is one. */
void ix_progress(const struct indexing_config *cfg, const char *what, double done);

/* The phases. */
int ix_setup(const struct indexing_config *cfg, struct indexing_result *res, char *err, size_t errlen);
int ix_reads_run(const struct indexing_config *cfg, struct indexing_reads *res, char *err, size_t errlen);
int ix_writes_run(const struct indexing_config *cfg, struct indexing_write *res, char *err, size_t errlen);
int ix_small_run(const struct indexing_config *cfg, struct indexing_small *res, char *err, size_t errlen);
int ix_sweep_run(const struct indexing_config *cfg, struct indexing_sweep *res, char *err, size_t errlen);
int ix_followups_run(const struct indexing_config *cfg, struct indexing_followups *res, char *err,
                     size_t errlen);

/* The questions --predict asks before each phase, beside it (indexing_phases.c, indexing_more.c). */
extern const struct lab_question ix_q_reads, ix_q_writes, ix_q_small, ix_q_sweep, ix_q_followups;

#endif
