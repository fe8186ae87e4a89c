#!/usr/bin/env bash
# runs_cli.sh — `neuronlab runs`: runs listed with their status; a run left 'running' by a
# process that is gone is shown as stale and `--repair` marks it interrupted (a live one is
# left alone, as is one from another host); a version-1 database is read as it is and brought
# to version 3 by a writer; three processes creating the same new database at once never fail;
# provenance: relative paths given from another folder are stored canonical with checksums
# that tell a changed file from the same one.
# Prints PASS/FAIL lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
tmp=$(mktemp -d /tmp/nl_runs.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
py=/usr/bin/python3
ok() { if [ "$1" = 0 ]; then echo "PASS $2"; else echo "FAIL $2"; fi; }

printf '{"tokens": [1, 5, 9, 12, 40], "label": "a"}\n{"tokens": [1, 7, 3], "label": "b"}\n' > "$tmp/d.jsonl"
"$nl" record tests/fixtures/hf/llama "$tmp/d.jsonl" -o "$tmp/a.h5" --db "$tmp/r.db" > /dev/null 2>&1
ok $? "record --db makes a database"
sqlite3 "$tmp/r.db" "SELECT pid > 0 AND host != '' FROM runs WHERE id = 1" | grep -qx 1
ok $? "a run stores the pid and host of its process"

# a dead pid (a finished child), a live one (this shell) and one on another host
sleep 0 & dead=$!; wait $dead
host=$(hostname)
now=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
sqlite3 "$tmp/r.db" "INSERT INTO runs(kind, tool_version, started_at, status, pid, host) VALUES
  ('record', 'neuronlab x', '$now', 'running', $dead, '$host'),
  ('sparsity', 'neuronlab x', '$now', 'running', $$, '$host'),
  ('perturb', 'neuronlab x', '$now', 'running', $dead, 'elsewhere.example')"
out=$("$nl" runs --db "$tmp/r.db")
echo "$out" | awk '$1 == 2 && $3 == "stale"' | grep -q . && echo "$out" | grep -q "process $dead on $host is gone"
ok $? "runs shows a run whose process is gone as stale"
echo "$out" | awk '$1 == 3 && $3 == "running"' | grep -q . && echo "$out" | awk '$1 == 4 && $3 == "running"' | grep -q .
ok $? "runs leaves a live process's run and another host's run running"
"$nl" runs --db "$tmp/r.db" --json | $py -c '
import json, sys
r = {x["id"]: x for x in json.load(sys.stdin)}
assert r[1]["status"] == "complete" and r[2]["status"] == "stale" and r[2]["stored_status"] == "running", r
assert r[3]["status"] == "running" and r[4]["status"] == "running"'
ok $? "runs --json is valid JSON with the computed and the stored status"
"$nl" runs --db "$tmp/r.db" --repair > /dev/null 2> "$tmp/rep.err"
[ "$(sqlite3 "$tmp/r.db" "SELECT group_concat(id || ':' || status, ' ') FROM runs")" = "1:complete 2:interrupted 3:running 4:running" ] &&
  grep -q "marked 1 stale run interrupted" "$tmp/rep.err" &&
  sqlite3 "$tmp/r.db" "SELECT message FROM runs WHERE id = 2" | grep -q "^stale: process $dead on $host ended without closing the run"
ok $? "runs --repair marks only the stale run interrupted and says why"

# a version-1 database (no pid/host columns)
sqlite3 "$tmp/v1.db" "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs(id INTEGER PRIMARY KEY, kind TEXT NOT NULL, model TEXT, dataset TEXT, source TEXT, params TEXT,
 tool_version TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT,
 status TEXT NOT NULL CHECK (status IN ('running','complete','interrupted','failed')), message TEXT);
INSERT INTO meta VALUES('format','neuronlab.results'),('schema_version','1');
INSERT INTO runs(kind, tool_version, started_at, status) VALUES('sparsity', 'neuronlab 0.1.0', '$now', 'complete');"
"$nl" runs --db "$tmp/v1.db" | awk '$1 == 1 && $3 == "complete"' | grep -q . &&
  [ "$(sqlite3 "$tmp/v1.db" "SELECT value FROM meta WHERE key = 'schema_version'")" = 1 ]
ok $? "a version-1 database is listed read-only and left as it is"
"$nl" record tests/fixtures/hf/llama "$tmp/d.jsonl" -o "$tmp/b.h5" --db "$tmp/v1.db" > /dev/null 2>&1 &&
  [ "$(sqlite3 "$tmp/v1.db" "SELECT value FROM meta WHERE key = 'schema_version'")" = 3 ] &&
  [ "$(sqlite3 "$tmp/v1.db" "SELECT count(*) FROM runs WHERE pid IS NULL AND model_sum IS NULL")" = 1 ] &&
  [ "$(sqlite3 "$tmp/v1.db" "SELECT count(*) FROM runs WHERE pid > 0 AND status = 'complete' AND model_sum IS NOT NULL")" = 1 ]
ok $? "a writer brings a version-1 database to version 3 and keeps its runs"

# three processes create the same new database at once (R8: one used to fail ~10% of rounds)
# provenance from another folder: canonical paths, checksums that match the files
mkdir -p "$tmp/sub"
cp "$tmp/d.jsonl" "$tmp/sub/same.jsonl"
root=$PWD
(cd "$tmp/sub" && "$root/$nl" record "$(realpath --relative-to="$tmp/sub" "$root/tests/fixtures/hf/llama")" ./same.jsonl -o x.h5 --db ../p.db > /dev/null 2>&1)
"$nl" runs --db "$tmp/p.db" --json > "$tmp/p.json" && "$nl" runs --db "$tmp/r.db" --json > "$tmp/r.json" &&
$py - "$tmp/p.json" "$tmp/r.json" "$tmp" "$root" <<'PY'
import json, os, sys
p = json.load(open(sys.argv[1]))[0]
r = json.load(open(sys.argv[2]))[0]
tmp, root = os.path.realpath(sys.argv[3]), sys.argv[4]
assert p["model"] == os.path.realpath(root + "/tests/fixtures/hf/llama"), p
assert p["dataset"] == tmp + "/sub/same.jsonl" and p["source"] == tmp + "/sub/x.h5", p
assert r["dataset"] == tmp + "/d.jsonl", r
for x in (p, r):
    for k in ("model_sum", "dataset_sum", "source_sum"):
        assert x[k] and x[k].startswith("fnv1a64:") and len(x[k].split(":")[1]) == 16, (k, x)
assert p["model_sum"] == r["model_sum"], "the same model folder"
assert p["dataset_sum"] == r["dataset_sum"], "a copy of the same dataset has the same checksum"
assert int(p["dataset_sum"].split(":")[2]) == os.path.getsize(tmp + "/d.jsonl")
PY
ok $? "runs store canonical paths and content checksums, whatever the working folder"

fails=0
for i in $(seq 1 25); do
  rm -f "$tmp/n.db"
  for j in 1 2 3; do "$nl" runs --db "$tmp/n.db" --repair > /dev/null 2> "$tmp/o$j.txt" & done
  wait
  cat "$tmp"/o?.txt | grep -q "already exists\|cannot" && fails=$((fails + 1))
done
[ $fails = 0 ] && [ "$(sqlite3 "$tmp/n.db" "SELECT value FROM meta WHERE key = 'schema_version'")" = 3 ]
ok $? "three processes creating one new database: no failure in 25 rounds ($fails)"

"$nl" runs > /dev/null 2>&1; [ $? = 2 ]
ok $? "runs without --db is a usage error (exit 2)"
