/*
 * lab-authz — "What's the difference between authentication and authorization?"
 *
 * A real API with a login (PBKDF2, salted) that issues RS256 JWTs (libjwt), attacked for real:
 * forged tokens against a naive verifier and the fixed one (OWASP A07), 401 vs 403 and BOLA on
 * /v1/orders/{id} (OWASP A01, API1:2023), and revocation with a deny-list in Redis.
 * Usage: lab-authz [--quick] [--json] [--step] [--seed N] [--serve [--port N] [--vulnerable]]
 *
 * This file only tells: the experiment and every threshold are in authz.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz.h"
#include "pg.h"
#include "redis.h"

#define QUESTION "What's the difference between authentication and authorization?"

#define RES(r) ((const struct authz_result *)(r))

static void status_cell(const struct term *t, char *out, size_t len, int got, bool good)
{
	snprintf(out, len, "%s%d%s", good ? term_green(t) : term_red(t), got, term_reset(t));
}

/* the error_description of a WWW-Authenticate value, or the value itself when it has none */
static void description(const char *www, char *out, size_t len)
{
	const char *d = strstr(www, "error_description=\"");
	if (!d) {
		snprintf(out, len, "%s", www[0] ? www : "-");
		return;
	}
	d += strlen("error_description=\"");
	snprintf(out, len, "%.*s", (int)strcspn(d, "\""), d);
}

static json_t *rows_json(const struct authz_call_row *rows, int n)
{
	json_t *a = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:s,s:i,s:i,s:s,s:b}", "request", rows[i].what, "status",
		                                   rows[i].got, "want", rows[i].want, "www_authenticate",
		                                   rows[i].www, "wrote", rows[i].changed));
	return a;
}

static void call_table(const struct term *t, const struct authz_call_row *rows, int n, bool wrote)
{
	struct term_col cols[] = {{"request", 38, 'l'},
	                          {"status", 6, 'r'},
	                          {"want", 4, 'r'},
	                          {"wrote", 5, 'l'},
	                          {"WWW-Authenticate", 34, 'l'}};
	term_table_header(t, 2, cols, 5);
	for (int i = 0; i < n; i++) {
		char st[32], want[8], www[64];
		status_cell(t, st, sizeof(st), rows[i].got, rows[i].got == rows[i].want);
		snprintf(want, sizeof(want), "%d", rows[i].want);
		/* the challenge up to its error_description (which the forged-token table shows) */
		const char *w = rows[i].www[0] ? rows[i].www : "-";
		snprintf(www, sizeof(www), "%.*s", (int)strcspn(w, ","), w);
		const char *cells[] = {rows[i].what, st, want, wrote ? (rows[i].changed ? "yes" : "no") : "-",
		                       www};
		term_table_row(t, 2, cols, 5, cells);
	}
}

static void before_login(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "Authentication: who are you? A password, once; then a signed token");
}

static void after_login(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct authz_login *p = &RES(result)->login;
	const struct term *t = &lab->term;
	call_table(t, p->rows, p->nrows, false);
	term_printf(t,
	            "  token %s\n  one login: %s (PBKDF2-HMAC-SHA256, %s rounds, salted); wrong password and "
	            "unknown "
	            "user: the same 401\n",
	            p->claims, TERM_US(p->login_ms * 1000), TERM_NUM(p->iterations, 0));
	lab_phase_metrics(lab, "login",
	                  json_pack("{s:o,s:s,s:f,s:i}", "requests", rows_json(p->rows, p->nrows), "claims",
	                            p->claims, "login_ms", p->login_ms, "pbkdf2_iterations", p->iterations));
}

static void before_attacks(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "Forged tokens (OWASP A07): naive verifier (the token names its alg) vs fixed (RS256 "
	               "pinned)");
}

static void after_attacks(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct authz_attacks *p = &RES(result)->attacks;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"token", 34, 'l'}, {"alg", 5, 'l'},
	                          {"naive", 5, 'r'},  {"naive took it as", 16, 'l'},
	                          {"fixed", 5, 'r'},  {"fixed says (error_description)", 38, 'l'}};
	term_table_header(t, 2, cols, 6);
	json_t *rows = json_array();
	for (int i = 0; i < p->nrows; i++) {
		const struct authz_attack_row *r = &p->rows[i];
		char naive[32], fixed[32], desc[64];
		status_cell(t, naive, sizeof(naive), r->naive,
		            !authz_naive_falls_for(i) || !authz_accepted(r->naive));
		status_cell(t, fixed, sizeof(fixed), r->fixed,
		            i == AUTHZ_ATK_VALID ? authz_accepted(r->fixed) : r->fixed == 401);
		description(r->fixed_www, desc, sizeof(desc));
		const char *cells[] = {r->what, r->alg, naive, r->naive_as[0] ? r->naive_as : "-",
		                       fixed,   desc};
		term_table_row(t, 2, cols, 6, cells);
		json_array_append_new(rows,
		                      json_pack("{s:s,s:s,s:i,s:s,s:i,s:s}", "token", r->what, "alg", r->alg,
		                                "naive", r->naive, "naive_as", r->naive_as, "fixed", r->fixed,
		                                "fixed_www_authenticate", r->fixed_www));
	}
	term_printf(
	        t,
	        "  red = a forged token let in; another key's signature fails in both (libjwt checks it).\n"
	        "  Every 401: WWW-Authenticate: Bearer error=\"invalid_token\" (no token: just \"Bearer\", "
	        "RFC 6750 "
	        "3.1).\n  The alg-none admin token on /vuln/v1/admin/users: %d, %d users listed\n",
	        p->admin_naive, p->admin_users_leaked);
	lab_phase_metrics(lab, "authentication",
	                  json_pack("{s:o,s:i,s:i}", "tokens", rows, "admin_naive", p->admin_naive,
	                            "admin_users_leaked", p->admin_users_leaked));
}

static void before_access(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "Authorization (OWASP A01, API1:2023 BOLA): may you? 403 for the role, the owner in "
	               "the WHERE");
}

static void after_access(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct authz_access *p = &RES(result)->access;
	const struct authz_bola *b = &p->bola;
	const struct term *t = &lab->term;
	call_table(t, p->rows, p->nrows, true);
	struct term_col cols[] = {{"alice walks /v1/orders/1..n", 38, 'l'},
	                          {"ids", 5, 'r'},
	                          {"200", 5, 'r'},
	                          {"others' orders read", 19, 'r'},
	                          {"404", 5, 'r'}};
	term_table_header(t, 2, cols, 5);
	char ids[16], ok[16], foreign[48], nf[16];
	snprintf(ids, sizeof(ids), "%d", b->walked);
	snprintf(ok, sizeof(ok), "%d", b->naive_ok);
	snprintf(foreign, sizeof(foreign), "%s%d of %d%s", b->naive_foreign ? term_red(t) : "",
	         b->naive_foreign, b->foreign_in_pg, b->naive_foreign ? term_reset(t) : "");
	snprintf(nf, sizeof(nf), "%d", b->walked - b->naive_ok);
	const char *naive[] = {"naive: WHERE id = $1", ids, ok, foreign, nf};
	term_table_row(t, 2, cols, 5, naive);
	snprintf(ok, sizeof(ok), "%d", b->fixed_ok);
	snprintf(foreign, sizeof(foreign), "%s%d of %d%s", term_green(t), b->fixed_foreign, b->foreign_in_pg,
	         term_reset(t));
	snprintf(nf, sizeof(nf), "%d", b->fixed_404);
	const char *fixed[] = {"fixed: WHERE id = $1 AND owner_id = $2", ids, ok, foreign, nf};
	term_table_row(t, 2, cols, 5, fixed);
	term_printf(t,
	            "  foreign = the order's owner in PostgreSQL is not alice. alice owns %d; the fixed "
	            "route read all of "
	            "them.\n  404, not 403, for another's order: a 403 would confirm the id exists "
	            "(enumeration).\n",
	            b->own_in_pg);
	lab_phase_metrics(lab, "authorization",
	                  json_pack("{s:o,s:{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}}", "requests",
	                            rows_json(p->rows, p->nrows), "bola", "walked", b->walked, "naive_ok",
	                            b->naive_ok, "naive_foreign", b->naive_foreign, "fixed_ok", b->fixed_ok,
	                            "fixed_foreign", b->fixed_foreign, "fixed_404", b->fixed_404, "own_in_pg",
	                            b->own_in_pg, "foreign_in_pg", b->foreign_in_pg));
}

static void before_revocation(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "Revocation: the same token after logout and after the user is deleted");
}

static void after_revocation(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct authz_revocation *p = &RES(result)->revocation;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"event", 38, 'l'},     {"before", 6, 'r'},    {"event", 5, 'r'},
	                          {"stateless", 9, 'r'},  {"deny-list", 9, 'r'}, {"Redis key", 30, 'l'},
	                          {"TTL / life", 10, 'r'}};
	term_table_header(t, 2, cols, 7);
	json_t *rows = json_array();
	for (int i = 0; i < p->nrows; i++) {
		const struct authz_revoke_row *r = &p->rows[i];
		char before[8], ev[8], naive[32], fixed[32], ttl[32];
		snprintf(before, sizeof(before), "%d", r->before);
		snprintf(ev, sizeof(ev), "%d", r->event);
		status_cell(t, naive, sizeof(naive), r->naive, !authz_accepted(r->naive));
		status_cell(t, fixed, sizeof(fixed), r->fixed, r->fixed == 401);
		snprintf(ttl, sizeof(ttl), "%llds/%llds", r->key_ttl_s, r->remaining_s);
		const char *cells[] = {r->what, before, ev, naive, fixed, r->key, ttl};
		term_table_row(t, 2, cols, 7, cells);
		json_array_append_new(rows, json_pack("{s:s,s:i,s:i,s:i,s:i,s:s,s:I,s:I}", "event", r->what,
		                                      "before", r->before, "event_status", r->event,
		                                      "stateless", r->naive, "deny_list", r->fixed, "key",
		                                      r->key, "key_ttl_s", (json_int_t)r->key_ttl_s,
		                                      "remaining_s", (json_int_t)r->remaining_s));
	}
	term_printf(t, "  stateless = /vuln/v1/me (signature only): the token works until exp. deny-list = "
	               "/v1/me: one\n"
	               "  Redis EXISTS per request; the key expires when the token would have anyway (exp + "
	               "skew)\n");
	lab_phase_metrics(lab, "revocation", json_pack("{s:o}", "events", rows));
}

static const struct lab_phase_tell TELLS[AUTHZ_PHASES] = {
        {before_login, after_login},
        {before_attacks, after_attacks},
        {before_access, after_access},
        {before_revocation, after_revocation},
};

static int serve(struct lab *lab, struct authz_config *cfg)
{
	char err[LAB_ERRLEN], help[2400];
	struct authz_keys keys;
	if (authz_keys_new(&keys, err, sizeof(err)) < 0)
		return lab_fail(lab, "%s", err);
	cfg->keys = &keys;
	if (authz_setup(cfg, err, sizeof(err)) < 0) {
		authz_keys_free(&keys);
		return lab_env_error(lab, "PostgreSQL", cfg->pg_url, err);
	}
	struct authz_api *api = authz_api_start(cfg, lab->opts.port, err, sizeof(err));
	if (!api) {
		char terr[LAB_ERRLEN];
		authz_teardown(cfg, terr, sizeof(terr));
		authz_keys_free(&keys);
		return lab_fail(lab, "cannot start the API: %s", err);
	}
	if (cfg->vulnerable)
		fprintf(stderr,
		        "lab-authz: WARNING: --vulnerable serves the naive routes under /vuln/v1/ (forged "
		        "tokens "
		        "accepted, other users' orders readable); 127.0.0.1 only, for this demo only\n");
	int port = authz_api_port(api);
	snprintf(help, sizeof(help),
	         "  users alice, bob, carol (user) and root (admin), each with password \"%s\"\n"
	         "  T=$(curl -s 127.0.0.1:%d/v1/login -d '{\"name\":\"alice\",\"password\":\"%s\"}' | jq -r "
	         ".access_token)\n"
	         "  curl -si 127.0.0.1:%d/v1/me -H \"Authorization: Bearer $T\"\n"
	         "  curl -si 127.0.0.1:%d/v1/admin/users -H \"Authorization: Bearer $T\"      # 403\n"
	         "  curl -si 127.0.0.1:%d/v1/orders/1 -H \"Authorization: Bearer $T\"         # 200 or 404\n"
	         "  curl -si -X POST 127.0.0.1:%d/v1/logout -H \"Authorization: Bearer $T\"   # then /v1/me: "
	         "401\n"
	         "  curl -s 127.0.0.1:%d/v1/public-key\n%s",
	         AUTHZ_PASSWORD, port, AUTHZ_PASSWORD, port, port, port, port, port,
	         cfg->vulnerable ? "  naive twins: /vuln/v1/me, /vuln/v1/admin/users, /vuln/v1/orders/{id}\n"
	                         : "  (the naive /vuln/v1/ routes are off; --vulnerable serves them)\n");
	lab_serve_wait(lab, port, help);
	authz_api_stop(api);
	authz_teardown(cfg, err, sizeof(err));
	authz_keys_free(&keys);
	lab_free(lab);
	return LAB_EXIT_OK;
}

static void header(struct lab *lab, const struct authz_config *cfg)
{
	char pg[256], redis[256];
	pg_url_redact(cfg->pg_url, pg, sizeof(pg));
	redis_url_redact(cfg->redis_url, redis, sizeof(redis));
	lab_config_set(lab, "token_ttl_s", json_integer(cfg->token_ttl_s));
	lab_config_set(lab, "skew_s", json_integer(cfg->skew_s));
	lab_config_set(lab, "pbkdf2_iterations", json_integer(cfg->pbkdf2_iterations));
	lab_config_set(lab, "orders", json_integer(cfg->orders));
	lab_header(lab, "PostgreSQL %s · Redis %s · JWT RS256 by libjwt · token %d s, skew %d s · %d orders",
	           pg, redis, cfg->token_ttl_s, cfg->skew_s, cfg->orders);
}

/*
 * The key chart: what each API let through, the naive one (the token names its alg, no claim
 * checks, no owner check, stateless) beside the fixed one: forged tokens accepted, other users'
 * orders read, revoked tokens still accepted, and as the control alice's own orders read. The
 * naive bars stand in every group, the fixed ones only in the control: authentication and
 * authorization each fail alone, and the fixed API is not refusing everything.
 */
static void key_chart(struct lab *lab, const struct authz_result *r)
{
	int forged[2] = {0, 0}, revoked[2] = {0, 0};
	for (int i = AUTHZ_ATK_ALG_NONE; i < r->attacks.nrows; i++) {
		forged[0] += authz_accepted(r->attacks.rows[i].naive);
		forged[1] += authz_accepted(r->attacks.rows[i].fixed);
	}
	for (int i = 0; i < r->revocation.nrows; i++) {
		revoked[0] += authz_accepted(r->revocation.rows[i].naive);
		revoked[1] += authz_accepted(r->revocation.rows[i].fixed);
	}
	const struct authz_bola *b = &r->access.bola;
	lab_chart(lab, json_pack("{s:s,s:s,s:[s,s,s,s],s:[{s:s,s:[i,i,i,i]},{s:s,s:[i,i,i,i]}],s:b}", "title",
	                         "what each API let through (only the control should pass)", "unit",
	                         "requests", "labels", "forged tokens accepted", "others' orders read",
	                         "revoked tokens accepted", "own orders read (control)", "series", "name",
	                         "naive", "values", forged[0], b->naive_foreign, revoked[0],
	                         b->naive_ok - b->naive_foreign, "name", "fixed", "values", forged[1],
	                         b->fixed_foreign, revoked[1], b->fixed_ok - b->fixed_foreign, "log", 0));
}

int main(int argc, char **argv)
{
	struct lab lab;
	bool vulnerable = false;
	const struct lab_flag flags[] = {
	        {"--vulnerable",
	         "with --serve, also serve the naive routes under /vuln/v1/ (prints a warning)", &vulnerable,
	         true}};
	if (lab_init_flags(&lab, "authz", QUESTION, AUTHZ_PHASES, flags, 1, argc, argv) < 0)
		return lab.exit_code;
	if (lab_probe(&lab, true, true) < 0)
		return lab.exit_code;
	struct authz_config cfg;
	authz_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.redis_url = lab.opts.redis_url;
	cfg.seed = lab.opts.seed;
	if (lab.opts.serve) {
		cfg.vulnerable = vulnerable;
		return serve(&lab, &cfg);
	}
	header(&lab, &cfg);
	struct authz_result *result = calloc(1, sizeof(*result));
	if (!result)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, AUTHZ_PHASES, &cfg, result};
	cfg.hooks = lab_teller_hooks(&teller);
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	char err[LAB_ERRLEN];
	int ret;
	if (authz_run(&cfg, result, err, sizeof(err)) < 0) {
		ret = lab_run_failed(&lab,
		                     result->lost_pg      ? "PostgreSQL"
		                     : result->lost_redis ? "Redis"
		                                          : NULL,
		                     err);
	} else {
		struct lab_verdict verdict;
		authz_judge(result, &verdict);
		key_chart(&lab, result);
		ret = lab_finish(&lab, &verdict);
	}
	free(result);
	return ret;
}
