/* lg_load.c -- the load engine of apiprof-load: per-thread epoll loops over keep-alive connections. */
#include "lg_load.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ap_clock.h"
#include "ap_err.h"
#include "ap_http.h"

atomic_int lg_load_stop;

#define SCAN_NS 5000000u          /* timeouts and back-offs are checked this often */
#define BACKOFF_NS 10000000u      /* wait after a failed connect before the next one */
#define PUBLISH_NS 250000000u     /* progress snapshots */
#define READ_BUF 65536
#define MAX_EVENTS 256
#define GATE_POLL_NS 1000000u     /* how often a thread waiting at the phase gate looks */
#define GATE_LEAD_NS 2000000u     /* the measured phase starts this long after the signal */

/* The phase gate (lg_load_config.phase_pid), shared by the threads.  The
 * last thread to arrive sends the signal, writes t_measure and kill_errno,
 * then sets open (release); the others read them after seeing open
 * (acquire). */
typedef struct gate {
    atomic_uint arrived;     /* threads whose cold requests have all ended */
    atomic_int open;
    unsigned nthreads;
    pid_t pid;
    uint64_t t_measure;      /* start of the measured phase */
    int kill_errno;          /* kill() failed: the run stops */
} gate;

/* Connection states. */
enum {
    C_CLOSED,       /* no socket; free for a request (which will connect first) */
    C_BACKOFF,      /* no socket; connect failed, free again at deadline */
    C_CONNECTING,   /* connect in progress, a request waits */
    C_IDLE,         /* connected, no request: free */
    C_WRITING,      /* request partly written */
    C_READING       /* request written, response being read */
};

typedef struct conn {
    int fd;
    int state;
    int phase;
    uint32_t target;
    size_t written;
    uint64_t intended_ns;   /* when the request was meant to go out */
    uint64_t sent_ns;       /* when its first byte was written */
    uint64_t deadline_ns;   /* connect, request or back-off deadline */
    ap_http_parser parser;
} conn;

/* One thread's state.  Everything is owned and touched by that thread only,
 * except the fields marked "protected by mu" and `finished`. */
typedef struct worker {
    const lg_load_config *cfg;
    unsigned id;
    conn *conns;
    unsigned nconns;
    uint32_t *freestack;    /* indices of free connections (C_CLOSED or C_IDLE) */
    unsigned nfree;
    int epfd;
    lg_load_stats *stats;   /* [phase * ngroups + group of the target] */
    char *buf;
    uint64_t t0;                 /* common start of all threads */
    uint64_t t_measure, t_end;   /* t_end is UINT64_MAX in count mode */
    uint64_t share;              /* count mode: measured requests of this thread */
    uint64_t issued_measured;
    double interval_ns;          /* open model: time between two intended sends */
    uint64_t first_ns;           /* open model: intended time of request 0 */
    uint64_t next_k;             /* open model: index of the next request to send */
    uint64_t sched_pos;
    uint64_t inflight;
    uint64_t done;
    uint64_t last_end_ns;        /* end of the last measured request */
    gate *gate;                  /* shared; NULL without a phase gate */
    int gated;                   /* measured requests wait for the gate */
    int arrived;                 /* this thread has arrived at the gate */
    ap_hist progress;            /* latency of every request, for the progress line */
    pthread_mutex_t mu;
    ap_hist progress_pub;        /* protected by mu */
    uint64_t done_pub;           /* protected by mu */
    atomic_int finished;
    int failed;                  /* the loop stopped on a system error, message in err */
    char err[AP_ERR_MSG_MAX];
    pthread_t thread;
} worker;

void lg_load_stats_init(lg_load_stats *s) {
    memset(s, 0, sizeof *s);
    ap_hist_init(&s->latency);
    ap_hist_init(&s->uncorrected);
}

void lg_load_stats_merge(lg_load_stats *dst, const lg_load_stats *src) {
    ap_hist_merge(&dst->latency, &src->latency);
    ap_hist_merge(&dst->uncorrected, &src->uncorrected);
    dst->responses += src->responses;
    for (int k = 0; k < LG_LOAD_ERR_KINDS; k++)
        dst->errors[k] += src->errors[k];
    dst->unfinished += src->unfinished;
    dst->bytes_sent += src->bytes_sent;
    dst->bytes_received += src->bytes_received;
    for (int i = 0; i < LG_LOAD_STATUS_N; i++)
        dst->status[i] += src->status[i];
    dst->status_other += src->status_other;
}

uint64_t lg_load_stats_ended(const lg_load_stats *s) {
    uint64_t n = s->responses;
    for (int k = 0; k < LG_LOAD_ERR_KINDS; k++)
        n += s->errors[k];
    return n;
}

const char *lg_load_errkind_name(lg_load_errkind k) {
    static const char *const names[] = {"connect", "timeout", "reset", "parse"};
    return (unsigned)k < LG_LOAD_ERR_KINDS ? names[k] : "unknown";
}

static lg_load_stats *stats_of(worker *w, const conn *c) {
    const lg_targets *ts = w->cfg->targets;
    return &w->stats[(size_t)c->phase * ts->ngroups + ts->items[c->target].group];
}

/* Index in the replay plan of this thread's k-th request: threads take turns. */
static uint64_t replay_index(const worker *w, uint64_t k) {
    return w->id + k * w->cfg->threads;
}

static uint64_t intended_of(const worker *w, uint64_t k) {
    const lg_replay_plan *plan = w->cfg->replay;
    if (plan != NULL) {
        uint64_t i = replay_index(w, k);
        if (i >= plan->n)
            return UINT64_MAX;
        return w->first_ns + (uint64_t)((double)plan->offset_ns[i] / w->cfg->speed);
    }
    return w->first_ns + (uint64_t)((double)k * w->interval_ns);
}

/* The target of this thread's k-th request. */
static uint32_t target_of(worker *w, uint64_t k) {
    const lg_targets *ts = w->cfg->targets;
    if (w->cfg->replay != NULL)
        return w->cfg->replay->target[replay_index(w, k)];
    return ts->schedule[w->sched_pos++ % ts->schedule_len];
}

static void push_free(worker *w, conn *c) {
    assert(w->nfree < w->nconns);
    w->freestack[w->nfree++] = (uint32_t)(c - w->conns);
}

static void close_conn(conn *c) {
    if (c->fd >= 0) {
        close(c->fd);   /* also removes it from the epoll set */
        c->fd = -1;
    }
}

static void request_ended(worker *w, conn *c, uint64_t now) {
    w->inflight--;
    w->done++;
    if (c->phase == LG_LOAD_WARM)
        w->last_end_ns = now;
}

static void fail(worker *w, conn *c, lg_load_errkind kind, uint64_t now) {
    stats_of(w, c)->errors[kind]++;
    request_ended(w, c, now);
    close_conn(c);
    if (kind == LG_LOAD_ERR_CONNECT) {
        c->state = C_BACKOFF;   /* do not hammer a refusing server in a tight loop */
        c->deadline_ns = now + BACKOFF_NS;
    } else {
        c->state = C_CLOSED;
        push_free(w, c);
    }
}

static void complete(worker *w, conn *c, uint64_t now) {
    lg_load_stats *s = stats_of(w, c);
    s->responses++;
    int code = c->parser.status;
    if (code >= LG_LOAD_STATUS_MIN && code < LG_LOAD_STATUS_MIN + LG_LOAD_STATUS_N)
        s->status[code - LG_LOAD_STATUS_MIN]++;
    else
        s->status_other++;
    uint64_t lat = now - c->intended_ns;
    ap_hist_record(&s->latency, lat);
    ap_hist_record(&s->uncorrected, now - c->sent_ns);
    ap_hist_record(&w->progress, lat);
    request_ended(w, c, now);
    if (c->parser.keep_alive) {
        c->state = C_IDLE;
    } else {
        close_conn(c);
        c->state = C_CLOSED;
    }
    push_free(w, c);
}

static int epoll_set(worker *w, conn *c, int op, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - w->conns)};
    return epoll_ctl(w->epfd, op, c->fd, &ev);
}

/* Write (the rest of) the request. */
static void send_request(worker *w, conn *c, uint64_t now) {
    const lg_target *t = &w->cfg->targets->items[c->target];
    if (c->written == 0) {
        c->sent_ns = now;
        c->deadline_ns = now + w->cfg->timeout_ns;
        ap_http_parser_reset(&c->parser, t->head);
    }
    int was_writing = c->state == C_WRITING;
    while (c->written < t->request_len) {
        ssize_t n = send(c->fd, t->request + c->written, t->request_len - c->written,
                         MSG_NOSIGNAL);
        if (n > 0) {
            c->written += (size_t)n;
            stats_of(w, c)->bytes_sent += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!was_writing && epoll_set(w, c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT) < 0) {
                fail(w, c, LG_LOAD_ERR_RESET, now);
                return;
            }
            c->state = C_WRITING;
            return;
        }
        fail(w, c, LG_LOAD_ERR_RESET, now);
        return;
    }
    c->state = C_READING;
    if (was_writing && epoll_set(w, c, EPOLL_CTL_MOD, EPOLLIN) < 0)
        fail(w, c, LG_LOAD_ERR_RESET, now);
}

static void connected(worker *w, conn *c, uint64_t now) {
    c->state = C_IDLE;   /* send_request() moves it on */
    send_request(w, c, now);
}

static void open_conn(worker *w, conn *c, uint64_t now) {
    const lg_targets *ts = w->cfg->targets;
    c->fd = socket(ts->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fail(w, c, LG_LOAD_ERR_CONNECT, now);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(c->fd, (const struct sockaddr *)&ts->addr, ts->addrlen);
    if (rc < 0 && errno != EINPROGRESS) {
        fail(w, c, LG_LOAD_ERR_CONNECT, now);
        return;
    }
    if (epoll_set(w, c, EPOLL_CTL_ADD, rc == 0 ? EPOLLIN : EPOLLOUT) < 0) {
        fail(w, c, LG_LOAD_ERR_CONNECT, now);
        return;
    }
    if (rc == 0) {
        connected(w, c, now);
        return;
    }
    c->state = C_CONNECTING;
    c->deadline_ns = now + w->cfg->connect_timeout_ns;
}

static void finish_connect(worker *w, conn *c, uint64_t now) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0 ||
        epoll_set(w, c, EPOLL_CTL_MOD, EPOLLIN) < 0) {
        fail(w, c, LG_LOAD_ERR_CONNECT, now);
        return;
    }
    connected(w, c, now);
}

static void on_readable(worker *w, conn *c, uint64_t now) {
    ssize_t n = recv(c->fd, w->buf, READ_BUF, 0);
    if (n > 0) {
        stats_of(w, c)->bytes_received += (uint64_t)n;
        long used = ap_http_parser_feed(&c->parser, w->buf, (size_t)n);
        if (used < 0 || (c->parser.done && used < n)) {
            fail(w, c, LG_LOAD_ERR_PARSE, now);   /* malformed, or bytes nobody asked for */
            return;
        }
        if (c->parser.done)
            complete(w, c, now);
        return;
    }
    if (n == 0) {
        if (ap_http_parser_eof(&c->parser) == 0)
            complete(w, c, now);
        else
            fail(w, c, LG_LOAD_ERR_RESET, now);
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return;
    fail(w, c, LG_LOAD_ERR_RESET, now);
}

static void on_event(worker *w, conn *c, uint32_t ev, uint64_t now) {
    switch (c->state) {
    case C_CONNECTING:
        finish_connect(w, c, now);
        break;
    case C_WRITING:
        if (ev & EPOLLOUT)
            send_request(w, c, now);
        if (c->state == C_READING || c->state == C_WRITING)
            if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(w, c, now);
        break;
    case C_READING:
        on_readable(w, c, now);
        break;
    case C_IDLE:
        /* The server closed a kept-alive connection (or sent something
         * unasked): drop it; the next request will reconnect. */
        close_conn(c);
        c->state = C_CLOSED;
        break;
    default:
        break;   /* a stale event of a socket closed earlier in this batch */
    }
}

/* Whether a request is due now; its intended send time in *intended. */
static int next_due(worker *w, uint64_t now, uint64_t *intended) {
    const lg_load_config *cfg = w->cfg;
    uint64_t t = lg_load_open(cfg) ? intended_of(w, w->next_k) : now;
    if (w->gated && t >= w->t_measure)
        return 0;   /* the measured phase waits for the gate */
    if (w->gate != NULL && !w->gated && t < w->t_measure)
        t = w->t_measure;   /* past the gate nothing is cold */
    if (t > now || t >= w->t_end)
        return 0;
    if (cfg->requests && t >= w->t_measure && w->issued_measured >= w->share)
        return 0;
    *intended = t;
    return 1;
}

static void issue_due(worker *w, uint64_t now) {
    unsigned budget = w->nfree;   /* each free connection at most once per call */
    uint64_t intended;
    while (budget-- > 0 && w->nfree > 0 && next_due(w, now, &intended)) {
        conn *c = &w->conns[w->freestack[--w->nfree]];
        c->target = target_of(w, w->next_k);
        c->intended_ns = intended;
        c->phase = intended < w->t_measure ? LG_LOAD_COLD : LG_LOAD_WARM;
        c->written = 0;
        w->next_k++;
        if (c->phase == LG_LOAD_WARM)
            w->issued_measured++;
        w->inflight++;
        if (c->state == C_IDLE)
            send_request(w, c, now);
        else
            open_conn(w, c, now);
    }
}

static void scan(worker *w, uint64_t now) {
    for (unsigned i = 0; i < w->nconns; i++) {
        conn *c = &w->conns[i];
        if (now < c->deadline_ns)
            continue;
        if (c->state == C_CONNECTING) {
            fail(w, c, LG_LOAD_ERR_CONNECT, now);
        } else if (c->state == C_WRITING || c->state == C_READING) {
            fail(w, c, LG_LOAD_ERR_TIMEOUT, now);
        } else if (c->state == C_BACKOFF) {
            c->state = C_CLOSED;
            push_free(w, c);
        }
    }
}

static void publish(worker *w) {
    pthread_mutex_lock(&w->mu);
    memcpy(&w->progress_pub, &w->progress, sizeof w->progress);
    w->done_pub = w->done;
    pthread_mutex_unlock(&w->mu);
}

/* At the end: what is still in flight, or due but unsent, is unfinished. */
static void count_unfinished(worker *w, uint64_t now) {
    for (unsigned i = 0; i < w->nconns; i++) {
        conn *c = &w->conns[i];
        if (c->state == C_CONNECTING || c->state == C_WRITING || c->state == C_READING)
            stats_of(w, c)->unfinished++;
        close_conn(c);
    }
    if (!lg_load_open(w->cfg))
        return;
    uint64_t end = now < w->t_end ? now : w->t_end;
    for (;;) {
        uint64_t t = intended_of(w, w->next_k);
        if (t >= end || (w->cfg->requests && t >= w->t_measure && w->issued_measured >= w->share))
            break;
        conn fake = {.phase = t < w->t_measure ? LG_LOAD_COLD : LG_LOAD_WARM,
                     .target = target_of(w, w->next_k)};
        stats_of(w, &fake)->unfinished++;
        if (fake.phase == LG_LOAD_WARM)
            w->issued_measured++;
        w->next_k++;
    }
}

/* Arrive at the phase gate once every cold request of this thread has ended;
 * pass it once it is open. */
static void gate_step(worker *w, uint64_t now) {
    gate *g = w->gate;
    if (!w->arrived) {
        if (now < w->t_measure || w->inflight > 0 ||
            (lg_load_open(w->cfg) && intended_of(w, w->next_k) < w->t_measure))
            return;
        w->arrived = 1;
        if (atomic_fetch_add(&g->arrived, 1) + 1 == g->nthreads) {
            if (kill(g->pid, SIGUSR1) < 0)
                g->kill_errno = errno;
            g->t_measure = ap_clock_now_ns() + GATE_LEAD_NS;
            atomic_store_explicit(&g->open, 1, memory_order_release);
        }
    }
    if (!atomic_load_explicit(&g->open, memory_order_acquire))
        return;
    w->first_ns += g->t_measure - w->t_measure;   /* the schedule resumes at the new start */
    w->t_measure = g->t_measure;
    w->t_end = w->cfg->requests ? UINT64_MAX : w->t_measure + w->cfg->duration_ns;
    w->gated = 0;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    const lg_load_config *cfg = w->cfg;
    struct epoll_event events[MAX_EVENTS];
    uint64_t next_scan = 0, next_publish = 0, now = ap_clock_now_ns();
    while (now < w->t0) {   /* the common start */
        struct timespec pause = {0, 200000};
        nanosleep(&pause, NULL);
        now = ap_clock_now_ns();
    }
    for (;;) {
        now = ap_clock_now_ns();
        if (atomic_load_explicit(&lg_load_stop, memory_order_relaxed) || now >= w->t_end)
            break;
        if (now >= next_scan) {
            scan(w, now);
            next_scan = now + SCAN_NS;
        }
        if (w->gated) {
            gate_step(w, now);
            if (!w->gated && w->gate->kill_errno)
                break;
        }
        issue_due(w, now);
        if (cfg->requests && !w->gated && w->issued_measured >= w->share && w->inflight == 0 &&
            now >= w->t_measure)
            break;
        if (cfg->progress && now >= next_publish) {
            publish(w);
            next_publish = now + PUBLISH_NS;
        }
        uint64_t wake = next_scan < w->t_end ? next_scan : w->t_end;
        if (w->arrived && w->gated && now + GATE_POLL_NS < wake)
            wake = now + GATE_POLL_NS;
        if (w->gate != NULL && !w->gated && now < w->t_measure && w->t_measure < wake)
            wake = w->t_measure;
        if (lg_load_open(cfg) && w->nfree > 0) {
            uint64_t t = intended_of(w, w->next_k);
            if (t < wake)
                wake = t;
        }
        uint64_t wait = wake > now ? wake - now : 0;
        struct timespec ts = {(time_t)(wait / 1000000000u), (long)(wait % 1000000000u)};
        int n = epoll_pwait2(w->epfd, events, MAX_EVENTS, &ts, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ap_err_set(AP_EIO, "epoll_pwait2: %s", strerror(errno));
            snprintf(w->err, sizeof w->err, "%s", ap_err_msg());
            w->failed = 1;
            atomic_store(&lg_load_stop, 1);   /* the run fails: no thread waits at the gate */
            break;
        }
        now = ap_clock_now_ns();
        for (int i = 0; i < n; i++)
            on_event(w, &w->conns[events[i].data.u32], events[i].events, now);
    }
    count_unfinished(w, now);
    if (cfg->progress)
        publish(w);
    atomic_store(&w->finished, 1);
    return NULL;
}

static void worker_free(worker *w) {
    if (w->epfd >= 0)
        close(w->epfd);
    free(w->conns);
    free(w->freestack);
    free(w->stats);
    free(w->buf);
    pthread_mutex_destroy(&w->mu);
}

static int worker_setup(worker *w, const lg_load_config *cfg, unsigned id, uint64_t t0,
                        gate *g) {
    memset(w, 0, sizeof *w);
    w->cfg = cfg;
    w->id = id;
    w->epfd = -1;
    pthread_mutex_init(&w->mu, NULL);
    unsigned T = cfg->threads;
    w->nconns = cfg->connections / T + (id < cfg->connections % T);
    size_t nstats = (size_t)LG_LOAD_PHASES * cfg->targets->ngroups;
    w->conns = calloc(w->nconns, sizeof *w->conns);
    w->freestack = calloc(w->nconns, sizeof *w->freestack);
    w->stats = malloc(nstats * sizeof *w->stats);
    w->buf = malloc(READ_BUF);
    if (!w->conns || !w->freestack || !w->stats || !w->buf)
        return ap_err_set(AP_ENOMEM, "out of memory for %u connections", w->nconns);
    for (size_t i = 0; i < nstats; i++)
        lg_load_stats_init(&w->stats[i]);
    ap_hist_init(&w->progress);
    ap_hist_init(&w->progress_pub);
    for (unsigned i = 0; i < w->nconns; i++) {
        w->conns[i].fd = -1;
        w->conns[i].state = C_CLOSED;
        w->freestack[i] = w->nconns - 1 - i;
    }
    w->nfree = w->nconns;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        return ap_err_set(AP_EIO, "epoll_create1: %s", strerror(errno));
    w->t0 = t0;
    w->t_measure = t0 + cfg->warmup_ns;
    w->t_end = cfg->requests ? UINT64_MAX : w->t_measure + cfg->duration_ns;
    if (cfg->phase_pid > 0) {
        w->gate = g;
        w->gated = 1;
        w->t_end = UINT64_MAX;   /* set when the gate opens */
    }
    w->share = cfg->requests / T + (id < cfg->requests % T);
    if (cfg->rate > 0) {
        w->interval_ns = 1e9 * (double)T / cfg->rate;
        /* threads take turns, so the sum over threads is evenly spaced */
        w->first_ns = t0 + (uint64_t)(w->interval_ns * id / T);
    } else {
        w->first_ns = t0;   /* closed model, or a replay: every thread from the start */
    }
    return 0;
}

static void progress_tick(worker *ws, unsigned n, const lg_load_config *cfg, uint64_t t0,
                          uint64_t *last_done, uint64_t *last_ns, ap_hist *merged,
                          lg_load_progress_fn fn, void *arg) {
    ap_hist_reset(merged);
    uint64_t done = 0;
    for (unsigned i = 0; i < n; i++) {
        pthread_mutex_lock(&ws[i].mu);
        ap_hist_merge(merged, &ws[i].progress_pub);
        done += ws[i].done_pub;
        pthread_mutex_unlock(&ws[i].mu);
    }
    uint64_t now = ap_clock_now_ns();
    lg_load_progress p = {
        .elapsed_s = (double)(now - t0) / 1e9,
        .done = done,
        .rps = now > *last_ns ? (double)(done - *last_done) * 1e9 / (double)(now - *last_ns) : 0,
        .p99_ns = ap_hist_percentile(merged, 99.0),
        .warm = now >= t0 + cfg->warmup_ns,
    };
    *last_done = done;
    *last_ns = now;
    fn(&p, arg);
}

int lg_load_run(const lg_load_config *cfg, lg_load_result *res, lg_load_progress_fn progress,
                void *arg) {
    assert(cfg && res && cfg->targets && cfg->targets->n > 0 && cfg->targets->schedule_len &&
           cfg->targets->ngroups > 0);
    assert(cfg->threads >= 1 && cfg->threads <= cfg->connections);
    assert((cfg->duration_ns > 0) != (cfg->requests > 0));
    assert(cfg->replay == NULL || (cfg->requests > 0 && cfg->requests <= cfg->replay->n &&
                                   cfg->rate == 0 && cfg->speed > 0));
    ap_clock_init();
    unsigned T = cfg->threads;
    worker *ws = calloc(T, sizeof *ws);
    ap_hist *merged = ap_hist_new();
    if (ws == NULL || merged == NULL) {
        free(ws);
        ap_hist_free(merged);
        return ap_err_set(AP_ENOMEM, NULL);
    }
    uint64_t t0 = ap_clock_now_ns() + 2000000;   /* every thread starts on the same tick */
    unsigned started = 0;
    int rc = 0;
    gate g = {.nthreads = T, .pid = (pid_t)cfg->phase_pid};
    atomic_init(&g.arrived, 0);
    atomic_init(&g.open, 0);
    for (unsigned i = 0; i < T; i++) {
        if (worker_setup(&ws[i], cfg, i, t0, &g) < 0) {
            rc = -1;
            T = i + 1;
            break;
        }
    }
    for (unsigned i = 0; rc == 0 && i < T; i++) {
        int e = pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
        if (e != 0) {
            atomic_store(&lg_load_stop, 1);
            rc = ap_err_set(AP_EIO, "pthread_create: %s", strerror(e));
            break;
        }
        started++;
    }
    uint64_t last_done = 0, last_ns = t0, next_tick = t0 + 1000000000u;
    for (;;) {
        unsigned running = 0;
        for (unsigned i = 0; i < started; i++)
            running += !atomic_load(&ws[i].finished);
        if (running == 0)
            break;
        struct timespec pause = {0, 20000000};
        nanosleep(&pause, NULL);
        if (progress && cfg->progress && ap_clock_now_ns() >= next_tick) {
            progress_tick(ws, started, cfg, t0, &last_done, &last_ns, merged, progress, arg);
            next_tick += 1000000000u;
        }
    }
    uint64_t end_ns = ap_clock_now_ns();
    for (unsigned i = 0; i < started; i++) {
        pthread_join(ws[i].thread, NULL);
        if (ws[i].failed && rc == 0)
            rc = ap_err_set(AP_EIO, "%s", ws[i].err);
    }
    if (rc == 0 && g.kill_errno)
        rc = ap_err_set(AP_EIO, "cannot signal process %d: %s", cfg->phase_pid,
                        strerror(g.kill_errno));
    size_t nt = cfg->targets->ngroups;
    memset(res, 0, sizeof *res);
    if (rc == 0) {
        res->ngroups = nt;
        for (int ph = 0; ph < LG_LOAD_PHASES && rc == 0; ph++) {
            res->per_group[ph] = malloc(nt * sizeof(lg_load_stats));
            if (res->per_group[ph] == NULL) {
                rc = ap_err_set(AP_ENOMEM, NULL);
                break;
            }
            lg_load_stats_init(&res->total[ph]);
            for (size_t t = 0; t < nt; t++) {
                lg_load_stats *dst = &res->per_group[ph][t];
                lg_load_stats_init(dst);
                for (unsigned i = 0; i < started; i++)
                    lg_load_stats_merge(dst, &ws[i].stats[(size_t)ph * nt + t]);
                lg_load_stats_merge(&res->total[ph], dst);
            }
        }
        uint64_t t_measure = t0 + cfg->warmup_ns;
        if (cfg->phase_pid > 0 && atomic_load(&g.open))
            t_measure = g.t_measure;
        res->elapsed_s[LG_LOAD_COLD] = (double)(t_measure - t0) / 1e9;
        uint64_t end = t_measure;
        if (cfg->requests) {
            for (unsigned i = 0; i < started; i++)
                if (ws[i].last_end_ns > end)
                    end = ws[i].last_end_ns;
        } else {
            end = t_measure + cfg->duration_ns;
            if (end_ns < end)
                end = end_ns;   /* stopped early */
        }
        res->elapsed_s[LG_LOAD_WARM] = end > t_measure ? (double)(end - t_measure) / 1e9 : 0;
        if (rc < 0)
            lg_load_result_free(res);
    }
    for (unsigned i = 0; i < T; i++)
        worker_free(&ws[i]);
    free(ws);
    ap_hist_free(merged);
    return rc;
}

void lg_load_result_free(lg_load_result *res) {
    for (int ph = 0; ph < LG_LOAD_PHASES; ph++) {
        free(res->per_group[ph]);
        res->per_group[ph] = NULL;
    }
    res->ngroups = 0;
}
