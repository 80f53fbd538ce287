/*
 * internal.h — what the files of lab-versioning share and nobody else uses:
 *
 *   api.c         the API: routes, negotiation by path, header and query, the two representations,
 *                 deprecation headers, the v1 callers' count, start and stop
 *   cache.c       nginx with proxy_cache in front of it (common/child.h), its config and its log
 *   client.c      the lab's HTTP client (keep-alive, raw sockets) and the v1 and v2 readers
 *   phases.c      the three phases
 *   versioning.c  config, schema and rows, the run and the judge
 */
#ifndef LAB_VERSIONING_INTERNAL_H
#define LAB_VERSIONING_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "versioning.h"

#define SCHEMA "lab_versioning"
/* phase 1, the four rows of phase 2, phase 3: each on users no other has asked for (a cold cache) */
#define BLOCKS        6
#define BLOCK_DIRECT  0
#define BLOCK_ROWS    1
#define BLOCK_CLIENTS 5
/* the lab's clients in phases 1 and 2 */
#define LAB_AGENT "lab-versioning/1.0"

struct user_row {
	long id;
	char given[32], family[32], email[96];
	long cents;
};

struct versioning_env {
	struct versioning_api *api;         /* Vary: Accept, as it should be */
	struct versioning_api *api_no_vary; /* the same without it, under /no-vary/ on the cache */
	struct versioning_cache *cache;
	struct user_row *rows; /* every user, by id - 1 */
	int nrows;
};

/* ---- api.c ---- */

/* a User-Agent is counted by its first this many bytes */
#define AGENT_LEN 64

struct evhttp_request;

/* What a request to a users route asks for: which user, in which version, chosen how. */
struct vers_request {
	enum versioning_approach approach;
	int version;               /* 1 or 2 */
	long id;                   /* 1..10^12 */
	bool vary;                 /* the representation was chosen by Accept */
	char content_type[64];     /* of the answer */
	char agent[AGENT_LEN + 1]; /* User-Agent, printable ("?" for anything else) or "(none)" */
};

/*
 * The request to /v1/users/{id}, /v2/users/{id} (path_version 1 or 2) or /users/{id} (0: then
 * ?version= when given, else Accept), as those routes read it once the method was allowed:
 * 0, or the status to answer with err (400 bad User-Agent, Accept or ?version=, 404 not a user
 * id, 406 no version Accept allows).
 */
int versioning_parse_request(struct evhttp_request *req, int path_version, struct vers_request *r, char *err,
                             size_t errlen);

/* ---- client.c ---- */

struct http_client;

struct vclient {
	struct http_client *http; /* NULL until the first request; kept alive between requests */
	int port;
};

void vclient_init(struct vclient *c, int port);
/*
 * GET target with Accept (NULL: none) and User-Agent agent, on common/http_client.h (which
 * reconnects when a kept-alive connection was closed). -1 and err when no response came.
 */
int vclient_get(struct vclient *c, const char *target, const char *accept, const char *agent,
                struct versioning_response *rs, char *err, size_t errlen);
void vclient_close(struct vclient *c);

/*
 * A client's reader of version v: parses body as a user of that version (tolerant: unknown
 * fields ignored; strict: refused) and, when row is not NULL, checks its values against it.
 */
bool vers_reads(const char *body, int version, bool strict, const struct user_row *row);

/* The URL (and the Accept header, NULL for none) a client of approach asks version v of user id with. */
void vers_target(enum versioning_approach a, int version, long id, char *out, size_t outlen,
                 const char **accept);

/* ---- versioning.c ---- */

/* User i (0-based) of block b. */
long vers_user_id(const struct versioning_config *cfg, int block, int i);
const struct user_row *vers_row(const struct versioning_env *env, long id);
/* Fills env->rows from PostgreSQL (what the readers check the bodies against). */
int vers_load_rows(const struct versioning_config *cfg, struct versioning_env *env, char *err, size_t errlen);
void vers_progress(const struct versioning_config *cfg, const char *what, double done);

/* ---- phases.c ---- */

int vers_phase_direct(const void *cfg, void *result, char *err, size_t errlen);
int vers_phase_cache(const void *cfg, void *result, char *err, size_t errlen);
int vers_phase_deprecation(const void *cfg, void *result, char *err, size_t errlen);
/* the question --predict asks before each */
extern const struct lab_question vers_q_direct, vers_q_cache, vers_q_deprecation;

#endif
