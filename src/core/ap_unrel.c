/* ap_unrel.c -- unreleased objects of a profile: storage, copies, the native UNRL chunk and the JSON "unreleased_objects". */
#include "ap_unrel.h"

#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_prof_int.h"

#define GROW(arr, cap, need) ap_prof_grow((void **)&(arr), &(cap), (need), sizeof *(arr))

/* Owned by the profile; NULL until the first record. */
struct ap_unrels {
    ap_unrel *items;
    size_t n, cap;
    ap_map index;   /* key hash -> index of the first record with that hash */
};

static uint64_t key_hash(const ap_unrel *r) {
    return ap_hash_u64(((uint64_t)r->type << 32 | r->site) ^ ap_hash_u64(r->route));
}

static int same_key(const ap_unrel *a, const ap_unrel *b) {
    return a->type == b->type && a->site == b->site && a->route == b->route;
}

int ap_prof_unrel_add(ap_prof *p, const ap_unrel *r) {
    if (p->unrel == NULL && (p->unrel = calloc(1, sizeof *p->unrel)) == NULL)
        return ap_err_set(AP_ENOMEM, "unreleased objects: out of memory");
    struct ap_unrels *u = p->unrel;
    uint64_t h = key_hash(r);
    uint64_t *first = ap_map_get(&u->index, h);
    if (first != NULL) {
        /* the record with that hash, else (a collision) any with the key */
        for (size_t i = (size_t)*first; i < u->n; i++)
            if (same_key(&u->items[i], r)) {
                u->items[i].count += r->count;
                u->items[i].bytes += r->bytes;
                return 0;
            }
    }
    if (GROW(u->items, u->cap, u->n + 1) != 0)
        return -1;
    if (first == NULL && ap_map_put(&u->index, h, u->n) != 0)
        return ap_err_set(AP_ENOMEM, "unreleased objects: out of memory");
    u->items[u->n++] = *r;
    return 0;
}

size_t ap_prof_nunrel(const ap_prof *p) {
    return p->unrel != NULL ? p->unrel->n : 0;
}

const ap_unrel *ap_prof_unrel_at(const ap_prof *p, size_t i) {
    return &p->unrel->items[i];
}

int ap_unrel_copy(ap_prof *dst, const ap_prof *src) {
    for (size_t i = 0; i < ap_prof_nunrel(src); i++)
        if (ap_prof_unrel_add(dst, ap_prof_unrel_at(src, i)) != 0)
            return -1;
    return 0;
}

void ap_unrel_free(ap_prof *p) {
    if (p->unrel == NULL)
        return;
    free(p->unrel->items);
    ap_map_free(&p->unrel->index);
    free(p->unrel);
    p->unrel = NULL;
}

/* ---- the UNRL chunk ------------------------------------------------------------
 * varint count, then per record five varints: type, site, route, count,
 * bytes. */

void ap_unrel_encode(const ap_prof *p, ap_sbuf *b) {
    size_t n = ap_prof_nunrel(p);
    ap_sbuf_varint(b, n);
    for (size_t i = 0; i < n; i++) {
        const ap_unrel *r = ap_prof_unrel_at(p, i);
        ap_sbuf_varint(b, r->type);
        ap_sbuf_varint(b, r->site);
        ap_sbuf_varint(b, r->route);
        ap_sbuf_varint(b, r->count);
        ap_sbuf_varint(b, r->bytes);
    }
}

int ap_unrel_decode(ap_prof *p, const uint8_t *pos, const uint8_t *end) {
    uint64_t n;
    if (ap_varint_get(&pos, end, &n) != 0 || n > (uint64_t)(end - pos) / 5)
        return ap_err_set(AP_ECORRUPT, "unreleased objects chunk header is invalid");
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v[5];
        for (int k = 0; k < 5; k++)
            if (ap_varint_get(&pos, end, &v[k]) != 0)
                return ap_err_set(AP_ECORRUPT, "unreleased object %llu is invalid",
                                  (unsigned long long)i);
        if (v[0] == 0 || v[0] >= p->nstrs || v[1] >= p->nframes || v[2] >= p->nstrs)
            return ap_err_set(AP_ECORRUPT, "unreleased object %llu is invalid",
                              (unsigned long long)i);
        ap_unrel r = {(ap_str_id)v[0], (ap_frame_id)v[1], (ap_str_id)v[2], v[3], v[4]};
        if (ap_prof_unrel_add(p, &r) != 0)
            return -1;
    }
    return pos == end ? 0 : ap_err_set(AP_ECORRUPT, "unreleased objects chunk has trailing bytes");
}

/* ---- JSON ---------------------------------------------------------------------- */

typedef struct type_total {
    ap_str_id type;
    uint64_t count, bytes;
} type_total;

static int by_bytes_desc(uint64_t a, uint64_t b, uint32_t ka, uint32_t kb) {
    return a != b ? (a < b ? 1 : -1) : (ka > kb) - (ka < kb);
}

static int total_cmp(const void *x, const void *y) {
    const type_total *a = x, *b = y;
    return by_bytes_desc(a->bytes, b->bytes, a->type, b->type);
}

static const ap_prof *sort_prof;

static int rec_cmp(const void *x, const void *y) {
    const ap_unrel *a = ap_prof_unrel_at(sort_prof, *(const size_t *)x);
    const ap_unrel *b = ap_prof_unrel_at(sort_prof, *(const size_t *)y);
    int c = by_bytes_desc(a->bytes, b->bytes, a->site, b->site);
    return c != 0 ? c : (a->route > b->route) - (a->route < b->route);
}

static void json_site(const ap_prof *p, const ap_unrel *r, ap_sbuf *out) {
    const ap_frame *f = r->site != 0 ? ap_prof_frame(p, r->site) : NULL;
    ap_sbuf_puts(out, "{\"function\": ");
    if (f != NULL)
        ap_sbuf_json_str(out, ap_prof_frame_qualname(p, r->site));
    else
        ap_sbuf_puts(out, "null");
    ap_sbuf_puts(out, ", \"file\": ");
    if (f != NULL)
        ap_sbuf_json_str(out, ap_prof_str(p, f->file));
    else
        ap_sbuf_puts(out, "null");
    ap_sbuf_printf(out, ", \"line\": %u, \"route\": ", f != NULL ? (f->lineno ? f->lineno : f->line) : 0);
    if (r->route != 0)
        ap_sbuf_json_str(out, ap_prof_str(p, r->route));
    else
        ap_sbuf_puts(out, "null");
    ap_sbuf_printf(out, ", \"count\": %llu, \"bytes\": %llu}", (unsigned long long)r->count,
                   (unsigned long long)r->bytes);
}

int ap_unrel_json(const ap_prof *p, ap_sbuf *out) {
    return ap_unrel_json_of(p, 0, out);
}

int ap_unrel_json_of(const ap_prof *p, int requests, ap_sbuf *out) {
    size_t n = ap_prof_nunrel(p), ntypes = 0;
    type_total *types = malloc((n ? n : 1) * sizeof *types);
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    ap_map slot = {0};   /* type string id -> index in types */
    if (types == NULL || order == NULL)
        goto nomem;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        const ap_unrel *r = ap_prof_unrel_at(p, i);
        if (requests && r->route == 0)
            continue;
        int inserted;
        uint64_t *v = ap_map_upsert(&slot, r->type, ntypes, &inserted);
        if (v == NULL)
            goto nomem;
        if (inserted)
            types[ntypes++] = (type_total){r->type, 0, 0};
        types[*v].count += r->count;
        types[*v].bytes += r->bytes;
        order[kept++] = i;
    }
    n = kept;   /* order holds the records kept */
    qsort(types, ntypes, sizeof *types, total_cmp);
    sort_prof = p;
    qsort(order, n, sizeof *order, rec_cmp);
    ap_sbuf_putc(out, '[');
    for (size_t t = 0; t < ntypes && t < AP_UNREL_TYPES_MAX; t++) {
        ap_sbuf_puts(out, t ? ",\n  {\"type\": " : "\n  {\"type\": ");
        ap_sbuf_json_str(out, ap_prof_str(p, types[t].type));
        ap_sbuf_printf(out, ", \"count\": %llu, \"bytes\": %llu, \"sites\": [",
                       (unsigned long long)types[t].count, (unsigned long long)types[t].bytes);
        size_t shown = 0;
        for (size_t i = 0; i < n && shown < AP_UNREL_SITES_MAX; i++) {
            const ap_unrel *r = ap_prof_unrel_at(p, order[i]);
            if (r->type != types[t].type)
                continue;
            if (shown++)
                ap_sbuf_puts(out, ", ");
            json_site(p, r, out);
        }
        ap_sbuf_puts(out, "]}");
    }
    ap_sbuf_putc(out, ']');
    free(types);
    free(order);
    ap_map_free(&slot);
    return 0;
nomem:
    free(types);
    free(order);
    ap_map_free(&slot);
    return ap_err_set(AP_ENOMEM, "unreleased objects: out of memory");
}
