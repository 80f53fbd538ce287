/*
 * bench_idempotency — what an Idempotency-Key costs: keyed charges per second against the same
 * endpoint without keys, the same clients, in the same run.
 *
 * POST /v1/charges of lab-idempotency at 16 closed-loop clients (common/load.h), alternating
 * unkeyed and keyed runs (two of each, so a noisy neighbour hits both). Without a key a charge is
 * one INSERT; with one (a new key, no card network) it is one prepared statement that inserts the
 * key, finished with its response, and the charge in one transaction, and a SHA-256 of the
 * request. Every 201 is checked against the charges PostgreSQL holds, and pg_stat_statements
 * (when the server has it) says what each charge cost the server: round trips (top-level
 * statements), statements run (the foreign-key check's included) and server time.
 * Targets: the key costs at most 25% of throughput, and at least 2,000 keyed charges/s on this
 * 2-core machine (load generator, API and PostgreSQL share the two cores).
 * A benchmark, not a test: it reports, and exits 0 whether or not the targets are met (2 when a
 * server is unreachable).
 *
 * Run it: make bench, or build/bench_idempotency [seconds per run, default 3].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idempotency.h"
#include "lab.h"
#include "load.h"
#include "pg.h"
#include "term.h"

#define CLIENTS          16
#define ROUNDS           2
#define TARGET_COST      0.25
#define TARGET_KEYED_RPS 2000.0
#define BODY             "{\"amount\": 1250, \"currency\": \"usd\", \"customer\": \"cus_bench\"}"

struct bench_ctx {
	bool keyed;
	int round;
	const char *client;
};

static void request_cb(struct load_request *r, struct evhttp_request *req, int client, uint64_t seq,
                       void *arg)
{
	(void)client;
	struct bench_ctx *bc = arg;
	r->method = EVHTTP_REQ_POST;
	r->body = BODY;
	r->body_len = strlen(BODY);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "X-Client-Id", bc->client);
	if (bc->keyed) {
		/* a fresh key per request: every one is a first request, the path that writes */
		char key[64];
		snprintf(key, sizeof(key), "bench-%d-%llu", bc->round, (unsigned long long)seq);
		evhttp_add_header(h, "Idempotency-Key", key);
	}
}

/* pg_stat_statements on this bench's schema: calls and time of top-level statements, all calls */
struct server_cost {
	double toplevel, calls, ms;
};

struct side {
	double rps_sum;
	uint64_t created, other;
	struct hist latency;
	struct server_cost server; /* summed over the side's runs */
};

#define SQL_SERVER_COST                                                                                      \
	"SELECT coalesce(sum(calls) FILTER (WHERE toplevel), 0), coalesce(sum(calls), 0),"                   \
	" coalesce(sum(total_exec_time) FILTER (WHERE toplevel), 0) FROM pg_stat_statements"                 \
	" WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"                     \
	" AND (query LIKE '%lab_idempotency.%' OR query LIKE '%\"lab_idempotency\"%')"

/* The server's counters now; false when pg_stat_statements cannot be read (the bench goes on). */
static bool server_cost(PGconn *conn, struct server_cost *out)
{
	if (!conn)
		return false;
	PGresult *res = PQexec(conn, SQL_SERVER_COST);
	bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
	if (ok)
		*out = (struct server_cost){atof(PQgetvalue(res, 0, 0)), atof(PQgetvalue(res, 0, 1)),
		                            atof(PQgetvalue(res, 0, 2))};
	PQclear(res);
	return ok;
}

static const char *const CLIENT_IDS[2] = {"bench-unkeyed", "bench-keyed"};

/*
 * ROUNDS rounds of an unkeyed run then a keyed one, into sides[0] and sides[1]; stats: a connection
 * that reads pg_stat_statements around each run, or NULL (*have_stats false when it cannot).
 */
static int run_rounds(struct idempotency_api *api, int seconds, struct side *sides, PGconn *stats,
                      bool *have_stats, char *err, size_t errlen)
{
	struct load_result *res = malloc(sizeof(*res));
	if (!res) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int ret = 0;
	for (int round = 0; round < ROUNDS && ret == 0; round++) {
		for (int keyed = 0; keyed < 2 && ret == 0; keyed++) {
			struct bench_ctx bc = {.keyed = keyed, .round = round, .client = CLIENT_IDS[keyed]};
			struct load_config lc = {.port = idempotency_api_port(api),
			                         .path = "/v1/charges",
			                         .method = EVHTTP_REQ_POST,
			                         .clients = CLIENTS,
			                         .duration_ms = seconds * 1000,
			                         .timeout_ms = 10000,
			                         .request_cb = request_cb,
			                         .arg = &bc};
			struct server_cost before, after;
			*have_stats = *have_stats && server_cost(stats, &before);
			ret = load_run(&lc, res, err, errlen);
			if (ret < 0)
				break;
			struct side *s = &sides[keyed];
			*have_stats = *have_stats && server_cost(stats, &after);
			s->server.toplevel += after.toplevel - before.toplevel;
			s->server.calls += after.calls - before.calls;
			s->server.ms += after.ms - before.ms;
			s->rps_sum += res->rps_2xx;
			s->created += res->status_2xx;
			s->other += res->completed - res->status_2xx + res->errors;
			hist_merge(&s->latency, &res->latency);
		}
	}
	free(res);
	return ret;
}

/* What a charge cost the server on each side, from pg_stat_statements, or why it is not shown. */
static void report_server(const struct term *t, const struct side *sides, bool have_stats)
{
	if (!have_stats) {
		term_printf(
		        t,
		        "\n  per charge on the server: not shown (pg_stat_statements cannot be read here)\n");
		return;
	}
	term_printf(t, "\n");
	struct term_col cols[] = {{"per charge (pg_stat_statements)", 32, 'l'},
	                          {"round trips", 11, 'r'},
	                          {"statements", 10, 'r'},
	                          {"server time", 11, 'r'}};
	term_table_header(t, 2, cols, 4);
	for (int k = 0; k < 2; k++) {
		double n = sides[k].created ? (double)sides[k].created : 1;
		const char *row[] = {
		        k ? "with a key" : "without a key", TERM_NUM(sides[k].server.toplevel / n, 2),
		        TERM_NUM(sides[k].server.calls / n, 2), TERM_US(sides[k].server.ms * 1000 / n)};
		term_table_row(t, 2, cols, 4, row);
	}
	term_printf(t, "  round trips: top-level statements; statements: with those run inside them (the "
	               "foreign-key\n"
	               "  check); server time: their execution, planning not included\n");
}

/* The table and the targets; every 201 checked against the charges PostgreSQL holds. */
static int report(const struct term *t, const struct idempotency_config *cfg, const struct side *sides,
                  bool have_stats, char *err, size_t errlen)
{
	struct term_col cols[] = {{"", 16, 'l'},      {"charges/s", 10, 'r'}, {"p50", 9, 'r'},
	                          {"p99", 9, 'r'},    {"201s", 8, 'r'},       {"in PostgreSQL", 13, 'r'},
	                          {"not 201", 8, 'r'}};
	term_table_header(t, 2, cols, 7);
	double rps[2];
	bool counted_ok = true;
	for (int k = 0; k < 2; k++) {
		int64_t charges = 0, cents = 0;
		if (idempotency_count(cfg, CLIENT_IDS[k], &charges, &cents, err, errlen) < 0)
			return -1;
		if ((uint64_t)charges != sides[k].created)
			counted_ok = false;
		rps[k] = sides[k].rps_sum / ROUNDS;
		const char *row[] = {k ? "with a key" : "without a key",
		                     TERM_NUM(rps[k], 0),
		                     TERM_US(hist_percentile(&sides[k].latency, 50)),
		                     TERM_US(hist_percentile(&sides[k].latency, 99)),
		                     TERM_NUM(sides[k].created, 0),
		                     TERM_NUM(charges, 0),
		                     TERM_NUM(sides[k].other, 0)};
		term_table_row(t, 2, cols, 7, row);
	}
	double cost = rps[0] > 0 ? 1.0 - rps[1] / rps[0] : 1.0;
	bool cost_ok = cost <= TARGET_COST, rps_ok = rps[1] >= TARGET_KEYED_RPS;
	term_printf(t, "\n  the key costs %.0f%% of throughput: target at most %.0f%%   %s%s%s\n", cost * 100,
	            TARGET_COST * 100, cost_ok ? term_green(t) : term_red(t), cost_ok ? "met" : "NOT met",
	            term_reset(t));
	term_printf(t, "  keyed charges/s %s: target at least %s   %s%s%s\n", TERM_NUM(rps[1], 0),
	            TERM_NUM(TARGET_KEYED_RPS, 0), rps_ok ? term_green(t) : term_red(t),
	            rps_ok ? "met" : "NOT met", term_reset(t));
	term_printf(t, "  every 201 is a charge in PostgreSQL: %s\n", counted_ok ? "yes" : "NO");
	report_server(t, sides, have_stats);
	return 0;
}

int main(int argc, char **argv)
{
	int seconds = argc > 1 ? atoi(argv[1]) : 3;
	if (seconds < 1 || seconds > 600) {
		fprintf(stderr, "bench_idempotency: seconds per run must be in 1..600\n");
		return 2;
	}
	struct idempotency_config cfg;
	idempotency_config_default(&cfg, false);
	cfg.require_key = false;
	cfg.pool_min_idle = cfg.pool_size;
	char err[LAB_ERRLEN], url[256];
	pg_url_redact(cfg.pg_url, url, sizeof(url));
	if (idempotency_setup(&cfg, err, sizeof(err)) < 0) {
		fprintf(stderr,
		        "bench_idempotency: cannot connect to PostgreSQL at %s\n  server said: %s\n"
		        "  start it:    make up   (or docker compose up -d --wait, or set LAB_PG_URL)\n",
		        url, err);
		return 2;
	}
	struct idempotency_api *api = idempotency_api_start(&cfg, 0, err, sizeof(err));
	if (!api) {
		fprintf(stderr, "bench_idempotency: cannot start the API: %s\n", err);
		idempotency_teardown(&cfg, err, sizeof(err));
		return 2;
	}
	struct term t;
	term_init(&t, stdout);
	term_printf(
	        &t,
	        "bench_idempotency — keyed vs unkeyed POST /v1/charges, %d clients, %d s a run, %d rounds\n",
	        CLIENTS, seconds, ROUNDS);
	term_printf(&t, "PostgreSQL %s · pool %d · API, load generator and server on the same 2 cores\n\n",
	            url, cfg.pool_size);
	struct side sides[2];
	memset(sides, 0, sizeof(sides));
	hist_init(&sides[0].latency);
	hist_init(&sides[1].latency);
	char serr[LAB_ERRLEN];
	PGconn *stats = pg_connect(cfg.pg_url, serr, sizeof(serr));
	bool have_stats = stats != NULL;
	int ret = run_rounds(api, seconds, sides, stats, &have_stats, err, sizeof(err)) < 0 ||
	                          report(&t, &cfg, sides, have_stats, err, sizeof(err)) < 0
	                  ? 2
	                  : 0;
	if (stats)
		PQfinish(stats);
	if (ret)
		fprintf(stderr, "bench_idempotency: %s\n", err);
	idempotency_api_stop(api);
	idempotency_teardown(&cfg, err, sizeof(err));
	return ret;
}
