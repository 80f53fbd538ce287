/*
 * faults_internal.h — what faults.c, faults_drive.c and faults_recipes.c share: a lab's state and
 * its recipe (faults.h has the public contracts).
 */
#ifndef SUITE_FAULTS_INTERNAL_H
#define SUITE_FAULTS_INTERNAL_H

#include <event2/http.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include "faults.h"
#include "load.h"

/*
 * A lab's recipe: the request its route takes under load, what it needs first, and how its
 * writes are counted (NULL count: the lab only reads).
 */
struct faults_recipe {
	const char *name;
	int (*prepare)(struct faults_lab *l, char *err, size_t errlen);
	/* fills r for the lab's n-th request (n counts from 0 across the whole run) */
	void (*request)(struct faults_lab *l, struct load_request *r, struct evhttp_request *req, uint64_t n);
	int (*count)(struct faults_lab *l, const char *pg_url, struct faults_writes *w, char *err,
	             size_t errlen);
	bool redis; /* the route under load talks to Redis (else a Redis restart should cost it nothing) */
};

const struct faults_recipe *faults_recipe_find(const char *name);

/* outcome of request n, for a recipe whose writes are counted one by one */
enum faults_outcome { OUTCOME_SENT = 0, OUTCOME_OK = 1, OUTCOME_FAILED = 2 };

struct faults_lab {
	const struct faults_recipe *recipe;
	char name[32];
	pid_t pid;
	int status;
	bool reaped;
	int port;
	char out_path[PATH_MAX], err_path[PATH_MAX];
	double signalled_ms; /* when faults_lab_signal sent its signal */

	/* what the recipe prepared */
	char header[2048]; /* "Bearer <a JWT>", "sid=...": a header value its requests carry */
	char body[256];
	int64_t base; /* a value read before the load (put-patch: the visits) */
	double prepared_ms; /* when the recipe's prepare last ran (authz logs in again before exp) */

	/* the load thread (faults_drive.c) */
	pthread_t thread;
	bool driving;
	atomic_bool stop;
	int think_ms;
	uint64_t next_n;    /* the next request's number (the load thread's) */
	uint64_t current_n; /* the number of the request in flight (one client) */

	pthread_mutex_t mu; /* what follows, shared with the controller's thread */
	struct faults_event *events;
	size_t nevents, capevents;
	uint8_t *outcomes; /* per request number: enum faults_outcome */
	size_t capoutcomes;
	uint64_t acknowledged, ambiguous; /* for recipes that count writes in bulk */
	struct hist interval;
	uint64_t interval_ok, interval_errors;
};

int faults_lab_wait_port(struct faults_lab *l, int timeout_ms, char *err, size_t errlen);

#endif
