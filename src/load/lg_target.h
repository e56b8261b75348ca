/* lg_target.h -- what apiprof-load sends: URLs with weights, one origin, requests built once. */
#ifndef LG_TARGET_H
#define LG_TARGET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Most URLs (lines of a URL file) one run accepts, and most rows (groups) of a report. */
#define LG_TARGET_MAX 256
/* Most distinct requests of a replayed log (lg_targets.max). */
#define LG_TARGET_REPLAY_MAX 200000
/* Largest weight of one URL. */
#define LG_TARGET_WEIGHT_MAX 10000
/* Most -H headers, and most headers of one URL of a URL file. */
#define LG_TARGET_HEADERS_MAX 64

/* One URL to request: the bytes of its request, built once and sent as is. */
typedef struct lg_target {
    char *name;            /* "METHOD /path?query", the row label of the report (owned) */
    char *url;             /* the URL as given, absolute (owned) */
    char *request;         /* the whole HTTP/1.1 request, headers and body (owned) */
    size_t request_len;
    unsigned weight;       /* relative share of the requests, 1..LG_TARGET_WEIGHT_MAX */
    int head;              /* method is HEAD: responses have no body */
    uint32_t group;        /* its row of the report: index in lg_targets.groups */
} lg_target;

/* A row of the report: the targets counted together.  Each target is its own group,
 * unless a replayed log has more than LG_TARGET_MAX distinct requests: then targets are
 * grouped by the pattern of their path (lg_targets_group()). */
typedef struct lg_group {
    char *name;            /* a target's name, or "METHOD /pattern" (owned) */
    uint32_t first;        /* its first target, whose URL stands for the row */
    uint32_t ntargets;     /* distinct requests in it */
    unsigned weight;       /* sum of their weights */
} lg_group;

/* Every URL of a run shares one origin (scheme http, host, port), so any
 * connection can carry any of them. */
typedef struct lg_targets {
    lg_target *items;      /* n entries (owned) */
    size_t n;
    size_t max;            /* most targets lg_targets_add() takes; 0: LG_TARGET_MAX */
    lg_group *groups;      /* ngroups entries, set by lg_targets_finish() (owned) */
    size_t ngroups;
    int grouped;           /* 1: lg_targets_group() grouped targets by pattern */
    char *origin;          /* "http://host:port" (owned) */
    char *host_header;     /* value of the Host header (owned) */
    struct sockaddr_storage addr;   /* resolved address of the origin */
    socklen_t addrlen;
    uint32_t *schedule;    /* smooth weighted round robin: target index per slot (owned) */
    size_t schedule_len;   /* sum of the weights */
    /* request parts shared by every URL, set before lg_targets_add() */
    const char *headers[LG_TARGET_HEADERS_MAX];   /* "Name: value", borrowed */
    size_t nheaders;
} lg_targets;

/* Empty set, no URL.  Can't fail. */
void lg_targets_init(lg_targets *ts);

/* Release everything lg_targets owns; the set is empty again.  Can't fail. */
void lg_targets_free(lg_targets *ts);

/* The whole file at path, malloc'd (NUL-terminated beyond *len for text readers), at most
 * max bytes.  Returns the buffer; NULL with AP_EIO (cannot open or read: the message names
 * the path and errno's text, or says it is larger than max) or AP_ENOMEM. */
char *lg_read_file(const char *path, size_t max, size_t *len);

/* Record a header "Name: value" sent with every request (borrowed: it must
 * outlive ts).  Call before lg_targets_add().  Returns 0; on error (no colon,
 * empty or invalid name, CR or LF inside, too many headers, a Host or
 * Content-Length header) returns -1 with AP_EINVAL and a message. */
int lg_targets_header(lg_targets *ts, const char *header);

/* Add one URL and build its request.  url is absolute ("http://host[:port]/path")
 * or a path starting with '/', which is joined to base (NULL when there is
 * none).  method is an upper-case token (NULL means GET).  headers are this
 * URL's own "Name: value" headers (nheaders of them, may be 0; checked as
 * lg_targets_header() checks, copied): one replaces a -H header of the same
 * name.  body may be NULL; with a body the request gets Content-Length and,
 * unless a header set it, "Content-Type: application/json".  Returns 0; on
 * error (bad URL, https, an origin different from the first URL's, bad weight,
 * method or header, too many URLs, out of memory) returns -1 with AP_EINVAL or
 * AP_ENOMEM and a message. */
int lg_targets_add(lg_targets *ts, const char *base, unsigned weight, const char *method,
                   const char *url, const char *const *headers, size_t nheaders,
                   const char *body, size_t body_len);

/* Read a URL file (format in docs/load.md): one URL per line,
 * "[WEIGHT] [METHOD] URL [BODY]", where BODY is the rest of the line, or
 * "@file" for a file's contents (relative to the URL file's directory); an
 * indented "Name: value" line below a URL is a header of that URL; blank
 * lines and lines starting with '#' are skipped.  Returns the number of URLs
 * added (>= 1); on error returns -1 with AP_EIO, AP_EINVAL or AP_ENOMEM and a
 * message that names the file and the line. */
int lg_targets_load_file(lg_targets *ts, const char *path, const char *base, const char *method);

/* The pattern of a path, as grouping uses it, into out (size n, NUL-terminated, cut to
 * fit): the query is dropped and every segment that is an identifier (digits only, a
 * UUID, or 16 or more hex digits with at least one digit) becomes "{id}".  Can't fail. */
void lg_path_pattern(const char *path, char *out, size_t n);

/* With more than LG_TARGET_MAX targets, group them by method and lg_path_pattern();
 * with more than LG_TARGET_MAX patterns, the LG_TARGET_MAX - 1 with the largest
 * counts (counts[i]: requests of target i) keep a row and the others share the row
 * "<other>".  With fewer targets nothing is done (each is its own group).  Call before
 * lg_targets_finish().  Returns 0; -1 with AP_ENOMEM. */
int lg_targets_group(lg_targets *ts, const uint64_t *counts);

/* Resolve the origin's address, make the groups (each target its own, unless
 * lg_targets_group() made them) and build the weighted schedule; call once after
 * the last lg_targets_add().  Returns 0; on error (no URL, name resolution
 * failed, out of memory) returns -1 with AP_EINVAL, AP_ENOTFOUND or AP_ENOMEM. */
int lg_targets_finish(lg_targets *ts);

#endif /* LG_TARGET_H */
