/* ap_map.c -- linear-probing uint64 -> uint64 hash map with backward-shift deletion; byte hashing. */
#include "ap_map.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"

#define MAP_MIN_CAP 8

/* Keys a table of cap slots holds before it must grow: floor(0.7 * cap). */
static size_t map_limit(size_t cap) {
    return cap / 10 * 7 + cap % 10 * 7 / 10;
}

/* Slot of key (nonzero) if present, else of the empty slot that ends its
 * probe sequence.  Precondition: m->slots != NULL. */
static size_t map_find(const ap_map *m, uint64_t key) {
    size_t mask = m->cap - 1;
    size_t i = (size_t)ap_hash_u64(key) & mask;
    while (m->slots[i].key != 0 && m->slots[i].key != key)
        i = (i + 1) & mask;
    return i;
}

/* Move every entry into a new table of new_cap slots.  0 or -1 (ENOMEM,
 * map unchanged). */
static int map_rehash(ap_map *m, size_t new_cap) {
    assert(new_cap >= MAP_MIN_CAP && (new_cap & (new_cap - 1)) == 0);
    ap_map_entry *slots = calloc(new_cap + 1, sizeof *slots);
    if (slots == NULL)
        return ap_err_set(AP_ENOMEM, "map: out of memory (%zu slots)", new_cap);
    ap_map old = *m;
    m->slots = slots;
    m->cap = new_cap;
    if (old.slots == NULL)
        return 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i].key != 0)
            slots[map_find(m, old.slots[i].key)] = old.slots[i];
    slots[new_cap] = old.slots[old.cap];
    free(old.slots);
    return 0;
}

int ap_map_init(ap_map *m, size_t capacity_hint) {
    assert(m != NULL);
    memset(m, 0, sizeof *m);
    if (capacity_hint == 0)
        return 0;
    if (capacity_hint > SIZE_MAX / 32)
        return ap_err_set(AP_ENOMEM, "map: capacity %zu is too large", capacity_hint);
    size_t cap = MAP_MIN_CAP;
    while (map_limit(cap) < capacity_hint)
        cap <<= 1;
    return map_rehash(m, cap);
}

void ap_map_free(ap_map *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

void ap_map_clear(ap_map *m) {
    if (m->slots != NULL)
        memset(m->slots, 0, (m->cap + 1) * sizeof *m->slots);
    m->used = 0;
    m->has_zero = 0;
}

uint64_t *ap_map_get(const ap_map *m, uint64_t key) {
    if (m->slots == NULL)
        return NULL;
    if (key == 0)
        return m->has_zero ? &m->slots[m->cap].val : NULL;
    size_t i = map_find(m, key);
    return m->slots[i].key == key ? &m->slots[i].val : NULL;
}

uint64_t *ap_map_upsert(ap_map *m, uint64_t key, uint64_t init, int *inserted) {
    int dummy;
    if (inserted == NULL)
        inserted = &dummy;
    *inserted = 0;
    if (m->slots == NULL && map_rehash(m, MAP_MIN_CAP) != 0)
        return NULL;
    if (key == 0) {
        ap_map_entry *z = &m->slots[m->cap];
        if (!m->has_zero) {
            m->has_zero = 1;
            z->val = init;
            *inserted = 1;
        }
        return &z->val;
    }
    size_t i = map_find(m, key);
    if (m->slots[i].key == key)
        return &m->slots[i].val;
    if (m->used + 1 > map_limit(m->cap)) {
        if (m->cap > SIZE_MAX / 2 / sizeof *m->slots) {
            ap_err_set(AP_ENOMEM, "map: cannot grow past %zu slots", m->cap);
            return NULL;
        }
        if (map_rehash(m, m->cap * 2) != 0)
            return NULL;
        i = map_find(m, key);
    }
    m->slots[i].key = key;
    m->slots[i].val = init;
    m->used++;
    *inserted = 1;
    return &m->slots[i].val;
}

int ap_map_put(ap_map *m, uint64_t key, uint64_t val) {
    uint64_t *v = ap_map_upsert(m, key, val, NULL);
    if (v == NULL)
        return -1;
    *v = val;
    return 0;
}

int ap_map_remove(ap_map *m, uint64_t key) {
    if (m->slots == NULL)
        return 0;
    if (key == 0) {
        int had = m->has_zero;
        m->has_zero = 0;
        m->slots[m->cap].val = 0;
        return had;
    }
    size_t mask = m->cap - 1;
    size_t hole = map_find(m, key);
    if (m->slots[hole].key != key)
        return 0;
    /* Backward shift: pull later entries of the cluster into the hole when
     * the hole lies between their home slot and where they sit, so that no
     * probe sequence crosses an empty slot. */
    for (size_t j = (hole + 1) & mask; m->slots[j].key != 0; j = (j + 1) & mask) {
        size_t home = (size_t)ap_hash_u64(m->slots[j].key) & mask;
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].key = 0;
    m->slots[hole].val = 0;
    m->used--;
    return 1;
}

size_t ap_map_size(const ap_map *m) {
    return m->used + (m->has_zero ? 1 : 0);
}

size_t ap_map_next(const ap_map *m, size_t pos, uint64_t *key, uint64_t *val) {
    if (m->slots == NULL)
        return 0;
    for (size_t i = pos; i < m->cap; i++) {
        if (m->slots[i].key != 0) {
            if (key != NULL)
                *key = m->slots[i].key;
            if (val != NULL)
                *val = m->slots[i].val;
            return i + 1;
        }
    }
    if (pos <= m->cap && m->has_zero) {
        if (key != NULL)
            *key = 0;
        if (val != NULL)
            *val = m->slots[m->cap].val;
        return m->cap + 1;
    }
    return 0;
}

/* ---- byte hash ----------------------------------------------------------- */

#define HASH_K1 0x9e3779b97f4a7c15u
#define HASH_K2 0xc2b2ae3d27d4eb4fu

static uint64_t load64(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

static uint64_t rotl64(uint64_t x, unsigned r) {
    return (x << r) | (x >> (64 - r));
}

/* One word into the state: multiply by odd constants (bijective) and rotate,
 * so no word can cancel the state. */
static uint64_t hash_round(uint64_t h, uint64_t w) {
    h ^= rotl64(w * HASH_K2, 31) * HASH_K1;
    return rotl64(h, 27) * HASH_K1 + HASH_K2;
}

uint64_t ap_hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = HASH_K2 ^ ((uint64_t)n * HASH_K1);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        h = hash_round(h, load64(s + i));
    if (i < n) {
        uint64_t w = 0;
        for (size_t j = 0; i + j < n; j++)
            w |= (uint64_t)s[i + j] << (8 * j);
        h = hash_round(h, w);
    }
    return ap_hash_u64(h);
}
