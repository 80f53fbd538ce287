/*
 * proxy_relay.c — one accepted connection of the proxy of proxy.h, from accept to close (the
 * loop, its thread and the control functions are in proxy.c; the structures in proxy_internal.h).
 *
 * Each accepted connection is a struct proxy_conn with two pipes, up (client to upstream) and
 * down (upstream to client). A pipe reads what its source sends, stamps each read with a due
 * time (arrival + the delay in force when it was read) and writes the bytes to its destination,
 * in order, once they are due: one queue per pipe, so a delay adds latency and costs no
 * throughput, and one timerfd for the whole proxy, due at the earliest pipe's wake. At zero
 * delay with nothing queued a read is sent on from the read buffer in the same callback: a
 * round trip costs epoll_wait, read and send twice, no timer and no copy into an evbuffer.
 * The bandwidth limit is a token bucket on the reading side, so a slow link pushes back on
 * the sender through TCP as a real one does.
 *
 * Counting: accepted counts every connection accept() returned, refused ones included; active
 * is what is open now (connecting to the upstream or forwarding).
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"
#include "proxy_internal.h"

/* 4 MiB held per direction at most: throughput stays above 400 MB/s behind a 10 ms delay. */
#define PROXY_QUEUE_MAX (4 * 1024 * 1024)
/* 256 KiB read per wake-up at most, so one busy connection cannot starve the others. */
#define PROXY_READ_BUDGET (256 * 1024)
/* 64 KiB: one read() into the stack. */
#define PROXY_READ_CHUNK (64 * 1024)
/* A loopback connect is immediate; an upstream that never answers must not hold a client forever. */
#define PROXY_CONNECT_TIMEOUT_S 5
/* The bucket holds 10 ms of the rate: smooth on a chart, and few wake-ups at high rates. */
#define PROXY_BUCKET_MS 10
/* ...but at most 64 KiB, so a fast limit still wakes often enough to stay smooth. */
#define PROXY_BUCKET_MAX (64 * 1024)

static double proxy_bucket_cap(int64_t bps)
{
	double cap = (double)bps * PROXY_BUCKET_MS / 1000.0;
	if (cap > PROXY_BUCKET_MAX)
		cap = PROXY_BUCKET_MAX;
	return cap < 1.0 ? 1.0 : cap;
}

static int proxy_pipe_pump(struct proxy_pipe *pp);

/*
 * Adds or deletes ev as on says; *state tracks it. -1 when libevent could not add it (no
 * memory, a descriptor epoll refuses): the caller closes the connection, which would
 * otherwise wait forever for an event that was never registered.
 */
static int proxy_event_set(struct event *ev, bool *state, bool on)
{
	if (on == *state)
		return 0;
	if (on && event_add(ev, NULL) != 0)
		return -1;
	if (!on)
		event_del(ev);
	*state = on;
	return 0;
}

static int proxy_pipe_set_reading(struct proxy_pipe *pp, bool on)
{
	return proxy_event_set(pp->read_ev, &pp->reading, on);
}

static int proxy_pipe_set_writing(struct proxy_pipe *pp, bool on)
{
	return proxy_event_set(pp->write_ev, &pp->writing, on);
}

static int proxy_pipe_push_seg(struct proxy_pipe *pp, uint64_t due_us, size_t len)
{
	if (pp->seg_count == pp->seg_cap) {
		size_t cap = pp->seg_cap ? pp->seg_cap * 2 : 16;
		struct proxy_seg *segs = malloc(cap * sizeof(*segs));
		if (!segs)
			return -1;
		for (size_t i = 0; i < pp->seg_count; i++)
			segs[i] = pp->segs[(pp->seg_head + i) % pp->seg_cap];
		free(pp->segs);
		pp->segs = segs;
		pp->seg_cap = cap;
		pp->seg_head = 0;
	}
	pp->segs[(pp->seg_head + pp->seg_count) % pp->seg_cap] = (struct proxy_seg){due_us, len};
	pp->seg_count++;
	return 0;
}

/* Refills the bucket up to now; a no-op without a limit. */
static void proxy_pipe_refill(struct proxy_pipe *pp, int64_t bps, uint64_t now)
{
	if (bps <= 0)
		return;
	double cap = proxy_bucket_cap(bps);
	if (now > pp->tokens_at_us)
		pp->tokens += (double)(now - pp->tokens_at_us) * (double)bps / 1e6;
	if (pp->tokens > cap)
		pp->tokens = cap;
	pp->tokens_at_us = now;
}

/*
 * The proxy's timer (one timerfd for every pipe, absolute CLOCK_MONOTONIC, hist_now_us's clock)
 * due at `at` us, unless it is already due sooner or the timer callback is scanning (it sets
 * the earliest when done). A pipe's later or cancelled wake leaves it as it is: the callback
 * then finds nothing due and sets the next. -1 when the timerfd refused.
 */
static int proxy_timer_want(struct proxy *p, uint64_t at)
{
	if (p->timer_scanning || (p->timer_at_us != 0 && p->timer_at_us <= at))
		return 0;
	struct itimerspec its = {
	        .it_value = {.tv_sec = (time_t)(at / 1000000u), .tv_nsec = (long)(at % 1000000u) * 1000}};
	if (timerfd_settime(p->timer_fd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
		return -1;
	p->timer_at_us = at;
	return 0;
}

/* Sets the pipe's wake for the earliest of: the head segment due, the bucket full again. -1
 * when the timer could not be set. */
static int proxy_pipe_arm(struct proxy_pipe *pp, uint64_t now)
{
	uint64_t wake = UINT64_MAX;
	int64_t bps = pp->conn->proxy->bandwidth_bps;

	if (pp->seg_count > 0)
		wake = pp->segs[pp->seg_head].due_us;
	if (pp->bw_paused && bps > 0) {
		double missing = proxy_bucket_cap(bps) - pp->tokens;
		uint64_t refill = now + (missing > 0 ? (uint64_t)(missing * 1e6 / (double)bps) + 1 : 0);
		if (refill < wake)
			wake = refill;
	}
	pp->wake_us = wake == UINT64_MAX ? 0 : wake;
	return pp->wake_us ? proxy_timer_want(pp->conn->proxy, pp->wake_us) : 0;
}

/* Reading on src as the pipe's state allows, and the timer armed; -1 on failure. */
int proxy_pipe_rearm(struct proxy_pipe *pp, uint64_t now)
{
	size_t queued = evbuffer_get_length(pp->held) + evbuffer_get_length(pp->ready);
	bool read = !pp->src_eof && !pp->bw_paused && queued < PROXY_QUEUE_MAX;
	return proxy_pipe_set_reading(pp, read) == 0 && proxy_pipe_arm(pp, now) == 0 ? 0 : -1;
}

/*
 * Moves what is due from held to ready, writes ready, shuts the destination when the source
 * has finished and everything is out, and decides whether to read more. May close the whole
 * connection: then pp is gone and it returns -1 (callers return right after), else 0.
 */
static int proxy_pipe_pump(struct proxy_pipe *pp)
{
	struct proxy_conn *c = pp->conn;
	uint64_t now = hist_now_us();

	while (pp->seg_count > 0 && pp->segs[pp->seg_head].due_us <= now) {
		struct proxy_seg *s = &pp->segs[pp->seg_head];
		evbuffer_remove_buffer(pp->held, pp->ready, s->len);
		pp->seg_head = (pp->seg_head + 1) % pp->seg_cap;
		pp->seg_count--;
	}
	while (evbuffer_get_length(pp->ready) > 0) {
		int n = evbuffer_write(pp->ready, pp->dst);
		if (n > 0) {
			*pp->bytes += (uint64_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			break;
		/* the destination went away (EPIPE, ECONNRESET): both sides close */
		proxy_conn_close(c);
		return -1;
	}
	if (proxy_pipe_set_writing(pp, evbuffer_get_length(pp->ready) > 0) != 0) {
		proxy_conn_close(c);
		return -1;
	}

	if (pp->src_eof && !pp->dst_shut && pp->seg_count == 0 && evbuffer_get_length(pp->ready) == 0) {
		shutdown(pp->dst, SHUT_WR);
		pp->dst_shut = true;
		struct proxy_pipe *other = pp == &c->up ? &c->down : &c->up;
		if (other->dst_shut) {
			proxy_conn_close(c);
			return -1;
		}
	}

	int64_t bps = c->proxy->bandwidth_bps;
	if (pp->bw_paused) {
		proxy_pipe_refill(pp, bps, now);
		if (bps <= 0 || pp->tokens >= proxy_bucket_cap(bps))
			pp->bw_paused = false;
	}
	if (proxy_pipe_rearm(pp, now) == 0)
		return 0;
	proxy_conn_close(c);
	return -1;
}

/*
 * Writes what was just read straight from the read buffer when nothing waits before it (zero
 * delay, nothing held or ready): no copy into an evbuffer, no second wake-up. What the
 * destination does not take now goes to ready, and *direct turns false so the next read queues
 * behind it. -1 when the destination went away.
 */
static int proxy_pipe_forward(struct proxy_pipe *pp, const char *buf, size_t n, bool *direct)
{
	ssize_t w = 0;
	if (*direct) {
		do
			w = send(pp->dst, buf, n, MSG_NOSIGNAL);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -1; /* EPIPE, ECONNRESET: the caller closes both sides */
		if (w < 0)
			w = 0;
		*pp->bytes += (uint64_t)w;
		if ((size_t)w == n)
			return 0;
		*direct = false;
	}
	return evbuffer_add(pp->ready, buf + w, n - (size_t)w);
}

/* What this wake-up may read: the queue's room, and the bucket's tokens under a limit. */
static size_t proxy_read_budget(struct proxy_pipe *pp, int64_t bps, uint64_t now)
{
	size_t queued = evbuffer_get_length(pp->held) + evbuffer_get_length(pp->ready);
	size_t budget = PROXY_READ_BUDGET;

	if (queued >= PROXY_QUEUE_MAX)
		budget = 0;
	else if (budget > PROXY_QUEUE_MAX - queued)
		budget = PROXY_QUEUE_MAX - queued;
	if (bps > 0) {
		proxy_pipe_refill(pp, bps, now);
		if (pp->tokens < 1.0) {
			budget = 0;
			pp->bw_paused = true;
		} else if (pp->tokens < (double)budget) {
			budget = (size_t)pp->tokens;
		}
	}
	return budget;
}

static void proxy_read_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct proxy_pipe *pp = arg;
	struct proxy_conn *c = pp->conn;
	struct proxy *p = c->proxy;
	char buf[PROXY_READ_CHUNK];
	uint64_t now = hist_now_us();
	int delay = pp == &c->up ? p->delay_up_us : p->delay_down_us;
	/* zero delay and nothing waiting: written at once, the proxy's fastest path */
	bool at_once = delay == 0 && pp->seg_count == 0;
	bool direct = at_once && evbuffer_get_length(pp->ready) == 0;
	size_t budget = proxy_read_budget(pp, p->bandwidth_bps, now);
	size_t total = 0;

	while (total < budget) {
		size_t want = budget - total < sizeof(buf) ? budget - total : sizeof(buf);
		ssize_t n = read(fd, buf, want);
		if (n > 0) {
			int rc = at_once ? proxy_pipe_forward(pp, buf, (size_t)n, &direct)
			                 : evbuffer_add(pp->held, buf, (size_t)n);
			if (rc != 0) {
				proxy_conn_close(c);
				return;
			}
			total += (size_t)n;
			if ((size_t)n < want)
				break; /* drained: the next read would say EAGAIN */
			continue;
		}
		if (n == 0) {
			pp->src_eof = true;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		proxy_conn_close(c); /* ECONNRESET and the like: the whole connection goes */
		return;
	}
	if (p->bandwidth_bps > 0) {
		pp->tokens -= (double)total;
		if (pp->tokens < 1.0)
			pp->bw_paused = true;
	}
	if (total > 0 && !at_once && proxy_pipe_push_seg(pp, now + (uint64_t)delay, total) != 0) {
		proxy_conn_close(c);
		return;
	}
	(void)proxy_pipe_pump(pp);
}

static void proxy_write_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)proxy_pipe_pump(arg);
}

/* The earliest wake of every pipe, 0 when none; a connection still connecting has none. */
static uint64_t proxy_next_wake(const struct proxy *p)
{
	uint64_t next = 0;
	for (const struct proxy_conn *c = p->conns; c; c = c->next)
		for (const struct proxy_pipe *pp = &c->up; pp; pp = pp == &c->up ? &c->down : NULL)
			if (pp->wake_us && (!next || pp->wake_us < next))
				next = pp->wake_us;
	return next;
}

/*
 * The timerfd fired: pumps every pipe whose wake is due (a scan of the open connections, a few
 * in a lab), then sets the timer for the earliest wake left. A proxy at zero delay never sets
 * it, so its round trip has no timer syscall at all (libevent's precise timers would call
 * timerfd_settime on every turn of the loop).
 */
static void proxy_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct proxy *p = arg;
	uint64_t expirations, now = hist_now_us();
	if (read(fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
		return; /* cannot happen on a timerfd; it stays readable and comes back */
	p->timer_at_us = 0;
	p->timer_scanning = true;
	for (struct proxy_conn *c = p->conns, *next; c; c = next) {
		next = c->next;
		if (c->up.wake_us && c->up.wake_us <= now && proxy_pipe_pump(&c->up) != 0)
			continue; /* closed */
		if (c->down.wake_us && c->down.wake_us <= now)
			(void)proxy_pipe_pump(&c->down);
	}
	p->timer_scanning = false;
	uint64_t next = proxy_next_wake(p);
	if (next && proxy_timer_want(p, next) != 0)
		while (p->conns) /* nothing due would ever be sent: close rather than hang */
			proxy_conn_close(p->conns);
}

int proxy_timer_open(struct proxy *p)
{
	p->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (p->timer_fd < 0)
		return -1;
	p->timer_ev = event_new(p->base, p->timer_fd, EV_READ | EV_PERSIST, proxy_timer_cb, p);
	return p->timer_ev && event_add(p->timer_ev, NULL) == 0 ? 0 : -1;
}

static void proxy_pipe_clear(struct proxy_pipe *pp)
{
	if (pp->read_ev)
		event_free(pp->read_ev);
	if (pp->write_ev)
		event_free(pp->write_ev);
	if (pp->held)
		evbuffer_free(pp->held);
	if (pp->ready)
		evbuffer_free(pp->ready);
	free(pp->segs);
}

static int proxy_pipe_init(struct proxy_pipe *pp, struct proxy_conn *c, evutil_socket_t src,
                           evutil_socket_t dst, uint64_t *bytes)
{
	struct event_base *base = c->proxy->base;
	pp->conn = c;
	pp->src = src;
	pp->dst = dst;
	pp->bytes = bytes;
	pp->tokens_at_us = hist_now_us();
	pp->read_ev = event_new(base, src, EV_READ | EV_PERSIST, proxy_read_cb, pp);
	pp->write_ev = event_new(base, dst, EV_WRITE | EV_PERSIST, proxy_write_cb, pp);
	pp->held = evbuffer_new();
	pp->ready = evbuffer_new();
	if (!pp->read_ev || !pp->write_ev || !pp->held || !pp->ready)
		return -1;
	return 0;
}

/* Closes both sockets and frees c. The only way a connection ends. */
void proxy_conn_close(struct proxy_conn *c)
{
	struct proxy *p = c->proxy;
	if (c->connect_ev)
		event_free(c->connect_ev);
	proxy_pipe_clear(&c->up);
	proxy_pipe_clear(&c->down);
	if (c->client_fd >= 0)
		evutil_closesocket(c->client_fd);
	if (c->upstream_fd >= 0)
		evutil_closesocket(c->upstream_fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		p->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	p->stats.active--;
	free(c);
}

/* Makes the next close of fd a reset: the peer's next read or write fails at once. */
static void proxy_set_reset_on_close(evutil_socket_t fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

static void proxy_close_reset(evutil_socket_t fd)
{
	proxy_set_reset_on_close(fd);
	evutil_closesocket(fd);
}

/* The upstream refused or never answered: the client sees its server refuse, a reset. */
static void proxy_conn_upstream_failed(struct proxy_conn *c)
{
	c->proxy->stats.upstream_errors++;
	proxy_set_reset_on_close(c->client_fd);
	proxy_conn_close(c);
}

static void proxy_connected_cb(evutil_socket_t fd, short what, void *arg)
{
	struct proxy_conn *c = arg;
	int soerr = 0;
	socklen_t len = sizeof(soerr);

	if ((what & EV_TIMEOUT) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
		proxy_conn_upstream_failed(c);
		return;
	}
	event_free(c->connect_ev);
	c->connect_ev = NULL;
	if (proxy_pipe_set_reading(&c->up, true) != 0 || proxy_pipe_set_reading(&c->down, true) != 0)
		proxy_conn_close(c);
}

static void proxy_set_nodelay(evutil_socket_t fd)
{
	/* the proxy writes what it has at once; Nagle would add 40 ms to a small reply */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void proxy_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr, int addrlen,
                     void *arg)
{
	(void)l;
	(void)addr;
	(void)addrlen;
	struct proxy *p = arg;

	p->stats.accepted++;
	if (p->refuse) {
		p->stats.refused++;
		proxy_close_reset(fd);
		return;
	}
	struct proxy_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		proxy_close_reset(fd);
		return;
	}
	c->proxy = p;
	c->client_fd = fd;
	c->upstream_fd = -1;
	c->next = p->conns;
	if (p->conns)
		p->conns->prev = c;
	p->conns = c;
	p->stats.active++;
	proxy_set_nodelay(fd);

	c->upstream_fd = socket(p->upstream.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->upstream_fd < 0)
		goto upstream_err;
	proxy_set_nodelay(c->upstream_fd);
	if (proxy_pipe_init(&c->up, c, c->client_fd, c->upstream_fd, &p->stats.bytes_up) != 0 ||
	    proxy_pipe_init(&c->down, c, c->upstream_fd, c->client_fd, &p->stats.bytes_down) != 0) {
		proxy_conn_close(c);
		return;
	}
	if (connect(c->upstream_fd, (struct sockaddr *)&p->upstream, p->upstream_len) == 0) {
		if (proxy_pipe_set_reading(&c->up, true) != 0 || proxy_pipe_set_reading(&c->down, true) != 0)
			proxy_conn_close(c);
		return;
	}
	if (errno != EINPROGRESS)
		goto upstream_err;
	struct timeval tv = {.tv_sec = PROXY_CONNECT_TIMEOUT_S};
	c->connect_ev = event_new(p->base, c->upstream_fd, EV_WRITE, proxy_connected_cb, c);
	if (!c->connect_ev || event_add(c->connect_ev, &tv) != 0)
		goto upstream_err;
	return;

upstream_err:
	proxy_conn_upstream_failed(c);
}
