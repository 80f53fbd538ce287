/*
 * internal.h — what the files of lab-authz share and nobody else uses:
 *
 *   token.c    keys, password hashes, signing (libjwt), the naive and the fixed verifier
 *   api.c      the routes, from the Authorization header to the reply;  api_redis.c  the deny-list
 *   client.c   the phases' requests, on common/http_client.h (one keep-alive connection)
 *   phases.c   the four phases;  authz.c  config, schema, run, judge
 */
#ifndef LAB_AUTHZ_INTERNAL_H
#define LAB_AUTHZ_INTERNAL_H

#include <jwt.h>
#include <stdbool.h>

#include "authz.h"

#define SCHEMA       "lab_authz"
#define REDIS_PREFIX "lab:authz:"
#define DENY_JTI     REDIS_PREFIX "deny:jti:"
#define DENY_SUB     REDIS_PREFIX "deny:sub:"
#define VULN         "/vuln"

/* What a token claims, read from its payload after a verifier let it through. */
struct authz_claims {
	long long sub;
	char role[16];
	char aud[64];
	char jti[48];
	long long iat, exp;
	bool has_nbf;
	long long nbf; /* LLONG_MAX when present but not an integer */
	char alg[16];  /* the header's */
};

/* A password hash as stored: hex salt and hex PBKDF2-HMAC-SHA256 output, with its rounds. */
struct authz_hash {
	char salt[33];
	char hash[65];
	int iterations;
};

/* token.c */
int az_password_hash(const char *password, int iterations, struct authz_hash *out, char *err, size_t errlen);
/* true when password matches (constant-time compare); a malformed stored hash is false */
bool az_password_check(const char *password, const struct authz_hash *h);

/* Signs c (sub, role, aud, iat, exp, jti) with alg and key via libjwt; NULL and err on failure.
 * alg JWT_ALG_NONE takes no key. The caller frees. */
char *az_sign(jwt_alg_t alg, const char *key, int keylen, const struct authz_claims *c, char *err,
              size_t errlen);
/* A fresh token id: 16 random bytes, hex. */
int az_new_jti(char out[48], char *err, size_t errlen);

/* The "alg" of the token's header, read without verifying anything (cut to len - 1); -1 when the
 * token has no readable header. Reading is not verifying. */
int az_header_alg(const char *token, char *alg, size_t len);
/* The naive verifier: the token's header names the algorithm and so the key ("none": none). */
int az_verify_naive(const struct authz_keys *k, const char *token, struct authz_claims *out, char *why,
                    size_t whylen);
/* The fixed one: RS256 and the API's public key only (never a key the token names: kid, jku, jwk
 * are not read); exp required, exp, iat and nbf (when present) within skew_s of now; aud. */
int az_verify_fixed(const struct authz_keys *k, const char *token, long long now, int skew_s,
                    struct authz_claims *out, char *why, size_t whylen);

/* api.c */
/* a JWT of this API is under 1 KiB; a header ten times that is not one */
#define MAX_TOKEN 8192
/*
 * The bearer token of an Authorization header's value (auth NULL: none came), as every route
 * behind a token reads it: 1 and *token (inside auth) for a b64token (RFC 6750 2.1, under
 * MAX_TOKEN) after "Bearer " in any case and any spaces; 0 when the request carries no bearer
 * credential (none, or Basic ...: the bare challenge); -1 when what follows is not a b64token.
 */
int authz_parse_bearer(const char *auth, const char **token);

/* a body (login, new order) is one small JSON object */
#define AUTHZ_MAX_BODY     4096
#define AUTHZ_MAX_NAME     64
#define AUTHZ_MAX_PASSWORD 255
#define AUTHZ_MAX_ITEM     100
/* amounts in cents up to ten million units: an order, not an overflow */
#define AUTHZ_MAX_AMOUNT 1000000000LL
/* an id in a path: digits, no leading zero, at most this many (fits a bigint) */
#define AUTHZ_MAX_ID_DIGITS 18
/* the id routes' prefixes: /v1/orders/{id} and /v1/users/{id} */
#define AUTHZ_ORDERS_PREFIX "/v1/orders/"
#define AUTHZ_USERS_PREFIX  "/v1/users/"

struct evhttp_request;
/* POST /v1/login's body, {"name","password"}: the name 1..64 bytes, the password up to 255. */
struct authz_login_body {
	char name[AUTHZ_MAX_NAME + 1];
	char password[AUTHZ_MAX_PASSWORD + 1]; /* the caller cleanses it */
};
/* POST /v1/orders's body, {"item","amount_cents"}: the item 1..100 bytes, 1..AUTHZ_MAX_AMOUNT. */
struct authz_order_body {
	char item[AUTHZ_MAX_ITEM + 1];
	long long amount_cents;
};
/*
 * The bodies as the routes read them (http_read_json: at most AUTHZ_MAX_BODY bytes, one JSON
 * object, no duplicate key): 0 and *out filled; else 400 and err (*out untouched). The request's
 * input buffer is read, not drained.
 */
int authz_parse_login(struct evhttp_request *req, struct authz_login_body *out, char *err, size_t errlen);
int authz_parse_order(struct evhttp_request *req, struct authz_order_body *out, char *err, size_t errlen);
/*
 * The id after prefix in path ("/v1/orders/42" with "/v1/orders/": 42; the /vuln twins' paths
 * too, the prefix being found where it first appears): 0 and *id for 1 to AUTHZ_MAX_ID_DIGITS
 * digits with no leading zero and nothing after; else 404 and err (*id untouched).
 */
int authz_parse_id(const char *path, const char *prefix, long long *id, char *err, size_t errlen);

/* client.c */
struct az_client;
struct az_response {
	int status; /* 0: no answer */
	char www[AUTHZ_ROW_TEXT];
	char body[8192];
};
struct az_client *az_client_new(int port, char *err, size_t errlen);
void az_client_free(struct az_client *c);
/* One request; bearer NULL sends no Authorization. -1 only when it could not be made. */
int az_call(struct az_client *c, const char *method, const char *path, const char *bearer, const char *body,
            struct az_response *rs, char *err, size_t errlen);

/* authz.c, for the phases: a phase failed; which server went away, if one did. Returns -1. */
int az_lost(const struct authz_config *cfg, struct authz_result *r, char *err, size_t errlen);
long long az_now(void);

#endif
