#!/usr/bin/env bash
# bpe_train_conformance.sh — `neuronlab tokenizer-train` end to end (issue 4).
#
# 1. The command: trains a 4096-id tokenizer on a JSONL corpus made of tests/tokenizer/corpus.jsonl
#    (390 texts of many scripts) and the repository's sources and documents cut into paragraphs
#    (prompt/response rows among them); the summary line; the file loads in `neuronlab tokenize`,
#    whose default adds <|bos|> (id 0), and --decode gives every text back.
# 2. Reference encoders on the trained file must give identical ids, row by row, to `neuronlab
#    tokenize` on the corpus (whose sources write "<|bos|>" in places), on rows with invalid UTF-8
#    and on rows with lone surrogates, in three modes: "special" = the references' default
#    (template added, special tokens in the text matched) vs `tokenize --parse-special`; "plain" =
#    add_special_tokens false vs `--no-special --parse-special`; "text" = special tokens in the text
#    are plain text, as training and `ppl`/`record` read them, vs `--no-special` (transformers.js
#    only, with the matcher emptied as tests/tokenizer/reference.js does):
#      - transformers.js (@lenml/tokenizers, from the npm cache of tests/tokenizer/install_reference.sh);
#      - Hugging Face tokenizers (Rust, the napi build @anush008/tokenizers) when it is installed:
#        NL_HF_NODE_PATH (default /tmp/hf/node_modules, see tests/tokenizer/crosscheck_hf.js).
#    SKIP lines when node or the packages are not available.
# 3. Errors: one line naming the file (and line), exit 1 — empty corpus, missing corpus, bad JSON
#    line, a {"tokens"} row, --vocab below 258, a vocabulary the corpus cannot reach, an output
#    folder that does not exist — and an existing output file left untouched by a failed run;
#    usage errors exit 2.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh). NL_BUILD selects the build directory;
# NL_KEEP=1 keeps the work directory.
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
tmp=$(mktemp -d /tmp/nl_bpe_train.XXXXXX)
if [ -n "${NL_KEEP:-}" ]; then echo "    work directory: $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi

if [ ! -x "$nl" ]; then echo "FAIL tokenizer-train: $nl not found (run make)"; exit 0; fi

# The corpus: the tokenizer conformance texts and the sources, one paragraph per row.
$py - "$tmp/corpus.jsonl" <<'PY'
import glob, json, sys
rows = [json.loads(l) for l in open("tests/tokenizer/corpus.jsonl", encoding="utf-8") if l.strip()]
files = sorted(glob.glob("src/**/*.[ch]", recursive=True) + glob.glob("include/**/*.h", recursive=True) +
               glob.glob("*.md") + glob.glob("bench/*.md") + glob.glob("tests/**/*.py", recursive=True))
for f in files:
    if "unicode_tables" in f:
        continue
    text = open(f, encoding="utf-8", errors="replace").read()
    for i, p in enumerate(text.split("\n\n")):
        if not p.strip():
            continue
        if i % 9 == 4:
            rows.append({"prompt": p[: len(p) // 2], "response": p[len(p) // 2 :], "label": "code"})
        else:
            rows.append({"text": p + "\n\n", "label": "code"})
with open(sys.argv[1], "w", encoding="utf-8") as o:
    for r in rows:
        o.write(json.dumps(r, ensure_ascii=False) + "\n")
# the texts as {"text"} rows, for tokenize
with open(sys.argv[1].replace(".jsonl", ".texts.jsonl"), "w", encoding="utf-8") as o:
    for r in rows:
        o.write(json.dumps({"text": r["text"] if "text" in r else r["prompt"] + r["response"]}, ensure_ascii=False) + "\n")
PY
texts=$tmp/corpus.texts.jsonl
tok=$tmp/tok.json

# ---- 1. the command -------------------------------------------------------------------------
"$nl" tokenizer-train "$tmp/corpus.jsonl" --vocab 4096 -o "$tok" > "$tmp/train.out" 2> "$tmp/train.err"
rc=$?
if [ $rc -eq 0 ] && [ -f "$tok" ] && grep -q "^tokenizer-train: .* texts, .* MB, .* distinct); 3838 merges .*vocabulary 4096; read .* s, merges .* s; wrote '$tok'$" "$tmp/train.err" \
   && [ ! -s "$tmp/train.out" ]; then
  echo "PASS tokenizer-train writes a 4096-id tokenizer.json ($(wc -c < "$tmp/corpus.jsonl") bytes of JSONL)"
  sed 's/^/    /' "$tmp/train.err"
else
  echo "FAIL tokenizer-train writes a 4096-id tokenizer.json: exit $rc"; sed 's/^/    /' "$tmp/train.err" | head -5
  exit 0
fi
if ls "$tmp" | grep -q '\.tmp\.'; then echo "FAIL no temporary file left beside the output"; else echo "PASS no temporary file left beside the output"; fi

"$nl" tokenize "$tok" "$texts" > "$tmp/nl.special" 2> "$tmp/tok.err" && \
"$nl" tokenize "$tok" "$texts" --no-special > "$tmp/nl.plain" 2>> "$tmp/tok.err" && \
"$nl" tokenize "$tok" "$tmp/nl.plain" --decode > "$tmp/nl.decoded" 2>> "$tmp/tok.err"
if [ $? -ne 0 ]; then echo "FAIL neuronlab tokenize loads the trained file: $(head -1 "$tmp/tok.err")"; exit 0; fi
$py - "$texts" "$tmp/nl.special" "$tmp/nl.plain" "$tmp/nl.decoded" <<'PY'
import json, sys
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8")]
special = [json.loads(l)["tokens"] for l in open(sys.argv[2])]
plain = [json.loads(l)["tokens"] for l in open(sys.argv[3])]
dec = [json.loads(l)["text"] for l in open(sys.argv[4], encoding="utf-8")]
ok = len(special) == len(plain) == len(texts) and all(s == [0] + p for s, p in zip(special, plain))
print("%s tokenize adds <|bos|> (id 0) and nothing else (%d rows)" % ("PASS" if ok else "FAIL", len(texts)))
bad = [i for i, (a, b) in enumerate(zip(texts, dec)) if a != b]
print("%s decode(encode(text)) == text on every row%s" % ("PASS" if not bad and len(dec) == len(texts) else "FAIL",
      "" if not bad else ": rows %s" % [i + 1 for i in bad[:5]]))
n_ids = sum(len(p) for p in plain); n_bytes = sum(len(t.encode()) for t in texts)
print("    %d ids for %d bytes (%.2f bytes per id)" % (n_ids, n_bytes, n_bytes / max(n_ids, 1)))
PY

# ---- 2. reference encoders --------------------------------------------------------------------
cat > "$tmp/ref.js" <<'JS'
// node ref.js MODE TOKENIZER.json OUT_PREFIX INPUT.jsonl... — ids of every row, as `neuronlab tokenize` prints them
"use strict";
const fs = require("fs"), path = require("path");
const [mode, tokFile, outPrefix, ...inputs] = process.argv.slice(2);
const rows = (f) => new TextDecoder("utf-8").decode(fs.readFileSync(f)).split("\n").filter((l) => l.length).map((l) => JSON.parse(l).text);
(async () => {
  let enc;
  if (mode === "js") {
    const { TokenizerLoader } = require(path.join(process.env.NL_NPM_DIR, "node_modules", "@lenml/tokenizers"));
    const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON: JSON.parse(fs.readFileSync(tokFile, "utf8")),
      tokenizerConfig: { bos_token: "<|bos|>", eos_token: "<|eos|>", clean_up_tokenization_spaces: false } });
    const parse = [tok.added_tokens_splitter, tok.added_tokens_map];
    const text = [new parse[0].constructor([]), new Map()];
    enc = async (t, add, asText) => {
      [tok.added_tokens_splitter, tok.added_tokens_map] = asText ? text : parse;
      return tok.encode(t, { add_special_tokens: add });
    };
  } else {
    const { Tokenizer } = require("@anush008/tokenizers");
    const tok = Tokenizer.fromFile(tokFile);
    enc = async (t, add) => Array.from((await tok.encode(t, null, { addSpecialTokens: add })).getIds());
  }
  for (const f of inputs) {
    const base = path.basename(f, ".jsonl");
    for (const [name, add, asText] of [["special", true, false], ["plain", false, false], ["text", false, true]]) {
      if (asText && mode !== "js") continue;
      const out = [];
      for (const t of rows(f)) out.push(JSON.stringify({ tokens: await enc(t, add, asText) }));
      fs.writeFileSync(`${outPrefix}.${base}.${name}`, out.join("\n") + "\n");
    }
  }
})().catch((e) => { console.error(String(e && e.stack || e)); process.exit(1); });
JS
inputs="$texts tests/tokenizer/invalid_utf8.jsonl tests/tokenizer/surrogates.jsonl"
for f in $inputs; do
  b=$(basename "$f" .jsonl)
  "$nl" tokenize "$tok" "$f" --parse-special > "$tmp/nl.$b.special" 2>/dev/null
  "$nl" tokenize "$tok" "$f" --no-special --parse-special > "$tmp/nl.$b.plain" 2>/dev/null
  "$nl" tokenize "$tok" "$f" --no-special > "$tmp/nl.$b.text" 2>/dev/null
done
# same REF_NAME PREFIX MODES: compares every input in each mode
same() {
  local name=$1 prefix=$2 modes=$3 f b m
  for f in $inputs; do
    b=$(basename "$f" .jsonl)
    for m in $modes; do
      if cmp -s "$prefix.$b.$m" "$tmp/nl.$b.$m"; then
        echo "PASS $name == neuronlab on the trained tokenizer: $b, $m ($(wc -l < "$tmp/nl.$b.$m") rows)"
      else
        local line; line=$(cmp "$prefix.$b.$m" "$tmp/nl.$b.$m" 2>&1 | sed -n 's/.*line \([0-9]*\).*/\1/p')
        echo "FAIL $name == neuronlab on the trained tokenizer: $b, $m: first difference at row ${line:-?}"
        [ -n "$line" ] && { echo "    ref: $(sed -n "${line}p" "$prefix.$b.$m" | cut -c1-200)"; echo "    nl:  $(sed -n "${line}p" "$tmp/nl.$b.$m" | cut -c1-200)"; }
      fi
    done
  done
}
if ! command -v node > /dev/null; then
  echo "SKIP transformers.js on the trained tokenizer: node is not installed"
elif ! npm_dir=$(bash tests/tokenizer/install_reference.sh 2> "$tmp/npm.why"); then
  echo "SKIP transformers.js on the trained tokenizer: $(tail -1 "$tmp/npm.why")"
elif NL_NPM_DIR="$npm_dir" node "$tmp/ref.js" js "$tok" "$tmp/js" $inputs 2> "$tmp/js.err"; then
  same "transformers.js" "$tmp/js" "special plain text"
else
  echo "FAIL transformers.js loads the trained tokenizer: $(grep -m1 -i error "$tmp/js.err")"
fi
hf_path=${NL_HF_NODE_PATH:-/tmp/hf/node_modules}
if ! command -v node > /dev/null || [ ! -d "$hf_path/@anush008/tokenizers" ]; then
  echo "SKIP Hugging Face tokenizers (Rust) on the trained tokenizer: @anush008/tokenizers not in $hf_path (optional)"
elif NODE_PATH="$hf_path" node "$tmp/ref.js" rust "$tok" "$tmp/rs" $inputs 2> "$tmp/rs.err"; then
  same "Hugging Face tokenizers (Rust)" "$tmp/rs" "special plain"
else
  echo "FAIL Hugging Face tokenizers (Rust) loads the trained tokenizer: $(grep -m1 -i error "$tmp/rs.err")"
fi

# ---- 3. errors ------------------------------------------------------------------------------------
# expect NAME EXIT PATTERN ARGS...: that exit status, one stderr line matching PATTERN (exit 1) or a
# first line matching it (usage, exit 2)
expect() {
  local name=$1 want=$2 pat=$3; shift 3
  "$nl" tokenizer-train "$@" > "$tmp/out" 2> "$tmp/err"
  local rc=$? lines; lines=$(wc -l < "$tmp/err")
  if [ $rc -eq "$want" ] && { [ "$want" -ne 1 ] || [ "$lines" -eq 1 ]; } && head -1 "$tmp/err" | grep -qE -- "$pat"; then
    echo "PASS $name"
  else
    echo "FAIL $name: exit $rc, $lines stderr lines, wanted exit $want and /$pat/:"; sed 's/^/    /' "$tmp/err" | head -5
  fi
}
printf '' > "$tmp/empty.jsonl"
printf '{"text": ""}\n\n' > "$tmp/emptytext.jsonl"
printf '{"text": "a b"}\n{"text": "c d"}\n{"text": "oops\n' > "$tmp/bad.jsonl"
printf '{"text": "a b"}\n{"tokens": [1, 2, 3]}\n' > "$tmp/tokens.jsonl"
printf '{"text": "the cat sat on the mat"}\n' > "$tmp/tiny.jsonl"
expect "empty corpus" 1 "^neuronlab: '$tmp/empty.jsonl': no text to train on$" "$tmp/empty.jsonl" --vocab 300 -o "$tmp/o.json"
expect "corpus of empty texts" 1 "'$tmp/emptytext.jsonl': no text to train on \(1 texts, all empty\)" "$tmp/emptytext.jsonl" --vocab 300 -o "$tmp/o.json"
expect "missing corpus" 1 "cannot read '$tmp/nope.jsonl': No such file or directory" "$tmp/nope.jsonl" --vocab 300 -o "$tmp/o.json"
expect "line that is not JSON" 1 "'$tmp/bad.jsonl' line 3: not JSON" "$tmp/bad.jsonl" --vocab 300 -o "$tmp/o.json"
expect "tokens row" 1 "'$tmp/tokens.jsonl' line 2: a \{\"tokens\"\} row has no text" "$tmp/tokens.jsonl" --vocab 300 -o "$tmp/o.json"
expect "vocabulary below 258" 1 "vocabulary 100 is too small: the 2 special tokens and the 256 bytes need 258 ids" "$tmp/tiny.jsonl" --vocab 100 -o "$tmp/o.json"
expect "vocabulary larger than the corpus allows" 1 "'$tmp/tiny.jsonl': vocabulary 8192 is larger than the corpus allows \(261 reachable: no pair left that occurs at least 2 times" "$tmp/tiny.jsonl" --vocab 8192 -o "$tmp/o.json"
expect "vocabulary larger than the corpus allows (--min-frequency 1)" 1 "vocabulary 8192 is larger than the corpus allows \(270 reachable: every word is a single token\)" "$tmp/tiny.jsonl" --vocab 8192 --min-frequency 1 -o "$tmp/o.json"
expect "output folder missing" 1 "cannot write '$tmp/no/dir/o.json': No such file or directory" "$tmp/tiny.jsonl" --vocab 260 -o "$tmp/no/dir/o.json"
expect "output is a folder" 1 "cannot write '$tmp': Is a directory" "$tmp/tiny.jsonl" --vocab 260 -o "$tmp"
expect "missing --vocab (usage)" 2 "neuronlab tokenizer-train: missing --vocab N" "$tmp/tiny.jsonl" -o "$tmp/o.json"
expect "missing -o (usage)" 2 "neuronlab tokenizer-train: missing -o tokenizer.json" "$tmp/tiny.jsonl" --vocab 300
expect "missing corpus argument (usage)" 2 "neuronlab tokenizer-train: missing CORPUS.jsonl" --vocab 300 -o "$tmp/o.json"
expect "bad --vocab (usage)" 2 "neuronlab tokenizer-train: --vocab needs a vocabulary size" "$tmp/tiny.jsonl" --vocab lots -o "$tmp/o.json"
# --allow-smaller writes the smaller vocabulary and says so
"$nl" tokenizer-train "$tmp/tiny.jsonl" --vocab 8192 --min-frequency 1 --allow-smaller -o "$tmp/small.json" 2> "$tmp/err"
if [ $? -eq 0 ] && grep -q "note: vocabulary 270 instead of 8192: every word is a single token" "$tmp/err" && \
   [ "$(echo '{"text": "the cat sat on the mat"}' | "$nl" tokenize "$tmp/small.json" --no-special)" = '{"tokens":[260,266,269,268,265,267]}' ]; then
  echo "PASS --allow-smaller writes the smaller vocabulary and says so"
else
  echo "FAIL --allow-smaller writes the smaller vocabulary and says so"; sed 's/^/    /' "$tmp/err" | head -3
fi
# a failed run leaves an existing output as it was
cp "$tok" "$tmp/keep.json"
"$nl" tokenizer-train "$tmp/tiny.jsonl" --vocab 8192 -o "$tmp/keep.json" 2> /dev/null
if cmp -s "$tok" "$tmp/keep.json"; then echo "PASS a failed run leaves the existing output untouched"; else echo "FAIL a failed run leaves the existing output untouched"; fi
exit 0
