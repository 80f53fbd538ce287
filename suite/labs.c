/*
 * labs.c — labsuite labs (suite.h): every lab with --quick --json (run.h runs them), then one
 * screen: a row per lab (✔/✘, name, time, the one-line evidence cut to the terminal's width at a
 * word) and a total line. Exit 1 when any verdict failed or a lab ended without a document.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run.h"
#include "suite.h"

#define MAX_JOBS      16
#define DEFAULT_WIDTH 100
#define MIN_WIDTH     40
#define TIME_W        8

/* Bytes of the first n display columns of s (UTF-8: a column per code point). */
static size_t bytes_of_columns(const char *s, int n)
{
	size_t i = 0;
	for (int cols = 0; s[i] && cols <= n; i++)
		if (((unsigned char)s[i] & 0xC0) != 0x80 && cols++ == n)
			break;
	return i;
}

char *suite_cut(const char *text, int width, char *out, size_t outlen)
{
	if (term_width(text) <= width) {
		snprintf(out, outlen, "%s", text);
		return out;
	}
	/* room for the ellipsis, then back to the last space inside that room */
	size_t fit = bytes_of_columns(text, width > 1 ? width - 1 : 0), cut = fit;
	while (cut > 0 && text[cut] != ' ')
		cut--;
	if (cut == 0)
		cut = fit;
	while (cut > 0 && (text[cut - 1] == ' ' || text[cut - 1] == ',' || text[cut - 1] == ';'))
		cut--;
	snprintf(out, outlen, "%.*s…", (int)cut, text);
	return out;
}

char *suite_row(const struct suite_run *r, int name_w, int width, char *out, size_t outlen)
{
	char t[32], summary[SUITE_SUMMARY_LEN], head[SUITE_NAME_LEN + 64];
	suite_fmt_ms(t, sizeof(t), r->ms);
	snprintf(head, sizeof(head), "%s %-*s  %*s  ", suite_run_ok(r) ? "✔" : "✘", name_w, r->name, TIME_W,
	         t);
	suite_run_summary(r, summary, sizeof(summary));
	char cut[SUITE_SUMMARY_LEN];
	int room = width - term_width(head);
	suite_cut(summary, room > 10 ? room : 10, cut, sizeof(cut));
	snprintf(out, outlen, "%s%s", head, cut);
	return out;
}

char *suite_total(const struct suite_batch *b, char *out, size_t outlen)
{
	int ok = 0;
	double sum = 0;
	for (int i = 0; i < b->n; i++) {
		ok += suite_run_ok(&b->runs[i]);
		sum += b->runs[i].ms;
	}
	char wall[32], labs[32];
	snprintf(out, outlen, "%d labs · %d ✔ · %d ✘ · wall %s · labs' time %s", b->n, ok, b->n - ok,
	         suite_fmt_ms(wall, sizeof(wall), b->wall_ms), suite_fmt_ms(labs, sizeof(labs), sum));
	return out;
}

static int terminal_width(void)
{
	int n = term_columns(stdout);
	return n >= MIN_WIDTH ? n : DEFAULT_WIDTH;
}

void suite_screen(const struct suite_batch *b, struct term *t)
{
	int name_w = 4, width = terminal_width();
	for (int i = 0; i < b->n; i++) {
		int w = term_width(b->runs[i].name);
		name_w = w > name_w ? w : name_w;
	}
	char line[SUITE_SUMMARY_LEN + 128];
	for (int i = 0; i < b->n; i++) {
		const struct suite_run *r = &b->runs[i];
		suite_row(r, name_w, width, line, sizeof(line));
		/* colour the mark only: the row reads the same without it */
		const char *mark = suite_run_ok(r) ? term_green(t) : term_red(t);
		size_t m = strlen("✔");
		term_printf(t, "%s%.*s%s%s\n", mark, (int)m, line, term_reset(t), line + m);
	}
	int ok = suite_batch_exit(b) == SUITE_EXIT_OK;
	term_printf(t, "%s%s%s\n", ok ? term_bold(t) : term_red(t), suite_total(b, line, sizeof(line)),
	            term_reset(t));
}

static int take_jobs(const char *flag, const char *value, void *arg)
{
	if (strcmp(flag, "--jobs") && strcmp(flag, "-j"))
		return -1;
	char *end;
	long n = value ? strtol(value, &end, 10) : 0;
	if (!value || *end || n < 1 || n > MAX_JOBS)
		return -2;
	*(int *)arg = (int)n;
	return 1;
}

static void help(FILE *f)
{
	fprintf(f,
	        "usage: labsuite labs [--bin DIR] [--jobs N] [--timeout S] LAB...\n"
	        "  runs each DIR/lab-<LAB> --quick --json and prints one screen: a row per lab (its\n"
	        "  verdict, time and evidence) and the total. Exit 0 when every lab demonstrated its\n"
	        "  claim, 1 when one did not or ended without a document, 2 for bad usage or a missing\n"
	        "  program, 130 after Ctrl-C (forwarded to the running labs, which clean up).\n"
	        "  --bin DIR     where the lab programs are (default build)\n"
	        "  --jobs N      labs run at once, 1 to %d (default %d: this machine's cores)\n"
	        "  --timeout S   a lab still running after S seconds is stopped, its row says so\n"
	        "                (default %d)\n\n",
	        MAX_JOBS, SUITE_JOBS, SUITE_TIMEOUT_S);
	suite_alone_help(f);
}

int suite_labs(int argc, char **argv)
{
	int jobs = SUITE_JOBS;
	struct suite_flags fl = {.help = help, .extra = take_jobs, .arg = &jobs};
	struct suite_batch b;
	int ret = suite_parse("labs", argc, argv, &fl, &b);
	if (ret != 0) {
		suite_batch_free(&b);
		return ret > 0 ? SUITE_EXIT_OK : SUITE_EXIT_USAGE;
	}
	b.jobs = jobs;
	suite_signals_catch();
	struct term t;
	term_init(&t, stdout);
	ret = suite_batch_command("labs", &b, &t);
	if (ret == 0) {
		suite_screen(&b, &t);
		ret = suite_batch_exit(&b);
	}
	suite_batch_free(&b);
	return ret;
}
