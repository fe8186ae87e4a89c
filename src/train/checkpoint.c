/* checkpoint.c — save and load the trainer's state (format in checkpoint.h).
 * Checked by tests/test_train_data.c and tests/train.sh. */
#include "neuronlab/checkpoint.h"

#include "neuronlab/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char MAGIC[8] = {'N', 'L', 'C', 'K', 'P', 'T', 0, 0};

static void put_u32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put_u64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static uint32_t get_u32(const unsigned char *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get_u64(const unsigned char *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

/* fwrite that also hashes */
static int hwrite(FILE *f, uint64_t *h, const void *p, size_t n) {
    *h = nl_fnv1a(*h, p, n);
    return fwrite(p, 1, n, f) == n;
}

nl_status nl_checkpoint_save(nl_ctx *ctx, const char *path, const nl_checkpoint *ck) {
    json_t *hd = json_object();
    char hex[32];
    json_object_set_new(hd, "format", json_string("neuronlab.checkpoint"));
    json_object_set_new(hd, "version", json_integer(NL_CHECKPOINT_VERSION));
    json_object_set_new(hd, "neuronlab_version", json_string(NL_VERSION));
    json_object_set_new(hd, "step", json_integer(ck->step));
    json_object_set_new(hd, "adam_t", json_integer(ck->adam_t));
    json_object_set_new(hd, "n_params", json_integer(ck->n_params));
    json_object_set_new(hd, "elapsed", json_real(ck->elapsed));
    json_object_set_new(hd, "tokens", json_integer(ck->tokens));
    snprintf(hex, sizeof hex, "%016" PRIx64, ck->data_hash);
    json_object_set_new(hd, "data_hash", json_string(hex));
    json_t *rng = json_object();
    snprintf(hex, sizeof hex, "%016" PRIx64, ck->rng.s);
    json_object_set_new(rng, "s", json_string(hex));
    json_object_set_new(rng, "spare", json_real(ck->rng.spare));
    json_object_set_new(rng, "has_spare", json_integer(ck->rng.has_spare));
    json_object_set_new(hd, "rng", rng);
    json_object_set(hd, "config", ck->config ? ck->config : json_null());
    if (ck->tensors) json_object_set(hd, "tensors", ck->tensors);
    char *hj = json_dumps(hd, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(hd);
    if (!hj) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    const size_t hl = strlen(hj), pad = (64 - (24 + hl) % 64) % 64;

    nl_atomic_file af;
    nl_status st = nl_atomic_open(ctx, path, &af);
    if (st != NL_OK) {
        free(hj);
        return nl_errorf(ctx, NL_EIO, "cannot write checkpoint %s", ctx->msg + strlen("cannot write "));
    }
    FILE *f = af.f;
    unsigned char head[24] = {0}, zeros[64] = {0}, sum[8];
    memcpy(head, MAGIC, 8);
    put_u32(head + 8, NL_CHECKPOINT_VERSION);
    put_u64(head + 16, hl);
    uint64_t h = NL_FNV_INIT;
    const size_t nb = (size_t)ck->n_params * sizeof(float);
    int ok = hwrite(f, &h, head, 24) && hwrite(f, &h, hj, hl) && hwrite(f, &h, zeros, pad) &&
             hwrite(f, &h, ck->params, nb) && hwrite(f, &h, ck->m, nb) && hwrite(f, &h, ck->v, nb);
    free(hj);
    put_u64(sum, h);
    ok = ok && fwrite(sum, 1, 8, f) == 8;
    if (!ok) {
        int err = errno;
        nl_atomic_abort(&af);
        return nl_errorf(ctx, NL_EIO, "cannot write checkpoint '%s': %s", path, strerror(err ? err : EIO));
    }
    if ((st = nl_atomic_commit(ctx, &af)) != NL_OK)
        return nl_errorf(ctx, NL_EIO, "cannot write checkpoint %s", ctx->msg + strlen("cannot write "));
    return NL_OK;
}

static int hread(FILE *f, uint64_t *h, void *p, size_t n) {
    if (fread(p, 1, n, f) != n) return 0;
    *h = nl_fnv1a(*h, p, n);
    return 1;
}

static int json_i64(json_t *o, const char *k, int64_t *out) {
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v)) return 0;
    *out = json_integer_value(v);
    return 1;
}

static int json_hex(json_t *o, const char *k, uint64_t *out) {
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v)) return 0;
    char *end;
    *out = strtoull(json_string_value(v), &end, 16);
    return *end == 0;
}

nl_status nl_checkpoint_load(nl_ctx *ctx, const char *path, nl_checkpoint *ck) {
    memset(ck, 0, sizeof *ck);
    FILE *f = fopen(path, "rb");
    if (!f) return nl_errorf(ctx, NL_EIO, "cannot open checkpoint '%s': %s", path, strerror(errno));
    nl_status st = NL_OK;
    unsigned char head[24], sum[8];
    char *hj = NULL;
    json_t *hd = NULL;
    uint64_t h = NL_FNV_INIT;
    fseek(f, 0, SEEK_END);
    const long fsize = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (!hread(f, &h, head, 24) || memcmp(head, MAGIC, 8) != 0) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': not a neuronlab checkpoint (bad magic)", path);
        goto done;
    }
    const uint32_t version = get_u32(head + 8);
    if (version != NL_CHECKPOINT_VERSION) {
        st = nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': checkpoint version %u is not supported (this build reads version %d)",
                       path, version, NL_CHECKPOINT_VERSION);
        goto done;
    }
    const uint64_t hl = get_u64(head + 16);
    if (hl > (uint64_t)fsize || hl > (1u << 30)) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': header length %llu exceeds the file size", path, (unsigned long long)hl);
        goto done;
    }
    if (!(hj = malloc(hl + 1)) || !hread(f, &h, hj, hl)) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': truncated header", path);
        goto done;
    }
    hj[hl] = 0;
    json_error_t jerr;
    hd = json_loads(hj, 0, &jerr);
    double el;
    int64_t has_spare = 0;
    json_t *rng = hd ? json_object_get(hd, "rng") : NULL;
    if (!hd || !json_i64(hd, "step", &ck->step) || !json_i64(hd, "adam_t", &ck->adam_t) ||
        !json_i64(hd, "n_params", &ck->n_params) || !json_i64(hd, "tokens", &ck->tokens) ||
        !json_hex(hd, "data_hash", &ck->data_hash) || !json_is_object(rng) || !json_hex(rng, "s", &ck->rng.s) ||
        !json_i64(rng, "has_spare", &has_spare) || !json_is_number(json_object_get(hd, "elapsed")) ||
        !json_is_object(json_object_get(hd, "config")) || ck->n_params <= 0) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': damaged checkpoint header", path);
        goto done;
    }
    el = json_number_value(json_object_get(hd, "elapsed"));
    ck->elapsed = el;
    ck->rng.spare = json_number_value(json_object_get(rng, "spare"));
    ck->rng.has_spare = (int)has_spare;
    const size_t pad = (64 - (24 + hl) % 64) % 64, nb = (size_t)ck->n_params * sizeof(float);
    if ((uint64_t)fsize != 24 + hl + pad + 3 * (uint64_t)nb + 8) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': file has %ld bytes, its header implies %llu (truncated or damaged)", path,
                       fsize, (unsigned long long)(24 + hl + pad + 3 * (uint64_t)nb + 8));
        goto done;
    }
    unsigned char zeros[64];
    ck->params = malloc(nb);
    ck->m = malloc(nb);
    ck->v = malloc(nb);
    if (!ck->params || !ck->m || !ck->v) {
        st = nl_errorf(ctx, NL_ENOMEM, "'%s': out of memory", path);
        goto done;
    }
    if (!hread(f, &h, zeros, pad) || !hread(f, &h, ck->params, nb) || !hread(f, &h, ck->m, nb) ||
        !hread(f, &h, ck->v, nb) || fread(sum, 1, 8, f) != 8) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': truncated", path);
        goto done;
    }
    if (get_u64(sum) != h) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': checksum mismatch (the file is damaged)", path);
        goto done;
    }
    ck->config = json_incref(json_object_get(hd, "config"));
    ck->tensors = json_incref(json_object_get(hd, "tensors"));
done:
    free(hj);
    json_decref(hd);
    fclose(f);
    if (st != NL_OK) nl_checkpoint_release(ck);
    return st;
}

void nl_checkpoint_release(nl_checkpoint *ck) {
    if (!ck) return;
    free(ck->params);
    free(ck->m);
    free(ck->v);
    json_decref(ck->config);
    json_decref(ck->tensors);
    memset(ck, 0, sizeof *ck);
}
