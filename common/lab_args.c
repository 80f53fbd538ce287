/*
 * lab_args.c — one parser for every lab's flags (the shared ones and a lab's own, lab_init_flags)
 * and the usage they print. lab.c calls lab_parse_args from lab_init.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lab.h"
#include "lab_internal.h"
#include "pg.h"
#include "redis.h"

#define LAB_PORT_MAX 65535

void lab_usage(const struct lab *lab, FILE *f)
{
	char pg[256], redis[256];
	/* the variables may hold a password: show them the way lab_env_error does */
	pg_url_redact(pg_url_default(), pg, sizeof(pg));
	redis_url_redact(redis_url_default(), redis, sizeof(redis));
	fprintf(f, "usage: lab-%s [--quick] [--json] [--step] [--predict] [--seed N] [--serve] [--port N]",
	        lab_name(lab));
	for (int i = 0; i < lab->nflags; i++)
		fprintf(f, " [%s]", lab->flags[i].name);
	fputc('\n', f);
	if (lab->question)
		fprintf(f, "  answers: \"%s\"\n", lab->question);
	fprintf(f,
	        "\n"
	        "  --quick     small sizes: a run of seconds, for CI and a short demo\n"
	        "  --json      print only one JSON document (config, phases, verdict) on stdout\n"
	        "  --step      pause before each phase until Enter, for a live demo\n"
	        "  --predict   before each phase, guess what it will measure; then see it, and a score\n"
	        "  --seed N    seed of the random choices, so runs repeat (default %d)\n"
	        "  --serve     keep the lab's API up for curl or wrk until Ctrl-C (labs with an API)\n"
	        "  --port N    port of that API, up to 65535 (default 0: a free port)\n"
	        "  -h, --help  print this help and exit\n",
	        LAB_SEED_DEFAULT);
	for (int i = 0; i < lab->nflags; i++)
		fprintf(f, "  %-11s %s\n", lab->flags[i].name, lab->flags[i].help);
	fprintf(f,
	        "\n"
	        "environment:\n"
	        "  LAB_PG_URL     PostgreSQL to use (%s %s)\n"
	        "  LAB_REDIS_URL  Redis to use (%s %s)\n"
	        "\n"
	        "exit status: 0 demonstrated, 1 not demonstrated, 2 environment or usage error,\n"
	        "             130 interrupted (Ctrl-C: the lab's schema and keys are dropped first)\n",
	        getenv("LAB_PG_URL") && *getenv("LAB_PG_URL") ? "now" : "default", pg,
	        getenv("LAB_REDIS_URL") && *getenv("LAB_REDIS_URL") ? "now" : "default", redis);
}

/* A bad command line: one line that names what is wrong, then the usage, all on err (stderr). */
static int usage_error(struct lab *lab, FILE *err, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int usage_error(struct lab *lab, FILE *err, const char *fmt, ...)
{
	va_list ap;
	fprintf(err, "lab-%s: ", lab_name(lab));
	va_start(ap, fmt);
	vfprintf(err, fmt, ap);
	va_end(ap);
	fputc('\n', err);
	lab_usage(lab, err);
	lab->exit_code = LAB_EXIT_ENV;
	return -1;
}

const char *lab_arg_shown(const char *arg, char buf[LAB_ARG_SHOWN_LEN])
{
	size_t n = 0;
	for (size_t i = 0; arg[i]; i++) {
		unsigned char c = (unsigned char)arg[i];
		if (i == LAB_ARG_SHOWN) {
			memcpy(buf + n, "...", 3);
			n += 3;
			break;
		}
		if (c == '\\' || c == '"')
			n += (size_t)sprintf(buf + n, "\\%c", c);
		else if (c < 0x20 || c > 0x7e)
			n += (size_t)sprintf(buf + n, "\\x%02x", c);
		else
			buf[n++] = (char)c;
	}
	buf[n] = '\0';
	return buf;
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

/* One of the lab's own boolean flags, by its exact name: set it and return true. */
static bool lab_flag_set(const struct lab *lab, const char *arg)
{
	for (int k = 0; k < lab->nflags; k++)
		if (!strcmp(arg, lab->flags[k].name)) {
			*lab->flags[k].value = true;
			return true;
		}
	return false;
}

int lab_parse_args(struct lab *lab, int argc, char **argv)
{
	return lab_parse_args_to(lab, argc, argv, stdout, stderr);
}

int lab_parse_args_to(struct lab *lab, int argc, char **argv, FILE *out, FILE *err)
{
	struct lab_opts *o = &lab->opts;
	char buf[LAB_ARG_SHOWN_LEN];
	for (int k = 0; k < lab->nflags; k++)
		*lab->flags[k].value = false;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		uint64_t v;
		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			lab_usage(lab, out);
			lab->exit_code = LAB_EXIT_OK;
			return -1;
		} else if (!strcmp(arg, "--quick")) {
			o->quick = true;
		} else if (!strcmp(arg, "--json")) {
			o->json = true;
		} else if (!strcmp(arg, "--step")) {
			o->step = true;
		} else if (!strcmp(arg, "--predict")) {
			o->predict = true;
		} else if (!strcmp(arg, "--serve")) {
			o->serve = true;
		} else if (is_flag(arg, "--seed", true)) {
			const char *val = flag_value(arg, strlen("--seed"), argc, argv, &i);
			if (!val)
				return usage_error(lab, err, "--seed needs a value: --seed N");
			/* up to INT64_MAX: the --json document carries the seed as a JSON integer */
			if (parse_u64(val, INT64_MAX, &v) < 0)
				return usage_error(lab, err,
				                   "--seed wants a whole number from 0 to %lld, got \"%s\"",
				                   (long long)INT64_MAX, lab_arg_shown(val, buf));
			o->seed = v;
		} else if (is_flag(arg, "--port", true)) {
			const char *val = flag_value(arg, strlen("--port"), argc, argv, &i);
			if (!val)
				return usage_error(lab, err, "--port needs a value: --port N");
			if (parse_u64(val, LAB_PORT_MAX, &v) < 0)
				return usage_error(lab, err,
				                   "--port wants a port number from 0 to %d, got \"%s\"",
				                   LAB_PORT_MAX, lab_arg_shown(val, buf));
			o->port = (int)v;
		} else if (lab_flag_set(lab, arg)) {
			continue;
		} else if (arg[0] == '-') {
			return usage_error(lab, err, "unknown flag \"%s\"", lab_arg_shown(arg, buf));
		} else {
			return usage_error(lab, err, "unexpected argument \"%s\" (a lab takes flags only)",
			                   lab_arg_shown(arg, buf));
		}
	}
	if (o->predict && o->serve)
		return usage_error(lab, err,
		                   "--predict goes with a run, not --serve (there is nothing to guess)");
	/* the questions are asked on the terminal: a pipe or a file cannot answer them */
	if (o->predict && !isatty(STDIN_FILENO)) {
		fprintf(err,
		        "lab-%s: --predict asks its questions on a terminal, and stdin is not one\n"
		        "  run it in a terminal (no < or |), or drop --predict\n",
		        lab_name(lab));
		lab->exit_code = LAB_EXIT_ENV;
		return -1;
	}
	for (int k = 0; k < lab->nflags; k++)
		if (lab->flags[k].serve_only && *lab->flags[k].value && !o->serve)
			return usage_error(lab, err,
			                   "%s goes with --serve (the lab's own run needs no flag for it)",
			                   lab->flags[k].name);
	return 0;
}
