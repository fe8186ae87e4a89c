/* cmd_generate.c — `neuronlab generate MODEL --prompt TEXT [-n N] [--temp T] [--top-p P]
 * [--seed S] [--moe DIR --k K --fill zero|mean --router sim|oracle|mlp]`: continues a prompt with the KV-cached forward pass and streams the text as it
 * is produced — a quick way to see that a checkpoint and its tokenizer load right.
 *
 * The prompt is encoded without special tokens and preceded by the template's leading ids
 * (BOS where the tokenizer adds one); an empty prompt starts from BOS, or from EOS for
 * tokenizers without BOS (GPT-2's <|endoftext|>). The prompt is read in one batched pass,
 * then one token per step; generation stops after N tokens, at EOS, at the end of the
 * context, or on Ctrl-C. Statistics go to stderr; --json prints one object instead of
 * streaming (prompt ids, generated ids, text, why it stopped, seed). Non-finite logits (NaN
 * weights or config) are an error naming the model, never sampled from. With --moe the FFNs of
 * the folder's layers are replaced by its experts (moe.h) and the MoE summary (K, FLOPs
 * fraction) goes to stderr after the statistics. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "neuronlab/sampler.h"
#include "neuronlab/tokenizer.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_cli_option nl_cli_opts_generate[] = {
    {"MODEL", NULL, 1, "a Hugging Face folder or a llama2.c .bin checkpoint (with its tokenizer)", NULL},
    {"--prompt", "TEXT", 1, "the text to continue (\"\" starts from BOS, or EOS without one)", NULL},
    {"-n", "N", 0, "tokens to generate at most (stops earlier at EOS or the end of the context)", "128"},
    {"--temp", "T", 0, "softmax temperature; 0 is greedy", "1.0"},
    {"--top-p", "P", 0, "nucleus: sample among the most likely tokens whose probabilities sum to P", "0.9"},
    {"--seed", "S", 0, "seed of the sampler (printed on stderr); the same seed repeats the text", "the clock"},
    {"--tokenizer", "PATH", 0, "tokenizer to use", "the model's own"},
    {"--threads", "N", 0, "worker threads (1..1024)", "all cores"},
    {"--json", NULL, 0, "print one JSON object (prompt ids, generated ids, text, why it stopped, seed) instead of streaming", NULL},
    NL_CLI_MOE_OPTIONS,
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_generate = {
    "generate", NULL, "continue a prompt, streaming the text (default -n 128, --temp 1.0, --top-p 0.9; --temp 0 is greedy)", run};

typedef struct {
    char *p;
    size_t n, cap;
} buf;

static int buf_add(buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *g = realloc(b->p, cap);
        if (!g) return -1;
        b->p = g, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

/* Prints len bytes as a JSON string, invalid UTF-8 repaired to U+FFFD (nl_utf8_repair). */
static void json_text(const char *s, size_t len) {
    size_t n;
    char *fixed = nl_utf8_repair(s, len, &n);
    if (!fixed) { fputs("null", stdout); return; }
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)fixed[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
    free(fixed);
}

static void json_ids(const int32_t *ids, int n) {
    putchar('[');
    for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    putchar(']');
}

/* Sampling from NaN/Inf logits would emit arbitrary tokens: an error naming the model. */
static nl_status check_logits(nl_ctx *ctx, const char *model, const float *logits, int V, int pos) {
    for (int i = 0; i < V; i++)
        if (!isfinite(logits[i]))
            return nl_errorf(ctx, NL_EFORMAT,
                             "'%s': the logits are not finite (token %d is %s) at position %d: the weights or the config "
                             "give NaN/Inf", model, i, isnan(logits[i]) ? "nan" : "inf", pos);
    return NL_OK;
}

static int parse_float(const char *s, double lo, double hi, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo && v <= hi)) return 0;
    *out = v;
    return 1;
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *cmd = &nl_cmd_generate;
    const char *model_path = NULL, *prompt = NULL, *tok_path = NULL, *v;
    long n_new = 128;
    double temp = 1.0, top_p = 0.9;
    nl_cli_common co = {0};
    nl_cli_moe mo = {0};
    int k;
    for (int i = 1; i < argc; i++) {
        if ((k = nl_cli_common_arg(cmd, ctx, NL_CLI_SEED | NL_CLI_THREADS | NL_CLI_JSON, &co, argc, argv, &i))) {
            if (k != 1) return k;
        } else if ((k = nl_cli_moe_arg(cmd, &mo, argc, argv, &i))) {
            if (k != 1) return k;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--prompt", &v)) != 0) {
            if (k < 0) return nl_cli_usage(cmd, "--prompt needs a text");
            prompt = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "-n", &v)) != 0) {
            if (k < 0 || !nl_cli_int(v, 0, 1 << 24, &n_new)) return nl_cli_usage(cmd, "-n needs a token count in 0..16777216");
        } else if ((k = nl_cli_opt(argc, argv, &i, "--temp", &v)) != 0) {
            if (k < 0 || !parse_float(v, 0, 1e4, &temp)) return nl_cli_usage(cmd, "--temp needs a number ≥ 0 (0 = greedy)");
        } else if ((k = nl_cli_opt(argc, argv, &i, "--top-p", &v)) != 0) {
            if (k < 0 || !parse_float(v, 1e-9, 1, &top_p)) return nl_cli_usage(cmd, "--top-p needs a number in (0, 1]");
        } else if ((k = nl_cli_opt(argc, argv, &i, "--tokenizer", &v)) != 0) {
            if (k < 0) return nl_cli_usage(cmd, "--tokenizer needs a path");
            tok_path = v;
        } else if ((k = nl_cli_positional(cmd, argv, i, &model_path)) != 1) {
            return k;
        }
    }
    if (!model_path) return nl_cli_usage(cmd, "missing MODEL");
    if (!prompt) return nl_cli_usage(cmd, "missing --prompt TEXT (it may be empty: --prompt '')");
    if (nl_cli_moe_check(cmd, &mo)) return 2;
    const unsigned long long seed = co.have_seed ? co.seed : (unsigned long long)time(NULL);
    const int json = co.json;
    nl_ctx_apply_threads(ctx);

    nl_model *m = NULL;
    nl_tokenizer *tok = NULL;
    nl_forward *f = NULL;
    nl_sampler *smp = NULL;
    int32_t *ids = NULL, *body = NULL;
    float *logits = NULL;
    buf out = {0};
    int n_body = 0, n_prompt = 0, n_gen = 0, rc = 0;
    const char *stop = "length";
    nl_status st = nl_model_open(ctx, model_path, &m);
    if (st == NL_OK) st = tok_path ? nl_tokenizer_open(ctx, tok_path, &tok) : nl_tokenizer_for_model(ctx, model_path, &tok);
    if (st == NL_OK && !tok)
        st = nl_errorf(ctx, NL_EINVAL, "'%s': no tokenizer found with the model (give --tokenizer PATH)", model_path);
    if (st == NL_OK && nl_tokenizer_warning(tok)[0]) fprintf(stderr, "neuronlab: warning: %s\n", nl_tokenizer_warning(tok));
    if (st == NL_OK) st = nl_tokenizer_encode(ctx, tok, prompt, strlen(prompt), NULL, &body, &n_body);
    const nl_config *c = m ? nl_model_config(m) : NULL;
    const int V = c ? c->vocab_size : 0;
    const int ctx_len = c && c->max_pos > 0 ? c->max_pos : 2048;
    const int eos = tok && nl_tokenizer_eos(tok) >= 0 ? nl_tokenizer_eos(tok) : c ? c->eos_id : -1;
    if (st == NL_OK) {
        const int32_t *pre, *post;
        int n_pre, n_post;
        nl_tokenizer_template(tok, &pre, &n_pre, &post, &n_post);
        int start = nl_tokenizer_bos(tok) >= 0 ? nl_tokenizer_bos(tok) : eos;
        int extra = n_pre + n_body == 0 ? 1 : 0;
        if (extra && start < 0) st = nl_errorf(ctx, NL_EINVAL, "the prompt is empty and '%s' has no BOS or EOS token to start from", nl_tokenizer_path(tok));
        else if (!(ids = malloc((size_t)(n_pre + n_body + extra + n_new + 1) * sizeof *ids))) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        else {
            if (n_pre) memcpy(ids, pre, (size_t)n_pre * sizeof *ids);
            if (n_body) memcpy(ids + n_pre, body, (size_t)n_body * sizeof *ids);
            n_prompt = n_pre + n_body;
            if (extra) ids[n_prompt++] = start;
        }
    }
    for (int i = 0; st == NL_OK && i < n_prompt; i++)
        if (ids[i] < 0 || ids[i] >= V)
            st = nl_errorf(ctx, NL_EINVAL, "'%s' gave token id %d, outside the vocabulary of '%s' (size %d)", nl_tokenizer_path(tok), ids[i],
                           model_path, V);
    if (st == NL_OK && n_prompt >= ctx_len)
        st = nl_errorf(ctx, NL_EINVAL, "the prompt has %d tokens; the context of '%s' is %d", n_prompt, model_path, ctx_len);
    if (st == NL_OK && n_new > ctx_len - n_prompt) {
        fprintf(stderr, "neuronlab generate: -n %ld shortened to %d, the end of the %d-token context\n", n_new, ctx_len - n_prompt, ctx_len);
        n_new = ctx_len - n_prompt;
    }
    const int max_T = n_prompt < 256 ? n_prompt : 256;
    if (st == NL_OK) {
        /* one token per call: keep f16/bf16 layers converted when they fit in half the RAM */
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
        nl_model_keep_f32(m, pages > 0 && page > 0 ? (size_t)pages * (size_t)page / 2 : (size_t)1 << 30);
        st = nl_forward_create(ctx, m, max_T, n_prompt + (int)n_new, &f);
    }
    if (st == NL_OK) st = nl_cli_moe_open(ctx, &mo, m, f, 0);
    if (st == NL_OK && (!(smp = nl_sampler_create(V, (float)temp, (float)top_p, seed)) || !(logits = malloc((size_t)V * sizeof *logits))))
        st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (st != NL_OK) goto done;

    if (!json) { fputs(prompt, stdout); fflush(stdout); }
    double t0 = nl_now();
    /* the prompt: all but its last token without the LM head, in chunks of max_T */
    for (int i = 0; st == NL_OK && i < n_prompt - 1; i += max_T) {
        int T = n_prompt - 1 - i < max_T ? n_prompt - 1 - i : max_T;
        st = nl_forward_run(f, ctx, ids + i, T, NULL);
    }
    if (st == NL_OK && n_new > 0) st = nl_forward_run(f, ctx, ids + n_prompt - 1, 1, logits);
    if (st == NL_OK && n_new > 0) st = check_logits(ctx, model_path, logits, V, n_prompt);
    double t1 = nl_now();
    char piece[256];
    while (st == NL_OK && n_gen < n_new) {
        if (nl_interrupted) { stop = "interrupted"; break; }
        int id = nl_sample(smp, logits);
        if (id == eos) { stop = "eos"; break; }
        ids[n_prompt + n_gen++] = id;
        size_t need = nl_tokenizer_piece(tok, ids[n_prompt + n_gen - 2], id, piece, sizeof piece);
        char *big = need > sizeof piece ? malloc(need) : NULL;
        if (big) nl_tokenizer_piece(tok, ids[n_prompt + n_gen - 2], id, big, need);
        const char *p = big ? big : piece;
        size_t n = big || need <= sizeof piece ? need : sizeof piece;
        if (buf_add(&out, p, n)) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        if (!json) { fwrite(p, 1, n, stdout); fflush(stdout); }
        free(big);
        if (st == NL_OK && n_gen < n_new) st = nl_forward_run(f, ctx, &id, 1, logits);
        if (st == NL_OK && n_gen < n_new) st = check_logits(ctx, model_path, logits, V, n_prompt + n_gen);
    }
    double t2 = nl_now();
    if (st != NL_OK) goto done;
    if (json) {
        printf("{\"model\":");
        nl_cli_json_str(model_path);
        printf(",\"tokenizer\":");
        nl_cli_json_str(nl_tokenizer_path(tok));
        printf(",\"prompt\":");
        json_text(prompt, strlen(prompt));
        printf(",\"prompt_tokens\":");
        json_ids(ids, n_prompt);
        printf(",\"tokens\":");
        json_ids(ids + n_prompt, n_gen);
        printf(",\"text\":");
        json_text(out.p ? out.p : "", out.n);
        printf(",\"stop\":\"%s\",\"temp\":%g,\"top_p\":%g,\"seed\":%llu}\n", stop, temp, top_p, seed);
    } else {
        putchar('\n');
    }
    fflush(stdout);
    fprintf(stderr, "neuronlab generate: prompt %d tokens (%.1f tok/s), generated %d (%.1f tok/s), stop: %s, seed %llu\n", n_prompt,
            t1 > t0 ? n_prompt / (t1 - t0) : 0.0, n_gen, t2 > t1 && n_gen ? n_gen / (t2 - t1) : 0.0, stop, seed);
    nl_cli_moe_print(stderr, &mo, c);
    if (!strcmp(stop, "interrupted")) rc = 130;
done:
    if (st != NL_OK) {
        if (!json && f) putchar('\n');
        fflush(stdout);
        rc = nl_cli_fail(ctx, st);
    }
    free(out.p);
    free(logits);
    free(ids);
    free(body);
    nl_sampler_destroy(smp);
    nl_cli_moe_close(&mo, f);
    nl_forward_destroy(f);
    nl_tokenizer_close(tok);
    nl_model_close(m);
    return rc;
}
