/*
 * internal.h — what the files of lab-put-patch share and nobody else uses:
 *
 *   api.c        the API: /v1/users/{id} from parse to reply, every write one transaction
 *   request.c    a request's checks before the database (pure: pp_parse_request)
 *   user.c       what a valid user is, If-Match, the media types
 *   patch.c      JSON Merge Patch, JSON Patch, JSON Pointer (pure; patch.h)
 *   client.c     the blocking keep-alive client the phases and the race use
 *   phases.c     phases 1 to 3;  race.c  phase 4
 *   put_patch.c  config, schema, seed and row reads, the run and the judge
 */
#ifndef LAB_PUT_PATCH_INTERNAL_H
#define LAB_PUT_PATCH_INTERNAL_H

#include <event2/http.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "put_patch.h"

#define SCHEMA       "lab_put_patch"
#define USERS_PREFIX "/v1/users/"

/* The user's representation as stored: rep(u) is the JSON, digest(u) its SHA-256, etag(u) the ETag. */
#define SQL_REP    SCHEMA ".rep(u)::text"
#define SQL_DIGEST SCHEMA ".digest(u)"
#define SQL_ETAG   SCHEMA ".etag(u)"

#define ACCEPT_PATCH PP_MERGE_PATCH ", " PP_JSON_PATCH ", " PP_INCREMENT
/* HEAD with GET: every general-purpose server supports both (RFC 9110 section 9.1) */
#define ALLOW "GET, HEAD, PUT, PATCH"

/* What a request to /v1/users/{id} asks for. */
enum pp_kind { PP_KIND_GET, PP_KIND_PUT, PP_KIND_MERGE, PP_KIND_JSON, PP_KIND_INCREMENT };

/* A request as the handler reads it off evhttp, before any of it is checked. */
struct pp_request {
	enum evhttp_cmd_type method;
	const char *path;             /* as sent, without the query */
	const char *content_type;     /* NULL when absent */
	const char *content_type_bad; /* http_header_one's message: Content-Type twice, a control byte */
	const char *if_match;         /* NULL when absent */
	const char *if_match_bad;     /* the same for If-Match */
	const char *body;             /* body_len bytes (NULL only when they could not be read) */
	size_t body_len;
};

/* What the database part of a request needs, checked. */
struct pp_parsed {
	enum pp_kind kind;
	char id[24]; /* the path's id as sent (digits) */
	long long idv;
	json_t *body;   /* PUT: a valid user; PATCH: the patch (a JSON Patch already checked) */
	char *if_match; /* NULL when absent; valid syntax */
};

/*
 * request.c: everything a request must get right before the database is touched. 0 and *out
 * (pp_parsed_free it), or the status to answer (404, 405, 400, 413, 415, 428, 500) with err, and
 * *out then holds nothing. max_body and require_if_match are the API's config.
 */
int pp_parse_request(const struct pp_request *rq, int max_body, bool require_if_match, struct pp_parsed *out,
                     char *err, size_t errlen);
void pp_parsed_free(struct pp_parsed *p);

/*
 * The user after a write of kind with the checked body, the user being cur (as stored): PUT the
 * body, PATCH the patch applied (patch.h), an increment added to visits; then checked as a user
 * for id idv. 0 and *out (a new reference), or the status to answer (400, 409, 422; 500 out of
 * memory) with err and *out NULL.
 */
int pp_next_user(enum pp_kind kind, const json_t *body, long long idv, const json_t *cur, json_t **out,
                 char *err, size_t errlen);

/*
 * user.c: doc is a valid user for path id: an object with only the known fields, name, email,
 * tags and visits present, each of its type and size; id, when present, equal to the path's.
 * 0, or -1 and err naming the field.
 */
int pp_user_check(const json_t *doc, long long id, char *err, size_t errlen);

/*
 * If-Match (RFC 9110 section 13.1.1): "*" or a comma-separated list of entity tags. 1 when etag
 * (quoted, strong) is in it by the strong comparison (a weak W/"..." never matches) or the list
 * is "*"; 0 when not; -1 when the value is malformed. etag NULL: only the syntax is checked.
 */
int pp_if_match(const char *list, const char *etag);

/* The media type of a Content-Type value, lower-cased, without parameters, into out (cut to
 * outlen - 1 bytes). 0, or -1 when something other than ";parameters" follows the type. */
int pp_media_type(const char *value, char *out, size_t outlen);

/* put_patch.c, for the phases: a phase failed; is PostgreSQL still there? Sets r->lost_pg and
 * replaces err with what it said when it is not. Returns -1. */
int pp_lost(const struct put_patch_config *cfg, struct put_patch_result *r, char *err, size_t errlen);

/* put_patch_seed and put_patch_row on a connection of the caller's (a phase keeps one open) */
int pp_seed_on(PGconn *conn, long long id, const char *user_json, char *err, size_t errlen);
int pp_row_on(PGconn *conn, long long id, char digest[65], char *rep, size_t replen, char *err,
              size_t errlen);

/* phases.c, for race.c */
void pp_progress(const struct put_patch_config *cfg, const char *what, double done);
/* The lab's own API for a phase: cfg with require_if_match as given. */
struct put_patch_api *pp_phase_api(const struct put_patch_config *cfg, bool require_if_match, char *err,
                                   size_t errlen);

/* The questions --predict asks before each phase (beside the phase: phases.c, race.c) */
extern const struct lab_question pp_q_retries, pp_q_contract, pp_q_editors, pp_q_race;

#endif
