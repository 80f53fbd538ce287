/*
 * api.c — the API of lab-cors on origin B (cors.h has the contract): the victim's login, three
 * resources under five CORS policies, and an access log of every request, on one event loop
 * (struct http_app) with PostgreSQL through common/pool.h, so no handler blocks the loop.
 *
 * The CORS headers are the whole difference between the policies: the handlers behind them are
 * the same, and so is what they send. A browser decides from those headers what the page may
 * read; any other client reads it all.
 */
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "internal.h"
#include "pg.h"
#include "pool.h"
#include "rng.h"

/* the API's pool opens its first connection within this, or PostgreSQL is not there */
#define POOL_READY_MS 10000
/* a note's JSON body at most */
#define NOTE_MAX 4096
/* how long the browser may cache an allowed preflight (Chromium caps it at 7200 s, Firefox at
 * 86400 s): a client making many calls pays one preflight, not one per call */
#define MAX_AGE_S "600"

struct req_ctx;

struct cors_api {
	struct http_app app;
	struct pool *pool;
	bool vulnerable;
	bool stopping;
	char app_origin[48];
	struct req_ctx *live; /* requests waiting for PostgreSQL, answered at stop */
	pthread_mutex_t mu;   /* the log: written on the loop, read by the lab's thread */
	struct cors_log_entry *log;
	int nlog;
};

struct req_ctx {
	struct cors_api *api;
	struct evhttp_request *req;
	enum cors_policy policy;
	bool login;
	char token[80];
	struct pool_conn *conn;
	struct req_ctx *prev, *next;
};

/* Each prepared once per pooled connection, on its first use there (pool_query_prepared). */
static const struct pool_stmt SQL_ME = {
        "cors_me",
        "SELECT a.name, a.email, a.iban, a.balance_cents, a.address FROM " SCHEMA ".sessions s JOIN " SCHEMA
        ".accounts a ON a.id = s.account_id"
        " WHERE s.token = $1",
        1};
static const struct pool_stmt SQL_LOGIN = {
        "cors_login", "INSERT INTO " SCHEMA ".sessions (token, account_id) VALUES ($1, 1)", 1};

static const char *const POLICY_PATHS[CORS_POLICIES] = {"none", "star", "reflect", "allowlist",
                                                        "allowlist-0"};

/* ---- the log ---- */

static const char *method_name(enum evhttp_cmd_type m)
{
	switch (m) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_OPTIONS:
		return "OPTIONS";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	default:
		return "OTHER";
	}
}

/* The session token from Cookie: "sid=<token>", or false. */
static bool session_cookie(struct evhttp_request *req, char *out, size_t outlen)
{
	const char *c = evhttp_find_header(evhttp_request_get_input_headers(req), "Cookie");
	for (const char *p = c; p && *p;) {
		while (*p == ' ' || *p == ';')
			p++;
		size_t len = strcspn(p, ";");
		if (strncmp(p, COOKIE_NAME "=", strlen(COOKIE_NAME) + 1) == 0) {
			size_t v = len - strlen(COOKIE_NAME) - 1;
			if (v == 0 || v >= outlen)
				return false;
			memcpy(out, p + strlen(COOKIE_NAME) + 1, v);
			out[v] = '\0';
			return true;
		}
		p += len;
	}
	return false;
}

static void log_request(struct cors_api *api, struct evhttp_request *req, int status, size_t bytes)
{
	struct cors_log_entry e = {.status = status, .bytes = (int)bytes};
	char token[80];
	snprintf(e.method, sizeof(e.method), "%s", method_name(evhttp_request_get_command(req)));
	snprintf(e.target, sizeof(e.target), "%s", evhttp_request_get_uri(req));
	const char *o = evhttp_find_header(evhttp_request_get_input_headers(req), "Origin");
	snprintf(e.origin, sizeof(e.origin), "%s", o ? o : "");
	e.cookie = session_cookie(req, token, sizeof(token));
	pthread_mutex_lock(&api->mu);
	if (api->nlog < LOG_MAX)
		api->log[api->nlog++] = e;
	pthread_mutex_unlock(&api->mu);
}

int cors_api_log_count(struct cors_api *api)
{
	pthread_mutex_lock(&api->mu);
	int n = api->nlog;
	pthread_mutex_unlock(&api->mu);
	return n;
}

int cors_api_log(struct cors_api *api, int from, struct cors_log_entry *out, int max)
{
	pthread_mutex_lock(&api->mu);
	int n = 0;
	for (int i = from; i < api->nlog && n < max; i++)
		out[n++] = api->log[i];
	pthread_mutex_unlock(&api->mu);
	return n;
}

/* ---- replies ---- */

/* Sends body (stolen; NULL: none) with code, and logs the request with what was sent. */
static void reply(struct cors_api *api, struct evhttp_request *req, int code, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	if (text) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
		evbuffer_add(out, text, strlen(text));
	}
	size_t bytes = text ? strlen(text) : 0;
	free(text);
	log_request(api, req, code, bytes);
	http_send_reply(req, code, out);
}

static void reply_error(struct cors_api *api, struct evhttp_request *req, int code, const char *msg)
{
	reply(api, req, code, json_pack("{s:s}", "error", msg));
}

/* out[n++] = {name, value}, while there is room */
static void put(struct cors_header *out, int max, int *n, const char *name, const char *value)
{
	if (*n < max)
		out[(*n)++] = (struct cors_header){name, value};
}

int cors_decide(struct evhttp_request *req, enum cors_policy p, const char *app_origin, bool preflight,
                struct cors_header *out, int max)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *origin = evhttp_find_header(in, "Origin");
	int n = 0;
	switch (p) {
	case CORS_NONE:
		return 0;
	case CORS_STAR:
		/* the tempting one: "everyone, with credentials"; the standard forbids the pair */
		put(out, max, &n, "Access-Control-Allow-Origin", "*");
		put(out, max, &n, "Access-Control-Allow-Credentials", "true");
		if (preflight) {
			put(out, max, &n, "Access-Control-Allow-Methods", "GET, PUT");
			put(out, max, &n, "Access-Control-Allow-Headers", "Content-Type");
		}
		return n;
	case CORS_REFLECT: {
		/* the common mistake: whatever Origin came is allowed, with the cookie, and no Vary */
		if (!origin)
			return 0;
		put(out, max, &n, "Access-Control-Allow-Origin", origin);
		put(out, max, &n, "Access-Control-Allow-Credentials", "true");
		const char *m = evhttp_find_header(in, "Access-Control-Request-Method");
		const char *hd = evhttp_find_header(in, "Access-Control-Request-Headers");
		if (preflight && m)
			put(out, max, &n, "Access-Control-Allow-Methods", m);
		if (preflight && hd)
			put(out, max, &n, "Access-Control-Allow-Headers", hd);
		return n;
	}
	case CORS_ALLOWLIST:
	case CORS_ALLOWLIST_0:
	default:
		/* the answer depends on Origin: a cache in between must keep one per Origin */
		put(out, max, &n, "Vary", "Origin");
		/* on the allow-list: exactly the app's origin, compared whole */
		if (!origin || strcmp(origin, app_origin) != 0)
			return n;
		put(out, max, &n, "Access-Control-Allow-Origin", origin);
		put(out, max, &n, "Access-Control-Allow-Credentials", "true");
		if (preflight) {
			put(out, max, &n, "Access-Control-Allow-Methods", "GET, PUT");
			put(out, max, &n, "Access-Control-Allow-Headers", "Content-Type");
			put(out, max, &n, "Access-Control-Max-Age", p == CORS_ALLOWLIST ? MAX_AGE_S : "0");
		}
		return n;
	}
}

/* The CORS headers of policy p on an answer (preflight: the answer to an OPTIONS). */
static void cors_headers(struct cors_api *api, struct evhttp_request *req, enum cors_policy p, bool preflight)
{
	struct cors_header hs[CORS_HEADERS_MAX];
	int n = cors_decide(req, p, api->app_origin, preflight, hs, CORS_HEADERS_MAX);
	for (int i = 0; i < n; i++)
		evhttp_add_header(evhttp_request_get_output_headers(req), hs[i].name, hs[i].value);
}

/* ---- request contexts (requests waiting for PostgreSQL) ---- */

static struct req_ctx *ctx_new(struct cors_api *api, struct evhttp_request *req)
{
	struct req_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return NULL;
	ctx->api = api;
	ctx->req = req;
	ctx->next = api->live;
	if (api->live)
		api->live->prev = ctx;
	api->live = ctx;
	return ctx;
}

static void ctx_free(struct req_ctx *ctx)
{
	struct cors_api *api = ctx->api;
	if (ctx->prev)
		ctx->prev->next = ctx->next;
	else
		api->live = ctx->next;
	if (ctx->next)
		ctx->next->prev = ctx->prev;
	if (ctx->conn)
		pool_release(ctx->conn);
	free(ctx);
}

static void ctx_fail(struct req_ctx *ctx, int code, const char *msg)
{
	if (ctx->api->stopping && code == 500) {
		code = 503;
		msg = "the API is shutting down; retry";
	}
	if (!ctx->login)
		cors_headers(ctx->api, ctx->req, ctx->policy, false);
	reply_error(ctx->api, ctx->req, code, msg);
	ctx_free(ctx);
}

static void login_done(struct req_ctx *ctx)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(ctx->req);
	char cookie[160], location[96];
	/* HttpOnly: no script reads it; SameSite=Lax: sent on same-site requests (127.0.0.1 on any
	 * port is one site), which is every fetch of the lab's three origins */
	snprintf(cookie, sizeof(cookie), COOKIE_NAME "=%s; Path=/; HttpOnly; SameSite=Lax", ctx->token);
	snprintf(location, sizeof(location), "%s/app", ctx->api->app_origin);
	evhttp_add_header(h, "Set-Cookie", cookie);
	evhttp_add_header(h, "Location", location);
	reply(ctx->api, ctx->req, 302, json_pack("{s:s}", "next", location));
	ctx_free(ctx);
}

static void me_done(struct req_ctx *ctx, PGresult *res)
{
	cors_headers(ctx->api, ctx->req, ctx->policy, false);
	if (PQntuples(res) != 1) {
		reply_error(ctx->api, ctx->req, 401, "no session: log in first");
		ctx_free(ctx);
		return;
	}
	json_t *me = json_pack("{s:s,s:s,s:s,s:I,s:s}", "name", PQgetvalue(res, 0, 0), "email",
	                       PQgetvalue(res, 0, 1), "iban", PQgetvalue(res, 0, 2), "balance_cents",
	                       (json_int_t)strtoll(PQgetvalue(res, 0, 3), NULL, 10), "address",
	                       PQgetvalue(res, 0, 4));
	reply(ctx->api, ctx->req, 200, me);
	ctx_free(ctx);
}

static void query_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct req_ctx *ctx = arg;
	ExecStatusType want = ctx->login ? PGRES_COMMAND_OK : PGRES_TUPLES_OK;
	if (!res || PQresultStatus(res) != want) {
		char msg[256];
		pg_message_line(msg, sizeof(msg), res ? PQresultErrorMessage(res) : err);
		ctx_fail(ctx, 500, msg);
		return;
	}
	if (ctx->login)
		login_done(ctx);
	else
		me_done(ctx, res);
}

static void acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct req_ctx *ctx = arg;
	if (!conn) {
		ctx_fail(ctx, 503, err);
		return;
	}
	ctx->conn = conn;
	const char *p[] = {ctx->token};
	if (pool_query_prepared(conn, ctx->login ? &SQL_LOGIN : &SQL_ME, p, query_cb, ctx) < 0)
		ctx_fail(ctx, 500, "could not send the query");
}

/* ---- routes ---- */

/* GET /login: the victim logs in (no password: the lab's victim is always Ada). */
static void login_cb(struct evhttp_request *req, void *arg)
{
	struct cors_api *api = arg;
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		reply_error(api, req, 405, "GET /login");
		return;
	}
	struct req_ctx *ctx = api->stopping ? NULL : ctx_new(api, req);
	if (!ctx) {
		reply_error(api, req, 503, "the API is shutting down; retry");
		return;
	}
	ctx->login = true;
	if (rng_token(ctx->token, sizeof(ctx->token), 24) < 0) {
		ctx_fail(ctx, 500, "no random bytes for a session");
		return;
	}
	pool_acquire(api->pool, "login", acquired_cb, ctx);
}

static void me(struct cors_api *api, struct evhttp_request *req, enum cors_policy p)
{
	char token[80];
	if (!session_cookie(req, token, sizeof(token))) {
		cors_headers(api, req, p, false);
		reply_error(api, req, 401, "no session: log in first");
		return;
	}
	struct req_ctx *ctx = api->stopping ? NULL : ctx_new(api, req);
	if (!ctx) {
		reply_error(api, req, 503, "the API is shutting down; retry");
		return;
	}
	ctx->policy = p;
	snprintf(ctx->token, sizeof(ctx->token), "%s", token);
	pool_acquire(api->pool, "me", acquired_cb, ctx);
}

/* PUT /api/<p>/notes/<id>: echoes the note (what a preflighted write would store). */
static void note(struct cors_api *api, struct evhttp_request *req, enum cors_policy p, const char *id)
{
	char err[256];
	cors_headers(api, req, p, false);
	long n = strtol(id, NULL, 10);
	if (n < 1 || n > 1000000 || strspn(id, "0123456789") != strlen(id)) {
		reply_error(api, req, 404, "notes are numbered 1 to 1000000");
		return;
	}
	json_t *body = http_read_json(req, NOTE_MAX, err, sizeof(err));
	if (!body) {
		reply_error(api, req, 400, err);
		return;
	}
	reply(api, req, 200, json_pack("{s:i,s:b,s:o}", "id", (int)n, "saved", 1, "note", body));
}

int cors_parse_request(struct evhttp_request *req, bool vulnerable, struct cors_request *out, char *err,
                       size_t errlen)
{
	memset(out, 0, sizeof(*out));
	const char *path = http_request_path(req);
	path += strncmp(path, "/api/", 5) == 0 ? 5 : strlen(path);
	int p = 0;
	size_t len = strcspn(path, "/");
	while (p < CORS_POLICIES && !(strlen(POLICY_PATHS[p]) == len && !strncmp(path, POLICY_PATHS[p], len)))
		p++;
	if (p == CORS_POLICIES || (p == CORS_REFLECT && !vulnerable) || path[len] != '/') {
		snprintf(err, errlen, "no such policy: /api/{none,star,allowlist,allowlist-0}/...");
		return 404;
	}
	/* one Origin, short, no control characters: two would leave "which one is allowed" to whoever
	 * reads the first, so such a request gets 400 and no CORS header at all */
	const char *origin, *res = path + len + 1;
	if (http_header_one(req, "Origin", &origin, err, errlen) < 0)
		return 400;
	if (origin && strlen(origin) > ORIGIN_MAX) {
		snprintf(err, errlen, "Origin is longer than any origin");
		return 400;
	}
	out->policy = (enum cors_policy)p;
	out->origin = origin;
	out->is_note = strncmp(res, "notes/", 6) == 0;
	out->resource = out->is_note ? res + 6 : res;
	if (!out->is_note && strcmp(res, "public") && strcmp(res, "me")) {
		snprintf(err, errlen, "resources: public, me, notes/<id>");
		return 404;
	}
	return 0;
}

/* /api/<policy>/<resource> */
static void api_cb(struct evhttp_request *req, void *arg)
{
	struct cors_api *api = arg;
	struct cors_request r;
	char err[256];
	int code = cors_parse_request(req, api->vulnerable, &r, err, sizeof(err));
	if (code) {
		reply_error(api, req, code, err);
		return;
	}
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	if (m == EVHTTP_REQ_OPTIONS) {
		cors_headers(api, req, r.policy, true);
		reply(api, req, 204, NULL);
	} else if (r.is_note && m == EVHTTP_REQ_PUT)
		note(api, req, r.policy, r.resource);
	else if (!r.is_note && m == EVHTTP_REQ_GET && !strcmp(r.resource, "me"))
		me(api, req, r.policy);
	else if (!r.is_note && m == EVHTTP_REQ_GET) {
		cors_headers(api, req, r.policy, false);
		reply(api, req, 200,
		      json_pack("{s:s,s:s}", "status", "ok", "motd", "public data: anyone may read it"));
	} else {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
		                  r.is_note ? "PUT, OPTIONS" : "GET, OPTIONS");
		reply_error(api, req, 405, r.is_note ? "notes take PUT" : "GET only");
	}
}

/* ---- start and stop ---- */

static void api_release(void *arg)
{
	struct cors_api *api = arg;
	api->stopping = true;
	pool_free(api->pool);
	api->pool = NULL;
	while (api->live) {
		api->live->conn = NULL;
		ctx_fail(api->live, 503, "the API is shutting down; retry");
	}
}

struct cors_api *cors_api_start(const struct cors_config *cfg, int port, const char *app_origin,
                                bool vulnerable, char *err, size_t errlen)
{
	struct cors_api *api = calloc(1, sizeof(*api));
	if (!api || !(api->log = calloc(LOG_MAX, sizeof(*api->log)))) {
		free(api);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&api->mu, NULL);
	api->vulnerable = vulnerable;
	snprintf(api->app_origin, sizeof(api->app_origin), "%s", app_origin);
	if (http_app_open(&api->app, port, err, errlen) < 0)
		goto fail;
	struct pool_config pc = {.conninfo = cfg->pg_url,
	                         .min_idle = 1,
	                         .max_size = cfg->pool_size,
	                         .acquire_timeout_ms = 2000};
	api->pool = pool_new(api->app.base, &pc, err, errlen);
	if (!api->pool)
		goto fail;
	http_server_route(api->app.server, "/login", login_cb, api);
	http_server_route_prefix(api->app.server, "/api/", api_cb, api);
	if (pool_wait_ready(api->pool, POOL_READY_MS, err, errlen) < 0 ||
	    http_app_run(&api->app, err, errlen) < 0)
		goto fail;
	return api;
fail:
	cors_api_stop(api);
	return NULL;
}

int cors_api_port(const struct cors_api *api)
{
	return http_server_port(api->app.server);
}

void cors_api_stop(struct cors_api *api)
{
	if (!api)
		return;
	http_app_stop(&api->app, api_release, api);
	pthread_mutex_destroy(&api->mu);
	free(api->log);
	free(api);
}
