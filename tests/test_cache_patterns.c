/*
 * test_cache_patterns.c — lab-cache-patterns' claims, measured against the real PostgreSQL and
 * Redis (and a throwaway redis-server the lab starts itself).
 * needs: postgres redis
 *
 * The quick run is the lab itself (cache_patterns_run with the --quick config): the test asserts
 * that cache_patterns_judge found the claim demonstrated, and the counts behind it, each read
 * back from the servers (a key is stale when its cached version differs from the row's):
 * - cache-aside: every scripted race left its key stale and still stale later; the keys the
 *   random load left stale (luck: not asserted) still stale later; each fix at 0 (the TTL and the
 *   second DEL once they acted, stale right after the race first);
 * - update-on-write: every scripted race left the older value;
 * - write-through: the failing second write leaves exactly its cell's writes inconsistent, the
 *   failing first write none; no client was told a failed write succeeded;
 * - write-behind: acknowledged writes lost without persistence, none with AOF, the new worker
 *   recovered the dead one's pending entries; coalescing wrote one row per key;
 * - every phase asks a --predict question, and this run's answers are those counts.
 * Nothing asserts a time. Then the binary: Ctrl-C mid-run leaves no schema, no key, no
 * redis-server child and no temporary directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_patterns.h"

/* The lab once; answers (may be NULL) records what each phase's --predict question measured. */
static struct cache_patterns_result *run_lab(struct cache_patterns_config *cfg, struct lab_answers *answers)
{
	struct cache_patterns_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	if (answers)
		cfg->hooks = lab_answers_hooks(answers, cfg, r);
	char err[LAB_ERRLEN] = "";
	if (cache_patterns_run(cfg, r, err, sizeof(err)) < 0)
		fail_msg("cache_patterns_run: %s%s%s", err, r->lost_server[0] ? " (lost " : "",
		         r->lost_server[0] ? r->lost_server : "");
	return r;
}

static void assert_aside(const struct cache_patterns_result *r, const struct cache_patterns_config *cfg)
{
	assert_int_equal(r->aside_race.races, cfg->scripted);
	assert_int_equal(r->aside_race.stale, cfg->scripted);
	assert_int_equal(r->aside_race.stale_later, cfg->scripted); /* no TTL: stale for good */
	assert_int_equal(r->update_race.stale, cfg->scripted);
	/* the TTL and the second DEL: stale right after the race, 0 once they acted */
	assert_int_equal(r->fix[0].stale, cfg->scripted);
	assert_int_equal(r->fix[0].stale_later, 0);
	assert_int_equal(r->fix[1].stale, cfg->scripted);
	assert_int_equal(r->fix[1].stale_later, 0);
	/* the versioned set refused the stale SET outright */
	assert_int_equal(r->fix[2].stale, 0);
	assert_int_equal(r->fix[2].stale_later, 0);
	/* under random load: how many keys cache-aside leaves stale is luck (shown, not judged); those
	 * it left are stale for good, and each fix leaves none */
	const struct cp_load_result *l = r->load;
	assert_int_equal(l[CP_ASIDE].stale_keys_later, l[CP_ASIDE].stale_keys);
	assert_int_equal(l[CP_ASIDE_TTL].stale_keys_later, 0);
	assert_int_equal(l[CP_ASIDE_DD].stale_keys, 0);
	assert_int_equal(l[CP_ASIDE_VERSION].stale_keys, 0);
	assert_true(l[CP_ASIDE_VERSION].rejected > 0); /* the script had stale SETs to refuse */
	for (int p = 0; p < CP_PATTERNS; p++) {
		assert_true(l[p].reads > 0);
		assert_true(l[p].writes > 0);
	}
	/* a miss happened under every cache-aside variant: the race had readers in the gap */
	for (int p = CP_ASIDE; p <= CP_ASIDE_VERSION; p++)
		assert_true(l[p].misses > 0);
}

static void assert_through(const struct cache_patterns_result *r)
{
	const struct cp_through_cell(*t)[CP_FAULTS] = r->through;
	int n = t[CP_CACHE_FIRST][CP_DB_REFUSES].writes;
	assert_true(n > 0);
	assert_int_equal(t[CP_CACHE_FIRST][CP_DB_REFUSES].inconsistent, n); /* a value never committed */
	assert_int_equal(t[CP_DB_FIRST][CP_REDIS_CUT].inconsistent, n);     /* a committed row, stale cache */
	assert_int_equal(t[CP_CACHE_FIRST][CP_REDIS_CUT].inconsistent, 0);
	assert_int_equal(t[CP_DB_FIRST][CP_DB_REFUSES].inconsistent, 0);
	for (int o = 0; o < CP_ORDERS; o++)
		for (int f = 0; f < CP_FAULTS; f++)
			assert_int_equal(t[o][f].told_ok, 0);
	assert_true(r->connections_cut > 0); /* the proxy cut (or refused) the client: a real fault */
}

static void assert_behind(const struct cache_patterns_result *r, const struct cache_patterns_config *cfg)
{
	const struct cp_crash *c = r->crash;
	for (int i = 0; i < 2; i++) {
		assert_int_equal(c[i].acked, cfg->wb_writes);
		assert_int_equal(c[i].flushed_before, cfg->wb_batch);
	}
	/* without persistence: everything past the flushed batch (and the dying worker's rows) lost */
	assert_true(c[0].lost > 0);
	assert_true(c[0].lost <= cfg->wb_writes - cfg->wb_batch);
	assert_int_equal(c[0].recovered_entries, 0);
	/* AOF: the dead worker's pending batch and the rest came back, nothing lost */
	assert_int_equal(c[1].lost, 0);
	assert_int_equal(c[1].recovered_entries, cfg->wb_writes - cfg->wb_batch);
	assert_int_equal(r->coalesce_client_writes, r->coalesce_keys * cfg->coalesce_per);
	assert_int_equal(r->coalesce_db_writes, r->coalesce_keys);
	/* the load's worker wrote fewer rows than the clients wrote: coalescing under load */
	assert_true(r->load[CP_BEHIND].db_writes > 0);
	assert_true(r->load[CP_BEHIND].db_writes <= r->load[CP_BEHIND].writes);
	assert_int_equal(r->load[CP_BEHIND].stale_keys, 0);
}

static void test_quick_run_demonstrates_every_failure_and_fix(void **state)
{
	(void)state;
	struct cache_patterns_config cfg;
	cache_patterns_config_default(&cfg, true);
	struct lab_answers answers = {0};
	struct cache_patterns_result *r = run_lab(&cfg, &answers);
	struct lab_verdict v;
	cache_patterns_judge(r, &v);
	print_message("%s\n%s\n", v.claim, v.evidence);
	assert_true(v.demonstrated);
	assert_aside(r, &cfg);
	assert_through(r);
	assert_behind(r, &cfg);
	/* what --predict asks before each phase, answered by this run: every scripted race stale for
	 * good; the versioned set the one fix clean at once; cache first the order that can leave an
	 * uncommitted price; only Redis without persistence loses acknowledged writes */
	lab_assert_every_phase_asks(&answers, CP_PHASES);
	assert_true(lab_answer(&answers, "aside") == cfg.scripted);
	assert_true(lab_answer(&answers, "fixes") == 2);
	assert_true(lab_answer(&answers, "through") == 0);
	assert_true(lab_answer(&answers, "behind") == 0);
	free(r);
	lab_assert_nothing_left("lab_cache_patterns", "lab:cache-patterns:");
}

static void test_bad_config_is_refused_and_changes_nothing(void **state)
{
	(void)state;
	struct cache_patterns_config cfg;
	cache_patterns_config_default(&cfg, true);
	cfg.keys = CP_MAX_KEYS + 1;
	struct cache_patterns_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	char err[LAB_ERRLEN] = "";
	assert_int_equal(cache_patterns_run(&cfg, r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "keys"));
	free(r);
	lab_assert_nothing_left("lab_cache_patterns", "lab:cache-patterns:");
}

/* No directory lab-cache-patterns-<pid>-* of a process that ran is left in the temp dir. */
/* redis-server processes whose working directory is (or was) one of this lab's: child_start runs
 * the server in its data directory, and redis-server's process title hides its argv. */
static int lab_redis_servers(void)
{
	DIR *d = opendir("/proc");
	assert_non_null(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char path[300], comm[64] = "", cwd[PATH_MAX] = "";
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		if (!fgets(comm, sizeof(comm), f))
			comm[0] = '\0';
		fclose(f);
		if (strncmp(comm, "redis-server", 12))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cwd", e->d_name);
		ssize_t len = readlink(path, cwd, sizeof(cwd) - 1);
		if (len > 0) {
			cwd[len] = '\0';
			n += strstr(cwd, "/lab-cache-patterns-") != NULL;
		}
	}
	closedir(d);
	return n;
}

static void test_ctrl_c_mid_run_leaves_no_schema_keys_child_or_dir(void **state)
{
	(void)state;
	static char out[65536], err[4096];
	/* a TMPDIR of its own: the lab makes the throwaway server's directory there before phase 1,
	 * so by "[4/" it exists, and after the signal it must be gone */
	char tmp[] = "/tmp/test-cache-patterns-XXXXXX";
	assert_non_null(mkdtemp(tmp));
	setenv("TMPDIR", tmp, 1);
	double stop_ms = 0;
	/* "[4/": write-behind, where the throwaway redis-server runs */
	int rc = lab_interrupt("cache-patterns", "--quick", "[4/", SIGINT, 30000, &stop_ms, out, sizeof(out),
	                       err, sizeof(err));
	unsetenv("TMPDIR");
	print_message("exit %d %.0f ms after Ctrl-C; stderr: %s", rc, stop_ms, err);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_cache_patterns", "lab:cache-patterns:");
	/* the guard killed the throwaway redis-server and removed its directory */
	assert_int_equal(lab_redis_servers(), 0);
	assert_int_equal(lab_tmpdirs(tmp, "cache-patterns", 0), 0);
	assert_int_equal(rmdir(tmp), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_quick_run_demonstrates_every_failure_and_fix),
	        cmocka_unit_test(test_bad_config_is_refused_and_changes_nothing),
	        cmocka_unit_test(test_ctrl_c_mid_run_leaves_no_schema_keys_child_or_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
