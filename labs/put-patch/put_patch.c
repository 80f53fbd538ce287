/*
 * put_patch.c — lab-put-patch's experiment as a whole: its config, the schema, the reads of a
 * stored row, the run over the four phases (phases.c, race.c) and the judge that decides from
 * their numbers. The API is in api.c and user.c, the patch formats in patch.c, the client in
 * client.c (internal.h says which file holds what). The telling is in main.c; nothing here prints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"

/* phase 1: once (the request as meant), twice (one retry), five times (a client that retries hard) */
const int put_patch_send_counts[PUT_PATCH_SEND_COUNTS] = {1, 2, 5};

void put_patch_config_default(struct put_patch_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	/* 4: the race's clients contend on one row lock, more connections would only wait on it */
	cfg->pool_size = 4;
	cfg->pool_min_idle = 2;
	cfg->acquire_timeout_ms = 2000;
	/* off: the lab's phases show the blind writes that a strict API refuses; phase 3 starts a
	 * strict one for the 428 */
	cfg->require_if_match = false;
	/* 64 KiB: a user is under 1 KiB; a patch document a few hundred bytes */
	cfg->max_body = 64 * 1024;
	/* the 8 x 200; --quick keeps the clients (the contention) and cuts the rounds */
	cfg->race_clients = 8;
	cfg->race_rounds = quick ? 30 : 200;
}

int put_patch_setup(const struct put_patch_config *cfg, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	if (pg_schema_create(conn, SCHEMA, err, errlen) < 0)
		goto out;
	if (pg_exec(conn,
	            "CREATE TABLE " SCHEMA ".users ("
	            " id bigint PRIMARY KEY,"
	            " name text NOT NULL,"
	            " email text NOT NULL,"
	            " bio text,"
	            " tags jsonb NOT NULL CHECK (jsonb_typeof(tags) = 'array'),"
	            " visits bigint NOT NULL CHECK (visits >= 0),"
	            " counters jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(counters) = 'object'));"
	            /* the representation: what GET answers, what the digest and the ETag are of */
	            "CREATE FUNCTION " SCHEMA ".rep(u " SCHEMA ".users) RETURNS jsonb LANGUAGE sql STABLE AS"
	            " $$ SELECT jsonb_strip_nulls(jsonb_build_object('id', u.id, 'name', u.name, 'email',"
	            " u.email, 'bio', u.bio, 'tags', u.tags, 'visits', u.visits, 'counters', u.counters)) $$;"
	            "CREATE FUNCTION " SCHEMA ".digest(u " SCHEMA
	            ".users) RETURNS text LANGUAGE sql STABLE AS"
	            " $$ SELECT encode(sha256(convert_to(" SCHEMA ".rep(u)::text, 'UTF8')), 'hex') $$;"
	            "CREATE FUNCTION " SCHEMA ".etag(u " SCHEMA ".users) RETURNS text LANGUAGE sql STABLE AS"
	            " $$ SELECT '\"' || left(" SCHEMA ".digest(u), 16) || '\"' $$",
	            err, errlen) < 0)
		goto out;
	ret = 0;
out:
	PQfinish(conn);
	return ret;
}

int put_patch_teardown(const struct put_patch_config *cfg, char *err, size_t errlen)
{
	return pg_url_schema_drop(cfg->pg_url, SCHEMA, err, errlen);
}

int pp_seed_on(PGconn *conn, long long id, const char *user_json, char *err, size_t errlen)
{
	char ids[24];
	snprintf(ids, sizeof(ids), "%lld", id);
	const char *p[] = {ids, user_json};
	PGresult *res = pg_query(
	        conn,
	        "INSERT INTO " SCHEMA ".users (id, name, email, bio, tags, visits, counters)"
	        " SELECT $1::bigint, d->>'name', d->>'email', d->>'bio', d->'tags',"
	        " (d->>'visits')::bigint, coalesce(d->'counters', '{}')"
	        " FROM (SELECT $2::jsonb AS d) s ON CONFLICT (id) DO UPDATE SET"
	        " name = excluded.name, email = excluded.email, bio = excluded.bio,"
	        " tags = excluded.tags, visits = excluded.visits, counters = excluded.counters RETURNING id",
	        2, p, err, errlen);
	PQclear(res);
	return res ? 0 : -1;
}

int put_patch_seed(const struct put_patch_config *cfg, long long id, const char *user_json, char *err,
                   size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	int ret = conn ? pp_seed_on(conn, id, user_json, err, errlen) : -1;
	PQfinish(conn);
	return ret;
}

int pp_row_on(PGconn *conn, long long id, char digest[65], char *rep, size_t replen, char *err, size_t errlen)
{
	char ids[24];
	snprintf(ids, sizeof(ids), "%lld", id);
	const char *p[] = {ids};
	PGresult *res =
	        pg_query(conn, "SELECT " SQL_DIGEST ", " SQL_REP " FROM " SCHEMA ".users u WHERE id = $1", 1,
	                 p, err, errlen);
	if (res) {
		bool found = PQntuples(res) == 1;
		snprintf(digest, 65, "%s", found ? PQgetvalue(res, 0, 0) : "");
		if (rep)
			snprintf(rep, replen, "%s", found ? PQgetvalue(res, 0, 1) : "");
	}
	PQclear(res);
	return res ? 0 : -1;
}

int put_patch_row(const struct put_patch_config *cfg, long long id, char digest[65], char *rep, size_t replen,
                  char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	int ret = conn ? pp_row_on(conn, id, digest, rep, replen, err, errlen) : -1;
	PQfinish(conn);
	return ret;
}

int pp_lost(const struct put_patch_config *cfg, struct put_patch_result *r, char *err, size_t errlen)
{
	if (r->lost_pg || lab_interrupted())
		return -1;
	char said[LAB_ERRLEN];
	PGconn *conn = pg_connect(cfg->pg_url, said, sizeof(said));
	if (!conn) {
		r->lost_pg = true;
		snprintf(err, errlen, "%s", said);
		return -1;
	}
	PQfinish(conn);
	return -1;
}

bool put_patch_retry_idempotent(const struct put_patch_retry_row *r)
{
	for (int i = 1; i < PUT_PATCH_SEND_COUNTS; i++)
		if (!r->after[i].digest[0] || strcmp(r->after[i].digest, r->after[0].digest) != 0)
			return false;
	return r->after[0].digest[0] != '\0';
}

/* The phases, in the order main.c tells them, each with the question --predict asks before it. */
static const struct lab_phase_def PHASES[PUT_PATCH_PHASES] = {
        {"retries", put_patch_phase_retries, &pp_q_retries},
        {"contract", put_patch_phase_contract, &pp_q_contract},
        {"editors", put_patch_phase_editors, &pp_q_editors},
        {"race", put_patch_phase_race, &pp_q_race},
};

int put_patch_run(const struct put_patch_config *cfg, struct put_patch_result *result, char *err,
                  size_t errlen)
{
	memset(result, 0, sizeof(*result));
	if (put_patch_setup(cfg, err, errlen) < 0)
		return pp_lost(cfg, result, err, errlen);
	int ret = lab_phases_walk(PHASES, PUT_PATCH_PHASES, cfg, result, &cfg->hooks, err, errlen);
	/* Ctrl-C: common/lab.c's guard drops the schema; a teardown of ours would only race it */
	if (ret < 0 && lab_interrupted())
		return -1;
	char terr[LAB_ERRLEN];
	if (put_patch_teardown(cfg, terr, sizeof(terr)) < 0 && ret == 0) {
		snprintf(err, errlen, "teardown: %s", terr);
		return pp_lost(cfg, result, err, errlen);
	}
	return ret;
}

/* ---- the judge ---- */

/*
 * Phase 1, idempotent: PUT and merge-patch replace leave the same stored row (the same SHA-256,
 * computed by PostgreSQL) after 1, 2 and 5 sends: RFC 9110's definition, the effect of n >= 1
 * identical requests is the effect of one. Not idempotent: JSON Patch add to /tags/- and the
 * increment grow by exactly one per send, n after n sends; fewer would mean a send was lost,
 * more that the lab counted wrong.
 */
#define GROWTH_PER_SEND 1
/*
 * Phase 4: blind read-modify-write PUT loses at least one increment. How many depends on the
 * scheduler (it varies from run to run); that 8 clients on one row lose some does not, and one
 * lost increment is a lost update: the claim needs no more.
 */
#define MIN_LOST_BLIND 1
/* With If-Match (and the re-read after 412) and with PATCH of the client's own field: none. A
 * precondition that loses a few is as broken as none; so is a server-side merge. */
#define MAX_LOST_SAFE 0
/* Every request of the race answered 2xx, 412 (If-Match) or 200 after a re-read: any other answer
 * (a 500, a timeout) would make the counts say something else than lost updates. */
#define MAX_OTHER 0

static bool grows(const struct put_patch_retry_row *r, bool tags)
{
	for (int i = 0; i < PUT_PATCH_SEND_COUNTS; i++) {
		long long want = (tags ? r->base_tags : r->base_visits) + GROWTH_PER_SEND * r->after[i].n;
		if ((tags ? r->after[i].tags : r->after[i].visits) != want)
			return false;
	}
	return true;
}

/* every send of the row answered 200: a refused request leaves the row as seeded, which would
 * look idempotent while showing nothing */
static bool all_applied(const struct put_patch_retry_row *r)
{
	for (int i = 0; i < PUT_PATCH_SEND_COUNTS; i++)
		for (int k = 0; k < r->after[i].n; k++)
			if (r->after[i].status[k] != 200)
				return false;
	return true;
}

static bool retries_disagree(const struct put_patch_retries *p, char *why, size_t len)
{
	const struct put_patch_retry_row *put = &p->rows[PP_RETRY_PUT], *merge = &p->rows[PP_RETRY_MERGE];
	const struct put_patch_retry_row *add = &p->rows[PP_RETRY_ADD], *inc = &p->rows[PP_RETRY_INCREMENT];
	if (p->nrows != PUT_PATCH_RETRY_ROWS)
		snprintf(why, len, "phase 1 ran %d requests of %d", p->nrows, PUT_PATCH_RETRY_ROWS);
	else if (!all_applied(put) || !all_applied(merge))
		snprintf(why, len, "a send was refused: PUT %s, merge patch %s",
		         all_applied(put) ? "all 200" : "not all 200",
		         all_applied(merge) ? "all 200" : "not all 200");
	else if (!put_patch_retry_idempotent(put) || !put_patch_retry_idempotent(merge))
		snprintf(why, len, "the stored digest changed with the sends: PUT %s, merge patch %s",
		         put_patch_retry_idempotent(put) ? "same" : "changed",
		         put_patch_retry_idempotent(merge) ? "same" : "changed");
	else if (!grows(add, true) || !grows(inc, false))
		snprintf(why, len,
		         "after 1, 2, 5 sends: %lld, %lld, %lld tags (from %lld), %lld, %lld, %lld visits "
		         "(from %lld)",
		         add->after[0].tags, add->after[1].tags, add->after[2].tags, add->base_tags,
		         inc->after[0].visits, inc->after[1].visits, inc->after[2].visits, inc->base_visits);
	else
		return false;
	return true;
}

static bool contract_disagrees(const struct put_patch_contract *c, char *why, size_t len)
{
	for (int i = 0; i < c->nrows; i++) {
		const struct put_patch_contract_row *row = &c->rows[i];
		if (row->got != row->want || row->changed != row->want_change) {
			snprintf(why, len, "%s: %d and the row %s, not %d and %s", row->what, row->got,
			         row->changed ? "changed" : "unchanged", row->want,
			         row->want_change ? "changed" : "unchanged");
			return true;
		}
	}
	if (c->nrows == 0) {
		snprintf(why, len, "phase 2 sent nothing");
		return true;
	}
	return false;
}

static bool editors_disagree(const struct put_patch_editors *e, char *why, size_t len)
{
	const struct put_patch_editors_row *b = &e->rows[PP_EDIT_BLIND], *m = &e->rows[PP_EDIT_IF_MATCH];
	const struct put_patch_editors_row *p = &e->rows[PP_EDIT_PATCH];
	if (e->nrows != PUT_PATCH_EDITOR_ROWS)
		snprintf(why, len, "phase 3 ran %d stories of %d", e->nrows, PUT_PATCH_EDITOR_ROWS);
	/* a change is lost only if its writer was told 200: a refused write is not a lost update */
	else if (b->a_status != 200 || b->b_status != 200 || m->a_status != 200 || m->b_status != 200 ||
	         p->a_status != 200 || p->b_status != 200)
		snprintf(why, len,
		         "editors' last writes answered: blind %d, %d; If-Match %d, %d; PATCH %d, %d",
		         b->a_status, b->b_status, m->a_status, m->b_status, p->a_status, p->b_status);
	else if (b->a_kept == b->b_kept)
		snprintf(why, len, "two blind PUTs kept %s change",
		         b->a_kept ? "both (no update lost)" : "neither");
	else if (!m->a_kept || !m->b_kept || !p->a_kept || !p->b_kept)
		snprintf(why, len, "an edit was lost with %s",
		         !m->a_kept || !m->b_kept ? "If-Match" : "PATCH");
	else if (e->no_if_match_status != PP_STATUS_PRECONDITION_REQUIRED || e->no_if_match_changed)
		snprintf(why, len, "a PUT without If-Match on the strict API got %d, not %d",
		         e->no_if_match_status, PP_STATUS_PRECONDITION_REQUIRED);
	else
		return false;
	return true;
}

/* One mode's counts are what the claim is about: every round acknowledged (lost counts writes the
 * clients were told happened), and no more in PostgreSQL than acknowledged (else the count is
 * wrong, not the API). */
static bool race_row_disagrees(const struct put_patch_race_row *row, char *why, size_t len)
{
	if (row->acked == 0 || row->acked != (uint64_t)row->clients * (uint64_t)row->rounds)
		snprintf(why, len, "%s: %llu of %d x %d rounds acknowledged", row->what,
		         (unsigned long long)row->acked, row->clients, row->rounds);
	else if (row->lost < 0)
		snprintf(why, len, "%s: PostgreSQL holds %llu increments, %llu acknowledged", row->what,
		         (unsigned long long)row->stored, (unsigned long long)row->acked);
	else
		return false;
	return true;
}

static bool race_disagrees(const struct put_patch_race *r, char *why, size_t len)
{
	const struct put_patch_race_row *b = &r->rows[PP_RACE_BLIND], *m = &r->rows[PP_RACE_IF_MATCH];
	const struct put_patch_race_row *p = &r->rows[PP_RACE_PATCH];
	uint64_t other = b->other + m->other + p->other;
	if (r->nrows != PUT_PATCH_RACE_ROWS)
		snprintf(why, len, "phase 4 ran %d modes of %d", r->nrows, PUT_PATCH_RACE_ROWS);
	else if (other > MAX_OTHER)
		snprintf(why, len, "the race got %llu unexpected answers", (unsigned long long)other);
	else if (race_row_disagrees(b, why, len) || race_row_disagrees(m, why, len) ||
	         race_row_disagrees(p, why, len))
		return true;
	else if (b->lost < MIN_LOST_BLIND)
		snprintf(why, len, "blind PUT lost %lld of %llu increments, fewer than %d",
		         (long long)b->lost, (unsigned long long)b->acked, MIN_LOST_BLIND);
	else if (m->lost > MAX_LOST_SAFE || p->lost > MAX_LOST_SAFE)
		snprintf(why, len, "lost %lld with If-Match and %lld with PATCH, more than %d",
		         (long long)m->lost, (long long)p->lost, MAX_LOST_SAFE);
	else
		return false;
	return true;
}

void put_patch_judge(const struct put_patch_result *r, struct lab_verdict *v)
{
	char why[320] = "";
	(void)(retries_disagree(&r->retries, why, sizeof(why)) ||
	       contract_disagrees(&r->contract, why, sizeof(why)) ||
	       editors_disagree(&r->editors, why, sizeof(why)) || race_disagrees(&r->race, why, sizeof(why)));
	const struct put_patch_retry_row *add = &r->retries.rows[PP_RETRY_ADD];
	const struct put_patch_race_row *b = &r->race.rows[PP_RACE_BLIND],
	                                *m = &r->race.rows[PP_RACE_IF_MATCH];
	const struct put_patch_race_row *p = &r->race.rows[PP_RACE_PATCH];
	lab_verdict_set(
	        v, why[0] == '\0',
	        "PUT and merge-patch replace are idempotent, JSON Patch add is not; blind PUT loses updates, "
	        "If-Match and server-side PATCH lose none",
	        "%s%sPUT and merge patch: one digest after 1, 2, 5 sends (%.6s, %.6s); add /tags/-: "
	        "+%lld, +%lld, +%lld tags; %d x %d read-modify-writes: blind PUT lost %lld of %llu, "
	        "If-Match lost %lld (%llu 412s re-read), PATCH lost %lld",
	        why, why[0] ? ". " : "", r->retries.rows[PP_RETRY_PUT].after[0].digest,
	        r->retries.rows[PP_RETRY_MERGE].after[0].digest, add->after[0].tags - add->base_tags,
	        add->after[1].tags - add->base_tags, add->after[2].tags - add->base_tags, b->clients,
	        b->rounds, (long long)b->lost, (unsigned long long)b->acked, (long long)m->lost,
	        (unsigned long long)m->conflicts, (long long)p->lost);
}
