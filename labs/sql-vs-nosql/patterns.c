/*
 * patterns.c — the five access patterns, written once for each store as an application would
 * write them, with parameters, one counted call per round trip (clients.c). The PostgreSQL
 * statements of patterns 1 and 2, which run thousands of times, are prepared once on each client
 * connection (svn_prepare_pool), as an application's driver keeps its plans: their text is
 * counted with the pattern, the one-time PREPARE is setup, like the connect. The lines of each
 * implementation are counted: each lies between "loc: <name>" and "loc end" markers, and
 * svn_loc_lines (sql_vs_nosql.c) holds the counts, non-blank lines that are not only a comment,
 * checked against this file by tests/test_sql_vs_nosql.c. Decoding an answer into an order
 * (svn_rows_decode for rows, svn_doc_decode for a document: clients.c) is shared, and counted
 * in none. Nothing here prints.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const CATEGORIES[SVN_CATEGORIES] = {"books",  "shoes", "laptops", "coffee",
                                                       "garden", "toys",  "music",   "kitchen"};

int svn_category_index(const char *name)
{
	for (int i = 0; i < SVN_CATEGORIES; i++)
		if (!strcmp(CATEGORIES[i], name))
			return i;
	return -1;
}

/* A number as a parameter's text, into buf (24 bytes). */
static const char *num(char *buf, int64_t v)
{
	snprintf(buf, 24, "%lld", (long long)v);
	return buf;
}

/* Redis' answer to "is it there": a string reply, or nil. */
static bool is_str(const redisReply *r)
{
	return r && r->type == REDIS_REPLY_STRING;
}

/* ---- pattern 1: an order by id ---- */

/* loc: p1.sql */
static const char P1_SQL[] =
        "SELECT o.id, extract(epoch FROM o.placed_at)::bigint, i.qty, i.price_cents, c.name, c.email, "
        "p.name, p.category, o.status FROM " SCHEMA ".orders o JOIN " SCHEMA
        ".customers c ON c.id = o.customer_id JOIN " SCHEMA ".order_items i ON i.order_id = o.id JOIN " SCHEMA
        ".products p ON p.id = i.product_id WHERE o.id = $1 ORDER BY i.line";

int p1_sql(struct svn_worker *w, int64_t id, struct svn_order *o, char *err, size_t errlen)
{
	char b[24];
	const char *params[] = {num(b, id)};
	PGresult *res = svn_pg_prepared(w, "p1_sql", 1, params, err, errlen);
	if (!res)
		return -1;
	int n = svn_rows_decode(res, o, 1);
	PQclear(res);
	return n == 1 ? 0 : (snprintf(err, errlen, "order %lld not found", (long long)id), -1);
}
/* loc end */

/* loc: p1.jsonb */
static const char P1_JSONB[] = "SELECT doc FROM " SCHEMA ".orders_doc WHERE id = $1";

int p1_jsonb(struct svn_worker *w, int64_t id, struct svn_order *o, char *err, size_t errlen)
{
	char b[24];
	const char *params[] = {num(b, id)};
	PGresult *res = svn_pg_prepared(w, "p1_jsonb", 1, params, err, errlen);
	if (!res)
		return -1;
	int rc = PQntuples(res) == 1
	                 ? svn_doc_decode(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0), o)
	                 : -1;
	PQclear(res);
	return rc == 0 ? 0 : (snprintf(err, errlen, "order %lld not found", (long long)id), -1);
}
/* loc end */

/* loc: p1.redis */
int p1_redis(struct svn_worker *w, int64_t id, struct svn_order *o, char *err, size_t errlen)
{
	redisReply *r = svn_redis(w, err, errlen, "GET " PREFIX "order:%lld", (long long)id);
	if (!r)
		return -1;
	int rc = is_str(r) ? svn_doc_decode(r->str, r->len, o) : -1;
	freeReplyObject(r);
	return rc == 0 ? 0 : (snprintf(err, errlen, "order %lld not found", (long long)id), -1);
}
/* loc end */

/* ---- pattern 2: a customer's last 10 orders ---- */

/* loc: p2.sql */
static const char P2_SQL[] =
        "SELECT o.id, extract(epoch FROM o.placed_at)::bigint, i.qty, i.price_cents FROM (SELECT id, "
        "placed_at FROM " SCHEMA
        ".orders WHERE customer_id = $1 ORDER BY placed_at DESC LIMIT 10) o JOIN " SCHEMA
        ".order_items i ON i.order_id = o.id ORDER BY o.placed_at DESC, i.line";

int p2_sql(struct svn_worker *w, int64_t customer, struct svn_order *o, char *err, size_t errlen)
{
	char b[24];
	const char *params[] = {num(b, customer)};
	PGresult *res = svn_pg_prepared(w, "p2_sql", 1, params, err, errlen);
	if (!res)
		return -1;
	int n = svn_rows_decode(res, o, 10);
	PQclear(res);
	return n;
}
/* loc end */

/* loc: p2.jsonb */
static const char P2_JSONB[] =
        "SELECT doc FROM " SCHEMA ".orders_doc WHERE customer_id = $1 ORDER BY ts DESC LIMIT 10";

int p2_jsonb(struct svn_worker *w, int64_t customer, struct svn_order *o, char *err, size_t errlen)
{
	char b[24];
	const char *params[] = {num(b, customer)};
	PGresult *res = svn_pg_prepared(w, "p2_jsonb", 1, params, err, errlen);
	if (!res)
		return -1;
	int n = 0;
	for (int i = 0; i < PQntuples(res) && i < 10; i++)
		n += svn_doc_decode(PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0), &o[n]) == 0;
	PQclear(res);
	return n;
}
/* loc end */

/* loc: p2.redis */
int p2_redis(struct svn_worker *w, int64_t customer, struct svn_order *o, char *err, size_t errlen)
{
	redisReply *ids = svn_redis(w, err, errlen, "ZREVRANGE " PREFIX "customer:%lld:orders 0 9",
	                            (long long)customer);
	if (!ids)
		return -1;
	int rc = ids->type == REDIS_REPLY_ARRAY ? 0 : (snprintf(err, errlen, "ZREVRANGE: not an array"), -1);
	for (size_t i = 0; rc == 0 && i < ids->elements && i < 10; i++)
		rc = is_str(ids->element[i])
		             ? svn_redis_append(w, err, errlen, "GET " PREFIX "order:%s",
		                                ids->element[i]->str)
		             : (snprintf(err, errlen, "ZREVRANGE: an id that is not a string"), -1);
	freeReplyObject(ids);
	redisReply *docs[10];
	int k = w->pending, n = 0;
	if (rc < 0 || svn_redis_flush(w, docs, err, errlen) < 0)
		return -1;
	for (int i = 0; i < k; i++) {
		n += is_str(docs[i]) && svn_doc_decode(docs[i]->str, docs[i]->len, &o[n]) == 0;
		freeReplyObject(docs[i]);
	}
	return n;
}
/* loc end */

/* pg_stat_statements keeps a statement's text with its constants ('epoch', 10) made $n: each is
 * found there by a part of its text that has none, and that no other statement of the lab has */
const struct svn_statement SVN_PREPARED[SVN_NPREPARED] = {
        {"p1_sql", P1_SQL, "%c.email, p.name, p.category, o.status FROM " SCHEMA ".orders o JOIN%"},
        {"p1_jsonb", P1_JSONB, "SELECT doc FROM " SCHEMA ".orders_doc WHERE id = $1"},
        {"p2_sql", P2_SQL, "%FROM " SCHEMA ".orders WHERE customer_id = $1 ORDER BY placed_at DESC LIMIT%"},
        {"p2_jsonb", P2_JSONB,
         "SELECT doc FROM " SCHEMA ".orders_doc WHERE customer_id = $1 ORDER BY ts DESC%"}};

/* ---- pattern 3: revenue per category, last week ---- */

/* Adds the rows (category, revenue) of res into revenue; counts the bytes of their cells. */
static void add_revenue(struct svn_worker *w, const PGresult *res, int64_t *revenue)
{
	for (int r = 0; r < PQntuples(res); r++) {
		w->bytes_moved += PQgetlength(res, r, 0) + PQgetlength(res, r, 1);
		int c = svn_category_index(PQgetvalue(res, r, 0));
		if (c >= 0)
			revenue[c] += strtoll(PQgetvalue(res, r, 1), NULL, 10);
	}
}

/* loc: p3.sql */
int p3_sql(struct svn_worker *w, int64_t since, int64_t *revenue, char *err, size_t errlen)
{
	char b[24];
	const char *params[] = {num(b, since)};
	PGresult *res =
	        svn_pg(w,
	               "SELECT p.category, sum(i.qty * i.price_cents) FROM " SCHEMA ".orders o JOIN " SCHEMA
	               ".order_items i ON i.order_id = o.id JOIN " SCHEMA ".products p ON p.id = "
	               "i.product_id WHERE o.placed_at >= to_timestamp($1) GROUP BY p.category",
	               1, params, err, errlen);
	if (!res)
		return -1;
	add_revenue(w, res, revenue);
	PQclear(res);
	return 0;
}
/* loc end */

/* loc: p3.jsonb */
int p3_jsonb(struct svn_worker *w, int64_t since, int64_t *revenue, char *err, size_t errlen)
{
	char b[24];
	const char *params[] = {num(b, since)};
	PGresult *res =
	        svn_pg(w,
	               "SELECT it->>'category', sum((it->>'qty')::bigint * (it->>'price_cents')::bigint) "
	               "FROM " SCHEMA ".orders_doc d, jsonb_array_elements(d.doc->'items') it "
	               "WHERE d.ts >= $1 GROUP BY 1",
	               1, params, err, errlen);
	if (!res)
		return -1;
	add_revenue(w, res, revenue);
	PQclear(res);
	return 0;
}
/* loc end */

/*
 * Every order key, a SCAN batch at a time: calls each(w, key, doc, arg) for each document the
 * MGET of the batch found. Shared by patterns 3 and 4 on Redis (counted in both: each needed it).
 */
typedef int (*doc_fn)(struct svn_worker *w, const char *key, const redisReply *doc, void *arg);

/* loc: redis.scan */
/* SCAN may return a key twice (when the keyspace is resized under it): seen[] skips repeats */
struct seen {
	unsigned char *ids;
	size_t cap;
};

static bool seen_before(struct seen *sn, const char *key)
{
	size_t id = (size_t)strtoull(strrchr(key, ':') + 1, NULL, 10);
	if (id >= sn->cap) {
		size_t cap = (id + 1) * 2;
		unsigned char *p = realloc(sn->ids, cap);
		if (!p)
			return true;
		memset(p + sn->cap, 0, cap - sn->cap);
		sn->ids = p, sn->cap = cap;
	}
	bool seen = sn->ids[id];
	sn->ids[id] = 1;
	return seen;
}

static int scan_batch(struct svn_worker *w, const redisReply *keys, struct seen *sn, doc_fn each, void *arg,
                      char *err, size_t errlen)
{
	const char **argv = malloc(sizeof(char *) * (keys->elements + 1));
	if (!argv)
		return snprintf(err, errlen, "out of memory"), -1;
	argv[0] = "MGET";
	for (size_t i = 0; i < keys->elements; i++)
		argv[i + 1] = keys->element[i]->str;
	int rc = svn_redis_append_argv(w, (int)keys->elements + 1, argv, NULL, err, errlen);
	free(argv);
	redisReply *docs = NULL;
	if (rc == 0)
		rc = svn_redis_flush(w, &docs, err, errlen);
	if (rc == 0 && (docs->type != REDIS_REPLY_ARRAY || docs->elements != keys->elements))
		rc = (snprintf(err, errlen, "MGET answered something other than one reply per key"), -1);
	for (size_t i = 0; rc == 0 && i < docs->elements; i++) {
		w->keys_read++;
		w->bytes_moved += (int64_t)(keys->element[i]->len + docs->element[i]->len);
		if (is_str(docs->element[i]) && !seen_before(sn, keys->element[i]->str)) {
			w->orders++;
			if (each(w, keys->element[i]->str, docs->element[i], arg) < 0) {
				snprintf(err, errlen, "out of memory reading the order documents");
				rc = -1;
			}
		}
	}
	if (docs)
		freeReplyObject(docs);
	return rc;
}

static int scan_orders(struct svn_worker *w, doc_fn each, void *arg, char *err, size_t errlen)
{
	char cursor[32] = "0";
	struct seen sn = {NULL, 0};
	int rc = 0;
	do {
		redisReply *s =
		        svn_redis(w, err, errlen, "SCAN %s MATCH " PREFIX "order:* COUNT 1000", cursor);
		if (!s)
			break;
		const redisReply *keys;
		rc = svn_scan_reply(s, cursor, sizeof(cursor), &keys, err, errlen);
		if (rc == 0 && keys->elements > 0)
			rc = scan_batch(w, keys, &sn, each, arg, err, errlen);
		freeReplyObject(s);
	} while (rc == 0 && strcmp(cursor, "0") != 0);
	free(sn.ids);
	return rc == 0 && strcmp(cursor, "0") == 0 ? 0 : -1;
}
/* loc end */

/* loc: p3.redis */
struct week {
	int64_t since, *revenue;
};

static int add_doc_revenue(struct svn_worker *w, const char *key, const redisReply *doc, void *arg)
{
	(void)w, (void)key;
	struct week *wk = arg;
	json_t *d = json_loadb(doc->str, doc->len, 0, NULL), *it;
	size_t i;
	if (json_integer_value(json_object_get(d, "ts")) >= wk->since)
		json_array_foreach(json_object_get(d, "items"), i, it)
		{
			const char *cat = json_string_value(json_object_get(it, "category"));
			int c = cat ? svn_category_index(cat) : -1;
			if (c >= 0)
				wk->revenue[c] += json_integer_value(json_object_get(it, "qty")) *
				                  json_integer_value(json_object_get(it, "price_cents"));
		}
	json_decref(d);
	return 0;
}

int p3_redis(struct svn_worker *w, int64_t since, int64_t *revenue, char *err, size_t errlen)
{
	struct week wk = {since, revenue};
	return scan_orders(w, add_doc_revenue, &wk, err, errlen);
}
/* loc end */

/* ---- pattern 4: a product renamed ---- */

/* loc: p4.sql */
int p4_sql(struct svn_worker *w, int product, const char *name, char *err, size_t errlen)
{
	char b[24];
	const char *params[] = {num(b, product), name};
	int64_t rows = 0;
	int rc = svn_pg_cmd(w, "UPDATE " SCHEMA ".products SET name = $2 WHERE id = $1", 2, params, &rows,
	                    err, errlen);
	w->writes += rows;
	return rc;
}
/* loc end */

/* loc: p4.jsonb */
int p4_jsonb(struct svn_worker *w, int product, const char *name, char *err, size_t errlen)
{
	char b[24];
	const char *params[] = {num(b, product), name};
	int64_t rows = 0;
	int rc = svn_pg_cmd(w,
	                    "UPDATE " SCHEMA ".orders_doc SET doc = jsonb_set(doc, '{items}', (SELECT "
	                    "jsonb_agg(CASE WHEN (it->>'product_id')::int = $1::int THEN jsonb_set(it, "
	                    "'{name}', to_jsonb($2::text)) ELSE it END ORDER BY n) FROM "
	                    "jsonb_array_elements(doc->'items') WITH ORDINALITY e(it, n))) WHERE "
	                    "doc->'items' @> jsonb_build_array(jsonb_build_object('product_id', $1::int))",
	                    2, params, &rows, err, errlen);
	w->writes += rows;
	return rc;
}
/* loc end */

/* The copies found, rewritten: the keys and their new documents. */
struct renamed {
	int product;
	const char *name;
	char **keys, **texts;
	size_t n, cap;
};

/* loc: p4.redis */
static int rename_in_doc(struct svn_worker *w, const char *key, const redisReply *doc, void *arg)
{
	(void)w;
	struct renamed *rn = arg;
	json_t *d = json_loadb(doc->str, doc->len, 0, NULL), *it;
	size_t i;
	bool copy = false;
	json_array_foreach(json_object_get(d, "items"), i, it)
	{
		if (json_integer_value(json_object_get(it, "product_id")) == rn->product) {
			json_object_set_new(it, "name", json_string(rn->name));
			copy = true;
		}
	}
	size_t cap = rn->n == rn->cap ? (rn->cap ? rn->cap * 2 : 256) : rn->cap;
	char **keys = copy ? realloc(rn->keys, cap * sizeof(char *)) : rn->keys;
	char **texts = copy && keys ? realloc(rn->texts, cap * sizeof(char *)) : rn->texts;
	rn->keys = keys ? keys : rn->keys, rn->texts = texts ? texts : rn->texts;
	int rc = copy && (!keys || !texts) ? -1 : 0;
	if (copy && rc == 0) {
		rn->cap = cap;
		rn->keys[rn->n] = strdup(key);
		rn->texts[rn->n] = json_dumps(d, JSON_COMPACT);
		rc = rn->keys[rn->n] && rn->texts[rn->n] ? 0 : -1;
		rn->n++;
	}
	json_decref(d);
	return rc;
}

int p4_redis(struct svn_worker *w, int product, const char *name, char *err, size_t errlen)
{
	struct renamed rn = {product, name, NULL, NULL, 0, 0};
	int rc = scan_orders(w, rename_in_doc, &rn, err, errlen);
	if (rc == 0)
		rc = svn_redis_append(w, err, errlen, "HSET " PREFIX "product:%d name %s", product, name);
	for (size_t i = 0; i < rn.n; i++) {
		if (rc == 0)
			rc = svn_redis_append(w, err, errlen, "SET %s %s", rn.keys[i], rn.texts[i]);
		free(rn.keys[i]), free(rn.texts[i]);
	}
	free(rn.keys), free(rn.texts);
	w->writes += rc == 0 ? (int64_t)rn.n + 1 : 0;
	return rc == 0 ? svn_redis_flush(w, NULL, err, errlen) : -1;
}
/* loc end */

/* ---- pattern 5: the last item ---- */

/* loc: p5.sql.naive */
int p5_sql_naive(struct svn_worker *w, int round, int gap_us, int *sold, char *err, size_t errlen)
{
	char b[24], c[24];
	const char *params[] = {num(b, round), num(c, w->id)};
	PGresult *res =
	        svn_pg(w, "SELECT qty FROM " SCHEMA ".race_stock WHERE variant = 'naive' AND round = $1", 1,
	               params, err, errlen);
	if (!res)
		return -1;
	int qty = PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : 0;
	PQclear(res);
	*sold = 0;
	if (qty <= 0)
		return 0;
	svn_race_pause(w, gap_us);
	if (svn_pg_cmd(w,
	               "UPDATE " SCHEMA
	               ".race_stock SET qty = qty - 1 WHERE variant = 'naive' AND round = $1",
	               1, params, NULL, err, errlen) < 0 ||
	    svn_pg_cmd(w, "INSERT INTO " SCHEMA ".race_sales VALUES ('naive', $1, $2)", 2, params, NULL, err,
	               errlen) < 0)
		return -1;
	*sold = 1;
	return 0;
}
/* loc end */

/* loc: p5.sql.guarded */
int p5_sql_guarded(struct svn_worker *w, int round, int gap_us, int *sold, char *err, size_t errlen)
{
	char b[24], c[24], e2[LAB_ERRLEN];
	const char *params[] = {num(b, round), num(c, w->id)};
	*sold = 0;
	if (svn_pg_cmd(w, "BEGIN", 0, NULL, NULL, err, errlen) < 0)
		return -1;
	PGresult *res = svn_pg(w,
	                       "SELECT qty FROM " SCHEMA
	                       ".race_stock WHERE variant = 'guarded' AND round = $1 FOR UPDATE",
	                       1, params, err, errlen);
	bool ok = res != NULL;
	int qty = ok && PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : 0;
	PQclear(res);
	if (ok && qty > 0) {
		hist_sleep_us(gap_us); /* the row stays locked: the others wait here, then see 0 */
		ok = svn_pg_cmd(w,
		                "UPDATE " SCHEMA
		                ".race_stock SET qty = qty - 1 WHERE variant = 'guarded' AND round = $1",
		                1, params, NULL, err, errlen) == 0 &&
		     svn_pg_cmd(w, "INSERT INTO " SCHEMA ".race_sales VALUES ('guarded', $1, $2)", 2, params,
		                NULL, err, errlen) == 0;
		*sold = ok;
	}
	if (!ok)
		return svn_pg_cmd(w, "ROLLBACK", 0, NULL, NULL, e2, sizeof(e2)), -1;
	if (svn_pg_cmd(w, "COMMIT", 0, NULL, NULL, err, errlen) < 0)
		return *sold = 0, -1;
	return 0;
}
/* loc end */

/* loc: p5.redis.naive */
int p5_redis_naive(struct svn_worker *w, int round, int gap_us, int *sold, char *err, size_t errlen)
{
	redisReply *r = svn_redis(w, err, errlen, "GET " PREFIX "race:naive:%d:stock", round);
	if (!r)
		return -1;
	int qty = is_str(r) ? atoi(r->str) : 0;
	freeReplyObject(r);
	*sold = 0;
	if (qty <= 0)
		return 0;
	svn_race_pause(w, gap_us);
	if (svn_redis_append(w, err, errlen, "DECR " PREFIX "race:naive:%d:stock", round) < 0 ||
	    svn_redis_append(w, err, errlen, "INCR " PREFIX "race:naive:%d:sold", round) < 0 ||
	    svn_redis_flush(w, NULL, err, errlen) < 0)
		return -1;
	*sold = 1;
	return 0;
}
/* loc end */

/* loc: p5.redis.guarded */
int p5_redis_guarded(struct svn_worker *w, int round, int gap_us, int *sold, char *err, size_t errlen)
{
	*sold = 0;
	for (;;) {
		redisReply *r[5] = {0};
		if (svn_redis_append(w, err, errlen, "WATCH " PREFIX "race:guarded:%d:stock", round) < 0 ||
		    svn_redis_append(w, err, errlen, "GET " PREFIX "race:guarded:%d:stock", round) < 0 ||
		    svn_redis_flush(w, r, err, errlen) < 0)
			return -1;
		int qty = is_str(r[1]) ? atoi(r[1]->str) : 0;
		freeReplyObject(r[0]), freeReplyObject(r[1]);
		if (qty <= 0) {
			redisReply *u = svn_redis(w, err, errlen, "UNWATCH");
			return u ? (freeReplyObject(u), 0) : -1;
		}
		hist_sleep_us(gap_us);
		if (svn_redis_append(w, err, errlen, "MULTI") < 0 ||
		    svn_redis_append(w, err, errlen, "DECR " PREFIX "race:guarded:%d:stock", round) < 0 ||
		    svn_redis_append(w, err, errlen, "INCR " PREFIX "race:guarded:%d:sold", round) < 0 ||
		    svn_redis_append(w, err, errlen, "EXEC") < 0 || svn_redis_flush(w, r, err, errlen) < 0)
			return -1;
		/* EXEC: the answers of DECR and INCR, or nil when a WATCHed key changed since */
		int type = r[3]->type;
		for (int i = 0; i < 4; i++)
			freeReplyObject(r[i]);
		if (type == REDIS_REPLY_ARRAY)
			return *sold = 1, 0;
		if (type != REDIS_REPLY_NIL)
			return snprintf(err, errlen, "EXEC answered neither its replies nor nil"), -1;
		w->conflicts++; /* another client changed the stock after our WATCH: look again */
	}
}
/* loc end */
