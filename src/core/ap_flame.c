/* ap_flame.c -- stack views: collapsed stacks (flamegraph.pl input) and a standalone interactive SVG flame graph. */
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_report.h"

/* ---- collapsed stacks --------------------------------------------------------
 * One line per node with a non-zero own value: "f1;f2;...;fn VALUE", frames
 * from the outermost, ';' and line breaks inside a frame name replaced. */

typedef struct collapsed_ctx {
    const ap_prof *p;
    unsigned field;
    ap_sbuf *out;
    ap_sbuf path;     /* the frames from the outermost; w->mark[d]: its length at depth d */
    const ap_tree *tree;
    uint64_t *incl;   /* subtree sums for paths cut at AP_REPORT_STACK_MAX, once needed */
} collapsed_ctx;

/* A frame of a collapsed line: ';' (the separator) as ':', control characters (a
 * newline would start a line) as spaces, invalid UTF-8 as U+FFFD.  s is NUL-terminated. */
static void put_sanitized(ap_sbuf *dst, const char *s) {
    for (const unsigned char *c = (const unsigned char *)s; *c;) {
        size_t len = ap_sbuf_utf8_len(c);
        if (len == 0) {
            ap_sbuf_puts(dst, "\xef\xbf\xbd");
            c++;
        } else if (len == 1) {
            ap_sbuf_putc(dst, *c == ';' ? ':' : *c < 0x20 || *c == 0x7f ? ' ' : (char)*c);
            c++;
        } else {
            ap_sbuf_put(dst, c, len);
            c += len;
        }
    }
}

static int collapsed_enter(const ap_walk *w, void *arg) {
    collapsed_ctx *c = arg;
    const ap_node *n = w->node[w->depth];
    c->path.len = (size_t)w->mark[w->depth - 1];
    if (w->depth > 1)
        ap_sbuf_putc(&c->path, ';');
    ap_sbuf label = {0};
    ap_report_frame_label_long(c->p, n->frame, &label);
    ap_sbuf_putc(&label, '\0');
    put_sanitized(&c->path, label.failed ? "" : label.data);
    int failed = label.failed;
    ap_sbuf_free(&label);
    if (failed || c->path.failed)
        return -1;
    w->mark[w->depth] = c->path.len;
    uint64_t v;
    int descend = ap_report_stack_value(w, c->tree, c->field, &c->incl, &v);
    if (v != 0 && descend >= 0) {
        ap_sbuf_put(c->out, c->path.data, c->path.len);
        ap_sbuf_putc(c->out, ' ');
        ap_sbuf_u64(c->out, v);
        ap_sbuf_putc(c->out, '\n');
    }
    return c->out->failed ? -1 : descend;
}

int ap_flame_write_collapsed(const ap_report_ctx *rc, ap_sbuf *out) {
    ap_prof *m = ap_prof_merge(rc->prof, NULL, NULL);
    if (m == NULL)
        return -1;
    collapsed_ctx c = {m, ap_report_vm_field(rc->metric), out, {0}, ap_prof_tree_at(m, 0), NULL};
    int r = ap_report_walk(c.tree, collapsed_enter, &c);
    ap_sbuf_free(&c.path);
    free(c.incl);
    ap_prof_free(m);
    return r;
}

/* ---- SVG flame graph ------------------------------------------------------------
 * Root at the bottom, children sorted by name and laid side by side over
 * their parent, widths proportional to inclusive values.  Frames narrower
 * than 0.1 px (or below --min-percent of the total) are left out with their
 * subtrees.  The script inside (flame_svg.js, embedded at build time) adds
 * hover details, click to zoom and search. */

#define SVG_WIDTH 1200.0
#define SVG_PAD 10.0
#define SVG_FRAME_H 16.0
#define SVG_TOP 34.0
#define SVG_BOTTOM 34.0
#define SVG_CHAR_W 6.6

extern const char ap_asset_flame_svg_js[];   /* generated from report/flame_svg.js */

typedef struct svg_ctx {
    const ap_prof *p;
    ap_sbuf labels;        /* every frame's label, NUL-separated */
    size_t *label_at;      /* frame -> offset in labels */
} svg_ctx;

static int child_cmp(const void *a, const void *b, void *arg) {
    const svg_ctx *sc = arg;
    const ap_node *x = *(const ap_node *const *)a, *y = *(const ap_node *const *)b;
    int r = strcmp(sc->labels.data + sc->label_at[x->frame], sc->labels.data + sc->label_at[y->frame]);
    return r ? r : (x->id < y->id ? -1 : x->id > y->id);
}

static uint32_t name_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* Append label cut to fit width px, with ".." when cut; nothing below 3
 * characters.  Cuts at UTF-8 character boundaries. */
static void put_fitted(ap_sbuf *out, const char *label, double width) {
    double room = (width - 6.0) / SVG_CHAR_W;
    size_t len = strlen(label);
    if (room < 3)
        return;
    if ((double)len <= room) {
        ap_sbuf_xml_str(out, label);
        return;
    }
    size_t keep = (size_t)room - 2;
    while (keep > 0 && ((unsigned char)label[keep] & 0xc0) == 0x80)
        keep--;
    ap_sbuf tmp = {0};
    ap_sbuf_put(&tmp, label, keep);
    ap_sbuf_puts(&tmp, "..");
    ap_sbuf_putc(&tmp, '\0');
    if (!tmp.failed)
        ap_sbuf_xml_str(out, tmp.data);
    else
        out->failed = 1;
    ap_sbuf_free(&tmp);
}

int ap_flame_write_svg(const ap_report_ctx *rc, ap_sbuf *out) {
    ap_prof *m = ap_prof_merge(rc->prof, NULL, NULL);
    if (m == NULL)
        return -1;
    int r = ap_flame_svg_tree(m, ap_prof_tree_at(m, 0), rc->metric, rc->min_percent, rc->title,
                              NULL, out);
    ap_prof_free(m);
    return r;
}

int ap_flame_svg_tree(const ap_prof *m, const ap_tree *t, unsigned vm, double min_percent,
                      const char *title, const ap_flame_paint *paint, ap_sbuf *out) {
    size_t n = ap_tree_nnodes(t), nf = ap_prof_nframes(m);
    unsigned field = ap_report_vm_field(vm);
    svg_ctx c = {m, {0}, malloc(nf * sizeof(size_t))};
    uint64_t *incl = ap_report_inclusive(t, field);
    double *x = malloc(n * sizeof *x);
    uint32_t *depth = malloc(n * sizeof *depth);
    const ap_node **kids = NULL;
    size_t kids_cap = 0;
    int rc_ = -1;
    if (c.label_at == NULL || incl == NULL || x == NULL || depth == NULL) {
        ap_err_set(AP_ENOMEM, "report: out of memory");
        goto out;
    }
    for (size_t f = 0; f < nf; f++) {
        c.label_at[f] = c.labels.len;
        ap_report_frame_label(m, (ap_frame_id)f, &c.labels);
        ap_sbuf_putc(&c.labels, '\0');
    }
    if (c.labels.failed)
        goto out;
    double total = (double)incl[0];
    double scale = total > 0 ? (SVG_WIDTH - 2 * SVG_PAD) / total : 0;
    double min_value = total * 0.1 / (SVG_WIDTH - 2 * SVG_PAD);
    if (min_percent > 0 && total * min_percent / 100.0 > min_value)
        min_value = total * min_percent / 100.0;
    /* Place every node: x in value units from the left edge; depth; a node
     * left out has depth UINT32_MAX and so have its descendants. */
    uint32_t max_depth = 0;
    x[0] = 0;
    depth[0] = 0;
    for (size_t i = 0; i < n; i++) {
        const ap_node *node = ap_tree_node(t, (ap_node_id)i);
        size_t nk = 0;
        for (const ap_node *k = ap_node_first_child(node); k; k = ap_node_next_sibling(k)) {
            if (nk == kids_cap) {
                size_t cap = kids_cap ? kids_cap * 2 : 64;
                const ap_node **nkids = realloc(kids, cap * sizeof *nkids);
                if (nkids == NULL) {
                    ap_err_set(AP_ENOMEM, "report: out of memory");
                    goto out;
                }
                kids = nkids;
                kids_cap = cap;
            }
            kids[nk++] = k;
        }
        if (nk > 1)
            qsort_r(kids, nk, sizeof *kids, child_cmp, &c);
        double at = x[i];
        for (size_t k = 0; k < nk; k++) {
            ap_node_id id = kids[k]->id;
            x[id] = at;
            at += (double)incl[id];
            int shown = depth[i] != UINT32_MAX && (double)incl[id] >= min_value && incl[id] > 0;
            depth[id] = shown ? depth[i] + 1 : UINT32_MAX;
            if (shown && depth[id] > max_depth)
                max_depth = depth[id];
        }
    }
    double height = SVG_TOP + SVG_BOTTOM + (max_depth + 1) * SVG_FRAME_H;
    ap_sbuf_printf(out,
                   "<?xml version=\"1.0\" standalone=\"no\"?>\n"
                   "<svg version=\"1.1\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
                   "xmlns=\"http://www.w3.org/2000/svg\" data-total=\"%llu\" data-unit=\"%s\">\n",
                   SVG_WIDTH, height, SVG_WIDTH, height, (unsigned long long)incl[0],
                   ap_report_vm_unit(vm));
    ap_sbuf_puts(out,
                 "<style>text{font-family:monospace;font-size:12px;fill:#000}"
                 "#title{font-size:17px}.btn{cursor:pointer;fill:#335}"
                 "g.f rect{stroke:#fff;stroke-width:0.5}g.f:hover rect{stroke:#000}"
                 ".hide{display:none}g.dim rect{fill-opacity:0.5}</style>\n"
                 "<script type=\"text/ecmascript\"><![CDATA[\n");
    ap_sbuf_puts(out, ap_asset_flame_svg_js);
    ap_sbuf_puts(out, "]]></script>\n<rect width=\"100%\" height=\"100%\" fill=\"#f6f6ef\"/>\n");
    ap_sbuf_printf(out, "<text id=\"title\" x=\"%.0f\" y=\"22\" text-anchor=\"middle\">",
                   SVG_WIDTH / 2);
    ap_sbuf_xml_str(out, title);
    ap_sbuf_printf(out, " (%s)</text>\n", ap_report_vm_name(vm));
    ap_sbuf_printf(out,
                   "<text id=\"unzoom\" class=\"btn hide\" x=\"%.0f\" y=\"22\">Reset zoom</text>\n"
                   "<text id=\"search\" class=\"btn\" x=\"%.0f\" y=\"22\" "
                   "text-anchor=\"end\">Search</text>\n"
                   "<text id=\"details\" x=\"%.0f\" y=\"%.0f\"> </text>\n"
                   "<text id=\"matched\" x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\"> </text>\n"
                   "<g id=\"frames\">\n",
                   SVG_PAD, SVG_WIDTH - SVG_PAD, SVG_PAD, height - 12, SVG_WIDTH - SVG_PAD,
                   height - 12);
    for (size_t i = 0; i < n; i++) {
        if (depth[i] == UINT32_MAX)
            continue;
        const ap_node *node = ap_tree_node(t, (ap_node_id)i);
        const char *label = i == 0 ? "all" : c.labels.data + c.label_at[node->frame];
        double px = SVG_PAD + x[i] * scale, w = (double)incl[i] * scale;
        double py = height - SVG_BOTTOM - (depth[i] + 1) * SVG_FRAME_H;
        uint32_t h = name_hash(label);
        uint32_t rgb = (205 + h % 50) << 16 | ((h >> 8) % 200 + 20) << 8 | (h >> 16) % 55;
        if (paint != NULL)
            rgb = paint->fill(node, paint->arg);
        ap_sbuf_puts(out, "<g class=\"f\"><title>");
        ap_sbuf_xml_str(out, label);
        ap_sbuf_puts(out, " (");
        ap_report_fmt_value(out, vm, incl[i]);
        ap_sbuf_printf(out, ", %.2f%%", total > 0 ? 100.0 * (double)incl[i] / total : 0.0);
        if (i != 0 && node->m[AP_M_CALLS])
            ap_sbuf_printf(out, ", %llu calls", (unsigned long long)node->m[AP_M_CALLS]);
        if (paint != NULL)
            paint->note(node, paint->arg, out);
        ap_sbuf_printf(out,
                       ")</title><rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" "
                       "rx=\"2\" fill=\"rgb(%u,%u,%u)\"/><text x=\"%.2f\" y=\"%.1f\">",
                       px, py, w, SVG_FRAME_H - 1, rgb >> 16 & 0xff, rgb >> 8 & 0xff, rgb & 0xff,
                       px + 3, py + SVG_FRAME_H - 4.5);
        put_fitted(out, label, w);
        ap_sbuf_puts(out, "</text></g>\n");
    }
    ap_sbuf_puts(out, "</g>\n</svg>\n");
    rc_ = out->failed ? -1 : 0;
out:
    free(kids);
    free(depth);
    free(x);
    free(incl);
    free(c.label_at);
    ap_sbuf_free(&c.labels);
    return rc_;
}
