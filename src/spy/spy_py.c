/* spy_py.c -- the CPython of another process: version, thread states, frames, lines. */
#include "spy_py.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_prof.h"

/* Longest string read from the target (code points); longer names are cut. */
#define STR_MAX 1024
/* Largest location table read (bytes); a larger one gives unknown lines. */
#define LINETABLE_MAX (1u << 20)

static uint64_t u64_at(const uint8_t *buf, uint32_t off) {
    uint64_t v;
    memcpy(&v, buf + off, sizeof v);
    return v;
}

static uint32_t max4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
    uint32_t m = a > b ? a : b;
    m = m > c ? m : c;
    return m > d ? m : d;
}

/* ---- version and layout ----------------------------------------------------------- */

/* Take the fields a target's _Py_DebugOffsets carries from it (3.13+). */
static void apply_debug_offsets(spy_target *t, const uint8_t *d) {
    spy_layout *l = &t->lay;
#define TAKE(f)                                 \
    do {                                        \
        if (l->dbg_##f && l->dbg_##f + 8 <= l->dbg_size) \
            l->f = (uint32_t)u64_at(d, l->dbg_##f); \
    } while (0)
    TAKE(rt_interpreters_head);
    TAKE(is_threads_head);
    TAKE(ts_next);
    TAKE(ts_thread_id);
    TAKE(ts_native_thread_id);
    TAKE(ts_frame);
    TAKE(fr_previous);
    TAKE(fr_code);
    TAKE(fr_instr);
    TAKE(fr_owner);
    TAKE(co_name);
    TAKE(co_qualname);
    TAKE(co_filename);
    TAKE(co_firstlineno);
    TAKE(co_linetable);
    TAKE(co_code_adaptive);
    TAKE(bytes_size);
    TAKE(bytes_sval);
    TAKE(u_length);
    TAKE(u_state);
    TAKE(u_ascii_size);
#undef TAKE
}

int spy_target_open(spy_target *t, pid_t pid) {
    memset(t, 0, sizeof *t);
    t->pid = pid;
    if (spy_find_symbols(pid, &t->sym) != 0)
        return -1;
    uint64_t hex = 0;
    uint8_t head[16];
    int have_cookie = spy_read(pid, t->sym.runtime, head, sizeof head) == 0 &&
                      memcmp(head, "xdebugpy", 8) == 0;
    if (t->sym.version) {
        if (spy_read(pid, t->sym.version, &hex, sizeof hex) != 0)
            return -1;
    } else if (have_cookie) {
        hex = u64_at(head, 8);
    } else if (spy_fail_last() == SPY_FAIL_PERM || spy_fail_last() == SPY_FAIL_NOPROC) {
        return -1;
    }
    unsigned major = (unsigned)(hex >> 24) & 0xff;
    t->minor = (unsigned)(hex >> 16) & 0xff;
    t->micro = (unsigned)(hex >> 8) & 0xff;
    t->version_hex = hex;
    const spy_layout *lay = major == 3 ? spy_layout_get(t->minor) : NULL;
    if (!lay) {
        if (!hex)
            return spy_fail_set(SPY_FAIL_VERSION, AP_EINVAL,
                                "process %d runs a Python whose version cannot be read (%s); "
                                "apiprof-spy reads CPython 3.%d to 3.%d",
                                (int)pid, t->sym.path, SPY_MINOR_MIN, SPY_MINOR_MAX);
        return spy_fail_set(SPY_FAIL_VERSION, AP_EINVAL,
                            "process %d runs Python %u.%u.%u, which apiprof-spy does not read "
                            "(it reads CPython 3.%d to 3.%d)",
                            (int)pid, major, t->minor, t->micro, SPY_MINOR_MIN, SPY_MINOR_MAX);
    }
    t->lay = *lay;
    if (lay->dbg_size && have_cookie) {
        uint8_t *d = malloc(lay->dbg_size);
        if (!d)
            return ap_err_set(AP_ENOMEM, NULL);
        if (spy_read(pid, t->sym.runtime, d, lay->dbg_size) == 0 && u64_at(d, 8) == hex) {
            apply_debug_offsets(t, d);
            t->debug_offsets = 1;
        }
        free(d);
    }
    return 0;
}

static void code_free(spy_code *c);
static void code_free_retired(spy_target *t);

void spy_target_close(spy_target *t) {
    for (size_t i = 0; i < t->ncode; i++)
        code_free(t->code[i]);
    free(t->code);
    code_free_retired(t);
    free(t->retired);
    free(t->check);
    ap_map_free(&t->codes);
    memset(t, 0, sizeof *t);
}

/* ---- strings and code objects ----------------------------------------------------- */

/* Append code point c as UTF-8. */
static size_t put_utf8(char *o, uint32_t c) {
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xc0 | c >> 6);
        o[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xe0 | c >> 12);
        o[1] = (char)(0x80 | (c >> 6 & 0x3f));
        o[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | c >> 18);
    o[1] = (char)(0x80 | (c >> 12 & 0x3f));
    o[2] = (char)(0x80 | (c >> 6 & 0x3f));
    o[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

/* A str object of the target as a malloc'ed UTF-8 string; NULL on error (torn read,
 * not a compact string, no memory). */
static char *read_str(spy_target *t, uint64_t addr) {
    const spy_layout *l = &t->lay;
    uint8_t head[128];
    if (!addr || l->u_compact_size > sizeof head || spy_read(t->pid, addr, head, l->u_compact_size) != 0)
        return NULL;
    uint64_t len = u64_at(head, l->u_length);
    uint32_t state;
    memcpy(&state, head + l->u_state, sizeof state);
    unsigned kind = state >> l->u_kind_bit & 7, compact = state >> l->u_compact_bit & 1,
             ascii = state >> l->u_ascii_bit & 1;
    if (!compact || (kind != 1 && kind != 2 && kind != 4))
        return NULL;
    if (len > STR_MAX)
        len = STR_MAX;
    uint64_t data = addr + (ascii ? l->u_ascii_size : l->u_compact_size);
    uint8_t raw[STR_MAX * 4];
    if (len && spy_read(t->pid, data, raw, (size_t)len * kind) != 0)
        return NULL;
    char *out = malloc((size_t)len * 4 + 1), *o = out;
    if (!out)
        return NULL;
    for (uint64_t i = 0; i < len; i++) {
        uint32_t c;
        if (kind == 1)
            c = raw[i];
        else if (kind == 2)
            c = (uint32_t)raw[2 * i] | (uint32_t)raw[2 * i + 1] << 8;
        else
            memcpy(&c, raw + 4 * i, 4);
        o += put_utf8(o, c > 0x10ffff ? 0xfffd : c);
    }
    *o = 0;
    return out;
}

/* The bytes of a bytes object of the target (malloc'ed); NULL on error. */
static uint8_t *read_bytes(spy_target *t, uint64_t addr, size_t *len) {
    uint64_t n;
    if (!addr || spy_read(t->pid, addr + t->lay.bytes_size, &n, sizeof n) != 0 || n > LINETABLE_MAX)
        return NULL;
    uint8_t *b = malloc(n ? n : 1);
    if (b && n && spy_read(t->pid, addr + t->lay.bytes_sval, b, n) != 0) {
        free(b);
        return NULL;
    }
    *len = n;
    return b;
}

/* Bytes of a code object's header that hold every field read from it. */
static uint32_t code_header_len(const spy_layout *l) {
    uint32_t end = max4(l->co_name, l->co_qualname, l->co_filename, l->co_linetable);
    return (end > l->co_firstlineno ? end : l->co_firstlineno) + 8;
}

/* The print of the code object whose header is in buf. */
static void code_print(const spy_layout *l, const uint8_t *buf, uint64_t out[5]) {
    uint32_t first;
    memcpy(&first, buf + l->co_firstlineno, sizeof first);
    out[0] = u64_at(buf, l->co_name);
    out[1] = u64_at(buf, l->co_qualname);
    out[2] = u64_at(buf, l->co_filename);
    out[3] = u64_at(buf, l->co_linetable);
    out[4] = first;
}

/* Read the code object at addr into a new record, cached for addr.  When addr had a
 * record (its object was freed and the address came back), the new one takes its place
 * in code[] and the old one is retired: the frames of this sample may still point at
 * it, so it is freed at the next sample.  NULL when it cannot be read now (a torn read:
 * the frame is dropped, a later sample tries again), with SPY_FAIL_TORN or the kind of
 * the read that failed. */
static const spy_code *code_read(spy_target *t, uint64_t addr) {
    const spy_layout *l = &t->lay;
    uint32_t end = code_header_len(l);
    uint8_t buf[512];
    spy_code c = {0};
    spy_fail_clear();
    if (end > sizeof buf || spy_read(t->pid, addr, buf, end) != 0)
        goto fail;
    code_print(l, buf, c.print);
    c.firstlineno = (uint32_t)c.print[4];
    c.name = read_str(t, c.print[0]);
    c.qualname = read_str(t, c.print[1]);
    c.filename = read_str(t, c.print[2]);
    c.linetable = read_bytes(t, c.print[3], &c.linetable_len);
    c.frame_id = AP_NONE;
    if (!c.name || !c.qualname || !c.filename || !c.linetable)
        goto fail;
    uint64_t *slot = ap_map_get(&t->codes, addr);
    size_t at = slot ? *slot - 1 : t->ncode;
    spy_code ***list = slot ? &t->retired : &t->code;
    size_t *len = slot ? &t->nretired : &t->ncode, *cap = slot ? &t->capretired : &t->capcode;
    if (*len == *cap) {
        size_t nc = *cap ? 2 * *cap : 256;
        spy_code **grown = realloc(*list, nc * sizeof *grown);
        if (!grown)
            goto fail;
        *list = grown;
        *cap = nc;
    }
    spy_code *rec = malloc(sizeof *rec);
    if (!rec)
        goto fail;
    if (!slot && ap_map_put(&t->codes, addr, t->ncode + 1) != 0) {
        free(rec);
        goto fail;
    }
    *rec = c;
    if (slot)
        t->retired[t->nretired++] = t->code[at];
    else
        t->ncode++;
    t->code[at] = rec;
    return rec;
fail:
    if (spy_fail_last() == SPY_FAIL_NONE)   /* read, but not as a code object: torn */
        spy_fail_set(SPY_FAIL_TORN, AP_EIO, "the code object at 0x%llx could not be read",
                     (unsigned long long)addr);
    free(c.name);
    free(c.qualname);
    free(c.filename);
    free(c.linetable);
    return NULL;
}

/* Free one record. */
static void code_free(spy_code *c) {
    free(c->name);
    free(c->qualname);
    free(c->filename);
    free(c->linetable);
    free(c);
}

/* Free the records retired by the previous sample (nothing points at them now). */
static void code_free_retired(spy_target *t) {
    for (size_t i = 0; i < t->nretired; i++)
        code_free(t->retired[i]);
    t->nretired = 0;
}

/* The cached record of the code object at addr, reading it the first time (*fresh = 1
 * then); NULL as code_read(). */
static const spy_code *code_get(spy_target *t, uint64_t addr, int *fresh) {
    uint64_t *slot = ap_map_get(&t->codes, addr);
    *fresh = slot == NULL;
    return slot ? t->code[*slot - 1] : code_read(t, addr);
}

/* ---- the location table ------------------------------------------------------------ */

static uint64_t varint(const uint8_t **p, const uint8_t *end) {
    uint64_t v = 0;
    unsigned shift = 0;
    while (*p < end) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 63) << shift;
        shift += 6;
        if (!(b & 64) || shift > 60)
            break;
    }
    return v;
}

static int64_t svarint(const uint8_t **p, const uint8_t *end) {
    uint64_t u = varint(p, end);
    return u & 1 ? -(int64_t)(u >> 1) : (int64_t)(u >> 1);
}

#define LINE_CLAMP ((int64_t)1 << 40)

int spy_line_of(const uint8_t *table, size_t len, uint32_t firstlineno, int64_t offset) {
    /* Entries cover runs of code units (2 bytes); each starts with a byte whose top bit
     * is set: bits 3-6 the form, bits 0-2 the run length - 1. */
    if (offset < 0)
        return (int)firstlineno;
    int64_t unit = offset / 2, addr = 0, line = firstlineno;
    const uint8_t *p = table, *end = table + len;
    while (p < end) {
        uint8_t b = *p++;
        unsigned form = b >> 3 & 15, run = (b & 7) + 1;
        int known = 1;
        if (form == 15) {
            known = 0;                         /* no location */
        } else if (form == 14) {
            line += svarint(&p, end);          /* long form: line, end line, columns */
            varint(&p, end);
            varint(&p, end);
            varint(&p, end);
        } else if (form == 13) {
            line += svarint(&p, end);          /* no columns */
        } else if (form >= 10) {
            line += form - 10;                 /* one-line form, two column bytes */
            p += end - p < 2 ? end - p : 2;
        } else if (p < end) {
            p += 1;                            /* short form: same line, one column byte */
        }
        /* A delta is under 2^61: clamping keeps a corrupt table from overflowing. */
        line = line > LINE_CLAMP ? LINE_CLAMP : line < -LINE_CLAMP ? -LINE_CLAMP : line;
        if (unit >= addr && unit < addr + run)
            return known && line > 0 && line <= INT_MAX ? (int)line : -1;
        addr += run;
        while (p < end && !(*p & 0x80))
            p++;                               /* a malformed entry: resynchronise */
    }
    return -1;
}

/* ---- threads and frames ------------------------------------------------------------- */

/* Check the cached records a walk used (n frames; addr[i] and off[i] the code object
 * and instruction offset of frame i, fresh[i] 1 when its record was read by this walk)
 * against the objects at those addresses now, with one read; a record whose object was
 * freed and whose address now holds another code object is read again.  Returns 0,
 * 1 when the check could not be read (torn), -1 when the target is gone or refused. */
static int check_codes(spy_target *t, spy_thread *th, const uint64_t *addr,
                       const int64_t *off, const uint8_t *fresh) {
    const spy_layout *l = &t->lay;
    uint32_t len = code_header_len(l);
    uint64_t want[SPY_MAX_DEPTH];
    size_t idx[SPY_MAX_DEPTH], n = 0;
    for (size_t i = 0; i < th->nframes; i++)
        if (!fresh[i]) {
            want[n] = addr[i];
            idx[n++] = i;
        }
    if (n == 0)
        return 0;
    if (!t->check && !(t->check = malloc((size_t)SPY_MAX_DEPTH * len)))
        return spy_fail_set(SPY_FAIL_OTHER, AP_ENOMEM, "out of memory");
    if (spy_read_many(t->pid, want, n, t->check, len) != 0)
        return spy_fail_last() == SPY_FAIL_TORN ? 1 : -1;
    for (size_t k = 0; k < n; k++) {
        spy_frame *f = &th->frames[idx[k]];
        uint64_t now[5];
        code_print(l, t->check + k * len, now);
        if (memcmp(now, f->code->print, sizeof now) == 0)
            continue;
        uint64_t *slot = ap_map_get(&t->codes, want[k]);   /* read again for a deeper frame */
        const spy_code *c = slot && memcmp(now, t->code[*slot - 1]->print, sizeof now) == 0
                                ? t->code[*slot - 1] : code_read(t, want[k]);
        if (!c)
            return spy_fail_last() == SPY_FAIL_PERM || spy_fail_last() == SPY_FAIL_NOPROC ? -1 : 1;
        f->code = c;
        f->line = spy_line_of(c->linetable, c->linetable_len, c->firstlineno, off[idx[k]]);
    }
    return 0;
}

/* The frames of one thread, innermost first; frame is its innermost _PyInterpreterFrame. */
static int walk_frames(spy_target *t, uint64_t frame, spy_thread *th) {
    const spy_layout *l = &t->lay;
    uint32_t end = max4(l->fr_code, l->fr_instr, l->fr_previous, l->fr_owner) + 8;
    uint8_t buf[256];
    if (end > sizeof buf)
        return ap_err_set(AP_EINVAL, "frame layout out of range");
    uint64_t addr[SPY_MAX_DEPTH], at[SPY_MAX_DEPTH], raw[SPY_MAX_DEPTH];
    int64_t offs[SPY_MAX_DEPTH];
    uint8_t fresh[SPY_MAX_DEPTH];
    size_t hops = 0;
    /* From 3.12 every chain ends at an entry frame (owned by the C stack or the
     * interpreter): a chain that ends elsewhere was read while the thread changed it. */
    int has_entry = l->owner_cstack != 255 || l->owner_interpreter != 255, bottom = 1;
    while (frame && hops++ < 4 * SPY_MAX_DEPTH) {
        if (th->nframes == SPY_MAX_DEPTH) {
            th->truncated = 1;
            break;
        }
        if (spy_read(t->pid, frame, buf, end) != 0) {
            if (spy_fail_last() != SPY_FAIL_TORN)
                return -1;
            goto torn;
        }
        unsigned owner = buf[l->fr_owner];
        uint64_t code = u64_at(buf, l->fr_code), instr = u64_at(buf, l->fr_instr);
        at[th->nframes] = frame + l->fr_code;
        raw[th->nframes] = code;
        frame = u64_at(buf, l->fr_previous);
        bottom = owner == l->owner_cstack || owner == l->owner_interpreter;
        if (bottom)
            continue;
        if (l->code_tagged)
            code &= ~(uint64_t)7;
        if (!code)
            continue;
        int was_read;
        const spy_code *c = code_get(t, code, &was_read);
        if (!c) {
            if (spy_fail_last() == SPY_FAIL_PERM || spy_fail_last() == SPY_FAIL_NOPROC)
                return -1;
            goto torn;
        }
        int64_t off = (int64_t)(instr - (code + l->co_code_adaptive));
        if (off > (int64_t)LINETABLE_MAX * 16 || off < -16)
            off = -1;
        addr[th->nframes] = code;
        offs[th->nframes] = off;
        fresh[th->nframes] = (uint8_t)was_read;
        th->frames[th->nframes].code = c;
        th->frames[th->nframes].line = spy_line_of(c->linetable, c->linetable_len, c->firstlineno, off);
        th->nframes++;
    }
    if (frame == 0 && has_entry && !bottom)
        goto torn;
    /* The thread may have returned from the frames read first and called others into
     * the same memory while the walk went on (a stack rebuilt to the same depth ends in
     * the same frame, so the ends do not tell): the code of every frame, read again in
     * one go, must be what the walk read. */
    if (th->nframes > 1) {
        uint64_t now[SPY_MAX_DEPTH];
        if (spy_read_many(t->pid, at, th->nframes, now, sizeof now[0]) != 0) {
            if (spy_fail_last() != SPY_FAIL_TORN)
                return -1;
            goto torn;
        }
        if (memcmp(now, raw, th->nframes * sizeof now[0]) != 0)
            goto torn;
    }
    int checked = check_codes(t, th, addr, offs, fresh);
    if (checked < 0)
        return -1;
    if (checked == 0)
        return 0;
torn:
    /* A stack with a hole would put its inner frames under the wrong callers. */
    th->nframes = 0;
    th->torn = 1;
    t->torn++;
    return 0;
}

int spy_sample(spy_target *t, spy_thread *threads, size_t max, size_t *n) {
    const spy_layout *l = &t->lay;
    *n = 0;
    code_free_retired(t);
    uint64_t interp, ts, gil = 0, holder = 0;
    if (spy_read_ptr(t->pid, t->sym.runtime + l->rt_interpreters_head, &interp) != 0)
        return -1;
    if (!interp)
        return 0;   /* not initialised yet, or finalised */
    if (spy_read_ptr(t->pid, interp + l->is_threads_head, &ts) != 0)
        return -1;
    if (l->rt_gil)
        gil = t->sym.runtime + l->rt_gil;
    else if (spy_read_ptr(t->pid, interp + l->is_gil_ptr, &gil) != 0)
        gil = 0;
    if (gil) {
        int locked = 0;
        if (spy_read(t->pid, gil + l->gil_locked, &locked, sizeof locked) == 0 && locked &&
            spy_read_ptr(t->pid, gil + l->gil_last_holder, &holder) != 0)
            holder = 0;
    }
    uint32_t end = max4(l->ts_next, l->ts_thread_id, l->ts_native_thread_id, l->ts_frame) + 8;
    uint8_t buf[512];
    while (ts && *n < max) {
        if (spy_read(t->pid, ts, buf, end) != 0) {
            if (spy_fail_last() != SPY_FAIL_TORN)
                return -1;
            t->torn++;
            break;
        }
        spy_thread *th = &threads[*n];
        th->tstate = ts;
        th->pthread_id = u64_at(buf, l->ts_thread_id);
        th->tid = (pid_t)u64_at(buf, l->ts_native_thread_id);
        th->gil = gil ? holder == ts : -1;
        th->nframes = 0;
        th->truncated = 0;
        th->torn = 0;
        uint64_t frame = u64_at(buf, l->ts_frame);
        if (l->has_cframe && frame && spy_read_ptr(t->pid, frame + l->cf_current_frame, &frame) != 0) {
            if (spy_fail_last() != SPY_FAIL_TORN)
                return -1;
            t->torn++;
            th->torn = 1;
            frame = 0;
        }
        if (walk_frames(t, frame, th) != 0)
            return -1;
        ts = u64_at(buf, l->ts_next);
        (*n)++;
    }
    return 0;
}
