/* atomic_file.c — temporary file + fsync + rename (contract in atomic_file.h).
 * Checked by tests/test_common.c. */
#include "neuronlab/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void release(nl_atomic_file *a) {
    free(a->tmp);
    free(a->path);
    a->f = NULL, a->tmp = NULL, a->path = NULL;
}

nl_status nl_atomic_open(nl_ctx *ctx, const char *path, nl_atomic_file *a) {
    memset(a, 0, sizeof *a);
    size_t n = strlen(path);
    a->path = strdup(path);
    a->tmp = malloc(n + 16);
    if (!a->path || !a->tmp) {
        release(a);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    memcpy(a->tmp, path, n);
    memcpy(a->tmp + n, ".tmp.XXXXXX", 12);
    int fd = mkstemp(a->tmp);
    if (fd < 0) {
        int e = errno;
        release(a);
        return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(e));
    }
    mode_t um = umask(0);
    umask(um);
    (void)fchmod(fd, 0666 & ~um); /* mkstemp makes 0600; the output is an ordinary file */
    a->f = fdopen(fd, "wb");
    if (!a->f) {
        int e = errno;
        close(fd);
        unlink(a->tmp);
        release(a);
        return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(e));
    }
    return NL_OK;
}

static void fsync_dir_of(const char *path) {
    char *dup = strdup(path);
    if (!dup) return;
    int fd = open(dirname(dup), O_RDONLY | O_DIRECTORY);
    free(dup);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

nl_status nl_atomic_commit(nl_ctx *ctx, nl_atomic_file *a) {
    NL_ASSERT(a->f);
    errno = 0;
    int e = 0;
    if (fflush(a->f) != 0 || ferror(a->f) || fsync(fileno(a->f)) != 0) e = errno ? errno : EIO;
    if (fclose(a->f) != 0 && !e) e = errno ? errno : EIO;
    a->f = NULL;
    if (!e && rename(a->tmp, a->path) != 0) e = errno;
    if (e) {
        unlink(a->tmp);
        nl_status st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", a->path, strerror(e));
        release(a);
        return st;
    }
    fsync_dir_of(a->path);
    release(a);
    return NL_OK;
}

void nl_atomic_abort(nl_atomic_file *a) {
    if (a->f) fclose(a->f);
    if (a->tmp) unlink(a->tmp);
    release(a);
}

nl_status nl_write_file_atomic(nl_ctx *ctx, const char *path, const void *data, size_t n) {
    nl_atomic_file a;
    nl_status st = nl_atomic_open(ctx, path, &a);
    if (st != NL_OK) return st;
    if (n && fwrite(data, 1, n, a.f) != n) {
        int e = errno;
        nl_atomic_abort(&a);
        return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(e ? e : EIO));
    }
    return nl_atomic_commit(ctx, &a);
}
