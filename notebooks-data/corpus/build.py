"""build.py - build the labelled training corpus and the eval sets for the model zoo.

Run by build.sh (which installs the Debian packages first). Collects documents for seven
abilities from the sources in sources.py / mathgen.py / wordtasks.py, removes exact
duplicates (after whitespace normalisation) across everything, then per ability picks
  eval  ~200 short documents (committed: notebooks-data/eval/<ability>.jsonl, all.jsonl),
  val   ~1.5% of the training bytes,
  train at most --cap-mb MB of UTF-8 text, shared as equally as possible among its sources,
splitting by "group" (the English message of a translation, the headword of a definition, the
numbers of a math problem) so that no group straddles two splits. Writes train.jsonl,
val.jsonl and manifest.json to build/corpus/. Deterministic: same packages + same seed ->
byte-identical files. Checked by check.py.
"""
import argparse
import hashlib
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mathgen  # noqa: E402
import sources  # noqa: E402
import wordtasks  # noqa: E402
from common import ABILITIES, eval_row_groups, norm, pkg_version, sha1, waterfill  # noqa: E402

EVAL_MIN_BYTES = 60
EVAL_MAX_BYTES = 1500
EVAL_SOURCE_MAX_FRAC = 0.3     # a source gives at most this share of its docs to eval


def int_waterfill(avail, total):
    """Integer version of waterfill: {source: count}, sum <= total."""
    q = {s: int(v) for s, v in waterfill(avail, total).items()}
    left = total - sum(q.values())
    for s in sorted(avail):
        if left <= 0:
            break
        if q[s] < avail[s]:
            q[s] += 1
            left -= 1
    return q


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def collect(seed, math_per_family, words_per_lang):
    """{ability: [Doc]} in a fixed order."""
    plan = [
        ("code", [sources.code_python, sources.code_c_headers, sources.code_shell]),
        ("math", [lambda: mathgen.generate(seed, math_per_family)]),
        ("knowledge", [sources.knowledge_elements, sources.knowledge_wordnet,
                       sources.knowledge_gcide]),
        ("translation", [lambda: sources.translation_pairs(seed)]),
        ("linguistic", [sources.linguistic_fortunes,
                        lambda: wordtasks.generate(seed, words_per_lang)]),
        ("writing", [sources.writing_kjv, sources.writing_fortunes]),
        ("ethics", [sources.ethics_kjv, sources.ethics_social_contract,
                    sources.ethics_us_founding, sources.ethics_licence_preambles]),
    ]
    out = {}
    for ability, fns in plan:
        t = time.time()
        docs = []
        for fn in fns:
            docs += fn()
        for d in docs:
            d.ability = ability
            if d.prompt is not None:
                assert d.text == d.prompt + d.response and d.response[:1] in (" ", "\n")
        out[ability] = docs
        log(f"  {ability:12s} {len(docs):7d} candidate documents "
            f"{sum(d.nbytes for d in docs) / 1e6:7.2f} MB  ({time.time() - t:.1f}s)")
    return out


def dedup(by_ability):
    """Drop exact duplicates after whitespace normalisation, across all abilities (the first
    occurrence in ability order wins). Returns the number removed per ability."""
    seen = set()
    removed = {}
    for ability in ABILITIES:
        keep = []
        for d in by_ability[ability]:
            k = sha1(norm(d.text))
            if k in seen:
                continue
            seen.add(k)
            keep.append(d)
        removed[ability] = len(by_ability[ability]) - len(keep)
        by_ability[ability] = keep
    return removed


def reserved_groups(dirs):
    """Groups of the eval rows already in `dirs` (the committed eval sets): they never go to
    train or val, even if this build (say, after a Debian package update) selects a different
    eval set."""
    keys = set()
    for d in dirs:
        for ab in ABILITIES:
            path = os.path.join(d, ab + ".jsonl")
            if not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        keys |= eval_row_groups(json.loads(line))
                    except (ValueError, KeyError):
                        continue
    return keys


def split_ability(ability, docs, seed, cap_bytes, val_frac, n_eval, reserved=frozenset()):
    # every group's place in the order is a seeded hash of its own key, so adding or removing
    # a few documents (a Debian package update) moves only those, not the whole selection
    rank = {g: hashlib.sha256(f"{seed}:{ability}:order:{g}".encode()).hexdigest()
            for g in set(d.group for d in docs)}
    order = sorted(range(len(docs)), key=lambda i: (rank[docs[i].group], i))
    srcs = sorted(set(d.source for d in docs))

    # eval: short documents, spread over the sources, whole groups
    eligible = {s: 0 for s in srcs}
    for d in docs:
        if EVAL_MIN_BYTES <= d.nbytes <= EVAL_MAX_BYTES:
            eligible[d.source] += 1
    avail = {s: int(eligible[s] * EVAL_SOURCE_MAX_FRAC) for s in srcs}
    quota = int_waterfill(avail, n_eval)
    taken = {s: 0 for s in srcs}
    eval_docs, eval_groups = [], set()
    for i in order:
        d = docs[i]
        if taken[d.source] >= quota[d.source] or d.group in eval_groups:
            continue
        if EVAL_MIN_BYTES <= d.nbytes <= EVAL_MAX_BYTES:
            eval_docs.append(d)
            eval_groups.add(d.group)
            taken[d.source] += 1
    pool = [docs[i] for i in order
            if docs[i].group not in eval_groups and docs[i].group not in reserved
            and "t:" + sha1(norm(docs[i].text)) not in reserved]

    # val: groups in the val bucket; train: the others; both capped per source
    def in_val(g):
        h = int(hashlib.sha256(f"{seed}:val:{g}".encode()).hexdigest()[:12], 16)
        return h < val_frac * 16 ** 12

    val_group = {g: in_val(g) for g in set(d.group for d in pool)}
    avail_train = {s: 0 for s in srcs}
    for d in pool:
        if not val_group[d.group]:
            avail_train[d.source] += d.nbytes
    q_train = waterfill(avail_train, cap_bytes)
    q_val = {s: q_train[s] * val_frac for s in srcs}
    got_t = {s: 0 for s in srcs}
    got_v = {s: 0 for s in srcs}
    full_t, full_v = set(), set()
    train, val = [], []
    for d in pool:
        s = d.source
        if val_group[d.group]:
            if s in full_v:
                continue
            if got_v[s] + d.nbytes > q_val[s] + 1e-9:
                # let a source whose quota is below one document still give one
                if got_v[s] > 0 or d.nbytes > 4 * q_val[s] + 2000:
                    full_v.add(s)
                    continue
            val.append(d)
            got_v[s] += d.nbytes
        else:
            if s in full_t:
                continue
            if got_t[s] + d.nbytes > q_train[s] + 1e-9:
                full_t.add(s)
                continue
            train.append(d)
            got_t[s] += d.nbytes
    return eval_docs, val, train


def row_text(d):
    return {"text": d.text, "label": d.ability}


def row_eval(d):
    if d.prompt is not None:
        return {"prompt": d.prompt, "response": d.response, "label": d.ability}
    return {"text": d.text, "label": d.ability}


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return {"documents": len(rows), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def stats(docs):
    by = {}
    for d in docs:
        e = by.setdefault(d.source, {"documents": 0, "bytes": 0})
        e["documents"] += 1
        e["bytes"] += d.nbytes
    return {"documents": len(docs), "bytes": sum(d.nbytes for d in docs),
            "sources": dict(sorted(by.items()))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="repository root")
    ap.add_argument("--out", default="build/corpus", help="output directory (under --root)")
    ap.add_argument("--eval-dir", default="notebooks-data/eval", help="eval directory (under --root)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--cap-mb", type=float, default=3.0,
                    help="training text per ability, MB of UTF-8 (default 3)")
    ap.add_argument("--val-frac", type=float, default=0.015)
    ap.add_argument("--eval-docs", type=int, default=200, help="eval documents per ability")
    ap.add_argument("--math-per-family", type=int, default=2000)
    ap.add_argument("--words-per-lang", type=int, default=3000)
    ap.add_argument("--packages", default="", help="space-separated packages to record")
    ap.add_argument("--reserve", action="append", default=["notebooks-data/eval"],
                    help="eval directory whose rows must stay out of train/val (repeatable; "
                         "the --eval-dir and notebooks-data/eval always are)")
    a = ap.parse_args()

    t0 = time.time()
    log(f"collecting documents (seed {a.seed})")
    by_ability = collect(a.seed, a.math_per_family, a.words_per_lang)
    removed = dedup(by_ability)
    log("duplicates removed: " + ", ".join(f"{k} {v}" for k, v in removed.items()))

    cap = int(a.cap_mb * 1e6)
    out_dir = os.path.join(a.root, a.out)
    eval_dir = os.path.join(a.root, a.eval_dir)
    reserve_dirs = sorted(set([eval_dir] + [os.path.join(a.root, r) for r in a.reserve]))
    reserved = reserved_groups(reserve_dirs)
    log(f"{len(reserved)} group keys of existing eval rows kept out of train/val")
    evals, vals, trains = {}, {}, {}
    for ability in ABILITIES:
        evals[ability], vals[ability], trains[ability] = split_ability(
            ability, by_ability[ability], a.seed, cap, a.val_frac, a.eval_docs, reserved)

    files = {}

    train_rows = [d for ab in ABILITIES for d in trains[ab]]
    val_rows = [d for ab in ABILITIES for d in vals[ab]]
    random.Random(f"{a.seed}:shuffle:train").shuffle(train_rows)
    random.Random(f"{a.seed}:shuffle:val").shuffle(val_rows)
    files[os.path.join(a.out, "train.jsonl")] = write_jsonl(
        os.path.join(out_dir, "train.jsonl"), [row_text(d) for d in train_rows])
    files[os.path.join(a.out, "val.jsonl")] = write_jsonl(
        os.path.join(out_dir, "val.jsonl"), [row_text(d) for d in val_rows])
    all_eval = []
    for ability in ABILITIES:
        rows = [row_eval(d) for d in evals[ability]]
        files[os.path.join(a.eval_dir, ability + ".jsonl")] = write_jsonl(
            os.path.join(eval_dir, ability + ".jsonl"), rows)
        all_eval += rows
    files[os.path.join(a.eval_dir, "all.jsonl")] = write_jsonl(
        os.path.join(eval_dir, "all.jsonl"), all_eval)

    pkgs = sorted(set(a.packages.split()))
    manifest = {
        "format": "neuronlab.corpus", "version": 1,
        "seed": a.seed, "cap_bytes_per_ability": cap, "val_fraction": a.val_frac,
        "eval_documents_per_ability": a.eval_docs,
        "eval_document_bytes": [EVAL_MIN_BYTES, EVAL_MAX_BYTES],
        "math_per_family": a.math_per_family, "words_per_language": a.words_per_lang,
        "bytes_are": "UTF-8 bytes of the document text (prompt + response for eval rows)",
        "packages": {p: pkg_version(p) for p in pkgs},
        "duplicates_removed": removed,
        "abilities": {ab: {"available": stats(by_ability[ab]), "train": stats(trains[ab]),
                           "val": stats(vals[ab]), "eval": stats(evals[ab])}
                      for ab in ABILITIES},
        "files": dict(sorted(files.items())),
    }
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")

    log(f"{'ability':12s} {'train docs':>10s} {'train MB':>9s} {'val docs':>9s} {'eval docs':>9s}")
    for ab in ABILITIES:
        log(f"{ab:12s} {len(trains[ab]):10d} {sum(d.nbytes for d in trains[ab]) / 1e6:9.2f} "
            f"{len(vals[ab]):9d} {len(evals[ab]):9d}")
    log(f"wrote {out_dir}/train.jsonl, val.jsonl, manifest.json and {eval_dir}/*.jsonl "
        f"in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
