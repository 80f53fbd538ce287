/*
 * pooling.h — the experiment of lab-pooling: "Walk me through how you'd handle database
 * connection pooling in a high-throughput API."
 *
 * A real HTTP API (libevent, 127.0.0.1) whose handlers borrow PostgreSQL connections from
 * common/pool.h, driven by common/load.h, in four phases:
 *   1. compare   the same requests with a new connection each and with a pool
 *   2. exhaust   concurrency ramped past the pool size: throughput flat at pool_size / hold
 *                time (Little's law), the queue grows, the acquire timeout turns it into 503s
 *   3. leak      a handler that skips release on its 404 path drains the pool and the leak
 *                detector names it; an undersized pool beside it looks alike at the API but
 *                not in the pool's numbers
 *   4. maxconn   app instances x pool size past the server's max_connections: the server's
 *                own error; then throughput at a few pool sizes for a CPU-bound query
 * Each phase function starts its own API (fresh pool), runs, stops it and returns numbers.
 * They need the schema of pooling_setup. Errors: -1 and one line in err (errlen bytes).
 */
#ifndef LAB_POOLING_H
#define LAB_POOLING_H

#include <stdbool.h>
#include <stdint.h>

#include "http.h"
#include "load.h"
#include "pool.h"

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
	/* Called from the lab's thread about every 250 ms while a phase runs; may be NULL. */
	void (*progress_cb)(const char *what, double done_fraction, void *arg);
	void *progress_arg;
};

/* The defaults (full: a few seconds a phase; quick: about a second a phase). */
void pooling_config_default(struct pooling_config *cfg, bool quick);

/* Creates schema lab_pooling with its orders table. */
int pooling_setup(const struct pooling_config *cfg, char *err, size_t errlen);
/* Drops it. */
int pooling_teardown(const struct pooling_config *cfg, char *err, size_t errlen);

struct pooling_compare {
	struct load_result direct; /* a new connection per request */
	struct load_result pooled;
	uint64_t connects;       /* connections the direct path opened (server-side backends) */
	uint64_t connect_p50_us; /* under the load: connect + authenticate + the queue for the server's cores
	                          */
	uint64_t connect_alone_p50_us; /* a whole /direct request, one client at a time: mostly the connect */
	uint64_t pooled_opened;        /* connections the pool opened for the same requests */
	double speedup;                /* pooled rps / direct rps */
};

struct pooling_level {
	int clients;
	double predicted_rps;              /* min(clients, pool_size) / hold time */
	double rps;                        /* 2xx per second */
	uint64_t p50_us, p99_us;           /* request latency, every response */
	uint64_t wait_p50_us, wait_p99_us; /* pool acquire wait */
	uint64_t ok, http_503, errors;
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
	int instances_ready;                          /* instances whose whole pool opened */
	int failed_instance;                          /* 1-based; 0 when every instance opened */
	int opened_total;                             /* connections the instances opened */
	char server_error[256];                       /* the server's own words */
	struct pooling_size sizes[POOLING_MAX_SIZES];
	int nsizes;
	int rule_of_thumb; /* cores x 2 + 1 effective spindle (HikariCP's formula) */
	int cores;
};

int pooling_compare_run(const struct pooling_config *cfg, struct pooling_compare *res, char *err,
                        size_t errlen);
int pooling_exhaust_run(const struct pooling_config *cfg, struct pooling_exhaust *res, char *err,
                        size_t errlen);
int pooling_leak_run(const struct pooling_config *cfg, struct pooling_leak *res, char *err, size_t errlen);
int pooling_maxconn_run(const struct pooling_config *cfg, struct pooling_maxconn *res, char *err,
                        size_t errlen);

/*
 * The API on its own, for --serve: routes /pooled, /direct, /orders, /orders-leaky, /cpu and
 * /stats on 127.0.0.1:port (0 = a free one), served from a thread of its own.
 */
struct pooling_api;
struct pooling_api *pooling_api_start(const struct pooling_config *cfg, int pool_size, int port, char *err,
                                      size_t errlen);
int pooling_api_port(const struct pooling_api *api);

/* What the API counted, read when it stops. */
struct pooling_api_totals {
	struct pool_stats pool;      /* the pool under test */
	struct pool_stats direct;    /* the connection-per-request path: opened = connections made */
	struct hist hold;            /* acquire to release, for the handlers that released */
	uint64_t leaks;              /* leak reports */
	struct pool_leak first_leak; /* acquired_at_us counted from the API's start */
	uint64_t leaked;             /* connections /orders-leaky kept, counted where it forgets them */
	uint64_t last_leaked_us;     /* hist_now_us() of the last one */
};

/* Stops the API and frees it; *totals (may be NULL) gets what it counted. NULL is a no-op. */
void pooling_api_stop(struct pooling_api *api, struct pooling_api_totals *totals);

#endif
