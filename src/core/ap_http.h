/* ap_http.h -- incremental HTTP/1.x response parser: status, framing (Content-Length, chunked, close) and keep-alive. */
#ifndef AP_HTTP_H
#define AP_HTTP_H

#include <stddef.h>
#include <stdint.h>

/* The parser reads one response at a time from a byte stream, in pieces of any
 * size (down to one byte), without allocating and without copying the body.
 * It keeps at most one header line (AP_HTTP_LINE_MAX bytes) of its own; longer
 * lines are cut, which is harmless except for the three headers it reads
 * (Content-Length, Transfer-Encoding, Connection): a cut one is an error.
 *
 * Framing follows RFC 9112 section 6.3:
 *  - a response to HEAD, a 204 or a 304 has no body;
 *  - interim 1xx responses (except 101) are skipped: the next one is parsed;
 *  - Transfer-Encoding whose last coding is "chunked": chunked body, chunk
 *    extensions ignored, trailer fields read and ignored;
 *  - other Transfer-Encoding: the body runs to the end of the connection;
 *  - Content-Length: that many bytes (repeated equal values are accepted,
 *    different ones are an error);
 *  - otherwise the body runs to the end of the connection.
 * Lines may end in CRLF or in a bare LF. */

/* Longest header, chunk-size or trailer line kept, in bytes. */
#define AP_HTTP_LINE_MAX 256
/* Largest header block (status line to empty line, 1xx included) accepted. */
#define AP_HTTP_HEADER_MAX 65536

/* How the body of the current response is delimited (valid once headers_done). */
typedef enum {
    AP_HTTP_BODY_NONE = 0,    /* no body (HEAD, 204, 304, Content-Length: 0) */
    AP_HTTP_BODY_LENGTH,      /* Content-Length bytes */
    AP_HTTP_BODY_CHUNKED,     /* chunked transfer coding */
    AP_HTTP_BODY_CLOSE        /* until the peer closes the connection */
} ap_http_body;

/* State of one response being parsed.  Fields above the marker are results the
 * caller reads; those below are private.  Plain data: embed it in a
 * connection and reuse it with ap_http_parser_reset().  Not thread-safe. */
typedef struct ap_http_parser {
    int status;            /* final status code (100..999); 0 until its status line is read */
    int minor_version;     /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
    int keep_alive;        /* 1 if the connection can carry another request after this
                              response: HTTP/1.1 without "Connection: close", or HTTP/1.0
                              with "Connection: keep-alive"; 0 for close-delimited bodies */
    int headers_done;      /* 1 once the header block of the final response is read */
    int done;              /* 1 once the whole response is read */
    ap_http_body body;     /* framing of the body, valid once headers_done */
    uint64_t body_bytes;   /* payload bytes read (chunk framing and trailers excluded) */
    uint64_t bytes;        /* every byte consumed for this response, headers included */
    /* ---- private ---- */
    int state;
    int no_body;           /* request was HEAD */
    int has_length;
    int chunked;
    int conn_close;
    int conn_keep_alive;
    int line_cut;          /* the current line was longer than AP_HTTP_LINE_MAX */
    uint32_t line_len;
    uint64_t remaining;    /* body or chunk bytes still to read */
    uint64_t length;       /* Content-Length value */
    uint64_t header_bytes;
    char line[AP_HTTP_LINE_MAX];
} ap_http_parser;

/* Prepare p for the response to one request; head_request is nonzero when the
 * request method was HEAD (the response then has no body).  Can't fail. */
void ap_http_parser_init(ap_http_parser *p, int head_request);

/* Same as ap_http_parser_init(), named for reuse on a kept-alive connection.
 * Can't fail. */
void ap_http_parser_reset(ap_http_parser *p, int head_request);

/* Parse up to len bytes of buf.  Returns the number of bytes consumed: len, or
 * fewer when the response ended inside buf (p->done is then 1 and the rest of
 * buf belongs to whatever follows).  After p->done, returns 0.  On error
 * (malformed status line, header, chunk size or framing; header block over
 * AP_HTTP_HEADER_MAX; a needed header longer than AP_HTTP_LINE_MAX) returns -1
 * with AP_ECORRUPT and a message naming the problem; the parser must then be
 * reset before reuse.  Preconditions: p initialised, buf non-NULL when len > 0. */
long ap_http_parser_feed(ap_http_parser *p, const char *buf, size_t len);

/* The peer closed the connection (end of stream).  Returns 0 if that completes
 * the response (a close-delimited body; p->done becomes 1) or it was already
 * done; otherwise returns -1 with AP_ECORRUPT ("truncated ...") -- a response
 * cut short, or no response at all when p->bytes is 0. */
int ap_http_parser_eof(ap_http_parser *p);

#endif /* AP_HTTP_H */
