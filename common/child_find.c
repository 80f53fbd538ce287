/*
 * child_find.c — finding what a lab starts (child.h): a free port on 127.0.0.1, a program on PATH
 * or in the places a package puts it, and Chromium with the flags a headless, throwaway browser
 * needs. Apart from child.c, which owns the processes and directories the Ctrl-C guard cleans.
 */
#include "child.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int child_free_port(char *err, size_t errlen)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
		snprintf(err, errlen, "cannot find a free port on 127.0.0.1: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	/* closed now, bound by the child later: another process may take it in between (child.h) */
	close(fd);
	return ntohs(sin.sin_port);
}

static bool executable(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Appends fmt to err at *used, "err" staying one line. */
static void tried_add(char *err, size_t errlen, size_t *used, const char *fmt, const char *a, const char *b)
{
	if (*used >= errlen)
		return;
	int n = snprintf(err + *used, errlen - *used, fmt, a, b);
	if (n > 0)
		*used += (size_t)n;
}

int child_find_program(const char *name, const char *env_var, const char *const *fallback_dirs, char *out,
                       size_t outlen, char *err, size_t errlen)
{
	const char *env = env_var ? getenv(env_var) : NULL;
	if (env && *env) {
		if (executable(env)) {
			snprintf(out, outlen, "%s", env);
			return 0;
		}
		snprintf(err, errlen, "$%s=%s is not an executable file", env_var, env);
		return -1;
	}
	size_t used = 0;
	err[0] = '\0';
	if (env_var)
		tried_add(err, errlen, &used, "$%s unset%s", env_var, ", ");
	const char *path = getenv("PATH");
	char dirs[4096];
	snprintf(dirs, sizeof(dirs), "%s", path ? path : "");
	for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		snprintf(out, outlen, "%s/%s", d, name);
		if (executable(out))
			return 0;
	}
	tried_add(err, errlen, &used, "%s in PATH (%s)", name, path ? path : "unset");
	for (int i = 0; fallback_dirs && fallback_dirs[i]; i++) {
		snprintf(out, outlen, "%s/%s", fallback_dirs[i], name);
		if (executable(out))
			return 0;
		tried_add(err, errlen, &used, ", %s%s", out, "");
	}
	out[0] = '\0';
	return -1;
}

/* Debian's chromium, Ubuntu's chromium-browser, or a snap: where each puts the program */
static const char *const CHROMIUM_DIRS[] = {"/usr/bin", "/usr/lib/chromium", "/snap/bin", NULL};

int child_find_chromium(char *out, size_t outlen, char *err, size_t errlen)
{
	char tried[512], tried2[512];
	if (child_find_program("chromium", "LAB_CHROMIUM", CHROMIUM_DIRS, out, outlen, tried,
	                       sizeof(tried)) == 0)
		return 0;
	/* $LAB_CHROMIUM set is the only place looked at: say that, not a search that did not happen */
	const char *env = getenv("LAB_CHROMIUM");
	if (env && *env) {
		snprintf(err, errlen, "Chromium not found (%s)", tried);
		return -1;
	}
	if (child_find_program("chromium-browser", NULL, CHROMIUM_DIRS, out, outlen, tried2,
	                       sizeof(tried2)) == 0)
		return 0;
	snprintf(err, errlen, "Chromium not found (tried %s; and chromium-browser there)", tried);
	return -1;
}

static const char *const CHROMIUM_FLAGS[] = {"--headless=new",
                                             "--disable-gpu",
                                             "--no-first-run",
                                             "--no-default-browser-check",
                                             "--disable-extensions",
                                             "--disable-background-networking",
                                             "--disable-component-update",
                                             "--disable-sync",
                                             "--disable-default-apps",
                                             "--mute-audio"};

int child_start_chromium(struct child *c, const char *chromium, const char *dir, const char *const *extra,
                         const char *url, char *err, size_t errlen)
{
	char env[4][PATH_MAX + 32], profile[PATH_MAX + 32];
	snprintf(env[0], sizeof(env[0]), "HOME=%s", dir);
	snprintf(env[1], sizeof(env[1]), "TMPDIR=%s", dir);
	snprintf(env[2], sizeof(env[2]), "XDG_CONFIG_HOME=%s/config", dir);
	snprintf(env[3], sizeof(env[3]), "XDG_CACHE_HOME=%s/cache", dir);
	snprintf(profile, sizeof(profile), "--user-data-dir=%s/profile", dir);
	const char *argv[8 + sizeof(CHROMIUM_FLAGS) / sizeof(CHROMIUM_FLAGS[0]) + CHILD_CHROMIUM_EXTRA + 4] =
	        {access("/usr/bin/env", X_OK) == 0 ? "/usr/bin/env" : "/bin/env",
	         env[0],
	         env[1],
	         env[2],
	         env[3],
	         chromium};
	int n = 6;
	for (size_t i = 0; i < sizeof(CHROMIUM_FLAGS) / sizeof(CHROMIUM_FLAGS[0]); i++)
		argv[n++] = CHROMIUM_FLAGS[i];
	if (geteuid() == 0)
		argv[n++] = "--no-sandbox";
	for (int i = 0; extra && extra[i]; i++) {
		if (i == CHILD_CHROMIUM_EXTRA) {
			snprintf(err, errlen, "more than %d extra Chromium flags", CHILD_CHROMIUM_EXTRA);
			return -1;
		}
		argv[n++] = extra[i];
	}
	argv[n++] = profile;
	argv[n++] = url;
	argv[n] = NULL;
	struct child_spec spec = {.name = "chromium", .argv = argv, .dir = dir};
	return child_start(c, &spec, err, errlen);
}
