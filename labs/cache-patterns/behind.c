/*
 * behind.c — write-behind: a write is acknowledged once Redis holds the value and the queue entry
 * (one Lua script: INCR the key's version, SET, XADD to a stream); a worker reads the stream
 * through a consumer group, keeps the newest version of each key in its batch (coalescing), writes
 * those rows, and XACKs. Then the crash: on a throwaway redis-server the lab starts (child.h),
 * the worker dies mid-flush and Redis is killed (SIGKILL) and restarted on the same port and
 * directory, without persistence and with AOF; a new worker claims what the dead one left
 * pending and drains the stream; acknowledged writes whose version never reached PostgreSQL are
 * the lost ones.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "child.h"
#include "internal.h"
#include "pg.h"
#include "redis.h"
#include "rng.h"

/* the largest batch a flush takes */
#define WB_MAX_BATCH 4096
/* AOF: fsync before every reply, so the lab's count repeats on every run (see docs) */
#define WB_APPENDFSYNC "always"
/* a SIGKILLed redis-server is gone within this long */
#define KILL_WAIT_MS 2000
/* a restarted redis-server replays a few hundred writes of AOF in milliseconds; this is ample */
#define LOADING_WAIT_MS 5000

int wb_group(redisContext *rc, char *err, size_t errlen)
{
	redisReply *r = redis_cmd(rc, err, errlen, "XGROUP CREATE %s %s $ MKSTREAM", WB_STREAM, WB_GROUP);
	if (r)
		return cp_reply_done(r, REDIS_REPLY_STATUS, "XGROUP CREATE", err, errlen);
	return strstr(err, "BUSYGROUP") && !rc->err ? 0 : -1;
}

int wb_write(redisContext *rc, int k, int price, int64_t *version, char *err, size_t errlen)
{
	char key[128], ver[128];
	cp_key(key, sizeof(key), "behind", k);
	cp_key(ver, sizeof(ver), "wb:ver", k);
	redisReply *r = redis_cmd(rc, err, errlen, "EVAL %s 3 %s %s %s %d %d", WB_WRITE_SCRIPT, key, ver,
	                          WB_STREAM, price, k);
	if (!r)
		return -1;
	int ret = 0;
	if (r->type != REDIS_REPLY_INTEGER) {
		snprintf(err, errlen, "the write-behind script returned no version");
		ret = -1;
	} else {
		*version = r->integer;
	}
	freeReplyObject(r);
	return ret;
}

/* One stream entry's fields k, v, p. -1 when they are missing or out of range. */
static int entry_parse(const redisReply *e, int *k, int64_t *v, int *p)
{
	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
	    e->element[1]->type != REDIS_REPLY_ARRAY)
		return -1; /* an id (XACK needs it) and the fields */
	const redisReply *f = e->element[1];
	*k = -1;
	for (size_t i = 0; i + 1 < f->elements; i += 2) {
		const char *name = f->element[i]->str, *val = f->element[i + 1]->str;
		if (!name || !val)
			return -1;
		if (!strcmp(name, "k"))
			*k = atoi(val);
		else if (!strcmp(name, "v"))
			*v = strtoll(val, NULL, 10);
		else if (!strcmp(name, "p"))
			*p = atoi(val);
	}
	return *k >= 0 && *k < CP_MAX_KEYS ? 0 : -1;
}

static int db_flush_row(PGconn *pg, int k, int64_t v, int p, char *err, size_t errlen)
{
	char ks[16], vs[24], ps[16];
	snprintf(ks, sizeof(ks), "%d", k);
	snprintf(vs, sizeof(vs), "%" PRId64, v);
	snprintf(ps, sizeof(ps), "%d", p);
	const char *params[] = {ks, ps, vs};
	PGresult *r =
	        pg_query(pg,
	                 "UPDATE " SCHEMA ".products SET price_cents = $2::int, version = $3::bigint, "
	                 "flushes = flushes + 1 WHERE id = $1::int AND version < $3::bigint RETURNING 1",
	                 3, params, err, errlen);
	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

static int xack(redisContext *rc, const redisReply *entries, char *err, size_t errlen)
{
	size_t n = entries->elements;
	const char **argv = calloc(n + 3, sizeof(*argv));
	if (!argv) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	argv[0] = "XACK";
	argv[1] = WB_STREAM;
	argv[2] = WB_GROUP;
	for (size_t i = 0; i < n; i++)
		argv[i + 3] = entries->element[i]->element[0]->str;
	redisReply *r = redisCommandArgv(rc, (int)(n + 3), argv, NULL);
	free(argv);
	if (!r || r->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "XACK: %s", r ? r->str : rc->errstr);
		if (r)
			freeReplyObject(r);
		return -1;
	}
	/* every entry was pending for this consumer: XACK acknowledges them all */
	int ret = r->type == REDIS_REPLY_INTEGER && r->integer == (long long)n ? 0 : -1;
	if (ret < 0)
		snprintf(err, errlen, "XACK acknowledged %lld of %zu entries",
		         r->type == REDIS_REPLY_INTEGER ? r->integer : -1LL, n);
	freeReplyObject(r);
	return ret;
}

/* The newest version of each key in entries, written; *rows written. 1 when the worker died. */
static int flush_entries(PGconn *pg, const redisReply *entries, int die_after_rows, int *rows, char *err,
                         size_t errlen)
{
	int64_t best_v[CP_MAX_KEYS] = {0};
	int best_p[CP_MAX_KEYS] = {0};
	for (size_t i = 0; i < entries->elements; i++) {
		int k, p = 0;
		int64_t v = 0;
		if (entry_parse(entries->element[i], &k, &v, &p) < 0) {
			snprintf(err, errlen, "a stream entry not in the lab's format");
			return -1;
		}
		if (v > best_v[k]) {
			best_v[k] = v;
			best_p[k] = p;
		}
	}
	for (int k = 0; k < CP_MAX_KEYS; k++) {
		if (!best_v[k])
			continue;
		if (die_after_rows >= 0 && *rows >= die_after_rows)
			return 1; /* killed mid-flush: rows written, nothing acknowledged */
		if (db_flush_row(pg, k, best_v[k], best_p[k], err, errlen) < 0)
			return -1;
		(*rows)++;
	}
	return 0;
}

int wb_flush(redisContext *rc, PGconn *pg, const char *consumer, const char *id, int count,
             int die_after_rows, int *entries, int *rows, char *err, size_t errlen)
{
	*entries = *rows = 0;
	redisReply *r = redis_cmd(rc, err, errlen, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s %s", WB_GROUP,
	                          consumer, count > WB_MAX_BATCH ? WB_MAX_BATCH : count, WB_STREAM, id);
	if (!r)
		return -1;
	int ret = 0;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY &&
	    r->element[0]->elements == 2 && r->element[0]->element[1]->type == REDIS_REPLY_ARRAY) {
		const redisReply *list = r->element[0]->element[1];
		*entries = (int)list->elements;
		if (*entries > 0) {
			ret = flush_entries(pg, list, die_after_rows, rows, err, errlen);
			if (ret == 0)
				ret = xack(rc, list, err, errlen);
		}
	} else if (r->type != REDIS_REPLY_NIL) {
		snprintf(err, errlen, "XREADGROUP returned an unexpected reply");
		ret = -1;
	}
	freeReplyObject(r);
	return ret < 0 ? -1 : 0;
}

int wb_claim(redisContext *rc, const char *consumer, int *claimed, char *err, size_t errlen)
{
	*claimed = 0;
	redisReply *r = redis_cmd(rc, err, errlen, "XAUTOCLAIM %s %s %s 0 0-0 COUNT %d", WB_STREAM, WB_GROUP,
	                          consumer, WB_MAX_BATCH);
	if (!r)
		return -1;
	int ret = 0;
	if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && r->element[1]->type == REDIS_REPLY_ARRAY)
		*claimed = (int)r->element[1]->elements;
	else {
		snprintf(err, errlen, "XAUTOCLAIM returned an unexpected reply");
		ret = -1;
	}
	freeReplyObject(r);
	return ret;
}

/* ---- the throwaway redis-server ---- */

struct wb_server {
	char program[PATH_MAX];
	char dir[PATH_MAX];
	char data[PATH_MAX + 8];
	int port;
	struct child child;
	redisContext *rc;
};

static int server_start(struct wb_server *s, bool aof, char *err, size_t errlen)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", s->port);
	const char *argv[] = {
	        s->program,     "--port", port, "--bind",       "127.0.0.1",        "--dir",
	        s->data,        "--save", "",   "--appendonly", aof ? "yes" : "no", "--appendfsync",
	        WB_APPENDFSYNC, NULL};
	struct child_spec spec = {.name = "redis-server", .argv = argv, .dir = s->data, .port = s->port};
	if (child_start(&s->child, &spec, err, errlen) < 0)
		return -1;
	char url[64];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", s->port);
	if (!(s->rc = redis_connect_url(url, REDIS_TIMEOUT_MS, err, errlen)))
		return -1;
	/* a restarted server answers LOADING until it has replayed its AOF */
	uint64_t until = hist_now_us() + LOADING_WAIT_MS * 1000ULL;
	for (;;) {
		redisReply *r = redis_cmd(s->rc, err, errlen, "PING");
		if (r) {
			if (cp_reply_done(r, REDIS_REPLY_STATUS, "PING", err, errlen) < 0)
				return -1;
			break;
		}
		if (s->rc->err || !strstr(err, "LOADING") || hist_now_us() > until)
			return -1;
		hist_sleep_us(5000);
	}
	return wb_group(s->rc, err, errlen);
}

/* SIGKILL: no shutdown, no last write; then reaped. */
static void server_kill(struct wb_server *s)
{
	if (s->rc) {
		redisFree(s->rc);
		s->rc = NULL;
	}
	if (s->child.pid > 0) {
		kill(s->child.pid, SIGKILL);
		uint64_t until = hist_now_us() + KILL_WAIT_MS * 1000ULL;
		while (child_running(&s->child) && hist_now_us() < until)
			hist_sleep_us(5000);
	}
	child_stop(&s->child, 0);
}

static int server_open(struct wb_server *s, char *err, size_t errlen)
{
	const char *const dirs[] = {"/usr/bin", "/usr/local/bin", "/usr/sbin", NULL};
	char tried[512];
	if (child_find_program("redis-server", "LAB_REDIS_SERVER", dirs, s->program, sizeof(s->program),
	                       tried, sizeof(tried)) < 0) {
		snprintf(err, errlen, "write-behind needs redis-server: tried %s", tried);
		return -1;
	}
	if (child_tmpdir("cache-patterns", s->dir, sizeof(s->dir), err, errlen) < 0)
		return -1;
	if ((s->port = child_free_port(err, errlen)) < 0)
		return -1;
	return 0;
}

/* ---- the crash ---- */

/* Acknowledged writes, key by key in turn: acked[k] is the newest version the client was told. */
static int crash_writes(struct cp *cp, struct wb_server *s, struct cp_crash *res, int64_t *acked, char *err,
                        size_t errlen)
{
	const struct cache_patterns_config *cfg = cp->cfg;
	uint64_t rng = rng_stream(cfg->seed, 900 + res->aof);
	for (int i = 0; i < cfg->wb_writes; i++) {
		int k = i % cfg->keys;
		if (wb_write(s->rc, k, rng_between(&rng, 1, 100000), &acked[k], err, errlen) < 0)
			return -1;
		res->acked++;
	}
	return 0;
}

/* The worker: one batch flushed and acknowledged, then it dies halfway through the next. */
static int crash_worker(struct cp *cp, struct wb_server *s, struct cp_crash *res, char *err, size_t errlen)
{
	int entries, rows;
	if (wb_flush(s->rc, cp->wconn, "worker", ">", cp->cfg->wb_batch, -1, &entries, &rows, err, errlen) <
	    0)
		return -1;
	res->flushed_before = entries;
	if (wb_flush(s->rc, cp->wconn, "worker", ">", cp->cfg->wb_batch, cp->cfg->keys / 2, &entries, &rows,
	             err, errlen) < 0)
		return -1;
	res->db_rows_at_kill = rows;
	return 0;
}

/* After the restart: the dead worker's pending entries claimed, then the rest, all flushed. */
static int crash_recover(struct cp *cp, struct wb_server *s, struct cp_crash *res, char *err, size_t errlen)
{
	int claimed, entries, rows;
	if (wb_claim(s->rc, "rescuer", &claimed, err, errlen) < 0)
		return -1;
	const char *ids[] = {"0", ">"};
	for (int i = 0; i < 2; i++) {
		do {
			if (wb_flush(s->rc, cp->wconn, "rescuer", ids[i], cp->cfg->wb_batch, -1, &entries,
			             &rows, err, errlen) < 0)
				return -1;
			res->recovered_entries += entries;
		} while (entries > 0);
	}
	return 0;
}

/* Acknowledged writes whose version the row never reached (versions are 1..n per key). */
static int crash_count(struct cp *cp, struct cp_crash *res, const int64_t *acked, char *err, size_t errlen)
{
	for (int k = 0; k < cp->cfg->keys; k++) {
		int64_t v;
		int price;
		if (db_read(cp->conn, k, &v, &price, err, errlen) < 0)
			return -1;
		if (acked[k] > v)
			res->lost += (int)(acked[k] - v);
	}
	return 0;
}

static int crash_once(struct cp *cp, struct wb_server *s, struct cp_crash *res, char *err, size_t errlen)
{
	int64_t acked[CP_MAX_KEYS] = {0};
	if (cp_reset(cp, err, errlen) < 0 || server_start(s, res->aof, err, errlen) < 0 ||
	    crash_writes(cp, s, res, acked, err, errlen) < 0 || crash_worker(cp, s, res, err, errlen) < 0)
		return -1;
	server_kill(s);
	if (server_start(s, res->aof, err, errlen) < 0 || crash_recover(cp, s, res, err, errlen) < 0)
		return -1;
	return crash_count(cp, res, acked, err, errlen);
}

/* Coalescing: coalesce_per writes to each key queued, then one flush: rows written by the server. */
static int coalesce(struct cp *cp, struct wb_server *s, struct cache_patterns_result *res, char *err,
                    size_t errlen)
{
	const struct cache_patterns_config *cfg = cp->cfg;
	if (cp_reset(cp, err, errlen) < 0 || redis_del_prefix(s->rc, PREFIX, NULL, err, errlen) < 0 ||
	    wb_group(s->rc, err, errlen) < 0)
		return -1;
	uint64_t rng = rng_stream(cfg->seed, 990);
	res->coalesce_keys = cfg->keys;
	for (int i = 0; i < cfg->coalesce_per; i++)
		for (int k = 0; k < cfg->keys; k++) {
			int64_t v;
			if (wb_write(s->rc, k, rng_between(&rng, 1, 100000), &v, err, errlen) < 0)
				return -1;
			res->coalesce_client_writes++;
		}
	int entries, rows;
	if (wb_flush(s->rc, cp->wconn, "worker", ">", res->coalesce_client_writes, -1, &entries, &rows, err,
	             errlen) < 0)
		return -1;
	int64_t flushes;
	if (cp_sum_flushes(cp, &flushes, err, errlen) < 0)
		return -1;
	res->coalesce_db_writes = (int)flushes;
	return 0;
}

static int crash_both(struct cp *cp, struct wb_server *s, struct cache_patterns_result *res, char *err,
                      size_t errlen)
{
	for (int aof = 0; aof < 2; aof++) {
		char sub[PATH_MAX + 8];
		snprintf(sub, sizeof(sub), "%s/%s", s->dir, aof ? "aof" : "none");
		if (mkdir(sub, 0700) < 0) {
			snprintf(err, errlen, "cannot make %s", sub);
			return -1;
		}
		snprintf(s->data, sizeof(s->data), "%s", sub);
		res->crash[aof] = (struct cp_crash){.aof = aof};
		cp_progress(cp->cfg, "write-behind crash", 0.4 * aof);
		if (crash_once(cp, s, &res->crash[aof], err, errlen) < 0)
			return -1;
		if (aof == 0)
			server_kill(s);
	}
	redisReply *r = redis_cmd(s->rc, err, errlen, "INFO server");
	if (!r)
		return -1;
	const char *v = r->type == REDIS_REPLY_STRING ? strstr(r->str, "redis_version:") : NULL;
	snprintf(res->redis_server, sizeof(res->redis_server), "%.*s", v ? (int)strcspn(v + 14, "\r\n") : 1,
	         v ? v + 14 : "?");
	freeReplyObject(r);
	cp_progress(cp->cfg, "write-behind coalescing", 0.9);
	return coalesce(cp, s, res, err, errlen);
}

int behind_open(struct cp *cp, char *err, size_t errlen)
{
	cp->wb = calloc(1, sizeof(*cp->wb));
	if (!cp->wb) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return server_open(cp->wb, err, errlen);
}

void behind_close(struct cp *cp)
{
	struct wb_server *s = cp->wb;
	if (!s)
		return;
	server_kill(s);
	char rerr[256];
	if (s->dir[0])
		child_rmtree(s->dir, rerr, sizeof(rerr));
	free(s);
	cp->wb = NULL;
}

int behind_crash(struct cp *cp, struct cache_patterns_result *res, char *err, size_t errlen)
{
	int ret = crash_both(cp, cp->wb, res, err, errlen);
	if (ret < 0 && cp_pg_gone(cp->conn))
		cp_lost(cp, "PostgreSQL");
	server_kill(cp->wb);
	return ret;
}
