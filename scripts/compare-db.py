#!/usr/bin/env python3
"""compare-db.py — row-by-row comparison of two neuronlab results databases.

Used to show that a change of structure leaves the results unchanged: every table of A must
exist in B with the same columns and the same rows (ordered by all columns), except the
columns that differ between any two runs (runs.started_at, runs.ended_at, runs.tool_version,
meta.created_by) and meta.schema_version; columns that B adds to a table of A are noted, not
compared. REAL values are compared with a relative tolerance (--rtol, default 0:
bit-identical); NaN equals NaN.

usage: scripts/compare-db.py A.db B.db [--rtol 1e-6] [--ignore TABLE.COLUMN ...]
Exits 0 when equal, 1 with one line per difference (at most 20 per table) otherwise.
"""
import math
import sqlite3
import sys

VOLATILE = {("runs", "started_at"), ("runs", "ended_at"), ("runs", "tool_version")}


def rows(db, table, cols):
    q = "SELECT %s FROM \"%s\" ORDER BY %s" % (", ".join('"%s"' % c for c in cols), table,
                                              ", ".join('"%s"' % c for c in cols))
    return db.execute(q).fetchall()


def same(a, b, rtol):
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b or abs(a - b) <= rtol * max(abs(a), abs(b))
    return a == b


def main(argv):
    args = [a for a in argv[1:]]
    rtol, ignore = 0.0, set(VOLATILE)
    if "--rtol" in args:
        i = args.index("--rtol"); rtol = float(args[i + 1]); del args[i:i + 2]
    while "--ignore" in args:
        i = args.index("--ignore"); t, c = args[i + 1].split("."); ignore.add((t, c)); del args[i:i + 2]
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    A, B = (sqlite3.connect("file:%s?mode=ro" % p, uri=True) for p in args)
    tables = lambda db: sorted(r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"))
    ta, tb = tables(A), tables(B)
    bad = 0
    for t in sorted(set(ta) - set(tb)):
        print("table %s: only in %s" % (t, args[0])); bad += 1
    for t in sorted(set(tb) - set(ta)):
        print("table %s: only in %s" % (t, args[1])); bad += 1
    n_rows = 0
    for t in sorted(set(ta) & set(tb)):
        ca = [r[1] for r in A.execute('PRAGMA table_info("%s")' % t)]
        cb = [r[1] for r in B.execute('PRAGMA table_info("%s")' % t)]
        missing = [c for c in ca if c not in cb]
        if missing:
            print("table %s: columns %s missing in %s" % (t, missing, args[1])); bad += 1; continue
        added = [c for c in cb if c not in ca]
        if added:
            print("note: table %s: %s adds columns %s (not compared)" % (t, args[1], added))
        cols = [c for c in ca if (t, c) not in ignore and not (t == "meta" and c == "value")]
        if t == "meta":
            ra = [r for r in A.execute("SELECT key, value FROM meta WHERE key NOT IN ('created_by', 'schema_version') ORDER BY key")]
            rb = [r for r in B.execute("SELECT key, value FROM meta WHERE key NOT IN ('created_by', 'schema_version') ORDER BY key")]
        else:
            ra, rb = rows(A, t, cols), rows(B, t, cols)
        n_rows += len(ra)
        if len(ra) != len(rb):
            print("table %s: %d rows vs %d" % (t, len(ra), len(rb))); bad += 1; continue
        shown = 0
        for x, y in zip(ra, rb):
            if all(same(u, v, rtol) for u, v in zip(x, y)):
                continue
            bad += 1
            if shown < 20:
                print("table %s: %r vs %r" % (t, x, y)); shown += 1
    print("%s: %d tables, %d rows compared, %d differences" % ("equal" if not bad else "DIFFERENT",
                                                              len(set(ta) & set(tb)), n_rows, bad))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
