/*
 * walk.c — phase 3: a client walks a feed to its end, page by page, while two writers change it.
 *
 * The walked feed is a table of its own (`walk`, cfg->walk_rows rows, seeded as the feed is) so
 * that walking all of it by OFFSET stays cheap; it is made anew for each method, and both walks
 * face the same schedule of writes from the same seed. The writers are threads, each with its own
 * PostgreSQL connection: the inserter adds rows at the head (newer than every row), the deleter
 * removes rows the walker has passed (the row its cursor points at first) and rows it has not
 * reached, and records every id it deleted in `walk_deleted`. They write between the walker's
 * pages, driven by its progress (a round per page, odd rounds insert, even rounds delete behind,
 * every round may delete ahead), so each run interleaves the same way and the counts repeat.
 *
 * Counted at the end, against the rows that existed for the whole walk (present at the start and
 * not in walk_deleted, which the server filled): a duplicate is such a row returned again after it
 * had been returned (each extra return counts); a skip is such a row never returned. A row the
 * walker read twice and the deleter removed later is neither: it did not exist for the whole walk.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "rng.h"

/* a walk reads at most this many times the pages the feed holds: a walk that never ends is a bug */
#define MAX_PAGES_FACTOR 3
#define VICTIM_TRIES     32
#define MAX_VICTIMS      8

enum { INSERTER, DELETER, WRITERS };

static const char SQL_OFFSET[] =
        "SELECT id, created_at FROM " SCHEMA ".walk " FEED_ORDER " LIMIT $1 OFFSET $2";
static const char SQL_FIRST[] = "SELECT id, created_at FROM " SCHEMA ".walk " FEED_ORDER " LIMIT $1";
static const char SQL_AFTER[] =
        "SELECT id, created_at FROM " SCHEMA ".walk"
        " WHERE (created_at, id) < ($2::timestamptz, $3::bigint) " FEED_ORDER " LIMIT $1";
static const char SQL_INSERT[] =
        "INSERT INTO " SCHEMA ".walk (created_at, author, body)"
        " SELECT (SELECT max(created_at) FROM " SCHEMA ".walk) + make_interval(secs => g),"
        " 0, 'a new post' FROM generate_series(1, $1::int) g";
static const char SQL_DELETE[] =
        "WITH d AS (DELETE FROM " SCHEMA ".walk WHERE id = ANY($1::bigint[]) RETURNING id)"
        " INSERT INTO " SCHEMA ".walk_deleted SELECT id FROM d";

struct round_plan {
	int insert, behind, ahead;
};

struct walk_ctx {
	const struct pagination_config *cfg;
	PGconn *conns[WRITERS];
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int round; /* the round the writers are asked for (1, 2, ...) */
	int done[WRITERS];
	bool stop;
	bool failed;
	char err[LAB_ERRLEN];
	struct round_plan plan; /* this round's */
	int progress;           /* rows of the initial order the walker has passed */
	int64_t last_id;        /* the last row it read */
	/* the feed as it was at the start */
	int64_t *order; /* ids in feed order */
	int n;
	int *index_of; /* id (1..n) -> its index in order */
	bool *gone;    /* by index: deleted by the deleter (its own; read after the walk) */
	uint64_t rng;  /* the deleter's choices */
	struct pagination_walk *w;
};

static void fail_round(struct walk_ctx *x, const char *what, const char *msg)
{
	pthread_mutex_lock(&x->mu);
	if (!x->failed)
		snprintf(x->err, sizeof(x->err), "%s: %s", what, msg);
	x->failed = true;
	pthread_mutex_unlock(&x->mu);
}

static void insert_round(struct walk_ctx *x, const struct round_plan *p)
{
	char n[16], err[256];
	snprintf(n, sizeof(n), "%d", p->insert);
	const char *params[] = {n};
	PGresult *res = PQexecParams(x->conns[INSERTER], SQL_INSERT, 1, NULL, params, NULL, NULL, 0);
	if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
		pg_message_line(err, sizeof(err),
		                res ? PQresultErrorMessage(res) : PQerrorMessage(x->conns[INSERTER]));
		fail_round(x, "the inserter", err);
	} else {
		x->w->inserted += atoll(PQcmdTuples(res));
	}
	PQclear(res);
}

/* A row not deleted yet at an index in [lo, hi), or -1. */
static int pick(struct walk_ctx *x, int lo, int hi)
{
	for (int t = 0; t < VICTIM_TRIES && lo < hi; t++) {
		int i = rng_between(&x->rng, lo, hi - 1);
		if (!x->gone[i])
			return i;
	}
	return -1;
}

static void add_victim(struct walk_ctx *x, int i, char *list, size_t len, int *count)
{
	if (i < 0 || x->gone[i])
		return;
	x->gone[i] = true;
	size_t used = strlen(list);
	snprintf(list + used, len - used, "%s%lld", *count ? "," : "", (long long)x->order[i]);
	(*count)++;
}

static void delete_round(struct walk_ctx *x, const struct round_plan *p, int progress, int64_t last_id)
{
	char list[MAX_VICTIMS * 24 + 4] = "{", err[256];
	int behind = 0, ahead = 0;
	if (p->behind > 0 && last_id >= 1 && last_id <= x->n && !x->gone[x->index_of[last_id]]) {
		/* the row the walker's cursor points at: keyset must not need it to exist */
		add_victim(x, x->index_of[last_id], list, sizeof(list), &behind);
		x->w->cursor_rows_deleted++;
	}
	while (behind < p->behind && behind < MAX_VICTIMS / 2) {
		int before = behind;
		add_victim(x, pick(x, 0, progress), list, sizeof(list), &behind);
		if (behind == before)
			break;
	}
	while (ahead < p->ahead && ahead < MAX_VICTIMS / 2) {
		int before = behind + ahead, n = before;
		add_victim(x, pick(x, progress + x->cfg->walk_page, x->n), list, sizeof(list), &n);
		if (n == before)
			break;
		ahead++;
	}
	if (behind + ahead == 0)
		return;
	strcat(list, "}");
	const char *params[] = {list};
	PGresult *res = PQexecParams(x->conns[DELETER], SQL_DELETE, 1, NULL, params, NULL, NULL, 0);
	if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
		pg_message_line(err, sizeof(err),
		                res ? PQresultErrorMessage(res) : PQerrorMessage(x->conns[DELETER]));
		fail_round(x, "the deleter", err);
	} else {
		x->w->deleted_behind += behind;
		x->w->deleted_ahead += ahead;
	}
	PQclear(res);
}

struct writer_arg {
	struct walk_ctx *x;
	int me;
};

static void *writer_main(void *arg)
{
	struct walk_ctx *x = ((struct writer_arg *)arg)->x;
	int me = ((struct writer_arg *)arg)->me;
	for (;;) {
		pthread_mutex_lock(&x->mu);
		while (!x->stop && x->round == x->done[me])
			pthread_cond_wait(&x->cv, &x->mu);
		if (x->stop) {
			pthread_mutex_unlock(&x->mu);
			return NULL;
		}
		int round = x->round, progress = x->progress;
		int64_t last_id = x->last_id;
		struct round_plan p = x->plan;
		pthread_mutex_unlock(&x->mu);
		if (me == INSERTER && p.insert > 0)
			insert_round(x, &p);
		if (me == DELETER)
			delete_round(x, &p, progress, last_id);
		pthread_mutex_lock(&x->mu);
		x->done[me] = round;
		pthread_cond_broadcast(&x->cv);
		pthread_mutex_unlock(&x->mu);
	}
}

/* Between two pages: the writers do one round and the walker waits for both. false if one failed. */
static bool writers_round(struct walk_ctx *x, uint64_t *plan_rng)
{
	pthread_mutex_lock(&x->mu);
	x->round++;
	/* odd rounds grow the head (OFFSET then serves rows again), even rounds shrink what is behind
	 * (OFFSET then jumps over rows): alternating, so neither cancels the other out */
	bool odd = x->round % 2 == 1;
	x->plan.insert = odd ? rng_between(plan_rng, 1, 3) : 0;
	x->plan.behind = odd ? 0 : rng_between(plan_rng, 1, 3);
	x->plan.ahead = rng_between(plan_rng, 0, 2);
	pthread_cond_broadcast(&x->cv);
	while (!x->failed && (x->done[INSERTER] < x->round || x->done[DELETER] < x->round))
		pthread_cond_wait(&x->cv, &x->mu);
	bool ok = !x->failed;
	pthread_mutex_unlock(&x->mu);
	return ok;
}

/* The walked feed anew, and its order at the start into x. */
static int walk_table(PGconn *conn, struct walk_ctx *x, char *err, size_t errlen)
{
	if (pg_exec(conn,
	            "SET client_min_messages = warning;"
	            "DROP TABLE IF EXISTS " SCHEMA ".walk, " SCHEMA ".walk_deleted;" FEED_DDL(
	                    "walk") ";"
	                            "CREATE TABLE " SCHEMA ".walk_deleted (id bigint NOT NULL)",
	            err, errlen) < 0 ||
	    pag_seed_table(conn, "walk", x->cfg->walk_rows, err, errlen) < 0)
		return -1;
	PGresult *res = pg_query(conn, "SELECT id FROM " SCHEMA ".walk " FEED_ORDER, 0, NULL, err, errlen);
	if (!res)
		return -1;
	x->n = PQntuples(res);
	x->order = calloc((size_t)x->n + 1, sizeof(*x->order));
	x->index_of = calloc((size_t)x->n + 1, sizeof(*x->index_of));
	x->gone = calloc((size_t)x->n + 1, sizeof(*x->gone));
	bool ok = x->order && x->index_of && x->gone;
	for (int i = 0; ok && i < x->n; i++) {
		x->order[i] = atoll(PQgetvalue(res, i, 0));
		ok = x->order[i] >= 1 && x->order[i] <= x->n;
		if (ok)
			x->index_of[x->order[i]] = i;
	}
	PQclear(res);
	if (!ok)
		snprintf(err, errlen, "out of memory, or the walked feed's ids are not 1..%d", x->n);
	return ok ? 0 : -1;
}

/* One page into seen; its last row's key into last_at/last_id. The rows it returned, or -1. */
static int read_page(PGconn *conn, struct walk_ctx *x, enum pagination_method m, int64_t offset,
                     char *last_at, size_t atlen, int64_t *last_id, int *seen, char *err, size_t errlen)
{
	char limit[16], off[24], id[24];
	snprintf(limit, sizeof(limit), "%d", x->cfg->walk_page);
	snprintf(off, sizeof(off), "%lld", (long long)offset);
	snprintf(id, sizeof(id), "%lld", (long long)*last_id);
	const char *po[] = {limit, off}, *pk[] = {limit, last_at, id};
	PGresult *res = m == PAGINATION_OFFSET ? pg_query(conn, SQL_OFFSET, 2, po, err, errlen)
	                : *last_id == 0        ? pg_query(conn, SQL_FIRST, 1, pk, err, errlen)
	                                       : pg_query(conn, SQL_AFTER, 3, pk, err, errlen);
	if (!res)
		return -1;
	int rows = PQntuples(res);
	struct pagination_walk *w = x->w;
	for (int i = 0; i < rows; i++) {
		int64_t rid = atoll(PQgetvalue(res, i, 0));
		w->rows_read++;
		if (rid >= 1 && rid <= x->n) {
			seen[rid]++;
			if (x->index_of[rid] + 1 > x->progress)
				x->progress = x->index_of[rid] + 1;
		}
		if (i == rows - 1) {
			*last_id = rid;
			snprintf(last_at, atlen, "%s", PQgetvalue(res, i, 1));
		}
	}
	PQclear(res);
	return rows;
}

/* The walk itself: pages until a short one, a round of writes between two. */
static int walk_pages(PGconn *conn, struct walk_ctx *x, enum pagination_method m, int *seen, char *err,
                      size_t errlen)
{
	char last_at[64] = "";
	int64_t last_id = 0, offset = 0;
	uint64_t plan_rng = rng_stream(x->cfg->seed, 0);
	int max_pages = MAX_PAGES_FACTOR * (x->n / x->cfg->walk_page + 2);
	for (;;) {
		if (lab_interrupted()) {
			snprintf(err, errlen, "interrupted");
			return -1;
		}
		int rows =
		        read_page(conn, x, m, offset, last_at, sizeof(last_at), &last_id, seen, err, errlen);
		if (rows < 0)
			return -1;
		x->w->pages++;
		if (rows < x->cfg->walk_page)
			return 0;
		if (x->w->pages >= max_pages) {
			snprintf(err, errlen, "the %s walk did not end after %d pages",
			         pagination_method_name(m), max_pages);
			return -1;
		}
		pag_progress(x->cfg, "walking under writes",
		             (m + (double)x->progress / x->n) / PAGINATION_METHODS);
		offset += rows;
		pthread_mutex_lock(&x->mu);
		x->last_id = last_id;
		pthread_mutex_unlock(&x->mu);
		if (!writers_round(x, &plan_rng)) {
			snprintf(err, errlen, "%s", x->err);
			return -1;
		}
	}
}

/* The rows that existed for the whole walk, those of them returned twice or more, and never. */
static int count_anomalies(PGconn *conn, struct walk_ctx *x, const int *seen, char *err, size_t errlen)
{
	PGresult *res = pg_query(conn, "SELECT id FROM " SCHEMA ".walk_deleted", 0, NULL, err, errlen);
	if (!res)
		return -1;
	bool *deleted = calloc((size_t)x->n + 1, sizeof(*deleted));
	if (!deleted) {
		PQclear(res);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		int64_t id = atoll(PQgetvalue(res, i, 0));
		if (id >= 1 && id <= x->n)
			deleted[id] = true;
	}
	PQclear(res);
	struct pagination_walk *w = x->w;
	for (int i = 0; i < x->n; i++) {
		int64_t id = x->order[i];
		if (deleted[id])
			continue;
		w->stable++;
		/* in feed order, which is the walk's: the first found is the first the walker met */
		if (seen[id] > 1) {
			w->duplicates += seen[id] - 1;
			if (!w->first_duplicate)
				w->first_duplicate = id;
		}
		if (!seen[id]) {
			w->skips++;
			if (!w->first_skip)
				w->first_skip = id;
		}
	}
	free(deleted);
	return 0;
}

static int walk_once(const struct pagination_config *cfg, PGconn *conn, PGconn *const *wconns,
                     enum pagination_method m, struct pagination_walk *w, char *err, size_t errlen)
{
	struct walk_ctx x = {.cfg = cfg, .w = w, .rng = rng_stream(cfg->seed, 1)};
	memset(w, 0, sizeof(*w));
	x.conns[INSERTER] = wconns[INSERTER];
	x.conns[DELETER] = wconns[DELETER];
	pthread_mutex_init(&x.mu, NULL);
	pthread_cond_init(&x.cv, NULL);
	pthread_t tids[WRITERS];
	struct writer_arg args[WRITERS] = {{&x, INSERTER}, {&x, DELETER}};
	int started = 0, ret = -1;
	int *seen = NULL;
	if (walk_table(conn, &x, err, errlen) < 0)
		goto out;
	if (!(seen = calloc((size_t)x.n + 1, sizeof(*seen)))) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (; started < WRITERS; started++)
		if (pthread_create(&tids[started], NULL, writer_main, &args[started]) != 0) {
			snprintf(err, errlen, "cannot start a writer thread");
			goto out;
		}
	ret = walk_pages(conn, &x, m, seen, err, errlen);
out:
	pthread_mutex_lock(&x.mu);
	x.stop = true;
	pthread_cond_broadcast(&x.cv);
	pthread_mutex_unlock(&x.mu);
	for (int i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	if (ret == 0)
		ret = count_anomalies(conn, &x, seen, err, errlen);
	free(seen);
	free(x.order);
	free(x.index_of);
	free(x.gone);
	pthread_cond_destroy(&x.cv);
	pthread_mutex_destroy(&x.mu);
	return ret;
}

int pagination_phase_walk(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct pagination_config *cfg = cfgv;
	struct pagination_result *r = result;
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	PGconn *w[WRITERS] = {conn ? pg_connect(cfg->pg_url, err, errlen) : NULL, NULL};
	w[DELETER] = w[INSERTER] ? pg_connect(cfg->pg_url, err, errlen) : NULL;
	int ret = -1;
	if (w[DELETER]) {
		ret = 0;
		for (int m = 0; m < PAGINATION_METHODS && ret == 0; m++)
			ret = walk_once(cfg, conn, w, (enum pagination_method)m, &r->walk[m], err, errlen);
	}
	for (int i = 0; i < WRITERS; i++)
		PQfinish(w[i]);
	PQfinish(conn);
	return ret < 0 && !lab_interrupted() ? pag_lost(cfg, r, err, errlen) : ret;
}

/* --predict: which walk served duplicates or skips under the writes (the answer's index) */
static double q_walk_given(const void *cfgv, int i)
{
	const struct pagination_config *cfg = cfgv;
	return i == 0 ? cfg->walk_rows : cfg->walk_page;
}

static double q_walk_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct pagination_walk *w = ((const struct pagination_result *)result)->walk;
	const struct pagination_walk *o = &w[PAGINATION_OFFSET], *k = &w[PAGINATION_KEYSET];
	if (o->pages == 0 || k->pages == 0)
		return NAN;
	bool off = o->duplicates + o->skips > 0, key = k->duplicates + k->skips > 0;
	return off ? (key ? 2 : 0) : (key ? 1 : 3);
}

const struct lab_question pag_q_walk = {
        .text = "A client walks {} rows in pages of {}, once by OFFSET and once by keyset, while "
                "between its pages rows are inserted at the head and deleted behind and ahead of it. "
                "Which walk returns a row twice or never?",
        .given = q_walk_given,
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"OFFSET", "keyset", "both", "neither"},
        .measured = q_walk_measured,
        .why = "OFFSET counts rows: one inserted ahead of the count shifts it back (a duplicate), one "
               "deleted behind shifts it forward (a skip); keyset resumes after its last row's key, "
               "whatever moved"};
