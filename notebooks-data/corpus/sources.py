"""sources.py - turn the text that Debian packages carry into labelled documents.

One function per source; each returns a list of common.Doc in a deterministic order (files
sorted, entries in file order). Which package every source comes from, and its licence, is
recorded in SOURCES.md; the package list itself is in build.sh. Only files that the named
packages installed are read (dpkg-query -L), so other software on the machine never leaks in.
Checked by check.py and by the twice-run determinism test described in README.md.
"""
import ast
import gzip
import hashlib
import os
import re
import struct
import subprocess

from common import Doc, clean, letter_ratio, pack_lines, pack_units, pkg_files, read_text

# ---------------------------------------------------------------------------------------------
# code
# ---------------------------------------------------------------------------------------------

CODE_MAX = 2000      # bytes per code chunk
CODE_MIN = 120

_LICENCE_WORDS = re.compile(r"copyright|licen[cs]e|warranty|free software foundation", re.I)


def _mostly_licence_comment(text, comment_prefixes):
    lines = [l.strip() for l in text.split("\n") if l.strip()]
    if not lines:
        return True
    com = sum(1 for l in lines if l.startswith(comment_prefixes))
    return com / len(lines) > 0.8 and bool(_LICENCE_WORDS.search(text))


def code_python():
    """Python standard library modules (libpython3.11-minimal, libpython3.11-stdlib), split at
    top-level statements (functions, classes, groups of module-level statements); an oversized
    class is cut between its methods. Test suites and data-table modules are left out."""
    files = []
    for pkg in ("libpython3.11-minimal", "libpython3.11-stdlib"):
        files += [p for p in pkg_files(pkg)
                  if p.startswith("/usr/lib/python3.11/") and p.endswith(".py")]
    # test suites, and modules that are data tables rather than code (codec tables, the
    # pydoc topic strings) are left out
    files = sorted(set(f for f in files
                       if not re.search(r"/(tests?|idle_test|encodings|pydoc_data)/", f)))
    docs = []
    for path in files:
        src = read_text(path, fallback=None)
        if src is None:
            continue
        src = clean(src)
        lines = src.split("\n")
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError):
            continue
        top, inner = set(), []
        for node in tree.body:
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            s = start - 1
            while s > 0 and lines[s - 1].lstrip().startswith("#"):    # comment block above
                s -= 1
            top.add(s)
            if isinstance(node, ast.ClassDef):          # method starts: cut points for big classes
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        inner.append(min([sub.lineno] + [d.lineno for d in sub.decorator_list]) - 1)
        chunks = []
        # pieces between top-level boundaries
        cuts = sorted(top | {0, len(lines)})
        for a, b in zip(cuts, cuts[1:]):
            seg = lines[a:b]
            seg_b = sum(len(x.encode()) + 1 for x in seg)
            if seg_b <= CODE_MAX:
                chunks.append(seg)
            else:
                cuts_in = [x - a for x in inner if a < x < b]
                for c in pack_lines(seg, cuts_in, CODE_MAX):
                    chunks.append(c.split("\n"))
        # merge consecutive small top-level pieces
        merged = pack_units(["\n".join(c).strip("\n") for c in chunks if "".join(c).strip()],
                            CODE_MAX, sep="\n\n")
        for t in merged:
            t = t.strip("\n")
            if len(t.encode()) < CODE_MIN or _mostly_licence_comment(t, ("#",)):
                continue
            docs.append(Doc(text=t, source="python-stdlib"))
    return docs


def code_c_headers():
    """C headers from libc6-dev, linux-libc-dev, libsqlite3-dev and zlib1g-dev, split at blank
    lines into chunks; licence-only comment blocks are dropped."""
    docs = []
    for pkg in ("libc6-dev", "linux-libc-dev", "libsqlite3-dev", "zlib1g-dev"):
        for path in pkg_files(pkg):
            if not path.endswith(".h"):
                continue
            src = read_text(path, fallback=None)
            if src is None:
                continue
            lines = clean(src).split("\n")
            blanks = [i for i, l in enumerate(lines) if not l.strip()]
            for t in pack_lines(lines, blanks, CODE_MAX, CODE_MIN):
                if _mostly_licence_comment(t, ("/*", "*", "//")):
                    continue
                docs.append(Doc(text=t, source="c-headers"))
    return docs


_SH_SHEBANG = re.compile(rb"^#!\s*\S*(/sh|/bash|/dash|env (ba|da)?sh)\b")
_SH_FUNC = re.compile(r"^(function\s+[\w:.-]+|[\w:.-]+\s*\(\s*\))\s*(\{|$)")


def code_shell():
    """Shell code: bash-completion's completion scripts, plus the /bin/sh and bash scripts of
    git, gzip, xz-utils, bzip2, debianutils, dpkg and libc-bin; split at function definitions
    and blank lines at column 0."""
    files = []
    for p in pkg_files("bash-completion"):
        if p.startswith("/usr/share/bash-completion/"):
            files.append(p)
    for pkg in ("git", "gzip", "xz-utils", "bzip2", "debianutils", "dpkg", "libc-bin"):
        for p in pkg_files(pkg):
            if "/usr/share/doc/" in p or "/man/" in p:
                continue
            try:
                with open(p, "rb") as f:
                    head = f.read(64)
            except OSError:
                continue
            if _SH_SHEBANG.match(head):
                files.append(p)
    docs = []
    for path in sorted(set(files)):
        src = read_text(path, fallback=None)
        if src is None:
            continue
        lines = clean(src).split("\n")
        bounds = []
        for i, l in enumerate(lines):
            if _SH_FUNC.match(l):
                s = i
                while s > 0 and lines[s - 1].startswith("#"):
                    s -= 1
                bounds.append(s)
            elif not l.strip() and i + 1 < len(lines) and not lines[i + 1][:1].isspace():
                bounds.append(i)
        for t in pack_lines(lines, bounds, CODE_MAX, CODE_MIN):
            if _mostly_licence_comment(t, ("#",)):
                continue
            docs.append(Doc(text=t, source="shell"))
    return docs


# ---------------------------------------------------------------------------------------------
# knowledge
# ---------------------------------------------------------------------------------------------

KNOW_MAX = 1200
_WN_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def _kdoc(term, pos, definition, source):
    term = term.strip()
    definition = " ".join(definition.split())
    prompt = f"{term} ({pos}):"
    response = " " + definition
    return Doc(text=prompt + response, prompt=prompt, response=response, source=source,
               group="k:" + term.split(",")[0].strip().lower())


def knowledge_wordnet():
    """WordNet 3.0 synsets (wordnet-base): 'lemma, synonym (pos): gloss'. Instance nouns
    (specific people, places, events: the encyclopedic part) form their own source."""
    inst, common = [], []
    for fname in ("data.noun", "data.verb", "data.adj", "data.adv"):
        path = "/usr/share/wordnet/" + fname
        with open(path, encoding="utf-8", errors="strict") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                head, _, gloss = line.partition(" | ")
                parts = head.split()
                ss_type = parts[2]
                wcnt = int(parts[3], 16)
                words = []
                for k in range(wcnt):
                    w = parts[4 + 2 * k]
                    w = re.sub(r"\([a-z]+\)$", "", w).replace("_", " ")
                    if w not in words:
                        words.append(w)
                ptr_at = 4 + 2 * wcnt
                nptr = int(parts[ptr_at])
                ptrs = [parts[ptr_at + 1 + 4 * k] for k in range(nptr)]
                gloss = gloss.strip()
                if len(gloss) < 10:
                    continue
                term = ", ".join(words[:3])
                d = _kdoc(term, _WN_POS[ss_type], gloss, "wordnet")
                if d.nbytes > KNOW_MAX:
                    continue
                if "@i" in ptrs:
                    d.source = "wordnet-instances"
                    inst.append(d)
                else:
                    common.append(d)
    return inst + common


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64V = {c: i for i, c in enumerate(_B64)}


def _b64(s):
    v = 0
    for c in s:
        v = v * 64 + _B64V[c]
    return v


def _read_dictd(name):
    data = gzip.open(f"/usr/share/dictd/{name}.dict.dz").read()
    entries = []
    seen = set()
    with open(f"/usr/share/dictd/{name}.index", encoding="utf-8") as f:
        for line in f:
            w, o, l = line.rstrip("\n").split("\t")[:3]
            if w.startswith("00database") or w.startswith("00-database"):
                continue
            o, l = _b64(o), _b64(l)
            if (o, l) in seen:
                continue
            seen.add((o, l))
            try:
                entries.append((o, w, data[o:o + l].decode("utf-8", errors="strict")))
            except UnicodeDecodeError:      # a few GCIDE entries carry stray cp1252 bytes
                continue
    entries.sort()
    return entries


_GCIDE_HEAD = re.compile(r"^(?P<hw>[^\\\n]+?)\s*\\[^\\\n]*\\,?\s*(?P<pos>[^\n]*?)\s*\n")


def knowledge_gcide():
    """GCIDE (dict-gcide): entries from the 1913 Webster's (those marked [1913 Webster];
    entries that come from WordNet 1.5 are left out, WordNet 3.0 is its own source).
    'Headword (pos.): definition text'."""
    docs = []
    for _, _, body in _read_dictd("gcide"):
        if "[1913 Webster]" not in body or "[WordNet" in body:
            continue
        m = _GCIDE_HEAD.match(body)
        if not m:
            continue
        hw = m.group("hw").strip().replace('"', "").replace("*", "").replace("`", "")
        pos = m.group("pos").strip().rstrip(",").strip()
        if not pos or len(pos) > 20 or not re.fullmatch(r"[a-z][a-z. &]*", pos):
            continue
        rest = body[m.end():]
        rest = rest[: rest.rfind("[1913 Webster]")]
        rest = re.sub(r"\[[^\]\n]*\]", " ", rest)          # source markers like [1913 Webster]
        rest = re.sub(r"\{([^{}]*)\}", r"\1", rest)         # {italic} markup
        rest = re.sub(r"\\[^\\\n]*\\", " ", rest)           # pronunciations of sub-entries
        rest = " ".join(rest.split())
        if len(rest) < 15 or not re.match(r"[A-Z(0-9]", rest):
            continue
        d = _kdoc(hw, pos, rest, "gcide")
        if d.nbytes <= KNOW_MAX:
            docs.append(d)
    return docs


def knowledge_elements():
    """Chemical elements (dict-elements, Jay Kominek's public-domain table): symbol, atomic
    number and weight and the descriptive text. Elements 104 and up are left out: their texts
    were copied from Wikipedia (CC BY-SA), see SOURCES.md."""
    docs = []
    for _, w, body in _read_dictd("elements"):
        lines = [l.strip() for l in body.strip().split("\n")]
        if len(lines) < 4 or not lines[1].startswith("Symbol:"):
            continue
        name = lines[0]
        fields = {}
        desc = []
        for l in lines[1:]:
            k, sep, v = l.partition(":")
            if sep and k in ("Symbol", "Atomic number", "Atomic weight"):
                fields[k] = v.strip()
            else:
                desc.append(l)
        try:
            z = int(fields.get("Atomic number", "0"))
        except ValueError:
            continue
        if z < 1 or z >= 104:
            continue
        facts = (f"Symbol {fields['Symbol']}; atomic number {z}; atomic weight "
                 f"{fields.get('Atomic weight', '?')}.")
        desc = re.sub(r"\{([^{}]*)\}", r"\1", " ".join(" ".join(desc).split()))  # {cross-refs}
        text = facts + (" " + desc if desc else "")
        docs.append(_kdoc(name, "chemical element", text, "elements"))
    return docs


# ---------------------------------------------------------------------------------------------
# translation (gettext catalogs)
# ---------------------------------------------------------------------------------------------

TRANSLATION_PACKAGES = [
    "apt", "bash", "binutils-common", "coreutils", "diffutils", "dpkg", "findutils", "gettext",
    "git", "gnupg-l10n", "grep", "iso-codes", "libapt-pkg6.0", "libc-l10n", "login", "make",
    "man-db", "procps", "sed", "tar", "wget",
]
TRANSLATION_LANGS = [("fr", "French"), ("de", "German"), ("es", "Spanish"), ("it", "Italian"),
                     ("pt_BR", "Portuguese"), ("ru", "Russian")]
TRANS_SIDE_MAX = 500


def parse_mo(path):
    """(msgid, msgstr) pairs of a compiled gettext catalog; contexts dropped, plural entries
    reduced to (singular, first form); the catalog's charset is honoured."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic == 0x950412DE else ">"
    _, n, o_orig, o_trans = struct.unpack(end + "4I", data[4:20])
    raw = []
    for i in range(n):
        lo, oo = struct.unpack(end + "2I", data[o_orig + 8 * i: o_orig + 8 * i + 8])
        lt, ot = struct.unpack(end + "2I", data[o_trans + 8 * i: o_trans + 8 * i + 8])
        raw.append((data[oo:oo + lo], data[ot:ot + lt]))
    charset = "utf-8"
    for mid, mstr in raw:
        if mid == b"":
            m = re.search(rb"charset=([A-Za-z0-9_-]+)", mstr)
            if m:
                charset = m.group(1).decode("ascii")
    out = []
    for mid, mstr in raw:
        if mid == b"":
            continue
        try:
            mid_s = mid.decode(charset)
            mstr_s = mstr.decode(charset)
        except (UnicodeDecodeError, LookupError):
            continue
        if "\x04" in mid_s:
            mid_s = mid_s.split("\x04", 1)[1]
        out.append((mid_s.split("\x00")[0], mstr_s.split("\x00")[0]))
    return out


def _usable_message(src, tgt):
    if not tgt.strip() or src.strip() == tgt.strip():
        return False
    if len(src.encode()) > TRANS_SIDE_MAX or len(tgt.encode()) > TRANS_SIDE_MAX:
        return False
    letters = re.sub(r"%[-+ #0-9.*]*[a-zA-Z]|\$\{?\w+\}?|<[^>]*>", "", src)
    if sum(c.isalpha() for c in letters) < 4:
        return False
    if any(ord(c) > 0x24F for c in src):     # English side should be Latin script
        return False
    return True


def translation_pairs(seed):
    """English <-> language pairs from the gettext catalogs of TRANSLATION_PACKAGES. Each
    (message, language) pair is written in one direction, chosen by a seeded hash of the pair
    (so a catalog update changes only the pairs it touches):
    'English: <msgid>\\n<Language>: <msgstr>' or the reverse. Group = the English message,
    so one message never appears in two splits, whatever the language."""
    docs = []
    for code, lang in TRANSLATION_LANGS:
        prefix = f"/usr/share/locale/{code}/LC_MESSAGES/"
        files = []
        for pkg in TRANSLATION_PACKAGES:
            files += [p for p in pkg_files(pkg) if p.startswith(prefix) and p.endswith(".mo")]
        seen = set()
        for path in sorted(set(files)):
            for src, tgt in parse_mo(path):
                src_c, tgt_c = clean(src), clean(tgt)
                if not _usable_message(src_c, tgt_c):
                    continue
                key = (src_c, tgt_c)
                if key in seen:
                    continue
                seen.add(key)
                h = hashlib.sha256(f"{seed}:direction:{code}:{src_c}\x00{tgt_c}".encode())
                if h.digest()[0] < 128:
                    prompt = f"English: {src_c}\n{lang}:"
                    response = " " + tgt_c
                else:
                    prompt = f"{lang}: {tgt_c}\nEnglish:"
                    response = " " + src_c
                docs.append(Doc(text=prompt + response, prompt=prompt, response=response,
                                source="gettext-" + code,
                                group="m:" + " ".join(src_c.lower().split())))
    return docs


# ---------------------------------------------------------------------------------------------
# fortunes (writing: English; linguistic: other languages)
# ---------------------------------------------------------------------------------------------

FORTUNE_MAX = 1500


def read_fortunes(path):
    text = read_text(path)
    out = []
    for f in re.split(r"\n%+\n", "\n" + text.replace("\r\n", "\n") + "\n"):
        f = clean(f)
        if len(f) < 20 or len(f.encode()) > FORTUNE_MAX:
            continue
        if letter_ratio(f) < 0.6:       # ASCII art, tables
            continue
        out.append(f)
    return out


def _fortune_files(pkg, under, exclude=()):
    res = []
    for p in pkg_files(pkg):
        if not p.startswith(under) or "/off/" in p or p.endswith("/off"):
            continue
        if p.endswith((".dat", ".u8", ".gz")) or "/doc/" in p or "/man/" in p:
            continue
        if os.path.basename(p) in exclude:
            continue
        res.append(p)
    return res


WRITING_FORTUNE_FILES = ["art", "education", "food", "fortunes", "humorists", "kids",
                         "literature", "love", "magic", "medicine", "miscellaneous", "news",
                         "people", "pets", "platitudes", "songs-poems", "sports", "wisdom",
                         "work"]


def writing_fortunes():
    """English quotations and short prose from the fortune databases (fortunes, fortunes-min):
    literature, people, humorists, songs-poems, wisdom and other non-technical files."""
    docs = []
    for pkg in ("fortunes-min", "fortunes"):
        for p in _fortune_files(pkg, "/usr/share/games/fortunes/"):
            if os.path.dirname(p) != "/usr/share/games/fortunes":
                continue
            if os.path.basename(p) not in WRITING_FORTUNE_FILES:
                continue
            docs += [Doc(text=t, source="fortunes-en") for t in read_fortunes(p)]
    return docs


LINGUISTIC_FORTUNES = [
    ("fortunes-de", "/usr/share/games/fortunes/de/", "de",
     {"asciiart", "translations", "woerterbuch"}),
    ("fortunes-es", "/usr/share/games/fortunes/es/", "es", set()),
    ("fortunes-it", "/usr/share/games/fortunes/it/", "it", {"banner"}),
    ("fortunes-ru", "/usr/share/games/fortunes/ru/", "ru", set()),
    ("fortunes-pl", "/usr/share/games/fortunes/pl/", "pl",
     {"dowcipy-szowinistyczne", "dowcipy-feministyczne", "cows"}),
    ("fortunes-br", "/usr/share/games/fortunes/brasil", "pt_BR", set()),
]


def linguistic_fortunes():
    """Monolingual German, Spanish, Italian, Russian, Polish and Brazilian Portuguese fortune
    texts (sayings, jokes, quotations). Offensive sections are not installed/read."""
    docs = []
    for pkg, under, code, excl in LINGUISTIC_FORTUNES:
        for p in _fortune_files(pkg, under, excl):
            docs += [Doc(text=t, source="fortunes-" + code) for t in read_fortunes(p)]
    return docs


# ---------------------------------------------------------------------------------------------
# King James Bible (writing: narrative books; ethics: chapters about conduct)
# ---------------------------------------------------------------------------------------------

_kjv_cache = None


def kjv():
    """{book: {chapter: [verse text, ...]}} from the bible-kjv-text data, decoded by the
    package's own `bible` program (bible-kjv)."""
    global _kjv_cache
    if _kjv_cache is None:
        out = subprocess.run(["bible", "-l100000", "gen1:1-rev22:21"], check=True,
                             capture_output=True, stdin=subprocess.DEVNULL).stdout
        text = out.decode("utf-8")
        books = {}
        cur = None
        head = re.compile(r"^((?:[123] )?[A-Z][A-Za-z ]+?) (\d+)$")
        verse = re.compile(r"^\s+(\d+) (.*)$")
        for line in text.split("\n"):
            m = head.match(line)
            if m:
                cur = books.setdefault(m.group(1), {}).setdefault(int(m.group(2)), [])
                continue
            m = verse.match(line)
            if m and cur is not None:
                cur.append(" ".join(m.group(2).split()))
        _kjv_cache = books
    return _kjv_cache


WRITING_KJV = {"Genesis": None, "Exodus": range(1, 20), "Joshua": None, "Judges": None,
               "Ruth": None, "1 Samuel": None, "2 Samuel": None, "1 Kings": None,
               "2 Kings": None, "Esther": None, "Jonah": None, "Daniel": range(1, 7),
               "Acts": None}
# chapters whose main subject is how to behave: the law codes' moral commandments, wisdom
# literature, the prophets on justice to the poor, the sermons and the epistles' rules of conduct
ETHICS_KJV = {
    "Exodus": [20, 21, 22, 23], "Leviticus": [19, 25], "Deuteronomy": [5, 6, 10, 15, 19, 22, 23, 24, 25],
    "Job": [29, 31], "Psalms": [1, 15, 34, 37, 82, 101, 112], "Proverbs": None,
    "Ecclesiastes": None, "Isaiah": [1, 58, 59], "Jeremiah": [22], "Ezekiel": [18, 22],
    "Amos": [2, 5, 8], "Micah": [2, 3, 6], "Zechariah": [7, 8],
    "Matthew": [5, 6, 7, 18, 19, 22, 23, 25], "Mark": [10, 12],
    "Luke": [6, 10, 12, 14, 15, 16, 18], "Romans": [2, 12, 13, 14, 15], "1 Corinthians": [6, 13],
    "Galatians": [5, 6], "Ephesians": [4, 5, 6], "Philippians": [2, 4], "Colossians": [3, 4],
    "1 Thessalonians": [4, 5], "1 Timothy": [5, 6], "Titus": [1, 2, 3], "Hebrews": [13],
    "James": None, "1 Peter": [2, 3, 4, 5], "1 John": None,
}


def _kjv_docs(spec, max_bytes, source):
    books = kjv()
    docs = []
    for book, chapters in spec.items():
        chs = sorted(books[book]) if chapters is None else list(chapters)
        for ch in chs:
            for t in pack_units(books[book][ch], max_bytes):
                if len(t) >= 40:
                    docs.append(Doc(text=t, source=source))
    return docs


def writing_kjv():
    return _kjv_docs(WRITING_KJV, 1500, "kjv-narrative")


def ethics_kjv():
    return _kjv_docs(ETHICS_KJV, 800, "kjv-conduct")


# ---------------------------------------------------------------------------------------------
# ethics: other texts about conduct and rights
# ---------------------------------------------------------------------------------------------

ETHICS_MAX = 800


def _paragraph_docs(text, source, max_bytes=ETHICS_MAX, min_len=60):
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    paras = [p for p in paras if p]
    docs = []
    for t in pack_units(paras, max_bytes, sep="\n\n"):
        if len(t) >= min_len:
            docs.append(Doc(text=t, source=source))
    return docs


def ethics_social_contract():
    """The Debian Social Contract, version 1.2, with the Debian Free Software Guidelines
    (doc-debian): the commitments a community makes to its users and to free software."""
    text = gzip.open("/usr/share/doc/debian/social-contract.txt.gz").read().decode("utf-8")
    text = re.sub(r"_{10,}", "", text)
    # split at the numbered commitments / guidelines so each stays readable on its own
    text = re.sub(r"\n\s+(\d+)\. ", r"\n\n\1. ", text)
    return _paragraph_docs(clean(text), "debian-social-contract")


def ethics_us_founding():
    """The United States Declaration of Independence, the Bill of Rights and the later
    amendments that extend rights (miscfiles, public domain). The articles of the Constitution
    and the other amendments, which set up the machinery of government, are left out."""
    docs = []
    decl = gzip.open("/usr/share/state/us-declaration.gz").read().decode("utf-8")
    docs += _paragraph_docs(clean(decl), "us-founding-documents")
    cons = gzip.open("/usr/share/state/us-constitution.gz").read().decode("utf-8")
    parts = re.split(r"\n(?=Amendment [IVXLC]+\n)", cons)
    for part in parts[1:]:
        numeral = part.split("\n", 1)[0].split()[1]
        if numeral in RIGHTS_AMENDMENTS:
            docs += _paragraph_docs(clean(part), "us-founding-documents")
    return docs


# the Bill of Rights (I-X) and the amendments that extend rights: abolition of slavery (XIII),
# equal protection (XIV), the vote regardless of race (XV), sex (XIX), poll tax (XXIV), age (XXVI)
RIGHTS_AMENDMENTS = {"I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XIII", "XIV",
                     "XV", "XIX", "XXIV", "XXVI"}


LICENCE_PREAMBLES = [            # (file, heading that starts the preamble, text that ends it)
    ("GPL-1", "Preamble", "TERMS AND CONDITIONS"),
    ("GPL-2", "Preamble", "TERMS AND CONDITIONS"),
    ("GPL-3", "Preamble", "TERMS AND CONDITIONS"),
    ("LGPL-2", "Preamble", "TERMS AND CONDITIONS"),
    ("LGPL-2.1", "Preamble", "TERMS AND CONDITIONS"),
    ("GFDL-1.3", "0. PREAMBLE", "1. APPLICABILITY AND DEFINITIONS"),
    ("CC0-1.0", "Statement of Purpose", "1. Copyright and Related Rights."),
]


def ethics_licence_preambles():
    """The preambles of the GNU licences and the CC0 statement of purpose
    (/usr/share/common-licenses, base-files): statements of what freedoms users should have
    and why. Only the preambles, not the legal terms."""
    docs = []
    for name, start, stop in LICENCE_PREAMBLES:
        text = read_text("/usr/share/common-licenses/" + name)
        i = text.find(start)
        if i < 0:
            continue
        j = text.find(stop, i + len(start))
        if j < 0:
            raise RuntimeError(f"end of the preamble of {name} not found")
        body = text[i + len(start): text.rfind("\n", 0, j)]
        body = re.sub(r"\n\s*GNU [A-Z ]+LICENSE\s*$", "", body.rstrip())   # title line
        docs += _paragraph_docs(clean(body), "licence-preambles")
    return docs
