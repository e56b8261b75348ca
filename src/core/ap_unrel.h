/* ap_unrel.h -- unreleased objects: the Python objects allocated while profiling and still alive at its end, by type and allocation site. */
#ifndef AP_UNREL_H
#define AP_UNREL_H

#include <stddef.h>
#include <stdint.h>

#include "ap_prof.h"
#include "ap_sbuf.h"

/* One record per (type, allocation site, route): how many objects of that
 * type made there are still alive at the end of the profile, and their
 * bytes (weighted estimates in sampled mode).  The allocation hook writes
 * them when it stops (memory.c): what is left behind and where it was made.
 * Records belong to the profile, in the order added (equal keys summed),
 * copied whole by ap_prof_merge() and ap_prof_select(). */
typedef struct ap_unrel {
    ap_str_id type;     /* the type's name: "bytearray", "shop.models.Order" */
    ap_frame_id site;   /* the node's frame that allocated it: a line-level frame when the
                           line is known, else the function's; 0 when none */
    ap_str_id route;    /* the route label of that node's tree, 0 outside requests */
    uint64_t count;     /* objects */
    uint64_t bytes;     /* their bytes (the blocks, object headers included) */
} ap_unrel;

/* Add r, summed into a record with the same type, site and route.  Returns
 * 0; on error -1 with AP_ENOMEM. */
int ap_prof_unrel_add(ap_prof *p, const ap_unrel *r);

/* The records: how many, and the i-th (i < ap_prof_nunrel).  Can't fail. */
size_t ap_prof_nunrel(const ap_prof *p);
const ap_unrel *ap_prof_unrel_at(const ap_prof *p, size_t i);

/* Copy the records of src into dst, a profile with the same string and frame
 * ids (ap_prof_merge's copies).  0; -1 with AP_ENOMEM. */
int ap_unrel_copy(ap_prof *dst, const ap_prof *src);

/* Release the records of p (ap_prof_free).  Can't fail. */
void ap_unrel_free(ap_prof *p);

/* The payload of the native file's UNRL chunk (docs/format.md), appended to
 * b.  Can't fail (b records a failed allocation). */
void ap_unrel_encode(const ap_prof *p, ap_sbuf *b);

/* Read an UNRL payload [pos, end) into p, whose strings and frames are read
 * already.  0; -1 with AP_ECORRUPT (a record naming a missing string or
 * frame, a malformed payload) or AP_ENOMEM.  Any input is safe. */
int ap_unrel_decode(ap_prof *p, const uint8_t *pos, const uint8_t *end);

/* Types listed at most, and sites per type. */
#define AP_UNREL_TYPES_MAX 100
#define AP_UNREL_SITES_MAX 5

/* The JSON export's "unreleased_objects" (docs/format.md): one entry per
 * type, by bytes (most first, at most AP_UNREL_TYPES_MAX), with its count,
 * bytes and its top sites (AP_UNREL_SITES_MAX, by bytes: function, file,
 * line, route, count, bytes), appended to out.  Returns 0; -1 with
 * AP_ENOMEM. */
int ap_unrel_json(const ap_prof *p, ap_sbuf *out);
/* The same, of the records made by requests alone (route set) when requests
 * is non-zero: what requests left behind, start-up apart. */
int ap_unrel_json_of(const ap_prof *p, int requests, ap_sbuf *out);

#endif /* AP_UNREL_H */
