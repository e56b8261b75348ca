/* test_wait.c -- unit tests of the wait rules: patterns, the kinds they give blocking calls and awaits, user rows, idempotence. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ap_err.h"
#include "ap_prof.h"
#include "ap_test.h"
#include "ap_wait.h"

static ap_str_id s_(ap_prof *p, const char *s) {
    return ap_prof_intern(p, s, strlen(s));
}

static ap_frame_id fr(ap_prof *p, const char *qual, const char *file, unsigned kind) {
    const char *dot = strrchr(qual, '.');
    ap_frame f = {s_(p, dot ? dot + 1 : qual), s_(p, qual), s_(p, file), 1, 0, kind};
    return ap_prof_frame_intern(p, &f);
}

static ap_node *path(ap_tree *t, const ap_frame_id *fs, size_t n) {
    ap_node *node = ap_tree_root(t);
    for (size_t i = 0; i < n; i++)
        node = ap_tree_child(t, node, fs[i]);
    return node;
}

#define LIB "/venv/lib/python3.12/site-packages/"
#define PY AP_FRAME_PYTHON
#define C AP_FRAME_METHOD
#define W(k, n) ((n)->m[ap_wait_metric(AP_WAIT_##k)])

AP_TEST(wait_patterns) {
    AP_CHECK(ap_wait_match("time.sleep", "time.sleep"));
    AP_CHECK(!ap_wait_match("time.sleep", "time.sleeps"));
    AP_CHECK(ap_wait_match("sqlite3.*", "sqlite3.Cursor.execute"));
    AP_CHECK(ap_wait_match("*socket.recv*", "socket.socket.recv_into"));
    AP_CHECK(!ap_wait_match("*socket.recv*", "socket.socket.send"));
    AP_CHECK(ap_wait_match("*", ""));
    AP_CHECK(ap_wait_library_file(LIB "httpx/_client.py"));
    AP_CHECK(!ap_wait_library_file("/srv/app/main.py"));
    AP_CHECK(ap_wait_generated_file("<sqlalchemy generated warned() wrapper for x>"));
    AP_CHECK(ap_wait_generated_file("<string>"));
    AP_CHECK(!ap_wait_generated_file("<frozen runpy>") && !ap_wait_generated_file("/srv/app/main.py"));
}

/* A user function on a thread: sqlite (database), a selector under psycopg
 * (database, not idle), a socket under requests (network), a certifi read
 * under httpx (file: a file read means itself), a lock under anyio's worker
 * queue (idle); a coroutine awaiting asyncio.sleep (sleep) and an anyio
 * socket stream that suspends in Event.wait (network); an unknown await
 * and anyio's checkpoint, a sleep(0) (no kind). */
AP_TEST(wait_kinds_of_calls_and_awaits) {
    ap_prof *p = ap_prof_new();
    ap_label lab = {s_(p, "thread_id"), s_(p, "1")};
    ap_tree *t = ap_prof_tree_new(p, &lab, 1);
    ap_frame_id user = fr(p, "handler", "/srv/app/main.py", PY);
    ap_frame_id sqlite = fr(p, "sqlite3.Cursor.execute", "~", C);
    ap_frame_id pg = fr(p, "Connection.wait", LIB "psycopg/connection.py", PY);
    ap_frame_id waitep = fr(p, "wait_epoll", LIB "psycopg/waiting.py", PY);
    ap_frame_id epoll = fr(p, "select.epoll.poll", "~", C);
    ap_frame_id req = fr(p, "Session.send", LIB "requests/sessions.py", PY);
    ap_frame_id recv = fr(p, "socket.socket.recv_into", "~", C);
    ap_frame_id hx = fr(p, "create_ssl_context", LIB "httpx/_config.py", PY);
    ap_frame_id rd = fr(p, "_io.BufferedReader.read", "~", C);
    ap_frame_id wrun = fr(p, "WorkerThread.run", LIB "anyio/_backends/_asyncio.py", PY);
    ap_frame_id qget = fr(p, "Queue.get", "/usr/lib/python3.12/queue.py", PY);
    ap_frame_id acq = fr(p, "_thread.lock.acquire", "~", C);
    ap_frame_id sleep = fr(p, "sleep", "/usr/lib/python3.12/asyncio/tasks.py", PY);
    ap_frame_id recvs = fr(p, "SocketStream.receive", LIB "anyio/_backends/_asyncio.py", PY);
    ap_frame_id evwait = fr(p, "Event.wait", "/usr/lib/python3.12/asyncio/locks.py", PY);
    ap_frame_id other = fr(p, "mystery", LIB "other/x.py", PY);
    ap_frame_id ckpt = fr(p, "AsyncIOBackend.checkpoint", LIB "anyio/_backends/_asyncio.py", PY);
    ap_frame_id runsync = fr(p, "run_sync", LIB "anyio/to_thread.py", PY);
    ap_frame_id limacq = fr(p, "CapacityLimiter.acquire_on_behalf_of",
                            LIB "anyio/_backends/_asyncio.py", PY);
    /* a GIL wait carries the waiting function's file: a driver's is still no database */
    ap_frame_id gilw = fr(p, "<gil wait>", LIB "psycopg/cursor.py", AP_FRAME_OTHER);
    ap_frame_id lockw = fr(p, "<lock wait>", "/srv/app/main.py", AP_FRAME_OTHER);

    ap_node *n_sql = path(t, (ap_frame_id[]){user, sqlite}, 2);
    n_sql->m[AP_M_SELF_NS] = 100;
    ap_node *n_ep = path(t, (ap_frame_id[]){user, pg, waitep, epoll}, 4);
    n_ep->m[AP_M_SELF_NS] = 200;
    ap_node *n_recv = path(t, (ap_frame_id[]){user, req, recv}, 3);
    n_recv->m[AP_M_SELF_NS] = 300;
    ap_node *n_rd = path(t, (ap_frame_id[]){user, hx, rd}, 3);
    n_rd->m[AP_M_SELF_NS] = 400;
    ap_node *n_acq = path(t, (ap_frame_id[]){wrun, qget, acq}, 3);
    n_acq->m[AP_M_SELF_NS] = 500;
    ap_node *n_sleep = path(t, (ap_frame_id[]){user, sleep}, 2);
    n_sleep->m[AP_M_AWAIT_NS] = 600;
    ap_node *n_recvs = path(t, (ap_frame_id[]){user, recvs}, 2);
    ap_node *n_ev = path(t, (ap_frame_id[]){user, recvs, evwait}, 3);
    n_recvs->m[AP_M_AWAIT_NS] = n_ev->m[AP_M_AWAIT_NS] = 700;
    ap_node *n_other = path(t, (ap_frame_id[]){user, other}, 2);
    n_other->m[AP_M_AWAIT_NS] = 800;
    ap_node *n_ck = path(t, (ap_frame_id[]){user, ckpt, sleep}, 3);
    n_ck->m[AP_M_AWAIT_NS] = path(t, (ap_frame_id[]){user, ckpt}, 2)->m[AP_M_AWAIT_NS] = 900;
    /* a sync call waiting for a token of anyio's thread pool (its checkpoint, a
     * sleep(0), is none), then for its result */
    ap_node *n_pool = path(t, (ap_frame_id[]){user, runsync, limacq, evwait}, 4);
    n_pool->m[AP_M_AWAIT_NS] = 1000;
    ap_node *n_lck = path(t, (ap_frame_id[]){user, runsync, limacq, ckpt, sleep}, 5);
    n_lck->m[AP_M_AWAIT_NS] = path(t, (ap_frame_id[]){user, runsync, limacq, ckpt}, 4)->m[AP_M_AWAIT_NS] =
        30;
    path(t, (ap_frame_id[]){user, runsync, limacq}, 3)->m[AP_M_AWAIT_NS] = 1030;
    path(t, (ap_frame_id[]){user, runsync}, 2)->m[AP_M_AWAIT_NS] = 1030 + 50;
    ap_node *n_user = path(t, (ap_frame_id[]){user}, 1);
    n_user->m[AP_M_AWAIT_NS] = 600 + 700 + 800 + 900 + 1080;
    /* the tracer's measured waits: synthetic frames the table names */
    ap_node *n_gil = path(t, (ap_frame_id[]){user, pg, gilw}, 3);
    n_gil->m[AP_M_SELF_NS] = 11;
    ap_node *n_lockw = path(t, (ap_frame_id[]){user, lockw}, 2);
    n_lockw->m[AP_M_SELF_NS] = 13;

    for (int round = 0; round < 2; round++) { /* a second finish gives the same */
        AP_CHECK(ap_prof_finish(p) == 0);
        AP_CHECK_EQ_U64(W(DATABASE, n_sql), 100);
        AP_CHECK_EQ_U64(W(DATABASE, n_ep), 200);
        AP_CHECK_EQ_U64(W(IDLE, n_ep), 0);
        AP_CHECK_EQ_U64(W(NETWORK, n_recv), 300);
        AP_CHECK_EQ_U64(W(FILE, n_rd), 400);
        AP_CHECK_EQ_U64(W(NETWORK, n_rd), 0);
        AP_CHECK_EQ_U64(W(IDLE, n_acq), 500);
        AP_CHECK_EQ_U64(W(LOCK, n_acq), 0);
        AP_CHECK_EQ_U64(W(SLEEP, n_sleep), 600);
        AP_CHECK_EQ_U64(W(SLEEP, n_ck), 0);
        AP_CHECK_EQ_U64(W(NETWORK, n_recvs), 700);
        AP_CHECK_EQ_U64(W(LOCK, n_ev), 0);
        AP_CHECK_EQ_U64(W(THREAD_POOL, n_pool), 1000);
        AP_CHECK_EQ_U64(W(LOCK, n_pool), 0);
        AP_CHECK_EQ_U64(W(THREAD_POOL, n_lck) + W(SLEEP, n_lck), 0);
        AP_CHECK_EQ_U64(W(THREAD_POOL, n_user), 1000);
        /* inclusive: the user function holds every kind below it */
        AP_CHECK_EQ_U64(W(DATABASE, n_user), 300);
        AP_CHECK_EQ_U64(W(NETWORK, n_user), 1000);
        AP_CHECK_EQ_U64(W(FILE, n_user), 400);
        AP_CHECK_EQ_U64(W(SLEEP, n_user), 600);
        AP_CHECK_EQ_U64(W(IDLE, n_user), 0);
        AP_CHECK_EQ_U64(W(IDLE, path(t, (ap_frame_id[]){wrun}, 1)), 500);
        AP_CHECK_EQ_U64(W(GIL, n_gil), 11);
        AP_CHECK_EQ_U64(W(GIL, path(t, (ap_frame_id[]){user, pg}, 2)), 11);
        AP_CHECK_EQ_U64(W(DATABASE, n_gil), 0);
        AP_CHECK_EQ_U64(W(GIL, n_user), 11);
        AP_CHECK_EQ_U64(W(LOCK, n_lockw), 13);
        AP_CHECK_EQ_U64(W(LOCK, n_user), 13);
    }
    uint8_t kinds[64];
    AP_CHECK(ap_tree_nnodes(t) <= sizeof kinds);
    AP_CHECK(ap_wait_node_kinds(p, t, kinds) == 0);
    AP_CHECK_EQ_U64(kinds[n_other->id], AP_WAIT_COUNT);
    AP_CHECK_EQ_U64(kinds[n_ck->id], AP_WAIT_COUNT);
    AP_CHECK_EQ_U64(kinds[path(t, (ap_frame_id[]){wrun, qget}, 2)->id], AP_WAIT_IDLE);

    /* A user row comes first: the mystery await is the database. */
    AP_CHECK(ap_prof_meta_set(p, "wait_rules", "network:nothing.here;database:within:*@/other/") == 0);
    AP_CHECK(ap_prof_finish(p) == 0);
    AP_CHECK_EQ_U64(W(DATABASE, n_other), 800);
    AP_CHECK_EQ_U64(W(DATABASE, n_user), 1100);
    AP_CHECK(ap_prof_meta_set(p, "wait_rules", "naps:time.sleep") == 0);
    AP_CHECK(ap_prof_finish(p) == -1 && ap_err_code() == AP_EINVAL);
    AP_CHECK(ap_prof_meta_set(p, "wait_rules", "gil:x.y") == 0); /* measured, not ruled */
    AP_CHECK(ap_prof_finish(p) == -1 && ap_err_code() == AP_EINVAL);
    ap_prof_free(p);
}

/* An async generator suspended at a yield while its consumer runs: its
 * await is no wait of the consumer's, which keeps at most its own await. */
AP_TEST(wait_async_generator_is_capped) {
    ap_prof *p = ap_prof_new();
    ap_tree *t = ap_prof_tree_new(p, NULL, 0);
    ap_frame_id user = fr(p, "handler", "/srv/app/main.py", PY);
    ap_frame_id send = fr(p, "Client.send", LIB "httpx/_client.py", PY);
    ap_frame_id flow = fr(p, "Auth.flow", LIB "httpx/_auth.py", PY);
    ap_frame_id recvs = fr(p, "SocketStream.receive", LIB "anyio/_backends/_asyncio.py", PY);
    ap_node *n_send = path(t, (ap_frame_id[]){user, send}, 2);
    ap_node *n_flow = path(t, (ap_frame_id[]){user, send, flow}, 3);
    ap_node *n_recv = path(t, (ap_frame_id[]){user, send, recvs}, 3);
    n_flow->m[AP_M_AWAIT_NS] = 300; /* suspended at its yield */
    n_recv->m[AP_M_AWAIT_NS] = 100;
    n_send->m[AP_M_AWAIT_NS] = 100;
    path(t, (ap_frame_id[]){user}, 1)->m[AP_M_AWAIT_NS] = 100;
    AP_CHECK(ap_prof_finish(p) == 0);
    AP_CHECK_EQ_U64(W(NETWORK, n_send), 100);
    AP_CHECK_EQ_U64(W(NETWORK, path(t, (ap_frame_id[]){user}, 1)), 100);
    ap_prof_free(p);
}

static int norm_is(const char *sql, const char *want) {
    char out[256];
    size_t n = ap_query_normalise(sql, strlen(sql), out, sizeof out);
    return n == strlen(want) && strcmp(out, want) == 0;
}

AP_TEST(query_normalise) {
    AP_CHECK(norm_is("SELECT * FROM t WHERE id = 42", "SELECT * FROM t WHERE id = ?"));
    AP_CHECK(norm_is("select  a,\n\tb from t where n = 'it''s'  ", "select a, b from t where n = ?"));
    AP_CHECK(norm_is("SELECT x1, t2.c FROM t2 WHERE v > 3.5e3", "SELECT x1, t2.c FROM t2 WHERE v > ?"));
    AP_CHECK(norm_is("WHERE id IN (1, 2, 3)", "WHERE id IN (?)"));
    AP_CHECK(norm_is("VALUES (?,?,?)", "VALUES (?)"));
    AP_CHECK(norm_is("WHERE a = $1 AND b = :name AND c = %s", "WHERE a = $1 AND b = :name AND c = %s"));
    char small[8];
    /* cut at the buffer, never past it; a trailing space is dropped */
    AP_CHECK_EQ_U64(ap_query_normalise("SELECT 1234567", 14, small, sizeof small), 6);
    AP_CHECK(strcmp(small, "SELECT") == 0);
}

/* Counts per request, the N+1 mark, merges, and the native file. */
AP_TEST(query_records_roundtrip) {
    ap_prof *p = ap_prof_new();
    ap_str_id s = s_(p, "SELECT * FROM t WHERE id = ?"), r = s_(p, "GET /x");
    ap_frame_id site = fr(p, "load", "/srv/app/main.py", PY);
    for (uint64_t req = 1; req <= 3; req++)
        for (int i = 0; i < 6; i++)
            AP_CHECK(ap_prof_query_add(p, AP_QUERY_STATEMENT, s, r, site, 12, 10, 1, req) == 0);
    AP_CHECK(ap_prof_query_add(p, AP_QUERY_STATEMENT, s, r, site, 13, 5, 0, 1) == 0); /* another line */
    AP_CHECK_EQ_U64(ap_prof_nqueries(p), 2);
    const ap_query *q = ap_prof_query_at(p, 0);
    AP_CHECK_EQ_U64(q->count, 18);
    AP_CHECK_EQ_U64(q->total_ns, 180);
    AP_CHECK_EQ_U64(q->rows, 18);
    AP_CHECK_EQ_U64(q->requests, 3);
    AP_CHECK_EQ_U64(q->max_per_request, 6);
    AP_CHECK(q->max_per_request >= AP_QUERY_N_PLUS_ONE);
    AP_CHECK_EQ_U64(ap_prof_query_at(p, 1)->max_per_request, 1);
    char path[] = "/tmp/apiprof-test-queries-XXXXXX";
    int fd = mkstemp(path);
    AP_CHECK(fd >= 0);
    close(fd);
    AP_CHECK(ap_prof_write(p, path) == 0);
    int cut = 1;
    ap_prof *back = ap_prof_read(path, &cut);
    unlink(path);
    AP_CHECK(back != NULL && cut == 0);
    if (back != NULL) {
        AP_CHECK_EQ_U64(ap_prof_nqueries(back), 2);
        const ap_query *b = ap_prof_query_at(back, 0);
        AP_CHECK(strcmp(ap_prof_str(back, b->statement), "SELECT * FROM t WHERE id = ?") == 0);
        AP_CHECK(strcmp(ap_prof_str(back, b->route), "GET /x") == 0);
        AP_CHECK(strcmp(ap_prof_str(back, ap_prof_frame(back, b->site)->qualname), "load") == 0);
        AP_CHECK_EQ_U64(b->line, 12);
        AP_CHECK_EQ_U64(b->count, 18);
        AP_CHECK_EQ_U64(b->max_per_request, 6);
        ap_prof *m = ap_prof_merge(back, NULL, NULL); /* a selection keeps them */
        AP_CHECK(m != NULL && ap_prof_nqueries(m) == 2);
        ap_prof_free(m);
        ap_prof_free(back);
    }
    ap_prof_free(p);
}

/* psycopg's sync Connection.wait: its own time is the wait in a C call the
 * tracer did not see (a hidden row), the database; a Python function's own
 * time elsewhere stays no wait. */
AP_TEST(wait_hidden_call_is_the_callers_own_time) {
    ap_prof *p = ap_prof_new();
    ap_tree *t = ap_prof_tree_new(p, NULL, 0);
    ap_frame_id user = fr(p, "handler", "/srv/app/main.py", PY);
    ap_frame_id exec = fr(p, "Cursor.execute", LIB "psycopg/cursor.py", PY);
    ap_frame_id pgwait = fr(p, "Connection.wait", LIB "psycopg/connection.py", PY);
    ap_frame_id other = fr(p, "Connection.wait", LIB "other/connection.py", PY);
    ap_node *n_exec = path(t, (ap_frame_id[]){user, exec}, 2);
    ap_node *n_wait = path(t, (ap_frame_id[]){user, exec, pgwait}, 3);
    ap_node *n_other = path(t, (ap_frame_id[]){user, other}, 2);
    n_exec->m[AP_M_SELF_NS] = 50;   /* its bytecode: no wait */
    n_wait->m[AP_M_SELF_NS] = 250;
    n_other->m[AP_M_SELF_NS] = 70;
    AP_CHECK(ap_prof_finish(p) == 0);
    AP_CHECK_EQ_U64(W(DATABASE, n_wait), 250);
    AP_CHECK_EQ_U64(W(DATABASE, n_exec), 250);
    AP_CHECK_EQ_U64(W(DATABASE, path(t, (ap_frame_id[]){user}, 1)), 250);
    AP_CHECK_EQ_U64(W(DATABASE, n_other), 0);
    ap_prof_free(p);
}

/* Outgoing calls beside statements: their kind is kept by the native file
 * (after the records) and the JSON export, and a record of each kind with
 * the same text stays apart. */
AP_TEST(query_kinds_roundtrip) {
    ap_prof *p = ap_prof_new();
    ap_str_id call = s_(p, "GET api.example:8080/users/{id} 200"), r = s_(p, "GET /x");
    ap_str_id stmt = s_(p, "SELECT 1");
    ap_frame_id site = fr(p, "load", "/srv/app/main.py", PY);
    for (int i = 0; i < 6; i++)
        AP_CHECK(ap_prof_query_add(p, AP_QUERY_HTTP, call, r, site, 7, 10, 0, 1) == 0);
    AP_CHECK(ap_prof_query_add(p, AP_QUERY_STATEMENT, stmt, r, site, 8, 5, 0, 1) == 0);
    AP_CHECK(ap_prof_query_add(p, AP_QUERY_STATEMENT, call, r, site, 7, 5, 0, 1) == 0);
    AP_CHECK_EQ_U64(ap_prof_nqueries(p), 3);
    AP_CHECK(strcmp(ap_query_kind_name(AP_QUERY_HTTP), "http") == 0);
    AP_CHECK(ap_query_kind_name(AP_QUERY_KINDS) == NULL);
    char path[] = "/tmp/apiprof-test-kinds-XXXXXX";
    int fd = mkstemp(path);
    AP_CHECK(fd >= 0);
    close(fd);
    AP_CHECK(ap_prof_write(p, path) == 0);
    int cut = 1;
    ap_prof *back = ap_prof_read(path, &cut);
    AP_CHECK(back != NULL && cut == 0);
    if (back != NULL) {
        AP_CHECK_EQ_U64(ap_prof_nqueries(back), 3);
        AP_CHECK_EQ_U64(ap_prof_query_at(back, 0)->kind, AP_QUERY_HTTP);
        AP_CHECK_EQ_U64(ap_prof_query_at(back, 0)->max_per_request, 6);
        AP_CHECK_EQ_U64(ap_prof_query_at(back, 1)->kind, AP_QUERY_STATEMENT);
        AP_CHECK_EQ_U64(ap_prof_query_at(back, 2)->kind, AP_QUERY_STATEMENT);
        ap_prof_free(back);
    }
    FILE *f = fopen(path, "w+");
    AP_CHECK(f != NULL);
    if (f != NULL) {
        AP_CHECK(ap_prof_write_json(p, f) == 0);
        long n = ftell(f);
        uint8_t *buf = malloc((size_t)n);
        rewind(f);
        AP_CHECK(buf != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n);
        fclose(f);
        ap_prof *j = buf != NULL ? ap_json_read(buf, (size_t)n) : NULL;
        AP_CHECK(j != NULL);
        if (j != NULL) {
            AP_CHECK_EQ_U64(ap_prof_nqueries(j), 3);
            AP_CHECK_EQ_U64(ap_prof_query_at(j, 0)->kind, AP_QUERY_HTTP);
            AP_CHECK_EQ_U64(ap_prof_query_at(j, 2)->kind, AP_QUERY_STATEMENT);
            ap_prof_free(j);
        }
        free(buf);
    }
    unlink(path);
    ap_prof_free(p);
}
