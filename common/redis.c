/*
 * redis.c — hiredis from a redis:// URL. The URL is split by libevent's evhttp_uri_parse;
 * user and password are percent-decoded, so a password may hold '@' or ':' as %40 and %3A.
 */
#include "redis.h"

#include <event2/http.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

/* 6379 when the URL names no port: the port every Redis client assumes. */
#define REDIS_PORT_WHEN_UNSET 6379
/* 500 keys per SCAN: few round trips, yet a DEL never holds the server long. */
#define DEL_BATCH "500"

const char *redis_url_default(void)
{
	const char *url = getenv("LAB_REDIS_URL");
	return url && *url ? url : REDIS_DEFAULT_URL;
}

/* Copies msg into err as one line. */
static void set_err(char *err, size_t errlen, const char *msg, size_t msglen)
{
	if (!err || errlen == 0)
		return;
	if (!msg || msglen == 0) {
		msg = "unknown error";
		msglen = strlen(msg);
	}
	if (msglen > errlen - 1)
		msglen = errlen - 1;
	memcpy(err, msg, msglen);
	err[msglen] = '\0';
	for (char *p = err; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
}

static void set_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_errf(char *err, size_t errlen, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	set_err(err, errlen, msg, strlen(msg));
}

void redis_url_free(struct redis_url *u)
{
	free(u->host);
	free(u->user);
	free(u->password);
	memset(u, 0, sizeof(*u));
}

/* "/3" -> 3; "" and "/" -> 0; -1 for anything else. */
static int parse_db(const char *path)
{
	if (!path || !*path || !strcmp(path, "/"))
		return 0;
	if (path[0] != '/' || !path[1] || strlen(path + 1) > 9)
		return -1;
	long db = 0;
	for (const char *p = path + 1; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		db = db * 10 + (*p - '0');
	}
	return db <= INT_MAX ? (int)db : -1;
}

/* Fills u from url. -1 and err (which never repeats the URL: it may hold a password). */
int redis_url_parse(const char *url, struct redis_url *u, char *err, size_t errlen)
{
	int ret = -1;
	struct evhttp_uri *uri = NULL;
	memset(u, 0, sizeof(*u));

	uri = url ? evhttp_uri_parse(url) : NULL;
	const char *scheme = uri ? evhttp_uri_get_scheme(uri) : NULL;
	const char *host = uri ? evhttp_uri_get_host(uri) : NULL;
	if (!scheme || strcasecmp(scheme, "redis") != 0 || !host || !*host) {
		set_errf(err, errlen, "not a Redis URL: expected redis://[[user]:password@]host[:port][/db]");
		goto err;
	}
	size_t hlen = strlen(host);
	if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']')
		u->host = strndup(host + 1, hlen - 2);
	else
		u->host = strdup(host);
	if (!u->host)
		goto oom;
	u->port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : REDIS_PORT_WHEN_UNSET;
	u->db = parse_db(evhttp_uri_get_path(uri));
	if (u->db < 0) {
		set_errf(err, errlen, "bad database in Redis URL: expected /N after the host, e.g. /0");
		goto err;
	}

	const char *userinfo = evhttp_uri_get_userinfo(uri);
	if (userinfo && *userinfo) {
		const char *colon = strchr(userinfo, ':');
		size_t ulen = colon ? (size_t)(colon - userinfo) : strlen(userinfo);
		if (ulen > 0) {
			char *raw = strndup(userinfo, ulen);
			if (!raw)
				goto oom;
			size_t n = 0;
			u->user = evhttp_uridecode(raw, 0, &n);
			free(raw);
			if (!u->user)
				goto oom;
			if (n != strlen(u->user))
				goto nul;
		}
		if (colon && colon[1]) {
			size_t n = 0;
			u->password = evhttp_uridecode(colon + 1, 0, &n);
			if (!u->password)
				goto oom;
			if (n != strlen(u->password))
				goto nul;
		}
	}
	ret = 0;
	goto done;
nul:
	/* "%00" decodes to a NUL, where a C string (and so the AUTH sent) would end: the server
	 * would get a shorter user or password than the one written */
	set_errf(err, errlen, "not a Redis URL: %%00 (a NUL byte) in the user or password");
	goto err;
oom:
	set_errf(err, errlen, "out of memory");
err:
	redis_url_free(u);
done:
	if (uri)
		evhttp_uri_free(uri);
	return ret;
}

void redis_url_redact(const char *url, char *out, size_t outlen)
{
	struct redis_url u;
	if (!out || outlen == 0)
		return;
	if (redis_url_parse(url, &u, NULL, 0) < 0) {
		snprintf(out, outlen, "(unparsable URL)");
		return;
	}
	bool v6 = strchr(u.host, ':') != NULL;
	/* the user percent-encoded again, as the parse decoded it: "p%40x" printed as "p@x" would
	 * read as user "p" at host "x" (and not parse back) */
	char *user = u.user ? evhttp_uriencode(u.user, -1, 0) : NULL;
	if (u.user && !user)
		snprintf(out, outlen, "(out of memory)");
	else
		snprintf(out, outlen, "redis://%s%s%s%s%s:%d/%d", user ? user : "", user ? "@" : "",
		         v6 ? "[" : "", u.host, v6 ? "]" : "", u.port, u.db);
	free(user);
	redis_url_free(&u);
}

int redis_url_with_endpoint(const char *url, const char *host, int port, char *out, size_t outlen, char *err,
                            size_t errlen)
{
	struct redis_url u;
	if (redis_url_parse(url, &u, err, errlen) < 0)
		return -1;
	int ret = -1;
	/* user and password go back into the userinfo percent-encoded, as the parse decoded them */
	char *user = u.user ? evhttp_uriencode(u.user, -1, 0) : NULL;
	char *pass = u.password ? evhttp_uriencode(u.password, -1, 0) : NULL;
	if ((u.user && !user) || (u.password && !pass)) {
		set_errf(err, errlen, "out of memory");
		goto out;
	}
	bool v6 = strchr(host, ':') != NULL;
	int n = snprintf(out, outlen, "redis://%s%s%s%s%s%s%s:%d/%d", user ? user : "", pass ? ":" : "",
	                 pass ? pass : "", user || pass ? "@" : "", v6 ? "[" : "", host, v6 ? "]" : "", port,
	                 u.db);
	if (n < 0 || (size_t)n >= outlen) {
		set_errf(err, errlen, "the URL does not fit in %zu bytes", outlen);
		goto out;
	}
	ret = 0;
out:
	free(user);
	free(pass);
	redis_url_free(&u);
	return ret;
}

redisContext *redis_connect_url(const char *url, int timeout_ms, char *err, size_t errlen)
{
	struct redis_url u;
	redisContext *c = NULL;
	redisReply *reply = NULL;

	if (redis_url_parse(url, &u, err, errlen) < 0)
		return NULL;
	if (timeout_ms > 0) {
		struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
		c = redisConnectWithTimeout(u.host, u.port, tv);
		/* the connect timeout covers only the connect; commands get theirs here */
		if (c && !c->err && redisSetTimeout(c, tv) != REDIS_OK) {
			set_errf(err, errlen, "cannot set the command timeout: %s", c->errstr);
			goto err;
		}
	} else {
		c = redisConnect(u.host, u.port);
	}
	if (!c) {
		set_errf(err, errlen, "out of memory");
		goto err;
	}
	if (c->err) {
		set_err(err, errlen, c->errstr, strlen(c->errstr));
		goto err;
	}
	if (u.password) {
		if (u.user)
			reply = redis_cmd(c, err, errlen, "AUTH %s %s", u.user, u.password);
		else
			reply = redis_cmd(c, err, errlen, "AUTH %s", u.password);
		if (!reply)
			goto err;
		freeReplyObject(reply);
	}
	if (u.db != 0) {
		reply = redis_cmd(c, err, errlen, "SELECT %d", u.db);
		if (!reply)
			goto err;
		freeReplyObject(reply);
	}
	redis_url_free(&u);
	return c;
err:
	if (c)
		redisFree(c);
	redis_url_free(&u);
	return NULL;
}

void redis_error_text(const redisContext *c, int saved_errno, char *out, size_t outlen)
{
	if (c->err == REDIS_ERR_EOF)
		snprintf(out, outlen, "Server closed the connection");
	else if (c->err == REDIS_ERR_IO && strlen(c->errstr) < 4)
		snprintf(out, outlen, "%s", saved_errno ? strerror(saved_errno) : "I/O error");
	else if (c->err)
		snprintf(out, outlen, "%s", c->errstr);
	else
		snprintf(out, outlen, "no reply from Redis");
}

/* Checks a reply: NULL means the connection failed; an error reply is freed. */
static redisReply *check_reply(redisContext *c, redisReply *reply, char *err, size_t errlen)
{
	if (!reply) {
		int saved_errno = errno;
		char text[256];
		redis_error_text(c, saved_errno, text, sizeof(text));
		set_err(err, errlen, text, strlen(text));
		return NULL;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		set_err(err, errlen, reply->str, reply->len);
		freeReplyObject(reply);
		return NULL;
	}
	return reply;
}

redisReply *redis_cmd(redisContext *c, char *err, size_t errlen, const char *fmt, ...)
{
	if (!c) {
		set_errf(err, errlen, "not connected to Redis");
		return NULL;
	}
	va_list ap;
	va_start(ap, fmt);
	redisReply *reply = redisvCommand(c, fmt, ap);
	va_end(ap);
	return check_reply(c, reply, err, errlen);
}

/* prefix with SCAN MATCH's glob characters escaped, then "*". NULL when out of memory. */
static char *match_pattern(const char *prefix)
{
	char *pattern = malloc(strlen(prefix) * 2 + 2);
	if (!pattern)
		return NULL;
	char *p = pattern;
	for (const char *s = prefix; *s; s++) {
		if (strchr("*?[]\\", *s))
			*p++ = '\\';
		*p++ = *s;
	}
	*p++ = '*';
	*p = '\0';
	return pattern;
}

/* DEL of one SCAN batch: keys is the array SCAN returned. */
static int del_batch(redisContext *c, const redisReply *keys, long long *deleted, char *err, size_t errlen)
{
	int ret = -1;
	size_t argc = keys->elements + 1;
	const char **argv = malloc(argc * sizeof(*argv));
	size_t *argvlen = malloc(argc * sizeof(*argvlen));
	redisReply *reply = NULL;
	if (!argv || !argvlen) {
		set_errf(err, errlen, "out of memory");
		goto err;
	}
	argv[0] = "DEL";
	argvlen[0] = 3;
	for (size_t i = 0; i < keys->elements; i++) {
		const redisReply *key = keys->element[i];
		if (key->type != REDIS_REPLY_STRING) {
			set_errf(err, errlen, "SCAN returned a key that is not a string");
			goto err;
		}
		argv[i + 1] = key->str;
		argvlen[i + 1] = key->len;
	}
	reply = check_reply(c, redisCommandArgv(c, (int)argc, argv, argvlen), err, errlen);
	if (!reply)
		goto err;
	if (reply->type != REDIS_REPLY_INTEGER) {
		set_errf(err, errlen, "DEL did not reply with a count");
		goto err;
	}
	*deleted += reply->integer;
	ret = 0;
err:
	if (reply)
		freeReplyObject(reply);
	free(argv);
	free(argvlen);
	return ret;
}

int redis_del_prefix(redisContext *c, const char *prefix, long long *deleted, char *err, size_t errlen)
{
	int ret = -1;
	long long count = 0;
	char cursor[32] = "0";
	char *pattern = NULL;
	redisReply *reply = NULL;

	/* an empty prefix matches every key, and other labs share the database */
	if (!prefix || !*prefix) {
		set_errf(err, errlen, "refusing to delete by an empty prefix: it matches every key");
		goto err;
	}
	pattern = match_pattern(prefix);
	if (!pattern) {
		set_errf(err, errlen, "out of memory");
		goto err;
	}
	do {
		reply = redis_cmd(c, err, errlen, "SCAN %s MATCH %s COUNT " DEL_BATCH, cursor, pattern);
		if (!reply)
			goto err;
		if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
		    reply->element[0]->type != REDIS_REPLY_STRING ||
		    reply->element[1]->type != REDIS_REPLY_ARRAY ||
		    reply->element[0]->len >= sizeof(cursor)) {
			set_errf(err, errlen, "SCAN replied in an unexpected shape");
			goto err;
		}
		snprintf(cursor, sizeof(cursor), "%s", reply->element[0]->str);
		if (reply->element[1]->elements > 0 &&
		    del_batch(c, reply->element[1], &count, err, errlen) < 0)
			goto err;
		freeReplyObject(reply);
		reply = NULL;
	} while (strcmp(cursor, "0") != 0);
	ret = 0;
err:
	if (reply)
		freeReplyObject(reply);
	free(pattern);
	if (deleted)
		*deleted = count;
	return ret;
}
