/* lg_replay.h -- access logs read for replay: uvicorn, Common/Combined Log Format and JSON lines, turned into targets and a timed plan. */
#ifndef LG_REPLAY_H
#define LG_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "lg_target.h"

/* Longest line read; a longer one is counted as malformed and skipped. */
#define LG_REPLAY_LINE_MAX 65536
/* Longest method token. */
#define LG_REPLAY_METHOD_MAX 16
/* Most rules of a bodies file. */
#define LG_REPLAY_BODIES_MAX 256

/* One request read from a log line. */
typedef struct lg_replay_req {
    char method[LG_REPLAY_METHOD_MAX + 1];
    const char *path;   /* decoded request target, NUL-terminated, in the caller's buffer */
    size_t path_len;
    int status;         /* the logged status, 0 when the line has none */
    int has_time;       /* time_ns is set */
    int64_t time_ns;    /* when the request was logged, ns since the epoch (UTC) */
} lg_replay_req;

/* Parse one line (no line end) of any supported format, told apart per line:
 * a line starting with '{' is a JSON object with "method", "path" (or "url",
 * "uri"), "status" and "time" (epoch seconds, or an ISO 8601 string; or
 * "timestamp", "ts"); a line whose request is in brackets-then-quotes is the
 * Common or Combined Log Format ('host ident user [10/Oct/2000:13:55:36 -0700]
 * "GET /p HTTP/1.1" 200 2326 ...'); any other line holding '"METHOD TARGET
 * HTTP/x.y" STATUS' is a uvicorn access line, with the time taken from a
 * leading ISO 8601 date and time when the logging format puts one there.
 * Escapes in the quoted request (\" \\ \xHH, as nginx writes them) are
 * decoded.  The path is written to buf (cap bytes, at least len + 1).
 * Returns 0; for a malformed line returns -1 with AP_EINVAL and a message
 * saying what is wrong. */
int lg_replay_parse_line(const char *line, size_t len, lg_replay_req *req, char *buf,
                         size_t cap);

/* A request body for requests that match a rule of the bodies file. */
typedef struct lg_replay_body {
    char *method;         /* upper-case method, or "*" (owned) */
    char *pattern;        /* fnmatch(3) pattern over the path, query included (owned) */
    char *body;           /* owned */
    size_t body_len;
    char *content_type;   /* "Content-Type: ..." header line, or NULL (owned) */
} lg_replay_body;

typedef struct lg_replay_bodies {
    lg_replay_body items[LG_REPLAY_BODIES_MAX];
    size_t n;
} lg_replay_bodies;

/* Read a bodies file: a JSON array of objects {"method": "POST", "path":
 * "/orders*", "body": "...", "content_type": "application/json"} ("method"
 * and "content_type" optional; the first rule that matches wins).  Returns
 * 0; on error (unreadable file, not such an array, too many rules, out of
 * memory) returns -1 with AP_EIO, AP_EINVAL or AP_ENOMEM and a message. */
int lg_replay_bodies_load(lg_replay_bodies *b, const char *path);

/* Release what a bodies set owns.  Can't fail. */
void lg_replay_bodies_free(lg_replay_bodies *b);

/* What reading a log found. */
typedef struct lg_replay_stats {
    uint64_t lines;          /* lines read, blank ones excluded */
    uint64_t used;           /* requests in the plan */
    uint64_t malformed;      /* lines no format could read (and lines over LG_REPLAY_LINE_MAX) */
    uint64_t unsendable;     /* read, but the request could not be built (bad target) */
    uint64_t over_targets;   /* a new method and path beyond LG_TARGET_REPLAY_MAX distinct ones */
    uint64_t untimed;        /* used lines without a time */
    uint64_t first_bad_line; /* line number of the first malformed or unsendable line, 0: none */
    char first_bad[160];     /* why it was bad */
} lg_replay_stats;

/* The requests of a log in order of their time. */
typedef struct lg_replay_plan {
    uint64_t *offset_ns;   /* time since the first request (owned); all 0 when untimed */
    uint32_t *target;      /* target index of each request (owned) */
    size_t n;
    int timed;             /* every request has a time: the plan can be replayed in time */
    double span_s;         /* last offset, seconds */
    lg_replay_stats stats;
} lg_replay_plan;

/* Read the log at path: every good line becomes a request of the plan and its
 * method and path a target of ts (added with lg_targets_add under base, one
 * per distinct method and path, weighted by its count, with its body and
 * Content-Type from bodies when a rule matches; bodies may be NULL; more than
 * LG_TARGET_MAX of them are grouped by lg_targets_group()).  Bad
 * lines are counted in plan->stats, never an error.  Call lg_targets_finish()
 * afterwards.  Returns 0; on error (unreadable file, no usable line, out of
 * memory) returns -1 with AP_EIO, AP_EINVAL or AP_ENOMEM and a message, and
 * the plan holds nothing to free. */
int lg_replay_load(const char *path, lg_targets *ts, const char *base,
                   const lg_replay_bodies *bodies, lg_replay_plan *plan);

/* Release what a plan owns.  Can't fail. */
void lg_replay_plan_free(lg_replay_plan *plan);

#endif /* LG_REPLAY_H */
