/* ap_wait.c -- wait kinds: names, the metric of each kind, and the one table of rules that decides a wait's kind from what its time was spent in. */
#include "ap_wait.h"

#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_map.h"
#include "ap_metric.h"

static const struct {
    const char *name;
    unsigned metric;
} kinds_tab[AP_WAIT_COUNT] = {
    [AP_WAIT_NETWORK] = {"network", AP_M_WAIT_NET_NS},
    [AP_WAIT_DATABASE] = {"database", AP_M_WAIT_DB_NS},
    [AP_WAIT_FILE] = {"file", AP_M_WAIT_FILE_NS},
    [AP_WAIT_SLEEP] = {"sleep", AP_M_WAIT_SLEEP_NS},
    [AP_WAIT_SUBPROCESS] = {"subprocess", AP_M_WAIT_SUBPROC_NS},
    [AP_WAIT_LOCK] = {"lock", AP_M_WAIT_LOCK_NS},
    [AP_WAIT_GIL] = {"gil", AP_M_WAIT_GIL_NS},
    [AP_WAIT_THREAD_POOL] = {"thread_pool", AP_M_WAIT_POOL_NS},
    [AP_WAIT_IDLE] = {"idle", AP_M_WAIT_IDLE_NS},
};

const char *ap_wait_name(unsigned k) {
    return k < AP_WAIT_COUNT ? kinds_tab[k].name : NULL;
}

unsigned ap_wait_metric(unsigned k) {
    return k < AP_WAIT_COUNT ? kinds_tab[k].metric : AP_M_COUNT;
}

unsigned ap_wait_of_metric(unsigned m) {
    unsigned k = 0;
    while (k < AP_WAIT_COUNT && kinds_tab[k].metric != m)
        k++;
    return k;
}

unsigned ap_wait_by_name(const char *name) {
    unsigned k = 0;
    while (k < AP_WAIT_COUNT && strcmp(kinds_tab[k].name, name) != 0)
        k++;
    return k;
}

/* ---- the table ---------------------------------------------------------------------
 * Within each node, the first row that matches wins; user rows come before
 * these.  docs/waits.md lists this table: keep the two alike. */
#define CALL(k, f, file, parent) {AP_WAIT_##k, 0, f, file, parent, 0, 0}
#define WITHIN(k, f, file, parent) {AP_WAIT_##k, 1, f, file, parent, 0, 0}
#define STATEMENT(f) {AP_WAIT_DATABASE, 0, f, NULL, NULL, 1, 0}
#define HIDDEN(k, f, file) {AP_WAIT_##k, 0, f, file, NULL, 0, 1}
/* a row that names no kind: the frame's time is no wait of any kind */
#define NOT_A_WAIT(f, file, parent) {AP_WAIT_COUNT, 0, f, file, parent, 0, 0}

static const ap_wait_rule builtin[] = {
    /* the tracer's GIL waits (cpu=True): first, so that the file they carry (the
     * waiting function's, a driver's too) meets no "within" row; a GIL wait is one
     * wherever it happens */
    CALL(GIL, "<gil wait>", NULL, NULL),
    /* database statements: the DB-API cursors and connections of the common
     * drivers and the ORM calls above them (the N+1 finding counts these) */
    STATEMENT("sqlite3.Connection.execute"),
    STATEMENT("sqlite3.Cursor.execute"),
    STATEMENT("sqlite3.Connection.executemany"),
    STATEMENT("sqlite3.Cursor.executemany"),
    STATEMENT("Cursor.execute"),
    STATEMENT("Cursor.executemany"),
    STATEMENT("AsyncCursor.execute"),
    STATEMENT("Connection.fetch"),
    STATEMENT("Connection.fetchrow"),
    STATEMENT("Connection.fetchval"),
    STATEMENT("Connection.execute"),
    STATEMENT("Session.execute"),
    STATEMENT("AsyncSession.execute"),
    STATEMENT("Session.get"),
    STATEMENT("AsyncSession.get"),
    STATEMENT("Query.first"),
    STATEMENT("Query.all"),
    STATEMENT("Query.one"),
    /* idle: waiting for work to arrive, not for work asked for */
    WITHIN(IDLE, "Queue.get", NULL, "WorkerThread.run"), /* anyio's worker threads */
    WITHIN(IDLE, "_queue.SimpleQueue.get", NULL, "_worker"), /* concurrent.futures */
    WITHIN(IDLE, "SimpleQueue.get", NULL, "_worker"),
    /* thread-pool queueing: anyio's pool (sync routes and dependencies,
     * run_in_threadpool, to_thread.run_sync) lends a thread only with one of
     * its limiter's tokens; with all taken, the call waits in this event for
     * one (not in the limiter's checkpoints, a sleep(0) each) */
    WITHIN(THREAD_POOL, "Event.wait", "asyncio/locks.py", "CapacityLimiter.acquire*"),
    /* psycopg's sync wait: its C wait_c is a Cython function, which Python
     * 3.11's profiler does not report, so the wait is the caller's own time */
    HIDDEN(DATABASE, "Connection.wait", "/psycopg/connection.py"),
    /* database drivers and the ORMs above them: whatever they wait in */
    WITHIN(DATABASE, "*", "/psycopg/", NULL),
    WITHIN(DATABASE, "*", "/psycopg2/", NULL),
    WITHIN(DATABASE, "*", "/asyncpg/", NULL),
    WITHIN(DATABASE, "*", "/aiosqlite/", NULL),
    WITHIN(DATABASE, "*", "/pymysql/", NULL),
    WITHIN(DATABASE, "*", "/aiomysql/", NULL),
    WITHIN(DATABASE, "*", "/sqlalchemy/", NULL),
    CALL(DATABASE, "sqlite3.*", NULL, NULL),
    CALL(DATABASE, "_sqlite3.*", NULL, NULL),
    CALL(DATABASE, "psycopg_binary.*", NULL, NULL),
    CALL(DATABASE, "psycopg_c.*", NULL, NULL),
    CALL(DATABASE, "psycopg2.*", NULL, NULL),
    CALL(DATABASE, "psycopg2.extensions.*", NULL, NULL),
    /* HTTP clients: their sockets and selectors are the network */
    WITHIN(NETWORK, "*", "/httpx/", NULL),
    WITHIN(NETWORK, "*", "/httpcore/", NULL),
    WITHIN(NETWORK, "*", "/aiohttp/", NULL),
    WITHIN(NETWORK, "*", "/requests/", NULL),
    WITHIN(NETWORK, "*", "/urllib3/", NULL),
    WITHIN(NETWORK, "*", "/http/client.py", NULL),
    /* subprocesses (subprocess.py and asyncio/subprocess.py) */
    WITHIN(SUBPROCESS, "*", "/subprocess.py", NULL),
    WITHIN(SUBPROCESS, "*", "asyncio/base_subprocess.py", NULL),
    CALL(SUBPROCESS, "posix.waitpid", NULL, NULL),
    CALL(SUBPROCESS, "posix.waitid", NULL, NULL),
    CALL(SUBPROCESS, "posix.wait*", NULL, NULL),
    /* sleeping; not anyio's checkpoints, whose sleep(0) only lets the loop
     * run the other tasks once (what they run is theirs, not a sleep) */
    NOT_A_WAIT("sleep", "asyncio/tasks.py", "*checkpoint*"),
    CALL(SLEEP, "time.sleep", NULL, NULL),
    CALL(SLEEP, "sleep", "asyncio/tasks.py", NULL),
    CALL(SLEEP, "sleep*", "/anyio/", NULL),
    /* sockets and streams */
    CALL(NETWORK, "*socket.recv*", NULL, NULL),
    CALL(NETWORK, "*socket.send*", NULL, NULL),
    CALL(NETWORK, "*socket.connect*", NULL, NULL),
    CALL(NETWORK, "*socket.accept", NULL, NULL),
    CALL(NETWORK, "_ssl._SSLSocket.*", NULL, NULL),
    CALL(NETWORK, "_socket.getaddrinfo", NULL, NULL),
    CALL(NETWORK, "_socket.gethostbyname*", NULL, NULL),
    CALL(NETWORK, "StreamReader.*", "asyncio/streams.py", NULL),
    CALL(NETWORK, "StreamWriter.drain", "asyncio/streams.py", NULL),
    CALL(NETWORK, "*.sock_*", "asyncio/", NULL),
    CALL(NETWORK, "*.create_connection", "asyncio/", NULL),
    CALL(NETWORK, "*.getaddrinfo", "asyncio/", NULL),
    CALL(NETWORK, "open_connection", "asyncio/streams.py", NULL),
    CALL(NETWORK, "SocketStream.*", "/anyio/", NULL),
    CALL(NETWORK, "connect_tcp", "/anyio/", NULL),
    /* files */
    CALL(FILE, "_io.open", NULL, NULL),
    CALL(FILE, "io.open", NULL, NULL),
    CALL(FILE, "_io.FileIO.*", NULL, NULL),
    CALL(FILE, "_io.Buffered*", NULL, NULL),
    CALL(FILE, "_io.TextIOWrapper.*", NULL, NULL),
    CALL(FILE, "posix.read", NULL, NULL),
    CALL(FILE, "posix.write", NULL, NULL),
    CALL(FILE, "posix.fsync", NULL, NULL),
    CALL(FILE, "posix.stat", NULL, NULL),
    CALL(FILE, "posix.scandir", NULL, NULL),
    CALL(FILE, "posix.listdir", NULL, NULL),
    WITHIN(FILE, "*", "/aiofiles/", NULL),
    /* locks taken explicitly, and the producers' synthetic lock waits */
    CALL(LOCK, "_thread.lock.acquire*", NULL, NULL),
    CALL(LOCK, "_thread.RLock.acquire*", NULL, NULL),
    CALL(LOCK, "Lock.acquire", "asyncio/locks.py", NULL),
    CALL(LOCK, "Semaphore.acquire", "asyncio/locks.py", NULL),
    CALL(LOCK, "Condition.wait", "asyncio/locks.py", NULL),
    CALL(LOCK, "<lock wait>", NULL, NULL), /* the tracer's timed `with lock:` waits */
    /* an event loop's selector with nothing to do */
    CALL(IDLE, "select.epoll.poll", NULL, NULL),
    CALL(IDLE, "select.poll.poll", NULL, NULL),
    CALL(IDLE, "select.select", NULL, NULL),
    CALL(IDLE, "select.kqueue.control", NULL, NULL),
    CALL(IDLE, "select.devpoll.poll", NULL, NULL),
};

const ap_wait_rule *ap_wait_rules(size_t *n) {
    *n = sizeof builtin / sizeof builtin[0];
    return builtin;
}

static int row_matches(const ap_prof *p, const ap_wait_rule *w, ap_frame_id f, ap_frame_id parent);

int ap_wait_statement(const ap_prof *p, ap_frame_id f) {
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        if (builtin[i].statement && row_matches(p, &builtin[i], f, 0))
            return 1;
    return 0;
}

int ap_wait_match(const char *pat, const char *s) {
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*pat == '*') {
            star = pat++;
            resume = s;
        } else if (*pat == *s) {
            pat++;
            s++;
        } else if (star != NULL) {
            pat = star + 1;
            s = ++resume;
        } else {
            return 0;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

int ap_wait_library_file(const char *file) {
    return strstr(file, "/site-packages/") != NULL || strstr(file, "/dist-packages/") != NULL ||
           strncmp(file, "<frozen ", 8) == 0 || strstr(file, "/lib/python3.") != NULL;
}

int ap_wait_generated_file(const char *file) {
    return file[0] == '<' && strncmp(file, "<frozen ", 8) != 0;
}

/* ---- user rows ---------------------------------------------------------------------- */

typedef struct rules {
    ap_wait_rule *user;
    size_t nuser;
    char *text; /* the parsed copy user's strings point into */
    ap_map seen; /* (frame << 32 | parent frame) -> the row that names it, or NO_ROW:
                    a timeline asks the same pairs a million times */
} rules;

#define NO_ROW 1u /* no row names the pair (rows are aligned: no row is at address 1) */

static void rules_free(rules *r) {
    free(r->user);
    free(r->text);
    ap_map_free(&r->seen);
}

/* Parse "KIND:[within:]PATTERN[@FILE][<PARENT]" rows separated by ';'. */
static int rules_parse(const char *spec, rules *r) {
    memset(r, 0, sizeof *r);
    if (spec == NULL || spec[0] == '\0')
        return 0;
    size_t len = strlen(spec), cap = 1;
    for (size_t i = 0; i < len; i++)
        cap += spec[i] == ';';
    r->text = malloc(len + 1);
    r->user = calloc(cap, sizeof *r->user);
    if (r->text == NULL || r->user == NULL) {
        rules_free(r);
        return ap_err_set(AP_ENOMEM, "waits: out of memory");
    }
    memcpy(r->text, spec, len + 1);
    char *save = NULL;
    for (char *row = strtok_r(r->text, ";", &save); row != NULL;
         row = strtok_r(NULL, ";", &save)) {
        char *colon = strchr(row, ':');
        if (colon == NULL)
            goto bad;
        *colon = '\0';
        ap_wait_rule *w = &r->user[r->nuser];
        w->kind = ap_wait_by_name(row);
        char *pat = colon + 1;
        if (strncmp(pat, "within:", 7) == 0) {
            w->within = 1;
            pat += 7;
        }
        char *lt = strchr(pat, '<');
        if (lt != NULL) {
            *lt = '\0';
            w->parent = lt + 1;
        }
        char *at = strchr(pat, '@');
        if (at != NULL) {
            *at = '\0';
            w->file = at + 1;
        }
        w->frame = pat;
        /* gil is measured (the tracer's <gil wait> frames), not a user's to rule */
        if (w->kind >= AP_WAIT_COUNT || w->kind == AP_WAIT_GIL || pat[0] == '\0')
            goto bad;
        r->nuser++;
    }
    return 0;
bad:
    rules_free(r);
    return ap_err_set(AP_EINVAL, "waits: a wait rule must read KIND:[within:]PATTERN[@FILE][<PARENT] "
                                 "with KIND one of network, database, file, sleep, subprocess, "
                                 "lock, idle, thread_pool: %s",
                      spec);
}

/* ---- classifying -------------------------------------------------------------------- */

static int row_matches(const ap_prof *p, const ap_wait_rule *w, ap_frame_id f, ap_frame_id parent) {
    const ap_frame *fr = ap_prof_frame(p, f);
    if (fr == NULL || !ap_wait_match(w->frame, ap_prof_frame_qualname(p, f)))
        return 0;
    if (w->file != NULL && strstr(ap_prof_str(p, fr->file), w->file) == NULL)
        return 0;
    return w->parent == NULL || (parent != 0 && ap_wait_match(w->parent, ap_prof_frame_qualname(p, parent)));
}

static const ap_wait_rule *row_scan(const ap_prof *p, const rules *r, ap_frame_id f,
                                    ap_frame_id parent) {
    for (size_t i = 0; i < r->nuser; i++)
        if (row_matches(p, &r->user[i], f, parent))
            return &r->user[i];
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        if (row_matches(p, &builtin[i], f, parent))
            return &builtin[i];
    return NULL;
}

/* The first row (user ones first) that names frame f under parent, or NULL;
 * remembered per pair (a failed allocation only forgets it). */
static const ap_wait_rule *row_of(const ap_prof *p, rules *r, ap_frame_id f, ap_frame_id parent) {
    uint64_t key = (uint64_t)f << 32 | parent, *v = ap_map_get(&r->seen, key);
    if (v != NULL)
        return *v == NO_ROW ? NULL : (const ap_wait_rule *)(uintptr_t)*v;
    const ap_wait_rule *w = row_scan(p, r, f, parent);
    ap_map_put(&r->seen, key, w != NULL ? (uint64_t)(uintptr_t)w : NO_ROW);
    return w;
}

static int user_frame(const ap_prof *p, ap_frame_id f) {
    const ap_frame *fr = ap_prof_frame(p, f);
    if (fr == NULL || fr->kind != AP_FRAME_PYTHON)
        return 0;
    const char *file = ap_prof_str(p, fr->file);
    return !ap_wait_library_file(file) && !ap_wait_generated_file(file);
}

/* A C call of these kinds means what the code around it waits for (a
 * socket under psycopg is the database, a selector under urllib3 the
 * network, a lock under a worker's queue idleness); a file read, a sleep, a
 * database or subprocess call means itself wherever it is made. */
static int generic(unsigned k) {
    return k == AP_WAIT_NETWORK || k == AP_WAIT_IDLE || k == AP_WAIT_LOCK;
}

/* What resolve() walks up from a waiting node or span: a tree's nodes, or a
 * forest of nested spans given as frames and parent indices (AP_NONE: none). */
typedef struct chain {
    const ap_tree *t;         /* a tree, or NULL for the arrays below */
    const ap_frame_id *frame;
    const uint32_t *parent;
} chain;

static ap_frame_id chain_frame(const chain *c, uint32_t i) {
    return c->t != NULL ? ap_tree_node(c->t, i)->frame : c->frame[i];
}

static uint32_t chain_parent(const chain *c, uint32_t i) {
    return c->t != NULL ? ap_tree_node(c->t, i)->parent : c->parent[i];
}

/* The frame of i's parent, 0 (the root's) when it has none. */
static ap_frame_id chain_parent_frame(const chain *c, uint32_t i) {
    uint32_t up = chain_parent(c, i);
    return up == AP_NONE ? 0 : chain_frame(c, up);
}

/* The kind of the own wait of node or span i (the rule at the top of
 * ap_wait.h), given the row that names it itself (may be NULL for an await
 * sink). */
static unsigned resolve(const ap_prof *p, rules *r, const chain *c, uint32_t i,
                        const ap_wait_rule *own) {
    unsigned call = own != NULL && !own->within ? own->kind : AP_WAIT_COUNT;
    if (own != NULL && (own->within || !generic(own->kind)))
        return own->kind;
    int is_await = ap_prof_frame(p, chain_frame(c, i))->kind == AP_FRAME_PYTHON;
    for (uint32_t a = i; a != AP_NONE && chain_frame(c, a) != 0; a = chain_parent(c, a)) {
        ap_frame_id f = chain_frame(c, a);
        if (a != i) {
            const ap_wait_rule *w = row_of(p, r, f, chain_parent_frame(c, a));
            if (w != NULL && w->within)
                return w->kind;
            if (w != NULL && call == AP_WAIT_COUNT && is_await)
                call = w->kind;
        }
        if (user_frame(p, f))
            break;
    }
    return call;
}

static uint64_t own_await(const ap_node *n) {
    uint64_t below = 0;
    for (const ap_node *c = ap_node_first_child(n); c != NULL; c = ap_node_next_sibling(c))
        below += c->m[AP_M_AWAIT_NS];
    return n->m[AP_M_AWAIT_NS] > below ? n->m[AP_M_AWAIT_NS] - below : 0;
}

static int kinds_of(const ap_prof *p, rules *r, const ap_tree *t, uint8_t *kinds) {
    size_t n = ap_tree_nnodes(t);
    chain c = {t, NULL, NULL};
    kinds[0] = AP_WAIT_COUNT;
    for (size_t i = 1; i < n; i++) {
        const ap_node *node = ap_tree_node(t, (ap_node_id)i);
        const ap_wait_rule *own = row_of(p, r, node->frame, ap_tree_node(t, node->parent)->frame);
        int python = ap_prof_frame(p, node->frame)->kind == AP_FRAME_PYTHON;
        if (own == NULL && !(python && own_await(node) > 0))
            kinds[i] = AP_WAIT_COUNT;
        else
            kinds[i] = (uint8_t)resolve(p, r, &c, (uint32_t)i, own);
    }
    return 0;
}

int ap_wait_node_kinds(const ap_prof *p, const ap_tree *t, uint8_t *kinds) {
    rules r;
    if (rules_parse(ap_prof_meta_get(p, "wait_rules"), &r) != 0)
        return -1;
    int rc = kinds_of(p, &r, t, kinds);
    rules_free(&r);
    return rc;
}

int ap_wait_span_kinds(const ap_prof *p, const ap_frame_id *frame, const uint32_t *parent,
                       size_t n, uint8_t *kinds) {
    rules r;
    if (rules_parse(ap_prof_meta_get(p, "wait_rules"), &r) != 0)
        return -1;
    chain c = {NULL, frame, parent};
    for (size_t i = 0; i < n; i++) {
        const ap_frame *f = ap_prof_frame(p, frame[i]);
        const ap_wait_rule *own = row_of(p, &r, frame[i], chain_parent_frame(&c, (uint32_t)i));
        /* A Python frame's span is a step that ran; only a hidden row makes its time a wait. */
        if (own == NULL || f == NULL || (f->kind == AP_FRAME_PYTHON && !own->hidden))
            kinds[i] = AP_WAIT_COUNT;
        else
            kinds[i] = (uint8_t)resolve(p, &r, &c, (uint32_t)i, own);
    }
    rules_free(&r);
    return 0;
}

int ap_wait_classify(ap_prof *p) {
    rules r;
    if (rules_parse(ap_prof_meta_get(p, "wait_rules"), &r) != 0)
        return -1;
    uint8_t *kinds = NULL;
    uint64_t *awk = NULL; /* per node and kind: awaited time, own and below */
    size_t cap = 0;
    int rc = 0;
    for (size_t ti = 0; rc == 0 && ti < ap_prof_ntrees(p); ti++) {
        ap_tree *t = ap_prof_tree_at(p, ti);
        size_t n = ap_tree_nnodes(t);
        if (n > cap) {
            free(kinds);
            free(awk);
            kinds = malloc(n);
            awk = malloc(n * AP_WAIT_COUNT * sizeof *awk);
            if (kinds == NULL || awk == NULL) {
                rc = ap_err_set(AP_ENOMEM, "waits: out of memory");
                break;
            }
            cap = n;
        }
        memset(awk, 0, n * AP_WAIT_COUNT * sizeof *awk);
        kinds_of(p, &r, t, kinds);
        /* Own waits: a C call's into its metric, an await sink's into awk. */
        for (size_t i = 1; i < n; i++) {
            ap_node *node = (ap_node *)ap_tree_node(t, (ap_node_id)i);
            for (unsigned k = 0; k < AP_WAIT_COUNT; k++)
                node->m[kinds_tab[k].metric] = 0;
            unsigned k = kinds[i];
            if (k >= AP_WAIT_COUNT)
                continue;
            if (ap_prof_frame(p, node->frame)->kind == AP_FRAME_PYTHON) {
                const ap_wait_rule *own =
                    row_of(p, &r, node->frame, ap_tree_node(t, node->parent)->frame);
                if (own != NULL && own->hidden)
                    node->m[kinds_tab[k].metric] = node->m[AP_M_SELF_NS];
                awk[i * AP_WAIT_COUNT + k] = own_await(node);
            }
            else
                node->m[kinds_tab[k].metric] = node->m[AP_M_SELF_NS];
        }
        /* Up into the ancestors below the root (children have larger ids than
         * their parents).  A frame's awaited waits cannot exceed its await
         * time: an async generator suspended at a yield while its consumer
         * runs has await time that is no wait of the consumer's, so what comes
         * up from below is scaled down to the frame's await. */
        for (size_t i = n; i-- > 1;) {
            ap_node *node = (ap_node *)ap_tree_node(t, (ap_node_id)i);
            uint64_t *a = &awk[i * AP_WAIT_COUNT], sum = 0, aw = node->m[AP_M_AWAIT_NS];
            for (unsigned k = 0; k < AP_WAIT_COUNT; k++)
                sum += a[k];
            if (aw > 0 && sum > aw)
                for (unsigned k = 0; k < AP_WAIT_COUNT; k++)
                    a[k] = (uint64_t)((double)a[k] * (double)aw / (double)sum);
            for (unsigned k = 0; k < AP_WAIT_COUNT; k++)
                node->m[kinds_tab[k].metric] += a[k];
            if (node->parent == 0)
                continue;
            ap_node *up = (ap_node *)ap_tree_node(t, node->parent);
            uint64_t *ua = &awk[(size_t)node->parent * AP_WAIT_COUNT];
            for (unsigned k = 0; k < AP_WAIT_COUNT; k++) {
                ua[k] += a[k];
                up->m[kinds_tab[k].metric] += node->m[kinds_tab[k].metric] - a[k];
            }
        }
    }
    free(kinds);
    free(awk);
    rules_free(&r);
    return rc;
}
