/* ap_diff.h -- two profiles compared: functions and call paths matched by name, the delta of every metric, the diff views (json, svg, html). */
#ifndef AP_DIFF_H
#define AP_DIFF_H

#include <stdint.h>

#include "ap_metric.h"
#include "ap_prof.h"
#include "ap_sbuf.h"

/* Matching.  A function is keyed by its qualname and its file (the module it
 * lives in), never by its first line, so an edit that shifts it still
 * matches; a line-level frame adds its line.  A call path (a node of the
 * merged tree of all a profile's trees) is matched by the sequence of its
 * frames' keys from the root, so recursion matches level by level.
 *
 * Scale.  Per request (AP_DIFF_PER_REQUEST) divides each side's figures by
 * its requests (the AP_M_CALLS of the roots of its trees labelled "route",
 * as ap_findings counts them); per total (AP_DIFF_PER_TOTAL) keeps them. */

typedef enum ap_diff_per {
    AP_DIFF_PER_AUTO = 0,   /* per request when both profiles count requests, else total */
    AP_DIFF_PER_REQUEST,
    AP_DIFF_PER_TOTAL
} ap_diff_per;

/* Options; a zeroed struct means defaults. */
typedef struct ap_diff_opts {
    const char *metric;   /* view metric ("wall", "cpu", ... as ap_report_pick_metric);
                             NULL: the first present in B of wall, samples, cpu, memory,
                             await, live */
    unsigned per;         /* ap_diff_per */
    const char *title;    /* svg / html title; NULL: "apiprof diff" */
    const char *name_a;   /* what A and B are called in views (file names); NULL: "A", "B" */
    const char *name_b;
} ap_diff_opts;

/* One function of either profile.  a[] and b[] are the function-table
 * figures (ap_func_row.m: every metric summed as the catalogue says),
 * scaled per request when the diff is; 0 on a side the function is not on. */
typedef struct ap_diff_row {
    const char *qualname;   /* borrowed from the profile it was found in */
    const char *file;
    int in_a, in_b;         /* 1 when the function is in A, in B */
    double a[AP_M_COUNT], b[AP_M_COUNT];
} ap_diff_row;

/* The function deltas. */
typedef struct ap_diff {
    ap_diff_row *rows;      /* sorted by |b - a| of `key`, largest first, then qualname, file */
    size_t nrows;
    size_t nmatched;        /* rows in both profiles */
    unsigned vm;            /* the view metric (ap_vmetric) */
    unsigned key;           /* its node metric (AP_M_SELF_NS for wall) */
    int per_request;        /* 1: figures are per request */
    uint64_t requests_a, requests_b;
} ap_diff;

/* The requests profile p counts (see "Scale").  Can't fail. */
uint64_t ap_diff_requests(const ap_prof *p);

/* Compare A (before) with B (after) into *d; both finished, and both may
 * intern function-level frames.  The rows borrow strings of a and b: free d
 * before them.  Returns 0; on error -1 and *d empty: AP_EINVAL (an unknown
 * metric, or one neither profile has; per request when one side counts no
 * requests), AP_ENOTFOUND (no function of A is in B), AP_ENOMEM. */
int ap_diff_build(ap_prof *a, ap_prof *b, const ap_diff_opts *o, ap_diff *d);

/* Release d's rows; d is left empty.  Can't fail. */
void ap_diff_free(ap_diff *d);

/* For each node of tree tb (of profile b), the node of tree ta (of profile
 * a) on the same call path, or AP_NONE: a malloc'd array of
 * ap_tree_nnodes(tb) entries (free() it).  Node 0 (the roots) always
 * match.  On error NULL with AP_ENOMEM. */
ap_node_id *ap_diff_match_paths(const ap_prof *a, const ap_tree *ta, const ap_prof *b,
                                const ap_tree *tb);

/* Write the diff of A and B as format "json" (docs/diff.md), "svg" (a
 * differential flame graph: widths from B, red where B spends more than A
 * on the path, blue where less, deeper by the relative change; new paths
 * full red; the vanished functions listed under it) or "html" (a page with
 * the summary, the flame graph and the tables of changed, new and vanished
 * functions).  Every name is escaped for its format.  Returns 0; on error -1
 * as ap_diff_build, or AP_EINVAL for an unknown format. */
int ap_diff_write(ap_prof *a, ap_prof *b, const char *format, const ap_diff_opts *o,
                  ap_sbuf *out);

#endif /* AP_DIFF_H */
