/*
 * api.c — the users API of lab-versioning (versioning.h has the contract): one row of
 * PostgreSQL, two representations, three ways to ask for one, on one event loop in a thread of
 * its own (struct http_app) with connections from common/pool.h, so no handler blocks the loop.
 */
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include "http.h"
#include "internal.h"
#include "pg.h"
#include "pool.h"

/* the API's pool opens its first connection within this, or PostgreSQL is not there */
#define POOL_READY_MS 10000
/* distinct v1 callers the API tells apart; the rest are counted together */
#define MAX_CALLERS 32
/* the largest id a path may hold (PostgreSQL bigint is larger; no user has one this high) */
#define MAX_ID 1000000000000L

struct v1_caller {
	char agent[AGENT_LEN + 1];
	int64_t calls;
};

struct req_ctx;

struct path_route {
	struct versioning_api *api;
	int version;
};

struct versioning_api {
	struct versioning_config cfg;
	struct http_app app;
	struct pool *pool;
	atomic_bool added_field;
	bool stopping;
	struct path_route v1, v2;
	struct req_ctx *live; /* requests waiting for PostgreSQL, answered at stop */
	/* the deprecation headers, fixed when the API starts */
	char deprecation[32], sunset[64];
	/* v1 answers by client, on the loop thread only */
	struct v1_caller callers[MAX_CALLERS];
	int ncallers;
	int64_t other_calls;
};

struct req_ctx {
	struct versioning_api *api;
	struct evhttp_request *req;
	struct vers_request r; /* what it asks for, from versioning_parse_request */
	struct pool_conn *conn;
	struct req_ctx *prev, *next;
};

/* prepared once per pooled connection, on its first use there (pool_query_prepared) */
static const struct pool_stmt SQL_USER = {
        "versioning_user",
        "SELECT given_name, family_name, email, price_cents, locale FROM " SCHEMA ".users WHERE id = $1", 1};

/* ---- request contexts ---- */

static struct req_ctx *ctx_new(struct versioning_api *api, struct evhttp_request *req)
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
	struct versioning_api *api = ctx->api;
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
	http_reply_error(ctx->req, code, "%s", msg);
	ctx_free(ctx);
}

/* ---- the answer ---- */

/* The v1 caller's count, by User-Agent (on the loop thread). */
static void count_v1(struct versioning_api *api, const char *agent)
{
	for (int i = 0; i < api->ncallers; i++)
		if (strcmp(api->callers[i].agent, agent) == 0) {
			api->callers[i].calls++;
			return;
		}
	if (api->ncallers == MAX_CALLERS) {
		api->other_calls++;
		return;
	}
	struct v1_caller *c = &api->callers[api->ncallers++];
	snprintf(c->agent, sizeof(c->agent), "%s", agent);
	c->calls = 1;
}

/* Deprecation, Sunset and the successor of this very request, on v1 answers only. */
static void deprecation_headers(struct req_ctx *ctx, struct evkeyvalq *h)
{
	char link[256];
	evhttp_add_header(h, "Deprecation", ctx->api->deprecation);
	evhttp_add_header(h, "Sunset", ctx->api->sunset);
	if (ctx->r.approach == VERSIONING_PATH)
		snprintf(link, sizeof(link), "</v2/users/%ld>; rel=\"successor-version\"", ctx->r.id);
	else if (ctx->r.approach == VERSIONING_HEADER)
		snprintf(link, sizeof(link),
		         "</users/%ld>; rel=\"successor-version\"; type=\"" VERSIONING_MEDIA_V2 "\"",
		         ctx->r.id);
	else
		snprintf(link, sizeof(link), "</users/%ld?version=2>; rel=\"successor-version\"", ctx->r.id);
	evhttp_add_header(h, "Link", link);
}

static json_t *representation(struct req_ctx *ctx, PGresult *res)
{
	const char *given = PQgetvalue(res, 0, 0), *family = PQgetvalue(res, 0, 1);
	long long cents = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
	json_t *doc;
	if (ctx->r.version == 1) {
		char name[128];
		snprintf(name, sizeof(name), "%s %s", given, family);
		doc = json_pack("{s:I,s:s,s:s,s:f}", "id", (json_int_t)ctx->r.id, "name", name, "email",
		                PQgetvalue(res, 0, 2), "price", (double)cents / 100.0);
	} else {
		doc = json_pack("{s:I,s:s,s:s,s:s,s:I}", "id", (json_int_t)ctx->r.id, "given_name", given,
		                "family_name", family, "email", PQgetvalue(res, 0, 2), "price_cents",
		                (json_int_t)cents);
	}
	/* the non-breaking change: one more field in both versions, no new version */
	if (doc && atomic_load(&ctx->api->added_field))
		json_object_set_new(doc, "locale", json_string(PQgetvalue(res, 0, 4)));
	return doc;
}

static void reply_user(struct req_ctx *ctx, PGresult *res)
{
	json_t *doc = representation(ctx, res);
	/* two decimals are all a price in dollars has: 19.99, not 19.989999999999998 */
	char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
	json_decref(doc);
	if (!text) {
		ctx_fail(ctx, 500, "out of memory");
		return;
	}
	struct evkeyvalq *h = evhttp_request_get_output_headers(ctx->req);
	char cc[64];
	snprintf(cc, sizeof(cc), "public, max-age=%d", ctx->api->cfg.max_age_s);
	evhttp_add_header(h, "Content-Type", ctx->r.content_type);
	evhttp_add_header(h, "Cache-Control", cc);
	if (ctx->r.vary && ctx->api->cfg.vary_accept)
		evhttp_add_header(h, "Vary", "Accept");
	if (ctx->r.version == 1) {
		deprecation_headers(ctx, h);
		count_v1(ctx->api, ctx->r.agent);
	}
	struct evbuffer *out = evhttp_request_get_output_buffer(ctx->req);
	evbuffer_add(out, text, strlen(text));
	free(text);
	http_send_reply(ctx->req, 200, out);
	ctx_free(ctx);
}

static void user_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct req_ctx *ctx = arg;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		char msg[256];
		pg_message_line(msg, sizeof(msg), res ? PQresultErrorMessage(res) : err);
		ctx_fail(ctx, 500, msg);
		return;
	}
	if (PQntuples(res) != 1) {
		char msg[64];
		snprintf(msg, sizeof(msg), "no user %ld", ctx->r.id);
		ctx_fail(ctx, 404, msg);
		return;
	}
	reply_user(ctx, res);
}

static void acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct req_ctx *ctx = arg;
	if (!conn) {
		ctx_fail(ctx, 503, err);
		return;
	}
	ctx->conn = conn;
	char id[24];
	snprintf(id, sizeof(id), "%ld", ctx->r.id);
	const char *p[] = {id};
	if (pool_query_prepared(conn, &SQL_USER, p, user_cb, ctx) < 0)
		ctx_fail(ctx, 500, "could not send the query");
}

/* ---- parsing ---- */

/* The id at the end of the path: digits only, 1..MAX_ID; 0 when it is not one. */
static long parse_id(const char *s)
{
	if (!*s || strlen(s) > 13)
		return 0;
	for (const char *p = s; *p; p++)
		if (!isdigit((unsigned char)*p))
			return 0;
	long id = strtol(s, NULL, 10);
	return id >= 1 && id <= MAX_ID ? id : 0;
}

/* The caller, as the count names it: its User-Agent, printable and short, or "(none)". */
static int parse_agent(struct evhttp_request *req, struct vers_request *r, char *err, size_t errlen)
{
	const char *ua;
	int found = http_header_one(req, "User-Agent", &ua, err, errlen);
	if (found < 0)
		return -1;
	snprintf(r->agent, sizeof(r->agent), "%s", found && *ua ? ua : "(none)");
	for (char *p = r->agent; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			*p = '?';
	return 0;
}

/*
 * One media range of Accept, "type/sub; q=0.5": the type into type, its q (1 when absent).
 * false when q is 0 (the client refuses it).
 */
static bool media_range(char *item, char *type, size_t typelen, double *q)
{
	*q = 1.0;
	char *semi = strchr(item, ';');
	if (semi) {
		*semi = '\0';
		for (char *save = NULL, *p = strtok_r(semi + 1, ";", &save); p;
		     p = strtok_r(NULL, ";", &save)) {
			while (*p == ' ' || *p == '\t')
				p++;
			if ((p[0] == 'q' || p[0] == 'Q') && p[1] == '=')
				*q = strtod(p + 2, NULL);
		}
	}
	while (*item == ' ' || *item == '\t')
		item++;
	size_t len = strlen(item);
	while (len && (item[len - 1] == ' ' || item[len - 1] == '\t'))
		len--;
	snprintf(type, typelen, "%.*s", (int)len, item);
	for (char *p = type; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return *q > 0;
}

/*
 * Which version a media type names, exactly: 1 or 2 for the two this API serves, -1 for another
 * application/vnd.backendlabs.v<digits>+json, 0 for anything else. Compared as text, not scanned
 * with %d, which read "v+1", "v 1" and "v01" as version 1.
 */
static int media_version(const char *type)
{
	static const char prefix[] = "application/vnd.backendlabs.v";
	if (strncmp(type, prefix, sizeof(prefix) - 1) != 0)
		return 0;
	const char *d = type + sizeof(prefix) - 1;
	size_t digits = strspn(d, "0123456789");
	if (!digits || strcmp(d + digits, "+json") != 0)
		return 0;
	return digits == 1 && (d[0] == '1' || d[0] == '2') ? d[0] - '0' : -1;
}

/*
 * The version Accept asks for: the known vnd.backendlabs type with the highest q; else, when
 * application/json, application/ * or * / * is acceptable, v1 as application/json; else 406.
 * 0, or 406 with err (unknown is set when a vnd.backendlabs version we do not serve was asked).
 */
static int negotiate(const char *accept, struct vers_request *r, char *err, size_t errlen)
{
	char list[512], type[128], unknown[128] = "";
	snprintf(list, sizeof(list), "%s", accept ? accept : "*/*");
	double best_q = 0;
	bool generic = false;
	for (char *save = NULL, *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		double q;
		if (!media_range(item, type, sizeof(type), &q))
			continue;
		int v = media_version(type);
		if (v) {
			if (v > 0 && q > best_q) {
				best_q = q;
				r->version = v;
			} else if (v < 0)
				snprintf(unknown, sizeof(unknown), "%s", type);
		} else if (!strcmp(type, "application/json") || !strcmp(type, "application/*") ||
		           !strcmp(type, "*/*"))
			generic = true;
	}
	if (best_q > 0) {
		snprintf(r->content_type, sizeof(r->content_type), "application/vnd.backendlabs.v%d+json",
		         r->version);
		return 0;
	}
	if (generic) {
		r->version = 1;
		snprintf(r->content_type, sizeof(r->content_type), "application/json");
		return 0;
	}
	if (unknown[0])
		snprintf(err, errlen,
		         "this API has no version %s; it serves " VERSIONING_MEDIA_V1
		         " and " VERSIONING_MEDIA_V2,
		         unknown);
	else
		snprintf(err, errlen,
		         "none of the media types in Accept is served here; ask for " VERSIONING_MEDIA_V1
		         " or " VERSIONING_MEDIA_V2);
	return 406;
}

static void reply_406(struct evhttp_request *req, const char *msg)
{
	http_reply_json(req, 406,
	                json_pack("{s:s,s:[s,s,s]}", "error", msg, "supported", VERSIONING_MEDIA_V1,
	                          VERSIONING_MEDIA_V2, "application/json"));
}

/* GET only (HEAD is answered by evhttp from GET); 0, or the status with err. */
static int only_get(struct evhttp_request *req, char *err, size_t errlen)
{
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	if (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD)
		return 0;
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
	snprintf(err, errlen, "only GET here: users are read-only in this lab");
	return 405;
}

/* Starts a request whose version is known: PostgreSQL next. */
static void fetch(struct req_ctx *ctx)
{
	pool_acquire(ctx->api->pool, "users_handler", acquired_cb, ctx);
}

/* A request arrives: the method, then the API stopping. NULL when it was answered already. */
static struct req_ctx *admit(struct versioning_api *api, struct evhttp_request *req)
{
	char err[256];
	int code = only_get(req, err, sizeof(err));
	if (code || api->stopping) {
		http_reply_error(req, code ? code : 503, "%s",
		                 code ? err : "the API is shutting down; retry");
		return NULL;
	}
	struct req_ctx *ctx = ctx_new(api, req);
	if (!ctx)
		http_reply_error(req, 500, "out of memory");
	return ctx;
}

/* /v1/users/{id}, /v2/users/{id} (arg: the version), /users/{id} (arg NULL): parse, then PostgreSQL */
static void users_route(struct versioning_api *api, struct evhttp_request *req, int path_version)
{
	struct req_ctx *ctx = admit(api, req);
	if (!ctx)
		return;
	char err[256];
	int code = versioning_parse_request(req, path_version, &ctx->r, err, sizeof(err));
	if (code == 406) {
		reply_406(req, err);
		ctx_free(ctx);
	} else if (code) {
		ctx_fail(ctx, code, err);
	} else {
		fetch(ctx);
	}
}

static void path_cb(struct evhttp_request *req, void *arg)
{
	struct path_route *r = arg;
	users_route(r->api, req, r->version);
}

/* /v<anything else>...: a version the path names and this API does not serve. */
static void unknown_path_cb(struct evhttp_request *req, void *arg)
{
	(void)arg;
	const char *path = http_request_path(req);
	int v = 0, n = 0;
	if (sscanf(path, "/v%d/users/%n", &v, &n) == 1 && n > 0)
		http_reply_error(req, 404,
		                 "this API has no version v%d; it serves /v1/users/{id} and /v2/users/{id}",
		                 v);
	else
		http_reply_error(req, 404,
		                 "no route %.80s; try /v1/users/{id}, /v2/users/{id} or /users/{id}", path);
}

/*
 * ?version= of the query: 1 and *version when given once, 0 when absent, -1 when the query is
 * not valid (http_query_parse: a %00 too), the value no whole number, or the name given more than
 * once in any case (evhttp_find_header ignores case: ?Version=1&version=2 is two, and which one
 * the client meant a careful API does not guess).
 */
static int query_version(struct evhttp_request *req, long *version, char *err, size_t errlen)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
	struct evkeyvalq q;
	int ret = http_query_parse(query, &q, err, errlen), n = 0;
	struct evkeyval *kv;
	TAILQ_FOREACH(kv, &q, next)
	{
		n += strcasecmp(kv->key, "version") == 0;
	}
	if (ret == 0)
		ret = n > 1 ? -1 : http_kv_long(&q, "version", -1000000, 1000000, version, err, errlen);
	evhttp_clear_headers(&q);
	return ret;
}

/* /users/{id}: ?version= when present (query versioning), else Accept (header versioning). */
static int parse_query_or_accept(struct evhttp_request *req, long version, int has, struct vers_request *r,
                                 char *err, size_t errlen)
{
	if (has < 0 || (has > 0 && version != 1 && version != 2)) {
		if (has > 0)
			snprintf(err, errlen,
			         "this API has no version=%ld; it serves version=1 and version=2", version);
		else
			snprintf(err, errlen, "version must be 1 or 2, given once (?version=2)");
		return 400;
	}
	if (has > 0) {
		r->version = (int)version;
		snprintf(r->content_type, sizeof(r->content_type), "application/json");
		return 0;
	}
	const char *accept = NULL;
	if (http_header_one(req, "Accept", &accept, err, errlen) < 0)
		return 400;
	r->vary = true;
	return negotiate(accept, r, err, errlen);
}

int versioning_parse_request(struct evhttp_request *req, int path_version, struct vers_request *r, char *err,
                             size_t errlen)
{
	memset(r, 0, sizeof(*r));
	char qerr[256] = "";
	long version = 0;
	int has = path_version ? 0 : query_version(req, &version, qerr, sizeof(qerr));
	r->approach = path_version ? VERSIONING_PATH : has != 0 ? VERSIONING_QUERY : VERSIONING_HEADER;
	if (parse_agent(req, r, err, errlen) < 0)
		return 400;
	/* the route's prefix (http_server_route_prefix); "" when the path is not under it */
	const char *path = http_request_path(req);
	char prefix[16];
	snprintf(prefix, sizeof(prefix), path_version ? "/v%d/users/" : "/users/", path_version);
	const char *id_text = strncmp(path, prefix, strlen(prefix)) == 0 ? path + strlen(prefix) : "";
	r->id = parse_id(id_text);
	if (!r->id) {
		snprintf(err, errlen, "no user \"%.40s\": ids are whole numbers from 1", id_text);
		return 404;
	}
	if (!path_version)
		return parse_query_or_accept(req, version, has, r, err, errlen);
	r->version = path_version;
	snprintf(r->content_type, sizeof(r->content_type), "application/json");
	return 0;
}

static void users_cb(struct evhttp_request *req, void *arg)
{
	users_route(arg, req, 0);
}

/* GET /stats/v1-calls: who still calls v1, as this API saw them (a cache hit never reaches it). */
static void stats_cb(struct evhttp_request *req, void *arg)
{
	struct versioning_api *api = arg;
	char err[128];
	int code = only_get(req, err, sizeof(err));
	if (code) {
		http_reply_error(req, code, "%s", err);
		return;
	}
	json_t *callers = json_object();
	for (int i = 0; i < api->ncallers; i++)
		json_object_set_new(callers, api->callers[i].agent, json_integer(api->callers[i].calls));
	if (api->other_calls)
		json_object_set_new(callers, "(others)", json_integer(api->other_calls));
	http_reply_json(req, 200,
	                json_pack("{s:o,s:s,s:s}", "v1_calls", callers, "deprecation", api->deprecation,
	                          "sunset", api->sunset));
}

/* ---- starting and stopping ---- */

/* Deprecation: the day the API started (RFC 9745, @epoch); Sunset: sunset_days later (RFC 8594). */
static void deprecation_dates(struct versioning_api *api)
{
	time_t now = time(NULL);
	time_t day = now - now % 86400;
	time_t sunset = day + (time_t)api->cfg.sunset_days * 86400;
	struct tm tm;
	gmtime_r(&sunset, &tm);
	snprintf(api->deprecation, sizeof(api->deprecation), "@%lld", (long long)day);
	strftime(api->sunset, sizeof(api->sunset), "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static void api_release(void *arg)
{
	struct versioning_api *api = arg;
	api->stopping = true;
	pool_free(api->pool);
	api->pool = NULL;
	while (api->live) {
		api->live->conn = NULL;
		ctx_fail(api->live, 503, "the API is shutting down; retry");
	}
}

struct versioning_api *versioning_api_start(const struct versioning_config *cfg, int port, char *err,
                                            size_t errlen)
{
	struct versioning_api *api = calloc(1, sizeof(*api));
	if (!api) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	api->cfg = *cfg;
	atomic_store(&api->added_field, cfg->added_field);
	deprecation_dates(api);
	if (http_app_open(&api->app, port, err, errlen) < 0)
		goto err;
	struct pool_config pc = {.conninfo = cfg->pg_url,
	                         .min_idle = 1,
	                         .max_size = cfg->pool_size,
	                         .acquire_timeout_ms = 2000};
	api->pool = pool_new(api->app.base, &pc, err, errlen);
	if (!api->pool)
		goto err;
	api->v1 = (struct path_route){api, 1};
	api->v2 = (struct path_route){api, 2};
	http_server_route_prefix(api->app.server, "/v1/users/", path_cb, &api->v1);
	http_server_route_prefix(api->app.server, "/v2/users/", path_cb, &api->v2);
	http_server_route_prefix(api->app.server, "/v", unknown_path_cb, api);
	http_server_route_prefix(api->app.server, "/users/", users_cb, api);
	http_server_route(api->app.server, "/stats/v1-calls", stats_cb, api);
	if (pool_wait_ready(api->pool, POOL_READY_MS, err, errlen) < 0 ||
	    http_app_run(&api->app, err, errlen) < 0)
		goto err;
	return api;
err:
	versioning_api_stop(api);
	return NULL;
}

int versioning_api_port(const struct versioning_api *api)
{
	return http_server_port(api->app.server);
}

void versioning_api_add_field(struct versioning_api *api)
{
	atomic_store(&api->added_field, true);
}

void versioning_api_stop(struct versioning_api *api)
{
	if (!api)
		return;
	http_app_stop(&api->app, api_release, api);
	free(api);
}
