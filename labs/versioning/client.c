/*
 * client.c — the lab's side of the wire: a small HTTP/1.1 client on a blocking socket kept alive
 * between requests (so a request's cost is the server's, not a TCP handshake's), and the readers
 * a v1 or a v2 client parses a user with. A tolerant reader takes the fields it knows and ignores
 * the others (what a client must do for "add a field" to need no new version); a strict one
 * refuses what it does not know.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hist.h"
#include "internal.h"

/* a response that takes longer than this is not coming */
#define CLIENT_TIMEOUT_MS 5000
#define HEAD_MAX          8192

void vclient_init(struct vclient *c, int port)
{
	c->fd = -1;
	c->port = port;
}

void vclient_close(struct vclient *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static int connect_port(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in sin = {.sin_family = AF_INET,
	                          .sin_port = htons((uint16_t)port),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads what is there within the timeout into buf at *n; 0 on EOF, -1 on error or timeout. */
static ssize_t read_some(int fd, char *buf, size_t room)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, CLIENT_TIMEOUT_MS) != 1)
		return -1;
	ssize_t r;
	while ((r = recv(fd, buf, room, 0)) < 0 && errno == EINTR)
		;
	return r;
}

static void header_value(const char *head, const char *name, char *out, size_t outlen)
{
	out[0] = '\0';
	size_t nl = strlen(name);
	for (const char *line = strstr(head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
		const char *h = line + 2;
		if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
			const char *v = h + nl + 1;
			while (*v == ' ')
				v++;
			const char *end = strstr(v, "\r\n");
			size_t len = end ? (size_t)(end - v) : strlen(v);
			snprintf(out, outlen, "%.*s", (int)len, v);
			return;
		}
	}
}

/* Reads the rest of a chunked body from buf[have..] and the socket into rs->body. */
static int read_chunked(int fd, char *buf, size_t have, size_t cap, struct versioning_response *rs)
{
	size_t out = 0, pos = 0;
	for (;;) {
		char *crlf;
		while (!(crlf = memmem(buf + pos, have - pos, "\r\n", 2))) {
			ssize_t r = have < cap ? read_some(fd, buf + have, cap - have) : -1;
			if (r <= 0)
				return -1;
			have += (size_t)r;
		}
		size_t size = strtoul(buf + pos, NULL, 16);
		pos = (size_t)(crlf - buf) + 2;
		while (have < pos + size + 2) {
			ssize_t r = have < cap ? read_some(fd, buf + have, cap - have) : -1;
			if (r <= 0)
				return -1;
			have += (size_t)r;
		}
		if (size == 0)
			break;
		size_t take = size < sizeof(rs->body) - 1 - out ? size : sizeof(rs->body) - 1 - out;
		memcpy(rs->body + out, buf + pos, take);
		out += take;
		pos += size + 2;
	}
	rs->body[out] = '\0';
	return 0;
}

/* Reads one response; -1 when the connection closed or timed out before it was whole. */
static int read_response(int fd, struct versioning_response *rs, bool *keep)
{
	char buf[HEAD_MAX + VERSIONING_BODY * 2];
	size_t n = 0;
	char *end = NULL;
	while (!end) {
		ssize_t r = n < sizeof(buf) - 1 ? read_some(fd, buf + n, sizeof(buf) - 1 - n) : -1;
		if (r <= 0)
			return -1;
		n += (size_t)r;
		buf[n] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	size_t head_len = (size_t)(end - buf) + 4;
	char head[HEAD_MAX], v[64];
	snprintf(head, sizeof(head), "%.*s", (int)head_len, buf);
	if (sscanf(head, "HTTP/1.%*d %d", &rs->status) != 1)
		return -1;
	header_value(head, "Content-Type", rs->content_type, sizeof(rs->content_type));
	header_value(head, "Vary", rs->vary, sizeof(rs->vary));
	header_value(head, "Cache-Control", rs->cache_control, sizeof(rs->cache_control));
	header_value(head, "Deprecation", rs->deprecation, sizeof(rs->deprecation));
	header_value(head, "Sunset", rs->sunset, sizeof(rs->sunset));
	header_value(head, "Link", rs->link, sizeof(rs->link));
	header_value(head, "X-Cache-Status", rs->cache_status, sizeof(rs->cache_status));
	header_value(head, "Connection", v, sizeof(v));
	*keep = strcasecmp(v, "close") != 0 && strncmp(head, "HTTP/1.0", 8) != 0;
	header_value(head, "Transfer-Encoding", v, sizeof(v));
	if (strcasecmp(v, "chunked") == 0)
		return read_chunked(fd, buf + head_len, n - head_len, sizeof(buf) - head_len, rs);
	header_value(head, "Content-Length", v, sizeof(v));
	size_t want = v[0] ? strtoul(v, NULL, 10) : sizeof(buf) - head_len; /* none: to the close */
	*keep = *keep && v[0];
	while (n - head_len < want && n < sizeof(buf) - 1) {
		ssize_t r = read_some(fd, buf + n, sizeof(buf) - 1 - n);
		if (r < 0 || (r == 0 && v[0]))
			return -1;
		if (r == 0)
			break;
		n += (size_t)r;
	}
	size_t body = n - head_len < sizeof(rs->body) - 1 ? n - head_len : sizeof(rs->body) - 1;
	memcpy(rs->body, buf + head_len, body);
	rs->body[body] = '\0';
	return 0;
}

static bool send_all(int fd, const char *s, size_t len)
{
	for (size_t off = 0; off < len;) {
		ssize_t w = send(fd, s + off, len - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		off += (size_t)w;
	}
	return true;
}

int vclient_get(struct vclient *c, const char *target, const char *accept, const char *agent,
                struct versioning_response *rs, char *err, size_t errlen)
{
	char req[1024], acc[256] = "";
	if (accept)
		snprintf(acc, sizeof(acc), "Accept: %s\r\n", accept);
	int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: %s\r\n%s\r\n",
	                   target, agent, acc);
	/* a kept-alive connection the server closed meanwhile fails the first try: one more, fresh */
	for (int attempt = 0; attempt < 2; attempt++) {
		memset(rs, 0, sizeof(*rs));
		if (c->fd < 0 && (c->fd = connect_port(c->port)) < 0)
			break;
		uint64_t t0 = hist_now_us();
		bool keep = false;
		if (send_all(c->fd, req, (size_t)len) && read_response(c->fd, rs, &keep) == 0) {
			rs->latency_us = hist_now_us() - t0;
			if (!keep)
				vclient_close(c);
			return 0;
		}
		vclient_close(c);
	}
	snprintf(err, errlen, "no response from 127.0.0.1:%d to GET %s", c->port, target);
	return -1;
}

/* ---- the readers ---- */

static bool known_field(const char *name, int version)
{
	static const char *const v1[] = {"id", "name", "email", "price", NULL};
	static const char *const v2[] = {"id", "given_name", "family_name", "email", "price_cents", NULL};
	for (const char *const *f = version == 1 ? v1 : v2; *f; f++)
		if (strcmp(*f, name) == 0)
			return true;
	return false;
}

static bool fields_match(json_t *doc, int version, const struct user_row *row)
{
	if (json_integer_value(json_object_get(doc, "id")) != row->id ||
	    strcmp(json_string_value(json_object_get(doc, "email")), row->email) != 0)
		return false;
	if (version == 1) {
		char name[128];
		snprintf(name, sizeof(name), "%s %s", row->given, row->family);
		return strcmp(json_string_value(json_object_get(doc, "name")), name) == 0 &&
		       fabs(json_number_value(json_object_get(doc, "price")) - (double)row->cents / 100.0) <
		               1e-9;
	}
	return strcmp(json_string_value(json_object_get(doc, "given_name")), row->given) == 0 &&
	       strcmp(json_string_value(json_object_get(doc, "family_name")), row->family) == 0 &&
	       json_integer_value(json_object_get(doc, "price_cents")) == row->cents;
}

bool vers_reads(const char *body, int version, bool strict, const struct user_row *row)
{
	json_t *doc = json_loads(body, 0, NULL);
	if (!json_is_object(doc)) {
		json_decref(doc);
		return false;
	}
	bool ok =
	        json_is_integer(json_object_get(doc, "id")) && json_is_string(json_object_get(doc, "email"));
	if (version == 1)
		ok = ok && json_is_string(json_object_get(doc, "name")) &&
		     json_is_number(json_object_get(doc, "price"));
	else
		ok = ok && json_is_string(json_object_get(doc, "given_name")) &&
		     json_is_string(json_object_get(doc, "family_name")) &&
		     json_is_integer(json_object_get(doc, "price_cents"));
	const char *name;
	json_t *v;
	json_object_foreach(doc, name, v)
	{
		if (strict && !known_field(name, version))
			ok = false;
	}
	if (ok && row)
		ok = fields_match(doc, version, row);
	json_decref(doc);
	return ok;
}

void vers_target(enum versioning_approach a, int version, long id, char *out, size_t outlen,
                 const char **accept)
{
	*accept = NULL;
	if (a == VERSIONING_PATH)
		snprintf(out, outlen, "/v%d/users/%ld", version, id);
	else if (a == VERSIONING_QUERY)
		snprintf(out, outlen, "/users/%ld?version=%d", id, version);
	else {
		snprintf(out, outlen, "/users/%ld", id);
		*accept = version == 1 ? VERSIONING_MEDIA_V1 : VERSIONING_MEDIA_V2;
	}
}
