/*
 * labsuite — the suite's runner: `make labs`, `make report` and `make drill` (suite.h).
 */
#include <stdio.h>
#include <string.h>

#include "faults.h"
#include "suite.h"

static int usage(FILE *f, int code)
{
	fprintf(f, "usage: labsuite labs   [--bin DIR] [--jobs N] LAB...     every lab, --quick --json, one "
	           "screen\n"
	           "       labsuite report [--bin DIR] [--out DIR] LAB...    one HTML page of the proofs\n"
	           "       labsuite drill  [--bin DIR] [--docs DIR] [LAB]    a question, your answer, the "
	           "proof\n"
	           "       labsuite faults [--bin DIR] [--labenv PATH]        every API lab through faults\n"
	           "  labsuite <command> --help for its flags\n");
	return code;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage(stderr, 2);
	const char *cmd = argv[1];
	if (!strcmp(cmd, "labs"))
		return suite_labs(argc - 1, argv + 1);
	if (!strcmp(cmd, "report"))
		return suite_report(argc - 1, argv + 1);
	if (!strcmp(cmd, "drill"))
		return suite_drill(argc - 1, argv + 1);
	if (!strcmp(cmd, "faults"))
		return suite_faults(argc - 1, argv + 1);
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h"))
		return usage(stdout, 0);
	fprintf(stderr, "labsuite: unknown command \"%s\"\n", cmd);
	return usage(stderr, 2);
}
