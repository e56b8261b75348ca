/* ap_sweep.c -- writes the load sweep's latency-vs-throughput chart as SVG and its page as HTML. */
#include "ap_sweep.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"

#define W 720.0
#define H 400.0
#define ML 64.0    /* margins: room for the axis labels */
#define MR 24.0
#define MT 40.0
#define MB 52.0

/* A round tick step giving about n ticks over [0, max]. */
static double tick_step(double max, int n) {
    double raw = max / n, mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

typedef struct frame {
    double xmax, ymax;
} frame;

static double px(const frame *f, double x) {
    return ML + x / f->xmax * (W - ML - MR);
}

static double py(const frame *f, double y) {
    double v = y > f->ymax ? f->ymax : y;
    return H - MB - v / f->ymax * (H - MT - MB);
}

static void text(ap_sbuf *sb, double x, double y, const char *anchor, const char *cls,
                 const char *s) {
    ap_sbuf_printf(sb, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" class=\"%s\">", x, y,
                   anchor, cls);
    ap_sbuf_xml_str(sb, s);
    ap_sbuf_puts(sb, "</text>\n");
}

static void axes(ap_sbuf *sb, const frame *f) {
    double xs = tick_step(f->xmax, 6), ys = tick_step(f->ymax, 5);
    char label[64];
    for (double x = 0; x <= f->xmax + 1e-9; x += xs) {
        ap_sbuf_printf(sb, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>\n",
                       px(f, x), MT, px(f, x), H - MB);
        snprintf(label, sizeof label, "%g", x);
        text(sb, px(f, x), H - MB + 16, "middle", "tick", label);
    }
    for (double y = 0; y <= f->ymax + 1e-9; y += ys) {
        ap_sbuf_printf(sb, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>\n",
                       ML, py(f, y), W - MR, py(f, y));
        snprintf(label, sizeof label, "%g", y);
        text(sb, ML - 6, py(f, y) + 4, "end", "tick", label);
    }
    text(sb, (ML + W - MR) / 2, H - 12, "middle", "axis", "throughput achieved (requests/s)");
    ap_sbuf_printf(sb, "<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\" "
                       "class=\"axis\">latency (ms)</text>\n", (MT + H - MB) / 2);
}

static void polyline(ap_sbuf *sb, const frame *f, const ap_sweep_chart *c, int median,
                     const char *cls) {
    ap_sbuf_printf(sb, "<polyline class=\"%s\" points=\"", cls);
    for (size_t i = 0; i < c->n; i++) {
        double v = median ? c->steps[i].p50_ms : c->steps[i].slo_ms;
        if (v >= 0)
            ap_sbuf_printf(sb, "%.1f,%.1f ", px(f, c->steps[i].achieved), py(f, v));
    }
    ap_sbuf_puts(sb, "\"/>\n");
}

void ap_sweep_svg(ap_sbuf *sb, const ap_sweep_chart *c) {
    frame f = {.xmax = 1, .ymax = c->slo_limit_ms * 1.5};
    for (size_t i = 0; i < c->n; i++) {
        if (c->steps[i].achieved > f.xmax)
            f.xmax = c->steps[i].achieved;
        if (c->steps[i].offered > f.xmax)
            f.xmax = c->steps[i].offered;
    }
    /* latencies far beyond the objective are clipped at 3x it: the knee stays visible */
    double top = c->slo_limit_ms * 3;
    for (size_t i = 0; i < c->n; i++) {
        double v = c->steps[i].slo_ms;
        if (v > f.ymax)
            f.ymax = v < top ? v : top;
    }
    f.xmax *= 1.05;
    f.ymax *= 1.1;
    ap_sbuf_printf(sb, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                       "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n", W, H, W, H);
    ap_sbuf_puts(sb, "<style>.grid{stroke:#e4e4e4}.tick{font-size:11px;fill:#555}"
                     ".axis{font-size:12px;fill:#222}.title{font-size:14px;fill:#111}"
                     ".lat{fill:none;stroke:#1f6fb2;stroke-width:2}"
                     ".med{fill:none;stroke:#999;stroke-width:1.5;stroke-dasharray:4 3}"
                     ".slo{stroke:#c62828;stroke-width:1.5;stroke-dasharray:6 4}"
                     ".sat{stroke:#2e7d32;stroke-width:1.5}.ok{fill:#1f6fb2}"
                     ".bad{fill:#fff;stroke:#c62828;stroke-width:2}"
                     ".knee{fill:none;stroke:#ef6c00;stroke-width:2}"
                     ".note{font-size:11px}</style>\n");
    ap_sbuf_puts(sb, "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n");
    char label[160];
    snprintf(label, sizeof label, "latency (%s percentile) over throughput", c->slo ? c->slo : "");
    text(sb, ML, 22, "start", "title", c->title && *c->title ? c->title : label);
    axes(sb, &f);
    ap_sbuf_printf(sb, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"slo\"/>\n", ML,
                   py(&f, c->slo_limit_ms), W - MR, py(&f, c->slo_limit_ms));
    snprintf(label, sizeof label, "SLO %s", c->slo ? c->slo : "");
    text(sb, W - MR - 4, py(&f, c->slo_limit_ms) - 5, "end", "note", label);
    if (c->saturation >= 0 && (size_t)c->saturation < c->n) {
        double x = px(&f, c->steps[c->saturation].achieved);
        ap_sbuf_printf(sb, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"sat\"/>\n",
                       x, MT, x, H - MB);
        snprintf(label, sizeof label, "saturation %g req/s", c->steps[c->saturation].offered);
        text(sb, x + 4, MT + 12, "start", "note", label);
    }
    polyline(sb, &f, c, 1, "med");
    polyline(sb, &f, c, 0, "lat");
    for (size_t i = 0; i < c->n; i++) {
        const ap_sweep_step *s = &c->steps[i];
        if (s->slo_ms < 0)
            continue;
        ap_sbuf_printf(sb, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" class=\"%s\"><title>",
                       px(&f, s->achieved), py(&f, s->slo_ms), s->ok ? "ok" : "bad");
        snprintf(label, sizeof label, "%g req/s offered, %.1f achieved, %.2f ms%s", s->offered,
                 s->achieved, s->slo_ms, s->ok ? "" : " (not sustained)");
        ap_sbuf_xml_str(sb, label);
        ap_sbuf_puts(sb, "</title></circle>\n");
    }
    if (c->knee >= 0 && (size_t)c->knee < c->n && c->steps[c->knee].slo_ms >= 0) {
        const ap_sweep_step *k = &c->steps[c->knee];
        ap_sbuf_printf(sb, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"8\" class=\"knee\"/>\n",
                       px(&f, k->achieved), py(&f, k->slo_ms));
        text(sb, px(&f, k->achieved) - 10, py(&f, k->slo_ms) - 10, "end", "note", "knee");
    }
    ap_sbuf_puts(sb, "</svg>\n");
}

static void cell_ms(ap_sbuf *sb, double v) {
    if (v < 0)
        ap_sbuf_puts(sb, "<td>-</td>");
    else
        ap_sbuf_printf(sb, "<td>%.2f</td>", v);
}

void ap_sweep_html(ap_sbuf *sb, const ap_sweep_chart *c) {
    ap_sbuf_puts(sb, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
    ap_sbuf_xml_str(sb, c->title && *c->title ? c->title : "load sweep");
    ap_sbuf_puts(sb, "</title><style>body{font-family:sans-serif;margin:24px;color:#222}"
                     "table{border-collapse:collapse;margin:16px 0}td,th{padding:3px 10px;"
                     "text-align:right;border-bottom:1px solid #ddd}tr.sat{background:#e8f5e9}"
                     "tr.bad td{color:#c62828}pre{white-space:pre-wrap}</style></head><body>\n<h1>");
    ap_sbuf_xml_str(sb, c->title && *c->title ? c->title : "load sweep");
    ap_sbuf_puts(sb, "</h1>\n");
    ap_sweep_section(sb, c);
    ap_sbuf_puts(sb, "</body></html>\n");
}

void ap_sweep_section(ap_sbuf *sb, const ap_sweep_chart *c) {
    ap_sweep_svg(sb, c);
    ap_sbuf_puts(sb, "<table><tr><th>offered req/s</th><th>achieved req/s</th><th>p50 ms</th><th>"
                     "SLO latency ms (");
    ap_sbuf_xml_str(sb, c->slo ? c->slo : "SLO");
    ap_sbuf_puts(sb, ")</th><th>failed</th><th>server CPU</th><th></th></tr>\n");
    for (size_t i = 0; i < c->n; i++) {
        const ap_sweep_step *s = &c->steps[i];
        ap_sbuf_printf(sb, "<tr class=\"%s\"><td>%g</td><td>%.1f</td>",
                       (long)i == c->saturation ? "sat" : s->ok ? "ok" : "bad", s->offered,
                       s->achieved);
        cell_ms(sb, s->p50_ms);
        cell_ms(sb, s->slo_ms);
        ap_sbuf_printf(sb, "<td>%.0f</td>", s->failed);
        if (s->server_cpu < 0)
            ap_sbuf_puts(sb, "<td>-</td>");
        else
            ap_sbuf_printf(sb, "<td>%.0f%%</td>", s->server_cpu * 100);
        ap_sbuf_printf(sb, "<td>%s%s%s</td></tr>\n", (long)i == c->saturation ? "saturation" : "",
                       (long)i == c->saturation && (long)i == c->knee ? ", " : "",
                       (long)i == c->knee ? "knee" : "");
    }
    ap_sbuf_puts(sb, "</table>\n<pre>");
    /* line by line: the escape turns a line break into a space */
    for (const char *line = c->conclusion; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        char part[512];
        while (n > 0) {
            size_t k = n < sizeof part - 1 ? n : sizeof part - 1;
            memcpy(part, line, k);
            part[k] = '\0';
            ap_sbuf_xml_str(sb, part);
            line += k;
            n -= k;
        }
        ap_sbuf_putc(sb, '\n');
        line = nl ? nl + 1 : line;
        if (!nl)
            break;
    }
    ap_sbuf_puts(sb, "</pre>\n");
}

/* The next number of a "sweep_steps" row at *s (space-separated); 0 when none. */
static int next_num(const char **s, double *out) {
    char *end;
    *out = strtod(*s, &end);
    if (end == *s || !isfinite(*out))
        return 0;
    *s = end;
    return 1;
}

static double meta_num(const ap_prof *p, const char *key, double dflt) {
    const char *v = ap_prof_meta_get(p, key);
    char *end;
    double d = v != NULL ? strtod(v, &end) : dflt;
    return v != NULL && end != v && isfinite(d) ? d : dflt;
}

int ap_sweep_from_meta(const ap_prof *p, ap_sweep_chart *c, ap_sweep_step **steps) {
    memset(c, 0, sizeof *c);
    *steps = NULL;
    const char *rows = ap_prof_meta_get(p, "sweep_steps");
    if (rows == NULL || rows[0] == '\0')
        return 0;
    size_t cap = 1;
    for (const char *r = rows; *r; r++)
        cap += *r == ';';
    ap_sweep_step *st = calloc(cap, sizeof *st);
    if (st == NULL)
        return ap_err_set(AP_ENOMEM, "sweep: out of memory");
    size_t n = 0;
    for (const char *r = rows; *r && n < cap;) {
        double v[7];
        int k = 0;
        while (k < 7 && next_num(&r, &v[k]))
            k++;
        if (k == 7) {
            st[n++] = (ap_sweep_step){v[0], v[1], v[2], v[3], v[4], v[5], v[6] != 0};
        }
        r = strchr(r, ';');   /* a malformed row is skipped, never read past */
        if (r == NULL)
            break;
        r++;
    }
    if (n == 0) {
        free(st);
        return 0;
    }
    c->title = ap_prof_meta_get(p, "sweep_title");
    c->slo = ap_prof_meta_get(p, "sweep_slo");
    c->slo_limit_ms = meta_num(p, "sweep_slo_limit_ms", 200);
    if (!(c->slo_limit_ms > 0))
        c->slo_limit_ms = 200;
    double sat = meta_num(p, "sweep_saturation", -1), knee = meta_num(p, "sweep_knee", -1);
    c->saturation = sat >= 0 && sat < (double)n ? (long)sat : -1;
    c->knee = knee >= 0 && knee < (double)n ? (long)knee : -1;
    c->conclusion = ap_prof_meta_get(p, "sweep_conclusion");
    c->steps = st;
    c->n = n;
    *steps = st;
    return 1;
}
