/*
 * upstream.h — the small servers the tests and benches talk to, written once: a server of
 * blocking threads on 127.0.0.1 (a free port, a thread per connection running what the test
 * gives it), the echo server the proxy's test and bench put the proxy in front of, blocking
 * client helpers with a timeout so nothing waits forever, and the host and port of the labs'
 * PostgreSQL from its URL. Header-only: each includer uses what it needs.
 */
#ifndef LAB_TESTS_UPSTREAM_H
#define LAB_TESTS_UPSTREAM_H

#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hist.h"

#define UPSTREAM_FN static __attribute__((unused))
/* how long a test waits for a byte of an HTTP response before it calls it missing */
#define UPSTREAM_HTTP_TIMEOUT_MS 5000

/* A client read or write that waits this long means the other side left it hanging. */
#define UPSTREAM_TIMEOUT_S 5
#define ECHO_MAX_CONNS     256

/*
 * A server on 127.0.0.1 (a free port) that runs serve(u, fd) on a thread of its own for each
 * connection it accepts; upstream_stop wakes them (shutdown), joins them and closes their
 * sockets. connections counts what it accepted; the other counters are serve's to keep.
 */
struct upstream {
	int listen_fd;
	int port;
	void (*serve)(struct upstream *u, int fd);
	pthread_t accept_tid;
	atomic_bool stop;
	pthread_mutex_t mu;
	int conn_fds[ECHO_MAX_CONNS];
	pthread_t conn_tids[ECHO_MAX_CONNS];
	int nconns;
	atomic_int connections;
	atomic_int eofs;                      /* echo: clients that half-closed */
	atomic_int requests;                  /* what serve counts as a request */
	atomic_uint_fast64_t last_arrival_us; /* echo: when its latest read returned */
};

struct upstream_conn_arg {
	struct upstream *u;
	int fd;
};

UPSTREAM_FN void *upstream_conn_main(void *arg)
{
	struct upstream_conn_arg a = *(struct upstream_conn_arg *)arg;
	free(arg);
	a.u->serve(a.u, a.fd);
	return NULL;
}

/* The echo: every byte back, a half-close answered in kind. */
UPSTREAM_FN void echo_serve(struct upstream *e, int fd)
{
	char buf[64 * 1024];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n == 0) {
			/* a half-close answered in kind: everything echoed, then our own FIN */
			atomic_fetch_add(&e->eofs, 1);
			shutdown(fd, SHUT_WR);
			break;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		atomic_store(&e->last_arrival_us, hist_now_us());
		for (ssize_t off = 0; off < n;) {
			ssize_t w = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return;
			off += w;
		}
	}
}

UPSTREAM_FN void *upstream_accept_main(void *arg)
{
	struct upstream *e = arg;
	while (!atomic_load(&e->stop)) {
		struct pollfd pfd = {.fd = e->listen_fd, .events = POLLIN};
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		int fd = accept(e->listen_fd, NULL, NULL);
		if (fd < 0) {
			/* out of descriptors (a test fills the table on purpose): wait, do not spin */
			if (errno == EMFILE || errno == ENFILE)
				usleep(10000);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		atomic_fetch_add(&e->connections, 1);
		pthread_mutex_lock(&e->mu);
		struct upstream_conn_arg *a = malloc(sizeof(*a));
		if (e->nconns == ECHO_MAX_CONNS || !a) {
			free(a);
			close(fd);
		} else {
			a->u = e;
			a->fd = fd;
			e->conn_fds[e->nconns] = fd;
			if (pthread_create(&e->conn_tids[e->nconns], NULL, upstream_conn_main, a) == 0)
				e->nconns++;
			else {
				free(a);
				close(fd);
			}
		}
		pthread_mutex_unlock(&e->mu);
	}
	return NULL;
}

UPSTREAM_FN struct upstream *upstream_start(void (*serve)(struct upstream *u, int fd))
{
	struct upstream *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->serve = serve;
	pthread_mutex_init(&e->mu, NULL);
	e->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	if (e->listen_fd < 0 || bind(e->listen_fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(e->listen_fd, 64) != 0 || getsockname(e->listen_fd, (struct sockaddr *)&sin, &len) != 0 ||
	    pthread_create(&e->accept_tid, NULL, upstream_accept_main, e) != 0) {
		if (e->listen_fd >= 0)
			close(e->listen_fd);
		pthread_mutex_destroy(&e->mu);
		free(e);
		return NULL;
	}
	e->port = ntohs(sin.sin_port);
	return e;
}

UPSTREAM_FN struct upstream *echo_start(void)
{
	return upstream_start(echo_serve);
}

/* For a cmocka setup: *state = u, or -1 and a line on stderr when u could not start. */
UPSTREAM_FN int upstream_as_state(void **state, struct upstream *u, const char *test)
{
	if (!u) {
		fprintf(stderr, "%s: cannot start its server on 127.0.0.1: %s\n", test, strerror(errno));
		return -1;
	}
	*state = u;
	return 0;
}

UPSTREAM_FN void upstream_stop(struct upstream *e)
{
	atomic_store(&e->stop, true);
	pthread_join(e->accept_tid, NULL);
	close(e->listen_fd);
	for (int i = 0; i < e->nconns; i++) {
		shutdown(e->conn_fds[i], SHUT_RDWR); /* wakes a thread blocked in read */
		pthread_join(e->conn_tids[i], NULL);
		close(e->conn_fds[i]);
	}
	pthread_mutex_destroy(&e->mu);
	free(e);
}

/* Waits until cond(e) holds or ms pass; returns whether it held. */
UPSTREAM_FN bool echo_wait(struct upstream *e, bool (*cond)(struct upstream *, int), int want, int ms)
{
	for (int waited = 0; waited < ms; waited += 5) {
		if (cond(e, want))
			return true;
		usleep(5000);
	}
	return cond(e, want);
}

UPSTREAM_FN bool echo_eofs_reach(struct upstream *e, int want)
{
	return atomic_load(&e->eofs) >= want;
}

/* A blocking client socket connected to 127.0.0.1:port with a receive timeout; -1 on failure. */
UPSTREAM_FN int client_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET,
	                          .sin_port = htons((uint16_t)port),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {.tv_sec = UPSTREAM_TIMEOUT_S};
	int one = 1;
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads (or writes) exactly n bytes; false on EOF, error or timeout. */
UPSTREAM_FN bool io_full(int fd, void *buf, size_t n, bool writing)
{
	for (size_t off = 0; off < n;) {
		ssize_t r = writing ? send(fd, (char *)buf + off, n - off, MSG_NOSIGNAL)
		                    : recv(fd, (char *)buf + off, n - off, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		off += (size_t)r;
	}
	return true;
}

UPSTREAM_FN bool read_full(int fd, void *buf, size_t n)
{
	return io_full(fd, buf, n, false);
}

UPSTREAM_FN bool write_full(int fd, const void *buf, size_t n)
{
	return io_full(fd, (void *)buf, n, true);
}

/* One byte within ms: 1, 0 on EOF, -1 on reset or when nothing came in time. */
UPSTREAM_FN int recv_byte(int fd, char *c, int ms)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	if (poll(&pfd, 1, ms) != 1)
		return -1;
	ssize_t r = recv(fd, c, 1, 0);
	return r == 1 ? 1 : r == 0 ? 0 : -1;
}

/*
 * Reads one HTTP response (head, then Content-Length bytes of body, or without one up to the
 * close) from fd into out; its status code, or 0 when no whole head came within
 * UPSTREAM_HTTP_TIMEOUT_MS.
 */
UPSTREAM_FN int http_read_response(int fd, char *out, size_t outlen)
{
	size_t n = 0, body_at = 0, content_length = 0;
	bool to_close = false; /* no Content-Length (an HTTP/1.0 reply): the body ends at the close */
	char c;
	while (n + 1 < outlen && recv_byte(fd, &c, UPSTREAM_HTTP_TIMEOUT_MS) == 1) {
		out[n++] = c;
		out[n] = '\0';
		if (!body_at && n >= 4 && memcmp(out + n - 4, "\r\n\r\n", 4) == 0) {
			body_at = n;
			const char *cl = strcasestr(out, "\r\nContent-Length:");
			content_length = cl ? strtoul(cl + 17, NULL, 10) : 0;
			to_close = !cl;
		}
		if (body_at && !to_close && n - body_at >= content_length)
			break;
	}
	out[n] = '\0';
	int code = 0;
	if (!body_at || sscanf(out, "HTTP/1.%*d %d", &code) != 1)
		return 0;
	return code;
}

/*
 * One raw request (len bytes, NULs and all) on a new connection to 127.0.0.1:port; the response's
 * status code, the response into out. 0 when it could not connect or no response came.
 */
UPSTREAM_FN int http_exchange(int port, const char *req, size_t len, char *out, size_t outlen)
{
	out[0] = '\0';
	int fd = client_connect(port);
	if (fd < 0)
		return 0;
	int code = write_full(fd, req, len) ? http_read_response(fd, out, outlen) : 0;
	close(fd);
	return code;
}

/* One byte there and back; its round trip in us, or 0 on failure. */
UPSTREAM_FN uint64_t ping(int fd)
{
	char c = 'p', back = 0;
	uint64_t t0 = hist_now_us();
	if (!write_full(fd, &c, 1) || !read_full(fd, &back, 1) || back != c)
		return 0;
	uint64_t rt = hist_now_us() - t0;
	return rt ? rt : 1;
}

/* host and port of the PostgreSQL at url (a URL or key=value string); -1 when it cannot be parsed */
UPSTREAM_FN int pg_host_port(const char *url, char *host, size_t hostlen, int *port)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(url, &perr);
	if (!opts) {
		PQfreemem(perr);
		return -1;
	}
	snprintf(host, hostlen, "127.0.0.1");
	*port = 5432;
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (!o->val || !*o->val)
			continue;
		if (!strcmp(o->keyword, "host"))
			snprintf(host, hostlen, "%s", o->val);
		if (!strcmp(o->keyword, "port"))
			*port = atoi(o->val);
	}
	PQconninfoFree(opts);
	return 0;
}

#endif
