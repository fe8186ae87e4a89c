#!/usr/bin/env python3
"""report_degenerate.py — `neuronlab report` on odd data (run by tests/report_degenerate.sh).

Usage: report_degenerate.py NEURONLAB BASE.db TMPDIR

BASE.db was made by the real commands (sparsity, perturb, ability, prune, overlap), so its
tables have the analyses' real schemas. For each case this copies it, replaces the rows of
every run with synthetic ones (named columns, so a renamed column fails here) and runs the
report; then checks: exit 0 when every figure with data was drawn, index.html exists and
accounts for every figure (drawn with a valid PNG, or "Not drawn" with the reason), CSV rows
have as many fields as their header, no line break or 'inf' leaks into a CSV, heatmaps keep
every row (a gnuplot wrapper records the drawn y range), one title line per panel.
Cases: all zeros, a constant, negative constant, integers, one label, one layer, NaN/±Inf/text
values, every value non-finite, hostile labels ('#x', a line break, enhanced-text markup,
quotes and commas, 300 characters, unicode, invalid UTF-8). Then a figure whose gnuplot fails
(a wrapper): exit 1, one stderr line naming it and the cause, its log at the path given for a
relative -o, index.html lists it; and Ctrl-C during gnuplot: exit 130, index.html written.
Prints PASS/FAIL lines.
"""
import csv
import glob
import io
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

nl, base, tmp = sys.argv[1], sys.argv[2], sys.argv[3]
FIGS = ["sparsity_cdf_value", "sparsity_cdf_norm", "activation_frequency", "cett_sparsity", "perturbation",
        "ability_scores", "ability_depth", "prune_matrix", "overlap"]
failures = 0


def result(ok, name, why=""):
    global failures
    if ok:
        print(f"PASS {name}")
    else:
        failures += 1
        print(f"FAIL {name}")
        for line in str(why).splitlines()[:12]:
            print(f"    {line}")


# gnuplot wrapper: draws as gnuplot does, then records the y range of the last plot of a
# heatmap (its rows: 0 .. rows-1) in NAME.check, so a row gnuplot skipped would show
wrapper = os.path.join(tmp, "gnuplot-check")
with open(wrapper, "w") as f:
    f.write("""#!/bin/sh
gp=$1; name=${gp%.gp}
case "$gp" in
  prune_matrix.gp|overlap.gp)
    { cat "$gp"; printf '\\nset print "%s.check"\\nprint GPVAL_DATA_Y_MIN, GPVAL_DATA_Y_MAX\\n' "$name"; } > "$name.chk.gp"
    gnuplot "$name.chk.gp"; rc=$?; rm -f "$name.chk.gp"; exit $rc;;
esac
exec gnuplot "$gp"
""")
os.chmod(wrapper, 0o755)

con = sqlite3.connect(base)
RUNS = {k: i for i, k in con.execute("SELECT id, kind FROM runs WHERE status = 'complete'")}
con.close()
for k in ("sparsity", "perturb", "ability", "prune", "overlap"):
    assert k in RUNS, f"base database has no complete {k} run: {RUNS}"

TABLES = {"sparsity": ["sparsity_cdf", "neuron_freq", "sparsity_cett"], "perturb": ["perturb"],
          "ability": ["ability_run", "ability_label", "ability_layer", "ability_depth"],
          "prune": ["prune_effect", "prune_control"], "overlap": ["overlap"]}


def ins(con, table, row):
    cols = ", ".join(row)
    marks = ", ".join("CAST(? AS TEXT)" if isinstance(x, bytes) else "?" for x in row.values())  # bytes: text that is not UTF-8
    con.execute(f"INSERT INTO {table}({cols}) VALUES ({marks})", list(row.values()))


def fill(path, labels, layers, value):
    """Replaces the rows of every run with synthetic ones; value(i) gives the i-th value
    (float, None = NULL, or text), notnull(v) the value for a NOT NULL column."""
    con = sqlite3.connect(path)
    for kind, tabs in TABLES.items():
        for t in tabs:
            con.execute(f"DELETE FROM {t} WHERE run_id = ?", (RUNS[kind],))
    n = [0]

    def v(notnull=False):
        n[0] += 1
        x = value(n[0])
        if notnull and (x is None or (isinstance(x, float) and math.isnan(x))):
            x = "NaN"  # SQLite stores a NaN as NULL; text is how a NOT NULL column holds one
        return x
    S, P, A, R, O = (RUNS[k] for k in ("sparsity", "perturb", "ability", "prune", "overlap"))
    for ind in ("value", "norm"):
        for layer in layers + [-1]:
            for j, x in enumerate((1e-4, 1e-3, 1e-2, 0.1, 1.0)):
                ins(con, "sparsity_cdf", dict(run_id=S, layer=layer, label="", indicator=ind, x=x, cdf=v(True)))
    for layer in layers:
        for neuron in range(8):
            ins(con, "neuron_freq", dict(run_id=S, layer=layer, neuron=neuron, label="", threshold=0.1, freq=v(True)))
        for target in (0.1, 0.2):
            ins(con, "sparsity_cett", dict(run_id=S, layer=layer, label="", target=target, epsilon=0.01, sparsity=v(True),
                                           cett=target, tokens=100))
    for lab in [""] + labels:
        for metric in ("value", "norm", "random"):
            for ratio in (0.0, 0.5, 0.9):
                ins(con, "perturb", dict(run_id=P, metric=metric, ratio=ratio, label=lab, tokens=100, nll=v(), ppl=v(),
                                         masked=0))
    ins(con, "ability_run", dict(run_id=A, method="ap", symmetric=0, top=0.05, scope="layer", resident_run=None, seed=0,
                                 docs=12, layers=len(layers), d_ff=64))
    for lab in labels:
        ins(con, "ability_label", dict(run_id=A, ability=lab, docs=12, positives=4, baseline=1 / 3))
        for layer in layers + [-1]:
            ins(con, "ability_layer", dict(run_id=A, ability=lab, layer=layer, best=v(), top_permille=v(), mean=v(),
                                           baseline=v(), shuffled_best=v(), shuffled_top_permille=v(), shuffled_mean=v()))
        for layer in layers:
            ins(con, "ability_depth", dict(run_id=A, ability=lab, layer=layer, neurons=3, share=v(True)))
    for p in [""] + labels:
        for lab in [""] + labels:
            if p == "":
                ins(con, "prune_effect", dict(run_id=R, pruned="", control="none", seed=-1, label=lab, neurons=0, tokens=50,
                                              nll=1.0, ppl=2.7, rel_change=0.0))
                continue
            ins(con, "prune_effect", dict(run_id=R, pruned=p, control="ability", seed=-1, label=lab, neurons=3, tokens=50,
                                          nll=1.0, ppl=2.7, rel_change=v()))
            ins(con, "prune_effect", dict(run_id=R, pruned=p, control="random", seed=0, label=lab, neurons=3, tokens=50,
                                          nll=1.0, ppl=2.7, rel_change=v()))
            ins(con, "prune_control", dict(run_id=R, pruned=p, label=lab, seeds=1, mean=v(), sd=0.0, min=0.0, max=0.0))
    for a in labels:
        for b in labels:
            for layer in [-1] + layers:
                same = a == b
                ins(con, "overlap", dict(run_id=O, a=a, b=b, layer=layer, size_a=4, size_b=4, inter=4 if same else 0,
                                         frac=1.0 if same else v(), jaccard=1.0 if same else v(), baseline_frac=0.05,
                                         baseline_jaccard=0.025))
    con.commit()
    con.close()


def report(db, out, gnuplot=wrapper, cwd=None):
    return subprocess.run([nl, "report", "--db", db, "-o", out, "--gnuplot", gnuplot], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def sections(out):
    html = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    return html, {m.group(1): m.group(2) for m in re.finditer(r'<figure id="([^"]+)">(.*?)</figure>', html, re.S)}


def is_png(p):
    b = open(p, "rb").read(24) if os.path.exists(p) else b""
    return b[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(b[16:20], "big") >= 300


def check_case(name, labels, layers, value, nodata=(), note=None):
    db = os.path.join(tmp, f"{name}.db")
    out = os.path.join(tmp, f"rep-{name}")
    shutil.copy(base, db)
    fill(db, labels, layers, value)
    r = report(db, out)
    why = []
    if r.returncode != 0:
        why.append(f"exit {r.returncode}: {r.stderr.strip()} {r.stdout.strip()}")
    if not os.path.exists(os.path.join(out, "index.html")):
        result(False, f"report on {name} data", "\n".join(why + ["no index.html"]))
        return
    html, sec = sections(out)
    for fig in FIGS:
        s = sec.get(fig)
        if s is None:
            why.append(f"{fig}: not in index.html")
        elif fig in nodata:
            if "Not drawn" not in s or os.path.exists(os.path.join(out, fig + ".png")):
                why.append(f"{fig}: expected to be listed as not drawn (without data)")
        elif "<img" not in s or not is_png(os.path.join(out, fig + ".png")):
            why.append(f"{fig}: not drawn: {re.sub('<[^>]+>', '', s)[:300]}")
    if note and note not in html:
        why.append(f"index.html does not say {note!r}")
    for c in sorted(glob.glob(os.path.join(out, "*.csv"))):
        text = open(c, encoding="utf-8", errors="strict").read()
        rows = list(csv.reader(io.StringIO(text)))
        lines = text.split("\n")
        if len(rows) != len(lines) - 1 or any(len(r) != len(rows[0]) for r in rows):
            why.append(f"{os.path.basename(c)}: rows and header differ in fields, or a field spans lines")
        if re.search(r"(?i)(^|,)-?inf(,|$)", text, re.M):
            why.append(f"{os.path.basename(c)}: an infinite value reached the CSV")
    for fig in FIGS:
        t = os.path.join(out, fig + ".titles")
        if os.path.exists(os.path.join(out, fig + ".png")):
            ncsv = len(re.findall(r"\S+", re.search(r'^csvs = "(.*)"$', open(os.path.join(out, fig + ".gp"),
                                                                                encoding="utf-8").read(), re.M).group(1)))
            nt = len(open(t, encoding="utf-8").read().split("\n")) - 1
            if nt != ncsv:
                why.append(f"{fig}: {nt} title lines for {ncsv} panels")
    # heatmaps: every row of the CSV was drawn (the wrapper recorded the y range of the last panel)
    for fig in ("prune_matrix", "overlap"):
        chk = os.path.join(out, fig + ".check")
        if not os.path.exists(os.path.join(out, fig + ".png")):
            continue
        last = max(glob.glob(os.path.join(out, fig + "-*.csv")),
                   key=lambda p: int(re.search(r"-(\d+)-", os.path.basename(p)).group(1)))
        nrows = len(open(last, encoding="utf-8").read().splitlines()) - 1
        got = open(chk).read().split() if os.path.exists(chk) else []
        # the boxes of the last row reach nrows - 0.5 (nrows - 1 when that row has no value): a row
        # gnuplot read as a comment would lower it by one
        if len(got) != 2 or not nrows - 1 <= float(got[1]) <= nrows - 0.5:
            why.append(f"{fig}: gnuplot drew rows {got} of {nrows}")
    result(not why, f"report on {name} data draws every figure with data and lists the rest", "\n".join(why))
    return out


L3 = ["code", "math", "prose"]
# perplexity 0 at ratio 0: a change relative to 0 is not a number, the perturbation figure has nothing to draw
check_case("all-zero", L3, [0, 1, 2], lambda i: 0.0, nodata=("perturbation",), note="not finite (NaN, ±Inf or text)")
check_case("constant", L3, [0, 1, 2], lambda i: 0.7)
# a negative activation frequency falls outside the histogram's x range [0, 1]: nothing to draw there
check_case("negative-constant", L3, [0, 1, 2], lambda i: -0.3, nodata=("activation_frequency",), note="3 outside the x range")
# period 4, not 3: the perturb rows take two values each, so with period 3 every ratio-0 perplexity would be 0 (no baseline)
check_case("integer", L3, [0, 1, 2], lambda i: i % 4)
check_case("one-label", ["solo"], [0, 1, 2], lambda i: 0.1 + 0.01 * (i % 11), nodata=("overlap",))
check_case("one-layer", L3, [0], lambda i: 0.1 + 0.01 * (i % 11))
# tiny values (near-chance overlaps): a nonzero cell must not read "0.00" beside exact zeros
out = check_case("tiny", L3, [0, 1, 2], lambda i: [0.0, 0.0049, 0.0002][i % 3], nodata=("perturbation",),
                 note="not finite (NaN, ±Inf or text)")
if out:
    texts = {ln.split(",", 3)[2]: ln.split(",", 3)[3] for f in glob.glob(os.path.join(out, "overlap-*.cells"))
             for ln in open(f, encoding="utf-8").read().splitlines() if ln.split(",", 3)[2] != "NaN"}
    want = {"0": "0.00", "0.0049": "0.0049", "0.0002": "0.0002"}
    result(all(texts.get(v) == t for v, t in want.items()),
           "report: a tiny nonzero heatmap cell keeps two significant digits (0.0049), exact zeros read 0.00",
           f"cell texts by value: {texts}")
cyc = [0.25, float("inf"), None, -float("inf"), 0.5, "NaN", 0.75, "abc", 1.0]
check_case("nan-inf", L3, [0, 1, 2], lambda i: cyc[i % len(cyc)], note="not a finite number")
# the histogram of activation frequencies counts neurons per bin: finite even when every frequency is not
check_case("all-non-finite", L3, [0, 1], lambda i: [float("inf"), -float("inf")][i % 2],
           nodata=tuple(f for f in FIGS if f != "activation_frequency"))
# unicode within DejaVu (the fonts every machine here has): CJK or emoji need fonts that cover them
hostile = ["#x", "a\nb", "x_y^z@{w}", 'q"uote,comma', "L" * 299 + "Z", "ünïcödé ∑ Ωж", "tab\there & <b>",
           b"bad \xff utf8"]
out = check_case("hostile-label", hostile, [0, 1], lambda i: math.sin(i) * 0.5)
if out:
    why = []
    rows = [r[0] for r in csv.reader(open(glob.glob(os.path.join(out, "prune_matrix-1-*.csv"))[0], encoding="utf-8"))][1:]
    want = ["#x", "a b", "x_y^z@{w}", "q'uote;comma", "L" * 59 + "…", "ünïcödé ∑ Ωж", "tab here & <b>", "bad \ufffd utf8"]
    if sorted(rows) != sorted(want):
        why.append(f"prune matrix rows {rows!r}, want {want!r}")
    t = open(os.path.join(out, "ability_scores.titles"), encoding="utf-8").read().split("\n")[:-1]
    longt = [x for x in t if x.startswith("L" * 100)]
    if len(t) != len(hostile) or not any(x.startswith("#x (4 of 12") for x in t) or not any(x.startswith("a b (4 of 12") for x in t) \
            or len(longt) != 1 or not longt[0].endswith("…") or len(longt[0]) != 120:
        why.append(f"ability_scores titles {[x[:40] for x in t]!r}")
    html = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    if "<b>" in html:
        why.append("a label reached index.html as markup")
    result(not why, "hostile labels: rows, titles and CSV fields kept, cleaned (line break, quote, comma, bad UTF-8), names cut at 60, titles at 120", "\n".join(why))

# a figure whose gnuplot fails: the rest is drawn, one line on stderr, the log where it says, exit 1
fail = os.path.join(tmp, "gnuplot-fail")
with open(fail, "w") as f:
    f.write("""#!/bin/sh
case "$1" in overlap.gp) echo 'plot foo' >&2; echo '     ^' >&2; echo '"overlap.gp" line 7: induced failure for the test' >&2; exit 1;; esac
exec gnuplot "$1"
""")
os.chmod(fail, 0o755)
db = os.path.join(tmp, "fail.db")
shutil.copy(base, db)
fill(db, L3, [0, 1], lambda i: 0.1 + 0.01 * (i % 11))
for f in glob.glob(os.path.join(tmp, "relrep")):
    shutil.rmtree(f)
r = report("fail.db", "relrep", gnuplot=fail, cwd=tmp)
why = []
err = r.stderr.strip().split("\n")
if r.returncode != 1:
    why.append(f"exit {r.returncode}, want 1")
if len(err) != 1 or not re.fullmatch(r"neuronlab report: figure 'overlap' not drawn: gnuplot failed on 'overlap.gp': "
                                     r"\"overlap.gp\" line 7: induced failure for the test \(see relrep/overlap.log\)", err[0]):
    why.append(f"stderr: {err!r}")
if not os.path.exists(os.path.join(tmp, "relrep", "overlap.log")) or \
        "induced failure" not in open(os.path.join(tmp, "relrep", "overlap.log")).read():
    why.append("relrep/overlap.log is missing or does not hold gnuplot's message")
if os.path.exists(os.path.join(tmp, "relrep", "overlap.png")):
    why.append("a failed figure left overlap.png")
if "1 failed" not in r.stdout:
    why.append(f"stdout: {r.stdout!r}")
if os.path.exists(os.path.join(tmp, "relrep", "index.html")):
    html, sec = sections(os.path.join(tmp, "relrep"))
    head = html.split("<figure", 1)[0]
    if "induced failure for the test" not in head or "overlap" not in head:
        why.append("the failure is not listed at the top of index.html")
    if "Failed:" not in sec.get("overlap", "") or 'href="overlap.log"' not in sec.get("overlap", ""):
        why.append("the overlap section does not give the cause and its log")
    drawn = [f for f in FIGS if "<img" in sec.get(f, "")]
    if len(drawn) != len(FIGS) - 1:
        why.append(f"drawn: {drawn}")
else:
    why.append("no index.html")
result(not why, "a figure whose gnuplot fails is skipped and listed (stderr line, log for a relative -o, index.html), the rest drawn, exit 1",
       "\n".join(why))

# Ctrl-C while gnuplot draws: exit 130, reported as interrupted, index.html lists what was drawn
slow = os.path.join(tmp, "gnuplot-slow")
with open(slow, "w") as f:
    f.write(f"""#!/bin/sh
case "$1" in perturbation.gp) touch '{tmp}/slow-started'; exec sleep 60;; esac
exec gnuplot "$1"
""")
os.chmod(slow, 0o755)
p = subprocess.Popen([nl, "report", "--db", db, "-o", os.path.join(tmp, "intr"), "--gnuplot", slow],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
t0 = time.time()
while not os.path.exists(os.path.join(tmp, "slow-started")) and time.time() - t0 < 120 and p.poll() is None:
    time.sleep(0.1)
p.send_signal(signal.SIGINT)
try:
    so, se = p.communicate(timeout=20)
except subprocess.TimeoutExpired:
    p.kill()
    so, se = p.communicate()
why = []
if p.returncode != 130:
    why.append(f"exit {p.returncode}, want 130; stderr {se!r}")
if "interrupted" not in se or "gnuplot failed" in se:
    why.append(f"stderr: {se!r}")
if time.time() - t0 > 50:
    why.append("gnuplot was not stopped")
idx = os.path.join(tmp, "intr", "index.html")
if os.path.exists(idx):
    html, sec = sections(os.path.join(tmp, "intr"))
    if "<img" not in sec.get("sparsity_cdf_value", "") or "interrupted" not in sec.get("perturbation", "") \
            or "interrupted" not in sec.get("overlap", ""):
        why.append("index.html does not list the figures drawn before Ctrl-C and the rest as interrupted")
    if os.path.exists(os.path.join(tmp, "intr", "perturbation.png")):
        why.append("the interrupted figure left a PNG")
else:
    why.append("no index.html")
result(not why, "Ctrl-C while gnuplot draws: exit 130, reported as interrupted, index.html lists what was drawn", "\n".join(why))
sys.exit(0)
