/* st_source.c — the safetensors tensor source of a Hugging Face folder (arch.h): either
 * DIR/model.safetensors, or DIR/model.safetensors.index.json and every shard its weight_map
 * names. Each file is mapped into the model (nl_model_map) and parsed by the validating
 * reader (safetensors.h); lookups return borrowed views into the mappings.
 *
 * Rules: shard names must be plain files inside the folder; a missing shard is named with the
 * index that names it; a folder with only PyTorch .bin weights gets a message saying how to
 * convert it. A lookup asks the shard the index names first, then every shard (a single
 * file, or a tensor the index misplaced). Tensors of a dtype the model cannot read fail the
 * lookup with NL_EUNSUPPORTED (nl_safetensors_view).
 * Checked by tests/test_hf.c and tests/test_model.c.
 */
#include "model/arch.h"
#include "neuronlab/safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    nl_ctx *ctx;
    nl_model *m;                    /* borrowed: owns the mappings */
    char dir[4000];                 /* model folder without trailing '/' */
    char weights_path[4096];        /* DIR/model.safetensors or DIR/model.safetensors.index.json */
    json_t *index;                  /* sharded checkpoints: the index JSON, owned */
    json_t *weight_map;             /* borrowed from index */
    nl_safetensors *shards[NL_MAX_MAPS];
    char *shard_names[NL_MAX_MAPS]; /* file names as written in the index */
    int n_shards;
} st_source;

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static void st_close(void *impl) {
    st_source *S = impl;
    if (!S) return;
    for (int i = 0; i < S->n_shards; i++) {
        nl_safetensors_close(S->shards[i]);
        free(S->shard_names[i]);
    }
    json_decref(S->index);
    free(S);
}

static nl_status add_shard(st_source *S, const char *file, const char *named_by) {
    char path[4096 + 256];
    if (S->n_shards >= NL_MAX_MAPS - 1)
        return nl_errorf(S->ctx, NL_EUNSUPPORTED, "'%s': more than %d shards", S->weights_path, NL_MAX_MAPS - 1);
    snprintf(path, sizeof path, "%s/%s", S->dir, file);
    if (named_by) {
        struct stat sb;
        if (stat(path, &sb) != 0)
            return nl_errorf(S->ctx, NL_EIO, "cannot open shard '%s' named by '%s': %s", path, named_by,
                             strerror(errno));
    }
    const void *base;
    size_t size;
    nl_status st = nl_model_map(S->ctx, S->m, path, &base, &size);
    if (st != NL_OK) return st;
    if ((st = nl_safetensors_open(S->ctx, path, base, size, &S->shards[S->n_shards])) != NL_OK) return st;
    if (!(S->shard_names[S->n_shards] = strdup(file))) {
        nl_safetensors_close(S->shards[S->n_shards]);
        return nl_errorf(S->ctx, NL_ENOMEM, "cannot open '%s': out of memory", path);
    }
    S->n_shards++;
    return NL_OK;
}

static nl_status open_weights(st_source *S) {
    snprintf(S->weights_path, sizeof S->weights_path, "%s/model.safetensors", S->dir);
    if (file_exists(S->weights_path)) return add_shard(S, "model.safetensors", NULL);
    snprintf(S->weights_path, sizeof S->weights_path, "%s/model.safetensors.index.json", S->dir);
    if (!file_exists(S->weights_path)) {
        char bin[4096 + 64];
        snprintf(bin, sizeof bin, "%s/pytorch_model.bin", S->dir);
        int has_bin = file_exists(bin);
        snprintf(bin, sizeof bin, "%s/pytorch_model.bin.index.json", S->dir);
        has_bin |= file_exists(bin);
        if (has_bin)
            return nl_errorf(S->ctx, NL_EUNSUPPORTED,
                             "cannot open '%s': PyTorch .bin weights are not supported, only safetensors (convert the "
                             "folder, e.g. with save_pretrained(..., safe_serialization=True))", S->dir);
        return nl_errorf(S->ctx, NL_EIO, "cannot open '%s': no model.safetensors or model.safetensors.index.json",
                         S->dir);
    }
    json_error_t jerr;
    S->index = json_load_file(S->weights_path, 0, &jerr);
    if (!S->index)
        return nl_errorf(S->ctx, NL_EFORMAT, "cannot read '%s': not valid JSON (%s, line %d column %d)",
                         S->weights_path, jerr.text, jerr.line, jerr.column);
    S->weight_map = json_is_object(S->index) ? json_object_get(S->index, "weight_map") : NULL;
    if (!json_is_object(S->weight_map))
        return nl_errorf(S->ctx, NL_EFORMAT, "'%s': missing object 'weight_map'", S->weights_path);
    const char *key;
    json_t *val;
    json_object_foreach(S->weight_map, key, val) {
        if (!json_is_string(val) || !json_string_length(val))
            return nl_errorf(S->ctx, NL_EFORMAT, "'%s': weight_map entry '%s' is not a file name", S->weights_path, key);
        const char *f = json_string_value(val);
        if (f[0] == '/' || strstr(f, "..") || strlen(f) > 255)
            return nl_errorf(S->ctx, NL_EFORMAT, "'%s': shard name '%s' is not a file inside the model folder",
                             S->weights_path, f);
        int seen = 0;
        for (int i = 0; i < S->n_shards && !seen; i++) seen = strcmp(S->shard_names[i], f) == 0;
        if (seen) continue;
        nl_status st = add_shard(S, f, S->weights_path);
        if (st != NL_OK) return st;
    }
    if (S->n_shards == 0) return nl_errorf(S->ctx, NL_EFORMAT, "'%s': weight_map is empty", S->weights_path);
    return NL_OK;
}

static const nl_st_entry *find_entry(st_source *S, const char *name, const nl_safetensors **shard) {
    if (S->weight_map) {
        json_t *f = json_object_get(S->weight_map, name);
        if (f)
            for (int i = 0; i < S->n_shards; i++)
                if (strcmp(S->shard_names[i], json_string_value(f)) == 0) {
                    const nl_st_entry *e = nl_safetensors_find(S->shards[i], name);
                    if (e) {
                        *shard = S->shards[i];
                        return e;
                    }
                }
    }
    for (int i = 0; i < S->n_shards; i++) { /* single file, or a tensor the index misplaced */
        const nl_st_entry *e = nl_safetensors_find(S->shards[i], name);
        if (e) {
            *shard = S->shards[i];
            return e;
        }
    }
    return NULL;
}

static nl_status st_lookup(nl_ctx *ctx, void *impl, const char *name, nl_source_tensor *out, int *found) {
    st_source *S = impl;
    const nl_safetensors *shard = NULL;
    const nl_st_entry *e = find_entry(S, name, &shard);
    memset(out, 0, sizeof *out);
    *found = e != NULL;
    if (!e) return NL_OK;
    out->name = e->name;
    out->file = nl_safetensors_path(shard);
    return nl_safetensors_view(ctx, shard, e, &out->t);
}

nl_status nl_st_source_open(nl_ctx *ctx, nl_model *m, const char *dir, nl_tensor_source **out) {
    *out = NULL;
    nl_tensor_source *src = calloc(1, sizeof *src);
    st_source *S = calloc(1, sizeof *S);
    if (!src || !S) {
        free(src);
        free(S);
        return nl_errorf(ctx, NL_ENOMEM, "cannot open '%s': out of memory", dir);
    }
    S->ctx = ctx;
    S->m = m;
    snprintf(S->dir, sizeof S->dir, "%s", dir);
    src->impl = S;
    src->lookup = st_lookup;
    src->close = st_close;
    src->path = S->weights_path;
    nl_status st = open_weights(S);
    if (st != NL_OK) {
        nl_tensor_source_close(src);
        return st;
    }
    *out = src;
    return NL_OK;
}
