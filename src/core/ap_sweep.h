/* ap_sweep.h -- the load sweep's latency-vs-throughput chart (SVG) and its page (HTML: the chart and the per-step table). */
#ifndef AP_SWEEP_H
#define AP_SWEEP_H

#include <stddef.h>

#include "ap_sbuf.h"

/* One step of a sweep: the offered rate, what was achieved, and latencies. */
typedef struct ap_sweep_step {
    double offered;     /* requests/s sent */
    double achieved;    /* responses/s */
    double slo_ms;      /* the latency at the objective's percentile; < 0: none */
    double p50_ms;      /* < 0: none */
    double failed;      /* failed requests */
    double server_cpu;  /* share of a core, < 0: not measured */
    int ok;             /* sustained within the objective */
} ap_sweep_step;

typedef struct ap_sweep_chart {
    const char *title;        /* e.g. the app or the origin; may be NULL */
    const char *slo;          /* the objective as text, "p99=200ms" */
    double slo_limit_ms;      /* its latency */
    const ap_sweep_step *steps;
    size_t n;
    long saturation;          /* index of the saturated step, -1: none */
    long knee;                /* index of the knee, -1: none */
    const char *conclusion;   /* lines of text, '\n' between them; may be NULL */
} ap_sweep_chart;

/* Append the chart as a standalone SVG document: the SLO-percentile latency
 * and the median over achieved throughput, the objective as a horizontal
 * line, the saturation point and the knee marked, failed steps hollow.
 * Text is escaped.  Can't fail (an allocation failure is recorded in sb). */
void ap_sweep_svg(ap_sbuf *sb, const ap_sweep_chart *c);

/* Append an HTML page: the title, the chart, the per-step table and the
 * conclusion.  Can't fail (as above). */
void ap_sweep_html(ap_sbuf *sb, const ap_sweep_chart *c);

#endif /* AP_SWEEP_H */
