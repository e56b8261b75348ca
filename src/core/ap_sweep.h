/* ap_sweep.h -- the load sweep's latency-vs-throughput chart (SVG) and its page (HTML: the chart and the per-step table). */
#ifndef AP_SWEEP_H
#define AP_SWEEP_H

#include <stddef.h>

#include "ap_prof.h"
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

/* Append the chart, the per-step table and the conclusion as an HTML fragment
 * (what the page holds, and the "Load sweep" section of the HTML report).
 * Can't fail (as above). */
void ap_sweep_section(ap_sbuf *sb, const ap_sweep_chart *c);

/* The sweep a profile carries (apiprof bench --sweep --profile writes it into
 * the metadata, docs/format.md): "sweep_steps" holds one row per step,
 * "OFFERED ACHIEVED SLO_MS P50_MS FAILED SERVER_CPU OK" separated by ';'
 * (negative: not measured), and "sweep_title", "sweep_slo",
 * "sweep_slo_limit_ms", "sweep_saturation", "sweep_knee" (step indices, -1:
 * none) and "sweep_conclusion" the rest.  Fills *c (its strings borrowed from
 * p) and *steps (malloc'd: free() it).  Returns 1; 0 when p has no sweep (or
 * no well-formed step); -1 with AP_ENOMEM.  Malformed rows are skipped. */
int ap_sweep_from_meta(const ap_prof *p, ap_sweep_chart *c, ap_sweep_step **steps);

#endif /* AP_SWEEP_H */
