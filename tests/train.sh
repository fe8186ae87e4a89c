#!/usr/bin/env bash
# test-runner: alone (timing-, RSS- or process-count-sensitive: run by itself after the parallel lanes)
# train.sh — `neuronlab train` end to end on tiny configs (a few seconds in all):
#   - a run writes a Hugging Face folder that info, generate, record and ppl load;
#   - ppl of the saved folder on the validation stream equals the trainer's own evaluation (1e-4);
#   - a run stopped half way (--stop-at) and resumed equals an uninterrupted run bit for bit
#     (every logged loss and the saved weights); so does a run stopped by Ctrl-C (exit 130);
#   - save_dtype bf16 loads and scores close to f32;
#   - mixture of experts (Mixtral-style top-2, Qwen2-MoE-style with a shared expert): the saved folders
#     load with the mixtral / qwen2_moe loaders and their ppl equals the trainer's evaluation (1e-4), the
#     log carries the balancing loss, stop + resume equals an uninterrupted run; bad moe configs
#     (unknown router option, top_k > experts, d_ff with moe, shared expert with mixtral);
#   - every bad input stops with exit 1 and one stderr line naming the file, and leaves the
#     previous checkpoint byte for byte (empty or short corpus, unknown activation, vocab_size
#     below the tokenizer, token id >= vocab_size, typo key, changed model key on resume, fresh
#     run over a checkpoint, damaged checkpoint, NaN loss from lr 1e9).
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
build=${NL_BUILD:-build}
nl="$build/neuronlab"
tmp=$(mktemp -d /tmp/nl_train.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
tok=tests/fixtures/hf/gpt2/tokenizer.json   # byte-level, 257 ids, <|endoftext|> = 256
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3)   # Debian python starts in 0.05 s, a pyenv shim in 0.7 s
# Tiny models: OpenMP threads that sleep instead of spinning, so a busy machine (other tests,
# other jobs on 2 cores) does not stall every parallel region (measured: 6x slower when spinning).
export OMP_WAIT_POLICY=passive

pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; }

if [ ! -x "$nl" ]; then fail "setup: $nl not built"; exit 1; fi

# Data: the tokenizer corpus, rows 1-350 as text for training (without its empty text), the rest as ONE tokens row for
# validation (the validation stream itself, so ppl sees exactly what the trainer evaluates).
head -n 350 tests/tokenizer/corpus.jsonl | grep -v '"text": ""' > "$tmp/train.jsonl"
tail -n +351 tests/tokenizer/corpus.jsonl | "$nl" tokenize "$tok" | "$PY" -c '
import sys, json
ids = []
for line in sys.stdin:
    ids += json.loads(line)["tokens"] + [256]
print(json.dumps({"tokens": ids}))' > "$tmp/val.jsonl"
: > "$tmp/empty.jsonl"
echo '{"tokens": [1, 2, 3, 4, 5]}' > "$tmp/short.jsonl"
echo '{"tokens": [1, 300, 3]}' > "$tmp/bigid.jsonl"

# mkcfg NAME key=json_value ... : the base config with overrides (value "DEL" removes the key)
mkcfg() {
  local name=$1; shift
  "$PY" - "$tmp" "$name" "$tok" "$@" <<'PY'
import json, sys
tmp, name, tok = sys.argv[1:4]
c = {"train_data": f"{tmp}/train.jsonl", "val_data": f"{tmp}/val.jsonl", "tokenizer": tok,
     "out": f"{tmp}/{name}", "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "d_ff": 64,
     "tie_word_embeddings": True, "hidden_act": "silu", "seq_len": 80, "batch_size": 8, "grad_accum": 2,
     "steps": 30, "lr": 3e-3, "warmup_steps": 5, "l1": 0.01, "seed": 7, "log_every": 1,
     "eval_every": 10, "eval_batches": 0}
for kv in sys.argv[4:]:
    k, v = kv.split("=", 1)
    if v == "DEL":
        c.pop(k, None)
    else:
        c[k] = json.loads(v)
json.dump(c, open(f"{tmp}/{name}.json", "w"), indent=1)
PY
}

ckpt_step() { # step stored in a checkpoint header
  "$PY" -c '
import json, struct, sys
b = open(sys.argv[1], "rb").read(1 << 20)
n = struct.unpack("<Q", b[16:24])[0]
print(json.loads(b[24:24 + n])["step"])' "$1"
}

# --- a run and its folder -------------------------------------------------------------------
mkcfg A
if "$nl" train --config "$tmp/A.json" > "$tmp/A.out" 2> "$tmp/A.err" && [ -f "$tmp/A/model.safetensors" ] &&
   [ -f "$tmp/A/config.json" ] && [ -f "$tmp/A/tokenizer.json" ] && [ -f "$tmp/A/checkpoint.bin" ] &&
   [ -f "$tmp/A/training.json" ] && [ "$(grep -c '"loss"' "$tmp/A/train_log.jsonl")" -eq 30 ]; then
  pass "train writes model.safetensors, config.json, tokenizer.json, checkpoint.bin, training.json, 30 log rows"
else
  fail "train run A:"; tail -5 "$tmp/A.err"
fi
if "$nl" info "$tmp/A" > "$tmp/info" 2>&1 && grep -q 'architecture llama' "$tmp/info" && grep -q 'embeddings   tied' "$tmp/info"; then
  pass "info loads the trained folder"
else
  fail "info on the trained folder:"; cat "$tmp/info"
fi
if "$nl" generate "$tmp/A" --prompt "The " -n 8 --temp 0 > /dev/null 2>&1; then pass "generate runs on the trained folder"; else fail "generate on the trained folder"; fi
if "$nl" record "$tmp/A" "$tmp/val.jsonl" -o "$tmp/acts.h5" --layers 0 > /dev/null 2>&1 && [ -s "$tmp/acts.h5" ]; then
  pass "record runs on the trained folder"
else
  fail "record on the trained folder"
fi

# --- ppl of the saved folder == the trainer's evaluation --------------------------------------
"$nl" ppl "$tmp/A" "$tmp/val.jsonl" --stride 80 --json > "$tmp/ppl.json" 2>&1
if "$PY" - "$tmp/A/training.json" "$tmp/ppl.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["final"]
p = json.load(open(sys.argv[2]))
d = abs(t["val_loss"] - p["nll"])
print(f"  trainer val_loss {t['val_loss']:.6f} ({t['val_predictions']} predictions), "
      f"ppl nll {p['nll']:.6f} ({p['tokens']} predictions), |diff| {d:.2e}")
sys.exit(0 if d <= 1e-4 and t["val_predictions"] == p["tokens"] else 1)
PY
then pass "ppl of the saved folder equals the trainer's evaluation (1e-4)"; else fail "ppl vs trainer evaluation"; fi

# --- resume == uninterrupted -------------------------------------------------------------------
# compare_runs X Y: every logged loss / val_loss equal (as printed, 10 significant digits) and
# model.safetensors byte for byte.
compare_runs() {
  "$PY" - "$1/train_log.jsonl" "$2/train_log.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
key = lambda r: (r["step"], "val_loss" in r)
a = {key(r): r.get("loss", r.get("val_loss")) for r in a}
b = {key(r): r.get("loss", r.get("val_loss")) for r in b}
common = sorted(set(a) & set(b))
worst = max(abs(a[k] - b[k]) for k in common) if common else float("inf")
print(f"  {len(common)} log rows compared, max |loss difference| {worst:.1e}")
sys.exit(0 if common and worst == 0.0 and set(a) == set(b) else 1)
PY
  [ $? -eq 0 ] && cmp -s "$1/model.safetensors" "$2/model.safetensors"
}
mkcfg B
if "$nl" train --config "$tmp/B.json" --stop-at 15 --quiet > "$tmp/B1.out" 2>&1 && [ "$(ckpt_step "$tmp/B/checkpoint.bin")" = 15 ] &&
   grep -q '"complete": false' "$tmp/B/training.json" &&
   "$nl" train --config "$tmp/B.json" --resume --quiet > "$tmp/B2.out" 2>&1 && compare_runs "$tmp/A" "$tmp/B"; then
  pass "stopped at 15 of 30 and resumed: same losses and weights as the uninterrupted run"
else
  fail "resume after --stop-at:"; cat "$tmp/B1.out" "$tmp/B2.out" | tail -5
fi

# Ctrl-C: a long run interrupted after about a second saves its last step and exits 130;
# resuming it to step k+3 equals a fresh run stopped at k+3.
mkcfg C steps=100000 eval_every=0 log_every=50 val_data=DEL
"$nl" train --config "$tmp/C.json" --quiet > "$tmp/C.out" 2> "$tmp/C.err" &
pid=$!
sleep 1.5
kill -INT $pid
wait $pid
rc=$?
if [ $rc -eq 130 ] && [ -f "$tmp/C/checkpoint.bin" ] && grep -q 'interrupted: checkpoint' "$tmp/C.err"; then
  k=$(ckpt_step "$tmp/C/checkpoint.bin")
  pass "Ctrl-C exits 130 with a checkpoint (step $k)"
  mkcfg D steps=100000 eval_every=0 log_every=50 val_data=DEL
  stop=$((k + 3))
  if "$nl" train --config "$tmp/C.json" --resume --stop-at $stop --quiet > /dev/null 2>&1 &&
     "$nl" train --config "$tmp/D.json" --stop-at $stop --quiet > /dev/null 2>&1 &&
     cmp -s "$tmp/C/model.safetensors" "$tmp/D/model.safetensors"; then
    pass "resumed after Ctrl-C to step $stop: same weights as an uninterrupted run"
  else
    fail "resumed after Ctrl-C differs from an uninterrupted run (or failed)"
  fi
else
  fail "Ctrl-C: exit $rc"; tail -3 "$tmp/C.err"
fi

# --- save_dtype bf16 -------------------------------------------------------------------------------
mkcfg E save_dtype='"bf16"'
if "$nl" train --config "$tmp/E.json" --quiet > /dev/null 2>&1 && "$nl" info "$tmp/E" 2>&1 | grep -q 'dtype        bf16' &&
   "$nl" ppl "$tmp/E" "$tmp/val.jsonl" --stride 80 --json > "$tmp/pplE.json" 2>&1 &&
   "$PY" -c '
import json, sys
a = json.load(open(sys.argv[1]))["nll"]; b = json.load(open(sys.argv[2]))["nll"]
print(f"  bf16 nll {b:.5f} vs f32 {a:.5f}"); sys.exit(0 if abs(a - b) < 0.02 else 1)' "$tmp/ppl.json" "$tmp/pplE.json"; then
  pass "save_dtype bf16: loads, scores within 0.02 nats of f32"
else
  fail "save_dtype bf16"
fi

# --- mixture of experts: Mixtral-style and Qwen2-MoE-style (shared expert) ----------------------------
# Each saved folder loads with the mixtral / qwen2_moe loader and its ppl equals the trainer's evaluation;
# the log carries the balancing loss; a stopped and resumed MoE run equals the uninterrupted one.
moe_ppl_check() { # NAME TYPE: info names the architecture, ppl == val_loss
  local name=$1 type=$2
  if "$nl" info "$tmp/$name" > "$tmp/$name.info" 2>&1 && grep -q "architecture $type" "$tmp/$name.info" &&
     "$nl" ppl "$tmp/$name" "$tmp/val.jsonl" --stride 80 --json > "$tmp/$name.ppl.json" 2>&1 &&
     "$PY" - "$tmp/$name/training.json" "$tmp/$name.ppl.json" "$tmp/$name/config.json" "$type" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["final"]
p = json.load(open(sys.argv[2]))
c = json.load(open(sys.argv[3]))
d = abs(t["val_loss"] - p["nll"])
print(f"  {sys.argv[4]}: trainer val_loss {t['val_loss']:.6f} ({t['val_predictions']} predictions), "
      f"ppl nll {p['nll']:.6f} ({p['tokens']} predictions), |diff| {d:.2e}")
sys.exit(0 if d <= 1e-4 and t["val_predictions"] == p["tokens"] and c["model_type"] == sys.argv[4] else 1)
PY
  then pass "$type: the saved folder loads ($type) and its ppl equals the trainer's evaluation (1e-4)"
  else fail "$type: info/ppl of the saved folder:"; tail -3 "$tmp/$name.info"
  fi
}
mkcfg M d_ff=DEL l1=0 'moe={"experts": 4, "top_k": 2, "d_expert": 24, "aux_loss": 0.02}'
if "$nl" train --config "$tmp/M.json" > "$tmp/M.out" 2> "$tmp/M.err" &&
   "$PY" - "$tmp/M/train_log.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
aux = [r["aux"] for r in rows if "loss" in r]
print(f"  mixtral: {len(aux)} log rows, aux loss {aux[0]:.4f} -> {aux[-1]:.4f} (2 = balanced top-2), "
      f"loss {rows[0]['loss']:.3f} -> {[r for r in rows if 'loss' in r][-1]['loss']:.3f}")
sys.exit(0 if len(aux) == 30 and all(1.99 < a < 8 for a in aux) else 1)
PY
then pass "mixtral-style run: 30 log rows with the balancing loss"; else fail "mixtral-style run:"; tail -3 "$tmp/M.err"; fi
moe_ppl_check M mixtral
mkcfg Q d_ff=DEL l1=0 'moe={"experts": 4, "top_k": 1, "d_expert": 24, "shared_d": 24}'
if "$nl" train --config "$tmp/Q.json" --quiet > /dev/null 2> "$tmp/Q.err"; then
  pass "qwen2_moe-style run (shared expert, top-1)"
else
  fail "qwen2_moe-style run:"; tail -3 "$tmp/Q.err"
fi
moe_ppl_check Q qwen2_moe
mkcfg MB d_ff=DEL l1=0 'moe={"experts": 4, "top_k": 2, "d_expert": 24, "aux_loss": 0.02}'
if "$nl" train --config "$tmp/MB.json" --stop-at 12 --quiet > /dev/null 2>&1 &&
   "$nl" train --config "$tmp/MB.json" --resume --quiet > /dev/null 2>&1 && compare_runs "$tmp/M" "$tmp/MB"; then
  pass "mixtral-style: stopped at 12 of 30 and resumed: same losses and weights"
else
  fail "mixtral-style resume"
fi

# --- bad inputs: exit 1, one line naming the file, previous checkpoint untouched ------------------
cp "$tmp/A/checkpoint.bin" "$tmp/A.ckpt.orig"
expect_bad() { # NAME PATTERN CONFIG [ARGS...]: resumes into folder A with a bad config
  local name=$1 pat=$2 cfg=$3; shift 3
  "$nl" train --config "$cfg" --quiet "$@" > "$tmp/bad.out" 2> "$tmp/bad.err"
  local rc=$? lines; lines=$(wc -l < "$tmp/bad.err")
  if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -qE -- "$pat" "$tmp/bad.err" && cmp -s "$tmp/A/checkpoint.bin" "$tmp/A.ckpt.orig"; then
    pass "$name"
  else
    fail "$name: exit $rc, $lines stderr lines, wanted /$pat/, checkpoint $(cmp -s "$tmp/A/checkpoint.bin" "$tmp/A.ckpt.orig" && echo kept || echo CHANGED):"
    sed 's/^/    /' "$tmp/bad.err" | head -5
  fi
}
mkcfg A steps=40 train_data="\"$tmp/empty.jsonl\""
expect_bad "empty corpus" "empty.jsonl': no documents" "$tmp/A.json" --resume
mkcfg A steps=40 train_data="\"$tmp/short.jsonl\""
expect_bad "corpus shorter than one window" "short.jsonl' \(train_data of '.*A.json'\): 5 tokens are too few for one window of seq_len \+ 1 = 81" "$tmp/A.json" --resume
mkcfg A steps=40 hidden_act='"swiglu"'
expect_bad "unknown activation" "A.json': hidden_act \"swiglu\" is not supported \(supported: silu, gelu, relu, relu2\)" "$tmp/A.json" --resume
mkcfg A steps=40 vocab_size=100
expect_bad "vocab_size below the tokenizer's ids" "A.json': vocab_size 100 is smaller than the 257 ids of tokenizer '.*tokenizer.json'" "$tmp/A.json" --resume
mkcfg A steps=40 train_data="\"$tmp/bigid.jsonl\""
expect_bad "token id >= vocab_size in the data" "bigid.jsonl' line 1: token id 300 is outside the vocabulary \(size 257\)" "$tmp/A.json" --resume
mkcfg A steps=40 learnig_rate=0.1
expect_bad "typo in a key" "A.json': unknown key 'learnig_rate'" "$tmp/A.json" --resume
mkcfg A steps=40 d_ff=DEL l1=0 'moe={"experts": 4, "d_expert": 16, "router_jitter": 0.1}'
expect_bad "unknown router option" "A.json': unknown router option 'moe.router_jitter'" "$tmp/A.json" --resume
mkcfg A steps=40 d_ff=DEL l1=0 'moe={"experts": 4, "top_k": 5, "d_expert": 16}'
expect_bad "moe top_k above the experts" "A.json': moe.top_k 5 exceeds moe.experts 4" "$tmp/A.json" --resume
mkcfg A steps=40 l1=0 'moe={"experts": 4, "d_expert": 16}'
expect_bad "d_ff with moe" "A.json': key 'd_ff' must be left out with 'moe'" "$tmp/A.json" --resume
mkcfg A steps=40 d_ff=DEL l1=0 'moe={"type": "mixtral", "experts": 4, "d_expert": 16, "shared_d": 8}'
expect_bad "shared expert with type mixtral" "A.json': moe.shared_d 8 needs type qwen2_moe" "$tmp/A.json" --resume
mkcfg A steps=40 d_ff=DEL l1=0 'moe={"experts": 4, "d_expert": 16}'
expect_bad "resume a dense checkpoint with moe" "A.json': key '(d_ff|moe)' differs from checkpoint" "$tmp/A.json" --resume
mkcfg A steps=40 d_model=64
expect_bad "resume with a changed model key" "A.json': key 'd_model' differs from checkpoint '.*A/checkpoint.bin'" "$tmp/A.json" --resume
mkcfg A steps=40
expect_bad "fresh run over an existing checkpoint" "A/checkpoint.bin' exists: continue it with --resume" "$tmp/A.json"
cp -r "$tmp/A" "$tmp/A2"
"$PY" -c '
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[-100] ^= 0x5A; open(p, "wb").write(b)' "$tmp/A2/checkpoint.bin"
mkcfg A2 steps=40
if "$nl" train --config "$tmp/A2.json" --resume --quiet > /dev/null 2> "$tmp/bad.err"; then
  fail "damaged checkpoint accepted"
elif [ "$(wc -l < "$tmp/bad.err")" -eq 1 ] && grep -q "A2/checkpoint.bin': checksum mismatch" "$tmp/bad.err"; then
  pass "damaged checkpoint refused"
else
  fail "damaged checkpoint:"; cat "$tmp/bad.err"
fi
mkcfg A steps=40
if "$nl" train --config "$tmp/A.json" --resume --quiet > /dev/null 2>&1 && [ "$(ckpt_step "$tmp/A/checkpoint.bin")" = 40 ]; then
  pass "the kept checkpoint still resumes (30 -> 40 steps)"
else
  fail "resume after the bad inputs"
fi

# NaN: lr 1e9 with a checkpoint every step; the loss blows up at step k, the checkpoint of step k-1 stays.
mkcfg N lr=1e9 warmup_steps=0 checkpoint_every=1 steps=20 eval_every=0
"$nl" train --config "$tmp/N.json" --quiet > /dev/null 2> "$tmp/nan.err"
rc=$?
if [ $rc -eq 1 ] && [ "$(wc -l < "$tmp/nan.err")" -eq 1 ] &&
   grep -qE "N.json': the (loss|gradient norm) is (nan|inf) at step [0-9]+ \(lr [0-9.e+]+\); stopped, the last good checkpoint '.*N/checkpoint.bin' \(step [0-9]+\) is kept" "$tmp/nan.err"; then
  bad=$(sed -E 's/.* at step ([0-9]+) .*/\1/' "$tmp/nan.err")
  good=$(ckpt_step "$tmp/N/checkpoint.bin")
  if [ "$good" -eq $((bad - 1)) ]; then
    pass "NaN loss stops at step $bad naming it; checkpoint of step $good kept"
  else
    fail "NaN: stopped at $bad but the checkpoint holds step $good"
  fi
  if "$nl" train --config "$tmp/N.json" --resume --stop-at "$good" --quiet > /dev/null 2>&1; then
    pass "the checkpoint kept after NaN loads"
  else
    fail "the checkpoint kept after NaN does not load"
  fi
else
  fail "NaN: exit $rc:"; cat "$tmp/nan.err"
fi
