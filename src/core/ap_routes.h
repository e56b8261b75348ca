/* ap_routes.h -- per-route request statistics (count, errors, latency histogram, CPU, bytes) and their encoding. */
#ifndef AP_ROUTES_H
#define AP_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#include "ap_hist.h"

/* A table of request statistics keyed by (route, method, status class).
 *
 * route is a route template ("/items/{item_id}") or any label the caller
 * chooses ("<unmatched>"), at most AP_ROUTES_ROUTE_MAX bytes (longer ones are
 * truncated); method at most AP_ROUTES_METHOD_MAX bytes (truncated too);
 * status class is status / 100 in 1..5, or 0 for "no response was sent".
 *
 * The table holds at most max_keys keys.  Once it is full, a new key is counted
 * in one of the overflow entries (route AP_ROUTES_OVERFLOW, method "*", the
 * request's status class), which do not count against max_keys; so memory is
 * bounded by (max_keys + 6) entries of about 41 KB each (the ap_hist inside).
 *
 * Not thread-safe: one owner serialises every call (the extension holds the
 * GIL).  Lookups of keys already present neither allocate nor lock. */

#define AP_ROUTES_ROUTE_MAX 512
#define AP_ROUTES_METHOD_MAX 16
#define AP_ROUTES_CLASSES 6                 /* status classes 0..5 */
#define AP_ROUTES_OVERFLOW "<overflow>"
#define AP_ROUTES_WAITS 16                  /* room for the wait kinds of ap_wait.h */

/* The stall duration histogram: AP_ROUTES_STALL_BUCKETS buckets, bucket b holding
 * the stalls of at most ap_routes_stall_le_ns[b] ns and more than the bound before it;
 * the last bucket is open (more than the last bound). */
#define AP_ROUTES_STALL_BUCKETS 10
extern const uint64_t ap_routes_stall_le_ns[AP_ROUTES_STALL_BUCKETS - 1];

/* The bucket of a stall of ns.  Can't fail. */
static inline unsigned ap_routes_stall_bucket(uint64_t ns) {
    unsigned b = 0;
    while (b < AP_ROUTES_STALL_BUCKETS - 1 && ns > ap_routes_stall_le_ns[b])
        b++;
    return b;
}

/* Where a route's stalls were: the code the loop thread was running during a stall
 * (the middleware's watchdog, docs/asgi.md), as an opaque text that identifies it (the
 * middleware writes "function\tfile\tline\tcall path"), at most AP_ROUTES_SITE_MAX
 * bytes (longer ones are truncated), with the stalls seen there.  A route keeps the
 * AP_ROUTES_STALL_SITES sites with the most stall time; a site pushed out by one with
 * more loses its counts (the route's stalls still count them). */
#define AP_ROUTES_STALL_SITES 3
#define AP_ROUTES_SITE_MAX 480

typedef struct ap_route_site {
    uint64_t stalls;                        /* 0: an empty slot */
    uint64_t ns;                            /* their time */
    uint64_t max_ns;                        /* the longest */
    uint16_t len;
    char text[AP_ROUTES_SITE_MAX + 1];      /* NUL-terminated */
} ap_route_site;

/* One key's statistics.  Plain data apart from `route`, which the table owns. */
typedef struct ap_route_stat {
    char *route;                            /* NUL-terminated; owned by the table */
    uint32_t route_len;
    uint8_t status_class;                   /* 0..5 */
    char method[AP_ROUTES_METHOD_MAX + 1];  /* NUL-terminated */
    uint64_t errors;                        /* requests that failed: 5xx or an exception */
    uint64_t cpu_ns;                        /* CPU time summed over requests */
    uint64_t bytes_out;                     /* response body bytes summed over requests */
    ap_hist wall;                           /* latency per request, ns; its count is the request count */
    uint64_t waited;                        /* requests whose waits were measured (profiled) */
    uint64_t wait_ns[AP_ROUTES_WAITS];      /* their wait time by ap_wait_kind, ns */
    /* Memory (the middleware's allocation sampling, estimates in bytes): */
    uint64_t mem_requests;                  /* requests whose allocations were sampled */
    uint64_t alloc_bytes;                   /* allocated while they ran */
    uint64_t retained_bytes;                /* of those, still alive when each finished */
    uint64_t live_bytes;                    /* of those, still alive now */
    uint64_t retained_max;                  /* the most one request retained */
    /* Event-loop stalls: steps of the request's own code on the loop thread at or
     * above the middleware's threshold (every other task waited meanwhile): */
    uint64_t stalls;                        /* how many */
    uint64_t stall_ns;                      /* their time */
    uint64_t stall_max_ns;                  /* the longest */
    uint64_t stall_buckets[AP_ROUTES_STALL_BUCKETS]; /* their durations (see above) */
    ap_route_site stall_sites[AP_ROUTES_STALL_SITES]; /* where the stalls were (see above),
                                                          by stall time, the most first */
    /* What stalls cost the other requests on the same loop (the middleware, docs/asgi.md): */
    uint64_t stall_cost_ns;                 /* this key's stalls: their time times the
                                               other requests in flight meanwhile */
    uint64_t delayed;                       /* this key's requests that other requests'
                                               stalls held up */
    uint64_t delayed_ns;                    /* how long, in all */
} ap_route_stat;

typedef struct ap_routes ap_routes;         /* private to ap_routes.c */

/* A new empty table for at most max_keys keys (max_keys >= 1).  On error,
 * NULL is returned with AP_EINVAL (max_keys == 0) or AP_ENOMEM. */
ap_routes *ap_routes_new(size_t max_keys);

/* Release the table and every entry; NULL is ignored.  Can't fail. */
void ap_routes_free(ap_routes *t);

/* The entry for (route, method, status_class), inserted empty if absent; when
 * the table is full, the overflow entry of status_class.  route and method
 * need not be NUL-terminated (route may be NULL if route_len is 0; likewise
 * method).  status_class above 5 is clamped to 5.  The pointer stays valid
 * until ap_routes_free() (entries are never moved or released before; reset
 * empties them in place).  On error, NULL is returned with AP_ENOMEM. */
ap_route_stat *ap_routes_get(ap_routes *t, const char *route, size_t route_len,
                             const char *method, size_t method_len, unsigned status_class);

/* Count one request in s: wall_ns in the latency histogram, cpu_ns and
 * bytes_out added, errors incremented when error is non-zero.  No allocation,
 * no lock.  Can't fail. */
static inline void ap_routes_record(ap_route_stat *s, uint64_t wall_ns, uint64_t cpu_ns,
                                    uint64_t bytes_out, int error) {
    ap_hist_record(&s->wall, wall_ns);
    s->cpu_ns += cpu_ns;
    s->bytes_out += bytes_out;
    s->errors += error != 0;
}

/* Add the waits of one profiled request to s: wait_ns[k] (ns, indexed by
 * ap_wait_kind, nkinds <= AP_ROUTES_WAITS values) and one to waited.  Can't
 * fail. */
static inline void ap_routes_add_waits(ap_route_stat *s, const uint64_t *wait_ns, size_t nkinds) {
    s->waited++;
    for (size_t k = 0; k < nkinds && k < AP_ROUTES_WAITS; k++)
        s->wait_ns[k] += wait_ns[k];
}

/* Add the sampled memory of one finished request to s: alloc bytes allocated
 * while it ran, retained of them still alive at its end (they are live now
 * too).  Can't fail. */
static inline void ap_routes_add_memory(ap_route_stat *s, uint64_t alloc, uint64_t retained) {
    s->mem_requests++;
    s->alloc_bytes += alloc;
    s->retained_bytes += retained;
    s->live_bytes += retained;
    if (retained > s->retained_max)
        s->retained_max = retained;
}

/* Add one request's event-loop stalls to s: n steps of stall_ns in all, the
 * longest max_ns, buckets[b] of them in bucket b (buckets may be NULL: durations
 * unknown, from an older file).  Can't fail. */
static inline void ap_routes_add_stalls(ap_route_stat *s, uint64_t n, uint64_t stall_ns,
                                        uint64_t max_ns, const uint64_t *buckets) {
    s->stalls += n;
    s->stall_ns += stall_ns;
    if (max_ns > s->stall_max_ns)
        s->stall_max_ns = max_ns;
    for (unsigned b = 0; buckets != NULL && b < AP_ROUTES_STALL_BUCKETS; b++)
        s->stall_buckets[b] += buckets[b];
}

/* Add what one request's stalls cost others (cost_ns) and how long other requests'
 * stalls held it up (delayed_ns; it counts in delayed when not 0).  Can't fail. */
static inline void ap_routes_add_stall_delays(ap_route_stat *s, uint64_t cost_ns,
                                              uint64_t delayed_ns) {
    s->stall_cost_ns += cost_ns;
    s->delayed += delayed_ns != 0;
    s->delayed_ns += delayed_ns;
}

/* Add n stalls of ns in all (the longest max_ns) at the site text[0, len) to s's
 * sites (see ap_route_site); len beyond AP_ROUTES_SITE_MAX is cut.  Can't fail. */
void ap_routes_add_stall_site(ap_route_stat *s, const char *text, size_t len, uint64_t n,
                              uint64_t ns, uint64_t max_ns);

/* bytes that a finished request of s retained were freed: they leave its
 * live bytes (which never go below zero: a reset may have emptied them).
 * Can't fail. */
static inline void ap_routes_free_memory(ap_route_stat *s, uint64_t bytes) {
    s->live_bytes = s->live_bytes > bytes ? s->live_bytes - bytes : 0;
}

/* Number of entries (keys and used overflow entries).  Entries that are empty
 * after ap_routes_reset() are still counted.  Can't fail. */
size_t ap_routes_size(const ap_routes *t);

/* The i-th entry, i < ap_routes_size(t), in order of first use (overflow
 * entries included).  Can't fail. */
const ap_route_stat *ap_routes_at(const ap_routes *t, size_t i);

/* Empty every entry in place (keys are kept, so pointers stay valid).
 * Can't fail. */
void ap_routes_reset(ap_routes *t);

/* Encoding, version AP_ROUTES_VERSION; integers little-endian:
 *
 *   4 bytes  magic "APRT"
 *   u8       version = 1
 *   u32      nentries          entries with at least one request
 *   nentries times:
 *     u32    route_len, then route_len bytes (no NUL), <= AP_ROUTES_ROUTE_MAX
 *     u8     method_len, then method_len bytes, <= AP_ROUTES_METHOD_MAX
 *     u8     status_class      0..5
 *     u64    errors            <= the histogram's count
 *     u64    cpu_ns
 *     u64    bytes_out
 *     u32    hist_len, then an ap_hist encoding (ap_hist.h) of hist_len bytes
 *     (version 2 on:)
 *     u64    waited            requests whose waits were measured
 *     u8     nwaits            kinds with a non-zero wait time
 *     nwaits times:
 *       u8   name_len, then the kind's name (ap_wait_name), <= 32 bytes
 *       u64  ns
 *     (version 3 on:)
 *     u64    mem_requests      <= the histogram's count (merged: summed; retained_max:
 *                              the larger)
 *     u64    alloc_bytes, retained_bytes, live_bytes, retained_max
 *     u64    stalls, stall_ns, stall_max_ns   (merged: summed; the max: the larger)
 *     (version 4 on:)
 *     u8     nbuckets = AP_ROUTES_STALL_BUCKETS
 *     u64    stall_buckets[nbuckets]   summed <= stalls (less when a version 3 file was
 *                                      merged in: its stalls have no durations)
 *     (version 5 on:)
 *     u64    stall_cost_ns, delayed, delayed_ns   (delayed <= the histogram's count)
 *     u8     nsites            <= AP_ROUTES_STALL_SITES
 *     nsites times:
 *       u64  stalls, ns, max_ns          (stalls >= 1; summed over the sites <= stalls)
 *       u16  text_len, then text_len bytes, 1..AP_ROUTES_SITE_MAX
 *
 * Kinds travel by name, so a reader whose list of kinds differs drops only
 * the names it does not know.  Versions 1 (no waits), 2 (no memory), 3 (no stall
 * durations) and 4 (no stall sites) are still read.  Empty
 * entries are left out, so a reset table encodes as no entries. */
#define AP_ROUTES_VERSION 5

/* Exact size of ap_routes_encode()'s output for t.  Can't fail. */
size_t ap_routes_encoded_size(const ap_routes *t);

/* Write the encoding of t into buf.  Returns the bytes written; on error (cap
 * too small) returns 0 with AP_ERANGE. */
size_t ap_routes_encode(const ap_routes *t, uint8_t *buf, size_t cap);

/* Add every entry encoded in exactly len bytes of buf to t (histograms merge
 * exactly; counters add).  The whole input is checked before t is changed:
 * returns 0; on error returns -1 with AP_ECORRUPT (bad magic, version,
 * truncation, trailing bytes, lengths or classes out of range, a corrupt
 * histogram, errors above the count) and t is unchanged, or with AP_ENOMEM (t
 * may then hold part of the input).  Any input is safe: nothing past len is
 * read. */
int ap_routes_merge_encoded(ap_routes *t, const uint8_t *buf, size_t len);

#endif /* AP_ROUTES_H */
