/* ap_diff.c -- two profiles compared: functions and call paths matched by qualname and file, metric deltas, and the diff's json, svg and html views. */
#include "ap_diff.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_report.h"

/* Rows of the HTML page's table of changes. */
#define DIFF_HTML_ROWS 40

uint64_t ap_diff_requests(const ap_prof *p) {
    uint64_t n = 0;
    for (size_t i = 0; i < ap_prof_ntrees(p); i++) {
        const ap_tree *t = ap_prof_tree_at(p, i);
        for (size_t k = 0; k < ap_tree_nlabels(t); k++) {
            if (strcmp(ap_prof_str(p, ap_tree_label_at(t, k).key), "route") == 0) {
                n += ap_tree_node(t, 0)->m[AP_M_CALLS];
                break;
            }
        }
    }
    return n;
}

/* ---- functions ------------------------------------------------------------------ */

typedef struct entry {
    const char *q, *f;
    int side;                 /* 0: A, 1: B */
    const ap_func_row *row;
} entry;

static int key_cmp(const char *q1, const char *f1, const char *q2, const char *f2) {
    int r = strcmp(q1, q2);
    return r ? r : strcmp(f1, f2);
}

static int entry_cmp(const void *x, const void *y) {
    const entry *a = x, *b = y;
    int r = key_cmp(a->q, a->f, b->q, b->f);
    return r ? r : a->side - b->side;
}

static int row_cmp(const void *x, const void *y, void *arg) {
    const ap_diff_row *a = x, *b = y;
    unsigned k = *(const unsigned *)arg;
    double da = fabs(a->b[k] - a->a[k]), db = fabs(b->b[k] - b->a[k]);
    if (da != db)
        return da > db ? -1 : 1;
    return key_cmp(a->qualname, a->file, b->qualname, b->file);
}

void ap_diff_free(ap_diff *d) {
    free(d->rows);
    memset(d, 0, sizeof *d);
}

static const char *frame_file(const ap_prof *p, ap_frame_id f) {
    const ap_frame *fr = ap_prof_frame(p, f);
    return fr ? ap_prof_str(p, fr->file) : "";
}

int ap_diff_build(ap_prof *a, ap_prof *b, const ap_diff_opts *o, ap_diff *d) {
    static const ap_diff_opts none;
    if (o == NULL)
        o = &none;
    memset(d, 0, sizeof *d);
    if (o->metric != NULL && o->metric[0] != '\0') {
        if (ap_report_pick_metric(b, o->metric, &d->vm) != 0 &&
            (ap_err_code() != AP_EINVAL || ap_report_pick_metric(a, o->metric, &d->vm) != 0))
            return -1;
    } else {
        d->vm = ap_report_default_metric(b);
    }
    d->key = ap_report_vm_field(d->vm);
    d->requests_a = ap_diff_requests(a);
    d->requests_b = ap_diff_requests(b);
    int both = d->requests_a > 0 && d->requests_b > 0;
    if (o->per == AP_DIFF_PER_REQUEST && !both)
        return ap_err_set(AP_EINVAL, "per request needs requests in both profiles (%s has none)",
                          d->requests_a == 0 ? "A" : "B");
    d->per_request = o->per == AP_DIFF_PER_REQUEST || (o->per == AP_DIFF_PER_AUTO && both);
    double scale[2] = {1.0, 1.0};
    if (d->per_request) {
        scale[0] = 1.0 / (double)d->requests_a;
        scale[1] = 1.0 / (double)d->requests_b;
    }
    ap_functab ft[2] = {{0}, {0}};
    entry *e = NULL;
    int rc = -1;
    if (ap_functab_build(a, NULL, NULL, &ft[0]) != 0 || ap_functab_build(b, NULL, NULL, &ft[1]) != 0)
        goto out;
    size_t ne = ft[0].nrows + ft[1].nrows;
    e = malloc((ne ? ne : 1) * sizeof *e);
    d->rows = calloc(ne ? ne : 1, sizeof *d->rows);
    if (e == NULL || d->rows == NULL) {
        ap_err_set(AP_ENOMEM, "diff: out of memory");
        goto out;
    }
    size_t k = 0;
    for (int s = 0; s < 2; s++) {
        ap_prof *p = s ? b : a;
        for (size_t i = 0; i < ft[s].nrows; i++) {
            ap_frame_id f = ft[s].rows[i].frame;
            e[k++] = (entry){ap_prof_frame_qualname(p, f), frame_file(p, f), s, &ft[s].rows[i]};
        }
    }
    qsort(e, ne, sizeof *e, entry_cmp);
    /* Equal keys are one row: A's entries then B's (two functions of one name in one
     * file, such as lambdas, add up). */
    for (size_t i = 0; i < ne; i++) {
        ap_diff_row *r = &d->rows[d->nrows];
        if (i == 0 || key_cmp(e[i].q, e[i].f, e[i - 1].q, e[i - 1].f) != 0) {
            r = &d->rows[d->nrows++];
            r->qualname = e[i].q;
            r->file = e[i].f;
        } else {
            r = &d->rows[d->nrows - 1];
        }
        double *v = e[i].side ? r->b : r->a;
        for (unsigned m = 0; m < AP_M_COUNT; m++)
            v[m] += (double)e[i].row->m[m] * scale[e[i].side];
        if (e[i].side)
            r->in_b = 1;
        else
            r->in_a = 1;
    }
    for (size_t i = 0; i < d->nrows; i++)
        d->nmatched += d->rows[i].in_a && d->rows[i].in_b;
    if (d->nmatched == 0) {
        ap_err_set(AP_ENOTFOUND, "the two profiles have no function in common");
        goto out;
    }
    qsort_r(d->rows, d->nrows, sizeof *d->rows, row_cmp, &d->key);
    rc = 0;
out:
    free(e);
    ap_functab_free(&ft[0]);
    ap_functab_free(&ft[1]);
    if (rc != 0)
        ap_diff_free(d);
    return rc;
}

/* ---- call paths ----------------------------------------------------------------- */

static int same_frame(const ap_prof *a, ap_frame_id fa, const ap_prof *b, ap_frame_id fb) {
    const ap_frame *x = ap_prof_frame(a, fa), *y = ap_prof_frame(b, fb);
    if (x == NULL || y == NULL || x->kind != y->kind || x->lineno != y->lineno)
        return 0;
    return strcmp(ap_prof_frame_qualname(a, fa), ap_prof_frame_qualname(b, fb)) == 0 &&
           strcmp(ap_prof_str(a, x->file), ap_prof_str(b, y->file)) == 0;
}

ap_node_id *ap_diff_match_paths(const ap_prof *a, const ap_tree *ta, const ap_prof *b,
                                const ap_tree *tb) {
    size_t n = ap_tree_nnodes(tb);
    ap_node_id *match = malloc((n ? n : 1) * sizeof *match);
    if (match == NULL) {
        ap_err_set(AP_ENOMEM, "diff: out of memory");
        return NULL;
    }
    /* Parents precede children: the match of a node's parent is known. */
    for (size_t i = 0; i < n; i++) {
        const ap_node *nb = ap_tree_node(tb, (ap_node_id)i);
        match[i] = i == 0 ? 0 : AP_NONE;
        if (i == 0 || match[nb->parent] == AP_NONE)
            continue;
        const ap_node *pa = ap_tree_node(ta, match[nb->parent]);
        for (const ap_node *k = ap_node_first_child(pa); k; k = ap_node_next_sibling(k)) {
            if (same_frame(a, k->frame, b, nb->frame)) {
                match[i] = k->id;
                break;
            }
        }
    }
    return match;
}

/* ---- values --------------------------------------------------------------------- */

/* A figure in its unit: "1.25 ms", "3.1 MB", "1,234" (counts to 3 significant
 * digits when not whole, as per-request figures are). */
static void put_value(ap_sbuf *sb, const char *unit, double v) {
    double av = fabs(v);
    if (strcmp(unit, "nanoseconds") == 0) {
        if (av >= 1e9)
            ap_sbuf_printf(sb, "%.3g s", v / 1e9);
        else if (av >= 1e6)
            ap_sbuf_printf(sb, "%.3g ms", v / 1e6);
        else if (av >= 1e3)
            ap_sbuf_printf(sb, "%.3g us", v / 1e3);
        else
            ap_sbuf_printf(sb, "%.3g ns", v);
    } else if (strcmp(unit, "bytes") == 0) {
        if (av >= 1048576)
            ap_sbuf_printf(sb, "%.3g MB", v / 1048576);
        else if (av >= 1024)
            ap_sbuf_printf(sb, "%.3g KB", v / 1024);
        else
            ap_sbuf_printf(sb, "%.3g B", v);
    } else {
        ap_sbuf_printf(sb, "%.4g", v);
    }
}

static void put_signed(ap_sbuf *sb, const char *unit, double v) {
    ap_sbuf_putc(sb, v > 0 ? '+' : v < 0 ? '-' : ' ');
    put_value(sb, unit, fabs(v));
}

/* The relative change from x to y as "+25.0%", "new" (x is 0, y is not) or "". */
static void put_relative(ap_sbuf *sb, double x, double y) {
    if (x != 0)
        ap_sbuf_printf(sb, "%+.1f%%", 100.0 * (y - x) / x);
    else if (y != 0)
        ap_sbuf_puts(sb, "new");
}

/* ---- json ----------------------------------------------------------------------- */

static void json_double(ap_sbuf *sb, double v) {
    if (v == floor(v) && fabs(v) < 9e15)
        ap_sbuf_printf(sb, "%.0f", v);
    else
        ap_sbuf_printf(sb, "%.6g", v);
}

static void json_metrics(ap_sbuf *sb, const double *v) {
    ap_sbuf_putc(sb, '{');
    for (unsigned m = 0; m < AP_M_COUNT; m++) {
        if (m)
            ap_sbuf_putc(sb, ',');
        ap_sbuf_json_str(sb, ap_metric_name(m));
        ap_sbuf_putc(sb, ':');
        json_double(sb, v[m]);
    }
    ap_sbuf_putc(sb, '}');
}

static const char *row_status(const ap_diff_row *r) {
    return r->in_a && r->in_b ? "changed" : r->in_b ? "new" : "vanished";
}

static void write_json(const ap_diff *d, const ap_diff_opts *o, ap_sbuf *out) {
    size_t nnew = 0, nvanished = 0;
    for (size_t i = 0; i < d->nrows; i++) {
        nnew += !d->rows[i].in_a;
        nvanished += !d->rows[i].in_b;
    }
    ap_sbuf_puts(out, "{\"version\":1,\"a\":");
    ap_sbuf_json_str(out, o->name_a ? o->name_a : "A");
    ap_sbuf_puts(out, ",\"b\":");
    ap_sbuf_json_str(out, o->name_b ? o->name_b : "B");
    ap_sbuf_printf(out, ",\"metric\":\"%s\",\"key\":\"%s\",\"unit\":\"%s\",\"per\":\"%s\","
                        "\"requests\":[%llu,%llu],\"matched\":%zu,\"new\":%zu,\"vanished\":%zu,"
                        "\"functions\":[",
                   ap_report_vm_name(d->vm), ap_metric_name(d->key), ap_report_vm_unit(d->vm),
                   d->per_request ? "request" : "total", (unsigned long long)d->requests_a,
                   (unsigned long long)d->requests_b, d->nmatched, nnew, nvanished);
    for (size_t i = 0; i < d->nrows; i++) {
        const ap_diff_row *r = &d->rows[i];
        ap_sbuf_puts(out, i ? ",\n{\"qualname\":" : "\n{\"qualname\":");
        ap_sbuf_json_str(out, r->qualname);
        ap_sbuf_puts(out, ",\"file\":");
        ap_sbuf_json_str(out, r->file);
        ap_sbuf_printf(out, ",\"status\":\"%s\",\"delta\":", row_status(r));
        json_double(out, r->b[d->key] - r->a[d->key]);
        ap_sbuf_puts(out, ",\"a\":");
        json_metrics(out, r->a);
        ap_sbuf_puts(out, ",\"b\":");
        json_metrics(out, r->b);
        ap_sbuf_putc(out, '}');
    }
    ap_sbuf_puts(out, "]}\n");
}

/* ---- differential flame graph ----------------------------------------------------- */

typedef struct paint_ctx {
    const ap_diff *d;
    const ap_node_id *match;   /* B node -> A node or AP_NONE */
    const uint64_t *incl_a, *incl_b;
    double scale_a, scale_b;
} paint_ctx;

static void node_values(const paint_ctx *c, const ap_node *n, double *va, double *vb) {
    ap_node_id m = c->match[n->id];
    *va = m == AP_NONE ? 0 : (double)c->incl_a[m] * c->scale_a;
    *vb = (double)c->incl_b[n->id] * c->scale_b;
}

/* White for no change, to red (B spends more) or blue (less), full at a
 * relative change of 100% or more, and at paths new in B. */
static uint32_t diff_fill(const ap_node *n, void *arg) {
    const paint_ctx *c = arg;
    double va, vb;
    node_values(c, n, &va, &vb);
    double rel = va > 0 ? (vb - va) / va : vb > 0 ? 1.0 : 0.0;
    double t = sqrt(fmin(1.0, fabs(rel)));
    unsigned fade = (unsigned)(235.0 - 190.0 * t);
    if (rel > 0)
        return 245u << 16 | fade << 8 | fade;
    return fade << 16 | fade << 8 | 245u;
}

static void diff_note(const ap_node *n, void *arg, ap_sbuf *out) {
    const paint_ctx *c = arg;
    double va, vb;
    node_values(c, n, &va, &vb);
    const char *unit = ap_report_vm_unit(c->d->vm);
    ap_sbuf_printf(out, "; %s A ", c->d->per_request ? "per request" : "in total");
    put_value(out, unit, va);
    ap_sbuf_puts(out, ", B ");
    put_value(out, unit, vb);
    ap_sbuf_puts(out, ": ");
    if (c->match[n->id] == AP_NONE)
        ap_sbuf_puts(out, "new in B");
    else
        put_relative(out, va, vb);
}

static int write_svg(ap_prof *a, ap_prof *b, const ap_diff *d, const ap_diff_opts *o,
                     ap_sbuf *out) {
    ap_prof *ma = ap_prof_merge(a, NULL, NULL), *mb = ma ? ap_prof_merge(b, NULL, NULL) : NULL;
    const ap_tree *ta = ma ? ap_prof_tree_at(ma, 0) : NULL, *tb = mb ? ap_prof_tree_at(mb, 0) : NULL;
    unsigned field = ap_report_vm_field(d->vm);
    ap_node_id *match = tb ? ap_diff_match_paths(ma, ta, mb, tb) : NULL;
    uint64_t *ia = match ? ap_report_inclusive(ta, field) : NULL;
    uint64_t *ib = ia ? ap_report_inclusive(tb, field) : NULL;
    ap_sbuf title = {0};
    int rc = -1;
    if (ib == NULL)
        goto out;
    paint_ctx pc = {d, match, ia, ib, 1.0, 1.0};
    if (d->per_request) {
        pc.scale_a = 1.0 / (double)d->requests_a;
        pc.scale_b = 1.0 / (double)d->requests_b;
    }
    size_t nvanished = 0;
    for (size_t i = 0; i < d->nrows; i++)
        nvanished += !d->rows[i].in_b;
    ap_sbuf_printf(&title, "%s: %s -> %s (widths: B; red: B slower, blue: B faster; "
                           "%s; %zu functions vanished)",
                   o->title ? o->title : "apiprof diff", o->name_a ? o->name_a : "A",
                   o->name_b ? o->name_b : "B", d->per_request ? "per request" : "in total",
                   nvanished);
    ap_sbuf_putc(&title, '\0');
    if (title.failed)
        goto out;
    ap_flame_paint paint = {diff_fill, diff_note, &pc};
    rc = ap_flame_svg_tree(mb, tb, d->vm, 0, title.data, &paint, out);
out:
    ap_sbuf_free(&title);
    free(ib);
    free(ia);
    free(match);
    ap_prof_free(mb);
    ap_prof_free(ma);
    return rc;
}

/* ---- html ------------------------------------------------------------------------- */

static const char html_css[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222;max-width:1260px}"
    "h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:22px 0 6px}"
    ".answer{font-size:16px;background:#fff4e8;border-left:4px solid #d33;padding:8px 12px}"
    ".answer.faster{background:#eef3ff;border-left-color:#36c}"
    "table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;text-align:right;"
    "border-bottom:1px solid #eee}td.name,th.name{text-align:left;font-family:monospace}"
    "td.up{color:#b00}td.down{color:#048}.sw{display:inline-block;width:12px;height:12px;"
    "vertical-align:middle;margin:0 3px}.flame svg{max-width:100%;height:auto}"
    ".file{color:#777}";

static void html_name(ap_sbuf *out, const ap_diff_row *r) {
    ap_sbuf_puts(out, "<td class=\"name\">");
    ap_sbuf_xml_str(out, r->qualname);
    ap_sbuf_puts(out, " <span class=\"file\">");
    ap_sbuf_xml_str(out, r->file);
    ap_sbuf_puts(out, "</span></td>");
}

static void html_table(ap_sbuf *out, const ap_diff *d, int status, size_t limit) {
    const char *unit = ap_report_vm_unit(d->vm);
    const char *label = ap_metric_get(d->key)->label;
    ap_sbuf_printf(out, "<table class=\"t%d\"><tr><th class=\"name\">function</th>", status);
    ap_sbuf_printf(out, "<th>A %s</th><th>B %s</th><th>change</th><th></th>"
                        "<th>A total</th><th>B total</th><th>A calls</th><th>B calls</th></tr>\n",
                   label, label);
    size_t shown = 0;
    for (size_t i = 0; i < d->nrows && shown < limit; i++) {
        const ap_diff_row *r = &d->rows[i];
        int st = r->in_a && r->in_b ? 0 : r->in_b ? 1 : 2;
        if (st != status)
            continue;
        shown++;
        double x = r->a[d->key], y = r->b[d->key];
        ap_sbuf_puts(out, "<tr>");
        html_name(out, r);
        ap_sbuf_puts(out, "<td>");
        put_value(out, unit, x);
        ap_sbuf_puts(out, "</td><td>");
        put_value(out, unit, y);
        ap_sbuf_printf(out, "</td><td class=\"%s\">", y > x ? "up" : y < x ? "down" : "");
        put_signed(out, unit, y - x);
        ap_sbuf_puts(out, "</td><td>");
        put_relative(out, x, y);
        ap_sbuf_puts(out, "</td><td>");
        put_value(out, "nanoseconds", r->a[AP_M_TOTAL_NS]);
        ap_sbuf_puts(out, "</td><td>");
        put_value(out, "nanoseconds", r->b[AP_M_TOTAL_NS]);
        ap_sbuf_puts(out, "</td><td>");
        put_value(out, "count", r->a[AP_M_CALLS]);
        ap_sbuf_puts(out, "</td><td>");
        put_value(out, "count", r->b[AP_M_CALLS]);
        ap_sbuf_puts(out, "</td></tr>\n");
    }
    ap_sbuf_puts(out, "</table>\n");
    if (shown == 0)
        ap_sbuf_puts(out, "<p>None.</p>\n");
}

static int write_html(ap_prof *a, ap_prof *b, const ap_diff *d, const ap_diff_opts *o,
                      ap_sbuf *out) {
    const char *na = o->name_a ? o->name_a : "A", *nb = o->name_b ? o->name_b : "B";
    const char *title = o->title ? o->title : "apiprof diff";
    const char *unit = ap_report_vm_unit(d->vm);
    size_t nnew = 0, nvanished = 0;
    for (size_t i = 0; i < d->nrows; i++) {
        nnew += !d->rows[i].in_a;
        nvanished += !d->rows[i].in_b;
    }
    ap_sbuf_puts(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    ap_sbuf_xml_str(out, title);
    ap_sbuf_printf(out, "</title><style>%s</style></head><body>\n<h1>", html_css);
    ap_sbuf_xml_str(out, title);
    ap_sbuf_puts(out, "</h1>\n<p>A (before): <b>");
    ap_sbuf_xml_str(out, na);
    ap_sbuf_puts(out, "</b>, B (after): <b>");
    ap_sbuf_xml_str(out, nb);
    ap_sbuf_printf(out, "</b>. Metric: %s (%s); figures %s", ap_report_vm_name(d->vm),
                   ap_metric_name(d->key), d->per_request ? "per request" : "in total");
    if (d->per_request)
        ap_sbuf_printf(out, " (A %llu requests, B %llu)", (unsigned long long)d->requests_a,
                       (unsigned long long)d->requests_b);
    ap_sbuf_printf(out, ". %zu functions in both, %zu new in B, %zu vanished from A.</p>\n",
                   d->nmatched, nnew, nvanished);
    const ap_diff_row *top = d->nrows ? &d->rows[0] : NULL;
    if (top != NULL) {
        double x = top->a[d->key], y = top->b[d->key];
        ap_sbuf_printf(out, "<p class=\"answer%s\" id=\"answer\">Largest change: <b>",
                       y < x ? " faster" : "");
        ap_sbuf_xml_str(out, top->qualname);
        ap_sbuf_puts(out, "</b> <span class=\"file\">");
        ap_sbuf_xml_str(out, top->file);
        ap_sbuf_printf(out, "</span>, %s ", ap_metric_get(d->key)->label);
        put_value(out, unit, x);
        ap_sbuf_puts(out, " &rarr; ");
        put_value(out, unit, y);
        ap_sbuf_printf(out, " %s (", d->per_request ? "per request" : "in total");
        put_signed(out, unit, y - x);
        if (x != 0) {
            ap_sbuf_puts(out, ", ");
            put_relative(out, x, y);
        } else {
            ap_sbuf_puts(out, ", new in B");
        }
        ap_sbuf_puts(out, ").</p>\n");
    }
    ap_sbuf_puts(out,
                 "<h2>Differential flame graph</h2>\n<p>Each frame is a call path of B, as wide "
                 "as B's time on it. Colour: <span class=\"sw\" style=\"background:#f52d2d\"></span>"
                 "B spends more on the path than A, <span class=\"sw\" "
                 "style=\"background:#2d2df5\"></span>less; the deeper the colour, the larger the "
                 "relative change (full at 100% and for paths new in B); white: unchanged. "
                 "Hover for the figures, click to zoom. Paths that vanished are not drawn: see "
                 "the list below.</p>\n<div class=\"flame\">");
    ap_sbuf svg = {0};
    ap_diff_opts so = *o;
    so.title = title;
    int rc = write_svg(a, b, d, &so, &svg);
    if (rc != 0) {
        ap_sbuf_free(&svg);
        return -1;
    }
    /* Inline: without the XML declaration. */
    const char *start = memchr(svg.data, '\n', svg.len);
    start = start ? start + 1 : svg.data;
    ap_sbuf_put(out, start, svg.len - (size_t)(start - svg.data));
    ap_sbuf_free(&svg);
    ap_sbuf_printf(out, "</div>\n<h2>Largest changes (by %s, top %d)</h2>\n",
                   ap_metric_name(d->key), DIFF_HTML_ROWS);
    html_table(out, d, 0, DIFF_HTML_ROWS);
    ap_sbuf_puts(out, "<h2>New in B</h2>\n");
    html_table(out, d, 1, DIFF_HTML_ROWS);
    ap_sbuf_puts(out, "<h2>Vanished from A</h2>\n");
    html_table(out, d, 2, DIFF_HTML_ROWS);
    ap_sbuf_puts(out, "</body></html>\n");
    return out->failed ? ap_err_set(AP_ENOMEM, "diff: out of memory") : 0;
}

int ap_diff_write(ap_prof *a, ap_prof *b, const char *format, const ap_diff_opts *o,
                  ap_sbuf *out) {
    static const ap_diff_opts none;
    if (o == NULL)
        o = &none;
    if (strcmp(format, "json") != 0 && strcmp(format, "svg") != 0 && strcmp(format, "html") != 0)
        return ap_err_set(AP_EINVAL, "unknown diff format '%s' (json, svg, html)", format);
    ap_diff d;
    if (ap_diff_build(a, b, o, &d) != 0)
        return -1;
    int rc = 0;
    if (format[0] == 'j') {
        write_json(&d, o, out);
        if (out->failed)
            rc = ap_err_set(AP_ENOMEM, "diff: out of memory");
    } else if (format[0] == 's') {
        rc = write_svg(a, b, &d, o, out);
    } else {
        rc = write_html(a, b, &d, o, out);
    }
    ap_diff_free(&d);
    return rc;
}
