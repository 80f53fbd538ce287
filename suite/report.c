/* report.c — labsuite report (suite.h): not written yet. */
#include <stdio.h>

#include "suite.h"

int suite_report(int argc, char **argv)
{
	(void)argc, (void)argv;
	fprintf(stderr, "labsuite report: not written yet\n");
	return 2;
}
