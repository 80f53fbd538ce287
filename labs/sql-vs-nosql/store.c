/*
 * store.c — what lab-sql-vs-nosql keeps where: schema lab_sql_vs_nosql (the relational tables,
 * the jsonb documents, the race's stock), keys lab:sql-vs-nosql:* (a JSON string per order, a
 * sorted set per customer, a hash per product), the seed of all three, their sizes (phase 7),
 * and the teardown. Nothing here prints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"

/* A hash of (expr, salt) from the seed, as a non-negative bigint: the data's only randomness,
 * computed by the server, so the same seed makes the same rows on any machine. */
#define H(expr, salt) "(hashint8extended((" expr ")::bigint, %lld + " #salt ") & 9223372036854775807)"

/*
 * Relational: customers, products (attributes as jsonb, for phase 6), orders, order_items, with
 * the primary keys, the foreign keys and the (customer_id, placed_at) index an application has.
 * Unlogged: the tables live seconds and need no crash safety; autovacuum off: a worker on the
 * fresh tables would hold a lock the drop at Ctrl-C waits on.
 */
static int create_relational(struct svn_ctx *x, double *secs, char *err, size_t errlen)
{
	const struct sql_vs_nosql_config *c = x->cfg;
	long long seed = (long long)(c->seed % 1000000007ULL);
	/* one statement a line: clang-format would stair-step the H() concatenations */
	// clang-format off
	static const char fmt[] =
	        "CREATE UNLOGGED TABLE " SCHEMA ".customers (id int PRIMARY KEY, name text NOT NULL, "
	        "email text NOT NULL) WITH (autovacuum_enabled = false);"
	        "INSERT INTO " SCHEMA ".customers SELECT i, 'Customer ' || i, 'customer' || i || "
	        "'@example.com' FROM generate_series(1, %d) i;"
	        "CREATE UNLOGGED TABLE " SCHEMA ".products (id int PRIMARY KEY, name text NOT NULL, "
	        "category text NOT NULL, price_cents int NOT NULL, attrs jsonb NOT NULL) "
	        "WITH (autovacuum_enabled = false);"
	        "INSERT INTO " SCHEMA ".products SELECT i, 'Product ' || i, (ARRAY['books','shoes','laptops',"
	        "'coffee','garden','toys','music','kitchen'])[1 + i %% 8], 100 + " H("i", 1) " %% 20000, "
	        "'{}' FROM generate_series(1, %d) i;"
	        "CREATE UNLOGGED TABLE " SCHEMA ".orders (id bigint PRIMARY KEY, customer_id int NOT NULL, "
	        "placed_at timestamptz NOT NULL, status text NOT NULL) WITH (autovacuum_enabled = false);"
	        "INSERT INTO " SCHEMA ".orders SELECT i, 1 + " H("i", 2) " %% %d, "
	        "to_timestamp(%lld + (i * 7919) %% %lld), "
	        "(ARRAY['paid','shipped','delivered','refunded'])[1 + " H("i", 3) " %% 4] "
	        "FROM generate_series(1, %d) i;"
	        "CREATE UNLOGGED TABLE " SCHEMA ".order_items (order_id bigint NOT NULL, line smallint NOT "
	        "NULL, product_id int NOT NULL, qty int NOT NULL, price_cents int NOT NULL, "
	        "PRIMARY KEY (order_id, line)) WITH (autovacuum_enabled = false);"
	        "INSERT INTO " SCHEMA ".order_items SELECT x.o, x.l, x.p, 1 + " H("x.o * 4 + x.l", 4) " %% 3, "
	        "p.price_cents FROM (SELECT o.id AS o, l, 1 + " H("o.id * 4 + l", 5) " %% %d AS p "
	        "FROM " SCHEMA ".orders o, generate_series(1, (1 + " H("o.id", 6) " %% 4)::int) l) x "
	        "JOIN " SCHEMA ".products p ON p.id = x.p;"
	        "CREATE INDEX ON " SCHEMA ".orders (customer_id, placed_at DESC);"
	        "ALTER TABLE " SCHEMA ".orders ADD FOREIGN KEY (customer_id) REFERENCES " SCHEMA ".customers;"
	        "ALTER TABLE " SCHEMA ".order_items ADD FOREIGN KEY (order_id) REFERENCES " SCHEMA ".orders,"
	        " ADD FOREIGN KEY (product_id) REFERENCES " SCHEMA ".products;";
	// clang-format on
	char *sql = NULL;
	if (asprintf(&sql, fmt, c->customers, seed, c->products, seed, c->customers, SVN_REF_TS - SVN_SPAN_S,
	             SVN_SPAN_S, seed, c->orders, seed, seed, c->products, seed) < 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	uint64_t t0 = hist_now_us();
	int rc = pg_exec(x->conn, sql, err, errlen);
	free(sql);
	*secs = (double)(hist_now_us() - t0) / 1e6;
	return rc;
}

/* Per-category attributes (phase 6): what a catalogue's products differ in. */
static int create_attributes(struct svn_ctx *x, char *err, size_t errlen)
{
	return pg_exec(x->conn,
	               "UPDATE " SCHEMA ".products SET attrs = CASE category "
	               "WHEN 'books' THEN jsonb_build_object('author', 'Author ' || id % 50, 'pages', 100 + "
	               "id % 700) "
	               "WHEN 'shoes' THEN jsonb_build_object('size', 36 + id % 12, 'color', "
	               "(ARRAY['red','black','white','blue'])[1 + id % 4]) "
	               "WHEN 'laptops' THEN jsonb_build_object('ram_gb', (ARRAY[8,16,32])[1 + id % 3], "
	               "'color', (ARRAY['silver','black'])[1 + id % 2]) "
	               "WHEN 'coffee' THEN jsonb_build_object('origin', "
	               "(ARRAY['Ethiopia','Colombia','Brazil'])[1 + id % 3], 'roast', 'medium') "
	               "WHEN 'toys' THEN jsonb_build_object('min_age', 3 + id % 10, 'color', "
	               "(ARRAY['red','yellow','green'])[1 + id % 3]) "
	               "WHEN 'kitchen' THEN jsonb_build_object('material', 'steel', 'color', "
	               "(ARRAY['red','white'])[1 + id % 2]) "
	               "ELSE jsonb_build_object('weight_g', 100 + id % 900) END;"
	               "CREATE INDEX ON " SCHEMA ".products USING gin (attrs jsonb_path_ops);"
	               "CREATE UNLOGGED TABLE " SCHEMA
	               ".product_attrs (product_id int NOT NULL REFERENCES " SCHEMA
	               ".products, attr text NOT NULL, value text NOT NULL, PRIMARY KEY (product_id, attr)) "
	               "WITH (autovacuum_enabled = false);"
	               "INSERT INTO " SCHEMA ".product_attrs SELECT p.id, e.key, e.value FROM " SCHEMA
	               ".products p, jsonb_each_text(p.attrs) e;"
	               "CREATE INDEX ON " SCHEMA ".product_attrs (attr, value);"
	               "ANALYZE " SCHEMA ".customers, " SCHEMA ".products, " SCHEMA ".orders, " SCHEMA
	               ".order_items, " SCHEMA ".product_attrs;",
	               err, errlen);
}

/* The middle road: one jsonb document per order, built by the server from the relational rows. */
static int create_documents(struct svn_ctx *x, double *secs, char *err, size_t errlen)
{
	uint64_t t0 = hist_now_us();
	int rc = pg_exec(
	        x->conn,
	        "CREATE UNLOGGED TABLE " SCHEMA
	        ".orders_doc (id bigint PRIMARY KEY, customer_id int NOT NULL, "
	        "ts bigint NOT NULL, doc jsonb NOT NULL) WITH (autovacuum_enabled = false);"
	        "INSERT INTO " SCHEMA ".orders_doc SELECT o.id, o.customer_id, extract(epoch FROM "
	        "o.placed_at)::bigint, jsonb_build_object('id', o.id, 'ts', extract(epoch FROM "
	        "o.placed_at)::bigint, 'status', o.status, 'customer', jsonb_build_object('id', c.id, "
	        "'name', "
	        "c.name, 'email', c.email), 'items', jsonb_agg(jsonb_build_object('product_id', "
	        "i.product_id, "
	        "'name', p.name, 'category', p.category, 'qty', i.qty, 'price_cents', i.price_cents) ORDER "
	        "BY "
	        "i.line)) FROM " SCHEMA ".orders o JOIN " SCHEMA
	        ".customers c ON c.id = o.customer_id JOIN " SCHEMA
	        ".order_items i ON i.order_id = o.id JOIN " SCHEMA ".products p ON p.id = i.product_id "
	        "GROUP BY o.id, c.id;"
	        "CREATE INDEX ON " SCHEMA ".orders_doc (customer_id, ts DESC);"
	        "CREATE UNLOGGED TABLE " SCHEMA ".race_stock (variant text, round int, qty int NOT NULL, "
	        "PRIMARY KEY (variant, round)) WITH (autovacuum_enabled = false);"
	        "CREATE UNLOGGED TABLE " SCHEMA ".race_sales (variant text NOT NULL, round int NOT NULL, "
	        "client int NOT NULL) WITH (autovacuum_enabled = false);"
	        "ANALYZE " SCHEMA ".orders_doc;",
	        err, errlen);
	*secs = (double)(hist_now_us() - t0) / 1e6;
	return rc;
}

/*
 * One batch of orders after id *after into Redis: for each, MULTI, SET order:<id> <doc>, ZADD
 * customer:<id>:orders <ts> <id>, EXEC, so an order and its index entry are written together
 * (the way every write of this design must be made), the whole batch in one pipeline.
 * *copied: how many; 0 when there were no more.
 */
static int copy_batch(struct svn_ctx *x, struct svn_worker *w, int64_t *after, int *copied, char *err,
                      size_t errlen)
{
	char b[24], lim[24];
	snprintf(b, sizeof(b), "%lld", (long long)*after);
	snprintf(lim, sizeof(lim), "%d", SVN_COPY_BATCH);
	const char *params[] = {b, lim};
	PGresult *res = pg_query(x->conn,
	                         "SELECT id, customer_id, ts, doc FROM " SCHEMA ".orders_doc WHERE id > $1 "
	                         "ORDER BY id LIMIT $2",
	                         2, params, err, errlen);
	if (!res)
		return -1;
	int n = PQntuples(res), rc = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		const char *id = PQgetvalue(res, i, 0), *doc = PQgetvalue(res, i, 3);
		if (svn_redis_append(w, err, errlen, "MULTI") < 0 ||
		    svn_redis_append(w, err, errlen, "SET " PREFIX "order:%s %b", id, doc,
		                     (size_t)PQgetlength(res, i, 3)) < 0 ||
		    svn_redis_append(w, err, errlen, "ZADD " PREFIX "customer:%s:orders %s %s",
		                     PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), id) < 0 ||
		    svn_redis_append(w, err, errlen, "EXEC") < 0)
			rc = -1;
	}
	if (n > 0)
		*after = strtoll(PQgetvalue(res, n - 1, 0), NULL, 10);
	PQclear(res);
	*copied = n;
	if (rc == 0 && w->pending > 0)
		rc = svn_redis_flush(w, NULL, err, errlen);
	return rc;
}

/* The catalogue into Redis: a hash per product, its attributes as fields beside its name. */
static int copy_products(struct svn_ctx *x, struct svn_worker *w, char *err, size_t errlen)
{
	PGresult *res = pg_query(x->conn,
	                         "SELECT p.id, e.key, e.value FROM " SCHEMA ".products p, jsonb_each_text("
	                         "jsonb_build_object('name', p.name, 'category', p.category, 'price_cents', "
	                         "p.price_cents) || p.attrs) e ORDER BY p.id",
	                         0, NULL, err, errlen);
	if (!res)
		return -1;
	int rc = 0;
	for (int i = 0; i < PQntuples(res) && rc == 0; i++)
		rc = svn_redis_append(w, err, errlen, "HSET " PREFIX "product:%s %s %s",
		                      PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
	PQclear(res);
	return rc == 0 ? svn_redis_flush(w, NULL, err, errlen) : -1;
}

/* INFO memory's used_memory. */
static int redis_used_memory(redisContext *c, long long *used, char *err, size_t errlen)
{
	redisReply *r = redis_cmd(c, err, errlen, "INFO memory");
	if (!r)
		return -1;
	const char *p = r->type == REDIS_REPLY_STRING ? strstr(r->str, "used_memory:") : NULL;
	*used = p ? atoll(p + strlen("used_memory:")) : -1;
	freeReplyObject(r);
	if (*used < 0)
		snprintf(err, errlen, "INFO memory has no used_memory");
	return *used < 0 ? -1 : 0;
}

/* Keys under pattern, counted with SCAN. */
static int redis_count(redisContext *c, const char *pattern, int64_t *n, char *err, size_t errlen)
{
	char cursor[32] = "0";
	*n = 0;
	do {
		redisReply *r = redis_cmd(c, err, errlen, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
		if (!r)
			return -1;
		const redisReply *keys;
		int rc = svn_scan_reply(r, cursor, sizeof(cursor), &keys, err, errlen);
		*n += rc == 0 ? (int64_t)keys->elements : 0;
		freeReplyObject(r);
		if (rc < 0)
			return -1;
	} while (strcmp(cursor, "0") != 0);
	return 0;
}

static int seed_counts(struct svn_ctx *x, struct svn_seed *out, char *err, size_t errlen)
{
	PGresult *res =
	        pg_query(x->conn,
	                 "SELECT (SELECT count(*) FROM " SCHEMA ".orders), (SELECT count(*) FROM " SCHEMA
	                 ".order_items), (SELECT count(*) FROM " SCHEMA ".customers), (SELECT count(*) "
	                 "FROM " SCHEMA ".products)",
	                 0, NULL, err, errlen);
	if (!res)
		return -1;
	out->orders = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	out->items = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	out->customers = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	out->products = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
	PQclear(res);
	return redis_count(x->rc, PREFIX "order:*", &out->redis_orders, err, errlen);
}

int svn_seed_run(struct svn_ctx *x, struct svn_seed *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (create_relational(x, &out->pg_s, err, errlen) < 0 || create_attributes(x, err, errlen) < 0 ||
	    create_documents(x, &out->jsonb_s, err, errlen) < 0)
		return -1;
	if (redis_used_memory(x->rc, &x->redis_used_before, err, errlen) < 0)
		return -1;
	struct svn_worker w;
	svn_solo(x, &w);
	uint64_t t0 = hist_now_us();
	int64_t after = 0, done = 0;
	for (int copied = 1; copied > 0;) {
		if (lab_interrupted()) /* the guard deletes our keys: write none after it */
			return snprintf(err, errlen, "interrupted"), -1;
		if (copy_batch(x, &w, &after, &copied, err, errlen) < 0)
			return -1;
		done += copied;
		svn_progress(x->cfg, "copying the orders into Redis", (double)done / x->cfg->orders);
	}
	if (copy_products(x, &w, err, errlen) < 0)
		return -1;
	out->redis_s = (double)(hist_now_us() - t0) / 1e6;
	out->redis_round_trips = (int64_t)w.rt;
	out->redis_commands = (int64_t)w.cmds;
	return seed_counts(x, out, err, errlen);
}

/* ---- phase 7: storage ---- */

static int pg_sizes(struct svn_ctx *x, struct svn_storage *out, char *err, size_t errlen)
{
	PGresult *res = pg_query(
	        x->conn,
	        "SELECT sum(pg_table_size(c.oid)) FILTER (WHERE c.relname <> 'orders_doc'), "
	        "sum(pg_indexes_size(c.oid)) FILTER (WHERE c.relname <> 'orders_doc'), "
	        "sum(pg_table_size(c.oid)) FILTER (WHERE c.relname = 'orders_doc'), "
	        "sum(pg_indexes_size(c.oid)) FILTER (WHERE c.relname = 'orders_doc') FROM pg_class c "
	        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '" SCHEMA
	        "' AND c.relname IN "
	        "('customers', 'orders', 'order_items', 'orders_doc')",
	        0, NULL, err, errlen);
	if (!res)
		return -1;
	out->sql_table_bytes = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	out->sql_index_bytes = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	out->jsonb_table_bytes = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	out->jsonb_index_bytes = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
	PQclear(res);
	return 0;
}

/* MEMORY USAGE (and STRLEN) of every step-th order and of as many customers' sorted sets. */
static int redis_sample(struct svn_ctx *x, struct svn_storage *out, char *err, size_t errlen)
{
	const struct sql_vs_nosql_config *c = x->cfg;
	int n = c->sample_keys < c->customers ? c->sample_keys : c->customers;
	struct svn_worker w;
	svn_solo(x, &w);
	for (int i = 0; i < n; i++) {
		long long order = 1 + (long long)i * c->orders / n,
		          customer = 1 + (long long)i * c->customers / n;
		if (svn_redis_append(&w, err, errlen, "MEMORY USAGE " PREFIX "order:%lld SAMPLES 0", order) <
		            0 ||
		    svn_redis_append(&w, err, errlen, "STRLEN " PREFIX "order:%lld", order) < 0 ||
		    svn_redis_append(&w, err, errlen, "MEMORY USAGE " PREFIX "customer:%lld:orders SAMPLES 0",
		                     customer) < 0)
			return -1;
	}
	redisReply **r = calloc((size_t)w.pending, sizeof(*r));
	if (!r)
		return snprintf(err, errlen, "out of memory"), -1;
	int k = w.pending, rc = svn_redis_flush(&w, r, err, errlen);
	int64_t order_bytes = 0, zset_bytes = 0, doc_bytes = 0;
	for (int i = 0; rc == 0 && i < k; i++) {
		int64_t v = r[i]->type == REDIS_REPLY_INTEGER ? r[i]->integer : 0;
		*(i % 3 == 0 ? &order_bytes : i % 3 == 1 ? &doc_bytes : &zset_bytes) += v;
		freeReplyObject(r[i]);
	}
	free(r);
	if (rc < 0 || n == 0)
		return rc;
	out->sampled = n;
	out->redis_sampled_bytes = order_bytes * c->orders / n + zset_bytes * c->customers / n;
	out->redis_doc_bytes = doc_bytes * c->orders / n;
	return 0;
}

int svn_storage_run(struct svn_ctx *x, struct svn_storage *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	long long used = 0;
	if (pg_sizes(x, out, err, errlen) < 0 || redis_sample(x, out, err, errlen) < 0 ||
	    redis_used_memory(x->rc, &used, err, errlen) < 0)
		return -1;
	out->redis_used_delta = used - x->redis_used_before;
	return 0;
}

/* ---- open and close ---- */

struct svn_ctx *svn_open(const struct sql_vs_nosql_config *cfg, char *lost, size_t lostlen, char *err,
                         size_t errlen)
{
	snprintf(lost, lostlen, "%s", "");
	struct svn_ctx *x = calloc(1, sizeof(*x));
	if (!x) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	x->cfg = cfg;
	const char *gone = NULL;
	if (!(x->conn = pg_connect(cfg->pg_url, err, errlen)))
		gone = "PostgreSQL";
	else if (!(x->rc = redis_connect_url(cfg->redis_url, SVN_REDIS_TIMEOUT_MS, err, errlen)))
		gone = "Redis";
	for (int i = 0; !gone && i < SVN_MAX_CLIENTS; i++)
		if (!(x->rcs[i] = redis_connect_url(cfg->redis_url, SVN_REDIS_TIMEOUT_MS, err, errlen)))
			gone = "Redis";
	if (!gone && !(x->pool = pgset_open(cfg->pg_url, NULL, NULL, SVN_MAX_CLIENTS, err, errlen)))
		gone = "PostgreSQL";
	/* a failure here with both servers still there is no lost server: "" */
	if (!gone && (pg_schema_create(x->conn, SCHEMA, err, errlen) < 0 ||
	              redis_del_prefix(x->rc, PREFIX, NULL, err, errlen) < 0))
		gone = x->rc->err ? "Redis" : PQstatus(x->conn) == CONNECTION_BAD ? "PostgreSQL" : "";
	if (!gone)
		return x;
	snprintf(lost, lostlen, "%s", gone);
	char derr[LAB_ERRLEN];
	svn_close(x, derr, sizeof(derr));
	return NULL;
}

/* Drops the schema and deletes the keys, through new connections when the lab's own were lost. */
static int svn_drop(struct svn_ctx *x, char *err, size_t errlen)
{
	int ret = x->conn && PQstatus(x->conn) == CONNECTION_OK
	                  ? pg_schema_drop(x->conn, SCHEMA, err, errlen)
	                  : pg_url_schema_drop(x->cfg->pg_url, SCHEMA, err, errlen);
	char rerr[LAB_ERRLEN];
	if (!x->rc || x->rc->err) {
		if (x->rc)
			redisFree(x->rc);
		x->rc = redis_connect_url(x->cfg->redis_url, SVN_REDIS_TIMEOUT_MS, rerr, sizeof(rerr));
	}
	if (!x->rc || redis_del_prefix(x->rc, PREFIX, NULL, rerr, sizeof(rerr)) < 0) {
		if (ret == 0)
			snprintf(err, errlen, "%s", rerr);
		ret = -1;
	}
	return ret;
}

int svn_close(struct svn_ctx *x, char *err, size_t errlen)
{
	if (!x)
		return 0;
	int ret = -1;
	/* Ctrl-C: lab.c's guard drops the schema and the keys; ours would only contend with it */
	if (lab_interrupted())
		snprintf(err, errlen, "interrupted");
	else
		ret = svn_drop(x, err, errlen);
	pgset_close(x->pool);
	for (int i = 0; i < SVN_MAX_CLIENTS; i++)
		if (x->rcs[i])
			redisFree(x->rcs[i]);
	if (x->rc)
		redisFree(x->rc);
	PQfinish(x->conn);
	free(x);
	return ret;
}
