#!/usr/bin/env bash
# test-runner: alone (timing-, RSS- or process-count-sensitive: run by itself after the parallel lanes)
# record_kill.sh — crash-safe recording: `record` runs of a 300-document dataset on the
# fixture model are SIGKILLed at seeded random moments (20 kills, a quarter of them in the first
# 60 ms, during start-up and file creation; NL_SLOW=1: 100). After each kill the output is
# either absent (killed before the first commit: at most a PATH.tmp-PID file is left) or h5py
# must open it and find a prefix of the uninterrupted run's documents,
# bit-identical, with at least as many documents as the last commit line on stderr
# (NEURONLAB_COMMIT_LOG=1) announced; `record --resume` must then complete it to content
# identical (every dataset, bit for bit) to the uninterrupted run. The killed runs register
# in a results database, where `neuronlab runs` must show them stale. Also: a resume with a
# changed dataset is refused. Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_record_kill.XXXXXX)
trap '[ -n "${NL_KEEP:-}" ] || rm -rf "$tmp"' EXIT
if ! $py -c 'import h5py' 2>/dev/null; then echo "SKIP record_kill: python3-h5py is not installed"; exit 0; fi
kills=20; [ "${NL_SLOW:-0}" = 1 ] && kills=100
$py - "$nl" tests/fixtures/hf/llama "$tmp" "$kills" <<'PY'
import json, os, random, re, signal, subprocess, sys, time
import h5py, numpy as np
nl, model, tmp, kills = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rng = random.Random(7)
data = os.path.join(tmp, "d.jsonl")
with open(data, "w") as f:
    for d in range(300):
        row = {"tokens": [1] + [rng.randrange(2, 256) for _ in range(rng.randrange(8, 160))], "label": ["code", "math", ""][d % 3]}
        if d % 4 == 0: row["prompt_len"] = 5
        f.write(json.dumps(row) + "\n")
base = [nl, "record", model, data, "--pool", "--threads", "1", "--dtype", "f16"]
env = dict(os.environ, NEURONLAB_COMMIT_LOG="1", NEURONLAB_COMMIT_SECONDS="0.02", OMP_NUM_THREADS="1")
ref = os.path.join(tmp, "ref.h5")
t0 = time.time()
r = subprocess.run(base + ["-o", ref], env=env, capture_output=True, text=True)
if r.returncode != 0:
    print("FAIL record_kill: the uninterrupted run failed:", r.stderr.strip()); sys.exit(0)
t_full = time.time() - t0

def load(path):
    out = {}
    with h5py.File(path, "r") as f:
        def walk(g, p=""):
            for k in g:
                if isinstance(g[k], h5py.Dataset): out[p + k] = g[k][()]
                else: walk(g[k], p + k + "/")
        walk(f)
        out["@complete"] = int(f.attrs["complete"])
    return out
R = load(ref)
D, N = len(R["doc_offsets"]) - 1, len(R["tokens"])

def prefix_ok(A):
    """A holds documents 0..d-1 of R, bit-identical; returns d or raises."""
    d = len(A["doc_offsets"]) - 1
    n = int(A["doc_offsets"][-1])
    extra, missing = set(A) - set(R), set(R) - set(A)
    assert not extra, f"datasets the uninterrupted run does not have: {sorted(extra)[:4]}"
    # the W_out norms are written before the first document and reach the file with its commit:
    # a file killed before that commit has the empty datasets of its creation only
    assert not missing or (d == 0 and all(k.endswith("w_out_norm") for k in missing)), f"missing datasets {sorted(missing)[:4]}"
    for k, v in A.items():
        if k.startswith("@"): continue
        if k.endswith("w_out_norm"): assert np.array_equal(v, R[k]), k; continue
        rows = d + 1 if k == "doc_offsets" else d if k in ("doc_labels", "prompt_len") or k.startswith("pooled/") else n
        assert len(v) >= rows, f"{k} has {len(v)} rows, fewer than {rows}"
        assert np.array_equal(v[:rows], R[k][:rows]), f"{k} differs from the uninterrupted run"
    return d

db = os.path.join(tmp, "r.db")
fails, kept, resumed, beyond, cut, early, tmpleft = 0, [], 0, 0, 0, 0, 0
t0 = time.time()
for i in range(kills):
    out = os.path.join(tmp, f"k{i}.h5")
    p = subprocess.Popen(base + ["-o", out, "--db", db], env=env, stderr=subprocess.PIPE, text=True)
    # every fourth kill comes in the first moments (start-up, file creation), the others anywhere
    time.sleep(rng.uniform(0.0, 0.06) if i % 4 == 0 else rng.uniform(0.05, max(0.1, t_full * 0.9)))
    p.send_signal(signal.SIGKILL)
    err = p.stderr.read()
    p.wait()
    tmps = [f for f in os.listdir(tmp) if f.startswith(f"k{i}.h5.tmp-")]
    if tmps and os.path.exists(out):
        fails += 1; print(f"FAIL record_kill: kill {i}: both '{out}' and its temporary file {tmps} exist"); continue
    for f in tmps: os.unlink(os.path.join(tmp, f))
    tmpleft += bool(tmps)
    if not os.path.exists(out):
        # killed before the first commit (the empty file's): the final name never appeared
        # (a temporary file did or did not); record it afresh
        if re.search("committed", err):
            fails += 1; print(f"FAIL record_kill: kill {i}: a commit was logged but '{out}' does not exist"); continue
        kept.append(0); early += 1
        r = subprocess.run(base + ["-o", out, "--db", db, "--force"], env=env, capture_output=True, text=True)
        resumed += r.returncode == 0 and load(out)["@complete"] == 1
        continue
    logged = [int(m) for m in re.findall(r"committed (\d+) documents", err)]
    last = logged[-1] if logged else 0
    try:
        A0 = load(out)
        d = prefix_ok(A0)
        cut += A0["@complete"] == 0
        assert d >= last, f"{d} documents in the file but the log said {last} were committed"
        kept.append(d)
        beyond += d > last
    except Exception as e:
        fails += 1; print(f"FAIL record_kill: kill {i}: the killed file: {e}"); continue
    if os.environ.get("NL_KEEP"): os.system(f"cp '{out}' '{out}.killed'")
    r = subprocess.run(base + ["-o", out, "--resume", "--db", db], env=env, capture_output=True, text=True)
    try:
        assert r.returncode == 0, f"exit {r.returncode}: {r.stderr.strip()}"
        A = load(out)
        assert A["@complete"] == 1, "complete != 1"
        diff = [k for k in R if k not in A or not np.array_equal(A[k], R[k])]
        assert not diff, f"content differs from the uninterrupted run in {diff[:6]} (kept {d} documents)"
        resumed += 1
    except Exception as e:
        fails += 1; print(f"FAIL record_kill: kill {i}: resume: {e}")
dt = time.time() - t0
if not fails:
    print(f"PASS record_kill: {kills} SIGKILLs kept a bit-identical prefix (documents kept: min {min(kept)}, max {max(kept)} of {D}; "
          f"{beyond} beyond the last logged commit, {early} killed before the first commit, {tmpleft} of them inside the file's creation) and --resume completed all {resumed} to the uninterrupted content ({dt:.1f} s)")

# The killed runs stay 'running' in the database, shown stale; the resumed runs are complete.
r = subprocess.run([nl, "runs", "--db", db], capture_output=True, text=True)
rows = [l.split() for l in r.stdout.splitlines()[1:] if l.strip()]
n_stale = sum(1 for x in rows if x[1] == "record" and x[2] == "stale")
n_done = sum(1 for x in rows if x[1] == "record" and x[2] == "complete")
others = [x[:3] for x in rows if x[2] not in ("stale", "complete")]
# every run killed with a cut-short file is stale (more when a kill came before the file existed)
if n_stale >= cut and n_done >= kills and not others and r.returncode == 0: print(f"PASS record_kill: runs --db shows {n_stale} killed runs stale ({cut} killed with a cut-short file) and {n_done} complete")
else: print(f"FAIL record_kill: runs --db: {n_stale} stale (expected >= {cut}), {n_done} complete (expected >= {kills}), others {others}\n{r.stdout}{r.stderr}")

# --resume checks what it continues.
k0 = os.path.join(tmp, "k0.h5")
os.system(f"cp '{ref}' '{tmp}/x.h5'")
with open(os.path.join(tmp, "d2.jsonl"), "w") as f: f.write(open(data).read().replace('"math"', '"maths"'))
dd = os.path.join(tmp, "dd.jsonl")
os.system(f"cp '{data}' '{dd}'")
subprocess.run(base[:3] + [dd] + base[4:] + ["-o", f"{tmp}/y.h5"], env=env, capture_output=True)
os.system(f"cp '{tmp}/d2.jsonl' '{dd}'")
checks = [("another dataset", base[:3] + [os.path.join(tmp, "d2.jsonl")] + base[4:] + ["-o", f"{tmp}/x.h5", "--resume"], "its dataset is"),
          ("a dataset changed in place", base[:3] + [dd] + base[4:] + ["-o", f"{tmp}/y.h5", "--resume"], "its dataset_checksum is"),
          ("other layers", base + ["-o", f"{tmp}/x.h5", "--resume", "--layers", "1"], "layers"),
          ("another dtype", base[:-2] + ["--dtype", "f32", "-o", f"{tmp}/x.h5", "--resume"], "its dtype is 'float16'"),
          ("a missing file", base + ["-o", f"{tmp}/none.h5", "--resume"], "cannot resume")]
for what, cmd, want in checks:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    if r.returncode == 1 and want in msg: print(f"PASS record --resume refuses {what}: {msg}")
    else: print(f"FAIL record --resume refuses {what}: exit {r.returncode}: {r.stderr.strip()}")
PY
