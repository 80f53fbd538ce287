/*
 * phases.c — the six phases of lab-idempotency, as idempotency_run walks them. Each starts its
 * own API (the lab's own run: test knobs on), drives it with the blocking client or the load,
 * and counts what PostgreSQL holds. Nothing here prints.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "internal.h"
#include "pg.h"
#include "redis.h"

/* a retry backs off this far past the lock timeout: the lock was taken a little after it was sent */
#define LOCK_MARGIN_MS 300
/* the lab looks for the paused backends this often, this many times */
#define KILL_POLL_MS    10
#define KILL_POLL_TRIES 500
/* the answer the lab waits for when no answer is meant to be lost */
#define PATIENT_MS 5000
/* the customer's orders */
#define CHARGE_BODY  "{\"amount\": 2500, \"currency\": \"usd\", \"customer\": \"cus_ada\"}"
#define CHARGE_CENTS 2500

static void progress(const struct idempotency_config *cfg, const char *what)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, 0.0, cfg->progress_arg);
}

/* The API of a phase: the lab's own, so the test knobs are on. NULL and err when it cannot start. */
static struct idempotency_api *phase_api(const struct idempotency_config *cfg, bool redis, char *err,
                                         size_t errlen)
{
	struct idempotency_config c = *cfg;
	c.test_knobs = true;
	if (!redis)
		c.redis_url = NULL;
	return idempotency_api_start(&c, 0, err, errlen);
}

static int attempt(struct idempotency_story *st, int port, const char *what,
                   const struct idempotency_request *rq, char *err, size_t errlen)
{
	struct idempotency_attempt *a = &st->attempts[st->nattempts++];
	snprintf(a->what, sizeof(a->what), "%s", what);
	return idempotency_call(port, rq, &a->rs, err, errlen);
}

static void story_finish(struct idempotency_story *st)
{
	const char *first = NULL;
	st->bodies_identical = true;
	for (int i = 0; i < st->nattempts; i++) {
		const struct idempotency_response *rs = &st->attempts[i].rs;
		if (rs->status < 200 || rs->status > 299)
			continue;
		if (!first)
			first = rs->body;
		else if (strcmp(first, rs->body) != 0)
			st->bodies_identical = false;
	}
}

/* ---- phases 1 and 2: the flaky network ---- */

static int flaky_attempts(const struct idempotency_config *cfg, int port, bool with_key, const char *client,
                          struct idempotency_story *st, char *err, size_t errlen)
{
	char what[64];
	struct idempotency_request rq = {.client = client,
	                                 .key = with_key ? "order-1042-pay" : NULL,
	                                 .body = CHARGE_BODY,
	                                 .delay_ms = cfg->slow_ms,
	                                 .timeout_ms = cfg->client_timeout_ms};
	snprintf(what, sizeof(what), "attempt 1 (answered after %d ms)", cfg->slow_ms);
	uint64_t t0 = hist_now_us();
	if (attempt(st, port, what, &rq, err, errlen) < 0)
		return -1;
	/* the client's timeout fired: it retries at once, as most HTTP clients do */
	rq.delay_ms = 0;
	/* the retry waits longer, as clients that back off do: its answer must not be lost too */
	rq.timeout_ms = PATIENT_MS;
	if (attempt(st, port, "retry", &rq, err, errlen) < 0)
		return -1;
	if (!with_key)
		return 0;
	/* with a key, once more after the slow answer went out, to see that the replay holds */
	uint64_t waited_ms = (hist_now_us() - t0) / 1000;
	if (waited_ms < (uint64_t)cfg->slow_ms + 50)
		hist_sleep_us(1000LL * (cfg->slow_ms + 50 - (int)waited_ms));
	return attempt(st, port, "retry again", &rq, err, errlen);
}

static int flaky(const struct idempotency_config *cfg, bool with_key, struct idempotency_story *st, char *err,
                 size_t errlen)
{
	memset(st, 0, sizeof(*st));
	progress(cfg, "charging");
	struct idempotency_config c = *cfg;
	c.require_key = with_key;
	struct idempotency_api *api = phase_api(&c, false, err, errlen);
	if (!api)
		return -1;
	char client[MAX_NAME + 1];
	idem_run_client(client, sizeof(client), with_key ? "flaky-key" : "flaky");
	int ret = flaky_attempts(cfg, idempotency_api_port(api), with_key, client, st, err, errlen);
	if (ret == 0)
		ret = idempotency_count(cfg, client, &st->charges, &st->cents, err, errlen);
	st->expected_cents = CHARGE_CENTS;
	story_finish(st);
	idempotency_api_stop(api);
	return ret;
}

int idempotency_phase_no_key(const void *cfg, void *result, char *err, size_t errlen)
{
	struct idempotency_result *r = result;
	if (flaky(cfg, false, &r->no_key, err, errlen) < 0)
		return idem_lost(cfg, r, err, errlen);
	return 0;
}

int idempotency_phase_with_key(const void *cfg, void *result, char *err, size_t errlen)
{
	struct idempotency_result *r = result;
	if (flaky(cfg, true, &r->with_key, err, errlen) < 0)
		return idem_lost(cfg, r, err, errlen);
	return 0;
}

/* ---- phase 3: concurrent duplicates ---- */

/* Both loads on one API, whose pool opens every connection first: duplicates race in the server. */
static int duplicates_loads(const struct idempotency_config *cfg, struct idempotency_api *api,
                            struct idempotency_duplicates *d, char *err, size_t errlen)
{
	char client[MAX_NAME + 1];
	/* every client sends one request at the same instant, all with the same key */
	idem_run_client(client, sizeof(client), "dups");
	struct idem_load_spec same = {.client = client,
	                              .keys = 1,
	                              .requests = cfg->duplicates,
	                              .clients = cfg->duplicates,
	                              .pause_ms = cfg->bank_ms};
	if (idem_load_keys(cfg, api, &same, &d->same_instant, err, errlen) < 0)
		return -1;
	/* then many keys, two requests racing per key, one in slow_every answered too late */
	idem_run_client(client, sizeof(client), "mixed");
	struct idem_load_spec mixed = {.client = client,
	                               .keys = cfg->mixed_keys,
	                               .requests = cfg->mixed_requests,
	                               .clients = cfg->mixed_clients,
	                               .slow = true};
	return idem_load_keys(cfg, api, &mixed, &d->mixed, err, errlen);
}

int idempotency_phase_duplicates(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct idempotency_config *cfg = cfgv;
	struct idempotency_result *r = result;
	memset(&r->duplicates, 0, sizeof(r->duplicates));
	struct idempotency_config c = *cfg;
	c.pool_min_idle = c.pool_size;
	struct idempotency_api *api = phase_api(&c, false, err, errlen);
	int ret = api ? duplicates_loads(cfg, api, &r->duplicates, err, errlen) : -1;
	/* slow answers still owed to clients that gave up are dropped with the API */
	idempotency_api_stop(api);
	return ret < 0 ? idem_lost(cfg, r, err, errlen) : 0;
}

/* ---- phase 4: payload mismatch and bad requests ---- */

static int mismatch_attempts(int port, const char *client, struct idempotency_story *st, char *err,
                             size_t errlen)
{
	char long_key[IDEMPOTENCY_MAX_KEY + 2];
	memset(long_key, 'k', IDEMPOTENCY_MAX_KEY + 1);
	long_key[IDEMPOTENCY_MAX_KEY + 1] = '\0';
	struct idempotency_request rq = {
	        .client = client,
	        .key = "order-7-pay",
	        .body = "{\"amount\": 1000, \"currency\": \"usd\", \"customer\": \"cus_bob\"}"};
	if (attempt(st, port, "$10.00 with key order-7-pay", &rq, err, errlen) < 0)
		return -1;
	rq.body = "{\"amount\": 5000, \"currency\": \"usd\", \"customer\": \"cus_bob\"}";
	if (attempt(st, port, "$50.00 with the same key", &rq, err, errlen) < 0)
		return -1;
	/* the same payload, fields reordered and spaced: the canonical fingerprint still matches */
	rq.body = "{\"customer\":\"cus_bob\",\"currency\":\"usd\",\"amount\":1000}";
	if (attempt(st, port, "$10.00 again, fields reordered", &rq, err, errlen) < 0)
		return -1;
	rq.key = NULL;
	if (attempt(st, port, "$10.00 without a key", &rq, err, errlen) < 0)
		return -1;
	rq.key = long_key;
	if (attempt(st, port, "a key of 256 characters", &rq, err, errlen) < 0)
		return -1;
	rq.key = "order-8-pay";
	rq.body = "{\"amount\": 1000, \"currency\": ";
	return attempt(st, port, "malformed JSON", &rq, err, errlen);
}

int idempotency_phase_mismatch(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct idempotency_config *cfg = cfgv;
	struct idempotency_result *r = result;
	struct idempotency_story *st = &r->mismatch;
	memset(st, 0, sizeof(*st));
	struct idempotency_api *api = phase_api(cfg, false, err, errlen);
	if (!api)
		return idem_lost(cfg, r, err, errlen);
	char client[MAX_NAME + 1];
	idem_run_client(client, sizeof(client), "mismatch");
	int ret = mismatch_attempts(idempotency_api_port(api), client, st, err, errlen);
	if (ret == 0)
		ret = idempotency_count(cfg, client, &st->charges, &st->cents, err, errlen);
	st->expected_cents = 1000;
	story_finish(st);
	idempotency_api_stop(api);
	return ret < 0 ? idem_lost(cfg, r, err, errlen) : 0;
}

/* ---- phase 5: a crash mid-request ---- */

/*
 * Finds the backends paused between charge and response (PAUSE_MARK in pg_stat_activity) and
 * terminates them, as a crash or a failover would, until want of them were killed. Returns the
 * pid of the first, -1 with err.
 */
static int kill_paused(PGconn *side, int want, char *err, size_t errlen)
{
	int killed = 0, first_pid = 0;
	for (int i = 0; i < KILL_POLL_TRIES && killed < want; i++) {
		const char *p[] = {pg_application_name()};
		PGresult *res = pg_query(
		        side,
		        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE " PAUSED_OF_MINE,
		        1, p, err, errlen);
		if (!res)
			return -1;
		for (int r = 0; r < PQntuples(res); r++) {
			if (strcmp(PQgetvalue(res, r, 1), "t") != 0) {
				snprintf(err, errlen, "pg_terminate_backend(%s) refused",
				         PQgetvalue(res, r, 0));
				PQclear(res);
				return -1;
			}
			if (!first_pid)
				first_pid = atoi(PQgetvalue(res, r, 0));
			killed++;
		}
		PQclear(res);
		if (killed < want)
			hist_sleep_us(1000LL * KILL_POLL_MS);
	}
	if (killed < want) {
		snprintf(err, errlen, "only %d of %d paused requests showed in pg_stat_activity", killed,
		         want);
		return -1;
	}
	return first_pid;
}

/* Sleeps until the lock taken by a request sent at t0_us has timed out, with a margin. */
static void wait_lock_timeout(const struct idempotency_config *cfg, uint64_t t0_us)
{
	int64_t left_ms = cfg->lock_timeout_ms + LOCK_MARGIN_MS - (int64_t)(hist_now_us() - t0_us) / 1000;
	if (left_ms > 0)
		hist_sleep_us(1000LL * ((int)left_ms));
}

static int recovery_point(PGconn *side, const char *client, const char *key, struct idempotency_story *st,
                          char *err, size_t errlen)
{
	const char *p[] = {client, key};
	PGresult *res = pg_query(
	        side, "SELECT recovery_point FROM " SCHEMA ".idempotency_keys WHERE client = $1 AND key = $2",
	        2, p, err, errlen);
	if (!res)
		return -1;
	snprintf(st->recovery_point, sizeof(st->recovery_point), "%s",
	         PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "(no key)");
	PQclear(res);
	return 0;
}

static int crash_attempts(const struct idempotency_config *cfg, int port, PGconn *side, const char *client,
                          struct idempotency_story *st, char *err, size_t errlen)
{
	char what[64];
	struct idempotency_request rq = {.client = client,
	                                 .key = "order-99-pay",
	                                 .body = CHARGE_BODY,
	                                 .pause_ms = cfg->pause_ms,
	                                 .timeout_ms = cfg->client_timeout_ms};
	uint64_t t0 = hist_now_us();
	if (attempt(st, port, "attempt 1: charge, then killed", &rq, err, errlen) < 0)
		return -1;
	st->killed_pid = kill_paused(side, 1, err, errlen);
	if (st->killed_pid < 0 || recovery_point(side, client, rq.key, st, err, errlen) < 0)
		return -1;
	rq.pause_ms = 0;
	rq.timeout_ms = PATIENT_MS;
	if (attempt(st, port, "retry at once", &rq, err, errlen) < 0)
		return -1;
	wait_lock_timeout(cfg, t0);
	snprintf(what, sizeof(what), "retry after the lock timeout (%d ms)", cfg->lock_timeout_ms);
	if (attempt(st, port, what, &rq, err, errlen) < 0)
		return -1;
	return attempt(st, port, "retry again", &rq, err, errlen);
}

int idempotency_phase_crash(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct idempotency_config *cfg = cfgv;
	struct idempotency_result *r = result;
	struct idempotency_story *st = &r->crash;
	memset(st, 0, sizeof(*st));
	progress(cfg, "charging, then killing the backend");
	PGconn *side = pg_connect(cfg->pg_url, err, errlen);
	if (!side)
		return idem_lost(cfg, r, err, errlen);
	struct idempotency_api *api = phase_api(cfg, false, err, errlen);
	int ret = -1;
	char client[MAX_NAME + 1];
	idem_run_client(client, sizeof(client), "crash");
	if (api && crash_attempts(cfg, idempotency_api_port(api), side, client, st, err, errlen) == 0 &&
	    idem_count_on(side, client, &st->charges, &st->cents, err, errlen) == 0)
		ret = 0;
	st->expected_cents = CHARGE_CENTS;
	story_finish(st);
	idempotency_api_stop(api);
	PQfinish(side);
	return ret < 0 ? idem_lost(cfg, r, err, errlen) : 0;
}

/* ---- phase 6: a Redis SET NX guard instead of the key in the charge's transaction ---- */

static const char *const guard_designs[ROUTE_COUNT] = {"key in PostgreSQL (same txn)",
                                                       "Redis SET NX, key kept", "Redis SET NX, key deleted"};

const char *idempotency_guard_outcome(const struct idempotency_guard_row *r)
{
	int last = r->nattempts > 0 ? r->statuses[r->nattempts - 1] : 0;
	if (r->charges == 0)
		return "LOST: no charge, retries refused";
	if (r->charges > 1)
		return "DOUBLED: charged twice";
	if (last != 201)
		return "charged, the answer never comes";
	return "once";
}

/* The guard's requests: one client per row, so each row's charges are its own. */
struct guard_run {
	const struct idempotency_config *cfg;
	struct idempotency_result *r;
	int port;
	int started;           /* rows whose first attempt was sent */
	uint64_t killed_at_us; /* the first attempt of the killed rows */
	PGconn *side;
	char clients[2][ROUTE_COUNT][MAX_NAME + 1];
	struct idempotency_request rqs[2][ROUTE_COUNT]; /* [refused, killed][route] */
};

/*
 * One request of the guard. A 503 from a Redis route that names Redis is not a result but a lost
 * server: the phase ends at once, with what the API said, instead of reading the rows as numbers.
 */
static int guard_call(struct guard_run *g, enum route route, const struct idempotency_request *rq,
                      struct idempotency_guard_row *row, char *err, size_t errlen)
{
	static const char unavailable[] = "Redis is unavailable: ";
	struct idempotency_response rs;
	if (idempotency_call(g->port, rq, &rs, err, errlen) < 0)
		return -1;
	row->statuses[row->nattempts++] = rs.status;
	if (route == ROUTE_PG || rs.status != 503)
		return 0;
	json_t *doc = json_loads(rs.body, 0, NULL);
	const char *msg = json_string_value(json_object_get(doc, "error"));
	int ret = 0;
	if (msg && strncmp(msg, unavailable, sizeof(unavailable) - 1) == 0) {
		snprintf(err, errlen, "%s", msg + sizeof(unavailable) - 1);
		g->r->lost = IDEMPOTENCY_SERVER_REDIS;
		ret = -1;
	}
	json_decref(doc);
	return ret;
}

/* The rows done so far, as progress: between two rows is where a test cuts Redis away. */
static void guard_progress(struct guard_run *g)
{
	if (g->cfg->progress_cb)
		g->cfg->progress_cb("six runs", (double)g->started++ / IDEMPOTENCY_GUARD_ROWS,
		                    g->cfg->progress_arg);
}

/* The retries of one row after its faulty first attempt, then the charges PostgreSQL holds. */
static int guard_retries(struct guard_run *g, enum route route, const struct idempotency_request *first,
                         struct idempotency_guard_row *row, char *err, size_t errlen)
{
	struct idempotency_request rq = *first;
	rq.pause_ms = 0;
	rq.timeout_ms = PATIENT_MS;
	for (int i = 0; i < 2; i++)
		if (guard_call(g, route, &rq, row, err, errlen) < 0)
			return -1;
	int64_t cents;
	return idem_count_on(g->side, rq.client, &row->charges, &cents, err, errlen);
}

/* Refused (rows 0..2): a CHECK (false) constraint on charges for attempt 1 alone. */
static int guard_refused(struct guard_run *g, char *err, size_t errlen)
{
	for (int r = 0; r < ROUTE_COUNT; r++) {
		guard_progress(g);
		struct idempotency_guard_row *row = &g->r->guard.rows[r];
		row->fault = "database refuses the write";
		if (pg_exec(g->side,
		            "ALTER TABLE " SCHEMA ".charges ADD CONSTRAINT outage CHECK (false) NOT VALID",
		            err, errlen) < 0)
			return -1;
		char e2[LAB_ERRLEN];
		int rc = guard_call(g, (enum route)r, &g->rqs[0][r], row, err, errlen);
		if (pg_exec(g->side, "ALTER TABLE " SCHEMA ".charges DROP CONSTRAINT outage",
		            rc < 0 ? e2 : err, rc < 0 ? sizeof(e2) : errlen) < 0 ||
		    rc < 0)
			return -1;
		if (guard_retries(g, (enum route)r, &g->rqs[0][r], row, err, errlen) < 0)
			return -1;
	}
	return 0;
}

/*
 * Killed (rows 3..5): attempt 1 pauses after its charge and the lab terminates its backend; the
 * three designs' first attempts are killed together, and retried after one wait past the lock
 * timeout (guard_killed_retries), which the refused rows spend.
 */
static int guard_killed(struct guard_run *g, char *err, size_t errlen)
{
	g->killed_at_us = hist_now_us();
	for (int r = 0; r < ROUTE_COUNT; r++) {
		guard_progress(g);
		struct idempotency_guard_row *row = &g->r->guard.rows[ROUTE_COUNT + r];
		row->fault = "connection killed after the charge";
		g->rqs[1][r].pause_ms = g->cfg->pause_ms;
		g->rqs[1][r].timeout_ms = g->cfg->client_timeout_ms;
		if (guard_call(g, (enum route)r, &g->rqs[1][r], row, err, errlen) < 0)
			return -1;
	}
	return kill_paused(g->side, ROUTE_COUNT, err, errlen) < 0 ? -1 : 0;
}

static int guard_killed_retries(struct guard_run *g, char *err, size_t errlen)
{
	/* the clients back off past the lock timeout, counted from the first attempt, then retry */
	wait_lock_timeout(g->cfg, g->killed_at_us);
	for (int r = 0; r < ROUTE_COUNT; r++)
		if (guard_retries(g, (enum route)r, &g->rqs[1][r], &g->r->guard.rows[ROUTE_COUNT + r], err,
		                  errlen) < 0)
			return -1;
	return 0;
}

static int guard_rows(struct guard_run *g, char *err, size_t errlen)
{
	for (int kill = 0; kill < 2; kill++)
		for (int r = 0; r < ROUTE_COUNT; r++) {
			idem_run_client(g->clients[kill][r], sizeof(g->clients[kill][r]), "guard");
			g->rqs[kill][r] = (struct idempotency_request){.path = idem_route_paths[r],
			                                               .client = g->clients[kill][r],
			                                               .key = "order-5-pay",
			                                               .body = CHARGE_BODY,
			                                               .timeout_ms = PATIENT_MS};
		}
	g->r->guard.nrows = 2 * ROUTE_COUNT;
	for (int i = 0; i < 2 * ROUTE_COUNT; i++) {
		g->r->guard.rows[i].design = guard_designs[i % ROUTE_COUNT];
		g->r->guard.rows[i].key_in_pg = i % ROUTE_COUNT == ROUTE_PG;
	}
	if (guard_killed(g, err, errlen) < 0 || guard_refused(g, err, errlen) < 0 ||
	    guard_killed_retries(g, err, errlen) < 0)
		return -1;
	redisContext *rc = redis_connect_url(g->cfg->redis_url, 2000, err, errlen);
	if (!rc)
		return -1;
	int ret = redis_del_prefix(rc, REDIS_PREFIX, &g->r->guard.redis_keys_deleted, err, errlen);
	redisFree(rc);
	return ret;
}

int idempotency_phase_guard(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct idempotency_config *cfg = cfgv;
	struct idempotency_result *r = result;
	memset(&r->guard, 0, sizeof(r->guard));
	if (!cfg->redis_url) {
		snprintf(err, errlen, "the Redis guard needs a Redis URL");
		return -1;
	}
	struct guard_run *g = calloc(1, sizeof(*g));
	if (!g) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	*g = (struct guard_run){.cfg = cfg, .r = r};
	g->side = pg_connect(cfg->pg_url, err, errlen);
	struct idempotency_api *api = g->side ? phase_api(cfg, true, err, errlen) : NULL;
	int ret = -1;
	if (api) {
		g->port = idempotency_api_port(api);
		ret = guard_rows(g, err, errlen);
	}
	idempotency_api_stop(api);
	if (ret < 0 && g->side) {
		/* never leave the outage constraint behind, nor a request paused in pg_sleep */
		char e2[LAB_ERRLEN];
		const char *p[] = {pg_application_name()};
		pg_exec(g->side,
		        "SET client_min_messages = warning;"
		        "ALTER TABLE " SCHEMA ".charges DROP CONSTRAINT IF EXISTS outage",
		        e2, sizeof(e2));
		PQclear(pg_query(
		        g->side,
		        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE " PAUSED_OF_MINE, 1, p,
		        e2, sizeof(e2)));
	}
	PQfinish(g->side);
	free(g);
	return ret < 0 ? idem_lost(cfg, r, err, errlen) : 0;
}
