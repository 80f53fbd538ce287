/*
 * test_n_plus_one.c — lab-n-plus-one's claims, measured against the real PostgreSQL.
 * needs: postgres
 *
 * Statement counts are the server's (pg_stat_statements, diffed per unit of work) and asserted
 * exactly; so are rows and bytes, which the data determines. Times are only compared with each
 * other (the loop's lead over the JOIN with and without a round trip), or with the delay the
 * proxy was told to add, which is a floor no machine can beat; never with a number of ours.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hist.h"
#include "n_plus_one.h"
#include "pg.h"
#include "proxy.h"

struct fixture {
	struct n_plus_one_config cfg;
	struct n_plus_one_data data; /* the first cfg.users users, counted by the server */
};

static int group_setup(void **state)
{
	static struct fixture fx;
	char err[512];
	n_plus_one_config_default(&fx.cfg, true);
	fx.cfg.repeats = 3;
	if (n_plus_one_setup(&fx.cfg, err, sizeof(err)) < 0 ||
	    n_plus_one_data_count(&fx.cfg, fx.cfg.users, &fx.data, err, sizeof(err)) < 0) {
		fprintf(stderr,
		        "test_n_plus_one: cannot set up against %s: %s (start the servers: make up)\n",
		        fx.cfg.pg_url, err);
		return -1;
	}
	*state = &fx;
	return 0;
}

static int group_teardown(void **state)
{
	char err[512];
	struct fixture *fx = *state;
	return n_plus_one_teardown(&fx->cfg, err, sizeof(err)) < 0 ? -1 : 0;
}

static void test_loop_runs_n_plus_1_statements_join_1_batched_2_for_the_same_data(void **state)
{
	struct fixture *fx = *state;
	const struct n_plus_one_data *d = &fx->data;
	struct n_plus_one_load loop, join, batched;
	char err[512];
	assert_int_equal(n_plus_one_strategy_run(&fx->cfg, NPO_LOOP, &loop, err, sizeof(err)), 0);
	assert_int_equal(n_plus_one_strategy_run(&fx->cfg, NPO_JOIN, &join, err, sizeof(err)), 0);
	assert_int_equal(n_plus_one_strategy_run(&fx->cfg, NPO_BATCHED, &batched, err, sizeof(err)), 0);
	print_message("server counted %lld / %lld / %lld statements; digests %016llx %016llx %016llx\n",
	              (long long)loop.statements, (long long)join.statements, (long long)batched.statements,
	              (unsigned long long)loop.digest, (unsigned long long)join.digest,
	              (unsigned long long)batched.digest);
	/* what PostgreSQL ran, not what the client believes it sent */
	assert_int_equal(loop.statements, fx->cfg.users + 1);
	assert_int_equal(join.statements, 1);
	assert_int_equal(batched.statements, 2);
	assert_int_equal(loop.client_statements, loop.statements);
	/* pg_stat_statements folds the 100 per-user queries into one shape called 100 times */
	assert_int_equal(loop.unit.shapes, 2);
	assert_int_equal(loop.unit.shape[0].calls, fx->cfg.users);
	assert_non_null(strstr(loop.unit.shape[0].query, "orders WHERE user_id = $1"));
	assert_int_equal(loop.unit.shape[1].calls, 1);
	/* the same objects, whatever the path */
	assert_int_equal(loop.digest, join.digest);
	assert_int_equal(loop.digest, batched.digest);
	assert_int_equal(loop.orders, d->orders);
	assert_int_equal(join.orders, d->orders);
	assert_int_equal(batched.orders, d->orders);
	/* rows: users + orders, except the JOIN: a row per order, and one per user without orders */
	assert_int_equal(loop.rows, d->users + d->orders);
	assert_int_equal(batched.rows, d->users + d->orders);
	assert_int_equal(join.rows, d->orders + d->users_without_orders);
	assert_true(d->users_without_orders > 0); /* the seed must exercise the LEFT JOIN */
}

static void test_the_count_follows_n_and_two_loads_agree(void **state)
{
	struct fixture *fx = *state;
	struct n_plus_one_load load;
	char err[512];
	PGconn *conn = pg_connect(fx->cfg.pg_url, err, sizeof(err));
	assert_non_null(conn);
	struct n_plus_one_watch *w = n_plus_one_watch_open(fx->cfg.pg_url, err, sizeof(err));
	assert_non_null(w);
	int sizes[] = {1, 10, 37};
	for (int i = 0; i < 3; i++) {
		/* 4 loads: n_plus_one_measure fails if any two disagree on statements, rows or data */
		assert_int_equal(
		        n_plus_one_measure(conn, w, NPO_LOOP, sizes[i], 4, 5, &load, err, sizeof(err)), 0);
		assert_int_equal(load.statements, sizes[i] + 1);
		assert_int_equal(
		        n_plus_one_measure(conn, w, NPO_BATCHED, sizes[i], 4, 5, &load, err, sizeof(err)), 0);
		assert_int_equal(load.statements, 2);
	}
	n_plus_one_watch_close(w);
	PQfinish(conn);
}

static void test_bytes_the_kernel_counted_equal_the_protocol_messages(void **state)
{
	struct fixture *fx = *state;
	char err[512];
	PGconn *conn = pg_connect(fx->cfg.pg_url, err, sizeof(err));
	assert_non_null(conn);
	for (int s = 0; s < NPO_STRATEGIES; s++) {
		struct n_plus_one_load load;
		assert_int_equal(n_plus_one_measure(conn, NULL, (enum n_plus_one_strategy)s, fx->cfg.users, 1,
		                                    5, &load, err, sizeof(err)),
		                 0);
		print_message("%-24s socket %lld B, protocol %lld B\n",
		              n_plus_one_strategy_name(load.strategy), (long long)load.wire_bytes,
		              (long long)load.protocol_bytes);
		assert_true(load.protocol_bytes > 0);
		assert_int_equal(load.wire_bytes, load.protocol_bytes);
	}
	PQfinish(conn);
}

static void test_join_repeats_user_columns_and_two_has_many_multiply_rows(void **state)
{
	struct fixture *fx = *state;
	const struct n_plus_one_data *d = &fx->data;
	struct n_plus_one_config cfg = fx->cfg;
	cfg.width_rtt_us = 0; /* loopback only here; the proxy's part is in the network test */
	cfg.width_bandwidth = 0;
	struct n_plus_one_width *w = calloc(1, sizeof(*w));
	char err[512];
	assert_int_equal(n_plus_one_width_run(&cfg, w, err, sizeof(err)), 0);
	const struct n_plus_one_load *join = &w->direct[0], *batched = &w->direct[1], *join2 = &w->direct[2],
	                             *batched2 = &w->direct[3];
	assert_int_equal(join->statements, 1);
	assert_int_equal(batched->statements, 2);
	assert_int_equal(join2->statements, 1);
	assert_int_equal(batched2->statements, 3);
	assert_int_equal(join2->digest, batched2->digest);
	assert_int_equal(join2->addresses, d->addresses);
	/* the JOIN sends a user's columns again on each order row after the first: bio included */
	int64_t users_with_orders = d->users - d->users_without_orders;
	assert_true(join->repeated_bytes >= (d->orders - users_with_orders) * cfg.bio_bytes);
	assert_true(join->wire_bytes > batched->wire_bytes + join->repeated_bytes / 2);
	/* two has-many: max(1, orders) x max(1, addresses) rows per user, as the server counts them */
	assert_int_equal(join2->rows, d->join2_rows);
	assert_int_equal(batched2->rows, d->users + d->orders + d->addresses);
	assert_true(join2->rows > batched2->rows);
	assert_int_equal(w->network[0].repeats, 0);
	free(w);
}

static void test_detector_flags_the_loop_and_neither_fix(void **state)
{
	struct fixture *fx = *state;
	struct n_plus_one_detect det;
	char err[512];
	assert_int_equal(n_plus_one_detect_run(&fx->cfg, &det, err, sizeof(err)), 0);
	const struct n_plus_one_unit *loop = &det.units[NPO_LOOP];
	assert_int_equal(loop->flagged, 1);
	assert_int_equal(loop->shape[0].calls, fx->cfg.users);
	assert_non_null(strstr(loop->shape[0].query, "FROM lab_n_plus_one.orders WHERE user_id = $1"));
	for (int s = NPO_JOIN; s < NPO_STRATEGIES; s++) {
		print_message("%-24s %lld statements, %d shapes, flagged %d\n",
		              n_plus_one_strategy_name((enum n_plus_one_strategy)s),
		              (long long)det.units[s].statements, det.units[s].shapes, det.units[s].flagged);
		assert_int_equal(det.units[s].flagged, 0);
		assert_int_equal(det.units[s].statements, n_plus_one_predicted_statements(s, fx->cfg.users));
		assert_int_equal(det.units[s].shapes, det.units[s].statements);
	}
}

static void test_detector_threshold_is_more_than_n_calls(void **state)
{
	struct fixture *fx = *state;
	char err[512];
	PGconn *conn = pg_connect(fx->cfg.pg_url, err, sizeof(err));
	assert_non_null(conn);
	struct n_plus_one_watch *w = n_plus_one_watch_open(fx->cfg.pg_url, err, sizeof(err));
	assert_non_null(w);
	struct n_plus_one_load load;
	/* 5 users: the per-user query runs 5 times, not more than the threshold of 5 */
	assert_int_equal(n_plus_one_measure(conn, w, NPO_LOOP, 5, 1, 5, &load, err, sizeof(err)), 0);
	assert_int_equal(load.unit.shape[0].calls, 5);
	assert_int_equal(load.unit.flagged, 0);
	assert_int_equal(n_plus_one_measure(conn, w, NPO_LOOP, 6, 1, 5, &load, err, sizeof(err)), 0);
	assert_int_equal(load.unit.flagged, 1);
	n_plus_one_watch_close(w);
	PQfinish(conn);
}

static void test_through_the_proxy_the_loops_lead_grows_with_the_round_trip(void **state)
{
	struct fixture *fx = *state;
	struct n_plus_one_config cfg = fx->cfg;
	cfg.sizes[0] = 100;
	cfg.nsizes = 1;
	cfg.rtts_us[0] = 0;
	cfg.rtts_us[1] = 2000;
	cfg.nrtts = 2;
	cfg.net_budget_us = 1000000; /* the full run's: more tries for the cheap JOIN */
	struct n_plus_one_network *n = calloc(1, sizeof(*n));
	struct n_plus_one_load direct;
	char err[512];
	assert_int_equal(n_plus_one_network_run(&cfg, n, err, sizeof(err)), 0);
	assert_int_equal(n_plus_one_strategy_run(&cfg, NPO_LOOP, &direct, err, sizeof(err)), 0);
	const struct n_plus_one_cell *c0 = &n->cells[0][0], *c2 = &n->cells[0][1];
	print_message("loop / JOIN: %.1fx with no added delay, %.1fx at +2 ms (loop %.1f ms, JOIN %.2f ms)\n",
	              c0->loop_over_join, c2->loop_over_join, c2->load[NPO_LOOP].wall_us / 1000.0,
	              c2->load[NPO_JOIN].wall_us / 1000.0);
	for (int k = 0; k < 3; k++) {
		/* the server's counts and the data do not change with the network */
		assert_int_equal(c2->load[k].statements, n_plus_one_predicted_statements(k, 100));
		assert_int_equal(c2->load[k].digest, direct.digest);
		/* the proxy delivered exactly what the lab's socket received */
		assert_int_equal(c2->load[k].proxy_bytes, c2->load[k].wire_bytes);
	}
	/* each of the 101 statements waited out the 2 ms the proxy adds: a floor, whatever the machine */
	assert_true(c2->load[NPO_LOOP].wall_us >= 101 * 2000);
	assert_true(c2->load[NPO_JOIN].wall_us >= 2000);
	assert_true(c2->load[NPO_BATCHED].wall_us >= 2 * 2000);
	/* 101 round trips against 1: the loop's lead over the JOIN grows with the RTT, by far */
	assert_true(c2->loop_over_join > 2.0 * c0->loop_over_join);
	/* and what the 2 ms added to the loop dwarfs what they added to the JOIN */
	double loop_gain = (double)c2->load[NPO_LOOP].wall_us - (double)c0->load[NPO_LOOP].wall_us;
	double join_gain = (double)c2->load[NPO_JOIN].wall_us - (double)c0->load[NPO_JOIN].wall_us;
	assert_true(loop_gain > 10.0 * join_gain);
	free(n);
}

struct cut_arg {
	struct proxy *proxy;
	uint64_t after_bytes; /* cut once the proxy delivered this much to the lab: the load is under way */
	int cut;
};

static void *cut_cb(void *arg)
{
	struct cut_arg *a = arg;
	struct proxy_stats st;
	uint64_t t0 = hist_now_us();
	do {
		usleep(1000);
		proxy_stats(a->proxy, &st);
	} while (st.bytes_down < a->after_bytes && hist_now_us() - t0 < 10000000);
	a->cut = proxy_cut(a->proxy);
	return NULL;
}

static void test_a_cut_connection_mid_load_is_an_error_not_a_hang(void **state)
{
	struct fixture *fx = *state;
	char err[512] = "";
	/* 5 ms each way: the load's 101 round trips take a second, and the cut lands a few in */
	struct proxy_config pc = {.upstream_host = "127.0.0.1",
	                          .upstream_port = 55432,
	                          .delay_up_us = 5000,
	                          .delay_down_us = 5000};
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(fx->cfg.pg_url, &perr);
	assert_non_null(opts);
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (!strcmp(o->keyword, "port") && o->val)
			pc.upstream_port = atoi(o->val);
	PQconninfoFree(opts);
	struct proxy *p = proxy_start(&pc, err, sizeof(err));
	assert_non_null(p);
	PGconn *conn = n_plus_one_connect_via(fx->cfg.pg_url, proxy_port(p), err, sizeof(err));
	assert_non_null(conn);
	struct proxy_stats st;
	proxy_stats(p, &st);
	/* the users (about 26 kB) and a few users' orders past what the connection's start-up received */
	struct cut_arg arg = {.proxy = p, .after_bytes = st.bytes_down + 30000};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, cut_cb, &arg), 0);
	struct n_plus_one_load load;
	uint64_t t0 = hist_now_us();
	int rc = n_plus_one_measure(conn, NULL, NPO_LOOP, 100, 1, 5, &load, err, sizeof(err));
	uint64_t took = hist_now_us() - t0;
	pthread_join(th, NULL);
	print_message("cut %d connection(s); the load returned %d after %.1f ms: %s\n", arg.cut, rc,
	              took / 1000.0, err);
	assert_int_equal(arg.cut, 1);
	assert_int_equal(rc, -1);
	assert_true(strlen(err) > 0);
	/* it stopped at the cut rather than running (or hanging) to the end of its 101 round trips */
	assert_true(took < 101 * 10000);
	assert_int_equal(PQstatus(conn), CONNECTION_BAD);
	PQfinish(conn);
	proxy_free(p);
}

static void test_unreachable_server_exits_2_with_the_url_and_how_to_start_it(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	int rc = lab_run("n-plus-one", "LAB_PG_URL=postgres://lab:secret@127.0.0.1:1/lab", "--quick", out,
	                 sizeof(out), err, sizeof(err));
	assert_int_equal(rc, 2);
	assert_non_null(strstr(err, "cannot connect to PostgreSQL at postgres://lab@127.0.0.1:1/lab"));
	assert_non_null(strstr(err, "make up"));
	assert_null(strstr(err, "secret"));
	assert_string_equal(out, "");
}

static void test_bad_flag_exits_2_and_serve_is_refused(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	assert_int_equal(lab_run("n-plus-one", NULL, "--bogus", out, sizeof(out), err, sizeof(err)), 2);
	assert_non_null(strstr(err, "--bogus"));
	assert_string_equal(out, "");
	assert_int_equal(lab_run("n-plus-one", NULL, "--serve", out, sizeof(out), err, sizeof(err)), 2);
	assert_non_null(strstr(err, "no API"));
}

/* Last: the binary sets up and drops the schema itself. */
static void test_quick_json_run_demonstrates_the_claim(void **state)
{
	(void)state;
	static char out[262144], err[4096];
	int rc = lab_run("n-plus-one", NULL, "--quick --json", out, sizeof(out), err, sizeof(err));
	json_error_t jerr;
	json_t *doc = json_loads(out, 0, &jerr);
	if (!doc)
		print_message("not JSON (%s): %.400s\nstderr: %s\n", jerr.text, out, err);
	assert_non_null(doc);
	/* read everything, free the document, then assert: a failed assert must not leak it */
	char lab[32];
	snprintf(lab, sizeof(lab), "%s", json_string_value(json_object_get(doc, "lab")) ?: "");
	json_t *phases = json_object_get(doc, "phases");
	size_t nphases = json_array_size(phases);
	json_t *loop = json_object_get(json_object_get(json_array_get(phases, 0), "metrics"), "load");
	json_int_t loop_statements = json_integer_value(json_object_get(loop, "statements_server"));
	json_t *verdict = json_object_get(doc, "verdict");
	bool demonstrated = json_is_true(json_object_get(verdict, "demonstrated"));
	print_message("verdict: %s\n", json_string_value(json_object_get(verdict, "evidence")));
	json_decref(doc);
	assert_string_equal(lab, "n-plus-one");
	assert_int_equal(nphases, 6);
	assert_int_equal(loop_statements, 101);
	assert_true(demonstrated);
	assert_int_equal(rc, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_loop_runs_n_plus_1_statements_join_1_batched_2_for_the_same_data),
	        cmocka_unit_test(test_the_count_follows_n_and_two_loads_agree),
	        cmocka_unit_test(test_bytes_the_kernel_counted_equal_the_protocol_messages),
	        cmocka_unit_test(test_join_repeats_user_columns_and_two_has_many_multiply_rows),
	        cmocka_unit_test(test_detector_flags_the_loop_and_neither_fix),
	        cmocka_unit_test(test_detector_threshold_is_more_than_n_calls),
	        cmocka_unit_test(test_through_the_proxy_the_loops_lead_grows_with_the_round_trip),
	        cmocka_unit_test(test_a_cut_connection_mid_load_is_an_error_not_a_hang),
	        cmocka_unit_test(test_unreachable_server_exits_2_with_the_url_and_how_to_start_it),
	        cmocka_unit_test(test_bad_flag_exits_2_and_serve_is_refused),
	        cmocka_unit_test(test_quick_json_run_demonstrates_the_claim),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
