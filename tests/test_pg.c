/*
 * test_pg.c — the parts of common/pg.h that need no server: where a PostgreSQL URL points, and how
 * it is shown without its password.
 * needs: nothing (pure: no server is contacted; "localhost" resolves from /etc/hosts)
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "pg.h"

static void test_endpoint_of_a_url_or_conninfo_is_its_numeric_host_and_port(void **state)
{
	(void)state;
	static const struct {
		const char *url;
		const char *host;
		int port;
	} cases[] = {
	        {"postgres://lab:secret@127.0.0.1:55432/lab", "127.0.0.1", 55432},
	        {"postgresql://lab@127.0.0.1/lab", "127.0.0.1", 5432}, /* libpq's default port */
	        {"postgres://lab@localhost:6000/lab", "127.0.0.1", 6000},
	        {"host=127.0.0.2 port=7000 dbname=lab user=lab", "127.0.0.2", 7000},
	        /* hostaddr wins over host: the name is never looked up */
	        {"postgres://db.invalid:5433/lab?hostaddr=127.0.0.3", "127.0.0.3", 5433},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char host[64] = "", err[256] = "";
		int port = -1;
		if (pg_url_endpoint(cases[i].url, host, sizeof(host), &port, err, sizeof(err)) != 0)
			fail_msg("case %zu: %s", i, err);
		assert_string_equal(host, cases[i].host);
		assert_int_equal(port, cases[i].port);
	}
}

static void
test_endpoint_refuses_sockets_several_hosts_and_bad_ports_without_quoting_the_password(void **state)
{
	(void)state;
	static const struct {
		const char *url;
		const char *says; /* what the one line must name */
	} cases[] = {
	        {"postgres://lab:secret@%2Fvar%2Frun%2Fpostgresql/lab", "unix socket"},
	        {"postgres:///lab?password=secret", "unix socket"}, /* no host: libpq's unix socket */
	        {"host=/tmp dbname=lab password=secret", "unix socket"},
	        {"postgres://lab:secret@127.0.0.1:5432,127.0.0.2:5432/lab", "several hosts"},
	        {"postgres://lab:secret@127.0.0.1:99999/lab", "99999"},
	        {"host=127.0.0.1 port=5x password=secret", "\"5x\""},
	        {"postgres://lab:secret@[::1/lab", "cannot parse"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char host[64] = "", err[256] = "";
		int port = -1;
		assert_int_equal(pg_url_endpoint(cases[i].url, host, sizeof(host), &port, err, sizeof(err)),
		                 -1);
		if (!strstr(err, cases[i].says))
			fail_msg("case %zu: \"%s\" does not say %s", i, err, cases[i].says);
		assert_null(strstr(err, "secret"));
		assert_null(strchr(err, '\n'));
	}
}

static void test_endpoint_host_that_does_not_fit_is_an_error(void **state)
{
	(void)state;
	char host[8] = "", err[256] = "";
	int port = -1;
	/* "127.0.0.1" and its NUL need 10 bytes */
	assert_int_equal(
	        pg_url_endpoint("postgres://127.0.0.1:5432/lab", host, sizeof(host), &port, err, sizeof(err)),
	        -1);
	assert_non_null(strstr(err, "does not fit"));
}

static void test_message_line_cuts_on_a_character_boundary_never_inside_one(void **state)
{
	(void)state;
	/* "é" is 2 bytes, "€" 3, "😀" 4: an out too small for the next one stops before it */
	const char *msg = "ERROR:  caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\n\tDETAIL: x";
	char out[64];
	pg_message_line(out, sizeof(out), msg);
	assert_string_equal(out, "ERROR: caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 DETAIL: x");
	for (size_t len = 1; len <= strlen(out) + 1; len++) {
		char cut[64];
		memset(cut, 'z', sizeof(cut));
		pg_message_line(cut, len, msg);
		size_t n = strlen(cut);
		assert_true(n < len);
		assert_memory_equal(cut, out, n); /* a prefix of the whole line ... */
		/* ... that ends on a boundary: the next byte of the whole line starts a character */
		unsigned char next = (unsigned char)out[n];
		assert_false(next >= 0x80 && next < 0xC0);
	}
	/* the 4-byte character needs 4 bytes of room: with 3 left, none of it is copied */
	char small[sizeof("ERROR: caf\xc3\xa9 \xe2\x82\xac ") + 3];
	pg_message_line(small, sizeof(small), msg);
	assert_string_equal(small, "ERROR: caf\xc3\xa9 \xe2\x82\xac");
}

static void test_message_line_keeps_a_stray_byte_from_swallowing_the_newline(void **state)
{
	(void)state;
	/* Latin-1 "é" (0xE9) reads as the lead of a 3-byte character: the newline after it stays a
	 * separator, not a continuation */
	char out[64];
	pg_message_line(out, sizeof(out), "caf\xe9\n\tDETAIL: x");
	assert_string_equal(out, "caf\xe9 DETAIL: x");
}

static void test_message_line_of_nothing_is_unknown_error(void **state)
{
	(void)state;
	char out[32];
	pg_message_line(out, sizeof(out), NULL);
	assert_string_equal(out, "unknown error");
	pg_message_line(out, sizeof(out), "\n\t \n");
	assert_string_equal(out, "");
}

static void test_redact_drops_the_password_and_writes_a_url_that_reads_back_the_same(void **state)
{
	(void)state;
	static const struct {
		const char *url, *shown;
	} cases[] = {
	        {"postgres://lab:secret@127.0.0.1:55432/lab", "postgres://lab@127.0.0.1:55432/lab"},
	        /* raw, "us@er" would read as user "us" at host "er" */
	        {"postgres://us%40er:pw@[::1]:5432/d%2Fb", "postgres://us%40er@[::1]:5432/d%2Fb"},
	        {"host=/tmp port=5433 user=x dbname=y password=z", "postgres://x@%2Ftmp:5433/y"},
	        {"postgresql://%2Fvar%2Frun/lab?user=u&password=p", "postgres://u@%2Fvar%2Frun/lab"},
	        /* one port for several hosts is each host's */
	        {"host=a,b port=5432 dbname=q", "postgres://a:5432,b:5432/q"},
	        {"postgres://a:1,b:2/db", "postgres://a:1,b:2/db"},
	        /* no host is libpq's default (a Unix socket), not "localhost" */
	        {"postgres:///lab", "postgres:///lab"},
	        {"hostaddr=10.0.0.1 port=5", "postgres://10.0.0.1:5/"},
	        {"host='unterminated", "(unparsable URL)"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[128];
		pg_url_redact(cases[i].url, out, sizeof(out));
		if (strcmp(out, cases[i].shown))
			fail_msg("%s: shown as %s, not %s", cases[i].url, out, cases[i].shown);
	}
	char small[24];
	pg_url_redact("postgres://a-rather-long-user@127.0.0.1:55432/lab", small, sizeof(small));
	assert_string_equal(small, "(URL too long to show)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_endpoint_of_a_url_or_conninfo_is_its_numeric_host_and_port),
	        cmocka_unit_test(
	                test_endpoint_refuses_sockets_several_hosts_and_bad_ports_without_quoting_the_password),
	        cmocka_unit_test(test_endpoint_host_that_does_not_fit_is_an_error),
	        cmocka_unit_test(test_message_line_cuts_on_a_character_boundary_never_inside_one),
	        cmocka_unit_test(test_message_line_keeps_a_stray_byte_from_swallowing_the_newline),
	        cmocka_unit_test(test_message_line_of_nothing_is_unknown_error),
	        cmocka_unit_test(test_redact_drops_the_password_and_writes_a_url_that_reads_back_the_same),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
