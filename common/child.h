/*
 * child.h — a server program the lab starts and owns: nginx in front of an API today, a browser,
 * PgBouncer or a replica tomorrow. The lab makes a private temporary directory, writes the
 * program's config there, starts it with an argv (fork + exec, no shell), waits until its TCP port
 * on 127.0.0.1 accepts, and stops it with SIGTERM, then SIGKILL past a deadline, and reaps it.
 *
 * The child never outlives the lab:
 *   - it is started with prctl(PR_SET_PDEATHSIG, SIGKILL), so when the lab dies by any route (an
 *     error, the Ctrl-C guard of common/lab.c, which _exits, a SIGKILL), the kernel kills it;
 *     the signal comes when the *thread* that started the child ends, so start children from a
 *     thread that lives as long as they do (a lab's main thread);
 *   - it runs in a process group of its own, so a Ctrl-C at the terminal reaches the lab only,
 *     which then stops the child in order;
 *   - it starts with no signal blocked (the lab blocks SIGINT and SIGTERM in every thread) and
 *     every signal at its default (the lab ignores SIGPIPE), and with only stdin (/dev/null),
 *     stdout and stderr (both appended to <dir>/<name>.log) open: none of the lab's sockets leak
 *     into it.
 *
 * Temporary directories are named <TMPDIR or /tmp>/lab-<tag>-<pid>-XXXXXX (mkdtemp) and hold an
 * owner file (CHILD_OWNER_FILE) that the process keeps locked (flock) while it lives. On Ctrl-C
 * the guard of common/lab.c removes them (child_kill_and_remove_all); a lab killed the hard way
 * (SIGKILL) cannot, so child_tmpdir removes those left by dead labs the next time any lab makes
 * one: only a real directory (no symlink), ours (uid, mode 0700), named so, whose pid is no
 * process and whose owner file nobody holds locked (a live lab in another pid namespace does).
 *
 * Errors: functions that can fail return -1 (or NULL) and write one line into err (errlen bytes).
 */
#ifndef LAB_CHILD_H
#define LAB_CHILD_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define CHILD_NAME_LEN 32
/* in every directory child_tmpdir makes: locked while its process lives (see child_tmpdir) */
#define CHILD_OWNER_FILE ".lab-owner"
/* how long child_start waits for the port when the spec says 0 */
#define CHILD_READY_DEFAULT_MS 5000
/* how long child_stop waits after SIGTERM when given 0 */
#define CHILD_STOP_DEFAULT_MS 2000

struct child_spec {
	const char *name;        /* "nginx": names the log (<dir>/nginx.log) and the messages */
	const char *const *argv; /* argv[0] is the program's path (no PATH search); NULL-terminated */
	const char *dir;         /* its working directory and where its log goes (child_tmpdir) */
	int port;                /* wait until 127.0.0.1:port accepts; 0 = do not wait */
	/*
	 * NULL, or a pid file the program writes once its port is bound (nginx's "pid"): then ready
	 * means the port accepts AND this file holds the child's pid. Without it, a port that another
	 * process took between child_free_port and the child's bind() looks ready (it accepts), and
	 * the lab would talk to a stranger; with it, that start fails, and the caller can try another
	 * port. Remove a stale one before child_start.
	 */
	const char *ready_file;
	int ready_timeout_ms; /* 0 = CHILD_READY_DEFAULT_MS */
	/*
	 * NULL, or a user to run the program as when the lab runs as root (initdb and postgres refuse
	 * root): child_start then chowns dir to that user and its primary group, and the child takes
	 * the user's groups, gid and uid before exec; child_start fails, naming the user, when there
	 * is no such user. Ignored when the lab is not root (the child runs as the lab does). A
	 * directory chowned so is no longer swept by child_tmpdir after a lab killed the hard way
	 * (the sweep takes only its own uid's); the Ctrl-C guard still removes it.
	 */
	const char *user;
};

struct child {
	pid_t pid; /* 0 when not running (never started, or reaped) */
	char name[CHILD_NAME_LEN];
	char log_path[PATH_MAX];
	int port;
	int exit_status; /* after child_stop: the wait status waitpid gave */
};

/*
 * Makes a private directory (mode 0700) for a child's config, log and data: $TMPDIR or /tmp,
 * lab-<tag>-<pid>-XXXXXX, into out, with its owner file locked until child_rmtree (or the exit).
 * Before that, removes the directories of dead labs (see above). -1 and err when it cannot be made.
 */
int child_tmpdir(const char *tag, char *out, size_t outlen, char *err, size_t errlen);

/*
 * Removes dir and everything under it: a symlink inside is removed, never followed; a tree deeper
 * than 32 levels is refused. Releases the owner lock of a child_tmpdir directory. -1 and err on
 * failure. NULL: 0.
 */
int child_rmtree(const char *dir, char *err, size_t errlen);

/*
 * A TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads the port the kernel
 * chose, closes. Racy by nature: another process may take it before the child binds it. The
 * child then fails to bind and exits, and child_start says so with its log; the caller may try
 * again with a new port. (Passing the bound socket to the child would close the race, but most
 * servers cannot take a listening socket from their parent.) -1 and err on failure.
 */
int child_free_port(char *err, size_t errlen);

/*
 * Finds a program: $env_var when set (and then only it: a wrong value is the user's to fix), else
 * name in each directory of $PATH, else in each of fallback_dirs (NULL-terminated; may be NULL).
 * The path into out and 0; or -1 with what was tried in err ("$LAB_NGINX unset, PATH
 * (/usr/bin:/bin), /usr/sbin/nginx, /usr/local/sbin/nginx").
 */
int child_find_program(const char *name, const char *env_var, const char *const *fallback_dirs, char *out,
                       size_t outlen, char *err, size_t errlen);

/*
 * Finds the headless browser the suite uses (lab-cors, labsuite report): $LAB_CHROMIUM when set,
 * else chromium, then chromium-browser, in $PATH, /usr/bin, /usr/lib/chromium and /snap/bin.
 * The path into out and 0; or -1 with "Chromium not found (tried ...)" in err, to which the
 * caller adds why it needs one and how to install it (scripts/bootstrap).
 */
int child_find_chromium(char *out, size_t outlen, char *err, size_t errlen);

/*
 * Starts headless Chromium (a path from child_find_chromium) as a child in dir, with everything it
 * writes kept there: HOME, TMPDIR, XDG_CONFIG_HOME and XDG_CACHE_HOME set through /usr/bin/env
 * (which execs Chromium in its place: the pid, the group and the death signal stay its own) and
 * its profile in dir/profile; the flags every headless run of the suite wants (--headless=new, no
 * GPU, no first run, no extensions, no background networking or sync; --no-sandbox as root only,
 * since the sandbox needs an unprivileged user and the pages are the suite's own); then extra
 * (NULL-terminated, at most CHILD_CHROMIUM_EXTRA), then url. Its stdout (a --dump-dom) and stderr
 * go to c->log_path. child_start's contract otherwise: -1 and err when it cannot start.
 */
#define CHILD_CHROMIUM_EXTRA 12
int child_start_chromium(struct child *c, const char *chromium, const char *dir, const char *const *extra,
                         const char *url, char *err, size_t errlen);

/*
 * Starts spec->argv in spec->dir (see the header comment for what the child inherits) and, when
 * spec->port is set, waits until 127.0.0.1:port accepts a connection. Fails, with the last lines
 * of the child's log in err, when the child exits before that (at once, say, when exec fails: the
 * log then says why) or the port does not accept within the timeout (the child is then stopped).
 * On failure nothing is left running and c->pid is 0.
 */
int child_start(struct child *c, const struct child_spec *spec, char *err, size_t errlen);

/* True while the child runs (it was started, and has not exited or been reaped). */
bool child_running(struct child *c);

/*
 * Stops the child: SIGTERM to it, then SIGKILL when it has not exited within grace_ms
 * (0 = CHILD_STOP_DEFAULT_MS), and reaps it. Returns 0 when SIGTERM was enough, 1 when it took
 * SIGKILL; a child never started or already reaped: 0. Can't fail otherwise.
 */
int child_stop(struct child *c, int grace_ms);

/*
 * For the Ctrl-C guard of common/lab.c, on its way out: SIGKILL to every child still running (and
 * its group), waits (200 ms at most) until they are gone, and removes every directory
 * child_tmpdir made that was not removed yet, so an interrupted lab leaves no process and no
 * directory behind. Never blocks on a lock: when its table stays locked for 100 ms, it kills
 * and leaves the directories (to the next sweep). From its first call on, child_tmpdir and
 * child_start fail ("the lab is ending"): a thread still running meanwhile (the lab's main thread,
 * about to start a browser) makes no directory and starts no child after the guard has looked.
 */
void child_kill_and_remove_all(void);
/*
 * The last lines of the file at path, a log (at most about outlen bytes, on one line, " | "
 * between); "(no log at PATH)" or "(its log PATH is empty)" when it has none.
 */
void child_file_tail(const char *path, char *out, size_t outlen);
/* child_file_tail of the child's log. */
void child_log_tail(const struct child *c, char *out, size_t outlen);

#endif
