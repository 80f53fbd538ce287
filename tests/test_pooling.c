/*
 * test_pooling.c — lab-pooling's claims, measured against the real PostgreSQL.
 * needs: postgres max_connections (phase 4 fills the server's connection slots, so this test
 * runs alone: CMake gives it RUN_SERIAL)
 *
 * Margins: no level beats pool_size / hold by more than 5% (timers), each reaches at least 75%
 * of it (a request also pays HTTP and a round trip, on a shared 2-core machine), and from twice
 * to ten times the pool size throughput stays flat within 15%: a ratio of two runs, which the
 * machine's load moves together. Nothing asserts an absolute time.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg.h"
#include "pooling.h"

static int group_setup(void **state)
{
	static struct pooling_config cfg;
	char err[512];
	pooling_config_default(&cfg, true);
	if (pooling_setup(&cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "test_pooling: cannot set up against %s: %s (start the servers: make up)\n",
		        cfg.pg_url, err);
		return -1;
	}
	*state = &cfg;
	return 0;
}

static int group_teardown(void **state)
{
	char err[512];
	return pooling_teardown(*state, err, sizeof(err)) < 0 ? -1 : 0;
}

static void test_pooled_is_at_least_10x_a_new_connection_per_request(void **state)
{
	struct pooling_config cfg = *(struct pooling_config *)*state;
	struct pooling_compare *c = calloc(1, sizeof(*c));
	char err[512];
	cfg.compare_requests = 200;
	assert_int_equal(pooling_compare_run(&cfg, c, err, sizeof(err)), 0);
	assert_int_equal(c->direct.status_2xx, 200);
	assert_int_equal(c->pooled.status_2xx, 200);
	/* the server really opened a connection for each direct request, and the pool only its own */
	assert_int_equal(c->connects, 200);
	assert_true(c->pooled_opened <= (uint64_t)cfg.pool_size);
	assert_true(c->speedup >= 10.0);
	free(c);
}

static void test_throughput_is_capped_at_pool_size_over_hold_and_503s_only_past_it(void **state)
{
	struct pooling_config cfg = *(struct pooling_config *)*state;
	struct pooling_exhaust *e = calloc(1, sizeof(*e));
	char err[512];
	/* at, twice (queue wait 3 x 20 ms < 100 ms timeout) and ten times the pool size */
	int levels[] = {5, 10, 50};
	memcpy(cfg.levels, levels, sizeof(levels));
	cfg.nlevels = 3;
	cfg.level_ms = 1200;
	assert_int_equal(pooling_exhaust_run(&cfg, e, err, sizeof(err)), 0);
	assert_int_equal(e->nlevels, 3);
	double cap = cfg.pool_size * 1000.0 / cfg.hold_ms;
	for (int i = 0; i < 3; i++) {
		const struct pooling_level *l = &e->levels[i];
		print_message("clients %d: %.0f req/s (cap %.0f), 503s %llu, max queue %d\n", l->clients,
		              l->rps, cap, (unsigned long long)l->http_503, l->max_waiting);
		assert_true(l->rps <= cap * 1.05);
		assert_true(l->rps >= cap * 0.75);
		assert_int_equal(l->errors, 0);
	}
	/* flat: five times the clients, the same throughput */
	assert_true(e->levels[2].rps >= e->levels[1].rps * 0.85);
	assert_true(e->levels[2].rps <= e->levels[1].rps * 1.15);
	/* no 503 while the queue wait stays under the acquire timeout */
	assert_int_equal(e->levels[0].http_503, 0);
	assert_int_equal(e->levels[1].http_503, 0);
	/* 45 waiters need 180 ms for a connection; the timeout is 100 ms */
	assert_true(e->levels[2].http_503 > 0);
	assert_true(e->levels[2].max_waiting > cfg.pool_size);
	free(e);
}

static void test_leak_drains_the_pool_and_is_named_where_a_small_pool_is_not(void **state)
{
	struct pooling_config cfg = *(struct pooling_config *)*state;
	struct pooling_leak *l = calloc(1, sizeof(*l));
	char err[512];
	assert_int_equal(pooling_leak_run(&cfg, l, err, sizeof(err)), 0);
	/* every connection was leaked on a 404 and never came back */
	assert_int_equal(l->leaky.not_found, (uint64_t)cfg.pool_size);
	assert_int_equal(l->leaky.active, cfg.pool_size);
	assert_int_equal(l->leaky.idle, 0);
	assert_true(l->leaky.drained_at_us > 0);
	assert_int_equal(l->leaky.answered_after_drain, 0);
	assert_true(l->leaky.http_503 > 0);
	assert_true(l->leaky.leaks >= 1);
	assert_string_equal(l->leaky.first_leak.holder, "leaky_orders_handler");
	assert_true(l->leaky.longest_hold_us >= (uint64_t)cfg.leak_threshold_ms * 1000);
	/* the small pool also returns 503s, but keeps answering, holds briefly, and is no leak */
	assert_true(l->undersized.http_503 > 0);
	assert_int_equal(l->undersized.drained_at_us, 0);
	assert_true(l->undersized.rps_ok > 0.5 * l->undersized.pool_size * 1000.0 / cfg.hold_ms);
	assert_int_equal(l->undersized.leaks, 0);
	assert_true(l->undersized.longest_hold_us < (uint64_t)cfg.leak_threshold_ms * 1000);
	free(l);
}

static void test_instances_past_max_connections_get_the_servers_own_error(void **state)
{
	struct pooling_config cfg = *(struct pooling_config *)*state;
	struct pooling_maxconn *m = calloc(1, sizeof(*m));
	char err[512];
	int sizes[] = {1, 5};
	memcpy(cfg.sizes, sizes, sizeof(sizes));
	cfg.nsizes = 2;
	cfg.size_ms = 600;
	assert_int_equal(pooling_maxconn_run(&cfg, m, err, sizeof(err)), 0);
	print_message("failed instance %d after %d connections: %s\n", m->failed_instance, m->opened_total,
	              m->server_error);
	assert_true(m->failed_instance > 0);
	assert_true(m->opened_total <= m->max_connections - m->reserved);
	/* PostgreSQL's two words for it: the reserved-slot check at login, or no free process slot
	 * when connections race past that check together */
	assert_true(strstr(m->server_error, "connection slots are reserved") ||
	            strstr(m->server_error, "too many clients already"));
	/* the slots came back: the CPU phase after it opened its pools */
	assert_int_equal(m->nsizes, 2);
	assert_true(m->sizes[1].rps > 0);
	free(m);
}

static void test_unreachable_server_exits_2_with_the_url_and_how_to_start_it(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	int rc = lab_run("pooling", "LAB_PG_URL=postgres://lab:secret@127.0.0.1:1/lab", "--quick", out,
	                 sizeof(out), err, sizeof(err));
	assert_int_equal(rc, 2);
	assert_non_null(strstr(err, "cannot connect to PostgreSQL at postgres://lab@127.0.0.1:1/lab"));
	assert_non_null(strstr(err, "make up"));
	assert_null(strstr(err, "secret"));
	assert_string_equal(out, "");
}

static void test_bad_flag_exits_2_with_usage(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	assert_int_equal(lab_run("pooling", NULL, "--bogus", out, sizeof(out), err, sizeof(err)), 2);
	assert_non_null(strstr(err, "--bogus"));
	assert_non_null(strstr(err, "--quick"));
	assert_string_equal(out, "");
	assert_int_equal(lab_run("pooling", NULL, "--port nope", out, sizeof(out), err, sizeof(err)), 2);
}

static void test_quick_json_run_demonstrates_the_claim(void **state)
{
	(void)state;
	static char out[65536], err[4096];
	int rc = lab_run("pooling", NULL, "--quick --json", out, sizeof(out), err, sizeof(err));
	json_error_t jerr;
	json_t *doc = json_loads(out, 0, &jerr);
	if (!doc)
		print_message("not JSON (%s): %s\nstderr: %s\n", jerr.text, out, err);
	assert_non_null(doc);
	assert_string_equal(json_string_value(json_object_get(doc, "lab")), "pooling");
	json_t *phases = json_object_get(doc, "phases");
	assert_int_equal(json_array_size(phases), 4);
	json_t *verdict = json_object_get(doc, "verdict");
	print_message("verdict: %s\n", json_string_value(json_object_get(verdict, "evidence")));
	assert_true(json_is_true(json_object_get(verdict, "demonstrated")));
	assert_int_equal(rc, 0);
	json_decref(doc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_pooled_is_at_least_10x_a_new_connection_per_request),
	        cmocka_unit_test(test_throughput_is_capped_at_pool_size_over_hold_and_503s_only_past_it),
	        cmocka_unit_test(test_leak_drains_the_pool_and_is_named_where_a_small_pool_is_not),
	        cmocka_unit_test(test_instances_past_max_connections_get_the_servers_own_error),
	        cmocka_unit_test(test_unreachable_server_exits_2_with_the_url_and_how_to_start_it),
	        cmocka_unit_test(test_bad_flag_exits_2_with_usage),
	        cmocka_unit_test(test_quick_json_run_demonstrates_the_claim),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
