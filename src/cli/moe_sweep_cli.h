/* moe_sweep_cli.h — helpers of the moe-sweep and moe-usage commands (moe_sweep_cli.c). */
#ifndef NEURONLAB_MOE_SWEEP_CLI_H
#define NEURONLAB_MOE_SWEEP_CLI_H

#include "analyses/moe_sweep.h"
#include "cli/cli.h"
#include "neuronlab/progress.h"

/* The folder has router r: the oracle always, sim always (every folder stores ĉ_e), any other
 * only when it is the folder's trained router (nl_moe_info.router). */
int nl_cli_moe_has_router(const nl_moe *moe, int r);
/* NL_OK, or NL_EINVAL "'DIR/manifest.json' carries no 'x' router (…)". */
nl_status nl_cli_moe_check_router(nl_ctx *ctx, const nl_moe *moe, const char *dir, int r);

/* A walk over every document without the LM head: ffn (borrowed) attached to the forward pass;
 * usage (may be NULL) gets each scored row's selections of every MoE layer; prog (may be NULL)
 * counts each token once. */
typedef struct {
    nl_moe_ffn *ffn;
    nl_moe_usage *usage;
    int d; /* the document being walked */
    nl_progress *prog;
} nl_cli_moe_walk;
nl_status nl_cli_moe_walk_all(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int stride, nl_cli_moe_walk *w);

/* Creates the expert FFN (K, router, fill, recall) for f's batch and attaches it; *out owned. */
nl_status nl_cli_moe_make_ffn(nl_ctx *ctx, const nl_moe *moe, nl_model *m, nl_forward *f, int K, int router, int fill,
                              int recall, nl_moe_ffn **out);
/* Detaches and destroys *x (NULL: no-op); sets it to NULL. */
void nl_cli_moe_drop_ffn(nl_moe_ffn **x, nl_forward *f);

#endif
