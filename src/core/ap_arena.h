/* ap_arena.h -- bump allocator: many small allocations freed all at once. */
#ifndef AP_ARENA_H
#define AP_ARENA_H

#include <stddef.h>

/* Every pointer returned is aligned to AP_ARENA_ALIGN bytes. */
#define AP_ARENA_ALIGN 16
/* Chunk size used when ap_arena_init() is given 0. */
#define AP_ARENA_DEFAULT_CHUNK 65536

typedef struct ap_arena_chunk ap_arena_chunk;   /* private to ap_arena.c */

/* Memory is taken from malloc in chunks of chunk_size bytes and handed out by
 * bumping a pointer.  A request larger than chunk_size / 4 gets a chunk of its
 * own, so the current chunk is not abandoned half used.  Individual
 * allocations are never freed; ap_arena_reset() and ap_arena_free() release
 * them all at once.  Not thread-safe: one owner (e.g. one profiler thread). */
typedef struct ap_arena {
    ap_arena_chunk *head;    /* most recent chunk; chunks are linked backwards */
    ap_arena_chunk *first;   /* first regular chunk, kept by ap_arena_reset() */
    char *ptr;               /* next free byte in the current regular chunk */
    char *end;               /* end of the current regular chunk */
    size_t chunk_size;       /* usable bytes of a regular chunk */
    size_t reserved;         /* bytes obtained from malloc, headers included */
} ap_arena;

/* Prepare an empty arena; nothing is allocated until the first request.
 * chunk_size 0 means AP_ARENA_DEFAULT_CHUNK; it is rounded up to
 * AP_ARENA_ALIGN.  Can't fail. */
void ap_arena_init(ap_arena *a, size_t chunk_size);

/* n bytes, aligned to AP_ARENA_ALIGN, uninitialised, owned by the arena and
 * valid until ap_arena_reset() or ap_arena_free().  n = 0 returns a valid
 * unique pointer.  On error, NULL is returned with AP_ENOMEM. */
void *ap_arena_alloc(ap_arena *a, size_t n);

/* As ap_arena_alloc(), zero-filled.  On error, NULL with AP_ENOMEM. */
void *ap_arena_calloc(ap_arena *a, size_t n);

/* A NUL-terminated copy of the len bytes at s (s may contain NULs and need
 * not be terminated; s may be NULL if len is 0).  On error, NULL with
 * AP_ENOMEM. */
char *ap_arena_strdup(ap_arena *a, const char *s, size_t len);

/* Release every allocation.  The first regular chunk is kept (so a reused
 * arena does not go back to malloc); all other chunks are freed.  Can't fail. */
void ap_arena_reset(ap_arena *a);

/* Release all memory; the arena is left empty and may be used again (it keeps
 * its chunk size).  Can't fail. */
void ap_arena_free(ap_arena *a);

/* Bytes currently obtained from malloc, chunk headers included.  Can't fail. */
size_t ap_arena_bytes(const ap_arena *a);

#endif /* AP_ARENA_H */
