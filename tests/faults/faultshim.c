/* faultshim: an LD_PRELOAD library that makes one chosen file-system call of a process fail.
 *
 * Built once per test session by tests/_faultshim.py (gcc -shared -fPIC -O2 -o faultshim.so
 * faultshim.c -ldl) and preloaded into a driver process (tests/_fault_driver.py). The driver
 * sets up its files, then arms the shim through its exported functions (ctypes): from then on
 * the shim counts the calls of the chosen kinds made on files under one folder (fds are
 * resolved through /proc/self/fd, rename paths are compared as given), and does something to
 * the Nth:
 *
 *   FS_FAIL         that call fails with `err` (EIO, ENOSPC, ...), nothing done;
 *   FS_SHORT        a write writes half its bytes (at least one) and returns the short count
 *                   (any other call passes);
 *   FS_SHORT_THEN   a write is short, and every later counted call but ftruncate fails with
 *                   `err` (a disk that fills up mid-write: shrinking a file still works); if
 *                   the Nth call is not a write, nothing happens;
 *   FS_STICKY       that call and every later counted call fail with `err` (a dead disk);
 *   FS_BLOCK        before doing the call, write one byte to `ready_fd` and wait until a byte
 *                   can be read from `go_fd` (used to hold a store inside its locked section).
 *
 * Every counted call is logged ("<n> <call> <path> <result>\n") in a buffer the driver reads
 * with faultshim_log(). Calls not on the folder, and every call before arming, pass straight
 * through, so the interpreter's own output is never disturbed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { K_WRITE = 1, K_FSYNC = 2, K_RENAME = 4, K_FTRUNCATE = 8 };
enum { FS_FAIL = 0, FS_SHORT = 1, FS_SHORT_THEN = 2, FS_STICKY = 3, FS_BLOCK = 4 };

static char g_dir[4096];
static size_t g_dir_len;
static int g_armed;
static int g_kinds;
static long g_target;
static int g_mode;
static int g_err;
static int g_ready_fd = -1, g_go_fd = -1;
static long g_count;
static long g_injected;
static int g_failing; /* sticky failure in force */
static char g_log[1 << 16];
static size_t g_log_len;
static volatile int g_lock;

static void lock(void) {
    while (__atomic_exchange_n(&g_lock, 1, __ATOMIC_ACQUIRE)) {
    }
}
static void unlock(void) { __atomic_store_n(&g_lock, 0, __ATOMIC_RELEASE); }

#define REAL(name, ret, ...)                                                                   \
    static ret (*real_##name)(__VA_ARGS__);                                                    \
    static void load_##name(void) {                                                            \
        if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name);                               \
    }

REAL(write, ssize_t, int, const void *, size_t)
REAL(pwrite, ssize_t, int, const void *, size_t, off_t)
REAL(pwrite64, ssize_t, int, const void *, size_t, off_t)
REAL(writev, ssize_t, int, const struct iovec *, int)
REAL(fsync, int, int)
REAL(fdatasync, int, int)
REAL(rename, int, const char *, const char *)
REAL(renameat, int, int, const char *, int, const char *)
REAL(renameat2, int, int, const char *, int, const char *, unsigned int)
REAL(ftruncate, int, int, off_t)
REAL(ftruncate64, int, int, off_t)

/* --- the driver's interface ---------------------------------------------------------------- */

void faultshim_arm(const char *dir, int kinds, long target, int mode, int err, int ready_fd,
                   int go_fd) {
    lock();
    snprintf(g_dir, sizeof g_dir, "%s", dir);
    g_dir_len = strlen(g_dir);
    while (g_dir_len > 1 && g_dir[g_dir_len - 1] == '/') g_dir[--g_dir_len] = 0;
    g_kinds = kinds;
    g_target = target;
    g_mode = mode;
    g_err = err;
    g_ready_fd = ready_fd;
    g_go_fd = go_fd;
    g_count = 0;
    g_injected = 0;
    g_failing = 0;
    g_log_len = 0;
    g_log[0] = 0;
    g_armed = 1;
    unlock();
}

void faultshim_disarm(void) {
    lock();
    g_armed = 0;
    unlock();
}

long faultshim_calls(void) { return __atomic_load_n(&g_count, __ATOMIC_SEQ_CST); }
/* How many calls were disturbed (failed, shortened or held) since arming. */
long faultshim_injected(void) { return __atomic_load_n(&g_injected, __ATOMIC_SEQ_CST); }
const char *faultshim_log(void) { return g_log; }

/* --- deciding ------------------------------------------------------------------------------ */

static int under_dir(const char *path) {
    if (!path || !g_dir_len) return 0;
    if (strncmp(path, g_dir, g_dir_len) != 0) return 0;
    return path[g_dir_len] == 0 || path[g_dir_len] == '/' || path[g_dir_len] == ' ';
}

static int fd_path(int fd, char *out, size_t size) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, size - 1);
    if (n < 0) return 0;
    out[n] = 0;
    return 1;
}

typedef enum { PASS, FAIL, SHORT } action_t;

/* What to do with a call of `kind` on `path`; `n` receives its number (0 if not counted). */
static action_t decide(int kind, const char *path, long *n) {
    *n = 0;
    if (!__atomic_load_n(&g_armed, __ATOMIC_SEQ_CST) || !(g_kinds & kind) || !under_dir(path))
        return PASS;
    long mine = __atomic_add_fetch(&g_count, 1, __ATOMIC_SEQ_CST);
    *n = mine;
    action_t act = PASS;
    /* A full disk fails writes, syncs and renames, but shrinking a file still works. */
    if (__atomic_load_n(&g_failing, __ATOMIC_SEQ_CST) &&
        !(g_mode == FS_SHORT_THEN && kind == K_FTRUNCATE)) {
        act = FAIL;
    } else if (mine == g_target) {
        switch (g_mode) {
        case FS_FAIL:
            act = FAIL;
            break;
        case FS_SHORT:
            act = kind == K_WRITE ? SHORT : PASS;
            break;
        case FS_SHORT_THEN:
            if (kind == K_WRITE) {
                act = SHORT;
                __atomic_store_n(&g_failing, 1, __ATOMIC_SEQ_CST);
            }
            break;
        case FS_STICKY:
            act = FAIL;
            __atomic_store_n(&g_failing, 1, __ATOMIC_SEQ_CST);
            break;
        case FS_BLOCK: {
            char byte = 'R';
            __atomic_add_fetch(&g_injected, 1, __ATOMIC_SEQ_CST);
            load_write();
            real_write(g_ready_fd, &byte, 1);
            while (read(g_go_fd, &byte, 1) < 0 && errno == EINTR) {
            }
            break;
        }
        }
    }
    if (act != PASS) __atomic_add_fetch(&g_injected, 1, __ATOMIC_SEQ_CST);
    return act;
}

static void note(long n, const char *call, const char *path, long result) {
    if (!n) return;
    lock();
    int wrote = snprintf(g_log + g_log_len, sizeof g_log - g_log_len, "%ld %s %s %ld\n", n, call,
                         path ? path : "?", result);
    if (wrote > 0 && g_log_len + (size_t)wrote < sizeof g_log) g_log_len += (size_t)wrote;
    unlock();
}

/* --- the wrapped calls --------------------------------------------------------------------- */

#define FD_CALL(kind, call_name, fd, do_real)                                                   \
    char path[4096] = "";                                                                        \
    long n = 0;                                                                                  \
    action_t act = PASS;                                                                         \
    if (__atomic_load_n(&g_armed, __ATOMIC_SEQ_CST) && fd_path(fd, path, sizeof path))           \
        act = decide(kind, path, &n);                                                            \
    if (act == FAIL) {                                                                           \
        note(n, call_name, path, -g_err);                                                        \
        errno = g_err;                                                                           \
        return -1;                                                                               \
    }                                                                                            \
    do_real;                                                                                     \
    note(n, call_name, path, (long)result);                                                      \
    return result;

static size_t half(size_t count) { return count > 1 ? count / 2 : count; }

ssize_t write(int fd, const void *buf, size_t count) {
    load_write();
    ssize_t result;
    FD_CALL(K_WRITE, act == SHORT ? "write(short)" : "write", fd,
            result = real_write(fd, buf, act == SHORT ? half(count) : count))
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    load_pwrite();
    ssize_t result;
    FD_CALL(K_WRITE, "pwrite", fd,
            result = real_pwrite(fd, buf, act == SHORT ? half(count) : count, offset))
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    load_pwrite64();
    ssize_t result;
    FD_CALL(K_WRITE, "pwrite64", fd,
            result = real_pwrite64(fd, buf, act == SHORT ? half(count) : count, offset))
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    load_writev();
    ssize_t result;
    /* A short writev writes the first buffer's first half only. */
    struct iovec first;
    FD_CALL(K_WRITE, "writev", fd,
            if (act == SHORT && iovcnt > 0) {
                first.iov_base = iov[0].iov_base;
                first.iov_len = half(iov[0].iov_len);
                result = real_writev(fd, &first, 1);
            } else result = real_writev(fd, iov, iovcnt))
}

int fsync(int fd) {
    load_fsync();
    int result;
    FD_CALL(K_FSYNC, "fsync", fd, result = real_fsync(fd))
}

int fdatasync(int fd) {
    load_fdatasync();
    int result;
    FD_CALL(K_FSYNC, "fdatasync", fd, result = real_fdatasync(fd))
}

int ftruncate(int fd, off_t length) {
    load_ftruncate();
    int result;
    FD_CALL(K_FTRUNCATE, "ftruncate", fd, result = real_ftruncate(fd, length))
}

int ftruncate64(int fd, off_t length) {
    load_ftruncate64();
    int result;
    FD_CALL(K_FTRUNCATE, "ftruncate64", fd, result = real_ftruncate64(fd, length))
}

#define PATH_CALL(call_name, oldpath, newpath, do_real)                                         \
    long n = 0;                                                                                  \
    const char *path = under_dir(newpath) ? (newpath) : (oldpath);                               \
    action_t act = decide(K_RENAME, path, &n);                                                   \
    if (act == FAIL) {                                                                           \
        note(n, call_name, path, -g_err);                                                        \
        errno = g_err;                                                                           \
        return -1;                                                                               \
    }                                                                                            \
    int result = do_real;                                                                        \
    note(n, call_name, path, result);                                                            \
    return result;

int rename(const char *oldpath, const char *newpath) {
    load_rename();
    PATH_CALL("rename", oldpath, newpath, real_rename(oldpath, newpath))
}

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
    load_renameat();
    PATH_CALL("renameat", oldpath, newpath, real_renameat(olddirfd, oldpath, newdirfd, newpath))
}

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
              unsigned int flags) {
    load_renameat2();
    PATH_CALL("renameat2", oldpath, newpath,
              real_renameat2(olddirfd, oldpath, newdirfd, newpath, flags))
}
