/* spy_proc.c -- another process seen from outside: memory reads, /proc files, ELF symbols. */
#include "spy_proc.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ap_err.h"

static _Thread_local spy_fail last_fail;

spy_fail spy_fail_last(void) {
    return last_fail;
}

void spy_fail_clear(void) {
    last_fail = SPY_FAIL_NONE;
}

int spy_fail_set(spy_fail kind, int code, const char *fmt, ...) {
    char msg[AP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    last_fail = kind;
    return ap_err_set((ap_errcode)code, "%s", msg);
}

/* The failure of a process_vm_readv/writev that moved fewer bytes than asked (got; errno
 * set when got < 0): PERM, NOPROC, or TORN described by what.  Returns -1. */
static int vm_fail(pid_t pid, ssize_t got, const char *what) {
    if (got < 0 && errno == EPERM)
        return spy_fail_set(SPY_FAIL_PERM, AP_EIO, "reading process %d is not permitted",
                            (int)pid);
    if (got < 0 && errno == ESRCH)
        return spy_fail_set(SPY_FAIL_NOPROC, AP_ENOTFOUND, "no process %d", (int)pid);
    return spy_fail_set(SPY_FAIL_TORN, AP_EIO, "%s failed", what);
}

int spy_read(pid_t pid, uint64_t addr, void *buf, size_t len) {
    struct iovec local = {buf, len}, remote = {(void *)(uintptr_t)addr, len};
    ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (got == (ssize_t)len)
        return 0;
    char what[64];
    snprintf(what, sizeof what, "read of %zu bytes at 0x%llx", len, (unsigned long long)addr);
    return vm_fail(pid, got, what);
}

int spy_read_many(pid_t pid, const uint64_t *addrs, size_t n, void *buf, size_t len) {
    struct iovec local = {buf, n * len}, remote[1024];
    if (n > sizeof remote / sizeof *remote)
        return spy_fail_set(SPY_FAIL_OTHER, AP_EINVAL, "%zu blocks in one read", n);
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        remote[i] = (struct iovec){(void *)(uintptr_t)addrs[i], len};
    ssize_t got = process_vm_readv(pid, &local, 1, remote, n, 0);
    return got == (ssize_t)(n * len) ? 0 : vm_fail(pid, got, "read of code object headers");
}

int spy_read_ptr(pid_t pid, uint64_t addr, uint64_t *out) {
    return spy_read(pid, addr, out, sizeof *out);
}

/* ---- ELF symbols ------------------------------------------------------------------- */

/* Look name up in the symbol table sh (with its string table) of the mapped ELF file. */
static uint64_t elf_lookup(const uint8_t *m, size_t size, const Elf64_Shdr *sh,
                           const Elf64_Shdr *strs, const char *name) {
    if (sh->sh_offset + sh->sh_size > size || strs->sh_offset + strs->sh_size > size ||
        sh->sh_entsize != sizeof(Elf64_Sym))
        return 0;
    const Elf64_Sym *syms = (const Elf64_Sym *)(m + sh->sh_offset);
    size_t n = sh->sh_size / sizeof(Elf64_Sym);
    const char *str = (const char *)(m + strs->sh_offset);
    for (size_t i = 0; i < n; i++) {
        if (syms[i].st_name >= strs->sh_size || syms[i].st_shndx == SHN_UNDEF)
            continue;
        if (strcmp(str + syms[i].st_name, name) == 0)
            return syms[i].st_value;
    }
    return 0;
}

/* The address of the section called name (".AsyncioDebug"), or 0. */
static uint64_t elf_section(const uint8_t *m, size_t size, const Elf64_Ehdr *eh, const char *name) {
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(m + eh->e_shoff);
    if (eh->e_shstrndx >= eh->e_shnum)
        return 0;
    const Elf64_Shdr *names = &sh[eh->e_shstrndx];
    if (names->sh_offset + names->sh_size > size)
        return 0;
    const char *str = (const char *)(m + names->sh_offset);
    size_t len = strlen(name);
    for (unsigned i = 0; i < eh->e_shnum; i++)
        if (sh[i].sh_name + len < names->sh_size && memcmp(str + sh[i].sh_name, name, len + 1) == 0)
            return sh[i].sh_addr;
    return 0;
}

/* Addresses (in the file's own virtual addresses) of the named symbols of an ELF file,
 * .dynsym first, then .symtab, or of the named sections (a name starting with '.'); and
 * the lowest PT_LOAD address.  Returns 0 if the file could be read as a 64-bit ELF, else
 * -1 (no error recorded). */
static int elf_symbols(const char *path, const char *const *names, uint64_t *vals, size_t n,
                       uint64_t *load_min) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(Elf64_Ehdr)) {
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    const uint8_t *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -1;
    int rc = -1;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)m;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > size ||
        eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > size)
        goto done;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(m + eh->e_phoff);
    *load_min = UINT64_MAX;
    for (unsigned i = 0; i < eh->e_phnum; i++)
        if (ph[i].p_type == PT_LOAD && ph[i].p_vaddr < *load_min)
            *load_min = ph[i].p_vaddr & ~(uint64_t)0xfff;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(m + eh->e_shoff);
    for (size_t k = 0; k < n; k++) {
        vals[k] = 0;
        if (names[k][0] == '.') {
            vals[k] = elf_section(m, size, eh, names[k]);
            continue;
        }
        for (int pass = 0; pass < 2 && !vals[k]; pass++) {
            unsigned want = pass == 0 ? SHT_DYNSYM : SHT_SYMTAB;
            for (unsigned i = 0; i < eh->e_shnum && !vals[k]; i++)
                if (sh[i].sh_type == want && sh[i].sh_link < eh->e_shnum)
                    vals[k] = elf_lookup(m, size, &sh[i], &sh[sh[i].sh_link], names[k]);
        }
    }
    rc = 0;
done:
    munmap((void *)m, size);
    return rc;
}

/* A line of /proc/PID/maps: the path of a file mapped from its offset 0 (cut at the
 * line's end, in place) with the mapping's start in *lo, or NULL for any other line. */
static char *maps_file_start(char *line, uint64_t *lo) {
    unsigned long long start, end, off;
    int pathpos = 0;
    if (sscanf(line, "%llx-%llx %*s %llx %*s %*s %n", &start, &end, &off, &pathpos) < 3 ||
        !pathpos)
        return NULL;
    char *path = line + pathpos;
    path[strcspn(path, "\n")] = 0;
    if (path[0] != '/' || off != 0)
        return NULL;
    *lo = start;
    return path;
}

/* The addresses in pid of symbols names[0..n) of the ELF file path mapped from base
 * (0 for a symbol it lacks), the file read through /proc/PID/root first (a process in a
 * container sees its own files).  0, or -1 when the file cannot be read. */
static int module_symbols(pid_t pid, const char *path, uint64_t base, const char *const *names,
                          uint64_t *vals, size_t n) {
    char rooted[4200];
    uint64_t load_min = 0;
    snprintf(rooted, sizeof rooted, "/proc/%d/root%s", (int)pid, path);
    if (elf_symbols(rooted, names, vals, n, &load_min) != 0 &&
        elf_symbols(path, names, vals, n, &load_min) != 0)
        return -1;
    for (size_t k = 0; k < n; k++)
        if (vals[k])
            vals[k] += base - load_min;
    return 0;
}

/* Whether path names a shared libpython (libpython3.X.so...). */
static int is_libpython(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strncmp(base, "libpython3.", 11) == 0 && strstr(base, ".so") != NULL;
}

int spy_find_symbols(pid_t pid, spy_symbols *out) {
    memset(out, 0, sizeof *out);
    char fn[64], line[4400], exe[4096];
    snprintf(fn, sizeof fn, "/proc/%d/exe", (int)pid);
    ssize_t el = readlink(fn, exe, sizeof exe - 1);
    if (el < 0) {
        if (errno == ENOENT)
            return spy_fail_set(SPY_FAIL_NOPROC, AP_ENOTFOUND, "no process %d", (int)pid);
        if (errno == EACCES || errno == EPERM)
            return spy_fail_set(SPY_FAIL_PERM, AP_EIO, "reading process %d is not permitted",
                                (int)pid);
        return spy_fail_set(SPY_FAIL_NOPROC, AP_ENOTFOUND, "no process %d", (int)pid);
    }
    exe[el] = 0;
    snprintf(fn, sizeof fn, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(fn, "re");
    if (!f)
        return spy_fail_set(errno == ENOENT ? SPY_FAIL_NOPROC : SPY_FAIL_PERM, AP_EIO,
                            errno == ENOENT ? "no process %d" : "reading process %d is not permitted",
                            (int)pid);
    /* Candidates in order: libpython, then the executable; base = first mapping at offset 0. */
    char lib[4096] = "";
    uint64_t lib_base = 0, exe_base = 0;
    while (fgets(line, sizeof line, f)) {
        uint64_t lo;
        char *path = maps_file_start(line, &lo);
        if (path == NULL)
            continue;
        if (!lib_base && is_libpython(path)) {
            snprintf(lib, sizeof lib, "%s", path);
            lib_base = lo;
        } else if (!exe_base && strcmp(path, exe) == 0) {
            exe_base = lo;
        }
    }
    fclose(f);
    static const char *const names[2] = {"_PyRuntime", "Py_Version"};
    for (int cand = 0; cand < 2; cand++) {
        const char *path = cand == 0 ? lib : exe;
        uint64_t base = cand == 0 ? lib_base : exe_base, vals[2];
        if (!path[0] || !base || module_symbols(pid, path, base, names, vals, 2) != 0 ||
            !vals[0])
            continue;
        out->runtime = vals[0];
        out->version = vals[1];
        snprintf(out->path, sizeof out->path, "%s", path);
        return 0;
    }
    return spy_fail_set(SPY_FAIL_NOTPYTHON, AP_ENOTFOUND,
                        "process %d (%s) is not a Python process: no _PyRuntime in it", (int)pid,
                        exe);
}

/* Read /proc/PID/task/TID/<what> into buf; returns its length or -1. */
static ssize_t read_task_file(pid_t pid, pid_t tid, const char *what, char *buf, size_t n) {
    char fn[96];
    snprintf(fn, sizeof fn, "/proc/%d/task/%d/%s", (int)pid, (int)tid, what);
    int fd = open(fn, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, n - 1);
    close(fd);
    if (got < 0)
        return -1;
    buf[got] = 0;
    return got;
}

void spy_thread_comm(pid_t pid, pid_t tid, char *buf, size_t n) {
    if (read_task_file(pid, tid, "comm", buf, n) < 0)
        buf[0] = 0;
    buf[strcspn(buf, "\n")] = 0;
}

char spy_thread_state(pid_t pid, pid_t tid) {
    char buf[512];
    if (read_task_file(pid, tid, "stat", buf, sizeof buf) < 0)
        return 0;
    /* "tid (comm) S ...": comm may hold spaces and parentheses, so the last ')'. */
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : 0;
}

uint64_t spy_thread_cpu_ns(pid_t pid, pid_t tid) {
    char buf[128];
    unsigned long long ns;
    if (read_task_file(pid, tid, "schedstat", buf, sizeof buf) < 0 || sscanf(buf, "%llu", &ns) != 1)
        return UINT64_MAX;
    return ns;
}

int spy_write(pid_t pid, uint64_t addr, const void *buf, size_t len) {
    struct iovec local = {(void *)(uintptr_t)buf, len}, remote = {(void *)(uintptr_t)addr, len};
    ssize_t got = process_vm_writev(pid, &local, 1, &remote, 1, 0);
    return got == (ssize_t)len ? 0 : vm_fail(pid, got, "write to the board");
}

uint64_t spy_find_in_module(pid_t pid, const char *file, const char *name) {
    char fn[64], line[4400];
    snprintf(fn, sizeof fn, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(fn, "re");
    if (!f)
        return 0;
    char path[4096] = "";
    uint64_t base = 0;
    while (!base && fgets(line, sizeof line, f)) {
        uint64_t lo;
        char *p = maps_file_start(line, &lo);
        if (p != NULL && strstr(p, file) != NULL) {
            snprintf(path, sizeof path, "%s", p);
            base = lo;
        }
    }
    fclose(f);
    const char *const names[1] = {name};
    uint64_t val = 0;
    if (!base || module_symbols(pid, path, base, names, &val, 1) != 0)
        return 0;
    return val;
}
