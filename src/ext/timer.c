/* timer.c -- apiprof.timer: named block timers aggregated in a tree of C histograms.
 *
 * A Timer measures one block (wall and thread-CPU ns). Running timers nest
 * per thread and per asyncio task: a ContextVar holds a TimerStack, a mutable
 * stack of running nodes owned by one contextvars.Context. A timer started in
 * a context that does not own the stack it sees (a new task, a new thread,
 * Context.run) first makes a stack of its own whose base is the innermost node
 * of the inherited one, and sets the ContextVar once; after that, entering and
 * leaving a block is a push and a pop, with no ContextVar set/reset (which
 * allocate). So a task nests its timers under the block that was innermost in
 * its creator when the task timed its first block. Every node of the registry
 * keeps a wall-time histogram (ap_hist) and CPU totals.
 *
 * Thread CPU time costs a system call (~0.5 us on a VM). Reading it twice per
 * block would dominate the cost of a short block, so a reading taken less than
 * AP_CPU_EXTRAPOLATE_NS after the last real reading on the same thread is
 * extrapolated from the wall clock (the thread is assumed on-CPU for that
 * window). The error of one block's CPU time is therefore at most
 * 2 * AP_CPU_EXTRAPOLATE_NS, and only when the thread lost the CPU inside that
 * window; a block's CPU time is never more than its wall time.
 *
 * Everything here is protected by the GIL. */
#include "compat.h"
#include "ap_clock.h"
#include "ap_hist.h"

#define AP_CPU_EXTRAPOLATE_NS 2000u
#define AP_TIMER_NAME_MAX 200

typedef struct TimerNode {
    PyObject_HEAD
    PyObject *name;     /* str: this node's own name (None for the root) */
    PyObject *children; /* dict: name -> TimerNode, in order of first use */
    PyObject *parent;   /* TimerNode, or NULL for the root; strong */
    uint64_t errors;    /* blocks left by an exception */
    uint64_t cpu_total; /* thread CPU ns summed over blocks */
    uint64_t cpu_max;
    ap_hist wall;       /* wall ns per block */
} TimerNode;

typedef struct {
    PyObject_HEAD
    apext_state *st;  /* borrowed: instances keep their type, the type keeps the module */
    PyObject *name;   /* str */
    TimerNode *node;  /* node being timed, while running */
    PyObject *stack;  /* TimerStack it was pushed on, while running */
    uint64_t t0, c0;  /* start: wall, thread CPU */
    uint64_t cpu_acc; /* stepped mode: CPU summed over steps */
    uint64_t cpu_mark;
    uint64_t last_wall, last_cpu; /* figures of the last completed block */
    unsigned char running, cpu, stepped, in_step;
} TimerObject;

/* ---- thread CPU with extrapolation ---------------------------------------- */

static APEXT_TLS uint64_t cpu_cache_wall, cpu_cache_cpu;

uint64_t apext_thread_cpu_read(uint64_t now) {
    uint64_t c = ap_clock_thread_cpu_ns();
    cpu_cache_wall = now;
    cpu_cache_cpu = c;
    return c;
}

uint64_t apext_thread_cpu_at(uint64_t now) {
    if (cpu_cache_wall != 0 && now - cpu_cache_wall < AP_CPU_EXTRAPOLATE_NS)
        return cpu_cache_cpu + (now - cpu_cache_wall);
    return apext_thread_cpu_read(now);
}

uint64_t apext_thread_cpu_floor(uint64_t now, uint64_t max_age) {
    if (cpu_cache_wall != 0 && now - cpu_cache_wall <= max_age)
        return cpu_cache_cpu;
    return apext_thread_cpu_read(now);
}

/* ---- TimerNode -------------------------------------------------------------- */

static TimerNode *node_new(apext_state *st, PyObject *name, TimerNode *parent) {
    TimerNode *n = PyObject_GC_New(TimerNode, st->timer_node_type);
    if (n == NULL)
        return NULL;
    n->children = PyDict_New();
    if (n->children == NULL) {
        n->name = n->parent = NULL;
        Py_DECREF(n);
        return NULL;
    }
    n->name = Py_NewRef(name);
    n->parent = (PyObject *)parent;
    Py_XINCREF(parent);
    n->errors = n->cpu_total = n->cpu_max = 0;
    ap_hist_init(&n->wall);
    PyObject_GC_Track(n);
    return n;
}

static int node_traverse(TimerNode *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->children);
    Py_VISIT(self->parent);
    return 0;
}

static int node_clear(TimerNode *self) {
    Py_CLEAR(self->children);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->name);
    return 0;
}

static void node_dealloc(TimerNode *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    node_clear(self);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PyType_Slot node_slots[] = {
    {Py_tp_traverse, node_traverse},
    {Py_tp_clear, node_clear},
    {Py_tp_dealloc, node_dealloc},
    {Py_tp_doc, "A node of the timer registry (internal)."},
    {0, NULL},
};

static PyType_Spec node_spec = {
    .name = "apiprof._core.TimerNode",
    .basicsize = sizeof(TimerNode),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = node_slots,
};

/* ---- TimerStack -------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *owner;   /* the contextvars.Context that owns this stack; strong */
    Py_ssize_t len, cap;
    TimerNode **items; /* strong refs; items[0] is the base (inherited parent) */
} TimerStack;

static TimerStack *stack_new(apext_state *st, TimerNode *base) {
    TimerStack *s = PyObject_GC_New(TimerStack, st->timer_stack_type);
    if (s == NULL)
        return NULL;
    s->owner = NULL;
    s->len = 1;
    s->cap = 8;
    s->items = PyMem_Malloc(sizeof(TimerNode *) * (size_t)s->cap);
    if (s->items == NULL) {
        s->len = 0;
        Py_DECREF(s);
        PyErr_NoMemory();
        return NULL;
    }
    s->items[0] = (TimerNode *)Py_NewRef(base);
    PyObject_GC_Track(s);
    return s;
}

/* Pushes n (a new reference is taken). Returns 0, or -1 with MemoryError. */
static int stack_push(TimerStack *s, TimerNode *n) {
    if (s->len == s->cap) {
        TimerNode **items = PyMem_Realloc(s->items, sizeof(TimerNode *) * (size_t)s->cap * 2);
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->items = items;
        s->cap *= 2;
    }
    s->items[s->len++] = (TimerNode *)Py_NewRef(n);
    return 0;
}

/* Removes the innermost entry for n (normally the top). Returns 0, or -1 when
 * n is not on the stack. Can't raise. */
static int stack_remove(TimerStack *s, TimerNode *n) {
    for (Py_ssize_t i = s->len - 1; i >= 1; i--) {
        if (s->items[i] == n) {
            memmove(&s->items[i], &s->items[i + 1], sizeof(TimerNode *) * (size_t)(s->len - i - 1));
            s->len--;
            Py_DECREF(n);
            return 0;
        }
    }
    return -1;
}

static int stack_traverse(TimerStack *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->owner);
    for (Py_ssize_t i = 0; i < self->len; i++)
        Py_VISIT(self->items[i]);
    return 0;
}

static int stack_clear(TimerStack *self) {
    Py_CLEAR(self->owner);
    while (self->len > 0) {
        TimerNode *n = self->items[--self->len];
        Py_DECREF(n);
    }
    return 0;
}

static void stack_dealloc(TimerStack *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    stack_clear(self);
    PyMem_Free(self->items);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PyType_Slot stack_slots[] = {
    {Py_tp_traverse, stack_traverse},
    {Py_tp_clear, stack_clear},
    {Py_tp_dealloc, stack_dealloc},
    {Py_tp_doc, "The running timers of one context (internal)."},
    {0, NULL},
};

static PyType_Spec stack_spec = {
    .name = "apiprof._core.TimerStack",
    .basicsize = sizeof(TimerStack),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = stack_slots,
};

/* Returns the TimerStack owned by the current context (borrowed), making it
 * on first use; NULL with an exception set on failure. */
static TimerStack *current_stack(apext_state *st) {
    PyObject *cur;
    if (PyContextVar_Get(st->timer_parent_var, NULL, &cur) < 0)
        return NULL;
    PyThreadState *ts = PyThreadState_Get();
    if (cur != NULL && ((TimerStack *)cur)->owner == ts->context && ts->context != NULL) {
        Py_DECREF(cur); /* the context still holds it */
        return (TimerStack *)cur;
    }
    TimerStack *inherited = (TimerStack *)cur;
    TimerNode *base = inherited ? inherited->items[inherited->len - 1] : (TimerNode *)st->timer_root;
    TimerStack *s = stack_new(st, base);
    Py_XDECREF(cur);
    if (s == NULL)
        return NULL;
    PyObject *token = PyContextVar_Set(st->timer_parent_var, (PyObject *)s);
    if (token == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    Py_DECREF(token);
    s->owner = Py_NewRef(ts->context); /* set by PyContextVar_Set if there was none */
    Py_DECREF(s);                      /* the context holds it */
    return s;
}

/* ---- Timer ------------------------------------------------------------------ */

/* Checks a timer name. Returns 0, or -1 with TypeError/ValueError set. */
static int check_name(PyObject *name) {
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "apiprof.timer name must be a str, not %.80s",
                     Py_TYPE(name)->tp_name);
        return -1;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    if (n == 0 || n > AP_TIMER_NAME_MAX) {
        PyErr_Format(PyExc_ValueError, "apiprof.timer name must have 1 to %d characters, got %zd",
                     AP_TIMER_NAME_MAX, n);
        return -1;
    }
    int kind = PyUnicode_KIND(name);
    const void *data = PyUnicode_DATA(name);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (ch < 0x20 || ch == 0x7f) {
            PyErr_Format(PyExc_ValueError,
                         "apiprof.timer name %R contains a control character", name);
            return -1;
        }
    }
    return 0;
}

static PyObject *timer_make(PyTypeObject *type, PyObject *name, int cpu) {
    TimerObject *t = PyObject_New(TimerObject, type);
    if (t == NULL)
        return NULL;
    t->st = (apext_state *)PyType_GetModuleState(type);
    t->name = Py_NewRef(name);
    t->node = NULL;
    t->stack = NULL;
    t->t0 = t->c0 = t->cpu_acc = t->cpu_mark = t->last_wall = t->last_cpu = 0;
    t->running = t->stepped = t->in_step = 0;
    t->cpu = (unsigned char)(cpu != 0);
    return (PyObject *)t;
}

/* apiprof.timer(name, cpu=True) -> Timer; apiprof.timer(func) -> decorated func. */
static PyObject *timer_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    int cpu = 1;
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            if (!PyUnicode_Check(k) || PyUnicode_CompareWithASCIIString(k, "cpu") != 0) {
                PyErr_Format(PyExc_TypeError, "apiprof.timer() got an unexpected keyword %R", k);
                return NULL;
            }
            cpu = PyObject_IsTrue(args[nargs + i]);
            if (cpu < 0)
                return NULL;
        }
    }
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError,
                        "apiprof.timer() takes a name (str) or a function to decorate");
        return NULL;
    }
    PyObject *arg = args[0];
    if (!PyUnicode_Check(arg) && PyCallable_Check(arg)) {
        apext_state *st = (apext_state *)PyType_GetModuleState((PyTypeObject *)type);
        if (st->timer_decorate == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "apiprof.timer decorator is not set up");
            return NULL;
        }
        PyObject *cpuobj = cpu ? Py_True : Py_False;
        PyObject *cargs[3] = {Py_None, arg, cpuobj};
        return PyObject_Vectorcall(st->timer_decorate, cargs, 3, NULL);
    }
    if (check_name(arg) < 0)
        return NULL;
    return timer_make((PyTypeObject *)type, arg, cpu);
}

static PyObject *timer_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    /* Only reached through tp_call paths that bypass vectorcall. */
    PyObject *kwnames = NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *stack[2] = {NULL, NULL};
    if (n > 1 || (kwds != NULL && PyDict_GET_SIZE(kwds) > 1)) {
        PyErr_SetString(PyExc_TypeError, "apiprof.timer(name, cpu=True)");
        return NULL;
    }
    if (n == 1)
        stack[0] = PyTuple_GET_ITEM(args, 0);
    if (kwds != NULL && PyDict_GET_SIZE(kwds) == 1) {
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        PyDict_Next(kwds, &pos, &k, &v);
        stack[n] = v;
        kwnames = PyTuple_Pack(1, k);
        if (kwnames == NULL)
            return NULL;
    }
    PyObject *r = timer_vectorcall((PyObject *)type, stack, (size_t)n, kwnames);
    Py_XDECREF(kwnames);
    return r;
}

/* Timers are not GC-tracked: they reference a str, a node and a stack, none of
 * which can reference a timer back. */
static void timer_dealloc(TimerObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    Py_CLEAR(self->name);
    Py_CLEAR(self->node);
    Py_CLEAR(self->stack);
    PyObject_Free(self);
    Py_DECREF(tp);
}

/* Starts the block. Returns 0, or -1 with an exception set. */
static int timer_begin(TimerObject *self, int stepped) {
    apext_state *st = self->st;
    if (self->running) {
        PyErr_Format(PyExc_RuntimeError, "apiprof.timer(%R) is already running", self->name);
        return -1;
    }
    TimerStack *stack = current_stack(st);
    if (stack == NULL)
        return -1;
    TimerNode *p = stack->items[stack->len - 1];
    PyObject *child = PyDict_GetItemWithError(p->children, self->name); /* borrowed */
    if (child == NULL) {
        if (PyErr_Occurred())
            return -1;
        child = (PyObject *)node_new(st, self->name, p);
        if (child == NULL || PyDict_SetItem(p->children, self->name, child) < 0) {
            Py_XDECREF(child);
            return -1;
        }
        Py_DECREF(child); /* the dict holds it */
    }
    if (stack_push(stack, (TimerNode *)child) < 0)
        return -1;
    Py_XSETREF(self->stack, Py_NewRef(stack));
    Py_XSETREF(self->node, (TimerNode *)Py_NewRef(child));
    self->running = 1;
    self->stepped = (unsigned char)stepped;
    self->in_step = 0;
    self->cpu_acc = 0;
    uint64_t now = ap_clock_now_ns();
    self->t0 = now;
    self->c0 = (self->cpu && !stepped) ? apext_thread_cpu_at(now) : 0;
    return 0;
}

/* Ends the block and records it; `error` says it was left by an exception.
 * Returns 0, or -1 with an exception set (then nothing is recorded). */
static int timer_end(TimerObject *self, int error) {
    uint64_t now = ap_clock_now_ns();
    if (!self->running) {
        PyErr_Format(PyExc_RuntimeError,
                     "apiprof.timer(%R) stopped but not running: call start() first", self->name);
        return -1;
    }
    uint64_t wall = now - self->t0, cpu = 0;
    if (self->cpu) {
        if (self->stepped) {
            if (self->in_step)
                self->cpu_acc += apext_thread_cpu_at(now) - self->cpu_mark;
            cpu = self->cpu_acc;
        } else {
            cpu = apext_thread_cpu_at(now) - self->c0;
        }
        if (cpu > wall)
            cpu = wall;
    }
    TimerStack *stack = (TimerStack *)self->stack;
    self->stack = NULL;
    self->running = 0;
    int wrong_context = stack->owner != PyThreadState_Get()->context;
    int rc = stack_remove(stack, self->node);
    Py_DECREF(stack);
    if (rc < 0 || wrong_context) {
        Py_CLEAR(self->node);
        PyErr_Format(PyExc_RuntimeError,
                     "apiprof.timer(%R) was stopped in another thread or task than the one "
                     "that started it", self->name);
        return -1;
    }
    TimerNode *n = self->node;
    ap_hist_record(&n->wall, wall);
    n->cpu_total += cpu;
    if (cpu > n->cpu_max)
        n->cpu_max = cpu;
    if (error)
        n->errors++;
    self->last_wall = wall;
    self->last_cpu = cpu;
    Py_CLEAR(self->node);
    return 0;
}

static PyObject *timer_enter(TimerObject *self, PyObject *Py_UNUSED(a)) {
    if (timer_begin(self, 0) < 0)
        return NULL;
    return Py_NewRef(self);
}

static PyObject *timer_exit(TimerObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int error = nargs > 0 && args[0] != Py_None;
    if (timer_end(self, error) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static PyObject *timer_start(TimerObject *self, PyObject *Py_UNUSED(a)) {
    if (timer_begin(self, 0) < 0)
        return NULL;
    return Py_NewRef(self);
}

static PyObject *timer_stop(TimerObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int error = 0;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "stop(error=False)");
        return NULL;
    }
    if (nargs == 1 && (error = PyObject_IsTrue(args[0])) < 0)
        return NULL;
    if (timer_end(self, error) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(self->last_wall);
}

/* Stepped mode, used by the async decorator: CPU is summed only over the steps
 * of the timed coroutine, not over what other tasks ran while it awaited. */
static PyObject *timer_start_stepped(TimerObject *self, PyObject *Py_UNUSED(a)) {
    if (timer_begin(self, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *timer_step_in(TimerObject *self, PyObject *Py_UNUSED(a)) {
    if (self->running && self->stepped && self->cpu && !self->in_step) {
        self->cpu_mark = apext_thread_cpu_at(ap_clock_now_ns());
        self->in_step = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *timer_step_out(TimerObject *self, PyObject *Py_UNUSED(a)) {
    if (self->running && self->stepped && self->cpu && self->in_step) {
        self->cpu_acc += apext_thread_cpu_at(ap_clock_now_ns()) - self->cpu_mark;
        self->in_step = 0;
    }
    Py_RETURN_NONE;
}

static PyObject *timer_call(TimerObject *self, PyObject *args, PyObject *kwds) {
    PyObject *func;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds) != 0) || PyTuple_GET_SIZE(args) != 1 ||
        !PyCallable_Check(func = PyTuple_GET_ITEM(args, 0))) {
        PyErr_SetString(PyExc_TypeError, "a timer decorates one function: @apiprof.timer(\"name\")");
        return NULL;
    }
    if (self->st->timer_decorate == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "apiprof.timer decorator is not set up");
        return NULL;
    }
    PyObject *cargs[3] = {self->name, func, self->cpu ? Py_True : Py_False};
    return PyObject_Vectorcall(self->st->timer_decorate, cargs, 3, NULL);
}

static PyObject *get_name(TimerObject *s, void *c) { (void)c; return Py_NewRef(s->name); }
static PyObject *get_cpu(TimerObject *s, void *c) { (void)c; return PyBool_FromLong(s->cpu); }
static PyObject *get_running(TimerObject *s, void *c) { (void)c; return PyBool_FromLong(s->running); }
static PyObject *get_wall_ns(TimerObject *s, void *c) { (void)c; return PyLong_FromUnsignedLongLong(s->last_wall); }
static PyObject *get_cpu_ns(TimerObject *s, void *c) { (void)c; return PyLong_FromUnsignedLongLong(s->last_cpu); }

static PyGetSetDef timer_getset[] = {
    {"name", (getter)get_name, NULL, "the timer's name", NULL},
    {"cpu", (getter)get_cpu, NULL, "whether thread CPU time is measured", NULL},
    {"running", (getter)get_running, NULL, "whether the block is being timed", NULL},
    {"wall_ns", (getter)get_wall_ns, NULL, "wall ns of the last completed block", NULL},
    {"cpu_ns", (getter)get_cpu_ns, NULL, "thread CPU ns of the last completed block", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---- registry snapshot -------------------------------------------------------- */

static PyObject *node_snapshot(TimerNode *n, PyObject *path);

static int set_u64(PyObject *d, const char *key, uint64_t v) {
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    if (o == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return rc;
}

static PyObject *children_snapshot(TimerNode *n, PyObject *path) {
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(n->children, &pos, &k, &v)) {
        PyObject *sub = PyList_New(PyList_GET_SIZE(path));
        if (sub == NULL)
            goto err;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(path); i++)
            PyList_SET_ITEM(sub, i, Py_NewRef(PyList_GET_ITEM(path, i)));
        if (PyList_Append(sub, k) < 0) {
            Py_DECREF(sub);
            goto err;
        }
        PyObject *d = node_snapshot((TimerNode *)v, sub);
        Py_DECREF(sub);
        if (d == NULL || PyList_Append(list, d) < 0) {
            Py_XDECREF(d);
            goto err;
        }
        Py_DECREF(d);
    }
    return list;
err:
    Py_DECREF(list);
    return NULL;
}

static PyObject *node_snapshot(TimerNode *n, PyObject *path) {
    const ap_hist *h = &n->wall;
    uint64_t count = ap_hist_count(h), total = ap_hist_sum(h);
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    if (PyDict_SetItemString(d, "name", n->name) < 0 || PyDict_SetItemString(d, "path", path) < 0)
        goto err;
    if (set_u64(d, "count", count) < 0 || set_u64(d, "errors", n->errors) < 0 ||
        set_u64(d, "total_ns", total) < 0 ||
        set_u64(d, "mean_ns", count ? total / count : 0) < 0 ||
        set_u64(d, "min_ns", ap_hist_min(h)) < 0 ||
        set_u64(d, "p50_ns", ap_hist_percentile(h, 50)) < 0 ||
        set_u64(d, "p90_ns", ap_hist_percentile(h, 90)) < 0 ||
        set_u64(d, "p95_ns", ap_hist_percentile(h, 95)) < 0 ||
        set_u64(d, "p99_ns", ap_hist_percentile(h, 99)) < 0 ||
        set_u64(d, "max_ns", ap_hist_max(h)) < 0 || set_u64(d, "cpu_ns", n->cpu_total) < 0 ||
        set_u64(d, "cpu_max_ns", n->cpu_max) < 0 ||
        set_u64(d, "off_cpu_ns", total > n->cpu_total ? total - n->cpu_total : 0) < 0)
        goto err;
    PyObject *kids = children_snapshot(n, path);
    if (kids == NULL)
        goto err;
    int rc = PyDict_SetItemString(d, "children", kids);
    Py_DECREF(kids);
    if (rc < 0)
        goto err;
    return d;
err:
    Py_DECREF(d);
    return NULL;
}

/* Timer.snapshot() -> list of root timer dicts (see python/apiprof/timer.py). */
static PyObject *timer_snapshot(PyObject *cls, PyObject *Py_UNUSED(a)) {
    apext_state *st = apext_state_of_type((PyTypeObject *)cls);
    PyObject *path = PyList_New(0);
    if (path == NULL)
        return NULL;
    PyObject *r = children_snapshot((TimerNode *)st->timer_root, path);
    Py_DECREF(path);
    return r;
}

/* Timer.reset(): forgets every recorded block. Timers running now record into
 * detached nodes and are not seen. */
static PyObject *timer_reset(PyObject *cls, PyObject *Py_UNUSED(a)) {
    apext_state *st = apext_state_of_type((PyTypeObject *)cls);
    TimerNode *root = (TimerNode *)st->timer_root;
    PyObject *fresh = PyDict_New();
    if (fresh == NULL)
        return NULL;
    Py_SETREF(root->children, fresh);
    Py_RETURN_NONE;
}

/* Timer._set_decorator(callable): the Python function that builds decorator
 * wrappers: callable(name_or_None, func, cpu) -> wrapper. */
static PyObject *timer_set_decorator(PyObject *cls, PyObject *fn) {
    apext_state *st = apext_state_of_type((PyTypeObject *)cls);
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "_set_decorator takes a callable");
        return NULL;
    }
    Py_XSETREF(st->timer_decorate, Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyMethodDef timer_methods[] = {
    {"__enter__", (PyCFunction)timer_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))timer_exit, METH_FASTCALL, NULL},
    {"start", (PyCFunction)timer_start, METH_NOARGS,
     "start() -> self: start timing; nests under the timer running in this thread/task."},
    {"stop", (PyCFunction)(void (*)(void))timer_stop, METH_FASTCALL,
     "stop(error=False) -> int: stop timing, record the block, return its wall ns."},
    {"_start_stepped", (PyCFunction)timer_start_stepped, METH_NOARGS, NULL},
    {"_step_in", (PyCFunction)timer_step_in, METH_NOARGS, NULL},
    {"_step_out", (PyCFunction)timer_step_out, METH_NOARGS, NULL},
    {"snapshot", (PyCFunction)timer_snapshot, METH_NOARGS | METH_CLASS,
     "snapshot() -> list: the registry as a tree of dicts."},
    {"reset", (PyCFunction)timer_reset, METH_NOARGS | METH_CLASS,
     "reset(): forget every recorded block."},
    {"_set_decorator", (PyCFunction)timer_set_decorator, METH_O | METH_CLASS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot timer_slots[] = {
    {Py_tp_new, timer_new},
    {Py_tp_call, timer_call},
    {Py_tp_dealloc, timer_dealloc},
    {Py_tp_methods, timer_methods},
    {Py_tp_getset, timer_getset},
    {Py_tp_doc, "Timer(name, cpu=True): times a block (with / async with / start-stop)."},
    {0, NULL},
};

static PyType_Spec timer_spec = {
    .name = "apiprof._core.Timer",
    .basicsize = sizeof(TimerObject),
    /* Mutable (no Py_TPFLAGS_IMMUTABLETYPE): python/apiprof/_timer.py adds the
     * async protocol and report()/stats(), which are Python. */
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = timer_slots,
};

int apext_timer_init(PyObject *module, apext_state *st) {
    st->timer_node_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &node_spec, NULL);
    if (st->timer_node_type == NULL)
        return -1;
    st->timer_stack_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &stack_spec, NULL);
    if (st->timer_stack_type == NULL)
        return -1;
    st->timer_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &timer_spec, NULL);
    if (st->timer_type == NULL)
        return -1;
    st->timer_type->tp_vectorcall = timer_vectorcall;
    st->timer_root = (PyObject *)node_new(st, Py_None, NULL);
    if (st->timer_root == NULL)
        return -1;
    st->timer_parent_var = PyContextVar_New("apiprof.timer.stack", NULL);
    if (st->timer_parent_var == NULL)
        return -1;
    return PyModule_AddObjectRef(module, "Timer", (PyObject *)st->timer_type);
}

int apext_timer_traverse(apext_state *st, visitproc visit, void *arg) {
    Py_VISIT(st->timer_type);
    Py_VISIT(st->timer_node_type);
    Py_VISIT(st->timer_stack_type);
    Py_VISIT(st->timer_root);
    Py_VISIT(st->timer_parent_var);
    Py_VISIT(st->timer_decorate);
    return 0;
}

void apext_timer_clear(apext_state *st) {
    Py_CLEAR(st->timer_root);
    Py_CLEAR(st->timer_parent_var);
    Py_CLEAR(st->timer_decorate);
    Py_CLEAR(st->timer_type);
    Py_CLEAR(st->timer_node_type);
    Py_CLEAR(st->timer_stack_type);
}
