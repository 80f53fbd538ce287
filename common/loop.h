/*
 * loop.h — what every libevent loop of the suite shares, written once: libevent's pthreads
 * locking and the SIGPIPE policy, each set up once per process, and the one way another thread
 * runs a function on a loop's thread (http.c's API thread, proxy.c's thread, load.c's caller).
 */
#ifndef LAB_LOOP_H
#define LAB_LOOP_H

#include <event2/event.h>
#include <pthread.h>

/*
 * Switches libevent's pthreads locking on, once per process, before the first base that other
 * threads call into (a second call is a no-op). 0, or -1 when libevent refused.
 */
int loop_threads_init(void);

/*
 * From now on a peer that hangs up while we write (a client that timed out, a server that
 * answered 413 and closed) costs an EPIPE on that socket, not the process: SIGPIPE is ignored,
 * unless the program installed a handler of its own. Once per process; can't fail.
 */
void loop_sigpipe_ignore(void);

/*
 * Runs fn(arg) on the thread that runs base's loop (loop_tid) and waits until it returned:
 * the way to read or change what the loop owns without a lock. From the loop thread itself
 * fn runs at once. The loop must be running and stay so until this returns. 0, or -1 when it
 * could not be scheduled (fn did not run).
 */
int loop_call(struct event_base *base, pthread_t loop_tid, void (*fn)(void *), void *arg);

#endif
