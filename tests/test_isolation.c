/*
 * test_isolation — lab-isolation against the real PostgreSQL: every cell of the matrix agrees with
 * Hermitage's published PostgreSQL column (and the way each was prevented is one PostgreSQL is
 * known for), the doctors' counts add up, the killed transfer left nothing, the throwaway cluster's
 * synchronous_commit = on lost nothing; a spoiled cell makes the judge fail with the trace; Ctrl-C
 * leaves no schema, no throwaway postgres and no temporary directory.
 *
 * needs: postgres
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "isolation.h"
#include "lab.h"
#include "pg.h"
#include "lab_run.h"

static struct isolation_result *run_small(struct lab_answers *answers, struct isolation_config *out)
{
	struct isolation_config cfg;
	isolation_config_default(&cfg, true);
	/* every shift is a race now (ws_meet): 20 per pair are 40 races per mode */
	cfg.ws_rounds = 20;
	/* the kill waits anyway until every client has had a commit acknowledged */
	cfg.dur_load_ms = 100;
	struct isolation_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	/* each phase's --predict question, answered from what the phase measured */
	cfg.hooks = lab_answers_hooks(answers, out, r);
	*out = cfg;
	char err[LAB_ERRLEN];
	if (isolation_run(&cfg, r, err, sizeof(err)) < 0)
		fail_msg("isolation_run: %s", err);
	return r;
}

static void test_matrix_counts_and_judge_agree_with_the_published_table(void **state)
{
	(void)state;
	struct lab_answers answers = {0};
	struct isolation_config cfg;
	struct isolation_result *r = run_small(&answers, &cfg);
	struct lab_verdict v;
	isolation_judge(r, &v);
	print_message("%s\n", v.evidence);
	assert_true(v.demonstrated);

	/* the matrix: every cell run, each prevented exactly where Hermitage says */
	assert_int_equal(r->ncells, ISO_TESTS * ISO_LEVELS);
	for (int t = 0; t < ISO_TESTS; t++)
		for (int l = 0; l < ISO_LEVELS; l++) {
			const struct iso_cell *c = &r->cells[t][l];
			if ((c->outcome != ISO_ANOMALY) != iso_hermitage[t][l] || c->outcome == ISO_ERROR)
				fail_msg("%s at %s: %s (%s)", iso_test_names[t], iso_level_names[l],
				         iso_outcome_name(c->outcome), c->why);
			assert_true(c->ntrace > 0);
		}
	/* how: a dirty write waits on the row lock at READ COMMITTED; a lost update and write skew
	 * are turned into 40001 where they are prevented */
	assert_int_equal(r->cells[0][0].outcome, ISO_BLOCKED);
	assert_int_equal(r->cells[6][1].outcome, ISO_ABORTED);
	assert_int_equal(r->cells[8][2].outcome, ISO_ABORTED);
	assert_non_null(strstr(r->cells[0][0].trace[1].got, "blocked (waits on"));

	/* the doctors: every request decided once per shift and client, and the kinds add up */
	for (int m = 0; m < ISO_WS_MODES; m++) {
		const struct iso_ws_row *w = &r->ws[m];
		assert_int_equal(w->attempts, 2 * w->shifts);
		assert_int_equal(w->off_call + w->declined + w->refused, w->attempts);
		/* with a fix, at most one of the two went off call on each shift */
		if (m > 0)
			assert_true(w->off_call <= w->shifts);
	}
	/* without: more went off call than the shifts allow, and the empty shifts are those */
	assert_true(r->ws[0].off_call > r->ws[0].shifts);
	assert_int_equal(r->ws[0].violated, r->ws[0].off_call - r->ws[0].shifts);
	/* each fix met the race: a retry or a refusal, and one doctor declined or refused per shift */
	assert_true(r->ws[1].retries > 0);
	assert_true(r->ws[3].refused > 0);
	for (int m = 1; m < ISO_WS_MODES; m++)
		assert_int_equal(r->ws[m].off_call, r->ws[m].shifts);

	/* atomicity and durability */
	assert_int_equal(r->atom_seen_inside, 1);
	assert_int_equal(r->atom_rows_after, 0);
	assert_int_equal(r->ndur, ISO_DUR_MODES);
	assert_true(r->dur[0].acked > 0 && r->dur[1].acked > 0);
	assert_int_equal(r->dur[1].lost, 0);
	assert_int_equal(r->dur[0].present + r->dur[0].lost, r->dur[0].acked);
	print_message("kill -9: off lost %llu of %llu, on lost %llu of %llu\n",
	              (unsigned long long)r->dur[0].lost, (unsigned long long)r->dur[0].acked,
	              (unsigned long long)r->dur[1].lost, (unsigned long long)r->dur[1].acked);

	/* the questions: every phase asks one, and their answers are the counts above */
	lab_assert_every_phase_asks(&answers, ISOLATION_PHASES);
	assert_true(lab_answer(&answers, "matrix") == 2); /* c: write skew */
	assert_true(lab_answer(&answers, "write_skew") == cfg.ws_pairs * cfg.ws_rounds);
	assert_true(lab_answer(&answers, "atomicity") == 100);
	assert_true(lab_answer(&answers, "durability") == 0);

	/* one shift spared under REPEATABLE READ: the judge says so (every shift is a race) */
	r->ws[0].violated--;
	isolation_judge(r, &v);
	assert_false(v.demonstrated);
	assert_non_null(strstr(v.evidence, "REPEATABLE READ left"));
	r->ws[0].violated++;

	/* a spoiled cell: the judge fails, names it first, and its trace shows each step */
	r->cells[8][1].outcome = ISO_ABORTED;
	isolation_judge(r, &v);
	assert_false(v.demonstrated);
	assert_non_null(
	        strstr(v.evidence, "1 cell(s) disagree with Hermitage, first G2-item at REPEATABLE READ"));
	int t = -1, l = -1;
	assert_int_equal(iso_first_disagreement(r, &t, &l), 8 * ISO_LEVELS + 1);
	char trace[4096];
	iso_trace_format(r, t, l, trace, sizeof(trace));
	print_message("%s", trace);
	assert_non_null(
	        strstr(trace, "G2-item (write skew) at REPEATABLE READ: 40001, Hermitage says anomaly"));
	assert_non_null(
	        strstr(trace, "   1  T1  select id, value from test where id in (1, 2) order by id "));
	assert_non_null(strstr(trace, "1=>10,2=>20"));
	assert_non_null(strstr(trace, "final rows: 1=>11,2=>21"));
	free(r);
}

/* processes whose command line names dir (the throwaway postgres runs with -D dir/data) */
static int processes_in(const char *dir)
{
	int n = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char path[300], buf[4096];
		if (atoi(e->d_name) <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		size_t len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		for (size_t i = 0; i < len; i++)
			buf[i] = buf[i] ? buf[i] : ' ';
		buf[len] = '\0';
		n += strstr(buf, dir) != NULL;
	}
	if (d)
		closedir(d);
	return n;
}

static int entries(const char *dir)
{
	int n = 0;
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d)))
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

static void test_ctrl_c_leaves_no_schema_server_or_directory(void **state)
{
	(void)state;
	static char out[65536], errout[4096];
	/* a TMPDIR of its own (0711: the cluster's user must pass through it): the lab makes the
	 * throwaway cluster's directory there and initdb's it before phase 1 */
	char tmp[] = "/tmp/test-isolation-XXXXXX";
	assert_non_null(mkdtemp(tmp));
	assert_int_equal(chmod(tmp, 0711), 0);
	setenv("TMPDIR", tmp, 1);
	double stop_ms = 0;
	/* "[4/": the durability phase, where the throwaway postgres starts */
	int rc = lab_interrupt("isolation", "--quick", "[4/", SIGINT, 30000, &stop_ms, out, sizeof(out),
	                       errout, sizeof(errout));
	unsetenv("TMPDIR");
	print_message("exit %d %.0f ms after Ctrl-C; stderr: %s", rc, stop_ms, errout);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_isolation", NULL);
	/* the postmaster is SIGKILLed by the guard; its backends notice and exit within moments */
	for (int i = 0; i < 100 && processes_in(tmp) > 0; i++)
		usleep(20000);
	assert_int_equal(processes_in(tmp), 0);
	assert_int_equal(entries(tmp), 0);
	rmdir(tmp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_matrix_counts_and_judge_agree_with_the_published_table),
	        cmocka_unit_test(test_ctrl_c_leaves_no_schema_server_or_directory),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
