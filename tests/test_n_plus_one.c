/*
 * test_n_plus_one.c — lab-n-plus-one's claims, measured against the real PostgreSQL.
 * needs: postgres
 *
 * Three groups: the parts (loads, the server's counts, bytes, the detector, a cut connection) on
 * a schema the fixture sets up; one n_plus_one_run with a small config, whose judge must say
 * "demonstrated", and the numbers behind that verdict; and the binary as a user runs it (Ctrl-C,
 * no server, bad flags). Statement counts are the server's (pg_stat_statements, diffed per unit
 * of work) and asserted exactly; so are rows and bytes, which the data determines. Times are
 * compared only by the judge, with each other within one run; the one time asserted here is the
 * floor the proxy's delay puts under a load, which a busy machine can only raise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hist.h"
#include "n_plus_one.h"
#include "pg.h"
#include "proxy.h"

/* A call that takes err must succeed; when not, the failure says what err said. */
#define OK(call)                                                                                             \
	do {                                                                                                 \
		if ((call) != 0)                                                                             \
			fail_msg("%s: %s", #call, err);                                                      \
	} while (0)
#define CONNECTED(p)                                                                                         \
	do {                                                                                                 \
		if (!(p))                                                                                    \
			fail_msg("no %s: %s", #p, err);                                                      \
	} while (0)

/* ---- the parts, on the fixture's schema ---- */

struct fixture {
	struct n_plus_one_config cfg;
	struct n_plus_one_data data; /* the first cfg.users users, counted by the server */
};

static int parts_setup(void **state)
{
	static struct fixture fx;
	char err[512], url[256];
	n_plus_one_config_default(&fx.cfg, true);
	fx.cfg.repeats = 2;
	if (n_plus_one_setup(&fx.cfg, err, sizeof(err)) < 0 ||
	    n_plus_one_data_count(&fx.cfg, fx.cfg.users, &fx.data, err, sizeof(err)) < 0) {
		pg_url_redact(fx.cfg.pg_url, url, sizeof(url));
		fprintf(stderr,
		        "test_n_plus_one: cannot set up against %s: %s (start the servers: make up)\n", url,
		        err);
		return -1;
	}
	*state = &fx;
	return 0;
}

static int parts_teardown(void **state)
{
	char err[512];
	struct fixture *fx = *state;
	if (n_plus_one_teardown(&fx->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "test_n_plus_one: cannot drop schema " N_PLUS_ONE_SCHEMA ": %s\n", err);
		return -1;
	}
	return 0;
}

static void test_loop_runs_n_plus_1_statements_join_1_batched_2_for_the_same_data(void **state)
{
	struct fixture *fx = *state;
	const struct n_plus_one_data *d = &fx->data;
	struct n_plus_one_load loop, join, batched;
	char err[512];
	OK(n_plus_one_strategy_run(&fx->cfg, NPO_LOOP, &loop, err, sizeof(err)));
	OK(n_plus_one_strategy_run(&fx->cfg, NPO_JOIN, &join, err, sizeof(err)));
	OK(n_plus_one_strategy_run(&fx->cfg, NPO_BATCHED, &batched, err, sizeof(err)));
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

static void test_the_seed_makes_the_same_data_on_every_run(void **state)
{
	struct fixture *fx = *state;
	struct n_plus_one_data all;
	struct n_plus_one_load load;
	char err[512];
	OK(n_plus_one_data_count(&fx->cfg, n_plus_one_max_users(&fx->cfg), &all, err, sizeof(err)));
	PGconn *conn = pg_connect(fx->cfg.pg_url, err, sizeof(err));
	CONNECTED(conn);
	OK(n_plus_one_measure(conn, NULL, NPO_JOIN2, fx->cfg.users, 1, 5, &load, err, sizeof(err)));
	PQfinish(conn);
	/* seed 1 with the default sizes, as every version of the lab generated it: the docs' tables and
	 * a reader's second run show these very rows */
	assert_int_equal(all.users, 1000);
	assert_int_equal(all.orders, 10060);
	assert_int_equal(all.addresses, 2519);
	assert_int_equal(fx->data.orders, 986);
	assert_int_equal(load.digest, 0x9a21fb2669e1d400ULL);
}

static void test_the_count_follows_n_and_two_loads_agree(void **state)
{
	struct fixture *fx = *state;
	struct n_plus_one_load load;
	char err[512];
	PGconn *conn = pg_connect(fx->cfg.pg_url, err, sizeof(err));
	CONNECTED(conn);
	struct n_plus_one_watch *w = n_plus_one_watch_open(fx->cfg.pg_url, err, sizeof(err));
	CONNECTED(w);
	int sizes[] = {1, 10, 37};
	for (int i = 0; i < 3; i++) {
		/* 3 loads, 2 of them counted: n_plus_one_measure fails if any two disagree on
		 * statements, rows or data */
		OK(n_plus_one_measure(conn, w, NPO_LOOP, sizes[i], 3, 5, &load, err, sizeof(err)));
		assert_int_equal(load.statements, sizes[i] + 1);
		OK(n_plus_one_measure(conn, w, NPO_BATCHED, sizes[i], 3, 5, &load, err, sizeof(err)));
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
	CONNECTED(conn);
	for (int s = 0; s < NPO_STRATEGIES; s++) {
		struct n_plus_one_load load;
		OK(n_plus_one_measure(conn, NULL, (enum n_plus_one_strategy)s, fx->cfg.users, 1, 5, &load,
		                      err, sizeof(err)));
		print_message("%-24s socket %lld B, protocol %lld B\n",
		              n_plus_one_strategy_name(load.strategy), (long long)load.wire_bytes,
		              (long long)load.protocol_bytes);
		assert_true(load.protocol_bytes > 0);
		assert_int_equal(load.wire_bytes, load.protocol_bytes);
	}
	PQfinish(conn);
}

static void test_detector_threshold_is_more_than_n_calls(void **state)
{
	struct fixture *fx = *state;
	char err[512];
	PGconn *conn = pg_connect(fx->cfg.pg_url, err, sizeof(err));
	CONNECTED(conn);
	struct n_plus_one_watch *w = n_plus_one_watch_open(fx->cfg.pg_url, err, sizeof(err));
	CONNECTED(w);
	struct n_plus_one_load load;
	/* 5 users: the per-user query runs 5 times, not more than the threshold of 5 */
	OK(n_plus_one_measure(conn, w, NPO_LOOP, 5, 1, 5, &load, err, sizeof(err)));
	assert_int_equal(load.unit.shape[0].calls, 5);
	assert_int_equal(load.unit.flagged, 0);
	OK(n_plus_one_measure(conn, w, NPO_LOOP, 6, 1, 5, &load, err, sizeof(err)));
	assert_int_equal(load.unit.shape[0].calls, 6);
	assert_int_equal(load.unit.flagged, 1);
	n_plus_one_watch_close(w);
	PQfinish(conn);
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
	char err[512] = "", host[64];
	/* 5 ms each way: the load's 101 round trips take a second, and the cut lands a few in */
	struct proxy_config pc = {.upstream_host = host, .delay_up_us = 5000, .delay_down_us = 5000};
	OK(pg_url_endpoint(fx->cfg.pg_url, host, sizeof(host), &pc.upstream_port, err, sizeof(err)));
	struct proxy *p = proxy_start(&pc, err, sizeof(err));
	CONNECTED(p);
	PGconn *conn = n_plus_one_connect_via(fx->cfg.pg_url, proxy_port(p), err, sizeof(err));
	CONNECTED(conn);
	struct proxy_stats st;
	proxy_stats(p, &st);
	/* the users (about 26 kB) and a few users' orders past what the connection's start-up received */
	struct cut_arg arg = {.proxy = p, .after_bytes = st.bytes_down + 30000};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, cut_cb, &arg), 0);
	struct n_plus_one_load load;
	int rc = n_plus_one_measure(conn, NULL, NPO_LOOP, 100, 1, 5, &load, err, sizeof(err));
	pthread_join(th, NULL);
	print_message("cut %d connection(s); the load returned %d after %lld of 101 statements: %s\n",
	              arg.cut, rc, (long long)load.client_statements, err);
	assert_int_equal(arg.cut, 1);
	assert_int_equal(rc, -1);
	assert_true(strlen(err) > 0);
	/* it stopped at the cut, under way (the users came) and far from the end of its 101 statements */
	assert_true(load.client_statements >= 1);
	assert_true(load.client_statements < 101);
	assert_int_equal(PQstatus(conn), CONNECTION_BAD);
	PQfinish(conn);
	proxy_free(p);
}

/* ---- one whole run, judged ---- */

struct run_fixture {
	struct n_plus_one_config cfg;
	struct n_plus_one_result *result;
	struct lab_verdict verdict;
	struct lab_answers answers; /* what each phase's --predict question measured */
};

/*
 * The quick config, smaller where the judge does not need more: 100 users only (the page N the
 * phases load), N = 100 through the proxy (the judge compares the largest N) at no added delay
 * and at 2 ms, each cell the best of as many loads as fit in 100 ms, and phase 5 on loopback only
 * (the judge reads its bytes and rows, which the proxy does not change). 2 to 7 s on a busy
 * 2-core machine; the binary's --quick adds 900 users, N = 10, 0.5 ms and phase 5's proxy.
 */
static int run_setup(void **state)
{
	static struct run_fixture rf;
	char err[LAB_ERRLEN], url[256];
	n_plus_one_config_default(&rf.cfg, true);
	rf.cfg.data_users = 100;
	rf.cfg.repeats = 2;
	rf.cfg.sizes[0] = 100;
	rf.cfg.nsizes = 1;
	rf.cfg.rtts_us[0] = 0;
	rf.cfg.rtts_us[1] = 2000;
	rf.cfg.nrtts = 2;
	rf.cfg.net_budget_us = 100000;
	rf.cfg.width_rtt_us = 0;
	rf.cfg.width_bandwidth = 0;
	rf.result = calloc(1, sizeof(*rf.result));
	rf.cfg.hooks = lab_answers_hooks(&rf.answers, &rf.cfg, rf.result);
	if (!rf.result || n_plus_one_run(&rf.cfg, rf.result, err, sizeof(err)) < 0) {
		pg_url_redact(rf.cfg.pg_url, url, sizeof(url));
		fprintf(stderr, "test_n_plus_one: n_plus_one_run against %s: %s\n", url, err);
		free(rf.result);
		return -1;
	}
	n_plus_one_judge(rf.result, &rf.verdict);
	*state = &rf;
	return 0;
}

static int run_teardown(void **state)
{
	struct run_fixture *rf = *state;
	free(rf->result);
	return 0;
}

static void test_run_demonstrates_the_claim_on_the_servers_counts(void **state)
{
	const struct run_fixture *rf = *state;
	const struct n_plus_one_result *r = rf->result;
	print_message("verdict: %s\n", rf->verdict.evidence);
	assert_true(rf->verdict.demonstrated);
	/* what the verdict stands on: pg_stat_statements' counts, 101 / 1 / 2, of the same data */
	assert_int_equal(r->loads[NPO_LOOP].statements, 101);
	assert_int_equal(r->loads[NPO_JOIN].statements, 1);
	assert_int_equal(r->loads[NPO_BATCHED].statements, 2);
	assert_int_equal(r->loads[NPO_LOOP].digest, r->loads[NPO_JOIN].digest);
	assert_int_equal(r->loads[NPO_LOOP].digest, r->loads[NPO_BATCHED].digest);
	assert_int_equal(r->data.users, n_plus_one_max_users(&rf->cfg));
	assert_int_equal(r->page.users, rf->cfg.users);
	/* every phase asked its --predict question, and the answers are these very counts: 1 + N and
	 * 2 statements; the JOIN received more bytes (c); the two-relation JOIN multiplied its rows (b);
	 * the detector flagged one load of five */
	lab_assert_every_phase_asks(&rf->answers, N_PLUS_ONE_PHASES);
	assert_true(lab_answer(&rf->answers, "loop") == rf->cfg.users + 1);
	assert_true(lab_answer(&rf->answers, "batched") == 2);
	assert_true(lab_answer(&rf->answers, "join") == 2);
	assert_true(lab_answer(&rf->answers, "width") == 1);
	assert_true(lab_answer(&rf->answers, "detector") == 1);
	const struct n_plus_one_cell *c = rf->result->network.cells[0];
	assert_true(lab_answer(&rf->answers, "network") ==
	            ((double)c[1].load[NPO_LOOP].wall_us - (double)c[0].load[NPO_LOOP].wall_us) / 1000.0);
	/* the run dropped its schema */
	lab_assert_nothing_left(N_PLUS_ONE_SCHEMA, NULL);
}

static void test_run_through_the_proxy_every_statement_pays_the_round_trip(void **state)
{
	const struct run_fixture *rf = *state;
	const struct n_plus_one_network *n = &rf->result->network;
	const struct n_plus_one_cell *c0 = &n->cells[0][0], *c2 = &n->cells[0][1];
	print_message("at +2 ms: loop %.1f ms, JOIN %.2f ms, batched %.2f ms; a bare round trip %.2f ms\n",
	              c2->load[NPO_LOOP].wall_us / 1000.0, c2->load[NPO_JOIN].wall_us / 1000.0,
	              c2->load[NPO_BATCHED].wall_us / 1000.0, n->rtt_measured_us[1] / 1000.0);
	for (int k = 0; k < 3; k++) {
		/* the server's counts and the data do not change with the network */
		assert_int_equal(c0->load[k].statements, n_plus_one_predicted_statements(k, 100));
		assert_int_equal(c2->load[k].statements, n_plus_one_predicted_statements(k, 100));
		assert_int_equal(c2->load[k].digest, rf->result->loads[NPO_LOOP].digest);
		/* the proxy delivered exactly what the lab's socket received */
		assert_int_equal(c2->load[k].proxy_bytes, c2->load[k].wire_bytes);
	}
	/* each statement waited out the 2 ms the proxy adds to its round trip: a floor that a busy
	 * machine only raises, so it fails only if the statements did not each make a round trip */
	assert_true(c2->load[NPO_LOOP].wall_us >= 101 * 2000);
	assert_true(c2->load[NPO_JOIN].wall_us >= 1 * 2000);
	assert_true(c2->load[NPO_BATCHED].wall_us >= 2 * 2000);
	assert_true(n->rtt_measured_us[1] >= 2000);
}

static void test_run_join_repeats_user_columns_and_two_has_many_multiply_rows(void **state)
{
	const struct run_fixture *rf = *state;
	const struct n_plus_one_data *d = &rf->result->page;
	const struct n_plus_one_width *w = &rf->result->width;
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
	assert_true(join->repeated_bytes >= (d->orders - users_with_orders) * rf->cfg.bio_bytes);
	assert_true(join->wire_bytes > batched->wire_bytes + join->repeated_bytes / 2);
	/* two has-many: max(1, orders) x max(1, addresses) rows per user, as the server counts them */
	assert_int_equal(join2->rows, d->join2_rows);
	assert_int_equal(batched2->rows, d->users + d->orders + d->addresses);
	assert_true(join2->rows > batched2->rows);
}

static void test_run_detector_flags_the_loop_and_neither_fix(void **state)
{
	const struct run_fixture *rf = *state;
	const struct n_plus_one_detect *det = &rf->result->detect;
	const struct n_plus_one_unit *loop = &det->units[NPO_LOOP];
	assert_int_equal(loop->flagged, 1);
	assert_int_equal(loop->shape[0].calls, rf->cfg.users);
	assert_non_null(strstr(loop->shape[0].query, "FROM lab_n_plus_one.orders WHERE user_id = $1"));
	for (int s = NPO_JOIN; s < NPO_STRATEGIES; s++) {
		print_message("%-24s %lld statements, %d shapes, flagged %d\n",
		              n_plus_one_strategy_name((enum n_plus_one_strategy)s),
		              (long long)det->units[s].statements, det->units[s].shapes,
		              det->units[s].flagged);
		assert_int_equal(det->units[s].flagged, 0);
		assert_int_equal(det->units[s].statements, n_plus_one_predicted_statements(s, rf->cfg.users));
		assert_int_equal(det->units[s].shapes, det->units[s].statements);
	}
}

/* The judge on the run's numbers with one of them spoiled: not demonstrated, saying which first. */
static void judge_spoiled(const struct run_fixture *rf, void (*spoil)(struct n_plus_one_result *),
                          const char *first)
{
	struct n_plus_one_result *r = malloc(sizeof(*r));
	assert_non_null(r);
	memcpy(r, rf->result, sizeof(*r));
	spoil(r);
	struct lab_verdict v;
	n_plus_one_judge(r, &v);
	free(r);
	if (v.demonstrated || strncmp(v.evidence, first, strlen(first)) != 0)
		fail_msg("expected \"%s...\", the judge said %s: %s", first, v.demonstrated ? "✔" : "✘",
		         v.evidence);
}

static void spoil_count(struct n_plus_one_result *r)
{
	r->loads[NPO_BATCHED].statements = 3;
}

static void spoil_data(struct n_plus_one_result *r)
{
	r->loads[NPO_JOIN].digest ^= 1;
}

static void spoil_round_trips(struct n_plus_one_result *r)
{
	/* the loop took no longer at 2 ms than with no added delay: no round trip per statement */
	struct n_plus_one_cell *c = r->network.cells[0];
	c[1].load[NPO_LOOP].wall_us = c[0].load[NPO_LOOP].wall_us;
}

static void spoil_detector(struct n_plus_one_result *r)
{
	r->detect.units[NPO_BATCHED].flagged = 1;
}

static void test_judge_says_first_what_disagreed(void **state)
{
	const struct run_fixture *rf = *state;
	judge_spoiled(rf, spoil_count, "the server counted 101, 1 and 3 statements, not 101, 1 and 2");
	judge_spoiled(rf, spoil_data, "the strategies did not return the same data");
	judge_spoiled(rf, spoil_round_trips, "at +2 ms RTT the loop gained 0 µs");
	judge_spoiled(rf, spoil_detector, "the detector did not flag the loop alone");
}

/* ---- the binary, as a user runs it ---- */

static void test_ctrl_c_drops_the_schema_and_exits_130(void **state)
{
	(void)state;
	static char out[65536], err[8192];
	double stop_ms = 0;
	/* the header, the setup and phase 1 come first: 20 s for that on a busy machine */
	int rc = lab_interrupt("n-plus-one", "--quick", "[2/", SIGINT, 20000, &stop_ms, out, sizeof(out), err,
	                       sizeof(err));
	print_message("exit %d, %.0f ms after SIGINT; stderr: %s", rc, stop_ms, err);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	/* phase 1 was told before the signal: its table and the server's count */
	assert_non_null(strstr(out, "[1/6] The ORM-style loop"));
	assert_non_null(strstr(out, "100 x SELECT id, total_cents, status FROM lab_n_plus_one.orders"));
	lab_assert_nothing_left(N_PLUS_ONE_SCHEMA, NULL);
}

/* bad flags and a missing server: test_labs_cli, for every lab */
static void test_serve_is_refused_there_is_no_api(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	assert_int_equal(lab_run("n-plus-one", NULL, "--serve", out, sizeof(out), err, sizeof(err)),
	                 LAB_EXIT_ENV);
	assert_non_null(strstr(err, "no API"));
	assert_string_equal(out, "");
}

int main(void)
{
	const struct CMUnitTest parts[] = {
	        cmocka_unit_test(test_loop_runs_n_plus_1_statements_join_1_batched_2_for_the_same_data),
	        cmocka_unit_test(test_the_seed_makes_the_same_data_on_every_run),
	        cmocka_unit_test(test_the_count_follows_n_and_two_loads_agree),
	        cmocka_unit_test(test_bytes_the_kernel_counted_equal_the_protocol_messages),
	        cmocka_unit_test(test_detector_threshold_is_more_than_n_calls),
	        cmocka_unit_test(test_a_cut_connection_mid_load_is_an_error_not_a_hang),
	};
	const struct CMUnitTest run[] = {
	        cmocka_unit_test(test_run_demonstrates_the_claim_on_the_servers_counts),
	        cmocka_unit_test(test_run_through_the_proxy_every_statement_pays_the_round_trip),
	        cmocka_unit_test(test_run_join_repeats_user_columns_and_two_has_many_multiply_rows),
	        cmocka_unit_test(test_run_detector_flags_the_loop_and_neither_fix),
	        cmocka_unit_test(test_judge_says_first_what_disagreed),
	};
	const struct CMUnitTest binary[] = {
	        cmocka_unit_test(test_ctrl_c_drops_the_schema_and_exits_130),
	        cmocka_unit_test(test_serve_is_refused_there_is_no_api),
	};
	int failed = cmocka_run_group_tests(parts, parts_setup, parts_teardown);
	failed += cmocka_run_group_tests(run, run_setup, run_teardown);
	return failed + cmocka_run_group_tests(binary, NULL, NULL);
}
