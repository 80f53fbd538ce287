/*
 * proxy_internal.h — private to proxy.c and proxy_relay.c: the proxy's, a connection's and a
 * pipe's structures, and the functions the two files call in each other.
 *
 * proxy.c holds the public API of proxy.h (start, the control functions, free), the loop thread
 * and the calls onto it, the upstream's resolution and the listener. proxy_relay.c holds one
 * accepted connection's relay: its two pipes, their delay queue and bandwidth bucket, the
 * proxy's one timer, and a connection's close. Nothing here is part of proxy.h's API.
 */
#ifndef LAB_PROXY_INTERNAL_H
#define LAB_PROXY_INTERNAL_H

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy.h"

struct proxy_conn;

/* A run of bytes read at one wake-up, due for writing at due_us. */
struct proxy_seg {
	uint64_t due_us;
	size_t len;
};

/*
 * One direction of a connection.
 *
 * held:  bytes read and not yet due, described in order by the ring segs (head first).
 * ready: bytes due and not yet accepted by the destination socket.
 * tokens/tokens_at_us: the bandwidth bucket; starts empty, so a new connection's first second
 * carries no more than the rate.
 */
struct proxy_pipe {
	struct proxy_conn *conn;
	evutil_socket_t src, dst;
	struct event *read_ev;  /* src readable */
	struct event *write_ev; /* dst writable, added while ready does not fit in the socket */
	struct evbuffer *held;
	struct evbuffer *ready;
	struct proxy_seg *segs;
	size_t seg_cap, seg_head, seg_count;
	bool reading;    /* read_ev is added */
	bool writing;    /* write_ev is added */
	bool bw_paused;  /* not reading until the bucket refills */
	bool src_eof;    /* the source sent FIN: flush, then shut the destination's write side */
	bool dst_shut;   /* shutdown(dst, SHUT_WR) done: this direction is finished */
	uint64_t *bytes; /* the proxy's bytes_up or bytes_down */
	/* when the head segment is due or the bucket has refilled (the proxy's timer); 0 = never */
	uint64_t wake_us;
	double tokens;
	uint64_t tokens_at_us;
};

struct proxy_conn {
	struct proxy *proxy;
	struct proxy_conn *prev, *next;
	evutil_socket_t client_fd, upstream_fd;
	struct event *connect_ev; /* upstream connect in progress; NULL once connected */
	struct proxy_pipe up, down;
};

struct proxy {
	struct event_base *base;
	struct evconnlistener *listener;
	struct event *accept_resume_ev; /* re-enables the listener after an accept error */
	/* one timerfd for every pipe's wake, due at timer_at_us (0 = not set) */
	evutil_socket_t timer_fd;
	struct event *timer_ev;
	uint64_t timer_at_us;
	bool timer_scanning; /* proxy_timer_cb is pumping: it sets the timer when done */
	pthread_t tid;
	bool thread_started;
	int port;
	struct sockaddr_storage upstream;
	socklen_t upstream_len;
	/* Read on the loop thread only; changed there by the control functions. */
	int delay_up_us, delay_down_us;
	int64_t bandwidth_bps;
	bool refuse;
	struct proxy_conn *conns; /* every open connection */
	struct proxy_stats stats;
};

/* A control function's call on the loop thread: fn's result comes back in ret. */
struct proxy_call {
	struct proxy *p;
	int (*fn)(struct proxy *, void *);
	void *arg;
	int ret;
};

int proxy_pipe_rearm(struct proxy_pipe *pp, uint64_t now);
/* The timerfd and its event on p->base; -1 when either could not be made. */
int proxy_timer_open(struct proxy *p);
void proxy_conn_close(struct proxy_conn *c);
void proxy_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr, int addrlen,
                     void *arg);

#endif
