/*
 * aside.c — the races played step by step, on the real servers, with two clients (two libpq and
 * two hiredis connections): the lab holds one client at the point of the race and lets the
 * other run through it, so the interleaving happens on every run, not by luck.
 *
 * Cache-aside: the reader misses and reads the row; held there (its gap: a GC pause, a slow
 * network, a busy core), the writer UPDATEs the row and invalidates; then the reader's SET lands.
 * Update-on-write: writer 1 commits and is held before its SET; writer 2 commits and SETs; then
 * writer 1's SET lands, older over newer.
 */
#include <stdio.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"

/* the scripted scenarios' namespaces: none, then the three fixes */
static const char *const NS[4] = {"s-none", "s-ttl", "s-dd", "s-ver"};

/* A failed step: which server went away, if one did. */
static int step_fail(struct cp *cp, PGconn *pg, redisContext *rc)
{
	cp_lost(cp, pg ? cp_pg_gone(pg) : cp_redis_gone(rc));
	return -1;
}

/* One race on key k. fix: -1 none, 0 TTL, 1 delayed second DEL, 2 versioned set. */
static int race_aside(struct cp *cp, int fix, int k, char *err, size_t errlen)
{
	char key[128];
	cp_key(key, sizeof(key), NS[fix + 1], k);
	struct cval v;
	int64_t ver, wver;
	int price;
	/* the reader misses and reads the row */
	if (cache_get(cp->rc, key, &v, err, errlen) < 0)
		return step_fail(cp, NULL, cp->rc);
	if (v.kind == CVAL_VALUE) {
		snprintf(err, errlen, "the scripted race found %s cached before its first read", key);
		return -1;
	}
	if (db_read(cp->conn, k, &ver, &price, err, errlen) < 0)
		return step_fail(cp, cp->conn, NULL);
	/* held in its gap: the writer's UPDATE commits, then its invalidation */
	if (db_update(cp->wconn, k, price + 1, &wver, err, errlen) < 0)
		return step_fail(cp, cp->wconn, NULL);
	bool set;
	int r = fix == 2 ? cache_vset(cp->wrc, key, wver, 0, true, &set, err, errlen)
	                 : cache_del(cp->wrc, key, err, errlen);
	if (r < 0)
		return step_fail(cp, NULL, cp->wrc);
	/* the reader's SET lands, with the version it read */
	if (fix == 2)
		r = cache_vset(cp->rc, key, ver, price, false, &set, err, errlen);
	else
		r = cache_set(cp->rc, key, ver, price, fix == 0 ? cp->cfg->ttl_ms : 0, err, errlen);
	return r < 0 ? step_fail(cp, NULL, cp->rc) : 0;
}

int scripted_aside(struct cp *cp, int fix, struct cp_scripted *res, char *err, size_t errlen)
{
	const struct cache_patterns_config *cfg = cp->cfg;
	const char *ns = NS[fix + 1];
	res->races = cfg->scripted;
	if (cp_reset(cp, err, errlen) < 0)
		return -1;
	res->stale = 0;
	/* each key checked right after its race, well inside the TTL however slow the machine is */
	for (int k = 0; k < cfg->scripted; k++) {
		bool stale;
		if (race_aside(cp, fix, k, err, errlen) < 0 ||
		    cp_key_stale(cp, ns, k, &stale, err, errlen) < 0)
			return -1;
		res->stale += stale;
	}
	/* later: past the TTL (none and TTL), or once the writer's second DEL came */
	if (fix == 1) {
		hist_sleep_us(1000LL * cfg->dd_delay_ms);
		for (int k = 0; k < cfg->scripted; k++) {
			char key[128];
			cp_key(key, sizeof(key), ns, k);
			if (cache_del(cp->wrc, key, err, errlen) < 0)
				return step_fail(cp, NULL, cp->wrc);
		}
	} else if (fix <= 0) {
		hist_sleep_us(1000LL * (cfg->ttl_ms + CP_TTL_MARGIN_MS));
	}
	return cp_count_stale(cp, ns, cfg->scripted, &res->stale_later, err, errlen);
}

/* Update-on-write on key k: writer 1 (the lab's connections) is held between commit and SET. */
static int race_update(struct cp *cp, int k, char *err, size_t errlen)
{
	char key[128];
	cp_key(key, sizeof(key), "s-update", k);
	int64_t v1, v2;
	int p1 = 1000 + k, p2 = 2000 + k;
	if (db_update(cp->conn, k, p1, &v1, err, errlen) < 0)
		return step_fail(cp, cp->conn, NULL);
	if (db_update(cp->wconn, k, p2, &v2, err, errlen) < 0)
		return step_fail(cp, cp->wconn, NULL);
	if (cache_set(cp->wrc, key, v2, p2, 0, err, errlen) < 0)
		return step_fail(cp, NULL, cp->wrc);
	if (cache_set(cp->rc, key, v1, p1, 0, err, errlen) < 0)
		return step_fail(cp, NULL, cp->rc);
	return 0;
}

int scripted_update(struct cp *cp, struct cp_scripted *res, char *err, size_t errlen)
{
	const struct cache_patterns_config *cfg = cp->cfg;
	res->races = cfg->scripted;
	if (cp_reset(cp, err, errlen) < 0)
		return -1;
	for (int k = 0; k < cfg->scripted; k++)
		if (race_update(cp, k, err, errlen) < 0)
			return -1;
	if (cp_count_stale(cp, "s-update", cfg->scripted, &res->stale, err, errlen) < 0)
		return -1;
	/* no TTL and no later step: nothing changes these keys until their next write */
	res->stale_later = res->stale;
	return 0;
}
