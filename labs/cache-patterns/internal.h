/*
 * internal.h — what the files of lab-cache-patterns share (the experiment: cache_patterns.h).
 */
#ifndef LAB_CACHE_PATTERNS_INTERNAL_H
#define LAB_CACHE_PATTERNS_INTERNAL_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache_patterns.h"

#define SCHEMA "lab_cache_patterns"
#define PREFIX "lab:cache-patterns:"
/* far above a loopback round trip; short enough that a lost server ends the run promptly */
#define REDIS_TIMEOUT_MS 2000
/* the write-behind stream, its consumer group, and its version counters (one per key) */
#define WB_STREAM PREFIX "wb:stream"
#define WB_GROUP  "flushers"

/*
 * The versioned set: ARGV[1] the version, ARGV[2] the value ("V:<v>:<price>" or the writer's
 * tombstone "T:<v>"). Sets when the key is empty, holds an older version, or holds the tombstone
 * of this very version and the value is not a tombstone (a reader filling what a writer marked).
 * Returns 1 when it set, 0 when it refused.
 */
#define VSET_SCRIPT                                                                                          \
	"local cur = redis.call('get', KEYS[1]) "                                                            \
	"if cur then "                                                                                       \
	"local kind, ver = string.match(cur, '^(%a):(%d+)') "                                                \
	"ver = tonumber(ver) local new = tonumber(ARGV[1]) "                                                 \
	"if ver > new then return 0 end "                                                                    \
	"if ver == new and (kind == 'V' or string.sub(ARGV[2], 1, 1) == 'T') then return 0 end "             \
	"end "                                                                                               \
	"redis.call('set', KEYS[1], ARGV[2]) return 1"

/*
 * A write-behind write, acknowledged once both are in Redis: the key's version counter (KEYS[2])
 * goes up, the value (KEYS[1]) is set, and the write is queued on the stream (KEYS[3]).
 * ARGV[1] the price, ARGV[2] the key's number. Returns the version.
 */
#define WB_WRITE_SCRIPT                                                                                      \
	"local v = redis.call('incr', KEYS[2]) "                                                             \
	"redis.call('set', KEYS[1], 'V:' .. v .. ':' .. ARGV[1]) "                                           \
	"redis.call('xadd', KEYS[3], '*', 'k', ARGV[2], 'v', v, 'p', ARGV[1]) return v"

/* What a run holds from setup to teardown. */
struct wb_server;

struct cp {
	const struct cache_patterns_config *cfg;
	PGconn *conn;      /* the lab's own: setup, resets, counting stale keys, teardown */
	PGconn *wconn;     /* the scripted races' second client */
	redisContext *rc;  /* the lab's own */
	redisContext *wrc; /* the scripted races' second client */
	/* the loads' clients (readers, writers, the worker), opened once and reused by every load:
	 * seven loads opening their own would spend more time connecting than loading */
	PGconn *lpg[CP_MAX_CLIENTS];
	redisContext *lrc[CP_MAX_CLIENTS];
	char lost[16]; /* the first server seen gone: "PostgreSQL", "Redis" or "" */
	/* write-behind's throwaway redis-server: its program, directory and port, found and made
	 * before phase 1 (behind_open), so a Ctrl-C at any phase has a directory to remove */
	struct wb_server *wb;
};

/* A cached value: what GET found. */
enum cval_kind { CVAL_NONE, CVAL_VALUE, CVAL_TOMB };
struct cval {
	enum cval_kind kind;
	int64_t version;
	int price;
};

/* ---- store.c ---- */

/* Connects the lab's connections, creates the schema with cfg->keys rows. NULL and err. */
struct cp *cp_open(const struct cache_patterns_config *cfg, char *lost, size_t lostlen, char *err,
                   size_t errlen);
/* Drops the schema and the keys, closes. 0 or -1 and err. NULL: 0. */
int cp_close(struct cp *cp, char *err, size_t errlen);
/* Remembers the first server seen gone (from a failed connection). */
void cp_lost(struct cp *cp, const char *server);
const char *cp_pg_gone(const PGconn *c);
const char *cp_redis_gone(const redisContext *c);

/* Frees r; 0 when it is of type (a REDIS_REPLY_*), -1 and err when it is NULL (redis_cmd wrote
 * err: no reply or an error reply) or of another type. */
int cp_reply_done(redisReply *r, int type, const char *what, char *err, size_t errlen);
/* A statement that returns no rows: exactly PGRES_COMMAND_OK, else -1 and err. */
int db_command(PGconn *c, const char *sql, char *err, size_t errlen);

/* Every row back to price 100, version 0, flushes 0; every key of the lab deleted. */
int cp_reset(struct cp *cp, char *err, size_t errlen);
/* The cache key of product k in namespace ns ("aside", "ttl", ...): lab:cache-patterns:<ns>:<k> */
void cp_key(char *out, size_t outlen, const char *ns, int k);

/* UPDATE price, version + 1 RETURNING version. -1 and err (the server's message). */
int db_update(PGconn *c, int k, int price, int64_t *version, char *err, size_t errlen);
/* The row's version and price. */
int db_read(PGconn *c, int k, int64_t *version, int *price, char *err, size_t errlen);

/* GET key parsed into v. -1 and err. */
int cache_get(redisContext *rc, const char *key, struct cval *v, char *err, size_t errlen);
/* SET key "V:<version>:<price>" [PX px_ms when > 0]. */
int cache_set(redisContext *rc, const char *key, int64_t version, int price, int px_ms, char *err,
              size_t errlen);
int cache_del(redisContext *rc, const char *key, char *err, size_t errlen);
/* The versioned set (VSET_SCRIPT); tomb: the writer's tombstone. *set: whether it set. */
int cache_vset(redisContext *rc, const char *key, int64_t version, int price, bool tomb, bool *set, char *err,
               size_t errlen);

/* Keys of ns whose cached value's version or price differs from the row's (a tombstone or an
 * empty key is not stale: the next read goes to the database). */
int cp_count_stale(struct cp *cp, const char *ns, int keys, int *stale, char *err, size_t errlen);
/* The same for key k of ns alone. */
int cp_key_stale(struct cp *cp, const char *ns, int k, bool *stale, char *err, size_t errlen);
/* sum(flushes) over the rows: the rows write-behind's worker wrote, as the server counted them */
int cp_sum_flushes(struct cp *cp, int64_t *sum, char *err, size_t errlen);

void cp_progress(const struct cache_patterns_config *cfg, const char *what, double done);

/* ---- clients.c: a pattern under random load ---- */
int load_run(struct cp *cp, enum cp_pattern p, struct cp_load_result *res, char *err, size_t errlen);
const char *load_ns(enum cp_pattern p);

/* ---- aside.c: the scripted races ---- */
/* fix: -1 none, 0 TTL, 1 delayed second DEL, 2 versioned set */
int scripted_aside(struct cp *cp, int fix, struct cp_scripted *res, char *err, size_t errlen);
int scripted_update(struct cp *cp, struct cp_scripted *res, char *err, size_t errlen);

/* ---- through.c ---- */
int through_failures(struct cp *cp, struct cache_patterns_result *res, char *err, size_t errlen);

/* ---- behind.c ---- */
/*
 * One flush by consumer: reads up to count entries of the group (id ">": new ones, "0": its own
 * pending), keeps the newest version of each key, writes those rows (UPDATE ... WHERE version <
 * new), then XACKs. die_after_rows >= 0: the worker dies after writing that many rows, before
 * XACK. *entries, *rows: what it read and wrote. 0, or -1 and err.
 */
int wb_flush(redisContext *rc, PGconn *pg, const char *consumer, const char *id, int count,
             int die_after_rows, int *entries, int *rows, char *err, size_t errlen);
/* XAUTOCLAIM every pending entry of the group for consumer (a dead worker's). *claimed. */
int wb_claim(redisContext *rc, const char *consumer, int *claimed, char *err, size_t errlen);
/* Creates the stream and its group (MKSTREAM); an existing group is kept. */
int wb_group(redisContext *rc, char *err, size_t errlen);
/* One write-behind write: *version acknowledged. */
int wb_write(redisContext *rc, int k, int price, int64_t *version, char *err, size_t errlen);
/* Finds redis-server, makes the throwaway server's directory and picks its port; -1 and err. */
int behind_open(struct cp *cp, char *err, size_t errlen);
/* Stops the throwaway server if it runs and removes its directory. NULL-safe on cp->wb. */
void behind_close(struct cp *cp);
int behind_crash(struct cp *cp, struct cache_patterns_result *res, char *err, size_t errlen);

#endif
