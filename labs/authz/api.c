/*
 * api.c — the API of lab-authz on one event loop in a thread of its own (struct http_app), with
 * PostgreSQL through common/pool.h and the deny-list in Redis (api_redis.c).
 *
 *   POST   /v1/login          {"name","password"} -> 200 {"access_token","token_type","expires_in"}
 *   GET    /v1/public-key     the RS256 public key (PEM): public, as a JWKS endpoint would be
 *   GET    /v1/me             who the token says the caller is
 *   GET    /v1/admin/users    admin only: 403 for a user's valid token
 *   DELETE /v1/users/{id}     admin only: the user is deleted, and every token of theirs denied
 *   POST   /v1/logout         the token's jti on the deny-list
 *   POST   /v1/orders         {"item","amount_cents"} -> 201, owned by the token's sub
 *   GET    /v1/orders/{id}    the caller's own order; another user's is 404, as a missing one
 * With cfg.vulnerable, the naive twins of /v1/me, /v1/admin/users and /v1/orders/{id} under
 * /vuln: the naive verifier, no deny-list, and no owner in the order's query.
 *
 * Authentication failures are 401 with WWW-Authenticate (RFC 6750 section 3): "Bearer" alone when
 * the request carried no bearer token (section 3.1: no error code then), Bearer
 * error="invalid_token" with an error_description otherwise. A valid token without the right is
 * 403 with error="insufficient_scope". A rejected request never reaches the database.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "pg.h"

/* the pool opens its first connections within this, or the server is not there */
#define POOL_READY_MS 10000

static struct az_ctx *ctx_new(struct authz_api *api, struct evhttp_request *req, const struct az_route *rt)
{
	struct az_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return NULL;
	ctx->api = api;
	ctx->req = req;
	ctx->rt = rt;
	ctx->next = api->live;
	if (api->live)
		api->live->prev = ctx;
	api->live = ctx;
	return ctx;
}

static void ctx_free(struct az_ctx *ctx)
{
	struct authz_api *api = ctx->api;
	if (ctx->conn)
		pool_release(ctx->conn);
	if (ctx->prev)
		ctx->prev->next = ctx->next;
	else
		api->live = ctx->next;
	if (ctx->next)
		ctx->next->prev = ctx->prev;
	OPENSSL_cleanse(ctx->password, sizeof(ctx->password));
	free(ctx);
}

static void add_header(struct az_ctx *ctx, const char *name, const char *value)
{
	evhttp_add_header(evhttp_request_get_output_headers(ctx->req), name, value);
}

void az_fail(struct az_ctx *ctx, int code, const char *msg)
{
	if (ctx->api->stopping && code == 500) {
		code = 503;
		msg = "the API is shutting down; retry";
	}
	http_reply_error(ctx->req, code, "%s", msg);
	ctx_free(ctx);
}

void az_unauthorized(struct az_ctx *ctx, const char *why)
{
	char www[AUTHZ_ROW_TEXT];
	if (why)
		snprintf(www, sizeof(www), "Bearer error=\"invalid_token\", error_description=\"%.100s\"",
		         why);
	add_header(ctx, "WWW-Authenticate", why ? www : "Bearer");
	az_fail(ctx, 401, why ? why : "authentication required: send Authorization: Bearer <token>");
}

static void forbidden(struct az_ctx *ctx, const char *why)
{
	char www[AUTHZ_ROW_TEXT];
	snprintf(www, sizeof(www), "Bearer error=\"insufficient_scope\", error_description=\"%.100s\"", why);
	add_header(ctx, "WWW-Authenticate", www);
	az_fail(ctx, 403, why);
}

static void reply(struct az_ctx *ctx, int code, json_t *body)
{
	http_reply_json(ctx->req, code, body);
	ctx_free(ctx);
}

void az_no_content(struct az_ctx *ctx)
{
	http_send_reply(ctx->req, 204, evhttp_request_get_output_buffer(ctx->req));
	ctx_free(ctx);
}

/* ---- the database: acquire, one statement, release; done gets PGRES_TUPLES_OK only ---- */

/* Each prepared once per pooled connection, on its first use there (pool_query_prepared). */
static const struct pool_stmt SQL_LOGIN = {"authz_login",
                                           "SELECT id, role, salt, hash, iterations FROM " SCHEMA
                                           ".users WHERE name = $1 AND deleted_at IS NULL",
                                           1};
static const struct pool_stmt SQL_USERS = {
        "authz_users", "SELECT id, name, role FROM " SCHEMA ".users WHERE deleted_at IS NULL ORDER BY id", 0};
static const struct pool_stmt SQL_DELETE_USER = {
        "authz_delete_user",
        "UPDATE " SCHEMA ".users SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL RETURNING id",
        1};
/* the naive route trusts the id; the fixed one asks for the caller's order with that id */
static const struct pool_stmt SQL_ORDER_NAIVE = {
        "authz_order_naive", "SELECT id, owner_id, item, amount_cents FROM " SCHEMA ".orders WHERE id = $1",
        1};
static const struct pool_stmt SQL_ORDER = {
        "authz_order",
        "SELECT id, owner_id, item, amount_cents FROM " SCHEMA ".orders WHERE id = $1 AND owner_id = $2", 2};
static const struct pool_stmt SQL_ORDER_NEW = {
        "authz_order_new",
        "INSERT INTO " SCHEMA ".orders (owner_id, item, amount_cents) VALUES ($1, $2, $3) RETURNING id", 3};

static void query_cb(struct pool_conn *c, PGresult *res, const char *err, void *arg)
{
	(void)c;
	struct az_ctx *ctx = arg;
	pool_release(ctx->conn); /* res lives until this callback returns */
	ctx->conn = NULL;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		char msg[256];
		pg_message_line(msg, sizeof(msg), res ? PQresultErrorMessage(res) : err);
		az_fail(ctx, 500, msg);
		return;
	}
	ctx->done(ctx, res);
}

static void acquired_cb(struct pool_conn *conn, const char *err, void *arg)
{
	struct az_ctx *ctx = arg;
	if (!conn) {
		az_fail(ctx, 503, err);
		return;
	}
	ctx->conn = conn;
	const char *p[] = {ctx->p[0], ctx->p[1], ctx->p[2]};
	if (pool_query_prepared(conn, ctx->stmt, p, query_cb, ctx) < 0)
		az_fail(ctx, 500, "could not send the query");
}

static void db(struct az_ctx *ctx, const struct pool_stmt *stmt, void (*done)(struct az_ctx *, PGresult *))
{
	ctx->stmt = stmt;
	ctx->done = done;
	pool_acquire(ctx->api->pool, "authz_handler", acquired_cb, ctx);
}

/* ---- login ---- */

static void login_cb(struct az_ctx *ctx, PGresult *res)
{
	struct authz_api *api = ctx->api;
	bool found = PQntuples(res) == 1;
	struct authz_hash h = api->dummy;
	if (found) {
		snprintf(h.salt, sizeof(h.salt), "%s", PQgetvalue(res, 0, 2));
		snprintf(h.hash, sizeof(h.hash), "%s", PQgetvalue(res, 0, 3));
		h.iterations = atoi(PQgetvalue(res, 0, 4));
	}
	/* an unknown name costs the same hash as a known one: the answer and its time tell nothing */
	bool ok = az_password_check(ctx->password, &h) && found;
	if (!ok) {
		add_header(ctx, "WWW-Authenticate", "Bearer");
		az_fail(ctx, 401, "wrong name or password");
		return;
	}
	struct authz_claims c = {.sub = atoll(PQgetvalue(res, 0, 0)), .iat = az_now()};
	snprintf(c.role, sizeof(c.role), "%s", PQgetvalue(res, 0, 1));
	snprintf(c.aud, sizeof(c.aud), "%s", AUTHZ_AUDIENCE);
	c.exp = c.iat + api->cfg.token_ttl_s;
	char err[256];
	char *token = az_new_jti(c.jti, err, sizeof(err)) < 0
	                      ? NULL
	                      : az_sign(JWT_ALG_RS256, api->keys.private_pem, api->keys.private_len, &c, err,
	                                sizeof(err));
	if (!token) {
		az_fail(ctx, 500, err);
		return;
	}
	/* RFC 6749 section 5.1: a response carrying a token is not stored by any cache */
	add_header(ctx, "Cache-Control", "no-store");
	reply(ctx, 200,
	      json_pack("{s:s,s:s,s:i}", "access_token", token, "token_type", "Bearer", "expires_in",
	                api->cfg.token_ttl_s));
	free(token);
}

int authz_parse_login(struct evhttp_request *req, struct authz_login_body *out, char *err, size_t errlen)
{
	json_t *body = http_read_json(req, AUTHZ_MAX_BODY, err, errlen);
	if (!body)
		return 400;
	const char *name = json_string_value(json_object_get(body, "name"));
	const char *pw = json_string_value(json_object_get(body, "password"));
	if (!name || !pw || !*name || strlen(name) > AUTHZ_MAX_NAME || strlen(pw) > AUTHZ_MAX_PASSWORD) {
		json_decref(body);
		snprintf(err, errlen,
		         "a login is {\"name\": \"...\", \"password\": \"...\"} (name up to 64 bytes, "
		         "password 255)");
		return 400;
	}
	snprintf(out->name, sizeof(out->name), "%s", name);
	snprintf(out->password, sizeof(out->password), "%s", pw);
	json_decref(body);
	return 0;
}

static void login(struct az_ctx *ctx)
{
	struct authz_login_body l;
	char err[256];
	if (authz_parse_login(ctx->req, &l, err, sizeof(err)) != 0) {
		az_fail(ctx, 400, err);
		return;
	}
	snprintf(ctx->p[0], sizeof(ctx->p[0]), "%s", l.name);
	snprintf(ctx->password, sizeof(ctx->password), "%s", l.password);
	OPENSSL_cleanse(&l, sizeof(l));
	db(ctx, &SQL_LOGIN, login_cb);
}

/* ---- the routes behind a token ---- */

static void users_cb(struct az_ctx *ctx, PGresult *res)
{
	json_t *users = json_array();
	for (int i = 0; i < PQntuples(res); i++)
		json_array_append_new(users, json_pack("{s:I,s:s,s:s}", "id",
		                                       (json_int_t)atoll(PQgetvalue(res, i, 0)), "name",
		                                       PQgetvalue(res, i, 1), "role", PQgetvalue(res, i, 2)));
	reply(ctx, 200, json_pack("{s:o}", "users", users));
}

static void order_cb(struct az_ctx *ctx, PGresult *res)
{
	if (PQntuples(res) != 1) {
		char msg[64];
		snprintf(msg, sizeof(msg), "no order %lld", ctx->id);
		az_fail(ctx, 404, msg); /* the same answer for another user's order and a missing one */
		return;
	}
	reply(ctx, 200,
	      json_pack("{s:I,s:I,s:s,s:I}", "id", (json_int_t)atoll(PQgetvalue(res, 0, 0)), "owner",
	                (json_int_t)atoll(PQgetvalue(res, 0, 1)), "item", PQgetvalue(res, 0, 2),
	                "amount_cents", (json_int_t)atoll(PQgetvalue(res, 0, 3))));
}

static void created_cb(struct az_ctx *ctx, PGresult *res)
{
	reply(ctx, 201,
	      json_pack("{s:I,s:I}", "id", (json_int_t)atoll(PQgetvalue(res, 0, 0)), "owner",
	                (json_int_t)ctx->claims.sub));
}

static void deleted_cb(struct az_ctx *ctx, PGresult *res)
{
	if (PQntuples(res) != 1)
		az_fail(ctx, 404, "no such user");
	else
		az_no_content(ctx);
}

/* After the deny-list holds the user's tokens: the row. */
static void delete_user(struct az_ctx *ctx)
{
	db(ctx, &SQL_DELETE_USER, deleted_cb);
}

/*
 * DELETE /v1/users/{id}: the deny-list first, then the row. In this order a failure fails closed:
 * Redis down is a 503 with nothing changed; the database failing after the SET leaves a live user
 * whose tokens are refused until the admin's retry, never a deleted one whose tokens still work.
 * A deny key for an id with no user (404) only refuses tokens nobody holds.
 */
static void delete_user_start(struct az_ctx *ctx)
{
	/* every token of theirs: none outlives token_ttl_s + skew_s from now */
	char key[96];
	snprintf(key, sizeof(key), DENY_SUB "%lld", ctx->id);
	az_redis_deny(ctx, key, (long long)ctx->api->cfg.token_ttl_s + ctx->api->cfg.skew_s, delete_user);
}

int authz_parse_order(struct evhttp_request *req, struct authz_order_body *out, char *err, size_t errlen)
{
	json_t *body = http_read_json(req, AUTHZ_MAX_BODY, err, errlen);
	if (!body)
		return 400;
	const char *item = json_string_value(json_object_get(body, "item"));
	json_t *amount = json_object_get(body, "amount_cents");
	if (!item || !*item || strlen(item) > AUTHZ_MAX_ITEM || !json_is_integer(amount) ||
	    json_integer_value(amount) < 1 || json_integer_value(amount) > AUTHZ_MAX_AMOUNT) {
		json_decref(body);
		snprintf(err, errlen,
		         "an order is {\"item\": \"1..100 bytes\", \"amount_cents\": 1..1000000000}");
		return 400;
	}
	snprintf(out->item, sizeof(out->item), "%s", item);
	out->amount_cents = (long long)json_integer_value(amount);
	json_decref(body);
	return 0;
}

static void new_order(struct az_ctx *ctx)
{
	struct authz_order_body o;
	char err[256];
	if (authz_parse_order(ctx->req, &o, err, sizeof(err)) != 0) {
		az_fail(ctx, 400, err);
		return;
	}
	snprintf(ctx->p[0], sizeof(ctx->p[0]), "%lld", ctx->claims.sub);
	snprintf(ctx->p[1], sizeof(ctx->p[1]), "%s", o.item);
	snprintf(ctx->p[2], sizeof(ctx->p[2]), "%lld", o.amount_cents);
	db(ctx, &SQL_ORDER_NEW, created_cb);
}

void az_dispatch(struct az_ctx *ctx)
{
	const struct authz_claims *c = &ctx->claims;
	bool admin = strcmp(c->role, "admin") == 0;
	snprintf(ctx->p[0], sizeof(ctx->p[0]), "%lld", ctx->id);
	snprintf(ctx->p[1], sizeof(ctx->p[1]), "%lld", c->sub);
	switch (ctx->rt->kind) {
	case R_ME:
		reply(ctx, 200,
		      json_pack("{s:I,s:s,s:s,s:I,s:s}", "sub", (json_int_t)c->sub, "role", c->role, "jti",
		                c->jti, "exp", (json_int_t)c->exp, "verifier",
		                ctx->rt->naive ? "naive" : "fixed"));
		return;
	case R_ADMIN_USERS:
		if (!admin)
			forbidden(ctx, "admin role required");
		else
			db(ctx, &SQL_USERS, users_cb);
		return;
	case R_USER:
		if (!admin)
			forbidden(ctx, "admin role required");
		else
			delete_user_start(ctx);
		return;
	case R_ORDER:
		db(ctx, ctx->rt->naive ? &SQL_ORDER_NAIVE : &SQL_ORDER, order_cb);
		return;
	case R_ORDERS_NEW:
		new_order(ctx);
		return;
	case R_LOGOUT: {
		/* until the verifier would refuse it anyway: exp plus the skew it allows */
		char key[96];
		snprintf(key, sizeof(key), DENY_JTI "%s", c->jti);
		az_redis_deny(ctx, key, c->exp + ctx->api->cfg.skew_s - az_now(), NULL);
		return;
	}
	default:
		az_fail(ctx, 500, "no such route");
	}
}

/* ---- parsing: the method, the id, the token ---- */

/* b64token of RFC 6750 section 2.1: ALPHA DIGIT - . _ ~ + / then = padding */
static bool b64token(const char *t)
{
	size_t n = strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/");
	return n > 0 && n < MAX_TOKEN && strspn(t + n, "=") == strlen(t + n);
}

int authz_parse_bearer(const char *auth, const char **token)
{
	*token = NULL;
	/* no credentials, or not a bearer's (Basic...): RFC 6750 3.1, the challenge with no error */
	if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
		return 0;
	const char *t = auth + 7;
	while (*t == ' ')
		t++;
	if (!b64token(t))
		return -1;
	*token = t;
	return 1;
}

/* Verifies the bearer token; on success goes on (fixed: past the deny-list), else answers. */
static void authenticate(struct az_ctx *ctx)
{
	const char *auth, *token;
	char err[256];
	int found = http_header_one(ctx->req, "Authorization", &auth, err, sizeof(err));
	if (found < 0) {
		add_header(ctx, "WWW-Authenticate", "Bearer error=\"invalid_request\"");
		az_fail(ctx, 400, err);
		return;
	}
	int bearer = authz_parse_bearer(found ? auth : NULL, &token);
	if (bearer == 0) {
		az_unauthorized(ctx, NULL);
		return;
	}
	int rc = bearer < 0       ? (snprintf(err, sizeof(err), "malformed token"), -1)
	         : ctx->rt->naive ? az_verify_naive(&ctx->api->keys, token, &ctx->claims, err, sizeof(err))
	                          : az_verify_fixed(&ctx->api->keys, token, az_now(), ctx->api->cfg.skew_s,
	                                            &ctx->claims, err, sizeof(err));
	if (rc < 0)
		az_unauthorized(ctx, err);
	else if (ctx->rt->naive)
		az_dispatch(ctx);
	else
		az_redis_check(ctx);
}

static const struct {
	enum evhttp_cmd_type method;
	const char *allow;
} METHODS[R_KINDS] = {
        [R_LOGIN] = {EVHTTP_REQ_POST, "POST"},  [R_KEY] = {EVHTTP_REQ_GET, "GET"},
        [R_ME] = {EVHTTP_REQ_GET, "GET"},       [R_ADMIN_USERS] = {EVHTTP_REQ_GET, "GET"},
        [R_LOGOUT] = {EVHTTP_REQ_POST, "POST"}, [R_ORDERS_NEW] = {EVHTTP_REQ_POST, "POST"},
        [R_ORDER] = {EVHTTP_REQ_GET, "GET"},    [R_USER] = {EVHTTP_REQ_DELETE, "DELETE"},
};

int authz_parse_id(const char *path, const char *prefix, long long *id, char *err, size_t errlen)
{
	const char *p = strstr(path, prefix);
	const char *s = p ? p + strlen(prefix) : "";
	size_t n = strlen(s);
	if (n == 0 || n > AUTHZ_MAX_ID_DIGITS || (s[0] == '0') || strspn(s, "0123456789") != n) {
		snprintf(err, errlen, "no such resource: the id is a whole number");
		return 404;
	}
	*id = strtoll(s, NULL, 10);
	return 0;
}

static void route_cb(struct evhttp_request *req, void *arg)
{
	const struct az_route *rt = arg;
	struct authz_api *api = rt->api;
	if (api->stopping) {
		http_reply_error(req, 503, "the API is shutting down; retry");
		return;
	}
	struct az_ctx *ctx = ctx_new(api, req, rt);
	if (!ctx) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	if (evhttp_request_get_command(req) != METHODS[rt->kind].method) {
		add_header(ctx, "Allow", METHODS[rt->kind].allow);
		az_fail(ctx, 405, "method not allowed");
		return;
	}
	char err[128];
	if ((rt->kind == R_ORDER || rt->kind == R_USER) &&
	    authz_parse_id(http_request_path(req),
	                   rt->kind == R_ORDER ? AUTHZ_ORDERS_PREFIX : AUTHZ_USERS_PREFIX, &ctx->id, err,
	                   sizeof(err)) != 0) {
		az_fail(ctx, 404, err);
		return;
	}
	if (rt->kind == R_KEY) {
		add_header(ctx, "Content-Type", "application/x-pem-file");
		struct evbuffer *out = evhttp_request_get_output_buffer(req);
		evbuffer_add(out, api->keys.public_pem, (size_t)api->keys.public_len);
		http_send_reply(req, 200, out);
		ctx_free(ctx);
	} else if (rt->kind == R_LOGIN) {
		login(ctx);
	} else {
		authenticate(ctx);
	}
}

/* ---- starting and stopping ---- */

static void route(struct authz_api *api, int i, enum az_route_kind kind, bool naive, const char *path,
                  bool prefix)
{
	api->routes[i] = (struct az_route){api, kind, naive};
	char full[64];
	snprintf(full, sizeof(full), "%s%s", naive ? VULN : "", path);
	if (prefix)
		http_server_route_prefix(api->app.server, full, route_cb, &api->routes[i]);
	else
		http_server_route(api->app.server, full, route_cb, &api->routes[i]);
}

static void routes(struct authz_api *api)
{
	route(api, R_LOGIN, R_LOGIN, false, "/v1/login", false);
	route(api, R_KEY, R_KEY, false, "/v1/public-key", false);
	route(api, R_ME, R_ME, false, "/v1/me", false);
	route(api, R_ADMIN_USERS, R_ADMIN_USERS, false, "/v1/admin/users", false);
	route(api, R_LOGOUT, R_LOGOUT, false, "/v1/logout", false);
	route(api, R_ORDERS_NEW, R_ORDERS_NEW, false, "/v1/orders", false);
	route(api, R_ORDER, R_ORDER, false, AUTHZ_ORDERS_PREFIX, true);
	route(api, R_USER, R_USER, false, AUTHZ_USERS_PREFIX, true);
	if (!api->cfg.vulnerable)
		return;
	route(api, R_KINDS + R_ME, R_ME, true, "/v1/me", false);
	route(api, R_KINDS + R_ADMIN_USERS, R_ADMIN_USERS, true, "/v1/admin/users", false);
	route(api, R_KINDS + R_ORDER, R_ORDER, true, AUTHZ_ORDERS_PREFIX, true);
}

/* http_app_stop's release, the loop stopped: the pool and Redis (their callbacks answer their
 * requests 503), then whatever is still live. */
static void api_release(void *arg)
{
	struct authz_api *api = arg;
	api->stopping = true;
	pool_free(api->pool);
	api->pool = NULL;
	az_redis_free(api);
	while (api->live) {
		api->live->conn = NULL; /* closed with the pool */
		az_fail(api->live, 503, "the API is shutting down; retry");
	}
}

static int copy_keys(struct authz_api *api, const struct authz_keys *k)
{
	api->keys.private_pem = strdup(k->private_pem);
	api->keys.public_pem = strdup(k->public_pem);
	api->keys.attacker_pem = strdup(k->attacker_pem);
	api->keys.private_len = k->private_len;
	api->keys.public_len = k->public_len;
	api->keys.attacker_len = k->attacker_len;
	return api->keys.private_pem && api->keys.public_pem && api->keys.attacker_pem ? 0 : -1;
}

struct authz_api *authz_api_start(const struct authz_config *cfg, int port, char *err, size_t errlen)
{
	struct authz_api *api = calloc(1, sizeof(*api));
	if (!api || copy_keys(api, cfg->keys) < 0) {
		snprintf(err, errlen, "out of memory");
		authz_api_stop(api);
		return NULL;
	}
	api->cfg = *cfg;
	api->cfg.keys = &api->keys;
	if (az_password_hash("no user has this password", cfg->pbkdf2_iterations, &api->dummy, err, errlen) <
	            0 ||
	    http_app_open(&api->app, port, err, errlen) < 0)
		goto err;
	struct pool_config pc = {
	        .conninfo = cfg->pg_url,
	        .min_idle = 1,
	        .max_size = cfg->pool_size,
	        .acquire_timeout_ms = 2000,
	};
	if (!(api->pool = pool_new(api->app.base, &pc, err, errlen)))
		goto err;
	routes(api);
	if (pool_wait_ready(api->pool, POOL_READY_MS, err, errlen) < 0 ||
	    az_redis_start(api, err, errlen) < 0 || http_app_run(&api->app, err, errlen) < 0)
		goto err;
	return api;
err:
	authz_api_stop(api);
	return NULL;
}

int authz_api_port(const struct authz_api *api)
{
	return http_server_port(api->app.server);
}

void authz_api_stop(struct authz_api *api)
{
	if (!api)
		return;
	http_app_stop(&api->app, api_release, api);
	authz_keys_free(&api->keys);
	free(api);
}
