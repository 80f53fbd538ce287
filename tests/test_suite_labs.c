/*
 * test_suite_labs — `labsuite labs` (suite/labs.c, run.c) as a person runs it: two fast labs end
 * to end (a row each, the total, exit 0); a Ctrl-C while a real lab runs (forwarded: exit 130
 * within the bound of lab_run.h, nothing of the lab left, no process, no directory); a lab that
 * hangs and ignores SIGINT stopped past --timeout (SIGKILL, its row says so, exit 1); bad usage.
 *
 * needs: postgres redis
 * runs: lab-versioning lab-pagination (never beside their own tests: one schema per lab)
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lab_run.h"
#include "run.h"
#include "suite_cmd.h"

#define LABSUITE LAB_BIN_DIR "/labsuite"
/* the Ctrl-C test's lab: about 2 s with --quick, a schema, keys and an nginx of its own */
#define CTRL_C_LAB "versioning"

static char out[1 << 16];

/* cmd's exit code, what it printed into out */
static int run(const char *cmd)
{
	return suite_cmd(cmd, out, sizeof(out));
}

static void test_labs_end_to_end(void **state)
{
	(void)state;
	char cmd[PATH_MAX];
	snprintf(cmd, sizeof(cmd), "COLUMNS=120 %s labs --bin %s versioning pagination", LABSUITE,
	         LAB_BIN_DIR);
	int code = run(cmd);
	if (code != 0)
		print_error("labsuite labs said:\n%s\n", out);
	assert_int_equal(code, 0);
	assert_int_equal(suite_count(out, "\n"), 3); /* one row each, the total */
	assert_int_equal(strncmp(out, "✔ versioning ", strlen("✔ versioning ")), 0);
	assert_non_null(strstr(out, "\n✔ pagination "));
	assert_non_null(strstr(out, "\n2 labs · 2 ✔ · 0 ✘ · wall "));
}

/* Whether schema exists in PostgreSQL (the lab got past its setup). */
static bool schema_exists(PGconn *conn, const char *schema)
{
	const char *params[] = {schema};
	int64_t n = -1;
	char err[256];
	if (pg_query_int64(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", 1, params, &n, err,
	                   sizeof(err)) < 0)
		fail_msg("cannot count schemas: %s", err);
	return n == 1;
}

/* Waits up to ms for pid to exit; its wait status, or -1 (then it is killed and reaped). */
static int wait_for(pid_t pid, double ms)
{
	int st;
	for (double t0 = lab_run_now_ms(); lab_run_now_ms() - t0 < ms; usleep(5000))
		if (waitpid(pid, &st, WNOHANG) == pid)
			return st;
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

static void test_ctrl_c_stops_the_running_lab(void **state)
{
	(void)state;
	char tmp[256], errpath[PATH_MAX], err[512];
	lab_private_tmpdir(tmp, sizeof(tmp), "suite-labs", "ctrl-c");
	snprintf(errpath, sizeof(errpath), "%s.stderr", tmp);
	PGconn *conn = pg_connect(pg_url_default(), err, sizeof(err));
	if (!conn)
		fail_msg("cannot connect to PostgreSQL: %s", err);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600), null = open("/dev/null", O_RDWR);
		dup2(null, 0), dup2(null, 1), dup2(fd, 2);
		execl(LABSUITE, LABSUITE, "labs", "--bin", LAB_BIN_DIR, CTRL_C_LAB, (char *)NULL);
		_exit(127);
	}
	/* it runs once its schema is there: the lab is past its setup, the guard has work to do */
	double t0 = lab_run_now_ms();
	bool running = false;
	while (!(running = schema_exists(conn, "lab_" CTRL_C_LAB)) && lab_run_now_ms() - t0 < 10000)
		usleep(20000);
	PQfinish(conn);
	kill(pid, SIGINT);
	double sent = lab_run_now_ms();
	int st = wait_for(pid, LAB_INTERRUPT_BOUND_MS);
	double stop_ms = lab_run_now_ms() - sent;
	char said[2048] = "";
	FILE *f = fopen(errpath, "r");
	size_t n = f ? fread(said, 1, sizeof(said) - 1, f) : 0;
	said[n] = '\0';
	if (f)
		fclose(f);
	unlink(errpath);
	if (!running)
		fail_msg("lab-%s made no schema within 10 s; labsuite said:\n%s", CTRL_C_LAB, said);
	if (st == -1)
		fail_msg("labsuite labs was still running %d ms after SIGINT; it said:\n%s",
		         LAB_INTERRUPT_BOUND_MS, said);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != SUITE_EXIT_INTERRUPTED)
		fail_msg("labsuite labs ended with wait status %d after SIGINT (want exit 130); it said:\n%s",
		         st, said);
	print_message("labsuite labs exited 130 %.0f ms after SIGINT\n", stop_ms);
	assert_non_null(strstr(said, "labsuite labs: interrupted; the running labs were stopped"));
	/* the lab cleaned up (its guard ran: it was sent SIGINT, not killed), and nothing runs on */
	lab_assert_nothing_left("lab_" CTRL_C_LAB, "lab:" CTRL_C_LAB ":");
	assert_int_equal(lab_processes_with(LAB_BIN_DIR "/lab-" CTRL_C_LAB " --quick --json"), 0);
	assert_int_equal(lab_tmpdirs(tmp, "", 0), 0); /* the lab's nginx directory, labsuite's own */
	unsetenv("TMPDIR");
	rmdir(tmp);
}

/* A lab that hangs and ignores SIGINT: stopped past --timeout with SIGKILL, its row says so. */
static void test_timeout_stops_a_hung_lab(void **state)
{
	(void)state;
	char bin[256], prog[PATH_MAX], cmd[PATH_MAX * 2];
	snprintf(bin, sizeof(bin), "/tmp/test-suite-labs-bin-%d", (int)getpid());
	assert_int_equal(mkdir(bin, 0700), 0);
	snprintf(prog, sizeof(prog), "%s/lab-deaf", bin);
	FILE *f = fopen(prog, "w");
	assert_non_null(f);
	fprintf(f, "#!/bin/sh\ntrap '' INT TERM\nexec sleep %d\n", 600 + (int)getpid() % 1000);
	fclose(f);
	assert_int_equal(chmod(prog, 0700), 0);
	char sleeper[64];
	snprintf(sleeper, sizeof(sleeper), "sleep %d", 600 + (int)getpid() % 1000);

	snprintf(cmd, sizeof(cmd), "COLUMNS=120 %s labs --bin %s --timeout 1 deaf", LABSUITE, bin);
	int code = run(cmd);
	unlink(prog);
	rmdir(bin);
	if (code != 1)
		fail_msg("labsuite labs --timeout 1 on a hung lab: exit %d (want 1); it said:\n%s", code,
		         out);
	/* the row: ✘, how it ended; and the sleep (600 s) is gone, long before it would have ended */
	assert_int_equal(strncmp(out, "✘ deaf ", strlen("✘ deaf ")), 0);
	assert_non_null(strstr(out, "(--timeout), no document"));
	assert_non_null(strstr(out, "1 labs · 0 ✔ · 1 ✘"));
	assert_int_equal(lab_processes_with(sleeper), 0);
}

static void test_usage(void **state)
{
	(void)state;
	char cmd[PATH_MAX];
	snprintf(cmd, sizeof(cmd), "%s labs --bin %s no-such-lab", LABSUITE, LAB_BIN_DIR);
	assert_int_equal(run(cmd), 2);
	assert_non_null(strstr(out, "lab-no-such-lab"));
	snprintf(cmd, sizeof(cmd), "%s labs --jobs 0 authz", LABSUITE);
	assert_int_equal(run(cmd), 2);
	snprintf(cmd, sizeof(cmd), "%s labs --timeout 0 authz", LABSUITE);
	assert_int_equal(run(cmd), 2);
	assert_non_null(strstr(out, "--timeout"));
	snprintf(cmd, sizeof(cmd), "%s labs --bin %s", LABSUITE, LAB_BIN_DIR);
	assert_int_equal(run(cmd), 2);
	assert_non_null(strstr(out, "no lab named"));
	snprintf(cmd, sizeof(cmd), "%s labs --help", LABSUITE);
	assert_int_equal(run(cmd), 0);
	assert_non_null(strstr(out, "labs run alone"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_labs_end_to_end),
	        cmocka_unit_test(test_ctrl_c_stops_the_running_lab),
	        cmocka_unit_test(test_timeout_stops_a_hung_lab),
	        cmocka_unit_test(test_usage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
