/* main.c -- apiprof-spy, a sampler of another CPython process: command line, sampling loop, dump. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ap_err.h"
#include "ap_prof.h"
#include "spy_proc.h"
#include "spy_py.h"

#define PROG "apiprof-spy"

/* Exit statuses, one per failure a user can act on (docs/sampler.md). */
enum { EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_PERM = 3, EXIT_NOPROC = 4, EXIT_NOTPY = 5,
       EXIT_VERSION = 6 };

static const char usage_text[] =
    "usage: " PROG " record PID -o FILE [-r RATE] [-d SECONDS] [--idle] [--wait-start]\n"
    "       " PROG " dump PID [--json]\n"
    "\n"
    "record: sample every thread of PID at RATE per second (default 100) for SECONDS\n"
    "        (default: until the process exits or SIGINT/SIGTERM), then write the\n"
    "        profile to FILE; --idle keeps the samples of threads that are not running;\n"
    "        --wait-start waits up to 5 s for a process just started to map Python\n"
    "dump:   print every thread's stack once (--json: as JSON)\n";

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

static const char *state_name(char st) {
    return st == 'R' ? "running" : st == 0 ? "gone" : "idle";
}

static int cmd_dump(pid_t pid, int json) {
    spy_target t;
    if (spy_target_open(&t, pid) != 0)
        return fail_exit(pid);
    static spy_thread threads[SPY_MAX_THREADS];
    size_t n = 0;
    int rc = -1;
    for (int attempt = 0; attempt < 20 && rc != 0; attempt++) {
        rc = spy_sample(&t, threads, SPY_MAX_THREADS, &n);
        if (rc != 0 && spy_fail_last() != SPY_FAIL_TORN)
            break;
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
            printf("]}");
        }
        printf("]}\n");
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
    }
    spy_target_close(&t);
    return 0;
}

/* ---- record ----------------------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* Per kernel thread: its tree in the profile and its CPU time at the last tick. */
typedef struct rec_thread {
    pid_t tid;
    ap_tree *tree;
    uint64_t cpu_ns;   /* UINT64_MAX: not read yet */
} rec_thread;

typedef struct recorder {
    ap_prof *prof;
    pid_t pid;
    rec_thread *threads;
    size_t nthreads, cap;
    ap_str_id k_thread, k_thread_id, k_pid;
} recorder;

static rec_thread *rec_thread_of(recorder *r, pid_t tid) {
    for (size_t i = 0; i < r->nthreads; i++)
        if (r->threads[i].tid == tid)
            return &r->threads[i];
    if (r->nthreads == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        rec_thread *nt = realloc(r->threads, cap * sizeof *nt);
        if (!nt)
            return NULL;
        r->threads = nt;
        r->cap = cap;
    }
    char name[64], tidbuf[24], pidbuf[24];
    thread_name(r->pid, tid, name, sizeof name);
    snprintf(tidbuf, sizeof tidbuf, "%d", (int)tid);
    snprintf(pidbuf, sizeof pidbuf, "%d", (int)r->pid);
    ap_label labels[3] = {
        {r->k_thread, ap_prof_intern(r->prof, name, strlen(name))},
        {r->k_thread_id, ap_prof_intern(r->prof, tidbuf, strlen(tidbuf))},
        {r->k_pid, ap_prof_intern(r->prof, pidbuf, strlen(pidbuf))},
    };
    for (int i = 0; i < 3; i++)
        if (labels[i].val == AP_NONE)
            return NULL;
    ap_tree *tree = ap_prof_tree_new(r->prof, labels, 3);
    if (!tree)
        return NULL;
    r->threads[r->nthreads] = (rec_thread){tid, tree, UINT64_MAX};
    return &r->threads[r->nthreads++];
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
static int rec_add(recorder *r, ap_tree *tree, const spy_thread *th, uint64_t cpu,
                   uint64_t period) {
    ap_node *node = ap_tree_root(tree);
    for (size_t k = th->nframes; k-- > 0;) {
        ap_frame_id f = rec_frame(r, (spy_code *)th->frames[k].code);
        if (f == AP_NONE || !(node = ap_tree_child_fast(tree, node, f)))
            return -1;
        node->m[AP_M_TOTAL_NS] += period;
        node->m[AP_M_CPU_TOTAL_NS] += cpu;
    }
    node->m[AP_M_SAMPLES]++;
    node->m[AP_M_SELF_NS] += period;
    node->m[AP_M_CPU_NS] += cpu;
    return 0;
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

static int cmd_record(pid_t pid, const char *out, double rate, double duration, int idle,
                      int wait_start) {
    spy_target t;
    if (open_target(&t, pid, wait_start) != 0)
        return fail_exit(pid);
    recorder r = {.pid = pid};
    r.prof = ap_prof_new();
    if (!r.prof) {
        spy_target_close(&t);
        return fail_exit(pid);
    }
    r.k_thread = ap_prof_intern(r.prof, "thread", 6);
    r.k_thread_id = ap_prof_intern(r.prof, "thread_id", 9);
    r.k_pid = ap_prof_intern(r.prof, "pid", 3);
    static spy_thread threads[SPY_MAX_THREADS];
    struct sigaction sa = {0};
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    uint64_t period = (uint64_t)(1e9 / rate), start = now_ns(CLOCK_MONOTONIC);
    uint64_t wall_start = now_ns(CLOCK_REALTIME), cpu_start = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    uint64_t limit = duration > 0 ? (uint64_t)(duration * 1e9) : UINT64_MAX;
    uint64_t ticks = 0, missed = 0, failed = 0, kept = 0, idle_skipped = 0, gil_samples = 0;
    uint64_t next = start;
    int rc = 0, gone = 0;
    while (!stop_requested) {
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        if (now - start >= limit)
            break;
        if (now < next) {
            struct timespec ts = {(time_t)(next / 1000000000u), (long)(next % 1000000000u)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            continue;
        }
        /* Behind schedule (a slow sample, a descheduled sampler): a tick up to two
         * periods late is still taken, the ones before are skipped and counted rather
         * than taken in a burst of identical stacks. */
        if (now - next >= 2 * period) {
            uint64_t lost = (now - next) / period - 1;
            missed += lost;
            next += lost * period;
        }
        next += period;
        ticks++;
        size_t n = 0;
        if (spy_sample(&t, threads, SPY_MAX_THREADS, &n) != 0) {
            spy_fail kind = spy_fail_last();
            if (kind == SPY_FAIL_NOPROC || process_gone(pid)) {
                gone = 1;
                break;
            }
            if (kind != SPY_FAIL_TORN) {
                rc = fail_exit(pid);
                break;
            }
            failed++;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            const spy_thread *th = &threads[i];
            if (th->gil > 0)
                gil_samples++;
            /* On CPU: the thread ran since the last tick (schedstat); a runnable thread
             * waiting for a CPU ('R' in stat) is not.  The first tick of a thread, or a
             * kernel without schedstat, falls back to the state letter. */
            rec_thread *rt = rec_thread_of(&r, th->tid);
            if (!rt) {
                rc = fail_exit(pid);
                goto done;
            }
            uint64_t cpu_now = spy_thread_cpu_ns(pid, th->tid), cpu = 0;
            if (cpu_now != UINT64_MAX && rt->cpu_ns != UINT64_MAX)
                cpu = cpu_now > rt->cpu_ns ? cpu_now - rt->cpu_ns : 0;
            else if (spy_thread_state(pid, th->tid) == 'R')
                cpu = period;
            rt->cpu_ns = cpu_now;
            if (cpu > period)
                cpu = period;
            if (!idle && cpu == 0) {
                idle_skipped++;
                continue;
            }
            if (th->nframes == 0)
                continue;
            if (rec_add(&r, rt->tree, th, cpu, period) != 0) {
                rc = fail_exit(pid);
                goto done;
            }
            kept++;
        }
    }
done:;
    uint64_t elapsed = now_ns(CLOCK_MONOTONIC) - start;
    uint64_t cpu = now_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu_start;
    char ver[32], argv[1024], rate_s[32];
    version_str(&t, ver, sizeof ver);
    target_argv(pid, argv, sizeof argv);
    snprintf(rate_s, sizeof rate_s, "%g", rate);
    if (rc == 0) {
        if (ap_prof_meta_set(r.prof, "tool", PROG) != 0 || ap_prof_meta_set(r.prof, "clock", "wall") != 0 ||
            ap_prof_meta_set(r.prof, "python", ver) != 0 ||
            (argv[0] && ap_prof_meta_set(r.prof, "argv", argv) != 0) ||
            meta_u64(r.prof, "pid", (uint64_t)pid) != 0 ||
            ap_prof_meta_set(r.prof, "sample_rate", rate_s) != 0 ||
            ap_prof_meta_set(r.prof, "sample_idle", idle ? "1" : "0") != 0 ||
            meta_u64(r.prof, "sample_ticks", ticks) != 0 ||
            meta_u64(r.prof, "sample_missed", missed) != 0 ||
            meta_u64(r.prof, "sample_failed", failed) != 0 ||
            meta_u64(r.prof, "sample_stacks", kept) != 0 ||
            meta_u64(r.prof, "sample_idle_skipped", idle_skipped) != 0 ||
            meta_u64(r.prof, "sample_gil", gil_samples) != 0 ||
            meta_u64(r.prof, "sample_torn_frames", t.torn) != 0 ||
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
                    PROG ": %llu ticks at %s Hz over %.2f s (%llu missed), %llu stacks, %.1f us "
                    "of CPU per tick%s; wrote %s\n",
                    (unsigned long long)ticks, rate_s, (double)elapsed / 1e9,
                    (unsigned long long)missed, (unsigned long long)kept,
                    ticks ? (double)cpu / 1e3 / (double)ticks : 0.0,
                    gone ? "; the process exited" : "", out);
        }
    }
    free(r.threads);
    ap_prof_free(r.prof);
    spy_target_close(&t);
    return rc;
}

/* The options, which may come before or after the command and PID. */
typedef struct options {
    const char *out;
    double rate, duration;
    int idle, json, wait_start;
} options;

static const struct option long_opts[] = {
    {"output", required_argument, NULL, 'o'}, {"rate", required_argument, NULL, 'r'},
    {"duration", required_argument, NULL, 'd'}, {"idle", no_argument, NULL, 'i'},
    {"json", no_argument, NULL, 'j'}, {"wait-start", no_argument, NULL, 'w'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Parse options up to the first operand; exits on a mistake or --help. */
static void parse_options(int argc, char **argv, options *o) {
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "+o:r:d:h", long_opts, NULL)) != -1) {
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
        case 'h': fputs(usage_text, stdout); exit(0);
        default: usage_error("bad option", NULL);
        }
    }
}

int main(int argc, char **argv) {
    options o = {.rate = 100};
    parse_options(argc, argv, &o);
    if (optind + 2 > argc)
        usage_error("expected a command (record or dump) and a PID", NULL);
    const char *cmd = argv[optind];
    pid_t pid = parse_pid(argv[optind + 1]);
    optind += 2;
    parse_options(argc, argv, &o);
    if (optind < argc)
        usage_error("unexpected argument ", argv[optind]);
    if (strcmp(cmd, "dump") == 0)
        return cmd_dump(pid, o.json);
    if (strcmp(cmd, "record") == 0) {
        if (!o.out)
            usage_error("record needs -o FILE", NULL);
        return cmd_record(pid, o.out, o.rate, o.duration, o.idle, o.wait_start);
    }
    usage_error("unknown command ", cmd);
    return EXIT_USAGE;
}
