/* ap_metric.h -- the metric catalogue: what each node metric of the model means, its unit, how it sums and which views show it. */
#ifndef AP_METRIC_H
#define AP_METRIC_H

/* Every node of a profile carries the same fixed vector of uint64 counters,
 * indexed by ap_metric.  A producer fills the ones it measures; the others
 * stay 0 and cost nothing in the file (a tree chunk stores only the metrics
 * that are non-zero somewhere in it).  Times are nanoseconds of the profile's
 * clock (ap_prof_meta "clock": "wall" or "cpu") unless the name says
 * otherwise.  Appending a metric is a compatible change of the file format;
 * renumbering is not.
 *
 * Adding a metric: append it here and describe it in ap_metric.c's table;
 * every writer, the JSON export, the HTML page and the Python tables read the
 * table (docs/adding-a-metric.md). */
typedef enum ap_metric {
    AP_M_CALLS = 0,       /* real calls that entered this node (a resume is not a call) */
    AP_M_PRIM_CALLS,      /* calls with no frame of the same function above them in
                             the tree (pstats "primitive" calls); set by ap_prof_finish() */
    AP_M_SELF_NS,         /* time on the stack in this frame itself, children excluded,
                             suspensions excluded */
    AP_M_TOTAL_NS,        /* time on the stack with children; suspensions excluded */
    AP_M_CPU_NS,          /* thread CPU time, self (producers that read the CPU clock) */
    AP_M_AWAIT_NS,        /* time this frame was suspended in await (coroutines) */
    AP_M_WAIT_NET_NS,     /* wait kinds (ap_wait.h): time under this node, in a blocking
                             call or suspended in await, spent waiting for the network */
    AP_M_WAIT_FILE_NS,    /* ... for file I/O */
    AP_M_WAIT_DB_NS,      /* ... for a database */
    AP_M_WAIT_LOCK_NS,    /* ... to acquire a lock, condition or semaphore */
    AP_M_WAIT_SLEEP_NS,   /* ... in a sleep (time.sleep, asyncio.sleep) */
    AP_M_SAMPLES,         /* samples whose stack ended here (samplers) */
    AP_M_ALLOC_BYTES,     /* bytes allocated by this frame itself (memory) */
    AP_M_ALLOC_COUNT,     /* allocations by this frame itself */
    AP_M_LIVE_BYTES,      /* bytes allocated here and still alive at the end */
    AP_M_HITS,            /* line-level nodes: times the line started executing */
    AP_M_CPU_TOTAL_NS,    /* thread CPU time with children (the inclusive pair of CPU_NS) */
    AP_M_WAIT_GIL_NS,     /* wait kinds, continued: ... for the GIL */
    AP_M_WAIT_POOL_NS,    /* ... queued for a free thread-pool worker */
    AP_M_WAIT_IDLE_NS,    /* ... idle: a pool worker or selector with nothing to do */
    AP_M_WAIT_SUBPROC_NS, /* ... for a subprocess */
    AP_M_PEAK_BYTES,      /* the most AP_M_LIVE_BYTES this node held at once (memory) */
    AP_M_FREED_BYTES,     /* bytes of blocks allocated while profiling that this frame freed
                             (memory, line profiles: alloc - freed is a line's net bytes) */
    AP_M_COUNT
} ap_metric;

/* How a metric adds up over the nodes of one function (function table,
 * pstats, call graph). */
typedef enum ap_metric_sum {
    AP_SUM_ALL = 0,     /* every node counts: self values, counts */
    AP_SUM_OUTERMOST    /* only nodes with no ancestor of the same function: inclusive
                           values, so that recursion is counted once (pstats cumtime) */
} ap_metric_sum;

/* The views that show a metric (ap_metric_info.views, a bit set). */
#define AP_MV_TABLE 1u   /* function tables (text, JSON "functions", pstats, HTML table) */
#define AP_MV_TREE 2u    /* per-node views (flame graph, speedscope, pprof, callgrind,
                            collapsed, HTML tree): selectable with --metric */

/* One entry of the catalogue. */
typedef struct ap_metric_info {
    const char *name;     /* key in the JSON export and the Python dicts ("self_ns") */
    const char *unit;     /* "nanoseconds", "bytes" or "count" */
    unsigned sum;         /* ap_metric_sum */
    unsigned views;       /* AP_MV_* */
    const char *label;    /* column heading of tables ("self", "total", "cpu") */
    const char *view;     /* the --metric name of per-node views ("wall", "cpu",
                             "await", "memory", "samples"); NULL when not one */
    const char *pprof;    /* pprof sample type ("wall", "alloc_space"); NULL: not exported */
    const char *cost;     /* event name in callgrind files ("wall_ns"); NULL: not exported */
    const char *doc;      /* one sentence: what it measures */
} ap_metric_info;

/* The entry of metric m, or NULL for m >= AP_M_COUNT.  Can't fail. */
const ap_metric_info *ap_metric_get(unsigned m);

/* The metric shown in column i of tables (i < AP_M_COUNT), for tables that
 * show several: the catalogue's order with each inclusive metric right after
 * its self pair (cpu, cpu total, await, ...).  Can't fail. */
unsigned ap_metric_column(unsigned i);

/* The metric's name as used in the JSON export ("calls", "primitive_calls",
 * "self_ns", ...), a static string; NULL for m >= AP_M_COUNT.  Can't fail. */
const char *ap_metric_name(unsigned m);

/* The metric called name (its JSON name), or AP_M_COUNT.  Can't fail. */
unsigned ap_metric_by_name(const char *name);

/* The metric whose per-node view name is view ("wall", ...), or AP_M_COUNT.
 * Can't fail. */
unsigned ap_metric_by_view(const char *view);

#endif /* AP_METRIC_H */
