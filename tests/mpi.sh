#!/usr/bin/env bash
# test-runner: alone (timing-, RSS- or process-count-sensitive: run by itself after the parallel lanes)
# mpi.sh — the MPI build (make mpi → build-mpi/neuronlab) against one process.
#   Data parallel, `mpirun --oversubscribe -np 1/2/3` on the zoo model (notebooks-data/models/silu)
#   with 7 small documents of 3 labels: ppl --json, perturb (value and random masks: the random
#   stream continues across the ranks' blocks) and prune (--json and their SQLite rows, every
#   REAL compared exactly) equal the serial build's; record --pool (f32) over 1/2/3 ranks,
#   --dtype f16 over 3 and --hook ffn_act,resid over 2 (the ranks write one file together,
#   h5store_mpi.h) give files whose every dataset and attribute is bit for bit the serial file's,
#   and neuronlab's own validating reader (ability) reads them as the serial one; record --stats
#   gives the serial summary (counts, histograms, extremes, top-K and pooled values exactly, the
#   Chan-merged moments within 1e-9 relative), also with more ranks than documents; record --db
#   registers one run, from rank 0.
#   Pipeline parallel: ppl and perturb --pipeline 2 and 3, and record --pool --pipeline 2 (each
#   rank writes its layers' rows) equal one process. Also the
#   peak RSS of each rank of ppl --pipeline 2 and record --pipeline 2 on a 151 MB float32 model
#   (bench/make_model.py, made in a temporary folder), printed and within half the file + 64 MiB
#   (one process: the whole file); the record's file is the one-process file.
#   Bad input and failures, each one line from rank 0 and exit 1: ranks given different models (an
#   env-var trick on OMPI_COMM_WORLD_RANK), different datasets, a dataset missing on one rank; a
#   pipeline split leaving a rank no layer (3 ranks, 2 layers; ppl and record), --pipeline P with
#   another number of ranks, record --stats --pipeline, record --resume over ranks, record into a
#   missing folder, and a rank whose writes fail mid-run (`ulimit -f` on rank 1): no output file
#   and no temporary file is left.
# Skipped when build-mpi/neuronlab or mpirun is absent. Prints PASS/FAIL/SKIP lines.
set -u
cd "$(dirname "$0")/.."
mpi_nl=${NL_MPI_BUILD:-build-mpi}/neuronlab
if [ ! -x "$mpi_nl" ]; then echo "SKIP mpi: $mpi_nl is absent (make mpi builds it when Open MPI is installed)"; exit 0; fi
if ! command -v mpirun > /dev/null; then echo "SKIP mpi: no mpirun"; exit 0; fi
P=$(realpath "$mpi_nl")
S=$(realpath "${NL_BUILD:-build}/neuronlab" 2>/dev/null)
[ -x "$S" ] || S=$P # the reference: the serial build, else one MPI process
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_mpi.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
run() { local n=$1; shift; mpirun -q --oversubscribe -np "$n" "$@"; }
model=$(realpath notebooks-data/models/silu)
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; [ -n "${2:-}" ] && [ -f "$2" ] && sed 's/^/  | /' "$2" | head -20; }

$py - "$tmp" <<'PY'
import json, random, sys
random.seed(1)
labels = ["code", "math", "prose"]
with open(sys.argv[1] + "/d.jsonl", "w") as f, open(sys.argv[1] + "/d5.jsonl", "w") as g:
    for d in range(7):
        row = json.dumps({"tokens": [1] + [random.randrange(2, 8000) for _ in range(random.randrange(20, 120))], "label": labels[d % 3]}) + "\n"
        f.write(row)
        if d < 5: g.write(row)
PY
d=$tmp/d.jsonl

# h5 files, pairs (reference, other) in one python (importing h5py takes seconds here): every
# dataset bit for bit (vlen too), every root attribute but created_by; with --stats the moments
# (mean, m2, r_sum, sum_abs: double sums merged by Chan) within 1e-9.
cat > "$tmp/cmp.py" <<'PY'
import h5py, numpy as np, sys
args = sys.argv[1:]
stats = args[:1] == ["--stats"]
args = args[1:] if stats else args
bad = []
def cmp(ra, rb):
  try: a, b = h5py.File(ra, "r"), h5py.File(rb, "r")
  except OSError as e: bad.append(f"{rb}: {e}"); return
  def walk(g, h, path):
      ka, kb = set(g.keys()), set(h.keys())
      if ka != kb: bad.append(f"{rb}: {path}: keys {sorted(ka ^ kb)}")
      for k in sorted(ka & kb):
          x, y = g[k], h[k]
          if isinstance(x, h5py.Group): walk(x, y, path + k + "/"); continue
          if x.dtype != y.dtype or x.shape != y.shape: bad.append(f"{rb}: {path}{k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"); continue
          u, v = x[()], y[()]
          if stats and k in ("mean", "m2", "r_sum", "sum_abs"):
              err = np.max(np.abs(u - v) / np.maximum(np.abs(u), 1.0)) if u.size else 0.0
              if err > 1e-9: bad.append(f"{rb}: {path}{k}: relative difference {err:.3g}")
          elif x.dtype.kind == "f":
              if not np.array_equal(u.view(np.uint8), v.view(np.uint8)): bad.append(f"{rb}: {path}{k}: values differ")
          elif x.dtype.kind == "O" and h5py.check_vlen_dtype(x.dtype) not in (str, bytes):
              if any(not np.array_equal(p, q) for p, q in zip(u, v)): bad.append(f"{rb}: {path}{k}: values differ")
          elif not np.array_equal(u, v): bad.append(f"{rb}: {path}{k}: values differ")
  walk(a, b, "/")
  for k in set(a.attrs) | set(b.attrs):
      if k != "created_by" and not np.array_equal(np.asarray(a.attrs.get(k)), np.asarray(b.attrs.get(k))):
          bad.append(f"{rb}: attribute {k}: {a.attrs.get(k)!r} vs {b.attrs.get(k)!r}")
for i in range(0, len(args), 2): cmp(args[i], args[i + 1])
print("\n".join(bad) if bad else "identical")
sys.exit(1 if bad else 0)
PY
# SQLite: the rows of the named tables of two databases, every column but run_id, exactly.
cat > "$tmp/cmpdb.py" <<'PY'
import sqlite3, sys
a, b = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
bad = []
for t in sys.argv[3:]:
    cols = [r[1] for r in a.execute(f"PRAGMA table_info({t})") if r[1] != "run_id"]
    q = f"SELECT {','.join(cols)} FROM {t} ORDER BY {','.join(cols)}"
    x, y = a.execute(q).fetchall(), b.execute(q).fetchall()
    if not x: bad.append(f"{t}: no rows")
    if x != y: bad.append(f"{t}: {len(x)} vs {len(y)} rows, first difference {next((p, q) for p, q in zip(x, y) if p != q) if len(x) == len(y) else ''}")
print("\n".join(bad) if bad else "identical")
sys.exit(1 if bad else 0)
PY

# 1. ppl: -np 1/2/3 = one process.
"$S" ppl "$model" "$d" --json --threads 1 --quiet > "$tmp/ppl.s" 2> "$tmp/err"
ok=1
for n in 1 2 3; do
  run $n "$P" ppl "$model" "$d" --json --threads 1 > "$tmp/ppl.$n" 2>> "$tmp/err" && cmp -s "$tmp/ppl.s" "$tmp/ppl.$n" || { ok=0; echo "np $n differs" >> "$tmp/err"; }
done
[ $ok = 1 ] && [ -s "$tmp/ppl.s" ] && pass "ppl --json: mpirun -np 1/2/3 print the one-process output" || fail "ppl over ranks" "$tmp/err"

# 2. record --pool (f32) over 1/2/3 ranks, --dtype f16 over 3, --hook ffn_act,resid over 2, and
#    --pool --pipeline 2: one file written by the ranks together, every dataset and attribute bit
#    for bit the one-process file's; the validating reader (ability) reads it as the serial one.
"$S" record "$model" "$d" -o "$tmp/s.h5" --pool --threads 1 --quiet 2> "$tmp/err"
"$S" record "$model" "$d" -o "$tmp/s16.h5" --dtype f16 --threads 1 --quiet 2>> "$tmp/err"
"$S" record "$model" "$d" -o "$tmp/sh.h5" --hook ffn_act,resid --threads 1 --quiet 2>> "$tmp/err"
ok=1 pairs=()
same() { # reference file, name of the other, then the mpirun arguments of the record writing it
  local ref=$1 out=$tmp/$2.h5; shift 2
  run "$@" -o "$out" --threads 1 > /dev/null 2>> "$tmp/err" || { ok=0; echo "failed: $*" >> "$tmp/err"; }
  pairs+=("$ref" "$out")
}
for n in 1 2 3; do same "$tmp/s.h5" m$n $n "$P" record "$model" "$d" --pool; done
same "$tmp/s16.h5" m16 3 "$P" record "$model" "$d" --dtype f16
same "$tmp/sh.h5" mh 2 "$P" record "$model" "$d" --hook ffn_act,resid
same "$tmp/s.h5" mp2 2 "$P" record "$model" "$d" --pool --pipeline 2
$py "$tmp/cmp.py" "${pairs[@]}" >> "$tmp/err" 2>&1 || ok=0
"$S" ability "$tmp/s.h5" --db "$tmp/ab.db" --threads 1 --quiet > "$tmp/ab.s" 2>> "$tmp/err"
"$S" ability "$tmp/m3.h5" --db "$tmp/ab3.db" --threads 1 --quiet > "$tmp/ab.3" 2>> "$tmp/err"
sed -i "s|$tmp/m3.h5|$tmp/s.h5|; s|ab3.db|ab.db|" "$tmp/ab.3"
[ -s "$tmp/ab.s" ] && cmp -s "$tmp/ab.s" "$tmp/ab.3" || { ok=0; echo "ability reads the 3-rank file otherwise" >> "$tmp/err"; }
ls "$tmp"/*.part-* "$tmp"/*.tmp-* > /dev/null 2>&1 && { ok=0; echo "part or temporary files left behind" >> "$tmp/err"; }
[ $ok = 1 ] && pass "record --pool over 1/2/3 ranks, --dtype f16 over 3, --hook ffn_act,resid over 2, --pool --pipeline 2: one file, every dataset and attribute bit for bit the one-process file's (ability reads it alike)" ||
  fail "record over ranks" "$tmp/err"

# 3. record --stats over 1/2/3 ranks: the one-process summary.
"$S" record "$model" "$d" -o "$tmp/ss.h5" --stats --threads 1 --quiet 2> "$tmp/err"
ok=1
for n in 1 2 3; do
  run $n "$P" record "$model" "$d" -o "$tmp/ms$n.h5" --stats --threads 1 > /dev/null 2>> "$tmp/err" || { ok=0; echo "np $n failed" >> "$tmp/err"; }
done
$py "$tmp/cmp.py" --stats "$tmp/ss.h5" "$tmp/ms1.h5" "$tmp/ss.h5" "$tmp/ms2.h5" "$tmp/ss.h5" "$tmp/ms3.h5" >> "$tmp/err" 2>&1 || ok=0
[ $ok = 1 ] && pass "record --stats over 1/2/3 ranks: counts, histograms, top-K, pooled exact; moments within 1e-9" ||
  fail "record --stats over ranks" "$tmp/err"

# 3b. More ranks than documents (3 ranks, 2 documents): the empty rank adds nothing.
head -2 "$d" > "$tmp/d2.jsonl"
"$S" record "$model" "$tmp/d2.jsonl" -o "$tmp/e1.h5" --pool --threads 1 --quiet 2> "$tmp/err"
"$S" record "$model" "$tmp/d2.jsonl" -o "$tmp/es1.h5" --stats --threads 1 --quiet 2>> "$tmp/err"
if run 3 "$P" record "$model" "$tmp/d2.jsonl" -o "$tmp/e3.h5" --pool --threads 1 > /dev/null 2>> "$tmp/err" &&
   run 3 "$P" record "$model" "$tmp/d2.jsonl" -o "$tmp/es3.h5" --stats --threads 1 > /dev/null 2>> "$tmp/err" &&
   $py "$tmp/cmp.py" --stats "$tmp/e1.h5" "$tmp/e3.h5" "$tmp/es1.h5" "$tmp/es3.h5" >> "$tmp/err" 2>&1; then
  pass "record and record --stats with 3 ranks for 2 documents: the one-process files"
else fail "more ranks than documents" "$tmp/err"; fi

# 4. record --db over 3 ranks: one run, complete, from rank 0.
if run 3 "$P" record "$model" "$d" -o "$tmp/db.h5" --db "$tmp/rec.db" --threads 1 > /dev/null 2> "$tmp/err" &&
   [ "$(sqlite3 "$tmp/rec.db" "SELECT count(*) || ' ' || group_concat(status) FROM runs WHERE kind = 'record'")" = "1 complete" ]; then
  pass "record --db over 3 ranks: one complete run in the database"
else fail "record --db over ranks" "$tmp/err"; fi

# 5. perturb (value and random masks) over 3 ranks: --json and the perturb rows exactly.
args=(--ratios 0,0.5 --metric value,random --threads 1 --json)
"$S" perturb "$model" "$d" "${args[@]}" --db "$tmp/ps.db" --quiet > "$tmp/pt.s" 2> "$tmp/err"
ok=1
for n in 3; do
  run $n "$P" perturb "$model" "$d" "${args[@]}" --db "$tmp/pm$n.db" > "$tmp/pt.$n" 2>> "$tmp/err" && cmp -s "$tmp/pt.s" "$tmp/pt.$n" &&
    $py "$tmp/cmpdb.py" "$tmp/ps.db" "$tmp/pm$n.db" perturb >> "$tmp/err" 2>&1 || { ok=0; echo "np $n differs" >> "$tmp/err"; }
done
[ $ok = 1 ] && pass "perturb value/random over 3 ranks: --json and every perturb row (REALs exactly) as one process" ||
  fail "perturb over ranks" "$tmp/err"

# 6. prune over 1/2/3 ranks (scores: record --pool + ability): --json and its rows exactly.
if [ -s "$tmp/ab.db" ]; then
  for x in s 1 2 3; do cp "$tmp/ab.db" "$tmp/pr$x.db"; done
  "$S" prune "$model" "$d" --db "$tmp/prs.db" --scores latest --seeds 1 --threads 1 --json --quiet > "$tmp/pr.s" 2>> "$tmp/err"
  ok=1
  for n in 1 2 3; do
    run $n "$P" prune "$model" "$d" --db "$tmp/pr$n.db" --scores latest --seeds 1 --threads 1 --json > "$tmp/pr.$n" 2>> "$tmp/err" &&
      cmp -s "$tmp/pr.s" "$tmp/pr.$n" && $py "$tmp/cmpdb.py" "$tmp/prs.db" "$tmp/pr$n.db" prune_effect prune_control >> "$tmp/err" 2>&1 ||
      { ok=0; echo "np $n differs" >> "$tmp/err"; }
  done
  [ $ok = 1 ] && [ -s "$tmp/pr.s" ] && pass "prune over 1/2/3 ranks: --json and the prune_effect/prune_control rows as one process" ||
    fail "prune over ranks" "$tmp/err"
else fail "ability for prune" "$tmp/err"; fi

# 7. --pipeline 2 and 3: ppl and perturb as one process.
: > "$tmp/err"
ok=1
for n in 2 3; do
  run $n "$P" ppl "$model" "$d" --json --threads 1 --pipeline $n > "$tmp/pp.$n" 2>> "$tmp/err" && cmp -s "$tmp/ppl.s" "$tmp/pp.$n" ||
    { ok=0; echo "ppl --pipeline $n differs" >> "$tmp/err"; }
done
run 2 "$P" perturb "$model" "$d" "${args[@]}" --db "$tmp/ptp.db" --pipeline 2 > "$tmp/ptp" 2>> "$tmp/err" && cmp -s "$tmp/pt.s" "$tmp/ptp" ||
  { ok=0; echo "perturb --pipeline 2 differs" >> "$tmp/err"; }
[ $ok = 1 ] && pass "ppl --pipeline 2/3 and perturb --pipeline 2: the one-process output" || fail "pipeline" "$tmp/err"

# 8. RSS per rank: ppl --pipeline 2 on a 151 MB float32 model (mapped, each rank touches its layers).
if $py bench/make_model.py "$tmp/big" --layers 8 --hidden 512 --heads 8 --kv-heads 8 --ffn 2048 --vocab 4096 --docs 4 --doc-len 256 \
     > "$tmp/err" 2>&1; then
  big=$tmp/big/llama100m
  head -2 "$tmp/big/data_4.jsonl" > "$tmp/bd.jsonl"
  fsize=$(stat -c %s "$big/model.safetensors")
  /usr/bin/time -f "%M" -o "$tmp/rss.1" "$P" ppl "$big" "$tmp/bd.jsonl" --json --threads 1 --quiet > "$tmp/b.1" 2>> "$tmp/err"
  run 2 bash -c 'exec /usr/bin/time -f "%M" -o "$0.$OMPI_COMM_WORLD_RANK" "$@"' "$tmp/rssp" "$P" ppl "$big" "$tmp/bd.jsonl" --json --threads 1 \
    --pipeline 2 > "$tmp/b.2" 2>> "$tmp/err"
  r1=$(cat "$tmp/rss.1" 2>/dev/null); r0p=$(cat "$tmp/rssp.0" 2>/dev/null); r1p=$(cat "$tmp/rssp.1" 2>/dev/null)
  lim=$(( fsize / 2 / 1024 + 65536 ))
  echo "  peak RSS: one process ${r1:-?} KB; --pipeline 2: rank 0 ${r0p:-?} KB, rank 1 ${r1p:-?} KB (model file $((fsize / 1024)) KB, limit per rank $lim KB)"
  if [ -n "$r0p" ] && [ -n "$r1p" ] && cmp -s "$tmp/b.1" "$tmp/b.2" && [ "$r0p" -le $lim ] && [ "$r1p" -le $lim ]; then
    pass "ppl --pipeline 2 on a $((fsize / 1048576)) MiB model: same output, peak RSS per rank ${r0p} / ${r1p} KB <= half the file + 64 MiB (one process ${r1} KB)"
  else fail "pipeline RSS per rank" "$tmp/err"; fi
  # record --pipeline 2: each rank writes its 4 layers' rows into the one file (+ its chunk buffers)
  /usr/bin/time -f "%M" -o "$tmp/rrss.1" "$S" record "$big" "$tmp/bd.jsonl" -o "$tmp/bs.h5" --threads 1 --quiet 2>> "$tmp/err"
  run 2 bash -c 'exec /usr/bin/time -f "%M" -o "$0.$OMPI_COMM_WORLD_RANK" "$@"' "$tmp/rrssp" "$P" record "$big" "$tmp/bd.jsonl" \
    -o "$tmp/bp.h5" --threads 1 --pipeline 2 > /dev/null 2>> "$tmp/err"
  r1=$(cat "$tmp/rrss.1" 2>/dev/null); r0p=$(cat "$tmp/rrssp.0" 2>/dev/null); r1p=$(cat "$tmp/rrssp.1" 2>/dev/null)
  echo "  peak RSS of record: one process ${r1:-?} KB; --pipeline 2: rank 0 ${r0p:-?} KB, rank 1 ${r1p:-?} KB (limit per rank $lim KB)"
  if [ -n "$r0p" ] && [ -n "$r1p" ] && [ "$r0p" -le $lim ] && [ "$r1p" -le $lim ] && $py "$tmp/cmp.py" "$tmp/bs.h5" "$tmp/bp.h5" >> "$tmp/err" 2>&1; then
    pass "record --pipeline 2 on the $((fsize / 1048576)) MiB model: the one-process file, peak RSS per rank ${r0p} / ${r1p} KB <= half the model + 64 MiB (one process ${r1} KB)"
  else fail "record --pipeline RSS per rank" "$tmp/err"; fi
else fail "bench/make_model.py for the RSS check" "$tmp/err"; fi

# 9. Bad input: one line from rank 0 (mpirun -q adds nothing), exit 1.
one_line() { # name expected-substring command...
  local name=$1 want=$2; shift 2
  "$@" > /dev/null 2> "$tmp/e"; local rc=$?
  if [ $rc -eq 1 ] && [ "$(grep -c . "$tmp/e")" -eq 1 ] && grep -q '^neuronlab: ' "$tmp/e" && grep -qF -- "$want" "$tmp/e"; then
    pass "$name: exit 1, one line: $(cat "$tmp/e")"
  else { echo "exit $rc"; cat "$tmp/e"; } > "$tmp/e2"; fail "$name" "$tmp/e2"; fi
}
models=$(realpath notebooks-data/models)
one_line "ranks with different models" "ranks disagree about the model: rank 1 has '$models/gelu'" \
  run 2 bash -c 'm=silu; [ "$OMPI_COMM_WORLD_RANK" = 1 ] && m=gelu; exec "$0" ppl "$1/$m" "$2" --threads 1' "$P" "$models" "$d"
one_line "record --attn over 2 ranks" "record --attn runs in one process" \
  run 2 "$P" record "$model" "$d" -o "$tmp/xa.h5" --attn 0 --ctx 512 --threads 1
one_line "ranks with different datasets" "ranks disagree about the dataset: rank 2 has '$tmp/d5.jsonl'" \
  run 3 bash -c 'x=$2; [ "$OMPI_COMM_WORLD_RANK" = 2 ] && x=$3; exec "$0" record "$1" "$x" -o "$4" --threads 1' "$P" "$model" "$d" "$tmp/d5.jsonl" "$tmp/x.h5"
one_line "a dataset missing on one rank" "rank 1: cannot open '$tmp/none.jsonl'" \
  run 2 bash -c 'x=$2; [ "$OMPI_COMM_WORLD_RANK" = 1 ] && x=$3; exec "$0" ppl "$1" "$x" --threads 1' "$P" "$model" "$d" "$tmp/none.jsonl"
one_line "--pipeline 3 on a 2-layer model" "a rank would get no layer" run 3 "$P" ppl tests/fixtures/hf/llama "$d" --pipeline 3
one_line "record --pipeline 3 on a 2-layer model" "a rank would get no layer" \
  run 3 "$P" record tests/fixtures/hf/llama "$d" -o "$tmp/y.h5" --pipeline 3
one_line "--pipeline 3 over 2 ranks" "--pipeline 3 needs exactly 3 MPI ranks" run 2 "$P" ppl "$model" "$d" --pipeline 3
one_line "record --stats --pipeline" "record --stats --pipeline is not supported" \
  run 2 "$P" record "$model" "$d" -o "$tmp/y.h5" --stats --pipeline 2
one_line "record --resume over ranks" "record --resume runs in one process" run 2 "$P" record "$model" "$d" -o "$tmp/s.h5" --resume
one_line "record over ranks into a missing folder" "cannot create '$tmp/no/z.h5': No such file or directory" \
  run 2 "$P" record "$model" "$d" -o "$tmp/no/z.h5" --threads 1
one_line "record: rank 1's writes fail (ulimit -f)" "rank 1: cannot write '$tmp/y.h5'" \
  run 2 bash -c '[ "$OMPI_COMM_WORLD_RANK" = 1 ] && ulimit -f 200; exec "$0" record "$1" "$2" -o "$3" --threads 1' "$P" "$model" "$d" "$tmp/y.h5"
one_line "record --pipeline 2: rank 1's writes fail (ulimit -f)" "rank 1: cannot write '$tmp/y.h5'" \
  run 2 bash -c '[ "$OMPI_COMM_WORLD_RANK" = 1 ] && ulimit -f 200; exec "$0" record "$1" "$2" -o "$3" --threads 1 --pipeline 2' "$P" "$model" "$d" "$tmp/y.h5"
if [ -e "$tmp/x.h5" ] || [ -e "$tmp/y.h5" ] || ls "$tmp"/*.tmp-* > /dev/null 2>&1; then echo "FAIL a refused or failed record left its output or a temporary file"
else pass "refused and failed records leave no output and no temporary file"; fi
exit 0
