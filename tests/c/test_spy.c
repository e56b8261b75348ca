/* test_spy.c -- unit tests of apiprof-spy's pieces that need no target: location tables of 3.11-3.15, reads of this process, its /proc files. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "ap_test.h"
#include "spy_proc.h"
#include "spy_py.h"

/* Location tables of one function compiled by each supported CPython, and the line of
 * each of its code units as co_lines() gives it (-1: no line).  Made by
 * `pythonX.Y tests/c/linetables.py`; the format is the same from 3.11 to 3.15, the
 * tables are not. */
/* Python 3.11.7: sample() of tests/c/linetables.py, first line 5. */
static const uint8_t v311_table[] = {128, 0, 216, 12, 13, 128, 69, 221, 16, 25, 152, 37, 209, 16, 32, 212, 16, 32, 240, 0, 10, 5, 18, 240, 0, 10, 5, 18, 137, 4, 136, 1, 136, 49, 216, 11, 12, 136, 57, 216, 12, 20, 240, 2, 5, 9, 23, 216, 12, 17, 149, 83, 152, 17, 145, 86, 148, 86, 216, 21, 22, 152, 17, 145, 85, 240, 0, 1, 17, 18, 144, 1, 144, 1, 216, 16, 17, 241, 5, 2, 22, 19, 241, 0, 2, 13, 19, 136, 69, 136, 69, 248, 245, 6, 0, 16, 26, 240, 0, 1, 9, 23, 240, 0, 1, 9, 23, 240, 0, 1, 9, 23, 216, 12, 17, 144, 81, 137, 74, 136, 69, 136, 69, 136, 69, 240, 3, 1, 9, 23, 248, 248, 248, 224, 11, 12, 136, 117, 138, 57, 136, 57, 216, 12, 17, 136, 69, 240, 3, 0, 12, 21, 240, 4, 2, 12, 27, 240, 0, 2, 12, 27, 221, 21, 26, 152, 53, 145, 92, 148, 92, 240, 3, 2, 12, 27, 241, 0, 2, 12, 27, 244, 0, 2, 12, 27, 240, 0, 2, 5, 27};
static const int v311_lines[] = {5, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 8, 9, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12, 12, 12, 13, 11, 11, 11, 11, 11, 11, -1, 14, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 14, -1, -1, -1, 16, 16, 16, 16, 16, 16, 17, 17, 16, 18, 18, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 18, 18, 18, 18, 18, 18, 18, 18, 18};
static const uint32_t v311_first = 5;
/* Python 3.12.1: sample() of tests/c/linetables.py, first line 5. */
static const uint8_t v312_table[] = {128, 0, 216, 12, 13, 128, 69, 220, 16, 25, 152, 37, 211, 16, 32, 242, 0, 10, 5, 18, 137, 4, 136, 1, 136, 49, 216, 11, 12, 136, 57, 216, 12, 20, 240, 2, 5, 9, 23, 216, 12, 17, 148, 83, 152, 17, 147, 86, 216, 21, 22, 152, 17, 146, 85, 145, 1, 216, 16, 17, 241, 5, 2, 22, 19, 241, 0, 2, 13, 19, 136, 69, 240, 10, 0, 12, 13, 136, 117, 139, 57, 217, 12, 17, 240, 21, 10, 5, 18, 244, 24, 0, 22, 27, 152, 53, 147, 92, 246, 3, 2, 12, 27, 216, 16, 17, 216, 15, 16, 144, 49, 137, 117, 152, 1, 138, 122, 242, 5, 0, 13, 14, 242, 0, 2, 12, 27, 240, 0, 2, 5, 27, 248, 244, 9, 0, 16, 26, 242, 0, 1, 9, 23, 216, 12, 17, 144, 81, 137, 74, 138, 69, 240, 3, 1, 9, 23, 252, 242, 8, 2, 12, 27};
static const int v312_lines[] = {5, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 8, 9, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12, 12, 12, 13, 11, 11, 11, 11, 11, 16, 16, 16, 16, 16, 16, 17, 17, 7, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 18, 18, 18, 18, 18, 18, 18, 19, 20, 20, 20, 20, 20, 20, 20, 20, 18, 18, 18, 18, 18, 18, 18, -1, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 14, -1, -1, -1, -1, -1, 18, 18, 18};
static const uint32_t v312_first = 5;
/* Python 3.13.0: sample() of tests/c/linetables.py, first line 5. */
static const uint8_t v313_table[] = {128, 0, 216, 12, 13, 128, 69, 220, 16, 25, 152, 37, 214, 16, 32, 137, 4, 136, 1, 216, 11, 12, 137, 57, 217, 12, 20, 240, 2, 5, 9, 23, 216, 12, 17, 148, 83, 152, 17, 147, 86, 216, 21, 22, 152, 17, 151, 85, 145, 1, 216, 16, 17, 241, 5, 2, 22, 19, 241, 0, 2, 13, 19, 136, 69, 240, 10, 0, 12, 13, 141, 57, 217, 12, 17, 241, 21, 0, 17, 33, 244, 24, 0, 22, 27, 152, 53, 148, 92, 243, 3, 2, 12, 27, 217, 21, 33, 144, 1, 216, 15, 16, 144, 49, 137, 117, 152, 1, 137, 122, 247, 5, 0, 13, 14, 217, 21, 33, 241, 3, 2, 12, 27, 240, 0, 2, 5, 27, 248, 244, 9, 0, 16, 26, 243, 0, 1, 9, 23, 216, 12, 17, 144, 81, 137, 74, 138, 69, 240, 3, 1, 9, 23, 252, 242, 8, 2, 12, 27};
static const int v313_lines[] = {5, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 8, 8, 9, 9, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 13, 11, 11, 11, 11, 11, 16, 16, 16, 16, 16, 16, 16, 17, 17, 7, 7, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 18, 18, 18, 18, 19, 19, 19, 20, 20, 20, 20, 20, 20, 20, 18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 18, 18, 18, -1, 14, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 14, -1, -1, -1, -1, -1, 18, 18, 18};
static const uint32_t v313_first = 5;
/* Python 3.14.10: sample() of tests/c/linetables.py, first line 5. */
static const uint8_t v314_table[] = {128, 0, 216, 12, 13, 128, 69, 220, 16, 25, 152, 37, 214, 16, 32, 137, 4, 136, 1, 216, 11, 12, 138, 57, 217, 12, 20, 240, 2, 5, 9, 23, 216, 12, 17, 148, 83, 152, 17, 147, 86, 216, 21, 22, 152, 17, 151, 85, 148, 85, 145, 1, 216, 16, 17, 245, 5, 2, 22, 19, 245, 0, 2, 13, 19, 136, 69, 240, 10, 0, 12, 13, 142, 57, 217, 12, 17, 241, 21, 0, 17, 33, 244, 24, 0, 22, 27, 152, 53, 148, 92, 243, 3, 2, 12, 27, 217, 21, 33, 144, 1, 216, 15, 16, 144, 49, 141, 117, 152, 1, 137, 122, 247, 5, 0, 13, 14, 136, 65, 217, 21, 33, 241, 3, 2, 12, 27, 240, 0, 2, 5, 27, 248, 244, 9, 0, 16, 26, 244, 0, 1, 9, 23, 216, 12, 17, 144, 81, 141, 74, 138, 69, 240, 3, 1, 9, 23, 252, 242, 8, 2, 12, 27};
static const int v314_lines[] = {5, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 8, 8, 8, 9, 9, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 13, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 7, 7, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 18, 18, 18, 18, 19, 19, 19, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 18, 18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 18, 18, 18, -1, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, -1, -1, -1, -1, -1, 18, 18, 18};
static const uint32_t v314_first = 5;
/* Python 3.15.2: sample() of tests/c/linetables.py, first line 5. */
static const uint8_t v315_table[] = {129, 0, 216, 12, 13, 128, 69, 220, 16, 25, 152, 37, 215, 16, 32, 137, 4, 136, 1, 216, 11, 12, 138, 57, 217, 12, 20, 240, 2, 5, 9, 23, 216, 12, 17, 148, 83, 152, 17, 147, 86, 216, 21, 22, 152, 17, 151, 85, 148, 85, 145, 1, 216, 16, 17, 245, 5, 2, 22, 19, 245, 0, 2, 13, 19, 136, 69, 240, 10, 0, 12, 13, 142, 57, 218, 12, 17, 241, 21, 0, 17, 33, 244, 24, 0, 22, 27, 152, 53, 147, 92, 243, 3, 2, 12, 27, 219, 21, 33, 144, 1, 216, 15, 16, 144, 49, 141, 117, 152, 1, 137, 122, 247, 5, 0, 13, 14, 136, 65, 217, 21, 33, 241, 3, 2, 12, 27, 240, 0, 2, 5, 27, 248, 244, 9, 0, 16, 26, 244, 0, 1, 9, 23, 216, 12, 17, 144, 81, 141, 74, 138, 69, 240, 3, 1, 9, 23, 252, 242, 8, 2, 12, 27};
static const int v315_lines[] = {5, 5, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 8, 8, 8, 9, 9, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 13, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 17, 7, 7, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 18, 18, 18, 18, 19, 19, 19, 19, 19, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 18, 18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 18, 18, 18, -1, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, -1, -1, -1, -1, -1, 18, 18, 18};
static const uint32_t v315_first = 5;

typedef struct lt_case {
    const char *version;
    const uint8_t *table;
    size_t len;
    const int *lines;
    size_t nunits;
    uint32_t first;
} lt_case;

#define LT(v, name) {v, name##_table, sizeof name##_table, name##_lines, \
                     sizeof name##_lines / sizeof name##_lines[0], name##_first}
static const lt_case lt_cases[] = {
    LT("3.11", v311), LT("3.12", v312), LT("3.13", v313), LT("3.14", v314), LT("3.15", v315),
};
#define NCASES (sizeof lt_cases / sizeof lt_cases[0])

AP_TEST(spy_line_of_real_tables) {
    for (size_t c = 0; c < NCASES; c++) {
        const lt_case *k = &lt_cases[c];
        unsigned bad = 0;
        for (size_t u = 0; u < k->nunits; u++) {
            int got = spy_line_of(k->table, k->len, k->first, (int64_t)u * 2);
            if (got != k->lines[u] && bad++ < 3)
                AP_CHECK_MSG(0, "%s unit %zu: line %d, co_lines says %d", k->version, u, got,
                             k->lines[u]);
            /* The odd byte of a code unit is the same unit. */
            AP_CHECK_EQ_U64(spy_line_of(k->table, k->len, k->first, (int64_t)u * 2 + 1), got);
        }
        AP_CHECK_EQ_U64(bad, 0);
        /* Past the table there is no line; a negative offset (a frame not started yet)
         * is the first line. */
        AP_CHECK(spy_line_of(k->table, k->len, k->first, (int64_t)k->nunits * 2) == -1);
        AP_CHECK(spy_line_of(k->table, k->len, k->first, -1) == (int)k->first);
    }
}

/* Appends one entry of the given form and run (1-8 code units). */
static size_t put(uint8_t *t, size_t n, unsigned form, unsigned run) {
    t[n++] = (uint8_t)(0x80 | form << 3 | (run - 1));
    return n;
}

static size_t put_svarint(uint8_t *t, size_t n, int64_t v) {
    uint64_t u = v < 0 ? ((uint64_t)-v << 1) | 1 : (uint64_t)v << 1;
    do {
        uint8_t b = u & 63;
        u >>= 6;
        t[n++] = (uint8_t)(b | (u ? 64 : 0));
    } while (u);
    return n;
}

AP_TEST(spy_line_of_every_form) {
    uint8_t t[64];
    size_t n = 0;
    n = put(t, n, 0, 2);                 /* short form: line 10 (first), 2 units */
    t[n++] = 5;
    n = put(t, n, 12, 1);                /* one-line form: line + 2 = 12 */
    t[n++] = 1, t[n++] = 4;
    n = put(t, n, 13, 3);                /* no columns: line - 5 = 7 (a signed varint) */
    n = put_svarint(t, n, -5);
    n = put(t, n, 15, 1);                /* no location */
    n = put(t, n, 14, 8);                /* long form: +200 = 207, end line, columns */
    n = put_svarint(t, n, 200);
    t[n++] = 0, t[n++] = 3, t[n++] = 9;
    n = put(t, n, 10, 1);                /* one-line form, +0: 207 */
    t[n++] = 0, t[n++] = 0;
    const int want[] = {10, 10, 12, 7, 7, 7, -1, 207, 207, 207, 207, 207, 207, 207, 207, 207};
    for (size_t u = 0; u < sizeof want / sizeof want[0]; u++)
        AP_CHECK_MSG(spy_line_of(t, n, 10, (int64_t)u * 2) == want[u], "unit %zu: %d, want %d",
                     u, spy_line_of(t, n, 10, (int64_t)u * 2), want[u]);
    AP_CHECK(spy_line_of(t, n, 10, 16 * 2) == -1);
    /* A line that would be 0 or below is no line. */
    n = 0;
    n = put(t, n, 13, 1);
    n = put_svarint(t, n, -3);
    AP_CHECK(spy_line_of(t, n, 2, 0) == -1);
    AP_CHECK(spy_line_of(t, 0, 2, 0) == -1);   /* an empty table */
}

AP_TEST(spy_line_of_cut_and_mutated_tables) {
    /* Every prefix of every real table, and random byte flips: the walk stays inside
     * the table (ASan checks that under make sanitize) and answers a line or -1. */
    uint64_t rng = 7;
    for (size_t c = 0; c < NCASES; c++) {
        const lt_case *k = &lt_cases[c];
        for (size_t len = 0; len <= k->len; len++) {
            uint8_t *copy = malloc(len ? len : 1);
            if (!AP_CHECK(copy != NULL))
                return;
            memcpy(copy, k->table, len);
            for (size_t u = 0; u <= k->nunits; u++) {
                int got = spy_line_of(copy, len, k->first, (int64_t)u * 2);
                AP_CHECK(got == -1 || got > 0);
            }
            free(copy);
        }
        for (int round = 0; round < 200; round++) {
            uint8_t *copy = malloc(k->len);
            if (!AP_CHECK(copy != NULL))
                return;
            memcpy(copy, k->table, k->len);
            for (int f = 0; f < 4; f++)
                copy[ap_test_rand(&rng) % k->len] = (uint8_t)ap_test_rand(&rng);
            for (size_t u = 0; u <= k->nunits + 4; u++) {
                int got = spy_line_of(copy, k->len, k->first, (int64_t)u * 2);
                AP_CHECK(got == -1 || got > 0);
            }
            free(copy);
        }
    }
}

/* ---- reads of this process ----------------------------------------------------------- */

AP_TEST(spy_read_self) {
    static const char text[] = "read without stopping the target";
    char buf[sizeof text];
    pid_t me = getpid();
    AP_CHECK(spy_read(me, (uint64_t)(uintptr_t)text, buf, sizeof text) == 0);
    AP_CHECK(memcmp(buf, text, sizeof text) == 0);
    uint64_t ptr = 0;
    const void *target = text;
    AP_CHECK(spy_read_ptr(me, (uint64_t)(uintptr_t)&target, &ptr) == 0);
    AP_CHECK_EQ_U64(ptr, (uint64_t)(uintptr_t)text);
    /* Memory that is not mapped is a torn read, not a crash. */
    AP_CHECK(spy_read(me, 8, buf, 8) == -1);
    AP_CHECK_EQ_U64(spy_fail_last(), SPY_FAIL_TORN);
    /* A process that does not exist. */
    AP_CHECK(spy_read(0x3ffffff0, (uint64_t)(uintptr_t)text, buf, 8) == -1);
    AP_CHECK_EQ_U64(spy_fail_last(), SPY_FAIL_NOPROC);
}

AP_TEST(spy_proc_files_of_self) {
    pid_t me = getpid(), tid = (pid_t)syscall(SYS_gettid);
    char comm[64];
    spy_thread_comm(me, tid, comm, sizeof comm);
    AP_CHECK_MSG(strncmp(comm, "test_core", 9) == 0, "comm %s", comm);
    AP_CHECK(spy_thread_state(me, tid) == 'R');      /* this thread, reading its own state */
    AP_CHECK(spy_thread_state(me, 0x3ffffff0) == 0); /* no such thread */
    spy_thread_comm(me, 0x3ffffff0, comm, sizeof comm);
    AP_CHECK(comm[0] == '\0');
    AP_CHECK(spy_thread_cpu_ns(me, 0x3ffffff0) == UINT64_MAX);
    /* This process has no CPython in it. */
    spy_symbols sym;
    AP_CHECK(spy_find_symbols(me, &sym) == -1);
    AP_CHECK_EQ_U64(spy_fail_last(), SPY_FAIL_NOTPYTHON);
}

/* ---- await chains ------------------------------------------------------------------- */

/* Objects laid out as a CPython of `lay` would: a type whose tp_name is name, and an
 * object of that type (a generator's state byte at gen_frame_state). */
typedef struct fake_obj {
    _Alignas(16) uint8_t type[512];
    _Alignas(16) uint8_t obj[1024];
    _Alignas(16) uint8_t code[512];   /* zeros: not a readable code object */
} fake_obj;

static void fake_make(fake_obj *f, const spy_layout *l, const char *name, int state) {
    memset(f, 0, sizeof *f);
    uint64_t name_at = (uint64_t)(uintptr_t)name, type_at = (uint64_t)(uintptr_t)f->type;
    uint64_t code_at = (uint64_t)(uintptr_t)f->code;
    memcpy(f->type + l->type_name, &name_at, 8);
    memcpy(f->obj + 8, &type_at, 8);
    if (state >= 0)
        f->obj[l->gen_frame_state] = (uint8_t)state;
    memcpy(f->obj + l->gen_iframe + l->fr_code, &code_at, 8);
}

/* A target that is this process, read as CPython 3.minor lays its objects out. */
static void fake_target(spy_target *t, unsigned minor) {
    memset(t, 0, sizeof *t);
    t->pid = getpid();
    t->lay = *spy_layout_get(minor);
}

AP_TEST(spy_await_reads_garbage_as_no_chain_or_torn) {
    static fake_obj running, waiting, future;
    for (unsigned minor = 11; minor <= 15; minor++) {
        spy_target t;
        fake_target(&t, minor);
        const spy_layout *l = &t.lay;
        fake_make(&running, l, "coroutine", (int)l->gen_executing);
        fake_make(&waiting, l, "coroutine", (int)l->gen_yf_hi);
        fake_make(&future, l, "_asyncio.Future", -1);
        uint64_t coro[5] = {(uint64_t)(uintptr_t)running.obj, (uint64_t)(uintptr_t)waiting.obj,
                            (uint64_t)(uintptr_t)future.obj, 8, (uint64_t)(uintptr_t)running.code};
        spy_thread out[5];
        char leaf[5][SPY_LEAF_MAX];
        int res[5];
        /* together (an unmapped one makes the batched read fail: read one by one then) */
        AP_CHECK(spy_await_many(&t, coro, 5, out, leaf, res) == 0);
        AP_CHECK_MSG(res[0] == 0 && out[0].nframes == 0 && !out[0].torn, "3.%u running", minor);
        /* suspended in an await, but its code object cannot be read: torn, not a stack */
        AP_CHECK_MSG(res[1] == 1 && out[1].nframes == 0 && out[1].torn, "3.%u waiting", minor);
        AP_CHECK_MSG(res[2] == 0 && out[2].nframes == 0 && !out[2].torn, "3.%u future", minor);
        AP_CHECK_MSG(res[3] == 0 && out[3].nframes == 0 && out[3].torn, "3.%u unmapped", minor);
        AP_CHECK_MSG(res[4] == 0 && out[4].nframes == 0 && out[4].torn, "3.%u no type", minor);
        AP_CHECK_EQ_U64(t.torn, 3);
        /* one at a time, as spy_await() */
        AP_CHECK(spy_await(&t, coro[0], &out[0], leaf[0]) == 0);
        AP_CHECK(spy_await(&t, coro[1], &out[1], leaf[1]) == 1 && out[1].torn);
        AP_CHECK(spy_await(&t, coro[3], &out[3], leaf[3]) == 0 && out[3].torn);
        spy_target_close(&t);
    }
}

/* A coroutine whose object ends near the end of a mapping (the last block of an
 * allocator's region) is read to the end of its page, as a coroutine, not taken for an
 * object of another type; one whose own header runs past the mapping is torn. */
AP_TEST(spy_await_reads_a_coroutine_at_the_end_of_a_mapping) {
    static fake_obj waiting;
    long page = sysconf(_SC_PAGESIZE);
    uint8_t *map = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    AP_CHECK(map != MAP_FAILED);
    AP_CHECK(munmap(map + page, (size_t)page) == 0);
    for (unsigned minor = 11; minor <= 15; minor++) {
        spy_target t;
        fake_target(&t, minor);
        const spy_layout *l = &t.lay;
        fake_make(&waiting, l, "coroutine", (int)l->gen_yf_hi);
        uint32_t head = l->fr_code;
        if (l->fr_instr > head) head = l->fr_instr;
        if (l->fr_stacktop > head) head = l->fr_stacktop;
        if (l->fr_owner > head) head = l->fr_owner;
        head = (l->gen_iframe + head + 8 + 15) & ~15u;
        /* its header in the page, its value stack past it */
        uint8_t *at = map + page - head;
        memcpy(at, waiting.obj, head);
        spy_thread out;
        char leaf[SPY_LEAF_MAX];
        /* suspended in an await: read as such (its code object is not readable: torn) */
        AP_CHECK_MSG(spy_await(&t, (uint64_t)(uintptr_t)at, &out, leaf) == 1 && out.torn,
                     "3.%u leaf %s", minor, leaf);
        /* its header past the mapping: torn, not an object of type "coroutine" */
        at = map + page - 32;
        memcpy(at, waiting.obj, 32);
        AP_CHECK_MSG(spy_await(&t, (uint64_t)(uintptr_t)at, &out, leaf) == 0 && out.torn && leaf[0] == '\0',
                     "3.%u leaf %s", minor, leaf);
        spy_target_close(&t);
    }
    munmap(map, (size_t)page);
}

/* A code object named name, as a CPython of lay lays one out: its name strings (compact
 * ASCII), an empty location table, and after its first instruction a RESUME from an
 * await (what 3.11/3.12 look at). */
typedef struct fake_code {
    _Alignas(16) uint8_t str[128];
    _Alignas(16) uint8_t table[64];
    _Alignas(16) uint8_t code[1024];
} fake_code;

static void fake_code_make(fake_code *f, const spy_layout *l, const char *name) {
    memset(f, 0, sizeof *f);
    size_t len = strlen(name);
    uint32_t state = 1u << l->u_compact_bit | 1u << l->u_ascii_bit | 1u << l->u_kind_bit;
    uint64_t n = len, str = (uint64_t)(uintptr_t)f->str, table = (uint64_t)(uintptr_t)f->table;
    memcpy(f->str + l->u_length, &n, 8);
    memcpy(f->str + l->u_state, &state, 4);
    memcpy(f->str + l->u_ascii_size, name, len + 1);
    memcpy(f->code + l->co_name, &str, 8);
    memcpy(f->code + l->co_qualname, &str, 8);
    memcpy(f->code + l->co_filename, &str, 8);
    memcpy(f->code + l->co_linetable, &table, 8);   /* a bytes object of length 0 */
    uint32_t first = 1;
    memcpy(f->code + l->co_firstlineno, &first, 4);
    f->code[l->co_code_adaptive + 2] = (uint8_t)l->op_resume;
    f->code[l->co_code_adaptive + 3] = 3;
}

/* A coroutine suspended in an await of the object at awaited, running code. */
static void fake_awaiting(fake_obj *f, const spy_layout *l, fake_code *code, uint64_t awaited) {
    fake_make(f, l, "coroutine", (int)l->gen_yf_hi);
    uint64_t c = (uint64_t)(uintptr_t)code->code, instr = c + l->co_code_adaptive;
    uint8_t *fr = f->obj + l->gen_iframe;
    memcpy(fr + l->fr_code, &c, 8);
    memcpy(fr + l->fr_instr, &instr, 8);
    memcpy(fr + l->fr_localsplus, &awaited, 8);   /* the stack's only slot */
    if (l->fr_stack_is_ptr) {
        uint64_t sp = (uint64_t)(uintptr_t)(fr + l->fr_localsplus + 8);
        memcpy(fr + l->fr_stacktop, &sp, 8);
    } else {
        int32_t idx = 1;
        memcpy(fr + l->fr_stacktop, &idx, 4);
    }
}

/* An await chain goes through the middleware's awaitable (t->via_name) to the coroutine
 * it drives, as if that were awaited, through an async generator's asend() to the
 * generator, and through an awaited task to its coroutine; through them to anything
 * else it is torn. */
AP_TEST(spy_await_goes_through_the_middleware_awaitable) {
    static fake_code code;
    static fake_obj outer, via, inner, future, outer2, bad, outer3, asend, agen, outer4, iter, task;
    for (unsigned minor = 11; minor <= 15; minor++) {
        spy_target t;
        fake_target(&t, minor);
        const spy_layout *l = &t.lay;
        snprintf(t.via_name, sizeof t.via_name, "apiprof._core.RouteRequest");
        t.via_off = 64;
        fake_code_make(&code, l, "step");
        /* outer awaits the awaitable, which drives inner, which awaits a Future */
        fake_make(&future, l, "Future", -1);
        fake_awaiting(&inner, l, &code, (uint64_t)(uintptr_t)future.obj);
        fake_make(&via, l, "apiprof._core.RouteRequest", -1);
        uint64_t to = (uint64_t)(uintptr_t)inner.obj;
        memcpy(via.obj + 64, &to, 8);
        fake_awaiting(&outer, l, &code, (uint64_t)(uintptr_t)via.obj);
        /* outer2 awaits one whose "coroutine" is a type object */
        fake_make(&bad, l, "apiprof._core.RouteRequest", -1);
        uint64_t type = (uint64_t)(uintptr_t)bad.type;
        memcpy(bad.obj + 64, &type, 8);
        fake_awaiting(&outer2, l, &code, (uint64_t)(uintptr_t)bad.obj);
        /* outer3 awaits anext() of an async generator that awaits the Future */
        fake_awaiting(&agen, l, &code, (uint64_t)(uintptr_t)future.obj);
        memcpy(agen.type + l->type_name, &(const char *){"async_generator"}, 8);
        fake_make(&asend, l, "async_generator_asend", -1);
        uint64_t gen = (uint64_t)(uintptr_t)agen.obj;
        memcpy(asend.obj + l->asend_gen, &gen, 8);
        fake_awaiting(&outer3, l, &code, (uint64_t)(uintptr_t)asend.obj);
        /* outer4 awaits a task (through its FutureIter) whose coroutine is inner */
        fake_make(&task, l, "_asyncio.Task", -1);
        memcpy(task.obj + l->task_coro, &to, 8);
        fake_make(&iter, l, "_asyncio.FutureIter", -1);
        uint64_t fut = (uint64_t)(uintptr_t)task.obj;
        memcpy(iter.obj + 16, &fut, 8);
        fake_awaiting(&outer4, l, &code, (uint64_t)(uintptr_t)iter.obj);
        uint64_t coro[4] = {(uint64_t)(uintptr_t)outer.obj, (uint64_t)(uintptr_t)outer2.obj,
                            (uint64_t)(uintptr_t)outer3.obj, (uint64_t)(uintptr_t)outer4.obj};
        spy_thread out[4];
        char leaf[4][SPY_LEAF_MAX];
        int res[4];
        AP_CHECK(spy_await_many(&t, coro, 4, out, leaf, res) == 0);
        AP_CHECK_MSG(res[3] == 1 && out[3].nframes == 2 && strcmp(leaf[3], "Future") == 0,
                     "3.%u: %zu frames, leaf %s", minor, out[3].nframes, leaf[3]);
        AP_CHECK_MSG(res[2] == 1 && out[2].nframes == 2 && strcmp(leaf[2], "Future") == 0,
                     "3.%u: %zu frames, leaf %s", minor, out[2].nframes, leaf[2]);
        AP_CHECK(spy_await_objects(&t, 2)[0] == gen);
        AP_CHECK_MSG(res[0] == 1 && !out[0].torn && out[0].nframes == 2, "3.%u: %zu frames",
                     minor, out[0].nframes);
        AP_CHECK_MSG(strcmp(leaf[0], "Future") == 0, "3.%u leaf %s", minor, leaf[0]);
        AP_CHECK(strcmp(out[0].frames[0].code->qualname, "step") == 0);
        const uint64_t *obj = spy_await_objects(&t, 0);
        AP_CHECK(obj[0] == to && obj[1] == coro[0]);   /* innermost first */
        AP_CHECK_MSG(res[1] == 1 && out[1].torn && out[1].nframes == 0, "3.%u", minor);
        /* without the awaitable's name the chain ends at it */
        t.via_off = 0;
        AP_CHECK(spy_await_many(&t, coro, 1, out, leaf, res) == 0);
        AP_CHECK(res[0] == 1 && out[0].nframes == 1 && strcmp(leaf[0], "RouteRequest") == 0);
        spy_target_close(&t);
    }
}

/* Sections of an ELF file are found by name, as symbols are. */
AP_TEST(spy_find_in_module_finds_sections) {
    pid_t me = getpid();
    uint64_t text = spy_find_in_module(me, "/test_core", ".text");
    AP_CHECK(text != 0 && text <= (uint64_t)(uintptr_t)&spy_find_in_module);
    AP_CHECK(spy_find_in_module(me, "/test_core", ".AsyncioDebug") == 0);
}
