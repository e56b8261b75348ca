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

static void await_work_free(struct spy_awaitwork *w);

void spy_target_close(spy_target *t) {
    free(t->types);
    await_work_free(t->aw);
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
    for (unsigned i = 0; i < SPY_CODE_LINES; i++)
        c.line_off[i] = INT64_MIN;   /* no offset is that */
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

/* The line of instruction offset off of the code record c, from its small cache when it
 * was asked for lately.  Can't fail. */
static int code_line(const spy_code *cc, int64_t off) {
    spy_code *c = (spy_code *)cc;   /* the target's own record: its cache may change */
    for (unsigned i = 0; i < SPY_CODE_LINES; i++)
        if (c->line_off[i] == off)
            return c->line_at[i];
    int line = spy_line_of(c->linetable, c->linetable_len, c->firstlineno, off);
    unsigned at = c->line_next++ % SPY_CODE_LINES;
    c->line_off[at] = off;
    c->line_at[at] = line;
    return line;
}

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
        f->line = code_line(c, off[idx[k]]);
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
        if (owner == l->owner_generator) {   /* keep the outermost ones */
            if (th->ngen == SPY_GEN_FRAMES) {
                memmove(th->gen_frames, th->gen_frames + 1, (SPY_GEN_FRAMES - 1) * sizeof th->gen_frames[0]);
                th->ngen--;
            }
            th->gen_frames[th->ngen++] = frame;
        }
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
        th->frames[th->nframes].line = code_line(c, off);
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
    th->ngen = 0;
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
    t->interp = interp;
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
        th->ngen = 0;
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

/* ---- await chains ------------------------------------------------------------------- */

/* A type's name as read once, by the type's address. */
typedef struct spy_typename {
    uint64_t type;
    char name[SPY_LEAF_MAX];
} spy_typename;

#define TYPES_MAX 256

/* The tp_name of the type at `type`, into name (cut to fit), read once and cached.
 * Returns 0, 1 when torn (the type could not be read), -1 as spy_read() for a gone
 * target or AP_ENOMEM. */
static int type_name(spy_target *t, uint64_t type, char name[SPY_LEAF_MAX]) {
    for (size_t i = 0; i < t->ntypes; i++)
        if (t->types[i].type == type) {
            memcpy(name, t->types[i].name, SPY_LEAF_MAX);
            return 0;
        }
    uint64_t tp_name;
    if (!type || spy_read_ptr(t->pid, type + t->lay.type_name, &tp_name) != 0)
        return !type || spy_fail_last() == SPY_FAIL_TORN ? 1 : -1;
    /* a name may end near the end of a mapping: read less until a read succeeds */
    size_t len = SPY_LEAF_MAX - 1;
    memset(name, 0, SPY_LEAF_MAX);
    while (spy_read(t->pid, tp_name, name, len) != 0) {
        if (spy_fail_last() != SPY_FAIL_TORN)
            return -1;
        if ((len /= 2) < 8)
            return 1;
    }
    name[len] = '\0';
    if (!t->types && !(t->types = malloc(TYPES_MAX * sizeof *t->types)))
        return spy_fail_set(SPY_FAIL_OTHER, AP_ENOMEM, "out of memory");
    if (t->ntypes < TYPES_MAX) {
        t->types[t->ntypes].type = type;
        memcpy(t->types[t->ntypes++].name, name, SPY_LEAF_MAX);
    }
    return 0;
}

static int is_gen_type(const char *name) {
    return strcmp(name, "coroutine") == 0 || strcmp(name, "generator") == 0 ||
           strcmp(name, "async_generator") == 0;
}

/* Where an awaitable of type name keeps the generator it drives, 0 when it is not one:
 * the middleware's (t->via_name), and what an async generator's asend() and athrow()
 * return (`await anext(gen)`, `async with` over an async generator's context
 * manager). */
static uint32_t through_off(const spy_target *t, const char *name) {
    if (t->via_off && strcmp(name, t->via_name) == 0)
        return t->via_off;
    if (strcmp(name, "async_generator_asend") == 0)
        return t->lay.asend_gen;
    if (strcmp(name, "async_generator_athrow") == 0)
        return t->lay.athrow_gen;
    return 0;
}

/* The state byte s of a generator is one of a suspension in an await. */
static int in_yf_range(const spy_layout *l, uint8_t s) {
    return (int8_t)s >= (int8_t)l->gen_yf_lo && (int8_t)s <= (int8_t)l->gen_yf_hi;
}

/* A generator is suspended: in an await, or (3.13+: the state just below those) at a
 * plain yield; 3.11/3.12 have one suspended state for both. */
static int is_suspended(const spy_layout *l, uint8_t s) {
    return in_yf_range(l, s) || (!l->op_resume && (int8_t)s == (int8_t)l->gen_yf_lo - 1);
}

/* Slots of a frame's value stack read with the generator (the top is usually there). */
#define STACK_IN_BLOCK 24
/* Most chains spy_await_many() reads at once. */
#define AWAIT_MANY 1024
/* The target's page size, as far as which reads can fail is concerned (a smaller page
 * than the real one only makes a read after a failed one shorter). */
#define SPY_PAGE 4096u

struct spy_awaitwork {
    size_t cap;          /* chains the arrays hold */
    uint32_t want;       /* bytes read per object: a generator, its frame, some stack */
    uint32_t head;       /* of those, the generator and its frame's fields read */
    uint64_t *obj;       /* [cap]: the object each chain reads next */
    uint64_t *loc;       /* [cap]: where its frame's stack top is, when not in the block */
    uint64_t *addr;      /* [cap * SPY_MAX_DEPTH]: code address of each frame, outermost first */
    int64_t *offs;       /* [cap * SPY_MAX_DEPTH]: instruction offset of each frame */
    uint8_t *fresh;      /* [cap * SPY_MAX_DEPTH]: its record was read by this walk */
    uint64_t *objs;      /* [cap * SPY_MAX_DEPTH]: the coroutine of each frame */
    uint8_t *via;        /* [cap]: the next object is what an awaitable drives */
    uint8_t *blocks;     /* [cap * want] */
    size_t *go, *top;    /* chains still going; chains whose stack top is to be read */
};

static void await_work_free(struct spy_awaitwork *w) {
    if (!w)
        return;
    free(w->obj);
    free(w->loc);
    free(w->addr);
    free(w->offs);
    free(w->fresh);
    free(w->objs);
    free(w->via);
    free(w->blocks);
    free(w->go);
    free(w->top);
    free(w);
}

/* t->aw, able to hold n chains.  NULL on AP_ENOMEM. */
static struct spy_awaitwork *await_work(spy_target *t, size_t n, uint32_t want) {
    struct spy_awaitwork *w = t->aw;
    if (w && w->cap >= n && w->want == want)
        return w;
    await_work_free(w);
    t->aw = w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->cap = n;
    w->want = want;
    w->obj = malloc(n * sizeof *w->obj);
    w->loc = malloc(n * sizeof *w->loc);
    w->addr = malloc(n * SPY_MAX_DEPTH * sizeof *w->addr);
    w->offs = malloc(n * SPY_MAX_DEPTH * sizeof *w->offs);
    w->fresh = malloc(n * SPY_MAX_DEPTH);
    w->objs = malloc(n * SPY_MAX_DEPTH * sizeof *w->objs);
    w->via = malloc(n);
    w->blocks = malloc(n * want);
    w->go = malloc(n * sizeof *w->go);
    w->top = malloc(n * sizeof *w->top);
    if (!w->obj || !w->loc || !w->addr || !w->offs || !w->fresh || !w->objs || !w->via || !w->blocks || !w->go || !w->top) {
        await_work_free(w);
        t->aw = NULL;
        return NULL;
    }
    return w;
}

/* The read of a chain failed: -1 when the target is gone, refuses or memory ran out,
 * else the chain is torn (out emptied, counted) and 0. */
static int chain_failed(spy_target *t, spy_thread *out, char *leaf) {
    spy_fail k = spy_fail_last();
    if (k == SPY_FAIL_PERM || k == SPY_FAIL_NOPROC || k == SPY_FAIL_OTHER)
        return -1;
    out->nframes = 0;
    out->torn = 1;
    leaf[0] = '\0';
    t->torn++;
    spy_fail_clear();
    return 0;
}

/* 3.11/3.12: the instruction after instr resumes from an await (cached by address).
 * Returns 1 or 0, or -1 when it could not be read. */
static int resumes_from_await(spy_target *t, uint64_t instr) {
    const spy_layout *l = &t->lay;
    size_t h = (size_t)(instr >> 1) % (sizeof t->yf_key / sizeof t->yf_key[0]);
    if (t->yf_key[h] == instr)
        return t->yf_val[h];
    uint8_t next[2];
    if (spy_read(t->pid, instr + 2, next, 2) != 0)
        return -1;
    int yes = (next[0] == l->op_resume || next[0] == l->op_resume_alt) && next[1] >= 2;
    t->yf_key[h] = instr;
    t->yf_val[h] = (uint8_t)yes;
    return yes;
}

enum { CHAIN_DONE, CHAIN_NEXT, CHAIN_TOP };

/* The object on top of a value stack from its top two slots (the top one second): a
 * stack reference's tag bits cleared, and past a null top slot.  0 when none. */
static uint64_t stack_top(const spy_layout *l, const uint8_t two[16]) {
    uint64_t top = u64_at(two, 8);
    if (!l->fr_stack_is_ptr)
        return top;
    top &= ~(uint64_t)7;
    return top ? top : u64_at(two, 0) & ~(uint64_t)7;
}

/* One step of chain i: the object w->obj[i], read into buf (got bytes of w->want).
 * Appends its frame to out (outermost first) and finds what it awaits.  Returns
 * CHAIN_NEXT (w->obj[i] is the next object), CHAIN_TOP (the next object is on the
 * stack whose top two slots are at w->loc[i]), CHAIN_DONE (the chain ended, or is
 * torn), or -1 as chain_failed(). */
static int chain_step(spy_target *t, struct spy_awaitwork *w, size_t i, const uint8_t *buf,
                      uint32_t got, spy_thread *out, char *leaf, int *res) {
    const spy_layout *l = &t->lay;
    uint64_t obj = w->obj[i];
    size_t n = out->nframes;
    char tn[SPY_LEAF_MAX];
    int rc = type_name(t, u64_at(buf, 8), tn);
    if (rc < 0)
        return -1;
    if (rc > 0)
        return chain_failed(t, out, leaf) < 0 ? -1 : CHAIN_DONE;
    int gen = is_gen_type(tn), via = w->via[i];
    w->via[i] = 0;
    if (gen && got < w->head)
        return chain_failed(t, out, leaf) < 0 ? -1 : CHAIN_DONE;   /* its header is not mapped */
    if (!gen) {
        if (n == 0)
            return CHAIN_DONE;   /* not a coroutine: res stays 0 */
        if (via)   /* an awaitable's coroutine must be one */
            return chain_failed(t, out, leaf) < 0 ? -1 : CHAIN_DONE;
        uint32_t through = through_off(t, tn);
        if (through) {
            /* through the awaitable to the generator it drives (none: it is done) */
            uint64_t next;
            if (got >= through + 8)
                next = u64_at(buf, through);
            else if (spy_read_ptr(t->pid, obj + through, &next) != 0)
                return chain_failed(t, out, leaf) < 0 ? -1 : CHAIN_DONE;
            if (!next)
                return CHAIN_DONE;
            w->obj[i] = next;
            w->via[i] = 1;
            return CHAIN_NEXT;
        }
        if (strcmp(tn, "_asyncio.FutureIter") == 0) {
            /* `await future` awaits the future's iterator, whose first field is it */
            uint64_t fut, type;
            if (spy_read_ptr(t->pid, obj + 16, &fut) != 0 || spy_read_ptr(t->pid, fut + 8, &type) != 0)
                return chain_failed(t, out, leaf) < 0 ? -1 : CHAIN_DONE;
            if ((rc = type_name(t, type, tn)) != 0)
                return rc < 0 || chain_failed(t, out, leaf) < 0 ? -1 : CHAIN_DONE;
            /* `await task`: on into the task's coroutine, so that what the request
             * waits for is one chain (a task that is done has let it go: ends here) */
            uint64_t coro;
            if (strcmp(tn, "_asyncio.Task") == 0 && spy_read_ptr(t->pid, fut + l->task_coro, &coro) == 0 &&
                coro) {
                w->obj[i] = coro;
                w->via[i] = 1;
                return CHAIN_NEXT;
            }
            spy_fail_clear();
        }
        const char *dot = strrchr(tn, '.');
        snprintf(leaf, SPY_LEAF_MAX, "%s", dot ? dot + 1 : tn);
        return CHAIN_DONE;
    }
    uint8_t state = buf[l->gen_frame_state];
    if (!is_suspended(l, state))
        return CHAIN_DONE;   /* the first: running (a thread's sample has it), not started
                                or done; an inner one: just finished, the chain ends above */
    *res = 1;   /* suspended: a chain, or torn */
    if (n == SPY_MAX_DEPTH) {
        out->truncated = 1;
        return CHAIN_DONE;
    }
    const uint8_t *fb = buf + l->gen_iframe;
    uint64_t frame = obj + l->gen_iframe;
    uint64_t code = u64_at(fb, l->fr_code), instr = u64_at(fb, l->fr_instr);
    if (l->code_tagged)
        code &= ~(uint64_t)7;
    int was_read;
    const spy_code *c = code ? code_get(t, code, &was_read) : NULL;
    if (!c)
        return chain_failed(t, out, leaf) < 0 ? -1 : CHAIN_DONE;
    int64_t off = (int64_t)(instr - (code + l->co_code_adaptive));
    if (off > (int64_t)LINETABLE_MAX * 16 || off < -16)
        off = -1;
    w->addr[i * SPY_MAX_DEPTH + n] = code;
    w->offs[i * SPY_MAX_DEPTH + n] = off;
    w->fresh[i * SPY_MAX_DEPTH + n] = (uint8_t)was_read;
    w->objs[i * SPY_MAX_DEPTH + n] = obj;
    out->frames[n].code = c;
    out->frames[n].line = code_line(c, off);
    out->nframes = n + 1;
    int awaits = in_yf_range(l, state);
    if (awaits && l->op_resume && (awaits = resumes_from_await(t, instr)) < 0)
        return chain_failed(t, out, leaf) < 0 ? -1 : CHAIN_DONE;
    if (!awaits)
        return CHAIN_DONE;   /* at a plain yield */
    /* loc: the top two slots of its value stack; the awaited object is the top one
     * (3.15 keeps a null slot above it: then the one below) */
    uint64_t loc;
    if (l->fr_stack_is_ptr) {
        uint64_t sp = u64_at(fb, l->fr_stacktop);
        if (sp < frame + l->fr_localsplus + 8)
            return chain_failed(t, out, leaf) < 0 ? -1 : CHAIN_DONE;
        loc = sp - 16;
    } else {
        int32_t idx;
        memcpy(&idx, fb + l->fr_stacktop, sizeof idx);
        if (idx <= 0)
            return chain_failed(t, out, leaf) < 0 ? -1 : CHAIN_DONE;
        loc = frame + l->fr_localsplus + 8 * (uint64_t)idx - 16;
    }
    if (loc >= obj && loc - obj + 16 <= got) {
        uint64_t top = stack_top(l, buf + (loc - obj));
        if (!top)
            return chain_failed(t, out, leaf) < 0 ? -1 : CHAIN_DONE;
        w->obj[i] = top;
        return CHAIN_NEXT;
    }
    w->loc[i] = loc;
    return CHAIN_TOP;
}

/* Read the object at addr: want bytes or, when that much is not mapped there (an
 * object near the end of a mapping, as the last block of an allocator's region), the
 * bytes to the end of its page (want is at most a page, so the object ends there).
 * *got is what was read.  Returns 0, or -1 as spy_read(). */
static int read_obj(spy_target *t, uint64_t addr, uint8_t *buf, uint32_t want, uint32_t *got) {
    *got = want;
    if (spy_read(t->pid, addr, buf, want) == 0)
        return 0;
    if (spy_fail_last() != SPY_FAIL_TORN)
        return -1;
    uint32_t rest = (uint32_t)(SPY_PAGE - (addr & (SPY_PAGE - 1)));
    *got = rest < 16 ? 16 : rest < want ? rest : want;
    return spy_read(t->pid, addr, buf, *got);
}

int spy_await_many(spy_target *t, const uint64_t *coro, size_t n, spy_thread *out,
                   char (*leaf)[SPY_LEAF_MAX], int *res) {
    const spy_layout *l = &t->lay;
    if (n > AWAIT_MANY)
        return spy_fail_set(SPY_FAIL_OTHER, AP_EINVAL, "%zu await chains at once", n);
    uint32_t fend = max4(l->fr_code, l->fr_instr, l->fr_stacktop, l->fr_owner) + 8;
    uint32_t stack = l->fr_localsplus + 8 * STACK_IN_BLOCK;
    uint32_t want = l->gen_iframe + (fend > stack ? fend : stack);
    uint32_t head = l->gen_iframe + fend;
    if (l->gen_frame_state >= head)
        head = l->gen_frame_state + 1;
    if (want > 1024 || head > want)
        return spy_fail_set(SPY_FAIL_OTHER, AP_EINVAL, "generator layout out of range");
    struct spy_awaitwork *w = await_work(t, n ? n : 1, want);
    if (!w)
        return spy_fail_set(SPY_FAIL_OTHER, AP_ENOMEM, "out of memory");
    w->head = head;
    spy_fail_clear();
    size_t ngo = 0;
    for (size_t i = 0; i < n; i++) {
        out[i].nframes = 0;
        out[i].truncated = 0;
        out[i].torn = 0;
        leaf[i][0] = '\0';
        res[i] = 0;
        w->obj[i] = coro[i];
        w->via[i] = 0;
        w->go[ngo++] = i;
    }
    /* level by level: the next object of every chain still going, in one read */
    while (ngo) {
        uint64_t addrs[AWAIT_MANY];
        for (size_t k = 0; k < ngo; k++)
            addrs[k] = w->obj[w->go[k]];
        int batched = spy_read_many(t->pid, addrs, ngo, w->blocks, want) == 0;
        if (!batched && spy_fail_last() != SPY_FAIL_TORN)
            return -1;
        size_t nnext = 0, ntop = 0;
        for (size_t k = 0; k < ngo; k++) {
            size_t i = w->go[k];
            uint8_t *buf = w->blocks + k * want;
            uint32_t got = want;
            if (!batched && read_obj(t, w->obj[i], buf, want, &got) != 0) {
                if (chain_failed(t, &out[i], leaf[i]) < 0)
                    return -1;
                continue;
            }
            int st = chain_step(t, w, i, buf, got, &out[i], leaf[i], &res[i]);
            if (st < 0)
                return -1;
            if (st == CHAIN_NEXT)
                w->go[nnext++] = i;
            else if (st == CHAIN_TOP)
                w->top[ntop++] = i;
        }
        /* the stack tops that were not in the blocks, in one read */
        if (ntop) {
            uint8_t vals[AWAIT_MANY][16];
            for (size_t k = 0; k < ntop; k++)
                addrs[k] = w->loc[w->top[k]];
            int ok = spy_read_many(t->pid, addrs, ntop, vals, sizeof vals[0]) == 0;
            if (!ok && spy_fail_last() != SPY_FAIL_TORN)
                return -1;
            for (size_t k = 0; k < ntop; k++) {
                size_t i = w->top[k];
                uint64_t top = 0;
                if (ok || spy_read(t->pid, addrs[k], vals[k], sizeof vals[k]) == 0)
                    top = stack_top(l, vals[k]);
                if (!top) {
                    if (chain_failed(t, &out[i], leaf[i]) < 0)
                        return -1;
                    continue;
                }
                w->obj[i] = top;
                w->go[nnext++] = i;
            }
        }
        ngo = nnext;
    }
    /* The chains must not have moved on meanwhile: each outermost one is still suspended
     * (one read for all), and the code objects are the ones the records say. */
    uint8_t states[AWAIT_MANY];
    uint64_t addrs[AWAIT_MANY];
    size_t nk = 0;
    for (size_t i = 0; i < n; i++)
        if (out[i].nframes)
            addrs[nk++] = coro[i] + l->gen_frame_state;
    int ok = spy_read_many(t->pid, addrs, nk, states, 1) == 0;
    if (!ok && spy_fail_last() != SPY_FAIL_TORN)
        return -1;
    nk = 0;
    for (size_t i = 0; i < n; i++) {
        spy_thread *o = &out[i];
        size_t m = o->nframes;
        if (m == 0)
            continue;
        if (!ok || !is_suspended(l, states[nk++])) {
            if (chain_failed(t, o, leaf[i]) < 0)
                return -1;
            continue;
        }
        /* innermost first, as the thread stacks */
        uint64_t *a = w->addr + i * SPY_MAX_DEPTH;
        int64_t *of = w->offs + i * SPY_MAX_DEPTH;
        uint8_t *fr = w->fresh + i * SPY_MAX_DEPTH;
        uint64_t *ob = w->objs + i * SPY_MAX_DEPTH;
        for (size_t x = 0, y = m - 1; x < y; x++, y--) {
            uint64_t tb = ob[x];
            ob[x] = ob[y];
            ob[y] = tb;
            spy_frame f = o->frames[x];
            o->frames[x] = o->frames[y];
            o->frames[y] = f;
            uint64_t ta = a[x];
            a[x] = a[y];
            a[y] = ta;
            int64_t to = of[x];
            of[x] = of[y];
            of[y] = to;
            uint8_t tf = fr[x];
            fr[x] = fr[y];
            fr[y] = tf;
        }
        int rc = check_codes(t, o, a, of, fr);
        if (rc < 0)
            return -1;
        if (rc > 0 && chain_failed(t, o, leaf[i]) < 0)
            return -1;
    }
    return 0;
}

int spy_await(spy_target *t, uint64_t coro, spy_thread *out, char leaf[SPY_LEAF_MAX]) {
    int res;
    char (*lf)[SPY_LEAF_MAX] = (char (*)[SPY_LEAF_MAX])leaf;
    if (spy_await_many(t, &coro, 1, out, lf, &res) != 0)
        return -1;
    return res;
}

const uint64_t *spy_await_objects(const spy_target *t, size_t i) {
    return t->aw ? t->aw->objs + i * SPY_MAX_DEPTH : NULL;
}

/* ---- asyncio tasks ------------------------------------------------------------------ */

/* Py_AsyncioModuleDebugOffsets as 3.14 and 3.15 lay it out: 13 uint64_t. */
enum { AIO_TASK_SIZE, AIO_TASK_NAME, AIO_TASK_AWAITED_BY, AIO_TASK_IS_TASK,
       AIO_TASK_AWAITED_BY_IS_SET, AIO_TASK_CORO, AIO_TASK_NODE, AIO_IS_SIZE, AIO_IS_HEAD,
       AIO_TS_SIZE, AIO_TS_LOOP, AIO_TS_TASK, AIO_TS_HEAD, AIO_N };

/* After a failed read: -1 when the target is gone or refuses reads, else 0 with the
 * failure forgotten (and, with count, counted in t->torn). */
static int torn_read(spy_target *t, int count) {
    if (spy_fail_last() != SPY_FAIL_TORN)
        return -1;
    if (count)
        t->torn++;
    spy_fail_clear();
    return 0;
}

/* The first len bytes of the n objects at addrs into heads (len apart), read at once,
 * else one by one (an unmapped one: zeros).  0, or -1 when the target is gone. */
static int read_heads(spy_target *t, const uint64_t *addrs, size_t n, uint8_t *heads, size_t len) {
    if (spy_read_many(t->pid, addrs, n, heads, len) == 0)
        return 0;
    if (spy_fail_last() != SPY_FAIL_TORN)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (spy_read(t->pid, addrs[i], heads + i * len, len) != 0) {
            if (spy_fail_last() != SPY_FAIL_TORN)
                return -1;
            memset(heads + i * len, 0, len);
        }
    spy_fail_clear();
    return 0;
}

/* Whether the object whose head (its first 16 bytes) is h has type name want (or, with
 * prefix, a name starting with want).  -1 when the target is gone. */
static int has_type(spy_target *t, const uint8_t *h, const char *want, int prefix) {
    char tn[SPY_LEAF_MAX];
    int rc = type_name(t, u64_at(h, 8), tn);
    if (rc != 0) {
        if (rc < 0)
            return -1;
        spy_fail_clear();
        return 0;
    }
    return prefix ? strncmp(tn, want, strlen(want)) == 0 : strcmp(tn, want) == 0;
}

/* ---- a module's attributes from outside (asyncio's registries before 3.14) --------- */

/* Entries of a dict read at most. */
#define DICT_ENTRIES_MAX 8192

/* The type name of the object at obj is want: 1, 0 when not (or unreadable), -1 when the
 * target is gone. */
static int obj_is(spy_target *t, uint64_t obj, const char *want) {
    uint8_t head[16];
    if (!obj || spy_read(t->pid, obj, head, sizeof head) != 0) {
        if (obj && spy_fail_last() != SPY_FAIL_TORN)
            return -1;
        spy_fail_clear();
        return 0;
    }
    return has_type(t, head, want, 0);
}

/* The value of the str key name in the dict at dict (combined or split): 0 with *out,
 * 1 when it is not there (or could not be read now), -1 when the target is gone. */
static int dict_get(spy_target *t, uint64_t dict, const char *name, uint64_t *out) {
    const spy_layout *l = &t->lay;
    static uint8_t entries[DICT_ENTRIES_MAX * 24];
    static uint64_t keys[AWAIT_MANY];
    static uint32_t at[AWAIT_MANY];
    static uint8_t heads[AWAIT_MANY * 32];
    uint64_t dk, values;
    uint8_t kh[64];
    if (spy_read_ptr(t->pid, dict + l->dict_keys, &dk) != 0 ||
        spy_read_ptr(t->pid, dict + l->dict_values, &values) != 0 || l->dk_indices > sizeof kh ||
        spy_read(t->pid, dk, kh, l->dk_indices) != 0)
        goto torn;
    unsigned log2ib = kh[l->dk_log2_index_bytes], kind = kh[l->dk_kind];
    int64_t n = (int64_t)u64_at(kh, l->dk_nentries);
    if (log2ib > 24 || n < 0 || kind > 2)
        return 1;
    if (n > DICT_ENTRIES_MAX)
        n = DICT_ENTRIES_MAX;
    /* entries: {hash, key, value} of a general dict, {key, value} of a str-keyed one */
    uint32_t esize = kind == 0 ? 24 : 16, koff = kind == 0 ? 8 : 0;
    uint64_t first = dk + l->dk_indices + ((uint64_t)1 << log2ib);
    if (n && spy_read(t->pid, first, entries, (size_t)n * esize) != 0)
        goto torn;
    size_t len = strlen(name);
    for (int64_t base = 0; base < n; base += AWAIT_MANY) {
        size_t nk = 0;
        for (int64_t i = base; i < n && i < base + AWAIT_MANY; i++)
            if ((keys[nk] = u64_at(entries + i * esize, koff)) != 0)
                at[nk++] = (uint32_t)i;
        if (l->u_length + 8 > 32 || read_heads(t, keys, nk, heads, 32) != 0)
            return l->u_length + 8 > 32 ? 1 : -1;
        for (size_t k = 0; k < nk; k++) {
            if (u64_at(heads + k * 32, l->u_length) != len)
                continue;
            char *s = read_str(t, keys[k]);
            int same = s && strcmp(s, name) == 0;
            free(s);
            if (!same)
                continue;
            if (!values) {
                *out = u64_at(entries + (size_t)at[k] * esize, koff + 8);
                return *out ? 0 : 1;
            }
            /* split: the values are apart, in the order of the shared keys */
            if (spy_read_ptr(t->pid, values + l->dv_values + 8 * (uint64_t)at[k], out) != 0)
                goto torn;
            return *out ? 0 : 1;
        }
    }
    return 1;
torn:
    return torn_read(t, 0) < 0 ? -1 : 1;
}

/* The first attribute an instance of a plain class was given (its first value when the
 * attributes are kept as values apart from a dict), or its attribute name from its dict
 * when it has one: 0 with *out, 1 when not found now, -1 when the target is gone. */
static int first_attr(spy_target *t, uint64_t obj, const char *name, uint64_t *out) {
    const spy_layout *l = &t->lay;
    uint64_t values = 0, dict = 0;
    if (t->minor == 11) {   /* values before the object, else its dict */
        if (spy_read_ptr(t->pid, obj - 32, &values) != 0 ||
            (!values && spy_read_ptr(t->pid, obj - 24, &dict) != 0))
            goto torn;
    } else if (t->minor == 12) {   /* one slot: values (tagged: odd) or its dict */
        uint64_t dv;
        if (spy_read_ptr(t->pid, obj - 24, &dv) != 0)
            goto torn;
        if (dv & 1)
            values = dv + 1;
        else
            dict = dv;
    } else {   /* values inline after the object while valid, else its dict */
        uint64_t type, size;
        uint8_t valid = 0;
        if (spy_read_ptr(t->pid, obj + 8, &type) != 0 ||
            spy_read_ptr(t->pid, type + l->type_basicsize, &size) != 0 || size > 4096 ||
            spy_read(t->pid, obj + size + l->dv_valid, &valid, 1) != 0)
            goto torn;
        if (valid)
            values = obj + size;
        else if (spy_read_ptr(t->pid, obj - 24, &dict) != 0)
            goto torn;
    }
    if (values)
        return spy_read_ptr(t->pid, values + l->dv_values, out) == 0 ? 0
               : spy_fail_last() == SPY_FAIL_TORN ? (spy_fail_clear(), 1) : -1;
    return dict ? dict_get(t, dict, name, out) : 1;
torn:
    return torn_read(t, 0) < 0 ? -1 : 1;
}

/* Before 3.14: the sets asyncio registers its tasks in, from sys.modules["asyncio.tasks"]:
 * its WeakSet's data (_scheduled_tasks, 3.11: _all_tasks) and, 3.12+, _eager_tasks.
 * 1 when found (t->task_sets), 0 not (yet: asyncio not imported), -1 when the target is
 * gone. */
static int find_task_sets(spy_target *t) {
    const spy_layout *l = &t->lay;
    uint64_t modules, mod, md, weak, set;
    int rc;
    if (!t->interp || spy_read_ptr(t->pid, t->interp + l->is_modules, &modules) != 0)
        return t->interp && spy_fail_last() != SPY_FAIL_TORN ? -1 : 0;
    if ((rc = dict_get(t, modules, "asyncio.tasks", &mod)) != 0)
        return rc < 0 ? -1 : 0;
    if (spy_read_ptr(t->pid, mod + l->mod_dict, &md) != 0)
        return spy_fail_last() != SPY_FAIL_TORN ? -1 : 0;
    uint64_t sets[2] = {0, 0};
    rc = dict_get(t, md, t->minor >= 12 ? "_scheduled_tasks" : "_all_tasks", &weak);
    if (rc == 0 && (rc = first_attr(t, weak, "data", &set)) == 0 && (rc = obj_is(t, set, "set")) == 1)
        sets[0] = set;
    if (rc < 0)
        return -1;
    if (t->minor >= 12 && (rc = dict_get(t, md, "_eager_tasks", &set)) == 0 &&
        (rc = obj_is(t, set, "set")) == 1)
        sets[1] = set;
    if (rc < 0)
        return -1;
    memcpy(t->task_sets, sets, sizeof sets);
    return sets[0] || sets[1];
}

int spy_tasks_find(spy_target *t) {
    if (t->aio.found)
        return 1;
    if (t->minor < 14)
        return t->task_sets[0] || t->task_sets[1] ? 1 : find_task_sets(t);
    /* in the interpreter when _asyncio is built in, else in its own module */
    uint64_t at = spy_find_in_module(t->pid, t->sym.path, ".AsyncioDebug");
    if (!at)
        at = spy_find_in_module(t->pid, "/_asyncio.", ".AsyncioDebug");
    uint64_t v[AIO_N];
    if (!at)
        return 0;
    if (spy_read(t->pid, at, v, sizeof v) != 0)
        return spy_fail_last() == SPY_FAIL_TORN ? 0 : -1;
    /* offsets that fit their objects, or it is not the layout this reads */
    if (v[AIO_TASK_SIZE] > 1024 || v[AIO_TASK_CORO] + 8 > v[AIO_TASK_SIZE] ||
        v[AIO_TASK_NAME] + 8 > v[AIO_TASK_SIZE] || v[AIO_TASK_NODE] + 16 > v[AIO_TASK_SIZE] ||
        v[AIO_TS_HEAD] + 16 > v[AIO_TS_SIZE] || v[AIO_TS_TASK] + 8 > v[AIO_TS_SIZE] ||
        v[AIO_TS_SIZE] > 65536 || v[AIO_IS_HEAD] + 16 > v[AIO_IS_SIZE] || v[AIO_IS_SIZE] > (1u << 22))
        return 0;
    t->aio = (struct spy_aio){
        .found = 1,
        .task_size = (uint32_t)v[AIO_TASK_SIZE], .task_name = (uint32_t)v[AIO_TASK_NAME],
        .task_coro = (uint32_t)v[AIO_TASK_CORO], .task_node = (uint32_t)v[AIO_TASK_NODE],
        .ts_running_task = (uint32_t)v[AIO_TS_TASK], .ts_tasks_head = (uint32_t)v[AIO_TS_HEAD],
        .is_tasks_head = (uint32_t)v[AIO_IS_HEAD],
    };
    return 1;
}

/* The tasks of the list whose head (a struct llist_node {next, prev}) is at head, of
 * thread tid, running the one at running, appended to out[*got..max).  Returns 0 (a
 * list that changed mid-read is cut there, counted torn), -1 when the target is gone. */
static int tasks_of_list(spy_target *t, uint64_t head, pid_t tid, uint64_t running,
                         spy_task *out, size_t max, size_t *got) {
    const struct spy_aio *a = &t->aio;
    uint64_t node;
    if (spy_read_ptr(t->pid, head, &node) != 0)
        goto torn;
    uint8_t buf[1024];
    while (node && node != head && *got < max) {
        uint64_t task = node - a->task_node;
        if (spy_read(t->pid, task, buf, a->task_size) != 0)
            goto torn;
        spy_task *k = &out[(*got)++];
        k->addr = task;
        k->coro = u64_at(buf, a->task_coro);
        k->name = u64_at(buf, a->task_name);
        k->tid = tid;
        k->running = task == running;
        node = u64_at(buf, a->task_node);
    }
    return 0;
torn:
    return torn_read(t, 1);
}

/* Entries of a set's table read at most (a bigger table is cut: its tasks after these
 * are not listed). */
#define SET_TABLE_MAX 8192

/* The tasks in the set at set (weak: of weak references to them) appended to
 * out[*got..max): _asyncio.Task objects only, thread and running not known.  A torn read
 * lists none of it.  0, or -1 when the target is gone. */
static int tasks_of_set(spy_target *t, uint64_t set, int weak, spy_task *out, size_t max,
                        size_t *got) {
    const spy_layout *l = &t->lay;
    static uint8_t table[SET_TABLE_MAX][16];
    static uint64_t keys[AWAIT_MANY];
    static uint8_t heads[AWAIT_MANY * 256];
    uint8_t head[64];
    if (l->set_table + 8 > sizeof head || spy_read(t->pid, set, head, l->set_table + 8) != 0)
        goto torn;
    uint64_t size = u64_at(head, l->set_mask) + 1, at = u64_at(head, l->set_table);
    if (size > SET_TABLE_MAX)
        size = SET_TABLE_MAX;
    if (spy_read(t->pid, at, table, size * 16) != 0)
        goto torn;
    size_t nk = 0;
    for (size_t i = 0; i < size && nk < AWAIT_MANY && *got + nk < max; i++)
        if (u64_at(table[i], 0))
            keys[nk++] = u64_at(table[i], 0);
    if (weak) {   /* each key a weak reference: its object, when alive */
        if (l->wr_object + 8 > 32 || read_heads(t, keys, nk, heads, 32) != 0)
            return l->wr_object + 8 > 32 ? 0 : -1;
        size_t m = 0;
        for (size_t i = 0; i < nk; i++) {
            int rc = has_type(t, heads + i * 32, "weakref", 1);
            if (rc < 0)
                return -1;
            if (rc && u64_at(heads + i * 32, l->wr_object))
                keys[m++] = u64_at(heads + i * 32, l->wr_object);
        }
        nk = m;
    }
    /* the tasks, at once */
    uint32_t tend = (l->task_coro > l->task_name ? l->task_coro : l->task_name) + 8;
    if (tend > 256 || read_heads(t, keys, nk, heads, tend) != 0)
        return tend > 256 ? 0 : -1;
    for (size_t i = 0; i < nk; i++) {
        const uint8_t *task = heads + i * tend;
        int rc = has_type(t, task, "_asyncio.Task", 0);
        if (rc < 0)
            return -1;
        if (!rc)
            continue;   /* not a task (a dead reference's None), or a Python one */
        spy_task *k = &out[(*got)++];
        k->addr = keys[i];
        k->coro = u64_at(task, l->task_coro);
        k->name = u64_at(task, l->task_name);
        k->tid = -1;
        k->running = 0;
    }
    return 0;
torn:
    return torn_read(t, 1);
}

int spy_tasks(spy_target *t, const spy_thread *threads, size_t n, spy_task *out, size_t max,
              size_t *got) {
    const struct spy_aio *a = &t->aio;
    *got = 0;
    if (!a->found) {
        for (int s = 0; s < 2; s++)
            if (t->task_sets[s] && tasks_of_set(t, t->task_sets[s], s == 0, out, max, got) != 0)
                return -1;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t running = 0;
        if (spy_read_ptr(t->pid, threads[i].tstate + a->ts_running_task, &running) != 0) {
            if (spy_fail_last() != SPY_FAIL_TORN)
                return -1;
            running = 0;
        }
        if (tasks_of_list(t, threads[i].tstate + a->ts_tasks_head, threads[i].tid, running, out,
                          max, got) != 0)
            return -1;
    }
    if (t->interp && tasks_of_list(t, t->interp + a->is_tasks_head, 0, 0, out, max, got) != 0)
        return -1;
    return 0;
}

int spy_task_name(spy_target *t, uint64_t name, char *buf, size_t n) {
    char tn[SPY_LEAF_MAX];
    buf[0] = '\0';
    uint64_t type;
    if (!name || spy_read_ptr(t->pid, name + 8, &type) != 0)
        return !name || spy_fail_last() == SPY_FAIL_TORN ? 1 : -1;
    int rc = type_name(t, type, tn);
    if (rc != 0)
        return rc;
    if (strcmp(tn, "str") == 0) {
        char *s = read_str(t, name);
        if (!s)
            return 1;
        snprintf(buf, n, "%s", s);
        free(s);
        return 0;
    }
    if (strcmp(tn, "int") == 0) {
        /* 30-bit digits after a word of their count: 3.12+ a tag (count << 3 | sign),
         * 3.11 the count itself; names count up from 1 */
        uint64_t tag;
        uint32_t dig[2] = {0, 0};
        if (spy_read_ptr(t->pid, name + 16, &tag) != 0)
            return 1;
        uint64_t nd = t->minor >= 12 ? tag >> 3 : tag;
        if (nd > 2 || (t->minor >= 12 && (tag & 3) != 0) || spy_read(t->pid, name + 24, dig, (size_t)nd * 4) != 0)
            return 1;
        snprintf(buf, n, "Task-%llu", (unsigned long long)dig[0] | (unsigned long long)dig[1] << 30);
        return 0;
    }
    return 1;
}
