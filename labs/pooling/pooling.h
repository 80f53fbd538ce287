/*
 * pooling.h — the experiment of lab-pooling: "Walk me through how you'd handle database
 * connection pooling in a high-throughput API."
 *
 * A real HTTP API (api.h: libevent, 127.0.0.1) whose handlers borrow PostgreSQL connections
 * from common/pool.h, driven by common/load.h, in four phases:
 *   1. compare   the same requests with a new connection each and with a pool
 *   2. exhaust   concurrency ramped past the pool size: throughput flat at pool_size / hold
 *                time (Little's law), the queue grows, the acquire timeout turns it into 503s
 *   3. leak      a handler that skips release on its 404 path drains the pool and the leak
 *                detector names it; an undersized pool beside it looks alike at the API but
 *                not in the pool's numbers
 *   4. maxconn   throughput at a few pool sizes for a CPU-bound query; then app instances x
 *                pool size past the server's max_connections: the server's own error
 * pooling_run creates schema lab_pooling, walks the phases (each starts its own API with a fresh
 * pool and stops it), drops the schema and returns the numbers; pooling_judge decides.
 * Errors: -1 and one line in err (errlen bytes).
 */
#ifndef LAB_POOLING_H
#define LAB_POOLING_H

#include <stdbool.h>
#include <stdint.h>

#include "lab.h"
#include "load.h"
#include "pool.h"

#define POOLING_PHASES     4
#define POOLING_MAX_LEVELS 8
#define POOLING_MAX_SIZES  8

struct pooling_config {
	const char *pg_url;
	int pool_size;          /* the pool under test */
	int hold_ms;            /* how long a request holds its connection (pg_sleep) */
	int acquire_timeout_ms; /* a request waiting longer gets 503 */
	int leak_threshold_ms;  /* the leak detector's threshold */
	int compare_requests;   /* phase 1: requests each way */
	int compare_clients;
	int levels[POOLING_MAX_LEVELS]; /* phase 2: concurrent clients per level */
	int nlevels;
	int level_ms;     /* phase 2: how long each level runs */
	int leak_clients; /* phase 3 */
	int leak_ms;
	int undersized_pool;          /* phase 3: the too-small pool shown beside the leak */
	int instances;                /* phase 4: app instances ... */
	int instance_pool;            /* ... each with a pool this large, opened eagerly */
	int sizes[POOLING_MAX_SIZES]; /* phase 4: pool sizes under the same CPU-bound load */
	int nsizes;
	int size_clients;
	int size_ms;
	int cpu_rows; /* the CPU-bound query sums generate_series(1, cpu_rows) */
	/*
	 * The API's GET /pipelined (api.h) and its pipelined pool of this many connections; 0 (the
	 * default): neither, so the phases and --serve open nothing more. bench_pooling sets it.
	 */
	int pipe_conns;
	/* Called from the lab's thread about every 250 ms while a phase runs; may be NULL. */
	void (*progress_cb)(const char *what, double done_fraction, void *arg);
	void *progress_arg;
	struct lab_phase_hooks hooks; /* around each phase (main.c tells through them); zero = none */
};

/* The defaults (full: a few seconds a phase; quick: under a second a phase). */
void pooling_config_default(struct pooling_config *cfg, bool quick);

/* Creates schema lab_pooling with its orders table (pooling_run does; --serve too). */
int pooling_setup(const struct pooling_config *cfg, char *err, size_t errlen);
/* Drops it. */
int pooling_teardown(const struct pooling_config *cfg, char *err, size_t errlen);

struct pooling_compare {
	int requests;              /* asked for, each way */
	struct load_result direct; /* a new connection per request */
	struct load_result pooled;
	uint64_t connects;             /* connections the direct path opened (server-side backends) */
	uint64_t connect_p50_us;       /* under the load: connect + authenticate + the queue for the cores */
	uint64_t connect_alone_p50_us; /* a whole /direct request, one client at a time: mostly the connect */
	uint64_t pooled_opened;        /* connections the pool opened for the same requests */
	double speedup;                /* pooled rps / direct rps */
};

struct pooling_level {
	int clients;
	double predicted_rps;              /* min(clients, pool_size) / hold time */
	double predicted_wait_ms;          /* the queue's wait: (clients / pool_size - 1) x hold, or 0 */
	double rps;                        /* 2xx per second */
	uint64_t p50_us, p99_us;           /* request latency, every response */
	uint64_t wait_p50_us, wait_p99_us; /* pool acquire wait */
	uint64_t ok, http_503, errors;
	uint64_t other;  /* responses neither 2xx nor 503 */
	int max_waiting; /* the longest queue seen */
};

struct pooling_exhaust {
	struct pooling_level levels[POOLING_MAX_LEVELS];
	int nlevels;
};

/* One side of phase 3. */
struct pooling_drain {
	int pool_size;
	double rps_ok; /* 200s and 404s per second: requests that got a real answer */
	uint64_t ok, not_found, http_503, errors;
	uint64_t drained_at_us;        /* when the last connection leaked (from the run's start); 0: never */
	uint64_t answered_after_drain; /* answers to requests sent after that */
	int active, idle, waiting;     /* the pool near the end of the run, under load */
	uint64_t longest_hold_us;      /* longest time a connection was held */
	uint64_t leaks;                /* leak reports */
	struct pool_leak first_leak;   /* the first report (holder, held, acquired_at from API start) */
};

struct pooling_leak {
	struct pooling_drain leaky;      /* /orders-leaky: the 404 path never releases */
	struct pooling_drain undersized; /* /orders with a pool too small for the load */
};

struct pooling_size {
	int pool_size;
	double rps;
	uint64_t p50_us, p99_us;
	uint64_t http_503;
};

struct pooling_maxconn {
	int max_connections, reserved, in_use_before; /* the server, before the instances */
	int instances, instance_pool;                 /* what was tried */
	int instances_ready;                          /* instances whose whole pool opened */
	int failed_instance;                          /* 1-based; 0 when every instance opened */
	int opened_total;                             /* connections the instances opened */
	char server_error[256];                       /* the server's own words */
	struct pooling_size sizes[POOLING_MAX_SIZES];
	int nsizes, nsizes_asked;
	int rule_of_thumb; /* cores x 2 + 1 effective spindle (HikariCP's formula) */
	int cores;
};

struct pooling_result {
	/* the settings the judge reads, copied from the config */
	int pool_size, hold_ms, acquire_timeout_ms, leak_threshold_ms;
	struct pooling_compare compare;
	struct pooling_exhaust exhaust;
	struct pooling_leak leak;
	struct pooling_maxconn maxconn;
	/* pooling_run failed and PostgreSQL no longer answers: err is what it said (lab_lost) */
	bool pg_lost;
};

/*
 * Creates the schema, walks the four phases, drops the schema (also when a phase failed) and
 * fills *result. -1 and err when a phase could not run (result->pg_lost when PostgreSQL went
 * away), or the run was interrupted.
 */
int pooling_run(const struct pooling_config *cfg, struct pooling_result *result, char *err, size_t errlen);

/* The claim and every threshold, with its reason: fills *verdict from the numbers. */
void pooling_judge(const struct pooling_result *result, struct lab_verdict *verdict);

#endif
