/* checkpoint.h — the trainer's resumable state in one file (out/checkpoint.bin).
 *
 * Format (version 1, little-endian):
 *   bytes 0..7    magic "NLCKPT\0\0"
 *   bytes 8..11   u32 version (1)          bytes 12..15  u32 0 (reserved)
 *   bytes 16..23  u64 n = header length
 *   n bytes       JSON header: {"format": "neuronlab.checkpoint", "version": 1, "neuronlab_version",
 *                 "step", "adam_t", "n_params", "elapsed", "tokens", "data_hash" (hex),
 *                 "rng": {"s" (hex), "spare", "has_spare"}, "config": {the resolved config},
 *                 "tensors": [[name, offset, numel], …]}
 *   zero padding to a multiple of 64 bytes
 *   f32 params[n_params], f32 adam_m[n_params], f32 adam_v[n_params]
 *   u64 FNV-1a of every byte before it
 * Rules: the magic, version, sizes and checksum are checked on load (a damaged or foreign file is an
 * error naming it). Saving is atomic (PATH.tmp, fsync, rename): the previous checkpoint survives any
 * crash during a save.
 * Checked by tests/test_train_data.c (round trip, damage) and tests/train.sh (resume).
 */
#ifndef NEURONLAB_CHECKPOINT_H
#define NEURONLAB_CHECKPOINT_H

#include <jansson.h>

#include "neuronlab/rng.h"
#include "neuronlab/common.h"

#define NL_CHECKPOINT_VERSION 1

typedef struct {
    int64_t step;        /* optimizer steps done */
    int64_t adam_t;      /* AdamW step counter */
    int64_t n_params;
    float *params, *m, *v; /* (n_params) each: borrowed by save, owned after load */
    double elapsed;      /* training wall seconds so far (all sessions) */
    int64_t tokens;      /* training tokens processed so far */
    uint64_t data_hash;  /* token_stream hash of the training split */
    nl_rng rng;          /* the trainer's random state */
    json_t *config;      /* resolved config: borrowed by save, owned after load */
    json_t *tensors;     /* [[name, offset, numel], …]: borrowed by save, owned after load (may be NULL) */
} nl_checkpoint;

nl_status nl_checkpoint_save(nl_ctx *ctx, const char *path, const nl_checkpoint *ck);
/* Loads path into *ck (zeroed first); release with nl_checkpoint_release. */
nl_status nl_checkpoint_load(nl_ctx *ctx, const char *path, nl_checkpoint *ck);
void nl_checkpoint_release(nl_checkpoint *ck);

#endif
