/*
 * internal.h — what the files of lab-consistency share: the run's context (connections, the
 * throwaway redis-servers) and the phases. consistency.c sets up, walks and judges; pgrep.c is
 * phases 1-3 (PostgreSQL); redisrep.c phases 4-6 (Redis).
 */
#ifndef LAB_CONSISTENCY_INTERNAL_H
#define LAB_CONSISTENCY_INTERNAL_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <limits.h>

#include "child.h"
#include "consistency.h"

#define CONS_SCHEMA "lab_consistency"
#define CONS_PREFIX "lab:consistency:"
#define CONS_NODES  3
/* every statement of the lab's sessions: a commit that waits for a replica which is gone
 * (synchronous_commit on with the standby down) is cancelled instead of hanging the run */
#define CONS_STATEMENT_TIMEOUT "5s"
/* how long a stale read is followed until the replica shows the write */
#define CONS_VISIBLE_MAX_US 2000000
/* between two polls of the replica (the LSN wait, a stale read followed): a loop with no pause
 * takes a core from the startup process whose replay it waits for, on a 2-core machine */
#define CONS_POLL_US 100
/* stale reads followed per row: the time distribution needs a few dozen, and following each one
 * under heavy load costs up to its lag (tens of ms) */
#define CONS_FOLLOW_MAX       24
#define CONS_REDIS_TIMEOUT_MS 3000

struct cons_node {
	struct child child;
	int port;
	redisContext *rc;
};

struct cons_ctx {
	const struct consistency_config *cfg;
	PGconn *primary, *replica;
	redisContext *rp, *rr; /* the labenv Redis primary and replica */
	char program[PATH_MAX];
	char dir[PATH_MAX];
	struct cons_node node[CONS_NODES];
};

void cons_progress(const struct cons_ctx *x, const char *what, double done);

int cons_phase_ryw(const void *c, void *r, char *err, size_t errlen);
int cons_phase_fixes(const void *c, void *r, char *err, size_t errlen);
int cons_phase_knob(const void *c, void *r, char *err, size_t errlen);
int cons_phase_wait(const void *c, void *r, char *err, size_t errlen);
int cons_phase_cut(const void *c, void *r, char *err, size_t errlen);
int cons_phase_quorum(const void *c, void *r, char *err, size_t errlen);

/* The three redis-servers of phases 5 and 6: started and stopped by consistency.c. */
int cons_nodes_start(struct cons_ctx *x, char *err, size_t errlen);
void cons_nodes_stop(struct cons_ctx *x);

#endif
