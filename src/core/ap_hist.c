/* ap_hist.c -- log-linear histogram: merge, percentiles, and the versioned varint encoding. */
#include "ap_hist.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_sbuf.h"

void ap_hist_init(ap_hist *h) {
    assert(h != NULL);
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

void ap_hist_reset(ap_hist *h) {
    ap_hist_init(h);
}

ap_hist *ap_hist_new(void) {
    ap_hist *h = malloc(sizeof *h);
    if (h == NULL) {
        ap_err_set(AP_ENOMEM, "ap_hist_new: out of memory (%zu bytes)", sizeof *h);
        return NULL;
    }
    ap_hist_init(h);
    return h;
}

void ap_hist_free(ap_hist *h) {
    free(h);
}

uint64_t ap_hist_bucket_low(size_t i) {
    assert(i < AP_HIST_BUCKETS);
    if (i < AP_HIST_SUB)
        return i;
    unsigned k = (unsigned)(i / AP_HIST_SUB) + AP_HIST_SUB_BITS - 1;
    uint64_t sub = i % AP_HIST_SUB;
    return (AP_HIST_SUB + sub) << (k - AP_HIST_SUB_BITS);
}

uint64_t ap_hist_bucket_high(size_t i) {
    assert(i < AP_HIST_BUCKETS);
    if (i < AP_HIST_SUB)
        return i;
    unsigned k = (unsigned)(i / AP_HIST_SUB) + AP_HIST_SUB_BITS - 1;
    return ap_hist_bucket_low(i) + ((uint64_t)1 << (k - AP_HIST_SUB_BITS)) - 1;
}

void ap_hist_merge(ap_hist *dst, const ap_hist *src) {
    assert(dst != NULL && src != NULL);
    if (src->count == 0)
        return;
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    for (size_t i = 0; i < AP_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
}

uint64_t ap_hist_count(const ap_hist *h) {
    return h->count;
}

uint64_t ap_hist_min(const ap_hist *h) {
    return h->count ? h->min : 0;
}

uint64_t ap_hist_max(const ap_hist *h) {
    return h->count ? h->max : 0;
}

uint64_t ap_hist_sum(const ap_hist *h) {
    return h->sum;
}

double ap_hist_mean(const ap_hist *h) {
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}

uint64_t ap_hist_percentile(const ap_hist *h, double p) {
    if (h->count == 0)
        return 0;
    if (!(p > 0.0))             /* also NaN */
        return h->min;
    if (p >= 100.0)
        return h->max;
    double r = ceil(p / 100.0 * (double)h->count);
    uint64_t rank = r < 1.0 ? 1 : (r >= (double)h->count ? h->count : (uint64_t)r);
    uint64_t seen = 0;
    for (size_t i = 0; i < AP_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen < rank)
            continue;
        uint64_t lo = ap_hist_bucket_low(i), hi = ap_hist_bucket_high(i);
        uint64_t mid = lo + (hi - lo) / 2;
        return mid < h->min ? h->min : (mid > h->max ? h->max : mid);
    }
    return h->max;              /* counts do not add up: only after wraparound */
}

/* ---- encoding ---------------------------------------------------------- */

size_t ap_hist_encoded_size(const ap_hist *h) {
    size_t n = 1 + ap_varint_size(h->count) + ap_varint_size(h->sum) + ap_varint_size(h->min) +
               ap_varint_size(h->max);
    uint64_t pairs = 0;
    size_t next = 0;
    for (size_t i = 0; i < AP_HIST_BUCKETS; i++) {
        if (h->counts[i] == 0)
            continue;
        n += ap_varint_size(i - next) + ap_varint_size(h->counts[i]);
        next = i + 1;
        pairs++;
    }
    return n + ap_varint_size(pairs);
}

size_t ap_hist_encode(const ap_hist *h, uint8_t *buf, size_t cap) {
    size_t need = ap_hist_encoded_size(h);
    if (cap < need) {
        ap_err_set(AP_ERANGE, "ap_hist_encode: buffer of %zu bytes, %zu needed", cap, need);
        return 0;
    }
    uint64_t pairs = 0;
    for (size_t i = 0; i < AP_HIST_BUCKETS; i++)
        pairs += h->counts[i] != 0;
    uint8_t *p = buf;
    *p++ = AP_HIST_VERSION;
    p = ap_varint_put(p, h->count);
    p = ap_varint_put(p, h->sum);
    p = ap_varint_put(p, h->min);
    p = ap_varint_put(p, h->max);
    p = ap_varint_put(p, pairs);
    size_t next = 0;
    for (size_t i = 0; i < AP_HIST_BUCKETS; i++) {
        if (h->counts[i] == 0)
            continue;
        p = ap_varint_put(p, i - next);
        p = ap_varint_put(p, h->counts[i]);
        next = i + 1;
    }
    assert((size_t)(p - buf) == need);
    return need;
}

/* Parse and validate; write into out only if out != NULL.  0 or -1 (with
 * the error set). */
static int hist_parse(ap_hist *out, const uint8_t *buf, size_t len) {
    uint64_t count, sum, min, max, pairs;
    if (len == 0)
        return ap_err_set(AP_ECORRUPT, "histogram: empty buffer");
    const uint8_t *p = buf, *end = buf + len;
    if (*p++ != AP_HIST_VERSION)
        return ap_err_set(AP_ECORRUPT, "histogram: unknown version %u", buf[0]);
    if (ap_varint_get(&p, end, &count) || ap_varint_get(&p, end, &sum) ||
        ap_varint_get(&p, end, &min) || ap_varint_get(&p, end, &max) ||
        ap_varint_get(&p, end, &pairs))
        return ap_err_set(AP_ECORRUPT, "histogram: truncated header");
    if (pairs > AP_HIST_BUCKETS || (count == 0) != (pairs == 0))
        return ap_err_set(AP_ECORRUPT, "histogram: bad bucket count %llu", (unsigned long long)pairs);
    if (count == 0 && (sum != 0 || min != UINT64_MAX || max != 0))
        return ap_err_set(AP_ECORRUPT, "histogram: empty but with a sum, min or max");
    if (count != 0 && min > max)
        return ap_err_set(AP_ECORRUPT, "histogram: min > max");
    if (out != NULL) {
        ap_hist_init(out);
        out->count = count;
        out->sum = sum;
        out->min = min;
        out->max = max;
    }
    uint64_t next = 0, total = 0, first = 0, last = 0;
    for (uint64_t j = 0; j < pairs; j++) {
        uint64_t gap, n;
        if (ap_varint_get(&p, end, &gap) || ap_varint_get(&p, end, &n))
            return ap_err_set(AP_ECORRUPT, "histogram: truncated bucket list");
        if (gap >= AP_HIST_BUCKETS - next)
            return ap_err_set(AP_ECORRUPT, "histogram: bucket index out of range");
        if (n == 0 || n > count - total)
            return ap_err_set(AP_ECORRUPT, "histogram: bucket counts exceed the total");
        uint64_t i = next + gap;
        if (j == 0)
            first = i;
        last = i;
        total += n;
        next = i + 1;
        if (out != NULL)
            out->counts[i] = n;
    }
    if (p != end)
        return ap_err_set(AP_ECORRUPT, "histogram: %zu trailing bytes", (size_t)(end - p));
    if (total != count)
        return ap_err_set(AP_ECORRUPT, "histogram: bucket counts do not add up");
    if (count != 0 && (ap_hist_bucket_index(min) != first || ap_hist_bucket_index(max) != last))
        return ap_err_set(AP_ECORRUPT, "histogram: min or max outside the bucket range");
    return 0;
}

int ap_hist_decode(ap_hist *h, const uint8_t *buf, size_t len) {
    assert(h != NULL && (buf != NULL || len == 0));
    if (hist_parse(NULL, buf, len) != 0)
        return -1;
    return hist_parse(h, buf, len);
}
