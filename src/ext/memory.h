/* memory.h -- what the memory producers share across files: the MemoryTimeline type, the allocation hook's live bytes, the line tracer's charge node. */
#ifndef APEXT_MEMORY_H
#define APEXT_MEMORY_H

#include "ext.h"

#include <stdint.h>

/* ---- the memory of HTTP requests (requests mode: MemoryTracker(None)) ----
 * A RouteRequest (routes.c) gets an owner record when it starts, sets a box
 * pointing at it (apext_memory_box_new) as apext_memory_request_var in the
 * request's context, empties the box and ends the owner when it is recorded;
 * allocations in that context are charged to the owner in the box.  The box,
 * not the request, is what copies of the context (tasks the request starts)
 * keep alive. */
struct ap_route_stat;
struct ap_routes;
typedef struct apext_mem_owner apext_mem_owner;

/* The contextvars.ContextVar holding the running request's box (made at
 * module init; never released). */
extern PyObject *apext_memory_request_var;

/* A new box (a capsule) pointing at o (GIL held).  New reference, or NULL
 * with an exception set. */
PyObject *apext_memory_box_new(apext_mem_owner *o);

/* Empty box: allocations in contexts that hold it are nobody's from now on
 * (GIL held).  Can't fail. */
void apext_memory_box_clear(PyObject *box);

/* A new owner record for a request starting now (GIL held), holding one
 * reference for the request; NULL when no tracker in requests mode runs, or
 * out of memory (the request is then not followed).  Can't fail otherwise. */
apext_mem_owner *apext_memory_owner_new(void);

/* The request of o ended (GIL held): its memory goes to s, an entry of the
 * route table t (its route's statistics; s NULL: dropped, the request was
 * never recorded), and the request's reference is released.  o must not be
 * used after.  Can't fail. */
void apext_memory_owner_end(apext_mem_owner *o, struct ap_route_stat *s,
                            const struct ap_routes *t);

/* Route table t is going away or being reset (GIL held): no owner touches
 * its entries from now on (owners of other tables are kept).  Can't fail. */
void apext_memory_forget_routes(const struct ap_routes *t);

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

/* ---- walk mode: a Tracer with calls=False (tracer.c) ----------------------------------
 * The tracer installs no hooks; the allocation hook walks the running
 * frames of each block it tracks and builds the path in the tracer's
 * profile with these two (GIL held, running tracer; they may allocate, the
 * hook's reentrancy guard set). */
struct ap_tree;
/* The tree the calling thread's work goes to now: its own (made at its
 * first use, labelled thread and phase) or that of its context's route
 * label.  NULL when the thread's state can't be made (noted in the
 * tracer's session).  Can't fail otherwise. */
struct ap_tree *apext_tracer_walk_tree(PyObject *tracer);
/* The function frame of co in the tracer's profile (its per-code record,
 * filled once per session) and, in *excluded, whether the tracer's include
 * and exclude patterns leave it out (globals: those of a frame running co,
 * for its module; may be NULL).  AP_NONE on failure (noted).  */
uint32_t apext_tracer_code_frame(PyObject *tracer, PyCodeObject *co, PyObject *globals,
                                 int *excluded);

#endif /* APEXT_MEMORY_H */
