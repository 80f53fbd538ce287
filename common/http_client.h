/*
 * http_client.h — a blocking HTTP/1.1 client for a lab's own threads: one keep-alive connection
 * to 127.0.0.1:port (an API of the lab's, or a cache in front of it), on libevent's evhttp with an
 * event loop of its own, so a phase's thread is a real client of a real server without writing an
 * HTTP parser. evhttp reconnects by itself when the server closed an idle connection.
 *
 * One thread at a time per client; one client per thread for concurrency. For load (many
 * clients, rates, latency histograms) use load.h instead.
 *
 * Errors: functions that can fail return NULL or -1 and write one line into err (errlen bytes).
 */
#ifndef LAB_HTTP_CLIENT_H
#define LAB_HTTP_CLIENT_H
#include <stddef.h>
#include <stdint.h>

struct http_client;

/* A header to send: name and value, sent as given. */
struct http_header {
	const char *name;
	const char *value;
};

/* One request. Host is added; Content-Length too when there is a body (any method). */
struct http_call {
	const char *method; /* "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" */
	const char *target; /* "/v1/users/7?x=1": path and query, as sent */
	const struct http_header *headers;
	int nheaders;
	const char *body; /* NULL: none */
	size_t body_len;
};

#define HTTP_ANSWER_HEADERS 32

/* What came back. status 0: no answer (refused, reset, timed out). */
struct http_answer {
	int status;
	char *body; /* NUL-terminated (a body holding a NUL reads short as a string), malloc'd */
	size_t body_len;
	int nheaders; /* the first HTTP_ANSWER_HEADERS, in order */
	char *names[HTTP_ANSWER_HEADERS], *values[HTTP_ANSWER_HEADERS];
	uint64_t latency_us; /* request sent to answer read, on this client's clock (hist.h) */
};

/* A client of 127.0.0.1:port; no answer within timeout_ms is status 0. NULL and err. */
struct http_client *http_client_new(int port, int timeout_ms, char *err, size_t errlen);
/* Closes its connection and frees it. NULL is a no-op. */
void http_client_free(struct http_client *c);
/*
 * Sends call and waits for the answer into out (free it with http_answer_free, whatever the
 * return). 0 when the request was sent, answered or not (out->status 0: no answer); -1 and err
 * when it could not be made (an unknown method, no memory).
 */
int http_client_call(struct http_client *c, const struct http_call *call, struct http_answer *out, char *err,
                     size_t errlen);
/*
 * One GET on a connection of its own: the status (0 when no answer came within timeout_ms) and
 * the body into body (cut to bodylen, NUL-terminated). -1 and err when it could not be made.
 */
int http_get(int port, const char *target, int timeout_ms, int *status, char *body, size_t bodylen, char *err,
             size_t errlen);
/* The first header called name (case-insensitive), or NULL. */
const char *http_answer_header(const struct http_answer *a, const char *name);
/* Frees what out holds and zeroes it. */
void http_answer_free(struct http_answer *a);
#endif
