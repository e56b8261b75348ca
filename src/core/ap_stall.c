/* ap_stall.c -- event-loop stalls of a profile: storage, copies, the native STLS chunk and the JSON "stalls". */
#include "ap_stall.h"

#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_prof_int.h"

#define GROW(arr, cap, need) ap_prof_grow((void **)&(arr), &(cap), (need), sizeof *(arr))

/* Owned by the profile; NULL until the first stall. */
struct ap_stalls {
    ap_stall *items;
    size_t n, cap;
    ap_frame_id *frames; /* every stall's call path, one after another */
    size_t nframes, frames_cap;
    uint64_t dropped;
};

static struct ap_stalls *stalls_of(ap_prof *p) {
    if (p->stalls == NULL && (p->stalls = calloc(1, sizeof *p->stalls)) == NULL)
        ap_err_set(AP_ENOMEM, "stalls: out of memory");
    return p->stalls;
}

int ap_prof_stall_add(ap_prof *p, const ap_stall *s, const ap_frame_id *stack, size_t n) {
    struct ap_stalls *st = stalls_of(p);
    if (st == NULL)
        return -1;
    if (st->n >= AP_STALL_MAX) {
        st->dropped++;
        return 0;
    }
    if (n > AP_STALL_STACK_MAX) {
        stack += n - AP_STALL_STACK_MAX;
        n = AP_STALL_STACK_MAX;
    }
    if (GROW(st->items, st->cap, st->n + 1) != 0 ||
        GROW(st->frames, st->frames_cap, st->nframes + n) != 0)
        return -1;
    ap_stall *d = &st->items[st->n++];
    *d = *s;
    d->stack_first = (uint32_t)st->nframes;
    d->nstack = (uint32_t)n;
    if (n > 0)
        memcpy(st->frames + st->nframes, stack, n * sizeof *stack);
    st->nframes += n;
    return 0;
}

size_t ap_prof_nstalls(const ap_prof *p) {
    return p->stalls != NULL ? p->stalls->n : 0;
}

const ap_stall *ap_prof_stall_at(const ap_prof *p, size_t i) {
    return &p->stalls->items[i];
}

const ap_frame_id *ap_prof_stall_stack(const ap_prof *p, const ap_stall *s) {
    return p->stalls != NULL ? p->stalls->frames + s->stack_first : NULL;
}

uint64_t ap_prof_stalls_dropped(const ap_prof *p) {
    return p->stalls != NULL ? p->stalls->dropped : 0;
}

int ap_stall_copy(ap_prof *dst, const ap_prof *src) {
    for (size_t i = 0; i < ap_prof_nstalls(src); i++) {
        const ap_stall *s = ap_prof_stall_at(src, i);
        if (ap_prof_stall_add(dst, s, ap_prof_stall_stack(src, s), s->nstack) != 0)
            return -1;
    }
    if (src->stalls != NULL && src->stalls->dropped > 0) {
        if (stalls_of(dst) == NULL)
            return -1;
        dst->stalls->dropped += src->stalls->dropped;
    }
    return 0;
}

void ap_stall_free(ap_prof *p) {
    if (p->stalls == NULL)
        return;
    free(p->stalls->items);
    free(p->stalls->frames);
    free(p->stalls);
    p->stalls = NULL;
}

/* ---- the STLS chunk -------------------------------------------------------------
 * varint count, varint dropped, then per stall: zigzag delta of start_ns
 * from the previous stall's, dur_ns, func, line, thread, route, task,
 * nstack, and nstack frame ids. */

void ap_stall_encode(const ap_prof *p, ap_sbuf *b) {
    size_t n = ap_prof_nstalls(p);
    ap_sbuf_varint(b, n);
    ap_sbuf_varint(b, ap_prof_stalls_dropped(p));
    uint64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        const ap_stall *s = ap_prof_stall_at(p, i);
        int64_t d = (int64_t)(s->start_ns - prev);
        ap_sbuf_varint(b, ((uint64_t)d << 1) ^ (uint64_t)(d >> 63));
        prev = s->start_ns;
        uint64_t v[7] = {s->dur_ns, s->func, s->line, s->thread, s->route, s->task, s->nstack};
        for (int k = 0; k < 7; k++)
            ap_sbuf_varint(b, v[k]);
        const ap_frame_id *st = ap_prof_stall_stack(p, s);
        for (uint32_t k = 0; k < s->nstack; k++)
            ap_sbuf_varint(b, st[k]);
    }
}

int ap_stall_decode(ap_prof *p, const uint8_t *pos, const uint8_t *end) {
    uint64_t n, dropped, prev = 0;
    ap_frame_id stack[AP_STALL_STACK_MAX];
    if (ap_varint_get(&pos, end, &n) != 0 || ap_varint_get(&pos, end, &dropped) != 0 ||
        n > (uint64_t)(end - pos) / 8 || n > AP_STALL_MAX) /* 8 varints at least */
        return ap_err_set(AP_ECORRUPT, "stall chunk header is invalid");
    for (uint64_t i = 0; i < n; i++) {
        uint64_t z, v[7];
        if (ap_varint_get(&pos, end, &z) != 0)
            return ap_err_set(AP_ECORRUPT, "stall %llu is invalid", (unsigned long long)i);
        for (int k = 0; k < 7; k++)
            if (ap_varint_get(&pos, end, &v[k]) != 0)
                return ap_err_set(AP_ECORRUPT, "stall %llu is invalid", (unsigned long long)i);
        if (v[1] >= p->nframes || v[2] > UINT32_MAX || v[3] >= p->nstrs || v[4] >= p->nstrs ||
            v[5] >= p->nstrs || v[6] > AP_STALL_STACK_MAX)
            return ap_err_set(AP_ECORRUPT, "stall %llu is invalid", (unsigned long long)i);
        for (uint64_t k = 0; k < v[6]; k++) {
            uint64_t f;
            if (ap_varint_get(&pos, end, &f) != 0 || f >= p->nframes)
                return ap_err_set(AP_ECORRUPT, "stall %llu is invalid", (unsigned long long)i);
            stack[k] = (ap_frame_id)f;
        }
        ap_stall s = {prev + ((z >> 1) ^ (0 - (z & 1))),
                      v[0],
                      (ap_frame_id)v[1],
                      (uint32_t)v[2],
                      (ap_str_id)v[3],
                      (ap_str_id)v[4],
                      (ap_str_id)v[5],
                      0,
                      0,
                      0};   /* CPU: from the STLC chunk that follows, if any */
        prev = s.start_ns;
        if (ap_prof_stall_add(p, &s, stack, (size_t)v[6]) != 0)
            return -1;
    }
    if (dropped > 0) {
        if (stalls_of(p) == NULL)
            return -1;
        p->stalls->dropped += dropped;
    }
    return pos == end ? 0 : ap_err_set(AP_ECORRUPT, "stall chunk has trailing bytes");
}

/* ---- the STLC chunk: varint count (the stalls' count), then per stall varint cpu_ns,
 * 0 when unknown. */

void ap_stall_cpu_encode(const ap_prof *p, ap_sbuf *b) {
    size_t n = ap_prof_nstalls(p), known = 0;
    for (size_t i = 0; i < n; i++)
        known += ap_prof_stall_at(p, i)->cpu_ns != 0;
    if (known == 0)
        return;
    ap_sbuf_varint(b, n);
    for (size_t i = 0; i < n; i++)
        ap_sbuf_varint(b, ap_prof_stall_at(p, i)->cpu_ns);
}

int ap_stall_cpu_decode(ap_prof *p, const uint8_t *pos, const uint8_t *end) {
    uint64_t n;
    if (ap_varint_get(&pos, end, &n) != 0 || n != ap_prof_nstalls(p))
        return ap_err_set(AP_ECORRUPT, "stall CPU chunk does not match the stalls");
    for (uint64_t i = 0; i < n; i++)
        if (ap_varint_get(&pos, end, &p->stalls->items[i].cpu_ns) != 0)
            return ap_err_set(AP_ECORRUPT, "stall CPU %llu is invalid", (unsigned long long)i);
    return pos == end ? 0 : ap_err_set(AP_ECORRUPT, "stall CPU chunk has trailing bytes");
}

/* ---- JSON ---------------------------------------------------------------------- */

static void json_label(const ap_prof *p, ap_sbuf *out, const char *key, ap_str_id v) {
    ap_sbuf_printf(out, ", \"%s\": ", key);
    if (v == 0)
        ap_sbuf_puts(out, "null");
    else
        ap_sbuf_json_str(out, ap_prof_str(p, v));
}

void ap_stall_json(const ap_prof *p, ap_sbuf *out) {
    ap_sbuf_putc(out, '[');
    for (size_t i = 0; i < ap_prof_nstalls(p); i++) {
        const ap_stall *s = ap_prof_stall_at(p, i);
        const ap_frame *f = ap_prof_frame(p, s->func);
        ap_sbuf_printf(out, "%s{\"start_ns\": %llu, \"duration_ns\": %llu, \"function\": ",
                       i ? ",\n  " : "\n  ", (unsigned long long)s->start_ns,
                       (unsigned long long)s->dur_ns);
        ap_sbuf_json_str(out, ap_prof_str(p, f->qualname));
        ap_sbuf_puts(out, ", \"file\": ");
        ap_sbuf_json_str(out, ap_prof_str(p, f->file));
        ap_sbuf_printf(out, ", \"line\": %u, \"stack\": [", s->line);
        const ap_frame_id *st = ap_prof_stall_stack(p, s);
        for (uint32_t k = 0; k < s->nstack; k++)
            ap_sbuf_printf(out, "%s%u", k ? ", " : "", st[k]);
        ap_sbuf_putc(out, ']');
        json_label(p, out, "route", s->route);
        json_label(p, out, "task", s->task);
        json_label(p, out, "thread", s->thread);
        if (s->cpu_ns != 0)
            ap_sbuf_printf(out, ", \"cpu_ns\": %llu", (unsigned long long)s->cpu_ns);
        else
            ap_sbuf_puts(out, ", \"cpu_ns\": null");
        ap_sbuf_putc(out, '}');
    }
    ap_sbuf_puts(out, ap_prof_nstalls(p) ? "\n ]" : "]");
}
