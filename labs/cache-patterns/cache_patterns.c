/*
 * cache_patterns.c — lab-cache-patterns' run and judge: setup, the four phases in order,
 * teardown; then the claim and every threshold it is held to. The work is in aside.c (the
 * scripted races), clients.c (the loads), through.c and behind.c; nothing here prints.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"

const char *cp_pattern_name(enum cp_pattern p)
{
	static const char *const names[CP_PATTERNS] = {
	        "cache-aside (DEL)",     "+ short TTL",   "+ delayed 2nd DEL", "+ versioned set",
	        "update-on-write (SET)", "write-through", "write-behind"};
	return (unsigned)p < CP_PATTERNS ? names[p] : "?";
}

const char *cp_pattern_id(enum cp_pattern p)
{
	static const char *const ids[CP_PATTERNS] = {
	        "aside",           "aside_ttl",     "aside_double_delete", "aside_versioned",
	        "update_on_write", "write_through", "write_behind"};
	return (unsigned)p < CP_PATTERNS ? ids[p] : "?";
}

void cache_patterns_config_default(struct cache_patterns_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	cfg->redis_url = redis_url_default();
	/* few keys, so each is written every few ms and a reader is often in its gap on the key a
	 * writer just invalidated: the race under load shows on most keys */
	cfg->keys = quick ? 6 : 12;
	/* 5 readers + 2 writers (+ the write-behind worker): at most 8 connections to each server */
	cfg->readers = 5;
	cfg->writers = 2;
	cfg->run_ms = quick ? 200 : 1500;
	/* 8 ms: a GC pause, a slow network hop, a busy core between a miss's DB read and its SET; long
	 * against a key's few ms between writes, so most keys' last write lands in some reader's gap */
	cfg->gap_ms = 8;
	/* 150 ms: short enough to wait out in the run, the bound the TTL fix puts on staleness */
	cfg->ttl_ms = 150;
	/* 100 ms: the second DEL must come after any reader's SET that read before the write: more than
	 * ten times the injected gap, so a reader the machine stalls a little longer is still covered */
	cfg->dd_delay_ms = 100;
	cfg->scripted = quick ? 5 : 10;
	cfg->wt_writes = quick ? 5 : 10;
	cfg->wb_writes = quick ? 200 : 1000;
	cfg->wb_batch = quick ? 50 : 200;
	cfg->coalesce_per = 10;
	cfg->seed = 1;
}

/* ---- the phases ---- */

struct run_ctx {
	struct cp *cp;
};

static int phase_aside(const void *ctx, void *result, char *err, size_t errlen)
{
	struct cp *cp = ((const struct run_ctx *)ctx)->cp;
	struct cache_patterns_result *r = result;
	if (scripted_aside(cp, -1, &r->aside_race, err, errlen) < 0 ||
	    scripted_update(cp, &r->update_race, err, errlen) < 0)
		return -1;
	if (load_run(cp, CP_ASIDE, &r->load[CP_ASIDE], err, errlen) < 0)
		return -1;
	return load_run(cp, CP_UPDATE, &r->load[CP_UPDATE], err, errlen);
}

static int phase_fixes(const void *ctx, void *result, char *err, size_t errlen)
{
	struct cp *cp = ((const struct run_ctx *)ctx)->cp;
	struct cache_patterns_result *r = result;
	for (int f = 0; f < 3; f++)
		if (scripted_aside(cp, f, &r->fix[f], err, errlen) < 0)
			return -1;
	for (int p = CP_ASIDE_TTL; p <= CP_ASIDE_VERSION; p++)
		if (load_run(cp, (enum cp_pattern)p, &r->load[p], err, errlen) < 0)
			return -1;
	return 0;
}

static int phase_through(const void *ctx, void *result, char *err, size_t errlen)
{
	struct cp *cp = ((const struct run_ctx *)ctx)->cp;
	struct cache_patterns_result *r = result;
	if (load_run(cp, CP_THROUGH, &r->load[CP_THROUGH], err, errlen) < 0)
		return -1;
	return through_failures(cp, r, err, errlen);
}

static int phase_behind(const void *ctx, void *result, char *err, size_t errlen)
{
	struct cp *cp = ((const struct run_ctx *)ctx)->cp;
	struct cache_patterns_result *r = result;
	if (load_run(cp, CP_BEHIND, &r->load[CP_BEHIND], err, errlen) < 0)
		return -1;
	return behind_crash(cp, r, err, errlen);
}

static const struct lab_phase_def PHASES[CP_PHASES] = {
        [CP_PHASE_ASIDE] = {"aside", phase_aside},
        [CP_PHASE_FIXES] = {"fixes", phase_fixes},
        [CP_PHASE_THROUGH] = {"through", phase_through},
        [CP_PHASE_BEHIND] = {"behind", phase_behind},
};

int cache_patterns_run(const struct cache_patterns_config *cfg, struct cache_patterns_result *res, char *err,
                       size_t errlen)
{
	memset(res, 0, sizeof(*res));
	if (cfg->keys < 2 || cfg->keys > CP_MAX_KEYS || cfg->readers < 1 || cfg->writers < 1 ||
	    cfg->readers + cfg->writers > 8 || cfg->scripted > cfg->keys) {
		snprintf(err, errlen,
		         "config: 2..%d keys, at least one reader and writer, at most 8 clients, "
		         "scripted <= keys",
		         CP_MAX_KEYS);
		return -1;
	}
	struct cp *cp = cp_open(cfg, res->lost_server, sizeof(res->lost_server), err, errlen);
	if (!cp)
		return -1;
	struct run_ctx x = {cp};
	int ret = lab_phases_walk(PHASES, CP_PHASES, &x, res, &cfg->hooks, err, errlen);
	if (ret < 0)
		snprintf(res->lost_server, sizeof(res->lost_server), "%s", cp->lost);
	char derr[LAB_ERRLEN];
	if (cp_close(cp, derr, sizeof(derr)) < 0 && ret == 0) {
		snprintf(err, errlen, "teardown: %s", derr);
		ret = -1;
	}
	return ret;
}

/* ---- the judge ---- */

/*
 * Cache-aside under random load: at least this many keys left stale when the load ends. With
 * the gap injected into every miss and each key written every few ms, the last write of a key
 * finds a reader in its gap on most keys (docs/cache-patterns.md); one is the claim itself, that
 * the race happens without a script. The fixes are held to exactly 0 under the same load (the
 * TTL: 0 once it expired): not a margin, since a versioned set refuses an older version by
 * construction and the second DEL comes more than ten gaps later.
 */
#define LOAD_MIN_STALE_KEYS 1
/*
 * The scripted races, write-through's failing second write and the write-behind crash are
 * driven step by step by the lab: their counts are exact, every race stale (or none, with a fix),
 * every write of a failing cell inconsistent (or none), and AOF with appendfsync always loses no
 * acknowledged write to a process crash. Coalescing: one row written per key for coalesce_per
 * writes to it, the batch holding them all.
 */

static bool scripted_shown(const struct cache_patterns_result *r, char *why, size_t len)
{
	const struct cp_scripted *a = &r->aside_race, *u = &r->update_race, *f = r->fix;
	if (a->races > 0 && a->stale == a->races && a->stale_later == a->races && u->stale == u->races &&
	    f[0].stale == f[0].races && f[0].stale_later == 0 && f[1].stale_later == 0 && f[2].stale == 0 &&
	    f[2].stale_later == 0)
		return true;
	snprintf(why, len,
	         "scripted races (%d each): cache-aside left %d stale (%d later), update-on-write %d, TTL %d "
	         "then %d, second DEL %d, versioned set %d; expected all, all, all, all then 0, 0, 0",
	         a->races, a->stale, a->stale_later, u->stale, f[0].stale, f[0].stale_later, f[1].stale_later,
	         f[2].stale);
	return false;
}

static bool load_shown(const struct cp_load_result *l, char *why, size_t len)
{
	if (l[CP_ASIDE].stale_keys >= LOAD_MIN_STALE_KEYS &&
	    l[CP_ASIDE].stale_keys_later >= LOAD_MIN_STALE_KEYS && l[CP_ASIDE_TTL].stale_keys_later == 0 &&
	    l[CP_ASIDE_DD].stale_keys == 0 && l[CP_ASIDE_VERSION].stale_keys == 0 &&
	    l[CP_BEHIND].stale_keys == 0)
		return true;
	snprintf(why, len,
	         "random load: cache-aside left %d keys stale (%d after the TTL; expected at least %d), the "
	         "TTL %d after expiry, the second DEL %d, the versioned set %d, write-behind %d (expected 0)",
	         l[CP_ASIDE].stale_keys, l[CP_ASIDE].stale_keys_later, LOAD_MIN_STALE_KEYS,
	         l[CP_ASIDE_TTL].stale_keys_later, l[CP_ASIDE_DD].stale_keys, l[CP_ASIDE_VERSION].stale_keys,
	         l[CP_BEHIND].stale_keys);
	return false;
}

static bool through_shown(const struct cache_patterns_result *r, char *why, size_t len)
{
	const struct cp_through_cell(*t)[CP_FAULTS] = r->through;
	int n = t[CP_CACHE_FIRST][CP_DB_REFUSES].writes;
	if (n > 0 && t[CP_CACHE_FIRST][CP_DB_REFUSES].inconsistent == n &&
	    t[CP_DB_FIRST][CP_REDIS_CUT].inconsistent == n &&
	    t[CP_CACHE_FIRST][CP_REDIS_CUT].inconsistent == 0 &&
	    t[CP_DB_FIRST][CP_DB_REFUSES].inconsistent == 0)
		return true;
	snprintf(why, len,
	         "write-through (%d writes a cell): cache first + DB refuses %d, DB first + Redis cut %d "
	         "inconsistent (expected %d each); first write failing %d and %d (expected 0)",
	         n, t[CP_CACHE_FIRST][CP_DB_REFUSES].inconsistent, t[CP_DB_FIRST][CP_REDIS_CUT].inconsistent,
	         n, t[CP_CACHE_FIRST][CP_REDIS_CUT].inconsistent, t[CP_DB_FIRST][CP_DB_REFUSES].inconsistent);
	return false;
}

static bool behind_shown(const struct cache_patterns_result *r, char *why, size_t len)
{
	const struct cp_crash *c = r->crash;
	if (c[0].lost > 0 && c[1].lost == 0 && c[1].acked > 0 && r->coalesce_keys > 0 &&
	    r->coalesce_db_writes == r->coalesce_keys)
		return true;
	snprintf(why, len,
	         "write-behind: %d of %d acknowledged writes lost without persistence (expected > 0), %d of "
	         "%d "
	         "with AOF (expected 0); coalescing wrote %d rows for %d keys",
	         c[0].lost, c[0].acked, c[1].lost, c[1].acked, r->coalesce_db_writes, r->coalesce_keys);
	return false;
}

void cache_patterns_judge(const struct cache_patterns_result *res, struct lab_verdict *v)
{
	char why[512] = "";
	bool shown = scripted_shown(res, why, sizeof(why)) && load_shown(res->load, why, sizeof(why)) &&
	             through_shown(res, why, sizeof(why)) && behind_shown(res, why, sizeof(why));
	const struct cp_load_result *l = res->load;
	lab_verdict_set(
	        v, shown,
	        "each pattern's failure reproduced and each fix brings it to 0: cache-aside's stale-for-good "
	        "race (TTL bounds it, a second DEL or a versioned set ends it), write-through's failed "
	        "second write, write-behind's lost acknowledged writes (none with AOF)",
	        "%s%scache-aside: %d/%d scripted races and %d/%d keys under load left stale, 0 with "
	        "each fix; update-on-write %d/%d; write-through %d + %d inconsistent; write-behind lost "
	        "%d of %d acked writes without persistence, %d with AOF; %d writes became %d DB rows",
	        why, shown ? "" : ". ", res->aside_race.stale, res->aside_race.races, l[CP_ASIDE].stale_keys,
	        l[CP_ASIDE].keys, res->update_race.stale, res->update_race.races,
	        res->through[CP_CACHE_FIRST][CP_DB_REFUSES].inconsistent,
	        res->through[CP_DB_FIRST][CP_REDIS_CUT].inconsistent, res->crash[0].lost, res->crash[0].acked,
	        res->crash[1].lost, res->coalesce_client_writes, res->coalesce_db_writes);
}
