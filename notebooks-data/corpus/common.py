"""common.py - shared helpers for the corpus build: documents, text cleaning, Debian file lists,
chunking and the water-filling allocator.

Rules: everything here is deterministic (no wall clock, no hash(), no set iteration order);
text leaving these helpers is valid UTF-8 without control characters other than \\n and \\t.
Checked by check.py (labels, UTF-8, disjointness) and by running build.sh twice.
"""
import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Optional

ABILITIES = ["code", "math", "knowledge", "translation", "linguistic", "writing", "ethics"]


@dataclass
class Doc:
    text: str                    # full text (prompt + response for prompt/response docs)
    source: str                  # source name, e.g. "python-stdlib" (see SOURCES.md)
    group: str = ""              # split unit: docs sharing a group never straddle eval/train/val
    prompt: Optional[str] = None  # set for prompt/response docs; text == prompt + response
    response: Optional[str] = None
    ability: str = ""

    def __post_init__(self):
        if not self.group:
            self.group = "t:" + sha1(norm(self.text))

    @property
    def nbytes(self):
        return len(self.text.encode("utf-8"))


def sha1(s):
    return hashlib.sha1(s.encode("utf-8")).hexdigest()


def norm(s):
    """Whitespace normalisation used for de-duplication and disjointness checks."""
    return " ".join(s.split())


_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b\ufeff\ud800-\udfff]")
_OVERSTRIKE = re.compile(r".\x08")


def clean(s):
    """Normalise newlines, drop overstrike sequences (x BACKSPACE y), control characters and
    trailing spaces; strip leading/trailing blank lines."""
    s = s.replace("\r\n", "\n").replace("\r", "\n")
    while "\x08" in s:
        t = _OVERSTRIKE.sub("", s)
        if t == s:
            s = s.replace("\x08", "")
            break
        s = t
    s = _CTRL.sub("", s)
    s = "\n".join(line.rstrip() for line in s.split("\n"))
    return s.strip("\n").rstrip()


def read_text(path, fallback="latin-1"):
    """Read a file as UTF-8; fall back to `fallback` (None: return None) if it is not UTF-8."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if fallback is None:
            return None
        return data.decode(fallback)


_pkg_cache = {}


def pkg_files(pkg):
    """Regular files (not symlinks, not directories) that Debian package `pkg` installed, sorted."""
    if pkg not in _pkg_cache:
        out = subprocess.run(["dpkg-query", "-L", pkg], check=True, capture_output=True,
                             text=True).stdout
        files = [p for p in out.splitlines()
                 if p.startswith("/") and os.path.isfile(p) and not os.path.islink(p)]
        _pkg_cache[pkg] = sorted(set(files))
    return _pkg_cache[pkg]


def pkg_version(pkg):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], check=True,
                         capture_output=True, text=True).stdout
    return out.strip()


def pack_lines(lines, boundaries, max_bytes, min_bytes=0):
    """Split `lines` (without newlines) into chunks of at most max_bytes, cutting only at the
    line indices in `boundaries` where possible (a piece between two boundaries that is itself
    too long is cut at blank lines, then at any line). Returns a list of strings."""
    cuts = sorted(set(b for b in boundaries if 0 < b < len(lines)))
    pieces, start = [], 0
    for c in cuts + [len(lines)]:
        if c > start:
            pieces.append(lines[start:c])
        start = c
    out, cur, cur_b = [], [], 0

    def flush():
        nonlocal cur, cur_b
        if cur:
            out.append("\n".join(cur))
        cur, cur_b = [], 0

    def size(ls):
        return sum(len(x.encode("utf-8")) + 1 for x in ls)

    def split_long(piece):
        # cut an oversized piece at blank lines, then at any line
        parts, acc, acc_b = [], [], 0
        for ln in piece:
            b = len(ln.encode("utf-8")) + 1
            if acc and acc_b + b > max_bytes:
                # back up to the last blank line in acc if there is one past the middle
                k = max((i for i, x in enumerate(acc) if not x.strip()), default=-1)
                if k > len(acc) // 3:
                    parts.append(acc[:k])
                    acc = acc[k + 1:]
                    acc_b = size(acc)
                else:
                    parts.append(acc)
                    acc, acc_b = [], 0
            acc.append(ln)
            acc_b += b
        if acc:
            parts.append(acc)
        return parts

    for piece in pieces:
        b = size(piece)
        if b > max_bytes:
            flush()
            for p in split_long(piece):
                out.append("\n".join(p))
            continue
        if cur and cur_b + b > max_bytes:
            flush()
        cur.extend(piece)
        cur_b += b
    flush()
    res = []
    for t in out:
        t = t.strip("\n")
        if len(t.encode("utf-8")) >= min_bytes and t.strip():
            res.append(t)
    return res


def pack_units(units, max_bytes, sep=" "):
    """Join consecutive text units (e.g. verses, paragraphs) into chunks of at most max_bytes
    (a single unit longer than that becomes its own chunk)."""
    out, cur, cur_b = [], [], 0
    for u in units:
        b = len(u.encode("utf-8")) + len(sep)
        if cur and cur_b + b > max_bytes:
            out.append(sep.join(cur))
            cur, cur_b = [], 0
        cur.append(u)
        cur_b += b
    if cur:
        out.append(sep.join(cur))
    return out


def waterfill(avail, total):
    """Split `total` over sources as equally as possible, no source getting more than it has.
    avail: {source: amount available}. Returns {source: quota} (floats)."""
    quota = {}
    remaining = float(total)
    items = sorted(avail.items(), key=lambda kv: (kv[1], kv[0]))
    n = len(items)
    for i, (s, a) in enumerate(items):
        share = remaining / (n - i)
        q = min(float(a), share)
        quota[s] = q
        remaining -= q
    return quota


def letter_ratio(s):
    chars = [c for c in s if not c.isspace()]
    if not chars:
        return 0.0
    return sum(c.isalpha() for c in chars) / len(chars)


TRANSLATION_LANG_NAMES = ["French", "German", "Spanish", "Italian", "Portuguese", "Russian"]


def eval_row_groups(row):
    """The split groups an eval row (prompt/response or text) belongs to, derived from the row
    alone: its own text, and for translation the English message, for knowledge the headword
    (the same keys sources.py gives the documents)."""
    text = row["text"] if "text" in row else row["prompt"] + row["response"]
    keys = {"t:" + sha1(norm(text))}
    label = row.get("label")
    if label == "translation" and "prompt" in row:
        p, r = row["prompt"], row["response"]
        en = p[len("English: "):p.rfind("\n")] if p.startswith("English: ") else r[1:]
        keys.add("m:" + " ".join(en.lower().split()))
    if label == "knowledge" and "prompt" in row:
        m = re.match(r"([^\n]+?) \(([a-z][a-z. &]*)\):", row["prompt"])
        if m:
            keys.add("k:" + m.group(1).split(",")[0].strip().lower())
    return keys
