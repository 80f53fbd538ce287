/*
 * schema.c — lab-sql-vs-nosql's phase 6: products whose attributes differ by category, stored as
 * EAV rows (product_attrs: product, attribute, value as text), as a jsonb column with a GIN index
 * (jsonb_path_ops), and as a Redis hash per product; each queried for the products of one
 * attribute value. Nothing here prints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"
#include "redis.h"

/* The attribute asked for: shoes, laptops, toys and kitchen have a color, the rest do not. */
#define ATTR       "color"
#define ATTR_VALUE "red"

static int query_rows(struct svn_worker *w, const char *sql, int64_t *matches, char *err, size_t errlen)
{
	const char *params[] = {ATTR_VALUE};
	PGresult *res = svn_pg(w, sql, 1, params, err, errlen);
	if (!res)
		return -1;
	*matches = PQntuples(res);
	PQclear(res);
	return 0;
}

/* Redis: no query by field; every product hash is read (SCAN, then HGET of a batch pipelined). */
static int query_hashes(struct svn_worker *w, int64_t *matches, char *err, size_t errlen)
{
	char cursor[32] = "0";
	do {
		redisReply *s =
		        svn_redis(w, err, errlen, "SCAN %s MATCH " PREFIX "product:* COUNT 1000", cursor);
		if (!s)
			return -1;
		const redisReply *keys;
		if (svn_scan_reply(s, cursor, sizeof(cursor), &keys, err, errlen) < 0)
			return freeReplyObject(s), -1;
		int rc = 0;
		for (size_t i = 0; i < keys->elements && rc == 0; i++)
			rc = svn_redis_append(w, err, errlen, "HGET %s " ATTR, keys->element[i]->str);
		redisReply **r = calloc(keys->elements + 1, sizeof(*r));
		int n = w->pending;
		if (rc == 0 && r && n > 0)
			rc = svn_redis_flush(w, r, err, errlen);
		for (int i = 0; rc == 0 && r && i < n; i++) {
			w->keys_read++;
			/* a string, or nil for a product without the attribute */
			*matches += r[i]->type == REDIS_REPLY_STRING && !strcmp(r[i]->str, ATTR_VALUE);
			freeReplyObject(r[i]);
		}
		free(r);
		freeReplyObject(s);
		if (rc < 0 || !r)
			return rc < 0 ? -1 : (snprintf(err, errlen, "out of memory"), -1);
	} while (strcmp(cursor, "0") != 0);
	return 0;
}

static int query_design(struct svn_worker *w, int d, int64_t *matches, char *err, size_t errlen)
{
	*matches = 0;
	switch (d) {
	case SVN_EAV:
		return query_rows(w,
		                  "SELECT p.id, p.name FROM " SCHEMA ".products p JOIN " SCHEMA
		                  ".product_attrs a ON a.product_id = p.id WHERE a.attr = '" ATTR
		                  "' AND a.value = $1",
		                  matches, err, errlen);
	case SVN_GIN:
		return query_rows(w,
		                  "SELECT id, name FROM " SCHEMA
		                  ".products WHERE attrs @> jsonb_build_object('" ATTR "', $1::text)",
		                  matches, err, errlen);
	default:
		return query_hashes(w, matches, err, errlen);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int svn_schema_run(struct svn_ctx *x, struct sql_vs_nosql_result *r, char *err, size_t errlen)
{
	int n = x->cfg->repeats < 1 ? 1 : x->cfg->repeats > 16 ? 16 : x->cfg->repeats;
	for (int d = 0; d < SVN_DESIGNS; d++) {
		uint64_t t[16];
		for (int k = 0; k < n; k++) {
			struct svn_worker w;
			svn_solo(x, &w);
			uint64_t t0 = hist_now_us();
			if (query_design(&w, d, &r->attrs[d].matches, err, errlen) < 0) {
				svn_note_lost(x, &w);
				return -1;
			}
			t[k] = hist_now_us() - t0;
			r->attrs[d].round_trips = (int64_t)w.rt;
			r->attrs[d].touched = d == SVN_HASH ? w.keys_read : r->attrs[d].matches;
		}
		qsort(t, (size_t)n, sizeof(t[0]), cmp_u64);
		r->attrs[d].median_us = t[n / 2];
	}
	return 0;
}
