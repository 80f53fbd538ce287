/*
 * test_compose — docker-compose.yml keeps DESIGN.md's promise: its containers answer where the
 * local servers do (127.0.0.1:55432 and 127.0.0.1:56379, loopback only), PostgreSQL preloads
 * pg_stat_statements, the init script makes lab an ordinary (not super) user, and the file is
 * valid Compose.
 *
 * Pure: it reads two files of the source tree and, when a Compose tool is installed
 * (docker-compose, or docker with its compose plugin), asks it to validate the file; that
 * never needs a Docker engine and starts no container. Without the tool, that one test is
 * skipped.
 *
 * Run: build/test_compose, or ctest --test-dir build -R compose.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define COMPOSE_FILE LAB_SOURCE_DIR "/docker-compose.yml"
#define INITDB_FILE  LAB_SOURCE_DIR "/scripts/docker-initdb.sql"

/* Both files are a few kilobytes; anything near this is not the file we wrote. */
#define MAX_FILE_BYTES (256 * 1024)

struct compose_files {
	char *compose; /* docker-compose.yml without its comment lines */
	char *initdb;  /* scripts/docker-initdb.sql without its comment lines */
};

/*
 * Reads the file at path into a NUL-terminated buffer, leaving out every line whose first
 * non-blank characters start a comment (comment_mark: "#" for YAML, "--" for SQL), so prose
 * about ports or settings cannot satisfy or fail an assertion. On error, prints which call
 * failed and returns NULL.
 */
static char *read_without_comments(const char *path, const char *comment_mark)
{
	char *text = NULL;
	char line[4096];
	size_t used = 0;
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		fprintf(stderr, "test_compose: fopen %s: %s\n", path, strerror(errno));
		goto err;
	}
	text = calloc(1, MAX_FILE_BYTES);
	if (text == NULL) {
		fprintf(stderr, "test_compose: out of memory\n");
		goto err;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		const char *start = line + strspn(line, " \t");
		size_t len = strlen(line);

		if (strncmp(start, comment_mark, strlen(comment_mark)) == 0)
			continue;
		if (used + len + 1 > MAX_FILE_BYTES) {
			fprintf(stderr, "test_compose: %s is larger than %d bytes\n", path, MAX_FILE_BYTES);
			goto err;
		}
		memcpy(text + used, line, len);
		used += len;
	}
	if (ferror(f)) {
		fprintf(stderr, "test_compose: reading %s failed\n", path);
		goto err;
	}
	fclose(f);
	return text;
err:
	if (f != NULL)
		fclose(f);
	free(text);
	return NULL;
}

static int files_setup(void **state)
{
	struct compose_files *files = calloc(1, sizeof *files);

	if (files == NULL)
		return -1;
	files->compose = read_without_comments(COMPOSE_FILE, "#");
	files->initdb = read_without_comments(INITDB_FILE, "--");
	*state = files;
	/* Non-zero fails the whole group loudly: every test here reads these files. */
	return files->compose != NULL && files->initdb != NULL ? 0 : -1;
}

static int files_teardown(void **state)
{
	struct compose_files *files = *state;

	if (files != NULL) {
		free(files->compose);
		free(files->initdb);
		free(files);
	}
	return 0;
}

/* Number of times needle occurs in haystack. */
static int count_occurrences(const char *haystack, const char *needle)
{
	int n = 0;

	for (const char *p = strstr(haystack, needle); p != NULL; p = strstr(p + 1, needle))
		n++;
	return n;
}

/*
 * Checks every entry of every "ports:" list in the compose text: each must bind an address
 * of 127.0.0.1, since a bare "55432:5432" publishes the port on every interface. Returns the
 * number of entries seen, or -1 (after printing the entry) at the first one that is not
 * loopback.
 */
static int check_ports_are_loopback(const char *compose)
{
	const char *line = compose;
	int entries = 0;
	int ports_indent = -1; /* indentation of the "ports:" key we are under, or -1 */

	while (*line != '\0') {
		const char *end = strchr(line, '\n');
		size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
		int indent = (int)strspn(line, " ");
		const char *body = line + indent;
		size_t body_len = len - (size_t)indent;

		if (body_len == 0) {
			/* A blank line ends nothing in YAML. */
		} else if (ports_indent >= 0 && indent > ports_indent) {
			char entry[256];

			snprintf(entry, sizeof entry, "%.*s", (int)body_len, body);
			if (strstr(entry, "127.0.0.1:") == NULL) {
				fprintf(stderr, "test_compose: published beyond loopback: %s\n", entry);
				return -1;
			}
			entries++;
		} else {
			ports_indent = -1;
			if (body_len >= 6 && strncmp(body, "ports:", 6) == 0)
				ports_indent = indent;
		}
		line = end != NULL ? end + 1 : line + len;
	}
	return entries;
}

static void test_compose_publishes_postgres_and_redis_on_loopback_lab_ports(void **state)
{
	const struct compose_files *files = *state;

	assert_non_null(strstr(files->compose, "\"127.0.0.1:55432:5432\""));
	assert_non_null(strstr(files->compose, "\"127.0.0.1:56379:6379\""));
	/* Every mention of a lab port is that loopback binding: no second, wider one. */
	assert_int_equal(count_occurrences(files->compose, "55432"),
	                 count_occurrences(files->compose, "127.0.0.1:55432:"));
	assert_int_equal(count_occurrences(files->compose, "56379"),
	                 count_occurrences(files->compose, "127.0.0.1:56379:"));
}

static void test_compose_publishes_nothing_beyond_loopback(void **state)
{
	const struct compose_files *files = *state;

	/* Two services, one published port each. */
	assert_int_equal(check_ports_are_loopback(files->compose), 2);
}

static void test_compose_postgres_preloads_pg_stat_statements_with_healthchecks(void **state)
{
	const struct compose_files *files = *state;

	assert_non_null(strstr(files->compose, "shared_preload_libraries=pg_stat_statements"));
	assert_non_null(strstr(files->compose, "fsync=off"));
	assert_non_null(strstr(files->compose, "pg_isready"));
	assert_non_null(strstr(files->compose, "redis-cli"));
	assert_non_null(strstr(files->compose, "/docker-entrypoint-initdb.d/"));
	assert_non_null(strstr(files->compose, "scripts/docker-initdb.sql"));
}

static void test_compose_initdb_makes_lab_an_ordinary_user_who_reads_all_stats(void **state)
{
	const struct compose_files *files = *state;

	assert_non_null(strstr(files->initdb, "CREATE ROLE lab LOGIN PASSWORD 'lab'"));
	assert_non_null(strstr(files->initdb, "NOSUPERUSER"));
	/* Only as NOSUPERUSER: a superuser bypasses the connection limits a lab shows. */
	assert_int_equal(count_occurrences(files->initdb, "SUPERUSER"),
	                 count_occurrences(files->initdb, "NOSUPERUSER"));
	assert_non_null(strstr(files->initdb, "CREATE DATABASE lab OWNER lab"));
	assert_non_null(strstr(files->initdb, "GRANT pg_read_all_stats TO lab"));
	assert_non_null(strstr(files->initdb, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"));
}

/* Exit status of a shell command, or -1 when it did not exit normally. */
static int run_status(const char *command)
{
	int status = system(command);

	if (status == -1 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/* The Compose command line installed here ("docker-compose" or "docker compose"), or NULL. */
static const char *compose_tool(void)
{
	if (run_status("docker-compose version >/dev/null 2>&1") == 0)
		return "docker-compose";
	if (run_status("docker compose version >/dev/null 2>&1") == 0)
		return "docker compose";
	return NULL;
}

static void test_compose_tool_accepts_the_file(void **state)
{
	const char *tool = compose_tool();
	char command[1024];

	(void)state;
	if (tool == NULL) {
		fprintf(stderr, "test_compose: neither docker-compose nor docker compose here: "
		                "validation skipped\n");
		skip();
	}
	snprintf(command, sizeof command, "%s -f '%s' config -q", tool, COMPOSE_FILE);
	assert_int_equal(run_status(command), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_compose_publishes_postgres_and_redis_on_loopback_lab_ports),
	        cmocka_unit_test(test_compose_publishes_nothing_beyond_loopback),
	        cmocka_unit_test(test_compose_postgres_preloads_pg_stat_statements_with_healthchecks),
	        cmocka_unit_test(test_compose_initdb_makes_lab_an_ordinary_user_who_reads_all_stats),
	        cmocka_unit_test(test_compose_tool_accepts_the_file),
	};

	return cmocka_run_group_tests(tests, files_setup, files_teardown);
}
