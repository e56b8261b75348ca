/* ap_metric.c -- the metric catalogue: one entry per node metric, read by every writer and view. */
#include "ap_metric.h"

#include <string.h>

#define NS "nanoseconds"
#define ALL AP_SUM_ALL
#define OUTER AP_SUM_OUTERMOST
#define T AP_MV_TABLE
#define N AP_MV_TREE

/* Indexed by ap_metric; the order of the per-node views here is the order of
 * the report's --metric choices. */
static const ap_metric_info catalogue[AP_M_COUNT] = {
    [AP_M_CALLS] = {"calls", "count", ALL, T, "calls", NULL, "calls", NULL,
                    "calls that entered the frame"},
    [AP_M_PRIM_CALLS] = {"primitive_calls", "count", ALL, T, "primitive calls", NULL, NULL, NULL,
                         "calls with no frame of the same function above them"},
    [AP_M_SELF_NS] = {"self_ns", NS, ALL, T | N, "self", "wall", "wall", "wall_ns",
                      "time in the frame itself, children and suspensions excluded"},
    [AP_M_TOTAL_NS] = {"total_ns", NS, OUTER, T, "total", NULL, NULL, NULL,
                       "time in the frame with its children, suspensions excluded"},
    [AP_M_CPU_NS] = {"cpu_ns", NS, ALL, T | N, "cpu", "cpu", "cpu", "cpu_ns",
                     "thread CPU time in the frame itself"},
    [AP_M_AWAIT_NS] = {"await_ns", NS, OUTER, T | N, "await", "await", "await", "await_ns",
                       "time the frame was suspended in await"},
    [AP_M_WAIT_NET_NS] = {"wait_network_ns", NS, OUTER, T, "network", NULL, NULL, NULL,
                          "time under the frame waiting for the network"},
    [AP_M_WAIT_FILE_NS] = {"wait_file_ns", NS, OUTER, T, "file", NULL, NULL, NULL,
                           "time under the frame waiting for file I/O"},
    [AP_M_WAIT_DB_NS] = {"wait_database_ns", NS, OUTER, T, "database", NULL, NULL, NULL,
                         "time under the frame waiting for a database"},
    [AP_M_WAIT_LOCK_NS] = {"wait_lock_ns", NS, OUTER, T, "lock", NULL, NULL, NULL,
                           "time under the frame waiting to acquire a lock"},
    [AP_M_WAIT_SLEEP_NS] = {"wait_sleep_ns", NS, OUTER, T, "sleep", NULL, NULL, NULL,
                            "time under the frame in a sleep"},
    [AP_M_SAMPLES] = {"samples", "count", ALL, T | N, "samples", "samples", "samples", "samples",
                      "samples whose stack ended in the frame"},
    [AP_M_ALLOC_BYTES] = {"alloc_bytes", "bytes", ALL, T | N, "alloc", "memory", "alloc_space",
                          "alloc_bytes", "bytes allocated by the frame itself"},
    [AP_M_ALLOC_COUNT] = {"alloc_count", "count", ALL, T, "allocs", NULL, "alloc_objects", NULL,
                          "allocations by the frame itself"},
    [AP_M_LIVE_BYTES] = {"live_bytes", "bytes", ALL, T | N, "live", "live", "inuse_space", "live_bytes",
                         "bytes allocated by the frame and alive at the end"},
    [AP_M_HITS] = {"hits", "count", ALL, T, "hits", NULL, NULL, NULL,
                   "times a line started executing"},
    [AP_M_CPU_TOTAL_NS] = {"cpu_total_ns", NS, OUTER, T, "cpu total", NULL, NULL, NULL,
                           "thread CPU time in the frame with its children"},
    [AP_M_WAIT_GIL_NS] = {"wait_gil_ns", NS, OUTER, T, "gil", NULL, NULL, NULL,
                          "time under the frame waiting for the GIL"},
    [AP_M_WAIT_POOL_NS] = {"wait_thread_pool_ns", NS, OUTER, T, "pool queue", NULL, NULL, NULL,
                           "time under the frame queued for a thread-pool worker"},
    [AP_M_WAIT_IDLE_NS] = {"wait_idle_ns", NS, OUTER, T, "idle", NULL, NULL, NULL,
                           "time under the frame idle, with nothing to do"},
    [AP_M_WAIT_SUBPROC_NS] = {"wait_subprocess_ns", NS, OUTER, T, "subprocess", NULL, NULL,
                              NULL, "time under the frame waiting for a subprocess"},
    [AP_M_PEAK_BYTES] = {"peak_bytes", "bytes", ALL, T, "peak", NULL, NULL, NULL,
                         "the most bytes allocated by the frame and alive at one time"},
    [AP_M_FREED_BYTES] = {"freed_bytes", "bytes", ALL, T, "freed", NULL, NULL, NULL,
                          "bytes freed by the frame, of blocks allocated while profiling"},
};

const ap_metric_info *ap_metric_get(unsigned m) {
    return m < AP_M_COUNT ? &catalogue[m] : NULL;
}

/* Table column order: the catalogue's, but an inclusive metric appended
 * later to the catalogue sits beside its self pair. */
static const unsigned columns[AP_M_COUNT] = {
    AP_M_CALLS,         AP_M_PRIM_CALLS,    AP_M_SELF_NS,     AP_M_TOTAL_NS,
    AP_M_CPU_NS,        AP_M_CPU_TOTAL_NS,  AP_M_AWAIT_NS,    AP_M_WAIT_NET_NS,
    AP_M_WAIT_DB_NS,    AP_M_WAIT_FILE_NS,  AP_M_WAIT_SLEEP_NS, AP_M_WAIT_SUBPROC_NS,
    AP_M_WAIT_LOCK_NS,  AP_M_WAIT_GIL_NS,   AP_M_WAIT_POOL_NS, AP_M_WAIT_IDLE_NS,
    AP_M_SAMPLES,       AP_M_ALLOC_BYTES,   AP_M_ALLOC_COUNT, AP_M_LIVE_BYTES,
    AP_M_PEAK_BYTES,    AP_M_FREED_BYTES,   AP_M_HITS,
};

unsigned ap_metric_column(unsigned i) {
    return i < AP_M_COUNT ? columns[i] : AP_M_COUNT;
}

const char *ap_metric_name(unsigned m) {
    return m < AP_M_COUNT ? catalogue[m].name : NULL;
}

unsigned ap_metric_by_name(const char *name) {
    unsigned m = 0;
    while (m < AP_M_COUNT && strcmp(catalogue[m].name, name) != 0)
        m++;
    return m;
}

unsigned ap_metric_by_view(const char *view) {
    unsigned m = 0;
    while (m < AP_M_COUNT && (catalogue[m].view == NULL || strcmp(catalogue[m].view, view) != 0))
        m++;
    return m;
}
