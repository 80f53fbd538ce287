/*
 * test_consistency — lab-consistency against the real servers and the replica set of
 * `scripts/labenv up --replicas` (which setup runs: a no-op when it answers; `make down` stops it).
 * needs: postgres redis
 *
 * Asserts the judge's verdict and the counts behind it: stale reads under asynchronous
 * replication, none with remote_apply, the LSN wait or stickiness; WAIT after every write and no
 * stale read; WAIT returning 0 for every write while the replica is cut off; quorums. Never a
 * time. Then Ctrl-C: exit 130, and nothing left on the shared servers nor on the lab's primary.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consistency.h"
#include "lab_run.h"
#include "pg.h"
#include "redis.h"

static int setup(void **state)
{
	(void)state;
	return system(LAB_SOURCE_DIR "/scripts/labenv up --replicas >/dev/null") == 0 ? 0 : -1;
}

/* Schema lab_consistency on the lab's primary and keys lab:consistency:* on its Redis: 0 each. */
static void assert_primary_clean(int wait_ms)
{
	char err[512];
	struct consistency_config cfg;
	consistency_config_default(&cfg, true);
	PGconn *c = pg_connect(cfg.primary_url, err, sizeof(err));
	redisContext *r = redis_connect_url(cfg.redis_primary_url, 2000, err, sizeof(err));
	assert_non_null(c);
	assert_non_null(r);
	int64_t schemas = 1;
	long long keys = 1;
	for (int waited = 0; waited <= wait_ms; waited += 100) {
		assert_int_equal(
		        pg_query_int64(c,
		                       "SELECT count(*) FROM pg_namespace WHERE nspname = 'lab_consistency'",
		                       0, NULL, &schemas, err, sizeof(err)),
		        0);
		redisReply *k = redis_cmd(r, err, sizeof(err), "KEYS lab:consistency:*");
		assert_non_null(k);
		keys = (long long)k->elements;
		freeReplyObject(k);
		if (schemas == 0 && keys == 0)
			break;
		usleep(100000);
	}
	assert_int_equal(schemas, 0);
	assert_int_equal(keys, 0);
	PQfinish(c);
	redisFree(r);
}

static void test_consistency_is_a_knob_and_the_judge_says_so(void **state)
{
	(void)state;
	struct consistency_config cfg;
	consistency_config_default(&cfg, true);
	/* static: a failed assertion must not leak it under LeakSanitizer */
	static struct consistency_result result;
	struct consistency_result *res = &result;
	/* each phase's --predict question, answered from what the phase measured */
	struct lab_answers answers = {0};
	cfg.hooks = lab_answers_hooks(&answers, &cfg, res);
	char err[LAB_ERRLEN];
	if (consistency_run(&cfg, res, err, sizeof(err)) < 0)
		fail_msg("consistency_run: %s", err);
	struct lab_verdict v;
	consistency_judge(res, &v);
	if (!v.demonstrated)
		fail_msg("not demonstrated: %s", v.evidence);
	/* the counts behind it */
	assert_int_equal(res->ryw[1].pairs, cfg.pairs);
	assert_true(res->ryw[0].stale + res->ryw[1].stale > 0);
	assert_true(res->ryw[1].load_rows > 0);
	assert_true(res->knob[CONS_OFF].stale > 0);
	assert_int_equal(res->knob[CONS_REMOTE_APPLY].pairs, cfg.pairs);
	assert_int_equal(res->knob[CONS_REMOTE_APPLY].stale, 0);
	for (int f = 0; f < CONS_FIXES_N; f++) {
		assert_int_equal(res->fixes[f].pairs, cfg.pairs);
		assert_int_equal(res->fixes[f].stale, 0);
	}
	assert_int_equal(res->redis[1].pairs, cfg.redis_pairs);
	assert_int_equal(res->redis[1].stale, 0);
	assert_true(res->redis[1].wait_short < cfg.redis_pairs);
	assert_int_equal(res->cut.wait_before, 1);
	assert_int_equal(res->cut.writes, cfg.cut_writes);
	assert_int_equal(res->cut.wait_zero, cfg.cut_writes);
	assert_int_equal(res->cut.stale, cfg.cut_writes);
	assert_int_equal(res->cut.wait_after_heal, 1);
	for (int i = 0; i < CONS_QUORUMS; i++) {
		const struct cons_quorum *q = &res->quorum[i];
		assert_int_equal(q->pairs, cfg.quorum_pairs);
		if (q->r + q->w > 3)
			assert_int_equal(q->stale, 0);
		else
			assert_true(q->stale > 0);
	}
	/* the questions: every phase asks one, and their answers are the counts above */
	lab_assert_every_phase_asks(&answers, CONS_PHASES);
	assert_true(lab_answer(&answers, "read_your_writes") == 1); /* b: sometimes stale */
	/* c: remote_apply is the fix whose COMMIT is slowest (it waits for the standby's replay) */
	assert_true(lab_answer(&answers, "fixes") == 2);
	assert_true(lab_answer(&answers, "knob") == res->knob[CONS_OFF].stale);
	/* the reasoned answer, "all of them", scores within the question's own margin */
	for (int i = 0; i < answers.n; i++)
		if (!strcmp(answers.a[i].phase, "knob") &&
		    fabs(cfg.pairs - answers.a[i].measured) >
		            answers.a[i].q->within_pct / 100.0 * answers.a[i].measured)
			fail_msg("off: %g of %d reads stale, \"all\" is not within %g%%",
			         answers.a[i].measured, cfg.pairs, answers.a[i].q->within_pct);
	assert_true(lab_answer(&answers, "redis_wait") == 0);
	assert_true(lab_answer(&answers, "redis_cut") == 0); /* WAIT says 0 replicas */
	assert_true(lab_answer(&answers, "quorum") == 2);    /* c: W=2 R=2, R + W > N */
	assert_primary_clean(0);
	lab_assert_nothing_left("lab_consistency", "lab:consistency:");
}

static void test_ctrl_c_leaves_nothing_here_nor_on_the_primary(void **state)
{
	(void)state;
	char out[16384], err[4096];
	double stop_ms;
	int rc = lab_interrupt("consistency", "--quick", "[2/", SIGINT, 30000, &stop_ms, out, sizeof(out),
	                       err, sizeof(err));
	print_message("exit %d %.0f ms after Ctrl-C; stderr: %s", rc, stop_ms, err);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_consistency", "lab:consistency:");
	/* the guard cleaned the primaries before the process exited: nothing to wait for */
	assert_primary_clean(0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_consistency_is_a_knob_and_the_judge_says_so),
	        cmocka_unit_test(test_ctrl_c_leaves_nothing_here_nor_on_the_primary),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
