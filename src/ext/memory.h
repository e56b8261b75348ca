/* memory.h -- what the memory producers share across files: the MemoryTimeline type, the allocation hook's live bytes, the line tracer's charge node. */
#ifndef APEXT_MEMORY_H
#define APEXT_MEMORY_H

#include "ext.h"

#include <stdint.h>

/* Add the MemoryTimeline type (memtimeline.c: a C thread that samples the
 * process's RSS and the traced heap on an interval into a tracer's profile)
 * to module.  0, or -1 with an exception set. */
int apext_memtimeline_init(PyObject *module, apext_state *st);

/* The traced live bytes of the running MemoryTracker (memory.c) into *live:
 * 1, or 0 when no tracker runs.  Callable from any thread, with or without
 * the GIL (it takes the tracker's spin lock; a tracker that stops waits for
 * it).  Can't fail. */
int apext_memory_live_now(uint64_t *live);

/* For the allocation hook of a line profile (memory.c): the node the running
 * LineTracer `tracer` charges now in the calling thread (GIL held): the line
 * running in its innermost target frame (callees included, as its time), or
 * that frame's function node before its first line; NULL when tracer does not
 * run or no target frame runs in this thread.  No allocation.  lines.c.
 * Can't fail. */
struct ap_node;
struct ap_node *apext_lines_charge_node(PyObject *tracer);

/* Add v1 to metric k1 and v2 to metric k2 (k2 = AP_M_COUNT: none) of the
 * node of every target frame of the running LineTracer `tracer` in the
 * calling thread (GIL held), innermost first: the running line of each, as
 * a line's time includes the target functions it calls.  Returns 1, or 0
 * (nothing added) when tracer does not run or no target frame runs here.
 * No allocation.  lines.c.  Can't fail. */
int apext_lines_add(PyObject *tracer, unsigned k1, uint64_t v1, unsigned k2, uint64_t v2);

#endif /* APEXT_MEMORY_H */
