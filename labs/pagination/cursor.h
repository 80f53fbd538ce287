/*
 * cursor.h — lab-pagination's page cursor, as a pure codec: no I/O, no clock, no globals, so a
 * fuzzer can drive it with any bytes (the key and the time are arguments).
 *
 * A cursor is the keyset position of the last row a page returned (its created_at in µs since
 * the epoch and its id) and the time it was issued, signed with HMAC-SHA256 (RFC 2104, OpenSSL
 * libcrypto) under a key only the server knows, then written in base64url without padding
 * (RFC 4648 §5). The client sees an opaque string it can hand back, never a position it could
 * edit or forge:
 *
 *   byte 0       version (1)
 *   bytes 1-8    created_at, µs since 1970-01-01 UTC, big-endian int64
 *   bytes 9-16   id, big-endian int64
 *   bytes 17-24  issued at, s since the epoch, big-endian int64
 *   bytes 25-56  HMAC-SHA256(key, bytes 0-24)
 *
 * 57 bytes, 76 characters. Decoding is strict: only the base64url alphabet, no padding, no
 * whitespace, and the text must be the one canonical encoding of its bytes (a string whose
 * unused low bits are set would decode to the same bytes as another: refused, so one position
 * has one spelling). The tag is compared in constant time (CRYPTO_memcmp).
 */
#ifndef LAB_PAGINATION_CURSOR_H
#define LAB_PAGINATION_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#define PAGINATION_CURSOR_VERSION  1
#define PAGINATION_CURSOR_KEY_LEN  32
#define PAGINATION_CURSOR_BYTES    57
#define PAGINATION_CURSOR_TEXT_LEN 76
/* room for a cursor's text and its NUL */
#define PAGINATION_CURSOR_TEXT_MAX (PAGINATION_CURSOR_TEXT_LEN + 1)

struct pagination_cursor {
	int64_t created_us; /* the last row's created_at */
	int64_t id;         /* and its id: the tie-breaker */
	int64_t issued_s;   /* when the server issued the cursor */
};

enum pagination_cursor_status {
	PAGINATION_CURSOR_OK,
	PAGINATION_CURSOR_MALFORMED, /* not base64url, the wrong length, an unknown version */
	PAGINATION_CURSOR_TAMPERED,  /* well formed, but the tag is not ours for these bytes */
	PAGINATION_CURSOR_EXPIRED,   /* ours, issued more than ttl_s before now_s */
};

/* "ok", "malformed", "tampered", "expired": the reason field of the API's 400. */
const char *pagination_cursor_status_name(enum pagination_cursor_status s);

/*
 * Writes the base64url text of in[0..n) without padding into out (outlen bytes, with its NUL).
 * Returns its length, or -1 when out is too small.
 */
int pagination_b64url_encode(const unsigned char *in, size_t n, char *out, size_t outlen);

/*
 * Decodes base64url text without padding into out (outlen bytes). Returns the byte count, or -1
 * when text holds anything outside the alphabet (padding and whitespace included), its length
 * is 1 mod 4 or over 256 characters (it reads no further), it is not the canonical encoding of
 * what it decodes to, or out is too small.
 */
int pagination_b64url_decode(const char *text, unsigned char *out, size_t outlen);

/*
 * Signs c with key and writes its text into out (at least PAGINATION_CURSOR_TEXT_MAX bytes).
 * 0, or -1 when out is too small or libcrypto failed.
 */
int pagination_cursor_encode(const unsigned char key[PAGINATION_CURSOR_KEY_LEN],
                             const struct pagination_cursor *c, char *out, size_t outlen);

/*
 * Reads text back into *out when it is a cursor this key signed, issued at most ttl_s before
 * now_s. Checks in this order: the text (malformed), the tag (tampered), the version
 * (malformed), the age (expired). A cursor issued after now_s (the clock stepped back) is
 * accepted. *out is written only on PAGINATION_CURSOR_OK.
 */
enum pagination_cursor_status pagination_cursor_decode(const unsigned char key[PAGINATION_CURSOR_KEY_LEN],
                                                       const char *text, int64_t now_s, int64_t ttl_s,
                                                       struct pagination_cursor *out);

#endif
