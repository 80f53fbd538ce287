/*
 * fuzz_check.h — a harness's invariant: check(ok) says which one broke (file, line, the
 * expression) on stderr, then aborts, so libFuzzer keeps the input as a reproducer and a replay
 * test (fuzz/replay_main.c) fails naming it. A rejected input is never a broken invariant:
 * rejecting is the parser's job. fuzz_text: the input as a string for parsers that take one.
 */
#ifndef LAB_FUZZ_CHECK_H
#define LAB_FUZZ_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define check(ok)                                                                                            \
	do {                                                                                                 \
		if (!(ok)) {                                                                                 \
			fprintf(stderr, "%s:%d: broken: %s\n", __FILE__, __LINE__, #ok);                     \
			abort();                                                                             \
		}                                                                                            \
	} while (0)

/* The input's bytes and a NUL after them (NULs inside kept), malloc'd; NULL when out of memory. */
static inline char *fuzz_text(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (text) {
		memcpy(text, data, size);
		text[size] = '\0';
	}
	return text;
}

#endif
