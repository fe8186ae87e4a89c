/* ablate_neuron.c — ablate one FFN neuron with a hook and print what changes.
 *
 *   ablate_neuron MODEL DATA.jsonl LAYER NEURON
 *
 * Opens MODEL (a Hugging Face folder, GGUF or llama2.c file) through the C API of
 * libneuronlab.so (neuronlab/capi.h), scores DATA.jsonl as `neuronlab ppl` does, then again with
 * a hook on "ffn_act" at LAYER that zeroes column NEURON (the neuron's activation a, the input of
 * the down projection: what `neuronlab prune --neurons` zeroes), and prints the mean NLL and
 * perplexity of both runs and the mean L2 norm of the last layer's residual stream over the
 * first document's tokens with and without the ablation.
 * Build against an installed neuronlab:  cc ablate_neuron.c $(pkg-config --cflags --libs neuronlab)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <neuronlab/capi.h>

static int zero_neuron(void *user, const char *point, int layer, int pos0, int T, int width, float *x) {
    const int neuron = *(const int *)user;
    for (int t = 0; t < T; t++) x[(size_t)t * width + neuron] = 0.0f;
    return 0;
}

typedef struct {
    double sum; /* Σ_t ‖resid[t]‖₂ */
    long n;
} norm_acc;

static int resid_norm(void *user, const char *point, int layer, int pos0, int T, int width, float *x) {
    norm_acc *a = user;
    for (int t = 0; t < T; t++) {
        double s = 0;
        for (int j = 0; j < width; j++) s += (double)x[(size_t)t * width + j] * x[(size_t)t * width + j];
        a->sum += sqrt(s);
        a->n++;
    }
    return 0;
}

static int fail(nl_api *h, const char *what) {
    fprintf(stderr, "ablate_neuron: %s: %s\n", what, nl_api_errmsg(h));
    nl_api_close(h);
    return 1;
}

/* Mean NLL over the dataset's predictions, and the last layer's mean residual norm on document 0. */
static int measure(nl_api *h, nl_api_dataset *ds, double *nll_mean, long *count, double *norm) {
    const int D = nl_api_dataset_size(ds), L = (int)nl_api_dim(h, "n_layers");
    double *nll = malloc(sizeof(double) * (size_t)D);
    int64_t *n = malloc(sizeof(int64_t) * (size_t)D);
    if (!nll || !n) return 1;
    int st = nl_api_ppl(h, ds, 0, nll, n);
    double s = 0;
    long c = 0;
    for (int d = 0; st == 0 && d < D; d++) s += nll[d], c += (long)n[d];
    free(nll);
    free(n);
    if (st) return st;
    *nll_mean = s / (double)c, *count = c;
    const int32_t *tok;
    int T, id;
    norm_acc acc = {0, 0};
    nl_api_dataset_doc(ds, 0, &tok, &T, NULL, NULL, NULL, NULL);
    if (T > nl_api_dim(h, "ctx")) T = (int)nl_api_dim(h, "ctx");
    if ((st = nl_api_hook_add(h, "resid", L - 1, resid_norm, &acc, &id)) != 0) return st;
    st = nl_api_run(h, tok, T, NULL);
    nl_api_hook_remove(h, id);
    *norm = acc.sum / (double)acc.n;
    return st;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: ablate_neuron MODEL DATA.jsonl LAYER NEURON\n");
        return 2;
    }
    int layer = atoi(argv[3]), neuron = atoi(argv[4]);
    nl_api *h = NULL;
    if (nl_api_open(argv[1], NULL, NULL, 0, 0, &h) != 0) return fail(h, "cannot open the model");
    nl_api_set_threads(h, 1);
    if (layer < 0 || layer >= nl_api_dim(h, "n_layers") || neuron < 0 || neuron >= nl_api_dim(h, "d_ff")) {
        fprintf(stderr, "ablate_neuron: layer %d neuron %d is outside the model's %lld layers of %lld neurons\n", layer, neuron,
                (long long)nl_api_dim(h, "n_layers"), (long long)nl_api_dim(h, "d_ff"));
        nl_api_close(h);
        return 1;
    }
    nl_api_dataset *ds = NULL;
    if (nl_api_dataset_open(h, argv[2], &ds) != 0) return fail(h, "cannot read the dataset");

    double base_nll, abl_nll, base_norm, abl_norm;
    long n;
    int id;
    if (measure(h, ds, &base_nll, &n, &base_norm) != 0) return fail(h, "base run");
    if (nl_api_hook_add(h, "ffn_act", layer, zero_neuron, &neuron, &id) != 0) return fail(h, "hook");
    if (measure(h, ds, &abl_nll, &n, &abl_norm) != 0) return fail(h, "ablated run");
    nl_api_hook_remove(h, id);

    printf("model %s, %ld predictions, neuron %d of layer %d zeroed\n", nl_api_str(h, "path"), n, neuron, layer);
    printf("base_nll %.9f base_ppl %.9f\n", base_nll, exp(base_nll));
    printf("ablated_nll %.9f ablated_ppl %.9f\n", abl_nll, exp(abl_nll));
    printf("delta_nll %.9f rel_ppl_change %.9f\n", abl_nll - base_nll, exp(abl_nll - base_nll) - 1);
    printf("resid_norm_base %.6f resid_norm_ablated %.6f (last layer, mean over document 1)\n", base_norm, abl_norm);
    nl_api_dataset_close(ds);
    nl_api_close(h);
    return 0;
}
