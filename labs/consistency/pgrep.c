/*
 * pgrep.c — phases 1-3 of lab-consistency: a write on the PostgreSQL primary and a read right
 * after it, on the replica (or the primary), counted stale or not; a heavy write load beside it.
 *
 * A pair: INSERT ... RETURNING pg_current_wal_insert_lsn() on the primary (autocommit, at the
 * session's synchronous_commit); then, on the replica, one statement that says whether the row
 * is there and how many WAL bytes the replica has still to replay before that LSN. A stale read
 * is then followed: the replica is asked again until it shows the row, and the time from the
 * commit's return to that moment is its staleness in time.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"

#define MAX_WRITERS 8

const char *cons_level_name(enum cons_level l)
{
	static const char *const names[CONS_LEVELS] = {"off", "local", "remote_write", "on", "remote_apply"};
	return (unsigned)l < CONS_LEVELS ? names[l] : "?";
}

const char *cons_fix_name(enum cons_fix f)
{
	static const char *const names[CONS_FIXES_N] = {"read the primary after a write",
	                                                "wait for replay_lsn >= commit",
	                                                "synchronous_commit = remote_apply"};
	return (unsigned)f < CONS_FIXES_N ? names[f] : "?";
}

const char *cons_fix_id(enum cons_fix f)
{
	static const char *const ids[CONS_FIXES_N] = {"sticky", "lsn_wait", "remote_apply"};
	return (unsigned)f < CONS_FIXES_N ? ids[f] : "?";
}

/* ---- the heavy load: writer threads on the primary, synchronous_commit off ---- */

struct load {
	const char *url;
	int batch;
	atomic_bool stop;
	atomic_llong rows;
	atomic_int failed;
	char err[LAB_ERRLEN];
	pthread_t t[MAX_WRITERS];
	int n;
};

static void *writer_main(void *arg)
{
	struct load *l = arg;
	char err[LAB_ERRLEN], sql[256];
	PGconn *c = pg_connect(l->url, err, sizeof(err));
	if (!c || pg_exec(c, "SET synchronous_commit = off", err, sizeof(err)) < 0)
		goto fail;
	snprintf(sql, sizeof(sql),
	         "INSERT INTO " CONS_SCHEMA
	         ".load (pad) SELECT repeat(md5(g::text), 8) FROM generate_series(1, %d) g",
	         l->batch);
	while (!atomic_load(&l->stop)) {
		if (pg_exec(c, sql, err, sizeof(err)) < 0)
			goto fail;
		atomic_fetch_add(&l->rows, l->batch);
	}
	PQfinish(c);
	return NULL;
fail:
	if (atomic_fetch_add(&l->failed, 1) == 0)
		snprintf(l->err, sizeof(l->err), "heavy load: %.400s", err);
	PQfinish(c);
	return NULL;
}

static int load_start(struct load *l, const struct cons_ctx *x, int writers, char *err, size_t errlen)
{
	memset(l, 0, sizeof(*l));
	l->url = x->cfg->primary_url;
	l->batch = x->cfg->batch;
	for (l->n = 0; l->n < writers && l->n < MAX_WRITERS; l->n++)
		if (pthread_create(&l->t[l->n], NULL, writer_main, l) != 0) {
			snprintf(err, errlen, "cannot start a writer thread");
			return -1;
		}
	hist_sleep_us(50000); /* the load is running before the first pair */
	return 0;
}

static int load_stop(struct load *l, int64_t *rows, char *err, size_t errlen)
{
	atomic_store(&l->stop, true);
	for (int i = 0; i < l->n; i++)
		pthread_join(l->t[i], NULL);
	*rows = atomic_load(&l->rows);
	if (atomic_load(&l->failed)) {
		snprintf(err, errlen, "%s", l->err);
		return -1;
	}
	return 0;
}

/* ---- one pair ---- */

enum read_mode { READ_REPLICA, READ_PRIMARY, READ_AFTER_LSN };

static int set_level(PGconn *c, enum cons_level l, char *err, size_t errlen)
{
	char sql[64];
	snprintf(sql, sizeof(sql), "SET synchronous_commit = %s", cons_level_name(l));
	return pg_exec(c, sql, err, errlen);
}

/* Asks the replica until replay_lsn >= lsn. */
static int wait_lsn(PGconn *replica, const char *lsn, char *err, size_t errlen)
{
	const char *p[] = {lsn};
	uint64_t until = hist_now_us() + CONS_VISIBLE_MAX_US;
	for (;;) {
		int64_t ok;
		if (pg_query_int64(replica, "SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::int", 1, p, &ok,
		                   err, errlen) < 0)
			return -1;
		if (ok)
			return 0;
		if (hist_now_us() > until) {
			snprintf(err, errlen, "the replica did not replay up to %s within 2 s", lsn);
			return -1;
		}
		hist_sleep_us(CONS_POLL_US);
	}
}

/* The read: is row id there? On the replica also: WAL bytes still to replay before lsn. */
static int read_row(PGconn *c, bool on_replica, const char *id, const char *lsn, bool *seen, int64_t *behind,
                    char *err, size_t errlen)
{
	const char *p[] = {id, lsn};
	const char *sql =
	        on_replica ? "SELECT EXISTS (SELECT FROM " CONS_SCHEMA ".item WHERE id = $1::bigint), "
	                     "greatest(0, pg_wal_lsn_diff($2::pg_lsn, pg_last_wal_replay_lsn()))::bigint"
	                   : "SELECT EXISTS (SELECT FROM " CONS_SCHEMA ".item WHERE id = $1::bigint), 0";
	PGresult *r = pg_query(c, sql, on_replica ? 2 : 1, p, err, errlen);
	if (!r)
		return -1;
	if (PQntuples(r) != 1) {
		snprintf(err, errlen, "the read returned %d rows, not 1", PQntuples(r));
		PQclear(r);
		return -1;
	}
	*seen = PQgetvalue(r, 0, 0)[0] == 't';
	*behind = atoll(PQgetvalue(r, 0, 1));
	PQclear(r);
	return 0;
}

static int pair(const struct cons_ctx *x, struct cons_rw *row, int64_t id, enum read_mode mode, char *err,
                size_t errlen)
{
	char ids[32], lsn[32];
	snprintf(ids, sizeof(ids), "%lld", (long long)id);
	const char *p[] = {ids};
	uint64_t t0 = hist_now_us();
	PGresult *r = pg_query(x->primary,
	                       "INSERT INTO " CONS_SCHEMA ".item (id) VALUES ($1::bigint) "
	                       "RETURNING pg_current_wal_insert_lsn()::text",
	                       1, p, err, errlen);
	if (!r)
		return -1;
	if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0)) {
		snprintf(err, errlen, "INSERT ... RETURNING gave %d rows, not one LSN", PQntuples(r));
		PQclear(r);
		return -1;
	}
	snprintf(lsn, sizeof(lsn), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	uint64_t committed = hist_now_us();
	hist_record(&row->commit_us, committed - t0);
	/* the insert's LSN is before its commit record: the fix waits for the WAL written once the
	 * commit returned, which is past it (what an application reads after its COMMIT) */
	if (mode == READ_AFTER_LSN) {
		PGresult *w = pg_query(x->primary, "SELECT pg_current_wal_lsn()::text", 0, NULL, err, errlen);
		if (!w)
			return -1;
		if (PQntuples(w) != 1 || PQgetisnull(w, 0, 0)) {
			snprintf(err, errlen, "pg_current_wal_lsn() gave %d rows", PQntuples(w));
			PQclear(w);
			return -1;
		}
		snprintf(lsn, sizeof(lsn), "%s", PQgetvalue(w, 0, 0));
		PQclear(w);
		if (wait_lsn(x->replica, lsn, err, errlen) < 0)
			return -1;
	}
	bool seen;
	int64_t behind;
	PGconn *rc = mode == READ_PRIMARY ? x->primary : x->replica;
	if (read_row(rc, mode != READ_PRIMARY, ids, lsn, &seen, &behind, err, errlen) < 0)
		return -1;
	hist_record(&row->pair_us, hist_now_us() - t0);
	row->pairs++;
	if (seen)
		return 0;
	row->stale++;
	hist_record(&row->behind_b, (uint64_t)behind);
	if (row->visible_us.count >= CONS_FOLLOW_MAX)
		return 0;
	while (!seen && hist_now_us() - committed < CONS_VISIBLE_MAX_US) {
		hist_sleep_us(CONS_POLL_US);
		if (read_row(rc, true, ids, lsn, &seen, &behind, err, errlen) < 0)
			return -1;
	}
	hist_record(&row->visible_us, hist_now_us() - committed);
	return 0;
}

/* cfg->pairs pairs at level with mode, beside `writers` heavy writers (0: light). */
static int pairs_row(const struct cons_ctx *x, struct cons_rw *row, enum cons_level level,
                     enum read_mode mode, int writers, const char *what, char *err, size_t errlen)
{
	static int64_t next_id = 1;
	memset(row, 0, sizeof(*row));
	hist_init(&row->commit_us);
	hist_init(&row->pair_us);
	hist_init(&row->behind_b);
	hist_init(&row->visible_us);
	if (set_level(x->primary, level, err, errlen) < 0)
		return -1;
	struct load l;
	if (writers > 0 && load_start(&l, x, writers, err, errlen) < 0) {
		int64_t ignored;
		load_stop(&l, &ignored, err, errlen);
		return -1;
	}
	int ret = 0;
	for (int i = 0; i < x->cfg->pairs && ret == 0 && !lab_interrupted(); i++) {
		ret = pair(x, row, next_id++, mode, err, errlen);
		if (i % 16 == 0)
			cons_progress(x, what, (double)i / x->cfg->pairs);
	}
	char lerr[LAB_ERRLEN];
	if (writers > 0 && load_stop(&l, &row->load_rows, lerr, sizeof(lerr)) < 0 && ret == 0) {
		snprintf(err, errlen, "%s", lerr);
		ret = -1;
	}
	return ret;
}

int cons_phase_ryw(const void *c, void *r, char *err, size_t errlen)
{
	const struct cons_ctx *x = c;
	struct consistency_result *res = r;
	if (pairs_row(x, &res->ryw[0], CONS_LOCAL, READ_REPLICA, 0, "light load", err, errlen) < 0)
		return -1;
	return pairs_row(x, &res->ryw[1], CONS_LOCAL, READ_REPLICA, x->cfg->writers, "heavy load", err,
	                 errlen);
}

int cons_phase_fixes(const void *c, void *r, char *err, size_t errlen)
{
	const struct cons_ctx *x = c;
	struct consistency_result *res = r;
	int w = x->cfg->writers;
	if (pairs_row(x, &res->fixes[CONS_STICKY], CONS_LOCAL, READ_PRIMARY, w, "sticky", err, errlen) < 0 ||
	    pairs_row(x, &res->fixes[CONS_LSN_WAIT], CONS_LOCAL, READ_AFTER_LSN, w, "LSN wait", err, errlen) <
	            0)
		return -1;
	return pairs_row(x, &res->fixes[CONS_APPLY], CONS_REMOTE_APPLY, READ_REPLICA, w, "remote_apply", err,
	                 errlen);
}

int cons_phase_knob(const void *c, void *r, char *err, size_t errlen)
{
	const struct cons_ctx *x = c;
	struct consistency_result *res = r;
	for (int l = 0; l < CONS_LEVELS; l++)
		if (pairs_row(x, &res->knob[l], (enum cons_level)l, READ_REPLICA, x->cfg->writers,
		              cons_level_name((enum cons_level)l), err, errlen) < 0)
			return -1;
	return 0;
}
