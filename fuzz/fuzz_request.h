/*
 * fuzz_request.h — an HTTP request built from fuzz bytes without a network, for the harnesses of
 * the API labs' request parsers (included by fuzz/fuzz_<lab>.c, not a harness itself).
 *
 * The bytes read as a request does on the wire, which is what the seed corpora hold:
 *
 *     METHOD /path?query\n
 *     Name: value\n          (any number of header lines; \r\n works too)
 *     \n
 *     body                   (the rest, any bytes)
 *
 * The request is what libevent 2.1's server hands a route callback: its method, its URI and the
 * URI's parts (evhttp_uri_parse_with_flags(EVHTTP_URI_NONCONFORMANT), as evhttp parses a request
 * line), the header lines with their values trimmed of spaces and tabs, the body in the input
 * buffer. Bytes the server would refuse before any route runs (an unknown method, a URI it cannot
 * parse, a header line without ':' or a header value evhttp_add_header refuses) give NULL: the
 * harness then has nothing to feed. event2/http_struct.h is how a request gets a method and a URI
 * without a connection; evhttp_request_free frees all of it.
 */
#ifndef FUZZ_REQUEST_H
#define FUZZ_REQUEST_H

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* a header line longer than this is cut (libevent's own default limit is larger; no parser here
 * reads that far) */
#define FUZZ_LINE_MAX 4096

static inline enum evhttp_cmd_type fuzz_method(const char *m)
{
	static const struct {
		const char *name;
		enum evhttp_cmd_type type;
	} M[] = {{"GET", EVHTTP_REQ_GET},         {"POST", EVHTTP_REQ_POST},
	         {"PUT", EVHTTP_REQ_PUT},         {"DELETE", EVHTTP_REQ_DELETE},
	         {"HEAD", EVHTTP_REQ_HEAD},       {"PATCH", EVHTTP_REQ_PATCH},
	         {"OPTIONS", EVHTTP_REQ_OPTIONS}, {"TRACE", EVHTTP_REQ_TRACE},
	         {"CONNECT", EVHTTP_REQ_CONNECT}};
	for (size_t i = 0; i < sizeof(M) / sizeof(M[0]); i++)
		if (strcmp(m, M[i].name) == 0)
			return M[i].type;
	return (enum evhttp_cmd_type)0;
}

/* The next line of [*p, end) into line (NUL-terminated, \r\n or \n removed); 0 at the end. */
static inline int fuzz_line(const char **p, const char *end, char *line, size_t len)
{
	if (*p >= end)
		return 0;
	const char *nl = memchr(*p, '\n', (size_t)(end - *p));
	const char *stop = nl ? nl : end;
	size_t n = (size_t)(stop - *p);
	if (n && (*p)[n - 1] == '\r')
		n--;
	if (n >= len)
		n = len - 1;
	memcpy(line, *p, n);
	line[n] = '\0';
	*p = nl ? nl + 1 : end;
	return 1;
}

static inline char *fuzz_trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = '\0';
	return s;
}

/* The request the bytes spell (see the header comment), or NULL. The caller evhttp_request_free()s it. */
static inline struct evhttp_request *fuzz_request(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	char line[FUZZ_LINE_MAX];
	if (!fuzz_line(&p, end, line, sizeof(line)))
		return NULL;
	char *sp = strchr(line, ' ');
	if (!sp || !sp[1])
		return NULL;
	*sp = '\0';
	enum evhttp_cmd_type type = fuzz_method(line);
	struct evhttp_uri *uri = type ? evhttp_uri_parse_with_flags(sp + 1, EVHTTP_URI_NONCONFORMANT) : NULL;
	struct evhttp_request *req = uri ? evhttp_request_new(NULL, NULL) : NULL;
	char *text = req ? strdup(sp + 1) : NULL;
	if (!text) {
		if (uri)
			evhttp_uri_free(uri);
		if (req)
			evhttp_request_free(req);
		return NULL;
	}
	req->kind = EVHTTP_REQUEST;
	req->type = type;
	req->uri = text;
	req->uri_elems = uri;
	while (fuzz_line(&p, end, line, sizeof(line)) && line[0]) {
		char *colon = strchr(line, ':');
		if (!colon || colon == line) {
			evhttp_request_free(req);
			return NULL;
		}
		*colon = '\0';
		if (evhttp_add_header(evhttp_request_get_input_headers(req), line, fuzz_trim(colon + 1)) <
		    0) {
			evhttp_request_free(req);
			return NULL;
		}
	}
	evbuffer_add(evhttp_request_get_input_buffer(req), p, (size_t)(end - p));
	return req;
}

/* How many times req's query names name, in any case (evhttp_find_header's reading), decoded by
 * libevent alone: a harness's own view, independent of the lab's parse. 0 when the query does not
 * parse. */
static inline int fuzz_query_count(struct evhttp_request *req, const char *name)
{
	const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	struct evkeyvalq q;
	if (!query || evhttp_parse_query_str(query, &q) != 0)
		return 0;
	int n = 0;
	for (struct evkeyval *kv = q.tqh_first; kv; kv = kv->next.tqe_next)
		n += strcasecmp(kv->key, name) == 0;
	evhttp_clear_headers(&q);
	return n;
}

#endif
