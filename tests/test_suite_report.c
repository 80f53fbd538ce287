/*
 * test_suite_report — labsuite report (suite/): end to end on two fast labs (authz, pagination:
 * about 2 s each here) checked in a real headless Chromium, and the DOM that Chromium dumped read
 * here too (every lab's section and verdict, no console message); the same check failing on a
 * spoiled copy of the page (an external image: a CSP block in the console); the row, exit code
 * and section from a real document and spoiled copies of it; the HTML escaping of hostile
 * strings; nested metrics drawn for a person, not as JSON; the SVG of charts built here (bars and
 * a line, a log scale, nulls). `labsuite labs` is tested in test_suite_labs.
 *
 * needs: postgres redis
 * runs: lab-authz lab-pagination (never beside their own tests: one schema per lab)
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

#include "child.h"
#include "report.h"
#include "run.h"
#include "suite_cmd.h"

static char dir[PATH_MAX]; /* the report's output, shared with the tests that read its documents */
static char out[1 << 16];  /* a command's stdout */
static char page[1 << 20]; /* index.html */

/* cmd's exit code, what it printed into out */
static int run(const char *cmd)
{
	return suite_cmd(cmd, out, sizeof(out));
}

static size_t read_file(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	size_t n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
	return n;
}

/* What f wrote through a memstream, as a string the caller frees. */
struct capture {
	FILE *f;
	char *text;
	size_t len;
};
static FILE *capture_open(struct capture *c)
{
	c->f = open_memstream(&c->text, &c->len);
	assert_non_null(c->f);
	return c->f;
}
static char *capture_close(struct capture *c)
{
	fclose(c->f);
	return c->text;
}

static void dom_has_every_verdict(const char *where, const char *const *labs);
static void fake_run(struct suite_run *r, const char *name, const char *doc_path, const char *stderr_text,
                     int exit_code);

/* ---- end to end ---- */

static void test_report_end_to_end(void **state)
{
	(void)state;
	char err[256], cmd[PATH_MAX * 2];
	assert_int_equal(child_tmpdir("test-report", dir, sizeof(dir), err, sizeof(err)), 0);
	snprintf(cmd, sizeof(cmd), "%s/labsuite report --bin %s --out %s authz pagination", LAB_BIN_DIR,
	         LAB_BIN_DIR, dir);
	int code = run(cmd);
	if (code != 0)
		print_error("labsuite report said:\n%s\n", out);
	assert_int_equal(code, 0);
	/* the browser's check passed: the page rendered, both verdicts in its DOM, no console error */
	assert_non_null(strstr(out, "checked in headless Chromium: the page renders, 2 verdicts in its DOM, "
	                            "no console error"));
	char path[PATH_MAX + 64], png[8];
	for (const char *const *lab = (const char *const[]){"authz", "pagination", NULL}; *lab; lab++) {
		snprintf(path, sizeof(path), "%s/%s.json", dir, *lab);
		json_t *doc = json_load_file(path, 0, NULL);
		assert_non_null(doc);
		assert_true(json_is_true(json_object_get(json_object_get(doc, "verdict"), "demonstrated")));
		json_decref(doc);
	}
	snprintf(path, sizeof(path), "%s/screenshot.png", dir);
	assert_int_equal(read_file(path, png, sizeof(png)), 7);
	assert_memory_equal(png, "\x89PNG\r\n\x1a", 7);
	snprintf(path, sizeof(path), "%s/index.html", dir);
	read_file(path, page, sizeof(page));
	assert_non_null(strstr(page, "content=\"" SUITE_CSP "\""));
	assert_non_null(
	        strstr(page, "<section class=\"lab\" id=\"lab-authz\" data-verdict=\"demonstrated\">"));
	assert_non_null(
	        strstr(page, "<section class=\"lab\" id=\"lab-pagination\" data-verdict=\"demonstrated\">"));
	assert_null(strstr(page, "http://"));
	assert_null(strstr(page, "https://"));
	assert_null(strstr(page, "<script"));
	dom_has_every_verdict(dir, (const char *const[]){"authz", "pagination", NULL});
}

/*
 * What Chromium printed (labsuite keeps it as chromium.log), read here rather than trusted to
 * labsuite: a DOM, each lab's section in it with its verdict, and no console message at all.
 */
static void dom_has_every_verdict(const char *where, const char *const *labs)
{
	static char log[1 << 21];
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/chromium.log", where);
	read_file(path, log, sizeof(log));
	const char *dom = strstr(log, "<html"), *end = dom ? strstr(dom, "</html>") : NULL;
	if (!dom || !end)
		fail_msg("Chromium dumped no DOM; it printed:\n%.2000s", log);
	for (const char *line = log; *line; line += strcspn(line, "\n"), line += *line == '\n')
		if (line[0] == '[' && strstr(line, ":CONSOLE") &&
		    strstr(line, ":CONSOLE") < strchr(line, '\n'))
			fail_msg("a console message: %.*s", (int)strcspn(line, "\n"), line);
	for (; *labs; labs++) {
		char want[256];
		snprintf(want, sizeof(want),
		         "<section class=\"lab\" id=\"lab-%s\" data-verdict=\"demonstrated\">", *labs);
		const char *sec = strstr(dom, want), *sec_end = sec ? strstr(sec, "</section>") : NULL;
		if (!sec || sec > end || !sec_end)
			fail_msg("no section %s in the DOM Chromium dumped", want);
		/* the verdict a person reads, inside that section */
		const char *mark =
		        strstr(sec, "<span class=\"mark\">✔</span> <strong>demonstrated:</strong>");
		if (!mark || mark > sec_end)
			fail_msg("lab-%s's section in the DOM shows no ✔ demonstrated verdict", *labs);
	}
}

/* The same page spoiled with an external image: the browser's check must fail, naming the block. */
static void test_spoiled_page_fails_the_check(void **state)
{
	(void)state;
	char spoiled[PATH_MAX], err[1024], path[PATH_MAX + 64];
	assert_int_equal(child_tmpdir("test-report-spoiled", spoiled, sizeof(spoiled), err, sizeof(err)), 0);
	char *img = strstr(page, "</main>");
	assert_non_null(img);
	snprintf(path, sizeof(path), "%s/index.html", spoiled);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "%.*s<img src=\"https://example.invalid/spoiled.png\" alt=\"\">%s", (int)(img - page),
	        page, img);
	assert_int_equal(fclose(f), 0);
	struct suite_run runs[2];
	const char *labs[] = {"authz", "pagination"};
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s.json", dir, labs[i]);
		fake_run(&runs[i], labs[i], path, "", 0);
	}
	struct suite_batch b = {.runs = runs, .n = 2};
	int check = suite_browser_check(spoiled, &b, err, sizeof(err));
	for (int i = 0; i < 2; i++) {
		json_decref(runs[i].doc);
		free(runs[i].err_text);
	}
	char rerr[256];
	child_rmtree(spoiled, rerr, sizeof(rerr));
	if (check != 1)
		fail_msg("the check of a page with an external image returned %d (want 1): %s", check, err);
	assert_non_null(strstr(err, "a console message in Chromium"));
	assert_non_null(strstr(err, "example.invalid/spoiled.png"));
}

static void test_usage(void **state)
{
	(void)state;
	char cmd[PATH_MAX * 2];
	snprintf(cmd, sizeof(cmd), "%s/labsuite report --bin %s", LAB_BIN_DIR, LAB_BIN_DIR);
	assert_int_equal(run(cmd), 2);
	assert_non_null(strstr(out, "no lab named"));
	snprintf(cmd, sizeof(cmd), "%s/labsuite report --bin %s --out %s no-such-lab", LAB_BIN_DIR,
	         LAB_BIN_DIR, dir);
	assert_int_equal(run(cmd), 2);
	assert_non_null(strstr(out, "lab-no-such-lab"));
	snprintf(cmd, sizeof(cmd), "%s/labsuite report --out \"\" authz", LAB_BIN_DIR);
	assert_int_equal(run(cmd), 2);
}

/* ---- the parts, from the real document the report run wrote ---- */

/* A finished run of lab name: its document from doc_path (may be absent), stderr text, exit code. */
static void fake_run(struct suite_run *r, const char *name, const char *doc_path, const char *stderr_text,
                     int exit_code)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	char err_path[PATH_MAX + 32];
	snprintf(err_path, sizeof(err_path), "%s/fake.stderr", dir);
	FILE *f = fopen(err_path, "w");
	assert_non_null(f);
	fputs(stderr_text, f);
	fclose(f);
	assert_int_equal(suite_run_read(r, doc_path, err_path), 0);
	r->done = true;
	r->status = exit_code << 8; /* as waitpid reports an exit */
	r->ms = 2345;
}

static void test_row_from_real_document(void **state)
{
	(void)state;
	char path[PATH_MAX + 32], row[2048];
	snprintf(path, sizeof(path), "%s/authz.json", dir);
	struct suite_run r;
	fake_run(&r, "authz", path, "", 0);
	struct suite_batch b = {.runs = &r, .n = 1};
	assert_true(suite_run_ok(&r));
	assert_int_equal(suite_batch_exit(&b), SUITE_EXIT_OK);
	suite_row(&r, 10, 100, row, sizeof(row));
	assert_int_equal(strncmp(row, "✔ authz          2.3 s  ", strlen("✔ authz          2.3 s  ")), 0);
	assert_true(term_width(row) <= 100);
	const char *evidence =
	        json_string_value(json_object_get(json_object_get(r.doc, "verdict"), "evidence"));
	assert_int_equal(strncmp(row + strlen("✔ authz          2.3 s  "), evidence, 20), 0);

	/* spoiled: the same document with its verdict false */
	json_object_set_new(json_object_get(r.doc, "verdict"), "demonstrated", json_false());
	assert_false(suite_run_ok(&r));
	assert_int_equal(suite_batch_exit(&b), SUITE_EXIT_FAILED);
	suite_row(&r, 10, 100, row, sizeof(row));
	assert_int_equal(strncmp(row, "✘ authz", strlen("✘ authz")), 0);
	struct capture c;
	suite_html_section(capture_open(&c), &r);
	char *html = capture_close(&c);
	assert_non_null(strstr(html, "id=\"lab-authz\" data-verdict=\"not-demonstrated\""));
	assert_non_null(strstr(html, "not demonstrated:"));
	free(html);
	json_decref(r.doc);
	free(r.err_text);
}

static void test_no_document(void **state)
{
	(void)state;
	char path[PATH_MAX + 32], row[2048], summary[SUITE_SUMMARY_LEN];
	snprintf(path, sizeof(path), "%s/none.json", dir); /* never written */
	struct suite_run r;
	fake_run(&r, "authz", path, "lab-authz: a first line\nlab-authz: PostgreSQL at 127.0.0.1 refused\n\n",
	         2);
	struct suite_batch b = {.runs = &r, .n = 1};
	assert_null(r.doc);
	assert_false(suite_run_ok(&r));
	assert_int_equal(suite_batch_exit(&b), SUITE_EXIT_FAILED);
	suite_run_summary(&r, summary, sizeof(summary));
	assert_string_equal(summary, "exit 2, no document: lab-authz: PostgreSQL at 127.0.0.1 refused");
	suite_row(&r, 5, 100, row, sizeof(row));
	assert_int_equal(strncmp(row, "✘ authz", strlen("✘ authz")), 0);
	assert_non_null(strstr(row, "exit 2, no document: lab-authz: PostgreSQL"));
	struct capture c;
	suite_html_section(capture_open(&c), &r);
	char *html = capture_close(&c);
	assert_non_null(strstr(html, "data-verdict=\"not-demonstrated\""));
	assert_non_null(strstr(html, "<pre class=\"stderr\">lab-authz: a first line"));
	free(html);
	free(r.err_text);
}

static void test_escaping_hostile_strings(void **state)
{
	(void)state;
	struct capture c;
	suite_esc(capture_open(&c), "<script>alert('x')</script> & \"q\"");
	char *text = capture_close(&c);
	assert_string_equal(text, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;");
	free(text);

	/* every string of a document, hostile: question, claim, evidence, a metric's key and value, a
	 * phase's name, the chart's title, labels and series */
	const char *evil = "<img src=x onerror=alert(1)>\"'&";
	struct suite_run r = {.name = "authz", .done = true, .ms = 10};
	r.doc = json_pack("{s:s, s:[{s:s, s:{s:s, s:[{s:s}]}}], s:{s:b, s:s, s:s}, s:{s:s, s:[s], "
	                  "s:[{s:s, s:[i]}]}, s:[{s:s, s:s, s:s, s:[s], s:i}]}",
	                  "question", evil, "phases", "name", evil, "metrics", evil, evil, "rows", evil, evil,
	                  "verdict", "demonstrated", 1, "claim", evil, "evidence", evil, "chart", "title",
	                  evil, "labels", evil, "series", "name", evil, "values", 3, "questions", "phase",
	                  evil, "question", evil, "kind", "choice", "choices", evil, "measured", 0);
	assert_non_null(r.doc);
	suite_html_section(capture_open(&c), &r);
	char *html = capture_close(&c);
	assert_null(strstr(html, "<img"));
	assert_null(strstr(html, "onerror=alert(1)>"));
	assert_true(suite_count(html, "&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;") >= 10);
	free(html);
	json_decref(r.doc);
}

/* ---- a phase's metrics ---- */

/* Nested values the labs really emit (put-patch's "after", indexing's plans, isolation's levels,
 * idempotency's statuses, sql-injection's attacks), drawn for a person: never as JSON text. */
static void test_nested_metrics_for_a_person(void **state)
{
	(void)state;
	const char *sha = "fbca8906fbf7547ec60ec8cfaf3824d8ba702b6c50d4a6cd8d52a4c0b59dc9ea";
	json_t *m = json_pack(
	        "{s:[{s:s, s:[{s:i, s:s}, {s:i, s:s}], s:[i,i,i], s:{s:s, s:i}, s:{s:{s:s}, s:{s:s}}}],"
	        " s:{s:{s:i, s:f}, s:{s:i, s:f}}, s:I, s:[i,i,i,i,i,i,i,i,i,i]}",
	        "requests", "request", "PUT", "after", "sends", 1, "digest", sha, "sends", 2, "digest", sha,
	        "statuses", 500, 201, 201, "plan", "node", "Index Scan", "buffers", 3, "levels",
	        "READ COMMITTED", "outcome", "blocked", "SERIALIZABLE", "outcome", "40001", "attacks",
	        "tautology", "rows", 30, "ms", 1.8, "union", "rows", 0, "ms", 2.5, "queryid",
	        (json_int_t)-5303252748650946921LL, "many", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
	assert_non_null(m);
	struct capture c;
	suite_html_metrics(capture_open(&c), m);
	char *html = capture_close(&c);
	json_decref(m);
	/* no JSON anywhere: no braces, brackets or quoted keys */
	assert_null(strstr(html, "[{"));
	assert_null(strstr(html, "{&quot;"));
	assert_null(strstr(html, "&quot;sends&quot;"));
	/* an array of objects in a cell: a small table; a sha256 cut to 8 digits, whole in a tooltip */
	assert_int_equal(suite_count(html, "<table class=\"metrics mini\">"), 2);
	assert_int_equal(suite_count(html, ">fbca8906…</span>"), 2);
	assert_non_null(strstr(html, "title=\"fbca8906fbf7547e"));
	/* a list joined, a few fields on a line, a long list cut */
	assert_non_null(strstr(html, "500, 201, 201"));
	assert_non_null(strstr(html, "<span class=\"dim\">node</span> Index Scan"));
	assert_non_null(strstr(html, "+2 more"));
	/* an object of like objects: one table, a row per key, ms as a duration */
	assert_non_null(strstr(html, "<th>tautology</th>"));
	assert_non_null(strstr(html, "1.80 ms"));
	/* an identifier past 2^53 exactly, not rounded or grouped */
	assert_non_null(strstr(html, "-5303252748650946921"));
	free(html);
}

/* ---- the chart ---- */

static char *svg_of(const char *json, bool *drew)
{
	json_t *chart = json_loads(json, 0, NULL);
	assert_true(chart != NULL || !strcmp(json, "null"));
	struct capture c;
	*drew = suite_svg_chart(capture_open(&c), chart);
	json_decref(chart);
	return capture_close(&c);
}

static void test_svg_bars_and_line(void **state)
{
	(void)state;
	bool drew;
	char *svg = svg_of(
	        "{\"title\": \"throughput\", \"unit\": \"requests/s\", \"labels\": [\"2\", \"5\", \"10\"],"
	        " \"series\": [{\"name\": \"measured\", \"values\": [88, 227, null]},"
	        "              {\"name\": \"other\", \"values\": [10, null, 20]},"
	        "              {\"name\": \"Little's law\", \"values\": [100, 250, 250], \"line\": true}],"
	        " \"log\": false}",
	        &drew);
	assert_true(drew);
	assert_int_equal(suite_count(svg, "<svg"), 1);
	/* four bars (two nulls draw none), each with its value; one line of three points */
	assert_int_equal(suite_count(svg, "rx=\"2\"><title>"), 4);
	assert_int_equal(suite_count(svg, "<polyline"), 1);
	assert_int_equal(suite_count(svg, "<circle"), 3);
	assert_non_null(strstr(svg, "class=\"value\">227</text>"));
	/* round ticks from 0 to 250 in steps of 50 */
	assert_non_null(strstr(svg, "class=\"tick\">0</text>"));
	assert_non_null(strstr(svg, "class=\"tick\">250</text>"));
	assert_non_null(strstr(svg, "class=\"tick\">50</text>"));
	/* the labels and a legend entry per series, names escaped */
	assert_non_null(strstr(svg, "class=\"label\">10</text>"));
	assert_non_null(strstr(svg, "class=\"legend\">Little&#39;s law</text>"));
	assert_non_null(strstr(svg, "class=\"title\">throughput</text>"));
	free(svg);
}

static void test_svg_log_scale_and_nulls(void **state)
{
	(void)state;
	bool drew;
	char *svg = svg_of("{\"title\": \"statements\", \"labels\": [\"loop\", \"JOIN\", \"batched\"],"
	                   " \"series\": [{\"name\": \"N = 1000\", \"values\": [1001, 1, 2]},"
	                   "              {\"name\": \"line\", \"values\": [5, null, 7], \"line\": true}],"
	                   " \"log\": true}",
	                   &drew);
	assert_true(drew);
	/* decades from 1 to 10,000 */
	for (const char *const *t =
	             (const char *const[]){">1<", ">10<", ">100<", ">1,000<", ">10,000<", NULL};
	     *t; t++) {
		char want[64];
		snprintf(want, sizeof(want), "class=\"tick\"%s/text>", *t);
		assert_non_null(strstr(svg, want));
	}
	assert_int_equal(suite_count(svg, "rx=\"2\"><title>"), 3);
	/* a null breaks the line: two pieces of one point each */
	assert_int_equal(suite_count(svg, "<polyline"), 2);
	free(svg);

	svg = svg_of("null", &drew);
	assert_false(drew);
	assert_non_null(strstr(svg, "no chart"));
	free(svg);
	svg = svg_of("{\"labels\": [], \"series\": []}", &drew);
	assert_false(drew);
	free(svg);
	/* every value null: the axis and the legend, no bar */
	svg = svg_of("{\"labels\": [\"a\"], \"series\": [{\"name\": \"s\", \"values\": [null]}]}", &drew);
	assert_true(drew);
	assert_int_equal(suite_count(svg, "rx=\"2\"><title>"), 0);
	free(svg);
}

static void test_cut_at_a_word(void **state)
{
	(void)state;
	char buf[128];
	assert_string_equal(suite_cut("alpha beta gamma", 16, buf, sizeof(buf)), "alpha beta gamma");
	assert_string_equal(suite_cut("alpha beta gamma", 12, buf, sizeof(buf)), "alpha beta…");
	assert_string_equal(suite_cut("alpha, beta gamma", 10, buf, sizeof(buf)), "alpha…");
	assert_string_equal(suite_cut("µµµµµµµµµµ", 5, buf, sizeof(buf)), "µµµµ…");
	assert_int_equal(term_width(suite_cut("a ✔✔✔✔✔✔✔✔✔✔ b", 8, buf, sizeof(buf))), 2);
}

/* ---- the browser's check, on logs written here ---- */

static void test_browser_verify(void **state)
{
	(void)state;
	struct suite_run runs[2] = {{.name = "authz"}, {.name = "pagination"}};
	runs[0].doc = json_pack("{s:{s:b}}", "verdict", "demonstrated", 1);
	struct suite_batch b = {.runs = runs, .n = 2};
	const char *dom = "<html><body><section class=\"lab\" id=\"lab-authz\" data-verdict=\"demonstrated\">"
	                  "<section class=\"lab\" id=\"lab-pagination\" data-verdict=\"not-demonstrated\">"
	                  "Refused to believe it, said the page</body></html>\n";
	char log[4096], err[512];
	snprintf(log, sizeof(log), "[1:2:1129/220339.472535:ERROR:dbus/bus.cc:405] Failed to connect\n%s",
	         dom);
	assert_int_equal(suite_browser_verify(log, &b, err, sizeof(err)), 0);
	snprintf(log, sizeof(log),
	         "%s[1:1:1129/2203:INFO:CONSOLE:1] \"Loading the image 'https://x/' violates "
	         "the following Content Security Policy directive\", source: file:///i.html (1)\n",
	         dom);
	assert_int_equal(suite_browser_verify(log, &b, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "console message"));
	assert_int_equal(suite_browser_verify("[1:1:x:ERROR:y] crashed\n", &b, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "did not render"));
	json_object_set_new(json_object_get(runs[0].doc, "verdict"), "demonstrated", json_false());
	assert_int_equal(suite_browser_verify(dom, &b, err, sizeof(err)), 1);
	assert_non_null(strstr(err, "lab-authz\" data-verdict=\"not-demonstrated"));
	json_decref(runs[0].doc);

	/* no browser: exit 2, naming what was tried and scripts/bootstrap */
	setenv("LAB_CHROMIUM", "/nonexistent/chromium", 1);
	assert_int_equal(suite_browser_check(dir, &b, err, sizeof(err)), 2);
	unsetenv("LAB_CHROMIUM");
	assert_non_null(strstr(err, "/nonexistent/chromium"));
	assert_non_null(strstr(err, "scripts/bootstrap"));
}

static int teardown(void **state)
{
	(void)state;
	char err[256];
	if (dir[0])
		child_rmtree(dir, err, sizeof(err));
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_report_end_to_end), /* first: the others read its documents */
	        cmocka_unit_test(test_spoiled_page_fails_the_check),
	        cmocka_unit_test(test_row_from_real_document),
	        cmocka_unit_test(test_no_document),
	        cmocka_unit_test(test_escaping_hostile_strings),
	        cmocka_unit_test(test_nested_metrics_for_a_person),
	        cmocka_unit_test(test_svg_bars_and_line),
	        cmocka_unit_test(test_svg_log_scale_and_nulls),
	        cmocka_unit_test(test_cut_at_a_word),
	        cmocka_unit_test(test_browser_verify),
	        cmocka_unit_test(test_usage),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
