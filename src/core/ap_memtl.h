/* ap_memtl.h -- memory over time: the process's RSS and the traced heap sampled on an interval, stored in the profile and drawn as a chart. */
#ifndef AP_MEMTL_H
#define AP_MEMTL_H

#include <stddef.h>
#include <stdint.h>

#include "ap_prof.h"
#include "ap_sbuf.h"

/* A point of the memory timeline: what a sampler thread read at t_ns (the
 * profile's clock, anchored to CLOCK_MONOTONIC like stalls' start_ns).
 * rss_bytes is the resident set of the process (/proc/self/statm), 0 when
 * it could not be read; heap_bytes the bytes the allocation hook tracked as
 * alive then (its estimate in sampled mode), AP_MEMTL_NO_HEAP when no hook
 * ran; phase the value of the "phase" label then (a string id of the
 * profile, 0 for none).
 *
 * Points belong to the profile, kept in the order they were added (times
 * ascending), copied whole by ap_prof_merge() and ap_prof_select(); at most
 * AP_MEMTL_MAX are kept (over a day at 100 ms), later ones are counted as
 * dropped. */
#define AP_MEMTL_MAX 1000000u
#define AP_MEMTL_NO_HEAP UINT64_MAX

typedef struct ap_mem_point {
    uint64_t t_ns;
    uint64_t rss_bytes;
    uint64_t heap_bytes;
    ap_str_id phase;
} ap_mem_point;

/* Append a point.  Returns 0 (also when it was dropped, over AP_MEMTL_MAX);
 * on error -1 with AP_ENOMEM. */
int ap_prof_mem_add(ap_prof *p, const ap_mem_point *pt);

/* The points: how many, the i-th (i < ap_prof_nmem), and how many were
 * dropped.  Can't fail. */
size_t ap_prof_nmem(const ap_prof *p);
const ap_mem_point *ap_prof_mem_at(const ap_prof *p, size_t i);
uint64_t ap_prof_mem_dropped(const ap_prof *p);

/* Copy the points of src into dst, a profile with the same string ids
 * (ap_prof_merge's copies).  0; -1 with AP_ENOMEM. */
int ap_memtl_copy(ap_prof *dst, const ap_prof *src);

/* Release the points of p (ap_prof_free).  Can't fail. */
void ap_memtl_free(ap_prof *p);

/* The payload of the native file's MEMT chunk (docs/format.md), appended to
 * b.  Can't fail (b records a failed allocation). */
void ap_memtl_encode(const ap_prof *p, ap_sbuf *b);

/* Read a MEMT payload [pos, end) into p, whose strings are read already.
 * 0; -1 with AP_ECORRUPT (a phase naming a missing string, times going
 * back, a malformed payload) or AP_ENOMEM.  Any input is safe. */
int ap_memtl_decode(ap_prof *p, const uint8_t *pos, const uint8_t *end);

/* The JSON export's "memory_timeline" array (docs/format.md), appended to
 * out.  Can't fail (out records a failed allocation). */
void ap_memtl_json(const ap_prof *p, ap_sbuf *out);

/* The largest growth of a series between two consecutive points: the index
 * i (>= 1) of the later point of the step with the largest increase of
 * rss_bytes (heap = 0) or heap_bytes (heap = 1), and the increase in
 * *bytes.  Returns 0 when no step grows (or p has under two points, or no
 * heap).  Can't fail. */
size_t ap_memtl_largest_growth(const ap_prof *p, int heap, uint64_t *bytes);

/* Append the chart as an SVG element: RSS and traced heap over the seconds
 * since the first point, the phases as shaded bands with their names, the
 * step of largest growth of each series marked, and the peak of each.  Names
 * are escaped.  Nothing is appended when p has under two points.  Can't fail
 * (sb records a failed allocation). */
void ap_memtl_svg(const ap_prof *p, ap_sbuf *sb);

#endif /* AP_MEMTL_H */
