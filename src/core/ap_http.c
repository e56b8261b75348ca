/* ap_http.c -- incremental HTTP/1.x response parser (see ap_http.h for the framing rules). */
#include "ap_http.h"

#include <assert.h>
#include <string.h>

#include "ap_err.h"

enum {
    ST_STATUS,       /* line mode: "HTTP/1.x NNN reason" */
    ST_HEADER,       /* line mode: header fields until an empty line */
    ST_BODY_LENGTH,  /* `remaining` body bytes */
    ST_BODY_CLOSE,   /* everything until end of stream */
    ST_CHUNK_SIZE,   /* line mode: hex size [; extensions] */
    ST_CHUNK_DATA,   /* `remaining` chunk bytes */
    ST_CHUNK_END,    /* line mode: the empty line after chunk data */
    ST_TRAILER,      /* line mode: trailer fields until an empty line */
    ST_DONE
};

void ap_http_parser_init(ap_http_parser *p, int head_request) {
    assert(p != NULL);
    memset(p, 0, offsetof(ap_http_parser, line));
    p->state = ST_STATUS;
    p->no_body = head_request != 0;
}

void ap_http_parser_reset(ap_http_parser *p, int head_request) {
    ap_http_parser_init(p, head_request);
}

static int lower(int c) {
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Case-insensitive comparison of s[0..n) with the lower-case literal lit. */
static int iequal(const char *s, size_t n, const char *lit) {
    size_t m = strlen(lit);
    if (n != m)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != lit[i])
            return 0;
    return 1;
}

static int is_ows(char c) {
    return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *n) {
    while (*n > 0 && is_ows((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_ows((*s)[*n - 1]))
        (*n)--;
}

/* tchar of RFC 9110 section 5.6.2. */
static int is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Calls fn(p, item, len) for every non-empty comma-separated item of a list
 * value, trimmed; stops at and returns the first -1. */
typedef int (*list_fn)(ap_http_parser *p, const char *item, size_t n);

static int each_item(ap_http_parser *p, const char *v, size_t n, list_fn fn) {
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && v[i] != ',')
            continue;
        const char *item = v + start;
        size_t len = i - start;
        trim(&item, &len);
        if (len > 0 && fn(p, item, len) < 0)
            return -1;
        start = i + 1;
    }
    return 0;
}

static int content_length_item(ap_http_parser *p, const char *s, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return ap_err_set(AP_ECORRUPT, "invalid Content-Length");
        if (v > (UINT64_C(1) << 56))
            return ap_err_set(AP_ECORRUPT, "Content-Length too large");
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (p->has_length && p->length != v)
        return ap_err_set(AP_ECORRUPT, "conflicting Content-Length values");
    p->has_length = 1;
    p->length = v;
    return 0;
}

static int transfer_coding_item(ap_http_parser *p, const char *s, size_t n) {
    /* Only the last coding matters: chunked must be last to delimit the body. */
    size_t tok = 0;
    while (tok < n && is_tchar((unsigned char)s[tok]))
        tok++;
    p->chunked = iequal(s, tok, "chunked") ? 1 : 2;   /* 2: some other coding */
    return 0;
}

static int connection_item(ap_http_parser *p, const char *s, size_t n) {
    if (iequal(s, n, "close"))
        p->conn_close = 1;
    else if (iequal(s, n, "keep-alive"))
        p->conn_keep_alive = 1;
    return 0;
}

static int status_line(ap_http_parser *p, const char *s, size_t n) {
    if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ')
        return ap_err_set(AP_ECORRUPT, "invalid status line");
    int code = 0;
    for (int i = 9; i < 12; i++) {
        if (s[i] < '0' || s[i] > '9')
            return ap_err_set(AP_ECORRUPT, "invalid status code");
        code = code * 10 + (s[i] - '0');
    }
    if (code < 100 || (n > 12 && s[12] != ' '))
        return ap_err_set(AP_ECORRUPT, "invalid status code");
    if (code == 101)
        return ap_err_set(AP_ECORRUPT, "101 Switching Protocols is not supported");
    p->status = code;
    p->minor_version = s[7] - '0';
    p->state = ST_HEADER;
    return 0;
}

static int header_line(ap_http_parser *p, const char *s, size_t n) {
    if (is_ows(s[0]))
        return ap_err_set(AP_ECORRUPT, "obsolete header line folding");
    size_t name = 0;
    while (name < n && is_tchar((unsigned char)s[name]))
        name++;
    if (name == 0 || name == n || s[name] != ':')
        return ap_err_set(AP_ECORRUPT, "invalid header line");
    list_fn fn = NULL;
    if (iequal(s, name, "content-length"))
        fn = content_length_item;
    else if (iequal(s, name, "transfer-encoding"))
        fn = transfer_coding_item;
    else if (iequal(s, name, "connection"))
        fn = connection_item;
    if (fn == NULL)
        return 0;
    if (p->line_cut)
        return ap_err_set(AP_ECORRUPT, "%.*s header longer than %d bytes", (int)name, s,
                          AP_HTTP_LINE_MAX);
    const char *v = s + name + 1;
    size_t vn = n - name - 1;
    if (fn == content_length_item) {
        trim(&v, &vn);
        if (vn == 0)
            return ap_err_set(AP_ECORRUPT, "empty Content-Length");
    }
    return each_item(p, v, vn, fn);
}

/* The empty line after the header block: decide the framing. */
static int headers_end(ap_http_parser *p) {
    if (p->status == 0)
        return ap_err_set(AP_ECORRUPT, "missing status line");
    if (p->status < 200) {
        /* Interim response: the final one follows on the same stream. */
        p->status = 0;
        p->has_length = p->chunked = p->conn_close = p->conn_keep_alive = 0;
        p->length = 0;
        p->state = ST_STATUS;
        return 0;
    }
    p->headers_done = 1;
    p->keep_alive = p->minor_version == 1 ? !p->conn_close
                                          : (p->conn_keep_alive && !p->conn_close);
    if (p->no_body || p->status == 204 || p->status == 304) {
        p->body = AP_HTTP_BODY_NONE;
        p->state = ST_DONE;
    } else if (p->chunked) {
        if (p->has_length)
            p->keep_alive = 0;   /* RFC 9112 6.3: both present, do not reuse */
        if (p->chunked == 1) {
            p->body = AP_HTTP_BODY_CHUNKED;
            p->state = ST_CHUNK_SIZE;
        } else {
            p->body = AP_HTTP_BODY_CLOSE;
            p->keep_alive = 0;
            p->state = ST_BODY_CLOSE;
        }
    } else if (p->has_length) {
        p->remaining = p->length;
        p->body = p->length ? AP_HTTP_BODY_LENGTH : AP_HTTP_BODY_NONE;
        p->state = p->length ? ST_BODY_LENGTH : ST_DONE;
    } else {
        p->body = AP_HTTP_BODY_CLOSE;
        p->keep_alive = 0;
        p->state = ST_BODY_CLOSE;
    }
    p->done = p->state == ST_DONE;
    return 0;
}

static int chunk_size_line(ap_http_parser *p, const char *s, size_t n) {
    uint64_t v = 0;
    size_t i = 0;
    for (; i < n; i++) {
        int c = lower((unsigned char)s[i]), d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            break;
        if (v >> 56)
            return ap_err_set(AP_ECORRUPT, "chunk size too large");
        v = v * 16 + (uint64_t)d;
    }
    if (i == 0)
        return ap_err_set(AP_ECORRUPT, "invalid chunk size");
    size_t j = i;
    while (j < n && is_ows(s[j]))
        j++;
    if (j < n && s[j] != ';')
        return ap_err_set(AP_ECORRUPT, "invalid chunk size");
    p->remaining = v;
    p->state = v ? ST_CHUNK_DATA : ST_TRAILER;
    if (!v)
        p->header_bytes = 0;   /* the trailer block gets its own size limit */
    return 0;
}

/* One complete line s[0..n) (line ending removed) in a line-mode state. */
static int line(ap_http_parser *p, const char *s, size_t n) {
    switch (p->state) {
    case ST_STATUS:
        return status_line(p, s, n);
    case ST_HEADER:
        return n == 0 ? headers_end(p) : header_line(p, s, n);
    case ST_CHUNK_SIZE:
        return chunk_size_line(p, s, n);
    case ST_CHUNK_END:
        if (n != 0)
            return ap_err_set(AP_ECORRUPT, "chunk data longer than its size");
        p->state = ST_CHUNK_SIZE;
        return 0;
    case ST_TRAILER:
        if (n == 0) {
            p->state = ST_DONE;
            p->done = 1;
            return 0;
        }
        if (is_ows(s[0]) || memchr(s, ':', n) == NULL)
            return ap_err_set(AP_ECORRUPT, "invalid trailer line");
        return 0;
    default:
        assert(0 && "line() outside a line-mode state");
        return ap_err_set(AP_ECORRUPT, "parser state");
    }
}

static int is_line_state(int st) {
    return st == ST_STATUS || st == ST_HEADER || st == ST_CHUNK_SIZE || st == ST_CHUNK_END ||
           st == ST_TRAILER;
}

/* Consume line-mode bytes from buf[0..len); returns bytes consumed or -1. */
static long feed_line(ap_http_parser *p, const char *buf, size_t len) {
    const char *nl = memchr(buf, '\n', len);
    size_t take = nl ? (size_t)(nl - buf) + 1 : len;
    int header_block = p->state == ST_STATUS || p->state == ST_HEADER || p->state == ST_TRAILER;
    p->header_bytes += take;
    if (p->header_bytes > AP_HTTP_HEADER_MAX)
        return ap_err_set(AP_ECORRUPT, "%s larger than %d bytes",
                          header_block ? "header block" : "chunk size line", AP_HTTP_HEADER_MAX);
    const char *s;
    size_t n;
    size_t body = nl ? take - 1 : take;   /* bytes of this piece that belong to the line */
    if (nl && p->line_len == 0 && !p->line_cut) {
        s = buf;               /* fast path: the whole line is in buf */
        n = body;
        if (n > AP_HTTP_LINE_MAX) {
            n = AP_HTTP_LINE_MAX;   /* cut exactly as a line arriving in pieces would be */
            p->line_cut = 1;
        }
    } else {
        size_t room = AP_HTTP_LINE_MAX - p->line_len;
        size_t copy = body < room ? body : room;
        memcpy(p->line + p->line_len, buf, copy);
        p->line_len += (uint32_t)copy;
        if (copy < body)
            p->line_cut = 1;
        if (!nl)
            return (long)take;
        s = p->line;
        n = p->line_len;
    }
    if (n > 0 && s[n - 1] == '\r' && !p->line_cut)
        n--;
    int rc = line(p, s, n);
    p->line_len = 0;
    p->line_cut = 0;
    if (p->state == ST_CHUNK_DATA || p->state == ST_CHUNK_SIZE)
        p->header_bytes = 0;   /* chunk size lines are limited one by one */
    return rc < 0 ? -1 : (long)take;
}

long ap_http_parser_feed(ap_http_parser *p, const char *buf, size_t len) {
    assert(p != NULL && (buf != NULL || len == 0));
    size_t off = 0;
    while (off < len && p->state != ST_DONE) {
        const char *b = buf + off;
        size_t n = len - off;
        long used;
        if (is_line_state(p->state)) {
            used = feed_line(p, b, n);
            if (used < 0) {
                p->bytes += off;
                return -1;
            }
        } else if (p->state == ST_BODY_CLOSE) {
            used = (long)n;
            p->body_bytes += n;
        } else {
            size_t k = n < p->remaining ? n : (size_t)p->remaining;
            p->remaining -= k;
            p->body_bytes += k;
            used = (long)k;
            if (p->remaining == 0) {
                if (p->state == ST_CHUNK_DATA) {
                    p->state = ST_CHUNK_END;
                    p->header_bytes = 0;
                } else {
                    p->state = ST_DONE;
                    p->done = 1;
                }
            }
        }
        off += (size_t)used;
    }
    p->bytes += off;
    return (long)off;
}

int ap_http_parser_eof(ap_http_parser *p) {
    assert(p != NULL);
    if (p->done)
        return 0;
    switch (p->state) {
    case ST_BODY_CLOSE:
        p->state = ST_DONE;
        p->done = 1;
        return 0;
    case ST_STATUS:
        if (p->bytes == 0)
            return ap_err_set(AP_ECORRUPT, "connection closed before any response byte");
        /* fall through */
    case ST_HEADER:
        return ap_err_set(AP_ECORRUPT, "truncated response header");
    case ST_BODY_LENGTH:
        return ap_err_set(AP_ECORRUPT, "truncated body: %llu of %llu bytes",
                          (unsigned long long)p->body_bytes, (unsigned long long)p->length);
    default:
        return ap_err_set(AP_ECORRUPT, "truncated chunked body");
    }
}
