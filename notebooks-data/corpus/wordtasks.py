"""wordtasks.py - word-level language tasks generated from real word lists.

The words come from Debian's word lists (wfrench, wngerman, wspanish, witalian, wdutch); the
tasks (spelling, letter counts, reversal, alphabetical order, language identification, odd one
out, prefixes) and their answers are computed here, deterministically from the seed: task i of
a language uses random.Random("<seed>:words:<lang>:<i>"). Each task is one text document:
"<question>\\nAnswer: <answer>".
Checked by check.py (format) and by `python3 wordtasks.py --self-test`.
"""
import random
import sys
import unicodedata

from common import Doc

WORDLISTS = [("fr", "French", "/usr/share/dict/french", "wfrench"),
             ("de", "German", "/usr/share/dict/ngerman", "wngerman"),
             ("es", "Spanish", "/usr/share/dict/spanish", "wspanish"),
             ("it", "Italian", "/usr/share/dict/italian", "witalian"),
             ("nl", "Dutch", "/usr/share/dict/dutch", "wdutch")]


def load_words():
    """{code: sorted list of words}: letters only, 3 to 14 letters, no all-capital
    abbreviations."""
    out = {}
    for code, _, path, _ in WORDLISTS:
        ws = set()
        with open(path, encoding="utf-8") as f:
            for line in f:
                w = unicodedata.normalize("NFC", line.strip())
                if 3 <= len(w) <= 14 and w.isalpha() and not w.isupper():
                    ws.add(w)
        out[code] = sorted(ws)
    return out


def sort_key(w):
    """Alphabetical order as in a dictionary: accents and case ignored first, then used to
    break ties."""
    base = "".join(c for c in unicodedata.normalize("NFD", w) if not unicodedata.combining(c))
    return (base.casefold(), w.casefold(), w)


def generate(seed, per_lang):
    words = load_words()
    lower_sets = {c: set(w.casefold() for w in ws) for c, ws in words.items()}
    names = {c: n for c, n, _, _ in WORDLISTS}

    def unique_to(w, code):
        k = w.casefold()
        return all((k in lower_sets[c]) == (c == code) for c in lower_sets)

    docs = []
    for code, lang, _, _ in WORDLISTS:
        ws = words[code]
        for i in range(per_lang):
            rng = random.Random(f"{seed}:words:{code}:{i}")
            kind = rng.choice(["spell", "count", "reverse", "sort", "identify", "odd", "prefix",
                               "last"])
            w = rng.choice(ws)
            if kind == "spell":
                q = rng.choice([f'Spell the {lang} word "{w}" letter by letter.',
                                f'How is the {lang} word "{w}" spelled?'])
                a = "-".join(w)
            elif kind == "count":
                q = rng.choice([f'How many letters are in the {lang} word "{w}"?',
                                f'Count the letters of the {lang} word "{w}".'])
                a = str(len(w))
            elif kind == "reverse":
                q = f'Write the {lang} word "{w}" backwards.'
                a = w[::-1]
            elif kind == "last":
                q = rng.choice([f'What are the first and last letters of the {lang} word "{w}"?'])
                a = f"{w[0]} and {w[-1]}"
            elif kind == "sort":
                sample = []
                while len(sample) < rng.randint(4, 7):
                    x = rng.choice(ws)
                    if x not in sample:
                        sample.append(x)
                q = f"Put these {lang} words in alphabetical order: {', '.join(sample)}."
                a = ", ".join(sorted(sample, key=sort_key))
            elif kind == "identify":
                for _ in range(200):
                    if unique_to(w, code) and len(w) >= 5:
                        break
                    w = rng.choice(ws)
                else:
                    continue
                opts = [names[c] for c, _, _, _ in WORDLISTS]
                rng.shuffle(opts)
                q = (f'Which language is the word "{w}" from: {", ".join(opts[:-1])} or '
                     f"{opts[-1]}?")
                a = lang
            elif kind == "odd":
                others = [c for c in words if c != code]
                oc = rng.choice(others)
                group = []
                tries = 0
                while len(group) < 3 and tries < 400:
                    tries += 1
                    x = rng.choice(ws)
                    if x not in group and len(x) >= 5 and unique_to(x, code):
                        group.append(x)
                odd = None
                for _ in range(400):
                    x = rng.choice(words[oc])
                    if len(x) >= 5 and unique_to(x, oc):
                        odd = x
                        break
                if len(group) < 3 or odd is None:
                    continue
                pos = rng.randint(0, 3)
                lst = group[:pos] + [odd] + group[pos:]
                q = f"Which of these words is not {lang}: {', '.join(lst)}?"
                a = f"{odd} (it is {names[oc]})"
            else:  # prefix
                stem = w[:rng.randint(2, 3)].casefold()
                sample = [w]
                while len(sample) < 6:
                    x = rng.choice(ws)
                    if x not in sample:
                        sample.append(x)
                rng.shuffle(sample)
                hits = [x for x in sample if x.casefold().startswith(stem)]
                q = f'Which of these {lang} words begin with "{stem}": {", ".join(sample)}?'
                a = ", ".join(hits)
            text = f"{q}\nAnswer: {a}"
            docs.append(Doc(text=text, source="wordlist-" + code))
    return docs


def self_check(docs):
    n = 0
    for d in docs:
        q, a = d.text.split("\nAnswer: ")
        if "letter by letter" in q or "spelled" in q:
            w = q.split('"')[1]
            assert a.replace("-", "") == w, d.text
            n += 1
        elif "backwards" in q:
            assert a == q.split('"')[1][::-1], d.text
            n += 1
        elif "alphabetical order" in q:
            items = q.split(": ", 1)[1].rstrip(".").split(", ")
            assert sorted(items) != [] and a.split(", ") == sorted(items, key=sort_key), d.text
            n += 1
    return n


if __name__ == "__main__":
    if "--self-test" in sys.argv:
        ds = generate(1234, 200)
        print(f"PASS wordtasks self-test: {self_check(ds)} answers re-derived, {len(ds)} tasks")
    else:
        for d in generate(int(sys.argv[1]) if len(sys.argv) > 1 else 1234, 4):
            print(d.text)
            print("-" * 40)
