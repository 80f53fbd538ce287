/*
 * client.c — the lab's side of the wire: a blocking client that sends one charge and waits (its
 * own event loop), the load driver of phase 3 on common/load.h, and the counts in PostgreSQL that
 * every claim is checked against.
 */
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"
#include "http_client.h"
#include "internal.h"
#include "load.h"
#include "pg.h"

/* the load's requests wait this long when no answer is meant to be lost */
#define LOAD_TIMEOUT_MS 10000
/* after the load, a key still in flight is retried this often, this many times at most */
#define SETTLE_EVERY_MS 50
#define SETTLE_TRIES    50

void idem_run_client(char *out, size_t outlen, const char *what)
{
	static unsigned runs;
	snprintf(out, outlen, "%s-%d-%u-%llu", what, (int)getpid(), ++runs,
	         (unsigned long long)(hist_now_us() % 1000000));
}

/* ---- one request ---- */

int idempotency_call(int port, const struct idempotency_request *rq, struct idempotency_response *rs,
                     char *err, size_t errlen)
{
	memset(rs, 0, sizeof(*rs));
	struct http_client *c =
	        http_client_new(port, rq->timeout_ms > 0 ? rq->timeout_ms : 5000, err, errlen);
	if (!c)
		return -1;
	struct http_header h[5];
	char delay[24], pause[24];
	int n = 0;
	h[n++] = (struct http_header){"Content-Type", "application/json"};
	if (rq->client)
		h[n++] = (struct http_header){"X-Client-Id", rq->client};
	if (rq->key)
		h[n++] = (struct http_header){"Idempotency-Key", rq->key};
	if (rq->delay_ms > 0) {
		snprintf(delay, sizeof(delay), "%d", rq->delay_ms);
		h[n++] = (struct http_header){"X-Lab-Delay-Ms", delay};
	}
	if (rq->pause_ms > 0) {
		snprintf(pause, sizeof(pause), "%d", rq->pause_ms);
		h[n++] = (struct http_header){"X-Lab-Pause-Ms", pause};
	}
	struct http_call call = {"POST",   rq->path ? rq->path : CHARGES_PATH, h, n,
	                         rq->body, rq->body ? strlen(rq->body) : 0};
	struct http_answer a;
	int ret = http_client_call(c, &call, &a, err, errlen);
	rs->latency_us = a.latency_us;
	if (ret == 0 && a.status > 0) {
		rs->status = a.status;
		const char *replayed = http_answer_header(&a, "Idempotent-Replayed");
		rs->replayed = replayed && strcmp(replayed, "true") == 0;
		const char *expires = http_answer_header(&a, "Idempotency-Key-Expires");
		snprintf(rs->expires, sizeof(rs->expires), "%s", expires ? expires : "");
		size_t len = a.body_len < sizeof(rs->body) - 1 ? a.body_len : sizeof(rs->body) - 1;
		memcpy(rs->body, a.body, len);
		rs->body[len] = '\0';
		rs->body_len = len;
	}
	http_answer_free(&a);
	http_client_free(c);
	return ret;
}

/* ---- counting in PostgreSQL ---- */

int idem_count_on(PGconn *conn, const char *client, int64_t *charges, int64_t *cents, char *err,
                  size_t errlen)
{
	const char *p[] = {client};
	PGresult *res = pg_query(conn,
	                         "SELECT count(*), coalesce(sum(amount_cents), 0) FROM " SCHEMA
	                         ".charges WHERE client = $1",
	                         1, p, err, errlen);
	if (!res)
		return -1;
	int ret = -1;
	if (PQntuples(res) != 1) {
		snprintf(err, errlen, "count returned %d rows", PQntuples(res));
	} else {
		*charges = atoll(PQgetvalue(res, 0, 0));
		*cents = atoll(PQgetvalue(res, 0, 1));
		ret = 0;
	}
	PQclear(res);
	return ret;
}

int idempotency_count(const struct idempotency_config *cfg, const char *client, int64_t *charges,
                      int64_t *cents, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = idem_count_on(conn, client, charges, cents, err, errlen);
	PQfinish(conn);
	return ret;
}

int idempotency_count_keys(const struct idempotency_config *cfg, const char *client, int64_t *keys, char *err,
                           size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	const char *p[] = {client};
	int ret = pg_query_int64(conn, "SELECT count(*) FROM " SCHEMA ".idempotency_keys WHERE client = $1",
	                         1, p, keys, err, errlen);
	PQfinish(conn);
	return ret;
}

/* ---- the load of phase 3 ---- */

/* The load's requests: POST /v1/charges with a key and a body chosen by seq. */
struct load_ctx {
	const struct idempotency_config *cfg;
	const struct idem_load_spec *spec;
	char (*bodies)[128]; /* one per key, alive until the load ends */
	char (*key_names)[64];
	struct idempotency_load *r;
};

static int key_of(const struct load_ctx *lc, uint64_t seq)
{
	/* consecutive requests share a key, so they race each other from two clients */
	return (int)((seq / 2) % (uint64_t)lc->spec->keys);
}

static void load_request_cb(struct load_request *r, struct evhttp_request *req, int client, uint64_t seq,
                            void *arg)
{
	(void)client;
	struct load_ctx *lc = arg;
	int k = key_of(lc, seq);
	r->method = EVHTTP_REQ_POST;
	r->body = lc->bodies[k];
	r->body_len = strlen(lc->bodies[k]);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "X-Client-Id", lc->spec->client);
	evhttp_add_header(h, "Idempotency-Key", lc->key_names[k]);
	char ms[24];
	if (lc->spec->pause_ms > 0) {
		snprintf(ms, sizeof(ms), "%d", lc->spec->pause_ms);
		evhttp_add_header(h, "X-Lab-Pause-Ms", ms);
	}
	if (lc->spec->slow && lc->cfg->slow_every > 0 && seq % (uint64_t)lc->cfg->slow_every == 0) {
		snprintf(ms, sizeof(ms), "%d", lc->cfg->slow_ms);
		evhttp_add_header(h, "X-Lab-Delay-Ms", ms);
	}
}

static void load_response_cb(struct evhttp_request *req, int client, uint64_t seq, uint64_t latency_us,
                             void *arg)
{
	(void)client;
	(void)seq;
	(void)latency_us;
	struct load_ctx *lc = arg;
	int code = req ? evhttp_request_get_response_code(req) : 0;
	if (code == 0) {
		lc->r->no_response++;
	} else if (code == 201) {
		const char *h =
		        evhttp_find_header(evhttp_request_get_input_headers(req), "Idempotent-Replayed");
		if (h && strcmp(h, "true") == 0)
			lc->r->replayed++;
		else
			lc->r->fresh++;
	} else if (code == 409) {
		lc->r->conflict++;
	} else {
		lc->r->other++;
	}
}

static void load_progress_cb(const struct load_progress *p, void *arg)
{
	struct load_ctx *lc = arg;
	if (lc->cfg->progress_cb)
		lc->cfg->progress_cb("sending", (double)p->completed / (double)lc->spec->requests,
		                     lc->cfg->progress_arg);
}

/* The clients whose answers were lost retry each key until it is answered. */
static int settle(struct idempotency_api *api, const struct load_ctx *lc, char *err, size_t errlen)
{
	for (int k = 0; k < lc->spec->keys; k++) {
		for (int tries = 0; tries < SETTLE_TRIES; tries++) {
			struct idempotency_request rq = {
			        .client = lc->spec->client, .key = lc->key_names[k], .body = lc->bodies[k]};
			struct idempotency_response rs;
			if (idempotency_call(idempotency_api_port(api), &rq, &rs, err, errlen) < 0)
				return -1;
			lc->r->settle_requests++;
			if (rs.status == 201)
				break;
			if (rs.status != 409) {
				snprintf(err, errlen, "retry of %s got %d: %s", lc->key_names[k], rs.status,
				         rs.body);
				return -1;
			}
			hist_sleep_us(1000LL * SETTLE_EVERY_MS);
		}
	}
	return 0;
}

int idem_load_keys(const struct idempotency_config *cfg, struct idempotency_api *api,
                   const struct idem_load_spec *spec, struct idempotency_load *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	r->keys = spec->keys;
	r->requests = spec->requests;
	r->clients = spec->clients;
	int ret = -1;
	struct load_ctx lc = {.cfg = cfg, .spec = spec, .r = r};
	lc.bodies = calloc((size_t)spec->keys, sizeof(*lc.bodies));
	lc.key_names = calloc((size_t)spec->keys, sizeof(*lc.key_names));
	struct load_result *res = malloc(sizeof(*res));
	if (!lc.bodies || !lc.key_names || !res) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (int k = 0; k < spec->keys; k++) {
		/* amounts differ by key, so a doubled or lost charge shows in the cents too */
		long cents = 1000 + 37L * k;
		snprintf(lc.bodies[k], sizeof(lc.bodies[k]),
		         "{\"amount\": %ld, \"currency\": \"usd\", \"customer\": \"cus_%d\"}", cents, k);
		snprintf(lc.key_names[k], sizeof(lc.key_names[k]), "order-%d-pay", k);
		r->expected_cents += cents;
	}
	struct load_config cfgl = {
	        .port = idempotency_api_port(api),
	        .path = CHARGES_PATH,
	        .method = EVHTTP_REQ_POST,
	        .clients = spec->clients,
	        .max_requests = (uint64_t)spec->requests,
	        .timeout_ms = spec->slow ? cfg->client_timeout_ms : LOAD_TIMEOUT_MS,
	        .request_cb = load_request_cb,
	        .response_cb = load_response_cb,
	        .progress_cb = load_progress_cb,
	        .arg = &lc,
	};
	if (load_run(&cfgl, res, err, errlen) < 0)
		goto out;
	if (spec->slow && settle(api, &lc, err, errlen) < 0)
		goto out;
	if (idempotency_count(cfg, spec->client, &r->charges, &r->cents, err, errlen) < 0)
		goto out;
	ret = 0;
out:
	free(lc.bodies);
	free(lc.key_names);
	free(res);
	return ret;
}
