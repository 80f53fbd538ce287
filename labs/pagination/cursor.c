/*
 * cursor.c — the cursor codec (cursor.h): base64url through OpenSSL's EVP_EncodeBlock and
 * EVP_DecodeBlock with the URL-safe alphabet translated and the padding taken off and put back,
 * and the tag through HMAC() with SHA-256. Pure: no I/O, no clock, no allocation.
 */
#include "cursor.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

/* bytes 0..24 are signed, 25..56 are the tag */
#define SIGNED_BYTES 25
#define TAG_BYTES    32
/* the longest text pagination_b64url_decode takes: a little over a cursor's */
#define B64_TEXT_MAX 256

const char *pagination_cursor_status_name(enum pagination_cursor_status s)
{
	switch (s) {
	case PAGINATION_CURSOR_OK:
		return "ok";
	case PAGINATION_CURSOR_MALFORMED:
		return "malformed";
	case PAGINATION_CURSOR_TAMPERED:
		return "tampered";
	case PAGINATION_CURSOR_EXPIRED:
		return "expired";
	}
	return "malformed";
}

int pagination_b64url_encode(const unsigned char *in, size_t n, char *out, size_t outlen)
{
	unsigned char buf[B64_TEXT_MAX + 4];
	size_t padded = 4 * ((n + 2) / 3);
	if (padded + 1 > sizeof(buf))
		return -1;
	int w = EVP_EncodeBlock(buf, in, (int)n);
	if (w < 0 || (size_t)w != padded)
		return -1;
	while (w > 0 && buf[w - 1] == '=')
		w--;
	if ((size_t)w + 1 > outlen)
		return -1;
	for (int i = 0; i < w; i++)
		out[i] = buf[i] == '+' ? '-' : buf[i] == '/' ? '_' : (char)buf[i];
	out[w] = '\0';
	return w;
}

static int b64url_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '_';
}

int pagination_b64url_decode(const char *text, unsigned char *out, size_t outlen)
{
	unsigned char std[B64_TEXT_MAX + 4], bytes[B64_TEXT_MAX];
	size_t len = strnlen(text, B64_TEXT_MAX + 1);
	if (len > B64_TEXT_MAX || len % 4 == 1)
		return -1;
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (!b64url_char(text[i]))
			return -1;
		std[i] = text[i] == '-' ? '+' : text[i] == '_' ? '/' : (unsigned char)text[i];
	}
	size_t pad = (4 - len % 4) % 4;
	memset(std + len, '=', pad);
	int n = EVP_DecodeBlock(bytes, std, (int)(len + pad));
	if (n < 0)
		return -1;
	/* EVP_DecodeBlock counts the bytes the padding stands for as zeros: take them off */
	n -= (int)pad;
	if (n < 0 || (size_t)n > outlen)
		return -1;
	/* one spelling per value: the text must be what encoding these bytes gives */
	char again[B64_TEXT_MAX + 1];
	if (pagination_b64url_encode(bytes, (size_t)n, again, sizeof(again)) != (int)len ||
	    memcmp(again, text, len) != 0)
		return -1;
	memcpy(out, bytes, (size_t)n);
	return n;
}

static void put_be64(unsigned char *p, int64_t v)
{
	uint64_t u = (uint64_t)v;
	for (int i = 7; i >= 0; i--, u >>= 8)
		p[i] = (unsigned char)(u & 0xff);
}

static int64_t get_be64(const unsigned char *p)
{
	uint64_t u = 0;
	for (int i = 0; i < 8; i++)
		u = (u << 8) | p[i];
	return (int64_t)u;
}

static int tag(const unsigned char *key, const unsigned char *msg, unsigned char out[TAG_BYTES])
{
	unsigned int len = 0;
	if (!HMAC(EVP_sha256(), key, PAGINATION_CURSOR_KEY_LEN, msg, SIGNED_BYTES, out, &len) ||
	    len != TAG_BYTES)
		return -1;
	return 0;
}

int pagination_cursor_encode(const unsigned char key[PAGINATION_CURSOR_KEY_LEN],
                             const struct pagination_cursor *c, char *out, size_t outlen)
{
	unsigned char raw[PAGINATION_CURSOR_BYTES];
	raw[0] = PAGINATION_CURSOR_VERSION;
	put_be64(raw + 1, c->created_us);
	put_be64(raw + 9, c->id);
	put_be64(raw + 17, c->issued_s);
	if (tag(key, raw, raw + SIGNED_BYTES) < 0)
		return -1;
	return pagination_b64url_encode(raw, sizeof(raw), out, outlen) == PAGINATION_CURSOR_TEXT_LEN ? 0 : -1;
}

enum pagination_cursor_status pagination_cursor_decode(const unsigned char key[PAGINATION_CURSOR_KEY_LEN],
                                                       const char *text, int64_t now_s, int64_t ttl_s,
                                                       struct pagination_cursor *out)
{
	unsigned char raw[PAGINATION_CURSOR_BYTES + 1], want[TAG_BYTES];
	if (pagination_b64url_decode(text, raw, sizeof(raw)) != PAGINATION_CURSOR_BYTES)
		return PAGINATION_CURSOR_MALFORMED;
	if (tag(key, raw, want) < 0 || CRYPTO_memcmp(want, raw + SIGNED_BYTES, TAG_BYTES) != 0)
		return PAGINATION_CURSOR_TAMPERED;
	if (raw[0] != PAGINATION_CURSOR_VERSION)
		return PAGINATION_CURSOR_MALFORMED;
	struct pagination_cursor c = {get_be64(raw + 1), get_be64(raw + 9), get_be64(raw + 17)};
	/* subtraction in the unsigned domain: an issued time from another era cannot overflow */
	if (c.issued_s > now_s ? 0 : (uint64_t)now_s - (uint64_t)c.issued_s > (uint64_t)ttl_s)
		return PAGINATION_CURSOR_EXPIRED;
	*out = c;
	return PAGINATION_CURSOR_OK;
}
