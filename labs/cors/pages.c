/*
 * pages.c — the two pages of lab-cors, each on an origin of its own (a port of 127.0.0.1):
 *
 *   A  GET /app    the API's own front-end: runs A's cases (CASES, in order) with fetch, writes a
 *                  line per case into <pre id="lab-results">, then frames E's page and adds the
 *                  lines E posts back (postMessage, checked to come from E's origin).
 *   E  GET /evil   the evil page: runs E's cases against the API with the victim's cookie and
 *                  posts its lines to its parent (and shows them, when opened by hand).
 *
 * A line: case|<i>|<tries>|<readable>|<status>|<bytes>|<error>|<body>, the last two
 * percent-encoded (encodeURIComponent), so a line never holds '|', '<' or a newline of its own.
 * After the last line, END: the page finished.
 */
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "internal.h"

struct cors_pages {
	struct http_app app, evil;
	atomic_int api_port;
	int repeats;
};

/* What both pages run: one case, tries times, the outcome of the last try into lines. */
static const char JS_ONE[] =
        "const lines = [];\n"
        "async function one(k) {\n"
        "  const o = {method: k.m, credentials: k.c ? 'include' : 'same-origin'};\n"
        "  if (k.m === 'PUT') {\n"
        "    o.headers = {'Content-Type': 'application/json'};\n"
        "    o.body = JSON.stringify({text: 'hello from ' + location.origin});\n"
        "  }\n"
        "  const n = k.r ? N : 1;\n"
        "  let readable = 0, status = 0, bytes = 0, error = '', body = '';\n"
        "  for (let t = 0; t < n; t++) {\n"
        "    try {\n"
        "      const r = await fetch(B + k.p + '?case=' + k.i, o);\n"
        "      const text = await r.text();\n"
        "      readable++; status = r.status; body = text; error = '';\n"
        "      bytes = new TextEncoder().encode(text).length;\n"
        "    } catch (e) { status = 0; bytes = 0; body = ''; error = String(e); }\n"
        "  }\n"
        "  lines.push(['case', k.i, n, readable, status, bytes, encodeURIComponent(error),\n"
        "              encodeURIComponent(body.slice(0, 400))].join('|'));\n"
        "}\n"
        "function show() {\n"
        "  document.getElementById('lab-results').textContent = lines.join('\\n') + '\\nEND\\n';\n"
        "}\n";

static const char APP_RUN[] = "addEventListener('message', ev => {\n"
                              "  if (ev.origin !== E || !Array.isArray(ev.data)) return;\n"
                              "  for (const l of ev.data) lines.push(String(l));\n"
                              "  show();\n"
                              "});\n"
                              "(async () => {\n"
                              "  for (const k of CASES) await one(k);\n"
                              "  const f = document.createElement('iframe');\n"
                              "  f.src = E + '/evil';\n"
                              "  document.body.appendChild(f);\n"
                              "})();\n";

static const char EVIL_RUN[] = "(async () => {\n"
                               "  for (const k of CASES) await one(k);\n"
                               "  show();\n"
                               "  parent.postMessage(lines, '*');\n"
                               "})();\n";

static void page(struct cors_pages *p, struct evhttp_request *req, enum case_origin from)
{
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		http_reply_error(req, 405, "GET only");
		return;
	}
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	int api = atomic_load(&p->api_port), evil = http_server_port(p->evil.server);
	evbuffer_add_printf(out,
	                    "<!doctype html><html><head><meta charset=\"utf-8\"><title>lab-cors: %s</title>"
	                    "</head><body><h1>%s</h1><pre id=\"lab-results\"></pre><script>\n"
	                    "const B = 'http://127.0.0.1:%d', E = 'http://127.0.0.1:%d', N = %d;\n"
	                    "const CASES = [\n",
	                    from == FROM_APP ? "the app" : "an evil page",
	                    from == FROM_APP ? "origin A: the API's own front-end"
	                                     : "origin E: a page the victim opened, not the API's",
	                    api, evil, p->repeats);
	for (int i = 0; i < CORS_CASES; i++)
		if (CASES[i].from == from)
			evbuffer_add_printf(out, "  {i: %d, m: '%s', p: '%s', c: %s, r: %s},\n", i,
			                    CASES[i].method, CASES[i].path,
			                    CASES[i].credentials ? "true" : "false",
			                    CASES[i].repeated ? "true" : "false");
	evbuffer_add_printf(out, "];\n%s%s</script></body></html>\n", JS_ONE,
	                    from == FROM_APP ? APP_RUN : EVIL_RUN);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", "text/html; charset=utf-8");
	evhttp_add_header(h, "Cache-Control", "no-store");
	http_send_reply(req, 200, out);
}

static void app_cb(struct evhttp_request *req, void *arg)
{
	page(arg, req, FROM_APP);
}

static void evil_cb(struct evhttp_request *req, void *arg)
{
	page(arg, req, FROM_EVIL);
}

struct cors_pages *cors_pages_start(int repeats, char *err, size_t errlen)
{
	struct cors_pages *p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	p->repeats = repeats;
	if (http_app_open(&p->app, 0, err, errlen) < 0 || http_app_open(&p->evil, 0, err, errlen) < 0)
		goto fail;
	http_server_route(p->app.server, "/app", app_cb, p);
	http_server_route(p->evil.server, "/evil", evil_cb, p);
	if (http_app_run(&p->app, err, errlen) < 0 || http_app_run(&p->evil, err, errlen) < 0)
		goto fail;
	return p;
fail:
	cors_pages_stop(p);
	return NULL;
}

void cors_pages_set_api(struct cors_pages *p, int api_port)
{
	atomic_store(&p->api_port, api_port);
}

int cors_pages_app_port(const struct cors_pages *p)
{
	return http_server_port(p->app.server);
}

int cors_pages_evil_port(const struct cors_pages *p)
{
	return http_server_port(p->evil.server);
}

void cors_pages_stop(struct cors_pages *p)
{
	if (!p)
		return;
	http_app_stop(&p->evil, NULL, NULL);
	http_app_stop(&p->app, NULL, NULL);
	free(p);
}
