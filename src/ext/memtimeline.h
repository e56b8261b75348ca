/* memtimeline.h -- apiprof._core.MemoryTimeline: a C thread that samples the process's RSS and the traced heap on an interval into a tracer's profile. */
#ifndef APEXT_MEMTIMELINE_H
#define APEXT_MEMTIMELINE_H

#include "ext.h"

#include <stdint.h>

/* Add the MemoryTimeline type to module.  0, or -1 with an exception set. */
int apext_memtimeline_init(PyObject *module, apext_state *st);

/* The traced live bytes of the running MemoryTracker (memory.c) into *live:
 * 1, or 0 when no tracker runs.  Callable from any thread, with or without
 * the GIL (it takes the tracker's spin lock; a tracker that stops waits for
 * it).  Can't fail. */
int apext_memory_live_now(uint64_t *live);

#endif /* APEXT_MEMTIMELINE_H */
