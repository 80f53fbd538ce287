/*
 * store.c — lab-cache-patterns' schema, its rows and its cache encoding: the source of truth in
 * PostgreSQL, the cached value in Redis ("V:<version>:<price>", or a writer's tombstone
 * "T:<version>"), and the count of keys whose cached value disagrees with the row.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"

/* The price must not go negative: the constraint write-through's DB-refuses fault runs into. */
#define SCHEMA_SQL                                                                                           \
	"CREATE TABLE " SCHEMA ".products (id int PRIMARY KEY, "                                             \
	"price_cents int NOT NULL CONSTRAINT price_not_negative CHECK (price_cents >= 0), "                  \
	"version bigint NOT NULL DEFAULT 0, flushes int NOT NULL DEFAULT 0)"

void cp_progress(const struct cache_patterns_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done < 0 ? 0 : done > 1 ? 1 : done, cfg->progress_arg);
}

const char *cp_pg_gone(const PGconn *c)
{
	return !c || PQstatus(c) == CONNECTION_BAD ? "PostgreSQL" : NULL;
}

const char *cp_redis_gone(const redisContext *c)
{
	return !c || c->err ? "Redis" : NULL;
}

void cp_lost(struct cp *cp, const char *server)
{
	if (server && !cp->lost[0])
		snprintf(cp->lost, sizeof(cp->lost), "%s", server);
}

int cp_reply_done(redisReply *r, int type, const char *what, char *err, size_t errlen)
{
	if (!r)
		return -1; /* redis_cmd wrote err: no reply, or an error reply */
	int ret = 0;
	if (r->type != type) {
		snprintf(err, errlen, "%s: unexpected reply type %d (expected %d)", what, r->type, type);
		ret = -1;
	}
	freeReplyObject(r);
	return ret;
}

int db_command(PGconn *c, const char *sql, char *err, size_t errlen)
{
	PGresult *r = PQexec(c, sql);
	int ret = 0;
	if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
		if (r && PQresultStatus(r) == PGRES_FATAL_ERROR)
			pg_message_line(err, errlen, PQresultErrorMessage(r));
		else if (r)
			snprintf(err, errlen, "%.40s...: %s, expected PGRES_COMMAND_OK", sql,
			         PQresStatus(PQresultStatus(r)));
		else
			pg_conn_error(c, err, errlen);
		ret = -1;
	}
	PQclear(r);
	return ret;
}

void cp_key(char *out, size_t outlen, const char *ns, int k)
{
	snprintf(out, outlen, PREFIX "%s:%d", ns, k);
}

struct cp *cp_open(const struct cache_patterns_config *cfg, char *lost, size_t lostlen, char *err,
                   size_t errlen)
{
	struct cp *cp = calloc(1, sizeof(*cp));
	if (!cp) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	cp->cfg = cfg;
	char e[LAB_ERRLEN];
	if (!(cp->conn = pg_connect(cfg->pg_url, e, sizeof(e))) ||
	    !(cp->wconn = pg_connect(cfg->pg_url, e, sizeof(e)))) {
		snprintf(lost, lostlen, "PostgreSQL");
		snprintf(err, errlen, "%s", e);
		goto fail;
	}
	if (!(cp->rc = redis_connect_url(cfg->redis_url, REDIS_TIMEOUT_MS, e, sizeof(e))) ||
	    !(cp->wrc = redis_connect_url(cfg->redis_url, REDIS_TIMEOUT_MS, e, sizeof(e)))) {
		snprintf(lost, lostlen, "Redis");
		snprintf(err, errlen, "%s", e);
		goto fail;
	}
	int clients = cfg->readers + cfg->writers + 1;
	for (int i = 0; i < clients; i++) {
		if (!(cp->lpg[i] = pg_connect(cfg->pg_url, e, sizeof(e)))) {
			snprintf(lost, lostlen, "PostgreSQL");
			snprintf(err, errlen, "%s", e);
			goto fail;
		}
		if (!(cp->lrc[i] = redis_connect_url(cfg->redis_url, REDIS_TIMEOUT_MS, e, sizeof(e)))) {
			snprintf(lost, lostlen, "Redis");
			snprintf(err, errlen, "%s", e);
			goto fail;
		}
	}
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "INSERT INTO " SCHEMA ".products (id, price_cents) SELECT g, 100 FROM "
	         "generate_series(0, %d) g",
	         cfg->keys - 1);
	if (pg_schema_create(cp->conn, SCHEMA, e, sizeof(e)) < 0 ||
	    db_command(cp->conn, SCHEMA_SQL, e, sizeof(e)) < 0 ||
	    db_command(cp->conn, sql, e, sizeof(e)) < 0 ||
	    redis_del_prefix(cp->rc, PREFIX, NULL, e, sizeof(e)) < 0) {
		snprintf(err, errlen, "setup: %s", e);
		goto fail;
	}
	return cp;
fail:
	cp_close(cp, e, sizeof(e));
	return NULL;
}

int cp_close(struct cp *cp, char *err, size_t errlen)
{
	if (!cp)
		return 0;
	int ret = 0;
	char e[LAB_ERRLEN];
	/* a connection the run broke is replaced for the teardown */
	redisContext *rc = cp->rc && !cp->rc->err ? cp->rc : NULL;
	redisContext *fresh =
	        rc ? NULL : redis_connect_url(cp->cfg->redis_url, REDIS_TIMEOUT_MS, e, sizeof(e));
	if ((rc || fresh) && redis_del_prefix(rc ? rc : fresh, PREFIX, NULL, e, sizeof(e)) < 0) {
		snprintf(err, errlen, "%s", e);
		ret = -1;
	}
	if (fresh)
		redisFree(fresh);
	if (pg_url_schema_drop(cp->cfg->pg_url, SCHEMA, e, sizeof(e)) < 0 && ret == 0) {
		snprintf(err, errlen, "%s", e);
		ret = -1;
	}
	if (cp->rc)
		redisFree(cp->rc);
	if (cp->wrc)
		redisFree(cp->wrc);
	if (cp->conn)
		PQfinish(cp->conn);
	if (cp->wconn)
		PQfinish(cp->wconn);
	for (int i = 0; i < CP_MAX_CLIENTS; i++) {
		if (cp->lpg[i])
			PQfinish(cp->lpg[i]);
		if (cp->lrc[i])
			redisFree(cp->lrc[i]);
	}
	free(cp);
	return ret;
}

int cp_reset(struct cp *cp, char *err, size_t errlen)
{
	if (db_command(cp->conn, "UPDATE " SCHEMA ".products SET price_cents = 100, version = 0, flushes = 0",
	               err, errlen) < 0) {
		cp_lost(cp, cp_pg_gone(cp->conn));
		return -1;
	}
	if (redis_del_prefix(cp->rc, PREFIX, NULL, err, errlen) < 0) {
		cp_lost(cp, cp_redis_gone(cp->rc));
		return -1;
	}
	return 0;
}

int db_update(PGconn *c, int k, int price, int64_t *version, char *err, size_t errlen)
{
	char ks[16], ps[16];
	snprintf(ks, sizeof(ks), "%d", k);
	snprintf(ps, sizeof(ps), "%d", price);
	const char *params[] = {ks, ps};
	return pg_query_int64(c,
	                      "UPDATE " SCHEMA ".products SET price_cents = $2::int, version = version + 1 "
	                      "WHERE id = $1::int RETURNING version",
	                      2, params, version, err, errlen);
}

int db_read(PGconn *c, int k, int64_t *version, int *price, char *err, size_t errlen)
{
	char ks[16];
	snprintf(ks, sizeof(ks), "%d", k);
	const char *params[] = {ks};
	PGresult *r = pg_query(c, "SELECT version, price_cents FROM " SCHEMA ".products WHERE id = $1::int",
	                       1, params, err, errlen);
	if (!r)
		return -1;
	int ret = -1;
	if (PQntuples(r) != 1) {
		snprintf(err, errlen, "product %d: %d rows, expected 1", k, PQntuples(r));
	} else {
		*version = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		*price = atoi(PQgetvalue(r, 0, 1));
		ret = 0;
	}
	PQclear(r);
	return ret;
}

static int cval_parse(const char *s, struct cval *v)
{
	long long ver;
	int price, n = 0;
	if (s[0] == 'T' && sscanf(s, "T:%lld%n", &ver, &n) == 1 && s[n] == '\0') {
		*v = (struct cval){CVAL_TOMB, ver, 0};
		return 0;
	}
	if (s[0] == 'V' && sscanf(s, "V:%lld:%d%n", &ver, &price, &n) == 2 && s[n] == '\0') {
		*v = (struct cval){CVAL_VALUE, ver, price};
		return 0;
	}
	return -1;
}

int cache_get(redisContext *rc, const char *key, struct cval *v, char *err, size_t errlen)
{
	redisReply *r = redis_cmd(rc, err, errlen, "GET %s", key);
	if (!r)
		return -1;
	int ret = 0;
	v->kind = CVAL_NONE;
	if (r->type == REDIS_REPLY_STRING) {
		if (cval_parse(r->str, v) < 0) {
			snprintf(err, errlen, "%s holds a value not in the lab's format", key);
			ret = -1;
		}
	} else if (r->type != REDIS_REPLY_NIL) {
		snprintf(err, errlen, "GET %s returned neither a string nor nil", key);
		ret = -1;
	}
	freeReplyObject(r);
	return ret;
}

int cache_set(redisContext *rc, const char *key, int64_t version, int price, int px_ms, char *err,
              size_t errlen)
{
	char val[64];
	snprintf(val, sizeof(val), "V:%" PRId64 ":%d", version, price);
	redisReply *r = px_ms > 0 ? redis_cmd(rc, err, errlen, "SET %s %s PX %d", key, val, px_ms)
	                          : redis_cmd(rc, err, errlen, "SET %s %s", key, val);
	return cp_reply_done(r, REDIS_REPLY_STATUS, "SET", err, errlen);
}

int cache_del(redisContext *rc, const char *key, char *err, size_t errlen)
{
	return cp_reply_done(redis_cmd(rc, err, errlen, "DEL %s", key), REDIS_REPLY_INTEGER, "DEL", err,
	                     errlen);
}

int cache_vset(redisContext *rc, const char *key, int64_t version, int price, bool tomb, bool *set, char *err,
               size_t errlen)
{
	char val[64], vs[24];
	if (tomb)
		snprintf(val, sizeof(val), "T:%" PRId64, version);
	else
		snprintf(val, sizeof(val), "V:%" PRId64 ":%d", version, price);
	snprintf(vs, sizeof(vs), "%" PRId64, version);
	redisReply *r = redis_cmd(rc, err, errlen, "EVAL %s 1 %s %s %s", VSET_SCRIPT, key, vs, val);
	if (!r)
		return -1;
	int ret = 0;
	if (r->type != REDIS_REPLY_INTEGER) {
		snprintf(err, errlen, "the versioned set returned no integer");
		ret = -1;
	} else {
		*set = r->integer == 1;
	}
	freeReplyObject(r);
	return ret;
}

int cp_key_stale(struct cp *cp, const char *ns, int k, bool *stale, char *err, size_t errlen)
{
	char key[128];
	struct cval v;
	int64_t ver;
	int price;
	cp_key(key, sizeof(key), ns, k);
	if (cache_get(cp->rc, key, &v, err, errlen) < 0) {
		cp_lost(cp, cp_redis_gone(cp->rc));
		return -1;
	}
	if (db_read(cp->conn, k, &ver, &price, err, errlen) < 0) {
		cp_lost(cp, cp_pg_gone(cp->conn));
		return -1;
	}
	*stale = v.kind == CVAL_VALUE && (v.version != ver || v.price != price);
	return 0;
}

int cp_count_stale(struct cp *cp, const char *ns, int keys, int *stale, char *err, size_t errlen)
{
	*stale = 0;
	for (int k = 0; k < keys; k++) {
		bool s;
		if (cp_key_stale(cp, ns, k, &s, err, errlen) < 0)
			return -1;
		*stale += s;
	}
	return 0;
}

int cp_sum_flushes(struct cp *cp, int64_t *sum, char *err, size_t errlen)
{
	if (pg_query_int64(cp->conn, "SELECT coalesce(sum(flushes), 0) FROM " SCHEMA ".products", 0, NULL,
	                   sum, err, errlen) < 0) {
		cp_lost(cp, cp_pg_gone(cp->conn));
		return -1;
	}
	return 0;
}
