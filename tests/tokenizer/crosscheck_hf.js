#!/usr/bin/env node
// crosscheck_hf.js — optional, not part of `make test`: checks that the JS reference
// (transformers.js, as used by reference.js) agrees with Hugging Face's Rust `tokenizers`
// on the corpus, through the npm package @anush008/tokenizers (tokenizers 0.22.2 built with
// napi; the binary ships inside @anush008/tokenizers-linux-x64-gnu).
//
//   mkdir -p /tmp/hf && (cd /tmp/hf && npm install --no-audit --no-fund @anush008/tokenizers@0.6.0)
//   NODE_PATH=/tmp/hf/node_modules node tests/tokenizer/crosscheck_hf.js NPM_DIR tests/tokenizer/corpus.jsonl
//
// NPM_DIR is the reference cache (tests/tokenizer/install_reference.sh prints it). Compares
// encode(text, add_special_tokens=false) with added tokens matched (reference.js's "parse" mode).
"use strict";
const fs = require("fs");
const path = require("path");
const { Tokenizer } = require("@anush008/tokenizers");
const [npmDir, corpus] = process.argv.slice(2);
const nm = path.resolve(npmDir, "node_modules");
const { TokenizerLoader } = require(path.join(nm, "@lenml/tokenizers"));
const rows = fs.readFileSync(corpus, "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l).text);
(async () => {
  let bad = 0;
  for (const name of ["llama3", "qwen3", "gemma3", "llama2"]) {
    const dir = path.join(nm, "@lenml/tokenizer-" + name, "models");
    const rs = Tokenizer.fromFile(path.join(dir, "tokenizer.json"));
    const js = TokenizerLoader.fromPreTrained({
      tokenizerJSON: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
      tokenizerConfig: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
    });
    let same = 0, shown = 0;
    for (let i = 0; i < rows.length; i++) {
      const e = await rs.encode(rows[i], null, { addSpecialTokens: false });
      const a = Array.from(e.getIds()), b = js.encode(rows[i], { add_special_tokens: false });
      if (JSON.stringify(a) === JSON.stringify(b)) { same++; continue; }
      if (shown++ < 3) console.log(`  ${name} row ${i + 1}: ${JSON.stringify(rows[i]).slice(0, 100)}\n    rust ${JSON.stringify(a)}\n    js   ${JSON.stringify(b)}`);
    }
    if (same !== rows.length) bad++;
    console.log(`${same === rows.length ? "PASS" : "FAIL"} transformers.js == HF tokenizers (Rust) ${name}: ${same}/${rows.length} identical`);
  }
  process.exit(bad ? 1 : 0);
})();
