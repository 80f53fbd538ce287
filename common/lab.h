/*
 * lab.h — the runner every lab shares: flags, phases, narration, the verdict, the --json
 * document and the exit codes. A lab's main.c reads:
 *
 *	struct lab lab;
 *	if (lab_init(&lab, "pooling", QUESTION, 4, argc, argv) < 0)
 *		return lab.exit_code;            // --help (0) or a bad flag (2)
 *	lab_header(&lab, "PostgreSQL %s · pool max %d", ...);
 *	lab_phase(&lab, "New connection per request vs a pool");
 *	... run, print a table with term.h on &lab.term, lab_phase_metrics(&lab, "compare", m);
 *	return lab_verdict(&lab, ok, "claim", "evidence %d", n);   // 0 or 1, frees the lab
 *
 * Flags (parsed here, the same for every lab): --quick --json --step --seed N --serve
 * --port N --help. Exit codes: LAB_EXIT_OK (demonstrated), LAB_EXIT_NOT_SHOWN (the numbers
 * disagree with the claim), LAB_EXIT_ENV (server unreachable, bad flag).
 *
 * With --json, narration goes to a sink (lab.term writes to /dev/null) and stdout carries only
 * the document of DESIGN.md: {"lab", "config", "phases": [{"name", "metrics"}], "verdict"}.
 */
#ifndef LAB_LAB_H
#define LAB_LAB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "term.h"

#define LAB_EXIT_OK        0
#define LAB_EXIT_NOT_SHOWN 1
#define LAB_EXIT_ENV       2

#define LAB_ERRLEN 512

struct lab_opts {
	bool quick;
	bool json;
	bool step;
	bool serve;
	int port;              /* --port N, 0 = a free port */
	uint64_t seed;         /* --seed N, default 1 so runs repeat */
	const char *pg_url;    /* LAB_PG_URL or the default of DESIGN.md */
	const char *redis_url; /* LAB_REDIS_URL or the default */
};

struct lab {
	const char *name;     /* "pooling": the program is lab-pooling, the schema lab_pooling */
	const char *question; /* the interview question, printed in the title */
	struct lab_opts opts;
	struct term term; /* narration: stdout, or /dev/null with --json */
	int exit_code;    /* set when lab_init returns -1 */
	int phase_count;  /* phases announced with lab_phase, "[i/n]" */
	int phase_no;
	json_t *config; /* the --json document's "config" object (labs add to it) */
	json_t *phases; /* its "phases" array */
	void *sink;     /* FILE * of /dev/null behind term.out with --json */
};

/*
 * Parses argv. Returns 0 to go on; -1 when the program should exit now with lab->exit_code:
 * 0 after --help (usage on stdout), 2 after a bad flag or value (one line naming it and the
 * usage on stderr). Nothing is printed to stdout for a bad flag.
 */
int lab_init(struct lab *lab, const char *name, const char *question, int phase_count, int argc, char **argv);

/* Usage text for lab-<name> on f. */
void lab_usage(const struct lab *lab, FILE *f);

/*
 * The title ("lab-pooling — "question"") and one line of context from fmt (servers, sizes).
 * Prints nothing with --json.
 */
void lab_header(struct lab *lab, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Adds key to the document's config; steals value. */
void lab_config_set(struct lab *lab, const char *key, json_t *value);

/*
 * Starts the next phase: with --step (and not --json), waits for Enter on stdin first; then
 * prints "[i/n] title".
 */
void lab_phase(struct lab *lab, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends {"name": name, "metrics": metrics} to the document; steals metrics. */
void lab_phase_metrics(struct lab *lab, const char *name, json_t *metrics);

/*
 * Ends the run: prints "✔ demonstrated: claim" or "✘ not demonstrated: claim", then the
 * evidence; with --json prints the whole document instead. Frees the lab. Returns
 * LAB_EXIT_OK or LAB_EXIT_NOT_SHOWN.
 */
int lab_verdict(struct lab *lab, bool demonstrated, const char *claim, const char *evidence_fmt, ...)
        __attribute__((format(printf, 4, 5)));

/*
 * The environment is wrong: prints STYLE.md's three lines on stderr, e.g.
 *   lab-pooling: cannot connect to PostgreSQL at postgres://lab@127.0.0.1:55432/lab
 *     server said: Connection refused
 *     start it:    make up   (or docker compose up -d --wait, or set LAB_PG_URL)
 * what is "PostgreSQL" or "Redis"; url is printed without its password. Frees the lab and
 * returns LAB_EXIT_ENV.
 */
int lab_env_error(struct lab *lab, const char *what, const char *url, const char *server_said);

/* Any other failure mid-run: "lab-<name>: <message>" on stderr; frees the lab; LAB_EXIT_ENV. */
int lab_fail(struct lab *lab, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * A progress hook for an experiment's config (progress_cb with progress_arg = the struct lab):
 * redraws "  <what> … 42%" on a terminal, prints nothing elsewhere. done is 0..1.
 */
void lab_progress_cb(const char *what, double done, void *lab);

/* Frees what lab_init allocated (for paths that return without a verdict). Idempotent. */
void lab_free(struct lab *lab);

/*
 * For --serve: blocks SIGINT and SIGTERM in the calling thread, so threads started after it
 * inherit the mask; lab_wait_signal then waits for one of them (sigwait) and returns it.
 */
void lab_block_signals(void);
int lab_wait_signal(void);

#endif
