/*
 * phases.c — the three phases of lab-versioning, as versioning_run walks them, in front of the
 * API, the API without Vary and the cache it started (result->env). Every answer is read by the
 * reader of the version the client asked for, and checked against the row in PostgreSQL.
 * Nothing here prints.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "internal.h"
#include "rng.h"

/* phase 3's clients: who they are (User-Agent) and how many of their calls are still v1 */
static const struct {
	const char *agent;
	int v1_percent;
} CLIENTS[VERSIONING_CLIENTS] = {
        {"mobile-ios/3.2", 100},  /* an old app nobody updated */
        {"partner-sync/1.4", 50}, /* half migrated */
        {"web/2025.06", 0},       /* moved to v2 */
};

static const char *expected_type(enum versioning_approach a, int version)
{
	if (a != VERSIONING_HEADER)
		return "application/json";
	return version == 1 ? VERSIONING_MEDIA_V1 : VERSIONING_MEDIA_V2;
}

static bool has_deprecation(const struct versioning_response *rs)
{
	return rs->deprecation[0] && rs->sunset[0] && strstr(rs->link, "rel=\"successor-version\"");
}

static bool has_any_deprecation(const struct versioning_response *rs)
{
	return rs->deprecation[0] || rs->sunset[0] || rs->link[0];
}

/* ---- phase 1: from the API directly ---- */

static int direct_cell(const struct versioning_config *cfg, const struct versioning_env *env,
                       struct vclient *c, enum versioning_approach a, int version,
                       struct versioning_direct *d, char *err, size_t errlen)
{
	struct hist h;
	hist_init(&h);
	memset(d, 0, sizeof(*d));
	for (int i = 0; i < cfg->direct_requests; i++) {
		long id = vers_user_id(cfg, BLOCK_DIRECT, i % cfg->users);
		char target[120];
		const char *accept;
		vers_target(a, version, id, target, sizeof(target), &accept);
		struct versioning_response rs;
		if (vclient_get(c, target, accept, LAB_AGENT, &rs, err, errlen) < 0)
			return -1;
		hist_record(&h, rs.latency_us);
		d->requests++;
		const struct user_row *u = vers_row(env, id);
		d->correct += rs.status == 200 && strcmp(rs.content_type, expected_type(a, version)) == 0 &&
		              u && vers_reads(rs.body, version, false, u);
		d->deprecation_right += version == 1 ? has_deprecation(&rs) : !has_any_deprecation(&rs);
		if (i == 0) {
			snprintf(d->target, sizeof(d->target), "%s%s%s", target, accept ? " + Accept " : "",
			         accept ? accept + strlen("application/") : "");
			snprintf(d->content_type, sizeof(d->content_type), "%s", rs.content_type);
		}
	}
	d->p50_us = hist_percentile(&h, 50);
	d->p99_us = hist_percentile(&h, 99);
	return 0;
}

static bool is_json_error(const struct versioning_response *rs)
{
	if (strncmp(rs->content_type, "application/json", 16) != 0)
		return false;
	json_t *doc = json_loads(rs->body, 0, NULL);
	const char *msg = json_string_value(json_object_get(doc, "error"));
	bool ok = msg && *msg;
	json_decref(doc);
	return ok;
}

static int unknown_versions(struct vclient *c, struct versioning_error *errors, char *err, size_t errlen)
{
	static const struct {
		const char *what, *target, *accept;
	} ASK[VERSIONING_ERRORS] = {
	        {"header  Accept: ...v9+json", "/users/1", "application/vnd.backendlabs.v9+json"},
	        {"path    /v3/users/1", "/v3/users/1", NULL},
	        {"query   ?version=3", "/users/1?version=3", NULL},
	        {"query   ?version=two", "/users/1?version=two", NULL},
	};
	for (int i = 0; i < VERSIONING_ERRORS; i++) {
		errors[i].what = ASK[i].what;
		if (vclient_get(c, ASK[i].target, ASK[i].accept, LAB_AGENT, &errors[i].rs, err, errlen) < 0)
			return -1;
		errors[i].json_error = is_json_error(&errors[i].rs);
	}
	return 0;
}

/* The v1 and v2 answers for one user, read by tolerant and strict readers; then the field is added. */
static int added_field(const struct versioning_config *cfg, struct versioning_env *env, struct vclient *c,
                       struct versioning_added *ad, char *err, size_t errlen)
{
	long id = vers_user_id(cfg, BLOCK_DIRECT, 0);
	const struct user_row *row = vers_row(env, id);
	char v1[64], v2[64];
	snprintf(v1, sizeof(v1), "/v1/users/%ld", id);
	snprintf(v2, sizeof(v2), "/v2/users/%ld", id);
	struct versioning_response rs;
	if (vclient_get(c, v1, NULL, LAB_AGENT, &rs, err, errlen) < 0)
		return -1;
	ad->tolerant_before = vers_reads(rs.body, 1, false, row);
	ad->strict_before = vers_reads(rs.body, 1, true, row);
	versioning_api_add_field(env->api);
	versioning_api_add_field(env->api_no_vary);
	if (vclient_get(c, v1, NULL, LAB_AGENT, &rs, err, errlen) < 0)
		return -1;
	ad->tolerant_after = vers_reads(rs.body, 1, false, row);
	ad->strict_after = vers_reads(rs.body, 1, true, row);
	snprintf(ad->body_after, sizeof(ad->body_after), "%s", rs.body);
	if (vclient_get(c, v2, NULL, LAB_AGENT, &rs, err, errlen) < 0)
		return -1;
	ad->v2_after = vers_reads(rs.body, 2, false, row);
	return 0;
}

int vers_phase_direct(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct versioning_config *cfg = cfgv;
	struct versioning_result *r = result;
	struct vclient c;
	vclient_init(&c, r->api_port);
	int ret = 0;
	for (int a = 0; a < VERSIONING_APPROACHES && ret == 0; a++)
		for (int v = 1; v <= 2 && ret == 0; v++) {
			vers_progress(cfg, "asking the API directly", (a * 2 + v - 1) / 6.0);
			ret = direct_cell(cfg, r->env, &c, (enum versioning_approach)a, v,
			                  &r->direct[a][v - 1], err, errlen);
		}
	if (ret == 0)
		ret = unknown_versions(&c, r->errors, err, errlen);
	if (ret == 0)
		ret = added_field(cfg, r->env, &c, &r->added, err, errlen);
	vclient_close(&c);
	return ret;
}

/* --predict: which v1 reader the added field broke; the answer's index */
static double q_direct_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct versioning_added *ad = &((const struct versioning_result *)result)->added;
	if (!ad->tolerant_before || !ad->strict_before)
		return NAN; /* a reader that failed before the change says nothing of the change */
	if (ad->tolerant_after)
		return ad->strict_after ? 0 : 1;
	return ad->strict_after ? NAN : 2;
}

const struct lab_question vers_q_direct = {
        .text = "A field \"locale\" is added to v1's answers, nothing removed or renamed. Which v1 "
                "client breaks?",
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"none: an added field breaks no one", "one whose parser refuses unknown fields",
                    "every v1 client: any change to v1 needs a v2"},
        .measured = q_direct_measured,
        .why = "adding is non-breaking only for tolerant readers (ignore what you do not know): a "
               "strict schema breaks on it, so say so in the contract; renaming or retyping needs v2"};

/* ---- phase 2: through the cache ---- */

static enum versioning_approach row_approach(enum versioning_row row)
{
	return row == ROW_PATH ? VERSIONING_PATH : row == ROW_QUERY ? VERSIONING_QUERY : VERSIONING_HEADER;
}

/* The URL of the row: the API without Vary is mounted under /no-vary/ on the cache. */
static void row_target(enum versioning_row row, int version, long id, char *out, size_t outlen,
                       const char **accept)
{
	char t[96];
	vers_target(row_approach(row), version, id, t, sizeof(t), accept);
	snprintf(out, outlen, "%s%s", row == ROW_HEADER_NO_VARY ? "/no-vary" : "", t);
}

static void note_wrong(struct versioning_cache_row *w, int version, const char *target,
                       const struct versioning_response *rs, const struct user_row *row)
{
	w->wrong++;
	if (version == 2 && vers_reads(rs->body, 1, false, row))
		w->wrong_v2_got_v1++;
	if (version == 1 && vers_reads(rs->body, 2, false, row))
		w->wrong_v1_got_v2++;
	if (!w->example[0])
		snprintf(w->example, sizeof(w->example), "asked v%d of %s, got %d %.90s", version, target,
		         rs->status, rs->body);
}

static int cache_row(const struct versioning_config *cfg, const struct versioning_result *r,
                     enum versioning_row row, struct versioning_cache_row *w, char *err, size_t errlen)
{
	memset(w, 0, sizeof(*w));
	/* the same clients in the same order for every row: only the approach differs */
	uint64_t rng = rng_stream(cfg->seed, 100);
	struct vclient c;
	vclient_init(&c, r->cache_port);
	struct hist h;
	hist_init(&h);
	int ret = 0;
	for (int i = 0; i < cfg->cache_requests && ret == 0; i++) {
		long id = vers_user_id(cfg, BLOCK_ROWS + (int)row, rng_between(&rng, 0, cfg->users - 1));
		int version = rng_between(&rng, 1, 2);
		char target[128];
		const char *accept;
		row_target(row, version, id, target, sizeof(target), &accept);
		struct versioning_response rs;
		if ((ret = vclient_get(&c, target, accept, LAB_AGENT, &rs, err, errlen)) < 0)
			break;
		hist_record(&h, rs.latency_us);
		w->requests++;
		w->v1_requests += version == 1;
		w->v2_requests += version == 2;
		if (strcmp(rs.cache_status, "HIT") == 0)
			w->hits++;
		else
			w->misses++;
		const struct user_row *u = vers_row(r->env, id);
		if (rs.status != 200 || !u || !vers_reads(rs.body, version, false, u))
			note_wrong(w, version, target, &rs, u);
	}
	vclient_close(&c);
	w->hit_ratio = w->requests ? (double)w->hits / w->requests : 0;
	w->p50_us = hist_percentile(&h, 50);
	const char *accept;
	long first = vers_user_id(cfg, BLOCK_ROWS + (int)row, 0);
	row_target(row, 1, first, w->v1_target, sizeof(w->v1_target), &accept);
	row_target(row, 2, first, w->v2_target, sizeof(w->v2_target), &accept);
	return ret;
}

/*
 * Returns once nginx has logged every request it answered: it writes a request's access log line
 * when it finishes the request, after the last byte went out, so a client can read the answer
 * before the line is there. nginx is one process, one thread: once it has answered one more
 * request (sent at the end, not counted: the lab's own User-Agent), every earlier line is written.
 */
static int edge_log_settled(int cache_port, char *err, size_t errlen)
{
	struct vclient c;
	vclient_init(&c, cache_port);
	struct versioning_response rs;
	int ret = vclient_get(&c, "/stats/v1-calls", NULL, LAB_AGENT, &rs, err, errlen);
	vclient_close(&c);
	return ret;
}

/* Whether the access log holds a line for uri: "agent|uri|status|deprecation". */
static bool log_has_uri(const char *log, const char *uri)
{
	FILE *f = fopen(log, "r");
	if (!f)
		return false;
	char line[1024], want[160];
	snprintf(want, sizeof(want), "|%s|", uri);
	bool found = false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, want) != NULL;
	fclose(f);
	return found;
}

int vers_phase_cache(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct versioning_config *cfg = cfgv;
	struct versioning_result *r = result;
	const char *log = versioning_cache_log(r->env->cache);
	for (int row = 0; row < VERSIONING_ROWS; row++) {
		vers_progress(cfg, "through the cache", row / (double)VERSIONING_ROWS);
		struct versioning_cache_row *w = &r->rows[row];
		if (cache_row(cfg, r, (enum versioning_row)row, w, err, errlen) < 0 ||
		    edge_log_settled(r->cache_port, err, errlen) < 0)
			return -1;
		/* what an operator reading the access log sees: one URL per version, or the same for both */
		w->in_log = strcmp(w->v1_target, w->v2_target) != 0 && log_has_uri(log, w->v1_target) &&
		            log_has_uri(log, w->v2_target);
	}
	return 0;
}

/* --predict: the share of answers of the wrong version through the cache without Vary, in % */
static double q_cache_given(const void *cfgv, int i)
{
	const struct versioning_config *cfg = cfgv;
	return i == 0 ? cfg->cache_requests : cfg->users;
}

static double q_cache_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct versioning_cache_row *w =
	        &((const struct versioning_result *)result)->rows[ROW_HEADER_NO_VARY];
	return w->requests > 0 ? 100.0 * w->wrong / w->requests : NAN;
}

const struct lab_question vers_q_cache = {
        .text = "{} requests from v1 and v2 clients (a coin flip each) on {} users, the version in "
                "the Accept header, through nginx's cache with no Vary: Accept. What share get the "
                "other version's body?",
        .given = q_cache_given,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "%",
        .within = 10,
        .measured = q_cache_measured,
        .why = "the cache keys on the URL alone: a user's first answer is served to every later "
               "client, half of whom asked the other version: 50% x (requests - users) / requests; "
               "±10 points for the coin flips"};

/* ---- phase 3: deprecation ---- */

/* v1 answers per client in the cache's access log: lines "agent|uri|status|deprecation" with one. */
static int count_edge(int cache_port, const char *log, struct versioning_deprecation *d, char *err,
                      size_t errlen)
{
	if (edge_log_settled(cache_port, err, errlen) < 0)
		return -1;
	FILE *f = fopen(log, "r");
	if (!f) {
		snprintf(err, errlen, "cannot read nginx's access log %s", log);
		return -1;
	}
	char line[1024];
	while (fgets(line, sizeof(line), f)) {
		char *bar = strchr(line, '|'), *dep = strrchr(line, '|');
		if (!bar || dep == bar)
			continue;
		*bar = '\0';
		dep++;
		dep[strcspn(dep, "\r\n")] = '\0';
		for (int k = 0; k < VERSIONING_CLIENTS; k++)
			if (strcmp(line, d->clients[k].agent) == 0 && strcmp(dep, "-") != 0 && *dep)
				d->clients[k].v1_edge++;
	}
	fclose(f);
	return 0;
}

/* v1 answers per client as the API counted them: GET /stats/v1-calls on the API itself. */
static int count_api(int api_port, struct versioning_deprecation *d, char *err, size_t errlen)
{
	struct vclient c;
	vclient_init(&c, api_port);
	struct versioning_response rs;
	int ret = vclient_get(&c, "/stats/v1-calls", NULL, LAB_AGENT, &rs, err, errlen);
	vclient_close(&c);
	if (ret < 0)
		return -1;
	json_t *doc = json_loads(rs.body, 0, NULL);
	json_t *calls = json_object_get(doc, "v1_calls");
	if (rs.status != 200 || !json_is_object(calls)) {
		snprintf(err, errlen, "GET /stats/v1-calls: %d %.80s", rs.status, rs.body);
		json_decref(doc);
		return -1;
	}
	for (int k = 0; k < VERSIONING_CLIENTS; k++)
		d->clients[k].v1_api = json_integer_value(json_object_get(calls, d->clients[k].agent));
	json_decref(doc);
	return 0;
}

static void check_headers(struct versioning_deprecation *d, int version, const struct versioning_response *rs)
{
	if (version == 1) {
		d->v1_answers++;
		d->v1_with_headers += has_deprecation(rs);
		if (!d->deprecation[0]) {
			snprintf(d->deprecation, sizeof(d->deprecation), "%s", rs->deprecation);
			snprintf(d->sunset, sizeof(d->sunset), "%s", rs->sunset);
			snprintf(d->link, sizeof(d->link), "%s", rs->link);
		}
	} else {
		d->v2_answers++;
		d->v2_with_any += has_any_deprecation(rs);
	}
}

int vers_phase_deprecation(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct versioning_config *cfg = cfgv;
	struct versioning_result *r = result;
	struct versioning_deprecation *d = &r->deprecation;
	memset(d, 0, sizeof(*d));
	vers_progress(cfg, "clients calling through the cache", 0);
	uint64_t rng = rng_stream(cfg->seed, 200);
	struct vclient c;
	vclient_init(&c, r->cache_port);
	for (int k = 0; k < VERSIONING_CLIENTS; k++)
		d->clients[k].agent = CLIENTS[k].agent;
	int ret = 0;
	for (int i = 0; i < cfg->client_requests && ret == 0; i++)
		for (int k = 0; k < VERSIONING_CLIENTS && ret == 0; k++) {
			struct versioning_client *cl = &d->clients[k];
			long id = vers_user_id(cfg, BLOCK_CLIENTS, rng_between(&rng, 0, cfg->users - 1));
			int version = rng_between(&rng, 1, 100) <= CLIENTS[k].v1_percent ? 1 : 2;
			char target[120];
			const char *accept;
			vers_target(VERSIONING_PATH, version, id, target, sizeof(target), &accept);
			struct versioning_response rs;
			if ((ret = vclient_get(&c, target, accept, cl->agent, &rs, err, errlen)) < 0)
				break;
			cl->requests++;
			cl->v1_sent += version == 1;
			cl->hits += strcmp(rs.cache_status, "HIT") == 0;
			check_headers(d, version, &rs);
		}
	vclient_close(&c);
	if (ret == 0)
		ret = count_edge(r->cache_port, versioning_cache_log(r->env->cache), d, err, errlen);
	if (ret == 0)
		ret = count_api(r->api_port, d, err, errlen);
	return ret;
}

/* --predict: which count of the v1-only client's calls is whole; the answer's index */
static double q_deprecation_given(const void *cfgv, int i)
{
	(void)i;
	return ((const struct versioning_config *)cfgv)->client_requests;
}

static double q_deprecation_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct versioning_client *m =
	        &((const struct versioning_result *)result)->deprecation.clients[0];
	if (m->v1_sent == 0)
		return NAN;
	bool edge = m->v1_edge == m->v1_sent, api = m->v1_api == m->v1_sent;
	return api && !edge ? 0 : edge && !api ? 1 : edge && api ? 2 : NAN;
}

const struct lab_question vers_q_deprecation = {
        .text = "Before v1's sunset you count who still calls it. mobile-ios calls v1 {} times, "
                "through the cache. Which count has all of its calls?",
        .given = q_deprecation_given,
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"the API's own count of v1 calls", "the cache's access log", "both, the same number"},
        .measured = q_deprecation_measured,
        .why = "a cache hit never reaches the API, which counts only the misses: count deprecated "
               "calls at the edge, where every call passes"};
