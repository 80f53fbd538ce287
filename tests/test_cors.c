/*
 * test_cors.c — lab-cors's claims, against the real PostgreSQL and a real headless Chromium.
 * needs: postgres
 *
 * The API's CORS headers are checked policy by policy with raw bytes (no browser: what the
 * server sends, whatever a browser would make of it); the run through its judge (the verdict must
 * be demonstrated) and what the browser decided, case by case, beside what the API's log
 * received: bytes stolen, preflights counted, the browser started once. The Ctrl-C tests check
 * that no Chromium of the lab and no temporary directory is left. No Redis: the lab uses none.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"
#include "upstream.h"

#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "cors.h"
#include "pg.h"

#define APP      "http://127.0.0.1:1"
#define STRANGER "http://127.0.0.1:2"

static char chromium[PATH_MAX];

static int group_setup(void **state)
{
	(void)state;
	char err[1024];
	if (cors_find_chromium(chromium, sizeof(chromium), err, sizeof(err)) < 0) {
		fprintf(stderr, "test_cors: %s\n", err);
		return -1;
	}
	return 0;
}

/* One request with extra header lines (each ending in \r\n); the status, the answer into out. */
static int ask(int port, const char *method, const char *target, const char *headers, const char *body,
               char *out, size_t outlen)
{
	char req[2048];
	int n = snprintf(
	        req, sizeof(req),
	        "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
	        method, target, headers ? headers : "", body ? strlen(body) : 0, body ? body : "");
	return http_exchange(port, req, (size_t)n, out, outlen);
}

/* The value of header name in a raw answer ("" when absent). */
static const char *hdr(const char *answer, const char *name)
{
	static char v[256];
	char key[96];
	snprintf(key, sizeof(key), "\r\n%s:", name);
	const char *p = strcasestr(answer, key);
	v[0] = '\0';
	if (p) {
		p += strlen(key);
		while (*p == ' ')
			p++;
		snprintf(v, sizeof(v), "%.*s", (int)strcspn(p, "\r\n"), p);
	}
	return v;
}

static void test_each_policy_sends_its_cors_headers(void **state)
{
	(void)state;
	struct cors_config cfg;
	cors_config_default(&cfg, true);
	char err[512], out[4096];
	assert_int_equal(cors_setup(&cfg, err, sizeof(err)), 0);
	struct cors_api *api = cors_api_start(&cfg, 0, APP, true, err, sizeof(err));
	if (!api)
		fail_msg("cors_api_start: %s", err);
	int port = cors_api_port(api);
	/* none: nothing */
	assert_int_equal(ask(port, "GET", "/api/none/public", "Origin: " APP "\r\n", NULL, out, sizeof(out)),
	                 200);
	assert_string_equal(hdr(out, "Access-Control-Allow-Origin"), "");
	/* star: * (and -Credentials, which no browser honours with *) */
	assert_int_equal(
	        ask(port, "GET", "/api/star/public", "Origin: " STRANGER "\r\n", NULL, out, sizeof(out)),
	        200);
	assert_string_equal(hdr(out, "Access-Control-Allow-Origin"), "*");
	/* reflect: whatever came, with credentials, no Vary */
	assert_int_equal(ask(port, "GET", "/api/reflect/public", "Origin: http://evil.test\r\n", NULL, out,
	                     sizeof(out)),
	                 200);
	assert_string_equal(hdr(out, "Access-Control-Allow-Origin"), "http://evil.test");
	assert_string_equal(hdr(out, "Access-Control-Allow-Credentials"), "true");
	assert_string_equal(hdr(out, "Vary"), "");
	/* allowlist: the app only, Vary: Origin on both answers */
	assert_int_equal(
	        ask(port, "GET", "/api/allowlist/public", "Origin: " APP "\r\n", NULL, out, sizeof(out)),
	        200);
	assert_string_equal(hdr(out, "Access-Control-Allow-Origin"), APP);
	assert_string_equal(hdr(out, "Vary"), "Origin");
	assert_int_equal(
	        ask(port, "GET", "/api/allowlist/public", "Origin: " STRANGER "\r\n", NULL, out, sizeof(out)),
	        200);
	assert_string_equal(hdr(out, "Access-Control-Allow-Origin"), "");
	assert_string_equal(hdr(out, "Vary"), "Origin");
	/* preflights: allowed with Max-Age 600 or 0; refused without a header */
	const char *pre = "Origin: " APP "\r\nAccess-Control-Request-Method: PUT\r\n"
	                  "Access-Control-Request-Headers: content-type\r\n";
	assert_int_equal(ask(port, "OPTIONS", "/api/allowlist/notes/1", pre, NULL, out, sizeof(out)), 204);
	assert_non_null(strstr(hdr(out, "Access-Control-Allow-Methods"), "PUT"));
	assert_string_equal(hdr(out, "Access-Control-Max-Age"), "600");
	assert_int_equal(ask(port, "OPTIONS", "/api/allowlist-0/notes/1", pre, NULL, out, sizeof(out)), 204);
	assert_string_equal(hdr(out, "Access-Control-Max-Age"), "0");
	assert_int_equal(ask(port, "OPTIONS", "/api/none/notes/1", pre, NULL, out, sizeof(out)), 204);
	assert_string_equal(hdr(out, "Access-Control-Allow-Origin"), "");
	/* private data needs the session, whatever the Origin; bad input changes nothing */
	assert_int_equal(ask(port, "GET", "/api/allowlist/me", "Origin: " APP "\r\n", NULL, out, sizeof(out)),
	                 401);
	assert_int_equal(
	        ask(port, "GET", "/api/allowlist/me", "Cookie: sid=forged\r\n", NULL, out, sizeof(out)), 401);
	assert_int_equal(ask(port, "PUT", "/api/allowlist/notes/1", NULL, "{not json", out, sizeof(out)),
	                 400);
	assert_int_equal(ask(port, "PUT", "/api/allowlist/notes/x", NULL, "{}", out, sizeof(out)), 404);
	assert_int_equal(ask(port, "DELETE", "/api/allowlist/public", NULL, NULL, out, sizeof(out)), 405);
	assert_int_equal(ask(port, "GET", "/api/bogus/public", NULL, NULL, out, sizeof(out)), 404);
	/* the log has every request, with its Origin */
	assert_int_equal(cors_api_log_count(api), 14);
	struct cors_log_entry e;
	assert_int_equal(cors_api_log(api, 2, &e, 1), 1);
	assert_string_equal(e.method, "GET");
	assert_string_equal(e.target, "/api/reflect/public");
	assert_string_equal(e.origin, "http://evil.test");
	assert_false(e.cookie);
	cors_api_stop(api);
	/* without --vulnerable, the reflecting policy does not exist */
	api = cors_api_start(&cfg, 0, APP, false, err, sizeof(err));
	assert_non_null(api);
	assert_int_equal(ask(cors_api_port(api), "GET", "/api/reflect/public", "Origin: http://evil.test\r\n",
	                     NULL, out, sizeof(out)),
	                 404);
	assert_string_equal(hdr(out, "Access-Control-Allow-Origin"), "");
	cors_api_stop(api);
	assert_int_equal(cors_teardown(&cfg, err, sizeof(err)), 0);
}

/* Two Origins, or one longer than any origin: 400, and nothing reflected, even by reflect. */
static void test_a_repeated_or_huge_origin_gets_400_and_no_cors_header(void **state)
{
	(void)state;
	struct cors_config cfg;
	cors_config_default(&cfg, true);
	char err[512], out[4096];
	assert_int_equal(cors_setup(&cfg, err, sizeof(err)), 0);
	struct cors_api *api = cors_api_start(&cfg, 0, APP, true, err, sizeof(err));
	if (!api)
		fail_msg("cors_api_start: %s", err);
	int port = cors_api_port(api);
	assert_int_equal(ask(port, "GET", "/api/allowlist/public",
	                     "Origin: " STRANGER "\r\nOrigin: " APP "\r\n", NULL, out, sizeof(out)),
	                 400);
	assert_string_equal(hdr(out, "Access-Control-Allow-Origin"), "");
	char huge[1200];
	snprintf(huge, sizeof(huge), "Origin: http://%01000d.test\r\n", 0);
	assert_int_equal(ask(port, "GET", "/api/reflect/public", huge, NULL, out, sizeof(out)), 400);
	assert_string_equal(hdr(out, "Access-Control-Allow-Origin"), "");
	/* one Origin of the allowed app still passes */
	assert_int_equal(
	        ask(port, "GET", "/api/reflect/public", "Origin: " APP "\r\n", NULL, out, sizeof(out)), 200);
	assert_string_equal(hdr(out, "Access-Control-Allow-Origin"), APP);
	cors_api_stop(api);
	assert_int_equal(cors_teardown(&cfg, err, sizeof(err)), 0);
}

static void test_run_the_browser_decides_and_the_log_agrees(void **state)
{
	(void)state;
	struct cors_config cfg;
	cors_config_default(&cfg, true);
	cfg.chromium = chromium;
	struct cors_result *r = calloc(1, sizeof(*r));
	char err[1024];
	assert_non_null(r);
	const char *tmp = getenv("TMPDIR");
	tmp = tmp && *tmp ? tmp : "/tmp";
	/* each phase's --predict question, answered from what the phase measured */
	struct lab_answers answers = {0};
	cfg.hooks = lab_answers_hooks(&answers, &cfg, r);
	if (cors_run(&cfg, r, err, sizeof(err)) < 0)
		fail_msg("cors_run: %s", err);
	struct lab_verdict v;
	cors_judge(r, &v);
	if (!v.demonstrated)
		fail_msg("not demonstrated: %s", v.evidence);
	/* the browser's decisions, case by case */
	for (int i = 0; i < CORS_CASES; i++) {
		const struct cors_case_result *c = &r->cases[i];
		assert_int_equal(c->readable, cors_case_expect_readable((enum cors_case)i) ? c->tries : 0);
		if (!c->readable)
			assert_non_null(strstr(c->error, "TypeError"));
	}
	/* withheld, yet sent with the cookie and answered in full */
	const struct cors_case_result *no = &r->cases[CASE_NO_CORS];
	assert_int_equal(no->requests, 1);
	assert_int_equal(no->with_cookie, 1);
	assert_int_equal(no->server_status, 200);
	assert_true(no->bytes_sent > 0);
	assert_int_equal(no->bytes_read, 0);
	/* the Origin the browser sent: A for the app's cases, E for the evil page's */
	assert_string_equal(no->origin, r->app_origin);
	assert_string_equal(r->cases[CASE_EVIL_REFLECT].origin, r->evil_origin);
	/* the public GET went without the cookie (credentials not asked for) */
	assert_int_equal(r->cases[CASE_STAR_PUBLIC].with_cookie, 0);
	/* a refused preflight: OPTIONS and no PUT; an allowed one: both */
	assert_int_equal(r->cases[CASE_PREFLIGHT_NO].preflights, 1);
	assert_int_equal(r->cases[CASE_PREFLIGHT_NO].requests, 0);
	assert_int_equal(r->cases[CASE_PREFLIGHT_OK].preflights, 1);
	assert_int_equal(r->cases[CASE_PREFLIGHT_OK].requests, 1);
	/* the theft: the whole account through reflect, nothing through the allow-list */
	assert_int_equal(r->stolen_reflect, r->cases[CASE_EVIL_REFLECT].bytes_sent);
	assert_non_null(strstr(r->cases[CASE_EVIL_REFLECT].body, "ada@example.com"));
	assert_non_null(strstr(r->cases[CASE_EVIL_REFLECT].body, "GB33"));
	assert_int_equal(r->stolen_allowlist, 0);
	assert_int_equal(r->cases[CASE_EVIL_ALLOW].with_cookie, 1);
	/* Max-Age: one preflight per PUT at 0, one in all at 600 */
	assert_int_equal(r->preflights_max_age_0, cfg.repeats);
	assert_int_equal(r->preflights_max_age_600, 1);
	assert_int_equal(r->cases[CASE_MAXAGE_600].requests, cfg.repeats);
	/* no browser: the session decides, not the Origin */
	assert_int_equal(r->client[1].status, 200);
	assert_int_equal(r->client[1].bytes, r->stolen_reflect);
	assert_int_equal(r->client[2].status, 401);
	/* the questions: every phase asks one, and their answers are the counts above */
	lab_assert_every_phase_asks(&answers, CORS_PHASES);
	assert_true(lab_answer(&answers, "browser") == 1);  /* b: sent, answered, withheld */
	assert_true(lab_answer(&answers, "attack") == 0);   /* a: the reflecting policy */
	assert_true(lab_answer(&answers, "max_age") == 1);  /* one preflight for every PUT */
	assert_true(lab_answer(&answers, "client") == 200); /* the session decides */
	/* one browser start, gone now, its directory too */
	assert_int_equal(r->browser_starts, 1);
	assert_true(r->browser_pid > 0);
	assert_true(kill(r->browser_pid, 0) < 0);
	assert_int_equal(lab_tmpdirs(tmp, "cors", getpid()), 0);
	free(r);
	lab_assert_nothing_left("lab_cors", NULL);
}

/*
 * A browser that dies printing no page is an error naming the end of its log, never a run where
 * "nothing was readable": the stand-in says one line on stderr and exits 1.
 */
static void test_a_browser_that_prints_no_page_is_an_error_with_its_log(void **state)
{
	(void)state;
	char script[128], err[1024];
	snprintf(script, sizeof(script), "/tmp/test-cors-fake-chromium-%d", (int)getpid());
	FILE *f = fopen(script, "w");
	assert_non_null(f);
	fputs("#!/bin/sh\necho 'fake chromium: cannot open display' >&2\nexit 1\n", f);
	fclose(f);
	assert_int_equal(chmod(script, 0700), 0);
	struct cors_config cfg;
	cors_config_default(&cfg, true);
	cfg.chromium = script;
	struct cors_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	const char *tmp = getenv("TMPDIR");
	int rc = cors_run(&cfg, r, err, sizeof(err));
	remove(script);
	assert_int_equal(rc, -1);
	assert_non_null(strstr(err, "no results in the browser's dump"));
	assert_non_null(strstr(err, "chromium exited with 1"));
	assert_non_null(strstr(err, "fake chromium: cannot open display"));
	assert_int_equal(r->browser_starts, 1);
	assert_int_equal(lab_tmpdirs(tmp && *tmp ? tmp : "/tmp", "cors", getpid()), 0);
	free(r);
	lab_assert_nothing_left("lab_cors", NULL);
}

static void assert_no_browser_and_no_dir(const char *dir)
{
	char err[256];
	for (int i = 0; i < 100 && lab_processes_with(dir) > 0; i++)
		usleep(10000);
	if (lab_processes_with(dir) > 0)
		fail_msg("a Chromium started under %s is still running", dir);
	assert_int_equal(lab_tmpdirs(dir, "cors", 0), 0);
	assert_int_equal(child_rmtree(dir, err, sizeof(err)), 0);
}

static void test_ctrl_c_leaves_no_schema(void **state)
{
	(void)state;
	static char out[16384], errout[4096];
	char dir[128];
	lab_private_tmpdir(dir, sizeof(dir), "cors", "ctrl-c");
	double stop_ms;
	int rc = lab_interrupt("cors", "--quick", "[1/", SIGINT, 15000, &stop_ms, out, sizeof(out), errout,
	                       sizeof(errout));
	unsetenv("TMPDIR");
	print_message("exit %d, %.0f ms after SIGINT; stderr: %s\n", rc, stop_ms, errout);
	assert_int_equal(rc, LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_cors", NULL);
	assert_no_browser_and_no_dir(dir);
}

/*
 * As lab_interrupt, but the signal is sent once Chromium runs (a process with dir in its command
 * line), so the guard must kill a live browser: its group, renderers and all.
 */
static void test_ctrl_c_while_the_browser_runs_leaves_no_browser(void **state)
{
	(void)state;
	char dir[128], cmd[PATH_MAX + 64];
	lab_private_tmpdir(dir, sizeof(dir), "cors", "browser");
	char log[160];
	snprintf(log, sizeof(log), "/tmp/test-cors-stderr-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd), "exec %s/lab-cors --quick >/dev/null 2>%s </dev/null", LAB_BIN_DIR, log);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	unsetenv("TMPDIR");
	double start = lab_run_now_ms();
	int status = 0;
	bool running = false, exited = false;
	char needle[160];
	snprintf(needle, sizeof(needle), "%s/lab-cors-", dir);
	while (!(running = lab_processes_with(needle) > 0) && lab_run_now_ms() - start < 15000 &&
	       !(exited = waitpid(pid, &status, WNOHANG) == pid))
		usleep(5000);
	kill(pid, SIGINT);
	double signalled = lab_run_now_ms();
	while (!exited && !(exited = waitpid(pid, &status, WNOHANG) == pid) &&
	       lab_run_now_ms() - signalled < LAB_INTERRUPT_BOUND_MS)
		usleep(5000);
	char said[2048] = "";
	FILE *f = fopen(log, "r");
	if (f) {
		said[fread(said, 1, sizeof(said) - 1, f)] = '\0';
		fclose(f);
		remove(log);
	}
	if (!exited) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		fail_msg("lab-cors was still running %d ms after SIGINT; stderr: %s", LAB_INTERRUPT_BOUND_MS,
		         said);
	}
	if (!running)
		fail_msg("Chromium never ran under %s (lab exit status %d); stderr: %s", dir, status, said);
	print_message("exit %d, %.0f ms after SIGINT with Chromium running\n", WEXITSTATUS(status),
	              lab_run_now_ms() - signalled);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_cors", NULL);
	assert_no_browser_and_no_dir(dir);
}

static void test_serve_is_safe_unless_vulnerable_and_says_so(void **state)
{
	(void)state;
	static char out[16384], errout[4096];
	double stop_ms;
	int rc = lab_interrupt("cors", "--serve", "Ctrl-C", SIGINT, 15000, &stop_ms, out, sizeof(out), errout,
	                       sizeof(errout));
	assert_int_equal(rc, LAB_EXIT_OK);
	assert_non_null(strstr(out, "listening on http://127.0.0.1:"));
	assert_null(strstr(out, "reflect"));
	assert_null(strstr(errout, "WARNING"));
	rc = lab_interrupt("cors", "--serve --vulnerable", "Ctrl-C", SIGINT, 15000, &stop_ms, out,
	                   sizeof(out), errout, sizeof(errout));
	assert_int_equal(rc, LAB_EXIT_OK);
	assert_non_null(strstr(out, "allowlist-0,reflect}"));
	assert_non_null(strstr(errout, "WARNING: --vulnerable"));
	lab_assert_nothing_left("lab_cors", NULL);
	/* --vulnerable means nothing without --serve: refused, nothing run */
	rc = lab_run("cors", NULL, "--quick --vulnerable", out, sizeof(out), errout, sizeof(errout));
	assert_int_equal(rc, LAB_EXIT_ENV);
	assert_non_null(strstr(errout, "--vulnerable goes with --serve"));
	assert_string_equal(out, "");
}

static void test_without_chromium_exits_2_naming_what_was_tried_and_the_fix(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	int rc = lab_run("cors", "LAB_CHROMIUM=/nonexistent/chromium", "--quick", out, sizeof(out), err,
	                 sizeof(err));
	assert_int_equal(rc, LAB_EXIT_ENV);
	assert_non_null(strstr(err, "$LAB_CHROMIUM=/nonexistent/chromium is not an executable file"));
	assert_non_null(strstr(err, "scripts/bootstrap"));
	assert_non_null(strstr(err, "apt-get install chromium"));
	assert_string_equal(out, "");
	lab_assert_nothing_left("lab_cors", NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_each_policy_sends_its_cors_headers),
	        cmocka_unit_test(test_a_repeated_or_huge_origin_gets_400_and_no_cors_header),
	        cmocka_unit_test(test_run_the_browser_decides_and_the_log_agrees),
	        cmocka_unit_test(test_a_browser_that_prints_no_page_is_an_error_with_its_log),
	        cmocka_unit_test(test_ctrl_c_leaves_no_schema),
	        cmocka_unit_test(test_ctrl_c_while_the_browser_runs_leaves_no_browser),
	        cmocka_unit_test(test_serve_is_safe_unless_vulnerable_and_says_so),
	        cmocka_unit_test(test_without_chromium_exits_2_naming_what_was_tried_and_the_fix),
	};
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
