/*
 * n_plus_one.h — the experiment of lab-n-plus-one: "What is the N+1 query problem?"
 *
 * Users with orders and addresses in schema lab_n_plus_one, generated from the seed. The same
 * data is loaded in several ways (strategies), and the loads are counted by the server itself:
 * pg_stat_statements, diffed per statement shape (queryid) around each load, on a second
 * "observer" connection, so the count is what PostgreSQL ran, never what the client believes.
 *
 *   1. loop      the ORM's lazy loading: N users, then each user's orders in its own query (N+1)
 *   2. join      one LEFT JOIN (1 statement)
 *   3. batched   users, then all their orders with user_id = ANY($1) (2 statements; Django's
 *                prefetch_related, Rails' includes)
 *   4. network   the three through common/proxy at a few round-trip times and sizes
 *   5. width     what the JOIN pays instead: user columns repeated on every order row, and a
 *                JOIN across two has-many relations (orders and addresses) multiplying rows,
 *                against a batched load of the same (3 statements)
 *   6. detect    a detector on the server's counts: a statement shape repeated more than a
 *                threshold within one unit of work is flagged and named
 *
 * Every load reads the same canonical records (one line per user, order and address), sorted
 * and hashed (64-bit FNV-1a), so "the same data" is a digest that must match across strategies.
 * Bytes received are counted by the kernel on the client's socket (TCP_INFO tcpi_bytes_received,
 * so Linux only) and, independently, summed from the sizes of the protocol messages the results
 * came in.
 *
 * n_plus_one_run sets up the data, walks the six phases and drops the schema; n_plus_one_judge
 * decides from its numbers. Errors: -1 (or NULL) and one line in err (errlen bytes). Nothing here
 * prints.
 */
#ifndef LAB_N_PLUS_ONE_H
#define LAB_N_PLUS_ONE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lab.h"

#define N_PLUS_ONE_SCHEMA     "lab_n_plus_one"
#define N_PLUS_ONE_MAX_SIZES  4
#define N_PLUS_ONE_MAX_RTTS   4
#define N_PLUS_ONE_MAX_SHAPES 4
#define N_PLUS_ONE_QUERY_LEN  200
/* the repeats of one timing are kept to take their best and median */
#define N_PLUS_ONE_MAX_REPEATS 15

enum n_plus_one_strategy {
	NPO_LOOP,     /* 1 + N: users, then orders WHERE user_id = $1 for each */
	NPO_JOIN,     /* 1: users LEFT JOIN orders */
	NPO_BATCHED,  /* 2: users, then orders WHERE user_id = ANY($1) */
	NPO_JOIN2,    /* 1: users LEFT JOIN orders LEFT JOIN addresses */
	NPO_BATCHED2, /* 3: users, then orders and addresses WHERE user_id = ANY($1) */
	NPO_STRATEGIES
};

/* "N+1 loop", "JOIN", ... for tables. */
const char *n_plus_one_strategy_name(enum n_plus_one_strategy s);

/* Statements the strategy predicts for users users: N + 1, 1, 2, 1, 3. */
int64_t n_plus_one_predicted_statements(enum n_plus_one_strategy s, int users);

struct n_plus_one_config {
	const char *pg_url;
	uint64_t seed;                   /* the data: order and address counts, totals, cities */
	int data_users;                  /* users generated (more if an N below is larger) */
	int users;                       /* N of phases 1-3, 5 and 6 */
	int orders_max;                  /* each user has 0..orders_max orders (uniform): some have none */
	int addresses_max;               /* and 1..addresses_max addresses */
	int bio_bytes;                   /* the user's wide column, repeated by the JOIN on every order row */
	int repeats;                     /* phases 1-3, 5: wall time is the best of this many loads */
	int sizes[N_PLUS_ONE_MAX_SIZES]; /* phase 4: N */
	int nsizes;
	int rtts_us[N_PLUS_ONE_MAX_RTTS]; /* phase 4: round-trip times added by the proxy */
	int nrtts;
	int net_repeats;         /* phases 4 and 5 through the proxy: the best of up to this many loads */
	uint64_t net_budget_us;  /* ... or as many as fit in this time, 2 at least */
	int width_rtt_us;        /* phase 5 through the proxy: this round trip ... */
	int64_t width_bandwidth; /* ... and this bandwidth, bytes per second */
	int threshold;           /* phase 6: more calls of one shape in one unit of work is N+1 */
	/* Called from the lab's thread between loads of a long phase; may be NULL. */
	void (*progress_cb)(const char *what, double done_fraction, void *arg);
	void *progress_arg;
	struct lab_phase_hooks hooks; /* around each phase of n_plus_one_run (zero: none) */
};

/* The defaults: full (N = 10, 100, 1000 through the proxy) or quick (N = 10, 100). */
void n_plus_one_config_default(struct n_plus_one_config *cfg, bool quick);

/* The users n_plus_one_setup creates: data_users, or the largest N if that is more. */
int n_plus_one_max_users(const struct n_plus_one_config *cfg);

/*
 * Checks pg_stat_statements is there, creates schema lab_n_plus_one with users, orders and
 * addresses generated from cfg->seed (n_plus_one_max_users users), and ANALYZEs them.
 */
int n_plus_one_setup(const struct n_plus_one_config *cfg, char *err, size_t errlen);
/* Drops the schema. */
int n_plus_one_teardown(const struct n_plus_one_config *cfg, char *err, size_t errlen);

/* What the setup generated, counted by the server (for the header and the tests). */
struct n_plus_one_data {
	int64_t users, orders, addresses;
	int64_t users_without_orders;
	int64_t join2_rows; /* rows of the two-relation JOIN over every user: sum max(1,o) x max(1,a) */
};
int n_plus_one_data_count(const struct n_plus_one_config *cfg, int users, struct n_plus_one_data *out,
                          char *err, size_t errlen);

/* ---- the detector: statement shapes the server ran within one unit of work ---- */

struct n_plus_one_shape {
	int64_t queryid;                  /* pg_stat_statements' id of the normalized statement */
	int64_t calls;                    /* times the server ran it within the unit */
	char query[N_PLUS_ONE_QUERY_LEN]; /* its normalized text ($1 for constants), cut to fit */
};

struct n_plus_one_unit {
	int64_t statements; /* every call of every shape in the unit: what the server ran */
	int shapes;         /* distinct shapes */
	int nshapes;        /* entries in shape[], the most called first */
	struct n_plus_one_shape shape[N_PLUS_ONE_MAX_SHAPES];
	int threshold;
	int flagged; /* shapes called more than threshold times: shape[0..flagged-1] */
};

/*
 * The observer: a connection of its own that snapshots pg_stat_statements' calls by queryid
 * before and after a unit of work and keeps the shapes whose text names schema lab_n_plus_one
 * (statements of other labs running beside this one are not ours). It never resets the view.
 */
struct n_plus_one_watch;
struct n_plus_one_watch *n_plus_one_watch_open(const char *pg_url, char *err, size_t errlen);
/* Takes the "before" snapshot. */
int n_plus_one_watch_begin(struct n_plus_one_watch *w, char *err, size_t errlen);
/* Takes the "after" snapshot and fills *unit with the difference. */
int n_plus_one_watch_end(struct n_plus_one_watch *w, int threshold, struct n_plus_one_unit *unit, char *err,
                         size_t errlen);
/* NULL is a no-op. */
void n_plus_one_watch_close(struct n_plus_one_watch *w);

/* ---- one load ---- */

struct n_plus_one_load {
	enum n_plus_one_strategy strategy;
	int users;
	int repeats; /* loads timed: rows and data checked equal in all, the server's count in the first 2 */
	int64_t predicted;         /* statements the strategy predicts */
	int64_t statements;        /* the server's count (pg_stat_statements), one load */
	int64_t client_statements; /* what the client sent, one load */
	int64_t rows;              /* rows received */
	int64_t wire_bytes;        /* bytes the kernel received on the socket (TCP_INFO); -1 if not TCP */
	int64_t protocol_bytes;    /* the sum of the protocol messages' sizes, computed from the results */
	int64_t repeated_bytes;    /* bytes of cells that repeat data already in the same result (JOINs) */
	int64_t proxy_bytes;       /* bytes the proxy delivered to the lab; -1 without the proxy */
	int orders, addresses;     /* objects built */
	uint64_t digest;           /* FNV-1a 64 of the sorted canonical records */
	/* Wall time of one load: the best of the repeats. The work is the same every time, so a
	 * slower load only measured a busier machine (Python's timeit reasons the same way); the
	 * median and the worst are kept beside it. */
	uint64_t wall_us;
	uint64_t wall_median_us, wall_max_us;
	struct n_plus_one_unit unit; /* the detector's view of the last counted load */
};

/* What a load received: the kernel's count when the connection is TCP, else the protocol's. */
int64_t n_plus_one_received(const struct n_plus_one_load *l);

/*
 * Loads users users with strategy s on conn, repeats times, each a unit of work seen by watch
 * (detector threshold threshold). Fails when a load fails (the server went away: libpq's
 * message; out->client_statements is then what the client completed before the error) or when
 * two loads disagree (statements, rows or data).
 */
int n_plus_one_measure(PGconn *conn, struct n_plus_one_watch *watch, enum n_plus_one_strategy s, int users,
                       int repeats, int threshold, struct n_plus_one_load *out, char *err, size_t errlen);

/*
 * Connects through a proxy (or anything) listening on 127.0.0.1:port with the user, password and
 * database of pg_url: host and port are overridden. NULL and err on failure.
 */
PGconn *n_plus_one_connect_via(const char *pg_url, int port, char *err, size_t errlen);

/* ---- the phases ---- */

/* Phases 1-3: one strategy, direct, cfg->users users, cfg->repeats loads. */
int n_plus_one_strategy_run(const struct n_plus_one_config *cfg, enum n_plus_one_strategy s,
                            struct n_plus_one_load *out, char *err, size_t errlen);

/* Phase 4: the loop, the JOIN and the batched load through the proxy at each RTT and size. */
struct n_plus_one_cell {
	int users;
	int rtt_us;
	struct n_plus_one_load load[3]; /* NPO_LOOP, NPO_JOIN, NPO_BATCHED */
	/* predictions from the cell with no added delay, plus the round trips the strategy makes times
	 * what the delay added to a measured round trip (rtt_measured_us - rtt_measured_us at 0) */
	double predicted_loop_us;    /* + (N + 1) round trips */
	double predicted_join_us;    /* + 1 */
	double predicted_batched_us; /* + 2 */
	double loop_over_join;       /* wall time ratio */
};

struct n_plus_one_network {
	struct n_plus_one_cell cells[N_PLUS_ONE_MAX_SIZES][N_PLUS_ONE_MAX_RTTS]; /* [size][rtt] */
	int nsizes, nrtts;
	/* a bare round trip through the proxy at each delay (median SELECT 1): the added delay, plus
	 * the proxy, the scheduler and the server's own turn-around */
	uint64_t rtt_measured_us[N_PLUS_ONE_MAX_RTTS];
	uint64_t proxy_bytes_down; /* everything the proxy delivered to the lab */
};

int n_plus_one_network_run(const struct n_plus_one_config *cfg, struct n_plus_one_network *res, char *err,
                           size_t errlen);

/* Phase 5: JOIN, batched, JOIN2, batched2 direct, then JOIN and batched at width_rtt_us and width_bandwidth.
 */
struct n_plus_one_width {
	struct n_plus_one_load direct[4];  /* NPO_JOIN, NPO_BATCHED, NPO_JOIN2, NPO_BATCHED2 */
	struct n_plus_one_load network[4]; /* the same through the proxy */
	int rtt_us;
	int64_t bandwidth;
	/* The JOIN's extra bytes take as long as the batched load's extra round trip at this
	 * bandwidth (bytes/s) for one has-many at rtt_us: below it, batched wins. */
	double break_even_bandwidth;
};

int n_plus_one_width_run(const struct n_plus_one_config *cfg, struct n_plus_one_width *res, char *err,
                         size_t errlen);

/* Phase 6: each strategy once as a unit of work under the detector. */
struct n_plus_one_detect {
	struct n_plus_one_unit units[NPO_STRATEGIES];
	int threshold;
};

int n_plus_one_detect_run(const struct n_plus_one_config *cfg, struct n_plus_one_detect *res, char *err,
                          size_t errlen);

/* ---- the whole run ---- */

#define N_PLUS_ONE_PHASES 6

struct n_plus_one_result {
	struct n_plus_one_data data;       /* every user generated, counted by the server */
	struct n_plus_one_data page;       /* the first cfg->users: what phases 1-3, 5 and 6 load */
	struct n_plus_one_load loads[3];   /* phases 1-3: NPO_LOOP, NPO_JOIN, NPO_BATCHED */
	struct n_plus_one_network network; /* phase 4 */
	struct n_plus_one_width width;     /* phase 5 */
	struct n_plus_one_detect detect;   /* phase 6 */
	bool server_lost; /* the run failed and PostgreSQL no longer answers (lab_lost, not lab_fail) */
};

/*
 * Sets up schema lab_n_plus_one (n_plus_one_setup), counts the data, walks the six phases with
 * cfg->hooks around each, and drops the schema, also when a phase failed. 0 when every phase ran;
 * -1 and err otherwise (the first error). res is about 65 kB: allocate it, do not put it on a
 * thread's stack.
 */
int n_plus_one_run(const struct n_plus_one_config *cfg, struct n_plus_one_result *res, char *err,
                   size_t errlen);

/*
 * The claim (a loop of N + 1 statements, a JOIN of 1 and a batched load of 2, the same data, the
 * loop paying a round trip per statement, the JOIN paying in bytes and rows, the detector flagging
 * the loop alone) against the numbers of a run that returned 0. This function can't fail.
 */
void n_plus_one_judge(const struct n_plus_one_result *res, struct lab_verdict *v);

#endif
