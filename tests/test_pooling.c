/*
 * test_pooling.c — lab-pooling's claims, measured against the real PostgreSQL: pooling_run on a
 * small config, pooling_judge's verdict and the counts behind it; the lab binary interrupted
 * mid-run; --serve stopped by Ctrl-C with requests in flight and queued; bad input.
 * needs: postgres max_connections (phase 4 fills the server's connection slots, so this test
 * runs alone: CMake gives it RUN_SERIAL)
 *
 * Thresholds live in pooling_judge, once; nothing here retypes them, and nothing asserts an
 * absolute time. The binaries run are those of this build (LAB_BIN_DIR): under the sanitizer
 * build, a leak or a use after free in the lab shows on its stderr and fails the test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"
#include "upstream.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api.h"
#include "load.h"
#include "pg.h"
#include "pooling.h"

/* --serve under load: 50 clients on a pool of 5, each holding its connection 200 ms */
#define SERVE_CLIENTS   50
#define SERVE_HOLD_MS   200
#define SERVE_PIPELINED 20 /* requests queued on each client connection: 20 x 100 ms of waiting */

static void test_a_small_run_demonstrates_the_claim_with_the_counts_behind_it(void **state)
{
	(void)state;
	struct pooling_config cfg;
	pooling_config_default(&cfg, true);
	/* --quick, smaller: 20 requests each way; twice and ten times the pool size (the queue under
	 * the timeout, then past it); the CPU-bound load at 30 only, which stays up as instance 1 */
	cfg.compare_requests = 20;
	int levels[] = {10, 50}, sizes[] = {30};
	memcpy(cfg.levels, levels, sizeof(levels));
	cfg.nlevels = 2;
	memcpy(cfg.sizes, sizes, sizeof(sizes));
	cfg.nsizes = 1;
	struct pooling_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	char err[LAB_ERRLEN];
	struct lab_answers answers = {0};
	cfg.hooks = lab_answers_hooks(&answers, &cfg, r);
	if (pooling_run(&cfg, r, err, sizeof(err)) < 0)
		fail_msg("pooling_run: %s", err);
	struct lab_verdict v;
	pooling_judge(r, &v);
	print_message("%s\n", v.evidence);
	if (!v.demonstrated)
		fail_msg("not demonstrated: %s", v.evidence);

	/* phase 1: the server opened one connection per direct request, the pool only its own */
	assert_int_equal(r->compare.direct.status_2xx, cfg.compare_requests);
	assert_int_equal(r->compare.pooled.status_2xx, cfg.compare_requests);
	assert_int_equal(r->compare.connects, cfg.compare_requests);
	assert_true(r->compare.pooled_opened <= (uint64_t)cfg.pool_size);
	/* phase 2: every level ran; none failed outright; the queue reached past the pool size and
	 * only the top level got 503s */
	assert_int_equal(r->exhaust.nlevels, 2);
	for (int i = 0; i < 2; i++)
		assert_int_equal(r->exhaust.levels[i].errors + r->exhaust.levels[i].other, 0);
	assert_int_equal(r->exhaust.levels[0].http_503, 0);
	assert_true(r->exhaust.levels[1].http_503 > 0);
	assert_true(r->exhaust.levels[1].max_waiting > cfg.pool_size);
	/* phase 3: one leaked connection per 404 until none was left, and the detector named it */
	assert_int_equal(r->leak.leaky.not_found, cfg.pool_size);
	assert_int_equal(r->leak.leaky.answered_after_drain, 0);
	assert_string_equal(r->leak.leaky.first_leak.holder, POOLING_LEAKY_HOLDER);
	assert_int_equal(r->leak.undersized.leaks, 0);
	assert_int_equal(r->leak.undersized.drained_at_us, 0);
	/* phase 4: instances opened whole pools until the server refused one, within its slots */
	assert_true(r->maxconn.failed_instance > 0);
	assert_int_equal(r->maxconn.instances_ready, r->maxconn.failed_instance - 1);
	assert_true(r->maxconn.opened_total <= r->maxconn.max_connections - r->maxconn.reserved);
	assert_int_equal(r->maxconn.nsizes, 1);
	/* every phase asked its --predict question, answered by these very numbers: the pool 10x or
	 * more (c, as the verdict says), the ceiling the levels reached, a 404 per connection of the
	 * pool, and the instances before the refused one */
	lab_assert_every_phase_asks(&answers, POOLING_PHASES);
	assert_true(lab_answer(&answers, "compare") == 2);
	double most = 0;
	for (int i = 0; i < r->exhaust.nlevels; i++)
		most = r->exhaust.levels[i].rps > most ? r->exhaust.levels[i].rps : most;
	assert_true(lab_answer(&answers, "exhaustion") == most);
	assert_true(lab_answer(&answers, "leak") == cfg.pool_size);
	assert_true(lab_answer(&answers, "max_connections") == r->maxconn.failed_instance - 1);
	free(r);
	lab_assert_nothing_left("lab_pooling", NULL);
}

static void test_ctrl_c_mid_run_exits_130_and_leaves_nothing(void **state)
{
	(void)state;
	static char out[16384], err[4096];
	double stop_ms = 0;
	int rc = lab_interrupt("pooling", "--quick", "[2/", SIGINT, 30000, &stop_ms, out, sizeof(out), err,
	                       sizeof(err));
	print_message("stopped %.0f ms after SIGINT\n", stop_ms);
	if (rc != LAB_EXIT_INTERRUPTED)
		fail_msg("exit %d, not %d; stderr:\n%s", rc, LAB_EXIT_INTERRUPTED, err);
	assert_non_null(strstr(err, "interrupted: dropping schema lab_pooling"));
	assert_null(strstr(err, "could not"));
	lab_assert_nothing_left("lab_pooling", NULL);
}

/* One request (HTTP/1.0: the server closes after the reply); returns the status, body in body. */
static int api_get(int port, const char *method, const char *path, char *body, size_t bodylen)
{
	char req[512], resp[8192];
	int n = snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\n\r\n", method, path);
	int status = http_exchange(port, req, (size_t)n, resp, sizeof(resp));
	if (!status)
		fail_msg("%s %s: no HTTP status in \"%s\"", method, path, resp);
	const char *b = strstr(resp, "\r\n\r\n");
	snprintf(body, bodylen, "%s", b ? b + 4 : "");
	return status;
}

/* The running lab-pooling --serve: its pid, its stdout and stderr, its port. */
struct served {
	pid_t pid;
	int out, err;
	int port;
	char outbuf[4096];
};

static void serve_start(struct served *s)
{
	int outp[2], errp[2];
	assert_int_equal(pipe(outp), 0);
	assert_int_equal(pipe(errp), 0);
	fflush(NULL);
	s->pid = fork();
	assert_true(s->pid >= 0);
	if (s->pid == 0) {
		char bin[512];
		snprintf(bin, sizeof(bin), "%s/lab-pooling", LAB_BIN_DIR);
		dup2(outp[1], 1);
		dup2(errp[1], 2);
		close(outp[0]), close(outp[1]), close(errp[0]), close(errp[1]);
		execl(bin, bin, "--serve", "--port", "0", (char *)NULL);
		_exit(127);
	}
	close(outp[1]), close(errp[1]);
	s->out = outp[0];
	s->err = errp[0];
	/* "listening on http://127.0.0.1:PORT" once the pool is open */
	size_t n = 0;
	const char *at = NULL;
	double start = lab_run_now_ms();
	while (!(at = strstr(s->outbuf, "listening on http://127.0.0.1:")) || !strchr(at, '\n')) {
		struct pollfd p = {s->out, POLLIN, 0};
		if (lab_run_now_ms() - start > 20000 || poll(&p, 1, 100) < 0)
			fail_msg("lab-pooling --serve did not say where it listens: %s", s->outbuf);
		if (p.revents) {
			ssize_t r = read(s->out, s->outbuf + n, sizeof(s->outbuf) - 1 - n);
			if (r <= 0)
				fail_msg("lab-pooling --serve ended before listening: %s", s->outbuf);
			n += (size_t)r;
			s->outbuf[n] = '\0';
		}
	}
	s->port = atoi(at + strlen("listening on http://127.0.0.1:"));
	assert_true(s->port > 0);
}

/* Sends sig, waits for the exit (bounded) and reads what it left on stderr. Returns the exit code. */
static int serve_stop(struct served *s, int sig, char *errout, size_t errlen)
{
	kill(s->pid, sig);
	int status = 0;
	double start = lab_run_now_ms();
	while (waitpid(s->pid, &status, WNOHANG) == 0) {
		if (lab_run_now_ms() - start > LAB_INTERRUPT_BOUND_MS) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, &status, 0);
			fail_msg("lab-pooling --serve was still running %d ms after the signal",
			         LAB_INTERRUPT_BOUND_MS);
		}
		usleep(10 * 1000);
	}
	size_t n = 0;
	ssize_t r;
	while (n + 1 < errlen && (r = read(s->err, errout + n, errlen - 1 - n)) > 0)
		n += (size_t)r;
	errout[n] = '\0';
	close(s->out);
	close(s->err);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The pool as /stats shows it: active and waiting. */
static void pool_now(int port, int *active, int *waiting)
{
	char body[4096];
	assert_int_equal(api_get(port, "GET", "/stats", body, sizeof(body)), 200);
	json_error_t jerr;
	json_t *doc = json_loads(body, 0, &jerr);
	if (!doc)
		fail_msg("/stats is not JSON (%s): %s", jerr.text, body);
	json_t *pool = json_object_get(doc, "pool");
	*active = (int)json_integer_value(json_object_get(pool, "active"));
	*waiting = (int)json_integer_value(json_object_get(pool, "waiting"));
	json_decref(doc);
}

static void serve_refuses_bad_input_with_400_and_changes_nothing(struct served *s)
{
	char body[4096], path[64];
	snprintf(path, sizeof(path), "/pooled?hold_ms=%d", POOLING_HOLD_MS_MAX + 1);
	assert_int_equal(api_get(s->port, "GET", path, body, sizeof(body)), 400);
	assert_non_null(strstr(body, "hold_ms"));
	assert_int_equal(api_get(s->port, "GET", "/pooled?hold_ms=-1", body, sizeof(body)), 400);
	assert_int_equal(api_get(s->port, "GET", "/orders", body, sizeof(body)), 400);
	assert_int_equal(api_get(s->port, "GET", "/orders?id=0", body, sizeof(body)), 400);
	assert_int_equal(api_get(s->port, "POST", "/pooled", body, sizeof(body)), 405);
	assert_int_equal(api_get(s->port, "GET", "/orders?id=42&hold_ms=0", body, sizeof(body)), 200);
	assert_non_null(strstr(body, "4200"));
	int active = -1, waiting = -1;
	pool_now(s->port, &active, &waiting);
	assert_int_equal(active, 0);
	assert_int_equal(waiting, 0);
}

static void test_serve_stops_cleanly_on_ctrl_c_with_requests_in_flight_and_queued(void **state)
{
	(void)state;
	struct served s = {0};
	serve_start(&s);
	serve_refuses_bad_input_with_400_and_changes_nothing(&s);

	/* 50 clients, each with 20 requests pipelined: 5 hold a connection 200 ms, 45 queue */
	static char burst[SERVE_PIPELINED * 64];
	size_t len = 0;
	for (int i = 0; i < SERVE_PIPELINED; i++)
		len += (size_t)snprintf(burst + len, sizeof(burst) - len,
		                        "GET /pooled?hold_ms=%d HTTP/1.1\r\nHost: lab\r\n\r\n",
		                        SERVE_HOLD_MS);
	int fds[SERVE_CLIENTS];
	for (int i = 0; i < SERVE_CLIENTS; i++) {
		fds[i] = client_connect(s.port);
		assert_true(fds[i] >= 0 && write_full(fds[i], burst, len));
	}
	/* --serve runs the full config's pool: every connection busy, more clients queued than that */
	struct pooling_config served;
	pooling_config_default(&served, false);
	int active = 0, waiting = 0;
	double start = lab_run_now_ms();
	while (!(active == served.pool_size && waiting > served.pool_size) &&
	       lab_run_now_ms() - start < 10000)
		pool_now(s.port, &active, &waiting);
	print_message("at the signal: %d active, %d waiting\n", active, waiting);
	assert_int_equal(active, served.pool_size);
	assert_true(waiting > served.pool_size);

	static char err[16384];
	int rc = serve_stop(&s, SIGINT, err, sizeof(err));
	for (int i = 0; i < SERVE_CLIENTS; i++)
		close(fds[i]);
	if (rc != 0 || err[0])
		fail_msg("lab-pooling --serve exited %d after SIGINT; stderr:\n%s", rc, err);
	lab_assert_nothing_left("lab_pooling", NULL);
}

/* bench_pooling's /pipelined: every request answered, on the pipelined pool's few connections */
static void test_the_pipelined_route_answers_every_request_on_its_few_connections(void **state)
{
	(void)state;
	enum { CONNS = 2, CLIENTS = 8, REQUESTS = 200 };
	struct pooling_config cfg;
	pooling_config_default(&cfg, true);
	cfg.pipe_conns = CONNS;
	char err[LAB_ERRLEN];
	struct pooling_api *api = pooling_api_start(&cfg, 1, 0, err, sizeof(err));
	if (!api)
		fail_msg("pooling_api_start: %s", err);
	struct load_result *res = calloc(1, sizeof(*res));
	assert_non_null(res);
	struct load_config lc = {.port = pooling_api_port(api),
	                         .path = "/pipelined?hold_ms=0",
	                         .clients = CLIENTS,
	                         .max_requests = REQUESTS};
	int rc = load_run(&lc, res, err, sizeof(err));
	struct pooling_api_totals *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	pooling_api_stop(api, t);
	if (rc < 0)
		fail_msg("load_run: %s", err);
	assert_int_equal(res->errors, 0);
	assert_int_equal(res->status_2xx, REQUESTS);
	assert_int_equal(t->piped.pipelined, REQUESTS); /* each through pool_pipe_query */
	assert_int_equal(t->piped.opened, CONNS);       /* on CONNS connections, none lost */
	assert_int_equal(t->piped.closed_broken, 0);
	assert_int_equal(t->piped.prepared, CONNS); /* SELECT 1 prepared once on each */
	assert_int_equal(t->pool.acquired, 0);      /* the pool under test was not used */
	free(t);
	free(res);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_a_small_run_demonstrates_the_claim_with_the_counts_behind_it),
	        cmocka_unit_test(test_ctrl_c_mid_run_exits_130_and_leaves_nothing),
	        cmocka_unit_test(test_serve_stops_cleanly_on_ctrl_c_with_requests_in_flight_and_queued),
	        cmocka_unit_test(test_the_pipelined_route_answers_every_request_on_its_few_connections),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
