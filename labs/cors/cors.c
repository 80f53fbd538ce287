/*
 * cors.c — lab-cors's experiment as a whole: its config, the schema and the victim, the cases,
 * the four phases, the run (the pages, the API, then the phases walked in front of them) and the
 * judge. The API is in api.c, the pages in pages.c, the browser in browser.c, the client in
 * client.c. The telling is in main.c; nothing here prints.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"

/* The cases, in enum cors_case's order (the pages run each origin's in this order). */
const struct case_def CASES[CORS_CASES] = {
        [CASE_NO_CORS] = {FROM_APP, "GET", "/api/none/me", true, false},
        [CASE_STAR_PUBLIC] = {FROM_APP, "GET", "/api/star/public", false, false},
        [CASE_PREFLIGHT_NO] = {FROM_APP, "PUT", "/api/none/notes/1", true, false},
        [CASE_PREFLIGHT_OK] = {FROM_APP, "PUT", "/api/allowlist/notes/1", true, false},
        [CASE_STAR_CRED] = {FROM_APP, "GET", "/api/star/me", true, false},
        [CASE_APP_ME] = {FROM_APP, "GET", "/api/allowlist/me", true, false},
        [CASE_MAXAGE_0] = {FROM_APP, "PUT", "/api/allowlist-0/notes/2", true, true},
        [CASE_MAXAGE_600] = {FROM_APP, "PUT", "/api/allowlist/notes/2", true, true},
        [CASE_EVIL_REFLECT] = {FROM_EVIL, "GET", "/api/reflect/me", true, false},
        [CASE_EVIL_ALLOW] = {FROM_EVIL, "GET", "/api/allowlist/me", true, false},
};

/* What the Fetch standard's CORS check lets the page read, case by case. */
static const bool EXPECT_READABLE[CORS_CASES] = {
        [CASE_NO_CORS] = false,      /* no Access-Control-Allow-Origin: the response is withheld */
        [CASE_STAR_PUBLIC] = true,   /* "*" matches any origin when no credentials are sent */
        [CASE_PREFLIGHT_NO] = false, /* the preflight's answer allows nothing: the PUT is never sent */
        [CASE_PREFLIGHT_OK] = true,
        [CASE_STAR_CRED] = false, /* "*" never matches a request with credentials */
        [CASE_APP_ME] = true,     /* the allow-list serves the app it was made for */
        [CASE_MAXAGE_0] = true,
        [CASE_MAXAGE_600] = true,
        [CASE_EVIL_REFLECT] = true, /* the reflected Origin matches, credentials allowed: the leak */
        [CASE_EVIL_ALLOW] = false,  /* E is not on the list: no Allow-Origin header */
};

bool cors_case_expect_readable(enum cors_case c)
{
	return c < CORS_CASES && EXPECT_READABLE[c];
}

const char *cors_case_name(enum cors_case c)
{
	static const char *const names[CORS_CASES] = {"no CORS headers",
	                                              "ACAO: * (public GET)",
	                                              "preflight refused",
	                                              "preflight allowed",
	                                              "ACAO: * + credentials",
	                                              "allow-list, its own app",
	                                              "Max-Age: 0",
	                                              "Max-Age: 600",
	                                              "reflect Origin + creds",
	                                              "allow-list + Vary: Origin"};
	return c < CORS_CASES ? names[c] : "?";
}

const char *cors_case_request(enum cors_case c, char *buf, size_t len)
{
	if (c >= CORS_CASES) {
		snprintf(buf, len, "?");
		return buf;
	}
	const struct case_def *d = &CASES[c];
	snprintf(buf, len, "%s %s%s%s", d->method, d->path, d->method[0] == 'P' ? " JSON" : "",
	         d->credentials ? " +cookie" : "");
	return buf;
}

void cors_config_default(struct cors_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	/* 2: the browser sends a few requests at a time; one more for curl beside it */
	cfg->pool_size = 2;
	/* enough PUTs that "one preflight, then none" reads at a glance against "one per PUT" */
	cfg->repeats = quick ? 5 : 20;
	/* the browser's start costs 1 to 4 s on a loaded 2-core machine; the page, well under 1 s */
	cfg->browser_timeout_ms = 30000;
	cfg->seed = 1;
}

/* ---- the schema: the victim and her sessions ---- */

int cors_setup(const struct cors_config *cfg, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	if (pg_schema_create(conn, SCHEMA, err, errlen) < 0 ||
	    pg_exec(conn,
	            "CREATE TABLE " SCHEMA ".accounts (id int PRIMARY KEY, name text NOT NULL,"
	            " email text NOT NULL, iban text NOT NULL, balance_cents bigint NOT NULL,"
	            " address text NOT NULL);"
	            "CREATE TABLE " SCHEMA ".sessions (token text PRIMARY KEY,"
	            " account_id int NOT NULL REFERENCES " SCHEMA ".accounts,"
	            " created_at timestamptz NOT NULL DEFAULT now());"
	            "INSERT INTO " SCHEMA ".accounts VALUES (1, 'Ada Lovelace', '" VICTIM_EMAIL "',"
	            " 'GB33 BUKB 2020 1555 5555 55', 1234567, '12 St James''s Square, London')",
	            err, errlen) < 0)
		goto out;
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

int cors_teardown(const struct cors_config *cfg, char *err, size_t errlen)
{
	return pg_url_schema_drop(cfg->pg_url, SCHEMA, err, errlen);
}

/* ---- the phases ---- */

#define CFG(c)   ((const struct cors_config *)(c))
#define RES(r)   ((struct cors_result *)(r))
#define RES_C(r) ((const struct cors_result *)(r))

/* The case a logged request belongs to: its ?case=<i>; -1 for none (the login). */
static int case_of(const char *target)
{
	const char *q = strstr(target, "?case=");
	int i;
	return q && sscanf(q + 6, "%d", &i) == 1 && i >= 0 && i < CORS_CASES ? i : -1;
}

/* The server's half of every case, from the API's log. */
static int read_log(struct cors_result *r, char *err, size_t errlen)
{
	struct cors_log_entry *log = calloc(LOG_MAX, sizeof(*log));
	if (!log) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int n = cors_api_log(r->env->api, 0, log, LOG_MAX);
	r->log_entries = n;
	for (int k = 0; k < n; k++) {
		int i = case_of(log[k].target);
		if (i < 0)
			continue;
		struct cors_case_result *c = &r->cases[i];
		snprintf(c->origin, sizeof(c->origin), "%s", log[k].origin);
		if (strcmp(log[k].method, "OPTIONS") == 0) {
			c->preflights++;
			continue;
		}
		c->requests++;
		c->with_cookie += log[k].cookie;
		c->server_status = log[k].status;
		c->bytes_sent = log[k].bytes;
	}
	free(log);
	return 0;
}

/* Phase 1: the victim logs in at B and lands on A's page, which runs every case; then the log. */
static int phase_browser(const void *cfg, void *result, char *err, size_t errlen)
{
	struct cors_result *r = RES(result);
	char url[96];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/login", r->api_port);
	if (cors_browser_run(CFG(cfg), url, r, err, errlen) < 0)
		return -1;
	return read_log(r, err, errlen);
}

/* Phase 2: what the evil page read of the victim's account (measured by the browser's run). */
static int phase_attack(const void *cfg, void *result, char *err, size_t errlen)
{
	(void)cfg, (void)err, (void)errlen;
	struct cors_result *r = RES(result);
	const struct cors_case_result *ref = &r->cases[CASE_EVIL_REFLECT], *al = &r->cases[CASE_EVIL_ALLOW];
	r->stolen_reflect = ref->readable ? ref->bytes_read : 0;
	r->stolen_allowlist = al->readable ? al->bytes_read : 0;
	r->secret_in_stolen = ref->readable && strstr(ref->body, r->victim_email) != NULL;
	return 0;
}

/* Phase 3: the preflights of cfg->repeats PUTs with Max-Age 0 and with Max-Age 600. */
static int phase_max_age(const void *cfg, void *result, char *err, size_t errlen)
{
	(void)cfg, (void)err, (void)errlen;
	struct cors_result *r = RES(result);
	r->preflights_max_age_0 = r->cases[CASE_MAXAGE_0].preflights;
	r->preflights_max_age_600 = r->cases[CASE_MAXAGE_600].preflights;
	return 0;
}

/* The victim's session, once the browser logged her in (phase 4's client uses it). */
static int victim_session(const struct cors_config *cfg, char *out, size_t outlen, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	PGresult *res =
	        pg_query(conn, "SELECT token FROM " SCHEMA ".sessions ORDER BY created_at DESC LIMIT 1", 0,
	                 NULL, err, errlen);
	int ret = -1;
	if (res && PQntuples(res) == 1) {
		snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
		ret = 0;
	} else if (res)
		snprintf(err, errlen, "the victim has no session: the browser never logged her in");
	if (res)
		PQclear(res);
	PQfinish(conn);
	return ret;
}

/* Phase 4: no browser: the lab's own client asks the same API. */
static int phase_client(const void *cfg, void *result, char *err, size_t errlen)
{
	struct cors_result *r = RES(result);
	/* the victim's cookie, as a thief (or the victim's own curl) would hold it */
	if (victim_session(CFG(cfg), r->env->session, sizeof(r->env->session), err, errlen) < 0)
		return -1;
	struct {
		const char *what, *target, *origin;
		bool cookie;
	} asks[CORS_CLIENT_ROWS] = {
	        {"no CORS headers, a session", "/api/none/me", NULL, true},
	        {"Origin: E (refused), a session", "/api/allowlist/me", r->evil_origin, true},
	        {"Origin: A (allowed), no session", "/api/allowlist/me", r->app_origin, false},
	};
	for (int i = 0; i < CORS_CLIENT_ROWS; i++) {
		char body[CORS_BODY];
		r->client[i].what = asks[i].what;
		if (cors_client_get(r->api_port, asks[i].target, asks[i].origin,
		                    asks[i].cookie ? r->env->session : NULL, &r->client[i], body,
		                    sizeof(body), err, errlen) < 0)
			return -1;
	}
	return 0;
}

/* ---- what --predict asks before each phase (data beside the phase: common/lab.h) ---- */

static double q_no_cors(const void *cfg, const void *result)
{
	(void)cfg;
	const struct cors_case_result *c = &RES_C(result)->cases[CASE_NO_CORS];
	if (c->requests == 0)
		return 0;
	if (c->readable)
		return 2;
	/* b as it says: the request arrived with the cookie and B answered the account */
	return c->with_cookie > 0 && c->server_status == 200 && c->bytes_sent > 0 ? 1 : NAN;
}
static const struct lab_question Q_BROWSER = {
        .text = "A's page fetches GET /api/none/me from B (another origin) with the victim's cookie; "
                "B sends no CORS header. What happens?",
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"the browser never sends the request",
                    "it arrives, B answers 200 with the account, the browser hides it from the page",
                    "it arrives and the page reads the answer"},
        .measured = q_no_cors,
        .why = "CORS guards reading, not sending: the request and its cookie reach the server (a "
               "side effect happens), only the answer is withheld from the page"};

static double q_stolen(const void *cfg, const void *result)
{
	(void)cfg;
	const struct cors_result *r = RES_C(result);
	bool reflect = r->stolen_reflect > 0, allow = r->stolen_allowlist > 0;
	return reflect && allow ? 2 : reflect ? 0 : allow ? 1 : 3;
}
static const struct lab_question Q_ATTACK = {
        .text = "An evil page on origin E, open in the victim's browser, fetches her account from B "
                "with her cookie. Through which policy does it read it?",
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"Origin reflected back + Allow-Credentials: true",
                    "an allow-list of A's origin + Vary: Origin", "both",
                    "neither: the cookie is "
                    "SameSite=Lax"},
        .measured = q_stolen,
        .why = "reflecting any Origin with credentials trusts every site; SameSite=Lax does not "
               "help, since E and B are the same site (127.0.0.1) on other ports"};

static double q_repeats(const void *cfg, int i)
{
	(void)i;
	return CFG(cfg)->repeats;
}
static double q_preflights_600(const void *cfg, const void *result)
{
	(void)cfg;
	return RES_C(result)->preflights_max_age_600;
}
static const struct lab_question Q_MAX_AGE = {
        .text = "{} PUTs with a JSON body (each needs a preflight) to a route whose preflight answers "
                "Access-Control-Max-Age: 600: how many OPTIONS reach the server?",
        .given = q_repeats,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "OPTIONS",
        .measured = q_preflights_600,
        .why = "the browser caches the preflight's answer for Max-Age seconds: one OPTIONS, then "
               "the PUTs alone (Max-Age 0: one per PUT)"};

static double q_client_status(const void *cfg, const void *result)
{
	(void)cfg;
	return RES_C(result)->client[1].status;
}
static const struct lab_question Q_CLIENT = {
        .text = "No browser: curl sends Origin: E (not on the allow-list) with the victim's session "
                "cookie to /api/allowlist/me. What status does it get?",
        .kind = LAB_ANSWER_NUMBER,
        .unit = "HTTP status",
        .measured = q_client_status,
        .why = "CORS is not authentication: the server answers the session, 200 with the account; "
               "only a browser withholds it, and curl is not one"};

static const struct lab_phase_def PHASES[CORS_PHASES] = {
        {"browser", phase_browser, &Q_BROWSER},
        {"attack", phase_attack, &Q_ATTACK},
        {"max_age", phase_max_age, &Q_MAX_AGE},
        {"client", phase_client, &Q_CLIENT},
};

/* ---- the run ---- */

static bool pg_lost(const char *url)
{
	char said[LAB_ERRLEN];
	PGconn *conn = pg_connect(url, said, sizeof(said));
	if (conn)
		PQfinish(conn);
	return conn == NULL;
}

static int env_start(const struct cors_config *cfg, struct cors_env *env, struct cors_result *r, char *err,
                     size_t errlen)
{
	env->pages = cors_pages_start(cfg->repeats, err, errlen);
	if (!env->pages)
		return -1;
	r->app_port = cors_pages_app_port(env->pages);
	r->evil_port = cors_pages_evil_port(env->pages);
	snprintf(r->app_origin, sizeof(r->app_origin), "http://127.0.0.1:%d", r->app_port);
	snprintf(r->evil_origin, sizeof(r->evil_origin), "http://127.0.0.1:%d", r->evil_port);
	/* vulnerable: the reflecting policy exists inside the lab's own run */
	env->api = cors_api_start(cfg, 0, r->app_origin, true, err, errlen);
	if (!env->api)
		return -1;
	r->api_port = cors_api_port(env->api);
	cors_pages_set_api(env->pages, r->api_port);
	snprintf(r->victim_email, sizeof(r->victim_email), "%s", VICTIM_EMAIL);
	return 0;
}

int cors_run(const struct cors_config *cfg, struct cors_result *result, char *err, size_t errlen)
{
	memset(result, 0, sizeof(*result));
	if (!cfg->chromium) {
		snprintf(err, errlen, "no browser given (cors_find_chromium)");
		return -1;
	}
	if (cors_setup(cfg, err, errlen) < 0) {
		result->lost_pg = pg_lost(cfg->pg_url);
		return -1;
	}
	struct cors_env env = {0};
	int ret = env_start(cfg, &env, result, err, errlen);
	if (ret == 0) {
		result->env = &env;
		ret = lab_phases_walk(PHASES, CORS_PHASES, cfg, result, &cfg->hooks, err, errlen);
		result->log_entries = cors_api_log_count(env.api);
		result->env = NULL;
	}
	cors_api_stop(env.api);
	cors_pages_stop(env.pages);
	/* Ctrl-C: common/lab.c's guard drops the schema; a teardown of ours would only race it */
	if (ret < 0 && lab_interrupted())
		return -1;
	char terr[LAB_ERRLEN];
	if (cors_teardown(cfg, terr, sizeof(terr)) < 0 && ret == 0) {
		snprintf(err, errlen, "teardown: %s", terr);
		ret = -1;
	}
	if (ret < 0)
		result->lost_pg = pg_lost(cfg->pg_url);
	return ret;
}

/* ---- the judge ---- */

/* The evil page must read at least this much of the victim's account through the reflecting
 * policy: one byte read is a leak, and the phase checks it holds her email */
#define MIN_STOLEN_BYTES 1
/* ... and nothing at all through the allow-list: any byte would be a leak */
#define MAX_STOLEN_BYTES_FIXED 0
/* A withheld answer still left the browser and reached the API: "CORS does not stop the
 * request" is shown by at least one request in the log, with the cookie where one was sent */
#define MIN_SENT_WHEN_UNREADABLE 1
/* With Max-Age 600 the browser preflights the first PUT and caches the answer: one OPTIONS
 * for all the repeats (the cache lives far longer than the run) */
#define MAX_PREFLIGHTS_CACHED 1
/* At least this many PUTs, or "one per PUT" and "one in all" cannot be told apart */
#define MIN_REPEATS 2

/* A case whose readable/unreadable outcome is not what the standard says. */
static bool browser_disagrees(const struct cors_result *r, char *why, size_t len)
{
	for (int i = 0; i < CORS_CASES; i++) {
		const struct cors_case_result *c = &r->cases[i];
		bool want = cors_case_expect_readable((enum cors_case)i);
		if (c->tries < 1 || c->readable != (want ? c->tries : 0)) {
			snprintf(why, len, "%s: the page read %d of %d answers, expected %s",
			         cors_case_name((enum cors_case)i), c->readable, c->tries,
			         want ? "all" : "none");
			return true;
		}
	}
	return false;
}

/* The server's half: what reached the API for each case. */
static bool server_disagrees(const struct cors_result *r, char *why, size_t len)
{
	/* every case reached the API from the page it belongs to: the attack really came from E */
	for (int i = 0; i < CORS_CASES; i++) {
		const char *want = CASES[i].from == FROM_EVIL ? r->evil_origin : r->app_origin;
		if (strcmp(r->cases[i].origin, want) != 0) {
			snprintf(why, len, "%s: the API saw Origin \"%s\", expected %s",
			         cors_case_name((enum cors_case)i), r->cases[i].origin, want);
			return true;
		}
	}
	static const enum cors_case SENT[] = {CASE_NO_CORS, CASE_STAR_CRED, CASE_EVIL_REFLECT,
	                                      CASE_EVIL_ALLOW};
	for (size_t k = 0; k < sizeof(SENT) / sizeof(SENT[0]); k++) {
		const struct cors_case_result *c = &r->cases[SENT[k]];
		if (c->requests < MIN_SENT_WHEN_UNREADABLE || c->with_cookie < MIN_SENT_WHEN_UNREADABLE ||
		    c->server_status != 200) {
			snprintf(why, len,
			         "%s: %d requests reached the API (%d with the cookie, last %d), expected a "
			         "200",
			         cors_case_name(SENT[k]), c->requests, c->with_cookie, c->server_status);
			return true;
		}
	}
	const struct cors_case_result *no = &r->cases[CASE_PREFLIGHT_NO], *ok = &r->cases[CASE_PREFLIGHT_OK];
	if (no->preflights < 1 || no->requests != 0) {
		snprintf(why, len,
		         "preflight refused: %d OPTIONS and %d PUTs in the log, expected OPTIONS and no PUT",
		         no->preflights, no->requests);
		return true;
	}
	if (ok->preflights < 1 || ok->requests < 1) {
		snprintf(why, len, "preflight allowed: %d OPTIONS and %d PUTs in the log, expected both",
		         ok->preflights, ok->requests);
		return true;
	}
	return false;
}

static bool attack_disagrees(const struct cors_result *r, char *why, size_t len)
{
	if (r->stolen_reflect < MIN_STOLEN_BYTES || !r->secret_in_stolen ||
	    r->stolen_reflect != r->cases[CASE_EVIL_REFLECT].bytes_sent) {
		snprintf(why, len,
		         "reflecting policy: the evil page read %d bytes (the API sent %d)%s, expected the "
		         "victim's "
		         "account",
		         r->stolen_reflect, r->cases[CASE_EVIL_REFLECT].bytes_sent,
		         r->secret_in_stolen ? "" : " without her email");
		return true;
	}
	if (r->stolen_allowlist > MAX_STOLEN_BYTES_FIXED) {
		snprintf(why, len, "allow-list: the evil page read %d bytes, expected %d",
		         r->stolen_allowlist, MAX_STOLEN_BYTES_FIXED);
		return true;
	}
	return false;
}

static bool max_age_disagrees(const struct cors_result *r, char *why, size_t len)
{
	const struct cors_case_result *z = &r->cases[CASE_MAXAGE_0], *s = &r->cases[CASE_MAXAGE_600];
	if (z->tries < MIN_REPEATS || r->preflights_max_age_0 != z->tries || z->requests != z->tries) {
		snprintf(why, len,
		         "Max-Age 0: %d OPTIONS and %d PUTs for %d tries, expected one of each per try",
		         r->preflights_max_age_0, z->requests, z->tries);
		return true;
	}
	if (r->preflights_max_age_600 < 1 || r->preflights_max_age_600 > MAX_PREFLIGHTS_CACHED ||
	    s->requests != s->tries) {
		snprintf(why, len, "Max-Age 600: %d OPTIONS and %d PUTs for %d tries, expected %d OPTIONS",
		         r->preflights_max_age_600, s->requests, s->tries, MAX_PREFLIGHTS_CACHED);
		return true;
	}
	return false;
}

/* Phase 4: the client reads whatever it is sent; only the session decides. */
static bool client_disagrees(const struct cors_result *r, char *why, size_t len)
{
	const struct cors_client_row *c = r->client;
	if (c[0].status != 200 || c[1].status != 200 || c[1].acao[0] || c[2].status != 401 ||
	    c[1].bytes != r->cases[CASE_EVIL_REFLECT].bytes_sent) {
		snprintf(why, len,
		         "without a browser: %d, %d (%d bytes, Allow-Origin \"%s\"), %d; expected 200, 200 "
		         "with the whole account and no Allow-Origin, 401",
		         c[0].status, c[1].status, c[1].bytes, c[1].acao, c[2].status);
		return true;
	}
	/* the allow-list's answer depends on Origin, so it says so to every cache in between */
	if (strcmp(c[1].vary, "Origin") != 0 || strcmp(c[2].vary, "Origin") != 0) {
		snprintf(why, len, "allow-list: Vary \"%s\" (refused) and \"%s\" (allowed), expected Origin",
		         c[1].vary, c[2].vary);
		return true;
	}
	return false;
}

void cors_judge(const struct cors_result *r, struct lab_verdict *v)
{
	char why[320] = "";
	bool bad = browser_disagrees(r, why, sizeof(why)) || server_disagrees(r, why, sizeof(why)) ||
	           attack_disagrees(r, why, sizeof(why)) || max_age_disagrees(r, why, sizeof(why)) ||
	           client_disagrees(r, why, sizeof(why));
	lab_verdict_set(
	        v, !bad,
	        "browsers enforce CORS: they withhold what its headers do not allow, though the request "
	        "arrives; reflecting Origin with credentials lets any page read the victim's data, an "
	        "allow-list stops it; a client without a browser reads it all",
	        "%s%sstolen %d bytes with the reflecting policy, %d with the allow-list; unreadable but "
	        "sent: %d, %d, %d requests with the cookie; preflights for %d PUTs: %d with Max-Age 0, %d "
	        "with 600; curl-like client: %d, %d, %d",
	        why, bad ? ". " : "", r->stolen_reflect, r->stolen_allowlist,
	        r->cases[CASE_NO_CORS].with_cookie, r->cases[CASE_STAR_CRED].with_cookie,
	        r->cases[CASE_EVIL_ALLOW].with_cookie, r->cases[CASE_MAXAGE_0].tries, r->preflights_max_age_0,
	        r->preflights_max_age_600, r->client[0].status, r->client[1].status, r->client[2].status);
}
