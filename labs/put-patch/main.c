/*
 * lab-put-patch — "What's the difference between PUT and PATCH?"
 *
 * A real API for /v1/users/{id} in PostgreSQL: PUT replaces, PATCH merges (RFC 7396), patches
 * (RFC 6902) or increments; ETag and If-Match. Four phases: a retrying client (which writes are
 * idempotent, by the stored row's digest), the HTTP contract (415, 400, 409, 422: nothing
 * written), two editors (blind PUT loses one, If-Match gets 412 and loses none, PATCH merges),
 * and the race (N clients x R rounds: lost updates counted from PostgreSQL).
 * Usage: lab-put-patch [--quick] [--json] [--step] [--seed N] [--serve [--port N]]
 *
 * This file only tells: the experiment and every threshold are in put_patch.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lab.h"
#include "pg.h"
#include "put_patch.h"

#define QUESTION "What's the difference between PUT and PATCH?"

#define CFG(c) ((const struct put_patch_config *)(c))
#define RES(r) ((const struct put_patch_result *)(r))

static void before_retries(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "A retrying client: the same request sent 1, 2 and 5 times, each to a fresh copy");
}

/* "7 tags", "42 visits (4x409)", or the digest's first hex digits */
static void cell(char *out, size_t len, const struct put_patch_retry_row *row,
                 const struct put_patch_sends *s)
{
	int refused = 0, code = 0;
	for (int k = 0; k < s->n; k++)
		if (s->status[k] != 200)
			refused++, code = s->status[k];
	int w = !row->watch_count                 ? snprintf(out, len, "#%.6s", s->digest)
	        : strcmp(row->watch, "tags") == 0 ? snprintf(out, len, "%lld tags", s->tags)
	                                          : snprintf(out, len, "%lld visits", s->visits);
	if (refused && w > 0 && (size_t)w < len)
		snprintf(out + w, len - (size_t)w, " (%dx%d)", refused, code);
}

static void after_retries(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct put_patch_retries *p = &RES(result)->retries;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"request", 32, 'l'}, {"after 1", 17, 'l'},    {"after 2", 17, 'l'},
	                          {"after 5", 17, 'l'}, {"idempotent", 10, 'l'}, {"safe to retry", 24, 'l'}};
	term_table_header(t, 2, cols, 6);
	json_t *rows = json_array();
	for (int r = 0; r < p->nrows; r++) {
		const struct put_patch_retry_row *row = &p->rows[r];
		char c[PUT_PATCH_SEND_COUNTS][32], idem[32];
		bool refused = false;
		json_t *sends = json_array();
		for (int i = 0; i < PUT_PATCH_SEND_COUNTS; i++) {
			cell(c[i], sizeof(c[i]), row, &row->after[i]);
			refused = refused || row->after[i].status[row->after[i].n - 1] != 200;
			json_array_append_new(sends, json_pack("{s:i,s:s,s:I,s:I}", "sends", row->after[i].n,
			                                       "digest", row->after[i].digest, "tags",
			                                       (json_int_t)row->after[i].tags, "visits",
			                                       (json_int_t)row->after[i].visits));
		}
		bool yes = put_patch_retry_idempotent(row);
		snprintf(idem, sizeof(idem), "%s%s%s", yes ? term_green(t) : term_red(t), yes ? "yes" : "no",
		         term_reset(t));
		const char *safe = !yes ? "no: one more per send" : refused ? "yes: a retry gets 409" : "yes";
		const char *cells[] = {row->what, c[0], c[1], c[2], idem, safe};
		term_table_row(t, 2, cols, 6, cells);
		json_array_append_new(rows, json_pack("{s:s,s:o,s:b}", "request", row->what, "after", sends,
		                                      "idempotent", yes));
	}
	term_printf(t, "  #: SHA-256 of the stored row, from PostgreSQL; idempotent: the same row after 1, 2 "
	               "and 5 sends\n");
	lab_phase_metrics(lab, "retries", json_pack("{s:o}", "requests", rows));
}

static void before_contract(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "The contract: what each bad request gets, and the row's digest before and after");
}

static void after_contract(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct put_patch_contract *p = &RES(result)->contract;
	const struct term *t = &lab->term;
	struct term_col cols[] = {
	        {"request", 30, 'l'}, {"status", 6, 'r'}, {"row", 9, 'l'}, {"answer", 66, 'l'}};
	term_table_header(t, 2, cols, 4);
	json_t *rows = json_array();
	const char *accept = "";
	for (int i = 0; i < p->nrows; i++) {
		const struct put_patch_contract_row *row = &p->rows[i];
		char status[16], body[80];
		bool ok = row->got == row->want && row->changed == row->want_change;
		snprintf(status, sizeof(status), "%s%d%s", ok ? "" : term_red(t), row->got,
		         ok ? "" : term_reset(t));
		snprintf(body, sizeof(body), "%.63s%s", row->body, strlen(row->body) > 63 ? "..." : "");
		const char *cells[] = {row->what, status, row->changed ? "changed" : "unchanged", body};
		term_table_row(t, 2, cols, 4, cells);
		if (row->accept_patch[0])
			accept = row->accept_patch;
		json_array_append_new(rows, json_pack("{s:s,s:i,s:i,s:b,s:s}", "request", row->what, "status",
		                                      row->got, "want", row->want, "changed", row->changed,
		                                      "body", row->body));
	}
	term_printf(t, "  415 answers carry Accept-Patch: %s\n", accept);
	lab_phase_metrics(lab, "contract", json_pack("{s:o}", "requests", rows));
}

static void before_editors(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "Two editors read the same user; A changes the email, B the name, both write back");
}

static void after_editors(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct put_patch_editors *e = &RES(result)->editors;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"how they write", 30, 'l'}, {"A (email)", 10, 'l'},
	                          {"B (name)", 22, 'l'},       {"final name", 17, 'l'},
	                          {"final email", 22, 'l'},    {"lost", 10, 'l'}};
	term_table_header(t, 2, cols, 6);
	json_t *rows = json_array();
	for (int i = 0; i < e->nrows; i++) {
		const struct put_patch_editors_row *r = &e->rows[i];
		char lost[48];
		snprintf(lost, sizeof(lost), "%s%s%s", r->a_kept && r->b_kept ? term_green(t) : term_red(t),
		         !r->a_kept   ? "A's email"
		         : !r->b_kept ? "B's name"
		                      : "nothing",
		         term_reset(t));
		const char *cells[] = {r->what, r->a, r->b, r->name, r->email, lost};
		term_table_row(t, 2, cols, 6, cells);
		json_array_append_new(rows, json_pack("{s:s,s:s,s:s,s:b,s:b}", "story", r->what, "a", r->a,
		                                      "b", r->b, "a_kept", r->a_kept, "b_kept", r->b_kept));
	}
	term_printf(t,
	            "  blind PUT: B wrote back the email it had read. If-Match: B's ETag was stale, 412, B "
	            "re-read.\n"
	            "  PATCH: each sent only its field; the server merged under the row lock.\n"
	            "  PUT without If-Match where the API requires it: %d %.44s... (row %s)\n",
	            e->no_if_match_status, e->no_if_match_body,
	            e->no_if_match_changed ? "changed" : "unchanged");
	lab_phase_metrics(
	        lab, "editors",
	        json_pack("{s:o,s:i}", "stories", rows, "no_if_match_status", e->no_if_match_status));
}

static void before_race(struct lab *lab, const void *cfgv)
{
	const struct put_patch_config *cfg = cfgv;
	lab_phase(lab,
	          "The race: %d clients x %d rounds of read-modify-write on one user, each its own counter",
	          cfg->race_clients, cfg->race_rounds);
}

static void after_race(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct put_patch_race *p = &RES(result)->race;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"how they write", 32, 'l'},
	                          {"writes 2xx", 10, 'r'},
	                          {"in PostgreSQL", 13, 'r'},
	                          {"lost", 10, 'r'},
	                          {"412s", 7, 'r'},
	                          {"requests", 9, 'r'},
	                          {"time", 9, 'r'}};
	term_table_header(t, 2, cols, 7);
	json_t *rows = json_array();
	for (int i = 0; i < p->nrows; i++) {
		const struct put_patch_race_row *r = &p->rows[i];
		char acked[32], stored[32], lost[48], confl[32], reqs[32];
		snprintf(acked, sizeof(acked), "%s", TERM_NUM(r->acked, 0));
		snprintf(stored, sizeof(stored), "%s", TERM_NUM(r->stored, 0));
		snprintf(lost, sizeof(lost), "%s%s%s", r->lost ? term_red(t) : term_green(t),
		         TERM_NUM(r->lost, 0), term_reset(t));
		snprintf(confl, sizeof(confl), "%s", TERM_NUM(r->conflicts, 0));
		snprintf(reqs, sizeof(reqs), "%s", TERM_NUM(r->requests, 0));
		const char *cells[] = {
		        r->what, acked, stored, lost, confl, reqs, TERM_US(r->elapsed_s * 1e6)};
		term_table_row(t, 2, cols, 7, cells);
		json_array_append_new(rows,
		                      json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "mode", r->what, "acked",
		                                (json_int_t)r->acked, "stored", (json_int_t)r->stored, "lost",
		                                (json_int_t)r->lost, "http_412", (json_int_t)r->conflicts,
		                                "other", (json_int_t)r->other, "requests",
		                                (json_int_t)r->requests, "elapsed_s", r->elapsed_s));
	}
	term_printf(
	        t, "  lost = increments answered 2xx that PostgreSQL does not hold: a PUT from a stale copy\n"
	           "  wrote back another client's counter as it was before\n");
	lab_phase_metrics(lab, "race", json_pack("{s:o}", "modes", rows));
}

static const struct lab_phase_tell TELLS[PUT_PATCH_PHASES] = {
        {before_retries, after_retries},
        {before_contract, after_contract},
        {before_editors, after_editors},
        {before_race, after_race},
};

/*
 * The key chart: per way of writing in the race, the increments the clients were answered 2xx for
 * beside those PostgreSQL holds. Equal bars are no lost update; the blind PUT's gap is the lost
 * ones, at a glance.
 */
static void chart(struct lab *lab, const struct put_patch_result *r)
{
	static const char *const LABELS[PUT_PATCH_RACE_ROWS] = {[PP_RACE_BLIND] = "blind PUT",
	                                                        [PP_RACE_IF_MATCH] = "PUT + If-Match",
	                                                        [PP_RACE_PATCH] = "merge PATCH"};
	json_t *labels = json_array(), *acked = json_array(), *stored = json_array();
	for (int i = 0; i < r->race.nrows; i++) {
		json_array_append_new(labels, json_string(LABELS[i]));
		json_array_append_new(acked, json_integer((json_int_t)r->race.rows[i].acked));
		json_array_append_new(stored, json_integer((json_int_t)r->race.rows[i].stored));
	}
	lab_chart(lab, json_pack("{s:s,s:s,s:o,s:[{s:s,s:o},{s:s,s:o}],s:b}", "title",
	                         "increments answered 2xx vs held by PostgreSQL, per way of writing", "unit",
	                         "increments", "labels", labels, "series", "name", "answered 2xx", "values",
	                         acked, "name", "in PostgreSQL", "values", stored, "log", false));
}

static int serve(struct lab *lab, struct put_patch_config *cfg)
{
	char err[LAB_ERRLEN], help[2000];
	if (put_patch_setup(cfg, err, sizeof(err)) < 0 ||
	    put_patch_seed(
	            cfg, 1,
	            "{\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\",\"bio\":\"wrote the first "
	            "program\",\"tags\":[\"admin\",\"math\"],\"visits\":41}",
	            err, sizeof(err)) < 0)
		return lab_env_error(lab, "PostgreSQL", cfg->pg_url, err);
	struct put_patch_api *api = put_patch_api_start(cfg, lab->opts.port, err, sizeof(err));
	if (!api) {
		char terr[LAB_ERRLEN];
		put_patch_teardown(cfg, terr, sizeof(terr));
		return lab_fail(lab, "cannot start the API: %s", err);
	}
	int port = put_patch_api_port(api);
	const char *u = "http://127.0.0.1";
	snprintf(help, sizeof(help),
	         "  GET|PUT|PATCH /v1/users/{id}   user 1 is there; If-Match is honoured (412), not required "
	         "here\n"
	         "  curl -si %s:%d/v1/users/1                                   # note its ETag\n"
	         "  curl -si -X PUT %s:%d/v1/users/1 -H 'Content-Type: application/json' \\\n"
	         "       -H 'If-Match: \"<etag>\"' -d "
	         "'{\"name\":\"Ada\",\"email\":\"ada@example.com\",\"tags\":[],\"visits\":41}'\n"
	         "  curl -si -X PATCH %s:%d/v1/users/1 -H 'Content-Type: application/merge-patch+json' \\\n"
	         "       -d '{\"bio\":null,\"tags\":[\"ops\"]}'\n"
	         "  curl -si -X PATCH %s:%d/v1/users/1 -H 'Content-Type: application/json-patch+json' \\\n"
	         "       -d "
	         "'[{\"op\":\"test\",\"path\":\"/visits\",\"value\":41},{\"op\":\"add\",\"path\":\"/tags/"
	         "-\",\"value\":\"vip\"}]'\n"
	         "  curl -si -X PATCH %s:%d/v1/users/1 -H 'Content-Type: "
	         "application/vnd.backendlabs.increment+json' \\\n"
	         "       -d '{\"visits\":1}'\n",
	         u, port, u, port, u, port, u, port, u, port);
	lab_serve_wait(lab, port, help);
	put_patch_api_stop(api);
	put_patch_teardown(cfg, err, sizeof(err));
	lab_free(lab);
	return LAB_EXIT_OK;
}

static void header(struct lab *lab, const struct put_patch_config *cfg)
{
	char url[256];
	pg_url_redact(cfg->pg_url, url, sizeof(url));
	lab_config_set(lab, "race_clients", json_integer(cfg->race_clients));
	lab_config_set(lab, "race_rounds", json_integer(cfg->race_rounds));
	lab_config_set(lab, "pool_size", json_integer(cfg->pool_size));
	lab_header(lab, "PostgreSQL %s · GET/PUT/PATCH /v1/users/{id} · ETag = SHA-256 of the row · pool %d",
	           url, cfg->pool_size);
}

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "put-patch", QUESTION, PUT_PATCH_PHASES, argc, argv) < 0)
		return lab.exit_code;
	if (lab_probe(&lab, true, false) < 0)
		return lab.exit_code;
	struct put_patch_config cfg;
	put_patch_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	if (lab.opts.serve)
		return serve(&lab, &cfg);

	header(&lab, &cfg);
	struct put_patch_result *result = calloc(1, sizeof(*result));
	if (!result)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, PUT_PATCH_PHASES, &cfg, result};
	cfg.hooks = lab_teller_hooks(&teller);
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	char err[LAB_ERRLEN];
	int ret;
	if (put_patch_run(&cfg, result, err, sizeof(err)) < 0) {
		ret = lab_run_failed(&lab, result->lost_pg ? "PostgreSQL" : NULL, err);
	} else {
		struct lab_verdict verdict;
		put_patch_judge(result, &verdict);
		chart(&lab, result);
		ret = lab_finish(&lab, &verdict);
	}
	free(result);
	return ret;
}
