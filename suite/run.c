/*
 * run.c — running labs for labs and report (run.h says what it promises).
 *
 * Not common/child.h: a child there is a server with one log for stdout and stderr together,
 * and a lab's stdout is its --json document, to be read apart from its stderr. The promises are
 * the same ones (its own process group, a death signal, nothing left running on Ctrl-C).
 */
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "hist.h"
#include "lab.h"

#define POLL_US      20000
#define ERR_READ_MAX (1 << 20)

/*
 * The labs that run with nothing beside them, and why: found by reading each lab for a fixed
 * resource of its own or a judge that a neighbour's traffic or CPU load could fail. Every other
 * lab's judge holds counts (statements, charges, duplicates, bytes) or ratios measured with a
 * margin for a busy 2-core machine, and owns only its schema, its keys and free ports.
 */
static const struct {
	const char *lab;
	const char *why;
} ALONE[] = {
        {"consistency", "its replica set (labenv up --replicas: a second PostgreSQL cluster, its "
                        "standby, a Redis pair) on fixed ports, and the replication lag it times"},
        {"idempotency", "its crash story times retries against a 1 s lock timeout (one at once must "
                        "find the lock held, the next one past it must not), which a neighbour's CPU "
                        "load shifts: it failed so beside cors and indexing"},
        {"isolation", "a throwaway PostgreSQL cluster of its own (initdb, a crash by kill -9: a "
                      "burst of CPU and fsyncs), and its pairs of transactions timed to interleave"},
        {"pooling", "opens app instances until PostgreSQL refuses max_connections, so a "
                    "neighbour's connect would be refused too; and its throughput judged against "
                    "Little's law"},
        {"n-plus-one", "counts its statements in pg_stat_statements exactly, and times 101 round "
                       "trips against 1 through a delay proxy"},
        {"sql-injection", "reads secret bits from request times (time-blind, pg_sleep), which a "
                          "neighbour's CPU load misreads; counts its role's pg_stat_statements"},
        {"sql-vs-nosql", "judges latency and throughput ratios of Redis against PostgreSQL, "
                         "which a neighbour's CPU load skews"},
};

const char *suite_alone_reason(const char *name)
{
	for (size_t i = 0; i < sizeof(ALONE) / sizeof(ALONE[0]); i++)
		if (!strcmp(ALONE[i].lab, name))
			return ALONE[i].why;
	return NULL;
}

#define HELP_WIDTH  96
#define HELP_INDENT 17

/* Prints text from column `at` on, in lines of HELP_WIDTH columns, each next one indented to `at`. */
static void wrap(FILE *f, const char *text, int at)
{
	int col = at;
	for (const char *w = text; *w;) {
		size_t n = strcspn(w, " ");
		if (col > at && col + 1 + (int)n > HELP_WIDTH) {
			fprintf(f, "\n%*s", at, "");
			col = at;
		}
		fprintf(f, "%s%.*s", col > at ? " " : "", (int)n, w);
		col += (col > at) + (int)n;
		w += n;
		w += *w == ' ';
	}
	fputc('\n', f);
}

void suite_alone_help(FILE *f)
{
	fprintf(f, "labs run alone (nothing beside them), and why:\n");
	for (size_t i = 0; i < sizeof(ALONE) / sizeof(ALONE[0]); i++) {
		fprintf(f, "  %-*s", HELP_INDENT - 2, ALONE[i].lab);
		wrap(f, ALONE[i].why, HELP_INDENT);
	}
	fprintf(f, "every other lab runs beside others, --jobs at a time:\n%*s", HELP_INDENT, "");
	wrap(f,
	     "its judge holds counts, or ratios with a margin for a busy machine, and it owns only "
	     "its schema, its keys and free ports",
	     HELP_INDENT);
}

char *suite_fmt_ms(char *buf, size_t len, double ms)
{
	if (ms < 1000)
		snprintf(buf, len, "%.0f ms", ms);
	else if (ms < 60000)
		snprintf(buf, len, "%.1f s", ms / 1000);
	else
		snprintf(buf, len, "%d m %02d s", (int)(ms / 60000), (int)(ms / 1000) % 60);
	return buf;
}

/* ---- flags ---- */

static int add_run(const char *cmd, const char *bin, const char *name, struct suite_batch *b)
{
	if (!*name || strchr(name, '/') || strlen(name) >= SUITE_NAME_LEN) {
		fprintf(stderr, "labsuite %s: \"%s\" is not a lab name\n", cmd, name);
		return -1;
	}
	for (int i = 0; i < b->n; i++)
		if (!strcmp(b->runs[i].name, name)) {
			fprintf(stderr, "labsuite %s: lab \"%s\" named twice\n", cmd, name);
			return -1;
		}
	struct suite_run *r = &b->runs[b->n++];
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	snprintf(r->program, sizeof(r->program), "%s/lab-%s", bin, name);
	if (access(r->program, X_OK) != 0) {
		fprintf(stderr, "labsuite %s: no program %s (%s): build it first (make build)\n", cmd,
		        r->program, strerror(errno));
		return -1;
	}
	return 0;
}

/* --timeout S: a whole number of seconds, 1 to SUITE_TIMEOUT_S_MAX; -1 when it is not one. */
static int parse_timeout(const char *v)
{
	char *end;
	long n = v ? strtol(v, &end, 10) : 0;
	return v && *v && !*end && n >= 1 && n <= SUITE_TIMEOUT_S_MAX ? (int)n : -1;
}

/* One flag at argv[i] (value: the next argument or NULL): how many arguments after it it took. */
static int parse_flag(struct suite_flags *fl, struct suite_batch *b, const char *f, const char *v)
{
	if (!strcmp(f, "--bin"))
		return v ? (fl->bin = v, 1) : -2;
	if (!strcmp(f, "--timeout"))
		return (b->timeout_s = parse_timeout(v)) > 0 ? 1 : -2;
	return fl->extra ? fl->extra(f, v, fl->arg) : -1;
}

int suite_parse(const char *cmd, int argc, char **argv, struct suite_flags *fl, struct suite_batch *b)
{
	memset(b, 0, sizeof(*b));
	b->jobs = 1;
	b->runs = calloc((size_t)(argc > 0 ? argc : 1), sizeof(*b->runs));
	if (!b->runs) {
		fprintf(stderr, "labsuite %s: out of memory\n", cmd);
		return -1;
	}
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
			if (fl->help)
				fl->help(stdout);
			return 1;
		}
		if (!strcmp(f, "--")) {
			i++;
			break;
		}
		int took = parse_flag(fl, b, f, v);
		if (took < 0) {
			char shown[LAB_ARG_SHOWN_LEN];
			fprintf(stderr, "labsuite %s: %s \"%s\" (--help for the flags)\n", cmd,
			        took == -1 ? "unknown flag" : "a value is missing or wrong after",
			        lab_arg_shown(f, shown));
			return -1;
		}
		i += took;
	}
	if (i >= argc) {
		fprintf(stderr, "labsuite %s: no lab named (labsuite %s --help)\n", cmd, cmd);
		return -1;
	}
	for (; i < argc; i++)
		if (add_run(cmd, fl->bin ? fl->bin : "build", argv[i], b) < 0)
			return -1;
	return 0;
}

/* ---- one lab ---- */

static char *slurp(const char *path, size_t max)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return errno == ENOENT ? strdup("") : NULL;
	char *buf = malloc(max + 1);
	size_t n = buf ? fread(buf, 1, max, f) : 0;
	fclose(f);
	if (buf)
		buf[n] = '\0';
	return buf;
}

/* The last non-empty line of text, into out. */
static void last_line(const char *text, char *out, size_t outlen)
{
	const char *end = text + strlen(text);
	while (end > text && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
		end--;
	const char *start = end;
	while (start > text && start[-1] != '\n')
		start--;
	snprintf(out, outlen, "%.*s", (int)(end - start), start);
}

void suite_file_last_line(const char *path, char *out, size_t outlen)
{
	char *text = slurp(path, ERR_READ_MAX);
	last_line(text ? text : "", out, outlen);
	free(text);
}

int suite_run_read(struct suite_run *r, const char *out_path, const char *err_path)
{
	json_error_t je;
	struct stat st;
	r->doc = NULL;
	if (stat(out_path, &st) == 0 && st.st_size > 0) {
		r->doc = json_load_file(out_path, 0, &je);
		if (r->doc && !json_is_object(r->doc)) {
			json_decref(r->doc);
			r->doc = NULL;
		}
	}
	free(r->err_text);
	r->err_text = slurp(err_path, ERR_READ_MAX);
	if (!r->err_text)
		return -1;
	last_line(r->err_text, r->last_err, sizeof(r->last_err));
	return 0;
}

bool suite_run_ok(const struct suite_run *r)
{
	json_t *v = r->doc ? json_object_get(r->doc, "verdict") : NULL;
	return json_is_true(json_object_get(v, "demonstrated"));
}

void suite_run_ending(const struct suite_run *r, char *out, size_t outlen)
{
	char t[32];
	if (!r->done)
		snprintf(out, outlen, "not run");
	else if (r->timed_out)
		snprintf(out, outlen, "stopped after %s (--timeout)", suite_fmt_ms(t, sizeof(t), r->ms));
	else if (WIFSIGNALED(r->status))
		snprintf(out, outlen, "killed by signal %d (%s)", WTERMSIG(r->status),
		         strsignal(WTERMSIG(r->status)));
	else
		snprintf(out, outlen, "exit %d", WEXITSTATUS(r->status));
}

void suite_run_summary(const struct suite_run *r, char *out, size_t outlen)
{
	json_t *v = r->doc ? json_object_get(r->doc, "verdict") : NULL;
	const char *evidence = json_string_value(json_object_get(v, "evidence"));
	if (evidence && json_is_boolean(json_object_get(v, "demonstrated"))) {
		snprintf(out, outlen, "%s", evidence);
		return;
	}
	char ending[128];
	suite_run_ending(r, ending, sizeof(ending));
	snprintf(out, outlen, "%s, %s%s%s", ending, r->doc ? "a document with no verdict" : "no document",
	         r->last_err[0] ? ": " : "", r->last_err);
}

int suite_batch_exit(const struct suite_batch *b)
{
	for (int i = 0; i < b->n; i++)
		if (!suite_run_ok(&b->runs[i]))
			return SUITE_EXIT_FAILED;
	return SUITE_EXIT_OK;
}

/* ---- the batch ---- */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

void suite_signals_catch(void)
{
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	interrupted = 0;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

bool suite_interrupted(void)
{
	return interrupted != 0;
}

static void paths_of(const struct suite_batch *b, const struct suite_run *r, char *out, char *err)
{
	snprintf(out, PATH_MAX + 96, "%s/%s.json", b->dir, r->name);
	snprintf(err, PATH_MAX + 96, "%s/%s.stderr", b->dir, r->name);
}

/* Starts r: fork, then in the child its own group, the death signal, the files, exec. */
static int run_start(struct suite_batch *b, struct suite_run *r, char *err, size_t errlen)
{
	char out_path[PATH_MAX + 96], err_path[PATH_MAX + 96];
	paths_of(b, r, out_path, err_path);
	int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int er = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	pid_t parent = getpid();
	pid_t pid = in >= 0 && out >= 0 && er >= 0 ? fork() : -1;
	if (pid == 0) {
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(127);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		dup2(in, 0);
		dup2(out, 1);
		dup2(er, 2);
		char *const argv[] = {r->program, "--quick", "--json", NULL};
		execv(r->program, argv);
		static const char msg[] = "labsuite: exec failed\n";
		ssize_t w = write(2, msg, sizeof(msg) - 1);
		(void)w;
		_exit(127);
	}
	int saved = errno;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	if (er >= 0)
		close(er);
	if (pid < 0) {
		snprintf(err, errlen, "cannot start %s: %s", r->program, strerror(saved));
		return -1;
	}
	setpgid(pid, pid); /* also here, so a Ctrl-C right after fork already misses it */
	r->pid = pid;
	r->started = true;
	r->start_ms = hist_now_ms();
	return 0;
}

/* Reaps r if it ended; true when it did. */
static bool run_reap(struct suite_batch *b, struct suite_run *r, bool wait)
{
	int st;
	pid_t w = waitpid(r->pid, &st, wait ? 0 : WNOHANG);
	if (w != r->pid)
		return false;
	r->status = st;
	r->done = true;
	r->ms = hist_now_ms() - r->start_ms;
	r->pid = 0;
	char out_path[PATH_MAX + 96], err_path[PATH_MAX + 96];
	paths_of(b, r, out_path, err_path);
	suite_run_read(r, out_path, err_path);
	return true;
}

/*
 * Stops the running lab `which` (-1: every running lab): SIGINT, which its guard answers by
 * dropping its schema and keys; SUITE_STOP_MS for all of them to exit; then SIGKILL to the groups
 * of those that did not. Each is reaped.
 */
static void stop_runs(struct suite_batch *b, int which)
{
	for (int i = 0; i < b->n; i++)
		if (b->runs[i].pid > 0 && (which < 0 || i == which))
			kill(b->runs[i].pid, SIGINT);
	double t0 = hist_now_ms();
	for (;;) {
		if (which >= 0 && interrupted) {
			/* a Ctrl-C while one late lab stops: the others too, within the same bound */
			which = -1;
			for (int i = 0; i < b->n; i++)
				if (b->runs[i].pid > 0)
					kill(b->runs[i].pid, SIGINT);
		}
		int left = 0;
		for (int i = 0; i < b->n; i++)
			if (b->runs[i].pid > 0 && (which < 0 || i == which) &&
			    !run_reap(b, &b->runs[i], false))
				left++;
		if (!left)
			return;
		if (hist_now_ms() - t0 > SUITE_STOP_MS)
			break;
		hist_sleep_us(POLL_US / 4);
	}
	for (int i = 0; i < b->n; i++)
		if (b->runs[i].pid > 0 && (which < 0 || i == which)) {
			kill(-b->runs[i].pid, SIGKILL);
			run_reap(b, &b->runs[i], true);
		}
}

/* Stops, as stop_runs does, each lab running past the deadline; its row says it was stopped. */
static void stop_late(struct suite_batch *b)
{
	double limit = 1000.0 * (b->timeout_s > 0 ? b->timeout_s : SUITE_TIMEOUT_S);
	for (int i = 0; i < b->n; i++)
		if (b->runs[i].pid > 0 && hist_now_ms() - b->runs[i].start_ms > limit) {
			b->runs[i].timed_out = true;
			stop_runs(b, i);
		}
}

static void progress(const struct suite_batch *b, int done)
{
	if (!b->progress)
		return;
	char names[256] = "";
	size_t used = 0;
	for (int i = 0; i < b->n; i++)
		if (b->runs[i].pid > 0 && used < sizeof(names))
			used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s", used ? ", " : "",
			                         b->runs[i].name);
	term_progress(b->progress, "%d of %d labs done · running %s", done, b->n, names);
}

/*
 * The next lab to start, or -1: the shared ones first, up to jobs at once; then each lab of
 * SUITE_ALONE when nothing else runs.
 */
static int next_to_start(const struct suite_batch *b, int running, bool alone_running)
{
	if (alone_running || running >= b->jobs)
		return -1;
	for (int i = 0; i < b->n; i++)
		if (!b->runs[i].started && !suite_alone_reason(b->runs[i].name))
			return i;
	if (running)
		return -1;
	for (int i = 0; i < b->n; i++)
		if (!b->runs[i].started)
			return i;
	return -1;
}

static int batch_loop(struct suite_batch *b, char *err, size_t errlen)
{
	for (int done = 0; done < b->n;) {
		if (interrupted) {
			stop_runs(b, -1);
			return SUITE_INTERRUPTED;
		}
		stop_late(b);
		int running = 0;
		bool alone = false;
		done = 0;
		/* counted afresh each time: stop_late reaps the labs it stops, not this loop */
		for (int i = 0; i < b->n; i++) {
			struct suite_run *r = &b->runs[i];
			if (r->pid > 0 && !run_reap(b, r, false)) {
				running++;
				alone = alone || suite_alone_reason(r->name);
			}
			done += r->done;
		}
		int next;
		while ((next = next_to_start(b, running, alone)) >= 0) {
			if (run_start(b, &b->runs[next], err, errlen) < 0) {
				stop_runs(b, -1);
				return -1;
			}
			running++;
			alone = suite_alone_reason(b->runs[next].name) != NULL;
		}
		progress(b, done);
		if (done < b->n)
			hist_sleep_us(POLL_US);
	}
	return 0;
}

int suite_batch_run(struct suite_batch *b, char *err, size_t errlen)
{
	if (b->jobs < 1)
		b->jobs = 1;
	if (child_tmpdir("suite", b->dir, sizeof(b->dir), err, errlen) < 0)
		return -1;
	double t0 = hist_now_ms();
	int ret = batch_loop(b, err, errlen);
	b->wall_ms = hist_now_ms() - t0;
	if (b->progress)
		term_progress_clear(b->progress);
	return ret;
}

int suite_batch_command(const char *cmd, struct suite_batch *b, struct term *t)
{
	b->progress = t->tty ? t : NULL;
	char err[512];
	int ret = suite_batch_run(b, err, sizeof(err));
	if (ret == SUITE_INTERRUPTED) {
		fprintf(stderr, "labsuite %s: interrupted; the running labs were stopped\n", cmd);
		return SUITE_EXIT_INTERRUPTED;
	}
	if (ret < 0) {
		fprintf(stderr, "labsuite %s: %s\n", cmd, err);
		return SUITE_EXIT_USAGE;
	}
	return 0;
}

void suite_batch_free(struct suite_batch *b)
{
	for (int i = 0; b->runs && i < b->n; i++) {
		json_decref(b->runs[i].doc);
		free(b->runs[i].err_text);
	}
	free(b->runs);
	b->runs = NULL;
	if (b->dir[0]) {
		char err[256];
		child_rmtree(b->dir, err, sizeof(err));
		b->dir[0] = '\0';
	}
}
