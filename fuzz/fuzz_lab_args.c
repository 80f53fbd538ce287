/*
 * fuzz_lab_args.c — the flag parser every lab program runs first (common/lab_args.c,
 * lab_parse_args, which lab_init_flags calls after lab_init_defaults): the shared flags --quick
 * --json --step --predict --seed N --serve --port N --help and a lab's own (lab_init_flags).
 *
 * The input is the command line: split at each NUL or newline into arguments after argv[0]
 * (at most 64). The lab has two flags of its own, "--vulnerable" and "--fix" (serve_only). The
 * parser is called as lab_init_flags calls it, but through lab_parse_args_to with two memory
 * streams for stdout and stderr: lab_init_flags itself also starts the Ctrl-C guard (a thread
 * that blocks SIGINT and SIGTERM for the process and, on a signal, connects to the servers to
 * drop the lab's schema), which no fuzzer may run; the parsing is the same function. It never
 * exits: no exit() is reachable from it. LAB_PG_URL and LAB_REDIS_URL are set with a password.
 * Asserted:
 *   - 0 (go on): nothing printed, exit_code 0, the port within 0..65535, the seed within
 *     0..INT64_MAX, not --predict with --serve, a serve_only flag only with --serve, and a lab
 *     flag set only when its exact name is an argument;
 *   - -1 after --help: the usage on stdout (starts "usage: lab-fuzz"), nothing on stderr, exit 0;
 *   - -1 after a bad flag: stderr starts "lab-fuzz: " and holds the usage, stdout is empty, exit 2;
 *   - the servers' password is never printed (the usage shows the URLs redacted), unless an
 *     argument held it (the message quotes a bad argument);
 *   - the complaint (stderr's first line) is printable ASCII only and short, whatever the
 *     argument held: a bad argument is quoted escaped (\x1b, never the byte a terminal would act
 *     on) and cut after 64 bytes.
 *
 * links: labcore
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lab.h"
#include "lab_internal.h"
#include "fuzz_check.h"

#define MAX_ARGS  64
#define PASSWORD  "Fz1Secret"
#define PG_URL    "postgres://lab:" PASSWORD "@127.0.0.1:55432/lab"
#define REDIS_URL "redis://:" PASSWORD "@127.0.0.1:56379/0"

static bool vulnerable, fix;
static const struct lab_flag FLAGS[] = {
        {"--vulnerable", "run the vulnerable variant", &vulnerable, false},
        {"--fix", "serve the fixed variant", &fix, true},
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	setenv("LAB_PG_URL", PG_URL, 1);
	setenv("LAB_REDIS_URL", REDIS_URL, 1);
	return 0;
}

static bool has_arg(int argc, char **argv, const char *what)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], what))
			return true;
	return false;
}

static void check_result(int rc, const struct lab *lab, int argc, char **argv, const char *out,
                         const char *err)
{
	bool pw_given = false;
	for (int i = 1; i < argc; i++)
		pw_given = pw_given || strstr(argv[i], PASSWORD) != NULL;
	check(pw_given || (!strstr(out, PASSWORD) && !strstr(err, PASSWORD)));
	if (rc == 0) {
		check(lab->exit_code == LAB_EXIT_OK && !*out && !*err);
		check(lab->opts.port >= 0 && lab->opts.port <= 65535 && lab->opts.seed <= INT64_MAX);
		check(!(lab->opts.predict && lab->opts.serve));
		check(!fix || lab->opts.serve);
		check(!vulnerable || has_arg(argc, argv, "--vulnerable"));
		check(!fix || has_arg(argc, argv, "--fix"));
		return;
	}
	check(rc == -1);
	if (lab->exit_code == LAB_EXIT_OK) {
		check(!strncmp(out, "usage: lab-fuzz", strlen("usage: lab-fuzz")) && !*err);
		return;
	}
	check(lab->exit_code == LAB_EXIT_ENV && !*out && !strncmp(err, "lab-fuzz: ", strlen("lab-fuzz: ")));
	size_t line = strcspn(err, "\n");
	check(err[line] == '\n' && line < 400);
	for (size_t i = 0; i < line; i++)
		check(err[i] >= 0x20 && err[i] <= 0x7e);
	/* a complaint comes with the usage, except --predict's, which is about the terminal */
	check(strstr(err, "usage: lab-fuzz") || strstr(err, "--predict asks"));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_text(data, size), *argv[MAX_ARGS + 2];
	if (!text)
		return 0;
	int argc = 0;
	argv[argc++] = "lab-fuzz";
	char *arg = text;
	for (size_t i = 0; i <= size && argc <= MAX_ARGS; i++)
		if (i == size || text[i] == '\0' || text[i] == '\n') {
			text[i] = '\0';
			argv[argc++] = arg;
			arg = text + i + 1;
		}
	argv[argc] = NULL;

	char *out = NULL, *err = NULL;
	size_t outlen = 0, errlen = 0;
	FILE *fout = open_memstream(&out, &outlen), *ferr = open_memstream(&err, &errlen);
	check(fout && ferr);
	struct lab lab;
	lab_init_defaults(&lab, "fuzz", "does the parser hold?", 1, FLAGS, 2);
	int rc = lab_parse_args_to(&lab, argc, argv, fout, ferr);
	check(fclose(fout) == 0 && fclose(ferr) == 0);
	check_result(rc, &lab, argc, argv, out, err);
	free(out);
	free(err);
	free(text);
	return 0;
}
