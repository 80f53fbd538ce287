/*
 * phases.c — lab-sql-vs-nosql's phases 2 to 6 and 8: each access pattern of patterns.c measured
 * on each store, the schema variability, the throughput sweep. Nothing here prints.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"
#include "rng.h"

/* ---- patterns 1 and 2 ---- */

typedef int (*p1_fn)(struct svn_worker *, int64_t, struct svn_order *, char *, size_t);
typedef int (*p2_fn)(struct svn_worker *, int64_t, struct svn_order *, char *, size_t);
static const p1_fn P1[SVN_STORES] = {p1_sql, p1_jsonb, p1_redis};
static const p2_fn P2[SVN_STORES] = {p2_sql, p2_jsonb, p2_redis};

static int op_p1(struct svn_worker *w, const void *arg, char *err, size_t errlen)
{
	struct svn_order o;
	if (P1[*(const enum svn_store *)arg](w, svn_pick_order(w), &o, err, errlen) < 0)
		return -1;
	w->orders++;
	w->checksum += o.total_cents;
	return 0;
}

static int op_p2(struct svn_worker *w, const void *arg, char *err, size_t errlen)
{
	struct svn_order o[10];
	int n = P2[*(const enum svn_store *)arg](w, svn_pick_customer(w), o, err, errlen);
	if (n < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		w->orders++;
		/* newest first, and the order matters: weigh each total by its place */
		w->checksum += o[i].total_cents * (i + 1);
	}
	return 0;
}

static const enum svn_store STORES[SVN_STORES] = {SVN_SQL, SVN_JSONB, SVN_REDIS};

/* What a server counted so far for pattern p (0 or 1) on store s: calls, microseconds executing. */
static int server_tally(struct svn_ctx *x, int s, int p, int64_t *calls, double *us, char *err, size_t errlen)
{
	if (s != SVN_REDIS) {
		/* the pattern's prepared statement (earlier runs' entries add the same to both tallies) */
		const char *params[] = {SVN_PREPARED[p * 2 + (s == SVN_JSONB)].stats_like};
		PGresult *res =
		        pg_query(x->conn,
		                 "SELECT coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0) FROM "
		                 "pg_stat_statements WHERE query LIKE $1 AND dbid = (SELECT oid FROM "
		                 "pg_database WHERE datname = current_database())",
		                 1, params, err, errlen);
		if (!res)
			return -1;
		*calls = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		*us = strtod(PQgetvalue(res, 0, 1), NULL) * 1000;
		PQclear(res);
		return 0;
	}
	redisReply *r = redis_cmd(x->rc, err, errlen, "INFO commandstats");
	if (!r)
		return -1;
	*calls = 0, *us = 0;
	static const char *const keys[] = {"\ncmdstat_get:", "\ncmdstat_zrevrange:"};
	for (int i = 0; i <= p && r->type == REDIS_REPLY_STRING; i++) {
		const char *at = strstr(r->str, keys[i]);
		long long n = 0, usec = 0;
		if (at && sscanf(at + strlen(keys[i]), "calls=%lld,usec=%lld", &n, &usec) == 2)
			*calls += n, *us += (double)usec;
	}
	int type = r->type;
	freeReplyObject(r);
	if (type != REDIS_REPLY_STRING)
		return snprintf(err, errlen, "INFO commandstats: not a string"), -1;
	return 0;
}

/* Runs l for pattern p on store s, with the server's accounting before and after. */
static int reads_one(struct svn_ctx *x, const struct svn_load *l, int s, int p, struct svn_reads *out,
                     char *err, size_t errlen)
{
	int64_t c0, c1;
	double u0, u1;
	if (server_tally(x, s, p, &c0, &u0, err, errlen) < 0 || svn_load_run(x, l, out, err, errlen) < 0 ||
	    server_tally(x, s, p, &c1, &u1, err, errlen) < 0)
		return -1;
	out->server_calls = c1 - c0;
	out->server_us =
	        out->server_calls > 0 && out->ops > 0
	                ? (u1 - u0) / (double)out->server_calls * (double)out->commands / (double)out->ops
	                : 0;
	return 0;
}

int svn_reads_run(struct svn_ctx *x, struct sql_vs_nosql_result *r, char *err, size_t errlen)
{
	const struct sql_vs_nosql_config *c = x->cfg;
	r->clients = c->clients;
	r->ops = c->ops;
	if (svn_prepare_pool(x, err, errlen) < 0)
		return -1;
	for (int s = 0; s < SVN_STORES; s++) {
		/* the same salt on every store: the same ids in the same order, so the checksums agree */
		struct svn_load l1 = {STORES[s], c->clients, c->ops, 0, op_p1, &STORES[s], 1};
		struct svn_load l2 = {STORES[s], c->clients, c->ops, 0, op_p2, &STORES[s], 2};
		if (reads_one(x, &l1, s, 0, &r->p1[s], err, errlen) < 0 ||
		    reads_one(x, &l2, s, 1, &r->p2[s], err, errlen) < 0)
			return -1;
		svn_progress(c, "patterns 1 and 2", (s + 1.0) / SVN_STORES);
	}
	return 0;
}

/* ---- pattern 3 ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

typedef int (*p3_fn)(struct svn_worker *, int64_t, int64_t *, char *, size_t);
static const p3_fn P3[SVN_STORES] = {p3_sql, p3_jsonb, p3_redis};

/* Runs pattern 3 on store s cfg->repeats times: the counts of one run, the median time. */
static int adhoc_store(struct svn_ctx *x, int s, struct svn_adhoc *out, char *err, size_t errlen)
{
	uint64_t t[16];
	int n = x->cfg->repeats < 1 ? 1 : x->cfg->repeats > 16 ? 16 : x->cfg->repeats;
	for (int k = 0; k < n; k++) {
		struct svn_worker w;
		svn_solo(x, &w);
		int64_t revenue[SVN_CATEGORIES] = {0};
		uint64_t t0 = hist_now_us();
		if (P3[s](&w, SVN_REF_TS - SVN_WEEK_S, revenue, err, errlen) < 0) {
			svn_note_lost(x, &w);
			return -1;
		}
		t[k] = hist_now_us() - t0;
		memcpy(out->revenue, revenue, sizeof(revenue));
		out->statements = (int64_t)(s == SVN_REDIS ? w.cmds : w.rt);
		out->round_trips = (int64_t)w.rt;
		out->keys_read = w.keys_read;
		out->orders_read = (int64_t)w.orders;
		out->bytes_moved = w.bytes_moved;
	}
	qsort(t, (size_t)n, sizeof(t[0]), cmp_u64);
	out->median_us = t[n / 2];
	return 0;
}

int svn_adhoc_run(struct svn_ctx *x, struct sql_vs_nosql_result *r, char *err, size_t errlen)
{
	char b[24];
	snprintf(b, sizeof(b), "%lld", SVN_REF_TS - SVN_WEEK_S);
	const char *params[] = {b};
	if (pg_query_int64(x->conn,
	                   "SELECT count(*) FROM " SCHEMA ".orders WHERE placed_at >= to_timestamp($1)", 1,
	                   params, &r->p3_orders_in_week, err, errlen) < 0)
		return -1;
	for (int s = 0; s < SVN_STORES; s++) {
		if (adhoc_store(x, s, &r->p3[s], err, errlen) < 0)
			return -1;
		svn_progress(x->cfg, "revenue per category", (s + 1.0) / SVN_STORES);
	}
	return 0;
}

/* ---- pattern 4 ---- */

typedef int (*p4_fn)(struct svn_worker *, int, const char *, char *, size_t);
static const p4_fn P4[SVN_STORES] = {p4_sql, p4_jsonb, p4_redis};

int svn_rename_run(struct svn_ctx *x, struct sql_vs_nosql_result *r, char *err, size_t errlen)
{
	/* the product in the most orders: the rename a catalogue team makes without a second thought */
	int64_t product = 0;
	if (pg_query_int64(x->conn,
	                   "SELECT product_id FROM " SCHEMA ".order_items GROUP BY product_id "
	                   "ORDER BY count(DISTINCT order_id) DESC, product_id LIMIT 1",
	                   0, NULL, &product, err, errlen) < 0)
		return -1;
	r->p4_product = (int)product;
	char b[24];
	snprintf(b, sizeof(b), "%d", r->p4_product);
	const char *params[] = {b};
	if (pg_query_int64(x->conn,
	                   "SELECT count(DISTINCT order_id) FROM " SCHEMA
	                   ".order_items WHERE product_id = $1",
	                   1, params, &r->p4_copies, err, errlen) < 0)
		return -1;
	for (int s = 0; s < SVN_STORES; s++) {
		struct svn_worker w;
		svn_solo(x, &w);
		uint64_t t0 = hist_now_us();
		if (P4[s](&w, r->p4_product, "Product renamed", err, errlen) < 0) {
			svn_note_lost(x, &w);
			return -1;
		}
		struct svn_rename *o = &r->p4[s];
		o->us = hist_now_us() - t0;
		o->statements = (int64_t)(s == SVN_REDIS ? w.cmds : w.rt);
		o->round_trips = (int64_t)w.rt;
		o->keys_read = w.keys_read;
		o->writes = w.writes;
	}
	return 0;
}

/* ---- pattern 5: the race ---- */

typedef int (*p5_fn)(struct svn_worker *, int, int, int *, char *, size_t);
static const p5_fn P5[2][SVN_VARIANTS] = {{p5_sql_naive, p5_sql_guarded}, {p5_redis_naive, p5_redis_guarded}};

struct race {
	struct svn_ctx *x;
	p5_fn attempt;
	int rounds, gap_us;
	struct svn_gate go;      /* the clients start together, or leave when one could not start */
	pthread_barrier_t start; /* every round begins when every client is at it */
	struct svn_meet *read;   /* naive variants: every read before any write (svn_race_pause) */
	pthread_mutex_t mu;
	atomic_int failed;
	char err[LAB_ERRLEN];
};

struct racer {
	struct race *race;
	struct svn_worker w;
	pthread_t thread;
};

static void *racer_cb(void *arg)
{
	struct racer *c = arg;
	struct race *rc = c->race;
	char err[LAB_ERRLEN];
	if (svn_gate_wait(&rc->go))
		return NULL;
	for (int round = 1; round <= rc->rounds; round++) {
		pthread_barrier_wait(&rc->start);
		if (rc->failed || lab_interrupted())
			continue; /* the others still meet at the barrier, round after round */
		int sold = 0;
		uint64_t t0 = hist_now_us();
		if (rc->attempt(&c->w, round, rc->gap_us, &sold, err, sizeof(err)) < 0) {
			svn_note_lost(rc->x, &c->w);
			pthread_mutex_lock(&rc->mu);
			if (!rc->failed)
				snprintf(rc->err, sizeof(rc->err), "%s", err);
			rc->failed = 1;
			pthread_mutex_unlock(&rc->mu);
			continue;
		}
		hist_record(&c->w.lat, hist_now_us() - t0);
		c->w.ops++;
	}
	return NULL;
}

/* One item in stock for each round: rows of race_stock, or keys race:<variant>:<round>:stock. */
static int race_stock(struct svn_ctx *x, int store, const char *variant, int rounds, char *err, size_t errlen)
{
	if (store == 0) {
		char sql[256];
		snprintf(sql, sizeof(sql),
		         "INSERT INTO " SCHEMA ".race_stock SELECT '%s', r, 1 FROM generate_series(1, %d) r",
		         variant, rounds);
		return pg_exec(x->conn, sql, err, errlen);
	}
	struct svn_worker w;
	svn_solo(x, &w);
	for (int round = 1; round <= rounds; round++)
		if (svn_redis_append(&w, err, errlen, "SET " PREFIX "race:%s:%d:stock 1", variant, round) < 0)
			return -1;
	return svn_redis_flush(&w, NULL, err, errlen);
}

/* What the server recorded: sales, oversells, rounds oversold, the lowest stock. */
static int race_count(struct svn_ctx *x, int store, const char *variant, struct svn_race *out, char *err,
                      size_t errlen)
{
	if (store == 0) {
		const char *params[] = {variant};
		PGresult *res = pg_query(
		        x->conn,
		        "SELECT coalesce(sum(s.n), 0), coalesce(sum(greatest(s.n - 1, 0)), 0), "
		        "count(*) FILTER (WHERE s.n > 1), min(k.qty) FROM " SCHEMA ".race_stock k "
		        "LEFT JOIN LATERAL (SELECT count(*) AS n FROM " SCHEMA ".race_sales x WHERE "
		        "x.variant = k.variant AND x.round = k.round) s ON true WHERE k.variant = $1",
		        1, params, err, errlen);
		if (!res)
			return -1;
		out->sales = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		out->oversells = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
		out->rounds_oversold = atoi(PQgetvalue(res, 0, 2));
		out->min_stock = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
		PQclear(res);
		return 0;
	}
	struct svn_worker w;
	svn_solo(x, &w);
	for (int round = 1; round <= out->rounds; round++)
		if (svn_redis_append(&w, err, errlen,
		                     "MGET " PREFIX "race:%s:%d:sold " PREFIX "race:%s:%d:stock", variant,
		                     round, variant, round) < 0)
			return -1;
	redisReply **r = calloc((size_t)out->rounds, sizeof(*r));
	if (!r)
		return snprintf(err, errlen, "out of memory"), -1;
	int rc = svn_redis_flush(&w, r, err, errlen);
	bool held = rc == 0; /* the replies are ours to free (a failed flush freed them) */
	out->min_stock = INT64_MAX;
	for (int i = 0; rc == 0 && i < out->rounds; i++)
		if (r[i]->type != REDIS_REPLY_ARRAY || r[i]->elements != 2)
			rc = (snprintf(err, errlen, "MGET answered something other than two values"), -1);
	for (int i = 0; rc == 0 && i < out->rounds; i++) {
		redisReply *sold = r[i]->element[0], *stock = r[i]->element[1];
		int64_t n = sold->type == REDIS_REPLY_STRING ? atoll(sold->str) : 0;
		int64_t q = stock->type == REDIS_REPLY_STRING ? atoll(stock->str) : 0;
		out->sales += n;
		out->oversells += n > 1 ? n - 1 : 0;
		out->rounds_oversold += n > 1;
		out->min_stock = q < out->min_stock ? q : out->min_stock;
	}
	for (int i = 0; held && i < out->rounds; i++)
		freeReplyObject(r[i]);
	free(r);
	return rc;
}

static int race_clients(struct race *rc, struct racer *cs, int n, int store, struct svn_race *out, char *err,
                        size_t errlen)
{
	for (int i = 0; i < n; i++) {
		svn_solo(rc->x, &cs[i].w);
		cs[i].w.id = i;
		cs[i].w.rc = rc->x->rcs[i];
		cs[i].race = rc;
		cs[i].w.meet = rc->read;
		cs[i].w.pg = store == 0 ? pgset_borrow(rc->x->pool, 5000, err, errlen) : NULL;
		if (store == 0 && !cs[i].w.pg) {
			for (int k = 0; k < i; k++)
				pgset_return(rc->x->pool, cs[k].w.pg);
			return -1;
		}
	}
	int started = 0;
	for (; started < n; started++)
		if (pthread_create(&cs[started].thread, NULL, racer_cb, &cs[started]) != 0)
			break;
	if (started < n) {
		rc->failed = 1;
		snprintf(rc->err, sizeof(rc->err), "cannot start a client thread");
	}
	svn_gate_open(&rc->go, started < n);
	for (int i = 0; i < started; i++)
		pthread_join(cs[i].thread, NULL);
	for (int i = 0; i < n; i++) {
		if (cs[i].w.pg)
			pgset_return(rc->x->pool, cs[i].w.pg);
		hist_merge(&out->lat, &cs[i].w.lat);
		out->round_trips += cs[i].w.rt;
		out->attempts += cs[i].w.ops;
		out->conflicts += cs[i].w.conflicts;
	}
	return 0;
}

/* One store, one variant: race_clients clients race for the last item, race_rounds times. */
static int race_one(struct svn_ctx *x, int store, int variant, struct svn_race *out, char *err, size_t errlen)
{
	const struct sql_vs_nosql_config *c = x->cfg;
	const char *name = variant == SVN_NAIVE ? "naive" : "guarded";
	memset(out, 0, sizeof(*out));
	hist_init(&out->lat);
	out->rounds = c->race_rounds;
	out->clients = c->race_clients;
	if (race_stock(x, store, name, c->race_rounds, err, errlen) < 0)
		return -1;
	struct svn_meet read;
	svn_meet_init(&read, c->race_clients);
	/* the guarded variants never meet: a buyer waiting on the row lock could not come */
	struct race rc = {.x = x,
	                  .attempt = P5[store][variant],
	                  .rounds = c->race_rounds,
	                  .gap_us = c->race_gap_us,
	                  .read = variant == SVN_NAIVE ? &read : NULL};
	pthread_barrier_init(&rc.start, NULL, (unsigned)c->race_clients);
	pthread_mutex_init(&rc.mu, NULL);
	svn_gate_init(&rc.go);
	struct racer cs[SVN_MAX_CLIENTS];
	int ret = race_clients(&rc, cs, c->race_clients, store, out, err, errlen);
	pthread_barrier_destroy(&rc.start);
	svn_meet_destroy(&read);
	pthread_mutex_destroy(&rc.mu);
	svn_gate_destroy(&rc.go);
	if (ret == 0 && (rc.failed || lab_interrupted())) {
		snprintf(err, errlen, "%s", rc.failed ? rc.err : "interrupted");
		ret = -1;
	}
	return ret < 0 ? -1 : race_count(x, store, name, out, err, errlen);
}

int svn_race_run(struct svn_ctx *x, struct sql_vs_nosql_result *r, char *err, size_t errlen)
{
	const struct sql_vs_nosql_config *c = x->cfg;
	if (c->race_clients < 2 || c->race_clients > SVN_MAX_CLIENTS || c->race_rounds < 1) {
		snprintf(err, errlen, "the race needs 2..%d clients and 1 round at least", SVN_MAX_CLIENTS);
		return -1;
	}
	r->race_gap_us = c->race_gap_us;
	for (int store = 0; store < 2; store++)
		for (int v = 0; v < SVN_VARIANTS; v++) {
			if (race_one(x, store, v, &r->p5[store][v], err, errlen) < 0)
				return -1;
			svn_progress(c, "the race for the last item", (store * 2 + v + 1) / 4.0);
		}
	return 0;
}

/* ---- phase 8: pattern 1 at several concurrencies ---- */

int svn_sweep_run(struct svn_ctx *x, struct sql_vs_nosql_result *r, char *err, size_t errlen)
{
	const struct sql_vs_nosql_config *c = x->cfg;
	struct svn_sweep *sw = &r->sweep;
	sw->n = c->nsweep;
	for (int i = 0; i < c->nsweep; i++) {
		sw->clients[i] = c->sweep[i];
		for (int s = 0; s < SVN_STORES; s++) {
			struct svn_load l = {STORES[s], c->sweep[i], 0, (uint64_t)c->sweep_ms * 1000,
			                     op_p1,     &STORES[s],  8};
			struct svn_reads m;
			if (svn_load_run(x, &l, &m, err, errlen) < 0)
				return -1;
			sw->ops_s[i][s] = m.wall_s > 0 ? (double)m.ops / m.wall_s : 0;
			svn_progress(c, "throughput", (i * SVN_STORES + s + 1.0) / (c->nsweep * SVN_STORES));
		}
	}
	return 0;
}
