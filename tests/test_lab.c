/*
 * test_lab.c — the runner every lab shares: what it prints and where, the --json document, the
 * exit codes, the signal path, the phase walk. Pure: no servers. Its flags are tested in
 * tests/test_lab_args.c.
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

#include <signal.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lab.h"
#include "pg.h"
#include "redis.h"

#define NAME     "test"
#define QUESTION "Why is the sky blue?"

#include "lab_capture.h"

static void test_json_sends_narration_to_a_sink(void **state)
{
	(void)state;
	struct run r;
	const char *json[] = {"--json", NULL};
	init_quiet(&r, json);
	assert_true(r.lab.opts.json);
	assert_non_null(r.lab.sink);
	assert_ptr_equal(r.lab.term.out, r.lab.sink);
	assert_ptr_not_equal(r.lab.term.out, stdout);
	assert_false(r.lab.term.color);
	run_free(&r);
}

/* A whole --json run: narration, config, a phase with metrics, the verdict. */
static void json_run_cb(struct run *r)
{
	init_cb(r);
	if (r->ret < 0)
		return;
	lab_header(&r->lab, "PostgreSQL %s", "127.0.0.1:55432");
	lab_config_set(&r->lab, "pool_max", json_integer(5));
	lab_phase(&r->lab, "Exhaustion");
	term_printf(&r->lab.term, "narration that must not reach stdout\n");
	lab_phase_metrics(&r->lab, "exhaustion", json_pack("{s:f, s:i}", "rps", 248.1, "http_503", 17));
	struct lab_verdict v;
	lab_verdict_set(&v, !strcmp(r->argv[2] ? r->argv[2] : "", "--quick"), "the claim", "evidence %d", 17);
	r->ret = lab_finish(&r->lab, &v);
}

static json_t *parse_document(const char *out)
{
	json_error_t error;
	/* the whole of stdout must be one document: trailing text fails the parse */
	json_t *doc = json_loads(out, 0, &error);
	if (!doc)
		fail_msg("stdout is not one JSON document (%s): %s", error.text, out);
	size_t len = strlen(out);
	assert_true(len > 0 && out[len - 1] == '\n');
	assert_ptr_equal(strchr(out, '\n'), out + len - 1);
	return doc;
}

static void test_json_verdict_prints_one_document_of_the_agreed_shape(void **state)
{
	(void)state;
	struct run r;
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	r.argv[1] = "--json";
	r.argv[2] = "--quick";
	capture(&r, json_run_cb);
	assert_int_equal(r.ret, LAB_EXIT_OK);
	assert_string_equal(r.err, "");
	assert_null(strstr(r.out, "narration"));
	assert_non_null(strstr(r.out, "248.1"));
	assert_null(strstr(r.out, "248.09"));

	json_t *doc = parse_document(r.out);
	assert_true(json_is_object(doc));
	/* lab, question, config, phases, questions, score, chart, verdict */
	assert_int_equal(json_object_size(doc), 8);
	assert_string_equal(json_string_value(json_object_get(doc, "lab")), NAME);
	assert_true(json_is_string(json_object_get(doc, "question")));
	assert_int_equal(json_array_size(json_object_get(doc, "questions")), 0); /* no phase asks one */
	assert_true(json_is_null(json_object_get(doc, "score")));                /* no --predict */
	assert_true(json_is_null(json_object_get(doc, "chart")));                /* none set */

	json_t *config = json_object_get(doc, "config");
	assert_true(json_is_object(config));
	assert_int_equal(json_integer_value(json_object_get(config, "pool_max")), 5);
	assert_true(json_is_true(json_object_get(config, "quick")));
	assert_int_equal(json_integer_value(json_object_get(config, "seed")), 1);

	json_t *phases = json_object_get(doc, "phases");
	assert_true(json_is_array(phases));
	assert_int_equal(json_array_size(phases), 1);
	json_t *phase = json_array_get(phases, 0);
	assert_int_equal(json_object_size(phase), 2);
	assert_string_equal(json_string_value(json_object_get(phase, "name")), "exhaustion");
	json_t *metrics = json_object_get(phase, "metrics");
	assert_true(json_is_object(metrics));
	assert_true(json_is_real(json_object_get(metrics, "rps")));
	assert_true(json_real_value(json_object_get(metrics, "rps")) == 248.1);
	assert_int_equal(json_integer_value(json_object_get(metrics, "http_503")), 17);

	json_t *verdict = json_object_get(doc, "verdict");
	assert_true(json_is_object(verdict));
	assert_int_equal(json_object_size(verdict), 3);
	assert_true(json_is_true(json_object_get(verdict, "demonstrated")));
	assert_string_equal(json_string_value(json_object_get(verdict, "claim")), "the claim");
	assert_string_equal(json_string_value(json_object_get(verdict, "evidence")), "evidence 17");

	assert_null(r.lab.config);
	assert_null(r.lab.phases);
	assert_null(r.lab.sink);
	json_decref(doc);
	run_free(&r);
}

static void test_json_verdict_not_demonstrated_exits_1(void **state)
{
	(void)state;
	struct run r;
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	r.argv[1] = "--json";
	capture(&r, json_run_cb);
	assert_int_equal(r.ret, LAB_EXIT_NOT_SHOWN);
	assert_string_equal(r.err, "");
	json_t *doc = parse_document(r.out);
	json_t *verdict = json_object_get(doc, "verdict");
	assert_true(json_is_false(json_object_get(verdict, "demonstrated")));
	json_decref(doc);
	run_free(&r);
}

static void narrated_run_cb(struct run *r)
{
	init_cb(r);
	if (r->ret < 0)
		return;
	lab_header(&r->lab, "PostgreSQL %s · pool max %d", "127.0.0.1:55432", 5);
	lab_phase(&r->lab, "First %s", "phase");
	lab_phase(&r->lab, "Second");
	struct lab_verdict v;
	lab_verdict_set(&v, r->argv[1] == NULL, "the claim", "evidence %d", 3);
	r->ret = lab_finish(&r->lab, &v);
}

static void test_narration_reads_title_phases_and_a_verdict_that_exits_0(void **state)
{
	(void)state;
	struct run r;
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	capture(&r, narrated_run_cb);
	assert_int_equal(r.ret, LAB_EXIT_OK);
	assert_string_equal(r.err, "");
	/* stdout is a file here: no colour codes */
	assert_string_equal(r.out, "lab-" NAME " — \"" QUESTION "\"\n"
	                           "PostgreSQL 127.0.0.1:55432 · pool max 5\n"
	                           "\n[1/2] First phase\n"
	                           "\n[2/2] Second\n"
	                           "\n✔ demonstrated: the claim\n"
	                           "  evidence 3\n");
	run_free(&r);
}

static void test_verdict_not_demonstrated_says_so_and_exits_1(void **state)
{
	(void)state;
	struct run r;
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	r.argv[1] = "--quick";
	capture(&r, narrated_run_cb);
	assert_int_equal(r.ret, LAB_EXIT_NOT_SHOWN);
	const char *tail = "\n✘ not demonstrated: the claim\n  evidence 3\n";
	size_t n = strlen(r.out), t = strlen(tail);
	assert_true(n >= t);
	assert_string_equal(r.out + n - t, tail);
	run_free(&r);
}

static void step_cb(struct run *r)
{
	init_cb(r);
	if (r->ret < 0)
		return;
	lab_phase(&r->lab, "One");
}

static void test_step_waits_for_one_line_on_stdin_before_a_phase(void **state)
{
	(void)state;
	char path[] = "/tmp/test_lab_stdin_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "\nleft\n", 6), 6);
	close(fd);
	assert_non_null(freopen(path, "r", stdin));

	struct run r;
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	r.argv[1] = "--step";
	capture(&r, step_cb);
	assert_string_equal(r.out, "  (Enter to go on)\n[1/2] One\n");
	char rest[16] = "";
	assert_non_null(fgets(rest, sizeof(rest), stdin));
	assert_string_equal(rest, "left\n"); /* the phase took one line, not more */
	run_free(&r);

	/* at EOF (nobody to press Enter) it goes on */
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	r.argv[1] = "--step";
	capture(&r, step_cb);
	assert_string_equal(r.out, "  (Enter to go on)\n[1/2] One\n");
	run_free(&r);

	/* with --json nothing waits and nothing is read */
	assert_non_null(freopen(path, "r", stdin));
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	r.argv[1] = "--step";
	r.argv[2] = "--json";
	capture(&r, step_cb);
	assert_string_equal(r.out, "");
	assert_non_null(fgets(rest, sizeof(rest), stdin));
	assert_string_equal(rest, "\n");
	run_free(&r);

	unlink(path);
	assert_non_null(freopen("/dev/null", "r", stdin));
}

static void pg_env_error_cb(struct run *r)
{
	init_cb(r);
	r->ret = lab_env_error(&r->lab, "PostgreSQL", "postgres://lab:secretpw@127.0.0.1:1/lab",
	                       "connection refused\n\tIs the server running?\n");
}

static void redis_env_error_cb(struct run *r)
{
	init_cb(r);
	r->ret = lab_env_error(&r->lab, "Redis", "redis://:hunter2@127.0.0.1:1/0", "Connection refused");
}

static void test_env_error_names_the_url_without_password_and_how_to_start_it(void **state)
{
	(void)state;
	struct run r;
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	capture(&r, pg_env_error_cb);
	assert_int_equal(r.ret, LAB_EXIT_ENV);
	assert_string_equal(r.out, "");
	assert_string_equal(r.err,
	                    "lab-" NAME ": cannot connect to PostgreSQL at postgres://lab@127.0.0.1:1/lab\n"
	                    "  server said: connection refused Is the server running?\n"
	                    "  start it:    make up   (or docker compose up -d --wait, or set LAB_PG_URL)\n");
	assert_null(r.lab.config); /* freed */
	run_free(&r);

	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	r.argv[1] = "--json";
	capture(&r, redis_env_error_cb);
	assert_int_equal(r.ret, LAB_EXIT_ENV);
	assert_string_equal(r.out, "");
	assert_string_equal(
	        r.err, "lab-" NAME ": cannot connect to Redis at redis://127.0.0.1:1/0\n"
	               "  server said: Connection refused\n"
	               "  start it:    make up   (or docker compose up -d --wait, or set LAB_REDIS_URL)\n");
	assert_null(r.lab.sink);
	run_free(&r);
}

static void fail_cb(struct run *r)
{
	init_cb(r);
	r->ret = lab_fail(&r->lab, "schema %s: %s", "lab_test", "permission denied");
}

static void test_fail_prints_one_line_on_stderr_and_exits_2(void **state)
{
	(void)state;
	struct run r;
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	capture(&r, fail_cb);
	assert_int_equal(r.ret, LAB_EXIT_ENV);
	assert_string_equal(r.out, "");
	assert_string_equal(r.err, "lab-" NAME ": schema lab_test: permission denied\n");
	run_free(&r);
}

static void run_failed_pg_cb(struct run *r)
{
	init_cb(r);
	r->ret = lab_run_failed(&r->lab, "PostgreSQL", "server closed the connection unexpectedly");
}

static void run_failed_none_cb(struct run *r)
{
	init_cb(r);
	r->ret = lab_run_failed(&r->lab, "", "the phase found no rows");
}

static void test_run_failed_names_the_lost_server_by_its_url_or_else_just_fails(void **state)
{
	(void)state;
	struct run r;
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	setenv("LAB_PG_URL", "postgres://lab:secret@127.0.0.1:55432/lab", 1);
	capture(&r, run_failed_pg_cb);
	unsetenv("LAB_PG_URL");
	assert_int_equal(r.ret, LAB_EXIT_ENV);
	assert_non_null(strstr(r.err,
	                       "lab-" NAME ": lost PostgreSQL at postgres://lab@127.0.0.1:55432/lab: server "
	                       "closed the connection unexpectedly\n"));
	assert_null(strstr(r.err, "secret"));
	run_free(&r);
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	capture(&r, run_failed_none_cb);
	assert_int_equal(r.ret, LAB_EXIT_ENV);
	assert_string_equal(r.err, "lab-" NAME ": the phase found no rows\n");
	run_free(&r);
}

static void test_free_twice_after_a_verdict_is_harmless(void **state)
{
	(void)state;
	struct run r;
	memset(&r, 0, sizeof(r));
	r.argv[0] = "lab-" NAME;
	r.argv[1] = "--json";
	capture(&r, json_run_cb);
	assert_int_equal(r.ret, LAB_EXIT_NOT_SHOWN);
	/* the verdict freed the lab; a cleanup path that frees again must not free twice */
	lab_free(&r.lab);
	lab_free(&r.lab);
	assert_null(r.lab.config);
	assert_null(r.lab.phases);
	assert_null(r.lab.sink);
	run_free(&r);
}

/* A child process runs a lab's signal path: what it returns is its exit code. */
static int run_child(int (*body)(void), char *errout, size_t errlen)
{
	int errp[2];
	assert_int_equal(pipe(errp), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(errp[1], 2);
		close(errp[0]);
		close(errp[1]);
		exit(body());
	}
	close(errp[1]);
	size_t n = 0;
	ssize_t r;
	while (n + 1 < errlen && (r = read(errp[0], errout + n, errlen - 1 - n)) > 0)
		n += (size_t)r;
	errout[n] = '\0';
	close(errp[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void *send_sigterm_later_cb(void *arg)
{
	(void)arg;
	usleep(300 * 1000); /* lab_serve_wait is waiting by then; if not, the test fails: exit 130 */
	kill(getpid(), SIGTERM);
	return NULL;
}

static int serve_until_sigterm(void)
{
	/* servers nobody listens on: should the signal take the hard way, it touches no shared one */
	setenv("LAB_PG_URL", "postgres://lab:secret@127.0.0.1:1/lab", 1);
	setenv("LAB_REDIS_URL", "redis://:secret@127.0.0.1:1/0", 1);
	struct lab lab;
	char *argv[] = {"lab-" NAME, "--serve", NULL};
	if (lab_init(&lab, NAME, "q?", 1, 2, argv) < 0)
		return 100;
	pthread_t t;
	pthread_create(&t, NULL, send_sigterm_later_cb, NULL);
	FILE *quiet = freopen("/dev/null", "w", stdout);
	(void)quiet;
	int sig = lab_serve_wait(&lab, 4242, NULL);
	pthread_join(t, NULL);
	lab_free(&lab);
	return sig;
}

static void test_serve_wait_returns_the_signal_so_the_api_stops_in_order(void **state)
{
	(void)state;
	char err[1024];
	assert_int_equal(run_child(serve_until_sigterm, err, sizeof(err)), SIGTERM);
	assert_string_equal(err, "");
}

static int interrupted_mid_run(void)
{
	/* servers nobody listens on: the cleanup is tried, fails at once and says so */
	setenv("LAB_PG_URL", "postgres://lab:secret@127.0.0.1:1/lab", 1);
	setenv("LAB_REDIS_URL", "redis://:secret@127.0.0.1:1/0", 1);
	struct lab lab;
	char *argv[] = {"lab-" NAME, NULL};
	if (lab_init(&lab, NAME, "q?", 1, 1, argv) < 0)
		return 100;
	kill(getpid(), SIGINT);
	for (int i = 0; i < 100 && !lab_interrupted(); i++)
		usleep(20 * 1000);
	/* the way out of main waits for the guard's cleanup, which exits 130 */
	return lab_interrupted() ? 0 : 101;
}

static void test_ctrl_c_mid_run_cleans_up_and_exits_130_without_passwords(void **state)
{
	(void)state;
	char err[4096];
	assert_int_equal(run_child(interrupted_mid_run, err, sizeof(err)), LAB_EXIT_INTERRUPTED);
	assert_non_null(strstr(err, "interrupted: dropping schema lab_" NAME " and keys lab:" NAME ":*"));
	assert_non_null(strstr(err, "could not drop schema lab_" NAME " at postgres://lab@127.0.0.1:1/lab"));
	assert_non_null(strstr(err, "could not delete keys lab:" NAME ":* at redis://127.0.0.1:1/0"));
	assert_null(strstr(err, "secret"));
}

struct walk_result {
	int ran[3];
	int order;
	int begun, ended;
};

static int phase_ok(const void *cfg, void *res, char *err, size_t errlen)
{
	(void)cfg, (void)err, (void)errlen;
	struct walk_result *w = res;
	w->ran[w->order] = w->order + 1;
	w->order++;
	return 0;
}

static int phase_fails(const void *cfg, void *res, char *err, size_t errlen)
{
	(void)cfg, (void)res;
	snprintf(err, errlen, "phase two broke");
	return -1;
}

/* each hook is handed its phase's own entry of the list: its name is "one", "two", "three" */
static const char *const WALK_NAMES[] = {"one", "two", "three"};

static void walk_begin_cb(int phase, const struct lab_phase_def *def, void *arg)
{
	if (!strcmp(def->name, WALK_NAMES[phase]))
		((struct walk_result *)arg)->begun += phase + 1;
}

static void walk_end_cb(int phase, const struct lab_phase_def *def, void *arg)
{
	if (!strcmp(def->name, WALK_NAMES[phase]))
		((struct walk_result *)arg)->ended += phase + 1;
}

static void test_walk_runs_phases_in_order_and_stops_at_the_first_failure(void **state)
{
	(void)state;
	struct walk_result w = {0};
	struct lab_phase_hooks hooks = {walk_begin_cb, walk_end_cb, &w};
	const struct lab_phase_def all_ok[] = {
	        {"one", phase_ok, NULL}, {"two", phase_ok, NULL}, {"three", phase_ok, NULL}};
	char err[128] = "";
	assert_int_equal(lab_phases_walk(all_ok, 3, NULL, &w, &hooks, err, sizeof(err)), 0);
	assert_int_equal(w.ran[0], 1);
	assert_int_equal(w.ran[2], 3);
	assert_int_equal(w.begun, 1 + 2 + 3);
	assert_int_equal(w.ended, 1 + 2 + 3);

	memset(&w, 0, sizeof(w));
	const struct lab_phase_def broken[] = {
	        {"one", phase_ok, NULL}, {"two", phase_fails, NULL}, {"three", phase_ok, NULL}};
	assert_int_equal(lab_phases_walk(broken, 3, NULL, &w, &hooks, err, sizeof(err)), -1);
	assert_string_equal(err, "phase two broke");
	assert_int_equal(w.order, 1); /* phase three never ran */
	assert_int_equal(w.begun, 3); /* phases one and two began */
	assert_int_equal(w.ended, 1); /* only phase one ended */
}

static void test_verdict_set_cuts_long_evidence_and_keeps_the_claim(void **state)
{
	(void)state;
	struct lab_verdict v;
	char big[4000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	lab_verdict_set(&v, true, "the claim", "%s", big);
	assert_true(v.demonstrated);
	assert_string_equal(v.claim, "the claim");
	assert_int_equal(strlen(v.evidence), sizeof(v.evidence) - 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        /* first: they fork, and a child must not inherit the guard thread of a lab_init that
	         * ran in this process (the sanitizer would find a thread it cannot stop) */
	        cmocka_unit_test(test_serve_wait_returns_the_signal_so_the_api_stops_in_order),
	        cmocka_unit_test(test_ctrl_c_mid_run_cleans_up_and_exits_130_without_passwords),
	        cmocka_unit_test(test_json_sends_narration_to_a_sink),
	        cmocka_unit_test(test_json_verdict_prints_one_document_of_the_agreed_shape),
	        cmocka_unit_test(test_json_verdict_not_demonstrated_exits_1),
	        cmocka_unit_test(test_narration_reads_title_phases_and_a_verdict_that_exits_0),
	        cmocka_unit_test(test_verdict_not_demonstrated_says_so_and_exits_1),
	        cmocka_unit_test(test_step_waits_for_one_line_on_stdin_before_a_phase),
	        cmocka_unit_test(test_env_error_names_the_url_without_password_and_how_to_start_it),
	        cmocka_unit_test(test_fail_prints_one_line_on_stderr_and_exits_2),
	        cmocka_unit_test(test_run_failed_names_the_lost_server_by_its_url_or_else_just_fails),
	        cmocka_unit_test(test_free_twice_after_a_verdict_is_harmless),
	        cmocka_unit_test(test_walk_runs_phases_in_order_and_stops_at_the_first_failure),
	        cmocka_unit_test(test_verdict_set_cuts_long_evidence_and_keeps_the_claim),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
