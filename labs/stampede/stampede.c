/*
 * stampede.c — lab-stampede's run and judge: setup, the four phases in order (each with the
 * question --predict asks before it), teardown; then the claim and every threshold it is held
 * to. The phases' work is in hot.c (the hot key's clients) and jitter.c (many keys); the schema
 * and the server's log in store.c. Nothing here prints.
 */
#include <errno.h>
#include <math.h>
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
	/* hundreds of readers of one key; 40 with --quick keep the herd plain and the run short */
	cfg->clients = quick ? 40 : 200;
	/* 2 connections: the two cores PostgreSQL has here. HikariCP's cores x 2 + spindles assumes
	 * a database with the machine to itself; this one shares two cores with the clients, Redis
	 * and other labs, so more connections only queue on the CPU, and recomputes that slow each
	 * other down make XFetch's early recompute outlive its delta: at a load average of 12 to 17
	 * we measured up to 30 recomputes at one expiry with 4 connections, at most 3 with 2 */
	cfg->pg_pool = 2;
	/* 50,000 orders: the hot aggregation costs about 10-15 ms here alone (30,000 with --quick:
	 * 6-10 ms), tens of ms under load */
	cfg->rows = quick ? 30000 : 50000;
	/* 0: a client pauses about one recompute between reads (see THINK_MIN_MS) */
	cfg->think_ms = 0;
	/* 2 s (300 ms with --quick): short enough that a run sees several expiries (--quick: one) */
	cfg->ttl_ms = quick ? 300 : 2000;
	/* XFetch's TTL, 2 s (1.2 s with --quick): XFetch goes early by about
	 * beta x delta x ln(reads/s x beta x delta), 800 ms with delta 50 ms (a busy machine's), and a
	 * TTL near that recomputes every few reads, so it must be long against that */
	cfg->xfetch_ttl_ms = quick ? 1200 : 2000;
	/* --quick runs 650 ms: the first expiry comes at the settle (100 ms) + a recompute + 300 ms,
	 * with room for a slow recompute and the reads after it; XFetch's run is longer by as much
	 * as its TTL */
	cfg->run_ms = quick ? 650 : 5000;
	/* 3 s: a hundred recomputes, so a live holder keeps its lock even on a machine that stalls
	 * it for a second or two */
	cfg->lock_ms = 3000;
	cfg->lock_poll_ms = 5;
	/* beta 3, not the paper's 1: a reader that goes early is followed, while its recompute runs
	 * for delta', by about e^(delta' / (beta x delta)) - 1 others. On this shared 2-core machine a
	 * recompute can take several times its last one: at delta' = 4 x delta that is 53 more at
	 * beta 1, 6 at beta 2 and 2.8 at beta 3. The price is going early by beta x delta x
	 * ln(reads/s x beta x delta), which XFetch's TTL must be long against */
	cfg->beta = 3.0;
	/* stale values may be served for up to 5 s past the soft TTL */
	cfg->stale_ms = 5000;
	/* a thousand keys (200 with --quick) warmed at once */
	cfg->keys = quick ? 200 : 1000;
	/* TTL 200 ms + up to 600 ms of jitter (1 s + up to 2 s): the jitter spreads the wave over
	 * the 7 (21) intervals of 100 ms its expiries can fall in */
	cfg->key_ttl_ms = quick ? 200 : 1000;
	cfg->jitter_ms = quick ? 600 : 2000;
	/* 8 readers, each with a share of the keys, recomputing through the app's pool: enough that
	 * a reader busy with its share of a wave does not delay its next look by a bucket */
	cfg->sweepers = 8;
	/* each key read every 10 ms: an expiry is seen within one bucket */
	cfg->sweep_ms = 10;
	cfg->bucket_ms = 100;
	/* Redis goes away before the first expiry, and the run goes on without it */
	cfg->outage_at_ms = quick ? 200 : 1500;
	cfg->outage_run_ms = quick ? 500 : 3000;
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

bool fault_interrupted(struct fault *f)
{
	if (!lab_interrupted())
		return false;
	fault_set(f, NULL, "interrupted");
	return true;
}

int fault_report(struct fault *f, struct stampede *s, char *err, size_t errlen)
{
	pthread_mutex_lock(&f->mu);
	snprintf(err, errlen, "%s", f->err);
	stampede_lost(s, f->server);
	pthread_mutex_unlock(&f->mu);
	return -1;
}

const char *stp_pg_gone(const PGconn *c)
{
	return !c || PQstatus(c) == CONNECTION_BAD ? "PostgreSQL" : NULL;
}

const char *stp_redis_gone(const redisContext *c)
{
	return !c || c->err ? "Redis" : NULL;
}

void stampede_lost(struct stampede *s, const char *server)
{
	if (server && !s->lost[0])
		snprintf(s->lost, sizeof(s->lost), "%s", server);
}

int64_t stp_wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void stp_progress(const struct stampede_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done < 0 ? 0 : done > 1 ? 1 : done, cfg->progress_arg);
}

/* ---- the run ---- */

/*
 * think_ms 0: a client pauses, on average, as long as the hot query takes alone (measured at
 * setup), within these bounds. The herd is the reads that arrive while the first client that
 * missed recomputes, clients x recompute / pause: with a pause as long as a recompute it is about
 * every client on a fast machine as on a busy one. A fixed pause could not be both: 20 ms makes a
 * herd of a third of the clients on an idle machine (a recompute of 6 to 10 ms), and 8 ms floods a
 * busy one with reads that starve the recompute itself (XFetch then saw bursts of 35 duplicates
 * at one expiry, against 9 at most at 20 ms).
 */
#define THINK_MIN_MS 5
#define THINK_MAX_MS 20

/* What the phases share: the config (with the pause resolved) and what setup opened. */
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
	if (jitter_run(x->s, x->cfg, false, &r->jitter[0], err, errlen) < 0)
		return -1;
	return jitter_run(x->s, x->cfg, true, &r->jitter[1], err, errlen);
}

static int phase_outage(const void *ctx, void *result, char *err, size_t errlen)
{
	const struct run_ctx *x = ctx;
	struct stampede_result *r = result;
	return outage_run(x->s, x->cfg, &r->outage, &r->connections_cut, err, errlen);
}

/*
 * ---- what --predict asks before each phase (struct lab_question), and what answers it ----
 * Each reads struct stampede_config (what main.c and the tests hold) and struct stampede_result.
 */

#define CFG(p) ((const struct stampede_config *)(p))
#define RES(p) ((const struct stampede_result *)(p))

static double q_clients(const void *cfg, int i)
{
	(void)i;
	return CFG(cfg)->clients;
}

/* recomputes per expiry of one defence, NAN when its run saw no expiry */
static double per_expiry(const void *res, enum stampede_defence d)
{
	const struct stampede_hot_result *h = &RES(res)->hot[d];
	return h->expiries >= 1 ? h->recomputes_per_expiry : NAN;
}

static double q_herd_measured(const void *cfg, const void *res)
{
	(void)cfg;
	return per_expiry(res, STAMPEDE_NONE);
}

/*
 * ±25%: the herd is the reads that arrive during the first recompute, clients x recompute /
 * pause, and a client pauses about one recompute: nearly every client (all 40 of 40 measured
 * with --quick). A faster recompute than usual lets a few clients through on the new value.
 */
static const struct lab_question Q_HERD = {
        .text = "{} clients read one hot key through cache-aside, and it expires, with no protection: "
                "how many of them recompute it at that expiry?",
        .given = q_clients,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "recomputes",
        .within_pct = 25,
        .measured = q_herd_measured,
        .why = "every client that reads while the first recompute runs misses too, and a recompute "
               "here lasts about a client's pause: nearly all of them (±25%)"};

static double q_lock_measured(const void *cfg, const void *res)
{
	(void)cfg;
	return per_expiry(res, STAMPEDE_LOCK);
}

static const struct lab_question Q_LOCK = {
        .text = "The same {} clients with a lock around the recompute (SET NX PX with a token; the "
                "others wait for the value): how many recomputes at each expiry?",
        .given = q_clients,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "recomputes",
        .measured = q_lock_measured,
        .why = "one client wins SET NX and recomputes; the others poll the cache and get its value. "
               "The price: they all wait for it (stale-while-revalidate does not)"};

static double q_jitter_given(const void *cfg, int i)
{
	const struct stampede_config *c = CFG(cfg);
	return i == 0 ? c->keys : i == 1 ? c->key_ttl_ms : c->jitter_ms;
}

static double q_jitter_measured(const void *cfg, const void *res)
{
	(void)cfg;
	return (double)RES(res)->jitter[1].recomputes;
}

static const struct lab_question Q_JITTER = {
        .text = "{} keys warmed at the same moment, each with a TTL of {} ms plus a random 0 to {} ms: "
                "how many recomputes in all when they expire?",
        .given = q_jitter_given,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "recomputes",
        .measured = q_jitter_measured,
        .why = "jitter spreads the expiries, it removes none: each key is recomputed once, as without "
               "it; what falls is the peak per 100 ms"};

static double q_outage_given(const void *cfg, int i)
{
	return i == 0 ? CFG(cfg)->outage_at_ms : CFG(cfg)->pg_pool;
}

/* undecided when Redis never went away: nothing was asked of the fallback */
static double q_outage_measured(const void *cfg, const void *res)
{
	(void)cfg;
	const struct stampede_hot_result *o = &RES(res)->outage;
	return o->redis_lost ? (double)o->lost : NAN;
}

static const struct lab_question Q_OUTAGE = {
        .text = "Redis goes away {} ms into a run; on a Redis error the app reads PostgreSQL through its "
                "pool of {} connections instead: how many reads are lost?",
        .given = q_outage_given,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "reads",
        .measured = q_outage_measured,
        .why = "a cache is an optimisation, not the source: every read becomes a query, slower, and the "
               "app's small pool keeps the herd from becoming a backend per client"};

static const struct lab_phase_def PHASES[STAMPEDE_PHASES] = {
        [STAMPEDE_PHASE_HERD] = {"herd", phase_herd, &Q_HERD},
        [STAMPEDE_PHASE_DEFENCES] = {"defences", phase_defences, &Q_LOCK},
        [STAMPEDE_PHASE_JITTER] = {"jitter", phase_jitter, &Q_JITTER},
        [STAMPEDE_PHASE_OUTAGE] = {"outage", phase_outage, &Q_OUTAGE},
};

int stampede_run(const struct stampede_config *cfg, struct stampede_result *res, char *err, size_t errlen)
{
	memset(res, 0, sizeof(*res));
	struct stampede *s =
	        store_open(cfg, &res->query_us, res->lost_server, sizeof(res->lost_server), err, errlen);
	if (!s)
		return -1;
	struct stampede_config run_cfg = *cfg;
	if (run_cfg.think_ms == 0) {
		int alone_ms = (int)(res->query_us / 1000 + 0.5);
		run_cfg.think_ms = alone_ms < THINK_MIN_MS   ? THINK_MIN_MS
		                   : alone_ms > THINK_MAX_MS ? THINK_MAX_MS
		                                             : alone_ms;
	}
	res->think_ms = run_cfg.think_ms;
	struct run_ctx x = {&run_cfg, s};
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
 * No protection: at least half the clients recompute at each expiry, on average. The herd is the
 * reads that arrive while the first missed read recomputes, clients x recompute / pause: every
 * client here, where a client pauses about one recompute alone (THINK_MIN_MS) and the recomputes
 * of a herd take longer than that; half leaves room for a recompute faster than the ones
 * measured at setup.
 */
#define HERD_MIN_FRACTION 0.5
/*
 * XFetch: the key never expires under its readers (no read finds it missing: XFetch's promise),
 * and on average fewer recomputes per expiry than the herd measured at the same load, by a
 * quarter at least. About e^(1/beta) = 1.4 are expected when a recompute takes what the last one
 * took; when it takes longer (delta') they grow as e^(delta' / (beta x delta)) (docs/stampede.md),
 * and on a machine starved for CPU the early recomputes then queue on the pool behind each other
 * and the next expiry's first one waits behind them: a cascade. On this 2-core machine we
 * measured means of 1 to 9 a run beside other builds (load averages of 6 to 11), and 1 to 25 (of
 * 40) with four CPU hogs added: three quarters of the herd is the bound that such a machine still
 * keeps, and it still fails a herd.
 */
#define XFETCH_MAX_OF_HERD 0.75
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

static bool xfetch_shown(const struct stampede_hot_result *xf, const struct stampede_hot_result *no,
                         char *why, size_t len)
{
	double most = XFETCH_MAX_OF_HERD * no->recomputes_per_expiry;
	if (xf->expiries >= 1 && xf->recomputes_per_expiry <= most && xf->hard_misses == 0)
		return true;
	snprintf(why, len,
	         "XFetch: %.1f recomputes per expiry over %d expiries (at most %.1f, three quarters of the "
	         "herd), %llu reads found the key missing (expected none)",
	         xf->recomputes_per_expiry, xf->expiries, most, (unsigned long long)xf->hard_misses);
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

double stampede_jitter_fall(const struct stampede_jitter_result *j)
{
	return j[1].peak > 0 ? j[0].peak / j[1].peak : 0;
}

static bool jitter_shown(const struct stampede_jitter_result *j, char *why, size_t len)
{
	double fall = stampede_jitter_fall(j);
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
	             xfetch_shown(&h[STAMPEDE_XFETCH], &h[STAMPEDE_NONE], why, sizeof(why)) &&
	             swr_shown(&h[STAMPEDE_SWR], why, sizeof(why)) &&
	             jitter_shown(res->jitter, why, sizeof(why)) &&
	             outage_shown(&res->outage, why, sizeof(why));
	lab_verdict_set(
	        v, shown,
	        "without protection every expiry sends the herd to the database; a lock or "
	        "stale-while-revalidate make it one recompute, XFetch refreshes it before it expires, and "
	        "TTL "
	        "jitter spreads a mass expiry",
	        "%s%s%.0f recomputes per expiry unprotected vs %.1f with the lock, %.1f with XFetch, %.1f "
	        "with SWR (server log); jitter cut the peak per %d ms %.1fx for the same %llu recomputes; "
	        "Redis lost at %.1f s, %llu reads lost",
	        why, shown ? "" : ". ", h[STAMPEDE_NONE].recomputes_per_expiry,
	        h[STAMPEDE_LOCK].recomputes_per_expiry, h[STAMPEDE_XFETCH].recomputes_per_expiry,
	        h[STAMPEDE_SWR].recomputes_per_expiry, res->jitter[0].bucket_ms,
	        stampede_jitter_fall(res->jitter), (unsigned long long)res->jitter[1].recomputes,
	        res->outage.redis_lost_at_s, (unsigned long long)res->outage.lost);
}
