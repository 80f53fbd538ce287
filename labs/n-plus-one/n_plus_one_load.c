/*
 * n_plus_one_load.c — one load of lab-n-plus-one's users and orders, the way each strategy makes
 * it, and its measurement.
 *
 * Each load builds the same objects an ORM would (users, their orders, their addresses) as
 * canonical text records, so the strategies can be compared by a digest, and counts what it
 * received twice over: the kernel's byte counter on the socket (TCP_INFO from <linux/tcp.h>: the
 * suite is Linux-only), and the protocol messages reconstructed from the results. The statements
 * it ran are counted a third way, by the server (n_plus_one_watch.c).
 */
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "hist.h"
#include "n_plus_one_internal.h"
#include "pg.h"

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
	struct npo_buf b = {0};
	npo_buf_printf(&b, "{");
	for (int i = 0; i < f->nusers; i++)
		npo_buf_printf(&b, "%s%d", i ? "," : "", f->user_ids[i]);
	npo_buf_printf(&b, "}");
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

int npo_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The first loads of a series are counted by the server (and must agree); the rest are timed
 * only: a snapshot of pg_stat_statements materializes every entry of the server (10 to 50 ms with
 * the 2,000 that a day of the suite leaves), far more than a cheap load */
#define COUNTED_LOADS 2

/*
 * Load r of a series into out: the first fills it, the next must agree with it (data, rows, and
 * the server's count when counted: watch is not NULL). On failure out->client_statements is what the client
 * had completed before the error.
 */
static int measure_one(PGconn *conn, struct n_plus_one_watch *watch, int r, int threshold,
                       struct n_plus_one_load *out, uint64_t *wall, char *err, size_t errlen)
{
	struct fetch f;
	int64_t wire;
	struct n_plus_one_unit unit = {0};
	bool counted = watch != NULL;
	if (counted && n_plus_one_watch_begin(watch, err, errlen) < 0)
		return -1;
	int rc = load_once(conn, out->strategy, out->users, &f, wall, &wire, err, errlen);
	if (rc == 0 && counted && n_plus_one_watch_end(watch, threshold, &unit, err, errlen) < 0)
		rc = -1;
	if (rc < 0) {
		out->client_statements = f.statements;
		fetch_free(&f);
		return -1;
	}
	uint64_t digest = fetch_digest(&f);
	int64_t statements = counted ? unit.statements : out->statements;
	if (r > 0 && (digest != out->digest || f.rows != out->rows || statements != out->statements)) {
		snprintf(err, errlen,
		         "two loads of the same data disagree (%s: %lld then %lld rows, %lld then %lld "
		         "statements counted by the server): is another lab-n-plus-one running on this "
		         "server?",
		         n_plus_one_strategy_name(out->strategy), (long long)out->rows, (long long)f.rows,
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
	fetch_free(&f);
	return 0;
}

int npo_series_start(struct npo_series *sr, struct n_plus_one_load *out, enum n_plus_one_strategy s,
                     int users, char *err, size_t errlen)
{
	memset(sr, 0, sizeof(*sr));
	memset(out, 0, sizeof(*out));
	if (users < 1) {
		snprintf(err, errlen, "bad measure: %d users", users);
		return -1;
	}
	sr->out = out;
	sr->counted = COUNTED_LOADS;
	out->strategy = s;
	out->users = users;
	out->predicted = n_plus_one_predicted_statements(s, users);
	out->statements = -1;
	out->proxy_bytes = -1;
	return 0;
}

int npo_series_add(struct npo_series *sr, PGconn *conn, struct n_plus_one_watch *watch, int threshold,
                   char *err, size_t errlen)
{
	if (sr->made >= N_PLUS_ONE_MAX_REPEATS) {
		snprintf(err, errlen, "bad measure: more than %d loads", N_PLUS_ONE_MAX_REPEATS);
		return -1;
	}
	struct n_plus_one_watch *counting = sr->made < sr->counted ? watch : NULL;
	if (measure_one(conn, counting, sr->made, threshold, sr->out, &sr->walls[sr->made], err, errlen) < 0)
		return -1;
	sr->made++;
	return 0;
}

void npo_series_end(struct npo_series *sr)
{
	struct n_plus_one_load *out = sr->out;
	out->repeats = sr->made;
	if (!sr->made)
		return;
	qsort(sr->walls, (size_t)sr->made, sizeof(sr->walls[0]), npo_cmp_u64);
	out->wall_us = sr->walls[0];
	out->wall_median_us = sr->walls[sr->made / 2];
	out->wall_max_us = sr->walls[sr->made - 1];
}

int npo_measure_budget(PGconn *conn, struct n_plus_one_watch *watch, enum n_plus_one_strategy s, int users,
                       int repeats, uint64_t budget_us, int threshold, struct n_plus_one_load *out, char *err,
                       size_t errlen)
{
	struct npo_series sr;
	if (npo_series_start(&sr, out, s, users, err, errlen) < 0)
		return -1;
	if (repeats < 1 || repeats > N_PLUS_ONE_MAX_REPEATS) {
		snprintf(err, errlen, "bad measure: %d repeats (1 to %d)", repeats, N_PLUS_ONE_MAX_REPEATS);
		return -1;
	}
	uint64_t started = hist_now_us();
	while (sr.made < repeats) {
		if (npo_series_add(&sr, conn, watch, threshold, err, errlen) < 0)
			return -1;
		if (budget_us && sr.made >= 2 && hist_now_us() - started >= budget_us)
			break;
	}
	npo_series_end(&sr);
	return 0;
}

int n_plus_one_measure(PGconn *conn, struct n_plus_one_watch *watch, enum n_plus_one_strategy s, int users,
                       int repeats, int threshold, struct n_plus_one_load *out, char *err, size_t errlen)
{
	return npo_measure_budget(conn, watch, s, users, repeats, 0, threshold, out, err, errlen);
}
