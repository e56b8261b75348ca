/* ap_report.h -- every view of a profile, written from the one model: format names, options, the shared helpers of the writers. */
#ifndef AP_REPORT_H
#define AP_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "ap_prof.h"
#include "ap_sbuf.h"

/* ---- the entry point --------------------------------------------------------- */

/* Options of every format; a zeroed struct means "defaults". */
typedef struct ap_report_opts {
    const char *metric;     /* "wall" | "cpu" | "await" | "memory" | "samples"; NULL or
                               "" picks the first one present in that order */
    double min_percent;     /* prune what is below this share of the total (dot,
                               svg, html); <= 0 picks the writer's default */
    const char *route;      /* keep only trees labelled route=ROUTE (NULL: all) */
    const char *thread;     /* ... thread=THREAD */
    const char *task;       /* ... task=TASK */
    const char *phase;      /* ... phase=PHASE */
    const char *title;      /* title of html/svg; NULL: from the metadata */
    const ap_prof *lines;   /* html, json: a line profile of the same program whose hot
                               lines join the findings (ap_findings_build); NULL: none */
    ap_prof *baseline;      /* html, json: a profile before a change, whose routes the
                               regression findings compare with (ap_findings_build) */
} ap_report_opts;

/* Formats, by name: html svg dot speedscope pprof collapsed callgrind chrome
 * json pstats (the text table and the findings are the Python layer's).  1 when name is one of them, else 0.  Can't fail. */
int ap_report_format_known(const char *name);

/* The format whose usual file extension ends path (".html", ".svg",
 * ".dot"/".gv", ".speedscope.json", ".pb.gz"/".pprof", ".collapsed"/".folded",
 * ".callgrind" or a "callgrind.out" prefix, ".trace.json"/".chrome.json",
 * ".txt", ".json", ".pstats"/".prof"), or NULL.  Can't fail. */
const char *ap_report_format_for_path(const char *path);

/* Write the view `format` of p to out.  p is finished (ap_prof_finish) and
 * may intern function-level frames; filters and the metric come from o
 * (NULL: defaults).  Returns 0; on error -1 with AP_EINVAL (unknown format
 * or metric, or the metric is not in the profile), AP_ENOTFOUND (no tree
 * matches a filter; "chrome" on a profile without an event timeline),
 * AP_ENOMEM or AP_EIO.  On error nothing, or a part of the output, has been
 * written to out. */
int ap_report_write(ap_prof *p, const char *format, const ap_report_opts *o, FILE *out);

/* As ap_report_write(), appending to out instead of writing to a file.
 * On error out may hold a part of the view (out->failed set after AP_ENOMEM). */
int ap_report_write_buf(ap_prof *p, const char *format, const ap_report_opts *o, ap_sbuf *out);

/* ---- for the writers -----------------------------------------------------------
 * A view metric is one node metric read as "self" cost: the value a node has
 * itself; a node's inclusive value is the sum over its subtree. */
typedef enum ap_vmetric {
    AP_VM_WALL = 0,   /* AP_M_SELF_NS */
    AP_VM_CPU,        /* AP_M_CPU_NS */
    AP_VM_AWAIT,      /* AP_M_AWAIT_NS */
    AP_VM_MEMORY,     /* AP_M_ALLOC_BYTES */
    AP_VM_SAMPLES,    /* AP_M_SAMPLES */
    AP_VM_LIVE,       /* AP_M_LIVE_BYTES */
    AP_VM_COUNT
} ap_vmetric;

/* Name ("wall", ...), node metric index, and unit ("nanoseconds", "bytes",
 * "count") of vm < AP_VM_COUNT.  Can't fail. */
const char *ap_report_vm_name(unsigned vm);
unsigned ap_report_vm_field(unsigned vm);
const char *ap_report_vm_unit(unsigned vm);

/* 1 when some node of some tree of p has a non-zero value of vm.  Can't fail. */
int ap_report_vm_present(const ap_prof *p, unsigned vm);

/* The metric views show when none is asked for: the first present in p of
 * wall, samples, cpu, memory, await, live (wall when none is).  Can't fail. */
unsigned ap_report_default_metric(const ap_prof *p);

/* The view metric called name ("wall", "cpu", ...) into *vm, the one check
 * of --metric for every format.  Returns 0; on error -1 with AP_EINVAL (an
 * unknown name, or no node of p has the metric). */
int ap_report_pick_metric(const ap_prof *p, const char *name, unsigned *vm);

/* What a writer is given: the profile after filtering (one tree per kept
 * tree, or the input itself when no filter is set), the options, the chosen
 * metric and threshold. */
typedef struct ap_report_ctx {
    ap_prof *prof;
    const ap_prof *input;        /* the unfiltered input (the event ring lives there) */
    const ap_report_opts *opts;  /* never NULL */
    unsigned metric;             /* ap_vmetric */
    double min_percent;          /* as given, <= 0 when not */
    const char *title;
} ap_report_ctx;

/* The inclusive value of every node of t for node metric `field`: a malloc'd
 * array of ap_tree_nnodes(t) entries.  On error NULL with AP_ENOMEM. */
uint64_t *ap_report_inclusive(const ap_tree *t, unsigned field);

/* The name a view shows for frame f: its qualname (its name if the
 * qualname is empty), with ":LINE" for a line-level frame; "<root>" for
 * frame 0.  Appended to sb.  Can't fail. */
void ap_report_frame_label(const ap_prof *p, ap_frame_id f, ap_sbuf *sb);

/* The path stack of a tree walk: the nodes from the root (node[0]) to the
 * node being entered (node[depth]), and one value per level that the caller
 * may set and read back at deeper levels (e.g. the length of a text prefix). */
typedef struct ap_walk {
    const ap_node **node;
    uint64_t *mark;
    size_t depth;
} ap_walk;

/* Depth-first walk of t from the root: enter(w, arg) for every node below
 * the root (w->depth >= 1), parents before children; the node's children are skipped when it returns 0, and -1
 * stops the walk and is returned.  Children in the tree's order.  Iterative:
 * any depth.  Returns 0, or -1 (enter's error, or AP_ENOMEM). */
int ap_report_walk(const ap_tree *t, int (*enter)(const ap_walk *w, void *arg), void *arg);

/* Stack views (collapsed, speedscope, pprof) write every node's whole path, so a
 * chain N deep would take N^2/2 frames: they cut paths at AP_REPORT_STACK_MAX
 * frames, and the node at that depth carries the sum over its subtree. */
#define AP_REPORT_STACK_MAX 1024

/* The value a stack view writes for w's node (node metric `field` of tree t):
 * its own, or at depth AP_REPORT_STACK_MAX the sum over its subtree, from
 * *incl (ap_report_inclusive(t, field), computed on first use; the caller
 * frees it).  Returns 1 when the walk goes below the node, 0 when the node
 * ends the path, -1 with AP_ENOMEM. */
int ap_report_stack_value(const ap_walk *w, const ap_tree *t, unsigned field, uint64_t **incl,
                          uint64_t *v);

/* As ap_report_frame_label(), followed by " (FILE:LINE)" for Python
 * frames (the line of a line-level frame, else the first line).  Can't
 * fail. */
void ap_report_frame_label_long(const ap_prof *p, ap_frame_id f, ap_sbuf *sb);

/* A new profile with one tree, the sum of all trees of p, in which
 * AP_M_SELF_NS holds metric `field` and AP_M_TOTAL_NS the inclusive sum of
 * it (for AP_M_SELF_NS itself the recorded totals are kept), so that the
 * function table (ap_functab_build) of the result is the table of that
 * metric.  On error NULL with AP_ENOMEM. */
ap_prof *ap_report_project(const ap_prof *p, unsigned field);

/* The function table of the view metric of c: *ft is the table of
 * ap_report_project(c->prof, field of c->metric), whose profile is returned
 * (free it after ap_functab_free(ft)).  On error NULL with AP_ENOMEM and *ft
 * empty. */
ap_prof *ap_report_functab(const ap_report_ctx *c, ap_functab *ft);

/* The display name of tree number i of p: its labels as "k=v k=v", or
 * "tree I" when it has none.  Appended to sb, NUL-terminated.  Can't fail. */
void ap_report_tree_name(const ap_prof *p, size_t i, ap_sbuf *sb);

/* A printable value of metric vm: "1.25 ms", "3.1 MB", "1,234".  Appended to
 * sb.  Can't fail. */
void ap_report_fmt_value(ap_sbuf *sb, unsigned vm, uint64_t v);

/* The writers, one per format, each in its own module: append the view to
 * out.  Return 0; -1 with the error set (as ap_report_write()). */
int ap_html_write(const ap_report_ctx *c, ap_sbuf *out);        /* ap_html.c */
int ap_flame_write_svg(const ap_report_ctx *c, ap_sbuf *out);   /* ap_flame.c */
int ap_flame_write_collapsed(const ap_report_ctx *c, ap_sbuf *out);
int ap_dot_write(const ap_report_ctx *c, ap_sbuf *out);         /* ap_dot.c */
int ap_speedscope_write(const ap_report_ctx *c, ap_sbuf *out);  /* ap_speedscope.c */
int ap_pprof_write(const ap_report_ctx *c, ap_sbuf *out);       /* ap_pprof.c */

/* Grafana Pyroscope's push.v1.PushRequest (the body of its connect-protocol
 * /push.v1.PusherService/Push) carrying one series: nlabels label pairs
 * (labels[2i] the name, labels[2i+1] the value, NUL-terminated) and one raw
 * sample, the n bytes of a gzipped pprof at pprof.  Appended to out.
 * Returns 0; -1 with AP_ENOMEM.  (ap_pprof.c) */
int ap_pprof_push_request(const char *const *labels, size_t nlabels, const void *pprof,
                          size_t n, ap_sbuf *out);
int ap_callgrind_write(const ap_report_ctx *c, ap_sbuf *out);   /* ap_callgrind.c */
int ap_chrome_write(const ap_report_ctx *c, ap_sbuf *out);      /* ap_chrome.c */
int ap_json_write(const ap_report_ctx *c, ap_sbuf *out);        /* ap_prof_file.c */

/* How a flame graph colours its frames when it is not the default (a
 * colour from the name's hash): fill(node, arg) is the frame's colour as
 * 0xRRGGBB, and note(node, arg, out) appends to its tooltip, after the
 * value, share and calls (text, escaped by the writer: append with
 * ap_sbuf_puts of plain text only, never a name from the profile). */
typedef struct ap_flame_paint {
    uint32_t (*fill)(const ap_node *n, void *arg);
    void (*note)(const ap_node *n, void *arg, ap_sbuf *out);
    void *arg;
} ap_flame_paint;

/* The SVG flame graph of tree t of m (ap_flame.c; the layout of
 * ap_flame_write_svg, which calls it on the merged profile): widths from
 * view metric vm, frames below min_percent of the total (if > 0) left
 * out, the title escaped, colours from paint (NULL: by name).  Returns 0;
 * -1 with AP_ENOMEM. */
int ap_flame_svg_tree(const ap_prof *m, const ap_tree *t, unsigned vm, double min_percent,
                      const char *title, const ap_flame_paint *paint, ap_sbuf *out);
int ap_pstats_write(const ap_report_ctx *c, ap_sbuf *out);

#endif /* AP_REPORT_H */
