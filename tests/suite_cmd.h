/*
 * suite_cmd.h — for the tests of labsuite (tests/test_suite_*.c): run a command line as a person
 * would and count what it printed. Header-only; include it after <cmocka.h>.
 */
#ifndef LAB_TEST_SUITE_CMD_H
#define LAB_TEST_SUITE_CMD_H

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

/*
 * Runs cmd through /bin/sh (stdin /dev/null, stderr into stdout), what it printed into out (cut
 * to outlen, NUL-terminated); its exit code, -1 when a signal ended it.
 */
__attribute__((unused)) static int suite_cmd(const char *cmd, char *out, size_t outlen)
{
	char full[8192];
	snprintf(full, sizeof(full), "%s 2>&1 </dev/null", cmd);
	FILE *p = popen(full, "r");
	assert_non_null(p);
	size_t n = fread(out, 1, outlen - 1, p);
	out[n] = '\0';
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* How many times needle stands in hay, not overlapping. */
__attribute__((unused)) static int suite_count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

#endif
