/* lg_replay.c -- access log lines parsed byte by byte (uvicorn, Common/Combined, JSON lines), the bodies file, and the replay plan. */
#include "lg_replay.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_map.h"

/* ---- time ------------------------------------------------------------------ */

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* Read exactly n digits at *p (within end). */
static int digits(const char **p, const char *end, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (*p >= end || (*p)[0] < '0' || (*p)[0] > '9')
            return -1;
        v = v * 10 + (*(*p)++ - '0');
    }
    *out = v;
    return 0;
}

static int expect(const char **p, const char *end, char c) {
    if (*p >= end || **p != c)
        return -1;
    (*p)++;
    return 0;
}

/* ".123" or ",123": up to 9 digits of a second, as ns. */
static int64_t fraction(const char **p, const char *end) {
    if (*p >= end || (**p != '.' && **p != ','))
        return 0;
    const char *q = *p + 1;
    int64_t ns = 0, scale = 100000000;
    if (q >= end || *q < '0' || *q > '9')
        return 0;
    while (q < end && *q >= '0' && *q <= '9') {
        ns += (*q - '0') * scale;
        scale /= 10;
        q++;
    }
    *p = q;
    return ns;
}

/* "Z", "+hh:mm", "+hhmm", "-hh" ...: the offset east of UTC in seconds, 0 when absent. */
static int64_t zone(const char **p, const char *end) {
    if (*p < end && **p == 'Z') {
        (*p)++;
        return 0;
    }
    if (*p >= end || (**p != '+' && **p != '-'))
        return 0;
    const char *q = *p;
    int sign = *q++ == '-' ? -1 : 1, hh, mm = 0;
    if (digits(&q, end, 2, &hh) < 0)
        return 0;
    if (q < end && *q == ':')
        q++;
    if (q + 1 < end && q[0] >= '0' && q[0] <= '9')
        digits(&q, end, 2, &mm);
    *p = q;
    return sign * (hh * 3600 + mm * 60);
}

/* Times from 1970 to 2199: nanoseconds since the epoch fit in 63 bits. */
static int valid_clock(int y, int mo, int d, int h, int mi, int s) {
    return y >= 1970 && y < 2200 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h <= 23 && mi <= 59 &&
           s <= 60;
}

/* ISO 8601 "YYYY-MM-DD[T ]HH:MM:SS[.fff][zone]" at *p: 0 and *ns, or -1. */
static int iso_time(const char **p, const char *end, int64_t *ns) {
    const char *q = *p;
    int y, mo, d, h, mi, s;
    if (digits(&q, end, 4, &y) < 0 || expect(&q, end, '-') < 0 || digits(&q, end, 2, &mo) < 0 ||
        expect(&q, end, '-') < 0 || digits(&q, end, 2, &d) < 0)
        return -1;
    if (q >= end || (*q != 'T' && *q != ' '))
        return -1;
    q++;
    if (digits(&q, end, 2, &h) < 0 || expect(&q, end, ':') < 0 || digits(&q, end, 2, &mi) < 0 ||
        expect(&q, end, ':') < 0 || digits(&q, end, 2, &s) < 0 || !valid_clock(y, mo, d, h, mi, s))
        return -1;
    int64_t frac = fraction(&q, end);
    int64_t off = zone(&q, end);
    int64_t secs = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + s;
    *ns = (secs - off) * 1000000000 + frac;
    *p = q;
    return 0;
}

/* CLF "10/Oct/2000:13:55:36[.fff] -0700" at *p (after '['): 0 and *ns, or -1. */
static int clf_time(const char **p, const char *end, int64_t *ns) {
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    const char *q = *p;
    int y, mo = 0, d, h, mi, s;
    if (digits(&q, end, 2, &d) < 0 || expect(&q, end, '/') < 0 || end - q < 4)
        return -1;
    for (int i = 0; i < 12; i++)
        if (memcmp(q, months + 3 * i, 3) == 0)
            mo = i + 1;
    q += 3;
    if (mo == 0 || expect(&q, end, '/') < 0 || digits(&q, end, 4, &y) < 0 ||
        expect(&q, end, ':') < 0 || digits(&q, end, 2, &h) < 0 || expect(&q, end, ':') < 0 ||
        digits(&q, end, 2, &mi) < 0 || expect(&q, end, ':') < 0 || digits(&q, end, 2, &s) < 0 ||
        !valid_clock(y, mo, d, h, mi, s))
        return -1;
    int64_t frac = fraction(&q, end);
    if (q < end && *q == ' ')
        q++;
    int64_t off = zone(&q, end);
    int64_t secs = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + s;
    *ns = (secs - off) * 1000000000 + frac;
    *p = q;
    return 0;
}

/* ---- the request line -------------------------------------------------------- */

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode the quoted field that starts after the '"' at *p, up to its
 * unescaped closing quote, into out (cap bytes).  *p ends after the quote.
 * Returns the decoded length, or -1 (no closing quote, output too long). */
static long quoted(const char **p, const char *end, char *out, size_t cap) {
    const char *q = *p;
    size_t n = 0;
    while (q < end && *q != '"') {
        char c = *q++;
        if (c == '\\' && q < end) {
            if (*q == 'x' && end - q >= 3 && hexval(q[1]) >= 0 && hexval(q[2]) >= 0) {
                c = (char)(hexval(q[1]) * 16 + hexval(q[2]));
                q += 3;
            } else {
                c = *q++;   /* \" \\ and any other escaped byte stand for themselves */
            }
        }
        if (n + 1 >= cap)
            return -1;
        out[n++] = c;
    }
    if (q >= end)
        return -1;
    out[n] = '\0';
    *p = q + 1;
    return (long)n;
}

static int is_upper_token(const char *s, size_t n) {
    if (n == 0 || n > LG_REPLAY_METHOD_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 'A' || s[i] > 'Z')
            return 0;
    return 1;
}

/* Split a decoded request line "METHOD TARGET HTTP/x.y" (in buf, len n) into
 * req: the method copied, the target moved to the start of buf. */
static int request_line(char *buf, size_t n, lg_replay_req *req) {
    char *sp = memchr(buf, ' ', n);
    if (sp == NULL || !is_upper_token(buf, (size_t)(sp - buf)))
        return ap_err_set(AP_EINVAL, "no METHOD at the start of the request");
    memcpy(req->method, buf, (size_t)(sp - buf));
    req->method[sp - buf] = '\0';
    char *target = sp + 1;
    char *tend = buf + n;   /* the last space: an escaped space may sit in the target */
    while (tend > target && tend[-1] != ' ')
        tend--;
    tend--;
    if (tend < target || strncmp(tend + 1, "HTTP/", 5) != 0)
        return ap_err_set(AP_EINVAL, "the request has no HTTP version");
    if (target[0] != '/')
        return ap_err_set(AP_EINVAL, "the request target is not a /path");
    size_t tl = (size_t)(tend - target);
    memmove(buf, target, tl);
    buf[tl] = '\0';
    req->path = buf;
    req->path_len = tl;
    return 0;
}

/* The status after the closing quote: " 200". */
static int status_after(const char *p, const char *end) {
    while (p < end && *p == ' ')
        p++;
    int v;
    if (digits(&p, end, 3, &v) < 0 || (p < end && *p != ' '))
        return 0;
    return v >= 100 && v <= 599 ? v : 0;
}

/* uvicorn, Common and Combined: a quoted request line somewhere in the line. */
static int parse_text(const char *line, size_t len, lg_replay_req *req, char *buf, size_t cap) {
    const char *end = line + len, *p = line;
    const char *quote = memchr(line, '"', len);
    if (quote == NULL)
        return ap_err_set(AP_EINVAL, "no quoted request");
    const char *bracket = memchr(line, '[', (size_t)(quote - line));
    if (bracket != NULL) {
        p = bracket + 1;
        if (clf_time(&p, end, &req->time_ns) < 0 || p >= end || *p != ']')
            return ap_err_set(AP_EINVAL, "bad [time]");
        req->has_time = 1;
    } else if (iso_time(&p, end, &req->time_ns) == 0) {
        req->has_time = 1;
    }
    p = quote + 1;
    long n = quoted(&p, end, buf, cap);
    if (n < 0)
        return ap_err_set(AP_EINVAL, "unterminated quoted request");
    if (request_line(buf, (size_t)n, req) < 0)
        return -1;
    req->status = status_after(p, end);
    return 0;
}

/* ---- JSON lines ---------------------------------------------------------------- */

static void ws(const char **p, const char *end) {
    while (*p < end && (**p == ' ' || **p == '\t' || **p == '\r'))
        (*p)++;
}

/* A JSON string at *p (at its '"') decoded into out; \uXXXX beyond ASCII is
 * written as '?', which makes a path unsendable rather than wrong. */
static long json_string(const char **p, const char *end, char *out, size_t cap) {
    const char *q = *p + 1;
    size_t n = 0;
    while (q < end && *q != '"') {
        char c = *q++;
        if (c == '\\') {
            if (q >= end)
                return -1;
            char e = *q++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                if (end - q < 4)
                    return -1;
                int v = 0;
                for (int i = 0; i < 4; i++) {
                    int h = hexval(q[i]);
                    if (h < 0)
                        return -1;
                    v = v * 16 + h;
                }
                q += 4;
                c = v < 0x80 ? (char)v : '?';
                break;
            }
            default: c = e;   /* \" \\ \/ */
            }
        }
        if (out != NULL) {
            if (n + 1 >= cap)
                return -1;
            out[n] = c;
        }
        n++;
    }
    if (q >= end)
        return -1;
    if (out != NULL)
        out[n] = '\0';
    *p = q + 1;
    return (long)n;
}

/* Skip one JSON value (any kind). */
static int json_skip(const char **p, const char *end, int depth) {
    ws(p, end);
    if (*p >= end || depth > 32)
        return -1;
    char c = **p;
    if (c == '"')
        return json_string(p, end, NULL, 0) < 0 ? -1 : 0;
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        (*p)++;
        ws(p, end);
        if (*p < end && **p == close) {
            (*p)++;
            return 0;
        }
        for (;;) {
            if (c == '{') {
                ws(p, end);
                if (*p >= end || **p != '"' || json_string(p, end, NULL, 0) < 0)
                    return -1;
                ws(p, end);
                if (expect(p, end, ':') < 0)
                    return -1;
            }
            if (json_skip(p, end, depth + 1) < 0)
                return -1;
            ws(p, end);
            if (*p < end && **p == ',') {
                (*p)++;
                continue;
            }
            return expect(p, end, close);
        }
    }
    const char *q = *p;
    while (q < end && strchr(",}] \t\r", *q) == NULL)
        q++;
    if (q == *p)
        return -1;
    *p = q;
    return 0;
}

/* Epoch seconds "1700000000.123456789" at *p as ns, exactly (a double would
 * lose the sub-microsecond digits). */
static int json_seconds(const char **p, const char *end, int64_t *ns) {
    const char *q = *p;
    int64_t secs = 0;
    if (q >= end || *q < '0' || *q > '9')
        return -1;
    while (q < end && *q >= '0' && *q <= '9') {
        secs = secs * 10 + (*q++ - '0');
        if (secs > INT64_C(7258118400))   /* 2200-01-01: ns fit in 63 bits */
            return -1;
    }
    int64_t frac = fraction(&q, end);
    while (q < end && *q >= '0' && *q <= '9')   /* digits beyond ns */
        q++;
    if (q < end && strchr(",} \t\r", *q) == NULL)
        return -1;
    *ns = secs * 1000000000 + frac;
    *p = q;
    return 0;
}

/* A JSON number at *p as a double. */
static int json_number(const char **p, const char *end, double *out) {
    char tmp[64];
    size_t n = 0;
    while (*p + n < end && n < sizeof tmp - 1 && strchr("+-.eE0123456789", (*p)[n]) != NULL)
        n++;
    if (n == 0)
        return -1;
    memcpy(tmp, *p, n);
    tmp[n] = '\0';
    char *e;
    errno = 0;
    *out = strtod(tmp, &e);
    if (*e != '\0' || errno)
        return -1;
    *p += n;
    return 0;
}

static int parse_json(const char *line, size_t len, lg_replay_req *req, char *buf, size_t cap) {
    const char *end = line + len, *p = line + 1;
    char key[32], val[128];
    int have_path = 0, have_method = 0;
    ws(&p, end);
    if (p < end && *p == '}')
        return ap_err_set(AP_EINVAL, "empty JSON object");
    for (;;) {
        ws(&p, end);
        if (p >= end || *p != '"')
            return ap_err_set(AP_EINVAL, "bad JSON (a key expected)");
        long kl = json_string(&p, end, key, sizeof key);
        if (kl < 0)
            key[0] = '\0';   /* a long key is none of ours */
        if (kl < 0 && json_string(&p, end, NULL, 0) < 0)
            return ap_err_set(AP_EINVAL, "bad JSON string");
        ws(&p, end);
        if (expect(&p, end, ':') < 0)
            return ap_err_set(AP_EINVAL, "bad JSON (':' expected)");
        ws(&p, end);
        int is_path = !strcmp(key, "path") || !strcmp(key, "url") || !strcmp(key, "uri");
        int is_time = !strcmp(key, "time") || !strcmp(key, "timestamp") || !strcmp(key, "ts");
        if (is_path && p < end && *p == '"') {
            long n = json_string(&p, end, buf, cap);
            if (n < 0)
                return ap_err_set(AP_EINVAL, "bad JSON string for %s", key);
            req->path = buf;
            req->path_len = (size_t)n;
            have_path = 1;
        } else if (!strcmp(key, "method") && p < end && *p == '"') {
            long n = json_string(&p, end, val, sizeof val);
            if (n < 0 || !is_upper_token(val, (size_t)n))
                return ap_err_set(AP_EINVAL, "bad method");
            memcpy(req->method, val, (size_t)n + 1);
            have_method = 1;
        } else if (!strcmp(key, "status") && p < end && *p != '"') {
            double v;
            if (json_number(&p, end, &v) < 0)
                return ap_err_set(AP_EINVAL, "bad status");
            req->status = v >= 100 && v <= 599 ? (int)v : 0;
        } else if (is_time && p < end && *p == '"') {
            long n = json_string(&p, end, val, sizeof val);
            const char *v = val;
            if (n < 0 || iso_time(&v, val + n, &req->time_ns) < 0)
                return ap_err_set(AP_EINVAL, "bad time");
            req->has_time = 1;
        } else if (is_time) {
            if (json_seconds(&p, end, &req->time_ns) < 0)
                return ap_err_set(AP_EINVAL, "bad time");
            req->has_time = 1;
        } else if (json_skip(&p, end, 0) < 0) {
            return ap_err_set(AP_EINVAL, "bad JSON value of %s", key[0] ? key : "a key");
        }
        ws(&p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (expect(&p, end, '}') < 0)
            return ap_err_set(AP_EINVAL, "bad JSON ('}' expected)");
        break;
    }
    ws(&p, end);
    if (p != end)
        return ap_err_set(AP_EINVAL, "bytes after the JSON object");
    if (!have_path)
        return ap_err_set(AP_EINVAL, "no \"path\"");
    if (!have_method)
        memcpy(req->method, "GET", 4);
    if (req->path[0] != '/') {
        /* an absolute URL: keep its path */
        const char *s = strstr(req->path, "://");
        const char *slash = s ? strchr(s + 3, '/') : NULL;
        if (slash == NULL)
            return ap_err_set(AP_EINVAL, "the path is not a /path");
        size_t n = req->path_len - (size_t)(slash - req->path);
        memmove(buf, slash, n + 1);
        req->path_len = n;
    }
    return 0;
}

int lg_replay_parse_line(const char *line, size_t len, lg_replay_req *req, char *buf,
                         size_t cap) {
    memset(req, 0, sizeof *req);
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    size_t skip = 0;
    while (skip < len && (line[skip] == ' ' || line[skip] == '\t'))
        skip++;
    if (skip == len)
        return ap_err_set(AP_EINVAL, "empty line");
    if (line[skip] == '{')
        return parse_json(line + skip, len - skip, req, buf, cap);
    return parse_text(line + skip, len - skip, req, buf, cap);
}

/* ---- the bodies file ----------------------------------------------------------- */

void lg_replay_bodies_free(lg_replay_bodies *b) {
    for (size_t i = 0; i < b->n; i++) {
        free(b->items[i].method);
        free(b->items[i].pattern);
        free(b->items[i].body);
        free(b->items[i].content_type);
    }
    b->n = 0;
}

/* A JSON string value copied into a new buffer. */
static char *json_dup(const char **p, const char *end, size_t *len) {
    const char *q = *p;
    long n = json_string(&q, end, NULL, 0);
    if (n < 0)
        return NULL;
    char *out = malloc((size_t)n + 1);
    if (out != NULL) {
        json_string(p, end, out, (size_t)n + 1);
        if (len)
            *len = (size_t)n;
    }
    return out;
}

static int body_rule(const char **p, const char *end, lg_replay_body *r) {
    if (expect(p, end, '{') < 0)
        return -1;
    for (;;) {
        ws(p, end);
        while (*p < end && **p == '\n') {
            (*p)++;
            ws(p, end);
        }
        char key[32];
        if (*p >= end || **p != '"' || json_string(p, end, key, sizeof key) < 0)
            return -1;
        ws(p, end);
        if (expect(p, end, ':') < 0)
            return -1;
        ws(p, end);
        char **slot = !strcmp(key, "method") ? &r->method : !strcmp(key, "path") ? &r->pattern
                      : !strcmp(key, "body") ? &r->body : !strcmp(key, "content_type")
                      ? &r->content_type : NULL;
        if (slot != NULL) {
            if (*p >= end || **p != '"' || *slot != NULL)
                return -1;
            if ((*slot = json_dup(p, end, slot == &r->body ? &r->body_len : NULL)) == NULL)
                return -1;
        } else if (json_skip(p, end, 0) < 0) {
            return -1;
        }
        ws(p, end);
        while (*p < end && **p == '\n') {
            (*p)++;
            ws(p, end);
        }
        if (*p < end && **p == ',') {
            (*p)++;
            continue;
        }
        return expect(p, end, '}');
    }
}

int lg_replay_bodies_load(lg_replay_bodies *b, const char *path) {
    memset(b, 0, sizeof *b);
    size_t len;
    char *text = lg_read_file(path, (size_t)64 << 20, &len);
    if (text == NULL)
        return -1;
    /* newlines are white space here: turn them into spaces once */
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\n')
            text[i] = ' ';
    const char *p = text, *end = text + len;
    int rc = 0;
    ws(&p, end);
    if (expect(&p, end, '[') < 0) {
        rc = ap_err_set(AP_EINVAL, "%s: not a JSON array of rules", path);
        goto out;
    }
    ws(&p, end);
    if (p < end && *p == ']') {
        p++;
    } else {
        for (;;) {
            if (b->n == LG_REPLAY_BODIES_MAX) {
                rc = ap_err_set(AP_EINVAL, "%s: more than %d rules", path, LG_REPLAY_BODIES_MAX);
                goto out;
            }
            lg_replay_body *r = &b->items[b->n];
            memset(r, 0, sizeof *r);
            ws(&p, end);
            int bad = body_rule(&p, end, r);
            b->n++;
            if (bad < 0 || r->pattern == NULL || r->body == NULL) {
                rc = ap_err_set(AP_EINVAL, "%s: rule %zu is not {\"method\", \"path\", \"body\", "
                                "\"content_type\"} with a path and a body", path, b->n);
                goto out;
            }
            if (r->content_type != NULL) {
                size_t n = strlen(r->content_type) + 15;
                char *h = malloc(n);
                if (h == NULL) {
                    rc = ap_err_set(AP_ENOMEM, NULL);
                    goto out;
                }
                snprintf(h, n, "Content-Type: %s", r->content_type);
                free(r->content_type);
                r->content_type = h;
            }
            ws(&p, end);
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (expect(&p, end, ']') < 0) {
                rc = ap_err_set(AP_EINVAL, "%s: ',' or ']' expected after rule %zu", path, b->n);
                goto out;
            }
            break;
        }
    }
    ws(&p, end);
    if (rc == 0 && p != end)
        rc = ap_err_set(AP_EINVAL, "%s: bytes after the array", path);
out:
    free(text);
    if (rc < 0)
        lg_replay_bodies_free(b);
    return rc;
}

static const lg_replay_body *body_for(const lg_replay_bodies *b, const char *method,
                                      const char *path) {
    for (size_t i = 0; b != NULL && i < b->n; i++) {
        const lg_replay_body *r = &b->items[i];
        if ((r->method == NULL || !strcmp(r->method, "*") || !strcmp(r->method, method)) &&
            fnmatch(r->pattern, path, 0) == 0)
            return r;
    }
    return NULL;
}

/* ---- the plan ---------------------------------------------------------------------- */

void lg_replay_plan_free(lg_replay_plan *plan) {
    free(plan->offset_ns);
    free(plan->target);
    memset(plan, 0, sizeof *plan);
}

typedef struct entry {
    int64_t t;
    uint64_t seq;
    uint32_t target;
} entry;

static int by_time(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void note_bad(lg_replay_stats *st, uint64_t lineno, const char *why) {
    if (st->first_bad_line == 0) {
        st->first_bad_line = lineno;
        snprintf(st->first_bad, sizeof st->first_bad, "%s", why);
    }
}

static int sendable(const char *path) {
    for (const unsigned char *c = (const unsigned char *)path; *c; c++)
        if (*c <= 0x20 || *c >= 0x7f)
            return 0;
    return 1;
}

/* The targets read so far: an index by method and path, and each one's count. */
typedef struct seen_targets {
    ap_map index;          /* hash of "METHOD path" (probed on) -> target */
    uint64_t *counts;      /* requests of each target */
    char **keys;           /* "METHOD path" of each target as logged (owned; a target's
                              name has --base's path in front) */
    size_t cap;
} seen_targets;

/* Hash of "method path". */
static uint64_t request_hash(const char *method, const char *path) {
    return ap_hash_bytes(method, strlen(method)) * 31 + ap_hash_bytes(path, strlen(path));
}

/* The target of method and path: found, or added.  -1: cannot be added (the
 * reason counted in st), -2: out of memory. */
static long target_of(lg_targets *ts, const char *base, const lg_replay_bodies *bodies,
                      const lg_replay_req *req, lg_replay_stats *st, uint64_t lineno,
                      seen_targets *seen) {
    size_t ml = strlen(req->method);
    uint64_t h = request_hash(req->method, req->path);
    uint64_t *slot;
    for (; (slot = ap_map_get(&seen->index, h)) != NULL; h++) {   /* probe past collisions */
        const char *key = seen->keys[*slot];
        if (strncmp(key, req->method, ml) == 0 && key[ml] == ' ' &&
            strcmp(key + ml + 1, req->path) == 0)
            return (long)*slot;
    }
    if (!sendable(req->path)) {
        st->unsendable++;
        note_bad(st, lineno, "the path has a byte that cannot be sent (space, control, non-ASCII)");
        return -1;
    }
    if (ts->n == LG_TARGET_REPLAY_MAX) {
        st->over_targets++;
        return -1;
    }
    if (ts->n == seen->cap) {
        size_t nc = seen->cap ? 2 * seen->cap : 256;
        uint64_t *grown = realloc(seen->counts, nc * sizeof *grown);
        if (grown == NULL)
            return -2;
        seen->counts = grown;
        char **keys = realloc(seen->keys, nc * sizeof *keys);
        if (keys == NULL)
            return -2;
        seen->keys = keys;
        seen->cap = nc;
    }
    size_t kl = ml + strlen(req->path) + 2;
    char *key = malloc(kl);
    if (key == NULL)
        return -2;
    snprintf(key, kl, "%s %s", req->method, req->path);
    const lg_replay_body *b = body_for(bodies, req->method, req->path);
    const char *hdr[1] = {b && b->content_type ? b->content_type : NULL};
    if (lg_targets_add(ts, base, 1, req->method, req->path, hdr, hdr[0] ? 1 : 0,
                       b ? b->body : NULL, b ? b->body_len : 0) < 0) {
        free(key);
        if (ap_err_code() == AP_ENOMEM)
            return -2;
        st->unsendable++;
        note_bad(st, lineno, ap_err_msg());
        return -1;
    }
    seen->keys[ts->n - 1] = key;
    seen->counts[ts->n - 1] = 0;
    if (ap_map_put(&seen->index, h, ts->n - 1) != 0)
        return -2;
    return (long)(ts->n - 1);
}

int lg_replay_load(const char *path, lg_targets *ts, const char *base,
                   const lg_replay_bodies *bodies, lg_replay_plan *plan) {
    memset(plan, 0, sizeof *plan);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return ap_err_set(AP_EIO, "%s: %s", path, strerror(errno));
    char *line = NULL, *buf = malloc(LG_REPLAY_LINE_MAX + 1);
    size_t linecap = 0, n = 0, cap = 0;
    entry *es = NULL;
    seen_targets seen = {0};
    uint64_t lineno = 0;
    lg_replay_stats *st = &plan->stats;
    int rc = 0;
    ts->max = LG_TARGET_REPLAY_MAX;
    ssize_t got;
    if (buf == NULL) {
        rc = ap_err_set(AP_ENOMEM, NULL);
        goto out;
    }
    while ((got = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        if (len > 0 && line[len - 1] == '\n')
            len--;
        size_t k = 0;
        while (k < len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r'))
            k++;
        if (k == len)
            continue;
        st->lines++;
        lg_replay_req req;
        if (len > LG_REPLAY_LINE_MAX) {
            st->malformed++;
            note_bad(st, lineno, "line too long");
            continue;
        }
        if (lg_replay_parse_line(line, len, &req, buf, LG_REPLAY_LINE_MAX + 1) < 0) {
            st->malformed++;
            note_bad(st, lineno, ap_err_msg());
            continue;
        }
        long t = target_of(ts, base, bodies, &req, st, lineno, &seen);
        if (t == -2) {
            rc = ap_err_set(AP_ENOMEM, NULL);
            goto out;
        }
        if (t < 0)
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 1024;
            entry *grown = realloc(es, nc * sizeof *es);
            if (grown == NULL) {
                rc = ap_err_set(AP_ENOMEM, NULL);
                goto out;
            }
            es = grown;
            cap = nc;
        }
        es[n] = (entry){.t = req.has_time ? req.time_ns : 0, .seq = n, .target = (uint32_t)t};
        if (!req.has_time)
            st->untimed++;
        seen.counts[t]++;
        n++;
    }
    if (ferror(f)) {
        rc = ap_err_set(AP_EIO, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (n == 0) {
        rc = ap_err_set(AP_EINVAL, "%s: no request could be read (%llu lines, %llu malformed%s%s)",
                        path, (unsigned long long)st->lines, (unsigned long long)st->malformed,
                        st->first_bad_line ? "; first: " : "", st->first_bad);
        goto out;
    }
    plan->timed = st->untimed == 0;
    if (plan->timed)
        qsort(es, n, sizeof *es, by_time);
    plan->offset_ns = malloc(n * sizeof *plan->offset_ns);
    plan->target = malloc(n * sizeof *plan->target);
    if (plan->offset_ns == NULL || plan->target == NULL) {
        rc = ap_err_set(AP_ENOMEM, NULL);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        plan->offset_ns[i] = plan->timed ? (uint64_t)(es[i].t - es[0].t) : 0;
        plan->target[i] = es[i].target;
    }
    plan->n = n;
    st->used = n;
    plan->span_s = (double)plan->offset_ns[n - 1] / 1e9;
    /* weights for the mix: counts scaled so that the largest fits */
    uint64_t most = 0;
    for (size_t i = 0; i < ts->n; i++)
        most = seen.counts[i] > most ? seen.counts[i] : most;
    for (size_t i = 0; i < ts->n; i++) {
        uint64_t w = most <= LG_TARGET_WEIGHT_MAX ? seen.counts[i]
                                                  : seen.counts[i] * LG_TARGET_WEIGHT_MAX / most;
        ts->items[i].weight = w < 1 ? 1 : (unsigned)w;
    }
    if (lg_targets_group(ts, seen.counts) < 0)
        rc = -1;
out:
    ap_map_free(&seen.index);
    free(seen.counts);
    for (size_t i = 0; seen.keys != NULL && i < ts->n; i++)
        free(seen.keys[i]);
    free(seen.keys);
    fclose(f);
    free(line);
    free(buf);
    free(es);
    if (rc < 0) {
        lg_replay_stats keep = plan->stats;
        lg_replay_plan_free(plan);
        plan->stats = keep;
    }
    return rc;
}
