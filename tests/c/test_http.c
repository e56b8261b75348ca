/* test_http.c -- unit and mutation-fuzz tests of the HTTP response parser (ap_http). */
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_http.h"
#include "ap_test.h"

/* Outcome of parsing one input: comparable across different splits. */
typedef struct outcome {
    int err;               /* 1 if feed or eof failed */
    int done, status, keep_alive, body;
    uint64_t body_bytes, consumed;
} outcome;

static int same(const outcome *a, const outcome *b) {
    return a->err == b->err && a->done == b->done && a->status == b->status &&
           a->keep_alive == b->keep_alive && a->body == b->body &&
           a->body_bytes == b->body_bytes && a->consumed == b->consumed;
}

/* Parse s[0..n) in pieces of `piece` bytes (0: all at once); if eof, signal
 * the end of stream when the input is used up without completing. */
static outcome parse(const char *s, size_t n, size_t piece, int head, int eof) {
    ap_http_parser p;
    ap_http_parser_init(&p, head);
    outcome o = {0};
    size_t off = 0;
    while (off < n && !p.done) {
        size_t k = piece && piece < n - off ? piece : n - off;
        long used = ap_http_parser_feed(&p, s + off, k);
        if (used < 0) {
            AP_CHECK_EQ_U64(ap_err_code(), AP_ECORRUPT);
            o.err = 1;
            return o;
        }
        if (!AP_CHECK((size_t)used <= k))
            return o;
        off += (size_t)used;
        if ((size_t)used < k && !AP_CHECK(p.done))
            return o;
    }
    if (!p.done && eof && ap_http_parser_eof(&p) < 0) {
        AP_CHECK_EQ_U64(ap_err_code(), AP_ECORRUPT);
        o.err = 1;
        return o;
    }
    o.done = p.done;
    o.status = p.status;
    o.keep_alive = p.keep_alive;
    o.body = p.body;
    o.body_bytes = p.body_bytes;
    o.consumed = off;
    if (p.done)
        AP_CHECK_EQ_U64(p.bytes, off);
    return o;
}

/* Parses s whole, byte by byte and in every two-piece split; all must agree.
 * Returns the outcome. */
static outcome parse_all_ways(const char *s, int head, int eof) {
    size_t n = strlen(s);
    outcome whole = parse(s, n, 0, head, eof);
    outcome bytes = parse(s, n, 1, head, eof);
    AP_CHECK(same(&whole, &bytes));
    for (size_t cut = 1; cut < n; cut++) {
        ap_http_parser p;
        ap_http_parser_init(&p, head);
        long a = ap_http_parser_feed(&p, s, cut);
        if (a < 0) {
            AP_CHECK(whole.err);
            continue;
        }
        long b = p.done ? 0 : ap_http_parser_feed(&p, s + cut, n - cut);
        int failed = b < 0 || (!p.done && eof && ap_http_parser_eof(&p) < 0);
        AP_CHECK_MSG(failed == whole.err, "split at %zu: err %d vs %d", cut, failed, whole.err);
        if (!failed) {
            AP_CHECK_EQ_U64(p.status, whole.status);
            AP_CHECK_EQ_U64(p.body_bytes, whole.body_bytes);
            AP_CHECK_EQ_U64((uint64_t)a + (uint64_t)b, whole.consumed);
        }
    }
    return whole;
}

AP_TEST(http_content_length) {
    const char *r = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length:  5 \r\n\r\n"
                    "helloHTTP/1.1 404 Not Found\r\n";
    outcome o = parse_all_ways(r, 0, 0);
    AP_CHECK(!o.err && o.done);
    AP_CHECK_EQ_U64(o.status, 200);
    AP_CHECK_EQ_U64(o.body, AP_HTTP_BODY_LENGTH);
    AP_CHECK_EQ_U64(o.body_bytes, 5);
    AP_CHECK_EQ_U64(o.consumed, strlen(r) - strlen("HTTP/1.1 404 Not Found\r\n"));
    AP_CHECK(o.keep_alive);
    /* bare LF line endings, repeated equal lengths */
    o = parse_all_ways("HTTP/1.1 201 Created\nContent-Length: 2, 2\nContent-Length: 2\n\nab", 0, 0);
    AP_CHECK(!o.err && o.done && o.status == 201 && o.body_bytes == 2);
    /* zero length */
    o = parse_all_ways("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 0);
    AP_CHECK(!o.err && o.done && o.body == AP_HTTP_BODY_NONE && o.body_bytes == 0);
}

AP_TEST(http_chunked_trailers) {
    const char *r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
                    "5;name=value\r\nhello\r\n"
                    "A \r\n0123456789\r\n"
                    "0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n";
    outcome o = parse_all_ways(r, 0, 0);
    AP_CHECK(!o.err && o.done);
    AP_CHECK_EQ_U64(o.body, AP_HTTP_BODY_CHUNKED);
    AP_CHECK_EQ_U64(o.body_bytes, 15);
    AP_CHECK_EQ_U64(o.consumed, strlen(r));
    AP_CHECK(o.keep_alive);
    o = parse_all_ways("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, 0);
    AP_CHECK(!o.err && o.done && o.body_bytes == 0);
    /* chunked is not last: the body runs to the close */
    o = parse_all_ways("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nxyz", 0, 1);
    AP_CHECK(!o.err && o.done && o.body == AP_HTTP_BODY_CLOSE && o.body_bytes == 3);
    AP_CHECK(!o.keep_alive);
    /* Transfer-Encoding wins over Content-Length, and the connection is not reused */
    o = parse_all_ways("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "1\r\nx\r\n0\r\n\r\n", 0, 0);
    AP_CHECK(!o.err && o.done && o.body_bytes == 1 && !o.keep_alive);
}

AP_TEST(http_close_delimited) {
    outcome o = parse_all_ways("HTTP/1.1 200 OK\r\nServer: x\r\n\r\nbody until close", 0, 1);
    AP_CHECK(!o.err && o.done && o.body == AP_HTTP_BODY_CLOSE && o.body_bytes == 16);
    AP_CHECK(!o.keep_alive);
    /* without the end of stream it is not done */
    o = parse_all_ways("HTTP/1.1 200 OK\r\n\r\nabc", 0, 0);
    AP_CHECK(!o.err && !o.done);
}

AP_TEST(http_no_body_cases) {
    outcome o = parse_all_ways("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", 1, 0);
    AP_CHECK(!o.err && o.done && o.body == AP_HTTP_BODY_NONE && o.keep_alive);
    o = parse_all_ways("HTTP/1.1 204 No Content\r\n\r\n", 0, 0);
    AP_CHECK(!o.err && o.done && o.status == 204);
    o = parse_all_ways("HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", 0, 0);
    AP_CHECK(!o.err && o.done && o.status == 304 && o.body_bytes == 0);
    /* interim responses are skipped */
    const char *r = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    o = parse_all_ways(r, 0, 0);
    AP_CHECK(!o.err && o.done && o.status == 200 && o.body_bytes == 2);
    AP_CHECK_EQ_U64(o.consumed, strlen(r));
}

AP_TEST(http_keep_alive_rules) {
    outcome o = parse_all_ways("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n",
                               0, 0);
    AP_CHECK(!o.err && o.done && !o.keep_alive);
    o = parse_all_ways("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 0);
    AP_CHECK(!o.err && o.done && !o.keep_alive);
    o = parse_all_ways("HTTP/1.0 200 OK\r\nConnection: foo, keep-alive\r\nContent-Length: 0\r\n\r\n",
                       0, 0);
    AP_CHECK(!o.err && o.done && o.keep_alive);
}

AP_TEST(http_long_lines) {
    char r[2048];
    char pad[600];
    memset(pad, 'a', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    /* a long header we do not read is fine; a long reason phrase too */
    snprintf(r, sizeof r, "HTTP/1.1 200 %s\r\nX-Pad: %s\r\nContent-Length: 1\r\n\r\nz", pad, pad);
    outcome o = parse_all_ways(r, 0, 0);
    AP_CHECK(!o.err && o.done && o.body_bytes == 1);
    /* a long Content-Length line is refused */
    snprintf(r, sizeof r, "HTTP/1.1 200 OK\r\nContent-Length: 1%.*s\r\n\r\nz", 300,
             "                                                                              "
             "                                                                              "
             "                                                                              "
             "                                                                              ");
    o = parse_all_ways(r, 0, 0);
    AP_CHECK(o.err);
}

AP_TEST(http_errors) {
    static const char *const bad[] = {
        "GARBAGE\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 099 OK\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 12a\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        outcome o = parse_all_ways(bad[i], 0, 1);
        AP_CHECK_MSG(o.err, "accepted: %s", bad[i]);
    }
    /* truncations are errors at end of stream, with messages */
    static const char *const cut[] = {
        "",
        "HTTP/1.1 200",
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n",
    };
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        outcome o = parse_all_ways(cut[i], 0, 1);
        AP_CHECK_MSG(o.err, "truncation accepted: %s", cut[i]);
    }
    ap_http_parser p;
    ap_http_parser_init(&p, 0);
    AP_CHECK(ap_http_parser_eof(&p) == -1);
    AP_CHECK(strstr(ap_err_msg(), "before any response byte") != NULL);
    ap_http_parser_init(&p, 0);
    const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    AP_CHECK(ap_http_parser_feed(&p, r, strlen(r)) == (long)strlen(r));
    AP_CHECK(ap_http_parser_eof(&p) == -1);
    AP_CHECK(strcmp(ap_err_msg(), "truncated body: 3 of 10 bytes") == 0);
}

AP_TEST(http_header_limit) {
    size_t n = AP_HTTP_HEADER_MAX + 4096;
    char *r = malloc(n + 1);
    if (!AP_CHECK(r != NULL))
        return;
    size_t off = (size_t)snprintf(r, n, "HTTP/1.1 200 OK\r\n");
    while (off + 20 < n)
        off += (size_t)snprintf(r + off, n - off, "X-A: 0123456789\r\n");
    r[off] = '\0';
    outcome o = parse(r, off, 0, 0, 1);
    AP_CHECK(o.err);
    AP_CHECK(strstr(ap_err_msg(), "header block larger") != NULL);
    o = parse(r, off, 7, 0, 1);
    AP_CHECK(o.err);
    free(r);
}

/* Mutation fuzzing: valid responses with random byte changes, insertions,
 * deletions and truncations, fed whole and in random pieces.  The parser must
 * never read out of bounds (ASan), never consume more than it was given, and
 * reach the same verdict however the input is split. */
AP_TEST(http_fuzz_mutations) {
    static const char *const seeds[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\nboom",
    };
    static const char alphabet[] = "\r\n :;0123456789abcdefHTTP/.,\t-xzCcLl";
    uint64_t rng = 12345;
    char buf[512];
    for (int iter = 0; iter < 20000; iter++) {
        const char *seed = seeds[iter % (sizeof seeds / sizeof seeds[0])];
        size_t n = strlen(seed);
        memcpy(buf, seed, n);
        int edits = 1 + (int)(ap_test_rand(&rng) % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = n ? (size_t)(ap_test_rand(&rng) % n) : 0;
            char c = alphabet[ap_test_rand(&rng) % (sizeof alphabet - 1)];
            switch (ap_test_rand(&rng) % 4) {
            case 0:
                if (n)
                    buf[at] = c;
                break;
            case 1:
                if (n + 1 < sizeof buf) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = c;
                    n++;
                }
                break;
            case 2:
                if (n) {
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                }
                break;
            default:
                n = at;
                break;
            }
        }
        /* heap copy of exactly n bytes, so ASan sees any over-read */
        char *exact = malloc(n ? n : 1);
        if (!AP_CHECK(exact != NULL))
            return;
        memcpy(exact, buf, n);
        int head = (int)(ap_test_rand(&rng) % 8 == 0);
        outcome whole = parse(exact, n, 0, head, 1);
        size_t piece = 1 + (size_t)(ap_test_rand(&rng) % 9);
        outcome split = parse(exact, n, piece, head, 1);
        AP_CHECK_MSG(same(&whole, &split),
                     "iteration %d: verdict depends on the split (%zu-byte pieces)", iter, piece);
        AP_CHECK(whole.consumed <= n);
        free(exact);
        if (ap_test_failures > 20)
            return;
    }
}
