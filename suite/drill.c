/*
 * drill.c — labsuite drill (suite.h): one interview question, your answer out loud, the key
 * points and follow-ups from the lab's docs page (docs.h), the lab's --quick run as the proof,
 * then the production story to tell. The docs page is the only source of the words.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "docs.h"
#include "lab.h"
#include "render.h"
#include "rng.h"
#include "suite.h"
#include "term.h"

#define DRILL_MAX_LABS 64

struct drill_opts {
	const char *bin, *docs, *lab;
	bool no_run, seeded;
	uint64_t seed;
};

struct drill_labs {
	char *names[DRILL_MAX_LABS];
	int n;
};

static int drill_usage(FILE *f, int code)
{
	fprintf(f, "usage: labsuite drill [--bin DIR] [--docs DIR] [--no-run] [--seed N] [LAB]\n"
	           "  a lab's interview question (LAB, or one at random among those with a docs page\n"
	           "  DIR/<lab>.md and a program DIR/lab-<lab>); answer it out loud, press Enter; then\n"
	           "  the key points, the follow-ups, the lab's --quick run and the production story.\n"
	           "  --bin DIR    the lab programs (default build)\n"
	           "  --docs DIR   the docs pages (default docs)\n"
	           "  --no-run     do not run the lab\n"
	           "  --seed N     the same random pick every time\n");
	return code;
}

static int drill_args(int argc, char **argv, struct drill_opts *o)
{
	*o = (struct drill_opts){.bin = "build", .docs = "docs"};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has_value = i + 1 < argc;
		if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			return drill_usage(stdout, 0) - 1;
		if (!strcmp(a, "--no-run")) {
			o->no_run = true;
		} else if ((!strcmp(a, "--bin") || !strcmp(a, "--docs")) && has_value) {
			*(a[2] == 'b' ? &o->bin : &o->docs) = argv[++i];
		} else if (!strcmp(a, "--seed") && has_value) {
			char *end;
			errno = 0;
			o->seed = strtoull(argv[++i], &end, 10);
			if (errno || *end || !*argv[i] || *argv[i] == '-') {
				fprintf(stderr, "labsuite drill: --seed wants a whole number, not \"%s\"\n",
				        argv[i]);
				return -2;
			}
			o->seeded = true;
		} else if (a[0] != '-' && !o->lab) {
			o->lab = a;
		} else {
			fprintf(stderr, "labsuite drill: unexpected \"%s\"\n", a);
			return drill_usage(stderr, 2), -2;
		}
	}
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The labs with both a page docs/<lab>.md and an executable bin/lab-<lab>, sorted. */
static int drill_find_labs(const struct drill_opts *o, struct drill_labs *labs)
{
	labs->n = 0;
	DIR *d = opendir(o->docs);
	if (!d)
		return -1;
	struct dirent *e;
	while ((e = readdir(d)) && labs->n < DRILL_MAX_LABS) {
		size_t len = strlen(e->d_name);
		if (len < 4 || strcmp(e->d_name + len - 3, ".md"))
			continue;
		char prog[4096];
		snprintf(prog, sizeof prog, "%s/lab-%.*s", o->bin, (int)(len - 3), e->d_name);
		if (access(prog, X_OK) == 0 && (labs->names[labs->n] = strndup(e->d_name, len - 3)))
			labs->n++;
	}
	closedir(d);
	qsort(labs->names, (size_t)labs->n, sizeof labs->names[0], name_cmp);
	return 0;
}

static void drill_labs_free(struct drill_labs *labs)
{
	for (int i = 0; i < labs->n; i++)
		free(labs->names[i]);
	labs->n = 0;
}

/* LAB, or one at random; NULL (and why on stderr) when there is none to pick. */
static const char *drill_pick(const struct drill_opts *o, const struct drill_labs *labs)
{
	if (labs->n == 0) {
		fprintf(stderr,
		        "labsuite drill: no lab has both a page in %s/ and a program in %s/ (make build)\n",
		        o->docs, o->bin);
		return NULL;
	}
	if (!o->lab) {
		uint64_t state = o->seeded ? o->seed : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
		return labs->names[rng_next(&state) % (uint64_t)labs->n];
	}
	for (int i = 0; i < labs->n; i++)
		if (!strcmp(labs->names[i], o->lab))
			return labs->names[i];
	fprintf(stderr, "labsuite drill: no lab \"%s\" (labs:", o->lab);
	for (int i = 0; i < labs->n; i++)
		fprintf(stderr, " %s", labs->names[i]);
	fprintf(stderr, ")\n");
	return NULL;
}

static void drill_heading(const struct term *t, int width, const char *title)
{
	int used = 4 + term_width(title);
	term_printf(t, "\n%s── %s ", term_bold(t), title);
	for (int i = used; i < width; i++)
		fputs("─", t->out);
	term_printf(t, "%s\n", term_reset(t));
}

/* The question, big and clear, then a wait for Enter (end of input goes on: CI has no keyboard). */
static void drill_ask(const struct term *t, int width, const char *lab, const char *docs,
                      const struct docs_page *page)
{
	term_printf(t, "%sdrill · lab-%s · %s/%s.md%s\n", term_dim(t), lab, docs, lab, term_reset(t));
	drill_heading(t, width, "The interview question");
	char *q = malloc(strlen(page->question) + 8);
	if (q)
		sprintf(q, "**\"%s\"**", page->question);
	term_printf(t, "\n");
	render_wrap(t, "    ", width - 4, q ? q : page->question);
	free(q);
	term_printf(t, "\n  Answer it out loud, as in the interview, then press Enter. ");
	fflush(t->out);
	char *line = NULL;
	size_t cap = 0;
	/* a terminal echoes the Enter; a pipe or end of input does not */
	if (getline(&line, &cap, stdin) < 0 || !isatty(STDIN_FILENO))
		term_printf(t, "\n");
	free(line);
}

static void drill_points(const struct term *t, int width, const struct docs_page *page)
{
	drill_heading(t, width, "Key points of the model answer");
	for (size_t i = 0; i < page->npoints; i++)
		render_wrap(t, page->points[i].level ? "      – " : "  • ", width, page->points[i].text);
	drill_heading(t, width, "Follow-ups an interviewer pulls on");
	for (size_t i = 0; i < page->nfollowups; i++)
		render_wrap(t, "  • ", width, page->followups[i]);
}

static void drill_story(const struct term *t, int width, const struct docs_page *page)
{
	drill_heading(t, width, "The production story to tell");
	for (size_t i = 0; i < page->nstory; i++) {
		if (i && !page->story[i].level)
			term_printf(t, "\n");
		render_wrap(t, page->story[i].level ? "  • " : "  ", width, page->story[i].text);
	}
}

/* The lab's pid while it runs: a SIGINT sent to the drill alone (kill, not the terminal) is
 * passed on; Ctrl-C at the terminal already reached the lab, in the same process group. */
static volatile sig_atomic_t drill_child;

static void drill_pass_on(int sig, siginfo_t *info, void *ctx)
{
	(void)ctx;
	if (drill_child > 0 && info->si_code <= 0)
		kill((pid_t)drill_child, sig);
}

/* Runs bin/lab-<lab> --quick on this terminal; its exit code (128 + N for signal N). */
static int drill_run(const struct drill_opts *o, const char *lab)
{
	char prog[4096];
	snprintf(prog, sizeof prog, "%s/lab-%s", o->bin, lab);
	fflush(stdout), fflush(stderr);
	struct sigaction pass = {.sa_sigaction = drill_pass_on, .sa_flags = SA_SIGINFO}, oint, oterm;
	sigemptyset(&pass.sa_mask);
	sigaction(SIGINT, &pass, &oint);
	sigaction(SIGTERM, &pass, &oterm);
	/* held from the fork until drill_child is set: a signal in between is passed on, not lost */
	sigset_t hold, old;
	sigemptyset(&hold);
	sigaddset(&hold, SIGINT);
	sigaddset(&hold, SIGTERM);
	sigprocmask(SIG_BLOCK, &hold, &old);
	pid_t pid = fork();
	if (pid == 0) {
		signal(SIGINT, SIG_DFL), signal(SIGTERM, SIG_DFL);
		sigprocmask(SIG_SETMASK, &old, NULL);
		execl(prog, prog, "--quick", (char *)NULL);
		fprintf(stderr, "labsuite drill: cannot run %s: %s\n", prog, strerror(errno));
		_exit(LAB_EXIT_ENV);
	}
	if (pid > 0)
		drill_child = pid;
	sigprocmask(SIG_SETMASK, &old, NULL);
	int status = 0, rc = LAB_EXIT_ENV;
	if (pid > 0) {
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		drill_child = 0;
		rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	} else {
		fprintf(stderr, "labsuite drill: cannot start %s: %s\n", prog, strerror(errno));
	}
	sigaction(SIGINT, &oint, NULL);
	sigaction(SIGTERM, &oterm, NULL);
	return rc;
}

static void drill_close(const struct term *t, const char *lab, int rc, bool ran)
{
	term_printf(t, "\n");
	if (!ran)
		term_printf(t, "· not run (--no-run): the proof is make lab-%s ARGS=--quick\n", lab);
	else if (rc == LAB_EXIT_OK)
		term_printf(t, "%s✔ the numbers back the answer%s (lab-%s --quick)\n", term_green(t),
		            term_reset(t), lab);
	else if (rc == LAB_EXIT_NOT_SHOWN)
		term_printf(t,
		            "%s✘ the numbers did not back the answer%s (lab-%s exit 1): read its evidence "
		            "above\n",
		            term_red(t), term_reset(t), lab);
	else
		term_printf(t,
		            "%s✘ the lab could not run%s (lab-%s exit %d): its message is above; servers: "
		            "make up\n",
		            term_red(t), term_reset(t), lab, rc);
}

int suite_drill(int argc, char **argv)
{
	struct drill_opts o;
	int a = drill_args(argc, argv, &o);
	if (a < 0)
		return a == -1 ? 0 : 2;
	struct drill_labs labs;
	if (drill_find_labs(&o, &labs) < 0) {
		fprintf(stderr, "labsuite drill: cannot read the docs in %s: %s\n", o.docs, strerror(errno));
		return 2;
	}
	const char *lab = drill_pick(&o, &labs);
	struct docs_page page;
	char err[512];
	if (!lab || docs_load(o.docs, lab, &page, err, sizeof err) < 0) {
		if (lab)
			fprintf(stderr, "labsuite drill: %s\n", err);
		drill_labs_free(&labs);
		return 2;
	}
	struct term t;
	term_init(&t, stdout);
	int width = render_width(stdout), rc = LAB_EXIT_OK;
	drill_ask(&t, width, lab, o.docs, &page);
	drill_points(&t, width, &page);
	if (!o.no_run) {
		char title[128];
		snprintf(title, sizeof title, "The proof: lab-%s --quick", lab);
		drill_heading(&t, width, title);
		term_printf(&t, "\n");
		rc = drill_run(&o, lab);
	}
	if (rc != LAB_EXIT_INTERRUPTED) {
		drill_story(&t, width, &page);
		drill_close(&t, lab, rc, !o.no_run);
	}
	docs_free(&page);
	drill_labs_free(&labs);
	return rc;
}
