// LD_PRELOAD library for the store's tests (failing-io.ts compiles it): a disk that fails some
// reads and writes of the SQLite files, from the moment the file $FAIL_IO_FLAG exists until it
// is removed. Only the calls SQLite makes (pread64, pwrite64, fsync, fdatasync and their
// aliases) are caught.
//  - Reads of a file whose path ends with $FAIL_IO_READ_SUFFIX: the first $FAIL_IO_READS fail
//    with errno $FAIL_IO_ERRNO (EIO by default), later ones pass.
//  - Writes of a file whose path ends with $FAIL_IO_WRITE_SUFFIX: the first $FAIL_IO_WRITES_PASS
//    pass, later ones fail with ENOSPC.
//  - Syncs of a file whose path ends with $FAIL_IO_SYNC_SUFFIX fail with EIO (a disk refusing
//    fsync: a WAL checkpoint that copied the whole WAL fails).
// And a disk that stalls, for a test to act at a known point of a WAL checkpoint: while the file
// $FAIL_IO_HOLD exists, each write and sync of a file whose path ends with $FAIL_IO_HOLD_SUFFIX
// waits: it creates $FAIL_IO_HOLD.write (or .sync), and goes on (then fails or not, as above) once
// the test has removed that file. One call at a time: the next waits again while $FAIL_IO_HOLD is there.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>

/* Whether the file named by `flag_var` exists and `fd` is a file whose path ends with the value of `suffix_var`. */
static int caught_while(int fd, const char *flag_var, const char *suffix_var) {
  const char *flag = getenv(flag_var), *suffix = getenv(suffix_var);
  if (!flag || !suffix || access(flag, F_OK) != 0) return 0;
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t l = readlink(link, path, sizeof path - 1);
  if (l <= 0) return 0;
  path[l] = 0;
  size_t n = strlen(suffix);
  return (size_t)l >= n && strcmp(path + l - n, suffix) == 0;
}

static int caught(int fd, const char *suffix_var) {
  return caught_while(fd, "FAIL_IO_FLAG", suffix_var);
}

/* The stall: announces the call (`what`) beside $FAIL_IO_HOLD, and waits for the test to remove that announcement. */
static void hold(int fd, const char *what) {
  if (!caught_while(fd, "FAIL_IO_HOLD", "FAIL_IO_HOLD_SUFFIX")) return;
  char held[4096];
  snprintf(held, sizeof held, "%s.%s", getenv("FAIL_IO_HOLD"), what);
  FILE *f = fopen(held, "w");
  if (f) fclose(f);
  while (access(held, F_OK) == 0) usleep(1000);
}

static long number(const char *var, long otherwise) {
  const char *v = getenv(var);
  return v ? atol(v) : otherwise;
}

static long reads = 0, writes = 0;

static int read_fails(int fd) {
  return caught(fd, "FAIL_IO_READ_SUFFIX") && reads++ < number("FAIL_IO_READS", 1);
}

static int write_fails(int fd) {
  return caught(fd, "FAIL_IO_WRITE_SUFFIX") && writes++ >= number("FAIL_IO_WRITES_PASS", 0);
}

#define READ(name)                                                                 \
  ssize_t name(int fd, void *buf, size_t count, off_t offset) {                    \
    static ssize_t (*real)(int, void *, size_t, off_t);                            \
    if (!real) real = dlsym(RTLD_NEXT, #name);                                     \
    if (read_fails(fd)) { errno = (int)number("FAIL_IO_ERRNO", EIO); return -1; }  \
    return real(fd, buf, count, offset);                                           \
  }
#define WRITE(name)                                                                \
  ssize_t name(int fd, const void *buf, size_t count, off_t offset) {              \
    static ssize_t (*real)(int, const void *, size_t, off_t);                      \
    if (!real) real = dlsym(RTLD_NEXT, #name);                                     \
    hold(fd, "write");                                                             \
    if (write_fails(fd)) { errno = ENOSPC; return -1; }                            \
    return real(fd, buf, count, offset);                                           \
  }
READ(pread64)
READ(pread)
WRITE(pwrite64)
WRITE(pwrite)
#define SYNC(name)                                                                 \
  int name(int fd) {                                                               \
    static int (*real)(int);                                                       \
    if (!real) real = dlsym(RTLD_NEXT, #name);                                     \
    hold(fd, "sync");                                                              \
    if (caught(fd, "FAIL_IO_SYNC_SUFFIX")) { errno = EIO; return -1; }             \
    return real(fd);                                                               \
  }
SYNC(fsync)
SYNC(fdatasync)
