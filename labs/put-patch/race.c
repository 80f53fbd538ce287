/*
 * race.c — phase 4 of lab-put-patch: N clients (threads, each a real HTTP client on its own
 * keep-alive connection) x R rounds of read-modify-write on one user, in three modes:
 *   blind PUT   GET, add one to my counter in my copy, PUT the whole user back
 *   If-Match    the same, with If-Match: on 412 GET again and redo the round
 *   PATCH       GET, then a merge patch of my own counter only: {"counters": {"c3": v + 1}}
 * Client i only ever changes counters.c<i>, so after the race PostgreSQL must hold, for each
 * client, as many increments as it was answered 2xx for; what is missing was lost.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "internal.h"
#include "pg.h"

#define RACE_ID 400
/* a round under If-Match that loses this often to the others gives up (and counts as other) */
#define MAX_TRIES 1000

struct racer {
	pthread_t thread;
	int port, index, mode, rounds;
	char id_path[64];
	uint64_t requests, acked, conflicts, other;
	char err[256];
};

static const char *const MODE_NAMES[PUT_PATCH_RACE_ROWS] = {
        [PP_RACE_BLIND] = "PUT, no precondition",
        [PP_RACE_IF_MATCH] = "PUT with If-Match, retry on 412",
        [PP_RACE_PATCH] = "merge PATCH of my counter",
};

/* My counter in the user GET answered, and the write of one more: a whole user or a merge patch. */
static char *next_write(const struct racer *w, const char *body)
{
	char key[16];
	snprintf(key, sizeof(key), "c%d", w->index);
	json_t *doc = json_loads(body, 0, NULL);
	json_t *counters = json_object_get(doc, "counters");
	if (!json_is_object(counters)) {
		json_decref(doc);
		return NULL;
	}
	json_int_t v = json_integer_value(json_object_get(counters, key)) + 1;
	char *text;
	if (w->mode == PP_RACE_PATCH) {
		json_t *patch = json_pack("{s:{s:I}}", "counters", key, v);
		text = patch ? json_dumps(patch, JSON_COMPACT) : NULL;
		json_decref(patch);
	} else {
		json_object_set_new(counters, key, json_integer(v));
		text = json_dumps(doc, JSON_COMPACT);
	}
	json_decref(doc);
	return text;
}

/* One round: 1 acknowledged, 0 not (counted in other), -1 the client failed. */
static int round_once(struct racer *w, struct put_patch_client *c)
{
	for (int t = 0; t < MAX_TRIES; t++) {
		struct put_patch_response rs, ws; /* ws apart: the write's If-Match points into rs */
		struct put_patch_request get = {"GET", w->id_path, NULL, NULL, NULL};
		w->requests++;
		if (put_patch_call(c, &get, &rs, w->err, sizeof(w->err)) < 0)
			return -1;
		char *body = rs.status == 200 ? next_write(w, rs.body) : NULL;
		if (!body)
			return 0;
		bool patch = w->mode == PP_RACE_PATCH;
		struct put_patch_request put = {patch ? "PATCH" : "PUT", w->id_path,
		                                patch ? PP_MERGE_PATCH : "application/json",
		                                w->mode == PP_RACE_IF_MATCH ? rs.etag : NULL, body};
		w->requests++;
		int rc = put_patch_call(c, &put, &ws, w->err, sizeof(w->err));
		free(body);
		if (rc < 0)
			return -1;
		if (ws.status == 200)
			return 1;
		if (ws.status != PP_STATUS_PRECONDITION_FAILED || w->mode != PP_RACE_IF_MATCH)
			return 0;
		w->conflicts++;
	}
	return 0;
}

static void *racer_main(void *arg)
{
	struct racer *w = arg;
	struct put_patch_client *c = put_patch_client_new(w->port, w->err, sizeof(w->err));
	for (int r = 0; c && r < w->rounds && !lab_interrupted(); r++) {
		int got = round_once(w, c);
		if (got < 0)
			break;
		w->acked += got == 1;
		w->other += got == 0;
	}
	put_patch_client_free(c);
	return NULL;
}

/* The sum of the racers' counters as PostgreSQL holds them. */
static int stored(PGconn *db, long long id, int clients, uint64_t *sum, char *err, size_t errlen)
{
	char digest[65], rep[PUT_PATCH_BODY_LEN];
	if (pp_row_on(db, id, digest, rep, sizeof(rep), err, errlen) < 0)
		return -1;
	json_t *doc = json_loads(rep, 0, NULL);
	json_t *counters = json_object_get(doc, "counters");
	*sum = 0;
	for (int i = 0; i < clients; i++) {
		char key[16];
		snprintf(key, sizeof(key), "c%d", i);
		*sum += (uint64_t)json_integer_value(json_object_get(counters, key));
	}
	json_decref(doc);
	return 0;
}

static int race_mode(const struct put_patch_config *cfg, PGconn *db, int port, int mode,
                     struct put_patch_race_row *row, char *err, size_t errlen)
{
	long long id = RACE_ID + mode;
	struct racer w[PUT_PATCH_MAX_CLIENTS];
	int n = cfg->race_clients < PUT_PATCH_MAX_CLIENTS ? cfg->race_clients : PUT_PATCH_MAX_CLIENTS;
	memset(row, 0, sizeof(*row));
	row->what = MODE_NAMES[mode];
	row->clients = n;
	row->rounds = cfg->race_rounds;
	if (pp_seed_on(db, id, "{\"name\":\"Race\",\"email\":\"race@example.com\",\"tags\":[],\"visits\":0}",
	               err, errlen) < 0)
		return -1;
	uint64_t t0 = hist_now_us();
	int started = 0;
	for (; started < n; started++) {
		w[started] = (struct racer){
		        .port = port, .index = started, .mode = mode, .rounds = cfg->race_rounds};
		snprintf(w[started].id_path, sizeof(w[started].id_path), USERS_PREFIX "%lld", id);
		if (pthread_create(&w[started].thread, NULL, racer_main, &w[started]) != 0)
			break;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(w[i].thread, NULL);
		row->requests += w[i].requests;
		row->acked += w[i].acked;
		row->conflicts += w[i].conflicts;
		row->other += w[i].other;
		if (w[i].err[0] && !err[0])
			snprintf(err, errlen, "client %d: %s", i, w[i].err);
	}
	row->elapsed_s = (double)(hist_now_us() - t0) / 1e6;
	if (started < n) {
		snprintf(err, errlen, "cannot start client thread %d", started);
		return -1;
	}
	if (err[0] || lab_interrupted())
		return -1;
	if (stored(db, id, n, &row->stored, err, errlen) < 0)
		return -1;
	row->lost = (int64_t)row->acked - (int64_t)row->stored;
	return 0;
}

int put_patch_phase_race(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct put_patch_config *cfg = cfgv;
	struct put_patch_result *r = result;
	memset(&r->race, 0, sizeof(r->race));
	/* every connection open from the start: the clients race on the row, not on the pool */
	struct put_patch_config c = *cfg;
	c.pool_min_idle = c.pool_size;
	struct put_patch_api *api = pp_phase_api(&c, false, err, errlen);
	PGconn *db = api ? pg_connect(cfg->pg_url, err, errlen) : NULL;
	int ret = db ? 0 : -1;
	for (int m = 0; ret == 0 && m < PUT_PATCH_RACE_ROWS; m++) {
		pp_progress(cfg, "racing", (double)m / PUT_PATCH_RACE_ROWS);
		err[0] = '\0';
		ret = race_mode(cfg, db, put_patch_api_port(api), m, &r->race.rows[m], err, errlen);
		r->race.nrows = ret == 0 ? m + 1 : m;
	}
	PQfinish(db);
	put_patch_api_stop(api);
	return ret < 0 ? pp_lost(cfg, r, err, errlen) : 0;
}

/* --predict: which ways of writing lost increments (PostgreSQL holds fewer than were answered 2xx) */
static double q_race_given(const void *cfgv, int i)
{
	const struct put_patch_config *cfg = cfgv;
	return i == 0 ? cfg->race_clients : cfg->race_rounds;
}

static double q_race_measured(const void *cfg, const void *result)
{
	(void)cfg;
	const struct put_patch_race *r = &((const struct put_patch_result *)result)->race;
	if (r->nrows != PUT_PATCH_RACE_ROWS)
		return NAN;
	bool blind = r->rows[PP_RACE_BLIND].lost > 0, if_match = r->rows[PP_RACE_IF_MATCH].lost > 0;
	bool patch = r->rows[PP_RACE_PATCH].lost > 0;
	if (blind && !if_match && !patch)
		return 0;
	if (blind && !if_match && patch)
		return 1;
	if (blind && if_match && patch)
		return 2;
	return !blind && !if_match && !patch ? 3 : NAN;
}

const struct lab_question pp_q_race = {
        .text = "{} clients x {} rounds each: GET the user, add one to my own counter, write it back. "
                "Three ways: a blind PUT, a PUT with If-Match (re-read on 412), a merge PATCH of my "
                "counter. Which lose increments?",
        .given = q_race_given,
        .kind = LAB_ANSWER_CHOICE,
        .choices = {"the blind PUT only", "the blind PUT and the PATCH", "all three", "none of them"},
        .measured = q_race_measured,
        .why = "a blind PUT writes back the others' counters as it read them; If-Match turns that into "
               "a 412 and a re-read; the PATCH names my counter only and the server merges it under "
               "the row lock"};
