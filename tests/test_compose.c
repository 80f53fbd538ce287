/*
 * test_compose — docker-compose.yml starts the servers the labs expect, the way scripts/labenv
 * starts them, so `docker compose up -d --wait` and `scripts/labenv up` are interchangeable.
 *
 * THE check is the Compose client's own: `docker-compose config -q` validates the file (its
 * schema, types and interpolation) without an engine and without starting a container.
 * What it cannot know is checked on its normalized output, not on the file's text: `config
 * --format json` (Compose v2), or the YAML that Compose v1 prints, read as JSON by the
 * python3-yaml that v1 itself runs on:
 *   - every published port is bound to 127.0.0.1, and they are the ports the labs connect to by
 *     default (PG_DEFAULT_URL, REDIS_DEFAULT_URL) and the ports scripts/labenv listens on;
 *   - PostgreSQL runs with the settings labenv writes into postgresql.conf (pg_stat_statements
 *     preloaded, no fsync), and scripts/docker-initdb.sql is mounted as an init script;
 *   - every service has a healthcheck, which `up --wait` waits on;
 *   - the replica set of lab-consistency (profile "replicas") publishes the ports that
 *     `scripts/labenv up --replicas` listens on (its LAB_*_PORT defaults).
 * And on scripts/docker-initdb.sql (SQL, which no Compose client reads): role lab is an
 * ordinary user, not a superuser (superusers bypass the connection limits a lab shows).
 *
 * scripts/bootstrap installs the docker-compose client (no engine). Without any Compose client
 * the checks that need it are skipped, except under CI=true: there bootstrap has run, so a
 * missing client is a failure, not a skip.
 *
 * Run: build/test_compose, or ctest --test-dir build -R compose.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>

#include "pg.h"
#include "redis.h"

#define COMPOSE_FILE LAB_SOURCE_DIR "/docker-compose.yml"
#define INITDB_FILE  LAB_SOURCE_DIR "/scripts/docker-initdb.sql"
#define LABENV_FILE  LAB_SOURCE_DIR "/scripts/labenv"

/* Compose v1 prints YAML only; the python3-yaml it depends on turns it into JSON for jansson. */
#define YAML_TO_JSON "python3 -c 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'"

struct compose {
	const char *tool; /* "docker-compose", "docker compose", or NULL: none here */
	json_t *config;   /* the normalized configuration, NULL when it could not be had */
	char *labenv;     /* scripts/labenv */
	char *initdb;     /* scripts/docker-initdb.sql without its comment lines */
};

/*
 * Runs command through /bin/sh and returns its exit status (-1 when it did not exit), with what
 * it printed on stdout in *out (malloc'd, NUL-terminated; the caller frees it).
 */
static int run_capture(const char *command, char **out)
{
	size_t len = 0, cap = 4096, n;
	char *buf = malloc(cap);
	FILE *p = popen(command, "r");

	assert_non_null(buf);
	assert_non_null(p);
	while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
		len += n;
		if (cap - len - 1 == 0) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
	}
	buf[len] = '\0';
	*out = buf;
	int status = pclose(p);
	return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Reads the file at path; with comment_mark, leaves out lines that start with it (after blanks). */
static char *read_file(const char *path, const char *comment_mark)
{
	char line[4096];
	size_t used = 0, cap = 64 * 1024;
	char *text = calloc(1, cap);
	FILE *f = fopen(path, "r");

	if (f == NULL || text == NULL) {
		fprintf(stderr, "test_compose: cannot read %s\n", path);
		free(text);
		if (f != NULL)
			fclose(f);
		return NULL;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		size_t len = strlen(line);
		if (comment_mark && !strncmp(line + strspn(line, " \t"), comment_mark, strlen(comment_mark)))
			continue;
		if (used + len + 1 > cap)
			break; /* a few kilobytes each: this is not the file we wrote, and a check will say so
			        */
		memcpy(text + used, line, len);
		used += len;
	}
	fclose(f);
	return text;
}

/* v's text, or "" when v is not a JSON string. */
static const char *text_of(const json_t *v)
{
	return json_is_string(v) ? json_string_value(v) : "";
}

/* The Compose client installed here, or NULL. */
static const char *compose_tool(void)
{
	char *out;
	const char *tools[] = {"docker-compose", "docker compose"};
	for (size_t i = 0; i < sizeof tools / sizeof tools[0]; i++) {
		char command[128];
		snprintf(command, sizeof command, "%s version 2>/dev/null", tools[i]);
		int status = run_capture(command, &out);
		free(out);
		if (status == 0)
			return tools[i];
	}
	return NULL;
}

/* Parses text as the normalized configuration: a JSON object with a "services" object. */
static json_t *config_parse(const char *text)
{
	json_t *config = json_loads(text, JSON_DECODE_ANY, NULL);
	if (json_is_object(config) && json_is_object(json_object_get(config, "services")))
		return config;
	json_decref(config);
	return NULL;
}

/* `config --format json` where the client has it (v2); else v1's YAML through python3-yaml. */
static json_t *config_load(const char *tool)
{
	char command[1024], *out;
	snprintf(command, sizeof command, "%s -f '%s' config --format json 2>/dev/null", tool, COMPOSE_FILE);
	int status = run_capture(command, &out);
	/* v1 answers an unknown --format with its usage, and exit status 0: the parse tells */
	json_t *config = status == 0 ? config_parse(out) : NULL;
	free(out);
	if (config != NULL)
		return config;
	snprintf(command, sizeof command, "out=$(%s -f '%s' config) && printf '%%s\\n' \"$out\" | %s", tool,
	         COMPOSE_FILE, YAML_TO_JSON);
	status = run_capture(command, &out);
	config = status == 0 ? config_parse(out) : NULL;
	free(out);
	return config;
}

static int setup(void **state)
{
	struct compose *c = calloc(1, sizeof *c);
	if (c == NULL)
		return -1;
	*state = c;
	c->labenv = read_file(LABENV_FILE, NULL);
	c->initdb = read_file(INITDB_FILE, "--");
	c->tool = compose_tool();
	if (c->tool != NULL)
		c->config = config_load(c->tool);
	return c->labenv != NULL && c->initdb != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	struct compose *c = *state;
	if (c != NULL) {
		json_decref(c->config);
		free(c->labenv);
		free(c->initdb);
		free(c);
	}
	return 0;
}

/* Skips the calling test when there is no Compose client, and fails it under CI=true. */
static void need_client(const struct compose *c)
{
	if (c->tool != NULL)
		return;
	const char *ci = getenv("CI");
	if (ci != NULL && *ci != '\0' && strcmp(ci, "false") != 0)
		fail_msg("CI=%s and no Compose client: scripts/bootstrap installs docker-compose", ci);
	fprintf(stderr, "test_compose: no docker-compose nor docker compose here: skipped "
	                "(scripts/bootstrap installs docker-compose)\n");
	skip();
}

/* The normalized configuration of service name: the test fails when there is none. */
static json_t *service(const struct compose *c, const char *name)
{
	need_client(c);
	if (c->config == NULL)
		fail_msg(
		        "%s config: no normalized configuration (neither --format json nor YAML via python3)",
		        c->tool);
	json_t *s = json_object_get(json_object_get(c->config, "services"), name);
	if (!json_is_object(s))
		fail_msg("docker-compose.yml has no service \"%s\"", name);
	return s;
}

static void test_compose_config_accepts_the_file(void **state)
{
	const struct compose *c = *state;
	char command[1024], *out;

	need_client(c);
	snprintf(command, sizeof command, "%s -f '%s' config -q", c->tool, COMPOSE_FILE);
	assert_int_equal(run_capture(command, &out), 0);
	free(out);
}

/* The number in text right after key ("LAB_PG_PORT:-" in labenv), or -1. */
static int number_after(const char *text, const char *key)
{
	const char *p = strstr(text, key);
	return p != NULL ? atoi(p + strlen(key)) : -1;
}

/* The ports the labs connect to by default: parsed from the URLs, not retyped. */
static void lab_ports(int *pg_port, int *redis_port)
{
	char *errmsg = NULL, err[256];
	PQconninfoOption *opts = PQconninfoParse(PG_DEFAULT_URL, &errmsg);
	assert_non_null(opts);
	*pg_port = -1;
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
		if (!strcmp(o->keyword, "port") && o->val != NULL)
			*pg_port = atoi(o->val);
	PQconninfoFree(opts);
	struct redis_url u;
	assert_int_equal(redis_url_parse(REDIS_DEFAULT_URL, &u, err, sizeof err), 0);
	*redis_port = u.port;
	redis_url_free(&u);
}

/*
 * One entry of a service's normalized "ports": v1 prints "127.0.0.1:55432:5432/tcp", v2 an
 * object {"host_ip", "published" (a number or a string), "target"}. host_ip is "" when the
 * entry binds every interface; published is 0 when Compose picks it.
 */
static void port_entry(const json_t *p, char *host_ip, size_t len, int *published, int *target)
{
	*published = 0;
	snprintf(host_ip, len, "%s", "");
	if (json_is_object(p)) {
		const json_t *pub = json_object_get(p, "published");
		snprintf(host_ip, len, "%s", text_of(json_object_get(p, "host_ip")));
		*published =
		        json_is_string(pub) ? atoi(json_string_value(pub)) : (int)json_integer_value(pub);
		*target = (int)json_integer_value(json_object_get(p, "target"));
		return;
	}
	assert_true(json_is_string(p));
	char spec[256];
	snprintf(spec, sizeof spec, "%s", text_of(p));
	spec[strcspn(spec, "/")] = '\0'; /* "/tcp" */
	char *colon = strrchr(spec, ':');
	*target = atoi(colon != NULL ? colon + 1 : spec);
	if (colon == NULL)
		return;
	*colon = '\0';
	colon = strrchr(spec, ':');
	*published = atoi(colon != NULL ? colon + 1 : spec);
	if (colon != NULL) {
		*colon = '\0';
		snprintf(host_ip, len, "%s", spec);
	}
}

/* Asserts service name publishes exactly one port, host_port -> target, on 127.0.0.1 only. */
static void assert_publishes(const struct compose *c, const char *name, int host_port, int target)
{
	const json_t *ports = json_object_get(service(c, name), "ports");
	char ip[256];
	int published, to;

	if (json_array_size(ports) != 1)
		fail_msg("service %s publishes %zu ports, not 1", name, json_array_size(ports));
	port_entry(json_array_get(ports, 0), ip, sizeof ip, &published, &to);
	if (strcmp(ip, "127.0.0.1") != 0)
		fail_msg("service %s publishes port %d on \"%s\", not 127.0.0.1 only", name, published, ip);
	if (published != host_port || to != target)
		fail_msg("service %s publishes %d -> %d; the labs connect to %d -> %d", name, published, to,
		         host_port, target);
}

static void test_compose_publishes_the_labs_ports_on_loopback_only(void **state)
{
	const struct compose *c = *state;
	int pg_port, redis_port;

	lab_ports(&pg_port, &redis_port);
	/* labenv listens where the labs connect: its defaults are the URLs' ports */
	assert_int_equal(number_after(c->labenv, "LAB_PG_PORT:-"), pg_port);
	assert_int_equal(number_after(c->labenv, "LAB_REDIS_PORT:-"), redis_port);
	assert_publishes(c, "postgres", pg_port, 5432);
	assert_publishes(c, "redis", redis_port, 6379);
	/* the replica set of lab-consistency (profile "replicas"): the ports `labenv up --replicas`
	 * listens on, read from labenv's defaults */
	static const struct {
		const char *service, *labenv_key;
		int target;
	} replicas[] = {{"postgres-primary", "LAB_PG_PRIMARY_PORT:-", 5432},
	                {"postgres-replica", "LAB_PG_REPLICA_PORT:-", 5432},
	                {"redis-primary", "LAB_REDIS_PRIMARY_PORT:-", 6379},
	                {"redis-replica", "LAB_REDIS_REPLICA_PORT:-", 6379}};
	for (size_t i = 0; i < sizeof replicas / sizeof replicas[0]; i++) {
		int port = number_after(c->labenv, replicas[i].labenv_key);
		assert_true(port > 0);
		assert_publishes(c, replicas[i].service, port, replicas[i].target);
	}
	/* and no other service publishes anything */
	const char *name;
	json_t *s;
	json_object_foreach(json_object_get(c->config, "services"), name, s)
	{
		bool known = !strcmp(name, "postgres") || !strcmp(name, "redis");
		for (size_t i = 0; i < sizeof replicas / sizeof replicas[0]; i++)
			known = known || !strcmp(name, replicas[i].service);
		if (!known)
			assert_int_equal(json_array_size(json_object_get(s, "ports")), 0);
	}
}

/* True when args (a command array) holds "-c" followed by setting ("fsync=off"). */
static bool has_setting(const json_t *args, const char *setting)
{
	for (size_t i = 0; i + 1 < json_array_size(args); i++)
		if (!strcmp(text_of(json_array_get(args, i)), "-c") &&
		    !strcmp(text_of(json_array_get(args, i + 1)), setting))
			return true;
	return false;
}

/*
 * Every "key = value" line labenv appends to postgresql.conf, but where the server listens
 * (a container listens on its own port, and publishes it), is a "-c key=value" of the
 * postgres service's command. Returns the number of settings compared.
 */
static int compare_labenv_settings(const char *labenv, const json_t *command)
{
	const char *p = strstr(labenv, "postgresql.conf\" <<CONF\n");
	int compared = 0;
	assert_non_null(p);
	for (p = strchr(p, '\n') + 1; strncmp(p, "CONF\n", 5) != 0; p = strchr(p, '\n') + 1) {
		char key[64], value[128], setting[200];
		if (*p == '#' || sscanf(p, "%63[a-z_.] = %127[^\n]", key, value) != 2)
			continue;
		if (!strcmp(key, "listen_addresses") || !strcmp(key, "port") ||
		    !strcmp(key, "unix_socket_directories"))
			continue;
		char *v = value + (value[0] == '\'');
		v[strcspn(v, "'")] = '\0';
		snprintf(setting, sizeof setting, "%s=%s", key, v);
		if (!has_setting(command, setting))
			fail_msg("labenv sets %s; the postgres service's command has no \"-c %s\"", setting,
			         setting);
		compared++;
	}
	return compared;
}

static void test_compose_postgres_runs_with_labenvs_settings(void **state)
{
	const struct compose *c = *state;
	const json_t *command = json_object_get(service(c, "postgres"), "command");

	assert_true(json_is_array(command));
	/* at least pg_stat_statements, its tracking, and the durability that a lab can do without */
	assert_true(compare_labenv_settings(c->labenv, command) >= 3);
	assert_true(has_setting(command, "shared_preload_libraries=pg_stat_statements"));
}

/* Whether volume (a v1 "src:dst:mode" string or a v2 object) mounts the init script. */
static bool mounts_initdb(const json_t *volume, const char *initdb_path)
{
	char src[PATH_MAX], dst[PATH_MAX], real[PATH_MAX];
	if (json_is_object(volume)) {
		snprintf(src, sizeof src, "%s", text_of(json_object_get(volume, "source")));
		snprintf(dst, sizeof dst, "%s", text_of(json_object_get(volume, "target")));
	} else if (sscanf(text_of(volume), "%4095[^:]:%4095[^:]", src, dst) != 2) {
		return false;
	}
	return realpath(src, real) != NULL && !strcmp(real, initdb_path) &&
	       !strncmp(dst, "/docker-entrypoint-initdb.d/", strlen("/docker-entrypoint-initdb.d/"));
}

static void test_compose_postgres_runs_the_init_script(void **state)
{
	const struct compose *c = *state;
	const json_t *volumes = json_object_get(service(c, "postgres"), "volumes");
	char initdb[PATH_MAX];
	size_t i, mounted = 0;
	json_t *v;

	assert_non_null(realpath(INITDB_FILE, initdb));
	json_array_foreach(volumes, i, v) mounted += mounts_initdb(v, initdb);
	assert_int_equal(mounted, 1);
}

static void test_compose_services_have_healthchecks_for_up_wait(void **state)
{
	const struct compose *c = *state;
	const char *names[] = {"postgres",         "redis",         "postgres-primary",
	                       "postgres-replica", "redis-primary", "redis-replica"};

	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		const json_t *hc = json_object_get(service(c, names[i]), "healthcheck");
		const json_t *test = json_object_get(hc, "test");
		if (!json_is_array(test) || json_array_size(test) < 2 ||
		    json_is_true(json_object_get(hc, "disable")))
			fail_msg("service %s has no healthcheck: docker compose up --wait cannot wait on it",
			         names[i]);
	}
}

static void test_compose_initdb_makes_lab_an_ordinary_user(void **state)
{
	const struct compose *c = *state;
	const char *role = strcasestr(c->initdb, "CREATE ROLE lab ");
	char statement[512];

	assert_non_null(role);
	snprintf(statement, sizeof statement, "%.*s", (int)strcspn(role, ";"), role);
	assert_non_null(strcasestr(statement, " LOGIN"));
	assert_non_null(strcasestr(statement, " NOSUPERUSER"));
	/* and nothing grants it later: every SUPERUSER in the script is a NOSUPERUSER */
	for (const char *s = strcasestr(c->initdb, "SUPERUSER"); s != NULL;
	     s = strcasestr(s + 1, "SUPERUSER"))
		assert_true(s - c->initdb >= 2 && !strncasecmp(s - 2, "NO", 2));
	assert_non_null(strcasestr(c->initdb, "GRANT pg_read_all_stats TO lab"));
	assert_non_null(strcasestr(c->initdb, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_compose_config_accepts_the_file),
	        cmocka_unit_test(test_compose_publishes_the_labs_ports_on_loopback_only),
	        cmocka_unit_test(test_compose_postgres_runs_with_labenvs_settings),
	        cmocka_unit_test(test_compose_postgres_runs_the_init_script),
	        cmocka_unit_test(test_compose_services_have_healthchecks_for_up_wait),
	        cmocka_unit_test(test_compose_initdb_makes_lab_an_ordinary_user),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
