/* ap_html.c -- the self-contained interactive HTML report: the profile's trees embedded as compact JSON beside the page's own CSS and JS (report/, embedded at build time). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ap_err.h"
#include "ap_findings.h"
#include "ap_map.h"
#include "ap_memtl.h"
#include "ap_report.h"
#include "ap_stall.h"
#include "ap_sweep.h"
#include "ap_timeline.h"
#include "ap_unrel.h"

/* Generated from report/report.{css,html,js} by scripts/embed_assets.py. */
extern const char ap_asset_report_css[];
extern const char ap_asset_report_html[];
extern const char ap_asset_report_js[];

/* Lines of one source file embedded at most, and the largest file read. */
#define SOURCE_LINES_MAX 5000
#define SOURCE_BYTES_MAX (16 << 20)

/* A JSON array of n unsigned integers: expr for each i_ < n, with decl (which
 * may name the i_-th item) before it. */
#define JSON_U64S(out, n, decl, expr)                  \
    do {                                               \
        ap_sbuf_putc(out, '[');                        \
        for (size_t i_ = 0; i_ < (n); i_++) {          \
            decl;                                      \
            if (i_)                                    \
                ap_sbuf_putc(out, ',');                \
            ap_sbuf_u64(out, (expr));                  \
        }                                              \
        ap_sbuf_putc(out, ']');                        \
    } while (0)

/* Metric field of every node of t but the root. */
static void json_u64_array(ap_sbuf *out, const ap_tree *t, unsigned field) {
    JSON_U64S(out, ap_tree_nnodes(t) - 1, const ap_node *n = ap_tree_node(t, (ap_node_id)(i_ + 1)),
              n->m[field]);
}

static int tree_has(const ap_tree *t, unsigned field) {
    for (size_t i = 0; i < ap_tree_nnodes(t); i++)
        if (ap_tree_node(t, (ap_node_id)i)->m[field] != 0)
            return 1;
    return 0;
}

/* Embed lines [first, last] of path as [first, ["line", ...]]; nothing when
 * the file cannot be read (the page says so). */
static void put_source(ap_sbuf *out, const char *path, uint32_t first, uint32_t last, int *any) {
    struct stat st;
    /* Only regular files of sane size: a path in a profile may name anything. */
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > SOURCE_BYTES_MAX)
        return;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    if (last - first >= SOURCE_LINES_MAX)
        last = first + SOURCE_LINES_MAX - 1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    uint32_t no = 0;
    int started = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        no++;
        if (no < first)
            continue;
        if (no > last)
            break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (!started) {
            ap_sbuf_puts(out, *any ? "," : "");
            ap_sbuf_json_str(out, path);
            ap_sbuf_printf(out, ":[%u,[", first);
            started = 1;
            *any = 1;
        } else {
            ap_sbuf_putc(out, ',');
        }
        ap_sbuf_json_str(out, line);
    }
    if (started)
        ap_sbuf_puts(out, "]]");
    free(line);
    fclose(f);
}

/* Widen the range of lines of file in range (file string id -> first line
 * << 32 | last line) to hold [lo, hi].  0; -1 with AP_ENOMEM and range freed. */
static int widen(ap_map *range, ap_str_id file, uint32_t lo, uint32_t hi) {
    int inserted;
    uint64_t *slot = ap_map_upsert(range, file, (uint64_t)lo << 32 | hi, &inserted);
    if (slot == NULL) {
        ap_map_free(range);
        return -1;
    }
    uint32_t a = (uint32_t)(*slot >> 32), b = (uint32_t)*slot;
    *slot = (uint64_t)(lo < a ? lo : a) << 32 | (hi > b ? hi : b);
    return 0;
}

static int keep_tree(const ap_tree *t, void *arg) {
    return t == (const ap_tree *)arg;
}

/* The table columns besides calls and each view metric's self and total:
 * the catalogue's table metrics that some node of p has. */
static int extra_column(const ap_prof *p, unsigned k) {
    if (k == AP_M_CALLS || k == AP_M_PRIM_CALLS || k == AP_M_SELF_NS || k == AP_M_TOTAL_NS ||
        k == AP_M_HITS || !(ap_metric_get(k)->views & AP_MV_TABLE))
        return 0;
    for (size_t t = 0; t < ap_prof_ntrees(p); t++)
        if (tree_has(ap_prof_tree_at(p, t), k))
            return 1;
    return 0;
}

/* The function table's rows and edges as JSON arrays: expr of each row r or
 * edge e (JSON_U64S). */
#define FT_ROWS(ft, expr) \
    JSON_U64S(out, (ft)->nrows, const ap_func_row *r = &(ft)->rows[i_], (expr))
#define FT_EDGES(ft, expr) \
    JSON_U64S(out, (ft)->nedges, const ap_func_edge *e = &(ft)->edges_out[i_], (expr))

/* The function table of one tree (pstats semantics, ap_functab_build) as
 * "ft": row frames, calls, primitive calls, per view metric its self and
 * total, the extra columns, and the edges (caller row, callee row pairs,
 * calls, per view metric the callee's total under that caller).  The page
 * adds up the tables of the trees a filter selects: every figure is a sum
 * over trees, so the page computes nothing of its own. */
static int put_functab(ap_prof *p, const ap_tree *tree, const int *vm_on, const int *extra,
                       ap_sbuf *out) {
    ap_functab ft;
    if (ap_functab_build(p, keep_tree, (void *)tree, &ft) != 0)
        return -1;
    ap_sbuf_puts(out, ",\"ft\":{\"fr\":");
    FT_ROWS(&ft, r->frame);
    ap_sbuf_puts(out, ",\"calls\":");
    FT_ROWS(&ft, r->calls);
    ap_sbuf_puts(out, ",\"prim\":");
    FT_ROWS(&ft, r->prim_calls);
    ap_sbuf_puts(out, ",\"s\":{");
    for (unsigned vm = 0, any = 0; vm < AP_VM_COUNT; vm++) {
        if (!vm_on[vm])
            continue;
        unsigned field = ap_report_vm_field(vm);
        ap_sbuf_printf(out, "%s\"%s\":", any++ ? "," : "", ap_report_vm_name(vm));
        FT_ROWS(&ft, r->m[field]);
    }
    /* Wall totals are the recorded ones (pstats cumtime); any other metric's
     * total is its inclusive sum. */
    ap_sbuf_puts(out, "},\"t\":{");
    for (unsigned vm = 0, any = 0; vm < AP_VM_COUNT; vm++) {
        if (!vm_on[vm])
            continue;
        unsigned field = ap_report_vm_field(vm);
        ap_sbuf_printf(out, "%s\"%s\":", any++ ? "," : "", ap_report_vm_name(vm));
        FT_ROWS(&ft, field == AP_M_SELF_NS ? r->total_ns : r->incl[field]);
    }
    ap_sbuf_puts(out, "},\"m\":{");
    for (unsigned i = 0, any = 0; i < AP_M_COUNT; i++) {
        unsigned k = ap_metric_column(i);
        if (!extra[k])
            continue;
        ap_sbuf_printf(out, "%s\"%s\":", any++ ? "," : "", ap_metric_name(k));
        FT_ROWS(&ft, r->m[k]);
    }
    ap_sbuf_puts(out, "},\"e\":[");
    for (size_t i = 0; i < ft.nedges; i++)
        ap_sbuf_printf(out, "%s%u,%u", i ? "," : "", ft.edges_out[i].caller, ft.edges_out[i].callee);
    ap_sbuf_puts(out, "],\"ec\":");
    FT_EDGES(&ft, e->calls);
    ap_sbuf_puts(out, ",\"et\":{");
    for (unsigned vm = 0, any = 0; vm < AP_VM_COUNT; vm++) {
        if (!vm_on[vm])
            continue;
        unsigned field = ap_report_vm_field(vm);
        ap_sbuf_printf(out, "%s\"%s\":", any++ ? "," : "", ap_report_vm_name(vm));
        FT_EDGES(&ft, field == AP_M_SELF_NS ? e->total_ns : e->incl[field]);
    }
    ap_sbuf_puts(out, "}}");
    ap_functab_free(&ft);
    return 0;
}

int ap_html_write(const ap_report_ctx *rc, ap_sbuf *out) {
    ap_prof *p = rc->prof;
    size_t nf0 = ap_prof_nframes(p);
    for (size_t f = 1; f < nf0; f++)
        if (ap_prof_func_frame(p, (ap_frame_id)f) == AP_NONE)
            return -1;
    size_t nf = ap_prof_nframes(p), ns = ap_prof_nstrs(p);
    ap_sbuf_puts(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                      "<meta name=\"generator\" content=\"apiprof\">\n<title>");
    ap_sbuf_xml_str(out, rc->title);
    ap_sbuf_puts(out, "</title>\n<script>window.apiprofErrors=[];window.addEventListener('error',"
                      "function(e){window.apiprofErrors.push(String(e.message))});</script>\n<style>");
    ap_sbuf_puts(out, ap_asset_report_css);
    ap_sbuf_puts(out, "</style></head>\n<body>\n");
    ap_sbuf_puts(out, ap_asset_report_html);
    ap_sbuf_puts(out, "<script type=\"application/json\" id=\"apiprof-data\">{\"v\":1,\"title\":");
    ap_sbuf_json_str(out, rc->title);
    ap_sbuf_puts(out, ",\"meta\":{");
    for (size_t i = 0; i < ap_prof_nmeta(p); i++) {
        const char *k, *v;
        ap_prof_meta_at(p, i, &k, &v);
        if (i)
            ap_sbuf_putc(out, ',');
        ap_sbuf_json_str(out, k);
        ap_sbuf_putc(out, ':');
        ap_sbuf_json_str(out, v);
    }
    ap_sbuf_puts(out, "},\"metrics\":[");
    int first = 1, vm_on[AP_VM_COUNT], extra[AP_M_COUNT];
    for (unsigned vm = 0; vm < AP_VM_COUNT; vm++) {
        vm_on[vm] = vm == rc->metric || ap_report_vm_present(p, vm);
        if (!vm_on[vm])
            continue;
        ap_sbuf_printf(out, "%s\"%s\"", first ? "" : ",", ap_report_vm_name(vm));
        first = 0;
    }
    /* The function table's further columns, each described by its catalogue
     * entry. */
    ap_sbuf_puts(out, "],\"columns\":[");
    first = 1;
    for (unsigned i = 0; i < AP_M_COUNT; i++) {
        unsigned k = ap_metric_column(i);
        extra[k] = extra_column(p, k);
        if (!extra[k])
            continue;
        const ap_metric_info *mi = ap_metric_get(k);
        ap_sbuf_printf(out, "%s{\"name\":\"%s\",\"unit\":\"%s\",\"label\":", first ? "" : ",",
                       mi->name, mi->unit);
        ap_sbuf_json_str(out, mi->label);
        ap_sbuf_puts(out, ",\"doc\":");
        ap_sbuf_json_str(out, mi->doc);
        ap_sbuf_putc(out, '}');
        first = 0;
    }
    /* The catalogue entries of the view metrics: the page reads units and
     * labels from here. */
    ap_sbuf_puts(out, "],\"catalogue\":{");
    for (unsigned vm = 0; vm < AP_VM_COUNT; vm++) {
        const ap_metric_info *mi = ap_metric_get(ap_report_vm_field(vm));
        ap_sbuf_printf(out, "%s\"%s\":{\"name\":\"%s\",\"unit\":\"%s\",\"label\":", vm ? "," : "",
                       mi->view, mi->name, mi->unit);
        ap_sbuf_json_str(out, mi->label);
        ap_sbuf_puts(out, ",\"doc\":");
        ap_sbuf_json_str(out, mi->doc);
        ap_sbuf_putc(out, '}');
    }
    ap_sbuf_printf(out, "},\"metric\":\"%s\",\"strs\":[", ap_report_vm_name(rc->metric));
    for (size_t s = 0; s < ns; s++) {
        if (s)
            ap_sbuf_putc(out, ',');
        ap_sbuf_json_str(out, ap_prof_str(p, (ap_str_id)s));
    }
    /* Frames: qualname (or name), file, first line, line, kind, function frame. */
    ap_sbuf_puts(out, "],\n\"frames\":[");
    int line_data = 0;
    for (size_t f = 0; f < nf; f++) {
        const ap_frame *fr = ap_prof_frame(p, (ap_frame_id)f);
        ap_sbuf_printf(out, "%s%u,%u,%u,%u,%u,%u", f ? "," : "", fr->qualname ? fr->qualname : fr->name,
                       fr->file, fr->line, fr->lineno, fr->kind,
                       ap_prof_func_frame(p, (ap_frame_id)f));
        line_data |= fr->lineno != 0;
    }
    /* Node classes for the idle switch and library folding (ap_findings.h). */
    ap_classes cls;
    if (ap_classes_build(p, &cls) != 0)
        return -1;
    ap_sbuf_puts(out, "],\n\"trees\":[");
    for (size_t t = 0; t < ap_prof_ntrees(p); t++) {
        const ap_tree *tree = ap_prof_tree_at(p, t);
        size_t n = ap_tree_nnodes(tree);
        ap_sbuf_puts(out, t ? ",\n{\"labels\":{" : "\n{\"labels\":{");
        for (size_t i = 0; i < ap_tree_nlabels(tree); i++) {
            ap_label l = ap_tree_label_at(tree, i);
            if (i)
                ap_sbuf_putc(out, ',');
            ap_sbuf_json_str(out, ap_prof_str(p, l.key));
            ap_sbuf_putc(out, ':');
            ap_sbuf_json_str(out, ap_prof_str(p, l.val));
        }
        ap_sbuf_printf(out, "},\"n\":%zu,\"pd\":[", n);
        for (size_t i = 1; i < n; i++) {
            if (i > 1)
                ap_sbuf_putc(out, ',');
            ap_sbuf_u64(out, i - ap_tree_node(tree, (ap_node_id)i)->parent);
        }
        ap_sbuf_puts(out, "],\"fr\":[");
        for (size_t i = 1; i < n; i++) {
            if (i > 1)
                ap_sbuf_putc(out, ',');
            ap_sbuf_u64(out, ap_tree_node(tree, (ap_node_id)i)->frame);
        }
        ap_sbuf_puts(out, "],\"calls\":");
        json_u64_array(out, tree, AP_M_CALLS);
        if (tree_has(tree, AP_M_HITS)) {   /* line nodes of a line profile */
            ap_sbuf_puts(out, ",\"hits\":");
            json_u64_array(out, tree, AP_M_HITS);
        }
        ap_sbuf_puts(out, ",\"m\":{");
        int any = 0;
        for (unsigned vm = 0; vm < AP_VM_COUNT; vm++) {
            unsigned field = ap_report_vm_field(vm);
            if (!tree_has(tree, field))
                continue;
            ap_sbuf_printf(out, "%s\"%s\":", any ? "," : "", ap_report_vm_name(vm));
            json_u64_array(out, tree, field);
            any = 1;
        }
        ap_sbuf_putc(out, '}');
        /* Per node (root first): 0 the app's code, 1 library work, 2 idle. */
        ap_sbuf_puts(out, ",\"cls\":\"");
        for (size_t i = 0; i < n; i++)
            ap_sbuf_putc(out, cls.node_idle[t][i] ? '2' : cls.node_library[t][i] ? '1' : '0');
        ap_sbuf_putc(out, '"');
        if (put_functab(p, tree, vm_on, extra, out) != 0) {
            ap_classes_free(&cls);
            return -1;
        }
        ap_sbuf_putc(out, '}');
    }
    ap_sbuf_printf(out, "],\n\"idle_ns\":%llu,\"wall_ns\":%llu,\n\"findings\":",
                   (unsigned long long)cls.idle_ns, (unsigned long long)cls.wall_ns);
    ap_classes_free(&cls);
    if (ap_findings_json(p, rc->opts->lines, rc->opts->baseline, out) != 0)
        return -1;
    ap_sbuf_puts(out, ",\n\"routes\":");
    if (ap_findings_routes_json(p, out) != 0)
        return -1;
    ap_sbuf_puts(out, ",\n\"queries\":[");   /* statements and calls, for the I/O view */
    ap_prof_queries_json(p, out);
    ap_sbuf_putc(out, ']');
    {   /* a load sweep's chart and table (apiprof bench --sweep --profile) */
        ap_sweep_chart chart;
        ap_sweep_step *steps;
        int has = ap_sweep_from_meta(p, &chart, &steps);
        if (has < 0)
            return -1;
        if (has > 0) {
            ap_sbuf section = {0};
            ap_sweep_section(&section, &chart);
            ap_sbuf_putc(&section, '\0');
            ap_sbuf_puts(out, ",\n\"sweep_html\":");
            ap_sbuf_json_str(out, section.failed ? "" : section.data);
            ap_sbuf_free(&section);
            free(steps);
        }
    }
    if (ap_prof_nevents(rc->input) > 0) {   /* the event ring, as lanes of spans */
        ap_timeline tl;
        if (ap_timeline_build(rc->input, &tl) != 0)
            return -1;
        if (tl.nspans > 0) {
            ap_sbuf_puts(out, ",\n\"timeline\":");
            ap_timeline_json(rc->input, &tl, AP_TIMELINE_HTML_SPANS, out);
        }
        ap_timeline_free(&tl);
    }
    if (ap_prof_nunrel(p) > 0) {   /* unreleased objects by type, with their sites */
        ap_sbuf_puts(out, ",\n\"unreleased\":");
        if (ap_unrel_json(p, out) != 0)
            return -1;
    }
    if (ap_prof_nmem(p) >= 2) {   /* memory over time: the chart, drawn here */
        ap_sbuf chart = {0};
        ap_memtl_svg(p, &chart);
        ap_sbuf_putc(&chart, '\0');
        ap_sbuf_puts(out, ",\n\"memory_html\":");
        ap_sbuf_json_str(out, chart.failed ? "" : chart.data);
        ap_sbuf_free(&chart);
    }
    /* Source lines of the functions that have line-level data and of the
     * stalls' lines (the timeline's stall panel quotes the line), read now. */
    ap_sbuf_puts(out, ",\n\"sources\":{");
    if (line_data || ap_prof_nstalls(rc->input) > 0) {
        ap_map range = {0};   /* file string id -> first line << 32 | last line */
        for (size_t f = 1; line_data && f < nf; f++) {
            const ap_frame *fr = ap_prof_frame(p, (ap_frame_id)f);
            if (fr->lineno == 0 || fr->kind != AP_FRAME_PYTHON)
                continue;
            uint32_t lo = fr->line && fr->line < fr->lineno ? fr->line : fr->lineno;
            if (widen(&range, fr->file, lo, fr->lineno) != 0)
                return -1;
        }
        for (size_t i = 0; i < ap_prof_nstalls(rc->input); i++) {
            const ap_stall *st = ap_prof_stall_at(rc->input, i);
            const ap_frame *fr = ap_prof_frame(p, st->func);
            if (st->line != 0 && fr != NULL && fr->kind == AP_FRAME_PYTHON &&
                widen(&range, fr->file, st->line, st->line) != 0)
                return -1;
        }
        int any = 0;
        uint64_t key, val;
        for (size_t pos = 0; (pos = ap_map_next(&range, pos, &key, &val)) != 0;)
            put_source(out, ap_prof_str(p, (ap_str_id)key), (uint32_t)(val >> 32), (uint32_t)val,
                       &any);
        ap_map_free(&range);
    }
    ap_sbuf_puts(out, "}}</script>\n<script>");
    ap_sbuf_puts(out, ap_asset_report_js);
    ap_sbuf_puts(out, "</script>\n</body></html>\n");
    return out->failed ? -1 : 0;
}
