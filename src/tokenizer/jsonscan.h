/* jsonscan.h — allocation-free JSON scanning for the big members of tokenizer files
 * (jsonscan.c). Internal to src/tokenizer/. Functions return 0, or -1 on malformed input
 * (or out of memory while decoding a string). */
#ifndef NEURONLAB_TOKENIZER_JSONSCAN_H
#define NEURONLAB_TOKENIZER_JSONSCAN_H

#include "tokenizer/tok_internal.h"

typedef struct { const char *p, *end; } js_scan;
typedef struct { size_t a, b; } js_span; /* byte range of a value; a == b: absent */

int nl_js_peek(js_scan *s);                 /* next non-blank character, -1 at the end */
int nl_js_expect(js_scan *s, char c);       /* consumes c after blanks */
int nl_js_string(js_scan *s, tk_buf *out);  /* decodes a string into out (out->n bytes) */
int nl_js_int(js_scan *s, long long *v);    /* an integer (no fraction or exponent) */
int nl_js_skip(js_scan *s);                 /* skips any value */

/* Spans of the top-level "model" object's "vocab" and "merges" values. */
int nl_js_find_model_members(const char *buf, size_t n, js_span *vocab, js_span *merges);

#endif
