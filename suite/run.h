/*
 * run.h — running labs for `labsuite labs` and `labsuite report` (one code path for both):
 * each DIR/lab-<name> --quick --json with stdin /dev/null, its stdout (the document) and stderr
 * kept in files of a private directory, timed, and read back as a json_t.
 *
 * Labs run `jobs` at a time, except the ones SUITE_ALONE names, which run with nothing beside them
 * (a fixed resource of their own, or a judge a neighbour could fail): suite_alone_reason says why.
 *
 * Each lab runs in a process group of its own (so a Ctrl-C at the terminal reaches labsuite only)
 * and gets SIGTERM if labsuite dies (PR_SET_PDEATHSIG); on Ctrl-C labsuite forwards SIGINT to
 * every running lab, which drops its schema and keys and exits, waits for them (at most
 * SUITE_STOP_MS, then SIGKILL to the lab's group) and returns SUITE_INTERRUPTED. A lab still
 * running past the batch's deadline (--timeout) is stopped the same way and its row says so.
 */
#ifndef SUITE_RUN_H
#define SUITE_RUN_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "term.h"

#define SUITE_EXIT_OK          0
#define SUITE_EXIT_FAILED      1
#define SUITE_EXIT_USAGE       2
#define SUITE_EXIT_INTERRUPTED 130
#define SUITE_INTERRUPTED      (-2)

/*
 * What a lab gets between SIGINT and SIGKILL: its guard's cleanup takes at most 1.7 s (common/
 * lab.c's GUARD_CLEANUP_MS) from the signal; a little more, so a lab that is dropping its schema
 * is not killed in the middle, and labsuite is still gone within 2 s of Ctrl-C.
 */
#define SUITE_STOP_MS 1900

/*
 * A lab's --quick run takes under 10 s (docs/architecture.md); one still running after this many
 * seconds hangs (a server that stopped answering, a lock never released) and is stopped, so that
 * `make labs` in CI ends with a row that says which lab hung instead of never ending.
 */
#define SUITE_TIMEOUT_S     120
#define SUITE_TIMEOUT_S_MAX 3600

/* labs run at once by default, by labs and report alike: this machine's cores */
#define SUITE_JOBS 2

#define SUITE_NAME_LEN 64
#define SUITE_LINE_LEN 512
/* a run's one line: the evidence (LAB_EVIDENCELEN) or an ending and a stderr line */
#define SUITE_SUMMARY_LEN 1600

/* One lab's run. */
struct suite_run {
	char name[SUITE_NAME_LEN];     /* "pooling" */
	char program[PATH_MAX];        /* DIR/lab-pooling */
	pid_t pid;                     /* while it runs */
	bool started, done;            /* done: reaped */
	bool timed_out;                /* stopped by labsuite past the batch's deadline */
	int status;                    /* the wait status */
	double start_ms, ms;           /* when it started (hist_now_ms), how long it took */
	json_t *doc;                   /* its --json document, NULL when it ended without one */
	char *err_text;                /* its stderr, whole (may be "") */
	char last_err[SUITE_LINE_LEN]; /* the last non-empty line of it */
};

/* A whole run of labs. */
struct suite_batch {
	struct suite_run *runs;
	int n;
	int jobs;
	int timeout_s;  /* a lab's deadline (0: SUITE_TIMEOUT_S) */
	double wall_ms; /* from the first start to the last end */
	char dir[PATH_MAX];
	struct term *progress; /* a progress line on a terminal (NULL: none) */
};

/* Why name must run alone (SUITE_ALONE's reason), or NULL when it may run beside others. */
const char *suite_alone_reason(const char *name);

/* Prints the table of labs run alone, with their reasons, for --help. */
void suite_alone_help(FILE *f);

/*
 * Parses the flags shared by labs and report from argv[1..): --bin DIR, --timeout S, and the lab
 * names left. Fills b (runs, one per name, programs checked executable); extra (may be NULL) is
 * called for any other flag with its value (next argument): it returns 1 when it took the value,
 * 0 when it took the flag alone, -1 for an unknown flag, -2 for a wrong value. Returns 0; 1 after
 * --help (help() printed it on stdout); or -1 with one line printed on stderr (usage error,
 * missing program: exit 2). b is to be freed (suite_batch_free) whatever it returns.
 */
struct suite_flags {
	const char *bin;
	void (*help)(FILE *f);
	int (*extra)(const char *flag, const char *value, void *arg);
	void *arg;
};
int suite_parse(const char *cmd, int argc, char **argv, struct suite_flags *fl, struct suite_batch *b);

/*
 * From here on SIGINT and SIGTERM only set a flag (suite_interrupted) that the batch and the
 * browser's check poll: call it once the flags are read, before anything starts.
 */
void suite_signals_catch(void);
bool suite_interrupted(void);

/*
 * Runs every lab of b, `jobs` at a time (SUITE_ALONE ones alone). 0 when every lab ran (whatever
 * its verdict), -1 with err when labsuite itself could not (no temp dir, fork), SUITE_INTERRUPTED
 * after a Ctrl-C (the running labs were sent SIGINT and reaped).
 */
int suite_batch_run(struct suite_batch *b, char *err, size_t errlen);

/*
 * What labs and report both do: suite_batch_run with a progress line on t when it is a terminal.
 * 0 when every lab ran; else the command's exit code (SUITE_EXIT_INTERRUPTED, SUITE_EXIT_USAGE)
 * with one line "labsuite <cmd>: ..." printed on stderr.
 */
int suite_batch_command(const char *cmd, struct suite_batch *b, struct term *t);

/* Frees what the runs hold and removes the batch's directory. */
void suite_batch_free(struct suite_batch *b);

/*
 * Reads a finished run's outputs from its files (the document, stderr): what suite_batch_run does
 * for each lab; public so tests can give a run files of their own. -1 only when a file that
 * exists cannot be read.
 */
int suite_run_read(struct suite_run *r, const char *out_path, const char *err_path);
/* The last non-empty line of the file at path (its first MiB), into out; "" when it has none. */
void suite_file_last_line(const char *path, char *out, size_t outlen);

/* The verdict of a run: true only when it left a document whose verdict is demonstrated. */
bool suite_run_ok(const struct suite_run *r);

/* A run's one line: the document's evidence, or how it ended without one and its last stderr line. */
void suite_run_summary(const struct suite_run *r, char *out, size_t outlen);

/* How the run ended, as words: "exit 2", "killed by signal 9", "stopped after 2 m 00 s (--timeout)". */
void suite_run_ending(const struct suite_run *r, char *out, size_t outlen);

/* The suite's exit code for a batch that ran: 1 when any run is not ok, else 0. */
int suite_batch_exit(const struct suite_batch *b);

/* A duration for a person: "840 ms", "7.2 s", "1 m 32 s". */
char *suite_fmt_ms(char *buf, size_t len, double ms);

/* ---- labs.c: the screen of `labsuite labs` ---- */

/*
 * Text cut to at most width display columns at a word, with "…" when cut (a word longer than
 * the width is cut inside). Returns out.
 */
char *suite_cut(const char *text, int width, char *out, size_t outlen);

/*
 * A run's row, with no colour: "✔ name  time  evidence", the name padded to name_w columns and
 * the whole row cut to width columns. Returns out.
 */
char *suite_row(const struct suite_run *r, int name_w, int width, char *out, size_t outlen);

/* The total line: "16 labs · 15 ✔ · 1 ✘ · wall 1 m 32 s · labs' time 2 m 07 s". Returns out. */
char *suite_total(const struct suite_batch *b, char *out, size_t outlen);

/* The screen: a row per run (the mark in colour on a terminal), then the total line. */
void suite_screen(const struct suite_batch *b, struct term *t);

#endif
