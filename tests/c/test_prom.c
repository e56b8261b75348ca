/* test_prom.c -- unit tests of ap_prom: label escapes, exact seconds, families and cumulative buckets. */
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_prom.h"
#include "ap_test.h"
#include "ap_wait.h"

static int has(const ap_sbuf *sb, const char *needle) {
    return sb->data != NULL && strstr(sb->data, needle) != NULL;
}

AP_TEST(prom_label_escapes) {
    ap_sbuf sb = {0};
    static const char v[] = "a\\b\"c\nd\xff\xe2\x82";
    ap_prom_label(&sb, "route", v, sizeof v - 1);
    ap_sbuf_putc(&sb, '\0');
    AP_CHECK_MSG(strcmp(sb.data, "route=\"a\\\\b\\\"c\\nd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"") == 0,
                 "escaped: %s", sb.data);
    ap_sbuf_free(&sb);
    ap_sbuf s2 = {0};
    ap_prom_label(&s2, "x", "\xe2\x82\xac", 3); /* a whole euro sign stays */
    ap_sbuf_putc(&s2, '\0');
    AP_CHECK(strcmp(s2.data, "x=\"\xe2\x82\xac\"") == 0);
    ap_sbuf_free(&s2);
}

AP_TEST(prom_seconds_exact) {
    static const struct {
        uint64_t ns;
        const char *text;
    } cases[] = {{0, "0"}, {1, "0.000000001"}, {1500000000u, "1.5"}, {5000000, "0.005"},
                 {123456789012u, "123.456789012"}, {10000000000u, "10"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ap_sbuf sb = {0};
        ap_prom_seconds(&sb, cases[i].ns);
        ap_sbuf_putc(&sb, '\0');
        AP_CHECK_MSG(strcmp(sb.data, cases[i].text) == 0, "%s != %s", sb.data, cases[i].text);
        ap_sbuf_free(&sb);
    }
}

AP_TEST(prom_routes_families) {
    ap_routes *t = ap_routes_new(8);
    if (!AP_CHECK(t != NULL))
        return;
    ap_route_stat *a = ap_routes_get(t, "/items/{id}", 11, "GET", 3, 2);
    ap_route_stat *e = ap_routes_get(t, "/boom\"", 6, "POST", 4, 5);
    (void)ap_routes_get(t, "/never", 6, "GET", 3, 2); /* empty: left out */
    for (int i = 0; i < 90; i++)
        ap_routes_record(a, 2000000, 500000, 10, 0);  /* 2 ms, 0.5 ms CPU */
    for (int i = 0; i < 10; i++)
        ap_routes_record(a, 40000000, 1000000, 10, 0); /* 40 ms, 1 ms CPU */
    ap_routes_record(e, 1000000, 1000000, 0, 1);
    uint64_t w[AP_WAIT_COUNT] = {0};
    w[AP_WAIT_SLEEP] = 400000000; /* 0.4 s of the 0.525 s waited was a sleep */
    ap_routes_add_waits(a, w, AP_WAIT_COUNT);
    uint64_t bounds[] = {1000000, 5000000, 50000000};
    ap_sbuf sb = {0};
    AP_CHECK(ap_prom_routes(&sb, t, bounds, 3, "service=\"shop\"") == 0);
    ap_sbuf_putc(&sb, '\0');
    const char *L = "{service=\"shop\",route=\"/items/{id}\",method=\"GET\",status=\"2xx\"";
    char want[256];
    snprintf(want, sizeof want, "apiprof_requests_total%s} 100\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s in\n%s", want, sb.data);
    snprintf(want, sizeof want, "apiprof_request_duration_seconds_bucket%s,le=\"0.001\"} 0\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_request_duration_seconds_bucket%s,le=\"0.005\"} 90\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_request_duration_seconds_bucket%s,le=\"0.05\"} 100\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_request_duration_seconds_bucket%s,le=\"+Inf\"} 100\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_request_duration_seconds_sum%s} 0.58\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_request_cpu_seconds_total%s} 0.055\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_request_wait_seconds_total%s,kind=\"unclassified\"} 0.125\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_request_wait_seconds_total%s,kind=\"sleep\"} 0.4\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_request_waits_measured_total%s} 1\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    AP_CHECK(has(&sb, "apiprof_request_errors_total{service=\"shop\",route=\"/boom\\\"\","
                      "method=\"POST\",status=\"5xx\"} 1\n"));
    AP_CHECK(has(&sb, "# TYPE apiprof_request_duration_seconds histogram\n"));
    AP_CHECK(!has(&sb, "/never"));
    /* stalls always; memory only once a request's memory was sampled */
    snprintf(want, sizeof want, "apiprof_request_stalls_total%s} 0\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    AP_CHECK(!has(&sb, "apiprof_request_alloc_bytes_total") && !has(&sb, "live_bytes"));
    AP_CHECK(has(&sb, "# TYPE apiprof_request_stall_duration_seconds histogram\n") &&
             !has(&sb, "apiprof_request_stall_duration_seconds_bucket"));   /* no stall yet */
    uint64_t sb2[AP_ROUTES_STALL_BUCKETS] = {0};
    sb2[ap_routes_stall_bucket(100000000u)]++;
    sb2[ap_routes_stall_bucket(200000000u)]++;
    ap_routes_add_stalls(a, 2, 300000000u, 200000000u, sb2);
    ap_routes_add_memory(a, 4096, 1024);
    ap_routes_free_memory(a, 256);
    sb.len = 0;
    AP_CHECK(ap_prom_routes(&sb, t, bounds, 3, "service=\"shop\"") == 0);
    ap_sbuf_putc(&sb, '\0');
    snprintf(want, sizeof want, "apiprof_request_stalls_total%s} 2\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_request_stall_seconds_total%s} 0.3\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    /* their durations, 100 ms and 200 ms, cumulative */
    static const char *const stall_rows[][2] = {{"0.05", "0"}, {"0.1", "1"}, {"0.25", "2"},
                                               {"+Inf", "2"}};
    for (size_t i = 0; i < sizeof stall_rows / sizeof stall_rows[0]; i++) {
        snprintf(want, sizeof want, "apiprof_request_stall_duration_seconds_bucket%s,le=\"%s\"} %s\n",
                 L, stall_rows[i][0], stall_rows[i][1]);
        AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    }
    snprintf(want, sizeof want, "apiprof_request_stall_duration_seconds_sum%s} 0.3\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_request_stall_duration_seconds_count%s} 2\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_request_alloc_bytes_total%s} 4096\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_request_retained_bytes_total%s} 1024\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    snprintf(want, sizeof want, "apiprof_route_live_bytes%s} 768\n", L);
    AP_CHECK_MSG(has(&sb, want), "missing %s", want);
    AP_CHECK(has(&sb, "# TYPE apiprof_route_live_bytes gauge\n"));
    /* each family's samples follow its TYPE line: none is repeated */
    const char *first = strstr(sb.data, "# TYPE apiprof_requests_total");
    AP_CHECK(first != NULL && strstr(first + 1, "# TYPE apiprof_requests_total") == NULL);
    ap_sbuf_free(&sb);

    ap_sbuf bad = {0};
    uint64_t down[] = {5, 4};
    AP_CHECK(ap_prom_routes(&bad, t, down, 2, NULL) == -1 && ap_err_code() == AP_EINVAL);
    AP_CHECK(ap_prom_routes(&bad, t, down, 0, NULL) == -1);
    ap_sbuf_free(&bad);
    ap_routes_free(t);
}
