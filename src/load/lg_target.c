/* lg_target.c -- URL parsing, URL files, request building and the weighted schedule of apiprof-load. */
#include "lg_target.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ap_err.h"
#include "ap_map.h"

void lg_targets_init(lg_targets *ts) {
    assert(ts != NULL);
    memset(ts, 0, sizeof *ts);
}

void lg_targets_free(lg_targets *ts) {
    for (size_t i = 0; i < ts->n; i++) {
        free(ts->items[i].name);
        free(ts->items[i].url);
        free(ts->items[i].request);
    }
    free(ts->items);
    for (size_t g = 0; g < ts->ngroups; g++)
        free(ts->groups[g].name);
    free(ts->groups);
    free(ts->origin);
    free(ts->host_header);
    free(ts->schedule);
    lg_targets_init(ts);
}

static int is_tchar(unsigned char c) {
    return isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* 0 when header is a "Name: value" apiprof-load may send, else -1 with AP_EINVAL. */
static int check_header(const char *header) {
    const char *colon = strchr(header, ':');
    if (colon == NULL || colon == header)
        return ap_err_set(AP_EINVAL, "header '%s' is not 'Name: value'", header);
    for (const char *c = header; c < colon; c++)
        if (!is_tchar((unsigned char)*c))
            return ap_err_set(AP_EINVAL, "header '%s' has an invalid name", header);
    if (strpbrk(header, "\r\n") != NULL)
        return ap_err_set(AP_EINVAL, "header contains a line break");
    size_t name = (size_t)(colon - header);
    if ((name == 4 && strncasecmp(header, "host", 4) == 0) ||
        (name == 14 && strncasecmp(header, "content-length", 14) == 0))
        return ap_err_set(AP_EINVAL, "header %.*s is set by apiprof-load", (int)name, header);
    return 0;
}

int lg_targets_header(lg_targets *ts, const char *header) {
    if (check_header(header) < 0)
        return -1;
    if (ts->nheaders == LG_TARGET_HEADERS_MAX)
        return ap_err_set(AP_EINVAL, "more than %d headers", LG_TARGET_HEADERS_MAX);
    ts->headers[ts->nheaders++] = header;
    return 0;
}

/* Split "http://host[:port][/path]" into origin and path (both malloc'd).
 * Returns 0 or -1 with AP_EINVAL / AP_ENOMEM. */
static int split_url(const char *url, char **origin, char **host_header, char **path) {
    if (strncasecmp(url, "https://", 8) == 0)
        return ap_err_set(AP_EINVAL, "%s: https is not supported (plain http only)", url);
    if (strncasecmp(url, "http://", 7) != 0)
        return ap_err_set(AP_EINVAL, "%s: not an http:// URL or a /path", url);
    const char *host = url + 7;
    size_t hostlen = strcspn(host, "/?#");
    if (hostlen == 0)
        return ap_err_set(AP_EINVAL, "%s: no host", url);
    const char *rest = host + hostlen;
    if (*rest == '#')
        rest = "";
    const char *hend = host + hostlen;
    const char *port = NULL;
    if (host[0] == '[') {
        const char *close = memchr(host, ']', hostlen);
        if (close == NULL)
            return ap_err_set(AP_EINVAL, "%s: bad IPv6 address", url);
        if (close + 1 < hend) {
            if (close[1] != ':')
                return ap_err_set(AP_EINVAL, "%s: bad host", url);
            port = close + 2;
        }
    } else {
        const char *c = memchr(host, ':', hostlen);
        if (c)
            port = c + 1;
    }
    long portnum = 80;
    if (port) {
        char *end;
        errno = 0;
        portnum = port < hend ? strtol(port, &end, 10) : -1;
        if (port >= hend || end != hend || errno || portnum < 1 || portnum > 65535)
            return ap_err_set(AP_EINVAL, "%s: bad port", url);
    }
    size_t hn = (size_t)((port ? port - 1 : hend) - host);
    char *o = malloc(hn + 16), *h = malloc(hostlen + 1);
    const char *p = *rest == '\0' ? "/" : rest;
    char *pa = malloc(strlen(p) + 2);
    if (!o || !h || !pa) {
        free(o);
        free(h);
        free(pa);
        return ap_err_set(AP_ENOMEM, NULL);
    }
    snprintf(o, hn + 16, "http://%.*s:%ld", (int)hn, host, portnum);
    memcpy(h, host, hostlen);
    h[hostlen] = '\0';
    /* "?q" without a path becomes "/?q" */
    snprintf(pa, strlen(p) + 2, "%s%s", p[0] == '/' ? "" : "/", p);
    *origin = o;
    *host_header = h;
    *path = pa;
    return 0;
}

static int valid_method(const char *m) {
    if (*m == '\0' || strlen(m) > 32)
        return 0;
    for (; *m; m++)
        if (!is_tchar((unsigned char)*m))
            return 0;
    return 1;
}

/* 1 when headers a and b ("Name: value") have the same name (case-insensitive). */
static int same_name(const char *a, const char *b) {
    size_t na = strcspn(a, ":"), nb = strcspn(b, ":");
    return na == nb && strncasecmp(a, b, na) == 0;
}

/* 1 when one of the n headers has the name of header h. */
static int named_in(const char *h, const char *const *headers, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (same_name(h, headers[i]))
            return 1;
    return 0;
}

/* Build "METHOD path HTTP/1.1\r\nHost: ...\r\n<headers>[body headers]\r\n<body>":
 * the -H headers that the URL's own headers do not replace, then the URL's own. */
static char *build_request(const lg_targets *ts, const char *method, const char *path,
                           const char *const *own, size_t nown, const char *body,
                           size_t body_len, size_t *len) {
    int has_ct = named_in("Content-Type:", own, nown) ||
                 named_in("Content-Type:", ts->headers, ts->nheaders);
    size_t cap = strlen(method) + strlen(path) + strlen(ts->host_header) + body_len + 128;
    for (size_t i = 0; i < ts->nheaders; i++)
        cap += strlen(ts->headers[i]) + 2;
    for (size_t i = 0; i < nown; i++)
        cap += strlen(own[i]) + 2;
    char *r = malloc(cap);
    if (r == NULL)
        return NULL;
    size_t n = (size_t)snprintf(r, cap, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path,
                                ts->host_header);
    for (size_t i = 0; i < ts->nheaders; i++)
        if (!named_in(ts->headers[i], own, nown))
            n += (size_t)snprintf(r + n, cap - n, "%s\r\n", ts->headers[i]);
    for (size_t i = 0; i < nown; i++)
        n += (size_t)snprintf(r + n, cap - n, "%s\r\n", own[i]);
    if (body) {
        if (!has_ct)
            n += (size_t)snprintf(r + n, cap - n, "Content-Type: application/json\r\n");
        n += (size_t)snprintf(r + n, cap - n, "Content-Length: %zu\r\n", body_len);
    }
    n += (size_t)snprintf(r + n, cap - n, "\r\n");
    if (body) {
        memcpy(r + n, body, body_len);
        n += body_len;
    }
    assert(n < cap);
    *len = n;
    return r;
}

int lg_targets_add(lg_targets *ts, const char *base, unsigned weight, const char *method,
                   const char *url, const char *const *headers, size_t nheaders,
                   const char *body, size_t body_len) {
    if (method == NULL)
        method = "GET";
    if (nheaders > LG_TARGET_HEADERS_MAX)
        return ap_err_set(AP_EINVAL, "more than %d headers", LG_TARGET_HEADERS_MAX);
    for (size_t i = 0; i < nheaders; i++)
        if (check_header(headers[i]) < 0)
            return -1;
    if (!valid_method(method))
        return ap_err_set(AP_EINVAL, "invalid method '%s'", method);
    if (weight < 1 || weight > LG_TARGET_WEIGHT_MAX)
        return ap_err_set(AP_EINVAL, "weight must be 1..%d", LG_TARGET_WEIGHT_MAX);
    size_t max = ts->max ? ts->max : LG_TARGET_MAX;
    if (ts->n == max)
        return ap_err_set(AP_EINVAL, "more than %zu URLs", max);
    if (strpbrk(url, " \t\r\n") != NULL)
        return ap_err_set(AP_EINVAL, "URL '%s' contains white space", url);
    char full[4096];
    if (url[0] == '/') {
        if (base == NULL)
            return ap_err_set(AP_EINVAL, "%s: a path needs a base URL (--base)", url);
        size_t bl = strlen(base);
        while (bl > 0 && base[bl - 1] == '/')
            bl--;
        if ((size_t)snprintf(full, sizeof full, "%.*s%s", (int)bl, base, url) >= sizeof full)
            return ap_err_set(AP_EINVAL, "URL too long");
    } else if ((size_t)snprintf(full, sizeof full, "%s", url) >= sizeof full) {
        return ap_err_set(AP_EINVAL, "URL too long");
    }
    char *origin = NULL, *host = NULL, *path = NULL;
    if (split_url(full, &origin, &host, &path) < 0)
        return -1;
    if (ts->origin == NULL) {
        ts->origin = origin;
        ts->host_header = host;
    } else {
        int same = strcmp(ts->origin, origin) == 0;
        free(origin);
        free(host);
        if (!same) {
            free(path);
            return ap_err_set(AP_EINVAL, "%s: every URL must share the origin %s", full,
                              ts->origin);
        }
    }
    if (ts->n == 0 || (ts->n >= 16 && (ts->n & (ts->n - 1)) == 0)) {   /* 16, 32, 64... */
        lg_target *grown = realloc(ts->items, (ts->n ? 2 * ts->n : 16) * sizeof *grown);
        if (grown == NULL) {
            free(path);
            return ap_err_set(AP_ENOMEM, NULL);
        }
        ts->items = grown;
    }
    lg_target *t = &ts->items[ts->n];
    memset(t, 0, sizeof *t);
    size_t nl = strlen(method) + strlen(path) + 2;
    t->name = malloc(nl);
    t->url = strdup(full);
    t->request = build_request(ts, method, path, headers, nheaders, body, body_len,
                               &t->request_len);
    if (t->name)
        snprintf(t->name, nl, "%s %s", method, path);
    free(path);
    if (!t->name || !t->url || !t->request) {
        free(t->name);
        free(t->url);
        free(t->request);
        return ap_err_set(AP_ENOMEM, NULL);
    }
    t->weight = weight;
    t->head = strcmp(method, "HEAD") == 0;
    ts->n++;
    return 0;
}

char *lg_read_file(const char *path, size_t max, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        ap_err_set(AP_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    int big = 0;
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        if (cap >= max) {
            big = 1;
            break;
        }
        size_t grow = cap > max / 2 ? max : cap * 2;
        char *grown = realloc(buf, grow + 1);
        if (grown == NULL)
            free(buf);
        buf = grown;
        cap = grow;
    }
    int bad = ferror(f), nomem = buf == NULL;
    fclose(f);
    if (nomem || bad || big) {
        free(buf);
        if (nomem && !bad)
            ap_err_set(AP_ENOMEM, NULL);
        else
            ap_err_set(AP_EIO, "%s: %s", path,
                       bad ? "cannot be read" : "larger than the limit for this file");
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Contents of dir/name (or name if absolute); malloc'd, length in *len. */
static char *read_body_file(const char *urlfile, const char *name, size_t *len) {
    char path[4096];
    const char *slash = strrchr(urlfile, '/');
    if (name[0] == '/' || slash == NULL)
        snprintf(path, sizeof path, "%s", name);
    else
        snprintf(path, sizeof path, "%.*s/%s", (int)(slash - urlfile), urlfile, name);
    return lg_read_file(path, (size_t)64 << 20, len);
}

static int all_upper(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(s[i] >= 'A' && s[i] <= 'Z'))
            return 0;
    return n > 0;
}

static int all_digits(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(s[i] >= '0' && s[i] <= '9'))
            return 0;
    return n > 0;
}

/* Next white-space separated token of *s: start in *tok, length returned. */
static size_t next_token(char **s, char **tok) {
    while (**s == ' ' || **s == '\t')
        (*s)++;
    *tok = *s;
    while (**s && **s != ' ' && **s != '\t')
        (*s)++;
    return (size_t)(*s - *tok);
}

static int file_line(lg_targets *ts, const char *path, const char *base, const char *method,
                     char *line, const char *const *headers, size_t nheaders) {
    char *s = line, *tok;
    size_t n = next_token(&s, &tok);
    unsigned weight = 1;
    if (all_digits(tok, n)) {
        weight = n > 6 ? LG_TARGET_WEIGHT_MAX + 1 : (unsigned)strtoul(tok, NULL, 10);
        n = next_token(&s, &tok);
    }
    char m[33];
    if (all_upper(tok, n)) {
        if (n >= sizeof m)
            return ap_err_set(AP_EINVAL, "method too long");
        memcpy(m, tok, n);
        m[n] = '\0';
        method = m;
        n = next_token(&s, &tok);
    }
    if (n == 0)
        return ap_err_set(AP_EINVAL, "no URL");
    char *url = tok;
    if (*s)
        *s++ = '\0';
    while (*s == ' ' || *s == '\t')
        s++;
    size_t blen = strlen(s);
    if (blen == 0)
        return lg_targets_add(ts, base, weight, method, url, headers, nheaders, NULL, 0);
    if (s[0] != '@')
        return lg_targets_add(ts, base, weight, method, url, headers, nheaders, s, blen);
    char *body = read_body_file(path, s + 1, &blen);
    if (body == NULL)
        return -1;
    int rc = lg_targets_add(ts, base, weight, method, url, headers, nheaders, body, blen);
    free(body);
    return rc;
}

/* A header line of a URL file: indented, a header name then ':' (not "://", which
 * would be an indented absolute URL). */
static int is_header_line(const char *line) {
    if (line[0] != ' ' && line[0] != '\t')
        return 0;
    while (*line == ' ' || *line == '\t')
        line++;
    const char *c = line;
    while (is_tchar((unsigned char)*c))
        c++;
    return c > line && *c == ':' && strncmp(c, "://", 3) != 0;
}

/* The URL line read last and the header lines below it, added when the next URL
 * line (or the end of the file) shows that its headers are complete. */
typedef struct pending_url {
    char line[8192];
    int lineno;            /* 0: none */
    char *headers[LG_TARGET_HEADERS_MAX];   /* owned */
    size_t nheaders;
} pending_url;

static void pending_clear(pending_url *p) {
    for (size_t i = 0; i < p->nheaders; i++)
        free(p->headers[i]);
    p->nheaders = 0;
    p->lineno = 0;
}

/* Adds the pending URL, if any.  0, or -1 with the message naming its line. */
static int pending_add(lg_targets *ts, pending_url *p, const char *path, const char *base,
                       const char *method) {
    if (p->lineno == 0)
        return 0;
    int rc = file_line(ts, path, base, method, p->line, (const char *const *)p->headers,
                       p->nheaders);
    if (rc < 0) {
        char msg[AP_ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s", ap_err_msg());
        ap_err_set(ap_err_code(), "%s:%d: %s", path, p->lineno, msg);
    }
    pending_clear(p);
    return rc < 0 ? -1 : 1;
}

int lg_targets_load_file(lg_targets *ts, const char *path, const char *base, const char *method) {
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return ap_err_set(AP_EIO, "%s: %s", path, strerror(errno));
    pending_url *p = calloc(1, sizeof *p);
    if (p == NULL) {
        fclose(f);
        return ap_err_set(AP_ENOMEM, NULL);
    }
    char line[8192];
    int lineno = 0, added = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            rc = ap_err_set(AP_EINVAL, "%s:%d: line longer than %zu bytes", path, lineno,
                            sizeof line - 2);
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
                           line[len - 1] == ' ' || line[len - 1] == '\t'))
            line[--len] = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '\0' || *s == '#')
            continue;
        if (is_header_line(line)) {
            if (p->lineno == 0) {
                rc = ap_err_set(AP_EINVAL, "%s:%d: a header line belongs below a URL line",
                                path, lineno);
                break;
            }
            if (p->nheaders == LG_TARGET_HEADERS_MAX) {
                rc = ap_err_set(AP_EINVAL, "%s:%d: more than %d headers for one URL", path,
                                lineno, LG_TARGET_HEADERS_MAX);
                break;
            }
            if ((p->headers[p->nheaders] = strdup(s)) == NULL) {
                rc = ap_err_set(AP_ENOMEM, NULL);
                break;
            }
            p->nheaders++;
            continue;
        }
        int r = pending_add(ts, p, path, base, method);
        if (r < 0) {
            rc = -1;
            break;
        }
        added += r;
        snprintf(p->line, sizeof p->line, "%s", s);
        p->lineno = lineno;
    }
    if (rc == 0) {
        int r = pending_add(ts, p, path, base, method);
        if (r < 0)
            rc = -1;
        else
            added += r;
    }
    pending_clear(p);
    free(p);
    if (rc == 0 && ferror(f))
        rc = ap_err_set(AP_EIO, "%s: read error", path);
    fclose(f);
    if (rc == 0 && added == 0)
        rc = ap_err_set(AP_EINVAL, "%s: no URL in the file", path);
    return rc < 0 ? -1 : added;
}

/* Each target its own group, named as it. */
static int make_own_groups(lg_targets *ts) {
    ts->groups = calloc(ts->n, sizeof *ts->groups);
    if (ts->groups == NULL)
        return ap_err_set(AP_ENOMEM, NULL);
    for (size_t i = 0; i < ts->n; i++) {
        ts->groups[i] = (lg_group){.name = strdup(ts->items[i].name), .first = (uint32_t)i,
                                   .ntargets = 1};
        ts->ngroups++;
        ts->items[i].group = (uint32_t)i;
        if (ts->groups[i].name == NULL)
            return ap_err_set(AP_ENOMEM, NULL);
    }
    return 0;
}

/* Whether the n bytes at s are an identifier of lg_path_pattern(). */
static int is_identifier(const char *s, size_t n) {
    size_t digits = 0, hex = 0, dashes = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        digits += isdigit(c) != 0;
        hex += isxdigit(c) != 0;
        dashes += c == '-';
    }
    if (n == 0)
        return 0;
    if (digits == n)
        return 1;
    if (n == 36 && dashes == 4 && hex == 32 && s[8] == '-' && s[13] == '-' && s[18] == '-' &&
        s[23] == '-')
        return 1;   /* a UUID */
    return hex == n && n >= 16 && digits > 0;
}

void lg_path_pattern(const char *path, char *out, size_t n) {
    size_t o = 0;
    const char *end = path + strcspn(path, "?#");
    for (const char *p = path; p < end && o + 1 < n;) {
        if (*p == '/') {
            out[o++] = *p++;
            continue;
        }
        size_t len = strcspn(p, "/?#");
        if (p + len > end)
            len = (size_t)(end - p);
        const char *seg = is_identifier(p, len) ? "{id}" : p;
        size_t take = is_identifier(p, len) ? 4 : len;
        if (take > n - 1 - o)
            take = n - 1 - o;
        memcpy(out + o, seg, take);
        o += take;
        p += len;
    }
    out[o] = '\0';
}

/* Order of patterns by count, largest first (ties: first seen first). */
typedef struct pattern_rank {
    uint64_t count;
    uint32_t group;
} pattern_rank;

static int by_count(const void *a, const void *b) {
    const pattern_rank *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return x->group < y->group ? -1 : x->group > y->group;
}

int lg_targets_group(lg_targets *ts, const uint64_t *counts) {
    if (ts->n <= LG_TARGET_MAX)
        return 0;
    ap_map seen = {0};
    lg_group *gs = NULL;
    pattern_rank *rank = NULL;
    size_t ng = 0, cap = 0;
    int rc = 0;
    for (size_t i = 0; i < ts->n && rc == 0; i++) {
        const char *name = ts->items[i].name;
        size_t ml = strcspn(name, " ");
        char pat[1024];
        size_t k = (size_t)snprintf(pat, sizeof pat, "%.*s ", (int)ml, name);
        lg_path_pattern(name + ml + 1, pat + k, sizeof pat - k);
        uint64_t h = ap_hash_bytes(pat, strlen(pat));
        uint64_t *slot;
        /* probe past another pattern with the same hash */
        while ((slot = ap_map_get(&seen, h)) != NULL && strcmp(gs[*slot].name, pat) != 0)
            h++;
        if (slot) {
            ts->items[i].group = (uint32_t)*slot;
            gs[*slot].ntargets++;
            continue;
        }
        if (ng == cap) {
            size_t nc = cap ? 2 * cap : 64;
            lg_group *grown = realloc(gs, nc * sizeof *gs);
            if (grown == NULL) {
                rc = ap_err_set(AP_ENOMEM, NULL);
                break;
            }
            gs = grown;
            cap = nc;
        }
        gs[ng] = (lg_group){.name = strdup(pat), .first = (uint32_t)i, .ntargets = 1};
        if (gs[ng].name == NULL || ap_map_put(&seen, h, ng) != 0) {
            free(gs[ng].name);
            rc = ap_err_set(AP_ENOMEM, NULL);
            break;
        }
        ts->items[i].group = (uint32_t)ng++;
    }
    ap_map_free(&seen);
    if (rc == 0 && ng > LG_TARGET_MAX) {
        /* the LG_TARGET_MAX - 1 most requested patterns keep a row, in their order */
        uint32_t *to = malloc(ng * sizeof *to);
        rank = calloc(ng, sizeof *rank);
        lg_group *kept = calloc(LG_TARGET_MAX, sizeof *kept);
        if (to == NULL || rank == NULL || kept == NULL) {
            free(to);
            free(kept);
            rc = ap_err_set(AP_ENOMEM, NULL);
        } else {
            for (size_t g = 0; g < ng; g++)
                rank[g].group = (uint32_t)g;
            for (size_t i = 0; i < ts->n; i++)
                rank[ts->items[i].group].count += counts[i];
            qsort(rank, ng, sizeof *rank, by_count);
            for (size_t g = 0; g < ng; g++)
                to[g] = UINT32_MAX;   /* to "<other>" */
            for (size_t r = 0; r < LG_TARGET_MAX - 1; r++)
                to[rank[r].group] = 0;   /* kept; numbered in order below */
            size_t nk = 0;
            for (size_t g = 0; g < ng; g++) {
                if (to[g] == UINT32_MAX) {
                    free(gs[g].name);
                    continue;
                }
                kept[nk] = gs[g];
                kept[nk].ntargets = 0;
                to[g] = (uint32_t)nk++;
            }
            for (size_t g = 0; g < ng; g++)
                if (to[g] == UINT32_MAX)
                    to[g] = (uint32_t)nk;
            kept[nk] = (lg_group){.name = strdup("<other>"), .first = UINT32_MAX};
            for (size_t i = 0; i < ts->n; i++) {
                lg_group *g = &kept[to[ts->items[i].group]];
                ts->items[i].group = to[ts->items[i].group];
                if (g->first == UINT32_MAX)
                    g->first = (uint32_t)i;
                g->ntargets++;
            }
            free(gs);
            free(to);
            gs = kept;
            ng = nk + 1;
            if (kept[nk].name == NULL)
                rc = ap_err_set(AP_ENOMEM, NULL);
        }
    }
    free(rank);
    ts->groups = gs;
    ts->ngroups = ng;
    ts->grouped = 1;
    return rc < 0 ? -1 : 0;
}

int lg_targets_finish(lg_targets *ts) {
    if (ts->n == 0)
        return ap_err_set(AP_EINVAL, "no URL given");
    /* host and port back out of the origin "http://host:port" */
    const char *hp = ts->origin + 7;
    const char *colon = strrchr(hp, ':');
    char host[512];
    snprintf(host, sizeof host, "%.*s", (int)(colon - hp), hp);
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int gai = getaddrinfo(host, colon + 1, &hints, &res);
    if (gai != 0)
        return ap_err_set(AP_ENOTFOUND, "cannot resolve %s: %s", host, gai_strerror(gai));
    memcpy(&ts->addr, res->ai_addr, res->ai_addrlen);
    ts->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    if (!ts->grouped && make_own_groups(ts) < 0)
        return -1;
    for (size_t g = 0; g < ts->ngroups; g++)
        ts->groups[g].weight = 0;
    size_t total = 0;
    for (size_t i = 0; i < ts->n; i++) {
        total += ts->items[i].weight;
        ts->groups[ts->items[i].group].weight += ts->items[i].weight;
    }
    free(ts->schedule);
    ts->schedule = malloc(total * sizeof *ts->schedule);
    if (ts->schedule == NULL)
        return ap_err_set(AP_ENOMEM, NULL);
    ts->schedule_len = total;
    if (ts->n > LG_TARGET_MAX) {
        /* Many targets (a replayed log): each `weight` times, shuffled with a fixed
         * seed, so that every sum(weights) requests hold each exactly `weight` times. */
        size_t slot = 0;
        for (size_t i = 0; i < ts->n; i++)
            for (unsigned k = 0; k < ts->items[i].weight; k++)
                ts->schedule[slot++] = (uint32_t)i;
        uint64_t x = 0x9e3779b97f4a7c15u;
        for (size_t i = total - 1; i > 0; i--) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t j = (size_t)(x % (i + 1));
            uint32_t tmp = ts->schedule[i];
            ts->schedule[i] = ts->schedule[j];
            ts->schedule[j] = tmp;
        }
        return 0;
    }
    /* Smooth weighted round robin: each slot goes to the target with the
     * largest running credit, so every window of sum(weights) requests holds
     * each URL exactly `weight` times, spread out rather than in runs. */
    long *credit = calloc(ts->n, sizeof *credit);
    if (credit == NULL)
        return ap_err_set(AP_ENOMEM, NULL);
    for (size_t slot = 0; slot < total; slot++) {
        size_t best = 0;
        for (size_t i = 0; i < ts->n; i++) {
            credit[i] += ts->items[i].weight;
            if (credit[i] > credit[best])
                best = i;
        }
        credit[best] -= (long)total;
        ts->schedule[slot] = (uint32_t)best;
    }
    free(credit);
    return 0;
}
