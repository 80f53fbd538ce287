/*
 * test_redis.c — redis.h against the real server of LAB_REDIS_URL: connect from a URL, checked
 * commands that turn error replies into messages, and deletion by key prefix.
 *
 * needs: redis
 *
 * Every key lives under lab:test_redis:<pid>: so runs side by side never meet, and the group
 * teardown deletes what a failed test left behind.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "redis.h"
#include "redis_async.h"

/* 1 s: the local server answers in microseconds; a refused port must not hang a test */
#define TIMEOUT_MS 1000
/* more keys than one SCAN batch of 500, so deletion has to follow the cursor */
#define MANY_KEYS 1234

static char prefix[64];
static char outside_key[80]; /* shares the prefix's characters but not the prefix */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The default URL with its database replaced by 1: same server, other keyspace. */
static void db1_url(char *url, size_t len)
{
	snprintf(url, len, "%s", redis_url_default());
	char *slash = strrchr(url, '/');
	if (!slash || slash == url || slash[-1] == '/') /* no "/db" yet: append one */
		slash = url + strlen(url);
	snprintf(slash, len - (size_t)(slash - url), "/1");
}

static int group_setup(void **state)
{
	char err[256];
	snprintf(prefix, sizeof(prefix), "lab:test_redis:%ld:", (long)getpid());
	snprintf(outside_key, sizeof(outside_key), "lab:test_redis:%ld-outside", (long)getpid());
	redisContext *c = redis_connect_url(redis_url_default(), TIMEOUT_MS, err, sizeof(err));
	if (!c) {
		char shown[256];
		redis_url_redact(redis_url_default(), shown, sizeof(shown));
		fprintf(stderr, "cannot connect to Redis at %s: %s (start it: make up)\n", shown, err);
		return -1;
	}
	*state = c;
	return 0;
}

static int group_teardown(void **state)
{
	redisContext *c = *state;
	char err[256];
	int ret = 0;
	redisReply *reply;
	if (redis_del_prefix(c, prefix, NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "cleanup of %s* failed: %s\n", prefix, err);
		ret = -1;
	}
	reply = redis_cmd(c, err, sizeof(err), "DEL %s", outside_key);
	if (reply)
		freeReplyObject(reply);
	else
		ret = -1;
	redisFree(c);

	char url[512];
	db1_url(url, sizeof(url));
	c = redis_connect_url(url, TIMEOUT_MS, err, sizeof(err));
	if (!c || redis_del_prefix(c, prefix, NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "cleanup of %s* in database 1 failed: %s\n", prefix, err);
		ret = -1;
	}
	if (c)
		redisFree(c);
	return ret;
}

static void set_key(redisContext *c, const char *key, const char *value)
{
	char err[256] = "";
	redisReply *reply = redis_cmd(c, err, sizeof(err), "SET %s %s", key, value);
	if (!reply)
		fail_msg("SET %s: %s", key, err);
	assert_int_equal(reply->type, REDIS_REPLY_STATUS);
	freeReplyObject(reply);
}

static long long exists(redisContext *c, const char *key)
{
	char err[256] = "";
	redisReply *reply = redis_cmd(c, err, sizeof(err), "EXISTS %s", key);
	if (!reply)
		fail_msg("EXISTS %s: %s", key, err);
	assert_int_equal(reply->type, REDIS_REPLY_INTEGER);
	long long n = reply->integer;
	freeReplyObject(reply);
	return n;
}

static void test_set_then_get_under_the_prefix_returns_the_value(void **state)
{
	redisContext *c = *state;
	char key[128], err[256] = "";
	snprintf(key, sizeof(key), "%sgreeting", prefix);
	set_key(c, key, "hello world");
	redisReply *reply = redis_cmd(c, err, sizeof(err), "GET %s", key);
	if (!reply)
		fail_msg("GET: %s", err);
	assert_int_equal(reply->type, REDIS_REPLY_STRING);
	assert_string_equal(reply->str, "hello world");
	freeReplyObject(reply);
	long long deleted = -1;
	assert_int_equal(redis_del_prefix(c, prefix, &deleted, err, sizeof(err)), 0);
	assert_int_equal(deleted, 1);
}

static void test_del_prefix_deletes_exactly_the_prefixed_keys_across_scan_batches(void **state)
{
	redisContext *c = *state;
	char key[128], err[256] = "";
	for (int i = 0; i < MANY_KEYS; i++) {
		snprintf(key, sizeof(key), "%sk%d", prefix, i);
		set_key(c, key, "v");
	}
	set_key(c, outside_key, "keep me");

	long long deleted = -1;
	if (redis_del_prefix(c, prefix, &deleted, err, sizeof(err)) < 0)
		fail_msg("redis_del_prefix: %s", err);
	assert_int_equal(deleted, MANY_KEYS);
	snprintf(key, sizeof(key), "%sk%d", prefix, MANY_KEYS - 1);
	assert_int_equal(exists(c, key), 0);
	assert_int_equal(exists(c, outside_key), 1);

	assert_int_equal(redis_del_prefix(c, prefix, &deleted, err, sizeof(err)), 0);
	assert_int_equal(deleted, 0);
	assert_int_equal(exists(c, outside_key), 1);

	redisReply *reply = redis_cmd(c, err, sizeof(err), "DEL %s", outside_key);
	assert_non_null(reply);
	freeReplyObject(reply);
}

static void test_del_prefix_takes_glob_characters_literally(void **state)
{
	redisContext *c = *state;
	char glob_prefix[128], inside[160], lookalike[160], err[256] = "";
	snprintf(glob_prefix, sizeof(glob_prefix), "%sa*", prefix);
	snprintf(inside, sizeof(inside), "%sa*1", prefix);
	snprintf(lookalike, sizeof(lookalike), "%sab", prefix); /* would match an unescaped a* */
	set_key(c, inside, "v");
	set_key(c, lookalike, "v");

	long long deleted = -1;
	assert_int_equal(redis_del_prefix(c, glob_prefix, &deleted, err, sizeof(err)), 0);
	assert_int_equal(deleted, 1);
	assert_int_equal(exists(c, inside), 0);
	assert_int_equal(exists(c, lookalike), 1);
	assert_int_equal(redis_del_prefix(c, prefix, NULL, err, sizeof(err)), 0);
}

static void test_del_prefix_refuses_an_empty_prefix(void **state)
{
	redisContext *c = *state;
	char err[256] = "";
	long long deleted = -1;
	assert_int_equal(redis_del_prefix(c, "", &deleted, err, sizeof(err)), -1);
	assert_int_equal(deleted, 0);
	assert_non_null(strstr(err, "empty prefix"));
}

static void test_error_reply_returns_null_with_the_servers_message(void **state)
{
	redisContext *c = *state;
	char key[128], err[256] = "";
	snprintf(key, sizeof(key), "%snot_a_number", prefix);
	set_key(c, key, "abc");
	redisReply *reply = redis_cmd(c, err, sizeof(err), "INCR %s", key);
	assert_null(reply);
	assert_string_equal(err, "ERR value is not an integer or out of range");

	/* the connection is still good after an error reply */
	reply = redis_cmd(c, err, sizeof(err), "PING");
	assert_non_null(reply);
	assert_string_equal(reply->str, "PONG");
	freeReplyObject(reply);

	reply = redis_cmd(c, err, sizeof(err), "NOSUCHCOMMAND");
	assert_null(reply);
	assert_true(strncmp(err, "ERR unknown command", strlen("ERR unknown command")) == 0);
	assert_int_equal(redis_del_prefix(c, prefix, NULL, err, sizeof(err)), 0);
}

static void test_url_db_selects_that_database(void **state)
{
	redisContext *c = *state;
	char url[512], err[256] = "", key[128];
	db1_url(url, sizeof(url));
	redisContext *db1 = redis_connect_url(url, TIMEOUT_MS, err, sizeof(err));
	if (!db1)
		fail_msg("connect to db 1: %s", err);

	snprintf(key, sizeof(key), "%sin_db1", prefix);
	set_key(db1, key, "v");
	assert_int_equal(exists(db1, key), 1);
	assert_int_equal(exists(c, key), 0);

	long long deleted = -1;
	assert_int_equal(redis_del_prefix(db1, prefix, &deleted, err, sizeof(err)), 0);
	assert_int_equal(deleted, 1);
	redisFree(db1);
}

static void test_bad_urls_fail_with_a_clear_error(void **state)
{
	(void)state;
	static const char *const bad[] = {
	        "http://127.0.0.1:56379/0",  "redis://", "not a url", "", "redis://127.0.0.1:56379/abc",
	        "redis://127.0.0.1:99999/0",
	        /* %00 would end the user or password early: AUTH with a shorter one than written */
	        "redis://us%00er:pw@127.0.0.1:56379/0", "redis://:p%00w@127.0.0.1:56379/0",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char err[256] = "";
		redisContext *c = redis_connect_url(bad[i], TIMEOUT_MS, err, sizeof(err));
		if (c) {
			redisFree(c);
			fail_msg("\"%s\" connected", bad[i]);
		}
		if (!strstr(err, "Redis URL"))
			fail_msg("\"%s\" failed with \"%s\"", bad[i], err);
	}
	char err[256] = "";
	assert_null(redis_connect_url(NULL, TIMEOUT_MS, err, sizeof(err)));
	assert_non_null(strstr(err, "Redis URL"));
}

static void test_closed_port_fails_fast_with_connection_refused(void **state)
{
	(void)state;
	char err[256] = "";
	double start = now_s();
	redisContext *c = redis_connect_url("redis://127.0.0.1:1/0", TIMEOUT_MS, err, sizeof(err));
	double took = now_s() - start;
	if (c) {
		redisFree(c);
		fail_msg("connected to port 1");
	}
	assert_non_null(strstr(err, "refused"));
	/* refused is immediate; at worst the connect timeout ends it */
	assert_true(took < TIMEOUT_MS / 1000.0 + 1.0);
}

static void test_wrong_password_fails_with_the_servers_auth_message(void **state)
{
	(void)state;
	char url[512], err[256] = "", shown[256];
	redis_url_redact(redis_url_default(), shown, sizeof(shown));
	assert_int_equal(strncmp(shown, "redis://", 8), 0);
	snprintf(url, sizeof(url), "redis://:surely-not-the-password@%s", shown + 8);
	redisContext *c = redis_connect_url(url, TIMEOUT_MS, err, sizeof(err));
	if (c) {
		redisFree(c);
		fail_msg("AUTH with a made-up password succeeded (was AUTH sent?)");
	}
	/* no password configured: "...AUTH <password> called without any password..."; else WRONGPASS */
	if (!strstr(err, "AUTH") && !strstr(err, "WRONGPASS"))
		fail_msg("unexpected error: %s", err);
}

static void pong_cb(redisAsyncContext *ac, void *reply, void *arg)
{
	(void)ac;
	redisReply *r = reply;
	*(int *)arg = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG") ? 1 : -1;
}

static void test_async_opens_ready_and_refuses_a_bad_password_or_port(void **state)
{
	(void)state;
	char err[256] = "", url[512], shown[256];
	struct event_base *base = event_base_new();
	assert_non_null(base);
	struct redis_async r;
	if (redis_async_open(&r, base, redis_url_default(), TIMEOUT_MS, err, sizeof(err)) != 0)
		fail_msg("redis_async_open: %s", err);
	assert_true(r.ready);
	assert_string_equal(r.error, "");
	int pong = 0;
	assert_int_equal(redisAsyncCommand(r.ctx, pong_cb, &pong, "PING"), REDIS_OK);
	while (!pong)
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(pong, 1);
	/* a command pending at close gets its callback with no reply, and nothing after */
	pong = 0;
	assert_int_equal(redisAsyncCommand(r.ctx, pong_cb, &pong, "PING"), REDIS_OK);
	redis_async_close(&r);
	assert_int_equal(pong, -1);
	assert_null(r.ctx);
	assert_false(r.ready);
	redis_async_close(&r); /* twice: a no-op */

	/* a wrong password: AUTH's error, not a ready connection */
	redis_url_redact(redis_url_default(), shown, sizeof(shown));
	snprintf(url, sizeof(url), "redis://:surely-not-the-password@%s", shown + 8);
	assert_int_equal(redis_async_open(&r, base, url, TIMEOUT_MS, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "AUTH failed"));
	assert_false(r.ready);
	redis_async_close(&r);
	/* nobody on the port */
	assert_int_equal(redis_async_open(&r, base, "redis://127.0.0.1:1/0", TIMEOUT_MS, err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "Redis"));
	redis_async_close(&r);
	event_base_free(base);
}

static void test_redact_drops_the_password_and_keeps_the_rest(void **state)
{
	(void)state;
	char out[256];
	redis_url_redact("redis://user:s3cret@cache.example:6380/2", out, sizeof(out));
	assert_string_equal(out, "redis://user@cache.example:6380/2");
	redis_url_redact("redis://:s3cret@127.0.0.1:56379/0", out, sizeof(out));
	assert_string_equal(out, "redis://127.0.0.1:56379/0");
	redis_url_redact("redis://:p%40ss@127.0.0.1", out, sizeof(out));
	assert_string_equal(out, "redis://127.0.0.1:6379/0");
	redis_url_redact("redis://[::1]:56379/0", out, sizeof(out));
	assert_string_equal(out, "redis://[::1]:56379/0");
	/* a user that needs encoding stays encoded: printed raw, "redis://p@sr:w0rd@cache.example"
	 * would not parse back, and reads as user "p" with a password (found by fuzz/fuzz_url.c) */
	redis_url_redact("redis://p%40sr%3Aw0rd@cache.example", out, sizeof(out));
	assert_string_equal(out, "redis://p%40sr%3Aw0rd@cache.example:6379/0");
	redis_url_redact("postgres://a:b@h/x", out, sizeof(out));
	assert_string_equal(out, "(unparsable URL)");
	redis_url_redact("redis:// nonsense", out, sizeof(out));
	assert_string_equal(out, "(unparsable URL)");
}

static void test_default_url_comes_from_lab_redis_url(void **state)
{
	(void)state;
	const char *saved = getenv("LAB_REDIS_URL");
	char *copy = saved ? strdup(saved) : NULL;
	setenv("LAB_REDIS_URL", "redis://elsewhere:1/2", 1);
	assert_string_equal(redis_url_default(), "redis://elsewhere:1/2");
	setenv("LAB_REDIS_URL", "", 1);
	assert_string_equal(redis_url_default(), REDIS_DEFAULT_URL);
	if (copy)
		setenv("LAB_REDIS_URL", copy, 1);
	else
		unsetenv("LAB_REDIS_URL");
	free(copy);
}

static void test_url_with_endpoint_keeps_user_password_and_db_and_changes_host_and_port(void **state)
{
	(void)state;
	char out[256], err[256];
	assert_int_equal(redis_url_with_endpoint("redis://ada:p%40ss%3Aw%2Frd@cache.example:6380/7",
	                                         "127.0.0.1", 41000, out, sizeof(out), err, sizeof(err)),
	                 0);
	assert_string_equal(out, "redis://ada:p%40ss%3Aw%2Frd@127.0.0.1:41000/7");
	/* what it wrote parses back to the same user, password and database */
	struct redis_url u;
	assert_int_equal(redis_url_parse(out, &u, err, sizeof(err)), 0);
	assert_string_equal(u.user, "ada");
	assert_string_equal(u.password, "p@ss:w/rd");
	assert_int_equal(u.db, 7);
	redis_url_free(&u);
	/* a password alone, no database in the URL; an IPv6 host gets its brackets */
	assert_int_equal(redis_url_with_endpoint("redis://:s3cret@127.0.0.1", "::1", 7000, out, sizeof(out),
	                                         err, sizeof(err)),
	                 0);
	assert_string_equal(out, "redis://:s3cret@[::1]:7000/0");
	/* too small, or not a Redis URL: an error that does not quote the password */
	assert_int_equal(redis_url_with_endpoint("redis://:s3cret@127.0.0.1", "127.0.0.1", 1, out, 10, err,
	                                         sizeof(err)),
	                 -1);
	assert_null(strstr(err, "s3cret"));
	assert_int_equal(redis_url_with_endpoint("http://:s3cret@h/0", "127.0.0.1", 1, out, sizeof(out), err,
	                                         sizeof(err)),
	                 -1);
	assert_null(strstr(err, "s3cret"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_url_with_endpoint_keeps_user_password_and_db_and_changes_host_and_port),
	        cmocka_unit_test(test_async_opens_ready_and_refuses_a_bad_password_or_port),
	        cmocka_unit_test(test_set_then_get_under_the_prefix_returns_the_value),
	        cmocka_unit_test(test_del_prefix_deletes_exactly_the_prefixed_keys_across_scan_batches),
	        cmocka_unit_test(test_del_prefix_takes_glob_characters_literally),
	        cmocka_unit_test(test_del_prefix_refuses_an_empty_prefix),
	        cmocka_unit_test(test_error_reply_returns_null_with_the_servers_message),
	        cmocka_unit_test(test_url_db_selects_that_database),
	        cmocka_unit_test(test_bad_urls_fail_with_a_clear_error),
	        cmocka_unit_test(test_closed_port_fails_fast_with_connection_refused),
	        cmocka_unit_test(test_wrong_password_fails_with_the_servers_auth_message),
	        cmocka_unit_test(test_redact_drops_the_password_and_keeps_the_rest),
	        cmocka_unit_test(test_default_url_comes_from_lab_redis_url),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
