/*
 * client.c — the lab's own HTTP client for phase 4, what curl would do: one GET on a socket of
 * its own (HTTP/1.1, Connection: close), any Origin and Cookie it likes, and the whole answer
 * read, whatever its CORS headers say. No browser: nothing between the answer and the reader.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "internal.h"

#define ANSWER_MAX 16384
#define TIMEOUT_S  5

static int connect_local(int port, char *err, size_t errlen)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = {TIMEOUT_S, 0};
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		snprintf(err, errlen, "cannot connect to 127.0.0.1:%d", port);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Header name's value in the head (which ends at the blank line), into out; "" when absent. */
static void header_value(const char *head, const char *name, char *out, size_t outlen)
{
	out[0] = '\0';
	size_t nl = strlen(name);
	for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n"))
		if (strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':') {
			const char *v = p + 3 + nl;
			while (*v == ' ')
				v++;
			snprintf(out, outlen, "%.*s", (int)strcspn(v, "\r\n"), v);
			return;
		}
}

int cors_client_get(int port, const char *target, const char *origin, const char *cookie,
                    struct cors_client_row *row, char *body, size_t bodylen, char *err, size_t errlen)
{
	int fd = connect_local(port, err, errlen);
	if (fd < 0)
		return -1;
	char req[1024], ans[ANSWER_MAX + 1];
	int n = snprintf(
	        req, sizeof(req),
	        "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: lab-cors-client\r\n%s%s%s%s%s%s"
	        "Connection: close\r\n\r\n",
	        target, port, origin ? "Origin: " : "", origin ? origin : "", origin ? "\r\n" : "",
	        cookie ? "Cookie: " COOKIE_NAME "=" : "", cookie ? cookie : "", cookie ? "\r\n" : "");
	size_t got = 0;
	if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		close(fd);
		snprintf(err, errlen, "cannot send to 127.0.0.1:%d", port);
		return -1;
	}
	for (ssize_t r; got < ANSWER_MAX && (r = recv(fd, ans + got, ANSWER_MAX - got, 0)) > 0;)
		got += (size_t)r;
	close(fd);
	ans[got] = '\0';
	const char *blank = strstr(ans, "\r\n\r\n");
	if (sscanf(ans, "HTTP/1.%*d %d", &row->status) != 1 || !blank) {
		snprintf(err, errlen, "no HTTP answer from 127.0.0.1:%d for %s", port, target);
		return -1;
	}
	header_value(ans, "Access-Control-Allow-Origin", row->acao, sizeof(row->acao));
	row->bytes = (int)(got - (size_t)(blank + 4 - ans));
	snprintf(body, bodylen, "%s", blank + 4);
	snprintf(row->target, sizeof(row->target), "%s", target);
	snprintf(row->origin, sizeof(row->origin), "%s", origin ? origin : "");
	row->cookie = cookie != NULL;
	return 0;
}
