/* ap_json_read.c -- reads the JSON export (docs/format.md) back into a profile: the meta, frames, trees and route latency histograms; the derived tables are skipped. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_metric.h"
#include "ap_prof.h"
#include "ap_prof_int.h"
#include "ap_sbuf.h"

/* Nesting deeper than this is not an export of ours. */
#define JR_MAX_DEPTH 64

/* The cursor over the document.  Every reader returns 0, or -1 with
 * AP_ECORRUPT (or AP_ENOMEM) set; any input is safe. */
typedef struct jr {
    const char *p, *end;
    int depth;
    ap_sbuf str;   /* the last string read, NUL-terminated */
} jr;

static int jr_bad(jr *r, const char *what) {
    (void)r;
    return ap_err_set(AP_ECORRUPT, "not an apiprof profile (JSON export: %s)", what);
}

static void jr_ws(jr *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
        r->p++;
}

/* Consume c after white space: 1 if it was there. */
static int jr_eat(jr *r, char c) {
    jr_ws(r);
    if (r->p < r->end && *r->p == c) {
        r->p++;
        return 1;
    }
    return 0;
}

static int jr_hex4(jr *r, uint32_t *out) {
    if (r->end - r->p < 4)
        return -1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *r->p++;
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void jr_utf8(ap_sbuf *sb, uint32_t cp) {
    if (cp < 0x80) {
        ap_sbuf_putc(sb, (char)cp);
    } else if (cp < 0x800) {
        ap_sbuf_putc(sb, (char)(0xC0 | (cp >> 6)));
        ap_sbuf_putc(sb, (char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        ap_sbuf_putc(sb, (char)(0xE0 | (cp >> 12)));
        ap_sbuf_putc(sb, (char)(0x80 | ((cp >> 6) & 0x3F)));
        ap_sbuf_putc(sb, (char)(0x80 | (cp & 0x3F)));
    } else {
        ap_sbuf_putc(sb, (char)(0xF0 | (cp >> 18)));
        ap_sbuf_putc(sb, (char)(0x80 | ((cp >> 12) & 0x3F)));
        ap_sbuf_putc(sb, (char)(0x80 | ((cp >> 6) & 0x3F)));
        ap_sbuf_putc(sb, (char)(0x80 | (cp & 0x3F)));
    }
}

/* A string into r->str (decoded, NUL-terminated; its length is r->str.len - 1). */
static int jr_string(jr *r) {
    if (!jr_eat(r, '"'))
        return jr_bad(r, "a string was expected");
    r->str.len = 0;
    while (r->p < r->end && *r->p != '"') {
        char c = *r->p++;
        if ((unsigned char)c < 0x20)
            return jr_bad(r, "control character in a string");
        if (c != '\\') {
            ap_sbuf_putc(&r->str, c);
            continue;
        }
        if (r->p >= r->end)
            break;
        c = *r->p++;
        const char *plain = strchr("\"\\/bfnrt", c);
        if (c != '\0' && plain != NULL) {
            ap_sbuf_putc(&r->str, "\"\\/\b\f\n\r\t"[plain - "\"\\/bfnrt"]);
            continue;
        }
        uint32_t cp, lo;
        if (c != 'u' || jr_hex4(r, &cp) != 0)
            return jr_bad(r, "bad escape in a string");
        if (cp >= 0xD800 && cp < 0xDC00 && r->end - r->p >= 6 && r->p[0] == '\\' &&
            r->p[1] == 'u') {
            r->p += 2;
            if (jr_hex4(r, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
                return jr_bad(r, "bad surrogate pair in a string");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        jr_utf8(&r->str, cp);
    }
    if (!jr_eat(r, '"'))
        return jr_bad(r, "unterminated string");
    ap_sbuf_putc(&r->str, '\0');
    if (r->str.failed)
        return ap_err_set(AP_ENOMEM, "profile: out of memory");
    return 0;
}

/* An integer (the export writes only integers where this reads one). */
static int jr_int(jr *r, int64_t *out) {
    jr_ws(r);
    int neg = r->p < r->end && *r->p == '-';
    r->p += neg;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9')
        return jr_bad(r, "a number was expected");
    uint64_t v = 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        if (v > (UINT64_MAX - 9) / 10)
            return jr_bad(r, "number out of range");
        v = v * 10 + (uint64_t)(*r->p++ - '0');
    }
    if (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E'))
        return jr_bad(r, "an integer was expected");
    if (v > (uint64_t)INT64_MAX)
        return jr_bad(r, "number out of range");
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

/* Skip one value of any kind. */
static int jr_skip(jr *r) {
    jr_ws(r);
    if (r->p >= r->end)
        return jr_bad(r, "a value was expected");
    char c = *r->p;
    if (c == '"')
        return jr_string(r);
    if (c == '{' || c == '[') {
        if (++r->depth > JR_MAX_DEPTH)
            return jr_bad(r, "nested too deeply");
        char close = c == '{' ? '}' : ']';
        r->p++;
        if (!jr_eat(r, close)) {
            do {
                if (c == '{' && (jr_string(r) != 0 || !jr_eat(r, ':')))
                    return jr_bad(r, "a key was expected");
                if (jr_skip(r) != 0)
                    return -1;
            } while (jr_eat(r, ','));
            if (!jr_eat(r, close))
                return jr_bad(r, "unterminated object or array");
        }
        r->depth--;
        return 0;
    }
    static const char *const words[] = {"true", "false", "null"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(r->end - r->p) >= n && memcmp(r->p, words[i], n) == 0) {
            r->p += n;
            return 0;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        r->p++;
        while (r->p < r->end && strchr("0123456789.eE+-", *r->p) != NULL && *r->p != '\0')
            r->p++;
        return 0;
    }
    return jr_bad(r, "unexpected character");
}

/* Walk an object: for each member, the key is in r->str and member(r, arg)
 * reads its value (or jr_skip()s it). */
static int jr_object(jr *r, int (*member)(jr *r, void *arg), void *arg) {
    if (!jr_eat(r, '{'))
        return jr_bad(r, "an object was expected");
    if (jr_eat(r, '}'))
        return 0;
    do {
        if (jr_string(r) != 0 || !jr_eat(r, ':'))
            return jr_bad(r, "a key was expected");
        if (member(r, arg) != 0)
            return -1;
    } while (jr_eat(r, ','));
    return jr_eat(r, '}') ? 0 : jr_bad(r, "unterminated object");
}

/* Walk an array: item(r, arg, index) reads each element. */
static int jr_array(jr *r, int (*item)(jr *r, void *arg, size_t i), void *arg) {
    if (!jr_eat(r, '['))
        return jr_bad(r, "an array was expected");
    if (jr_eat(r, ']'))
        return 0;
    size_t i = 0;
    do {
        if (item(r, arg, i++) != 0)
            return -1;
    } while (jr_eat(r, ','));
    return jr_eat(r, ']') ? 0 : jr_bad(r, "unterminated array");
}

/* ---- the document ------------------------------------------------------------------ */

typedef struct doc {
    ap_prof *p;
    const char *meta, *frames, *threads, *routes, *queries; /* where values start, or NULL */
    ap_query query;                        /* the query being read */
    int64_t query_frame;
    int is_apiprof;
    ap_frame_id *frame_ids;                /* export frame index -> interned id */
    size_t nframes, frames_cap;
    ap_frame frame;                        /* the frame being read */
    ap_tree *tree;                         /* the tree being read */
    ap_node **nodes;                       /* its nodes by export index */
    size_t nnodes, nodes_cap;
    int64_t parent, frame_ix;              /* of the node being read */
    uint64_t m[AP_M_COUNT];
    ap_str_id route;                       /* the route entry being read */
    ap_hist *hist;                         /* its latency, decoded (scratch) */
    int has_hist;
} doc;

static int grow(void **arr, size_t *cap, size_t need, size_t sz) {
    return ap_prof_grow(arr, cap, need, sz) == 0 ? 0 : ap_err_set(AP_ENOMEM, "profile: out of memory");
}

static int top_member(jr *r, void *arg) {
    doc *d = arg;
    jr_ws(r);
    if (strcmp(r->str.data, "format") == 0) {
        if (jr_string(r) != 0)
            return -1;
        d->is_apiprof = strcmp(r->str.data, "apiprof") == 0;
        return 0;
    }
    if (strcmp(r->str.data, "version") == 0) {
        int64_t v;
        if (jr_int(r, &v) != 0)
            return -1;
        if (v < 1 || v > 1)
            return ap_err_set(AP_ECORRUPT, "profile format version %lld is not supported "
                              "(this apiprof reads 1)", (long long)v);
        return 0;
    }
    if (strcmp(r->str.data, "meta") == 0)
        d->meta = r->p;
    else if (strcmp(r->str.data, "frames") == 0)
        d->frames = r->p;
    else if (strcmp(r->str.data, "threads") == 0)
        d->threads = r->p;
    else if (strcmp(r->str.data, "routes") == 0)
        d->routes = r->p;
    else if (strcmp(r->str.data, "queries") == 0)
        d->queries = r->p;
    return jr_skip(r);
}

static int meta_member(jr *r, void *arg) {
    doc *d = arg;
    char *key = ap_arena_strdup(&d->p->arena, r->str.data, r->str.len - 1);
    if (key == NULL || jr_string(r) != 0)
        return key == NULL ? ap_err_set(AP_ENOMEM, "profile: out of memory") : -1;
    char *val = ap_arena_strdup(&d->p->arena, r->str.data, r->str.len - 1);
    if (val == NULL)
        return ap_err_set(AP_ENOMEM, "profile: out of memory");
    return ap_prof_meta_set(d->p, key, val);
}

static int frame_member(jr *r, void *arg) {
    doc *d = arg;
    const char *k = r->str.data;
    ap_str_id *s = strcmp(k, "name") == 0       ? &d->frame.name
                   : strcmp(k, "qualname") == 0 ? &d->frame.qualname
                   : strcmp(k, "file") == 0     ? &d->frame.file
                                                : NULL;
    if (s != NULL || strcmp(k, "kind") == 0) {
        int kind = s == NULL;
        if (jr_string(r) != 0)
            return -1;
        if (!kind) {
            *s = ap_prof_intern(d->p, r->str.data, r->str.len - 1);
            return *s == AP_NONE ? -1 : 0;
        }
        for (uint32_t i = 0; i <= AP_FRAME_OTHER; i++)
            if (strcmp(r->str.data, ap_frame_kind_name(i)) == 0)
                d->frame.kind = i;
        return 0;
    }
    if (strcmp(k, "line") == 0 || strcmp(k, "lineno") == 0) {
        int64_t v;
        if (jr_int(r, &v) != 0)
            return -1;
        if (v < 0 || v > UINT32_MAX)
            return jr_bad(r, "a frame's line is out of range");
        *(k[4] == '\0' ? &d->frame.line : &d->frame.lineno) = (uint32_t)v;
        return 0;
    }
    return jr_skip(r);
}

static int frame_item(jr *r, void *arg, size_t i) {
    doc *d = arg;
    ap_str_id empty = ap_prof_intern(d->p, "", 0);
    if (empty == AP_NONE)
        return -1;
    d->frame = (ap_frame){empty, empty, empty, 0, 0, AP_FRAME_OTHER};
    if (jr_object(r, frame_member, d) != 0)
        return -1;
    if (grow((void **)&d->frame_ids, &d->frames_cap, i + 1, sizeof *d->frame_ids) != 0)
        return -1;
    /* Frame 0 is the root in every profile; the export writes it first. */
    ap_frame_id id = i == 0 ? 0 : ap_prof_frame_intern(d->p, &d->frame);
    if (id == AP_NONE)
        return -1;
    d->frame_ids[i] = id;
    d->nframes = i + 1;
    return 0;
}

static int label_member(jr *r, void *arg) {
    doc *d = arg;
    ap_str_id key = ap_prof_intern(d->p, r->str.data, r->str.len - 1);
    if (key == AP_NONE || jr_string(r) != 0)
        return -1;
    ap_str_id val = ap_prof_intern(d->p, r->str.data, r->str.len - 1);
    return val == AP_NONE ? -1 : ap_tree_label_set(d->tree, key, val);
}

static int node_member(jr *r, void *arg) {
    doc *d = arg;
    int64_t v;
    unsigned k = AP_M_COUNT;
    int is_parent = strcmp(r->str.data, "parent") == 0, is_frame = strcmp(r->str.data, "frame") == 0;
    if (!is_parent && !is_frame) {
        for (k = 0; k < AP_M_COUNT; k++)
            if (strcmp(r->str.data, ap_metric_name(k)) == 0)
                break;
        if (k == AP_M_COUNT)
            return jr_skip(r);   /* a metric of a newer writer */
    }
    if (jr_int(r, &v) != 0)
        return -1;
    if (is_parent)
        d->parent = v;
    else if (is_frame)
        d->frame_ix = v;
    else if (v < 0)
        return jr_bad(r, "a negative metric");
    else
        d->m[k] += (uint64_t)v;
    return 0;
}

static int node_item(jr *r, void *arg, size_t i) {
    doc *d = arg;
    d->parent = -1;
    d->frame_ix = 0;
    memset(d->m, 0, sizeof d->m);
    if (jr_object(r, node_member, d) != 0)
        return -1;
    if (grow((void **)&d->nodes, &d->nodes_cap, i + 1, sizeof *d->nodes) != 0)
        return -1;
    ap_node *n;
    if (i == 0) {
        n = ap_tree_root(d->tree);
    } else {
        if (d->parent < 0 || (uint64_t)d->parent >= i || d->frame_ix <= 0 ||
            (uint64_t)d->frame_ix >= d->nframes)
            return ap_err_set(AP_ECORRUPT, "not an apiprof profile (JSON export: node %zu is "
                              "invalid)", i);
        n = ap_tree_child(d->tree, d->nodes[d->parent], d->frame_ids[d->frame_ix]);
        if (n == NULL)
            return -1;
    }
    for (unsigned k = 0; k < AP_M_COUNT; k++)
        n->m[k] += d->m[k];
    d->nodes[i] = n;
    d->nnodes = i + 1;
    return 0;
}

static int thread_member(jr *r, void *arg) {
    doc *d = arg;
    if (strcmp(r->str.data, "labels") == 0)
        return jr_object(r, label_member, d);
    if (strcmp(r->str.data, "nodes") == 0)
        return jr_array(r, node_item, d);
    return jr_skip(r);
}

static int thread_item(jr *r, void *arg, size_t i) {
    doc *d = arg;
    (void)i;
    d->tree = ap_prof_tree_new(d->p, NULL, 0);
    d->nnodes = 0;
    return d->tree == NULL ? -1 : jr_object(r, thread_member, d);
}

/* ---- routes: the latency histograms (the rest of the route table is derived) ---- */

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int latency_member(jr *r, void *arg) {
    doc *d = arg;
    if (strcmp(r->str.data, "histogram") != 0)
        return jr_skip(r);
    if (jr_string(r) != 0)
        return -1;
    size_t n = (r->str.len - 1) / 2;
    uint8_t *enc = malloc(n ? n : 1);
    if (enc == NULL)
        return ap_err_set(AP_ENOMEM, "profile: out of memory");
    int bad = (r->str.len - 1) % 2 != 0;
    for (size_t i = 0; i < n && !bad; i++) {
        int hi = hexval(r->str.data[2 * i]), lo = hexval(r->str.data[2 * i + 1]);
        bad = hi < 0 || lo < 0;
        enc[i] = (uint8_t)(hi << 4 | (lo & 15));
    }
    bad = bad || ap_hist_decode(d->hist, enc, n) != 0;
    free(enc);
    if (bad)
        return jr_bad(r, "a route's latency histogram is invalid");
    d->has_hist = 1;
    return 0;
}

static int route_member(jr *r, void *arg) {
    doc *d = arg;
    if (strcmp(r->str.data, "route") == 0) {
        if (jr_string(r) != 0)
            return -1;
        d->route = ap_prof_intern(d->p, r->str.data, r->str.len - 1);
        return d->route == AP_NONE ? -1 : 0;
    }
    if (strcmp(r->str.data, "latency") == 0)
        return jr_object(r, latency_member, d);
    return jr_skip(r);
}

static int route_item(jr *r, void *arg, size_t i) {
    doc *d = arg;
    (void)i;
    d->route = AP_NONE;
    d->has_hist = 0;
    if (jr_object(r, route_member, d) != 0)
        return -1;
    if (!d->has_hist)
        return 0;
    if (d->route == AP_NONE)
        return jr_bad(r, "a route's latency without its route");
    ap_hist *h = ap_prof_latency(d->p, d->route);
    if (h == NULL)
        return ap_err_code() == AP_ENOMEM ? -1 : jr_bad(r, "too many routes with latency");
    ap_hist_merge(h, d->hist);
    return 0;
}

/* A query of "queries": statement, route (string or null), frame (export
 * index), line and the counters; "function", "file", "n_plus_one" are
 * derived and skipped. */
static int query_member(jr *r, void *arg) {
    doc *d = arg;
    const char *k = r->str.data;
    if (strcmp(k, "statement") == 0 || strcmp(k, "route") == 0) {
        ap_str_id *s = k[0] == 's' ? &d->query.statement : &d->query.route;
        jr_ws(r);
        if (k[0] == 'r' && r->p < r->end && *r->p == 'n')
            return jr_skip(r); /* null: outside a request */
        if (jr_string(r) != 0)
            return -1;
        *s = ap_prof_intern(d->p, r->str.data, r->str.len - 1);
        return *s == AP_NONE ? -1 : 0;
    }
    if (strcmp(k, "kind") == 0) { /* absent: a statement (older exports) */
        if (jr_string(r) != 0)
            return -1;
        unsigned kind = 0;
        while (kind < AP_QUERY_KINDS && strcmp(ap_query_kind_name(kind), r->str.data) != 0)
            kind++;
        if (kind == AP_QUERY_KINDS)
            return jr_bad(r, "a query's kind is unknown");
        d->query.kind = kind;
        return 0;
    }
    uint64_t *u = strcmp(k, "count") == 0             ? &d->query.count
                  : strcmp(k, "total_ns") == 0        ? &d->query.total_ns
                  : strcmp(k, "rows") == 0            ? &d->query.rows
                  : strcmp(k, "requests") == 0        ? &d->query.requests
                  : strcmp(k, "max_per_request") == 0 ? &d->query.max_per_request
                                                      : NULL;
    int is_frame = strcmp(k, "frame") == 0, is_line = strcmp(k, "line") == 0;
    if (u == NULL && !is_frame && !is_line)
        return jr_skip(r);
    int64_t v;
    if (jr_int(r, &v) != 0)
        return -1;
    if (v < 0 || (is_line && v > UINT32_MAX))
        return jr_bad(r, "a query's figure is out of range");
    if (is_frame)
        d->query_frame = v;
    else if (is_line)
        d->query.line = (uint32_t)v;
    else
        *u = (uint64_t)v;
    return 0;
}

static int query_item(jr *r, void *arg, size_t i) {
    doc *d = arg;
    memset(&d->query, 0, sizeof d->query);
    d->query_frame = 0;
    if (jr_object(r, query_member, d) != 0)
        return -1;
    if ((uint64_t)d->query_frame >= d->nframes)
        return ap_err_set(AP_ECORRUPT, "not an apiprof profile (JSON export: query %zu is "
                          "invalid)", i);
    d->query.site = d->frame_ids[d->query_frame];
    return ap_prof_query_put(d->p, &d->query);
}

int ap_json_is_export(const uint8_t *data, size_t len) {
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\n' || data[i] == '\r' || data[i] == '\t'))
        i++;
    return i < len && data[i] == '{';
}

ap_prof *ap_json_read(const uint8_t *data, size_t len) {
    jr r = {(const char *)data, (const char *)data + len, 0, {0}};
    doc d = {0};
    d.p = ap_prof_new();
    if (d.p == NULL)
        return NULL;
    int rc = jr_object(&r, top_member, &d);
    if (rc == 0 && (jr_ws(&r), r.p != r.end))
        rc = jr_bad(&r, "text after the document");
    if (rc == 0 && (!d.is_apiprof || d.frames == NULL || d.threads == NULL))
        rc = ap_err_set(AP_ECORRUPT, "not an apiprof profile (a JSON document that is not "
                        "apiprof's export)");
    /* Frames first: the nodes refer to them, wherever they are in the document. */
    if (rc == 0 && d.meta != NULL) {
        r.p = d.meta;
        rc = jr_object(&r, meta_member, &d);
    }
    if (rc == 0) {
        r.p = d.frames;
        rc = jr_array(&r, frame_item, &d);
    }
    if (rc == 0 && d.nframes == 0)
        rc = jr_bad(&r, "no frames");
    if (rc == 0) {
        r.p = d.threads;
        rc = jr_array(&r, thread_item, &d);
    }
    if (rc == 0 && d.routes != NULL) {
        r.p = d.routes;
        d.hist = ap_hist_new();
        rc = d.hist == NULL ? -1 : jr_array(&r, route_item, &d);
        ap_hist_free(d.hist);
    }
    if (rc == 0 && d.queries != NULL) {
        r.p = d.queries;
        rc = jr_array(&r, query_item, &d);
    }
    free(d.frame_ids);
    free(d.nodes);
    ap_sbuf_free(&r.str);
    if (rc != 0) {
        ap_prof_free(d.p);
        return NULL;
    }
    return d.p;
}
