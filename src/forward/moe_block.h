/* moe_block.h — scratch of the native mixture-of-experts FFN (private to src/forward).
 *
 * The forward pass owns one scratch (sized for its batch) and hands it to nl_ffn_moe as the
 * user pointer of every MoE layer (forward.h). Checked by tests/test_moe_models.c.
 */
#ifndef NEURONLAB_FORWARD_MOE_BLOCK_H
#define NEURONLAB_FORWARD_MOE_BLOCK_H

#include "neuronlab/model.h"

typedef struct nl_moe_scratch nl_moe_scratch;

/* Buffers for up to max_T tokens of the model c (c->n_experts > 0). NULL when out of memory. */
nl_moe_scratch *nl_moe_scratch_create(const nl_config *c, int max_T);
void nl_moe_scratch_destroy(nl_moe_scratch *s); /* NULL is a no-op */

#endif
