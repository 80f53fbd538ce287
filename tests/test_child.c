/*
 * test_child.c — common/child.h: a server program the lab starts, waits for, stops, and never
 * leaves behind. The server is nginx (scripts/bootstrap installs it; found as the labs find it:
 * $LAB_NGINX, PATH, /usr/sbin); the programs that fail are /bin/false, /bin/sleep and a path
 * that does not exist. No PostgreSQL or Redis.
 * needs: nothing
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "upstream.h"

static const char *const SBIN[] = {"/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin", NULL};

static double ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* Writes a minimal nginx config into dir that answers "hello from nginx" on port. */
static void write_nginx_conf(const char *dir, int port)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/nginx.conf", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f,
	        "daemon off;\nmaster_process off;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n"
	        "events { worker_connections 16; }\n"
	        "http {\n access_log off;\n client_body_temp_path %s/body;\n proxy_temp_path %s/proxy;\n"
	        " fastcgi_temp_path %s/fastcgi;\n uwsgi_temp_path %s/uwsgi;\n scgi_temp_path %s/scgi;\n"
	        " server { listen 127.0.0.1:%d; location / { return 200 \"hello from nginx\\n\"; } }\n}\n",
	        dir, dir, dir, dir, dir, dir, dir, port);
	fclose(f);
}

/* Whether nginx takes -e: "nginx version: nginx/1.22.1" from nginx -v, 1.19.5 or later. */
static bool nginx_has_e(const char *bin)
{
	char cmd[PATH_MAX + 32], line[256];
	int major = 0, minor = 0, patch = 0;
	snprintf(cmd, sizeof(cmd), "'%s' -v 2>&1", bin);
	FILE *p = strchr(bin, '\'') ? NULL : popen(cmd, "r");
	while (p && fgets(line, sizeof(line), p))
		if (strstr(line, "nginx/"))
			sscanf(strstr(line, "nginx/") + 6, "%d.%d.%d", &major, &minor, &patch);
	if (p)
		pclose(p);
	return major * 1000000 + minor * 1000 + patch >= 1019005;
}

struct nginx_run {
	char dir[PATH_MAX], bin[PATH_MAX], conf[PATH_MAX + 16], prefix[PATH_MAX + 2], elog[PATH_MAX + 16],
	        pidfile[PATH_MAX + 16];
	const char *argv[10];
	struct child_spec spec;
	int port;
};

static void nginx_prepare(struct nginx_run *r)
{
	char err[512];
	if (child_find_program("nginx", "LAB_NGINX", SBIN, r->bin, sizeof(r->bin), err, sizeof(err)) < 0)
		fail_msg("nginx not found (%s): scripts/bootstrap installs it (apt-get install nginx)", err);
	assert_int_equal(child_tmpdir("test-child", r->dir, sizeof(r->dir), err, sizeof(err)), 0);
	r->port = child_free_port(err, sizeof(err));
	assert_true(r->port > 0);
	write_nginx_conf(r->dir, r->port);
	snprintf(r->conf, sizeof(r->conf), "%s/nginx.conf", r->dir);
	snprintf(r->prefix, sizeof(r->prefix), "%s/", r->dir);
	snprintf(r->elog, sizeof(r->elog), "%s/error.log", r->dir);
	/* -e (the log before the config is read) exists from nginx 1.19.5; without it, the NULL ends argv */
	const char *argv[] = {r->bin,  "-p", r->prefix, "-c", r->conf, nginx_has_e(r->bin) ? "-e" : NULL,
	                      r->elog, NULL};
	memcpy(r->argv, argv, sizeof(argv));
	snprintf(r->pidfile, sizeof(r->pidfile), "%s/nginx.pid", r->dir);
	r->spec = (struct child_spec){
	        .name = "nginx", .argv = r->argv, .dir = r->dir, .port = r->port, .ready_file = r->pidfile};
}

static void test_free_port_is_bindable_on_loopback(void **state)
{
	(void)state;
	char err[256];
	int port = child_free_port(err, sizeof(err));
	assert_in_range(port, 1, 65535);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET,
	                          .sin_port = htons((uint16_t)port),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	close(fd);
}

static void test_nginx_starts_answers_stops_and_its_directory_goes(void **state)
{
	(void)state;
	struct nginx_run r;
	struct child c;
	char err[1024], resp[2048];
	nginx_prepare(&r);
	if (child_start(&c, &r.spec, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_true(c.pid > 0);
	assert_true(child_running(&c));
	const char req[] = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	assert_int_equal(http_exchange(r.port, req, sizeof(req) - 1, resp, sizeof(resp)), 200);
	assert_non_null(strstr(resp, "hello from nginx"));
	/* the lab's signal mask (SIGTERM blocked) is not inherited: SIGTERM alone stops it */
	pid_t pid = c.pid;
	assert_int_equal(child_stop(&c, 3000), 0);
	assert_int_equal(c.pid, 0);
	assert_true(kill(pid, 0) < 0 && errno == ESRCH);
	int fd = client_connect(r.port);
	assert_true(fd < 0);
	assert_int_equal(child_rmtree(r.dir, err, sizeof(err)), 0);
	assert_false(exists(r.dir));
	/* twice is fine */
	assert_int_equal(child_stop(&c, 0), 0);
}

static void test_a_program_that_exits_at_once_is_a_clear_error_not_a_hang(void **state)
{
	(void)state;
	char dir[PATH_MAX], err[1024];
	assert_int_equal(child_tmpdir("test-child", dir, sizeof(dir), err, sizeof(err)), 0);
	const char *argv[] = {"/bin/false", NULL};
	struct child_spec spec = {
	        .name = "false", .argv = argv, .dir = dir, .port = 1, .ready_timeout_ms = 10000};
	struct child c;
	double t0 = ms_now();
	assert_int_equal(child_start(&c, &spec, err, sizeof(err)), -1);
	/* far below the 10 s timeout: the exit is seen, not waited out */
	assert_true(ms_now() - t0 < 5000);
	assert_non_null(strstr(err, "false exited with status 1 before accepting on 127.0.0.1:1"));
	assert_int_equal(c.pid, 0);

	const char *missing[] = {"/nonexistent/lab-server", NULL};
	spec = (struct child_spec){.name = "missing", .argv = missing, .dir = dir, .port = 1};
	assert_int_equal(child_start(&c, &spec, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "missing exited with status 127"));
	assert_non_null(strstr(err, "cannot execute /nonexistent/lab-server"));
	assert_non_null(strstr(err, "no such file"));
	assert_int_equal(child_rmtree(dir, err, sizeof(err)), 0);
}

static void test_a_program_that_never_listens_times_out_and_is_stopped(void **state)
{
	(void)state;
	char dir[PATH_MAX], err[1024];
	assert_int_equal(child_tmpdir("test-child", dir, sizeof(dir), err, sizeof(err)), 0);
	int port = child_free_port(err, sizeof(err));
	const char *argv[] = {"/bin/sleep", "30", NULL};
	struct child_spec spec = {
	        .name = "sleep", .argv = argv, .dir = dir, .port = port, .ready_timeout_ms = 200};
	struct child c;
	assert_int_equal(child_start(&c, &spec, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "sleep did not accept on 127.0.0.1:"));
	assert_non_null(strstr(err, "within 200 ms (stopped)"));
	assert_int_equal(c.pid, 0);
	assert_int_equal(child_rmtree(dir, err, sizeof(err)), 0);
}

/*
 * The port race child_free_port leaves open: another process binds the port first. The port
 * accepts (the stranger answers), but the child never wrote its pid file: not ready, stopped.
 */
static void test_a_port_someone_else_holds_is_not_taken_for_the_childs(void **state)
{
	(void)state;
	char dir[PATH_MAX], err[1024], pidfile[PATH_MAX + 16];
	assert_int_equal(child_tmpdir("test-child", dir, sizeof(dir), err, sizeof(err)), 0);
	int stranger = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	assert_int_equal(bind(stranger, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(stranger, 8), 0);
	assert_int_equal(getsockname(stranger, (struct sockaddr *)&sin, &len), 0);
	snprintf(pidfile, sizeof(pidfile), "%s/sleep.pid", dir);
	const char *argv[] = {"/bin/sleep", "30", NULL};
	struct child_spec spec = {.name = "sleep",
	                          .argv = argv,
	                          .dir = dir,
	                          .port = ntohs(sin.sin_port),
	                          .ready_file = pidfile,
	                          .ready_timeout_ms = 300};
	struct child c;
	assert_int_equal(child_start(&c, &spec, err, sizeof(err)), -1);
	if (!strstr(err, "another process holds the port"))
		fail_msg("%s", err);
	assert_int_equal(c.pid, 0);
	close(stranger);
	assert_int_equal(child_rmtree(dir, err, sizeof(err)), 0);
}

/* The state letter of /proc/<pid>/stat ('Z' zombie), or 0 when the process is gone. */
static char proc_state(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

static void test_the_child_dies_with_the_process_that_started_it(void **state)
{
	(void)state;
	struct nginx_run r;
	nginx_prepare(&r);
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t middle = fork();
	assert_true(middle >= 0);
	if (middle == 0) {
		/* a lab that starts nginx and then dies without stopping it (as the Ctrl-C guard's _exit) */
		struct child c;
		char err[1024];
		pid_t pid = child_start(&c, &r.spec, err, sizeof(err)) == 0 ? c.pid : 0;
		if (write(fds[1], &pid, sizeof(pid)) != sizeof(pid))
			_exit(3);
		_exit(0);
	}
	close(fds[1]);
	pid_t nginx = 0;
	assert_int_equal(read(fds[0], &nginx, sizeof(nginx)), (ssize_t)sizeof(nginx));
	close(fds[0]);
	int status;
	assert_int_equal(waitpid(middle, &status, 0), middle);
	assert_true(nginx > 0);
	/* SIGKILL from the kernel: it is gone (or a zombie of init) within moments, its port closed */
	char st = 'R';
	for (int i = 0; i < 200 && (st = proc_state(nginx)) != 0 && st != 'Z'; i++)
		usleep(10000);
	if (st != 0 && st != 'Z')
		fail_msg("nginx %d still runs (state %c) after the process that started it died", (int)nginx,
		         st);
	assert_true(client_connect(r.port) < 0);
	char err[256];
	assert_int_equal(child_rmtree(r.dir, err, sizeof(err)), 0);
}

/* Makes base/name (mode 0700) with a file inside; with the owner file too when owned. */
static void make_dir(char *out, size_t len, const char *base, const char *name, bool owned)
{
	snprintf(out, len, "%s/%s", base, name);
	assert_int_equal(mkdir(out, 0700), 0);
	char inner[PATH_MAX + 128];
	snprintf(inner, sizeof(inner), "%s/%s", out, owned ? CHILD_OWNER_FILE : "nginx.log");
	FILE *f = fopen(inner, "w");
	assert_non_null(f);
	fclose(f);
	snprintf(inner, sizeof(inner), "%s/nginx.log", out);
	f = fopen(inner, "a");
	assert_non_null(f);
	fclose(f);
}

static void test_tmpdir_sweeps_the_directories_of_dead_labs_only(void **state)
{
	(void)state;
	char base[PATH_MAX], name[64], mine[PATH_MAX], err[512];
	char stale[PATH_MAX + 64], alive[PATH_MAX + 64], foreign[PATH_MAX + 64], locked[PATH_MAX + 64];
	char outside[PATH_MAX + 64], link[PATH_MAX + 160], keep[PATH_MAX + 128];
	snprintf(base, sizeof(base), "/tmp/test-child-sweep-%d", (int)getpid());
	assert_int_equal(mkdir(base, 0700), 0);
	pid_t dead = fork();
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	/* a dead lab's directory: swept, and a symlink in it is removed, not followed */
	snprintf(name, sizeof(name), "lab-gone-%d-abcdef", (int)dead);
	make_dir(stale, sizeof(stale), base, name, true);
	make_dir(outside, sizeof(outside), base, "outside", false);
	snprintf(keep, sizeof(keep), "%s/nginx.log", outside);
	snprintf(link, sizeof(link), "%s/escape", stale);
	assert_int_equal(symlink(outside, link), 0);
	/* a live process's; a dead pid's without an owner file (not ours); a dead pid's whose owner
	 * file is locked (a live lab in another pid namespace); a symlink named as a dead lab's */
	snprintf(name, sizeof(name), "lab-alive-%d-abcdef", (int)getppid());
	make_dir(alive, sizeof(alive), base, name, true);
	snprintf(name, sizeof(name), "lab-foreign-%d-abcdef", (int)dead);
	make_dir(foreign, sizeof(foreign), base, name, false);
	snprintf(name, sizeof(name), "lab-locked-%d-abcdef", (int)dead);
	make_dir(locked, sizeof(locked), base, name, true);
	char owner[PATH_MAX + 128];
	snprintf(owner, sizeof(owner), "%s/%s", locked, CHILD_OWNER_FILE);
	int lock = open(owner, O_RDONLY | O_CLOEXEC);
	assert_true(lock >= 0);
	assert_int_equal(flock(lock, LOCK_EX | LOCK_NB), 0);
	snprintf(link, sizeof(link), "%s/lab-link-%d-abcdef", base, (int)dead);
	assert_int_equal(symlink(outside, link), 0);

	const char *old = getenv("TMPDIR");
	char *saved = old ? strdup(old) : NULL;
	setenv("TMPDIR", base, 1);
	assert_int_equal(child_tmpdir("mine", mine, sizeof(mine), err, sizeof(err)), 0);
	if (saved)
		setenv("TMPDIR", saved, 1);
	else
		unsetenv("TMPDIR");
	free(saved);
	close(lock);
	assert_false(exists(stale));
	assert_true(exists(keep));
	assert_true(exists(link));
	assert_true(exists(alive));
	assert_true(exists(foreign));
	assert_true(exists(locked));
	assert_true(exists(mine));
	assert_int_equal(strncmp(mine, base, strlen(base)), 0);
	/* the new directory's owner file is locked: another process's sweep would leave it */
	snprintf(owner, sizeof(owner), "%s/%s", mine, CHILD_OWNER_FILE);
	lock = open(owner, O_RDONLY | O_CLOEXEC);
	assert_true(lock >= 0);
	assert_int_equal(flock(lock, LOCK_EX | LOCK_NB), -1);
	close(lock);
	assert_int_equal(child_rmtree(mine, err, sizeof(err)), 0);
	assert_int_equal(child_rmtree(base, err, sizeof(err)), 0);
	assert_false(exists(base));
}

/* spec.user: as root, the child runs as that user (uid, gid) in a directory given to it; a user
 * that does not exist is a clear error. The user is the one scripts/labenv runs PostgreSQL as. */
static void test_a_child_runs_as_the_user_the_spec_names_when_root(void **state)
{
	(void)state;
	const char *user =
	        getenv("LAB_PG_OS_USER") && *getenv("LAB_PG_OS_USER") ? getenv("LAB_PG_OS_USER") : "postgres";
	struct passwd *pw = getpwnam(user);
	if (geteuid() != 0 || !pw) {
		print_message("skipped: not root, or no user %s (make up creates it as root)\n", user);
		skip();
	}
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	char dir[PATH_MAX], err[1024], path[PATH_MAX + 16];
	assert_int_equal(child_tmpdir("test-child", dir, sizeof(dir), err, sizeof(err)), 0);
	const char *argv[] = {"/bin/sh", "-c", "id -u >uid && id -g >>uid && id -G >groups", NULL};
	struct child_spec spec = {.name = "as-user", .argv = argv, .dir = dir, .user = user};
	struct child c;
	assert_int_equal(child_start(&c, &spec, err, sizeof(err)), 0);
	for (double t0 = ms_now(); child_running(&c) && ms_now() - t0 < 5000;)
		usleep(2000);
	assert_false(child_running(&c));
	assert_true(WIFEXITED(c.exit_status) && WEXITSTATUS(c.exit_status) == 0);
	struct stat st;
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_uid, uid);
	snprintf(path, sizeof(path), "%s/uid", dir);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	long got_uid = -1, got_gid = -1;
	assert_int_equal(fscanf(f, "%ld %ld", &got_uid, &got_gid), 2);
	fclose(f);
	assert_int_equal(got_uid, (long)uid);
	assert_int_equal(got_gid, (long)gid);
	/* the file it wrote is its user's, not root's */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, uid);
	/* root's supplementary groups (0 among them) did not come along: setgroups ran */
	snprintf(path, sizeof(path), "%s/groups", dir);
	f = fopen(path, "r");
	assert_non_null(f);
	for (long g; fscanf(f, "%ld", &g) == 1;)
		if (g == 0 && gid != 0)
			fail_msg("the child kept group 0");
	fclose(f);

	/* the parent-death signal survives the switch of user (a uid change clears it): a child
	 * started by a process that then dies is killed with it */
	const char *sleeper[] = {"/bin/sleep", "30", NULL};
	spec.argv = sleeper;
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t mid = fork();
	if (mid == 0) {
		struct child m;
		pid_t got = child_start(&m, &spec, err, sizeof(err)) == 0 ? m.pid : -1;
		_exit(write(fds[1], &got, sizeof(got)) == sizeof(got) ? 0 : 1);
	}
	pid_t orphan = -1;
	assert_int_equal(read(fds[0], &orphan, sizeof(orphan)), (ssize_t)sizeof(orphan));
	close(fds[0]);
	close(fds[1]);
	waitpid(mid, NULL, 0);
	assert_true(orphan > 1);
	bool gone = false;
	for (double t0 = ms_now(); !gone && ms_now() - t0 < 3000; usleep(5000)) {
		char stat_path[64], line[256] = "";
		snprintf(stat_path, sizeof(stat_path), "/proc/%d/stat", (int)orphan);
		FILE *sf = fopen(stat_path, "r");
		/* gone, or a zombie its new parent has not reaped yet */
		gone = !sf || !fgets(line, sizeof(line), sf) || strstr(line, ") Z ");
		if (sf)
			fclose(sf);
	}
	if (!gone) {
		kill(orphan, SIGKILL);
		fail_msg("the child run as %s outlived the process that started it", user);
	}

	spec.user = "no-such-user-of-the-labs";
	assert_int_equal(child_start(&c, &spec, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no such user"));
	assert_int_equal(c.pid, 0);
	assert_int_equal(child_rmtree(dir, err, sizeof(err)), 0);
}

static void test_find_program_names_what_it_tried(void **state)
{
	(void)state;
	char out[PATH_MAX], err[1024];
	static const char *const dirs[] = {"/nonexistent-a", NULL};
	assert_int_equal(child_find_program("no-such-server-xyz", "LAB_TEST_CHILD_UNSET", dirs, out,
	                                    sizeof(out), err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "$LAB_TEST_CHILD_UNSET unset"));
	assert_non_null(strstr(err, "no-such-server-xyz in PATH"));
	assert_non_null(strstr(err, "/nonexistent-a/no-such-server-xyz"));
	setenv("LAB_TEST_CHILD_SET", "/nonexistent/nginx", 1);
	assert_int_equal(
	        child_find_program("nginx", "LAB_TEST_CHILD_SET", SBIN, out, sizeof(out), err, sizeof(err)),
	        -1);
	assert_non_null(strstr(err, "$LAB_TEST_CHILD_SET=/nonexistent/nginx is not an executable file"));
	unsetenv("LAB_TEST_CHILD_SET");
	assert_int_equal(child_find_program("sh", NULL, NULL, out, sizeof(out), err, sizeof(err)), 0);
	assert_non_null(strstr(out, "/sh"));
}

/* child_file_tail: a file's last three lines on one line; a missing or empty file says so. */
static void test_file_tail_joins_the_last_three_lines(void **state)
{
	(void)state;
	char path[] = "/tmp/lab-child-tail-XXXXXX", out[256];
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	child_file_tail(path, out, sizeof(out));
	assert_non_null(strstr(out, "is empty"));
	assert_true(dprintf(fd, "one\ntwo\nthree\nfour\nfive\n") > 0);
	close(fd);
	child_file_tail(path, out, sizeof(out));
	assert_string_equal(out, "three | four | five");
	assert_int_equal(unlink(path), 0);
	child_file_tail(path, out, sizeof(out));
	assert_non_null(strstr(out, "(no log at /tmp/lab-child-tail-"));
}

/*
 * The Ctrl-C guard (child_kill_and_remove_all) removes the directories it knows of and the process
 * exits: one made (or a child started) after it looked would be left behind, so none is any more.
 */
static void test_no_directory_is_made_once_the_guard_has_looked(void **state)
{
	(void)state;
	char dir[PATH_MAX], err[256];
	assert_int_equal(child_tmpdir("child-test", dir, sizeof(dir), err, sizeof(err)), 0);
	child_kill_and_remove_all();
	struct stat st;
	assert_int_not_equal(stat(dir, &st), 0);
	assert_int_equal(child_tmpdir("child-test", dir, sizeof(dir), err, sizeof(err)), -1);
	assert_non_null(strstr(err, "the lab is ending"));
	/* nor is a child started: the guard would not know it */
	const char *argv[] = {"/bin/sleep", "5", NULL};
	struct child_spec spec = {.name = "late", .argv = argv, .dir = "/nonexistent"};
	struct child c;
	err[0] = '\0';
	assert_int_equal(child_start(&c, &spec, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "the lab is ending"));
	assert_int_equal(c.pid, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_free_port_is_bindable_on_loopback),
	        cmocka_unit_test(test_nginx_starts_answers_stops_and_its_directory_goes),
	        cmocka_unit_test(test_a_program_that_exits_at_once_is_a_clear_error_not_a_hang),
	        cmocka_unit_test(test_a_program_that_never_listens_times_out_and_is_stopped),
	        cmocka_unit_test(test_a_port_someone_else_holds_is_not_taken_for_the_childs),
	        cmocka_unit_test(test_the_child_dies_with_the_process_that_started_it),
	        cmocka_unit_test(test_tmpdir_sweeps_the_directories_of_dead_labs_only),
	        cmocka_unit_test(test_a_child_runs_as_the_user_the_spec_names_when_root),
	        cmocka_unit_test(test_find_program_names_what_it_tried),
	        cmocka_unit_test(test_file_tail_joins_the_last_three_lines),
	        /* last: it ends the module's life in this process, as the Ctrl-C guard does */
	        cmocka_unit_test(test_no_directory_is_made_once_the_guard_has_looked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
