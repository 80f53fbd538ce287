/*
 * clients.c — one pattern under random load: readers and writers (threads, one blocking libpq
 * and one hiredis connection each) on cfg->keys products for cfg->run_ms, each choosing its key
 * at random. The pattern decides what a read does on a miss and what a write does after its
 * UPDATE; the injected gap is the same in every cache-aside variant (cfg->gap_ms between a
 * miss's DB read and its SET) so that the fixes face exactly the race the plain pattern loses.
 *
 * Writers stop first; readers finish the read in hand (its SET lands) and stop; a write-behind
 * worker then drains its stream; then every key is compared with its row.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"
#include "rng.h"

/* a reader pauses this long between reads: a busy read path, without spinning two shared cores */
#define READER_THINK_US 200
/* a writer pauses about this long between writes (uniform in [0.5, 1.5] x) */
#define WRITER_THINK_US 500
/* room for a writer's pending second DELs: writes within one dd_delay_ms, with margin */
#define DD_PENDING 512

struct load_run {
	struct cp *cp;
	const struct cache_patterns_config *cfg;
	enum cp_pattern p;
	_Atomic int64_t committed[CP_MAX_KEYS]; /* the newest version a writer committed (acked) */
	atomic_bool stop_writers, stop_readers, stop_worker;
	pthread_mutex_t mu;
	atomic_bool failed;
	const char *server;
	char err[LAB_ERRLEN];
};

struct client {
	struct load_run *run;
	PGconn *pg;
	redisContext *rc;
	uint64_t rng;
	struct hist lat;
	uint64_t ops, misses, stale, rejected;
	int dd_key[DD_PENDING];
	uint64_t dd_due[DD_PENDING];
	int ndd;
	int worker_rows;
};

const char *load_ns(enum cp_pattern p)
{
	static const char *const ns[CP_PATTERNS] = {"aside",  "ttl",     "dd",    "ver",
	                                            "update", "through", "behind"};
	return (unsigned)p < CP_PATTERNS ? ns[p] : "?";
}

static void run_fail(struct load_run *run, const char *server, const char *what, const char *err)
{
	pthread_mutex_lock(&run->mu);
	if (!atomic_load(&run->failed)) {
		snprintf(run->err, sizeof(run->err), "%s: %s", what, err);
		run->server = server;
		atomic_store(&run->failed, true);
	}
	pthread_mutex_unlock(&run->mu);
}

/* A failed call of client c: which server it lost, if the connection broke. */
static int client_fail(struct client *c, bool redis, const char *what, const char *err)
{
	run_fail(c->run, redis ? cp_redis_gone(c->rc) : cp_pg_gone(c->pg), what, err);
	return -1;
}

static void commit_seen(struct load_run *run, int k, int64_t v)
{
	int64_t cur = atomic_load(&run->committed[k]);
	while (v > cur && !atomic_compare_exchange_weak(&run->committed[k], &cur, v))
		;
}

/* A miss: the row, then (cache-aside variants) the injected gap, then the pattern's SET. */
static int read_miss(struct client *c, const char *key, int k, int64_t *got)
{
	const struct cache_patterns_config *cfg = c->run->cfg;
	char err[LAB_ERRLEN];
	int64_t ver;
	int price;
	c->misses++;
	if (db_read(c->pg, k, &ver, &price, err, sizeof(err)) < 0)
		return client_fail(c, false, "read", err);
	enum cp_pattern p = c->run->p;
	if (p <= CP_ASIDE_VERSION)
		hist_sleep_us(1000LL * cfg->gap_ms);
	int r;
	bool set = true;
	if (p == CP_ASIDE_VERSION || p == CP_BEHIND) /* write-behind: never over a newer acked write */
		r = cache_vset(c->rc, key, ver, price, false, &set, err, sizeof(err));
	else
		r = cache_set(c->rc, key, ver, price, p == CP_ASIDE_TTL ? cfg->ttl_ms : 0, err, sizeof(err));
	if (r < 0)
		return client_fail(c, true, "fill", err);
	c->rejected += !set;
	*got = ver;
	return 0;
}

static int read_once(struct client *c, int k, int64_t *got)
{
	char key[128], err[LAB_ERRLEN];
	struct cval v;
	cp_key(key, sizeof(key), load_ns(c->run->p), k);
	if (cache_get(c->rc, key, &v, err, sizeof(err)) < 0)
		return client_fail(c, true, "GET", err);
	if (v.kind == CVAL_VALUE) {
		*got = v.version;
		return 0;
	}
	return read_miss(c, key, k, got);
}

/* Second DELs that are due (all of them when flush). */
static int dd_run(struct client *c, bool flush)
{
	uint64_t now = hist_now_us();
	int kept = 0;
	for (int i = 0; i < c->ndd; i++) {
		if (!flush && c->dd_due[i] > now) {
			c->dd_key[kept] = c->dd_key[i];
			c->dd_due[kept++] = c->dd_due[i];
			continue;
		}
		if (flush && c->dd_due[i] > now) {
			hist_sleep_us(1000LL * ((int)((c->dd_due[i] - now) / 1000 + 1)));
			now = hist_now_us();
		}
		char key[128], err[LAB_ERRLEN];
		cp_key(key, sizeof(key), load_ns(c->run->p), c->dd_key[i]);
		if (cache_del(c->rc, key, err, sizeof(err)) < 0)
			return client_fail(c, true, "second DEL", err);
	}
	c->ndd = kept;
	return 0;
}

/* After the UPDATE committed: what the pattern does to the cache. */
static int write_cache(struct client *c, const char *key, int k, int64_t ver, int price)
{
	const struct cache_patterns_config *cfg = c->run->cfg;
	char err[LAB_ERRLEN];
	bool set;
	int r = 0;
	switch (c->run->p) {
	case CP_ASIDE_DD:
		if (c->ndd < DD_PENDING) {
			c->dd_key[c->ndd] = k;
			c->dd_due[c->ndd++] = hist_now_us() + (uint64_t)cfg->dd_delay_ms * 1000;
		}
		__attribute__((fallthrough)); /* the first DEL now */
	case CP_ASIDE:
	case CP_ASIDE_TTL:
		r = cache_del(c->rc, key, err, sizeof(err));
		break;
	case CP_ASIDE_VERSION:
		r = cache_vset(c->rc, key, ver, 0, true, &set, err, sizeof(err));
		break;
	case CP_UPDATE:
		/* the writer's gap: between its commit and its SET */
		hist_sleep_us(1000LL * cfg->gap_ms);
		__attribute__((fallthrough));
	case CP_THROUGH:
		r = cache_set(c->rc, key, ver, price, 0, err, sizeof(err));
		break;
	default:
		break;
	}
	return r < 0 ? client_fail(c, true, "invalidate", err) : 0;
}

static int write_once(struct client *c, int k, int price)
{
	char key[128], err[LAB_ERRLEN];
	int64_t ver;
	cp_key(key, sizeof(key), load_ns(c->run->p), k);
	if (c->run->p == CP_BEHIND) {
		if (wb_write(c->rc, k, price, &ver, err, sizeof(err)) < 0)
			return client_fail(c, true, "write-behind write", err);
		commit_seen(c->run, k, ver); /* acknowledged: what the client was told */
		return 0;
	}
	if (db_update(c->pg, k, price, &ver, err, sizeof(err)) < 0)
		return client_fail(c, false, "UPDATE", err);
	commit_seen(c->run, k, ver);
	return write_cache(c, key, k, ver, price);
}

static void *reader_cb(void *arg)
{
	struct client *c = arg;
	struct load_run *run = c->run;
	while (!atomic_load(&run->stop_readers) && !atomic_load(&run->failed) && !lab_interrupted()) {
		int k = (int)(rng_next(&c->rng) % (uint64_t)run->cfg->keys);
		int64_t before = atomic_load(&run->committed[k]), got = 0;
		uint64_t t0 = hist_now_us();
		if (read_once(c, k, &got) < 0)
			break;
		hist_record(&c->lat, hist_now_us() - t0);
		c->ops++;
		c->stale += got < before;
		struct timespec ts = {0, READER_THINK_US * 1000L};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static void *writer_cb(void *arg)
{
	struct client *c = arg;
	struct load_run *run = c->run;
	while (!atomic_load(&run->stop_writers) && !atomic_load(&run->failed) && !lab_interrupted()) {
		if (dd_run(c, false) < 0)
			break;
		int k = (int)(rng_next(&c->rng) % (uint64_t)run->cfg->keys);
		int price = rng_between(&c->rng, 1, 100000);
		uint64_t t0 = hist_now_us();
		if (write_once(c, k, price) < 0)
			break;
		hist_record(&c->lat, hist_now_us() - t0);
		c->ops++;
		struct timespec ts = {0, (long)((0.5 + rng_unit(&c->rng)) * WRITER_THINK_US * 1000)};
		nanosleep(&ts, NULL);
	}
	if (!atomic_load(&run->failed))
		dd_run(c, true);
	return NULL;
}

/* The write-behind worker: flushes batches until told to stop and the stream is drained. */
static void *worker_cb(void *arg)
{
	struct client *c = arg;
	struct load_run *run = c->run;
	for (;;) {
		int entries = 0, rows = 0;
		char err[LAB_ERRLEN];
		if (atomic_load(&run->failed) || lab_interrupted())
			break;
		bool stopping = atomic_load(&run->stop_worker);
		if (wb_flush(c->rc, c->pg, "worker", ">", run->cfg->wb_batch, -1, &entries, &rows, err,
		             sizeof(err)) < 0) {
			client_fail(c, c->rc->err != 0, "flush", err);
			break;
		}
		c->worker_rows += rows;
		if (entries == 0 && stopping)
			break;
		if (entries == 0)
			hist_sleep_us(2000);
	}
	return NULL;
}

/* Client id of the run: the run's id-th connections (opened once by cp_open), a fresh histogram. */
static void client_open(struct load_run *run, struct client *c, int id, uint64_t stream)
{
	memset(c, 0, sizeof(*c));
	c->run = run;
	c->rng = rng_stream(run->cfg->seed, stream);
	hist_init(&c->lat);
	c->pg = run->cp->lpg[id];
	c->rc = run->cp->lrc[id];
}

/* Readers, writers (and the worker) started, the load timed, stopped in order, joined. */
static void load_drive(struct load_run *run, struct client *cl, int n, bool worker)
{
	const struct cache_patterns_config *cfg = run->cfg;
	pthread_t th[CP_MAX_CLIENTS];
	int started = 0, readers = cfg->readers, writers = cfg->writers;
	for (int i = 0; i < n; i++) {
		void *(*fn)(void *) = i < readers ? reader_cb : i < readers + writers ? writer_cb : worker_cb;
		if (pthread_create(&th[i], NULL, fn, &cl[i]) != 0) {
			run_fail(run, NULL, "threads", "cannot start a client thread");
			break;
		}
		started++;
	}
	uint64_t t0 = hist_now_us(), end = t0 + (uint64_t)cfg->run_ms * 1000;
	while (hist_now_us() < end && !atomic_load(&run->failed) && !lab_interrupted()) {
		cp_progress(cfg, cp_pattern_name(run->p), (double)(hist_now_us() - t0) / (end - t0));
		hist_sleep_us(50000);
	}
	atomic_store(&run->stop_writers, true);
	for (int i = readers; i < readers + writers && i < started; i++)
		pthread_join(th[i], NULL);
	atomic_store(&run->stop_readers, true);
	for (int i = 0; i < readers && i < started; i++)
		pthread_join(th[i], NULL);
	atomic_store(&run->stop_worker, true);
	if (worker && started == n)
		pthread_join(th[n - 1], NULL);
}

static void load_collect(struct load_run *run, struct client *cl, int n, struct cp_load_result *res)
{
	for (int i = 0; i < n; i++) {
		struct client *c = &cl[i];
		if (i < run->cfg->readers) {
			res->reads += c->ops;
			res->misses += c->misses;
			res->stale_reads += c->stale;
			res->rejected += c->rejected;
			hist_merge(&res->read_lat, &c->lat);
		} else if (i < run->cfg->readers + run->cfg->writers) {
			res->writes += c->ops;
			hist_merge(&res->write_lat, &c->lat);
		}
	}
}

/* After the load: keys stale now, and (the TTL's bound) ttl_ms later. */
static int load_count(struct cp *cp, enum cp_pattern p, struct cp_load_result *res, char *err, size_t errlen)
{
	const struct cache_patterns_config *cfg = cp->cfg;
	if (cp_count_stale(cp, load_ns(p), cfg->keys, &res->stale_keys, err, errlen) < 0)
		return -1;
	res->stale_keys_later = res->stale_keys;
	if (p == CP_ASIDE || p == CP_ASIDE_TTL) {
		hist_sleep_us(1000LL * (cfg->ttl_ms + CP_TTL_MARGIN_MS));
		if (cp_count_stale(cp, load_ns(p), cfg->keys, &res->stale_keys_later, err, errlen) < 0)
			return -1;
	}
	if (p == CP_BEHIND) {
		int64_t flushes;
		if (cp_sum_flushes(cp, &flushes, err, errlen) < 0)
			return -1;
		res->db_writes = (uint64_t)flushes;
	}
	return 0;
}

int load_run(struct cp *cp, enum cp_pattern p, struct cp_load_result *res, char *err, size_t errlen)
{
	const struct cache_patterns_config *cfg = cp->cfg;
	memset(res, 0, sizeof(*res));
	res->keys = cfg->keys;
	hist_init(&res->read_lat);
	hist_init(&res->write_lat);
	if (cp_reset(cp, err, errlen) < 0 || (p == CP_BEHIND && wb_group(cp->rc, err, errlen) < 0))
		return -1;
	struct load_run *run = calloc(1, sizeof(*run));
	int n = cfg->readers + cfg->writers + (p == CP_BEHIND), ret = -1;
	struct client *cl = calloc((size_t)n, sizeof(*cl));
	if (!run || !cl) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	run->cp = cp;
	run->cfg = cfg;
	run->p = p;
	pthread_mutex_init(&run->mu, NULL);
	for (int i = 0; i < n; i++)
		client_open(run, &cl[i], i, (uint64_t)p * 100 + (uint64_t)i);
	load_drive(run, cl, n, p == CP_BEHIND);
	if (atomic_load(&run->failed)) {
		snprintf(err, errlen, "%s %s", cp_pattern_name(p), run->err);
		cp_lost(cp, run->server);
	} else if (lab_interrupted()) {
		snprintf(err, errlen, "interrupted");
	} else {
		load_collect(run, cl, n, res);
		ret = load_count(cp, p, res, err, errlen);
	}
	pthread_mutex_destroy(&run->mu);
out:
	free(cl);
	free(run);
	return ret;
}
