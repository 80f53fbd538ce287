/*
 * fuzz_pagination_request.c — what lab-pagination's GET /v1/items checks in its query string
 * before a query runs (labs/pagination/request.c: pagination_parse_items, the function the
 * route calls on the raw query, with its key and the clock).
 *
 * The input is the query string (up to a NUL, as the URI parser hands it over); the key and
 * the clock are fixed, and fuzz/corpus/pagination_request/ holds cursors signed with that key,
 * so accepted cursors are reached. Asserted:
 *   - accepted: limit in 1..PAGINATION_LIMIT_MAX, and 20 when the query names no limit; a
 *     cursor accepted only when the query holds "cursor=", and it re-encodes to a cursor that
 *     the same call accepts back to the same position;
 *   - refused: a message, and when the cursor was the reason, it is one of malformed, tampered
 *     or expired;
 *   - a query that holds "%00", "page=" or "offset=" (as a name) is never accepted.
 *
 * links: lab_pagination
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cursor.h"
#include "internal.h"
#include "fuzz_check.h"

/* the key of fuzz_pagination_cursor: bytes 0..31 */
static const unsigned char KEY[PAGINATION_CURSOR_KEY_LEN] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                                             11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                                             22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
#define NOW_S 1700000100
#define TTL_S 3600

/* name= at the start of the query or after an &. */
static int names(const char *q, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = q; (p = strstr(p, name)); p++)
		if ((p == q || p[-1] == '&') && (p[n] == '=' || p[n] == '&' || p[n] == '\0'))
			return 1;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *query = fuzz_text(data, size);
	if (!query)
		return 0;

	struct pagination_items_query q;
	char err[256] = "";
	int r = pagination_parse_items(query, KEY, NOW_S, TTL_S, &q, err, sizeof(err));
	if (r == 0) {
		check(q.limit >= 1 && q.limit <= PAGINATION_LIMIT_MAX);
		check(names(query, "limit") || q.limit == PAGINATION_LIMIT_DEFAULT);
		check(!strstr(query, "%00") && !names(query, "page") && !names(query, "offset"));
		check(!q.has_cursor || strstr(query, "cursor="));
		if (q.has_cursor) {
			char text[PAGINATION_CURSOR_TEXT_MAX], again[128];
			check(q.cursor_status == PAGINATION_CURSOR_OK &&
			      pagination_cursor_encode(KEY, &q.cursor, text, sizeof(text)) == 0);
			snprintf(again, sizeof(again), "cursor=%s", text);
			struct pagination_items_query q2;
			check(pagination_parse_items(again, KEY, NOW_S, TTL_S, &q2, err, sizeof(err)) == 0);
			check(q2.has_cursor && q2.cursor.created_us == q.cursor.created_us &&
			      q2.cursor.id == q.cursor.id && q2.cursor.issued_s == q.cursor.issued_s);
		}
	} else {
		check(r == -1 && err[0] != '\0');
		check(q.cursor_status == PAGINATION_CURSOR_OK ||
		      q.cursor_status == PAGINATION_CURSOR_MALFORMED ||
		      q.cursor_status == PAGINATION_CURSOR_TAMPERED ||
		      q.cursor_status == PAGINATION_CURSOR_EXPIRED);
	}
	free(query);
	return 0;
}
