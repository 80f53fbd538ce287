/*
 * idempotency.c — lab-idempotency's experiment as a whole: its config, the schema, the request
 * fingerprint, the run over the six phases (phases.c) with the question --predict asks before
 * each, and the judge that decides from their numbers. The API is in api.c, api_redis.c and
 * jobs.c, the client in client.c (internal.h says which file holds what). The telling is in
 * main.c; nothing here prints.
 */
#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"

void idempotency_config_default(struct idempotency_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	cfg->redis_url = NULL;
	/* 8 connections: more than the 2 cores need, so duplicates race in the server, not the pool */
	cfg->pool_size = 8;
	/* two open at start: every phase starts its own API, and opening 8 would cost more than most
	 * phases; the loads of phase 3 open all 8 first, so duplicates race in the server */
	cfg->pool_min_idle = 2;
	cfg->acquire_timeout_ms = 2000;
	cfg->require_key = true;
	/* 24 h: Stripe's window; published on every keyed response */
	cfg->key_window_s = 24 * 3600;
	/* a request that holds its key this long is dead: hundreds of times a charge here, and well
	 * past the client's timeout, so a retry at once still finds the key in flight */
	cfg->lock_timeout_ms = 1000;
	/* 4 KiB: a charge is under 100 bytes */
	cfg->max_body = 4096;
	/* off: an API anyone can reach (--serve) must not let a header park its connections in
	 * pg_sleep; the lab's own phases turn them on for their APIs */
	cfg->test_knobs = false;
	/* the reaper and the completer every minute, as a cron would run them */
	cfg->reap_interval_ms = 60000;
	cfg->complete_interval_ms = 60000;
	/* the client waits 200 ms, the slow response comes two or three times too late */
	cfg->client_timeout_ms = 200;
	cfg->slow_ms = quick ? 400 : 600;
	/* long enough for the lab to find the paused backend and kill it */
	cfg->pause_ms = 5000;
	cfg->duplicates = quick ? 16 : 32;
	/* 100 ms at the card network: the window in which duplicates find the key in flight */
	cfg->bank_ms = 100;
	cfg->mixed_keys = quick ? 20 : 40;
	cfg->mixed_requests = quick ? 200 : 600;
	cfg->mixed_clients = 8;
	/* one request in ten is answered after the client gave up: it retries later, same key */
	cfg->slow_every = 10;
}

int idempotency_setup(const struct idempotency_config *cfg, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	if (pg_schema_create(conn, SCHEMA, err, errlen) < 0)
		goto out;
	/*
	 * The key's length and the recovery point's values as types, not as CHECK constraints on the
	 * table: PostgreSQL parses and plans a table's CHECK expressions again on every execution of
	 * an INSERT (ExecRelCheck), about 2.5 µs each per key here, while an enum is checked as its
	 * value is read and a domain's CHECK is planned once per connection (the type cache). The
	 * same rules, on the hottest statement.
	 */
	if (pg_exec(conn,
	            "CREATE TYPE " SCHEMA ".recovery_point AS ENUM ('charge_created', 'finished');"
	            "CREATE DOMAIN " SCHEMA
	            ".idempotency_key AS text CHECK (length(VALUE) BETWEEN 1 AND 255);"
	            "CREATE TABLE " SCHEMA ".idempotency_keys ("
	            " id bigserial PRIMARY KEY,"
	            " client text NOT NULL,"
	            " key " SCHEMA ".idempotency_key NOT NULL,"
	            " fingerprint text NOT NULL,"
	            " recovery_point " SCHEMA ".recovery_point NOT NULL,"
	            " locked_at timestamptz,"
	            " response_code int,"
	            " response_body text,"
	            " created_at timestamptz NOT NULL DEFAULT now(),"
	            " UNIQUE (client, key));"
	            "CREATE INDEX ON " SCHEMA ".idempotency_keys (created_at);"
	            "CREATE TABLE " SCHEMA ".charges ("
	            " id bigserial PRIMARY KEY,"
	            " idempotency_key_id bigint REFERENCES " SCHEMA ".idempotency_keys ON DELETE SET NULL,"
	            " client text NOT NULL,"
	            " idempotency_key text,"
	            " customer text NOT NULL,"
	            " amount_cents bigint NOT NULL CHECK (amount_cents > 0),"
	            " currency text NOT NULL,"
	            " created_at timestamptz NOT NULL DEFAULT now());"
	            "CREATE INDEX ON " SCHEMA ".charges (idempotency_key_id);"
	            "CREATE INDEX ON " SCHEMA ".charges (client)",
	            err, errlen) < 0)
		goto out;
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

int idempotency_teardown(const struct idempotency_config *cfg, char *err, size_t errlen)
{
	int ret = pg_url_schema_drop(cfg->pg_url, SCHEMA, err, errlen);
	if (cfg->redis_url) {
		/* the keys go even when the schema could not: what one server lost, the other still owes */
		char rerr[LAB_ERRLEN];
		redisContext *rc = redis_connect_url(cfg->redis_url, 2000, rerr, sizeof(rerr));
		int rret = rc ? redis_del_prefix(rc, REDIS_PREFIX, NULL, rerr, sizeof(rerr)) : -1;
		if (rc)
			redisFree(rc);
		if (rret < 0 && ret == 0) {
			snprintf(err, errlen, "%s", rerr);
			ret = -1;
		}
	}
	return ret;
}

int idempotency_fingerprint(const char *method, const char *path, const char *json_body, char out[65],
                            char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *doc = json_loads(json_body, JSON_DECODE_ANY, &jerr);
	if (!doc) {
		snprintf(err, errlen, "invalid JSON: %s", jerr.text);
		return -1;
	}
	/* canonical: keys sorted, no whitespace, so {"a":1, "b":2} and {"b":2,"a":1} match */
	char *canon = json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(doc);
	if (!canon) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int ret = idem_fingerprint_canonical(method, path, canon, out, err, errlen);
	free(canon);
	return ret;
}

int idem_fingerprint_canonical(const char *method, const char *path, const char *canon, char out[65],
                               char *err, size_t errlen)
{
	/* "METHOD PATH\n" and the body, fed to one digest: no copy of the body */
	EVP_MD_CTX *md_ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int ok = md_ctx && EVP_DigestInit_ex(md_ctx, EVP_sha256(), NULL) &&
	         EVP_DigestUpdate(md_ctx, method, strlen(method)) && EVP_DigestUpdate(md_ctx, " ", 1) &&
	         EVP_DigestUpdate(md_ctx, path, strlen(path)) && EVP_DigestUpdate(md_ctx, "\n", 1) &&
	         EVP_DigestUpdate(md_ctx, canon, strlen(canon)) && EVP_DigestFinal_ex(md_ctx, md, &mdlen);
	EVP_MD_CTX_free(md_ctx);
	if (!ok || mdlen != 32) {
		snprintf(err, errlen, "SHA-256 failed (libcrypto)");
		return -1;
	}
	static const char hex[] = "0123456789abcdef";
	for (unsigned i = 0; i < mdlen; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
	return 0;
}

const char *idempotency_server_name(enum idempotency_server s)
{
	return s == IDEMPOTENCY_SERVER_PG ? "PostgreSQL" : s == IDEMPOTENCY_SERVER_REDIS ? "Redis" : NULL;
}

int idem_lost(const struct idempotency_config *cfg, struct idempotency_result *r, char *err, size_t errlen)
{
	if (r->lost != IDEMPOTENCY_SERVER_NONE || lab_interrupted())
		return -1;
	char said[LAB_ERRLEN];
	PGconn *conn = pg_connect(cfg->pg_url, said, sizeof(said));
	if (!conn) {
		r->lost = IDEMPOTENCY_SERVER_PG;
		snprintf(err, errlen, "%s", said);
		return -1;
	}
	PQfinish(conn);
	if (!cfg->redis_url)
		return -1;
	redisContext *rc = redis_connect_url(cfg->redis_url, 1000, said, sizeof(said));
	redisReply *pong = rc ? redis_cmd(rc, said, sizeof(said), "PING") : NULL;
	if (!pong) {
		r->lost = IDEMPOTENCY_SERVER_REDIS;
		snprintf(err, errlen, "%s", said);
	}
	if (pong)
		freeReplyObject(pong);
	if (rc)
		redisFree(rc);
	return -1;
}

/*
 * ---- what --predict asks before each phase (struct lab_question), and what answers it ----
 * Each reads struct idempotency_config and struct idempotency_result.
 */

#define CFG(p) ((const struct idempotency_config *)(p))
#define RES(p) ((const struct idempotency_result *)(p))

static double q_flaky_given(const void *cfg, int i)
{
	return i == 0 ? CFG(cfg)->client_timeout_ms : CFG(cfg)->slow_ms;
}

static double q_no_key_measured(const void *cfg, const void *res)
{
	(void)cfg;
	return (double)RES(res)->no_key.charges;
}

static const struct lab_question Q_NO_KEY = {
        .text = "A client gives up after {} ms on a charge the server answers after {} ms, and retries "
                "with no Idempotency-Key: how many charges for the one order?",
        .given = q_flaky_given,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "charges",
        .measured = q_no_key_measured,
        .why = "a timeout says nothing about the server: it had committed the charge before the "
               "client gave up, and the retry is a new request"};

static double q_with_key_measured(const void *cfg, const void *res)
{
	(void)cfg;
	return (double)RES(res)->with_key.charges;
}

static const struct lab_question Q_WITH_KEY = {
        .text = "The same slow charge sent three times (the first, the retry, and one more) with the "
                "same Idempotency-Key: how many charges?",
        .kind = LAB_ANSWER_NUMBER,
        .unit = "charges",
        .measured = q_with_key_measured,
        .why = "the key is stored with the charge: a retry finds it and gets the stored response, byte "
               "for byte (Idempotent-Replayed: true), and nothing runs twice"};

static double q_duplicates_given(const void *cfg, int i)
{
	return i == 0 ? CFG(cfg)->duplicates : CFG(cfg)->bank_ms;
}

static double q_duplicates_measured(const void *cfg, const void *res)
{
	(void)cfg;
	return (double)RES(res)->duplicates.same_instant.conflict;
}

/* ±2: the duplicates are sent at once, but on a busy machine one may reach the API after the
 * first charge's bank_ms and get the stored answer instead of a 409 */
static const struct lab_question Q_DUPLICATES = {
        .text = "{} clients send the same Idempotency-Key at the same instant; a charge spends {} ms "
                "at the card network: how many of them get 409 Conflict?",
        .given = q_duplicates_given,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "409s",
        .within = 2,
        .measured = q_duplicates_measured,
        .why = "the first takes the key (unique on client and key) and charges; the others find it in "
               "flight and get 409 with Retry-After, not a wait and not a second charge (±2)"};

/* What the second request of phase 4 (another payload, the same key) got, as a choice. */
static double q_mismatch_measured(const void *cfg, const void *res)
{
	(void)cfg;
	const struct idempotency_story *st = &RES(res)->mismatch;
	if (st->nattempts < 2)
		return NAN;
	const struct idempotency_response *rs = &st->attempts[1].rs;
	return rs->status == 201 && rs->replayed ? 0 : rs->status == 422 ? 1 : rs->status == 201 ? 2 : NAN;
}

static const struct lab_question Q_MISMATCH = {
        .text = "A $10.00 charge succeeded with Idempotency-Key order-7-pay. Then a $50.00 charge comes "
                "with the same key: the API answers",
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"201: the stored $10.00 charge, replayed", "422: this key was used with another payload",
                    "201: a new $50.00 charge"},
        .measured = q_mismatch_measured,
        .why = "the key is stored with a fingerprint of the request (SHA-256 of method, path, canonical "
               "body): the same key on another payload is a client bug, refused (the IETF draft, Stripe)"};

/* Where the kill left the key: gone with the charge, beside it, or finished. */
static double q_crash_measured(const void *cfg, const void *res)
{
	(void)cfg;
	const char *rp = RES(res)->crash.recovery_point;
	return !strcmp(rp, "(no key)")         ? 0
	       : !strcmp(rp, "charge_created") ? 1
	       : !strcmp(rp, "finished")       ? 2
	                                       : NAN;
}

static const struct lab_question Q_CRASH = {
        .text = "A keyed request is two transactions: (1) the key and the charge, (2) the stored "
                "response. Its connection is killed between them: the key stands at",
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"nothing: the key went with the rollback",
                    "charge_created: the charge is there, no response", "finished: the response is stored"},
        .measured = q_crash_measured,
        .why = "(1) committed, (2) never ran: the key records how far the request got, so a retry after "
               "the lock timeout resumes from charge_created instead of charging again"};

/*
 * Phase 6's designs as the choices list them: the Redis guard keeping its key, deleting it, and
 * the key in PostgreSQL (rows are told apart by key_in_pg and the design's text, phases.c).
 */
static int guard_choice(const struct idempotency_guard_row *row)
{
	return row->key_in_pg ? 2 : strstr(row->design, "kept") ? 0 : strstr(row->design, "deleted") ? 1 : -1;
}

/* The one design whose every row charged once and answered; NAN when none or several did. */
static double q_guard_measured(const void *cfg, const void *res)
{
	(void)cfg;
	const struct idempotency_guard *g = &RES(res)->guard;
	bool seen[3] = {false}, failed[3] = {false};
	for (int i = 0; i < g->nrows; i++) {
		int c = guard_choice(&g->rows[i]);
		if (c < 0)
			return NAN;
		seen[c] = true;
		failed[c] |= strcmp(idempotency_guard_outcome(&g->rows[i]), "once") != 0;
	}
	int once = -1;
	for (int c = 0; c < 3; c++)
		if (seen[c] && !failed[c]) {
			if (once >= 0)
				return NAN;
			once = c;
		}
	return once >= 0 ? once : NAN;
}

static const struct lab_question Q_GUARD = {
        .text = "Two faults: the database refuses the charge's write, or the connection dies after the "
                "charge. Which guard charges exactly once, and answers, under both?",
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"Redis SET NX, the key kept when the write fails",
                    "Redis SET NX, the key deleted when the write fails",
                    "the key in PostgreSQL, in the charge's own transaction"},
        .measured = q_guard_measured,
        .why = "Redis and PostgreSQL share no transaction, so the guard must guess whether a failed write "
               "wrote: kept loses a refused charge, deleted doubles a landed one"};

/* The phases, in the order main.c tells them. */
static const struct lab_phase_def PHASES[IDEMPOTENCY_PHASES] = {
        {"no_key", idempotency_phase_no_key, &Q_NO_KEY},
        {"with_key", idempotency_phase_with_key, &Q_WITH_KEY},
        {"duplicates", idempotency_phase_duplicates, &Q_DUPLICATES},
        {"mismatch", idempotency_phase_mismatch, &Q_MISMATCH},
        {"crash", idempotency_phase_crash, &Q_CRASH},
        {"redis_guard", idempotency_phase_guard, &Q_GUARD},
};

int idempotency_run(const struct idempotency_config *cfg, struct idempotency_result *result, char *err,
                    size_t errlen)
{
	memset(result, 0, sizeof(*result));
	if (idempotency_setup(cfg, err, errlen) < 0)
		return idem_lost(cfg, result, err, errlen);
	int ret = lab_phases_walk(PHASES, IDEMPOTENCY_PHASES, cfg, result, &cfg->hooks, err, errlen);
	/* Ctrl-C: common/lab.c's guard drops the schema and the keys; a teardown of ours would only
	 * race it (as in every lab) */
	if (ret < 0 && lab_interrupted())
		return -1;
	char terr[LAB_ERRLEN];
	if (idempotency_teardown(cfg, terr, sizeof(terr)) < 0 && ret == 0) {
		snprintf(err, errlen, "teardown: %s", terr);
		return idem_lost(cfg, result, err, errlen);
	}
	return ret;
}

/* ---- the judge ---- */

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Phase 1: without a key, the attempt the client gave up on and its retry are two charges: the
 * problem a key solves, shown rather than assumed */
#define NO_KEY_CHARGES 2
/* Phases 2 to 5: one order is one charge, whatever the network and the clients did */
#define ONE_CHARGE 1
/* Phase 4, in order: the first charge, another payload with its key (422, the draft), the first
 * payload reordered (the stored answer), then no key, a 256-character key and bad JSON (400) */
static const int MISMATCH_STATUS[] = {201, 422, 201, 400, 400, 400};
static const bool MISMATCH_REPLAYED[] = {false, false, true, false, false, false};
#define MISMATCH_CENTS 1000
/* Phase 5, in order: no answer (the backend was killed), 409 (the dead request still holds the
 * key), 201 (the retry past the lock timeout resumed it), 201 replayed */
static const int CRASH_STATUS[] = {0, 409, 201, 201};
static const bool CRASH_REPLAYED[] = {false, false, false, true};
/* the kill came after the key and the charge were committed together */
#define CRASH_RECOVERY_POINT "charge_created"
/* Phase 6: the key in PostgreSQL charges once under both faults; the Redis guard loses a charge
 * under one and doubles it under the other, or the phase shows nothing */
#define GUARD_PG_ONCE     2
#define GUARD_MIN_LOST    1
#define GUARD_MIN_DOUBLED 1

static bool statuses_are(const struct idempotency_story *st, const int *want, const bool *replayed, int n)
{
	if (st->nattempts != n)
		return false;
	for (int i = 0; i < n; i++)
		if (st->attempts[i].rs.status != want[i] || st->attempts[i].rs.replayed != replayed[i])
			return false;
	return true;
}

/* "201 422 201r": n statuses, r for a replay, - for no answer. */
static const char *codes_text(const int *status, const bool *replayed, int n, char *buf, size_t len)
{
	size_t used = 0;
	buf[0] = '\0';
	for (int i = 0; i < n && used < len; i++) {
		int w = status[i] ? snprintf(buf + used, len - used, "%s%d%s", i ? " " : "", status[i],
		                             replayed[i] ? "r" : "")
		                  : snprintf(buf + used, len - used, "%s-", i ? " " : "");
		used += w > 0 ? (size_t)w : 0;
	}
	return buf;
}

/* What a story got, as codes_text writes it. */
static const char *story_text(const struct idempotency_story *st, char *buf, size_t len)
{
	int status[IDEMPOTENCY_MAX_ATTEMPTS];
	bool replayed[IDEMPOTENCY_MAX_ATTEMPTS];
	for (int i = 0; i < st->nattempts; i++) {
		status[i] = st->attempts[i].rs.status;
		replayed[i] = st->attempts[i].rs.replayed;
	}
	return codes_text(status, replayed, st->nattempts, buf, len);
}

/* Phases 1, 2, 4 and 5: the first that disagrees, into why; false when all agree. */
static bool stories_disagree(const struct idempotency_result *r, char *why, size_t len)
{
	const struct idempotency_story *p2 = &r->with_key, *p4 = &r->mismatch, *p5 = &r->crash;
	char got[64], want[64];
	if (r->no_key.charges != NO_KEY_CHARGES)
		snprintf(why, len, "without a key the retry made %lld charges, not %d",
		         (long long)r->no_key.charges, NO_KEY_CHARGES);
	else if (p2->charges != ONE_CHARGE || p2->nattempts < 2 || !p2->attempts[1].rs.replayed ||
	         !p2->bodies_identical)
		snprintf(why, len, "with a key: %lld charges, replayed %s, identical bodies %s",
		         (long long)p2->charges,
		         p2->nattempts > 1 && p2->attempts[1].rs.replayed ? "yes" : "no",
		         p2->bodies_identical ? "yes" : "no");
	else if (!statuses_are(p4, MISMATCH_STATUS, MISMATCH_REPLAYED, NELEM(MISMATCH_STATUS)) ||
	         p4->charges != ONE_CHARGE || p4->cents != MISMATCH_CENTS)
		snprintf(why, len, "payload mismatch and bad requests: %s and %lld charges, not %s and %d",
		         story_text(p4, got, sizeof(got)), (long long)p4->charges,
		         codes_text(MISMATCH_STATUS, MISMATCH_REPLAYED, NELEM(MISMATCH_STATUS), want,
		                    sizeof(want)),
		         ONE_CHARGE);
	else if (!statuses_are(p5, CRASH_STATUS, CRASH_REPLAYED, NELEM(CRASH_STATUS)) ||
	         p5->charges != ONE_CHARGE || strcmp(p5->recovery_point, CRASH_RECOVERY_POINT) != 0)
		snprintf(why, len, "after the crash: %s, %lld charges, recovery point %s (not %s, %d, %s)",
		         story_text(p5, got, sizeof(got)), (long long)p5->charges, p5->recovery_point,
		         codes_text(CRASH_STATUS, CRASH_REPLAYED, NELEM(CRASH_STATUS), want, sizeof(want)),
		         ONE_CHARGE, CRASH_RECOVERY_POINT);
	else
		return false;
	return true;
}

static bool duplicates_disagree(const struct idempotency_duplicates *d, char *why, size_t len)
{
	if (d->same_instant.charges == ONE_CHARGE && d->same_instant.fresh == 1 &&
	    d->mixed.charges == d->mixed.keys && d->mixed.cents == d->mixed.expected_cents)
		return false;
	snprintf(why, len, "duplicates: %lld charges for one key; %lld for %d keys",
	         (long long)d->same_instant.charges, (long long)d->mixed.charges, d->mixed.keys);
	return true;
}

static void guard_counts(const struct idempotency_guard *g, int *pg_once, int *lost, int *doubled)
{
	*pg_once = *lost = *doubled = 0;
	for (int i = 0; i < g->nrows; i++) {
		const struct idempotency_guard_row *row = &g->rows[i];
		if (row->key_in_pg && strcmp(idempotency_guard_outcome(row), "once") == 0)
			(*pg_once)++;
		*lost += row->charges == 0;
		*doubled += row->charges > 1;
	}
}

static const char *money(char *buf, size_t len, int64_t cents)
{
	snprintf(buf, len, "$%s.%02lld", TERM_NUM(cents / 100, 0), (long long)(cents % 100));
	return buf;
}

void idempotency_judge(const struct idempotency_result *r, struct lab_verdict *v)
{
	char why[256] = "";
	int pg_once, lost, doubled;
	guard_counts(&r->guard, &pg_once, &lost, &doubled);
	if (!stories_disagree(r, why, sizeof(why)) &&
	    !duplicates_disagree(&r->duplicates, why, sizeof(why)) &&
	    (pg_once != GUARD_PG_ONCE || lost < GUARD_MIN_LOST || doubled < GUARD_MIN_DOUBLED))
		snprintf(why, sizeof(why),
		         "the Redis guard: PostgreSQL key once in %d of %d runs, %d lost, %d doubled",
		         pg_once, GUARD_PG_ONCE, lost, doubled);
	const struct idempotency_load *m = &r->duplicates.mixed;
	char paid[48], owed[48];
	lab_verdict_set(
	        v, why[0] == '\0',
	        "with the key stored in the charge's transaction, a request retried, duplicated or cut off "
	        "mid-way charges exactly once",
	        "%s%sno key: %lld charges for one order; with a key: %lld, the retry replayed byte for byte; "
	        "%d keys under %d requests: %lld charges, %s of %s; crash at %s: %lld charge; Redis guard: "
	        "%d lost, %d doubled",
	        why, why[0] ? ". " : "", (long long)r->no_key.charges, (long long)r->with_key.charges,
	        m->keys, m->requests, (long long)m->charges, money(paid, sizeof(paid), m->cents),
	        money(owed, sizeof(owed), m->expected_cents), r->crash.recovery_point,
	        (long long)r->crash.charges, lost, doubled);
}
