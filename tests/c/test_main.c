/* test_main.c -- runs every C unit test of the core and prints "N passed, N failed"; also tests ap_err. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ap_clock.h"
#include "ap_err.h"
#include "ap_test.h"

unsigned long ap_test_failures;

int ap_test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    ap_test_failures++;
    return 0;
}

int ap_test_eq_u64(const char *file, int line, const char *ea, const char *eb, uint64_t a,
                   uint64_t b) {
    if (a == b)
        return 1;
    return ap_test_fail(file, line, "%s == %s: %llu != %llu", ea, eb, (unsigned long long)a,
                        (unsigned long long)b);
}

/* ---- ap_err ----------------------------------------------------------------- */

AP_TEST(err_set_and_clear) {
    ap_err_clear();
    AP_CHECK_EQ_U64(ap_err_code(), AP_OK);
    AP_CHECK(strcmp(ap_err_msg(), "") == 0);
    AP_CHECK(ap_err_set(AP_EINVAL, "bad %s %d", "thing", 42) == -1);
    AP_CHECK_EQ_U64(ap_err_code(), AP_EINVAL);
    AP_CHECK(strcmp(ap_err_msg(), "bad thing 42") == 0);
    AP_CHECK(ap_err_set(AP_EIO, NULL) == -1);
    AP_CHECK(strcmp(ap_err_msg(), "EIO") == 0);
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ap_err_set(AP_EFULL, "%s", big);
    AP_CHECK_EQ_U64(strlen(ap_err_msg()), AP_ERR_MSG_MAX - 1);
    ap_err_clear();
    AP_CHECK_EQ_U64(ap_err_code(), AP_OK);
    AP_CHECK(strcmp(ap_err_msg(), "") == 0);
}

AP_TEST(err_names) {
    AP_CHECK(strcmp(ap_err_name(AP_OK), "OK") == 0);
    AP_CHECK(strcmp(ap_err_name(AP_ENOMEM), "ENOMEM") == 0);
    AP_CHECK(strcmp(ap_err_name(AP_ECORRUPT), "ECORRUPT") == 0);
    AP_CHECK(strcmp(ap_err_name(AP_EFULL), "EFULL") == 0);
    AP_CHECK(strcmp(ap_err_name((ap_errcode)99), "EUNKNOWN") == 0);
}

static void *err_other_thread(void *arg) {
    int *ok = arg;
    *ok = ap_err_code() == AP_OK && ap_err_msg()[0] == '\0';
    ap_err_set(AP_ENOTFOUND, "other thread");
    return NULL;
}

AP_TEST(err_thread_local) {
    ap_err_set(AP_ERANGE, "main thread");
    pthread_t t;
    int ok = 0;
    if (!AP_CHECK(pthread_create(&t, NULL, err_other_thread, &ok) == 0))
        return;
    pthread_join(t, NULL);
    AP_CHECK(ok);
    AP_CHECK_EQ_U64(ap_err_code(), AP_ERANGE);
    AP_CHECK(strcmp(ap_err_msg(), "main thread") == 0);
    ap_err_clear();
}

/* ---- runner ------------------------------------------------------------------ */

#define AP_TEST_LIST(X)                                                                 \
    X(err_set_and_clear) X(err_names) X(err_thread_local)                               \
    X(clock_init_source) X(clock_env_forces_monotonic) X(clock_monotonic)               \
    X(clock_agrees_with_monotonic) X(clock_thread_cpu_busy) X(clock_thread_cpu_sleep)   \
    X(hist_bucket_layout) X(hist_empty) X(hist_percentiles) X(hist_clamp)               \
    X(hist_record_n) X(hist_merge) X(hist_roundtrip) X(hist_decode_truncations)         \
    X(hist_decode_rejects) X(hist_decode_mutations) X(hist_alloc)                                              \
    X(arena_alignment) X(arena_big) X(arena_reset) X(arena_strings)                     \
    X(arena_free_enomem)                                                                \
    X(map_reference) X(map_growth) X(map_iteration) X(map_clear_free) X(map_hint)       \
    X(hash_bytes)                                                                       \
    X(http_content_length) X(http_chunked_trailers) X(http_close_delimited)             \
    X(http_no_body_cases) X(http_keep_alive_rules) X(http_long_lines) X(http_errors)    \
    X(http_header_limit) X(http_fuzz_mutations) \
    X(prof_intern) X(prof_functab_recursion) X(prof_merge_threads) X(prof_select_by_label) \
    X(prof_file_roundtrip) X(prof_json_roundtrip) X(prof_exports) X(prof_event_ring) X(prof_line_nodes)        \
    X(prof_route_latency) X(prof_absorb) X(prof_queries_many_shapes) X(findings_slowest_by_p95) X(findings_slowest_by_p95_alone)   \
    X(routes_keys) X(routes_overflow) X(routes_roundtrip_merge) X(routes_decode_rejects) \
    X(routes_reads_version_1_and_unknown_kinds) X(routes_stall_sites) X(prom_label_escapes) X(prom_seconds_exact) X(prom_routes_families)                \
    X(report_every_format) X(report_pyroscope_push_request) X(report_mutated_files) X(sbuf_escapes_random)              \
    X(metric_catalogue) X(metric_cpu_split) X(metric_wait_kinds)                            \
    X(spy_line_of_real_tables) X(spy_line_of_every_form) X(spy_line_of_cut_and_mutated_tables) \
    X(spy_read_self) X(spy_proc_files_of_self) X(spy_await_reads_garbage_as_no_chain_or_torn) \
    X(spy_await_reads_a_coroutine_at_the_end_of_a_mapping) \
    X(spy_await_goes_through_the_middleware_awaitable) X(spy_find_in_module_finds_sections) \
    X(findings_classes) X(findings_classes_of_generated_code) X(findings_of_an_app)       \
    X(findings_none_for_an_empty_profile) X(findings_leak_suspect_needs_samples_in_sampled_mode) \
    X(findings_hot_line_from_a_line_profile)                                            \
    X(wait_patterns) X(wait_kinds_of_calls_and_awaits) X(wait_async_generator_is_capped)  \
    X(query_normalise) X(query_records_roundtrip) X(query_kinds_roundtrip)              \
    X(wait_hidden_call_is_the_callers_own_time)                                         \
    X(stall_model_and_file) X(stall_decode_rejects) X(stall_json_and_finding) X(stall_off_the_cpu) \
    X(timeline_lanes_nesting_and_kinds) \
    X(memtl_model_file_and_merge) X(memtl_decode_rejects) X(memtl_json_and_chart) \
    X(unrel_model_file_and_json) X(unrel_json_of_requests) \
    X(lock_contention_skips_pool_machinery) \
    X(diff_matches_across_line_shifts) X(diff_matches_recursion_by_level)               \
    X(diff_new_and_vanished) X(diff_per_request) X(diff_views_escape_names) \
    X(replay_common_and_combined) X(replay_uvicorn) X(replay_json_lines) X(replay_escapes) \
    X(replay_malformed) X(replay_long_lines) X(replay_plan_and_bodies) X(replay_mutated_lines) \
    X(replay_path_patterns) X(replay_groups_many_paths) X(replay_base_with_a_path)

#define AP_DECLARE(name) AP_TEST(name);
AP_TEST_LIST(AP_DECLARE)

static const struct {
    const char *name;
    void (*fn)(void);
} tests[] = {
#define AP_ENTRY(name) {#name, ap_test_##name},
    AP_TEST_LIST(AP_ENTRY)
};

int main(int argc, char **argv) {
    /* Helper mode for clock_env_forces_monotonic, which runs this binary again
     * with another environment. */
    if (argc == 2 && strcmp(argv[1], "--print-clock-source") == 0) {
        ap_clock_init();
        puts(ap_clock_source());
        return 0;
    }
    const char *only = argc == 2 ? argv[1] : NULL;
    unsigned passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (only != NULL && strstr(tests[i].name, only) == NULL)
            continue;
        unsigned long before = ap_test_failures;
        tests[i].fn();
        if (ap_test_failures == before) {
            passed++;
        } else {
            failed++;
            fprintf(stderr, "FAIL %s\n", tests[i].name);
        }
    }
    printf("%u passed, %u failed\n", passed, failed);
    return failed != 0;
}
