/* lg_load.h -- the load engine of apiprof-load: one epoll loop per thread, closed and open models, merged results. */
#ifndef LG_LOAD_H
#define LG_LOAD_H

#include <stdatomic.h>
#include <stdint.h>

#include "ap_hist.h"
#include "lg_replay.h"
#include "lg_target.h"

/* Kinds of failed requests. */
typedef enum {
    LG_LOAD_ERR_CONNECT = 0,   /* the connection could not be made (refused, unreachable,
                                  or no answer within the connect timeout) */
    LG_LOAD_ERR_TIMEOUT,       /* no complete response within the request timeout */
    LG_LOAD_ERR_RESET,         /* the peer reset or closed the connection before the
                                  response was complete */
    LG_LOAD_ERR_PARSE,         /* the response was malformed, or bytes followed it */
    LG_LOAD_ERR_KINDS
} lg_load_errkind;

/* Phases: requests are counted in the phase of their intended send time. */
enum { LG_LOAD_COLD = 0, LG_LOAD_WARM = 1, LG_LOAD_PHASES = 2 };

/* Status codes 100..599 are counted one by one; others in `status_other`. */
#define LG_LOAD_STATUS_MIN 100
#define LG_LOAD_STATUS_N 500

/* Figures of one URL or group of URLs (or of all URLs) in one phase.  Plain data, merged by
 * lg_load_stats_merge(). */
typedef struct lg_load_stats {
    ap_hist latency;          /* ns from the intended send time to the end of the response:
                                 corrected for coordinated omission in the open model; in
                                 the closed model intended = actual send time */
    ap_hist uncorrected;      /* ns from the actual send (first byte written) */
    uint64_t responses;       /* complete responses, any status */
    uint64_t errors[LG_LOAD_ERR_KINDS];
    uint64_t unfinished;      /* issued but neither answered nor failed when the run ended */
    uint64_t bytes_sent;
    uint64_t bytes_received;  /* response bytes, headers and framing included */
    uint64_t status[LG_LOAD_STATUS_N];
    uint64_t status_other;
} lg_load_stats;

/* What to run.  Set every field; lg_load_run() validates nothing that the
 * CLI already checked (the preconditions are asserted). */
typedef struct lg_load_config {
    const lg_targets *targets;   /* borrowed; finished with lg_targets_finish() */
    unsigned threads;            /* 1..connections */
    unsigned connections;        /* >= 1, spread over the threads */
    double rate;                 /* open model: requests/s over all threads; 0: closed model */
    uint64_t warmup_ns;          /* cold phase before the measured one; 0: none */
    uint64_t duration_ns;        /* measured phase length; 0 when `requests` is set */
    uint64_t requests;           /* measured requests over all threads; 0: use duration */
    uint64_t timeout_ns;         /* per request, from the actual send */
    uint64_t connect_timeout_ns;
    int progress;                /* call the progress callback about once a second */
    int phase_pid;               /* > 0: the phase gate.  When the cold phase is over (at
                                    once without a warmup), no measured request goes out
                                    until every cold one has ended; then SIGUSR1 is sent to
                                    this process and the measured phase starts (2 ms later,
                                    on a common tick).  A server that switches its profile
                                    on SIGUSR1 thus sees every cold request before the
                                    switch and every measured one after it. */
    const lg_replay_plan *replay;   /* not NULL: send the plan's requests at their offsets
                                       (divided by speed) from the start, in order, over
                                       all threads; requests (> 0, at most plan->n) is how
                                       many; rate and warmup_ns are 0 */
    double speed;                /* replay: > 0, 2 replays twice as fast */
    const lg_replay_stats *replay_stats;   /* reported in the JSON when not NULL */
    size_t text_rows;            /* the text report's tables: at most this many URL rows
                                    per phase, the most requested (0: all) */
} lg_load_config;

/* Whether requests go out on a schedule (the open model: a rate, or a replay
 * in time): latency then counts from the intended send time.  Can't fail. */
static inline int lg_load_open(const lg_load_config *cfg) {
    return cfg->rate > 0 || cfg->replay != NULL;
}

/* A running view for a progress line. */
typedef struct lg_load_progress {
    double elapsed_s;            /* since the start, warmup included */
    uint64_t done;               /* responses and errors so far, both phases */
    double rps;                  /* done per second over the last interval */
    uint64_t p99_ns;             /* p99 of `latency` so far, both phases, all URLs */
    int warm;                    /* 1 once in the measured phase */
} lg_load_progress;

typedef void (*lg_load_progress_fn)(const lg_load_progress *p, void *arg);

/* Results, merged across threads. */
typedef struct lg_load_result {
    size_t ngroups;
    lg_load_stats *per_group[LG_LOAD_PHASES];    /* ngroups entries each, in the order of
                                                    lg_targets.groups (owned) */
    lg_load_stats total[LG_LOAD_PHASES];         /* all URLs */
    double elapsed_s[LG_LOAD_PHASES];            /* length of each phase: the configured
                                                    time, or (count mode) until the last
                                                    measured request ended; with the phase
                                                    gate the cold phase lasts until the
                                                    measured one starts (drain included) */
} lg_load_result;

/* Set by a signal handler (or anyone) to stop every worker early; in-flight
 * requests are then counted as unfinished. */
extern atomic_int lg_load_stop;

/* Run the load described by cfg and fill *res (an uninitialised struct; free
 * it with lg_load_result_free()).  progress, if not NULL and cfg->progress,
 * is called from the calling thread about once a second.  Returns 0; on error
 * (thread, epoll or memory failure, or SIGUSR1 could not be sent to
 * cfg->phase_pid) returns -1 with AP_EIO or AP_ENOMEM and *res holds nothing
 * to free. */
int lg_load_run(const lg_load_config *cfg, lg_load_result *res, lg_load_progress_fn progress,
                void *arg);

/* Release what lg_load_run() put in res.  Can't fail. */
void lg_load_result_free(lg_load_result *res);

/* Add src into dst.  Can't fail. */
void lg_load_stats_merge(lg_load_stats *dst, const lg_load_stats *src);

/* Empty stats.  Can't fail. */
void lg_load_stats_init(lg_load_stats *s);

/* Total requests that ended (responses + every error kind).  Can't fail. */
uint64_t lg_load_stats_ended(const lg_load_stats *s);

/* Name of an error kind: "connect", "timeout", "reset", "parse".  Can't fail. */
const char *lg_load_errkind_name(lg_load_errkind k);

#endif /* LG_LOAD_H */
