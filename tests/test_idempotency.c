/*
 * test_idempotency.c — lab-idempotency's claims, counted in the real PostgreSQL.
 * needs: postgres redis
 *
 * Every claim is a count of charges (SELECT count(*), sum(amount_cents)) or a status code and a
 * body compared byte for byte; nothing asserts a time. The waits inside (client timeouts, the lock
 * timeout) are orderings the API enforces, with margins of hundreds of milliseconds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lab_run.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "idempotency.h"
#include "pg.h"
#include "redis.h"

static int group_setup(void **state)
{
	static struct idempotency_config cfg;
	char err[512];
	idempotency_config_default(&cfg, true);
	cfg.redis_url = redis_url_default();
	if (idempotency_setup(&cfg, err, sizeof(err)) < 0) {
		fprintf(stderr,
		        "test_idempotency: cannot set up against %s: %s (start the servers: make up)\n",
		        cfg.pg_url, err);
		return -1;
	}
	*state = &cfg;
	return 0;
}

static int group_teardown(void **state)
{
	char err[512];
	return idempotency_teardown(*state, err, sizeof(err)) < 0 ? -1 : 0;
}

static void test_fingerprint_is_sha256_of_the_canonical_request(void **state)
{
	(void)state;
	char a[65], b[65], c[65], err[256];
	assert_int_equal(idempotency_fingerprint(
	                         "POST", "/v1/charges",
	                         "{\"amount\": 1000, \"currency\": \"usd\", \"customer\": \"cus_bob\"}", a,
	                         err, sizeof(err)),
	                 0);
	/* sha256("POST /v1/charges\n{\"amount\":1000,\"currency\":\"usd\",\"customer\":\"cus_bob\"}") */
	assert_string_equal(a, "a8ffea6ea16be9e1f539c8b6ade60ee899f7b9cab9e49c8e2117fd23e059b1e8");
	/* the same request, fields reordered and spaced otherwise: the same fingerprint */
	assert_int_equal(
	        idempotency_fingerprint("POST", "/v1/charges",
	                                "{\"customer\":\"cus_bob\",  \"currency\":\"usd\",\"amount\":1000}",
	                                b, err, sizeof(err)),
	        0);
	assert_string_equal(a, b);
	/* another amount is another request */
	assert_int_equal(idempotency_fingerprint(
	                         "POST", "/v1/charges",
	                         "{\"amount\": 5000, \"currency\": \"usd\", \"customer\": \"cus_bob\"}", c,
	                         err, sizeof(err)),
	                 0);
	assert_string_not_equal(a, c);
	assert_int_equal(idempotency_fingerprint("POST", "/v1/charges", "{\"amount\": ", c, err, sizeof(err)),
	                 -1);
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

static void test_exactly_once_over_hundreds_of_requests_with_retries_and_duplicates(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	struct idempotency_load r;
	char client[64], err[512];
	cfg.mixed_keys = 30;
	cfg.mixed_requests = 300;
	cfg.mixed_clients = 8;
	unique_client(client, sizeof(client), "exactly-once");
	assert_int_equal(idempotency_mixed_run(&cfg, client, &r, err, sizeof(err)), 0);
	print_message(
	        "%d requests over %d keys: %llu new, %llu replayed, %llu 409, %llu lost answers, %llu other, "
	        "%llu retries after; %lld charges, %lld of %lld cents\n",
	        r.requests, r.keys, (unsigned long long)r.fresh, (unsigned long long)r.replayed,
	        (unsigned long long)r.conflict, (unsigned long long)r.no_response,
	        (unsigned long long)r.other, (unsigned long long)r.settle_requests, (long long)r.charges,
	        (long long)r.cents, (long long)r.expected_cents);
	/* the run really had lost answers and duplicates */
	assert_true(r.no_response >= (uint64_t)(cfg.mixed_requests / cfg.slow_every) / 2);
	assert_true(r.replayed > 0);
	/* nothing but 201, 409 and lost answers */
	assert_int_equal(r.other, 0);
	/* one charge per key, and the money adds up to the cent */
	assert_int_equal(r.charges, cfg.mixed_keys);
	assert_int_equal(r.cents, r.expected_cents);
}

static void test_same_key_from_many_clients_at_once_charges_once(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	struct idempotency_duplicates *d = calloc(1, sizeof(*d));
	char err[512];
	cfg.duplicates = 24;
	cfg.mixed_keys = 4;
	cfg.mixed_requests = 40;
	assert_int_equal(idempotency_duplicates_run(&cfg, d, err, sizeof(err)), 0);
	const struct idempotency_load *l = &d->same_instant;
	print_message("%d at once: %llu new, %llu replayed, %llu 409\n", l->requests,
	              (unsigned long long)l->fresh, (unsigned long long)l->replayed,
	              (unsigned long long)l->conflict);
	assert_int_equal(l->fresh, 1);
	assert_int_equal(l->fresh + l->replayed + l->conflict, 24);
	assert_int_equal(l->charges, 1);
	assert_int_equal(l->cents, l->expected_cents);
	assert_int_equal(d->mixed.charges, 4);
	assert_int_equal(d->mixed.cents, d->mixed.expected_cents);
	free(d);
}

#define BODY "{\"amount\": 1999, \"currency\": \"eur\", \"customer\": \"cus_eve\"}"

static void test_status_codes_replay_header_and_byte_identical_body(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	char err[512], client[64];
	cfg.redis_url = NULL;
	unique_client(client, sizeof(client), "codes");
	/* longer than the paused request below takes even on a busy machine: no retry takes it over */
	cfg.lock_timeout_ms = 5000;
	struct idempotency_api *api = idempotency_api_start(&cfg, 0, err, sizeof(err));
	assert_non_null(api);
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
	rq.pause_ms = 0;
	rq.timeout_ms = 0;
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 409);
	for (int i = 0; i < 100 && rs.status == 409; i++) {
		usleep(100 * 1000);
		assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	}
	assert_int_equal(rs.status, 201);
	assert_true(rs.replayed);
	idempotency_api_stop(api);
	int64_t charges, cents;
	count(&cfg, client, &charges, &cents);
	assert_int_equal(charges, 2);
	assert_int_equal(cents, 2 * 1999);

	/* with the requirement off (phase 1), no key is executed every time */
	cfg.require_key = false;
	cfg.test_knobs = false;
	api = idempotency_api_start(&cfg, 0, err, sizeof(err));
	assert_non_null(api);
	port = idempotency_api_port(api);
	rq = (struct idempotency_request){.client = client, .body = BODY};
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 201);
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 201);
	assert_false(rs.replayed);
	/* and the test knobs are refused where they are off */
	rq.delay_ms = 10;
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 400);
	idempotency_api_stop(api);
	count(&cfg, client, &charges, &cents);
	assert_int_equal(charges, 4);
}

static void test_bad_input_gets_400_and_writes_nothing(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	char err[512], client[64];
	cfg.redis_url = NULL;
	unique_client(client, sizeof(client), "bad");
	struct idempotency_api *api = idempotency_api_start(&cfg, 0, err, sizeof(err));
	assert_non_null(api);
	int port = idempotency_api_port(api);
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
		print_message("bad request %zu: %d %s\n", i, rs.status, rs.body);
		assert_int_equal(rs.status, 400);
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
	idempotency_api_stop(api);
	count(&cfg, client, &charges, &cents);
	assert_int_equal(charges, 1);
}

static void test_flaky_network_charges_twice_without_a_key_and_once_with_one(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	struct idempotency_story st;
	char err[512];
	assert_int_equal(idempotency_flaky_run(&cfg, false, &st, err, sizeof(err)), 0);
	assert_int_equal(st.attempts[0].rs.status, 0); /* the client gave up */
	assert_int_equal(st.attempts[1].rs.status, 201);
	assert_int_equal(st.charges, 2);
	assert_int_equal(st.cents, 2 * st.expected_cents);
	assert_int_equal(idempotency_flaky_run(&cfg, true, &st, err, sizeof(err)), 0);
	assert_int_equal(st.nattempts, 3);
	assert_int_equal(st.attempts[0].rs.status, 0);
	assert_int_equal(st.attempts[1].rs.status, 201);
	assert_true(st.attempts[1].rs.replayed);
	assert_true(st.attempts[2].rs.replayed);
	assert_true(st.bodies_identical);
	assert_int_equal(st.charges, 1);
	assert_int_equal(st.cents, st.expected_cents);
}

static void test_crash_between_charge_and_response_completes_once(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	struct idempotency_story st;
	char err[512];
	assert_int_equal(idempotency_crash_run(&cfg, &st, err, sizeof(err)), 0);
	print_message("killed pid %d at %s; statuses %d %d %d %d\n", st.killed_pid, st.recovery_point,
	              st.attempts[0].rs.status, st.attempts[1].rs.status, st.attempts[2].rs.status,
	              st.attempts[3].rs.status);
	assert_true(st.killed_pid > 0);
	/* the charge and its key were committed together before the kill */
	assert_string_equal(st.recovery_point, "charge_created");
	assert_int_equal(st.attempts[0].rs.status, 0);
	/* the dead request still holds the key: in flight */
	assert_int_equal(st.attempts[1].rs.status, 409);
	/* past the lock timeout the retry resumes: the response is made, not a new charge */
	assert_int_equal(st.attempts[2].rs.status, 201);
	assert_false(st.attempts[2].rs.replayed);
	assert_int_equal(st.attempts[3].rs.status, 201);
	assert_true(st.attempts[3].rs.replayed);
	assert_true(st.bodies_identical);
	assert_int_equal(st.charges, 1);
	assert_int_equal(st.cents, st.expected_cents);
}

static void test_completer_finishes_a_dead_request_and_the_late_retry_gets_the_replay(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	char err[512], client[64];
	cfg.redis_url = NULL;
	unique_client(client, sizeof(client), "completer");
	/* well past the kill below even on a busy machine, so the first completer pass must skip it */
	cfg.lock_timeout_ms = 1500;
	struct idempotency_api *api = idempotency_api_start(&cfg, 0, err, sizeof(err));
	assert_non_null(api);
	int port = idempotency_api_port(api);
	struct idempotency_request rq = {
	        .client = client, .key = "late", .body = BODY, .pause_ms = 5000, .timeout_ms = 200};
	struct idempotency_response rs;
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 0);
	/* kill the request between its charge and its response */
	PGconn *conn = pg_connect(cfg.pg_url, err, sizeof(err));
	assert_non_null(conn);
	int64_t killed = 0;
	for (int i = 0; i < 500 && !killed; i++) {
		if (pg_query_int64(
		            conn,
		            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE state = "
		            "'active'"
		            " AND query LIKE '%between charge and response%' AND pid <> pg_backend_pid()",
		            0, NULL, &killed, err, sizeof(err)) < 0)
			fail_msg("%s", err);
		if (!killed)
			usleep(10 * 1000);
	}
	assert_int_equal(killed, 1);
	PQfinish(conn);
	/* before the lock timeout the completer leaves it alone (a retry may be resuming it) */
	int64_t completed = -1;
	assert_int_equal(idempotency_complete(&cfg, &completed, err, sizeof(err)), 0);
	assert_int_equal(completed, 0);
	usleep((useconds_t)(cfg.lock_timeout_ms + 300) * 1000);
	assert_int_equal(idempotency_complete(&cfg, &completed, err, sizeof(err)), 0);
	assert_int_equal(completed, 1);
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

static void test_mismatch_is_422_and_bad_requests_400_with_one_charge(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	struct idempotency_story st;
	char err[512];
	assert_int_equal(idempotency_mismatch_run(&cfg, &st, err, sizeof(err)), 0);
	int want[] = {201, 422, 201, 400, 400, 400};
	assert_int_equal(st.nattempts, 6);
	for (int i = 0; i < 6; i++)
		assert_int_equal(st.attempts[i].rs.status, want[i]);
	assert_true(st.attempts[2].rs.replayed);
	assert_int_equal(st.charges, 1);
	assert_int_equal(st.cents, 1000);
}

static void test_redis_guard_loses_and_doubles_where_the_key_in_postgres_charges_once(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	struct idempotency_guard g;
	char err[512];
	assert_int_equal(idempotency_guard_run(&cfg, &g, err, sizeof(err)), 0);
	assert_int_equal(g.nrows, 6);
	for (int i = 0; i < g.nrows; i++)
		print_message("%-30s %-36s %d %d %d -> %lld charges\n", g.rows[i].design, g.rows[i].fault,
		              g.rows[i].statuses[0], g.rows[i].statuses[1], g.rows[i].statuses[2],
		              (long long)g.rows[i].charges);
	/* rows: refused x {pg, keep, release}, then killed x {pg, keep, release} */
	assert_int_equal(g.rows[0].charges, 1);
	assert_int_equal(g.rows[3].charges, 1);
	assert_int_equal(g.rows[0].statuses[2], 201);
	assert_int_equal(g.rows[3].statuses[2], 201);
	/* kept key, refused write: the charge is lost and every retry refused */
	assert_int_equal(g.rows[1].charges, 0);
	assert_int_equal(g.rows[1].statuses[1], 409);
	/* deleted key, a write that had landed: charged twice */
	assert_int_equal(g.rows[5].charges, 2);
	/* the prefix is clean afterwards */
	assert_true(g.redis_keys_deleted > 0);
	redisContext *rc = redis_connect_url(cfg.redis_url, 2000, err, sizeof(err));
	assert_non_null(rc);
	long long left = -1;
	assert_int_equal(redis_del_prefix(rc, "lab:idempotency:", &left, err, sizeof(err)), 0);
	assert_int_equal(left, 0);
	redisFree(rc);
}

static void test_reaper_deletes_keys_past_the_window(void **state)
{
	struct idempotency_config cfg = *(struct idempotency_config *)*state;
	char err[512], client[64];
	cfg.redis_url = NULL;
	unique_client(client, sizeof(client), "reaper");
	struct idempotency_api *api = idempotency_api_start(&cfg, 0, err, sizeof(err));
	assert_non_null(api);
	int port = idempotency_api_port(api);
	struct idempotency_request rq = {.client = client, .key = "old", .body = BODY};
	struct idempotency_response rs;
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 201);
	rq.key = "new";
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 201);
	/* age one key past the 24 h window, as a day passing would */
	PGconn *conn = pg_connect(cfg.pg_url, err, sizeof(err));
	assert_non_null(conn);
	const char *p[] = {client};
	assert_int_equal(pg_exec(conn, "SET search_path = lab_idempotency", err, sizeof(err)), 0);
	PGresult *res =
	        PQexecParams(conn,
	                     "UPDATE idempotency_keys SET created_at = created_at - interval '25 hours'"
	                     " WHERE client = $1 AND key = 'old'",
	                     1, NULL, p, NULL, NULL, 0);
	assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
	assert_string_equal(PQcmdTuples(res), "1");
	PQclear(res);
	int64_t deleted = -1, keys = -1;
	assert_int_equal(idempotency_reap(&cfg, &deleted, err, sizeof(err)), 0);
	assert_int_equal(deleted, 1);
	assert_int_equal(idempotency_count_keys(&cfg, client, &keys, err, sizeof(err)), 0);
	assert_int_equal(keys, 1);
	PQfinish(conn);
	/* the young key still replays; the reaped one is a new request (the window was published) */
	rq.key = "new";
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_true(rs.replayed);
	rq.key = "old";
	assert_int_equal(idempotency_call(port, &rq, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.status, 201);
	assert_false(rs.replayed);
	idempotency_api_stop(api);
	int64_t charges, cents;
	count(&cfg, client, &charges, &cents);
	assert_int_equal(charges, 3);
}

static void test_unreachable_servers_exit_2_with_the_url_and_how_to_start_them(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	int rc = lab_run("idempotency", "LAB_PG_URL=postgres://lab:secret@127.0.0.1:1/lab", "--quick", out,
	                 sizeof(out), err, sizeof(err));
	assert_int_equal(rc, 2);
	assert_non_null(strstr(err, "cannot connect to PostgreSQL at postgres://lab@127.0.0.1:1/lab"));
	assert_non_null(strstr(err, "make up"));
	assert_null(strstr(err, "secret"));
	assert_string_equal(out, "");
	rc = lab_run("idempotency", "LAB_REDIS_URL=redis://127.0.0.1:1/0", "--quick", out, sizeof(out), err,
	             sizeof(err));
	assert_int_equal(rc, 2);
	assert_non_null(strstr(err, "cannot connect to Redis at redis://127.0.0.1:1/0"));
	assert_string_equal(out, "");
}

static void test_bad_flag_exits_2_with_usage(void **state)
{
	(void)state;
	static char out[4096], err[4096];
	assert_int_equal(lab_run("idempotency", NULL, "--bogus", out, sizeof(out), err, sizeof(err)), 2);
	assert_non_null(strstr(err, "--bogus"));
	assert_string_equal(out, "");
}

static void test_quick_json_run_demonstrates_the_claim(void **state)
{
	(void)state;
	static char out[65536], err[4096];
	int rc = lab_run("idempotency", NULL, "--quick --json", out, sizeof(out), err, sizeof(err));
	json_error_t jerr;
	json_t *doc = json_loads(out, 0, &jerr);
	if (!doc)
		print_message("not JSON (%s): %s\nstderr: %s\n", jerr.text, out, err);
	assert_non_null(doc);
	assert_string_equal(json_string_value(json_object_get(doc, "lab")), "idempotency");
	assert_int_equal(json_array_size(json_object_get(doc, "phases")), 6);
	json_t *verdict = json_object_get(doc, "verdict");
	print_message("verdict: %s\n", json_string_value(json_object_get(verdict, "evidence")));
	assert_true(json_is_true(json_object_get(verdict, "demonstrated")));
	assert_int_equal(rc, 0);
	json_decref(doc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_fingerprint_is_sha256_of_the_canonical_request),
	        cmocka_unit_test(test_exactly_once_over_hundreds_of_requests_with_retries_and_duplicates),
	        cmocka_unit_test(test_same_key_from_many_clients_at_once_charges_once),
	        cmocka_unit_test(test_status_codes_replay_header_and_byte_identical_body),
	        cmocka_unit_test(test_bad_input_gets_400_and_writes_nothing),
	        cmocka_unit_test(test_flaky_network_charges_twice_without_a_key_and_once_with_one),
	        cmocka_unit_test(test_crash_between_charge_and_response_completes_once),
	        cmocka_unit_test(test_completer_finishes_a_dead_request_and_the_late_retry_gets_the_replay),
	        cmocka_unit_test(test_mismatch_is_422_and_bad_requests_400_with_one_charge),
	        cmocka_unit_test(test_redis_guard_loses_and_doubles_where_the_key_in_postgres_charges_once),
	        cmocka_unit_test(test_reaper_deletes_keys_past_the_window),
	        cmocka_unit_test(test_unreachable_servers_exit_2_with_the_url_and_how_to_start_them),
	        cmocka_unit_test(test_bad_flag_exits_2_with_usage),
	        cmocka_unit_test(test_quick_json_run_demonstrates_the_claim),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
