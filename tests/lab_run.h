/*
 * lab_run.h — for the tests of a lab: run its binary as a user would, and read what it said.
 * Header-only; include it after <cmocka.h> in tests/test_<lab>.c. LAB_BIN_DIR is the build
 * directory, passed by CMake to every test.
 */
#ifndef LAB_TEST_LAB_RUN_H
#define LAB_TEST_LAB_RUN_H

#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Runs LAB_BIN_DIR/lab-<lab> <args> with env's assignments before it (NULL: none) and stdin
 * from /dev/null. Fills out with what it printed on stdout and errout with its stderr, each
 * NUL-terminated and cut to its buffer. Returns its exit code, -1 when it did not exit (a
 * signal, a sanitizer abort). The test fails if the program cannot be started.
 */
static int lab_run(const char *lab, const char *env, const char *args, char *out, size_t outlen, char *errout,
                   size_t errlen)
{
	char cmd[1024], path[512];
	snprintf(path, sizeof(path), "%s/%s.%d.stderr", LAB_BIN_DIR, lab, (int)getpid());
	snprintf(cmd, sizeof(cmd), "%s %s/lab-%s %s 2>%s </dev/null", env ? env : "", LAB_BIN_DIR, lab, args,
	         path);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = fread(out, 1, outlen - 1, p);
	out[n] = '\0';
	int status = pclose(p);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	n = fread(errout, 1, errlen - 1, f);
	errout[n] = '\0';
	fclose(f);
	remove(path);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#endif
