/* ap_dot.c -- the call graph as Graphviz dot: functions shaded by self share, edges labelled with share of time and calls, pruned below a threshold. */
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_report.h"

/* Default threshold (percent of the total) below which nodes and edges are
 * left out. */
#define DOT_MIN_PERCENT 0.5

/* Longest name (bytes) put in a label or tooltip: Graphviz rejects labels of some size,
 * and a box a page wide helps nobody. */
#define DOT_NAME_MAX 200

/* s as the inside of a dot string: '"' and '\\' escaped, control characters as spaces,
 * invalid UTF-8 as U+FFFD, cut after DOT_NAME_MAX bytes (at a character) with "..". */
static void dot_label_str(ap_sbuf *out, const char *s) {
    size_t n = 0;
    for (const unsigned char *c = (const unsigned char *)s; *c;) {
        size_t len = ap_sbuf_utf8_len(c);
        if (n + (len ? len : 1) > DOT_NAME_MAX) {
            ap_sbuf_puts(out, "..");
            break;
        }
        if (len == 0) {
            ap_sbuf_puts(out, "\xef\xbf\xbd");
            c++;
            n += 3;
            continue;
        }
        if (*c == '"' || *c == '\\')
            ap_sbuf_putc(out, '\\');
        if (*c < 0x20 || *c == 0x7f)
            ap_sbuf_putc(out, ' ');
        else
            ap_sbuf_put(out, c, len);
        c += len;
        n += len;
    }
}

int ap_dot_write(const ap_report_ctx *rc, ap_sbuf *out) {
    ap_functab ft;
    ap_prof *m = ap_report_functab(rc, &ft);
    if (m == NULL)
        return -1;
    double min_pct = rc->min_percent > 0 ? rc->min_percent : DOT_MIN_PERCENT;
    double total = 0;
    for (size_t i = 0; i < ft.nrows; i++)
        total += (double)ft.rows[i].self_ns;
    double cut = total * min_pct / 100.0;
    ap_sbuf_puts(out, "digraph apiprof {\n  graph [label=\"");
    dot_label_str(out, rc->title);
    ap_sbuf_printf(out,
                   " (%s; nodes and edges below %g%% left out)\", labelloc=t, fontname=Helvetica];\n"
                   "  node [shape=box, style=\"rounded,filled\", fontname=Helvetica, fontsize=10];\n"
                   "  edge [fontname=Helvetica, fontsize=9];\n",
                   ap_report_vm_name(rc->metric), min_pct);
    for (size_t i = 0; i < ft.nrows; i++) {
        const ap_func_row *r = &ft.rows[i];
        if ((double)r->total_ns < cut || r->total_ns == 0)
            continue;
        const ap_frame *f = ap_prof_frame(m, r->frame);
        double self = total > 0 ? (double)r->self_ns / total : 0;
        /* White for no self time to saturated red for all of it. */
        unsigned shade = (unsigned)(255 - 200 * (self > 1 ? 1 : self));
        ap_sbuf_printf(out, "  f%zu [label=\"", i);
        ap_sbuf label = {0};
        ap_report_frame_label(m, r->frame, &label);
        ap_sbuf_putc(&label, '\0');
        dot_label_str(out, label.failed ? "?" : label.data);
        ap_sbuf_free(&label);
        if (f->kind == AP_FRAME_PYTHON) {
            const char *file = ap_prof_str(m, f->file), *base = strrchr(file, '/');
            ap_sbuf_puts(out, "\\n");
            dot_label_str(out, base ? base + 1 : file);
            ap_sbuf_printf(out, ":%u", f->line);
        }
        ap_sbuf_printf(out, "\\ntotal %.1f%% self %.1f%%\\n%llu calls\", fillcolor=\"#ff%02x%02x\"",
                       total > 0 ? 100.0 * (double)r->total_ns / total : 0.0, 100.0 * self,
                       (unsigned long long)r->calls, shade, shade);
        ap_sbuf_puts(out, ", tooltip=\"");
        dot_label_str(out, ap_prof_str(m, f->file));
        ap_sbuf_puts(out, "\"];\n");
    }
    for (size_t i = 0; i < ft.nedges; i++) {
        const ap_func_edge *e = &ft.edges_out[i];
        const ap_func_row *a = &ft.rows[e->caller], *b = &ft.rows[e->callee];
        if ((double)e->total_ns < cut || e->total_ns == 0 || (double)a->total_ns < cut ||
            (double)b->total_ns < cut)
            continue;
        double share = total > 0 ? 100.0 * (double)e->total_ns / total : 0;
        ap_sbuf_printf(out, "  f%u -> f%u [label=\"%.1f%%\\n%llu\xc3\x97\", penwidth=%.2f];\n",
                       e->caller, e->callee, share, (unsigned long long)e->calls,
                       1.0 + share / 20.0);
    }
    ap_sbuf_puts(out, "}\n");
    ap_functab_free(&ft);
    ap_prof_free(m);
    return out->failed ? -1 : 0;
}
