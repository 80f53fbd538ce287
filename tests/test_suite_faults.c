/*
 * test_suite_faults.c — the fault matrix (suite/faults.h, issue 16): every API lab's --serve at
 * once, under steady load on its real route, against PRIVATE servers (scripts/labenv with a state
 * dir and free ports of its own, under this build's directory: restarting the shared PostgreSQL
 * would break every test beside this one), through PostgreSQL restarted, the labs' backends
 * killed, Redis restarted, the network to PostgreSQL cut; then SIGINT. The matrix is printed, and
 * every cell asserted: errors were clear 500/503s (no hang, no reset, no other status), each lab
 * answered steadily again within FAULTS_RECOVER_BOUND_MS of the fault's end, writes were neither
 * lost nor doubled, a lab whose route never talks to Redis served no error while it restarted, and
 * SIGINT ended each lab with exit 0, nothing left and no sanitizer report (the programs are this
 * build's: under the sanitizer build a report fails the test).
 * needs: postgres redis
 * builds: lab-authz lab-cors lab-idempotency lab-pagination
 * builds: lab-pooling lab-put-patch lab-sql-injection lab-versioning
 * (builds, not runs: the labs run on the private servers, so no lab's lock is held)
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "faults.h"

static void test_every_api_lab_survives_each_fault_and_stops_cleanly(void **state)
{
	(void)state;
	/* static: a failed assertion longjmps out, and a heap copy would then show as a leak */
	static struct faults_matrix matrix;
	struct faults_matrix *m = &matrix;
	struct faults_options o = {.bin_dir = LAB_BIN_DIR,
	                           .labenv = LAB_SOURCE_DIR "/scripts/labenv",
	                           .state_dir = LAB_BIN_DIR "/fault-env",
	                           .log = NULL};
	char err[1024];
	if (faults_matrix_run(&o, m, err, sizeof(err)) < 0)
		fail_msg("the fault matrix could not run: %s", err);
	faults_matrix_print(m, stdout);
	assert_int_equal(m->nrows, FAULTS_LABS);
	int writers = 0, redis_users = 0;
	for (int i = 0; i < m->nrows; i++) {
		const struct faults_row *r = &m->rows[i];
		char why[700];
		if (!faults_row_ok(r, why, sizeof(why)))
			fail_msg("lab-%s: %s", r->name, why);
		/* the cells behind the verdict: the load really ran through every fault ... */
		for (int f = 0; f < FAULTS_N; f++) {
			assert_true(r->cells[f].ok >= FAULTS_STEADY);
			assert_int_equal(r->cells[f].bad + r->cells[f].none, 0);
		}
		/* a Redis restart costs a route that never talks to Redis nothing */
		if (r->redis)
			redis_users++;
		else
			assert_int_equal(r->cells[FAULT_REDIS_RESTART].clear, 0);
		if (r->writes) {
			writers++;
			assert_true(r->w.acknowledged > 0);
			assert_true(r->w.found >= r->w.acknowledged);
			assert_int_equal(r->w.lost, 0);
			assert_int_equal(r->w.doubled, 0);
		}
		assert_int_equal(r->exit_code, 0);
		assert_int_equal(r->schemas_left + r->keys_left, 0);
		assert_false(r->sanitizer);
	}
	assert_int_equal(writers, 3); /* authz's orders, idempotency's charges, put-patch's increments */
	assert_int_equal(redis_users, 1); /* authz's deny-list */
	/* ... and each fault really happened: some lab served errors through it (a lab whose pool
	 * waits out a short fault may serve none, so not every lab) */
	for (int f = 0; f < FAULTS_N; f++) {
		uint64_t clear = 0;
		for (int i = 0; i < m->nrows; i++)
			clear += m->rows[i].cells[f].clear;
		if (clear == 0)
			fail_msg("%s: no lab served an error: was the fault injected?",
			         faults_fault_names[f]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_every_api_lab_survives_each_fault_and_stops_cleanly),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
