#!/usr/bin/env bash
# neurons_cli.sh — `neuronlab neurons` and `report --neurons` end to end on the zoo SiLU model
# (notebooks-data/models/silu) with a few labelled text documents plus one full of HTML
# specials: the contexts in SQLite equal a brute-force argsort of the full dump of the same
# data (record and record --stats) for a sample of neurons, with token ids and decoded texts
# from the dump's /vocab; the statistics and frequencies equal numpy's over the dump; ability
# scores are copied from the matching ability run (and absent without one); bad input exits
# 1 (a dump given, another dataset, --scores naming no ability run, --top above K) or 2 (usage); the HTML pages
# escape < & " ' in context texts, and every link of index.html and the neuron pages
# resolves to a file (and its #anchor to an id in it). Prints PASS/FAIL/SKIP lines.
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3
m=notebooks-data/models/silu
tmp=$(mktemp -d /tmp/nl_neurons.XXXXXX)
trap '[ -n "${NL_KEEP:-}" ] || rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; [ -s "$tmp/why" ] && sed 's/^/    /' "$tmp/why" | head -20; }

if ! $py -c 'import h5py, numpy' 2>/dev/null; then echo "SKIP neurons checks: python3-h5py is not installed"; exit 0; fi
if [ ! -f $m/model.safetensors ]; then echo "SKIP neurons checks: the zoo model $m is not here"; exit 0; fi

# 2 documents per ability from the eval set (cut to 700 characters), plus one full of HTML specials
$py - > "$tmp/d.jsonl" <<'PY'
import json
n = {}
for line in open("notebooks-data/eval/all.jsonl", encoding="utf-8"):
    d = json.loads(line)
    if n.get(d["label"], 0) >= 2: continue
    n[d["label"]] = n.get(d["label"], 0) + 1
    for k in ("text", "prompt", "response"):
        if k in d: d[k] = d[k][:700]
    print(json.dumps(d))
print(json.dumps({"text": "if (a < b && c > \"d\") { s = '<b>bold</b>'; } <script>alert(\"x&y\")</script> & &amp; it's done", "label": "code"}))
PY
if [ "$(grep -c . "$tmp/d.jsonl")" -lt 8 ]; then echo "FAIL neurons dataset: too few documents"; exit 0; fi

# 1. the dump, the summary, an ability run, the neurons run
if "$nl" record $m "$tmp/d.jsonl" -o "$tmp/a.h5" --pool --threads 1 --quiet > /dev/null 2> "$tmp/why" &&
   "$nl" record $m "$tmp/d.jsonl" -o "$tmp/s.h5" --stats --top-k 12 --threads 1 --quiet > /dev/null 2> "$tmp/why" &&
   "$nl" ability "$tmp/s.h5" --db "$tmp/r.db" --threads 1 > /dev/null 2> "$tmp/why" &&
   "$nl" neurons "$tmp/s.h5" --db "$tmp/r.db" --before 6 --after 3 --quiet > "$tmp/out" 2> "$tmp/why"; then
  pass "neurons run on the zoo model"
else
  fail "neurons run on the zoo model"; exit 0
fi

# 2. contexts = brute-force argsort of the dump; texts from /vocab; stats and frequencies = numpy
$py - "$tmp/a.h5" "$tmp/r.db" > "$tmp/why" 2>&1 <<'PY'
import h5py, numpy as np, sqlite3, sys
a = h5py.File(sys.argv[1], "r")
db = sqlite3.connect(sys.argv[2])
run = db.execute("SELECT id FROM runs WHERE kind = 'neurons' AND status = 'complete'").fetchone()[0]
top, before, after = db.execute("SELECT top, before, after FROM neuron_run WHERE run_id = ?", (run,)).fetchone()
assert (top, before, after) == (12, 6, 3), (top, before, after)
off = a["doc_offsets"][:]
tok = a["tokens"][:]
vocab = [v.decode() if isinstance(v, bytes) else v for v in a["vocab"][:]]
labels = [v.decode() if isinstance(v, bytes) else v for v in a["doc_labels"][:]]
N = off[-1]
rng = np.random.default_rng(3)
picks = [(0, 0), (5, 687)] + [(int(l), int(i)) for l, i in zip(rng.integers(0, 6, 10), rng.integers(0, 688, 10))]
texts_checked = 0
tau = [0, 0.01, 0.1, 0.2]
for l in range(6):
    A = a[f"layers/{l}/ffn_act"][:]
    mx = np.abs(A).max(axis=1)
    r = np.where(mx[:, None] > 0, np.abs(A) / np.where(mx > 0, mx, 1)[:, None], 0).astype(np.float32)
    rows = db.execute("SELECT neuron, tokens, mean, mean_abs, max_abs FROM neuron_stat WHERE run_id = ? AND layer = ? ORDER BY neuron",
                      (run, l)).fetchall()
    assert len(rows) == 688, len(rows)
    X = A.astype(np.float64)
    for i, n, mean, mean_abs, max_abs in rows:
        assert n == N
        assert abs(mean - X[:, i].mean()) <= 1e-6 * (abs(X[:, i]).mean() + 1e-30), (l, i, mean, X[:, i].mean())
        assert abs(mean_abs - np.abs(X[:, i]).mean()) <= 1e-6 * np.abs(X[:, i]).mean(), (l, i)
        assert max_abs == np.abs(A[:, i]).max(), (l, i)
    for i in range(0, 688, 37):
        for t in tau:
            f = db.execute("SELECT freq FROM neuron_frequency WHERE run_id = ? AND layer = ? AND neuron = ? AND threshold = ?",
                           (run, l, i, t)).fetchone()[0]
            want = (r[:, i] > np.float32(t)).sum() / N
            assert abs(f - want) < 1e-12, (l, i, t, f, want)
    for (pl, i) in picks:
        if pl != l: continue
        v = np.abs(A[:, i])
        order = np.lexsort((np.arange(N), -v))[:top]  # larger |a| first, then lower token index
        got = db.execute("SELECT rank, doc, pos, value, token_id, label, before, token, after FROM neuron_context"
                         " WHERE run_id = ? AND layer = ? AND neuron = ? ORDER BY rank", (run, l, i)).fetchall()
        assert len(got) == top, (l, i, len(got))
        for k, t in enumerate(order):
            d = int(np.searchsorted(off, t, side="right") - 1)
            p = int(t - off[d])
            rank, gd, gp, val, tid, lab, bt, tt, at = got[k]
            assert (rank, gd, gp) == (k + 1, d, p), (l, i, k, (gd, gp), (d, p))
            assert np.float32(val) == A[t, i], (l, i, k, val, A[t, i])
            assert tid == tok[t] and lab == labels[d], (l, i, k)
            # texts: every token's /vocab piece (special tokens their own text); compared where
            # no piece holds a partial character (U+FFFD) and the token does not start its document
            s0, e0 = max(off[d], t - before), min(off[d + 1], t + 1 + after)
            pieces = [vocab[x] for x in tok[s0:e0]]
            if p > 0 and s0 > off[d] and not any("\ufffd" in x for x in pieces):
                assert bt == "".join(pieces[:t - s0]), (l, i, k, bt, pieces)
                assert tt == pieces[t - s0], (l, i, k, tt)
                assert at == "".join(pieces[t - s0 + 1:]), (l, i, k, at)
                texts_checked += 1
assert texts_checked >= 20, texts_checked
print("ok", texts_checked)
PY
if [ $? -eq 0 ]; then pass "neurons contexts equal an argsort of the dump; stats, frequencies and texts match"
else fail "neurons contexts equal an argsort of the dump; stats, frequencies and texts match"; fi

# 3. ability scores: copied from the matching run; none without one; a foreign --scores run refused
$py - "$tmp/r.db" > "$tmp/why" 2>&1 <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
run, ab = db.execute("SELECT run_id, ability_run FROM neuron_run").fetchone()
assert ab == db.execute("SELECT id FROM runs WHERE kind = 'ability'").fetchone()[0], ab
got = db.execute("SELECT layer, neuron, ability, score FROM neuron_ability WHERE run_id = ? ORDER BY 1, 2, 3", (run,)).fetchall()
want = db.execute("SELECT layer, neuron, ability, score FROM ability_score WHERE run_id = ? ORDER BY 1, 2, 3", (ab,)).fetchall()
assert got == want and len(got) == 6 * 688 * 7, (len(got), len(want))
tops = db.execute("SELECT count(*) FROM neuron_ability WHERE run_id = ? AND in_top = 1", (run,)).fetchone()[0]
assert tops == db.execute("SELECT count(*) FROM ability_top WHERE run_id = ?", (ab,)).fetchone()[0], tops
PY
ok=$?
"$nl" neurons "$tmp/s.h5" --db "$tmp/r2.db" --layers 1,3 --top 4 --quiet > /dev/null 2>> "$tmp/why" &&
  [ "$(sqlite3 "$tmp/r2.db" "SELECT ability_run IS NULL, layers, top FROM neuron_run")" = "1|2|4" ] &&
  [ "$(sqlite3 "$tmp/r2.db" "SELECT count(*), count(DISTINCT layer), max(rank) FROM neuron_context")" = "5504|2|4" ] || ok=1
"$nl" neurons "$tmp/s.h5" --db "$tmp/r2.db" --scores 1 > /dev/null 2> "$tmp/e1"
[ $? -eq 1 ] && grep -q "no complete ability run 1" "$tmp/e1" || { ok=1; cat "$tmp/e1" >> "$tmp/why"; }
if [ $ok -eq 0 ]; then pass "neurons ability scores from the matching run only"; else fail "neurons ability scores from the matching run only"; fi

# 4. bad input
ok=0
"$nl" neurons "$tmp/a.h5" --db "$tmp/r3.db" > /dev/null 2> "$tmp/e1"; [ $? -eq 1 ] && grep -q "activation file" "$tmp/e1" || ok=1
head -n 3 "$tmp/d.jsonl" > "$tmp/other.jsonl"
"$nl" neurons "$tmp/s.h5" --db "$tmp/r3.db" --data "$tmp/other.jsonl" > /dev/null 2> "$tmp/e2"
[ $? -eq 1 ] && grep -q "not the dataset the summary" "$tmp/e2" || ok=1
"$nl" neurons "$tmp/s.h5" --db "$tmp/r3.db" --top 13 > /dev/null 2> "$tmp/e3"; [ $? -eq 1 ] && grep -q "top 12" "$tmp/e3" || ok=1
"$nl" neurons "$tmp/s.h5" > /dev/null 2>&1; [ $? -eq 2 ] || ok=1
"$nl" neurons "$tmp/s.h5" --db "$tmp/r3.db" --before -1 > /dev/null 2>&1; [ $? -eq 2 ] || ok=1
cat "$tmp/e1" "$tmp/e2" "$tmp/e3" > "$tmp/why"
if [ $ok -eq 0 ]; then pass "neurons bad input"; else fail "neurons bad input"; fi

# 5. report --neurons: escaping and links
if "$nl" report --db "$tmp/r.db" -o "$tmp/rep" --neurons > /dev/null 2> "$tmp/why"; then
  $py - "$tmp/rep" "$tmp/r.db" > "$tmp/why" 2>&1 <<'PY'
import glob, html.parser, os, re, sqlite3, sys
rep, db = sys.argv[1], sqlite3.connect(sys.argv[2])
pages = [os.path.join(rep, "index.html")] + sorted(glob.glob(os.path.join(rep, "neurons", "*.html")))
assert len(pages) == 1 + 1 + 6, pages

class P(html.parser.HTMLParser):
    def __init__(s):
        super().__init__(); s.links, s.ids, s.tags = [], set(), []
    def handle_starttag(s, t, attrs):
        a = dict(attrs)
        if t == "script": raise AssertionError(f"a <script> element in {s.path}")
        if "href" in a: s.links.append(a["href"])
        if "src" in a: s.links.append(a["src"])
        if "id" in a: s.ids.add(a["id"])
parsed = {}
for p in pages:
    x = P(); x.path = p
    x.feed(open(p, encoding="utf-8").read())
    parsed[os.path.abspath(p)] = x
assert any("neurons/index.html" in h for h in parsed[os.path.abspath(pages[0])].links), "index.html does not link the neuron pages"
n = 0
for p, x in parsed.items():
    for h in x.links:
        if re.match(r"^[a-z]+:", h): continue
        f, _, frag = h.partition("#")
        target = os.path.abspath(os.path.join(os.path.dirname(p), f)) if f else p
        assert os.path.isfile(target), f"{p}: link {h} → {target} does not exist"
        if frag:
            if target not in parsed:
                y = P(); y.path = target; y.feed(open(target, encoding="utf-8").read()); parsed[target] = y
            assert frag in parsed[target].ids, f"{p}: link {h}: no id {frag} in {target}"
        n += 1
assert n > 6 * 688, n
# escaping: contexts with < & " ' appear escaped in their layer page
def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#39;")
rows = db.execute("SELECT layer, neuron, before, token, after FROM neuron_context WHERE run_id = (SELECT max(run_id) FROM neuron_run)"
                  " AND (before || token || after) GLOB '*[<&\"'']*' AND (before || token || after) NOT GLOB '*[\t\n\r]*'").fetchall()
specials = {c for r in rows for c in "<&\"'" if c in r[2] + r[3] + r[4]}
assert specials == set("<&\"'"), specials
seen = set()
for l, i, b, t, a in rows:
    key = (l, [c for c in "<&\"'" if c in b + t + a][0])
    if key in seen: continue
    seen.add(key)
    page = open(os.path.join(rep, "neurons", f"layer-{l}.html"), encoding="utf-8").read()
    sec = page[page.index(f'<section id="n{i}">'):]
    sec = sec[:sec.index("</section>")]
    m = re.search(r'<td class="b">' + re.escape(esc(b)) + r'</td><td[^>]*><mark[^>]*>' + re.escape(esc(t)) + r'</mark></td><td class="a">'
                  + re.escape(esc(a)) + "</td>", sec)
    assert m, f"context of layer {l} neuron {i} not found escaped: {b!r} {t!r} {a!r}"
assert len(seen) >= 4, seen
print("ok", n, "links,", len(seen), "escaped contexts checked")
PY
  if [ $? -eq 0 ]; then pass "report --neurons escapes contexts and every link resolves"; else fail "report --neurons escapes contexts and every link resolves"; fi
else
  fail "report --neurons escapes contexts and every link resolves"
fi
