/*
 * n_plus_one.c — the experiment of lab-n-plus-one (see n_plus_one.h for the phases). The telling
 * is in main.c; nothing here prints.
 *
 * Each load builds the same objects an ORM would (users, their orders, their addresses) as
 * canonical text records, so the three strategies can be compared by a digest, and counts what
 * it received twice over: the kernel's byte counter on the socket, and the protocol messages
 * reconstructed from the results. The statements it ran are counted a third way, by the server.
 */
#include "n_plus_one.h"

#include <arpa/inet.h>
#include <linux/tcp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "hist.h"
#include "pg.h"
#include "proxy.h"

#define SCHEMA N_PLUS_ONE_SCHEMA
/* pg_stat_statements entries whose text names our schema ('_' escaped: LIKE's wildcard) */
#define SCHEMA_LIKE "%lab\\_n\\_plus\\_one.%"

/* The statements, as an ORM would send them (parameters, never literals). */
#define SQL_USERS "SELECT id, name, email, bio FROM " SCHEMA ".users WHERE id <= $1 ORDER BY id"
#define SQL_ORDERS_OF_USER                                                                                   \
	"SELECT id, total_cents, status FROM " SCHEMA ".orders WHERE user_id = $1 ORDER BY id"
#define SQL_ORDERS_OF_USERS                                                                                  \
	"SELECT id, user_id, total_cents, status FROM " SCHEMA ".orders WHERE user_id = ANY($1::int[]) "     \
	"ORDER BY user_id, id"
#define SQL_ADDRESSES_OF_USERS                                                                               \
	"SELECT id, user_id, city FROM " SCHEMA                                                              \
	".addresses WHERE user_id = ANY($1::int[]) ORDER BY user_id, id"
#define SQL_JOIN                                                                                             \
	"SELECT u.id, u.name, u.email, u.bio, o.id, o.total_cents, o.status FROM " SCHEMA ".users u "        \
	"LEFT JOIN " SCHEMA ".orders o ON o.user_id = u.id WHERE u.id <= $1 ORDER BY u.id, o.id"
#define SQL_JOIN2                                                                                            \
	"SELECT u.id, u.name, u.email, u.bio, o.id, o.total_cents, o.status, a.id, a.city FROM " SCHEMA      \
	".users u LEFT JOIN " SCHEMA ".orders o ON o.user_id = u.id LEFT JOIN " SCHEMA ".addresses a "       \
	"ON a.user_id = u.id WHERE u.id <= $1 ORDER BY u.id, o.id, a.id"

static const char *const strategy_names[NPO_STRATEGIES] = {
        "N+1 loop", "JOIN", "batched (= ANY)", "JOIN orders + addresses", "batched, 3 statements"};

const char *n_plus_one_strategy_name(enum n_plus_one_strategy s)
{
	return s >= 0 && s < NPO_STRATEGIES ? strategy_names[s] : "?";
}

int64_t n_plus_one_predicted_statements(enum n_plus_one_strategy s, int users)
{
	switch (s) {
	case NPO_LOOP:
		return 1 + (int64_t)users;
	case NPO_JOIN:
	case NPO_JOIN2:
		return 1;
	case NPO_BATCHED:
		return 2;
	case NPO_BATCHED2:
		return 3;
	default:
		return 0;
	}
}

void n_plus_one_config_default(struct n_plus_one_config *cfg, bool quick)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pg_url = pg_url_default();
	cfg->seed = 1;
	/* 1,000 users in quick runs too: the same seed gives the same data, and the same digests */
	cfg->data_users = 1000;
	/* 100 users: the "101 queries" of the interview answer */
	cfg->users = 100;
	/* 0..20 orders a user, 10 on average: enough rows for the JOIN to repeat each user's columns,
	 * and about one user in 21 has none (a LEFT JOIN, not an inner one) */
	cfg->orders_max = 20;
	/* 1..4 addresses: the second has-many relation that multiplies the JOIN's rows */
	cfg->addresses_max = 4;
	/* a 200-byte profile blurb: a realistic wide column, ten times an order row */
	cfg->bio_bytes = 200;
	/* the best of 5 loads (3 quick): enough for one of them to run undisturbed on a busy machine */
	cfg->repeats = quick ? 3 : 5;
	/* the sizes; quick leaves out N = 1000, whose loop costs 2 s alone at 2 ms RTT */
	int sizes[] = {10, 100, 1000};
	cfg->nsizes = quick ? 2 : 3;
	memcpy(cfg->sizes, sizes, sizeof(sizes));
	/* no added delay (the proxy's own cost only), a LAN-ish 0.5 ms, a cross-zone 2 ms */
	int rtts[] = {0, 500, 2000};
	cfg->nrtts = 3;
	memcpy(cfg->rtts_us, rtts, sizeof(rtts));
	/* through the proxy, the best of as many loads as fit in 1 s (0.2 s quick), 2 to 15: a cheap
	 * load (the JOIN) is the one a busy machine disturbs most, and gets the most tries; the loop
	 * at N = 1000 and 2 ms waits out 2 s a load and gets 2 */
	cfg->net_repeats = N_PLUS_ONE_MAX_REPEATS;
	cfg->net_budget_us = quick ? 200000 : 1000000;
	/* phase 5 through the proxy: 2 ms and 100 Mbit/s, a modest cross-zone link */
	cfg->width_rtt_us = 2000;
	cfg->width_bandwidth = 12500000;
	/* more than 5 calls of one statement in one unit of work: a page of 10 users already trips it,
	 * and no correct load of a page repeats a statement that often */
	cfg->threshold = 5;
}

int n_plus_one_max_users(const struct n_plus_one_config *cfg)
{
	int max = cfg->users > cfg->data_users ? cfg->users : cfg->data_users;
	for (int i = 0; i < cfg->nsizes; i++)
		if (cfg->sizes[i] > max)
			max = cfg->sizes[i];
	return max;
}

/* ---- the data ---- */

/* splitmix64: a small, well-mixed generator, so --seed gives the same data on every machine */
static uint64_t next_random(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static int random_between(uint64_t *state, int lo, int hi)
{
	return lo + (int)(next_random(state) % (uint64_t)(hi - lo + 1));
}

/* A growing text buffer for COPY data. */
struct buf {
	char *p;
	size_t len, cap;
	bool failed;
};

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(struct buf *b, const char *fmt, ...)
{
	if (b->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = true;
			return;
		}
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 65536;
		while (cap < b->len + (size_t)n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->failed = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
}

/* COPY table FROM STDIN with the rows in b. */
static int copy_in(PGconn *conn, const char *sql, const struct buf *b, char *err, size_t errlen)
{
	PGresult *res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_COPY_IN) {
		pg_message_line(err, errlen, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
		PQclear(res);
		return -1;
	}
	PQclear(res);
	int ret = 0;
	if (PQputCopyData(conn, b->p, (int)b->len) != 1 || PQputCopyEnd(conn, NULL) != 1) {
		pg_conn_error(conn, err, errlen);
		ret = -1;
	}
	while ((res = PQgetResult(conn))) {
		if (ret == 0 && PQresultStatus(res) != PGRES_COMMAND_OK) {
			pg_message_line(err, errlen, PQresultErrorMessage(res));
			ret = -1;
		}
		PQclear(res);
	}
	return ret;
}

static const char *const statuses[] = {"paid", "shipped", "delivered", "refunded"};
static const char *const cities[] = {"Lisbon",  "Berlin", "Osaka", "Toronto",
                                     "Nairobi", "Lima",   "Oslo",  "Pune"};
static const char *const first_names[] = {"Ada", "Grace",    "Linus",  "Barbara",
                                          "Ken", "Margaret", "Edsger", "Frances"};

int n_plus_one_setup(const struct n_plus_one_config *cfg, char *err, size_t errlen)
{
	int users = n_plus_one_max_users(cfg);
	if (users < 1 || cfg->orders_max < 0 || cfg->addresses_max < 1 || cfg->bio_bytes < 1) {
		snprintf(err, errlen,
		         "bad configuration: users %d, orders 0..%d, addresses 1..%d, bio %d bytes", users,
		         cfg->orders_max, cfg->addresses_max, cfg->bio_bytes);
		return -1;
	}
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	struct buf ub = {0}, ob = {0}, ab = {0};
	int *order_owner = NULL;
	char *bio = NULL;
	int64_t calls;
	/* the lab's counts come from pg_stat_statements: say so now if it is missing */
	if (pg_statements_calls(conn, SCHEMA_LIKE, &calls, err, errlen) < 0)
		goto out;
	if (pg_schema_create(conn, SCHEMA, err, errlen) < 0)
		goto out;
	if (pg_exec(conn,
	            "CREATE TABLE " SCHEMA
	            ".users (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL, "
	            "bio text NOT NULL);"
	            "CREATE TABLE " SCHEMA
	            ".orders (id int PRIMARY KEY, user_id int NOT NULL REFERENCES " SCHEMA
	            ".users, total_cents int NOT NULL, status text NOT NULL);"
	            "CREATE TABLE " SCHEMA
	            ".addresses (id int PRIMARY KEY, user_id int NOT NULL REFERENCES " SCHEMA
	            ".users, city text NOT NULL)",
	            err, errlen) < 0)
		goto out;

	uint64_t rng = cfg->seed;
	bio = malloc((size_t)cfg->bio_bytes + 1);
	order_owner = malloc(sizeof(int) * (size_t)users * (size_t)(cfg->orders_max + 1));
	if (!bio || !order_owner) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	static const char blurb[] = "Reads the query log before the code. Likes short round trips. ";
	for (int i = 0; i < cfg->bio_bytes; i++)
		bio[i] = blurb[i % (sizeof(blurb) - 1)];
	bio[cfg->bio_bytes] = '\0';
	int norders = 0, address_id = 0;
	for (int u = 1; u <= users; u++) {
		buf_printf(&ub, "%d\t%s %c.\tuser%d@example.com\t%s\n", u,
		           first_names[random_between(&rng, 0, 7)], 'A' + random_between(&rng, 0, 25), u,
		           bio);
		int n = random_between(&rng, 0, cfg->orders_max);
		for (int k = 0; k < n; k++)
			order_owner[norders++] = u;
		int na = random_between(&rng, 1, cfg->addresses_max);
		for (int k = 0; k < na; k++)
			buf_printf(&ab, "%d\t%d\t%s\n", ++address_id, u, cities[random_between(&rng, 0, 7)]);
	}
	/* orders are placed over time by every user at once: shuffle their owners (Fisher-Yates), so
	 * one user's orders lie on many pages, as in a real table */
	for (int i = norders - 1; i > 0; i--) {
		int j = random_between(&rng, 0, i);
		int t = order_owner[i];
		order_owner[i] = order_owner[j];
		order_owner[j] = t;
	}
	for (int i = 0; i < norders; i++)
		buf_printf(&ob, "%d\t%d\t%d\t%s\n", i + 1, order_owner[i], random_between(&rng, 100, 50000),
		           statuses[random_between(&rng, 0, 3)]);
	if (ub.failed || ob.failed || ab.failed) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (copy_in(conn, "COPY " SCHEMA ".users FROM STDIN", &ub, err, errlen) < 0)
		goto out;
	if (norders && copy_in(conn, "COPY " SCHEMA ".orders FROM STDIN", &ob, err, errlen) < 0)
		goto out;
	if (copy_in(conn, "COPY " SCHEMA ".addresses FROM STDIN", &ab, err, errlen) < 0)
		goto out;
	/* the foreign-key indexes every ORM schema has: without them each query of the loop would scan */
	if (pg_exec(conn,
	            "CREATE INDEX ON " SCHEMA ".orders (user_id);"
	            "CREATE INDEX ON " SCHEMA ".addresses (user_id);"
	            "ANALYZE " SCHEMA ".users, " SCHEMA ".orders, " SCHEMA ".addresses",
	            err, errlen) < 0)
		goto out;
	ret = 0;
out:
	if (ret < 0) {
		/* leave nothing half-made behind; the first error is the one to report */
		char derr[256];
		pg_schema_drop(conn, SCHEMA, derr, sizeof(derr));
	}
	free(ub.p);
	free(ob.p);
	free(ab.p);
	free(order_owner);
	free(bio);
	PQfinish(conn);
	return ret;
}

int n_plus_one_teardown(const struct n_plus_one_config *cfg, char *err, size_t errlen)
{
	return pg_url_schema_drop(cfg->pg_url, SCHEMA, err, errlen);
}

int n_plus_one_data_count(const struct n_plus_one_config *cfg, int users, struct n_plus_one_data *out,
                          char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	char n[16];
	snprintf(n, sizeof(n), "%d", users);
	const char *params[] = {n};
	PGresult *res = pg_query(
	        conn,
	        "WITH per_user AS (SELECT u.id, (SELECT count(*) FROM " SCHEMA
	        ".orders o WHERE o.user_id = u.id) AS o,"
	        " (SELECT count(*) FROM " SCHEMA ".addresses a WHERE a.user_id = u.id) AS a FROM " SCHEMA
	        ".users u WHERE u.id <= $1) "
	        "SELECT count(*), coalesce(sum(o), 0), coalesce(sum(a), 0), count(*) FILTER (WHERE o = 0), "
	        "coalesce(sum(greatest(o, 1) * greatest(a, 1)), 0) FROM per_user",
	        1, params, err, errlen);
	int ret = -1;
	if (!res)
		goto out;
	if (PQntuples(res) != 1 || PQnfields(res) != 5) {
		snprintf(err, errlen, "counting the data: expected 1 row of 5 columns");
		goto out;
	}
	out->users = atoll(PQgetvalue(res, 0, 0));
	out->orders = atoll(PQgetvalue(res, 0, 1));
	out->addresses = atoll(PQgetvalue(res, 0, 2));
	out->users_without_orders = atoll(PQgetvalue(res, 0, 3));
	out->join2_rows = atoll(PQgetvalue(res, 0, 4));
	ret = 0;
out:
	PQclear(res);
	PQfinish(conn);
	return ret;
}

/* ---- the detector ---- */

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
	w->conn = pg_connect(pg_url, err, errlen);
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
	struct buf unknown = {0};
	int ret = -1;
	if (snapshot_take(w->conn, &after, err, errlen) < 0)
		return -1;
	/* the shapes that moved and whose text is not known yet: one query for all of them */
	for (int i = 0; i < after.n; i++)
		if (calls_since(w, &after.e[i]) > 0 && !text_of(w, after.e[i].queryid))
			buf_printf(&unknown, "%s%lld", unknown.len ? "," : "{",
			           (long long)after.e[i].queryid);
	if (unknown.failed) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (unknown.len) {
		buf_printf(&unknown, "}");
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

/* ---- one load ---- */

/* The objects one load builds, as canonical records, and what it cost. */
struct fetch {
	PGconn *conn;
	char **lines;
	size_t nlines, cap;
	int *user_ids;
	int nusers;
	int orders, addresses;
	int64_t statements, rows, protocol_bytes, repeated_bytes;
};

static void fetch_free(struct fetch *f)
{
	for (size_t i = 0; i < f->nlines; i++)
		free(f->lines[i]);
	free(f->lines);
	free(f->user_ids);
	memset(f, 0, sizeof(*f));
}

static int add_record(struct fetch *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int add_record(struct fetch *f, const char *fmt, ...)
{
	if (f->nlines == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 1024;
		char **l = realloc(f->lines, cap * sizeof(*l));
		if (!l)
			return -1;
		f->lines = l;
		f->cap = cap;
	}
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	f->lines[f->nlines++] = s;
	return 0;
}

/*
 * What the server sent for one PQexecParams, message by message (protocol 3.0): ParseComplete,
 * BindComplete, RowDescription, a DataRow per row, CommandComplete, ReadyForQuery. Each message
 * is a type byte and a 4-byte length, then its body.
 */
static int64_t result_wire_bytes(PGresult *res)
{
	int nf = PQnfields(res), nt = PQntuples(res);
	int64_t b = 5 + 5; /* ParseComplete, BindComplete */
	b += 1 + 4 + 2;    /* RowDescription: field count */
	for (int f = 0; f < nf; f++)
		b += (int64_t)strlen(PQfname(res, f)) + 1 +
		     18; /* name, table, column, type, size, mod, format */
	for (int r = 0; r < nt; r++) {
		b += 1 + 4 + 2; /* DataRow: column count */
		for (int f = 0; f < nf; f++)
			b += 4 + (PQgetisnull(res, r, f) ? 0 : PQgetlength(res, r, f));
	}
	b += 1 + 4 + (int64_t)strlen(PQcmdStatus(res)) + 1; /* CommandComplete "SELECT n" */
	b += 6;                                             /* ReadyForQuery */
	return b;
}

/* The bytes of the listed cells of row r as they crossed the wire (length word and value). */
static int64_t cells_bytes(const PGresult *res, int r, int from, int to)
{
	int64_t b = 0;
	for (int f = from; f <= to; f++)
		b += 4 + (PQgetisnull(res, r, f) ? 0 : PQgetlength(res, r, f));
	return b;
}

static PGresult *fetch_query(struct fetch *f, const char *sql, const char *param, char *err, size_t errlen)
{
	const char *params[] = {param};
	PGresult *res = pg_query(f->conn, sql, 1, params, err, errlen);
	if (!res)
		return NULL;
	f->statements++;
	f->rows += PQntuples(res);
	f->protocol_bytes += result_wire_bytes(res);
	return res;
}

static int fetch_users(struct fetch *f, int users, char *err, size_t errlen)
{
	char n[16];
	snprintf(n, sizeof(n), "%d", users);
	PGresult *res = fetch_query(f, SQL_USERS, n, err, errlen);
	if (!res)
		return -1;
	int nt = PQntuples(res);
	f->user_ids = malloc(sizeof(int) * (size_t)(nt ? nt : 1));
	if (!f->user_ids)
		goto oom;
	for (int r = 0; r < nt; r++) {
		f->user_ids[f->nusers++] = atoi(PQgetvalue(res, r, 0));
		if (add_record(f, "u|%s|%s|%s|%s", PQgetvalue(res, r, 0), PQgetvalue(res, r, 1),
		               PQgetvalue(res, r, 2), PQgetvalue(res, r, 3)) < 0)
			goto oom;
	}
	PQclear(res);
	return 0;
oom:
	PQclear(res);
	snprintf(err, errlen, "out of memory");
	return -1;
}

/* "{1,2,3}": the users' ids as one array parameter. NULL when out of memory. */
static char *id_array(const struct fetch *f)
{
	struct buf b = {0};
	buf_printf(&b, "{");
	for (int i = 0; i < f->nusers; i++)
		buf_printf(&b, "%s%d", i ? "," : "", f->user_ids[i]);
	buf_printf(&b, "}");
	if (b.failed) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

/* The ORM's lazy loading: for each user, user.orders runs its own query. */
static int load_loop(struct fetch *f, int users, char *err, size_t errlen)
{
	if (fetch_users(f, users, err, errlen) < 0)
		return -1;
	for (int i = 0; i < f->nusers; i++) {
		char id[16];
		snprintf(id, sizeof(id), "%d", f->user_ids[i]);
		PGresult *res = fetch_query(f, SQL_ORDERS_OF_USER, id, err, errlen);
		if (!res)
			return -1;
		for (int r = 0; r < PQntuples(res); r++) {
			f->orders++;
			if (add_record(f, "o|%s|%s|%s|%s", id, PQgetvalue(res, r, 0), PQgetvalue(res, r, 1),
			               PQgetvalue(res, r, 2)) < 0) {
				PQclear(res);
				snprintf(err, errlen, "out of memory");
				return -1;
			}
		}
		PQclear(res);
	}
	return 0;
}

/*
 * The JOINs: rows ordered by user, order, address. A user's columns come again on every row of
 * that user; with addresses, an order's columns come again for each address, and the addresses
 * again for each order. The objects are built from the first occurrence; the rest is counted
 * as repeated bytes.
 */
static int load_join(struct fetch *f, int users, bool addresses, char *err, size_t errlen)
{
	char n[16];
	snprintf(n, sizeof(n), "%d", users);
	PGresult *res = fetch_query(f, addresses ? SQL_JOIN2 : SQL_JOIN, n, err, errlen);
	if (!res)
		return -1;
	long last_user = -1, first_order = -2, last_order = -2;
	for (int r = 0; r < PQntuples(res); r++) {
		long uid = atol(PQgetvalue(res, r, 0));
		long oid = PQgetisnull(res, r, 4) ? -1 : atol(PQgetvalue(res, r, 4));
		bool new_user = uid != last_user;
		int rc = 0;
		if (new_user) {
			f->nusers++;
			rc |= add_record(f, "u|%s|%s|%s|%s", PQgetvalue(res, r, 0), PQgetvalue(res, r, 1),
			                 PQgetvalue(res, r, 2), PQgetvalue(res, r, 3));
			first_order = oid;
		} else {
			f->repeated_bytes += cells_bytes(res, r, 0, 3);
		}
		if (oid >= 0) {
			if (new_user || oid != last_order) {
				f->orders++;
				rc |= add_record(f, "o|%ld|%s|%s|%s", uid, PQgetvalue(res, r, 4),
				                 PQgetvalue(res, r, 5), PQgetvalue(res, r, 6));
			} else {
				f->repeated_bytes += cells_bytes(res, r, 4, 6);
			}
		}
		if (addresses && !PQgetisnull(res, r, 7)) {
			if (oid == first_order) {
				f->addresses++;
				rc |= add_record(f, "a|%ld|%s|%s", uid, PQgetvalue(res, r, 7),
				                 PQgetvalue(res, r, 8));
			} else {
				f->repeated_bytes += cells_bytes(res, r, 7, 8);
			}
		}
		last_user = uid;
		last_order = oid;
		if (rc < 0) {
			PQclear(res);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	PQclear(res);
	return 0;
}

/* prefetch_related / includes: the users, then every relation of all of them in one query each. */
static int load_batched(struct fetch *f, int users, bool addresses, char *err, size_t errlen)
{
	if (fetch_users(f, users, err, errlen) < 0)
		return -1;
	char *ids = id_array(f);
	if (!ids) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int ret = -1;
	PGresult *res = fetch_query(f, SQL_ORDERS_OF_USERS, ids, err, errlen);
	if (!res)
		goto out;
	for (int r = 0; r < PQntuples(res); r++) {
		f->orders++;
		if (add_record(f, "o|%s|%s|%s|%s", PQgetvalue(res, r, 1), PQgetvalue(res, r, 0),
		               PQgetvalue(res, r, 2), PQgetvalue(res, r, 3)) < 0)
			goto oom;
	}
	PQclear(res);
	res = NULL;
	if (addresses) {
		res = fetch_query(f, SQL_ADDRESSES_OF_USERS, ids, err, errlen);
		if (!res)
			goto out;
		for (int r = 0; r < PQntuples(res); r++) {
			f->addresses++;
			if (add_record(f, "a|%s|%s|%s", PQgetvalue(res, r, 1), PQgetvalue(res, r, 0),
			               PQgetvalue(res, r, 2)) < 0)
				goto oom;
		}
	}
	ret = 0;
	goto out;
oom:
	snprintf(err, errlen, "out of memory");
out:
	PQclear(res);
	free(ids);
	return ret;
}

static int cmp_line(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* FNV-1a 64 over the records, sorted, each ended by '\n': the same objects give the same digest
 * whatever order the strategy received them in. */
static uint64_t fetch_digest(struct fetch *f)
{
	qsort(f->lines, f->nlines, sizeof(f->lines[0]), cmp_line);
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < f->nlines; i++) {
		for (const unsigned char *p = (const unsigned char *)f->lines[i]; *p; p++)
			h = (h ^ *p) * 0x100000001b3ULL;
		h = (h ^ '\n') * 0x100000001b3ULL;
	}
	return h;
}

/* Bytes the kernel received on the connection's socket so far; -1 when it is not TCP. */
static int64_t socket_bytes_received(PGconn *conn)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	int fd = PQsocket(conn);
	memset(&ti, 0, sizeof(ti));
	if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
	    len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received))
		return -1;
	return (int64_t)ti.tcpi_bytes_received;
}

static int load_once(PGconn *conn, enum n_plus_one_strategy s, int users, struct fetch *f, uint64_t *wall_us,
                     int64_t *wire_bytes, char *err, size_t errlen)
{
	memset(f, 0, sizeof(*f));
	f->conn = conn;
	int64_t wire0 = socket_bytes_received(conn);
	uint64_t t0 = hist_now_us();
	int rc;
	switch (s) {
	case NPO_LOOP:
		rc = load_loop(f, users, err, errlen);
		break;
	case NPO_JOIN:
		rc = load_join(f, users, false, err, errlen);
		break;
	case NPO_BATCHED:
		rc = load_batched(f, users, false, err, errlen);
		break;
	case NPO_JOIN2:
		rc = load_join(f, users, true, err, errlen);
		break;
	case NPO_BATCHED2:
		rc = load_batched(f, users, true, err, errlen);
		break;
	default:
		snprintf(err, errlen, "no strategy %d", (int)s);
		rc = -1;
	}
	*wall_us = hist_now_us() - t0;
	int64_t wire1 = socket_bytes_received(conn);
	*wire_bytes = wire0 >= 0 && wire1 >= 0 ? wire1 - wire0 : -1;
	return rc;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The first loads of a series are counted by the server (and must agree); the rest are timed
 * only: a snapshot of pg_stat_statements costs the server a few ms, more than a cheap load */
#define COUNTED_LOADS 2

/* n_plus_one_measure, stopping early (after 2 loads at least) once the series took budget_us in
 * all, snapshots included; 0: no budget. out->repeats is the number of loads made. */
static int measure_budget(PGconn *conn, struct n_plus_one_watch *watch, enum n_plus_one_strategy s, int users,
                          int repeats, uint64_t budget_us, int threshold, struct n_plus_one_load *out,
                          char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (repeats < 1 || repeats > N_PLUS_ONE_MAX_REPEATS || users < 1) {
		snprintf(err, errlen, "bad measure: %d users, %d repeats (1 to %d)", users, repeats,
		         N_PLUS_ONE_MAX_REPEATS);
		return -1;
	}
	out->strategy = s;
	out->users = users;
	out->repeats = repeats;
	out->predicted = n_plus_one_predicted_statements(s, users);
	out->statements = -1;
	out->proxy_bytes = -1;
	uint64_t walls[N_PLUS_ONE_MAX_REPEATS], started = hist_now_us();
	for (int r = 0; r < repeats; r++) {
		struct fetch f;
		uint64_t wall;
		int64_t wire;
		struct n_plus_one_unit unit = {0};
		bool counted = watch && r < COUNTED_LOADS;
		if (counted && n_plus_one_watch_begin(watch, err, errlen) < 0)
			return -1;
		int rc = load_once(conn, s, users, &f, &wall, &wire, err, errlen);
		if (rc == 0 && counted && n_plus_one_watch_end(watch, threshold, &unit, err, errlen) < 0)
			rc = -1;
		if (rc < 0) {
			fetch_free(&f);
			return -1;
		}
		uint64_t digest = fetch_digest(&f);
		int64_t statements = counted ? unit.statements : out->statements;
		if (r > 0 &&
		    (digest != out->digest || f.rows != out->rows || statements != out->statements)) {
			snprintf(err, errlen,
			         "two loads of the same data disagree (%s: %lld then %lld rows, %lld then "
			         "%lld "
			         "statements counted by the server): is another lab-n-plus-one running on "
			         "this server?",
			         n_plus_one_strategy_name(s), (long long)out->rows, (long long)f.rows,
			         (long long)out->statements, (long long)statements);
			fetch_free(&f);
			return -1;
		}
		out->digest = digest;
		out->statements = statements;
		out->client_statements = f.statements;
		out->rows = f.rows;
		out->protocol_bytes = f.protocol_bytes;
		out->repeated_bytes = f.repeated_bytes;
		out->wire_bytes = wire;
		out->orders = f.orders;
		out->addresses = f.addresses;
		if (counted)
			out->unit = unit;
		walls[r] = wall;
		fetch_free(&f);
		if (budget_us && r >= 1 && hist_now_us() - started >= budget_us) {
			repeats = r + 1;
			break;
		}
	}
	out->repeats = repeats;
	qsort(walls, (size_t)repeats, sizeof(walls[0]), cmp_u64);
	out->wall_us = walls[0];
	out->wall_median_us = walls[repeats / 2];
	out->wall_max_us = walls[repeats - 1];
	return 0;
}

int n_plus_one_measure(PGconn *conn, struct n_plus_one_watch *watch, enum n_plus_one_strategy s, int users,
                       int repeats, int threshold, struct n_plus_one_load *out, char *err, size_t errlen)
{
	return measure_budget(conn, watch, s, users, repeats, 0, threshold, out, err, errlen);
}

PGconn *n_plus_one_connect_via(const char *pg_url, int port, char *err, size_t errlen)
{
	char portbuf[16];
	snprintf(portbuf, sizeof(portbuf), "%d", port);
	/* expand_dbname: the URL is expanded first, and the keywords after it override its host */
	const char *keys[] = {"dbname", "host", "hostaddr", "port", "connect_timeout", NULL};
	const char *vals[] = {pg_url, "127.0.0.1", "127.0.0.1", portbuf, "5", NULL};
	PGconn *conn = PQconnectdbParams(keys, vals, 1);
	if (!conn || PQstatus(conn) != CONNECTION_OK) {
		pg_conn_error(conn, err, errlen);
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/* ---- the phases ---- */

static void progress(const struct n_plus_one_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done, cfg->progress_arg);
}

int n_plus_one_strategy_run(const struct n_plus_one_config *cfg, enum n_plus_one_strategy s,
                            struct n_plus_one_load *out, char *err, size_t errlen)
{
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	struct n_plus_one_watch *watch = n_plus_one_watch_open(cfg->pg_url, err, errlen);
	if (!watch)
		goto out;
	ret = n_plus_one_measure(conn, watch, s, cfg->users, cfg->repeats, cfg->threshold, out, err, errlen);
out:
	n_plus_one_watch_close(watch);
	PQfinish(conn);
	return ret;
}

int n_plus_one_detect_run(const struct n_plus_one_config *cfg, struct n_plus_one_detect *res, char *err,
                          size_t errlen)
{
	memset(res, 0, sizeof(*res));
	res->threshold = cfg->threshold;
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	struct n_plus_one_watch *watch = n_plus_one_watch_open(cfg->pg_url, err, errlen);
	if (!watch)
		goto out;
	for (int s = 0; s < NPO_STRATEGIES; s++) {
		struct n_plus_one_load load;
		if (n_plus_one_measure(conn, watch, (enum n_plus_one_strategy)s, cfg->users, 1,
		                       cfg->threshold, &load, err, errlen) < 0)
			goto out;
		res->units[s] = load.unit;
	}
	ret = 0;
out:
	n_plus_one_watch_close(watch);
	PQfinish(conn);
	return ret;
}

/* The server's address from the URL, as the numeric IPv4 address the proxy forwards to. */
static int upstream_of(const char *pg_url, char *host, size_t hostlen, int *port, char *err, size_t errlen)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(pg_url, &perr);
	if (!opts) {
		pg_message_line(err, errlen, perr ? perr : "cannot parse the PostgreSQL URL");
		PQfreemem(perr);
		return -1;
	}
	const char *name = NULL, *addr = NULL, *portval = NULL;
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (!o->val || !*o->val)
			continue;
		if (!strcmp(o->keyword, "host"))
			name = o->val;
		else if (!strcmp(o->keyword, "hostaddr"))
			addr = o->val;
		else if (!strcmp(o->keyword, "port"))
			portval = o->val;
	}
	int ret = -1;
	if (addr)
		name = addr;
	if (!name || name[0] == '/' || strchr(name, ',') || (portval && strchr(portval, ','))) {
		snprintf(err, errlen,
		         "the latency proxy needs PostgreSQL over TCP at one host:port (LAB_PG_URL)");
		goto out;
	}
	*port = portval ? atoi(portval) : 5432;
	struct addrinfo hints, *ai = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	int gai = getaddrinfo(name, NULL, &hints, &ai);
	if (gai != 0 || !ai) {
		snprintf(err, errlen, "cannot resolve %s for the proxy: %s", name, gai_strerror(gai));
		goto out;
	}
	if (!inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, host, (socklen_t)hostlen))
		snprintf(err, errlen, "cannot format the address of %s", name);
	else
		ret = 0;
	freeaddrinfo(ai);
out:
	PQconninfoFree(opts);
	return ret;
}

/* A proxy in front of the lab's server, and the lab's connection through it. */
static struct proxy *proxy_in_front(const struct n_plus_one_config *cfg, int delay_us, int64_t bandwidth,
                                    PGconn **conn, char *err, size_t errlen)
{
	char host[64];
	struct proxy_config pc;
	memset(&pc, 0, sizeof(pc));
	if (upstream_of(cfg->pg_url, host, sizeof(host), &pc.upstream_port, err, errlen) < 0)
		return NULL;
	pc.upstream_host = host;
	/* half the round trip each way */
	pc.delay_up_us = delay_us / 2;
	pc.delay_down_us = delay_us - delay_us / 2;
	pc.bandwidth_bps = bandwidth;
	struct proxy *p = proxy_start(&pc, err, errlen);
	if (!p)
		return NULL;
	*conn = n_plus_one_connect_via(cfg->pg_url, proxy_port(p), err, errlen);
	if (!*conn) {
		proxy_free(p);
		return NULL;
	}
	return p;
}

/* Up to net_repeats loads through proxy p within net_budget_us, with the bytes the proxy
 * delivered for one load. */
static int measure_via(const struct n_plus_one_config *cfg, struct proxy *p, PGconn *conn,
                       struct n_plus_one_watch *watch, enum n_plus_one_strategy s, int users,
                       struct n_plus_one_load *out, char *err, size_t errlen)
{
	struct proxy_stats before, after;
	proxy_stats(p, &before);
	if (measure_budget(conn, watch, s, users, cfg->net_repeats, cfg->net_budget_us, cfg->threshold, out,
	                   err, errlen) < 0)
		return -1;
	proxy_stats(p, &after);
	out->proxy_bytes = (int64_t)(after.bytes_down - before.bytes_down) / out->repeats;
	return 0;
}

/* SELECT 1 this many times for a measured round trip: 21 x 2 ms is still only 42 ms */
#define ROUNDTRIP_SAMPLES 21

/* The median of ROUNDTRIP_SAMPLES bare round trips (SELECT 1, outside the schema, so no unit
 * of work counts it) on conn. */
static int roundtrip_us(PGconn *conn, uint64_t *out, char *err, size_t errlen)
{
	uint64_t samples[ROUNDTRIP_SAMPLES];
	for (int i = 0; i < ROUNDTRIP_SAMPLES; i++) {
		uint64_t t0 = hist_now_us();
		PGresult *res = pg_query(conn, "SELECT 1", 0, NULL, err, errlen);
		if (!res)
			return -1;
		samples[i] = hist_now_us() - t0;
		PQclear(res);
	}
	qsort(samples, ROUNDTRIP_SAMPLES, sizeof(samples[0]), cmp_u64);
	*out = samples[ROUNDTRIP_SAMPLES / 2];
	return 0;
}

int n_plus_one_network_run(const struct n_plus_one_config *cfg, struct n_plus_one_network *res, char *err,
                           size_t errlen)
{
	memset(res, 0, sizeof(*res));
	res->nsizes = cfg->nsizes;
	res->nrtts = cfg->nrtts;
	if (cfg->nrtts < 1 || cfg->nsizes < 1 || cfg->rtts_us[0] != 0) {
		snprintf(err, errlen, "the round trips must start at 0 (the base of the prediction)");
		return -1;
	}
	PGconn *conn = NULL;
	struct n_plus_one_watch *watch = NULL;
	struct proxy *p = proxy_in_front(cfg, 0, 0, &conn, err, errlen);
	if (!p)
		return -1;
	int ret = -1;
	watch = n_plus_one_watch_open(cfg->pg_url, err, errlen);
	if (!watch)
		goto out;
	int total = cfg->nrtts * cfg->nsizes * 3, done = 0;
	for (int ri = 0; ri < cfg->nrtts; ri++) {
		int rtt = cfg->rtts_us[ri];
		if (proxy_set_delay(p, rtt / 2, rtt - rtt / 2) < 0) {
			snprintf(err, errlen, "the proxy did not take the new delay");
			goto out;
		}
		if (roundtrip_us(conn, &res->rtt_measured_us[ri], err, errlen) < 0)
			goto out;
		double added = (double)res->rtt_measured_us[ri] - (double)res->rtt_measured_us[0];
		for (int si = 0; si < cfg->nsizes; si++) {
			struct n_plus_one_cell *cell = &res->cells[si][ri];
			cell->users = cfg->sizes[si];
			cell->rtt_us = rtt;
			for (int k = 0; k < 3; k++) {
				char what[96];
				snprintf(what, sizeof(what), "%s, %d users, RTT +%.1f ms",
				         n_plus_one_strategy_name((enum n_plus_one_strategy)k), cell->users,
				         rtt / 1000.0);
				progress(cfg, what, (double)done++ / total);
				if (measure_via(cfg, p, conn, watch, (enum n_plus_one_strategy)k, cell->users,
				                &cell->load[k], err, errlen) < 0)
					goto out;
			}
			const struct n_plus_one_cell *base = &res->cells[si][0];
			double n = cell->users;
			cell->predicted_loop_us = base->load[NPO_LOOP].wall_us + (n + 1) * added;
			cell->predicted_join_us = base->load[NPO_JOIN].wall_us + 1.0 * added;
			cell->predicted_batched_us = base->load[NPO_BATCHED].wall_us + 2.0 * added;
			cell->loop_over_join =
			        (double)cell->load[NPO_LOOP].wall_us /
			        (double)(cell->load[NPO_JOIN].wall_us ? cell->load[NPO_JOIN].wall_us : 1);
		}
	}
	struct proxy_stats st;
	proxy_stats(p, &st);
	res->proxy_bytes_down = st.bytes_down;
	ret = 0;
out:
	n_plus_one_watch_close(watch);
	PQfinish(conn);
	proxy_free(p);
	return ret;
}

static const enum n_plus_one_strategy width_strategies[4] = {NPO_JOIN, NPO_BATCHED, NPO_JOIN2, NPO_BATCHED2};

int n_plus_one_width_run(const struct n_plus_one_config *cfg, struct n_plus_one_width *res, char *err,
                         size_t errlen)
{
	memset(res, 0, sizeof(*res));
	res->rtt_us = cfg->width_rtt_us;
	res->bandwidth = cfg->width_bandwidth;
	struct proxy *p = NULL;
	PGconn *conn = pg_connect(cfg->pg_url, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	struct n_plus_one_watch *watch = n_plus_one_watch_open(cfg->pg_url, err, errlen);
	if (!watch)
		goto out;
	for (int i = 0; i < 4; i++) {
		progress(cfg, n_plus_one_strategy_name(width_strategies[i]), i / 8.0);
		if (n_plus_one_measure(conn, watch, width_strategies[i], cfg->users, cfg->repeats,
		                       cfg->threshold, &res->direct[i], err, errlen) < 0)
			goto out;
	}
	n_plus_one_watch_close(watch);
	watch = NULL;
	PQfinish(conn);
	conn = NULL;
	if (cfg->width_rtt_us > 0 || cfg->width_bandwidth > 0) {
		p = proxy_in_front(cfg, cfg->width_rtt_us, cfg->width_bandwidth, &conn, err, errlen);
		if (!p)
			goto out;
		watch = n_plus_one_watch_open(cfg->pg_url, err, errlen);
		if (!watch)
			goto out;
		for (int i = 0; i < 4; i++) {
			progress(cfg, n_plus_one_strategy_name(width_strategies[i]), (4 + i) / 8.0);
			if (measure_via(cfg, p, conn, watch, width_strategies[i], cfg->users,
			                &res->network[i], err, errlen) < 0)
				goto out;
		}
	}
	/* one has-many: the batched load pays one more round trip, the JOIN its repeated bytes */
	const struct n_plus_one_load *join = &res->direct[0], *batched = &res->direct[1];
	int64_t jb = join->wire_bytes >= 0 ? join->wire_bytes : join->protocol_bytes;
	int64_t bb = batched->wire_bytes >= 0 ? batched->wire_bytes : batched->protocol_bytes;
	if (res->rtt_us > 0 && jb > bb)
		res->break_even_bandwidth = (double)(jb - bb) / (res->rtt_us / 1e6);
	ret = 0;
out:
	n_plus_one_watch_close(watch);
	PQfinish(conn);
	proxy_free(p);
	return ret;
}
