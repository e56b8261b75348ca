/* ap_prof.c -- the profile model: interning, trees, merge, the pstats-semantics function table. */
#include "ap_prof.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_prof_int.h"
#include "ap_wait.h"
#include "ap_memtl.h"
#include "ap_unrel.h"
#include "ap_stall.h"

const char *ap_frame_kind_name(uint32_t kind) {
    static const char *const names[] = {"root", "python", "builtin", "method", "other"};
    return kind <= AP_FRAME_OTHER ? names[kind] : "other";
}

/* Grow *arr (of *cap elements of size sz) to hold at least need elements. */
int ap_prof_grow(void **arr, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    if (n > SIZE_MAX / sz)
        return ap_err_set(AP_ENOMEM, "profile: array of %zu elements is too large", n);
    void *p = realloc(*arr, n * sz);
    if (p == NULL)
        return ap_err_set(AP_ENOMEM, "profile: out of memory (%zu elements)", n);
    *arr = p;
    *cap = n;
    return 0;
}

#define GROW(arr, cap, need) ap_prof_grow((void **)&(arr), &(cap), (need), sizeof *(arr))

/* ---- profile ------------------------------------------------------------------ */

ap_prof *ap_prof_new(void) {
    ap_prof *p = calloc(1, sizeof *p);
    if (p == NULL) {
        ap_err_set(AP_ENOMEM, "profile: out of memory");
        return NULL;
    }
    ap_arena_init(&p->arena, 0);
    if (ap_prof_intern(p, "", 0) != 0)
        goto err;
    ap_frame root = {0, 0, 0, 0, 0, AP_FRAME_ROOT};
    if (ap_prof_frame_intern(p, &root) != 0)
        goto err;
    return p;
err:
    ap_prof_free(p);
    return NULL;
}

static void tree_free(ap_tree *t) {
    ap_arena_free(&t->arena);
    ap_map_free(&t->index);
    free(t->nodes);
    free(t->labels);
    free(t);
}

void ap_prof_free(ap_prof *p) {
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->ntrees; i++)
        tree_free(p->trees[i]);
    free(p->trees);
    free(p->strs);
    free(p->str_len);
    free(p->str_next);
    free(p->frames);
    free(p->frame_next);
    free(p->meta);
    free(p->events);
    for (size_t i = 0; i < p->nlat; i++)
        ap_hist_free(p->lat[i]);
    free(p->lat);
    free(p->lat_route);
    ap_map_free(&p->lat_index);
    free(p->queries);
    ap_map_free(&p->query_index);
    ap_stall_free(p);
    ap_memtl_free(p);
    ap_unrel_free(p);
    ap_map_free(&p->str_index);
    ap_map_free(&p->frame_index);
    ap_arena_free(&p->arena);
    free(p);
}

/* ---- strings ------------------------------------------------------------------ */

ap_str_id ap_prof_intern(ap_prof *p, const char *s, size_t len) {
    assert(s != NULL || len == 0);
    uint64_t h = ap_hash_bytes(s, len);
    uint64_t *head = ap_map_get(&p->str_index, h);
    if (head != NULL) {
        for (uint32_t id = (uint32_t)*head; id != AP_NONE; id = p->str_next[id])
            if (p->str_len[id] == len && memcmp(p->strs[id], s, len) == 0)
                return id;
    }
    if (p->nstrs >= AP_NONE - 1) {
        ap_err_set(AP_EFULL, "profile: too many strings");
        return AP_NONE;
    }
    size_t cap1 = p->str_cap, cap2 = p->str_cap, cap3 = p->str_cap;
    if (GROW(p->strs, cap1, p->nstrs + 1) || GROW(p->str_len, cap2, p->nstrs + 1) ||
        GROW(p->str_next, cap3, p->nstrs + 1))
        return AP_NONE;
    p->str_cap = cap1 < cap2 ? (cap1 < cap3 ? cap1 : cap3) : (cap2 < cap3 ? cap2 : cap3);
    char *copy = ap_arena_strdup(&p->arena, s, len);
    if (copy == NULL)
        return AP_NONE;
    uint32_t id = (uint32_t)p->nstrs;
    int inserted;
    uint64_t *slot = ap_map_upsert(&p->str_index, h, id, &inserted);
    if (slot == NULL)
        return AP_NONE;
    p->str_next[id] = inserted ? AP_NONE : (uint32_t)*slot;
    *slot = id;
    p->strs[id] = copy;
    p->str_len[id] = len;
    p->nstrs++;
    return id;
}

const char *ap_prof_str(const ap_prof *p, ap_str_id id) {
    return id < p->nstrs ? p->strs[id] : "";
}

size_t ap_prof_nstrs(const ap_prof *p) {
    return p->nstrs;
}

/* ---- frames ------------------------------------------------------------------- */

static int frame_eq(const ap_frame *a, const ap_frame *b) {
    return a->name == b->name && a->qualname == b->qualname && a->file == b->file &&
           a->line == b->line && a->lineno == b->lineno && a->kind == b->kind;
}

ap_frame_id ap_prof_frame_intern(ap_prof *p, const ap_frame *f) {
    uint32_t words[6] = {f->name, f->qualname, f->file, f->line, f->lineno, f->kind};
    uint64_t h = ap_hash_bytes(words, sizeof words);
    uint64_t *head = ap_map_get(&p->frame_index, h);
    if (head != NULL) {
        for (uint32_t id = (uint32_t)*head; id != AP_NONE; id = p->frame_next[id])
            if (frame_eq(&p->frames[id], f))
                return id;
    }
    if (p->nframes >= AP_NONE - 1) {
        ap_err_set(AP_EFULL, "profile: too many frames");
        return AP_NONE;
    }
    size_t c1 = p->frame_cap, c2 = p->frame_cap;
    if (GROW(p->frames, c1, p->nframes + 1) || GROW(p->frame_next, c2, p->nframes + 1))
        return AP_NONE;
    p->frame_cap = c1 < c2 ? c1 : c2;
    uint32_t id = (uint32_t)p->nframes;
    int inserted;
    uint64_t *slot = ap_map_upsert(&p->frame_index, h, id, &inserted);
    if (slot == NULL)
        return AP_NONE;
    p->frame_next[id] = inserted ? AP_NONE : (uint32_t)*slot;
    *slot = id;
    p->frames[id] = *f;
    p->nframes++;
    return id;
}

const ap_frame *ap_prof_frame(const ap_prof *p, ap_frame_id id) {
    return id < p->nframes ? &p->frames[id] : NULL;
}

const char *ap_prof_frame_qualname(const ap_prof *p, ap_frame_id id) {
    const ap_frame *fr = ap_prof_frame(p, id);
    if (fr == NULL)
        return "";
    const char *q = ap_prof_str(p, fr->qualname);
    return q[0] ? q : ap_prof_str(p, fr->name);
}

size_t ap_prof_nframes(const ap_prof *p) {
    return p->nframes;
}

ap_frame_id ap_prof_func_frame(ap_prof *p, ap_frame_id id) {
    if (id >= p->nframes) {
        ap_err_set(AP_EINVAL, "profile: no frame %u", id);
        return AP_NONE;
    }
    if (p->frames[id].lineno == 0)
        return id;
    ap_frame f = p->frames[id];
    f.lineno = 0;
    return ap_prof_frame_intern(p, &f);
}

/* ---- metadata ------------------------------------------------------------------- */

int ap_prof_meta_set(ap_prof *p, const char *key, const char *val) {
    char *v = ap_arena_strdup(&p->arena, val, strlen(val));
    if (v == NULL)
        return -1;
    for (size_t i = 0; i < p->nmeta; i++) {
        if (strcmp(p->meta[i].key, key) == 0) {
            p->meta[i].val = v;
            return 0;
        }
    }
    char *k = ap_arena_strdup(&p->arena, key, strlen(key));
    if (k == NULL || GROW(p->meta, p->meta_cap, p->nmeta + 1))
        return -1;
    p->meta[p->nmeta].key = k;
    p->meta[p->nmeta].val = v;
    p->nmeta++;
    return 0;
}

const char *ap_prof_meta_get(const ap_prof *p, const char *key) {
    for (size_t i = 0; i < p->nmeta; i++)
        if (strcmp(p->meta[i].key, key) == 0)
            return p->meta[i].val;
    return NULL;
}

size_t ap_prof_nmeta(const ap_prof *p) {
    return p->nmeta;
}

void ap_prof_meta_at(const ap_prof *p, size_t i, const char **key, const char **val) {
    assert(i < p->nmeta);
    *key = p->meta[i].key;
    *val = p->meta[i].val;
}

/* ---- trees ---------------------------------------------------------------------- */

/* A node with zero metrics appended to t; NULL with AP_ENOMEM. */
static ap_node *node_add(ap_tree *t, ap_node *parent, ap_frame_id frame) {
    if (t->nnodes >= AP_NONE - 1) {
        ap_err_set(AP_EFULL, "profile: too many nodes in one tree");
        return NULL;
    }
    if (GROW(t->nodes, t->node_cap, t->nnodes + 1))
        return NULL;
    ap_node *n = ap_arena_calloc(&t->arena, sizeof *n);
    if (n == NULL)
        return NULL;
    n->id = (ap_node_id)t->nnodes;
    n->frame = frame;
    n->parent = parent ? parent->id : AP_NONE;
    n->up = parent;
    t->nodes[t->nnodes++] = n;
    return n;
}

ap_tree *ap_prof_tree_new(ap_prof *p, const ap_label *labels, size_t nlabels) {
    if (GROW(p->trees, p->tree_cap, p->ntrees + 1))
        return NULL;
    ap_tree *t = calloc(1, sizeof *t);
    if (t == NULL) {
        ap_err_set(AP_ENOMEM, "profile: out of memory");
        return NULL;
    }
    t->prof = p;
    ap_arena_init(&t->arena, 0);
    if (node_add(t, NULL, 0) == NULL)
        goto err;
    for (size_t i = 0; i < nlabels; i++)
        if (ap_tree_label_set(t, labels[i].key, labels[i].val) != 0)
            goto err;
    p->trees[p->ntrees++] = t;
    return t;
err:
    tree_free(t);
    return NULL;
}

int ap_tree_label_set(ap_tree *t, ap_str_id key, ap_str_id val) {
    for (size_t i = 0; i < t->nlabels; i++) {
        if (t->labels[i].key == key) {
            t->labels[i].val = val;
            return 0;
        }
    }
    if (GROW(t->labels, t->label_cap, t->nlabels + 1))
        return -1;
    t->labels[t->nlabels].key = key;
    t->labels[t->nlabels].val = val;
    t->nlabels++;
    return 0;
}

ap_node *ap_tree_root(ap_tree *t) {
    return t->nodes[0];
}

/* Parents with more children than this are looked up in t->index. */
#define CHILD_SCAN_MAX 8

static uint64_t child_key(const ap_node *parent, ap_frame_id frame) {
    return ((uint64_t)parent->id << 32) | frame;
}

ap_node *ap_tree_child(ap_tree *t, ap_node *parent, ap_frame_id frame) {
    ap_node *c = NULL;
    if (parent->nchildren <= CHILD_SCAN_MAX) {
        for (c = parent->first_child; c != NULL; c = c->next_sibling)
            if (c->frame == frame)
                break;
    } else {
        uint64_t *v = ap_map_get(&t->index, child_key(parent, frame));
        if (v != NULL)
            c = t->nodes[*v];
    }
    if (c == NULL) {
        c = node_add(t, parent, frame);
        if (c == NULL)
            return NULL;
        if (ap_map_put(&t->index, child_key(parent, frame), c->id) != 0) {
            t->nnodes--;   /* the arena keeps the bytes; the id is reused */
            return NULL;
        }
        c->next_sibling = parent->first_child;
        parent->first_child = c;
        parent->nchildren++;
    }
    parent->mru = c;
    return c;
}

size_t ap_prof_ntrees(const ap_prof *p) {
    return p->ntrees;
}

ap_tree *ap_prof_tree_at(const ap_prof *p, size_t i) {
    return i < p->ntrees ? p->trees[i] : NULL;
}

size_t ap_tree_nlabels(const ap_tree *t) {
    return t->nlabels;
}

ap_label ap_tree_label_at(const ap_tree *t, size_t i) {
    assert(i < t->nlabels);
    return t->labels[i];
}

ap_str_id ap_tree_label_get(const ap_tree *t, ap_str_id key) {
    for (size_t i = 0; i < t->nlabels; i++)
        if (t->labels[i].key == key)
            return t->labels[i].val;
    return AP_NONE;
}

size_t ap_tree_nnodes(const ap_tree *t) {
    return t->nnodes;
}

const ap_node *ap_tree_node(const ap_tree *t, ap_node_id id) {
    return id < t->nnodes ? t->nodes[id] : NULL;
}

const ap_node *ap_node_first_child(const ap_node *n) {
    return n->first_child;
}

const ap_node *ap_node_next_sibling(const ap_node *n) {
    return n->next_sibling;
}

/* ---- event ring --------------------------------------------------------------- */

int ap_prof_events_enable(ap_prof *p, size_t capacity) {
    if (capacity == 0 || capacity > SIZE_MAX / sizeof(ap_event))
        return ap_err_set(AP_EINVAL, "profile: event ring capacity %zu is invalid", capacity);
    ap_event *ev = malloc(capacity * sizeof *ev);
    if (ev == NULL)
        return ap_err_set(AP_ENOMEM, "profile: out of memory (%zu events)", capacity);
    free(p->events);
    p->events = ev;
    p->ev_cap = capacity;
    p->ev_len = p->ev_head = 0;
    p->ev_dropped = 0;
    return 0;
}

void ap_prof_event_add(ap_prof *p, const ap_event *e) {
    if (p->ev_cap == 0)
        return;
    if (p->ev_len < p->ev_cap) {
        p->events[(p->ev_head + p->ev_len++) % p->ev_cap] = *e;
        return;
    }
    p->events[p->ev_head] = *e;
    p->ev_head = (p->ev_head + 1) % p->ev_cap;
    p->ev_dropped++;
}

size_t ap_prof_events_capacity(const ap_prof *p) {
    return p->ev_cap;
}

size_t ap_prof_nevents(const ap_prof *p) {
    return p->ev_len;
}

const ap_event *ap_prof_event_at(const ap_prof *p, size_t i) {
    assert(i < p->ev_len);
    return &p->events[(p->ev_head + i) % p->ev_cap];
}

uint64_t ap_prof_events_dropped(const ap_prof *p) {
    return p->ev_dropped;
}

/* ---- derived metrics -------------------------------------------------------------- */

/* func[f] = function-level frame of every frame f (interning as needed).
 * Returns a malloc'd array of ap_prof_nframes(p) ids (counted after the
 * interning), or NULL with AP_ENOMEM. */
static ap_frame_id *func_frames(ap_prof *p, size_t *n_out) {
    size_t n = p->nframes;
    for (size_t i = 0; i < n; i++)
        if (p->frames[i].lineno != 0 && ap_prof_func_frame(p, (ap_frame_id)i) == AP_NONE)
            return NULL;
    n = p->nframes;
    ap_frame_id *func = malloc((n ? n : 1) * sizeof *func);
    if (func == NULL) {
        ap_err_set(AP_ENOMEM, "profile: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        func[i] = ap_prof_func_frame(p, (ap_frame_id)i);
    *n_out = n;
    return func;
}

/* Depth-first walk of a tree calling enter(node) before its children and
 * leave(node) after them.  Iterative (trees can be deep).  0 / -1 ENOMEM. */
typedef struct walk_stack {
    const ap_node **items;
    size_t len, cap;
} walk_stack;

static int tree_walk(const ap_tree *t, walk_stack *ws, void (*enter)(const ap_node *, void *),
                     void (*leave)(const ap_node *, void *), void *arg) {
    ws->len = 0;
    const ap_node *n = t->nodes[0];
    for (;;) {
        enter(n, arg);
        if (n->first_child != NULL) {
            if (GROW(ws->items, ws->cap, ws->len + 1))
                return -1;
            ws->items[ws->len++] = n;
            n = n->first_child;
            continue;
        }
        leave(n, arg);
        while (n->next_sibling == NULL) {
            if (ws->len == 0)
                return 0;
            n = ws->items[--ws->len];
            leave(n, arg);
        }
        n = n->next_sibling;
    }
}

typedef struct finish_ctx {
    const ap_frame_id *func;
    uint32_t *active;   /* per function-level frame: occurrences on the path */
} finish_ctx;

static void finish_enter(const ap_node *n, void *arg) {
    finish_ctx *c = arg;
    ap_frame_id f = c->func[n->frame];
    ((ap_node *)n)->m[AP_M_PRIM_CALLS] = c->active[f] == 0 ? n->m[AP_M_CALLS] : 0;
    c->active[f]++;
}

static void finish_leave(const ap_node *n, void *arg) {
    finish_ctx *c = arg;
    c->active[c->func[n->frame]]--;
}

int ap_prof_finish(ap_prof *p) {
    size_t nf;
    ap_frame_id *func = func_frames(p, &nf);
    if (func == NULL)
        return -1;
    finish_ctx c = {func, calloc(nf, sizeof(uint32_t))};
    walk_stack ws = {0};
    int rc = 0;
    if (c.active == NULL) {
        rc = ap_err_set(AP_ENOMEM, "profile: out of memory");
    } else {
        for (size_t i = 0; i < p->ntrees && rc == 0; i++)
            rc = tree_walk(p->trees[i], &ws, finish_enter, finish_leave, &c);
    }
    free(ws.items);
    free(c.active);
    free(func);
    return rc == 0 ? ap_wait_classify(p) : rc;
}

/* ---- route latency ----------------------------------------------------------------- */

ap_hist *ap_prof_latency(ap_prof *p, ap_str_id route) {
    uint64_t *ix = ap_map_get(&p->lat_index, route);
    if (ix != NULL)
        return p->lat[*ix];
    if (p->nlat >= AP_PROF_LATENCY_MAX) {
        ap_err_set(AP_EFULL, "profile: more than %d routes with a latency histogram",
                   AP_PROF_LATENCY_MAX);
        return NULL;
    }
    if (GROW(p->lat, p->lat_cap, p->nlat + 1) || GROW(p->lat_route, p->lat_route_cap, p->nlat + 1))
        return NULL;
    ap_hist *h = ap_hist_new();
    if (h == NULL)
        return NULL;
    if (ap_map_put(&p->lat_index, route, p->nlat) != 0) {
        ap_hist_free(h);
        return NULL;
    }
    p->lat[p->nlat] = h;
    p->lat_route[p->nlat++] = route;
    return h;
}

const ap_hist *ap_prof_latency_get(const ap_prof *p, ap_str_id route) {
    uint64_t *ix = ap_map_get(&p->lat_index, route);
    return ix != NULL ? p->lat[*ix] : NULL;
}

size_t ap_prof_nlatency(const ap_prof *p) {
    return p->nlat;
}

const ap_hist *ap_prof_latency_at(const ap_prof *p, size_t i, ap_str_id *route) {
    *route = p->lat_route[i];
    return p->lat[i];
}

int ap_prof_latency_merge(ap_prof *dst, const ap_prof *src) {
    for (size_t i = 0; i < src->nlat; i++) {
        ap_hist *h = ap_prof_latency(dst, src->lat_route[i]);
        if (h == NULL)
            return -1;
        ap_hist_merge(h, src->lat[i]);
    }
    return 0;
}

/* ---- merge ------------------------------------------------------------------------- */

/* A new profile with the strings, frames and metadata of p (same ids) and no
 * tree.  On error, NULL with AP_ENOMEM. */
static ap_prof *prof_copy_base(const ap_prof *p) {
    ap_prof *m = ap_prof_new();
    if (m == NULL)
        return NULL;
    for (size_t i = 1; i < p->nstrs; i++)
        if (ap_prof_intern(m, p->strs[i], p->str_len[i]) != i)
            goto err;
    for (size_t i = 1; i < p->nframes; i++)
        if (ap_prof_frame_intern(m, &p->frames[i]) != i)
            goto err;
    for (size_t i = 0; i < p->nmeta; i++)
        if (ap_prof_meta_set(m, p->meta[i].key, p->meta[i].val) != 0)
            goto err;
    if (ap_prof_latency_merge(m, p) != 0)
        goto err;
    for (size_t i = 0; i < p->nqueries; i++)
        if (ap_prof_query_put(m, &p->queries[i]) != 0)
            goto err;
    if (ap_stall_copy(m, p) != 0 || ap_memtl_copy(m, p) != 0 || ap_unrel_copy(m, p) != 0)
        goto err;
    return m;
err:
    ap_prof_free(m);
    return NULL;
}

/* Add the nodes of t into out (a tree of a profile with the same frame ids),
 * matched by frame paths.  *map (*map_cap entries) is scratch space.  0 / -1
 * with AP_ENOMEM. */
static int tree_add_into(ap_tree *out, const ap_tree *t, ap_node ***map, size_t *map_cap) {
    if (GROW(*map, *map_cap, t->nnodes))
        return -1;
    ap_node **m = *map;
    m[0] = out->nodes[0];
    for (size_t id = 0; id < t->nnodes; id++) {
        const ap_node *n = t->nodes[id];
        ap_node *dst = id == 0 ? m[0] : ap_tree_child(out, m[n->parent], n->frame);
        if (dst == NULL)
            return -1;
        m[id] = dst;
        for (unsigned k = 0; k < AP_M_COUNT; k++)
            dst->m[k] += n->m[k];
    }
    return 0;
}

ap_prof *ap_prof_merge(const ap_prof *p, int (*keep)(const ap_tree *t, void *arg), void *arg) {
    ap_node **map = NULL;
    size_t map_cap = 0;
    ap_prof *m = prof_copy_base(p);
    if (m == NULL)
        return NULL;
    ap_tree *out = ap_prof_tree_new(m, NULL, 0);
    if (out == NULL)
        goto err;
    int first = 1;
    for (size_t ti = 0; ti < p->ntrees; ti++) {
        const ap_tree *t = p->trees[ti];
        if (keep != NULL && !keep(t, arg))
            continue;
        if (first) {
            for (size_t i = 0; i < t->nlabels; i++)
                if (ap_tree_label_set(out, t->labels[i].key, t->labels[i].val) != 0)
                    goto err;
            first = 0;
        } else {
            for (size_t i = 0; i < out->nlabels;) {
                if (ap_tree_label_get(t, out->labels[i].key) != out->labels[i].val)
                    out->labels[i] = out->labels[--out->nlabels];
                else
                    i++;
            }
        }
        if (tree_add_into(out, t, &map, &map_cap) != 0)
            goto err;
    }
    free(map);
    return m;
err:
    free(map);
    ap_prof_free(m);
    return NULL;
}

ap_prof *ap_prof_select(const ap_prof *p, int (*keep)(const ap_tree *t, void *arg), void *arg) {
    ap_node **map = NULL;
    size_t map_cap = 0;
    ap_prof *m = prof_copy_base(p);
    if (m == NULL)
        return NULL;
    for (size_t ti = 0; ti < p->ntrees; ti++) {
        const ap_tree *t = p->trees[ti];
        if (keep != NULL && !keep(t, arg))
            continue;
        ap_tree *out = ap_prof_tree_new(m, t->labels, t->nlabels);
        if (out == NULL || tree_add_into(out, t, &map, &map_cap) != 0)
            goto err;
    }
    free(map);
    return m;
err:
    free(map);
    ap_prof_free(m);
    return NULL;
}

int ap_task_name_is_default(const char *s, size_t n) {
    if (n < 6 || strncmp(s, "Task-", 5) != 0)
        return 0;
    for (size_t i = 5; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int ap_prof_label_all(ap_prof *p, const char *key, const char *val) {
    ap_str_id k = ap_prof_intern(p, key, strlen(key)), v = ap_prof_intern(p, val, strlen(val));
    if (k == AP_NONE || v == AP_NONE)
        return -1;
    for (size_t i = 0; i < p->ntrees; i++)
        if (ap_tree_label_set(p->trees[i], k, v) != 0)
            return -1;
    return 0;
}

int ap_prof_absorb(ap_prof *dst, const ap_prof *src, const char *key, const char *val) {
    int rc = -1;
    ap_str_id *smap = malloc((src->nstrs ? src->nstrs : 1) * sizeof *smap);
    ap_frame_id *fmap = malloc((src->nframes ? src->nframes : 1) * sizeof *fmap);
    ap_node **nmap = NULL;
    size_t nmap_cap = 0;
    ap_label *labels = NULL;
    if (smap == NULL || fmap == NULL) {
        ap_err_set(AP_ENOMEM, "profile: out of memory");
        goto out;
    }
    smap[0] = 0;
    for (size_t i = 1; i < src->nstrs; i++)
        if ((smap[i] = ap_prof_intern(dst, src->strs[i], src->str_len[i])) == AP_NONE)
            goto out;
    fmap[0] = 0;
    for (size_t i = 1; i < src->nframes; i++) {
        ap_frame f = src->frames[i];
        f.name = smap[f.name];
        f.qualname = smap[f.qualname];
        f.file = smap[f.file];
        if ((fmap[i] = ap_prof_frame_intern(dst, &f)) == AP_NONE)
            goto out;
    }
    ap_label extra = {0, 0};
    if (key != NULL) {
        extra.key = ap_prof_intern(dst, key, strlen(key));
        extra.val = ap_prof_intern(dst, val, strlen(val));
        if (extra.key == AP_NONE || extra.val == AP_NONE)
            goto out;
    }
    for (size_t ti = 0; ti < src->ntrees; ti++) {
        const ap_tree *t = src->trees[ti];
        free(labels);
        labels = malloc((t->nlabels + 1) * sizeof *labels);
        if (labels == NULL) {
            ap_err_set(AP_ENOMEM, "profile: out of memory");
            goto out;
        }
        size_t n = 0;
        for (size_t i = 0; i < t->nlabels; i++)
            if (key == NULL || smap[t->labels[i].key] != extra.key)
                labels[n++] = (ap_label){smap[t->labels[i].key], smap[t->labels[i].val]};
        if (key != NULL)
            labels[n++] = extra;
        ap_tree *out = ap_prof_tree_new(dst, labels, n);
        if (out == NULL || GROW(nmap, nmap_cap, t->nnodes))
            goto out;
        nmap[0] = out->nodes[0];
        for (size_t id = 0; id < t->nnodes; id++) {
            const ap_node *node = t->nodes[id];
            ap_node *d = id == 0 ? nmap[0] : ap_tree_child(out, nmap[node->parent], fmap[node->frame]);
            if (d == NULL)
                goto out;
            nmap[id] = d;
            for (unsigned k = 0; k < AP_M_COUNT; k++)
                d->m[k] += node->m[k];
        }
    }
    for (size_t i = 0; i < src->nlat; i++) {
        ap_hist *h = ap_prof_latency(dst, smap[src->lat_route[i]]);
        if (h == NULL)
            goto out;
        ap_hist_merge(h, src->lat[i]);
    }
    for (size_t i = 0; i < src->nqueries; i++) {
        ap_query q = src->queries[i];
        q.statement = smap[q.statement];
        q.route = smap[q.route];
        q.site = fmap[q.site];
        if (ap_prof_query_put(dst, &q) != 0)
            goto out;
    }
    rc = 0;
out:
    free(labels);
    free(nmap);
    free(fmap);
    free(smap);
    return rc;
}

/* ---- function table ------------------------------------------------------------------ */

typedef struct ft_ctx {
    const ap_frame_id *func;    /* frame -> function-level frame */
    uint32_t *row_of;           /* function-level frame -> row, AP_NONE if none yet */
    ap_func_row *rows;
    size_t nrows, rows_cap;
    ap_func_edge *edges;
    size_t nedges, edges_cap;
    ap_map edge_index;          /* caller row << 32 | callee row -> edge */
    uint32_t *active_row;       /* per row: occurrences on the current path */
    size_t active_row_cap;
    uint32_t *active_edge;      /* per edge */
    size_t active_edge_cap;
    walk_stack path;            /* edge index of each node on the path, as pointers */
    uint32_t *edge_path;
    size_t edge_path_len, edge_path_cap;
    uint64_t *acc;              /* per path level: the metrics of the node's subtree so far */
    size_t acc_cap;             /* in levels */
    int failed;
} ft_ctx;

static uint32_t ft_row(ft_ctx *c, ap_frame_id frame) {
    ap_frame_id f = c->func[frame];
    if (c->row_of[f] != AP_NONE)
        return c->row_of[f];
    if (GROW(c->rows, c->rows_cap, c->nrows + 1) ||
        GROW(c->active_row, c->active_row_cap, c->nrows + 1))
        return AP_NONE;
    ap_func_row *r = &c->rows[c->nrows];
    memset(r, 0, sizeof *r);
    r->frame = f;
    c->active_row[c->nrows] = 0;
    c->row_of[f] = (uint32_t)c->nrows;
    return (uint32_t)c->nrows++;
}

static uint32_t ft_edge(ft_ctx *c, uint32_t caller, uint32_t callee) {
    int inserted;
    uint64_t *v = ap_map_upsert(&c->edge_index, ((uint64_t)caller << 32) | callee, c->nedges,
                                &inserted);
    if (v == NULL)
        return AP_NONE;
    if (!inserted)
        return (uint32_t)*v;
    if (GROW(c->edges, c->edges_cap, c->nedges + 1) ||
        GROW(c->active_edge, c->active_edge_cap, c->nedges + 1)) {
        ap_map_remove(&c->edge_index, ((uint64_t)caller << 32) | callee);
        return AP_NONE;
    }
    ap_func_edge *e = &c->edges[c->nedges];
    memset(e, 0, sizeof *e);
    e->caller = caller;
    e->callee = callee;
    c->active_edge[c->nedges] = 0;
    return (uint32_t)c->nedges++;
}

/* Path entry of a line-level node refining its function's node: nothing to
 * undo when leaving it. */
#define EDGE_LINE (AP_NONE - 1)

/* The allocation hook's metrics, which line nodes carry for their function
 * (ap_prof.h, line table). */
static const unsigned line_memory[] = {AP_M_ALLOC_BYTES, AP_M_ALLOC_COUNT, AP_M_LIVE_BYTES,
                                       AP_M_PEAK_BYTES, AP_M_FREED_BYTES};

static void ft_enter(const ap_node *n, void *arg) {
    ft_ctx *c = arg;
    uint32_t edge = AP_NONE;
    if (c->failed || n->id == 0)
        goto push;
    uint32_t r = ft_row(c, n->frame);
    if (r == AP_NONE) {
        c->failed = 1;
        goto push;
    }
    ap_func_row *row = &c->rows[r];
    const uint64_t *m = n->m;
    if (c->func[n->frame] != n->frame && n->up != NULL && n->up->id != 0 &&
        c->func[n->up->frame] == c->func[n->frame]) {
        row->self_ns += m[AP_M_SELF_NS];
        row->m[AP_M_SELF_NS] += m[AP_M_SELF_NS];
        for (size_t k = 0; k < sizeof line_memory / sizeof line_memory[0]; k++)
            row->m[line_memory[k]] += m[line_memory[k]];
        edge = EDGE_LINE;
        goto push;
    }
    int outer = c->active_row[r] == 0;
    row->calls += m[AP_M_CALLS];
    row->self_ns += m[AP_M_SELF_NS];
    if (outer) {
        row->prim_calls += m[AP_M_CALLS];
        row->total_ns += m[AP_M_TOTAL_NS];
        row->await_ns += m[AP_M_AWAIT_NS];
    }
    for (unsigned k = 0; k < AP_M_COUNT; k++)
        if (outer || ap_metric_get(k)->sum == AP_SUM_ALL)
            row->m[k] += m[k];
    c->active_row[r]++;
    if (n->up != NULL && n->up->id != 0) {
        uint32_t pr = c->row_of[c->func[n->up->frame]];
        edge = ft_edge(c, pr, r);
        if (edge == AP_NONE) {
            c->failed = 1;
            goto push;
        }
        ap_func_edge *e = &c->edges[edge];
        e->calls += m[AP_M_CALLS];
        e->self_ns += m[AP_M_SELF_NS];
        if (c->active_edge[edge] == 0) {
            e->prim_calls += m[AP_M_CALLS];
            e->total_ns += m[AP_M_TOTAL_NS];
        }
        c->active_edge[edge]++;
    }
push:
    if (GROW(c->edge_path, c->edge_path_cap, c->edge_path_len + 1) ||
        ap_prof_grow((void **)&c->acc, &c->acc_cap, c->edge_path_len + 1,
                     AP_M_COUNT * sizeof *c->acc)) {
        c->failed = 1;
        return;
    }
    memcpy(&c->acc[c->edge_path_len * AP_M_COUNT], n->m, AP_M_COUNT * sizeof *c->acc);
    c->edge_path[c->edge_path_len++] = edge;
}

static void ft_leave(const ap_node *n, void *arg) {
    ft_ctx *c = arg;
    if (c->edge_path_len == 0)
        return;
    uint32_t edge = c->edge_path[--c->edge_path_len];
    if (c->failed)
        return;
    /* The subtree of n is complete: its sums go to its parent's level and,
     * at the outermost occurrence, to its row and edge. */
    const uint64_t *acc = &c->acc[c->edge_path_len * AP_M_COUNT];
    if (c->edge_path_len > 0)
        for (unsigned k = 0; k < AP_M_COUNT; k++)
            c->acc[(c->edge_path_len - 1) * AP_M_COUNT + k] += acc[k];
    if (n->id == 0 || edge == EDGE_LINE)
        return;
    uint32_t r = c->row_of[c->func[n->frame]];
    if (c->active_row[r]-- == 1)
        for (unsigned k = 0; k < AP_M_COUNT; k++)
            c->rows[r].incl[k] += acc[k];
    if (edge != AP_NONE && c->active_edge[edge]-- == 1)
        for (unsigned k = 0; k < AP_M_COUNT; k++)
            c->edges[edge].incl[k] += acc[k];
}

static const ap_func_row *sort_rows_base;

static int row_cmp(const void *a, const void *b) {
    const ap_func_row *x = &sort_rows_base[*(const uint32_t *)a];
    const ap_func_row *y = &sort_rows_base[*(const uint32_t *)b];
    if (x->total_ns != y->total_ns)
        return x->total_ns > y->total_ns ? -1 : 1;
    return x->frame < y->frame ? -1 : x->frame > y->frame;
}

static int edge_cmp_in(const void *a, const void *b) {
    const ap_func_edge *x = a, *y = b;
    if (x->callee != y->callee)
        return x->callee < y->callee ? -1 : 1;
    return x->caller < y->caller ? -1 : x->caller > y->caller;
}

static int edge_cmp_out(const void *a, const void *b) {
    const ap_func_edge *x = a, *y = b;
    if (x->caller != y->caller)
        return x->caller < y->caller ? -1 : 1;
    return x->callee < y->callee ? -1 : x->callee > y->callee;
}

int ap_functab_build(ap_prof *p, int (*keep)(const ap_tree *t, void *arg), void *arg,
                     ap_functab *ft) {
    memset(ft, 0, sizeof *ft);
    ft_ctx c;
    memset(&c, 0, sizeof c);
    size_t nf;
    uint32_t *order = NULL, *rank = NULL;
    ap_frame_id *func = func_frames(p, &nf);
    if (func == NULL)
        return -1;
    c.func = func;
    c.row_of = malloc(nf * sizeof *c.row_of);
    if (c.row_of == NULL) {
        ap_err_set(AP_ENOMEM, "profile: out of memory");
        goto err;
    }
    memset(c.row_of, 0xff, nf * sizeof *c.row_of);
    for (size_t i = 0; i < p->ntrees; i++) {
        if (keep != NULL && !keep(p->trees[i], arg))
            continue;
        c.edge_path_len = 0;
        if (tree_walk(p->trees[i], &c.path, ft_enter, ft_leave, &c) != 0 || c.failed)
            goto err;
    }
    /* Sort rows, then renumber the edges' row indices and sort the edges. */
    size_t nr = c.nrows;
    order = malloc((nr ? nr : 1) * sizeof *order);
    rank = malloc((nr ? nr : 1) * sizeof *rank);
    ft->rows = malloc((nr ? nr : 1) * sizeof *ft->rows);
    ft->edges_in = malloc((c.nedges ? c.nedges : 1) * sizeof *ft->edges_in);
    ft->edges_out = malloc((c.nedges ? c.nedges : 1) * sizeof *ft->edges_out);
    if (order == NULL || rank == NULL || ft->rows == NULL || ft->edges_in == NULL ||
        ft->edges_out == NULL) {
        ap_err_set(AP_ENOMEM, "profile: out of memory");
        goto err;
    }
    for (size_t i = 0; i < nr; i++)
        order[i] = (uint32_t)i;
    sort_rows_base = c.rows;
    qsort(order, nr, sizeof *order, row_cmp);
    for (size_t i = 0; i < nr; i++) {
        rank[order[i]] = (uint32_t)i;
        ft->rows[i] = c.rows[order[i]];
    }
    for (size_t i = 0; i < c.nedges; i++) {
        ap_func_edge e = c.edges[i];
        e.caller = rank[e.caller];
        e.callee = rank[e.callee];
        ft->edges_in[i] = e;
        ft->edges_out[i] = e;
    }
    qsort(ft->edges_in, c.nedges, sizeof *ft->edges_in, edge_cmp_in);
    qsort(ft->edges_out, c.nedges, sizeof *ft->edges_out, edge_cmp_out);
    for (size_t i = c.nedges; i-- > 0;) {
        ap_func_row *in = &ft->rows[ft->edges_in[i].callee];
        in->callers_first = (uint32_t)i;
        in->ncallers++;
        ap_func_row *out = &ft->rows[ft->edges_out[i].caller];
        out->callees_first = (uint32_t)i;
        out->ncallees++;
    }
    ft->nrows = nr;
    ft->nedges = c.nedges;
    free(order);
    free(rank);
    free(func);
    free(c.row_of);
    free(c.rows);
    free(c.edges);
    free(c.active_row);
    free(c.active_edge);
    free(c.path.items);
    free(c.edge_path);
    free(c.acc);
    ap_map_free(&c.edge_index);
    return 0;
err:
    free(order);
    free(rank);
    free(func);
    free(c.row_of);
    free(c.rows);
    free(c.edges);
    free(c.active_row);
    free(c.active_edge);
    free(c.path.items);
    free(c.edge_path);
    free(c.acc);
    ap_map_free(&c.edge_index);
    ap_functab_free(ft);
    return -1;
}

void ap_functab_free(ap_functab *ft) {
    free(ft->rows);
    free(ft->edges_in);
    free(ft->edges_out);
    memset(ft, 0, sizeof *ft);
}

/* ---- line table --------------------------------------------------------------------- */

static const ap_prof *sort_lines_prof;

static int line_cmp(const void *a, const void *b) {
    const ap_prof *p = sort_lines_prof;
    const ap_line_row *x = a, *y = b;
    const ap_frame *fx = &p->frames[x->frame], *fy = &p->frames[y->frame];
    int c = strcmp(p->strs[fx->file], p->strs[fy->file]);
    if (c != 0)
        return c;
    if (fx->line != fy->line)
        return fx->line < fy->line ? -1 : 1;
    c = strcmp(p->strs[fx->qualname], p->strs[fy->qualname]);
    if (c != 0)
        return c;
    return fx->lineno < fy->lineno ? -1 : fx->lineno > fy->lineno;
}

int ap_lines_build(ap_prof *p, ap_line_row **rows_out, size_t *n_out) {
    *rows_out = NULL;
    *n_out = 0;
    size_t nf;
    ap_frame_id *func = func_frames(p, &nf);
    if (func == NULL)
        return -1;
    uint32_t *row_of = malloc((nf ? nf : 1) * sizeof *row_of);
    ap_line_row *rows = NULL;
    size_t nrows = 0, cap = 0;
    if (row_of == NULL)
        goto nomem;
    memset(row_of, 0xff, nf * sizeof *row_of);
    for (size_t ti = 0; ti < p->ntrees; ti++) {
        const ap_tree *t = p->trees[ti];
        for (size_t id = 1; id < t->nnodes; id++) {
            const ap_node *n = t->nodes[id];
            if (func[n->frame] == n->frame)
                continue;
            if (row_of[n->frame] == AP_NONE) {
                if (GROW(rows, cap, nrows + 1))
                    goto nomem;
                memset(&rows[nrows], 0, sizeof rows[nrows]);
                rows[nrows].frame = n->frame;
                rows[nrows].func = func[n->frame];
                row_of[n->frame] = (uint32_t)nrows++;
            }
            ap_line_row *r = &rows[row_of[n->frame]];
            r->hits += n->m[AP_M_HITS];
            r->time_ns += n->m[AP_M_SELF_NS];
            r->await_ns += n->m[AP_M_AWAIT_NS];
            r->alloc_bytes += n->m[AP_M_ALLOC_BYTES];
            r->alloc_count += n->m[AP_M_ALLOC_COUNT];
            r->live_bytes += n->m[AP_M_LIVE_BYTES];
            r->peak_bytes += n->m[AP_M_PEAK_BYTES];
            r->freed_bytes += n->m[AP_M_FREED_BYTES];
        }
    }
    sort_lines_prof = p;
    if (nrows > 1)
        qsort(rows, nrows, sizeof *rows, line_cmp);
    free(row_of);
    free(func);
    *rows_out = rows;
    *n_out = nrows;
    return 0;
nomem:
    free(rows);
    free(row_of);
    free(func);
    return ap_err_set(AP_ENOMEM, "profile: out of memory");
}

/* ---- selector ------------------------------------------------------------------------ */

int ap_selector_add(ap_prof *p, ap_selector *s, const char *key, const char *val) {
    if (s->n == AP_SELECT_MAX)
        return ap_err_set(AP_EINVAL, "select: at most %d labels", AP_SELECT_MAX);
    ap_str_id k = ap_prof_intern(p, key, strlen(key)), v = ap_prof_intern(p, val, strlen(val));
    if (k == AP_NONE || v == AP_NONE)
        return -1;
    s->key[s->n] = k;
    s->val[s->n] = v;
    s->n++;
    return 0;
}

int ap_selector_keep(const ap_tree *t, void *arg) {
    const ap_selector *s = arg;
    for (size_t i = 0; i < s->n; i++)
        if (ap_tree_label_get(t, s->key[i]) != s->val[i])
            return 0;
    return 1;
}

/* ---- database queries ----------------------------------------------------------------- */

const char *ap_query_kind_name(unsigned k) {
    static const char *const names[AP_QUERY_KINDS] = {"statement", "http"};
    return k < AP_QUERY_KINDS ? names[k] : NULL;
}

static uint64_t query_key(unsigned kind, ap_str_id statement, ap_str_id route, ap_frame_id site,
                          uint32_t line) {
    uint64_t k = ((uint64_t)statement << 32 | route) * 0x9E3779B97F4A7C15u;
    k ^= ((uint64_t)site << 32 | line) + 0x632BE59BD9B4E019u + (k << 6) + (k >> 2);
    return k ^ kind;
}

static int query_is(const ap_query *q, unsigned kind, ap_str_id statement, ap_str_id route,
                    ap_frame_id site, uint32_t line) {
    return q->statement == statement && q->route == route && q->site == site &&
           q->line == line && q->kind == kind;
}

/* The record of (kind, statement, route, site, line), made if new: found by
 * the hash of its key (a statement runs on the hot path, and a real app has
 * hundreds of shapes); two keys of one hash share the first one's slot in
 * the index, the second found by a scan. */
static ap_query *query_slot(ap_prof *p, unsigned kind, ap_str_id statement, ap_str_id route,
                            ap_frame_id site, uint32_t line) {
    uint64_t key = query_key(kind, statement, route, site, line);
    uint64_t *at = ap_map_get(&p->query_index, key);
    if (at != NULL) {
        ap_query *q = &p->queries[*at];
        if (query_is(q, kind, statement, route, site, line))
            return q;
        for (size_t i = p->nqueries; i-- > 0;)
            if (query_is(&p->queries[i], kind, statement, route, site, line))
                return &p->queries[i];
    }
    if (ap_prof_grow((void **)&p->queries, &p->query_cap, p->nqueries + 1, sizeof *p->queries) != 0)
        return NULL;
    if (at == NULL && ap_map_put(&p->query_index, key, p->nqueries) != 0)
        return NULL;
    ap_query *q = &p->queries[p->nqueries++];
    memset(q, 0, sizeof *q);
    q->statement = statement;
    q->route = route;
    q->site = site;
    q->line = line;
    q->kind = kind;
    return q;
}

int ap_prof_query_add(ap_prof *p, unsigned kind, ap_str_id statement, ap_str_id route,
                      ap_frame_id site, uint32_t line, uint64_t ns, uint64_t rows,
                      uint64_t request) {
    ap_query *q = query_slot(p, kind, statement, route, site, line);
    if (q == NULL)
        return -1;
    q->count++;
    q->total_ns += ns;
    q->rows += rows;
    if (request != 0) {
        if (request != q->last_request) {
            q->last_request = request;
            q->in_request = 0;
            q->requests++;
        }
        if (++q->in_request > q->max_per_request)
            q->max_per_request = q->in_request;
    }
    return 0;
}

int ap_prof_query_put(ap_prof *p, const ap_query *src) {
    ap_query *q = query_slot(p, src->kind, src->statement, src->route, src->site, src->line);
    if (q == NULL)
        return -1;
    q->count += src->count;
    q->total_ns += src->total_ns;
    q->rows += src->rows;
    q->requests += src->requests;
    if (src->max_per_request > q->max_per_request)
        q->max_per_request = src->max_per_request;
    return 0;
}

size_t ap_prof_nqueries(const ap_prof *p) {
    return p->nqueries;
}

const ap_query *ap_prof_query_at(const ap_prof *p, size_t i) {
    return i < p->nqueries ? &p->queries[i] : NULL;
}

static int ident_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '$' || (unsigned char)c >= 0x80;
}

/* A list of placeholders is one: "?, ?" or "?,?" at the end of out[0..o)
 * becomes "?".  Returns the new length. */
static size_t collapse(char *out, size_t o) {
    if (o >= 4 && memcmp(out + o - 4, "?, ?", 4) == 0)
        return o - 3;
    if (o >= 3 && memcmp(out + o - 3, "?,?", 3) == 0)
        return o - 2;
    return o;
}

size_t ap_query_normalise(const char *sql, size_t n, char *out, size_t cap) {
    size_t o = 0;
    if (cap == 0)
        return 0;
#define PUT(ch) ((o + 1 < cap) ? (void)(out[o++] = (ch)) : (void)0)
    for (size_t i = 0; i < n;) {
        char c = sql[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
            while (i < n && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' ||
                             sql[i] == '\r' || sql[i] == '\f'))
                i++;
            if (o > 0 && out[o - 1] != ' ')
                PUT(' ');
            continue;
        }
        if (c == '\'') { /* a string literal, '' inside it is a quote */
            for (i++; i < n; i++) {
                if (sql[i] == '\'' && i + 1 < n && sql[i + 1] == '\'')
                    i++;
                else if (sql[i] == '\'')
                    break;
            }
            i++;
            PUT('?');
            o = collapse(out, o);
            continue;
        }
        if (c >= '0' && c <= '9' && (o == 0 || !ident_char(out[o - 1]))) {
            while (i < n && (ident_char(sql[i]) || sql[i] == '.'))
                i++;
            PUT('?');
            o = collapse(out, o);
            continue;
        }
        PUT(c);
        i++;
        if (c == '?')
            o = collapse(out, o);
    }
#undef PUT
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
    return o;
}
