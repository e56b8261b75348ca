/* ap_hist.h -- fixed-size log-linear (HDR-style) histogram of uint64 values, with a compact encoding. */
#ifndef AP_HIST_H
#define AP_HIST_H

#include <stddef.h>
#include <stdint.h>

/* Bucket layout.  Values 0..127 have a bucket each (exact).  Each range
 * [2^k, 2^(k+1)) for k = 7..AP_HIST_MAX_EXP is split into 128 linear
 * sub-buckets of width 2^(k-7), so a bucket midpoint is within 1/256 (0.4%)
 * of any value in the bucket.  Values >= 2^(AP_HIST_MAX_EXP+1) = 2^45 ns
 * (about 9.8 hours) are counted in the top bucket; min, max and sum stay
 * exact for them.  The layout is part of the encoding: changing it means a
 * new AP_HIST_VERSION. */
#define AP_HIST_SUB_BITS 7
#define AP_HIST_SUB (1u << AP_HIST_SUB_BITS)           /* 128 */
#define AP_HIST_MAX_EXP 44
#define AP_HIST_BUCKETS ((AP_HIST_MAX_EXP - AP_HIST_SUB_BITS + 2) * AP_HIST_SUB)   /* 4992 */

/* A histogram is plain data (no pointers, no padding), so it can be embedded
 * in other structs or placed in shared memory, and copied with memcpy.
 * Empty state: count = sum = max = 0 and min = UINT64_MAX.  Not thread-safe:
 * the owner serialises updates (merge per-thread histograms instead). */
typedef struct ap_hist {
    uint64_t count;   /* number of recorded values */
    uint64_t sum;     /* exact sum, modulo 2^64 (584 years of nanoseconds) */
    uint64_t min;     /* exact; UINT64_MAX when empty */
    uint64_t max;     /* exact; 0 when empty */
    uint64_t counts[AP_HIST_BUCKETS];
} ap_hist;

/* Make *h empty.  ap_hist_reset() is the same operation, named for reuse.
 * Can't fail. */
void ap_hist_init(ap_hist *h);
void ap_hist_reset(ap_hist *h);

/* A new empty heap histogram (about 40 KB), to release with ap_hist_free().
 * On error, NULL is returned with AP_ENOMEM. */
ap_hist *ap_hist_new(void);

/* Release a histogram from ap_hist_new(); NULL is ignored.  Can't fail. */
void ap_hist_free(ap_hist *h);

/* Index of the bucket that counts v, in [0, AP_HIST_BUCKETS).  Can't fail. */
static inline size_t ap_hist_bucket_index(uint64_t v) {
    if (v < AP_HIST_SUB)
        return (size_t)v;
    unsigned k = 63u - (unsigned)__builtin_clzll(v);          /* 2^k <= v */
    if (k > AP_HIST_MAX_EXP)
        return AP_HIST_BUCKETS - 1;
    size_t sub = (size_t)(v >> (k - AP_HIST_SUB_BITS)) - AP_HIST_SUB;
    return (size_t)(k - AP_HIST_SUB_BITS + 1) * AP_HIST_SUB + sub;
}

/* Smallest and largest value (both inclusive) that map to bucket i; for the
 * top bucket, high is 2^45 - 1 although larger values are clamped into it.
 * Precondition: i < AP_HIST_BUCKETS.  Can't fail. */
uint64_t ap_hist_bucket_low(size_t i);
uint64_t ap_hist_bucket_high(size_t i);

/* Record n occurrences of value v (n = 0 does nothing).  No allocation, no
 * lock; counts and sum wrap modulo 2^64.  Can't fail. */
static inline void ap_hist_record_n(ap_hist *h, uint64_t v, uint64_t n) {
    if (n == 0)
        return;
    h->count += n;
    h->sum += v * n;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->counts[ap_hist_bucket_index(v)] += n;
}

static inline void ap_hist_record(ap_hist *h, uint64_t v) {
    ap_hist_record_n(h, v, 1);
}

/* Add every value of src to dst (exact, bucket by bucket).  dst == src
 * doubles the counts.  Can't fail. */
void ap_hist_merge(ap_hist *dst, const ap_hist *src);

/* Summary accessors; on an empty histogram each returns 0 (0.0 for the
 * mean).  Can't fail. */
uint64_t ap_hist_count(const ap_hist *h);
uint64_t ap_hist_min(const ap_hist *h);
uint64_t ap_hist_max(const ap_hist *h);
uint64_t ap_hist_sum(const ap_hist *h);
double ap_hist_mean(const ap_hist *h);

/* The p-th percentile, p in [0, 100] (values outside are clamped, NaN counts
 * as 0).  The value of rank r = ceil(p/100 * count) (at least 1) is found and
 * the midpoint of its bucket is returned, clamped to [min, max]: within 0.4%
 * of the true value for values below 2^45.  p = 0 returns the exact min,
 * p = 100 the exact max, an empty histogram 0.  Can't fail. */
uint64_t ap_hist_percentile(const ap_hist *h, double p);

/* Encoding, version AP_HIST_VERSION.  Integers are unsigned LEB128 varints
 * (7 bits per byte, least significant group first, high bit = more follows,
 * at most 10 bytes):
 *
 *   u8      version            = 1
 *   varint  count
 *   varint  sum
 *   varint  min                (UINT64_MAX when count = 0)
 *   varint  max
 *   varint  npairs             number of non-empty buckets
 *   npairs times:
 *     varint  gap              bucket index - (previous index + 1); the
 *                              previous index of the first pair is -1
 *     varint  n                bucket count, >= 1
 *
 * The encoding is canonical for a given histogram and little-endian free.
 * An empty histogram takes 15 bytes. */
#define AP_HIST_VERSION 1

/* Exact number of bytes ap_hist_encode() writes for h.  Can't fail. */
size_t ap_hist_encoded_size(const ap_hist *h);

/* Write the encoding of h into buf.  Returns the number of bytes written; on
 * error (cap < ap_hist_encoded_size(h)) returns 0 with AP_ERANGE and buf's
 * contents are unspecified. */
size_t ap_hist_encode(const ap_hist *h, uint8_t *buf, size_t cap);

/* Replace *h with the histogram encoded in exactly len bytes of buf.  Returns
 * 0; on error returns -1 with AP_ECORRUPT and leaves *h untouched.  Any input
 * is safe: bytes past len are never read.  Rejected: another version,
 * truncated or overlong varints, trailing bytes, bucket indices out of range,
 * zero bucket counts, bucket counts that do not add up to count, min or max
 * outside the first or last non-empty bucket. */
int ap_hist_decode(ap_hist *h, const uint8_t *buf, size_t len);

#endif /* AP_HIST_H */
