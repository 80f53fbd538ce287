/*
 * fuzz_pooling.c — lab-pooling's query parameters (?hold_ms=, ?id=), as every route reads them.
 *
 * Feeds: an HTTP request (fuzz_request.h: "GET /orders?id=42&hold_ms=20", headers, body) to
 * pooling_parse_request, the function each route of the API calls before it asks a pool for a
 * connection, for each of the five routes (/pooled, /direct, /orders, /orders-leaky, /cpu).
 *
 * Asserts beyond "no crash":
 *   - a refusal always says why (err set);
 *   - an accepted hold_ms is a whole number in 0..POOLING_HOLD_MS_MAX (it becomes pg_sleep's
 *     argument: never negative, never past what a Ctrl-C allows), and the config's default when
 *     the query names none;
 *   - /orders and /orders-leaky accept exactly the same requests (the leaky bug is after the
 *     query, never in what it reads), with an id in 1..10^9 written back as the same number;
 *     the other routes read no id and accept whatever /pooled accepts;
 *   - the parameters written for PostgreSQL (hold_ms, order, rows) are digits only.
 * links: lab_pooling
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "fuzz_check.h"
#include "fuzz_request.h"

static bool digits(const char *s)
{
	return *s && strspn(s, "0123456789") == strlen(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evhttp_request *req = fuzz_request(data, size);
	if (!req)
		return 0;
	/* the lab's defaults, without touching its URL (pooling_config_default reads the environment) */
	struct pooling_config cfg = {.hold_ms = 20, .cpu_rows = 200000};
	struct pooling_params p[POOLING_ROUTE_COUNT];
	int rc[POOLING_ROUTE_COUNT];
	for (int r = 0; r < POOLING_ROUTE_COUNT; r++) {
		char err[256] = "";
		rc[r] = pooling_parse_request(&cfg, (enum pooling_route)r, req, &p[r], err, sizeof(err));
		check(rc[r] == 0 || (rc[r] == -1 && err[0]));
		if (rc[r] < 0)
			continue;
		check(digits(p[r].hold_ms) && digits(p[r].rows));
		long hold = strtol(p[r].hold_ms, NULL, 10);
		check(hold >= 0 && hold <= POOLING_HOLD_MS_MAX);
		bool orders = r == POOLING_ROUTE_ORDERS || r == POOLING_ROUTE_ORDERS_LEAKY;
		if (orders) {
			check(p[r].order_id >= 1 && p[r].order_id <= 1000000000L && digits(p[r].order));
			check(strtol(p[r].order, NULL, 10) == p[r].order_id);
		} else {
			check(p[r].order[0] == '\0' && p[r].order_id == 0);
		}
	}
	bool named = fuzz_query_count(req, "hold_ms") > 0;
	evhttp_request_free(req);
	check(rc[POOLING_ROUTE_ORDERS] == rc[POOLING_ROUTE_ORDERS_LEAKY]);
	if (rc[POOLING_ROUTE_ORDERS] == 0)
		check(p[POOLING_ROUTE_ORDERS].order_id == p[POOLING_ROUTE_ORDERS_LEAKY].order_id &&
		      !strcmp(p[POOLING_ROUTE_ORDERS].hold_ms, p[POOLING_ROUTE_ORDERS_LEAKY].hold_ms));
	check(rc[POOLING_ROUTE_DIRECT] == rc[POOLING_ROUTE_POOLED] &&
	      rc[POOLING_ROUTE_CPU] == rc[POOLING_ROUTE_POOLED]);
	/* an /orders request that was accepted passed the hold_ms check /pooled makes */
	check(rc[POOLING_ROUTE_ORDERS] != 0 || rc[POOLING_ROUTE_POOLED] == 0);
	if (rc[POOLING_ROUTE_POOLED] == 0 && !named)
		check(strtol(p[POOLING_ROUTE_POOLED].hold_ms, NULL, 10) == cfg.hold_ms);
	return 0;
}
