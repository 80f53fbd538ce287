/*
 * authz.h — the experiment of lab-authz: "What's the difference between authentication and
 * authorization?"
 *
 * Authentication says who is calling (a password checked once, then a signed token); authorization
 * says what that caller may do (a role, the owner of an object). The lab runs a real API
 * (libevent, 127.0.0.1, PostgreSQL through common/pool.h, Redis through async hiredis) with a
 * login route (PBKDF2-HMAC-SHA256, salted) that issues RS256 JWTs signed with libjwt, and attacks
 * it:
 *   (1) login: the right password gets a token (sub, role, aud, iat, exp, jti); a wrong one and an
 *       unknown user get the same 401;
 *   (2) authentication: forged tokens (alg none, RS256->HS256 key confusion with the public key as
 *       the HMAC secret, expired, another audience, another RSA key, none at all) against a naive
 *       verifier that lets the token name its algorithm and the fixed one that pins RS256 and the
 *       key and checks exp (with a clock-skew allowance), iat and aud;
 *   (3) authorization: 401 (who are you?) vs 403 (you may not), and BOLA/IDOR: user A walks
 *       /v1/orders/{id}; the naive route checks the token, not the owner, the fixed one puts the
 *       owner in the query's WHERE and answers 404; foreign orders read are counted against the
 *       owners in PostgreSQL;
 *   (4) revocation: after logout or the user's deletion a stateless token keeps working until exp;
 *       the fixed API's deny-list in Redis (jti, or sub for a deleted user; TTL = what is left of the
 *       token's life) closes it.
 * The vulnerable routes (/vuln/v1/...) exist only when cfg.vulnerable is set: inside the lab's own
 * run, and with --serve --vulnerable.
 * Storage: schema lab_authz (users, orders), keys lab:authz:deny:* in Redis.
 *
 * Errors: functions return -1 (or NULL) and write one line into err (errlen bytes).
 */
#ifndef LAB_AUTHZ_H
#define LAB_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lab.h"

#define AUTHZ_PHASES 4
/* the API's audience: a token for any other is refused by the fixed verifier */
#define AUTHZ_AUDIENCE "lab-authz-api"
/* the one algorithm the fixed verifier accepts */
#define AUTHZ_ALG "RS256"

/* the seeded users: two users, a third user whose orders are walked, an admin */
enum { AUTHZ_ALICE = 1, AUTHZ_BOB, AUTHZ_CAROL, AUTHZ_ROOT, AUTHZ_USERS = AUTHZ_ROOT };
#define AUTHZ_PASSWORD "correct horse battery staple"

/* The keys, made at start: the API's RSA pair (PEM, what libjwt takes) and an attacker's. */
struct authz_keys {
	char *private_pem, *public_pem;
	int private_len, public_len;
	char *attacker_pem; /* another RSA private key: a token signed with it has a bad signature */
	int attacker_len;
};

int authz_keys_new(struct authz_keys *k, char *err, size_t errlen);
void authz_keys_free(struct authz_keys *k);

struct authz_config {
	const char *pg_url;
	const char *redis_url;
	const struct authz_keys *keys; /* borrowed: the run makes them, --serve too */
	int pool_size;
	int token_ttl_s;       /* an access token's life */
	int skew_s;            /* clock-skew allowance on exp and iat (fixed verifier) */
	int pbkdf2_iterations; /* PBKDF2-HMAC-SHA256 rounds of a new password hash */
	int orders;            /* orders seeded over the users; phase 3 walks their ids */
	bool vulnerable;       /* the API also serves the naive routes under /vuln/v1/ */
	uint64_t seed;
	struct lab_phase_hooks hooks;
	void (*progress_cb)(const char *what, double done, void *arg);
	void *progress_arg;
};

void authz_config_default(struct authz_config *cfg, bool quick);

/* Creates schema lab_authz, the users (each AUTHZ_PASSWORD, hashed) and cfg->orders orders. */
int authz_setup(const struct authz_config *cfg, char *err, size_t errlen);
/* Drops the schema and deletes lab:authz:*. */
int authz_teardown(const struct authz_config *cfg, char *err, size_t errlen);

/* ---- the API ---- */

struct authz_api;
struct authz_api *authz_api_start(const struct authz_config *cfg, int port, char *err, size_t errlen);
int authz_api_port(const struct authz_api *api);
void authz_api_stop(struct authz_api *api);

/* ---- the phases' numbers ---- */

#define AUTHZ_ROW_TEXT 200

struct authz_call_row {
	const char *what;
	int want, got;            /* the status the contract says, the one answered */
	bool want_change;         /* the request is one that must write */
	char www[AUTHZ_ROW_TEXT]; /* WWW-Authenticate, "" when none */
	bool changed;             /* PostgreSQL's rows differ after the request (writes only) */
	char note[96];
};

#define AUTHZ_LOGIN_ROWS 5
struct authz_login {
	struct authz_call_row rows[AUTHZ_LOGIN_ROWS];
	int nrows;
	char claims[320]; /* alice's token's payload, as the API signed it */
	int iterations;
	double login_ms; /* one right login, hash included */
};

enum {
	AUTHZ_ATK_VALID,
	AUTHZ_ATK_NO_TOKEN,
	AUTHZ_ATK_ALG_NONE,
	AUTHZ_ATK_KEY_CONFUSION,
	AUTHZ_ATK_EXPIRED,
	AUTHZ_ATK_WRONG_AUD,
	AUTHZ_ATK_BAD_SIG,
	AUTHZ_ATTACKS
};

struct authz_attack_row {
	const char *what;
	char alg[16];      /* the header's alg */
	int naive, fixed;  /* statuses of GET /vuln/v1/me and GET /v1/me */
	char naive_as[64]; /* who the naive API believed the caller was */
	char fixed_www[AUTHZ_ROW_TEXT];
};

struct authz_attacks {
	struct authz_attack_row rows[AUTHZ_ATTACKS];
	int nrows;
	int admin_naive; /* the alg-none admin token on GET /vuln/v1/admin/users */
	int admin_users_leaked;
};

#define AUTHZ_ACCESS_ROWS 6
struct authz_bola {
	int walked;                  /* ids requested on each route */
	int naive_ok, naive_foreign; /* 200s, and of them orders whose owner in PostgreSQL is not alice */
	int fixed_ok, fixed_foreign, fixed_404;
	int own_in_pg, foreign_in_pg; /* alice's orders and the others', in PostgreSQL */
};

struct authz_access {
	struct authz_call_row rows[AUTHZ_ACCESS_ROWS];
	int nrows;
	struct authz_bola bola;
};

enum { AUTHZ_REV_LOGOUT, AUTHZ_REV_DELETED, AUTHZ_REV_ROWS };
struct authz_revoke_row {
	const char *what;
	int before;            /* the token on the fixed API before the event */
	int event;             /* the logout's or the delete's status */
	int naive, fixed;      /* the same token after, on each API */
	long long remaining_s; /* the token's life left when revoked: exp + skew - now */
	long long key_ttl_s;   /* TTL of its deny-list key in Redis */
	long long max_life_s;  /* the longest any token lives: ttl + skew */
	char key[96];
};

struct authz_revocation {
	struct authz_revoke_row rows[AUTHZ_REV_ROWS];
	int nrows;
};

struct authz_result {
	struct authz_login login;
	struct authz_attacks attacks;
	struct authz_access access;
	struct authz_revocation revocation;
	bool lost_pg, lost_redis;
};

int authz_run(const struct authz_config *cfg, struct authz_result *result, char *err, size_t errlen);
void authz_judge(const struct authz_result *r, struct lab_verdict *v);

/* a row accepted: 2xx */
bool authz_accepted(int status);
/* attack i is one the naive verifier takes (alg none, key confusion, expired, another audience) */
bool authz_naive_falls_for(int attack);

int authz_phase_login(const void *cfg, void *result, char *err, size_t errlen);
int authz_phase_attacks(const void *cfg, void *result, char *err, size_t errlen);
int authz_phase_access(const void *cfg, void *result, char *err, size_t errlen);
int authz_phase_revocation(const void *cfg, void *result, char *err, size_t errlen);

#endif
