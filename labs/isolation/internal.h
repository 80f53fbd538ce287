/*
 * internal.h — what lab-isolation's files share: the scripts as data (scripts.c), the step driver
 * (driver.c), the phases (phases.c, durability.c). isolation.h is the public side.
 */
#ifndef LAB_ISOLATION_INTERNAL_H
#define LAB_ISOLATION_INTERNAL_H

#include <libpq-fe.h>

#include "isolation.h"

#define SCHEMA           "lab_isolation"
#define ISO_MAX_SESSIONS 3
#define ISO_MAX_STEPS    16

/* a step's flags */
#define STEP_READ 1u /* a SELECT whose rows are recorded and compared with bad */
#define STEP_MUST_WAIT                                                                                       \
	2u /* writes a row another open transaction wrote: returning at once, without                        \
	    * blocking, is a dirty write (G0) */

/* how the reads marked bad decide the anomaly */
enum iso_rule {
	RULE_ANY,           /* any bad read is the anomaly (a dirty or a non-repeatable read) */
	RULE_ALL_COMMITTED, /* every bad read happened and every transaction committed: each decided on a
	                     * state the other changed, and both stood (write skew, G2) */
};

struct iso_step {
	int s;           /* session: 0 = T1 */
	const char *sql; /* on table test (id int primary key, value int), search_path lab_isolation */
	unsigned flags;
	const char *bad; /* STEP_READ: the rows ("1=>101,2=>20", "(none)") that show the anomaly */
};

struct iso_script {
	int nsessions;
	enum iso_rule rule;
	/* the final rows that show the anomaly when no transaction rolled back (a lost update) */
	const char *final_bad;
	int nsteps;
	struct iso_step steps[ISO_MAX_STEPS];
};

extern const struct iso_script iso_scripts[ISO_TESTS];

/* Runs script at level on the sessions (connected, search_path set) and the monitor; fills cell. */
int iso_drive(PGconn *const *sessions, PGconn *monitor, const struct iso_script *script, const char *level,
              int block_ms, struct iso_cell *cell, char *err, size_t errlen);

/* the phases */
int iso_phase_matrix(const void *cfg, void *result, char *err, size_t errlen);
int iso_phase_write_skew(const void *cfg, void *result, char *err, size_t errlen);
int iso_phase_atomicity(const void *cfg, void *result, char *err, size_t errlen);
int iso_phase_durability(const void *cfg, void *result, char *err, size_t errlen);

/* the throwaway cluster's data directory, made before phase 1; its initdb runs in a thread until
 * phase 4 (or iso_dur_cleanup) waits for it (durability.c) */
int iso_dur_prepare(const struct isolation_config *cfg, struct isolation_result *r, char *err, size_t errlen);
void iso_dur_cleanup(void);

#endif
