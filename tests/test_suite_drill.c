/*
 * test_suite_drill — `labsuite drill` (suite/drill.c) and the docs pages it reads (suite/docs.h).
 * needs: postgres redis (the drill runs a lab; the parsing tests need neither)
 * runs: lab-pagination (so it never overlaps test_pagination: one schema per lab)
 *
 * Every docs page parses into a question, key points, at least three follow-ups and a production
 * story, none running into the next section; a bad lab name is exit 2 naming the labs; a drill
 * of a fast lab (lab-pagination, about 1 s) shows its parts in order and exits 0; --no-run shows
 * no lab output; a SIGINT sent to the drill alone while the lab runs is passed on: the lab cleans
 * up, the drill exits 130 within lab_run.h's bound. (A Ctrl-C at a terminal reaches both at once:
 * the lab, in the drill's process group, cleans up and the drill exits with it; checked by hand
 * on a pseudo-terminal.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "docs.h"
#include "lab_run.h"

#define DOCS_DIR LAB_SOURCE_DIR "/docs"
/* The fastest lab with its verdict: about 1 s with --quick, PostgreSQL only. */
#define FAST_LAB "pagination"

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	long len = ftell(f);
	assert_true(len > 0);
	rewind(f);
	char *text = malloc((size_t)len + 1);
	assert_non_null(text);
	assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
	text[len] = '\0';
	fclose(f);
	return text;
}

/* The lines "- " of the section under heading, counted the plain way: what the parser must find. */
static size_t bullets_in(const char *text, const char *heading)
{
	const char *p = strstr(text, heading), *end;
	assert_non_null(p);
	end = strstr(p + 1, "\n## ");
	assert_non_null(end);
	size_t n = 0;
	for (; p && p < end; p = strchr(p + 1, '\n'))
		n += !strncmp(p, "\n- ", 3);
	return n;
}

/* The last few characters of the section under heading, just before the next "## ". */
static char *section_tail(const char *text, const char *heading, size_t n)
{
	const char *p = strstr(text, heading);
	assert_non_null(p);
	const char *end = strstr(p + 1, "\n## ");
	assert_non_null(end);
	while (end > p && (end[-1] == '\n' || end[-1] == ' '))
		end--;
	const char *line = end;
	while (line > p && line[-1] != '\n' && (size_t)(end - line) < n)
		line--;
	return strndup(line, (size_t)(end - line));
}

static void check_page(const char *lab)
{
	char path[512], err[512] = "";
	snprintf(path, sizeof path, "%s/%s.md", DOCS_DIR, lab);
	struct docs_page page;
	if (docs_load(DOCS_DIR, lab, &page, err, sizeof err) < 0)
		fail_msg("%s", err);
	char *text = slurp(path);
	assert_true(strlen(page.question) > 10);
	assert_true(page.npoints >= 2);
	for (size_t i = 0; i < page.npoints; i++) {
		assert_true(strlen(page.points[i].text) > 20);
		assert_null(strstr(page.points[i].text, "## "));
	}
	if (page.nfollowups < 3)
		fail_msg("%s: %zu follow-ups", lab, page.nfollowups);
	assert_int_equal(page.nfollowups, bullets_in(text, "\n" DOCS_FOLLOWUPS "\n"));
	for (size_t i = 0; i < page.nfollowups; i++)
		assert_true(strlen(page.followups[i]) > 3);
	assert_true(page.nstory >= 1);
	for (size_t i = 0; i < page.nstory; i++)
		assert_null(strstr(page.story[i].text, "## "));
	/* the story ends where its section ends, and no later */
	char *tail = section_tail(text, "\n" DOCS_STORY "\n", 12);
	const char *last = page.story[page.nstory - 1].text;
	size_t ll = strlen(last), tl = strlen(tail);
	if (tl < 6 || ll < tl || strcmp(last + ll - tl, tail))
		fail_msg("%s: the story ends \"%s\", its section \"%s\"", lab, last, tail);
	free(tail);
	free(text);
	docs_free(&page);
}

static void test_every_page_parses(void **state)
{
	(void)state;
	DIR *d = opendir(DOCS_DIR);
	assert_non_null(d);
	int pages = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (len < 4 || strcmp(e->d_name + len - 3, ".md") || !strcmp(e->d_name, "architecture.md"))
			continue;
		char lab[256];
		snprintf(lab, sizeof lab, "%.*s", (int)(len - 3), e->d_name);
		check_page(lab);
		pages++;
	}
	closedir(d);
	assert_true(pages >= 16);
}

/* Key points on a page made for it: a code block's "## " is no heading, a short first sentence and
 * a bold label take the next one, "e.g." ends no sentence, a short block is kept whole. */
static void test_key_points(void **state)
{
	(void)state;
	const char *text =
	        "# lab-x\n\n> \"Why, on\n> two lines?\"\n\n## The model answer\n\n"
	        "A claim that runs long enough to be a whole sentence on its own, e.g. this one, "
	        "made once. The argument that follows it is left to the page, where it goes on "
	        "for a while to make the paragraph long.\n\n```sh\n## not a heading\n```\n\n"
	        "- **A label.** What the label means, said in a sentence of its own that is "
	        "long enough. A second sentence that the drill leaves out because the bullet "
	        "is long, and it goes on a little more to be sure of it.\n- Short, kept whole.\n\n"
	        "## Follow-ups an interviewer pulls on\n\n- **One?** a\n- **Two?** b\n- Three. C\n\n"
	        "## The production story\n\nIt happened.\n\n## Sources\n\n- none\n";
	struct docs_page page;
	char err[256] = "";
	if (docs_parse(text, &page, err, sizeof err) < 0)
		fail_msg("%s", err);
	assert_string_equal(page.question, "Why, on two lines?");
	assert_int_equal(page.npoints, 3);
	assert_string_equal(page.points[0].text,
	                    "A claim that runs long enough to be a whole sentence on its own, "
	                    "e.g. this one, made once.");
	assert_int_equal(page.points[0].level, 0);
	assert_string_equal(page.points[1].text,
	                    "**A label.** What the label means, said in a sentence of its "
	                    "own that is long enough.");
	assert_int_equal(page.points[1].level, 1);
	assert_string_equal(page.points[2].text, "Short, kept whole.");
	assert_int_equal(page.nfollowups, 3);
	assert_string_equal(page.followups[0], "One?");
	assert_string_equal(page.followups[2], "Three.");
	assert_int_equal(page.nstory, 1);
	assert_string_equal(page.story[0].text, "It happened.");
	docs_free(&page);

	assert_int_equal(docs_parse("# lab-x\n\n## The model answer\n\nA.\n", &page, err, sizeof err), -1);
	assert_non_null(strstr(err, "question"));
}

/* Runs labsuite with args, stdin holding input; its stdout and stderr into out/errout. Exit code. */
static int labsuite(const char *const *args, const char *input, char *out, size_t outlen, char *errout,
                    size_t errlen)
{
	char opath[] = "/tmp/test_suite_drill_outXXXXXX", epath[] = "/tmp/test_suite_drill_errXXXXXX";
	int ofd = mkstemp(opath), efd = mkstemp(epath), in[2];
	assert_true(ofd >= 0 && efd >= 0);
	assert_int_equal(pipe(in), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(in[0], 0), dup2(ofd, 1), dup2(efd, 2);
		close(in[1]);
		char *argv[16] = {LAB_BIN_DIR "/labsuite", "drill"};
		int n = 2;
		while (*args && n < 15)
			argv[n++] = (char *)*args++;
		execv(argv[0], argv);
		_exit(127);
	}
	close(in[0]);
	assert_int_equal(write(in[1], input, strlen(input)), (ssize_t)strlen(input));
	close(in[1]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	ssize_t n = pread(ofd, out, outlen - 1, 0);
	out[n > 0 ? n : 0] = '\0';
	n = pread(efd, errout, errlen - 1, 0);
	errout[n > 0 ? n : 0] = '\0';
	close(ofd), close(efd);
	unlink(opath), unlink(epath);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_bad_lab(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	const char *args[] = {"--bin", LAB_BIN_DIR, "--docs", DOCS_DIR, "no-such-lab", NULL};
	assert_int_equal(labsuite(args, "", out, sizeof out, err, sizeof err), 2);
	assert_non_null(strstr(err, "no-such-lab"));
	assert_non_null(strstr(err, " pooling"));
	assert_non_null(strstr(err, " " FAST_LAB));
	assert_string_equal(out, "");
	const char *flag[] = {"--seed", "x", NULL};
	assert_int_equal(labsuite(flag, "", out, sizeof out, err, sizeof err), 2);
}

/* Each of marks, in this order, in out. */
static void assert_in_order(const char *out, const char *const *marks)
{
	const char *p = out;
	for (; *marks; marks++) {
		const char *q = strstr(p, *marks);
		if (!q)
			fail_msg("\"%s\" missing, or before what precedes it, in:\n%s", *marks, out);
		p = q + strlen(*marks);
	}
}

static void test_drill_runs_the_lab(void **state)
{
	(void)state;
	static char out[1 << 16], err[8192];
	struct docs_page page;
	char why[256];
	assert_int_equal(docs_load(DOCS_DIR, FAST_LAB, &page, why, sizeof why), 0);
	const char *args[] = {"--bin", LAB_BIN_DIR, "--docs", DOCS_DIR, FAST_LAB, NULL};
	int rc = labsuite(args, "\n", out, sizeof out, err, sizeof err);
	if (rc != 0) {
		size_t ol = strlen(out);
		fail_msg("exit %d; stderr:\n%s\nthe end of stdout:\n%s", rc, err,
		         out + (ol > 1200 ? ol - 1200 : 0));
	}
	const char *marks[] = {page.question,
	                       "Answer it out loud",
	                       "Key points of the model answer",
	                       "Follow-ups an interviewer pulls on",
	                       page.followups[0],
	                       "lab-" FAST_LAB " — ",
	                       "✔ demonstrated",
	                       "The production story to tell",
	                       "✔ the numbers back the answer",
	                       NULL};
	assert_in_order(out, marks);

	const char *norun[] = {"--bin", LAB_BIN_DIR, "--docs", DOCS_DIR, "--no-run", FAST_LAB, NULL};
	assert_int_equal(labsuite(norun, "", out, sizeof out, err, sizeof err), 0);
	const char *parts[] = {page.question, "Follow-ups", "The production story to tell", "not run", NULL};
	assert_in_order(out, parts);
	assert_null(strstr(out, "lab-" FAST_LAB " — "));
	assert_null(strstr(out, "demonstrated"));
	docs_free(&page);
}

static void test_sigint_is_passed_to_the_lab(void **state)
{
	(void)state;
	int in[2], outp[2];
	assert_int_equal(pipe(in), 0);
	assert_int_equal(pipe(outp), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(in[0], 0), dup2(outp[1], 1), dup2(null, 2);
		close(in[1]), close(outp[0]);
		execl(LAB_BIN_DIR "/labsuite", "labsuite", "drill", "--bin", LAB_BIN_DIR, "--docs", DOCS_DIR,
		      FAST_LAB, (char *)NULL);
		_exit(127);
	}
	close(in[0]), close(outp[1]);
	assert_int_equal(write(in[1], "\n", 1), 1);
	close(in[1]);
	/* the lab's first phase title: it runs, its schema is being made */
	static char out[1 << 16];
	size_t n = 0;
	ssize_t r;
	while (!strstr(out, "[1/") && n + 1 < sizeof(out) &&
	       (r = read(outp[0], out + n, sizeof(out) - 1 - n)) > 0)
		n += (size_t)r, out[n] = '\0';
	if (!strstr(out, "[1/"))
		fail_msg("the drill never ran the lab; it printed:\n%s", out);
	kill(pid, SIGINT);
	double sent = lab_run_now_ms();
	int status = 0;
	bool exited = false;
	while (!(exited = waitpid(pid, &status, WNOHANG) == pid) &&
	       lab_run_now_ms() - sent < LAB_INTERRUPT_BOUND_MS)
		usleep(5000);
	if (!exited) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	close(outp[0]);
	if (!exited)
		fail_msg("the drill was still running %d ms after SIGINT", LAB_INTERRUPT_BOUND_MS);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), LAB_EXIT_INTERRUPTED);
	lab_assert_nothing_left("lab_pagination", "lab:pagination:");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_every_page_parses),
	        cmocka_unit_test(test_key_points),
	        cmocka_unit_test(test_bad_lab),
	        cmocka_unit_test(test_drill_runs_the_lab),
	        cmocka_unit_test(test_sigint_is_passed_to_the_lab),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
