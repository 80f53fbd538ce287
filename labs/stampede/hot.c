/*
 * hot.c — runs the hot key's clients (phases 1, 2 and 4): starts them at one gate, warms the
 * key, waits out the run (phase 4: takes Redis away through a proxy), joins them, and reads what
 * the server logged. Nothing here prints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "proxy.h"
#include "redis.h"
#include "rng.h"

/* 256 KiB stacks: a client's frames are small, and hundreds of default 8 MiB stacks are not */
#define CLIENT_STACK (256 * 1024)
/* the clients read this long before the value is computed again under their load */
#define SETTLE_MS 100

/* Opens the gate: clients start reading (or, with the run failed, leave at once). */
static void gate_open(struct hot_run *run, bool start_clock)
{
	pthread_mutex_lock(&run->mu);
	if (start_clock) {
		/* the deadline is set once the value was computed again under the clients' load */
		run->started_us = run->clock_us = hist_now_us();
		atomic_store(&run->deadline_us, UINT64_MAX);
	}
	run->go = true;
	pthread_cond_broadcast(&run->gate);
	pthread_mutex_unlock(&run->mu);
}

/* Starts the clients and waits until each has connected (or failed to). Returns how many started. */
static int clients_start(struct hot_run *run, struct client *clients, int n)
{
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, CLIENT_STACK);
	int started = 0;
	for (; started < n; started++) {
		struct client *c = &clients[started];
		c->run = run;
		c->rng = rng_stream(run->cfg->seed, started + 1);
		hist_init(&c->latency);
		if (pthread_create(&c->thread, &attr, client_main_cb, c) != 0) {
			fault_set(&run->fault, NULL, "cannot start a client thread");
			break;
		}
	}
	pthread_attr_destroy(&attr);
	pthread_mutex_lock(&run->mu);
	while (run->connected < started)
		pthread_cond_wait(&run->gate, &run->mu);
	pthread_mutex_unlock(&run->mu);
	return started;
}

/*
 * Computes the hot value outside the clients' count (logged as a warm-up) and stores it through
 * the lab's own Redis connection: for `lasting`, with ten times the TTL (it only has to last
 * until the value is computed again under the clients' load), else with the defence's TTL.
 */
static int warm_key(struct stampede *s, struct hot_run *run, bool lasting)
{
	struct client warm = {.run = run};
	struct cached v;
	if (client_recompute(&warm, REPLACES_WARM, &v) < 0)
		return -1; /* the fault says why */
	int px = store_px(run);
	if (lasting) {
		v.expiry_us += 9LL * run->cfg->ttl_ms * 1000;
		v.soft_us = v.expiry_us;
		px *= 10;
	}
	char buf[256], rerr[256];
	cached_format(&v, buf, sizeof(buf));
	if (fault_interrupted(&run->fault))
		return -1;
	redisReply *reply = redis_cmd(s->rc, rerr, sizeof(rerr), "EVAL %s 2 %s %s %s %d %lld", STORE_SCRIPT,
	                              HOT_KEY, HOT_EPOCH, buf, px, (long long)v.epoch);
	if (!reply) {
		fault_set(&run->fault, stp_redis_gone(s->rc), "%s", rerr);
		return -1;
	}
	freeReplyObject(reply);
	return 0;
}

/* Until the deadline: progress, and (phase 4) Redis taken away at outage_at_ms. */
static void hot_wait(struct hot_run *run, int (*take_away_cb)(void *), void *take_away_arg)
{
	const struct stampede_config *cfg = run->cfg;
	bool taken = false;
	while (hist_now_us() < atomic_load(&run->deadline_us) && !fault_failed(&run->fault) &&
	       !fault_interrupted(&run->fault)) {
		uint64_t now = hist_now_us();
		if (take_away_cb && !taken && now >= run->clock_us + (uint64_t)cfg->outage_at_ms * 1000) {
			taken = true;
			if (take_away_cb(take_away_arg) < 0)
				fault_set(&run->fault, NULL, "could not take Redis away");
		}
		stp_progress(cfg, stampede_defence_name(run->defence),
		             (double)(now - run->clock_us) / (cfg->run_ms * 1000.0));
		int64_t left = (int64_t)(atomic_load(&run->deadline_us) - now);
		int64_t nap = take_away_cb && !taken ? 10000 : 250000;
		hist_sleep_us(nap < left ? nap : left);
	}
}

/* Sums what the clients counted into res. */
static void hot_collect(struct hot_run *run, const struct client *clients, int n,
                        struct stampede_hot_result *res)
{
	for (int i = 0; i < n; i++) {
		const struct client *c = &clients[i];
		hist_merge(&res->latency, &c->latency);
		res->reads += c->reads;
		res->lost += c->lost;
		res->db_waits += c->db_waits;
		res->stale_reads += c->stale_reads;
		res->hard_misses += c->hard_misses;
		res->client_recomputes += c->recomputes;
		res->lock_busy += c->lock_busy;
		res->reads_after_loss += c->reads_after_loss;
		res->reconnect_attempts += c->reconnects;
	}
	res->peak_in_flight = atomic_load(&run->peak_in_flight);
	res->redis_lost = atomic_load(&run->redis_lost);
	if (res->redis_lost) {
		res->redis_lost_at_s = (run->redis_lost_us - run->started_us) / 1e6;
		snprintf(res->redis_error, sizeof(res->redis_error), "%s", run->redis_error);
	}
}

/* The run itself, once the clients wait at the gate: warm, go, wait, join. 0 or -1 and err. */
static int hot_drive(struct stampede *s, struct hot_run *run, struct client *clients, int started,
                     int (*take_away_cb)(void *), void *take_away_arg, char *err, size_t errlen)
{
	bool ready = !fault_failed(&run->fault);
	if (ready && log_begin(s, &run->run_id, run->origin, sizeof(run->origin), err, errlen) < 0) {
		fault_set(&run->fault, NULL, "%s", err);
		ready = false;
	}
	/* warm the key (epoch 0) before the clients start, as a running service would have it */
	if (ready && warm_key(s, run, true) < 0)
		ready = false; /* its fault says why */
	if (!ready) {
		gate_open(run, false);
	} else {
		gate_open(run, true);
		/* once the clients' load is on, the value is computed again, so its delta (XFetch's) is
		 * what a recompute costs under this load, as it would be in a running service; the
		 * first expiry comes a TTL after this */
		hist_sleep_us(SETTLE_MS * 1000);
		if (warm_key(s, run, false) == 0) {
			/* the run's clock starts SETTLE_MS before that value, however long a busy machine
			 * took to compute it: the first expiry (and phase 4's outage) keeps its place */
			run->clock_us = hist_now_us() - SETTLE_MS * 1000;
			atomic_store(&run->deadline_us, run->clock_us + (uint64_t)run->cfg->run_ms * 1000);
			hot_wait(run, take_away_cb, take_away_arg);
		}
	}
	for (int i = 0; i < started; i++)
		pthread_join(clients[i].thread, NULL);
	return fault_failed(&run->fault) ? fault_report(&run->fault, s, err, errlen) : 0;
}

/* One run of run->cfg->clients clients on the hot key, from the gate to the server's counts. */
static int hot_run_with(struct stampede *s, struct hot_run *run, int (*take_away_cb)(void *),
                        void *take_away_arg, struct stampede_hot_result *res, char *err, size_t errlen)
{
	const struct stampede_config *cfg = run->cfg;
	memset(res, 0, sizeof(*res));
	hist_init(&res->latency);
	res->defence = run->defence;
	res->clients = cfg->clients;
	int ret = -1;
	struct client *clients = calloc((size_t)cfg->clients, sizeof(*clients));
	if (!clients) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (redis_del_prefix(s->rc, PREFIX, NULL, err, errlen) < 0) {
		stampede_lost(s, stp_redis_gone(s->rc));
		goto out;
	}
	int started = clients_start(run, clients, cfg->clients);
	if (hot_drive(s, run, clients, started, take_away_cb, take_away_arg, err, errlen) < 0)
		goto out;
	res->run_s = (hist_now_us() - run->started_us) / 1e6;
	hot_collect(run, clients, cfg->clients, res);
	double lost_at = res->redis_lost ? res->redis_lost_at_s : res->run_s;
	if (log_hot(s, run->run_id, run->origin, cfg->bucket_ms, lost_at, res->run_s, res, err, errlen) < 0)
		goto out;
	/* the clients' own count must agree with the server's log */
	if (res->client_recomputes != res->recomputes) {
		snprintf(err, errlen, "the clients counted %llu recomputes, the server logged %llu",
		         (unsigned long long)res->client_recomputes, (unsigned long long)res->recomputes);
		goto out;
	}
	ret = 0;
out:
	for (int i = 0; i < cfg->clients; i++)
		if (clients[i].rc)
			redisFree(clients[i].rc);
	free(clients);
	char derr[256];
	if (redis_del_prefix(s->rc, PREFIX, NULL, derr, sizeof(derr)) < 0 && ret == 0) {
		stampede_lost(s, stp_redis_gone(s->rc));
		snprintf(err, errlen, "%s", derr);
		ret = -1;
	}
	return ret;
}

static void hot_run_init(struct hot_run *run, struct stampede *s, const struct stampede_config *cfg,
                         enum stampede_defence defence, const char *client_url, bool degrade)
{
	memset(run, 0, sizeof(*run));
	run->cfg = cfg;
	run->defence = defence;
	run->client_url = client_url;
	run->degrade = degrade;
	run->app = s->app;
	fault_init(&run->fault);
	pthread_mutex_init(&run->mu, NULL);
	pthread_cond_init(&run->gate, NULL);
}

static void hot_run_destroy(struct hot_run *run)
{
	fault_destroy(&run->fault);
	pthread_cond_destroy(&run->gate);
	pthread_mutex_destroy(&run->mu);
}

int hot_run(struct stampede *s, const struct stampede_config *cfg, enum stampede_defence defence,
            struct stampede_hot_result *res, char *err, size_t errlen)
{
	struct stampede_config xc = *cfg;
	if (defence == STAMPEDE_XFETCH) {
		/* its first expiry comes at the same point of the run as the others' */
		xc.ttl_ms = cfg->xfetch_ttl_ms;
		xc.run_ms = cfg->run_ms + cfg->xfetch_ttl_ms - cfg->ttl_ms;
	}
	struct hot_run run;
	hot_run_init(&run, s, &xc, defence, cfg->redis_url, false);
	int ret = hot_run_with(s, &run, NULL, NULL, res, err, errlen);
	hot_run_destroy(&run);
	return ret;
}

/* A proxy in front of cfg->redis_url, and the clients' URL through it (user, password, db kept). */
static struct proxy *outage_proxy(const struct stampede_config *cfg, char *url, size_t urllen, char *err,
                                  size_t errlen)
{
	struct redis_url u;
	if (redis_url_parse(cfg->redis_url, &u, err, errlen) < 0)
		return NULL;
	struct proxy_config pc = {.upstream_host = u.host, .upstream_port = u.port};
	struct proxy *p = proxy_start(&pc, err, errlen);
	redis_url_free(&u);
	if (p && redis_url_with_endpoint(cfg->redis_url, "127.0.0.1", proxy_port(p), url, urllen, err,
	                                 errlen) < 0) {
		proxy_free(p);
		p = NULL;
	}
	return p;
}

/* Redis goes away: the proxy closes every open connection and refuses new ones. */
static int take_redis_away_cb(void *arg)
{
	struct proxy *p = arg;
	if (proxy_refuse(p, true) < 0)
		return -1;
	return proxy_cut(p) < 0 ? -1 : 0;
}

int outage_run(struct stampede *s, const struct stampede_config *cfg, struct stampede_hot_result *res,
               int *cut, char *err, size_t errlen)
{
	char url[1024];
	struct proxy *p = outage_proxy(cfg, url, sizeof(url), err, errlen);
	if (!p)
		return -1;
	struct stampede_config oc = *cfg;
	oc.run_ms = cfg->outage_run_ms;
	struct hot_run run;
	hot_run_init(&run, s, &oc, STAMPEDE_LOCK, url, true);
	int ret = hot_run_with(s, &run, take_redis_away_cb, p, res, err, errlen);
	hot_run_destroy(&run);
	struct proxy_stats st;
	proxy_stats(p, &st);
	*cut = (int)st.cut;
	proxy_free(p);
	return ret;
}
