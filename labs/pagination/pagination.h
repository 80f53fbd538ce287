/*
 * pagination.h — the experiment of lab-pagination: "How would you design pagination for a large
 * dataset?"
 *
 * A feed in schema lab_pagination: `feed` (1,000,000 rows; --quick 100,000), seeded server-side in
 * one INSERT ... SELECT FROM generate_series, read newest first, ORDER BY created_at DESC, id DESC,
 * with about three rows per created_at second (ties, as a feed written in bursts has them) and the
 * index (created_at DESC, id DESC) that serves the order. The phases:
 *
 *   1. seed     the feed, its index, VACUUM ANALYZE; what it holds
 *   2. cost     page 1, 100 and 10,000 (scaled to the table) by OFFSET and by keyset
 *               (WHERE (created_at, id) < ($1, $2)), each under EXPLAIN (ANALYZE, BUFFERS,
 *               FORMAT JSON): the shared buffers hit + read and the rows the scan touched
 *   3. walk     a client walks a feed of its own (`walk`) to the end, by OFFSET and then by keyset,
 *               while two writer threads on their own connections insert rows at the head and
 *               delete rows behind and ahead of it between its pages (the walker's progress
 *               drives them, so every run interleaves the same way); the duplicates and skips
 *               are counted against the rows that existed for the whole walk
 *   4. api      GET /v1/items?limit=&cursor= on a real HTTP API: an opaque signed cursor
 *               (cursor.h), and what a cursor cannot do (a page number, a total) and the usual
 *               answers (GET /v1/items/count: the planner's estimate and a capped count)
 *
 * pagination_run sets up, walks the phases and drops the schema; pagination_judge decides from
 * the numbers. Errors: -1 (or NULL) and one line in err (errlen bytes). Nothing here prints.
 */
#ifndef LAB_PAGINATION_H
#define LAB_PAGINATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cursor.h"
#include "lab.h"

#define PAGINATION_SCHEMA    "lab_pagination"
#define PAGINATION_PHASES    4
#define PAGINATION_DEPTHS    3
#define PAGINATION_API_MAX   16
#define PAGINATION_LIMIT_MAX 100

struct pagination_config {
	const char *pg_url;
	uint64_t seed;                /* the walk's writes: how many rows, which ones */
	int rows;                     /* the feed (phases 1, 2 and 4) */
	int page_size;                /* phase 2: rows per page */
	int pages[PAGINATION_DEPTHS]; /* phase 2: the pages measured (1, 100, 10,000 for 1M rows) */
	int repeats;                  /* phase 2: EXPLAIN runs per query, the best time kept */
	int walk_rows;                /* phase 3: the walked feed ... */
	int walk_page;                /* ... in pages of this many rows */
	int api_limit;                /* phase 4: the page size the lab's client asks for */
	int api_pages;                /* phase 4: pages it follows with next_cursor */
	int cursor_ttl_s;             /* a cursor older than this is 400 expired */
	int count_cap;                /* /v1/items/count counts this many rows at most */
	int pool_size;                /* the API's connections */
	/* the telling: called around each phase (zero = none), and with the progress of the long ones */
	struct lab_phase_hooks hooks;
	void (*progress_cb)(const char *what, double done, void *arg); /* NULL = none */
	void *progress_arg;
};

/* The defaults (quick: a feed of 100,000 rows and a shorter walk). */
void pagination_config_default(struct pagination_config *cfg, bool quick);

/* Sets the feed's size and scales the pages of phase 2 with it (1, 100, 10,000 per million rows). */
void pagination_config_rows(struct pagination_config *cfg, int rows);

/* Creates schema lab_pagination and seeds the feed (cfg->rows rows, the index, VACUUM ANALYZE). */
int pagination_setup(const struct pagination_config *cfg, char *err, size_t errlen);
/* Drops it. */
int pagination_teardown(const struct pagination_config *cfg, char *err, size_t errlen);

/* ---- the API ---- */

struct pagination_api;

/*
 * Starts GET /v1/items and GET /v1/items/count on 127.0.0.1:port (0 = a free one) over the feed
 * pagination_setup made; cfg is copied.
 *
 *   GET /v1/items?limit=N&cursor=C  limit 1..100 (default 20); no cursor: the newest page.
 *       200 {"items": [{"id", "created_at", "author", "body"}...], "next_cursor": "..." | null,
 *            "limit": N}
 *       400 {"error": "...", "reason": "malformed" | "tampered" | "expired"} for a bad cursor;
 *       400 {"error": ...} for a limit outside 1..100, a page= or offset= (a cursor cannot
 *       jump: the message says what to do instead), limit or cursor given twice, a NUL byte
 *       (%00) anywhere in the query, or any other parameter.
 *   GET /v1/items/count
 *       200 {"estimate": pg_class.reltuples, "estimate_source": "...", "count_at_least":
 *            min(count(*), cap), "exact": bool, "cap": cap}; any parameter: 400
 * Other methods: 405 with Allow: GET.
 */
struct pagination_api *pagination_api_start(const struct pagination_config *cfg, int port, char *err,
                                            size_t errlen);
int pagination_api_port(const struct pagination_api *api);
/* Stops it (http_app_stop: the loop, then the pool, whose callbacks answer what is in flight). */
void pagination_api_stop(struct pagination_api *api);

/*
 * The process's cursor key: PAGINATION_CURSOR_KEY_LEN bytes from the kernel (RAND_bytes), made
 * once, the first time it is asked for. NULL when libcrypto could not give them. Every API of
 * the process signs with it, so a test or the lab can mint a cursor the API would have issued
 * (an expired one, say) with pagination_cursor_encode.
 */
const unsigned char *pagination_cursor_key(void);

/* ---- the phases and their numbers ---- */

struct pagination_seed {
	int64_t rows;
	int64_t distinct_created; /* created_at values: rows / this = rows per tie */
	int64_t max_ties;         /* the most rows sharing one created_at */
	int64_t table_bytes, index_bytes;
	double seed_ms; /* the INSERT ... generate_series, the index and VACUUM ANALYZE */
};

/* One EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of one page. */
struct pagination_measure {
	int page;
	int64_t offset;  /* rows before the page */
	int64_t buffers; /* shared hit + read of the whole plan (the most of the repeats) */
	int64_t hit, read;
	int64_t rows_scanned;  /* rows the scan nodes produced, plus those their filters removed */
	int64_t rows_returned; /* the Limit's output */
	double exec_ms;        /* the best Execution Time of the repeats */
	char plan[64];         /* "Limit > Index Scan", the nodes from the top */
};

struct pagination_cost {
	int page_size;
	int ndepths;
	struct pagination_measure offset[PAGINATION_DEPTHS], keyset[PAGINATION_DEPTHS];
};

enum pagination_method { PAGINATION_OFFSET, PAGINATION_KEYSET, PAGINATION_METHODS };

/* "OFFSET", "keyset" */
const char *pagination_method_name(enum pagination_method m);

/* One walk of phase 3. */
struct pagination_walk {
	int pages;                           /* page reads, the last (short) one included */
	int64_t rows_read;                   /* rows the pages returned, duplicates included */
	int64_t inserted;                    /* at the head, between pages */
	int64_t deleted_behind;              /* rows the walker had passed */
	int64_t deleted_ahead;               /* rows it had not reached */
	int64_t stable;                      /* rows present at the start and never deleted during the walk */
	int64_t duplicates;                  /* extra returns of stable rows (a row read twice: 1) */
	int64_t skips;                       /* stable rows never returned */
	int64_t first_duplicate, first_skip; /* ids; 0: none */
	int64_t cursor_rows_deleted;         /* the walker's last row deleted before its next page */
};

/* One request of phase 4 and what came back. */
struct pagination_api_step {
	char what[64];           /* "page 1 (limit 5)", "a tampered cursor", ... */
	int status;              /* 0: no answer */
	int want;                /* the status the API's contract gives it */
	const char *want_reason; /* and the 400's "reason" (a static string); NULL: none */
	char reason[16];         /* the reason the body gave; "" when none */
	char note[120];          /* what the body said, shortened */
};

struct pagination_api_story {
	struct pagination_api_step steps[PAGINATION_API_MAX];
	int nsteps;
	int cursor_len;       /* characters of a next_cursor */
	int64_t walked_rows;  /* rows the followed pages returned */
	int64_t walked_pages; /* pages read as JSON with an items array */
	bool in_order;        /* each page continued where the last ended, in feed order, and parsed */
	int64_t estimate;     /* /v1/items/count */
	int64_t count_at_least;
	bool exact;
};

struct pagination_result {
	struct pagination_seed seed;                     /* phase 1 */
	struct pagination_cost cost;                     /* phase 2 */
	struct pagination_walk walk[PAGINATION_METHODS]; /* phase 3 */
	struct pagination_api_story api;                 /* phase 4 */
	bool lost; /* the run failed because PostgreSQL no longer answers */
};

/*
 * Sets up, runs the four phases (cfg->hooks around each), tears down (also when a phase failed)
 * and fills *result. -1 and err when the setup or a phase failed; result->lost then says whether
 * PostgreSQL went away (main.c ends with lab_lost).
 */
int pagination_run(const struct pagination_config *cfg, struct pagination_result *result, char *err,
                   size_t errlen);

/* The claim and every threshold: fills v from the numbers of a run. */
void pagination_judge(const struct pagination_result *r, struct lab_verdict *v);

/* Phase 2's growth from page 1 to the deepest page, by what the judge reads: rows and buffers. */
double pagination_growth_rows(const struct pagination_cost *c, enum pagination_method m);
double pagination_growth_buffers(const struct pagination_cost *c, enum pagination_method m);

/* The phases as the run walks them (cfg: struct pagination_config, result: struct pagination_result). */
int pagination_phase_seed(const void *cfg, void *result, char *err, size_t errlen);
int pagination_phase_cost(const void *cfg, void *result, char *err, size_t errlen);
int pagination_phase_walk(const void *cfg, void *result, char *err, size_t errlen);
int pagination_phase_api(const void *cfg, void *result, char *err, size_t errlen);

#endif
