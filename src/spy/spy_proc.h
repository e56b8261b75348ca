/* spy_proc.h -- another process seen from outside: memory reads, /proc files, ELF symbols. */
#ifndef SPY_PROC_H
#define SPY_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Why an attach or a read failed, beside the core's ap_err code and message: the
 * command line turns each into its own exit status (spy_main.c). */
typedef enum spy_fail {
    SPY_FAIL_NONE = 0,
    SPY_FAIL_PERM,         /* reading the target is not permitted (ptrace rules) */
    SPY_FAIL_NOPROC,       /* no such process (or it exited) */
    SPY_FAIL_NOTPYTHON,    /* the process has no CPython interpreter */
    SPY_FAIL_VERSION,      /* a CPython this build does not read */
    SPY_FAIL_TORN,         /* a read hit memory that changed or went away: skip the sample */
    SPY_FAIL_OTHER
} spy_fail;

/* The failure kind recorded by the last failing spy_ call of this thread. */
spy_fail spy_fail_last(void);

/* Forget the last failure kind (SPY_FAIL_NONE until the next failure).  Can't fail. */
void spy_fail_clear(void);

/* Record kind and the core error (ap_err_set(code, ...)); returns -1. */
int spy_fail_set(spy_fail kind, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Read len bytes at addr of process pid into buf with process_vm_readv: the target
 * is never stopped.  Returns 0; on error -1 with SPY_FAIL_PERM (EPERM), SPY_FAIL_NOPROC
 * (ESRCH) or SPY_FAIL_TORN (a short read, EFAULT: the memory is not mapped now). */
int spy_read(pid_t pid, uint64_t addr, void *buf, size_t len);

/* Read n blocks of len bytes, block i at addrs[i] into buf + i * len, with one
 * process_vm_readv (n at most 1024).  Returns 0; on error -1 as spy_read() (a block that
 * is not mapped now is SPY_FAIL_TORN). */
int spy_read_many(pid_t pid, const uint64_t *addrs, size_t n, void *buf, size_t len);

/* Write len bytes of buf at addr of process pid with process_vm_writev (only to memory
 * the target keeps for apiprof-spy: its board).  Returns 0; on error -1 as spy_read(). */
int spy_write(pid_t pid, uint64_t addr, const void *buf, size_t len);

/* Read a pointer-sized value at addr.  Returns 0; on error -1 as spy_read(). */
int spy_read_ptr(pid_t pid, uint64_t addr, uint64_t *out);

/* Where a symbol of the interpreter lives in the target. */
typedef struct spy_symbols {
    uint64_t runtime;     /* address of _PyRuntime */
    uint64_t version;     /* address of Py_Version (0 when absent) */
    char path[4096];      /* the ELF file that defines them (libpython or the executable) */
} spy_symbols;

/* Find _PyRuntime and Py_Version in pid: in a mapped libpython3.*.so, else in the
 * executable (/proc/PID/maps, the files read through /proc/PID/root so that a
 * process in a container is found too).  Returns 0; on error -1 with
 * SPY_FAIL_NOPROC, SPY_FAIL_PERM or SPY_FAIL_NOTPYTHON. */
int spy_find_symbols(pid_t pid, spy_symbols *out);

/* The address in pid of symbol name (or, for a name starting with '.', of the section
 * so called) of the first mapped ELF file whose path holds file (e.g. "/apiprof/_core."),
 * or 0 when no such file is mapped or it has no such symbol.  Can't fail. */
uint64_t spy_find_in_module(pid_t pid, const char *file, const char *name);

/* The name of thread tid of pid (/proc/PID/task/TID/comm) into buf (NUL-terminated,
 * "" when it cannot be read).  Can't fail. */
void spy_thread_comm(pid_t pid, pid_t tid, char *buf, size_t n);

/* Scheduler state letter of thread tid ('R' running, 'S' sleeping, 'D' disk wait...),
 * or 0 when the thread is gone.  Can't fail. */
char spy_thread_state(pid_t pid, pid_t tid);

/* CPU time thread tid has run, in ns (/proc/PID/task/TID/schedstat), or UINT64_MAX when
 * it cannot be read (the thread is gone, or the kernel keeps no schedstat).  Can't fail. */
uint64_t spy_thread_cpu_ns(pid_t pid, pid_t tid);

#endif /* SPY_PROC_H */
