/* ap_speedscope.c -- speedscope's JSON file format: shared frames and one sampled profile per tree (thread, task, ...), weighted by the chosen metric. */
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_report.h"

typedef struct ss_ctx {
    unsigned field;
    ap_sbuf *samples, *weights;
    size_t nsamples;
    uint64_t total;
    const ap_tree *tree;
    uint64_t *incl;   /* subtree sums for paths cut at AP_REPORT_STACK_MAX, once needed */
} ss_ctx;

static int ss_enter(const ap_walk *w, void *arg) {
    ss_ctx *c = arg;
    const ap_node *n = w->node[w->depth];
    w->mark[w->depth] = n->frame - 1;   /* shared frame i is model frame i + 1 */
    uint64_t v;
    int descend = ap_report_stack_value(w, c->tree, c->field, &c->incl, &v);
    if (v == 0 || descend < 0)
        return descend;
    ap_sbuf_puts(c->samples, c->nsamples ? ",[" : "[");
    for (size_t i = 1; i <= w->depth; i++) {
        if (i > 1)
            ap_sbuf_putc(c->samples, ',');
        ap_sbuf_u64(c->samples, w->mark[i]);
    }
    ap_sbuf_putc(c->samples, ']');
    if (c->nsamples)
        ap_sbuf_putc(c->weights, ',');
    ap_sbuf_u64(c->weights, v);
    c->nsamples++;
    c->total += v;
    return c->samples->failed || c->weights->failed ? -1 : descend;
}

int ap_speedscope_write(const ap_report_ctx *rc, ap_sbuf *out) {
    const ap_prof *p = rc->prof;
    const char *unit = ap_report_vm_unit(rc->metric);
    if (strcmp(unit, "count") == 0)
        unit = "none";
    ap_sbuf_puts(out, "{\"$schema\":\"https://www.speedscope.app/file-format-schema.json\","
                      "\"exporter\":\"apiprof\",\"name\":");
    ap_sbuf_json_str(out, rc->title);
    ap_sbuf_puts(out, ",\"activeProfileIndex\":0,\"shared\":{\"frames\":[");
    ap_sbuf label = {0};
    for (size_t f = 1; f < ap_prof_nframes(p); f++) {
        const ap_frame *fr = ap_prof_frame(p, (ap_frame_id)f);
        label.len = 0;
        ap_report_frame_label(p, (ap_frame_id)f, &label);
        ap_sbuf_putc(&label, '\0');
        ap_sbuf_puts(out, f > 1 ? ",{\"name\":" : "{\"name\":");
        ap_sbuf_json_str(out, label.failed ? "?" : label.data);
        ap_sbuf_puts(out, ",\"file\":");
        ap_sbuf_json_str(out, ap_prof_str(p, fr->file));
        if (fr->kind == AP_FRAME_PYTHON)
            ap_sbuf_printf(out, ",\"line\":%u", fr->lineno ? fr->lineno : fr->line);
        ap_sbuf_putc(out, '}');
    }
    ap_sbuf_free(&label);
    ap_sbuf_puts(out, "]},\"profiles\":[");
    ss_ctx c = {ap_report_vm_field(rc->metric), NULL, NULL, 0, 0, NULL, NULL};
    ap_sbuf samples = {0}, weights = {0};
    c.samples = &samples;
    c.weights = &weights;
    int r = 0;
    for (size_t t = 0; t < ap_prof_ntrees(p) && r == 0; t++) {
        const ap_tree *tree = ap_prof_tree_at(p, t);
        samples.len = weights.len = 0;
        c.nsamples = 0;
        c.total = 0;
        c.tree = tree;
        free(c.incl);
        c.incl = NULL;
        r = ap_report_walk(tree, ss_enter, &c);
        if (r != 0)
            break;
        ap_sbuf name = {0};
        ap_report_tree_name(p, t, &name);
        if (!name.failed)
            name.len--;   /* drop the NUL to append the metric */
        ap_sbuf_printf(&name, " (%s)", ap_report_vm_name(rc->metric));
        ap_sbuf_putc(&name, '\0');
        ap_sbuf_puts(out, t ? ",{\"type\":\"sampled\",\"name\":" : "{\"type\":\"sampled\",\"name\":");
        ap_sbuf_json_str(out, name.failed ? "?" : name.data);
        ap_sbuf_free(&name);
        ap_sbuf_printf(out, ",\"unit\":\"%s\",\"startValue\":0,\"endValue\":", unit);
        ap_sbuf_u64(out, c.total);
        ap_sbuf_puts(out, ",\"samples\":[");
        ap_sbuf_put(out, samples.data, samples.len);
        ap_sbuf_puts(out, "],\"weights\":[");
        ap_sbuf_put(out, weights.data, weights.len);
        ap_sbuf_puts(out, "]}");
    }
    ap_sbuf_puts(out, "]}\n");
    ap_sbuf_free(&samples);
    ap_sbuf_free(&weights);
    free(c.incl);
    return r != 0 || out->failed ? -1 : 0;
}
