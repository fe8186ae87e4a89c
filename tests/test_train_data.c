/* test_train_data.c — what makes a training run repeatable and resumable:
 *   - rng: streams are deterministic and independent, normals have the right moments,
 *     permutations are permutations;
 *   - token_stream: BOS/EOS wrapping of text rows, tokens rows verbatim, mixed files refused;
 *     the batch of a step depends only on (seed, step); an epoch visits every window once;
 *     evaluation windows count every prediction once;
 *   - checkpoint: round trip, damage and foreign files detected.
 */
#include <unistd.h>

#include "neuronlab/checkpoint.h"
#include "neuronlab/rng.h"
#include "neuronlab/token_stream.h"
#include "neuronlab/tokenizer.h"
#include "testutil.h"

#define GPT2_TOK "tests/fixtures/hf/gpt2/tokenizer.json"

Test(train_data, rng_streams) {
    nl_rng a, b, c;
    nl_rng_derive(&a, 7, 1, 0);
    nl_rng_derive(&b, 7, 1, 0);
    nl_rng_derive(&c, 7, 1, 1);
    int same = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t x = nl_rng_next(&a), y = nl_rng_next(&b), z = nl_rng_next(&c);
        cr_assert_eq(x, y);
        same += x == z;
    }
    cr_assert_eq(same, 0);
    double s = 0, ss = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double x = nl_rng_normal(&a);
        s += x;
        ss += x * x;
    }
    cr_assert_float_eq(s / n, 0.0, 0.01);
    cr_assert_float_eq(ss / n, 1.0, 0.01);
    int64_t perm[1000];
    int seen[1000] = {0};
    nl_rng_permutation(&a, perm, 1000);
    for (int i = 0; i < 1000; i++) seen[perm[i]]++;
    for (int i = 0; i < 1000; i++) cr_assert_eq(seen[i], 1);
}

Test(train_data, batches_depend_only_on_seed_and_step) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    enum { N = 1003, S = 10, B = 7 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = i;
    nl_token_stream s, s2;
    cr_assert_eq(nl_token_stream_from_ids(&ctx, ids, N, &s), NL_OK);
    cr_assert_eq(nl_token_stream_from_ids(&ctx, ids, N, &s2), NL_OK);
    const int64_t nw = nl_token_stream_n_windows(&s, S);
    cr_assert_eq(nw, 100);
    int32_t a[B * (S + 1)], b[B * (S + 1)];
    /* walk steps 1..30 on one stream; jump straight to each step on a fresh one */
    int64_t starts_epoch0[100] = {0};
    int n0 = 0;
    for (int64_t step = 1; step <= 30; step++) {
        cr_assert_eq(nl_token_stream_batch(&ctx, &s, S, 42, step, B, a), NL_OK);
        nl_token_stream_release(&s2);
        cr_assert_eq(nl_token_stream_from_ids(&ctx, ids, N, &s2), NL_OK);
        cr_assert_eq(nl_token_stream_batch(&ctx, &s2, S, 42, step, B, b), NL_OK);
        cr_assert_eq(memcmp(a, b, sizeof a), 0, "step %lld differs when computed directly", (long long)step);
        for (int w = 0; w < B; w++) {
            for (int t = 1; t <= S; t++) cr_assert_eq(a[w * (S + 1) + t], a[w * (S + 1)] + t, "windows are consecutive tokens");
            int64_t j = (step - 1) * B + w;
            if (j < nw) starts_epoch0[n0++] = a[w * (S + 1)];
        }
    }
    /* epoch 0: 100 distinct windows, all with the same offset (0..2) */
    cr_assert_eq(n0, 100);
    int64_t off = starts_epoch0[0] % S;
    cr_assert_leq(off, 2);
    int hit[100] = {0};
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(starts_epoch0[i] % S, off);
        hit[(starts_epoch0[i] - off) / S]++;
    }
    for (int i = 0; i < 100; i++) cr_assert_eq(hit[i], 1, "window %d visited %d times in epoch 0", i, hit[i]);
    /* another seed, another order */
    cr_assert_eq(nl_token_stream_batch(&ctx, &s2, S, 43, 1, B, b), NL_OK);
    cr_assert_eq(nl_token_stream_batch(&ctx, &s, S, 42, 1, B, a), NL_OK);
    cr_assert_neq(memcmp(a, b, sizeof a), 0);
    nl_token_stream_release(&s);
    nl_token_stream_release(&s2);
}

Test(train_data, eval_windows_cover_every_prediction_once) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    enum { N = 27, S = 8 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = 100 + i;
    nl_token_stream s;
    cr_assert_eq(nl_token_stream_from_ids(&ctx, ids, N, &s), NL_OK);
    cr_assert_eq(nl_token_stream_n_eval_windows(&s, S), 4); /* 26 predictions: 8 + 8 + 8 + 2 */
    int seen[N] = {0};
    for (int k = 0; k < 4; k++) {
        int32_t in[S], tg[S];
        nl_token_stream_eval_window(&s, S, k, in, tg);
        for (int i = 0; i < S; i++) {
            if (tg[i] < 0) { cr_assert_eq(in[i] == 0 || in[i] == 100 + N - 1, 1); continue; }
            cr_assert_eq(tg[i], in[i] + 1);
            seen[tg[i] - 100]++;
        }
    }
    cr_assert_eq(seen[0], 0);
    for (int i = 1; i < N; i++) cr_assert_eq(seen[i], 1);
    nl_token_stream_release(&s);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

Test(train_data, text_rows_get_eos_tokens_rows_verbatim) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_tokenizer *tok;
    cr_assert_eq(nl_tokenizer_open(&ctx, GPT2_TOK, &tok), NL_OK, "%s", ctx.msg);
    char dir[] = "/tmp/nl_train_data.XXXXXX";
    cr_assert(mkdtemp(dir));
    char p1[128], p2[128], p3[128];
    snprintf(p1, sizeof p1, "%s/text.jsonl", dir);
    snprintf(p2, sizeof p2, "%s/tok.jsonl", dir);
    snprintf(p3, sizeof p3, "%s/mixed.jsonl", dir);
    write_file(p1, "{\"text\": \"ab\"}\n{\"text\": \"c\"}\n");
    write_file(p2, "{\"tokens\": [1, 2]}\n{\"tokens\": [3]}\n");
    write_file(p3, "{\"tokens\": [1, 2]}\n{\"text\": \"c\"}\n");
    nl_token_stream s;
    cr_assert_eq(nl_token_stream_load(&ctx, p1, tok, 257, &s), NL_OK, "%s", ctx.msg);
    /* GPT-2 style byte-level fixture: BOS = EOS = <|endoftext|> (256) or no BOS: one 256 after each text */
    int32_t want1[] = {'a', 'b', 256, 'c', 256};
    cr_assert_eq(s.n, 5);
    cr_assert_eq(memcmp(s.tok, want1, sizeof want1), 0);
    nl_token_stream_release(&s);
    cr_assert_eq(nl_token_stream_load(&ctx, p2, tok, 257, &s), NL_OK, "%s", ctx.msg);
    int32_t want2[] = {1, 2, 3};
    cr_assert_eq(s.n, 3);
    cr_assert_eq(memcmp(s.tok, want2, sizeof want2), 0);
    nl_token_stream_release(&s);
    cr_assert_eq(nl_token_stream_load(&ctx, p3, tok, 257, &s), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "mixed.jsonl': mixes {\"tokens\"} rows with text rows"), "%s", ctx.msg);
    cr_assert_eq(nl_token_stream_load(&ctx, p2, tok, 3, &s), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "tok.jsonl' line 2: token id 3 is outside the vocabulary (size 3)"), "%s", ctx.msg);
    unlink(p1); unlink(p2); unlink(p3); rmdir(dir);
    nl_tokenizer_close(tok);
}

Test(train_data, checkpoint_round_trip_and_damage) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    char dir[] = "/tmp/nl_ckpt.XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/checkpoint.bin", dir);
    enum { N = 1000 };
    float p[N], m[N], v[N];
    for (int i = 0; i < N; i++) { p[i] = i * 0.5f; m[i] = -i; v[i] = i * i; }
    nl_checkpoint ck = {0};
    ck.step = 17; ck.adam_t = 17; ck.n_params = N; ck.params = p; ck.m = m; ck.v = v;
    ck.elapsed = 12.5; ck.tokens = 4096; ck.data_hash = 0xfeedbeefcafe1234ULL;
    nl_rng_derive(&ck.rng, 5, 4, 0);
    nl_rng_normal(&ck.rng); /* leaves a spare */
    ck.config = json_pack("{s:i,s:s}", "d_model", 32, "hidden_act", "gelu");
    cr_assert_eq(nl_checkpoint_save(&ctx, path, &ck), NL_OK, "%s", ctx.msg);
    nl_checkpoint in;
    cr_assert_eq(nl_checkpoint_load(&ctx, path, &in), NL_OK, "%s", ctx.msg);
    cr_assert_eq(in.step, 17);
    cr_assert_eq(in.n_params, N);
    cr_assert_eq(in.tokens, 4096);
    cr_assert_eq(in.data_hash, ck.data_hash);
    cr_assert_eq(in.rng.s, ck.rng.s);
    cr_assert_eq(in.rng.has_spare, 1);
    cr_assert_eq(in.rng.spare, ck.rng.spare);
    cr_assert_float_eq(in.elapsed, 12.5, 0);
    cr_assert_eq(memcmp(in.params, p, sizeof p), 0);
    cr_assert_eq(memcmp(in.m, m, sizeof m), 0);
    cr_assert_eq(memcmp(in.v, v, sizeof v), 0);
    cr_assert_str_eq(json_string_value(json_object_get(in.config, "hidden_act")), "gelu");
    nl_checkpoint_release(&in);
    /* damage: flip one byte in the data, truncate, change the magic, change the version */
    size_t n = 0;
    unsigned char *buf = nl_read_all(path, &n);
    cr_assert(buf);
    char bad[160];
    snprintf(bad, sizeof bad, "%s/bad.bin", dir);
    struct { size_t at; int len_cut; const char *want; } cases[] = {
        {n - 100, 0, "checksum mismatch"}, {0, 1, "truncated or damaged"}, {2, 0, "not a neuronlab checkpoint"},
        {8, 0, "checkpoint version"},
    };
    for (int c = 0; c < 4; c++) {
        unsigned char *cp = malloc(n);
        memcpy(cp, buf, n);
        size_t len = n;
        if (cases[c].len_cut) len -= 13;
        else cp[cases[c].at] ^= 0x5a;
        FILE *f = fopen(bad, "wb");
        fwrite(cp, 1, len, f);
        fclose(f);
        free(cp);
        cr_assert_neq(nl_checkpoint_load(&ctx, bad, &in), NL_OK, "case %d accepted", c);
        cr_assert(strstr(ctx.msg, cases[c].want) && strstr(ctx.msg, "bad.bin"), "case %d: %s", c, ctx.msg);
    }
    free(buf);
    json_decref(ck.config);
    unlink(bad); unlink(path); rmdir(dir);
}
