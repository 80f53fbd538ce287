/*
 * internal.h — what the files of lab-invalidation share (the experiment is in invalidation.h).
 * main.c and the tests see invalidation.h only.
 *
 * store.c owns the schema, the writer's one write, warming and checking the cache; traffic.c
 * the readers and the timed loads; listener.c the LISTEN/NOTIFY listener; invalidation.c the
 * phases and the judge.
 */
#ifndef LAB_INVALIDATION_INTERNAL_H
#define LAB_INVALIDATION_INTERNAL_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "invalidation.h"
#include "pgset.h"

#define SCHEMA "lab_invalidation"
#define PREFIX "lab:invalidation:"
/* versions remembered per product (commit and delete times): a run writes a product about once
 * per load, a dozen times in all */
#define RING 64
/* Redis commands time out after 1 s: far above a loopback round trip, short enough to notice */
#define REDIS_TIMEOUT_MS 1000
/* a reader waits at most this long for a pooled connection: a database that stopped answering */
#define BORROW_TIMEOUT_MS 10000

enum inv_method { M_TTL, M_DELETE, M_NOTIFY, M_VERSIONED };

/* What a run holds from setup to teardown. */
struct inv {
	const struct invalidation_config *cfg;
	PGconn *conn;  /* the lab's own: setup, checks, pg_terminate_backend, teardown */
	PGconn *wconn; /* the writer's */
	/* the next writer's, opened by a thread while the writer works, so that a crash (the
	 * session closed after COMMIT) costs the writer no connect of its own */
	PGconn *spare;
	pthread_t spare_tid;
	bool spare_pending; /* spare_tid runs or was not joined yet */
	char spare_err[LAB_ERRLEN];
	redisContext *rc;   /* the lab's own and the writer's (one thread at a time) */
	struct pgset *pool; /* the readers' */
	int n;              /* products */
	/* published by the writer right after COMMIT returns: version first committed, then time */
	_Atomic int64_t *committed;  /* [n] latest committed version */
	_Atomic int64_t *commit_us;  /* [n * RING] when version v of id committed (id*RING + v%RING) */
	_Atomic int64_t *deleted_us; /* [n * RING] when the listener's DEL of version v returned */
	char channel[64];            /* lab_invalidation_<pid> */
	/* the first failure of any thread, and the server it lost */
	pthread_mutex_t mu;
	atomic_bool failed;
	char err[LAB_ERRLEN];
	char lost[16];
};

/* ---- store.c ---- */
int store_open(struct inv *s, const struct invalidation_config *cfg, char *err, size_t errlen);
int store_close(struct inv *s, char *err, size_t errlen);
/* The first failure wins; server is "PostgreSQL", "Redis" or NULL. */
void inv_fail(struct inv *s, const char *server, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
bool inv_failed(struct inv *s);
int inv_report(struct inv *s, char *err, size_t errlen);
const char *pg_gone(const PGconn *c);
const char *redis_gone(const redisContext *c);
int64_t now_us(void);
void inv_progress(struct inv *s, const char *what, double done);
/* Deletes every lab:invalidation:* key and warms one key per product (cache-aside key, ttl_ms). */
int cache_reset(struct inv *s, bool warm, int ttl_ms);
/* One write by the writer: the product's version bumped and logged in one transaction, then
 * published; then, for M_DELETE, the key deleted; with crash, instead, the writer's session is
 * closed right after COMMIT (and a new one opened), as a writer dying there does. *version gets
 * the new version. */
int writer_write(struct inv *s, int id, enum inv_method m, bool crash, int64_t *version);
/* Keys of products whose cached version is older than the row's (cache-aside keys). */
int stale_keys(struct inv *s, uint64_t *out);
void key_product(char *out, size_t len, int id);
void key_versioned(char *out, size_t len, int64_t gen, int id, int64_t version);
/* Parses "version:price:fill_us". */
bool value_parse(const char *v, int64_t *version, int64_t *fill_us);

/* ---- traffic.c ---- */
struct readers; /* R reader threads running */
struct readers *readers_start(struct inv *s, enum inv_method m, int ttl_ms);
/* Stops and joins them; adds what they counted into out. */
void readers_stop(struct readers *r, struct inv_reads *out);
/* A timed load: readers and the writer (in the calling thread, each product at most once) for
 * run_ms or until every product was written. ids/versions (room for every product, may be NULL)
 * get what was written. */
struct inv_load {
	enum inv_method m;
	int ttl_ms;
	int run_ms;
	int crash_every; /* every crash_every-th write skips what follows its COMMIT; 0: none */
	int *ids;
	int64_t *versions;
	const char *what; /* for the progress line */
	int salt;         /* picks the writer's permutation: the same seed, the same writes */
};
int load_run(struct inv *s, const struct inv_load *L, struct inv_reads *out);
/* The order the writer visits products in: a permutation (free it); NULL when out of memory. */
int *permutation(struct inv *s, int salt);
/* One read through method m by the calling thread (with its own Redis context). */
struct reader_ctx {
	struct inv *s;
	redisContext *rc;
	enum inv_method m;
	int ttl_ms;
	struct inv_reads st;
};
int read_one(struct reader_ctx *c, int id);

/* ---- listener.c ---- */
struct listener;
struct listener *listener_start(struct inv *s, bool resync);
/* Waits until it is connected and listening (or gone: allowed false); -1 on timeout or failure. */
int listener_wait_connected(struct listener *l, bool connected, int timeout_ms);
/* Waits until it has received n notifications in all. */
int listener_wait_notified(struct listener *l, uint64_t n, int timeout_ms);
/* Ends its backend with pg_terminate_backend from the lab's connection, and keeps it away until
 * listener_allow. */
int listener_kill(struct listener *l);
void listener_allow(struct listener *l);
void listener_counts(struct listener *l, uint64_t *notified, uint64_t *resync_deleted, int *reconnects);
void listener_stop(struct listener *l);

/* ---- phases.c ---- */
int drop_run(struct inv *s, bool resync, struct inv_drop_run *d);
int versioned_after(struct inv *s, struct invalidation_result *res);

#endif
