/*
 * lab.c — the runner: the Ctrl-C guard, the narration around a lab's phases and the verdict, or
 * with --json the one document that replaces all of it. The flags are parsed in lab_args.c.
 */
#include "lab.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "child.h"
#include "hist.h"
#include "lab_internal.h"
#include "loop.h"
#include "pg.h"
#include "redis.h"

/*
 * Ctrl-C. One thread per process waits for SIGINT and SIGTERM (blocked everywhere else), so a
 * signal never lands in the middle of libpq, hiredis or malloc: cleanup runs as ordinary code.
 * What it needs is copied here once, by lab_init: the process runs one lab.
 */
#define GUARD_SERVE_GRACE_MS   2000 /* --serve: time to stop the API in order before the hard way */
#define GUARD_DROP_TRIES       3    /* DROP SCHEMA tries, each after ending our backends again */
#define GUARD_NAME_MAX         48   /* a lab's name: "lab-" + 48 + ":" + a pid fit in 63 bytes */
#define GUARD_CLEANUP_MS       1700 /* the whole cleanup, so the lab is gone within 2 s */
#define GUARD_REDIS_TIMEOUT_MS 300  /* kept for the keys out of the cleanup's time */

#define GUARD_EXTRA 2 /* servers of a lab's own that hold its schema or keys too (lab_guard_servers) */

static struct {
	char name[64], pg_url[1024], redis_url[1024];
	char extra_pg[GUARD_EXTRA][1024], extra_redis[GUARD_EXTRA][1024]; /* under mu */
	atomic_bool interrupted; /* a signal arrived: phases stop, exits wait for the cleanup */
	atomic_bool serving;     /* lab_serve_wait is waiting: the first signal is its to handle */
	atomic_bool serve_done;  /* after it, lab_free ran: the API stopped in order */
	int serve_pipe[2];       /* the guard writes the signal number; lab_serve_wait reads it */
	pthread_mutex_t mu;
	pthread_cond_t never; /* exits wait on it while the guard cleans up and _exits */
	bool exiting;         /* exit() began before any signal (under mu): the guard leaves it be */
} guard = {.serve_pipe = {-1, -1}, .mu = PTHREAD_MUTEX_INITIALIZER, .never = PTHREAD_COND_INITIALIZER};

void lab_guard_servers(const char *pg_url, const char *redis_url)
{
	pthread_mutex_lock(&guard.mu);
	if (pg_url)
		for (int i = 0; i < GUARD_EXTRA; i++)
			if (!guard.extra_pg[i][0] || !strcmp(guard.extra_pg[i], pg_url)) {
				snprintf(guard.extra_pg[i], sizeof(guard.extra_pg[i]), "%s", pg_url);
				break;
			}
	if (redis_url)
		for (int i = 0; i < GUARD_EXTRA; i++)
			if (!guard.extra_redis[i][0] || !strcmp(guard.extra_redis[i], redis_url)) {
				snprintf(guard.extra_redis[i], sizeof(guard.extra_redis[i]), "%s", redis_url);
				break;
			}
	pthread_mutex_unlock(&guard.mu);
}

bool lab_interrupted(void)
{
	return atomic_load(&guard.interrupted);
}

static void guard_signal_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
}

/* The guard's connection says nothing: libpq's default would fprintf a WARNING for a backend that
 * ended before pg_terminate_backend reached it, and stdio's lock may be held by the thread being
 * ended. */
static void guard_notice_ignore(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* Ends this process's other backends and drops the schema: -1 and err when it could not. */
static int guard_drop_schema(const char *url, const char *schema, double deadline_ms, char *err,
                             size_t errlen)
{
	const char *keys[] = {"connect_timeout", NULL}, *vals[] = {"1", NULL};
	PGconn *conn = pg_connect_always(url, keys, vals, err, errlen);
	if (!conn)
		return -1;
	PQsetNoticeProcessor(conn, guard_notice_ignore, NULL);
	int ret = -1;
	const char *params[] = {pg_application_name()};
	for (int i = 0; i < GUARD_DROP_TRIES && ret < 0; i++) {
		/* a short lock wait first (a backend of ours that reconnected holds a lock a moment);
		 * the last outwaits deadlock_timeout (1 s), which is when an autovacuum worker in the
		 * way cancels itself; every statement ends by the deadline */
		long left = (long)(deadline_ms - hist_now_ms());
		if (left < 50) {
			snprintf(err, errlen, "out of time");
			break;
		}
		char set[128];
		snprintf(set, sizeof(set), "SET statement_timeout = %ld; SET lock_timeout = %ld", left,
		         i + 1 < GUARD_DROP_TRIES ? 200L : left);
		if (pg_exec(conn, set, err, errlen) < 0)
			goto out;
		PGresult *res = pg_query(conn,
		                         "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
		                         "WHERE application_name = $1 AND pid <> pg_backend_pid()",
		                         1, params, err, errlen);
		if (!res)
			goto out;
		PQclear(res);
		ret = pg_schema_drop(conn, schema, err, errlen);
	}
out:
	PQfinish(conn);
	return ret;
}

/* Drops what the lab made and exits: the hard way out, from the guard thread. */
/* One line on stderr with write(2): no stdio lock, which a thread stuck on a full pipe may hold. */
static void guard_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void guard_say(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 1)
		n = (int)sizeof(line) - 1;
	if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0)
		return; /* nowhere left to say it */
}

/* Deletes lab:<name>:* until a pass finds none: a lab thread may still write one meanwhile. */
static int guard_del_keys(const char *url, const char *prefix, double deadline_ms, char *err, size_t errlen)
{
	redisContext *rc = redis_connect_url(url, GUARD_REDIS_TIMEOUT_MS, err, errlen);
	if (!rc)
		return -1;
	int ret = -1;
	long long deleted = 1;
	while (deleted > 0 && hist_now_ms() < deadline_ms)
		if (redis_del_prefix(rc, prefix, &deleted, err, errlen) < 0)
			goto out;
	ret = 0;
out:
	redisFree(rc);
	return ret;
}

/*
 * Drops what the lab made and exits: the hard way out, from the guard thread. Nothing here may
 * wait on a lock another thread holds (stdio's, a pool's). Unless the process is already on its
 * way out through exit() (the lab tore down itself: nothing to do).
 */
static void guard_cleanup_exit(void)
{
	static char pgs[1 + GUARD_EXTRA][1024], rediss[1 + GUARD_EXTRA][1024];
	pthread_mutex_lock(&guard.mu);
	bool exiting = guard.exiting;
	if (!exiting) {
		atomic_store(&guard.interrupted, true);
		pg_refuse_connections();
		memcpy(pgs[0], guard.pg_url, sizeof(pgs[0]));
		memcpy(rediss[0], guard.redis_url, sizeof(rediss[0]));
		for (int i = 0; i < GUARD_EXTRA; i++) {
			memcpy(pgs[1 + i], guard.extra_pg[i], sizeof(pgs[0]));
			memcpy(rediss[1 + i], guard.extra_redis[i], sizeof(rediss[0]));
		}
	}
	pthread_mutex_unlock(&guard.mu);
	if (exiting)
		return;
	double deadline = hist_now_ms() + GUARD_CLEANUP_MS;

	char schema[96], prefix[96], err[LAB_ERRLEN], shown[256];
	snprintf(schema, sizeof(schema), "lab_%s", guard.name);
	for (char *c = schema; *c; c++)
		if (*c == '-')
			*c = '_';
	snprintf(prefix, sizeof(prefix), "lab:%s:", guard.name);
	guard_say("\nlab-%s: interrupted: dropping schema %s and keys %s* …\n", guard.name, schema, prefix);
	/* the servers the lab started (nginx, ...) and their directories: local, quick, first */
	child_kill_and_remove_all();
	for (int i = 0; i < 1 + GUARD_EXTRA; i++) {
		if (pgs[i][0] && guard_drop_schema(pgs[i], schema, deadline - GUARD_REDIS_TIMEOUT_MS, err,
		                                   sizeof(err)) < 0) {
			pg_url_redact(pgs[i], shown, sizeof(shown));
			guard_say("lab-%s: could not drop schema %s at %s: %s\n", guard.name, schema, shown,
			          err);
		}
		if (rediss[i][0] && guard_del_keys(rediss[i], prefix, deadline, err, sizeof(err)) < 0) {
			redis_url_redact(rediss[i], shown, sizeof(shown));
			guard_say("lab-%s: could not delete keys %s* at %s: %s\n", guard.name, prefix, shown,
			          err);
		}
	}
	_exit(LAB_EXIT_INTERRUPTED);
}

/*
 * Once a signal has arrived, the guard owns the way out: a thread that reaches one (a lab's
 * error path after its connections were ended, main returning, exit()) waits here, silent,
 * until the guard's _exit. Otherwise exit()'s handlers (libpq's, OpenSSL's) would run under the
 * guard's feet, and the lab would print the error that the interruption itself caused.
 */
static void guard_hold(void)
{
	if (!atomic_load(&guard.interrupted))
		return;
	pthread_mutex_lock(&guard.mu);
	for (;;) /* the guard _exits: this wait ends with the process */
		pthread_cond_wait(&guard.never, &guard.mu);
}

/* exit()'s handler: holds as guard_hold does, or tells the guard the lab is on its way out. */
static void guard_atexit(void)
{
	pthread_mutex_lock(&guard.mu);
	if (!atomic_load(&guard.interrupted)) {
		guard.exiting = true;
		pthread_mutex_unlock(&guard.mu);
		return;
	}
	for (;;)
		pthread_cond_wait(&guard.never, &guard.mu);
}

/*
 * Waits up to ms for one of set; true when one came. Another signal (a stop, the sanitizer's
 * exit-time work) interrupts sigtimedwait: the wait goes on for what is left.
 */
static bool guard_wait_signal_ms(const sigset_t *set, int ms)
{
	double deadline = hist_now_ms() + ms;
	for (;;) {
		double left = deadline - hist_now_ms();
		if (left <= 0)
			return false;
		struct timespec ts = {(time_t)(left / 1000), (long)(fmod(left, 1000.0) * 1e6)};
		if (sigtimedwait(set, NULL, &ts) >= 0)
			return true;
		if (errno != EINTR)
			return false;
	}
}

static void *guard_main(void *arg)
{
	(void)arg;
	sigset_t set;
	guard_signal_set(&set);
	int sig = 0;
	if (sigwait(&set, &sig) != 0)
		return NULL;
	if (atomic_load(&guard.serving)) {
		/* lab_serve_wait stops the API in order; a second signal or the grace running out
		 * takes the hard way. Stopped in order, the process is on its way out (exit,
		 * LeakSanitizer): the guard stays for a signal that comes while that hangs. */
		unsigned char b = (unsigned char)sig;
		if (write(guard.serve_pipe[1], &b, 1) == 1 &&
		    !guard_wait_signal_ms(&set, GUARD_SERVE_GRACE_MS) && atomic_load(&guard.serve_done))
			while (sigwait(&set, &sig) != 0)
				;
	}
	guard_cleanup_exit();
	return NULL;
}

/* A program a lab starts (popen, system) must get Ctrl-C as any program does. */
static void guard_atfork_child(void)
{
	sigset_t set;
	guard_signal_set(&set);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* Starts the guard once per process; -1 when the thread or the pipe cannot be made. */
static int guard_start(const struct lab *lab)
{
	static pid_t started_in; /* a child forked after lab_init has no guard thread: it starts its own */
	if (started_in == getpid())
		return 0;
	/* "lab-<name>:<pid>" must fit PostgreSQL's 63 bytes whole, or the guard could end the
	 * backends of another run whose pid shares the cut prefix */
	if (strlen(lab_name(lab)) > GUARD_NAME_MAX)
		return -1;
	snprintf(guard.name, sizeof(guard.name), "%s", lab_name(lab));
	snprintf(guard.pg_url, sizeof(guard.pg_url), "%s", lab->opts.pg_url);
	snprintf(guard.redis_url, sizeof(guard.redis_url), "%s", lab->opts.redis_url);
	char app[96];
	snprintf(app, sizeof(app), "lab-%s:%ld", guard.name, (long)getpid());
	pg_set_application_name(app);
	if (guard.serve_pipe[0] >= 0)
		close(guard.serve_pipe[0]), close(guard.serve_pipe[1]);
	if (pipe(guard.serve_pipe) < 0)
		return -1;
	sigset_t set;
	guard_signal_set(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_t t;
	if (pthread_create(&t, NULL, guard_main, NULL) != 0)
		return -1;
	pthread_detach(t);
	/* OpenSSL registers its exit handler when first used; made to do it now, ours (registered
	 * after) runs before it, and the guard's connections keep their OpenSSL to the end */
	OPENSSL_init_crypto(0, NULL);
	/* a reader that went away (lab | head) must not end the process in the middle of cleanup */
	loop_sigpipe_ignore();
	if (!started_in) {
		atexit(guard_atexit);
		pthread_atfork(NULL, NULL, guard_atfork_child);
	}
	started_in = getpid();
	return 0;
}

int lab_serve_wait(struct lab *lab, int port, const char *help)
{
	(void)lab;
	/* before the line a script waits for: a signal right after it takes the orderly way */
	atomic_store(&guard.serving, true);
	printf("listening on http://127.0.0.1:%d\n", port);
	if (help && *help)
		printf("%s", help);
	printf("  Ctrl-C to stop\n");
	fflush(stdout);
	unsigned char b = 0;
	ssize_t n;
	do
		n = read(guard.serve_pipe[0], &b, 1);
	while (n < 0 && errno == EINTR);
	return n == 1 ? (int)b : -1;
}

int lab_init(struct lab *lab, const char *name, const char *question, int phase_count, int argc, char **argv)
{
	return lab_init_flags(lab, name, question, phase_count, NULL, 0, argc, argv);
}

void lab_init_defaults(struct lab *lab, const char *name, const char *question, int phase_count,
                       const struct lab_flag *flags, int nflags)
{
	memset(lab, 0, sizeof(*lab));
	lab->flags = flags;
	lab->nflags = flags ? nflags : 0;
	lab->name = name;
	lab->question = question;
	lab->phase_count = phase_count;
	lab->opts.seed = LAB_SEED_DEFAULT;
	lab->opts.pg_url = pg_url_default();
	lab->opts.redis_url = redis_url_default();
	term_init(&lab->term, stdout);
}

int lab_init_flags(struct lab *lab, const char *name, const char *question, int phase_count,
                   const struct lab_flag *flags, int nflags, int argc, char **argv)
{
	lab_init_defaults(lab, name, question, phase_count, flags, nflags);
	if (lab_parse_args(lab, argc, argv) < 0)
		return -1;
	if (guard_start(lab) < 0) {
		fprintf(stderr, "lab-%s: cannot start the Ctrl-C handler\n", lab_name(lab));
		lab->exit_code = LAB_EXIT_ENV;
		return -1;
	}

	lab->config = json_object();
	lab->phases = json_array();
	lab->questions = json_array();
	if (!lab->config || !lab->phases || !lab->questions)
		goto oom;
	/* what makes a run repeatable belongs with its numbers */
	if (json_object_set_new(lab->config, "quick", json_boolean(lab->opts.quick)) < 0 ||
	    json_object_set_new(lab->config, "seed", json_integer((json_int_t)lab->opts.seed)) < 0)
		goto oom;
	if (lab->opts.json) {
		FILE *sink = fopen("/dev/null", "w");
		if (!sink) {
			fprintf(stderr, "lab-%s: cannot open /dev/null for --json: %s\n", lab_name(lab),
			        strerror(errno));
			goto err;
		}
		lab->sink = sink;
		term_init(&lab->term, sink);
	}
	return 0;
oom:
	fprintf(stderr, "lab-%s: out of memory\n", lab_name(lab));
err:
	lab_free(lab);
	lab->exit_code = LAB_EXIT_ENV;
	return -1;
}

void lab_header(struct lab *lab, const char *fmt, ...)
{
	if (lab->opts.json)
		return;
	const struct term *t = &lab->term;
	term_printf(t, "%slab-%s — \"%s\"%s\n", term_bold(t), lab_name(lab),
	            lab->question ? lab->question : "", term_reset(t));
	term_printf(t, "%s", term_dim(t));
	va_list ap;
	va_start(ap, fmt);
	if (t->out)
		vfprintf(t->out, fmt, ap);
	va_end(ap);
	term_printf(t, "%s\n", term_reset(t));
}

void lab_config_set(struct lab *lab, const char *key, json_t *value)
{
	if (!lab->config) {
		json_decref(value);
		return;
	}
	json_object_set_new(lab->config, key, value);
}

/* Waits for one line on stdin; EOF (nobody at the keyboard) goes on at once. */
static void wait_for_enter(void)
{
	int ch;
	while ((ch = getchar()) != EOF && ch != '\n')
		;
}

void lab_phase(struct lab *lab, const char *fmt, ...)
{
	const struct term *t = &lab->term;
	lab->phase_no++;
	if (lab->opts.step && !lab->opts.json) {
		term_printf(t, "%s  (Enter to go on)%s", term_dim(t), term_reset(t));
		if (t->out)
			fflush(t->out);
		wait_for_enter();
	}
	if (lab->phase_count > 0)
		term_printf(t, "\n%s[%d/%d] ", term_bold(t), lab->phase_no, lab->phase_count);
	else
		term_printf(t, "\n%s[%d] ", term_bold(t), lab->phase_no);
	va_list ap;
	va_start(ap, fmt);
	if (t->out)
		vfprintf(t->out, fmt, ap);
	va_end(ap);
	term_printf(t, "%s\n", term_reset(t));
	/* a phase title shows at once, also through a pipe (lab | tee, a test waiting on it) */
	if (t->out)
		fflush(t->out);
}

void lab_phase_metrics(struct lab *lab, const char *name, json_t *metrics)
{
	if (!metrics)
		metrics = json_object();
	if (!lab->phases) {
		json_decref(metrics);
		return;
	}
	json_t *phase = json_object();
	if (!phase || json_object_set_new(phase, "name", json_string(name ? name : "")) < 0 ||
	    json_object_set_new(phase, "metrics", metrics) < 0) {
		json_decref(phase);
		return;
	}
	json_array_append_new(lab->phases, phase);
}

/* The whole --json document on stdout. -1 when it could not be built or written. */
static int print_document(struct lab *lab, bool demonstrated, const char *claim, const char *evidence)
{
	int ret = -1;
	json_t *doc = json_object();
	json_t *verdict = json_object();
	if (!doc || !verdict)
		goto err;
	if (json_object_set_new(verdict, "demonstrated", json_boolean(demonstrated)) < 0 ||
	    json_object_set_new(verdict, "claim", json_string(claim ? claim : "")) < 0 ||
	    json_object_set_new(verdict, "evidence", json_string(evidence)) < 0)
		goto err;
	if (json_object_set_new(doc, "lab", json_string(lab_name(lab))) < 0 ||
	    json_object_set_new(doc, "question", json_string(lab->question ? lab->question : "")) < 0 ||
	    json_object_set_new(doc, "config", lab->config ? json_incref(lab->config) : json_object()) < 0 ||
	    json_object_set_new(doc, "phases", lab->phases ? json_incref(lab->phases) : json_array()) < 0 ||
	    json_object_set_new(doc, "questions",
	                        lab->questions ? json_incref(lab->questions) : json_array()) < 0 ||
	    json_object_set_new(doc, "score", lab_predict_score_json(lab)) < 0 ||
	    json_object_set_new(doc, "chart", lab->chart ? json_incref(lab->chart) : json_null()) < 0 ||
	    json_object_set(doc, "verdict", verdict) < 0)
		goto err;
	/* one line, so scripts read it in one read (`jq .` makes it pretty); 15 digits print 248.1 as
	 * 248.1, where 17 would print 248.09999999999999 */
	if (json_dumpf(doc, stdout, JSON_COMPACT | JSON_REAL_PRECISION(15)) < 0 ||
	    fputc('\n', stdout) == EOF || fflush(stdout) == EOF)
		goto err;
	ret = 0;
err:
	json_decref(verdict);
	json_decref(doc);
	return ret;
}

int lab_finish(struct lab *lab, const struct lab_verdict *v)
{
	guard_hold();
	int ret = v->demonstrated ? LAB_EXIT_OK : LAB_EXIT_NOT_SHOWN;
	lab_predict_score(lab);
	if (lab->opts.json) {
		if (print_document(lab, v->demonstrated, v->claim, v->evidence) < 0) {
			fprintf(stderr, "lab-%s: cannot write the JSON document on stdout\n", lab_name(lab));
			ret = LAB_EXIT_ENV;
		}
	} else {
		const struct term *t = &lab->term;
		term_printf(t, "\n%s%s %s: %s%s\n", v->demonstrated ? term_green(t) : term_red(t),
		            v->demonstrated ? "✔" : "✘",
		            v->demonstrated ? "demonstrated" : "not demonstrated", v->claim, term_reset(t));
		if (v->evidence[0])
			term_printf(t, "  %s\n", v->evidence);
		if (t->out)
			fflush(t->out);
	}
	lab_free(lab);
	return ret;
}

void lab_chart(struct lab *lab, json_t *chart)
{
	json_decref(lab->chart);
	lab->chart = chart;
}

void lab_verdict_set(struct lab_verdict *v, bool demonstrated, const char *claim, const char *evidence_fmt,
                     ...)
{
	v->demonstrated = demonstrated;
	snprintf(v->claim, sizeof(v->claim), "%s", claim ? claim : "");
	va_list ap;
	va_start(ap, evidence_fmt);
	vsnprintf(v->evidence, sizeof(v->evidence), evidence_fmt, ap);
	va_end(ap);
}

int lab_phases_walk(const struct lab_phase_def *defs, int n, const void *cfg, void *result,
                    const struct lab_phase_hooks *hooks, char *err, size_t errlen)
{
	for (int i = 0; i < n; i++) {
		if (lab_interrupted()) {
			snprintf(err, errlen, "interrupted");
			return -1;
		}
		if (hooks && hooks->begin_cb)
			hooks->begin_cb(i, &defs[i], hooks->arg);
		if (defs[i].run(cfg, result, err, errlen) < 0)
			return -1;
		if (hooks && hooks->end_cb)
			hooks->end_cb(i, &defs[i], hooks->arg);
	}
	return 0;
}

static void teller_begin_cb(int phase, const struct lab_phase_def *def, void *arg)
{
	struct lab_teller *t = arg;
	if (phase < t->ntells && t->tells[phase].before)
		t->tells[phase].before(t->lab, t->cfg);
	lab_question_ask(t->lab, def, t->cfg);
}

static void teller_end_cb(int phase, const struct lab_phase_def *def, void *arg)
{
	struct lab_teller *t = arg;
	term_progress_clear(&t->lab->term);
	if (phase < t->ntells && t->tells[phase].after)
		t->tells[phase].after(t->lab, t->cfg, t->result);
	lab_question_answer(t->lab, def, t->cfg, t->result);
}

struct lab_phase_hooks lab_teller_hooks(struct lab_teller *t)
{
	return (struct lab_phase_hooks){teller_begin_cb, teller_end_cb, t};
}

int lab_probe(struct lab *lab, bool pg, bool redis)
{
	char err[LAB_ERRLEN];
	if (pg) {
		PGconn *conn = pg_connect(lab->opts.pg_url, err, sizeof(err));
		if (!conn) {
			lab->exit_code = lab_env_error(lab, "PostgreSQL", lab->opts.pg_url, err);
			return -1;
		}
		PQfinish(conn);
	}
	if (redis) {
		redisContext *c = redis_connect_url(lab->opts.redis_url, 2000, err, sizeof(err));
		if (!c) {
			lab->exit_code = lab_env_error(lab, "Redis", lab->opts.redis_url, err);
			return -1;
		}
		redisFree(c);
	}
	return 0;
}

int lab_lost(struct lab *lab, const char *what, const char *url, const char *server_said)
{
	guard_hold();
	term_progress_clear(&lab->term); /* the message must not run into a progress line */
	char shown[512], said[LAB_ERRLEN];
	bool redis = (what && !strcmp(what, "Redis")) || (url && !strncmp(url, "redis://", 8));
	if (redis)
		redis_url_redact(url ? url : "", shown, sizeof(shown));
	else
		pg_url_redact(url ? url : "", shown, sizeof(shown));
	pg_message_line(said, sizeof(said), server_said);
	fprintf(stderr, "lab-%s: lost %s at %s: %s\n  start it: make up   (or docker compose up -d --wait)\n",
	        lab_name(lab), what ? what : (redis ? "Redis" : "PostgreSQL"), shown, said);
	lab_free(lab);
	return LAB_EXIT_ENV;
}

int lab_run_failed(struct lab *lab, const char *lost, const char *err)
{
	if (lost && !strcmp(lost, "PostgreSQL"))
		return lab_lost(lab, lost, lab->opts.pg_url, err);
	if (lost && !strcmp(lost, "Redis"))
		return lab_lost(lab, lost, lab->opts.redis_url, err);
	return lab_fail(lab, "%s", err);
}

int lab_env_error(struct lab *lab, const char *what, const char *url, const char *server_said)
{
	guard_hold();
	term_progress_clear(&lab->term);
	char shown[512], said[LAB_ERRLEN];
	bool redis = (what && !strcmp(what, "Redis")) || (url && !strncmp(url, "redis://", 8));
	if (redis)
		redis_url_redact(url, shown, sizeof(shown));
	else
		pg_url_redact(url ? url : "", shown, sizeof(shown));
	/* one line: libpq's "\n\tIs the server running" would break the three-line shape */
	pg_message_line(said, sizeof(said), server_said);
	fprintf(stderr,
	        "lab-%s: cannot connect to %s at %s\n"
	        "  server said: %s\n"
	        "  start it:    make up   (or docker compose up -d --wait, or set %s)\n",
	        lab_name(lab), what ? what : (redis ? "Redis" : "PostgreSQL"), shown, said,
	        redis ? "LAB_REDIS_URL" : "LAB_PG_URL");
	lab_free(lab);
	return LAB_EXIT_ENV;
}

int lab_fail(struct lab *lab, const char *fmt, ...)
{
	guard_hold();
	term_progress_clear(&lab->term); /* the message must not run into a progress line */
	va_list ap;
	fprintf(stderr, "lab-%s: ", lab_name(lab));
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	lab_free(lab);
	return LAB_EXIT_ENV;
}

void lab_free(struct lab *lab)
{
	guard_hold();
	if (atomic_load(&guard.serving))
		atomic_store(&guard.serve_done, true);
	json_decref(lab->config);
	lab->config = NULL;
	json_decref(lab->phases);
	lab->phases = NULL;
	json_decref(lab->questions);
	lab->questions = NULL;
	json_decref(lab->chart);
	lab->chart = NULL;
	if (lab->sink) {
		fclose(lab->sink);
		lab->sink = NULL;
		/* nothing may write through a closed FILE: later narration goes nowhere */
		lab->term.out = NULL;
		lab->term.tty = false;
		lab->term.color = false;
	}
}

void lab_progress_cb(const char *what, double done, void *arg)
{
	struct lab *lab = arg;
	term_progress(&lab->term, "  %s … %3.0f%%", what, done * 100.0);
}
