/* tokenizer_json_write.c — writes a byte-level BPE tokenizer.json (nl_tokenizer_json_write, see
 * tokenizer.h for the layout): the file the BPE trainer (src/train/bpe_train.c) produces and the
 * loader of tokenizer_json.c reads back.
 *
 * The layout is fixed text (two-space indentation, the key order of Hugging Face's serializer),
 * so equal vocabularies and merges give byte-identical files; the vocabulary is written in id
 * order, each piece through GPT-2's byte ↔ unicode table (nl_bytelevel_char), JSON-escaped; a merge
 * is "a b" (byte-level strings never hold a space: it is 'Ġ'). The file goes through
 * nl_atomic_open / nl_atomic_commit, so a failed write leaves no partial tokenizer.json.
 * Checked by tests/test_tokenizer.c (written files opened and encoded, argument errors) and
 * tests/test_bpe_train.c, tests/bpe_train_conformance.sh (trained files, transformers.js). */
#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

#include <stdio.h>

#include "neuronlab/atomic_file.h"

/* s (valid UTF-8) JSON-escaped, without quotes. */
static void put_text(FILE *f, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { fputc('\\', f); fputc(c, f); }
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
}

/* A piece's raw bytes as byte-level characters, JSON-escaped, without quotes. */
static void put_bytelevel(FILE *f, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = nl_bytelevel_char((unsigned char)s[i]);
        if (cp == '"' || cp == '\\') { fputc('\\', f); fputc((int)cp, f); continue; }
        char u[4];
        int k = nl_utf8_put(cp, u);
        fwrite(u, 1, (size_t)k, f);
    }
}

static void put_piece(FILE *f, int id, const char *const *pieces, const size_t *len, int n_special) {
    if (id < n_special) put_text(f, pieces[id], len[id]);
    else put_bytelevel(f, pieces[id], len[id]);
}

/* TemplateProcessing: one SpecialToken or Sequence item of a template. */
static void put_item(FILE *f, const char *bos, size_t bos_n, const char *seq, int type_id, int last) {
    if (seq) fprintf(f, "      {\n        \"Sequence\": {\n          \"id\": \"%s\",\n", seq);
    else {
        fputs("      {\n        \"SpecialToken\": {\n          \"id\": \"", f);
        put_text(f, bos, bos_n);
        fputs("\",\n", f);
    }
    fprintf(f, "          \"type_id\": %d\n        }\n      }%s\n", type_id, last ? "" : ",");
}

static void write_json(FILE *f, int n_vocab, const char *const *pieces, const size_t *len, int n_merges, const int32_t *left,
                       const int32_t *right, const nl_tokenizer_json_opts *o) {
    fputs("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [", f);
    for (int i = 0; i < o->n_special; i++) {
        fprintf(f, "%s    {\n      \"id\": %d,\n      \"content\": \"", i ? "" : "\n", i);
        put_text(f, pieces[i], len[i]);
        fprintf(f,
                "\",\n      \"single_word\": false,\n      \"lstrip\": false,\n      \"rstrip\": false,\n"
                "      \"normalized\": false,\n      \"special\": true\n    }%s\n",
                i + 1 < o->n_special ? "," : "");
    }
    fputs(o->n_special ? "  ],\n" : "],\n", f);
    fputs("  \"normalizer\": null,\n", f);
    fputs("  \"pre_tokenizer\": {\n    \"type\": \"Sequence\",\n    \"pretokenizers\": [\n      {\n        \"type\": \"Split\",\n"
          "        \"pattern\": {\n          \"Regex\": \"",
          f);
    put_text(f, o->split_pattern, strlen(o->split_pattern));
    fputs("\"\n        },\n        \"behavior\": \"Isolated\",\n        \"invert\": false\n      },\n"
          "      {\n        \"type\": \"ByteLevel\",\n        \"add_prefix_space\": false,\n        \"trim_offsets\": true,\n"
          "        \"use_regex\": false\n      }\n    ]\n  },\n",
          f);
    if (o->bos_id < 0) fputs("  \"post_processor\": null,\n", f);
    else {
        const char *b = pieces[o->bos_id];
        size_t bn = len[o->bos_id];
        fputs("  \"post_processor\": {\n    \"type\": \"TemplateProcessing\",\n    \"single\": [\n", f);
        put_item(f, b, bn, NULL, 0, 0);
        put_item(f, b, bn, "A", 0, 1);
        fputs("    ],\n    \"pair\": [\n", f);
        put_item(f, b, bn, NULL, 0, 0);
        put_item(f, b, bn, "A", 0, 0);
        put_item(f, b, bn, NULL, 1, 0);
        put_item(f, b, bn, "B", 1, 1);
        fputs("    ],\n    \"special_tokens\": {\n      \"", f);
        put_text(f, b, bn);
        fputs("\": {\n        \"id\": \"", f);
        put_text(f, b, bn);
        fprintf(f, "\",\n        \"ids\": [\n          %d\n        ],\n        \"tokens\": [\n          \"", o->bos_id);
        put_text(f, b, bn);
        fputs("\"\n        ]\n      }\n    }\n  },\n", f);
    }
    fputs("  \"decoder\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": true,\n    \"trim_offsets\": true,\n"
          "    \"use_regex\": true\n  },\n",
          f);
    fputs("  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
          "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
          "    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n    \"vocab\": {\n",
          f);
    for (int id = 0; id < n_vocab; id++) {
        fputs("      \"", f);
        put_piece(f, id, pieces, len, o->n_special);
        fprintf(f, "\": %d%s\n", id, id + 1 < n_vocab ? "," : "");
    }
    fputs("    },\n    \"merges\": [", f);
    for (int k = 0; k < n_merges; k++) {
        fputs(k ? ",\n      \"" : "\n      \"", f);
        put_piece(f, left[k], pieces, len, o->n_special);
        fputc(' ', f);
        put_piece(f, right[k], pieces, len, o->n_special);
        fputc('"', f);
    }
    fputs(n_merges ? "\n    ]\n  }\n}\n" : "]\n  }\n}\n", f);
}

nl_status nl_tokenizer_json_write(nl_ctx *ctx, const char *path, int n_vocab, const char *const *pieces,
                                  const size_t *piece_len, int n_merges, const int32_t *left, const int32_t *right,
                                  const nl_tokenizer_json_opts *opts) {
    if (!opts || !opts->split_pattern)
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': no pre-tokenizer pattern", path);
    if (n_vocab < 1 || !pieces || !piece_len)
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': empty vocabulary", path);
    if (opts->n_special < 0 || opts->n_special > n_vocab)
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': %d special tokens in a vocabulary of %d", path, opts->n_special,
                         n_vocab);
    if (opts->bos_id >= opts->n_special)
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': bos id %d is not a special token (ids 0 … %d)", path, opts->bos_id,
                         opts->n_special - 1);
    for (int i = 0; i < n_vocab; i++) {
        if (!pieces[i] || !piece_len[i]) return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': token %d is empty", path, i);
        if (i < opts->n_special && !nl_utf8_valid(pieces[i], piece_len[i]))
            return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': special token %d is not valid UTF-8", path, i);
    }
    if (n_merges < 0 || (n_merges && (!left || !right)))
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': bad merge list", path);
    for (int k = 0; k < n_merges; k++)
        if (left[k] < 0 || left[k] >= n_vocab || right[k] < 0 || right[k] >= n_vocab)
            return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': merge %d (%d, %d) names an id outside the vocabulary of %d",
                             path, k, (int)left[k], (int)right[k], n_vocab);
    nl_atomic_file af;
    nl_status st = nl_atomic_open(ctx, path, &af);
    if (st != NL_OK) return st;
    char *fbuf = malloc(1 << 16);
    if (fbuf) setvbuf(af.f, fbuf, _IOFBF, 1 << 16);
    write_json(af.f, n_vocab, pieces, piece_len, n_merges, left, right, opts);
    st = nl_atomic_commit(ctx, &af);
    free(fbuf);
    return st;
}
