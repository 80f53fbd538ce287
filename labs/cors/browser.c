/*
 * browser.c — the real browser of lab-cors: Debian's Chromium, headless, started once per run as
 * the lab's child (common/child.h: its own process group, PR_SET_PDEATHSIG, killed and its
 * directory removed on Ctrl-C).
 *
 * One run: chromium --headless=new --dump-dom --virtual-time-budget=<ms> <url>. The budget is
 * virtual time, which stands still while a fetch is in flight and jumps ahead when the page is
 * idle, so the dump comes once the page has run every case (and the run costs what the browser's
 * start costs, a second or three, not the budget). The dump goes to stdout, which child.h appends
 * to the child's log with stderr; --log-level=3 keeps stderr to fatal errors, and the page's
 * results are one block of plain lines between <pre id="lab-results"> and END.
 *
 * Everything Chromium writes stays in a private temporary directory (child_start_chromium, shared
 * with labsuite report: the profile, HOME, TMPDIR and XDG dirs there), where Chromium would
 * otherwise keep its crash reports, dconf cache and scratch files.
 */
#include <errno.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "hist.h"
#include "internal.h"

/* the page runs about 40 fetches on loopback; this much virtual time is never the limit */
#define VIRTUAL_BUDGET_MS "30000"
#define STOP_MS           2000
#define LOG_READ_MAX      (1 << 20)
#define POLL_MS           20
/* what a run usually takes here (the progress line's scale only) */
#define EXPECTED_MS 3000.0

int cors_find_chromium(char *out, size_t outlen, char *err, size_t errlen)
{
	char tried[512];
	if (child_find_chromium(out, outlen, tried, sizeof(tried)) == 0)
		return 0;
	snprintf(err, errlen,
	         "%s: lab-cors needs a real browser, since CORS is enforced by browsers; install it with "
	         "scripts/bootstrap (or apt-get install chromium), or point LAB_CHROMIUM at it",
	         tried);
	return -1;
}

void cors_chromium_version(const char *chromium, char *out, size_t outlen)
{
	snprintf(out, outlen, "?");
	char cmd[PATH_MAX + 32], line[256];
	snprintf(cmd, sizeof(cmd), "'%s' --version 2>/dev/null", chromium);
	FILE *p = strchr(chromium, '\'') ? NULL : popen(cmd, "r");
	if (!p)
		return;
	while (fgets(line, sizeof(line), p)) {
		/* "Chromium 120.0.6099.224 built on Debian ..." */
		const char *v = strstr(line, "Chromium ");
		if (v) {
			snprintf(out, outlen, "%.*s", (int)strcspn(v + 9, " \r\n"), v + 9);
			break;
		}
	}
	pclose(p);
}

/* Percent-decodes the len bytes at s (encodeURIComponent's output) into out, with libevent's decoder. */
static void uri_decode(const char *s, size_t len, char *out, size_t outlen)
{
	/* libevent's decoder wants a whole string: the field is cut out of its line first */
	char *field = strndup(s, len), *text = field ? evhttp_uridecode(field, 0, NULL) : NULL;
	snprintf(out, outlen, "%s", text ? text : "");
	free(text);
	free(field);
}

/* One line "case|i|tries|readable|status|bytes|error|body" into r: its case, or -1 when it is none. */
static int parse_line(const char *line, struct cors_result *r)
{
	int i, tries, readable, status, bytes, used = 0;
	if (sscanf(line, "case|%d|%d|%d|%d|%d|%n", &i, &tries, &readable, &status, &bytes, &used) != 5 ||
	    i < 0 || i >= CORS_CASES || used == 0)
		return -1;
	const char *e = line + used, *bar = strchr(e, '|');
	if (!bar)
		return -1;
	struct cors_case_result *c = &r->cases[i];
	c->tries = tries;
	c->readable = readable;
	c->page_status = status;
	c->bytes_read = bytes;
	uri_decode(e, (size_t)(bar - e), c->error, sizeof(c->error));
	uri_decode(bar + 1, strcspn(bar + 1, "\r\n"), c->body, sizeof(c->body));
	return i;
}

/* The page's block in the dump; 0 when every case is there and END closes it. */
static int read_results(const char *log, struct cors_result *r, char *err, size_t errlen)
{
	const char *start = strstr(log, "<pre id=\"lab-results\">");
	const char *end = start ? strstr(start, "\nEND\n") : NULL;
	if (!start || !end) {
		snprintf(err, errlen, "the page did not finish: no results in the browser's dump");
		return -1;
	}
	/* each case once: a line twice must not stand in for a case that never ran */
	bool got[CORS_CASES] = {0};
	int seen = 0, lines = 0;
	for (const char *p = start + strlen("<pre id=\"lab-results\">"); p && p < end; p = strchr(p, '\n')) {
		while (*p == '\n')
			p++;
		int i = p < end ? parse_line(p, r) : -1;
		lines += i >= 0;
		if (i >= 0 && !got[i]) {
			got[i] = true;
			seen++;
		}
	}
	if (seen != CORS_CASES || lines != CORS_CASES) {
		snprintf(err, errlen, "the page reported %d distinct of %d cases in %d lines", seen,
		         CORS_CASES, lines);
		return -1;
	}
	return 0;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = f ? malloc(LOG_READ_MAX + 1) : NULL;
	if (!buf) {
		if (f)
			fclose(f);
		return NULL;
	}
	size_t n = fread(buf, 1, LOG_READ_MAX, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* Starts the browser and waits for it to exit (it does after the dump); -1 and err otherwise. */
static int run_child(const struct cors_config *cfg, const char *dir, const char *url, struct child *c,
                     struct cors_result *r, char *err, size_t errlen)
{
	const char *const extra[] = {"--log-level=3", "--virtual-time-budget=" VIRTUAL_BUDGET_MS,
	                             "--dump-dom", NULL};
	double t0 = hist_now_ms();
	if (child_start_chromium(c, cfg->chromium, dir, extra, url, err, errlen) < 0)
		return -1;
	r->browser_pid = (int)c->pid;
	r->browser_starts++;
	while (child_running(c)) {
		if (hist_now_ms() - t0 > cfg->browser_timeout_ms) {
			char tail[400];
			child_log_tail(c, tail, sizeof(tail));
			child_stop(c, STOP_MS);
			snprintf(err, errlen, "chromium did not finish within %d ms (stopped); its log: %s",
			         cfg->browser_timeout_ms, tail);
			return -1;
		}
		/* a progress line on a terminal: the run takes seconds, most of them the browser's start */
		if (cfg->progress_cb) {
			double done = (hist_now_ms() - t0) / EXPECTED_MS;
			cfg->progress_cb("headless Chromium runs every case", done < 0.95 ? done : 0.95,
			                 cfg->progress_arg);
		}
		hist_sleep_us(1000LL * POLL_MS);
	}
	r->browser_ms = hist_now_ms() - t0;
	return 0;
}

int cors_browser_run(const struct cors_config *cfg, const char *url, struct cors_result *r, char *err,
                     size_t errlen)
{
	char dir[PATH_MAX], rerr[256];
	if (child_tmpdir("cors", dir, sizeof(dir), err, errlen) < 0)
		return -1;
	struct child c;
	int ret = run_child(cfg, dir, url, &c, r, err, errlen);
	if (lab_interrupted()) {
		/* Ctrl-C: the guard of common/lab.c killed the browser and removes its directory; removing
		 * it here too would race the guard, which ends the process mid-way through */
		snprintf(err, errlen, "interrupted");
		return -1;
	}
	char *log = ret == 0 ? slurp(c.log_path) : NULL;
	if (ret == 0 && !log) {
		snprintf(err, errlen, "cannot read the browser's output %s: %s", c.log_path, strerror(errno));
		ret = -1;
	}
	if (ret == 0 && read_results(log, r, err, errlen) < 0) {
		char tail[300];
		child_log_tail(&c, tail, sizeof(tail));
		size_t n = strlen(err);
		int st = c.exit_status;
		snprintf(err + n, errlen - n, " (chromium %s %d; its log: %s)",
		         WIFSIGNALED(st) ? "killed by signal" : "exited with",
		         WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), tail);
		ret = -1;
	}
	free(log);
	child_rmtree(dir, rerr, sizeof(rerr));
	return ret;
}
