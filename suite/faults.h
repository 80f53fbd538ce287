/*
 * faults.h — the suite's fault matrix (issue 16) and the pieces the soak reuses: every API lab's
 * --serve as a child of ours, under a steady load that exercises its real route, against a
 * PRIVATE PostgreSQL and Redis (scripts/labenv with a state dir and ports of their own: a restart
 * of the shared servers would break every test beside us), PostgreSQL reached through an
 * in-process proxy (common/proxy.h) so that the network can be cut.
 *
 *   faults.c          the private servers and the faults done to them; a lab's process
 *   faults_drive.c    the load on one lab (a thread each, common/load.h) and its timeline
 *   faults_recipes.c  per lab: the request, what it needs first (a token, a cookie), its writes
 *   faults_matrix.c   the schedule, the cells, the table, `labsuite faults`
 *
 * Faults come one at a time, every lab seeing each: PostgreSQL restarted (pg_ctl restart -m fast),
 * the labs' backends ended (pg_terminate_backend), Redis stopped (SHUTDOWN NOSAVE) and started,
 * the network to PostgreSQL cut (proxy refuses and cuts) and restored; then SIGINT.
 *
 * Errors: functions that can fail return -1 (or NULL) and write one line into err (errlen bytes).
 */
#ifndef SUITE_FAULTS_H
#define SUITE_FAULTS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "hist.h"

/*
 * The API labs: each has --serve, which prints "listening on http://127.0.0.1:PORT". Their names
 * are their recipes' (faults_recipes.c), whose table is asserted to hold FAULTS_LABS.
 */
#define FAULTS_LABS 8
/* The i-th lab's name (0 <= i < FAULTS_LABS), in the matrix's row order. */
const char *faults_lab_name_at(int i);

/*
 * After a fault ends, every lab answers 2xx again within this. The slowest path back is a pool
 * that finds its connections dead only when a request uses them, then connects anew, and a
 * connect begun while PostgreSQL was still down waits out libpq's connect timeout (2 s, pg.c)
 * before the next one succeeds: 2 s, plus as much again for the sanitizer build's slower code on
 * a loaded 2-core machine (measured: up to 2.2 s there), plus 1 s. A lab past it never reconnects.
 */
#define FAULTS_RECOVER_BOUND_MS 5000
/* "steady 2xx": this many answers in a row, all 2xx, after the last error */
#define FAULTS_STEADY 8
/*
 * A request unanswered after this is a hang (a failure), not a slow answer: one that waits on a
 * connect begun during the fault gets its 503 after libpq's 2 s connect timeout, and the sanitizer
 * build was seen to take up to 3 s for it; a handler that has not answered in 5 s is stuck.
 */
#define FAULTS_REQUEST_TIMEOUT_MS 5000
/* how long a fault with a duration of its own (Redis down, the network cut) lasts */
#define FAULTS_HOLD_MS 800
/* each lab's load: one client, a pause between its requests (about 40 requests a second) */
#define FAULTS_THINK_MS 25
/* A lab's --serve stops in order within 2 s of SIGINT (docs/architecture.md, Ctrl-C); tests
 * allow 4 s on a loaded machine (tests/lab_run.h's LAB_INTERRUPT_BOUND_MS): the same here. */
#define FAULTS_STOP_BOUND_MS 4000
/* the room for one lab's reason it did not start */
#define FAULTS_ERR_LEN 256

/* ---- faults.c: the private servers ---- */

struct faults_env {
	char labenv[PATH_MAX];    /* scripts/labenv */
	char state_dir[PATH_MAX]; /* its LAB_STATE_DIR */
	int pg_port, redis_port;
	char pg_url[128];      /* the private PostgreSQL, directly */
	char labs_pg_url[128]; /* the same through the proxy: what the labs get */
	char redis_url[128];
	char run_dir[PATH_MAX + 8]; /* state_dir/run: the labs' stdout and stderr files */
	struct proxy *proxy;
	bool up;
};

/*
 * Makes state_dir and its run dir, starts the private servers (labenv up with
 * LAB_STATE_DIR=state_dir and free ports) and the proxy in front of PostgreSQL. -1 and err (what labenv said)
 * when they cannot start; call faults_env_down anyway.
 */
int faults_env_up(struct faults_env *e, const char *labenv, const char *state_dir, char *err, size_t errlen);
/* Stops the proxy and the private servers (labenv down; the template stays). */
void faults_env_down(struct faults_env *e);

/* PostgreSQL restarted by labenv pg-restart (pg_ctl restart -m fast as its owner); waits for it. */
int faults_pg_restart(struct faults_env *e, char *err, size_t errlen);
/* pg_terminate_backend of every lab's backend (application_name lab-*), as role lab: how many. */
int faults_backends_kill(struct faults_env *e, char *err, size_t errlen);
/* Redis SHUTDOWN NOSAVE; then started again the way labenv does (labenv up). */
int faults_redis_stop(struct faults_env *e, char *err, size_t errlen);
int faults_redis_start(struct faults_env *e, char *err, size_t errlen);
/* The network to PostgreSQL: cut (refuse new connections, close the open ones) or restored. */
int faults_net_cut(struct faults_env *e, bool cut, char *err, size_t errlen);

/* ---- a lab under load (faults.c, faults_drive.c) ---- */

struct faults_recipe;
struct faults_lab;

/* What one answer was, for the timeline. */
enum faults_kind {
	FAULTS_OK,    /* 2xx */
	FAULTS_CLEAR, /* 500 or 503 with a JSON body {"error": "..."} */
	FAULTS_BAD,   /* any other status, or a 5xx without a clear body */
	FAULTS_NONE,  /* no answer: refused, reset, timed out */
};

struct faults_event {
	double at_ms; /* hist_now_ms() when the answer (or the failure) came */
	uint16_t status;
	uint8_t kind;
};

/*
 * A lab's setup (pagination seeds its rows) takes a second or two, several times that under the
 * sanitizers on a busy machine: past this its --serve is stuck.
 */
#define FAULTS_START_MS 30000

/*
 * Starts bin_dir/lab-<name> --serve --quick --port 0 with LAB_PG_URL and LAB_REDIS_URL set,
 * its stdout and stderr in files under dir (from the main thread: the lab gets SIGINT when the
 * thread that started it ends, PR_SET_PDEATHSIG), waits (FAULTS_START_MS at most) for its
 * "listening on" line, and runs its recipe's preparation (a login, a session). NULL and err.
 * faults_lab_spawn and faults_lab_ready are its two halves, so that labs start side by side.
 */
struct faults_lab *faults_lab_start(const char *bin_dir, const char *name, const char *pg_url,
                                    const char *redis_url, const char *dir, char *err, size_t errlen);
struct faults_lab *faults_lab_spawn(const char *bin_dir, const char *name, const char *pg_url,
                                    const char *redis_url, const char *dir, char *err, size_t errlen);
int faults_lab_ready(struct faults_lab *l, int timeout_ms, char *err, size_t errlen);
const char *faults_lab_name(const struct faults_lab *l);
pid_t faults_lab_pid(const struct faults_lab *l);
bool faults_lab_writes(const struct faults_lab *l);
/* Whether the route under load talks to Redis: the matrix marks a Redis restart that cost a lab
 * without it nothing as "(no Redis)", not as a recovery. */
bool faults_lab_uses_redis(const struct faults_lab *l);
/* True while the process runs; else its exit in *status (a wait status). */
bool faults_lab_alive(struct faults_lab *l, int *status);
/* The last lines of its stderr (one line, " | " between). */
void faults_lab_stderr_tail(const struct faults_lab *l, char *out, size_t outlen);
/* Whether its stderr holds a sanitizer's report (AddressSanitizer, LeakSanitizer, runtime error). */
bool faults_lab_sanitizer_report(const struct faults_lab *l);

/* Starts the load thread (think_ms between requests). -1 and err. */
int faults_drive_start(struct faults_lab *l, int think_ms, char *err, size_t errlen);
/* Stops it (returns once its last request ended). */
void faults_drive_stop(struct faults_lab *l);

/*
 * The events from index from on, copied into out (at most max): how many. The timeline only grows;
 * thread-safe.
 */
size_t faults_events(struct faults_lab *l, size_t from, struct faults_event *out, size_t max);
size_t faults_events_count(struct faults_lab *l);
/* The latencies (µs) and outcome counts since the last call, and resets them (the soak's interval). */
void faults_interval_take(struct faults_lab *l, struct hist *lat, uint64_t *ok, uint64_t *errors);

/* Writes: the 2xx answers that wrote, against the rows; counted after the load stopped. */
struct faults_writes {
	int64_t acknowledged; /* 2xx answers that wrote */
	int64_t ambiguous;    /* answered with an error or not at all: may or may not have written */
	int64_t found;        /* writes found in the database */
	int64_t lost;         /* acknowledged but not found */
	int64_t doubled;      /* found more often than sent */
};
/* For a lab that writes: counts its writes on pg_url. -1 and err. */
int faults_lab_count_writes(struct faults_lab *l, const char *pg_url, struct faults_writes *w, char *err,
                            size_t errlen);

/*
 * Sends sig (once: a second SIGINT makes a lab's guard take the hard way); then waits until the
 * exit, bound_ms at most from the signal (then SIGKILL): the exit code (-1: killed by a signal, or
 * SIGKILL'd) and how long after the signal it came. Free l after.
 */
void faults_lab_signal(struct faults_lab *l, int sig);
int faults_lab_wait(struct faults_lab *l, int bound_ms, double *stop_ms);
/* Frees l (SIGKILL and reap if still running). */
void faults_lab_free(struct faults_lab *l);

/*
 * Every lab (faults_lab_name_at) started side by side on e's servers (outputs in e->run_dir),
 * ready and driven (FAULTS_THINK_MS), or labs[i] NULL and errs[i] says why. A lab that failed to
 * start is started once more, alone, before it counts as failed. log: a line per lab, or NULL.
 * Returns how many run.
 */
int faults_labs_start(const char *bin_dir, const struct faults_env *e, FILE *log,
                      struct faults_lab *labs[FAULTS_LABS], char errs[FAULTS_LABS][FAULTS_ERR_LEN]);
/*
 * SIGINT to every lab at once (NULL entries skipped), each exit timed as it comes: exit_code[i]
 * and stop_ms[i] as faults_lab_wait gives them, SIGKILL past FAULTS_STOP_BOUND_MS. The labs are
 * not freed (their stderr may still be read). Their load must be stopped first.
 */
void faults_labs_stop(struct faults_lab *labs[FAULTS_LABS], int exit_code[FAULTS_LABS],
                      double stop_ms[FAULTS_LABS]);

/* Whether schema lab_<name> or keys lab:<name>:* are left on the servers: -1 and err. */
int faults_leftovers(const char *name, const char *pg_url, const char *redis_url, int *schemas, int *keys,
                     char *err, size_t errlen);

/* ---- faults_matrix.c ---- */

enum faults_fault { FAULT_PG_RESTART, FAULT_BACKEND_KILL, FAULT_REDIS_RESTART, FAULT_NET_CUT, FAULTS_N };
extern const char *const faults_fault_names[FAULTS_N];

struct faults_cell {
	uint64_t answers, ok, clear, bad, none; /* in the fault's window: its start to the next's */
	double recovered_ms; /* fault's end to the first of FAULTS_STEADY 2xx after the last error; -1: never
	                      */
	char first_bad[160]; /* the first BAD or NONE answer: status and time */
};

struct faults_row {
	char name[32];
	bool started;
	char start_err[FAULTS_ERR_LEN];
	struct faults_cell cells[FAULTS_N];
	bool writes;
	bool redis; /* its route under load talks to Redis */
	struct faults_writes w;
	char count_err[256];
	bool died;     /* exited before SIGINT */
	int exit_code; /* after SIGINT (-1: signal or killed) */
	double stop_ms;
	int schemas_left, keys_left;
	bool sanitizer; /* a report on its stderr */
	char stderr_tail[400];
};

struct faults_matrix {
	struct faults_row rows[FAULTS_LABS];
	int nrows;
	double fault_ms[FAULTS_N]; /* how long each fault lasted (injected to lifted) */
	double total_ms;
};

struct faults_options {
	const char *bin_dir;   /* the lab programs */
	const char *labenv;    /* scripts/labenv */
	const char *state_dir; /* the private servers' state (bin_dir/fault-env) */
	FILE *log;             /* a line per step, or NULL */
};

/* Runs the whole matrix. -1 and err when the servers could not start. */
int faults_matrix_run(const struct faults_options *o, struct faults_matrix *m, char *err, size_t errlen);
/* Whether a row passes every check; when not, why (its first failure) in why. */
bool faults_row_ok(const struct faults_row *r, char *why, size_t whylen);
/* The table: a row per lab, a column per fault, then writes and SIGINT; a line per failure. */
void faults_matrix_print(const struct faults_matrix *m, FILE *f);

/* `labsuite faults [--bin DIR] [--labenv PATH]`: 0 every cell passes, 1 one does not, 2 no servers. */
int suite_faults(int argc, char **argv);

#endif
