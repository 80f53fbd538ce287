/*
 * fuzz_pagination_cursor.c — lab-pagination's cursor codec (labs/pagination/cursor.c), the
 * functions GET /v1/items runs on a client's cursor= before anything reaches PostgreSQL.
 *
 * Feeds the input three ways:
 *   1. as cursor text (up to the first NUL) to pagination_cursor_decode under a fixed key,
 *      now and ttl fixed: when it is accepted, encoding what it decoded gives the same text
 *      byte for byte (one spelling per position), and changing any one of its characters
 *      to another of the alphabet makes it refused;
 *   2. as base64url text to pagination_b64url_decode: when it decodes, encoding the bytes
 *      gives the text back (canonical), and the count fits the buffer it was given;
 *   3. its first 24 bytes as a cursor (created_us, id, issued_s) to pagination_cursor_encode:
 *      the text is 76 characters of the alphabet and decodes back to the same three numbers
 *      (at its issue time); under another key it is refused as tampered. And its bytes (up to
 *      190) base64url-encoded decode back to themselves.
 * Seeds (fuzz/corpus/pagination_cursor/) hold cursors signed with this harness's key, so the
 * accepted path is reached from the start: a fuzzer cannot forge HMAC-SHA256.
 *
 * links: lab_pagination
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cursor.h"
#include "fuzz_check.h"

/* the harness's key: bytes 0..31 (a real API's is RAND_bytes) */
static const unsigned char KEY[PAGINATION_CURSOR_KEY_LEN] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                                             11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                                             22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
static const unsigned char OTHER_KEY[PAGINATION_CURSOR_KEY_LEN] = {1};
/* the seeds were issued at 1.7e9 s (2023); a day's ttl, the clock a little later */
#define NOW_S 1700000100
#define TTL_S 86400
static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int64_t be64(const uint8_t *p)
{
	uint64_t u = 0;
	for (int i = 0; i < 8; i++)
		u = (u << 8) | p[i];
	return (int64_t)u;
}

static void as_cursor_text(const char *text)
{
	struct pagination_cursor c;
	if (pagination_cursor_decode(KEY, text, NOW_S, TTL_S, &c) != PAGINATION_CURSOR_OK)
		return;
	char again[PAGINATION_CURSOR_TEXT_MAX];
	/* accepted, so it is the one spelling of its position */
	check(pagination_cursor_encode(KEY, &c, again, sizeof(again)) == 0 && strcmp(again, text) == 0);
	/* any one character changed: refused (57 bytes are exactly 76 characters, no spare bits) */
	char edit[PAGINATION_CURSOR_TEXT_MAX];
	for (size_t i = 0; i < PAGINATION_CURSOR_TEXT_LEN; i += 7) {
		memcpy(edit, text, sizeof(edit));
		edit[i] = ALPHABET[(strchr(ALPHABET, edit[i]) - ALPHABET + 1) % 64];
		struct pagination_cursor d;
		check(pagination_cursor_decode(KEY, edit, NOW_S, TTL_S, &d) != PAGINATION_CURSOR_OK);
	}
}

static void as_b64_text(const char *text)
{
	unsigned char bytes[200];
	int n = pagination_b64url_decode(text, bytes, sizeof(bytes));
	if (n < 0)
		return;
	check((size_t)n <= sizeof(bytes));
	char again[300];
	/* decoded, so the text is the encoding of its bytes */
	check(pagination_b64url_encode(bytes, (size_t)n, again, sizeof(again)) >= 0 &&
	      strcmp(again, text) == 0);
}

static void as_cursor_fields(const uint8_t *data, size_t size)
{
	uint8_t raw[24] = {0};
	memcpy(raw, data, size < sizeof(raw) ? size : sizeof(raw));
	struct pagination_cursor c = {be64(raw), be64(raw + 8), be64(raw + 16)}, d;
	char text[PAGINATION_CURSOR_TEXT_MAX];
	check(pagination_cursor_encode(KEY, &c, text, sizeof(text)) == 0);
	check(strlen(text) == PAGINATION_CURSOR_TEXT_LEN &&
	      strspn(text, ALPHABET) == PAGINATION_CURSOR_TEXT_LEN);
	check(pagination_cursor_decode(KEY, text, c.issued_s, TTL_S, &d) == PAGINATION_CURSOR_OK &&
	      d.created_us == c.created_us && d.id == c.id && d.issued_s == c.issued_s);
	check(pagination_cursor_decode(OTHER_KEY, text, c.issued_s, TTL_S, &d) == PAGINATION_CURSOR_TAMPERED);
	/* a too small buffer is refused, never overrun */
	check(pagination_cursor_encode(KEY, &c, text, PAGINATION_CURSOR_TEXT_LEN) == -1);
}

static void b64_roundtrip(const uint8_t *data, size_t size)
{
	size_t n = size < 190 ? size : 190; /* 190 bytes are 254 characters: within the decoder's 256 */
	char text[260];
	unsigned char back[200];
	int len = pagination_b64url_encode(data, n, text, sizeof(text));
	check(len >= 0 && (size_t)len == strlen(text));
	check(pagination_b64url_decode(text, back, sizeof(back)) == (int)n && memcmp(back, data, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_text(data, size);
	if (!text)
		return 0;
	as_cursor_text(text);
	as_b64_text(text);
	free(text);
	as_cursor_fields(data, size);
	b64_roundtrip(data, size);
	return 0;
}
