/* ap_routes.c -- per-route request statistics: a bounded keyed table of ap_hist entries, its encoding and exact merge. */
#include "ap_routes.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_map.h"
#include "ap_wait.h"

struct ap_routes {
    size_t max_keys;
    size_t n, cap;                                  /* entries in order of first use */
    ap_route_stat **entries;
    ap_map index;                                   /* key hash -> index into entries */
    ap_route_stat *overflow[AP_ROUTES_CLASSES];     /* also listed in entries once used */
};

ap_routes *ap_routes_new(size_t max_keys) {
    if (max_keys == 0) {
        ap_err_set(AP_EINVAL, "ap_routes_new: max_keys must be at least 1");
        return NULL;
    }
    ap_routes *t = calloc(1, sizeof *t);
    if (t == NULL) {
        ap_err_set(AP_ENOMEM, "ap_routes_new: out of memory");
        return NULL;
    }
    t->max_keys = max_keys;
    return t;
}

void ap_routes_free(ap_routes *t) {
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free(t->entries[i]->route);
        free(t->entries[i]);
    }
    free(t->entries);
    ap_map_free(&t->index);
    free(t);
}

static uint64_t key_hash(const char *route, size_t route_len, const char *method,
                         size_t method_len, unsigned cls) {
    return ap_hash_bytes(route, route_len) ^ ap_hash_u64(ap_hash_bytes(method, method_len) + cls);
}

static int key_equal(const ap_route_stat *s, const char *route, size_t route_len,
                     const char *method, size_t method_len, unsigned cls) {
    return s->status_class == cls && s->route_len == route_len &&
           (route_len == 0 || memcmp(s->route, route, route_len) == 0) &&
           strlen(s->method) == method_len &&
           (method_len == 0 || memcmp(s->method, method, method_len) == 0);
}

/* A new empty entry appended to t->entries; NULL with AP_ENOMEM. */
static ap_route_stat *append_entry(ap_routes *t, const char *route, size_t route_len,
                                   const char *method, size_t method_len, unsigned cls) {
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        ap_route_stat **e = realloc(t->entries, cap * sizeof *e);
        if (e == NULL)
            goto nomem;
        t->entries = e;
        t->cap = cap;
    }
    ap_route_stat *s = malloc(sizeof *s);
    if (s == NULL)
        goto nomem;
    s->route = malloc(route_len + 1);
    if (s->route == NULL) {
        free(s);
        goto nomem;
    }
    if (route_len)
        memcpy(s->route, route, route_len);
    s->route[route_len] = '\0';
    s->route_len = (uint32_t)route_len;
    s->status_class = (uint8_t)cls;
    memset(s->method, 0, sizeof s->method);
    if (method_len)
        memcpy(s->method, method, method_len);
    s->errors = s->cpu_ns = s->bytes_out = s->waited = 0;
    memset(s->wait_ns, 0, sizeof s->wait_ns);
    s->mem_requests = s->alloc_bytes = s->retained_bytes = s->live_bytes = 0;
    s->retained_max = s->stalls = s->stall_ns = s->stall_max_ns = 0;
    memset(s->stall_buckets, 0, sizeof s->stall_buckets);
    memset(s->stall_sites, 0, sizeof s->stall_sites);
    s->stall_cost_ns = s->delayed = s->delayed_ns = 0;
    ap_hist_init(&s->wall);
    t->entries[t->n++] = s;
    return s;
nomem:
    ap_err_set(AP_ENOMEM, "ap_routes: out of memory for a new route entry");
    return NULL;
}

ap_route_stat *ap_routes_get(ap_routes *t, const char *route, size_t route_len,
                             const char *method, size_t method_len, unsigned status_class) {
    assert(t != NULL);
    if (route_len > AP_ROUTES_ROUTE_MAX)
        route_len = AP_ROUTES_ROUTE_MAX;
    if (method_len > AP_ROUTES_METHOD_MAX)
        method_len = AP_ROUTES_METHOD_MAX;
    if (status_class >= AP_ROUTES_CLASSES)
        status_class = AP_ROUTES_CLASSES - 1;
    /* Probe successive hashes until the key or a free hash is found: two keys
     * with the same 64-bit hash are told apart by comparing them. */
    uint64_t h = key_hash(route, route_len, method, method_len, status_class);
    for (;;) {
        uint64_t *idx = ap_map_get(&t->index, h);
        if (idx == NULL)
            break;
        ap_route_stat *s = t->entries[*idx];
        if (key_equal(s, route, route_len, method, method_len, status_class))
            return s;
        h = ap_hash_u64(h + 1);
    }
    size_t keys = t->n;
    for (unsigned c = 0; c < AP_ROUTES_CLASSES; c++)
        keys -= t->overflow[c] != NULL;
    if (keys >= t->max_keys) {
        ap_route_stat *o = t->overflow[status_class];
        if (o == NULL) {
            o = append_entry(t, AP_ROUTES_OVERFLOW, strlen(AP_ROUTES_OVERFLOW), "*", 1,
                             status_class);
            t->overflow[status_class] = o;
        }
        return o;
    }
    if (ap_map_put(&t->index, h, t->n) < 0)
        return NULL;
    ap_route_stat *s = append_entry(t, route, route_len, method, method_len, status_class);
    if (s == NULL)
        ap_map_remove(&t->index, h);
    return s;
}

size_t ap_routes_size(const ap_routes *t) {
    return t->n;
}

const ap_route_stat *ap_routes_at(const ap_routes *t, size_t i) {
    assert(i < t->n);
    return t->entries[i];
}

void ap_routes_reset(ap_routes *t) {
    for (size_t i = 0; i < t->n; i++) {
        ap_route_stat *s = t->entries[i];
        s->errors = s->cpu_ns = s->bytes_out = s->waited = 0;
        s->mem_requests = s->alloc_bytes = s->retained_bytes = s->live_bytes = 0;
        s->retained_max = s->stalls = s->stall_ns = s->stall_max_ns = 0;
        memset(s->wait_ns, 0, sizeof s->wait_ns);
        memset(s->stall_buckets, 0, sizeof s->stall_buckets);
        memset(s->stall_sites, 0, sizeof s->stall_sites);
        s->stall_cost_ns = s->delayed = s->delayed_ns = 0;
        ap_hist_reset(&s->wall);
    }
}

void ap_routes_add_stall_site(ap_route_stat *s, const char *text, size_t len, uint64_t n,
                              uint64_t ns, uint64_t max_ns) {
    if (n == 0 || len == 0)
        return;
    if (len > AP_ROUTES_SITE_MAX)
        len = AP_ROUTES_SITE_MAX;
    ap_route_site *sites = s->stall_sites, *at = NULL;
    for (unsigned i = 0; i < AP_ROUTES_STALL_SITES && at == NULL; i++)
        if (sites[i].stalls != 0 && sites[i].len == len && memcmp(sites[i].text, text, len) == 0)
            at = &sites[i];
    if (at == NULL) {   /* an empty slot, else the one with the least time if this has more */
        at = &sites[AP_ROUTES_STALL_SITES - 1];
        for (unsigned i = 0; i < AP_ROUTES_STALL_SITES; i++)
            if (sites[i].stalls == 0 || sites[i].ns < at->ns) {
                at = &sites[i];
                if (at->stalls == 0)
                    break;
            }
        if (at->stalls != 0 && at->ns >= ns)
            return;
        at->stalls = at->ns = at->max_ns = 0;
        memcpy(at->text, text, len);
        at->text[len] = '\0';
        at->len = (uint16_t)len;
    }
    at->stalls += n;
    at->ns += ns;
    if (max_ns > at->max_ns)
        at->max_ns = max_ns;
    /* keep them by time, the most first (three: an insertion pass) */
    for (unsigned i = 1; i < AP_ROUTES_STALL_SITES; i++)
        for (unsigned j = i; j > 0 && sites[j].ns > sites[j - 1].ns; j--) {
            ap_route_site tmp = sites[j];
            sites[j] = sites[j - 1];
            sites[j - 1] = tmp;
        }
}

/* ---- encoding ----------------------------------------------------------------- */

static const uint8_t MAGIC[4] = {'A', 'P', 'R', 'T'};
#define FIXED_ENTRY_BYTES \
    (4 + 1 + 1 + 8 + 8 + 8 + 4 + 8 + 1 + 5 * 8 + 3 * 8 + 1 + AP_ROUTES_STALL_BUCKETS * 8 + 3 * 8 + 1)
#define SITE_FIXED_BYTES (3 * 8 + 2)
#define WAIT_NAME_MAX 32

_Static_assert(AP_WAIT_COUNT <= AP_ROUTES_WAITS, "AP_ROUTES_WAITS must hold every wait kind");

/* Bytes of the stall sites of s in the encoding (after nsites). */
static size_t sites_size(const ap_route_stat *s) {
    size_t n = 0;
    for (unsigned i = 0; i < AP_ROUTES_STALL_SITES; i++)
        if (s->stall_sites[i].stalls != 0)
            n += SITE_FIXED_BYTES + s->stall_sites[i].len;
    return n;
}

/* Bytes of the waits of s in the encoding (after nwaits). */
static size_t waits_size(const ap_route_stat *s) {
    size_t n = 0;
    for (unsigned k = 0; k < AP_WAIT_COUNT; k++)
        if (s->wait_ns[k] != 0)
            n += 1 + strlen(ap_wait_name(k)) + 8;
    return n;
}

size_t ap_routes_encoded_size(const ap_routes *t) {
    size_t n = sizeof MAGIC + 1 + 4;
    for (size_t i = 0; i < t->n; i++) {
        const ap_route_stat *s = t->entries[i];
        if (s->wall.count == 0)
            continue;
        n += FIXED_ENTRY_BYTES + s->route_len + strlen(s->method) + ap_hist_encoded_size(&s->wall) +
             waits_size(s) + sites_size(s);
    }
    return n;
}

const uint64_t ap_routes_stall_le_ns[AP_ROUTES_STALL_BUCKETS - 1] = {
    10000000u, 25000000u, 50000000u, 100000000u, 250000000u,
    500000000u, 1000000000u, 2500000000u, 5000000000u,
};

static uint8_t *put_le(uint8_t *p, uint64_t v, unsigned bytes) {
    for (unsigned i = 0; i < bytes; i++)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

size_t ap_routes_encode(const ap_routes *t, uint8_t *buf, size_t cap) {
    size_t need = ap_routes_encoded_size(t);
    if (cap < need) {
        ap_err_set(AP_ERANGE, "ap_routes_encode: buffer of %zu bytes, %zu needed", cap, need);
        return 0;
    }
    uint8_t *p = buf;
    memcpy(p, MAGIC, sizeof MAGIC);
    p += sizeof MAGIC;
    *p++ = AP_ROUTES_VERSION;
    uint8_t *count_at = p;
    p += 4;
    uint32_t written = 0;
    for (size_t i = 0; i < t->n; i++) {
        const ap_route_stat *s = t->entries[i];
        if (s->wall.count == 0)
            continue;
        size_t mlen = strlen(s->method);
        p = put_le(p, s->route_len, 4);
        memcpy(p, s->route, s->route_len);
        p += s->route_len;
        *p++ = (uint8_t)mlen;
        memcpy(p, s->method, mlen);
        p += mlen;
        *p++ = s->status_class;
        p = put_le(p, s->errors, 8);
        p = put_le(p, s->cpu_ns, 8);
        p = put_le(p, s->bytes_out, 8);
        size_t hlen = ap_hist_encoded_size(&s->wall);
        p = put_le(p, hlen, 4);
        size_t w = ap_hist_encode(&s->wall, p, hlen);
        assert(w == hlen);
        p += w;
        p = put_le(p, s->waited, 8);
        uint8_t *nwaits_at = p++;
        unsigned nwaits = 0;
        for (unsigned k = 0; k < AP_WAIT_COUNT; k++) {
            if (s->wait_ns[k] == 0)
                continue;
            const char *name = ap_wait_name(k);
            size_t nlen = strlen(name);
            *p++ = (uint8_t)nlen;
            memcpy(p, name, nlen);
            p += nlen;
            p = put_le(p, s->wait_ns[k], 8);
            nwaits++;
        }
        *nwaits_at = (uint8_t)nwaits;
        p = put_le(p, s->mem_requests, 8);
        p = put_le(p, s->alloc_bytes, 8);
        p = put_le(p, s->retained_bytes, 8);
        p = put_le(p, s->live_bytes, 8);
        p = put_le(p, s->retained_max, 8);
        p = put_le(p, s->stalls, 8);
        p = put_le(p, s->stall_ns, 8);
        p = put_le(p, s->stall_max_ns, 8);
        *p++ = AP_ROUTES_STALL_BUCKETS;
        for (unsigned b = 0; b < AP_ROUTES_STALL_BUCKETS; b++)
            p = put_le(p, s->stall_buckets[b], 8);
        p = put_le(p, s->stall_cost_ns, 8);
        p = put_le(p, s->delayed, 8);
        p = put_le(p, s->delayed_ns, 8);
        uint8_t *nsites_at = p++;
        unsigned nsites = 0;
        for (unsigned i = 0; i < AP_ROUTES_STALL_SITES; i++) {
            const ap_route_site *site = &s->stall_sites[i];
            if (site->stalls == 0)
                continue;
            p = put_le(p, site->stalls, 8);
            p = put_le(p, site->ns, 8);
            p = put_le(p, site->max_ns, 8);
            p = put_le(p, site->len, 2);
            memcpy(p, site->text, site->len);
            p += site->len;
            nsites++;
        }
        *nsites_at = (uint8_t)nsites;
        written++;
    }
    put_le(count_at, written, 4);
    assert((size_t)(p - buf) == need);
    return (size_t)(p - buf);
}

/* A cursor over [p, end) that fails (instead of reading past end) once
 * anything is short. */
typedef struct {
    const uint8_t *p, *end;
    int bad;
} reader;

static uint64_t get_le(reader *r, unsigned bytes) {
    if (r->bad || (size_t)(r->end - r->p) < bytes) {
        r->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += bytes;
    return v;
}

static const uint8_t *get_bytes(reader *r, uint64_t n) {
    if (r->bad || (uint64_t)(r->end - r->p) < n) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *q = r->p;
    r->p += n;
    return q;
}

/* One pass over the encoding: checks it when t is NULL, merges it into t
 * otherwise.  tmp is scratch space for one histogram.  0, or -1 with the
 * error set. */
static int walk(ap_routes *t, ap_hist *tmp, const uint8_t *buf, size_t len) {
    reader r = {buf, buf + len, 0};
    const uint8_t *magic = get_bytes(&r, sizeof MAGIC);
    if (magic == NULL || memcmp(magic, MAGIC, sizeof MAGIC) != 0)
        return ap_err_set(AP_ECORRUPT, "route statistics: bad magic");
    uint64_t version = get_le(&r, 1);
    if (!r.bad && (version < 1 || version > AP_ROUTES_VERSION))
        return ap_err_set(AP_ECORRUPT, "route statistics: version %llu, expected 1 to %d",
                          (unsigned long long)version, AP_ROUTES_VERSION);
    uint64_t n = get_le(&r, 4);
    for (uint64_t i = 0; i < n && !r.bad; i++) {
        uint64_t rlen = get_le(&r, 4);
        if (rlen > AP_ROUTES_ROUTE_MAX)
            return ap_err_set(AP_ECORRUPT, "route statistics: route of %llu bytes",
                              (unsigned long long)rlen);
        const uint8_t *route = get_bytes(&r, rlen);
        uint64_t mlen = get_le(&r, 1);
        if (mlen > AP_ROUTES_METHOD_MAX)
            return ap_err_set(AP_ECORRUPT, "route statistics: method of %llu bytes",
                              (unsigned long long)mlen);
        const uint8_t *method = get_bytes(&r, mlen);
        uint64_t cls = get_le(&r, 1);
        uint64_t errors = get_le(&r, 8), cpu = get_le(&r, 8), bytes = get_le(&r, 8);
        uint64_t hlen = get_le(&r, 4);
        const uint8_t *hbuf = get_bytes(&r, hlen);
        uint64_t waited = 0, wait_ns[AP_ROUTES_WAITS] = {0};
        if (version >= 2) {
            waited = get_le(&r, 8);
            uint64_t nwaits = get_le(&r, 1);
            for (uint64_t w = 0; w < nwaits && !r.bad; w++) {
                uint64_t nlen = get_le(&r, 1);
                if (nlen > WAIT_NAME_MAX)
                    return ap_err_set(AP_ECORRUPT, "route statistics: wait kind of %llu bytes",
                                      (unsigned long long)nlen);
                const uint8_t *name = get_bytes(&r, nlen);
                uint64_t ns = get_le(&r, 8);
                if (r.bad)
                    break;
                char buf[WAIT_NAME_MAX + 1];
                memcpy(buf, name, nlen);
                buf[nlen] = '\0';
                unsigned k = ap_wait_by_name(buf);
                if (k < AP_WAIT_COUNT)   /* a kind this reader does not know is dropped */
                    wait_ns[k] += ns;
            }
        }
        uint64_t mem[5] = {0, 0, 0, 0, 0};   /* requests, alloc, retained, live, max */
        uint64_t stall[3] = {0, 0, 0};       /* count, ns, max ns */
        if (version >= 3) {
            for (unsigned k = 0; k < 5; k++)
                mem[k] = get_le(&r, 8);
            for (unsigned k = 0; k < 3; k++)
                stall[k] = get_le(&r, 8);
        }
        uint64_t buckets[AP_ROUTES_STALL_BUCKETS] = {0};
        if (version >= 4) {
            uint64_t nb = get_le(&r, 1);
            if (!r.bad && nb != AP_ROUTES_STALL_BUCKETS)
                return ap_err_set(AP_ECORRUPT, "route statistics: %llu stall buckets, expected %d",
                                  (unsigned long long)nb, AP_ROUTES_STALL_BUCKETS);
            for (unsigned b = 0; b < AP_ROUTES_STALL_BUCKETS; b++)
                buckets[b] = get_le(&r, 8);
        }
        struct {
            uint64_t n, ns, max;
            uint64_t len;
            const uint8_t *text;
        } sites[AP_ROUTES_STALL_SITES];
        uint64_t nsites = 0, site_stalls = 0, delays[3] = {0, 0, 0};   /* cost, delayed, ns */
        if (version >= 5) {
            for (unsigned k = 0; k < 3; k++)
                delays[k] = get_le(&r, 8);
            nsites = get_le(&r, 1);
            if (!r.bad && nsites > AP_ROUTES_STALL_SITES)
                return ap_err_set(AP_ECORRUPT, "route statistics: %llu stall sites, at most %d",
                                  (unsigned long long)nsites, AP_ROUTES_STALL_SITES);
            for (uint64_t k = 0; k < nsites && !r.bad; k++) {
                sites[k].n = get_le(&r, 8);
                sites[k].ns = get_le(&r, 8);
                sites[k].max = get_le(&r, 8);
                sites[k].len = get_le(&r, 2);
                if (!r.bad && (sites[k].n == 0 || sites[k].len == 0 ||
                               sites[k].len > AP_ROUTES_SITE_MAX))
                    return ap_err_set(AP_ECORRUPT, "route statistics: a stall site of %llu "
                                      "stalls and %llu bytes", (unsigned long long)sites[k].n,
                                      (unsigned long long)sites[k].len);
                sites[k].text = get_bytes(&r, sites[k].len);
                if (sites[k].n > UINT64_MAX - site_stalls)
                    return ap_err_set(AP_ECORRUPT, "route statistics: more stalls at sites than stalls");
                site_stalls += sites[k].n;
            }
        }
        if (r.bad)
            break;
        if (cls >= AP_ROUTES_CLASSES)
            return ap_err_set(AP_ECORRUPT, "route statistics: status class %llu",
                              (unsigned long long)cls);
        if (ap_hist_decode(tmp, hbuf, hlen) < 0)
            return ap_err_set(AP_ECORRUPT, "route statistics: %s", ap_err_msg());
        if (errors > tmp->count)
            return ap_err_set(AP_ECORRUPT, "route statistics: more errors than requests");
        if (mem[0] > tmp->count)
            return ap_err_set(AP_ECORRUPT, "route statistics: more sampled than requests");
        uint64_t left = stall[0];   /* the stalls no bucket has counted yet */
        for (unsigned b = 0; b < AP_ROUTES_STALL_BUCKETS; b++) {
            if (buckets[b] > left)
                return ap_err_set(AP_ECORRUPT, "route statistics: more stall durations than stalls");
            left -= buckets[b];
        }
        if (site_stalls > stall[0])
            return ap_err_set(AP_ECORRUPT, "route statistics: more stalls at sites than stalls");
        if (delays[1] > tmp->count)
            return ap_err_set(AP_ECORRUPT, "route statistics: more delayed than requests");
        if (t == NULL)
            continue;
        ap_route_stat *s = ap_routes_get(t, (const char *)route, rlen, (const char *)method,
                                         mlen, (unsigned)cls);
        if (s == NULL)
            return -1;
        ap_hist_merge(&s->wall, tmp);
        s->errors += errors;
        s->cpu_ns += cpu;
        s->bytes_out += bytes;
        s->waited += waited;
        for (unsigned k = 0; k < AP_ROUTES_WAITS; k++)
            s->wait_ns[k] += wait_ns[k];
        s->mem_requests += mem[0];
        s->alloc_bytes += mem[1];
        s->retained_bytes += mem[2];
        s->live_bytes += mem[3];
        if (mem[4] > s->retained_max)
            s->retained_max = mem[4];
        ap_routes_add_stalls(s, stall[0], stall[1], stall[2], buckets);
        s->stall_cost_ns += delays[0];
        s->delayed += delays[1];
        s->delayed_ns += delays[2];
        for (uint64_t k = 0; k < nsites; k++)
            ap_routes_add_stall_site(s, (const char *)sites[k].text, sites[k].len, sites[k].n,
                                     sites[k].ns, sites[k].max);
    }
    if (r.bad)
        return ap_err_set(AP_ECORRUPT, "route statistics: truncated");
    if (r.p != r.end)
        return ap_err_set(AP_ECORRUPT, "route statistics: %zu trailing bytes",
                          (size_t)(r.end - r.p));
    return 0;
}

int ap_routes_merge_encoded(ap_routes *t, const uint8_t *buf, size_t len) {
    assert(t != NULL && (buf != NULL || len == 0));
    ap_hist *tmp = ap_hist_new();
    if (tmp == NULL)
        return -1;
    int rc = walk(NULL, tmp, buf, len);
    if (rc == 0)
        rc = walk(t, tmp, buf, len);
    ap_hist_free(tmp);
    return rc;
}
