/*
 * phases.c — lab-invalidation's phases 4 and 5: the listener dropped and reconnected, and the
 * versioned keys with their generation (the experiment is in invalidation.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"

/* the longest the lab waits for the listener to (re)connect or catch up: far above a loopback
 * round trip, short of a hung test */
#define LISTENER_WAIT_MS 5000

static int write_batch(struct inv *s, const int *order, int from, int n)
{
	for (int i = from; i < from + n; i++) {
		int64_t v;
		if (writer_write(s, order[i], M_NOTIFY, false, &v) < 0)
			return -1;
		hist_sleep_us(s->cfg->write_pause_us);
	}
	return 0;
}

/* The listener's absence: K writes heard, its backend ended, K writes while it is away, back
 * (with or without a re-sync), K writes heard; then the keys left stale. */
static int drop_sequence(struct inv *s, struct listener *l, const int *order, struct inv_drop_run *d)
{
	int k = s->cfg->drop_writes;
	if (listener_wait_connected(l, true, LISTENER_WAIT_MS) < 0)
		return -1;
	struct readers *rs = readers_start(s, M_NOTIFY, s->cfg->long_ttl_ms);
	int ret = -1;
	if (!rs || write_batch(s, order, 0, k) < 0 ||
	    listener_wait_notified(l, (uint64_t)k, LISTENER_WAIT_MS) < 0)
		goto out;
	if (listener_kill(l) < 0 || listener_wait_connected(l, false, LISTENER_WAIT_MS) < 0)
		goto out;
	if (write_batch(s, order, k, k) < 0)
		goto out;
	d->missed = (uint64_t)k;
	listener_allow(l);
	if (listener_wait_connected(l, true, LISTENER_WAIT_MS) < 0 || write_batch(s, order, 2 * k, k) < 0 ||
	    listener_wait_notified(l, 2 * (uint64_t)k, LISTENER_WAIT_MS) < 0)
		goto out;
	ret = 0;
out:
	d->r.writes = 3 * (uint64_t)k;
	readers_stop(rs, &d->r);
	return ret;
}

int drop_run(struct inv *s, bool resync, struct inv_drop_run *d)
{
	memset(d, 0, sizeof(*d));
	d->resync = resync;
	if (cache_reset(s, true, s->cfg->long_ttl_ms) < 0)
		return -1;
	int *order = permutation(s, resync ? 101 : 100);
	struct listener *l = order ? listener_start(s, resync) : NULL;
	if (!l) {
		free(order);
		return -1;
	}
	int64_t t0 = now_us();
	int ret = drop_sequence(s, l, order, d);
	d->r.run_s = (now_us() - t0) / 1e6;
	listener_counts(l, &d->notified, &d->resync_deleted, &d->reconnects);
	listener_stop(l);
	free(order);
	if (ret == 0)
		ret = stale_keys(s, &d->r.stale_keys_after);
	return ret;
}

/* Calls fn on every versioned key (gen, id, version); the lab's Redis connection. */
static int scan_versioned(struct inv *s,
                          void (*fn)(struct inv *, const char *, int64_t, int, int64_t, void *), void *arg)
{
	char cursor[32] = "0", err[LAB_ERRLEN];
	do {
		redisReply *r = redis_cmd(s->rc, err, sizeof(err), "SCAN %s MATCH %sg*:product:* COUNT 1000",
		                          cursor, PREFIX);
		if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
			inv_fail(s, redis_gone(s->rc), "SCAN: %s", r ? "unexpected reply" : err);
			if (r)
				freeReplyObject(r);
			return -1;
		}
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		for (size_t i = 0; i < r->element[1]->elements; i++) {
			const char *key = r->element[1]->element[i]->str;
			long long gen, version;
			int id;
			if (sscanf(key, PREFIX "g%lld:product:%d:v%lld", &gen, &id, &version) == 3 &&
			    id >= 0 && id < s->n)
				fn(s, key, gen, id, version, arg);
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	return inv_failed(s) ? -1 : 0;
}

static void count_old(struct inv *s, const char *key, int64_t gen, int id, int64_t version, void *arg)
{
	(void)gen;
	struct invalidation_result *res = arg;
	if (version >= atomic_load(&s->committed[id])) {
		res->current_keys++;
		return;
	}
	res->old_version_keys++;
	char err[LAB_ERRLEN];
	redisReply *r = redis_cmd(s->rc, err, sizeof(err), "MEMORY USAGE %s", key);
	if (!r) {
		inv_fail(s, redis_gone(s->rc), "MEMORY USAGE: %s", err);
		return;
	}
	/* nil: the key expired between SCAN and here; it holds nothing any more */
	if (r->type == REDIS_REPLY_INTEGER)
		res->old_version_bytes += (uint64_t)r->integer;
	else if (r->type != REDIS_REPLY_NIL)
		inv_fail(s, NULL, "MEMORY USAGE: an unexpected reply (type %d)", r->type);
	freeReplyObject(r);
}

struct gen_count {
	int64_t gen;
	uint64_t n;
};

static void count_gen(struct inv *s, const char *key, int64_t gen, int id, int64_t version, void *arg)
{
	(void)s, (void)key, (void)id, (void)version;
	struct gen_count *g = arg;
	g->n += gen == g->gen;
}

/* After the load: keys of old versions (and their bytes); then one generation bump and a read of
 * every product: each misses, and the old generation's keys stay until their TTL. */
int versioned_after(struct inv *s, struct invalidation_result *res)
{
	char err[LAB_ERRLEN];
	if (scan_versioned(s, count_old, res) < 0)
		return -1;
	int64_t gen;
	if (pg_query_int64(s->conn, "UPDATE " SCHEMA ".namespace SET gen = gen + 1 RETURNING gen - 1", 0,
	                   NULL, &gen, err, sizeof(err)) < 0) {
		inv_fail(s, pg_gone(s->conn), "generation bump: %s", err);
		return -1;
	}
	struct reader_ctx c = {.s = s, .rc = s->rc, .m = M_VERSIONED, .ttl_ms = s->cfg->long_ttl_ms};
	for (int id = 0; id < s->n; id++)
		if (read_one(&c, id) < 0)
			return -1;
	res->gen_misses = c.st.misses;
	struct gen_count g = {gen, 0};
	if (scan_versioned(s, count_gen, &g) < 0)
		return -1;
	res->gen_old_keys = g.n;
	return 0;
}
