/*
 * test_invalidation.c — lab-invalidation's claims, measured against the real PostgreSQL and Redis.
 * needs: postgres redis
 *
 * The quick run is the lab itself (invalidation_run with a smaller config): the test asserts that
 * invalidation_judge found the claim demonstrated, and the counts behind it, which hold at any
 * speed because every fault is injected and counted by the lab:
 * - TTL only: every TTL's worst staleness under TTL + its longest fill (the judge's bound,
 *   compared with the configured TTL, never an absolute time), and stale reads at the longest;
 * - delete after commit: keys left stale == writes crashed before their DEL, > 0;
 * - LISTEN/NOTIFY: one notification per write, no key left stale after the same crashes, the
 *   lag's p99 under the sweep's longest TTL;
 * - a reconnect without re-sync leaves exactly the missed writes stale; with re-sync none;
 * - versioned keys: no stale read, exactly one version lookup per read, old versions held;
 * - every phase asks a --predict question, and this run's answers are those counts.
 * Then the binary: Ctrl-C leaves no schema and no keys.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invalidation.h"

static void small_config(struct invalidation_config *cfg)
{
	invalidation_config_default(cfg, true);
	cfg->products = 300;
	cfg->nttls = 3;
	cfg->ttls_ms[0] = 50;
	cfg->ttls_ms[1] = 150;
	cfg->ttls_ms[2] = 300;
	cfg->ttl_run_ms = 400;
	cfg->run_ms = 400;
	cfg->drop_writes = 20;
}

static void test_quick_run_demonstrates_every_method_and_its_failure(void **state)
{
	(void)state;
	struct invalidation_config cfg;
	small_config(&cfg);
	struct invalidation_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	struct lab_answers answers = {0};
	cfg.hooks = lab_answers_hooks(&answers, &cfg, r);
	char err[LAB_ERRLEN] = "";
	if (invalidation_run(&cfg, r, err, sizeof(err)) < 0)
		fail_msg("invalidation_run: %s%s%s", err, r->lost_server[0] ? " (lost " : "", r->lost_server);
	struct lab_verdict v;
	invalidation_judge(r, &v);
	print_message("%s\n%s\n", v.claim, v.evidence);
	assert_true(v.demonstrated);

	/* TTL only: staleness ordered under each TTL (+ its fill), stale reads at the longest */
	assert_int_equal(r->nttl, cfg.nttls);
	for (int i = 0; i < r->nttl; i++) {
		assert_true(r->ttl[i].r.reads > 0);
		assert_true(r->ttl[i].r.worst_stale_us <= (uint64_t)r->ttl[i].ttl_ms * 1000 +
		                                                  r->ttl[i].r.longest_fill_us +
		                                                  INV_TTL_SLACK_US);
	}
	assert_true(r->ttl[r->nttl - 1].r.stale > 0);
	/* delete after commit: every crashed write left its key stale, and only those */
	assert_true(r->del.crashed > 0);
	assert_int_equal(r->del.stale_keys_after, r->del.crashed);
	assert_true(r->del.stale > 0);
	/* LISTEN/NOTIFY: a notification per write, the same crashes leave nothing, lag under the TTL */
	assert_true(r->notify.crashed > 0);
	assert_int_equal(r->notified, r->notify.writes);
	assert_int_equal(r->notify.stale_keys_after, 0);
	assert_true(hist_percentile(&r->lag, 99) < (uint64_t)cfg.ttls_ms[cfg.nttls - 1] * 1000);
	assert_true(hist_percentile(&r->lag, 99) < (uint64_t)cfg.long_ttl_ms * 1000);
	/* a stale read can only be one that raced a DEL still on its way: no staler than the longest lag */
	assert_true(r->notify.worst_stale_us <= hist_percentile(&r->lag, 100) + INV_TTL_SLACK_US);
	/* ... and the judge refuses a NOTIFY run where one was staler (a key missed, then re-read) */
	struct invalidation_result *spoiled = malloc(sizeof(*spoiled));
	assert_non_null(spoiled);
	*spoiled = *r;
	spoiled->notify.worst_stale_us = hist_percentile(&r->lag, 100) + INV_TTL_SLACK_US + 1;
	invalidation_judge(spoiled, &v);
	assert_false(v.demonstrated);
	assert_non_null(strstr(v.evidence, "LISTEN/NOTIFY"));
	free(spoiled);
	/* the dropped listener: notifications lost while away; re-sync brings the stale keys to 0 */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(r->drop[i].missed, (uint64_t)cfg.drop_writes);
		assert_int_equal(r->drop[i].notified, r->drop[i].r.writes - r->drop[i].missed);
		assert_true(r->drop[i].reconnects >= 1);
	}
	assert_int_equal(r->drop[0].r.stale_keys_after, (uint64_t)cfg.drop_writes);
	assert_int_equal(r->drop[0].resync_deleted, 0);
	assert_int_equal(r->drop[1].r.stale_keys_after, 0);
	assert_true(r->drop[1].resync_deleted >= (uint64_t)cfg.drop_writes);
	/* versioned keys: nothing stale, one extra lookup per read, old versions held, one bump misses all */
	assert_true(r->versioned.reads > 0);
	assert_int_equal(r->versioned.stale, 0);
	assert_int_equal(r->versioned.version_lookups, r->versioned.reads);
	assert_true(r->old_version_keys > 0 && r->old_version_bytes > 0);
	assert_int_equal(r->gen_misses, (uint64_t)cfg.products);
	assert_true(r->gen_old_keys > 0);
	/* what --predict asks before each phase, answered by this run with the counts above */
	lab_assert_every_phase_asks(&answers, INV_PHASES);
	assert_true(lab_answer(&answers, "ttl") == 1); /* up to about the TTL */
	assert_true(lab_answer(&answers, "delete") == 100);
	assert_true(lab_answer(&answers, "notify") == 0);
	assert_true(lab_answer(&answers, "reconnect") == cfg.drop_writes);
	assert_true(lab_answer(&answers, "versioned") == cfg.products);
	free(r);
	lab_assert_nothing_left("lab_invalidation", "lab:invalidation:");
}

static void test_ctrl_c_mid_run_leaves_no_schema_and_no_keys(void **state)
{
	(void)state;
	static char out[65536], err[4096];
	double stop_ms = 0;
	int rc = lab_interrupt("invalidation", "--quick", "[2/", SIGINT, 30000, &stop_ms, out, sizeof(out),
	                       err, sizeof(err));
	print_message("exit %d %.0f ms after Ctrl-C; stderr: %s", rc, stop_ms, err);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_invalidation", "lab:invalidation:");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_quick_run_demonstrates_every_method_and_its_failure),
	        cmocka_unit_test(test_ctrl_c_mid_run_leaves_no_schema_and_no_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
