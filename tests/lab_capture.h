/*
 * lab_capture.h — one call to the runner of common/lab.c with its output captured, for the pure
 * tests of the runner (test_lab.c, test_lab_args.c): file descriptors 1 and 2 point at temporary
 * files for the length of the call and are restored before anything is asserted, so a failed
 * assertion is never swallowed by the capture. The including file defines NAME (the lab's name)
 * and QUESTION, and includes cmocka.h first.
 */
#ifndef LAB_TESTS_CAPTURE_H
#define LAB_TESTS_CAPTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lab.h"

/* One call to the runner: its argv in, what it returned and printed out. */
struct run {
	const char *argv[12];
	struct lab lab;
	int ret;
	char *out; /* what reached stdout */
	char *err; /* what reached stderr */
};

__attribute__((unused)) static char *slurp(FILE *f)
{
	long n;
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	char *s = calloc(1, (size_t)n + 1);
	assert_non_null(s);
	assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return s;
}

/* Runs fn(r) with stdout and stderr going to temporary files, then reads them into r. */
__attribute__((unused)) static void capture(struct run *r, void (*fn)(struct run *))
{
	FILE *out = tmpfile(), *err = tmpfile();
	assert_non_null(out);
	assert_non_null(err);
	fflush(stdout);
	fflush(stderr);
	int saved_out = dup(STDOUT_FILENO), saved_err = dup(STDERR_FILENO);
	assert_true(saved_out >= 0 && saved_err >= 0);
	dup2(fileno(out), STDOUT_FILENO);
	dup2(fileno(err), STDERR_FILENO);

	fn(r);

	fflush(stdout);
	fflush(stderr);
	dup2(saved_out, STDOUT_FILENO);
	dup2(saved_err, STDERR_FILENO);
	close(saved_out);
	close(saved_err);
	r->out = slurp(out);
	r->err = slurp(err);
}

__attribute__((unused)) static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
	lab_free(&r->lab);
}

__attribute__((unused)) static int argc_of(const struct run *r)
{
	int n = 0;
	while (r->argv[n])
		n++;
	return n;
}

__attribute__((unused)) static void init_cb(struct run *r)
{
	r->ret = lab_init(&r->lab, NAME, QUESTION, 2, argc_of(r), (char **)r->argv);
}

/* lab_init with these arguments after the program name; fails the test if it prints anything. */
__attribute__((unused)) static void init_quiet(struct run *r, const char *const *args)
{
	memset(r, 0, sizeof(*r));
	r->argv[0] = "lab-" NAME;
	for (int i = 0; args[i]; i++)
		r->argv[i + 1] = args[i];
	capture(r, init_cb);
	assert_string_equal(r->out, "");
	assert_string_equal(r->err, "");
	assert_int_equal(r->ret, 0);
}

#endif
