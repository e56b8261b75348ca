/* ap_memtl.c -- memory over time of a profile: storage, copies, the native MEMT chunk, the JSON "memory_timeline" and the SVG chart. */
#include "ap_memtl.h"

#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_prof_int.h"

#define GROW(arr, cap, need) ap_prof_grow((void **)&(arr), &(cap), (need), sizeof *(arr))

/* Owned by the profile; NULL until the first point. */
struct ap_memtl {
    ap_mem_point *items;
    size_t n, cap;
    uint64_t dropped;
};

static struct ap_memtl *memtl_of(ap_prof *p) {
    if (p->memtl == NULL && (p->memtl = calloc(1, sizeof *p->memtl)) == NULL)
        ap_err_set(AP_ENOMEM, "memory timeline: out of memory");
    return p->memtl;
}

int ap_prof_mem_add(ap_prof *p, const ap_mem_point *pt) {
    struct ap_memtl *m = memtl_of(p);
    if (m == NULL)
        return -1;
    if (m->n >= AP_MEMTL_MAX) {
        m->dropped++;
        return 0;
    }
    if (GROW(m->items, m->cap, m->n + 1) != 0)
        return -1;
    m->items[m->n++] = *pt;
    return 0;
}

size_t ap_prof_nmem(const ap_prof *p) {
    return p->memtl != NULL ? p->memtl->n : 0;
}

const ap_mem_point *ap_prof_mem_at(const ap_prof *p, size_t i) {
    return &p->memtl->items[i];
}

uint64_t ap_prof_mem_dropped(const ap_prof *p) {
    return p->memtl != NULL ? p->memtl->dropped : 0;
}

int ap_memtl_copy(ap_prof *dst, const ap_prof *src) {
    for (size_t i = 0; i < ap_prof_nmem(src); i++)
        if (ap_prof_mem_add(dst, ap_prof_mem_at(src, i)) != 0)
            return -1;
    if (ap_prof_mem_dropped(src) > 0) {
        if (memtl_of(dst) == NULL)
            return -1;
        dst->memtl->dropped += src->memtl->dropped;
    }
    return 0;
}

void ap_memtl_free(ap_prof *p) {
    if (p->memtl == NULL)
        return;
    free(p->memtl->items);
    free(p->memtl);
    p->memtl = NULL;
}

/* ---- the MEMT chunk -------------------------------------------------------------
 * varint count, varint dropped, then per point: zigzag delta of t_ns from
 * the previous point's, rss_bytes, heap_bytes + 1 (0: no heap), phase. */

void ap_memtl_encode(const ap_prof *p, ap_sbuf *b) {
    size_t n = ap_prof_nmem(p);
    ap_sbuf_varint(b, n);
    ap_sbuf_varint(b, ap_prof_mem_dropped(p));
    uint64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        const ap_mem_point *pt = ap_prof_mem_at(p, i);
        int64_t d = (int64_t)(pt->t_ns - prev);
        ap_sbuf_varint(b, ((uint64_t)d << 1) ^ (uint64_t)(d >> 63));
        prev = pt->t_ns;
        ap_sbuf_varint(b, pt->rss_bytes);
        ap_sbuf_varint(b, pt->heap_bytes == AP_MEMTL_NO_HEAP ? 0 : pt->heap_bytes + 1);
        ap_sbuf_varint(b, pt->phase);
    }
}

int ap_memtl_decode(ap_prof *p, const uint8_t *pos, const uint8_t *end) {
    uint64_t n, dropped, prev = 0;
    if (ap_varint_get(&pos, end, &n) != 0 || ap_varint_get(&pos, end, &dropped) != 0 ||
        n > (uint64_t)(end - pos) / 4 || n > AP_MEMTL_MAX) /* 4 varints at least */
        return ap_err_set(AP_ECORRUPT, "memory timeline chunk header is invalid");
    for (uint64_t i = 0; i < n; i++) {
        uint64_t z, rss, heap, phase;
        if (ap_varint_get(&pos, end, &z) != 0 || ap_varint_get(&pos, end, &rss) != 0 ||
            ap_varint_get(&pos, end, &heap) != 0 || ap_varint_get(&pos, end, &phase) != 0 ||
            phase >= p->nstrs)
            return ap_err_set(AP_ECORRUPT, "memory point %llu is invalid", (unsigned long long)i);
        ap_mem_point pt = {prev + ((z >> 1) ^ (0 - (z & 1))), rss,
                           heap == 0 ? AP_MEMTL_NO_HEAP : heap - 1, (ap_str_id)phase};
        prev = pt.t_ns;
        if (ap_prof_mem_add(p, &pt) != 0)
            return -1;
    }
    if (dropped > 0) {
        if (memtl_of(p) == NULL)
            return -1;
        p->memtl->dropped += dropped;
    }
    return pos == end ? 0 : ap_err_set(AP_ECORRUPT, "memory timeline chunk has trailing bytes");
}

/* ---- JSON ---------------------------------------------------------------------- */

void ap_memtl_json(const ap_prof *p, ap_sbuf *out) {
    ap_sbuf_putc(out, '[');
    for (size_t i = 0; i < ap_prof_nmem(p); i++) {
        const ap_mem_point *pt = ap_prof_mem_at(p, i);
        ap_sbuf_printf(out, "%s{\"t_ns\": %llu, \"rss_bytes\": %llu, \"heap_bytes\": ",
                       i ? ",\n  " : "\n  ", (unsigned long long)pt->t_ns,
                       (unsigned long long)pt->rss_bytes);
        if (pt->heap_bytes == AP_MEMTL_NO_HEAP)
            ap_sbuf_puts(out, "null");
        else
            ap_sbuf_u64(out, pt->heap_bytes);
        if (pt->phase != 0) {
            ap_sbuf_puts(out, ", \"phase\": ");
            ap_sbuf_json_str(out, ap_prof_str(p, pt->phase));
        }
        ap_sbuf_putc(out, '}');
    }
    ap_sbuf_putc(out, ']');
}

/* ---- growth ---------------------------------------------------------------------- */

static inline int has(const ap_mem_point *pt, int heap) {
    return heap ? pt->heap_bytes != AP_MEMTL_NO_HEAP : pt->rss_bytes != 0;
}

static inline uint64_t value(const ap_mem_point *pt, int heap) {
    return heap ? pt->heap_bytes : pt->rss_bytes;
}

size_t ap_memtl_largest_growth(const ap_prof *p, int heap, uint64_t *bytes) {
    size_t best = 0, n = ap_prof_nmem(p);
    uint64_t most = 0;
    for (size_t i = 1; i < n; i++) {
        const ap_mem_point *a = ap_prof_mem_at(p, i - 1), *b = ap_prof_mem_at(p, i);
        if (has(a, heap) && has(b, heap) && value(b, heap) > value(a, heap) &&
            value(b, heap) - value(a, heap) > most) {
            most = value(b, heap) - value(a, heap);
            best = i;
        }
    }
    *bytes = most;
    return best;
}

/* ---- the chart ------------------------------------------------------------------- */

#define W 720.0
#define H 300.0
#define ML 70.0   /* margins: room for the axis labels */
#define MR 24.0
#define MT 40.0
#define MB 44.0
#define POLY_MAX 1500   /* points drawn per series at most: min and max of each bucket */

typedef struct chart {
    uint64_t t0;
    double xmax, ymax, unit;
    const char *unit_name;
} chart;

static double cx(const chart *c, uint64_t t) {
    return ML + (double)(t - c->t0) / 1e9 / c->xmax * (W - ML - MR);
}

static double cy(const chart *c, uint64_t v) {
    return H - MB - (double)v / c->unit / c->ymax * (H - MT - MB);
}

static void text(ap_sbuf *sb, double x, double y, const char *anchor, const char *cls,
                 const char *s) {
    ap_sbuf_printf(sb, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" class=\"%s\">", x, y,
                   anchor, cls);
    ap_sbuf_xml_str(sb, s);
    ap_sbuf_puts(sb, "</text>\n");
}

/* A round tick step giving about n ticks over [0, max]. */
static double tick_step(double max, int n) {
    double raw = max / n, step = 1e-9;
    while (step * 10 <= raw)
        step *= 10;
    return raw <= step ? step : raw <= 2 * step ? 2 * step : raw <= 5 * step ? 5 * step : 10 * step;
}

static void axes(ap_sbuf *sb, const chart *c) {
    double xs = tick_step(c->xmax, 8), ys = tick_step(c->ymax, 5);
    char label[64];
    for (double x = 0; x <= c->xmax + 1e-9; x += xs) {
        double X = ML + x / c->xmax * (W - ML - MR);
        ap_sbuf_printf(sb, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"mt-grid\"/>\n",
                       X, MT, X, H - MB);
        snprintf(label, sizeof label, "%g", x);
        text(sb, X, H - MB + 16, "middle", "mt-tick", label);
    }
    for (double y = 0; y <= c->ymax + 1e-9; y += ys) {
        double Y = H - MB - y / c->ymax * (H - MT - MB);
        ap_sbuf_printf(sb, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"mt-grid\"/>\n",
                       ML, Y, W - MR, Y);
        snprintf(label, sizeof label, "%g", y);
        text(sb, ML - 6, Y + 4, "end", "mt-tick", label);
    }
    text(sb, (ML + W - MR) / 2, H - 10, "middle", "mt-axis", "seconds since the first sample");
    ap_sbuf_printf(sb, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\" "
                       "class=\"mt-axis\">%s</text>\n", (MT + H - MB) / 2, c->unit_name);
}

/* The phases as bands: each run of points with the same non-zero phase,
 * from its first point to the next run's first point. */
static void phase_bands(ap_sbuf *sb, const ap_prof *p, const chart *c) {
    size_t n = ap_prof_nmem(p);
    for (size_t i = 0, k = 0; i < n;) {
        size_t j = i + 1;
        ap_str_id ph = ap_prof_mem_at(p, i)->phase;
        while (j < n && ap_prof_mem_at(p, j)->phase == ph)
            j++;
        if (ph != 0) {
            double x0 = cx(c, ap_prof_mem_at(p, i)->t_ns);
            double x1 = cx(c, ap_prof_mem_at(p, j < n ? j : n - 1)->t_ns);
            ap_sbuf_printf(sb, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                               "class=\"mt-phase%zu\"><title>phase ",
                           x0, MT, x1 - x0, H - MT - MB, k++ % 2);
            ap_sbuf_xml_str(sb, ap_prof_str(p, ph));
            ap_sbuf_puts(sb, "</title></rect>\n");
            text(sb, x0 + 3, MT + 12, "start", "mt-phasename", ap_prof_str(p, ph));
        }
        i = j;
    }
}

static void series(ap_sbuf *sb, const ap_prof *p, const chart *c, int heap, const char *cls) {
    size_t n = ap_prof_nmem(p), per = (n + POLY_MAX - 1) / POLY_MAX;
    ap_sbuf_printf(sb, "<polyline class=\"%s\" points=\"", cls);
    for (size_t i = 0; i < n; i += per) {
        /* the bucket's first point, then its min and max in time order */
        size_t lo = i, hi = i;
        for (size_t j = i; j < i + per && j < n; j++) {
            const ap_mem_point *pt = ap_prof_mem_at(p, j);
            if (!has(pt, heap))
                continue;
            if (!has(ap_prof_mem_at(p, lo), heap) || value(pt, heap) < value(ap_prof_mem_at(p, lo), heap))
                lo = j;
            if (!has(ap_prof_mem_at(p, hi), heap) || value(pt, heap) > value(ap_prof_mem_at(p, hi), heap))
                hi = j;
        }
        size_t a = lo < hi ? lo : hi, b = lo < hi ? hi : lo;
        for (size_t k = 0; k < (a == b ? 1u : 2u); k++) {
            const ap_mem_point *pt = ap_prof_mem_at(p, k ? b : a);
            if (has(pt, heap))
                ap_sbuf_printf(sb, "%.1f,%.1f ", cx(c, pt->t_ns), cy(c, value(pt, heap)));
        }
    }
    ap_sbuf_puts(sb, "\"/>\n");
}

static void growth_mark(ap_sbuf *sb, const ap_prof *p, const chart *c, int heap) {
    uint64_t bytes;
    size_t i = ap_memtl_largest_growth(p, heap, &bytes);
    if (i == 0)
        return;
    const ap_mem_point *a = ap_prof_mem_at(p, i - 1), *b = ap_prof_mem_at(p, i);
    double x = cx(c, b->t_ns), y = cy(c, value(b, heap));
    char label[128];
    snprintf(label, sizeof label, "largest %s growth: +%.1f %s in %.0f ms at %.2f s",
             heap ? "heap" : "RSS", (double)bytes / c->unit, c->unit_name,
             (double)(b->t_ns - a->t_ns) / 1e6, (double)(b->t_ns - c->t0) / 1e9);
    ap_sbuf_printf(sb, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"mt-growth\"/>\n",
                   x, MT, x, H - MB);
    ap_sbuf_printf(sb, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" class=\"mt-growth-%s\" "
                       "data-growth=\"%s\"><title>",
                   x, y, heap ? "heap" : "rss", heap ? "heap" : "rss");
    ap_sbuf_xml_str(sb, label);
    ap_sbuf_puts(sb, "</title></circle>\n");
    snprintf(label, sizeof label, "+%.1f %s", (double)bytes / c->unit, c->unit_name);
    int left = x > W - MR - 120;   /* near the right edge: the label on the left */
    text(sb, left ? x - 7 : x + 7, y + (heap ? 14 : -6), left ? "end" : "start",
         heap ? "mt-note mt-hn" : "mt-note mt-rn", label);
}

void ap_memtl_svg(const ap_prof *p, ap_sbuf *sb) {
    size_t n = ap_prof_nmem(p);
    if (n < 2)
        return;
    uint64_t top = 0, peak[2] = {0, 0};
    int any_heap = 0;
    for (size_t i = 0; i < n; i++) {
        const ap_mem_point *pt = ap_prof_mem_at(p, i);
        for (int h = 0; h < 2; h++)
            if (has(pt, h) && value(pt, h) > peak[h])
                peak[h] = value(pt, h);
        any_heap |= has(pt, 1);
    }
    top = peak[0] > peak[1] ? peak[0] : peak[1];
    chart c = {ap_prof_mem_at(p, 0)->t_ns, 0, 0, 1024.0 * 1024.0, "MiB"};
    if (top < 1024 * 1024) {
        c.unit = 1024.0;
        c.unit_name = "KiB";
    }
    c.xmax = (double)(ap_prof_mem_at(p, n - 1)->t_ns - c.t0) / 1e9;
    if (c.xmax <= 0)
        c.xmax = 1e-3;
    c.ymax = (double)top / c.unit * 1.1;
    if (c.ymax <= 0)
        c.ymax = 1;
    ap_sbuf_printf(sb, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                       "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" class=\"memtl\">\n",
                   W, H, W, H);
    ap_sbuf_puts(sb, "<style>.mt-grid{stroke:#e4e4e4}.mt-tick{font-size:11px;fill:#555}"
                     ".mt-axis{font-size:12px;fill:#222}.mt-title{font-size:14px;fill:#111}"
                     ".mt-rss{fill:none;stroke:#1f6fb2;stroke-width:2}"
                     ".mt-heap{fill:none;stroke:#ef6c00;stroke-width:2}"
                     ".mt-phase0{fill:#f3f0e6}.mt-phase1{fill:#e6eef3}"
                     ".mt-phasename{font-size:11px;fill:#666}"
                     ".mt-growth{stroke:#c62828;stroke-width:1;stroke-dasharray:4 3}"
                     ".mt-growth-rss{fill:#fff;stroke:#1f6fb2;stroke-width:2}"
                     ".mt-growth-heap{fill:#fff;stroke:#ef6c00;stroke-width:2}"
                     ".mt-note{font-size:11px}.mt-rn{fill:#1f6fb2}.mt-hn{fill:#ef6c00}</style>\n");
    ap_sbuf_puts(sb, "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n");
    text(sb, ML, 20, "start", "mt-title",
         any_heap ? "process RSS and traced heap over time" : "process RSS over time");
    phase_bands(sb, p, &c);
    axes(sb, &c);
    char label[96];
    snprintf(label, sizeof label, "RSS (peak %.1f %s)", (double)peak[0] / c.unit, c.unit_name);
    ap_sbuf_printf(sb, "<line x1=\"%.1f\" y1=\"16\" x2=\"%.1f\" y2=\"16\" class=\"mt-rss\"/>\n",
                   W - MR - 300, W - MR - 280);
    text(sb, W - MR - 276, 20, "start", "mt-tick", label);
    if (any_heap) {
        snprintf(label, sizeof label, "traced heap (peak %.1f %s)", (double)peak[1] / c.unit,
                 c.unit_name);
        ap_sbuf_printf(sb, "<line x1=\"%.1f\" y1=\"30\" x2=\"%.1f\" y2=\"30\" class=\"mt-heap\"/>\n",
                       W - MR - 300, W - MR - 280);
        text(sb, W - MR - 276, 34, "start", "mt-tick", label);
        series(sb, p, &c, 1, "mt-heap");
    }
    series(sb, p, &c, 0, "mt-rss");
    growth_mark(sb, p, &c, 0);
    if (any_heap)
        growth_mark(sb, p, &c, 1);
    ap_sbuf_puts(sb, "</svg>\n");
}
