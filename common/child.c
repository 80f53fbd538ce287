/*
 * child.c — a server program started and owned by the lab (child.h says what it promises).
 *
 * Between fork and exec the child of a threaded process may call only async-signal-safe
 * functions: everything it needs (the log's descriptor, the message it writes when exec fails)
 * is prepared by the parent before fork.
 */
#include "child.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* how often child_start tries the port and child_stop looks for the exit */
#define POLL_MS 5
/* a directory tree deeper than this is not one of ours */
#define MAX_DEPTH 32
/* the lines of a log a failure quotes, and how far back from its end they are looked for */
#define TAIL_LINES 3
#define TAIL_BYTES 2048

/*
 * What this process runs and made, for the Ctrl-C guard (child_kill_and_remove_all): the pids of
 * children not yet reaped and the directories not yet removed. Small and fixed: a lab owns a
 * handful of children at most; past the cap an entry is simply not tracked (the next lab's
 * sweep and PR_SET_PDEATHSIG still clean up).
 */
#define LIVE_MAX 8
static struct {
	pthread_mutex_t mu;
	pid_t pids[LIVE_MAX];
	char dirs[LIVE_MAX][PATH_MAX];
} live = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void live_pid(pid_t old, pid_t new)
{
	pthread_mutex_lock(&live.mu);
	for (int i = 0; i < LIVE_MAX; i++)
		if (live.pids[i] == old) {
			live.pids[i] = new;
			break;
		}
	pthread_mutex_unlock(&live.mu);
}

/* Replaces the entry old ("" for a free slot) by new ("" to forget it). */
static void live_dir(const char *old, const char *new)
{
	pthread_mutex_lock(&live.mu);
	for (int i = 0; i < LIVE_MAX; i++)
		if (strcmp(live.dirs[i], old) == 0) {
			snprintf(live.dirs[i], sizeof(live.dirs[i]), "%s", new);
			break;
		}
	pthread_mutex_unlock(&live.mu);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* ---- temporary directories ---- */

static int rm_at(int dirfd, const char *name, int depth)
{
	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if ((errno != EISDIR && errno != EPERM) || depth > MAX_DEPTH)
		return -1;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -1;
	}
	int ret = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
		    rm_at(fd, e->d_name, depth + 1) < 0)
			ret = -1;
	closedir(d);
	if (ret == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		ret = -1;
	return ret;
}

int child_rmtree(const char *dir, char *err, size_t errlen)
{
	if (!dir || !*dir)
		return 0;
	live_dir(dir, "");
	if (rm_at(AT_FDCWD, dir, 0) < 0) {
		snprintf(err, errlen, "cannot remove %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* The pid in lab-<tag>-<pid>-XXXXXX, or 0 when name is not of that form. */
static pid_t tmpdir_pid(const char *name)
{
	size_t len = strlen(name);
	if (strncmp(name, "lab-", 4) != 0 || len < 4 + 1 + 1 + 7 || name[len - 7] != '-')
		return 0;
	size_t end = len - 7, start = end;
	while (start > 4 && name[start - 1] >= '0' && name[start - 1] <= '9')
		start--;
	if (start == end || name[start - 1] != '-' || end - start > 9)
		return 0;
	long pid = strtol(name + start, NULL, 10);
	return pid > 0 ? (pid_t)pid : 0;
}

/* Removes the directories of labs that are gone (kill(pid, 0) says no such process). */
static void sweep_stale(const char *base)
{
	DIR *d = opendir(base);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		pid_t pid = tmpdir_pid(e->d_name);
		if (!pid || pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		struct stat st;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
		    st.st_uid == geteuid())
			rm_at(dirfd(d), e->d_name, 0);
	}
	closedir(d);
}

int child_tmpdir(const char *tag, char *out, size_t outlen, char *err, size_t errlen)
{
	const char *base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	sweep_stale(base);
	int n = snprintf(out, outlen, "%s/lab-%s-%ld-XXXXXX", base, tag, (long)getpid());
	if (n < 0 || (size_t)n >= outlen) {
		snprintf(err, errlen, "temporary directory name too long under %s", base);
		return -1;
	}
	if (!mkdtemp(out)) {
		snprintf(err, errlen, "cannot make a temporary directory in %s: %s", base, strerror(errno));
		return -1;
	}
	live_dir("", out);
	return 0;
}

/* ---- ports and programs ---- */

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

/* ---- starting and stopping ---- */

void child_log_tail(const struct child *c, char *out, size_t outlen)
{
	out[0] = '\0';
	int fd = open(c->log_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(out, outlen, "(no log at %s)", c->log_path);
		return;
	}
	char buf[TAIL_BYTES + 1];
	off_t size = lseek(fd, 0, SEEK_END);
	off_t from = size > TAIL_BYTES ? size - TAIL_BYTES : 0;
	ssize_t n = pread(fd, buf, TAIL_BYTES, from);
	close(fd);
	if (n <= 0) {
		snprintf(out, outlen, "(its log %s is empty)", c->log_path);
		return;
	}
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	/* back TAIL_LINES lines from the end */
	char *start = buf + n;
	for (int lines = 0; start > buf && lines < TAIL_LINES;)
		if (*--start == '\n' && ++lines == TAIL_LINES)
			start++;
	size_t used = 0;
	for (char *save = NULL, *l = strtok_r(start, "\n", &save); l && used + 1 < outlen;
	     l = strtok_r(NULL, "\n", &save)) {
		int w = snprintf(out + used, outlen - used, "%s%s", used ? " | " : "", l);
		used += w > 0 ? (size_t)w : 0;
	}
}

/* "exited with status 1", "killed by signal 9" */
static void status_text(int status, char *out, size_t outlen)
{
	if (WIFEXITED(status))
		snprintf(out, outlen, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(out, outlen, "was killed by signal %d (%s)", WTERMSIG(status),
		         strsignal(WTERMSIG(status)));
	else
		snprintf(out, outlen, "stopped (wait status %d)", status);
}

bool child_running(struct child *c)
{
	if (c->pid <= 0)
		return false;
	int status;
	pid_t r = waitpid(c->pid, &status, WNOHANG);
	if (r == c->pid || (r < 0 && errno == ECHILD)) {
		c->exit_status = r == c->pid ? status : 0;
		live_pid(c->pid, 0);
		c->pid = 0;
		return false;
	}
	return true;
}

int child_stop(struct child *c, int grace_ms)
{
	if (!child_running(c))
		return 0;
	if (grace_ms <= 0)
		grace_ms = CHILD_STOP_DEFAULT_MS;
	/* the group: a server that forked workers of its own takes them along */
	kill(-c->pid, SIGTERM);
	kill(c->pid, SIGTERM);
	double deadline = now_ms() + grace_ms;
	while (now_ms() < deadline) {
		if (!child_running(c))
			return 0;
		sleep_ms(POLL_MS);
	}
	kill(-c->pid, SIGKILL);
	kill(c->pid, SIGKILL);
	int status = 0;
	while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
		;
	c->exit_status = status;
	live_pid(c->pid, 0);
	c->pid = 0;
	return 1;
}

/* "12" into buf, async-signal-safe; returns buf. */
static char *itoa_safe(int v, char *buf, size_t len)
{
	char tmp[16];
	int n = 0;
	unsigned u = v < 0 ? 0u - (unsigned)v : (unsigned)v;
	do
		tmp[n++] = (char)('0' + u % 10);
	while ((u /= 10) && n < 15);
	size_t i = 0;
	if (v < 0 && i + 1 < len)
		buf[i++] = '-';
	while (n > 0 && i + 1 < len)
		buf[i++] = tmp[--n];
	buf[i] = '\0';
	return buf;
}

static void write_str(int fd, const char *s)
{
	if (write(fd, s, strlen(s)) < 0)
		return; /* the log is all the child has to say it on */
}

/* In the child, between fork and exec: async-signal-safe calls only. */
static void __attribute__((noreturn))
exec_child(const struct child_spec *spec, pid_t parent, int logfd, int nullfd, const char *exec_failed)
{
	/* dies with the thread that forked it (child.h); if that thread is already gone, so are we */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(126);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	sigaction(SIGPIPE, &dfl, NULL);
	sigaction(SIGINT, &dfl, NULL);
	sigaction(SIGTERM, &dfl, NULL);
	setpgid(0, 0);
	if (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
		_exit(126);
	/* none of the lab's descriptors (sockets, PostgreSQL connections) goes with it */
	if (close_range(3, ~0U, 0) < 0)
		for (int fd = 3; fd < 4096; fd++)
			close(fd);
	if (chdir(spec->dir) < 0) {
		write_str(2, "child: cannot chdir to its directory\n");
		_exit(126);
	}
	execv(spec->argv[0], (char *const *)spec->argv);
	char num[16];
	write_str(2, exec_failed);
	write_str(2, itoa_safe(errno, num, sizeof(num)));
	write_str(2, errno == ENOENT   ? ": no such file)\n"
	             : errno == EACCES ? ": permission denied)\n"
	                               : ")\n");
	_exit(127);
}

static bool port_accepts(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in sin = {.sin_family = AF_INET,
	                          .sin_port = htons((uint16_t)port),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	close(fd);
	return ok;
}

/* Waits for the port; on failure the child is stopped and err says why, with its log. */
static int wait_ready(struct child *c, int timeout_ms, char *err, size_t errlen)
{
	char tail[768], how[96];
	double deadline = now_ms() + timeout_ms;
	for (;;) {
		bool accepts = port_accepts(c->port);
		if (!child_running(c)) {
			status_text(c->exit_status, how, sizeof(how));
			child_log_tail(c, tail, sizeof(tail));
			snprintf(err, errlen, "%s %s before accepting on 127.0.0.1:%d; its log: %s", c->name,
			         how, c->port, tail);
			return -1;
		}
		if (accepts)
			return 0;
		if (now_ms() >= deadline)
			break;
		sleep_ms(POLL_MS);
	}
	child_stop(c, CHILD_STOP_DEFAULT_MS);
	child_log_tail(c, tail, sizeof(tail));
	snprintf(err, errlen, "%s did not accept on 127.0.0.1:%d within %d ms (stopped); its log: %s",
	         c->name, c->port, timeout_ms, tail);
	return -1;
}

int child_start(struct child *c, const struct child_spec *spec, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	if (!spec->argv || !spec->argv[0] || !spec->dir || !spec->name) {
		snprintf(err, errlen, "child_start: name, argv and dir are required");
		return -1;
	}
	snprintf(c->name, sizeof(c->name), "%s", spec->name);
	snprintf(c->log_path, sizeof(c->log_path), "%s/%s.log", spec->dir, spec->name);
	c->port = spec->port;
	char exec_failed[PATH_MAX + 64];
	snprintf(exec_failed, sizeof(exec_failed), "child: cannot execute %s (errno ", spec->argv[0]);
	int logfd = open(c->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (logfd < 0 || nullfd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", logfd < 0 ? c->log_path : "/dev/null",
		         strerror(errno));
		if (logfd >= 0)
			close(logfd);
		if (nullfd >= 0)
			close(nullfd);
		return -1;
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0)
		exec_child(spec, parent, logfd, nullfd, exec_failed);
	int fork_errno = errno;
	close(logfd);
	close(nullfd);
	if (pid < 0) {
		snprintf(err, errlen, "cannot start %s: fork: %s", spec->name, strerror(fork_errno));
		return -1;
	}
	/* the child does it too: whichever runs first, the group exists before either relies on it */
	setpgid(pid, pid);
	c->pid = pid;
	live_pid(0, pid);
	if (spec->port <= 0)
		return 0;
	return wait_ready(c, spec->ready_timeout_ms > 0 ? spec->ready_timeout_ms : CHILD_READY_DEFAULT_MS,
	                  err, errlen);
}

void child_kill_and_remove_all(void)
{
	/* never wait on the lock: the thread that holds it may be the one the guard is ending */
	if (pthread_mutex_trylock(&live.mu) != 0)
		return;
	for (int i = 0; i < LIVE_MAX; i++)
		if (live.pids[i] > 0) {
			kill(-live.pids[i], SIGKILL);
			kill(live.pids[i], SIGKILL);
		}
	for (int i = 0; i < LIVE_MAX; i++)
		if (live.dirs[i][0]) {
			/* a child killed a moment ago may still have been writing: one more try */
			if (rm_at(AT_FDCWD, live.dirs[i], 0) < 0)
				rm_at(AT_FDCWD, live.dirs[i], 0);
			live.dirs[i][0] = '\0';
		}
	pthread_mutex_unlock(&live.mu);
}
