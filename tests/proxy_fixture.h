/*
 * proxy_fixture.h — what test_proxy.c and test_proxy_faults.c share: the echo upstream of
 * tests/upstream.h as the group's state, a proxy started in front of it, and the two ways a
 * test looks at a connection's end (read_sees_close, wait_active). Header-only, as
 * tests/upstream.h: each test file uses its own subset of the helpers.
 *
 * Include it after defining PROXY_TEST, the test program's name for its messages.
 */
#ifndef LAB_TESTS_PROXY_FIXTURE_H
#define LAB_TESTS_PROXY_FIXTURE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy.h"
#include "upstream.h"

#ifndef PROXY_TEST
#error "define PROXY_TEST (the test program's name) before including proxy_fixture.h"
#endif

#define PROXY_FIXTURE_FN static __attribute__((unused))

/* A client read that waits this long means the proxy left it hanging: the test fails instead. */
#define RECV_TIMEOUT_S UPSTREAM_TIMEOUT_S

/*
 * What a closed peer looks like to a blocking read: 0 (EOF) or ECONNRESET, never the receive
 * timeout (EAGAIN), which would mean the proxy left the client hanging.
 */
PROXY_FIXTURE_FN bool read_sees_close(int fd)
{
	char buf[256];
	for (;;) {
		ssize_t r = recv(fd, buf, sizeof(buf), 0);
		if (r > 0)
			continue; /* bytes that were already on their way */
		if (r == 0)
			return true;
		if (errno == EINTR)
			continue;
		return errno == ECONNRESET || errno == EPIPE;
	}
}

PROXY_FIXTURE_FN struct proxy *start_proxy(int upstream_port, int up_us, int down_us, int64_t bps)
{
	char err[256] = "";
	struct proxy_config cfg = {.upstream_port = upstream_port,
	                           .delay_up_us = up_us,
	                           .delay_down_us = down_us,
	                           .bandwidth_bps = bps};
	struct proxy *p = proxy_start(&cfg, err, sizeof(err));
	if (!p)
		print_message("proxy_start: %s\n", err);
	assert_non_null(p);
	assert_true(proxy_port(p) > 0);
	return p;
}

PROXY_FIXTURE_FN int group_setup(void **state)
{
	return upstream_as_state(state, echo_start(), PROXY_TEST);
}

PROXY_FIXTURE_FN int group_teardown(void **state)
{
	upstream_stop(*state);
	return 0;
}

/* Waits until the proxy reports want open connections or ms pass; returns the last count. */
PROXY_FIXTURE_FN uint64_t wait_active(struct proxy *p, uint64_t want, int ms)
{
	struct proxy_stats st;
	for (int waited = 0;; waited += 5) {
		proxy_stats(p, &st);
		if (st.active == want || waited >= ms)
			return st.active;
		usleep(5000);
	}
}

#endif
