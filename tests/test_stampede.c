/*
 * test_stampede.c — lab-stampede's claims, measured against the real PostgreSQL and Redis.
 * needs: postgres redis
 *
 * The quick run is the lab itself (stampede_run with the --quick config): the test asserts that
 * stampede_judge found the claim demonstrated, and the counts behind it, every recompute counted
 * by the server (a row the recompute statement itself inserted into lab_stampede.recomputes;
 * stampede_run also fails when the clients' own count disagrees). The thresholds live in the
 * judge, with their reasons; what the test adds are counts that hold at any speed:
 * - no protection: the app's pool ran flat out (every connection busy at once during the herd);
 * - the lock: one recompute per expiry, every waiter served, and waiters that really waited;
 * - stale-while-revalidate: stale reads served and no read waited on PostgreSQL;
 * - XFetch: no read found the key missing (it never expired under its readers);
 * - jitter: both runs recomputed every key exactly once (the same work, spread differently);
 * - the outage: the proxy cut every client, no read was lost, the shared Redis still answers.
 * Nothing asserts an absolute time.
 *
 * Then the binary: a server lost mid-run (a proxy in front of it, cut) ends the lab with one
 * line naming it; Ctrl-C leaves nothing behind; bad flags and an unreachable server exit 2.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"
#include "proxy.h"
#include "redis.h"
#include "stampede.h"

/*
 * Runs the lab with cfg, recording what each phase's --predict question measured in answers;
 * fails the test, saying why, when the run fails.
 */
static struct stampede_result *run_lab(struct stampede_config *cfg, struct lab_answers *answers)
{
	struct stampede_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	cfg->hooks = lab_answers_hooks(answers, cfg, r);
	char err[LAB_ERRLEN] = "";
	if (stampede_run(cfg, r, err, sizeof(err)) < 0)
		fail_msg("stampede_run: %s%s%s", err, r->lost_server[0] ? " (lost " : "",
		         r->lost_server[0] ? r->lost_server : "");
	return r;
}

static void print_hot(const struct stampede_hot_result *r)
{
	char per[256] = "";
	for (int i = 0; i < r->expiries && i < STAMPEDE_MAX_EXPIRIES && strlen(per) < 200; i++)
		snprintf(per + strlen(per), sizeof(per) - strlen(per), " %d", r->per_expiry[i]);
	print_message("%-6s %d clients: %llu recomputes over %d expiries (%s ), %llu reads, %llu waited, "
	              "%llu stale, %llu hard misses, %llu lost, peak %d at once\n",
	              stampede_defence_id(r->defence), r->clients, (unsigned long long)r->recomputes,
	              r->expiries, per, (unsigned long long)r->reads, (unsigned long long)r->db_waits,
	              (unsigned long long)r->stale_reads, (unsigned long long)r->hard_misses,
	              (unsigned long long)r->lost, r->peak_concurrent);
}

static void assert_shared_redis_answers(void)
{
	char err[256];
	redisContext *c = redis_connect_url(redis_url_default(), 5000, err, sizeof(err));
	assert_non_null(c);
	redisReply *pong = redis_cmd(c, err, sizeof(err), "PING");
	assert_non_null(pong);
	freeReplyObject(pong);
	redisFree(c);
}

static void assert_hot_counts(const struct stampede_result *r, const struct stampede_config *cfg)
{
	const struct stampede_hot_result *no = &r->hot[STAMPEDE_NONE], *lk = &r->hot[STAMPEDE_LOCK],
	                                 *xf = &r->hot[STAMPEDE_XFETCH], *sw = &r->hot[STAMPEDE_SWR];
	for (int d = 0; d < STAMPEDE_DEFENCES; d++) {
		print_hot(&r->hot[d]);
		assert_int_equal(r->hot[d].client_recomputes, r->hot[d].recomputes);
		assert_true(r->hot[d].reads > 0);
		assert_false(r->hot[d].redis_lost);
	}
	/* the herd queued on the app's pool: every connection ran a recompute at the same moment */
	assert_int_equal(no->peak_concurrent, cfg->pg_pool);
	assert_int_equal(no->hard_misses, no->recomputes);
	/* the lock: one recompute per expiry, on the server's count; its waiters waited and were
	 * served the holder's value, none lost */
	assert_int_equal(lk->recomputes, (uint64_t)lk->expiries);
	assert_int_equal(lk->peak_concurrent, 1);
	assert_true(lk->lock_busy > 0);
	assert_int_equal(lk->lost, 0);
	assert_int_equal(lk->stale_reads, 0);
	/* XFetch: the key never expired under its readers */
	assert_int_equal(xf->hard_misses, 0);
	/* stale-while-revalidate: stale reads served, and nobody waited on PostgreSQL */
	assert_true(sw->stale_reads > 0);
	assert_int_equal(sw->db_waits, 0);
}

/*
 * The default Redis URL with a user and a password that must be escaped in a URL, when it has
 * none: Redis' default user has nopass, so any password authenticates, and phase 4's clients
 * (through the proxy, on a URL the lab rebuilt) must carry it to be served.
 */
static void redis_url_with_password(char *out, size_t outlen)
{
	struct redis_url u;
	char err[256];
	assert_int_equal(redis_url_parse(redis_url_default(), &u, err, sizeof(err)), 0);
	if (u.password)
		snprintf(out, outlen, "%s", redis_url_default());
	else
		snprintf(out, outlen, "redis://default:s%%40cr%%3At@%s:%d/%d", u.host, u.port, u.db);
	redis_url_free(&u);
}

static void test_quick_run_demonstrates_the_claim_on_the_servers_counts(void **state)
{
	(void)state;
	struct stampede_config cfg;
	stampede_config_default(&cfg, true);
	char redis_url[512];
	redis_url_with_password(redis_url, sizeof(redis_url));
	cfg.redis_url = redis_url;
	struct lab_answers answers = {0};
	struct stampede_result *r = run_lab(&cfg, &answers);
	struct lab_verdict v;
	stampede_judge(r, &v);
	print_message("%s: %s\n", v.demonstrated ? "demonstrated" : "NOT demonstrated", v.evidence);
	assert_true(v.demonstrated);

	assert_hot_counts(r, &cfg);
	for (int i = 0; i < 2; i++) {
		const struct stampede_jitter_result *j = &r->jitter[i];
		print_message("%s: %llu recomputes of %d keys, peak %.0f per %d ms, mean %.1f\n",
		              j->jittered ? "jittered" : "same TTL", (unsigned long long)j->recomputes,
		              j->keys_recomputed, j->peak, j->bucket_ms, j->mean);
		/* the same work in both runs: every key recomputed exactly once */
		assert_int_equal(j->recomputes, (uint64_t)cfg.keys);
		assert_int_equal(j->keys_recomputed, cfg.keys);
	}
	const struct stampede_hot_result *o = &r->outage;
	print_message("outage: Redis lost at %.2f s (%s); proxy cut %d; %llu reads after, %llu served by "
	              "PostgreSQL, %llu lost\n",
	              o->redis_lost_at_s, o->redis_error, r->connections_cut,
	              (unsigned long long)o->reads_after_loss, (unsigned long long)o->degraded_queries,
	              (unsigned long long)o->lost);
	/* every client was connected through the proxy when it cut */
	assert_int_equal(r->connections_cut, cfg.clients);
	assert_true(strlen(o->redis_error) > 0);
	assert_int_equal(o->lost, 0);
	assert_true(o->degraded_queries > 0);
	/* every phase asked its --predict question, answered by these very counts: the herd's
	 * recomputes per expiry, exactly 1 under the lock, each key once with jitter, no read lost */
	lab_assert_every_phase_asks(&answers, STAMPEDE_PHASES);
	assert_true(lab_answer(&answers, "herd") == r->hot[STAMPEDE_NONE].recomputes_per_expiry);
	assert_true(lab_answer(&answers, "defences") == 1);
	assert_true(lab_answer(&answers, "jitter") == cfg.keys);
	assert_true(lab_answer(&answers, "outage") == 0);
	/* only the proxy went away: the shared Redis still answers */
	assert_shared_redis_answers();
	lab_assert_nothing_left("lab_stampede", "lab:stampede:");
	free(r);
}

/* ---- a server lost mid-run ---- */

/* The smallest run that still has every phase: it only has to reach the moment of the loss. */
static void tiny_config(struct stampede_config *cfg)
{
	stampede_config_default(cfg, true);
	cfg->clients = 6;
	cfg->rows = 2000;
	cfg->keys = 20;
	cfg->sweepers = 2;
}

struct cutter {
	struct proxy *proxy;
	int after_ms;
	pthread_t thread;
	atomic_int begun; /* phases begun */
};

static void *cut_later_cb(void *arg)
{
	struct cutter *c = arg;
	usleep((useconds_t)c->after_ms * 1000);
	proxy_refuse(c->proxy, true);
	proxy_cut(c->proxy);
	return NULL;
}

/* At the first phase's start, starts the thread that cuts the proxy a moment later. */
static void cut_in_phase_one_cb(int phase, const struct lab_phase_def *def, void *arg)
{
	(void)def;
	struct cutter *c = arg;
	if (atomic_fetch_add(&c->begun, 1) == 0 && phase == 0)
		assert_int_equal(pthread_create(&c->thread, NULL, cut_later_cb, c), 0);
}

/* url with its host and port replaced by 127.0.0.1:port, as a key=value conninfo string. */
static void pg_conninfo_through(const char *url, int port, char *out, size_t outlen)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(url, &perr);
	assert_non_null(opts);
	snprintf(out, outlen, "host=127.0.0.1 port=%d", port);
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (!o->val || !strcmp(o->keyword, "host") || !strcmp(o->keyword, "hostaddr") ||
		    !strcmp(o->keyword, "port"))
			continue;
		size_t n = strlen(out);
		n += (size_t)snprintf(out + n, outlen - n, " %s='", o->keyword);
		for (const char *v = o->val; *v && n + 3 < outlen; v++) {
			if (*v == '\'' || *v == '\\')
				out[n++] = '\\';
			out[n++] = *v;
		}
		snprintf(out + n, outlen - n, "'");
	}
	PQconninfoFree(opts);
}

static void test_postgres_lost_mid_run_ends_the_run_naming_it(void **state)
{
	(void)state;
	char err[LAB_ERRLEN] = "", url[1024];
	char host[256];
	struct proxy_config pc = {.upstream_host = host};
	assert_int_equal(
	        pg_url_endpoint(pg_url_default(), host, sizeof(host), &pc.upstream_port, err, sizeof(err)),
	        0);
	struct proxy *p = proxy_start(&pc, err, sizeof(err));
	assert_non_null(p);
	pg_conninfo_through(pg_url_default(), proxy_port(p), url, sizeof(url));

	struct stampede_config cfg;
	tiny_config(&cfg);
	cfg.pg_url = url;
	struct cutter cut = {.proxy = p, .after_ms = 250};
	cfg.hooks = (struct lab_phase_hooks){cut_in_phase_one_cb, NULL, &cut};
	struct stampede_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	int rc = stampede_run(&cfg, r, err, sizeof(err));
	print_message("PostgreSQL cut: rc %d, lost \"%s\": %s\n", rc, r->lost_server, err);
	pthread_join(cut.thread, NULL);
	assert_int_equal(rc, -1);
	assert_string_equal(r->lost_server, "PostgreSQL");
	assert_true(strlen(err) > 0);
	/* promptly: the run ended in the phase where the server went away */
	assert_int_equal(atomic_load(&cut.begun), 1);
	proxy_free(p);
	free(r);
	/* a lost server cannot be cleaned through: the test drops what the run could not */
	assert_int_equal(pg_url_schema_drop(pg_url_default(), "lab_stampede", err, sizeof(err)), 0);
	lab_assert_nothing_left("lab_stampede", "lab:stampede:");
}

struct redis_cutter {
	struct proxy *proxy;
	int connections; /* cut once this many were accepted: the lab's clients are connected */
	pthread_t thread;
	atomic_bool cut;
};

static void *cut_when_connected_cb(void *arg)
{
	struct redis_cutter *c = arg;
	for (int i = 0; i < 3000; i++) { /* at most 30 s: the lab would have failed the test by then */
		struct proxy_stats st;
		proxy_stats(c->proxy, &st);
		if (st.accepted >= (uint64_t)c->connections) {
			proxy_refuse(c->proxy, true);
			proxy_cut(c->proxy);
			atomic_store(&c->cut, true);
			break;
		}
		usleep(10 * 1000);
	}
	return NULL;
}

static void test_redis_lost_mid_run_exits_2_naming_it_in_one_line(void **state)
{
	(void)state;
	char err[LAB_ERRLEN] = "";
	struct redis_url u;
	assert_int_equal(redis_url_parse(redis_url_default(), &u, err, sizeof(err)), 0);
	struct proxy_config pc = {.upstream_host = u.host, .upstream_port = u.port};
	struct proxy *p = proxy_start(&pc, err, sizeof(err));
	redis_url_free(&u); /* proxy_start resolved the host: the name is not kept */
	assert_non_null(p);
	struct stampede_config cfg;
	stampede_config_default(&cfg, true);
	/* the probe, the lab's own connection, then every client of the first phase */
	struct redis_cutter cut = {.proxy = p, .connections = 2 + cfg.clients};
	assert_int_equal(pthread_create(&cut.thread, NULL, cut_when_connected_cb, &cut), 0);
	char env[128], shown[128];
	snprintf(env, sizeof(env), "LAB_REDIS_URL=redis://127.0.0.1:%d/0", proxy_port(p));
	snprintf(shown, sizeof(shown), "lab-stampede: lost Redis at redis://127.0.0.1:%d/0: ", proxy_port(p));
	static char out[65536], errout[4096];
	int rc = lab_run("stampede", env, "--quick", out, sizeof(out), errout, sizeof(errout));
	pthread_join(cut.thread, NULL);
	print_message("exit %d, stderr: %s", rc, errout);
	assert_true(atomic_load(&cut.cut));
	assert_int_equal(rc, LAB_EXIT_ENV);
	/* one line naming the server, then how to start it; nothing else */
	assert_ptr_equal(strstr(errout, shown), errout);
	assert_non_null(strstr(errout, "\n  start it: make up"));
	int lines = 0;
	for (const char *c = errout; *c; c++)
		lines += *c == '\n';
	assert_int_equal(lines, 2);
	/* promptly: it ended in the phase where Redis went away */
	assert_non_null(strstr(out, "[1/4]"));
	assert_null(strstr(out, "[2/4]"));
	proxy_free(p);
	/* keys written through the proxy could not be deleted through it: the test does */
	redisContext *c = redis_connect_url(redis_url_default(), 2000, err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(redis_del_prefix(c, "lab:stampede:", NULL, err, sizeof(err)), 0);
	redisFree(c);
	lab_assert_nothing_left("lab_stampede", "lab:stampede:");
}

/* ---- the binary ---- */

static void test_ctrl_c_mid_run_leaves_no_schema_and_no_keys(void **state)
{
	(void)state;
	static char out[65536], err[4096];
	double stop_ms = 0;
	int rc = lab_interrupt("stampede", "--quick", "[2/", SIGINT, 30000, &stop_ms, out, sizeof(out), err,
	                       sizeof(err));
	print_message("exit %d %.0f ms after Ctrl-C; stderr: %s", rc, stop_ms, err);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_stampede", "lab:stampede:");
}

static void test_unreachable_redis_exits_2_with_the_url_and_how_to_start_it(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	int rc = lab_run("stampede", "LAB_REDIS_URL=redis://:secret@127.0.0.1:1/0", "--quick", out,
	                 sizeof(out), err, sizeof(err));
	assert_int_equal(rc, LAB_EXIT_ENV);
	assert_non_null(strstr(err, "cannot connect to Redis at redis://127.0.0.1:1/0"));
	assert_non_null(strstr(err, "make up"));
	assert_null(strstr(err, "secret"));
	assert_string_equal(out, "");
	assert_int_equal(lab_run("stampede", NULL, "--bogus", out, sizeof(out), err, sizeof(err)),
	                 LAB_EXIT_ENV);
	assert_non_null(strstr(err, "--bogus"));
	assert_string_equal(out, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_quick_run_demonstrates_the_claim_on_the_servers_counts),
	        cmocka_unit_test(test_postgres_lost_mid_run_ends_the_run_naming_it),
	        cmocka_unit_test(test_redis_lost_mid_run_exits_2_naming_it_in_one_line),
	        cmocka_unit_test(test_ctrl_c_mid_run_leaves_no_schema_and_no_keys),
	        cmocka_unit_test(test_unreachable_redis_exits_2_with_the_url_and_how_to_start_it),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
