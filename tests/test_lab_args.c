/*
 * test_lab_args.c — the flags every lab shares and a lab's own (common/lab_args.c, through
 * lab_init and lab_init_flags): what each sets, the usage on --help, and a bad command line named
 * on one line of stderr with the usage after it. Pure: no servers.
 *
 * What the runner prints is captured by pointing file descriptors 1 and 2 at temporary files
 * for the length of one call, and compared after they are restored, so a failed assertion is
 * never swallowed by the capture.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lab.h"
#include "pg.h"
#include "redis.h"

#define NAME     "test"
#define QUESTION "Why is the sky blue?"

#include "lab_capture.h"

static void test_no_flags_give_the_defaults_and_the_env_urls(void **state)
{
	(void)state;
	struct run r;
	const char *none[] = {NULL};

	setenv("LAB_PG_URL", "postgres://me@db.example:5432/x", 1);
	setenv("LAB_REDIS_URL", "redis://cache.example:6380/3", 1);
	init_quiet(&r, none);
	assert_false(r.lab.opts.quick);
	assert_false(r.lab.opts.json);
	assert_false(r.lab.opts.step);
	assert_false(r.lab.opts.serve);
	assert_int_equal(r.lab.opts.port, 0);
	assert_int_equal(r.lab.opts.seed, 1);
	assert_string_equal(r.lab.opts.pg_url, "postgres://me@db.example:5432/x");
	assert_string_equal(r.lab.opts.redis_url, "redis://cache.example:6380/3");
	assert_ptr_equal(r.lab.term.out, stdout);
	assert_int_equal(r.lab.phase_count, 2);
	assert_true(json_is_object(r.lab.config));
	assert_true(json_is_array(r.lab.phases));
	run_free(&r);

	unsetenv("LAB_PG_URL");
	setenv("LAB_REDIS_URL", "", 1); /* empty counts as unset */
	init_quiet(&r, none);
	assert_string_equal(r.lab.opts.pg_url, PG_DEFAULT_URL);
	assert_string_equal(r.lab.opts.redis_url, REDIS_DEFAULT_URL);
	run_free(&r);
	unsetenv("LAB_REDIS_URL");
}

static void test_each_flag_sets_its_option(void **state)
{
	(void)state;
	struct run r;
	const char *all[] = {"--quick", "--step", "--seed", "42", "--serve", "--port", "8080", NULL};
	init_quiet(&r, all);
	assert_true(r.lab.opts.quick);
	assert_true(r.lab.opts.step);
	assert_true(r.lab.opts.serve);
	assert_false(r.lab.opts.json);
	assert_int_equal(r.lab.opts.seed, 42);
	assert_int_equal(r.lab.opts.port, 8080);
	run_free(&r);

	const char *eq[] = {"--seed=9223372036854775807", "--port=65535", NULL};
	init_quiet(&r, eq);
	assert_true(r.lab.opts.seed == INT64_MAX);
	assert_int_equal(r.lab.opts.port, 65535);
	assert_false(r.lab.opts.quick);
	run_free(&r);
}

static void test_bad_flag_exits_2_naming_it_with_usage_on_stderr_and_nothing_on_stdout(void **state)
{
	(void)state;
	static const struct {
		const char *args[3];
		const char *named; /* what the one line must name */
	} cases[] = {
	        {{"--bogus"}, "\"--bogus\""},
	        {{"-q"}, "\"-q\""},
	        {{"--quick=yes"}, "\"--quick=yes\""},
	        {{"--port", "abc"}, "\"abc\""},
	        {{"--port", "70000"}, "\"70000\""},
	        {{"--port", "-1"}, "\"-1\""},
	        {{"--port=8o"}, "\"8o\""},
	        {{"--port"}, "--port needs a value"},
	        {{"--seed", "-1"}, "\"-1\""},
	        {{"--seed", " 7"}, "\" 7\""},
	        {{"--seed", "9223372036854775808"}, "\"9223372036854775808\""},
	        {{"--seed", "18446744073709551616"}, "\"18446744073709551616\""},
	        {{"--seed"}, "--seed needs a value"},
	        {{"stray"}, "\"stray\""},
	        {{"--json", "extra"}, "\"extra\""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct run r;
		memset(&r, 0, sizeof(r));
		r.argv[0] = "lab-" NAME;
		for (int a = 0; a < 3 && cases[i].args[a]; a++)
			r.argv[a + 1] = cases[i].args[a];
		capture(&r, init_cb);
		assert_int_equal(r.ret, -1);
		assert_int_equal(r.lab.exit_code, LAB_EXIT_ENV);
		assert_string_equal(r.out, "");
		char *nl = strchr(r.err, '\n');
		assert_non_null(nl);
		*nl = '\0';
		assert_true(strncmp(r.err, "lab-" NAME ": ", strlen("lab-" NAME ": ")) == 0);
		if (!strstr(r.err, cases[i].named))
			fail_msg("\"%s\" does not name %s", r.err, cases[i].named);
		assert_true(strncmp(nl + 1, "usage: lab-" NAME, strlen("usage: lab-" NAME)) == 0);
		run_free(&r);
	}
}

static void test_help_prints_usage_on_stdout_and_exits_0(void **state)
{
	(void)state;
	static const char *const lines[] = {
	        "usage: lab-" NAME " ", "\n  --quick ",       "\n  --json ",   "\n  --step ",
	        "\n  --seed N ",        "\n  --serve ",       "\n  --port N ", "\n  -h, --help ",
	        "\n  LAB_PG_URL ",      "\n  LAB_REDIS_URL ",
	};
	setenv("LAB_PG_URL", "postgres://lab:secretpw@127.0.0.1:55432/lab", 1);
	unsetenv("LAB_REDIS_URL");
	const char *help[] = {"--help", "-h"};
	for (int h = 0; h < 2; h++) {
		struct run r;
		memset(&r, 0, sizeof(r));
		r.argv[0] = "lab-" NAME;
		r.argv[1] = help[h];
		capture(&r, init_cb);
		assert_int_equal(r.ret, -1);
		assert_int_equal(r.lab.exit_code, LAB_EXIT_OK);
		assert_string_equal(r.err, "");
		for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
			if (!strstr(r.out, lines[i]))
				fail_msg("usage lacks \"%s\":\n%s", lines[i], r.out);
		assert_non_null(strstr(r.out, "postgres://lab@127.0.0.1:55432/lab"));
		assert_non_null(strstr(r.out, REDIS_DEFAULT_URL));
		assert_null(strstr(r.out, "secretpw"));
		run_free(&r);
	}
	unsetenv("LAB_PG_URL");
}

/* A lab's own boolean flag (lab_init_flags): set when given, off when not, in the usage, and a
 * value or a prefix of it is still a bad flag. */
static bool own_flag, own_serve_flag;
static const struct lab_flag OWN_FLAGS[] = {
        {"--vulnerable", "also serve the vulnerable routes", &own_flag, false},
        {"--open", "serve with the door open", &own_serve_flag, true}};

static void init_own_cb(struct run *r)
{
	r->ret = lab_init_flags(&r->lab, NAME, QUESTION, 2, OWN_FLAGS, 2, argc_of(r), (char **)r->argv);
}

static void test_a_lab_may_declare_boolean_flags_of_its_own(void **state)
{
	(void)state;
	static const struct {
		const char *args[3];
		int ret;
		bool set;
	} cases[] = {
	        {{"--quick", "--vulnerable"}, 0, true},
	        {{"--serve"}, 0, false},
	        {{"--vulnerable=yes"}, -1, false},
	        {{"--vuln"}, -1, false},
	        /* a serve-only flag without --serve is a usage error naming it */
	        {{"--open"}, -1, false},
	        {{"--open", "--quick"}, -1, false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct run r;
		memset(&r, 0, sizeof(r));
		r.argv[0] = "lab-" NAME;
		for (int a = 0; a < 3 && cases[i].args[a]; a++)
			r.argv[a + 1] = cases[i].args[a];
		own_flag = !cases[i].set; /* the parse must set it either way */
		capture(&r, init_own_cb);
		assert_int_equal(r.ret, cases[i].ret);
		if (r.ret == 0) {
			assert_int_equal(own_flag, cases[i].set);
			assert_string_equal(r.err, "");
		} else {
			assert_int_equal(r.lab.exit_code, LAB_EXIT_ENV);
			assert_non_null(strstr(r.err, cases[i].args[0]));
		}
		run_free(&r);
	}
	/* with --serve, a serve-only flag is taken */
	struct run rs;
	memset(&rs, 0, sizeof(rs));
	rs.argv[0] = "lab-" NAME;
	rs.argv[1] = "--open";
	rs.argv[2] = "--serve";
	own_serve_flag = false;
	capture(&rs, init_own_cb);
	assert_int_equal(rs.ret, 0);
	assert_true(own_serve_flag);
	run_free(&rs);
	/* the usage lists it after the shared flags, with its help; a lab without it does not */
	struct run r;
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	r.argv[1] = "--help";
	capture(&r, init_own_cb);
	assert_int_equal(r.lab.exit_code, LAB_EXIT_OK);
	assert_non_null(strstr(r.out, "[--port N] [--vulnerable] [--open]\n"));
	assert_non_null(strstr(r.out, "\n  --vulnerable also serve the vulnerable routes\n"));
	run_free(&r);
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	r.argv[1] = "--vulnerable";
	capture(&r, init_cb);
	assert_int_equal(r.ret, -1);
	assert_non_null(strstr(r.err, "unknown flag \"--vulnerable\""));
	run_free(&r);
}

/* lab_init on args, a bad command line: its complaint, the first line of stderr (the caller
 * frees it), after checking the exit code and that the usage follows on the next line. */
static char *complaint(const char *const *args)
{
	struct run r;
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	for (int a = 0; args[a]; a++)
		r.argv[a + 1] = args[a];
	capture(&r, init_cb);
	assert_int_equal(r.ret, -1);
	assert_int_equal(r.lab.exit_code, LAB_EXIT_ENV);
	assert_string_equal(r.out, "");
	char *nl = strchr(r.err, '\n');
	assert_non_null(nl);
	assert_true(strncmp(nl + 1, "usage: lab-" NAME, strlen("usage: lab-" NAME)) == 0);
	char *line = strndup(r.err, (size_t)(nl - r.err));
	assert_non_null(line);
	run_free(&r);
	return line;
}

/* A bad argument is quoted on one line whatever it holds: a byte a terminal would act on (an
 * escape sequence, a newline) shown as \xNN, a long one cut after 64 bytes with "...". */
static void test_bad_flag_is_shown_escaped_on_one_line_and_cut_when_long(void **state)
{
	(void)state;
	const char *flag[] = {"--x\x1b[2J\nrm \"\\", NULL};
	char *line = complaint(flag);
	assert_string_equal(line, "lab-" NAME ": unknown flag \"--x\\x1b[2J\\x0arm \\\"\\\\\"");
	free(line);

	const char *port[] = {"--port", "8\x1b]0;title\x07\xc3\xa9", NULL};
	line = complaint(port);
	assert_non_null(strstr(line, "got \"8\\x1b]0;title\\x07\\xc3\\xa9\""));
	free(line);

	char big[301];
	memset(big, 'a', sizeof(big) - 1);
	memcpy(big, "--", 2);
	big[sizeof(big) - 1] = '\0';
	const char *long_flag[] = {big, NULL};
	line = complaint(long_flag);
	char want[128];
	snprintf(want, sizeof(want), "lab-" NAME ": unknown flag \"%.64s...\"", big);
	assert_string_equal(line, want);
	free(line);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_no_flags_give_the_defaults_and_the_env_urls),
	        cmocka_unit_test(test_each_flag_sets_its_option),
	        cmocka_unit_test(test_bad_flag_exits_2_naming_it_with_usage_on_stderr_and_nothing_on_stdout),
	        cmocka_unit_test(test_bad_flag_is_shown_escaped_on_one_line_and_cut_when_long),
	        cmocka_unit_test(test_help_prints_usage_on_stdout_and_exits_0),
	        cmocka_unit_test(test_a_lab_may_declare_boolean_flags_of_its_own),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
