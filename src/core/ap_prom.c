/* ap_prom.c -- route statistics in the Prometheus text exposition format (version 0.0.4). */
#include "ap_prom.h"

#include <string.h>

#include "ap_err.h"
#include "ap_wait.h"

void ap_prom_label(ap_sbuf *sb, const char *name, const char *value, size_t n) {
    ap_sbuf_puts(sb, name);
    ap_sbuf_puts(sb, "=\"");
    const unsigned char *c = (const unsigned char *)value, *end = c + n;
    while (c < end) {
        if (*c == '\\') {
            ap_sbuf_puts(sb, "\\\\");
            c++;
        } else if (*c == '"') {
            ap_sbuf_puts(sb, "\\\"");
            c++;
        } else if (*c == '\n') {
            ap_sbuf_puts(sb, "\\n");
            c++;
        } else if (*c < 0x80) {
            ap_sbuf_putc(sb, (char)*c++);
        } else {
            /* a sequence cut by the end of the value is not valid either */
            unsigned char seq[4] = {0, 0, 0, 0};
            size_t room = (size_t)(end - c) < 4 ? (size_t)(end - c) : 4;
            memcpy(seq, c, room);
            size_t len = ap_sbuf_utf8_len(seq);
            if (len == 0 || len > room) {
                ap_sbuf_puts(sb, "\xef\xbf\xbd");
                c++;
            } else {
                ap_sbuf_put(sb, c, len);
                c += len;
            }
        }
    }
    ap_sbuf_putc(sb, '"');
}

void ap_prom_seconds(ap_sbuf *sb, uint64_t ns) {
    ap_sbuf_u64(sb, ns / 1000000000u);
    uint64_t frac = ns % 1000000000u;
    if (frac == 0)
        return;
    char digits[10];
    for (int i = 8; i >= 0; i--) {
        digits[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    size_t n = 9;
    while (digits[n - 1] == '0')
        n--;
    ap_sbuf_putc(sb, '.');
    ap_sbuf_put(sb, digits, n);
}

/* The labels of entry s, without braces: extra, route, method, status. */
static void entry_labels(ap_sbuf *sb, const ap_route_stat *s, const char *extra) {
    static const char *const CLASS_NAMES[AP_ROUTES_CLASSES] = {"none", "1xx", "2xx", "3xx",
                                                               "4xx", "5xx"};
    if (extra != NULL && extra[0] != '\0') {
        ap_sbuf_puts(sb, extra);
        ap_sbuf_putc(sb, ',');
    }
    ap_prom_label(sb, "route", s->route, s->route_len);
    ap_sbuf_putc(sb, ',');
    ap_prom_label(sb, "method", s->method, strlen(s->method));
    ap_sbuf_putc(sb, ',');
    ap_prom_label(sb, "status", CLASS_NAMES[s->status_class], strlen(CLASS_NAMES[s->status_class]));
}

static void family(ap_sbuf *sb, const char *name, const char *type, const char *help) {
    ap_sbuf_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

enum { F_REQUESTS, F_ERRORS, F_CPU, F_WAIT, F_WAITED, F_BYTES, F_STALLS, F_STALL_S,
       F_ALLOC, F_RETAINED, F_COUNTERS };
#define F_FIRST_MEMORY F_ALLOC   /* the families written only when memory was sampled */

static const struct {
    const char *name, *help;
} COUNTERS[F_COUNTERS] = {
    {"apiprof_requests_total", "Requests served, by route, method and status class."},
    {"apiprof_request_errors_total",
     "Requests that failed (a 5xx response or an exception), by route, method and status class."},
    {"apiprof_request_cpu_seconds_total",
     "CPU time of the app's coroutine steps, summed over requests."},
    {"apiprof_request_wait_seconds_total",
     "Wall time less CPU time, summed over requests; kind is a wait kind where profiled "
     "requests measured one, else unclassified."},
    {"apiprof_request_waits_measured_total",
     "Requests whose waits were measured by kind (profiled requests)."},
    {"apiprof_response_bytes_total", "Response body bytes, summed over requests."},
    {"apiprof_request_stalls_total",
     "Steps of the requests' own code that held the event loop for the stall threshold or "
     "longer."},
    {"apiprof_request_stall_seconds_total", "Time of those event-loop stalls."},
    {"apiprof_request_alloc_bytes_total",
     "Bytes allocated by the requests (the middleware's memory=True; a sampled estimate)."},
    {"apiprof_request_retained_bytes_total",
     "Of those, bytes still alive when each request finished (a sampled estimate)."},
};

static void counter_value(ap_sbuf *sb, int f, const ap_route_stat *s) {
    const ap_hist *h = &s->wall;
    switch (f) {
    case F_REQUESTS:
        ap_sbuf_u64(sb, ap_hist_count(h));
        break;
    case F_ERRORS:
        ap_sbuf_u64(sb, s->errors);
        break;
    case F_CPU:
        ap_prom_seconds(sb, s->cpu_ns);
        break;
    case F_WAITED:
        ap_sbuf_u64(sb, s->waited);
        break;
    case F_STALLS:
        ap_sbuf_u64(sb, s->stalls);
        break;
    case F_STALL_S:
        ap_prom_seconds(sb, s->stall_ns);
        break;
    case F_ALLOC:
        ap_sbuf_u64(sb, s->alloc_bytes);
        break;
    case F_RETAINED:
        ap_sbuf_u64(sb, s->retained_bytes);
        break;
    default:
        ap_sbuf_u64(sb, s->bytes_out);
        break;
    }
}

/* The wait time of s not attributed to a kind: wall less CPU less the kinds'. */
static uint64_t unclassified(const ap_route_stat *s) {
    uint64_t wall = ap_hist_sum(&s->wall), left = wall > s->cpu_ns ? wall - s->cpu_ns : 0;
    for (unsigned k = 0; k < AP_WAIT_COUNT; k++)
        left = left > s->wait_ns[k] ? left - s->wait_ns[k] : 0;
    return left;
}

/* One wait sample of s: kind name, ns. */
static void wait_sample(ap_sbuf *sb, const ap_route_stat *s, const char *extra, const char *kind,
                        uint64_t ns) {
    ap_sbuf_puts(sb, COUNTERS[F_WAIT].name);
    ap_sbuf_putc(sb, '{');
    entry_labels(sb, s, extra);
    ap_sbuf_putc(sb, ',');
    ap_prom_label(sb, "kind", kind, strlen(kind));
    ap_sbuf_puts(sb, "} ");
    ap_prom_seconds(sb, ns);
    ap_sbuf_putc(sb, '\n');
}

/* Cumulative counts of h at each bound (a bucket by its midpoint). */
static void bucket_counts(const ap_hist *h, const uint64_t *bounds, size_t nb, uint64_t *out) {
    memset(out, 0, nb * sizeof *out);
    for (size_t i = 0; i < AP_HIST_BUCKETS; i++) {
        uint64_t n = h->counts[i];
        if (n == 0)
            continue;
        uint64_t lo = ap_hist_bucket_low(i), hi = ap_hist_bucket_high(i);
        uint64_t mid = lo + (hi - lo) / 2;
        for (size_t b = 0; b < nb; b++)
            if (mid <= bounds[b])
                out[b] += n;
    }
}

/* One histogram of family name for the entry s: a bucket line per bound (cum[b]
 * values at or under bounds[b] ns) and +Inf (count), then _sum (sum_ns) and _count. */
static void histogram_sample(ap_sbuf *sb, const char *name, const ap_route_stat *s,
                             const char *extra, const uint64_t *bounds, const uint64_t *cum,
                             size_t nb, uint64_t count, uint64_t sum_ns) {
    for (size_t b = 0; b <= nb; b++) {
        ap_sbuf_printf(sb, "%s_bucket{", name);
        entry_labels(sb, s, extra);
        ap_sbuf_puts(sb, ",le=\"");
        if (b < nb)
            ap_prom_seconds(sb, bounds[b]);
        else
            ap_sbuf_puts(sb, "+Inf");
        ap_sbuf_puts(sb, "\"} ");
        ap_sbuf_u64(sb, b < nb ? cum[b] : count);
        ap_sbuf_putc(sb, '\n');
    }
    ap_sbuf_printf(sb, "%s_sum{", name);
    entry_labels(sb, s, extra);
    ap_sbuf_puts(sb, "} ");
    ap_prom_seconds(sb, sum_ns);
    ap_sbuf_printf(sb, "\n%s_count{", name);
    entry_labels(sb, s, extra);
    ap_sbuf_puts(sb, "} ");
    ap_sbuf_u64(sb, count);
    ap_sbuf_putc(sb, '\n');
}

int ap_prom_routes(ap_sbuf *sb, const ap_routes *t, const uint64_t *bounds_ns, size_t nbounds,
                   const char *extra_labels) {
    if (nbounds == 0 || nbounds > AP_PROM_BOUNDS_MAX) {
        ap_err_set(AP_EINVAL, "between 1 and %d histogram bounds", AP_PROM_BOUNDS_MAX);
        return -1;
    }
    for (size_t b = 1; b < nbounds; b++)
        if (bounds_ns[b] <= bounds_ns[b - 1]) {
            ap_err_set(AP_EINVAL, "histogram bounds must be ascending");
            return -1;
        }
    size_t n = ap_routes_size(t);
    int memory = 0;
    for (size_t i = 0; i < n; i++)
        memory |= ap_routes_at(t, i)->mem_requests != 0;
    for (int f = 0; f < F_COUNTERS; f++) {
        if (f >= F_FIRST_MEMORY && !memory)
            break;
        family(sb, COUNTERS[f].name, "counter", COUNTERS[f].help);
        for (size_t i = 0; i < n; i++) {
            const ap_route_stat *s = ap_routes_at(t, i);
            if (ap_hist_count(&s->wall) == 0)
                continue;
            if (f == F_WAIT) {
                for (unsigned k = 0; k < AP_WAIT_COUNT; k++)
                    if (s->wait_ns[k] != 0)
                        wait_sample(sb, s, extra_labels, ap_wait_name(k), s->wait_ns[k]);
                wait_sample(sb, s, extra_labels, "unclassified", unclassified(s));
                continue;
            }
            ap_sbuf_puts(sb, COUNTERS[f].name);
            ap_sbuf_putc(sb, '{');
            entry_labels(sb, s, extra_labels);
            ap_sbuf_puts(sb, "} ");
            counter_value(sb, f, s);
            ap_sbuf_putc(sb, '\n');
        }
    }
    if (memory) {
        static const char LNAME[] = "apiprof_route_live_bytes";
        family(sb, LNAME, "gauge",
               "Of the bytes the requests allocated, those still alive now (a sampled "
               "estimate): grows with the requests served when a route keeps memory.");
        for (size_t i = 0; i < n; i++) {
            const ap_route_stat *s = ap_routes_at(t, i);
            if (ap_hist_count(&s->wall) == 0)
                continue;
            ap_sbuf_printf(sb, "%s{", LNAME);
            entry_labels(sb, s, extra_labels);
            ap_sbuf_puts(sb, "} ");
            ap_sbuf_u64(sb, s->live_bytes);
            ap_sbuf_putc(sb, '\n');
        }
    }
    static const char HNAME[] = "apiprof_request_duration_seconds";
    family(sb, HNAME, "histogram",
           "Request latency, from arrival to the last body chunk, by route, method and status "
           "class.");
    uint64_t cum[AP_PROM_BOUNDS_MAX];
    for (size_t i = 0; i < n; i++) {
        const ap_route_stat *s = ap_routes_at(t, i);
        uint64_t count = ap_hist_count(&s->wall);
        if (count == 0)
            continue;
        bucket_counts(&s->wall, bounds_ns, nbounds, cum);
        histogram_sample(sb, HNAME, s, extra_labels, bounds_ns, cum, nbounds, count,
                         ap_hist_sum(&s->wall));
    }
    static const char SNAME[] = "apiprof_request_stall_duration_seconds";
    family(sb, SNAME, "histogram",
           "Durations of event-loop stalls (steps of a request's own code that held the loop "
           "for the stall threshold or longer), by route; routes with stalls only.");
    for (size_t i = 0; i < n; i++) {
        const ap_route_stat *s = ap_routes_at(t, i);
        uint64_t count = 0;
        for (unsigned b = 0; b < AP_ROUTES_STALL_BUCKETS; b++)
            count += s->stall_buckets[b];
        if (ap_hist_count(&s->wall) == 0 || count == 0)
            continue;
        uint64_t scum[AP_ROUTES_STALL_BUCKETS - 1];
        for (unsigned b = 0; b < AP_ROUTES_STALL_BUCKETS - 1; b++)
            scum[b] = s->stall_buckets[b] + (b > 0 ? scum[b - 1] : 0);
        /* the time of the stalls whose durations are known: all but those merged from
         * files written before durations were kept (then the mean stands in) */
        uint64_t sum = count == s->stalls ? s->stall_ns : s->stall_ns / s->stalls * count;
        histogram_sample(sb, SNAME, s, extra_labels, ap_routes_stall_le_ns, scum,
                         AP_ROUTES_STALL_BUCKETS - 1, count, sum);
    }
    if (sb->failed) {
        ap_err_set(AP_ENOMEM, "out of memory writing metrics");
        return -1;
    }
    return 0;
}
