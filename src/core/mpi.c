/* mpi.c — the MPI layer (contract in mpi.h). All MPI code of neuronlab is here, behind
 * NL_MPI; the serial build compiles the no-op half at the end of the file. */
#include "neuronlab/mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int pipe_P = 1; /* pipeline ranks (1: off) */

void nl_mpi_block_of(int n, int rank, int size, int *lo, int *hi) {
    if (size < 1) size = 1;
    const int q = n / size, r = n % size;
    *lo = rank * q + (rank < r ? rank : r);
    *hi = *lo + q + (rank < r ? 1 : 0);
}

int nl_mpi_pipeline(void) { return pipe_P; }

void nl_mpi_stage(int L, int *lo, int *hi) {
    if (pipe_P <= 1) {
        *lo = 0, *hi = L;
        return;
    }
    nl_mpi_block_of(L, nl_mpi_rank(), pipe_P, lo, hi);
}

nl_status nl_mpi_check_pipeline(nl_ctx *ctx, int n_layers) {
    if (pipe_P > n_layers)
        return nl_errorf(ctx, NL_EINVAL, "--pipeline %d: the model has %d layers, so a rank would get no layer (use at most %d ranks)",
                         pipe_P, n_layers, n_layers);
    return NL_OK;
}

#ifdef NL_MPI

#include <fcntl.h>
#include <limits.h>
#include <mpi.h>
#include <time.h>
#include <unistd.h>

/* MPI counts are int: long messages go in pieces of at most 2^30 elements */
#define NL_MPI_PIECE ((size_t)1 << 30)

static int g_rank = 0, g_size = 1, g_init = 0, g_agreed = 0, g_stderr = -1;
static MPI_Comm g_exit_comm = MPI_COMM_NULL; /* finalize's timed barrier: never mixed with the work's collectives */

int nl_mpi_compiled(void) { return 1; }

int nl_mpi_init(int *argc, char ***argv) {
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "neuronlab: cannot start MPI\n");
        return -1;
    }
    g_init = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    MPI_Comm_dup(MPI_COMM_WORLD, &g_exit_comm);
    if (g_rank > 0) {
        fflush(stdout), fflush(stderr);
        g_stderr = dup(2);
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1), dup2(fd, 2);
            close(fd);
        }
    }
    return 0;
}

int nl_mpi_finalize(int rc, const nl_ctx *ctx) {
    if (!g_init) return rc;
    fflush(stdout), fflush(stderr);
    if (g_size > 1) {
        /* Every rank meets here on its own communicator. A rank that failed without an
         * agreement waits 5 s for the others (they all failed alike, e.g. a bad --moe folder,
         * or finished); if they do not come (they wait in a collective for it), it aborts. */
        MPI_Request req;
        MPI_Ibarrier(g_exit_comm, &req);
        const int patient = rc == 0 || rc == 2 || g_agreed;
        int done = 0;
        struct timespec ts = {0, 20 * 1000 * 1000}; /* poll politely: rank 0 may still be writing */
        for (int i = 0; (patient || i < 250) && !done; i++) { /* 5 s when impatient */
            MPI_Test(&req, &done, MPI_STATUS_IGNORE);
            if (!done) nanosleep(&ts, NULL);
        }
        if (!done) {
            if (g_rank > 0 && g_stderr >= 0) {
                char line[1200];
                int n = snprintf(line, sizeof line, "neuronlab: rank %d: %s\n", g_rank, ctx && ctx->msg[0] ? ctx->msg : "failed");
                if (write(g_stderr, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1)) < 0) { /* nothing to do */ }
            }
            MPI_Abort(MPI_COMM_WORLD, rc);
        }
    }
    MPI_Comm_free(&g_exit_comm);
    MPI_Finalize();
    return rc;
}

int nl_mpi_rank(void) { return g_rank; }
int nl_mpi_size(void) { return g_size; }
int nl_mpi_is_root(void) { return g_rank == 0; }
void nl_mpi_barrier(void) {
    if (g_init) MPI_Barrier(MPI_COMM_WORLD);
}

nl_status nl_mpi_agree(nl_ctx *ctx, nl_status st) {
    if (!g_init || g_size == 1) return st;
    int mine = st != NL_OK ? g_rank : g_size, first = g_size;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == g_size) return NL_OK;
    int s = (int)st;
    char msg[sizeof ctx->msg + 32];
    if (g_rank == first) {
        if (first > 0) snprintf(msg, sizeof msg, "rank %d: %s", first, ctx->msg[0] ? ctx->msg : nl_status_name(st));
        else snprintf(msg, sizeof msg, "%s", ctx->msg);
    }
    MPI_Bcast(&s, 1, MPI_INT, first, MPI_COMM_WORLD);
    MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first, MPI_COMM_WORLD);
    memcpy(ctx->msg, msg, sizeof ctx->msg - 1);
    ctx->msg[sizeof ctx->msg - 1] = 0;
    g_agreed = 1;
    return (nl_status)s;
}

nl_status nl_mpi_check_same(nl_ctx *ctx, const char *what, const char *desc, uint64_t h) {
    if (!g_init || g_size == 1) return NL_OK;
    unsigned long long mine = h, *all = malloc((size_t)g_size * sizeof *all);
    char root_desc[1024];
    snprintf(root_desc, sizeof root_desc, "%s", desc ? desc : "");
    MPI_Bcast(root_desc, (int)sizeof root_desc, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (!all) return nl_mpi_agree(ctx, nl_errorf(ctx, NL_ENOMEM, "out of memory"));
    MPI_Allgather(&mine, 1, MPI_UNSIGNED_LONG_LONG, all, 1, MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD);
    nl_status st = NL_OK;
    if (g_rank > 0 && all[g_rank] != all[0])
        st = nl_errorf(ctx, NL_EINVAL, "ranks disagree about the %s: rank %d has '%s' (fnv1a64 %016llx) but rank 0 has '%s' "
                       "(fnv1a64 %016llx)", what, g_rank, desc ? desc : "", all[g_rank], root_desc, all[0]);
    free(all);
    /* the message names the rank itself: agree without the "rank R:" prefix */
    int mine_f = st != NL_OK ? g_rank : g_size, first = g_size;
    MPI_Allreduce(&mine_f, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == g_size) return NL_OK;
    MPI_Bcast(ctx->msg, (int)sizeof ctx->msg, MPI_CHAR, first, MPI_COMM_WORLD);
    g_agreed = 1;
    return NL_EINVAL;
}

int nl_mpi_data_size(void) { return pipe_P > 1 ? 1 : g_size; }

void nl_mpi_block(int n, int *lo, int *hi) {
    if (pipe_P > 1) {
        *lo = 0, *hi = n;
        return;
    }
    nl_mpi_block_of(n, g_rank, g_size, lo, hi);
}

nl_status nl_mpi_allgather_blocks(nl_ctx *ctx, void *base, size_t elem, int n) {
    const int S = nl_mpi_data_size();
    if (!g_init || S == 1) return NL_OK;
    /* MPI counts are int: send in bytes when they fit, else in units of elem bytes */
    int *counts = malloc((size_t)S * sizeof(int)), *displs = malloc((size_t)S * sizeof(int));
    if (!counts || !displs) {
        free(counts), free(displs);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    MPI_Datatype t;
    MPI_Type_contiguous((int)elem, MPI_BYTE, &t);
    MPI_Type_commit(&t);
    for (int r = 0; r < S; r++) {
        int lo, hi;
        nl_mpi_block_of(n, r, S, &lo, &hi);
        counts[r] = hi - lo, displs[r] = lo;
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, base, counts, displs, t, MPI_COMM_WORLD);
    MPI_Type_free(&t);
    free(counts), free(displs);
    return NL_OK;
}

int64_t nl_mpi_exscan(int64_t v) {
    long long in = v, out = 0;
    if (!g_init || g_size == 1) return 0;
    MPI_Exscan(&in, &out, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    return g_rank == 0 ? 0 : (int64_t)out; /* MPI leaves rank 0's result undefined */
}

int64_t nl_mpi_sum(int64_t v) {
    long long in = v, out = 0;
    if (!g_init || g_size == 1) return v;
    MPI_Allreduce(&in, &out, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    return (int64_t)out;
}

void nl_mpi_bcast_bytes(void *buf, size_t n) {
    if (!g_init || g_size == 1) return;
    for (size_t o = 0; o < n; o += NL_MPI_PIECE)
        MPI_Bcast((char *)buf + o, (int)(n - o < NL_MPI_PIECE ? n - o : NL_MPI_PIECE), MPI_BYTE, 0, MPI_COMM_WORLD);
}

nl_status nl_mpi_gather_bytes(nl_ctx *ctx, const void *mine, size_t n, char **all, size_t *total) {
    *all = NULL, *total = 0;
    if (!g_init || g_size == 1) {
        if (!(*all = malloc(n ? n : 1))) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        if (n) memcpy(*all, mine, n);
        *total = n;
        return NL_OK;
    }
    long long len = (long long)n, *lens = g_rank == 0 ? malloc((size_t)g_size * sizeof *lens) : NULL;
    int *counts = g_rank == 0 ? malloc((size_t)g_size * sizeof(int)) : NULL, *displs = g_rank == 0 ? malloc((size_t)g_size * sizeof(int)) : NULL;
    nl_status st = g_rank == 0 && (!lens || !counts || !displs) ? NL_ENOMEM : NL_OK;
    MPI_Gather(&len, 1, MPI_LONG_LONG, lens, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
    long long sum = 0;
    for (int r = 0; st == NL_OK && g_rank == 0 && r < g_size; r++) {
        counts[r] = (int)lens[r], displs[r] = (int)sum;
        sum += lens[r];
        if (sum > INT_MAX) st = NL_EINVAL;
    }
    if (st == NL_OK && g_rank == 0 && !(*all = malloc(sum ? (size_t)sum : 1))) st = NL_ENOMEM;
    int s = (int)st;
    MPI_Bcast(&s, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (s == NL_OK) MPI_Gatherv(mine, (int)n, MPI_BYTE, *all, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
    free(lens), free(counts), free(displs);
    if (s != NL_OK) {
        free(*all);
        *all = NULL;
        return nl_errorf(ctx, (nl_status)s, s == NL_ENOMEM ? "out of memory" : "more than 2 GiB to gather on rank 0");
    }
    *total = g_rank == 0 ? (size_t)sum : 0;
    return NL_OK;
}

nl_status nl_mpi_set_pipeline(nl_ctx *ctx, int P) {
    if (P < 1) return nl_errorf(ctx, NL_EINVAL, "--pipeline needs at least 1 rank");
    if (P != g_size)
        return nl_errorf(ctx, NL_EINVAL, "--pipeline %d needs exactly %d MPI ranks (mpirun -np %d), this run has %d", P, P, P, g_size);
    pipe_P = P;
    return NL_OK;
}


void nl_mpi_send_next(const float *x, size_t n) {
    if (pipe_P <= 1 || g_rank + 1 >= pipe_P) return;
    for (size_t o = 0; o < n; o += NL_MPI_PIECE)
        MPI_Send(x + o, (int)(n - o < NL_MPI_PIECE ? n - o : NL_MPI_PIECE), MPI_FLOAT, g_rank + 1, 7, MPI_COMM_WORLD);
}

void nl_mpi_recv_prev(float *x, size_t n) {
    if (pipe_P <= 1 || g_rank == 0) return;
    for (size_t o = 0; o < n; o += NL_MPI_PIECE)
        MPI_Recv(x + o, (int)(n - o < NL_MPI_PIECE ? n - o : NL_MPI_PIECE), MPI_FLOAT, g_rank - 1, 7, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
}

void nl_mpi_bcast_last(double *x, size_t n) {
    if (pipe_P <= 1) return;
    for (size_t o = 0; o < n; o += NL_MPI_PIECE)
        MPI_Bcast(x + o, (int)(n - o < NL_MPI_PIECE ? n - o : NL_MPI_PIECE), MPI_DOUBLE, pipe_P - 1, MPI_COMM_WORLD);
}

#else /* the serial build: one process, rank 0 of 1 */

int nl_mpi_compiled(void) { return 0; }
int nl_mpi_init(int *argc, char ***argv) {
    (void)argc, (void)argv;
    return 0;
}
int nl_mpi_finalize(int rc, const nl_ctx *ctx) {
    (void)ctx;
    return rc;
}
int nl_mpi_rank(void) { return 0; }
int nl_mpi_size(void) { return 1; }
int nl_mpi_is_root(void) { return 1; }
void nl_mpi_barrier(void) {}
nl_status nl_mpi_agree(nl_ctx *ctx, nl_status st) {
    (void)ctx;
    return st;
}
nl_status nl_mpi_check_same(nl_ctx *ctx, const char *what, const char *desc, uint64_t h) {
    (void)ctx, (void)what, (void)desc, (void)h;
    return NL_OK;
}
int nl_mpi_data_size(void) { return 1; }
void nl_mpi_block(int n, int *lo, int *hi) { *lo = 0, *hi = n; }
nl_status nl_mpi_allgather_blocks(nl_ctx *ctx, void *base, size_t elem, int n) {
    (void)ctx, (void)base, (void)elem, (void)n;
    return NL_OK;
}
nl_status nl_mpi_set_pipeline(nl_ctx *ctx, int P) {
    if (P != 1)
        return nl_errorf(ctx, NL_EUNSUPPORTED, "--pipeline %d needs the MPI build (make mpi; mpirun -np %d build-mpi/neuronlab ...)", P, P);
    return NL_OK;
}
int64_t nl_mpi_exscan(int64_t v) {
    (void)v;
    return 0;
}
int64_t nl_mpi_sum(int64_t v) { return v; }
void nl_mpi_bcast_bytes(void *buf, size_t n) { (void)buf, (void)n; }
nl_status nl_mpi_gather_bytes(nl_ctx *ctx, const void *mine, size_t n, char **all, size_t *total) {
    *total = 0;
    if (!(*all = malloc(n ? n : 1))) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (n) memcpy(*all, mine, n);
    *total = n;
    return NL_OK;
}
void nl_mpi_send_next(const float *x, size_t n) { (void)x, (void)n; }
void nl_mpi_recv_prev(float *x, size_t n) { (void)x, (void)n; }
void nl_mpi_bcast_last(double *x, size_t n) { (void)x, (void)n; }

#endif
