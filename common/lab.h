/*
 * lab.h — the runner every lab shares: flags, phases, narration, the verdict, the --json
 * document, the exit codes, and what happens on Ctrl-C. A lab is three parts (the shape every
 * lab follows, docs/architecture.md):
 *
 *   <lab>.c   <lab>_run(cfg, result, err, errlen) walks the lab's list of phases
 *             (lab_phases_walk) and measures; <lab>_judge(result, verdict) decides, with the
 *             thresholds written once, with their reasons.
 *   main.c    the telling: flags, one "before" and one "after" per phase (title; table, chart,
 *             lab_phase_metrics), then the verdict the judge gave:
 *
 *	struct lab lab;
 *	if (lab_init(&lab, "pooling", QUESTION, 4, argc, argv) < 0)
 *		return lab.exit_code;            // --help (0) or a bad flag (2)
 *	if (lab_probe(&lab, true, false) < 0)    // PostgreSQL answers, or the three-line error
 *		return lab.exit_code;
 *	lab_header(&lab, "PostgreSQL %s · pool max %d", ...);
 *	struct lab_teller teller = {&lab, TELLS, 4, &cfg, &result};
 *	cfg.hooks = lab_teller_hooks(&teller);
 *	if (pooling_run(&cfg, &result, err, sizeof(err)) < 0)
 *		return lab_fail(&lab, "%s", err);
 *	pooling_judge(&result, &verdict);
 *	return lab_finish(&lab, &verdict);      // 0 or 1, frees the lab
 *
 *   tests/test_<lab>.c   calls <lab>_run with a small config and asserts <lab>_judge's verdict
 *                        and the counts behind it.
 *
 * Flags (parsed here, the same for every lab): --quick --json --step --predict --seed N --serve
 * --port N --help. Exit codes: LAB_EXIT_OK (demonstrated), LAB_EXIT_NOT_SHOWN (the numbers
 * disagree with the claim), LAB_EXIT_ENV (server unreachable, bad flag), LAB_EXIT_INTERRUPTED
 * (Ctrl-C or SIGTERM: the lab's schema and keys were dropped on the way out).
 *
 * With --json, narration goes to a sink (lab.term writes to /dev/null) and stdout carries only
 * one document: {"lab", "question", "config", "phases": [{"name", "metrics"}], "questions",
 * "chart", "verdict"} (docs/architecture.md).
 *
 * With --predict, before each phase that has a question (struct lab_question) the lab asks it on
 * the terminal, and after the phase's table it shows the guess beside what the phase measured;
 * lab_finish prints the score. --predict needs a terminal on stdin (else exit 2).
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
/* 128 + SIGINT, as a shell reports a program ended by Ctrl-C */
#define LAB_EXIT_INTERRUPTED 130

#define LAB_ERRLEN      512
#define LAB_CLAIMLEN    256
#define LAB_EVIDENCELEN 1024

/*
 * What a lab's judge decided: <lab>_judge fills it from the numbers, main.c prints it
 * (lab_finish), the test asserts it. evidence starts with what disagreed when the claim was not
 * shown, then the numbers behind the claim.
 */
struct lab_verdict {
	bool demonstrated;
	char claim[LAB_CLAIMLEN];
	char evidence[LAB_EVIDENCELEN];
};

/* How a question of --predict is answered: a number (with a tolerance) or one of a few choices. */
enum lab_answer_kind { LAB_ANSWER_NUMBER, LAB_ANSWER_CHOICE };

#define LAB_CHOICES_MAX 4

/*
 * The question --predict asks before a phase shows its numbers, whose answer the phase then
 * measures. It is data beside the phase in <lab>.c (the phase's `question`), so every lab can add
 * them and main.c never does:
 *
 *	static double q_loop_users(const void *cfg, int i) { (void)i; return users_of(cfg); }
 *	static double q_loop_measured(const void *cfg, const void *result) { return statements; }
 *	static const struct lab_question Q_LOOP = {
 *		.text = "{} users, an ORM loop: how many statements will the server run?",
 *		.given = q_loop_users, .kind = LAB_ANSWER_NUMBER, .unit = "statements",
 *		.measured = q_loop_measured, .why = "one for the list, one per user: 1 + N"};
 *
 * A number counts as right when |guess - measured| <= max(within, within_pct % of |measured|):
 * give counts an exact or small absolute margin (within = 0 means exactly), rates a percentage.
 */
struct lab_question {
	const char *text;                        /* "{} users ...": each {} is given(cfg, i), i from 0 */
	double (*given)(const void *cfg, int i); /* the numbers text names (NULL when it names none) */
	enum lab_answer_kind kind;
	const char *unit;  /* NUMBER: what is counted, "statements", "requests/s" */
	double within;     /* NUMBER: absolute margin (0 = exactly, for counts) */
	double within_pct; /* NUMBER: or this percentage of the measured value, whichever is wider */
	const char *choices[LAB_CHOICES_MAX + 1]; /* CHOICE: shown as a) b) c), NULL-terminated */
	/* the phase's answer from its result: NUMBER the value, CHOICE the index of the right choice;
	 * NAN (math.h) when this run did not decide it (the question is then left out of the score) */
	double (*measured)(const void *cfg, const void *result);
	const char *why; /* one line shown after the answer: why it is what it is (may be NULL) */
};

/*
 * One phase of a lab's experiment, as <lab>.c lists them: run measures into the lab's result
 * (cfg and result are the lab's own structs) and returns 0, or -1 with one line in err.
 */
struct lab_phase_def {
	const char *name; /* the phase's name in the --json document: "exhaustion" */
	int (*run)(const void *cfg, void *result, char *err, size_t errlen);
	const struct lab_question *question; /* what --predict asks before it (NULL: nothing) */
};

/*
 * Called around each phase by lab_phases_walk (main.c tells through them); each may be NULL.
 * def is the phase's entry in the lab's list (its name, its question).
 */
struct lab_phase_hooks {
	void (*begin_cb)(int phase, const struct lab_phase_def *def, void *arg); /* its title, --step */
	void (*end_cb)(int phase, const struct lab_phase_def *def, void *arg);   /* its table, metrics */
	void *arg;
};

struct lab;

/* How main.c tells phase i: before it runs (lab_phase with the title) and after (the table). */
struct lab_phase_tell {
	void (*before)(struct lab *lab, const void *cfg);
	void (*after)(struct lab *lab, const void *cfg, const void *result);
};

/* Binds a lab's tells to hooks: see lab_teller_hooks. */
struct lab_teller {
	struct lab *lab;
	const struct lab_phase_tell *tells; /* one per phase, in the order of the lab's phase list */
	int ntells;
	const void *cfg;
	const void *result;
};

/*
 * A boolean flag of one lab's own, beside the shared ones ("--vulnerable"): off unless given,
 * shown in the usage after them. A lab passes its list to lab_init_flags.
 */
struct lab_flag {
	const char *name; /* "--vulnerable" */
	const char *help; /* one line for the usage */
	bool *value;      /* set to true when the flag is given (false otherwise) */
	bool serve_only;  /* only with --serve: without it, a usage error (exit 2) */
};

struct lab_opts {
	bool quick;
	bool json;
	bool step;
	bool predict; /* ask each phase's question first (stdin is a terminal: lab_init checked) */
	bool serve;
	int port;              /* --port N, 0 = a free port */
	uint64_t seed;         /* --seed N, default 1 so runs repeat */
	const char *pg_url;    /* LAB_PG_URL or PG_DEFAULT_URL (pg.h) */
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
	json_t *config;               /* the --json document's "config" object (labs add to it) */
	json_t *phases;               /* its "phases" array */
	json_t *questions;            /* its "questions": each phase's question, answer, outcome */
	json_t *chart;                /* its "chart" (lab_chart), NULL until the lab sets one */
	int asked, answered, right;   /* --predict's score */
	void *sink;                   /* FILE * of /dev/null behind term.out with --json */
	const struct lab_flag *flags; /* the lab's own flags (lab_init_flags), NULL when none */
	int nflags;
};

/*
 * Parses argv. Returns 0 to go on; -1 when the program should exit now with lab->exit_code:
 * 0 after --help (usage on stdout), 2 after a bad flag or value (one line naming it and the
 * usage on stderr). Nothing is printed to stdout for a bad flag.
 */
int lab_init(struct lab *lab, const char *name, const char *question, int phase_count, int argc, char **argv);

/*
 * lab_init for a lab with boolean flags of its own: flags[0..nflags) are parsed beside the shared
 * ones (each name exactly; "--vulnerable=yes" is a bad flag) and listed in the usage. flags must
 * outlive the lab. A name that is one of the shared flags is never reached (the shared one wins).
 */
int lab_init_flags(struct lab *lab, const char *name, const char *question, int phase_count,
                   const struct lab_flag *flags, int nflags, int argc, char **argv);

/* Usage text for lab-<name> on f. */
void lab_usage(const struct lab *lab, FILE *f);

/* a bad argument is shown up to this many bytes, then "..." */
#define LAB_ARG_SHOWN     64
#define LAB_ARG_SHOWN_LEN (LAB_ARG_SHOWN * 4 + 4)
/*
 * arg as a message quotes it (a bad flag, a bad value), into buf: a byte outside printable ASCII
 * as \xNN (an escape sequence typed into a flag is shown, never run by the terminal; a newline
 * never splits the line), a backslash and a double quote escaped, cut after LAB_ARG_SHOWN bytes
 * with "...". Returns buf.
 */
const char *lab_arg_shown(const char *arg, char buf[LAB_ARG_SHOWN_LEN]);

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
 * The lab's key chart, which `make report` draws as an SVG from the --json document's "chart"
 * (steals chart; a second call replaces the first). The shape:
 *
 *   {"title": "statements per strategy", "unit": "statements",
 *    "labels": ["loop", "JOIN", "batched"],                  one group of bars per label
 *    "series": [{"name": "N = 100", "values": [101, 1, 2]},  one bar per series in each group
 *               {"name": "Little's law", "values": [...], "line": true}],  drawn as a line
 *    "log": false}                                           a log scale when values span decades
 *
 * Values are numbers (null: no bar). main.c sets it from the result, beside the tables.
 */
void lab_chart(struct lab *lab, json_t *chart);

/* Fills v: what a judge calls once, at its end. This function can't fail (long text is cut). */
void lab_verdict_set(struct lab_verdict *v, bool demonstrated, const char *claim, const char *evidence_fmt,
                     ...) __attribute__((format(printf, 4, 5)));

/*
 * Ends the run with the judge's verdict: prints "✔ demonstrated: claim" or "✘ not demonstrated:
 * claim", then the evidence; with --json prints the whole document instead. Frees the lab.
 * Returns LAB_EXIT_OK or LAB_EXIT_NOT_SHOWN (LAB_EXIT_ENV if the document cannot be written).
 */
int lab_finish(struct lab *lab, const struct lab_verdict *v);

/*
 * Runs defs[0..n) in order on cfg and result, calling hooks around each (hooks may be NULL).
 * Stops at the first phase that fails (-1, its err) and before a phase when the lab was
 * interrupted (-1, "interrupted"). Returns 0 when every phase ran.
 */
int lab_phases_walk(const struct lab_phase_def *defs, int n, const void *cfg, void *result,
                    const struct lab_phase_hooks *hooks, char *err, size_t errlen);

/*
 * Hooks that tell phase i with t->tells[i]: before() runs after --step's pause; after() runs
 * once the progress line is cleared. With --predict, the phase's question is asked after
 * before() and answered after after(); without it, what the phase measured is still recorded in
 * the document's "questions". t must outlive the walk. This function can't fail.
 */
struct lab_phase_hooks lab_teller_hooks(struct lab_teller *t);

/*
 * The environment is wrong: prints three lines on stderr (docs/architecture.md), e.g.
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
 * Checks that the servers the lab needs answer: PostgreSQL at opts.pg_url when pg, Redis at
 * opts.redis_url when redis. 0 when they do; otherwise prints the three lines of lab_env_error
 * (the URL without its password, what the server or the socket said, the command that starts
 * it), frees the lab, sets lab->exit_code to LAB_EXIT_ENV and returns -1.
 */
int lab_probe(struct lab *lab, bool pg, bool redis);

/*
 * A server was lost mid-run (the error came from it): one line on stderr naming it and its
 * URL without the password, "lab-stampede: lost Redis at redis://127.0.0.1:56379/0: Server
 * closed the connection", then how to start it. Frees the lab, returns LAB_EXIT_ENV.
 */
int lab_lost(struct lab *lab, const char *what, const char *url, const char *server_said);
/*
 * A lab's run failed with err: lab_lost for the server it names ("PostgreSQL" at opts.pg_url,
 * "Redis" at opts.redis_url), else lab_fail. NULL or "" for lost: no server was lost. Frees the
 * lab, returns LAB_EXIT_ENV. (lab_fail, lab_lost and lab_env_error first clear a progress line.)
 */
int lab_run_failed(struct lab *lab, const char *lost, const char *err);

/*
 * Ctrl-C and SIGTERM. lab_init (once per process, after the flags parsed) blocks both in the
 * calling thread, so every thread started after it inherits the mask, and starts one thread
 * that waits for them. When one arrives:
 *   - during lab_serve_wait, it wakes the waiter, which stops the API in order and tears down;
 *     if the process has not exited 2 s later, the lab is cleaned up as below;
 *   - otherwise (or at a second signal) the lab is cleaned up at once: its own backends (those
 *     with this process's application_name) are ended, schema lab_<name> is dropped, Redis keys
 *     lab:<name>:* are deleted, one line says so on stderr, and the process exits with
 *     LAB_EXIT_INTERRUPTED. Every other thread's way out (a return from main, exit()) waits for
 *     that cleanup to finish first.
 * The whole cleanup has one deadline, 1.7 s (connect, lock and statement timeouts are cut to what
 * is left of it); its messages go to stderr with write(2), so a thread blocked on a full stdout
 * pipe holds no lock the guard needs; SIGPIPE is ignored from lab_init on.
 */
bool lab_interrupted(void);
/*
 * A lab that keeps its schema or keys on servers of its own too (lab-consistency's primary and
 * Redis primary, beside LAB_PG_URL's and LAB_REDIS_URL's) names them here, before it writes there:
 * on Ctrl-C the guard ends the lab's backends, drops lab_<name> and deletes lab:<name>:* on them as
 * well, within the same deadline. Either may be NULL; up to two of each; any thread.
 */
void lab_guard_servers(const char *pg_url, const char *redis_url);

/*
 * For --serve: prints "listening on http://127.0.0.1:PORT" (one line, for scripts to wait on),
 * then help (the routes, may be NULL) and "Ctrl-C to stop", and blocks until SIGINT or SIGTERM.
 * The caller then stops its API and tears down (within 2 s, see lab_interrupted). Returns the
 * signal.
 */
int lab_serve_wait(struct lab *lab, int port, const char *help);

#endif
