/*
 * redis.h — Redis for the labs: connect from a redis:// URL, checked commands, key prefixes.
 *
 * Errors are carried as in hiredis (c->err, c->errstr) and copied into err (errlen bytes, one
 * line) by every function here: NULL or -1 on failure. A reply of type REDIS_REPLY_ERROR is a
 * failure too, and its text is the message.
 */
#ifndef LAB_REDIS_H
#define LAB_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#define REDIS_DEFAULT_URL "redis://127.0.0.1:56379/0"

/* LAB_REDIS_URL when set and not empty, else REDIS_DEFAULT_URL. */
const char *redis_url_default(void);

/*
 * A redis:// URL taken apart by redis_url_parse. host has no IPv6 brackets; user and password
 * are percent-decoded and NULL when absent. A URL may name a user without a password
 * ("redis://user@host"): then there is nothing to AUTH with. port is 6379 when the URL has none.
 */
struct redis_url {
	char *host;
	int port;
	char *user;
	char *password;
	int db;
};

/*
 * Parses redis://[[user]:password@]host[:port][/db] with libevent's evhttp_uri_parse. 0 and *u
 * filled (free it with redis_url_free); -1 and err on anything else (no scheme, another scheme,
 * no host, a bad database), and *u then holds nothing to free.
 */
int redis_url_parse(const char *url, struct redis_url *u, char *err, size_t errlen);

/* Frees what redis_url_parse allocated in *u; zeroes it. */
void redis_url_free(struct redis_url *u);

/*
 * url with its host and port replaced (a proxy's in front of the server), its user, password
 * (percent-encoded again) and database kept, into out. -1 and err when url does not parse or the
 * result does not fit in outlen; err never quotes the URL (it may hold a password).
 */
int redis_url_with_endpoint(const char *url, const char *host, int port, char *out, size_t outlen, char *err,
                            size_t errlen);

/* url without its password ("redis://127.0.0.1:56379/0"), the user percent-encoded as in a URL;
 * "(unparsable URL)" if it is not one. */
void redis_url_redact(const char *url, char *out, size_t outlen);

/*
 * Connects to redis://[[user]:password@]host[:port][/db] (URL parsed by libevent's
 * evhttp_uri_parse), with timeout_ms for the connect and for every command after it; sends
 * AUTH when the URL has a password and SELECT when it names a database other than 0.
 * NULL and err on failure (a bad URL, a refused connection, a failed AUTH).
 */
redisContext *redis_connect_url(const char *url, int timeout_ms, char *err, size_t errlen);

/*
 * redisCommand with every check: NULL and err when the connection failed (c->err) or the reply
 * is an error reply (which is freed). The caller freeReplyObject()s a non-NULL reply.
 */
redisReply *redis_cmd(redisContext *c, char *err, size_t errlen, const char *fmt, ...);

/*
 * What hiredis said about a failed call on c, into out: c->errstr, except that hiredis 0.14.1
 * may leave an I/O error's text unwritten (GNU strerror_r), so then saved_errno, taken right
 * after the failed call, says it; EOF reads "Server closed the connection". Can't fail.
 */
void redis_error_text(const redisContext *c, int saved_errno, char *out, size_t outlen);

/* Deletes every key that starts with prefix (SCAN MATCH + DEL in batches). *deleted may be NULL. */
int redis_del_prefix(redisContext *c, const char *prefix, long long *deleted, char *err, size_t errlen);

#endif
