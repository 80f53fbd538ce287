/*
 * token.c — the cryptography of lab-authz, none of it hand-rolled: RSA keys from libcrypto (PEM in
 * memory, what libjwt 1.10 takes), password hashes with PKCS5_PBKDF2_HMAC and a RAND_bytes salt,
 * tokens signed and verified by libjwt, and the two verifiers the lab compares.
 *
 * What libjwt 1.10.2's jwt_decode(&jwt, token, key, len) does (libjwt/jwt.c, v1.10.2): it reads
 * "alg" from the token's own header and verifies with THAT algorithm and whatever key it was
 * given; it refuses "none" when a key is given ("If alg is NONE, there should not be a key") and
 * accepts it, unsigned, when the key is NULL; it checks no claim at all (no exp, no aud: 1.10 has
 * no jwt_valid), and has no jwt_decode_2 key provider. So:
 *   - handed the RSA public key PEM, an HS256 token is checked as HMAC-SHA256 keyed with the
 *     PEM's bytes: whoever has the public key (it is public) signs tokens it accepts;
 *   - "alg":"none" passes when the verifier, taking the header's word, has no key to give it.
 * The naive verifier is exactly that: the header picks the algorithm and so the key. The fixed one
 * pins RS256 before and after decoding, and checks exp, iat (skew allowed) and aud itself.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* 2048-bit RSA: RFC 7518 section 3.3 requires at least 2048 for RS256 */
#define RSA_BITS 2048
/* 16 bytes of salt (NIST SP 800-132 asks for at least 128 bits), 32 bytes of hash (SHA-256's) */
#define SALT_BYTES 16
#define HASH_BYTES 32
/* a JWT header is a few dozen bytes; anything this long is not one we read */
#define MAX_HEADER_B64 1024

/* ---- keys ---- */

static char *pem_of(EVP_PKEY *pkey, bool private_key, int *len)
{
	/* a private key's PEM passes through a secure-heap BIO, cleansed when freed */
	BIO *b = BIO_new(private_key ? BIO_s_secmem() : BIO_s_mem());
	char *out = NULL, *data = NULL;
	if (b && (private_key ? PEM_write_bio_PrivateKey(b, pkey, NULL, NULL, 0, NULL, NULL)
	                      : PEM_write_bio_PUBKEY(b, pkey)) == 1) {
		long n = BIO_get_mem_data(b, &data);
		if (n > 0 && (out = malloc((size_t)n + 1))) {
			memcpy(out, data, (size_t)n);
			out[n] = '\0';
			*len = (int)n;
		}
	}
	BIO_free(b);
	return out;
}

int authz_keys_new(struct authz_keys *k, char *err, size_t errlen)
{
	memset(k, 0, sizeof(*k));
	EVP_PKEY *api = EVP_RSA_gen(RSA_BITS), *attacker = EVP_RSA_gen(RSA_BITS);
	if (api && attacker) {
		k->private_pem = pem_of(api, true, &k->private_len);
		k->public_pem = pem_of(api, false, &k->public_len);
		k->attacker_pem = pem_of(attacker, true, &k->attacker_len);
	}
	EVP_PKEY_free(api);
	EVP_PKEY_free(attacker);
	if (!k->private_pem || !k->public_pem || !k->attacker_pem) {
		authz_keys_free(k);
		snprintf(err, errlen, "cannot generate the RSA keys");
		return -1;
	}
	return 0;
}

void authz_keys_free(struct authz_keys *k)
{
	if (k->private_pem)
		OPENSSL_cleanse(k->private_pem, (size_t)k->private_len);
	if (k->attacker_pem)
		OPENSSL_cleanse(k->attacker_pem, (size_t)k->attacker_len);
	free(k->private_pem);
	free(k->public_pem);
	free(k->attacker_pem);
	memset(k, 0, sizeof(*k));
}

/* ---- passwords ---- */

static void hex(const unsigned char *in, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", in[i]);
}

static int unhex(const char *in, unsigned char *out, size_t n)
{
	if (strlen(in) != 2 * n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (!isxdigit((unsigned char)in[2 * i]) || !isxdigit((unsigned char)in[2 * i + 1]) ||
		    sscanf(in + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return 0;
}

static int pbkdf2(const char *password, const unsigned char *salt, int iterations, unsigned char *out)
{
	return PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, SALT_BYTES, iterations, EVP_sha256(),
	                         HASH_BYTES, out) == 1
	               ? 0
	               : -1;
}

int az_password_hash(const char *password, int iterations, struct authz_hash *out, char *err, size_t errlen)
{
	unsigned char salt[SALT_BYTES], h[HASH_BYTES];
	if (RAND_bytes(salt, sizeof(salt)) != 1 || pbkdf2(password, salt, iterations, h) < 0) {
		snprintf(err, errlen, "cannot hash a password (libcrypto)");
		return -1;
	}
	hex(salt, sizeof(salt), out->salt);
	hex(h, sizeof(h), out->hash);
	out->iterations = iterations;
	return 0;
}

bool az_password_check(const char *password, const struct authz_hash *stored)
{
	unsigned char salt[SALT_BYTES], want[HASH_BYTES], got[HASH_BYTES];
	if (stored->iterations < 1 || unhex(stored->salt, salt, sizeof(salt)) < 0 ||
	    unhex(stored->hash, want, sizeof(want)) < 0 ||
	    pbkdf2(password, salt, stored->iterations, got) < 0)
		return false;
	return CRYPTO_memcmp(got, want, sizeof(got)) == 0;
}

/* ---- signing ---- */

int az_new_jti(char out[48], char *err, size_t errlen)
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof(b)) != 1) {
		snprintf(err, errlen, "RAND_bytes failed");
		return -1;
	}
	hex(b, sizeof(b), out);
	return 0;
}

char *az_sign(jwt_alg_t alg, const char *key, int keylen, const struct authz_claims *c, char *err,
              size_t errlen)
{
	jwt_t *jwt = NULL;
	char sub[24], *out = NULL;
	snprintf(sub, sizeof(sub), "%lld", c->sub); /* RFC 7519 4.1.2: sub is a string */
	if (jwt_new(&jwt) == 0 && jwt_add_grant(jwt, "sub", sub) == 0 &&
	    jwt_add_grant(jwt, "role", c->role) == 0 && jwt_add_grant(jwt, "aud", c->aud) == 0 &&
	    jwt_add_grant_int(jwt, "iat", (long)c->iat) == 0 &&
	    jwt_add_grant_int(jwt, "exp", (long)c->exp) == 0 && jwt_add_grant(jwt, "jti", c->jti) == 0 &&
	    jwt_set_alg(jwt, alg, alg == JWT_ALG_NONE ? NULL : (const unsigned char *)key,
	                alg == JWT_ALG_NONE ? 0 : keylen) == 0)
		out = jwt_encode_str(jwt);
	jwt_free(jwt);
	if (!out)
		snprintf(err, errlen, "libjwt could not sign a %s token", jwt_alg_str(alg));
	return out;
}

/* ---- verifying ---- */

/*
 * The "alg" of the token's header, read without verifying anything (the header is base64url JSON),
 * into alg (cut to len - 1). -1 when the token has no readable header. Reading is not verifying:
 * what a verifier does with this is the whole difference between the two below.
 */
int az_header_alg(const char *token, char *alg, size_t len)
{
	const char *dot = strchr(token, '.');
	size_t n = dot ? (size_t)(dot - token) : 0;
	if (n == 0 || n > MAX_HEADER_B64)
		return -1;
	char b64[MAX_HEADER_B64 + 4];
	for (size_t i = 0; i < n; i++)
		b64[i] = token[i] == '-' ? '+' : token[i] == '_' ? '/' : token[i];
	size_t pad = (4 - n % 4) % 4;
	memset(b64 + n, '=', pad);
	unsigned char raw[MAX_HEADER_B64];
	int m = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)(n + pad));
	if (m < 0 || (size_t)m < pad)
		return -1;
	json_t *h = json_loadb((const char *)raw, (size_t)m - pad, 0, NULL);
	const char *a = json_string_value(json_object_get(h, "alg"));
	if (a)
		snprintf(alg, len, "%s", a);
	json_decref(h);
	return a ? 0 : -1;
}

/*
 * A string claim into out, whole or not at all: one that does not fit (or holds a NUL) stays
 * empty, which the fixed verifier refuses, never cut to a prefix: a jti cut to 47 characters
 * would be another token's jti on the deny-list.
 */
static void str_claim(const json_t *g, const char *name, char *out, size_t len)
{
	const json_t *v = json_object_get(g, name);
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	out[0] = '\0';
	if (s && n < len && strlen(s) == n)
		memcpy(out, s, n + 1);
}

/* The claims of a decoded token, whatever their types (a missing or mistyped one stays empty). */
static void read_claims(jwt_t *jwt, struct authz_claims *c)
{
	char *text = jwt_get_grants_json(jwt, NULL);
	json_t *g = text ? json_loads(text, 0, NULL) : NULL;
	free(text);
	/* sub: a user id as the API writes it, digits without a leading zero, at most 18 of them (no
	 * overflow, no sign, no "007" aliasing 7); anything else stays 0, which the fixed verifier refuses */
	const char *sub = json_string_value(json_object_get(g, "sub"));
	if (sub && sub[0] >= '1' && sub[0] <= '9' && strlen(sub) <= 18 &&
	    strspn(sub, "0123456789") == strlen(sub))
		c->sub = strtoll(sub, NULL, 10);
	str_claim(g, "role", c->role, sizeof(c->role));
	str_claim(g, "aud", c->aud, sizeof(c->aud));
	str_claim(g, "jti", c->jti, sizeof(c->jti));
	json_t *iat = json_object_get(g, "iat"), *exp = json_object_get(g, "exp"),
	       *nbf = json_object_get(g, "nbf");
	c->iat = json_is_integer(iat) ? (long long)json_integer_value(iat) : 0;
	c->exp = json_is_integer(exp) ? (long long)json_integer_value(exp) : 0;
	/* nbf is optional; when present and not an integer it is unreadable, which the verifier refuses */
	c->has_nbf = nbf != NULL;
	c->nbf = json_is_integer(nbf) ? (long long)json_integer_value(nbf) : LLONG_MAX;
	json_decref(g);
}

/* alg as it may be quoted in a WWW-Authenticate error_description: letters and digits only */
static const char *printable_alg(const char *alg)
{
	size_t n = strlen(alg);
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)alg[i]))
			return "(unreadable)";
	return n && n < 12 ? alg : "(unreadable)";
}

int az_verify_naive(const struct authz_keys *k, const char *token, struct authz_claims *out, char *why,
                    size_t whylen)
{
	memset(out, 0, sizeof(*out));
	if (az_header_alg(token, out->alg, sizeof(out->alg)) < 0) {
		snprintf(why, whylen, "not a JWT");
		return -1;
	}
	/* the bug: the token says how it was signed, and the verifier obliges; "none" has no key */
	bool none = strcmp(out->alg, "none") == 0;
	jwt_t *jwt = NULL;
	int rc = jwt_decode(&jwt, token, none ? NULL : (const unsigned char *)k->public_pem,
	                    none ? 0 : k->public_len);
	if (rc != 0) {
		snprintf(why, whylen, "libjwt refused it (%s)", strerror(rc));
		return -1;
	}
	read_claims(jwt, out); /* and believes them: no exp, no aud */
	jwt_free(jwt);
	return 0;
}

int az_verify_fixed(const struct authz_keys *k, const char *token, long long now, int skew_s,
                    struct authz_claims *out, char *why, size_t whylen)
{
	memset(out, 0, sizeof(*out));
	if (az_header_alg(token, out->alg, sizeof(out->alg)) < 0) {
		snprintf(why, whylen, "not a JWT");
		return -1;
	}
	/* the pin, before any verification runs: one algorithm, one key (RFC 8725 section 3.1) */
	if (strcmp(out->alg, AUTHZ_ALG) != 0) {
		snprintf(why, whylen, "alg %s not accepted, only " AUTHZ_ALG, printable_alg(out->alg));
		return -1;
	}
	jwt_t *jwt = NULL;
	if (jwt_decode(&jwt, token, (const unsigned char *)k->public_pem, k->public_len) != 0) {
		snprintf(why, whylen, "signature does not verify");
		return -1;
	}
	/* and after: the algorithm libjwt actually verified with */
	jwt_alg_t used = jwt_get_alg(jwt);
	read_claims(jwt, out);
	jwt_free(jwt);
	if (used != JWT_ALG_RS256)
		snprintf(why, whylen, "alg %s not accepted, only " AUTHZ_ALG, jwt_alg_str(used));
	else if (!out->exp || !out->iat)
		snprintf(why, whylen, "exp and iat are required");
	/* the clock comparisons move the skew to the side of now, so no claim's value can overflow */
	else if (now - skew_s > out->exp)
		snprintf(why, whylen, "token expired %llds ago", now - out->exp);
	else if (now + skew_s < out->iat)
		snprintf(why, whylen, "token issued in the future");
	else if (out->has_nbf && now + skew_s < out->nbf)
		snprintf(why, whylen, "token not valid yet (nbf)");
	else if (strcmp(out->aud, AUTHZ_AUDIENCE) != 0)
		snprintf(why, whylen, "token is for another audience");
	else if (out->sub <= 0 || !out->jti[0] || (strcmp(out->role, "user") && strcmp(out->role, "admin")))
		snprintf(why, whylen, "sub, role or jti missing");
	else
		return 0;
	return -1;
}
