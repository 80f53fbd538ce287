/*
 * faults_drive.c — the steady load on one lab: a thread that runs common/load.h's generator in
 * rounds of a second (so that it stops within one), one client with a pause between requests,
 * each request made by the lab's recipe, each answer put on the lab's timeline (faults.h).
 */
#include <event2/buffer.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "faults_internal.h"

/* one round of load_run: the thread looks at its stop flag between rounds */
#define DRIVE_ROUND_MS 1000
/* an error body is read this far: {"error": "..."} is short */
#define BODY_MAX 4096

/* A 500 or 503 whose body is a JSON object with a non-empty "error" string. */
static bool clear_error(struct evhttp_request *req, int status)
{
	if (status != 500 && status != 503)
		return false;
	struct evbuffer *b = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(b);
	if (n == 0 || n > BODY_MAX)
		return false;
	char buf[BODY_MAX];
	evbuffer_copyout(b, buf, n);
	json_t *doc = json_loadb(buf, n, 0, NULL);
	json_t *e = json_is_object(doc) ? json_object_get(doc, "error") : NULL;
	bool ok = json_is_string(e) && json_string_length(e) > 0;
	json_decref(doc);
	return ok;
}

static void grow(void **p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return;
	size_t n = *cap ? *cap : 1024;
	while (n < need)
		n *= 2;
	void *q = realloc(*p, n * size);
	if (!q)
		abort(); /* the timeline is the measurement: a run without it means nothing */
	memset((char *)q + *cap * size, 0, (n - *cap) * size);
	*p = q;
	*cap = n;
}

static void request_cb(struct load_request *r, struct evhttp_request *req, int client, uint64_t seq,
                       void *arg)
{
	(void)client;
	(void)seq;
	struct faults_lab *l = arg;
	l->current_n = l->next_n++;
	l->recipe->request(l, r, req, l->current_n);
}

static void response_cb(struct evhttp_request *req, int client, uint64_t seq, uint64_t latency_us, void *arg)
{
	(void)client;
	(void)seq;
	struct faults_lab *l = arg;
	int status = req ? evhttp_request_get_response_code(req) : 0;
	enum faults_kind kind = FAULTS_NONE;
	if (status >= 200 && status < 300)
		kind = FAULTS_OK;
	else if (status)
		kind = clear_error(req, status) ? FAULTS_CLEAR : FAULTS_BAD;
	struct faults_event ev = {.at_ms = hist_now_ms(), .status = (uint16_t)status, .kind = (uint8_t)kind};
	pthread_mutex_lock(&l->mu);
	grow((void **)&l->events, &l->capevents, l->nevents + 1, sizeof(*l->events));
	l->events[l->nevents++] = ev;
	grow((void **)&l->outcomes, &l->capoutcomes, l->current_n + 1, 1);
	l->outcomes[l->current_n] = kind == FAULTS_OK ? OUTCOME_OK : OUTCOME_FAILED;
	if (kind == FAULTS_OK)
		l->acknowledged++;
	else
		l->ambiguous++;
	hist_record(&l->interval, latency_us);
	if (kind == FAULTS_OK)
		l->interval_ok++;
	else
		l->interval_errors++;
	pthread_mutex_unlock(&l->mu);
}

static void *drive_main(void *arg)
{
	struct faults_lab *l = arg;
	struct load_result *res = malloc(sizeof(*res));
	if (!res)
		return NULL;
	while (!atomic_load(&l->stop)) {
		struct load_config cfg = {
		        .port = l->port,
		        .path = "/",
		        .clients = 1,
		        .duration_ms = DRIVE_ROUND_MS,
		        .timeout_ms = FAULTS_REQUEST_TIMEOUT_MS,
		        .think_ms = l->think_ms,
		        .request_cb = request_cb,
		        .response_cb = response_cb,
		        .arg = l,
		};
		char err[256];
		if (load_run(&cfg, res, err, sizeof(err)) < 0)
			break;
	}
	free(res);
	return NULL;
}

int faults_drive_start(struct faults_lab *l, int think_ms, char *err, size_t errlen)
{
	l->think_ms = think_ms;
	atomic_store(&l->stop, false);
	if (pthread_create(&l->thread, NULL, drive_main, l) != 0) {
		snprintf(err, errlen, "cannot start the load thread of lab-%s", l->name);
		return -1;
	}
	l->driving = true;
	return 0;
}

void faults_drive_stop(struct faults_lab *l)
{
	if (!l->driving)
		return;
	atomic_store(&l->stop, true);
	pthread_join(l->thread, NULL);
	l->driving = false;
}

size_t faults_events(struct faults_lab *l, size_t from, struct faults_event *out, size_t max)
{
	pthread_mutex_lock(&l->mu);
	size_t n = from < l->nevents ? l->nevents - from : 0;
	n = n < max ? n : max;
	if (n)
		memcpy(out, l->events + from, n * sizeof(*out));
	pthread_mutex_unlock(&l->mu);
	return n;
}

size_t faults_events_count(struct faults_lab *l)
{
	pthread_mutex_lock(&l->mu);
	size_t n = l->nevents;
	pthread_mutex_unlock(&l->mu);
	return n;
}

void faults_interval_take(struct faults_lab *l, struct hist *lat, uint64_t *ok, uint64_t *errors)
{
	pthread_mutex_lock(&l->mu);
	*lat = l->interval;
	*ok = l->interval_ok;
	*errors = l->interval_errors;
	hist_init(&l->interval);
	l->interval_ok = l->interval_errors = 0;
	pthread_mutex_unlock(&l->mu);
}
