/*
 * store.c — lab-invalidation's schema, the writer's one write, and the cache's warm-up and
 * check (the experiment is described in invalidation.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"
#include "internal.h"
#include "pg.h"
#include "redis.h"

/* One statement, so one transaction: the version bumped, a change number taken (what a
 * re-sync asks for), the write logged with its time; it returns once COMMIT is done. */
#define WRITE_SQL                                                                                            \
	"WITH u AS (UPDATE " SCHEMA ".products SET version = version + 1, price = $2::bigint, "              \
	"change_seq = nextval('" SCHEMA ".changes') WHERE id = $1::int RETURNING id, version, change_seq) "  \
	"INSERT INTO " SCHEMA ".writes SELECT id, version, change_seq, clock_timestamp() FROM u "            \
	"RETURNING version"

void inv_fail(struct inv *s, const char *server, const char *fmt, ...)
{
	pthread_mutex_lock(&s->mu);
	if (!atomic_load(&s->failed)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(s->err, sizeof(s->err), fmt, ap);
		va_end(ap);
		if (server)
			snprintf(s->lost, sizeof(s->lost), "%s", server);
		atomic_store(&s->failed, true);
	}
	pthread_mutex_unlock(&s->mu);
}

bool inv_failed(struct inv *s)
{
	if (lab_interrupted())
		inv_fail(s, NULL, "interrupted");
	return atomic_load(&s->failed);
}

int inv_report(struct inv *s, char *err, size_t errlen)
{
	pthread_mutex_lock(&s->mu);
	snprintf(err, errlen, "%s", s->err);
	pthread_mutex_unlock(&s->mu);
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

int64_t now_us(void)
{
	return (int64_t)hist_now_us();
}

void inv_progress(struct inv *s, const char *what, double done)
{
	if (s->cfg->progress_cb)
		s->cfg->progress_cb(what, done < 0 ? 0 : done > 1 ? 1 : done, s->cfg->progress_arg);
}

void key_product(char *out, size_t len, int id)
{
	snprintf(out, len, PREFIX "product:%d", id);
}

void key_versioned(char *out, size_t len, int64_t gen, int id, int64_t version)
{
	snprintf(out, len, PREFIX "g%" PRId64 ":product:%d:v%" PRId64, gen, id, version);
}

bool value_parse(const char *v, int64_t *version, int64_t *fill_us)
{
	long long ver, price, fill;
	if (!v || sscanf(v, "%lld:%lld:%lld", &ver, &price, &fill) != 3)
		return false;
	*version = ver;
	*fill_us = fill;
	return true;
}

static int schema_create(struct inv *s, char *err, size_t errlen)
{
	char sql[2048];
	if (pg_schema_create(s->conn, SCHEMA, err, errlen) < 0)
		return -1;
	snprintf(sql, sizeof(sql),
	         "CREATE TABLE " SCHEMA ".products (id int PRIMARY KEY, version bigint NOT NULL, "
	         "price bigint NOT NULL, change_seq bigint NOT NULL DEFAULT 0);"
	         "CREATE SEQUENCE " SCHEMA ".changes;"
	         "CREATE TABLE " SCHEMA ".writes (product int NOT NULL, version bigint NOT NULL, "
	         "change_seq bigint NOT NULL, committed_at timestamptz NOT NULL);"
	         "CREATE TABLE " SCHEMA ".namespace (gen bigint NOT NULL);"
	         "INSERT INTO " SCHEMA ".namespace VALUES (1);"
	         "INSERT INTO " SCHEMA ".products (id, version, price) "
	         "SELECT g, 1, 1000 + g FROM generate_series(0, %d) g;"
	         "CREATE FUNCTION " SCHEMA ".notify_change() RETURNS trigger LANGUAGE plpgsql AS $f$ "
	         "BEGIN PERFORM pg_notify('%s', NEW.id || ':' || NEW.version || ':' || NEW.change_seq); "
	         "RETURN NULL; END $f$;"
	         "CREATE TRIGGER products_notify AFTER UPDATE ON " SCHEMA ".products "
	         "FOR EACH ROW EXECUTE FUNCTION " SCHEMA ".notify_change();",
	         s->n - 1, s->channel);
	return pg_exec(s->conn, sql, err, errlen);
}

static void *spare_main(void *arg)
{
	struct inv *s = arg;
	s->spare = pg_connect(s->cfg->pg_url, s->spare_err, sizeof(s->spare_err));
	return NULL;
}

/* Starts opening the next writer's connection in a thread (or, without a thread, opens it here). */
static void spare_start(struct inv *s)
{
	s->spare = NULL;
	s->spare_pending = pthread_create(&s->spare_tid, NULL, spare_main, s) == 0;
	if (!s->spare_pending)
		spare_main(s);
}

/* The next writer's connection, once its thread is done: NULL and spare_err when it failed. */
static PGconn *spare_take(struct inv *s)
{
	if (s->spare_pending)
		pthread_join(s->spare_tid, NULL);
	s->spare_pending = false;
	PGconn *c = s->spare;
	s->spare = NULL;
	return c;
}

int store_open(struct inv *s, const struct invalidation_config *cfg, char *err, size_t errlen)
{
	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	s->n = cfg->products;
	pthread_mutex_init(&s->mu, NULL);
	snprintf(s->channel, sizeof(s->channel), "lab_invalidation_%d", (int)getpid());
	s->committed = calloc((size_t)s->n, sizeof(*s->committed));
	s->commit_us = calloc((size_t)s->n * RING, sizeof(*s->commit_us));
	s->deleted_us = calloc((size_t)s->n * RING, sizeof(*s->deleted_us));
	if (!s->committed || !s->commit_us || !s->deleted_us) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (int i = 0; i < s->n; i++)
		atomic_store(&s->committed[i], 1);
	if (!(s->conn = pg_connect(cfg->pg_url, err, errlen)) ||
	    !(s->wconn = pg_connect(cfg->pg_url, err, errlen))) {
		snprintf(s->lost, sizeof(s->lost), "PostgreSQL");
		return -1;
	}
	if (!(s->rc = redis_connect_url(cfg->redis_url, REDIS_TIMEOUT_MS, err, errlen))) {
		snprintf(s->lost, sizeof(s->lost), "Redis");
		return -1;
	}
	spare_start(s);
	if (schema_create(s, err, errlen) < 0)
		return -1;
	if (!(s->pool = pgset_open(cfg->pg_url, NULL, NULL, cfg->pg_pool, err, errlen)))
		return -1;
	return 0;
}

int store_close(struct inv *s, char *err, size_t errlen)
{
	int ret = 0;
	pgset_close(s->pool);
	if (s->rc && redis_del_prefix(s->rc, PREFIX, NULL, err, errlen) < 0)
		ret = -1;
	if (s->rc)
		redisFree(s->rc);
	char e2[LAB_ERRLEN];
	if (s->conn && pg_schema_drop(s->conn, SCHEMA, e2, sizeof(e2)) < 0) {
		if (ret == 0)
			snprintf(err, errlen, "%s", e2);
		ret = -1;
	} else if (!s->conn && pg_url_schema_drop(s->cfg->pg_url, SCHEMA, e2, sizeof(e2)) < 0 && ret == 0) {
		snprintf(err, errlen, "%s", e2);
		ret = -1;
	}
	PQfinish(s->conn);
	PQfinish(s->wconn);
	PQfinish(spare_take(s));
	free(s->committed);
	free(s->commit_us);
	free(s->deleted_us);
	pthread_mutex_destroy(&s->mu);
	return ret;
}

/* Every product's row, in one query: id, version, price. */
static PGresult *rows_all(struct inv *s)
{
	char err[LAB_ERRLEN];
	PGresult *res = pg_query(s->conn, "SELECT id, version, price FROM " SCHEMA ".products ORDER BY id", 0,
	                         NULL, err, sizeof(err));
	if (!res)
		inv_fail(s, pg_gone(s->conn), "reading the products: %s", err);
	else if (PQntuples(res) != s->n) {
		inv_fail(s, NULL, "expected %d products, found %d", s->n, PQntuples(res));
		PQclear(res);
		return NULL;
	}
	return res;
}

/* Reads the pipelined replies of n commands; fails on a missing reply or an error reply. */
static int replies_drain(struct inv *s, int n, const char *what)
{
	for (int i = 0; i < n; i++) {
		redisReply *r = NULL;
		if (redisGetReply(s->rc, (void **)&r) != REDIS_OK || !r || r->type == REDIS_REPLY_ERROR) {
			inv_fail(s, redis_gone(s->rc), "%s: %s", what,
			         r                  ? r->str
			         : s->rc->errstr[0] ? s->rc->errstr
			                            : "no reply");
			if (r)
				freeReplyObject(r);
			return -1;
		}
		freeReplyObject(r);
	}
	return 0;
}

int cache_reset(struct inv *s, bool warm, int ttl_ms)
{
	char err[LAB_ERRLEN];
	if (redis_del_prefix(s->rc, PREFIX, NULL, err, sizeof(err)) < 0) {
		inv_fail(s, redis_gone(s->rc), "clearing the cache: %s", err);
		return -1;
	}
	if (!warm)
		return 0;
	PGresult *res = rows_all(s);
	if (!res)
		return -1;
	for (int i = 0; i < s->n; i++) {
		char key[96];
		key_product(key, sizeof(key), atoi(PQgetvalue(res, i, 0)));
		redisAppendCommand(s->rc, "SET %s %s:%s:0 PX %d", key, PQgetvalue(res, i, 1),
		                   PQgetvalue(res, i, 2), ttl_ms);
	}
	PQclear(res);
	return replies_drain(s, s->n, "warming the cache");
}

/* The writer "dies" right after COMMIT returned: its session ends (the server sees the socket
 * close, as when a process dies) before anything else it meant to do; a new writer takes over
 * on the spare connection. */
static int writer_crash(struct inv *s)
{
	PQfinish(s->wconn);
	if (!(s->wconn = spare_take(s))) {
		inv_fail(s, "PostgreSQL", "the writer after the crash: %s", s->spare_err);
		return -1;
	}
	spare_start(s);
	return 0;
}

int writer_write(struct inv *s, int id, enum inv_method m, bool crash, int64_t *version)
{
	char idb[16], price[32], err[LAB_ERRLEN];
	snprintf(idb, sizeof(idb), "%d", id);
	snprintf(price, sizeof(price), "%d", 1000 + (int)(now_us() % 100000));
	const char *params[] = {idb, price};
	if (pg_query_int64(s->wconn, WRITE_SQL, 2, params, version, err, sizeof(err)) < 0) {
		inv_fail(s, pg_gone(s->wconn), "write: %s", err);
		return -1;
	}
	/* COMMIT returned: publish the time, then the version (a reader loads the version first) */
	atomic_store(&s->commit_us[(size_t)id * RING + (size_t)(*version % RING)], now_us());
	atomic_store(&s->committed[id], *version);
	if (crash)
		return writer_crash(s);
	if (m != M_DELETE)
		return 0;
	char key[96];
	key_product(key, sizeof(key), id);
	redisReply *r = redis_cmd(s->rc, err, sizeof(err), "DEL %s", key);
	if (!r) {
		inv_fail(s, redis_gone(s->rc), "delete after commit: %s", err);
		return -1;
	}
	freeReplyObject(r);
	return 0;
}

int stale_keys(struct inv *s, uint64_t *out)
{
	*out = 0;
	PGresult *res = rows_all(s);
	if (!res)
		return -1;
	for (int i = 0; i < s->n; i++) {
		char key[96];
		key_product(key, sizeof(key), i);
		redisAppendCommand(s->rc, "GET %s", key);
	}
	int ret = 0;
	for (int i = 0; i < s->n; i++) {
		redisReply *r = NULL;
		if (redisGetReply(s->rc, (void **)&r) != REDIS_OK || !r || r->type == REDIS_REPLY_ERROR) {
			inv_fail(s, redis_gone(s->rc), "checking the cache: %s", r ? r->str : s->rc->errstr);
			ret = -1;
		} else if (r->type == REDIS_REPLY_STRING && ret == 0) {
			int64_t v, fill;
			if (value_parse(r->str, &v, &fill) && v < atoll(PQgetvalue(res, i, 1)))
				(*out)++;
		}
		if (r)
			freeReplyObject(r);
		if (ret < 0)
			break;
	}
	PQclear(res);
	return ret;
}
