/* moe_run.c — what the forward commands share for --moe (cli.h: nl_cli_moe): open the folder
 * against the model, resolve K, attach the expert FFN, print the run's FLOPs fraction and
 * router recall, and describe the MoE setting for a run's params. The options themselves are parsed in options.c. Checked by tests/moe_cli.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

nl_status nl_cli_moe_open(nl_ctx *ctx, nl_cli_moe *o, nl_model *m, nl_forward *f, int recall) {
    if (!o->dir) return NL_OK;
    nl_status st = nl_moe_open(ctx, o->dir, m, &o->moe);
    if (st != NL_OK) return st;
    const int E = nl_moe_get_info(o->moe)->E;
    if (o->k > 0) o->K = o->k > E ? -1 : (int)o->k;
    else {
        const double p = o->k_percent > 0 ? o->k_percent : 25.0;
        o->K = (int)lround(p / 100.0 * E);
        if (o->K < 1) o->K = 1;
    }
    if (o->K < 1)
        return nl_errorf(ctx, NL_EINVAL, "--k %ld is outside 1..%d: '%s/manifest.json' has %d experts per layer", o->k, E, o->dir, E);
    if (o->router == NL_MOE_ROUTER_MLP && !nl_moe_get_info(o->moe)->has_mlp)
        return nl_errorf(ctx, NL_EINVAL, "--router mlp: '%s' has no mlp router (made by moefy --router sim; rerun moefy with --router mlp)",
                         o->dir);
    nl_moe_ffn_opts fo = {o->K, (nl_moe_fill)o->fill, (nl_moe_router)o->router, recall};
    if ((st = nl_moe_ffn_create(ctx, o->moe, m, &fo, nl_forward_max_T(f), &o->ffn)) != NL_OK) return st;
    return nl_moe_ffn_attach(o->ffn, ctx, f);
}

void nl_cli_moe_close(nl_cli_moe *o, nl_forward *f) {
    if (o->ffn && f) nl_moe_ffn_detach(o->ffn, f);
    nl_moe_ffn_destroy(o->ffn);
    nl_moe_close(o->moe);
    o->ffn = NULL, o->moe = NULL;
}

void nl_cli_moe_print(FILE *out, const nl_cli_moe *o, const nl_config *c) {
    if (!o->moe) return;
    const nl_moe_info *in = nl_moe_get_info(o->moe);
    const int nm = nl_moe_n_layers(o->moe), L = c->n_layers;
    const double dense = nl_moe_flops_dense(c);
    const double layer = nl_moe_flops_layer(c, in->E, in->n_shared, o->K, (nl_moe_router)o->router, (nl_moe_fill)o->fill);
    const double frac = ((L - nm) * dense + nm * layer) / (L * dense);
    nl_moe_ffn_stats s = nl_moe_ffn_get_stats(o->ffn);
    fprintf(out, "moe      %s: %d experts%s on %d of %d layers (split %s), K %d (%.1f%%), router %s, fill %s\n", o->dir, in->E,
            in->n_shared ? " + shared" : "", nm, L, nl_moe_split_name(in->split), o->K, 100.0 * o->K / in->E,
            nl_moe_router_name((nl_moe_router)o->router), nl_moe_fill_name((nl_moe_fill)o->fill));
    if (in->n_shared) fprintf(out, "         shared expert of %d neurons per layer\n", in->n_shared);
    fprintf(out, "flops    FFN FLOPs fraction %.4f of the dense model (analytic; MoE layers %.4f each)", frac, layer / dense);
    if (s.tokens > 0) fprintf(out, ", counted %.4f", ((double)(L - nm) * dense * (s.tokens / nm) + s.flops) / (L * dense * (double)(s.tokens / nm)));
    fputc('\n', out);
    if (s.recall_n > 0) fprintf(out, "recall   router recall vs oracle %.4f (mean over %lld token-layers)\n", s.recall_sum / s.recall_n, (long long)s.recall_n);
}

const char *nl_cli_moe_params(const nl_cli_moe *o, char *buf, size_t n) {
    if (!o->moe || n == 0) return NULL;
    const nl_moe_info *in = nl_moe_get_info(o->moe);
    size_t k = 0;
    buf[0] = 0;
    k += (size_t)snprintf(buf, n, "{\"dir\":\"");
    for (const char *p = o->dir; *p && k + 8 < n; p++) { /* JSON string body */
        const unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') buf[k++] = '\\', buf[k++] = (char)ch;
        else if (ch < 0x20) k += (size_t)snprintf(buf + k, n - k, "\\u%04x", ch);
        else buf[k++] = (char)ch;
    }
    if (k < n) buf[k] = 0;
    if (k < n)
        snprintf(buf + k, n - k, "\",\"experts\":%d,\"shared\":%d,\"layers\":%d,\"k\":%d,\"router\":\"%s\",\"fill\":\"%s\"}", in->E,
                 in->n_shared, nl_moe_n_layers(o->moe), o->K, nl_moe_router_name((nl_moe_router)o->router),
                 nl_moe_fill_name((nl_moe_fill)o->fill));
    return buf;
}
