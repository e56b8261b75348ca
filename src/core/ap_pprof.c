/* ap_pprof.c -- pprof's profile.proto, gzip-compressed: one sample type per metric present, one sample per node, tree labels as sample labels. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ap_err.h"
#include "ap_report.h"

/* profile.proto field numbers used here. */
enum {
    PROFILE_SAMPLE_TYPE = 1, PROFILE_SAMPLE = 2, PROFILE_LOCATION = 4, PROFILE_FUNCTION = 5,
    PROFILE_STRING_TABLE = 6, PROFILE_DURATION = 10, PROFILE_DEFAULT_SAMPLE_TYPE = 14,
    VALUETYPE_TYPE = 1, VALUETYPE_UNIT = 2,
    SAMPLE_LOCATION_ID = 1, SAMPLE_VALUE = 2, SAMPLE_LABEL = 3,
    LABEL_KEY = 1, LABEL_STR = 2,
    LOCATION_ID = 1, LOCATION_LINE = 4, LINE_FUNCTION_ID = 1, LINE_LINE = 2,
    FUNCTION_ID = 1, FUNCTION_NAME = 2, FUNCTION_SYSTEM_NAME = 3, FUNCTION_FILENAME = 4,
    FUNCTION_START_LINE = 5,
};

/* push/v1/push.proto and types/v1's LabelPair (Grafana Pyroscope). */
enum {
    PUSH_SERIES = 1, SERIES_LABELS = 1, SERIES_SAMPLES = 2, PAIR_NAME = 1, PAIR_VALUE = 2,
    RAWSAMPLE_RAW_PROFILE = 1,
};

static void pb_key(ap_sbuf *b, unsigned field, unsigned wire) {
    ap_sbuf_varint(b, (uint64_t)field << 3 | wire);
}

static void pb_uint(ap_sbuf *b, unsigned field, uint64_t v) {
    pb_key(b, field, 0);
    ap_sbuf_varint(b, v);
}

static void pb_bytes(ap_sbuf *b, unsigned field, const void *p, size_t n) {
    pb_key(b, field, 2);
    ap_sbuf_varint(b, n);
    ap_sbuf_put(b, p, n);
}

/* Append sub (a finished message) as field of b, and empty sub. */
static void pb_message(ap_sbuf *b, unsigned field, ap_sbuf *sub) {
    pb_bytes(b, field, sub->data, sub->len);
    if (sub->failed)
        b->failed = 1;
    sub->len = 0;
}

/* The view metric showing node metric field, or -1. */
static int vm_of(unsigned field) {
    for (unsigned vm = 0; vm < AP_VM_COUNT; vm++)
        if (ap_report_vm_field(vm) == field)
            return (int)vm;
    return -1;
}

/* gzip the n bytes at data into out.  0 / -1 with AP_ENOMEM. */
static int gzip_into(const char *data, size_t n, ap_sbuf *out) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return ap_err_set(AP_ENOMEM, "pprof: zlib could not start");
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)n;   /* the caller keeps n below 4 GiB */
    int zr;
    do {
        unsigned char chunk[65536];
        z.next_out = chunk;
        z.avail_out = sizeof chunk;
        zr = deflate(&z, Z_FINISH);
        ap_sbuf_put(out, chunk, sizeof chunk - z.avail_out);
    } while (zr == Z_OK || (zr == Z_BUF_ERROR && z.avail_out == 0));
    deflateEnd(&z);
    if (zr != Z_STREAM_END)
        return ap_err_set(AP_ENOMEM, "pprof: compression failed (zlib %d)", zr);
    return out->failed ? -1 : 0;
}

typedef struct pp_ctx {
    ap_sbuf *msg, *sub;
    ap_sbuf labels;            /* the tree's encoded Label messages, as sample fields */
    const unsigned *fields;    /* node metrics of the sample types present */
    size_t nfields;
    const ap_tree *tree;
    uint64_t *incl[AP_M_COUNT]; /* per field: subtree sums for paths cut at AP_REPORT_STACK_MAX */
} pp_ctx;

static int pp_enter(const ap_walk *w, void *arg) {
    pp_ctx *c = arg;
    const ap_node *n = w->node[w->depth];
    w->mark[w->depth] = n->frame;   /* the location ids of the path, contiguous */
    uint64_t v[AP_M_COUNT];
    int any = 0, descend = 1;
    for (size_t i = 0; i < c->nfields && descend >= 0; i++) {
        descend = ap_report_stack_value(w, c->tree, c->fields[i], &c->incl[i], &v[i]);
        any |= v[i] != 0;
    }
    if (!any || descend < 0)
        return descend;
    ap_sbuf packed = {0};
    for (size_t i = w->depth; i > 0; i--)   /* pprof lists the leaf first */
        ap_sbuf_varint(&packed, w->mark[i]);
    pb_message(c->sub, SAMPLE_LOCATION_ID, &packed);
    for (size_t i = 0; i < c->nfields; i++)
        ap_sbuf_varint(&packed, v[i]);
    pb_message(c->sub, SAMPLE_VALUE, &packed);
    ap_sbuf_free(&packed);
    ap_sbuf_put(c->sub, c->labels.data, c->labels.len);
    pb_message(c->msg, PROFILE_SAMPLE, c->sub);
    return c->msg->failed ? -1 : descend;
}

int ap_pprof_write(const ap_report_ctx *rc, ap_sbuf *out) {
    ap_prof *p = rc->prof;
    size_t nf0 = ap_prof_nframes(p);
    for (size_t f = 1; f < nf0; f++)   /* intern function-level frames first */
        if (ap_prof_func_frame(p, (ap_frame_id)f) == AP_NONE)
            return -1;
    size_t nstr = ap_prof_nstrs(p), nf = ap_prof_nframes(p);
    ap_sbuf msg = {0}, sub = {0}, sub2 = {0};
    unsigned fields[AP_M_COUNT];
    size_t nfields = 0, default_type = 0;
    /* Extra strings follow the profile's own (whose id 0 is "", as pprof
     * requires); their pprof ids are nstr, nstr + 1, ... */
    size_t next_str = nstr;
    ap_sbuf extra = {0};
    /* One sample type per catalogue metric pprof knows, when present. */
    for (unsigned i = 0; i < AP_M_COUNT; i++) {
        const ap_metric_info *mi = ap_metric_get(i);
        if (mi->pprof == NULL)
            continue;
        int present = 0;
        for (size_t t = 0; t < ap_prof_ntrees(p) && !present; t++) {
            const ap_tree *tree = ap_prof_tree_at(p, t);
            for (size_t k = 0; k < ap_tree_nnodes(tree) && !present; k++)
                present = ap_tree_node(tree, (ap_node_id)k)->m[i] != 0;
        }
        if (!present)
            continue;
        if (vm_of(i) == (int)rc->metric)
            default_type = next_str;
        pb_uint(&sub, VALUETYPE_TYPE, next_str++);
        pb_uint(&sub, VALUETYPE_UNIT, next_str++);
        pb_bytes(&extra, PROFILE_STRING_TABLE, mi->pprof, strlen(mi->pprof));
        pb_bytes(&extra, PROFILE_STRING_TABLE, mi->unit, strlen(mi->unit));
        pb_message(&msg, PROFILE_SAMPLE_TYPE, &sub);
        fields[nfields++] = i;
    }
    if (nfields == 0) {
        ap_sbuf_free(&extra);
        ap_sbuf_free(&msg);
        return ap_err_set(AP_EINVAL, "pprof: the profile has no values");
    }
    pp_ctx c = {&msg, &sub, {0}, fields, nfields, NULL, {NULL}};
    int r = 0;
    for (size_t t = 0; t < ap_prof_ntrees(p) && r == 0; t++) {
        const ap_tree *tree = ap_prof_tree_at(p, t);
        c.labels.len = 0;
        for (size_t i = 0; i < ap_tree_nlabels(tree); i++) {
            ap_label l = ap_tree_label_at(tree, i);
            pb_uint(&sub2, LABEL_KEY, l.key);
            pb_uint(&sub2, LABEL_STR, l.val);
            pb_message(&c.labels, SAMPLE_LABEL, &sub2);
        }
        c.tree = tree;
        for (size_t i = 0; i < nfields; i++) {
            free(c.incl[i]);
            c.incl[i] = NULL;
        }
        r = ap_report_walk(tree, pp_enter, &c);
    }
    for (size_t i = 0; i < nfields; i++)
        free(c.incl[i]);
    for (size_t f = 1; f < nf && r == 0; f++) {
        const ap_frame *fr = ap_prof_frame(p, (ap_frame_id)f);
        ap_frame_id func = ap_prof_func_frame(p, (ap_frame_id)f);
        pb_uint(&sub2, LINE_FUNCTION_ID, func);
        pb_uint(&sub2, LINE_LINE, fr->lineno ? fr->lineno : fr->line);
        pb_uint(&sub, LOCATION_ID, f);
        pb_message(&sub, LOCATION_LINE, &sub2);
        pb_message(&msg, PROFILE_LOCATION, &sub);
        if (fr->lineno != 0)
            continue;
        ap_str_id name = fr->qualname ? fr->qualname : fr->name;
        pb_uint(&sub, FUNCTION_ID, f);
        pb_uint(&sub, FUNCTION_NAME, name);
        pb_uint(&sub, FUNCTION_SYSTEM_NAME, name);
        pb_uint(&sub, FUNCTION_FILENAME, fr->file);
        pb_uint(&sub, FUNCTION_START_LINE, fr->line);
        pb_message(&msg, PROFILE_FUNCTION, &sub);
    }
    for (size_t s = 0; s < nstr; s++) {
        const char *str = ap_prof_str(p, (ap_str_id)s);
        pb_bytes(&msg, PROFILE_STRING_TABLE, str, strlen(str));
    }
    ap_sbuf_put(&msg, extra.data, extra.len);
    const char *started = ap_prof_meta_get(p, "started"), *stopped = ap_prof_meta_get(p, "stopped");
    if (started && stopped) {
        unsigned long long a = strtoull(started, NULL, 10), b = strtoull(stopped, NULL, 10);
        if (b > a)
            pb_uint(&msg, PROFILE_DURATION, b - a);
    }
    pb_uint(&msg, PROFILE_DEFAULT_SAMPLE_TYPE, default_type);
    if (r == 0 && (msg.failed || extra.failed))
        r = -1;
    if (r == 0 && msg.len > UINT32_MAX)
        r = ap_err_set(AP_ERANGE, "pprof: the profile is larger than 4 GiB");
    if (r == 0)
        r = gzip_into(msg.data, msg.len, out);
    ap_sbuf_free(&c.labels);
    ap_sbuf_free(&extra);
    ap_sbuf_free(&msg);
    ap_sbuf_free(&sub);
    ap_sbuf_free(&sub2);
    return r;
}

int ap_pprof_push_request(const char *const *labels, size_t nlabels, const void *pprof,
                          size_t n, ap_sbuf *out) {
    ap_sbuf series = {0}, sub = {0};
    for (size_t i = 0; i < nlabels; i++) {
        pb_bytes(&sub, PAIR_NAME, labels[2 * i], strlen(labels[2 * i]));
        pb_bytes(&sub, PAIR_VALUE, labels[2 * i + 1], strlen(labels[2 * i + 1]));
        pb_message(&series, SERIES_LABELS, &sub);
    }
    pb_bytes(&sub, RAWSAMPLE_RAW_PROFILE, pprof, n);
    pb_message(&series, SERIES_SAMPLES, &sub);
    pb_message(out, PUSH_SERIES, &series);
    ap_sbuf_free(&sub);
    ap_sbuf_free(&series);
    return out->failed ? ap_err_set(AP_ENOMEM, "pyroscope: out of memory") : 0;
}
