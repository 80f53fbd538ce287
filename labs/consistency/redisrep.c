/*
 * redisrep.c — phases 4-6 of lab-consistency: Redis replication with and without WAIT, a
 * replica cut off through common/proxy.h, and the quorum model on three redis-servers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "proxy.h"
#include "redis.h"
#include "rng.h"

const struct cons_quorum_rw CONS_QUORUM_RW[CONS_QUORUMS] = {{1, 1}, {2, 1}, {2, 2}, {3, 1}, {1, 3}};

/* The reply of a command that must answer an integer: -1 and err otherwise. */
static int cmd_int(redisContext *c, long long *out, char *err, size_t errlen, const char *fmt, const char *a,
                   const char *b)
{
	redisReply *r = redis_cmd(c, err, errlen, fmt, a, b);
	if (!r)
		return -1;
	int ok = r->type == REDIS_REPLY_INTEGER;
	if (ok)
		*out = r->integer;
	else
		snprintf(err, errlen, "%s: not an integer reply", fmt);
	freeReplyObject(r);
	return ok ? 0 : -1;
}

/* GET key on c: its value as a number, 0 when absent. */
static int get_num(redisContext *c, const char *key, long long *v, char *err, size_t errlen)
{
	redisReply *r = redis_cmd(c, err, errlen, "GET %s", key);
	if (!r)
		return -1;
	int ret = 0;
	if (r->type == REDIS_REPLY_STRING)
		*v = atoll(r->str);
	else if (r->type == REDIS_REPLY_NIL)
		*v = 0;
	else {
		snprintf(err, errlen, "GET %s: unexpected reply type %d", key, r->type);
		ret = -1;
	}
	freeReplyObject(r);
	return ret;
}

static int set_num(redisContext *c, const char *key, long long v, const char *px, char *err, size_t errlen)
{
	char val[32];
	snprintf(val, sizeof(val), "%lld", v);
	redisReply *r = px ? redis_cmd(c, err, errlen, "SET %s %s PX %s", key, val, px)
	                   : redis_cmd(c, err, errlen, "SET %s %s", key, val);
	if (!r)
		return -1;
	int ok = r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "OK");
	if (!ok)
		snprintf(err, errlen, "SET %s: not OK", key);
	freeReplyObject(r);
	return ok ? 0 : -1;
}

static int wait_replicas(redisContext *c, int n, int timeout_ms, long long *acked, char *err, size_t errlen)
{
	char ns[16], ts[16];
	snprintf(ns, sizeof(ns), "%d", n);
	snprintf(ts, sizeof(ts), "%d", timeout_ms);
	return cmd_int(c, acked, err, errlen, "WAIT %s %s", ns, ts);
}

/* ---- 4. WAIT ---- */

static int wait_row(const struct cons_ctx *x, struct cons_redis_rw *row, bool wait, char *err, size_t errlen)
{
	memset(row, 0, sizeof(*row));
	hist_init(&row->pair_us);
	for (int i = 0; i < x->cfg->redis_pairs && !lab_interrupted(); i++) {
		char key[64];
		snprintf(key, sizeof(key), CONS_PREFIX "ryw:%d", i % 16);
		long long v = (long long)hist_now_us(), acked = 1, got;
		uint64_t t0 = hist_now_us();
		/* a TTL: keys of an interrupted run die by themselves on the labenv primary */
		if (set_num(x->rp, key, v, "60000", err, errlen) < 0)
			return -1;
		if (wait && wait_replicas(x->rp, 1, x->cfg->wait_timeout_ms, &acked, err, errlen) < 0)
			return -1;
		if (get_num(x->rr, key, &got, err, errlen) < 0)
			return -1;
		hist_record(&row->pair_us, hist_now_us() - t0);
		row->pairs++;
		/* a WAIT that timed out told the client so: its read is not the guarantee's */
		row->stale += got != v && acked >= 1;
		row->wait_short += acked < 1;
	}
	return 0;
}

int cons_phase_wait(const void *c, void *r, char *err, size_t errlen)
{
	const struct cons_ctx *x = c;
	struct consistency_result *res = r;
	if (wait_row(x, &res->redis[0], false, err, errlen) < 0)
		return -1;
	return wait_row(x, &res->redis[1], true, err, errlen);
}

/* ---- 5. the cut ---- */

static int replicaof(redisContext *c, const char *host, const char *port, char *err, size_t errlen)
{
	redisReply *r = redis_cmd(c, err, errlen, "REPLICAOF %s %s", host, port);
	if (!r)
		return -1;
	int ok = r->type == REDIS_REPLY_STATUS;
	if (!ok)
		snprintf(err, errlen, "REPLICAOF %s %s: not a status reply (type %d)", host, port, r->type);
	freeReplyObject(r);
	return ok ? 0 : -1;
}

/* Waits (5 s at most) until node's INFO replication says master_link_status:up. */
static int link_up(redisContext *c, char *err, size_t errlen)
{
	uint64_t until = hist_now_us() + 5000000;
	for (;;) {
		redisReply *r = redis_cmd(c, err, errlen, "INFO replication");
		if (!r)
			return -1;
		bool up = r->type == REDIS_REPLY_STRING && strstr(r->str, "master_link_status:up");
		freeReplyObject(r);
		if (up)
			return 0;
		if (hist_now_us() > until) {
			snprintf(err, errlen,
			         "the cut phase's replica did not sync with its primary within 5 s");
			return -1;
		}
		hist_sleep_us(10000);
	}
}

static int cut_writes(const struct cons_ctx *x, struct cons_cut *cut, char *err, size_t errlen)
{
	redisContext *p = x->node[0].rc, *rep = x->node[1].rc;
	long long acked, got;
	for (int i = 0; i < x->cfg->cut_writes && !lab_interrupted(); i++) {
		long long v = 1000 + i;
		if (set_num(p, "cut", v, NULL, err, errlen) < 0)
			return -1;
		uint64_t t0 = hist_now_us();
		if (wait_replicas(p, 1, x->cfg->wait_timeout_ms, &acked, err, errlen) < 0)
			return -1;
		hist_record(&cut->wait_us, hist_now_us() - t0);
		if (get_num(rep, "cut", &got, err, errlen) < 0)
			return -1;
		cut->writes++;
		cut->wait_zero += acked == 0;
		cut->stale += got != v;
	}
	return 0;
}

int cons_phase_cut(const void *c, void *r, char *err, size_t errlen)
{
	const struct cons_ctx *x = c;
	struct cons_cut *cut = &((struct consistency_result *)r)->cut;
	memset(cut, 0, sizeof(*cut));
	hist_init(&cut->wait_us);
	struct proxy_config pc = {.upstream_host = "127.0.0.1", .upstream_port = x->node[0].port};
	struct proxy *px = proxy_start(&pc, err, errlen);
	if (!px)
		return -1;
	char port[16];
	snprintf(port, sizeof(port), "%d", proxy_port(px));
	long long acked = 0;
	int ret = -1;
	if (replicaof(x->node[1].rc, "127.0.0.1", port, err, errlen) < 0 ||
	    link_up(x->node[1].rc, err, errlen) < 0)
		goto out;
	if (set_num(x->node[0].rc, "cut", 1, NULL, err, errlen) < 0 ||
	    wait_replicas(x->node[0].rc, 1, CONS_REDIS_TIMEOUT_MS, &acked, err, errlen) < 0)
		goto out;
	cut->wait_before = (int)acked;
	/* the network between the primary and its replica goes away */
	if (proxy_refuse(px, true) < 0 || proxy_cut(px) < 0) {
		snprintf(err, errlen, "the proxy did not cut the replica off");
		goto out;
	}
	if (cut_writes(x, cut, err, errlen) < 0)
		goto out;
	/* and comes back: the replica catches up, WAIT counts it again */
	if (proxy_refuse(px, false) < 0 || link_up(x->node[1].rc, err, errlen) < 0 ||
	    wait_replicas(x->node[0].rc, 1, CONS_REDIS_TIMEOUT_MS, &acked, err, errlen) < 0)
		goto out;
	cut->wait_after_heal = (int)acked;
	ret = 0;
out:
	if (x->node[1].rc && !x->node[1].rc->err) {
		char rerr[LAB_ERRLEN];
		replicaof(x->node[1].rc, "NO", "ONE", rerr, sizeof(rerr));
	}
	proxy_free(px);
	return ret;
}

/* ---- 6. quorums ---- */

/* k distinct nodes of CONS_NODES, chosen by the RNG, as a bit mask. */
static unsigned pick(uint64_t *rng, int k)
{
	unsigned mask = 0;
	while (__builtin_popcount(mask) < k)
		mask |= 1u << rng_between(rng, 0, CONS_NODES - 1);
	return mask;
}

static int quorum_row(const struct cons_ctx *x, struct cons_quorum *q, int w, int r, uint64_t *rng, char *err,
                      size_t errlen)
{
	memset(q, 0, sizeof(*q));
	q->w = w;
	q->r = r;
	for (int n = 0; n < CONS_NODES; n++)
		if (set_num(x->node[n].rc, "q", 0, NULL, err, errlen) < 0)
			return -1;
	for (long long v = 1; v <= x->cfg->quorum_pairs && !lab_interrupted(); v++) {
		unsigned wm = pick(rng, w), rm = pick(rng, r);
		for (int n = 0; n < CONS_NODES; n++)
			if ((wm >> n & 1) && set_num(x->node[n].rc, "q", v, NULL, err, errlen) < 0)
				return -1;
		long long newest = 0, got;
		for (int n = 0; n < CONS_NODES; n++) {
			if (!(rm >> n & 1))
				continue;
			if (get_num(x->node[n].rc, "q", &got, err, errlen) < 0)
				return -1;
			newest = got > newest ? got : newest; /* the version is the value: newest wins */
		}
		q->pairs++;
		q->stale += newest != v;
	}
	return 0;
}

int cons_phase_quorum(const void *c, void *r, char *err, size_t errlen)
{
	const struct cons_ctx *x = c;
	struct consistency_result *res = r;
	uint64_t rng = rng_stream(x->cfg->seed, 6);
	for (int i = 0; i < CONS_QUORUMS; i++)
		if (quorum_row(x, &res->quorum[i], CONS_QUORUM_RW[i].w, CONS_QUORUM_RW[i].r, &rng, err,
		               errlen) < 0)
			return -1;
	return 0;
}
