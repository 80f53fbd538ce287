/*
 * through.c — write-through's two writes, and the second one failing. The client writes the row
 * and the cached value in the same request, in one order or the other; the lab makes one store
 * fail: PostgreSQL refuses the row (a CHECK the new price breaks: any constraint, trigger or
 * serialization failure does the same), or Redis is cut (common/proxy.h closes every connection
 * and refuses new ones). Each cell starts with every key cached and equal to its row, and counts
 * the keys whose cache disagrees with the row afterwards.
 */
#include <stdio.h>

#include "internal.h"
#include "pg.h"
#include "proxy.h"
#include "redis.h"

#define NS "wt-fail"

/* A proxy in front of the shared Redis, and the client's URL through it. */
static struct proxy *proxy_open(const struct cache_patterns_config *cfg, char *url, size_t urllen, char *err,
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

/* One write of key k in order; *ok: the client was told it succeeded. -1 only when the lab's
 * own step failed (not the injected fault). */
static int write_one(struct cp *cp, redisContext *rc, enum cp_order order, enum cp_fault fault, int k,
                     bool *ok, char *err, size_t errlen)
{
	char key[128], e[LAB_ERRLEN];
	cp_key(key, sizeof(key), NS, k);
	/* the DB refuses: a negative price breaks CHECK (price_cents >= 0) */
	int price = fault == CP_DB_REFUSES ? -1 : 500 + k;
	int64_t cur, ver;
	int cur_price;
	*ok = false;
	if (db_read(cp->wconn, k, &cur, &cur_price, err, errlen) < 0) {
		cp_lost(cp, cp_pg_gone(cp->wconn));
		return -1;
	}
	if (order == CP_CACHE_FIRST) {
		/* the new value, with the version the row will have */
		if (cache_set(rc, key, cur + 1, price, 0, e, sizeof(e)) < 0)
			return 0; /* the first write failed: the client is told, nothing changed */
		if (db_update(cp->wconn, k, price, &ver, e, sizeof(e)) < 0)
			return PQstatus(cp->wconn) == CONNECTION_OK ? 0 : -1;
	} else {
		if (db_update(cp->wconn, k, price, &ver, e, sizeof(e)) < 0)
			return PQstatus(cp->wconn) == CONNECTION_OK ? 0 : -1;
		if (cache_set(rc, key, ver, price, 0, e, sizeof(e)) < 0)
			return 0; /* committed, and the client is told it failed */
	}
	*ok = true;
	return 0;
}

/* One cell: every key cached, the fault set, wt_writes writes, the keys counted. */
static int cell(struct cp *cp, struct proxy *px, const char *url, enum cp_order order, enum cp_fault fault,
                struct cp_through_cell *res, char *err, size_t errlen)
{
	const struct cache_patterns_config *cfg = cp->cfg;
	int n = cfg->wt_writes < cfg->keys ? cfg->wt_writes : cfg->keys;
	if (cp_reset(cp, err, errlen) < 0)
		return -1;
	for (int k = 0; k < n; k++) {
		char key[128];
		cp_key(key, sizeof(key), NS, k);
		if (cache_set(cp->rc, key, 0, 100, 0, err, errlen) < 0)
			return -1;
	}
	redisContext *rc = redis_connect_url(url, REDIS_TIMEOUT_MS, err, errlen);
	if (!rc)
		return -1;
	if (fault == CP_REDIS_CUT && (proxy_refuse(px, true) < 0 || proxy_cut(px) < 0)) {
		snprintf(err, errlen, "the proxy did not cut Redis");
		redisFree(rc);
		return -1;
	}
	int ret = 0;
	res->writes = n;
	for (int k = 0; k < n && ret == 0; k++) {
		bool ok;
		ret = write_one(cp, rc, order, fault, k, &ok, err, errlen);
		res->told_ok += ok;
	}
	redisFree(rc);
	if (fault == CP_REDIS_CUT && proxy_refuse(px, false) < 0) {
		snprintf(err, errlen, "the proxy did not accept again");
		return -1;
	}
	return ret < 0 ? -1 : cp_count_stale(cp, NS, n, &res->inconsistent, err, errlen);
}

int through_failures(struct cp *cp, struct cache_patterns_result *res, char *err, size_t errlen)
{
	char url[1024];
	struct proxy *px = proxy_open(cp->cfg, url, sizeof(url), err, errlen);
	if (!px)
		return -1;
	int ret = 0;
	for (int o = 0; o < CP_ORDERS && ret == 0; o++)
		for (int f = 0; f < CP_FAULTS && ret == 0; f++)
			ret = cell(cp, px, url, (enum cp_order)o, (enum cp_fault)f, &res->through[o][f], err,
			           errlen);
	struct proxy_stats st;
	proxy_stats(px, &st);
	res->connections_cut = (int)(st.cut + st.refused); /* a connection not yet accepted is refused */
	proxy_free(px);
	return ret;
}
