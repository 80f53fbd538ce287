/*
 * fuzz_url.c — the server URLs of common/ (LAB_PG_URL and LAB_REDIS_URL: what a person types,
 * printed in every error message): redis_url_parse, redis_url_redact, redis_url_with_endpoint
 * (redis.c) and pg_url_redact (pg.c, libpq's PQconninfoParse: URLs and key=value strings).
 * pg_url_endpoint is left out: it resolves the host name (getaddrinfo), which may ask DNS.
 *
 * The input is the URL (up to a NUL, as a C string ends). Asserted:
 *   - redis_url_parse: accepted means a host that is not empty, a port in 1..65535 and a
 *     database >= 0; refused means one of its fixed messages (never a quote of the URL);
 *   - redis_url_redact: the redacted URL parses back with no password, to the same user, host,
 *     port and database; "(unparsable URL)" for exactly the URLs redis_url_parse refuses;
 *   - redis_url_with_endpoint to 127.0.0.1:6380 and [::1]:7000: the new URL parses back to
 *     that host and port with the same user, password and database;
 *   - pg_url_redact: the redacted form parses back with no password, to the same user,
 *     database and host (the hostaddr when no host), and the same port where there is one host
 *     and one port; none of the fields read back holds the password libpq reads from the URL
 *     (user:pw@, ?password=, password=) unless another field of the URL did or it holds a ','
 *     (hosts and ports are lists joined with it); where nothing was percent-encoded, the
 *     password is not in the text either, unless it could be there by accident (part of
 *     "postgres://", or holding a separator: @ : / , [ ]); "(unparsable URL)"
 *     for exactly what libpq refuses.
 *
 * links: labcore
 */
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"
#include "redis.h"
#include "fuzz_check.h"

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static void redis_endpoint(const char *url, const struct redis_url *u, const char *host, int port)
{
	size_t outlen = strlen(url) * 3 + 128;
	char *out = malloc(outlen), err[256] = "";
	check(out != NULL);
	struct redis_url v;
	check(redis_url_with_endpoint(url, host, port, out, outlen, err, sizeof(err)) == 0);
	check(redis_url_parse(out, &v, err, sizeof(err)) == 0);
	check(!strcmp(v.host, host) && v.port == port && v.db == u->db);
	check(same_str(v.user, u->user) && same_str(v.password, u->password));
	redis_url_free(&v);
	free(out);
}

static void redis(const char *url)
{
	struct redis_url u;
	char err[256] = "";
	size_t outlen = strlen(url) * 3 + 64; /* the user percent-encoded again may grow */
	char *red = malloc(outlen);
	check(red != NULL);
	redis_url_redact(url, red, outlen);
	if (redis_url_parse(url, &u, err, sizeof(err)) < 0) {
		check(err[0] != '\0' && !strcmp(red, "(unparsable URL)"));
		/* a refusal names what is wrong in words of its own, never quoting the URL (it may
		 * hold a password): one of its fixed messages */
		check(!strncmp(err, "not a Redis URL: ", 17) ||
		      !strncmp(err, "bad database in Redis URL", 25) || !strcmp(err, "out of memory"));
		free(red);
		return;
	}
	check(u.host && u.host[0] && u.port >= 1 && u.port <= 65535 && u.db >= 0);
	struct redis_url r;
	check(redis_url_parse(red, &r, err, sizeof(err)) == 0);
	check(r.password == NULL && !strcmp(r.host, u.host) && r.port == u.port && r.db == u.db);
	check(same_str(r.user, u.user));
	redis_url_free(&r);
	redis_endpoint(url, &u, "127.0.0.1", 6380);
	redis_endpoint(url, &u, "::1", 7000);
	redis_url_free(&u);
	free(red);
}

/* libpq's value of keyword, NULL when unset or empty (as pg.c reads it) */
static const char *pg_value(const PQconninfoOption *opts, const char *keyword)
{
	for (const PQconninfoOption *o = opts; o->keyword; o++)
		if (!strcmp(o->keyword, keyword))
			return o->val && *o->val ? o->val : NULL;
	return NULL;
}

/* pw: the password when no other field of the URL holds it (else NULL: it may show by right) */
static void pg_round_trip(const PQconninfoOption *opts, const char *red, const char *pw)
{
	const char *host = pg_value(opts, "host") ? pg_value(opts, "host") : pg_value(opts, "hostaddr");
	if (!strcmp(red, "(URL too long to show)")) {
		/* one port written after each of many hosts may not fit; nothing else can't */
		check(host && strchr(host, ','));
		return;
	}
	char *perr = NULL;
	PQconninfoOption *back = PQconninfoParse(red, &perr);
	PQfreemem(perr);
	check(back != NULL);
	check(!strncmp(red, "postgres://", 11) && !pg_value(back, "password"));
	check(same_str(pg_value(back, "user"), pg_value(opts, "user")));
	check(same_str(pg_value(back, "dbname"), pg_value(opts, "dbname")));
	check(same_str(pg_value(back, "host"), host));
	const char *port = pg_value(opts, "port");
	if ((!host || !strchr(host, ',')) && (!port || !strchr(port, ',')))
		check(same_str(pg_value(back, "port"), port));
	/* read back, no field holds the password (as written, it may: "B" is in "%B5"), unless it
	 * holds the ',' lists of hosts and ports are joined with (a port per host adds some) */
	for (const PQconninfoOption *o = back; pw && !strchr(pw, ',') && o->keyword; o++)
		check(!o->val || !strstr(o->val, pw));
	PQconninfoFree(back);
}

static void pg(const char *url)
{
	/* every part percent-encoded may triple (user, host, port, database: each a part of url) */
	size_t outlen = strlen(url) * 3 + 64;
	char *red = malloc(outlen), *perr = NULL;
	check(red != NULL);
	pg_url_redact(url, red, outlen);
	PQconninfoOption *opts = PQconninfoParse(url, &perr);
	PQfreemem(perr);
	if (!opts) {
		check(!strcmp(red, "(unparsable URL)"));
		free(red);
		return;
	}
	const char *pw = NULL;
	bool in_field = false;
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (!strcmp(o->keyword, "password") && o->val && *o->val)
			pw = o->val;
	for (PQconninfoOption *o = opts; pw && o->keyword; o++)
		if (strcmp(o->keyword, "password") && o->val && strstr(o->val, pw))
			in_field = true;
	/* as written, when nothing was percent-encoded: not there unless it is part of the form */
	if (pw && !in_field && !strchr(red, '%') && red[0] != '(' && !strstr("postgres://", pw) &&
	    !strpbrk(pw, "@:/,[]"))
		check(!strstr(red, pw));
	pg_round_trip(opts, red, in_field ? NULL : pw);
	PQconninfoFree(opts);
	free(red);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *url = fuzz_text(data, size);
	if (!url)
		return 0;
	redis(url);
	pg(url);
	free(url);
	return 0;
}
