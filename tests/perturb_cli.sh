#!/usr/bin/env bash
# perturb_cli.sh — `perturb` and `record --db` end to end on the fixture model
# tests/fixtures/hf/llama with a labelled token dataset: the results database gets one complete
# run with the documented rows (ratio 0 = ppl), a second run leaves the first untouched, Ctrl-C
# keeps the finished settings and marks the run interrupted (exit 130), record --db marks its
# run complete / interrupted, bad option values exit 2, and a read-only, locked or foreign
# database is a one-line error naming the file (exit 1).
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=$(realpath "${NL_BUILD:-build}/neuronlab")
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_perturb.XXXXXX)
lockpid=
cleanup() {
  [ -n "$lockpid" ] && kill "$lockpid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
model=tests/fixtures/hf/llama

if ! $py -c 'import sqlite3' 2>/dev/null; then echo "SKIP perturb CLI checks: /usr/bin/python3 has no sqlite3"; exit 0; fi

# pass NAME / fail NAME [details file]
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; [ -n "${2:-}" ] && [ -f "$2" ] && sed 's/^/  | /' "$2" | head -20; }

# Datasets for the fixture (vocab 256): 24 labelled documents of 48 tokens; 1000 of 128 tokens.
$py - "$tmp" <<'PY'
import json, random, sys
random.seed(5)
labels = ["code", "math", "", "prose"]
with open(sys.argv[1] + "/small.jsonl", "w") as f:
    for d in range(24):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(47)], "label": labels[d % 4]}) + "\n")
with open(sys.argv[1] + "/big.jsonl", "w") as f:
    for d in range(1000):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(127)], "label": labels[d % 4]}) + "\n")
PY

# 1. One complete run with the documented rows; --json agrees with the database; ratio 0 = ppl.
db=$tmp/r.db
"$nl" ppl $model "$tmp/small.jsonl" --json > "$tmp/ppl.json" 2>"$tmp/err"
if "$nl" perturb $model "$tmp/small.jsonl" --metric value,norm,random --ratios 0,0.5,0.9 --db "$db" --json \
     > "$tmp/p1.json" 2>"$tmp/err"; then
  $py - "$db" "$tmp/p1.json" "$tmp/ppl.json" > "$tmp/check" 2>&1 <<'PY' && pass "perturb --db: one complete run, 36 rows, --json agrees, ratio 0 = ppl" || fail "perturb --db rows" "$tmp/check"
import json, math, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
runs = c.execute("SELECT id, kind, status, params, model, dataset, ended_at FROM runs").fetchall()
assert len(runs) == 1 and runs[0][1] == "perturb" and runs[0][2] == "complete" and runs[0][6], runs
p = json.loads(runs[0][3])
assert p["metrics"] == ["value", "norm", "random"] and p["ratios"] == [0, 0.5, 0.9] and p["seed"] == 0, p
assert p["ctx"] == 128 and p["stride"] == 64, p
cols = [r[1] for r in c.execute("PRAGMA table_info(perturb)")]
assert cols == ["run_id", "metric", "ratio", "label", "tokens", "nll", "ppl", "masked"], cols
rows = c.execute("SELECT metric, ratio, label, tokens, nll, ppl, masked FROM perturb WHERE run_id = ?", (runs[0][0],)).fetchall()
assert len(rows) == 3 * 3 * 4, len(rows)  # metrics × ratios × ('' + code, math, prose)
assert {r[2] for r in rows} == {"", "code", "math", "prose"}
assert {(r[1], r[6]) for r in rows} == {(0.0, 0), (0.5, 64), (0.9, 115)}  # floor(ratio × 128)
for r in rows:
    assert abs(math.exp(r[4]) - r[5]) < 1e-9 * r[5], r
    assert r[3] == (24 * 47 if r[2] == "" else 6 * 47), r
got = json.load(open(sys.argv[2])); ppl = json.load(open(sys.argv[3]))
assert got["status"] == "complete" and got["run_id"] == runs[0][0] and len(got["results"]) == 9
db = {(r[0], r[1], r[2]): r[5] for r in rows}
for x in got["results"]:
    assert abs(db[(x["metric"], x["ratio"], "")] - x["ppl"]) < 1e-5 * x["ppl"], x
    for lab, s in x["by_label"].items():
        assert abs(db[(x["metric"], x["ratio"], lab)] - s["ppl"]) < 1e-5 * s["ppl"], (x, lab)
    if x["ratio"] == 0:
        assert x["ppl"] == ppl["ppl"] and x["nll"] == ppl["nll"], (x, ppl["ppl"])
        for lab, s in ppl["by_label"].items(): assert x["by_label"][lab] == s, lab
    else:
        assert x["ppl"] != ppl["ppl"], x  # random weights: masking changes the loss either way
print("ok")
PY
else fail "perturb --db exited non-zero" "$tmp/err"; fi

# The text table: a header line, the overall block and one block per label.
"$nl" perturb $model "$tmp/small.jsonl" --ratios 0,0.5 --metric norm,value > "$tmp/table" 2>"$tmp/err"
if grep -q '^ratio  *masked  *norm  *value$' "$tmp/table" && grep -q "^perplexity, label 'prose'" "$tmp/table" &&
   [ "$(grep -c '^0.5  *64 ' "$tmp/table")" = 4 ]; then pass "perturb prints the metric × ratio table overall and per label"
else fail "perturb table" "$tmp/table"; fi

# 1b. --layers: only the listed layers are masked. Listing every layer gives the all-layer run's
# numbers; one layer gives other numbers at ratio 0.5 and the unmasked ones at ratio 0; the
# params and --json record the list; bad lists are errors (2 for the syntax, 1 for the model).
ldb=$tmp/l.db
if "$nl" perturb $model "$tmp/small.jsonl" --metric value,random --ratios 0,0.5 --threads 1 --json > "$tmp/l0.json" 2>"$tmp/err" &&
   "$nl" perturb $model "$tmp/small.jsonl" --metric value,random --ratios 0,0.5 --layers 1,0 --threads 1 --json > "$tmp/l2.json" 2>>"$tmp/err" &&
   "$nl" perturb $model "$tmp/small.jsonl" --metric value,random --ratios 0,0.5 --layers 1 --db "$ldb" --threads 1 --json > "$tmp/l1.json" 2>>"$tmp/err"; then
  $py - "$tmp" "$ldb" > "$tmp/check" 2>&1 <<'PY' && pass "perturb --layers masks only the listed layers (all listed = default; params and --json record the list)" || fail "perturb --layers" "$tmp/check"
import json, sqlite3, sys
t = sys.argv[1]
a, b, c = (json.load(open(f"{t}/{n}.json")) for n in ("l0", "l2", "l1"))
cell = lambda j, m, r: [x for x in j["results"] if x["metric"] == m and x["ratio"] == r][0]
assert a["layers"] is None and b["layers"] == [1, 0] and c["layers"] == [1], (a["layers"], b["layers"], c["layers"])
for m in ("value", "random"):
    assert cell(a, m, 0.5)["ppl"] == cell(b, m, 0.5)["ppl"], m
    assert cell(c, m, 0)["ppl"] == cell(a, m, 0)["ppl"], m
    assert cell(c, m, 0.5)["ppl"] != cell(a, m, 0.5)["ppl"], m
p = json.loads(sqlite3.connect(sys.argv[2]).execute("SELECT params FROM runs").fetchone()[0])
assert p["layers"] == [1], p
print("ok")
PY
else fail "perturb --layers exited non-zero" "$tmp/err"; fi
"$nl" perturb $model "$tmp/small.jsonl" --layers 2 > "$tmp/out" 2>"$tmp/e.err"; rc=$?
[ $rc = 1 ] && [ "$(cat "$tmp/e.err")" = "neuronlab: layer 2 is outside the model's 0..1" ] && [ ! -s "$tmp/out" ] &&
  pass "perturb --layers 2 on a 2-layer model: one-line error" || fail "perturb --layers out of range (exit $rc)" "$tmp/e.err"
"$nl" perturb $model "$tmp/small.jsonl" --layers 0,x > /dev/null 2>"$tmp/e.err"; rc=$?
[ $rc = 2 ] && grep -q -- "--layers needs a list of layer numbers" "$tmp/e.err" && pass "perturb --layers 0,x is a usage error" || fail "perturb --layers syntax (exit $rc)" "$tmp/e.err"

# 2. A second run adds a run and leaves the first untouched; the same seed repeats the random control.
$py -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('SELECT * FROM perturb WHERE run_id=1 ORDER BY rowid').fetchall(), c.execute('SELECT * FROM runs WHERE id=1').fetchall())" "$db" > "$tmp/before"
if "$nl" perturb $model "$tmp/small.jsonl" --metric random --ratios 0.5 --db "$db" > /dev/null 2>"$tmp/err" &&
   "$nl" perturb $model "$tmp/small.jsonl" --metric random --ratios 0.5 --seed 7 --db "$db" > /dev/null 2>>"$tmp/err"; then
  $py -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('SELECT * FROM perturb WHERE run_id=1 ORDER BY rowid').fetchall(), c.execute('SELECT * FROM runs WHERE id=1').fetchall())" "$db" > "$tmp/after"
  $py - "$db" > "$tmp/check" 2>&1 <<'PY' && cmp -s "$tmp/before" "$tmp/after" && pass "a second run adds a run, the first is untouched; --seed repeats / changes the random control" || fail "second run" "$tmp/check"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
st = c.execute("SELECT id, status FROM runs ORDER BY id").fetchall()
assert st == [(1, "complete"), (2, "complete"), (3, "complete")], st
q = "SELECT ppl FROM perturb WHERE run_id = ? AND metric = 'random' AND ratio = 0.5 AND label = ''"
a, b, s7 = (c.execute(q, (i,)).fetchone()[0] for i in (1, 2, 3))
assert a == b and a != s7, (a, b, s7)
print("ok")
PY
else fail "second perturb run exited non-zero" "$tmp/err"; fi

# 3. Ctrl-C while perturb runs: exit 130, the run 'interrupted', every finished setting kept whole.
idb=$tmp/int.db
"$nl" perturb $model "$tmp/big.jsonl" --db "$idb" > "$tmp/int.out" 2>"$tmp/int.err" &
pid=$!
$py - "$idb" $pid <<'PY'
import sqlite3, sys, time, os
t0 = time.time()
while time.time() - t0 < 600:  # wait for the first committed setting (a busy machine is slow)
    try:  # perturb is gone or a zombie (an error, or done): nothing to wait for
        if open(f"/proc/{sys.argv[2]}/stat").read().rsplit(")", 1)[1].split()[0] == "Z": break
    except OSError: break
    try:
        if os.path.exists(sys.argv[1]) and sqlite3.connect(sys.argv[1], timeout=5).execute(
                "SELECT count(*) FROM perturb").fetchone()[0] > 0: break
    except sqlite3.Error: pass
    time.sleep(0.1)
PY
kill -INT $pid 2>/dev/null
wait $pid; rc=$?
$py - "$idb" $rc > "$tmp/check" 2>&1 <<'PY' && pass "Ctrl-C during perturb: exit 130, run interrupted, finished settings kept" || { fail "Ctrl-C during perturb (exit $rc)" "$tmp/check"; sed 's/^/  | /' "$tmp/int.err"; }
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
rc = int(sys.argv[2])
runs = c.execute("SELECT status, message, ended_at FROM runs").fetchall()
n = c.execute("SELECT count(*) FROM perturb").fetchone()[0]
per = c.execute("SELECT count(*) FROM perturb GROUP BY metric, ratio").fetchall()
print(f"exit {rc}, run {runs}, {n} rows kept of {30 * 4}")
assert rc == 130 and len(runs) == 1 and runs[0][0] == "interrupted" and runs[0][2]
assert 0 < n < 30 * 4 and all(p == (4,) for p in per), per  # whole settings: '' + 3 labels
PY
grep -q "keeps .* settings (run 1 marked interrupted)" "$tmp/int.err" && pass "Ctrl-C during perturb says what was kept" || fail "Ctrl-C message" "$tmp/int.err"

# 4. record --db: complete run with the .h5 as source; Ctrl-C → interrupted (and the file stays valid).
rdb=$tmp/rec.db
if "$nl" record $model "$tmp/small.jsonl" -o "$tmp/a.h5" --layers 1 --db "$rdb" 2>"$tmp/err"; then
  $py - "$rdb" "$tmp/a.h5" > "$tmp/check" 2>&1 <<'PY' && pass "record --db: run complete, source is the .h5 file" || fail "record --db" "$tmp/check"
import json, sqlite3, sys
r = sqlite3.connect(sys.argv[1]).execute("SELECT kind, status, source, params, dataset FROM runs").fetchall()
assert len(r) == 1 and r[0][:3] == ("record", "complete", sys.argv[2]), r
p = json.loads(r[0][3])
assert p["layers"] == [1] and p["dtype"] == "f32" and p["pool"] is False and p["ctx"] == 128, p
print("ok")
PY
else fail "record --db exited non-zero" "$tmp/err"; fi
"$nl" record $model "$tmp/big.jsonl" -o "$tmp/int.h5" --db "$rdb" 2>"$tmp/rint.err" &
pid=$!
$py - "$rdb" <<'PY'
import sqlite3, sys, time
t0 = time.time()
while time.time() - t0 < 60:  # wait until the second run is registered
    try:
        if sqlite3.connect(sys.argv[1], timeout=5).execute("SELECT count(*) FROM runs").fetchone()[0] > 1: break
    except sqlite3.Error: pass
    time.sleep(0.05)
time.sleep(0.3)
PY
kill -INT $pid 2>/dev/null
wait $pid; rc=$?
st=$($py -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT group_concat(status) FROM runs').fetchone()[0])" "$rdb")
if [ $rc = 130 ] && [ "$st" = "complete,interrupted" ]; then pass "Ctrl-C during record --db: exit 130, run interrupted"
else echo "exit $rc, statuses $st" > "$tmp/check"; cat "$tmp/rint.err" >> "$tmp/check"; fail "Ctrl-C during record --db" "$tmp/check"; fi
"$nl" record $model "$tmp/small.jsonl" -o "$tmp/missing/x.h5" --db "$rdb" 2>"$tmp/err"; rc=$?
st=$($py -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT status, message FROM runs WHERE id = 3').fetchone())" "$rdb")
if [ $rc = 1 ] && [ "$st" = "('failed', \"cannot create '$tmp/missing/x.h5': No such file or directory\")" ]; then
  pass "record --db with an unwritable output: exit 1, run failed with the message"
else echo "exit $rc, run $st" >> "$tmp/err"; fail "record --db with an unwritable output" "$tmp/err"; fi
"$nl" record $model "$tmp/small.jsonl" -o "$tmp/nodb.h5" 2>/dev/null && [ -f "$tmp/nodb.h5" ] && [ ! -e "$tmp/results.db" ] &&
  pass "record without --db writes no database" || fail "record without --db"

# 5. Bad option values: usage errors, exit 2.
bad_usage() { # description, extra args…
  local what=$1; shift
  "$nl" perturb $model "$tmp/small.jsonl" "$@" > /dev/null 2>"$tmp/u.err"; local rc=$?
  if [ $rc = 2 ] && grep -q "usage: neuronlab perturb" "$tmp/u.err"; then pass "perturb $what: usage error (exit 2)"
  else echo "exit $rc" >> "$tmp/u.err"; fail "perturb $what" "$tmp/u.err"; fi
}
bad_usage "--ratios 1.0" --ratios 1.0
bad_usage "--ratios -0.1" --ratios 0,-0.1
bad_usage "--ratios 0.5,abc" --ratios 0.5,abc
bad_usage "--ratios 0.5,0.5" --ratios 0.5,0.5
bad_usage "--ratios ''" --ratios ''
bad_usage "--metric foo" --metric value,foo
bad_usage "--seed -1" --seed -1
bad_usage "--db without a path" --db

# 6. Bad databases: one line naming the file, exit 1, and nothing computed.
one_line_error() { # description, expected text, db path, [record | ro]
  local what=$1 want=$2 path=$3 rc
  if [ "${4:-}" = record ]; then "$nl" record $model "$tmp/small.jsonl" -o "$tmp/bad.h5" --db "$path" > "$tmp/out" 2>"$tmp/e.err"; rc=$?
  elif [ "${4:-}" = ro ]; then ro_mount "$(dirname "$path")" "$nl" perturb $model "$tmp/small.jsonl" --db "$path" > "$tmp/out" 2>"$tmp/e.err"; rc=$?
  else "$nl" perturb $model "$tmp/small.jsonl" --db "$path" > "$tmp/out" 2>"$tmp/e.err"; rc=$?; fi
  if [ $rc = 1 ] && [ "$(wc -l < "$tmp/e.err")" = 1 ] && grep -qF "'$path'" "$tmp/e.err" && grep -qF "$want" "$tmp/e.err" &&
     [ ! -s "$tmp/out" ]; then pass "$what: one-line error naming the file, exit 1 ($(cat "$tmp/e.err"))"
  else echo "exit $rc" >> "$tmp/e.err"; fail "$what" "$tmp/e.err"; fi
}
echo "not a database, just text" > "$tmp/text.db"
one_line_error "perturb --db on a text file" "is not an SQLite database" "$tmp/text.db"
$py -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('CREATE TABLE t(x)'); c.commit()" "$tmp/other.db"
one_line_error "perturb --db on another application's SQLite file" "is not a neuronlab results database" "$tmp/other.db"
one_line_error "record --db on another application's SQLite file" "is not a neuronlab results database" "$tmp/other.db" record
[ ! -e "$tmp/bad.h5" ] && pass "record --db with a bad database creates no .h5" || fail "record --db with a bad database created the .h5"
one_line_error "perturb --db in a missing directory" "cannot open" "$tmp/missing/r.db"

# Locked: another process holds an exclusive lock.
cp "$db" "$tmp/locked.db"
$py - "$tmp/locked.db" "$tmp/locked.ready" <<'PY' &
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
open(sys.argv[2], "w").close()
time.sleep(60)
PY
lockpid=$!
for _ in $(seq 100); do [ -f "$tmp/locked.ready" ] && break; sleep 0.05; done
export NEURONLAB_DB_TIMEOUT_MS=200
one_line_error "perturb --db on a locked database" "is locked by another process" "$tmp/locked.db"
one_line_error "record --db on a locked database" "is locked by another process" "$tmp/locked.db" record
unset NEURONLAB_DB_TIMEOUT_MS
kill $lockpid 2>/dev/null; wait $lockpid 2>/dev/null; lockpid=

# Read-only: as root, file modes do not stop writes, so the command runs in a private mount
# namespace (unshare -m) where the database's directory is a read-only bind mount (nothing
# leaks to the rest of the system); otherwise chmod is enough.
ro_mount() { # DIR CMD…: runs CMD with DIR read-only
  local dir=$1; shift
  unshare -m --propagation private sh -c 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"' "$dir" "$@"
}
mkdir -p "$tmp/ro"
cp "$db" "$tmp/ro/r.db"
if [ "$(id -u)" != 0 ]; then
  chmod 555 "$tmp/ro"; chmod 444 "$tmp/ro/r.db"
  one_line_error "perturb --db on a read-only database" "is read-only" "$tmp/ro/r.db"
  chmod 755 "$tmp/ro"
elif ro_mount "$tmp/ro" sh -c '! touch "$0/probe"' "$tmp/ro" 2>/dev/null; then
  one_line_error "perturb --db on a read-only database (read-only bind mount)" "is read-only" "$tmp/ro/r.db" ro
  one_line_error "perturb --db creating a database in a read-only directory" "cannot open" "$tmp/ro/new.db" ro
else
  echo "SKIP perturb --db on a read-only database: running as root without mount rights (unshare -m failed), and file modes do not stop root"
fi
exit 0
