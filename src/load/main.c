/* main.c -- apiprof-load, an HTTP/1.1 load generator: command line, preflight, progress line, output. */
#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ap_clock.h"
#include "ap_err.h"
#include "lg_load.h"
#include "lg_replay.h"
#include "lg_report.h"
#include "lg_target.h"

#define PROG "apiprof-load"

static const char usage_text[] =
    "usage: " PROG " [options] URL\n"
    "       " PROG " [options] --urls FILE [--base URL]\n"
    "\n"
    "  -c, --connections N      keep-alive connections (default 10)\n"
    "  -t, --threads N          threads, each with its own event loop (default 2)\n"
    "  -d, --duration SECONDS   length of the measured phase (default 10)\n"
    "  -n, --requests N         measure exactly N requests instead of a duration\n"
    "  -R, --rate N             open model: N requests/s over all connections,\n"
    "                           latency from the intended send time\n"
    "      --warmup SECONDS     a cold phase before the measured one, reported apart\n"
    "  -m, --method METHOD      method of URL (default GET)\n"
    "  -H, --header 'N: V'      header sent with every request (repeatable)\n"
    "  -b, --body TEXT          request body (Content-Type defaults to application/json)\n"
    "      --body-file FILE     request body from a file\n"
    "      --urls FILE          weighted URLs, one per line: [WEIGHT] [METHOD] URL [BODY]\n"
    "      --base URL           origin for /paths in the URL file\n"
    "      --timeout SECONDS    request timeout (default 10)\n"
    "      --connect-timeout S  connect timeout (default 3)\n"
    "      --json               print JSON instead of the table\n"
    "      --json-out FILE      also write the JSON to FILE\n"
    "      --histograms         JSON: add each latency histogram, encoded (exact merging)\n"
    "      --phase-signal PID   when the cold phase is over, let every cold request end,\n"
    "                           send SIGUSR1 to PID, then start the measured phase\n"
    "      --replay FILE        the requests of an access log (uvicorn, Common/Combined,\n"
    "                           JSON lines) with --base: sent at their logged times, or\n"
    "                           with -R as the mix of methods and paths\n"
    "      --speed X            --replay in time X times as fast (default 1)\n"
    "      --bodies FILE        --replay: request bodies by method and path (JSON rules)\n"
    "      --rows N             the text tables show the N most requested URLs (default\n"
    "                           30; 0: all); the JSON has every one\n"
    "      --no-progress        no live progress line (it is shown only on a terminal)\n"
    "  -h, --help               this help\n";

/* One clear line and exit 2: a usage mistake. */
static void usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, PROG ": ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see " PROG " --help)\n");
    exit(2);
}

static void fatal(const char *msg) {
    fprintf(stderr, PROG ": %s\n", msg);
    exit(1);
}

static uint64_t parse_count(const char *opt, const char *s, uint64_t max) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end || errno || v < 1 || v > max) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s: expected an integer from 1 to %llu, got '%%s'", opt,
                 (unsigned long long)max);
        usage_error(msg, s);
    }
    return v;
}

static double parse_seconds(const char *opt, const char *s, double min, double max) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < min || v > max) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s: expected a number from %g to %g, got '%%s'", opt, min, max);
        usage_error(msg, s);
    }
    return v;
}

/* Connect once before starting, so an unreachable origin is one clear line. */
static void preflight(const lg_targets *ts, uint64_t timeout_ns) {
    int fd = socket(ts->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fatal(strerror(errno));
    int err = 0;
    if (connect(fd, (const struct sockaddr *)&ts->addr, ts->addrlen) < 0) {
        if (errno != EINPROGRESS) {
            err = errno;
        } else {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int ms = (int)(timeout_ns / 1000000u);
            int rc = poll(&p, 1, ms > 0 ? ms : 1);
            socklen_t len = sizeof err;
            if (rc == 0)
                err = ETIMEDOUT;
            else if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
        }
    }
    close(fd);
    if (err) {
        fprintf(stderr, PROG ": cannot connect to %s: %s\n", ts->origin, strerror(err));
        exit(1);
    }
}

static int progress_shown;

static void show_progress(const lg_load_progress *p, void *arg) {
    (void)arg;
    double p99 = (double)p->p99_ns / 1e6;
    fprintf(stderr, "\r\033[K%s %5.1f s  %9.1f req/s  p99 %.2f ms  %llu done", p->warm ? "run" : "warmup",
            p->elapsed_s, p->rps, p99, (unsigned long long)p->done);
    fflush(stderr);
    progress_shown = 1;
}

static void on_signal(int sig) {
    (void)sig;
    atomic_store(&lg_load_stop, 1);
}

/* Preflight, the run, the report: what every mode ends with.  Returns the exit code. */
static int run_load(lg_load_config *cfg, const lg_targets *ts, int json, const char *json_out,
                    int histograms) {
    FILE *jf = NULL;
    if (json_out && (jf = fopen(json_out, "w")) == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", json_out, strerror(errno));
        return 2;
    }

    if (cfg->phase_pid > 0 && kill(cfg->phase_pid, 0) < 0) {
        fprintf(stderr, PROG ": --phase-signal %d: %s\n", cfg->phase_pid, strerror(errno));
        return 1;
    }
    preflight(ts, cfg->connect_timeout_ns);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    lg_load_result res;
    if (lg_load_run(cfg, &res, show_progress, NULL) < 0) {
        if (progress_shown)
            fprintf(stderr, "\r\033[K");
        fatal(ap_err_msg());
    }
    if (progress_shown)
        fprintf(stderr, "\r\033[K");
    int rc = json ? lg_report_json(stdout, cfg, &res, histograms)
                  : lg_report_text(stdout, cfg, &res);
    if (rc == 0 && jf) {
        rc = lg_report_json(jf, cfg, &res, histograms);
        if (fclose(jf) != 0)
            rc = ap_err_set(AP_EIO, "%s: write failed", json_out);
    }
    lg_load_result_free(&res);
    if (rc < 0)
        fatal(ap_err_msg());
    return atomic_load(&lg_load_stop) ? 130 : 0;
}

/* --replay: the log read into targets and a plan, then sent in time or, with
 * -R, as the mix of an open-model run.  Returns the exit code. */
static int run_replay(lg_load_config *cfg, lg_targets *ts, const char *path, const char *bodies_file,
                      double speed, const char *base, double duration, double warmup, int npos,
                      int json, const char *json_out, int no_progress, int histograms,
                      double timeout, double connect_timeout) {
    if (npos != 0)
        usage_error("%s", "--replay takes no URL (give the origin with --base)");
    if (base == NULL)
        usage_error("%s", "--replay needs --base URL (the origin to send the log's paths to)");
    if (cfg->threads > cfg->connections)
        cfg->threads = cfg->connections;
    int in_time = cfg->rate <= 0;
    if (in_time && (duration > 0 || warmup > 0))
        usage_error("%s", "a replay in time lasts as long as its log: -d and --warmup go with "
                          "-R (the log's mix); -n N replays its first N requests");
    if (!in_time && speed > 0)
        usage_error("%s", "--speed scales a replay in time; with -R the rate is given");
    lg_replay_bodies bodies = {.n = 0};
    if (bodies_file && lg_replay_bodies_load(&bodies, bodies_file) < 0) {
        fprintf(stderr, PROG ": --bodies %s\n", ap_err_msg());
        return 2;
    }
    lg_replay_plan plan;
    int rc = lg_replay_load(path, ts, base, bodies_file ? &bodies : NULL, &plan);
    lg_replay_bodies_free(&bodies);
    if (rc < 0) {
        fprintf(stderr, PROG ": --replay %s\n", ap_err_msg());
        return 2;
    }
    const lg_replay_stats *st = &plan.stats;
    uint64_t skipped = st->malformed + st->unsendable + st->over_targets;
    if (skipped) {
        fprintf(stderr, PROG ": --replay %s: %llu of %llu lines skipped (%llu malformed, %llu "
                "unsendable, %llu beyond %d distinct methods and paths)", path,
                (unsigned long long)skipped, (unsigned long long)st->lines,
                (unsigned long long)st->malformed, (unsigned long long)st->unsendable,
                (unsigned long long)st->over_targets, LG_TARGET_REPLAY_MAX);
        if (st->first_bad_line)
            fprintf(stderr, "; first: line %llu: %s", (unsigned long long)st->first_bad_line,
                    st->first_bad);
        fputc('\n', stderr);
    }
    if (ts->grouped)
        fprintf(stderr, PROG ": --replay %s: %zu distinct methods and paths, reported as %zu "
                "rows by path pattern (identifiers as {id}%s)\n", path, ts->n, ts->ngroups,
                strcmp(ts->groups[ts->ngroups - 1].name, "<other>") == 0
                    ? "; the least requested patterns as <other>" : "");
    if (in_time && !plan.timed) {
        fprintf(stderr, PROG ": --replay %s: %llu requests have no time in the log: give -R "
                "RATE to send its mix\n", path, (unsigned long long)st->untimed);
        lg_replay_plan_free(&plan);
        return 2;
    }
    if (lg_targets_finish(ts) < 0) {
        fprintf(stderr, PROG ": %s\n", ap_err_msg());
        lg_replay_plan_free(&plan);
        return ap_err_code() == AP_ENOTFOUND ? 1 : 2;
    }
    cfg->targets = ts;
    cfg->replay_stats = st;
    if (in_time) {
        cfg->replay = &plan;
        cfg->speed = speed > 0 ? speed : 1;
        if (cfg->requests == 0 || cfg->requests > plan.n)
            cfg->requests = plan.n;
        cfg->duration_ns = 0;
    } else {
        if (!cfg->requests && duration == 0)
            duration = 10;
        cfg->duration_ns = cfg->requests ? 0 : (uint64_t)(duration * 1e9);
        cfg->warmup_ns = (uint64_t)(warmup * 1e9);
    }
    cfg->timeout_ns = (uint64_t)(timeout * 1e9);
    cfg->connect_timeout_ns = (uint64_t)(connect_timeout * 1e9);
    cfg->progress = !no_progress && isatty(STDERR_FILENO);
    rc = run_load(cfg, ts, json, json_out, histograms);
    lg_replay_plan_free(&plan);
    lg_targets_free(ts);
    return rc;
}

enum { OPT_WARMUP = 256, OPT_BODY_FILE, OPT_URLS, OPT_BASE, OPT_TIMEOUT, OPT_CONNECT_TIMEOUT,
       OPT_JSON, OPT_JSON_OUT, OPT_NO_PROGRESS, OPT_HISTOGRAMS, OPT_PHASE_SIGNAL, OPT_REPLAY,
       OPT_SPEED, OPT_BODIES, OPT_ROWS };

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"connections", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'},
        {"duration", required_argument, NULL, 'd'},
        {"requests", required_argument, NULL, 'n'},
        {"rate", required_argument, NULL, 'R'},
        {"method", required_argument, NULL, 'm'},
        {"header", required_argument, NULL, 'H'},
        {"body", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"body-file", required_argument, NULL, OPT_BODY_FILE},
        {"urls", required_argument, NULL, OPT_URLS},
        {"base", required_argument, NULL, OPT_BASE},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"json", no_argument, NULL, OPT_JSON},
        {"json-out", required_argument, NULL, OPT_JSON_OUT},
        {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
        {"histograms", no_argument, NULL, OPT_HISTOGRAMS},
        {"phase-signal", required_argument, NULL, OPT_PHASE_SIGNAL},
        {"replay", required_argument, NULL, OPT_REPLAY},
        {"speed", required_argument, NULL, OPT_SPEED},
        {"bodies", required_argument, NULL, OPT_BODIES},
        {"rows", required_argument, NULL, OPT_ROWS},
        {NULL, 0, NULL, 0},
    };
    lg_targets ts;
    lg_targets_init(&ts);
    lg_load_config cfg = {.threads = 2, .connections = 10, .text_rows = 30};
    double duration = 0, warmup = 0, timeout = 10, connect_timeout = 3;
    const char *method = NULL, *body = NULL, *body_file = NULL, *urls = NULL, *base = NULL;
    const char *json_out = NULL, *replay = NULL, *bodies_file = NULL;
    double speed = 0;
    int json = 0, no_progress = 0, threads_set = 0, histograms = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":c:t:d:n:R:m:H:b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            cfg.connections = (unsigned)parse_count("--connections", optarg, 100000);
            break;
        case 't':
            cfg.threads = (unsigned)parse_count("--threads", optarg, 256);
            threads_set = 1;
            break;
        case 'd':
            duration = parse_seconds("--duration", optarg, 0.001, 86400);
            break;
        case 'n':
            cfg.requests = parse_count("--requests", optarg, UINT64_C(1) << 48);
            break;
        case 'R':
            cfg.rate = parse_seconds("--rate", optarg, 0.001, 1e8);
            break;
        case 'm':
            method = optarg;
            break;
        case 'H':
            if (lg_targets_header(&ts, optarg) < 0)
                usage_error("%s", ap_err_msg());
            break;
        case 'b':
            body = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        case OPT_WARMUP:
            warmup = parse_seconds("--warmup", optarg, 0, 86400);
            break;
        case OPT_BODY_FILE:
            body_file = optarg;
            break;
        case OPT_URLS:
            urls = optarg;
            break;
        case OPT_BASE:
            base = optarg;
            break;
        case OPT_TIMEOUT:
            timeout = parse_seconds("--timeout", optarg, 0.001, 86400);
            break;
        case OPT_CONNECT_TIMEOUT:
            connect_timeout = parse_seconds("--connect-timeout", optarg, 0.001, 86400);
            break;
        case OPT_JSON:
            json = 1;
            break;
        case OPT_JSON_OUT:
            json_out = optarg;
            break;
        case OPT_NO_PROGRESS:
            no_progress = 1;
            break;
        case OPT_HISTOGRAMS:
            histograms = 1;
            break;
        case OPT_ROWS:
            cfg.text_rows = strcmp(optarg, "0") == 0 ? 0 : (size_t)parse_count("--rows (0: all)", optarg, UINT32_MAX);
            break;
        case OPT_REPLAY:
            replay = optarg;
            break;
        case OPT_SPEED:
            speed = parse_seconds("--speed", optarg, 0.001, 1e6);
            break;
        case OPT_BODIES:
            bodies_file = optarg;
            break;
        case OPT_PHASE_SIGNAL:
            cfg.phase_pid = (int)parse_count("--phase-signal", optarg, INT_MAX);
            break;
        case ':':
            usage_error("%s needs a value", argv[optind - 1]);
            break;
        default:
            usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    int npos = argc - optind;
    if (replay != NULL && (urls || body || body_file))
        usage_error("%s", "--replay takes its requests from the log: no --urls, --body");
    if (replay != NULL && duration > 0 && cfg.requests)
        usage_error("%s", "--duration and --requests exclude each other");
    if (replay != NULL)
        return run_replay(&cfg, &ts, replay, bodies_file, speed, base, duration, warmup, npos,
                          json, json_out, no_progress, histograms, timeout, connect_timeout);
    if (speed > 0 || bodies_file)
        usage_error("%s", "--speed and --bodies go with --replay");
    if (urls == NULL && npos != 1)
        usage_error("%s", npos ? "give one URL (or --urls FILE)" : "no URL given");
    if (urls != NULL && npos != 0)
        usage_error("give either a URL or --urls FILE, not both (got '%s')", argv[optind]);
    if (duration > 0 && cfg.requests)
        usage_error("%s", "--duration and --requests exclude each other");
    if (body && body_file)
        usage_error("%s", "--body and --body-file exclude each other");
    if (!cfg.requests && duration == 0)
        duration = 10;
    if (cfg.threads > cfg.connections) {
        if (threads_set)
            usage_error("%s", "--threads must not exceed --connections");
        cfg.threads = cfg.connections;
    }
    char *file_body = NULL;
    size_t body_len = body ? strlen(body) : 0;
    if (body_file) {
        file_body = lg_read_file(body_file, (size_t)64 << 20, &body_len);
        if (file_body == NULL) {
            fprintf(stderr, PROG ": %s\n", ap_err_msg());
            return 2;
        }
        body = file_body;
    }
    if (urls) {
        if (body)
            usage_error("%s", "--body applies to a single URL; put bodies in the URL file");
        if (lg_targets_load_file(&ts, urls, base, method) < 0) {
            fprintf(stderr, PROG ": %s\n", ap_err_msg());
            return 2;
        }
    } else if (lg_targets_add(&ts, base, 1, method, argv[optind], NULL, 0, body, body_len) < 0) {
        usage_error("%s", ap_err_msg());
    }
    free(file_body);
    if (lg_targets_finish(&ts) < 0) {
        fprintf(stderr, PROG ": %s\n", ap_err_msg());
        return ap_err_code() == AP_ENOTFOUND ? 1 : 2;
    }
    cfg.targets = &ts;
    cfg.duration_ns = cfg.requests ? 0 : (uint64_t)(duration * 1e9);
    cfg.warmup_ns = (uint64_t)(warmup * 1e9);
    cfg.timeout_ns = (uint64_t)(timeout * 1e9);
    cfg.connect_timeout_ns = (uint64_t)(connect_timeout * 1e9);
    cfg.progress = !no_progress && isatty(STDERR_FILENO);
    int rc = run_load(&cfg, &ts, json, json_out, histograms);
    lg_targets_free(&ts);
    return rc;
}
