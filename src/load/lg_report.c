/* lg_report.c -- text table and JSON output of apiprof-load. */
#include "lg_report.h"

#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_sbuf.h"

static const char *const phase_names[LG_LOAD_PHASES] = {"cold", "warm"};

/* Percentiles of the table and of the JSON, in this order. */
static const double pcts[] = {50.0, 90.0, 99.0, 99.9};
static const char *const pct_keys[] = {"p50", "p90", "p99", "p99_9"};
#define NPCT 4

static void fmt_ns(char *out, size_t cap, uint64_t ns, int any) {
    double us = (double)ns / 1e3;
    if (!any)
        snprintf(out, cap, "-");
    else if (us < 1000)
        snprintf(out, cap, "%.0fus", us);
    else if (us < 10000)
        snprintf(out, cap, "%.2fms", us / 1e3);
    else if (us < 1e6)
        snprintf(out, cap, "%.1fms", us / 1e3);
    else
        snprintf(out, cap, "%.2fs", us / 1e6);
}

static void fmt_bytes(char *out, size_t cap, uint64_t b) {
    if (b < 10000)
        snprintf(out, cap, "%llu B", (unsigned long long)b);
    else if (b < 10000000)
        snprintf(out, cap, "%.1f KB", (double)b / 1e3);
    else
        snprintf(out, cap, "%.1f MB", (double)b / 1e6);
}

/* The one error accounting of both tables and the JSON: a request ends as a
 * response (any status; its latency is measured) or as a failure (connect,
 * timeout, reset, parse: no response, no latency); responses with a 4xx or 5xx
 * status are the HTTP errors among the responses; requests still in flight when
 * a timed phase ends are unfinished, neither. */
static uint64_t failed_of(const lg_load_stats *s) {
    return lg_load_stats_ended(s) - s->responses;
}

static uint64_t http_errors_of(const lg_load_stats *s) {
    uint64_t n = 0;
    for (int c = 400 - LG_LOAD_STATUS_MIN; c < 600 - LG_LOAD_STATUS_MIN; c++)
        n += s->status[c];
    return n;
}

static int phase_used(const lg_load_config *cfg, int ph) {
    return ph == LG_LOAD_WARM || cfg->warmup_ns > 0;
}

/* Rows: for each phase in use (warm first), "all" then every URL. */
typedef struct row {
    int phase;
    const char *name;
    const lg_load_stats *s;
} row;

/* A URL row's place in the ranking: requests ended, most first (ties: in order). */
typedef struct ranked {
    uint64_t ended;
    size_t group;
} ranked;

static int by_ended(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->ended != y->ended)
        return x->ended > y->ended ? -1 : 1;
    return x->group < y->group ? -1 : x->group > y->group;
}

/* The rows, and in *omitted the URL rows of a phase left out by cfg->text_rows (the
 * least requested).  order: scratch of r->ngroups entries. */
static size_t rows_of(const lg_load_config *cfg, const lg_load_result *r, row *rows,
                      ranked *order, size_t *omitted) {
    size_t n = 0;
    *omitted = 0;
    for (int ph = LG_LOAD_WARM; ph >= 0; ph--) {
        if (!phase_used(cfg, ph))
            continue;
        rows[n++] = (row){ph, "all", &r->total[ph]};
        if (r->ngroups <= 1)
            continue;
        size_t keep = r->ngroups;
        for (size_t g = 0; g < r->ngroups; g++)
            order[g] = (ranked){lg_load_stats_ended(&r->per_group[ph][g]), g};
        if (cfg->text_rows && r->ngroups > cfg->text_rows) {
            qsort(order, r->ngroups, sizeof *order, by_ended);
            keep = cfg->text_rows;
            *omitted = r->ngroups - keep;
        }
        for (size_t k = 0; k < keep; k++) {
            size_t g = order[k].group;
            rows[n++] = (row){ph, cfg->targets->groups[g].name, &r->per_group[ph][g]};
        }
    }
    return n;
}

static void latency_table(FILE *f, const lg_load_result *r, const row *rows, size_t n,
                          int width, int uncorrected) {
    fprintf(f, "%-5s  %-*s %10s %10s", "phase", width, "url", "requests", "req/s");
    for (int i = 0; i < NPCT; i++)
        fprintf(f, " %9s", i == 3 ? "p99.9" : pct_keys[i]);
    fprintf(f, " %9s %8s %8s %10s\n", "max", "4xx/5xx", "failed", "unfinished");
    for (size_t i = 0; i < n; i++) {
        const lg_load_stats *s = rows[i].s;
        const ap_hist *h = uncorrected ? &s->uncorrected : &s->latency;
        double el = r->elapsed_s[rows[i].phase];
        fprintf(f, "%-5s  %-*s %10llu %10.1f", phase_names[rows[i].phase], width, rows[i].name,
                (unsigned long long)s->responses, el > 0 ? (double)s->responses / el : 0.0);
        char buf[32];
        for (int p = 0; p < NPCT; p++) {
            fmt_ns(buf, sizeof buf, ap_hist_percentile(h, pcts[p]), h->count > 0);
            fprintf(f, " %9s", buf);
        }
        fmt_ns(buf, sizeof buf, ap_hist_max(h), h->count > 0);
        fprintf(f, " %9s %8llu %8llu %10llu\n", buf, (unsigned long long)http_errors_of(s),
                (unsigned long long)failed_of(s), (unsigned long long)s->unfinished);
    }
}

int lg_report_text(FILE *f, const lg_load_config *cfg, const lg_load_result *r) {
    row *rows = malloc(sizeof(row) * 2 * (r->ngroups + 1));
    ranked *order = malloc(sizeof(ranked) * (r->ngroups + 1));
    size_t omitted;
    if (rows == NULL || order == NULL) {
        free(rows);
        free(order);
        return ap_err_set(AP_ENOMEM, NULL);
    }
    size_t n = rows_of(cfg, r, rows, order, &omitted);
    free(order);
    int width = 3;
    for (size_t i = 0; i < n; i++)
        if ((int)strlen(rows[i].name) > width)
            width = (int)strlen(rows[i].name);
    if (width > 60)
        width = 60;
    fprintf(f, "%s  %s model", cfg->targets->origin, lg_load_open(cfg) ? "open" : "closed");
    if (cfg->rate > 0)
        fprintf(f, " at %.0f req/s", cfg->rate);
    fprintf(f, ", %u connections, %u threads, ", cfg->connections, cfg->threads);
    if (cfg->requests)
        fprintf(f, "%llu requests", (unsigned long long)cfg->requests);
    else
        fprintf(f, "%.1f s", (double)cfg->duration_ns / 1e9);
    if (cfg->warmup_ns)
        fprintf(f, " after a %.1f s warmup", (double)cfg->warmup_ns / 1e9);
    if (cfg->replay)
        fprintf(f, ", replayed in time at speed %g", cfg->speed);
    else if (cfg->replay_stats)
        fprintf(f, ", the replayed log's mix");
    fprintf(f, "\n\n");
    if (lg_load_open(cfg))
        fprintf(f, "latency from the intended send time (corrected for coordinated omission)\n");
    latency_table(f, r, rows, n, width, 0);
    if (lg_load_open(cfg)) {
        fprintf(f, "\nlatency from the actual send (uncorrected)\n");
        latency_table(f, r, rows, n, width, 1);
    }
    fprintf(f, "\n%-5s  %-*s %-24s %-30s %10s %10s %10s\n", "phase", width, "url", "status",
            "failed", "unfinished", "received", "sent");
    for (size_t i = 0; i < n; i++) {
        const lg_load_stats *s = rows[i].s;
        char status[256] = "", errs[256] = "", rx[32], tx[32];
        size_t sl = 0, el = 0;
        for (int c = 0; c < LG_LOAD_STATUS_N && sl < sizeof status - 24; c++)
            if (s->status[c])
                sl += (size_t)snprintf(status + sl, sizeof status - sl, "%s%d:%llu",
                                       sl ? " " : "", c + LG_LOAD_STATUS_MIN,
                                       (unsigned long long)s->status[c]);
        if (s->status_other)
            snprintf(status + sl, sizeof status - sl, "%sother:%llu", sl ? " " : "",
                     (unsigned long long)s->status_other);
        for (int k = 0; k < LG_LOAD_ERR_KINDS; k++)
            if (s->errors[k])
                el += (size_t)snprintf(errs + el, sizeof errs - el, "%s%s:%llu", el ? " " : "",
                                       lg_load_errkind_name((lg_load_errkind)k),
                                       (unsigned long long)s->errors[k]);
        fmt_bytes(rx, sizeof rx, s->bytes_received);
        fmt_bytes(tx, sizeof tx, s->bytes_sent);
        fprintf(f, "%-5s  %-*s %-24s %-30s %10llu %10s %10s\n", phase_names[rows[i].phase],
                width, rows[i].name, status[0] ? status : "-", errs[0] ? errs : "-",
                (unsigned long long)s->unfinished, rx, tx);
    }
    free(rows);
    if (omitted)
        fprintf(f, "\n(the %zu least requested URLs are left out of these tables: --rows 0 shows "
                   "them, and --json has every one)\n", omitted);
    if (fflush(f) != 0 || ferror(f))
        return ap_err_set(AP_EIO, "write failed");
    return 0;
}

/* s as a JSON string literal: the core's one escaper. */
static void json_str(FILE *f, const char *s) {
    ap_sbuf sb = {0};
    ap_sbuf_json_str(&sb, s);
    ap_sbuf_write(&sb, f);   /* a failure shows in ferror(f), checked at the end */
    ap_sbuf_free(&sb);
}

static void json_latency(FILE *f, const ap_hist *h) {
    fprintf(f, "{\"count\":%llu", (unsigned long long)h->count);
    for (int p = 0; p < NPCT; p++)
        fprintf(f, ",\"%s\":%.3f", pct_keys[p], (double)ap_hist_percentile(h, pcts[p]) / 1e6);
    fprintf(f, ",\"min\":%.3f,\"max\":%.3f,\"mean\":%.3f}", (double)ap_hist_min(h) / 1e6,
            (double)ap_hist_max(h) / 1e6, ap_hist_mean(h) / 1e6);
}

/* h as a JSON string: base64 (RFC 4648, padded) of ap_hist_encode().  0 / -1
 * with AP_ENOMEM. */
static int json_hist(FILE *f, const ap_hist *h) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = ap_hist_encoded_size(h);
    uint8_t *buf = malloc(n);
    if (buf == NULL)
        return ap_err_set(AP_ENOMEM, NULL);
    n = ap_hist_encode(h, buf, n);
    fputc('"', f);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)buf[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)buf[i + 1] << 8;
        if (i + 2 < n)
            v |= buf[i + 2];
        fputc(b64[v >> 18 & 63], f);
        fputc(b64[v >> 12 & 63], f);
        fputc(i + 1 < n ? b64[v >> 6 & 63] : '=', f);
        fputc(i + 2 < n ? b64[v & 63] : '=', f);
    }
    fputc('"', f);
    free(buf);
    return 0;
}

static int json_stats(FILE *f, const lg_load_config *cfg, const lg_load_stats *s, double el,
                      int histograms) {
    fprintf(f, "\"requests\":%llu,\"rps\":%.3f,\"latency_ms\":",
            (unsigned long long)s->responses, el > 0 ? (double)s->responses / el : 0.0);
    json_latency(f, &s->latency);
    fprintf(f, ",\"uncorrected_latency_ms\":");
    if (lg_load_open(cfg))
        json_latency(f, &s->uncorrected);
    else
        fprintf(f, "null");
    fprintf(f, ",\"status\":{");
    int first = 1;
    for (int c = 0; c < LG_LOAD_STATUS_N; c++)
        if (s->status[c]) {
            fprintf(f, "%s\"%d\":%llu", first ? "" : ",", c + LG_LOAD_STATUS_MIN,
                    (unsigned long long)s->status[c]);
            first = 0;
        }
    if (s->status_other)
        fprintf(f, "%s\"other\":%llu", first ? "" : ",", (unsigned long long)s->status_other);
    fprintf(f, "},\"errors\":{");
    for (int k = 0; k < LG_LOAD_ERR_KINDS; k++)
        fprintf(f, "%s\"%s\":%llu", k ? "," : "", lg_load_errkind_name((lg_load_errkind)k),
                (unsigned long long)s->errors[k]);
    fprintf(f, "},\"failed\":%llu,\"http_errors\":%llu", (unsigned long long)failed_of(s),
            (unsigned long long)http_errors_of(s));
    fprintf(f, ",\"unfinished\":%llu,\"bytes_received\":%llu,\"bytes_sent\":%llu",
            (unsigned long long)s->unfinished, (unsigned long long)s->bytes_received,
            (unsigned long long)s->bytes_sent);
    if (!histograms)
        return 0;
    fprintf(f, ",\"histograms\":{\"latency\":");
    if (json_hist(f, &s->latency) < 0)
        return -1;
    fprintf(f, ",\"uncorrected\":");
    if (lg_load_open(cfg)) {
        if (json_hist(f, &s->uncorrected) < 0)
            return -1;
    } else {
        fprintf(f, "null");
    }
    fputc('}', f);
    return 0;
}

int lg_report_json(FILE *f, const lg_load_config *cfg, const lg_load_result *r, int histograms) {
    fprintf(f, "{\"tool\":\"apiprof-load\",\"schema\":1,\"config\":{\"origin\":");
    json_str(f, cfg->targets->origin);
    fprintf(f, ",\"model\":\"%s\",\"rate\":", lg_load_open(cfg) ? "open" : "closed");
    if (cfg->rate > 0)
        fprintf(f, "%.3f", cfg->rate);
    else
        fprintf(f, "null");
    fprintf(f, ",\"connections\":%u,\"threads\":%u,\"duration_s\":", cfg->connections,
            cfg->threads);
    if (cfg->requests)
        fprintf(f, "null,\"requests\":%llu", (unsigned long long)cfg->requests);
    else
        fprintf(f, "%.3f,\"requests\":null", (double)cfg->duration_ns / 1e9);
    fprintf(f, ",\"warmup_s\":%.3f,\"timeout_s\":%.3f,\"connect_timeout_s\":%.3f",
            (double)cfg->warmup_ns / 1e9, (double)cfg->timeout_ns / 1e9,
            (double)cfg->connect_timeout_ns / 1e9);
    const lg_replay_stats *rs = cfg->replay_stats;
    if (rs != NULL) {
        fprintf(f, ",\"replay\":{\"timed\":%s,\"speed\":", cfg->replay ? "true" : "false");
        if (cfg->replay)
            fprintf(f, "%.6g,\"span_s\":%.6f", cfg->speed, cfg->replay->span_s / cfg->speed);
        else
            fprintf(f, "null,\"span_s\":null");
        fprintf(f, ",\"lines\":%llu,\"used\":%llu,\"malformed\":%llu,\"unsendable\":%llu,"
                   "\"over_targets\":%llu,\"untimed\":%llu,\"distinct\":%zu,\"groups\":%zu,"
                   "\"grouped\":%s,\"first_bad\":",
                (unsigned long long)rs->lines, (unsigned long long)rs->used,
                (unsigned long long)rs->malformed, (unsigned long long)rs->unsendable,
                (unsigned long long)rs->over_targets, (unsigned long long)rs->untimed,
                cfg->targets->n, cfg->targets->ngroups, cfg->targets->grouped ? "true" : "false");
        if (rs->first_bad_line) {
            fprintf(f, "{\"line\":%llu,\"why\":", (unsigned long long)rs->first_bad_line);
            json_str(f, rs->first_bad);
            fputc('}', f);
        } else {
            fprintf(f, "null");
        }
        fputc('}', f);
    }
    fprintf(f, "},\"phases\":{");
    for (int ph = LG_LOAD_WARM; ph >= 0; ph--) {
        fprintf(f, "%s\"%s\":", ph == LG_LOAD_WARM ? "" : ",", phase_names[ph]);
        if (!phase_used(cfg, ph)) {
            fprintf(f, "null");
            continue;
        }
        double el = r->elapsed_s[ph];
        fprintf(f, "{\"elapsed_s\":%.6f,", el);
        if (json_stats(f, cfg, &r->total[ph], el, histograms) < 0)
            return -1;
        fprintf(f, ",\"urls\":[");
        for (size_t g = 0; g < r->ngroups; g++) {
            const lg_group *gr = &cfg->targets->groups[g];
            fprintf(f, "%s{\"name\":", g ? "," : "");
            json_str(f, gr->name);
            fprintf(f, ",\"url\":");
            json_str(f, cfg->targets->items[gr->first].url);
            fprintf(f, ",\"weight\":%u,\"paths\":%u,\"grouped\":%s,", gr->weight, gr->ntargets,
                    cfg->targets->grouped ? "true" : "false");
            if (json_stats(f, cfg, &r->per_group[ph][g], el, histograms) < 0)
                return -1;
            fputc('}', f);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "}}\n");
    if (fflush(f) != 0 || ferror(f))
        return ap_err_set(AP_EIO, "write failed");
    return 0;
}
