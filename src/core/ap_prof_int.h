/* ap_prof_int.h -- private layout of ap_prof and ap_tree, shared by ap_prof.c and ap_prof_file.c only. */
#ifndef AP_PROF_INT_H
#define AP_PROF_INT_H

#include "ap_prof.h"

typedef struct ap_meta_entry {
    const char *key, *val;   /* in the profile's arena */
} ap_meta_entry;

struct ap_prof {
    ap_arena arena;          /* strings and metadata */
    char **strs;             /* NUL-terminated, in the arena */
    size_t *str_len;
    uint32_t *str_next;      /* next string with the same hash, AP_NONE at the end */
    size_t nstrs, str_cap;
    ap_map str_index;        /* hash -> first string id with that hash */
    ap_frame *frames;
    uint32_t *frame_next;
    size_t nframes, frame_cap;
    ap_map frame_index;
    ap_meta_entry *meta;
    size_t nmeta, meta_cap;
    ap_tree **trees;
    size_t ntrees, tree_cap;
    ap_event *events;        /* the optional ring, NULL when disabled */
    size_t ev_cap, ev_len, ev_head;   /* ev_head: index of the oldest event */
    uint64_t ev_dropped;
    ap_hist **lat;           /* route latency histograms (ap_prof_latency), malloc'd */
    ap_str_id *lat_route;    /* their routes */
    size_t nlat, lat_cap, lat_route_cap;
    ap_map lat_index;        /* route string id -> index in lat */
    ap_query *queries;       /* ap_prof_query_add */
    size_t nqueries, query_cap;
    ap_map query_index;      /* hash of a record's key -> its index in queries */
    struct ap_stalls *stalls; /* event-loop stalls (ap_stall.c), NULL when none */
    struct ap_memtl *memtl;   /* memory over time (ap_memtl.c), NULL when none */
    struct ap_unrels *unrel;  /* unreleased objects (ap_unrel.c), NULL when none */
};

struct ap_tree {
    ap_prof *prof;
    ap_arena arena;          /* the nodes */
    ap_node **nodes;         /* by id */
    size_t nnodes, node_cap;
    ap_map index;            /* parent id << 32 | frame -> child id */
    ap_label *labels;
    size_t nlabels, label_cap;
};

/* Grow *arr (*cap elements of sz bytes) to hold need elements.  0 / -1
 * with AP_ENOMEM (array unchanged). */
int ap_prof_grow(void **arr, size_t *cap, size_t need, size_t sz);

#endif /* AP_PROF_INT_H */
