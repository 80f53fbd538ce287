/*
 * traffic.c — lab-invalidation's readers (cache-aside, or versioned keys) and the timed load:
 * readers in threads, the writer in the lab's thread (the experiment is in invalidation.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"
#include "rng.h"

#define VERSION_SQL                                                                                          \
	"SELECT p.version, n.gen FROM " SCHEMA ".products p CROSS JOIN " SCHEMA ".namespace n "              \
	"WHERE p.id = $1::int"
#define ROW_SQL "SELECT version, price FROM " SCHEMA ".products WHERE id = $1::int"

/* The row of id from the database: its version and the value to cache. */
static int row_read(struct reader_ctx *c, PGconn *pg, int id, int64_t *version, char *value, size_t len)
{
	char idb[16], err[LAB_ERRLEN];
	snprintf(idb, sizeof(idb), "%d", id);
	const char *params[] = {idb};
	PGresult *res = pg_query(pg, ROW_SQL, 1, params, err, sizeof(err));
	c->st.round_trips++;
	if (!res || PQntuples(res) != 1) {
		inv_fail(c->s, pg_gone(pg), "reading product %d: %s", id, res ? "no row" : err);
		PQclear(res);
		return -1;
	}
	*version = atoll(PQgetvalue(res, 0, 0));
	snprintf(value, len, "%s:%s:0", PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
	PQclear(res);
	return 0;
}

/* GET key; on a hit the value's version into *version and 1; 0 on a miss; -1 on failure. */
static int cache_get(struct reader_ctx *c, const char *key, int64_t *version)
{
	char err[LAB_ERRLEN];
	redisReply *r = redis_cmd(c->rc, err, sizeof(err), "GET %s", key);
	c->st.round_trips++;
	if (!r) {
		inv_fail(c->s, redis_gone(c->rc), "GET: %s", err);
		return -1;
	}
	int64_t fill;
	int hit = r->type == REDIS_REPLY_STRING && value_parse(r->str, version, &fill);
	freeReplyObject(r);
	return hit;
}

/* A miss: the row read (on a pooled connection) and cached with the TTL. *fill_us: from the
 * row's SELECT to the SET acknowledged. key NULL: the versioned key of the row's version. */
static int fill(struct reader_ctx *c, PGconn *pg, const char *key, int64_t gen, int id, int64_t *version)
{
	char value[96], vkey[128], err[LAB_ERRLEN];
	int64_t t = now_us();
	if (row_read(c, pg, id, version, value, sizeof(value)) < 0)
		return -1;
	if (!key) {
		key_versioned(vkey, sizeof(vkey), gen, id, *version);
		key = vkey;
	}
	redisReply *r = redis_cmd(c->rc, err, sizeof(err), "SET %s %s PX %d", key, value, c->ttl_ms);
	c->st.round_trips++;
	if (!r) {
		inv_fail(c->s, redis_gone(c->rc), "SET: %s", err);
		return -1;
	}
	freeReplyObject(r);
	uint64_t took = (uint64_t)(now_us() - t);
	if (took > c->st.longest_fill_us)
		c->st.longest_fill_us = took;
	return 0;
}

/* Cache-aside: GET; on a miss the row, then SET. */
static int aside_get(struct reader_ctx *c, int id, int64_t *version)
{
	char key[96], err[LAB_ERRLEN];
	key_product(key, sizeof(key), id);
	int hit = cache_get(c, key, version);
	if (hit != 0)
		return hit < 0 ? -1 : 0;
	c->st.misses++;
	PGconn *pg = pgset_borrow(c->s->pool, BORROW_TIMEOUT_MS, err, sizeof(err));
	if (!pg) {
		inv_fail(c->s, NULL, "%s", err);
		return -1;
	}
	int ret = fill(c, pg, key, 0, id, version);
	pgset_return(c->s->pool, pg);
	return ret;
}

/* Versioned keys: the version and generation from PostgreSQL, then GET the key they name. */
static int versioned_get(struct reader_ctx *c, int id, int64_t *version)
{
	char idb[16], key[128], err[LAB_ERRLEN];
	PGconn *pg = pgset_borrow(c->s->pool, BORROW_TIMEOUT_MS, err, sizeof(err));
	if (!pg) {
		inv_fail(c->s, NULL, "%s", err);
		return -1;
	}
	snprintf(idb, sizeof(idb), "%d", id);
	const char *params[] = {idb};
	PGresult *res = pg_query(pg, VERSION_SQL, 1, params, err, sizeof(err));
	c->st.round_trips++;
	c->st.version_lookups++;
	int ret = -1;
	if (!res || PQntuples(res) != 1) {
		inv_fail(c->s, pg_gone(pg), "version of product %d: %s", id, res ? "no row" : err);
		goto out;
	}
	int64_t v = atoll(PQgetvalue(res, 0, 0)), gen = atoll(PQgetvalue(res, 0, 1));
	key_versioned(key, sizeof(key), gen, id, v);
	int hit = cache_get(c, key, version);
	if (hit < 0)
		goto out;
	if (hit == 0) {
		c->st.misses++;
		if (fill(c, pg, NULL, gen, id, version) < 0)
			goto out;
	}
	ret = 0;
out:
	PQclear(res);
	pgset_return(c->s->pool, pg);
	return ret;
}

int read_one(struct reader_ctx *c, int id)
{
	struct inv *s = c->s;
	int64_t t0 = now_us();
	/* the latest version committed before this read began */
	int64_t snap = atomic_load(&s->committed[id]), v = 0;
	uint64_t misses = c->st.misses;
	if ((c->m == M_VERSIONED ? versioned_get(c, id, &v) : aside_get(c, id, &v)) < 0)
		return -1;
	c->st.reads++;
	c->st.hits += c->st.misses == misses;
	if (v >= snap)
		return 0;
	c->st.stale++;
	/* stale since the first version it missed committed */
	int64_t since = atomic_load(&s->commit_us[(size_t)id * RING + (size_t)((v + 1) % RING)]);
	uint64_t behind = t0 > since ? (uint64_t)(t0 - since) : 0;
	if (behind > c->st.worst_stale_us)
		c->st.worst_stale_us = behind;
	return 0;
}

struct reader {
	struct reader_ctx ctx;
	pthread_t tid;
	uint64_t rng;
	struct readers *all;
};

struct readers {
	struct inv *s;
	atomic_bool stop;
	int n;
	struct reader r[];
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct inv *s = r->ctx.s;
	while (!atomic_load(&r->all->stop) && !inv_failed(s)) {
		if (read_one(&r->ctx, rng_between(&r->rng, 0, s->n - 1)) < 0)
			break;
		hist_sleep_us(s->cfg->read_pause_us);
	}
	return NULL;
}

struct readers *readers_start(struct inv *s, enum inv_method m, int ttl_ms)
{
	int n = s->cfg->readers;
	struct readers *rs = calloc(1, sizeof(*rs) + (size_t)n * sizeof(struct reader));
	if (!rs) {
		inv_fail(s, NULL, "out of memory");
		return NULL;
	}
	rs->s = s;
	for (int i = 0; i < n; i++) {
		struct reader *r = &rs->r[i];
		char err[LAB_ERRLEN];
		r->ctx = (struct reader_ctx){.s = s, .m = m, .ttl_ms = ttl_ms};
		r->rng = rng_stream(s->cfg->seed, 1000 * (int)m + i);
		r->all = rs;
		if (!(r->ctx.rc = redis_connect_url(s->cfg->redis_url, REDIS_TIMEOUT_MS, err, sizeof(err)))) {
			inv_fail(s, "Redis", "reader: %s", err);
			break;
		}
		if (pthread_create(&r->tid, NULL, reader_main, r) != 0) {
			redisFree(r->ctx.rc);
			r->ctx.rc = NULL;
			inv_fail(s, NULL, "cannot start a reader thread");
			break;
		}
		rs->n++;
	}
	return rs;
}

void readers_stop(struct readers *rs, struct inv_reads *out)
{
	if (!rs)
		return;
	atomic_store(&rs->stop, true);
	for (int i = 0; i < rs->n; i++) {
		struct inv_reads *st = &rs->r[i].ctx.st;
		pthread_join(rs->r[i].tid, NULL);
		redisFree(rs->r[i].ctx.rc);
		out->reads += st->reads;
		out->hits += st->hits;
		out->misses += st->misses;
		out->stale += st->stale;
		out->round_trips += st->round_trips;
		out->version_lookups += st->version_lookups;
		if (st->worst_stale_us > out->worst_stale_us)
			out->worst_stale_us = st->worst_stale_us;
		if (st->longest_fill_us > out->longest_fill_us)
			out->longest_fill_us = st->longest_fill_us;
	}
	free(rs);
}

/* A permutation, so each product is written at most once. */
int *permutation(struct inv *s, int salt)
{
	int *p = malloc(sizeof(int) * (size_t)s->n);
	if (!p)
		return NULL;
	uint64_t rng = rng_stream(s->cfg->seed, 7919 + salt);
	for (int i = 0; i < s->n; i++)
		p[i] = i;
	for (int i = s->n - 1; i > 0; i--) {
		int j = rng_between(&rng, 0, i), t = p[i];
		p[i] = p[j];
		p[j] = t;
	}
	return p;
}

int load_run(struct inv *s, const struct inv_load *L, struct inv_reads *out)
{
	int *order = permutation(s, L->salt);
	if (!order) {
		inv_fail(s, NULL, "out of memory");
		return -1;
	}
	struct readers *rs = readers_start(s, L->m, L->ttl_ms);
	int64_t t0 = now_us(), end = t0 + (int64_t)L->run_ms * 1000, last = t0;
	int w = 0;
	while (!inv_failed(s) && now_us() < end && w < s->n) {
		bool crash = L->crash_every > 0 && w % L->crash_every == L->crash_every - 1;
		int64_t v;
		if (writer_write(s, order[w], L->m, crash, &v) < 0)
			break;
		if (L->ids) {
			L->ids[w] = order[w];
			L->versions[w] = v;
		}
		out->crashed += crash;
		w++;
		if (now_us() - last > 250000) {
			last = now_us();
			inv_progress(s, L->what, (double)(last - t0) / (end - t0));
		}
		hist_sleep_us(s->cfg->write_pause_us);
	}
	out->writes = (uint64_t)w;
	out->run_s = (now_us() - t0) / 1e6;
	readers_stop(rs, out);
	free(order);
	return inv_failed(s) ? -1 : 0;
}
