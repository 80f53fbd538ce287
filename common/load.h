/*
 * load.h — a closed-loop HTTP load generator: N concurrent clients, each on its own keep-alive
 * connection, each sending its next request as soon as the last one was answered, for T
 * milliseconds or K requests, whichever comes first. Latencies go into hist.h recorders, and
 * completions into a series per interval (for charts).
 *
 * load_run runs its own event_base in the calling thread and returns when the run is over and
 * every request in flight has been answered or has timed out. The server under test must be in
 * another thread or process. SIGPIPE is ignored from the first run on (unless the program set
 * a handler of its own), so a server that hangs up on a write costs an error, not the process.
 */
#ifndef LAB_LOAD_H
#define LAB_LOAD_H

#include <event2/http.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"

#define LOAD_MAX_SERIES 600
#define LOAD_PATH_LEN   512

/* One request as the generator is about to send it; request_cb may change any field. */
struct load_request {
	enum evhttp_cmd_type method; /* EVHTTP_REQ_GET unless cfg->method or request_cb says otherwise */
	char path[LOAD_PATH_LEN];    /* path and query string, from cfg->path */
	const char *body;            /* NULL: no body */
	size_t body_len;
};

struct load_progress {
	uint64_t completed;
	uint64_t errors;
	double elapsed_s;
	double rps; /* over the run so far */
};

struct load_config {
	const char *host; /* "127.0.0.1" when NULL */
	int port;
	const char *path;            /* e.g. "/query?hold_ms=20" */
	enum evhttp_cmd_type method; /* 0 = GET */
	int clients;                 /* concurrent connections, >= 1 */
	int duration_ms;             /* stop sending after this; 0 = no time limit */
	uint64_t max_requests;       /* stop sending after this many; 0 = no count limit */
	/*
	 * A deadline per request, from its send to the last byte of its response (not an
	 * inactivity timeout: a server that trickles a byte now and then still misses it);
	 * 0 = 10000. A timeout counts as an error and in timeouts; its connection is dropped.
	 */
	int timeout_ms;
	int series_interval_ms; /* 0 = 1000 */
	/*
	 * A pause of each client between an answer (or a failure) and its next send; 0 = none. A
	 * steady, bounded load (a client sends at most 1000/think_ms requests a second) for a run
	 * that watches a server over time rather than measures its ceiling (suite/faults.c).
	 */
	int think_ms;
	/*
	 * Optional hooks, called on the generator's thread. request_cb may edit r and add headers
	 * to req (evhttp_request_get_output_headers). response_cb sees every outcome: req is NULL
	 * when no response came (refused, reset, timeout).
	 */
	void (*request_cb)(struct load_request *r, struct evhttp_request *req, int client, uint64_t seq,
	                   void *arg);
	void (*response_cb)(struct evhttp_request *req, int client, uint64_t seq, uint64_t latency_us,
	                    void *arg);
	void (*progress_cb)(const struct load_progress *p, void *arg); /* about every 250 ms */
	void *arg;
};

struct load_result {
	uint64_t sent;
	uint64_t completed; /* got a response, whatever its status */
	uint64_t errors;    /* no response: refused, reset, timed out */
	uint64_t timeouts;  /* of errors, those that timed out */
	uint64_t status_2xx, status_4xx, status_5xx, status_other;
	uint64_t status_503; /* of status_5xx */
	struct hist latency; /* every response */
	struct hist latency_2xx;
	double elapsed_s; /* first send to last answer */
	double rps;       /* completed / elapsed_s */
	double rps_2xx;
	int series_len;
	int series_interval_ms;
	uint64_t series[LOAD_MAX_SERIES]; /* responses completed in each interval */
};

/*
 * Runs the load. -1 and err when the config is invalid (no client, a path without a leading /,
 * neither duration_ms nor max_requests: a run that would never end) or the event machinery
 * fails. A server that refuses or never answers is not an error of load_run: it shows in
 * res->errors.
 */
int load_run(const struct load_config *cfg, struct load_result *res, char *err, size_t errlen);

#endif
