/*
 * lab-cors — "What is CORS and why does it exist?", proven in a real browser.
 *
 * What you will see: an API on origin B (127.0.0.1, one port; the victim's account in
 * PostgreSQL) with five CORS policies, its own front-end on origin A, an evil page on origin E,
 * and one headless Chromium that the lab starts: the victim logs in at B, lands on A's page, which
 * fetches from B case by case and frames the evil page, which does the same:
 *   1. A's cases: no CORS headers (sent, with the cookie, and withheld), * on a public GET
 *      (readable), a preflight refused (OPTIONS only) and allowed, * with credentials (withheld);
 *   2. the attack: B reflects any Origin with credentials, so E reads the victim's account (bytes
 *      stolen); the allow-list with Vary: Origin stops it (0 bytes);
 *   3. Access-Control-Max-Age: repeated PUTs, the preflights counted in the API's log;
 *   4. no browser: the lab's own HTTP client reads everything; only the session decides.
 *
 * Run it: make lab-cors (ARGS="--quick", "--json", "--step", "--serve --port 8080",
 * "--serve --vulnerable"). Needs Chromium (scripts/bootstrap installs Debian's chromium).
 * Limits: one browser (Chromium), loopback, one site (127.0.0.1 on three ports): SameSite=Lax
 * does not stand between these origins, as it would between two sites.
 *
 * This file only tells: the experiment and every threshold are in cors.c.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cors.h"
#include "lab.h"
#include "pg.h"

#define QUESTION "What is CORS and why does it exist?"
#define OWASP                                                                                                \
	"OWASP Top 10 (2021): A05 Security Misconfiguration (a CORS policy that trusts any origin), A01 "    \
	"Broken Access Control"

#define RES(r) ((const struct cors_result *)(r))

/* "nothing (TypeError)" or "200, 150 B", as the page saw it. */
static const char *page_half(char *buf, size_t len, const struct cors_case_result *c)
{
	if (c->tries > 1)
		snprintf(buf, len, "%d of %d read", c->readable, c->tries);
	else if (c->readable)
		snprintf(buf, len, "%d, %d B", c->page_status, c->bytes_read);
	else
		snprintf(buf, len, "nothing (TypeError)");
	return buf;
}

/* "GET 200 +cookie, 150 B", "OPTIONS only", "OPTIONS + PUT 200", as the API's log says. */
static const char *server_half(char *buf, size_t len, const struct cors_case_result *c, const char *method)
{
	char head[32] = "";
	if (c->preflights)
		snprintf(head, sizeof(head), "OPTIONS%s", c->requests ? " + " : " only");
	if (c->requests)
		snprintf(buf, len, "%s%s %d%s, %d B sent", head, method, c->server_status,
		         c->with_cookie ? " +cookie" : "", c->bytes_sent);
	else
		snprintf(buf, len, "%s", c->preflights ? head : "nothing");
	return buf;
}

static json_t *case_json(const struct cors_result *r, enum cors_case i)
{
	const struct cors_case_result *c = &r->cases[i];
	return json_pack("{s:s,s:i,s:i,s:i,s:i,s:s,s:i,s:i,s:i,s:i,s:i,s:s,s:b}", "case", cors_case_name(i),
	                 "tries", c->tries, "readable", c->readable, "page_status", c->page_status,
	                 "bytes_read", c->bytes_read, "error", c->error, "preflights", c->preflights,
	                 "requests", c->requests, "with_cookie", c->with_cookie, "server_status",
	                 c->server_status, "bytes_sent", c->bytes_sent, "origin", c->origin,
	                 "expected_readable", cors_case_expect_readable(i));
}

static void case_rows(struct lab *lab, const struct cors_result *r, const enum cors_case *which, int n,
                      json_t *out)
{
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"case", 25, 'l'},
	                          {"request", 39, 'l'},
	                          {"the page read", 19, 'l'},
	                          {"the API received", 38, 'l'}};
	term_table_header(t, 2, cols, 4);
	for (int k = 0; k < n; k++) {
		const struct cors_case_result *c = &r->cases[which[k]];
		char req[64], page[48], page_c[64], srv[80];
		cors_case_request(which[k], req, sizeof(req));
		page_half(page, sizeof(page), c);
		bool ok = (c->readable > 0) == cors_case_expect_readable(which[k]);
		snprintf(page_c, sizeof(page_c), "%s%s%s", ok ? "" : term_red(t), page,
		         ok ? "" : term_reset(t));
		/* the method is the request's first word */
		char method[8];
		snprintf(method, sizeof(method), "%.*s", (int)strcspn(req, " "), req);
		const char *row[] = {cors_case_name(which[k]), req, page_c,
		                     server_half(srv, sizeof(srv), c, method)};
		term_table_row(t, 2, cols, 4, row);
		json_array_append_new(out, case_json(r, which[k]));
	}
}

static void before_browser(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "One headless Chromium: the victim logs in at B, then A's page fetches from B");
}

static void after_browser(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct cors_result *r = RES(result);
	const struct term *t = &lab->term;
	static const enum cors_case A[] = {CASE_NO_CORS,      CASE_STAR_PUBLIC, CASE_PREFLIGHT_NO,
	                                   CASE_PREFLIGHT_OK, CASE_STAR_CRED,   CASE_APP_ME};
	json_t *cases = json_array();
	term_printf(t,
	            "  %sA %s · B (API) http://127.0.0.1:%d · E (evil) %s · the cookie: HttpOnly, "
	            "SameSite=Lax%s\n",
	            term_dim(t), r->app_origin, r->api_port, r->evil_origin, term_reset(t));
	case_rows(lab, r, A, 6, cases);
	term_printf(t,
	            "  withheld is not blocked: the API answered %d, %d with the cookie; the browser hid it "
	            "from the "
	            "page\n",
	            r->cases[CASE_NO_CORS].server_status, r->cases[CASE_STAR_CRED].server_status);
	term_printf(t,
	            "  %sone browser start for the whole lab (every case of phases 1-3): %s, %d requests "
	            "logged%s\n",
	            term_dim(t), TERM_US((uint64_t)(r->browser_ms * 1000)), r->log_entries, term_reset(t));
	lab_phase_metrics(lab, "browser",
	                  json_pack("{s:o,s:f,s:i,s:s,s:s,s:i}", "cases", cases, "browser_ms", r->browser_ms,
	                            "browser_starts", r->browser_starts, "app_origin", r->app_origin,
	                            "evil_origin", r->evil_origin, "api_port", r->api_port));
}

static void before_attack(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "The common mistake: the evil page on E reads the victim's account with her cookie");
}

static void after_attack(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct cors_result *r = RES(result);
	const struct term *t = &lab->term;
	static const enum cors_case E[] = {CASE_EVIL_REFLECT, CASE_EVIL_ALLOW};
	json_t *cases = json_array();
	case_rows(lab, r, E, 2, cases);
	term_printf(t,
	            "  stolen: %s%d bytes%s with the reflecting policy, %s%d bytes%s with the allow-list + "
	            "Vary: Origin\n",
	            r->stolen_reflect ? term_red(t) : "", r->stolen_reflect, term_reset(t),
	            r->stolen_allowlist ? term_red(t) : term_green(t), r->stolen_allowlist, term_reset(t));
	if (r->stolen_reflect)
		term_printf(t, "  what E read: %.96s\n", r->cases[CASE_EVIL_REFLECT].body);
	term_printf(t, "  %s%s%s\n", term_dim(t), OWASP, term_reset(t));
	lab_phase_metrics(lab, "attack",
	                  json_pack("{s:o,s:i,s:i,s:b,s:s}", "cases", cases, "stolen_bytes_reflect",
	                            r->stolen_reflect, "stolen_bytes_allowlist", r->stolen_allowlist,
	                            "secret_in_stolen", r->secret_in_stolen, "owasp", "A05:2021, A01:2021"));
}

static void before_max_age(struct lab *lab, const void *cfg)
{
	lab_phase(lab, "Access-Control-Max-Age: %d PUTs each, the preflights counted in the API's log",
	          ((const struct cors_config *)cfg)->repeats);
}

static void after_max_age(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct cors_result *r = RES(result);
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"preflight answer", 25, 'l'},
	                          {"PUTs", 5, 'r'},
	                          {"OPTIONS", 7, 'r'},
	                          {"read", 5, 'r'},
	                          {"", 20, 'l'}};
	term_table_header(t, 2, cols, 5);
	static const enum cors_case M[] = {CASE_MAXAGE_0, CASE_MAXAGE_600};
	int max = r->cases[CASE_MAXAGE_0].preflights > 0 ? r->cases[CASE_MAXAGE_0].preflights : 1;
	for (int k = 0; k < 2; k++) {
		const struct cors_case_result *c = &r->cases[M[k]];
		char bar[64];
		const char *row[] = {cors_case_name(M[k]), TERM_NUM(c->requests, 0),
		                     TERM_NUM(c->preflights, 0), TERM_NUM(c->readable, 0),
		                     term_bar(bar, sizeof(bar), c->preflights, max, 20)};
		term_table_row(t, 2, cols, 5, row);
	}
	term_printf(
	        t,
	        "  %sChromium caps Max-Age at 7200 s (Firefox 86400); without the header it caches 5 s%s\n",
	        term_dim(t), term_reset(t));
	lab_phase_metrics(lab, "max_age",
	                  json_pack("{s:i,s:i,s:i}", "puts", r->cases[CASE_MAXAGE_0].tries,
	                            "preflights_max_age_0", r->preflights_max_age_0, "preflights_max_age_600",
	                            r->preflights_max_age_600));
}

static void before_client(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "No browser: the lab's own HTTP client (what curl does) asks the same API");
}

static void after_client(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct cors_result *r = RES(result);
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"client sends", 32, 'l'},
	                          {"request", 22, 'l'},
	                          {"status", 6, 'r'},
	                          {"read", 7, 'r'},
	                          {"Allow-Origin", 22, 'l'}};
	term_table_header(t, 2, cols, 5);
	json_t *rows = json_array();
	for (int i = 0; i < CORS_CLIENT_ROWS; i++) {
		const struct cors_client_row *c = &r->client[i];
		char st[8], bytes[16];
		snprintf(st, sizeof(st), "%d", c->status);
		snprintf(bytes, sizeof(bytes), "%d B", c->bytes);
		const char *row[] = {c->what, c->target, st, bytes, c->acao[0] ? c->acao : "(none)"};
		term_table_row(t, 2, cols, 5, row);
		json_array_append_new(rows,
		                      json_pack("{s:s,s:s,s:s,s:b,s:i,s:i,s:s}", "what", c->what, "target",
		                                c->target, "origin", c->origin, "cookie", c->cookie, "status",
		                                c->status, "bytes", c->bytes, "allow_origin", c->acao));
	}
	term_printf(t, "  CORS is not authentication: the headers tell browsers what to show; the session "
	               "decides\n");
	lab_phase_metrics(lab, "client", json_pack("{s:o}", "rows", rows));
}

static const struct lab_phase_tell TELLS[CORS_PHASES] = {
        {before_browser, after_browser},
        {before_attack, after_attack},
        {before_max_age, after_max_age},
        {before_client, after_client},
};

static int serve(struct lab *lab, struct cors_config *cfg, bool vulnerable)
{
	char err[LAB_ERRLEN], help[2000], origin[48];
	if (cors_setup(cfg, err, sizeof(err)) < 0)
		return lab_env_error(lab, "PostgreSQL", cfg->pg_url, err);
	struct cors_pages *pages = cors_pages_start(cfg->repeats, err, sizeof(err));
	if (pages)
		snprintf(origin, sizeof(origin), "http://127.0.0.1:%d", cors_pages_app_port(pages));
	struct cors_api *api =
	        pages ? cors_api_start(cfg, lab->opts.port, origin, vulnerable, err, sizeof(err)) : NULL;
	if (!api) {
		char terr[LAB_ERRLEN];
		cors_pages_stop(pages);
		cors_teardown(cfg, terr, sizeof(terr));
		return lab_fail(lab, "cannot start the API: %s", err);
	}
	int port = cors_api_port(api);
	cors_pages_set_api(pages, port);
	if (vulnerable)
		fprintf(stderr,
		        "lab-cors: WARNING: --vulnerable: /api/reflect/ reflects any Origin with "
		        "credentials; any "
		        "page open in a browser on this machine can read the logged-in account through it\n");
	snprintf(help, sizeof(help),
	         "  open http://127.0.0.1:%d/login in a browser (logs the victim in, then A's page runs the "
	         "cases)\n"
	         "  A (the app)  %s/app      E (evil)  http://127.0.0.1:%d/evil\n"
	         "  policies: /api/{none,star,allowlist,allowlist-0%s}/{public,me,notes/<id>}\n"
	         "  curl -si -H 'Origin: http://evil.example' http://127.0.0.1:%d/api/allowlist/public   no "
	         "ACAO\n"
	         "  curl -si -X OPTIONS -H 'Origin: %s' -H 'Access-Control-Request-Method: PUT' \\\n"
	         "       http://127.0.0.1:%d/api/allowlist/notes/1                                   a "
	         "preflight\n",
	         port, origin, cors_pages_evil_port(pages), vulnerable ? ",reflect" : "", port, origin, port);
	lab_serve_wait(lab, port, help);
	cors_api_stop(api);
	cors_pages_stop(pages);
	cors_teardown(cfg, err, sizeof(err));
	lab_free(lab);
	return LAB_EXIT_OK;
}

/*
 * The key chart: the victim's account as the API sent it and as the reader could read it, for
 * the credentialed GETs (A's own page, the evil page E, then curl with her cookie). The claim at
 * a glance: the server sends it every time; the browser withholds it unless the policy allows the
 * origin; reflect lets E read it; without a browser nothing is withheld.
 */
static json_t *read_chart(const struct cors_result *r)
{
	static const enum cors_case cases[] = {CASE_NO_CORS, CASE_STAR_CRED, CASE_APP_ME, CASE_EVIL_REFLECT,
	                                       CASE_EVIL_ALLOW};
	static const char *const labels[] = {"A: no CORS headers",         "A: ACAO * + credentials",
	                                     "A: allow-list, its own app", "E: reflect Origin + creds",
	                                     "E: allow-list + Vary",       "curl: Origin E + cookie"};
	json_t *l = json_array(), *sent = json_array(), *read = json_array();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct cors_case_result *c = &r->cases[cases[i]];
		json_array_append_new(l, json_string(labels[i]));
		json_array_append_new(sent, json_integer(c->bytes_sent));
		json_array_append_new(read, json_integer(c->readable ? c->bytes_read : 0));
	}
	json_array_append_new(l, json_string(labels[5]));
	json_array_append_new(sent, json_integer(r->client[1].bytes));
	json_array_append_new(read, json_integer(r->client[1].bytes));
	return json_pack("{s:s,s:s,s:o,s:[{s:s,s:o},{s:s,s:o}],s:b}", "title",
	                 "the victim's account: sent by the API, read by the caller", "unit", "bytes",
	                 "labels", l, "series", "name", "the API sent", "values", sent, "name",
	                 "the page (or curl) read", "values", read, "log", false);
}

static void header(struct lab *lab, const struct cors_config *cfg)
{
	char url[256], version[64];
	pg_url_redact(cfg->pg_url, url, sizeof(url));
	cors_chromium_version(cfg->chromium, version, sizeof(version));
	lab_config_set(lab, "repeats", json_integer(cfg->repeats));
	lab_config_set(lab, "chromium", json_string(version));
	lab_header(lab, "PostgreSQL %s · headless Chromium %s · three origins on 127.0.0.1", url, version);
}

int main(int argc, char **argv)
{
	bool vulnerable = false;
	const struct lab_flag flags[] = {
	        {"--vulnerable",
	         "with --serve, also serve /api/reflect/ (any Origin, with credentials; prints a warning)",
	         &vulnerable, true}};
	struct lab lab;
	if (lab_init_flags(&lab, "cors", QUESTION, CORS_PHASES, flags, 1, argc, argv) < 0)
		return lab.exit_code;
	if (lab_probe(&lab, true, false) < 0)
		return lab.exit_code;
	struct cors_config cfg;
	cors_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.seed = lab.opts.seed;
	if (lab.opts.serve)
		return serve(&lab, &cfg, vulnerable);
	char chromium[PATH_MAX], err[LAB_ERRLEN];
	if (cors_find_chromium(chromium, sizeof(chromium), err, sizeof(err)) < 0)
		return lab_fail(&lab, "%s", err);
	cfg.chromium = chromium;

	header(&lab, &cfg);
	struct cors_result *result = calloc(1, sizeof(*result));
	if (!result)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, CORS_PHASES, &cfg, result};
	cfg.hooks = lab_teller_hooks(&teller);
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	int ret;
	if (cors_run(&cfg, result, err, sizeof(err)) < 0) {
		ret = lab_run_failed(&lab, result->lost_pg ? "PostgreSQL" : NULL, err);
	} else {
		struct lab_verdict verdict;
		cors_judge(result, &verdict);
		lab_chart(&lab, read_chart(result));
		ret = lab_finish(&lab, &verdict);
	}
	free(result);
	return ret;
}
