/*
 * fuzz_sql_injection.c — lab-sql-injection's search parameters, as both routes read them.
 *
 * Feeds: an HTTP request (fuzz_request.h: "GET /v1/notes?user=1&q=...", headers, body) to
 * sqli_parse_search, the function /v1/notes and /v1/vulnerable/notes call before anything costs
 * a query, once as the safe route and once as the naive one; then the safe route's LIKE pattern
 * (sqli_like_escape) of what it accepted.
 *
 * Asserts beyond "no crash":
 *   - a refusal always says why (err set);
 *   - what the safe route accepts: user in 1..1000000000, q, sort and dir under Q_MAX bytes, sort
 *     id|title, dir asc|desc, and no statement text built (sql empty);
 *   - the naive route's string building is reached only as the lab intends: on the naive route,
 *     after the same checks (whatever the safe route accepts the naive one accepts with the same
 *     values; whatever the naive one refuses the safe one refuses), with user a number (the
 *     statement starts with exactly the owner_id the parser read) and the statement the template
 *     with q, sort and dir in it, whole (never cut);
 *   - the LIKE pattern escapes every '%', '_' and '\' and unescapes to q exactly.
 * links: lab_sql_injection
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "fuzz_request.h"
#include "internal.h"

static void check_pattern(const char *q)
{
	char pattern[2 * Q_MAX + 1], back[Q_MAX + 1];
	sqli_like_escape(q, pattern, sizeof(pattern));
	size_t n = 0;
	for (const char *p = pattern; *p; p++) {
		if (*p == LIKE_ESCAPE) {
			p++;
			check(*p == '%' || *p == '_' || *p == LIKE_ESCAPE);
		} else {
			check(*p != '%' && *p != '_');
		}
		check(n < sizeof(back) - 1);
		back[n++] = *p;
	}
	back[n] = '\0';
	check(strcmp(back, q) == 0);
}

static void check_naive(const struct sqli_search *s)
{
	char want[SQL_MAX + 64];
	int n = snprintf(want, sizeof(want),
	                 "SELECT " NOTE_COLUMNS " FROM notes WHERE owner_id = %ld AND title ILIKE '%%%s%%'"
	                 " ORDER BY %s %s LIMIT 100",
	                 s->user, s->q, s->sort, s->dir);
	check(n > 0 && (size_t)n < SQL_MAX && strcmp(want, s->sql) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evhttp_request *req = fuzz_request(data, size);
	if (!req)
		return 0;
	static struct sqli_search safe, naive;
	char err[256] = "", nerr[256] = "";
	int rs = sqli_parse_search(req, false, &safe, err, sizeof(err));
	int rn = sqli_parse_search(req, true, &naive, nerr, sizeof(nerr));
	evhttp_request_free(req);
	check(rs == 0 || (rs == -1 && err[0]));
	check(rn == 0 || (rn == -1 && nerr[0]));
	if (rs == 0) {
		check(safe.user >= 1 && safe.user <= SQLI_USER_MAX);
		check(strlen(safe.q) <= Q_MAX && safe.sql[0] == '\0');
		check(!strcmp(safe.sort, "id") || !strcmp(safe.sort, "title"));
		check(!strcmp(safe.dir, "asc") || !strcmp(safe.dir, "desc"));
		check(rn == 0 && naive.user == safe.user && !strcmp(naive.q, safe.q) &&
		      !strcmp(naive.sort, safe.sort) && !strcmp(naive.dir, safe.dir));
		check_pattern(safe.q);
	}
	if (rn == 0) {
		check(naive.user >= 1 && naive.user <= SQLI_USER_MAX);
		check(strlen(naive.q) <= Q_MAX && strlen(naive.sort) <= Q_MAX && strlen(naive.dir) <= Q_MAX);
		check_naive(&naive);
		/* the safe route refuses only what its allow-list does not hold */
		check(rs == 0 || !strncmp(err, "sort ", 5) || !strncmp(err, "dir ", 4));
	} else {
		check(rs != 0);
	}
	return 0;
}
