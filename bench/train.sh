#!/usr/bin/env bash
# bench/train.sh BUILD [CONFIG] [STEPS] — training throughput of `neuronlab train` at the zoo size,
# against the machine's measured sgemm peak. Called by `make bench` (the lead wires it in).
#
#   1. builds bench/sgemm_peak.c against the same OpenBLAS (OpenMP build) and measures the best
#      GFLOP/s of a 2048³ cblas_sgemm with all threads and with one (and prints the OpenBLAS kernel,
#      openblas_get_corename());
#   2. trains CONFIG (default notebooks-data/zoo/silu.json) for STEPS steps (default 24) on random
#      token ids (speed does not depend on the data; the zoo tokenizer and corpus need not exist):
#      same model, seq_len, batch_size and grad_accum, vocab_size = the config's (8192 when it has
#      none), no evaluation, no checkpoints until the end;
#   3. prints steady-state tokens/s (median and best step after the first 4, which pay for page faults and
#      thread start-up), the GFLOP/s that implies (FLOPs as executed, trainer.h), the fraction of the
#      sgemm peak, and the time the config's own step count would take at that speed.
# OPENBLAS_CORETYPE is left alone. Numbers are only meaningful on an otherwise idle machine: the
# script prints the load average before and after.
set -euo pipefail
BUILD=${1:-build}
CONFIG=${2:-notebooks-data/zoo/silu.json}
STEPS=${3:-24}
cd "$(dirname "$0")/.."
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3)
NL="$BUILD/neuronlab"
if [ ! -x "$NL" ]; then echo "bench/train.sh: $NL not found: run 'make' first" >&2; exit 1; fi
if [ ! -f "$CONFIG" ]; then echo "bench/train.sh: config '$CONFIG' not found" >&2; exit 1; fi
W="$BUILD/bench/train"
mkdir -p "$W"
BLAS_DIR=/usr/lib/x86_64-linux-gnu/openblas-openmp
${CC:-cc} -O2 -fopenmp bench/sgemm_peak.c -I/usr/include/x86_64-linux-gnu/openblas-pthread \
  "$BLAS_DIR/libopenblas.so.0" -Wl,-rpath,"$BLAS_DIR" -o "$W/sgemm_peak"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$W/sgemm_peak" 2048 6 > "$W/peak.txt"
peak=$(sed -n 's/^gflops_all=//p' "$W/peak.txt")
peak1=$(sed -n 's/^gflops_1=//p' "$W/peak.txt")
core=$(sed -n 's/^core=//p' "$W/peak.txt")
threads=$(sed -n 's/^threads=//p' "$W/peak.txt")

# random-token data and the benchmark config derived from CONFIG
"$PY" - "$CONFIG" "$W" "$STEPS" <<'PY'
import json, os, random, sys
cfg_path, w, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = {k: v for k, v in json.load(open(cfg_path)).items() if not k.startswith("_")}
V = c.get("vocab_size", 8192)
need = (c["batch_size"] * steps + 8) * (c["seq_len"] + 1)
random.seed(1)
with open(os.path.join(w, "tokens.jsonl"), "w") as f:
    for _ in range(need // 50000 + 1):
        f.write(json.dumps({"tokens": [random.randrange(V) for _ in range(50000)]}) + "\n")
c.update(train_data=os.path.join(w, "tokens.jsonl"), vocab_size=V, out=os.path.join(w, "run"),
         steps=steps, warmup_steps=min(c.get("warmup_steps", 0), steps), log_every=1, eval_every=0,
         checkpoint_every=0)
for k in ("val_data", "tokenizer"):
    c.pop(k, None)
json.dump(c, open(os.path.join(w, "bench.json"), "w"), indent=1)
PY
rm -rf "$W/run"
"$NL" train --config "$W/bench.json" --quiet > "$W/train.out" 2> "$W/train.err" || { cat "$W/train.err" >&2; exit 1; }
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

"$PY" - "$W/run" "$CONFIG" "$peak" "$peak1" "$core" "$threads" <<'PY'
import json, sys
run, cfg_path, peak, peak1, core, threads = sys.argv[1:7]
peak, peak1 = float(peak), float(peak1)
t = json.load(open(f"{run}/training.json"))
c = t["config"]
rows = [json.loads(l) for l in open(f"{run}/train_log.jsonl") if '"loss"' in l]
a, b = rows[3], rows[-1]
tok_step = c["batch_size"] * c["seq_len"]
mean_tps = (b["step"] - a["step"]) * tok_step / (b["elapsed"] - a["elapsed"])
# per-step durations after warm-up: the median is robust to a few disturbed steps, the best is
# what an idle machine sustains when other jobs come and go
dts = sorted(r1["elapsed"] - r0["elapsed"] for r0, r1 in zip(rows[3:-1], rows[4:]))
med_tps = tok_step / dts[len(dts) // 2]
best_tps = tok_step / dts[0]
tps = med_tps
fpt = t["model"]["flops_per_token"]
gf = tps * fpt / 1e9
own = {k: v for k, v in json.load(open(cfg_path)).items() if not k.startswith("_")}
secs = own["steps"] * tok_step / tps
print(f"config            {cfg_path}: d_model {c['d_model']}, {c['n_layers']} layers, {c['n_heads']} heads "
      f"({c['n_kv_heads']} kv), d_ff {c['d_ff']}, vocab {c['vocab_size']}, {c['hidden_act']}, "
      f"tied {c['tie_word_embeddings']}")
print(f"parameters        {t['model']['n_params'] / 1e6:.2f} M; {fpt / 1e6:.1f} MFLOP per token (forward + backward, as executed)")
print(f"batch             {c['batch_size']} x {c['seq_len']} tokens per step, micro-batch {t['run']['micro_batch']} windows, "
      f"activations {t['run']['activation_bytes'] / 2**20:.0f} MiB")
print(f"OpenBLAS          {core}, {threads} threads")
print(f"sgemm peak        {peak:.1f} GFLOP/s ({threads} threads), {peak1:.1f} GFLOP/s (1 thread), 2048^3")
print(f"training          {tps:.0f} tokens/s (median step of {a['step']}-{b['step']}), {gf:.1f} GFLOP/s "
      f"= {100 * gf / peak:.0f}% of the sgemm peak; mean {mean_tps:.0f} tokens/s, best step {best_tps:.0f} tokens/s "
      f"({100 * best_tps * fpt / 1e9 / peak:.0f}% of peak)")
print(f"zoo run           {own['steps']} steps x {tok_step} tokens = {own['steps'] * tok_step / 1e6:.2f} M tokens "
      f"-> {secs / 60:.1f} min at this speed")
PY
