/* labs.c — labsuite labs (suite.h): not written yet. */
#include <stdio.h>

#include "suite.h"

int suite_labs(int argc, char **argv)
{
	(void)argc, (void)argv;
	fprintf(stderr, "labsuite labs: not written yet\n");
	return 2;
}
