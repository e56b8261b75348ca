/* ap_wait.h -- wait kinds: the one list of reasons a thread or a coroutine waits instead of running, and the metric that holds each. */
#ifndef AP_WAIT_H
#define AP_WAIT_H

/* A wait is time under a node that was not spent running Python or C code
 * on the CPU, for a known reason: in a blocking call (a C call such as
 * socket.recv or lock.acquire, or a line such as `with lock:`) or suspended
 * in an await.  Each kind has one inclusive node metric (ap_metric.h,
 * AP_M_WAIT_*_NS, summed like total_ns): the value on a node is the time
 * under it spent waiting for that kind, so a function's row and a route's
 * split read the same numbers.  The JSON export groups them per function as
 * "waits": {name: ns}.
 *
 * Who fills them: measuring producers fill the kinds only they can see
 * (lock, gil, thread_pool); the others are decided from what the time was
 * spent in, by the rules of ap_wait.c, when a profile is finished.  Both
 * write the same metrics, so every writer shows them alike.  Adding a kind:
 * append it here, give it a metric in ap_metric.h and a row in ap_wait.c. */
typedef enum ap_wait_kind {
    AP_WAIT_NETWORK = 0, /* sockets, streams, HTTP clients */
    AP_WAIT_DATABASE,    /* database drivers */
    AP_WAIT_FILE,        /* file reads and writes */
    AP_WAIT_SLEEP,       /* time.sleep, asyncio.sleep */
    AP_WAIT_SUBPROCESS,  /* waiting for a child process */
    AP_WAIT_LOCK,        /* acquiring a lock, condition, semaphore or event */
    AP_WAIT_GIL,         /* runnable, waiting for the GIL */
    AP_WAIT_THREAD_POOL, /* queued for a free thread-pool worker */
    AP_WAIT_IDLE,        /* a pool worker or selector with nothing to do */
    AP_WAIT_COUNT
} ap_wait_kind;

/* The kind's name as users see it ("network", "thread_pool", ...); NULL
 * for k >= AP_WAIT_COUNT.  Can't fail. */
const char *ap_wait_name(unsigned k);

/* The node metric (ap_metric) that holds kind k, or AP_M_COUNT for
 * k >= AP_WAIT_COUNT.  Can't fail. */
unsigned ap_wait_metric(unsigned k);

/* The kind whose metric is m, or AP_WAIT_COUNT when m holds no wait kind.
 * Can't fail. */
unsigned ap_wait_of_metric(unsigned m);

/* The kind called name, or AP_WAIT_COUNT.  Can't fail. */
unsigned ap_wait_by_name(const char *name);

#endif
