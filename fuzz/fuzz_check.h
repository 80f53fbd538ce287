/*
 * fuzz_check.h — a harness's invariant: check(ok) says which one broke (file, line, the
 * expression) on stderr, then aborts, so libFuzzer keeps the input as a reproducer and a replay
 * test (fuzz/replay_main.c) fails naming it. A rejected input is never a broken invariant:
 * rejecting is the parser's job.
 */
#ifndef LAB_FUZZ_CHECK_H
#define LAB_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define check(ok)                                                                                            \
	do {                                                                                                 \
		if (!(ok)) {                                                                                 \
			fprintf(stderr, "%s:%d: broken: %s\n", __FILE__, __LINE__, #ok);                     \
			abort();                                                                             \
		}                                                                                            \
	} while (0)

#endif
