/*
 * test_predict.c — --predict asks each phase's question on a terminal before the phase, shows the
 * guess beside the measurement after it, and scores. Pure: no servers. A small lab of four phases
 * (fixed numbers, so the right answers are known) runs in a child on a real pseudo-terminal
 * (lab_pty_start of tests/lab_run.h), and the test types scripted answers: right, wrong, skipped, bad
 * input asked again, Ctrl-D. Off a terminal --predict is refused with exit 2.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lab.h"
#include "lab_run.h"

#define NAME    "predict_test"
#define OUT_MAX 16384

/* ---- the little lab: four phases with fixed answers ---- */

struct mini_cfg {
	int users;
};
struct mini_result {
	double statements, rps;
	int fastest;
};

static int ph_loop(const void *cfg, void *res, char *err, size_t errlen)
{
	(void)err, (void)errlen;
	((struct mini_result *)res)->statements = ((const struct mini_cfg *)cfg)->users + 1;
	return 0;
}
static int ph_rate(const void *cfg, void *res, char *err, size_t errlen)
{
	(void)cfg, (void)err, (void)errlen;
	((struct mini_result *)res)->rps = 250;
	return 0;
}
static int ph_choice(const void *cfg, void *res, char *err, size_t errlen)
{
	(void)cfg, (void)err, (void)errlen;
	((struct mini_result *)res)->fastest = 1;
	return 0;
}
static int ph_nothing(const void *cfg, void *res, char *err, size_t errlen)
{
	(void)cfg, (void)res, (void)err, (void)errlen;
	return 0;
}

static double given_users(const void *cfg, int i)
{
	(void)i;
	return ((const struct mini_cfg *)cfg)->users;
}
static double m_statements(const void *cfg, const void *res)
{
	(void)cfg;
	return ((const struct mini_result *)res)->statements;
}
static double m_rps(const void *cfg, const void *res)
{
	(void)cfg;
	return ((const struct mini_result *)res)->rps;
}
static double m_fastest(const void *cfg, const void *res)
{
	(void)cfg;
	return ((const struct mini_result *)res)->fastest;
}
static double m_undecided(const void *cfg, const void *res)
{
	(void)cfg, (void)res;
	return NAN;
}

static const struct lab_question Q_LOOP = {.text = "{} users, an ORM loop: how many statements?",
                                           .given = given_users,
                                           .kind = LAB_ANSWER_NUMBER,
                                           .unit = "statements",
                                           .measured = m_statements,
                                           .why = "one for the list, one per user"};
static const struct lab_question Q_RATE = {.text = "pool of 5, 20 ms each: the most requests/s?",
                                           .kind = LAB_ANSWER_NUMBER,
                                           .unit = "requests/s",
                                           .within_pct = 10,
                                           .measured = m_rps};
static const struct lab_question Q_CHOICE = {.text = "which is fastest?",
                                             .kind = LAB_ANSWER_CHOICE,
                                             .choices = {"the loop", "the JOIN", "the same"},
                                             .measured = m_fastest};
static const struct lab_question Q_UNDECIDED = {.text = "what did the run not decide?",
                                                .kind = LAB_ANSWER_NUMBER,
                                                .unit = "things",
                                                .measured = m_undecided};

static const struct lab_phase_def PHASES[] = {{"loop", ph_loop, &Q_LOOP},
                                              {"rate", ph_rate, &Q_RATE},
                                              {"choice", ph_choice, &Q_CHOICE},
                                              {"undecided", ph_nothing, &Q_UNDECIDED},
                                              {"no_question", ph_nothing, NULL}};
#define NPHASES ((int)(sizeof(PHASES) / sizeof(PHASES[0])))

static void tell_before(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "a phase");
}
static void tell_after(struct lab *lab, const void *cfg, const void *res)
{
	(void)cfg, (void)res;
	term_printf(&lab->term, "  (the phase's table)\n");
	lab_phase_metrics(lab, "x", NULL);
}
static const struct lab_phase_tell TELLS[] = {{tell_before, tell_after},
                                              {tell_before, tell_after},
                                              {tell_before, tell_after},
                                              {tell_before, tell_after},
                                              {tell_before, tell_after}};

/* The lab's main(), with argv from the test: what lab-<name> would run. */
static int mini_main(int argc, char **argv)
{
	/* servers nobody listens on: a Ctrl-C's cleanup fails at once and touches no shared one */
	setenv("LAB_PG_URL", "postgres://lab@127.0.0.1:1/lab", 1);
	setenv("LAB_REDIS_URL", "redis://127.0.0.1:1/0", 1);
	setenv("TERM", "dumb", 1); /* no colour: the text compares as typed */
	struct lab lab;
	if (lab_init(&lab, NAME, "q?", NPHASES, argc, argv) < 0)
		return lab.exit_code;
	lab_header(&lab, "a little lab");
	struct mini_cfg cfg = {.users = 100};
	struct mini_result res = {0};
	struct lab_teller teller = {&lab, TELLS, NPHASES, &cfg, &res};
	struct lab_phase_hooks hooks = lab_teller_hooks(&teller);
	char err[LAB_ERRLEN];
	if (lab_phases_walk(PHASES, NPHASES, &cfg, &res, &hooks, err, sizeof(err)) < 0)
		return lab_fail(&lab, "%s", err);
	struct lab_verdict v;
	lab_verdict_set(&v, true, "the claim", "the numbers");
	return lab_finish(&lab, &v);
}

/* ---- running it on a pseudo-terminal ---- */

struct run {
	char screen[OUT_MAX]; /* what the terminal showed (stdin's echo included) */
	char out[OUT_MAX];    /* stdout, when it was a pipe (--json) */
	int exit_code;
};

static void read_all(int fd, char *buf, size_t len)
{
	size_t got = 0;
	ssize_t n;
	while (got + 1 < len && (n = read(fd, buf + got, len - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
}

/* mini_main with the test's flags after the program's name, as lab_pty_start's body */
static int mini_main_cb(void *args)
{
	const char *const *a = args;
	char *argv[16] = {"lab-" NAME};
	int argc = 1;
	for (; a[argc - 1] && argc < 15; argc++)
		argv[argc] = (char *)a[argc - 1];
	return mini_main(argc, argv);
}

/*
 * Runs mini_main(args) on a pseudo-terminal of its own (lab_pty_start: stdin and stderr on it,
 * stdout too unless stdout_pipe) after typing `typed` into it. With sigint_after_ms > 0, SIGINT
 * is sent then.
 */
static void run_on_pty(struct run *r, const char *const *args, const char *typed, bool stdout_pipe,
                       int sigint_after_ms)
{
	memset(r, 0, sizeof(*r));
	int master, outp[2] = {-1, -1};
	if (stdout_pipe)
		assert_int_equal(pipe(outp), 0);
	pid_t pid = lab_pty_start(mini_main_cb, (void *)args, outp[1], typed, &master);
	if (stdout_pipe)
		close(outp[1]);
	if (sigint_after_ms > 0) {
		usleep((useconds_t)sigint_after_ms * 1000);
		kill(pid, SIGINT);
	}
	/* the document is read after the screen: it is one line, far below a pipe's buffer */
	r->exit_code = lab_pty_finish(pid, master, "the little lab", r->screen, sizeof(r->screen));
	if (stdout_pipe) {
		read_all(outp[0], r->out, sizeof(r->out));
		close(outp[0]);
	}
}

static bool shows(const struct run *r, const char *text)
{
	return lab_screen_shows(r->screen, text);
}

/* ---- the tests ---- */

static void test_right_wrong_and_skipped_answers_are_scored(void **state)
{
	(void)state;
	struct run r;
	const char *args[] = {"--predict", NULL};
	/* 101: right (exactly 1 + N); "abc": asked again, then 400: outside ±10% of 250; Enter on the
	 * choice: skipped; 7 for the question this run does not decide */
	run_on_pty(&r, args, "101\nabc\n400\n\n7\n", false, 0);
	assert_int_equal(r.exit_code, LAB_EXIT_OK);
	assert_true(shows(&r, "? 100 users, an ORM loop: how many statements?"));
	assert_true(shows(&r, "✔ you said 101 statements · measured 101 statements · exactly"));
	assert_true(shows(&r, "one for the list, one per user"));
	assert_true(shows(&r, "a number, like 250"));
	assert_true(shows(&r, "✘ you said 400 requests/s · measured 250 requests/s · outside ±10%"));
	assert_true(shows(&r, "b) the JOIN"));
	assert_true(shows(&r, "– skipped · it was b (the JOIN)"));
	assert_true(shows(&r, "this run did not decide it"));
	/* the undecided question is left out: three asked, one right, one skipped */
	assert_true(shows(&r, "prediction score: 1 of 3 within tolerance (1 skipped)"));
	/* the question comes after the phase's title and the answer after its table */
	const char *title = strstr(r.screen, "[1/5]"), *ask = strstr(r.screen, "? 100 users");
	const char *table = strstr(r.screen, "(the phase's table)"), *reveal = strstr(r.screen, "✔ you said");
	assert_true(title && ask && table && reveal);
	assert_true(title < ask && ask < table && table < reveal);
	assert_non_null(strstr(r.screen, "✔ demonstrated: the claim"));
}

static void test_json_carries_questions_guesses_and_score_and_ctrl_d_skips(void **state)
{
	(void)state;
	struct run r;
	const char *args[] = {"--predict", "--json", NULL};
	/* Ctrl-D at the first question skips it (and only it); 260 is within ±10% of 250; "d" is not
	 * one of three choices and "z" neither: asked again until "B)"; Enter on the undecided one */
	run_on_pty(&r, args, "\004260\nd\nz\nB)\n\n", true, 0);
	assert_int_equal(r.exit_code, LAB_EXIT_OK);
	assert_true(shows(&r, "one letter, a to c"));
	assert_true(shows(&r, "✔ you said 260 requests/s"));
	assert_true(shows(&r, "✔ you said b (the JOIN) · right"));
	assert_null(strstr(r.screen, "· it was b")); /* a right choice is said once */
	assert_true(shows(&r, "[3/5] choice"));      /* the phase named on stderr: its title went nowhere */
	assert_true(shows(&r, "prediction score: 2 of 3 within tolerance (1 skipped)"));

	json_error_t jerr;
	json_t *doc = json_loads(r.out, 0, &jerr);
	assert_non_null(doc);
	json_t *qs = json_object_get(doc, "questions");
	assert_int_equal(json_array_size(qs), 4);
	json_t *q0 = json_array_get(qs, 0), *q1 = json_array_get(qs, 1), *q2 = json_array_get(qs, 2);
	json_t *q3 = json_array_get(qs, 3);
	assert_string_equal(json_string_value(json_object_get(q0, "phase")), "loop");
	assert_string_equal(json_string_value(json_object_get(q0, "question")),
	                    "100 users, an ORM loop: how many statements?");
	assert_true(json_is_null(json_object_get(q0, "guess")));
	assert_true(json_number_value(json_object_get(q0, "measured")) == 101);
	assert_true(json_is_null(json_object_get(q0, "right")));
	assert_true(json_number_value(json_object_get(q1, "guess")) == 260);
	assert_true(json_is_true(json_object_get(q1, "right")));
	assert_string_equal(json_string_value(json_object_get(q1, "margin")), "±10%");
	assert_string_equal(json_string_value(json_object_get(q2, "kind")), "choice");
	assert_int_equal(json_array_size(json_object_get(q2, "choices")), 3);
	assert_true(json_number_value(json_object_get(q2, "guess")) == 1);
	assert_true(json_is_true(json_object_get(q2, "right")));
	assert_true(json_is_null(json_object_get(q3, "measured")));
	json_t *score = json_object_get(doc, "score");
	assert_int_equal(json_integer_value(json_object_get(score, "asked")), 3);
	assert_int_equal(json_integer_value(json_object_get(score, "answered")), 2);
	assert_int_equal(json_integer_value(json_object_get(score, "right")), 2);
	/* the dialogue stayed off stdout, which holds the document alone */
	assert_null(strstr(r.out, "you said"));
	json_decref(doc);
}

static void test_a_wrong_count_says_how_far_off(void **state)
{
	(void)state;
	struct run r;
	const char *args[] = {"--predict", NULL};
	/* "0,5" and "1,00" are no numbers here (a comma groups thousands): asked again; then 100 */
	run_on_pty(&r, args, "0,5\n1,00\n100\n\n\n\n", false, 0);
	assert_int_equal(r.exit_code, LAB_EXIT_OK);
	const char *again = strstr(r.screen, "a number, like");
	assert_non_null(again);
	assert_non_null(strstr(again + 1, "a number, like")); /* twice */
	assert_true(shows(&r, "✘ you said 100 statements · measured 101 statements · off by 1"));
	assert_true(shows(&r, "prediction score: 0 of 3 within tolerance (2 skipped)"));
}

static void test_without_predict_the_document_still_has_each_measured_answer(void **state)
{
	(void)state;
	struct run r;
	const char *args[] = {"--json", NULL};
	run_on_pty(&r, args, "", true, 0);
	assert_int_equal(r.exit_code, LAB_EXIT_OK);
	assert_null(strstr(r.screen, "? 100 users")); /* nothing asked */
	json_t *doc = json_loads(r.out, 0, NULL);
	assert_non_null(doc);
	json_t *qs = json_object_get(doc, "questions");
	assert_int_equal(json_array_size(qs), 4);
	assert_true(json_number_value(json_object_get(json_array_get(qs, 1), "measured")) == 250);
	assert_true(json_is_null(json_object_get(json_array_get(qs, 1), "guess")));
	assert_true(json_is_null(json_object_get(doc, "score")));
	json_decref(doc);
}

/* stdin from /dev/null, stderr to a pipe: what a script or CI would do */
static void test_predict_off_a_terminal_is_refused_with_exit_2(void **state)
{
	(void)state;
	int errp[2];
	assert_int_equal(pipe(errp), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		dup2(errp[1], 2);
		close(errp[0]);
		char *argv[] = {"lab-" NAME, "--predict", NULL};
		_exit(mini_main(2, argv));
	}
	close(errp[1]);
	char err[4096];
	read_all(errp[0], err, sizeof(err));
	close(errp[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), LAB_EXIT_ENV);
	assert_non_null(strstr(err, "--predict asks its questions on a terminal, and stdin is not one"));

	struct run r;
	const char *serve[] = {"--predict", "--serve", NULL};
	run_on_pty(&r, serve, "", false, 0);
	assert_int_equal(r.exit_code, LAB_EXIT_ENV);
	assert_true(shows(&r, "--predict goes with a run, not --serve"));
}

static void test_ctrl_c_at_a_question_exits_130(void **state)
{
	(void)state;
	struct run r;
	const char *args[] = {"--predict", NULL};
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	run_on_pty(&r, args, "", false, 300); /* nobody answers: the lab waits at the first question */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(r.exit_code, LAB_EXIT_INTERRUPTED);
	assert_true(shows(&r, "? 100 users"));
	assert_null(strstr(r.screen, "[2/5]"));
	double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	print_message("SIGINT at a question: exited in %.0f ms (300 ms of it the wait before the signal)\n",
	              ms);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_right_wrong_and_skipped_answers_are_scored),
	        cmocka_unit_test(test_json_carries_questions_guesses_and_score_and_ctrl_d_skips),
	        cmocka_unit_test(test_a_wrong_count_says_how_far_off),
	        cmocka_unit_test(test_without_predict_the_document_still_has_each_measured_answer),
	        cmocka_unit_test(test_predict_off_a_terminal_is_refused_with_exit_2),
	        cmocka_unit_test(test_ctrl_c_at_a_question_exits_130),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
