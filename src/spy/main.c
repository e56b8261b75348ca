/* main.c -- apiprof-spy, a sampler of another CPython process: command line, sampling loop, dump. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ap_err.h"
#include "ap_prof.h"
#include "spy_proc.h"
#include "spy_py.h"
#include "ap_spyboard.h"

#define PROG "apiprof-spy"

/* Exit statuses, one per failure a user can act on (docs/sampler.md). */
enum { EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_PERM = 3, EXIT_NOPROC = 4, EXIT_NOTPY = 5,
       EXIT_VERSION = 6 };

static const char usage_text[] =
    "usage: " PROG " record PID -o FILE [-r RATE] [-d SECONDS] [--idle] [--wait-start]\n"
    "                           [--subprocesses] [--phases A,B,...] [--async] [--requests]\n"
    "       " PROG " dump PID [--json]\n"
    "       " PROG " top PID [-r RATE] [--interval SECONDS] [--count N] [--idle]\n"
    "                           [--subprocesses]\n"
    "\n"
    "record: sample every thread of PID at RATE per second (default 100) for SECONDS\n"
    "        (default: until the process exits or SIGINT/SIGTERM), then write the\n"
    "        profile to FILE; --idle keeps the samples of threads that are not running;\n"
    "        --wait-start waits up to 5 s for a process just started to map Python;\n"
    "        --subprocesses also samples every Python descendant, those started later too;\n"
    "        --phases labels samples phase=A, and each SIGUSR1 moves to the next name;\n"
    "        --async also samples the await chain of each asyncio task that waits in an\n"
    "        await (thread \"awaiting\"); --requests labels the samples of each request\n"
    "        of apiprof's middleware with its number (request=N)\n"
    "dump:   print every thread's stack once, the requests in flight of apiprof's\n"
    "        middleware and the asyncio tasks, with their await chains (--json: as JSON)\n"
    "top:    sample like record and print, every interval (default 1 s), one JSON line\n"
    "        with the interval's functions by samples (own, inclusive), the hottest first\n";

static void usage_error(const char *msg, const char *arg) {
    fprintf(stderr, PROG ": %s%s (see " PROG " --help)\n", msg, arg ? arg : "");
    exit(EXIT_USAGE);
}

/* One line for the last spy failure, and its exit status. */
static int fail_exit(pid_t pid) {
    spy_fail kind = spy_fail_last();
    if (kind == SPY_FAIL_PERM) {
        fprintf(stderr,
                PROG ": reading process %d is not permitted: run as root, or as its user with "
                "kernel.yama.ptrace_scope=0 (sysctl -w kernel.yama.ptrace_scope=0); in a "
                "container add CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE)\n",
                (int)pid);
        return EXIT_PERM;
    }
    fprintf(stderr, PROG ": %s\n", ap_err_msg());
    switch (kind) {
    case SPY_FAIL_NOPROC: return EXIT_NOPROC;
    case SPY_FAIL_NOTPYTHON: return EXIT_NOTPY;
    case SPY_FAIL_VERSION: return EXIT_VERSION;
    default: return EXIT_FAIL;
    }
}

static pid_t parse_pid(const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < 1 || v > 0x3fffffff)
        usage_error("PID must be a process id, got ", s);
    return (pid_t)v;
}

/* Whether pid is gone (or a zombie: its memory is). */
static int process_gone(pid_t pid) {
    char st = spy_thread_state(pid, pid);
    return st == 0 || st == 'Z' || st == 'X';
}

/* A thread's display name: "MainThread" for the main thread, else its kernel name. */
static void thread_name(pid_t pid, pid_t tid, char *buf, size_t n) {
    if (tid == pid) {
        snprintf(buf, n, "MainThread");
        return;
    }
    spy_thread_comm(pid, tid, buf, n);
    if (!buf[0])
        snprintf(buf, n, "thread %d", (int)tid);
}

static void version_str(const spy_target *t, char *buf, size_t n) {
    snprintf(buf, n, "3.%u.%u", t->minor, t->micro);
}

/* ---- dump ---------------------------------------------------------------------------- */

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* The frames of a stack as the JSON array's members (innermost first). */
static void json_frames(const spy_thread *th) {
    for (size_t k = 0; k < th->nframes; k++) {
        const spy_frame *fr = &th->frames[k];
        printf("%s\n    {\"name\": ", k ? "," : "");
        json_str(stdout, fr->code->name);
        printf(", \"qualname\": ");
        json_str(stdout, fr->code->qualname);
        printf(", \"file\": ");
        json_str(stdout, fr->code->filename);
        printf(", \"line\": %d, \"firstlineno\": %u}", fr->line, fr->code->firstlineno);
    }
}

static const char *state_name(char st) {
    return st == 'R' ? "running" : st == 0 ? "gone" : "idle";
}

typedef struct rec_target rec_target;
static int dump_requests(spy_target *t, const spy_thread *threads, size_t n, int json);

static int cmd_dump(pid_t pid, int json) {
    spy_target t;
    if (spy_target_open(&t, pid) != 0)
        return fail_exit(pid);
    static spy_thread threads[SPY_MAX_THREADS];
    size_t n = 0;
    int rc = -1;
    /* Read again while a read or a thread's stack was torn (it changed meanwhile). */
    int torn = 1;
    for (int attempt = 0; attempt < 50 && (rc != 0 || torn); attempt++) {
        rc = spy_sample(&t, threads, SPY_MAX_THREADS, &n);
        if (rc != 0 && spy_fail_last() != SPY_FAIL_TORN)
            break;
        torn = 0;
        for (size_t i = 0; rc == 0 && i < n; i++)
            torn |= threads[i].torn;
    }
    if (rc != 0) {
        int st = fail_exit(pid);
        spy_target_close(&t);
        return st;
    }
    char ver[32], name[64];
    version_str(&t, ver, sizeof ver);
    if (json) {
        printf("{\"pid\": %d, \"python\": \"%s\", \"threads\": [", (int)pid, ver);
        for (size_t i = 0; i < n; i++) {
            spy_thread *th = &threads[i];
            thread_name(pid, th->tid, name, sizeof name);
            printf("%s\n  {\"tid\": %d, \"name\": ", i ? "," : "", (int)th->tid);
            json_str(stdout, name);
            printf(", \"state\": \"%s\", \"gil\": %s, \"frames\": [",
                   state_name(spy_thread_state(pid, th->tid)),
                   th->gil < 0 ? "null" : th->gil ? "true" : "false");
            json_frames(th);
            printf("]}");
        }
        printf("]");
        if (dump_requests(&t, threads, n, 1) != 0) {
            spy_target_close(&t);
            return fail_exit(pid);
        }
        printf("}\n");
    } else {
        printf("Process %d: Python %s (%s)\n", (int)pid, ver, t.sym.path);
        for (size_t i = 0; i < n; i++) {
            spy_thread *th = &threads[i];
            thread_name(pid, th->tid, name, sizeof name);
            printf("\nThread %d \"%s\" (%s%s)\n", (int)th->tid, name,
                   state_name(spy_thread_state(pid, th->tid)), th->gil > 0 ? ", holds the GIL" : "");
            for (size_t k = 0; k < th->nframes; k++) {
                const spy_frame *fr = &th->frames[k];
                printf("    %s (%s:%d)\n", fr->code->qualname, fr->code->filename, fr->line);
            }
        }
        if (dump_requests(&t, threads, n, 0) != 0) {
            spy_target_close(&t);
            return fail_exit(pid);
        }
    }
    spy_target_close(&t);
    return 0;
}

/* ---- record ----------------------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t phase_requests;   /* SIGUSR1s received (--phases) */

static void on_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void on_phase(int sig) {
    (void)sig;
    phase_requests++;
}

#define PHASES_MAX 64

/* A thread's tree of the samples taken while it served one route. */
typedef struct rec_routed {
    ap_str_id route, task, request;   /* AP_NONE: none */
    ap_tree *tree;
} rec_routed;

/* Per kernel thread: its trees in the profile (one for samples outside any request,
 * one per route it served) and its CPU time at the last tick. */
typedef struct rec_thread {
    pid_t pid, tid;
    ap_tree *tree;
    uint64_t cpu_ns;   /* UINT64_MAX: not read yet */
    rec_routed *routed;
    size_t nrouted, caprouted;
} rec_thread;

/* A sampled process; with --subprocesses there is one per Python descendant. */
struct rec_target {
    spy_target t;
    char exe[512];     /* /proc/PID/exe when opened: a change means an exec, reopen */
    int active;        /* 0 once the process is gone */
    /* The route board of apiprof's middleware in it (ap_spyboard.h), once found */
    uint64_t board;                /* its address, 0: not found (yet) */
    uint64_t board_look_ns;        /* when to look for it next */
    uint64_t beat_ns;              /* when to write the heartbeat next */
    ap_spyboard_slot slots[AP_SPYBOARD_SLOTS];   /* read this tick */
    uint32_t nslots;
    uint32_t nlabels;              /* labels read so far (they never change) */
    char labels[AP_SPYBOARD_LABELS][AP_SPYBOARD_LABEL_MAX + 1];
    ap_spyboard_request reqs[AP_SPYBOARD_REQUESTS];   /* --async: read this tick */
    uint32_t nreqs;
    uint32_t reqs_next;            /* the entry read_chains() starts at next */
    uint32_t inflight;             /* requests (or tasks) waiting its last call saw */
    int tasks;                     /* 1: asyncio's tasks are listed (3.14+, spy_tasks_find) */
    uint64_t tasks_look_ns;        /* when to look for them next */
    uint32_t tasks_next;           /* the task read_task_chains() starts at next */
};

/* Counters of a run, written to the metadata. */
typedef struct rec_stats {
    uint64_t ticks, missed, failed, kept, idle_skipped, gil, torn, awaiting;
} rec_stats;

typedef struct recorder {
    ap_prof *prof;
    pid_t pid;                 /* the process named on the command line */
    int idle, follow, async, requests;
    uint64_t period;
    rec_thread *threads;
    size_t nthreads, cap;
    rec_target **targets;
    size_t ntargets, captargets;
    pid_t *skip;               /* descendants that are not Python (or not readable) */
    size_t nskip, capskip;
    rec_stats st;
    ap_str_id k_thread, k_thread_id, k_pid, k_phase, k_route, k_task, k_request;
    /* --phases: the names, the one samples are labelled with now (index), and the
     * SIGUSR1s acted on */
    ap_str_id phases[PHASES_MAX];
    size_t nphases, phase;
    sig_atomic_t phase_seen;
} recorder;

/* Grow *arr (of *cap elements of size sz) to hold n + 1.  Returns 0 or -1 (ENOMEM). */
static int grow(void **arr, size_t *cap, size_t n, size_t sz) {
    if (n < *cap)
        return 0;
    size_t c = *cap ? 2 * *cap : 16;
    void *na = realloc(*arr, c * sz);
    if (!na)
        return ap_err_set(AP_ENOMEM, NULL);
    *arr = na;
    *cap = c;
    return 0;
}

/* What a sample's tree is labelled with beside its thread: NULL / 0 for none. */
typedef struct rec_what {
    const char *route, *task;
    uint64_t request;
} rec_what;

static ap_tree *rec_new_tree(recorder *r, pid_t pid, pid_t tid, const ap_str_id what[3]);

/* The "thread" of --async's samples: the tasks (or requests) of a process waiting in an
 * await. */
#define AWAITING_TID 0

/* The state of thread tid of pid (made at its first tick).  NULL on error (ENOMEM). */
static rec_thread *rec_thread_of(recorder *r, pid_t pid, pid_t tid) {
    for (size_t i = 0; i < r->nthreads; i++)
        if (r->threads[i].tid == tid && r->threads[i].pid == pid)
            return &r->threads[i];
    if (grow((void **)&r->threads, &r->cap, r->nthreads, sizeof *r->threads) != 0)
        return NULL;
    rec_thread *rt = &r->threads[r->nthreads++];
    *rt = (rec_thread){pid, tid, NULL, UINT64_MAX, NULL, 0, 0};
    return rt;
}

/* The tree in the current profile of rt's samples outside any request and named task,
 * or while it served a route (and request, with --requests) or ran the asyncio task of
 * that name; made at the first sample kept in it.  NULL on error (ENOMEM). */
static ap_tree *rec_tree_of(recorder *r, rec_thread *rt, rec_what w) {
    if (!r->requests)
        w.request = 0;
    if (!w.route && !w.task && !w.request) {
        if (!rt->tree)
            rt->tree = rec_new_tree(r, rt->pid, rt->tid, (ap_str_id[3]){AP_NONE, AP_NONE, AP_NONE});
        return rt->tree;
    }
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)w.request);
    const char *s[3] = {w.route, w.task, w.request ? num : NULL};
    ap_str_id id[3];
    for (int k = 0; k < 3; k++)
        if ((id[k] = s[k] ? ap_prof_intern(r->prof, s[k], strlen(s[k])) : AP_NONE) == AP_NONE && s[k])
            return NULL;
    for (size_t i = 0; i < rt->nrouted; i++)
        if (rt->routed[i].route == id[0] && rt->routed[i].task == id[1] &&
            rt->routed[i].request == id[2])
            return rt->routed[i].tree;
    ap_tree *tree;
    if (grow((void **)&rt->routed, &rt->caprouted, rt->nrouted, sizeof *rt->routed) != 0 ||
        !(tree = rec_new_tree(r, rt->pid, rt->tid, id)))
        return NULL;
    rt->routed[rt->nrouted++] = (rec_routed){id[0], id[1], id[2], tree};
    return tree;
}

/* A new tree of thread tid of pid, labelled with what (route, task, request) too where
 * it is not AP_NONE.  NULL on error (ENOMEM). */
static ap_tree *rec_new_tree(recorder *r, pid_t pid, pid_t tid, const ap_str_id what[3]) {
    char name[96], tidbuf[24], pidbuf[24];
    if (tid == AWAITING_TID)
        snprintf(name, sizeof name, "awaiting");
    else
        thread_name(pid, tid, name, sizeof name);
    /* The threads of descendants carry their pid in the name, so that report filters by
     * thread (--thread, the HTML page) tell the workers' MainThreads apart. */
    if (pid != r->pid) {
        size_t len = strlen(name);
        snprintf(name + len, sizeof name - len, " [pid %d]", (int)pid);
    }
    snprintf(tidbuf, sizeof tidbuf, "%d", (int)tid);
    snprintf(pidbuf, sizeof pidbuf, "%d", (int)pid);
    ap_label labels[7] = {
        {r->k_thread, ap_prof_intern(r->prof, name, strlen(name))},
        {r->k_thread_id, ap_prof_intern(r->prof, tidbuf, strlen(tidbuf))},
        {r->k_pid, ap_prof_intern(r->prof, pidbuf, strlen(pidbuf))},
    };
    size_t nlabels = 3;
    if (r->nphases)
        labels[nlabels++] = (ap_label){r->k_phase, r->phases[r->phase]};
    ap_str_id keys[3] = {r->k_route, r->k_task, r->k_request};
    for (int k = 0; k < 3; k++)
        if (what[k] != AP_NONE)
            labels[nlabels++] = (ap_label){keys[k], what[k]};
    for (size_t i = 0; i < nlabels; i++)
        if (labels[i].val == AP_NONE || labels[i].key == AP_NONE)
            return NULL;
    return ap_prof_tree_new(r->prof, labels, nlabels);
}

/* The profile frame of a cached code object (interned once). */
static ap_frame_id rec_frame(recorder *r, spy_code *c) {
    if (c->frame_id != AP_NONE)
        return c->frame_id;
    ap_frame f = {
        .name = ap_prof_intern(r->prof, c->name, strlen(c->name)),
        .qualname = ap_prof_intern(r->prof, c->qualname, strlen(c->qualname)),
        .file = ap_prof_intern(r->prof, c->filename, strlen(c->filename)),
        .line = c->firstlineno,
        .kind = AP_FRAME_PYTHON,
    };
    if (f.name == AP_NONE || f.qualname == AP_NONE || f.file == AP_NONE)
        return AP_NONE;
    c->frame_id = ap_prof_frame_intern(r->prof, &f);
    return c->frame_id;
}

/* Add one thread's stack to its tree: a sample at the innermost frame and, as the
 * estimate of time that a sampler gives, one period of wall time and the CPU time the
 * thread ran since the last tick (at most a period) on each frame of the stack, self
 * time on the innermost one. */
static int rec_add(recorder *r, ap_tree *tree, const spy_thread *th, uint64_t cpu) {
    ap_node *node = ap_tree_root(tree);
    for (size_t k = th->nframes; k-- > 0;) {
        ap_frame_id f = rec_frame(r, (spy_code *)th->frames[k].code);
        if (f == AP_NONE || !(node = ap_tree_child_fast(tree, node, f)))
            return -1;
        node->m[AP_M_TOTAL_NS] += r->period;
        node->m[AP_M_CPU_TOTAL_NS] += cpu;
    }
    node->m[AP_M_SAMPLES]++;
    node->m[AP_M_SELF_NS] += r->period;
    node->m[AP_M_CPU_NS] += cpu;
    return 0;
}

/* Add a request's await chain (spy_await(), innermost first) to its tree: ns (a period,
 * or more when not every request is read each tick) of await time (the tracer's AP_M_AWAIT_NS: suspended, not running) on each frame,
 * and on a last frame "<await LEAF>" (what the innermost one awaits, at the file and
 * line of its await) when leaf is not "".  Not a sample: samples count stacks that
 * ran. */
static int rec_add_awaiting(recorder *r, ap_tree *tree, const spy_thread *th, const char *leaf,
                            uint64_t ns) {
    ap_node *node = ap_tree_root(tree);
    for (size_t k = th->nframes; k-- > 0;) {
        ap_frame_id f = rec_frame(r, (spy_code *)th->frames[k].code);
        if (f == AP_NONE || !(node = ap_tree_child_fast(tree, node, f)))
            return -1;
        node->m[AP_M_AWAIT_NS] += ns;
    }
    if (!leaf[0] || !th->nframes)
        return 0;
    char name[SPY_LEAF_MAX + 16];
    snprintf(name, sizeof name, "<await %.*s>", SPY_LEAF_MAX - 1, leaf);
    const spy_frame *in = &th->frames[0];
    ap_frame lf = {
        .name = ap_prof_intern(r->prof, name, strlen(name)),
        .file = ap_prof_intern(r->prof, in->code->filename, strlen(in->code->filename)),
        .line = in->line > 0 ? (uint32_t)in->line : in->code->firstlineno,
        .kind = AP_FRAME_OTHER,
    };
    lf.qualname = lf.name;
    ap_frame_id f = lf.name == AP_NONE || lf.file == AP_NONE ? AP_NONE
                                                             : ap_prof_frame_intern(r->prof, &lf);
    if (f == AP_NONE || !(node = ap_tree_child_fast(tree, node, f)))
        return -1;
    node->m[AP_M_AWAIT_NS] += ns;
    return 0;
}

static uint64_t now_ns(clockid_t clock);

/* The header of the board at rt->board: {magic, heartbeat_ns, nslots, nlabels}.  0
 * when it is still the board (the magic is there), else -1 and rt->board is forgotten
 * (the process exec'd or unloaded it: looked for again).  Every write is preceded by
 * this check, so nothing is ever written but into a board. */
static int board_header(rec_target *rt, uint64_t head[3]) {
    if (spy_read(rt->t.pid, rt->board, head, 3 * sizeof head[0]) == 0 &&
        head[0] == AP_SPYBOARD_MAGIC)
        return 0;
    rt->board = 0;
    rt->nlabels = 0;
    return -1;
}

static int board_requests(rec_target *rt, uint32_t nlabels);

/* Where the middleware's awaitable (which await chains go through to the app's
 * coroutine) keeps that, read from the board until known.  Can't fail. */
static void board_via(rec_target *rt) {
    uint32_t off;
    if (!rt->t.via_off && spy_read(rt->t.pid, rt->board + offsetof(ap_spyboard, via_coro), &off,
                                   sizeof off) == 0 && off && off <= 4096) {
        snprintf(rt->t.via_name, sizeof rt->t.via_name, "%s", AP_SPYBOARD_VIA_TYPE);
        rt->t.via_off = off;
    }
    spy_fail_clear();
}

/* The middleware's board in rt (ap_spyboard.h), read before a sample: looked for once a
 * second until found; then the heartbeat is written when due, and the slots and new
 * labels read.  A failed read leaves no slot (the samples of this tick carry no route).
 * Can't fail. */
static void board_tick(rec_target *rt, uint64_t now) {
    rt->nslots = 0;
    rt->nreqs = 0;
    if (!rt->board) {
        if (now < rt->board_look_ns)
            return;
        rt->board_look_ns = now + 1000000000u;
        rt->board = spy_find_in_module(rt->t.pid, "/apiprof/_core.", AP_SPYBOARD_SYMBOL);
        if (!rt->board)
            return;
    }
    uint64_t head[3];
    if (board_header(rt, head) != 0)
        return;
    board_via(rt);
    if (now >= rt->beat_ns) {
        if (spy_write(rt->t.pid, rt->board + offsetof(ap_spyboard, heartbeat_ns), &now,
                      sizeof now) != 0)
            return;
        rt->beat_ns = now + AP_SPYBOARD_FRESH_NS / 4;
    }
    uint32_t counts[2];   /* nslots, nlabels */
    memcpy(counts, &head[2], sizeof counts);
    uint32_t n = counts[0] < AP_SPYBOARD_SLOTS ? counts[0] : AP_SPYBOARD_SLOTS;
    if (n && spy_read(rt->t.pid, rt->board + offsetof(ap_spyboard, slots), rt->slots,
                      n * sizeof *rt->slots) != 0)
        return;
    if (board_requests(rt, counts[1]) != 0)
        rt->nreqs = 0;
    rt->nslots = n;
}

/* The board's labels not read yet, and its requests in flight (rt->reqs, rt->nreqs).
 * Returns 0, or -1 when a read failed (no requests then).  Can't fail otherwise. */
static int board_requests(rec_target *rt, uint32_t nlabels) {
    rt->nreqs = 0;
    uint32_t nl = nlabels < AP_SPYBOARD_LABELS ? nlabels : AP_SPYBOARD_LABELS;
    if (nl > rt->nlabels) {
        uint64_t at = rt->board + offsetof(ap_spyboard, labels) + rt->nlabels * sizeof rt->labels[0];
        if (spy_read(rt->t.pid, at, rt->labels[rt->nlabels],
                     (nl - rt->nlabels) * sizeof rt->labels[0]) != 0)
            return -1;
        for (uint32_t i = rt->nlabels; i < nl; i++)
            rt->labels[i][AP_SPYBOARD_LABEL_MAX] = 0;
        rt->nlabels = nl;
    }
    uint32_t n;
    if (spy_read(rt->t.pid, rt->board + offsetof(ap_spyboard, nrequests), &n, sizeof n) != 0)
        return -1;
    n = n < AP_SPYBOARD_REQUESTS ? n : AP_SPYBOARD_REQUESTS;
    if (n && spy_read(rt->t.pid, rt->board + offsetof(ap_spyboard, requests), rt->reqs,
                      n * sizeof rt->reqs[0]) != 0)
        return -1;
    rt->nreqs = n;
    return 0;
}

/* The label of a request's entry, or NULL (none, or not read). */
static const char *board_label(const rec_target *rt, const ap_spyboard_request *e) {
    return e->label && e->label <= rt->nlabels ? rt->labels[e->label - 1] : NULL;
}

/* After the sample: the slots are read again, and a thread whose route changed while
 * its stack was read gets none this tick (its stack may be of either).  Can't fail. */
static void board_recheck(rec_target *rt) {
    ap_spyboard_slot now[AP_SPYBOARD_SLOTS];
    if (rt->nslots == 0)
        return;
    if (spy_read(rt->t.pid, rt->board + offsetof(ap_spyboard, slots), now,
                 rt->nslots * sizeof *now) != 0) {
        rt->nslots = 0;
        return;
    }
    for (uint32_t i = 0; i < rt->nslots; i++)
        if (now[i].tid != rt->slots[i].tid || now[i].label != rt->slots[i].label ||
            now[i].request != rt->slots[i].request)
            rt->slots[i].label = 0;
}

/* The route (and request) thread tid serves now by rt's board: route NULL when none.
 * Can't fail. */
static rec_what board_route(const rec_target *rt, pid_t tid) {
    for (uint32_t i = 0; i < rt->nslots; i++)
        if (rt->slots[i].tid == tid && rt->slots[i].label && rt->slots[i].label <= rt->nlabels)
            return (rec_what){rt->labels[rt->slots[i].label - 1], NULL, rt->slots[i].request};
    return (rec_what){NULL, NULL, 0};
}

/* The context variables each of n threads runs with (0: none, or not read), into vars:
 * read only when a request in flight published its own (else all 0).  Two reads for
 * all threads: their contexts, then those contexts' variables.  Can't fail. */
static void thread_vars(const rec_target *rt, const spy_thread *threads, size_t n, uint64_t *vars) {
    const spy_layout *l = &rt->t.lay;
    static uint64_t at[SPY_MAX_THREADS], got[SPY_MAX_THREADS];
    static size_t idx[SPY_MAX_THREADS];
    size_t m = 0;
    int any = 0;
    for (size_t i = 0; i < n; i++)
        vars[i] = 0;
    for (uint32_t k = 0; k < rt->nreqs && !any; k++)
        any = rt->reqs[k].id && rt->reqs[k].vars;
    if (!any || n > SPY_MAX_THREADS)
        return;
    for (size_t i = 0; i < n; i++)
        at[i] = threads[i].tstate + l->ts_context;
    if (spy_read_many(rt->t.pid, at, n, got, sizeof got[0]) != 0)
        return;
    for (size_t i = 0; i < n; i++)
        if (got[i]) {
            idx[m] = i;
            at[m++] = got[i] + l->ctx_vars;
        }
    if (m == 0 || spy_read_many(rt->t.pid, at, m, got, sizeof got[0]) != 0)
        return;
    for (size_t k = 0; k < m; k++)
        vars[idx[k]] = got[k];
}

/* The route and request of the request in flight whose context variables are vars (a
 * thread-pool worker running its work in a copy of its context): route NULL when none.
 * Can't fail. */
static rec_what board_route_of_vars(const rec_target *rt, uint64_t vars) {
    for (uint32_t k = 0; vars && k < rt->nreqs; k++)
        if (rt->reqs[k].id && rt->reqs[k].vars == vars)
            return (rec_what){board_label(rt, &rt->reqs[k]), NULL, rt->reqs[k].id};
    return (rec_what){NULL, NULL, 0};
}

/* The board's heartbeat is taken back: the middleware stops its work for it at once.
 * Only in a process still sampled whose board is still there.  Can't fail. */
static void board_leave(rec_target *rt) {
    uint64_t zero = 0, head[3];
    if (rt->board && rt->active && board_header(rt, head) == 0)
        (void)spy_write(rt->t.pid, rt->board + offsetof(ap_spyboard, heartbeat_ns), &zero,
                        sizeof zero);
}

/* The await chains read last (innermost first), what each awaits, and what each is of. */
static spy_thread chains[AP_SPYBOARD_REQUESTS];
static char chain_leaf[AP_SPYBOARD_REQUESTS][SPY_LEAF_MAX];
static uint32_t chain_at[AP_SPYBOARD_REQUESTS];
static size_t nchains;

/* The chains of the coroutines cand[0..n) that are not 0 (requests, or tasks not
 * running), at most limit of them from index *next on, in turn (*next moves past the
 * last one read): chain k is of cand[chain_at[k]]; rt->inflight counts them all.
 * Returns 0, or -1 as spy_await_many(). */
static int read_chains_of(rec_target *rt, const uint64_t *cand, uint32_t n, uint32_t *next,
                          uint32_t limit) {
    static uint64_t coro[AP_SPYBOARD_REQUESTS];
    static int res[AP_SPYBOARD_REQUESTS];
    nchains = 0;
    uint32_t start = *next < n ? *next : 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (start + k) % n;
        if (!cand[i])
            continue;
        rt->inflight++;
        if (nchains < limit) {
            chain_at[nchains] = i;
            coro[nchains++] = cand[i];
            *next = i + 1;
        }
    }
    return spy_await_many(&rt->t, coro, nchains, chains, chain_leaf, res);
}

/* The await chains of rt's requests in flight (rt->reqs): chain k is of entry
 * chain_at[k]; a request running now, or whose entry changed while it was read, has no
 * frames.  At most limit are read, in turn (read_chains_of()).  Returns 0, or -1 when
 * the target is gone or refuses reads. */
static int read_chains(rec_target *rt, uint32_t limit) {
    static uint64_t cand[AP_SPYBOARD_REQUESTS];
    for (uint32_t i = 0; i < rt->nreqs; i++)
        cand[i] = rt->reqs[i].id ? rt->reqs[i].coro : 0;
    if (read_chains_of(rt, cand, rt->nreqs, &rt->reqs_next, limit) != 0)
        return -1;
    /* An entry whose id changed meanwhile served another request: its chain may be
     * another's, or memory freed since. */
    ap_spyboard_request now[AP_SPYBOARD_REQUESTS];
    if (rt->nreqs && spy_read(rt->t.pid, rt->board + offsetof(ap_spyboard, requests), now,
                              rt->nreqs * sizeof now[0]) != 0)
        return spy_fail_last() == SPY_FAIL_TORN ? (nchains = 0, 0) : -1;
    for (size_t k = 0; k < nchains; k++)
        if (now[chain_at[k]].id != rt->reqs[chain_at[k]].id)
            chains[k].nframes = 0;
    return 0;
}

/* The asyncio tasks of the last list_tasks() (chain_at indexes them). */
static spy_task tasks[AP_SPYBOARD_REQUESTS];
static size_t ntasks;

/* Whether rt's asyncio tasks can be listed (looked for once a second until they can).
 * Can't fail (a failed look is a "not yet"). */
static int tasks_ready(rec_target *rt, uint64_t now) {
    if (!rt->tasks && now >= rt->tasks_look_ns) {
        rt->tasks_look_ns = now + 1000000000u;
        rt->tasks = spy_tasks_find(&rt->t) == 1;
        spy_fail_clear();
    }
    return rt->tasks;
}

/* List rt's asyncio tasks of the n threads into tasks[].  Returns 0, or -1 when the
 * target is gone or refuses reads. */
static int list_tasks(rec_target *rt, const spy_thread *threads, size_t n) {
    nchains = 0;
    return spy_tasks(&rt->t, threads, n, tasks, AP_SPYBOARD_REQUESTS, &ntasks);
}

/* Names of tasks read, direct-mapped by process, task and name object ("" for asyncio's
 * default names, which are no label). */
static struct task_name {
    pid_t pid;
    uint64_t task, name;
    char s[AP_SPYBOARD_LABEL_MAX + 1];
} task_names[256];

/* The "task" label of tk: its name when the app gave it one, else NULL.  Can't fail (a
 * name that cannot be read is none). */
static const char *task_label(rec_target *rt, const spy_task *tk) {
    struct task_name *s = &task_names[(tk->addr >> 4 ^ tk->name >> 4 ^ (uint64_t)rt->t.pid) % 256];
    if (s->pid != rt->t.pid || s->task != tk->addr || s->name != tk->name) {
        char buf[AP_SPYBOARD_LABEL_MAX + 1];
        if (spy_task_name(&rt->t, tk->name, buf, sizeof buf) != 0) {
            spy_fail_clear();
            return NULL;
        }
        *s = (struct task_name){rt->t.pid, tk->addr, tk->name, ""};
        if (!ap_task_name_is_default(buf, strlen(buf)))
            memcpy(s->s, buf, sizeof s->s);
    }
    return s->s[0] ? s->s : NULL;
}

/* The task of tasks[] thread th runs now (its coroutine's frame is on the thread's
 * stack), or NULL.  Can't fail. */
static const spy_task *running_task(const rec_target *rt, const spy_thread *th) {
    for (unsigned g = 0; g < th->ngen; g++)
        for (size_t k = 0; k < ntasks; k++)
            if (tasks[k].coro && th->gen_frames[g] == tasks[k].coro + rt->t.lay.gen_iframe)
                return &tasks[k];
    return NULL;
}

/* Mark the tasks of tasks[] that the n threads run now, with their threads (before 3.14
 * this is how a running one is known); ran[i] gets thread i's, or NULL (ran may be
 * NULL).  Can't fail. */
static void mark_running(const rec_target *rt, const spy_thread *threads, size_t n,
                         const spy_task **ran) {
    for (size_t i = 0; i < n; i++) {
        spy_task *tk = (spy_task *)running_task(rt, &threads[i]);
        if (tk) {
            tk->running = 1;
            tk->tid = threads[i].tid;
        }
        if (ran)
            ran[i] = tk;
    }
}

/* The await chains of rt's asyncio tasks of the last list_tasks() that are not running
 * now (read_chains() for tasks: chain k is of tasks[chain_at[k]], at most limit read, in
 * turn; rt->inflight counts those waiting).  Returns 0, or -1 when the target is gone or
 * refuses reads. */
static int read_task_chains(rec_target *rt, uint32_t limit) {
    static uint64_t cand[AP_SPYBOARD_REQUESTS];
    for (size_t i = 0; i < ntasks; i++)
        cand[i] = tasks[i].running ? 0 : tasks[i].coro;
    return read_chains_of(rt, cand, (uint32_t)ntasks, &rt->tasks_next, limit);
}

/* The board's request that chain k (of the last read) serves: the entry whose coroutine
 * is one of the chain's, or NULL.  Can't fail. */
static const ap_spyboard_request *chain_request(const rec_target *rt, size_t k) {
    const uint64_t *obj = spy_await_objects(&rt->t, k);
    for (uint32_t e = 0; obj && e < rt->nreqs; e++)
        if (rt->reqs[e].id)
            for (size_t f = 0; f < chains[k].nframes; f++)
                if (obj[f] == rt->reqs[e].coro)
                    return &rt->reqs[e];
    return NULL;
}

/* Requests whose await chains --async reads per tick (in turn when more are in flight):
 * a chain is a read per await level, about 1 us each (the kernel pins the pages), so
 * this bounds the sampler's cost with hundreds of requests in flight. */
#define AWAIT_PER_TICK 16

/* --async: a sample of each asyncio task of rt waiting in an await, with the route of
 * the request it serves (each request of the board when tasks are not listed), in the
 * "awaiting" tree of its route (and name, for a named task).  Returns 0, or -1 on an error that ends the run. */
static int rec_awaiting(recorder *r, rec_target *rt, int by_task) {
    rt->inflight = 0;
    if ((by_task ? read_task_chains(rt, AWAIT_PER_TICK) : read_chains(rt, AWAIT_PER_TICK)) != 0) {
        if (spy_fail_last() == SPY_FAIL_NOPROC || process_gone(rt->t.pid)) {
            rt->active = 0;
            return 0;
        }
        return -1;
    }
    /* each request read stands for inflight / read of them: its period is weighted so */
    uint32_t nread = rt->inflight < AWAIT_PER_TICK ? rt->inflight : AWAIT_PER_TICK;
    uint64_t ns = nread ? r->period * rt->inflight / nread : 0;
    for (size_t k = 0; k < nchains; k++) {
        if (chains[k].nframes == 0)
            continue;
        const ap_spyboard_request *e = by_task ? chain_request(rt, k) : &rt->reqs[chain_at[k]];
        rec_what w = {e ? board_label(rt, e) : NULL,
                      by_task ? task_label(rt, &tasks[chain_at[k]]) : NULL, e ? e->id : 0};
        rec_thread *rth = rec_thread_of(r, rt->t.pid, AWAITING_TID);
        ap_tree *tree = rth ? rec_tree_of(r, rth, w) : NULL;
        if (!tree || rec_add_awaiting(r, tree, &chains[k], chain_leaf[k], ns) != 0)
            return -1;
        r->st.awaiting++;
    }
    return 0;
}

/* One tick of one process.  Returns 0 (also when the process is gone: it is marked
 * inactive), or -1 on an error that ends the run. */
static int rec_tick(recorder *r, rec_target *rt) {
    static spy_thread threads[SPY_MAX_THREADS];
    spy_target *t = &rt->t;
    size_t n = 0;
    board_tick(rt, now_ns(CLOCK_MONOTONIC));
    if (spy_sample(t, threads, SPY_MAX_THREADS, &n) != 0) {
        spy_fail kind = spy_fail_last();
        if (kind == SPY_FAIL_NOPROC || process_gone(t->pid)) {
            rt->active = 0;
            return 0;
        }
        if (kind != SPY_FAIL_TORN)
            return -1;
        r->st.failed++;
        return 0;
    }
    board_recheck(rt);
    static uint64_t vars[SPY_MAX_THREADS];
    thread_vars(rt, threads, n, vars);
    /* --async: the tasks, for the task each thread runs and the chains of those waiting */
    int by_task = r->async && tasks_ready(rt, now_ns(CLOCK_MONOTONIC));
    if (by_task && list_tasks(rt, threads, n) != 0) {
        if (spy_fail_last() == SPY_FAIL_NOPROC || process_gone(t->pid)) {
            rt->active = 0;
            return 0;
        }
        return -1;
    }
    static const spy_task *ran[SPY_MAX_THREADS];
    if (by_task)
        mark_running(rt, threads, n, ran);
    for (size_t i = 0; i < n; i++) {
        const spy_thread *th = &threads[i];
        if (th->gil > 0)
            r->st.gil++;
        /* On CPU: the thread ran since the last tick (schedstat); a runnable thread
         * waiting for a CPU ('R' in stat) is not.  The first tick of a thread, or a
         * kernel without schedstat, falls back to the state letter. */
        rec_thread *rth = rec_thread_of(r, t->pid, th->tid);
        if (!rth)
            return -1;
        uint64_t cpu_now = spy_thread_cpu_ns(t->pid, th->tid), cpu = 0;
        if (cpu_now != UINT64_MAX && rth->cpu_ns != UINT64_MAX)
            cpu = cpu_now > rth->cpu_ns ? cpu_now - rth->cpu_ns : 0;
        else if (spy_thread_state(t->pid, th->tid) == 'R')
            cpu = r->period;
        rth->cpu_ns = cpu_now;
        if (cpu > r->period)
            cpu = r->period;
        if (!r->idle && cpu == 0) {
            r->st.idle_skipped++;
            continue;
        }
        if (th->nframes == 0)
            continue;
        rec_what w = board_route(rt, th->tid);
        if (!w.route)
            w = board_route_of_vars(rt, vars[i]);
        w.task = by_task && ran[i] ? task_label(rt, ran[i]) : NULL;
        ap_tree *tree = rec_tree_of(r, rth, w);
        if (!tree || rec_add(r, tree, th, cpu) != 0)
            return -1;
        r->st.kept++;
    }
    return r->async ? rec_awaiting(r, rt, by_task) : 0;
}

/* Open the target; with wait_start, a process that has not mapped its interpreter yet
 * (just started) is retried for up to 5 s. */
static int open_target(spy_target *t, pid_t pid, int wait_start) {
    for (int tries = 0;; tries++) {
        if (spy_target_open(t, pid) == 0)
            return 0;
        spy_fail kind = spy_fail_last();
        if (!wait_start || tries >= 500 || (kind != SPY_FAIL_NOTPYTHON && kind != SPY_FAIL_TORN))
            return -1;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void read_exe(pid_t pid, char *buf, size_t n) {
    char fn[64];
    snprintf(fn, sizeof fn, "/proc/%d/exe", (int)pid);
    ssize_t got = readlink(fn, buf, n - 1);
    buf[got > 0 ? got : 0] = 0;
}

/* Start sampling pid.  Returns 0 when it is sampled now, -1 when it cannot be (the
 * error is recorded). */
static int rec_open(recorder *r, pid_t pid, int wait_start) {
    if (grow((void **)&r->targets, &r->captargets, r->ntargets, sizeof *r->targets) != 0)
        return -1;
    rec_target *rt = calloc(1, sizeof *rt);
    if (!rt)
        return ap_err_set(AP_ENOMEM, NULL);
    if (open_target(&rt->t, pid, wait_start) != 0) {
        free(rt);
        return -1;
    }
    read_exe(pid, rt->exe, sizeof rt->exe);
    rt->active = 1;
    r->targets[r->ntargets++] = rt;
    return 0;
}

/* --subprocesses: every descendant of r->pid that is not sampled yet and is a Python
 * process starts being sampled; one that exec'd since it was opened is reopened. */
static void rec_follow(recorder *r) {
    DIR *d = opendir("/proc");
    if (!d)
        return;
    pid_t *pids = NULL, *ppids = NULL;
    size_t n = 0, cap = 0, cap2 = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        char fn[64], buf[512];
        snprintf(fn, sizeof fn, "/proc/%ld/stat", pid);
        FILE *f = fopen(fn, "re");
        if (!f)
            continue;
        size_t got = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[got] = 0;
        char *p = strrchr(buf, ')');
        int ppid;
        if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1)
            continue;
        if (grow((void **)&pids, &cap, n, sizeof *pids) != 0 ||
            grow((void **)&ppids, &cap2, n, sizeof *ppids) != 0)
            break;
        pids[n] = (pid_t)pid;
        ppids[n++] = (pid_t)ppid;
    }
    closedir(d);
    /* Descendants: mark[i] = 1 once pids[i]'s parent is r->pid or marked. */
    char *mark = calloc(n ? n : 1, 1);
    for (int changed = 1; mark && changed;) {
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (mark[i])
                continue;
            int up = ppids[i] == r->pid;
            for (size_t j = 0; j < n && !up; j++)
                up = mark[j] && pids[j] == ppids[i];
            if (up)
                mark[i] = changed = 1;
        }
    }
    for (size_t i = 0; mark && i < n; i++) {
        if (!mark[i])
            continue;
        int known = 0;
        for (size_t k = 0; k < r->nskip && !known; k++)
            known = r->skip[k] == pids[i];
        for (size_t k = 0; k < r->ntargets && !known; k++) {
            rec_target *rt = r->targets[k];
            if (rt->t.pid != pids[i] || !rt->active)
                continue;
            char exe[512];
            read_exe(pids[i], exe, sizeof exe);
            if (strcmp(exe, rt->exe) == 0)
                known = 1;
            else
                rt->active = 0;   /* it exec'd: what it runs now is opened below */
        }
        if (known || rec_open(r, pids[i], 0) == 0)
            continue;
        spy_fail kind = spy_fail_last();
        if (kind == SPY_FAIL_NOTPYTHON || kind == SPY_FAIL_VERSION || kind == SPY_FAIL_PERM) {
            if (grow((void **)&r->skip, &r->capskip, r->nskip, sizeof *r->skip) == 0)
                r->skip[r->nskip++] = pids[i];
        }
    }
    free(mark);
    free(pids);
    free(ppids);
}

static int meta_u64(ap_prof *p, const char *key, uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return ap_prof_meta_set(p, key, buf);
}

static uint64_t now_ns(clockid_t clk) {
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The target's command line, arguments separated by spaces, into buf. */
static void target_argv(pid_t pid, char *buf, size_t n) {
    char fn[64];
    snprintf(fn, sizeof fn, "/proc/%d/cmdline", (int)pid);
    FILE *f = fopen(fn, "re");
    size_t got = f ? fread(buf, 1, n - 1, f) : 0;
    if (f)
        fclose(f);
    buf[got] = 0;
    for (size_t i = 0; i + 1 < got; i++)
        if (!buf[i])
            buf[i] = ' ';
}

/* Start a new profile in r: the first one, or the next interval of top.  Threads keep
 * their CPU baselines; their trees and the code objects' frame ids are per profile.
 * Returns 0, or -1 with AP_ENOMEM. */
static int rec_new_prof(recorder *r) {
    ap_prof_free(r->prof);
    r->prof = ap_prof_new();
    if (!r->prof)
        return -1;
    r->k_thread = ap_prof_intern(r->prof, "thread", 6);
    r->k_thread_id = ap_prof_intern(r->prof, "thread_id", 9);
    r->k_pid = ap_prof_intern(r->prof, "pid", 3);
    r->k_route = ap_prof_intern(r->prof, "route", 5);
    r->k_task = ap_prof_intern(r->prof, "task", 4);
    r->k_request = ap_prof_intern(r->prof, "request", 7);
    for (size_t i = 0; i < r->nthreads; i++) {
        r->threads[i].tree = NULL;
        r->threads[i].nrouted = 0;
    }
    for (size_t i = 0; i < r->ntargets; i++)
        for (size_t k = 0; k < r->targets[i]->t.ncode; k++)
            r->targets[i]->t.code[k]->frame_id = AP_NONE;
    return r->k_pid == AP_NONE || r->k_route == AP_NONE || r->k_task == AP_NONE ||
                   r->k_request == AP_NONE ? -1 : 0;
}

/* The tick clock: returns 1 when a tick is due now (and schedules the next one), else
 * sleeps until the next one is due (or a signal comes) and returns 0.  A tick that comes
 * late (the sampler was not scheduled) is still taken up to two periods late; the ones
 * before it are skipped and counted in *missed rather than taken in a burst of identical
 * stacks. */
static int tick_due(uint64_t *next, uint64_t period, uint64_t *missed) {
    uint64_t now = now_ns(CLOCK_MONOTONIC);
    if (now < *next) {
        struct timespec ts = {(time_t)(*next / 1000000000u), (long)(*next % 1000000000u)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        return 0;
    }
    if (now - *next >= 2 * period) {
        uint64_t lost = (now - *next) / period - 1;
        *missed += lost;
        *next += lost * period;
    }
    *next += period;
    return 1;
}

/* One tick of every sampled process; with follow, new descendants are looked for twice
 * a second.  Returns 0, or the exit status of an error that ends the run. */
static int rec_tick_all(recorder *r, uint64_t *next_scan) {
    for (size_t i = 0; i < r->ntargets; i++)
        if (r->targets[i]->active && rec_tick(r, r->targets[i]) != 0)
            return fail_exit(r->targets[i]->t.pid);
    uint64_t now = now_ns(CLOCK_MONOTONIC);
    if (r->follow && now >= *next_scan) {
        rec_follow(r);
        *next_scan = now + 500000000u;
    }
    return 0;
}

static void rec_free(recorder *r) {
    for (size_t i = 0; i < r->nthreads; i++)
        free(r->threads[i].routed);
    free(r->threads);
    free(r->skip);
    ap_prof_free(r->prof);
    for (size_t i = 0; i < r->ntargets; i++) {
        board_leave(r->targets[i]);
        spy_target_close(&r->targets[i]->t);
        free(r->targets[i]);
    }
    free(r->targets);
}

static void install_stop_handlers(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* --phases: SIGUSR1 moves to the next phase.  The caller may have blocked it
 * until now (so that one sent before this point waits instead of killing). */
static void install_phase_handler(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_phase;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

/* Act on the SIGUSR1s received since the last call: each moves every thread to
 * new trees labelled with the next phase; after the last phase they are
 * ignored, with a line on stderr. */
static void rec_phase_switch(recorder *r) {
    sig_atomic_t req = phase_requests;
    for (; r->phase_seen != req; r->phase_seen++) {
        if (r->phase + 1 >= r->nphases) {
            fprintf(stderr, PROG ": SIGUSR1 after the last phase: ignored\n");
            continue;
        }
        r->phase++;
        for (size_t i = 0; i < r->nthreads; i++) {
            r->threads[i].tree = NULL;   /* new trees at the thread's next sample */
            r->threads[i].nrouted = 0;
        }
    }
}

/* Parse --phases "A,B,...": intern every name into r (distinct, 1 to 100 bytes,
 * at most PHASES_MAX).  0, or -1 with a message on stderr. */
static int rec_phases(recorder *r, const char *list) {
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len > 100 || r->nphases == PHASES_MAX) {
            fprintf(stderr, PROG ": --phases: 1 to %d names of 1 to 100 bytes, got %s\n",
                    PHASES_MAX, list);
            return -1;
        }
        ap_str_id id = ap_prof_intern(r->prof, p, len);
        if (id == AP_NONE)
            return -1;
        for (size_t i = 0; i < r->nphases; i++)
            if (r->phases[i] == id) {
                fprintf(stderr, PROG ": --phases: names must differ, got %s\n", list);
                return -1;
            }
        r->phases[r->nphases++] = id;
        p += len + (comma != NULL);
        if (comma && !*p) {
            fprintf(stderr, PROG ": --phases: an empty name in %s\n", list);
            return -1;
        }
    }
    if (r->nphases == 0)
        fprintf(stderr, PROG ": --phases: expected 1 to %d names, got none\n", PHASES_MAX);
    return r->nphases ? 0 : -1;
}

static int cmd_record(pid_t pid, const char *out, double rate, double duration, int idle,
                      int wait_start, int follow, const char *phases, int async, int requests) {
    recorder r = {.pid = pid, .idle = idle, .follow = follow, .async = async, .requests = requests,
                  .period = (uint64_t)(1e9 / rate)};
    if (rec_open(&r, pid, wait_start) != 0) {
        free(r.targets);
        return fail_exit(pid);
    }
    if (rec_new_prof(&r) != 0) {
        rec_free(&r);
        return fail_exit(pid);
    }
    if (phases != NULL) {
        if ((r.k_phase = ap_prof_intern(r.prof, "phase", 5)) == AP_NONE ||
            rec_phases(&r, phases) != 0) {
            rec_free(&r);
            return EXIT_USAGE;
        }
        install_phase_handler();
    }
    install_stop_handlers();
    uint64_t start = now_ns(CLOCK_MONOTONIC);
    uint64_t wall_start = now_ns(CLOCK_REALTIME), cpu_start = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    uint64_t limit = duration > 0 ? (uint64_t)(duration * 1e9) : UINT64_MAX;
    uint64_t next = start, next_scan = start;
    int rc = 0;
    while (!stop_requested && r.targets[0]->active && rc == 0 &&
           now_ns(CLOCK_MONOTONIC) - start < limit) {
        if (!tick_due(&next, r.period, &r.st.missed))
            continue;
        if (r.nphases)
            rec_phase_switch(&r);
        r.st.ticks++;
        rc = rec_tick_all(&r, &next_scan);
    }
    int gone = !r.targets[0]->active;
    uint64_t elapsed = now_ns(CLOCK_MONOTONIC) - start;
    uint64_t cpu = now_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu_start;
    char ver[32], argv[1024], rate_s[32], pids[1024] = "";
    version_str(&r.targets[0]->t, ver, sizeof ver);
    target_argv(pid, argv, sizeof argv);
    snprintf(rate_s, sizeof rate_s, "%g", rate);
    for (size_t i = 0; i < r.ntargets; i++) {
        size_t len = strlen(pids);
        snprintf(pids + len, sizeof pids - len, "%s%d", i ? "," : "", (int)r.targets[i]->t.pid);
        r.st.torn += r.targets[i]->t.torn;
    }
    if (rc == 0) {
        if (ap_prof_meta_set(r.prof, "tool", PROG) != 0 || ap_prof_meta_set(r.prof, "clock", "wall") != 0 ||
            ap_prof_meta_set(r.prof, "python", ver) != 0 ||
            (argv[0] && ap_prof_meta_set(r.prof, "argv", argv) != 0) ||
            meta_u64(r.prof, "pid", (uint64_t)pid) != 0 ||
            ap_prof_meta_set(r.prof, "sampled_pids", pids) != 0 ||
            ap_prof_meta_set(r.prof, "sample_rate", rate_s) != 0 ||
            ap_prof_meta_set(r.prof, "sample_idle", idle ? "1" : "0") != 0 ||
            ap_prof_meta_set(r.prof, "sample_async", async ? "1" : "0") != 0 ||
            ap_prof_meta_set(r.prof, "sample_requests", requests ? "1" : "0") != 0 ||
            (async && meta_u64(r.prof, "sample_awaiting", r.st.awaiting) != 0) ||
            meta_u64(r.prof, "sample_ticks", r.st.ticks) != 0 ||
            meta_u64(r.prof, "sample_missed", r.st.missed) != 0 ||
            meta_u64(r.prof, "sample_failed", r.st.failed) != 0 ||
            meta_u64(r.prof, "sample_stacks", r.st.kept) != 0 ||
            meta_u64(r.prof, "sample_idle_skipped", r.st.idle_skipped) != 0 ||
            meta_u64(r.prof, "sample_gil", r.st.gil) != 0 ||
            meta_u64(r.prof, "sample_torn_frames", r.st.torn) != 0 ||
            meta_u64(r.prof, "sample_duration_ns", elapsed) != 0 ||
            meta_u64(r.prof, "sampler_cpu_ns", cpu) != 0 ||
            meta_u64(r.prof, "started", wall_start) != 0 ||
            meta_u64(r.prof, "stopped", now_ns(CLOCK_REALTIME)) != 0 ||
            ap_prof_meta_set(r.prof, "target_exited", gone ? "1" : "0") != 0 ||
            ap_prof_finish(r.prof) != 0 || ap_prof_write(r.prof, out) != 0) {
            fprintf(stderr, PROG ": %s\n", ap_err_msg());
            rc = EXIT_FAIL;
        } else {
            fprintf(stderr,
                    PROG ": %llu ticks at %s Hz over %.2f s (%llu missed), %zu process%s, "
                    "%llu stacks, %.1f us of CPU per tick%s; wrote %s\n",
                    (unsigned long long)r.st.ticks, rate_s, (double)elapsed / 1e9,
                    (unsigned long long)r.st.missed, r.ntargets, r.ntargets == 1 ? "" : "es",
                    (unsigned long long)r.st.kept,
                    r.st.ticks ? (double)cpu / 1e3 / (double)r.st.ticks : 0.0,
                    gone ? "; the process exited" : "", out);
        }
    }
    rec_free(&r);
    return rc;
}

/* ---- dump: requests in flight -------------------------------------------------------- */

/* The asyncio tasks of rt of the n threads (spy_tasks_find()), each with its name,
 * thread, the request it serves and, when it waits in an await, its await chain (read
 * again while torn); text, or with json the ", \"tasks\": [...]" member (null when they
 * cannot be listed).
 * Returns 0, or -1 when the target is gone or refuses reads. */
static int dump_tasks(rec_target *rt, const spy_thread *threads, size_t n, int json) {
    int ready = spy_tasks_find(&rt->t);
    if (ready < 0)
        return -1;
    if (!ready) {
        if (json)
            printf(", \"tasks\": null");
        else if (rt->t.minor >= 14)
            printf("\nNo asyncio tasks: the _asyncio module is not loaded\n");
        else
            printf("\nNo asyncio tasks: asyncio is not imported\n");
        return 0;
    }
    int torn = 1;
    for (int attempt = 0; attempt < 20 && torn; attempt++) {
        if (list_tasks(rt, threads, n) != 0 || read_task_chains(rt, AP_SPYBOARD_REQUESTS) != 0) {
            if (spy_fail_last() != SPY_FAIL_TORN)
                return -1;
            continue;
        }
        torn = 0;
        for (size_t k = 0; k < nchains; k++)
            torn |= chains[k].torn;
    }
    mark_running(rt, threads, n, NULL);
    if (json)
        printf(", \"tasks\": [");
    else
        printf("\nasyncio tasks%s\n", ntasks ? "" : ": none");
    for (size_t i = 0; i < ntasks; i++) {
        const spy_task *tk = &tasks[i];
        size_t k = 0;
        while (k < nchains && chain_at[k] != i)
            k++;
        const spy_thread *ch = k < nchains ? &chains[k] : NULL;
        const ap_spyboard_request *e = ch ? chain_request(rt, k) : NULL;
        /* (marked running by the threads' stacks, read before its chain: it waits now) */
        int running = tk->running && !(ch && ch->nframes);
        const char *state = running ? "running" : ch && ch->nframes ? "awaiting" : "unknown";
        char name[128];
        if (spy_task_name(&rt->t, tk->name, name, sizeof name) < 0)
            return -1;
        if (json) {
            printf("%s\n  {\"name\": ", i ? "," : "");
            json_str(stdout, name);
            if (tk->tid < 0)
                printf(", \"tid\": null");
            else
                printf(", \"tid\": %d", (int)tk->tid);
            printf(", \"state\": \"%s\", \"request\": ", state);
            if (e)
                printf("%llu", (unsigned long long)e->id);
            else
                printf("null");
            printf(", \"awaits\": ");
            if (ch && ch->nframes && chain_leaf[k][0])
                json_str(stdout, chain_leaf[k]);
            else
                printf("null");
            printf(", \"frames\": [");
            if (ch)
                json_frames(ch);
            printf("]}");
        } else {
            printf("\nTask \"%s\"", name[0] ? name : "?");
            if (tk->tid >= 0)
                printf(" (thread %d)", (int)tk->tid);
            if (e)
                printf(", request %llu", (unsigned long long)e->id);
            printf(": %s\n", running ? "running (on a thread above)"
                              : ch && ch->nframes ? "waiting in an await" : "changing too fast to read");
            if (ch && ch->nframes && chain_leaf[k][0])
                printf("    <await %s>\n", chain_leaf[k]);
            for (size_t f = 0; ch && f < ch->nframes; f++) {
                const spy_frame *fr = &ch->frames[f];
                printf("    %s (%s:%d)\n", fr->code->qualname, fr->code->filename, fr->line);
            }
        }
    }
    if (json)
        printf("]");
    else if (ntasks == AP_SPYBOARD_REQUESTS)
        printf("\n(the first %d tasks)\n", AP_SPYBOARD_REQUESTS);
    return 0;
}

/* The requests in flight of t's middleware board (none when apiprof's middleware is not
 * in it), each with its route, its age and, when it waits in an await, its await chain
 * (read again while torn); text, or with json the ", \"requests\": [...]" member; then
 * dump_tasks().  Returns 0, or -1 when the target is gone or refuses reads. */
static int dump_requests(spy_target *t, const spy_thread *threads, size_t n, int json) {
    rec_target *rt = calloc(1, sizeof *rt);
    if (!rt)
        return spy_fail_set(SPY_FAIL_OTHER, AP_ENOMEM, "out of memory");
    rt->t = *t;   /* borrowed: its caches are handed back below */
    rt->board = spy_find_in_module(t->pid, "/apiprof/_core.", AP_SPYBOARD_SYMBOL);
    uint64_t head[3];
    uint32_t counts[2] = {0, 0};
    int rc = 0, torn = 1;
    if (rt->board && board_header(rt, head) == 0) {
        board_via(rt);
        memcpy(counts, &head[2], sizeof counts);
        for (int attempt = 0; attempt < 20 && torn; attempt++) {
            rt->reqs_next = 0;   /* in the board's order */
            if (board_requests(rt, counts[1]) != 0 || read_chains(rt, AP_SPYBOARD_REQUESTS) != 0) {
                if (spy_fail_last() != SPY_FAIL_TORN) {
                    rc = -1;
                    break;
                }
                continue;
            }
            torn = 0;
            for (size_t k = 0; k < nchains; k++)
                torn |= chains[k].torn;
        }
    }
    uint64_t now = now_ns(CLOCK_MONOTONIC);
    if (json)
        printf(", \"requests\": [");
    for (size_t i = 0; rc == 0 && i < nchains; i++) {
        const ap_spyboard_request *e = &rt->reqs[chain_at[i]];
        const char *route = board_label(rt, e);
        const spy_thread *ch = &chains[i];
        const char *state = ch->nframes ? "awaiting" : ch->torn ? "unknown" : "running";
        double age = now > e->t0_ns ? (double)(now - e->t0_ns) / 1e9 : 0.0;
        if (json) {
            printf("%s\n  {\"id\": %llu, \"route\": ", i ? "," : "", (unsigned long long)e->id);
            if (route)
                json_str(stdout, route);
            else
                printf("null");
            printf(", \"age_s\": %.3f, \"state\": \"%s\", \"awaits\": ", age, state);
            if (chain_leaf[i][0] && ch->nframes)
                json_str(stdout, chain_leaf[i]);
            else
                printf("null");
            printf(", \"frames\": [");
            json_frames(ch);
            printf("]}");
        } else {
            if (i == 0)
                printf("\nRequests in flight\n");
            printf("\nRequest %llu %s, for %.3f s: %s", (unsigned long long)e->id,
                   route ? route : "(route not known yet)", age,
                   ch->nframes ? "waiting in an await" : ch->torn ? "changing too fast to read"
                                                       : "running (on a thread above)");
            printf("\n");
            if (ch->nframes && chain_leaf[i][0])
                printf("    <await %s>\n", chain_leaf[i]);
            for (size_t k = 0; k < ch->nframes; k++) {
                const spy_frame *fr = &ch->frames[k];
                printf("    %s (%s:%d)\n", fr->code->qualname, fr->code->filename, fr->line);
            }
        }
    }
    if (json)
        printf("]");
    if (rc == 0)
        rc = dump_tasks(rt, threads, n, json);
    *t = rt->t;   /* the caches, grown by the chains */
    free(rt);
    return rc;
}

/* ---- top ------------------------------------------------------------------------- */

/* Rows of the function table printed per interval of top. */
#define TOP_ROWS 40

/* One interval of top as a JSON line: its function table by samples (own and
 * inclusive), the hottest first. */
static int top_print(recorder *r, uint64_t ticks, double elapsed) {
    ap_functab ft;
    if (ap_functab_build(r->prof, NULL, NULL, &ft) != 0)
        return -1;
    size_t nthreads = 0, nproc = 0;
    for (size_t i = 0; i < r->nthreads; i++)
        nthreads += r->threads[i].tree != NULL;
    for (size_t i = 0; i < r->ntargets; i++)
        nproc += r->targets[i]->active;
    printf("{\"elapsed\": %.3f, \"ticks\": %llu, \"processes\": %zu, \"threads\": %zu, "
           "\"functions\": [",
           elapsed, (unsigned long long)ticks, nproc, nthreads);
    for (size_t i = 0; i < ft.nrows && i < TOP_ROWS; i++) {
        const ap_func_row *row = &ft.rows[i];
        const ap_frame *f = ap_prof_frame(r->prof, row->frame);
        printf("%s{\"qualname\": ", i ? ", " : "");
        json_str(stdout, ap_prof_str(r->prof, f->qualname));
        printf(", \"file\": ");
        json_str(stdout, ap_prof_str(r->prof, f->file));
        printf(", \"line\": %u, \"own\": %llu, \"total\": %llu, \"cpu_ns\": %llu}", f->line,
               (unsigned long long)row->m[AP_M_SAMPLES],
               (unsigned long long)row->incl[AP_M_SAMPLES],
               (unsigned long long)row->incl[AP_M_CPU_NS]);
    }
    printf("]}\n");
    fflush(stdout);
    ap_functab_free(&ft);
    return 0;
}

/* Sample like record, and every interval print what the interval's samples say and start
 * over; count intervals (0: until the process exits or a signal). */
static int cmd_top(pid_t pid, double rate, double interval, long count, int idle, int follow) {
    recorder r = {.pid = pid, .idle = idle, .follow = follow, .period = (uint64_t)(1e9 / rate)};
    if (rec_open(&r, pid, 0) != 0 || rec_new_prof(&r) != 0) {
        int st = fail_exit(pid);
        rec_free(&r);
        return st;
    }
    install_stop_handlers();
    uint64_t start = now_ns(CLOCK_MONOTONIC), step = (uint64_t)(interval * 1e9);
    uint64_t next = start, next_scan = start, report_at = start + step, ticks = 0;
    long printed = 0;
    int rc = 0;
    while (!stop_requested && r.targets[0]->active && rc == 0) {
        if (!tick_due(&next, r.period, &r.st.missed))
            continue;
        ticks++;
        if ((rc = rec_tick_all(&r, &next_scan)) != 0)
            break;
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        if (now < report_at)
            continue;
        if (top_print(&r, ticks, (double)(now - start) / 1e9) != 0 || rec_new_prof(&r) != 0) {
            rc = fail_exit(pid);
            break;
        }
        ticks = 0;
        report_at += step;
        if (count && ++printed >= count)
            break;
    }
    rec_free(&r);
    return rc;
}

/* The options, which may come before or after the command and PID. */
typedef struct options {
    const char *out;
    const char *phases;   /* record: --phases A,B,... */
    double rate, duration;
    int idle, json, wait_start, follow, async, requests;
    double interval;   /* top: seconds per refresh */
    long count;        /* top: refreshes (0: no limit) */
} options;

static const struct option long_opts[] = {
    {"output", required_argument, NULL, 'o'}, {"rate", required_argument, NULL, 'r'},
    {"duration", required_argument, NULL, 'd'}, {"idle", no_argument, NULL, 'i'},
    {"json", no_argument, NULL, 'j'}, {"wait-start", no_argument, NULL, 'w'},
    {"subprocesses", no_argument, NULL, 's'}, {"interval", required_argument, NULL, 'I'},
    {"count", required_argument, NULL, 'n'}, {"phases", required_argument, NULL, 'P'},
    {"async", no_argument, NULL, 'a'}, {"requests", no_argument, NULL, 'R'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Parse options up to the first operand; exits on a mistake or --help. */
static void parse_options(int argc, char **argv, options *o) {
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "+o:r:d:n:h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'o': o->out = optarg; break;
        case 'r':
            o->rate = strtod(optarg, &end);
            if (*end || !isfinite(o->rate) || o->rate < 1 || o->rate > 10000)
                usage_error("-r: expected a rate from 1 to 10000 per second, got ", optarg);
            break;
        case 'd':
            o->duration = strtod(optarg, &end);
            if (*end || !isfinite(o->duration) || o->duration <= 0)
                usage_error("-d: expected a positive number of seconds, got ", optarg);
            break;
        case 'i': o->idle = 1; break;
        case 'j': o->json = 1; break;
        case 'w': o->wait_start = 1; break;
        case 's': o->follow = 1; break;
        case 'I':
            o->interval = strtod(optarg, &end);
            if (*end || !isfinite(o->interval) || o->interval < 0.1 || o->interval > 3600)
                usage_error("--interval: expected seconds from 0.1 to 3600, got ", optarg);
            break;
        case 'n':
            o->count = strtol(optarg, &end, 10);
            if (*end || o->count < 1)
                usage_error("--count: expected a positive integer, got ", optarg);
            break;
        case 'P': o->phases = optarg; break;
        case 'a': o->async = 1; break;
        case 'R': o->requests = 1; break;
        case 'h': fputs(usage_text, stdout); exit(0);
        default: usage_error("bad option", NULL);
        }
    }
}

int main(int argc, char **argv) {
    options o = {.rate = 100, .interval = 1};
    parse_options(argc, argv, &o);
    if (optind + 2 > argc)
        usage_error("expected a command (record, dump or top) and a PID", NULL);
    const char *cmd = argv[optind];
    pid_t pid = parse_pid(argv[optind + 1]);
    optind += 2;
    parse_options(argc, argv, &o);
    if (optind < argc)
        usage_error("unexpected argument ", argv[optind]);
    if (strcmp(cmd, "dump") == 0)
        return cmd_dump(pid, o.json);
    if (strcmp(cmd, "top") == 0)
        return cmd_top(pid, o.rate, o.interval, o.count, o.idle, o.follow);
    if (strcmp(cmd, "record") == 0) {
        if (!o.out)
            usage_error("record needs -o FILE", NULL);
        return cmd_record(pid, o.out, o.rate, o.duration, o.idle, o.wait_start, o.follow,
                          o.phases, o.async, o.requests);
    }
    usage_error("unknown command ", cmd);
    return EXIT_USAGE;
}
