/* ap_chrome.c -- the Chrome trace event format (chrome://tracing, Perfetto) from the profile's event ring: a track per thread, each span's wait kind as its category, the event-loop stalls on a track of their own; refuses profiles that recorded no timeline. */
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_report.h"
#include "ap_stall.h"
#include "ap_timeline.h"
#include "ap_wait.h"

/* The stalls as complete events on a track of their own (tid, one past the threads'),
 * each with its route, task, thread, line and call path in args. */
static void stall_events(const ap_prof *p, uint64_t t0, size_t tid, ap_sbuf *out) {
    ap_sbuf_printf(out, ",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":1,\"tid\":%zu,"
                        "\"args\":{\"name\":\"event-loop stalls\"}}", tid);
    for (size_t i = 0; i < ap_prof_nstalls(p); i++) {
        const ap_stall *s = ap_prof_stall_at(p, i);
        const ap_frame *f = ap_prof_frame(p, s->func);
        uint64_t ts = s->start_ns >= t0 ? s->start_ns - t0 : 0;
        ap_sbuf_puts(out, ",\n{\"ph\":\"X\",\"cat\":\"stall\",\"name\":");
        ap_sbuf name = {0};
        ap_sbuf_printf(&name, "stall: %s:%u", ap_prof_str(p, f->qualname), s->line);
        ap_sbuf_putc(&name, '\0');
        ap_sbuf_json_str(out, name.failed ? "stall" : name.data);
        ap_sbuf_free(&name);
        ap_sbuf_printf(out, ",\"pid\":1,\"tid\":%zu,\"ts\":%llu.%03llu,\"dur\":%llu.%03llu", tid,
                       (unsigned long long)(ts / 1000), (unsigned long long)(ts % 1000),
                       (unsigned long long)(s->dur_ns / 1000), (unsigned long long)(s->dur_ns % 1000));
        ap_sbuf_puts(out, ",\"args\":{\"file\":");
        ap_sbuf_json_str(out, ap_prof_str(p, f->file));
        ap_sbuf_printf(out, ",\"line\":%u,\"route\":", s->line);
        ap_sbuf_json_str(out, ap_prof_str(p, s->route));
        ap_sbuf_puts(out, ",\"task\":");
        ap_sbuf_json_str(out, ap_prof_str(p, s->task));
        ap_sbuf_puts(out, ",\"thread\":");
        ap_sbuf_json_str(out, ap_prof_str(p, s->thread));
        ap_sbuf_puts(out, ",\"stack\":[");
        const ap_frame_id *st = ap_prof_stall_stack(p, s);
        for (uint32_t k = 0; k < s->nstack; k++) {
            ap_sbuf_puts(out, k ? "," : "");
            ap_sbuf_json_str(out, ap_prof_str(p, ap_prof_frame(p, st[k])->qualname));
        }
        ap_sbuf_puts(out, "]}}");
    }
}

int ap_chrome_write(const ap_report_ctx *rc, ap_sbuf *out) {
    const ap_prof *p = rc->input;
    if (ap_prof_events_capacity(p) == 0 || ap_prof_nevents(p) == 0)
        return ap_err_set(AP_ENOTFOUND, "this profile recorded no event timeline, so there is "
                                        "no Chrome trace to write (the other formats work)");
    ap_timeline tl;
    if (ap_timeline_build(p, &tl) != 0)
        return -1;
    /* the route and task of each tree, looked up once: [2 * tree], [2 * tree + 1] */
    static const char *const keys[] = {"route", "task"};
    size_t ntrees = ap_prof_ntrees(p);
    ap_str_id *labels = malloc(2 * (ntrees ? ntrees : 1) * sizeof *labels);
    if (labels == NULL) {
        ap_timeline_free(&tl);
        return ap_err_set(AP_ENOMEM, "chrome: out of memory");
    }
    for (size_t t = 0; t < ntrees; t++)
        for (size_t k = 0; k < 2; k++)
            labels[2 * t + k] = ap_timeline_tree_label(p, t, keys[k]);
    ap_sbuf_puts(out, "{\"displayTimeUnit\":\"ns\",\"otherData\":{\"exporter\":\"apiprof\","
                      "\"dropped_events\":");
    ap_sbuf_u64(out, ap_prof_events_dropped(p));
    ap_sbuf_puts(out, "},\"traceEvents\":[\n");
    /* One track per thread (its own work and its requests' and tasks' steps), named
     * by the thread. */
    ap_sbuf name = {0};
    for (size_t l = 0; l < tl.nlanes; l++) {
        name.len = 0;
        ap_timeline_lane_name(p, &tl, l, &name);
        ap_sbuf_printf(out, "%s{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":1,\"tid\":%zu,"
                            "\"args\":{\"name\":", l ? ",\n" : "", l + 1);
        ap_sbuf_json_str(out, name.failed ? "?" : name.data);
        ap_sbuf_puts(out, "}}");
    }
    /* Each span: its category is what its own time was (running, or a wait kind: lock,
     * gil, idle, network...), its args the route and task of the request it ran for. */
    for (size_t i = 0; i < tl.nspans; i++) {
        const ap_tl_span *e = &tl.spans[i];
        const ap_frame *f = ap_prof_frame(p, e->frame);
        name.len = 0;
        ap_report_frame_label(p, e->frame, &name);
        ap_sbuf_putc(&name, '\0');
        ap_sbuf_puts(out, ",\n{\"ph\":\"X\",\"cat\":");
        ap_sbuf_json_str(out, e->kind < AP_WAIT_COUNT ? ap_wait_name(e->kind) : "running");
        ap_sbuf_puts(out, ",\"name\":");
        ap_sbuf_json_str(out, name.failed ? "?" : name.data);
        ap_sbuf_printf(out, ",\"pid\":1,\"tid\":%u,\"ts\":%llu.%03llu,\"dur\":%llu.%03llu",
                       e->lane + 1, (unsigned long long)(e->start_ns / 1000),
                       (unsigned long long)(e->start_ns % 1000),
                       (unsigned long long)(e->dur_ns / 1000),
                       (unsigned long long)(e->dur_ns % 1000));
        ap_sbuf_puts(out, ",\"args\":{\"file\":");
        ap_sbuf_json_str(out, f ? ap_prof_str(p, f->file) : "");
        ap_sbuf_printf(out, ",\"line\":%u", f ? (f->lineno ? f->lineno : f->line) : 0);
        for (size_t k = 0; k < 2; k++) {
            ap_str_id v = labels[2 * (size_t)e->tree + k];
            if (v == 0)
                continue;
            ap_sbuf_printf(out, ",\"%s\":", keys[k]);
            ap_sbuf_json_str(out, ap_prof_str(p, v));
        }
        ap_sbuf_puts(out, "}}");
    }
    if (ap_prof_nstalls(p) > 0)
        stall_events(p, tl.t0, tl.nlanes + 1, out);
    ap_sbuf_puts(out, "\n]}\n");
    ap_sbuf_free(&name);
    free(labels);
    ap_timeline_free(&tl);
    return out->failed ? -1 : 0;
}
