/*
 * fuzz_authz.c — lab-authz's JWT handling before libjwt (the Authorization header, the bearer
 * token, the header's "alg") and after it (the claims the verifiers read from what libjwt decoded,
 * and what the fixed verifier accepts).
 *
 * Feeds, by the first byte of the input:
 *   0  the rest as an Authorization header value, to authz_parse_bearer (what every route behind
 *      a token calls), then its token to az_verify_fixed and az_verify_naive;
 *   1  the rest as a token's payload (claims), signed RS256 here with the harness's own fixed key
 *      (a 1024-bit RSA key made for this file, standing in for the API's: the verifiers get its
 *      public half), sent as "Bearer <token>" through authz_parse_bearer to both verifiers; then
 *      the same token tampered (one payload byte changed, the signature kept), the same payload
 *      signed HS256 with the public key's PEM as the secret (the key-confusion attack), and
 *      with "alg":"none" and no signature;
 *   2  the rest split at the first NUL into a JOSE header and a payload, signed RS256, so the
 *      header's own fields (alg, typ, kid, crit...) are fuzzed too.
 * libjwt parses a decoded payload as a C string: the claims compared are those before any NUL.
 * No clock: now is fixed (FUZZ_NOW), so the run is deterministic.
 *
 * Asserts beyond "no crash":
 *   - authz_parse_bearer: 1 only for "Bearer " (any case) and a b64token within the header
 *     value; the token it gives verifies or fails the same as the token alone;
 *   - the fixed verifier never accepts a token whose signature was not made with the private key
 *     (tampered, HS256 with the public PEM, "none", or any header value the fuzzer wrote), and
 *     always says why it refused;
 *   - what the fixed verifier accepts holds: alg RS256, aud, a positive sub, role user|admin, a
 *     jti, exp not past and iat and nbf not ahead (skew allowed), and each claim read is the
 *     payload's own, whole (sub the same number, role, aud and jti the same strings, never cut);
 *   - the naive verifier reads sub only from a canonical number string.
 * links: lab_authz
 */
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz_check.h"
#include "internal.h"

#define FUZZ_NOW  1700000000LL
#define FUZZ_SKEW 60
/* a payload longer than this is not one the lab signs; keeps each input's RSA work small */
#define PAYLOAD_MAX 2048

/* the harness's fixed key pair (never the lab's: the lab makes its keys at start) */
static const char PRIVATE_PEM[] = "-----BEGIN PRIVATE KEY-----\n"
                                  "MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBAN3UtrP19msvAe8S\n"
                                  "qS/TkoLoq6hyD2T6itqiu3VXUIo0G6sQq6k1YSsi6xOtwGjIm0NUqt/QF1IqvdtO\n"
                                  "m9DNx05KA7OXNfeev8t91C5z5GHgZuHkJ0iFqxfNJfdFM5l3/6jETswZS0xU+MW5\n"
                                  "KjzEeNLoGdWfA161l6LV93RD48NLAgMBAAECgYBHRHKaKHhNgSGu7CDc060rT5Lu\n"
                                  "oA5gE7oOed+d2Dpw3ELTV5y+1P5tvF8nyFebkm+HVyk6lIEZjc/HKF8Y2zOfUvl3\n"
                                  "57y8CSK/yoIiUC7bMMfFQp6GBRmN6MZoejN0V6kywB1G7/y6YHP+Ib/zuLvjsP9r\n"
                                  "/KBse8ODqmHeC3r98QJBAPx7mn9p27uFIV81lZ2rDTD6o2CnEPy7lFezrYZjiMr/\n"
                                  "7oe5vNyze+YJNrc0HEtws+NdGp2zXDYmKSqqBzhBX/MCQQDg68zeNMwqQBaSTDM8\n"
                                  "RPAQmFfSvcSwZUHxrfKJR3TQGCYweNB7l0l1Sk2073uFO0eOh5XV6dPINnO5jtvI\n"
                                  "M71JAkEA1e854xpkeIj+1PjHdJiajdTiGKSXDT84G/QAZa3zG+cuS00DjZJ7ulg2\n"
                                  "R5fdHcM6eb3LLrLqwGsnWKJHidBDJwJADxci9qGaNRd5rDUalueVJ7fg5I3A3Yjd\n"
                                  "pMZj6Fv39WI5ZbUlX7Vlw03J6uLKacTxZxmnruNyRxOILiHskwENqQJAQnuF7jQJ\n"
                                  "r5TS+QpZkkjLINFgeQTw7qx1gBpsWSgtfD+NqwGcFPW0kic8fxa5mmp+19kftTh8\n"
                                  "zRFiTM/x5qeBRA==\n"
                                  "-----END PRIVATE KEY-----\n";
static const char PUBLIC_PEM[] = "-----BEGIN PUBLIC KEY-----\n"
                                 "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDd1Laz9fZrLwHvEqkv05KC6Kuo\n"
                                 "cg9k+oraort1V1CKNBurEKupNWErIusTrcBoyJtDVKrf0BdSKr3bTpvQzcdOSgOz\n"
                                 "lzX3nr/LfdQuc+Rh4Gbh5CdIhasXzSX3RTOZd/+oxE7MGUtMVPjFuSo8xHjS6BnV\n"
                                 "nwNetZei1fd0Q+PDSwIDAQAB\n"
                                 "-----END PUBLIC KEY-----\n";

static struct authz_keys keys;
static EVP_PKEY *signer;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	keys.public_pem = (char *)PUBLIC_PEM;
	keys.public_len = (int)strlen(PUBLIC_PEM);
	BIO *b = BIO_new_mem_buf(PRIVATE_PEM, -1);
	signer = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	check(signer != NULL);
	return 0;
}

/* base64url of in, no padding, appended at out (room for 4/3 n + 4) */
static size_t b64url(const unsigned char *in, size_t n, char *out)
{
	int m = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	while (m > 0 && out[m - 1] == '=')
		m--;
	for (int i = 0; i < m; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	out[m] = '\0';
	return (size_t)m;
}

enum sig { SIG_RS256, SIG_HS256_PUBLIC, SIG_NONE };

/* "header.payload.signature" into a malloc'd string */
static char *token_of(const char *header, size_t hlen, const unsigned char *payload, size_t plen,
                      enum sig sig)
{
	char *t = malloc(2 * (hlen + plen) + 1024);
	check(t != NULL);
	size_t n = b64url((const unsigned char *)header, hlen, t);
	t[n++] = '.';
	n += b64url(payload, plen, t + n);
	unsigned char mac[512];
	size_t maclen = 0;
	if (sig == SIG_RS256) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		maclen = sizeof(mac);
		check(md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, signer) == 1 &&
		      EVP_DigestSign(md, mac, &maclen, (const unsigned char *)t, n) == 1);
		EVP_MD_CTX_free(md);
	} else if (sig == SIG_HS256_PUBLIC) {
		unsigned int len = 0;
		check(HMAC(EVP_sha256(), PUBLIC_PEM, (int)strlen(PUBLIC_PEM), (const unsigned char *)t, n,
		           mac, &len) != NULL);
		maclen = len;
	}
	t[n++] = '.';
	b64url(mac, maclen, t + n);
	return t;
}

/* whether the claim name of the payload is the string s, whole */
static bool same_string(json_t *g, const char *name, const char *s)
{
	json_t *v = json_object_get(g, name);
	return json_is_string(v) && json_string_length(v) == strlen(s) &&
	       strcmp(json_string_value(v), s) == 0;
}

static bool same_int(json_t *g, const char *name, long long v)
{
	json_t *j = json_object_get(g, name);
	return json_is_integer(j) && (long long)json_integer_value(j) == v;
}

/* the payload as libjwt reads it: decoded, then parsed as a C string (a NUL ends it; the
 * signature still covers every byte) */
static json_t *claims_of(const unsigned char *payload, size_t plen)
{
	return json_loadb((const char *)payload, strnlen((const char *)payload, plen), 0, NULL);
}

/* what the fixed verifier let through, against the payload it came from */
static void check_accepted(const struct authz_claims *c, const unsigned char *payload, size_t plen)
{
	check(strcmp(c->alg, AUTHZ_ALG) == 0 && strcmp(c->aud, AUTHZ_AUDIENCE) == 0);
	check(c->sub > 0 && c->jti[0] && (!strcmp(c->role, "user") || !strcmp(c->role, "admin")));
	check(c->exp && c->iat && FUZZ_NOW - FUZZ_SKEW <= c->exp && c->iat <= FUZZ_NOW + FUZZ_SKEW);
	check(!c->has_nbf || c->nbf <= FUZZ_NOW + FUZZ_SKEW);
	json_t *g = claims_of(payload, plen);
	check(g != NULL);
	char sub[24];
	snprintf(sub, sizeof(sub), "%lld", c->sub);
	check(same_string(g, "sub", sub) && same_string(g, "role", c->role));
	check(same_string(g, "aud", c->aud) && same_string(g, "jti", c->jti));
	check(same_int(g, "exp", c->exp) && same_int(g, "iat", c->iat));
	check(!c->has_nbf || same_int(g, "nbf", c->nbf));
	json_decref(g);
}

/* sub as the naive verifier read it: 0, or the payload's canonical digits */
static void check_naive_sub(const struct authz_claims *c, const unsigned char *payload, size_t plen)
{
	if (c->sub == 0)
		return;
	json_t *g = claims_of(payload, plen);
	char sub[24];
	snprintf(sub, sizeof(sub), "%lld", c->sub);
	check(c->sub > 0 && g && same_string(g, "sub", sub));
	json_decref(g);
}

/* Both verifiers on token. Returns whether the fixed one accepted. */
static bool verify(const char *token, const unsigned char *payload, size_t plen)
{
	struct authz_claims c;
	char why[256] = "";
	int fixed = az_verify_fixed(&keys, token, FUZZ_NOW, FUZZ_SKEW, &c, why, sizeof(why));
	check(fixed == 0 || (fixed == -1 && why[0]));
	if (fixed == 0 && payload)
		check_accepted(&c, payload, plen);
	why[0] = '\0';
	int naive = az_verify_naive(&keys, token, &c, why, sizeof(why));
	check(naive == 0 || (naive == -1 && why[0]));
	if (naive == 0 && payload)
		check_naive_sub(&c, payload, plen);
	return fixed == 0;
}

/* token through the Authorization header, as a request brings it */
static bool verify_as_header(const char *token, const unsigned char *payload, size_t plen)
{
	size_t n = strlen(token);
	char *auth = malloc(n + 8);
	check(auth != NULL);
	memcpy(auth, "Bearer ", 7);
	memcpy(auth + 7, token, n + 1);
	const char *t = NULL;
	int got = authz_parse_bearer(auth, &t);
	bool ok = false;
	if (got == 1) {
		check(strcmp(t, token) == 0);
		ok = verify(t, payload, plen);
	} else {
		check(got == -1 && t == NULL && n >= MAX_TOKEN);
	}
	free(auth);
	return ok;
}

static void header_mode(const uint8_t *data, size_t size)
{
	char *auth = strndup((const char *)data, size);
	check(auth != NULL);
	const char *t = NULL;
	int got = authz_parse_bearer(auth, &t);
	check(got >= -1 && got <= 1 && (got == 1) == (t != NULL));
	if (got == 1) {
		check(strncasecmp(auth, "Bearer ", 7) == 0 && t > auth && t < auth + strlen(auth) + 1);
		check(strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=") ==
		      strlen(t));
		/* nothing the fuzzer writes is signed with the private key */
		check(!verify(t, NULL, 0));
	}
	free(auth);
}

static void signed_mode(const char *header, size_t hlen, const uint8_t *payload, size_t plen)
{
	char *t = token_of(header, hlen, payload, plen, SIG_RS256);
	verify_as_header(t, payload, plen);
	if (plen) {
		/* one byte of the payload changed, the genuine token's signature kept: refused */
		unsigned char *p = malloc(plen);
		check(p != NULL);
		memcpy(p, payload, plen);
		p[(payload[0] + plen) % plen] ^= 0x20;
		char *bad = token_of(header, hlen, p, plen, SIG_NONE); /* "h.p." with room for a signature */
		strcpy(strrchr(bad, '.'), strrchr(t, '.'));
		check(!verify(bad, NULL, 0));
		free(bad);
		free(p);
	}
	free(t);
	static const char HS[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
	                  NONE[] = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
	t = token_of(HS, sizeof(HS) - 1, payload, plen, SIG_HS256_PUBLIC);
	check(!verify(t, payload, plen));
	free(t);
	t = token_of(NONE, sizeof(NONE) - 1, payload, plen, SIG_NONE);
	check(!verify(t, payload, plen));
	free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > PAYLOAD_MAX)
		return 0;
	static const char RS[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
	switch (data[0] % 3) {
	case 0:
		header_mode(data + 1, size - 1);
		break;
	case 1:
		signed_mode(RS, sizeof(RS) - 1, data + 1, size - 1);
		break;
	default: {
		const uint8_t *nul = memchr(data + 1, '\0', size - 1);
		if (!nul)
			return 0;
		signed_mode((const char *)data + 1, (size_t)(nul - data - 1), nul + 1,
		            size - (size_t)(nul - data) - 1);
	}
	}
	return 0;
}
