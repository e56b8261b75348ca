/* ap_timeline.c -- the profile's event ring as lanes of nested spans with their wait kinds (see ap_timeline.h), and the HTML report's timeline JSON. */
#include "ap_timeline.h"

#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_report.h"
#include "ap_stall.h"
#include "ap_wait.h"

/* The value of label key of tree t, 0 ("") when it has none. */
static ap_str_id label(const ap_prof *p, const ap_tree *t, const char *key) {
    for (size_t i = 0; i < ap_tree_nlabels(t); i++) {
        ap_label l = ap_tree_label_at(t, i);
        if (strcmp(ap_prof_str(p, l.key), key) == 0)
            return l.val;
    }
    return 0;
}

ap_str_id ap_timeline_tree_label(const ap_prof *p, size_t t, const char *key) {
    return t < ap_prof_ntrees(p) ? label(p, ap_prof_tree_at(p, t), key) : 0;
}

void ap_timeline_lane_name(const ap_prof *p, const ap_timeline *tl, size_t l, ap_sbuf *sb) {
    ap_str_id thread = ap_timeline_tree_label(p, tl->lane_tree[l], "thread");
    if (thread != 0) {
        ap_sbuf_puts(sb, ap_prof_str(p, thread));
        ap_sbuf_putc(sb, '\0');
    } else
        ap_report_tree_name(p, tl->lane_tree[l], sb);
}

/* What makes two trees one lane: the process and the thread's id, or its
 * name without an id; a tree with neither is alone (own = its index + 1). */
typedef struct lane_key {
    ap_str_id pid, thread_id, thread;
    uint32_t own;
} lane_key;

static lane_key key_of(const ap_prof *p, size_t t) {
    const ap_tree *tree = ap_prof_tree_at(p, t);
    lane_key k = {label(p, tree, "pid"), label(p, tree, "thread_id"), 0, 0};
    if (k.thread_id == 0)
        k.thread = label(p, tree, "thread");
    if (k.thread_id == 0 && k.thread == 0)
        k.own = (uint32_t)t + 1;
    return k;
}

/* Lane order: by lane, then start; a parent before its children, that is the
 * longer first at equal starts and, at equal spans too, the later closed
 * (a parent closes after its children; `parent` holds the ring index here). */
static int span_order(const void *a, const void *b) {
    const ap_tl_span *x = a, *y = b;
    if (x->lane != y->lane)
        return x->lane < y->lane ? -1 : 1;
    if (x->start_ns != y->start_ns)
        return x->start_ns < y->start_ns ? -1 : 1;
    if (x->dur_ns != y->dur_ns)
        return x->dur_ns > y->dur_ns ? -1 : 1;
    return x->parent > y->parent ? -1 : x->parent < y->parent;
}

void ap_timeline_free(ap_timeline *tl) {
    free(tl->spans);
    free(tl->lane_tree);
    memset(tl, 0, sizeof *tl);
}

/* Parents and depths by a stack per lane (spans in lane order), then kinds. */
static int nest(const ap_prof *p, ap_timeline *tl) {
    size_t n = tl->nspans;
    uint32_t *stack = malloc(n * sizeof *stack), *parent = malloc(n * sizeof *parent);
    ap_frame_id *frame = malloc(n * sizeof *frame);
    uint8_t *kinds = malloc(n);
    int rc = -1;
    if (stack == NULL || parent == NULL || frame == NULL || kinds == NULL) {
        ap_err_set(AP_ENOMEM, "timeline: out of memory (%zu spans)", n);
        goto out;
    }
    size_t top = 0;
    for (size_t i = 0; i < n; i++) {
        ap_tl_span *s = &tl->spans[i];
        if (i > 0 && s->lane != tl->spans[i - 1].lane)
            top = 0;
        uint64_t end = s->start_ns + s->dur_ns;
        while (top > 0) {
            const ap_tl_span *up = &tl->spans[stack[top - 1]];
            if (up->start_ns + up->dur_ns >= end)
                break;
            top--;
        }
        s->parent = top > 0 ? stack[top - 1] : AP_NONE;
        s->depth = (uint32_t)top;
        stack[top++] = (uint32_t)i;
        parent[i] = s->parent;
        frame[i] = s->frame;
    }
    if (ap_wait_span_kinds(p, frame, parent, n, kinds) != 0)
        goto out;
    for (size_t i = 0; i < n; i++)
        tl->spans[i].kind = kinds[i];
    rc = 0;
out:
    free(stack);
    free(parent);
    free(frame);
    free(kinds);
    return rc;
}

int ap_timeline_build(const ap_prof *p, ap_timeline *tl) {
    memset(tl, 0, sizeof *tl);
    size_t n = ap_prof_nevents(p), ntrees = ap_prof_ntrees(p);
    if (n == 0)
        return 0;
    uint32_t *lane_of = malloc((ntrees ? ntrees : 1) * sizeof *lane_of);
    lane_key *keys = malloc((ntrees ? ntrees : 1) * sizeof *keys);
    tl->lane_tree = malloc((ntrees ? ntrees : 1) * sizeof *tl->lane_tree);
    tl->spans = malloc(n * sizeof *tl->spans);
    if (lane_of == NULL || keys == NULL || tl->lane_tree == NULL || tl->spans == NULL) {
        free(lane_of);
        free(keys);
        ap_timeline_free(tl);
        return ap_err_set(AP_ENOMEM, "timeline: out of memory (%zu spans)", n);
    }
    /* Lanes: trees are few (one per thread, route and task), so a scan does. */
    for (size_t t = 0; t < ntrees; t++) {
        lane_key k = key_of(p, t);
        size_t l = 0;
        while (l < tl->nlanes && memcmp(&keys[l], &k, sizeof k) != 0)
            l++;
        if (l == tl->nlanes) {
            keys[l] = k;
            tl->lane_tree[l] = (uint32_t)t;
            tl->nlanes++;
        }
        lane_of[t] = (uint32_t)l;
    }
    uint64_t t0 = UINT64_MAX;
    for (size_t i = 0; i < ap_prof_nstalls(p); i++)
        if (ap_prof_stall_at(p, i)->start_ns < t0)
            t0 = ap_prof_stall_at(p, i)->start_ns;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const ap_event *e = ap_prof_event_at(p, i);
        if (e->tree >= ntrees)   /* a file may name a tree it lacks (cut short) */
            continue;
        tl->spans[m++] = (ap_tl_span){e->start_ns, e->dur_ns, e->frame, e->tree,
                                      lane_of[e->tree], (uint32_t)i, 0, AP_WAIT_COUNT};
        if (e->start_ns < t0)
            t0 = e->start_ns;
    }
    /* Only lanes with spans, numbered in the same order (lane_of, no longer
     * needed, holds the new numbers; keys[l].own marks a lane with spans). */
    uint32_t *renum = lane_of, nl = 0;
    memset(keys, 0, tl->nlanes * sizeof *keys);
    for (size_t i = 0; i < m; i++)
        keys[tl->spans[i].lane].own = 1;
    for (size_t l = 0; l < tl->nlanes; l++) {
        renum[l] = keys[l].own ? nl : AP_NONE;
        if (keys[l].own)
            tl->lane_tree[nl++] = tl->lane_tree[l];
    }
    tl->nlanes = nl;
    for (size_t i = 0; i < m; i++)
        tl->spans[i].lane = renum[tl->spans[i].lane];
    free(lane_of);
    free(keys);
    tl->nspans = m;
    tl->t0 = t0;
    if (m == 0) {   /* every span named a tree the profile lacks */
        ap_timeline_free(tl);
        return 0;
    }
    for (size_t i = 0; i < m; i++)
        tl->spans[i].start_ns -= t0;
    qsort(tl->spans, m, sizeof *tl->spans, span_order);
    if (nest(p, tl) != 0) {
        ap_timeline_free(tl);
        return -1;
    }
    return 0;
}

static int desc_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x > y ? -1 : x < y;
}

/* Which spans the page gets: all, or the max longest (ties in lane order,
 * parents first).  keep[i] set to 1 for each; returns the shortest duration
 * left out plus one, 0 when none is.  On error (no memory) every span is
 * kept up to max in lane order. */
static uint64_t choose(const ap_timeline *tl, size_t max, uint8_t *keep) {
    size_t n = tl->nspans;
    if (n <= max) {
        memset(keep, 1, n);
        return 0;
    }
    memset(keep, 0, n);
    uint64_t *d = malloc(n * sizeof *d);
    if (d == NULL) {
        memset(keep, 1, max);
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        d[i] = tl->spans[i].dur_ns;
    qsort(d, n, sizeof *d, desc_u64);
    uint64_t cut = d[max - 1];
    free(d);
    size_t above = 0;
    for (size_t i = 0; i < n; i++)
        above += tl->spans[i].dur_ns > cut;
    size_t ties = max - above;
    for (size_t i = 0; i < n; i++) {
        uint64_t dur = tl->spans[i].dur_ns;
        if (dur > cut || (dur == cut && ties > 0 && ties--))
            keep[i] = 1;
    }
    return cut;
}

/* The route of a request's outermost span: a span of a route-labelled tree
 * whose parent is not of that route; 0 for any other span. */
static ap_str_id request_route(const ap_prof *p, const ap_timeline *tl, size_t i) {
    const ap_tl_span *s = &tl->spans[i];
    ap_str_id route = label(p, ap_prof_tree_at(p, s->tree), "route");
    if (route == 0 || s->parent == AP_NONE)
        return route;
    return label(p, ap_prof_tree_at(p, tl->spans[s->parent].tree), "route") == route ? 0 : route;
}

/* A JSON array of expr for each kept span s (the i_-th of tl), in lane order. */
#define SPAN_ARRAY(out, tl, keep, expr)                      \
    do {                                                     \
        int first_ = 1;                                      \
        ap_sbuf_putc(out, '[');                              \
        for (size_t i_ = 0; i_ < (tl)->nspans; i_++) {       \
            if (!(keep)[i_])                                 \
                continue;                                    \
            const ap_tl_span *s = &(tl)->spans[i_];          \
            (void)s;                                         \
            if (!first_)                                     \
                ap_sbuf_putc(out, ',');                      \
            first_ = 0;                                      \
            ap_sbuf_u64(out, (expr));                        \
        }                                                    \
        ap_sbuf_putc(out, ']');                              \
    } while (0)

static void stalls_json(const ap_prof *p, uint64_t t0, ap_sbuf *out) {
    ap_sbuf_puts(out, "[");
    for (size_t i = 0; i < ap_prof_nstalls(p); i++) {
        const ap_stall *s = ap_prof_stall_at(p, i);
        ap_sbuf_printf(out, "%s{\"s\":", i ? ",\n" : "");
        ap_sbuf_u64(out, s->start_ns >= t0 ? s->start_ns - t0 : 0);
        ap_sbuf_puts(out, ",\"d\":");
        ap_sbuf_u64(out, s->dur_ns);
        ap_sbuf_printf(out, ",\"f\":%u,\"line\":%u,\"route\":%u,\"task\":%u,\"thread\":%u,\"cpu\":",
                       s->func, s->line, s->route, s->task, s->thread);
        ap_sbuf_u64(out, s->cpu_ns);
        ap_sbuf_puts(out, ",\"stack\":[");
        const ap_frame_id *st = ap_prof_stall_stack(p, s);
        for (uint32_t k = 0; k < s->nstack; k++)
            ap_sbuf_printf(out, "%s%u", k ? "," : "", st[k]);
        ap_sbuf_puts(out, "]}");
    }
    ap_sbuf_puts(out, "]");
}

void ap_timeline_json(const ap_prof *p, const ap_timeline *tl, size_t max_spans, ap_sbuf *out) {
    uint8_t *keep = malloc(tl->nspans ? tl->nspans : 1);
    if (keep == NULL) {
        out->failed = 1;
        ap_err_set(AP_ENOMEM, "timeline: out of memory");
        return;
    }
    uint64_t cut = choose(tl, max_spans, keep);
    size_t shown = 0;
    for (size_t i = 0; i < tl->nspans; i++)
        shown += keep[i];
    ap_sbuf_puts(out, "{\"spans\":");
    ap_sbuf_u64(out, tl->nspans);
    ap_sbuf_puts(out, ",\"shown\":");
    ap_sbuf_u64(out, shown);
    ap_sbuf_puts(out, ",\"cut_ns\":");
    ap_sbuf_u64(out, cut);
    ap_sbuf_puts(out, ",\"dropped\":");
    ap_sbuf_u64(out, ap_prof_events_dropped(p));
    /* With spans overwritten, the ring is whole only from the end of its oldest span on
     * (spans enter it as they close): before that, only spans still open then remain. */
    uint64_t whole = 0;
    if (ap_prof_events_dropped(p) > 0 && ap_prof_nevents(p) > 0) {
        whole = UINT64_MAX;
        for (size_t i = 0; i < ap_prof_nevents(p); i++) {
            const ap_event *e = ap_prof_event_at(p, i);
            if (e->start_ns + e->dur_ns < whole)
                whole = e->start_ns + e->dur_ns;
        }
        whole = whole > tl->t0 ? whole - tl->t0 : 0;
    }
    ap_sbuf_puts(out, ",\"whole_from\":");
    ap_sbuf_u64(out, whole);
    ap_sbuf_puts(out, ",\"stalls_dropped\":");
    ap_sbuf_u64(out, ap_prof_stalls_dropped(p));
    ap_sbuf_puts(out, ",\"kinds\":[");
    for (unsigned k = 0; k < AP_WAIT_COUNT; k++) {
        ap_sbuf_json_str(out, ap_wait_name(k));
        ap_sbuf_putc(out, ',');
    }
    ap_sbuf_puts(out, "\"running\"],\n\"lanes\":[");
    ap_sbuf name = {0};
    for (size_t l = 0; l < tl->nlanes; l++) {
        const ap_tree *t = ap_prof_tree_at(p, tl->lane_tree[l]);
        ap_sbuf_puts(out, l ? ",{\"name\":" : "{\"name\":");
        name.len = 0;
        ap_timeline_lane_name(p, tl, l, &name);
        ap_sbuf_json_str(out, name.failed ? "?" : name.data);
        ap_sbuf_puts(out, ",\"id\":");
        ap_sbuf_json_str(out, ap_prof_str(p, label(p, t, "thread_id")));
        ap_sbuf_puts(out, ",\"pid\":");
        ap_sbuf_json_str(out, ap_prof_str(p, label(p, t, "pid")));
        ap_sbuf_putc(out, '}');
    }
    ap_sbuf_free(&name);
    ap_sbuf_puts(out, "],\n\"s\":");
    SPAN_ARRAY(out, tl, keep, s->start_ns);
    ap_sbuf_puts(out, ",\n\"d\":");
    SPAN_ARRAY(out, tl, keep, s->dur_ns);
    ap_sbuf_puts(out, ",\n\"f\":");
    SPAN_ARRAY(out, tl, keep, s->frame);
    ap_sbuf_puts(out, ",\n\"l\":");
    SPAN_ARRAY(out, tl, keep, s->lane);
    ap_sbuf_puts(out, ",\n\"z\":");
    SPAN_ARRAY(out, tl, keep, s->depth);
    ap_sbuf_puts(out, ",\n\"k\":");
    SPAN_ARRAY(out, tl, keep, s->kind);
    ap_sbuf_puts(out, ",\n\"r\":");
    SPAN_ARRAY(out, tl, keep, request_route(p, tl, i_));
    ap_sbuf_puts(out, ",\n\"stalls\":");
    stalls_json(p, tl->t0, out);
    ap_sbuf_putc(out, '}');
    free(keep);
}
