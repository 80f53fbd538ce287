/*
 * jitter.c — phase 3: many keys warmed at the same moment expire together (a stampede across
 * keys), unless their TTLs are jittered. A few readers ("sweepers") MGET their share of the keys
 * every sweep_ms and recompute what is missing; the server logs when each recompute was asked
 * for and when it ran. Nothing here prints.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"
#include "rng.h"

/* the wave ends by key_ttl + jitter; this much more only guards against a stuck run */
#define STUCK_MS 3000

struct jitter_run {
	const struct stampede_config *cfg;
	bool jittered;
	int run_id;
	struct pgset *set;
	uint64_t deadline_us;
	atomic_int keys_done;
	atomic_bool stop;
	atomic_uchar *done; /* one flag per key: recomputed once */
	struct fault fault;
};

struct sweeper {
	struct jitter_run *run;
	int id;
	pthread_t thread;
	redisContext *rc;
	uint64_t rng;
	struct hist wait; /* from the MGET that saw a key missing to its new value stored */
	/* its share of the keys: MGET's argv */
	int nkeys;
	const char **argv;
	char (*names)[48];
	int *ids;
};

static int key_ttl(const struct stampede_config *cfg, bool jittered, uint64_t *rng)
{
	if (!jittered || cfg->jitter_ms <= 0)
		return cfg->key_ttl_ms;
	return cfg->key_ttl_ms + (int)(rng_unit(rng) * cfg->jitter_ms);
}

/* The sweeper's share of the keys: every sweepers-th from its id. -1 when out of memory. */
static int sweeper_keys(struct sweeper *w, const struct stampede_config *cfg)
{
	for (int k = w->id; k < cfg->keys; k += cfg->sweepers)
		w->nkeys++;
	w->argv = calloc((size_t)w->nkeys + 1, sizeof(*w->argv));
	w->names = calloc((size_t)w->nkeys, sizeof(*w->names));
	w->ids = calloc((size_t)w->nkeys, sizeof(*w->ids));
	if (!w->argv || !w->names || !w->ids)
		return -1;
	w->argv[0] = "MGET";
	for (int i = 0, k = w->id; k < cfg->keys; k += cfg->sweepers, i++) {
		w->ids[i] = k;
		snprintf(w->names[i], sizeof(w->names[i]), PREFIX "key:%d", k);
		w->argv[i + 1] = w->names[i];
	}
	return 0;
}

/* Recomputes key i of the sweeper's share and stores it; requested: when it was seen missing. */
static int sweeper_recompute(struct sweeper *w, int i, const char *requested, uint64_t seen)
{
	struct jitter_run *run = w->run;
	char runs[16], key[16], err[512];
	snprintf(runs, sizeof(runs), "%d", run->run_id);
	snprintf(key, sizeof(key), "%d", w->ids[i]);
	const char *params[] = {runs, key, requested};
	PGconn *conn = pgset_borrow(run->set, BORROW_TIMEOUT_MS, err, sizeof(err));
	if (!conn) {
		fault_set(&run->fault, NULL, "recompute: %s", err);
		return -1;
	}
	PGresult *res = pg_query(conn, KEY_SQL, 3, params, err, sizeof(err));
	const char *gone = stp_pg_gone(conn);
	pgset_return(run->set, conn);
	if (!res || PQntuples(res) != 1) {
		fault_set(&run->fault, gone, "recompute: %s", res ? "no row returned" : err);
		PQclear(res);
		return -1;
	}
	if (fault_interrupted(&run->fault))
		return -1;
	/* one wave is watched: a recomputed key is kept for ten of its TTLs, so no key expires twice
	 * within the run and both runs do the same work */
	redisReply *set = redis_cmd(w->rc, err, sizeof(err), "SET %s %s PX %d", w->names[i],
	                            PQgetvalue(res, 0, 1), 10 * key_ttl(run->cfg, run->jittered, &w->rng));
	PQclear(res);
	if (!set) {
		fault_set(&run->fault, stp_redis_gone(w->rc), "%s", err);
		return -1;
	}
	freeReplyObject(set);
	hist_record(&w->wait, hist_now_us() - seen);
	if (atomic_exchange(&run->done[w->ids[i]], 1) == 0 &&
	    atomic_fetch_add(&run->keys_done, 1) + 1 == run->cfg->keys)
		atomic_store(&run->stop, true);
	return 0;
}

/* One MGET of the sweeper's keys, and a recompute of each one missing. -1: the run failed. */
static int sweep_once(struct sweeper *w)
{
	struct jitter_run *run = w->run;
	char err[256];
	redisReply *reply = redisCommandArgv(w->rc, w->nkeys + 1, w->argv, NULL);
	int e = errno;
	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != (size_t)w->nkeys) {
		if (!reply)
			redis_error_text(w->rc, e, err, sizeof(err));
		fault_set(&run->fault, reply ? NULL : "Redis", "MGET: %s",
		          !reply                             ? err
		          : reply->type == REDIS_REPLY_ERROR ? reply->str
		                                             : "not an array");
		if (reply)
			freeReplyObject(reply);
		return -1;
	}
	uint64_t seen = hist_now_us();
	char requested[32];
	snprintf(requested, sizeof(requested), "%.6f", stp_wall_us() / 1e6);
	int ret = 0;
	for (int i = 0; i < w->nkeys && ret == 0; i++)
		if (reply->element[i]->type == REDIS_REPLY_NIL)
			ret = sweeper_recompute(w, i, requested, seen);
	freeReplyObject(reply);
	return ret;
}

static void *sweeper_main_cb(void *arg)
{
	struct sweeper *w = arg;
	struct jitter_run *run = w->run;
	while (!atomic_load(&run->stop) && !fault_failed(&run->fault) && hist_now_us() < run->deadline_us) {
		uint64_t t0 = hist_now_us();
		if (sweep_once(w) < 0)
			break;
		hist_sleep_us((int64_t)(t0 + (uint64_t)run->cfg->sweep_ms * 1000) - (int64_t)hist_now_us());
	}
	return NULL;
}

/* Every key's value in one statement, then every SET in one pipeline: warmed at once. */
static int jitter_warm(struct stampede *s, const struct stampede_config *cfg, bool jittered, char *err,
                       size_t errlen)
{
	char nkeys[16];
	snprintf(nkeys, sizeof(nkeys), "%d", cfg->keys);
	const char *params[] = {nkeys};
	PGresult *warm =
	        pg_query(s->conn,
	                 "SELECT bucket, count(*) || ':' || sum(amount_cents) FROM " SCHEMA ".orders "
	                 "WHERE bucket < $1::int GROUP BY bucket ORDER BY bucket",
	                 1, params, err, errlen);
	if (!warm) {
		stampede_lost(s, stp_pg_gone(s->conn));
		return -1;
	}
	uint64_t rng = rng_stream(cfg->seed, jittered ? 7 : 5);
	int ret = 0;
	if (lab_interrupted()) { /* see fault_interrupted */
		PQclear(warm);
		snprintf(err, errlen, "interrupted");
		return -1;
	}
	for (int k = 0; k < cfg->keys && ret == 0; k++) {
		const char *value = k < PQntuples(warm) ? PQgetvalue(warm, k, 1) : "0:0";
		if (redisAppendCommand(s->rc, "SET " PREFIX "key:%d %s PX %d", k, value,
		                       key_ttl(cfg, jittered, &rng)) != REDIS_OK)
			ret = -1;
	}
	PQclear(warm);
	int saved_errno = 0;
	bool error_reply = false;
	for (int k = 0; k < cfg->keys && ret == 0; k++) {
		void *r = NULL;
		if (redisGetReply(s->rc, &r) != REDIS_OK || !r) {
			saved_errno = errno;
			ret = -1;
			break;
		}
		redisReply *reply = r;
		if (reply->type == REDIS_REPLY_ERROR) {
			snprintf(err, errlen, "SET: %s", reply->str);
			error_reply = true;
			ret = -1;
		}
		freeReplyObject(reply);
	}
	if (ret < 0) {
		if (!error_reply) {
			redis_error_text(s->rc, saved_errno, err, errlen);
			stampede_lost(s, stp_redis_gone(s->rc));
		}
		/* replies may still be unread on the pipeline: the teardown must not read them as its
		 * own, so it gets a connection of its own (store_drop reconnects) */
		redisFree(s->rc);
		s->rc = NULL;
	}
	return ret;
}

/* The server's log of the run into res, and the window where the wave can fall. */
static int jitter_read_log(struct stampede *s, const struct stampede_config *cfg, int run_id,
                           const char *origin, struct stampede_jitter_result *res, char *err, size_t errlen)
{
	if (log_keys(s, run_id, &res->recomputes, &res->keys_recomputed, err, errlen) < 0 ||
	    log_series(s, run_id, origin, cfg->bucket_ms, "requested_at", res->series, &res->nseries, err,
	               errlen) < 0 ||
	    log_series(s, run_id, origin, cfg->bucket_ms, "started_at", res->started, &res->nstarted, err,
	               errlen) < 0 ||
	    log_peak(s, run_id, &res->peak_concurrent, err, errlen) < 0)
		return -1;
	/* the window where the wave can fall, the same for both runs: [ttl, ttl + jitter] */
	res->window_first = cfg->key_ttl_ms / cfg->bucket_ms;
	res->window_last = (cfg->key_ttl_ms + cfg->jitter_ms) / cfg->bucket_ms;
	if (res->window_last >= STAMPEDE_MAX_BUCKETS)
		res->window_last = STAMPEDE_MAX_BUCKETS - 1;
	if (res->nseries < res->window_last + 1)
		res->nseries = res->window_last + 1;
	if (res->nstarted < res->nseries)
		res->nstarted = res->nseries;
	for (int b = 0; b < res->nseries; b++)
		if (res->series[b] > res->peak)
			res->peak = res->series[b];
	res->mean = (double)res->recomputes / (res->window_last - res->window_first + 1);
	res->peak_to_mean = res->mean > 0 ? res->peak / res->mean : 0;
	return 0;
}

/* Each sweeper's keys and Redis connection. */
static int sweepers_open(struct jitter_run *run, struct sweeper *w, char *err, size_t errlen)
{
	const struct stampede_config *cfg = run->cfg;
	for (int i = 0; i < cfg->sweepers; i++) {
		w[i].run = run;
		w[i].id = i;
		w[i].rng = rng_stream(cfg->seed, 1000 + i + (run->jittered ? 100 : 0));
		hist_init(&w[i].wait);
		if (sweeper_keys(&w[i], cfg) < 0) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		if (!(w[i].rc = redis_connect_url(cfg->redis_url, REDIS_TIMEOUT_MS, err, errlen))) {
			fault_set(&run->fault, "Redis", "%s", err);
			return -1;
		}
	}
	return 0;
}

static void sweepers_close(struct jitter_run *run, struct sweeper *w)
{
	for (int i = 0; i < run->cfg->sweepers; i++) {
		if (w[i].rc)
			redisFree(w[i].rc);
		free(w[i].argv);
		free(w[i].names);
		free(w[i].ids);
	}
	free(w);
}

/* Starts the sweepers, reports progress until every key was recomputed once, joins them. */
static void sweepers_run(struct jitter_run *run, struct sweeper *w, uint64_t t0)
{
	const struct stampede_config *cfg = run->cfg;
	int started = 0;
	for (; started < cfg->sweepers; started++)
		if (pthread_create(&w[started].thread, NULL, sweeper_main_cb, &w[started]) != 0) {
			fault_set(&run->fault, NULL, "cannot start a sweeper thread");
			break;
		}
	double span = cfg->key_ttl_ms + (run->jittered ? cfg->jitter_ms : 0) + 100.0;
	while (!atomic_load(&run->stop) && !fault_failed(&run->fault) && !fault_interrupted(&run->fault) &&
	       hist_now_us() < run->deadline_us) {
		stp_progress(cfg, run->jittered ? "jittered TTL" : "same TTL",
		             (hist_now_us() - t0) / (span * 1000.0));
		hist_sleep_us(100000);
	}
	atomic_store(&run->stop, true);
	for (int i = 0; i < started; i++)
		pthread_join(w[i].thread, NULL);
}

int jitter_run(struct stampede *s, const struct stampede_config *cfg, bool jittered,
               struct stampede_jitter_result *res, char *err, size_t errlen)
{
	memset(res, 0, sizeof(*res));
	res->jittered = jittered;
	res->keys = cfg->keys;
	res->bucket_ms = cfg->bucket_ms;
	hist_init(&res->wait);
	struct jitter_run run = {.cfg = cfg, .jittered = jittered, .set = s->app};
	fault_init(&run.fault);
	char origin[64];
	int ret = -1;
	run.done = calloc((size_t)cfg->keys, sizeof(*run.done));
	struct sweeper *w = calloc((size_t)cfg->sweepers, sizeof(*w));
	if (!run.done || !w) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (redis_del_prefix(s->rc, PREFIX, NULL, err, errlen) < 0) {
		stampede_lost(s, stp_redis_gone(s->rc));
		goto out;
	}
	if (sweepers_open(&run, w, err, errlen) < 0 ||
	    log_begin(s, &run.run_id, origin, sizeof(origin), err, errlen) < 0)
		goto out;
	uint64_t t0 = hist_now_us();
	if (jitter_warm(s, cfg, jittered, err, errlen) < 0)
		goto out;
	run.deadline_us = t0 + (uint64_t)(cfg->key_ttl_ms + cfg->jitter_ms + STUCK_MS) * 1000;
	sweepers_run(&run, w, t0);
	res->run_s = (hist_now_us() - t0) / 1e6;
	for (int i = 0; i < cfg->sweepers; i++)
		hist_merge(&res->wait, &w[i].wait);
	if (fault_failed(&run.fault))
		goto out;
	ret = jitter_read_log(s, cfg, run.run_id, origin, res, err, errlen);
out:
	if (fault_failed(&run.fault))
		ret = fault_report(&run.fault, s, err, errlen);
	if (w)
		sweepers_close(&run, w);
	free(run.done);
	fault_destroy(&run.fault);
	char derr[256];
	/* no connection after a broken pipeline: store_drop deletes the keys on a new one */
	if (s->rc && redis_del_prefix(s->rc, PREFIX, NULL, derr, sizeof(derr)) < 0 && ret == 0) {
		stampede_lost(s, stp_redis_gone(s->rc));
		snprintf(err, errlen, "%s", derr);
		ret = -1;
	}
	return ret;
}
