/* moe_internal.h — the nl_moe struct shared by the files of src/moe (private to the module). */
#ifndef NEURONLAB_MOE_INTERNAL_H
#define NEURONLAB_MOE_INTERNAL_H

#include "neuronlab/moe.h"

struct nl_moe {
    nl_moe_info info;
    int n_moe;              /* MoE layers */
    int *layer_ids;         /* (n_moe) ascending */
    nl_moe_layer *layers;   /* (n_moe) */
    int *index_of;          /* (L) position in layers, -1 for dense layers */
};

/* Allocates an empty nl_moe for the layer list (ascending, distinct, < L) with every array of
 * every layer (zeroed). Strings of info stay NULL. NULL on allocation failure. */
nl_moe *nl_moe_alloc(int L, int D, int F, int E, const int *layers, int n_layers);

/* Allocates mlp_w1 (E, D) and mlp_w2 (E, E) of every layer (zeroed); 0, or -1 on allocation
 * failure (nl_moe_close frees what was allocated). */
int nl_moe_alloc_mlp(nl_moe *m);

/* The weight w (n_out, n_in) element (o, i) whatever the storage order. */
static inline float nl_moe_mat_at(const nl_mat *w, int o, int i) {
    return w->trans ? w->w[(size_t)i * w->ld + o] : w->w[(size_t)o * w->ld + i];
}

#endif
