/*
 * report.c — labsuite report (suite.h): runs the labs as `labsuite labs` does (run.h), writes each
 * document as DIR/<lab>.json and one self-contained page DIR/index.html (html.c, svg.c), then
 * opens the page in headless Chromium and checks it (browser.c), saving DIR/screenshot.png and
 * DIR/chromium.log.
 * Exit 1 when a verdict failed (the page is still written, showing it) or the page failed its
 * check; 2 for usage or a missing part (a lab program, Chromium).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "report.h"
#include "suite.h"

#define DEFAULT_OUT "build/report"

static int take_out(const char *flag, const char *value, void *arg)
{
	if (strcmp(flag, "--out"))
		return -1;
	if (!value || !*value)
		return -2;
	*(const char **)arg = value;
	return 1;
}

static void help(FILE *f)
{
	fprintf(f,
	        "usage: labsuite report [--bin DIR] [--out DIR] [--timeout S] LAB...\n"
	        "  runs each DIR/lab-<LAB> --quick --json (as labsuite labs does), writes each document\n"
	        "  as OUT/<lab>.json and one self-contained page OUT/index.html (no script, no fetch:\n"
	        "  inline SVG charts), then opens it in headless Chromium: the page renders, every\n"
	        "  lab's verdict is in its DOM, no console error; it saves OUT/screenshot.png and\n"
	        "  what Chromium printed (its DOM dump and log) as OUT/chromium.log.\n"
	        "  Exit 0 when all is well, 1 when a verdict failed (the page shows it) or the page\n"
	        "  failed its check, 2 for bad usage or a missing program or browser, 130 on Ctrl-C.\n"
	        "  --bin DIR     where the lab programs are (default build)\n"
	        "  --out DIR     where the page goes (default " DEFAULT_OUT ")\n"
	        "  --timeout S   a lab still running after S seconds is stopped (default %d)\n\n",
	        SUITE_TIMEOUT_S);
	suite_alone_help(f);
}

/* mkdir -p. */
static int make_dir(const char *path, char *err, size_t errlen)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s)
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot make %.512s: %s", p, strerror(errno));
			return -1;
		}
		if (!(*s = c))
			return 0;
	}
}

/* Each document as out/<lab>.json, then the page, written whole before it replaces the old one. */
static int write_files(const char *out, const struct suite_batch *b, char *err, size_t errlen)
{
	char path[PATH_MAX + 96], tmp[PATH_MAX + 96];
	for (int i = 0; i < b->n; i++) {
		snprintf(path, sizeof(path), "%s/%s.json", out, b->runs[i].name);
		unlink(path); /* a lab that left no document leaves no old one standing for it */
		if (b->runs[i].doc && json_dump_file(b->runs[i].doc, path, JSON_INDENT(2)) < 0) {
			snprintf(err, errlen, "cannot write %.512s", path);
			return -1;
		}
	}
	snprintf(path, sizeof(path), "%s/index.html", out);
	snprintf(tmp, sizeof(tmp), "%s/.index.html.tmp", out);
	FILE *f = fopen(tmp, "w");
	if (!f) {
		snprintf(err, errlen, "cannot write %.512s: %s", tmp, strerror(errno));
		return -1;
	}
	suite_html_page(f, b);
	bool written = !ferror(f);
	if (fclose(f) != 0 || !written || rename(tmp, path) < 0) {
		snprintf(err, errlen, "cannot write %.512s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

static long file_size(const char *dir, const char *name)
{
	char path[PATH_MAX + 64];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* After the labs ran: the files, the check in Chromium, the last lines. */
static int publish(const char *out, struct suite_batch *b, struct term *t)
{
	char err[1024];
	if (write_files(out, b, err, sizeof(err)) < 0) {
		fprintf(stderr, "labsuite report: %s\n", err);
		return SUITE_EXIT_USAGE;
	}
	int docs = 0;
	for (int i = 0; i < b->n; i++)
		docs += b->runs[i].doc != NULL;
	term_printf(t, "page: %s/index.html (%s) · %d JSON documents\n", out,
	            TERM_BYTES(file_size(out, "index.html")), docs);
	int check = suite_browser_check(out, b, err, sizeof(err));
	if (check != 0) {
		fprintf(stderr, "labsuite report: %s\n", err);
		return check == SUITE_INTERRUPTED ? SUITE_EXIT_INTERRUPTED
		       : check == 2               ? SUITE_EXIT_USAGE
		                                  : SUITE_EXIT_FAILED;
	}
	term_printf(t,
	            "checked in headless Chromium: the page renders, %d verdicts in its DOM, no console "
	            "error · screenshot: %s/screenshot.png (%s)\n",
	            b->n, out, TERM_BYTES(file_size(out, "screenshot.png")));
	return suite_batch_exit(b);
}

int suite_report(int argc, char **argv)
{
	const char *out = DEFAULT_OUT;
	struct suite_flags fl = {.help = help, .extra = take_out, .arg = &out};
	struct suite_batch b;
	int ret = suite_parse("report", argc, argv, &fl, &b);
	char err[1024];
	if (ret == 0 && make_dir(out, err, sizeof(err)) < 0) {
		fprintf(stderr, "labsuite report: %s\n", err);
		ret = -1;
	}
	if (ret != 0) {
		suite_batch_free(&b);
		return ret > 0 ? SUITE_EXIT_OK : SUITE_EXIT_USAGE;
	}
	b.jobs = SUITE_JOBS;
	suite_signals_catch();
	struct term t;
	term_init(&t, stdout);
	ret = suite_batch_command("report", &b, &t);
	if (ret == 0) {
		suite_screen(&b, &t);
		ret = publish(out, &b, &t);
	}
	suite_batch_free(&b);
	return ret;
}
