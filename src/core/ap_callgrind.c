/* ap_callgrind.c -- the callgrind format (callgrind_annotate, KCachegrind): self cost per function and line, calls with inclusive cost, for the chosen metric. */
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_map.h"
#include "ap_report.h"

static const char *event_name(unsigned vm) {
    return ap_metric_get(ap_report_vm_field(vm))->cost;
}

/* "fl=(ID) NAME" the first time an ID is used, "fl=(ID)" afterwards. */
static void put_named(ap_sbuf *out, const char *key, uint32_t id, uint8_t *seen, const char *name) {
    ap_sbuf_printf(out, "%s=(%u)", key, id);
    if (!seen[id]) {
        seen[id] = 1;
        ap_sbuf_putc(out, ' ');
        for (const char *s = name; *s; s++)
            ap_sbuf_putc(out, *s == '\n' ? ' ' : *s);
    }
    ap_sbuf_putc(out, '\n');
}

typedef struct line_cost {
    uint64_t key, val;   /* row << 32 | line, self cost */
} line_cost;

static int line_cost_cmp(const void *a, const void *b) {
    uint64_t x = ((const line_cost *)a)->key, y = ((const line_cost *)b)->key;
    return x < y ? -1 : x > y;
}

static void fn_name(const ap_prof *m, ap_frame_id f, ap_sbuf *tmp) {
    tmp->len = 0;
    ap_report_frame_label(m, f, tmp);
    ap_sbuf_putc(tmp, '\0');
}

int ap_callgrind_write(const ap_report_ctx *rc, ap_sbuf *out) {
    ap_functab ft;
    ap_prof *m = ap_report_functab(rc, &ft);
    if (m == NULL)
        return -1;
    size_t nf = ap_prof_nframes(m), ns = ap_prof_nstrs(m);
    uint32_t *row_of = malloc(nf * sizeof *row_of);
    uint8_t *seen_fl = calloc(ns + 1, 1), *seen_fn = calloc(ft.nrows + 1, 1);
    ap_map lines = {0};   /* row << 32 | line -> self cost */
    ap_sbuf tmp = {0};
    line_cost *lc = NULL;
    size_t nlc = 0;
    int r = -1;
    if (row_of == NULL || seen_fl == NULL || seen_fn == NULL) {
        ap_err_set(AP_ENOMEM, "report: out of memory");
        goto out;
    }
    memset(row_of, 0xff, nf * sizeof *row_of);
    for (size_t i = 0; i < ft.nrows; i++)
        row_of[ft.rows[i].frame] = (uint32_t)i;
    const ap_tree *t = ap_prof_tree_at(m, 0);
    uint64_t total = 0;
    for (size_t i = 1; i < ap_tree_nnodes(t); i++) {
        const ap_node *n = ap_tree_node(t, (ap_node_id)i);
        const ap_frame *f = ap_prof_frame(m, n->frame);
        uint32_t row = row_of[ap_prof_func_frame(m, n->frame)];
        uint64_t v = n->m[AP_M_SELF_NS];
        if (v == 0 || row == AP_NONE)
            continue;
        int inserted;
        uint64_t *slot = ap_map_upsert(&lines, (uint64_t)row << 32 | (f->lineno ? f->lineno : f->line),
                                       0, &inserted);
        if (slot == NULL)
            goto out;
        *slot += v;
        total += v;
    }
    /* The line costs sorted by row, then line. */
    nlc = ap_map_size(&lines);
    lc = malloc((nlc ? nlc : 1) * sizeof *lc);
    if (lc == NULL) {
        ap_err_set(AP_ENOMEM, "report: out of memory");
        goto out;
    }
    nlc = 0;
    for (size_t pos = 0; (pos = ap_map_next(&lines, pos, &lc[nlc].key, &lc[nlc].val)) != 0;)
        nlc++;
    qsort(lc, nlc, sizeof *lc, line_cost_cmp);
    size_t next = 0;
    const char *argv = ap_prof_meta_get(m, "argv");
    ap_sbuf_printf(out, "# callgrind format\nversion: 1\ncreator: apiprof\ncmd: %s\n"
                        "positions: line\nevent: %s : %s (%s)\nevents: %s\nsummary: %llu\n\n",
                   argv ? argv : rc->title, event_name(rc->metric), ap_report_vm_name(rc->metric),
                   ap_report_vm_unit(rc->metric), event_name(rc->metric),
                   (unsigned long long)total);
    for (size_t i = 0; i < ft.nrows; i++) {
        const ap_func_row *row = &ft.rows[i];
        const ap_frame *f = ap_prof_frame(m, row->frame);
        put_named(out, "fl", f->file + 1, seen_fl, ap_prof_str(m, f->file));
        fn_name(m, row->frame, &tmp);
        put_named(out, "fn", (uint32_t)i + 1, seen_fn, tmp.failed ? "?" : tmp.data);
        int any = 0;
        for (; next < nlc && (lc[next].key >> 32) == i; next++, any = 1)
            ap_sbuf_printf(out, "%u %llu\n", (uint32_t)lc[next].key,
                           (unsigned long long)lc[next].val);
        if (!any)
            ap_sbuf_printf(out, "%u 0\n", f->line);
        for (uint32_t k = 0; k < row->ncallees; k++) {
            const ap_func_edge *e = &ft.edges_out[row->callees_first + k];
            const ap_frame *cf = ap_prof_frame(m, ft.rows[e->callee].frame);
            put_named(out, "cfl", cf->file + 1, seen_fl, ap_prof_str(m, cf->file));
            fn_name(m, ft.rows[e->callee].frame, &tmp);
            put_named(out, "cfn", e->callee + 1, seen_fn, tmp.failed ? "?" : tmp.data);
            ap_sbuf_printf(out, "calls=%llu %u\n%u %llu\n", (unsigned long long)e->calls, cf->line,
                           f->line, (unsigned long long)e->total_ns);
        }
        ap_sbuf_putc(out, '\n');
    }
    ap_sbuf_printf(out, "totals: %llu\n", (unsigned long long)total);
    r = out->failed ? -1 : 0;
out:
    ap_sbuf_free(&tmp);
    free(lc);
    ap_map_free(&lines);
    free(row_of);
    free(seen_fl);
    free(seen_fn);
    ap_functab_free(&ft);
    ap_prof_free(m);
    return r;
}
