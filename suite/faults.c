/*
 * faults.c — the fault matrix's private servers and the faults done to them, and a lab's --serve
 * as a child process (faults.h has the contracts; faults_internal.h the lab's state).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "faults.h"
#include "faults_internal.h"
#include "pg.h"
#include "proxy.h"
#include "redis.h"
#include "run.h"

/*
 * Runs argv (no shell) with extra environment (NAME=value, NULL-terminated), its output in log,
 * for at most timeout_ms (then SIGKILL). 0 when it exited 0; -1 and its last line in err.
 */
static int run_argv(const char *const *argv, const char *const *env, const char *log, int timeout_ms,
                    char *err, size_t errlen)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		int in = open("/dev/null", O_RDONLY);
		if (fd < 0 || in < 0)
			_exit(126);
		dup2(in, 0), dup2(fd, 1), dup2(fd, 2);
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		for (int i = 0; env && env[i]; i++)
			putenv((char *)env[i]);
		execv(argv[0], (char *const *)argv);
		dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	double start = hist_now_ms();
	int status = 0;
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (hist_now_ms() - start > timeout_ms) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			snprintf(err, errlen, "%s did not finish within %d ms", argv[0], timeout_ms);
			return -1;
		}
		hist_sleep_us(10000);
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	char last[512];
	suite_file_last_line(log, last, sizeof(last));
	snprintf(err, errlen, "%s failed (status %d): %s", argv[0], status, last[0] ? last : "(no output)");
	return -1;
}

/* labenv up, down or pg-restart with the private state dir and ports. */
static int labenv(struct faults_env *e, const char *what, char *err, size_t errlen)
{
	char st[PATH_MAX + 32], pg[48], rd[48], log[PATH_MAX + 32];
	snprintf(st, sizeof(st), "LAB_STATE_DIR=%s", e->state_dir);
	snprintf(pg, sizeof(pg), "LAB_PG_PORT=%d", e->pg_port);
	snprintf(rd, sizeof(rd), "LAB_REDIS_PORT=%d", e->redis_port);
	snprintf(log, sizeof(log), "%s/labenv-%s.log", e->state_dir, what);
	const char *argv[] = {"/bin/bash", e->labenv, what, NULL};
	const char *env[] = {st, pg, rd, NULL};
	/* a first up runs initdb: seconds; a later one copies the template */
	return run_argv(argv, env, log, 60000, err, errlen);
}

int faults_env_up(struct faults_env *e, const char *labenv_path, const char *state_dir, char *err,
                  size_t errlen)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->labenv, sizeof(e->labenv), "%s", labenv_path);
	/* absolute: labenv hands it to redis-server, which opens its log after a chdir */
	if ((mkdir(state_dir, 0755) < 0 && errno != EEXIST) || !realpath(state_dir, e->state_dir)) {
		snprintf(err, errlen, "cannot make %s: %s", state_dir, strerror(errno));
		return -1;
	}
	snprintf(e->run_dir, sizeof(e->run_dir), "%s/run", e->state_dir);
	if (mkdir(e->run_dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot make %s: %s", e->run_dir, strerror(errno));
		return -1;
	}
	e->pg_port = child_free_port(err, errlen);
	e->redis_port = child_free_port(err, errlen);
	if (e->pg_port < 0 || e->redis_port < 0)
		return -1;
	if (e->redis_port == e->pg_port) {
		snprintf(err, errlen, "the kernel gave port %d twice", e->pg_port);
		return -1;
	}
	e->up = true; /* from here on, down stops what up may have started */
	if (labenv(e, "up", err, errlen) < 0)
		return -1;
	snprintf(e->pg_url, sizeof(e->pg_url), "postgres://lab:lab@127.0.0.1:%d/lab", e->pg_port);
	snprintf(e->redis_url, sizeof(e->redis_url), "redis://127.0.0.1:%d/0", e->redis_port);
	struct proxy_config pc = {.upstream_host = "127.0.0.1", .upstream_port = e->pg_port};
	e->proxy = proxy_start(&pc, err, errlen);
	if (!e->proxy)
		return -1;
	snprintf(e->labs_pg_url, sizeof(e->labs_pg_url), "postgres://lab:lab@127.0.0.1:%d/lab",
	         proxy_port(e->proxy));
	return 0;
}

void faults_env_down(struct faults_env *e)
{
	proxy_free(e->proxy);
	e->proxy = NULL;
	if (!e->up)
		return;
	char err[512];
	if (labenv(e, "down", err, sizeof(err)) < 0)
		fprintf(stderr, "faults: labenv down: %s\n", err);
	e->up = false;
}

int faults_pg_restart(struct faults_env *e, char *err, size_t errlen)
{
	/* labenv knows the cluster it started (its state dir), its binaries and its owner */
	return labenv(e, "pg-restart", err, errlen);
}

int faults_backends_kill(struct faults_env *e, char *err, size_t errlen)
{
	PGconn *c = pg_connect(e->pg_url, err, errlen);
	if (!c)
		return -1;
	int64_t n = -1;
	int rc = pg_query_int64(c,
	                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
	                        " WHERE application_name LIKE 'lab-%' AND pid <> pg_backend_pid()",
	                        0, NULL, &n, err, errlen);
	PQfinish(c);
	return rc < 0 ? -1 : (int)n;
}

int faults_redis_stop(struct faults_env *e, char *err, size_t errlen)
{
	redisContext *c = redis_connect_url(e->redis_url, 2000, err, errlen);
	if (!c)
		return -1;
	/* a server that shut down answers nothing: a NULL reply is the expected one */
	redisReply *r = redisCommand(c, "SHUTDOWN NOSAVE");
	bool refused = r && r->type == REDIS_REPLY_ERROR;
	if (refused)
		snprintf(err, errlen, "SHUTDOWN NOSAVE: %s", r->str);
	if (r)
		freeReplyObject(r);
	redisFree(c);
	if (refused)
		return -1;
	/* gone once a new connection is refused */
	for (int i = 0; i < 200; i++) {
		char said[256];
		redisContext *p = redis_connect_url(e->redis_url, 200, said, sizeof(said));
		if (!p)
			return 0;
		redisFree(p);
		hist_sleep_us(10000);
	}
	snprintf(err, errlen, "Redis still answers 2 s after SHUTDOWN NOSAVE");
	return -1;
}

int faults_redis_start(struct faults_env *e, char *err, size_t errlen)
{
	return labenv(e, "up", err, errlen);
}

int faults_net_cut(struct faults_env *e, bool cut, char *err, size_t errlen)
{
	if (proxy_refuse(e->proxy, cut) < 0 || (cut && proxy_cut(e->proxy) < 0)) {
		snprintf(err, errlen, "the proxy did not answer");
		return -1;
	}
	return 0;
}

int faults_leftovers(const char *name, const char *pg_url, const char *redis_url, int *schemas, int *keys,
                     char *err, size_t errlen)
{
	char schema[64], pattern[80];
	snprintf(schema, sizeof(schema), "lab_%s", name);
	for (char *p = schema; *p; p++)
		*p = *p == '-' ? '_' : *p;
	snprintf(pattern, sizeof(pattern), "lab:%s:*", name);
	PGconn *c = pg_connect(pg_url, err, errlen);
	if (!c)
		return -1;
	const char *params[] = {schema};
	int64_t n = -1;
	int rc = pg_query_int64(c, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", 1, params, &n, err,
	                        errlen);
	PQfinish(c);
	if (rc < 0)
		return -1;
	*schemas = (int)n;
	redisContext *r = redis_connect_url(redis_url, 2000, err, errlen);
	if (!r)
		return -1;
	redisReply *k = redis_cmd(r, err, errlen, "KEYS %s", pattern);
	*keys = k && k->type == REDIS_REPLY_ARRAY ? (int)k->elements : 0;
	bool ok = k != NULL;
	if (k)
		freeReplyObject(k);
	redisFree(r);
	return ok ? 0 : -1;
}

/* ---- a lab's process ---- */

/* The descriptors of a lab's stdin, stdout and stderr, those that were opened. */
static void faults_fds_close(int in, int out, int er)
{
	int fds[] = {in, out, er};
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

struct faults_lab *faults_lab_spawn(const char *bin_dir, const char *name, const char *pg_url,
                                    const char *redis_url, const char *dir, char *err, size_t errlen)
{
	const struct faults_recipe *recipe = faults_recipe_find(name);
	if (!recipe) {
		snprintf(err, errlen, "no recipe for lab %s", name);
		return NULL;
	}
	struct faults_lab *l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->recipe = recipe;
	pthread_mutex_init(&l->mu, NULL);
	hist_init(&l->interval);
	snprintf(l->name, sizeof(l->name), "%s", name);
	snprintf(l->out_path, sizeof(l->out_path), "%s/%s.out", dir, name);
	snprintf(l->err_path, sizeof(l->err_path), "%s/%s.err", dir, name);
	char bin[PATH_MAX], pg[200], rd[200];
	snprintf(bin, sizeof(bin), "%s/lab-%s", bin_dir, name);
	snprintf(pg, sizeof(pg), "LAB_PG_URL=%s", pg_url);
	snprintf(rd, sizeof(rd), "LAB_REDIS_URL=%s", redis_url);
	/* opened (and emptied) once here, before the fork, as suite/run.c's run_start: a read of the
	 * last run's "listening on" (another port, a lab long gone) before the child got to truncate
	 * them sent the first request nowhere */
	int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int out = open(l->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int er = open(l->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (in < 0 || out < 0 || er < 0) {
		snprintf(err, errlen, "cannot open %s: %s",
		         in < 0    ? "/dev/null"
		         : out < 0 ? l->out_path
		                   : l->err_path,
		         strerror(errno));
		faults_fds_close(in, out, er);
		free(l);
		return NULL;
	}
	fflush(NULL);
	l->pid = fork();
	if (l->pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		faults_fds_close(in, out, er);
		free(l);
		return NULL;
	}
	if (l->pid == 0) {
		/* it dies (and cleans up) with us: SIGINT is its Ctrl-C */
		prctl(PR_SET_PDEATHSIG, SIGINT);
		dup2(in, 0), dup2(out, 1), dup2(er, 2);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		putenv(pg), putenv(rd), putenv((char *)"NO_COLOR=1");
		execl(bin, bin, "--serve", "--quick", "--port", "0", (char *)NULL);
		dprintf(2, "cannot run %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	faults_fds_close(in, out, er);
	return l;
}

int faults_lab_ready(struct faults_lab *l, int timeout_ms, char *err, size_t errlen)
{
	if (faults_lab_wait_port(l, timeout_ms, err, errlen) < 0)
		return -1;
	return l->recipe->prepare ? l->recipe->prepare(l, err, errlen) : 0;
}

struct faults_lab *faults_lab_start(const char *bin_dir, const char *name, const char *pg_url,
                                    const char *redis_url, const char *dir, char *err, size_t errlen)
{
	struct faults_lab *l = faults_lab_spawn(bin_dir, name, pg_url, redis_url, dir, err, errlen);
	if (l && faults_lab_ready(l, FAULTS_START_MS, err, errlen) < 0) {
		faults_lab_free(l);
		return NULL;
	}
	return l;
}

int faults_lab_wait_port(struct faults_lab *l, int timeout_ms, char *err, size_t errlen)
{
	static const char said[] = "listening on http://127.0.0.1:";
	double start = hist_now_ms();
	for (;;) {
		char buf[8192] = "";
		FILE *f = fopen(l->out_path, "r");
		size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
		if (f)
			fclose(f);
		buf[n] = '\0';
		/* ready when the whole of lab_serve_wait's text is there (its last line), so a recipe
		 * may read the help printed after "listening on" (authz's password) */
		const char *at = strstr(buf, said);
		if (at && strstr(at, "Ctrl-C to stop\n")) {
			l->port = atoi(at + strlen(said));
			return 0;
		}
		int status;
		char tail[400];
		if (!faults_lab_alive(l, &status)) {
			faults_lab_stderr_tail(l, tail, sizeof(tail));
			snprintf(err, errlen, "lab-%s --serve exited (status %d) before listening: %s",
			         l->name, status, tail);
			return -1;
		}
		if (hist_now_ms() - start > timeout_ms) {
			snprintf(err, errlen, "lab-%s --serve did not say where it listens within %d ms",
			         l->name, timeout_ms);
			return -1;
		}
		hist_sleep_us(20000);
	}
}

const char *faults_lab_name(const struct faults_lab *l)
{
	return l->name;
}

pid_t faults_lab_pid(const struct faults_lab *l)
{
	return l->pid;
}

bool faults_lab_writes(const struct faults_lab *l)
{
	return l->recipe->count != NULL;
}

bool faults_lab_uses_redis(const struct faults_lab *l)
{
	return l->recipe->redis;
}

bool faults_lab_alive(struct faults_lab *l, int *status)
{
	if (l->reaped) {
		*status = l->status;
		return false;
	}
	pid_t r = waitpid(l->pid, &l->status, WNOHANG);
	if (r == 0)
		return true;
	l->reaped = true;
	*status = l->status;
	return false;
}

void faults_lab_stderr_tail(const struct faults_lab *l, char *out, size_t outlen)
{
	child_file_tail(l->err_path, out, outlen);
}

bool faults_lab_sanitizer_report(const struct faults_lab *l)
{
	FILE *f = fopen(l->err_path, "r");
	if (!f)
		return false;
	char line[1024];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, "AddressSanitizer") || strstr(line, "LeakSanitizer") ||
		        strstr(line, "runtime error:");
	fclose(f);
	return found;
}

void faults_lab_signal(struct faults_lab *l, int sig)
{
	l->signalled_ms = hist_now_ms();
	if (!l->reaped)
		kill(l->pid, sig);
}

int faults_lab_wait(struct faults_lab *l, int bound_ms, double *stop_ms)
{
	int status = 0;
	while (faults_lab_alive(l, &status)) {
		if (hist_now_ms() - l->signalled_ms > bound_ms) {
			kill(l->pid, SIGKILL);
			waitpid(l->pid, &status, 0);
			l->reaped = true;
			*stop_ms = hist_now_ms() - l->signalled_ms;
			return -1;
		}
		hist_sleep_us(5000);
	}
	*stop_ms = hist_now_ms() - l->signalled_ms;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void faults_lab_free(struct faults_lab *l)
{
	if (!l)
		return;
	faults_drive_stop(l);
	int status;
	if (faults_lab_alive(l, &status)) {
		kill(l->pid, SIGKILL);
		waitpid(l->pid, &status, 0);
	}
	pthread_mutex_destroy(&l->mu);
	free(l->events);
	free(l->outcomes);
	free(l);
}

/* ---- every lab at once (the matrix and the soak) ---- */

static void labs_say(FILE *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void labs_say(FILE *log, const char *fmt, ...)
{
	if (!log)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(log, fmt, ap);
	va_end(ap);
	fflush(log);
}

/*
 * All eight start at once, which on a loaded 2-core machine can keep one's first connect past
 * libpq's 2 s timeout (seen under ctest -j2 at load 11): hence the second start, alone. Starting
 * is not what the matrix proves; recovering is.
 */
int faults_labs_start(const char *bin_dir, const struct faults_env *e, FILE *log,
                      struct faults_lab *labs[FAULTS_LABS], char errs[FAULTS_LABS][FAULTS_ERR_LEN])
{
	for (int i = 0; i < FAULTS_LABS; i++) {
		errs[i][0] = '\0';
		labs[i] = faults_lab_spawn(bin_dir, faults_lab_name_at(i), e->labs_pg_url, e->redis_url,
		                           e->run_dir, errs[i], FAULTS_ERR_LEN);
	}
	for (int i = 0; i < FAULTS_LABS; i++)
		if (labs[i] && faults_lab_ready(labs[i], FAULTS_START_MS, errs[i], FAULTS_ERR_LEN) < 0) {
			faults_lab_free(labs[i]);
			labs_say(log, "  lab-%s starts again, alone (the first start: %s)\n",
			         faults_lab_name_at(i), errs[i]);
			labs[i] = faults_lab_start(bin_dir, faults_lab_name_at(i), e->labs_pg_url,
			                           e->redis_url, e->run_dir, errs[i], FAULTS_ERR_LEN);
			if (labs[i])
				errs[i][0] = '\0';
		}
	int running = 0;
	for (int i = 0; i < FAULTS_LABS; i++) {
		if (labs[i] && faults_drive_start(labs[i], FAULTS_THINK_MS, errs[i], FAULTS_ERR_LEN) < 0) {
			faults_lab_free(labs[i]);
			labs[i] = NULL;
		}
		running += labs[i] != NULL;
		labs_say(log, "  lab-%s %s%s\n", faults_lab_name_at(i),
		         labs[i] ? "serving" : "did not start: ", errs[i]);
	}
	return running;
}

/* all at once, as a machine's shutdown would */
void faults_labs_stop(struct faults_lab *labs[FAULTS_LABS], int exit_code[FAULTS_LABS],
                      double stop_ms[FAULTS_LABS])
{
	bool done[FAULTS_LABS] = {0};
	double signalled = hist_now_ms();
	for (int i = 0; i < FAULTS_LABS; i++)
		if (labs[i])
			faults_lab_signal(labs[i], SIGINT);
	for (bool waiting = true; waiting;) {
		waiting = false;
		for (int i = 0; i < FAULTS_LABS; i++) {
			int status;
			if (labs[i] && !done[i] && !faults_lab_alive(labs[i], &status)) {
				exit_code[i] = faults_lab_wait(labs[i], FAULTS_STOP_BOUND_MS, &stop_ms[i]);
				done[i] = true;
			}
			waiting |= labs[i] && !done[i];
		}
		if (waiting)
			hist_sleep_us(5000);
		if (waiting && hist_now_ms() - signalled > FAULTS_STOP_BOUND_MS)
			break;
	}
	for (int i = 0; i < FAULTS_LABS; i++)
		if (labs[i] && !done[i]) /* past the bound: SIGKILL */
			exit_code[i] = faults_lab_wait(labs[i], FAULTS_STOP_BOUND_MS, &stop_ms[i]);
}
