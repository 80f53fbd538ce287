/*
 * browser.c — the report's page checked in a real browser (report.h): Debian's headless Chromium,
 * the one lab-cors runs, started once as a child of common/child.h (its own process group, killed
 * if labsuite dies) with everything it writes in a private directory. One run both dumps the DOM
 * (--dump-dom, to stdout) and saves the screenshot; --enable-logging=stderr --v=0 puts the console
 * messages in the same log ("...:INFO:CONSOLE:1] "message", source: ..."), which child.h collects;
 * it is kept as DIR/chromium.log, so what the check read can be read again.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "hist.h"
#include "report.h"

/* Chromium's start costs 2 to 10 s on this busy 2-core machine; this is never the limit */
#define BROWSER_TIMEOUT_MS 60000
/* Chromium ends on SIGTERM at once; a Ctrl-C must leave labsuite within 2 s */
#define STOP_MS 500
/* how long Chromium's helpers get to follow it out (see wait_group_gone) */
#define GROUP_GONE_MS 300
#define POLL_US       20000
#define LOG_READ_MAX  (8 << 20)
#define WINDOW_SIZE   "--window-size=1280,1800"

static const char PNG_MAGIC[8] = {'\x89', 'P', 'N', 'G', '\r', '\n', '\x1a', '\n'};

/*
 * The first of Chromium's own log lines ("[pid:tid:time:LEVEL:source] ...", not the page's text in
 * the DOM dump) that holds what, cut to outlen, into out; false when there is none.
 */
static bool log_line_with(const char *log, const char *what, char *out, size_t outlen)
{
	for (const char *line = log; *line; line += strcspn(line, "\n"), line += *line == '\n') {
		size_t n = strcspn(line, "\n");
		const char *hit = line[0] == '[' ? strstr(line, what) : NULL;
		if (hit && hit < line + n) {
			snprintf(out, outlen, "%.*s", (int)n, line);
			return true;
		}
	}
	return false;
}

int suite_browser_verify(const char *log, const struct suite_batch *b, char *err, size_t errlen)
{
	if (!strstr(log, "<html") || !strstr(log, "</html>")) {
		snprintf(err, errlen, "the page did not render: Chromium dumped no DOM");
		return 1;
	}
	char line[400];
	/* a page with no script gets console messages only from the browser: a CSP block, a failed load */
	if (log_line_with(log, ":CONSOLE", line, sizeof(line)) ||
	    log_line_with(log, "Refused to", line, sizeof(line))) {
		snprintf(err, errlen, "a console message in Chromium: %s", line);
		return 1;
	}
	for (int i = 0; i < b->n; i++) {
		const struct suite_run *r = &b->runs[i];
		char want[SUITE_NAME_LEN + 64];
		/* the element itself, "<" and all: a text of the page cannot hold it unescaped */
		snprintf(want, sizeof(want), "<section class=\"lab\" id=\"lab-%s\" data-verdict=\"%s\">",
		         r->name, suite_run_ok(r) ? "demonstrated" : "not-demonstrated");
		if (!strstr(log, want)) {
			snprintf(err, errlen, "the DOM Chromium dumped has no section %s", want);
			return 1;
		}
	}
	return 0;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = f ? malloc(LOG_READ_MAX + 1) : NULL;
	size_t n = buf ? fread(buf, 1, LOG_READ_MAX, f) : 0;
	if (f)
		fclose(f);
	if (buf)
		buf[n] = '\0';
	return buf;
}

/* Starts Chromium on url (*pgid: its group) and waits for it to exit; -1 with err, SUITE_INTERRUPTED
 * on Ctrl-C. */
static int run_browser(const char *chromium, const char *tmp, const char *url, const char *shot,
                       struct child *c, pid_t *pgid, char *err, size_t errlen)
{
	char screenshot[PATH_MAX + 64];
	snprintf(screenshot, sizeof(screenshot), "--screenshot=%s", shot);
	/* console messages into the log; the DOM to stdout and the screenshot, from one load */
	const char *const extra[] = {"--hide-scrollbars",
	                             "--enable-logging=stderr",
	                             "--v=0",
	                             WINDOW_SIZE,
	                             "--dump-dom",
	                             screenshot,
	                             NULL};
	if (child_start_chromium(c, chromium, tmp, extra, url, err, errlen) < 0)
		return -1;
	*pgid = c->pid; /* its group's id: child.h starts it in a group of its own */
	double t0 = hist_now_ms();
	while (child_running(c)) {
		if (suite_interrupted()) {
			child_stop(c, STOP_MS);
			snprintf(err, errlen, "interrupted; Chromium was stopped");
			return SUITE_INTERRUPTED;
		}
		if (hist_now_ms() - t0 > BROWSER_TIMEOUT_MS) {
			char tail[300];
			child_log_tail(c, tail, sizeof(tail));
			child_stop(c, STOP_MS);
			snprintf(err, errlen, "Chromium did not finish within %d s (stopped); its log: %s",
			         BROWSER_TIMEOUT_MS / 1000, tail);
			return -1;
		}
		hist_sleep_us(POLL_US);
	}
	return 0;
}

/*
 * Chromium's helpers (zygote, renderer, GPU process) share its process group and may outlive the
 * main process by a moment, still writing in its profile: removing its directory then leaves a
 * profile/ behind. Waits until the group is empty (at most GROUP_GONE_MS, then SIGKILL to it).
 */
static void wait_group_gone(pid_t pgid)
{
	if (pgid <= 0)
		return;
	double t0 = hist_now_ms();
	while (kill(-pgid, 0) == 0 && hist_now_ms() - t0 < GROUP_GONE_MS)
		hist_sleep_us(POLL_US / 4);
	if (kill(-pgid, 0) == 0) {
		kill(-pgid, SIGKILL);
		for (int i = 0; i < GROUP_GONE_MS / 5 && kill(-pgid, 0) == 0; i++)
			hist_sleep_us(5000);
	}
}

static bool is_png(const char *path)
{
	char head[8];
	FILE *f = fopen(path, "rb");
	bool ok = f && fread(head, 1, 8, f) == 8 && !memcmp(head, PNG_MAGIC, 8);
	if (f)
		fclose(f);
	return ok;
}

/* What Chromium printed, kept as path; false when it cannot be written. */
static bool keep(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return false;
	fputs(text, f);
	bool ok = !ferror(f);
	return fclose(f) == 0 && ok;
}

/* The checks on what Chromium left: its output (kept as dir/chromium.log) and the screenshot. */
static int check_output(const struct child *c, const char *abs, const char *shot, const struct suite_batch *b,
                        char *err, size_t errlen)
{
	char *log = slurp(c->log_path), kept[PATH_MAX + 32];
	if (!log) {
		snprintf(err, errlen, "cannot read Chromium's output %s", c->log_path);
		return 1;
	}
	snprintf(kept, sizeof(kept), "%s/chromium.log", abs);
	int ret = 0;
	if (!keep(kept, log)) {
		snprintf(err, errlen, "cannot write %s: %s", kept, strerror(errno));
		ret = 1;
	} else if (suite_browser_verify(log, b, err, errlen) != 0) {
		size_t n = strlen(err);
		snprintf(err + n, errlen - n, " (Chromium %s %d; its output: %s)",
		         WIFSIGNALED(c->exit_status) ? "killed by signal" : "exit",
		         WIFSIGNALED(c->exit_status) ? WTERMSIG(c->exit_status) : WEXITSTATUS(c->exit_status),
		         kept);
		ret = 1;
	} else if (!is_png(shot)) {
		snprintf(err, errlen, "Chromium saved no screenshot (%s is missing or not a PNG)", shot);
		ret = 1;
	}
	free(log);
	return ret;
}

int suite_browser_check(const char *dir, const struct suite_batch *b, char *err, size_t errlen)
{
	char chromium[PATH_MAX], tried[512], abs[PATH_MAX], tmp[PATH_MAX];
	if (child_find_chromium(chromium, sizeof(chromium), tried, sizeof(tried)) < 0) {
		snprintf(err, errlen,
		         "%s: the report is checked in a real browser; install it with scripts/bootstrap "
		         "(or apt-get install chromium), or point LAB_CHROMIUM at it",
		         tried);
		return 2;
	}
	if (!realpath(dir, abs)) {
		snprintf(err, errlen, "cannot resolve %s: %s", dir, strerror(errno));
		return 1;
	}
	char url[PATH_MAX + 32], shot[PATH_MAX + 32];
	snprintf(url, sizeof(url), "file://%s/index.html", abs);
	snprintf(shot, sizeof(shot), "%s/screenshot.png", abs);
	unlink(shot);
	if (child_tmpdir("report", tmp, sizeof(tmp), err, errlen) < 0)
		return 1;
	struct child c = {0};
	pid_t pgid = 0;
	int ret = run_browser(chromium, tmp, url, shot, &c, &pgid, err, errlen);
	wait_group_gone(pgid);
	if (ret == 0)
		ret = check_output(&c, abs, shot, b, err, errlen);
	else if (ret != SUITE_INTERRUPTED)
		ret = 1;
	char rerr[256];
	child_rmtree(tmp, rerr, sizeof(rerr));
	return ret;
}
