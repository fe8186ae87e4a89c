#!/usr/bin/env python3
"""compare.py — compares `neuronlab tokenize` output with a reference encoder's, row by row.

    compare.py LABEL TEXTS.jsonl EXPECTED.jsonl GOT.jsonl [options]
      --vocab FILE        JSON list id -> piece, to show mismatching pieces
      --rc N --err FILE   exit status and stderr of the neuronlab command that wrote GOT
      --decoded FILE      `neuronlab tokenize --decode` of GOT: checks the round trip on the
                          rows where the reference round-trips (decode(encode(t)) == t)
      --decode-rc N --decode-err FILE
      --rt-label LABEL    label of the round-trip line (default: "round trip " + LABEL)
      --show N            mismatches shown (default 3)

Prints "PASS LABEL: n/n identical" or "FAIL LABEL: k/n identical" followed by indented
details of the first mismatches, and the same for the round trip. Standard library only.
Always exits 0: the PASS/FAIL lines are the result.
"""
import argparse
import json
import sys

# texts with lone surrogates must print as escapes, not stop the report
sys.stdout.reconfigure(errors="backslashreplace")


def read_jsonl(path, key):
    """Rows of a JSONL file (bytes decoded with U+FFFD replacement); key's value per row."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    rows = []
    for n, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise ValueError("%s line %d is not JSON (%s): %.80r" % (path, n + 1, e, line))
        if not isinstance(obj, dict) or key not in obj:
            raise ValueError("%s line %d has no \"%s\": %.80r" % (path, n + 1, key, line))
        rows.append(obj[key])
    return rows


def short(s, n=110):
    r = json.dumps(s, ensure_ascii=False)
    try:
        r.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: show them escaped
        r = json.dumps(s)
    return r if len(r) <= n else r[:n] + "…\" (%d chars)" % len(s)


def err_line(path):
    try:
        with open(path, "rb") as f:
            lines = [l.strip() for l in f.read().decode("utf-8", "replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return lines[0][:200] if lines else ""


def show_ids(ids, vocab, start, n=14):
    """ids[start:start+n] with their pieces, '…' marking cut ends."""
    part = ids[start:start + n]
    pieces = [vocab[i] if vocab and isinstance(i, int) and 0 <= i < len(vocab) else "?" for i in part]
    pre = "… " if start > 0 else ""
    post = " …" if start + n < len(ids) else ""
    return "%s%s%s  %s" % (pre, json.dumps(part), post, json.dumps(pieces, ensure_ascii=False))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("label")
    ap.add_argument("texts")
    ap.add_argument("expected")
    ap.add_argument("got")
    ap.add_argument("--vocab")
    ap.add_argument("--rc", type=int, default=0)
    ap.add_argument("--err")
    ap.add_argument("--decoded")
    ap.add_argument("--decode-rc", type=int, default=0)
    ap.add_argument("--decode-err")
    ap.add_argument("--rt-label")
    ap.add_argument("--show", type=int, default=3)
    a = ap.parse_args()

    texts = read_jsonl(a.texts, "text")
    exp_rows = []
    with open(a.expected, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                exp_rows.append(json.loads(line))
    expected = [r["tokens"] for r in exp_rows]
    n = len(expected)
    vocab = None
    if a.vocab:
        with open(a.vocab, encoding="utf-8") as f:
            vocab = json.load(f)

    got = None
    if a.rc != 0:
        print("FAIL %s: 0/%d identical: neuronlab exited %d: %s" % (a.label, n, a.rc, err_line(a.err) if a.err else ""))
    else:
        try:
            got = read_jsonl(a.got, "tokens")
        except (OSError, ValueError) as e:
            print("FAIL %s: 0/%d identical: unreadable output: %s" % (a.label, n, e))
    if got is not None:
        same = sum(1 for i in range(min(n, len(got))) if got[i] == expected[i])
        extra = "" if len(got) == n else " (got %d rows, expected %d)" % (len(got), n)
        print("%s %s: %d/%d identical%s" % ("PASS" if same == n and not extra else "FAIL", a.label, same, n, extra))
        mism = [i for i in range(min(n, len(got))) if got[i] != expected[i]]
        for i in mism[:a.show]:
            e, g = expected[i], got[i] if isinstance(got[i], list) else []
            k = 0
            while k < len(e) and k < len(g) and e[k] == g[k]:
                k += 1
            start = max(0, k - 3)
            print("    row %d: %s" % (i + 1, short(texts[i] if i < len(texts) else "?")))
            print("      first difference at token %d (%d expected, %d got)" % (k, len(e), len(g)))
            print("      expected %s" % show_ids(e, vocab, start))
            print("      got      %s" % show_ids(g, vocab, start))
        if len(mism) > a.show:
            print("    … and %d more mismatching rows" % (len(mism) - a.show))

    if a.decoded is None:
        return 0
    rt_label = a.rt_label or ("round trip " + a.label)
    want = [i for i, r in enumerate(exp_rows) if r.get("roundtrip")]
    if got is None:
        print("FAIL %s: no ids to decode (the encode step failed)" % rt_label)
        return 0
    if a.decode_rc != 0:
        print("FAIL %s: neuronlab tokenize --decode exited %d: %s"
              % (rt_label, a.decode_rc, err_line(a.decode_err) if a.decode_err else ""))
        return 0
    try:
        dec = read_jsonl(a.decoded, "text")
    except (OSError, ValueError) as e:
        print("FAIL %s: unreadable --decode output: %s" % (rt_label, e))
        return 0
    ok = [i for i in want if i < len(dec) and i < len(texts) and dec[i] == texts[i]]
    bad = [i for i in want if i not in set(ok)]
    print("%s %s: %d/%d texts decode(encode(t)) == t%s"
          % ("PASS" if not bad else "FAIL", rt_label, len(ok), len(want),
             "; %d not checked (the reference does not round-trip them)" % (n - len(want)) if n > len(want) else ""))
    for i in bad[:a.show]:
        print("    row %d: %s" % (i + 1, short(texts[i])))
        print("      decoded %s" % (short(dec[i]) if i < len(dec) else "(missing row)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
