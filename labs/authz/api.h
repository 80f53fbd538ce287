/*
 * api.h — what api.c (the routes) and api_redis.c (the deny-list) share: the API and one request's
 * context. Private to lab-authz.
 */
#ifndef LAB_AUTHZ_API_H
#define LAB_AUTHZ_API_H

#include <hiredis/async.h>
#include <libpq-fe.h>

#include "http.h"
#include "internal.h"
#include "pool.h"
#include "redis_async.h"

enum az_route_kind { R_LOGIN, R_KEY, R_ME, R_ADMIN_USERS, R_LOGOUT, R_ORDERS_NEW, R_ORDER, R_USER, R_KINDS };

struct authz_api;

/* What a route callback is given: which route, on which side. */
struct az_route {
	struct authz_api *api;
	enum az_route_kind kind;
	bool naive; /* under /vuln: the naive verifier, no deny-list, no owner check */
};

struct az_ctx;

struct authz_api {
	struct authz_config cfg;
	struct authz_keys keys; /* a copy of the PEMs the API signs and verifies with */
	struct http_app app;
	struct pool *pool;
	struct redis_async redis; /* the deny-list; its ctx NULL when lost (503 then) */
	bool stopping;
	struct az_ctx *live;
	struct authz_hash dummy; /* checked for an unknown user, so that it costs what a known one does */
	struct az_route routes[2 * R_KINDS];
};

/* One request from parse to reply. */
struct az_ctx {
	struct authz_api *api;
	struct evhttp_request *req;
	struct az_ctx *prev, *next;
	struct pool_conn *conn;
	const struct az_route *rt;
	struct authz_claims claims;
	long long id; /* the path's id (R_ORDER, R_USER) */
	char p[3][256];
	const struct pool_stmt *stmt; /* the statement db() runs, prepared once per connection */
	void (*done)(struct az_ctx *ctx, PGresult *res);
	void (*then)(struct az_ctx *ctx); /* after a deny-list SET (az_redis_deny) */
	char password[256];               /* login only, cleansed when the context is freed */
};

/* api.c */
void az_fail(struct az_ctx *ctx, int code, const char *msg);
/* 401 with WWW-Authenticate: Bearer, and error="invalid_token" with why when why is not NULL */
void az_unauthorized(struct az_ctx *ctx, const char *why);
/* the request authenticated (and not revoked): on to its route */
void az_dispatch(struct az_ctx *ctx);
/* 204, no body */
void az_no_content(struct az_ctx *ctx);

/* api_redis.c */
int az_redis_start(struct authz_api *api, char *err, size_t errlen);
void az_redis_free(struct authz_api *api);
/* fixed side: 401 when the token's jti or sub is on the deny-list, else az_dispatch; 503 when Redis
 * cannot say (fail closed) */
void az_redis_check(struct az_ctx *ctx);
/* SET key value EX ttl_s, then then(ctx) (NULL: 204); 503 when Redis fails, and then never runs */
void az_redis_deny(struct az_ctx *ctx, const char *key, long long ttl_s, void (*then)(struct az_ctx *ctx));

#endif
