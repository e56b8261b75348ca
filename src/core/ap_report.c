/* ap_report.c -- the report dispatcher: format names, filters by label, the metric choice, helpers shared by the writers. */
#include "ap_report.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"

/* ---- metrics ---------------------------------------------------------------- */

/* The node metric of each view metric; names and units are the catalogue's. */
static const unsigned vm_fields[AP_VM_COUNT] = {AP_M_SELF_NS, AP_M_CPU_NS, AP_M_AWAIT_NS,
                                                AP_M_ALLOC_BYTES, AP_M_SAMPLES, AP_M_LIVE_BYTES};

/* The default metric is the first present in this order. */
static const unsigned default_order[AP_VM_COUNT] = {AP_VM_WALL, AP_VM_SAMPLES, AP_VM_CPU,
                                                    AP_VM_MEMORY, AP_VM_AWAIT, AP_VM_LIVE};

unsigned ap_report_default_metric(const ap_prof *p) {
    for (unsigned i = 0; i < AP_VM_COUNT; i++)
        if (ap_report_vm_present(p, default_order[i]))
            return default_order[i];
    return AP_VM_WALL;
}

const char *ap_report_vm_name(unsigned vm) {
    assert(vm < AP_VM_COUNT);
    return ap_metric_get(vm_fields[vm])->view;
}

unsigned ap_report_vm_field(unsigned vm) {
    assert(vm < AP_VM_COUNT);
    return vm_fields[vm];
}

const char *ap_report_vm_unit(unsigned vm) {
    assert(vm < AP_VM_COUNT);
    return ap_metric_get(vm_fields[vm])->unit;
}

int ap_report_vm_present(const ap_prof *p, unsigned vm) {
    unsigned field = ap_report_vm_field(vm);
    for (size_t t = 0; t < ap_prof_ntrees(p); t++) {
        const ap_tree *tree = ap_prof_tree_at(p, t);
        size_t n = ap_tree_nnodes(tree);
        for (size_t i = 0; i < n; i++)
            if (ap_tree_node(tree, (ap_node_id)i)->m[field] != 0)
                return 1;
    }
    return 0;
}

int ap_report_pick_metric(const ap_prof *p, const char *name, unsigned *vm) {
    *vm = AP_VM_COUNT;
    if (strcmp(name, "alloc") == 0)   /* the allocation hook's name for it */
        name = "memory";
    for (unsigned i = 0; i < AP_VM_COUNT; i++)
        if (strcmp(name, ap_report_vm_name(i)) == 0)
            *vm = i;
    if (*vm == AP_VM_COUNT)
        return ap_err_set(AP_EINVAL, "unknown metric '%s' (wall, cpu, await, memory or alloc, live, samples)",
                          name);
    if (!ap_report_vm_present(p, *vm))
        return ap_err_set(AP_EINVAL, "the profile has no %s data", name);
    return 0;
}

/* ---- formats --------------------------------------------------------------------- */

typedef int (*writer_fn)(const ap_report_ctx *c, ap_sbuf *out);

static const struct {
    const char *name;
    writer_fn write;
} formats[] = {
    {"html", ap_html_write},
    {"svg", ap_flame_write_svg},
    {"dot", ap_dot_write},
    {"speedscope", ap_speedscope_write},
    {"pprof", ap_pprof_write},
    {"collapsed", ap_flame_write_collapsed},
    {"callgrind", ap_callgrind_write},
    {"chrome", ap_chrome_write},
    {"json", ap_json_write},
    {"pstats", ap_pstats_write},
};
#define NFORMATS (sizeof formats / sizeof formats[0])

int ap_report_format_known(const char *name) {
    for (size_t i = 0; i < NFORMATS; i++)
        if (strcmp(formats[i].name, name) == 0)
            return 1;
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

const char *ap_report_format_for_path(const char *path) {
    static const struct {
        const char *suffix, *format;
    } ext[] = {
        {".speedscope.json", "speedscope"}, {".trace.json", "chrome"}, {".chrome.json", "chrome"},
        {".html", "html"}, {".htm", "html"}, {".svg", "svg"}, {".dot", "dot"}, {".gv", "dot"},
        {".pb.gz", "pprof"}, {".pprof", "pprof"}, {".collapsed", "collapsed"},
        {".folded", "collapsed"}, {".callgrind", "callgrind"}, {".txt", "text"},
        {".json", "json"}, {".pstats", "pstats"}, {".prof", "pstats"},
    };
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (ends_with(path, ext[i].suffix))
            return ext[i].format;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strncmp(base, "callgrind.out", 13) == 0)
        return "callgrind";
    return NULL;
}

/* ---- filters ---------------------------------------------------------------------- */

/* The sum of the trees of p that match every filter of o, as a profile of
 * one tree; NULL when no filter is set (*none = 0), when no tree matches
 * (*none = 1, AP_ENOTFOUND), or on AP_ENOMEM. */
static ap_prof *filtered(ap_prof *p, const ap_report_opts *o, int *none) {
    const char *keys[] = {"route", "thread", "task", "phase"};
    const char *vals[] = {o->route, o->thread, o->task, o->phase};
    ap_selector sel = {0};
    *none = 0;
    ap_sbuf what = {0};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (vals[i] == NULL || vals[i][0] == '\0')
            continue;
        if (ap_selector_add(p, &sel, keys[i], vals[i]) != 0) {
            ap_sbuf_free(&what);
            return NULL;
        }
        ap_sbuf_printf(&what, "%s%s=%s", sel.n > 1 ? " " : "", keys[i], vals[i]);
    }
    size_t kept = 0;
    for (size_t i = 0; i < ap_prof_ntrees(p) && sel.n; i++)
        kept += (size_t)ap_selector_keep(ap_prof_tree_at(p, i), &sel);
    ap_prof *out = NULL;
    if (sel.n != 0 && kept == 0) {
        *none = 1;
        ap_sbuf_putc(&what, '\0');
        ap_err_set(AP_ENOTFOUND, "no part of the profile has %s", what.failed ? "?" : what.data);
    } else if (sel.n != 0) {
        out = ap_prof_select(p, ap_selector_keep, &sel);   /* the kept trees, labels and all */
    }
    ap_sbuf_free(&what);
    return out;
}

/* ---- dispatcher --------------------------------------------------------------------- */

int ap_report_write(ap_prof *p, const char *format, const ap_report_opts *o, FILE *out) {
    ap_sbuf sb = {0};
    int rc = ap_report_write_buf(p, format, o, &sb);
    if (rc == 0)
        rc = ap_sbuf_write(&sb, out);
    ap_sbuf_free(&sb);
    return rc;
}

int ap_prof_write_json(ap_prof *p, FILE *out) {
    return ap_report_write(p, "json", NULL, out);
}

int ap_prof_write_pstats(ap_prof *p, FILE *out) {
    return ap_report_write(p, "pstats", NULL, out);
}

int ap_report_write_buf(ap_prof *p, const char *format, const ap_report_opts *o, ap_sbuf *out) {
    static const ap_report_opts defaults;
    if (o == NULL)
        o = &defaults;
    writer_fn write = NULL;
    for (size_t i = 0; i < NFORMATS; i++)
        if (strcmp(formats[i].name, format) == 0)
            write = formats[i].write;
    if (write == NULL)
        return ap_err_set(AP_EINVAL, "unknown report format '%s'", format);
    if (ap_prof_finish(p) != 0)
        return -1;
    int none;
    ap_prof *view = filtered(p, o, &none);
    if (view == NULL && (none || ap_err_code() == AP_ENOMEM))
        return -1;
    ap_report_ctx c = {view ? view : p, p, o, AP_VM_COUNT, o->min_percent, o->title};
    int rc = -1;
    if (o->metric != NULL && o->metric[0] != '\0') {
        if (ap_report_pick_metric(c.prof, o->metric, &c.metric) != 0)
            goto out;
    } else {
        c.metric = ap_report_default_metric(c.prof);
    }
    if (c.title == NULL) {
        const char *argv = ap_prof_meta_get(p, "argv");
        c.title = argv && argv[0] ? argv : "apiprof profile";
    }
    rc = write(&c, out);
out:
    ap_prof_free(view);
    return rc;
}

/* ---- helpers ---------------------------------------------------------------------------- */

uint64_t *ap_report_inclusive(const ap_tree *t, unsigned field) {
    size_t n = ap_tree_nnodes(t);
    uint64_t *incl = malloc(n * sizeof *incl);
    if (incl == NULL) {
        ap_err_set(AP_ENOMEM, "report: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        incl[i] = ap_tree_node(t, (ap_node_id)i)->m[field];
    for (size_t i = n; i-- > 1;)   /* children have larger ids than parents */
        incl[ap_tree_node(t, (ap_node_id)i)->parent] += incl[i];
    return incl;
}

int ap_report_stack_value(const ap_walk *w, const ap_tree *t, unsigned field, uint64_t **incl,
                          uint64_t *v) {
    const ap_node *n = w->node[w->depth];
    if (w->depth < AP_REPORT_STACK_MAX) {
        *v = n->m[field];
        return 1;
    }
    if (*incl == NULL && (*incl = ap_report_inclusive(t, field)) == NULL)
        return -1;
    *v = (*incl)[n->id];
    return 0;
}

int ap_report_walk(const ap_tree *t, int (*enter)(const ap_walk *w, void *arg), void *arg) {
    ap_walk w = {NULL, NULL, 0};
    size_t cap = 0;
    const ap_node *n = ap_tree_node(t, 0);
    int rc = 0;
    for (;;) {
        if (w.depth == cap) {
            size_t nc = cap ? cap * 2 : 64;
            const ap_node **nodes = realloc(w.node, nc * sizeof *nodes);
            if (nodes != NULL)
                w.node = nodes;
            uint64_t *mark = nodes ? realloc(w.mark, nc * sizeof *mark) : NULL;
            if (mark == NULL) {
                rc = ap_err_set(AP_ENOMEM, "report: out of memory");
                break;
            }
            w.mark = mark;
            cap = nc;
        }
        w.node[w.depth] = n;
        w.mark[w.depth] = 0;
        int descend = w.depth == 0 ? 1 : enter(&w, arg);
        if (descend < 0) {
            rc = -1;
            break;
        }
        const ap_node *child = descend ? ap_node_first_child(n) : NULL;
        if (child != NULL) {
            w.depth++;
            n = child;
            continue;
        }
        while (w.depth > 0 && ap_node_next_sibling(n) == NULL)
            n = w.node[--w.depth];
        if (w.depth == 0)
            break;
        n = ap_node_next_sibling(n);
    }
    free(w.node);
    free(w.mark);
    return rc;
}

void ap_report_frame_label_long(const ap_prof *p, ap_frame_id id, ap_sbuf *sb) {
    ap_report_frame_label(p, id, sb);
    const ap_frame *f = ap_prof_frame(p, id);
    if (f == NULL || id == 0 || f->kind != AP_FRAME_PYTHON)
        return;
    ap_sbuf_puts(sb, " (");
    ap_sbuf_puts(sb, ap_prof_str(p, f->file));
    ap_sbuf_printf(sb, ":%u)", f->lineno ? f->lineno : f->line);
}

void ap_report_frame_label(const ap_prof *p, ap_frame_id id, ap_sbuf *sb) {
    const ap_frame *f = ap_prof_frame(p, id);
    if (f == NULL || id == 0) {
        ap_sbuf_puts(sb, "<root>");
        return;
    }
    const char *q = ap_prof_str(p, f->qualname);
    ap_sbuf_puts(sb, q[0] ? q : ap_prof_str(p, f->name));
    if (f->lineno != 0)
        ap_sbuf_printf(sb, ":%u", f->lineno);
}

ap_prof *ap_report_project(const ap_prof *p, unsigned field) {
    ap_prof *m = ap_prof_merge(p, NULL, NULL);
    if (m == NULL || field == AP_M_SELF_NS)
        return m;
    ap_tree *t = ap_prof_tree_at(m, 0);
    uint64_t *incl = ap_report_inclusive(t, field);
    if (incl == NULL) {
        ap_prof_free(m);
        return NULL;
    }
    size_t n = ap_tree_nnodes(t);
    for (size_t i = 0; i < n; i++) {
        /* m is our own copy: rewriting its metrics is safe. */
        ap_node *node = (ap_node *)ap_tree_node(t, (ap_node_id)i);
        node->m[AP_M_SELF_NS] = node->m[field];
        node->m[AP_M_TOTAL_NS] = incl[i];
    }
    free(incl);
    return m;
}

ap_prof *ap_report_functab(const ap_report_ctx *c, ap_functab *ft) {
    memset(ft, 0, sizeof *ft);
    ap_prof *m = ap_report_project(c->prof, ap_report_vm_field(c->metric));
    if (m != NULL && ap_functab_build(m, NULL, NULL, ft) != 0) {
        ap_prof_free(m);
        return NULL;
    }
    return m;
}

void ap_report_tree_name(const ap_prof *p, size_t i, ap_sbuf *sb) {
    const ap_tree *tree = ap_prof_tree_at(p, i);
    size_t start = sb->len;
    for (size_t k = 0; k < ap_tree_nlabels(tree); k++) {
        ap_label l = ap_tree_label_at(tree, k);
        ap_sbuf_printf(sb, "%s%s=%s", k ? " " : "", ap_prof_str(p, l.key), ap_prof_str(p, l.val));
    }
    if (sb->len == start)
        ap_sbuf_printf(sb, "tree %zu", i);
    ap_sbuf_putc(sb, '\0');
}

void ap_report_fmt_value(ap_sbuf *sb, unsigned vm, uint64_t v) {
    const char *unit = ap_report_vm_unit(vm);
    if (strcmp(unit, "nanoseconds") == 0) {
        double d = (double)v;
        if (v >= 1000000000u)
            ap_sbuf_printf(sb, "%.3g s", d / 1e9);
        else if (v >= 1000000u)
            ap_sbuf_printf(sb, "%.3g ms", d / 1e6);
        else if (v >= 1000u)
            ap_sbuf_printf(sb, "%.3g us", d / 1e3);
        else
            ap_sbuf_printf(sb, "%llu ns", (unsigned long long)v);
    } else if (strcmp(unit, "bytes") == 0) {
        double d = (double)v;
        if (v >= 1u << 30)
            ap_sbuf_printf(sb, "%.3g GiB", d / (1u << 30));
        else if (v >= 1u << 20)
            ap_sbuf_printf(sb, "%.3g MiB", d / (1u << 20));
        else if (v >= 1u << 10)
            ap_sbuf_printf(sb, "%.3g KiB", d / (1u << 10));
        else
            ap_sbuf_printf(sb, "%llu B", (unsigned long long)v);
    } else {
        ap_sbuf_printf(sb, "%llu", (unsigned long long)v);
    }
}
