/*
 * n_plus_one_data.c — lab-n-plus-one's data: users with orders and addresses, generated from the
 * seed with common/rng.h (so --seed gives the same rows on every machine, and the same digests),
 * loaded with COPY, indexed as an ORM's schema is, and counted back by the server.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "n_plus_one_internal.h"
#include "pg.h"
#include "rng.h"

void npo_buf_printf(struct npo_buf *b, const char *fmt, ...)
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
static int copy_in(PGconn *conn, const char *sql, const struct npo_buf *b, char *err, size_t errlen)
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

/* The rows of the three tables as COPY text. The order of the draws is the data: keep it. */
struct rows {
	struct npo_buf users, orders, addresses;
	int *order_owner; /* the user of each order, before they are written */
	char *bio;
};

static void rows_free(struct rows *r)
{
	free(r->users.p);
	free(r->orders.p);
	free(r->addresses.p);
	free(r->order_owner);
	free(r->bio);
}

static int rows_generate(const struct n_plus_one_config *cfg, int users, struct rows *r, char *err,
                         size_t errlen)
{
	uint64_t rng = cfg->seed;
	r->bio = malloc((size_t)cfg->bio_bytes + 1);
	r->order_owner = malloc(sizeof(int) * (size_t)users * (size_t)(cfg->orders_max + 1));
	if (!r->bio || !r->order_owner)
		goto oom;
	static const char blurb[] = "Reads the query log before the code. Likes short round trips. ";
	for (int i = 0; i < cfg->bio_bytes; i++)
		r->bio[i] = blurb[i % (sizeof(blurb) - 1)];
	r->bio[cfg->bio_bytes] = '\0';
	int norders = 0, address_id = 0;
	for (int u = 1; u <= users; u++) {
		/* the initial is drawn before the first name, the status before the total below: the
		 * order GCC evaluated them in when they were arguments of one call, which made the data */
		char initial = (char)('A' + rng_between(&rng, 0, 25));
		const char *first = first_names[rng_between(&rng, 0, 7)];
		npo_buf_printf(&r->users, "%d\t%s %c.\tuser%d@example.com\t%s\n", u, first, initial, u,
		               r->bio);
		int n = rng_between(&rng, 0, cfg->orders_max);
		for (int k = 0; k < n; k++)
			r->order_owner[norders++] = u;
		int na = rng_between(&rng, 1, cfg->addresses_max);
		for (int k = 0; k < na; k++)
			npo_buf_printf(&r->addresses, "%d\t%d\t%s\n", ++address_id, u,
			               cities[rng_between(&rng, 0, 7)]);
	}
	/* orders are placed over time by every user at once: shuffle their owners (Fisher-Yates), so
	 * one user's orders lie on many pages, as in a real table */
	for (int i = norders - 1; i > 0; i--) {
		int j = rng_between(&rng, 0, i);
		int t = r->order_owner[i];
		r->order_owner[i] = r->order_owner[j];
		r->order_owner[j] = t;
	}
	for (int i = 0; i < norders; i++) {
		const char *status = statuses[rng_between(&rng, 0, 3)];
		int total = rng_between(&rng, 100, 50000);
		npo_buf_printf(&r->orders, "%d\t%d\t%d\t%s\n", i + 1, r->order_owner[i], total, status);
	}
	if (r->users.failed || r->orders.failed || r->addresses.failed)
		goto oom;
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
	return -1;
}

static int tables_create(PGconn *conn, char *err, size_t errlen)
{
	if (pg_schema_create(conn, SCHEMA, err, errlen) < 0)
		return -1;
	/* no autovacuum: the tables live seconds, tables_fill ANALYZEs them, and a worker vacuuming the
	 * 10,000 fresh orders would hold a lock the drop at Ctrl-C (200 ms lock_timeout, common/lab.c)
	 * waits out without ever cancelling it (that takes deadlock_timeout, 1 s) */
	return pg_exec(conn,
	               "CREATE TABLE " SCHEMA ".users (id int PRIMARY KEY, name text NOT NULL, "
	               "email text NOT NULL, bio text NOT NULL) WITH (autovacuum_enabled = false);"
	               "CREATE TABLE " SCHEMA ".orders (id int PRIMARY KEY, user_id int NOT NULL "
	               "REFERENCES " SCHEMA ".users, total_cents int NOT NULL, status text NOT NULL) "
	               "WITH (autovacuum_enabled = false);"
	               "CREATE TABLE " SCHEMA ".addresses (id int PRIMARY KEY, user_id int NOT NULL "
	               "REFERENCES " SCHEMA ".users, city text NOT NULL) WITH (autovacuum_enabled = false)",
	               err, errlen);
}

static int tables_fill(PGconn *conn, const struct rows *r, char *err, size_t errlen)
{
	if (copy_in(conn, "COPY " SCHEMA ".users FROM STDIN", &r->users, err, errlen) < 0)
		return -1;
	if (r->orders.len && copy_in(conn, "COPY " SCHEMA ".orders FROM STDIN", &r->orders, err, errlen) < 0)
		return -1;
	if (copy_in(conn, "COPY " SCHEMA ".addresses FROM STDIN", &r->addresses, err, errlen) < 0)
		return -1;
	/* the foreign-key indexes every ORM schema has: without them each query of the loop would scan */
	return pg_exec(conn,
	               "CREATE INDEX ON " SCHEMA ".orders (user_id);"
	               "CREATE INDEX ON " SCHEMA ".addresses (user_id);"
	               "ANALYZE " SCHEMA ".users, " SCHEMA ".orders, " SCHEMA ".addresses",
	               err, errlen);
}

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
	struct rows rows;
	memset(&rows, 0, sizeof(rows));
	int64_t calls;
	int ret = -1;
	/* the lab's counts come from pg_stat_statements: say so now if it is missing */
	if (pg_statements_calls(conn, SCHEMA_LIKE, &calls, err, errlen) == 0 &&
	    tables_create(conn, err, errlen) == 0 && rows_generate(cfg, users, &rows, err, errlen) == 0 &&
	    tables_fill(conn, &rows, err, errlen) == 0)
		ret = 0;
	if (ret < 0) {
		/* leave nothing half-made behind; the first error is the one to report */
		char derr[256];
		pg_schema_drop(conn, SCHEMA, derr, sizeof(derr));
	}
	rows_free(&rows);
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
	PGresult *res = pg_query(conn,
	                         "WITH per_user AS (SELECT u.id, (SELECT count(*) FROM " SCHEMA
	                         ".orders o WHERE o.user_id = u.id) AS o,"
	                         " (SELECT count(*) FROM " SCHEMA
	                         ".addresses a WHERE a.user_id = u.id) AS a FROM " SCHEMA
	                         ".users u WHERE u.id <= $1) "
	                         "SELECT count(*), coalesce(sum(o), 0), coalesce(sum(a), 0), "
	                         "count(*) FILTER (WHERE o = 0), "
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
