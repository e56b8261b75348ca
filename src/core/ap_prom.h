/* ap_prom.h -- route statistics in the Prometheus text exposition format (version 0.0.4). */
#ifndef AP_PROM_H
#define AP_PROM_H

#include <stddef.h>
#include <stdint.h>

#include "ap_routes.h"
#include "ap_sbuf.h"

/* Histogram bucket bounds a scrape may ask for, at most. */
#define AP_PROM_BOUNDS_MAX 64

/* Append the exposition of route table t to sb (docs/metrics.md lists the
 * families):
 *
 *   apiprof_requests_total{route,method,status}            counter
 *   apiprof_request_errors_total{route,method,status}      counter
 *   apiprof_request_duration_seconds{route,method,status}  histogram
 *   apiprof_request_cpu_seconds_total{route,method,status} counter
 *   apiprof_request_wait_seconds_total{route,method,status,kind}   counter
 *   apiprof_request_waits_measured_total{route,method,status}      counter
 *   apiprof_response_bytes_total{route,method,status}      counter
 *
 * status is the status class ("2xx", ..., "none" when no response was
 * sent).  The wait time of a request is its wall time less its CPU time
 * (time the app's coroutine was suspended, or blocked off the CPU); the
 * part that profiled requests attributed to a wait kind (ap_wait.h;
 * ap_route_stat.wait_ns, waited counts those requests) is reported under
 * that kind, the rest under kind "unclassified".
 *
 * bounds_ns: nbounds ascending histogram upper bounds in ns (1..
 * AP_PROM_BOUNDS_MAX), "+Inf" follows.  A bucket counts the values of every
 * ap_hist bucket whose midpoint is <= its bound, so it is exact up to the
 * ap_hist resolution (0.4%).  extra_labels: NULL or a list of name="value"
 * pairs already escaped (ap_prom_label), put first in every sample.
 * Label values are escaped as the format asks (backslash, double quote,
 * newline) and bytes that are not UTF-8 become U+FFFD.  Empty entries are
 * left out.  Returns 0; on error -1 with AP_EINVAL (bad bounds) or
 * AP_ENOMEM (sb->failed). */
int ap_prom_routes(ap_sbuf *sb, const ap_routes *t, const uint64_t *bounds_ns, size_t nbounds,
                   const char *extra_labels);

/* Append name="value" with value (n bytes) escaped as above; name must be a
 * valid label name (the caller's constant).  Can't fail (sb->failed). */
void ap_prom_label(ap_sbuf *sb, const char *name, const char *value, size_t n);

/* Append ns as seconds, exactly ("1.5", "0.000000001", "0").  Can't fail. */
void ap_prom_seconds(ap_sbuf *sb, uint64_t ns);

#endif /* AP_PROM_H */
