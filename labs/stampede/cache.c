/*
 * cache.c — one client of the hot key: cache-aside in Redis, the value from PostgreSQL, and the
 * four ways to read it (no protection, a lock whose waiters wait, XFetch, stale-while-
 * revalidate). A client is a thread with its own blocking hiredis connection; its recomputes
 * borrow a connection from the app's pool. Nothing here prints.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"
#include "rng.h"

/* a client that lost Redis (phase 4) tries it again at most this often */
#define RECONNECT_EVERY_US 500000
/* XFetch: rand() is clamped here, so -ln(rand) <= 6.9 and no read recomputes more than
 * 6.9 x delta x beta before the expiry (a tiny rand() would recompute far too early) */
#define XFETCH_MIN_RAND 1e-3
/* a lock waiter gives up (a lost read) after this many lock lifetimes */
#define LOCK_GIVE_UP 3
/* lock tokens: 16 random bytes from the kernel, 32 hex digits */
#define TOKEN_BYTES 16
#define TOKEN_LEN   (2 * TOKEN_BYTES + 1)

static void atomic_max(atomic_int *m, int v)
{
	int cur = atomic_load(m);
	while (v > cur && !atomic_compare_exchange_weak(m, &cur, v))
		;
}

static int cached_parse(const char *s, struct cached *v)
{
	long long e, g, x, d, so;
	int n = 0;
	if (sscanf(s, "%lld|%lld|%lld|%lld|%lld|%n", &e, &g, &x, &d, &so, &n) != 5 || n == 0)
		return -1;
	v->epoch = e;
	v->gen = g;
	v->expiry_us = x;
	v->delta_us = d;
	v->soft_us = so;
	snprintf(v->value, sizeof(v->value), "%s", s + n);
	return 0;
}

void cached_format(const struct cached *v, char *out, size_t outlen)
{
	snprintf(out, outlen, "%lld|%lld|%lld|%lld|%lld|%s", (long long)v->epoch, (long long)v->gen,
	         (long long)v->expiry_us, (long long)v->delta_us, (long long)v->soft_us, v->value);
}

/* Phase 4: Redis failed under this client: drop the connection, remember the first words said. */
static void client_lost_redis(struct client *c, const char *why)
{
	struct hot_run *run = c->run;
	if (c->rc) {
		redisFree(c->rc);
		c->rc = NULL;
	}
	c->next_reconnect_us = hist_now_us() + RECONNECT_EVERY_US;
	pthread_mutex_lock(&run->mu);
	if (!atomic_load(&run->redis_lost)) {
		snprintf(run->redis_error, sizeof(run->redis_error), "%s", why);
		run->redis_lost_us = hist_now_us();
		atomic_store(&run->redis_lost, true);
	}
	pthread_mutex_unlock(&run->mu);
}

/*
 * A checked Redis command for a client. NULL with *gone = true when the connection failed in
 * phase 4 (the client has dropped it and degrades); NULL with *gone = false when the run failed:
 * an error reply (Redis said no to a command the lab relies on), or Redis lost outside phase 4.
 */
static redisReply *client_cmd(struct client *c, bool *gone, const char *fmt, ...)
{
	*gone = false;
	if (fault_interrupted(&c->run->fault))
		return NULL;
	if (!c->rc) {
		*gone = true;
		return NULL;
	}
	va_list ap;
	va_start(ap, fmt);
	redisReply *reply = redisvCommand(c->rc, fmt, ap);
	va_end(ap);
	if (!reply) {
		int e = errno;
		char why[160];
		redis_error_text(c->rc, e, why, sizeof(why));
		if (c->run->degrade) {
			client_lost_redis(c, why);
			*gone = true;
		} else {
			fault_set(&c->run->fault, "Redis", "%s", why);
		}
		return NULL;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		fault_set(&c->run->fault, NULL, "Redis replied with an error: %.*s",
		          (int)(reply->len > 400 ? 400 : reply->len), reply->str);
		freeReplyObject(reply);
		return NULL;
	}
	return reply;
}

/* Runs the hot statement on a pooled connection; *query_us: its round trip, the wait excluded. */
static int recompute_query(struct hot_run *run, const char *const *params, struct cached *v,
                           int64_t *query_us)
{
	char err[512];
	PGconn *conn = pgset_borrow(run->app, BORROW_TIMEOUT_MS, err, sizeof(err));
	if (!conn) {
		fault_set(&run->fault, NULL, "recompute: %s", err);
		return -1;
	}
	if (fault_failed(&run->fault)) { /* another client ended the run while this one waited */
		pgset_return(run->app, conn);
		return -1;
	}
	uint64_t t0 = hist_now_us();
	PGresult *res = PQexecParams(conn, HOT_SQL, 2, NULL, params, NULL, NULL, 0);
	*query_us = (int64_t)(hist_now_us() - t0);
	int ret = -1;
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pg_message_line(err, sizeof(err), res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
		fault_set(&run->fault, stp_pg_gone(conn), "recompute failed: %s", err);
	} else if (PQntuples(res) != 1) {
		fault_set(&run->fault, NULL, "recompute returned %d rows, expected 1", PQntuples(res));
	} else {
		v->gen = atoll(PQgetvalue(res, 0, 0));
		snprintf(v->value, sizeof(v->value), "%s", PQgetvalue(res, 0, 1));
		ret = 0;
	}
	PQclear(res);
	pgset_return(run->app, conn);
	return ret;
}

int client_recompute(struct client *c, int64_t replaces, struct cached *v)
{
	struct hot_run *run = c->run;
	char runs[16], reps[24];
	snprintf(runs, sizeof(runs), "%d", run->run_id);
	snprintf(reps, sizeof(reps), "%lld", (long long)replaces);
	const char *params[] = {runs, reps};
	atomic_max(&run->peak_in_flight, atomic_fetch_add(&run->in_flight, 1) + 1);
	int64_t query_us = 0;
	int r = recompute_query(run, params, v, &query_us);
	int64_t t1 = stp_wall_us();
	atomic_fetch_sub(&run->in_flight, 1);
	if (r < 0)
		return -1;
	c->recomputes++;
	v->epoch = replaces >= 0 ? replaces + 1 : 0;
	/* XFetch's delta: the query's round trip, the wait for a pooled connection excluded (a wait
	 * would make the next value's delta, and so its early window, as long as a herd's queue) */
	v->delta_us = query_us;
	v->expiry_us = t1 + (int64_t)run->cfg->ttl_ms * 1000;
	v->soft_us = v->expiry_us;
	return 0;
}

int store_px(const struct hot_run *run)
{
	const struct stampede_config *cfg = run->cfg;
	return run->defence == STAMPEDE_SWR ? cfg->ttl_ms + cfg->stale_ms : cfg->ttl_ms;
}

int client_store_px(struct client *c, const struct cached *v, int px)
{
	char buf[256];
	cached_format(v, buf, sizeof(buf));
	bool gone;
	redisReply *reply = client_cmd(c, &gone, "EVAL %s 2 %s %s %s %d %lld", STORE_SCRIPT, HOT_KEY,
	                               HOT_EPOCH, buf, px, (long long)v->epoch);
	if (!reply)
		return gone ? 1 : -1;
	freeReplyObject(reply);
	return 0;
}

/* The newest epoch written into c->last_epoch, once the value is found gone: the epoch that
 * expired. 0, 1 when Redis is gone (phase 4), -1 when the run failed. */
static int client_get_epoch(struct client *c)
{
	bool gone;
	redisReply *reply = client_cmd(c, &gone, "GET %s", HOT_EPOCH);
	if (!reply)
		return gone ? 1 : -1;
	if (reply->type == REDIS_REPLY_STRING)
		c->last_epoch = atoll(reply->str);
	freeReplyObject(reply);
	return 0;
}

/* GET: 0 with *hit, 1 when Redis is gone (phase 4), -1 when the run failed. */
static int client_get(struct client *c, struct cached *v, bool *hit)
{
	bool gone;
	*hit = false;
	redisReply *reply = client_cmd(c, &gone, "GET %s", HOT_KEY);
	if (!reply)
		return gone ? 1 : -1;
	int ret = 0;
	if (reply->type == REDIS_REPLY_STRING) {
		if (cached_parse(reply->str, v) < 0) {
			fault_set(&c->run->fault, NULL, "the cached value is not in the lab's format");
			ret = -1;
		} else {
			*hit = true;
			c->last_epoch = v->epoch;
		}
	} else if (reply->type != REDIS_REPLY_NIL) {
		fault_set(&c->run->fault, NULL, "GET returned neither a string nor nil");
		ret = -1;
	}
	freeReplyObject(reply);
	return ret == 0 && !*hit ? client_get_epoch(c) : ret;
}

/* Recomputes and stores; the value is served even if storing it found Redis gone. */
static int recompute_and_store(struct client *c, int64_t replaces, struct cached *v)
{
	if (client_recompute(c, replaces, v) < 0)
		return -1;
	c->last_epoch = v->epoch;
	return client_store_px(c, v, store_px(c->run)) < 0 ? -1 : 0;
}

/* SET NX PX with a fresh token: 0 with *locked, 1 when Redis is gone, -1 when the run failed. */
static int lock_take(struct client *c, char *token, bool *locked)
{
	*locked = false;
	if (rng_token(token, TOKEN_LEN, TOKEN_BYTES) < 0) {
		fault_set(&c->run->fault, NULL, "cannot read random bytes for a lock token");
		return -1;
	}
	bool gone;
	redisReply *reply = client_cmd(c, &gone, "SET %s %s NX PX %d", HOT_LOCK, token, c->run->cfg->lock_ms);
	if (!reply)
		return gone ? 1 : -1;
	*locked = reply->type == REDIS_REPLY_STATUS;
	freeReplyObject(reply);
	return 0;
}

/* Deletes the lock only if it still holds our token: a holder whose lock expired must not
 * delete the next holder's. */
static int lock_release(struct client *c, const char *token)
{
	bool gone;
	redisReply *reply =
	        client_cmd(c, &gone, "EVAL %s 1 %s %s",
	                   "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
	                   "else return 0 end",
	                   HOT_LOCK, token);
	if (!reply)
		return gone ? 1 : -1;
	freeReplyObject(reply);
	return 0;
}

/*
 * One read with each defence. Returns 0 (v holds the value, *served_us when it was in hand; 0
 * for a lost read), 1 when Redis went away before a value was found, -1 when the run failed.
 */
static int read_none(struct client *c, struct cached *v, uint64_t *served_us)
{
	bool hit;
	int r = client_get(c, v, &hit);
	if (r != 0)
		return r;
	if (!hit) {
		c->hard_misses++;
		c->db_waits++;
		if (recompute_and_store(c, c->last_epoch, v) < 0)
			return -1;
	}
	*served_us = hist_now_us();
	return 0;
}

/* The lock is held by another client: poll the cache for its value, at most one lock lifetime.
 * 0 with *hit, 1 when Redis is gone, -1 when the run failed. */
static int lock_wait(struct client *c, struct cached *v, bool *hit)
{
	const struct stampede_config *cfg = c->run->cfg;
	uint64_t until = hist_now_us() + (uint64_t)cfg->lock_ms * 1000;
	*hit = false;
	while (hist_now_us() < until) {
		hist_sleep_us((int64_t)cfg->lock_poll_ms * 1000);
		int r = client_get(c, v, hit);
		if (r != 0 || *hit)
			return r;
	}
	return 0;
}

static int read_lock(struct client *c, struct cached *v, uint64_t *served_us)
{
	bool hit;
	int r = client_get(c, v, &hit);
	if (r != 0 || hit) {
		*served_us = hist_now_us();
		return r;
	}
	c->hard_misses++;
	c->db_waits++;
	uint64_t give_up = hist_now_us() + (uint64_t)LOCK_GIVE_UP * c->run->cfg->lock_ms * 1000;
	while (hist_now_us() < give_up) {
		char token[TOKEN_LEN];
		bool locked;
		if ((r = lock_take(c, token, &locked)) != 0)
			return r;
		if (locked) {
			/* someone may have written between our miss and our lock: look again first (a
			 * miss now names the epoch that expired, which may be a later one) */
			if ((r = client_get(c, v, &hit)) != 0)
				return r;
			if (!hit && recompute_and_store(c, c->last_epoch, v) < 0)
				return -1;
			/* released, or Redis went away and the lock goes with it: the value is in hand */
			if (lock_release(c, token) < 0)
				return -1;
			*served_us = hist_now_us();
			return 0;
		}
		c->lock_busy++;
		if ((r = lock_wait(c, v, &hit)) != 0 || hit) {
			*served_us = hist_now_us();
			return r;
		}
	}
	c->lost++;
	*served_us = 0;
	return 0;
}

static int read_xfetch(struct client *c, struct cached *v, uint64_t *served_us)
{
	bool hit;
	int r = client_get(c, v, &hit);
	if (r != 0)
		return r;
	if (!hit) {
		c->hard_misses++;
		c->db_waits++;
		if (recompute_and_store(c, c->last_epoch, v) < 0)
			return -1;
	} else {
		double u = rng_unit(&c->rng);
		if (u < XFETCH_MIN_RAND)
			u = XFETCH_MIN_RAND;
		/* now - delta * beta * ln(rand) >= expiry: recompute early, alone, while others serve */
		double early = -(double)v->delta_us * c->run->cfg->beta * log(u);
		if ((double)stp_wall_us() + early >= (double)v->expiry_us) {
			c->db_waits++;
			if (recompute_and_store(c, v->epoch, v) < 0)
				return -1;
		}
	}
	*served_us = hist_now_us();
	return 0;
}

/* SWR: a stale value was served; refresh it unless another client holds the lock. 0, or -1
 * when the run failed (Redis gone in phase 4: the refresh waits for Redis). */
static int swr_refresh(struct client *c)
{
	char token[TOKEN_LEN];
	bool locked, hit;
	int r = lock_take(c, token, &locked);
	if (r != 0)
		return r < 0 ? -1 : 0;
	if (!locked) {
		c->lock_busy++;
		return 0;
	}
	struct cached now;
	if ((r = client_get(c, &now, &hit)) != 0)
		return r < 0 ? -1 : 0;
	/* refresh unless someone did between our read and our lock; what it replaces is what is
	 * there now (on a slow machine, a later value may have gone stale since ours) */
	if (!(hit && stp_wall_us() < now.soft_us) &&
	    recompute_and_store(c, hit ? now.epoch : c->last_epoch, &now) < 0)
		return -1;
	return lock_release(c, token) < 0 ? -1 : 0;
}

static int read_swr(struct client *c, struct cached *v, uint64_t *served_us)
{
	bool hit;
	int r = client_get(c, v, &hit);
	if (r != 0)
		return r;
	if (!hit) {
		/* past the stale window too: nothing to serve, so this read waits */
		c->hard_misses++;
		c->db_waits++;
		if (recompute_and_store(c, c->last_epoch, v) < 0)
			return -1;
		*served_us = hist_now_us();
		return 0;
	}
	*served_us = hist_now_us();
	if (stp_wall_us() < v->soft_us)
		return 0;
	/* stale: it is served (the read is over), and one client refreshes behind it */
	c->stale_reads++;
	return swr_refresh(c);
}

/* Redis is gone for this client (phase 4): the read goes straight to PostgreSQL. */
static int read_degraded(struct client *c, struct cached *v, uint64_t *served_us)
{
	if (client_recompute(c, REPLACES_DEGRADED, v) < 0)
		return -1;
	c->recomputes--; /* a read served from the database, not a recompute of the cache */
	c->db_waits++;
	*served_us = hist_now_us();
	return 0;
}

static void client_try_reconnect(struct client *c)
{
	uint64_t now = hist_now_us();
	if (c->rc || now < c->next_reconnect_us)
		return;
	c->reconnects++;
	c->next_reconnect_us = now + RECONNECT_EVERY_US;
	char err[256];
	c->rc = redis_connect_url(c->run->client_url, REDIS_TIMEOUT_MS, err, sizeof(err));
}

static int read_once(struct client *c, struct cached *v, uint64_t *served_us)
{
	static int (*const readers[])(struct client *, struct cached *, uint64_t *) = {
	        [STAMPEDE_NONE] = read_none,
	        [STAMPEDE_LOCK] = read_lock,
	        [STAMPEDE_XFETCH] = read_xfetch,
	        [STAMPEDE_SWR] = read_swr,
	};
	if (c->run->degrade)
		client_try_reconnect(c);
	if (c->rc) {
		int r = readers[c->run->defence](c, v, served_us);
		if (r != 1)
			return r;
	}
	return read_degraded(c, v, served_us);
}

/* Connects, then waits at the gate: every client starts reading at the same moment. */
static void client_connect_and_wait(struct client *c)
{
	struct hot_run *run = c->run;
	char err[256];
	c->rc = redis_connect_url(run->client_url, REDIS_TIMEOUT_MS, err, sizeof(err));
	if (!c->rc && run->degrade)
		fault_set(&run->fault, NULL, "cannot connect to Redis through the proxy: %s", err);
	else if (!c->rc)
		fault_set(&run->fault, "Redis", "%s", err);
	pthread_mutex_lock(&run->mu);
	run->connected++;
	pthread_cond_broadcast(&run->gate);
	while (!run->go)
		pthread_cond_wait(&run->gate, &run->mu);
	pthread_mutex_unlock(&run->mu);
}

void *client_main_cb(void *arg)
{
	struct client *c = arg;
	struct hot_run *run = c->run;
	client_connect_and_wait(c);
	while (hist_now_us() < atomic_load(&run->deadline_us) && !fault_failed(&run->fault)) {
		struct cached v;
		uint64_t t0 = hist_now_us(), served = 0;
		if (read_once(c, &v, &served) < 0)
			break;
		if (served) {
			c->reads++;
			hist_record(&c->latency, served - t0);
			if (atomic_load(&run->redis_lost))
				c->reads_after_loss++;
		}
		/* think: uniform in [0.5, 1.5] x think_ms, so the clients do not march in step */
		hist_sleep_us((int64_t)((0.5 + rng_unit(&c->rng)) * run->cfg->think_ms * 1000));
	}
	return NULL;
}
