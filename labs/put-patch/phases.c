/*
 * phases.c — phases 1 to 3 of lab-put-patch, as put_patch_run walks them (phase 4 is race.c).
 * Each starts the lab's own API, sends real HTTP requests with the blocking client, and reads
 * what PostgreSQL holds after: the row's SHA-256, its tags and visits. Nothing here prints.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"

/* the user every story starts from */
#define ADA                                                                                                  \
	"{\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\",\"bio\":\"wrote the first program\","      \
	"\"tags\":[\"admin\",\"math\"],\"visits\":41}"
#define ADA_TAGS   2
#define ADA_VISITS 41
#define NEW_EMAIL  "ada@analytical.engine"
/* phase 1: the same user, its email changed, as a whole */
#define ADA_PUT                                                                                              \
	"{\"name\":\"Ada Lovelace\",\"email\":\"" NEW_EMAIL "\",\"bio\":\"wrote the first program\","        \
	"\"tags\":[\"admin\",\"math\"],\"visits\":41}"
/* user ids: each phase and story its own */
#define RETRY_ID    100
#define CONTRACT_ID 200
#define EDITORS_ID  300

void pp_progress(const struct put_patch_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done, cfg->progress_arg);
}

struct put_patch_api *pp_phase_api(const struct put_patch_config *cfg, bool require_if_match, char *err,
                                   size_t errlen)
{
	struct put_patch_config c = *cfg;
	c.require_if_match = require_if_match;
	return put_patch_api_start(&c, 0, err, errlen);
}

/* one line of at most len - 1 bytes of an answer, control characters as spaces */
static void one_line(char *out, size_t len, const char *body)
{
	size_t i = 0;
	for (; body[i] && i + 1 < len; i++)
		out[i] = (unsigned char)body[i] < 0x20 ? ' ' : body[i];
	out[i] = '\0';
}

static void user_path(char *out, size_t len, long long id)
{
	snprintf(out, len, USERS_PREFIX "%lld", id);
}

/* One request on c to user id; its answer in rs. */
static int call(struct put_patch_client *c, long long id, const char *method, const char *ctype,
                const char *if_match, const char *body, struct put_patch_response *rs, char *err,
                size_t errlen)
{
	char path[64];
	user_path(path, sizeof(path), id);
	struct put_patch_request rq = {method, path, ctype, if_match, body};
	return put_patch_call(c, &rq, rs, err, errlen);
}

/* ---- phase 1: a retrying client ---- */

struct retry_req {
	const char *what, *method, *ctype, *body;
	bool watch_count;
	const char *watch; /* "tags", "visits" or NULL: the digest alone */
};

static const struct retry_req RETRY_REQS[PUT_PATCH_RETRY_ROWS] = {
        [PP_RETRY_PUT] = {"PUT the whole user, new email", "PUT", "application/json", ADA_PUT, false, NULL},
        [PP_RETRY_MERGE] = {"PATCH merge {email, tags}", "PATCH", PP_MERGE_PATCH,
                            "{\"email\":\"" NEW_EMAIL "\",\"tags\":[\"admin\",\"ops\"]}", false, NULL},
        [PP_RETRY_REPLACE] = {"PATCH json replace /email", "PATCH", PP_JSON_PATCH,
                              "[{\"op\":\"replace\",\"path\":\"/email\",\"value\":\"" NEW_EMAIL "\"}]", false,
                              NULL},
        [PP_RETRY_ADD] = {"PATCH json add /tags/-", "PATCH", PP_JSON_PATCH,
                          "[{\"op\":\"add\",\"path\":\"/tags/-\",\"value\":\"vip\"}]", true, "tags"},
        [PP_RETRY_INCREMENT] = {"PATCH increment visits +1", "PATCH", PP_INCREMENT, "{\"visits\":1}", true,
                                "visits"},
        [PP_RETRY_TEST] = {"PATCH json test visits, replace", "PATCH", PP_JSON_PATCH,
                           "[{\"op\":\"test\",\"path\":\"/visits\",\"value\":41},"
                           "{\"op\":\"replace\",\"path\":\"/visits\",\"value\":42}]",
                           true, "visits"},
};

/* The stored row of id: digest, tags and visits. */
static int read_row(PGconn *db, long long id, struct put_patch_sends *s, char *err, size_t errlen)
{
	char rep[PUT_PATCH_BODY_LEN];
	if (pp_row_on(db, id, s->digest, rep, sizeof(rep), err, errlen) < 0)
		return -1;
	json_t *doc = json_loads(rep, 0, NULL);
	s->tags = (long long)json_array_size(json_object_get(doc, "tags"));
	s->visits = json_integer_value(json_object_get(doc, "visits"));
	json_decref(doc);
	return 0;
}

static int send_times(PGconn *db, struct put_patch_client *c, const struct retry_req *q, long long id,
                      struct put_patch_sends *s, char *err, size_t errlen)
{
	if (pp_seed_on(db, id, ADA, err, errlen) < 0)
		return -1;
	struct put_patch_response rs;
	for (int k = 0; k < s->n; k++) {
		if (call(c, id, q->method, q->ctype, NULL, q->body, &rs, err, errlen) < 0)
			return -1;
		s->status[k] = rs.status;
	}
	return read_row(db, id, s, err, errlen);
}

static int retries(const struct put_patch_config *cfg, PGconn *db, struct put_patch_client *c,
                   struct put_patch_retries *p, char *err, size_t errlen)
{
	for (int r = 0; r < PUT_PATCH_RETRY_ROWS; r++) {
		struct put_patch_retry_row *row = &p->rows[r];
		row->what = RETRY_REQS[r].what;
		row->watch_count = RETRY_REQS[r].watch_count;
		row->watch = RETRY_REQS[r].watch;
		row->base_tags = ADA_TAGS;
		row->base_visits = ADA_VISITS;
		pp_progress(cfg, "sending", (double)r / PUT_PATCH_RETRY_ROWS);
		for (int i = 0; i < PUT_PATCH_SEND_COUNTS; i++) {
			row->after[i].n = put_patch_send_counts[i];
			/* the same id, reset before each count: the digest covers the id too */
			long long id = RETRY_ID + r;
			if (send_times(db, c, &RETRY_REQS[r], id, &row->after[i], err, errlen) < 0)
				return -1;
		}
		p->nrows = r + 1;
	}
	return 0;
}

int put_patch_phase_retries(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct put_patch_config *cfg = cfgv;
	struct put_patch_result *r = result;
	memset(&r->retries, 0, sizeof(r->retries));
	struct put_patch_api *api = pp_phase_api(cfg, false, err, errlen);
	struct put_patch_client *c = api ? put_patch_client_new(put_patch_api_port(api), err, errlen) : NULL;
	PGconn *db = c ? pg_connect(cfg->pg_url, err, errlen) : NULL;
	int ret = db ? retries(cfg, db, c, &r->retries, err, errlen) : -1;
	PQfinish(db);
	put_patch_client_free(c);
	put_patch_api_stop(api);
	return ret < 0 ? pp_lost(cfg, r, err, errlen) : 0;
}

/* --predict: a retried JSON Patch add appends once per send (the row's tags, counted by PostgreSQL) */
static double q_retries_given(const void *cfg, int i)
{
	(void)cfg;
	return i == 0 ? ADA_TAGS : put_patch_send_counts[PUT_PATCH_SEND_COUNTS - 1];
}

static double q_retries_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct put_patch_retries *p = &((const struct put_patch_result *)result)->retries;
	if (p->nrows <= PP_RETRY_ADD)
		return NAN;
	return (double)p->rows[PP_RETRY_ADD].after[PUT_PATCH_SEND_COUNTS - 1].tags;
}

const struct lab_question pp_q_retries = {
        .text = "A user with {} tags; a client sends the JSON Patch [add /tags/- \"vip\"] {} times "
                "(it retries): how many tags does it have after?",
        .given = q_retries_given,
        .kind = LAB_ANSWER_NUMBER,
        .unit = "tags",
        .measured = q_retries_measured,
        .why = "add to /tags/- appends on every send: 2 + 5, not idempotent; a PUT or a merge patch "
               "sent 5 times leaves the row of one send"};

/* ---- phase 2: the HTTP contract ---- */

struct contract_req {
	const char *what, *method, *ctype, *body;
	int want;
	bool want_change;
};

static const struct contract_req CONTRACT_REQS[PUT_PATCH_CONTRACT_ROWS] = {
        {"PATCH as application/json", "PATCH", "application/json", "{\"email\":\"x@y.z\"}",
         PP_STATUS_UNSUPPORTED, false},
        {"PUT as text/plain", "PUT", "text/plain", ADA, PP_STATUS_UNSUPPORTED, false},
        {"merge patch, not JSON", "PATCH", PP_MERGE_PATCH, "{\"email\": ", PP_STATUS_MALFORMED, false},
        {"JSON Patch, not an array", "PATCH", PP_JSON_PATCH, "{\"op\":\"remove\",\"path\":\"/bio\"}",
         PP_STATUS_MALFORMED, false},
        {"JSON Patch, op \"increment\"", "PATCH", PP_JSON_PATCH,
         "[{\"op\":\"increment\",\"path\":\"/visits\",\"value\":1}]", PP_STATUS_MALFORMED, false},
        {"JSON Patch, path without /", "PATCH", PP_JSON_PATCH, "[{\"op\":\"remove\",\"path\":\"bio\"}]",
         PP_STATUS_MALFORMED, false},
        {"JSON Patch, test fails", "PATCH", PP_JSON_PATCH,
         "[{\"op\":\"test\",\"path\":\"/email\",\"value\":\"bob@example.com\"},"
         "{\"op\":\"replace\",\"path\":\"/email\",\"value\":\"" NEW_EMAIL "\"}]",
         PP_STATUS_CONFLICT, false},
        {"JSON Patch, add /tags/01", "PATCH", PP_JSON_PATCH,
         "[{\"op\":\"add\",\"path\":\"/tags/01\",\"value\":\"x\"}]", PP_STATUS_CONFLICT, false},
        {"JSON Patch, remove /email", "PATCH", PP_JSON_PATCH, "[{\"op\":\"remove\",\"path\":\"/email\"}]",
         PP_STATUS_INVALID, false},
        {"merge patch {visits: \"many\"}", "PATCH", PP_MERGE_PATCH, "{\"visits\":\"many\"}",
         PP_STATUS_INVALID, false},
        {"PUT without email (required)", "PUT", "application/json",
         "{\"name\":\"Ada Lovelace\",\"bio\":\"wrote the first program\",\"tags\":[],\"visits\":41}",
         PP_STATUS_MALFORMED, false},
        {"PUT without bio (optional)", "PUT", "application/json",
         "{\"name\":\"Ada "
         "Lovelace\",\"email\":\"ada@example.com\",\"tags\":[\"admin\",\"math\"],\"visits\":41}",
         200, true},
};

/* the last request of the list: a PUT that leaves out an optional field, the one that writes */
#define CONTRACT_PUT_NO_BIO (PUT_PATCH_CONTRACT_ROWS - 1)

/* --predict: what a PUT without the optional bio does to the stored one; the answer's index */
static double q_contract_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct put_patch_contract *p = &((const struct put_patch_result *)result)->contract;
	if (p->nrows <= CONTRACT_PUT_NO_BIO)
		return NAN;
	const struct put_patch_contract_row *row = &p->rows[CONTRACT_PUT_NO_BIO];
	if (row->got == 200)
		return row->changed ? 1 : 0;
	return row->got == PP_STATUS_MALFORMED && !row->changed ? 2 : NAN;
}

const struct lab_question pp_q_contract = {
        .text = "The stored user has a bio. A PUT sends the whole user without it (bio is optional): "
                "what happens?",
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"200, the bio is kept: PUT changes the fields it sends",
                    "200, the bio is gone: PUT replaces the whole user", "400: a PUT must send every field"},
        .measured = q_contract_measured,
        .why = "PUT replaces: what the body leaves out is reset (a required field missing is 400); to "
               "change some fields, PATCH"};

static int contract(PGconn *db, struct put_patch_client *c, struct put_patch_contract *p, char *err,
                    size_t errlen)
{
	if (pp_seed_on(db, CONTRACT_ID, ADA, err, errlen) < 0)
		return -1;
	for (int i = 0; i < PUT_PATCH_CONTRACT_ROWS; i++) {
		const struct contract_req *q = &CONTRACT_REQS[i];
		struct put_patch_contract_row *row = &p->rows[i];
		struct put_patch_response rs;
		char before[65], after[65];
		row->what = q->what;
		row->want = q->want;
		row->want_change = q->want_change;
		if (pp_row_on(db, CONTRACT_ID, before, NULL, 0, err, errlen) < 0 ||
		    call(c, CONTRACT_ID, q->method, q->ctype, NULL, q->body, &rs, err, errlen) < 0 ||
		    pp_row_on(db, CONTRACT_ID, after, NULL, 0, err, errlen) < 0)
			return -1;
		row->got = rs.status;
		row->changed = strcmp(before, after) != 0;
		one_line(row->body, sizeof(row->body), rs.body);
		snprintf(row->accept_patch, sizeof(row->accept_patch), "%s", rs.accept_patch);
		p->nrows = i + 1;
	}
	return 0;
}

int put_patch_phase_contract(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct put_patch_config *cfg = cfgv;
	struct put_patch_result *r = result;
	memset(&r->contract, 0, sizeof(r->contract));
	struct put_patch_api *api = pp_phase_api(cfg, false, err, errlen);
	struct put_patch_client *c = api ? put_patch_client_new(put_patch_api_port(api), err, errlen) : NULL;
	PGconn *db = c ? pg_connect(cfg->pg_url, err, errlen) : NULL;
	int ret = db ? contract(db, c, &r->contract, err, errlen) : -1;
	PQfinish(db);
	put_patch_client_free(c);
	put_patch_api_stop(api);
	return ret < 0 ? pp_lost(cfg, r, err, errlen) : 0;
}

/* ---- phase 3: two editors ---- */

#define A_EMAIL "ada@lovelace.org"
#define B_NAME  "Augusta Ada King"

/* body (a user as GET answered it) with field set to value, as a new string; NULL on bad JSON */
static char *edit(const char *body, const char *field, const char *value)
{
	json_t *doc = json_loads(body, 0, NULL);
	if (!json_is_object(doc) || json_object_set_new(doc, field, json_string(value)) < 0) {
		json_decref(doc);
		return NULL;
	}
	char *text = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return text;
}

/* A PUT of body with one field changed; rs gets the answer. */
static int put_edit(struct put_patch_client *c, long long id, const struct put_patch_response *read,
                    const char *field, const char *value, bool if_match, struct put_patch_response *rs,
                    char *err, size_t errlen)
{
	char *body = edit(read->body, field, value);
	if (!body) {
		snprintf(err, errlen, "GET answered %d with a body that is not a user", read->status);
		return -1;
	}
	int ret = call(c, id, "PUT", "application/json", if_match ? read->etag : NULL, body, rs, err, errlen);
	free(body);
	return ret;
}

/* Both read, then A writes the email and B the name, each from its own copy. */
static int story(PGconn *db, struct put_patch_client *c, int which, struct put_patch_editors_row *row,
                 char *err, size_t errlen)
{
	long long id = EDITORS_ID + which;
	struct put_patch_response ra, rb, wa, wb;
	if (pp_seed_on(db, id, ADA, err, errlen) < 0 ||
	    call(c, id, "GET", NULL, NULL, NULL, &ra, err, errlen) < 0 ||
	    call(c, id, "GET", NULL, NULL, NULL, &rb, err, errlen) < 0)
		return -1;
	int rc;
	if (which == PP_EDIT_PATCH)
		rc = call(c, id, "PATCH", PP_MERGE_PATCH, NULL, "{\"email\":\"" A_EMAIL "\"}", &wa, err,
		          errlen) |
		     call(c, id, "PATCH", PP_MERGE_PATCH, NULL, "{\"name\":\"" B_NAME "\"}", &wb, err,
		          errlen);
	else
		rc = put_edit(c, id, &ra, "email", A_EMAIL, which == PP_EDIT_IF_MATCH, &wa, err, errlen) |
		     put_edit(c, id, &rb, "name", B_NAME, which == PP_EDIT_IF_MATCH, &wb, err, errlen);
	if (rc < 0)
		return -1;
	const char *verb = which == PP_EDIT_PATCH ? "PATCH" : "PUT";
	row->a_status = wa.status;
	snprintf(row->a, sizeof(row->a), "%s %d", verb, wa.status);
	snprintf(row->b, sizeof(row->b), "%s %d", verb, wb.status);
	if (which == PP_EDIT_IF_MATCH && wb.status == PP_STATUS_PRECONDITION_FAILED) {
		/* B's copy is stale: read again, apply its change to the fresh copy, send the new ETag */
		if (call(c, id, "GET", NULL, NULL, NULL, &rb, err, errlen) < 0 ||
		    put_edit(c, id, &rb, "name", B_NAME, true, &wb, err, errlen) < 0)
			return -1;
		snprintf(row->b, sizeof(row->b), "PUT %d, GET, PUT %d", PP_STATUS_PRECONDITION_FAILED,
		         wb.status);
	}
	row->b_status = wb.status;
	char digest[65], rep[PUT_PATCH_BODY_LEN];
	if (pp_row_on(db, id, digest, rep, sizeof(rep), err, errlen) < 0)
		return -1;
	json_t *doc = json_loads(rep, 0, NULL);
	const char *name = json_string_value(json_object_get(doc, "name"));
	const char *email = json_string_value(json_object_get(doc, "email"));
	snprintf(row->name, sizeof(row->name), "%s", name ? name : "?");
	snprintf(row->email, sizeof(row->email), "%s", email ? email : "?");
	row->a_kept = email && strcmp(email, A_EMAIL) == 0;
	row->b_kept = name && strcmp(name, B_NAME) == 0;
	json_decref(doc);
	return 0;
}

static const char *const STORY_NAMES[PUT_PATCH_EDITOR_ROWS] = {
        [PP_EDIT_BLIND] = "PUT, no precondition",
        [PP_EDIT_IF_MATCH] = "PUT with If-Match",
        [PP_EDIT_PATCH] = "merge PATCH, no precondition",
};

/* --predict: which change the blind story's final row kept; the answer's index */
static double q_editors_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct put_patch_editors *e = &((const struct put_patch_result *)result)->editors;
	if (e->nrows <= PP_EDIT_BLIND)
		return NAN;
	const struct put_patch_editors_row *b = &e->rows[PP_EDIT_BLIND];
	return b->a_kept && b->b_kept ? 0 : b->b_kept ? 1 : b->a_kept ? 2 : NAN;
}

const struct lab_question pp_q_editors = {
        .text = "A and B GET the same user. A PUTs it back with a new email, then B with a new name; no "
                "If-Match. What does the row keep?",
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"both changes", "B's name only: A's email is lost", "A's email only: B's name is lost"},
        .measured = q_editors_measured,
        .why = "B's copy still had the old email and PUT replaces the whole user: the last write wins, "
               "though A was told 200; If-Match would have answered B 412"};

/* The strict API: a PUT without If-Match. */
static int strict(const struct put_patch_config *cfg, PGconn *db, struct put_patch_editors *e, char *err,
                  size_t errlen)
{
	long long id = EDITORS_ID + PUT_PATCH_EDITOR_ROWS;
	char before[65], after[65];
	struct put_patch_response rs;
	struct put_patch_api *api = pp_phase_api(cfg, true, err, errlen);
	struct put_patch_client *c = api ? put_patch_client_new(put_patch_api_port(api), err, errlen) : NULL;
	int ret = c && pp_seed_on(db, id, ADA, err, errlen) == 0 &&
	                          pp_row_on(db, id, before, NULL, 0, err, errlen) == 0 &&
	                          call(c, id, "PUT", "application/json", NULL, ADA_PUT, &rs, err, errlen) ==
	                                  0 &&
	                          pp_row_on(db, id, after, NULL, 0, err, errlen) == 0
	                  ? 0
	                  : -1;
	if (ret == 0) {
		e->no_if_match_status = rs.status;
		one_line(e->no_if_match_body, sizeof(e->no_if_match_body), rs.body);
		e->no_if_match_changed = strcmp(before, after) != 0;
	}
	put_patch_client_free(c);
	put_patch_api_stop(api);
	return ret;
}

int put_patch_phase_editors(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct put_patch_config *cfg = cfgv;
	struct put_patch_result *r = result;
	struct put_patch_editors *e = &r->editors;
	memset(e, 0, sizeof(*e));
	struct put_patch_api *api = pp_phase_api(cfg, false, err, errlen);
	struct put_patch_client *c = api ? put_patch_client_new(put_patch_api_port(api), err, errlen) : NULL;
	PGconn *db = c ? pg_connect(cfg->pg_url, err, errlen) : NULL;
	int ret = db ? 0 : -1;
	for (int i = 0; ret == 0 && i < PUT_PATCH_EDITOR_ROWS; i++) {
		e->rows[i].what = STORY_NAMES[i];
		ret = story(db, c, i, &e->rows[i], err, errlen);
		e->nrows = ret == 0 ? i + 1 : i;
	}
	put_patch_client_free(c);
	put_patch_api_stop(api);
	if (ret == 0)
		ret = strict(cfg, db, e, err, errlen);
	PQfinish(db);
	return ret < 0 ? pp_lost(cfg, r, err, errlen) : 0;
}
