/*
 * phases.c — the four phases of lab-authz, as authz_run walks them. Each starts the lab's own API
 * (naive routes included), sends real HTTP requests with the blocking client, and reads what
 * PostgreSQL and Redis hold after. The forged tokens are made with libjwt, the key confusion one
 * with the public key as the API serves it. Nothing here prints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "internal.h"
#include "pg.h"
#include "redis.h"

/* the token a forger claims: root's sub and the admin role */
#define FORGED_SUB  AUTHZ_ROOT
#define OTHER_AUD   "lab-billing-api"
#define EXPIRED_AGO 600 /* a token stolen ten minutes after it expired: far past any skew */

struct env {
	struct authz_api *api;
	struct az_client *c;
	PGconn *db;
};

static void env_close(struct env *e)
{
	PQfinish(e->db);
	az_client_free(e->c);
	authz_api_stop(e->api);
}

static int env_open(const struct authz_config *cfg, struct env *e, char *err, size_t errlen)
{
	memset(e, 0, sizeof(*e));
	if ((e->api = authz_api_start(cfg, 0, err, errlen)) &&
	    (e->c = az_client_new(authz_api_port(e->api), err, errlen)) &&
	    (e->db = pg_connect(cfg->pg_url, err, errlen)))
		return 0;
	env_close(e);
	return -1;
}

static void progress(const struct authz_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done, cfg->progress_arg);
}

/* POST /v1/login; *token (malloc'd) on 200, NULL otherwise; rs holds the answer. */
static int login(struct env *e, const char *name, const char *password, char **token, struct az_response *rs,
                 char *err, size_t errlen)
{
	char body[256];
	snprintf(body, sizeof(body), "{\"name\":\"%s\",\"password\":\"%s\"}", name, password);
	*token = NULL;
	if (az_call(e->c, "POST", "/v1/login", NULL, body, rs, err, errlen) < 0)
		return -1;
	json_t *doc = rs->status == 200 ? json_loads(rs->body, 0, NULL) : NULL;
	const char *t = json_string_value(json_object_get(doc, "access_token"));
	if (t)
		*token = strdup(t);
	json_decref(doc);
	if (rs->status == 200 && !*token) {
		snprintf(err, errlen, "login of %s answered 200 without a token", name);
		return -1;
	}
	return 0;
}

static int count(PGconn *db, const char *sql, long long *out, char *err, size_t errlen)
{
	int64_t v = 0;
	int rc = pg_query_int64(db, sql, 0, NULL, &v, err, errlen);
	*out = v;
	return rc;
}

static void row_set(struct authz_call_row *row, const char *what, int want, const struct az_response *rs)
{
	row->what = what;
	row->want = want;
	row->got = rs->status;
	snprintf(row->www, sizeof(row->www), "%s", rs->www);
}

/* ---- phase 1: login ---- */

static int login_rows(const struct authz_config *cfg, struct env *e, struct authz_login *p, char *err,
                      size_t errlen)
{
	struct az_response rs;
	char *token = NULL;
	uint64_t t0 = hist_now_us();
	if (login(e, "alice", AUTHZ_PASSWORD, &token, &rs, err, errlen) < 0)
		return -1;
	p->login_ms = (double)(hist_now_us() - t0) / 1000.0;
	p->iterations = cfg->pbkdf2_iterations;
	row_set(&p->rows[p->nrows++], "POST /v1/login alice, right password", 200, &rs);
	struct authz_claims c;
	char why[128];
	if (token && az_verify_fixed(cfg->keys, token, az_now(), cfg->skew_s, &c, why, sizeof(why)) == 0)
		snprintf(p->claims, sizeof(p->claims),
		         "{alg %s, sub \"%lld\", role %s, aud %s, iat %lld, exp iat+%lld, jti %.8s...}",
		         c.alg, c.sub, c.role, c.aud, c.iat, c.exp - c.iat, c.jti);
	char *none = NULL;
	int rc = login(e, "alice", "Tr0ub4dor&3", &none, &rs, err, errlen);
	if (rc == 0)
		row_set(&p->rows[p->nrows++], "POST /v1/login alice, wrong password", 401, &rs);
	if (rc == 0 && (rc = login(e, "mallory", AUTHZ_PASSWORD, &none, &rs, err, errlen)) == 0)
		row_set(&p->rows[p->nrows++], "POST /v1/login mallory (no such user)", 401, &rs);
	if (rc == 0 && (rc = az_call(e->c, "POST", "/v1/login", NULL, "{\"name\": ", &rs, err, errlen)) == 0)
		row_set(&p->rows[p->nrows++], "POST /v1/login, body not JSON", 400, &rs);
	if (rc == 0 && (rc = az_call(e->c, "GET", "/v1/me", token, NULL, &rs, err, errlen)) == 0)
		row_set(&p->rows[p->nrows++], "GET /v1/me with alice's token", 200, &rs);
	free(token);
	free(none);
	return rc;
}

int authz_phase_login(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct authz_config *cfg = cfgv;
	struct authz_result *r = result;
	memset(&r->login, 0, sizeof(r->login));
	struct env e;
	int rc = env_open(cfg, &e, err, errlen) < 0 ? -1 : login_rows(cfg, &e, &r->login, err, errlen);
	env_close(&e);
	return rc < 0 ? az_lost(cfg, r, err, errlen) : 0;
}

/* ---- phase 2: forged tokens against both verifiers ---- */

static const char *const ATTACK_NAMES[AUTHZ_ATTACKS] = {
        [AUTHZ_ATK_VALID] = "alice's valid token (control)",
        [AUTHZ_ATK_NO_TOKEN] = "no token",
        [AUTHZ_ATK_ALG_NONE] = "alg none, unsigned, claims admin",
        [AUTHZ_ATK_KEY_CONFUSION] = "HS256 keyed with the public key",
        [AUTHZ_ATK_EXPIRED] = "expired 10 min ago (admin's)",
        [AUTHZ_ATK_WRONG_AUD] = "aud " OTHER_AUD " (admin's)",
        [AUTHZ_ATK_BAD_SIG] = "RS256 signed by another key",
};

/* The forged token of attack i (NULL for the control and no token); public_pem as served. */
static char *forge(const struct authz_config *cfg, int i, const char *public_pem, char *err, size_t errlen)
{
	const struct authz_keys *k = cfg->keys;
	struct authz_claims c = {.sub = FORGED_SUB, .iat = az_now()};
	snprintf(c.role, sizeof(c.role), "admin");
	snprintf(c.aud, sizeof(c.aud), "%s", i == AUTHZ_ATK_WRONG_AUD ? OTHER_AUD : AUTHZ_AUDIENCE);
	if (i == AUTHZ_ATK_EXPIRED)
		c.iat -= cfg->token_ttl_s + EXPIRED_AGO;
	c.exp = c.iat + cfg->token_ttl_s;
	if (az_new_jti(c.jti, err, errlen) < 0)
		return NULL;
	switch (i) {
	case AUTHZ_ATK_ALG_NONE:
		return az_sign(JWT_ALG_NONE, NULL, 0, &c, err, errlen);
	case AUTHZ_ATK_KEY_CONFUSION:
		return az_sign(JWT_ALG_HS256, public_pem, (int)strlen(public_pem), &c, err, errlen);
	case AUTHZ_ATK_BAD_SIG:
		return az_sign(JWT_ALG_RS256, k->attacker_pem, k->attacker_len, &c, err, errlen);
	default: /* expired, another audience: real tokens of the API, as it would have signed them */
		return az_sign(JWT_ALG_RS256, k->private_pem, k->private_len, &c, err, errlen);
	}
}

static int attack(struct env *e, struct authz_attack_row *row, const char *token, char *err, size_t errlen)
{
	struct az_response rs;
	if (!token || az_header_alg(token, row->alg, sizeof(row->alg)) < 0)
		snprintf(row->alg, sizeof(row->alg), "-");
	if (az_call(e->c, "GET", VULN "/v1/me", token, NULL, &rs, err, errlen) < 0)
		return -1;
	row->naive = rs.status;
	json_t *me = rs.status == 200 ? json_loads(rs.body, 0, NULL) : NULL;
	if (me)
		snprintf(row->naive_as, sizeof(row->naive_as), "sub %lld, %s",
		         (long long)json_integer_value(json_object_get(me, "sub")),
		         json_string_value(json_object_get(me, "role"))
		                 ? json_string_value(json_object_get(me, "role"))
		                 : "?");
	json_decref(me);
	if (az_call(e->c, "GET", "/v1/me", token, NULL, &rs, err, errlen) < 0)
		return -1;
	row->fixed = rs.status;
	snprintf(row->fixed_www, sizeof(row->fixed_www), "%s", rs.www);
	return 0;
}

static int attacks(const struct authz_config *cfg, struct env *e, struct authz_attacks *p, char *err,
                   size_t errlen)
{
	struct az_response rs, key;
	char *valid = NULL;
	/* the attacker's key material: the public key, fetched like any client would */
	if (login(e, "alice", AUTHZ_PASSWORD, &valid, &rs, err, errlen) < 0 ||
	    az_call(e->c, "GET", "/v1/public-key", NULL, NULL, &key, err, errlen) < 0) {
		free(valid);
		return -1;
	}
	if (!valid || key.status != 200) {
		snprintf(err, errlen, "login answered %d, /v1/public-key %d", rs.status, key.status);
		free(valid);
		return -1;
	}
	int rc = 0;
	for (int i = 0; i < AUTHZ_ATTACKS && rc == 0; i++) {
		char *forged = i == AUTHZ_ATK_VALID || i == AUTHZ_ATK_NO_TOKEN
		                       ? NULL
		                       : forge(cfg, i, key.body, err, errlen);
		if (!forged && i != AUTHZ_ATK_VALID && i != AUTHZ_ATK_NO_TOKEN)
			rc = -1;
		p->rows[i].what = ATTACK_NAMES[i];
		if (rc == 0)
			rc = attack(e, &p->rows[i], i == AUTHZ_ATK_VALID ? valid : forged, err, errlen);
		/* the damage: the unsigned admin token lists the users on the naive admin route */
		if (rc == 0 && i == AUTHZ_ATK_ALG_NONE &&
		    (rc = az_call(e->c, "GET", VULN "/v1/admin/users", forged, NULL, &rs, err, errlen)) ==
		            0) {
			p->admin_naive = rs.status;
			json_t *doc = json_loads(rs.body, 0, NULL);
			p->admin_users_leaked = (int)json_array_size(json_object_get(doc, "users"));
			json_decref(doc);
		}
		free(forged);
		if (rc == 0)
			p->nrows = i + 1;
	}
	free(valid);
	return rc;
}

int authz_phase_attacks(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct authz_config *cfg = cfgv;
	struct authz_result *r = result;
	memset(&r->attacks, 0, sizeof(r->attacks));
	struct env e;
	int rc = env_open(cfg, &e, err, errlen) < 0 ? -1 : attacks(cfg, &e, &r->attacks, err, errlen);
	env_close(&e);
	return rc < 0 ? az_lost(cfg, r, err, errlen) : 0;
}

/* ---- phase 3: 401 vs 403, and BOLA ---- */

#define SQL_ORDERS       "SELECT count(*) FROM " SCHEMA ".orders"
#define SQL_BOB_DELETED  "SELECT count(*) FROM " SCHEMA ".users WHERE deleted_at IS NOT NULL"
#define SQL_FIRST_OF_BOB "SELECT min(id) FROM " SCHEMA ".orders WHERE owner_id = 2"

/* One request and whether the count sql gives changed. */
static int checked(struct env *e, struct authz_access *p, const char *what, int want, bool want_change,
                   const char *method, const char *path, const char *token, const char *body, const char *sql,
                   char *err, size_t errlen)
{
	long long before = 0, after = 0;
	struct az_response rs;
	if ((sql && count(e->db, sql, &before, err, errlen) < 0) ||
	    az_call(e->c, method, path, token, body, &rs, err, errlen) < 0 ||
	    (sql && count(e->db, sql, &after, err, errlen) < 0))
		return -1;
	struct authz_call_row *row = &p->rows[p->nrows++];
	row_set(row, what, want, &rs);
	row->want_change = want_change;
	row->changed = before != after;
	return 0;
}

/* alice walks /v1/orders/1..n on one side; 200s, and foreign ones by the owners in PostgreSQL */
static int walk(const struct authz_config *cfg, struct env *e, const char *token, bool naive,
                const long long *owner, struct authz_bola *b, char *err, size_t errlen)
{
	char path[64];
	struct az_response rs;
	for (int id = 1; id <= b->walked; id++) {
		snprintf(path, sizeof(path), "%s/v1/orders/%d", naive ? VULN : "", id);
		if (az_call(e->c, "GET", path, token, NULL, &rs, err, errlen) < 0)
			return -1;
		json_t *doc = rs.status == 200 ? json_loads(rs.body, 0, NULL) : NULL;
		long long got = (long long)json_integer_value(json_object_get(doc, "id"));
		json_decref(doc);
		bool foreign = rs.status == 200 && got >= 1 && got <= b->walked && owner[got] != AUTHZ_ALICE;
		if (naive) {
			b->naive_ok += rs.status == 200;
			b->naive_foreign += foreign;
		} else {
			b->fixed_ok += rs.status == 200;
			b->fixed_foreign += foreign;
			b->fixed_404 += rs.status == 404;
		}
		progress(cfg, "walking order ids", (naive ? 0.5 : 0.0) + 0.5 * id / b->walked);
	}
	return 0;
}

static int bola(const struct authz_config *cfg, struct env *e, const char *token, struct authz_bola *b,
                char *err, size_t errlen)
{
	b->walked = cfg->orders;
	long long *owner = calloc((size_t)b->walked + 1, sizeof(*owner));
	PGresult *res = owner ? pg_query(e->db, "SELECT id, owner_id FROM " SCHEMA ".orders ORDER BY id", 0,
	                                 NULL, err, errlen)
	                      : NULL;
	int rc = res ? 0 : -1;
	for (int i = 0; res && i < PQntuples(res); i++) {
		long long id = atoll(PQgetvalue(res, i, 0)), o = atoll(PQgetvalue(res, i, 1));
		if (id >= 1 && id <= b->walked) {
			owner[id] = o;
			b->own_in_pg += o == AUTHZ_ALICE;
			b->foreign_in_pg += o != AUTHZ_ALICE;
		}
	}
	PQclear(res);
	if (rc == 0)
		rc = walk(cfg, e, token, true, owner, b, err, errlen);
	if (rc == 0)
		rc = walk(cfg, e, token, false, owner, b, err, errlen);
	free(owner);
	return rc;
}

static int access_rows(const struct authz_config *cfg, struct env *e, struct authz_access *p, char *err,
                       size_t errlen)
{
	struct az_response rs;
	char *alice = NULL, *root = NULL, *none = NULL, path[64];
	long long bobs = 0;
	struct authz_claims c = {.sub = AUTHZ_ALICE, .iat = az_now(), .exp = az_now() + cfg->token_ttl_s};
	snprintf(c.role, sizeof(c.role), "user");
	snprintf(c.aud, sizeof(c.aud), AUTHZ_AUDIENCE);
	snprintf(c.jti, sizeof(c.jti), "forged");
	int rc = login(e, "alice", AUTHZ_PASSWORD, &alice, &rs, err, errlen) < 0 ||
	                         login(e, "root", AUTHZ_PASSWORD, &root, &rs, err, errlen) < 0 ||
	                         (!alice || !root
	                                  ? (snprintf(err, errlen, "alice or root could not log in"), 1)
	                                  : 0) ||
	                         !(none = az_sign(JWT_ALG_NONE, NULL, 0, &c, err, errlen)) ||
	                         count(e->db, SQL_FIRST_OF_BOB, &bobs, err, errlen) < 0
	                 ? -1
	                 : 0;
	const char *order = "{\"item\":\"a forged order\",\"amount_cents\":100}";
	snprintf(path, sizeof(path), "/v1/orders/%lld", bobs);
	if (rc == 0)
		rc = checked(e, p, "GET /v1/admin/users, no token", 401, false, "GET", "/v1/admin/users",
		             NULL, NULL, NULL, err, errlen);
	if (rc == 0)
		rc = checked(e, p, "GET /v1/admin/users, alice (user)", 403, false, "GET", "/v1/admin/users",
		             alice, NULL, NULL, err, errlen);
	if (rc == 0)
		rc = checked(e, p, "GET /v1/admin/users, root (admin)", 200, false, "GET", "/v1/admin/users",
		             root, NULL, NULL, err, errlen);
	if (rc == 0)
		rc = checked(e, p, "DELETE /v1/users/2, alice (user)", 403, false, "DELETE", "/v1/users/2",
		             alice, NULL, SQL_BOB_DELETED, err, errlen);
	if (rc == 0)
		rc = checked(e, p, "POST /v1/orders, alg none token", 401, false, "POST", "/v1/orders", none,
		             order, SQL_ORDERS, err, errlen);
	if (rc == 0)
		rc = checked(e, p, "GET /v1/orders/{bob's}, alice", 404, false, "GET", path, alice, NULL,
		             NULL, err, errlen);
	if (rc == 0)
		rc = bola(cfg, e, alice, &p->bola, err, errlen);
	free(alice);
	free(root);
	free(none);
	return rc;
}

int authz_phase_access(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct authz_config *cfg = cfgv;
	struct authz_result *r = result;
	memset(&r->access, 0, sizeof(r->access));
	struct env e;
	int rc = env_open(cfg, &e, err, errlen) < 0 ? -1 : access_rows(cfg, &e, &r->access, err, errlen);
	env_close(&e);
	return rc < 0 ? az_lost(cfg, r, err, errlen) : 0;
}

/* ---- phase 4: revocation ---- */

static int key_ttl(const struct authz_config *cfg, const char *key, long long *ttl, char *err, size_t errlen)
{
	redisContext *rc = redis_connect_url(cfg->redis_url, 2000, err, errlen);
	redisReply *r = rc ? redis_cmd(rc, err, errlen, "TTL %s", key) : NULL;
	bool ok = r && r->type == REDIS_REPLY_INTEGER;
	*ttl = ok ? r->integer : -2;
	if (r && !ok)
		snprintf(err, errlen, "TTL %s: not an integer reply", key);
	if (r)
		freeReplyObject(r);
	if (rc)
		redisFree(rc);
	return ok ? 0 : -1;
}

/* name logs in; the event (logout with their token, or root deletes them) revokes the token. */
static int revoke(const struct authz_config *cfg, struct env *e, struct authz_revoke_row *row,
                  const char *name, long long id, const char *root, char *err, size_t errlen)
{
	struct az_response rs;
	char *token = NULL, path[64], why[128];
	struct authz_claims c = {0};
	int rc = login(e, name, AUTHZ_PASSWORD, &token, &rs, err, errlen);
	if (rc == 0 &&
	    (!token || az_verify_fixed(cfg->keys, token, az_now(), cfg->skew_s, &c, why, sizeof(why)) < 0)) {
		snprintf(err, errlen, "%s could not log in (%d)", name, rs.status);
		rc = -1;
	}
	if (rc == 0 && (rc = az_call(e->c, "GET", "/v1/me", token, NULL, &rs, err, errlen)) == 0)
		row->before = rs.status;
	snprintf(path, sizeof(path), "/v1/users/%lld", id);
	if (rc == 0 &&
	    (rc = root ? az_call(e->c, "DELETE", path, root, NULL, &rs, err, errlen)
	               : az_call(e->c, "POST", "/v1/logout", token, NULL, &rs, err, errlen)) == 0) {
		row->event = rs.status;
		row->remaining_s = c.exp + cfg->skew_s - az_now();
		row->max_life_s = (long long)cfg->token_ttl_s + cfg->skew_s;
	}
	if (rc == 0 && (rc = az_call(e->c, "GET", VULN "/v1/me", token, NULL, &rs, err, errlen)) == 0)
		row->naive = rs.status;
	if (rc == 0 && (rc = az_call(e->c, "GET", "/v1/me", token, NULL, &rs, err, errlen)) == 0)
		row->fixed = rs.status;
	if (root)
		snprintf(row->key, sizeof(row->key), DENY_SUB "%lld", id);
	else
		snprintf(row->key, sizeof(row->key), DENY_JTI "%.8s...", c.jti);
	char key[96];
	if (root)
		snprintf(key, sizeof(key), DENY_SUB "%lld", id);
	else
		snprintf(key, sizeof(key), DENY_JTI "%s", c.jti);
	if (rc == 0)
		rc = key_ttl(cfg, key, &row->key_ttl_s, err, errlen);
	free(token);
	return rc;
}

int authz_phase_revocation(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct authz_config *cfg = cfgv;
	struct authz_result *r = result;
	struct authz_revocation *p = &r->revocation;
	memset(p, 0, sizeof(*p));
	struct env e;
	struct az_response rs;
	char *root = NULL;
	int rc = env_open(cfg, &e, err, errlen) < 0
	                 ? -1
	                 : login(&e, "root", AUTHZ_PASSWORD, &root, &rs, err, errlen);
	p->rows[AUTHZ_REV_LOGOUT].what = "alice logs out (POST /v1/logout)";
	p->rows[AUTHZ_REV_DELETED].what = "root deletes bob (DELETE /v1/users/2)";
	if (rc == 0 &&
	    (rc = revoke(cfg, &e, &p->rows[AUTHZ_REV_LOGOUT], "alice", AUTHZ_ALICE, NULL, err, errlen)) == 0)
		p->nrows = 1;
	if (rc == 0 && root &&
	    (rc = revoke(cfg, &e, &p->rows[AUTHZ_REV_DELETED], "bob", AUTHZ_BOB, root, err, errlen)) == 0)
		p->nrows = 2;
	free(root);
	env_close(&e);
	return rc < 0 ? az_lost(cfg, r, err, errlen) : 0;
}
