/*
 * lab-versioning — "How do you version an API?"
 *
 * What you will see: one users API on 127.0.0.1 (PostgreSQL behind it) with a breaking change
 * between v1 and v2 ("name" split in two, a price in float dollars become integer cents), served
 * by URL path, by Accept header and by query parameter at once, and a real nginx proxy_cache in
 * front of it, started by the lab:
 *   1. from the API directly: both versions right in all three approaches, one clear error for
 *      an unknown version (406, 404, 400), a field added without breaking a tolerant v1 reader;
 *   2. through the cache, v1 and v2 clients mixed on the same users: header versioning without
 *      Vary: Accept hands v1 bodies to v2 clients; with it, none, and a lower hit ratio; path and
 *      query versioning are right with no extra work;
 *   3. deprecation: Deprecation, Sunset and Link on every v1 answer, and who still calls v1,
 *      counted in the cache's log and at the API (which never sees the hits).
 *
 * Run it: make lab-versioning (ARGS="--quick", "--json", "--step", "--serve --port 8080").
 * Limits: one machine, loopback, one cache; a CDN behaves as nginx does here, with its own rules
 * for Vary (some ignore it, some refuse to cache).
 *
 * This file only tells: the experiment and every threshold are in versioning.c.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lab.h"
#include "pg.h"
#include "versioning.h"

#define QUESTION "How do you version an API?"

#define CFG(c) ((const struct versioning_config *)(c))
#define RES(r) ((const struct versioning_result *)(r))

static const char *ok_of(char *buf, size_t len, int good, int all)
{
	snprintf(buf, len, "%d/%d", good, all);
	return buf;
}

static void before_direct(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "From the API directly: v1 and v2 of the same users, three ways to ask");
}

static json_t *direct_json(const struct versioning_direct *d)
{
	return json_pack("{s:i,s:i,s:i,s:I,s:I,s:s,s:s}", "requests", d->requests, "correct", d->correct,
	                 "deprecation_right", d->deprecation_right, "p50_us", (json_int_t)d->p50_us, "p99_us",
	                 (json_int_t)d->p99_us, "target", d->target, "content_type", d->content_type);
}

static void print_errors(const struct term *t, const struct versioning_result *r, json_t *m)
{
	json_t *errors = json_array();
	for (int i = 0; i < VERSIONING_ERRORS; i++) {
		const struct versioning_error *e = &r->errors[i];
		term_printf(t, "  %-27s %s%d%s %.84s\n", e->what, e->json_error ? term_green(t) : term_red(t),
		            e->rs.status, term_reset(t), e->rs.body);
		json_array_append_new(errors, json_pack("{s:s,s:i,s:b,s:s}", "request", e->what, "status",
		                                        e->rs.status, "json_error", e->json_error, "body",
		                                        e->rs.body));
	}
	json_object_set_new(m, "unknown_versions", errors);
}

static void after_direct(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct versioning_result *r = RES(result);
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"approach", 8, 'l'}, {"v2 is asked as", 41, 'l'},  {"v1 right", 8, 'r'},
	                          {"v2 right", 8, 'r'}, {"v2 Content-Type", 35, 'l'}, {"p50", 7, 'r'}};
	term_table_header(t, 2, cols, 6);
	json_t *m = json_object(), *cells = json_object();
	for (int a = 0; a < VERSIONING_APPROACHES; a++) {
		const struct versioning_direct *d1 = &r->direct[a][0], *d2 = &r->direct[a][1];
		char o1[24], o2[24];
		const char *row[] = {versioning_approach_name((enum versioning_approach)a),
		                     d2->target,
		                     ok_of(o1, sizeof(o1), d1->correct, d1->requests),
		                     ok_of(o2, sizeof(o2), d2->correct, d2->requests),
		                     d2->content_type,
		                     TERM_US((d1->p50_us + d2->p50_us) / 2)};
		term_table_row(t, 2, cols, 6, row);
		json_object_set_new(cells, versioning_approach_name((enum versioning_approach)a),
		                    json_pack("{s:o,s:o}", "v1", direct_json(d1), "v2", direct_json(d2)));
	}
	json_object_set_new(m, "approaches", cells);
	term_printf(t, "  %sunknown versions:%s\n", term_dim(t), term_reset(t));
	print_errors(t, r, m);
	const struct versioning_added *ad = &r->added;
	term_printf(t,
	            "  a field added to both (\"locale\"): tolerant v1 reader %s → %s, strict v1 reader %s → "
	            "%s%s%s\n",
	            ad->tolerant_before ? "ok" : "FAILS", ad->tolerant_after ? "ok" : "FAILS",
	            ad->strict_before ? "ok" : "FAILS", ad->strict_after ? term_green(t) : term_red(t),
	            ad->strict_after ? "ok" : "FAILS", term_reset(t));
	json_object_set_new(m, "added_field",
	                    json_pack("{s:b,s:b,s:b,s:b,s:b,s:s}", "tolerant_before", ad->tolerant_before,
	                              "tolerant_after", ad->tolerant_after, "strict_before",
	                              ad->strict_before, "strict_after", ad->strict_after, "v2_after",
	                              ad->v2_after, "v1_body_after", ad->body_after));
	lab_phase_metrics(lab, "direct", m);
}

static void before_cache(struct lab *lab, const void *cfg)
{
	lab_phase(lab,
	          "Through nginx proxy_cache: %d requests per approach, v1 and v2 clients mixed on %d users",
	          CFG(cfg)->cache_requests, CFG(cfg)->users);
}

static void after_cache(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct versioning_result *r = RES(result);
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"approach", 22, 'l'}, {"hits", 5, 'r'},  {"misses", 6, 'r'},
	                          {"hit ratio", 9, 'r'}, {"wrong", 5, 'r'}, {"v2 got v1", 9, 'r'},
	                          {"v1 got v2", 9, 'r'}, {"p50", 8, 'r'},   {"", 20, 'l'}};
	term_table_header(t, 2, cols, 9);
	json_t *rows = json_object();
	const char *example = NULL;
	for (int i = 0; i < VERSIONING_ROWS; i++) {
		const struct versioning_cache_row *w = &r->rows[i];
		char ratio[16], wrong[32], bar[64];
		snprintf(ratio, sizeof(ratio), "%.0f%%", 100 * w->hit_ratio);
		snprintf(wrong, sizeof(wrong), "%s%d%s", w->wrong ? term_red(t) : term_green(t), w->wrong,
		         term_reset(t));
		const char *row[] = {versioning_row_name((enum versioning_row)i),
		                     TERM_NUM(w->hits, 0),
		                     TERM_NUM(w->misses, 0),
		                     ratio,
		                     wrong,
		                     TERM_NUM(w->wrong_v2_got_v1, 0),
		                     TERM_NUM(w->wrong_v1_got_v2, 0),
		                     TERM_US(w->p50_us),
		                     term_bar(bar, sizeof(bar), w->hit_ratio, 1.0, 20)};
		term_table_row(t, 2, cols, 9, row);
		if (!example && w->example[0])
			example = w->example;
		json_object_set_new(rows, versioning_row_name((enum versioning_row)i),
		                    json_pack("{s:i,s:i,s:i,s:f,s:i,s:i,s:i,s:I,s:s}", "requests",
		                              w->requests, "hits", w->hits, "misses", w->misses, "hit_ratio",
		                              w->hit_ratio, "wrong", w->wrong, "v2_got_v1",
		                              w->wrong_v2_got_v1, "v1_got_v2", w->wrong_v1_got_v2, "p50_us",
		                              (json_int_t)w->p50_us, "first_wrong", w->example));
	}
	if (example)
		term_printf(t, "  first wrong answer: %.98s…\n", example);
	const struct versioning_cache_row *nv = &r->rows[ROW_HEADER_NO_VARY], *vy = &r->rows[ROW_HEADER_VARY];
	term_printf(t,
	            "  nginx keys its cache on the URL; Accept joins the key only when the answer says Vary: "
	            "Accept:\n"
	            "  then one entry per version (%d misses, as path's %d), and one more per other spelling "
	            "of Accept.\n"
	            "  Without Vary: %d fewer misses, and %d of its hits were the wrong version.\n",
	            vy->misses, r->rows[ROW_PATH].misses, vy->misses - nv->misses, nv->wrong);
	lab_phase_metrics(lab, "cache", json_pack("{s:o}", "rows", rows));
}

static void before_deprecation(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "Deprecation: v1 answers say so (RFC 8594, RFC 9745), and who still calls v1");
}

static void print_tradeoffs(const struct term *t, const struct versioning_result *r)
{
	struct term_col cols[] = {{"approach", 22, 'l'},
	                          {"URL stays the same", 18, 'l'},
	                          {"cache-safe w/o Vary", 19, 'l'},
	                          {"version in the log", 18, 'l'},
	                          {"wrong via cache", 15, 'r'},
	                          {"p50 direct", 10, 'r'}};
	term_printf(t, "\n  %sthe trade-offs, as measured%s\n", term_bold(t), term_reset(t));
	term_table_header(t, 2, cols, 6);
	static const enum versioning_approach OF[] = {VERSIONING_PATH, VERSIONING_HEADER, VERSIONING_HEADER,
	                                              VERSIONING_QUERY};
	for (int i = 0; i < VERSIONING_ROWS; i++) {
		const struct versioning_cache_row *w = &r->rows[i];
		const struct versioning_direct *d = r->direct[OF[i]];
		char wrong[32];
		snprintf(wrong, sizeof(wrong), "%d of %d", w->wrong, w->requests);
		const char *safe = i == ROW_HEADER_VARY ? "needs Vary" : w->wrong ? "no" : "yes";
		const char *row[] = {versioning_row_name((enum versioning_row)i),
		                     strcmp(w->v1_target, w->v2_target) == 0 ? "yes" : "no",
		                     safe,
		                     w->in_log ? "yes" : "no (a header)",
		                     wrong,
		                     TERM_US((d[0].p50_us + d[1].p50_us) / 2)};
		term_table_row(t, 2, cols, 6, row);
	}
}

static void after_deprecation(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct versioning_result *r = RES(result);
	const struct versioning_deprecation *d = &r->deprecation;
	const struct term *t = &lab->term;
	term_printf(t, "  Deprecation: %s · Sunset: %s · Link: %s\n", d->deprecation, d->sunset, d->link);
	term_printf(t, "  on %d of %d v1 answers; on %d of %d v2 answers\n", d->v1_with_headers,
	            d->v1_answers, d->v2_with_any, d->v2_answers);
	struct term_col cols[] = {
	        {"client (User-Agent)", 20, 'l'}, {"requests", 8, 'r'},       {"v1 sent", 7, 'r'},
	        {"v1 in nginx's log", 17, 'r'},   {"v1 at the API", 13, 'r'}, {"cache hits", 10, 'r'}};
	term_table_header(t, 2, cols, 6);
	json_t *clients = json_array();
	for (int k = 0; k < VERSIONING_CLIENTS; k++) {
		const struct versioning_client *c = &d->clients[k];
		const char *row[] = {c->agent,
		                     TERM_NUM(c->requests, 0),
		                     TERM_NUM(c->v1_sent, 0),
		                     TERM_NUM(c->v1_edge, 0),
		                     TERM_NUM(c->v1_api, 0),
		                     TERM_NUM(c->hits, 0)};
		term_table_row(t, 2, cols, 6, row);
		json_array_append_new(clients,
		                      json_pack("{s:s,s:i,s:i,s:I,s:I,s:i}", "agent", c->agent, "requests",
		                                c->requests, "v1_sent", c->v1_sent, "v1_in_cache_log",
		                                (json_int_t)c->v1_edge, "v1_at_api", (json_int_t)c->v1_api,
		                                "hits", c->hits));
	}
	term_printf(t, "  the API sees only the misses: count deprecated calls where every call passes (the "
	               "edge's log)\n");
	print_tradeoffs(t, r);
	lab_phase_metrics(lab, "deprecation",
	                  json_pack("{s:o,s:i,s:i,s:i,s:i,s:s,s:s,s:s}", "clients", clients, "v1_answers",
	                            d->v1_answers, "v1_with_headers", d->v1_with_headers, "v2_answers",
	                            d->v2_answers, "v2_with_any", d->v2_with_any, "deprecation",
	                            d->deprecation, "sunset", d->sunset, "link", d->link));
}

static const struct lab_phase_tell TELLS[VERSIONING_PHASES] = {
        {before_direct, after_direct},
        {before_cache, after_cache},
        {before_deprecation, after_deprecation},
};

static int serve(struct lab *lab, struct versioning_config *cfg)
{
	char err[LAB_ERRLEN], help[2400];
	if (versioning_setup(cfg, err, sizeof(err)) < 0)
		return lab_env_error(lab, "PostgreSQL", cfg->pg_url, err);
	struct versioning_api *api = versioning_api_start(cfg, lab->opts.port, err, sizeof(err));
	struct versioning_cache *cache =
	        api ? versioning_cache_start(cfg->nginx, versioning_api_port(api), 0, err, sizeof(err))
	            : NULL;
	if (!cache) {
		char terr[LAB_ERRLEN];
		versioning_api_stop(api);
		versioning_teardown(cfg, terr, sizeof(terr));
		return lab_fail(lab, "cannot start the %s: %s", api ? "cache (nginx)" : "API", err);
	}
	int port = versioning_api_port(api), cport = versioning_cache_port(cache);
	snprintf(help, sizeof(help),
	         "  cache: nginx proxy_cache in front of it on http://127.0.0.1:%d (X-Cache-Status: MISS, "
	         "HIT)\n"
	         "  users 1..%d; v1 answers carry Deprecation, Sunset and Link; the API without Vary (phase "
	         "2) is not served here\n"
	         "  curl -si http://127.0.0.1:%d/v1/users/1                  path, v1\n"
	         "  curl -si http://127.0.0.1:%d/v2/users/1                  path, v2\n"
	         "  curl -si -H 'Accept: application/vnd.backendlabs.v2+json' http://127.0.0.1:%d/users/1   "
	         "header\n"
	         "  curl -si 'http://127.0.0.1:%d/users/1?version=2'         query\n"
	         "  curl -si -H 'Accept: application/vnd.backendlabs.v9+json' http://127.0.0.1:%d/users/1   "
	         "406\n"
	         "  curl -si http://127.0.0.1:%d/v3/users/1                  404\n"
	         "  curl -si -H 'Accept: application/vnd.backendlabs.v2+json' http://127.0.0.1:%d/users/1   "
	         "(cache: twice, MISS then HIT)\n"
	         "  curl -s http://127.0.0.1:%d/stats/v1-calls                who still calls v1 (by "
	         "User-Agent)\n",
	         cport, versioning_users_total(cfg), port, port, port, port, port, port, cport, port);
	lab_serve_wait(lab, port, help);
	versioning_cache_stop(cache);
	versioning_api_stop(api);
	versioning_teardown(cfg, err, sizeof(err));
	lab_free(lab);
	return LAB_EXIT_OK;
}

/*
 * The key chart: per approach through the cache, the share of answers of the wrong version beside
 * the hit ratio. Only header versioning without Vary has wrong ones, and they are its extra hits;
 * Vary brings its hit ratio down to path's and query's with none wrong.
 */
static void chart(struct lab *lab, const struct versioning_result *r)
{
	json_t *labels = json_array(), *wrong = json_array(), *hits = json_array();
	for (int i = 0; i < VERSIONING_ROWS; i++) {
		const struct versioning_cache_row *w = &r->rows[i];
		json_array_append_new(labels, json_string(versioning_row_name((enum versioning_row)i)));
		json_array_append_new(wrong,
		                      w->requests ? json_real(100.0 * w->wrong / w->requests) : json_null());
		json_array_append_new(hits, w->requests ? json_real(100.0 * w->hit_ratio) : json_null());
	}
	lab_chart(lab, json_pack("{s:s,s:s,s:o,s:[{s:s,s:o},{s:s,s:o}],s:b}", "title",
	                         "answers of the wrong version and hit ratio through nginx, per approach",
	                         "unit", "% of requests", "labels", labels, "series", "name", "wrong version",
	                         "values", wrong, "name", "cache hits", "values", hits, "log", false));
}

static void header(struct lab *lab, const struct versioning_config *cfg)
{
	char url[256], version[32];
	pg_url_redact(cfg->pg_url, url, sizeof(url));
	versioning_nginx_version(cfg->nginx, version, sizeof(version));
	lab_config_set(lab, "users_per_block", json_integer(cfg->users));
	lab_config_set(lab, "cache_requests", json_integer(cfg->cache_requests));
	lab_config_set(lab, "max_age_s", json_integer(cfg->max_age_s));
	lab_config_set(lab, "nginx", json_string(version));
	lab_header(lab,
	           "PostgreSQL %s · nginx %s proxy_cache (max-age %d s) · v1: name, price · v2: "
	           "given/family, cents",
	           url, version, cfg->max_age_s);
}

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "versioning", QUESTION, VERSIONING_PHASES, argc, argv) < 0)
		return lab.exit_code;
	if (lab_probe(&lab, true, false) < 0)
		return lab.exit_code;
	struct versioning_config cfg;
	versioning_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.seed = lab.opts.seed;
	char nginx[PATH_MAX], err[LAB_ERRLEN];
	if (versioning_find_nginx(nginx, sizeof(nginx), err, sizeof(err)) < 0)
		return lab_fail(&lab, "%s", err);
	cfg.nginx = nginx;
	if (lab.opts.serve)
		return serve(&lab, &cfg);

	header(&lab, &cfg);
	struct versioning_result *result = calloc(1, sizeof(*result));
	if (!result)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, VERSIONING_PHASES, &cfg, result};
	cfg.hooks = lab_teller_hooks(&teller);
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	int ret;
	if (versioning_run(&cfg, result, err, sizeof(err)) < 0) {
		ret = lab_run_failed(&lab, result->lost_pg ? "PostgreSQL" : NULL, err);
	} else {
		struct lab_verdict verdict;
		versioning_judge(result, &verdict);
		chart(&lab, result);
		ret = lab_finish(&lab, &verdict);
	}
	free(result);
	return ret;
}
