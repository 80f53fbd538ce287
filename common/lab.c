/*
 * lab.c — the runner: one parser for every lab's flags, the narration around its phases and
 * the verdict, or with --json the one document that replaces all of it.
 */
#include "lab.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"
#include "redis.h"

/* Seed when --seed is not given: the same numbers on every run, so two runs compare. */
#define LAB_SEED_DEFAULT 1
#define LAB_PORT_MAX     65535

static const char *lab_name(const struct lab *lab)
{
	return lab->name ? lab->name : "lab";
}

void lab_usage(const struct lab *lab, FILE *f)
{
	char pg[256], redis[256];
	/* the variables may hold a password: show them the way lab_env_error does */
	pg_url_redact(pg_url_default(), pg, sizeof(pg));
	redis_url_redact(redis_url_default(), redis, sizeof(redis));
	fprintf(f, "usage: lab-%s [--quick] [--json] [--step] [--seed N] [--serve] [--port N]\n",
	        lab_name(lab));
	if (lab->question)
		fprintf(f, "  answers: \"%s\"\n", lab->question);
	fprintf(f,
	        "\n"
	        "  --quick     small sizes: a run of seconds, for CI and a short demo\n"
	        "  --json      print only one JSON document (config, phases, verdict) on stdout\n"
	        "  --step      pause before each phase until Enter, for a live demo\n"
	        "  --seed N    seed of the random choices, so runs repeat (default %d)\n"
	        "  --serve     keep the lab's API up for curl or wrk until Ctrl-C (labs with an API)\n"
	        "  --port N    port of that API, up to 65535 (default 0: a free port)\n"
	        "  -h, --help  print this help and exit\n"
	        "\n"
	        "environment:\n"
	        "  LAB_PG_URL     PostgreSQL to use (%s %s)\n"
	        "  LAB_REDIS_URL  Redis to use (%s %s)\n"
	        "\n"
	        "exit status: 0 demonstrated, 1 not demonstrated, 2 environment or usage error\n",
	        LAB_SEED_DEFAULT, getenv("LAB_PG_URL") && *getenv("LAB_PG_URL") ? "now" : "default", pg,
	        getenv("LAB_REDIS_URL") && *getenv("LAB_REDIS_URL") ? "now" : "default", redis);
}

/* A bad command line: one line that names what is wrong, then the usage, all on stderr. */
static int usage_error(struct lab *lab, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(struct lab *lab, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "lab-%s: ", lab_name(lab));
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	lab_usage(lab, stderr);
	lab->exit_code = LAB_EXIT_ENV;
	return -1;
}

/* Decimal digits only: strtoull alone would take "-1", " 7" and "0x10". */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	if (!s || !*s || strspn(s, "0123456789") != strlen(s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, NULL, 10);
	if (errno == ERANGE || v > max)
		return -1;
	*out = v;
	return 0;
}

/*
 * The value of a flag that takes one: "--port=8080" or "--port 8080". NULL when it is missing
 * (the caller reports it); *i moves past a separate value.
 */
static const char *flag_value(const char *arg, size_t flag_len, int argc, char **argv, int *i)
{
	if (arg[flag_len] == '=')
		return arg + flag_len + 1;
	if (*i + 1 < argc)
		return argv[++*i];
	return NULL;
}

/* The flag name in arg, without any "=value", for matching. */
static bool is_flag(const char *arg, const char *flag, bool takes_value)
{
	size_t n = strlen(flag);
	return !strncmp(arg, flag, n) && (arg[n] == '\0' || (takes_value && arg[n] == '='));
}

static int parse_args(struct lab *lab, int argc, char **argv)
{
	struct lab_opts *o = &lab->opts;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		uint64_t v;
		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			lab_usage(lab, stdout);
			lab->exit_code = LAB_EXIT_OK;
			return -1;
		} else if (!strcmp(arg, "--quick")) {
			o->quick = true;
		} else if (!strcmp(arg, "--json")) {
			o->json = true;
		} else if (!strcmp(arg, "--step")) {
			o->step = true;
		} else if (!strcmp(arg, "--serve")) {
			o->serve = true;
		} else if (is_flag(arg, "--seed", true)) {
			const char *val = flag_value(arg, strlen("--seed"), argc, argv, &i);
			if (!val)
				return usage_error(lab, "--seed needs a value: --seed N");
			/* up to INT64_MAX: the --json document carries the seed as a JSON integer */
			if (parse_u64(val, INT64_MAX, &v) < 0)
				return usage_error(lab,
				                   "--seed wants a whole number from 0 to %lld, got \"%s\"",
				                   (long long)INT64_MAX, val);
			o->seed = v;
		} else if (is_flag(arg, "--port", true)) {
			const char *val = flag_value(arg, strlen("--port"), argc, argv, &i);
			if (!val)
				return usage_error(lab, "--port needs a value: --port N");
			if (parse_u64(val, LAB_PORT_MAX, &v) < 0)
				return usage_error(lab, "--port wants a port number from 0 to %d, got \"%s\"",
				                   LAB_PORT_MAX, val);
			o->port = (int)v;
		} else if (arg[0] == '-') {
			return usage_error(lab, "unknown flag \"%s\"", arg);
		} else {
			return usage_error(lab, "unexpected argument \"%s\" (a lab takes flags only)", arg);
		}
	}
	return 0;
}

int lab_init(struct lab *lab, const char *name, const char *question, int phase_count, int argc, char **argv)
{
	memset(lab, 0, sizeof(*lab));
	lab->name = name;
	lab->question = question;
	lab->phase_count = phase_count;
	lab->opts.seed = LAB_SEED_DEFAULT;
	lab->opts.pg_url = pg_url_default();
	lab->opts.redis_url = redis_url_default();
	term_init(&lab->term, stdout);

	if (parse_args(lab, argc, argv) < 0)
		return -1;

	lab->config = json_object();
	lab->phases = json_array();
	if (!lab->config || !lab->phases)
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
	    json_object_set_new(doc, "config", lab->config ? json_incref(lab->config) : json_object()) < 0 ||
	    json_object_set_new(doc, "phases", lab->phases ? json_incref(lab->phases) : json_array()) < 0 ||
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

int lab_verdict(struct lab *lab, bool demonstrated, const char *claim, const char *evidence_fmt, ...)
{
	int ret = demonstrated ? LAB_EXIT_OK : LAB_EXIT_NOT_SHOWN;
	char *evidence = NULL;
	va_list ap;
	va_start(ap, evidence_fmt);
	if (vasprintf(&evidence, evidence_fmt, ap) < 0)
		evidence = NULL;
	va_end(ap);
	if (!evidence) {
		ret = lab_fail(lab, "out of memory");
		goto done;
	}

	if (lab->opts.json) {
		if (print_document(lab, demonstrated, claim, evidence) < 0) {
			fprintf(stderr, "lab-%s: cannot write the JSON document on stdout\n", lab_name(lab));
			ret = LAB_EXIT_ENV;
		}
	} else {
		const struct term *t = &lab->term;
		term_printf(t, "\n%s%s %s: %s%s\n", demonstrated ? term_green(t) : term_red(t),
		            demonstrated ? "✔" : "✘", demonstrated ? "demonstrated" : "not demonstrated",
		            claim ? claim : "", term_reset(t));
		if (*evidence)
			term_printf(t, "  %s\n", evidence);
		if (t->out)
			fflush(t->out);
	}
done:
	free(evidence);
	lab_free(lab);
	return ret;
}

int lab_env_error(struct lab *lab, const char *what, const char *url, const char *server_said)
{
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
	json_decref(lab->config);
	lab->config = NULL;
	json_decref(lab->phases);
	lab->phases = NULL;
	if (lab->sink) {
		fclose(lab->sink);
		lab->sink = NULL;
		/* nothing may write through a closed FILE: later narration goes nowhere */
		lab->term.out = NULL;
		lab->term.tty = false;
		lab->term.color = false;
	}
}

static void lab_signal_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
}

void lab_block_signals(void)
{
	sigset_t set;
	lab_signal_set(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int lab_wait_signal(void)
{
	sigset_t set;
	int sig = 0;
	lab_signal_set(&set);
	if (sigwait(&set, &sig) != 0)
		return -1;
	return sig;
}

void lab_progress_cb(const char *what, double done, void *arg)
{
	struct lab *lab = arg;
	term_progress(&lab->term, "  %s … %3.0f%%", what, done * 100.0);
}
