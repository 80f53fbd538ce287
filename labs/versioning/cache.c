/*
 * cache.c — the HTTP cache in front of the API, as production has one: nginx with proxy_cache,
 * started by the lab as its own child (common/child.h) on 127.0.0.1, every path it writes inside
 * a private temporary directory (pid, lock, logs, temp files, the cache), so nothing of the system's
 * nginx (/etc/nginx, /var/log/nginx, /var/lib/nginx) is read or touched.
 *
 * One process (master_process off): nothing forks, so PR_SET_PDEATHSIG covers all of nginx. The
 * cache key is nginx's default, $scheme$proxy_host$request_uri: the path and the query are in it,
 * the Accept header is not, unless the API's answer says Vary: Accept (nginx >= 1.7.7 then keeps
 * one variant per Accept value).
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "child.h"
#include "internal.h"

/* nginx starts in a few ms; a loaded 2-core machine running the sanitizer build may take longer */
#define CACHE_READY_MS 5000
#define CACHE_STOP_MS  2000
/* a free port taken by someone else before nginx bound it (nginx exits, or never writes its pid
 * file: child.h, ready_file): try again with another */
#define CACHE_PORT_TRIES 3

struct versioning_cache {
	struct child child;
	char dir[PATH_MAX];
	char log[PATH_MAX + 16];
	int port;
	bool has_e; /* nginx >= 1.19.5 takes -e (Debian 11 and Ubuntu 22.04 ship 1.18) */
};

/* First nginx with -e. */
#define NGINX_E_MAJOR 1
#define NGINX_E_MINOR 19
#define NGINX_E_PATCH 5

static const char *const SBIN[] = {"/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin", NULL};

int versioning_find_nginx(char *out, size_t outlen, char *err, size_t errlen)
{
	char tried[768];
	if (child_find_program("nginx", "LAB_NGINX", SBIN, out, outlen, tried, sizeof(tried)) == 0)
		return 0;
	snprintf(err, errlen,
	         "nginx not found (tried %s): install it with scripts/bootstrap (or apt-get install nginx), "
	         "or point LAB_NGINX at it",
	         tried);
	return -1;
}

void versioning_nginx_version(const char *nginx, char *out, size_t outlen)
{
	snprintf(out, outlen, "?");
	char cmd[PATH_MAX + 32], line[256];
	snprintf(cmd, sizeof(cmd), "'%s' -v 2>&1", nginx);
	FILE *p = strchr(nginx, '\'') ? NULL : popen(cmd, "r");
	if (!p)
		return;
	/* "nginx version: nginx/1.22.1" */
	while (fgets(line, sizeof(line), p)) {
		const char *v = strstr(line, "nginx/");
		if (v) {
			snprintf(out, outlen, "%.*s", (int)strcspn(v + 6, " \r\n"), v + 6);
			break;
		}
	}
	pclose(p);
}

/*
 * Whether dir can go into nginx's config as it is: letters, digits and / . _ - only. A space, a
 * ';', a '{' or a '$' (nginx expands variables in some paths) from $TMPDIR would change what the
 * config says, so such a directory is refused rather than quoted.
 */
static bool plain_path(const char *dir)
{
	for (const char *p = dir; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("/._-", *p))
			return false;
	return *dir == '/';
}

static int write_config(const struct versioning_cache *c, int api_port, int no_vary_port, char *err,
                        size_t errlen)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/nginx.conf", c->dir);
	FILE *f = fopen(path, "w");
	if (!f) {
		snprintf(err, errlen, "cannot write %s", path);
		return -1;
	}
	const char *d = c->dir;
	fprintf(f,
	        "# written by lab-versioning; nginx runs as the lab's child and dies with it\n"
	        "daemon off;\nmaster_process off;\nworker_processes 1;\n"
	        "pid %s/nginx.pid;\nlock_file %s/nginx.lock;\nerror_log %s/error.log warn;\n"
	        "events { worker_connections 256; }\n"
	        "http {\n"
	        "  log_format edge "
	        "'$http_user_agent|$request_uri|$upstream_cache_status|$sent_http_deprecation';\n"
	        "  access_log %s/access.log edge;\n"
	        "  client_body_temp_path %s/client_body;\n  proxy_temp_path %s/proxy_temp;\n"
	        "  fastcgi_temp_path %s/fastcgi_temp;\n  uwsgi_temp_path %s/uwsgi_temp;\n"
	        "  scgi_temp_path %s/scgi_temp;\n"
	        "  proxy_cache_path %s/cache levels=1:2 keys_zone=lab_versioning:1m max_size=16m "
	        "inactive=10m "
	        "use_temp_path=off;\n"
	        "  server {\n"
	        "    listen 127.0.0.1:%d;\n"
	        "    proxy_cache lab_versioning;\n"
	        "    add_header X-Cache-Status $upstream_cache_status always;\n"
	        "    location / { proxy_pass http://127.0.0.1:%d; }\n",
	        d, d, d, d, d, d, d, d, d, d, c->port, api_port);
	if (no_vary_port)
		fprintf(f, "    location /no-vary/ { proxy_pass http://127.0.0.1:%d/; }\n", no_vary_port);
	fprintf(f, "  }\n}\n");
	if (fclose(f) != 0) {
		snprintf(err, errlen, "cannot write %s", path);
		return -1;
	}
	return 0;
}

static int start_once(struct versioning_cache *c, const char *nginx, int api_port, int no_vary_port,
                      char *err, size_t errlen)
{
	c->port = child_free_port(err, errlen);
	if (c->port < 0 || write_config(c, api_port, no_vary_port, err, errlen) < 0)
		return -1;
	char conf[PATH_MAX + 16], prefix[PATH_MAX + 2], elog[PATH_MAX + 16], pid[PATH_MAX + 16];
	/* nginx writes it once its port is bound: ready means the port accepts and the pid is its own */
	snprintf(pid, sizeof(pid), "%s/nginx.pid", c->dir);
	unlink(pid);
	snprintf(conf, sizeof(conf), "%s/nginx.conf", c->dir);
	snprintf(prefix, sizeof(prefix), "%s/", c->dir);
	/* -e: the log nginx writes before it has read the config (else /var/log/nginx/error.log, which
	 * an older nginx without -e only warns about when it cannot open it) */
	snprintf(elog, sizeof(elog), "%s/error.log", c->dir);
	/* without -e, the NULL ends argv after the config */
	const char *argv[] = {nginx, "-p", prefix, "-c", conf, c->has_e ? "-e" : NULL, elog, NULL};
	struct child_spec spec = {.name = "nginx",
	                          .argv = argv,
	                          .dir = c->dir,
	                          .port = c->port,
	                          .ready_file = pid,
	                          .ready_timeout_ms = CACHE_READY_MS};
	return child_start(&c->child, &spec, err, errlen);
}

struct versioning_cache *versioning_cache_start(const char *nginx, int api_port, int no_vary_port, char *err,
                                                size_t errlen)
{
	struct versioning_cache *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (child_tmpdir("versioning", c->dir, sizeof(c->dir), err, errlen) < 0) {
		free(c);
		return NULL;
	}
	if (!plain_path(c->dir)) {
		snprintf(err, errlen,
		         "nginx's config cannot hold the directory %.200s safely (only letters, digits and "
		         "/ . _ -): set TMPDIR to a plain path",
		         c->dir);
		char rerr[64];
		child_rmtree(c->dir, rerr, sizeof(rerr));
		free(c);
		return NULL;
	}
	snprintf(c->log, sizeof(c->log), "%s/access.log", c->dir);
	char version[32];
	int major = 0, minor = 0, patch = 0;
	versioning_nginx_version(nginx, version, sizeof(version));
	if (sscanf(version, "%d.%d.%d", &major, &minor, &patch) == 3)
		c->has_e = major > NGINX_E_MAJOR || (major == NGINX_E_MAJOR && minor > NGINX_E_MINOR) ||
		           (major == NGINX_E_MAJOR && minor == NGINX_E_MINOR && patch >= NGINX_E_PATCH);
	int ret = -1;
	for (int i = 0; i < CACHE_PORT_TRIES && ret < 0; i++)
		ret = start_once(c, nginx, api_port, no_vary_port, err, errlen);
	if (ret < 0) {
		char rerr[256];
		child_rmtree(c->dir, rerr, sizeof(rerr));
		free(c);
		return NULL;
	}
	return c;
}

int versioning_cache_port(const struct versioning_cache *c)
{
	return c->port;
}

int versioning_cache_pid(const struct versioning_cache *c)
{
	return (int)c->child.pid;
}

const char *versioning_cache_log(const struct versioning_cache *c)
{
	return c->log;
}

void versioning_cache_stop(struct versioning_cache *c)
{
	if (!c)
		return;
	child_stop(&c->child, CACHE_STOP_MS);
	char err[256];
	child_rmtree(c->dir, err, sizeof(err));
	free(c);
}
