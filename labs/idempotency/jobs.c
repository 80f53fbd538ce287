/*
 * jobs.c — what keeps the keys table honest between requests: the reaper (keys past the
 * published window are deleted; their charges stay) and the completer (keys whose request died
 * after the charge get the response built from the charge, as rocket-rides-atomic's completer
 * does). Both run on the API's loop on a timer, and as blocking calls for a cron or a test; the
 * same statements either way.
 */
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"

/* keys completed per pass at most: a pass stays one short statement */
#define COMPLETE_BATCH "100"

const char IDEM_SQL_STORE[] = "UPDATE " SCHEMA ".idempotency_keys SET recovery_point = 'finished',"
                              " locked_at = NULL, response_code = $2, response_body = $3"
                              " WHERE id = $1 AND recovery_point = 'charge_created'";

static const char SQL_REAP[] = "DELETE FROM " SCHEMA ".idempotency_keys"
                               " WHERE created_at < now() - make_interval(secs => $1::float8)";

/* A key left at charge_created whose lock has timed out (or that holds none): its request died. */
#define STALE(k)                                                                                             \
	"(" k ".locked_at IS NULL OR " k ".locked_at < now() - make_interval(secs => $1::float8 / 1000))"

static const char SQL_COMPLETE_PICK[] =
        "SELECT k.id, " SQL_CHARGE_BODY_C " FROM " SCHEMA ".idempotency_keys k JOIN " SCHEMA
        ".charges c ON c.idempotency_key_id = k.id"
        " WHERE k.recovery_point = 'charge_created' AND " STALE("k") " ORDER BY k.id LIMIT " COMPLETE_BATCH;

/*
 * Stores the responses; the condition is checked again on each row as it is updated, so a retry
 * that took a key's lock over since the pick (and is resuming it) keeps it.
 */
static const char SQL_COMPLETE_STORE[] =
        "UPDATE " SCHEMA ".idempotency_keys k SET recovery_point = 'finished', locked_at = NULL,"
        " response_code = 201, response_body = u.body"
        " FROM jsonb_to_recordset($2::jsonb) AS u(id bigint, body text)"
        " WHERE k.id = u.id AND k.recovery_point = 'charge_created' AND " STALE("k");

/* [{"id": key id, "body": the response}] for the rows of SQL_COMPLETE_PICK; NULL when out of memory. */
static char *complete_rows(PGresult *res)
{
	json_t *rows = json_array();
	for (int i = 0; rows && i < PQntuples(res); i++) {
		/* the response as the API answers it, built from the charge by the pick (SQL_CHARGE_BODY) */
		json_t *row = json_pack("{s:I,s:s}", "id", (json_int_t)atoll(PQgetvalue(res, i, 0)), "body",
		                        PQgetvalue(res, i, 1));
		if (!row || json_array_append_new(rows, row) < 0) {
			json_decref(rows);
			return NULL;
		}
	}
	char *text = rows ? json_dumps(rows, JSON_COMPACT) : NULL;
	json_decref(rows);
	return text;
}

/* ---- on the API's loop ---- */

/*
 * A job's statement ended: true when with the status expected. A failure is said on stderr (a
 * job that fails is never silent); the next pass tries again.
 */
static bool job_result(struct idempotency_api *api, const char *job, PGresult *res, ExecStatusType want,
                       const char *err)
{
	if (res && PQresultStatus(res) == want)
		return true;
	char why[256];
	pg_message_line(why, sizeof(why), res ? PQresultErrorMessage(res) : err);
	if (!api->stopping)
		fprintf(stderr, "lab-idempotency: the %s failed: %s\n", job, why);
	return false;
}

static void reaped_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	struct idempotency_api *api = arg;
	job_result(api, "reaper", res, PGRES_COMMAND_OK, err);
	pool_release(c);
	api->reaping = false;
}

static void reap_acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	(void)err;
	struct idempotency_api *api = arg;
	if (!conn) {
		api->reaping = false;
		return;
	}
	char window[24];
	snprintf(window, sizeof(window), "%d", api->cfg.key_window_s);
	const char *p[] = {window};
	if (pool_query(conn, SQL_REAP, 1, p, reaped_cb, api) < 0) {
		pool_release(conn);
		api->reaping = false;
	}
}

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct idempotency_api *api = arg;
	if (api->reaping)
		return;
	api->reaping = true;
	pool_acquire(api->pool, "reaper", reap_acquired_cb, api);
}

static void completed_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	struct idempotency_api *api = arg;
	job_result(api, "completer", res, PGRES_COMMAND_OK, err);
	pool_release(c);
	api->completing = false;
}

static void picked_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	struct idempotency_api *api = arg;
	char *rows = NULL;
	if (job_result(api, "completer", res, PGRES_TUPLES_OK, err) && PQntuples(res) > 0)
		rows = complete_rows(res);
	char lock_ms[24];
	snprintf(lock_ms, sizeof(lock_ms), "%d", api->cfg.lock_timeout_ms);
	const char *p[] = {lock_ms, rows};
	/* nothing to do, or a failure: the next pass tries again */
	if (!rows || pool_query(c, SQL_COMPLETE_STORE, 2, p, completed_cb, api) < 0) {
		pool_release(c);
		api->completing = false;
	}
	free(rows);
}

static void complete_acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	(void)err;
	struct idempotency_api *api = arg;
	if (!conn) {
		api->completing = false;
		return;
	}
	char lock_ms[24];
	snprintf(lock_ms, sizeof(lock_ms), "%d", api->cfg.lock_timeout_ms);
	const char *p[] = {lock_ms};
	if (pool_query(conn, SQL_COMPLETE_PICK, 1, p, picked_cb, api) < 0) {
		pool_release(conn);
		api->completing = false;
	}
}

static void completer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct idempotency_api *api = arg;
	if (api->completing)
		return;
	api->completing = true;
	pool_acquire(api->pool, "completer", complete_acquired_cb, api);
}

static struct event *every(struct idempotency_api *api, int ms, event_callback_fn cb)
{
	struct event *ev = event_new(api->app.base, -1, EV_PERSIST, cb, api);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	if (ev && event_add(ev, &tv) < 0) {
		event_free(ev);
		ev = NULL;
	}
	return ev;
}

int idem_jobs_start(struct idempotency_api *api, char *err, size_t errlen)
{
	if (api->cfg.reap_interval_ms > 0 &&
	    !(api->reaper = every(api, api->cfg.reap_interval_ms, reaper_cb))) {
		snprintf(err, errlen, "cannot start the reaper's timer");
		return -1;
	}
	if (api->cfg.complete_interval_ms > 0 &&
	    !(api->completer = every(api, api->cfg.complete_interval_ms, completer_cb))) {
		snprintf(err, errlen, "cannot start the completer's timer");
		return -1;
	}
	return 0;
}

void idem_jobs_free(struct idempotency_api *api)
{
	if (api->reaper)
		event_free(api->reaper);
	if (api->completer)
		event_free(api->completer);
	api->reaper = api->completer = NULL;
}

/* ---- blocking ---- */

int idempotency_reap(const struct idempotency_config *cfg, int64_t *deleted, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	char window[24];
	snprintf(window, sizeof(window), "%d", cfg->key_window_s);
	const char *p[] = {window};
	PGresult *res = PQexecParams(conn, SQL_REAP, 1, NULL, p, NULL, NULL, 0);
	int ret = -1;
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pg_message_line(err, errlen, PQresultErrorMessage(res));
		goto out;
	}
	if (deleted)
		*deleted = atoll(PQcmdTuples(res));
	ret = 0;
out:
	PQclear(res);
	PQfinish(conn);
	return ret;
}

int idempotency_complete(const struct idempotency_config *cfg, int64_t *completed, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	char lock_ms[24], *rows = NULL;
	snprintf(lock_ms, sizeof(lock_ms), "%d", cfg->lock_timeout_ms);
	const char *p[] = {lock_ms, NULL};
	PGresult *store = NULL, *pick = pg_query(conn, SQL_COMPLETE_PICK, 1, p, err, errlen);
	if (!pick)
		goto out;
	int64_t done = 0;
	if (PQntuples(pick) > 0) {
		p[1] = rows = complete_rows(pick);
		if (!rows) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		store = PQexecParams(conn, SQL_COMPLETE_STORE, 2, NULL, p, NULL, NULL, 0);
		if (PQresultStatus(store) != PGRES_COMMAND_OK) {
			pg_message_line(err, errlen, PQresultErrorMessage(store));
			goto out;
		}
		done = atoll(PQcmdTuples(store));
	}
	if (completed)
		*completed = done;
	ret = 0;
out:
	free(rows);
	PQclear(store);
	PQclear(pick);
	PQfinish(conn);
	return ret;
}
