/*
 * n_plus_one_watch.c — lab-n-plus-one's detector: what the server ran within one unit of work,
 * counted by PostgreSQL itself (pg_stat_statements, diffed by queryid on an observer connection),
 * grouped by statement shape, and flagged when one shape repeats more than a threshold.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "n_plus_one_internal.h"
#include "pg.h"

/*
 * Reading pg_stat_statements with its texts costs the server a read of the whole texts file
 * (tens of ms with a few thousand entries); without them, about a millisecond. So the snapshots
 * are counts by queryid only, and a statement's text is fetched once, the first time its count
 * moves, and kept: it tells whether the shape is ours (it names the lab's schema) and names it.
 */
struct snap_entry {
	int64_t queryid;
	int64_t calls;
};

struct snapshot {
	struct snap_entry *e; /* by queryid, ascending */
	int n;
};

struct shape_text {
	int64_t queryid;
	bool ours; /* the text names schema lab_n_plus_one: another lab's statements are not */
	char query[N_PLUS_ONE_QUERY_LEN];
};

struct n_plus_one_watch {
	PGconn *conn;
	struct snapshot before;
	struct shape_text *texts; /* every shape seen moving so far */
	int ntexts, texts_cap;
};

static void snapshot_free(struct snapshot *s)
{
	free(s->e);
	s->e = NULL;
	s->n = 0;
}

static int snapshot_take(PGconn *conn, struct snapshot *s, char *err, size_t errlen)
{
	/* one row per queryid: with pg_stat_statements.track = all a statement may hold a top-level
	 * and a nested entry */
	PGresult *res =
	        pg_query(conn,
	                 "SELECT queryid, sum(calls)::bigint FROM pg_stat_statements(false) "
	                 "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
	                 "AND queryid IS NOT NULL GROUP BY queryid ORDER BY queryid",
	                 0, NULL, err, errlen);
	if (!res)
		return -1;
	int n = PQntuples(res);
	struct snap_entry *e = calloc(n ? (size_t)n : 1, sizeof(*e));
	if (!e) {
		PQclear(res);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (int i = 0; i < n; i++) {
		e[i].queryid = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		e[i].calls = strtoll(PQgetvalue(res, i, 1), NULL, 10);
	}
	PQclear(res);
	snapshot_free(s);
	s->e = e;
	s->n = n;
	return 0;
}

static int cmp_queryid(const void *a, const void *b)
{
	int64_t x = ((const struct snap_entry *)a)->queryid, y = ((const struct snap_entry *)b)->queryid;
	return x < y ? -1 : x > y;
}

static const struct shape_text *text_of(const struct n_plus_one_watch *w, int64_t queryid)
{
	for (int i = 0; i < w->ntexts; i++)
		if (w->texts[i].queryid == queryid)
			return &w->texts[i];
	return NULL;
}

/* Fetches the texts of the listed queryids (ids: "{1,2}") into the watch's cache. */
static int texts_fetch(struct n_plus_one_watch *w, const char *ids, char *err, size_t errlen)
{
	const char *params[] = {ids};
	PGresult *res =
	        pg_query(w->conn,
	                 "SELECT queryid, min(query) FROM pg_stat_statements "
	                 "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
	                 "AND queryid = ANY($1::bigint[]) GROUP BY queryid",
	                 1, params, err, errlen);
	if (!res)
		return -1;
	int n = PQntuples(res);
	if (w->ntexts + n > w->texts_cap) {
		int cap = w->texts_cap ? w->texts_cap : 64;
		while (cap < w->ntexts + n)
			cap *= 2;
		struct shape_text *t = realloc(w->texts, sizeof(*t) * (size_t)cap);
		if (!t) {
			PQclear(res);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		w->texts = t;
		w->texts_cap = cap;
	}
	for (int i = 0; i < n; i++) {
		struct shape_text *t = &w->texts[w->ntexts++];
		t->queryid = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		/* one line: pg_stat_statements keeps a statement's newlines */
		pg_message_line(t->query, sizeof(t->query), PQgetvalue(res, i, 1));
		t->ours = strstr(PQgetvalue(res, i, 1), SCHEMA ".") != NULL;
	}
	PQclear(res);
	return 0;
}

struct n_plus_one_watch *n_plus_one_watch_open(const char *pg_url, char *err, size_t errlen)
{
	struct n_plus_one_watch *w = calloc(1, sizeof(*w));
	if (!w) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	w->conn = npo_connect(pg_url, NULL, NULL, err, errlen);
	if (!w->conn) {
		free(w);
		return NULL;
	}
	return w;
}

int n_plus_one_watch_begin(struct n_plus_one_watch *w, char *err, size_t errlen)
{
	return snapshot_take(w->conn, &w->before, err, errlen);
}

/* Keeps the N_PLUS_ONE_MAX_SHAPES most called shapes, most called first (ties: by queryid). */
static void unit_add(struct n_plus_one_unit *u, const struct shape_text *t, int64_t calls)
{
	u->statements += calls;
	u->shapes++;
	if (calls > u->threshold)
		u->flagged++;
	int at = u->nshapes;
	while (at > 0 && u->shape[at - 1].calls < calls)
		at--;
	if (at >= N_PLUS_ONE_MAX_SHAPES)
		return;
	int last = u->nshapes < N_PLUS_ONE_MAX_SHAPES ? u->nshapes : N_PLUS_ONE_MAX_SHAPES - 1;
	memmove(&u->shape[at + 1], &u->shape[at], sizeof(u->shape[0]) * (size_t)(last - at));
	u->shape[at].queryid = t->queryid;
	u->shape[at].calls = calls;
	snprintf(u->shape[at].query, sizeof(u->shape[at].query), "%s", t->query);
	if (u->nshapes < N_PLUS_ONE_MAX_SHAPES)
		u->nshapes++;
}

/* The calls of after.e[i] since the "before" snapshot. */
static int64_t calls_since(const struct n_plus_one_watch *w, const struct snap_entry *e)
{
	const struct snap_entry *was =
	        w->before.n ? bsearch(e, w->before.e, (size_t)w->before.n, sizeof(*e), cmp_queryid) : NULL;
	return e->calls - (was ? was->calls : 0);
}

int n_plus_one_watch_end(struct n_plus_one_watch *w, int threshold, struct n_plus_one_unit *unit, char *err,
                         size_t errlen)
{
	struct snapshot after = {0};
	struct npo_buf unknown = {0};
	int ret = -1;
	if (snapshot_take(w->conn, &after, err, errlen) < 0)
		return -1;
	/* the shapes that moved and whose text is not known yet: one query for all of them */
	for (int i = 0; i < after.n; i++)
		if (calls_since(w, &after.e[i]) > 0 && !text_of(w, after.e[i].queryid))
			npo_buf_printf(&unknown, "%s%lld", unknown.len ? "," : "{",
			               (long long)after.e[i].queryid);
	if (unknown.failed) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (unknown.len) {
		npo_buf_printf(&unknown, "}");
		if (unknown.failed || texts_fetch(w, unknown.p, err, errlen) < 0)
			goto out;
	}
	memset(unit, 0, sizeof(*unit));
	unit->threshold = threshold;
	for (int i = 0; i < after.n; i++) {
		int64_t calls = calls_since(w, &after.e[i]);
		const struct shape_text *t = calls > 0 ? text_of(w, after.e[i].queryid) : NULL;
		if (t && t->ours)
			unit_add(unit, t, calls);
	}
	ret = 0;
out:
	free(unknown.p);
	snapshot_free(&after);
	return ret;
}

void n_plus_one_watch_close(struct n_plus_one_watch *w)
{
	if (!w)
		return;
	snapshot_free(&w->before);
	free(w->texts);
	PQfinish(w->conn);
	free(w);
}
