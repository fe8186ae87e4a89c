/* test_train_config.c — the trainer's JSON config: defaults, every kind of bad value (one-line
 * message naming the file and the key), unknown keys with a hint, the resume comparison. */
#include "neuronlab/train_config.h"
#include "testutil.h"

#define BASE0 "\"train_data\": \"t.jsonl\", \"tokenizer\": \"tok.json\", \"out\": \"o\", \"d_model\": 32, \"n_layers\": 2, " \
              "\"n_heads\": 4, \"d_ff\": 64, \"seq_len\": 16, \"batch_size\": 4, \"steps\": 10"
#define BASE BASE0 ", \"lr\": 0.001"

static nl_status parse(const char *text, nl_train_config *c, nl_ctx *ctx) {
    nl_ctx_init(ctx);
    return nl_train_config_parse(ctx, "cfg.json", text, c);
}

Test(train_config, defaults) {
    nl_train_config c;
    nl_ctx ctx;
    cr_assert_eq(parse("{" BASE ", \"_note\": \"comments are keys starting with _\"}", &c, &ctx), NL_OK, "%s", ctx.msg);
    cr_assert_eq(c.n_kv_heads, 4);
    cr_assert_eq(c.max_seq_len, 16);
    cr_assert_eq(c.vocab_size, 0);
    cr_assert_eq(c.grad_accum, 1);
    cr_assert_float_eq(c.min_lr, 1e-4, 1e-12);
    cr_assert_float_eq(c.rope_theta, 10000, 0);
    cr_assert_float_eq(c.norm_eps, 1e-5, 0);
    cr_assert_float_eq(c.weight_decay, 0.1, 0);
    cr_assert_float_eq(c.beta2, 0.95, 0);
    cr_assert_float_eq(c.grad_clip, 1.0, 0);
    cr_assert_eq(c.hidden_act, NL_ACT_SILU);
    cr_assert_eq(c.tie_word_embeddings, 0);
    cr_assert_eq(c.save_dtype, NL_DT_F32);
    cr_assert_eq(c.log_every, 10);
    cr_assert_eq(c.seed, 1);
    cr_assert_str_eq(c.val_data, "");
}

Test(train_config, round_trip_through_json) {
    nl_train_config c, d;
    nl_ctx ctx;
    cr_assert_eq(parse("{" BASE ", \"hidden_act\": \"relu2\", \"save_dtype\": \"bf16\", \"tie_word_embeddings\": true, "
                       "\"seed\": 12345678901, \"l1\": 0.5}", &c, &ctx), NL_OK, "%s", ctx.msg);
    json_t *j = nl_train_config_to_json(&c);
    cr_assert_eq(nl_train_config_from_json(&ctx, "cfg.json", j, &d), NL_OK, "%s", ctx.msg);
    json_decref(j);
    cr_assert_null(nl_train_config_run_diff(&c, &d));
    cr_assert_null(nl_train_config_other_diff(&c, &d));
    cr_assert_eq(d.seed, 12345678901LL);
    cr_assert_eq(d.hidden_act, NL_ACT_RELU2);
    d.lr = 0.5;
    cr_assert_null(nl_train_config_run_diff(&c, &d));
    cr_assert_str_eq(nl_train_config_other_diff(&c, &d), "lr");
    d.d_ff = 65;
    cr_assert_str_eq(nl_train_config_run_diff(&c, &d), "d_ff");
}

static void expect_error(const char *text, const char *want) {
    nl_train_config c;
    nl_ctx ctx;
    nl_status st = parse(text, &c, &ctx);
    cr_assert_neq(st, NL_OK, "accepted: %s", text);
    cr_assert(strstr(ctx.msg, want), "message '%s' lacks '%s'", ctx.msg, want);
    cr_assert(strncmp(ctx.msg, "'cfg.json'", 10) == 0, "message '%s' does not name the file first", ctx.msg);
    cr_assert_null(strchr(ctx.msg, '\n'), "message is not one line: %s", ctx.msg);
}

/* BASE with key set to the JSON value v (parsed), checked through the same messages. */
static void expect_kv(const char *key, const char *v, const char *want) {
    json_t *o = json_loads("{" BASE "}", 0, NULL);
    json_object_set_new(o, key, json_loads(v, JSON_DECODE_ANY, NULL));
    char *text = json_dumps(o, JSON_COMPACT);
    expect_error(text, want);
    free(text);
    json_decref(o);
}

Test(train_config, bad_values) {
    expect_kv("batchsize", "3", "unknown key 'batchsize' (did you mean 'batch_size'?)");
    expect_kv("learning_rate_schedule", "3", "unknown key 'learning_rate_schedule'");
    expect_kv("lr", "-1", "key 'lr' must be a number > 0, got -1");
    expect_kv("d_ff", "2.5", "key 'd_ff' must be an integer");
    expect_kv("d_ff", "\"64\"", "key 'd_ff' must be an integer, got \"64\"");
    expect_kv("beta2", "1", "key 'beta2' must be a number in [0, 1), got 1");
    expect_kv("hidden_act", "\"swiglu\"", "hidden_act \"swiglu\" is not supported (supported: silu, gelu, relu, relu2)");
    expect_kv("hidden_act", "\"gelu_new\"", "is not supported");
    expect_kv("save_dtype", "\"fp8\"", "key 'save_dtype' must be one of");
    expect_kv("tie_word_embeddings", "1", "key 'tie_word_embeddings' must be true or false");
    expect_kv("n_heads", "5", "d_model 32 is not divisible by n_heads 5");
    expect_kv("n_heads", "32", "head dimension d_model/n_heads = 1 must be even");
    expect_kv("n_kv_heads", "3", "n_heads 4 is not a multiple of n_kv_heads 3");
    expect_kv("grad_accum", "3", "grad_accum 3 does not divide batch_size 4");
    expect_kv("warmup_steps", "11", "warmup_steps 11 exceeds steps 10");
    expect_kv("min_lr", "0.01", "min_lr 0.01 exceeds lr 0.001");
    expect_kv("max_seq_len", "8", "max_seq_len 8 is smaller than seq_len 16");
    expect_kv("vocab_size", "0", "key 'vocab_size' must be an integer in [1, 16777216]");
    expect_kv("out", "\"\"", "key 'out' must be a non-empty string");
    expect_error("{\"train_data\": \"t.jsonl\"}", "missing key 'd_model'");
    expect_error("{" BASE ", \"steps\": 10}", "not valid JSON"); /* duplicate key */
    expect_error("[1, 2]", "must be a JSON object");
    expect_error("{" BASE ",}", "not valid JSON");
    expect_error("{\"train_data\": \"t.jsonl\", \"out\": \"o\", \"d_model\": 32, \"n_layers\": 2, \"n_heads\": 4, "
                 "\"d_ff\": 64, \"seq_len\": 16, \"batch_size\": 4, \"steps\": 10, \"lr\": 0.001}",
                 "give 'tokenizer'");
}

Test(train_config, missing_file) {
    nl_train_config c;
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_train_config_load(&ctx, "/nonexistent/x.json", &c), NL_EIO);
    cr_assert(strstr(ctx.msg, "cannot open config '/nonexistent/x.json'"), "%s", ctx.msg);
}
