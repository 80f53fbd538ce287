/*
 * isolation.h — the experiment of lab-isolation: "What are ACID properties? Which databases don't
 * fully guarantee them?"
 *
 * Phases:
 *   (1) the matrix: Hermitage's ten anomaly tests (G0 ... G2) at READ COMMITTED, REPEATABLE READ
 *       and SERIALIZABLE, run by a step driver (driver.c) from scripts kept as data (scripts.c);
 *       each cell decided from what the sessions read, whether a step blocked, the errors and the
 *       final rows, then compared with Hermitage's published PostgreSQL column;
 *   (2) write skew for real: doctors on call, pairs of concurrent clients each taking one doctor
 *       off a shift that needs one left, under REPEATABLE READ, then three fixes under the same
 *       load (SERIALIZABLE + retry, SELECT ... FOR UPDATE, a materialized conflict with CHECK);
 *   (3) atomicity: a transfer's backend terminated between its two statements leaves nothing;
 *   (4) durability: a throwaway cluster (initdb in a child_tmpdir, postgres via child.h) killed
 *       with SIGKILL mid-load, all its processes at once, with synchronous_commit off and on:
 *       commits acknowledged but missing after the restart.
 * Storage: schema lab_isolation on the lab's PostgreSQL (no Redis), and the throwaway cluster.
 *
 * Errors: functions return -1 and write one line into err (errlen bytes).
 */
#ifndef LAB_ISOLATION_H
#define LAB_ISOLATION_H

#include <stdbool.h>
#include <stddef.h>
#include <limits.h>
#include <stdint.h>

#include "lab.h"

#define ISOLATION_PHASES 4
#define ISO_TESTS        10
#define ISO_LEVELS       3
#define ISO_TRACE_MAX    24
#define ISO_TEXT_LEN     96
#define ISO_WS_MODES     4
#define ISO_DUR_MODES    2
#define ISO_MAX_CLIENTS  8

/* how a cell ended */
enum iso_outcome {
	ISO_ANOMALY, /* the anomaly was observed */
	ISO_BLOCKED, /* prevented: a step waited for the other's lock, then went on safely */
	ISO_ABORTED, /* prevented: 40001 (or 40P01), the transaction rolled back */
	ISO_READ_OK, /* prevented: every read saw what a serial order allows */
	ISO_ERROR,   /* something else failed (a step stuck, an unexpected error) */
};

/* one step as it ran: what it sent, and what came back (rows, a tag, blocked, an error) */
struct iso_trace_line {
	int step;    /* index in the script */
	int session; /* 0 = T1 */
	char sql[ISO_TEXT_LEN];
	char got[ISO_TEXT_LEN];
};

struct iso_cell {
	enum iso_outcome outcome;
	bool expected_prevented; /* Hermitage's published PostgreSQL cell */
	char why[ISO_TEXT_LEN];  /* the observation that decided it */
	char final_rows[ISO_TEXT_LEN];
	int ntrace;
	struct iso_trace_line trace[ISO_TRACE_MAX];
};

struct iso_ws_row {
	const char *what;
	uint64_t attempts; /* transactions that decided */
	uint64_t off_call; /* doctors taken off call (committed) */
	uint64_t declined; /* a doctor kept on call because the decision said so */
	uint64_t retries;  /* 40001 retried (SERIALIZABLE) */
	uint64_t refused;  /* refused by the CHECK constraint (23514) */
	uint64_t shifts;   /* shifts in the run */
	uint64_t violated; /* shifts left with no doctor on call: the invariant broken */
	double elapsed_s;
};

struct iso_dur_row {
	const char *what; /* "synchronous_commit = off" */
	uint64_t acked;   /* commits the clients were told succeeded before the kill */
	uint64_t present; /* of those, rows found after the restart */
	uint64_t lost;    /* acked - present */
	uint64_t extra;   /* rows present that were never acknowledged (in flight at the kill) */
	double load_s;    /* how long the load ran before the kill */
	int killed;       /* processes of the cluster killed with SIGKILL */
};

struct isolation_result {
	struct iso_cell cells[ISO_TESTS][ISO_LEVELS];
	int ncells; /* cells run */
	struct iso_ws_row ws[ISO_WS_MODES];
	int nws;
	/* atomicity */
	bool atom_ran;
	int64_t atom_seen_inside;   /* ledger rows the transaction saw before its backend was ended */
	int64_t atom_rows_after;    /* ledger rows after */
	int64_t atom_balance_after; /* account 1's balance after (100 before) */
	char atom_error[ISO_TEXT_LEN];
	/* durability */
	struct iso_dur_row dur[ISO_DUR_MODES];
	int ndur;
	char pg_bindir[PATH_MAX];
	bool lost_pg;
};

struct isolation_config {
	const char *pg_url;
	int block_ms;  /* a step not returned after this long is blocked */
	int ws_pairs;  /* write skew: pairs of clients, each pair on its own shifts */
	int ws_rounds; /* shifts per pair */
	int dur_clients;
	int dur_load_ms;     /* load before the SIGKILL */
	const char *os_user; /* the user the throwaway cluster runs as when the lab is root */
	struct lab_phase_hooks hooks;
	void (*progress_cb)(const char *what, double done, void *arg);
	void *progress_arg;
};

extern const char *const iso_level_names[ISO_LEVELS];
extern const char *const iso_test_names[ISO_TESTS];
extern const char *const iso_test_titles[ISO_TESTS];
/* Hermitage's PostgreSQL column (README summary table): true = the level prevents the anomaly */
extern const bool iso_hermitage[ISO_TESTS][ISO_LEVELS];

void isolation_config_default(struct isolation_config *cfg, bool quick);
int isolation_run(const struct isolation_config *cfg, struct isolation_result *r, char *err, size_t errlen);
void isolation_judge(const struct isolation_result *r, struct lab_verdict *v);

/* Whether a cell agrees with the published table. */
bool iso_cell_agrees(const struct iso_cell *c);
/* "blocked", "40001", "read ok", "ANOMALY", "error" */
const char *iso_outcome_name(enum iso_outcome o);
/* The first cell that disagrees (row-major), or -1 when every cell agrees; *test, *level set. */
int iso_first_disagreement(const struct isolation_result *r, int *test, int *level);

/* The step-by-step trace of cell (t, l), several lines into out; returns its length. */
size_t iso_trace_format(const struct isolation_result *r, int t, int l, char *out, size_t len);

#endif
