/*
 * listener.c — lab-invalidation's LISTEN/NOTIFY listener: a thread with its own PostgreSQL
 * connection (LISTEN on the run's channel) and its own Redis connection. It waits on the
 * connection's socket with poll, reads with PQconsumeInput, takes each notification with
 * PQnotifies ("id:version:change_seq", sent by the AFTER UPDATE trigger) and deletes the key.
 *
 * A connection lost (the lab ends its backend with pg_terminate_backend) is noticed as a failed
 * PQconsumeInput. While it is away, notifications are lost: PostgreSQL delivers a notification
 * only to sessions listening when the transaction commits. Reconnecting, it LISTENs again and,
 * with resync, then deletes the key of every product changed since the last change it heard of
 * (change_seq greater than the last seen): LISTEN first, so nothing falls between the two.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"

struct listener {
	struct inv *s;
	pthread_t tid;
	bool resync;
	atomic_bool stop, allowed, connected;
	atomic_int backend_pid, reconnects;
	atomic_uint_fast64_t notified, resync_deleted;
	int64_t last_seq; /* the listener thread's own */
	PGconn *conn;
	redisContext *rc;
};

static int del_key(struct listener *l, int id)
{
	char key[96], err[LAB_ERRLEN];
	key_product(key, sizeof(key), id);
	redisReply *r = redis_cmd(l->rc, err, sizeof(err), "DEL %s", key);
	if (!r) {
		inv_fail(l->s, redis_gone(l->rc), "listener DEL: %s", err);
		return -1;
	}
	freeReplyObject(r);
	return 0;
}

/* Deletes the key of every product changed since the last change heard of. */
static int resync(struct listener *l)
{
	char seq[32], err[LAB_ERRLEN];
	snprintf(seq, sizeof(seq), "%lld", (long long)l->last_seq);
	const char *params[] = {seq};
	PGresult *res = pg_query(
	        l->conn, "SELECT id, change_seq FROM " SCHEMA ".products WHERE change_seq > $1::bigint", 1,
	        params, err, sizeof(err));
	if (!res) {
		inv_fail(l->s, pg_gone(l->conn), "re-sync: %s", err);
		return -1;
	}
	int ret = 0;
	for (int i = 0; i < PQntuples(res) && ret == 0; i++) {
		ret = del_key(l, atoi(PQgetvalue(res, i, 0)));
		int64_t sq = atoll(PQgetvalue(res, i, 1));
		l->last_seq = sq > l->last_seq ? sq : l->last_seq;
		atomic_fetch_add(&l->resync_deleted, 1);
	}
	PQclear(res);
	return ret;
}

/* The server's FATAL when the lab ends this backend is expected: not printed on stderr. */
static void quiet(void *arg, const char *message)
{
	(void)arg, (void)message;
}

static int listener_connect(struct listener *l)
{
	char err[LAB_ERRLEN], sql[128];
	if (!(l->conn = pg_connect(l->s->cfg->pg_url, err, sizeof(err)))) {
		inv_fail(l->s, "PostgreSQL", "listener: %s", err);
		return -1;
	}
	PQsetNoticeProcessor(l->conn, quiet, NULL);
	snprintf(sql, sizeof(sql), "LISTEN %s", l->s->channel);
	if (pg_exec(l->conn, sql, err, sizeof(err)) < 0) {
		inv_fail(l->s, pg_gone(l->conn), "LISTEN: %s", err);
		return -1;
	}
	bool again = atomic_load(&l->reconnects) > 0;
	if (again && l->resync && resync(l) < 0)
		return -1;
	atomic_store(&l->backend_pid, PQbackendPID(l->conn));
	atomic_store(&l->connected, true);
	return 0;
}

static int notification(struct listener *l, const PGnotify *nf)
{
	long long id, version, seq;
	if (sscanf(nf->extra, "%lld:%lld:%lld", &id, &version, &seq) != 3 || id < 0 || id >= l->s->n) {
		inv_fail(l->s, NULL, "listener: a notification it cannot read: %s", nf->extra);
		return -1;
	}
	if (del_key(l, (int)id) < 0)
		return -1;
	atomic_store(&l->s->deleted_us[(size_t)id * RING + (size_t)(version % RING)], now_us());
	l->last_seq = seq > l->last_seq ? seq : l->last_seq;
	atomic_fetch_add(&l->notified, 1);
	return 0;
}

static void lost(struct listener *l)
{
	PQfinish(l->conn);
	l->conn = NULL;
	atomic_store(&l->connected, false);
	atomic_fetch_add(&l->reconnects, 1);
}

static void *listener_main(void *arg)
{
	struct listener *l = arg;
	while (!atomic_load(&l->stop) && !inv_failed(l->s)) {
		if (!l->conn) {
			if (!atomic_load(&l->allowed))
				hist_sleep_us(2000);
			else if (listener_connect(l) < 0)
				break;
			continue;
		}
		struct pollfd p = {.fd = PQsocket(l->conn), .events = POLLIN};
		if (poll(&p, 1, 20) < 0)
			continue;
		if (!PQconsumeInput(l->conn) || PQstatus(l->conn) == CONNECTION_BAD) {
			/* its backend ended: nobody hears this channel for this cache until it is back */
			lost(l);
			continue;
		}
		PGnotify *nf;
		while ((nf = PQnotifies(l->conn))) {
			int ret = notification(l, nf);
			PQfreemem(nf);
			if (ret < 0)
				return NULL;
		}
	}
	return NULL;
}

struct listener *listener_start(struct inv *s, bool resync_on)
{
	struct listener *l = calloc(1, sizeof(*l));
	char err[LAB_ERRLEN];
	if (!l) {
		inv_fail(s, NULL, "out of memory");
		return NULL;
	}
	l->s = s;
	l->resync = resync_on;
	atomic_store(&l->allowed, true);
	if (!(l->rc = redis_connect_url(s->cfg->redis_url, REDIS_TIMEOUT_MS, err, sizeof(err)))) {
		inv_fail(s, "Redis", "listener: %s", err);
		free(l);
		return NULL;
	}
	if (pthread_create(&l->tid, NULL, listener_main, l) != 0) {
		inv_fail(s, NULL, "cannot start the listener thread");
		redisFree(l->rc);
		free(l);
		return NULL;
	}
	return l;
}

int listener_wait_connected(struct listener *l, bool connected, int timeout_ms)
{
	int64_t end = now_us() + (int64_t)timeout_ms * 1000;
	while (atomic_load(&l->connected) != connected) {
		if (inv_failed(l->s))
			return -1;
		if (now_us() > end) {
			inv_fail(l->s, NULL, "the listener did not %s within %d ms",
			         connected ? "connect" : "drop", timeout_ms);
			return -1;
		}
		hist_sleep_us(1000);
	}
	return 0;
}

int listener_wait_notified(struct listener *l, uint64_t n, int timeout_ms)
{
	int64_t end = now_us() + (int64_t)timeout_ms * 1000;
	while (atomic_load(&l->notified) < n) {
		if (inv_failed(l->s))
			return -1;
		if (now_us() > end) {
			inv_fail(l->s, NULL, "the listener heard %llu notifications of %llu within %d ms",
			         (unsigned long long)atomic_load(&l->notified), (unsigned long long)n,
			         timeout_ms);
			return -1;
		}
		hist_sleep_us(1000);
	}
	return 0;
}

int listener_kill(struct listener *l)
{
	char pid[16], err[LAB_ERRLEN];
	atomic_store(&l->allowed, false);
	snprintf(pid, sizeof(pid), "%d", atomic_load(&l->backend_pid));
	const char *params[] = {pid};
	int64_t ended;
	if (pg_query_int64(l->s->conn, "SELECT pg_terminate_backend($1::int)::int", 1, params, &ended, err,
	                   sizeof(err)) < 0) {
		inv_fail(l->s, pg_gone(l->s->conn), "pg_terminate_backend: %s", err);
		return -1;
	}
	if (ended != 1) {
		inv_fail(l->s, NULL, "pg_terminate_backend(%s) ended nothing", pid);
		return -1;
	}
	return 0;
}

void listener_allow(struct listener *l)
{
	atomic_store(&l->allowed, true);
}

void listener_counts(struct listener *l, uint64_t *notified, uint64_t *resync_deleted, int *reconnects)
{
	*notified = atomic_load(&l->notified);
	*resync_deleted = atomic_load(&l->resync_deleted);
	*reconnects = atomic_load(&l->reconnects);
}

void listener_stop(struct listener *l)
{
	if (!l)
		return;
	atomic_store(&l->stop, true);
	pthread_join(l->tid, NULL);
	PQfinish(l->conn);
	redisFree(l->rc);
	free(l);
}
