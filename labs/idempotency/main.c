/*
 * lab-idempotency — "What does idempotency mean in API design and why does it matter?"
 *
 * What you will see: a real payment API on 127.0.0.1 (POST /v1/charges, PostgreSQL behind it)
 * and a client that retries the way real clients do, with every charge counted in PostgreSQL:
 *   1. the answer comes after the client's timeout and it retries without a key: two charges;
 *   2. the same with an Idempotency-Key: one charge, the retry gets the stored answer replayed;
 *   3. concurrent duplicates, then hundreds of requests over a few dozen keys: one charge a key;
 *   4. the same key with another payload: 422; no key, a 256-character key, bad JSON: 400;
 *   5. the API's database connection killed between the charge and the stored response: the
 *      retry resumes from the recovery point and charges once;
 *   6. a Redis SET NX guard instead of the key in the charge's transaction: a lost or a doubled
 *      charge when the database write fails after the Redis key was set.
 *
 * Run it: make lab-idempotency (ARGS="--quick", "--json", "--step", "--serve --port 8080").
 * Limits: one machine, loopback; the lost response is made by the server answering late (a test
 * knob of the lab's own run), which is what a client sees when a network drops an answer.
 *
 * This file only tells: the experiment and every threshold are in idempotency.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idempotency.h"
#include "lab.h"
#include "pg.h"
#include "redis.h"

#define QUESTION "What does idempotency mean in API design and why does it matter?"

#define CFG(c) ((const struct idempotency_config *)(c))
#define RES(r) ((const struct idempotency_result *)(r))

static const char *money(char *buf, size_t len, int64_t cents)
{
	snprintf(buf, len, "$%s.%02lld", TERM_NUM(cents / 100, 0), (long long)(cents % 100));
	return buf;
}

static void print_story(struct lab *lab, const struct idempotency_story *st, int timeout_ms)
{
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"request", 40, 'l'}, {"client saw", 30, 'l'}, {"body", 44, 'l'}};
	term_table_header(t, 2, cols, 3);
	for (int i = 0; i < st->nattempts; i++) {
		const struct idempotency_response *rs = &st->attempts[i].rs;
		char s[64], b[80];
		if (rs->status == 0)
			snprintf(s, sizeof(s), "no answer (gave up at %d ms)", timeout_ms);
		else
			snprintf(s, sizeof(s), "%d%s", rs->status, rs->replayed ? " replayed" : "");
		if (rs->status == 0)
			snprintf(b, sizeof(b), "-");
		else if (rs->body_len > 44)
			snprintf(b, sizeof(b), "%.41s...", rs->body);
		else
			snprintf(b, sizeof(b), "%.44s", rs->body);
		const char *row[] = {st->attempts[i].what, s, b};
		term_table_row(t, 2, cols, 3, row);
	}
	char m1[48], m2[48];
	term_printf(t, "  PostgreSQL: %s%lld charge%s, %s%s for a %s order\n",
	            st->cents == st->expected_cents ? term_green(t) : term_red(t), (long long)st->charges,
	            st->charges == 1 ? "" : "s", money(m1, sizeof(m1), st->cents), term_reset(t),
	            money(m2, sizeof(m2), st->expected_cents));
}

static json_t *story_json(const struct idempotency_story *st)
{
	json_t *attempts = json_array();
	for (int i = 0; i < st->nattempts; i++)
		json_array_append_new(
		        attempts, json_pack("{s:s,s:i,s:b,s:s}", "request", st->attempts[i].what, "status",
		                            st->attempts[i].rs.status, "replayed",
		                            st->attempts[i].rs.replayed, "body", st->attempts[i].rs.body));
	return json_pack("{s:o,s:I,s:I,s:I,s:b}", "attempts", attempts, "charges", (json_int_t)st->charges,
	                 "cents", (json_int_t)st->cents, "expected_cents", (json_int_t)st->expected_cents,
	                 "bodies_identical", st->bodies_identical);
}

static void before_no_key(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "The flaky network: the answer comes after the client's timeout; it retries, no key");
}

static void after_no_key(struct lab *lab, const void *cfg, const void *result)
{
	const struct idempotency_story *st = &RES(result)->no_key;
	print_story(lab, st, CFG(cfg)->client_timeout_ms);
	if (st->charges > 1)
		term_printf(&lab->term,
		            "  the server had committed before the client gave up: the retry is a "
		            "second charge\n");
	lab_phase_metrics(lab, "no_key", story_json(&RES(result)->no_key));
}

static void before_with_key(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "The same with an Idempotency-Key: the retry gets the stored answer");
}

static void after_with_key(struct lab *lab, const void *cfg, const void *result)
{
	const struct idempotency_story *st = &RES(result)->with_key;
	const struct term *t = &lab->term;
	print_story(lab, st, CFG(cfg)->client_timeout_ms);
	term_printf(t,
	            "  replayed byte for byte: %s%s%s · Idempotency-Key-Expires: %s (the published window)\n",
	            st->bodies_identical ? term_green(t) : term_red(t), st->bodies_identical ? "yes" : "NO",
	            term_reset(t), st->nattempts > 1 ? st->attempts[1].rs.expires : "");
	lab_phase_metrics(lab, "with_key", story_json(st));
}

static void before_duplicates(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "Concurrent duplicates: the same key from many clients at the same instant");
}

static void print_load_row(const struct term *t, const struct term_col *cols, const char *label,
                           const struct idempotency_load *l)
{
	char req[48], paid[48], owed[48];
	snprintf(req, sizeof(req), "%d", l->requests);
	if (l->settle_requests)
		snprintf(req, sizeof(req), "%d + %llu", l->requests, (unsigned long long)l->settle_requests);
	const char *row[] = {label,
	                     req,
	                     TERM_NUM(l->fresh, 0),
	                     TERM_NUM(l->replayed, 0),
	                     TERM_NUM(l->conflict, 0),
	                     TERM_NUM(l->no_response, 0),
	                     TERM_NUM(l->other, 0),
	                     TERM_NUM(l->charges, 0),
	                     money(paid, sizeof(paid), l->cents),
	                     money(owed, sizeof(owed), l->expected_cents)};
	term_table_row(t, 2, cols, 10, row);
}

static json_t *load_json(const struct idempotency_load *l)
{
	return json_pack("{s:i,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "keys", l->keys, "requests",
	                 l->requests, "clients", l->clients, "retries_after", (json_int_t)l->settle_requests,
	                 "created", (json_int_t)l->fresh, "replayed", (json_int_t)l->replayed, "http_409",
	                 (json_int_t)l->conflict, "other", (json_int_t)l->other, "no_answer",
	                 (json_int_t)l->no_response, "charges", (json_int_t)l->charges, "cents",
	                 (json_int_t)l->cents, "expected_cents", (json_int_t)l->expected_cents);
}

static void after_duplicates(struct lab *lab, const void *cfgv, const void *result)
{
	const struct idempotency_config *cfg = cfgv;
	const struct idempotency_duplicates *d = &RES(result)->duplicates;
	const struct term *t = &lab->term;
	struct term_col cols[] = {
	        {"", 30, 'l'},       {"requests", 9, 'r'},  {"201 new", 7, 'r'}, {"201 replayed", 12, 'r'},
	        {"409", 4, 'r'},     {"no answer", 9, 'r'}, {"other", 5, 'r'},   {"charges", 7, 'r'},
	        {"charged", 9, 'r'}, {"owed", 9, 'r'}};
	term_table_header(t, 2, cols, 10);
	char l1[64], l2[64];
	snprintf(l1, sizeof(l1), "%d clients, 1 key, at once", d->same_instant.clients);
	snprintf(l2, sizeof(l2), "%d keys, %d clients, retries", d->mixed.keys, d->mixed.clients);
	print_load_row(t, cols, l1, &d->same_instant);
	print_load_row(t, cols, l2, &d->mixed);
	term_printf(
	        t,
	        "  first: each charge spends %d ms at the card network, so the duplicates find the key in\n"
	        "  flight and get 409 with Retry-After: 1. second: two requests per key race from two\n"
	        "  clients, one in %d is answered after the client gave up (%d ms), and every key is "
	        "retried\n"
	        "  after the load until it gets 201 (+ %llu); other: any other status\n",
	        cfg->bank_ms, cfg->slow_every, cfg->client_timeout_ms,
	        (unsigned long long)d->mixed.settle_requests);
	lab_phase_metrics(lab, "duplicates",
	                  json_pack("{s:o,s:o}", "same_instant", load_json(&d->same_instant), "mixed",
	                            load_json(&d->mixed)));
}

static void before_mismatch(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "Payload mismatch and bad requests: 422 and 400, nothing charged");
}

static void after_mismatch(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	print_story(lab, &RES(result)->mismatch, 0);
	lab_phase_metrics(lab, "mismatch", story_json(&RES(result)->mismatch));
}

static void before_crash(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab,
	          "A crash mid-request: the API's connection killed between the charge and the response");
}

static void after_crash(struct lab *lab, const void *cfgv, const void *result)
{
	const struct idempotency_config *cfg = cfgv;
	const struct idempotency_story *st = &RES(result)->crash;
	print_story(lab, st, cfg->client_timeout_ms);
	term_printf(
	        &lab->term,
	        "  pg_terminate_backend(%d) while the key stood at recovery point %s%s%s: the charge and\n"
	        "  the key were one transaction; the retry took over the lock after %d ms and resumed "
	        "there\n",
	        st->killed_pid, term_bold(&lab->term), st->recovery_point, term_reset(&lab->term),
	        cfg->lock_timeout_ms);
	json_t *m = story_json(st);
	json_object_set_new(m, "recovery_point_after_kill", json_string(st->recovery_point));
	lab_phase_metrics(lab, "crash", m);
}

static void before_guard(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "Why the key belongs in the charge's transaction: a Redis SET NX guard instead");
}

static void guard_row(const struct term *t, const struct term_col *cols,
                      const struct idempotency_guard_row *r)
{
	char st[48] = "", out[64];
	for (int a = 0; a < r->nattempts; a++) {
		char one[8];
		if (r->statuses[a])
			snprintf(one, sizeof(one), "%s%d", a ? " " : "", r->statuses[a]);
		else
			snprintf(one, sizeof(one), "%s-", a ? " " : "");
		strncat(st, one, sizeof(st) - strlen(st) - 1);
	}
	const char *o = idempotency_guard_outcome(r);
	snprintf(out, sizeof(out), "%s%s%s", strcmp(o, "once") == 0 ? term_green(t) : term_red(t), o,
	         term_reset(t));
	const char *row[] = {r->design, r->fault, st, TERM_NUM(r->charges, 0), out};
	term_table_row(t, 2, cols, 5, row);
}

static void after_guard(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct idempotency_guard *g = &RES(result)->guard;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"design", 28, 'l'},
	                          {"fault on attempt 1", 34, 'l'},
	                          {"attempts", 11, 'l'},
	                          {"charges", 7, 'r'},
	                          {"outcome", 32, 'l'}};
	term_table_header(t, 2, cols, 5);
	json_t *rows = json_array();
	for (int i = 0; i < g->nrows; i++) {
		const struct idempotency_guard_row *r = &g->rows[i];
		guard_row(t, cols, r);
		json_t *st = json_array();
		for (int a = 0; a < r->nattempts; a++)
			json_array_append_new(st, json_integer(r->statuses[a]));
		json_array_append_new(rows,
		                      json_pack("{s:s,s:s,s:o,s:I,s:s}", "design", r->design, "fault",
		                                r->fault, "statuses", st, "charges", (json_int_t)r->charges,
		                                "outcome", idempotency_guard_outcome(r)));
	}
	term_printf(
	        t,
	        "  attempts: attempt 1 with the fault (- = no answer), then two retries with the same key.\n"
	        "  Redis and PostgreSQL share no transaction: the guard must guess whether a failed write "
	        "wrote.\n"
	        "  Kept, a refused write loses the charge; deleted, a write that did land is charged twice.\n"
	        "  %lld Redis keys under lab:idempotency: deleted\n",
	        g->redis_keys_deleted);
	lab_phase_metrics(lab, "redis_guard", json_pack("{s:o}", "runs", rows));
}

static const struct lab_phase_tell TELLS[IDEMPOTENCY_PHASES] = {
        {before_no_key, after_no_key},         {before_with_key, after_with_key},
        {before_duplicates, after_duplicates}, {before_mismatch, after_mismatch},
        {before_crash, after_crash},           {before_guard, after_guard},
};

static int serve(struct lab *lab, struct idempotency_config *cfg)
{
	char err[LAB_ERRLEN], help[1200];
	if (idempotency_setup(cfg, err, sizeof(err)) < 0)
		return lab_env_error(lab, "PostgreSQL", cfg->pg_url, err);
	struct idempotency_api *api = idempotency_api_start(cfg, lab->opts.port, err, sizeof(err));
	if (!api) {
		char terr[LAB_ERRLEN];
		idempotency_teardown(cfg, terr, sizeof(terr));
		return lab_fail(lab, "cannot start the API: %s", err);
	}
	int port = idempotency_api_port(api);
	snprintf(help, sizeof(help),
	         "  POST /v1/charges                 "
	         "{\"amount\":2500,\"currency\":\"usd\",\"customer\":\"cus_ada\"}\n"
	         "                                   headers: Idempotency-Key (required, once), X-Client-Id\n"
	         "  POST /v1/charges-redis           the same, guarded by Redis SET NX (key kept on a failed "
	         "write)\n"
	         "  POST /v1/charges-redis-release   ... (key deleted on a failed write)\n"
	         "  keys expire after %d s (Idempotency-Key-Expires); reaper and completer every %d s;\n"
	         "  the lab's test knobs (X-Lab-Delay-Ms, X-Lab-Pause-Ms) are off here\n"
	         "  try: curl -si -X POST http://127.0.0.1:%d/v1/charges -H 'Idempotency-Key: k1' \\\n"
	         "        -d '{\"amount\":2500,\"currency\":\"usd\",\"customer\":\"cus_ada\"}'   (twice)\n",
	         cfg->key_window_s, cfg->reap_interval_ms / 1000, port);
	lab_serve_wait(lab, port, help);
	idempotency_api_stop(api);
	idempotency_teardown(cfg, err, sizeof(err));
	lab_free(lab);
	return LAB_EXIT_OK;
}

static void header(struct lab *lab, const struct idempotency_config *cfg)
{
	char url[256], rurl[256];
	pg_url_redact(cfg->pg_url, url, sizeof(url));
	redis_url_redact(cfg->redis_url, rurl, sizeof(rurl));
	lab_config_set(lab, "client_timeout_ms", json_integer(cfg->client_timeout_ms));
	lab_config_set(lab, "slow_ms", json_integer(cfg->slow_ms));
	lab_config_set(lab, "lock_timeout_ms", json_integer(cfg->lock_timeout_ms));
	lab_config_set(lab, "key_window_s", json_integer(cfg->key_window_s));
	lab_config_set(lab, "pool_size", json_integer(cfg->pool_size));
	lab_header(lab, "PostgreSQL %s · Redis %s · POST /v1/charges · client timeout %d ms · keys kept %d h",
	           url, rurl, cfg->client_timeout_ms, cfg->key_window_s / 3600);
}

/* Charges of phase 6's row for the design and the fault whose texts hold these words; -1: none. */
static int64_t guard_charges(const struct idempotency_guard *g, const char *design, const char *fault)
{
	for (int i = 0; i < g->nrows; i++)
		if (strstr(g->rows[i].design, design) && strstr(g->rows[i].fault, fault))
			return g->rows[i].charges;
	return -1;
}

/*
 * The key chart: charges for one order in each story, against the one it should be. The claim at
 * a glance: every bar at the line with the key in the charge's transaction; without a key, and
 * with a Redis guard under the fault that defeats it, off it (2, 0, 2).
 */
static json_t *charges_chart(const struct idempotency_config *cfg, const struct idempotency_result *r)
{
	const struct idempotency_load *m = &r->duplicates.mixed;
	char at_once[48], per_key[48];
	snprintf(at_once, sizeof(at_once), "%d at once, one key", cfg->duplicates);
	snprintf(per_key, sizeof(per_key), "%d keys, %d requests (per key)", m->keys, m->requests);
	int64_t kept = guard_charges(&r->guard, "kept", "refuses");
	int64_t deleted = guard_charges(&r->guard, "deleted", "killed");
	json_t *charges = json_pack(
	        "[I,I,I,f,I,o,o]", (json_int_t)r->no_key.charges, (json_int_t)r->with_key.charges,
	        (json_int_t)r->duplicates.same_instant.charges, m->keys ? (double)m->charges / m->keys : 0.0,
	        (json_int_t)r->crash.charges, kept < 0 ? json_null() : json_integer(kept),
	        deleted < 0 ? json_null() : json_integer(deleted));
	return json_pack("{s:s,s:s,s:[s,s,s,s,s,s,s],s:[{s:s,s:o},{s:s,s:[i,i,i,i,i,i,i],s:b}],s:b}", "title",
	                 "charges for one order, retried, duplicated or cut off", "unit", "charges", "labels",
	                 "no key, retried", "with a key, retried", at_once, per_key,
	                 "killed mid-request, retried", "Redis guard, key kept: write refused",
	                 "Redis guard, key deleted: killed after charge", "series", "name",
	                 "charges (PostgreSQL)", "values", charges, "name", "one order, one charge", "values",
	                 1, 1, 1, 1, 1, 1, 1, "line", 1, "log", 0);
}

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "idempotency", QUESTION, IDEMPOTENCY_PHASES, argc, argv) < 0)
		return lab.exit_code;
	if (lab_probe(&lab, true, true) < 0)
		return lab.exit_code;
	struct idempotency_config cfg;
	idempotency_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.redis_url = lab.opts.redis_url;
	if (lab.opts.serve)
		return serve(&lab, &cfg);

	header(&lab, &cfg);
	struct idempotency_result *result = calloc(1, sizeof(*result));
	if (!result)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, IDEMPOTENCY_PHASES, &cfg, result};
	cfg.hooks = lab_teller_hooks(&teller);
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	char err[LAB_ERRLEN];
	int ret;
	if (idempotency_run(&cfg, result, err, sizeof(err)) < 0) {
		ret = lab_run_failed(&lab, idempotency_server_name(result->lost), err);
	} else {
		struct lab_verdict verdict;
		idempotency_judge(result, &verdict);
		lab_chart(&lab, charges_chart(&cfg, result));
		ret = lab_finish(&lab, &verdict);
	}
	free(result);
	return ret;
}
