#!/usr/bin/env bash
# imatrix.sh — `record --imatrix` (issue 15 item 4): llama.cpp's importance matrix.
#
# 1. The SiLU zoo model on 40 math documents with a 64-token context (so documents span several
#    overlapping windows): record -o acts.h5 --hook ffn_act,ffn_in --imatrix im.gguf, then
#    tests/imatrix_check.py checks every FFN entry against sums over the activation dump (each token
#    once), the attention entries' shape (q/k/v one input, counts) and both layouts field by field;
#    the .dat comes from a run without -o (the matrix alone), and a GGUF from a run without -o is
#    byte-identical to the one made beside the dump.
# 1b. The attention entries' values against PyTorch: record --imatrix (GGUF and .dat) on the
#    fixtures tests/fixtures/hf/{llama,qwen2,gpt_neox,phi} with their own tokens, and
#    tests/imatrix_attn_ref.py compares attn_q/k/v (attn_qkv for GPT-NeoX) with the sums of the
#    q_proj / query_key_value input and attn_output with those of the o_proj input in nlref.py's
#    pass (SKIP without torch).
# 2. Refusals: with --stats (usage error, exit 2); an existing output without --force and the
#    dataset as the output (exit 1, one line naming the file).
# Prints PASS/FAIL/SKIP lines. NL_BUILD selects the build (default build).
set -u
cd "$(dirname "$0")/.."
build=${NL_BUILD:-build}
nl=$build/neuronlab
tmp=$(mktemp -d /tmp/nl_imatrix.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
py=/usr/bin/python3; [ -x "$py" ] || py=python3
zoo=notebooks-data/models/silu
if [ ! -x "$nl" ]; then echo "FAIL imatrix: $nl is missing (make)"; exit 0; fi
if [ ! -d "$zoo" ]; then echo "SKIP imatrix: $zoo is absent"; exit 0; fi
head -n 40 notebooks-data/eval/math.jsonl >"$tmp/d.jsonl"

if "$nl" record "$zoo" "$tmp/d.jsonl" -o "$tmp/a.h5" --hook ffn_act,ffn_in --imatrix "$tmp/im.gguf" --ctx 64 --quiet 2>"$tmp/err" &&
   "$nl" record "$zoo" "$tmp/d.jsonl" --imatrix "$tmp/im.dat" --ctx 64 --quiet 2>>"$tmp/err" &&
   "$nl" record "$zoo" "$tmp/d.jsonl" --imatrix "$tmp/alone.gguf" --ctx 64 --quiet 2>>"$tmp/err"; then
  $py tests/imatrix_check.py "$tmp/a.h5" "$tmp/im.gguf" "$tmp/im.dat" 64 "$tmp/d.jsonl"
  if cmp -s "$tmp/im.gguf" "$tmp/alone.gguf"; then echo "PASS record --imatrix without -o writes the same GGUF as beside the dump"
  else echo "FAIL record --imatrix without -o differs from the one beside the dump"; fi
  if grep -q "wrote '$tmp/im.gguf': importance matrix of 42 weight matrices" "$tmp/err"; then echo "PASS record --imatrix reports what it wrote"
  else echo "FAIL record --imatrix report:"; sed 's/^/    /' "$tmp/err" | head -4; fi
else
  echo "FAIL record --imatrix:"; sed 's/^/    /' "$tmp/err" | head -4
fi

if $py -c 'import torch' 2>/dev/null; then
  for c in llama qwen2 gpt_neox phi; do
    fx=tests/fixtures/hf/$c
    $py -c "import json,sys; print(json.dumps({'tokens': json.load(open('$fx/expected.json'))['tokens']}))" >"$tmp/$c.jsonl"
    if "$nl" record "$fx" "$tmp/$c.jsonl" --imatrix "$tmp/$c.gguf" --ctx 16 --quiet 2>"$tmp/err" &&
       "$nl" record "$fx" "$tmp/$c.jsonl" --imatrix "$tmp/$c.dat" --ctx 16 --quiet 2>>"$tmp/err"; then
      $py tests/imatrix_attn_ref.py "$fx" "$tmp/$c.gguf" "$tmp/$c.dat" 16
    else echo "FAIL record --imatrix on $fx:"; sed 's/^/    /' "$tmp/err" | head -3; fi
  done
else
  echo "SKIP imatrix attention against PyTorch: $py has no torch"
fi

"$nl" record "$zoo" "$tmp/d.jsonl" -o "$tmp/s.h5" --stats --imatrix "$tmp/x.gguf" --quiet >/dev/null 2>"$tmp/err"; rc=$?
if [ $rc = 2 ] && grep -q "imatrix is computed with the activation dump or alone, not with --stats" "$tmp/err"; then
  echo "PASS record --stats --imatrix is a usage error"
else echo "FAIL record --stats --imatrix: exit $rc"; sed 's/^/    /' "$tmp/err" | head -3; fi
"$nl" record "$zoo" "$tmp/d.jsonl" --imatrix "$tmp/im.gguf" --quiet >/dev/null 2>"$tmp/err"; rc=$?
if [ $rc = 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "'$tmp/im.gguf' exists (use --force" "$tmp/err"; then
  echo "PASS record --imatrix refuses an existing output without --force"
else echo "FAIL record --imatrix over an existing file: exit $rc"; sed 's/^/    /' "$tmp/err" | head -3; fi
"$nl" record "$zoo" "$tmp/d.jsonl" --imatrix "$tmp/d.jsonl" --force --quiet >/dev/null 2>"$tmp/err"; rc=$?
if [ $rc = 1 ] && grep -q "refusing to write '$tmp/d.jsonl': it is the dataset" "$tmp/err" && [ "$(wc -l <"$tmp/d.jsonl")" = 40 ]; then
  echo "PASS record --imatrix never overwrites the dataset"
else echo "FAIL record --imatrix onto the dataset: exit $rc"; sed 's/^/    /' "$tmp/err" | head -3; fi
exit 0
