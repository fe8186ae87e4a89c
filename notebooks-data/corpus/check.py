#!/usr/bin/python3
"""check.py - validate the zoo corpus (build/corpus/) and the committed eval sets
(notebooks-data/eval/). Prints one line per check, "PASS name: detail" or "FAIL name: detail"
("SKIP" for the corpus checks when build/corpus/ has not been built), then a summary line;
exits 1 if any check failed.

    /usr/bin/python3 notebooks-data/corpus/check.py [--root DIR] [--corpus build/corpus]
        [--eval notebooks-data/eval] [--eval-min 150] [--eval-max 250] [--self-test]

--self-test corrupts copies of the outputs (in a temporary directory) one way at a time and
passes only if the check meant to catch each corruption fails.

Checks: files present and valid JSONL in UTF-8, row keys and labels, non-empty strings, no
control characters, the prompt/response convention (response starts with its separating
space), per-ability eval counts and sizes, all.jsonl = the concatenation, no eval document
(whitespace-normalised) in train or val, no English message of a translation eval row and no
headword of a knowledge eval row reused in train/val, no duplicates in train+val, per-ability
train bytes within the cap and val about 1-2% of train, and the manifest's sha256 and counts.
"""
import argparse
import hashlib
import json
import os
import re
import sys

ABILITIES = ["code", "math", "knowledge", "translation", "linguistic", "writing", "ethics"]
LANGS = ["French", "German", "Spanish", "Italian", "Portuguese", "Russian"]
EVAL_DOC_MAX = 1500
EVAL_TOTAL_MAX = 2_000_000
_BAD_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

results = []


def report(ok, name, detail):
    word = {True: "PASS", False: "FAIL", None: "SKIP"}[ok]
    results.append(ok)
    print(f"{word} {name}: {detail}", flush=True)


def norm(s):
    return " ".join(s.split())


def full_text(row):
    return row["text"] if "text" in row else row["prompt"] + row["response"]


def load_jsonl(path, problems):
    """Rows of a JSONL file; every decoding problem is appended to `problems`."""
    rows = []
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(f"{path}: not valid UTF-8 ({e})")
        return rows, data
    for n, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{n}: invalid JSON ({e})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{path}:{n}: not an object")
            continue
        for k, v in row.items():
            if isinstance(v, str):
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    problems.append(f"{path}:{n}: field {k!r} has a lone surrogate")
        row["_where"] = f"{os.path.basename(path)}:{n}"
        rows.append(row)
    if text and not text.endswith("\n"):
        problems.append(f"{path}: last line has no newline")
    return rows, data


def row_problems(row, kind):
    """kind: 'text' (train/val rows) or 'eval'."""
    keys = set(row) - {"_where"}
    where = row["_where"]
    if kind == "text":
        allowed = [{"text", "label"}]
    else:
        allowed = [{"text", "label"}, {"prompt", "response", "label"}]
    if keys not in allowed:
        return [f"{where}: keys {sorted(keys)}"]
    out = []
    if row["label"] not in ABILITIES:
        out.append(f"{where}: label {row['label']!r}")
    for k in keys - {"label"}:
        v = row[k]
        if not isinstance(v, str) or not v.strip():
            out.append(f"{where}: {k} empty or not a string")
        elif _BAD_CTRL.search(v):
            out.append(f"{where}: {k} has a control character")
    return out


def convention_problems(row):
    """The prompt/response convention of each ability's eval rows."""
    where, label = row["_where"], row["label"]
    if "prompt" not in row:
        if label in ("math", "knowledge", "translation"):
            return [f"{where}: {label} eval rows must be prompt/response"]
        return []
    p, r = row["prompt"], row["response"]
    out = []
    if not r[:1] in (" ", "\n") or not r.strip():
        out.append(f"{where}: response must start with its separating space")
    if p[-1:].isspace():
        out.append(f"{where}: prompt ends with whitespace (belongs to the response)")
    if label == "math" and not (p.endswith("\nSolution:") and "\nAnswer: " in r):
        out.append(f"{where}: math row is not 'question\\nSolution:' + ' steps\\nAnswer: ...'")
    if label == "knowledge" and not re.fullmatch(r"[^\n]+ \([a-z][a-z. &]*\):", p):
        out.append(f"{where}: knowledge prompt is not 'term (pos):'")
    if label == "translation":
        m = re.fullmatch(r"(\w+): (.+)\n(\w+):", p, re.S)
        if not m or "English" not in (m.group(1), m.group(3)) or m.group(1) == m.group(3) \
                or not set((m.group(1), m.group(3))) - {"English"} <= set(LANGS):
            out.append(f"{where}: translation prompt is not 'Lang: text\\nLang:'")
    return out


def english_side(row):
    """English text of a translation row (eval row or train text)."""
    if "prompt" in row:
        p, r = row["prompt"], row["response"]
        if p.startswith("English: "):
            return p[len("English: "):p.rfind("\n")]
        return r[1:]
    t = row["text"]
    if t.startswith("English: "):
        ends = [i for i in (t.find(f"\n{lang}: ") for lang in LANGS) if i >= 0]
        return t[len("English: "):min(ends)] if ends else None
    i = t.find("\nEnglish: ")
    return t[i + len("\nEnglish: "):] if i >= 0 else None


def knowledge_term(row):
    t = row["prompt"] if "prompt" in row else row["text"]
    m = re.match(r"([^\n]+?) \(([a-z][a-z. &]*)\):", t)
    return m.group(1).split(",")[0].strip().lower() if m else None


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(here)))
    ap.add_argument("--corpus", default="build/corpus")
    ap.add_argument("--eval", default="notebooks-data/eval")
    ap.add_argument("--eval-min", type=int, default=150)
    ap.add_argument("--eval-max", type=int, default=250)
    ap.add_argument("--self-test", action="store_true",
                    help="corrupt copies of the outputs and check that the checks fail")
    a = ap.parse_args()
    if a.self_test:
        return self_test(a)
    cdir = os.path.join(a.root, a.corpus)
    edir = os.path.join(a.root, a.eval)

    # ---- eval sets (committed) ----
    problems, eval_rows, eval_bytes = [], {}, {}
    missing = [ab for ab in ABILITIES + ["all"] if not os.path.isfile(os.path.join(edir, ab + ".jsonl"))]
    report(not missing, "eval files present", f"{edir}/<ability>.jsonl and all.jsonl"
           + (f"; missing {missing}" if missing else ""))
    if missing:
        return finish()
    for ab in ABILITIES + ["all"]:
        rows, data = load_jsonl(os.path.join(edir, ab + ".jsonl"), problems)
        eval_rows[ab], eval_bytes[ab] = rows, data
    report(not problems, "eval JSONL and UTF-8", "; ".join(problems[:3]) or
           f"{sum(len(eval_rows[ab]) for ab in ABILITIES)} rows parse")
    probs = [p for ab in ABILITIES for r in eval_rows[ab] for p in row_problems(r, "eval")]
    probs += [f"{r['_where']}: label {r['label']!r} in {ab}.jsonl" for ab in ABILITIES
              for r in eval_rows[ab] if r.get("label") != ab]
    report(not probs, "eval rows: keys, labels, non-empty strings", "; ".join(probs[:3]) or "ok")
    if probs:
        return finish()
    probs = [p for ab in ABILITIES for r in eval_rows[ab] for p in convention_problems(r)]
    report(not probs, "eval prompt/response convention", "; ".join(probs[:3]) or "ok")
    counts = {ab: len(eval_rows[ab]) for ab in ABILITIES}
    bad = {ab: n for ab, n in counts.items() if not a.eval_min <= n <= a.eval_max}
    report(not bad, "eval documents per ability",
           f"{counts}" + (f"; outside [{a.eval_min}, {a.eval_max}]: {bad}" if bad else ""))
    big = [r["_where"] for ab in ABILITIES for r in eval_rows[ab]
           if len(full_text(r).encode()) > EVAL_DOC_MAX]
    total = sum(len(eval_bytes[ab]) for ab in ABILITIES + ["all"])
    report(not big and total < EVAL_TOTAL_MAX, "eval document and total size",
           f"{len(big)} documents over {EVAL_DOC_MAX} bytes {big[:3]}; eval files total {total} bytes")
    concat = b"".join(eval_bytes[ab] for ab in ABILITIES)
    report(concat == eval_bytes["all"], "all.jsonl is the concatenation of the ability files",
           f"{len(eval_rows['all'])} rows")
    eval_norm = {}
    for ab in ABILITIES:
        for r in eval_rows[ab]:
            eval_norm.setdefault(norm(full_text(r)), r["_where"])
    n_eval = sum(counts.values())
    report(len(eval_norm) == n_eval, "eval documents distinct",
           f"{n_eval - len(eval_norm)} duplicates")

    # ---- training corpus (build/corpus, not committed) ----
    paths = {k: os.path.join(cdir, k) for k in ("train.jsonl", "val.jsonl", "manifest.json")}
    if not all(os.path.isfile(p) for p in paths.values()):
        report(None, "training corpus", f"{cdir} not built (run notebooks-data/corpus/build.sh)")
        return finish()
    problems = []
    train, tdata = load_jsonl(paths["train.jsonl"], problems)
    val, vdata = load_jsonl(paths["val.jsonl"], problems)
    report(not problems, "train/val JSONL and UTF-8",
           "; ".join(problems[:3]) or f"{len(train)} train and {len(val)} val rows parse")
    probs = [p for r in train + val for p in row_problems(r, "text")]
    report(not probs, "train/val rows: keys, labels, non-empty strings", "; ".join(probs[:3]) or "ok")
    if probs:
        return finish()
    leaks = [(eval_norm[norm(r["text"])], r["_where"]) for r in train + val
             if norm(r["text"]) in eval_norm]
    report(not leaks, "no eval document in train/val (whitespace-normalised)",
           f"{len(leaks)} found {leaks[:3]}")
    eval_en = {norm(english_side(r)).lower(): r["_where"] for r in eval_rows["translation"]}
    leaks = [(eval_en[k], r["_where"]) for r in train + val if r["label"] == "translation"
             for e in [english_side(r)] if e is not None
             for k in [norm(e).lower()] if k in eval_en]
    report(not leaks, "no English message of a translation eval row in train/val",
           f"{len(leaks)} found {leaks[:3]}")
    eval_terms = {knowledge_term(r): r["_where"] for r in eval_rows["knowledge"]}
    leaks = [(eval_terms[t], r["_where"]) for r in train + val if r["label"] == "knowledge"
             for t in [knowledge_term(r)] if t in eval_terms]
    report(not leaks, "no headword of a knowledge eval row in train/val",
           f"{len(leaks)} found {leaks[:3]}")
    seen, dups = {}, []
    for r in train + val:
        k = norm(r["text"])
        if k in seen:
            dups.append((seen[k], r["_where"]))
        else:
            seen[k] = r["_where"]
    report(not dups, "no duplicate documents in train+val", f"{len(dups)} found {dups[:3]}")

    with open(paths["manifest.json"], encoding="utf-8") as f:
        man = json.load(f)
    cap = man.get("cap_bytes_per_ability", 0)
    tb = {ab: 0 for ab in ABILITIES}
    td = {ab: 0 for ab in ABILITIES}
    vb = {ab: 0 for ab in ABILITIES}
    for r in train:
        tb[r["label"]] += len(r["text"].encode())
        td[r["label"]] += 1
    for r in val:
        vb[r["label"]] += len(r["text"].encode())
    empty = [ab for ab in ABILITIES if td[ab] == 0]
    over = [ab for ab in ABILITIES if tb[ab] > cap]
    report(not empty and not over, "train bytes per ability within the cap",
           ", ".join(f"{ab} {tb[ab] / 1e6:.2f} MB/{td[ab]} docs" for ab in ABILITIES)
           + f"; cap {cap / 1e6:.2f} MB" + (f"; empty {empty}" if empty else "")
           + (f"; over cap {over}" if over else ""))
    ratio = {ab: vb[ab] / tb[ab] if tb[ab] else 0 for ab in ABILITIES}
    bad = {ab: round(x, 4) for ab, x in ratio.items() if not 0.005 <= x <= 0.03}
    report(not bad, "val about 1-2% of train per ability",
           ", ".join(f"{ab} {100 * x:.1f}%" for ab, x in ratio.items())
           + (f"; outside 0.5-3%: {bad}" if bad else ""))

    probs = []
    files = man.get("files", {})
    want = {os.path.join(a.corpus, "train.jsonl"): tdata, os.path.join(a.corpus, "val.jsonl"): vdata}
    for ab in ABILITIES + ["all"]:
        want[os.path.join(a.eval, ab + ".jsonl")] = eval_bytes[ab]
    for rel, data in want.items():
        e = files.get(rel)
        if e is None:
            probs.append(f"{rel} not in manifest")
        elif e.get("sha256") != hashlib.sha256(data).hexdigest():
            probs.append(f"{rel}: sha256 differs from the manifest")
    for ab in ABILITIES:
        m = man.get("abilities", {}).get(ab, {})
        if m.get("train", {}).get("documents") != td[ab] or m.get("train", {}).get("bytes") != tb[ab]:
            probs.append(f"{ab}: train counts differ from the manifest")
        if m.get("eval", {}).get("documents") != counts[ab]:
            probs.append(f"{ab}: eval count differs from the manifest")
    report(not probs, "manifest sha256 and counts match the files", "; ".join(probs[:3]) or
           f"seed {man.get('seed')}")
    return finish()


def self_test(a):
    """Corrupt copies of the outputs one way at a time (in a temporary directory) and make
    sure the check meant to catch each corruption fails."""
    import shutil
    import subprocess
    import tempfile
    src_e = os.path.join(a.root, a.eval)
    src_c = os.path.join(a.root, a.corpus)
    have_corpus = os.path.isfile(os.path.join(src_c, "train.jsonl"))

    def lines(path):
        with open(path, "rb") as f:
            return f.read().split(b"\n")[:-1]

    def put(path, ls):
        with open(path, "wb") as f:
            f.write(b"".join(x + b"\n" for x in ls))

    def rebuild_all(ed):
        put(os.path.join(ed, "all.jsonl"),
            [x for ab in ABILITIES for x in lines(os.path.join(ed, ab + ".jsonl"))])

    def mut_label(ed, cd):
        ls = lines(os.path.join(ed, "code.jsonl"))
        ls[0] = ls[0].replace(b'"label": "code"', b'"label": "coding"')
        put(os.path.join(ed, "code.jsonl"), ls)
        rebuild_all(ed)

    def mut_space(ed, cd):
        ls = lines(os.path.join(ed, "math.jsonl"))
        ls[3] = ls[3].replace(b'"response": " ', b'"response": "', 1)
        put(os.path.join(ed, "math.jsonl"), ls)
        rebuild_all(ed)

    def mut_count(ed, cd):
        put(os.path.join(ed, "writing.jsonl"), lines(os.path.join(ed, "writing.jsonl"))[:100])
        rebuild_all(ed)

    def mut_all(ed, cd):
        put(os.path.join(ed, "all.jsonl"), lines(os.path.join(ed, "all.jsonl"))[1:])

    def mut_utf8(ed, cd):
        ls = lines(os.path.join(ed, "ethics.jsonl"))
        ls[5] = ls[5].replace(b'"text": "', b'"text": "\xff\xfe', 1)
        put(os.path.join(ed, "ethics.jsonl"), ls)
        rebuild_all(ed)

    def mut_leak(ed, cd):
        row = json.loads(lines(os.path.join(ed, "knowledge.jsonl"))[7])
        ls = lines(os.path.join(cd, "train.jsonl"))
        ls.insert(50, json.dumps({"text": " " + row["prompt"] + "  " + row["response"],
                                  "label": "knowledge"}, ensure_ascii=False).encode())
        put(os.path.join(cd, "train.jsonl"), ls)

    def mut_english(ed, cd):
        rows = [json.loads(x) for x in lines(os.path.join(ed, "translation.jsonl"))]
        en = english_side(rows[0])
        ls = lines(os.path.join(cd, "val.jsonl"))
        ls.append(json.dumps({"text": f"English: {en}\nGerman: (absichtlich falsch)",
                              "label": "translation"}, ensure_ascii=False).encode())
        put(os.path.join(cd, "val.jsonl"), ls)

    def mut_dup(ed, cd):
        ls = lines(os.path.join(cd, "train.jsonl"))
        put(os.path.join(cd, "train.jsonl"), ls + [ls[10]])

    cases = [(mut_label, "eval rows: keys, labels, non-empty strings", False),
             (mut_space, "eval prompt/response convention", False),
             (mut_count, "eval documents per ability", False),
             (mut_all, "all.jsonl is the concatenation of the ability files", False),
             (mut_utf8, "eval JSONL and UTF-8", False),
             (mut_leak, "no eval document in train/val (whitespace-normalised)", True),
             (mut_leak, "manifest sha256 and counts match the files", True),
             (mut_english, "no English message of a translation eval row in train/val", True),
             (mut_dup, "no duplicate documents in train+val", True)]
    failures = 0
    for mut, name, needs_corpus in cases:
        if needs_corpus and not have_corpus:
            report(None, f"self-test {mut.__name__}", "training corpus not built")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            ed, cd = os.path.join(tmp, "eval"), os.path.join(tmp, "corpus")
            shutil.copytree(src_e, ed)
            if needs_corpus:
                shutil.copytree(src_c, cd)
            mut(ed, cd)
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--root", tmp,
                                  "--eval", "eval", "--corpus", "corpus"],
                                 capture_output=True, text=True).stdout
            caught = f"FAIL {name}:" in out
            report(caught, f"self-test {mut.__name__}",
                   f"'{name}' {'fails' if caught else 'does NOT fail'} on the corrupted copy")
            failures += not caught
    return finish()


def finish():
    n_pass = sum(1 for r in results if r is True)
    n_fail = sum(1 for r in results if r is False)
    n_skip = sum(1 for r in results if r is None)
    print(f"corpus checks - {n_pass} PASS, {n_fail} FAIL, {n_skip} SKIP")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
