/*
 * lab_run.h — for the tests of a lab: run its binary as a user would, and read what it said.
 * Header-only; include it after <cmocka.h> in tests/test_<lab>.c. LAB_BIN_DIR is the build
 * directory, passed by CMake to every test.
 */
#ifndef LAB_TEST_LAB_RUN_H
#define LAB_TEST_LAB_RUN_H

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h> /* openpty: glibc; the suite is Linux only (docs/architecture.md) */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lab.h"
#include "pg.h"
#include "redis.h"

/*
 * A lab must be gone within 2 s of Ctrl-C (docs/architecture.md). The tests allow twice that:
 * the sanitizer build runs about 3x slower and the machine is a shared 2-core one; a lab that
 * hangs or waits out a phase is what they catch, and those take far longer.
 */
#define LAB_INTERRUPT_BOUND_MS 4000

/*
 * Runs LAB_BIN_DIR/lab-<lab> <args> with env's assignments before it (NULL: none) and stdin
 * from /dev/null. Fills out with what it printed on stdout and errout with its stderr, each
 * NUL-terminated and cut to its buffer. Returns its exit code, -1 when it did not exit (a
 * signal, a sanitizer abort). The test fails if the program cannot be started.
 */
__attribute__((unused)) static int lab_run(const char *lab, const char *env, const char *args, char *out,
                                           size_t outlen, char *errout, size_t errlen)
{
	char cmd[1024], path[512];
	snprintf(path, sizeof(path), "%s/%s.%d.stderr", LAB_BIN_DIR, lab, (int)getpid());
	snprintf(cmd, sizeof(cmd), "%s %s/lab-%s %s 2>%s </dev/null", env ? env : "", LAB_BIN_DIR, lab, args,
	         path);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = fread(out, 1, outlen - 1, p);
	out[n] = '\0';
	int status = pclose(p);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	n = fread(errout, 1, errlen - 1, f);
	errout[n] = '\0';
	fclose(f);
	remove(path);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static double lab_run_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/*
 * Starts LAB_BIN_DIR/lab-<lab> <args> (through /bin/sh, stdin from /dev/null, stderr into
 * errout), reads its stdout until it holds marker (a phase title: lab_phase flushes), then sends
 * sig. Returns the exit code (-1 when a signal ended it); *stop_ms gets the time from the
 * signal to the exit, out what it printed. The test fails if the marker does not show within
 * wait_ms or the lab does not exit within LAB_INTERRUPT_BOUND_MS after the signal (it is then
 * killed).
 */
__attribute__((unused)) static int lab_interrupt(const char *lab, const char *args, const char *marker,
                                                 int sig, int wait_ms, double *stop_ms, char *out,
                                                 size_t outlen, char *errout, size_t errlen)
{
	int outp[2], errp[2];
	assert_int_equal(pipe(outp), 0);
	assert_int_equal(pipe(errp), 0);
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "exec %s/lab-%s %s </dev/null", LAB_BIN_DIR, lab, args);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(outp[1], 1);
		dup2(errp[1], 2);
		close(outp[0]), close(outp[1]), close(errp[0]), close(errp[1]);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(outp[1]), close(errp[1]);
	fcntl(outp[0], F_SETFL, O_NONBLOCK);
	fcntl(errp[0], F_SETFL, O_NONBLOCK);
	size_t n = 0, en = 0;
	out[0] = errout[0] = '\0';
	bool sent = false, out_open = true, err_open = true;
	double start = lab_run_now_ms(), signalled = 0;
	while (out_open || err_open) {
		double now = lab_run_now_ms();
		if (!sent && strstr(out, marker)) {
			kill(pid, sig);
			sent = true;
			signalled = now;
		}
		if (!sent && now - start > wait_ms)
			break;
		if (sent && now - signalled > LAB_INTERRUPT_BOUND_MS)
			break;
		struct pollfd fds[2] = {{out_open ? outp[0] : -1, POLLIN, 0},
		                        {err_open ? errp[0] : -1, POLLIN, 0}};
		poll(fds, 2, 50);
		if (out_open) {
			/* once out is full, what follows is read and dropped: a lab blocked on a full pipe
			 * would look like one that does not exit */
			char scratch[4096];
			bool full = n + 1 >= outlen;
			ssize_t r = full ? read(outp[0], scratch, sizeof(scratch))
			                 : read(outp[0], out + n, outlen - 1 - n);
			if (r > 0 && !full)
				n += (size_t)r, out[n] = '\0';
			else if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
				out_open = false;
		}
		if (err_open) {
			char scratch[4096];
			bool full = en + 1 >= errlen;
			ssize_t r = full ? read(errp[0], scratch, sizeof(scratch))
			                 : read(errp[0], errout + en, errlen - 1 - en);
			if (r > 0 && !full)
				en += (size_t)r, errout[en] = '\0';
			else if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
				err_open = false;
		}
	}
	int status = 0;
	/* the pipes close a moment before the process can be reaped: poll for it until the bound */
	bool exited = false;
	while (!(exited = waitpid(pid, &status, WNOHANG) == pid) && sent &&
	       lab_run_now_ms() - signalled < LAB_INTERRUPT_BOUND_MS)
		usleep(5000);
	if (!exited) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	*stop_ms = lab_run_now_ms() - signalled;
	close(outp[0]), close(errp[0]);
	if (!sent)
		fail_msg("lab-%s never printed \"%s\" within %d ms; it printed:\n%s\n%s", lab, marker,
		         wait_ms, out, errout);
	if (!exited)
		fail_msg("lab-%s was still running %d ms after the signal; it printed:\n%s\n%s", lab,
		         LAB_INTERRUPT_BOUND_MS, out, errout);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/*
 * lab_pty_finish's bound on a whole run: a --quick run takes under 10 s, the sanitizer build about
 * 3x that on a busy machine; a lab that waits for input nobody typed is what it catches.
 */
#define LAB_PTY_BOUND_MS 120000

/*
 * A child on a pseudo-terminal of its own, as a person at a terminal runs a program: its
 * controlling terminal, in a session of its own, TERM=dumb so the screen holds no colour codes.
 * stdin and stderr are the terminal, stdout too unless stdout_fd >= 0 (then that fd: a pipe for a
 * --json document). The child runs body(arg) and exits with what it returns. typed is written to
 * the terminal at once, as a person typing ahead: the line discipline hands the program one line
 * per read, and "\004" at the start of a line is Ctrl-D. Returns the pid; *master is the
 * terminal's other end, for lab_pty_finish.
 */
__attribute__((unused)) static pid_t lab_pty_start(int (*body)(void *), void *arg, int stdout_fd,
                                                   const char *typed, int *master)
{
	int slave;
	assert_int_equal(openpty(master, &slave, NULL, NULL, NULL), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		setsid();
		ioctl(slave, TIOCSCTTY, 0);
		dup2(slave, 0), dup2(stdout_fd >= 0 ? stdout_fd : slave, 1), dup2(slave, 2);
		close(*master), close(slave);
		if (stdout_fd > 2)
			close(stdout_fd);
		setenv("TERM", "dumb", 1);
		_exit(body(arg));
	}
	close(slave);
	size_t len = strlen(typed);
	assert_int_equal(write(*master, typed, len), (ssize_t)len);
	return pid;
}

/*
 * Reads the screen of lab_pty_start's child into out until it closes the terminal (NUL-terminated,
 * cut to outlen: what follows is read and dropped, so the child never blocks on a full terminal),
 * reaps it and closes master. Returns its exit code, -1 when a signal ended it. The test fails if
 * it is still running LAB_PTY_BOUND_MS later (it is then killed); what names it in that message.
 */
__attribute__((unused)) static int lab_pty_finish(pid_t pid, int master, const char *what, char *out,
                                                  size_t outlen)
{
	size_t n = 0;
	out[0] = '\0';
	double start = lab_run_now_ms();
	bool timed_out = false;
	for (;;) {
		if (lab_run_now_ms() - start > LAB_PTY_BOUND_MS) {
			timed_out = true;
			break;
		}
		struct pollfd p = {master, POLLIN, 0};
		if (poll(&p, 1, 100) <= 0)
			continue;
		char scratch[4096];
		bool full = n + 1 >= outlen;
		ssize_t r =
		        full ? read(master, scratch, sizeof(scratch)) : read(master, out + n, outlen - 1 - n);
		if (r > 0 && !full)
			n += (size_t)r, out[n] = '\0';
		else if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
			break; /* EIO: the program and all it started closed the terminal */
	}
	int status = 0;
	if (timed_out)
		kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	close(master);
	if (timed_out)
		fail_msg("%s was still running %d ms later; the screen:\n%s", what, LAB_PTY_BOUND_MS, out);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int lab_pty_exec_cb(void *cmd)
{
	execl("/bin/sh", "sh", "-c", (const char *)cmd, (char *)NULL);
	return 127;
}

/*
 * Runs LAB_BIN_DIR/lab-<lab> <args> (through /bin/sh) on a pseudo-terminal of its own
 * (lab_pty_start) after typing `typed` into it; out gets the screen until it exits, the terminal's
 * echo of typed included (lab_pty_finish). Returns the exit code, -1 when a signal ended it.
 */
__attribute__((unused)) static int lab_run_pty(const char *lab, const char *args, const char *typed,
                                               char *out, size_t outlen)
{
	char cmd[1024], what[1200];
	snprintf(cmd, sizeof(cmd), "exec %s/lab-%s %s", LAB_BIN_DIR, lab, args);
	snprintf(what, sizeof(what), "lab-%s %s", lab, args);
	int master;
	pid_t pid = lab_pty_start(lab_pty_exec_cb, cmd, -1, typed, &master);
	return lab_pty_finish(pid, master, what, out, outlen);
}

/*
 * Fails the test when schema still exists in PostgreSQL or any key under prefix in Redis
 * (redis_prefix NULL: PostgreSQL only): what a lab must not leave behind.
 */
__attribute__((unused)) static void lab_assert_nothing_left(const char *schema, const char *redis_prefix)
{
	char err[512];
	PGconn *conn = pg_connect(pg_url_default(), err, sizeof(err));
	if (!conn)
		fail_msg("cannot connect to PostgreSQL to check for leftovers: %s", err);
	const char *params[] = {schema};
	int64_t schemas = -1;
	int rc = pg_query_int64(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", 1, params,
	                        &schemas, err, sizeof(err));
	PQfinish(conn);
	if (rc < 0)
		fail_msg("cannot count schemas: %s", err);
	if (schemas != 0)
		fail_msg("schema %s was left behind", schema);
	if (!redis_prefix)
		return;
	redisContext *c = redis_connect_url(redis_url_default(), 2000, err, sizeof(err));
	if (!c)
		fail_msg("cannot connect to Redis to check for leftovers: %s", err);
	char pattern[256];
	snprintf(pattern, sizeof(pattern), "%s*", redis_prefix);
	redisReply *r = redis_cmd(c, err, sizeof(err), "KEYS %s", pattern);
	size_t keys = r && r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
	bool ok = r != NULL;
	if (r)
		freeReplyObject(r);
	redisFree(c);
	if (!ok)
		fail_msg("cannot list keys %s: %s", pattern, err);
	if (keys != 0)
		fail_msg("%zu keys under %s were left behind", keys, redis_prefix);
}

/*
 * The lab-<tag>-<pid>- directories (common/child.h's child_tmpdir) under dir; pid 0: of any
 * process (a lab binary the test ran).
 */
__attribute__((unused)) static int lab_tmpdirs(const char *dir, const char *tag, pid_t pid)
{
	char prefix[64];
	if (pid)
		snprintf(prefix, sizeof(prefix), "lab-%s-%d-", tag, (int)pid);
	else
		snprintf(prefix, sizeof(prefix), "lab-%s-", tag);
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
	if (d)
		closedir(d);
	return n;
}

/* Processes whose command line holds needle (a server a lab started with its directory in argv). */
__attribute__((unused)) static int lab_processes_with(const char *needle)
{
	DIR *d = opendir("/proc");
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char path[300], cmd[8192];
		snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		size_t len = fread(cmd, 1, sizeof(cmd) - 1, f);
		fclose(f);
		for (size_t i = 0; i < len; i++)
			if (cmd[i] == '\0')
				cmd[i] = ' ';
		cmd[len] = '\0';
		n += strstr(cmd, needle) != NULL;
	}
	if (d)
		closedir(d);
	return n;
}

/*
 * A TMPDIR of the test's own (/tmp/test-<lab>-<what>-<pid>), set in the environment, so what the
 * lab binary it runs makes there can be counted and found by its directory.
 */
__attribute__((unused)) static void lab_private_tmpdir(char *dir, size_t len, const char *lab,
                                                       const char *what)
{
	snprintf(dir, len, "/tmp/test-%s-%s-%d", lab, what, (int)getpid());
	if (mkdir(dir, 0700) != 0)
		fail_msg("cannot make %s: %s", dir, strerror(errno));
	setenv("TMPDIR", dir, 1);
}

/* Whether a screen (lab_run_pty's) shows text; when not, prints the screen, for the failure. */
__attribute__((unused)) static bool lab_screen_shows(const char *screen, const char *text)
{
	if (strstr(screen, text))
		return true;
	print_message("not on the screen: \"%s\"\n--- screen ---\n%s\n---\n", text, screen);
	return false;
}

/*
 * What each phase's --predict question (struct lab_question) measured in one <lab>_run, for the
 * lab's test to assert beside its verdict: the answers a person is scored against are numbers
 * the run really produced, and every phase asks one.
 *
 *	struct lab_answers answers = {0};
 *	cfg.hooks = lab_answers_hooks(&answers, &cfg, result);
 *	assert_int_equal(n_plus_one_run(&cfg, result, err, sizeof(err)), 0);
 *	lab_assert_every_phase_asks(&answers, N_PLUS_ONE_PHASES);
 *	assert_true(lab_answer(&answers, "loop") == cfg.users + 1);
 */
#define LAB_ANSWERS_MAX 16
struct lab_answers {
	const void *cfg, *result;
	int phases; /* phases that ended */
	int n;      /* of them, those with a question */
	struct {
		const char *phase;
		const struct lab_question *q;
		double measured;
	} a[LAB_ANSWERS_MAX];
};

static void lab_answers_end_cb(int phase, const struct lab_phase_def *def, void *arg)
{
	(void)phase;
	struct lab_answers *a = arg;
	a->phases++;
	if (!def->question || a->n >= LAB_ANSWERS_MAX)
		return;
	a->a[a->n].phase = def->name;
	a->a[a->n].q = def->question;
	a->a[a->n].measured = def->question->measured ? def->question->measured(a->cfg, a->result) : NAN;
	a->n++;
}

__attribute__((unused)) static struct lab_phase_hooks lab_answers_hooks(struct lab_answers *a,
                                                                        const void *cfg, const void *result)
{
	a->cfg = cfg;
	a->result = result;
	return (struct lab_phase_hooks){NULL, lab_answers_end_cb, a};
}

/* What phase's question measured; the test fails when that phase asked none. */
__attribute__((unused)) static double lab_answer(const struct lab_answers *a, const char *phase)
{
	for (int i = 0; i < a->n; i++)
		if (!strcmp(a->a[i].phase, phase))
			return a->a[i].measured;
	fail_msg("phase \"%s\" asked no question (or did not end)", phase);
	return NAN;
}

/*
 * Every one of nphases phases ran and asked a question, and this run decided each: a number, or a
 * choice among those offered.
 */
__attribute__((unused)) static void lab_assert_every_phase_asks(const struct lab_answers *a, int nphases)
{
	assert_int_equal(a->phases, nphases);
	assert_int_equal(a->n, nphases);
	for (int i = 0; i < a->n; i++) {
		const struct lab_question *q = a->a[i].q;
		double m = a->a[i].measured;
		if (!isfinite(m))
			fail_msg("phase \"%s\": its question was not decided by this run", a->a[i].phase);
		if (q->kind == LAB_ANSWER_CHOICE) {
			int n = 0;
			while (n < LAB_CHOICES_MAX && q->choices[n])
				n++;
			if (m < 0 || m >= n || m != (double)(int)m)
				fail_msg("phase \"%s\": answer %g is not one of its %d choices",
				         a->a[i].phase, m, n);
		}
	}
}

#endif
