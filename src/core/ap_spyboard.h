/* ap_spyboard.h -- the board a profiled process keeps for apiprof-spy: which route each thread serves now. */
#ifndef AP_SPYBOARD_H
#define AP_SPYBOARD_H

#include <stdint.h>

/* The middleware (src/ext/spyboard.c) keeps one board per process, in the exported
 * symbol AP_SPYBOARD_SYMBOL of apiprof's extension module; apiprof-spy finds it there
 * and reads it beside each sample, so a sample carries the route its thread was serving.
 *
 * Nothing is published unless a sampler reads the board: the sampler writes
 * heartbeat_ns (CLOCK_MONOTONIC, a clock both processes share) at least every
 * AP_SPYBOARD_FRESH_NS / 4, and the middleware works for the board only while the
 * heartbeat is fresher than AP_SPYBOARD_FRESH_NS.  A sampler that dies stops the work
 * a moment later.
 *
 * Reads race with the writer and never stop it; every field the sampler reads is one
 * aligned word that is written whole.  Labels are append-only: label i is written before
 * nlabels passes i, and never changes; a thread's slot names a label by its index + 1
 * (0: no request is being served by it). */

#define AP_SPYBOARD_SYMBOL "apext_spyboard"
#define AP_SPYBOARD_MAGIC 0x3144524f42595053ull   /* "SPYBORD1" */
#define AP_SPYBOARD_SLOTS 128                     /* threads with a slot (the rest: none) */
#define AP_SPYBOARD_LABELS 256                    /* distinct labels (the rest: none) */
#define AP_SPYBOARD_LABEL_MAX 120                 /* bytes of a label, its NUL excluded */
#define AP_SPYBOARD_FRESH_NS 2000000000ull

typedef struct ap_spyboard_slot {
    int32_t tid;          /* kernel thread id; 0 while the slot is free */
    uint32_t label;       /* index + 1 of the label served now, 0: none */
} ap_spyboard_slot;

typedef struct ap_spyboard {
    uint64_t magic;           /* AP_SPYBOARD_MAGIC once the module is loaded */
    uint64_t heartbeat_ns;    /* written by the sampler */
    uint32_t nslots;          /* slots taken, in order (at most AP_SPYBOARD_SLOTS) */
    uint32_t nlabels;         /* labels written, in order */
    ap_spyboard_slot slots[AP_SPYBOARD_SLOTS];
    char labels[AP_SPYBOARD_LABELS][AP_SPYBOARD_LABEL_MAX + 1];   /* NUL-terminated */
} ap_spyboard;

#endif /* AP_SPYBOARD_H */
