/*
 * fuzz_http_head.c — the request-head lexer every API lab's server runs on a client's raw bytes
 * before evhttp parses them (common/http_guard.c: http_head_lex, the function the guard's input
 * callback calls on each read). A bad head (a NUL or another control character, a CR that does
 * not end its line, an obsolete folded line, an empty request line) is answered 400.
 *
 * The input is what a client sends. Asserted:
 *   - the same bytes in any split give the same verdict: whole, one byte at a time, and in
 *     chunks of 2 to 17 bytes (the size taken from the first byte), as reads may cut them;
 *     the head ends at the same byte and its fault is the same;
 *   - the verdict agrees with a plain reading of RFC 9112 written here independently: the head
 *     ends after the first empty line that is not the request line; it is bad when, before
 *     that, a byte is NUL or a control character other than HTAB, CR and LF, or 0x7F, a CR is
 *     not followed by LF, a line after the request line starts with SP or HTAB, or the request
 *     line is empty;
 *   - once the head is done the lexer takes no more bytes.
 *
 * links: labcore
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_guard.h"
#include "fuzz_check.h"

struct verdict {
	bool done;
	size_t head_len; /* bytes of the head, the blank line included, when done */
	const char *fault;
};

/* Lexes data in chunks of step bytes (0: all at once). */
static struct verdict lex_in_chunks(const uint8_t *data, size_t size, size_t step)
{
	struct http_head_lex l;
	struct verdict v = {false, 0, NULL};
	http_head_lex_start(&l);
	size_t at = 0;
	while (at < size && l.in_head) {
		size_t n = step && size - at > step ? step : size - at;
		size_t took = http_head_lex(&l, data + at, n);
		check(took <= n && (took == n || l.head_done));
		v.head_len += took;
		at += n;
	}
	v.done = l.head_done;
	v.fault = l.fault;
	if (v.done) /* a done head takes nothing more */
		check(http_head_lex(&l, data, size) == 0 && l.fault == v.fault);
	return v;
}

/* The same reading, written from the rules above rather than from the lexer. */
static struct verdict reference(const uint8_t *data, size_t size)
{
	struct verdict v = {false, 0, NULL};
	bool bad = false, first = true;
	size_t start = 0;
	while (start < size) {
		const uint8_t *lf = memchr(data + start, '\n', size - start);
		size_t end = lf ? (size_t)(lf - data) : size; /* the line is [start, end) */
		size_t len = end - start;
		bool crlf = lf && len > 0 && data[end - 1] == '\r';
		size_t content = crlf ? len - 1 : len;
		for (size_t i = start; i < start + content; i++) {
			uint8_t ch = data[i];
			/* a CR at the very end of the input may still be followed by LF */
			if (ch == '\r' && !(i + 1 == size))
				bad = true;
			else if (ch != '\r' && ((ch < 0x20 && ch != '\t') || ch == 0x7f))
				bad = true;
		}
		if (!first && content > 0 && (data[start] == ' ' || data[start] == '\t'))
			bad = true;
		if (!lf)
			break;
		if (content == 0 && !first) {
			v.done = true;
			v.head_len = end + 1;
			break;
		}
		if (content == 0)
			bad = true;
		first = false;
		start = end + 1;
	}
	v.fault = bad ? "bad" : NULL;
	return v;
}

static bool same(struct verdict a, struct verdict b)
{
	return a.done == b.done && (!a.done || a.head_len == b.head_len) && a.fault == b.fault;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct verdict whole = lex_in_chunks(data, size, 0);
	check(same(whole, lex_in_chunks(data, size, 1)));
	check(same(whole, lex_in_chunks(data, size, size ? 2 + data[0] % 16 : 2)));
	struct verdict ref = reference(data, size);
	check(whole.done == ref.done && (!ref.done || whole.head_len == ref.head_len));
	check((whole.fault != NULL) == (ref.fault != NULL));
	return 0;
}
