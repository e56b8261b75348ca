/* ap_arena.c -- chunked bump allocator with 16-byte alignment. */
#include "ap_arena.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"

/* The header is padded to AP_ARENA_ALIGN so that data[] is aligned as malloc
 * aligns (16 bytes on x86_64 and aarch64 glibc). */
struct ap_arena_chunk {
    ap_arena_chunk *prev;
    size_t size;                                 /* usable bytes in data[] */
    _Alignas(AP_ARENA_ALIGN) char data[];
};

static size_t round_up(size_t n) {
    return (n + (AP_ARENA_ALIGN - 1)) & ~(size_t)(AP_ARENA_ALIGN - 1);
}

void ap_arena_init(ap_arena *a, size_t chunk_size) {
    assert(a != NULL);
    memset(a, 0, sizeof *a);
    if (chunk_size == 0)
        chunk_size = AP_ARENA_DEFAULT_CHUNK;
    if (chunk_size > SIZE_MAX / 2)
        chunk_size = SIZE_MAX / 2;
    a->chunk_size = round_up(chunk_size);
}

static ap_arena_chunk *chunk_new(ap_arena *a, size_t size) {
    if (size > SIZE_MAX - sizeof(ap_arena_chunk)) {
        ap_err_set(AP_ENOMEM, "arena: request of %zu bytes is too large", size);
        return NULL;
    }
    ap_arena_chunk *c = malloc(sizeof *c + size);
    if (c == NULL) {
        ap_err_set(AP_ENOMEM, "arena: out of memory (chunk of %zu bytes)", size);
        return NULL;
    }
    assert(((uintptr_t)c->data & (AP_ARENA_ALIGN - 1)) == 0);
    c->size = size;
    a->reserved += sizeof *c + size;
    return c;
}

void *ap_arena_alloc(ap_arena *a, size_t n) {
    assert(a != NULL && a->chunk_size != 0);
    if (n > SIZE_MAX - AP_ARENA_ALIGN) {
        ap_err_set(AP_ENOMEM, "arena: request of %zu bytes is too large", n);
        return NULL;
    }
    n = n == 0 ? AP_ARENA_ALIGN : round_up(n);
    if (a->ptr != NULL && (size_t)(a->end - a->ptr) >= n) {
        void *p = a->ptr;
        a->ptr += n;
        return p;
    }
    if (n > a->chunk_size / 4) {
        /* A chunk of its own, linked behind the current one so that the
         * current regular chunk keeps serving small requests. */
        ap_arena_chunk *c = chunk_new(a, n);
        if (c == NULL)
            return NULL;
        if (a->head == NULL) {
            c->prev = NULL;
            a->head = c;
        } else {
            c->prev = a->head->prev;
            a->head->prev = c;
        }
        return c->data;
    }
    ap_arena_chunk *c = chunk_new(a, a->chunk_size);
    if (c == NULL)
        return NULL;
    c->prev = a->head;
    a->head = c;
    if (a->first == NULL)
        a->first = c;
    a->ptr = c->data + n;
    a->end = c->data + c->size;
    return c->data;
}

void *ap_arena_calloc(ap_arena *a, size_t n) {
    void *p = ap_arena_alloc(a, n);
    if (p != NULL)
        memset(p, 0, n);
    return p;
}

char *ap_arena_strdup(ap_arena *a, const char *s, size_t len) {
    assert(s != NULL || len == 0);
    if (len == SIZE_MAX) {
        ap_err_set(AP_ENOMEM, "arena: string too large");
        return NULL;
    }
    char *p = ap_arena_alloc(a, len + 1);
    if (p == NULL)
        return NULL;
    if (len != 0)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void ap_arena_reset(ap_arena *a) {
    assert(a != NULL);
    ap_arena_chunk *c = a->head;
    while (c != NULL) {
        ap_arena_chunk *prev = c->prev;
        if (c != a->first) {
            a->reserved -= sizeof *c + c->size;
            free(c);
        }
        c = prev;
    }
    a->head = a->first;
    if (a->first == NULL) {
        a->ptr = a->end = NULL;
        return;
    }
    a->first->prev = NULL;
    a->ptr = a->first->data;
    a->end = a->first->data + a->first->size;
}

void ap_arena_free(ap_arena *a) {
    assert(a != NULL);
    size_t chunk_size = a->chunk_size;
    a->first = NULL;
    ap_arena_reset(a);
    ap_arena_init(a, chunk_size);
}

size_t ap_arena_bytes(const ap_arena *a) {
    return a->reserved;
}
