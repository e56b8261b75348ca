/* test_replay.c -- the access log parsers of apiprof-load's --replay: every format, escapes, malformed and long lines, the bodies file and the plan. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ap_err.h"
#include "ap_test.h"
#include "lg_replay.h"

static char buf[LG_REPLAY_LINE_MAX + 1];

static int parse(const char *line, lg_replay_req *r) {
    return lg_replay_parse_line(line, strlen(line), r, buf, sizeof buf);
}

/* 2000-10-10T20:55:36Z in ns since the epoch. */
#define T_2000_10_10_205536 (INT64_C(971211336) * 1000000000)

AP_TEST(replay_common_and_combined) {
    lg_replay_req r;
    AP_CHECK(parse("127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif?a=1 "
                   "HTTP/1.0\" 200 2326", &r) == 0);
    AP_CHECK(strcmp(r.method, "GET") == 0);
    AP_CHECK(strcmp(r.path, "/apache_pb.gif?a=1") == 0);
    AP_CHECK_EQ_U64(r.path_len, 18);
    AP_CHECK_EQ_U64(r.status, 200);
    AP_CHECK(r.has_time && r.time_ns == T_2000_10_10_205536);
    AP_CHECK(parse("::1 - - [10/Oct/2000:20:55:36.250 +0000] \"POST /orders HTTP/1.1\" 201 "
                   "12 \"http://ref/\" \"Mozilla/5.0 (X11)\"", &r) == 0);
    AP_CHECK(strcmp(r.method, "POST") == 0 && strcmp(r.path, "/orders") == 0);
    AP_CHECK_EQ_U64(r.status, 201);
    AP_CHECK(r.time_ns == T_2000_10_10_205536 + 250000000);
}

AP_TEST(replay_uvicorn) {
    lg_replay_req r;
    AP_CHECK(parse("INFO:     127.0.0.1:51234 - \"GET /items/5?q=x HTTP/1.1\" 404 Not Found",
                   &r) == 0);
    AP_CHECK(strcmp(r.path, "/items/5?q=x") == 0);
    AP_CHECK_EQ_U64(r.status, 404);
    AP_CHECK(!r.has_time);
    /* a logging format that puts the time first */
    AP_CHECK(parse("2000-10-10 20:55:36,500 INFO:     127.0.0.1:1 - \"DELETE /a HTTP/1.1\" 204",
                   &r) == 0);
    AP_CHECK(strcmp(r.method, "DELETE") == 0);
    AP_CHECK(r.has_time && r.time_ns == T_2000_10_10_205536 + 500000000);
}

AP_TEST(replay_json_lines) {
    lg_replay_req r;
    AP_CHECK(parse("{\"method\": \"PUT\", \"path\": \"/u/\\u0041b\", \"status\": 200, "
                   "\"time\": 971211336.125, \"extra\": {\"a\": [1, \"}\"]}}", &r) == 0);
    AP_CHECK(strcmp(r.method, "PUT") == 0 && strcmp(r.path, "/u/Ab") == 0);
    AP_CHECK_EQ_U64(r.status, 200);
    AP_CHECK(r.time_ns == T_2000_10_10_205536 + 125000000);
    AP_CHECK(parse("{\"url\":\"http://h:1/x?y=\\\"z\\\"\",\"timestamp\":\"2000-10-10T22:55:36+02:00\"}",
                   &r) == 0);
    AP_CHECK(strcmp(r.method, "GET") == 0);
    AP_CHECK(strcmp(r.path, "/x?y=\"z\"") == 0);
    AP_CHECK(r.time_ns == T_2000_10_10_205536);
}

AP_TEST(replay_escapes) {
    lg_replay_req r;
    AP_CHECK(parse("h - - [10/Oct/2000:13:55:36 -0700] \"GET /a\\x20b/\\\"q\\\"/\\\\ HTTP/1.1\" "
                   "200 1", &r) == 0 &&
             strcmp(r.path, "/a b/\"q\"/\\") == 0);
}

AP_TEST(replay_malformed) {
    static const char *const bad[] = {
        "", "   ", "just words", "h - - [10/Oct/2000:13:55:36 -0700] \"GET /a HTTP/1.1",
        "h - - [99/Foo/2000:13:55:36 -0700] \"GET /a HTTP/1.1\" 200 1",
        "h - - [10/Oct/2000:13:55:36 -0700] \"get /a HTTP/1.1\" 200 1",
        "h - - [10/Oct/2000:13:55:36 -0700] \"GET /a\" 200 1",
        "h - - [10/Oct/2000:13:55:36 -0700] \"CONNECT host:443 HTTP/1.1\" 200 1",
        "h - - [10/Oct/2000:13:55:36 -0700] \"-\" 400 0",
        "{\"method\": \"GET\"}", "{\"path\": 5}", "{\"path\": \"/a\"", "{\"path\": \"/a\"} x",
        "{\"path\": \"/a\", \"time\": \"yesterday\"}", "{\"path\": \"/a\", \"method\": \"g\"}",
        "{}", "{\"path\": \"/a\", \"x\": [1, 2}",
        "{\"path\": \"/a\", \"time\": 99999999999999}",
        "h - - [10/Oct/9999:13:55:36 -0700] \"GET /a HTTP/1.1\" 200 1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lg_replay_req r;
        AP_CHECK_MSG(parse(bad[i], &r) == -1 && ap_err_code() == AP_EINVAL,
                     "line %zu accepted: %s", i, bad[i]);
    }
}

AP_TEST(replay_long_lines) {
    /* a path that fills the buffer is too long; a long tail after the request is fine */
    size_t n = LG_REPLAY_LINE_MAX + 100;
    char *line = malloc(n + 1);
    if (!AP_CHECK(line != NULL))
        return;
    memset(line, 'a', n);
    memcpy(line, "h - - [10/Oct/2000:13:55:36 -0700] \"GET /", 41);
    line[n] = '\0';
    lg_replay_req r;
    AP_CHECK(lg_replay_parse_line(line, n, &r, buf, 1024) == -1);
    const char *head = "h - - [10/Oct/2000:13:55:36 -0700] \"GET /x HTTP/1.1\" 200 1 \"";
    memcpy(line, head, strlen(head));
    AP_CHECK(lg_replay_parse_line(line, n, &r, buf, sizeof buf) == 0 && strcmp(r.path, "/x") == 0);
    free(line);
}

static char *write_tmp(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_replay_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    ssize_t w = write(fd, text, strlen(text));
    close(fd);
    return w == (ssize_t)strlen(text) ? path : NULL;
}

AP_TEST(replay_plan_and_bodies) {
    char *bp = write_tmp("[{\"method\": \"POST\", \"path\": \"/orders*\", \"body\": \"{\\\"n\\\": 1}\",\n"
                         " \"content_type\": \"application/json\"}]");
    if (!AP_CHECK(bp != NULL))
        return;
    lg_replay_bodies bodies;
    AP_CHECK(lg_replay_bodies_load(&bodies, bp) == 0);
    unlink(bp);
    AP_CHECK_EQ_U64(bodies.n, 1);
    /* times out of order, a bad line, a long line, a blank line */
    char big[LG_REPLAY_LINE_MAX + 64];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    size_t cap = sizeof big + 1024;
    char *log = malloc(cap);
    if (!AP_CHECK(log != NULL))
        return;
    snprintf(log, cap,
             "h - - [10/Oct/2000:13:55:37 -0700] \"GET /a HTTP/1.1\" 200 1\n"
             "h - - [10/Oct/2000:13:55:36 -0700] \"POST /orders/1 HTTP/1.1\" 201 1\n"
             "garbage\n\n%s\n"
             "{\"method\": \"GET\", \"path\": \"/a\", \"time\": 971211338.5}\n", big);
    char *lp = write_tmp(log);
    free(log);
    if (!AP_CHECK(lp != NULL))
        return;
    lg_targets ts;
    lg_targets_init(&ts);
    lg_replay_plan plan;
    AP_CHECK(lg_replay_load(lp, &ts, "http://127.0.0.1:1", &bodies, &plan) == 0);
    unlink(lp);
    AP_CHECK_EQ_U64(plan.n, 3);
    AP_CHECK_EQ_U64(plan.stats.lines, 5);
    AP_CHECK_EQ_U64(plan.stats.malformed, 2);
    AP_CHECK_EQ_U64(plan.stats.first_bad_line, 3);
    AP_CHECK(plan.timed);
    AP_CHECK_EQ_U64(ts.n, 2);
    /* sorted by time: the POST first, offsets 0, 1 s, 2.5 s */
    AP_CHECK(strcmp(ts.items[plan.target[0]].name, "POST /orders/1") == 0);
    AP_CHECK_EQ_U64(plan.offset_ns[1], 1000000000);
    AP_CHECK_EQ_U64(plan.offset_ns[2], 2500000000u);
    AP_CHECK_EQ_U64(ts.items[plan.target[1]].weight, 2);
    const char *req = ts.items[plan.target[0]].request;
    AP_CHECK(strstr(req, "Content-Type: application/json\r\n") != NULL);
    AP_CHECK(strstr(req, "\r\n\r\n{\"n\": 1}") != NULL);
    lg_replay_plan_free(&plan);
    lg_targets_free(&ts);
    lg_replay_bodies_free(&bodies);
}

/* Mutations of good lines of every format: a line parses or is refused with
 * AP_EINVAL, and a parsed one has an upper-case method and a /path within the
 * buffer (ASan and UBSan watch the rest under make sanitize). */
AP_TEST(replay_mutated_lines) {
    static const char *const seeds[] = {
        "127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /a?b=1 HTTP/1.0\" 200 2326 "
        "\"http://r/\" \"agent \\\"x\\\"\"",
        "INFO:     127.0.0.1:51234 - \"POST /items/5 HTTP/1.1\" 201 Created",
        "2000-10-10 20:55:36,500 INFO: 1.2.3.4:1 - \"GET /x\\x41 HTTP/1.1\" 200",
        "{\"method\": \"PUT\", \"path\": \"/u/\\u0041\", \"status\": 200, \"time\": 971211336.125, "
        "\"x\": {\"a\": [1, \"}\", null, true]}}",
        "{\"url\": \"http://h/p\", \"ts\": \"2000-10-10T20:55:36.5+02:00\"}",
    };
    static const char noise[] = "\"\\[]{}:,/ x0-+.TZ\n\r\t";
    uint64_t rng = 21;
    char line[512], out[512];
    for (int round = 0; round < 20000; round++) {
        const char *seed = seeds[round % (sizeof seeds / sizeof seeds[0])];
        size_t n = strlen(seed);
        memcpy(line, seed, n);
        int edits = 1 + (int)(ap_test_rand(&rng) % 4);
        for (int e = 0; e < edits && n > 0; e++) {
            size_t at = ap_test_rand(&rng) % n;
            switch (ap_test_rand(&rng) % 4) {
            case 0: line[at] = noise[ap_test_rand(&rng) % (sizeof noise - 1)]; break;
            case 1: line[at] = (char)(ap_test_rand(&rng) & 0xff); break;
            case 2: n = at; break;   /* cut */
            default:                  /* drop one byte */
                memmove(line + at, line + at + 1, n - at - 1);
                n--;
            }
        }
        lg_replay_req r;
        size_t cap = 1 + ap_test_rand(&rng) % sizeof out;
        int rc = lg_replay_parse_line(line, n, &r, out, cap);
        if (rc == 0) {
            if (!AP_CHECK(r.path != NULL && r.path[0] == '/' && r.path_len < cap &&
                          strlen(r.path) <= r.path_len && r.method[0] >= 'A' && r.method[0] <= 'Z'))
                return;
        } else if (!AP_CHECK_EQ_U64(ap_err_code(), AP_EINVAL)) {
            return;
        }
    }
}

AP_TEST(replay_path_patterns) {
    static const char *const cases[][2] = {
        {"/items/17", "/items/{id}"},
        {"/items/17?page=2", "/items/{id}"},
        {"/users/123e4567-e89b-12d3-a456-426614174000/orders/9", "/users/{id}/orders/{id}"},
        {"/blobs/0123456789abcdef0", "/blobs/{id}"},
        {"/blobs/deadbeefdeadbeef", "/blobs/deadbeefdeadbeef"},   /* no digit: a word */
        {"/v2/items", "/v2/items"},
        {"/", "/"},
        {"/a//b/", "/a//b/"},
    };
    char out[128];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lg_path_pattern(cases[i][0], out, sizeof out);
        if (!AP_CHECK(strcmp(out, cases[i][1]) == 0))
            fprintf(stderr, "  %s -> %s, want %s\n", cases[i][0], out, cases[i][1]);
    }
    lg_path_pattern("/items/17/abcdefgh", out, 12);   /* cut to fit */
    AP_CHECK(strcmp(out, "/items/{id}") == 0);
}

/* A log with more distinct requests than rows: grouped by pattern, counts kept; with
 * more patterns than rows, the least requested share "<other>". */
AP_TEST(replay_groups_many_paths) {
    size_t cap = 1 << 20, len = 0;
    char *log = malloc(cap);
    if (!AP_CHECK(log != NULL))
        return;
    for (int i = 0; i < 3000; i++)   /* 3,000 items, 2 requests each */
        for (int k = 0; k < 2; k++)
            len += (size_t)snprintf(log + len, cap - len,
                                    "{\"method\": \"GET\", \"path\": \"/items/%d\"}\n", i);
    len += (size_t)snprintf(log + len, cap - len, "{\"method\": \"POST\", \"path\": \"/items\"}\n");
    char *lp = write_tmp(log);
    if (!AP_CHECK(lp != NULL)) {
        free(log);
        return;
    }
    lg_targets ts;
    lg_targets_init(&ts);
    lg_replay_plan plan;
    AP_CHECK(lg_replay_load(lp, &ts, "http://127.0.0.1:1", NULL, &plan) == 0);
    unlink(lp);
    AP_CHECK_EQ_U64(ts.n, 3001);
    AP_CHECK(ts.grouped);
    AP_CHECK_EQ_U64(ts.ngroups, 2);
    AP_CHECK(strcmp(ts.groups[0].name, "GET /items/{id}") == 0);
    AP_CHECK_EQ_U64(ts.groups[0].ntargets, 3000);
    AP_CHECK(strcmp(ts.groups[1].name, "POST /items") == 0);
    AP_CHECK(lg_targets_finish(&ts) == 0);
    AP_CHECK_EQ_U64(ts.groups[0].weight, 6000);
    AP_CHECK_EQ_U64(ts.schedule_len, 6001);
    uint64_t seen[2] = {0, 0};
    for (size_t s = 0; s < ts.schedule_len; s++)
        seen[ts.items[ts.schedule[s]].group]++;
    AP_CHECK_EQ_U64(seen[0], 6000);
    AP_CHECK_EQ_U64(seen[1], 1);
    lg_replay_plan_free(&plan);
    lg_targets_free(&ts);

    /* 300 patterns: /p<i>/x with i requests each; the 45 least requested are <other> */
    len = 0;
    for (int i = 1; i <= 300; i++)
        for (int k = 0; k < (i <= 45 ? 1 : 2); k++)
            len += (size_t)snprintf(log + len, cap - len, "{\"path\": \"/p%d/x\"}\n", i);
    lp = write_tmp(log);
    free(log);
    if (!AP_CHECK(lp != NULL))
        return;
    lg_targets_init(&ts);
    AP_CHECK(lg_replay_load(lp, &ts, "http://127.0.0.1:1", NULL, &plan) == 0);
    unlink(lp);
    AP_CHECK_EQ_U64(ts.ngroups, LG_TARGET_MAX);
    AP_CHECK(strcmp(ts.groups[0].name, "GET /p46/x") == 0);
    const lg_group *other = &ts.groups[LG_TARGET_MAX - 1];
    AP_CHECK(strcmp(other->name, "<other>") == 0);
    AP_CHECK_EQ_U64(other->ntargets, 45);
    AP_CHECK(strcmp(ts.items[other->first].name, "GET /p1/x") == 0);
    lg_replay_plan_free(&plan);
    lg_targets_free(&ts);
}

/* A --base with a path: the log's repeated requests are one target (its name has the
 * base's path in front). */
AP_TEST(replay_base_with_a_path) {
    char *lp = write_tmp("{\"path\": \"/x\"}\n{\"path\": \"/x\"}\n{\"path\": \"/y\"}\n");
    if (!AP_CHECK(lp != NULL))
        return;
    lg_targets ts;
    lg_targets_init(&ts);
    lg_replay_plan plan;
    AP_CHECK(lg_replay_load(lp, &ts, "http://127.0.0.1:1/api", NULL, &plan) == 0);
    unlink(lp);
    AP_CHECK_EQ_U64(plan.n, 3);
    AP_CHECK_EQ_U64(ts.n, 2);
    AP_CHECK(ts.n > 0 && strcmp(ts.items[0].name, "GET /api/x") == 0);
    AP_CHECK(ts.n > 0 && ts.items[0].weight == 2);
    lg_replay_plan_free(&plan);
    lg_targets_free(&ts);
}
