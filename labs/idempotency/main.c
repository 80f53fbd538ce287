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
 * knob), which is what a client sees when a network drops an answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idempotency.h"
#include "lab.h"
#include "pg.h"
#include "redis.h"

#define QUESTION "What does idempotency mean in API design and why does it matter?"

static const char *money(char *buf, int64_t cents)
{
	char n[32];
	term_fmt_num(n, sizeof(n), (double)(cents / 100), 0);
	snprintf(buf, 48, "$%s.%02lld", n, (long long)(cents % 100));
	return buf;
}

static const char *status_text(char *buf, const struct idempotency_response *rs, int timeout_ms)
{
	if (rs->status == 0)
		snprintf(buf, 64, "no answer (gave up at %d ms)", timeout_ms);
	else
		snprintf(buf, 64, "%d%s", rs->status, rs->replayed ? " replayed" : "");
	return buf;
}

/* The reply's body, shortened to fit a line. */
static const char *body_text(char *buf, size_t len, const struct idempotency_response *rs)
{
	if (rs->status == 0)
		snprintf(buf, len, "-");
	else if (rs->body_len > 44)
		snprintf(buf, len, "%.41s...", rs->body);
	else
		snprintf(buf, len, "%s", rs->body);
	return buf;
}

static void print_story(struct lab *lab, const struct idempotency_config *cfg,
                        const struct idempotency_story *st, int timeout_ms)
{
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"request", 40, 'l'}, {"client saw", 30, 'l'}, {"body", 44, 'l'}};
	term_table_header(t, 2, cols, 3);
	for (int i = 0; i < st->nattempts; i++) {
		char s[64], b[80];
		const char *row[] = {st->attempts[i].what, status_text(s, &st->attempts[i].rs, timeout_ms),
		                     body_text(b, sizeof(b), &st->attempts[i].rs)};
		term_table_row(t, 2, cols, 3, row);
	}
	char m1[48], m2[48];
	bool right = st->cents == st->expected_cents;
	term_printf(t, "  PostgreSQL: %s%lld charge%s, %s%s for a %s order\n",
	            right ? term_green(t) : term_red(t), (long long)st->charges, st->charges == 1 ? "" : "s",
	            money(m1, st->cents), term_reset(t), money(m2, st->expected_cents));
	(void)cfg;
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

static void print_load_row(const struct term *t, const struct term_col *cols, const char *label,
                           const struct idempotency_load *l)
{
	char b[10][48];
	snprintf(b[0], sizeof(b[0]), "%d", l->requests);
	if (l->settle_requests)
		snprintf(b[0], sizeof(b[0]), "%d + %llu", l->requests,
		         (unsigned long long)l->settle_requests);
	const char *row[] = {label,
	                     b[0],
	                     term_fmt_num(b[1], 32, (double)l->fresh, 0),
	                     term_fmt_num(b[2], 32, (double)l->replayed, 0),
	                     term_fmt_num(b[3], 32, (double)l->conflict, 0),
	                     term_fmt_num(b[4], 32, (double)l->no_response, 0),
	                     term_fmt_num(b[5], 32, (double)l->other, 0),
	                     term_fmt_num(b[6], 32, (double)l->charges, 0),
	                     money(b[7], l->cents),
	                     money(b[8], l->expected_cents)};
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

static void print_duplicates(struct lab *lab, const struct idempotency_config *cfg,
                             const struct idempotency_duplicates *d)
{
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
	        "  first: each charge spends %d ms at the card network, so the duplicates find the key in\n",
	        cfg->bank_ms);
	term_printf(t,
	            "  flight and get 409 with Retry-After: 1. second: two requests per key race from two\n");
	term_printf(t,
	            "  clients, one in %d is answered after the client gave up (%d ms), and every key is "
	            "retried\n",
	            cfg->slow_every, cfg->client_timeout_ms);
	term_printf(t, "  after the load until it gets 201 (+ %llu); other: any other status\n",
	            (unsigned long long)d->mixed.settle_requests);
}

static const char *guard_outcome(const struct idempotency_guard_row *r)
{
	int last = r->statuses[r->nattempts - 1];
	if (r->charges == 0)
		return "LOST: no charge, retries refused";
	if (r->charges > 1)
		return "DOUBLED: charged twice";
	if (last != 201)
		return "charged, the answer never comes";
	return "once";
}

static void print_guard(struct lab *lab, const struct idempotency_guard *g)
{
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"design", 28, 'l'},
	                          {"fault on attempt 1", 34, 'l'},
	                          {"attempts", 11, 'l'},
	                          {"charges", 7, 'r'},
	                          {"outcome", 32, 'l'}};
	term_table_header(t, 2, cols, 5);
	for (int i = 0; i < g->nrows; i++) {
		const struct idempotency_guard_row *r = &g->rows[i];
		char st[48] = "", n[32], out[64];
		for (int a = 0; a < r->nattempts; a++) {
			char one[8];
			snprintf(one, sizeof(one), "%s%s", a ? " " : "", r->statuses[a] ? "" : "-");
			if (r->statuses[a])
				snprintf(one, sizeof(one), "%s%d", a ? " " : "", r->statuses[a]);
			strncat(st, one, sizeof(st) - strlen(st) - 1);
		}
		const char *o = guard_outcome(r);
		bool good = strcmp(o, "once") == 0;
		snprintf(out, sizeof(out), "%s%s%s", good ? term_green(t) : term_red(t), o, term_reset(t));
		const char *row[] = {r->design, r->fault, st,
		                     term_fmt_num(n, sizeof(n), (double)r->charges, 0), out};
		term_table_row(t, 2, cols, 5, row);
	}
	term_printf(
	        t,
	        "  attempts: attempt 1 with the fault (- = no answer), then two retries with the same key.\n"
	        "  Redis and PostgreSQL share no transaction: the guard must guess whether a failed write "
	        "wrote.\n"
	        "  Kept, a refused write loses the charge; deleted, a write that did land is charged twice.\n"
	        "  %lld Redis keys under lab:idempotency: deleted\n",
	        g->redis_keys_deleted);
}

static int serve(struct lab *lab, struct idempotency_config *cfg)
{
	char err[LAB_ERRLEN];
	if (idempotency_setup(cfg, err, sizeof(err)) < 0)
		return lab_env_error(lab, "PostgreSQL", cfg->pg_url, err);
	struct idempotency_api *api = idempotency_api_start(cfg, lab->opts.port, err, sizeof(err));
	if (!api) {
		idempotency_teardown(cfg, err, sizeof(err));
		return lab_fail(lab, "cannot start the API: %s", err);
	}
	int port = idempotency_api_port(api);
	printf("  POST /v1/charges                 "
	       "{\"amount\":2500,\"currency\":\"usd\",\"customer\":\"cus_ada\"}\n"
	       "                                   headers: Idempotency-Key (required), X-Client-Id "
	       "(optional)\n"
	       "  POST /v1/charges-redis           the same, guarded by Redis SET NX (key kept on a failed "
	       "write)\n"
	       "  POST /v1/charges-redis-release   ... (key deleted on a failed write)\n"
	       "  test knobs: X-Lab-Delay-Ms (answer late, after the commit), X-Lab-Pause-Ms (pause between\n"
	       "  the charge and the stored response); keys expire after %d s (Idempotency-Key-Expires),\n"
	       "  reaped every %d s\n",
	       cfg->key_window_s, cfg->reap_interval_ms / 1000);
	printf("  try: curl -si -X POST http://127.0.0.1:%d/v1/charges -H 'Idempotency-Key: k1' \\\n"
	       "        -d '{\"amount\":2500,\"currency\":\"usd\",\"customer\":\"cus_ada\"}'   (twice)\n",
	       port);
	lab_serve_wait(lab, port, NULL);
	idempotency_api_stop(api);
	idempotency_teardown(cfg, err, sizeof(err));
	lab_free(lab);
	return LAB_EXIT_OK;
}

static bool statuses_are(const struct idempotency_story *st, const int *want, const bool *replayed, int n)
{
	if (st->nattempts != n)
		return false;
	for (int i = 0; i < n; i++)
		if (st->attempts[i].rs.status != want[i] || st->attempts[i].rs.replayed != replayed[i])
			return false;
	return true;
}

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "idempotency", QUESTION, 6, argc, argv) < 0)
		return lab.exit_code;
	struct idempotency_config cfg;
	idempotency_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.redis_url = lab.opts.redis_url;

	char err[LAB_ERRLEN];
	PGconn *probe = pg_connect(cfg.pg_url, err, sizeof(err));
	if (!probe)
		return lab_env_error(&lab, "PostgreSQL", cfg.pg_url, err);
	PQfinish(probe);
	redisContext *rprobe = redis_connect_url(cfg.redis_url, 2000, err, sizeof(err));
	if (!rprobe)
		return lab_env_error(&lab, "Redis", cfg.redis_url, err);
	redisFree(rprobe);
	if (lab.opts.serve)
		return serve(&lab, &cfg);

	char url[256], rurl[256];
	pg_url_redact(cfg.pg_url, url, sizeof(url));
	redis_url_redact(cfg.redis_url, rurl, sizeof(rurl));
	lab_config_set(&lab, "client_timeout_ms", json_integer(cfg.client_timeout_ms));
	lab_config_set(&lab, "slow_ms", json_integer(cfg.slow_ms));
	lab_config_set(&lab, "lock_timeout_ms", json_integer(cfg.lock_timeout_ms));
	lab_config_set(&lab, "key_window_s", json_integer(cfg.key_window_s));
	lab_config_set(&lab, "pool_size", json_integer(cfg.pool_size));
	lab_config_set(&lab, "quick", json_boolean(lab.opts.quick));
	lab_header(&lab,
	           "PostgreSQL %s · Redis %s · POST /v1/charges · client timeout %d ms · keys kept %d h", url,
	           rurl, cfg.client_timeout_ms, cfg.key_window_s / 3600);
	if (idempotency_setup(&cfg, err, sizeof(err)) < 0)
		return lab_fail(&lab, "cannot create schema lab_idempotency: %s", err);

	struct idempotency_story *p1 = calloc(1, sizeof(*p1)), *p2 = calloc(1, sizeof(*p2));
	struct idempotency_story *p4 = calloc(1, sizeof(*p4)), *p5 = calloc(1, sizeof(*p5));
	struct idempotency_duplicates *p3 = calloc(1, sizeof(*p3));
	struct idempotency_guard *p6 = calloc(1, sizeof(*p6));
	int ret = LAB_EXIT_ENV;
	if (!p1 || !p2 || !p3 || !p4 || !p5 || !p6) {
		ret = lab_fail(&lab, "out of memory");
		goto out;
	}

	lab_phase(&lab, "The flaky network: the answer comes after the client's timeout; it retries, no key");
	term_progress(&lab.term, "  charging …");
	if (idempotency_flaky_run(&cfg, false, p1, err, sizeof(err)) < 0)
		goto failed;
	term_progress_clear(&lab.term);
	print_story(&lab, &cfg, p1, cfg.client_timeout_ms);
	term_printf(&lab.term,
	            "  the server had committed before the client gave up: the retry is a second charge\n");
	lab_phase_metrics(&lab, "no_key", story_json(p1));

	lab_phase(&lab, "The same with an Idempotency-Key: the retry gets the stored answer");
	term_progress(&lab.term, "  charging …");
	if (idempotency_flaky_run(&cfg, true, p2, err, sizeof(err)) < 0)
		goto failed;
	term_progress_clear(&lab.term);
	print_story(&lab, &cfg, p2, cfg.client_timeout_ms);
	term_printf(&lab.term,
	            "  replayed byte for byte: %s%s%s · Idempotency-Key-Expires: %s (the published window)\n",
	            p2->bodies_identical ? term_green(&lab.term) : term_red(&lab.term),
	            p2->bodies_identical ? "yes" : "NO", term_reset(&lab.term), p2->attempts[1].rs.expires);
	lab_phase_metrics(&lab, "with_key", story_json(p2));

	lab_phase(&lab, "Concurrent duplicates: the same key from many clients at the same instant");
	term_progress(&lab.term, "  sending …");
	if (idempotency_duplicates_run(&cfg, p3, err, sizeof(err)) < 0)
		goto failed;
	term_progress_clear(&lab.term);
	print_duplicates(&lab, &cfg, p3);
	lab_phase_metrics(&lab, "duplicates",
	                  json_pack("{s:o,s:o}", "same_instant", load_json(&p3->same_instant), "mixed",
	                            load_json(&p3->mixed)));

	lab_phase(&lab, "Payload mismatch and bad requests: 422 and 400, nothing charged");
	if (idempotency_mismatch_run(&cfg, p4, err, sizeof(err)) < 0)
		goto failed;
	print_story(&lab, &cfg, p4, 0);
	lab_phase_metrics(&lab, "mismatch", story_json(p4));

	lab_phase(&lab,
	          "A crash mid-request: the API's connection killed between the charge and the response");
	term_progress(&lab.term, "  charging, then killing the backend …");
	if (idempotency_crash_run(&cfg, p5, err, sizeof(err)) < 0)
		goto failed;
	term_progress_clear(&lab.term);
	print_story(&lab, &cfg, p5, cfg.client_timeout_ms);
	term_printf(
	        &lab.term,
	        "  pg_terminate_backend(%d) while the key stood at recovery point %s%s%s: the charge and\n"
	        "  the key were one transaction; the retry took over the lock after %d ms and resumed "
	        "there\n",
	        p5->killed_pid, term_bold(&lab.term), p5->recovery_point, term_reset(&lab.term),
	        cfg.lock_timeout_ms);
	json_t *m5 = story_json(p5);
	json_object_set_new(m5, "recovery_point_after_kill", json_string(p5->recovery_point));
	lab_phase_metrics(&lab, "crash", m5);

	lab_phase(&lab, "Why the key belongs in the charge's transaction: a Redis SET NX guard instead");
	term_progress(&lab.term, "  six runs …");
	if (idempotency_guard_run(&cfg, p6, err, sizeof(err)) < 0)
		goto failed;
	term_progress_clear(&lab.term);
	print_guard(&lab, p6);
	json_t *rows = json_array();
	int pg_once = 0, lost = 0, doubled = 0;
	for (int i = 0; i < p6->nrows; i++) {
		const struct idempotency_guard_row *r = &p6->rows[i];
		json_t *st = json_array();
		for (int a = 0; a < r->nattempts; a++)
			json_array_append_new(st, json_integer(r->statuses[a]));
		json_array_append_new(rows, json_pack("{s:s,s:s,s:o,s:I,s:s}", "design", r->design, "fault",
		                                      r->fault, "statuses", st, "charges",
		                                      (json_int_t)r->charges, "outcome", guard_outcome(r)));
		if (strncmp(r->design, "key in", 6) == 0 && strcmp(guard_outcome(r), "once") == 0)
			pg_once++;
		if (r->charges == 0)
			lost++;
		if (r->charges > 1)
			doubled++;
	}
	lab_phase_metrics(&lab, "redis_guard", json_pack("{s:o}", "runs", rows));

	if (idempotency_teardown(&cfg, err, sizeof(err)) < 0)
		goto failed;

	/* The verdict: every phase's claim, checked against what PostgreSQL counted. */
	const int want4[] = {201, 422, 201, 400, 400, 400};
	const bool rep4[] = {false, false, true, false, false, false};
	const int want5[] = {0, 409, 201, 201};
	const bool rep5[] = {false, false, false, true};
	const char *why = NULL;
	char whybuf[256];
	if (p1->charges != 2) {
		snprintf(whybuf, sizeof(whybuf), "without a key the retry made %lld charges, not 2",
		         (long long)p1->charges);
		why = whybuf;
	} else if (p2->charges != 1 || !p2->attempts[1].rs.replayed || !p2->bodies_identical) {
		snprintf(whybuf, sizeof(whybuf), "with a key: %lld charges, replayed %s, identical bodies %s",
		         (long long)p2->charges, p2->attempts[1].rs.replayed ? "yes" : "no",
		         p2->bodies_identical ? "yes" : "no");
		why = whybuf;
	} else if (p3->same_instant.charges != 1 || p3->same_instant.fresh != 1 ||
	           p3->mixed.charges != p3->mixed.keys || p3->mixed.cents != p3->mixed.expected_cents) {
		snprintf(whybuf, sizeof(whybuf), "duplicates: %lld charges for one key; %lld for %d keys",
		         (long long)p3->same_instant.charges, (long long)p3->mixed.charges, p3->mixed.keys);
		why = whybuf;
	} else if (!statuses_are(p4, want4, rep4, 6) || p4->charges != 1 || p4->cents != 1000) {
		why = "the mismatch and bad requests did not get 422 and 400 with nothing charged";
	} else if (!statuses_are(p5, want5, rep5, 4) || p5->charges != 1 ||
	           strcmp(p5->recovery_point, "charge_created") != 0) {
		snprintf(whybuf, sizeof(whybuf), "after the crash: %lld charges, recovery point %s",
		         (long long)p5->charges, p5->recovery_point);
		why = whybuf;
	} else if (pg_once != 2 || lost == 0 || doubled == 0) {
		snprintf(whybuf, sizeof(whybuf),
		         "the Redis guard: PostgreSQL key once in %d of 2 runs, %d lost, %d doubled", pg_once,
		         lost, doubled);
		why = whybuf;
	}
	char m[2][48];
	ret = lab_verdict(
	        &lab, why == NULL,
	        "with the key stored in the charge's transaction, a request retried, duplicated or cut off "
	        "mid-way charges exactly once",
	        "%s%sno key: %lld charges for one order; with a key: 1, the retry replayed byte for byte; "
	        "%d keys under %d requests: %lld charges, %s of %s; crash at %s: 1 charge; Redis guard: %d "
	        "lost, "
	        "%d doubled",
	        why ? why : "", why ? ". " : "", (long long)p1->charges, p3->mixed.keys, p3->mixed.requests,
	        (long long)p3->mixed.charges, money(m[0], p3->mixed.cents),
	        money(m[1], p3->mixed.expected_cents), p5->recovery_point, lost, doubled);
	goto out;
failed:
	term_progress_clear(&lab.term);
	{
		char terr[LAB_ERRLEN];
		idempotency_teardown(&cfg, terr, sizeof(terr));
	}
	ret = lab_fail(&lab, "%s", err);
out:
	free(p1);
	free(p2);
	free(p3);
	free(p4);
	free(p5);
	free(p6);
	return ret;
}
