/* timeline.c -- the function tracer's optional event timeline (see timeline.h). */
#include "timeline.h"

#include <stdio.h>

int apext_timeline_init(apext_timeline *tl, ap_prof *p, Py_ssize_t capacity) {
    if (capacity < 0) {
        PyErr_SetString(PyExc_ValueError, "timeline must be 0 (off) or a number of events");
        return -1;
    }
    if (capacity == 0)
        return 0;
    if (ap_prof_events_enable(p, (size_t)capacity) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    tl->on = 1;
    return 0;
}

void apext_timeline_free(apext_timeline *tl) {
    apext_treeix_free(&tl->ix);
    tl->on = 0;
}

int apext_timeline_note(const apext_timeline *tl, ap_prof *p) {
    if (!tl->on)
        return 0;
    char kept[24], dropped[24];
    snprintf(kept, sizeof kept, "%zu", ap_prof_nevents(p));
    snprintf(dropped, sizeof dropped, "%llu", (unsigned long long)ap_prof_events_dropped(p));
    if (ap_prof_meta_set(p, "timeline_spans", kept) != 0 ||
        ap_prof_meta_set(p, "timeline_dropped", dropped) != 0)
        return -1;
    return 0;
}

void apext_timeline_span(apext_timeline *tl, ap_prof *p, const ap_tree *tree, ap_frame_id frame,
                         uint64_t t0, uint64_t now) {
    uint32_t ix = apext_treeix_get(&tl->ix, p, tree);
    if (ix == AP_NONE)
        return;
    ap_event e = {t0, now >= t0 ? now - t0 : 0, frame, ix};
    ap_prof_event_add(p, &e);
}
