/* ap_map.h -- open-addressing hash map from uint64 keys to uint64 values, and a byte hash. */
#ifndef AP_MAP_H
#define AP_MAP_H

#include <stddef.h>
#include <stdint.h>

/* One slot of the table.  Key 0 marks an empty table slot; the key 0 itself
 * lives in the extra slot slots[cap], so every uint64 key is allowed. */
typedef struct ap_map_entry {
    uint64_t key;
    uint64_t val;
} ap_map_entry;

/* Linear probing over a power-of-two table, hashed with the splitmix64
 * finalizer, load factor at most 0.7 (the table doubles when an insert would
 * pass it), deletion by backward shift (no tombstones, so lookups never slow
 * down after removals).  Not thread-safe: one owner.  A zero-filled struct is
 * a valid empty map, as is one after ap_map_free(). */
typedef struct ap_map {
    ap_map_entry *slots;   /* cap + 1 entries, or NULL before the first insert */
    size_t cap;            /* table slots, a power of two (0 when slots is NULL) */
    size_t used;           /* occupied table slots (key 0 not included) */
    int has_zero;          /* whether key 0 is present, in slots[cap] */
} ap_map;

/* Make an empty map with room for capacity_hint keys before it grows (0 is
 * fine: the table is then allocated at the first insert).  Returns 0; on
 * error returns -1 with AP_ENOMEM and the map is empty but usable. */
int ap_map_init(ap_map *m, size_t capacity_hint);

/* Release the table; the map is left empty and usable.  Can't fail. */
void ap_map_free(ap_map *m);

/* Remove every key, keeping the table's capacity.  Can't fail. */
void ap_map_clear(ap_map *m);

/* Pointer to the value of key, or NULL if key is absent.  The pointer may be
 * written through and stays valid until the next ap_map_put, ap_map_upsert,
 * ap_map_remove, ap_map_clear or ap_map_free.  Can't fail. */
uint64_t *ap_map_get(const ap_map *m, uint64_t key);

/* Set key to val, inserting or overwriting.  Returns 0; on error (growth
 * failed) returns -1 with AP_ENOMEM and the map is unchanged. */
int ap_map_put(ap_map *m, uint64_t key, uint64_t val);

/* Pointer to the value of key, inserting key with value init first if it is
 * absent.  *inserted (if inserted is not NULL) is set to 1 if key was
 * inserted, 0 if it was present.  Pointer validity as for ap_map_get().  On
 * error (growth failed) NULL is returned with AP_ENOMEM and the map is
 * unchanged. */
uint64_t *ap_map_upsert(ap_map *m, uint64_t key, uint64_t init, int *inserted);

/* Remove key.  Returns 1 if it was removed, 0 if it was absent.  Can't fail. */
int ap_map_remove(ap_map *m, uint64_t key);

/* Number of keys.  Can't fail. */
size_t ap_map_size(const ap_map *m);

/* Iteration.  A position is an index into the slots plus one; 0 is "before
 * the first slot".  ap_map_next() looks for the first occupied slot at or
 * after position pos, stores its key and value in *key and *val (either may be
 * NULL) and returns the position after it; when there is none it returns 0.
 * So:
 *     uint64_t k, v;
 *     for (size_t pos = 0; (pos = ap_map_next(m, pos, &k, &v)) != 0;) ...
 * visits every key exactly once, in no particular order.  The map must not be
 * modified during the loop, except by writing values through ap_map_get().
 * Can't fail. */
size_t ap_map_next(const ap_map *m, size_t pos, uint64_t *key, uint64_t *val);

/* A fast 64-bit hash of the n bytes at p (p may be NULL if n is 0), the same
 * on every run and platform of the same endianness; not for adversarial
 * input.  Can't fail. */
uint64_t ap_hash_bytes(const void *p, size_t n);

/* The splitmix64 finalizer: a bijective mixer of 64-bit integers.
 * Can't fail. */
static inline uint64_t ap_hash_u64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

#endif /* AP_MAP_H */
