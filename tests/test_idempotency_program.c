/*
 * test_idempotency_program.c — lab-idempotency run as a user runs it: the program itself, started
 * by tests/lab_run.h, interrupted or pointed at a Redis that is not there.
 * needs: postgres redis
 * runs: lab-idempotency
 *
 * Apart from test_idempotency.c, whose tests call the lab's functions: these only start the
 * binary and read PostgreSQL and Redis, so they link the common library alone (CMake links
 * lab_<x> to test_<x>.c only), and the line above gives them the lab's lock, so they never run
 * beside test_idempotency on the one schema. A missing PostgreSQL and bad flags are
 * test_labs_cli's, for every lab.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"

static void test_unreachable_redis_exits_2_naming_it_without_the_password(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	int rc = lab_run("idempotency", "LAB_REDIS_URL=redis://:secret@127.0.0.1:1/0", "--quick", out,
	                 sizeof(out), err, sizeof(err));
	assert_int_equal(rc, LAB_EXIT_ENV);
	assert_non_null(strstr(err, "cannot connect to Redis at redis://127.0.0.1:1/0"));
	assert_null(strstr(err, "secret"));
	assert_string_equal(out, "");
}

static void test_ctrl_c_drops_the_schema_and_the_keys(void **state)
{
	(void)state;
	static char out[8192], errout[4096];
	char err[512];
	/* a key as phase 6 leaves one: under the lab's prefix, kept for the 24 h window */
	redisContext *c = redis_connect_url(redis_url_default(), 2000, err, sizeof(err));
	assert_non_null(c);
	redisReply *r = redis_cmd(c, err, sizeof(err), "SET lab:idempotency:ctrl-c:order-1 pending EX 86400");
	assert_non_null(r);
	freeReplyObject(r);
	r = redis_cmd(c, err, sizeof(err), "TTL lab:idempotency:ctrl-c:order-1");
	assert_non_null(r);
	assert_true(r->integer > 86000);
	freeReplyObject(r);
	redisFree(c);
	double stop_ms = 0;
	int rc = lab_interrupt("idempotency", "--quick", "[1/", SIGINT, 15000, &stop_ms, out, sizeof(out),
	                       errout, sizeof(errout));
	print_message("exit %d, %.0f ms after SIGINT; stderr: %s\n", rc, stop_ms, errout);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_idempotency", "lab:idempotency:");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_ctrl_c_drops_the_schema_and_the_keys),
	        cmocka_unit_test(test_unreachable_redis_exits_2_naming_it_without_the_password),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
