/*
 * test_idempotency.c — lab-idempotency's claims, counted in the real PostgreSQL.
 * needs: postgres redis
 *
 * The run is asserted through its judge (the verdict must be demonstrated) and the counts behind
 * it: charges and cents in PostgreSQL, status codes, bodies byte for byte. The API's edges (raw
 * header bytes, test knobs, the stop order, the Redis URL, Redis lost mid-phase) have tests of
 * their own. Nothing asserts how fast anything is: the bounds only catch a hang. The run test
 * drops schema lab_idempotency: the tests that need it come before. The program run as a user
 * runs it (Ctrl-C, Redis unreachable) is test_idempotency_program.c's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"
#include "upstream.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "hist.h"
#include "idempotency.h"
#include "pg.h"
#include "proxy.h"
#include "redis.h"

#define BODY "{\"amount\": 1999, \"currency\": \"eur\", \"customer\": \"cus_eve\"}"

/* The config every test starts from, and one API on it (knobs off, no Redis: as --serve runs it)
 * that the tests of plain requests share. */
struct group {
	struct idempotency_config cfg; /* first: tests read *state as the config */
	struct idempotency_api *api;
	int port;
};

static int shared_port(void **state)
{
	return ((struct group *)*state)->port;
}

static int group_setup(void **state)
{
	static struct group g;
	char err[512], url[256], app[64];
	/* the API's connections carry it: the test counts and kills its own paused requests only */
	snprintf(app, sizeof(app), "test_idempotency:%d", (int)getpid());
	pg_set_application_name(app);
	idempotency_config_default(&g.cfg, true);
	g.cfg.redis_url = redis_url_default();
	struct idempotency_config plain = g.cfg;
	plain.redis_url = NULL;
	if (idempotency_setup(&g.cfg, err, sizeof(err)) < 0 ||
	    !(g.api = idempotency_api_start(&plain, 0, err, sizeof(err)))) {
		pg_url_redact(g.cfg.pg_url, url, sizeof(url));
		fprintf(stderr,
		        "test_idempotency: cannot set up against %s: %s (start the servers: make up)\n", url,
		        err);
		return -1;
	}
	g.port = idempotency_api_port(g.api);
	*state = &g;
	return 0;
}

static int group_teardown(void **state)
{
	char err[512];
	struct group *g = *state;
	idempotency_api_stop(g->api);
	return idempotency_teardown(&g->cfg, err, sizeof(err)) < 0 ? -1 : 0;
}

static void unique_client(char *out, size_t len, const char *what)
{
	static int n;
	snprintf(out, len, "test-%s-%d-%d", what, (int)getpid(), ++n);
}

static void count(const struct idempotency_config *cfg, const char *client, int64_t *charges, int64_t *cents)
{
	char err[256];
	assert_int_equal(idempotency_count(cfg, client, charges, cents, err, sizeof(err)), 0);
}

static int64_t sql_int(const char *sql, const char *param)
{
	char err[512];
	int64_t v = -1;
	PGconn *conn = pg_connect(pg_url_default(), err, sizeof(err));
	if (!conn)
		fail_msg("%s", err);
	const char *p[] = {param};
	int rc = pg_query_int64(conn, sql, param ? 1 : 0, param ? p : NULL, &v, err, sizeof(err));
	PQfinish(conn);
	if (rc < 0)
		fail_msg("%s", err);
	return v;
}

/* This process's backends paused between charge and response (the X-Lab-Pause-Ms knob). */
#define PAUSED_HERE                                                                                          \
	"FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%between charge and response%'"        \
	" AND pid <> pg_backend_pid() AND application_name = $1"

static int64_t paused_backends(void)
{
	return sql_int("SELECT count(*) " PAUSED_HERE, pg_application_name());
}

static int64_t kill_paused_backends(void)
{
	return sql_int("SELECT count(pg_terminate_backend(pid)) " PAUSED_HERE, pg_application_name());
}

static void test_fingerprint_is_sha256_of_the_canonical_request(void **state)
{
	(void)state;
	char a[65], b[65], c[65], err[256];
#define FINGERPRINT(body, out) idempotency_fingerprint("POST", "/v1/charges", body, out, err, sizeof(err))
	assert_int_equal(
	        FINGERPRINT("{\"amount\": 1000, \"currency\": \"usd\", \"customer\": \"cus_bob\"}", a), 0);
	/* sha256("POST /v1/charges\n{\"amount\":1000,\"currency\":\"usd\",\"customer\":\"cus_bob\"}") */
	assert_string_equal(a, "a8ffea6ea16be9e1f539c8b6ade60ee899f7b9cab9e49c8e2117fd23e059b1e8");
	/* the same request, fields reordered and spaced otherwise: the same fingerprint */
	assert_int_equal(FINGERPRINT("{\"customer\":\"cus_bob\",  \"currency\":\"usd\",\"amount\":1000}", b),
	                 0);
	assert_string_equal(a, b);
	/* another amount is another request */
	assert_int_equal(
	        FINGERPRINT("{\"amount\": 5000, \"currency\": \"usd\", \"customer\": \"cus_bob\"}", c), 0);
	assert_string_not_equal(a, c);
	assert_int_equal(FINGERPRINT("{\"amount\": ", c), -1);
#undef FINGERPRINT
}

static void test_status_codes_replay_header_and_byte_identical_body(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	kill_paused_backends(); /* a test that failed before this one may have left one */
	char err[512], client[64];
	cfg.redis_url = NULL;
	cfg.test_knobs = true; /* the in-flight request below pauses */
	unique_client(client, sizeof(client), "codes");
	/* longer than the paused request below takes even on a busy machine: no retry takes it over */
	cfg.lock_timeout_ms = 5000;
	struct idempotency_api *api = idempotency_api_start(&cfg, 0, err, sizeof(err));
	if (!api)
		fail_msg("%s", err);
	int port = idempotency_api_port(api);
	struct idempotency_response first, again, rs;
	struct idempotency_request rq = {.client = client, .key = "\"k-1\"", .body = BODY};

	/* first: executed, 201, the window published */
	assert_int_equal(idempotency_call(port, &rq, &first, err, sizeof(err)), 0);
	assert_int_equal(first.status, 201);
	assert_false(first.replayed);
	assert_true(strstr(first.expires, " GMT") != NULL);
	/* retry: the stored response, byte for byte, marked as a replay */
	assert_int_equal(idempotency_call(port, &rq, &again, err, sizeof(err)), 0);
	assert_int_equal(again.status, 201);
	assert_true(again.replayed);
	assert_int_equal(again.body_len, first.body_len);
	assert_memory_equal(again.body, first.body, first.body_len);
	assert_string_equal(again.expires, first.expires);
	/* the key as a Structured Field string and bare is the same key */
	rq.key = "k-1";
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_true(rs.replayed);
	/* another payload with the same key: 422 */
	rq.body = "{\"amount\": 2999, \"currency\": \"eur\", \"customer\": \"cus_eve\"}";
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 422);
	/* no key where one is required: 400 */
	rq.key = NULL;
	rq.body = BODY;
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 400);
	/* while the first request with a key is in flight: 409; after it finished: the replay */
	rq.key = "k-2";
	rq.pause_ms = 1000;
	rq.timeout_ms = 100;
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 0);
	/* it holds its key once it is paused after its charge (a busy machine may take a while) */
	for (int i = 0; i < 200 && paused_backends() < 1; i++)
		usleep(5 * 1000);
	rq.pause_ms = 0;
	rq.timeout_ms = 0;
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 409);
	for (int i = 0; i < 100 && rs.status == 409; i++) {
		usleep(50 * 1000);
		assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	}
	assert_int_equal(rs.status, 201);
	assert_true(rs.replayed);
	idempotency_api_stop(api);
	int64_t charges, cents;
	count(&cfg, client, &charges, &cents);
	assert_int_equal(charges, 2);
	assert_int_equal(cents, 2 * 1999);
}

/*
 * A new key with nothing between the charge and its response is one transaction: the key row's
 * xmin (the transaction that wrote its version) is its charge's, and it holds, finished and
 * unlocked, the response the client got. With the card network in between (the pause knob) the
 * recovery point stays: the response is stored by a transaction of its own. Both bodies are the
 * compact JSON jansson writes (PostgreSQL builds them now).
 */
static void test_a_new_key_without_the_card_network_is_one_transaction(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	char err[512], client[64];
	cfg.redis_url = NULL;
	cfg.test_knobs = true;
	unique_client(client, sizeof(client), "onetx");
	struct idempotency_api *api = idempotency_api_start(&cfg, 0, err, sizeof(err));
	if (!api)
		fail_msg("%s", err);
	const char *keys[2] = {"fast", "paused"};
	struct idempotency_response rs[2];
	for (int i = 0; i < 2; i++) {
		struct idempotency_request rq = {
		        .client = client, .key = keys[i], .body = BODY, .pause_ms = 50 * i};
		assert_int_equal(idempotency_call(idempotency_api_port(api), &rq, &rs[i], err, sizeof(err)),
		                 0);
		assert_int_equal(rs[i].status, 201);
	}
	idempotency_api_stop(api);
	PGconn *conn = pg_connect(pg_url_default(), err, sizeof(err));
	if (!conn)
		fail_msg("%s", err);
	for (int i = 0; i < 2; i++) {
		const char *p[] = {client, keys[i]};
		PGresult *res = pg_query(
		        conn,
		        "SELECT k.xmin = c.xmin, k.response_body FROM lab_idempotency.idempotency_keys k"
		        " JOIN lab_idempotency.charges c ON c.idempotency_key_id = k.id WHERE k.client = $1"
		        " AND k.key = $2 AND k.recovery_point = 'finished' AND k.locked_at IS NULL",
		        2, p, err, sizeof(err));
		if (!res || PQntuples(res) != 1)
			fail_msg("key %s: %s", keys[i],
			         res ? "not one finished, unlocked key with its charge" : err);
		assert_string_equal(PQgetvalue(res, 0, 0), i == 0 ? "t" : "f");
		assert_string_equal(PQgetvalue(res, 0, 1), rs[i].body);
		json_t *doc = json_loads(rs[i].body, 0, NULL);
		char *compact = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
		assert_non_null(compact);
		assert_string_equal(compact, rs[i].body);
		free(compact);
		json_decref(doc);
		PQclear(res);
	}
	PQfinish(conn);
}

static void test_bad_input_gets_400_and_writes_nothing(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	char err[512], client[64];
	unique_client(client, sizeof(client), "bad");
	int port = shared_port(state);
	char key256[257], key255[256];
	memset(key256, 'k', 256);
	key256[256] = '\0';
	memset(key255, 'k', 255);
	key255[255] = '\0';
	/* over max_body (4 KiB) yet valid JSON */
	size_t big_len = (size_t)cfg.max_body + 100;
	char *big = malloc(big_len + 80);
	assert_non_null(big);
	int n = snprintf(big, big_len + 80, "{\"amount\": 100, \"currency\": \"usd\", \"customer\": \"");
	memset(big + n, 'x', big_len);
	strcpy(big + n + big_len, "\"}");
	struct {
		const char *key, *body;
	} bad[] = {
	        {"bad-1", "{\"amount\": 100, \"currency\": \"usd\", "}, /* malformed JSON */
	        {"bad-2", big},                                         /* oversized body */
	        {key256, BODY},                                         /* over-long key */
	        {"", BODY},                                             /* empty key */
	        {"bad\001key", BODY},                                   /* a control character */
	        {"bad-3",
	         "{\"amount\": \"100\", \"currency\": \"usd\", \"customer\": \"c\"}"}, /* a string amount */
	        {"bad-4", "{\"amount\": 0, \"currency\": \"usd\", \"customer\": \"c\"}"}, /* zero */
	        {"bad-5",
	         "{\"amount\": 1.5, \"currency\": \"usd\", \"customer\": \"c\"}"}, /* fractional cents */
	        {"bad-6",
	         "{\"amount\": 100, \"currency\": \"USD\", \"customer\": \"c\"}"}, /* not lower case */
	        {"bad-7",
	         "{\"amount\": 100, \"currency\": \"usd\", \"customer\": \"c\", \"x\": 1}"}, /* unknown */
	        {"bad-8",
	         "{\"amount\": 100, \"amount\": 100000, \"currency\": \"usd\", \"customer\": \"c\"}"},
	        {"bad-9", "[1, 2]"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct idempotency_request rq = {.client = client, .key = bad[i].key, .body = bad[i].body};
		struct idempotency_response rs;
		assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
		if (rs.status != 400)
			fail_msg("bad request %zu got %d: %s", i, rs.status, rs.body);
		assert_non_null(strstr(rs.body, "\"error\""));
	}
	free(big);
	int64_t charges, cents, keys;
	count(&cfg, client, &charges, &cents);
	assert_int_equal(charges, 0);
	assert_int_equal(idempotency_count_keys(&cfg, client, &keys, err, sizeof(err)), 0);
	assert_int_equal(keys, 0);
	/* the longest key allowed is accepted */
	struct idempotency_request rq = {.client = client, .key = key255, .body = BODY};
	struct idempotency_response rs;
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 201);
	count(&cfg, client, &charges, &cents);
	assert_int_equal(charges, 1);
}

/*
 * POST /v1/charges of BODY with the given header lines (each ending in \r\n, NUL bytes and all),
 * as raw bytes to 127.0.0.1:port; reads the answer (http_exchange).
 * Returns its status, 0 when none came; *replayed: it was marked Idempotent-Replayed.
 */
static int raw_charge(int port, const char *client, const char *headers, size_t headers_len, bool *replayed)
{
	char buf[4096];
	int n = snprintf(
	        buf, sizeof(buf),
	        "POST /v1/charges HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Client-Id: %s\r\n"
	        "Content-Type: application/json\r\nContent-Length: %zu\r\n",
	        client, strlen(BODY));
	assert_true(n > 0 && (size_t)n + headers_len + 2 + strlen(BODY) < sizeof(buf));
	memcpy(buf + n, headers, headers_len);
	size_t len = (size_t)n + headers_len;
	memcpy(buf + len, "\r\n" BODY, 2 + strlen(BODY));
	len += 2 + strlen(BODY);
	char resp[4096];
	int status = http_exchange(port, buf, len, resp, sizeof(resp));
	*replayed = strcasestr(resp, "Idempotent-Replayed: true") != NULL;
	return status;
}

static void test_two_idempotency_keys_get_400_and_charge_nothing(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	char err[512], client[64];
	unique_client(client, sizeof(client), "twokeys");
	static const char two[] = "Idempotency-Key: first\r\nIdempotency-Key: second\r\n";
	static const char two_cased[] = "Idempotency-Key: first\r\nidempotency-key: first\r\n";
	bool replayed;
	assert_int_equal(raw_charge(shared_port(state), client, two, sizeof(two) - 1, &replayed), 400);
	assert_int_equal(raw_charge(shared_port(state), client, two_cased, sizeof(two_cased) - 1, &replayed),
	                 400);
	int64_t charges, cents, keys;
	count(&cfg, client, &charges, &cents);
	assert_int_equal(charges, 0);
	assert_int_equal(idempotency_count_keys(&cfg, client, &keys, err, sizeof(err)), 0);
	assert_int_equal(keys, 0);
}

/*
 * "zz\0first" and "zz\0second-different" are two keys, or two bad requests: never the same key
 * "zz" with the second replaying the first. evhttp cuts a header value at a NUL before a handler
 * sees it, so the refusal belongs to the server (common/http.c).
 */
static void test_a_nul_in_the_key_never_makes_two_keys_one(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	char client[64];
	unique_client(client, sizeof(client), "nul");
	static const char first[] = "Idempotency-Key: zz\0first\r\n";
	static const char second[] = "Idempotency-Key: zz\0second-different\r\n";
	bool replayed1, replayed2;
	int s1 = raw_charge(shared_port(state), client, first, sizeof(first) - 1, &replayed1);
	int s2 = raw_charge(shared_port(state), client, second, sizeof(second) - 1, &replayed2);
	int64_t charges, cents;
	count(&cfg, client, &charges, &cents);
	print_message("zz\\0first: %d, zz\\0second-different: %d%s; %lld charges\n", s1, s2,
	              replayed2 ? " replayed" : "", (long long)charges);
	assert_false(replayed2);
	assert_int_equal(s1, 400);
	assert_int_equal(s2, 400);
	assert_int_equal(charges, 0);
}

static void test_test_knobs_are_ignored_unless_the_config_turns_them_on(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	kill_paused_backends(); /* a test that failed before this one may have left one */
	char err[512], client[64];
	assert_false(cfg.test_knobs); /* the default, as --serve runs it */
	unique_client(client, sizeof(client), "knobs");
	/* honoured, the pause would hold the answer 3 s, past the client's 1 s */
	struct idempotency_request rq = {.client = client,
	                                 .key = "k",
	                                 .body = BODY,
	                                 .pause_ms = 3000,
	                                 .delay_ms = 3000,
	                                 .timeout_ms = 1000};
	struct idempotency_response rs;
	assert_int_equal(idempotency_call(shared_port(state), &rq, &rs, err, sizeof(err)), 0);
	/* answered in time: neither knob held it (a pause would have parked a backend in pg_sleep) */
	assert_int_equal(rs.status, 201);
}

static void test_completer_finishes_a_dead_request_and_the_late_retry_gets_the_replay(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	kill_paused_backends(); /* a test that failed before this one may have left one */
	char err[512], client[64];
	cfg.redis_url = NULL;
	cfg.test_knobs = true;
	cfg.complete_interval_ms = 100; /* the API's own completer, often */
	unique_client(client, sizeof(client), "completer");
	/* well past the kill below even on a busy machine, so the first completer pass must skip it */
	cfg.lock_timeout_ms = 1000;
	struct idempotency_api *api = idempotency_api_start(&cfg, 0, err, sizeof(err));
	assert_non_null(api);
	int port = idempotency_api_port(api);
	struct idempotency_request rq = {
	        .client = client, .key = "late", .body = BODY, .pause_ms = 5000, .timeout_ms = 200};
	struct idempotency_response rs;
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 0);
	/* kill the request between its charge and its response */
	int64_t killed = 0;
	for (int i = 0; i < 500 && !killed; i++) {
		killed = kill_paused_backends();
		if (!killed)
			usleep(10 * 1000);
	}
	assert_int_equal(killed, 1);
	/* before the lock timeout the completer leaves it alone (a retry may be resuming it) */
	int64_t completed = -1;
	assert_int_equal(idempotency_complete(&cfg, &completed, err, sizeof(err)), 0);
	assert_int_equal(completed, 0);
	/* past it, the API's completer stores the response built from the charge */
	static const char finished[] = "SELECT count(*) FROM lab_idempotency.idempotency_keys"
	                               " WHERE client = $1 AND recovery_point = 'finished'";
	int64_t done = 0;
	for (int i = 0; i < 100 && !done; i++) {
		usleep(50 * 1000);
		done = sql_int(finished, client);
	}
	assert_int_equal(done, 1);
	/* the client comes back later: the stored answer, not a second charge */
	rq.pause_ms = 0;
	rq.timeout_ms = 0;
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 201);
	assert_true(rs.replayed);
	idempotency_api_stop(api);
	int64_t charges, cents;
	count(&cfg, client, &charges, &cents);
	assert_int_equal(charges, 1);
	assert_int_equal(cents, 1999);
}

static void test_reaper_deletes_keys_past_the_window(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	char err[512], client[64];
	unique_client(client, sizeof(client), "reaper");
	int port = shared_port(state);
	struct idempotency_request rq = {.client = client, .key = "old", .body = BODY};
	struct idempotency_response rs;
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 201);
	rq.key = "new";
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 201);
	/* age one key past the 24 h window, as a day passing would */
	int64_t aged =
	        sql_int("WITH u AS (UPDATE lab_idempotency.idempotency_keys SET created_at = created_at - "
	                "interval '25 hours' WHERE client = $1 AND key = 'old' RETURNING 1)"
	                " SELECT count(*) FROM u",
	                client);
	assert_int_equal(aged, 1);
	int64_t deleted = -1, keys = -1;
	assert_int_equal(idempotency_reap(&cfg, &deleted, err, sizeof(err)), 0);
	assert_int_equal(deleted, 1);
	assert_int_equal(idempotency_count_keys(&cfg, client, &keys, err, sizeof(err)), 0);
	assert_int_equal(keys, 1);
	/* the young key still replays; the reaped one is a new request (the window was published) */
	rq.key = "new";
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_true(rs.replayed);
	rq.key = "old";
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 201);
	assert_false(rs.replayed);
	int64_t charges, cents;
	count(&cfg, client, &charges, &cents);
	assert_int_equal(charges, 3);
}

/* A request sent from a thread of its own, to be in flight when the API stops. */
struct inflight {
	pthread_t thread;
	int port;
	struct idempotency_request rq;
	struct idempotency_response rs;
};

static void *inflight_main(void *arg)
{
	struct inflight *f = arg;
	char err[256];
	if (idempotency_call(f->port, &f->rq, &f->rs, err, sizeof(err)) < 0)
		f->rs.status = -1;
	return NULL;
}

static void test_stop_with_requests_in_flight_frees_them_and_charges_no_more(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	kill_paused_backends(); /* a test that failed before this one may have left one */
	char err[512], client[64];
	cfg.redis_url = NULL;
	cfg.test_knobs = true;
	cfg.pool_size = cfg.pool_min_idle = 1; /* one connection: the second request waits for it */
	unique_client(client, sizeof(client), "stop");
	struct idempotency_api *api = idempotency_api_start(&cfg, 0, err, sizeof(err));
	assert_non_null(api);
	/* far past the test: a request still waiting when the API stops was not answered by a timeout */
	enum { CLIENT_TIMEOUT_MS = 4000 };
	static struct inflight a, b; /* the threads write into them: outside the test's frame */
	a = (struct inflight){.port = idempotency_api_port(api),
	                      .rq = {.client = client,
	                             .key = "a",
	                             .body = BODY,
	                             .pause_ms = 8000,
	                             .timeout_ms = CLIENT_TIMEOUT_MS}};
	b = a;
	b.rq.key = "b";
	b.rq.pause_ms = 0;
	/* a: charged, then parked mid-query in pg_sleep, holding the only connection */
	/* nothing is asserted until both threads are joined: a failure must not leave them running */
	int started_a = pthread_create(&a.thread, NULL, inflight_main, &a);
	int64_t paused = 0;
	for (int i = 0; started_a == 0 && i < 500 && (paused = paused_backends()) < 1; i++)
		usleep(10 * 1000);
	/* b: waits in the pool's queue */
	int started_b = pthread_create(&b.thread, NULL, inflight_main, &b);
	usleep(200 * 1000);
	idempotency_api_stop(api);
	if (started_a == 0)
		pthread_join(a.thread, NULL);
	if (started_b == 0)
		pthread_join(b.thread, NULL);
	assert_int_equal(started_a, 0);
	assert_int_equal(started_b, 0);
	assert_int_equal(paused, 1);
	print_message("in flight at the stop: a got %d after %llu ms, b got %d after %llu ms\n", a.rs.status,
	              (unsigned long long)a.rs.latency_us / 1000, b.rs.status,
	              (unsigned long long)b.rs.latency_us / 1000);
	/* the backend of a sleeps on in the server: end it, so no later kill takes it for its own */
	kill_paused_backends();
	/* each answered 503 with Retry-After (a client retries with its key and gets the stored answer),
	 * not left to its timeout nor to a closed connection */
	assert_int_equal(a.rs.status, 503);
	assert_int_equal(b.rs.status, 503);
	assert_non_null(strstr(a.rs.body, "shutting down"));
	int64_t charges, cents;
	count(&cfg, client, &charges, &cents);
	assert_int_equal(charges, 1); /* a's, committed before its pause; b never reached the database */
}

/* The lab's Redis URL, user, password and database kept, with 127.0.0.1:port for its host. */
static void redis_url_via(char *out, size_t len, const char *url, int port)
{
	char err[256];
	if (redis_url_with_endpoint(url, "127.0.0.1", port, out, len, err, sizeof(err)) < 0)
		fail_msg("%s", err);
}

#define ACL_PASSWORD     "p@ss:w/rd%"
#define ACL_PASSWORD_URL "p%40ss%3Aw%2Frd%25"
#define ACL_DB           7

static void test_redis_url_user_password_and_database_reach_redis(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	char err[512], client[64], url[512], user[64];
	/* not a redis:// URL: the API does not start, and says why */
	cfg.redis_url = "127.0.0.1:56379";
	assert_null(idempotency_api_start(&cfg, 0, err, sizeof(err)));
	print_message("127.0.0.1:56379: %s\n", err);
	/* a user of its own with a password that must be percent-encoded, in a database of its own */
	redisContext *admin = redis_connect_url(redis_url_default(), 2000, err, sizeof(err));
	assert_non_null(admin);
	snprintf(user, sizeof(user), "lab-idempotency-test-%d", (int)getpid());
	redisReply *r =
	        redis_cmd(admin, err, sizeof(err),
	                  "ACL SETUSER %s reset on >%s ~lab:idempotency:* +ping +select +set +get +del", user,
	                  ACL_PASSWORD);
	if (!r) {
		redisFree(admin);
		print_message("skipped: ACL SETUSER refused: %s\n", err);
		skip();
	}
	freeReplyObject(r);
	struct redis_url u;
	assert_int_equal(redis_url_parse(redis_url_default(), &u, err, sizeof(err)), 0);
	char userinfo[128];
	snprintf(userinfo, sizeof(userinfo), "%s:%s", user, ACL_PASSWORD_URL);
	snprintf(url, sizeof(url), "redis://%s@%s:%d/%d", userinfo, u.host, u.port, ACL_DB);
	cfg.redis_url = url;
	unique_client(client, sizeof(client), "acl");
	struct idempotency_api *api = idempotency_api_start(&cfg, 0, err, sizeof(err));
	if (!api)
		print_message("the API did not start: %s\n", err);
	struct idempotency_response rs = {0};
	struct idempotency_request rq = {
	        .path = "/v1/charges-redis", .client = client, .key = "k", .body = BODY};
	if (api && idempotency_call(idempotency_api_port(api), &rq, &rs, err, sizeof(err)) < 0)
		print_message("the request was not sent: %s\n", err);
	/* while it runs: its connection is the test's user's, on the URL's database */
	char want_user[96], want_db[32];
	snprintf(want_user, sizeof(want_user), " user=%s ", user);
	snprintf(want_db, sizeof(want_db), " db=%d ", ACL_DB);
	bool seen = false;
	r = redis_cmd(admin, err, sizeof(err), "CLIENT LIST");
	for (char *line = r ? strtok(r->str, "\n") : NULL; line; line = strtok(NULL, "\n"))
		seen = seen || (strstr(line, want_user) && strstr(line, want_db));
	if (r)
		freeReplyObject(r);
	idempotency_api_stop(api);
	/* the key landed in that database; then the test's traces go */
	int64_t exists = -1;
	if ((r = redis_cmd(admin, err, sizeof(err), "SELECT %d", ACL_DB)))
		freeReplyObject(r);
	if ((r = redis_cmd(admin, err, sizeof(err), "DEL lab:idempotency:%s:k", client)))
		exists = r->integer, freeReplyObject(r);
	if ((r = redis_cmd(admin, err, sizeof(err), "ACL DELUSER %s", user)))
		freeReplyObject(r);
	redisFree(admin);
	redis_url_free(&u);
	assert_non_null(api);
	assert_int_equal(rs.status, 201);
	assert_true(seen);
	assert_int_equal(exists, 1);
}

/* The guard's progress: from the second row on, Redis is gone (cut, and refusing). */
static void cut_after_first_row(const char *what, double done, void *arg)
{
	(void)what;
	if (done > 0) {
		proxy_refuse(arg, true);
		proxy_cut(arg);
	}
}

/* the old guard polled pg_stat_activity for 5 s for requests that never reached PostgreSQL */
#define LOST_BOUND_MS 3000

static void test_redis_lost_mid_phase_ends_it_at_once_naming_redis(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	char err[512], url[512];
	struct redis_url u;
	assert_int_equal(redis_url_parse(redis_url_default(), &u, err, sizeof(err)), 0);
	struct proxy_config pc = {.upstream_host = u.host, .upstream_port = u.port};
	struct proxy *p = proxy_start(&pc, err, sizeof(err));
	redis_url_free(&u);
	assert_non_null(p);
	redis_url_via(url, sizeof(url), redis_url_default(), proxy_port(p));
	cfg.redis_url = url;
	cfg.progress_cb = cut_after_first_row;
	cfg.progress_arg = p;
	struct idempotency_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	uint64_t t0 = hist_now_us();
	int rc = idempotency_phase_guard(&cfg, r, err, sizeof(err));
	uint64_t took_ms = (hist_now_us() - t0) / 1000;
	proxy_free(p);
	print_message("lost %s after %llu ms: %s\n",
	              idempotency_server_name(r->lost) ? idempotency_server_name(r->lost) : "nothing",
	              (unsigned long long)took_ms, err);
	assert_int_equal(rc, -1);
	assert_int_equal(r->lost, IDEMPOTENCY_SERVER_REDIS);
	/* the cut came after the first row's first attempt, before the next one's */
	assert_int_equal(r->guard.rows[3].nattempts, 1);
	assert_int_equal(r->guard.rows[4].nattempts, 1);
	assert_int_equal(r->guard.rows[4].statuses[0], 503);
	assert_true(took_ms < LOST_BOUND_MS);
	/* nothing is left paused in pg_sleep, and no fault stays set up */
	assert_int_equal(paused_backends(), 0);
	assert_int_equal(sql_int("SELECT count(*) FROM pg_constraint WHERE conname = 'outage'"
	                         " AND conrelid = $1::regclass",
	                         "lab_idempotency.charges"),
	                 0);
	free(r);
}

static void test_run_demonstrates_the_claim_and_the_counts_agree(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	char err[512];
	/* small: the claims hold at any size, and the lab's own run shows the large one */
	cfg.duplicates = 8;
	cfg.mixed_keys = 6;
	cfg.mixed_requests = 40;
	cfg.mixed_clients = 4;
	cfg.slow_ms = 300; /* still past the client's 200 ms */
	struct idempotency_result *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	struct lab_answers answers = {0};
	cfg.hooks = lab_answers_hooks(&answers, &cfg, r);
	if (idempotency_run(&cfg, r, err, sizeof(err)) < 0)
		fail_msg("the run failed: %s", err);
	struct lab_verdict v;
	idempotency_judge(r, &v);
	print_message("%s\n", v.evidence);
	assert_true(v.demonstrated);
	/* phases 1 and 2: two charges without a key, one with it, the retry replayed byte for byte */
	assert_int_equal(r->no_key.charges, 2);
	assert_int_equal(r->no_key.cents, 2 * r->no_key.expected_cents);
	assert_int_equal(r->with_key.charges, 1);
	assert_true(r->with_key.attempts[1].rs.replayed && r->with_key.bodies_identical);
	/* phase 3: one charge for the key sent at once by every client; one per key under the load, which
	 * really had lost answers and duplicates */
	const struct idempotency_load *s = &r->duplicates.same_instant, *m = &r->duplicates.mixed;
	assert_int_equal(s->fresh, 1);
	assert_int_equal(s->fresh + s->replayed + s->conflict, (uint64_t)cfg.duplicates);
	assert_int_equal(s->charges, 1);
	assert_true(m->no_response > 0 && m->replayed > 0);
	assert_int_equal(m->other, 0);
	assert_int_equal(m->charges, cfg.mixed_keys);
	assert_int_equal(m->cents, m->expected_cents);
	/* phase 4: 422 and 400s, one charge */
	assert_int_equal(r->mismatch.attempts[1].rs.status, 422);
	assert_int_equal(r->mismatch.charges, 1);
	/* phase 5: killed at charge_created, resumed once */
	assert_string_equal(r->crash.recovery_point, "charge_created");
	assert_true(r->crash.killed_pid > 0);
	assert_int_equal(r->crash.charges, 1);
	/* phase 6: rows refused x {pg, keep, release}, then killed x {pg, keep, release} */
	assert_int_equal(r->guard.nrows, 6);
	assert_int_equal(r->guard.rows[0].charges, 1);
	assert_int_equal(r->guard.rows[3].charges, 1);
	assert_int_equal(r->guard.rows[1].charges, 0);
	assert_int_equal(r->guard.rows[5].charges, 2);
	assert_true(r->guard.redis_keys_deleted > 0);
	/* every phase asked its --predict question, answered by these very numbers: 2 charges, then 1;
	 * the 409s of the duplicates; 422 (b); charge_created (b); the key in PostgreSQL (c) */
	lab_assert_every_phase_asks(&answers, IDEMPOTENCY_PHASES);
	assert_true(lab_answer(&answers, "no_key") == 2);
	assert_true(lab_answer(&answers, "with_key") == 1);
	assert_true(lab_answer(&answers, "duplicates") == (double)s->conflict);
	assert_true(lab_answer(&answers, "mismatch") == 1);
	assert_true(lab_answer(&answers, "crash") == 1);
	assert_true(lab_answer(&answers, "redis_guard") == 2);
	free(r);
	/* the run tore down what it made */
	lab_assert_nothing_left("lab_idempotency", "lab:idempotency:");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_fingerprint_is_sha256_of_the_canonical_request),
	        cmocka_unit_test(test_status_codes_replay_header_and_byte_identical_body),
	        cmocka_unit_test(test_a_new_key_without_the_card_network_is_one_transaction),
	        cmocka_unit_test(test_bad_input_gets_400_and_writes_nothing),
	        cmocka_unit_test(test_two_idempotency_keys_get_400_and_charge_nothing),
	        cmocka_unit_test(test_a_nul_in_the_key_never_makes_two_keys_one),
	        cmocka_unit_test(test_test_knobs_are_ignored_unless_the_config_turns_them_on),
	        cmocka_unit_test(test_completer_finishes_a_dead_request_and_the_late_retry_gets_the_replay),
	        cmocka_unit_test(test_reaper_deletes_keys_past_the_window),
	        cmocka_unit_test(test_stop_with_requests_in_flight_frees_them_and_charges_no_more),
	        cmocka_unit_test(test_redis_url_user_password_and_database_reach_redis),
	        cmocka_unit_test(test_redis_lost_mid_phase_ends_it_at_once_naming_redis),
	        /* drops the group's schema: the tests above need it */
	        cmocka_unit_test(test_run_demonstrates_the_claim_and_the_counts_agree),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
