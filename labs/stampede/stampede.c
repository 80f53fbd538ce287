/*
 * stampede.c — lab-stampede's run and judge: setup, the four phases in order, teardown; then the
 * claim and every threshold it is held to. The phases' work is in hot.c (the hot key's clients)
 * and jitter.c (many keys); the schema and the server's log in store.c. Nothing here prints.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"

const char *stampede_defence_name(enum stampede_defence d)
{
	switch (d) {
	case STAMPEDE_NONE:
		return "no protection";
	case STAMPEDE_LOCK:
		return "lock (waiters wait)";
	case STAMPEDE_XFETCH:
		return "XFetch";
	case STAMPEDE_SWR:
		return "stale-while-revalidate";
	default:
		return "?";
	}
}

const char *stampede_defence_id(enum stampede_defence d)
{
	static const char *const ids[] = {"none", "lock", "xfetch", "swr"};
	return (unsigned)d < STAMPEDE_DEFENCES ? ids[d] : "?";
}

void stampede_config_default(struct stampede_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	cfg->redis_url = redis_url_default();
	/* hundreds of readers of one key; 40 with --quick keeps the herd visible and the run short */
	cfg->clients = quick ? 40 : 200;
	/* 4 connections: cores x 2 on this 2-core machine (HikariCP's rule of thumb, less the
	 * spindle), far below max_connections; more would only share the same two cores */
	cfg->pg_pool = 4;
	/* 50,000 orders: the hot aggregation costs about 10-15 ms here alone (30,000 with --quick:
	 * 7-10 ms), tens of ms under a herd. A costlier query makes the herd longer, and XFetch's
	 * duplicates grow with how much a recompute slows down under load */
	cfg->rows = quick ? 30000 : 50000;
	/* 2 s (700 ms with --quick): long against a recompute, since XFetch goes early by about
	 * delta x ln(reads/s x delta) and a TTL near that would recompute on every read; short
	 * enough that a full run sees several expiries (--quick: one each) */
	cfg->ttl_ms = quick ? 700 : 2000;
	cfg->run_ms = quick ? 1100 : 5000;
	/* every client reads about every 20 ms: all of them read within one recompute */
	cfg->think_ms = 20;
	/* 1 s: tens of recomputes, so a live holder does not lose its lock */
	cfg->lock_ms = 1000;
	cfg->lock_poll_ms = 5;
	/* beta 2, not the paper's 1: a reader that goes early is followed, while its recompute runs
	 * for delta', by about e^(delta' / (beta x delta)) - 1 others. On a shared 2-core machine a
	 * recompute often takes twice its last time; beta 2 keeps that near 1.7 extra, not 6 */
	cfg->beta = 2.0;
	/* stale values may be served for up to 5 s past the soft TTL */
	cfg->stale_ms = 5000;
	/* a thousand keys (200 with --quick) warmed at once */
	cfg->keys = quick ? 200 : 1000;
	/* TTL 300 ms + up to 700 ms of jitter (1 s + up to 2 s): the jitter spreads the wave over
	 * 7 (20) intervals of 100 ms */
	cfg->key_ttl_ms = quick ? 300 : 1000;
	cfg->jitter_ms = quick ? 700 : 2000;
	/* 8 readers with a connection each */
	cfg->sweepers = 8;
	/* each key read every 10 ms: an expiry is seen within one bucket */
	cfg->sweep_ms = 10;
	cfg->bucket_ms = 100;
	/* Redis goes away before the first expiry, and the run goes on without it */
	cfg->outage_at_ms = quick ? 300 : 1500;
	cfg->outage_run_ms = quick ? 800 : 3000;
	cfg->seed = 1;
}

/* ---- small tools ---- */

void fault_init(struct fault *f)
{
	memset(f, 0, sizeof(*f));
	pthread_mutex_init(&f->mu, NULL);
}

void fault_destroy(struct fault *f)
{
	pthread_mutex_destroy(&f->mu);
}

void fault_set(struct fault *f, const char *server, const char *fmt, ...)
{
	pthread_mutex_lock(&f->mu);
	if (!atomic_load(&f->failed)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(f->err, sizeof(f->err), fmt, ap);
		va_end(ap);
		f->server = server;
		atomic_store(&f->failed, true);
	}
	pthread_mutex_unlock(&f->mu);
}

bool fault_failed(struct fault *f)
{
	return atomic_load(&f->failed);
}

int fault_report(struct fault *f, struct stampede *s, char *err, size_t errlen)
{
	pthread_mutex_lock(&f->mu);
	snprintf(err, errlen, "%s", f->err);
	stampede_lost(s, f->server);
	pthread_mutex_unlock(&f->mu);
	return -1;
}

const char *pg_gone(const PGconn *c)
{
	return !c || PQstatus(c) == CONNECTION_BAD ? "PostgreSQL" : NULL;
}

const char *redis_gone(const redisContext *c)
{
	return !c || c->err ? "Redis" : NULL;
}

void stampede_lost(struct stampede *s, const char *server)
{
	if (server && !s->lost[0])
		snprintf(s->lost, sizeof(s->lost), "%s", server);
}

int64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void sleep_us(int64_t us)
{
	if (us <= 0)
		return;
	struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void progress(const struct stampede_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done < 0 ? 0 : done > 1 ? 1 : done, cfg->progress_arg);
}

/* ---- the run ---- */

/* What the phases share: the config and what setup opened. */
struct run_ctx {
	const struct stampede_config *cfg;
	struct stampede *s;
};

static int phase_herd(const void *ctx, void *result, char *err, size_t errlen)
{
	const struct run_ctx *x = ctx;
	struct stampede_result *r = result;
	return hot_run(x->s, x->cfg, STAMPEDE_NONE, &r->hot[STAMPEDE_NONE], err, errlen);
}

static int phase_defences(const void *ctx, void *result, char *err, size_t errlen)
{
	const struct run_ctx *x = ctx;
	struct stampede_result *r = result;
	for (int d = STAMPEDE_LOCK; d < STAMPEDE_DEFENCES; d++)
		if (hot_run(x->s, x->cfg, (enum stampede_defence)d, &r->hot[d], err, errlen) < 0)
			return -1;
	return 0;
}

static int phase_jitter(const void *ctx, void *result, char *err, size_t errlen)
{
	const struct run_ctx *x = ctx;
	struct stampede_result *r = result;
	/* a connection per sweeper: the wave is limited by the database, not by a pool */
	struct pgset *set = store_pgset(x->cfg, x->cfg->sweepers, err, errlen);
	if (!set) {
		stampede_lost(x->s, "PostgreSQL");
		return -1;
	}
	int ret = jitter_run(x->s, x->cfg, set, false, &r->jitter[0], err, errlen);
	if (ret == 0)
		ret = jitter_run(x->s, x->cfg, set, true, &r->jitter[1], err, errlen);
	pgset_close(set);
	return ret;
}

static int phase_outage(const void *ctx, void *result, char *err, size_t errlen)
{
	const struct run_ctx *x = ctx;
	struct stampede_result *r = result;
	return outage_run(x->s, x->cfg, &r->outage, &r->connections_cut, err, errlen);
}

static const struct lab_phase_def PHASES[STAMPEDE_PHASES] = {
        [STAMPEDE_PHASE_HERD] = {"herd", phase_herd},
        [STAMPEDE_PHASE_DEFENCES] = {"defences", phase_defences},
        [STAMPEDE_PHASE_JITTER] = {"jitter", phase_jitter},
        [STAMPEDE_PHASE_OUTAGE] = {"outage", phase_outage},
};

int stampede_run(const struct stampede_config *cfg, struct stampede_result *res, char *err, size_t errlen)
{
	memset(res, 0, sizeof(*res));
	struct stampede *s =
	        store_open(cfg, &res->query_us, res->lost_server, sizeof(res->lost_server), err, errlen);
	if (!s)
		return -1;
	struct run_ctx x = {cfg, s};
	int ret = lab_phases_walk(PHASES, STAMPEDE_PHASES, &x, res, &cfg->hooks, err, errlen);
	if (ret < 0)
		snprintf(res->lost_server, sizeof(res->lost_server), "%s", s->lost);
	char derr[LAB_ERRLEN];
	if (store_close(s, derr, sizeof(derr)) < 0 && ret == 0) {
		snprintf(err, errlen, "teardown: %s", derr);
		ret = -1;
	}
	return ret;
}

/* ---- the judge ---- */

/*
 * No protection: at least half the clients recompute at each expiry, on average. Each client
 * reads about every think_ms (20 ms) and a recompute takes longer than that under the herd, so in
 * theory every client misses; half leaves room for clients asleep through a short recompute.
 */
#define HERD_MIN_FRACTION 0.5
/*
 * XFetch: on average at most this fraction of the clients recompute per expiry (the herd is all
 * of them). About e^(1/beta) are expected when a recompute takes what the last one took; on a
 * shared machine it often takes several times that and the duplicates grow as
 * e^(delta' / (beta x delta)) (docs/stampede.md): hence a bound against the herd, not against
 * e^(1/beta).
 */
#define XFETCH_MAX_FRACTION 0.25
/* XFetch: at most this fraction of all reads waited on PostgreSQL (only early recomputers wait) */
#define XFETCH_MAX_WAIT_FRACTION 0.02
/*
 * Jitter: the peak of recomputes asked for per bucket falls at least this many times, for the
 * same work. Expected: the whole wave in one bucket against the wave spread over the
 * jitter's buckets (7 with --quick, 20 in full); 3 leaves room for a wave that straddles two
 * buckets and for uneven draws.
 */
#define JITTER_MIN_FALL 3.0
/* The lock and stale-while-revalidate are held to exactly one recompute per expiry: not a
 * margin, since the second look under the lock makes a second recompute a bug. The outage is
 * held to no lost read: every read is served, from PostgreSQL once Redis is gone. */

static bool herd_shown(const struct stampede_hot_result *no, char *why, size_t len)
{
	if (no->expiries >= 1 && no->recomputes_per_expiry >= HERD_MIN_FRACTION * no->clients)
		return true;
	snprintf(why, len,
	         "no protection: %.1f recomputes per expiry over %d expiries, expected at least %.0f",
	         no->recomputes_per_expiry, no->expiries, HERD_MIN_FRACTION * no->clients);
	return false;
}

static bool lock_shown(const struct stampede_hot_result *lk, char *why, size_t len)
{
	if (lk->expiries >= 1 && lk->min_per_expiry == 1 && lk->max_per_expiry == 1 && lk->lost == 0)
		return true;
	snprintf(why, len,
	         "lock: %d to %d recomputes per expiry over %d expiries and %llu lost reads, expected "
	         "exactly 1 and none",
	         lk->min_per_expiry, lk->max_per_expiry, lk->expiries, (unsigned long long)lk->lost);
	return false;
}

static bool xfetch_shown(const struct stampede_hot_result *xf, char *why, size_t len)
{
	if (xf->expiries >= 1 && xf->recomputes_per_expiry <= XFETCH_MAX_FRACTION * xf->clients &&
	    xf->db_waits <= XFETCH_MAX_WAIT_FRACTION * xf->reads && xf->hard_misses == 0)
		return true;
	snprintf(why, len,
	         "XFetch: %.1f recomputes per expiry over %d expiries (at most %.0f), %llu of %llu reads "
	         "waited "
	         "(at most %.0f%%), %llu hard misses",
	         xf->recomputes_per_expiry, xf->expiries, XFETCH_MAX_FRACTION * xf->clients,
	         (unsigned long long)xf->db_waits, (unsigned long long)xf->reads,
	         100 * XFETCH_MAX_WAIT_FRACTION, (unsigned long long)xf->hard_misses);
	return false;
}

static bool swr_shown(const struct stampede_hot_result *sw, char *why, size_t len)
{
	if (sw->expiries >= 1 && sw->max_per_expiry == 1 && sw->stale_reads > 0 && sw->lost == 0)
		return true;
	snprintf(why, len,
	         "stale-while-revalidate: up to %d recomputes per expiry over %d expiries, %llu stale reads",
	         sw->max_per_expiry, sw->expiries, (unsigned long long)sw->stale_reads);
	return false;
}

/* How many times jitter cut the peak of recomputes asked for per bucket. */
static double jitter_fall(const struct stampede_jitter_result *j)
{
	return j[1].peak > 0 ? j[0].peak / j[1].peak : 0;
}

static bool jitter_shown(const struct stampede_jitter_result *j, char *why, size_t len)
{
	double fall = jitter_fall(j);
	bool same_work = j[0].recomputes == (uint64_t)j[0].keys && j[1].recomputes == (uint64_t)j[1].keys &&
	                 j[0].keys_recomputed == j[0].keys && j[1].keys_recomputed == j[1].keys;
	if (fall >= JITTER_MIN_FALL && same_work)
		return true;
	snprintf(why, len,
	         "jitter: the peak fell %.1fx (expected at least %.0fx) with %llu vs %llu recomputes of %d "
	         "keys",
	         fall, JITTER_MIN_FALL, (unsigned long long)j[0].recomputes,
	         (unsigned long long)j[1].recomputes, j[0].keys);
	return false;
}

static bool outage_shown(const struct stampede_hot_result *o, char *why, size_t len)
{
	if (o->redis_lost && o->lost == 0 && o->reads_after_loss > 0 && o->degraded_queries > 0)
		return true;
	snprintf(why, len, "outage: Redis %s, %llu reads after it, %llu served by PostgreSQL, %llu lost",
	         o->redis_lost ? "went away" : "never went away", (unsigned long long)o->reads_after_loss,
	         (unsigned long long)o->degraded_queries, (unsigned long long)o->lost);
	return false;
}

void stampede_judge(const struct stampede_result *res, struct lab_verdict *v)
{
	const struct stampede_hot_result *h = res->hot;
	char why[512] = "";
	bool shown = herd_shown(&h[STAMPEDE_NONE], why, sizeof(why)) &&
	             lock_shown(&h[STAMPEDE_LOCK], why, sizeof(why)) &&
	             xfetch_shown(&h[STAMPEDE_XFETCH], why, sizeof(why)) &&
	             swr_shown(&h[STAMPEDE_SWR], why, sizeof(why)) &&
	             jitter_shown(res->jitter, why, sizeof(why)) &&
	             outage_shown(&res->outage, why, sizeof(why));
	lab_verdict_set(
	        v, shown,
	        "without protection every expiry sends the herd to the database; a lock, XFetch or "
	        "stale-while-revalidate make it one recompute, and TTL jitter spreads a mass expiry",
	        "%s%s%.0f recomputes per expiry unprotected vs %.1f with the lock, %.1f with XFetch, %.1f "
	        "with SWR (server log); jitter cut the peak per %d ms %.1fx for the same %llu recomputes; "
	        "Redis lost at %.1f s, %llu reads lost",
	        why, shown ? "" : ". ", h[STAMPEDE_NONE].recomputes_per_expiry,
	        h[STAMPEDE_LOCK].recomputes_per_expiry, h[STAMPEDE_XFETCH].recomputes_per_expiry,
	        h[STAMPEDE_SWR].recomputes_per_expiry, res->jitter[0].bucket_ms, jitter_fall(res->jitter),
	        (unsigned long long)res->jitter[1].recomputes, res->outage.redis_lost_at_s,
	        (unsigned long long)res->outage.lost);
}
