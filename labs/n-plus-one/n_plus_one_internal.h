/*
 * n_plus_one_internal.h — what the files of lab-n-plus-one's experiment share and nobody else
 * uses: the schema's name, the statements the loads send, a growing text buffer, and the
 * measuring loop the phases call with a time budget.
 *
 *   n_plus_one.c         the config, the phase list and its questions, n_plus_one_run and the judge
 *   n_plus_one_data.c    the data: schema, generated rows, COPY, the server's counts of them
 *   n_plus_one_load.c    one load per strategy, its objects and digest, its bytes, measuring
 *   n_plus_one_watch.c   the detector: pg_stat_statements diffed around a unit of work
 *   n_plus_one_phases.c  the phases: direct, through the latency proxy, width, detector
 */
#ifndef LAB_N_PLUS_ONE_INTERNAL_H
#define LAB_N_PLUS_ONE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "n_plus_one.h"

#define SCHEMA N_PLUS_ONE_SCHEMA
/* pg_stat_statements entries whose text names our schema ('_' escaped: LIKE's wildcard) */
#define SCHEMA_LIKE "%lab\\_n\\_plus\\_one.%"

/* A growing text buffer (COPY data, id lists). failed: out of memory or a bad format, sticky. */
struct npo_buf {
	char *p;
	size_t len, cap;
	bool failed;
};

void npo_buf_printf(struct npo_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * pg_connect_with (keys and vals may be NULL), with the connection's notices going to libpq's
 * receiver except a FATAL one (a backend ended under an idle connection: see notice_cb).
 */
PGconn *npo_connect(const char *pg_url, const char *const *keys, const char *const *vals, char *err,
                    size_t errlen);

/* qsort's comparison of two uint64_t. */
int npo_cmp_u64(const void *a, const void *b);

/*
 * A series of loads of one strategy, made one at a time so that series on several connections
 * can take turns (each load of one beside a load of the others, under the same conditions). out
 * gets what the loads agree on, and after npo_series_end the best, median and worst wall time.
 */
struct npo_series {
	struct n_plus_one_load *out;
	uint64_t walls[N_PLUS_ONE_MAX_REPEATS];
	int made;
	int counted; /* the first loads the server counts (2; may be lowered after npo_series_start) */
};

int npo_series_start(struct npo_series *sr, struct n_plus_one_load *out, enum n_plus_one_strategy s,
                     int users, char *err, size_t errlen);
/* One more load (counted by watch when it is one of the first counted and watch is not NULL); fails
 * as n_plus_one_measure does, or after N_PLUS_ONE_MAX_REPEATS loads. */
int npo_series_add(struct npo_series *sr, PGconn *conn, struct n_plus_one_watch *watch, int threshold,
                   char *err, size_t errlen);
void npo_series_end(struct npo_series *sr);

/*
 * n_plus_one_measure, stopping early (after 2 loads at least) once the series took budget_us in
 * all, snapshots included; 0: no budget. out->repeats is the number of loads made.
 */
int npo_measure_budget(PGconn *conn, struct n_plus_one_watch *watch, enum n_plus_one_strategy s, int users,
                       int repeats, uint64_t budget_us, int threshold, struct n_plus_one_load *out, char *err,
                       size_t errlen);

#endif
