#!/usr/bin/env bash
# examples.sh — `make install`, the shared library and the C programs of examples/, end to end:
# installs into a temporary PREFIX, checks the layout (lib/libneuronlab.so → .so.0.1 → .so.0.1.0,
# lib/libneuronlab.a, include/neuronlab/*.h, lib/pkgconfig/neuronlab.pc), the soname, that the .so
# exports exactly the functions the public headers declare (none of analyses/ or the private
# headers), builds examples/*.c with `pkg-config --cflags --libs neuronlab`, runs them on the zoo
# model notebooks-data/models/silu and checks their numbers against the CLI's: ablate_neuron's base
# NLL = `neuronlab ppl`, its ablated NLL = `neuronlab prune --neurons` (the database's value), its
# residual norm = the one computed from `record --hook resid`; neuron_stats's mean |a| and active
# fraction = those computed from `record` (ffn_act); and that a changed CFLAGS recompiles (cflags
# stamp). NL_BUILD gives the build folder.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
build=${NL_BUILD:-build}
nl=$(realpath "$build/neuronlab")
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_examples.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=passive
model=notebooks-data/models/silu
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; [ -n "${2:-}" ] && [ -f "$2" ] && sed 's/^/  | /' "$2" | head -20; }
for tool in pkg-config cc readelf nm; do
  command -v $tool >/dev/null || { echo "SKIP examples: $tool is not installed (make deps)"; exit 0; }
done

prefix=$tmp/prefix
if make --no-print-directory BUILD="$build" install PREFIX="$prefix" >"$tmp/install.log" 2>&1; then pass "make install PREFIX=..."
else fail "make install PREFIX=..." "$tmp/install.log"; exit 0; fi
ver=$(sed -n 's/^#define NL_VERSION "\(.*\)"/\1/p' include/neuronlab/common.h)
sover=${ver%.*}
missing=""
for f in lib/libneuronlab.a lib/libneuronlab.so lib/libneuronlab.so.$sover lib/libneuronlab.so.$ver lib/pkgconfig/neuronlab.pc \
         include/neuronlab/capi.h include/neuronlab/hooks.h include/neuronlab/common.h; do
  [ -e "$prefix/$f" ] || missing="$missing $f"
done
[ $(ls "$prefix/include/neuronlab" | wc -l) -eq $(ls include/neuronlab/*.h | wc -l) ] || missing="$missing (some headers)"
if [ -z "$missing" ]; then pass "installed layout"; else fail "installed layout: missing$missing"; fi
soname=$(readelf -d "$prefix/lib/libneuronlab.so.$ver" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [ "$soname" = "libneuronlab.so.$sover" ]; then pass "soname $soname"; else fail "soname is '$soname', expected libneuronlab.so.$sover"; fi

# exports: defined dynamic symbols = the library's symbols that a public header names
nm -D --defined-only "$prefix/lib/libneuronlab.so" | awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' | sort -u >"$tmp/dyn"
grep -ho '\bnl_[A-Za-z0-9_]*' include/neuronlab/*.h | sort -u >"$tmp/hdr"
extra=$(comm -23 "$tmp/dyn" "$tmp/hdr")
if [ -z "$extra" ] && grep -qx nl_api_open "$tmp/dyn" && grep -qx nl_forward_run "$tmp/dyn" && ! grep -qx nl_prune_hook "$tmp/dyn" \
   && [ $(wc -l <"$tmp/dyn") -gt 100 ]; then
  pass "exports: only the public API ($(wc -l <"$tmp/dyn") symbols; nl_prune_hook of analyses/ hidden)"
else
  fail "exports: $(wc -w <<<"$extra") symbols outside the public headers: $(head -c 300 <<<"$extra")"
fi

# a changed compile line rebuilds (BUILD/cflags.stamp), an unchanged one does not
obj=$tmp/b/obj/src/core/rng.o counts=""
for opt in "" "" "-O1"; do
  counts="$counts $(make --no-print-directory BUILD="$tmp/b" ${opt:+OPT=$opt} "$obj" 2>&1 | grep -c 'rng\.c')"
done
if [ "$counts" = " 1 0 1" ]; then pass "cflags stamp: built, up to date, rebuilt after OPT=-O1"; else fail "cflags stamp: compiles per make run were$counts, expected 1 0 1"; fi

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig LD_LIBRARY_PATH=$prefix/lib
if [ "$(pkg-config --modversion neuronlab)" = "$ver" ]; then pass "pkg-config --modversion neuronlab = $ver"; else fail "pkg-config neuronlab"; fi
for e in ablate_neuron neuron_stats; do
  if cc -std=c11 -Wall -Wextra -Wno-unused-parameter -Werror -O2 $(pkg-config --cflags neuronlab) examples/$e.c \
        $(pkg-config --libs neuronlab) -lm -o "$tmp/$e" 2>"$tmp/$e.log"; then
    if readelf -d "$tmp/$e" | grep -q "NEEDED.*libneuronlab.so.$sover"; then pass "examples/$e.c builds against the installed library"
    else fail "examples/$e.c does not link libneuronlab.so.$sover"; fi
  else fail "examples/$e.c does not build" "$tmp/$e.log"; fi
done

# data: documents of four abilities that fit the context (so every tool sees them whole)
for l in math code ethics translation; do head -5 notebooks-data/eval/$l.jsonl; done >"$tmp/text.jsonl"
"$nl" tokenize "$model" "$tmp/text.jsonl" --quiet >"$tmp/tok.jsonl"
$py -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
with open(sys.argv[2], "w") as f:
    for r in rows:
        if len(r["tokens"]) <= 256: f.write(json.dumps(r) + "\n")' "$tmp/tok.jsonl" "$tmp/data.jsonl"
ndocs=$(wc -l <"$tmp/data.jsonl")
layer=3 neuron=264
"$nl" ppl "$model" "$tmp/data.jsonl" --json --threads 1 --quiet >"$tmp/ppl.json"
printf 'layer,neuron\n%d,%d\n' $layer $neuron >"$tmp/n.csv"
"$nl" prune "$model" "$tmp/data.jsonl" --db "$tmp/r.db" --neurons "$tmp/n.csv" --seeds 1 --threads 1 --quiet >/dev/null 2>>"$tmp/cli.log"
"$nl" record "$model" "$tmp/data.jsonl" -o "$tmp/a.h5" --hook ffn_act,resid --layers 3,5 --threads 1 --quiet 2>>"$tmp/cli.log"

if [ -x "$tmp/ablate_neuron" ] && "$tmp/ablate_neuron" "$model" "$tmp/data.jsonl" $layer $neuron >"$tmp/abl.out" 2>&1; then
  if $py - "$tmp" <<'PY' >"$tmp/abl.check" 2>&1; then pass "ablate_neuron = ppl / prune --neurons / record --hook resid ($ndocs documents)"; else fail "ablate_neuron against the CLI" "$tmp/abl.check"; fi
import json, sqlite3, sys
import numpy as np
t = sys.argv[1]
out = dict()
for line in open(t + "/abl.out"):
    w = line.split()
    for k, v in zip(w[::2], w[1::2]):
        try: out[k] = float(v)
        except ValueError: pass
ppl = json.load(open(t + "/ppl.json"))
assert abs(out["base_nll"] - ppl["nll"]) < 1e-6, (out["base_nll"], ppl["nll"])
db = sqlite3.connect(t + "/r.db")
(pruned,) = db.execute("SELECT nll FROM prune_effect WHERE control = 'ability' AND label = ''").fetchone()
assert abs(out["ablated_nll"] - pruned) < 2e-9, (out["ablated_nll"], pruned)
assert out["ablated_nll"] != out["base_nll"]
try:
    import h5py
except ImportError:
    print("h5py missing: residual norm not checked"); sys.exit(0)
with h5py.File(t + "/a.h5", "r") as f:
    o = f["doc_offsets"][:]
    r = f["layers/5/resid"][o[0]:o[1]].astype(np.float64)
norm = np.linalg.norm(r, axis=1).mean()
assert abs(out["resid_norm_base"] - norm) < 2e-5 * norm, (out["resid_norm_base"], norm)
print("ok", out, norm)
PY
else fail "ablate_neuron runs" "$tmp/abl.out"; fi

if [ -x "$tmp/neuron_stats" ] && "$tmp/neuron_stats" "$model" "$tmp/data.jsonl" $layer 0.1 5 >"$tmp/st.out" 2>&1; then
  if $py - "$tmp" <<'PY' >"$tmp/st.check" 2>&1; then pass "neuron_stats = statistics of record's ffn_act"; else fail "neuron_stats against record" "$tmp/st.check"; fi
import sys
t = sys.argv[1]
try:
    import h5py, numpy as np
except ImportError:
    print("SKIP"); sys.exit(0)
with h5py.File(t + "/a.h5", "r") as f:
    a = np.abs(f["layers/3/ffn_act"][:].astype(np.float64))
mean, frac = a.mean(0), (a > np.float32(0.1)).mean(0)
lines = [l.split() for l in open(t + "/st.out") if l.startswith("neuron ")]
assert len(lines) == 5
order = np.argsort(-mean, kind="stable")[:5]
for l, i in zip(lines, order):
    n = int(l[1])
    assert n == i, (n, i)
    assert abs(float(l[3]) - mean[n]) < 2e-6 and abs(float(l[5]) - frac[n]) < 1e-6, (l, mean[n], frac[n])
first = open(t + "/st.out").readline().split()
assert int(first[2]) == a.shape[0], (first, a.shape)
print("ok")
PY
else fail "neuron_stats runs" "$tmp/st.out"; fi
exit 0
