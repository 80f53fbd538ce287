/*
 * test_authz — lab-authz against the real PostgreSQL and Redis: the two verifiers on libjwt as it
 * really behaves (alg none, key confusion, the clock-skew edges), the HTTP contract sent raw over a
 * socket (every 401 and its WWW-Authenticate, 403 with insufficient_scope, 404 for another user's
 * order, 400 and 405; nothing written by a refused request; the deny-list's key and TTL), the naive
 * routes absent unless asked for, the run's verdict and the counts behind it (and the --predict
 * question every phase asks, answered by those counts), --serve --vulnerable's warning, and Ctrl-C.
 *
 * needs: postgres redis
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "authz.h"
#include "internal.h"
#include "lab.h"
#include "lab_run.h"
#include "pg.h"
#include "redis.h"
#include "upstream.h"

static struct authz_keys keys;
static struct authz_config cfg;
static struct authz_api *api;
static int port;

static int group_setup(void **state)
{
	(void)state;
	char err[512];
	authz_config_default(&cfg, true);
	/* fewer PBKDF2 rounds than --quick's: the hashes are what the ASan build spends its time on,
	 * and the contract tested does not depend on the count (the run's row reports it) */
	cfg.pbkdf2_iterations = 2000;
	if (authz_keys_new(&keys, err, sizeof(err)) < 0)
		return -1;
	cfg.keys = &keys;
	if (authz_setup(&cfg, err, sizeof(err)) < 0 || !(api = authz_api_start(&cfg, 0, err, sizeof(err)))) {
		char url[256];
		pg_url_redact(cfg.pg_url, url, sizeof(url));
		fprintf(stderr, "test_authz: PostgreSQL at %s or Redis: %s\n", url, err);
		return -1;
	}
	port = authz_api_port(api);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	char err[512];
	authz_api_stop(api);
	authz_teardown(&cfg, err, sizeof(err));
	authz_keys_free(&keys);
	return 0;
}

/* One raw request on a new connection (auth: the whole Authorization value, NULL for none). */
static int raw(int p, const char *method, const char *path, const char *auth, const char *extra,
               const char *body, char *out, size_t outlen)
{
	char req[8192], a[4096] = "";
	if (auth)
		snprintf(a, sizeof(a), "Authorization: %s\r\n", auth);
	int n = snprintf(req, sizeof(req),
	                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%sContent-Type: "
	                 "application/json\r\nContent-Length: %zu\r\n\r\n%s",
	                 method, path, a, extra ? extra : "", body ? strlen(body) : 0, body ? body : "");
	return http_exchange(p, req, (size_t)n, out, outlen);
}

static void header_of(const char *resp, const char *name, char *out, size_t outlen)
{
	char key[64];
	snprintf(key, sizeof(key), "\r\n%s: ", name);
	const char *h = strcasestr(resp, key);
	size_t n = h ? strcspn(h + strlen(key), "\r\n") : 0;
	snprintf(out, outlen, "%.*s", (int)n, h ? h + strlen(key) : "");
}

static const char *body_of(const char *resp)
{
	const char *b = strstr(resp, "\r\n\r\n");
	return b ? b + 4 : "";
}

/* "Bearer <token>" of name's login */
static char *bearer(const char *name)
{
	char resp[8192], body[256];
	snprintf(body, sizeof(body), "{\"name\":\"%s\",\"password\":\"%s\"}", name, AUTHZ_PASSWORD);
	assert_int_equal(raw(port, "POST", "/v1/login", NULL, NULL, body, resp, sizeof(resp)), 200);
	json_t *doc = json_loads(body_of(resp), 0, NULL);
	const char *t = json_string_value(json_object_get(doc, "access_token"));
	assert_non_null(t);
	char *out = malloc(strlen(t) + 8);
	sprintf(out, "Bearer %s", t);
	json_decref(doc);
	return out;
}

static char *forged(jwt_alg_t alg, const char *key, int keylen, long long sub, const char *role,
                    const char *aud, long long iat)
{
	struct authz_claims c = {.sub = sub, .iat = iat, .exp = iat + cfg.token_ttl_s};
	snprintf(c.role, sizeof(c.role), "%s", role);
	snprintf(c.aud, sizeof(c.aud), "%s", aud);
	char err[256];
	assert_int_equal(az_new_jti(c.jti, err, sizeof(err)), 0);
	char *t = az_sign(alg, key, keylen, &c, err, sizeof(err));
	if (!t)
		fail_msg("%s", err);
	return t;
}

static long long pg_count(const char *sql)
{
	char err[256];
	PGconn *db = pg_connect(cfg.pg_url, err, sizeof(err));
	assert_non_null(db);
	int64_t v = -1;
	if (pg_query_int64(db, sql, 0, NULL, &v, err, sizeof(err)) < 0)
		fail_msg("%s: %s", sql, err);
	PQfinish(db);
	return v;
}

/* ---- the verifiers, on libjwt 1.10 as it is ---- */

static void test_verifiers_on_libjwt_as_it_really_behaves(void **state)
{
	(void)state;
	struct authz_claims c;
	char why[128];
	long long now = az_now();
	char *good =
	        forged(JWT_ALG_RS256, keys.private_pem, keys.private_len, 1, "user", AUTHZ_AUDIENCE, now);
	assert_int_equal(az_verify_naive(&keys, good, &c, why, sizeof(why)), 0);
	assert_int_equal(az_verify_fixed(&keys, good, now, cfg.skew_s, &c, why, sizeof(why)), 0);
	assert_int_equal(c.sub, 1);
	assert_string_equal(c.alg, "RS256");

	/* alg none: libjwt refuses it with a key and takes it without one; the naive verifier gives none */
	char *none = forged(JWT_ALG_NONE, NULL, 0, 4, "admin", AUTHZ_AUDIENCE, now);
	jwt_t *j = NULL;
	assert_int_not_equal(jwt_decode(&j, none, (const unsigned char *)keys.public_pem, keys.public_len),
	                     0);
	assert_int_equal(jwt_decode(&j, none, NULL, 0), 0);
	jwt_free(j);
	assert_int_equal(az_verify_naive(&keys, none, &c, why, sizeof(why)), 0);
	assert_string_equal(c.role, "admin");
	assert_int_equal(az_verify_fixed(&keys, none, now, cfg.skew_s, &c, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "alg none not accepted"));

	/* key confusion: libjwt itself verifies HS256 keyed with the public key PEM it was given */
	char *hs = forged(JWT_ALG_HS256, keys.public_pem, keys.public_len, 4, "admin", AUTHZ_AUDIENCE, now);
	j = NULL;
	assert_int_equal(jwt_decode(&j, hs, (const unsigned char *)keys.public_pem, keys.public_len), 0);
	assert_int_equal(jwt_get_alg(j), JWT_ALG_HS256);
	jwt_free(j);
	assert_int_equal(az_verify_naive(&keys, hs, &c, why, sizeof(why)), 0);
	assert_int_equal(az_verify_fixed(&keys, hs, now, cfg.skew_s, &c, why, sizeof(why)), -1);

	/* the skew: exp just inside it passes, past it fails; iat from the future likewise */
	long long t0 = now - cfg.token_ttl_s; /* exp = now */
	char *edge = forged(JWT_ALG_RS256, keys.private_pem, keys.private_len, 1, "user", AUTHZ_AUDIENCE, t0);
	assert_int_equal(az_verify_fixed(&keys, edge, now + cfg.skew_s, cfg.skew_s, &c, why, sizeof(why)), 0);
	assert_int_equal(az_verify_fixed(&keys, edge, now + cfg.skew_s + 1, cfg.skew_s, &c, why, sizeof(why)),
	                 -1);
	assert_non_null(strstr(why, "expired"));
	assert_int_equal(az_verify_naive(&keys, edge, &c, why, sizeof(why)), 0); /* no exp check at all */
	assert_int_equal(az_verify_fixed(&keys, good, now - cfg.skew_s, cfg.skew_s, &c, why, sizeof(why)), 0);
	assert_int_equal(az_verify_fixed(&keys, good, now - cfg.skew_s - 1, cfg.skew_s, &c, why, sizeof(why)),
	                 -1);
	assert_non_null(strstr(why, "future"));

	/* another audience, another key */
	char *aud = forged(JWT_ALG_RS256, keys.private_pem, keys.private_len, 1, "user", "other-api", now);
	assert_int_equal(az_verify_naive(&keys, aud, &c, why, sizeof(why)), 0);
	assert_int_equal(az_verify_fixed(&keys, aud, now, cfg.skew_s, &c, why, sizeof(why)), -1);
	char *other =
	        forged(JWT_ALG_RS256, keys.attacker_pem, keys.attacker_len, 1, "user", AUTHZ_AUDIENCE, now);
	assert_int_equal(az_verify_naive(&keys, other, &c, why, sizeof(why)), -1);
	assert_int_equal(az_verify_fixed(&keys, other, now, cfg.skew_s, &c, why, sizeof(why)), -1);
	free(good), free(none), free(hs), free(edge), free(aud), free(other);
}

/* An RS256 token of the API's key with sub as given and, when nbf is not 0, that nbf. */
static char *signed_raw(const char *sub, long nbf)
{
	jwt_t *j = NULL;
	long now = (long)az_now();
	assert_int_equal(jwt_new(&j), 0);
	assert_int_equal(jwt_add_grant(j, "sub", sub), 0);
	assert_int_equal(jwt_add_grant(j, "role", "user"), 0);
	assert_int_equal(jwt_add_grant(j, "aud", AUTHZ_AUDIENCE), 0);
	assert_int_equal(jwt_add_grant(j, "jti", "0123456789abcdef"), 0);
	assert_int_equal(jwt_add_grant_int(j, "iat", now), 0);
	assert_int_equal(jwt_add_grant_int(j, "exp", now + cfg.token_ttl_s), 0);
	if (nbf)
		assert_int_equal(jwt_add_grant_int(j, "nbf", nbf), 0);
	assert_int_equal(
	        jwt_set_alg(j, JWT_ALG_RS256, (const unsigned char *)keys.private_pem, keys.private_len), 0);
	char *t = jwt_encode_str(j);
	jwt_free(j);
	assert_non_null(t);
	return t;
}

static void test_fixed_verifier_reads_sub_strictly_and_honours_nbf(void **state)
{
	(void)state;
	struct authz_claims c;
	char why[128];
	long long now = az_now();
	/* a signed token with a sub that is not a canonical positive id is refused, not parsed loosely */
	static const char *const subs[] = {"-1", "0", "007", "1e3", " 1", "1 ", "99999999999999999999", ""};
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		char *t = signed_raw(subs[i], 0);
		if (az_verify_fixed(&keys, t, now, cfg.skew_s, &c, why, sizeof(why)) != -1)
			fail_msg("sub \"%s\" accepted as %lld", subs[i], c.sub);
		free(t);
	}
	char *t = signed_raw("3", 0);
	assert_int_equal(az_verify_fixed(&keys, t, now, cfg.skew_s, &c, why, sizeof(why)), 0);
	assert_int_equal(c.sub, 3);
	free(t);
	/* nbf: within the skew it passes, past it the token is not valid yet */
	t = signed_raw("3", (long)(now + cfg.skew_s));
	assert_int_equal(az_verify_fixed(&keys, t, now, cfg.skew_s, &c, why, sizeof(why)), 0);
	free(t);
	t = signed_raw("3", (long)(now + cfg.skew_s + 1));
	assert_int_equal(az_verify_fixed(&keys, t, now, cfg.skew_s, &c, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "nbf"));
	free(t);
}

static void test_password_hashes_are_salted_and_checked(void **state)
{
	(void)state;
	struct authz_hash a, b;
	char err[128];
	assert_int_equal(az_password_hash("pw", 1000, &a, err, sizeof(err)), 0);
	assert_int_equal(az_password_hash("pw", 1000, &b, err, sizeof(err)), 0);
	assert_string_not_equal(a.salt, b.salt);
	assert_string_not_equal(a.hash, b.hash);
	assert_true(az_password_check("pw", &a));
	assert_false(az_password_check("pW", &a));
	a.hash[0] = 'z'; /* not hex: refused, not crashed */
	assert_false(az_password_check("pw", &a));
}

/* ---- the HTTP contract ---- */

static void test_authentication_failures_are_401_with_the_rfc_6750_challenge(void **state)
{
	(void)state;
	char resp[8192], www[256], cc[64];
	/* login: the token is not cached; a wrong password and an unknown user get the same answer */
	char *alice = bearer("alice");
	assert_int_equal(raw(port, "POST", "/v1/login", NULL, NULL, "{\"name\":\"alice\",\"password\":\"x\"}",
	                     resp, sizeof(resp)),
	                 401);
	header_of(resp, "WWW-Authenticate", www, sizeof(www));
	assert_string_equal(www, "Bearer");
	char wrong[512];
	snprintf(wrong, sizeof(wrong), "%s", body_of(resp));
	assert_int_equal(raw(port, "POST", "/v1/login", NULL, NULL,
	                     "{\"name\":\"mallory\",\"password\":\"x\"}", resp, sizeof(resp)),
	                 401);
	assert_string_equal(body_of(resp), wrong);
	assert_int_equal(raw(port, "POST", "/v1/login", NULL, NULL, "{\"name\":", resp, sizeof(resp)), 400);
	assert_int_equal(
	        raw(port, "POST", "/v1/login", NULL, NULL, "{\"name\":\"alice\"}", resp, sizeof(resp)), 400);
	char body[256];
	snprintf(body, sizeof(body), "{\"name\":\"alice\",\"password\":\"%s\"}", AUTHZ_PASSWORD);
	assert_int_equal(raw(port, "POST", "/v1/login", NULL, NULL, body, resp, sizeof(resp)), 200);
	header_of(resp, "Cache-Control", cc, sizeof(cc));
	assert_string_equal(cc, "no-store");
	assert_int_equal(raw(port, "GET", "/v1/login", NULL, NULL, NULL, resp, sizeof(resp)), 405);

	/* no credentials, or not a bearer's: the bare challenge (RFC 6750 3.1) */
	static const char *const bare[] = {NULL, "Basic YWxpY2U6cHc="};
	for (int i = 0; i < 2; i++) {
		assert_int_equal(raw(port, "GET", "/v1/me", bare[i], NULL, NULL, resp, sizeof(resp)), 401);
		header_of(resp, "WWW-Authenticate", www, sizeof(www));
		assert_string_equal(www, "Bearer");
	}
	/* a bad token of every kind: invalid_token */
	char *none = forged(JWT_ALG_NONE, NULL, 0, 4, "admin", AUTHZ_AUDIENCE, az_now());
	char *hs =
	        forged(JWT_ALG_HS256, keys.public_pem, keys.public_len, 4, "admin", AUTHZ_AUDIENCE, az_now());
	char *old = forged(JWT_ALG_RS256, keys.private_pem, keys.private_len, 4, "admin", AUTHZ_AUDIENCE,
	                   az_now() - cfg.token_ttl_s - 600);
	const char *bad[] = {"Bearer abc.def", "Bearer \"quoted\"", none, hs, old};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char auth[4096];
		snprintf(auth, sizeof(auth), "%s%s", i < 2 ? "" : "Bearer ", bad[i]);
		assert_int_equal(raw(port, "GET", "/v1/me", auth, NULL, NULL, resp, sizeof(resp)), 401);
		header_of(resp, "WWW-Authenticate", www, sizeof(www));
		if (strncmp(www, "Bearer error=\"invalid_token\"", 28) != 0)
			fail_msg("token %zu: WWW-Authenticate %s", i, www);
	}
	/* the scheme is case-insensitive (RFC 9110 11.1); a token past any of this API's is refused
	 * before it is decoded */
	char lower[4200];
	snprintf(lower, sizeof(lower), "bearer %s", alice + 7);
	assert_int_equal(raw(port, "GET", "/v1/me", lower, NULL, NULL, resp, sizeof(resp)), 200);
	size_t huge = 9000;
	char *big = malloc(huge + 256);
	assert_non_null(big);
	int n = snprintf(big, 256,
	                 "GET /v1/me HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
	                 "Authorization: Bearer ");
	memset(big + n, 'a', huge);
	memcpy(big + n + huge, "\r\n\r\n", 4);
	assert_int_equal(http_exchange(port, big, (size_t)n + huge + 4, resp, sizeof(resp)), 401);
	header_of(resp, "WWW-Authenticate", www, sizeof(www));
	assert_non_null(strstr(www, "malformed token"));
	free(big);
	/* two Authorization headers: which did the client mean? 400, invalid_request */
	char extra[4200];
	snprintf(extra, sizeof(extra), "Authorization: %s\r\n", alice);
	assert_int_equal(raw(port, "GET", "/v1/me", alice, extra, NULL, resp, sizeof(resp)), 400);
	header_of(resp, "WWW-Authenticate", www, sizeof(www));
	assert_string_equal(www, "Bearer error=\"invalid_request\"");
	assert_int_equal(raw(port, "GET", "/v1/me", alice, NULL, NULL, resp, sizeof(resp)), 200);
	free(alice), free(none), free(hs), free(old);
}

static void test_authorization_403_and_404_and_nothing_written_by_a_refusal(void **state)
{
	(void)state;
	char resp[8192], www[256], path[64];
	char *alice = bearer("alice"), *root = bearer("root");
	assert_int_equal(raw(port, "GET", "/v1/admin/users", alice, NULL, NULL, resp, sizeof(resp)), 403);
	header_of(resp, "WWW-Authenticate", www, sizeof(www));
	assert_true(strncmp(www, "Bearer error=\"insufficient_scope\"", 33) == 0);
	assert_int_equal(raw(port, "GET", "/v1/admin/users", root, NULL, NULL, resp, sizeof(resp)), 200);

	const char *deleted = "SELECT count(*) FROM lab_authz.users WHERE deleted_at IS NOT NULL";
	const char *orders = "SELECT count(*) FROM lab_authz.orders";
	long long d0 = pg_count(deleted), o0 = pg_count(orders);
	assert_int_equal(raw(port, "DELETE", "/v1/users/3", alice, NULL, NULL, resp, sizeof(resp)), 403);
	char *none = forged(JWT_ALG_NONE, NULL, 0, 1, "user", AUTHZ_AUDIENCE, az_now());
	char auth[4096];
	snprintf(auth, sizeof(auth), "Bearer %s", none);
	const char *order = "{\"item\":\"x\",\"amount_cents\":5}";
	assert_int_equal(raw(port, "POST", "/v1/orders", auth, NULL, order, resp, sizeof(resp)), 401);
	assert_int_equal(raw(port, "POST", "/v1/orders", NULL, NULL, order, resp, sizeof(resp)), 401);
	assert_int_equal(raw(port, "POST", "/v1/orders", alice, NULL, "{\"item\":\"x\"}", resp, sizeof(resp)),
	                 400);
	assert_int_equal(pg_count(deleted), d0);
	assert_int_equal(pg_count(orders), o0);
	/* and the accepted write does write, as alice's */
	assert_int_equal(raw(port, "POST", "/v1/orders", alice, NULL, order, resp, sizeof(resp)), 201);
	assert_int_equal(pg_count(orders), o0 + 1);
	assert_int_equal(pg_count("SELECT owner_id FROM lab_authz.orders ORDER BY id DESC LIMIT 1"),
	                 AUTHZ_ALICE);

	/* another user's order: 404 like a missing one, and the naive twin hands it over */
	long long bobs = pg_count("SELECT min(id) FROM lab_authz.orders WHERE owner_id = 2");
	snprintf(path, sizeof(path), "/v1/orders/%lld", bobs);
	assert_int_equal(raw(port, "GET", path, alice, NULL, NULL, resp, sizeof(resp)), 404);
	assert_int_equal(raw(port, "GET", "/v1/orders/999999", alice, NULL, NULL, resp, sizeof(resp)), 404);
	assert_int_equal(raw(port, "GET", "/v1/orders/abc", alice, NULL, NULL, resp, sizeof(resp)), 404);
	snprintf(path, sizeof(path), "/vuln/v1/orders/%lld", bobs);
	assert_int_equal(raw(port, "GET", path, alice, NULL, NULL, resp, sizeof(resp)), 200);
	assert_non_null(strstr(body_of(resp), "\"owner\":2"));
	free(alice), free(root), free(none);
}

static void test_logout_puts_the_jti_on_the_deny_list_for_the_token_s_life(void **state)
{
	(void)state;
	char resp[8192], www[256], err[256];
	char *t = bearer("carol");
	struct authz_claims c;
	assert_int_equal(az_verify_fixed(&keys, t + 7, az_now(), cfg.skew_s, &c, err, sizeof(err)), 0);
	/* the server computes exp + skew - now somewhere between these two clock reads (1 s grain) */
	long long before = az_now();
	assert_int_equal(raw(port, "POST", "/v1/logout", t, NULL, NULL, resp, sizeof(resp)), 204);
	assert_int_equal(raw(port, "GET", "/v1/me", t, NULL, NULL, resp, sizeof(resp)), 401);
	header_of(resp, "WWW-Authenticate", www, sizeof(www));
	assert_non_null(strstr(www, "token revoked"));
	assert_int_equal(raw(port, "GET", "/vuln/v1/me", t, NULL, NULL, resp, sizeof(resp)), 200);
	redisContext *rc = redis_connect_url(cfg.redis_url, 2000, err, sizeof(err));
	assert_non_null(rc);
	redisReply *r = redis_cmd(rc, err, sizeof(err), "TTL lab:authz:deny:jti:%s", c.jti);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	long long most = c.exp + cfg.skew_s - before, least = c.exp + cfg.skew_s - az_now() - 1;
	if (r->integer < least || r->integer > most)
		fail_msg("TTL %lld, not within the token's life left, %lld..%lld s", r->integer, least, most);
	freeReplyObject(r);
	redisFree(rc);
	free(t);
}

static void test_deny_list_fails_closed_when_redis_is_lost(void **state)
{
	(void)state;
	char err[256], resp[8192], www[256];
	struct authz_config c = cfg;
	c.vulnerable = false;
	struct authz_api *own = authz_api_start(&c, 0, err, sizeof(err));
	assert_non_null(own);
	int p = authz_api_port(own);
	char *alice = bearer("alice");
	assert_int_equal(raw(p, "GET", "/v1/me", alice, NULL, NULL, resp, sizeof(resp)), 200);
	/* Redis drops this API's connection (and only its: by its address) */
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	assert_int_equal(getsockname(own->redis.ctx->c.fd, (struct sockaddr *)&sa, &len), 0);
	redisContext *rc = redis_connect_url(cfg.redis_url, 2000, err, sizeof(err));
	assert_non_null(rc);
	redisReply *r = redis_cmd(rc, err, sizeof(err), "CLIENT KILL ADDR 127.0.0.1:%d", ntohs(sa.sin_port));
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->integer, 1); /* the filter form answers how many it closed */
	freeReplyObject(r);
	redisFree(rc);
	/* the deny-list cannot say the token is not revoked: 503, never a 200 */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(raw(p, "GET", "/v1/me", alice, NULL, NULL, resp, sizeof(resp)), 503);
		assert_non_null(strstr(body_of(resp), "deny-list"));
	}
	assert_int_equal(raw(p, "POST", "/v1/logout", alice, NULL, NULL, resp, sizeof(resp)), 503);
	/* and authentication still comes first: no token is 401, not 503 */
	assert_int_equal(raw(p, "GET", "/v1/me", NULL, NULL, NULL, resp, sizeof(resp)), 401);
	header_of(resp, "WWW-Authenticate", www, sizeof(www));
	assert_string_equal(www, "Bearer");
	authz_api_stop(own);
	free(alice);
}

static void test_vulnerable_routes_exist_only_when_asked_for(void **state)
{
	(void)state;
	char err[256], resp[8192];
	struct authz_config c = cfg;
	c.vulnerable = false;
	struct authz_api *safe = authz_api_start(&c, 0, err, sizeof(err));
	assert_non_null(safe);
	char *alice = bearer("alice");
	int p = authz_api_port(safe);
	assert_int_equal(raw(p, "GET", "/vuln/v1/me", alice, NULL, NULL, resp, sizeof(resp)), 404);
	assert_int_equal(raw(p, "GET", "/vuln/v1/orders/1", alice, NULL, NULL, resp, sizeof(resp)), 404);
	assert_int_equal(raw(p, "GET", "/v1/me", alice, NULL, NULL, resp, sizeof(resp)), 200);
	authz_api_stop(safe);
	free(alice);
}

/* ---- the run ---- */

static void test_run_demonstrates_the_claim_and_the_counts_agree(void **state)
{
	(void)state;
	struct authz_config c = cfg;
	struct authz_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	struct lab_answers answers = {0};
	c.hooks = lab_answers_hooks(&answers, &c, r);
	char err[512];
	if (authz_run(&c, r, err, sizeof(err)) < 0)
		fail_msg("run failed: %s", err);
	struct lab_verdict v;
	authz_judge(r, &v);
	print_message("%s\n", v.evidence);
	assert_true(v.demonstrated);
	for (int i = 0; i < AUTHZ_ATTACKS; i++) {
		const struct authz_attack_row *a = &r->attacks.rows[i];
		assert_int_equal(authz_accepted(a->naive), i == AUTHZ_ATK_VALID || authz_naive_falls_for(i));
		assert_int_equal(a->fixed, i == AUTHZ_ATK_VALID ? 200 : 401);
		if (i == AUTHZ_ATK_NO_TOKEN)
			assert_string_equal(a->fixed_www, "Bearer");
		else if (i != AUTHZ_ATK_VALID)
			assert_true(strncmp(a->fixed_www, "Bearer error=\"invalid_token\"", 28) == 0);
	}
	assert_string_equal(r->attacks.rows[AUTHZ_ATK_ALG_NONE].naive_as, "sub 4, admin");
	assert_int_equal(r->attacks.admin_users_leaked, AUTHZ_USERS);
	/* BOLA: every foreign order walked was read by the naive route, none by the fixed one, which
	 * read every one of alice's and answered 404 to the rest */
	const struct authz_bola *b = &r->access.bola;
	assert_int_equal(b->own_in_pg + b->foreign_in_pg, b->walked);
	assert_true(b->foreign_in_pg > 0);
	assert_int_equal(b->naive_foreign, b->foreign_in_pg);
	assert_int_equal(b->fixed_foreign, 0);
	assert_int_equal(b->fixed_ok, b->own_in_pg);
	assert_int_equal(b->fixed_404, b->foreign_in_pg);
	for (int i = 0; i < AUTHZ_REV_ROWS; i++) {
		assert_int_equal(r->revocation.rows[i].naive, 200);
		assert_int_equal(r->revocation.rows[i].fixed, 401);
	}
	/* what --predict asks before each phase, answered by this run: mallory's 401 like a wrong
	 * password's, 4 forged tokens past the naive verifier, every id walked read, and the deny-list
	 * key living what is left of the token's life (exp + skew, seconds after the login) */
	lab_assert_every_phase_asks(&answers, AUTHZ_PHASES);
	assert_true(lab_answer(&answers, "login") == 1);
	assert_true(lab_answer(&answers, "authentication") == 4);
	assert_true(lab_answer(&answers, "authorization") == b->walked);
	assert_true(lab_answer(&answers, "authorization") == c.orders);
	double ttl = lab_answer(&answers, "revocation");
	assert_true(ttl <= c.token_ttl_s + c.skew_s && ttl > c.token_ttl_s);
	assert_true(ttl == (double)r->revocation.rows[AUTHZ_REV_LOGOUT].key_ttl_s);
	free(r);
	/* the run tore down its own schema: put the group's back for what follows */
	assert_int_equal(authz_setup(&cfg, err, sizeof(err)), 0);
}

static void test_serve_vulnerable_warns_on_stderr(void **state)
{
	(void)state;
	char out[8192], errout[4096];
	double stop_ms = 0;
	/* --quick: its 20,000 PBKDF2 rounds, not the full 600,000 (five hashes at start: 18 s under ASan) */
	int rc = lab_interrupt("authz", "--serve --quick --vulnerable", "listening on", SIGINT, 15000,
	                       &stop_ms, out, sizeof(out), errout, sizeof(errout));
	assert_int_equal(rc, LAB_EXIT_OK);
	assert_non_null(strstr(errout, "WARNING: --vulnerable"));
	assert_non_null(strstr(out, "/vuln/v1/me"));
	/* its teardown dropped the schema: put the group's back */
	char err[512];
	assert_int_equal(authz_setup(&cfg, err, sizeof(err)), 0);
}

static void test_ctrl_c_drops_the_schema_and_the_keys(void **state)
{
	(void)state;
	char out[16384], errout[4096];
	double stop_ms = 0;
	/* the group's API holds nothing the lab needs; its schema is dropped by the lab's guard */
	authz_api_stop(api);
	api = NULL;
	int rc = lab_interrupt("authz", "--quick", "[2/", SIGINT, 15000, &stop_ms, out, sizeof(out), errout,
	                       sizeof(errout));
	print_message("exit %d, %.0f ms after SIGINT; stderr: %s\n", rc, stop_ms, errout);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_authz", "lab:authz:");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_verifiers_on_libjwt_as_it_really_behaves),
	        cmocka_unit_test(test_fixed_verifier_reads_sub_strictly_and_honours_nbf),
	        cmocka_unit_test(test_password_hashes_are_salted_and_checked),
	        cmocka_unit_test(test_authentication_failures_are_401_with_the_rfc_6750_challenge),
	        cmocka_unit_test(test_authorization_403_and_404_and_nothing_written_by_a_refusal),
	        cmocka_unit_test(test_logout_puts_the_jti_on_the_deny_list_for_the_token_s_life),
	        cmocka_unit_test(test_deny_list_fails_closed_when_redis_is_lost),
	        cmocka_unit_test(test_vulnerable_routes_exist_only_when_asked_for),
	        /* each of these drops the group's schema and keys: last, in this order */
	        cmocka_unit_test(test_run_demonstrates_the_claim_and_the_counts_agree),
	        cmocka_unit_test(test_serve_vulnerable_warns_on_stderr),
	        cmocka_unit_test(test_ctrl_c_drops_the_schema_and_the_keys),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
