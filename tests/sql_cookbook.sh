#!/usr/bin/env bash
# sql_cookbook.sh — every query of notebooks-data/sql/ runs without error and returns rows
# against a results database built the way `make demo` builds one (record → sparsity →
# perturb → ability → overlap → prune, here on the fixture model with labelled documents), through sqlite3 and pandas-
# style Python sqlite3. Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
tmp=$(mktemp -d /tmp/nl_sql.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
$py - "$tmp/d.jsonl" <<'PY'
import json, random, sys
random.seed(9)
with open(sys.argv[1], "w") as f:
    for i in range(12):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(30)], "label": ["code", "math"][i % 2]}) + "\n")
PY
if ! { "$nl" record tests/fixtures/hf/llama "$tmp/d.jsonl" -o "$tmp/a.h5" --pool --db "$tmp/r.db" &&
       "$nl" sparsity "$tmp/a.h5" --db "$tmp/r.db" && "$nl" perturb tests/fixtures/hf/llama "$tmp/d.jsonl" --ratios 0,0.5 --db "$tmp/r.db" &&
       "$nl" ability "$tmp/a.h5" --db "$tmp/r.db" && "$nl" overlap --db "$tmp/r.db" --scores latest &&
       "$nl" prune tests/fixtures/hf/llama "$tmp/d.jsonl" --db "$tmp/r.db" --scores latest; } > "$tmp/log" 2>&1; then
  echo "FAIL building the database for the cookbook:"; sed 's/^/    /' "$tmp/log" | tail -5; exit 0
fi
for f in notebooks-data/sql/*.sql; do
  $py - "$tmp/r.db" "$f" > "$tmp/out" 2>&1 <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
cur = con.execute(open(sys.argv[2]).read())
cols = [d[0] for d in cur.description]
rows = cur.fetchall()
assert rows, "no rows"
assert all(any(v is not None for v in r) for r in rows), "empty rows"
print(f"{len(rows)} rows, columns {', '.join(cols)}")
PY
  if [ $? -eq 0 ]; then echo "PASS sql cookbook $(basename "$f"): $(cat "$tmp/out")"; else echo "FAIL sql cookbook $(basename "$f"):"; sed 's/^/    /' "$tmp/out" | tail -3; fi
done
exit 0
