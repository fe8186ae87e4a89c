#!/usr/bin/env bash
# report.sh — `neuronlab report` end to end on the fixture model: record → sparsity → perturb →
# report; every figure's PNG, PDF, gnuplot script and CSV exist (each gnuplot call exited 0,
# or report fails), the PNGs are real images, index.html links them; a figure whose analysis
# has no run is listed as missing; bad input gives one-line errors.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=$PWD/${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
tmp=$(mktemp -d /tmp/nl_report.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fx=tests/fixtures/hf/llama
if ! command -v gnuplot > /dev/null; then echo "SKIP report: gnuplot is not installed (apt-get install gnuplot-nox)"; exit 0; fi
ok() { if [ "$1" -eq 0 ]; then echo "PASS $2"; else echo "FAIL $2"; sed 's/^/    /' "$tmp/why" | head -8; fi; }

$py - "$tmp/d.jsonl" <<'PY'
import json, random, sys
random.seed(5)
with open(sys.argv[1], "w") as f:
    for i in range(18):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(40)], "label": ["code", "math", "prose"][i % 3]}) + "\n")
PY
{ "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/a.h5" && "$nl" sparsity "$tmp/a.h5" --db "$tmp/r.db" > /dev/null; } > "$tmp/why" 2>&1
ok $? "record and sparsity for the report"
"$nl" report --db "$tmp/r.db" -o "$tmp/half" > "$tmp/why" 2>&1
rc=$?
grep -q 'Not drawn: the database has no complete run of this analysis' "$tmp/half/index.html" 2>> "$tmp/why" && [ -f "$tmp/half/sparsity_cdf_value.png" ] && [ ! -f "$tmp/half/perturbation.png" ]
ok $(( rc | $? )) "report without a perturb run draws the sparsity figures and lists the perturbation figure as missing"
"$nl" perturb $fx "$tmp/d.jsonl" --db "$tmp/r.db" --ratios 0,0.3,0.6,0.9 > /dev/null 2> "$tmp/why"
ok $? "perturb for the report"
"$nl" report --db "$tmp/r.db" -o "$tmp/rep" > "$tmp/out" 2> "$tmp/why"
rc=$?
cat "$tmp/out" >> "$tmp/why"
ok $rc "report exits 0 (every gnuplot call exited 0)"
$py - "$tmp/rep" >> "$tmp/why" 2>&1 <<'PY'
import glob, os, re, sys
d = sys.argv[1]
html = open(os.path.join(d, "index.html"), encoding="utf-8").read()
figs = re.findall(r'<figure id="([^"]+)">', html)
assert len(figs) >= 5, figs
assert "Not drawn" not in html, "a figure is missing"
for name in figs:
    for ext in ("png", "pdf", "gp"):
        p = os.path.join(d, f"{name}.{ext}")
        assert os.path.getsize(p) > 0, p
        assert f'{name}.{ext}' in html, f"index.html does not link {name}.{ext}"
    png = open(os.path.join(d, name + ".png"), "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n", name
    w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert w >= 400 and h >= 300, (name, w, h)
    assert open(os.path.join(d, name + ".pdf"), "rb").read(5) == b"%PDF-", name
    csvs = glob.glob(os.path.join(d, name + "-*.csv"))
    assert csvs, f"no CSV for {name}"
    for c in csvs:
        rows = open(c).read().splitlines()
        assert len(rows) >= 2 and len(rows[0].split(",")) >= 2, c
        assert all(len(r.split(",")) == len(rows[0].split(",")) for r in rows), f"{c}: header and rows differ in columns"
        assert os.path.basename(c) in html, c
print(f"{len(figs)} figures with PNG, PDF, gnuplot script and CSV")
PY
ok $? "every figure has its PNG, PDF, gnuplot script and CSV, linked from index.html"
(cd "$tmp/rep" && gnuplot perturbation.gp) > "$tmp/why" 2>&1
ok $? "a figure's gnuplot script redraws it in place"

# bad input: one line naming the file, exit 1
expect() {
  local name=$1 pat=$2; shift 2
  "$nl" "$@" > /dev/null 2> "$tmp/err"
  local rc=$? lines; lines=$(wc -l < "$tmp/err")
  if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -qE -- "$pat" "$tmp/err"; then echo "PASS $name"; else echo "FAIL $name: exit $rc, $lines lines:"; sed 's/^/    /' "$tmp/err" | head -5; fi
}
expect "report on a missing database" "cannot open '$tmp/none.db'" report --db "$tmp/none.db" -o "$tmp/x"
printf 'not a database, just text that is long enough to look like a header......................................' > "$tmp/junk.db"
expect "report on a file that is not a database" "'$tmp/junk.db' is not an SQLite database" report --db "$tmp/junk.db" -o "$tmp/x"
$py -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('create table t(x)')" "$tmp/other.db"
expect "report on another program's database" "'$tmp/other.db' is not a neuronlab results database" report --db "$tmp/other.db" -o "$tmp/x"
expect "report without gnuplot" "cannot run '/nonexistent/gnuplot'" report --db "$tmp/r.db" -o "$tmp/y" --gnuplot /nonexistent/gnuplot
expect "report into an unwritable directory" "cannot create '/nonexistent/dir/rep'" report --db "$tmp/r.db" -o /nonexistent/dir/rep
exit 0
