/*
 * test_load.c — load.h's per-request deadline against a server that trickles its response: a
 * byte every TRICKLE_GAP_MS, so the connection is never idle for long and an inactivity timeout
 * never fires, while a deadline from send to the whole response does. Pure: the server is a
 * thread of this test on 127.0.0.1 (raw sockets: it must be able to misbehave).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "load.h"

#define TRICKLE_GAP_MS 100
#define TRICKLE_BODY   "0123456789" /* 10 bytes: about a second per response */
#define MAX_CONNS      32
#define ERRLEN         256

struct trickle {
	int listen_fd;
	int port;
	pthread_t accept_tid;
	atomic_bool stop;
	pthread_t conn_tids[MAX_CONNS];
	int nconns;
	atomic_int requests; /* request heads read */
};

struct trickle_conn {
	struct trickle *t;
	int fd;
};

static bool send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* Reads one request head (up to the blank line); false when the client went away. */
static bool read_head(int fd)
{
	char c;
	int state = 0; /* how much of "\r\n\r\n" has been seen */
	while (state < 4) {
		ssize_t r = recv(fd, &c, 1, 0);
		if (r <= 0)
			return false;
		state = (c == "\r\n\r\n"[state]) ? state + 1 : (c == '\r' ? 1 : 0);
	}
	return true;
}

/* Answers every request on the connection: the head at once, the body a byte at a time. */
static void *trickle_conn_main(void *arg)
{
	struct trickle_conn *tc = arg;
	const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n";
	while (!atomic_load(&tc->t->stop) && read_head(tc->fd)) {
		atomic_fetch_add(&tc->t->requests, 1);
		if (!send_all(tc->fd, head, sizeof(head) - 1))
			break;
		bool ok = true;
		for (const char *b = TRICKLE_BODY; *b && ok && !atomic_load(&tc->t->stop); b++) {
			usleep(TRICKLE_GAP_MS * 1000);
			ok = send_all(tc->fd, b, 1);
		}
		if (!ok)
			break;
	}
	close(tc->fd);
	return NULL;
}

static void *trickle_accept_main(void *arg)
{
	struct trickle *t = arg;
	while (!atomic_load(&t->stop)) {
		struct pollfd pfd = {.fd = t->listen_fd, .events = POLLIN};
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		int fd = accept(t->listen_fd, NULL, NULL);
		if (fd < 0)
			continue;
		static struct trickle_conn conns[MAX_CONNS];
		if (t->nconns == MAX_CONNS) {
			close(fd);
			continue;
		}
		conns[t->nconns] = (struct trickle_conn){t, fd};
		if (pthread_create(&t->conn_tids[t->nconns], NULL, trickle_conn_main, &conns[t->nconns]) == 0)
			t->nconns++;
		else
			close(fd);
	}
	return NULL;
}

static int setup(void **state)
{
	static struct trickle t;
	memset(&t, 0, sizeof(t));
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	t.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (t.listen_fd < 0 || bind(t.listen_fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(t.listen_fd, 16) != 0 || getsockname(t.listen_fd, (struct sockaddr *)&sin, &len) != 0 ||
	    pthread_create(&t.accept_tid, NULL, trickle_accept_main, &t) != 0) {
		fprintf(stderr, "test_load: cannot start the trickling server on 127.0.0.1\n");
		return -1;
	}
	t.port = ntohs(sin.sin_port);
	*state = &t;
	return 0;
}

static int teardown(void **state)
{
	struct trickle *t = *state;
	atomic_store(&t->stop, true);
	pthread_join(t->accept_tid, NULL);
	for (int i = 0; i < t->nconns; i++)
		pthread_join(t->conn_tids[i], NULL);
	close(t->listen_fd);
	return 0;
}

static void test_a_trickled_response_misses_a_per_request_deadline(void **state)
{
	struct trickle *t = *state;
	char err[ERRLEN];
	struct load_result res;
	/* 3 gaps fit in the deadline, the whole body needs 10: only a per-request deadline fires */
	struct load_config cfg = {.port = t->port,
	                          .path = "/slow",
	                          .clients = 2,
	                          .max_requests = 4,
	                          .timeout_ms = 3 * TRICKLE_GAP_MS + TRICKLE_GAP_MS / 2};
	int before = atomic_load(&t->requests);

	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), 0);
	print_message("4 requests, a byte every %d ms, deadline %d ms: %llu timeouts, %llu completed in "
	              "%.2f s\n",
	              TRICKLE_GAP_MS, cfg.timeout_ms, (unsigned long long)res.timeouts,
	              (unsigned long long)res.completed, res.elapsed_s);
	assert_int_equal(res.sent, 4);
	assert_int_equal(res.completed, 0);
	assert_int_equal(res.errors, 4);
	assert_int_equal(res.timeouts, 4);
	assert_int_equal(res.latency.count, 0);
	/* each timed-out request went out on a new connection: the server read all four */
	for (int waited = 0; atomic_load(&t->requests) < before + 4 && waited < 2000; waited += 10)
		usleep(10000);
	assert_int_equal(atomic_load(&t->requests), before + 4);
}

static void test_the_same_trickle_within_its_deadline_completes(void **state)
{
	struct trickle *t = *state;
	char err[ERRLEN];
	struct load_result res;
	struct load_config cfg = {.port = t->port,
	                          .path = "/slow",
	                          .clients = 1,
	                          .max_requests = 1,
	                          .timeout_ms = 30 * TRICKLE_GAP_MS};

	assert_int_equal(load_run(&cfg, &res, err, sizeof(err)), 0);
	assert_int_equal(res.completed, 1);
	assert_int_equal(res.status_2xx, 1);
	assert_int_equal(res.timeouts, 0);
	assert_int_equal(res.errors, 0);
	/* the whole body, not its first byte: at least its ten gaps (a lower bound the server sets) */
	assert_true(res.latency.max_us >= (uint64_t)10 * TRICKLE_GAP_MS * 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_a_trickled_response_misses_a_per_request_deadline),
	        cmocka_unit_test(test_the_same_trickle_within_its_deadline_completes),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
