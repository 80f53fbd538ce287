/*
 * invalidation.c — lab-invalidation's run and judge (the experiment is in invalidation.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"

/* the longest the lab waits for the listener to hear every write of phase 3 */
#define CATCH_UP_MS 5000

void invalidation_config_default(struct invalidation_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	cfg->redis_url = redis_url_default();
	cfg->products = 1000;
	/* 8 readers sharing 4 connections: a read-heavy app; with the writer, its spare, the listener
	 * and the lab's own that is 8 backends of the 100 every lab shares */
	cfg->readers = 8;
	cfg->pg_pool = 4;
	/* a reader pauses 0.5 ms between reads: about ten reads a second per product in all, so a TTL
	 * of a few hundred ms is a real hit ratio, without saturating the two shared cores */
	cfg->read_pause_us = 500;
	/* a write every 2 ms: 500 a second, each product about once in 2 s */
	cfg->write_pause_us = 2000;
	static const int quick_ttls[] = {25, 50, 100, 200, 400};
	static const int full_ttls[] = {25, 50, 100, 200, 400, 800, 1600};
	const int *ttls = quick ? quick_ttls : full_ttls;
	cfg->nttls = quick ? 5 : 7;
	memcpy(cfg->ttls_ms, ttls, sizeof(int) * (size_t)cfg->nttls);
	cfg->ttl_run_ms = quick ? 500 : 2000;
	cfg->run_ms = quick ? 600 : 2000;
	/* 30 s: longer than any phase, so a key left stale stays stale until the phase is judged */
	cfg->long_ttl_ms = 30000;
	cfg->crash_every = 10;
	cfg->drop_writes = quick ? 40 : 100;
	cfg->seed = 1;
}

double inv_stale_share(const struct inv_reads *r)
{
	return r->reads ? (double)r->stale / (double)r->reads : 0;
}

double inv_hit_ratio(const struct inv_reads *r)
{
	return r->reads ? (double)r->hits / (double)r->reads : 0;
}

static int phase_ttl(const void *cfg_, void *result, char *err, size_t errlen)
{
	struct inv *s = (struct inv *)cfg_;
	struct invalidation_result *r = result;
	for (int i = 0; i < s->cfg->nttls; i++) {
		char what[64];
		snprintf(what, sizeof(what), "TTL %d ms", s->cfg->ttls_ms[i]);
		struct inv_load L = {M_TTL, s->cfg->ttls_ms[i], s->cfg->ttl_run_ms, 0, NULL, NULL, what,
		                     1 + i};
		r->ttl[i].ttl_ms = s->cfg->ttls_ms[i];
		if (cache_reset(s, false, 0) < 0 || load_run(s, &L, &r->ttl[i].r) < 0)
			return inv_report(s, err, errlen);
		r->nttl = i + 1;
	}
	return 0;
}

static int phase_delete(const void *cfg_, void *result, char *err, size_t errlen)
{
	struct inv *s = (struct inv *)cfg_;
	struct invalidation_result *r = result;
	struct inv_load L = {M_DELETE,
	                     s->cfg->long_ttl_ms,
	                     s->cfg->run_ms,
	                     s->cfg->crash_every,
	                     NULL,
	                     NULL,
	                     "delete after commit",
	                     20};
	if (cache_reset(s, true, L.ttl_ms) < 0 || load_run(s, &L, &r->del) < 0 ||
	    stale_keys(s, &r->del.stale_keys_after) < 0)
		return inv_report(s, err, errlen);
	return 0;
}

/* The lag of each write: from its COMMIT returned to the listener's DEL answered. */
static void lags(struct inv *s, const int *ids, const int64_t *versions, uint64_t n,
                 struct invalidation_result *r)
{
	hist_init(&r->lag);
	for (uint64_t i = 0; i < n; i++) {
		size_t slot = (size_t)ids[i] * RING + (size_t)(versions[i] % RING);
		int64_t d = atomic_load(&s->deleted_us[slot]) - atomic_load(&s->commit_us[slot]);
		if (d < 0)
			r->lag_before_commit++;
		hist_record(&r->lag, d > 0 ? (uint64_t)d : 0);
	}
}

static int phase_notify(const void *cfg_, void *result, char *err, size_t errlen)
{
	struct inv *s = (struct inv *)cfg_;
	struct invalidation_result *r = result;
	int *ids = calloc((size_t)s->n, sizeof(int));
	int64_t *versions = calloc((size_t)s->n, sizeof(int64_t));
	struct listener *l = NULL;
	struct inv_load L = {M_NOTIFY,
	                     s->cfg->long_ttl_ms,
	                     s->cfg->run_ms,
	                     s->cfg->crash_every,
	                     ids,
	                     versions,
	                     "LISTEN/NOTIFY",
	                     30};
	int ret = -1;
	if (!ids || !versions) {
		inv_fail(s, NULL, "out of memory");
		goto out;
	}
	if (cache_reset(s, true, L.ttl_ms) < 0 || !(l = listener_start(s, false)) ||
	    listener_wait_connected(l, true, CATCH_UP_MS) < 0 || load_run(s, &L, &r->notify) < 0 ||
	    listener_wait_notified(l, r->notify.writes, CATCH_UP_MS) < 0 ||
	    stale_keys(s, &r->notify.stale_keys_after) < 0)
		goto out;
	uint64_t resynced;
	int reconnects;
	listener_counts(l, &r->notified, &resynced, &reconnects);
	lags(s, ids, versions, r->notify.writes, r);
	ret = 0;
out:
	listener_stop(l);
	free(ids);
	free(versions);
	return ret < 0 ? inv_report(s, err, errlen) : 0;
}

static int phase_reconnect(const void *cfg_, void *result, char *err, size_t errlen)
{
	struct inv *s = (struct inv *)cfg_;
	struct invalidation_result *r = result;
	for (int i = 0; i < 2; i++) {
		inv_progress(s, i ? "reconnect with re-sync" : "reconnect, no re-sync", i / 2.0);
		if (drop_run(s, i == 1, &r->drop[i]) < 0)
			return inv_report(s, err, errlen);
	}
	return 0;
}

static int phase_versioned(const void *cfg_, void *result, char *err, size_t errlen)
{
	struct inv *s = (struct inv *)cfg_;
	struct invalidation_result *r = result;
	struct inv_load L = {
	        M_VERSIONED, s->cfg->long_ttl_ms, s->cfg->run_ms, 0, NULL, NULL, "versioned keys", 40};
	if (cache_reset(s, false, 0) < 0 || load_run(s, &L, &r->versioned) < 0 || versioned_after(s, r) < 0)
		return inv_report(s, err, errlen);
	return 0;
}

/* ---- what --predict asks before each phase (struct lab_question, lab.h) ---- */

static const struct invalidation_config *config_of(const void *cfg)
{
	return cfg;
}

static const struct invalidation_result *result_of(const void *result)
{
	return result;
}

static double q_ttl_given(const void *cfg, int i)
{
	const struct invalidation_config *c = config_of(cfg);
	return c->ttls_ms[i == 0 ? 0 : c->nttls - 1];
}

/* How far behind a read was under TTL only, as Q_TTL's choices name it: none stale, every stale
 * read within its TTL (+ the fill, the judge's bound), or one past it. */
static double q_ttl_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct invalidation_result *r = result_of(result);
	if (r->nttl < 1)
		return NAN;
	uint64_t stale = 0;
	for (int i = 0; i < r->nttl; i++) {
		const struct inv_ttl_run *t = &r->ttl[i];
		if (t->r.worst_stale_us >
		    (uint64_t)t->ttl_ms * 1000 + t->r.longest_fill_us + INV_TTL_SLACK_US)
			return 2;
		stale += t->r.stale;
	}
	return stale > 0 ? 1 : 0;
}

static const struct lab_question Q_TTL = {
        .text = "Cache-aside with a TTL only (from {} to {} ms), a write every few ms: how far behind the "
                "database can a read be?",
        .given = q_ttl_given,
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"never behind: the TTL expires it in time", "up to about the TTL",
                    "unbounded: until the next write of that key"},
        .measured = q_ttl_measured,
        .why = "a value lives TTL from its SET, read just before a write: at worst TTL (plus the fill) "
               "behind; a longer TTL buys hits with staleness"};

/* Keys left stale after the load, per write that crashed between its COMMIT and its DEL. */
static double q_delete_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct inv_reads *d = &result_of(result)->del;
	return d->crashed > 0 ? 100.0 * (double)d->stale_keys_after / (double)d->crashed : NAN;
}

static double q_delete_given(const void *cfg, int i)
{
	const struct invalidation_config *c = config_of(cfg);
	return i == 0 ? c->crash_every : c->long_ttl_ms / 1000.0;
}

static const struct lab_question Q_DELETE = {
        .text = "The writer deletes the key after COMMIT; every {}th write crashes between the two. With "
                "a TTL of {} s, what share of the crashed writes leave their key stale after the load?",
        .given = q_delete_given,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "%",
        .measured = q_delete_measured,
        .why = "all of them: the DEL was the only thing that would remove the old value, so each key "
               "stays stale until its TTL"};

static double q_notify_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct inv_reads *n = &result_of(result)->notify;
	return n->crashed > 0 ? (double)n->stale_keys_after : NAN;
}

static const struct lab_question Q_NOTIFY = {
        .text = "The same crashes right after COMMIT, but an AFTER UPDATE trigger NOTIFYs and a listener "
                "deletes the keys: how many keys are left stale?",
        .kind = LAB_ANSWER_NUMBER,
        .unit = "keys",
        .measured = q_notify_measured,
        .why = "none: the notification is part of the commit, sent whatever the writer does next; what "
               "is left is the lag from COMMIT to the listener's DEL"};

static double q_reconnect_given(const void *cfg, int i)
{
	(void)i;
	return config_of(cfg)->drop_writes;
}

static double q_reconnect_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct inv_drop_run *d = &result_of(result)->drop[0];
	return d->missed > 0 ? (double)d->r.stale_keys_after : NAN;
}

static const struct lab_question Q_RECONNECT = {
        .text = "The listener's connection is ended; {} writes commit while it is away; it reconnects "
                "and LISTENs again, no re-sync. How many keys are left stale?",
        .given = q_reconnect_given,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "keys",
        .measured = q_reconnect_measured,
        .why = "one per write it missed: NOTIFY reaches only sessions listening at COMMIT and is never "
               "replayed; a re-sync from a change sequence brings it to 0"};

static double q_versioned_given(const void *cfg, int i)
{
	(void)i;
	return config_of(cfg)->products;
}

static double q_versioned_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct invalidation_result *r = result_of(result);
	return r->versioned.reads > 0 ? (double)r->gen_misses : NAN;
}

static const struct lab_question Q_VERSIONED = {
        .text = "Versioned keys under a namespace generation, {} products cached; one UPDATE bumps the "
                "generation, then each product is read once. How many reads miss the cache?",
        .given = q_versioned_given,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "reads",
        .measured = q_versioned_measured,
        .why = "every one: each read names a key under the new generation, so one write invalidates "
               "the whole set; the old keys wait for their TTL, and every read pays a version lookup"};

static const struct lab_phase_def PHASES[INV_PHASES] = {
        [INV_PHASE_TTL] = {"ttl", phase_ttl, &Q_TTL},
        [INV_PHASE_DELETE] = {"delete", phase_delete, &Q_DELETE},
        [INV_PHASE_NOTIFY] = {"notify", phase_notify, &Q_NOTIFY},
        [INV_PHASE_RECONNECT] = {"reconnect", phase_reconnect, &Q_RECONNECT},
        [INV_PHASE_VERSIONED] = {"versioned", phase_versioned, &Q_VERSIONED},
};

int invalidation_run(const struct invalidation_config *cfg, struct invalidation_result *res, char *err,
                     size_t errlen)
{
	memset(res, 0, sizeof(*res));
	res->long_ttl_ms = cfg->long_ttl_ms;
	res->products = cfg->products;
	if (cfg->products < 10 || cfg->readers < 1 || cfg->pg_pool < 1 || cfg->nttls < 1 ||
	    cfg->nttls > INV_MAX_TTLS || cfg->drop_writes < 1 || 3 * cfg->drop_writes > cfg->products) {
		snprintf(err, errlen, "invalid config");
		return -1;
	}
	struct inv *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int ret = store_open(s, cfg, err, errlen);
	if (ret == 0)
		ret = lab_phases_walk(PHASES, INV_PHASES, s, res, &cfg->hooks, err, errlen);
	if (ret < 0)
		snprintf(res->lost_server, sizeof(res->lost_server), "%s", s->lost);
	char derr[LAB_ERRLEN];
	if (store_close(s, derr, sizeof(derr)) < 0 && ret == 0) {
		snprintf(err, errlen, "teardown: %s", derr);
		ret = -1;
	}
	free(s);
	return ret;
}

/* ---- the judge ---- */

/* TTL only: every TTL's worst staleness within TTL + its longest fill + INV_TTL_SLACK_US
 * (invalidation.h, with its reason). */
/*
 * LISTEN/NOTIFY is "near zero": a read can be stale only while a committed write's key waits for
 * its DEL, so its worst staleness is at most the longest lag measured in the same run (+
 * INV_TTL_SLACK_US for the two clocks' reads), and that lag's p99 is below the sweep's longest
 * TTL. Both sides of the first grow together on a loaded machine, so it is a bound, not a rate
 * (an earlier "stale share under a quarter of TTL's" could fail when load stretched the lag).
 */
/* Faults are counted, not sampled, so the rest are exact: keys left stale == writes crashed
 * (delete after commit) or writes missed (reconnect without re-sync), 0 with the listener and
 * with the re-sync, 0 stale reads and exactly one lookup per read for versioned keys. */

static bool ttl_shown(const struct invalidation_result *r, char *why, size_t len)
{
	for (int i = 0; i < r->nttl; i++) {
		const struct inv_ttl_run *t = &r->ttl[i];
		uint64_t bound = (uint64_t)t->ttl_ms * 1000 + t->r.longest_fill_us + INV_TTL_SLACK_US;
		if (t->r.reads == 0) {
			snprintf(why, len, "TTL %d ms: no read measured", t->ttl_ms);
			return false;
		}
		if (t->r.worst_stale_us > bound) {
			snprintf(why, len,
			         "TTL %d ms: worst staleness %.1f ms over the bound %.1f ms (TTL + longest "
			         "fill + %d ms)",
			         t->ttl_ms, t->r.worst_stale_us / 1000.0, bound / 1000.0,
			         INV_TTL_SLACK_US / 1000);
			return false;
		}
	}
	const struct inv_reads *last = &r->ttl[r->nttl - 1].r;
	if (last->stale > 0)
		return true;
	snprintf(why, len, "TTL %d ms: no stale read among %llu", r->ttl[r->nttl - 1].ttl_ms,
	         (unsigned long long)last->reads);
	return false;
}

static bool delete_shown(const struct inv_reads *d, char *why, size_t len)
{
	if (d->crashed > 0 && d->stale_keys_after == d->crashed && d->stale > 0)
		return true;
	snprintf(why, len,
	         "delete after commit: %llu keys stale after, %llu writes crashed, %llu stale reads",
	         (unsigned long long)d->stale_keys_after, (unsigned long long)d->crashed,
	         (unsigned long long)d->stale);
	return false;
}

static bool notify_shown(const struct invalidation_result *r, char *why, size_t len)
{
	const struct inv_reads *n = &r->notify;
	uint64_t p99 = hist_percentile(&r->lag, 99), longest = (uint64_t)r->ttl[r->nttl - 1].ttl_ms * 1000;
	uint64_t lag_max = hist_percentile(&r->lag, 100);
	if (n->reads > 0 && n->crashed > 0 && n->stale_keys_after == 0 && r->notified == n->writes &&
	    p99 < longest && n->worst_stale_us <= lag_max + INV_TTL_SLACK_US)
		return true;
	snprintf(why, len,
	         "LISTEN/NOTIFY: %llu reads, %llu keys stale after %llu crashed writes, %llu notifications "
	         "for %llu writes, lag p99 %.1f ms (TTL %.0f ms), worst staleness %.1f ms (longest lag "
	         "%.1f ms + %d ms)",
	         (unsigned long long)n->reads, (unsigned long long)n->stale_keys_after,
	         (unsigned long long)n->crashed, (unsigned long long)r->notified,
	         (unsigned long long)n->writes, p99 / 1000.0, longest / 1000.0, n->worst_stale_us / 1000.0,
	         lag_max / 1000.0, INV_TTL_SLACK_US / 1000);
	return false;
}

static bool drop_shown(const struct inv_drop_run *d, char *why, size_t len)
{
	const struct inv_drop_run *no = &d[0], *re = &d[1];
	if (no->missed > 0 && no->notified == no->r.writes - no->missed &&
	    no->r.stale_keys_after == no->missed && re->missed > 0 && re->r.stale_keys_after == 0 &&
	    re->resync_deleted >= re->missed)
		return true;
	snprintf(why, len,
	         "reconnect: %llu keys stale after %llu missed notifications without re-sync, %llu with "
	         "(re-sync "
	         "deleted %llu)",
	         (unsigned long long)no->r.stale_keys_after, (unsigned long long)no->missed,
	         (unsigned long long)re->r.stale_keys_after, (unsigned long long)re->resync_deleted);
	return false;
}

static bool versioned_shown(const struct invalidation_result *r, int products, char *why, size_t len)
{
	const struct inv_reads *v = &r->versioned;
	if (v->reads > 0 && v->stale == 0 && v->version_lookups == v->reads && r->old_version_keys > 0 &&
	    r->gen_misses == (uint64_t)products)
		return true;
	snprintf(why, len,
	         "versioned keys: %llu stale reads of %llu, %llu lookups, %llu old versions held, %llu of %d "
	         "missed "
	         "after the generation bump",
	         (unsigned long long)v->stale, (unsigned long long)v->reads,
	         (unsigned long long)v->version_lookups, (unsigned long long)r->old_version_keys,
	         (unsigned long long)r->gen_misses, products);
	return false;
}

void invalidation_judge(const struct invalidation_result *r, struct lab_verdict *v)
{
	char why[512] = "";
	bool shown = r->nttl > 0 && ttl_shown(r, why, sizeof(why)) &&
	             delete_shown(&r->del, why, sizeof(why)) && notify_shown(r, why, sizeof(why)) &&
	             drop_shown(r->drop, why, sizeof(why)) &&
	             versioned_shown(r, r->products, why, sizeof(why));
	const struct inv_ttl_run *last = r->nttl > 0 ? &r->ttl[r->nttl - 1] : NULL;
	lab_verdict_set(
	        v, shown,
	        "none is perfect: a TTL bounds staleness by the TTL; invalidation on commit is near zero but "
	        "a crash or "
	        "a dropped listener leaves keys stale; versioned keys read nothing stale for one extra "
	        "lookup a read",
	        "%s%sTTL %d ms: %.1f%% stale reads, worst %.0f ms; delete after commit: %llu keys stale "
	        "after %llu "
	        "crashes; NOTIFY: lag p99 %.2f ms, 0 stale after the same crashes, %llu left by a reconnect "
	        "without "
	        "re-sync, %llu with; versioned: %llu stale of %llu reads, %.2f lookups a read",
	        why, shown ? "" : ". ", last ? last->ttl_ms : 0, last ? 100 * inv_stale_share(&last->r) : 0,
	        last ? last->r.worst_stale_us / 1000.0 : 0, (unsigned long long)r->del.stale_keys_after,
	        (unsigned long long)r->del.crashed, hist_percentile(&r->lag, 99) / 1000.0,
	        (unsigned long long)r->drop[0].r.stale_keys_after,
	        (unsigned long long)r->drop[1].r.stale_keys_after, (unsigned long long)r->versioned.stale,
	        (unsigned long long)r->versioned.reads,
	        r->versioned.reads ? (double)r->versioned.version_lookups / r->versioned.reads : 0);
}
