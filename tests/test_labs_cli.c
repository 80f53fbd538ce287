/*
 * test_labs_cli — what every lab program does the same way, checked on every lab at once (a new
 * lab is covered the day it is added): bad flags and --help, and a PostgreSQL that is not there
 * or is not PostgreSQL at all. Each is one clear message and exit 2, never a password, never a
 * hang. LAB_NAMES is the list of labs CMake found.
 *
 * needs: postgres redis   (the wrong-server case points LAB_PG_URL at LAB_REDIS_URL's host:port)
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lab.h"
#include "redis.h"
#include "lab_run.h"

static char out[1 << 16], err[1 << 16];

/* Calls check(lab) for every lab in LAB_NAMES. */
static void each_lab(void (*check)(const char *lab))
{
	char names[] = LAB_NAMES;
	int n = 0;
	for (char *save = NULL, *lab = strtok_r(names, " ;", &save); lab; lab = strtok_r(NULL, " ;", &save)) {
		check(lab);
		n++;
	}
	assert_true(n >= 1);
}

static void bad_flag(const char *lab)
{
	assert_int_equal(lab_run(lab, NULL, "--bogus", out, sizeof(out), err, sizeof(err)), LAB_EXIT_ENV);
	assert_non_null(strstr(err, "unknown flag \"--bogus\""));
	assert_non_null(strstr(err, "usage: lab-"));
	assert_string_equal(out, "");
	assert_int_equal(lab_run(lab, NULL, "--port 70000", out, sizeof(out), err, sizeof(err)),
	                 LAB_EXIT_ENV);
	assert_non_null(strstr(err, "--port"));
	assert_string_equal(out, "");
}

static void test_every_lab_refuses_a_bad_flag_with_exit_2_and_usage(void **state)
{
	(void)state;
	each_lab(bad_flag);
}

/* lab_run gives stdin /dev/null: what a script or CI would do, and no one to answer */
static void predict_off_a_terminal(const char *lab)
{
	assert_int_equal(lab_run(lab, NULL, "--quick --predict", out, sizeof(out), err, sizeof(err)),
	                 LAB_EXIT_ENV);
	assert_non_null(strstr(err, "--predict asks its questions on a terminal, and stdin is not one"));
	assert_string_equal(out, "");
}

static void test_every_lab_refuses_predict_without_a_terminal(void **state)
{
	(void)state;
	each_lab(predict_off_a_terminal);
}

static void help(const char *lab)
{
	assert_int_equal(lab_run(lab, NULL, "--help", out, sizeof(out), err, sizeof(err)), LAB_EXIT_OK);
	char want[128];
	snprintf(want, sizeof(want), "usage: lab-%s", lab);
	assert_non_null(strstr(out, want));
	assert_non_null(strstr(out, "answers: \""));
}

static void test_every_lab_prints_its_question_with_help(void **state)
{
	(void)state;
	each_lab(help);
}

static void no_server(const char *lab)
{
	int rc = lab_run(lab, "LAB_PG_URL=postgres://lab:secret@127.0.0.1:1/lab", "--quick", out, sizeof(out),
	                 err, sizeof(err));
	if (rc != LAB_EXIT_ENV)
		fail_msg("lab-%s exited %d, not 2, with no PostgreSQL; it said: %s", lab, rc, err);
	assert_non_null(strstr(err, "cannot connect to PostgreSQL at postgres://lab@127.0.0.1:1/lab"));
	assert_non_null(strstr(err, "make up"));
	assert_null(strstr(err, "secret"));
	assert_string_equal(out, "");
}

static void test_every_lab_without_postgres_names_the_url_without_password_and_exits_2(void **state)
{
	(void)state;
	each_lab(no_server);
}

static void test_every_lab_facing_another_server_on_the_port_exits_2(void **state)
{
	(void)state;
	/* Redis answers there, and never the way PostgreSQL would: the 2 s connect timeout ends
	 * each lab; they wait side by side, so the test costs one timeout, not one per lab */
	char names[] = LAB_NAMES, *labs[64], perr[256], want[256];
	FILE *runs[64];
	int n = 0;
	struct redis_url redis;
	if (redis_url_parse(redis_url_default(), &redis, perr, sizeof(perr)) < 0)
		fail_msg("LAB_REDIS_URL: %s", perr);
	snprintf(want, sizeof(want), "cannot connect to PostgreSQL at postgres://lab@%s:%d/lab", redis.host,
	         redis.port);
	for (char *save = NULL, *lab = strtok_r(names, " ", &save); lab && n < 64;
	     lab = strtok_r(NULL, " ", &save)) {
		char cmd[1024];
		snprintf(cmd, sizeof(cmd),
		         "LAB_PG_URL=postgres://lab:secret@%s:%d/lab %s/lab-%s --quick 2>&1 </dev/null",
		         redis.host, redis.port, LAB_BIN_DIR, lab);
		labs[n] = lab;
		runs[n] = popen(cmd, "r");
		assert_non_null(runs[n]);
		n++;
	}
	assert_true(n >= 1);
	for (int i = 0; i < n; i++) {
		size_t len = fread(out, 1, sizeof(out) - 1, runs[i]);
		out[len] = '\0';
		int status = pclose(runs[i]);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != LAB_EXIT_ENV)
			fail_msg("lab-%s did not exit 2 with Redis where PostgreSQL should be; it said: %s",
			         labs[i], out);
		assert_non_null(strstr(out, want));
		assert_null(strstr(out, "secret"));
	}
	redis_url_free(&redis);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_every_lab_refuses_a_bad_flag_with_exit_2_and_usage),
	        cmocka_unit_test(test_every_lab_prints_its_question_with_help),
	        cmocka_unit_test(test_every_lab_refuses_predict_without_a_terminal),
	        cmocka_unit_test(test_every_lab_without_postgres_names_the_url_without_password_and_exits_2),
	        cmocka_unit_test(test_every_lab_facing_another_server_on_the_port_exits_2),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
