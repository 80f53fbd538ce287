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
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"

/* how often child_start tries the port and child_stop looks for the exit */
#define POLL_MS 5
/* a directory tree deeper than this is not one of ours */
#define MAX_DEPTH 32
/* the lines of a log a failure quotes, and how far back from its end they are looked for */
#define TAIL_LINES 3
#define TAIL_BYTES 2048

/* the guard's wait for the lock (held for microseconds by another thread) and for the killed to go */
#define GUARD_LOCK_MS 100
#define GUARD_REAP_MS 200

/*
 * What this process runs and made, for the Ctrl-C guard (child_kill_and_remove_all): the pids of
 * children not yet reaped and the directories not yet removed, with the descriptor of each
 * directory's owner file (CHILD_OWNER_FILE, locked while the directory is in use). Small and
 * fixed: a lab owns a handful of children at most; past the cap an entry is simply not tracked
 * (PR_SET_PDEATHSIG and the next lab's sweep still clean up).
 */
#define LIVE_MAX 8
static struct {
	pthread_mutex_t mu;
	pid_t pids[LIVE_MAX];
	char dirs[LIVE_MAX][PATH_MAX];
	int owner_fds[LIVE_MAX]; /* 0: none (an owner file is never descriptor 0) */
} live = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* set by child_kill_and_remove_all: the lab is ending, no new directory or child from now on
 * (child_tmpdir and child_start check it under live.mu) */
static atomic_bool live_closed;

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

/*
 * Replaces the entry old ("" for a free slot) by new ("" to forget it) and its owner file's
 * descriptor by fd; returns the descriptor the entry had (0: none), for the caller to close.
 */
static int live_dir(const char *old, const char *new, int fd)
{
	int was = 0;
	pthread_mutex_lock(&live.mu);
	for (int i = 0; i < LIVE_MAX; i++)
		if (strcmp(live.dirs[i], old) == 0) {
			snprintf(live.dirs[i], sizeof(live.dirs[i]), "%s", new);
			was = live.owner_fds[i];
			live.owner_fds[i] = fd;
			break;
		}
	pthread_mutex_unlock(&live.mu);
	return was;
}

/* The group and the process: never pid 0 (our own group) or 1 (kill(-1) is every process). */
static void kill_group(pid_t pid, int sig)
{
	if (pid <= 1)
		return;
	kill(-pid, sig);
	kill(pid, sig);
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
	int owner = live_dir(dir, "", 0);
	int ret = rm_at(AT_FDCWD, dir, 0);
	int rm_errno = errno;
	if (owner > 0)
		close(owner); /* its lock goes with it: a sweep may now take what is left, if anything */
	if (ret < 0) {
		snprintf(err, errlen, "cannot remove %s: %s", dir, strerror(rm_errno));
		return -1;
	}
	return 0;
}

/* The pid in lab-<tag>-<pid>-XXXXXX (X: mkdtemp's letters and digits), or 0 when not of that form. */
static pid_t tmpdir_pid(const char *name)
{
	size_t len = strlen(name);
	if (strncmp(name, "lab-", 4) != 0 || len < 4 + 1 + 1 + 7 || name[len - 7] != '-')
		return 0;
	for (size_t i = len - 6; i < len; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'z') ||
		      (name[i] >= 'A' && name[i] <= 'Z')))
			return 0;
	size_t end = len - 7, start = end;
	while (start > 4 && name[start - 1] >= '0' && name[start - 1] <= '9')
		start--;
	if (start == end || name[start - 1] != '-' || end - start > 9)
		return 0;
	long pid = strtol(name + start, NULL, 10);
	return pid > 0 ? (pid_t)pid : 0;
}

/*
 * Whether name in base (a directory, not a symlink, ours, mode 0700 as mkdtemp makes it) holds
 * an owner file that nobody has locked: made by child_tmpdir, and its process is gone (a lock
 * dies with its process, in whatever pid namespace that ran). A lock taken is returned in *fd.
 */
static bool stale_and_ours(int base, const char *name, int *fd)
{
	struct stat st;
	if (fstatat(base, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode) ||
	    st.st_uid != geteuid() || (st.st_mode & 07777) != 0700)
		return false;
	int dfd = openat(base, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return false;
	*fd = openat(dfd, CHILD_OWNER_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	close(dfd);
	if (*fd < 0)
		return false;
	if (flock(*fd, LOCK_EX | LOCK_NB) == 0)
		return true;
	close(*fd);
	*fd = -1;
	return false;
}

/*
 * Removes the directories of labs that are gone: named lab-<tag>-<pid>-XXXXXX, the pid no longer
 * a process (kill(pid, 0) says so), and stale_and_ours. Anything else is left alone.
 */
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
		int fd = -1;
		if (stale_and_ours(dirfd(d), e->d_name, &fd)) {
			rm_at(dirfd(d), e->d_name, 0);
			close(fd);
		}
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
	/* checked, made and registered under the table's lock: a Ctrl-C guard that began before is
	 * not raced (the lab is ending: no new directory), one that begins meanwhile waits for the
	 * lock and then finds the directory to remove */
	pthread_mutex_lock(&live.mu);
	if (atomic_load(&live_closed) || !mkdtemp(out)) {
		int e = atomic_load(&live_closed) ? ECANCELED : errno;
		pthread_mutex_unlock(&live.mu);
		snprintf(err, errlen, "cannot make a temporary directory in %s: %s", base,
		         e == ECANCELED ? "the lab is ending (interrupted)" : strerror(e));
		return -1;
	}
	/* the owner file, locked while this process lives: what tells a sweep the directory is in use */
	char owner[PATH_MAX + 32];
	snprintf(owner, sizeof(owner), "%s/%s", out, CHILD_OWNER_FILE);
	int fd = open(owner, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
		snprintf(err, errlen, "cannot lock %s: %s", owner, strerror(errno));
		if (fd >= 0)
			close(fd);
		rm_at(AT_FDCWD, out, 0);
		pthread_mutex_unlock(&live.mu);
		return -1;
	}
	/* untracked past LIVE_MAX: the descriptor then stays open, so the lock lasts to the exit */
	for (int i = 0; i < LIVE_MAX; i++)
		if (!live.dirs[i][0]) {
			snprintf(live.dirs[i], sizeof(live.dirs[i]), "%s", out);
			live.owner_fds[i] = fd;
			break;
		}
	pthread_mutex_unlock(&live.mu);
	return 0;
}

/* ---- starting and stopping ---- */

void child_file_tail(const char *path, char *out, size_t outlen)
{
	out[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(out, outlen, "(no log at %s)", path);
		return;
	}
	char buf[TAIL_BYTES + 1];
	off_t size = lseek(fd, 0, SEEK_END);
	off_t from = size > TAIL_BYTES ? size - TAIL_BYTES : 0;
	ssize_t n = pread(fd, buf, TAIL_BYTES, from);
	close(fd);
	if (n <= 0) {
		snprintf(out, outlen, "(its log %s is empty)", path);
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

void child_log_tail(const struct child *c, char *out, size_t outlen)
{
	child_file_tail(c->log_path, out, outlen);
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
	kill_group(c->pid, SIGTERM);
	double deadline = hist_now_ms() + grace_ms;
	while (hist_now_ms() < deadline) {
		if (!child_running(c))
			return 0;
		hist_sleep_us(1000LL * POLL_MS);
	}
	kill_group(c->pid, SIGKILL);
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

/* the supplementary groups a child run as spec->user takes along, at most */
#define CHILD_GROUPS_MAX 32

/* What the child needs between fork and exec, made ready by the parent (no malloc, no stdio there). */
struct exec_plan {
	const struct child_spec *spec;
	pid_t parent;
	int logfd, nullfd; /* both above 2, so dup2 onto 0, 1 and 2 always makes a copy without CLOEXEC */
	int maxfd;         /* for when close_range is missing (kernels before 5.9) */
	const char *exec_failed;
	bool as_user; /* spec->user applies: become uid/gid with groups before exec */
	uid_t uid;
	gid_t gid;
	gid_t groups[CHILD_GROUPS_MAX];
	int ngroups;
};

/* In the child, between fork and exec: async-signal-safe calls only. */
static void __attribute__((noreturn)) exec_child(const struct exec_plan *p)
{
	/* dies with the thread that forked it (child.h); if that thread is already gone, so are we */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != p->parent)
		_exit(126);
	/* its own group first: from here a Ctrl-C at the terminal no longer reaches it */
	setpgid(0, 0);
	/* every disposition back to its default (an ignored signal stays ignored across exec: the
	 * lab ignores SIGPIPE), then the mask emptied (the lab blocks SIGINT and SIGTERM) */
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &dfl, NULL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (dup2(p->nullfd, 0) < 0 || dup2(p->logfd, 1) < 0 || dup2(p->logfd, 2) < 0)
		_exit(126);
	/* none of the lab's descriptors (sockets, PostgreSQL connections) goes with it */
	if (close_range(3, ~0U, 0) < 0)
		for (int fd = 3; fd < p->maxfd; fd++)
			close(fd);
	/* groups, then gid, then uid: once uid is dropped the others can no longer be changed */
	if (p->as_user && (setgroups((size_t)p->ngroups, p->groups) < 0 || setgid(p->gid) < 0 ||
	                   setuid(p->uid) < 0 || (p->uid != 0 && setuid(0) == 0))) {
		write_str(2, "child: cannot switch to its user (setgroups/setgid/setuid failed)\n");
		_exit(126);
	}
	/* a change of uid or gid clears the parent-death signal (prctl(2)): set it again, and look
	 * once more whether the parent went in between */
	if (p->as_user && (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != p->parent))
		_exit(126);
	if (chdir(p->spec->dir) < 0) {
		write_str(2, "child: cannot chdir to its directory\n");
		_exit(126);
	}
	execv(p->spec->argv[0], (char *const *)p->spec->argv);
	int exec_errno = errno;
	char num[16];
	write_str(2, p->exec_failed);
	write_str(2, itoa_safe(exec_errno, num, sizeof(num)));
	write_str(2, exec_errno == ENOENT   ? ": no such file)\n"
	             : exec_errno == EACCES ? ": permission denied)\n"
	                                    : ")\n");
	_exit(127);
}

/* a connect that takes longer than this is not an accept (a stranger's full backlog would hold it for
 * minutes) */
#define CONNECT_MS 100

static bool port_accepts(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in sin = {.sin_family = AF_INET,
	                          .sin_port = htons((uint16_t)port),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	if (!ok && errno == EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int so_error = -1;
		socklen_t len = sizeof(so_error);
		ok = poll(&p, 1, CONNECT_MS) == 1 &&
		     getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) == 0 && so_error == 0;
	}
	close(fd);
	return ok;
}

/* Whether path holds pid (a pid file: "1234\n"). */
static bool file_holds_pid(const char *path, pid_t pid)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return false;
	char buf[24];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	return strtol(buf, NULL, 10) == (long)pid;
}

/*
 * Waits for the port (and the pid file, when given); on failure the child is stopped and err
 * says why, with its log.
 */
static int wait_ready(struct child *c, const char *ready_file, int timeout_ms, char *err, size_t errlen)
{
	char tail[768], how[96];
	double deadline = hist_now_ms() + timeout_ms;
	bool accepted = false; /* once at least: the last try may find a stranger's backlog full */
	for (;;) {
		/* in this order: a child that bound the port and then exited is not ready */
		bool accepts = port_accepts(c->port);
		accepted = accepted || accepts;
		bool its_own = !ready_file || file_holds_pid(ready_file, c->pid);
		if (!child_running(c)) {
			status_text(c->exit_status, how, sizeof(how));
			child_log_tail(c, tail, sizeof(tail));
			snprintf(err, errlen, "%s %s before accepting on 127.0.0.1:%d; its log: %s", c->name,
			         how, c->port, tail);
			return -1;
		}
		if (accepts && its_own)
			return 0;
		if (hist_now_ms() >= deadline)
			break;
		hist_sleep_us(1000LL * POLL_MS);
	}
	child_stop(c, CHILD_STOP_DEFAULT_MS);
	child_log_tail(c, tail, sizeof(tail));
	if (accepted && ready_file)
		snprintf(err, errlen,
		         "127.0.0.1:%d accepts, but %s never wrote its pid into %s within %d ms: another "
		         "process holds the port (%s stopped); its log: %s",
		         c->port, c->name, ready_file, timeout_ms, c->name, tail);
	else
		snprintf(err, errlen, "%s did not accept on 127.0.0.1:%d within %d ms (stopped); its log: %s",
		         c->name, c->port, timeout_ms, tail);
	return -1;
}

/* Opens path as a descriptor above 2 (close-on-exec), so that dup2 onto 0..2 always copies it. */
static int open_high(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC, 0600);
	if (fd < 0 || fd > 2)
		return fd;
	int high = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	close(fd);
	return high;
}

/*
 * spec->user, when the lab is root: its uid, gid and groups into plan (looked up here, before
 * fork: getpwnam and getgrouplist are not async-signal-safe), and spec->dir and the log chowned
 * to it. Not root, or no user: nothing to do.
 */
static int resolve_user(const struct child_spec *spec, struct exec_plan *plan, char *err, size_t errlen)
{
	if (!spec->user || geteuid() != 0)
		return 0;
	char buf[4096];
	struct passwd pw, *found = NULL;
	if (getpwnam_r(spec->user, &pw, buf, sizeof(buf), &found) != 0 || !found) {
		snprintf(err, errlen, "cannot run %s as user %s: no such user", spec->name, spec->user);
		return -1;
	}
	plan->as_user = true;
	plan->uid = pw.pw_uid;
	plan->gid = pw.pw_gid;
	plan->ngroups = CHILD_GROUPS_MAX;
	if (getgrouplist(spec->user, pw.pw_gid, plan->groups, &plan->ngroups) < 0)
		plan->ngroups = 1, plan->groups[0] = pw.pw_gid; /* more than we keep: its primary only */
	char log[PATH_MAX + 64];
	snprintf(log, sizeof(log), "%s/%s.log", spec->dir, spec->name);
	if (chown(spec->dir, pw.pw_uid, pw.pw_gid) < 0 || chown(log, pw.pw_uid, pw.pw_gid) < 0) {
		snprintf(err, errlen, "cannot give %s to user %s: %s", spec->dir, spec->user,
		         strerror(errno));
		return -1;
	}
	return 0;
}

int child_start(struct child *c, const struct child_spec *spec, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	if (!spec->argv || !spec->argv[0] || !spec->dir || !spec->name) {
		snprintf(err, errlen, "child_start: name, argv and dir are required");
		return -1;
	}
	snprintf(c->name, sizeof(c->name), "%s", spec->name);
	if (atomic_load(&live_closed)) { /* checked again under the lock below: this only spares the log */
		snprintf(err, errlen, "cannot start %s: the lab is ending (interrupted)", spec->name);
		return -1;
	}
	snprintf(c->log_path, sizeof(c->log_path), "%s/%s.log", spec->dir, spec->name);
	c->port = spec->port;
	char exec_failed[PATH_MAX + 64];
	snprintf(exec_failed, sizeof(exec_failed), "child: cannot execute %s (errno ", spec->argv[0]);
	struct rlimit rl;
	struct exec_plan plan = {
	        .spec = spec,
	        .parent = getpid(),
	        .logfd = open_high(c->log_path, O_WRONLY | O_CREAT | O_APPEND),
	        .nullfd = open_high("/dev/null", O_RDONLY),
	        .maxfd = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (int)rl.rlim_cur : 65536,
	        .exec_failed = exec_failed,
	};
	if (plan.logfd < 0 || plan.nullfd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", plan.logfd < 0 ? c->log_path : "/dev/null",
		         strerror(errno));
		if (plan.logfd >= 0)
			close(plan.logfd);
		if (plan.nullfd >= 0)
			close(plan.nullfd);
		return -1;
	}
	if (resolve_user(spec, &plan, err, errlen) < 0) {
		close(plan.logfd);
		close(plan.nullfd);
		return -1;
	}
	/* checked, forked and registered under the table's lock, as child_tmpdir does: a child forked
	 * after the Ctrl-C guard looked would be neither killed by it nor stopped by the lab, and a
	 * browser recreates its profile directory under the one the guard just removed */
	pthread_mutex_lock(&live.mu);
	bool closed = atomic_load(&live_closed);
	pid_t pid = closed ? -1 : fork();
	if (pid == 0)
		exec_child(&plan);
	int fork_errno = closed ? ECANCELED : errno;
	if (pid > 0)
		for (int i = 0; i < LIVE_MAX; i++)
			if (live.pids[i] == 0) {
				live.pids[i] = pid;
				break;
			}
	pthread_mutex_unlock(&live.mu);
	close(plan.logfd);
	close(plan.nullfd);
	if (pid < 0) {
		snprintf(err, errlen, "cannot start %s: %s", spec->name,
		         closed ? "the lab is ending (interrupted)" : strerror(fork_errno));
		return -1;
	}
	/* the child does it too: whichever runs first, the group exists before either relies on it */
	setpgid(pid, pid);
	c->pid = pid;
	if (spec->port <= 0)
		return 0;
	return wait_ready(c, spec->ready_file,
	                  spec->ready_timeout_ms > 0 ? spec->ready_timeout_ms : CHILD_READY_DEFAULT_MS, err,
	                  errlen);
}

/* Waits (up to GUARD_REAP_MS) until the killed are gone, so that none writes into a directory after it is
 * removed. */
static void reap_killed(const pid_t *pids)
{
	double deadline = hist_now_ms() + GUARD_REAP_MS;
	for (int i = 0; i < LIVE_MAX; i++)
		while (pids[i] > 1 && waitpid(pids[i], NULL, WNOHANG) == 0 && hist_now_ms() < deadline)
			hist_sleep_us(1000);
}

void child_kill_and_remove_all(void)
{
	/* never block on the lock: the thread that holds it (for microseconds) may be one the guard
	 * is ending; a few tries, then the children are killed without it (PR_SET_PDEATHSIG would do
	 * it anyway) but no directory is removed: a path read while another thread writes it could
	 * name anything */
	atomic_store(&live_closed, true);
	bool locked = false;
	for (double deadline = hist_now_ms() + GUARD_LOCK_MS; !locked && hist_now_ms() < deadline;
	     hist_sleep_us(1000))
		locked = pthread_mutex_trylock(&live.mu) == 0;
	pid_t pids[LIVE_MAX];
	for (int i = 0; i < LIVE_MAX; i++) {
		pids[i] = live.pids[i];
		kill_group(pids[i], SIGKILL);
	}
	reap_killed(pids);
	if (!locked)
		return;
	for (int i = 0; i < LIVE_MAX; i++)
		if (live.dirs[i][0]) {
			/* one more try: a file made while the first pass walked */
			if (rm_at(AT_FDCWD, live.dirs[i], 0) < 0)
				rm_at(AT_FDCWD, live.dirs[i], 0);
			live.dirs[i][0] = '\0';
		}
	pthread_mutex_unlock(&live.mu);
}
