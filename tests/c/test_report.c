/* test_report.c -- unit tests of the report writers: every format from a small profile, and thousands of mutated native files through the reader and every writer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ap_err.h"
#include "ap_prof.h"
#include "ap_report.h"
#include "ap_test.h"

static const char *const formats[] = {"html", "svg", "dot", "speedscope", "pprof", "collapsed",
                                      "callgrind", "chrome", "json", "pstats"};
#define NFORMATS (sizeof formats / sizeof formats[0])

static ap_frame_id frame(ap_prof *p, const char *q, unsigned line, unsigned lineno, unsigned kind) {
    ap_frame f = {ap_prof_intern(p, q, strlen(q)), ap_prof_intern(p, q, strlen(q)),
                  ap_prof_intern(p, "/nonexistent/app.py", 19), line, lineno, kind};
    return ap_prof_frame_intern(p, &f);
}

/* Two trees (labels), recursion, a line-level frame, a builtin, several
 * metrics, an event ring. */
static ap_prof *sample_profile(void) {
    ap_prof *p = ap_prof_new();
    ap_frame_id main_ = frame(p, "main", 1, 0, AP_FRAME_PYTHON), f = frame(p, "f", 5, 0, AP_FRAME_PYTHON);
    ap_frame_id fl = frame(p, "f", 5, 7, AP_FRAME_PYTHON), b = frame(p, "len", 0, 0, AP_FRAME_BUILTIN);
    const char *names[2] = {"MainThread", "worker"};
    for (int t = 0; t < 2; t++) {
        ap_label l = {ap_prof_intern(p, "thread", 6), ap_prof_intern(p, names[t], strlen(names[t]))};
        ap_tree *tree = ap_prof_tree_new(p, &l, 1);
        ap_node *m = ap_tree_child(tree, ap_tree_root(tree), main_);
        ap_node *f1 = ap_tree_child(tree, m, f), *f2 = ap_tree_child(tree, f1, f);
        ap_node *line = ap_tree_child(tree, f2, fl), *bl = ap_tree_child(tree, line, b);
        ap_node *nodes[5] = {m, f1, f2, line, bl};
        for (int i = 0; i < 5; i++) {
            nodes[i]->m[AP_M_CALLS] = (uint64_t)(1 + i);
            nodes[i]->m[AP_M_SELF_NS] = (uint64_t)(100 * (i + 1) + t);
            nodes[i]->m[AP_M_CPU_NS] = (uint64_t)(50 * i);
            nodes[i]->m[AP_M_AWAIT_NS] = (uint64_t)(i == 2 ? 1000 : 0);
            nodes[i]->m[AP_M_ALLOC_BYTES] = (uint64_t)(64 * i);
        }
        for (int i = 4; i >= 0; i--)
            nodes[i]->m[AP_M_TOTAL_NS] = nodes[i]->m[AP_M_SELF_NS] +
                                         (i < 4 ? nodes[i + 1]->m[AP_M_TOTAL_NS] : 0);
    }
    ap_prof_events_enable(p, 8);
    for (uint64_t i = 0; i < 10; i++) {
        ap_event e = {i * 100, 50, (ap_frame_id)(1 + i % 4), (uint32_t)(i % 2)};
        ap_prof_event_add(p, &e);
    }
    ap_prof_meta_set(p, "argv", "sample \"profile\" <x>");
    /* A route latency histogram: the RLAT chunk is among the mutated bytes. */
    ap_hist *h = ap_prof_latency(p, ap_prof_intern(p, "GET /x", 6));
    for (uint64_t i = 0; h != NULL && i < 20; i++)
        ap_hist_record(h, 1000 + i * 997);
    return p;
}

/* Write format of p to memory; returns the bytes (malloc'd, *len) or NULL. */
static char *render(ap_prof *p, const char *fmt, const ap_report_opts *o, size_t *len) {
    char *mem = NULL;
    FILE *f = open_memstream(&mem, len);
    if (f == NULL)
        return NULL;
    int rc = ap_report_write(p, fmt, o, f);
    fclose(f);
    if (rc != 0) {
        free(mem);
        return NULL;
    }
    return mem;
}

AP_TEST(report_every_format) {
    ap_prof *p = sample_profile();
    for (size_t i = 0; i < NFORMATS; i++) {
        size_t len = 0;
        char *out = render(p, formats[i], NULL, &len);
        if (!AP_CHECK_MSG(out != NULL, "%s: %s", formats[i], ap_err_msg()))
            continue;
        AP_CHECK_MSG(len > 20, "%s wrote %zu bytes", formats[i], len);
        free(out);
    }
    size_t len;
    char *c = render(p, "collapsed", NULL, &len);
    if (AP_CHECK(c != NULL)) {
        /* main;f;f;f:7;len under both threads: 500 + 501. */
        AP_CHECK(strstr(c, "main (/nonexistent/app.py:1);f (/nonexistent/app.py:5);"
                           "f (/nonexistent/app.py:5);f:7 (/nonexistent/app.py:7);len 1001\n") != NULL);
        free(c);
    }
    ap_report_opts o = {.metric = "cpu", .thread = "worker"};
    c = render(p, "collapsed", &o, &len);
    if (AP_CHECK(c != NULL)) {
        unsigned long long sum = 0;
        for (char *line = strtok(c, "\n"); line; line = strtok(NULL, "\n"))
            sum += strtoull(strrchr(line, ' ') + 1, NULL, 10);
        AP_CHECK_EQ_U64(sum, 50 + 100 + 150 + 200);
        free(c);
    }
    o = (ap_report_opts){.metric = "samples"};
    AP_CHECK(render(p, "svg", &o, &len) == NULL && ap_err_code() == AP_EINVAL);
    o = (ap_report_opts){.route = "/nope"};
    AP_CHECK(render(p, "svg", &o, &len) == NULL && ap_err_code() == AP_ENOTFOUND);
    AP_CHECK(render(p, "gif", NULL, &len) == NULL && ap_err_code() == AP_EINVAL);
    ap_prof_free(p);
    ap_prof *empty = ap_prof_new();
    AP_CHECK(render(empty, "chrome", NULL, &len) == NULL && ap_err_code() == AP_ENOTFOUND);
    for (size_t i = 0; i < NFORMATS; i++) {   /* no tree at all: no crash */
        char *out = render(empty, formats[i], NULL, &len);
        free(out);
    }
    ap_prof_free(empty);
    AP_CHECK(strcmp(ap_report_format_for_path("x/y.speedscope.json"), "speedscope") == 0);
    AP_CHECK(strcmp(ap_report_format_for_path("callgrind.out.12"), "callgrind") == 0);
    AP_CHECK(strcmp(ap_report_format_for_path("a.pb.gz"), "pprof") == 0);
    AP_CHECK(ap_report_format_for_path("a.gif") == NULL);
}

/* Pyroscope's PushRequest: series (1) { labels (1) { name (1), value (2) }...,
 * samples (2) { raw_profile (1) } }, byte for byte. */
AP_TEST(report_pyroscope_push_request) {
    static const char *const labels[] = {"service_name", "shop", "route", "/a/{id}"};
    static const unsigned char want[] = {
        0x0a, 0x2e,                                                     /* series, 46 bytes */
        0x0a, 0x14, 0x0a, 0x0c, 's', 'e', 'r', 'v', 'i', 'c', 'e', '_', 'n', 'a', 'm', 'e',
        0x12, 0x04, 's', 'h', 'o', 'p',                                 /* labels */
        0x0a, 0x10, 0x0a, 0x05, 'r', 'o', 'u', 't', 'e', 0x12, 0x07, '/', 'a', '/', '{', 'i',
        'd', '}',                                                       /* labels */
        0x12, 0x04, 0x0a, 0x02, 0x1f, 0x8b,                             /* samples */
    };
    ap_sbuf sb = {0};
    AP_CHECK(ap_pprof_push_request(labels, 2, "\x1f\x8b", 2, &sb) == 0);
    AP_CHECK_EQ_U64(sb.len, sizeof want);
    AP_CHECK(sb.len == sizeof want && memcmp(sb.data, want, sizeof want) == 0);
    ap_sbuf_free(&sb);
}

/* The native reader and every writer on mutated and truncated files: each
 * read fails with ECORRUPT or yields a profile every writer handles (or
 * refuses with EINVAL / ENOTFOUND). */
AP_TEST(report_mutated_files) {
    ap_prof *p = sample_profile();
    char path[] = "/tmp/ap_test_report_XXXXXX";
    int fd = mkstemp(path);
    if (!AP_CHECK(fd >= 0))
        return;
    close(fd);
    AP_CHECK(ap_prof_write(p, path) == 0);
    ap_prof_free(p);
    FILE *f = fopen(path, "rb");
    uint8_t orig[8192];
    size_t n = f ? fread(orig, 1, sizeof orig, f) : 0;
    if (f)
        fclose(f);
    unlink(path);
    if (!AP_CHECK(n > 100 && n < sizeof orig))
        return;
    FILE *sink = fopen("/dev/null", "w");
    uint8_t buf[8192];
    uint64_t seed = 7;
    unsigned read_ok = 0, read_bad = 0;
    for (unsigned iter = 0; iter < 2500 + n; iter++) {
        memcpy(buf, orig, n);
        size_t len = n;
        if (iter < n) {
            len = iter;   /* every truncation */
        } else {
            unsigned flips = 1 + (unsigned)(ap_test_rand(&seed) % 4);
            for (unsigned k = 0; k < flips; k++) {
                size_t at = 16 + (size_t)(ap_test_rand(&seed) % (n - 16));
                buf[at] = (uint8_t)ap_test_rand(&seed);
            }
        }
        ap_err_clear();
        ap_prof *q = ap_prof_read_mem(buf, len, NULL);
        if (q == NULL) {
            read_bad++;
            if (!AP_CHECK_MSG(ap_err_code() == AP_ECORRUPT, "iter %u: %s", iter, ap_err_msg()))
                break;
            continue;
        }
        read_ok++;
        for (size_t i = 0; i < NFORMATS; i++) {
            if (ap_report_write(q, formats[i], NULL, sink) != 0 &&
                !AP_CHECK_MSG(ap_err_code() == AP_EINVAL || ap_err_code() == AP_ENOTFOUND,
                              "iter %u %s: %s", iter, formats[i], ap_err_msg()))
                break;
        }
        ap_prof_free(q);
    }
    AP_CHECK(read_ok > 500 && read_bad > 10);
    fclose(sink);
}

/* The escapers on random bytes: the JSON literal has no raw control character, '<' or
 * unescaped quote and is valid UTF-8; the XML/HTML text has none of & < > " ' except
 * '&' opening one of its five entities, no control character but tab, valid UTF-8. */
static int valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t len = ap_sbuf_utf8_len((const unsigned char *)s + i);
        if (len == 0 || i + len > n)
            return 0;
        i += len;
    }
    return 1;
}

AP_TEST(sbuf_escapes_random) {
    static const char *const entities[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&#39;"};
    /* U+2028 (e2 80 a8) and e-acute (c3 a9) among the markup characters */
    static const char charset[] = {'<', '>', '&', '"', '\'', '\\', '\n', 0x1b, (char)0xe2,
                                   (char)0x80, (char)0xa8, (char)0xc3, (char)0xa9, 'a', '/'};
    uint64_t seed = 13;
    char in[64];
    for (unsigned iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)(ap_test_rand(&seed) % (sizeof in - 1));
        for (size_t i = 0; i < n; i++) {
            uint64_t r = ap_test_rand(&seed);
            /* mostly the characters that matter, some arbitrary bytes */
            in[i] = r % 3 ? charset[r % sizeof charset] : (char)(r >> 8);
            if (in[i] == 0)
                in[i] = 'z';
        }
        in[n] = 0;
        ap_sbuf j = {0}, x = {0};
        ap_sbuf_json_str(&j, in);
        ap_sbuf_xml_str(&x, in);
        if (!AP_CHECK(!j.failed && !x.failed) || !AP_CHECK(j.len >= 2 && j.data[0] == '"') ||
            !AP_CHECK(j.data[j.len - 1] == '"') || !AP_CHECK(valid_utf8(j.data, j.len)) ||
            !AP_CHECK(valid_utf8(x.data ? x.data : "", x.len)))
            break;
        int ok = 1;
        for (size_t i = 1; ok && i + 1 < j.len; i++) {
            unsigned char c = (unsigned char)j.data[i];
            if (c < 0x20 || c == '<' || c == 0x7f) {
                ok = c == 0x7f;   /* DEL is valid in JSON and inert in a script element */
            } else if (c == '\\') {
                i++;   /* the escaped character */
            } else if (c == '"') {
                ok = 0;
            }
        }
        for (size_t i = 0; ok && i < x.len; i++) {
            unsigned char c = (unsigned char)x.data[i];
            if ((c < 0x20 && c != '\t') || c == '<' || c == '>' || c == '"' || c == '\'') {
                ok = 0;
            } else if (c == '&') {
                ok = 0;
                for (size_t e = 0; e < 5; e++)
                    if (strncmp(x.data + i, entities[e], strlen(entities[e])) == 0)
                        ok = 1;
            }
        }
        AP_CHECK_MSG(ok, "iter %u: escaped output of %zu bytes unsafe", iter, n);
        ap_sbuf_free(&j);
        ap_sbuf_free(&x);
        if (!ok)
            break;
    }
}
