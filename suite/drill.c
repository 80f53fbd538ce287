/* drill.c — labsuite drill (suite.h): not written yet. */
#include <stdio.h>

#include "suite.h"

int suite_drill(int argc, char **argv)
{
	(void)argc, (void)argv;
	fprintf(stderr, "labsuite drill: not written yet\n");
	return 2;
}
