/*
 * faults_recipes.c — per API lab, the request its real route takes under load (a write where the
 * API writes), what it needs first (a login, a session), and how its writes are counted against
 * the 2xx answers that made them (faults.h). suite/ includes nothing of labs/: what a recipe needs
 * of a lab it reads as a user would, from the lab's --serve help and its HTTP answers.
 */
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faults_internal.h"
#include "http_client.h"
#include "pg.h"

#define PREPARE_TIMEOUT_MS 5000

static void header(struct evhttp_request *req, const char *name, const char *value)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), name, value);
}

/* One call on a client of its own; the answer in a (free it), 0 when answered with want. */
static int call(struct faults_lab *l, const struct http_call *c, int want, struct http_answer *a, char *err,
                size_t errlen)
{
	memset(a, 0, sizeof(*a));
	struct http_client *hc = http_client_new(l->port, PREPARE_TIMEOUT_MS, err, errlen);
	if (!hc)
		return -1;
	int rc = http_client_call(hc, c, a, err, errlen);
	http_client_free(hc);
	if (rc < 0)
		return -1;
	if (a->status != want) {
		snprintf(err, errlen, "lab-%s: %s %s answered %d, not %d: %.200s", l->name, c->method,
		         c->target, a->status, want, a->body ? a->body : "");
		return -1;
	}
	return 0;
}

/*
 * Writes counted one by one: the n-th request wrote what carries "faults-<n>"; sql lists
 * (n, how many) for those found. A 2xx without its row is lost; two rows for one n doubled.
 */
static int keyed_count(struct faults_lab *l, const char *pg_url, const char *sql, struct faults_writes *w,
                       char *err, size_t errlen)
{
	PGconn *c = pg_connect(pg_url, err, errlen);
	if (!c)
		return -1;
	PGresult *res = PQexec(c, sql);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		snprintf(err, errlen, "counting the writes of lab-%s: %s", l->name, PQerrorMessage(c));
		PQclear(res);
		PQfinish(c);
		return -1;
	}
	pthread_mutex_lock(&l->mu);
	size_t sent = l->next_n;
	int64_t *found = calloc(sent + 1, sizeof(*found));
	for (int i = 0; found && i < PQntuples(res); i++) {
		long long k = strtoll(PQgetvalue(res, i, 0), NULL, 10),
		          cnt = strtoll(PQgetvalue(res, i, 1), NULL, 10);
		w->found += cnt;
		if (k >= 0 && (size_t)k < sent)
			found[k] = cnt;
		else
			w->doubled += cnt; /* a write for a request never sent */
	}
	for (size_t k = 0; found && k < sent; k++) {
		uint8_t o = k < l->capoutcomes ? l->outcomes[k] : OUTCOME_SENT;
		w->acknowledged += o == OUTCOME_OK;
		w->ambiguous += o != OUTCOME_OK;
		w->lost += o == OUTCOME_OK && found[k] == 0;
		w->doubled += found[k] > 1 ? found[k] - 1 : 0;
	}
	pthread_mutex_unlock(&l->mu);
	int rc = found ? 0 : -1;
	if (!found)
		snprintf(err, errlen, "out of memory");
	free(found);
	PQclear(res);
	PQfinish(c);
	return rc;
}

/* ---- authz: POST /v1/orders with a bearer token: the deny-list in Redis, then PostgreSQL ---- */

/*
 * The token is fetched again after this, as a client does before its access token expires: the
 * lab's tokens live 300 s (authz.c's token_ttl_s), and a 10-minute soak with one token served
 * 401 for its second half.
 */
#define AUTHZ_RELOGIN_MS 120000

static int authz_prepare(struct faults_lab *l, char *err, size_t errlen)
{
	/* the demo users' password, as --serve prints it: each with password "..." */
	char out[4096] = "", password[128] = "";
	FILE *f = fopen(l->out_path, "r");
	size_t n = f ? fread(out, 1, sizeof(out) - 1, f) : 0;
	if (f)
		fclose(f);
	out[n] = '\0';
	const char *at = strstr(out, "with password \"");
	if (!at || sscanf(at, "with password \"%127[^\"]\"", password) != 1) {
		snprintf(err, errlen, "lab-authz --serve did not print the users' password");
		return -1;
	}
	json_t *body = json_pack("{s:s,s:s}", "name", "alice", "password", password);
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	struct http_call c = {
	        .method = "POST", .target = "/v1/login", .body = text, .body_len = strlen(text)};
	struct http_answer a;
	int rc = call(l, &c, 200, &a, err, errlen);
	free(text);
	json_t *doc = rc == 0 ? json_loads(a.body, 0, NULL) : NULL;
	const char *token = json_string_value(json_object_get(doc, "access_token"));
	if (rc == 0 && !token)
		snprintf(err, errlen, "lab-authz: /v1/login gave no access_token");
	else if (token) {
		snprintf(l->header, sizeof(l->header), "Bearer %s", token);
		l->prepared_ms = hist_now_ms();
	}
	json_decref(doc);
	http_answer_free(&a);
	return token ? 0 : -1;
}

static void authz_request(struct faults_lab *l, struct load_request *r, struct evhttp_request *req,
                          uint64_t n)
{
	/* on the load thread, its one client between two requests: a failed login keeps the old
	 * token, and the requests it fails are counted as what they are */
	char err[256];
	if (hist_now_ms() - l->prepared_ms > AUTHZ_RELOGIN_MS)
		(void)authz_prepare(l, err, sizeof(err));
	snprintf(r->path, sizeof(r->path), "/v1/orders");
	snprintf(l->body, sizeof(l->body), "{\"item\":\"faults-%llu\",\"amount_cents\":100}",
	         (unsigned long long)n);
	r->method = EVHTTP_REQ_POST;
	r->body = l->body;
	r->body_len = strlen(l->body);
	header(req, "Authorization", l->header);
	header(req, "Content-Type", "application/json");
}

static int authz_count(struct faults_lab *l, const char *pg_url, struct faults_writes *w, char *err,
                       size_t errlen)
{
	return keyed_count(l, pg_url,
	                   "SELECT substr(item, 8)::bigint, count(*) FROM lab_authz.orders"
	                   " WHERE item LIKE 'faults-%' GROUP BY 1",
	                   w, err, errlen);
}

/* ---- cors: GET /api/allowlist/me with the session cookie, from the app's origin ---- */

static int cors_prepare(struct faults_lab *l, char *err, size_t errlen)
{
	struct http_call c = {.method = "GET", .target = "/login"};
	struct http_answer a;
	int rc = call(l, &c, 302, &a, err, errlen);
	const char *cookie = rc == 0 ? http_answer_header(&a, "Set-Cookie") : NULL;
	const char *location = rc == 0 ? http_answer_header(&a, "Location") : NULL;
	if (rc == 0 && (!cookie || !location || !strstr(location, "/app")))
		snprintf(err, errlen, "lab-cors: /login set no cookie or no Location");
	else if (cookie) {
		snprintf(l->header, sizeof(l->header), "%.*s", (int)strcspn(cookie, ";"), cookie);
		snprintf(l->body, sizeof(l->body), "%.*s", (int)(strstr(location, "/app") - location),
		         location);
	}
	bool ok = cookie && location && strstr(location, "/app");
	http_answer_free(&a);
	return ok ? 0 : -1;
}

static void cors_request(struct faults_lab *l, struct load_request *r, struct evhttp_request *req, uint64_t n)
{
	(void)n;
	snprintf(r->path, sizeof(r->path), "/api/allowlist/me");
	header(req, "Cookie", l->header);
	header(req, "Origin", l->body);
}

/* ---- idempotency: POST /v1/charges, a fresh Idempotency-Key each ---- */

#define IDEM_CLIENT "faults"
#define IDEM_BODY   "{\"amount\":2500,\"currency\":\"usd\",\"customer\":\"cus_ada\"}"

static void idem_request(struct faults_lab *l, struct load_request *r, struct evhttp_request *req, uint64_t n)
{
	(void)l;
	char key[40];
	snprintf(key, sizeof(key), "faults-%llu", (unsigned long long)n);
	snprintf(r->path, sizeof(r->path), "/v1/charges");
	r->method = EVHTTP_REQ_POST;
	r->body = IDEM_BODY;
	r->body_len = strlen(IDEM_BODY);
	header(req, "Idempotency-Key", key);
	header(req, "X-Client-Id", IDEM_CLIENT);
	header(req, "Content-Type", "application/json");
}

/* Each key's charges, against the key's answer. */
static int idem_count(struct faults_lab *l, const char *pg_url, struct faults_writes *w, char *err,
                      size_t errlen)
{
	return keyed_count(l, pg_url,
	                   "SELECT substr(idempotency_key, 8)::bigint, count(*) FROM lab_idempotency.charges"
	                   " WHERE client = '" IDEM_CLIENT "' AND idempotency_key LIKE 'faults-%' GROUP BY 1",
	                   w, err, errlen);
}

/* ---- put-patch: PATCH /v1/users/1 incrementing visits by 1 ---- */

static int pp_prepare(struct faults_lab *l, char *err, size_t errlen)
{
	struct http_call c = {.method = "GET", .target = "/v1/users/1"};
	struct http_answer a;
	int rc = call(l, &c, 200, &a, err, errlen);
	json_t *doc = rc == 0 ? json_loads(a.body, 0, NULL) : NULL;
	json_t *v = json_object_get(doc, "visits");
	if (rc == 0 && !json_is_integer(v))
		snprintf(err, errlen, "lab-put-patch: GET /v1/users/1 has no visits");
	l->base = json_is_integer(v) ? json_integer_value(v) : 0;
	bool ok = json_is_integer(v);
	json_decref(doc);
	http_answer_free(&a);
	return ok ? 0 : -1;
}

#define PP_BODY "{\"visits\":1}"

static void pp_request(struct faults_lab *l, struct load_request *r, struct evhttp_request *req, uint64_t n)
{
	(void)l;
	(void)n;
	snprintf(r->path, sizeof(r->path), "/v1/users/1");
	r->method = EVHTTP_REQ_PATCH;
	r->body = PP_BODY;
	r->body_len = strlen(PP_BODY);
	header(req, "Content-Type", "application/vnd.backendlabs.increment+json");
}

/* The increments found (visits now - before) against the 2xx answers, in bulk: an error answer may
 * or may not have incremented, so only more than acknowledged + ambiguous is doubled. */
static int pp_count(struct faults_lab *l, const char *pg_url, struct faults_writes *w, char *err,
                    size_t errlen)
{
	PGconn *c = pg_connect(pg_url, err, errlen);
	if (!c)
		return -1;
	int64_t visits = 0;
	int rc = pg_query_int64(c, "SELECT visits FROM lab_put_patch.users WHERE id = 1", 0, NULL, &visits,
	                        err, errlen);
	PQfinish(c);
	if (rc < 0)
		return -1;
	pthread_mutex_lock(&l->mu);
	w->acknowledged = (int64_t)l->acknowledged;
	w->ambiguous = (int64_t)l->ambiguous;
	pthread_mutex_unlock(&l->mu);
	w->found = visits - l->base;
	w->lost = w->found < w->acknowledged ? w->acknowledged - w->found : 0;
	int64_t most = w->acknowledged + w->ambiguous;
	w->doubled = w->found > most ? w->found - most : 0;
	return 0;
}

/* ---- the readers ---- */

static void pagination_request(struct faults_lab *l, struct load_request *r, struct evhttp_request *req,
                               uint64_t n)
{
	(void)l, (void)req, (void)n;
	snprintf(r->path, sizeof(r->path), "/v1/items?limit=20");
}

static void pooling_request(struct faults_lab *l, struct load_request *r, struct evhttp_request *req,
                            uint64_t n)
{
	(void)l, (void)req;
	snprintf(r->path, sizeof(r->path), "/orders?id=%llu", (unsigned long long)(n % 100 + 1));
}

static void sqli_request(struct faults_lab *l, struct load_request *r, struct evhttp_request *req, uint64_t n)
{
	(void)l, (void)req, (void)n;
	snprintf(r->path, sizeof(r->path), "/v1/notes?user=1&q=plan");
}

static void versioning_request(struct faults_lab *l, struct load_request *r, struct evhttp_request *req,
                               uint64_t n)
{
	(void)l, (void)req;
	snprintf(r->path, sizeof(r->path), "/v2/users/%llu", (unsigned long long)(n % 20 + 1));
}

static const struct faults_recipe RECIPES[] = {
        {"authz", authz_prepare, authz_request, authz_count, true},
        {"cors", cors_prepare, cors_request, NULL, false},
        {"idempotency", NULL, idem_request, idem_count, false}, /* POST /v1/charges: PostgreSQL alone */
        {"pagination", NULL, pagination_request, NULL, false},
        {"pooling", NULL, pooling_request, NULL, false},
        {"put-patch", pp_prepare, pp_request, pp_count, false},
        {"sql-injection", NULL, sqli_request, NULL, false},
        {"versioning", NULL, versioning_request, NULL, false},
};

_Static_assert(sizeof(RECIPES) / sizeof(RECIPES[0]) == FAULTS_LABS,
               "a recipe for each of the FAULTS_LABS labs");

const char *faults_lab_name_at(int i)
{
	return RECIPES[i].name;
}

const struct faults_recipe *faults_recipe_find(const char *name)
{
	for (size_t i = 0; i < sizeof(RECIPES) / sizeof(RECIPES[0]); i++)
		if (!strcmp(RECIPES[i].name, name))
			return &RECIPES[i];
	return NULL;
}

int faults_lab_count_writes(struct faults_lab *l, const char *pg_url, struct faults_writes *w, char *err,
                            size_t errlen)
{
	memset(w, 0, sizeof(*w));
	if (!l->recipe->count) {
		snprintf(err, errlen, "lab-%s only reads", l->name);
		return -1;
	}
	return l->recipe->count(l, pg_url, w, err, errlen);
}
